"""torch.testing's assert_close and make_tensor, ported from PyTorch's test/test_testing.py (TestAssertClose,
TestAssertCloseErrorMessage, TestAssertCloseContainer, TestMakeTensor, and the isclose-based tolerance cases of
TestTesting): tolerances per dtype, equal_nan, check_dtype, check_stride, the rtol/atol both-or-neither rule,
messages that name the mismatched elements and the failing item of a container, Python numbers, NumPy arrays,
None; make_tensor's shapes, bounds, requires_grad, noncontiguous and exclude_zero, and its argument checks.

Each test runs on chainrule's `autograd.testing` and, where it is installed, on `torch.testing` (fixture `T`).
As in PyTorch's tests, every comparison also runs with its inputs wrapped in sequences and mappings.
"""

import collections
import functools
import itertools
import re

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import raises, values

nn = ported_nn.nn  # the fixture

ALL_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "complex64",
              "complex128"]


def wrapped(actual, expected):
    """The pair, and the pair inside tuples, lists, dicts, OrderedDicts, and nestings of them."""
    ordered = collections.OrderedDict
    return [
        (actual, expected), ((actual,), (expected,)), ([actual], [expected]), ((actual,), [expected]),
        ({"t": actual}, {"t": expected}), (ordered([("t", actual)]), ordered([("t", expected)])),
        ({"t": actual}, ordered([("t", expected)])), ([(actual,)], ([expected],)),
        ([{"t": actual}], (ordered([("t", expected)]),)), ({"t": [actual]}, ordered([("t", (expected,))])),
    ]


def every_assert_close(T, actual, expected):
    """assert_close with the pair in each of its wrappings (PyTorch's assert_close_with_inputs)."""
    return [functools.partial(T.testing.assert_close, *pair) for pair in wrapped(actual, expected)]


def dtype_of(T, name):
    return getattr(T, name)


# -- TestAssertClose --------------------------------------------------------------------------------------

def test_subclasses_compare_unless_disallowed(T, nn):
    actual = T.tensor(0.5)
    expected = nn.Parameter(actual.clone())
    for check in every_assert_close(T, actual, expected):
        check()
        raises(TypeError, re.escape(str(type(expected))), check, allow_subclasses=False)


def test_a_tensor_and_an_array_do_not_compare(T):
    actual = T.zeros(2)
    expected = actual.numpy()
    for check, allow_subclasses in itertools.product(every_assert_close(T, actual, expected), (True, False)):
        raises(TypeError, re.escape(str(type(expected))), check, allow_subclasses=allow_subclasses)
    raises(TypeError, "No comparison pair", T.testing.assert_close, T.tensor(1.0), 1.0)
    raises(TypeError, "No comparison pair", T.testing.assert_close, 1, T.tensor(1))
    raises(TypeError, "No comparison pair", T.testing.assert_close, T.tensor([1.0, 2.0]), [1.0, 2.0])


def test_unknown_types_are_refused(T):
    for check in every_assert_close(T, "0", "0"):  # (PyTorch 2.13 raises TypeError; its older test, ValueError)
        raises(TypeError, re.escape("<class 'str'>"), check)


def test_mismatching_shape(T):
    actual = T.zeros(())
    for check in every_assert_close(T, actual, actual.clone().reshape((1,))):
        raises(AssertionError, "shape", check)


def test_mismatching_dtype_and_check_dtype_off(T):
    for check in every_assert_close(T, T.zeros((), dtype=T.float32), T.zeros((), dtype=T.int32)):
        raises(AssertionError, "dtype", check)
    for check in every_assert_close(T, T.ones((), dtype=T.float32), T.ones((), dtype=T.int32)):
        check(check_dtype=False)


def test_mismatching_stride_only_with_check_stride(T):
    actual = T.rand((2, 2))
    expected = T.as_strided(actual.clone().t().contiguous(), actual.shape, actual.stride()[::-1])
    for check in every_assert_close(T, actual, expected):
        raises(AssertionError, "stride", check, check_stride=True)
        check()


def test_check_device_off_and_on_one_device(T):
    for check in every_assert_close(T, T.ones(2), T.ones(2)):
        check(check_device=False)
        check(check_device=True)


