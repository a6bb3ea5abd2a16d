"""Fixes found by the recommender, tabular and time-series programs (tests/test_programs_probe11_tabular_*.py),
each checked on chainrule and on PyTorch (the ``T`` fixture)."""

import math

import numpy as np
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


def test_embedding_bag_float16_sums_in_float32_and_means_divide(T, nn):
    """PyTorch's embedding_bag sums float16 bags in float32 and rounds each sum once (a running float16 sum
    was 2% off over 60 lookups), per-sample weights multiplied in float32 too; a mean is the sum divided by
    the bag's size (a product with the reciprocal was a unit off in float32 and float64)."""
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 50, 400)
    offsets = np.array([0, 60, 61, 150, 157, 230, 233])
    ends = list(offsets[1:]) + [400]
    for dtype in (np.float16, np.float32, np.float64):
        weight = rng.standard_normal((50, 8)).astype(dtype)
        psw = rng.random(400).astype(dtype)
        wide = np.float32 if dtype == np.float16 else dtype
        sums = np.stack([weight[indices[s:e]].astype(wide).sum(0, dtype=wide) for s, e in zip(offsets, ends)])
        for mode in ("sum", "mean"):
            out = nn.functional.embedding_bag(T.tensor(indices), T.tensor(weight), T.tensor(offsets), mode=mode)
            counts = np.maximum(np.diff(np.append(offsets, 400)), 1).astype(dtype)
            expected = sums.astype(dtype) if mode == "sum" else sums.astype(dtype) / counts[:, None]
            np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=0)  # (sequential sums: exact here)
        if dtype == np.float16:
            out = nn.functional.embedding_bag(T.tensor(indices), T.tensor(weight), T.tensor(offsets), mode="sum",
                                              per_sample_weights=T.tensor(psw))
            products = weight[indices].astype(np.float32) * psw[:, None].astype(np.float32)  # exact in float32
            expected = np.stack([products[s:e].sum(0) for s, e in zip(offsets, ends)]).astype(np.float16)
            np.testing.assert_array_equal(out.numpy(), expected)


def test_embedding_max_norm_rounds_as_pytorch(T, nn):
    """max_norm renormalises as PyTorch's embedding_renorm_: the norm in the weight's dtype (float16 summed in
    float32), max_norm / (norm + 1e-7) in double, then rounded to the weight's dtype for the product. The
    scale used to be computed in float32, where the 1e-7 vanishes (a unit off in float32 rows)."""
    rng = np.random.default_rng(1)
    for dtype in (np.float16, np.float32, np.float64):
        for norm_type in (1.0, 2.0, math.inf):
            weight = (rng.standard_normal((30, 4)) * 2).astype(dtype)
            indices = rng.integers(0, 30, 40)
            W = T.tensor(weight)
            nn.functional.embedding(T.tensor(indices), W, max_norm=1.0, norm_type=norm_type)
            expected = weight.copy()
            wide = weight.astype(np.float32) if dtype == np.float16 else weight
            for r in np.unique(indices):
                row = wide[r]
                norm = {1.0: np.abs(row).sum(), 2.0: np.sqrt((row * row).sum()), math.inf: np.abs(row).max()}[norm_type]
                norm = float(norm.astype(dtype))  # (4 terms: summed in order, as PyTorch's kernel here)
                if norm > 1.0:
                    expected[r] = weight[r] * np.asarray(1.0 / (norm + 1e-7)).astype(dtype)
            np.testing.assert_array_equal(W.numpy(), expected)
