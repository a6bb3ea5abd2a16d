"""copy_, clone, contiguous and memory_format ported from PyTorch's test/test_torch.py (TestTorch and
TestTorchDeviceType on CPU).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`),
against literal or NumPy-computed expectations.
"""

import warnings

import numpy as np
import pytest

from tests.ported import dtype_name, raises, same, values

# ---------------------------------------------------------------------------------------------- copy_


def test_copy_broadcast(T):
    """test_copy_broadcast: the source broadcasts to the destination, never the other way."""
    x = T.zeros(10, 5)
    y = T.arange(5.0)
    x.copy_(y)
    same(x, np.tile(np.arange(5.0, dtype=np.float32), (10, 1)))
    x = T.zeros(10, 5)
    x.copy_(T.arange(10.0).view(10, 1))
    same(x, np.repeat(np.arange(10.0, dtype=np.float32)[:, None], 5, 1))
    raises(RuntimeError, r"output with shape [\[(]5,?[\])] doesn't match the broadcast shape [\[(]10, 5[\])]",
           T.zeros(5).copy_, T.zeros(10, 5))


def test_copy_shape_mismatch(T):
    raises(RuntimeError, r"The size of tensor a \(3\) must match the size of tensor b \(4\) at non-singleton "
           r"dimension 0", T.zeros(3).copy_, T.zeros(4))


@pytest.mark.parametrize("src, dst", [("float32", "int64"), ("float64", "float32"), ("int64", "float64"),
                                      ("bool", "float32"), ("float32", "bool"), ("int32", "uint8"),
                                      ("float32", "complex64"), ("complex128", "complex64")])
def test_copy_dtypes(T, src, dst):
    """test_copy_all_dtypes_and_devices: copy_ converts to the destination's dtype (floats truncate
    towards zero, nonzero becomes True) and keeps that dtype."""
    a = np.array([0.0, 1.5, -2.75, 3.0]) if src != "bool" else np.array([True, False, True, True])
    if src.startswith(("int", "uint")):
        a = np.array([0, 1, 200, 3])
    x = T.tensor(a.astype(src))
    y = T.zeros(4, dtype=getattr(T, dst))
    out = y.copy_(x)
    assert out is y
    assert dtype_name(y) == dst
    expected = a.astype(src)
    if dst == "bool":
        expected = expected != 0
    elif np.issubdtype(expected.dtype, np.floating) and not dst.startswith(("float", "complex")):
        expected = np.trunc(expected)
    same(y, expected.astype(dst))


def test_copy_complex_to_real_drops_imaginary(T):
    """(With a UserWarning that PyTorch gives once per process, so another test may have had it.)"""
    x = T.tensor([1 + 2j, -3 - 1j])
    y = T.zeros(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y.copy_(x)
    same(y, np.array([1.0, -3.0], np.float32))
    assert all("discards the imaginary part" in str(w.message) for w in caught)


def test_copy_mem_overlap(T):
    """test_copy_mem_overlap: copying a tensor into an overlapping view of itself gives the values the
    source held before the copy; a destination with internal overlap is refused."""
    x = T.arange(6.0)
    x[1:].copy_(x[:-1].clone())
    same(x, np.array([0, 0, 1, 2, 3, 4], np.float32))
    x = T.arange(6.0)
    x.copy_(x)
    same(x, np.arange(6.0, dtype=np.float32))
    e = T.zeros(1).expand(4)
    raises(RuntimeError, "unsupported operation.*more than one element of the written-to tensor",
           e.copy_, T.arange(4.0))


def test_copy_transpose_and_noncontiguous(T):
    """test_copy_transpose: copying a transposed tensor lays out its values, not its strides."""
    a = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    x = T.tensor(a).t()
    y = T.empty(100, 100, dtype=T.float64)
    y.copy_(x)
    same(y, a.T.astype(np.float64))
    assert y.is_contiguous()
    z = T.empty(50, 100)[:, ::2]
    z.copy_(T.tensor(a[:50, :50]))
    same(z, a[:50, :50])


def test_copy_keeps_destination_grad_history(T):
    x = T.zeros(3, requires_grad=True)
    src = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.clone()
    y.copy_(src * 2)
    y.sum().backward()
    same(x.grad, np.zeros(3, np.float32))
    same(src.grad, np.full(3, 2.0, np.float32))


# ------------------------------------------------------------------------ clone, contiguous, memory_format


def test_clone(T):
    """test_clone_all_dtypes_and_devices, test_clone_zero_stride_dim, test_clone_not_memory_dense."""
    for dtype in ("bool", "uint8", "int32", "int64", "float32", "float64", "complex64"):
        x = T.tensor((1, 0, 1), dtype=getattr(T, dtype))
        y = x.clone()
        same(y, values(x), dtype)
        assert y.data_ptr() != x.data_ptr()
    x = T.randn(10)
    y = x.as_strided([2, 1, 5], [1, 0, 2])
    same(y.clone(), values(y))
    x = T.randn(10, 8).t()[::2, ::2]
    same(x.clone(), values(x))


def test_clone_keeps_stride_order(T):
    x = T.randn(10, 8).t()[::2, ::2]
    assert x.clone().stride() == (1, 4)


def test_contiguous(T):
    """test_contiguous: .contiguous() of a contiguous tensor is itself; of a view, a packed copy."""
    x = T.randn(1, 16, 5, 5)
    assert x.is_contiguous()
    assert x.contiguous() is x
    stride = list(x.stride())
    stride[0] = 20
    y = x.as_strided(x.size(), stride)  # a size-1 dimension's stride does not matter
    assert y.is_contiguous()
    t = T.arange(6.0).view(2, 3).t()
    assert not t.is_contiguous()
    c = t.contiguous()
    assert c.is_contiguous() and c.stride() == (2, 1)
    same(c, np.arange(6.0, dtype=np.float32).reshape(2, 3).T)


def test_memory_format_keeps_values(T):
    x = T.randn(4, 3, 8, 8)
    for y in (x.contiguous(memory_format=T.channels_last), x.to(memory_format=T.channels_last),
              x.clone(memory_format=T.channels_last), x.clone(memory_format=T.contiguous_format)):
        same(y, values(x))
    assert x.contiguous(memory_format=T.contiguous_format).is_contiguous()


def test_memory_format(T):
    """test_memory_format_* : channels_last is a permutation of strides; values do not change."""
    x = T.randn(4, 3, 8, 8)
    nhwc = x.contiguous(memory_format=T.channels_last)
    assert nhwc.stride() == (192, 1, 24, 3)
    assert nhwc.is_contiguous(memory_format=T.channels_last)
    assert not nhwc.is_contiguous()
    same(nhwc, values(x))
    back = nhwc.contiguous()
    assert back.is_contiguous() and back.stride() == (192, 64, 8, 1)
    assert nhwc.clone().is_contiguous(memory_format=T.channels_last)  # preserve_format
    assert nhwc.clone(memory_format=T.contiguous_format).is_contiguous()
    assert x.to(memory_format=T.channels_last).stride() == (192, 1, 24, 3)
    e = T.empty_like(nhwc)
    assert e.is_contiguous(memory_format=T.channels_last)
    raises(RuntimeError, r"required rank 4 tensor to use channels_last format",
           T.randn(3, 8, 8).contiguous, memory_format=T.channels_last)
