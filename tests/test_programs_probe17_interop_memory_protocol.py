"""Programs that mix tensors with NumPy and plain Python as real training scripts do (see tests/pytorch_programs.py),
each run on chainrule and on PyTorch and compared, results, Python types and dtypes. ``torch.from_numpy`` and
``.numpy()`` sharing memory both ways, through in-place ops, views and ``t = t + 1``; the array protocol
(``np.asarray(t)``, ``np.array(t, dtype=...)``, ``t.__array__``, ufuncs and ``np.stack`` on tensors, NumPy scalars on
either side of a tensor); tensors built from NumPy scalars, 0-d arrays and mixed Python numbers;
``torch.as_tensor``'s, ``torch.asarray``'s and ``from_numpy``'s sharing and copying; where PyTorch hands a tensor to
NumPy (strict expected failures: a ufunc on a tensor that requires grad is refused, a tensor op an integer ndarray
promotes as NumPy)."""

import warnings

import numpy as np
import pytest

from .probe17_interop_common import dtype_name, kind
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# 2. memory shared between NumPy and tensors, both ways
# ----------------------------------------------------------------------------------------------


def shared_memory(m):
    torch = m.torch
    buffer = np.zeros(6, dtype=np.float32)
    t = torch.from_numpy(buffer)
    buffer[0] = 1.0  # NumPy writes, the tensor sees
    t[1] = 2.0  # the tensor writes, NumPy sees
    t.mul_(3)  # in place: shared
    u = t + 1  # a new tensor: not shared
    u[2] = 99.0
    matrix = t.view(2, 3)  # a view of the same memory
    matrix[:, 2] = -1.0
    column = matrix.numpy()[:, 1]  # a NumPy view of a tensor view
    column += 10
    t = t * 2  # rebinding the name: the buffer keeps its values
    t.add_(100)

    params = torch.ones(3, requires_grad=True)
    view = params.detach().numpy()  # shares the parameter's memory
    with torch.no_grad():
        params.sub_(0.5)  # an optimizer-style update shows through the array
    snapshot = params.detach().cpu().numpy().copy()
    with torch.no_grad():
        params.mul_(2)

    state = {"w": torch.arange(4.0)}
    exported = {k: v.numpy() for k, v in state.items()}
    state["w"].zero_()  # the exported arrays were views
    return buffer.copy(), u, matrix, t, view.copy(), snapshot, exported["w"].copy()


