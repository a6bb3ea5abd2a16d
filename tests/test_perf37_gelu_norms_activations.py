"""SiLU's and Hardswish's backward, ELU's (elu, selu, celu) and softplus's forward and backward write their steps over
arrays they made (session 37), where each step made a new one: the same values bit for bit and the same layout as
the previous rule (written out here in NumPy, as it was), over large random
inputs with NaN, ±inf, ±0 and subnormals, in float16, float32 and float64, for x and dL/dy row-major, transposed or
broadcast, at 0-d and below the size where ``select`` works on bits; ``select(..., over_x=True)`` is ``where``'s
result written over x; and PyTorch's gradients where it is installed."""

import numpy as np
import pytest

import autograd
import nn.functional as F
from autograd.backend import select
from autograd.ops.activations import Elu, EluGrad, ScaledSoftplus, ScaledSoftplusGrad, SiluGrad
from autograd.ops.hardswish import HardswishGrad


def _previous_silu_grad(g, x):
    """SiluGrad's forward before: g σ (1 + x (1 - σ)), each step a new array, float16 in float32."""
    wide = x.astype(np.float32) if x.dtype == np.float16 else x
    one = wide.dtype.type(1)
    sigmoid = np.exp(-wide)
    sigmoid += one
    sigmoid = one / sigmoid
    factor = one - sigmoid
    factor *= wide
    factor += one
    slope = (g.astype(np.float32) if g.dtype == np.float16 else g) * sigmoid
    slope *= factor
    return slope.astype(g.dtype, copy=False)


def _previous_hardswish_grad(g, x):
    """HardswishGrad's forward before: g · slope(x) by where (0 wherever the slope is 0, whatever g is)."""
    wide = x.astype(np.float32) if x.dtype == np.float16 else x
    wide_g = g.astype(np.float32) if g.dtype == np.float16 else g
    inner = wide / wide.dtype.type(3)
    inner += wide.dtype.type(0.5)
    slope = np.where(wide <= -3, wide.dtype.type(0), np.where(wide < 3, inner, wide.dtype.type(1)))
    product = wide_g * slope
    if not np.isfinite(product).all():
        product = np.where(slope == 0, wide.dtype.type(0), product)
    return product.astype(g.dtype, copy=False)


def _wide(array):
    return array.astype(np.float32) if array.dtype == np.float16 else array


def _previous_elu(x, alpha, scale, input_scale):
    """Elu's forward before: the choice of the curve or the line a new array."""
    wide = _wide(x)
    number = wide.dtype.type
    curve = np.expm1(wide * number(input_scale) if input_scale != 1 else wide)
    curve *= number(alpha) * number(scale)
    straight = wide * number(scale) if scale != 1 else wide
    return select(wide < 0, curve, straight).astype(x.dtype, copy=False)


def _previous_elu_grad(g, x, alpha, scale, input_scale):
    wide, wide_g = _wide(x), _wide(g)
    number = wide.dtype.type
    coefficient = number(alpha) * number(scale)
    if input_scale != 1:
        slope = wide_g * number(input_scale)
        slope *= coefficient
    else:
        slope = wide_g * coefficient
    slope *= np.exp(wide * number(input_scale) if input_scale != 1 else wide)
    straight = wide_g * number(scale) if scale != 1 else wide_g
    return select(wide <= 0, slope, straight).astype(g.dtype, copy=False)


def _previous_softplus(x, beta, threshold):
    wide = _wide(x)
    number = wide.dtype.type
    scaled = wide * number(beta) if beta != 1 else wide
    smooth = np.log1p(np.exp(-np.abs(scaled)))
    smooth += np.maximum(scaled, 0)
    if beta != 1:
        smooth /= number(beta)
    return select(scaled > number(threshold), wide, smooth).astype(x.dtype, copy=False)


def _previous_softplus_grad(g, x, beta, threshold):
    wide, wide_g = _wide(x), _wide(g)
    number = wide.dtype.type
    scaled = wide * number(beta) if beta != 1 else wide
    exponential = np.exp(scaled)
    slope = wide_g * exponential
    exponential += 1
    slope /= exponential
    return select(scaled > number(threshold), wide_g, slope).astype(g.dtype, copy=False)


ELU = dict(alpha=1.0, scale=1.0, input_scale=1.0)
SELU = dict(alpha=1.6732632423543772, scale=1.0507009873554805, input_scale=1.0)
CELU = dict(alpha=0.5, scale=1.0, input_scale=2.0)
SOFTPLUS = [dict(beta=1.0, threshold=20.0), dict(beta=2.0, threshold=3.0)]
UNARY = [(Elu, p, _previous_elu) for p in (ELU, SELU, CELU)] + [(ScaledSoftplus, p, _previous_softplus)
                                                                  for p in SOFTPLUS]
BINARY = [(EluGrad, p, _previous_elu_grad) for p in (ELU, SELU, CELU)] + [(ScaledSoftplusGrad, p,
                                                                           _previous_softplus_grad) for p in SOFTPLUS]


def _node(node, parameters):
    made = node.__new__(node)
    for name, value in parameters.items():
        setattr(made, name, value)
    return made


def _values(shape, dtype, rng):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    flat = x.reshape(-1)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.0, -3.0, 1e-40, -1e-40, 90.0, -90.0], np.float64)
    flat[rng.choice(flat.size, min(flat.size, 5 * len(specials)), replace=False)] = np.resize(specials, min(
        flat.size, 5 * len(specials))).astype(dtype)
    return x


