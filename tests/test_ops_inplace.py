"""Gradient cases for the primitives that record in-place writes (the write door's ops)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd import Tensor

ELEMENTS = st.floats(-3, 3, allow_nan=False, width=64)


def _matrix(draw):
    return draw(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=4),
                           elements=ELEMENTS))


@st.composite
def _base_and_row(draw):
    base = _matrix(draw)
    row = draw(hnp.arrays(np.float64, base.shape[1:], elements=ELEMENTS))
    return [Tensor(base, requires_grad=True), Tensor(row, requires_grad=True)]


def _set_row(base, row):
    out = base * 1.0
    out[0] = row * 2.0  # IndexPut
    return out


def _write_through_view(base, row):
    out = base * 1.0
    view = out[1]
    view.mul_(row)  # WriteThroughView onto out
    return out


@st.composite
def _vector_and_windows(draw):
    size = draw(st.integers(1, 3))
    step = draw(st.integers(1, size))
    length = size + step * draw(st.integers(1, 3))
    vector = draw(hnp.arrays(np.float64, (length,), elements=ELEMENTS))
    return [Tensor(vector, requires_grad=True), size, step]


def _write_through_overlapping_windows(vector, size, step):
    out = vector * 1.0
    out.unfold(0, size, step).mul_(2.5)  # OverlappingViewRead: the windows' old values, read for the write
    return out


def _fill(base, row):
    out = base * row
    out.fill_(1.5)  # Fill: no gradient to the old value
    return out + base


def _view_made_under_no_grad_then_base_written(base, row):
    out = base * 1.0
    with autograd.no_grad():
        view = out[0]
    out.mul_(2.0)  # RebasedNoGradView: the view's history now, which refuses the backward
    return view * row


CASES = {
    "IndexPut": (_base_and_row(), _set_row),
    "WriteThroughView": (_base_and_row(), _write_through_view),
    "Fill": (_base_and_row(), _fill),
    "OverlappingViewRead": (_vector_and_windows(), _write_through_overlapping_windows),
    "RebasedNoGradView": (_base_and_row(), _view_made_under_no_grad_then_base_written,
                          {"refuses": "A view was created in no_grad mode and its base or another view of its base "
                                      "has been modified inplace with grad mode enabled"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    strategy, fn, *options = CASES[name]
    inputs = data.draw(strategy)
    if options:  # a history whose backward refuses, in PyTorch's words
        with pytest.raises(RuntimeError, match=options[0]["refuses"]):
            fn(*inputs).sum().backward()
        return
    tensors = [x for x in inputs if isinstance(x, Tensor)]

    def of_tensors(*xs):
        given = iter(xs)
        return fn(*[next(given) if isinstance(x, Tensor) else x for x in inputs])

    assert autograd.gradcheck(of_tensors, tensors)
    assert autograd.gradgradcheck(of_tensors, tensors)


def test_the_cases_check_something():
    base, row = Tensor(np.ones((2, 3)), requires_grad=True), Tensor(np.arange(3.0), requires_grad=True)
    assert autograd.gradcheck(_write_through_view, [base, row])
    out = _write_through_view(base, row)
    out.sum().backward()
    np.testing.assert_allclose(row.grad.numpy(), [1.0, 1.0, 1.0])  # d/drow of Σ base[1]·row
    np.testing.assert_allclose(base.grad.numpy(), [[1, 1, 1], [0, 1, 2]])


def test_an_element_is_a_view_that_in_place_ops_write_through():
    # x[i] of a 1-d tensor (every index an int) is a 0-d view of x, as in PyTorch; NumPy's x[i] is a copy
    x = autograd.zeros(3)
    x[0].fill_(5.0)
    for element in x:
        element.add_(1.0)
    x.select(0, 2).mul_(3.0)
    grid = autograd.zeros(2, 2)
    grid[1, 1].copy_(autograd.tensor(4.0))
    grid[0][1].sub_(2.0)
    assert x.tolist() == [6.0, 1.0, 3.0] and grid.tolist() == [[0.0, -2.0], [0.0, 4.0]]


def test_an_element_of_a_leaf_that_requires_grad_refuses_in_place_writes():
    w = autograd.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        w[0].mul_(2.0)
    with autograd.no_grad():
        w[1].zero_()  # a parameter edit: allowed, and it reaches w
    assert w.tolist() == [1.0, 0.0, 1.0]


def test_an_element_shares_its_tensors_version():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1.0
    first = y[0]
    loss = (first * first).sum()  # Mul saved y[0]
    y.add_(1.0)  # ... which this write changes
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_copy_of_a_leaf_that_requires_grad_keeps_the_graph_to_it():
    # b.copy_(a) with a leaf a: b is computed from a (it has a node), and dL/da arrives, whole or through a view
    a = autograd.tensor([1.0, 2.0], requires_grad=True)
    b = autograd.zeros(2)
    b.copy_(a)
    assert b.requires_grad and b.grad_fn is not None
    (3 * b).sum().backward()
    assert a.grad.tolist() == [3.0, 3.0]
    a.grad = None
    x = autograd.zeros(3)
    x[1:].copy_(a)
    (x * x).sum().backward()
    assert a.grad.tolist() == [2.0, 4.0]


def test_in_place_arithmetic_with_a_zero_dim_wider_tensor_computes_in_the_tensors_dtype(T):
    # PyTorch's common dtype of float32 x and a 0-d float64 tensor is float32, as for x + it: -0.3 + 0.3 is 0
    # there, where float64 arithmetic rounded back to float32 leaves -1.1e-8 (the no-grad fast path did that)
    x = T.tensor([1.1, 2.7, -0.3], dtype=T.float32)
    s = T.tensor(0.3, dtype=T.float64)
    for result in (x.clone().add_(s), x.clone().sub_(-s), x + s):
        assert result.dtype == T.float32 and result[2].item() == 0.0
    assert x.clone().div_(s).tolist() == (x / s).tolist() and x.clone().mul_(s).tolist() == (x * s).tolist()
    # a dimensioned float64 tensor does widen: computed in float64, then written back as float32
    widened = np.array([1.1, 2.7, -0.3], dtype=np.float32).astype(np.float64) + 0.3
    np.testing.assert_array_equal(x.clone().add_(T.tensor([0.3] * 3, dtype=T.float64)).numpy(),
                                  widened.astype(np.float32))
