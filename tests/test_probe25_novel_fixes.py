"""Fixes found by the novel-architectures probe (tests/test_programs_probe25_novel.py), each checked against
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
