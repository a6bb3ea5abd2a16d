"""Special functions and activations, ported from PyTorch's test/test_unary_ufuncs.py (TestUnaryUfuncs: i0 over
its ranges, i0/i0e/i1/i1e/ndtr/log_ndtr against SciPy, igamma/igammac, erfinv, erfcx, sinc's gradient, log1p
of complex numbers, hardshrink, hardswish, hardsigmoid, silu, mish, threshold, and the memory-overlap checks
of out= and in-place ops).

SciPy's values are written as literals (scipy.special 1.17), or NumPy's (numpy.i0).
Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values, xfail_on_chainrule

nn, F = ported_nn.nn, ported_nn.F  # the fixtures


@pytest.mark.parametrize("dtype, bound", [("float32", 13.25), ("float32", 88.5), ("float64", 13.25),
                                          ("float64", 88.5), ("float64", 709.75)])
def test_i0_over_the_range_where_it_does_not_overflow(T, dtype, bound):
    rng = np.random.default_rng(8)
    for r in (bound, -bound):
        a = (rng.random(1000) * r).astype(dtype)
        close(T.i0(T.tensor(a)), np.i0(a.astype(np.float64)).astype(dtype), rtol=1e-6 if dtype == "float32" else 1e-12,
              atol=0)


def test_i0_of_float16_is_rounded_from_float32(T):
    """PyTorch computes a float16 i0 in float32 and rounds once: i0(0.001) is 1.0, not 0.9985."""
    a = np.array([-0.001, 0.001, 0.999, -0.999, 2.5, 10.0], dtype=np.float16)
    same(T.i0(T.tensor(a)), np.i0(a.astype(np.float64)).astype(np.float16), "float16")


def test_sinc_of_float16_is_rounded_from_float32(T):
    a = np.array([1.0, -2.0, 3.0, 0.5, -0.25, 100.0], dtype=np.float16)
    expected = np.sinc(a.astype(np.float32)).astype(np.float16)
    close(T.sinc(T.tensor(a)), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_i0_special_values(T, dtype):
    assert T.i0(T.tensor([], dtype=getattr(T, dtype))).shape == (0,)
    assert T.i0(T.tensor([math.inf, -math.inf, math.nan], dtype=getattr(T, dtype))).isnan().all()


_BESSEL_AT = [-1e7, -1000.5, -30.0, -2.5, -0.1, 0.1, 3.0, 45.7, 800.0, 1e7]
_BESSEL = {
    "i0e": [0.0001261566276779659, 0.012614086539375468, 0.0731459464822373, 0.27004644161220276,
            0.9071009257823011, 0.9071009257823011, 0.24300035416182536, 0.059177029952249216, 0.014106945005869183,
            0.0001261566276779659],
    "i1e": [-0.00012615662137013437, -0.012607781071289343, -0.07191633059864755, -0.20658464953126654,
            -0.045298446808809324, 0.045298446808809324, 0.19682671329730084, 0.0585259567236434, 0.014098125406526996,
            0.00012615662137013437],
    "i1": [-math.inf, -math.inf, -768532038938.9569, -2.5167162452886984, -0.050062526047092694,
           0.050062526047092694, 3.9533702174026093, 4.1172415302512133e+18, math.inf, math.inf],
}


@pytest.mark.parametrize("name", sorted(_BESSEL))
def test_scaled_and_first_order_bessel_against_scipy(T, name):
    x = T.tensor(_BESSEL_AT, dtype=T.float64)
    close(getattr(T.special, name)(x), _BESSEL[name], rtol=1e-9, atol=0)
    assert getattr(T.special, name)(T.tensor([], dtype=T.float64)).shape == (0,)
    close(getattr(T.special, name)(x.float()), np.array(_BESSEL[name], dtype=np.float32), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bessel_ndtr_and_log_ndtr_at_the_dtype_limits(T, dtype):
    info = T.finfo(getattr(T, dtype))
    t = T.tensor([info.min, info.max, info.eps, info.tiny], dtype=getattr(T, dtype))
    expected = {
        "float32": {"i0e": [2.1626704969858532e-20, 2.1626704969858532e-20, 0.9999998807907104, 1.0],
                    "i1": [-math.inf, math.inf, 5.960464477539063e-08, 5.877471754111438e-39],
                    "i1e": [-2.1626704969858532e-20, 2.1626704969858532e-20, 5.960463766996327e-08,
                            5.877471754111438e-39],
                    "ndtr": [0.0, 1.0, 0.5000000596046448, 0.5],
                    "log_ndtr": [-math.inf, -0.0, -0.6931470632553101, -0.6931471824645996]},
        "float64": {"i0e": [2.9754474593159e-155, 2.9754474593159e-155, 1.0, 1.0],
                    "i1": [-math.inf, math.inf, 1.110223024625157e-16, 1.1125369292536007e-308],
                    "i1e": [-2.9754474593159e-155, 2.9754474593159e-155, 1.1102230246251568e-16,
                            1.1125369292536007e-308],
                    "ndtr": [0.0, 1.0, 0.5000000000000001, 0.5],
                    "log_ndtr": [-math.inf, -0.0, -0.6931471805599451, -0.6931471805599453]}}[dtype]
    close(T.i0(t), [math.inf, math.inf, 1.0, 1.0], rtol=1e-6, atol=0)
    for name, want in expected.items():
        close(getattr(T.special, name)(t), np.array(want, dtype=dtype), rtol=1e-6, atol=0)


_GAMMAINC_AT = [(0.5, 0.5), (1.0, 2.0), (2.0, 1.0), (10.0, 12.0), (0.02, 0.05), (50.0, 40.0)]
_GAMMAINC = [0.6826894921370859, 0.8646647167633873, 0.2642411176571153, 0.7576078383294875, 0.9515483512624651,
             0.07033506665939494]
_GAMMAINCC = [0.31731050786291115, 0.1353352832366127, 0.7357588823428847, 0.24239216167051245,
              0.048451648737535234, 0.9296649333406051]


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-8)])
def test_igamma_and_igammac_against_scipy(T, dtype, rtol):
    a = T.tensor([p[0] for p in _GAMMAINC_AT], dtype=getattr(T, dtype))
    x = T.tensor([p[1] for p in _GAMMAINC_AT], dtype=getattr(T, dtype))
    close(T.igamma(a, x), np.array(_GAMMAINC, dtype=dtype), rtol=rtol, atol=0)
    close(T.igammac(a, x), np.array(_GAMMAINCC, dtype=dtype), rtol=rtol, atol=0)
    # a column against a row broadcast; strided slices give what their copies give
    vec = T.logspace(-4, 4, 50, base=math.e, dtype=T.float64).unsqueeze(-1).to(getattr(T, dtype))
    table = T.igamma(vec, vec.transpose(0, 1))
    assert table.shape == (50, 50)
    close(T.igamma(vec[::2], vec[:25]), values(T.igamma(vec[::2].contiguous(), vec[:25].contiguous())))
    close(table + T.igammac(vec, vec.transpose(0, 1)), np.ones((50, 50)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_igamma_and_igammac_edge_cases(T, dtype):
    kw = {"dtype": getattr(T, dtype)}
    infs, zeros, ones = T.full((3,), math.inf, **kw), T.zeros(3, **kw), T.ones(3, **kw)
    zero_to_large = T.tensor([0.0, 1.0, 1e3], **kw)
    small_to_inf = T.tensor([1e-3, 1.0, math.inf], **kw)
    for (a, x), lower in (((zeros, small_to_inf), ones), ((small_to_inf, zeros), zeros),
                          ((infs, zero_to_large), zeros), ((zero_to_large, infs), ones)):
        same(T.igamma(a, x), values(lower))
        same(T.igammac(a, x), 1 - values(lower))
    for a, x in ((zeros, zeros), (infs, infs), (-small_to_inf, small_to_inf)):
        assert T.igamma(a, x).isnan().all() and T.igammac(a, x).isnan().all()


def test_erfinv(T):
    x = [-0.999, -0.5, -1e-8, 0.3, 0.9, 0.99999]
    expected = [-2.326753765513524, -0.4769362762044699, -8.86226925452758e-09, 0.2724627147267544,
                1.1630871536766743, 3.123413274341571]
    close(T.erfinv(T.tensor(x, dtype=T.float64)), expected, rtol=1e-10, atol=0)  # (ill-conditioned near ±1)
    close(T.special.erfinv(T.tensor(x[1:5])), np.array(expected[1:5], dtype=np.float32), rtol=1e-6, atol=0)
    same(T.erfinv(T.tensor([-1.0, 1.0, -0.0, 0.0])), [-math.inf, math.inf, -0.0, 0.0])
    assert T.erfinv(T.tensor([1.5, -1.0001, math.nan])).isnan().all()
    # erfinv undoes erf
    a = np.linspace(-3, 3, 41)
    close(T.erfinv(T.erf(T.tensor(a, dtype=T.float64))), a, rtol=1e-9, atol=1e-9)


def test_erfcx(T):
    x = T.tensor([-30.0, -1.0, 0.0, 1.0, 50.0, 1e10], dtype=T.float64)
    close(T.special.erfcx(x), [math.inf, 5.008980080762283, 1.0, 0.427583576155807, 0.011281536265323772,
                               5.641895835477563e-11], rtol=1e-12, atol=0)


def test_erfcx_of_a_huge_negative_number_is_plus_infinity(T, request):
    xfail_on_chainrule(T, request, "special.erfcx(-1e20) in float64 is -inf (2·exp(x²) - erfcx(-x) evaluates as "
                       "inf - inf, then NaN handling flips the sign) where PyTorch gives +inf (ops/normal_tails.py)")
    same(T.special.erfcx(T.tensor([-1e20, -1e300], dtype=T.float64)), [math.inf, math.inf])


def test_sinc_gradient_at_and_near_zero(T):
    a = T.tensor([0.0, T.finfo(T.double).tiny, 1.0], dtype=T.double, requires_grad=True)
    assert T.autograd.gradcheck(T.sinc, (a,))
    x = T.tensor([0.0], dtype=T.double, requires_grad=True)
    T.sinc(x).backward()
    same(x.grad, [0.0])


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_log1p_of_complex_numbers(T, dtype):
    inouts = [(0.2 + 0.3j, 0.21263386770217202 + 0.24497866312686414j), (1e-19 + 1e-18j, 1e-19 + 1e-18j),
              (1e-18 + 0.1j, 0.00497517 + 0.0996687j), (0.1 + 1e-18j, 0.0953102 + 9.090909090909090909e-19j),
              (0.5 + 0j, 0.40546510810816 + 0j), (0.0 + 0.5j, 0.111571776 + 0.463647609j),
              (2.0 + 1.0j, 1.151292546497023 + 0.3217505543966422j),
              (-1.0 + 2.0j, 0.6931471805599453 + 1.570796326794897j),
              (2.0j, 0.80471895621705014 + 1.1071487177940904j), (-2.0j, 0.80471895621705014 - 1.1071487177940904j)]
    if dtype == "complex128":
        inouts += [(-1 + 1e250j, 575.6462732485114 + 1.5707963267948966j), (1e250 + 1j, 575.6462732485114 + 1e-250j),
                   (1e250 + 1e250j, 575.9928468387914 + 0.7853981633974483j),
                   (1e-250 + 1e250j, 575.6462732485114 + 1.5707963267948966j),
                   (1e-250 + 2e-250j, 1e-250 + 2e-250j), (1e250 + 1e-250j, 575.6462732485114 + 0.0j)]
    else:
        inouts += [(-1 + 1e30j, 69.07755278982137 + 1.5707963267948966j), (1e30 + 1j, 69.07755278982137 + 1e-30j),
                   (1e30 + 1e30j, 69.42412638010134 + 0.7853981633974483j),
                   (1e-30 + 1e30j, 69.07755278982137 + 1.5707963267948966j),
                   (1e-30 + 2e-30j, 1e-30 + 2e-30j), (1e30 + 1e-30j, 69.07755278982137 + 0.0j)]
    ins, outs = zip(*inouts)
    for res in [T.log1p(T.tensor([z], dtype=getattr(T, dtype)))[0] for z in ins] + list(
            T.log1p(T.tensor(list(ins), dtype=getattr(T, dtype)))):
        assert not T.isnan(res).any()
    res = T.log1p(T.tensor(list(ins), dtype=getattr(T, dtype)))
    expected = np.array(outs)
    np.testing.assert_allclose(values(res.real), expected.real, rtol=1e-6, atol=0)
    np.testing.assert_allclose(values(res.imag), expected.imag, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hardshrink(T, dtype):
    data = T.tensor([1, 0.5, 0.3, 0.6], dtype=getattr(T, dtype)).view(2, 2)
    same(data.hardshrink(0.3), np.array([[1, 0.5], [0, 0.6]], dtype=dtype))
    same(data.hardshrink(0.5), np.array([[1, 0], [0, 0.6]], dtype=dtype))
    same(data.hardshrink(), values(data.hardshrink(0.5)))
    same(data.t().hardshrink(0.3), np.array([[1, 0], [0.5, 0.6]], dtype=dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hardshrink_edge_cases(T, dtype, request):
    xfail_on_chainrule(T, request, "hardshrink(x, lambd=inf) of ±inf is NaN: its formula x · ~(|x| <= λ) takes inf "
                       "· 0, where PyTorch gives 0 (ops/piecewise_linear.py)")
    info = T.finfo(getattr(T, dtype))
    tiny, big, inf = info.tiny, info.max, math.inf
    vals = [0.0, tiny, -tiny, 0.1, -0.1, 1.0, -1.0, big, -big, inf, -inf]
    for lambd, expected in ((0.0, vals), (tiny, [0.0, 0.0, 0.0] + vals[3:]), (0.1, [0.0] * 5 + vals[5:]),
                            (1.0, [0.0] * 7 + vals[7:]), (big, [0.0] * 9 + [inf, -inf]), (inf, [0.0] * 11)):
        got = T.tensor(vals, dtype=getattr(T, dtype)).hardshrink(lambd)
        same(got, np.array(expected, dtype=dtype))


def test_softshrink(T, F):
    x = T.tensor([-1.0, -0.5, 0.3, 0.6, math.inf, -math.inf])
    close(F.softshrink(x, 0.5), [-0.5, 0.0, 0.0, 0.1, math.inf, -math.inf])


_HARD_INPUTS = [-1000, -4, -3, -2, 0, 2, 3, 4, 1000]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hardswish_and_hardsigmoid(T, F, dtype):
    a = np.array(_HARD_INPUTS, dtype=np.float64)
    gate = np.minimum(np.maximum(a + 3, 0), 6) / 6.0
    x = T.tensor(_HARD_INPUTS, dtype=getattr(T, dtype))
    close(F.hardswish(x), a * gate, rtol=2e-4, atol=2e-4)
    y = x.clone()
    F.hardswish(y, inplace=True)
    close(y, a * gate, rtol=2e-4, atol=2e-4)
    close(F.hardsigmoid(x), gate, rtol=2e-4, atol=2e-4)
    y = x.clone()
    close(F.hardsigmoid(y, inplace=True), gate, rtol=2e-4, atol=2e-4)
    close(y, gate, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hardsigmoid_backward(T, F, dtype):
    x = T.tensor([-3.0, 3.0, -2.0, 2.0, -6.0, 6.0], dtype=getattr(T, dtype), requires_grad=True)
    F.hardsigmoid(x).backward(T.ones_like(x))
    close(x.grad, [0.0, 0.0, 1.0 / 6.0, 1.0 / 6.0, 0.0, 0.0])


@pytest.mark.parametrize("name", ["silu", "mish"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_silu_and_mish(T, F, name, dtype):
    rng = np.random.default_rng(9)
    a = np.concatenate((rng.standard_normal((5, 8)), [[-1000, -1, -0.1, 0, 0.5, 1, 2, 1000]])).astype(dtype)
    with np.errstate(over="ignore"):
        wide = a.astype(np.float64)
        expected = wide / (1 + np.exp(-wide)) if name == "silu" else wide * np.tanh(np.logaddexp(0, wide))
    fn = getattr(F, name)
    close(fn(T.tensor(a)), expected)
    x = T.tensor(a)
    close(fn(x, inplace=True), expected)
    close(x, expected)
    x = T.tensor(a).transpose(0, 1)
    close(fn(x), expected.T)
    close(fn(x, inplace=True), expected.T)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "float32", "float64"])
def test_threshold(T, dtype):
    x = T.randn(100).sign().to(getattr(T, dtype))
    y = T.threshold(x, 0, 0)
    assert y.le(0).any()
    same(y, np.where(values(x) > 0, values(x), 0))


def test_logit_with_eps(T):
    close(T.logit(T.tensor([0.0, 0.3, 1.0]), eps=0.1), [math.log(0.1 / 0.9), math.log(0.3 / 0.7), math.log(0.9 / 0.1)])
    same(T.logit(T.tensor([0.0, 1.0])), [-math.inf, math.inf])
    t = T.tensor([0.0, 0.3, 1.0])
    t.logit_(eps=0.1)
    close(t, [math.log(0.1 / 0.9), math.log(0.3 / 0.7), math.log(0.9 / 0.1)])


_OVERLAP_OPS = ["abs", "acos", "asin", "atan", "acosh", "asinh", "atanh", "ceil", "cos", "cosh", "digamma", "erf",
                "erfc", "erfinv", "exp", "exp2", "expm1", "floor", "frac", "i0", "log", "log10", "log1p", "log2",
                "neg", "reciprocal", "round", "rsqrt", "sin", "sinh", "sigmoid", "logit", "sqrt", "tan", "tanh",
                "trunc"]


@pytest.mark.parametrize("name", _OVERLAP_OPS)
def test_out_that_overlaps_the_input(T, name, request):
    """out= the input itself, or a tensor apart from it, works; an out that partly overlaps the input is refused."""
    positive = name in ("log", "log10", "log1p", "log2", "rsqrt", "acosh")
    data = T.tensor([1.5, 2.0, 3.5, 4.0, 5.5, 6.0] if positive else [0.1, -0.2, 0.3, -0.4, 0.5, -0.6],
                    dtype=T.float64)
    fn = getattr(T, name)
    expected = values(fn(data[0:3]))
    same(fn(data[0:3], out=data[0:3]), expected)
    data = T.tensor(values(data))
    fn(data[3:6], out=data[0:3])
    same(data[0:3], values(fn(data[3:6])))
    xfail_on_chainrule(T, request, "out= and in-place ops do not check memory overlap: an out that partly "
                       "overlaps its input, or an in-place op on an expanded tensor, is computed as if apart, where "
                       "PyTorch refuses it (ops/outputs.py, the write door)")
    raises(RuntimeError, "unsupported operation", fn, data[0:3], out=data[1:4])
    raises(RuntimeError, "single memory location", getattr(T.randn(1, dtype=T.float64).expand(3, 3), name + "_"))
