# ruff: noqa: B007, B023, E501, E701, E702, F841  (the programs are kept as their authors would write them)
"""torch.nn.utils as research code uses it, run on chainrule and (where installed) PyTorch: custom parametrizations
(the tutorial's Skew and CayleyMap stacked, a low-rank factorisation whose right_inverse returns a tuple, an unsafe
reshaping one, parametrize.cached, transfer_parametrizations_and_params, remove_parametrizations); the built-in
weight_norm, spectral_norm and orthogonal (its three maps) parametrizations; the old weight_norm and spectral_norm
hooks; nn.utils.prune's flow (random, l1, ln-structured, global, remove, custom_from_mask); clip_grad_norm_ (foreach,
inf, error_if_nonfinite), clip_grad_value_, get_total_norm, parameters_to_vector and vector_to_parameters; and
fusion.fuse_conv_bn_eval. Without PyTorch each test checks the maths the utility promises."""

import importlib

import numpy as np
import pytest

from .probe37_common import F32, F64, batch, mlp
from .pytorch_programs import run_both


def custom_parametrizations(m):
    torch, nn = m.torch, m.nn
    P = nn.utils.parametrize

    class Skew(nn.Module):
        def forward(self, X):
            A = X.triu(1)
            return A - A.transpose(-1, -2)

    class CayleyMap(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.register_buffer("Id", torch.eye(n, dtype=torch.float64))

        def forward(self, X):
            return torch.linalg.solve(self.Id - X, self.Id + X)

    class LowRank(nn.Module):
        def __init__(self, r):
            super().__init__()
            self.r = r

        def forward(self, A, B):
            return A @ B

        def right_inverse(self, W):
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            s = S[:self.r].sqrt()
            return U[:, :self.r] * s, s[:, None] * Vh[:self.r]

    class Flatten(nn.Module):
        def forward(self, X):
            return X.reshape(-1)

        def right_inverse(self, X):
            return X.reshape(4, 6)

    torch.manual_seed(0)
    layer = nn.Linear(3, 3).double()
    P.register_parametrization(layer, "weight", Skew())
    P.register_parametrization(layer, "weight", CayleyMap(3))
    X = layer.weight
    x = torch.randn(2, 3, dtype=torch.float64)
    with P.cached():
        y = layer(x) + layer(x)
    y.sum().backward()
    cayley = (X, str(layer).replace("torch.", ""), sorted(layer.state_dict()), layer.parametrizations.weight.original.grad)

    low = nn.Linear(6, 4).double()
    w_before = low.weight.detach().clone()
    P.register_parametrization(low, "weight", LowRank(2))
    x6 = torch.randn(3, 6, dtype=torch.float64)
    low(x6).sum().backward()
    orig = low.parametrizations.weight
    target = nn.Linear(6, 4).double()
    P.transfer_parametrizations_and_params(low, target)
    lowrank = (w_before, low.weight, sorted(low.state_dict()), orig.original0.grad, orig.original1.grad, target.weight,
               P.type_before_parametrizations(low).__name__, P.is_parametrized(low), P.is_parametrized(low, "bias"))
    flat = nn.Linear(6, 4)
    P.register_parametrization(flat, "weight", Flatten(), unsafe=True)
    P.remove_parametrizations(low, "weight", leave_parametrized=True)
    return cayley, lowrank, tuple(flat.weight.shape), type(low.weight).__name__, low.weight


def test_custom_parametrizations():
    (W, text, keys, grad), lowrank, flat_shape, kind, kept = run_both(custom_parametrizations, **F64)[0]
    np.testing.assert_allclose(W.T @ W, np.eye(3), atol=1e-12)  # the Cayley map of a skew matrix is orthogonal
    assert keys == ["bias", "parametrizations.weight.1.Id", "parametrizations.weight.original"]
    assert "ParametrizedLinear" in text and "(0): Skew()" in text and "(1): CayleyMap()" in text
    w_before, W_low, low_keys, g0, g1, transferred, before, is_p, is_bias = lowrank
    U, S, Vh = np.linalg.svd(w_before, full_matrices=False)  # the best rank-2 approximation, by right_inverse
    np.testing.assert_allclose(W_low, (U[:, :2] * S[:2]) @ Vh[:2], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(transferred, W_low, rtol=1e-12)
    assert low_keys == ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    assert g0.shape == (4, 2) and g1.shape == (2, 6) and before == "Linear" and is_p and not is_bias
    assert flat_shape == (24,) and kind == "Parameter"
    np.testing.assert_allclose(kept, W_low, rtol=1e-12)


def builtin_parametrizations(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    wn = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3), dim=0)
    torch.manual_seed(1)
    sn = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 3), n_power_iterations=2)
    x = torch.randn(5, 4)
    y_train = sn(x)
    sn.eval()
    y_eval = sn(x)
    sn.train()
    torch.manual_seed(2)
    orth = nn.utils.parametrizations.orthogonal(nn.Linear(4, 3))
    cayley = nn.utils.parametrizations.orthogonal(nn.Linear(3, 3), orthogonal_map="cayley")
    householder = nn.utils.parametrizations.orthogonal(nn.Linear(3, 3), orthogonal_map="householder")
    (wn(x).sum() + sn(x).sum() + orth(x).sum()).backward()
    return (sorted(wn.state_dict()), wn.parametrizations.weight.original0, wn.weight, wn.parametrizations.weight.original1.grad,
            y_train, y_eval, sorted(sn.state_dict()), sn.weight, orth.weight, cayley.weight, householder.weight,
            orth.parametrizations.weight.original.grad)


