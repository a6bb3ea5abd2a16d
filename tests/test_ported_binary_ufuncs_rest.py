"""What was left of PyTorch's test/test_binary_ufuncs.py after tests/test_ported_binary_ufuncs.py and
tests/test_ported_ufuncs_rest.py: the OpInfo type-promotion and out= dtype rules of every binary function, layouts
(every other element, transposed, expanded, batch by batch), floor division and complex division at the edges of
the range, pow of negative and fractional exponents and its in-place casts, maximum/minimum of mixed dtypes and
their subgradients, xlogy/xlog1py and zeta over dtypes, unknown operands left to Python, and igamma far out.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values, xfail_ours

INF, NAN = math.inf, math.nan

# (name, what an int16 op int32 gives: "int" for int32, "float" for the default float, "bool")
PROMOTING = [("add", "int"), ("sub", "int"), ("mul", "int"), ("div", "float"), ("true_divide", "float"),
             ("floor_divide", "int"), ("remainder", "int"), ("fmod", "int"), ("pow", "int"), ("atan2", "float"),
             ("maximum", "int"), ("minimum", "int"), ("fmax", "int"), ("fmin", "int"), ("copysign", "float"),
             ("xlogy", "float"), ("eq", "bool"), ("ne", "bool"), ("lt", "bool"), ("le", "bool"), ("gt", "bool"),
             ("ge", "bool"), ("logical_and", "bool"), ("logical_or", "bool"), ("logical_xor", "bool"),
             ("bitwise_and", "int"), ("bitwise_or", "int"), ("bitwise_xor", "int"), ("gcd", "int"), ("lcm", "int")]

# (the functions PyTorch gives no Python number)
TENSORS_ONLY = {"atan2", "maximum", "minimum", "fmax", "fmin", "logical_and", "logical_or", "logical_xor"}


def _ints(T, dtype):
    return T.tensor([1, 2, 3, 4, 5], dtype=getattr(T, dtype))


@pytest.mark.parametrize("name, kind", PROMOTING)
def test_type_promotion_of_integer_operands(T, name, kind):
    op = getattr(T, name)
    i16, i32, i64 = _ints(T, "int16"), _ints(T, "int32"), _ints(T, "int64")
    expected = {"int": ("int32", "int64"), "float": ("float32", "float32"), "bool": ("bool", "bool")}[kind]
    assert dtype_name(op(i16, i32)) == expected[0]
    assert dtype_name(op(i32, i64)) == expected[1]
    if kind == "float":  # an integer result of a promoting op is the default float's: no integer out takes it
        raises(RuntimeError, "can't be cast", op, i16, i32, out=T.empty(5, dtype=T.int64))
    else:
        assert dtype_name(op(i16, i32, out=T.empty(5, dtype=T.int64))) == "int64"
        assert dtype_name(op(i32, i64, out=T.empty(5, dtype=T.int16))) == "int16"
    if kind != "bool":  # neither integers nor floats go into a bool out
        raises(RuntimeError, "can't be cast", op, i16, i32, out=T.empty(5, dtype=T.bool))
    for out_dtype in ("float16", "float32", "complex64"):
        out = op(i16, i32, out=T.empty(5, dtype=getattr(T, out_dtype)))
        assert dtype_name(out) == out_dtype
        np.testing.assert_allclose(values(out), values(op(i16, i32)).astype(out_dtype), rtol=1e-3)


@pytest.mark.parametrize("name, kind", [p for p in PROMOTING if not p[0].startswith(("bitwise", "gcd", "lcm"))])
def test_type_promotion_of_floating_operands(T, name, kind):
    op = getattr(T, name)
    f32, f64 = T.tensor([1.5, 2.0, 3.0]), T.tensor([1.25, 2.5, 0.5], dtype=T.float64)
    assert dtype_name(op(f32, f64)) == ("bool" if kind == "bool" else "float64")
    assert dtype_name(op(T.tensor([1, 2, 3]), f32)) == ("bool" if kind == "bool" else "float32")
    if name not in TENSORS_ONLY:
        assert dtype_name(op(T.tensor([1, 2, 3]), 1.0)) == ("bool" if kind == "bool" else "float32")
    # a 0-d tensor sets the dtype only over a lower category
    assert dtype_name(op(T.tensor([1, 2, 3]), T.tensor(2.0, dtype=T.float64))) == ("bool" if kind == "bool" else
                                                                                   "float64")
    assert dtype_name(op(f32, T.tensor(2.0, dtype=T.float64))) == ("bool" if kind == "bool" else "float32")
    for out_dtype in ("float16", "float32", "complex64"):
        assert dtype_name(op(f32, f64, out=T.empty(3, dtype=getattr(T, out_dtype)))) == out_dtype
    if kind == "bool":
        same(op(f32, f64, out=T.empty(3, dtype=T.int64)), values(op(f32, f64)).astype(np.int64), "int64")
    else:
        raises(RuntimeError, "result type Double can't be cast to the desired output type Long", op, f32, f64,
               out=T.empty(3, dtype=T.int64))


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow", "eq", "ne", "logical_and", "logical_xor"])
def test_type_promotion_of_complex_operands(T, name):
    op = getattr(T, name)
    c64, c128 = T.tensor([1 + 1j, 2 - 1j]), T.tensor([0.5 + 2j, 1 + 0j], dtype=T.complex128)
    boolean = name in ("eq", "ne", "logical_and", "logical_xor")
    assert dtype_name(op(c64, c128)) == ("bool" if boolean else "complex128")
    assert dtype_name(op(T.tensor([1.0, 2.0], dtype=T.float64), c64)) == ("bool" if boolean else "complex128")
    if name not in TENSORS_ONLY:
        assert dtype_name(op(T.tensor([1.0, 2.0]), 1 + 1j)) == ("bool" if boolean else "complex64")
    assert dtype_name(op(T.tensor([1.0, 2.0]), T.tensor(1j, dtype=T.complex128))) == ("bool" if boolean else
                                                                                      "complex64")
    assert dtype_name(op(c64, c128, out=T.empty(2, dtype=T.complex64))) == "complex64"
    if not boolean:
        for out_dtype, name_ in (("float64", "Double"), ("int64", "Long")):
            raises(RuntimeError, f"result type ComplexDouble can't be cast to the desired output type {name_}", op,
                   c64, c128, out=T.empty(2, dtype=getattr(T, out_dtype)))


@pytest.mark.parametrize("name", ["add", "mul", "sub", "atan2", "remainder", "fmod", "pow", "maximum", "copysign",
                                  "hypot", "nextafter", "logaddexp", "xlogy", "eq", "lt", "logical_xor"])
def test_layouts_do_not_change_values(T, name):
    """Every other element, a transpose, an expanded tensor and row-by-row give the contiguous result."""
    op = getattr(T, name)
    rng = np.random.default_rng(3)
    a, b = (T.tensor(rng.uniform(0.5, 3.0, (6, 5)).astype(np.float32)) for _ in range(2))
    whole = values(op(a, b)).astype(np.float64)  # (a vectorised kernel may round the last bit otherwise)
    close(op(a.reshape(-1)[::2], b.reshape(-1)[::2]).double(), whole.reshape(-1)[::2], rtol=1e-6, atol=0)
    close(op(a.t(), b.t()).double(), whole.T, rtol=1e-6, atol=0)
    close(op(a[:1].expand(3, 5), b[:1].expand(3, 5)).double(), np.broadcast_to(whole[:1], (3, 5)), rtol=1e-6, atol=0)
    close(T.stack([op(a[i], b[i]) for i in range(6)]).double(), whole, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["add", "mul", "atan2", "hypot", "maximum", "fmod", "copysign", "eq", "logaddexp"])
def test_shapes_that_do_not_broadcast_are_refused(T, name):
    for left, right in (((2,), (3,)), ((3, 1), (2, 1)), ((1, 3, 2), (3,)), ((3, 1, 2), (2, 1, 2))):
        raises(RuntimeError, "", getattr(T, name), T.ones(left), T.ones(right))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_floor_division_of_extremal_values(T, dtype):
    big = float(np.finfo(dtype).max) * 0.7
    for divisor, expected in ((0.5, INF), (-0.5, -INF), (0.0, INF)):
        for shape in ((), (32,)):
            a, b = T.full(shape, big, dtype=getattr(T, dtype)), T.full(shape, divisor, dtype=getattr(T, dtype))
            same(T.div(a, b, rounding_mode="floor"), np.full(shape, expected, dtype), dtype)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_division_neither_underflows_nor_overflows(T, dtype):
    info = np.finfo(dtype)
    low, high, tiny = float(info.min) / 2, float(info.max) / 2, float(info.tiny)
    numerator = T.tensor([complex(low, low), complex(high, high), complex(tiny, tiny), complex(tiny, 0), 0j],
                         dtype=getattr(T, dtype))
    denominator = T.tensor([complex(low, low), complex(high, high), complex(tiny, tiny), complex(0, tiny),
                            complex(tiny, tiny)], dtype=getattr(T, dtype))
    close(numerator / denominator, [1, 1, 1, -1j, 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_division_by_zero_with_rounding(T, dtype):
    a = np.array([1.0, -1.0, 0, 0.1, -0.1, np.pi, -np.pi, INF, -INF, NAN], dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.divide(a, dtype_zero := np.zeros((), dtype))
    for mode in (None, "floor"):
        same(T.divide(T.tensor(a), 0, rounding_mode=mode), expected, dtype)
        same(T.divide(T.tensor(a), T.tensor(np.zeros(10, dtype)), rounding_mode=mode), expected, dtype)
    assert dtype_zero == 0


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64", "float32", "float64"])
def test_rounding_modes_against_numpy(T, dtype):
    """Random numbers over the whole range of the dtype (the extremes included), each rounding mode as NumPy's."""
    rng = np.random.default_rng(11)
    info = np.finfo(dtype) if dtype.startswith("float") else np.iinfo(dtype)
    if dtype.startswith("float"):
        a, b = (rng.uniform(-1, 1, 256) * float(info.max) for _ in range(2))
    else:
        a, b = (rng.integers(info.min, info.max, 256, endpoint=True) for _ in range(2))
    a, b = a.astype(dtype), b.astype(dtype)
    a[:2] = info.min, info.max
    b[b == 0] = 1
    if dtype.startswith("int"):
        b[(a == info.min) & (b == -1)] = 1  # (the one quotient that overflows: tested in test_ported_ufuncs_rest)
    with np.errstate(all="ignore"):
        floor, trunc = np.floor_divide(a, b), np.trunc(np.true_divide(a, b)).astype(dtype)
        true = np.true_divide(a, b)
    tensors = T.tensor(a), T.tensor(b)
    same(T.divide(*tensors, rounding_mode="floor"), floor, dtype)
    same(T.divide(*tensors, rounding_mode="trunc"), trunc, dtype)
    same(T.divide(tensors[0][::2], tensors[1][::2], rounding_mode="floor"), floor[::2])
    close(T.divide(*tensors).double(), true.astype(np.float64) if dtype == "float64" else true.astype(np.float32),
          rtol=1e-6, atol=0)


