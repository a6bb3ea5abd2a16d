"""DLPack and complex tensors, ported from PyTorch's test/test_dlpack.py (TestTorchDlPack) and test/test_complex.py
(TestComplexTensor): capsules and the ``__dlpack__`` protocol round trips, memory shared with NumPy and with PyTorch,
every dtype, non-contiguous views, the refusals; complex lists, dtype inference, eq/ne with NaN, exp, reciprocal.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`); the expected values
are NumPy's or literals, so both libraries are held to the same numbers.
"""

import math

import numpy as np
import pytest

from tests.ported import DTYPES, close, raises, same, xfail_ours

# the dtypes both libraries share (bfloat16 is left out: chainrule has none; uint16/32/64 are names only here)
DLPACK_DTYPES = DTYPES


def five(T, dtype):
    """A tensor of 5 values of ``dtype`` (make_tensor's role): 0, 1, 0, 1, 0 for bool, 0..4 for the others."""
    values = np.arange(5) % 2 if dtype == "bool" else np.arange(5) + (1j if dtype.startswith("complex") else 0)
    return T.tensor(values.astype(dtype))


def expected(dtype):
    return (np.arange(5) % 2 if dtype == "bool" else np.arange(5) + (1j if dtype.startswith("complex") else 0)
            ).astype(dtype)


# -- test_dlpack.py ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DLPACK_DTYPES)
def test_dlpack_capsule_conversion(T, dtype):
    x = five(T, dtype)
    z = T.utils.dlpack.from_dlpack(T.utils.dlpack.to_dlpack(x))
    same(z, expected(dtype), dtype=dtype)
    assert z.data_ptr() == x.data_ptr()


@pytest.mark.parametrize("dtype", DLPACK_DTYPES)
def test_dlpack_protocol_conversion_and_dtype(T, dtype):
    x = five(T, dtype)
    for z in (T.utils.dlpack.from_dlpack(x), T.from_dlpack(x)):
        same(z, expected(dtype), dtype=dtype)
        assert z.dtype == x.dtype and z.data_ptr() == x.data_ptr()


def test_dlpack_shared_storage(T):
    x = T.arange(5, dtype=T.float64)
    z = T.from_dlpack(T.utils.dlpack.to_dlpack(x))  # a legacy capsule: NumPy reads it read-only, PyTorch writes
    z[0] = z[0] + 20.0
    same(x, [20.0, 1.0, 2.0, 3.0, 4.0])
    same(z, [20.0, 1.0, 2.0, 3.0, 4.0])
    z.add_(1)
    same(x, [21.0, 2.0, 3.0, 4.0, 5.0])


@pytest.mark.parametrize("dtype", ["float32", "int64", "complex128", "bool"])
def test_from_dlpack_noncontiguous(T, dtype):
    x = T.tensor(np.arange(25).reshape(5, 5).astype(dtype))
    for view in (x[0], x[:, 0], x[1, :], x[1], x.t()):
        y = T.from_dlpack(view)
        same(y, np.asarray(view.numpy()), dtype=dtype)
        assert y.data_ptr() == view.data_ptr()
    same(T.from_dlpack(x[:, 0]), (np.arange(25).reshape(5, 5)[:, 0]).astype(dtype))
    same(T.from_dlpack(x.t()), (np.arange(25).reshape(5, 5).T).astype(dtype))


def test_dlpack_tensor_invalid_stream(T):
    raises(TypeError, "stream must be", lambda: T.rand(5).__dlpack__(stream=object()))


def test_dlpack_invalid_cpu_stream(T):
    raises(AssertionError, r"stream should be None on cpu\.", lambda: T.rand(5).__dlpack__(stream=0))


def test_dlpack_export_requires_grad(T):
    raises(BufferError, "require gradient", T.zeros(10, requires_grad=True).__dlpack__)
    same(T.from_dlpack(T.zeros(3, requires_grad=True).detach()), np.zeros(3, np.float32))


@xfail_ours("chainrule keeps no lazy conjugate bit: conj() makes the conjugated values, which export as any")
def test_dlpack_export_is_conj(T):
    y = T.conj(T.tensor([-1 + 1j, -2 + 2j, 3 - 3j]))
    raises(BufferError, "conjugate bit", y.__dlpack__)


def test_dlpack_export_non_strided(T):
    x = T.sparse_coo_tensor([[0]], [1.0], size=(1,))
    raises(BufferError, "strided", x.__dlpack__)


def test_dlpack_normalize_strides(T):
    x = T.arange(16.0)
    y = x[::3][:1]
    z = T.from_dlpack(y)
    same(z, [0.0])
    assert z.data_ptr() == x.data_ptr()