@pytest.mark.parametrize("given", [{"rtol": 0.0}, {"atol": 0.0}])
def test_rtol_and_atol_come_together(T, given):
    actual = T.zeros(())
    for check in every_assert_close(T, actual, actual.clone()):
        raises(ValueError, "Both 'rtol' and 'atol' must be either specified or omitted", check, **given)


def test_values_and_the_given_tolerances(T):
    eps = 1e-3
    for check in every_assert_close(T, T.tensor(1), T.tensor(2)):
        raises(AssertionError, None, check)
    for check in every_assert_close(T, T.tensor(1.0), T.tensor(1.0 + eps)):
        raises(AssertionError, None, check, rtol=eps / 2, atol=0.0)
        check(rtol=eps * 2, atol=0.0)
    for check in every_assert_close(T, T.tensor(0.0), T.tensor(eps)):
        raises(AssertionError, None, check, rtol=0.0, atol=eps / 2)
        check(rtol=0.0, atol=eps * 2)
    T.testing.assert_close(T.tensor(1.0), T.tensor(1.0))


@pytest.mark.parametrize("dtype, rtol, atol", [("float16", 1e-3, 1e-5), ("float32", 1.3e-6, 1e-5),
                                               ("float64", 1e-7, 1e-7), ("complex64", 1.3e-6, 1e-5),
                                               ("complex128", 1e-7, 1e-7)])
def test_default_tolerances_per_dtype(T, dtype, rtol, atol):
    dt = dtype_of(T, dtype)
    base = 4.0
    inside = base + 0.9 * (atol + rtol * base)
    outside = base + 1.2 * (atol + rtol * base)
    if dtype == "float16":  # (the nearest float16 neighbours of 4: 4 + 2**-8 is inside, 4 + 2 * 2**-8 not)
        inside, outside = base + 2 ** -8, base + 2 ** -7
    T.testing.assert_close(T.tensor([inside], dtype=dt), T.tensor([base], dtype=dt))
    raises(AssertionError, "not close", T.testing.assert_close, T.tensor([outside], dtype=dt),
           T.tensor([base], dtype=dt))


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64"])
def test_integers_and_bools_compare_exactly(T, dtype):
    dt = dtype_of(T, dtype)
    T.testing.assert_close(T.tensor([1, 0], dtype=dt), T.tensor([1, 0], dtype=dt))
    raises(AssertionError, "not equal", T.testing.assert_close, T.tensor([1, 1], dtype=dt), T.tensor([1, 0], dtype=dt))


def test_integers_past_2_to_the_53_are_not_rounded_together(T):
    raises(AssertionError, "not equal", T.testing.assert_close, T.tensor(2 ** 53, dtype=T.int64),
           T.tensor(2 ** 53 + 1, dtype=T.int64))
    raises(AssertionError, "not equal", T.testing.assert_close, 2 ** 53, 2 ** 53 + 1)


def test_default_tolerances_of_two_dtypes_are_the_looser(T):
    # at the promoted dtype's (float64) tolerances these would differ; at float16's they are close
    for check in every_assert_close(T, T.tensor(0.999, dtype=T.float16), T.tensor(1.0, dtype=T.float64)):
        check(check_dtype=False)
    for check in every_assert_close(T, T.tensor(1.0, dtype=T.float32), T.tensor(1.0 + 1e-6, dtype=T.float64)):
        check(check_dtype=False)
    raises(AssertionError, "not close", T.testing.assert_close, T.tensor(1.0, dtype=T.float64),
           T.tensor(1.0 + 1e-6, dtype=T.float64))


def test_conjugate_bit(T):
    for check in every_assert_close(T, T.tensor(complex(1, 1)).conj(), T.tensor(complex(1, -1))):
        check()


NANS = [(float("nan"), float("nan")), (complex(float("nan"), 0), complex(0, float("nan"))),
        (complex(float("nan"), float("nan")), complex(float("nan"), 0)),
        (complex(float("nan"), float("nan")), complex(float("nan"), float("nan")))]


@pytest.mark.parametrize("actual, expected", NANS)
def test_nan_only_with_equal_nan(T, actual, expected):
    for check in every_assert_close(T, actual, expected):
        raises(AssertionError, None, check)
        check(equal_nan=True)
    for check in every_assert_close(T, T.tensor([1.0, actual]), T.tensor([1.0, expected])):
        raises(AssertionError, None, check)
        check(equal_nan=True)