def test_pow_of_integers_by_negative_integers_is_refused(T):
    ints = T.tensor([-2**31, -3, -2, -1, 0, 1, 2, 3, 2**31 - 1], dtype=T.int32)
    for exponent in (-2**31, -3, -2, -1):
        for attempt in (lambda e: ints.pow(e), lambda e: ints.clone().pow_(e), lambda e: T.pow(ints, e),
                        lambda e: T.pow(ints, e, out=T.empty_like(ints))):
            raises(RuntimeError, r"Integers to negative integer powers are not allowed\.", attempt, exponent)


def test_long_tensor_to_float_powers(T):
    longs = T.tensor([0, 1, 23, 4567])
    for exponent in (0.0, 1 / 3, 1 / 2, 1.0, 3 / 2, 2.0):
        expected = np.power(np.array([0, 1, 23, 4567], np.float32), np.float32(exponent))
        close(longs.pow(exponent), expected, rtol=1e-6)
        assert dtype_name(longs.pow(exponent)) == "float32"
        raises(RuntimeError, "result type Float can't be cast to the desired output type Long", longs.clone().pow_,
               exponent)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_number_to_a_tensor_power(T, dtype):
    exponents = np.array([2.0, -3 / 2, -1.0, -1 / 2, -1 / 3, 0.0, 1 / 3, 1 / 2, 1.0, 3 / 2, 2.0], dtype)
    for base in (2.0, -3 / 2, -1.0, -1 / 3, 0.0, 1 / 3, 1.5):
        with np.errstate(all="ignore"):
            expected = np.power(np.asarray(base, dtype), exponents)
        result = T.pow(base, T.tensor(exponents))
        assert dtype_name(result) == dtype
        close(result, expected, rtol=1e-6, atol=0)


