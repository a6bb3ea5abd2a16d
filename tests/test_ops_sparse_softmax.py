"""The sparse softmax's op (autograd/sparse/reductions.py SparseSoftmax, behind ``torch.sparse.softmax`` and
``log_softmax``): its gradient against finite differences, first and second order, over drawn values, groups and
hybrid columns (every primitive of autograd's has a case: tests/test_ops.py). Its values and PyTorch's:
tests/test_sparse.py, tests/test_probe13_sparse_fixes.py and the GAT programs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
from tests.test_ops import _run, arrays, leaf

INDICES = [[0, 0, 1, 2, 2, 2], [0, 2, 1, 0, 1, 2]]  # rows of 2, 1 and 3 entries


@st.composite
def sparse_scores(draw):
    """([values], (dim, log, heads)): one score per entry, or a column of them per head (a hybrid tensor)."""
    heads = draw(st.sampled_from([None, 2]))
    values = draw(arrays((6,) if heads is None else (6, heads), -3.0, 3.0))
    return [leaf(values)], (draw(st.sampled_from([0, 1, -1 if heads is None else 1])), draw(st.booleans()), heads)


def sparse_softmax(values, options):
    dim, log, heads = options
    size = (3, 3) if heads is None else (3, 3, heads)
    scores = autograd.sparse_coo_tensor(autograd.tensor(INDICES), values, size)
    result = (autograd.sparse.log_softmax if log else autograd.sparse.softmax)(scores, dim)
    return result.to_dense() * autograd.tensor(np.arange(1.0, 1.0 + np.prod(size)).reshape(size))


CASES = {"SparseSoftmax": (sparse_scores(), sparse_softmax)}


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)
    assert autograd.gradgradcheck(fn, tensors)


def test_the_node_has_pytorchs_name():
    values = autograd.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], requires_grad=True)
    scores = autograd.sparse_coo_tensor(autograd.tensor(INDICES), values, (3, 3))
    assert autograd.sparse.softmax(scores, 1).grad_fn.name() == "SparseSoftmaxBackward0"
    assert autograd.sparse.log_softmax(scores, 1).grad_fn.name() == "SparseLogSoftmaxBackward0"
