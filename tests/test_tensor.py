"""Tensor behaviour: dtypes, factories, indexing, shapes, comparisons, errors, saving."""

import pathlib

import numpy as np
import pytest

import autograd
from autograd import Tensor


def test_dtype_rules():
    assert Tensor([1.0, 2.0]).dtype == autograd.float32
    with pytest.raises(TypeError, match="data must be a sequence"):
        Tensor(3.5)  # (PyTorch's legacy constructor takes a number as a size, and a float is none)
    assert Tensor(np.array([1.0])).dtype == autograd.float64
    # Tensor(...) is PyTorch's legacy constructor: Python data becomes the default floating dtype;
    # autograd.tensor infers (int64, bool); a floating array keeps its dtype (the contract's rule), and an
    # integer or bool array becomes the default float too, as in PyTorch (torch.Tensor(next_done) of a bool
    # array, then 1.0 - it); a Tensor is shared whatever its dtype
    assert Tensor([1, 2]).dtype == autograd.float32 and Tensor([True]).dtype == autograd.float32
    assert autograd.tensor([1, 2]).dtype == autograd.int64 and autograd.tensor([True]).dtype == autograd.bool
    assert Tensor(np.array([1, 2])).dtype == autograd.float32 and Tensor(np.array([1, 2])).tolist() == [1.0, 2.0]
    assert Tensor(np.array([True, False])).tolist() == [1.0, 0.0]
    assert Tensor(np.arange(3, dtype=np.uint8)).dtype == autograd.float32
    assert Tensor(range(3)).tolist() == [0.0, 1.0, 2.0] and Tensor(range(3)).dtype == autograd.float32
    assert Tensor(np.array([1, 2]), dtype=autograd.int64).dtype == autograd.int64
    assert Tensor(np.array([1.0], dtype=np.float16)).dtype == autograd.float16
    assert autograd.tensor(np.array([1, 2])).dtype == autograd.int64
    integers = autograd.arange(3)
    assert Tensor(integers).dtype == autograd.int64 and np.shares_memory(Tensor(integers)._data, integers._data)
    assert Tensor(integers)._base is integers  # PyTorch's alias (AliasBackward0 where it requires grad)
    autograd.set_default_dtype(autograd.float64)
    try:
        assert Tensor(np.array([1, 2])).dtype == autograd.float64
    finally:
        autograd.set_default_dtype(autograd.float32)
    assert Tensor([1, 2], dtype=autograd.float64).dtype == autograd.float64
    assert (Tensor([1.0], dtype=np.float32) * 2.5).dtype == autograd.float32
    assert (Tensor([1.0], dtype=np.float64) * Tensor([1.0])).dtype == autograd.float64
    assert (autograd.tensor([1, 2]) * 2).dtype == autograd.int64 and (Tensor([1, 2]) * 2).dtype == autograd.float32


def test_default_dtype_can_change():
    autograd.set_default_dtype(autograd.float64)
    try:
        assert Tensor([1.0]).dtype == autograd.float64
        assert autograd.zeros(2).dtype == autograd.float64
    finally:
        autograd.set_default_dtype(autograd.float32)
    with pytest.raises(TypeError, match="floating"):
        autograd.set_default_dtype(autograd.int64)


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match=r"Only Tensors of floating point and complex dtype .* int64 of shape \(2,\)"):
        autograd.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"only Tensors of floating point dtype .* int64 tensor of shape \(2,\)"):
        autograd.tensor([1, 2]).requires_grad_()
    with pytest.raises(TypeError, match="bool"):
        autograd.tensor([True]).requires_grad_()


def test_integer_results_of_float_ops_do_not_require_grad():
    x = Tensor([1.5, 2.5], requires_grad=True)
    assert not x.long().requires_grad
    assert not (x > 2).requires_grad and (x > 2).dtype == autograd.bool


def test_comparisons_return_bool_tensors_without_grad():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    for result in (x < 2, x <= 2, x > 2, x >= 2, x == 2, x != 2):
        assert result.dtype == autograd.bool and result.grad_fn is None
    np.testing.assert_array_equal((x >= 2).numpy(), [False, True, True])


