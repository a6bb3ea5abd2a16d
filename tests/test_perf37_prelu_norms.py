"""PReLU as one node (``Prelu``, autograd/ops/activations.py), PyTorch's PreluKernelBackward0: its values and
gradients against the composite it replaced (where(x > 0, x, x · a), three nodes), bit for bit, and against
PyTorch's; its double backward against PyTorch's. Mish as one node (``Mish``, autograd/ops/mish.py, PyTorch's
MishBackward0) against the composite it replaced (x · tanh(softplus(x)), float16 in float32), bit for bit, and
against PyTorch's. (Finite differences: tests/test_ops_prelu.py, tests/test_ops_mish.py.)"""

import numpy as np
import pytest

import autograd
import nn
from autograd.ops.activations import Prelu
from autograd.ops.elementwise import where
from autograd.ops.mish import Mish

F = nn.functional

# (input shape, weight's number of slopes): 0-d to 4-d inputs, one slope or one per channel (dim 1)
SHAPES = [((), 1), ((7,), 1), ((5, 3), 1), ((5, 3), 3), ((2, 4, 6), 4), ((4, 6, 9, 9), 6), ((4, 6, 9, 9), 1),
          ((16, 64, 512), 1), ((32, 64, 16, 16), 64)]
EDGES = np.array([-1.0, 0.0, -0.0, 1.0, np.inf, -np.inf, np.nan, -2.0, 3e-38, -3e-38])


def _composite(input, weight):
    """The rule prelu computed before this session: a selection between x and x · a (a reshaped along dim 1)."""
    slopes = weight.reshape(()) if weight.numel() == 1 else weight.reshape(
        (1, input.shape[1]) + (1,) * (input.ndim - 2))
    return where(input > 0, input, input * slopes)


def _arrays(shape, slopes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    if x.size >= 3:
        x.flat[:3] = [0.0, -0.0, 2.0]
    weight = (0.25 + 0.1 * rng.standard_normal(slopes)).astype(dtype)
    return x, weight, rng.standard_normal(shape).astype(dtype)


def _ours(function, x, weight, g):
    xt, wt = autograd.tensor(x, requires_grad=True), autograd.tensor(weight, requires_grad=True)
    y = function(xt, wt)
    y.backward(autograd.tensor(g))
    return y, y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def _bits(array):
    return np.asarray(array).shape, np.asarray(array).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "slopes"), SHAPES)
def test_prelu_values_and_gradients_are_the_composites_bit_for_bit(shape, slopes, dtype):
    x, weight, g = _arrays(shape, slopes, dtype)
    y, *ours = _ours(F.prelu, x, weight, g)
    _, *before = _ours(_composite, x, weight, g)
    assert y.grad_fn.name() == "PreluKernelBackward0" and isinstance(y.grad_fn, Prelu)
    assert y.dtype == autograd.tensor(x).dtype and tuple(y.shape) == shape
    for new, old in zip(ours, before, strict=True):
        assert _bits(new) == _bits(old)


def test_prelu_is_one_node_saving_the_input_and_the_reshaped_weight():
    x, w = autograd.randn(2, 3, 4, requires_grad=True), autograd.rand(3, requires_grad=True)
    y = F.prelu(x, w)
    assert y.grad_fn.next_functions[0][0].name() == "torch::autograd::AccumulateGrad"
    assert y.grad_fn.next_functions[1][0].name() == "ViewBackward0"  # (the weight's reshape, as PyTorch's)
    assert np.array_equal(y.grad_fn._saved_self.detach().numpy(), x.detach().numpy())
    assert np.array_equal(y.grad_fn._saved_weight.detach().numpy(), w.detach().numpy().reshape(1, 3, 1))


def test_prelu_gradients_at_edges_are_pytorchs_selections():
    """dL/dx is g for x > 0, a g otherwise: -0 where a g is -0 (the composite's 0 + a g gave +0), and g where
    the slope is infinite (the composite's g + 0 · ∞ gave NaN)."""
    x = EDGES.astype(np.float32)
    g = np.array([-0.0, 1, 2, -0.0, 1, 1, 1, 0.0, 1, -1e-38], np.float32)
    _, y, dx, _ = _ours(F.prelu, x, np.array([0.25], np.float32), g)
    assert _bits(y) == _bits(np.where(x > 0, x, x * np.float32(0.25)))
    assert _bits(dx) == _bits(np.where(x > 0, g, g * np.float32(0.25)))
    assert np.signbit(dx[0]) and dx[0] == 0
    _, _, dx, _ = _ours(F.prelu, x, np.array([np.inf], np.float32), g)
    assert dx[3] == 0 and np.signbit(dx[3]) and dx[4] == 1 and dx[8] == 1  # (x > 0: g itself)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("slopes", [[0.25], [1.0], [1e-30], [1.5], [3.0, 2.0, 1.25], [0.5, 0.25, 1.0], [-0.5],
                                    [0.5, -0.25, 2.0], [0.0], [np.inf]])