def test_nan_is_not_close_to_a_number_even_with_equal_nan(T):
    raises(AssertionError, "Greatest absolute difference: nan at index \\(1,\\)", T.testing.assert_close,
           T.tensor([1.0, float("nan")]), T.tensor([1.0, 2.0]), equal_nan=True)
    T.testing.assert_close(T.tensor([float("inf"), -float("inf")]), T.tensor([float("inf"), -float("inf")]))
    raises(AssertionError, "not close", T.testing.assert_close, T.tensor([float("inf")]), T.tensor([-float("inf")]))


def test_numpy_arrays(T):
    actual = np.random.default_rng(0).random((2, 2)).astype(np.float32)
    for check in every_assert_close(T, actual, actual.copy()):
        check()
    raises(AssertionError, "Mismatched elements: 1 / 2", T.testing.assert_close, np.ones(2, dtype=np.float32),
           np.array([1.0, 1.5], dtype=np.float32))


@pytest.mark.parametrize("size", [(), (0,), (10,), (10, 10), (0, 10), (10, 0)])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_a_tensor_equals_its_numpy_values(T, size, dtype):
    t = T.testing.make_tensor(size, dtype=dtype_of(T, dtype), device="cpu", low=-5, high=5)
    a = t.numpy()
    T.testing.assert_close(a, a.copy(), rtol=0, atol=0)
    T.testing.assert_close(t, T.tensor(a), rtol=0, atol=0)


def test_python_numbers(T):
    number = 7
    for actual, expected in itertools.product((int(number), float(number), complex(number)), repeat=2):
        check_dtype = type(actual) is type(expected)
        for check in every_assert_close(T, actual, expected):
            check(check_dtype=check_dtype)
    raises(AssertionError, re.escape("The (d)types do not match: <class 'int'> != <class 'float'>."),
           T.testing.assert_close, 1, 1.0)
    T.testing.assert_close(1.0, 1.0 + 1e-8)
    raises(AssertionError, "Scalars are not close", T.testing.assert_close, 1.0, 1.0 + 1e-6)


def test_bool_tensors_and_none(T):
    actual = T.tensor([True, False])
    for check in every_assert_close(T, actual, actual.clone()):
        check()
    for check in every_assert_close(T, None, None):
        check()
    for actual in (False, 0, float("nan"), T.tensor(float("nan"))):
        for check in every_assert_close(T, actual, None):
            raises(AssertionError, "None mismatch", check)


# -- TestAssertCloseErrorMessage --------------------------------------------------------------------------

def test_message_names_tensor_likes_and_scalars(T):
    for check in every_assert_close(T, T.tensor([1, 2, 3, 4]), T.tensor([1, 2, 5, 6])):
        raises(AssertionError, re.escape("Tensor-likes"), check)
    for check in every_assert_close(T, 3, 5):
        raises(AssertionError, re.escape("Scalars"), check)
    raises(AssertionError, re.escape("Scalars are not close!\n\nExpected 2.5 but got 1.0.\nAbsolute difference: 1.5 "
                                     "(up to 1e-05 allowed)\nRelative difference: 0.6 (up to 1.3e-06 allowed)"),
           T.testing.assert_close, T.tensor(1.0), T.tensor(2.5))  # a 0-d tensor reads as a scalar


def test_not_equal_and_not_close(T):
    actual = T.tensor([1, 2, 3, 4], dtype=T.float32)
    expected = T.tensor([1, 2, 5, 6], dtype=T.float32)
    for check in every_assert_close(T, actual, expected):
        raises(AssertionError, re.escape("not equal"), check, rtol=0.0, atol=0.0)
        for rtol, atol in ((1.3e-6, 0.0), (0.0, 1e-5), (1.3e-6, 1e-5)):
            raises(AssertionError, re.escape("not close"), check, rtol=rtol, atol=atol)