def test_factories():
    autograd.manual_seed(0)
    a = autograd.randn(2, 3)
    autograd.manual_seed(0)
    b = autograd.randn((2, 3))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert autograd.zeros(2, 3).shape == (2, 3) and autograd.ones(4).numpy().sum() == 4
    assert autograd.full((2,), 7.0).numpy().tolist() == [7.0, 7.0]
    assert autograd.arange(5).dtype == autograd.int64
    assert autograd.arange(0, 1, 0.25).numpy().tolist() == [0.0, 0.25, 0.5, 0.75]
    np.testing.assert_allclose(autograd.linspace(0, 1, 5).numpy(), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(autograd.eye(3).numpy(), np.eye(3))
    r = autograd.rand(1000)
    assert 0 <= r.numpy().min() and r.numpy().max() < 1
    i = autograd.randint(0, 5, (100,))
    assert i.dtype == autograd.int64 and set(i.numpy()) <= set(range(5))
    assert autograd.zeros_like(a).shape == a.shape and autograd.ones_like(a).dtype == a.dtype
    assert autograd.empty(3).shape == (3,)


def test_tensor_copies_its_data():
    data = np.array([1.0, 2.0])
    t = autograd.tensor(data)
    data[0] = 5.0
    assert t.numpy()[0] == 1.0


def test_indexing_forms_and_repeated_indices_accumulate():
    x = Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    assert x[1].shape == (4,)
    assert x[:, 1:3].shape == (3, 2)
    assert x[None, ..., 0].shape == (1, 3)
    assert x[x > 5].shape == (6,)
    y = x[[0, 0, 2]]
    assert y.shape == (3, 4)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[:, 0], [2.0, 0.0, 1.0])


def test_index_with_an_integer_tensor():
    x = Tensor(np.arange(5.0), requires_grad=True)
    idx = autograd.tensor([4, 4, 1])
    x[idx].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 0, 0, 2])


def test_shape_ops():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    assert x.reshape(6, 4).shape == (6, 4)
    assert x.view(-1).shape == (24,)
    assert x.flatten(1).shape == (2, 12)
    assert x.transpose(0, 2).shape == (4, 3, 2)
    assert x.permute(2, 0, 1).shape == (4, 2, 3)
    assert x.unsqueeze(1).shape == (2, 1, 3, 4)
    assert x[:, :1].squeeze(1).shape == (2, 4)
    assert x[:1].squeeze().shape == (3, 4)
    assert x[:, :1].expand(2, 3, 4).shape == (2, 3, 4)
    assert x.T.shape == (4, 3, 2)
    assert autograd.cat([x, x], 1).shape == (2, 6, 4)
    assert autograd.stack([x, x], -1).shape == (2, 3, 4, 2)


def test_reductions_match_numpy():
    data = np.random.default_rng(0).standard_normal((3, 4))
    x = Tensor(data)
    np.testing.assert_allclose(x.sum(1).numpy(), data.sum(1))
    np.testing.assert_allclose(x.mean((0, 1)).numpy(), data.mean())
    np.testing.assert_allclose(x.var(0).numpy(), data.var(0, ddof=1))
    np.testing.assert_allclose(x.std(1, unbiased=False).numpy(), data.std(1))
    values, indices = x.max(1)
    np.testing.assert_allclose(values.numpy(), data.max(1))
    np.testing.assert_array_equal(indices.numpy(), data.argmax(1))
    assert x.min(0, keepdim=True).values.shape == (1, 4)
    np.testing.assert_allclose(x.logsumexp(1).numpy(), np.log(np.exp(data).sum(1)))
    np.testing.assert_allclose(x.softmax(1).numpy().sum(1), np.ones(3), rtol=1e-12)
    assert x.argmax().item() == data.argmax()
    np.testing.assert_array_equal(x.argmin(0).numpy(), data.argmin(0))


def test_softmax_and_logsumexp_are_stable_for_huge_logits():
    x = Tensor([[1000.0, 0.0, -1000.0]], requires_grad=True)
    np.testing.assert_allclose(x.softmax(1).numpy(), [[1, 0, 0]], atol=1e-30)
    np.testing.assert_allclose(x.log_softmax(1).numpy(), [[0, -1000, -2000]])
    assert x.logsumexp(1).item() == 1000.0
    x.log_softmax(1)[0, 0].backward()
    assert np.all(np.isfinite(x.grad.numpy()))


def test_max_gradient_is_shared_between_ties():
    x = Tensor([1.0, 3.0, 3.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0, 0.5, 0.5])


