"""Unary ops' special cases, ported from PyTorch's test/test_unary_ufuncs.py (TestUnaryUfuncs, the tests written
for one op each: out= dtypes, nan_to_num, complex edge values, digamma and polygamma at their poles, frexp,
mvlgamma, ~ and bitwise_not, abs and angle of complex numbers, i0/i0e/i1/i1e, ndtr, log_ndtr, erfinv, sinc,
igamma/igammac edges, abs of -0.0, isposinf/isneginf/signbit outputs, nonzero of empty tensors, exp of complex
infinities, sign, sgn, isreal, the acosh/atanh domains, and rounding of integers).

The SciPy references of PyTorch's tests are written here as literals (computed with scipy.special 1.17).
Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values, xfail_on_chainrule

ALL = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "complex64",
       "complex128"]

# ops whose out= must have the result's own dtype (PyTorch's "Found dtype ... but expected ..."); the others write
# into any dtype their result can be cast to
_STRICT_OUT = {"bitwise_not", "nan_to_num", "abs", "neg", "floor", "sgn"}


@pytest.mark.parametrize("name", ["sin", "exp", "sqrt", "abs", "neg", "floor", "sigmoid", "bitwise_not",
                                  "nan_to_num", "sgn", "erf", "lgamma", "digamma", "reciprocal", "square"])
@pytest.mark.parametrize("dtype", ["int64", "float32", "complex64"])
def test_out_arg_all_dtypes(T, name, dtype, request):
    """out= of every dtype: written and returned where PyTorch writes it, refused (RuntimeError) where not."""
    if name == "abs" and dtype == "complex64":
        xfail_on_chainrule(T, request, "abs of complex64 writes into a complex128 out=, which PyTorch refuses "
                           "(Found dtype ComplexDouble but expected ComplexFloat); abs's out= is ops/functions.py's")
    if dtype == "complex64" and name in ("floor", "bitwise_not", "erf", "lgamma", "digamma"):
        return  # (no complex kernel: tested in test_ported_unary_ufuncs)
    if dtype != "int64" and name == "bitwise_not":
        return
    x = T.tensor(np.array([[0.5, 1.5], [2.0, 3.0]]) * (1 + 1j if dtype == "complex64" else 1)).to(getattr(T, dtype))
    expected = getattr(T, name)(x)
    for out_dtype in ALL:
        out = T.empty((2, 2), dtype=getattr(T, out_dtype))
        strict = name in _STRICT_OUT
        fails = out.dtype != expected.dtype if strict else not T.can_cast(expected.dtype, out.dtype)
        if name == "abs" and dtype == "complex64":  # (|z| is real: a real out takes it, a complex one is z's dtype)
            fails = not T.can_cast(expected.dtype, out.dtype) or out.is_complex() and out.dtype != x.dtype
        if fails:
            with pytest.raises(RuntimeError):
                getattr(T, name)(x, out=out)
        else:
            assert getattr(T, name)(x, out=out) is out
            np.testing.assert_array_equal(values(out), values(expected.to(out.dtype)))


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32",
                                   "float64"])
def test_nan_to_num(T, dtype):
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 100, (16, 16)).astype(dtype)
    if dtype.startswith("float"):
        a[3, :], a[7, :], a[11, :] = np.nan, np.inf, -np.inf
    for contiguous in (False, True):
        x = T.tensor(a)
        if not contiguous:
            x = x.T
        ref = values(x)
        nan, posinf, neginf = 0.37, 2.5, 7.25
        same(x.nan_to_num(nan=nan, posinf=posinf), np.nan_to_num(ref, nan=nan, posinf=posinf), dtype)
        same(x.nan_to_num(posinf=posinf, neginf=neginf), np.nan_to_num(ref, posinf=posinf, neginf=neginf), dtype)
        same(T.nan_to_num(x), np.nan_to_num(ref), dtype)  # (±inf: the dtype's largest and smallest numbers)
        out = T.empty_like(x)
        assert T.nan_to_num(x, out=out, nan=nan, posinf=posinf, neginf=neginf) is out
        same(out, np.nan_to_num(ref, nan=nan, posinf=posinf, neginf=neginf), dtype)


def test_nan_to_num_gradient_is_one_where_finite(T):
    x = T.tensor([1.5, math.nan, math.inf, -math.inf, -2.0], requires_grad=True)
    y = T.nan_to_num(x, nan=0.5)
    same(y.detach(), np.array([1.5, 0.5, np.finfo(np.float32).max, np.finfo(np.float32).min, -2.0], "float32"))
    y.sum().backward()
    same(x.grad, [1.0, 0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("shape", [(1, 3, 6, 6), (1, 3, 6, 128)])
def test_nan_to_num_of_float16_keeps_its_dtype_and_gradient(T, shape):
    """PyTorch's test_nan_to_num_bfloat16, in float16 (chainrule has no bfloat16): the result and the gradient
    keep the input's dtype, and equal the float32 computation's where the input is finite."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal(shape).astype(np.float16)
    a[0, 0, 1, :], a[0, 1, 2, :], a[0, 2, 4, :] = np.nan, np.inf, -np.inf
    half = T.tensor(a, requires_grad=True)
    wide = T.tensor(a.astype(np.float32), requires_grad=True)
    out, out_wide = T.nan_to_num(half), T.nan_to_num(wide)
    out.sum().backward()
    out_wide.sum().backward()
    assert dtype_name(out) == "float16" and dtype_name(half.grad) == "float16"
    finite = np.isfinite(a)
    same(out[T.tensor(finite)], values(out_wide)[finite].astype(np.float16))
    same(out, np.nan_to_num(a))  # (±inf: float16's own largest and smallest numbers)
    same(half.grad, values(wide.grad).astype(np.float16))


