"""scatter_reduce's gradient where values are not finite, as PyTorch's: a position whose amax/amin is NaN ties
with none of its terms, and every term there gets 0 · (dL/dy / 0) = NaN (as amax's own gradient does), where it
gave 0; and where include_self=False leaves input's value out, its gradient is 0 even when the product's
y / x (or an upstream gradient) is infinite or NaN, where it gave NaN (a mask multiplied, not selected)."""

import math

import numpy as np
import pytest

nan, inf = math.nan, math.inf
INDEX = [0, 2, 2, 0, 1, 2]
SRC = [1.0, nan, 3.0, -inf, 2.0, 0.5]
BASE = [5.0, nan, 0.0, 7.0]

# (reduce, include_self) -> (dL/dsrc, dL/dinput) for dL/dy = [1, 2, 3, 4]
EXPECTED = {
    ("amax", True): ([0, nan, nan, 0, nan, nan], [1, nan, nan, 4]),  # (input's NaN makes y[1] NaN)
    ("amax", False): ([1, nan, nan, 0, 2, nan], [0, 0, 0, 4]),
    ("amin", True): ([0, nan, nan, 1, nan, nan], [0, nan, nan, 4]),
    ("amin", False): ([0, nan, nan, 1, 2, nan], [0, 0, 0, 4]),
    ("prod", False): ([-inf, nan, nan, nan, 2, nan], [0, 0, 0, 4]),
    ("sum", False): ([1, 3, 3, 1, 2, 3], [0, 0, 0, 4]),
}


@pytest.mark.parametrize("reduce, include_self", list(EXPECTED))
def test_scatter_reduce_gradient_at_nan_and_inf(T, reduce, include_self):
    src = T.tensor(SRC, requires_grad=True)
    base = T.tensor(BASE, requires_grad=True)
    y = base.scatter_reduce(0, T.tensor(INDEX), src, reduce=reduce, include_self=include_self)
    grad_src, grad_base = T.autograd.grad(y, [src, base], grad_outputs=T.tensor([1.0, 2.0, 3.0, 4.0]))
    expected_src, expected_base = EXPECTED[reduce, include_self]
    np.testing.assert_array_equal(grad_src.numpy(), expected_src)
    np.testing.assert_array_equal(grad_base.numpy(), expected_base)


def test_left_out_input_gets_zero_under_a_nan_upstream_gradient(T):
    base = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    src = T.tensor([4.0, 5.0], requires_grad=True)
    for reduce in ("sum", "mean", "prod", "amax"):
        y = base.scatter_reduce(0, T.tensor([0, 2]), src, reduce=reduce, include_self=False)
        (grad_base,) = T.autograd.grad(y, base, grad_outputs=T.tensor([nan, 1.0, inf]))
        np.testing.assert_array_equal(grad_base.numpy(), [0.0, 1.0, 0.0])


@pytest.mark.filterwarnings("ignore:index_reduce")
def test_index_reduce_amax_at_nan(T):
    base = T.tensor([[0.0, 1.0], [2.0, 3.0]], requires_grad=True)
    source = T.tensor([[nan, 4.0], [1.0, 0.5]], requires_grad=True)
    y = base.index_reduce(0, T.tensor([1, 1]), source, "amax")
    grad_base, grad_source = T.autograd.grad(y.sum(), [base, source])
    np.testing.assert_array_equal(grad_base.numpy(), [[1.0, 1.0], [nan, 0.0]])
    np.testing.assert_array_equal(grad_source.numpy(), [[nan, 1.0], [nan, 0.0]])
