"""Which entries pruning picks where scores tie, and from which draws, as PyTorch's: ``l1_unstructured`` and
``ln_structured`` choose by ``topk`` (whose choice among equal values is its algorithm's, not the first ones:
they took the first by position), ``random_unstructured`` draws in the tensor's dtype (``rand_like``: a float64
layer drew float32 numbers), and ``ln_structured`` computes its norms with ``torch.norm`` (so 'fro' over the
three other dims of a convolution's weight fails as there). Pruning a tensor that is not a parameter (a
parametrized weight, a buffer) is refused as PyTorch refuses it, before the module changes."""

import importlib

import numpy as np
import pytest


def modules(T):
    nn = importlib.import_module("nn") if T.__name__ == "autograd" else T.nn
    return nn, importlib.import_module(f"{nn.__name__}.utils.prune")


def test_l1_unstructured_breaks_ties_as_topk(T):
    nn, prune = modules(T)
    layer = nn.Linear(4, 4, bias=False)
    with T.no_grad():  # a weight already half zeros (pruned, then made permanent)
        layer.weight.copy_(T.tensor([1.0, 0.0] * 8).reshape(4, 4))
    prune.l1_unstructured(layer, "weight", amount=5)
    expected = np.ones(16)
    expected[[1, 7, 9, 11, 13]] = 0  # PyTorch's topk(largest=False) of the 8 zeros (std::nth_element's pick)
    np.testing.assert_array_equal(layer.weight_mask.numpy().ravel(), expected)


def test_ln_structured_l0_breaks_ties_as_topk(T):
    nn, prune = modules(T)
    layer = nn.Linear(3, 10, bias=False)
    with T.no_grad():  # rows with 3 or 2 nonzeros: the L0 norms tie
        layer.weight.copy_(T.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]] * 5))
    prune.ln_structured(layer, "weight", amount=3, n=0, dim=0)
    kept_rows = layer.weight_mask.numpy().any(axis=1)
    np.testing.assert_array_equal(np.flatnonzero(~kept_rows), [1, 3, 7])  # (not 1, 3, 5: topk keeps the 7)


def test_random_unstructured_draws_in_the_tensors_dtype(T):
    nn, prune = modules(T)
    layer = nn.Linear(4, 5).double()
    T.manual_seed(7)
    draws = T.rand(5, 4, dtype=T.float64).numpy().ravel()
    T.manual_seed(7)
    prune.random_unstructured(layer, "weight", amount=6)
    expected = np.ones(20)
    expected[np.argsort(draws)[-6:]] = 0
    np.testing.assert_array_equal(layer.weight_mask.numpy().ravel(), expected)


def test_ln_structured_frobenius_over_three_dims_fails_as_torch_norm(T):
    nn, prune = modules(T)
    conv = nn.Conv2d(2, 4, 3)
    with pytest.raises(RuntimeError, match="dim must be a 2-tuple"):
        prune.ln_structured(conv, "weight", amount=1, n="fro", dim=0)
    assert "weight" in dict(conv.named_parameters())  # left as it was
    linear = nn.Linear(3, 4)  # over one dim, 'fro' is the 2-norm
    prune.ln_structured(linear, "weight", amount=2, n="fro", dim=0)
    norms = np.linalg.norm(linear.weight_orig.detach().numpy(), axis=1)
    np.testing.assert_array_equal(linear.weight_mask.numpy().any(axis=1), norms > np.sort(norms)[1])


def test_norm_frobenius_over_three_dims_is_a_matrix_norm(T):
    x = T.ones(2, 3, 4)
    with pytest.raises(RuntimeError, match="dim must be a 2-tuple"):
        T.norm(x, p="fro", dim=(0, 1, 2))
    np.testing.assert_allclose(T.norm(x, p="fro", dim=(0, 2)).numpy(), np.full(3, 8 ** 0.5), rtol=1e-6)
    np.testing.assert_allclose(T.norm(x, p="fro").numpy(), 24 ** 0.5, rtol=1e-6)


def test_pruning_what_is_not_a_parameter_is_refused_first(T):
    nn, prune = modules(T)
    bn = nn.BatchNorm1d(3)
    with pytest.raises(TypeError, match="cannot assign .* to parameter 'running_mean_orig'"):
        prune.l1_unstructured(bn, "running_mean", amount=1)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    layer = nn.Linear(2, 2)
    with pytest.raises(IndexError, match="Invalid index 5"):
        prune.ln_structured(layer, "weight", amount=1, n=2, dim=5)
    assert list(dict(layer.named_parameters())) == ["bias", "weight"]  # (as PyTorch leaves it: weight last)
