"""nn.utils.parametrize and nn.utils.parametrizations, ported from PyTorch's test/nn/test_parametrization.py:
state_dict keys and round trips, deepcopy, type_before_parametrizations, transfer_parametrizations_and_params,
training mode, nested parametrizations, the orthogonal parametrization (its maps, assignment, gradients)
and the new weight_norm / spectral_norm. Each test runs on chainrule's `nn` and, where it is installed, on
PyTorch's."""

import copy

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture


def _Skew(nn):
    class Skew(nn.Module):
        def forward(self, X):
            X = X.tril(-1)
            return X - X.T
    return Skew


def _Orthogonal(T, nn):
    class Orthogonal(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.register_buffer("id", None)
            self.n = n

        def forward(self, X):
            X = X.tril(-1)
            X = X - X.T                      # skew-symmetric: its Cayley transform is orthogonal
            Id = T.eye(self.n, dtype=X.dtype)
            return T.linalg.solve(Id + X, Id - X)
    return Orthogonal


def test_serialization_parametrization(T, nn):
    P = nn.utils.parametrize
    model = nn.Linear(5, 5)
    P.register_parametrization(model, "weight", _Skew(nn)())
    assert list(model.state_dict()) == ["bias", "parametrizations.weight.original"]
    model2 = nn.Linear(5, 5)
    P.register_parametrization(model2, "weight", _Skew(nn)())
    model2.load_state_dict(model.state_dict())
    same(model2.weight, values(model.weight))
    raises(RuntimeError, "Missing key", nn.Linear(5, 5).load_state_dict, model.state_dict())


def test_register_and_remove_nested_parametrization(T, nn):
    P = nn.utils.parametrize
    model = nn.Linear(5, 5)
    P.register_parametrization(model, "weight", _Skew(nn)())
    # the parametrization module itself gets a parametrized parameter
    param_mod = model.parametrizations.weight
    assert hasattr(param_mod, "original")
    P.register_parametrization(param_mod, "original", _Skew(nn)())
    w = values(model.weight)
    same(w, -w.T)
    P.remove_parametrizations(param_mod, "original")
    assert not P.is_parametrized(param_mod)
    P.remove_parametrizations(model, "weight")
    assert not P.is_parametrized(model)


def test_type_before_parametrizations(T, nn):
    P = nn.utils.parametrize
    model = nn.Linear(5, 5)
    original_type = type(model)
    P.register_parametrization(model, "weight", _Skew(nn)())
    assert type(model) is not original_type
    assert P.type_before_parametrizations(model) is original_type
    assert isinstance(model, nn.Linear)
    assert P.type_before_parametrizations(nn.ReLU()) is nn.ReLU


def test_deepcopy_after_parametrization(T, nn):
    P = nn.utils.parametrize
    model = nn.Linear(3, 3)
    P.register_parametrization(model, "weight", _Skew(nn)())
    c = copy.deepcopy(model)
    assert P.is_parametrized(c, "weight")
    assert c.parametrizations.weight.original is not model.parametrizations.weight.original
    same(c.weight, values(model.weight))
    with T.no_grad():
        c.parametrizations.weight.original.fill_(1.0)
    assert not np.allclose(values(model.weight), values(c.weight))


def test_transfer_parametrizations_and_params(T, nn):
    P = nn.utils.parametrize
    model = nn.Linear(5, 5)
    P.register_parametrization(model, "weight", _Skew(nn)())
    to_model = nn.Linear(5, 5)
    P.transfer_parametrizations_and_params(model, to_model)
    assert P.is_parametrized(to_model, "weight")
    assert to_model.parametrizations.weight.original is model.parametrizations.weight.original
    same(to_model.weight, values(model.weight))


def test_parametrization_same_training_mode(T, nn):
    P = nn.utils.parametrize

    class Identity(nn.Module):
        def forward(self, X):
            return X
    module = nn.Linear(4, 4)
    module.eval()
    P.register_parametrization(module, "weight", Identity())
    assert not module.parametrizations.weight[0].training
    module.train()
    P.register_parametrization(module, "weight", Identity().eval())
    assert module.parametrizations.weight[0].training and module.parametrizations.weight[1].training


def test_parametrization_gradient_and_optimizer_step(T, nn):
    P = nn.utils.parametrize
    model = nn.Linear(4, 4, dtype=T.float64)
    P.register_parametrization(model, "weight", _Orthogonal(T, nn)(4))
    original = model.parametrizations.weight.original
    x = T.randn(3, 4, dtype=T.float64)
    model(x).pow(2).sum().backward()
    assert original.grad is not None and tuple(original.grad.shape) == (4, 4)
    with T.no_grad():
        original.sub_(0.01 * original.grad)
    w = values(model.weight)
    close(w @ w.T, np.eye(4), rtol=1e-10, atol=1e-10)     # still orthogonal after the step


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_orthogonal_parametrization(T, nn, orthogonal_map):
    T.manual_seed(0)
    for shape in ((4, 4), (3, 5), (5, 3)):
        layer = nn.Linear(shape[1], shape[0], dtype=T.float64)
        layer = nn.utils.parametrizations.orthogonal(layer, orthogonal_map=orthogonal_map)
        w = values(layer.weight)
        if shape[0] <= shape[1]:
            close(w @ w.T, np.eye(shape[0]), rtol=1e-10, atol=1e-10)
        else:
            close(w.T @ w, np.eye(shape[1]), rtol=1e-10, atol=1e-10)
        # assigning an orthogonal matrix gives it back
        q = np.linalg.qr(np.random.default_rng(1).standard_normal((max(shape), min(shape))))[0]
        q = q if shape[0] >= shape[1] else q.T
        with T.no_grad():
            layer.weight = T.tensor(q)
        close(layer.weight, q, rtol=1e-8, atol=1e-8)
        layer(T.randn(2, shape[1], dtype=T.float64)).sum().backward()
        assert layer.parametrizations.weight.original.grad is not None


def test_orthogonal_errors(T, nn):
    raises(ValueError, "Expected a matrix or batch of matrices. Got a tensor of 1 dimensions.",
           nn.utils.parametrizations.orthogonal, nn.Linear(3, 4), name="bias")
    raises(ValueError, "orthogonal_map has to be one of", nn.utils.parametrizations.orthogonal, nn.Linear(3, 4),
           orthogonal_map="qr")


def test_new_weight_norm_dim_and_state_dict(T, nn):
    m = nn.Conv1d(2, 3, 2, dtype=T.float64)
    w = values(m.weight).copy()
    m = nn.utils.parametrizations.weight_norm(m, dim=0)
    g = values(m.parametrizations.weight.original0)
    assert g.shape == (3, 1, 1)
    close(g[:, 0, 0], np.linalg.norm(w.reshape(3, -1), axis=1), rtol=1e-12)
    close(m.weight, w, rtol=1e-12)
    assert sorted(m.state_dict()) == ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    m2 = nn.utils.parametrizations.weight_norm(nn.Linear(3, 2), dim=None)
    assert tuple(m2.parametrizations.weight.original0.shape) == ()


def test_new_spectral_norm_eval_keeps_u_v(T, nn):
    T.manual_seed(3)
    m = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 3, dtype=T.float64), n_power_iterations=5)
    sn = m.parametrizations.weight[0]
    m(T.randn(1, 4, dtype=T.float64))
    u = values(sn._u).copy()
    m.eval()
    m(T.randn(1, 4, dtype=T.float64))
    same(sn._u, u)
    m.train()
    m(T.randn(1, 4, dtype=T.float64))
    assert sorted(m.state_dict()) == ["bias", "parametrizations.weight.0._u", "parametrizations.weight.0._v",
                                      "parametrizations.weight.original"]
