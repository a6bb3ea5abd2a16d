"""The kernels made faster in session 34 give the values they gave before: dropout's masks (the same draws of
PyTorch's stream, compared on the uniforms' integers), rand's float64 uniforms (without the long double pass), and
PyTorch's where it is installed."""

import numpy
import pytest

import autograd
import nn.functional as F
from autograd import random
from autograd.mersenne import TorchStream

SHAPES = [(7,), (3, 5, 2), (16, 64, 512)]  # (the last past any size threshold)


def _twin_streams(seed):
    return TorchStream(seed), TorchStream(seed)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("probability", [0.0, 2.0**-53, 0.1, 0.5, 0.9, 1 - 2.0**-53, 1.0, 0.3333333333333333])
def test_bernoulli_is_the_uniform_below_p(shape, probability):
    fast, slow = _twin_streams(1234)
    # the rule it replaced: a float64 uniform k · 2^-53 below p
    units = (slow.words64(int(numpy.prod(shape))) & numpy.uint64(2**53 - 1)).astype(numpy.float64) * 2.0**-53
    expected = (units < probability).reshape(shape)
    drawn = fast.bernoulli(shape, probability)
    assert drawn.dtype == bool and drawn.shape == shape
    numpy.testing.assert_array_equal(drawn, expected)
    assert fast.position() == slow.position()  # (the same words drawn: the stream goes on alike)


def test_bernoulli_at_the_integer_boundary():
    """u < p compared exactly where u equals p: k = p · 2^53 is not below, k - 1 is."""
    stream = TorchStream(0)
    words = stream.words64(4096) & numpy.uint64(2**53 - 1)
    k = int(words[0])
    stream = TorchStream(0)
    probability = k * 2.0**-53  # (exact: k < 2^53)
    drawn = stream.bernoulli((4096,), probability)
    assert not drawn[0]
    numpy.testing.assert_array_equal(drawn, words.astype(numpy.float64) * 2.0**-53 < probability)


@pytest.mark.parametrize("dtype", [numpy.float16, numpy.float32, numpy.float64])
def test_rand_is_the_units_unchanged(dtype):
    fast, slow = _twin_streams(99)
    count = 70000
    units = slow.units(count, dtype)
    expected = (units.astype(numpy.float64) * 1.0 + 0.0).astype(dtype)  # (the fused x · 1 + 0 it skipped)
    drawn = fast.random((count,), dtype=dtype)
    assert drawn.dtype == dtype
    numpy.testing.assert_array_equal(drawn.view(numpy.uint8), expected.view(numpy.uint8))
    assert (drawn >= 0).all() and (drawn <= 1).all()  # (float16 rounds the top uniforms up to 1, as PyTorch)


def _expected_dropout(x, p, seed, keep_like=None):
    """x · (keep / (1 - p)) in x's dtype, keep drawn as u < 1 - p from the seeded stream (row-major)."""
    stream = TorchStream(seed)
    shape = x.shape
    units = (stream.words64(x.size) & numpy.uint64(2**53 - 1)).astype(numpy.float64) * 2.0**-53
    keep = (units < 1 - p).reshape(shape)
    mask = keep.astype(x.dtype) / x.dtype.type(1 - p)
    return x * mask, keep


@pytest.mark.parametrize("dtype", [numpy.float16, numpy.float32, numpy.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.75])
def test_dropout_values_with_nan_inf_and_signed_zero(dtype, p):
    rng = numpy.random.default_rng(5)
    x = rng.standard_normal((16, 64, 512)).astype(dtype)
    x.reshape(-1)[:8] = [numpy.nan, numpy.inf, -numpy.inf, -0.0, 0.0, -1.0, 65504.0 if dtype == numpy.float16 else 1e30,
                         numpy.nan]
    expected, keep = _expected_dropout(x, p, 42)
    autograd.manual_seed(42)
    y = F.dropout(autograd.tensor(x), p)
    assert y.dtype == autograd.tensor(x).dtype
    numpy.testing.assert_array_equal(y.numpy().view(numpy.uint8), expected.view(numpy.uint8))


