# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Model compression and surgery programs, run as tests/probe19_compression_common.py says. Parametrizations:
``orthogonal`` (each map, with and without trivialization), ``spectral_norm`` and ``weight_norm`` as
parametrizations, custom ones with ``right_inverse`` (symmetric, low-rank with two originals, ``unsafe``) and
``cached()``."""

import importlib
import warnings

import numpy as np
import pytest

from .pytorch_programs import run_both


def parametrize_of(m):
    return importlib.import_module(m.nn.__name__ + ".utils.parametrize")


def parametrizations_of(m):
    return importlib.import_module(m.nn.__name__ + ".utils.parametrizations")


# ----------------------------------------------------------------------------------------------
# parametrizations: orthogonal maps, spectral and weight norm, custom ones with right_inverse
# ----------------------------------------------------------------------------------------------


def orthogonal_training(m, orthogonal_map, use_trivialization):
    torch, nn = m.torch, m.nn
    parametrizations, parametrize = parametrizations_of(m), parametrize_of(m)
    torch.manual_seed(0)
    layer = nn.Linear(5, 3).double()
    parametrizations.orthogonal(layer, "weight", orthogonal_map=orthogonal_map,
                                use_trivialization=use_trivialization)
    out = {"initial": layer.weight, "keys": list(layer.state_dict().keys())}
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(7, 5, dtype=torch.float64)
    for _ in range(3):
        optimizer.zero_grad()
        layer(x).pow(2).sum().backward()
        optimizer.step()
    out["weight"], out["gram"] = layer.weight, layer.weight @ layer.weight.T
    out["original"] = layer.parametrizations.weight.original
    with parametrize.cached():
        out["cached"] = layer(x) + layer(x)
    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    out["after"], out["keys_after"] = layer.weight, list(layer.state_dict().keys())
    return out


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
@pytest.mark.parametrize("use_trivialization", [True, False])
def test_orthogonal_parametrization(orthogonal_map, use_trivialization):
    ours, _ = run_both(orthogonal_training, orthogonal_map, use_trivialization, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours["gram"], np.eye(3), atol=1e-12)
    assert ours["keys_after"] == ["bias", "weight"] and ours["keys"][0] == "bias"
    if not use_trivialization:
        assert ours["keys"][1:] == ["parametrizations.weight.original"]


def norm_parametrizations(m):
    torch, nn = m.torch, m.nn
    parametrizations, parametrize = parametrizations_of(m), parametrize_of(m)
    torch.manual_seed(0)
    conv = parametrizations.spectral_norm(nn.Conv2d(2, 4, 3), n_power_iterations=2)
    linear = parametrizations.spectral_norm(nn.Linear(5, 6), dim=1)
    x = torch.randn(2, 2, 5, 5)
    out = {"keys": list(conv.state_dict().keys()), "linear_keys": list(linear.state_dict().keys())}
    optimizer = torch.optim.Adam(list(conv.parameters()) + list(linear.parameters()), lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        (conv(x).pow(2).mean() + linear(torch.randn(3, 5)).sum()).backward()
        optimizer.step()
    out["u"], out["v"] = conv.parametrizations.weight[0]._u, conv.parametrizations.weight[0]._v
    conv.eval()
    out["eval"], out["eval_again"] = conv(x), conv(x)
    out["sigma"] = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
    out["linear_weight"] = linear.weight
    restored = parametrizations.spectral_norm(nn.Conv2d(2, 4, 3), n_power_iterations=2)
    restored.load_state_dict(conv.state_dict())
    restored.eval()
    out["restored"] = restored(x)
    weight_norm = parametrizations.weight_norm(nn.Linear(4, 3))
    whole = parametrizations.weight_norm(nn.Conv1d(2, 3, 3), dim=None)
    by_input = parametrizations.weight_norm(nn.Conv1d(2, 3, 3), name="weight", dim=1)
    out["g"], out["whole_g"] = weight_norm.parametrizations.weight.original0, whole.parametrizations.weight.original0
    out["by_input_g"] = by_input.parametrizations.weight.original0
    out["wn_keys"] = list(weight_norm.state_dict().keys())
    xl, xc = torch.randn(5, 4), torch.randn(2, 2, 6)
    (weight_norm(xl).sum() + whole(xc).pow(2).sum() + by_input(xc).sum()).backward()
    out["g_grad"] = weight_norm.parametrizations.weight.original0.grad
    out["v_grad"] = weight_norm.parametrizations.weight.original1.grad
    out["whole_g_grad"] = whole.parametrizations.weight.original0.grad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = nn.utils.weight_norm(nn.Linear(4, 3))  # the deprecated form's weight_g/weight_v load into the new
    out["old_keys"] = list(old.state_dict().keys())
    new = parametrizations.weight_norm(nn.Linear(4, 3))
    new.load_state_dict(old.state_dict())
    out["new_from_old"] = new(xl) - old(xl)
    parametrize.remove_parametrizations(whole, "weight")
    out["whole_after"] = whole.weight
    return out


def test_spectral_and_weight_norm_parametrizations():
    ours, _ = run_both(norm_parametrizations, rtol=1e-5, atol=1e-5)
    assert ours["keys"] == ["bias", "parametrizations.weight.original", "parametrizations.weight.0._u",
                            "parametrizations.weight.0._v"]
    np.testing.assert_array_equal(ours["eval"], ours["eval_again"])
    np.testing.assert_array_equal(ours["restored"], ours["eval"])
    assert ours["sigma"] == pytest.approx(1.0, abs=0.05) and ours["whole_g"].shape == ()
    assert ours["by_input_g"].shape == (1, 2, 1) and ours["old_keys"] == ["bias", "weight_g", "weight_v"]
    np.testing.assert_allclose(ours["new_from_old"], 0, atol=1e-6)


def custom_parametrizations(m):
    torch, nn = m.torch, m.nn
    parametrize = parametrize_of(m)

    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)

        def right_inverse(self, A):
            return A.triu()

    class PruneMask(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, X):
            return X * self.mask

    class LowRank(nn.Module):
        def forward(self, U, V):
            return U @ V

        def right_inverse(self, W):
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            r = 2
            return U[:, :r] * S[:r], Vh[:r]

    class Pad(nn.Module):
        def forward(self, X):
            return torch.cat([X, X.new_zeros(1, X.shape[1])])

    torch.manual_seed(0)
    layer = nn.Linear(4, 4)
    parametrize.register_parametrization(layer, "weight", Symmetric())
    out = {"symmetric": layer.weight, "original": layer.parametrizations.weight.original}
    layer.weight = torch.eye(4) * 2 + torch.ones(4, 4)  # assigning goes through right_inverse
    out["assigned"] = layer.parametrizations.weight.original
    parametrize.register_parametrization(layer, "weight", PruneMask(torch.tril(torch.ones(4, 4))))
    out["keys"], out["masked"] = list(layer.state_dict().keys()), layer.weight
    out["is_parametrized"] = [parametrize.is_parametrized(layer), parametrize.is_parametrized(layer, "weight"),
                              parametrize.is_parametrized(layer, "bias")]
    out["type_before"] = parametrize.type_before_parametrizations(layer).__name__
    low = nn.Linear(5, 6)
    parametrize.register_parametrization(low, "weight", LowRank())
    out["low"], out["low_keys"] = low.weight, list(low.state_dict().keys())
    out["factors"] = [low.parametrizations.weight.original0, low.parametrizations.weight.original1]
    low(torch.randn(3, 5)).sum().backward()
    out["factor_grads"] = [low.parametrizations.weight.original0.grad, low.parametrizations.weight.original1.grad]
    parametrize.remove_parametrizations(low, "weight")
    out["low_after"], out["low_keys_after"] = low.weight, list(low.state_dict().keys())
    padded = nn.Linear(3, 2)
    parametrize.register_parametrization(padded, "weight", Pad(), unsafe=True)
    out["padded_shape"] = list(padded.weight.shape)
    try:
        parametrize.register_parametrization(nn.Linear(3, 2), "weight", Pad())
        out["safe"] = None
    except ValueError as error:
        out["safe"] = "ValueError"
    bn = nn.BatchNorm1d(3)
    parametrize.register_parametrization(bn, "running_mean", PruneMask(torch.tensor([1.0, 0.0, 1.0])))
    out["bn_keys"] = list(bn.state_dict().keys())
    bn(torch.randn(4, 3) + 1)
    out["running_mean"] = bn.running_mean
    return out


def test_custom_parametrizations():
    ours, _ = run_both(custom_parametrizations)
    np.testing.assert_array_equal(ours["symmetric"], ours["symmetric"].T)
    np.testing.assert_array_equal(ours["assigned"], np.triu(np.eye(4) * 2 + 1))
    np.testing.assert_array_equal(ours["masked"], np.tril(np.eye(4) * 2 + 1))
    assert ours["is_parametrized"] == [True, True, False] and ours["type_before"] == "Linear"
    assert np.linalg.matrix_rank(ours["low"]) == 2 and ours["low_keys_after"] == ["bias", "weight"]
    assert ours["padded_shape"] == [3, 3] and ours["safe"] == "ValueError"
    assert "parametrizations.running_mean.original" in ours["bn_keys"] and ours["running_mean"][1] == 0
