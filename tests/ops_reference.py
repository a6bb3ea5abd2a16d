"""Helpers for the per-family op tests: run one function on autograd and on PyTorch and
compare values, dtypes, shapes, result field names, gradients and error types."""

import numbers

import numpy as np

import autograd


def _flat(result):
    """The leaves of a result: a tensor, a (named) tuple of them, or a Python value."""
    if isinstance(result, (tuple, list)):
        return [leaf for item in result for leaf in _flat(item)]
    return [result]


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _tensors(module, arrays, grad):
    made = []
    for a in arrays:
        if isinstance(a, np.ndarray):
            wants = grad and a.dtype.kind == "f"
            made.append(module.tensor(a, requires_grad=wants))
        else:
            made.append(a)
    return made


def compare(fn, *arrays, grad=True, rtol=1e-12, atol=1e-12, seed=0):
    """fn(module, *tensors) on autograd and on torch: equal values, dtypes, shapes, field names
    and, for floating results, equal gradients of a random weighting of every output."""
    import torch

    ours, theirs = _tensors(autograd, arrays, grad), _tensors(torch, arrays, grad)
    result_ours, result_theirs = fn(autograd, *ours), fn(torch, *theirs)
    if hasattr(result_theirs, "_fields") or type(result_theirs).__module__ == "torch.return_types":
        assert type(result_ours).__name__ == type(result_theirs).__name__
        for field in ("values", "indices"):
            if hasattr(result_theirs, field):
                assert hasattr(result_ours, field)
    flat_ours, flat_theirs = _flat(result_ours), _flat(result_theirs)
    assert len(flat_ours) == len(flat_theirs), (len(flat_ours), len(flat_theirs))
    rng = np.random.default_rng(seed)
    loss_ours, loss_theirs = 0, 0
    for mine, reference in zip(flat_ours, flat_theirs):
        if isinstance(reference, torch.Tensor):
            assert isinstance(mine, autograd.Tensor), type(mine)
            assert tuple(mine.shape) == tuple(reference.shape), (mine.shape, reference.shape)
            assert _dtype_name(mine.dtype) == _dtype_name(reference.dtype), (mine.dtype, reference.dtype)
            np.testing.assert_allclose(mine.numpy(), reference.detach().numpy(), rtol=rtol, atol=atol)
            if reference.requires_grad and reference.dtype.is_floating_point:
                assert mine.requires_grad, "the result should require grad, as PyTorch's does"
                weights = rng.standard_normal(reference.shape)
                loss_ours = loss_ours + (mine * autograd.Tensor(weights)).sum()
                loss_theirs = loss_theirs + (reference * torch.tensor(weights)).sum()
            else:
                assert not mine.requires_grad, "a result without gradient in PyTorch should not require grad"
        else:
            assert isinstance(reference, (numbers.Number, bool)) and mine == reference, (mine, reference)
    if isinstance(loss_theirs, torch.Tensor):
        loss_ours.backward()
        loss_theirs.backward()
        for mine, reference in zip(ours, theirs):
            if isinstance(reference, torch.Tensor) and reference.requires_grad:
                expected = reference.grad.numpy() if reference.grad is not None else 0
                got = mine.grad.numpy() if mine.grad is not None else np.zeros(mine.shape)
                np.testing.assert_allclose(got, expected, rtol=rtol * 100, atol=atol * 100)


def raises_like(fn, *arrays):
    """fn raises on both, the same exception type; returns our error (to check its message)."""
    import torch

    errors = []
    for module in (autograd, torch):
        try:
            fn(module, *_tensors(module, arrays, False))
        except Exception as error:  # noqa: BLE001 (comparing whatever each raises)
            errors.append(error)
        else:
            errors.append(None)
    ours, theirs = errors
    assert theirs is not None, "PyTorch does not raise here"
    assert ours is not None, f"PyTorch raises {type(theirs).__name__}: {theirs}, but we do not"
    builtin = next(c for c in type(theirs).__mro__ if c.__module__ == "builtins")  # torch's own subclasses
    assert isinstance(ours, builtin), f"we raise {type(ours).__name__}: {ours}; PyTorch {type(theirs).__name__}"
    if type(theirs) is not builtin:  # e.g. torch.linalg.LinAlgError: ours should have that name too
        assert type(ours).__name__ == type(theirs).__name__.lstrip("_"), (type(ours), type(theirs))
    return ours