def test_from_numpy_and_numpy_share_memory_both_ways():
    ours, _ = run_both(shared_memory)
    buffer, u, matrix, t, view, snapshot, exported = ours
    np.testing.assert_array_equal(buffer, [3, 16, -1, 0, 10, -1])
    np.testing.assert_array_equal(u, [4, 7, 99, 1, 1, 1])
    np.testing.assert_array_equal(view, [1, 1, 1])
    np.testing.assert_array_equal(snapshot, [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(exported, [0, 0, 0, 0])


# ----------------------------------------------------------------------------------------------
# 3. the array protocol: NumPy functions on tensors, NumPy scalars beside tensors
# ----------------------------------------------------------------------------------------------


def array_protocol(m):
    torch = m.torch
    t = torch.tensor([[0.5, -1.0], [2.0, 3.0]])
    ints = torch.tensor([3, 1, 2])
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PyTorch's __array_wrap__ under NumPy 2
        out["asarray"] = np.asarray(t)
        out["array_f64"] = np.array(t, dtype=np.float64)
        out["array_int"] = np.array(ints, dtype=np.int32)
        out["dunder"] = t.__array__()
        out["exp"] = np.exp(t)
        out["sqrt_abs"] = np.sqrt(np.abs(t))
        out["maximum"] = np.maximum(t, 0)
        out["stack"] = np.stack([t[0], t[1]])
        out["stack_scores"] = np.stack([torch.tensor(1.5), torch.tensor(2.5)])
        out["concat"] = np.concatenate([t, t], axis=1)
        out["argsort"] = np.argsort(ints)
        out["bincount"] = np.bincount(ints)
        out["norm"] = np.linalg.norm(t)
        out["allclose"] = bool(np.allclose(t, np.array([[0.5, -1.0], [2.0, 3.0]])))
        out["np_float32_left"] = np.float32(2.0) * t
        out["np_float64_left"] = np.float64(0.5) + t
        out["np_float64_right"] = t / np.float64(4.0)
        out["np_int_left"] = np.int64(2) * ints
        out["np_float_times_ints"] = np.float64(0.5) * ints
        out["np_float32_minus"] = np.float32(1.0) - t
        out["np_pow"] = np.float64(2.0) ** t
        out["np_scalar_mean"] = np.mean(np.array([0.5, 1.5])) * t  # a NumPy float64 from a reduction
        out["np_pi"] = t * np.pi
        out["compare"] = np.float64(1.0) < t
        out["np_float64_of_0d"] = np.float64(t.sum())
        out["float32_of_0d"] = np.float32(t[0, 0])
        out["np_mean_of_items"] = np.mean([t.sum().item(), t.max().item()])
    kinds = {k: kind(v) for k, v in out.items()}
    return out, kinds


def test_numpy_functions_on_tensors_and_numpy_scalars_beside_them():
    ours, theirs = run_both(array_protocol)
    values, kinds = ours
    assert kinds["np_float32_left"] == "Tensor(float32)" and kinds["np_float_times_ints"] == "Tensor(float32)"
    assert kinds["exp"] == "Tensor(float32)" and kinds["asarray"] == "ndarray(float32)"
    assert kinds["stack"] == "ndarray(float32)" and kinds["np_float64_of_0d"] == "np.float64"
    np.testing.assert_allclose(values["np_pow"], 2.0 ** np.array([[0.5, -1.0], [2.0, 3.0]]), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# 4. tensors built from NumPy scalars, 0-d arrays and mixed Python numbers
# ----------------------------------------------------------------------------------------------


def tensors_from_mixed_values(m):
    torch = m.torch
    np.random.seed(0)
    samples = np.random.randn(4).astype(np.float32)
    made = {
        "np_float32_list": torch.tensor([samples[0], samples[1]]),
        "np_float64_list": torch.tensor([np.float64(0.1), np.float64(0.2)]),
        "np_int_list": torch.tensor([np.int32(1), np.int64(2)]),
        "np_bool_list": torch.tensor([np.bool_(True), np.bool_(False)]),
        "mixed_numbers": torch.tensor([1, 2.5, True]),
        "ints_and_bools": torch.tensor([1, True, False]),
        "np_int_and_float": torch.tensor([np.int32(1), 2.5]),
        "np_float32_and_float": torch.tensor([np.float32(1.5), 2.0]),
        "np_float64_scalar": torch.tensor(np.float64(1.0)),
        "np_float32_scalar": torch.tensor(np.float32(1.0)),
        "zero_d_array": torch.tensor(np.array(3, dtype=np.int16)),
        "zero_d_tensors": torch.tensor([torch.tensor(1.0), torch.tensor(2.0)]),
        "nested_arrays": torch.tensor(np.stack([np.ones(2, np.float32), np.zeros(2, np.float32)])),
        "transposed_array": torch.tensor(np.arange(6).reshape(2, 3).T),
        "legacy_from_array": torch.Tensor(np.arange(3)),
        "long_from_floats": torch.LongTensor(np.array([1.0, 2.0])),
        "with_dtype": torch.tensor(np.arange(3), dtype=torch.float32),
        "from_item_list": torch.tensor([t.item() for t in torch.tensor([0.1, 0.2])], dtype=torch.float64),
        "full_np_float": torch.full((2,), np.float32(1.5)),
        "full_np_int": torch.full((2,), np.int64(7)),
        "randint_sizes": torch.zeros(np.int64(2), np.int32(3)),
        "size_from_array": torch.zeros(np.ones((3, 2)).shape),
    }
    return made, {k: dtype_name(v.dtype) for k, v in made.items()}


def test_tensors_from_numpy_scalars_and_mixed_python_numbers():
    ours, _ = run_both(tensors_from_mixed_values)
    made, dtypes = ours
    assert dtypes["np_float32_list"] == "float32" and dtypes["np_float64_list"] == "float64"  # their own dtypes
    assert dtypes["mixed_numbers"] == "float32" and dtypes["ints_and_bools"] == "int64"
    assert dtypes["np_float64_scalar"] == "float64" and dtypes["zero_d_array"] == "int16"


# ----------------------------------------------------------------------------------------------
# 12. torch.as_tensor, torch.asarray and from_numpy: when they share and when they copy
# ----------------------------------------------------------------------------------------------


def sharing_rules(m):
    torch = m.torch

    def shares(make, array):
        t = make(array)
        t.view(-1)[0] = 42
        return bool(array.reshape(-1)[0] == 42), dtype_name(t.dtype)

    out = {
        "as_tensor": shares(torch.as_tensor, np.zeros(3, np.float32)),
        "as_tensor_f64": shares(torch.as_tensor, np.zeros(3)),
        "as_tensor_cast": shares(lambda a: torch.as_tensor(a, dtype=torch.float32), np.zeros(3)),
        "as_tensor_same_dtype": shares(lambda a: torch.as_tensor(a, dtype=torch.float64), np.zeros(3)),
        "as_tensor_cpu": shares(lambda a: torch.as_tensor(a, device="cpu"), np.zeros(3)),
        "as_tensor_strided": shares(torch.as_tensor, np.zeros((3, 2))[:, 0]),
        "asarray": shares(torch.asarray, np.zeros(3)),
        "asarray_copy": shares(lambda a: torch.asarray(a, copy=True), np.zeros(3)),
        "asarray_cast": shares(lambda a: torch.asarray(a, dtype=torch.float32), np.zeros(3)),
        "tensor": shares(torch.tensor, np.zeros(3)),
        "from_numpy": shares(torch.from_numpy, np.zeros((2, 2))),
        "from_numpy_float": shares(lambda a: torch.from_numpy(a).float(), np.zeros(3)),
        "from_numpy_double": shares(lambda a: torch.from_numpy(a).double(), np.zeros(3)),
        "from_numpy_to_cpu": shares(lambda a: torch.from_numpy(a).to("cpu"), np.zeros(3)),
        "from_numpy_view": shares(lambda a: torch.from_numpy(a).view(3, 1), np.zeros(3)),
        "from_numpy_T_contiguous": shares(lambda a: torch.from_numpy(a).t().contiguous(), np.zeros((2, 2))),
        "from_numpy_T_reshape": shares(lambda a: torch.from_numpy(a).t().reshape(-1), np.zeros((2, 2))),
        "from_numpy_clone": shares(lambda a: torch.from_numpy(a).clone(), np.zeros(3)),
    }
    tensor = torch.zeros(3)
    as_tensor_of_tensor = torch.as_tensor(tensor)
    cast = torch.as_tensor(tensor, dtype=torch.float64)
    cast.add_(1)
    out["as_tensor_of_tensor"] = as_tensor_of_tensor is tensor
    out["as_tensor_of_tensor_cast"] = tensor.tolist()
    param = torch.ones(2, requires_grad=True)
    out["detach_numpy_shares"] = (param.detach().numpy().__setitem__(0, 5.0), param.tolist())[1]
    out["numpy_force"] = param.numpy(force=True).tolist()
    out["list_of_tensors"] = torch.as_tensor([torch.tensor(1.0), torch.tensor(2.0)]).tolist()
    out["np_asarray_of_tensors"] = np.asarray([torch.ones(2), torch.zeros(2)]).tolist()
    return out


def test_when_as_tensor_asarray_and_from_numpy_share_memory():
    ours, _ = run_both(sharing_rules)
    assert ours["as_tensor"] == (True, "float32") and ours["as_tensor_cast"] == (False, "float32")
    assert ours["from_numpy_float"] == (False, "float32") and ours["from_numpy_double"] == (True, "float64")
    assert ours["tensor"] == (False, "float64") and ours["as_tensor_of_tensor"] is True
    assert ours["detach_numpy_shares"] == [5.0, 1.0]


# ----------------------------------------------------------------------------------------------
# 14. where PyTorch hands a tensor to NumPy: a ufunc on a tensor that requires grad, a tensor op an ndarray
# ----------------------------------------------------------------------------------------------


def numpy_metric_on_a_live_loss(m):
    torch = m.torch
    weight = torch.ones(3, requires_grad=True)
    loss = (weight * torch.tensor([0.5, 1.0, 2.0])).sum()
    try:
        np.log(loss)  # forgot .item() / .detach()
    except RuntimeError as error:
        return str(error)
    return "no error"


@pytest.mark.xfail(strict=True, reason="a NumPy function on a tensor that requires grad computes on its values, "
                   "where PyTorch's __array__ calls .numpy() and refuses: \"Can't call numpy() on Tensor that "
                   "requires grad. Use tensor.detach().numpy() instead.\" (Tensor.numpy and __array__ are in "
                   "autograd/tensor.py, whose numpy() chooses not to refuse)")
def test_a_numpy_ufunc_on_a_tensor_that_requires_grad_is_refused():
    ours, _ = run_both(numpy_metric_on_a_live_loss)
    assert ours == "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead."


def tensor_with_integer_arrays(m):
    torch = m.torch
    probs = torch.tensor([0.2, 0.5, 0.3])
    counts = np.array([1, 2, 3])  # int64: PyTorch hands `probs * counts` to NumPy, which promotes to float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        results = [probs * counts, probs / counts, probs + np.array(1.0), probs - np.array([1, 2, 3], np.int32)]
    return [dtype_name(r.dtype) for r in results], results


@pytest.mark.xfail(strict=True, reason="a float32 tensor op an integer (or 0-d float64) ndarray keeps float32 by "
                   "PyTorch's tensor promotion, where PyTorch itself hands the op to NumPy (the ndarray makes "
                   "Tensor.__mul__ fail, so ndarray.__rmul__ runs the ufunc on the tensor's __array__ and wraps the "
                   "result), whose promotion gives float64; the operand rule is autograd/operands.py's")
def test_a_tensor_op_an_integer_ndarray_promotes_as_numpy():
    ours, _ = run_both(tensor_with_integer_arrays)
    assert ours[0] == ["float64", "float64", "float64", "float64"]