def test_dropout_backward_is_the_mask():
    x = numpy.random.default_rng(1).standard_normal((64, 300)).astype(numpy.float32)
    expected, keep = _expected_dropout(x, 0.2, 7)
    autograd.manual_seed(7)
    t = autograd.tensor(x, requires_grad=True)
    F.dropout(t, 0.2).sum().backward()
    numpy.testing.assert_array_equal(t.grad.numpy(), keep.astype(numpy.float32) / numpy.float32(0.8))


def test_dropout_of_a_transpose_draws_in_its_memory_order():
    """A transposed input's mask is drawn down its columns (PyTorch's empty_like keeps the layout)."""
    x = numpy.random.default_rng(2).standard_normal((300, 200)).astype(numpy.float32)
    expected_t, _ = _expected_dropout(numpy.ascontiguousarray(x), 0.3, 11)  # draws in x's memory order
    autograd.manual_seed(11)
    y = F.dropout(autograd.tensor(x).t(), 0.3)
    numpy.testing.assert_array_equal(y.numpy(), expected_t.T)


def test_native_dropout_and_bernoulli_of_a_number():
    x = numpy.random.default_rng(3).standard_normal((40, 50))
    expected, keep = _expected_dropout(x, 0.4, 3)
    autograd.manual_seed(3)
    y, mask = autograd.native_dropout(autograd.tensor(x), 0.4, True)
    numpy.testing.assert_array_equal(mask.numpy(), keep)
    numpy.testing.assert_array_equal(y.numpy(), expected)
    stream = TorchStream(8)
    units = (stream.words64(2000) & numpy.uint64(2**53 - 1)).astype(numpy.float64) * 2.0**-53
    autograd.manual_seed(8)
    drawn = autograd.bernoulli(autograd.zeros(2000, dtype=autograd.float64), 0.3)
    numpy.testing.assert_array_equal(drawn.numpy(), (units < 0.3).astype(numpy.float64))
    assert random.generator() is not None


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dropout_and_rand_match_pytorch(dtype):
    torch = pytest.importorskip("torch")
    x = numpy.random.default_rng(4).standard_normal((16, 64, 512)).astype(dtype)
    torch.manual_seed(21)
    autograd.manual_seed(21)
    expected = torch.nn.functional.dropout(torch.tensor(x), 0.1)
    ours = F.dropout(autograd.tensor(x), 0.1)
    numpy.testing.assert_array_equal(ours.numpy(), expected.numpy())
    numpy.testing.assert_array_equal(autograd.rand(1000, dtype=getattr(autograd, dtype)).numpy(),
                                     torch.rand(1000, dtype=getattr(torch, dtype)).numpy())


# -- GELU's float32 erf -------------------------------------------------------------------------------------------

from autograd.ops.error_function import erf, erf_float32  # noqa: E402


def _ulps(a, b):
    """Units in the last place between two float32 arrays of the same sign."""
    return numpy.abs(a.view(numpy.int32).astype(numpy.int64) - b.view(numpy.int32).astype(numpy.int64))


def _dense_float32():
    """Every 37th float32 in [0, 6] (29 million values: every binade, the tiny and subnormal ones included), their
    negatives, and the edges."""
    top = int(numpy.array([6.0], numpy.float32).view(numpy.uint32)[0])
    positive = numpy.arange(0, top + 1, 37, dtype=numpy.uint32).view(numpy.float32)
    edges = numpy.array([0.46875, 0.5, 1, 2, 3.9189999, 3.92, 4, 4.0000005, 6, 7, 1e30, 1e-45, 1.17549435e-38],
                        numpy.float32)
    return numpy.concatenate([positive, -positive, edges, -edges])


