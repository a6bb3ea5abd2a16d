"""autograd.constant_pad_nd (autograd/ops/constant_padding.py), the op behind F.pad(mode='constant') and
the zero padding of convolutions: values without PyTorch, its gradient against finite differences (the
adjoint crops what the forward added and pads where it cropped). PyTorch's values and errors:
tests/test_torch_level_layers.py; F.pad's: tests/test_nn_functional_more.py."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from tests.test_ops import _run, arrays, leaf


@st.composite
def padded(draw):
    """([x], pad): amounts for up to every dim, negative ones cropping at most what the dim holds."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    pad = []
    for size in reversed(shape[len(shape) - draw(st.integers(1, len(shape))):]):
        before = draw(st.integers(-size, 2))
        pad += [before, draw(st.integers(-(size + min(before, 0)), 2))]
    return [leaf(draw(arrays(shape)))], tuple(pad)


CASES = {  # (gradchecked below, as every primitive of autograd's: tests/test_ops.py)
    "ConstantPad": (padded(), lambda x, pad: autograd.constant_pad_nd(x, pad, 0.5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


def test_values():
    x = autograd.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert autograd.constant_pad_nd(x, (1, 0)).tolist() == [[0, 1, 2, 3], [0, 4, 5, 6]]
    assert autograd.constant_pad_nd(x, [0, -1, 1, 0], 7).tolist() == [[7, 7], [1, 2], [4, 5]]
    y = autograd.constant_pad_nd(x, ())  # nothing padded: a new tensor all the same, as PyTorch's
    assert y is not x and y.tolist() == x.tolist()
    assert autograd.constant_pad_nd(autograd.ones(2, dtype=autograd.int64), (1, 1)).dtype == autograd.int64


@pytest.mark.parametrize("pad, message", [
    ((1,), "Length of pad must be even but instead it equals 1"),
    ((1, 1, 1, 1, 1, 1), "Length of pad should be no more than twice the number of dimensions"),
    ((-2, -2), r"narrow\(\): length must be non-negative. \(The padding \(-2, -2\) crops dimension 1 of the "
               r"input, of size 3, past its end.\)"),
    ((-4, 1), r"narrow\(\): length must be non-negative"),  # (PyTorch's crops first: 3 - 4 + 1 = 0 is refused)
])
def test_errors(pad, message):
    with pytest.raises(RuntimeError, match=message):
        autograd.constant_pad_nd(autograd.zeros(2, 3), pad)


def test_gradient_crops_back():
    x = autograd.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    (autograd.constant_pad_nd(x, (2, -1, 0, 1)) * autograd.arange(12.0).reshape(3, 4)).sum().backward()
    assert x.grad.tolist() == [[2.0, 3.0, 0.0], [6.0, 7.0, 0.0]]
