"""nn.utils: hook-based spectral_norm and weight_norm, get_total_norm / clip_grads_with_norm_,
BatchNorm fusion, skip_init, stateless.functional_call; by hand and against PyTorch."""

import types
import warnings

import numpy as np
import pytest

import autograd
import nn
from nn import utils

OURS = types.SimpleNamespace(lib=autograd, nn=nn)


def torch_libs():
    torch = pytest.importorskip("torch")
    return types.SimpleNamespace(lib=torch, nn=torch.nn)


def numpy_state(module):
    return {k: np.array(v.detach().numpy(), copy=True) for k, v in module.state_dict().items()}


# -- spectral_norm --------------------------------------------------------------------------------

def spectral_program(L, make, shape, state=None, **options):
    """Three training forwards and one eval forward of a spectral-normalised layer; the outputs, the
    gradient of the original weight, the buffers, and the weight left by remove_spectral_norm."""
    module = L.nn.utils.spectral_norm(make(L).double(), **options)
    if state is not None:
        module.load_state_dict({k: L.lib.tensor(v) for k, v in state.items()})
    x = L.lib.tensor(np.linspace(-1, 1, int(np.prod(shape))).reshape(shape))
    outputs = []
    for _ in range(3):
        out = module(x)
        outputs.append(out.detach().numpy().copy())
    out.pow(2).sum().backward()
    grad = module.weight_orig.grad.numpy().copy()
    module.eval()
    outputs.append(module(x).detach().numpy().copy())
    saved = numpy_state(module)
    L.nn.utils.remove_spectral_norm(module)
    return outputs, grad, saved, module.weight.detach().numpy().copy(), isinstance(module.weight, L.nn.Parameter)


SPECTRAL_CASES = {
    "linear": (lambda L: L.nn.Linear(4, 3), (2, 4), {}),
    "linear-3-iterations": (lambda L: L.nn.Linear(5, 6), (2, 5), dict(n_power_iterations=3, eps=1e-6)),
    "conv2d": (lambda L: L.nn.Conv2d(2, 3, 3), (1, 2, 5, 5), {}),
    "conv-transpose": (lambda L: L.nn.ConvTranspose2d(2, 3, 2), (1, 2, 3, 3), {}),
}