def test_automatically_select_in_creation(T):
    class TensorDLPackWrapper:  # only the DLPack methods: torch.tensor(wrap) must go through them
        def __init__(self, tensor):
            self.tensor = tensor

        def __dlpack__(self, *args, **kwargs):
            return self.tensor.__dlpack__(*args, **kwargs)

        def __dlpack_device__(self, *args, **kwargs):
            return self.tensor.__dlpack_device__(*args, **kwargs)

    tensor = T.tensor([0.5, 1.5, -2.0])
    new_tensor = T.tensor(TensorDLPackWrapper(tensor))
    same(new_tensor, np.array([0.5, 1.5, -2.0], np.float32), dtype="float32")
    assert new_tensor.data_ptr() != tensor.data_ptr()  # (torch.tensor copies)
    shared = T.from_dlpack(TensorDLPackWrapper(tensor))
    assert shared.data_ptr() == tensor.data_ptr()


@pytest.mark.parametrize("max_version", [None, (0, 8), (1, 0), (2, 0)])
def test_max_version(T, max_version):
    inp = T.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    kwargs = {} if max_version is None else {"max_version": max_version}
    capsule = inp.__dlpack__(**kwargs)
    versioned = max_version is not None and max_version[0] >= 1
    assert f'capsule object "{"dltensor_versioned" if versioned else "dltensor"}" at' in str(capsule)
    same(T.from_dlpack(capsule), [1.0, 2.0, 3.0, 4.0, 5.0])


@pytest.mark.parametrize("dtype", DLPACK_DTYPES)
def test_numpy_dlpack_protocol_conversion(T, dtype):
    t = five(T, dtype)
    arr = np.from_dlpack(t)  # NumPy calling our __dlpack__
    np.testing.assert_array_equal(arr, expected(dtype))
    assert arr.dtype == np.dtype(dtype)
    res = T.utils.dlpack.from_dlpack(t.numpy())  # and back, sharing memory
    same(res, expected(dtype), dtype=dtype)
    assert res.data_ptr() == t.data_ptr()


def test_numpy_memory_is_shared_both_ways(T):
    a = np.arange(6.0).reshape(2, 3)
    t = T.from_dlpack(a)
    t.mul_(2)
    np.testing.assert_array_equal(a, np.arange(6.0).reshape(2, 3) * 2)
    a[0, 0] = -1.0
    same(t, [[-1.0, 2.0, 4.0], [6.0, 8.0, 10.0]], dtype="float64")
    strided = T.from_dlpack(a[:, ::2])  # a non-contiguous NumPy view keeps its strides
    assert strided.stride() == (3, 2)
    same(strided, [[-1.0, 4.0], [6.0, 10.0]])


def test_from_dlpack_copy_and_device(T):
    inp = T.tensor([1.0, 2.0, 3.0])
    assert T.from_dlpack(inp, copy=False).data_ptr() == inp.data_ptr()
    assert T.from_dlpack(inp, device="cpu").data_ptr() == inp.data_ptr()
    copied = T.from_dlpack(inp, device="cpu", copy=True)
    assert copied.data_ptr() != inp.data_ptr() and str(copied.device) == "cpu"
    same(copied, [1.0, 2.0, 3.0])


def test_dlpack_device_and_unsupported_device_error(T):
    inp = T.rand(5)
    device_type, index = inp.__dlpack_device__()
    assert (device_type, index) == (1, 0) and device_type == T.utils.dlpack.DLDeviceType.kDLCPU
    assert int(T.utils.dlpack.DLDeviceType.kDLHexagon) == 16
    raises(BufferError, "Unsupported device_type: 16",
           lambda: inp.__dlpack__(max_version=(1, 0), dl_device=(T.utils.dlpack.DLDeviceType.kDLHexagon, 0)))


@pytest.mark.torch
def test_round_trips_with_pytorch_share_memory():
    """chainrule's tensors and PyTorch's hand their memory to each other over DLPack, writes showing on both sides."""
    torch = pytest.importorskip("torch")
    import autograd

    ours = autograd.tensor([[1.0, 2.0], [3.0, 4.0]])
    theirs = torch.from_dlpack(ours)
    assert theirs.dtype == torch.float32 and theirs.data_ptr() == ours.data_ptr()
    theirs.mul_(10)
    same(ours, [[10.0, 20.0], [30.0, 40.0]])
    back = autograd.from_dlpack(torch.arange(6, dtype=torch.int16).reshape(2, 3)[:, 1:])
    same(back, np.arange(6, dtype=np.int16).reshape(2, 3)[:, 1:], dtype="int16")
    legacy = autograd.from_dlpack(torch.utils.dlpack.to_dlpack(torch.zeros(3, dtype=torch.complex64)))
    legacy[1] = 2 - 1j  # (a legacy capsule: writable here, as in PyTorch)
    same(legacy, np.array([0, 2 - 1j, 0], np.complex64))
    t = autograd.tensor([1.0, 2.0], requires_grad=True)
    raises(BufferError, "require gradient", torch.from_dlpack, t)