def test_complex_edge_values(T):
    for z in (0.0 - 1.0e20j, -1.0e60 - 4988429.2j):
        x = T.tensor(z, dtype=T.complex128)
        close(T.sqrt(x), np.sqrt(np.complex128(z)), rtol=1e-12, atol=0)
    x = T.tensor(0.0 - 1.0e20j, dtype=T.complex128)
    close(T.acos(x), np.arccos(np.complex128(0.0 - 1.0e20j)), rtol=1e-12, atol=0)


def test_digamma_special_values(T):
    euler = 0.57721566490153286
    dataset = [(0.0, -0.0), (1, -euler), (0.5, -2 * math.log(2) - euler),
               (1 / 3, -math.pi / (2 * math.sqrt(3)) - 3 * math.log(3) / 2 - euler),
               (1 / 4, -math.pi / 2 - 3 * math.log(2) - euler),
               (1 / 6, -math.pi * math.sqrt(3) / 2 - 2 * math.log(2) - 3 * math.log(3) / 2 - euler),
               (1 / 8, -math.pi / 2 - 4 * math.log(2)
                - (math.pi + math.log(2 + math.sqrt(2)) - math.log(2 - math.sqrt(2))) / math.sqrt(2) - euler)]
    x = np.array([v[0] for v in dataset])
    expected = np.array([v[1] for v in dataset])
    for dtype, rtol in (("float64", 1e-13), ("float32", 1e-6)):
        got = values(T.digamma(T.tensor(x, dtype=getattr(T, dtype))))
        assert got[0] == -math.inf  # ψ(+0)
        np.testing.assert_allclose(got[1:], expected[1:].astype(dtype), rtol=rtol)
    # each pair of the table as one row of a 2-d tensor (PyTorch's test digammas the whole table)
    table = T.tensor([list(v) for v in dataset], dtype=T.float64)
    same(T.digamma(table)[0], [-math.inf, math.inf])