def test_complex_number_to_a_tensor_power(T):
    exponents = np.array([0.0, 1, -1, 2, -2, 0.5, -1.5])
    for base in (0.5j, 1 + 1j, -1.5j, 2.2 - 1.6j, 1 + 0j):
        result = T.pow(base, T.tensor(exponents, dtype=T.float32))
        assert dtype_name(result) == "complex64"
        close(result, np.power(complex(base), exponents), rtol=1e-5, atol=1e-6)
        assert dtype_name(T.pow(base, T.tensor([0, 1, 2]))) == "complex64"


def test_pow_of_a_number_computes_in_the_tensors_dtype(T):
    """2 ** uint8(17) wraps to 0 in uint8 before it is written into an int64 out; in int64 it is 131072."""
    for exponent in (17, [17]):
        in_uint8 = T.pow(2, T.tensor(exponent, dtype=T.uint8), out=T.tensor(0, dtype=T.int64))
        in_int64 = T.pow(2, T.tensor(exponent, dtype=T.int64), out=T.tensor(0, dtype=T.int64))
        same(in_uint8, np.zeros(np.shape(exponent), np.int64), "int64")
        same(in_int64, np.full(np.shape(exponent), 131072), "int64")


def test_in_place_division_and_products_keep_the_dtype(T):
    long = T.tensor(3)
    for attempt in (lambda t: t.__itruediv__(2), lambda t: t.__itruediv__(T.tensor(2)),
                    lambda t: t.floor_divide_(T.tensor(2.0)), lambda t: t.__ifloordiv__(T.tensor(2.0))):
        raises(RuntimeError, "result type Float can't be cast to the desired output type Long", attempt, long.clone())
    same(long.clone().floor_divide_(T.tensor(2)), 1, "int64")
    x, y = T.tensor(1.5), T.tensor(3, dtype=T.int32)
    same(x * y, 4.5, "float32")
    same(y * x, 4.5, "float32")
    raises(RuntimeError, "result type Float can't be cast to the desired output type Int", y.__imul__, x)
    x *= y
    same(x, 4.5, "float32")


