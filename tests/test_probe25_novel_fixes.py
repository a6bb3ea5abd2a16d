"""Fixes found by the novel-architectures probe (tests/test_programs_probe25_novel_*.py), each checked against
literals always and against PyTorch where it is installed."""

import numpy as np
import pytest

import autograd
import nn.functional as F


def _torch():
    """PyTorch where installed, else None (the chainrule half of each test runs either way)."""
    try:
        import torch
    except ModuleNotFoundError:
        return None
    return torch


# ----------------------------------------------------------------------------------------------
# max pooling has no bool loops, max unpooling floating ones only (NCA's alive mask pools floats, then compares)
# ----------------------------------------------------------------------------------------------

_POOLS = [("max_pool1d", 1, {"return_indices": True}, "max_pool2d"), ("max_pool2d", 2, {}, "max_pool2d"),
          ("max_pool2d", 2, {"return_indices": True}, "max_pool2d"), ("max_pool3d", 3, {}, "max_pool3d")]


@pytest.mark.parametrize("name, spatial, kwargs, kernel", _POOLS)
def test_max_pool_refuses_bool(name, spatial, kwargs, kernel):
    x = autograd.ones(*(1, 1) + (2,) * spatial) > 0
    with pytest.raises(NotImplementedError, match=f"\"{kernel}\" not implemented for 'Bool'"):
        getattr(F, name)(x, 2, **kwargs)
    # integers still pool, keeping their dtype
    y = getattr(F, name)(x.long() * 3, 2, **kwargs)
    y = y[0] if isinstance(y, tuple) else y
    assert y.dtype == autograd.int64 and y.flatten().tolist() == [3]
    torch = _torch()
    if torch is None:
        return
    with pytest.raises(NotImplementedError, match="Bool"):
        getattr(torch.nn.functional, name)(torch.ones(*(1, 1) + (2,) * spatial) > 0, 2, **kwargs)


def test_max_pool3d_checks_its_sizes_before_the_dtype():
    with pytest.raises(RuntimeError, match="Output size is too small"):
        F.max_pool3d(autograd.ones(1, 1, 4, 4) > 0, 2)


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("dtype, type_name", [("bool", "Bool"), ("int64", "Long"), ("uint8", "Byte"),
                                              ("complex64", "ComplexFloat")])
def test_max_unpool_refuses_what_is_not_floating(spatial, dtype, type_name):
    shape = (1, 1) + (2,) * spatial
    kernel = "max_unpool3d" if spatial == 3 else "max_unpool2d"  # (PyTorch's 1-d unpooling is its 2-d one)
    unpool = getattr(F, f"max_unpool{spatial}d")
    x = autograd.ones(*shape).to(getattr(autograd, dtype))
    with pytest.raises(NotImplementedError, match=f"\"{kernel}\" not implemented for '{type_name}'"):
        unpool(x, autograd.zeros(*shape, dtype=autograd.int64), 2)
    y = unpool(autograd.ones(*shape, dtype=autograd.float64), autograd.zeros(*shape, dtype=autograd.int64), 2)
    assert y.dtype == autograd.float64 and y.sum().item() == 1.0  # (all 2^d values written to index 0)
    torch = _torch()
    if torch is None:
        return
    with pytest.raises(NotImplementedError, match=f"not implemented for '{type_name}'"):
        getattr(torch.nn.functional, f"max_unpool{spatial}d")(torch.ones(*shape).to(getattr(torch, dtype)),
                                                              torch.zeros(*shape, dtype=torch.int64), 2)


def test_max_unpool_names_a_wrong_index_dtype_as_pytorch_does():
    with pytest.raises(RuntimeError, match="should be type int64 but got: Int$"):
        F.max_unpool2d(autograd.ones(1, 1, 2, 2), autograd.zeros(1, 1, 2, 2, dtype=autograd.int32), 2)
    x = np.ones((1, 1, 2, 2))  # (the shape is checked first)
    with pytest.raises(RuntimeError, match="Expected shape of indices"):
        F.max_unpool2d(autograd.tensor(x) > 0, autograd.zeros(1, 1, 2, 1, dtype=autograd.int64), 2)


