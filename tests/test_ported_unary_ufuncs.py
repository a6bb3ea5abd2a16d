"""Unary elementwise ops against NumPy, ported from PyTorch's test/test_unary_ufuncs.py (TestUnaryUfuncs: the
OpInfo-driven part, test_reference_numerics_{normal,small,large,extremal}, test_float_domains,
test_variant_consistency and the contiguity tests, over every dtype).

PyTorch's OpInfos are replaced here by the table UNARY: each op's NumPy (or math-module) reference, the dtype
its result takes (an integer or bool input becomes float32, PyTorch's default dtype, for the ops that compute in
floating point), whether it takes complex numbers, and its domain. References are computed in float64 (or
complex128) on the very values given to the op, then rounded to the result's dtype.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math
import warnings

import numpy as np
import pytest

from tests.ported import dtype_name, raises, values

INTEGRAL = ["bool", "uint8", "int8", "int16", "int32", "int64"]
FLOATING = ["float16", "float32", "float64"]
COMPLEX = ["complex64", "complex128"]
ALL = INTEGRAL + FLOATING + COMPLEX


def _vectorized(function):
    def reference(a):
        return np.vectorize(function, otypes=[np.float64])(a)
    return reference


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _logit(a):
    return np.log(a / (1 - a))


def _sinc(a):
    return np.sinc(a)


def _erf(x):
    return math.erf(x)


def _lgamma(x):
    if not math.isfinite(x):
        return abs(x)  # (ln Γ is +inf at ±inf: at -inf too, as PyTorch's)
    if x <= 0 and x == math.floor(x):
        return math.inf
    return math.lgamma(x)


def _erfinv(y):
    """erf⁻¹(y) by Newton's method on math.erf, from Winitzki's approximation (±inf at ±1, NaN beyond)."""
    if not abs(y) < 1:
        return math.copysign(math.inf, y) if abs(y) == 1 else math.nan
    if y == 0:
        return y
    a, ln = 0.147, math.log1p(-y * y)
    t = 2 / (math.pi * a) + ln / 2
    x = math.copysign(math.sqrt(math.sqrt(t * t - ln / a) - t), y)
    for _ in range(8):
        x -= (math.erf(x) - y) / (2 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


def _i0e(a):
    """e^-|x| I0(x): NumPy's i0 where it does not overflow, the asymptotic series 1/√(2π|x|) Σ ((2k-1)!!)² /
    (k! (8|x|)^k) past |x| = 500."""
    magnitude = np.abs(a)
    near = np.exp(-np.minimum(magnitude, 500)) * np.i0(np.minimum(magnitude, 500))
    far_x = np.maximum(magnitude, 500)
    series, term = np.ones_like(far_x), np.ones_like(far_x)
    for k in range(1, 12):
        term = term * (2 * k - 1) ** 2 / (k * 8 * far_x)
        series = series + term
    far = series / np.sqrt(2 * np.pi * far_x)
    return np.where(np.isnan(a), a, np.where(magnitude <= 500, near, np.where(np.isinf(a), 0.0, far)))


# name: (reference, kind, complex too, domain)
#   kind "float": integers and bools give float32; "same": the input's dtype; "bool": a bool result
UNARY = {
    "abs": (np.abs, "same", True, (None, None)),
    "acos": (np.arccos, "float", True, (-1, 1)),
    "acosh": (np.arccosh, "float", True, (1, None)),
    "asin": (np.arcsin, "float", True, (-1, 1)),
    "asinh": (np.arcsinh, "float", True, (None, None)),
    "atan": (np.arctan, "float", True, (None, None)),
    "atanh": (np.arctanh, "float", True, (-1, 1)),
    "ceil": (np.ceil, "same", False, (None, None)),
    "cos": (np.cos, "float", True, (None, None)),
    "cosh": (np.cosh, "float", True, (None, None)),
    "deg2rad": (np.deg2rad, "float", False, (None, None)),
    "rad2deg": (np.rad2deg, "float", False, (None, None)),
    "erf": (_vectorized(_erf), "float", False, (None, None)),
    "erfc": (_vectorized(math.erfc), "float", False, (None, None)),
    "erfinv": (_vectorized(_erfinv), "float", False, (-1, 1)),
    "exp": (np.exp, "float", True, (None, None)),
    "exp2": (np.exp2, "float", True, (None, None)),
    "expm1": (np.expm1, "float", True, (None, None)),
    "floor": (np.floor, "same", False, (None, None)),
    "fix": (np.trunc, "same", False, (None, None)),
    "frac": (lambda a: a - np.trunc(a), "same", False, (None, None)),
    "i0": (np.i0, "float", False, (None, None)),
    "lgamma": (_vectorized(_lgamma), "float", False, (None, None)),
    "log": (np.log, "float", True, (0, None)),
    "log10": (np.log10, "float", True, (0, None)),
    "log1p": (np.log1p, "float", True, (-1, None)),
    "log2": (np.log2, "float", True, (0, None)),
    "logit": (_logit, "float", False, (0, 1)),
    "neg": (np.negative, "same", True, (None, None)),
    "positive": (np.positive, "same", True, (None, None)),
    "reciprocal": (np.reciprocal, "float", True, (None, None)),
    "round": (np.round, "same", False, (None, None)),
    "rsqrt": (lambda a: 1 / np.sqrt(a), "float", True, (0, None)),
    "sigmoid": (_sigmoid, "float", True, (None, None)),
    "sign": (lambda a: np.where(np.isnan(a), 0, np.sign(a)), "same", False, (None, None)),
    "sin": (np.sin, "float", True, (None, None)),
    "sinc": (_sinc, "float", True, (None, None)),
    "sinh": (np.sinh, "float", True, (None, None)),
    "sqrt": (np.sqrt, "float", True, (0, None)),
    "square": (np.square, "same", True, (None, None)),
    "tan": (np.tan, "float", True, (None, None)),
    "tanh": (np.tanh, "float", True, (None, None)),
    "trunc": (np.trunc, "same", False, (None, None)),
    "signbit": (np.signbit, "bool", False, (None, None)),
    "isnan": (np.isnan, "bool", True, (None, None)),
    "isinf": (np.isinf, "bool", True, (None, None)),
    "isfinite": (np.isfinite, "bool", True, (None, None)),
    "isposinf": (np.isposinf, "bool", False, (None, None)),
    "isneginf": (np.isneginf, "bool", False, (None, None)),
    "logical_not": (np.logical_not, "bool", True, (None, None)),
    "special.i0e": (_i0e, "float", False, (None, None)),
    "special.ndtr": (_vectorized(lambda x: 0.5 * math.erfc(-x / math.sqrt(2))), "float", False, (None, None)),
    "special.expit": (_sigmoid, "float", True, (None, None)),
    "special.entr": (lambda a: np.where(a > 0, -a * np.log(np.where(a > 0, a, 1)),
                                        np.where(a == 0, 0, np.where(np.isnan(a), a, -np.inf))),
                     "float", False, (None, None)),
}
# ops with no kernel for some dtypes in PyTorch (NotImplementedError, or a RuntimeError for bool negation)
REFUSED = {"abs": ["bool"], "neg": ["bool"], "positive": ["bool"], "ceil": ["bool"], "floor": ["bool"],
           "fix": ["bool"], "trunc": ["bool"], "round": ["bool"], "frac": INTEGRAL}
# ops whose integer inputs hold no interesting value beyond themselves (rounding an integer is the integer)
_INT_VALUES = (0, -1, 1, -55, 55, -127, 127, -128, 128)
_LARGE_INT_VALUES = (-1113, 1113, -10701, 10701)
_FLOAT_VALUES = (0., -.001, .001, -.25, .25, -1., 1., -math.pi / 2, math.pi / 2, -math.pi + .00001,
                 math.pi - .00001, -math.pi, math.pi, -math.pi - .00001, math.pi + .00001)
_LARGE_FLOAT_VALUES = (-501, 501, -1001.2, 1001.2, -13437.7, 13437.7, -4988429.2, 4988429.2, -1e20, 1e20)
_SMALL_FLOAT_VALUES = (-1e-7, 1e-7, -1e-12, 1e-12, 1e-20, -1e-20, 1e-30, -1e-30)
_EXTREMAL_VALUES = (math.inf, -math.inf, math.nan)


def _op(T, name):
    f = T
    for part in name.split("."):
        f = getattr(f, part)
    return f


def _in_domain(name, vals):
    low, high = UNARY[name][3]
    return tuple(v for v in vals if (low is None or v > low) and (high is None or v < high))


def _array(vals, dtype):
    """vals in dtype (integers: those that fit it; complex: every pair of them)."""
    if dtype == "bool":
        return np.array([True, False, True, True])
    if dtype in INTEGRAL:
        info = np.iinfo(dtype)
        return np.array([v for v in vals if info.min <= v <= info.max], dtype=dtype)
    if dtype in COMPLEX:
        return np.array([complex(a, b) for a in vals for b in vals], dtype=dtype)
    with np.errstate(over="ignore"):
        return np.array(vals, dtype=dtype)


def _result_dtype(name, dtype):
    kind = UNARY[name][1]
    if kind == "bool":
        return "bool"
    if name == "abs" and dtype in COMPLEX:
        return {"complex64": "float32", "complex128": "float64"}[dtype]
    if kind == "same":
        return "int64" if name == "square" and dtype == "bool" else dtype
    return "float32" if dtype in INTEGRAL else dtype


def _tolerance(dtype):
    return {"float16": (1.2e-3, 1e-3), "float32": (1.3e-6, 1e-5), "complex64": (1.3e-6, 1e-5)}.get(dtype, (1e-7, 1e-7))


def _check_reference(T, name, a):
    """op(tensor(a)) against the reference of a in float64 (complex128), in the result's dtype, NaN equal NaN."""
    dtype = str(a.dtype)
    out = _op(T, name)(T.tensor(a))
    expected_dtype = _result_dtype(name, dtype)
    assert dtype_name(out) == expected_dtype
    wide = a.astype(np.complex128 if dtype in COMPLEX else np.float64)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        expected = np.asarray(UNARY[name][0](wide))
        expected = expected.astype(expected_dtype)
    got = values(out)
    if expected_dtype in ("bool",) + tuple(INTEGRAL):
        np.testing.assert_array_equal(got, expected)
        return
    # integers computed in float32, where NumPy's references would compute in float16 or float64
    rtol, atol = _tolerance(expected_dtype)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)


