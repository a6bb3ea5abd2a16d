"""finfo and iinfo, the limits of a dtype, ported from PyTorch's test/test_type_info.py (TestDTypeInfo).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import xfail_on_chainrule

FLOATS = ["float16", "float32", "float64"]
INTEGERS = ["int64", "int32", "int16", "int8", "uint8"]


def test_invalid_input(T):
    for dtype in FLOATS + ["complex64", "complex128", "bool"]:
        with pytest.raises(TypeError):
            T.iinfo(getattr(T, dtype))
    for dtype in INTEGERS + ["bool"]:
        with pytest.raises(TypeError):
            T.finfo(getattr(T, dtype))


def test_dtype_to_complex_and_to_real(T):
    for dtype in INTEGERS + ["bool"]:
        with pytest.raises(RuntimeError):
            getattr(T, dtype).to_complex()
    assert T.float64.to_complex() == T.complex128
    assert T.float32.to_complex() == T.complex64
    assert T.complex128.to_real() == T.float64
    assert T.complex64.to_real() == T.float32


@pytest.mark.parametrize("dtype", INTEGERS)
def test_iinfo(T, dtype):
    x = T.zeros((2, 2), dtype=getattr(T, dtype))
    info, reference = T.iinfo(x.dtype), np.iinfo(np.dtype(dtype))
    assert (info.bits, info.max, info.min) == (reference.bits, reference.max, reference.min)
    assert info.dtype == reference.dtype
    assert T.iinfo(x.dtype) == T.iinfo(getattr(T, dtype))


@pytest.mark.parametrize("dtype", FLOATS + ["complex64", "complex128"])
def test_finfo(T, dtype):
    x = T.zeros((2, 2), dtype=getattr(T, dtype))
    info, reference = T.finfo(x.dtype), np.finfo(np.dtype(dtype))
    assert info.bits == reference.bits
    assert info.max == reference.max and info.min == reference.min
    assert info.eps == reference.eps
    assert info.tiny == reference.tiny == info.smallest_normal
    assert info.resolution == reference.resolution
    assert info.dtype == reference.dtype  # (a complex dtype's limits are its real parts': complex64's are float32's)
    if dtype in FLOATS:
        previous = T.get_default_dtype()
        T.set_default_dtype(getattr(T, dtype))
        try:
            assert T.finfo(getattr(T, dtype)) == T.finfo()
        finally:
            T.set_default_dtype(previous)
    else:
        assert T.finfo(getattr(T, dtype)) == T.finfo(getattr(T, {"complex64": "float32",
                                                                   "complex128": "float64"}[dtype]))
    assert T.finfo(T.float32) != T.finfo(T.float64)


@pytest.mark.parametrize("name, bits, biggest, eps, tiny, resolution", [
    ("bfloat16", 16, 3.38953e+38, 0.0078125, 1.17549e-38, 0.01),
    ("float8_e5m2", 8, 57344.0, 0.25, 6.10352e-05, 1.0),
    ("float8_e4m3fn", 8, 448.0, 0.125, 0.015625, 1.0)])
def test_finfo_of_bfloat16_and_float8(T, request, name, bits, biggest, eps, tiny, resolution):
    if name != "bfloat16":  # (autograd.bfloat16 is a name only, but its limits are known)
        xfail_on_chainrule(T, request, f"chainrule has no {name} dtype (NumPy has none)")
    info = T.finfo(getattr(T, name))
    assert info.bits == bits
    assert info.max == pytest.approx(biggest, rel=1e-5) and info.min == pytest.approx(-biggest, rel=1e-5)
    assert info.eps == eps and info.resolution == resolution
    assert info.tiny == pytest.approx(tiny, rel=1e-5) and info.tiny == info.smallest_normal
    assert info.dtype == name
