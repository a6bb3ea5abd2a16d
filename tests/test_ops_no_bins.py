"""NoBins: adaptive pooling to an output size with a 0 gives an empty result in the graph, whose backward is
PyTorch's refusal (its adaptive kernels refuse an empty grad_output), not a silent zero gradient."""

import numpy as np
import pytest

import nn  # noqa: F401  (autograd.nn, which T.nn reads, is registered by importing nn)


def adaptive_pool_to_no_columns(T):
    x = T.arange(12.0, dtype=T.float64).reshape(1, 3, 4).requires_grad_()
    return x, T.nn.functional.adaptive_avg_pool2d(x, (2, 0))


CASES = {"NoBins": adaptive_pool_to_no_columns}


def test_the_result_is_empty_in_the_graph_and_its_backward_refuses(T):
    x, y = adaptive_pool_to_no_columns(T)
    assert tuple(y.shape) == (1, 2, 0) and y.dtype == T.float64 and y.requires_grad
    np.testing.assert_array_equal(y.detach().numpy(), np.zeros((1, 2, 0)))
    with pytest.raises(RuntimeError, match=r"adaptive_avg_pool2d_backward\(\): Expected grad_output to have non-zero "
                                           r"size for non-batch dimensions, but grad_output has sizes \[1, 2, 0\] "
                                           r"with dimension 2 being empty"):
        y.sum().backward()
    assert x.grad is None
