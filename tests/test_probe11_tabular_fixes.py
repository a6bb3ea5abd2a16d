"""Fixes found by the recommender, tabular and time-series programs (tests/test_programs_probe11_tabular.py),
each checked on chainrule and on PyTorch (the ``T`` fixture)."""

import pytest

from tests import ported_nn

nn = ported_nn.nn  # the fixture


def test_embedding_bag_max_mode_refuses_sparse_and_frequency_scaling(T, nn):
    """mode='max' has neither sparse gradients nor gradients scaled by frequency in PyTorch: both are refused
    by F.embedding_bag and the layer, as PyTorch's ValueErrors (they used to run, with dense unscaled gradients)."""
    weight = T.randn(6, 3, requires_grad=True)
    input, offsets = T.tensor([0, 2, 5, 1]), T.tensor([0, 2])
    with pytest.raises(ValueError, match="^max mode does not support sparse weights$"):
        nn.functional.embedding_bag(input, weight, offsets, mode="max", sparse=True)
    with pytest.raises(ValueError, match="^max mode does not support scaling the gradient by the frequency$"):
        nn.functional.embedding_bag(input, weight, offsets, mode="max", scale_grad_by_freq=True)
    with pytest.raises(ValueError, match="^max mode does not support sparse weights$"):
        nn.EmbeddingBag(6, 3, mode="max", sparse=True)(input, offsets)
    # the other modes take both
    for mode in ("sum", "mean"):
        out = nn.functional.embedding_bag(input, weight, offsets, mode=mode, sparse=True, scale_grad_by_freq=True)
        assert tuple(out.shape) == (2, 3)
