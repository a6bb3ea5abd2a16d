"""``autograd.tensor`` / ``as_tensor`` of a list that holds tensors, arrays or NumPy scalars: PyTorch
promotes the items' dtypes (a Python float counting as the default dtype), so ``tensor([R])`` with R a
float64 0-d tensor is float64 (actor-critic's ``smooth_l1_loss(value, torch.tensor([R]))``)."""

import numpy as np
import pytest

import autograd

CASES = [  # (the list, made from the library given, and PyTorch's dtype name)
    (lambda t: [t.tensor(2.0, dtype=t.float64), 3], "float64"),
    (lambda t: [t.tensor(2.0, dtype=t.float64)], "float64"),
    (lambda t: [t.tensor([2.0], dtype=t.float64), t.tensor([3.0])], "float64"),
    (lambda t: [t.tensor(2, dtype=t.int32), 3], "int64"),
    (lambda t: [t.tensor(2, dtype=t.int32), 3.5], "float32"),
    (lambda t: [t.tensor(2, dtype=t.int32)], "int32"),
    (lambda t: [1, t.tensor(2.0, dtype=t.float16)], "float16"),
    (lambda t: [1.5, t.tensor(2.0, dtype=t.float16)], "float32"),
    (lambda t: [np.float64(2.0), 3], "float64"),
    (lambda t: [np.float32(2.0), 3.0], "float32"),
    (lambda t: [[1.0, np.float64(2)]], "float64"),
    (lambda t: [np.array([1.0, 2.0]), np.array([3.0, 4.0])], "float64"),
    (lambda t: [t.tensor(1 + 2j, dtype=t.complex128)], "complex128"),
    (lambda t: [t.tensor(1 + 2j, dtype=t.complex64), 2], "complex64"),
    (lambda t: [True, t.tensor(1, dtype=t.uint8)], "uint8"),
    (lambda t: [[1, 2], [t.tensor(3, dtype=t.int16), 4]], "int64"),
    (lambda t: [1.0, 2.5], "float32"),
    (lambda t: [1, 2], "int64"),
]


@pytest.mark.parametrize("make, expected", CASES)
def test_dtype_of_a_list_holding_tensors(make, expected):
    for factory in (autograd.tensor, autograd.as_tensor):
        t = factory(make(autograd))
        assert t.dtype == np.dtype(expected)
        np.testing.assert_array_equal(t.numpy(), np.array(_values(make(autograd))))


def _values(data):
    if isinstance(data, (list, tuple)):
        return [_values(v) for v in data]
    if isinstance(data, autograd.Tensor):  # (a tensor in a list is read as a number, as PyTorch reads it)
        return data.item()
    return data.tolist() if hasattr(data, "tolist") else data


def test_values_and_grad_free_copies():
    R = autograd.tensor([1.5, -0.25], dtype=autograd.float64, requires_grad=True)[1]
    t = autograd.tensor([R])
    assert t.dtype == autograd.float64 and t.tolist() == [-0.25] and not t.requires_grad


@pytest.mark.parametrize("make, expected", CASES)
@pytest.mark.filterwarnings("ignore:Creating a tensor from a list of numpy.ndarrays:UserWarning")
def test_against_torch(make, expected):
    torch = pytest.importorskip("torch")
    assert str(torch.tensor(make(torch)).dtype) == f"torch.{expected}"


def test_a_ragged_list_holding_tensors_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"expected sequence of length 1 at dim 1 \(got 2\)"):  # (PyTorch's words)
        autograd.tensor([[1.0], [autograd.tensor(2.0), 3]])


def test_nested_python_lists_keep_their_dtypes():
    assert autograd.tensor([[1.0, 2.0], [3.0, 4.0]]).dtype == autograd.float32
    assert autograd.tensor([[1, 2], [3, 4]]).dtype == autograd.int64
    assert autograd.tensor([[[True]]]).dtype == autograd.bool
    assert autograd.tensor([[], []]).shape == (2, 0)

