"""The NumPy-interop fixes of probe 27, each against literals and (where installed) PyTorch: the not-writable and
list-of-ndarrays warnings given once a process (PyTorch's TORCH_WARN_ONCE), a ufunc's bool result on a tensor as
uint8 (PyTorch's __array_wrap__), ``np.array(t, dtype=other, copy=False)`` refused, ``numpy.bool_`` read as a
float number."""

import warnings

import numpy as np
import pytest

import autograd
from autograd import warn_once

# PyTorch's __array__ and __array_wrap__ predate NumPy 2's protocol (no copy=, no return_scalar=): NumPy's notice of it
pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")


@pytest.fixture(params=["autograd", pytest.param("torch", marks=pytest.mark.torch)])
def T(request):
    return autograd if request.param == "autograd" else pytest.importorskip("torch")


def name(dtype):
    return str(dtype).split(".")[-1]


def read_only_array():
    array = np.arange(3.0)
    array.flags.writeable = False
    return array


@pytest.mark.parametrize("make", [lambda T: T.from_numpy(read_only_array()), lambda T: T.as_tensor(read_only_array()),
                                  lambda T: T.tensor([np.ones(2), np.zeros(2)])])
def test_numpy_warnings_once_a_process(monkeypatch, make):
    monkeypatch.setattr(warn_once, "_warned_once", set())  # (a fresh process's state, for chainrule)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = make(autograd)
        make(autograd)
        make(autograd)
    assert len(caught) == 1 and caught[0].category is UserWarning
    assert first.tolist() in ([0.0, 1.0, 2.0], [[1.0, 1.0], [0.0, 0.0]])


def test_numpy_warnings_every_time_under_warn_always(T):
    before = T.is_warn_always_enabled()
    T.set_warn_always(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            T.from_numpy(read_only_array())
            T.from_numpy(read_only_array())
    finally:
        T.set_warn_always(before)
    assert [str(w.message)[:36] for w in caught] == ["The given NumPy array is not writabl"] * 2


@pytest.mark.parametrize("ufunc, expected", [(np.isnan, [0, 1, 0]), (lambda t: np.greater(t, 0), [1, 0, 0]),
                                             (lambda t: np.equal(t, t), [1, 0, 1])])
def test_ufunc_bool_result_is_uint8(T, ufunc, expected):
    out = ufunc(T.tensor([1.0, float("nan"), -2.0]))
    assert isinstance(out, T.Tensor) and name(out.dtype) == "uint8"
    assert out.tolist() == expected
    zero_dim = np.isnan(T.tensor(1.0))
    assert name(zero_dim.dtype) == "uint8" and zero_dim.shape == () and zero_dim.item() == 0


def test_ufunc_other_results_keep_their_dtype(T):
    out = np.exp(T.tensor([0.0, 1.0]))
    assert name(out.dtype) == "float32"
    np.testing.assert_allclose(out.numpy(), np.exp(np.float32([0.0, 1.0])))


def test_array_with_another_dtype_and_copy_false_is_refused(T):
    t = T.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="Unable to avoid copy"):
        np.array(t, dtype=np.float64, copy=False)
    cast = np.asarray(t, dtype=np.float64)
    assert cast.dtype == np.float64 and cast.tolist() == [1.0, 2.0] and not np.shares_memory(cast, t.numpy())
    assert np.shares_memory(np.asarray(t, dtype=np.float32), t.numpy())


@pytest.mark.parametrize("make, dtype, values", [
    (lambda T, b: T.full((2,), b), "float32", [1.0, 1.0]),
    (lambda T, b: T.ones(2, dtype=T.int32) * b, "float32", [1.0, 1.0]),
    (lambda T, b: b * T.ones(2, dtype=T.int64), "float32", [1.0, 1.0]),
    (lambda T, b: T.tensor([True]) + b, "float32", [2.0]),
    (lambda T, b: T.where(T.tensor([True, False]), b, T.zeros(2, dtype=T.bool)), "float32", [1.0, 0.0]),
    (lambda T, b: T.arange(3).clamp(min=b), "float32", [1.0, 1.0, 2.0]),
    (lambda T, b: T.tensor([b, b]), "bool", [True, True]),  # (data, not a number beside a tensor: its own dtype)
    (lambda T, b: T.tensor([True]) == b, "bool", [True]),
    (lambda T, b: T.zeros(2, dtype=T.bool).fill_(b), "bool", [True, True]),
    (lambda T, b: T.full_like(T.ones(2, dtype=T.int32), b), "int32", [1, 1]),
])
def test_numpy_bool_scalar_is_read_as_a_float(T, make, dtype, values):
    out = make(T, np.bool_(True))
    assert name(out.dtype) == dtype and out.tolist() == values


def test_numpy_bool_scalar_refused_where_a_float_is(T):
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type Bool"):
        T.tensor([False]).add_(np.bool_(True))
