"""NumPy interoperation ported from PyTorch's test/test_numpy_interop.py (TestNumPyInterop): from_numpy and
numpy() with their dtypes, strides and shared memory, __array__ and ufuncs on tensors, NumPy scalars as
arguments, indices and operands, comparisons between tensors and arrays.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import itertools
import sys
import warnings

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values, xfail_on_chainrule

TO_NUMPY_DTYPES = ["uint8", "int8", "int16", "int32", "float16", "float32", "float64", "int64"]


def test_numpy_non_writeable(T, warn_always):
    arr = np.zeros(5)
    arr.flags["WRITEABLE"] = False
    with pytest.warns(UserWarning, match="The given NumPy array is not writable"):
        t = T.from_numpy(arr)
    same(t, np.zeros(5), "float64")


def test_numpy_unresizable(T, request):
    x = np.zeros((2, 2))
    y = T.from_numpy(x)  # noqa: F841 (the tensor holds x's memory, so NumPy may not move it)
    with pytest.raises(ValueError):
        x.resize((5, 5))
    z = T.randn(5, 5)
    w = z.numpy()
    with pytest.raises(ValueError):
        w.resize((10, 10))
    xfail_on_chainrule(T, request, "resize_ of a tensor whose memory a NumPy array shares gives the tensor new "
                       "memory (the array no longer sees it) where PyTorch refuses: 'Trying to resize storage that is "
                       "not resizable'")
    with pytest.raises(RuntimeError):
        z.resize_(10, 10)


def _castable(T, shape, dtype, rng):
    """Random values that fit dtype (within ±1e10, as PyTorch's get_castable_tensor)."""
    if dtype.startswith("float"):
        a = rng.uniform(-1e4 if dtype == "float16" else -1e10, 1e4 if dtype == "float16" else 1e10, shape)
    else:
        info = np.iinfo(dtype)
        a = rng.integers(max(info.min, -10**10), min(info.max, 10**10), shape, endpoint=True)
    return T.tensor(a.astype(dtype))


@pytest.mark.parametrize("dtype", TO_NUMPY_DTYPES)
def test_to_numpy(T, dtype):
    rng = np.random.default_rng(0)
    x = _castable(T, 10, dtype, rng)  # 1-D
    y = x.numpy()
    assert y.dtype == np.dtype(dtype)
    assert [x[i].item() for i in range(10)] == y.tolist()
    xm = _castable(T, 20, dtype, rng)  # 1-D with a storage offset
    x = xm.narrow(0, 9, 10)
    assert x.storage_offset() > 0
    np.testing.assert_array_equal(x.numpy(), values(xm)[9:19])
    assert T.tensor([]).to(getattr(T, dtype)).numpy().size == 0  # empty
    x = _castable(T, (3, 5), dtype, rng)  # contiguous 2-D
    y = x.numpy()
    assert y.tolist() == x.tolist() and y.flags["C_CONTIGUOUS"]
    xm = _castable(T, (6, 5), dtype, rng)  # with a storage offset
    x = xm.narrow(0, 2, 3)
    y = x.numpy()
    assert x.storage_offset() > 0 and y.tolist() == x.tolist() and y.flags["C_CONTIGUOUS"]
    x = _castable(T, (5, 3), dtype, rng).t()  # non-contiguous 2-D
    y = x.numpy()
    assert y.tolist() == x.tolist() and not y.flags["C_CONTIGUOUS"]
    xm = _castable(T, (10, 3), dtype, rng)  # with a storage offset
    x = xm.narrow(0, 4, 5).t()
    assert x.storage_offset() > 0 and x.numpy().tolist() == x.tolist()
    xm = _castable(T, (10, 6), dtype, rng)  # non-contiguous 2-D with holes
    x = xm.narrow(0, 4, 5).narrow(1, 2, 3).t()
    assert x.storage_offset() > 0 and x.numpy().tolist() == values(xm)[4:9, 2:5].T.tolist()
    if dtype != "float16":  # the array is the tensor's memory: a write shows in both
        x = _castable(T, (3, 4), dtype, rng)
        y = x.numpy()
        assert y.flags.writeable
        y[0][1] = 3
        assert x[0][1].item() == 3
        y = x.t().numpy()
        assert y.flags.writeable
        y[0][1] = 4
        assert x[1][0].item() == 4


def test_to_numpy_bool(T):
    x = T.tensor([True, False], dtype=T.bool)
    y = x.numpy()
    assert y.dtype == np.bool_ and y.tolist() == [True, False]
    y = T.tensor([True], dtype=T.bool).numpy()
    assert y.dtype == np.bool_ and y.tolist() == [True]


@pytest.mark.parametrize("requires_grad, conj", [(False, False), (True, False), (False, True), (True, True)])
def test_to_numpy_force_argument(T, request, requires_grad, conj):
    data = [[1 + 2j, -2 + 3j], [-1 - 2j, 3 - 2j]]
    x = T.tensor(data, requires_grad=requires_grad)
    expected = np.array(data)
    if conj:
        x, expected = x.conj(), np.conj(expected)
    np.testing.assert_array_equal(x.numpy(force=True), expected)
    if requires_grad or conj:
        xfail_on_chainrule(T, request, "numpy() of a tensor that requires grad (or is a lazy conjugate) returns the "
                           "array where PyTorch refuses: 'Can't call numpy() on Tensor that requires grad. Use "
                           "tensor.detach().numpy() instead.'")
        raises((RuntimeError, TypeError), r"Use (t|T)ensor\..*(\.numpy\(\))?", x.numpy)
        raises((RuntimeError, TypeError), r"Use (t|T)ensor\..*(\.numpy\(\))?", x.numpy, force=False)
    else:
        np.testing.assert_array_equal(x.numpy(), expected)
        np.testing.assert_array_equal(x.numpy(force=False), expected)


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn.t accept a copy keyword")
def test_numpy_array_copies_and_asarray_shares(T):
    """(the __array__ protocol, beyond PyTorch's test) np.asarray(t) is the tensor's memory, np.array(t) a copy."""
    t = T.zeros(3)
    shared = np.asarray(t)
    shared[1] = 7
    copied = np.array(t)
    copied[0] = 5
    same(t, [0.0, 7.0, 0.0])
    assert np.array(t, dtype=np.float64).dtype == np.float64


FROM_NUMPY_DTYPES = [np.double, np.float64, np.float16, np.complex64, np.complex128, np.int64, np.int32, np.int16,
                     np.int8, np.uint8, np.longlong, np.bool_]


def test_from_numpy(T):
    for dtype in FROM_NUMPY_DTYPES:
        array = np.array([1, 2, 3, 4], dtype=dtype)
        t = T.from_numpy(array)
        assert dtype_name(t) == np.dtype(dtype).name
        np.testing.assert_array_equal(t.numpy(), array)
        if dtype not in (np.complex64, np.complex128):  # (a result of NumPy arithmetic, as on Windows gh-22615)
            array2 = array % 2
            np.testing.assert_array_equal(T.from_numpy(array2).numpy(), array2)
    raises(TypeError, None, T.from_numpy, np.array(["foo", "bar"], dtype=np.dtype(np.str_)))  # no tensor dtype
    x = np.linspace(1, 125, 125).reshape(5, 5, 5)[1]  # a storage offset
    same(T.from_numpy(x), values(T.arange(1, 126, dtype=T.float64).view(5, 5, 5)[1]), "float64")
    x = np.linspace(1, 25, 25).reshape(5, 5)  # non-contiguous
    same(T.from_numpy(x.T), values(T.arange(1, 26, dtype=T.float64).view(5, 5).t()), "float64")
    x = np.linspace(1, 125, 125).reshape(5, 5, 5)[:, 1]  # non-contiguous with holes
    same(T.from_numpy(x), values(T.arange(1, 126, dtype=T.float64).view(5, 5, 5)[:, 1]), "float64")
    assert T.from_numpy(np.zeros((0, 2))).shape == (0, 2)  # zero-sized
    assert T.from_numpy(np.zeros((2, 0))).shape == (2, 0)
    x = np.lib.stride_tricks.as_strided(np.array([3.0, 5.0, 8.0]), (3,), (3,))  # strides of part of an element
    raises(ValueError, "strides not a multiple of the element byte size", T.from_numpy, x)


def test_from_numpy_shares_memory(T):
    """(PyTorch's from_numpy contract, beyond its test) a write to either shows in the other, both ways."""
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = T.from_numpy(array)
    array[0, 0] = 10
    assert t[0, 0].item() == 10
    t[1, 2] = -1
    assert array[1, 2] == -1
    t.add_(1)
    np.testing.assert_array_equal(array, [[11, 2, 3], [4, 5, 0]])
    assert not t.requires_grad


def test_from_numpy_and_asarray_refuse_what_a_tensor_cannot_share(T, warn_always):
    """(PyTorch's from_numpy checks, beyond its test, which asarray makes too) negative strides and strides of part
    of an element are refused (there is no such tensor), an empty array's reversed strides are not; a read-only
    array is shared with a warning."""
    reversed_ = np.arange(4.0)[::-1]
    for make in (T.from_numpy, T.asarray):
        raises(ValueError, "At least one stride in the given numpy array is negative", make, reversed_)
        raises(ValueError, "strides not a multiple of the element byte size", make,
               np.lib.stride_tricks.as_strided(np.array([3.0, 5.0, 8.0]), (3,), (3,)))
        raises(TypeError, "can't convert np.ndarray of type numpy.str_", make, np.array(["a"]))
        assert make(np.zeros((0, 3))[::-1]).shape == (0, 3)
        read_only = np.arange(3.0)
        read_only.flags.writeable = False
        with pytest.warns(UserWarning, match="The given NumPy array is not writable"):
            same(make(read_only), [0.0, 1.0, 2.0], "float64")
    raises(ValueError, "At least one stride in the given numpy array is negative", T.asarray, reversed_, copy=True)
    same(T.from_numpy(reversed_.copy()), [3.0, 2.0, 1.0, 0.0])


def test_as_tensor_refuses_negative_strides(T):
    raises(ValueError, "At least one stride in the given numpy array is negative", T.as_tensor, np.arange(4.0)[::-1])


def test_from_numpy_no_leak_on_invalid_dtype(T):
    x = np.array("value".encode("ascii"))
    for _ in range(1000):
        try:
            T.from_numpy(x)
        except TypeError:
            pass
    assert sys.getrefcount(x) == 2


def test_from_list_of_ndarray_warning(T, warn_always):
    with pytest.warns(UserWarning, match="Creating a tensor from a list of numpy.ndarrays is extremely slow"):
        t = T.tensor([np.array([0]), np.array([1])])
    same(t, [[0], [1]], "int64")


@pytest.mark.filterwarnings("ignore:Creating a tensor from a list of numpy.ndarrays")
def test_ctor_with_invalid_numpy_array_sequence(T):
    rng = np.random.default_rng(1)
    raises(ValueError, "expected sequence of length", T.tensor, [rng.random((3, 3)), rng.random((3, 0))])
    raises(ValueError, "expected sequence of length", T.tensor, [[rng.random((3, 3)), rng.random((3, 2))]])
    raises(ValueError, "expected sequence of length", T.tensor,
           [[rng.random((3, 3)), rng.random((3, 3))], [rng.random((3, 3)), rng.random((3, 2))]])
    # the expected shape is [1, 2, 3]: the 0-d array is not a sequence
    raises(TypeError, "not a sequence", T.tensor, [[rng.random(3), np.float64(rng.random())]])
    raises(ValueError, "expected sequence of length", T.tensor, [[1, 2, 3], rng.random(2)])


def test_ctor_with_numpy_scalar_ctor(T):
    for dtype in (np.double, np.float64, np.float16, np.int64, np.int32, np.int16, np.uint8, np.bool_):
        t = T.tensor(dtype(42))
        assert t.item() == dtype(42)
        assert dtype_name(t) == np.dtype(dtype).name  # a NumPy scalar keeps its dtype


def test_numpy_index(T):
    x = T.randn(5, 5)
    for idx in np.array([0, 1, 2], dtype=np.int32):
        assert not isinstance(idx, int)
        same(x[idx], values(x[int(idx)]))


def test_numpy_uint8_array_index_is_a_mask(T):
    x = T.arange(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (PyTorch's deprecation of uint8 masks)
        same(x[np.array([1, 0, 1, 0, 1], dtype=np.uint8)], [0, 2, 4])


def test_numpy_index_multi(T):
    for side in (2, 8, 16, 32):
        i = np.zeros((side, side, side), dtype=np.int32)
        i[:side // 2] = 1
        x = T.randn(side, side, side)
        assert x[i == 1].numel() == np.sum(i)
        same(x[i == 1], values(x)[i == 1])


ARRAY_INTERFACE = [("float64", "DoubleTensor"), ("float32", "FloatTensor"), ("float16", "HalfTensor"),
                   ("int64", "LongTensor"), ("int32", "IntTensor"), ("int16", "ShortTensor"), ("uint8", "ByteTensor")]


@pytest.mark.parametrize("dtype, legacy", ARRAY_INTERFACE)
def test_numpy_array_interface(T, dtype, legacy):
    data = [1, 2, 3, 4] if dtype == "uint8" else [1, -2, 3, -4]
    x = T.tensor(data).type(getattr(T, legacy))
    array = np.array(data, dtype=dtype)
    asarray = np.asarray(x)  # __array__ without a dtype
    assert isinstance(asarray, np.ndarray) and asarray.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(asarray, array)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (PyTorch's __array_wrap__ and NumPy 2's arguments)
        abs_x = np.abs(x)  # __array_wrap__: a tensor of the same type
        assert isinstance(abs_x, getattr(T, legacy))
        same(abs_x, np.abs(array), dtype)
    converted = np.asarray(T.IntTensor([1, -2, 3, -4]), dtype=dtype)  # __array__ with a dtype
    assert converted.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(converted, np.array([1, -2, 3, -4]).astype(dtype))


@pytest.mark.parametrize("dtype, legacy", [("float64", "DoubleTensor"), ("float32", "FloatTensor")])
def test_numpy_ufuncs_on_float_tensors(T, dtype, legacy):
    x = T.tensor([1, 2, 3, 4]).type(getattr(T, legacy))
    array = np.array([1, 2, 3, 4], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in ("sin", "sqrt", "ceil"):
            result = getattr(np, name)(x)
            assert isinstance(result, getattr(T, legacy))
            close(result, getattr(np, name)(array))


@pytest.mark.parametrize("dtype, legacy", ARRAY_INTERFACE)
def test_numpy_ufunc_with_a_boolean_result(T, dtype, legacy):
    x = T.tensor([1, 2, 3, 4]).type(getattr(T, legacy))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        at_least_2 = np.greater_equal(x, 2)
    assert isinstance(at_least_2, T.ByteTensor)
    same(at_least_2, [0, 1, 1, 1], "uint8")


@pytest.mark.parametrize("np_dtype", [np.float32, np.float64, np.int32, np.int64, np.int16, np.uint8])
def test_multiplication_numpy_scalar(T, np_dtype):
    for dtype in ("float32", "float64"):
        scalar = np_dtype(2.0)
        t = T.ones(2, requires_grad=True, dtype=getattr(T, dtype))
        for r in (t * scalar, scalar * t):
            assert isinstance(r, T.Tensor)
            assert dtype_name(r) == dtype
            assert r.requires_grad
            same(r, [2.0, 2.0])
        (scalar * t).sum().backward()
        same(t.grad, [2.0, 2.0], dtype)


def test_parse_numpy_int_overflow(T):
    # (NumPy 2 no longer makes np.uint64(-1); PyTorch 2.13 raises ValueError 'Overflow when unpacking long long')
    raises((RuntimeError, ValueError), "(Overflow|an integer is required)", T.mean, T.randn(1, 1),
           np.uint64(2**64 - 1))


@pytest.mark.parametrize("nptype", [np.int16, np.int8, np.uint8, np.int32, np.int64])
def test_parse_numpy_int(T, nptype):
    scalar = 3
    np_arr = np.array([scalar], dtype=nptype)
    np_val = np_arr[0]
    # a NumPy integer is a Python int to the int arguments of the ops
    same(T.ones(5).diag(np_val), values(T.ones(5).diag(scalar)))
    same(T.fft.fft(T.ones(4, 4), n=np_val, dim=np_val % 2), values(T.fft.fft(T.ones(4, 4), n=3, dim=1)))
    same(T.hann_window(np_val), values(T.hann_window(scalar)))
    tensor = T.tensor([2], dtype=T.int)
    tensor[0] = np_val
    assert tensor[0].item() == np_val
    # and a Scalar operand keeps the tensor's integer dtype (gh-29252)
    t = T.from_numpy(np_arr)
    assert (t + np_val).dtype == t.dtype
    assert (np_val + t).dtype == t.dtype


@pytest.mark.parametrize("nptype", [np.int16, np.int8, np.uint8, np.int32, np.int64])
def test_parse_numpy_int_as_a_reduction_dim(T, nptype):
    np_val = np.array([3], dtype=nptype)[0]
    same(T.ones([2, 2, 2, 2]).mean(np_val), values(T.ones([2, 2, 2, 2]).mean(3)))


def test_has_storage_numpy(T):
    for dtype in (np.float32, np.float64, np.int64, np.int32, np.int16, np.uint8):
        arr = np.array([1], dtype=dtype)
        for target in (T.float32, T.double, T.int, T.long, T.uint8):
            t = T.tensor(arr, dtype=target)
            assert t.untyped_storage() is not None
            assert t.dtype == target and t.item() == 1


SCALAR_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "complex64",
                 "complex128"]


@pytest.mark.parametrize("dtype", SCALAR_DTYPES)
def test_numpy_scalar_cmp(T, dtype):
    if dtype.startswith("complex"):
        datas = (complex(1, 3), [complex(1, 3), 0, 2j], [[complex(3, 1), 0], [-1j, 5]])
    else:
        datas = (3, [1, 0, -3], [[3, 0, -1], [3, 5, 4]])
    for data in datas:
        tensor = T.tensor(np.array(data).astype(dtype))
        np_array = tensor.numpy()
        for t, a in itertools.product((tensor.flatten()[0], tensor.flatten()[0].item()),
                                      (np_array.flatten()[0], np_array.flatten()[0].item())):
            if dtype == "complex64" and hasattr(t, "dtype") and type(a) is np.complex64:
                continue  # (PyTorch drops the imaginary part of a np.complex64 here and says unequal, gh-43579)
            assert bool(t == a)


@pytest.mark.parametrize("dtype", SCALAR_DTYPES[:-2] + ["complex64", "complex128"])
def test___eq__(T, dtype):
    rng = np.random.default_rng(2)
    a = T.tensor(rng.integers(-9, 9, (5, 7)).astype(dtype) if dtype != "bool" else rng.random((5, 7)) > 0.5)
    b = a.clone().detach()
    b_np = b.numpy()  # shares b's memory: the changes to b below show in b_np
    expected = np.ones((5, 7), dtype=bool)
    same(a == b_np, expected, "bool")
    same(b_np == a, expected)
    if dtype == "bool":
        b[1][3] = not b[1][3].item()
    else:
        b[1][3] += 1
    expected[1][3] = False
    same(a == b_np, expected, "bool")
    same(b_np == a, expected)
    flip = rng.random((5, 7)) > 0.5
    b.copy_(a)
    if dtype == "bool":
        b[T.tensor(flip)] = b[T.tensor(flip)].logical_not()
    else:
        b[T.tensor(flip)] += 1
    same(a == b_np, ~flip, "bool")
    same(b_np == a, ~flip)
    b.copy_(a.logical_not() if dtype == "bool" else a + 1)
    same(a == b_np, np.zeros((5, 7), dtype=bool), "bool")
    same(b_np == a, np.zeros((5, 7), dtype=bool))


def test_empty_tensors_interop(T):
    x = T.rand((), dtype=T.float16)
    y = T.tensor(np.random.default_rng(3).random(0), dtype=T.float16)
    assert T.true_divide(x, y).shape == y.shape  # gh-115068
    assert T.mul(x, y).shape == y.shape  # gh-115066
    assert T.div(x, y, rounding_mode="floor").shape == y.shape  # gh-113037
    assert dtype_name(T.mul(x, y)) == "float16"
