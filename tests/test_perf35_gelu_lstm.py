"""GELU's float32 kernels evaluated in cache-sized blocks (session 35) give the values of the whole-array evaluation
they replace, bit for bit: erf's one float64 polynomial (S(y) = ln(erfc(y))/y by Horner's rule, expm1, x's sign),
Φ = (1 + erf(x/√2))/2 and x Φ rounded as before, and the backward g (Φ + x φ) in PyTorch's order of operations;
across block edges, in every layout, at NaN, ±inf and -0.0; float16 at every one of its values, float64 as before."""

import numpy
import pytest

import autograd
import nn
import nn.functional as F
from autograd.autograd.graph import saved_tensors_hooks
from autograd.ops.error_function import _BLOCK, _LOG_ERFC_OVER_Y, erf, erf_float32, normal_cdf_float32


def _erf_whole_array(x):
    """The previous erf_float32: the same float64 operations over the whole array at once, its sign by a float64
    copysign, then rounded to float32."""
    wide = x.astype(numpy.float64)
    y = numpy.minimum(numpy.abs(wide), 4.0)
    u = y * 0.5 - 1
    s = u * _LOG_ERFC_OVER_Y[-1]
    for coefficient in _LOG_ERFC_OVER_Y[-2:0:-1]:
        s = (s + coefficient) * u
    s = (s + _LOG_ERFC_OVER_Y[0]) * y
    return numpy.copysign(numpy.expm1(s), wide).astype(numpy.float32)


@numpy.errstate(invalid="ignore")  # (±inf · 0 at ±inf)
def _gelu_whole_array(x):
    """x Φ(x) and Φ(x) in float32 as the previous kernel rounded them."""
    cdf = _erf_whole_array(x * numpy.float32(0.5**0.5))
    cdf = (cdf + numpy.float32(1)) * numpy.float32(0.5)
    return cdf * x, cdf


def _gelu_grad_whole_array(g, x, cdf):
    density = numpy.exp(x * x * numpy.float32(-0.5)) * numpy.float32(1 / (2 * numpy.pi) ** 0.5) * x
    return (density + cdf) * g


def _values(size, seed=0):
    """Normal values at three scales, with NaN, ±inf, ±0, subnormals and the polynomial's edge 4 among them."""
    rng = numpy.random.default_rng(seed)
    x = (rng.standard_normal(size) * rng.choice([0.01, 1.0, 4.0], size)).astype(numpy.float32)
    special = numpy.array([numpy.nan, numpy.inf, -numpy.inf, 0.0, -0.0, 1e-45, -1e-45, 4 * 2**0.5, -40.0, 7.0],
                          numpy.float32)
    positions = rng.choice(size, min(size, len(special)), replace=False)
    x[positions] = special[:len(positions)]
    return x


def _same(a, b):
    """Equal bit for bit (NaN's sign included), and of one shape."""
    assert a.shape == b.shape and a.dtype == b.dtype
    numpy.testing.assert_array_equal(a.view(numpy.uint32 if a.dtype == numpy.float32 else numpy.uint16),
                                     b.view(numpy.uint32 if b.dtype == numpy.float32 else numpy.uint16))


@pytest.mark.parametrize("size", [1, 7, _BLOCK - 1, _BLOCK, _BLOCK + 1, 3 * _BLOCK + 5])
def test_erf_and_cdf_across_block_edges_equal_the_whole_array(size):
    x = _values(size, seed=size)
    _same(erf_float32(x), _erf_whole_array(x))
    _same(normal_cdf_float32(x), _gelu_whole_array(x)[1])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # (the reference's ±inf · 0 at ±inf)
@pytest.mark.parametrize("size", [1, _BLOCK - 1, _BLOCK + 1, 2 * _BLOCK + 3])
def test_gelu_forward_and_backward_across_block_edges(size):
    x = _values(size, seed=size + 1)
    g = numpy.random.default_rng(size).standard_normal(size).astype(numpy.float32)
    t = autograd.tensor(x, requires_grad=True)
    y = F.gelu(t)
    expected, cdf = _gelu_whole_array(x)
    _same(y.numpy(), expected)
    y.backward(autograd.tensor(g))
    _same(t.grad.numpy(), _gelu_grad_whole_array(g, x, cdf))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("layout", ["transposed", "permuted", "strided", "channels_last"])