def test_digamma_at_and_near_its_poles(T):
    x = [-0.999999994, -1.999999994, -2.0000000111, -100.99999994, 0.000000111, -1931.99999994, -0.000000111,
         0.0, -0.0, -1.0, -2.0, -931.0]
    expected = [-166666663.24554086, -166666662.74554086, 90090090.76744223, -16666660.666240672, -9009009.58622449,
                -16666645.861379756, 9009008.43179316, -math.inf, math.inf, math.nan, math.nan, math.nan]
    got = values(T.digamma(T.tensor(x, dtype=T.float64)))
    np.testing.assert_allclose(got, expected, rtol=1e-7)
    assert math.copysign(1, got[7]) < 0 < math.copysign(1, got[8])


_POLYGAMMA_AT = [0.25, 0.5, 1.0, 2.5, 7.0, -0.5, -1.5, 30.0]
_POLYGAMMA = {
    0: [-4.2274535333762655, -1.9635100260214235, -0.5772156649015329, 0.7031566406452432, 1.872784335098467,
        0.03648997397857651, 0.7031566406452434, 3.384438132685525],
    1: [17.197329154507113, 4.93480220054468, 1.6449340668482266, 0.4903577561002349, 0.15354517795933756,
        8.934802200544679, 9.379246644989124, 0.033895060357739946],
    2: [-129.32773993753688, -16.828796644234316, -2.404113806319188, -0.23620405164172736, -0.023530472985855234,
        -0.82879664423432, -0.23620405164172825, -0.0011487652037285997],
    3: [1538.782144009189, 97.40909103400242, 6.493939402266829, 0.2239058488172521, 0.007198198563125444,
        193.40909103400242, 194.59427621918758, 7.786003664736127e-05],
    4: [-24584.375388637945, -771.4742498266678, -24.88626612344089, -0.31375599950673133, -0.00329677158902638,
        -3.4742498266672253, -0.3137559995066608, -7.914941340181022e-06],
}


@pytest.mark.parametrize("n", sorted(_POLYGAMMA))
def test_polygamma_values_and_gradient(T, n):
    x = T.tensor(_POLYGAMMA_AT, dtype=T.float64)
    close(T.polygamma(n, x), _POLYGAMMA[n], rtol=1e-8, atol=0)
    close(x.polygamma(n), _POLYGAMMA[n], rtol=1e-8, atol=0)
    u = x.clone()
    u.polygamma_(n)
    close(u, _POLYGAMMA[n], rtol=1e-8, atol=0)
    grid = T.tensor([0.3, 1.7, 4.2, 11.0], dtype=T.float64, requires_grad=True)
    assert T.autograd.gradcheck(lambda t: t.polygamma(n), (grid,))


def test_polygamma_refuses_a_negative_n(T):
    raises(RuntimeError, r"polygamma\(n, x\) does not support negative n\.", T.polygamma, -1, T.tensor([1.0, 2.0]))


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_mvlgamma_against_its_definition(T, p):
    x = np.linspace(p, 10, 10)
    expected = p * (p - 1) / 4 * math.log(math.pi) + sum(
        np.array([math.lgamma(v - j / 2) for v in x]) for j in range(p))
    close(T.mvlgamma(T.tensor(x, dtype=T.float64), p), expected, rtol=1e-12, atol=1e-12)
    close(T.mvlgamma(T.tensor(x, dtype=T.float32), p), expected, rtol=1e-5, atol=1e-5)


def test_mvlgamma_refuses_p_below_one(T):
    raises(RuntimeError, "p has to be greater than or equal to 1", T.mvlgamma, T.tensor([1.5]), 0)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_frexp(T, dtype):
    rng = np.random.default_rng(4)
    a = (rng.standard_normal((50, 50)) * 10).astype(dtype)
    a[0, :4] = [0.0, -0.0, 1.0, 2.0 ** -20]
    mantissa, exponent = T.frexp(T.tensor(a))
    np_mantissa, np_exponent = np.frexp(a)
    same(mantissa, np_mantissa, dtype)
    same(exponent, np_exponent, "int32")


