"""Ops at their edges, found by a table-driven comparison with PyTorch: empty dim lists,
mixed-dtype binary ops, non-finite inputs. Each test asserts values on its own and, where
PyTorch is installed, also compares with it (tests marked ``torch`` skip cleanly without it)."""

import numpy as np
import pytest

import autograd
from tests.ops_reference import compare

X = np.arange(1.0, 7.0).reshape(2, 1, 3)


# -- an empty dim list reduces every dim (PyTorch's reading), except where it means "none" --

EMPTY_DIM_REDUCTIONS = {  # name: (fn(module, x, dim), the value over every dim)
    "sum": (lambda m, x, d: x.sum(dim=d), 21.0),
    "mean": (lambda m, x, d: x.mean(dim=d), 3.5),
    "nansum": (lambda m, x, d: x.nansum(dim=d), 21.0),
    "nanmean": (lambda m, x, d: x.nanmean(dim=d), 3.5),
    "var": (lambda m, x, d: x.var(dim=d), 3.5),
    "std": (lambda m, x, d: x.std(dim=d, correction=0), np.sqrt(35 / 12)),
    "norm": (lambda m, x, d: x.norm(dim=d), np.sqrt(91.0)),
    "vector_norm_inf": (lambda m, x, d: m.linalg.vector_norm(x, float("inf"), dim=d), 6.0),
    "logsumexp": (lambda m, x, d: x.logsumexp(dim=d if d is not None else (0, 1, 2)), np.log(np.exp(X).sum())),
    "count_nonzero": (lambda m, x, d: x.count_nonzero(dim=d), 6),
}


@pytest.mark.parametrize("empty", [(), []])
@pytest.mark.parametrize("name", sorted(EMPTY_DIM_REDUCTIONS))
def test_an_empty_dim_list_reduces_every_dim(name, empty):
    fn, expected = EMPTY_DIM_REDUCTIONS[name]
    wants_grad = name != "count_nonzero"
    x, whole = (autograd.tensor(X, requires_grad=wants_grad) for _ in range(2))
    y, y_whole = fn(autograd, x, empty), fn(autograd, whole, None)
    assert y.shape == ()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
    if wants_grad:  # the gradient is the whole reduction's
        y.backward()
        y_whole.backward()
        np.testing.assert_allclose(x.grad.numpy(), whole.grad.numpy(), rtol=1e-12)


def test_an_empty_dim_list_keeps_every_dim_where_it_means_none():
    x = autograd.tensor(X)
    assert x.squeeze(()).shape == (2, 1, 3)
    np.testing.assert_array_equal(x.flip(()).numpy(), X)
    assert x.any(dim=()).shape == (2, 1, 3) and x.all(dim=[]).shape == (2, 1, 3)


@pytest.mark.torch
# PyTorch 2.13's logsumexp raises here and its var/std gradients come out ±inf (test above: ours equal dim=None's)
@pytest.mark.parametrize("name", sorted(set(EMPTY_DIM_REDUCTIONS) - {"logsumexp", "var", "std"}))
def test_an_empty_dim_list_matches_torch(name):
    fn = EMPTY_DIM_REDUCTIONS[name][0]
    compare(lambda m, x: fn(m, x, ()), X)


@pytest.mark.torch
@pytest.mark.parametrize("op", ["squeeze", "flip", "any", "all"])
def test_an_empty_dim_list_meaning_none_matches_torch(op):
    compare(lambda m, x: getattr(x, op)(()), X)