# ----------------------------------------------------------------------------------------------
# cosine_similarity promotes its two vectors (NTM's content addressing of a float memory by an integer key);
# cdist and the norms name a refused dtype as PyTorch does
# ----------------------------------------------------------------------------------------------


def test_cosine_similarity_of_a_float_and_an_integer_vector():
    memory = autograd.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]], requires_grad=True)
    key = autograd.tensor([[0, 4, 0]], dtype=autograd.int32)
    sim = F.cosine_similarity(memory, key, dim=-1)
    assert sim.dtype == autograd.float32
    np.testing.assert_allclose(sim.detach().numpy(), [0.8, 0.0], rtol=1e-6)
    sim.sum().backward()
    # d cos / d a = b/(|a||b|) - cos a/|a|^2: for a = (3, 4, 0), b = (0, 1, 0): (0, 1/5, 0) - 0.8 (3, 4, 0)/25
    np.testing.assert_allclose(memory.grad.numpy()[0], [-0.096, 0.072, 0.0], rtol=1e-5, atol=1e-7)
    assert memory.grad.dtype == autograd.float32
    half = F.cosine_similarity(autograd.ones(1, 3, dtype=autograd.float16), autograd.ones(1, 3, dtype=autograd.int64))
    assert half.dtype == autograd.float16 and half.item() == 0.9990234375  # (PyTorch's: 1/sqrt(3) in float16, squared)
    torch = _torch()
    if torch is None:
        return
    m = torch.tensor(memory.detach().numpy(), requires_grad=True)
    theirs = torch.nn.functional.cosine_similarity(m, torch.tensor([[0, 4, 0]], dtype=torch.int32), dim=-1)
    theirs.sum().backward()
    np.testing.assert_allclose(sim.detach().numpy(), theirs.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(memory.grad.numpy(), m.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype, name", [("int32", "Int"), ("bool", "Bool")])
def test_cosine_similarity_refuses_a_common_dtype_not_floating(dtype, name):
    x = autograd.ones(1, 3).to(getattr(autograd, dtype))
    with pytest.raises(RuntimeError, match=f"expected common dtype to be floating point, yet common dtype is {name}$"):
        F.cosine_similarity(x, x)


@pytest.mark.parametrize("first, second, message", [
    ("float32", "int32", "X2 got: Int"), ("int64", "float32", "X1 got: Long"), ("bool", "bool", "X1 got: Bool"),
    ("float32", "complex64", "X2 got: ComplexFloat")])
def test_cdist_names_the_operand_that_is_not_floating(first, second, message):
    x1 = autograd.ones(1, 2, 3).to(getattr(autograd, first))
    x2 = autograd.ones(1, 2, 3).to(getattr(autograd, second))
    with pytest.raises(RuntimeError, match=f"cdist only supports floating-point dtypes, {message}$"):
        autograd.cdist(x1, x2)
    torch = _torch()
    if torch is None:
        return
    with pytest.raises(RuntimeError, match=message):
        torch.cdist(torch.ones(1, 2, 3).to(getattr(torch, first)), torch.ones(1, 2, 3).to(getattr(torch, second)))


def test_vector_norm_names_an_integer_dtype_as_pytorch_does():
    with pytest.raises(RuntimeError, match="Expected a floating point or complex tensor as input. Got Int$"):
        autograd.linalg.vector_norm(autograd.ones(3, dtype=autograd.int32))


# ----------------------------------------------------------------------------------------------
# One element of an expanded tensor written by ints is PyTorch's select and fill_: no index_put_ warning
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("write", ["set", "iadd"])
def test_writing_one_element_of_an_expanded_tensor_does_not_warn(write):
    import warnings

    grid = autograd.zeros(3).expand(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if write == "set":
            grid[0, 1] = 1.0
        else:
            grid[0, 1] += 1.0
    assert grid.tolist() == [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]  # (both rows show the one memory)
    # an advanced index is PyTorch's index_put_, which still warns
    with pytest.warns(UserWarning, match="Use of index_put_ on expanded tensors is deprecated"):
        grid[autograd.tensor([0]), 0] = 2.0
    assert grid[:, 0].tolist() == [2.0, 2.0]
