"""torch.nn.utils, ported from PyTorch's test/test_nn.py, test/nn/test_parametrization.py and
test/nn/test_pruning.py (CPU): clip_grad_norm_ / clip_grad_value_ (foreach, error_if_nonfinite, a single
tensor, an exhausted generator), parameters_to_vector / vector_to_parameters, weight_norm and
spectral_norm (the hooks and the parametrizations), register_parametrization and pruning. Each test runs
on chainrule's `nn` and, where it is installed, on PyTorch's."""

import importlib
import pickle
import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


# -- clip_grad_norm_ / clip_grad_value_ -----------------------------------------------------------

def _set_grads(T, module, grads):
    for p, g in zip(module.parameters(), grads):
        p.grad = g.clone().view_as(p.data)


def _norm(module, norm_type):
    gs = [values(p.grad).astype(np.float64).ravel() for p in module.parameters() if p.grad is not None]
    g = np.concatenate(gs)
    if norm_type == "inf":
        return np.abs(g).max()
    return (np.abs(g) ** norm_type).sum() ** (1 / norm_type)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm_type", [0.5, 1.5, 2, 4, "inf"])
def test_clip_grad_norm(T, nn, foreach, norm_type):
    l = nn.Linear(10, 10)
    max_norm = 2
    grads = T.arange(1.0, 101).view(10, 10), T.ones(10).div(1000)
    _set_grads(T, l, grads)
    norm_before = _norm(l, norm_type)
    norm = nn.utils.clip_grad_norm_(l.parameters(), max_norm, norm_type=norm_type, foreach=foreach)
    close(norm, norm_before, rtol=1e-5)
    close(_norm(l, norm_type), max_norm, rtol=1e-5)
    scale = max_norm / (norm_before + 1e-6)
    close(l.weight.grad, values(grads[0]) * scale, rtol=1e-5)      # one factor for every gradient
    close(l.bias.grad, values(grads[1]) * scale, rtol=1e-5)

    # small gradients are left unchanged
    grads = T.rand(10, 10).div(10000), T.ones(10).div(500)
    _set_grads(T, l, grads)
    norm_before = _norm(l, norm_type)
    norm = nn.utils.clip_grad_norm_(l.parameters(), max_norm, norm_type=norm_type, foreach=foreach)
    close(norm, norm_before, rtol=1e-5)
    same(l.weight.grad, values(grads[0]))
    same(l.bias.grad, values(grads[1]))


def test_clip_grad_norm_single_tensor_and_empty_generator(T, nn):
    p1, p2 = T.randn(10, 10), T.randn(10, 10)
    g = T.arange(1.0, 101).view(10, 10)
    p1.grad = g.clone()
    p2.grad = g.clone()
    nn.utils.clip_grad_norm_(p1, 2)
    nn.utils.clip_grad_norm_([p2], 2)
    same(p1.grad, values(p2.grad))
    l = nn.Linear(2, 2)
    params = l.parameters()
    for _ in params:
        pass
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        norm = nn.utils.clip_grad_norm_(params, max_norm=1)
    assert any("`parameters` is an empty generator, no gradient clipping will occur." in str(x.message) for x in w)
    same(norm, 0.0)
    # parameters without gradients are skipped; none at all gives a zero norm
    same(nn.utils.clip_grad_norm_(nn.Linear(2, 2).parameters(), 1.0), 0.0)


@pytest.mark.parametrize("foreach", [False, True])
def test_clip_grad_norm_error_if_nonfinite(T, nn, foreach):
    for bad in (float("inf"), float("nan")):
        p = T.ones(3, requires_grad=True)
        p.grad = T.tensor([1.0, bad, 2.0])
        raises(RuntimeError, "The total norm of order 2.0 for gradients from `parameters` is non-finite, so it "
               "cannot be clipped", nn.utils.clip_grad_norm_, [p], 1.0, error_if_nonfinite=True, foreach=foreach)
        norm = nn.utils.clip_grad_norm_([p], 1.0, foreach=foreach)      # by default: returned, not raised
        assert not np.isfinite(values(norm))


def test_clip_grad_norm_returns_and_keeps_dtype(T, nn):
    p = T.ones(2, dtype=T.float64, requires_grad=True)
    p.grad = T.tensor([3.0, 4.0], dtype=T.float64)
    norm = nn.utils.clip_grad_norm_([p], 1.0)
    assert str(norm.dtype).endswith("float64")
    close(norm, 5.0, rtol=1e-12)
    close(p.grad, [0.6, 0.8], rtol=1e-6)


