"""Type promotion ported from PyTorch's test/test_type_promotion.py (TestTypePromotion).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), most
of them once with float32 and once with float64 as the default dtype, as PyTorch's do.
"""

import itertools
import operator
import warnings

import numpy as np
import pytest

from tests.ported import dtype_name, raises, same, values

MATH_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
               "complex64", "complex128"]


@pytest.fixture(params=["float32", "float64"])
def default(T, request):
    """The default dtype's name, set for the test and restored after it."""
    before = T.get_default_dtype()
    T.set_default_dtype(getattr(T, request.param))
    yield request.param
    T.set_default_dtype(before)


def test_in_place_ops_do_not_promote(T, default):
    ints = T.ones(4, 4, 4, dtype=T.int32)
    raises(RuntimeError, "can't be cast to", ints.add_, 1.5)
    ints.add_(T.ones(4, 4, 4, dtype=T.int64))
    ints.add_(1)
    same(ints, np.full((4, 4, 4), 3), "int32")
    flags = T.tensor([1, 1, 1], dtype=T.bool)
    small = T.tensor([1, 1, 1], dtype=T.uint8)
    raises(RuntimeError, "can't be cast to", flags.add_, small)  # bool is its own category
    small *= T.tensor([1, 1, 1], dtype=T.int16)  # signed into unsigned is allowed (no value inspection)
    same(small, [1, 1, 1], "uint8")


def test_numbers_do_not_promote_within_their_category(T, default):
    assert dtype_name(T.ones(3, dtype=T.uint8) + 5) == "uint8"
    a = T.ones(4, 4, 4, dtype=T.int32)
    same(a + 1, np.full((4, 4, 4), 2), "int32")
    f = T.rand(3, dtype=T.float32)
    u = T.tensor([0, 0, 1], dtype=T.uint8)
    assert dtype_name(f * 5) == "float32"
    assert dtype_name(u + 1) == "uint8"
    same(u + 1000, [232, 232, 233], "uint8")  # wraps around, as integers overflow
    other = T.tensor(5.5, dtype=T.float64)  # a 0-d tensor, not a number
    assert dtype_name(u + 5.5) == default
    assert dtype_name(u + other) == "float64"
    assert dtype_name(f + other) == "float32"  # a 0-d tensor does not raise the precision of its category


def test_tensor_promotion(T, default):
    for low, high in (("int32", "int64"), ("float32", "float64"), ("complex64", "complex128"), ("int32", "float32")):
        a = T.ones(4, 4, 4, dtype=getattr(T, low))
        b = T.ones(4, 4, 4, dtype=getattr(T, high))
        for c in (a + b, b + a):
            same(c, np.full((4, 4, 4), 2), high)
    z = T.randn(3, dtype=T.complex64)
    assert dtype_name(z * 5) == "complex64"
    assert dtype_name(z + T.tensor(5.5, dtype=T.float64)) == "complex64"


def test_complex_number_times_tensor(T, default):
    a = 1j * T.ones(2)
    a = a + 1j
    b = T.tensor([2j, 2j])
    same(a, [2j, 2j])
    assert a.dtype == b.dtype
    assert dtype_name(a) == ("complex64" if default == "float32" else "complex128")


def test_half(T, default):
    half = T.tensor(5.5, dtype=T.float16)
    same(half + 2.2, np.float16(5.5) + np.float16(2.2), "float16")
    same(half + 100000, np.inf, "float16")
    assert dtype_name(half + T.tensor(100000.0)) == default


def test_out_of_another_dtype(T, default):
    f = T.tensor([1, 1, 1, 1], dtype=T.float32)
    raises(RuntimeError, "can't be cast to", T.add, f, f, out=T.tensor([0, 0, 0, 0], dtype=T.int64))
    d = T.tensor([1, 1, 1, 1], dtype=T.float64)
    T.add(f, f, out=d)
    same(d, [2, 2, 2, 2], "float64")
    for op in (T.neg, T.abs, T.floor, T.ceil, T.trunc, T.round, T.sign, T.frac):  # ops that keep their dtype
        raises(RuntimeError, "Found dtype Double but expected Float", op, T.ones(4, dtype=T.float32),
               out=T.ones(4, dtype=T.float64))
    T.sin(T.ones(4, dtype=T.float32), out=d)  # a promoting op writes into a wider out
    # (PyTorch's float32 sin and NumPy's are 1 ulp apart here)
    np.testing.assert_allclose(values(d), np.full(4, np.sin(1.0)), rtol=1e-6)
    assert dtype_name(d) == "float64"
    raises(RuntimeError, "expected dtype", T.lerp, T.ones(4, dtype=T.float64), T.ones(4, dtype=T.float32), 1)


