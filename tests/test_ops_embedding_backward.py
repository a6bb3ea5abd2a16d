"""The embedding's gradient as an op (``EmbeddingDenseBackward``, PyTorch's embedding_dense_backward), which
a gradient penalty through an embedding differentiates again, and an embedding bag's sums
(``EmbeddingBagSum``): gradchecked here, with an embedding bag's
constant factors and order of addition or without (and without frequency scaling, where its backward is the
derivative; with it, PyTorch's double backward leaves the scale to the first backward,
tests/test_probe13_recsys_fixes.py)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd.ops.embedding import EmbeddingDenseBackward
from tests.test_ops import _run, arrays, leaf


@st.composite
def lookup_gradients_and_indices(draw):
    """([g], (indices, rows, padding_idx)): the gradients of n lookups, the rows they came from (repeats
    included) and a padding index or None."""
    rows, width, n = draw(st.integers(2, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
    indices = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, rows - 1)))
    padding_idx = draw(st.one_of(st.none(), st.integers(0, rows - 1)))
    scales = draw(st.one_of(st.none(), arrays((n,), 0.1, 2.0)))  # an embedding bag's constant factors
    order = draw(st.one_of(st.none(), st.permutations(range(n)).map(np.array)))
    return [leaf(draw(arrays((n, width))))], (indices, rows, padding_idx, scales, order)


def embedding_gradient(g, arguments):
    indices, rows, padding_idx, scales, order = arguments
    return EmbeddingDenseBackward.apply(g, flat=indices, num_weights=rows, padding_idx=padding_idx,
                                        scale_grad_by_freq=False, added_in=order, scales=scales)


@st.composite
def bags_of_rows(draw):
    """([W, per-sample weights or None], (indices, offsets, mode, padding_idx)): bags cut from the indices by
    offsets, in sum mode (with per-sample weights or not) or mean mode."""
    rows, width, n = draw(st.integers(2, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
    indices = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, rows - 1)))
    cuts = sorted(set(draw(st.lists(st.integers(1, n), max_size=3))) - {n})
    mode = draw(st.sampled_from(["sum", "mean"]))
    weighted = mode == "sum" and draw(st.booleans())
    padding_idx = draw(st.one_of(st.none(), st.integers(0, rows - 1)))
    tensors = [leaf(draw(arrays((rows, width))))] + ([leaf(draw(arrays((n,), 0.1, 2.0)))] if weighted else [])
    return tensors, (indices, np.array([0] + cuts), mode, padding_idx)


def bag_sums(W, *rest):
    import nn.functional as F

    *weights, (indices, offsets, mode, padding_idx) = rest
    return F.embedding_bag(autograd.tensor(indices), W, autograd.tensor(offsets), mode=mode,
                           per_sample_weights=weights[0] if weights else None, padding_idx=padding_idx)


CASES = {  # (gradchecked by tests/test_ops.py, as every primitive of autograd's)
    "EmbeddingDenseBackward": (lookup_gradients_and_indices(), embedding_gradient),
    "EmbeddingBagSum": (bags_of_rows(), bag_sums),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


def test_node_name_is_pytorchs():
    w = autograd.ones(4, 2, requires_grad=True)
    out = autograd.embedding(w, autograd.tensor([1, 3]))
    (g,) = autograd.autograd.grad(out.pow(2).sum(), w, create_graph=True)
    assert g.grad_fn.name() == "EmbeddingDenseBackwardBackward0"