def test_get_total_norm_and_clip_grads_with_norm(T, nn):
    if not hasattr(nn.utils, "get_total_norm"):
        pytest.skip("this PyTorch has no get_total_norm")
    grads = [T.tensor([3.0, 0.0]), T.tensor([4.0])]
    close(nn.utils.get_total_norm(grads), 5.0)
    close(nn.utils.get_total_norm(grads, norm_type=1.0), 7.0)
    p = T.zeros(2, requires_grad=True)
    p.grad = T.tensor([3.0, 4.0])
    nn.utils.clip_grads_with_norm_([p], 1.0, T.tensor(5.0))
    close(p.grad, [0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize("foreach", [False, True])
def test_clip_grad_value(T, nn, foreach):
    l = nn.Linear(10, 10)
    clip_value = 2.5
    grad_w, grad_b = T.arange(-50.0, 50).view(10, 10).div_(5), T.ones(10).mul_(2)
    for grad_list in [[grad_w, grad_b], [grad_w, None]]:
        for p, g in zip(l.parameters(), grad_list):
            p._grad = g.clone().view_as(p.data) if g is not None else g
        nn.utils.clip_grad_value_(l.parameters(), clip_value, foreach=foreach)
        for p in filter(lambda p: p.grad is not None, l.parameters()):
            assert values(p.grad).max() <= clip_value
            assert values(p.grad).min() >= -clip_value
        close(l.weight.grad, np.clip(values(grad_w), -2.5, 2.5))
    # Should accept a single Tensor as input
    p1, p2 = T.randn(10, 10), T.randn(10, 10)
    g = T.arange(-50.0, 50).view(10, 10).div_(5)
    p1._grad = g.clone()
    p2._grad = g.clone()
    nn.utils.clip_grad_value_(p1, clip_value, foreach=foreach)
    nn.utils.clip_grad_value_([p2], clip_value, foreach=foreach)
    same(p1.grad, values(p2.grad))


# -- parameters_to_vector / vector_to_parameters --------------------------------------------------

def test_parameters_to_vector(T, nn):
    conv1 = nn.Conv2d(3, 10, 5)
    fc1 = nn.Linear(10, 20)
    model = nn.Sequential(conv1, fc1)
    vec = nn.utils.parameters_to_vector(model.parameters())
    assert vec.size(0) == 980
    same(vec[:750], values(conv1.weight).ravel())
    same(vec[-20:], values(fc1.bias))


def test_vector_to_parameters(T, nn):
    conv1 = nn.Conv2d(3, 10, 5)
    fc1 = nn.Linear(10, 20)
    model = nn.Sequential(conv1, fc1)
    vec = T.arange(0.0, 980)
    nn.utils.vector_to_parameters(vec, model.parameters())
    sample = next(model.parameters())[0, 0, 0]
    same(sample.data, values(vec.data[:5]))
    same(fc1.bias, np.arange(960.0, 980.0, dtype=np.float32))
    raises(TypeError, "expected torch.Tensor, but got: list", nn.utils.vector_to_parameters, [1.0],
           model.parameters())


def test_parameters_to_vector_gradient(T, nn):
    lin = nn.Linear(2, 1)
    vec = nn.utils.parameters_to_vector(lin.parameters())
    (vec * T.tensor([1.0, 2.0, 3.0])).sum().backward()
    same(lin.weight.grad, [[1.0, 2.0]])
    same(lin.bias.grad, [3.0])


# -- weight_norm ----------------------------------------------------------------------------------

def test_weight_norm(T, nn):
    for dtype in (T.float, T.double):
        input = T.randn(3, 40, dtype=dtype)
        m = nn.Linear(40, 50).to(dtype=dtype)
        expected_output = m(input)

        # add weight normalization
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = nn.utils.weight_norm(m)
        assert m.weight_v.size() == m.weight.size()
        assert tuple(m.weight_g.size()) == (50, 1)
        close(m(input), values(expected_output), rtol=1e-5, atol=1e-6)
        assert [n for n, _ in m.named_parameters()] == ["bias", "weight_g", "weight_v"]
        assert not isinstance(m.weight, nn.Parameter)

        # remove weight norm
        m = nn.utils.remove_weight_norm(m)
        assert not hasattr(m, "weight_g") and not hasattr(m, "weight_v")
        close(m(input), values(expected_output), rtol=1e-5, atol=1e-6)
        assert isinstance(m.weight, nn.Parameter)

        # test with dim=1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = nn.utils.weight_norm(m, dim=1)
        assert m.weight_v.size() == m.weight.size()
        assert tuple(m.weight_g.size()) == (1, 40)
        close(m(input), values(expected_output), rtol=1e-5, atol=1e-6)

        # test with dim=None
        m = nn.Linear(40, 50).to(dtype=dtype)
        expected_output = m(input)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = nn.utils.weight_norm(m, dim=None)
        assert tuple(m.weight_g.size()) == ()
        close(m(input), values(expected_output), rtol=1e-5, atol=1e-6)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raises(RuntimeError, "Cannot register two weight_norm hooks on the same parameter weight",
                   nn.utils.weight_norm, m)
        raises(ValueError, "weight_norm of 'weight' not found in", nn.utils.remove_weight_norm, nn.Linear(2, 2))


def test_weight_norm_values_and_gradient(T, nn):
    m = nn.Linear(3, 2, dtype=T.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nn.utils.weight_norm(m)
    v = values(m.weight_v)
    close(m.weight_g, np.linalg.norm(v, axis=1, keepdims=True), rtol=1e-12)
    with T.no_grad():
        m.weight_g.fill_(2.0)
    m(T.ones(1, 3, dtype=T.float64))             # the weight is recomputed before each forward
    close(m.weight, 2.0 * v / np.linalg.norm(v, axis=1, keepdims=True), rtol=1e-12)
    m(T.ones(1, 3, dtype=T.float64)).sum().backward()
    assert m.weight_g.grad is not None and m.weight_v.grad is not None


def test_weight_norm_pickle(T, nn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = nn.utils.weight_norm(nn.Linear(5, 7))
    m = pickle.loads(pickle.dumps(m))
    assert isinstance(m, nn.Linear)


def test_weight_norm_parametrization(T, nn):
    m = nn.Linear(4, 3, dtype=T.float64)
    w = values(m.weight).copy()
    m = nn.utils.parametrizations.weight_norm(m)
    pz = m.parametrizations.weight
    assert [n for n, _ in m.named_parameters()] == ["bias", "parametrizations.weight.original0",
                                                    "parametrizations.weight.original1"]
    close(pz.original0, np.linalg.norm(w, axis=1, keepdims=True), rtol=1e-12)
    close(pz.original1, w, rtol=1e-12)
    close(m.weight, w, rtol=1e-12)
    nn.utils.parametrize.remove_parametrizations(m, "weight")
    close(m.weight, w, rtol=1e-12)
    assert isinstance(m.weight, nn.Parameter)


# -- spectral_norm --------------------------------------------------------------------------------

def test_spectral_norm(T, nn):
    input = T.randn(3, 5)
    m = nn.Linear(5, 7)
    m = nn.utils.spectral_norm(m)
    assert tuple(m.weight_u.size()) == (7,)
    assert tuple(m.weight_v.size()) == (5,)
    # weight_orig should be trainable
    assert hasattr(m, "weight_orig")
    assert "weight_orig" in m._parameters
    # weight_u should be just a reused buffer
    assert "weight_u" in m._buffers
    assert "weight_v" in m._buffers
    assert "weight" not in m._parameters and "weight" not in m._buffers
    assert m.weight_orig.dtype == m.weight_u.dtype
    m(input)
    raises(RuntimeError, "Cannot register two spectral_norm hooks on the same parameter weight",
           nn.utils.spectral_norm, m)
    m = nn.utils.remove_spectral_norm(m)
    assert not hasattr(m, "weight_orig") and not hasattr(m, "weight_u")
    assert isinstance(m.weight, nn.Parameter)
    assert set(m.state_dict()) == {"weight", "bias"}
    raises(ValueError, "spectral_norm of 'weight' not found in", nn.utils.remove_spectral_norm, m)


def test_spectral_norm_normalises_the_largest_singular_value(T, nn):
    T.manual_seed(0)
    m = nn.utils.spectral_norm(nn.Linear(6, 4, dtype=T.float64), n_power_iterations=30)
    x = T.randn(2, 6, dtype=T.float64)
    m(x)
    close(np.linalg.svd(values(m.weight), compute_uv=False)[0], 1.0, rtol=1e-6)
    w_orig = values(m.weight_orig)
    close(m.weight, w_orig / np.linalg.svd(w_orig, compute_uv=False)[0], rtol=1e-6)
    # eval: u and v stay where they are
    m.eval()
    u = values(m.weight_u).copy()
    m(x)
    same(m.weight_u, u)
    raises(ValueError, "Expected n_power_iterations to be positive, but got n_power_iterations=0",
           nn.utils.spectral_norm, nn.Linear(2, 2), n_power_iterations=0)


def test_spectral_norm_state_dict_keys(T, nn):
    m = nn.utils.spectral_norm(nn.Linear(3, 2))
    assert list(m.state_dict()) == ["bias", "weight_orig", "weight_u", "weight_v"]
    m2 = nn.utils.spectral_norm(nn.Linear(3, 2))
    m2.load_state_dict(m.state_dict())
    same(m2.weight_orig, values(m.weight_orig))


def test_spectral_norm_parametrization(T, nn):
    T.manual_seed(1)
    m = nn.utils.parametrizations.spectral_norm(nn.Linear(5, 3, dtype=T.float64), n_power_iterations=20)
    assert nn.utils.parametrize.is_parametrized(m, "weight")
    w = values(m.parametrizations.weight.original)
    for _ in range(3):
        m(T.ones(1, 5, dtype=T.float64))
    close(m.weight, w / np.linalg.svd(w, compute_uv=False)[0], rtol=1e-6)


# -- register_parametrization ---------------------------------------------------------------------

def _symmetric(nn):
    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)
    return Symmetric


def test_register_parametrization(T, nn):
    P = nn.utils.parametrize
    model = nn.Linear(3, 3)
    original = values(model.weight).copy()
    P.register_parametrization(model, "weight", _symmetric(nn)())
    assert P.is_parametrized(model) and P.is_parametrized(model, "weight")
    assert not P.is_parametrized(model, "bias")
    assert hasattr(model, "parametrizations") and "weight" not in model._parameters
    w = values(model.weight)
    same(w, w.T)
    same(model.parametrizations.weight.original, original)
    assert [n for n, _ in model.named_parameters()] == ["bias", "parametrizations.weight.original"]
    assert type(model).__name__ == "ParametrizedLinear"

    # gradients flow to the original
    model(T.ones(1, 3)).sum().backward()
    g = values(model.parametrizations.weight.original.grad)
    same(np.tril(g, -1), np.zeros((3, 3)))       # the lower triangle is not used

    # remove: keep the parametrized value, or the original
    P.remove_parametrizations(model, "weight", leave_parametrized=True)
    assert not P.is_parametrized(model)
    same(model.weight, w)
    assert type(model).__name__ == "Linear"
    model = nn.Linear(3, 3)
    original = values(model.weight).copy()
    P.register_parametrization(model, "weight", _symmetric(nn)())
    P.remove_parametrizations(model, "weight", leave_parametrized=False)
    same(model.weight, original)
    raises(ValueError, "Module Linear\\(in_features=3, out_features=3, bias=True\\) does not have a parametrization "
           "on weight", P.remove_parametrizations, model, "weight")


def test_parametrization_right_inverse_and_assignment(T, nn):
    P = nn.utils.parametrize

    class Double(nn.Module):
        def forward(self, X):
            return 2 * X

        def right_inverse(self, X):
            return X / 2
    m = nn.Linear(2, 2)
    w = values(m.weight).copy()
    P.register_parametrization(m, "weight", Double())
    close(m.parametrizations.weight.original, w / 2)     # right_inverse at registration keeps the weight
    close(m.weight, w)
    with T.no_grad():
        m.weight = T.ones(2, 2)                          # assignment goes through right_inverse
    close(m.parametrizations.weight.original, np.full((2, 2), 0.5))
    close(m.weight, np.ones((2, 2)))


def test_parametrization_chain_and_cached(T, nn):
    P = nn.utils.parametrize

    class AddOne(nn.Module):
        def forward(self, X):
            return X + 1
    m = nn.Linear(2, 2, bias=False)
    w = values(m.weight).copy()
    P.register_parametrization(m, "weight", AddOne())
    P.register_parametrization(m, "weight", _symmetric(nn)())
    assert len(m.parametrizations.weight) == 2
    expected = np.triu(w + 1) + np.triu(w + 1, 1).T
    close(m.weight, expected)
    with P.cached():
        a = m.weight
        b = m.weight
        assert a is b
    assert m.weight is not m.weight


def test_parametrization_errors(T, nn):
    P = nn.utils.parametrize

    class ChangeShape(nn.Module):
        def forward(self, X):
            return X[:1]

    class ChangeDtype(nn.Module):
        def forward(self, X):
            return X.double()
    raises(ValueError, "Registering a parametrization may not change the shape of the tensor",
           P.register_parametrization,
           nn.Linear(2, 2), "weight", ChangeShape())
    raises(ValueError, "Registering a parametrization may not change the dtype of the tensor",
           P.register_parametrization,
           nn.Linear(2, 2), "weight", ChangeDtype())
    P.register_parametrization(nn.Linear(2, 2), "weight", ChangeShape(), unsafe=True)
    raises(ValueError, "Module 'Linear\\(in_features=2, out_features=2, bias=True\\)' does not have a parameter, "
           "a buffer, or a parametrized element with name 'nope'", P.register_parametrization, nn.Linear(2, 2), "nope",
           ChangeShape())


def test_parametrization_on_buffer_and_state_dict(T, nn):
    P = nn.utils.parametrize

    class Scale(nn.Module):
        def forward(self, X):
            return X * 3
    m = nn.Module()
    m.register_buffer("b", T.ones(2))
    P.register_parametrization(m, "b", Scale())
    same(m.b, [3.0, 3.0])
    assert "parametrizations.b.original" in m.state_dict()
    assert list(m.parameters()) == []          # a buffer's original stays a buffer


# -- prune ----------------------------------------------------------------------------------------

def test_prune_random_and_l1_unstructured(T, nn):
    prune = importlib.import_module(nn.utils.__name__ + ".prune")
    m = nn.Linear(5, 2)
    original = values(m.weight).copy()
    prune.l1_unstructured(m, name="weight", amount=3)
    assert "weight_orig" in m._parameters and "weight_mask" in m._buffers and "weight" not in m._parameters
    mask = values(m.weight_mask)
    assert mask.sum() == 7
    smallest = np.argsort(np.abs(original).ravel())[:3]
    same(mask.ravel()[smallest], np.zeros(3, np.float32))
    same(m.weight, original * mask)
    assert prune.is_pruned(m)
    # pruning again combines the masks (a PruningContainer)
    prune.random_unstructured(m, name="weight", amount=0.5)
    assert values(m.weight_mask).sum() == 7 - round(0.5 * 7)
    prune.remove(m, "weight")
    assert isinstance(m.weight, nn.Parameter) and not hasattr(m, "weight_mask") and not hasattr(m, "weight_orig")
    assert not prune.is_pruned(m)


def test_prune_ln_structured_and_global(T, nn):
    prune = importlib.import_module(nn.utils.__name__ + ".prune")
    m = nn.Linear(3, 4)
    with T.no_grad():
        m.weight.copy_(T.tensor([[1.0, 1, 1], [0.1, 0.1, 0.1], [5.0, 0, 0], [0.2, 0.3, 0.1]]))
    prune.ln_structured(m, "weight", amount=2, n=2, dim=0)
    same(m.weight_mask, [[1, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]])
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    with T.no_grad():
        a.weight.copy_(T.tensor([[1.0, -2.0], [0.1, 3.0]]))
        b.weight.copy_(T.tensor([[0.05, 4.0], [-0.2, 0.5]]))
    prune.global_unstructured([(a, "weight"), (b, "weight")], pruning_method=prune.L1Unstructured, amount=3)
    same(a.weight_mask, [[1, 1], [0, 1]])
    same(b.weight_mask, [[0, 1], [0, 1]])


def test_prune_amount_errors_and_identity(T, nn):
    prune = importlib.import_module(nn.utils.__name__ + ".prune")
    raises(ValueError, r"amount=1.5 should either be a float in the range \[0, 1\] or a non-negative integer",
           prune.l1_unstructured, nn.Linear(2, 5), "weight", amount=1.5)
    raises(ValueError, "amount=20 should be smaller than the number of parameters to prune=10",
           prune.l1_unstructured, nn.Linear(2, 5), "weight", amount=20)
    raises(TypeError, "Invalid type for amount: 1. Must be int or float.", prune.l1_unstructured,
           nn.Linear(2, 5), "weight", amount="1")
    m = nn.Linear(2, 3)
    prune.identity(m, "bias")
    same(m.bias_mask, np.ones(3, np.float32))
    custom = nn.Linear(2, 2)
    prune.custom_from_mask(custom, "weight", mask=T.tensor([[1.0, 0.0], [0.0, 1.0]]))
    same(custom.weight, values(custom.weight_orig) * np.eye(2, dtype=np.float32))


# -- TestUtils, TestFusionUtils -------------------------------------------------------------------

def _modules_utils(nn):
    return importlib.import_module(nn.__name__ + ".modules.utils")


def test_consume_prefix_in_state_dict_if_present(T, nn):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 3, 3, bias=True)
            self.conv2 = nn.Conv2d(3, 3, 3, bias=False)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear1 = nn.Linear(5, 5)
            self.linear2 = nn.Linear(5, 5)
            self.bn = nn.BatchNorm2d(2)
            self.block = Block()

    # 0. Case non-DDP model empty state_dict
    net = nn.Module()
    state_dict = net.state_dict()
    _modules_utils(nn).consume_prefix_in_state_dict_if_present(state_dict, "module.")
    assert list(state_dict.keys()) == list(net.state_dict().keys())

    # 1. Case non-DDP model test example state_dict
    net = Net()
    state_dict = net.state_dict()
    _modules_utils(nn).consume_prefix_in_state_dict_if_present(state_dict, "module.")
    assert list(state_dict.keys()) == list(net.state_dict().keys())

    # 2. Case DDP model test example state_dict
    state_dict = net.state_dict()
    metadata = state_dict._metadata
    ddp_state_dict = type(state_dict)((f"module.{k}", v) for k, v in state_dict.items())
    ddp_state_dict._metadata = type(metadata)({"": metadata[""]})
    ddp_state_dict._metadata.update(("module" if k == "" else f"module.{k}", v) for k, v in metadata.items())
    _modules_utils(nn).consume_prefix_in_state_dict_if_present(ddp_state_dict, "module.")
    assert list(ddp_state_dict.keys()) == list(state_dict.keys())
    assert sorted(ddp_state_dict._metadata.keys()) == sorted(metadata.keys())
    net.load_state_dict(ddp_state_dict)


def test_ntuple_helpers(T, nn):
    u = _modules_utils(nn)
    assert u._pair(3) == (3, 3) and u._single([2]) == (2,) and u._triple((1, 2, 3)) == (1, 2, 3)
    assert u._reverse_repeat_tuple((1, 2), 2) == (2, 2, 1, 1)
    assert u._list_with_default([None, 3], [1, 2, 5, 6]) == [5, 3]


@pytest.mark.parametrize("transpose", [False, True])
def test_fuse_conv_bn_eval(T, nn, transpose):
    T.manual_seed(0)
    conv = (nn.ConvTranspose2d(3, 4, 3) if transpose else nn.Conv2d(3, 4, 3)).to(T.float64).eval()
    bn = nn.BatchNorm2d(4).to(T.float64)
    bn(conv(T.randn(5, 3, 6, 6, dtype=T.float64)))      # running statistics that are not 0 and 1
    bn.eval()
    with T.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    fused = nn.utils.fuse_conv_bn_eval(conv, bn, transpose=transpose)
    x = T.randn(2, 3, 5, 5, dtype=T.float64)
    close(fused(x), values(bn(conv(x))), rtol=1e-10, atol=1e-12)
    assert fused is not conv and isinstance(fused.weight, nn.Parameter)


def test_fuse_linear_bn_eval(T, nn):
    T.manual_seed(1)
    linear = nn.Linear(3, 4, dtype=T.float64).eval()
    bn = nn.BatchNorm1d(4, dtype=T.float64)
    bn(linear(T.randn(8, 3, dtype=T.float64)))
    bn.eval()
    fused = nn.utils.fuse_linear_bn_eval(linear, bn)
    x = T.randn(2, 3, dtype=T.float64)
    close(fused(x), values(bn(linear(x))), rtol=1e-10, atol=1e-12)
    linear.train()
    raises(AssertionError, "Fusion only for eval!", nn.utils.fuse_linear_bn_eval, linear, bn)


def test_vector_to_parameters_size_mismatch(T, nn):
    raises(RuntimeError, "", nn.utils.vector_to_parameters, T.ones(1), [T.ones(2)])
    if ported_nn.on_chainrule(T):   # PyTorch reads the first elements of a longer vector without a word
        raises(RuntimeError, "vector has 3 elements but the parameters need 2", nn.utils.vector_to_parameters,
               T.ones(3), [T.ones(2)])
        raises(ValueError, r"expects a 1-D vector, got a tensor of shape \(1, 2\)", nn.utils.vector_to_parameters,
               T.ones(1, 2), [T.ones(2)])