def _supported(name, dtype):
    if dtype in REFUSED.get(name, ()):
        return False
    return dtype not in COMPLEX or UNARY[name][2]


def _cases(dtypes, names=None):
    """(op, dtype) for the ops of ``names`` (all of UNARY) that PyTorch computes in that dtype (the others'
    refusals are tested in test_unsupported_dtypes_are_refused and test_complex_inputs_are_refused...)."""
    return [(name, dtype) for name in sorted(names or UNARY) for dtype in dtypes if _supported(name, dtype)]


@pytest.mark.parametrize("name, dtype", _cases(ALL))
def test_reference_numerics_normal(T, name, dtype):
    vals = _INT_VALUES if dtype in INTEGRAL else _FLOAT_VALUES
    a = _array(_in_domain(name, vals), dtype)
    if dtype == "uint8":
        a = np.abs(a.astype(np.int64)).astype(dtype)
    if name in ("sigmoid", "special.expit") and dtype in COMPLEX:
        a = a[np.abs(1 + np.exp(-a.astype(np.complex128))) > 1e-2]  # (ill-conditioned beside its poles ±iπ)
    _check_reference(T, name, a)
    for empty_shape in ((0,), (0, 3, 3), (1, 0, 5)):
        out = _op(T, name)(T.zeros(empty_shape, dtype=getattr(T, dtype)))
        assert tuple(out.shape) == empty_shape and dtype_name(out) == _result_dtype(name, dtype)
    if a.size:
        _check_reference(T, name, a[:1].reshape(()))  # a 0-d tensor


