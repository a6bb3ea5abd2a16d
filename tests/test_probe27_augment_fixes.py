"""Fixes found by the augmentation programs (tests/test_programs_probe27_augment.py)."""

import numpy as np
import pytest

import autograd


def test_flip_function_refuses_a_lone_int_dim_as_pytorch():
    """torch.flip(x, -1) and x.flip(dims=-1) are PyTorch's TypeError (dims must be a sequence); only the method
    reads its positional ints as the dims, x.flip(-1) or x.flip(0, 1)."""
    x = autograd.arange(6.0).view(2, 3)
    for call in (lambda: autograd.flip(x, -1), lambda: x.flip(dims=-1), lambda: autograd.flip(x, dims=1),
                 lambda: autograd.flip(x, 0.5), lambda: autograd.flip(x, autograd.tensor([1]))):
        with pytest.raises(TypeError, match="argument 'dims' must be tuple of ints"):
            call()
    with pytest.raises(TypeError, match='missing 1 required positional arguments: "dims"'):
        autograd.flip(x)
    expected = np.arange(6.0).reshape(2, 3)[:, ::-1]
    for flipped in (x.flip(-1), x.flip([-1]), x.flip(dims=(1,)), autograd.flip(x, [1]), autograd.flip(x, (-1,)),
                    autograd.flip(input=x, dims=[1])):
        np.testing.assert_array_equal(flipped.numpy(), expected)
    np.testing.assert_array_equal(x.flip(0, 1).numpy(), np.arange(6.0).reshape(2, 3)[::-1, ::-1])


def test_flip_function_errors_match_pytorch():
    torch = pytest.importorskip("torch")
    x = torch.arange(6.0).view(2, 3)
    for call in (lambda: torch.flip(x, -1), lambda: x.flip(dims=-1)):
        with pytest.raises(TypeError, match="argument 'dims'.* must be tuple of ints, not int"):
            call()
    np.testing.assert_array_equal(x.flip(-1).numpy(), autograd.arange(6.0).view(2, 3).flip(-1).numpy())


def test_wider_unsigned_dtype_names():
    """autograd.uint16/uint32/uint64 name the dtypes a 16-bit image arrives with from NumPy (PyTorch's torch.uint16)."""
    u16 = autograd.from_numpy(np.array([[1, 300, 65535]], dtype=np.uint16))
    assert u16.dtype == autograd.uint16 and autograd.iinfo(autograd.uint16).max == 65535
    assert autograd.tensor([7]).to(autograd.uint32).dtype == autograd.uint32
    assert autograd.tensor([7]).to(autograd.uint64).dtype == autograd.uint64
    as_float = u16.to(autograd.int32).to(autograd.float32).div(65535)
    np.testing.assert_allclose(as_float.numpy(), [[1 / 65535, 300 / 65535, 1.0]], rtol=1e-6)
    assert as_float.dtype == autograd.float32
