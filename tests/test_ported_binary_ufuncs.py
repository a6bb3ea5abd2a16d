"""Binary elementwise ops ported from PyTorch's test/test_binary_ufuncs.py (TestBinaryUfuncs, its first
part: broadcasting, comparisons, bitwise ops, the rounding modes of division, out= resizing, in-place
operators and pow).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import itertools
import math
import operator
import warnings

import numpy as np
import pytest

from tests.ported import dtype_name, raises, same, values

BINARY = ["add", "sub", "mul", "div", "pow", "atan2", "hypot", "maximum", "minimum", "fmax", "fmin", "fmod",
          "remainder", "copysign", "nextafter", "xlogy", "logaddexp", "eq", "ne", "lt", "le", "gt", "ge",
          "logical_and", "logical_or", "logical_xor", "floor_divide", "true_divide", "heaviside"]


def _positive(T, shape, rng):
    return T.tensor(rng.uniform(0.5, 2.0, shape).astype(np.float32))


@pytest.mark.parametrize("name", BINARY)
def test_broadcasting_shapes(T, name):
    rng = np.random.default_rng(40)
    op = getattr(T, name)
    for a, b in (((1,), ()), ((2,), ()), ((1,), (2,)), ((2,), (2,)), ((2, 1), (2,)), ((1, 2), (2,)), ((3, 2), (2,)),
                 ((3, 2), (3, 2)), ((1, 3, 2), (2,)), ((1, 3, 2), (3, 2)), ((3, 1, 2), (3, 2)),
                 ((1, 3, 2), (1, 3, 2)), ((2, 3, 2), ()), ((2, 3, 2), (2, 3, 2)), ((3, 1, 2), (1, 3, 2))):
        assert op(_positive(T, a, rng), _positive(T, b, rng)).shape == np.broadcast_shapes(a, b)
    for a in ((), (1,), (2,), (1, 2, 3)):
        lhs, rhs = _positive(T, a, rng), _positive(T, (), rng)
        try:  # (PyTorch's test runs this on the ops that take a Python number; the others refuse it)
            with_number = op(lhs, rhs.item())
        except TypeError:
            continue
        assert with_number.shape == op(lhs, rhs).shape
    for a, b in (((2,), (3,)), ((3, 1), (2, 1)), ((1, 3, 2), (3,)), ((3, 1, 2), (2, 1, 2))):
        raises(RuntimeError, None, op, _positive(T, a, rng), _positive(T, b, rng))


def test_add_broadcasts_empty_tensors(T):
    raises(RuntimeError, None, lambda: T.randn(5, 0) + T.randn(0, 5))
    assert (T.randn(0) + T.randn(5, 0)).shape == (5, 0)
    assert (T.randn(0) + T.randn(5, 0, 1)).shape == (5, 0, 0)
    assert (T.randn(()) + T.randn(5, 0, 6)).shape == (5, 0, 6)
    assert (T.randn(0) + T.randn(1)).shape == (0,)
    assert (T.randn(0, 7, 0, 6, 5, 0, 1) + T.randn(1, 1, 5, 1, 7)).shape == (0, 7, 0, 6, 5, 0, 7)
    raises(RuntimeError, None, lambda: T.randn(7, 0) + T.randn(2, 1))


def test_addcmul_takes_a_0d_tensor_as_value(T):
    y = T.tensor(3.0)
    same(y.addcmul(y, y, value=T.tensor(2.0)), 21.0)


def test_comparisons(T):
    rng = np.random.default_rng(41)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    a[0] = b[0]  # some equal elements
    x, y = T.tensor(a), T.tensor(b)
    for op in (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge):
        same(op(x, y), op(a, b), "bool")
    for name in ("lt", "le", "gt", "ge", "eq", "ne", "logical_and", "logical_or", "logical_xor"):
        assert dtype_name(getattr(T, name)(T.tensor([True]), T.tensor([False]))) == "bool"


def test_in_place_comparisons_keep_the_dtype(T):
    # (PyTorch's test once expected these to refuse an int64 other; PyTorch 2.13 writes the result as int32)
    for name, expected in (("lt_", 1), ("le_", 1), ("gt_", 0), ("ge_", 0), ("eq_", 0), ("ne_", 1),
                           ("logical_xor_", 0), ("logical_and_", 1), ("logical_or_", 1)):
        x = T.tensor([1], dtype=T.int32)
        r = getattr(x, name)(T.tensor([2], dtype=T.int64))
        assert r is x
        same(x, [expected], "int32")


INTEGRAL = ["bool", "uint8", "int8", "int16", "int32", "int64"]


@pytest.mark.parametrize("dtype", INTEGRAL)
@pytest.mark.parametrize("op", [operator.and_, operator.or_, operator.xor, operator.iand, operator.ior,
                                operator.ixor])
def test_bitwise_operators_against_numpy(T, dtype, op):
    rng = np.random.default_rng(42)

    def draw(shape):
        if dtype == "bool":
            return rng.integers(0, 2, shape).astype(bool)
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), shape).astype(dtype)

    for shape in ((5,), (15, 15)):
        a, b = draw(shape), draw(shape)
        same(op(T.tensor(a), T.tensor(b)), op(a.copy(), b), dtype)
        scalar = draw(()).item()
        same(op(T.tensor(a), scalar), op(a.copy(), scalar), dtype)
        if op not in (operator.iand, operator.ior, operator.ixor):
            same(op(scalar, T.tensor(b)), op(scalar, b), dtype)
        else:  # the augmented operators write into the tensor itself
            t = T.tensor(a)
            alias = t
            view = t[:]
            r = op(t, T.tensor(b))
            assert r is alias
            same(view, op(a.copy(), b))


def test_augmented_operators_write_in_place(T):
    """x //= y, %=, **=, &=, |=, ^=, <<=, >>= change x itself, as +=, -=, *=, /= do (chainrule once made
    a new tensor for these: a view of x, or another name for it, kept the old values)."""
    t = T.rand(5, 5)
    before = id(t)
    t /= 2
    assert id(t) == before
    t = T.randn(1)
    pointer = t.data_ptr()
    t += 1
    t -= 1
    t *= 1
    t /= 1
    t //= 1
    t %= 1
    t **= 1
    assert t.data_ptr() == pointer
    for op, data, other in ((operator.ifloordiv, [7, -7], 2), (operator.imod, [7, -7], 3),
                            (operator.ipow, [2.0, 3.0], 2), (operator.iand, [6, 5], 3), (operator.ior, [6, 5], 3),
                            (operator.ixor, [6, 5], 3), (operator.ilshift, [6, 5], 1), (operator.irshift, [6, 5], 1)):
        base = T.tensor(data)
        view = base[:]
        alias = base
        plain = {"ifloordiv": operator.floordiv, "imod": operator.mod, "ipow": operator.pow, "iand": operator.and_,
                 "ior": operator.or_, "ixor": operator.xor, "ilshift": operator.lshift, "irshift": operator.rshift}
        expected = plain[op.__name__](np.array(data), other)
        result = op(view, other)
        assert result is view
        same(alias, expected)
    mask = T.tensor([True, True, False])
    keep = mask
    mask &= T.tensor([True, False, True])
    same(keep, [True, False, False])
    a = T.tensor([1.0, 2.0], requires_grad=True)
    b = a * 3
    b **= 2
    b.sum().backward()
    same(a.grad, [18.0, 36.0])


FLOATS_AND_INTS = ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


@pytest.mark.parametrize("dtype", FLOATS_AND_INTS)
def test_division_rounding_modes(T, dtype):
    rng = np.random.default_rng(43)
    floating = dtype.startswith("float")
    if floating:
        a = rng.uniform(-10, 10, 100).astype(dtype)
        b = rng.uniform(-10, 10, 100).astype(dtype)
        b[np.abs(b) < 0.1] = 0.1
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, 100, endpoint=True).astype(dtype)
        b = rng.integers(info.min, info.max, 100, endpoint=True).astype(dtype)
        b[b == 0] = 1
        a = np.where(a < 0, a + b, a).astype(dtype)  # (keeps floor(a / b) · b from overflowing)
    ta, tb = T.tensor(a), T.tensor(b)
    quotient = T.divide(ta, tb, rounding_mode=None)
    assert quotient.is_floating_point()
    np.testing.assert_allclose(values(quotient * tb), a.astype(dtype_name(quotient)), rtol=2e-3 if dtype == "float16"
                               else 1e-5)
    floor = T.divide(ta, tb, rounding_mode="floor")
    assert dtype_name(floor) == dtype
    with np.errstate(all="ignore"):
        same(floor, np.floor_divide(a, b))
        np.testing.assert_allclose(values(floor * tb + T.remainder(ta, tb)), a,
                                   rtol=1e-2 if dtype == "float16" else 1e-6, atol=1e-2 if dtype == "float16" else 1e-6)
        trunc = T.divide(ta, tb, rounding_mode="trunc")
        assert dtype_name(trunc) == dtype
        if floating:
            same(trunc, np.trunc(a / b).astype(dtype))
        else:
            same(trunc, (np.sign(a) * np.sign(b) * (np.abs(a.astype(np.int64)) // np.abs(b.astype(np.int64))))
                 .astype(dtype))
        # non-contiguous inputs give the same answers
        for mode in (None, "trunc", "floor"):
            same(T.divide(ta[::2], tb[::2], rounding_mode=mode), values(T.divide(ta, tb, rounding_mode=mode))[::2])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_division_of_special_values(T, dtype):
    num = np.array([1.0, -1.0, 0, 0.1, -0.1, np.pi, -np.pi, np.inf, -np.inf, np.nan], dtype=dtype)
    denom = num[num != 0]
    a, b = num[None, :], denom[:, None]
    ta, tb = T.tensor(a), T.tensor(b)
    with np.errstate(all="ignore"):
        same(T.divide(ta, tb), np.true_divide(a, b), dtype)
        same(T.divide(ta, tb, rounding_mode="floor"), np.floor_divide(a, b), dtype)
        same(T.divide(ta, tb, rounding_mode="trunc"), np.trunc(np.true_divide(a, b)), dtype)
        expected = np.divide(num, 0)
        for mode in (None, "floor"):
            same(T.divide(T.tensor(num), 0, rounding_mode=mode), expected)
            same(T.divide(T.tensor(num), T.zeros_like(T.tensor(num)), rounding_mode=mode), expected)


def test_integer_division_by_zero_is_refused(T):
    for call in (lambda: T.remainder(T.tensor([5]), 0), lambda: T.div(T.tensor([5]), 0, rounding_mode="floor"),
                 lambda: T.div(T.tensor([5]), T.tensor([0]), rounding_mode="trunc")):
        raises(RuntimeError, "ZeroDivisionError", call)


@pytest.mark.parametrize("name", ["add", "sub", "ceil", "exp"])
def test_out_of_another_size_is_resized_with_a_warning(T, name):
    op = getattr(T, name)
    inputs = (T.tensor([1.0, 2.0, 3.0]),) if name in ("ceil", "exp") else (T.tensor([1.0, 2.0, 3.0]),
                                                                          T.tensor([4.0, 5.0, 6.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op(*inputs, out=T.empty(3))
        op(*inputs, out=T.empty(0))
        assert not caught
        out = T.empty(2)
        op(*inputs, out=out)
        assert len(caught) == 1 and "was resized" in str(caught[0].message)
    same(out, values(op(*inputs)))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
                                   "complex64", "complex128"])
def test_pow_of_tensor_and_number(T, dtype):
    rng = np.random.default_rng(44)
    if dtype.startswith(("float", "complex")):
        base = (rng.uniform(0, 1, (10, 10)) + 0.5).astype(dtype)
    else:
        base = rng.integers(1, 4 if dtype in ("int8", "uint8") else 10, (10, 10)).astype(dtype)
    m = T.tensor(base)
    for exponent in (-2.8, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 4, 3.3, -2.5j, 1j, 0j, 1.0 + 1.0j, -1.0 - 1.5j):
        integer_base = not dtype.startswith(("float", "complex"))
        if isinstance(exponent, complex) and dtype == "float16":
            continue  # (float16 ** complex is PyTorch's complex32, which it has no pow for and NumPy lacks)
        if isinstance(exponent, int) and exponent < 0 and integer_base:
            raises(RuntimeError, r"Integers to negative integer powers are not allowed\.", T.pow, m[4], exponent)
            continue
        for row, expected_row in ((m[4], base[4]), (m[:, 4], base[:, 4])):
            got = T.pow(row, exponent)
            expected = np.array([pow(complex(v) if isinstance(exponent, complex) or dtype.startswith("complex")
                                     else float(v), exponent) for v in expected_row])
            np.testing.assert_allclose(values(got), expected.astype(values(got).dtype), rtol=2e-3 if dtype ==
                                       "float16" else 1e-4)
        expected_dtype = T.result_type(exponent, m)
        r = exponent ** m[4]
        assert r.dtype == expected_dtype
        np.testing.assert_allclose(values(r), values(T.tensor(exponent, dtype=expected_dtype) ** m[4]), rtol=1e-6)
    for row in (m[4], m[:, 4]):
        np.testing.assert_allclose(values(T.pow(3, row)), np.array([pow(3, v.item()) for v in row]),
                                   rtol=2e-3 if dtype == "float16" else 1e-6)


def _check_pow(T, base, exponent):
    """pow(base, exponent) in all its spellings against NumPy, or the refusal of integers to negative powers."""
    nb = values(base) if hasattr(base, "detach") else base
    ne = values(exponent) if hasattr(exponent, "detach") else exponent
    try:
        with np.errstate(all="ignore"):
            expected = np.power(nb, ne)
    except ValueError as error:
        assert str(error) == "Integers to negative integer powers are not allowed."
        out = T.empty_like(base)
        for call in (lambda: base.pow(exponent), lambda: base.clone().pow_(exponent), lambda: T.pow(base, exponent),
                     lambda: T.pow(base, exponent, out=out)):
            raises(RuntimeError, "Integers to negative integer powers are not allowed.", call)
        return
    got = T.pow(base, exponent)
    np.testing.assert_allclose(values(got), np.asarray(expected).astype(values(got).dtype), rtol=1e-3, equal_nan=True)
    if hasattr(base, "detach"):
        np.testing.assert_allclose(values(base.pow(exponent)), values(got), rtol=1e-6, equal_nan=True)
        copy = base.clone()
        if T.can_cast(T.result_type(base, exponent), base.dtype):
            assert copy.pow_(exponent) is copy
            np.testing.assert_allclose(values(copy), values(got).astype(values(copy).dtype), rtol=1e-6,
                                       equal_nan=True)
        else:
            raises(RuntimeError, r"(can't be cast to|Found dtype \w+ but expected \w+)", copy.pow_, exponent)
        out = T.empty_like(got)
        assert T.pow(base, exponent, out=out) is out
        np.testing.assert_allclose(values(out), values(got), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype,low,high", [("int8", -2, 2), ("uint8", 0, 3), ("int16", -5, 5), ("int64", -10, 10),
                                            ("int32", -10, 10), ("float16", 0.0, 5.0), ("float32", 0.0, 10.0),
                                            ("float64", 0.0, 10.0), ("float32", -10.0, 10.0),
                                            ("float64", -10.0, 10.0)])
def test_int_and_float_pow(T, dtype, low, high):
    rng = np.random.default_rng(45)
    integral = not dtype.startswith("float")

    def make(shape, lo):
        if integral:
            return T.tensor(rng.integers(lo, high, shape, endpoint=False).astype(dtype))
        return T.tensor(rng.uniform(lo, high, shape).astype(dtype))

    for base_shape, number, exp_shape in (((4, 4), 0, (4, 1)), ((3, 1), 4, (3, 1)), ((2,), 4, (1,)), ((1,), 2, ()),
                                          ((20, 20), 4, (20,)), ((5, 5, 5), 5, (5,)), ((), 2, ())):
        base = make(base_shape, low)
        _check_pow(T, base, number)
        _check_pow(T, base, make(exp_shape, 0 if integral else low))
        strided = make(base_shape + (2,), low)[..., 0]
        _check_pow(T, strided, number)


def test_pow_in_place_cannot_grow(T):
    for base, exponent in (((), (3,)), ((2,), (2, 1)), ((2, 1), (2, 2)), ((2, 2), (2, 1, 1))):
        raises(RuntimeError, "doesn't match the broadcast shape", T.rand(base, dtype=T.float64).pow_,
               T.rand(exponent, dtype=T.float64))


def test_pow_special_cases(T):
    ints = T.tensor([-(2**31), -3, -2, -1, 0, 1, 2, 3, 2**31 - 1], dtype=T.int32)
    for p in (-(2**31), -3, -2, -1):
        _check_pow(T, ints, p)
    longs = T.tensor([0, 1, 23, 4567], dtype=T.int64)
    for p in (0.0, 1 / 3, 1 / 2, 1.0, 3 / 2, 2.0):
        _check_pow(T, longs, p)
    rng = np.random.default_rng(46)
    floats = [2.0, -3 / 2, -1.0, -1 / 2, -1 / 3, 0.0, 1 / 3, 1 / 2, 1.0, 3 / 2, 2.0]
    for dtype in (T.float32, T.float64):
        exponents = [T.tensor(floats, dtype=dtype)] + [T.tensor(rng.uniform(0, 9, s), dtype=dtype)
                                                       for s in ((1,), (2, 2), (2, 1), (2, 2, 2))]
        for base in floats:
            for e in exponents:
                _check_pow(T, base, e)
    for dtype in ("int8", "int16", "int32", "int64", "float32", "float64", "complex64"):
        e = T.tensor(rng.uniform(-2, 2, 20).astype(dtype) if dtype[0] != "i" else rng.integers(-2, 2, 20).astype(dtype))
        for base in (0.5j, 1.0 + 1.0j, -1.5j, 2.2 - 1.6j, 1 + 0j):
            got = base ** e
            with np.errstate(all="ignore"):
                expected = np.power(np.complex128(base), values(e).astype(np.complex128))
            np.testing.assert_allclose(values(got), expected, rtol=1e-4, atol=1e-6)


def test_pow_computes_in_the_inputs_dtype(T):
    for exponent in (17, [17]):
        small = T.pow(2, T.tensor(exponent, dtype=T.uint8), out=T.tensor(0, dtype=T.int64))
        large = T.pow(2, T.tensor(exponent, dtype=T.int64), out=T.tensor(0, dtype=T.int64))
        assert values(small).tolist() != values(large).tolist()  # 2**17 overflows uint8 (to 0) before the cast
        same(small.to(T.uint8), values(large.to(T.uint8)))


def test_tensor_pow_tensor(T):
    def rotate(items, n):
        return items[-n:] + items[:-n]

    for dtype, items in (("uint8", [0, 1, 2, 3]), ("int8", [0, 1, 2, 3]), ("int16", [0, 1, 2, 3]),
                         ("int32", [0, 1, 2, 3]), ("int64", [0, 1, 2, 3]),
                         ("float16", [-3.0, -2.0, -1.0, -1 / 2, -1 / 3, 0.0, 1 / 3, 1 / 2, 1.0, 2.0, 3.0]),
                         ("float32", [-3.0, -2.0, -1.0, -1 / 2, -1 / 3, 0.0, 1 / 3, 1 / 2, 1.0, 2.0, 3.0]),
                         ("float64", [-3.0, -2.0, -1.0, -1 / 2, -1 / 3, 0.0, 1 / 3, 1 / 2, 1.0, 2.0, 3.0])):
        base = T.tensor(items, dtype=getattr(T, dtype))
        for i in range(len(items)):
            _check_pow(T, base, T.tensor(rotate(items, i), dtype=getattr(T, dtype)))


def test_logical_xor_into_unaligned_out(T):
    rng = np.random.default_rng(47)
    a, b = T.tensor(rng.random(128) > 0.5), T.tensor(rng.random(128) > 0.5)
    c = T.tensor(rng.random(128) > 0.5)
    for i, j, k in itertools.product([1, 2, 4, 8, 15], repeat=3):
        a_, b_, c_ = a[i:100 + i], b[j:100 + j], c[k:100 + k]
        T.logical_xor(a_, b_, out=c_)
        assert c_.tolist() == [x ^ y for x, y in zip(a_.tolist(), b_.tolist())]


def test_add_with_a_tail(T):
    for tail in (1, 63, 67, 130):
        a, b = T.randn(4096 + tail), T.randn(4096 + tail)
        np.testing.assert_array_equal(values(a + b), values(a) + values(b))


def test_division_of_numbers_and_tensors_matches_python(T):
    for a, b in itertools.product(range(-10, 10), range(-10, 10)):
        for f in (lambda x: x * 0.5, math.floor):
            x, y = f(a), f(b)
            if y == 0:
                continue
            expected = x / y
            for lhs, rhs in ((T.tensor(x), T.tensor(y)), (T.tensor(x), y), (x, T.tensor(y))):
                assert T.true_divide(lhs, rhs).item() == pytest.approx(expected, rel=1e-6)
            floored = math.floor(x / y)
            assert T.floor_divide(T.tensor(x), T.tensor(y)).item() == pytest.approx(floored)


def test_in_place_division_of_numbers(T):
    """x /= y, x.true_divide_(y) and x //= y against Python's division; an integer tensor refuses true
    division in place, and floor division by a float tensor (PyTorch 2.13 floors: no warning any more)."""
    for a, b in itertools.product(range(-6, 6), range(-6, 6)):
        for f in (lambda x: x * 0.5, math.floor):
            x, y = f(a), f(b)
            if y == 0:
                continue
            xt, yt = T.tensor(x), T.tensor(y)
            if xt.is_floating_point():
                for other in (y, yt):
                    tmp = xt.clone()
                    tmp /= other
                    assert tmp.item() == pytest.approx(x / y, rel=1e-6)
                assert xt.clone().true_divide_(yt).item() == pytest.approx(x / y, rel=1e-6)
            else:
                for other in (y, yt):
                    tmp = xt.clone()
                    with pytest.raises(RuntimeError):
                        tmp /= other
            if not xt.is_floating_point() and yt.is_floating_point():
                raises(RuntimeError, None, xt.clone().floor_divide_, yt)
                tmp = xt.clone()
                with pytest.raises(RuntimeError):
                    tmp //= yt
            else:
                assert xt.clone().floor_divide_(yt).item() == pytest.approx(x // y)
                tmp = xt.clone()
                tmp //= yt
                assert tmp.item() == pytest.approx(x // y)


@pytest.mark.parametrize("python_op,name", [(operator.add, "add"), (operator.sub, "sub"), (operator.mul, "mul"),
                                            (operator.truediv, "div")])
def test_binary_ops_with_numbers_and_0d_tensors(T, python_op, name):
    op = getattr(T, name)
    for a, b in itertools.product(range(-4, 5), range(-4, 5)):
        for f in (lambda x: x * 0.5, math.floor):
            x, y = f(a), f(b)
            if x == 0 or y == 0:
                continue
            choices = (x, y, T.tensor(x), T.tensor(y))
            for first, second in itertools.product(choices, choices):
                plain = [v.item() if hasattr(v, "item") else v for v in (first, second)]
                expected = python_op(*plain)
                for got in (python_op(first, second), op(first, second)):
                    assert float(got) == pytest.approx(expected, rel=1e-6)


REAL = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


def test_maximum_minimum_promote(T):
    for d1, d2 in itertools.product(REAL, REAL):
        a = T.tensor((0, 1), dtype=getattr(T, d1))
        b = T.tensor((1, 0), dtype=getattr(T, d2))
        for op in (T.maximum, T.max, T.fmax, T.minimum, T.min, T.fmin):
            assert op(a, b).dtype == T.result_type(a, b), (op, d1, d2)


@pytest.mark.parametrize("dtype", REAL)
def test_maximum_minimum_against_numpy(T, dtype):
    rng = np.random.default_rng(48)
    if dtype == "bool":
        a, b = rng.integers(0, 2, 10).astype(bool), rng.integers(0, 2, 10).astype(bool)
    elif dtype.startswith("float"):
        a, b = rng.standard_normal(10).astype(dtype), rng.standard_normal(10).astype(dtype)
    else:
        info = np.iinfo(dtype)
        a = rng.integers(max(-100, info.min), 100, 10).astype(dtype)
        b = rng.integers(max(-100, info.min), 100, 10).astype(dtype)
    for op, alias, reference in ((T.maximum, T.max, np.maximum), (T.minimum, T.min, np.minimum),
                                 (T.fmax, None, np.fmax), (T.fmin, None, np.fmin)):
        ta, tb = T.tensor(a), T.tensor(b)
        expected = reference(a, b)
        same(op(ta, tb), expected, dtype)
        out = T.empty_like(ta)
        op(ta, tb, out=out)
        same(out, expected)
        if alias is not None:
            same(alias(ta, tb), expected)
    if dtype.startswith("float"):  # NaN: maximum/minimum give it, fmax/fmin the other value
        a = np.array((np.inf, -np.inf, np.nan, np.inf, np.nan, np.nan, 1, np.nan), dtype=dtype)
        b = np.array((-np.inf, np.inf, np.inf, np.nan, np.nan, 0, np.nan, -5), dtype=dtype)
        for op, reference in ((T.maximum, np.maximum), (T.minimum, np.minimum), (T.fmax, np.fmax),
                              (T.fmin, np.fmin), (T.max, np.maximum), (T.min, np.minimum)):
            same(op(T.tensor(a), T.tensor(b)), reference(a, b))


@pytest.mark.parametrize("other", ["float32", "int64", "bool", "complex64"])
def test_maximum_minimum_refuse_complex(T, other):
    for op in (T.maximum, T.minimum, T.max, T.min, T.fmax, T.fmin):
        for a, b in ((T.ones(1, dtype=T.complex64), T.ones(1, dtype=getattr(T, other))),
                     (T.ones(1, dtype=getattr(T, other)), T.ones(1, dtype=T.complex64))):
            raises(RuntimeError, ".+not implemented for.+", op, a, b)  # (PyTorch's words, both libraries)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mul_of_a_float_and_an_int_0d_tensor(T, dtype):
    x = T.tensor(1.5, dtype=getattr(T, dtype))
    y = T.tensor(3, dtype=T.int32)
    assert (x * y).item() == 4.5 and (y * x).item() == 4.5
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
        y *= x
    x *= y
    assert x.item() == 4.5


@pytest.mark.parametrize("dtype", REAL + ["complex64", "complex128"])
def test_sub(T, dtype):
    m1 = T.tensor([2.34, 4.44]).to(getattr(T, dtype))
    m2 = T.tensor([1.23, 2.33]).to(getattr(T, dtype))
    if dtype == "bool":
        raises(RuntimeError, None, lambda: m1 - m2)
        return
    expected = values(m1).astype(np.complex128) - values(m2).astype(np.complex128)
    np.testing.assert_allclose(values(m1 - m2), expected, atol=0.01 if dtype == "float16" else 1e-6)
    assert dtype_name(m1 - m2) == dtype
    a, b = T.randn(10, 9), T.randn(10, 9)
    c = a.clone()
    c.sub_(b)
    same(T.add(a, b, alpha=-1), values(c))
    c = a.clone()
    c.sub_(123.5)
    same(T.add(a, -123.5), values(c))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_min_of_two_tensors_propagate_nan(T, dtype):
    rng = np.random.default_rng(49)
    a, b = rng.random(1000).astype(dtype), rng.random(1000).astype(dtype)
    a[:250] = np.nan
    b[250:500] = np.nan
    a[500:750] = np.nan
    b[500:750] = np.nan
    for op in (T.max, T.min):
        got = values(op(T.tensor(a), T.tensor(b)))
        assert np.isnan(got[:750]).all() and not np.isnan(got[750:]).any()


COPYSIGN = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]


@pytest.mark.parametrize("d1", COPYSIGN)
def test_copysign_against_numpy(T, d1):
    rng = np.random.default_rng(50)

    def make(shape, dtype):
        a = rng.integers(-9, 10, shape)
        return (a > 0) if dtype == "bool" else (np.abs(a) if dtype == "uint8" else a).astype(dtype)

    def check(a, b):
        got = T.copysign(T.tensor(a), T.tensor(b))
        assert dtype_name(got) == ("float32" if a.dtype.kind in "biu" and b.dtype.kind in "biu" else
                                   dtype_name(T.promote_types(T.tensor(a).dtype, T.tensor(b).dtype)))
        expected = np.copysign(a, b).astype(values(got).dtype)
        same(got, expected)
        np.testing.assert_array_equal(np.signbit(values(got)), np.signbit(expected))

    for d2 in COPYSIGN:
        check(make((10, 10), d1), make((10, 10), d2))
        check(make((10, 1, 10), d1), make((10, 10), d2))
        check(make((10, 10), d1), make((10, 1, 10), d2))
        special = [0.0, -0.0, np.inf, -np.inf, np.nan]
        if d1 in ("float16", "float32", "float64"):
            for case in special:
                check(np.array([case], dtype=d1), make((10, 10), d2))
        if d2 in ("float16", "float32", "float64"):
            for case in special:
                check(make((10, 10), d1), np.array([case], dtype=d2))


def test_division_into_a_column_view(T):
    m = T.randn(10, 10)
    for inplace in (T.Tensor.div_, T.Tensor.true_divide_):
        res = m.clone()
        inplace(res[:, 3], 2)
        expected = values(m).copy()
        expected[:, 3] /= 2
        same(res, expected)
    res = T.empty(2)
    np.testing.assert_allclose(values(T.true_divide(T.tensor([4.2, 6.2]), T.tensor([2.0, 2.0]), out=res)), [2.1, 3.1],
                               rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float32", "float64"])
def test_floor_divide_floors(T, dtype):
    """x // y and floor_divide round down (PyTorch's test once expected truncation, with a warning: PyTorch
    2.13 floors, as Python does)."""
    rng = np.random.default_rng(51)
    raw = rng.standard_normal(10) * 30
    x_np = (np.abs(raw) if dtype == "uint8" else raw).astype(dtype)
    y_np = np.arange(1, 11).astype(dtype)
    x, y = T.tensor(x_np), T.tensor(y_np)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = x // y
    assert dtype_name(z) == dtype
    same(z, np.floor_divide(x_np, y_np))
    same(x // 3, np.floor_divide(x_np, np.asarray(3, dtype)))
    o = T.empty(10, dtype=getattr(T, dtype))
    T.floor_divide(x, y, out=o)
    same(o, np.floor_divide(x_np, y_np))
    T.floor_divide(x, 2, out=o)
    same(o, np.floor_divide(x_np, np.asarray(2, dtype)))
    if dtype.startswith("int"):
        o = T.empty(10, dtype=T.float32)
        T.floor_divide(x, y, out=o)
        same(o, np.floor_divide(x_np, y_np).astype(np.float32))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float32", "float64", "complex64",
                                   "complex128"])
def test_number_divided_by_tensor(T, dtype):
    rng = np.random.default_rng(52)
    x_np = ((rng.random(100) + 1) * 4).astype(dtype)
    y = 30 / T.tensor(x_np)
    np.testing.assert_allclose(values(y), 30 / x_np.astype(np.complex128 if dtype[0] == "c" else np.float64),
                               rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64"])
def test_fmod_and_remainder_by_zero(T, dtype):
    rng = np.random.default_rng(53)
    x = T.tensor(rng.integers(-9 if dtype != "uint8" else 0, 9, (10, 10)).astype(dtype))
    for fn in (T.fmod, T.remainder):
        if dtype.startswith("float"):
            assert bool(fn(x, 0.0).isnan().all())
            assert bool(fn(x, T.zeros_like(x)).isnan().all())
        else:
            raises(RuntimeError, "ZeroDivisionError", fn, x, T.zeros_like(x))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"])
def test_fmod_and_remainder_against_numpy(T, dtype):
    rng = np.random.default_rng(54)
    low = 0 if dtype == "uint8" else -9
    x_np = rng.integers(low, 9, (10, 10)).astype(dtype)
    mod_np = rng.integers(low, 9, (10, 10)).astype(dtype)
    mod_np[mod_np == 0] = 1
    mods = [3, 2.3, T.tensor(mod_np), T.tensor(mod_np).t()]
    if not dtype.startswith("float"):
        mods += [T.tensor(rng.uniform(-9, 9, (10, 10)).astype(np.float32))]
    for mod in mods:
        nm = values(mod) if hasattr(mod, "detach") else mod
        for fn, inplace, reference in ((T.fmod, T.Tensor.fmod_, np.fmod), (T.remainder, T.Tensor.remainder_,
                                                                           np.remainder)):
            x = T.tensor(x_np)
            got = fn(x, mod)
            with np.errstate(all="ignore"):
                expected = reference(x_np.astype(values(got).dtype), np.asarray(nm).astype(values(got).dtype))
            np.testing.assert_allclose(values(got), expected, rtol=1e-3, atol=1e-3 if dtype == "float16" else 1e-5)
            out = T.empty(0, dtype=got.dtype)
            fn(x, mod, out=out)
            assert out.shape == (10, 10)
            np.testing.assert_allclose(values(out), values(got))
            try:
                inplace(x, mod)
            except RuntimeError as error:
                assert dtype_name(got) != dtype
                assert "can't be cast to the desired output type" in str(error)
            else:
                np.testing.assert_allclose(values(x), expected.astype(dtype), rtol=1e-3,
                                           atol=1e-2 if dtype == "float16" else 1e-5)


def test_remainder_of_a_number_by_a_tensor(T):
    rng = np.random.default_rng(55)
    mod_np = rng.integers(-9, 9, (10, 10)).astype(np.float32)
    mod_np[mod_np == 0] = 1
    for dividend in (5, 3.14):
        got = T.remainder(dividend, T.tensor(mod_np))
        np.testing.assert_allclose(values(got), np.remainder(np.float32(dividend), mod_np), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_remainder_and_fmod_of_a_large_dividend(T, dtype):
    for a_value in (1e9, -1e9):
        for b_value in (3.14159265358979, -3.14159265358979):
            a, b = T.tensor([a_value], dtype=getattr(T, dtype)), T.tensor([b_value], dtype=getattr(T, dtype))
            c, d = T.remainder(a, b).item(), T.fmod(a, b).item()
            assert (b_value > 0) == (c > 0) and (a_value > 0) == (d > 0)
            assert abs(c) < abs(b_value) and abs(d) < abs(b_value)
            if (a_value > 0) == (b_value > 0):
                assert c == d
            else:
                assert abs(c - d) == pytest.approx(abs(values(b).item()), rel=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hypot(T, dtype):
    rng = np.random.default_rng(56)
    for a, b in ((rng.standard_normal(10), rng.standard_normal(10)),
                 (rng.standard_normal((3, 3, 3)), rng.standard_normal((3, 3, 3))),
                 (rng.standard_normal((10, 1)), rng.standard_normal((10, 1)).T)):
        got = T.hypot(T.tensor(a.astype(dtype)), T.tensor(b.astype(dtype)))
        np.testing.assert_allclose(values(got), np.hypot(a.astype(dtype), b.astype(dtype)), rtol=1e-6)
    ints = rng.integers(0, 100, 10)
    b = rng.standard_normal(10).astype(dtype)
    got = T.hypot(T.tensor(ints), T.tensor(b))
    assert dtype_name(got) == dtype
    np.testing.assert_allclose(values(got), np.hypot(ints, b), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64"])
def test_gcd_and_lcm(T, dtype):
    rng = np.random.default_rng(57)
    t1 = T.tensor([0, 10, 0], dtype=getattr(T, dtype))
    t2 = T.tensor([0, 0, 10], dtype=getattr(T, dtype))
    same(T.gcd(t1, t2), [0, 10, 10], dtype)
    if dtype == "uint8":
        same(T.gcd(T.tensor([190, 210], dtype=T.uint8), T.tensor([190, 220], dtype=T.uint8)), [190, 10])
    else:
        a, b = rng.integers(-20, 20, 200).astype(dtype), rng.integers(-20, 20, 200).astype(dtype)
        same(T.gcd(T.tensor(a), T.tensor(b)), np.gcd(a, b))
    if dtype in ("int16", "int32", "int64"):
        same(T.lcm(t1, t2), [0, 0, 0], dtype)
        a, b = rng.integers(-20, 20, 200).astype(dtype), rng.integers(-20, 20, 200).astype(dtype)
        same(T.lcm(T.tensor(a), T.tensor(b)), np.lcm(a, b))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nextafter(T, dtype):
    rng = np.random.default_rng(58)
    t1 = np.array([0, 0, 10], dtype=dtype)
    t2 = np.array([np.inf, -np.inf, 10], dtype=dtype)
    same(T.nextafter(T.tensor(t1), T.tensor(t2)), np.nextafter(t1, t2), dtype)
    same(T.nextafter(T.tensor(t2), T.tensor(t1)), np.nextafter(t2, t1))
    assert bool(T.nextafter(T.tensor([0, np.nan], dtype=getattr(T, dtype)),
                            T.tensor([np.nan, 0], dtype=getattr(T, dtype))).isnan().all())
    a, b = rng.standard_normal(100).astype(dtype), rng.standard_normal(100).astype(dtype)
    same(T.nextafter(T.tensor(a), T.tensor(b)), np.nextafter(a, b))


@pytest.mark.parametrize("name,reference", [("div", lambda x, y: x / y), ("remainder", np.remainder),
                                            ("mul", lambda x, y: x * y), ("pow", np.power)])
def test_binary_ops_on_strided_views(T, name, reference):
    rng = np.random.default_rng(59)
    m1, m2 = rng.standard_normal((10, 10, 10)).astype(np.float32), rng.standard_normal((10, 100)).astype(np.float32)
    op = getattr(T, name)
    with np.errstate(all="ignore"):
        got = op(T.tensor(m1)[4], T.tensor(m2)[4].view(10, 10))
        np.testing.assert_allclose(values(got), reference(m1[4], m2[4].reshape(10, 10)), rtol=1e-5, equal_nan=True)
        m2 = rng.standard_normal((100, 100)).astype(np.float32)
        columns = T.tensor(m2)[:, 4].as_strided((10, 10), (1000, 100))
        got = op(T.tensor(m1)[:, 4], columns)
        np.testing.assert_allclose(values(got), reference(m1[:, 4], m2[:, 4].reshape(10, 10)), rtol=1e-5,
                                   equal_nan=True)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64"])
def test_integer_floor_division_by_zero(T, dtype):
    a = T.tensor([0, 1], dtype=getattr(T, dtype))
    raises(RuntimeError, "ZeroDivisionError", lambda: a // T.tensor([0, 1], dtype=getattr(T, dtype)))


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32",
                                   "float64", "complex64", "complex128"])
def test_mul_and_div_by_a_number_is_by_a_full_tensor(T, dtype):
    rng = np.random.default_rng(60)
    x = T.tensor(rng.integers(1, 9, (10, 3)).astype(dtype))
    s = T.tensor(rng.integers(1, 9, (1,)).astype(dtype)).item()
    y = T.full_like(x, s)
    same(x * s, values(x * y))
    same(s * x, values(y * x))
    np.testing.assert_allclose(values(x / s), values(x / y), rtol=1e-6)
    np.testing.assert_allclose(values(s / x), values(y / x), rtol=1e-6)


COMPARED = ["bool", "uint8", "int16", "int64", "float16", "float32", "float64", "complex64"]


def _extremal(shape, dtype, rng, extremal):
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith(("float", "complex")):
        a = rng.standard_normal(shape) * rng.integers(30, 100)
        a[rng.random(shape) > 0.5] = 0
        if dtype.startswith("complex"):
            a = a + 1j * rng.standard_normal(shape)
        if extremal:
            for special in (np.nan, np.inf, -np.inf):
                a[rng.random(shape) > 0.5] = special
        return a.astype(dtype)
    return rng.integers(15, 100, shape).astype(dtype)


@pytest.mark.parametrize("d1,d2", list(itertools.combinations_with_replacement(COMPARED, 2)))
def test_comparison_promotion_and_broadcasting(T, d1, d2):
    rng = np.random.default_rng(61)
    pairs = [("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
             ("eq", np.equal), ("ne", np.not_equal), ("logical_and", np.logical_and),
             ("logical_or", np.logical_or), ("logical_xor", np.logical_xor)]
    for size in [(1,), (10,), (10, 1), (1, 10), (4, 10), (12, 3)]:
        for extremal in (False, True):
            a, b = _extremal(size, d1, rng, extremal), _extremal((2,) + size, d2, rng, extremal)
            for name, reference in pairs:
                if (d1.startswith("complex") or d2.startswith("complex")) and name in ("lt", "le", "gt", "ge"):
                    continue
                op = getattr(T, name)
                got = op(T.tensor(a), T.tensor(b))
                expected = reference(a, b)
                same(got, expected, "bool")
                out = T.zeros(1, dtype=T.complex128)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # (out is resized, with PyTorch's deprecation warning)
                    op(T.tensor(a), T.tensor(b), out=out)
                same(out, expected.astype(np.complex128))


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
def test_signed_shifts(T, dtype):
    a = T.tensor([-10, 10], dtype=getattr(T, dtype))
    same(a << 2, [-40, 40], dtype)
    same(a >> 1, [-5, 5], dtype)


@pytest.mark.parametrize("name,tensor_result,number_result", [("bitwise_and", [0, 0, 3], [0, 2, 2]),
                                                              ("bitwise_or", [3, -1, 3], [3, -2, 3]),
                                                              ("bitwise_xor", [3, -1, 0], [3, -4, 1])])
def test_bitwise_functions(T, name, tensor_result, number_result):
    op = getattr(T, name)
    for dtype in ("uint8", "int8", "int16", "int32", "int64"):
        dt = getattr(T, dtype)
        a = T.tensor([1, -2, 3], dtype=dt) if dtype != "uint8" else T.tensor([1, 254, 3], dtype=dt)
        b = T.tensor([2, 1, 3], dtype=dt)
        with_tensor = np.array(tensor_result).astype(np.int64).astype(dtype)
        with_number = np.array(number_result).astype(np.int64).astype(dtype)
        same(op(a, b), with_tensor, dtype)
        same(op(a, 2), with_number, dtype)
        c = T.empty(0, dtype=dt)
        op(a, b, out=c)
        same(c, with_tensor)
        op(a, 2, out=c)
        same(c, with_number)
        a1 = a.clone()
        getattr(a1, name + "_")(b)
        same(a1, with_tensor)
        getattr(a, name + "_")(2)
        same(a, with_number)
    flags = op(T.tensor([True, True, False]), T.tensor([False, True, False]))
    same(flags, {"bitwise_and": [False, True, False], "bitwise_or": [True, True, False],
                 "bitwise_xor": [True, False, False]}[name], "bool")


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64"])
def test_bitwise_shifts_against_numpy(T, dtype):
    a_np = np.array([19, -20, -21, 22]).astype(dtype)
    b_np = np.array([2, 1, 3, 1]).astype(dtype)
    for op, reference in ((T.bitwise_left_shift, np.left_shift), (operator.lshift, np.left_shift),
                          (T.bitwise_right_shift, np.right_shift), (operator.rshift, np.right_shift)):
        same(op(T.tensor(a_np), T.tensor(b_np)), reference(a_np, b_np), dtype)
        same(op(T.tensor(a_np), 2), reference(a_np, np.asarray(2, dtype)), dtype)


def test_bitwise_shifts_of_floats_are_refused(T):
    """(PyTorch's test once shifted floats by multiplying with powers of 2; PyTorch 2.13 refuses them.)"""
    for op in (T.bitwise_left_shift, operator.lshift, T.bitwise_right_shift, operator.rshift):
        raises(NotImplementedError, "not implemented for 'Float'", op, T.tensor([19, -20, -21, 22]), 1.8)
        raises(NotImplementedError, "not implemented for 'Float'", op, T.tensor([19.1, -20.2]), 2)
        raises(NotImplementedError, "not implemented for 'Float'", op, T.tensor([19.1, -20.2]), 2.2)


@pytest.mark.parametrize("d1", REAL)
def test_heaviside(T, d1):
    rng = np.random.default_rng(62)
    for d2 in REAL:
        x_np = rng.integers(-10, 10, 10).astype(d1)
        x_np[[0, 3, 7]] = 0
        v_np = rng.integers(-10, 10, 10).astype(d2)
        x, v = T.tensor(x_np), T.tensor(v_np)
        out = T.empty_like(x)
        if d1 == d2:
            expected = np.heaviside(x_np, v_np).astype(d1)
            same(T.heaviside(x, v), expected, d1)
            same(x.heaviside(v), expected)
            T.heaviside(x, v, out=out)
            same(out, expected)
            x.heaviside_(v)
            same(x, expected)
        else:
            words = "heaviside is not yet implemented for tensors with different dtypes."
            raises(RuntimeError, words, T.heaviside, x, v)
            raises(RuntimeError, words, x.heaviside, v)
            raises(RuntimeError, words, T.heaviside, x, v, out=out)
            raises(RuntimeError, words, x.heaviside_, v)
    z = T.tensor((complex(0, -6), complex(-1, 3), complex(1, 1)))
    real = z.real
    for call in (lambda: T.heaviside(z, real), lambda: real.heaviside(z), lambda: z.heaviside_(z),
                 lambda: T.heaviside(real, real, out=T.empty_like(z))):
        raises(RuntimeError, "heaviside is not yet implemented for complex tensors.", call)


LOGICAL = ["bool", "uint8", "int32", "int64", "float32", "float64", "complex64"]


@pytest.mark.parametrize("name,expected", [("logical_xor", [0, 0, 1, 1]), ("logical_and", [1, 0, 0, 0]),
                                           ("logical_or", [1, 0, 1, 1])])
def test_logical_ops(T, name, expected):
    for d1, d2 in itertools.product(LOGICAL, LOGICAL):
        a = T.tensor([10, 0, 1, 0], dtype=getattr(T, d1))
        b = T.tensor([1, 0, 0, 10], dtype=getattr(T, d2))
        same(getattr(a, name)(b), np.array(expected, bool), "bool")
        c = T.empty(0, dtype=T.bool)
        getattr(T, name)(a, b, out=c)
        same(c, np.array(expected, bool))
        # in place: the result takes a's dtype (PyTorch's test once expected a refusal for mixed dtypes)
        getattr(a, name + "_")(b)
        same(a, np.array(expected).astype(d1), d1)


def test_remainder_without_overflow(T):
    x = T.tensor(23500, dtype=T.int64)
    q = 392486996410368
    assert (x % q).item() == 23500
    assert (-x % q).item() == q - 23500
    assert (x % -q).item() == 23500 - q
    assert (-x % -q).item() == -23500


def test_number_to_a_tensor_power(T):
    m = T.randn(10, 10)
    np.testing.assert_allclose(values(T.pow(2, m)), values(2**m), rtol=1e-6)
    s = T.randn(1).squeeze()
    assert s.dim() == 0
    assert T.pow(2, s).item() == pytest.approx((2**s).item(), rel=1e-6)


def test_ldexp(T):
    rng = np.random.default_rng(63)
    mantissas = rng.standard_normal(64).astype(np.float32)
    exponents = rng.integers(-31, 31, 64).astype(np.int32)
    expected = np.ldexp(mantissas, exponents)
    m, e = T.tensor(mantissas), T.tensor(exponents)
    np.testing.assert_allclose(values(T.ldexp(m, e)), expected, rtol=1e-6)
    np.testing.assert_allclose(values(m.ldexp(e)), expected, rtol=1e-6)
    m.ldexp_(e)
    np.testing.assert_allclose(values(m), expected, rtol=1e-6)
    special = np.array([np.inf, -np.inf, np.inf, np.nan], dtype=np.float32)
    e = rng.integers(0, 31, 4).astype(np.int32)
    same(T.ldexp(T.tensor(special), T.tensor(e)), np.ldexp(special, e))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_lerp(T, dtype):
    rng = np.random.default_rng(64)

    def make(shape):
        a = rng.standard_normal(shape)
        if dtype.startswith("complex"):
            a = a + 1j * rng.standard_normal(shape)
        return T.tensor(np.asarray(a).astype(dtype))

    for s1, s2, s3 in itertools.product([(), (5,), (5, 5)], repeat=3):
        start, end = make(s1), make(s2)
        weights = [make(s3), 0.37]
        if dtype.startswith("complex"):
            weights += [complex(0, 1), complex(0.4, 1.2)]
        for weight in weights:
            got = T.lerp(start, end, weight)
            same(start.lerp(end, weight), values(got))
            out = T.tensor(1.0, dtype=getattr(T, dtype))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (out is resized, with PyTorch's deprecation warning)
                T.lerp(start, end, weight, out=out)
            same(out, values(got))
            np.testing.assert_allclose(values(got), values(start + weight * (end - start)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("base2", [False, True])
def test_logaddexp(T, dtype, base2):
    rng = np.random.default_rng(65)
    ours, reference = (T.logaddexp2, np.logaddexp2) if base2 else (T.logaddexp, np.logaddexp)

    def check(a, b):
        np.testing.assert_allclose(values(ours(T.tensor(a), T.tensor(b))), reference(a, b), rtol=1e-6, atol=1e-7)

    a = (rng.standard_normal((64, 2)) - 0.5).astype(dtype)
    b = (rng.standard_normal((64, 2)) - 0.5).astype(dtype)
    check(a, b)
    check(a[:3], b[:3])
    check(a * 10000, b * 10000)
    check(np.array([np.inf, -np.inf, np.inf, np.nan], dtype), np.array([np.inf, -np.inf, -np.inf, np.nan], dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_add(T, dtype):
    rng = np.random.default_rng(66)

    def make(shape):
        a = rng.standard_normal(shape)
        return T.tensor((a + 1j * rng.standard_normal(shape) if dtype[0] == "c" else a).astype(dtype))

    m, v = make((20, 20)), make(20)
    same(T.add(m[4], v), values(m)[4] + values(v))
    same(T.add(m[:, 4], v), values(m)[:, 4] + values(v))
    for key in (3, (slice(None), 3)):
        res = m.clone()
        res[key].add_(2)
        expected = values(m).copy()
        expected[key] += 2
        same(res, expected)
    same(m + 3, values(m + T.tensor(3)))
    same(3 + m, values(T.tensor(3) + m))
    m2 = make((20, 20)).t()
    res = m + m2
    assert res.is_contiguous()
    same(res, values(m + m2.contiguous()))
    assert (T.tensor([1.0], dtype=getattr(T, dtype)) + T.tensor([], dtype=getattr(T, dtype))).shape == (0,)


def test_add_of_other_kinds(T):
    one = T.tensor(1, dtype=T.uint8)
    same(T.add(one, 1), 2, "uint8")
    m1 = T.tensor([True, False, False, True, False, False])
    m2 = T.tensor([True, True, False, False, False, True])
    same(m1 + m2, [True, True, False, True, False, True], "bool")
    a = T.zeros(2, 3, dtype=T.bool)
    same(T.add(a, a, alpha=0), np.zeros((2, 3), bool))
    c1 = T.tensor([2 + 3j, 4 + 5j], dtype=T.complex64)
    c2 = T.tensor([4 + 5j, 2 + 3j], dtype=T.complex64)
    np.testing.assert_allclose(values(T.add(c1, c2, alpha=0.1)), [2.4 + 3.5j, 4.2 + 5.3j], rtol=1e-6)
    np.testing.assert_allclose(values(T.add(c1, c2, alpha=complex(0.1, 0.2))), [1.4 + 4.3j, 3.6 + 5.7j], rtol=1e-6)
    same(T.add(c1, c2, alpha=2), [10 + 13j, 8 + 11j], "complex64")


def test_alpha_and_out_refusals(T):
    m1, m2 = T.tensor([1], dtype=T.int8), T.tensor([2], dtype=T.int8)
    for op in (T.add, T.sub):
        raises(RuntimeError, r"Boolean alpha only supported for Boolean results\.", op, m1, m2, alpha=True)
        raises(RuntimeError, r"For integral input tensors, argument alpha must not be a floating point number\.",
               op, m1, m2, alpha=1.0)
    for dtype in (T.float32, T.float64):
        raises(RuntimeError, r"For non-complex input tensors, argument alpha must not be a complex number\.", T.add,
               T.tensor([3.0, 4.0], dtype=dtype), T.tensor([4.0, 3.0], dtype=dtype), alpha=complex(0.1, 0.2))
    z = T.tensor(4 + 4j, dtype=T.complex64)
    raises(RuntimeError, "result type ComplexFloat can't be cast to the desired output type Double", T.add, z, z,
           out=T.tensor(4.0, dtype=T.float64))


def test_subtraction_of_bools_is_refused(T):
    m1 = T.tensor([True, False, False, True, False, False])
    m2 = T.tensor([True, True, False, False, False, True])
    raises(RuntimeError, r"Subtraction, the `\-` operator, with two bool tensors is not supported. "
                         r"Use the `\^` or `logical_xor\(\)` operator instead.", lambda: m1 - m2)
    for call in (lambda: 1 - m1, lambda: m2 - 1):
        raises(RuntimeError, r"Subtraction, the `\-` operator, with a bool tensor is not supported. If you are "
                             r"trying to invert a mask, use the `\~` or `logical_not\(\)` operator instead.", call)


def test_mul_into_a_column_and_of_bools(T):
    m = T.randn(10, 10)
    res = m.clone()
    res[:, 3].mul_(2)
    expected = values(m).copy()
    expected[:, 3] *= 2
    same(res, expected)
    a1 = T.tensor([True, False, False, True])
    a2 = T.tensor([True, False, True, False])
    same(a1 * a2, [True, False, False, False], "bool")


def test_bool_comparisons(T):
    a = T.tensor([True, False, True, False, True, False])
    b = T.tensor([True, False, True, True, True, True])
    same(a == b, [1, 1, 1, 0, 1, 0])
    same(a != b, [0, 0, 0, 1, 0, 1])
    same(a < b, [0, 0, 0, 1, 0, 1])
    same(a > b, [0, 0, 0, 0, 0, 0])
    same(a >= b, [1, 1, 1, 0, 1, 0])
    same(a <= b, [1, 1, 1, 1, 1, 1])
    same(a > False, [1, 0, 1, 0, 1, 0])
    same(a == T.tensor(True), [1, 0, 1, 0, 1, 0])
    same(a == T.tensor(0, dtype=T.bool), [0, 1, 0, 1, 0, 1])
    assert not a.equal(b)


@pytest.mark.parametrize("dtype", REAL)
def test_comparison_methods(T, dtype):
    if dtype == "bool":
        x = T.tensor([True, False, True, False])
        for name, expected in (("lt", [0, 1, 0, 1]), ("le", [1, 1, 1, 1]), ("ge", [1, 0, 1, 0]), ("gt", [0, 0, 0, 0]),
                               ("eq", [1, 0, 1, 0]), ("ne", [0, 1, 0, 1])):
            same(getattr(x, name)(True), np.array(expected, bool), "bool")
        return
    x = T.tensor([1, 2, 3, 4], dtype=getattr(T, dtype))
    b = T.tensor([2], dtype=getattr(T, dtype))
    for name, expected in (("lt", [1, 0, 0, 0]), ("le", [1, 1, 0, 0]), ("ge", [0, 1, 1, 1]), ("gt", [0, 0, 1, 1]),
                           ("eq", [0, 1, 0, 0]), ("ne", [1, 0, 1, 1])):
        same(getattr(x, name)(2), np.array(expected, bool), "bool")
        same(getattr(x, name)(b), np.array(expected, bool), "bool")


def test_atan2(T):
    rng = np.random.default_rng(67)
    for size in ((2, 2), (3, 3), (5, 5)):
        a, b = rng.random(size), rng.random(size)
        np.testing.assert_allclose(values(T.tensor(a).atan2(T.tensor(b))), np.arctan2(a, b), rtol=1e-15)
    for dtype in (T.float32, T.float64):
        for x, y, expected in ((0, 0, 0), (0, 1, math.pi / 2), (0, -1, -math.pi / 2), (-1, 0, math.pi), (1, 0, 0),
                               (-1, -1, -3 * math.pi / 4), (1, 1, math.pi / 4), (1, -1, -math.pi / 4),
                               (-1, 1, 3 * math.pi / 4)):
            got = T.atan2(T.tensor([y], dtype=dtype), T.tensor([x], dtype=dtype))
            assert got.item() == pytest.approx(expected, abs=1e-6)


def test_trapezoid(T):
    rng = np.random.default_rng(68)
    for sizes, dim, dx in (((2, 3, 4), 1, 1), ((10, 2), 0, 0.1), ((1, 10), 0, 2.3), ((0, 2), 0, 1.0), ((0, 2), 1, 1.0)):
        t = rng.standard_normal(sizes).astype(np.float32)
        got = T.trapezoid(T.tensor(t), dx=dx, dim=dim)
        expected = np.trapezoid(t, dx=dx, axis=dim)
        assert got.shape == expected.shape
        np.testing.assert_allclose(values(got), expected, rtol=1e-5, atol=1e-6)
    for sizes, dim, x in (((2, 3, 4), 1, [1.0, 2.0, 3.0]), ((10, 2), 0, [2.0, 3.0, 4.0, 7.0, 11.0, 14.0, 22.0, 26.0,
                                                                        26.1, 30.3]),
                          ((1, 10), 0, [1.0]), ((0, 2), 0, []), ((0, 2), 1, [1.0, 2.0])):
        t = rng.standard_normal(sizes).astype(np.float32)
        got = T.trapezoid(T.tensor(t), x=T.tensor(x), dim=dim)
        expected = np.trapezoid(t, x=np.array(x, np.float32), axis=dim)
        assert got.shape == expected.shape
        np.testing.assert_allclose(values(got), expected, rtol=1e-5, atol=1e-6)
    raises(IndexError, "Dimension out of range", T.trapezoid, T.randn(2, 3), x=T.tensor([]), dim=2)
    raises(RuntimeError, "There must be one `x` value for each sample point", T.trapezoid, T.randn(2, 3),
           x=T.tensor([1.0, 2.0]), dim=1)


FLOAT_POWER = ["uint8", "int16", "int64", "float32", "float64", "complex64", "complex128"]


@pytest.mark.parametrize("base_dtype", FLOAT_POWER)
def test_float_power(T, base_dtype):
    rng = np.random.default_rng(69)

    def make(dtype, low, high):
        a = rng.uniform(low, high, 30)
        if dtype.startswith("complex"):
            a = a + 1j * rng.uniform(low, high, 30)
        return a.astype(dtype) if not dtype.startswith(("u", "i")) else np.floor(a).astype(dtype)

    for exp_dtype in FLOAT_POWER:
        if exp_dtype == "uint8":
            continue
        base_np, exp_np = make(base_dtype, 1, 100), make(exp_dtype, -2, 2)
        exp_np[[0, 4, 6]] = 0
        complex_result = base_dtype.startswith("complex") or exp_dtype.startswith("complex")
        out_dtype = "complex128" if complex_result else "float64"
        expected = np.float_power(base_np, exp_np)
        base, exponent = T.tensor(base_np), T.tensor(exp_np)
        np.testing.assert_allclose(values(T.float_power(base, exponent)), expected, rtol=1e-6)
        np.testing.assert_allclose(values(base.float_power(exponent)), expected, rtol=1e-6)
        if base_dtype != out_dtype:
            raises(RuntimeError, "operation's result requires dtype", base.clone().float_power_, exponent)
        else:
            np.testing.assert_allclose(values(base.clone().float_power_(exponent)), expected, rtol=1e-6)
        out = T.empty(30, dtype=getattr(T, out_dtype))
        T.float_power(base, exponent, out=out)
        np.testing.assert_allclose(values(out), expected, rtol=1e-6)
    numbers = [-2.8, -2, -1, -0.5, 0.5, 1, 2] + ([-2.5j, 1.0j, 1.0 + 1.0j] if base_dtype.startswith("complex") else [])
    base_np = make(base_dtype, 1, 100)
    base = T.tensor(base_np)
    for number in numbers:
        expected = np.float_power(base_np, number)
        np.testing.assert_allclose(values(T.float_power(base, number)), expected, rtol=1e-6)
        needed = "complex128" if base_dtype.startswith("complex") or isinstance(number, complex) else "float64"
        if base_dtype != needed:
            raises(RuntimeError, "operation's result requires dtype", base.clone().float_power_, number)
        exponent_np = make("float64", -2, 2)
        np.testing.assert_allclose(values(T.float_power(number, T.tensor(exponent_np))),
                                   np.float_power(number, exponent_np), rtol=1e-6)


def test_in_place_abs_of_complex_is_refused_and_comparisons_name_the_sizes():
    import autograd

    with pytest.raises(RuntimeError, match="In-place abs is not supported for complex tensors"):
        autograd.tensor([1 + 1j]).abs_()
    with pytest.raises(RuntimeError, match="In-place abs is not supported for complex tensors"):
        autograd.tensor([1 + 1j]).absolute_()
    x = autograd.tensor([-1.0, 2.0])
    assert x.abs_() is x and x.tolist() == [1.0, 2.0]
    for compare in (lambda a, b: a < b, lambda a, b: a >= b, lambda a, b: a == b, lambda a, b: a != b):
        with pytest.raises(RuntimeError, match=r"The size of tensor a \(2\) must match the size of tensor b \(3\)"):
            compare(autograd.ones(2), autograd.ones(3))
    assert (autograd.ones(2) == "text") is False  # (PyTorch leaves a string to Python: not equal)