def test_frexp_refuses_integer_bool_and_complex_inputs_and_wrong_out_dtypes(T):
    for dtype in ("bool", "uint8", "int8", "int16", "int32", "int64", "complex64", "complex128"):
        x = T.ones((3, 3), dtype=getattr(T, dtype))
        raises(RuntimeError, r"torch\.frexp\(\) only supports floating-point dtypes", T.frexp, x)
    for dtype in ("float16", "float32", "float64"):
        x = T.ones((3, 3), dtype=getattr(T, dtype))
        for other in ALL:
            if other != dtype:
                raises(RuntimeError, r"torch\.frexp\(\) expects mantissa to have dtype .+ but got .+", T.frexp, x,
                       out=(T.empty_like(x, dtype=getattr(T, other)), T.empty_like(x, dtype=T.int32)))
            if other != "int32":
                raises(RuntimeError, r"torch\.frexp\(\) expects exponent to have int dtype but got .+", T.frexp, x,
                       out=(T.empty_like(x), T.empty_like(x, dtype=getattr(T, other))))


# 0xFFFF - arange(127) in int8, as PyTorch's test computes it: it wraps to -1 - k
_INVERTED = (-1 - np.arange(127)).astype(np.int8)


def test_invert_operator(T):
    expected = _INVERTED
    for dtype in ("uint8", "int8", "int16", "int32", "int64"):
        a = T.arange(127, dtype=getattr(T, dtype))
        same(~a, expected.astype(dtype), dtype)
    same(~T.tensor([False, True]), [True, False], "bool")
    for dtype in ("float16", "float32", "float64"):
        with pytest.raises(TypeError):
            ~T.zeros(10, dtype=getattr(T, dtype))


def test_bitwise_not(T):
    expected = _INVERTED
    for dtype in ("bool", "uint8", "int8", "int16", "int32", "int64"):
        if dtype == "bool":
            a, want = T.tensor([True, False]), np.array([False, True])
        else:
            a, want = T.arange(127, dtype=getattr(T, dtype)), expected.astype(dtype)
        same(a.bitwise_not(), want, dtype)
        b = T.empty(0, dtype=getattr(T, dtype))
        assert T.bitwise_not(a, out=b) is b
        same(b, want, dtype)
        a.bitwise_not_()
        same(a, want, dtype)
    for dtype in ("float16", "float32", "float64"):
        a = T.zeros(10, dtype=getattr(T, dtype))
        raises(RuntimeError, None, a.bitwise_not)
        raises(RuntimeError, None, T.bitwise_not, a, out=T.empty(0, dtype=getattr(T, dtype)))
        raises(RuntimeError, None, a.bitwise_not_)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_abs_angle_complex_to_float(T, dtype):
    rng = np.random.default_rng(5)
    vals = [complex(rng.random() * m, rng.random() * m) for m in (-1, 1, -10, 10, -100, 100) for _ in range(10)]
    real = {"complex64": "float32", "complex128": "float64"}[dtype]
    for vs in (vals, []):
        a = np.array(vs, dtype=dtype)
        t = T.tensor(a)
        for name, np_fn in (("abs", np.abs), ("angle", np.angle)):
            fn = getattr(T, name)
            assert dtype_name(fn(t)) == real
            close(fn(t), np_fn(a), rtol=1e-6, atol=1e-6)
            float_out = T.empty_like(t, dtype=getattr(T, real))
            fn(t, out=float_out)
            close(float_out, np_fn(a).astype(real), rtol=1e-6, atol=1e-6)
            resized = T.empty(1, dtype=getattr(T, real))
            fn(t, out=resized)
            close(resized, np_fn(a).astype(real), rtol=1e-6, atol=1e-6)
            complex_out = T.empty_like(t)
            fn(t, out=complex_out)
            close(complex_out, np_fn(a).astype(dtype), rtol=1e-6, atol=1e-6)
            complex_resized = T.empty(0, dtype=getattr(T, dtype))
            fn(t, out=complex_resized)
            close(complex_resized, np_fn(a).astype(dtype), rtol=1e-6, atol=1e-6)
            raises(RuntimeError, None, fn, t, out=T.empty(0, dtype=T.long))
        raises(RuntimeError, "In-place abs is not supported for complex tensors.", t.abs_)
        assert not hasattr(t, "angle_")