# -- test_complex.py -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_to_list(T, dtype):
    assert T.zeros((2, 2), dtype=getattr(T, dtype)).tolist() == [[0j, 0j], [0j, 0j]]


@pytest.mark.parametrize("default", ["float32", "float64"])
def test_dtype_inference(T, default):
    before = T.get_default_dtype()
    T.set_default_dtype(getattr(T, default))
    try:
        x = T.tensor([3.0, 3.0 + 5.0j])
    finally:
        T.set_default_dtype(before)
    same(x, np.array([3.0, 3.0 + 5.0j]), dtype="complex128" if default == "float64" else "complex64")


NAN = float("nan")
PAIRS = [  # (a, b): the scalar cases and the vectorised ones of PyTorch's test, NaN in either part
    ([-0.0610 - 2.1172j], [-6.1278 - 8.5019j]),
    ([-0.0610 - 2.1172j], [-6.1278 - 2.1172j]),
    ([-0.0610 - 2.1172j], [-0.0610 - 8.5019j]),
    ([-0.0610 - 2.1172j, 5.1576 + 5.4775j, complex(2.8871, NAN), -6.6545 - 3.7655j, -2.7036 - 1.4470j,
      0.3712 + 7.989j, -0.0610 - 2.1172j, 5.1576 + 5.4775j, complex(NAN, -3.2650), -6.6545 - 3.7655j,
      -2.7036 - 1.4470j, 0.3712 + 7.989j],
     [-6.1278 - 8.5019j, 0.5886 + 8.8816j, complex(2.8871, NAN), 6.3505 + 2.2683j, 0.3712 + 7.9659j,
      0.3712 + 7.989j, -6.1278 - 2.1172j, 5.1576 + 8.8816j, complex(NAN, -3.2650), 6.3505 + 2.2683j,
      0.3712 + 7.9659j, 0.3712 + 7.989j]),
]


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("pair", range(len(PAIRS)))
def test_eq_and_ne(T, dtype, pair):
    a_values, b_values = (np.array(v, dtype) for v in PAIRS[pair])
    a, b = T.tensor(a_values), T.tensor(b_values)
    same(T.eq(a, b), a_values == b_values, dtype="bool")
    same(T.eq(a, a), a_values == a_values, dtype="bool")  # (NaN in either part: unequal to itself)
    same(T.ne(a, b), a_values != b_values, dtype="bool")
    same(T.ne(a, a), a_values != a_values, dtype="bool")
    if pair == 3:
        same(T.eq(a, b), [False] * 5 + [True] + [False] * 5 + [True])
        same(T.eq(a, a), [True, True, False, True, True, True] * 2)
    for op, other, numpy_op in ((T.eq, b, np.equal), (T.eq, a, np.equal), (T.ne, b, np.not_equal),
                                (T.ne, a, np.not_equal)):
        out = T.full_like(b, complex(2, 2))  # out= of the inputs' complex dtype: 1 or 0
        op(a, other, out=out)
        same(out, numpy_op(a_values, other.numpy()).astype(dtype), dtype=dtype)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_exp(T, dtype):
    a = T.tensor(1j, dtype=getattr(T, dtype)) * T.arange(18) / 3 * math.pi
    assert str(a.dtype).endswith(dtype)
    rtol = 1e-6 if dtype == "complex64" else 1e-12
    close(T.exp(a), np.exp(a.numpy()), rtol=rtol, atol=rtol)
    close(T.exp(a), np.exp(1j * np.arange(18) / 3 * np.pi).astype(dtype), rtol=rtol * 10, atol=rtol * 10)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_reciprocal(T, dtype, rng):
    values = (rng.standard_normal((10, 10)) + 1j * rng.standard_normal((10, 10))).astype(dtype)
    rtol = 1e-6 if dtype == "complex64" else 1e-12
    close(T.reciprocal(T.tensor(values)), np.reciprocal(values), rtol=rtol, atol=rtol)
    close(T.reciprocal(T.tensor(values)), np.conj(values) / np.abs(values) ** 2, rtol=rtol * 10, atol=rtol * 10)