def test_prelu_by_maximum_or_minimum_is_the_selection_bit_for_bit(slopes, dtype):
    """Slopes in (0, 1] take NumPy's maximum of a x and x, finite ones above 1 its minimum, others the selection:
    the selection's values everywhere, ±0, ±∞, NaN and the largest numbers among them."""
    finfo = np.finfo(dtype)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, finfo.smallest_subnormal, -finfo.tiny, finfo.max,
                      -finfo.max, 1.0, -1.0], dtype)
    rng = np.random.default_rng(len(slopes))
    x = rng.standard_normal((6, len(slopes), 40, 40)).astype(dtype)
    x.reshape(-1)[: 40 * edges.size] = np.repeat(edges, 40)
    rng.shuffle(x.reshape(-1))
    weight = np.array(slopes, dtype)
    y = F.prelu(autograd.tensor(x), autograd.tensor(weight)).numpy()
    a = weight.reshape((1, -1, 1, 1)) if weight.size > 1 else weight.reshape(())
    with np.errstate(all="ignore"):
        assert _bits(y) == _bits(np.where(x > 0, x, x * a))


def test_prelu_module_and_in_place_write_refusal():
    layer = nn.PReLU(3)
    x = autograd.randn(2, 3, 5, requires_grad=True)
    y = layer(x)
    assert y.grad_fn.name() == "PreluKernelBackward0"
    y.sum().backward()
    expected = np.where(x.detach().numpy() > 0, 0, x.detach().numpy()).sum((0, 2))
    np.testing.assert_allclose(layer.weight.grad.numpy(), expected, rtol=1e-5, atol=1e-6)
    z = x.detach().clone().requires_grad_()
    h = z * 1
    out = F.prelu(h, autograd.tensor([0.1], requires_grad=True))
    h.mul_(2)  # (the node saved h: the backward refuses, as PyTorch's)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_prelu_double_backward_matches_finite_differences():
    x = autograd.tensor([[-1.5, 0.5, 2.0], [0.7, -0.3, -2.0]], dtype=autograd.float64, requires_grad=True)
    w = autograd.tensor([0.2, -0.4, 0.6], dtype=autograd.float64, requires_grad=True)
    assert autograd.gradcheck(lambda x, w: F.prelu(x, w) * x.sin(), (x, w))
    assert autograd.gradgradcheck(lambda x, w: F.prelu(x, w) * x.sin(), (x, w))


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "slopes"), SHAPES)
def test_values_and_input_gradients_are_pytorchs_bit_for_bit(torch, shape, slopes, dtype):
    x, weight, g = _arrays(shape, slopes, dtype, seed=1)
    _, y, dx, dw = _ours(F.prelu, x, weight, g)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True)
    yt = torch.nn.functional.prelu(xt, wt)
    yt.backward(torch.tensor(g))
    assert _bits(y) == _bits(yt.detach().numpy()) and _bits(dx) == _bits(xt.grad.numpy())
    # dL/da: the composite's sum (NumPy's pairwise order), a rounding or so from PyTorch's
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)

def test_edge_values_and_gradients_are_pytorchs_bit_for_bit(torch):
    x = EDGES.astype(np.float32)
    g = np.array([-0.0, 1, 2, -0.0, 1, 1, 1, 0.0, 1, -1e-38], np.float32)
    for slope in (0.25, -0.5, 0.0, np.inf):
        weight = np.array([slope], np.float32)
        _, *ours = _ours(F.prelu, x, weight, g)
        xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True)
        yt = torch.nn.functional.prelu(xt, wt)
        yt.backward(torch.tensor(g))
        for new, theirs in zip(ours, (yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()), strict=True):
            assert _bits(new) == _bits(theirs)

def test_node_and_saved_tensors_are_pytorchs(torch):
    x, weight, _ = _arrays((2, 3, 4), 3, np.float32)
    y = F.prelu(autograd.tensor(x, requires_grad=True), autograd.tensor(weight, requires_grad=True))
    yt = torch.nn.functional.prelu(torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True))
    assert y.grad_fn.name() == yt.grad_fn.name()
    assert tuple(y.grad_fn._saved_weight.shape) == tuple(yt.grad_fn._saved_weight.shape)
    assert _bits(y.grad_fn._saved_self.detach().numpy()) == _bits(yt.grad_fn._saved_self.detach().numpy())