# (PyTorch's OpInfos skip large complex values for these: they overflow differently in NumPy)
_LARGE_COMPLEX_DIFFER = {"tan", "tanh", "sinc", "sin", "cos", "sinh", "cosh", "exp", "exp2", "expm1", "sigmoid",
                         "special.expit", "acos", "asin", "acosh", "asinh", "atan", "atanh", "square", "reciprocal",
                         "rsqrt", "sqrt", "log", "log2", "log10", "log1p"}


@pytest.mark.parametrize("name, dtype", _cases(["int16", "int32", "int64"] + FLOATING)
                         + _cases(COMPLEX, [n for n in UNARY if n not in _LARGE_COMPLEX_DIFFER]))
def test_reference_numerics_large(T, name, dtype):
    vals = _LARGE_INT_VALUES if dtype in INTEGRAL else _LARGE_FLOAT_VALUES
    if dtype == "float16":
        vals = tuple(v for v in vals if abs(v) < 65504)
    if name in ("tan", "sinc", "sin", "cos") and dtype in ("float16", "float32"):
        vals = tuple(v for v in vals if abs(v) < 1e4)  # (PyTorch's reference test skips: NumPy differs past there)
    _check_reference(T, name, _array(_in_domain(name, vals), dtype))


@pytest.mark.parametrize("name, dtype", _cases(["uint8", "int8", "int16", "int32", "int64"] + FLOATING + COMPLEX))
def test_reference_numerics_small(T, name, dtype):
    vals = (0, 1, 2, -1, -2) if dtype in INTEGRAL else _SMALL_FLOAT_VALUES
    a = _array(_in_domain(name, vals), dtype)
    if dtype == "float16":
        a = a[np.abs(a.astype(np.float64)) > 6e-8]  # (beyond float16's smallest numbers only zeros are left)
    _check_reference(T, name, a)


