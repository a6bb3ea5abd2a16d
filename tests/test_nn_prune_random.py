"""``prune.random_unstructured`` prunes the entries whose uniform draws are the largest, as PyTorch's (topk of
``rand_like``): the same seed prunes the same entries (it pruned the smallest draws' entries)."""

import importlib

import numpy as np


def test_random_unstructured_prunes_the_largest_draws(T):
    nn = importlib.import_module("nn") if T.__name__ == "autograd" else T.nn
    prune = importlib.import_module(f"{nn.__name__}.utils.prune")
    layer = nn.Linear(4, 5)
    T.manual_seed(7)
    draws = T.rand(5, 4).numpy().ravel()
    T.manual_seed(7)
    prune.random_unstructured(layer, "weight", amount=6)
    expected = np.ones(20)
    expected[np.argsort(draws)[-6:]] = 0
    np.testing.assert_array_equal(layer.weight_mask.numpy().ravel(), expected)
