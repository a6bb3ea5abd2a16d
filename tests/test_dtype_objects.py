"""autograd.dtype: PyTorch's dtype objects (is_floating_point, is_complex, is_signed, to_complex, to_real, one
object per dtype), standing for NumPy dtypes (NumPy takes them, they equal and hash as them)."""

import copy
import io
import pickle

import numpy as np
import pytest

import autograd
import nn

NAMES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool", "complex64",
         "complex128"]
FLOATING = {"float16", "float32", "float64"}
COMPLEX = {"complex64", "complex128"}
UNSIGNED = {"uint8", "bool"}


@pytest.mark.parametrize("name", NAMES)
def test_properties_of_every_dtype(name):
    dtype = getattr(autograd, name)
    assert isinstance(dtype, autograd.dtype)
    assert dtype.is_floating_point == (name in FLOATING)
    assert dtype.is_complex == (name in COMPLEX)
    assert dtype.is_signed == (name not in UNSIGNED)
    assert dtype.itemsize == np.dtype(name).itemsize
    assert dtype == np.dtype(name) and np.dtype(name) == dtype and hash(dtype) == hash(np.dtype(name))
    assert autograd.zeros(2, dtype=dtype).dtype is dtype  # one object per dtype


@pytest.mark.parametrize("name", NAMES)
def test_properties_are_pytorchs(name):
    torch = pytest.importorskip("torch")
    ours, theirs = getattr(autograd, name), getattr(torch, name)
    assert (ours.is_floating_point, ours.is_complex, ours.is_signed, ours.itemsize) == \
           (theirs.is_floating_point, theirs.is_complex, theirs.is_signed, theirs.itemsize)


def test_to_complex_and_to_real():
    assert autograd.float32.to_complex() is autograd.complex64
    assert autograd.float64.to_complex() is autograd.complex128
    assert autograd.complex64.to_real() is autograd.float32 and autograd.complex128.to_real() is autograd.float64
    assert autograd.complex64.to_complex() is autograd.complex64 and autograd.float64.to_real() is autograd.float64
    for integer in (autograd.int64, autograd.uint8, autograd.bool):
        with pytest.raises(RuntimeError, match="to_complex is not supported"):
            integer.to_complex()
        with pytest.raises(RuntimeError, match="to_real is not supported"):
            integer.to_real()
    with pytest.raises(RuntimeError, match="complex32"):
        autograd.float16.to_complex()


def test_a_tensors_dtype_is_the_public_object():
    x = autograd.tensor([1.5, 2.0])
    assert x.dtype is autograd.float32 and x.double().dtype is autograd.float64
    assert autograd.tensor([1, 2]).dtype is autograd.int64 and autograd.tensor([True]).dtype is autograd.bool
    assert nn.Linear(2, 2).weight.dtype is autograd.float32
    assert autograd.get_default_dtype() is autograd.float32
    assert autograd.promote_types(autograd.int32, autograd.float16) is autograd.float16
    assert autograd.result_type(autograd.ones(2, dtype=autograd.int8), 2.5) is autograd.float32
    assert autograd.dtype("float64") is autograd.float64 and autograd.dtype(np.int16) is autograd.int16


def test_numpy_reads_it_as_its_dtype():
    x = autograd.arange(4.0)
    assert np.zeros(3, dtype=x.dtype).dtype == np.float32
    assert np.arange(3).astype(autograd.float16).dtype == np.float16
    assert np.dtype(autograd.int8) == np.int8 and np.issubdtype(autograd.int32, np.integer)
    assert np.finfo(autograd.float32).eps == np.float32(2.0 ** -23)
    assert np.result_type(autograd.float32, np.float64) == np.float64
    assert x.dtype.kind == "f" and x.dtype.type is np.float32 and x.dtype.str == "<f4"
    assert x.dtype == "float32" and x.dtype != autograd.float64 and x.dtype != autograd.bfloat16
    assert x.dtype in (autograd.float16, autograd.float32) and x.dtype in {np.dtype("float32"): 0}
    assert {autograd.float32: "a"}[np.dtype("float32")] == "a"
    assert x.view(autograd.int32).tolist() == [0, 1065353216, 1073741824, 1077936128]
    assert str(x.dtype) == "float32" and repr(x.dtype) == "dtype('float32')"


def test_a_dtype_survives_copies_pickles_and_checkpoints():
    assert copy.deepcopy(autograd.float16) is autograd.float16
    assert pickle.loads(pickle.dumps(autograd.complex64)) is autograd.complex64
    assert type(autograd.float32).__module__ == "autograd"
    buffer = io.BytesIO()
    autograd.save({"dtype": autograd.float16, "weights": autograd.ones(2)}, buffer)
    buffer.seek(0)
    loaded = autograd.load(buffer)
    assert loaded["dtype"] is autograd.float16 and loaded["dtype"].is_floating_point


def ema_of_floating_state(torch, nn):
    """An EMA of a model's state as YOLOv5's ModelEMA and most EMA helpers write it: only floating entries
    are averaged (the BatchNorm's num_batches_tracked is an integer, left alone)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model(torch.randn(8, 3))
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].mul_(0.9).add_(v.detach(), alpha=0.1)
            else:
                ema[k].copy_(v)
    return {k: v.numpy().copy() for k, v in ema.items()}


def test_an_ema_reading_dtype_is_floating_point():
    ours = ema_of_floating_state(autograd, nn)
    assert ours["1.num_batches_tracked"] == 1 and ours["1.num_batches_tracked"].dtype == np.int64
    assert ours["1.running_var"].dtype == np.float32 and not np.allclose(ours["1.running_var"], 1.0)
    torch = pytest.importorskip("torch")
    theirs = ema_of_floating_state(torch, torch.nn)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-6, atol=1e-7)