def test_erf_float32_within_one_ulp_of_the_correctly_rounded_erf():
    x = _dense_float32()
    ours = erf_float32(x)
    assert ours.dtype == numpy.float32
    exact = erf(x.astype(numpy.float64)).astype(numpy.float32)  # (Cody's, good to a unit or two of float64)
    assert _ulps(ours, exact).max() <= 1
    assert (ours == exact).mean() > 0.99  # (most are the correctly rounded value itself)
    numpy.testing.assert_array_equal(ours[numpy.abs(x) >= 4], numpy.sign(x[numpy.abs(x) >= 4]))


def test_erf_float32_against_scipy():
    special = pytest.importorskip("scipy.special")
    x = numpy.linspace(-6, 6, 2_000_001, dtype=numpy.float32)
    assert _ulps(erf_float32(x), special.erf(x.astype(numpy.float64)).astype(numpy.float32)).max() <= 1


def test_erf_float32_special_values_and_layouts():
    x = numpy.array([numpy.nan, numpy.inf, -numpy.inf, 0.0, -0.0, 1e-45, -1e-45], numpy.float32)
    y = erf_float32(x)
    assert numpy.isnan(y[0])
    numpy.testing.assert_array_equal(y[1:], numpy.array([1, -1, 0, -0.0, 1e-45, -1e-45], numpy.float32))
    assert not numpy.signbit(y[3]) and numpy.signbit(y[4])
    grid = numpy.random.default_rng(0).standard_normal((300, 200)).astype(numpy.float32)
    numpy.testing.assert_array_equal(erf_float32(grid.T), erf_float32(numpy.ascontiguousarray(grid.T)))
    numpy.testing.assert_array_equal(erf_float32(grid[::2, ::3]), erf_float32(grid[::2, ::3].copy()))
    assert erf_float32(numpy.float32(0.5) * numpy.ones((), numpy.float32)).shape == ()


def _gelu_by_formula(x):
    """x (1 + erf(x/√2)) / 2 as the kernel rounds it, in float32: erf by erf_float32."""
    cdf = erf_float32(x * numpy.float32(0.5**0.5))
    cdf += 1
    cdf *= 0.5
    return cdf * x, cdf


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # (the reference formulas' ±inf · 0 at ±inf)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
def test_gelu_float32_forward_and_backward(layout):
    rng = numpy.random.default_rng(3)
    x = (rng.standard_normal((128, 600)) * 3).astype(numpy.float32)
    x.reshape(-1)[:6] = [numpy.nan, numpy.inf, -numpy.inf, -0.0, 0.0, -40.0]
    x = {"contiguous": x, "transposed": x.T, "strided": x[::2, ::3]}[layout]
    g = rng.standard_normal(x.shape).astype(numpy.float32)
    expected, cdf = _gelu_by_formula(x)
    t = autograd.tensor(x, requires_grad=True)
    y = F.gelu(t)
    numpy.testing.assert_array_equal(y.numpy(), expected)
    y.backward(autograd.tensor(g))
    wide = x.astype(numpy.float32)
    density = numpy.exp(wide * wide * numpy.float32(-0.5)) * numpy.float32(1 / (2 * numpy.pi) ** 0.5) * wide
    numpy.testing.assert_array_equal(t.grad.numpy(), (cdf + density) * g)
    # the previous rule (erf in float64, rounded to float32) differs by erf's one unit at most, scaled by x / 2
    # (near -1 a unit of erf is 2^-24, and the cancellation of 1 + erf is both rules' alike), and the product's unit
    scaled = x * numpy.float32(0.5**0.5)
    before = ((erf(scaled.astype(numpy.float64)).astype(numpy.float32) + 1) * numpy.float32(0.5)) * x
    finite = numpy.isfinite(x)
    bound = numpy.abs(x) * 2.0**-25 + numpy.spacing(numpy.abs(before))
    assert (numpy.abs(expected - before)[finite] <= bound[finite]).all()
    assert (expected == before).mean() > 0.9