@pytest.mark.parametrize("name, dtype", _cases(FLOATING))
def test_reference_numerics_extremal(T, name, dtype):
    a = _array(_EXTREMAL_VALUES + (0.0, -0.0, 1.0), dtype)
    _check_reference(T, name, a)


_SIGNED_ZERO = {"abs": 0.0, "neg": 0.0, "sin": -0.0, "tan": -0.0, "sinh": -0.0, "tanh": -0.0, "asin": -0.0,
                "atan": -0.0, "asinh": -0.0, "atanh": -0.0, "expm1": -0.0, "log1p": -0.0, "sqrt": -0.0,
                "erf": -0.0, "ceil": -0.0, "floor": -0.0, "trunc": -0.0, "round": -0.0, "sign": 0.0,
                "frac": 0.0, "deg2rad": -0.0, "rad2deg": -0.0, "erfinv": -0.0, "digamma": math.inf,
                "reciprocal": -math.inf, "rsqrt": -math.inf, "special.i1": 0.0, "special.i1e": 0.0,
                "special.erfcx": 1.0}


@pytest.mark.parametrize("name, dtype", [(name, dtype) for name in sorted(_SIGNED_ZERO) for dtype in FLOATING
                                         if (name, dtype) != ("special.erfcx", "float16")])  # (no such kernel)
def test_negative_zero(T, name, dtype):
    """What each op gives at -0.0 (its sign too, as PyTorch computes it: abs(-0.0) is +0.0, ψ(-0.0) is +inf)."""
    out = _op(T, name)(T.tensor([-0.0], dtype=getattr(T, dtype)))
    expected = _SIGNED_ZERO[name]
    got = values(out)[0]
    assert got == expected and math.copysign(1, got) == math.copysign(1, expected), f"{name}(-0.0) = {got}"


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("name", sorted(n for n in UNARY if UNARY[n][3] != (None, None)))
def test_float_domains(T, name, dtype):
    """Just outside the op's domain the result is NaN (at the boundary itself, its limit)."""
    low, high = UNARY[name][3]
    for epsilon in (1e-5, 1e-3, 1e-1, 1, 2, 10, 20, 50, 100):
        for bound, sign in ((low, -1), (high, 1)):
            if bound is None:
                continue
            outside = T.tensor(bound, dtype=getattr(T, dtype)) + sign * epsilon
            if outside.item() == bound:
                continue  # not representable in this dtype
            assert math.isnan(_op(T, name)(outside).item()), f"{name}({outside.item()})"


@pytest.mark.parametrize("name, dtype", _cases(ALL, [n for n in UNARY if "." not in n]))
def test_variant_consistency(T, name, dtype):
    """op(t) == t.op() == t.clone().op_() exactly; the in-place form refuses an input whose dtype cannot hold
    the result (an integer tensor's sqrt_())."""
    vals = _INT_VALUES if dtype in INTEGRAL else _FLOAT_VALUES
    a = _array(_in_domain(name, vals)[:6], dtype)
    if dtype == "uint8":
        a = np.abs(a.astype(np.int64)).astype(dtype)
    t = T.tensor(a)
    expected = _op(T, name)(t)
    np.testing.assert_array_equal(values(getattr(t, name)()), values(expected))
    inplace = getattr(t, name + "_", None)
    if inplace is None:
        return
    if name == "abs" and dtype in COMPLEX:
        raises(RuntimeError, "In-place abs is not supported for complex tensors", t.clone().abs_)
        return
    if not T.can_cast(expected.dtype, t.dtype):
        raises(RuntimeError, "can't be cast", getattr(t.clone(), name + "_"))
        return
    u = t.clone()
    assert getattr(u, name + "_")() is u
    np.testing.assert_array_equal(values(u), values(expected))


