"""from_numpy, as_tensor, x.new_*, nelement, element_size, type_as, format, is_floating_point, finfo, iinfo."""

import numpy as np
import pytest

import autograd


def test_from_numpy_shares_memory_both_ways():
    array = np.zeros(3)
    t = autograd.from_numpy(array)
    assert t.dtype == np.float64 and not t.requires_grad
    array[0] = 5.0
    t.add_(1)
    assert t.tolist() == [6.0, 1.0, 1.0] and array.tolist() == [6.0, 1.0, 1.0]
    with pytest.raises(TypeError, match=r"expected np.ndarray \(got list\)"):
        autograd.from_numpy([1.0, 2.0])


def test_as_tensor_shares_when_it_can():
    array = np.arange(3.0)
    shared = autograd.as_tensor(array)
    assert np.shares_memory(shared.numpy(), array) and shared.dtype == np.float64
    copied = autograd.as_tensor(array, dtype=autograd.float32)
    assert not np.shares_memory(copied.numpy(), array) and copied.dtype == np.float32
    t = autograd.ones(2)
    assert autograd.as_tensor(t) is t and autograd.as_tensor(t, dtype=autograd.float32) is t
    assert autograd.as_tensor(t, dtype=autograd.float64).dtype == np.float64
    assert autograd.as_tensor([1.0, 2.0]).dtype == np.float32 and autograd.as_tensor([1, 2]).dtype == np.int64


def test_new_factories_take_the_dtype_of_self():
    x = autograd.ones(2, dtype=autograd.float64)
    assert x.new_zeros(2, 3).shape == (2, 3) and x.new_zeros((2, 3)).dtype == np.float64
    assert x.new_ones(4).tolist() == [1.0] * 4 and x.new_ones(4).dtype == np.float64
    assert x.new_full((2,), 7.0).tolist() == [7.0, 7.0] and x.new_full((2,), 7).dtype == np.float64
    assert x.new_empty(3).shape == (3,) and x.new_empty(3).dtype == np.float64
    made = x.new_tensor([1, 2])
    assert made.dtype == np.float64 and made.tolist() == [1.0, 2.0]
    assert x.new_zeros(2, dtype=autograd.int64).dtype == np.int64
    assert x.new_zeros(2, requires_grad=True).requires_grad
    source = np.array([1.0, 2.0])
    assert not np.shares_memory(x.new_tensor(source).numpy(), source)


def test_sizes_and_dtypes():
    x = autograd.zeros(2, 3)
    assert x.nelement() == 6 == autograd.numel(x)
    assert x.element_size() == 4 and x.double().element_size() == 8 and autograd.tensor([1]).element_size() == 8
    assert x.is_floating_point() and autograd.is_floating_point(x)
    assert not autograd.tensor([1, 2]).is_floating_point() and not autograd.tensor([True]).is_floating_point()
    assert autograd.is_tensor(x) and not autograd.is_tensor(np.zeros(2))


def test_type_as_is_differentiable():
    x = autograd.tensor([1.5, 2.5], requires_grad=True)
    y = x.type_as(autograd.zeros(1, dtype=autograd.float64))
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.tolist() == [3.0, 5.0]
    assert autograd.tensor([1.7]).type_as(autograd.tensor([1])).tolist() == [1]


def test_format():
    loss = autograd.tensor(1.23456, requires_grad=True) * 1
    assert f"{loss:.4f}" == "1.2346" and f"{loss:>8.2f}" == "    1.23"
    assert f"{autograd.tensor(3, dtype=autograd.int64):03d}" == "003"
    vector = autograd.tensor([1.5, 2.0])
    assert f"{vector}" == str(vector) and format(vector) == str(vector)
    with pytest.raises(TypeError, match="unsupported format string"):
        f"{vector:.4f}"


def test_finfo_and_iinfo():
    info = autograd.finfo(autograd.float32)
    assert info.eps == float(np.finfo(np.float32).eps) and info.max == float(np.finfo(np.float32).max)
    assert info.min == -info.max and info.tiny == float(np.finfo(np.float32).tiny) and info.bits == 32
    assert autograd.finfo().eps == info.eps  # the default dtype
    assert autograd.finfo(autograd.float64).eps == np.finfo(np.float64).eps
    integers = autograd.iinfo(autograd.int64)
    assert integers.max == 2**63 - 1 and integers.min == -(2**63) and integers.bits == 64
    with pytest.raises(TypeError, match="floating point"):
        autograd.finfo(autograd.int64)
    with pytest.raises(TypeError, match="integer"):
        autograd.iinfo(autograd.float32)