def _laid_out(array, layout):
    if layout == "transposed":
        return np.ascontiguousarray(array.swapaxes(0, -1)).swapaxes(0, -1)
    if layout == "broadcast":
        return np.broadcast_to(array.reshape(-1)[:1].reshape((1,) * array.ndim), array.shape)
    return array


def _same(a, b):
    """The same bits (NaN's sign and payload included) and shape."""
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


SHAPES = [(), (7, 3), (64, 33, 9), (16, 64, 512)]  # (64·33·9 = 19,008: above select's 8,192; 21 below it)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (the reference's overflow and inf · 0)
@pytest.mark.parametrize("node, previous", [(SiluGrad, _previous_silu_grad), (HardswishGrad, _previous_hardswish_grad)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x_layout, g_layout", [("contiguous", "contiguous"), ("transposed", "contiguous"),
                                                ("contiguous", "transposed"), ("contiguous", "broadcast")])
def test_backward_kernels_equal_the_previous_rule(node, previous, dtype, shape, x_layout, g_layout):
    if not shape and (x_layout, g_layout) != ("contiguous", "contiguous"):
        pytest.skip("a 0-d array has one layout")
    rng = np.random.default_rng(len(shape) + 10 * np.dtype(dtype).itemsize)
    x = _laid_out(_values(shape, dtype, rng), x_layout)
    g = _laid_out(_values(shape, dtype, rng), g_layout)
    ours, expected = np.asarray(node.forward(node.__new__(node), g, x)), np.asarray(previous(g, x))
    _same(ours, expected)
    assert ours.strides == expected.strides  # (the layout too: a sum over the gradient reads it in that order)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("node, parameters, previous", UNARY + BINARY)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x_layout, g_layout", [("contiguous", "contiguous"), ("transposed", "contiguous"),
                                                ("contiguous", "transposed"), ("contiguous", "broadcast")])
def test_elu_and_softplus_kernels_equal_the_previous_rule(node, parameters, previous, dtype, shape, x_layout,
                                                          g_layout):
    binary = (node, parameters, previous) in BINARY
    if (not shape or not binary) and g_layout != "contiguous" or not shape and x_layout != "contiguous":
        pytest.skip("one layout only")
    rng = np.random.default_rng(len(shape) + np.dtype(dtype).itemsize)
    x = _laid_out(_values(shape, dtype, rng), x_layout)
    g = _laid_out(_values(shape, dtype, rng), g_layout)
    made = _node(node, parameters)
    ours = np.asarray(made.forward(g, x) if binary else made.forward(x))
    expected = np.asarray(previous(g, x, **parameters) if binary else previous(x, **parameters))
    _same(ours, expected)
    assert ours.strides == expected.strides


@pytest.mark.parametrize("name", ["silu", "hardswish"])
def test_the_gradient_flows_through_the_functions_as_before(name):
    """Through the public functions: x's gradient equals the previous rule's, and neither x nor dL/dy is written.
    (The function is looked up by name when the test runs: a test before may have loaded nn.functional anew.)"""
    function = getattr(F, name)
    rng = np.random.default_rng(3)
    x = _values((32, 48, 16), np.float32, rng)
    g = rng.standard_normal(x.shape).astype(np.float32)
    leaf = autograd.tensor(x, requires_grad=True)
    given = autograd.tensor(g)
    function(leaf).backward(given)
    previous = _previous_silu_grad if name == "silu" else _previous_hardswish_grad
    with np.errstate(all="ignore"):
        _same(leaf.grad.numpy(), previous(g, x))
    _same(given.numpy(), g)
    _same(leaf.detach().numpy(), x)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("size", [100, 8192, 20000])
def test_select_over_x_is_where_written_over_x(dtype, size):
    rng = np.random.default_rng(size)
    x = _values((size,), dtype, rng)
    y = _values((size,), dtype, rng)
    condition = rng.random(size) < 0.5
    expected = np.where(condition, x, y)
    written = x.copy()
    result = select(condition, written, y, over_x=True)
    _same(result, expected)
    if size >= 8192:  # (on bits: over x's memory; below, where's new array)
        assert np.shares_memory(result, written)
    _same(select(condition, x.copy(), y), expected)  # (and without over_x, as before)


def test_select_over_x_leaves_a_transposed_or_broadcast_x_alone():
    rng = np.random.default_rng(5)
    x = _values((96, 128), np.float32, rng).T  # (not row-major: the result is a new array, row-major)
    y = _values((128, 96), np.float32, rng)
    condition = rng.random((128, 96)) < 0.5
    before = x.copy()
    result = select(condition, x, y, over_x=True)
    _same(result, np.where(condition, x, y))
    assert result.flags.c_contiguous and not np.shares_memory(result, x)
    _same(x, before)
    zero = np.zeros((), np.float32)
    _same(select(condition, zero, y, over_x=True), np.where(condition, zero, y))


@pytest.mark.parametrize("function", ["silu", "hardswish"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_agree_with_pytorchs(function, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((16, 64, 64)) * 4).astype(dtype)
    x.reshape(-1)[:6] = [0.0, -0.0, 3.0, -3.0, 60.0, -60.0]
    g = rng.standard_normal(x.shape).astype(dtype)
    results = []
    for lib in (autograd, torch):
        leaf = lib.tensor(x, requires_grad=True)
        getattr(lib.nn.functional if lib is torch else F, function)(leaf).backward(lib.tensor(g))
        results.append(leaf.grad.numpy())
    # (σ (1 + x (1 - σ)) crosses 0 near x = -1.28, where its rounding is relative to the terms it cancels)
    np.testing.assert_allclose(results[0], results[1], rtol=4 * np.finfo(dtype).eps,
                               atol=8 * np.finfo(dtype).eps * np.abs(results[1]).max())