@pytest.mark.parametrize("name", ["sqrt", "exp", "sin", "log", "sigmoid", "reciprocal", "erf", "lgamma", "i0"])
def test_inplace_on_integers_refuses_the_float_result(T, name):
    t = T.tensor([1, 2, 3])
    raises(RuntimeError, "result type Float can't be cast to the desired output type Long",
           getattr(t, name + "_"))
    same_t = values(t)
    np.testing.assert_array_equal(same_t, [1, 2, 3])


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_dtypes_are_refused(T, name):
    for dtype in REFUSED[name]:
        t = T.tensor([1, 0]).to(getattr(T, dtype))
        with pytest.raises(RuntimeError):  # (NotImplementedError, "... not implemented for 'Bool'", is one)
            _op(T, name)(t)


@pytest.mark.parametrize("name", sorted(n for n in UNARY if not UNARY[n][2]))
def test_complex_inputs_are_refused_where_pytorch_has_no_kernel(T, name):
    t = T.tensor([1 + 1j, 0.5 - 2j])
    with pytest.raises(RuntimeError):
        _op(T, name)(t)


def _make(T, shape, dtype, name, rng):
    low, high = UNARY[name][3]
    low = -9 if low is None else low
    high = 9 if high is None else high
    if dtype == "bool":
        return T.tensor(rng.integers(0, 2, shape).astype(bool))
    if dtype in INTEGRAL:
        lo = max(math.ceil(low), 0 if dtype == "uint8" else -9)
        return T.tensor(rng.integers(lo, max(math.floor(high), lo + 1), shape).astype(dtype))
    a = rng.uniform(low, high, shape)
    if dtype in COMPLEX:
        a = a + 1j * rng.uniform(low, high, shape)
    return T.tensor(a.astype(dtype))


_LAYOUT_DTYPES = ["bool", "int64", "float32", "complex64"]


@pytest.mark.parametrize("name, dtype", _cases(_LAYOUT_DTYPES))
def test_contiguity_does_not_change_the_result(T, name, dtype):
    """every other element, a transpose, an expanded tensor, a strided copy and a batch all give the values
    the contiguous tensor gives (PyTorch's test_contig_vs_every_other, _vs_transposed, test_non_contig,
    _index, _expand, test_contig_size1 and test_batch_vs_slicing)."""
    rng = np.random.default_rng(7)
    op = _op(T, name)

    def same_values(a, b):  # (PyTorch's vectorised and scalar loops may differ in the last bit)
        np.testing.assert_allclose(values(a), values(b), rtol=1e-6, atol=1e-6)

    contig = _make(T, (40,), dtype, name, rng)
    same_values(op(contig)[::2], op(contig[::2]))
    square = _make(T, (7, 5), dtype, name, rng)
    same_values(op(square).T, op(square.T))
    strided = T.empty((7, 5, 2), dtype=square.dtype)[..., 0]
    strided.copy_(square)
    assert not strided.is_contiguous()
    same_values(op(square), op(strided))
    small = _make(T, (2, 2, 1, 2), dtype, name, rng)
    same_values(op(small[:, 1, ...]), op(small[:, 1, ...].contiguous()))
    row = _make(T, (1, 7), dtype, name, rng)
    expanded = op(row.clone().expand(3, -1, -1))
    for i in range(3):
        same_values(op(row), expanded[i])
    batch = _make(T, (6, 4), dtype, name, rng)
    same_values(op(batch), T.stack([op(s) for s in batch]))
    many_dims = _make(T, (2, 2, 3, 1, 4, 5, 3, 2, 1, 2, 3, 4), dtype, name, rng)[:1]
    same_values(op(many_dims), op(many_dims.clone()))