def test_mixed_dtype_backward(T, default):
    f = T.ones(3, 3, dtype=T.float32, requires_grad=True)
    tens = f * T.tensor([10.0], dtype=T.float64)
    assert dtype_name(tens) == "float64"  # two dimensioned tensors: the higher precision wins
    (tens + 2).sum().backward()
    same(f.grad, np.full((3, 3), 10), "float32")
    for op in (T.add, T.sub, T.rsub, T.mul, T.div):
        for d1, d2 in itertools.product(["float32", "float64"], ["float32", "float64", "int32", "int64"]):
            x = T.ones(10, dtype=getattr(T, d1), requires_grad=True)
            y = T.ones(10, dtype=getattr(T, d2))
            op(x, y).sum().backward()
            assert dtype_name(x.grad) == d1  # the gradient takes its input's dtype back
            expected = {"add": 1, "sub": 1, "rsub": -1, "mul": 1, "div": 1}[op.__name__]
            same(x.grad, np.full(10, expected))


def _sample(dtype, rng, no_zeros=False):
    shape = (5, 5, 5)
    if dtype == "bool":
        return rng.integers(int(no_zeros), 2, shape).astype(bool)
    if dtype.startswith(("float", "complex")):
        a = rng.standard_normal(shape).astype(np.float32)
        if no_zeros:
            a[np.abs(a) < 0.05] = 5
        return a.astype(dtype)
    a = rng.integers(0 if dtype == "uint8" else -5, 10, shape)
    if no_zeros:
        a[a == 0] = 5
    return a.astype(dtype)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "rsub"])
def test_many_promotions(T, op):
    """op(a, b) equals op of a and b cast to their promoted dtype first, for contiguous and transposed inputs."""
    rng = np.random.default_rng(7)
    fn = getattr(T, op)
    for d1, d2 in itertools.product(MATH_DTYPES, MATH_DTYPES):
        common = T.promote_types(getattr(T, d1), getattr(T, d2))
        first, second = T.tensor(_sample(d1, rng)), T.tensor(_sample(d2, rng, op == "div"))
        for transposed in (False, True):
            a, b = (first.transpose(0, 2), second.transpose(2, 1)) if transposed else (first, second)
            assert a.is_contiguous() != transposed
            if op in ("sub", "rsub") and "bool" in (d1, d2):  # (PyTorch's test skips these: both refuse them)
                raises(RuntimeError, "Subtraction, the `-` operator, with (a bool tensor|two bool tensors) is not",
                       fn, a, b)
                continue
            result = fn(a, b)
            expected = fn(a.to(common), b.to(common))
            assert result.dtype == expected.dtype, (op, d1, d2)
            np.testing.assert_array_equal(values(result), values(expected), err_msg=f"{op} {d1} {d2}")


def test_alpha_of_the_wrong_kind(T, default):
    x = T.ones(4, dtype=T.int32)
    raises(RuntimeError, "alpha must not be", T.add, x, x, alpha=1.1)
    x = x.to(T.bool)
    raises(RuntimeError, "alpha must not be", T.add, x, x, alpha=1.1)
    same(T.add(x, x, alpha=True), values(x + x), "bool")