def test_message_counts_and_locates_the_mismatches(T):
    for check in every_assert_close(T, T.tensor([1, 2, 3, 4]), T.tensor([1, 2, 5, 6])):
        raises(AssertionError, re.escape("Mismatched elements: 2 / 4 (50.0%)"), check)
    for check in every_assert_close(T, T.tensor([[1, 2], [3, 4]]), T.tensor([[1, 2], [5, 4]])):
        raises(AssertionError, re.escape("Greatest absolute difference: 2 at index (1, 0)"), check)
    for check in every_assert_close(T, T.tensor([[1, 2], [3, 4]]), T.tensor([[1, 4], [3, 4]])):
        raises(AssertionError, re.escape("Greatest relative difference: 0.5 at index (0, 1)"), check)
    for check in every_assert_close(T, 3, 5):
        raises(AssertionError, re.escape("Absolute difference: 2"), check)
    for check in every_assert_close(T, 2, 4):
        raises(AssertionError, re.escape("Relative difference: 0.5"), check)


def test_greatest_absolute_and_relative_differences_are_found_separately(T):
    # the greatest absolute difference (10 at index 1) is not where the greatest relative one is (0.5 at 0)
    message = raises(AssertionError, None, T.testing.assert_close, T.tensor([1.0, 110.0, 5.0]),
                     T.tensor([2.0, 100.0, 5.0]))
    assert "Greatest absolute difference: 10.0 at index (1,)" in str(message)
    assert "Greatest relative difference: 0.5 at index (0,)" in str(message)
    assert "Mismatched elements: 2 / 3 (66.7%)" in str(message)


def test_unsigned_differences_do_not_wrap(T):
    message = raises(AssertionError, None, T.testing.assert_close, T.tensor([1, 2], dtype=T.uint8),
                     T.tensor([3, 2], dtype=T.uint8))
    assert "Greatest absolute difference: 2 at index (0,)" in str(message)


def test_matching_zeros_are_not_counted_as_nan(T):
    for check in every_assert_close(T, T.tensor([1.0, 0.0]), T.tensor([2.0, 0.0])):
        message = raises(AssertionError, None, check)
        assert "nan" not in str(message)


def test_message_states_the_tolerances(T):
    for check in every_assert_close(T, T.tensor((1, 2)), T.tensor((2, 2))):
        raises(AssertionError, re.escape("(up to 0.001 allowed)"), check, rtol=1e-3, atol=0.0)
        raises(AssertionError, re.escape("(up to 0.001 allowed)"), check, rtol=0.0, atol=1e-3)


def test_custom_message(T):
    for check in every_assert_close(T, T.tensor(1), T.tensor(2)):
        raises(AssertionError, "^Custom error message!$", check, msg="Custom error message!")
    raises(AssertionError, "^<<Scalars are not equal!", T.testing.assert_close, T.tensor(1), T.tensor(2),
           msg=lambda default: "<<" + default)


# -- TestAssertCloseContainer -----------------------------------------------------------------------------

def test_containers(T):
    raises(AssertionError, "The length of the sequences mismatch: 1 != 0", T.testing.assert_close, (T.zeros(()),), ())
    raises(AssertionError, re.escape("item [1]"), T.testing.assert_close, (T.tensor(1), T.tensor(1)),
           (T.tensor(1), T.tensor(2)))
    raises(AssertionError, "The keys of the mappings do not match", T.testing.assert_close, {"a": T.zeros(())}, {})
    raises(AssertionError, re.escape("item ['b']"), T.testing.assert_close, {"a": T.tensor(1), "b": T.tensor(1)},
           {"a": T.tensor(1), "b": T.tensor(2)})
    raises(AssertionError, re.escape("The failure occurred for item [0]['t']"), T.testing.assert_close,
           [{"t": T.tensor(1)}], ({"t": T.tensor(2)},))
    raises(TypeError, "No comparison pair", T.testing.assert_close, [1.0, [2.0]], [1.0, 2.0])


# -- TestMakeTensor ---------------------------------------------------------------------------------------