def test_matmul_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"shapes \(3, 4\) and \(5, 2\) cannot be multiplied"):
        autograd.randn(3, 4) @ autograd.randn(5, 2)


def test_broadcast_error_names_the_op_and_shapes():
    with pytest.raises(ValueError, match=r"Add of shapes \(3, 4\), \(5,\)"):
        autograd.randn(3, 4) + autograd.randn(5)


def test_reshape_error_names_the_shapes():
    with pytest.raises(ValueError, match=r"Reshape of shapes \(2, 3\).*into shape \(4,\)"):
        autograd.randn(2, 3).reshape(4)


def test_cat_and_stack_errors_name_shapes():
    with pytest.raises(RuntimeError, match=r"\(2, 3\), \(2, 4\)"):  # PyTorch's error type
        autograd.cat([autograd.zeros(2, 3), autograd.zeros(2, 4)], 0)
    with pytest.raises(RuntimeError, match="same shape"):
        autograd.stack([autograd.zeros(2), autograd.zeros(3)])


def test_item_and_conversions():
    assert Tensor([[2.5]]).item() == 2.5
    with pytest.raises(ValueError, match=r"one element, got shape \(2,\)"):
        Tensor([1.0, 2.0]).item()
    assert float(Tensor([1.5])) == 1.5 and int(autograd.tensor(3)) == 3
    assert autograd.tensor([1, 2]).tolist() == [1, 2] and Tensor([1, 2]).tolist() == [1.0, 2.0]
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(Tensor([1.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(Tensor([1.0, 2.0])), [1.0, 2.0])


def test_detach_shares_data_and_leaves_graph():
    x = Tensor([1.0], requires_grad=True)
    y = (x * 2).detach()
    assert y.grad_fn is None and not y.requires_grad
    assert y.is_leaf


def test_numpy_array_on_the_left_of_an_operator():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_repr():
    assert repr(Tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert "requires_grad=True" in repr(Tensor([1.0], requires_grad=True))
    assert "grad_fn=<MulBackward0>" in repr(Tensor([1.0], requires_grad=True) * 2)


def test_save_and_load_round_trip(tmp_path):
    state = {"layer.weight": autograd.randn(3, 2), "step": 7, "nested": {"lr": 0.1, "ids": [1, 2]},
             "raw": np.arange(3), "flag": None}
    path = tmp_path / "state.npz"
    autograd.save(state, path)
    loaded = autograd.load(path)
    np.testing.assert_array_equal(loaded["layer.weight"].numpy(), state["layer.weight"].numpy())
    assert loaded["layer.weight"].dtype == autograd.float32
    assert loaded["step"] == 7 and loaded["nested"] == {"lr": 0.1, "ids": [1, 2]}
    np.testing.assert_array_equal(loaded["raw"], np.arange(3))
    assert loaded["flag"] is None


def _tied_weights_round_trip(torch, nn):
    import io

    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight  # tied, as GPT-2's embedding and output layer
    t = torch.ones(2, requires_grad=True)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "twice": [t, t]}, buffer)
    size = buffer.tell()
    buffer.seek(0)
    loaded = torch.load(buffer)
    a, b = loaded["model"]["0.weight"], loaded["model"]["1.weight"]
    first, second = loaded["twice"]
    a.add_(1.0)  # one storage: the write shows through the tied key too
    return (a.data_ptr() == b.data_ptr(), a is b, bool(torch.equal(a, b)), first is second,
            first.requires_grad), size


def test_save_writes_shared_tensors_once_and_load_shares_them_again():
    """Tied weights are one array in the file and one storage after loading; one tensor saved
    twice loads as one tensor (PyTorch's pickle memo)."""
    import nn

    ours, size = _tied_weights_round_trip(autograd, nn)
    assert ours == (True, False, True, True, True)
    untied = io_size_of({"0.weight": autograd.zeros(5, 3), "1.weight": autograd.zeros(5, 3),
                         "twice": [autograd.ones(2), autograd.ones(2)]})
    assert size < untied  # the tied weight and the repeated tensor are stored once
    torch = pytest.importorskip("torch")
    assert _tied_weights_round_trip(torch, torch.nn)[0] == ours


def io_size_of(obj):
    import io

    buffer = io.BytesIO()
    autograd.save(obj, buffer)
    return buffer.tell()


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, payload=np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        autograd.load(path)


def test_save_refuses_arbitrary_objects(tmp_path):
    with pytest.raises(TypeError, match="cannot store"):
        autograd.save({"f": object()}, tmp_path / "x.npz")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_a_python_number_in_arithmetic_as_pytorch(dtype):
    # x + c and x - c round c to x's dtype (as NumPy and PyTorch); x * c and x / c do too for
    # float32 and float64, while float16 is multiplied in float32 and rounded once, as PyTorch's
    # half arithmetic (1e-3 * 1e5 is 100, not float16(1e5) = inf); dL/dx likewise
    c = 1 / 3
    values = np.array([0.1, -2.5, 7.0, 1e-3], dtype=dtype)

    def product(a, b):
        if dtype == np.float16:
            return (a.astype(np.float32) * np.float32(b)).astype(np.float16)
        return a * b

    ones = np.ones(4, dtype=dtype)
    for combine, expected, slope in ((lambda x: x * c, product(values, c), product(ones, c)),
                                     (lambda x: c * x, product(values, c), product(ones, c)),
                                     (lambda x: x + c, values + c, ones),
                                     (lambda x: x - c, values - c, ones)):
        x = Tensor(values.copy(), requires_grad=True)
        y = combine(x)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y.detach().numpy(), expected)
        y.sum().backward()
        assert x.grad.dtype == dtype
        np.testing.assert_array_equal(x.grad.numpy(), slope)
    half = Tensor(np.array([1e-3, 1000.0], dtype=np.float16))
    np.testing.assert_array_equal((half * 1e5).numpy(), np.float16([np.float32(np.float16(1e-3)) * 1e5, np.inf]))
    np.testing.assert_array_equal((half / 1e5).numpy(), np.float16([0.0, 0.01]))