@pytest.mark.parametrize(("shape", "slopes"), [((5, 3), 1), ((2, 4, 6), 4), ((3, 2, 3, 3), 2)])
def test_double_backward_is_pytorchs(torch, shape, slopes):
    x, weight, g = _arrays(shape, slopes, np.float64, seed=2)
    x[x == 0] = -0.5  # (at x = 0 PyTorch's double backward selects by x >= 0, its backward by x > 0: Prelu's docstring)
    u = np.random.default_rng(3).standard_normal(shape)
    results = []
    for lib in (autograd, torch):
        xt, wt = lib.tensor(x, requires_grad=True), lib.tensor(weight, requires_grad=True)
        gt = lib.tensor(g, requires_grad=True)
        functional = F if lib is autograd else torch.nn.functional
        gx, gw = lib.autograd.grad(functional.prelu(xt, wt), (xt, wt), gt, create_graph=True)
        second = lib.autograd.grad((gx * lib.tensor(u)).sum() + (gw * gw).sum(), (xt, wt, gt))
        results.append([gx.detach().numpy(), gw.detach().numpy()] + [s.numpy() for s in second])
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


MISH_EDGES = np.array([0, -0.0, 1, -1, 20, -20, 88, -88, 100, -100, 1e-30, -1e-30, np.inf, -np.inf, np.nan, 3e-39])


def _mish_composite(input):
    """The rule F.mish computed before this session: three nodes, float16 computed in float32 and rounded once."""
    half = input.dtype == autograd.float16
    wide = input.float() if half else input
    y = wide * wide.softplus().tanh()
    return y.half() if half else y


def _mish_arrays(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x, g = (rng.standard_normal(shape) * 4).astype(dtype), rng.standard_normal(shape).astype(dtype)
    if x.size > 2 * MISH_EDGES.size:
        x.flat[:MISH_EDGES.size] = MISH_EDGES
        g.flat[MISH_EDGES.size:MISH_EDGES.size + 3] = [np.nan, np.inf, -0.0]
    return x, g


def _mish_values(function, x, g, create_graph=False):
    xt = autograd.tensor(x, requires_grad=True)
    y = function(xt)
    grad, = autograd.grad(y, xt, autograd.tensor(g), create_graph=create_graph)
    return y, y.detach().numpy(), grad.detach().numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(), (5,), (3, 4, 5), (16, 64, 64)])
def test_mish_values_and_gradients_are_the_composites_bit_for_bit(shape, dtype):
    x, g = _mish_arrays(shape, dtype)
    y, *ours = _mish_values(F.mish, x, g)
    assert y.grad_fn.name() == "MishBackward0" and isinstance(y.grad_fn, Mish) and y.dtype == autograd.tensor(x).dtype
    _, *before = _mish_values(_mish_composite, x, g)
    for new, old in zip(ours, before, strict=True):
        assert _bits(new) == _bits(old)
    _, _, recorded = _mish_values(F.mish, x, g, create_graph=True)  # (the composite's ops, recorded)
    assert _bits(recorded) == _bits(before[1])


def test_mish_under_saved_tensor_hooks_computes_its_tanh_again():
    x, g = _mish_arrays((4, 50), np.float32)
    _, *plain = _mish_values(F.mish, x, g)
    with autograd.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        y = F.mish(autograd.tensor(x, requires_grad=True))
        assert y.grad_fn.tanh_softplus is None  # (not kept: the hooks decide where saved values live)
        _, *hooked = _mish_values(F.mish, x, g)
    assert all(_bits(a) == _bits(b) for a, b in zip(plain, hooked, strict=True))


def test_mish_in_place_writes_the_input_and_keeps_the_gradient():
    x, g = _mish_arrays((3, 7), np.float32)
    leaf = autograd.tensor(x, requires_grad=True)
    h = leaf * 1
    assert F.mish(h, inplace=True) is h and h.grad_fn is not None
    h.backward(autograd.tensor(g))
    _, y, dx = _mish_values(_mish_composite, x, g)
    assert _bits(h.detach().numpy()) == _bits(y) and _bits(leaf.grad.numpy()) == _bits(dx)
    with pytest.raises(RuntimeError, match="mish_cpu"):
        F.mish(autograd.tensor([1, 2]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mish_is_pytorchs_to_a_rounding(torch, dtype):
    x, g = _mish_arrays((16, 64, 64), dtype, seed=4)
    _, y, dx = _mish_values(F.mish, x, g)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.mish(xt)
    yt.backward(torch.tensor(g))
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tolerance * 10, atol=tolerance)
    assert F.mish(autograd.tensor(x, requires_grad=True)).grad_fn.name() == yt.grad_fn.name()