def test_gelu_layouts_equal_the_contiguous_values_and_keep_their_strides(layout):
    base = _values(4 * 40 * 150, seed=9).reshape(4, 40, 150)
    x = {"transposed": base.transpose(2, 1, 0), "permuted": base.transpose(1, 2, 0),
         "strided": base[:, ::2, ::3], "channels_last": base.reshape(4, 40, 15, 10).transpose(0, 3, 1, 2)}[layout]
    g = numpy.random.default_rng(2).standard_normal(x.shape).astype(numpy.float32)
    t = autograd.tensor(x, requires_grad=True)
    y = F.gelu(t)
    expected, cdf = _gelu_whole_array(numpy.ascontiguousarray(x))
    _same(numpy.ascontiguousarray(y.numpy()), expected)
    if layout != "strided":  # (a dense input's result is laid out as it, as PyTorch's unary kernels)
        assert y.stride() == t.stride()
    y.backward(autograd.tensor(g))  # (g row-major, x in another layout: g read in x's order)
    _same(numpy.ascontiguousarray(t.grad.numpy()), _gelu_grad_whole_array(g, numpy.ascontiguousarray(x), cdf))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_gelu_backward_with_a_gradient_of_another_layout():
    x = _values(300 * 200, seed=4).reshape(300, 200)
    g = numpy.random.default_rng(5).standard_normal((200, 300)).astype(numpy.float32).T  # (x's shape, column-major)
    t = autograd.tensor(x, requires_grad=True)
    F.gelu(t).backward(autograd.tensor(g))
    _same(t.grad.numpy(), _gelu_grad_whole_array(g, x, _gelu_whole_array(x)[1]))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_gelu_module_under_saved_tensor_hooks_computes_phi_again():
    x = _values(_BLOCK + 9, seed=6)
    t = autograd.tensor(x, requires_grad=True)
    with saved_tensors_hooks(lambda a: a, lambda a: a):
        y = nn.GELU()(t)
    y.sum().backward()
    expected, cdf = _gelu_whole_array(x)
    _same(y.numpy(), expected)
    _same(t.grad.numpy(), _gelu_grad_whole_array(numpy.ones_like(x), x, cdf))


def test_gelu_of_empty_and_zero_dimensional_tensors():
    assert F.gelu(autograd.zeros(0, 3)).shape == (0, 3)
    x = numpy.float32(-1.25) * numpy.ones((), numpy.float32)
    t = autograd.tensor(x, requires_grad=True)
    y = F.gelu(t)
    assert y.shape == ()
    _same(y.numpy(), _gelu_whole_array(x.reshape(1))[0].reshape(()))


def test_gelu_float16_at_every_value_is_the_float32_kernel_rounded_once():
    every = numpy.arange(2**16, dtype=numpy.uint32).astype(numpy.uint16).view(numpy.float16)
    every = every[numpy.isfinite(every)]
    t = autograd.tensor(every, requires_grad=True)
    y = F.gelu(t)
    wide = every.astype(numpy.float32)
    expected, cdf = _gelu_whole_array(wide)
    _same(y.numpy(), expected.astype(numpy.float16))
    y.sum().backward()
    _same(t.grad.numpy(), _gelu_grad_whole_array(numpy.ones_like(wide), wide, cdf).astype(numpy.float16))


def test_gelu_float64_is_codys_erf_as_before():
    x = numpy.random.default_rng(7).standard_normal(3 * _BLOCK + 1) * 3
    t = autograd.tensor(x, requires_grad=True)
    y = F.gelu(t)
    cdf = (1 + erf(x * 0.5**0.5)) * 0.5
    numpy.testing.assert_array_equal(y.numpy(), cdf * x)
    y.sum().backward()
    numpy.testing.assert_array_equal(t.grad.numpy(), numpy.exp(x * x * -0.5) * (1 / (2 * numpy.pi) ** 0.5) * x + cdf)


def test_gelu_blocks_match_pytorch():
    torch = pytest.importorskip("torch")
    x = (numpy.random.default_rng(8).standard_normal((3, _BLOCK + 11)) * 2).astype(numpy.float32)
    t, tt = autograd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = F.gelu(t), torch.nn.functional.gelu(tt)
    numpy.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6, atol=2e-6)  # (PyTorch's erf: 1.5e-7)
    y.sum().backward()
    ty.sum().backward()
    numpy.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-6, atol=1e-6)
