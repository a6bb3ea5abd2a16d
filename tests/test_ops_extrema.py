"""amax, amin, aminmax, nansum, nanmean, one-sided clamps, and the grid factories: gradients
against finite differences (float64, drawn shapes) and comparisons with PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from tests.ops_reference import compare, raises_like
from tests.test_ops import _run, distinct_values, leaf

CASES = {
    "ExtremumOverDims": (distinct_values(), lambda x: x.amax() + x.amin(0).sum()
                         + autograd.amax(x, (0, -1) if x.ndim > 1 else -1, keepdim=True).sum()),
}

COMPOSITES = {
    "aminmax": (distinct_values(), lambda x: autograd.aminmax(x).max * autograd.aminmax(x, dim=0).min.sum()),
    "nansum": (distinct_values(), lambda x: autograd.nansum(x) + x.nanmean()),
    "clamp_min_max": (distinct_values(), lambda x: x.clamp_min(1.2) * x.clamp_max(0.7)),
    "meshgrid": (distinct_values(), lambda x: sum(g.sin() for g in autograd.meshgrid(x.reshape(-1), x.reshape(-1)[:2],
                                                                                      indexing="xy"))),
    "block_diag": (distinct_values(), lambda x: autograd.block_diag(x.reshape(-1, 1), x.reshape(-1)) * 2),
    "cov": (distinct_values(), lambda x: autograd.cov(x.reshape(x.shape[0], -1)) if x.numel() > x.shape[0] else x),
    "corrcoef": (distinct_values(min_side=3), lambda x: autograd.corrcoef(x.reshape(-1, 3).exp())),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPOSITES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **COMPOSITES}[name], data)
    assert autograd.gradcheck(fn, tensors)


def test_amax_shares_the_gradient_between_ties():
    x = leaf([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    x.amax(1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 4))
INTS = rng.integers(0, 3, (3, 4)).astype(np.float64)
V = rng.standard_normal(4)

TORCH_CASES = {
    "amax": (lambda m, x: x.amax(), X),
    "amax_dims": (lambda m, x: m.amax(x, (0, 2), keepdim=True), X),
    "amin_dim": (lambda m, x: x.amin(1), X),
    "amax_ties": (lambda m, x: m.amax(x, 1), INTS),
    "amin_ties_all": (lambda m, x: x.amin(), INTS),
    "aminmax": (lambda m, x: m.aminmax(x, dim=1), X),
    "aminmax_all": (lambda m, x: m.aminmax(x), X),
    "nansum": (lambda m, x: m.nansum(x.log(), 1), X),
    "nanmean": (lambda m, x: x.log().nanmean(), X),
    "nanmean_dims": (lambda m, x: m.nanmean(x.log(), dim=(0, 1), keepdim=True), X),
    "clamp_min": (lambda m, x: x.clamp_min(0.1), X),
    "clamp_max": (lambda m, x: m.clamp_max(x, 0.1), X),
    "meshgrid": (lambda m, v: m.meshgrid(v, v[:2] * 2, indexing="ij"), V),
    "meshgrid_xy": (lambda m, v: m.meshgrid(v, v[:2], v[:3], indexing="xy"), V),
    "cartesian_prod": (lambda m, v: m.cartesian_prod(v, v[:2]), V),
    "block_diag": (lambda m, x, v: m.block_diag(x[0], v, v[0]), X, V),
    "triu_indices": (lambda m: m.triu_indices(3, 4, 1),),
    "tril_indices": (lambda m: m.tril_indices(4, 3, -1),),
    "var_mean": (lambda m, x: m.var_mean(x, 1), X),
    "std_mean": (lambda m, x: m.std_mean(x, dim=(0, 2), keepdim=True, correction=0), X),
    "cov": (lambda m, x: m.cov(x[0]), X),
    "cov_vector": (lambda m, v: m.cov(v), V),
    "cov_method": (lambda m, x: x[1].cov(correction=0), X),
    "corrcoef": (lambda m, x: m.corrcoef(x[0].T), X),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    with np.errstate(invalid="ignore"):
        compare(fn, *inputs)


@pytest.mark.torch
def test_amax_of_an_empty_dim_is_refused_as_in_torch():
    assert "non-zero size" in str(raises_like(lambda m, x: m.amax(x[:, :0], 1), X))


# 0-d tensors: a scalar's dim 0 (or -1) is the scalar itself, in every op that takes a dim
SCALAR_CASES = {
    "gather": lambda m, x: x.gather(0, m.tensor(0)),
    "index_select": lambda m, x: x.index_select(0, m.tensor([0])),
    "index_add": lambda m, x: x.index_add(0, m.tensor([0]), x * 3),
    "scatter_add": lambda m, x: x.scatter_add(0, m.tensor(0), x * 2),
    "sort": lambda m, x: x.sort(),
    "topk": lambda m, x: x.topk(1),
    "kthvalue": lambda m, x: x.kthvalue(1),
    "median_dim": lambda m, x: x.median(0),
    "mode": lambda m, x: x.mode(),
    "cumsum": lambda m, x: x.cumsum(0),
    "cumprod": lambda m, x: x.cumprod(0),
    "cummax": lambda m, x: x.cummax(0),
    "logcumsumexp": lambda m, x: x.logcumsumexp(0),
    "prod_dim": lambda m, x: x.prod(0),
    "sum_dim": lambda m, x: x.sum(0),
    "mean_keepdim": lambda m, x: x.mean(-1, keepdim=True),
    "max_dim": lambda m, x: x.max(0),
    "min_dim": lambda m, x: x.min(-1, keepdim=True),
    "amax_dim": lambda m, x: x.amax(0),
    "norm_dim": lambda m, x: x.norm(dim=0),
    "softmax": lambda m, x: x.softmax(0),
    "logsumexp": lambda m, x: x.logsumexp(0),
    "flip": lambda m, x: x.flip(0),
    "repeat": lambda m, x: x.repeat(2, 2),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(SCALAR_CASES))
def test_scalars_match_torch(name):
    compare(SCALAR_CASES[name], np.array(1.5))


@pytest.mark.torch
def test_scalars_cannot_be_concatenated_as_in_torch():
    assert "zero-dimensional" in str(raises_like(lambda m, x: m.cat([x, x]), np.array(1.5)))


# empty tensors (shape (0, 3)): results and gradients of the right (empty) shapes
EMPTY_CASES = {
    "gather": lambda m, x: x.gather(0, m.zeros(0, 3, dtype=m.int64)),
    "index_select": lambda m, x: x.index_select(1, m.tensor([0, 2])),
    "sort": lambda m, x: x.sort(0),
    "topk_zero": lambda m, x: x.topk(0, 0),
    "cumsum": lambda m, x: x.cumsum(0),
    "cumprod": lambda m, x: x.cumprod(1),
    "prod": lambda m, x: x.prod(0),
    "prod_all": lambda m, x: x.prod(),
    "logcumsumexp": lambda m, x: x.logcumsumexp(0),
    "norm": lambda m, x: x.norm(),
    "unique": lambda m, x: x.detach().unique(),
    "chunk": lambda m, x: x.chunk(3, 0),
    "split": lambda m, x: x.split(2, 0),
    "einsum": lambda m, x: m.einsum("ij,kj->ik", x, x),
    "masked_select": lambda m, x: x.masked_select(x > 0),
    "nonzero": lambda m, x: m.nonzero(x),
    "amax_rows": lambda m, x: x.amax(1),
    "median_rows": lambda m, x: x.median(1),
    "cdist": lambda m, x: m.cdist(x, x),
    "kron": lambda m, x: m.kron(x, x),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(EMPTY_CASES))
def test_empty_tensors_match_torch(name):
    compare(EMPTY_CASES[name], np.zeros((0, 3)))
