"""What was left of PyTorch's test/test_binary_ufuncs.py and test/test_unary_ufuncs.py after
tests/test_ported_binary_ufuncs.py and tests/test_ported_unary_ufuncs*.py: add's alpha kinds, float_power's
exceptions, logical ops of mixed dtypes, bool comparisons, atan2's quadrants, xlogy/xlog1py at special values,
the rounding modes of division at non-finite values, and the dtypes of unary ops of integers and bools.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same

INF, NAN = math.inf, math.nan


def test_add_alpha_kinds(T):
    m1 = T.tensor([2 + 3j, 4 + 5j], dtype=T.complex64)
    m2 = T.tensor([4 + 5j, 2 + 3j], dtype=T.complex64)
    close(T.add(m1, m2, alpha=0.1), [2.4 + 3.5j, 4.2 + 5.3j])
    close(T.add(m1, m2, alpha=complex(0.1, 0.2)), [1.4 + 4.3j, 3.6 + 5.7j])
    same(T.add(m1, m2, alpha=2), [10 + 13j, 8 + 11j], "complex64")
    i8 = T.tensor([1], dtype=T.int8)
    for op in (T.add, T.sub):
        raises(RuntimeError, r"Boolean alpha only supported for Boolean results\.", op, i8, i8, alpha=True)
        raises(RuntimeError, "For integral input tensors, argument alpha must not be a floating point", op, i8, i8,
               alpha=1.0)
    raises(RuntimeError, "For non-complex input tensors, argument alpha must not be a complex number",
           T.add, T.tensor([3.0]), T.tensor([4.0]), alpha=complex(0.1, 0.2))
    raises(RuntimeError, "result type ComplexFloat can't be cast to the desired output type Double",
           T.add, T.tensor(4 + 4j), T.tensor(4 + 4j), out=T.tensor(4.0, dtype=T.float64))


def test_add_of_bools_with_an_int_alpha_stays_bool(T):
    """PyTorch casts alpha to the bool result: 0 is False and any other number True (the sum was int64)."""
    falses = T.zeros(2, 3, dtype=T.bool)
    same(T.add(falses, falses, alpha=0), np.zeros((2, 3), bool), "bool")
    a, b = T.tensor([True, False, False]), T.tensor([True, True, False])
    same(T.add(a, b, alpha=0), [True, False, False], "bool")
    same(T.add(a, b, alpha=2), [True, True, False], "bool")
    same(a.add(b, alpha=3), [True, True, False], "bool")
    same(a + b, [True, True, False], "bool")
    same(T.add(T.tensor(1, dtype=T.uint8), 1), 2, "uint8")


def test_float_power_exceptions(T):
    """float_power computes in float64 (complex128 where either is complex): out= and the in-place form must
    have that dtype."""
    for base, exponent, required in ((T.tensor([-2, -1, 0, 1, 2]), -0.25, "float64"),
                                     (T.tensor([-1j, 0j, 1j, 1 + 1j, -1 - 1.5j]), 2.0, "complex128")):
        for out_dtype in (T.long, T.float, T.double, T.cdouble):
            out = T.empty(1, dtype=out_dtype)
            if dtype_name(out_dtype) == required:
                T.float_power(base, exponent, out=out.resize_(0))
                assert out.shape == base.shape
            else:
                raises(RuntimeError, "operation's result requires dtype", T.float_power, base, exponent, out=out)
        raises(RuntimeError, "operation's result requires dtype", base.clone().float_power_, exponent)
    out = T.empty(2, dtype=T.double)
    T.float_power(T.tensor([2.0, 3.0]), 2, out=out)
    same(out, [4.0, 9.0], "float64")
    raises(RuntimeError, "has dtype Float but the operation's result requires dtype Double",
           T.float_power, T.tensor([2.0, 3.0]), 2, out=T.empty(2))
    base = T.tensor([1j, 2.0], dtype=T.cdouble)
    close(base.float_power_(2.0), [-1, 4])


@pytest.mark.parametrize("op, expected", [("logical_xor", [0, 0, 1, 1]), ("logical_and", [1, 0, 0, 0]),
                                          ("logical_or", [1, 0, 1, 1])])
@pytest.mark.parametrize("dtypes", [("int8", "int8"), ("float32", "float32"), ("int8", "float64"),
                                    ("bool", "int64"), ("float16", "uint8")])
def test_logical(T, op, expected, dtypes):
    a = T.tensor([10, 0, 1, 0], dtype=getattr(T, dtypes[0]))
    b = T.tensor([1, 0, 0, 10], dtype=getattr(T, dtypes[1]))
    same(getattr(a, op)(b), np.array(expected, bool), "bool")
    out = T.empty(0, dtype=T.bool)
    getattr(T, op)(a, b, out=out)
    same(out, np.array(expected, bool), "bool")
    # (the old test refused in-place ops of two dtypes; PyTorch 2 writes the result in the input's dtype)
    getattr(a, op + "_")(b)
    same(a, np.array(expected).astype(dtypes[0]), dtypes[0])


def test_bool_tensor_comparison_ops(T):
    a = T.tensor([True, False, True, False, True, False])
    b = T.tensor([True, False, True, True, True, True])
    same(a == b, [1, 1, 1, 0, 1, 0])
    same(a != b, [0, 0, 0, 1, 0, 1])
    same(a < b, [0, 0, 0, 1, 0, 1])
    same(a > b, [0, 0, 0, 0, 0, 0])
    same(a >= b, [1, 1, 1, 0, 1, 0])
    same(a <= b, [1, 1, 1, 1, 1, 1], "bool")
    same(a > False, [1, 0, 1, 0, 1, 0])
    same(a == T.tensor(True), [1, 0, 1, 0, 1, 0])
    same(a == T.tensor(0, dtype=T.bool), [0, 1, 0, 1, 0, 1])
    assert not a.equal(b)
    x = T.tensor([True, False, True, False])
    same(x.lt(True), [False, True, False, True])
    same(x.le(True), [True] * 4)
    same(x.ge(True), [True, False, True, False])
    same(x.gt(True), [False] * 4)
    same(x.eq(True), [True, False, True, False])
    same(x.ne(True), [False, True, False, True])


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"])
def test_comparisons_with_a_number_and_a_one_element_tensor(T, dtype):
    x = T.tensor([1, 2, 3, 4], dtype=getattr(T, dtype))
    b = T.tensor([2], dtype=getattr(T, dtype))
    for other in (2, b):
        same(x.lt(other), [True, False, False, False], "bool")
        same(x.le(other), [True, True, False, False])
        same(x.ge(other), [False, True, True, True])
        same(x.gt(other), [False, False, True, True])
        same(x.eq(other), [False, True, False, False])
        same(x.ne(other), [True, False, True, True])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_atan2_edgecases(T, dtype):
    pi = math.pi
    cases = [(0, 0, 0), (0, 1, pi / 2), (0, -1, -pi / 2), (-1, 0, pi), (1, 0, 0), (-1, -1, -3 * pi / 4),
             (1, 1, pi / 4), (1, -1, -pi / 4), (-1, 1, 3 * pi / 4)]
    x = T.tensor([c[0] for c in cases], dtype=getattr(T, dtype))
    y = T.tensor([c[1] for c in cases], dtype=getattr(T, dtype))
    close(T.atan2(y, x), [c[2] for c in cases], rtol=0, atol=1e-6)
    signed = T.atan2(T.tensor([0.0, -0.0, 0.0, -0.0, INF, -INF]), T.tensor([0.0, 0.0, -0.0, -0.0, INF, INF]))
    same(signed, np.arctan2([0.0, -0.0, 0.0, -0.0, INF, -INF], [0.0, 0.0, -0.0, -0.0, INF, INF]).astype("float32"))
    assert math.copysign(1, T.atan2(T.tensor(-0.0), T.tensor(1.0)).item()) == -1
    rng = np.random.default_rng(3)
    a, b = rng.random((5, 5)), rng.random((5, 5))
    close(T.tensor(a).atan2(T.tensor(b)), np.arctan2(a, b), rtol=1e-12, atol=0)


def test_remainder_overflow(T):
    x, q = T.tensor(23500), 392486996410368
    same(x % q, 23500)
    same(-x % q, q - 23500)
    same(x % -q, 23500 - q)
    same(-x % -q, -23500, "int64")


def test_rpow(T):
    rng = np.random.default_rng(5)
    m = rng.standard_normal((10, 10)).astype(np.float32)
    close(T.pow(2, T.tensor(m)), 2.0 ** m, rtol=1e-6)
    close(2 ** T.tensor(m), 2.0 ** m, rtol=1e-6)
    same(T.pow(2, T.tensor(0.5)), np.float32(2 ** 0.5), "float32")
    same(2 ** T.tensor([0, 3]), [1, 8], "int64")
    same(2.5 ** T.tensor([1, 2]), [2.5, 6.25], "float32")


def test_xlogy_xlog1py_at_special_values(T):
    t = [-1.0, 0.0, 1.0, 2.0, INF, -INF, NAN]
    # 0 · log(y) is 0 for every y but NaN (log y of a negative y included); the same for 0 · log1p(y)
    expected = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, NAN]
    for zeros in (0, T.zeros(7, dtype=T.int32), T.zeros(7)):
        same(T.xlogy(zeros, T.tensor(t)), expected, "float32")
        same(T.special.xlog1py(zeros, T.tensor(t)), expected, "float32")
    same(T.xlogy(T.tensor([1.0, 2.0]), T.tensor([NAN, 0.0])), [NAN, -INF])
    close(T.special.xlog1py(T.tensor([1.0, 2.0]), T.tensor([-1.0, 0.5])), [-INF, 2 * math.log1p(0.5)])
    raises(RuntimeError, "can't be cast to the desired output type", T.tensor([1, 2]).xlogy_, T.tensor([1.0, 2.0]))
    x = T.tensor([0.5, 3.0])
    expected = x.clone().xlogy_(x)
    out = T.empty(2)
    T.xlogy(x, x, out=out)
    same(out, values_of(expected))
    close(T.xlogy(3.14, T.tensor([1.0, 2.0])), [0.0, 3.14 * math.log(2)])
    same(T.xlogy(T.tensor([1, 2]), 3), T.tensor([math.log(3), 2 * math.log(3)]).numpy(), "float32")


def values_of(t):
    return t.detach().numpy().copy()


def test_division_rounding_modes_at_non_finite_values(T):
    a = T.tensor([INF, -INF, NAN, 1.0, -1.0, 0.0, 5.0, -5.0])
    b = T.tensor([2.0, 2.0, 2.0, 0.0, 0.0, 0.0, INF, INF])
    same(T.div(a, b, rounding_mode="trunc"), [INF, -INF, NAN, INF, -INF, NAN, 0.0, -0.0])
    # (floor's kernel divides a - fmod(a, b) by b: ±inf // 2 is NaN there, where trunc keeps ±inf)
    same(T.div(a, b, rounding_mode="floor"), [NAN, NAN, NAN, INF, -INF, NAN, 0.0, -1.0])
    neg_zero = T.div(T.tensor([-0.0, 0.0]), T.tensor([3.0, -3.0]), rounding_mode="floor")
    assert [math.copysign(1, v) for v in neg_zero.tolist()] == [-1, -1]
    same(T.div(T.tensor([-7, 7]), T.tensor([2, -2]), rounding_mode="trunc"), [-3, -3], "int64")
    same(T.div(T.tensor([-7, 7]), T.tensor([2, -2]), rounding_mode="floor"), [-4, -4], "int64")
    raises(RuntimeError, "expected rounding_mode to be one of None, .trunc., or .floor.",
           T.div, T.tensor([1.0]), 2, rounding_mode="round")
    same(T.div(T.tensor([1, 2]), 2, rounding_mode="floor", out=T.empty(2, dtype=T.int64)), [0, 1])
    raises(RuntimeError, "result type Float can't be cast to the desired output type Long",
           T.div, T.tensor([1, 2]), 2, out=T.empty(2, dtype=T.int64))


def test_integer_minimum_divided_by_minus_one_wraps(T):
    """INT_MIN // -1 overflows: PyTorch's CPU kernels wrap to INT_MIN (and the remainder is 0), as C's two's
    complement arithmetic gives; no error."""
    i8 = T.tensor([-128], dtype=T.int8)
    minus_one = T.tensor([-1], dtype=T.int8)
    same(T.div(i8, minus_one, rounding_mode="floor"), [-128], "int8")
    same(T.remainder(i8, minus_one), [0], "int8")
    same(T.fmod(T.tensor([-2 ** 63]), T.tensor([-1])), [0], "int64")


@pytest.mark.parametrize("shift", [9, 70])
def test_shifts_by_the_width_or_more(T, shift):
    same(T.tensor([-8], dtype=T.int8) >> shift, [-1], "int8")
    same(T.tensor([8], dtype=T.int8) << shift, [0], "int8")
    same(T.tensor([200], dtype=T.uint8) >> shift, [0], "uint8")
    same(T.tensor([16, -16]) >> 70, [0, -1], "int64")
    same(1 << T.tensor([3, 4]), [8, 16], "int64")


def test_lerp_with_complex_weights_and_out(T):
    start, end = T.tensor([1 + 1j, 0.5j]), T.tensor([2 - 1j, 3.0 + 0j])
    for weight in (complex(0, 1), complex(0.4, 1.2), 0.25):
        expected = np.array([1 + 1j, 0.5j]) + weight * (np.array([2 - 1j, 3.0]) - np.array([1 + 1j, 0.5j]))
        close(T.lerp(start, end, weight), expected)
        close(start.lerp(end, weight), expected)
    out = T.tensor(1.0)
    with pytest.warns(UserWarning, match="resized"):
        T.lerp(T.tensor([1.0, 2.0]), T.tensor([3.0, 4.0]), 0.5, out=out)
    same(out, [2.0, 3.0], "float32")
    raises(RuntimeError, "expected dtype float for `end` but got dtype double",
           T.lerp, T.tensor([1.0]), T.tensor([2.0], dtype=T.double), 0.5)


def test_heaviside_errors(T):
    raises(RuntimeError, "heaviside is not yet implemented for tensors with different dtypes",
           T.heaviside, T.tensor([1, 0, -1]), T.tensor([0.5, 0.5, 0.5]))
    raises(RuntimeError, "heaviside is not yet implemented for complex tensors",
           T.heaviside, T.tensor([1j]), T.tensor([1.0]))
    same(T.heaviside(T.tensor([-9, 5, 0, 6]), T.tensor(7)), [0, 1, 7, 1], "int64")
    same(T.heaviside(T.tensor([NAN, 0.0]), T.tensor([0.5, NAN])), [0.0, NAN])  # (NaN > 0 is False)


def test_ldexp_at_non_finite_mantissas(T):
    exponents = T.tensor([3, 4, 5], dtype=T.int32)
    same(T.ldexp(T.tensor([INF, -INF, NAN]), exponents), [INF, -INF, NAN], "float32")
    same(T.ldexp(T.tensor([1, 2]), T.tensor([3, 4])), [8.0, 32.0], "float32")
    m = T.tensor([1.0, -2.0])
    m.ldexp_(exponents[:2])
    same(m, [8.0, -32.0], "float32")


@pytest.mark.parametrize("name, numbers, expected_dtype", [
    ("sqrt", [4, 9], "float32"), ("exp2", [3, -1], "float32"), ("sigmoid", [0, 1], "float32"),
    ("erf", [0, 1], "float32"), ("reciprocal", [2, 0], "float32"), ("deg2rad", [180, 90], "float32"),
    ("trunc", [1, -2], "int64"), ("sgn", [-3, 0], "int64"),
    ("angle", [-1, 0], "float32"), ("signbit", [-1, 0], "bool"), ("isnan", [1, 2], "bool")])
def test_unary_ops_of_integers(T, name, numbers, expected_dtype):
    result = getattr(T, name)(T.tensor(numbers))
    assert dtype_name(result) == expected_dtype
    reference = {"sqrt": np.sqrt, "exp2": np.exp2, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
                 "erf": lambda x: np.array([math.erf(v) for v in x]), "reciprocal": lambda x: 1 / x,
                 "deg2rad": np.deg2rad, "trunc": lambda x: x, "sgn": np.sign,
                 "angle": np.angle, "signbit": np.signbit, "isnan": np.isnan}[name]
    with np.errstate(divide="ignore"):
        close(result, reference(np.array(numbers, dtype=np.float64)))


def test_unary_ops_of_bools(T):
    raises(RuntimeError, "Negation, the `-` operator, on a bool tensor is not supported", T.neg, T.tensor([True]))
    raises(RuntimeError, "Boolean inputs not supported for relu", T.relu, T.tensor([True]))
    for name in ("abs", "frac"):
        raises(NotImplementedError, f"{name}_cpu\" not implemented for 'Bool'", getattr(T, name), T.tensor([True]))
    raises(NotImplementedError, "frac_cpu\" not implemented for 'Long'", T.frac, T.tensor([1]))
    same(T.sign(T.tensor([True, False])), [True, False], "bool")
    same(T.square(T.tensor([True])), [1], "int64")
    same(T.rad2deg(T.tensor([True])), [np.float32(180 / math.pi)], "float32")
    same(T.isinf(T.tensor([True])), [False], "bool")
    same(T.angle(T.tensor([True])), [0.0], "float32")


def test_unary_in_place_of_integers_is_refused(T):
    for name in ("exp_", "sqrt_", "sin_", "sigmoid_"):
        raises(RuntimeError, "result type Float can't be cast to the desired output type Long",
               getattr(T.tensor([4]), name))
    raises(RuntimeError, "result type Float can't be cast to the desired output type Long",
           T.acos, T.tensor([1, 0]), out=T.empty(2, dtype=T.int64))
    out = T.empty(1, dtype=T.float64)
    T.exp(T.tensor([0]), out=out)
    same(out, [1.0], "float64")


def test_nan_to_num_of_other_dtypes(T):
    same(T.nan_to_num(T.tensor([1, 2]), nan=3.0), [1, 2], "int64")
    same(T.nan_to_num(T.tensor([INF, -INF], dtype=T.float16)), np.array([65504, -65504], np.float16), "float16")
    same(T.nan_to_num(T.tensor([INF]), posinf=1e300), [INF], "float32")
    same(T.nan_to_num(T.tensor([complex(NAN, INF)])), [complex(0, np.finfo(np.float32).max)], "complex64")