def test_builtin_parametrizations():
    (wn_keys, g, w, v_grad, y_train, y_eval, sn_keys, sn_w, orth_w, cayley_w, house_w, orth_grad) = run_both(
        builtin_parametrizations, **F32)[0]
    assert wn_keys == ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    np.testing.assert_allclose(np.linalg.norm(w, axis=1, keepdims=True), g, rtol=1e-5)
    assert sn_keys == ["bias", "parametrizations.weight.0._u", "parametrizations.weight.0._v", "parametrizations.weight.original"]
    assert np.linalg.svd(sn_w, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-2)
    np.testing.assert_allclose(orth_w @ orth_w.T, np.eye(3), atol=1e-5)
    for q in (cayley_w, house_w):
        np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-5)


def old_hooks(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    lin = nn.utils.weight_norm(nn.Linear(4, 3), name="weight", dim=None)
    conv = nn.utils.weight_norm(nn.Conv1d(2, 3, 3))
    x = torch.randn(2, 4)
    xc = torch.randn(2, 2, 5)
    (lin(x).sum() + conv(xc).sum()).backward()
    result = (lin.weight_g, lin.weight_g.grad, tuple(conv.weight_g.shape), conv.weight_v.grad)
    nn.utils.remove_weight_norm(conv)
    sn = nn.utils.spectral_norm(nn.Linear(4, 3))
    return result, sorted(conv.state_dict()), sn(x), sorted(sn.state_dict()), lin.weight


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
def test_old_weight_norm_and_spectral_norm_hooks():
    (g, g_grad, conv_g_shape, v_grad), conv_keys, y, sn_keys, w = run_both(old_hooks, **F32)[0]
    assert np.linalg.norm(w) == pytest.approx(float(g), rel=1e-5) and conv_g_shape == (3, 1, 1)
    assert conv_keys == ["bias", "weight"] and sn_keys == ["bias", "weight_orig", "weight_u", "weight_v"]


def pruning(m):
    torch, nn = m.torch, m.nn
    prune = importlib.import_module(nn.__name__ + ".utils.prune")  # import torch.nn.utils.prune as prune
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    prune.random_unstructured(model[0], name="weight", amount=0.3)
    prune.l1_unstructured(model[0], name="bias", amount=2)
    prune.ln_structured(model[3], name="weight", amount=0.5, n=2, dim=0)
    names = [n for n, _ in model.named_buffers()], [n for n, _ in model.named_parameters()]
    parameters_to_prune = ((model[0], "weight"), (model[3], "weight"))
    prune.global_unstructured(parameters_to_prune, pruning_method=prune.L1Unstructured, amount=0.4)
    zeros = [float(torch.sum(module.weight == 0)) for module, _ in parameters_to_prune]
    hooks = [type(h).__name__ for h in model[0]._forward_pre_hooks.values()]
    x = torch.randn(2, 1, 4, 4)
    model(x).sum().backward()
    grad = model[0].weight_orig.grad
    mask = model[0].weight_mask
    prune.remove(model[0], "weight")
    pruned = prune.is_pruned(model[0]), prune.is_pruned(model[3])
    prune.custom_from_mask(model[3], "bias", mask=torch.tensor([1, 0, 1]))
    return names, zeros, hooks, grad, mask, pruned, model[3].bias, sorted(model.state_dict())


def test_pruning():
    names, zeros, hooks, grad, mask, pruned, bias, keys = run_both(pruning, **F32)[0]
    assert names == (["0.weight_mask", "0.bias_mask", "3.weight_mask"], ["0.weight_orig", "0.bias_orig", "3.bias", "3.weight_orig"])
    assert sum(zeros) >= 0.4 * (36 + 48) - 1 and hooks == ["L1Unstructured", "PruningContainer"]
    np.testing.assert_array_equal(grad * (1 - mask), 0)  # pruned weights get no gradient
    assert pruned == (True, True) and bias[1] == 0
    assert keys == ["0.bias_mask", "0.bias_orig", "0.weight", "3.bias_mask", "3.bias_orig", "3.weight_mask", "3.weight_orig"]


def clipping(m):
    torch, nn, F = m.torch, m.nn, m.F
    model = mlp(m)
    x, y = batch(m)
    F.cross_entropy(model(x), y).backward()
    raw = [p.grad.clone() for p in model.parameters()]
    total = nn.utils.clip_grad_norm_(model.parameters(), 0.1, norm_type=2.0, foreach=True)
    total_inf = nn.utils.clip_grad_norm_(model.parameters(), 0.05, norm_type="inf")
    nn.utils.clip_grad_value_(model.parameters(), 0.01, foreach=False)
    l1 = nn.utils.get_total_norm([p.grad for p in model.parameters()], norm_type=1.0)
    vec = nn.utils.parameters_to_vector(model.parameters())
    nn.utils.vector_to_parameters(vec * 2, model.parameters())
    model[0].weight.grad[0, 0] = float("nan")
    try:
        nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
        error = None
    except RuntimeError as e:
        error = str(e).split(".")[0]
    return raw, total, total_inf, [p.grad for p in model.parameters()][1:], l1, vec, model[2].bias, error


def test_clipping_and_vectors():
    raw, total, total_inf, grads, l1, vec, bias, error = run_both(clipping, **F32)[0]
    flat = np.concatenate([g.ravel() for g in raw]).astype(np.float64)
    assert total == pytest.approx(np.linalg.norm(flat), rel=1e-5)
    assert total_inf == pytest.approx(np.abs(flat).max() * min(1.0, 0.1 / (np.linalg.norm(flat) + 1e-6)), rel=1e-5)
    assert max(abs(g).max() for g in grads) <= 0.01 and vec.shape == (75,)
    np.testing.assert_allclose(bias, 2 * vec[-3:], rtol=1e-6)
    assert error == "The total norm of order 2"


def fusion(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, bias=False)
    bn = nn.BatchNorm2d(3)
    x = torch.randn(4, 2, 5, 5)
    bn(conv(x)); bn(conv(x * 2))
    conv.eval(); bn.eval()
    fused = nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
    return fused(x), bn(conv(x)), fused.weight, fused.bias, bn.running_var


def test_fuse_conv_bn_eval():
    fused_out, reference, w, b, running_var = run_both(fusion, **F32)[0]
    np.testing.assert_allclose(fused_out, reference, rtol=1e-5, atol=1e-5)
    assert w.shape == (3, 2, 3, 3) and b.shape == (3,)