@pytest.mark.parametrize("name", ["fmod", "remainder"])
def test_fmod_and_remainder_in_place_of_integers_by_floats(T, name):
    x = T.tensor([[3, -4], [5, 7]], dtype=T.int16)
    for divisor in (2.3, T.tensor([[2.5, -1.5], [1.0, 3.0]])):
        raises(RuntimeError, "result type Float can't be cast to the desired output type Short",
               getattr(x.clone(), name + "_"), divisor)
        out = getattr(T, name)(x, divisor, out=T.empty(0))
        reference = np.fmod if name == "fmod" else np.remainder
        close(out, reference(values(x).astype(np.float32), np.float32(values(divisor))), rtol=1e-6, atol=1e-6)
    same(getattr(x.clone(), name + "_")(3), getattr(np, "fmod" if name == "fmod" else "remainder")(values(x), 3),
         "int16")


DTYPES_NO_COMPLEX = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


@pytest.mark.parametrize("first", DTYPES_NO_COMPLEX)
def test_maximum_minimum_promote_and_match_numpy(T, first):
    for second in DTYPES_NO_COMPLEX:
        a, b = T.tensor([0, 1, 1], dtype=getattr(T, first)), T.tensor([1, 0, 1], dtype=getattr(T, second))
        for op, reference in ((T.maximum, np.maximum), (T.max, np.maximum), (T.fmax, np.fmax),
                              (T.minimum, np.minimum), (T.min, np.minimum), (T.fmin, np.fmin)):
            result = op(a, b)
            assert result.dtype == T.result_type(a, b)
            same(result.double(), reference(values(a), values(b)).astype(np.float64))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_maximum_minimum_of_nan_and_inf_into_out(T, dtype):
    a = np.array([INF, -INF, NAN, INF, NAN, NAN, 1, NAN], dtype)
    b = np.array([-INF, INF, INF, NAN, NAN, 0, NAN, -5], dtype)
    for op, reference in ((T.maximum, np.maximum), (T.minimum, np.minimum), (T.fmax, np.fmax), (T.fmin, np.fmin)):
        out = T.empty(8, dtype=getattr(T, dtype))
        op(T.tensor(a), T.tensor(b), out=out)
        same(out, reference(a, b), dtype)