SHAPES = [(), (0,), (1,), (1, 1), (2,), (2, 3), (8, 16, 32)]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_make_tensor_shape_dtype_device(T, dtype):
    dt = dtype_of(T, dtype)
    for shape in SHAPES:
        for t in (T.testing.make_tensor(shape, dtype=dt, device="cpu"),
                  T.testing.make_tensor(*shape, dtype=dt, device="cpu")):
            assert isinstance(t, T.Tensor)
            assert tuple(t.shape) == shape and t.dtype == dt and t.device == T.device("cpu")


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_make_tensor_requires_grad(T, dtype):
    dt = dtype_of(T, dtype)
    assert not T.testing.make_tensor(dtype=dt, device="cpu").requires_grad
    if dtype.startswith(("float", "complex")):
        t = T.testing.make_tensor(3, dtype=dt, device="cpu", requires_grad=True)
        assert t.requires_grad and t.is_leaf
    else:
        raises(ValueError, "`requires_grad=True` is not supported for boolean and integral dtypes",
               T.testing.make_tensor, dtype=dt, device="cpu", requires_grad=True)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_make_tensor_noncontiguous(T, dtype):
    dt = dtype_of(T, dtype)
    for shape, noncontiguous in itertools.product(SHAPES, (False, True)):
        t = T.testing.make_tensor(shape, dtype=dt, device="cpu", noncontiguous=noncontiguous)
        assert tuple(t.shape) == shape
        assert t.is_contiguous() == (not noncontiguous or int(np.prod(shape)) < 2)


def test_make_tensor_noncontiguous_and_memory_format_exclude_each_other(T):
    raises(ValueError, "`noncontiguous` and `memory_format` are mutually exclusive", T.testing.make_tensor,
           (2, 3, 4, 5), dtype=T.float32, device="cpu", noncontiguous=True, memory_format=T.channels_last)
    t = T.testing.make_tensor((2, 3, 4), dtype=T.float32, device="cpu", memory_format=T.contiguous_format)
    assert t.is_contiguous()


@pytest.mark.parametrize("memory_format, shape", [(None, (2, 3, 4)), ("contiguous_format", (2, 3, 4)),
                                                  ("channels_last", (2, 3, 4, 5)),
                                                  ("channels_last_3d", (2, 3, 4, 5, 6)),
                                                  ("preserve_format", (2, 3, 4))])
@pytest.mark.parametrize("dtype", ["bool", "int64", "float32", "complex64"])
def test_make_tensor_memory_format(T, dtype, memory_format, shape):
    fmt = None if memory_format is None else getattr(T, memory_format)
    t = T.testing.make_tensor(shape, dtype=dtype_of(T, dtype), device="cpu", memory_format=fmt)
    assert tuple(t.shape) == shape
    assert t.is_contiguous(memory_format=T.contiguous_format if fmt is None else fmt)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_make_tensor_exclude_zero(T, dtype):
    t = T.testing.make_tensor(2000, dtype=dtype_of(T, dtype), device="cpu", exclude_zero=True, low=-1, high=2)
    assert (values(t) != 0).all()


def _parts(t):
    a = values(t)
    return np.concatenate([a.real.ravel(), a.imag.ravel()]) if a.dtype.kind == "c" else a.astype(np.float64)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_make_tensor_low_and_high(T, dtype, request):
    dt = dtype_of(T, dtype)
    T.manual_seed(0)  # (20000 draws: a float16 one that rounds up to `high` is all but certain, then fixed by the seed)
    a = _parts(T.testing.make_tensor(20000, dtype=dt, device="cpu", low=0, high=2))
    assert ((a >= 0) & (a < 2)).all()
    low, high = {"bool": (0, 2), "uint8": (0, 10)}.get(dtype, (-9, 10) if dtype.startswith("int") else (-9, 9))
    a = _parts(T.testing.make_tensor(20000, dtype=dt, device="cpu"))
    assert ((a >= low) & (a < high)).all()
    if dtype != "bool":  # (the default range is drawn over, not a constant)
        assert len(np.unique(a)) > 5


@pytest.mark.parametrize("low, high", [(0, 0), (1, 0), (0, -1), (1.0, 0), (0, -1.0)])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_make_tensor_low_at_least_high(T, dtype, low, high):
    dt = dtype_of(T, dtype)
    if low == high and dtype.startswith(("float", "complex")):
        with pytest.warns(FutureWarning, match="Passing `low==high` to `torch.testing.make_tensor` for floating"):
            t = T.testing.make_tensor(100, dtype=dt, device="cpu", low=low, high=high)
        assert (values(t) == (complex(low, low) if dtype.startswith("complex") else low)).all()
    else:
        raises(ValueError, "`low` must be less than `high`", T.testing.make_tensor, dtype=dt, device="cpu", low=low,
               high=high)


