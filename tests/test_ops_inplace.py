"""Gradient cases for the primitives that record in-place writes (the write door's ops)."""

import numpy as np
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


def _fill(base, row):
    out = base * row
    out.fill_(1.5)  # Fill: no gradient to the old value
    return out + base


CASES = {
    "IndexPut": (_base_and_row(), _set_row),
    "WriteThroughView": (_base_and_row(), _write_through_view),
    "Fill": (_base_and_row(), _fill),
}


def test_the_cases_check_something():
    base, row = Tensor(np.ones((2, 3)), requires_grad=True), Tensor(np.arange(3.0), requires_grad=True)
    assert autograd.gradcheck(_write_through_view, [base, row])
    out = _write_through_view(base, row)
    out.sum().backward()
    np.testing.assert_allclose(row.grad.numpy(), [1.0, 1.0, 1.0])  # d/drow of Σ base[1]·row
    np.testing.assert_allclose(base.grad.numpy(), [[1, 1, 1], [0, 1, 2]])