@pytest.mark.torch
@pytest.mark.parametrize("case", SPECTRAL_CASES)
def test_spectral_norm_matches_torch(case):
    make, shape, options = SPECTRAL_CASES[case]
    torch_L = torch_libs()
    torch_L.lib.manual_seed(0)
    start = numpy_state(torch_L.nn.utils.spectral_norm(make(torch_L).double(), **options))
    theirs = spectral_program(torch_L, make, shape, start, **options)
    ours = spectral_program(OURS, make, shape, start, **options)
    for our_out, their_out in zip(ours[0], theirs[0]):
        np.testing.assert_allclose(our_out, their_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-9, atol=1e-12)
    assert list(ours[2]) == list(theirs[2])
    for key in ours[2]:
        np.testing.assert_allclose(ours[2][key], theirs[2][key], rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(ours[3], theirs[3], rtol=1e-10)
    assert ours[4] and theirs[4]


def test_spectral_norm_by_hand():
    """A diagonal weight: σ is its largest entry, and power iteration finds it."""
    layer = nn.Linear(3, 3, bias=False).double()
    with autograd.no_grad():
        layer.weight.copy_(autograd.tensor(np.diag([3.0, -1.0, 0.5])))
    utils.spectral_norm(layer, n_power_iterations=50)
    assert list(layer.state_dict()) == ["weight_orig", "weight_u", "weight_v"]
    assert layer.weight_u.shape == (3,) and layer.weight_v.shape == (3,)
    layer(autograd.zeros(1, 3, dtype=autograd.float64))
    np.testing.assert_allclose(layer.weight.detach().numpy(), np.diag([1.0, -1 / 3, 1 / 6]), atol=1e-10)
    with pytest.raises(RuntimeError, match="Cannot register two spectral_norm hooks on the same parameter weight"):
        utils.spectral_norm(layer)
    utils.remove_spectral_norm(layer)
    assert list(layer.state_dict()) == ["weight"]
    with pytest.raises(ValueError, match="spectral_norm of 'weight' not found in"):
        utils.remove_spectral_norm(layer)
    with pytest.raises(ValueError, match="Expected n_power_iterations to be positive"):
        utils.spectral_norm(nn.Linear(2, 2), n_power_iterations=0)


# -- weight_norm (the hook-based one) ----------------------------------------------------------------

def weight_norm_program(L, dim):
    module = L.nn.Linear(3, 2).double()
    with L.lib.no_grad():
        module.weight.copy_(L.lib.tensor([[1.0, -2.0, 0.5], [0.3, 0.0, -1.5]]))
        module.bias.copy_(L.lib.tensor([0.25, -0.5]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.nn.utils.weight_norm(module, dim=dim)
    deprecated = any(issubclass(w.category, FutureWarning) for w in caught)
    with L.lib.no_grad():
        module.weight_g.mul_(2)
    out = module(L.lib.tensor([[1.0, 2.0, 3.0]], dtype=L.lib.float64))
    out.sum().backward()
    result = (numpy_state(module), out.detach().numpy(), module.weight_g.grad.numpy().copy(),
              module.weight_v.grad.numpy().copy(), deprecated)
    L.nn.utils.remove_weight_norm(module)
    return result + (list(module.state_dict()), module.weight.detach().numpy())


@pytest.mark.torch
@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_matches_torch(dim):
    ours, theirs = weight_norm_program(OURS, dim), weight_norm_program(torch_libs(), dim)
    assert list(ours[0]) == list(theirs[0])
    for key in ours[0]:
        assert ours[0][key].shape == theirs[0][key].shape
        np.testing.assert_allclose(ours[0][key], theirs[0][key], rtol=1e-12)
    for ours_value, theirs_value in zip(ours[1:4], theirs[1:4]):
        np.testing.assert_allclose(ours_value, theirs_value, rtol=1e-12)
    assert ours[4] and theirs[4] and ours[5] == theirs[5]
    np.testing.assert_allclose(ours[6], theirs[6], rtol=1e-12)


def test_weight_norm_by_hand():
    state, out, grad_g, grad_v, deprecated, keys, weight = weight_norm_program(OURS, 0)
    assert deprecated and list(state) == ["bias", "weight_g", "weight_v"] and state["weight_g"].shape == (2, 1)
    np.testing.assert_allclose(state["weight_g"][:, 0], 2 * np.linalg.norm(state["weight_v"], axis=1))
    np.testing.assert_allclose(weight, 2 * np.array([[1.0, -2.0, 0.5], [0.3, 0.0, -1.5]]), rtol=1e-7)
    assert keys == ["bias", "weight"]
    with pytest.raises(ValueError, match="weight_norm of 'weight' not found in"):
        utils.remove_weight_norm(nn.Linear(2, 2))


# -- norms and clipping ------------------------------------------------------------------------------

def clip_program(L, norm_type, dtype):
    rng = np.random.default_rng(3)
    params = [L.lib.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)
              for shape in [(3, 4), (5,), ()]]
    for p in params:
        p.grad = L.lib.tensor(rng.standard_normal(tuple(p.shape)).astype(dtype) * 3)
    total = L.nn.utils.get_total_norm([p.grad for p in params], norm_type)
    L.nn.utils.clip_grads_with_norm_(params, 1.5, total)
    clipped = [p.grad.numpy().copy() for p in params]
    again = L.nn.utils.clip_grad_norm_(params, 0.5, norm_type=norm_type)
    return total.numpy(), clipped, again.numpy(), [p.grad.numpy().copy() for p in params]


@pytest.mark.torch
@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, float("inf")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_total_norm_and_clipping_match_torch(norm_type, dtype):
    ours, theirs = clip_program(OURS, norm_type, dtype), clip_program(torch_libs(), norm_type, dtype)
    tolerance = 1e-6 if dtype == np.float32 else 1e-13
    assert ours[0].dtype == theirs[0].dtype == dtype
    np.testing.assert_allclose(ours[0], theirs[0], rtol=tolerance)
    np.testing.assert_allclose(ours[2], theirs[2], rtol=tolerance)
    for a, b in zip(ours[1] + ours[3], theirs[1] + theirs[3]):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


def test_total_norm_and_clipping_by_hand():
    grads = [autograd.tensor([3.0, 0.0]), autograd.tensor([0.0, 4.0])]
    assert utils.get_total_norm(grads).item() == pytest.approx(5.0)
    assert utils.get_total_norm(grads, 1).item() == pytest.approx(7.0)
    assert utils.get_total_norm(grads, "inf").item() == pytest.approx(4.0)
    assert utils.get_total_norm([]).item() == 0.0
    with pytest.raises(RuntimeError, match="non-finite"):
        utils.get_total_norm([autograd.tensor([np.inf])], error_if_nonfinite=True)
    params = [autograd.zeros(2, requires_grad=True), autograd.zeros(2, requires_grad=True)]
    for p, g in zip(params, grads):
        p.grad = g
    utils.clip_grads_with_norm_(params, 1.0, 5.0)  # a number is accepted for the norm too
    np.testing.assert_allclose(params[0].grad.numpy(), [3 / (5 + 1e-6), 0], rtol=1e-6)
    with pytest.warns(UserWarning, match="empty generator"):
        utils.clip_grad_norm_((p for p in []), 1.0)
    with pytest.warns(FutureWarning, match="clip_grad_norm` is now deprecated"):
        utils.clip_grad_norm(params, 1.0)


# -- fusion --------------------------------------------------------------------------------------------

def fused_outputs(L):
    rng = np.random.default_rng(5)
    conv, bn = L.nn.Conv2d(2, 3, 3, bias=False).double(), L.nn.BatchNorm2d(3).double()
    linear, bn1 = L.nn.Linear(4, 3).double(), L.nn.BatchNorm1d(3).double()
    with L.lib.no_grad():
        for module in (conv, bn, linear, bn1):
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.dtype == L.lib.float64:
                    tensor.copy_(L.lib.tensor(rng.uniform(0.5, 1.5, tuple(tensor.shape))))
    for module in (conv, bn, linear, bn1):
        module.eval()
    x, y = L.lib.tensor(rng.standard_normal((2, 2, 5, 5))), L.lib.tensor(rng.standard_normal((2, 4)))
    fused_conv, fused_linear = L.nn.utils.fuse_conv_bn_eval(conv, bn), L.nn.utils.fuse_linear_bn_eval(linear, bn1)
    return [t.detach().numpy() for t in (bn(conv(x)), fused_conv(x), bn1(linear(y)), fused_linear(y),
                                         fused_conv.weight, fused_conv.bias, fused_linear.weight, fused_linear.bias)]


def test_fusion_gives_the_same_outputs():
    values = fused_outputs(OURS)
    np.testing.assert_allclose(values[1], values[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(values[3], values[2], rtol=1e-12, atol=1e-12)
    with pytest.raises(AssertionError, match="Fusion only for eval!"):
        utils.fuse_linear_bn_eval(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(AssertionError, match="To fuse, linear.out_features == bn.num_features"):
        utils.fuse_linear_bn_eval(nn.Linear(2, 2).eval(), nn.BatchNorm1d(3).eval())
    weight, bias = utils.fuse_conv_bn_weights(autograd.ones(2, 1, 1, 1), None, autograd.zeros(2), autograd.ones(2),
                                              0.0, None, None, transpose=False)
    assert isinstance(weight, nn.Parameter) and bias.tolist() == [0.0, 0.0]


@pytest.mark.torch
def test_fusion_matches_torch():
    for ours, theirs in zip(fused_outputs(OURS), fused_outputs(torch_libs())):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


# -- skip_init and functional_call ---------------------------------------------------------------------

def test_skip_init():
    layer = utils.skip_init(nn.Linear, 3, 2, bias=False)
    assert isinstance(layer, nn.Linear) and layer.weight.shape == (2, 3) and layer.bias is None
    assert isinstance(layer.weight, nn.Parameter) and layer.weight.requires_grad and not layer.weight.is_meta


@pytest.mark.parametrize("libs", ["ours", "torch"])
def test_skip_init_draws_no_numbers_and_needs_a_device_argument(libs):
    L = OURS if libs == "ours" else torch_libs()
    L.lib.manual_seed(0)
    expected = L.lib.rand(2)
    L.lib.manual_seed(0)
    layer = L.nn.utils.skip_init(L.nn.Conv2d, 1, 2, 3)  # built on the meta device: nothing initialised
    assert L.lib.equal(L.lib.rand(2), expected) and layer.weight.device.type == "cpu"

    class NoDevice(L.nn.Module):
        def __init__(self):
            super().__init__()

    with pytest.raises(RuntimeError, match="Module must support a 'device' arg to skip initialization"):
        L.nn.utils.skip_init(NoDevice)


def test_functional_call_differentiates_the_given_tensors():
    model = nn.Linear(2, 1).double()
    weight = autograd.tensor([[2.0, -1.0]], dtype=autograd.float64, requires_grad=True)
    bias = autograd.tensor([0.5], dtype=autograd.float64)
    x = autograd.tensor([[1.0, 3.0]], dtype=autograd.float64)
    with pytest.warns(FutureWarning, match="functional_call` is deprecated"):
        out = utils.stateless.functional_call(model, {"weight": weight, "bias": bias}, (x,))
    assert out.item() == pytest.approx(2 - 3 + 0.5)
    out.sum().backward()
    np.testing.assert_allclose(weight.grad.numpy(), [[1.0, 3.0]])
    assert model.weight.grad is None and model.weight is not weight and isinstance(model.weight, nn.Parameter)
    assert list(model.state_dict()) == ["weight", "bias"]


def test_functional_call_ties_strict_and_new_attributes():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2, bias=False)
            self.b = nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    from nn.utils.stateless import _functional_call

    model, eye = Tied(), autograd.eye(2)
    x = autograd.tensor([[1.0, 2.0]])
    np.testing.assert_allclose(_functional_call(model, {"a.weight": eye * 2}, x).numpy(), [[4.0, 8.0]])
    np.testing.assert_allclose(_functional_call(model, {"a.weight": eye * 2}, x, tie_weights=False).numpy(),
                               (x @ (eye * 2).T @ model.a.weight.T).detach().numpy())
    with pytest.raises(ValueError, match="which are tied"):
        _functional_call(model, {"a.weight": eye, "b.weight": eye * 2}, x)
    with pytest.raises(RuntimeError, match=r"Error\(s\) in reparametrizing for Tied:\n\tUnexpected key\(s\): 'c'"):
        _functional_call(model, {"a.weight": eye, "c": eye}, x, strict=True)
    _functional_call(model, {"a.weight": eye, "extra": eye}, x)  # a new attribute, removed after
    assert not hasattr(model, "extra")


def test_functional_call_strict_names_missing_keys_sorted():
    """PyTorch sorts them: a set's order (hashed strings) would change from one process to the next."""
    from nn.utils.stateless import _functional_call

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(RuntimeError, match=r"\tUnexpected key\(s\): 'a', 'b'.\n\tMissing key\(s\): '0.bias', "
                                           r"'0.weight', '1.bias', '1.num_batches_tracked', '1.running_mean', "
                                           r"'1.running_var', '1.weight'.$"):
        _functional_call(model, {"b": autograd.ones(1), "a": autograd.ones(1)}, autograd.ones(3, 2), strict=True)


@pytest.mark.torch
def test_functional_call_matches_torch_on_tied_weights():
    results = []
    for L in (OURS, torch_libs()):
        module = L.nn.Sequential(L.nn.Linear(2, 2, bias=False), L.nn.Linear(2, 2, bias=False))
        module[1].weight = module[0].weight
        weight = L.lib.tensor([[1.0, 2.0], [-1.0, 0.5]], requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = L.nn.utils.stateless.functional_call(module, {"0.weight": weight}, L.lib.tensor([[1.0, -1.0]]))
        out.sum().backward()
        results.append((out.detach().numpy(), weight.grad.numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