@pytest.mark.parametrize("name", ["maximum", "minimum", "max", "min", "fmax", "fmin"])
def test_maximum_minimum_of_complex_are_not_implemented(T, name):
    for other in ("float32", "int64", "complex128"):
        for a, b in ((T.ones(1, dtype=T.complex64), T.ones(1, dtype=getattr(T, other))),
                     (T.ones(1, dtype=getattr(T, other)), T.ones(1, dtype=T.complex64))):
            raises(RuntimeError, ".+not implemented for.+", getattr(T, name), a, b)


def test_maximum_minimum_and_copysign_subgradients(T):
    for op, expected_a, expected_b in ((T.maximum, [0, 0.5, 1], [1, 0.5, 0]), (T.minimum, [1, 0.5, 0], [0, 0.5, 1])):
        a = T.tensor([0.0, 1.0, 2.0], requires_grad=True)
        b = T.tensor([1.0, 1.0, 1.0], dtype=T.float64, requires_grad=True)
        op(a, b).sum().backward()
        same(a.grad, expected_a, "float32")
        same(b.grad, expected_b, "float64")
    for x, y, expected in (([0.0] * 3, [-1.0, 0.0, 1.0], [0, 0, 0]), ([-0.0] * 3, [-1.0, 0.0, 1.0], [0, 0, 0]),
                           ([-1.0, 0.0, 1.0], [0.0] * 3, [-1, 0, 1]), ([-1.0, 0.0, 1.0], [-0.0] * 3, [1, 0, -1])):
        a, b = T.tensor(x, requires_grad=True), T.tensor(y, requires_grad=True)
        T.copysign(a, b).sum().backward()
        assert a.grad.tolist() == expected and b.grad.tolist() == [0.0] * 3


@pytest.mark.parametrize("name", ["lt", "eq", "ne", "logical_and", "logical_xor"])
def test_comparisons_into_a_complex_out(T, name):
    a, b = np.array([1, 2]), np.array([[2, 1], [1, 1]])
    out = T.zeros(0, dtype=T.complex128)
    getattr(T, name)(T.tensor(a), T.tensor(b), out=out)
    same(out, getattr(np, {"lt": "less", "eq": "equal", "ne": "not_equal"}.get(name, name))(a, b).astype(complex),
         "complex128")


def _xlogy(x, y):
    with np.errstate(all="ignore"):
        return np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log(y))


@pytest.mark.parametrize("x_dtype", ["bool", "uint8", "int32", "float16", "float32"])
def test_xlogy_over_dtypes(T, x_dtype):
    y_values = np.array([1, 2, 0, 0, 5])
    x = T.tensor(np.array([0, 1, 1, 0, 1]).astype(x_dtype))
    for y_dtype in ("bool", "int64", "float32"):
        y = T.tensor(y_values.astype(y_dtype))
        expected = _xlogy(values(x).astype(np.float64), values(y).astype(np.float64))
        result = T.xlogy(x, y)
        assert dtype_name(result) == ("float16" if x_dtype == y_dtype == "float16" else
                                      "float16" if x_dtype == "float16" and y_dtype in ("bool", "int64") else
                                      "float32")
        close(result.double(), expected, rtol=1e-3, atol=1e-3)
        close(T.xlogy(x, y, out=T.empty(0)), expected, rtol=1e-3, atol=1e-3)
        if x_dtype in ("bool", "uint8", "int32"):
            raises(RuntimeError, "can't be cast to the desired output type", x.clone().xlogy_, y)
    special = T.tensor([-1.0, 0.0, 1.0, 2.0, INF, -INF, NAN])
    same(T.xlogy(T.zeros(7), special), [0, 0, 0, 0, 0, 0, NAN])  # (0 · log y is 0 for every y but NaN)
    same(T.xlogy(0, special), [0, 0, 0, 0, 0, 0, NAN])
    same(T.special.xlog1py(T.zeros(7), special), [0, 0, 0, 0, 0, 0, NAN])