def test_booleans(T, default):
    one = T.tensor([True])
    same(one + one, [True], "bool")
    same(one + True, [True], "bool")
    same(T.add(True, True), True, "bool")
    same(T.add(False, False), False, "bool")
    same(T.add(False, True), True, "bool")
    raises(RuntimeError, "Boolean alpha only supported", T.add, 1, 1, alpha=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch 1's add(input, alpha, other): deprecated, with a warning
        same(T.add(T.tensor(True), T.tensor(True), True), True, "bool")
        same(T.add(T.tensor([1.0, 1.0]), 3.0, T.tensor([2.0, 2.0])), [7, 7], default)
        same(T.sub(T.tensor([1.0, 1.0]), 3.0, T.tensor([2.0, 2.0])), [-5, -5], default)
        same(T.tensor([1.0, 1.0]).add(3.0, T.tensor([2.0, 2.0])), [7, 7], default)
    if T.__name__ == "autograd":  # (PyTorch warns once in a process, chainrule at every call)
        with pytest.warns(UserWarning, match="deprecated"):
            T.add(T.tensor([1.0]), 2.0, T.tensor([1.0]))


def test_factories_of_bools(T, default):
    same(T.arange(False, True), [0], "int64")
    same(T.arange(True), [0], "int64")
    same(T.arange(False, True, 0.5), [0, 0.5], default)
    same(T.arange(False, False), np.zeros(0), "int64")
    same(T.linspace(False, True, steps=5), values(T.linspace(0, 1, steps=5)), default)
    np.testing.assert_allclose(values(T.logspace(False, True, steps=5)), values(T.logspace(0, 1, steps=5)))
    same(T.scalar_tensor(False), 0.0, default)


def test_result_type(T, default):
    i32 = T.int32
    assert T.result_type(T.tensor(1, dtype=i32), 1) == i32
    assert T.result_type(1, T.tensor(1, dtype=i32)) == i32
    assert dtype_name(T.result_type(1, 1.0)) == default
    assert dtype_name(T.result_type(T.tensor(1), 1.0)) == default
    assert T.result_type(T.tensor(1, dtype=T.int64), T.tensor([1, 1], dtype=i32)) == i32
    assert T.result_type(T.tensor([1.0, 1.0], dtype=T.float32), 1.0) == T.float32
    assert T.result_type(T.tensor(1.0, dtype=T.float32), T.tensor(1, dtype=T.float64)) == T.float64


def test_can_cast_and_promote_types(T, default):
    assert T.can_cast(T.float64, T.float32)
    assert not T.can_cast(T.float32, T.int32)
    assert T.promote_types(T.float32, T.int32) == T.float32
    assert T.promote_types(T.float32, T.float64) == T.float64
    assert T.promote_types(T.int32, T.uint8) == T.int32
    for name in MATH_DTYPES:
        assert T.promote_types(getattr(T, name), getattr(T, name)) == getattr(T, name)


COMPARISON_VALUES = {"uint8": 1 << 5, "int8": 1 << 5, "int16": 1 << 10, "int32": 1 << 20, "int64": 1 << 35,
                     "float16": 1 << 10, "float32": 1 << 20, "float64": 1 << 35}


@pytest.mark.parametrize("name,py", [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                                     ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne)])
def test_comparisons_promote(T, name, py):
    fn = getattr(T, name)
    for (d1, v1), (d2, v2) in itertools.product(COMPARISON_VALUES.items(), repeat=2):
        for shape in ((1,), ()):
            t1 = T.tensor([v1] if shape else v1, dtype=getattr(T, d1))
            t2 = T.tensor([v2] if shape else v2, dtype=getattr(T, d2))
            expected = np.full(shape, py(v1, v2))
            same(fn(t1, t2, out=T.empty(1, dtype=T.bool)), expected, "bool")
            same(fn(t1, t2), expected, "bool")
            same(py(t1, t2), expected, "bool")
            assert dtype_name(t1) == d1 and dtype_name(t2) == d2


def test_less_than_a_float(T, default):
    for name in MATH_DTYPES[1:9]:
        for x in (T.tensor([0], dtype=getattr(T, name)), T.tensor(0, dtype=getattr(T, name))):
            for half in (0.5, T.tensor(0.5)):
                r = x < half
                assert dtype_name(r) == "bool" and bool(r.all())


def test_index_put_needs_matching_dtypes(T, default):
    a = T.ones(5, 2, dtype=T.float64)
    b = T.zeros(5, dtype=T.int32)
    raises(RuntimeError, "Index put requires the source and destination dtypes match", a.__setitem__,
           (slice(None), [1]), b.unsqueeze(-1))
    tmp = T.ones(9, 9, dtype=T.float32)
    mask = T.ones(10, 10, dtype=T.uint8)
    same(tmp + mask[1:, 1:], np.full((9, 9), 2), "float32")