@pytest.mark.torch
def test_against_pytorch():
    torch = pytest.importorskip("torch")
    for ours, theirs in ((autograd.float32, torch.float32), (autograd.float64, torch.float64),
                         (autograd.float16, torch.float16)):
        a, b = autograd.finfo(ours), torch.finfo(theirs)
        assert (a.eps, a.max, a.min, a.tiny, a.bits, a.resolution) == (b.eps, b.max, b.min, b.tiny, b.bits,
                                                                        b.resolution)
        assert repr(a) == repr(b)
    for ours, theirs in ((autograd.int32, torch.int32), (autograd.int64, torch.int64)):
        a, b = autograd.iinfo(ours), torch.iinfo(theirs)
        assert (a.max, a.min, a.bits) == (b.max, b.min, b.bits) and repr(a) == repr(b)
    value = 0.123456789
    assert f"{autograd.tensor(value):.3e}" == f"{torch.tensor(value):.3e}"
    assert f"{autograd.tensor(value)}" == f"{torch.tensor(value)}"
    for ours, theirs in ((autograd.ones(2, dtype=autograd.float64), torch.ones(2, dtype=torch.float64)),
                         (autograd.ones(2), torch.ones(2))):
        assert str(ours.new_tensor([1, 2]).dtype) == str(theirs.new_tensor([1, 2]).dtype).replace("torch.", "")
        assert ours.element_size() == theirs.element_size()


def test_contiguous_copies_only_what_is_not_row_major_and_stays_differentiable():
    x = autograd.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.is_contiguous() and x.contiguous() is x
    t = x.T
    assert not t.is_contiguous()
    c = t.contiguous()
    assert c is not t and c.is_contiguous() and c.numpy().flags.c_contiguous
    np.testing.assert_array_equal(c.numpy(), np.arange(6.0).reshape(2, 3).T)
    (c * autograd.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]])


def test_a_convolution_output_is_batch_innermost_and_contiguous_makes_it_row_major():
    import nn

    y = nn.Conv2d(1, 2, 3, padding=1)(autograd.randn(4, 1, 5, 5))
    assert tuple(y.shape) == (4, 2, 5, 5) and not y.is_contiguous()
    np.testing.assert_array_equal(y.contiguous().numpy(), y.numpy())
    assert y.contiguous().is_contiguous()


def test_numpy_axis_is_dim_for_the_functions_loaded_on_first_use():
    """autograd.trapezoid and the other functions loaded on first use take NumPy's axis= for dim=, as PyTorch's
    (they were the module's raw functions, without the alias the other ops have), and x.size(axis=1) too."""
    import numpy as np

    y = autograd.tensor([[0.0, 1.0, 4.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(autograd.trapezoid(y, axis=1).numpy(), [3.0, 2.0])
    np.testing.assert_allclose(autograd.cumulative_trapezoid(y, axis=1).numpy(), [[0.5, 3.0], [1.0, 2.0]])
    np.testing.assert_allclose(autograd.squeeze_copy(y.unsqueeze(1), axis=1).numpy(), y.numpy())
    assert [t.tolist() for t in autograd.unbind_copy(y, axis=1)] == [[0.0, 1.0], [1.0, 1.0], [4.0, 1.0]]
    assert y.size(axis=1) == 3 and y.size(1) == 3
    with pytest.raises(TypeError, match="got both 'dim' and its alias 'axis'"):
        autograd.trapezoid(y, dim=1, axis=1)


def test_as_subclass_is_an_alias_of_the_subclass():
    class Marked(autograd.Tensor):
        pass

    x = autograd.ones(2, requires_grad=True)
    y = x.as_subclass(Marked)
    assert type(y) is Marked and y.requires_grad and not y.is_leaf and y.grad_fn.name() == "AliasBackward0"
    (y * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])  # (in x's graph)
    y.data.add_(1)
    np.testing.assert_array_equal(x.detach().numpy(), [2.0, 2.0])  # (on x's memory)
    with pytest.raises(TypeError, match="must be a subclass of Tensor"):
        x.as_subclass(int)


def test_float_of_a_tensor_that_requires_grad_warns_once_as_pytorch(T, monkeypatch):
    """float(t) of a tensor that requires grad warns, with grad mode on, once in a process (PyTorch's
    TORCH_WARN_ONCE, whose state is not reachable: PyTorch's first call may have come earlier in the process);
    after it no call warns, and item(), int() and bool() never do."""
    import importlib
    import warnings

    t = T.ones((), requires_grad=True)
    if T is autograd:
        monkeypatch.setattr(importlib.import_module("autograd.warn_once"), "_warned_once", set())
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        assert float(t) == 1.0
    if T is autograd:
        assert len(first) == 1 and first[0].filename == __file__
        assert "Converting a tensor with requires_grad=True to a scalar" in str(first[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(t) == 1.0 and t.item() == 1.0 and int(t) == 1 and bool(t) and float(t.detach()) == 1.0
        with T.no_grad():
            assert float(t) == 1.0