def test_abs_of_large_integers_and_of_negative_zero(T):
    assert T.tensor([2 ** 31 + 1], dtype=T.long).abs()[0].item() == 2 ** 31 + 1
    for dtype in (T.float32, T.float64):
        inp = T.zeros(129, dtype=dtype)
        inp[::2] = -0.0
        assert not np.signbit(values(inp.abs())).any()
        assert not np.signbit(values(T.tensor([0.0, -0.0], dtype=dtype).abs())).any()


def test_absolute_is_abs(T):
    t = T.randn(10, 10)
    same(t.absolute(), values(t.abs()))
    same(T.absolute(t), values(T.abs(t)))
    r_abs, r_absolute = T.empty((10, 10)), T.empty((10, 10))
    T.abs(t, out=r_abs)
    T.absolute(t, out=r_absolute)
    same(r_absolute, values(r_abs))
    u = t.clone()
    t.absolute_()
    u.abs_()
    same(t, values(u))


@pytest.mark.parametrize("name", ["isposinf", "isneginf", "signbit"])
def test_bool_only_outputs(T, name):
    t = T.tensor([math.inf, -math.inf, 1.2])
    for dtype in ALL[1:]:
        raises(RuntimeError, "does not support non-boolean outputs", getattr(T, name), t,
               out=T.empty_like(t, dtype=getattr(T, dtype)))
    out = T.empty(3, dtype=T.bool)
    assert getattr(T, name)(t, out=out) is out
    same(out, getattr(np, name)(values(t)), "bool")


def test_isposinf_isneginf_signbit_refuse_complex(T):
    t = T.tensor([complex(0, math.inf), complex(1, -math.inf)])
    for name in ("isposinf", "isneginf"):
        raises(RuntimeError, "does not support complex inputs", getattr(T, name), t)
        raises(RuntimeError, "does not support complex inputs", getattr(T, name), t, out=T.empty(2, dtype=T.bool))
    raises(RuntimeError, "signbit is not implemented for complex tensors.", T.signbit, t)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_isfinite_isinf_isnan_isreal_of_complex(T, dtype):
    vals = np.array([complex(-math.inf, math.inf), complex(-math.inf, 0), complex(0, math.inf),
                     complex(math.inf, math.nan), complex(math.nan, 0), complex(-1, 0), complex(0, 1),
                     1 + 1j, 2 + 0j, 3j, 2 - 1j, 2 - 0j], dtype=dtype)
    t = T.tensor(vals)
    for name in ("isfinite", "isinf", "isnan", "isreal"):
        same(getattr(T, name)(t), getattr(np, name)(vals), "bool")


def test_isreal_of_real_dtypes_is_true(T):
    for dtype in ALL[:-2]:
        same(T.isreal(T.tensor([1, 2, 3], dtype=getattr(T, dtype))), [True, True, True], "bool")


def test_isfinite_and_isinf_take_only_tensors(T):
    for name in ("isfinite", "isinf"):
        with pytest.raises(TypeError):
            getattr(T, name)(1)


def test_nonzero_of_empty_and_0d_tensors(T):
    x = T.randn(0, 2, 0, 5, 0)
    assert tuple(T.nonzero(x).shape) == (0, 5)
    z = T.nonzero(x, as_tuple=True)
    assert len(z) == 5 and all(tuple(t.shape) == (0,) for t in z)
    z = T.nonzero(T.tensor(0.5), as_tuple=True)
    assert len(z) == 1
    same(z[0], [0], "int64")
    assert tuple(T.nonzero(T.zeros(())).shape) == (0, 0)
    z = T.nonzero(T.zeros(()), as_tuple=True)
    assert len(z) == 1
    same(z[0], np.zeros(0, dtype=np.int64), "int64")


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_exp(T, dtype):
    for v in (2, -2) + ((1j, 1 + 1j) if dtype.startswith("complex") else ()):
        a = (T.tensor(v, dtype=getattr(T, dtype)) * T.arange(18) / 3 * math.pi).to(getattr(T, dtype))
        close(T.exp(a), np.exp(values(a)), rtol=1e-5, atol=1e-5)
    if dtype.startswith("complex"):
        assert math.isinf(T.exp(T.tensor(complex(math.inf, 0), dtype=getattr(T, dtype))).item().real)
        for z in (complex(0, math.inf), complex(math.nan, math.inf)):
            r = T.exp(T.tensor(z, dtype=getattr(T, dtype))).item()
            assert math.isnan(r.real) and math.isnan(r.imag)


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32",
                                   "float64"])