def test_transposed_bool_comparison(T, default):
    a = T.tensor([[True, True], [False, True]])
    same(a.t() == 0, values(a.t() == False), "bool")  # noqa: E712
    same(a.t() == 0, [[False, True], [False, False]])


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64"])
def test_true_divide_of_integers(T, default, dtype):
    rng = np.random.default_rng(8)
    dividend_np = (rng.standard_normal(5) * 100).astype(dtype)
    divisor_np = np.arange(1, 6).astype(dtype)
    dividend, divisor = T.tensor(dividend_np), T.tensor(divisor_np)
    quotient = T.true_divide(dividend, divisor)
    np.testing.assert_allclose(values(quotient), dividend_np.astype(default) / divisor_np.astype(default),
                               rtol=1e-6)
    assert dtype_name(quotient) == default
    assert dtype_name(dividend / divisor) == default
    np.testing.assert_allclose(values(T.true_divide(dividend, 2.0)), dividend_np.astype(default) / 2, rtol=1e-6)
    out = T.empty(5, dtype=getattr(T, dtype))
    raises(RuntimeError, "can't be cast to", T.true_divide, dividend, divisor, out=out)
    raises(RuntimeError, "can't be cast to", T.true_divide, dividend, 2, out=out)
    raises(RuntimeError, "can't be cast to", T.div, dividend, divisor, out=out)
    raises(RuntimeError, None, dividend.true_divide_, divisor)
    raises(RuntimeError, None, dividend.true_divide_, 2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_true_divide_of_floats(T, dtype):
    rng = np.random.default_rng(9)
    dividend_np = (rng.standard_normal(5) * 100).astype(dtype)
    dividend, divisor = T.tensor(dividend_np), T.arange(1, 6).to(getattr(T, dtype))
    out = T.empty(5, dtype=getattr(T, dtype))
    got = T.true_divide(dividend, divisor, out=out)
    assert got is out
    same(out, values(dividend / divisor), dtype)
    same(T.true_divide(dividend, 2, out=out), dividend_np / np.asarray(2, dtype))
    same(dividend.clone().true_divide_(divisor), values(dividend.clone().div_(divisor)))
    same(dividend.clone().true_divide_(2), values(dividend.clone().div_(2)))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64"])
def test_integer_division_is_true_division(T, dtype):
    a = T.tensor(1, dtype=getattr(T, dtype))
    b = T.tensor(2, dtype=getattr(T, dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning any more: / divides truly
        same(a / b, 0.5, "float32")
        same(T.div(a, b), 0.5, "float32")
    raises(RuntimeError, "can't be cast to", T.div, a, b, out=T.empty(1, dtype=getattr(T, dtype)))
    raises(RuntimeError, "Integer division with addcdiv is no longer supported", T.addcdiv, a, b, b)
    raises(RuntimeError, "Integer division with addcdiv is no longer supported", a.clone().addcdiv_, b, b)
    raises(RuntimeError, "Integer division with addcdiv is no longer supported", T.addcdiv, T.ones(2), b, b)
    same(T.addcdiv(T.ones(2), T.ones(2), b), [1.5, 1.5], "float32")


@pytest.mark.parametrize("np_dtype", MATH_DTYPES)
@pytest.mark.parametrize("dtype", MATH_DTYPES)
def test_tensor_plus_numpy_array(T, dtype, np_dtype):
    """tensor + ndarray promotes as tensor + the array made a tensor (an ndarray is never a 'number'). PyTorch's
    test asks for this; PyTorch 2.13 itself hands the sum to NumPy, which promotes by its own rules (int32 +
    float32 is float64 there; pytorch/pytorch#36363), so the test runs on chainrule only."""
    if T.__name__ == "torch":
        pytest.skip("PyTorch 2.13 promotes tensor + ndarray by NumPy's rules (pytorch/pytorch#36363)")
    t = T.tensor((1,), dtype=getattr(T, dtype))
    a = np.array((1,), dtype=np_dtype)
    try:
        expected = t + T.tensor(a)
    except RuntimeError:
        return
    got = t + a
    assert got.dtype == expected.dtype
    same(got, values(expected))


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_abs_of_complex_is_real(T, dtype):
    rng = np.random.default_rng(10)
    real = "float32" if dtype == "complex64" else "float64"
    for vals in ((rng.standard_normal(12) * 10 + 1j * rng.standard_normal(12) * 10).astype(dtype),
                 np.zeros(0, dtype)):
        t = T.tensor(vals)
        np.testing.assert_allclose(values(T.abs(t)), np.abs(vals), rtol=1e-6)
        assert dtype_name(T.abs(t)) == real
        for out in (T.empty_like(t).float(), T.empty(1, dtype=getattr(T, real))):
            T.abs(t, out=out)
            np.testing.assert_allclose(values(out), np.abs(vals), rtol=1e-6)
        for out in (T.empty_like(t), T.empty(1, dtype=getattr(T, dtype))):
            T.abs(t, out=out)
            assert dtype_name(out) == dtype
            np.testing.assert_allclose(values(out), np.abs(vals).astype(dtype), rtol=1e-6)
        raises(RuntimeError, None, T.abs, t, out=T.empty(0, dtype=T.int64))
        # PyTorch's test once took |t| in place; PyTorch 2.13 refuses it (the result is not complex), and so does
        # chainrule
        if len(vals):
            raises(RuntimeError, "In-place abs is not supported for complex tensors", t.abs_)