def test_xlogy_xlog1py_numbers_do_not_promote_and_zero_x_has_no_slope(T):
    t = T.tensor(1.5)
    for number in (5, 5.0):
        for fn in (T.xlogy, T.special.xlog1py):
            assert dtype_name(fn(t, number)) == "float32" and dtype_name(fn(number, t)) == "float32"
    for fn, ys in ((T.xlogy, [-1.5, 0.0]), (T.special.xlog1py, [-2.5, -1.0])):
        x = T.tensor([0.0, 0.0], dtype=T.float64, requires_grad=True)
        fn(x, T.tensor(ys, dtype=T.float64, requires_grad=True)).sum().backward()
        same(x.grad, [0.0, 0.0], "float64")


def test_zeta_of_integer_and_bool_operands(T):
    """ζ(x, q) = Σ_k (k + q)^-x: integers and bools give the default float; ζ(1, q) = ∞, ζ(x, 0) too for x > 1."""
    for x_dtype, q_dtype in (("int64", "int64"), ("bool", "float32"), ("int32", "float64"), ("uint8", "uint8")):
        result = T.special.zeta(T.tensor([2, 3, 1], dtype=getattr(T, x_dtype)),
                                T.tensor([1, 2, 0], dtype=getattr(T, q_dtype)))
        expected_dtype = "float64" if "float64" in (x_dtype, q_dtype) else "float32"
        assert dtype_name(result) == expected_dtype
        x = [2, 3, 1] if x_dtype != "bool" else [1, 1, 1]
        q = [1, 2, 0] if q_dtype != "bool" else [1, 1, 0]
        expected = [INF if xi == 1 or qi == 0 else sum((k + qi) ** -xi for k in range(200000)) for xi, qi in
                    zip(x, q)]
        close(result, expected, rtol=1e-4, atol=0)
    close(T.special.zeta(2.0, T.tensor([1.0, 2.0])), [math.pi**2 / 6, math.pi**2 / 6 - 1], rtol=1e-6)


OPERATORS = ["__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__", "__rmul__",
             "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "__floordiv__", "__rfloordiv__",
             "__ifloordiv__", "__mod__", "__rmod__", "__imod__", "__pow__", "__rpow__", "__ipow__", "__lshift__",
             "__rlshift__", "__ilshift__", "__rshift__", "__rrshift__", "__irshift__", "__and__", "__rand__",
             "__iand__", "__xor__", "__rxor__", "__ixor__", "__or__", "__ror__", "__ior__", "__lt__", "__le__",
             "__gt__", "__ge__", "__eq__", "__ne__"]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"])
def test_operators_leave_unknown_operands_to_python(T, dtype):
    class Unknown:
        pass

    class Unit:
        def __radd__(self, other):
            return "radd"

    tensor = T.empty((), dtype=getattr(T, dtype))
    for operator in OPERATORS:
        assert getattr(tensor, operator)(Unknown()) is NotImplemented, operator
    assert tensor + Unit() == "radd"
    t = T.ones(2, dtype=getattr(T, dtype))
    t += Unit()
    assert t == "radd"
    with pytest.raises(TypeError):
        T.ones(2, dtype=getattr(T, dtype)).__iadd__(None) + 1


def test_matmul_leaves_unknown_operands_to_python(T):
    class Unknown:
        pass

    assert T.ones(2).__matmul__(Unknown()) is NotImplemented
    assert T.ones(2).__rmatmul__(Unknown()) is NotImplemented


@pytest.mark.parametrize("name", ["atan2", "hypot", "remainder", "fmod", "copysign", "xlogy", "logaddexp", "gcd",
                                  "nextafter", "fmax", "pow", "ldexp", "bitwise_and", "polar", "complex"])
def test_functions_of_two_numbers_are_refused(T, name):
    """Only add, sub, mul and the divisions take two numbers; the rest want a tensor (TypeError, not a crash)."""
    raises(TypeError, "", getattr(T, name), 1, 2.0)
    same(T.add(1, 2.0), 3.0, "float32")