def test_gelu_float16_and_float64_unchanged_rule():
    x = numpy.random.default_rng(4).standard_normal(50_000)
    exact = x * (1 + erf(x * 0.5**0.5)) / 2
    numpy.testing.assert_array_equal(F.gelu(autograd.tensor(x)).numpy(), exact)  # (float64: Cody's erf)
    half = x.astype(numpy.float16)
    numpy.testing.assert_array_equal(F.gelu(autograd.tensor(half)).numpy(),
                                     _gelu_by_formula(half.astype(numpy.float32))[0].astype(numpy.float16))


def test_gelu_matches_pytorch():
    torch = pytest.importorskip("torch")
    x = (numpy.random.default_rng(5).standard_normal((16, 64, 512)) * 2).astype(numpy.float32)
    t, tt = autograd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = F.gelu(t), torch.nn.functional.gelu(tt)
    # PyTorch's vectorised erf (Abramowitz and Stegun's 7.1.26) is off by up to 1.5e-7: its GELU by up to 1e-6
    numpy.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6, atol=2e-6)
    exact = x * (1 + erf(x.astype(numpy.float64) * 0.5**0.5)) / 2
    assert numpy.abs(y.numpy() - exact).max() < numpy.abs(ty.detach().numpy() - exact).max()
    y.sum().backward()
    ty.sum().backward()
    numpy.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_gelu_of_a_scalar_and_its_second_derivative(dtype):
    x = autograd.tensor(0.7, dtype=getattr(autograd, dtype), requires_grad=True)
    y = F.gelu(x)
    (slope,) = autograd.autograd.grad(y, x, create_graph=True)
    slope.backward()
    value = 0.7 * (1 + erf(numpy.array(0.7 * 0.5**0.5))) / 2
    density = numpy.exp(-0.245) / (2 * numpy.pi) ** 0.5
    tolerance = {"float16": 2e-3, "float32": 2e-7, "float64": 1e-15}[dtype]
    assert y.shape == () and abs(y.item() - value) <= tolerance * value
    assert abs(slope.item() - (value / 0.7 + 0.7 * density)) <= 2 * tolerance
    assert abs(x.grad.item() - density * (2 - 0.49)) <= 2 * tolerance


# -- sigmoid, written into one array ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")  # (the references)
@pytest.mark.parametrize("dtype", [numpy.float16, numpy.float32, numpy.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided", "scalar"])
def test_sigmoid_is_one_over_one_plus_e_to_minus_x(dtype, layout):
    x = (numpy.random.default_rng(6).standard_normal((300, 400)) * 30).astype(dtype)
    x.reshape(-1)[:6] = [numpy.nan, numpy.inf, -numpy.inf, -0.0, 0.0, -100]
    x = {"contiguous": x, "transposed": x.T, "strided": x[::3, 1::2], "scalar": x[1, 7]}[layout]
    wide = numpy.asarray(x, numpy.float32 if dtype == numpy.float16 else dtype)
    sigmoid = 1 / (1 + numpy.exp(-wide))
    t = autograd.tensor(x, requires_grad=True)
    y = t.sigmoid()
    assert y.dtype == t.dtype and y.shape == numpy.shape(x)
    numpy.testing.assert_array_equal(_bits(y.numpy()), _bits(sigmoid.astype(dtype)))
    numpy.testing.assert_array_equal(numpy.asarray(x), t.numpy())  # (the input left as it was)
    # silu as PyTorch's kernel, x / (1 + e^-x), divided once (float16: in float32, rounded once)
    numpy.testing.assert_array_equal(_bits(F.silu(t).numpy()), _bits((wide / (1 + numpy.exp(-wide))).astype(dtype)))


def _bits(a):
    return numpy.ascontiguousarray(a).reshape(-1).view(numpy.uint8)