def test_sign(T, dtype):
    if dtype == "bool":
        a, target = T.tensor([True, True, False, True]), [True, True, False, True]
    elif dtype.startswith("float"):
        info = T.finfo(getattr(T, dtype))
        a, target = T.tensor([math.nan, -12, 0, 71, info.min, info.max], dtype=getattr(T, dtype)), [0, -1, 0, 1, -1, 1]
    else:
        info = T.iinfo(getattr(T, dtype))
        if info.min == 0:
            a, target = T.tensor([12, 0, 71, info.min, info.max], dtype=getattr(T, dtype)), [1, 0, 1, 0, 1]
        else:
            a, target = T.tensor([-12, 0, 71, info.min, info.max], dtype=getattr(T, dtype)), [-1, 0, 1, -1, 1]
    target = np.array(target).astype(dtype)
    same(a.sign(), target, dtype)
    same(T.sign(a), target, dtype)
    out = T.empty_like(a)
    T.sign(a, out=out)
    same(out, target, dtype)
    a.sign_()
    same(a, target, dtype)


def test_sign_refuses_complex_and_sgn_keeps_the_angle(T):
    raises(RuntimeError, r"Unlike NumPy, torch\.sign is not intended to support complex numbers\. Please use "
           r"torch\.sgn instead\.", T.sign, T.tensor([4j]))
    for dtype in (T.complex64, T.complex128):
        x = T.randn(100, dtype=dtype)
        for out in (x.sgn(), T.sgn(x, out=T.empty_like(x))):
            close(out.angle(), values(x.angle()), rtol=1e-5, atol=1e-6)
            close(out.abs(), np.ones(100), rtol=1e-6, atol=1e-6)
        same(T.tensor([0j], dtype=dtype).sgn(), [0j])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_signbit(T, dtype):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((5, 5)).astype(dtype)
    t = T.tensor(a)
    same(T.signbit(t), np.signbit(a), "bool")
    sp = np.array([0, math.inf, -math.inf, math.nan, -0.0], dtype=dtype)
    same(T.signbit(T.tensor(sp)), np.signbit(sp), "bool")
    for dtype_ in ("bool", "uint8", "int8", "int16", "int32", "int64"):
        ints = rng.integers(-5, 5, (5, 5)).astype(dtype_)
        same(T.signbit(T.tensor(ints)), np.signbit(ints), "bool")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_acosh_and_atanh_domains(T, dtype):
    sample = T.tensor([-math.inf, 1.00, -1.23, -0.06, 0.98, math.inf], dtype=getattr(T, dtype))
    same(T.isnan(T.acosh(sample)), [True, False, True, True, True, False])
    same(T.isinf(sample.acosh()), [False, False, False, False, False, True])
    sample = T.tensor([-math.inf, -1.00, 1.00, -1.23, 1.06, math.inf], dtype=getattr(T, dtype))
    same(T.isnan(T.atanh(sample)), [True, False, False, True, True, True])
    same(T.atanh(sample)[1:3], [-math.inf, math.inf])