@pytest.mark.parametrize("low, high", [(None, float("nan")), (float("nan"), None), (float("nan"), float("nan"))])
@pytest.mark.parametrize("dtype", ["bool", "int64", "float32", "complex64"])
def test_make_tensor_low_high_nan(T, dtype, low, high):
    raises(ValueError, "`low` and `high` cannot be NaN", T.testing.make_tensor, dtype=dtype_of(T, dtype),
           device="cpu", low=low, high=high)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_make_tensor_low_high_outside_the_dtype(T, dtype):
    dt = dtype_of(T, dtype)
    if dtype == "bool":
        lowest, highest = 0, 1
    else:
        info = (np.iinfo if dtype[0] in "iu" else np.finfo)(dtype)
        lowest, highest = int(info.min), int(info.max)
    low, high = (-2, -1) if lowest == 0 else (lowest * 4, lowest * 2)
    raises(ValueError, "", T.testing.make_tensor, dtype=dt, device="cpu", low=low, high=high)
    raises(ValueError, "", T.testing.make_tensor, dtype=dt, device="cpu", low=highest * 2, high=highest * 4)


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64"])
def test_make_tensor_integral_bounds_round_up(T, dtype):
    dt = dtype_of(T, dtype)
    t = T.testing.make_tensor((1000,), dtype=dt, device="cpu", low=-(1 - 1e-4), high=1 - 1e-4)
    T.testing.assert_close(t, T.zeros((1000,), dtype=dt))
    if dtype == "bool":
        low = 1
    else:  # (make_tensor cannot draw int64's highest value, as randint's exclusive bound would overflow)
        low = int(np.iinfo(dtype).max) - (dtype == "int64")
    t = T.testing.make_tensor((1000,), dtype=dt, device="cpu", low=low, high=low + 1)
    T.testing.assert_close(t, T.full((1000,), low, dtype=dt))


def test_docstring_examples(T, nn):
    """The examples of torch.testing.assert_close's docstring (PyTorch's test_docstring_examples runs them)."""
    import math

    expected = T.tensor([1e0, 1e-1, 1e-2])
    T.testing.assert_close(T.acos(T.cos(expected)), expected)
    T.testing.assert_close(2.0 / math.sqrt(2.0), math.sqrt(2.0))
    expected = np.array([1e0, 1e-1, 1e-2])
    T.testing.assert_close(np.arccos(np.cos(expected)), expected)
    expected = [T.tensor([1.0]), 2.0, np.array(3.0)]  # sequences of any type, compared item by item
    T.testing.assert_close(tuple(expected), expected)
    foo, bar, baz = T.tensor(1.0), 2.0, np.array(3.0)  # mappings of any type and order, key by key
    T.testing.assert_close({"baz": baz, "bar": bar, "foo": foo},
                           collections.OrderedDict([("foo", foo), ("bar", bar), ("baz", baz)]))
    expected = T.tensor([1.0, 2.0, 3.0])
    actual = expected.clone()
    T.testing.assert_close(nn.Parameter(actual), expected)
    raises(TypeError, "No comparison pair was able to handle inputs of type", T.testing.assert_close,
           nn.Parameter(actual), expected, allow_subclasses=False)
    raises(TypeError, "No comparison pair was able to handle inputs of type", T.testing.assert_close,
           actual.numpy(), expected)
    T.testing.assert_close(1.0, 1, check_dtype=False)
    expected = T.tensor(float("nan"))
    raises(AssertionError, "Scalars are not close!", T.testing.assert_close, expected.clone(), expected)
    T.testing.assert_close(expected.clone(), expected, equal_nan=True)
    expected, actual = T.tensor([1.0, 2.0, 3.0]), T.tensor([1.0, 4.0, 5.0])
    raises(AssertionError, "^Argh, the tensors are not close!$", T.testing.assert_close, actual, expected,
           msg="Argh, the tensors are not close!")
    message = raises(AssertionError, None, T.testing.assert_close, actual, expected,
                     msg=lambda default: f"Header\n\n{default}\n\nFooter")
    assert str(message) == ("Header\n\nTensor-likes are not close!\n\nMismatched elements: 2 / 3 (66.7%)\n"
                            "Greatest absolute difference: 2.0 at index (1,) (up to 1e-05 allowed)\n"
                            "Greatest relative difference: 1.0 at index (1,) (up to 1.3e-06 allowed)\n\nFooter")