def test_mean_is_one_node_that_divides_by_n_as_pytorch():
    # PyTorch's mean is the sum divided by n (7 / 3 = 2.3333333 in float32), not the sum times
    # 1/n (2.3333335), and its node is MeanBackward; the gradient is dL/dy / n everywhere
    x = Tensor(np.array([2.0, 2.0, 3.0], dtype=np.float32), requires_grad=True)
    y = x.mean()
    assert y.item() == np.float32(7) / np.float32(3)
    assert repr(y.grad_fn) == "<MeanBackward0>" and y.grad_fn.next_functions[0][0].variable is x
    y.backward(Tensor(np.array(7, dtype=np.float32)))
    np.testing.assert_array_equal(x.grad.numpy(), np.full(3, np.float32(7) / np.float32(3)))
    rows = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    means = rows.mean(1, keepdim=True)
    np.testing.assert_array_equal(means.detach().numpy(), [[1.0], [4.0]])
    means.sum().backward()
    np.testing.assert_array_equal(rows.grad.numpy(), np.full((2, 3), 1 / 3))
    empty = Tensor(np.zeros((0, 2)), requires_grad=True).mean()  # NaN, quietly, as PyTorch's
    assert np.isnan(empty.item())


def test_cached_constants_are_read_only_and_typed():
    from autograd import backend

    zero = backend.constant(0, np.dtype(np.float16))
    assert zero.dtype == np.float16 and zero.ndim == 0 and zero == 0
    assert backend.constant(0, np.dtype(np.float16)) is zero
    with pytest.raises(ValueError):
        zero[...] = 1  # shared by every op that uses it: nobody may change it
    # ReLU and its backward use them: outputs keep the input's dtype
    for dtype in (np.float16, np.float64):
        x = Tensor(np.array([-1.0, 2.0], dtype=dtype), requires_grad=True)
        y = x.relu()
        y.sum().backward()
        assert y.dtype == dtype and x.grad.dtype == dtype
        np.testing.assert_array_equal(x.grad.numpy(), [0, 1])


def test_our_autograd_is_the_one_imported():
    root = pathlib.Path(__file__).resolve().parent.parent
    assert pathlib.Path(autograd.__file__).resolve().parent == root / "autograd"
    import nn
    import optim

    assert pathlib.Path(nn.__file__).resolve().parent == root / "nn"
    assert pathlib.Path(optim.__file__).resolve().parent == root / "optim"