@pytest.mark.parametrize("name", ["round", "ceil", "floor", "trunc", "fix"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64"])
def test_rounding_integers_keeps_them(T, name, dtype):
    a = np.array([0, 1, 7, 100, 127], dtype=dtype)
    same(getattr(T, name)(T.tensor(a)), a, dtype)
    t = T.tensor(a)
    getattr(t, name + "_")()
    same(t, a, dtype)


def test_round_with_decimals(T):
    x = T.tensor([1.2345, -2.5, 0.5, 1234.5678], dtype=T.float64)
    same(T.round(x, decimals=2), np.round(values(x), 2))
    same(T.round(x, decimals=-2), np.round(values(x), -2))
    same(T.round(x), [1.0, -2.0, 0.0, 1235.0])
    raises(RuntimeError, None, T.round, T.tensor([1, 2]), decimals=1)


@pytest.mark.parametrize("decimals", [1, 2, 3, -1, -2])
def test_round_with_decimals_of_float16_scales_in_float32(T, decimals):
    """round(x, decimals) of float16 scales by 10^decimals in float32, as PyTorch's (x · 100 in float16 overflows
    past 655: round(870.0, 2) was inf)."""
    rng = np.random.default_rng(12)
    a = np.concatenate([rng.uniform(-1000, 1000, 500), rng.uniform(-1, 1, 200), [870.0, -918.0, 82.94]])
    a = a.astype(np.float16)
    expected = np.round(a.astype(np.float32), decimals).astype(np.float16)
    same(T.round(T.tensor(a), decimals=decimals), expected, "float16")


def test_dtypes_of_integer_results(T):
    """sqrt (and every op that computes in floating point) of integers and bools is float32, PyTorch's default
    dtype; square of a bool is int64; abs/neg/sign/square of an integer keep it."""
    for dtype in (T.bool, T.uint8, T.int8, T.int16, T.int32, T.int64):
        for name in ("sqrt", "exp", "log", "sin", "sigmoid", "reciprocal", "erf", "erfinv", "lgamma", "digamma",
                     "i0", "sinc", "deg2rad", "rsqrt", "expm1", "log1p", "atan", "logit", "angle"):
            assert dtype_name(getattr(T, name)(T.tensor([1, 0], dtype=dtype))) == "float32", (name, dtype)
        for name in ("special.i0e", "special.i1", "special.i1e", "special.ndtr", "special.log_ndtr",
                     "special.erfcx", "special.entr", "special.sinc", "special.expit", "special.ndtri"):
            fn = T
            for part in name.split("."):
                fn = getattr(fn, part)
            assert dtype_name(fn(T.tensor([1, 0], dtype=dtype))) == "float32", (name, dtype)
    assert dtype_name(T.square(T.tensor([True]))) == "int64"
    for name in ("abs", "neg", "sign", "square"):
        assert dtype_name(getattr(T, name)(T.tensor([1, -2], dtype=T.int16))) == "int16"


@pytest.mark.parametrize("name", ["erfcx", "ndtri", "log_ndtr", "i0e", "i1", "i1e", "entr", "digamma", "psi",
                                  "gammaln", "erfinv", "logit", "erfc", "polygamma", "multigammaln"])
def test_special_functions_of_complex_numbers_are_refused(T, name):
    """PyTorch's special functions have no complex kernels: NotImplementedError (a RuntimeError), where chainrule
    once computed their real formulas on complex numbers."""
    z = T.tensor([0.5 + 0.5j, 1.0 - 2.0j])
    fn = getattr(T.special, name)
    with pytest.raises(RuntimeError):
        fn(1, z) if name == "polygamma" else fn(z, 2) if name == "multigammaln" else fn(z)


def test_special_round_refuses_integers(T):
    """special.round is round's overload with decimals (default 0), which has no integer kernel."""
    for dtype in ("uint8", "int8", "int16", "int32", "int64"):
        raises(RuntimeError, "not implemented for", T.special.round, T.tensor([1, 2], dtype=getattr(T, dtype)))
    same(T.special.round(T.tensor([1.26, 2.5, -0.5])), [1.0, 2.0, -0.0])
    same(T.special.round(T.tensor([1.26, 2.55], dtype=T.float64), decimals=1), [1.3, 2.6])