def test_igamma_far_out_ends_and_is_a_half_at_equal_arguments(T):
    """P(a, a) → ½ as a grows (P(a, a) = ½ + 1/(3√(2πa)) + O(1/a)); the series this used to sum needed about
    9√a terms, so a = 3.4e38 never ended."""
    for dtype in (T.float32, T.float64):
        huge = T.tensor([3.4e38, 1e30, 1e10], dtype=dtype)
        close(T.igamma(huge, huge), [0.5, 0.5, 0.5], rtol=1e-5)
        close(T.igammac(huge, huge), [0.5, 0.5, 0.5], rtol=1e-5)
    a = T.tensor([1e6, 1e6], dtype=T.float64)
    close(T.igamma(a, T.tensor([1e6, 0.99e6], dtype=T.float64)), [0.500132980760867, 5.44664469e-24], rtol=1e-8)


@xfail_ours("an out= that overlaps an input in part is written through (PyTorch refuses it: 'unsupported "
            "operation: some elements of the input tensor and the written-to tensor refer to a single memory "
            "location')")
@pytest.mark.parametrize("name", ["add", "mul", "div", "pow", "atan2", "eq"])
def test_out_overlapping_an_input_in_part_is_refused(T, name):
    data, other = T.arange(6.0, dtype=T.float64) + 1, T.ones(3, dtype=T.float64)
    getattr(T, name)(other, data[0:3], out=data[0:3])  # the very same elements: allowed
    raises(RuntimeError, "unsupported operation", getattr(T, name), other, data[1:4], out=data[0:3])


def test_trapezoid_refusals(T):
    """A complex dx is refused; along an empty dim cumulative_trapezoid still wants no more x values than points
    (trapezoid does not look)."""
    for fn in (T.trapezoid, T.cumulative_trapezoid):
        raises(RuntimeError, "Currently, we only support dx as a real number", fn, T.zeros(2, 2), dx=complex(1, 1))
        raises(RuntimeError, "Currently, we only support dx as a real number", fn, T.zeros(2, 2), dx=2 + 0j)
    same(T.trapezoid(T.zeros(0, 2), x=T.tensor([1.0, 2.0]), dim=0), [0.0, 0.0], "float32")
    assert T.cumulative_trapezoid(T.zeros(0, 2), x=T.tensor([]), dim=0).shape == (0, 2)
    raises(RuntimeError, "There must be one `x` value for each sample point", T.cumulative_trapezoid,
           T.zeros(0, 2), x=T.tensor([1.0, 2.0]), dim=0)


def test_chebyshev_polynomials_of_high_degree_end(T):
    """The closed forms stand for |x| < 1 and x = ±1 at any degree, and past float64's range the recurrence is NaN
    for good: none of these climbs n steps (n = 2^31 - 1 took minutes, n = 9e18 never ended)."""
    x = T.tensor([0.5, 1.0, -1.0, 2.0, -1.5], dtype=T.float64)
    for n in (2**31 - 1, 9e18):
        degree = T.tensor([n] * 5, dtype=T.float64)
        t = T.special.chebyshev_polynomial_t(x, degree)
        close(t[1:3], [1.0, 1.0 if int(n) % 2 == 0 else -1.0], rtol=1e-6, atol=1e-6)
        if n < 2**32:  # cos(n·acos(x)): a unit of acos's last place (NumPy's vectorised acos may be one off where
            # the processor has AVX-512) moves the angle by n·2.2e-16, 5e-7 here, 2000 radians at n = 9e18
            close(t[:1], [math.cos(int(n) * math.acos(0.5))], rtol=1e-6, atol=1e-6)
        assert abs(float(values(t[0]))) <= 1.0
        assert np.isnan(values(t[3:])).all()
        u = T.special.chebyshev_polynomial_u(x, degree)
        same(u[1:3], [int(n) + 1.0, (int(n) + 1.0) * (1 if int(n) % 2 == 0 else -1)], "float64")
    same(T.special.chebyshev_polynomial_t(x, T.tensor([INF] * 5, dtype=T.float64)), np.zeros(5), "float64")