def test_grad_assignment_is_checked_as_pytorch():
    x = Tensor(np.zeros(2, dtype=np.float32), requires_grad=True)
    x.grad = Tensor(np.ones(2, dtype=np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])
    for wrong, error in ((Tensor(np.ones(3, dtype=np.float32)), RuntimeError),  # another shape
                         (Tensor(np.ones(2, dtype=np.float64)), RuntimeError),  # another dtype
                         ([1.0, 1.0], TypeError)):  # not a tensor
        with pytest.raises(error):
            x.grad = wrong
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])  # a refused assignment changes nothing
    x.grad = None
    assert x.grad is None
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_legacy_sizes_constructor():
    # torch.Tensor(4, 3): PyTorch's old way to make a parameter's storage (then reset_parameters)
    import nn

    assert Tensor(2, 3).shape == (2, 3) and Tensor(2, 3).dtype == autograd.float32
    assert Tensor(2, 3, 4, 5).shape == (2, 3, 4, 5) and not Tensor(2, 3).requires_grad
    weight = nn.Parameter(Tensor(4, 3))
    nn.init.constant_(weight, 0.5)
    assert weight.shape == (4, 3) and weight.requires_grad and float(weight.sum().item()) == 6.0
    # torch.Tensor(3): a float tensor of size 3 (old layers: nn.Parameter(torch.Tensor(out_features))),
    # zeros here where PyTorch leaves the memory unset; Tensor() is empty, Tensor(Size) takes its sizes
    assert Tensor(3).shape == (3,) and Tensor(3).dtype == autograd.float32 and Tensor(3).tolist() == [0.0] * 3
    assert Tensor().shape == (0,) and Tensor(autograd.Size([2, 3])).shape == (2, 3)
    bias = nn.Parameter(Tensor(4))
    nn.init.zeros_(bias)
    assert bias.shape == (4,) and bias.requires_grad
    assert Tensor(3, dtype=autograd.float64).item() == 3.0  # with a dtype, a number is a value


def test_size_is_a_size():
    x = autograd.zeros(2, 3)
    assert isinstance(x.size(), autograd.Size) and x.size() == (2, 3) and repr(x.size()) == "Size([2, 3])"
    assert x.size().numel() == 6 and x.size(1) == 3 and x.size(-1) == 3
    rows, columns = x.size()
    assert (rows, columns) == (2, 3)


def test_pytorch_1_number_first_in_place_signatures_read_as_pytorch_reads_them():
    # old optimizers call p.data.addcdiv_(-step_size, exp_avg, denom) and p.add_(-lr, grad): a silent wrong
    # answer if read as (tensor1, tensor2, value); PyTorch still reads them number first, with a warning
    x, a, b = Tensor([1.0, 2.0]), Tensor([3.0, 4.0]), Tensor([2.0, 8.0])
    with pytest.warns(UserWarning, match="addcdiv_ is deprecated"):
        x.addcdiv_(-0.5, a, b)
    np.testing.assert_allclose(x.numpy(), [1.0 - 0.75, 2.0 - 0.25])
    with pytest.warns(UserWarning, match="addcmul_ is deprecated"):
        x.addcmul_(2.0, a, b)
    np.testing.assert_allclose(x.numpy(), [0.25 + 12.0, 1.75 + 64.0])
    with pytest.warns(UserWarning, match="add_ is deprecated"):
        x.add_(-1.0, a)
    np.testing.assert_allclose(x.numpy(), [12.25 - 3.0, 65.75 - 4.0])
    assert x.numpy(force=True) is not None


def test_a_numpy_ufunc_of_a_tensor_is_a_tensor():
    """numpy.sqrt(t) is a tensor again (PyTorch's __array_wrap__); of a tensor that requires grad it stays an array,
    since NumPy's arithmetic is not recorded and a tensor would look as if it were."""
    t = autograd.tensor([1.0, 4.0])
    root = np.sqrt(t)
    assert isinstance(root, Tensor) and root.dtype == autograd.float32 and root.tolist() == [1.0, 2.0]
    assert isinstance(np.isnan(t), Tensor) and np.isnan(t).tolist() == [False, False]
    w = autograd.tensor([1.0, 4.0], requires_grad=True)
    assert type(np.sqrt(w)) is np.ndarray and np.sqrt(w).tolist() == [1.0, 2.0]
