"""float32 in, float32 out: results and gradients keep the input's dtype and agree with PyTorch's
float32 to float32 precision, across the op families."""

import numpy as np
import pytest

from tests.ops_reference import compare

rng = np.random.default_rng(0)
X = rng.uniform(0.2, 0.9, (3, 4)).astype(np.float32)
S = (rng.standard_normal((3, 3)) + 3 * np.eye(3)).astype(np.float32)
INDEX = np.array([[0, 3], [2, 2], [1, 0]])

FLOAT32_CASES = {
    "gather": (lambda m, x: x.gather(1, m.tensor(INDEX)), X),
    "scatter_add": (lambda m, x: x.scatter_add(1, m.tensor(INDEX), x[:, :2]), X),
    "scatter_reduce": (lambda m, x: x.scatter_reduce(1, m.tensor(INDEX), x[:, :2], "amax"), X),
    "index_select": (lambda m, x: x.index_select(1, m.tensor([0, 2])), X),
    "masked_fill": (lambda m, x: x.masked_fill(x > 0.5, 0.0), X),
    "cumsum": (lambda m, x: x.cumsum(1), X),
    "cumprod": (lambda m, x: x.cumprod(1), X),
    "prod": (lambda m, x: x.prod(1), X),
    "logcumsumexp": (lambda m, x: x.logcumsumexp(1), X),
    "sort": (lambda m, x: x.sort(1), X),
    "topk": (lambda m, x: x.topk(2), X),
    "median": (lambda m, x: x.median(), X),
    "amax": (lambda m, x: x.amax(1), X),
    "nanmean": (lambda m, x: x.nanmean(), X),
    "einsum": (lambda m, x: m.einsum("ij,kj->ik", x, x), X),
    "cdist": (lambda m, x: m.cdist(x, x + 1), X),
    "cov": (lambda m, x: m.cov(x), X),
    "norm": (lambda m, x: x.norm(dim=1), X),
    "norm_inf": (lambda m, x: x.norm(float("inf")), X),
    "matrix_norm_nuc": (lambda m, s: m.linalg.matrix_norm(s, "nuc"), S),
    "svdvals": (lambda m, s: m.linalg.svdvals(s), S),
    "inv": (lambda m, s: m.linalg.inv(s), S),
    "det": (lambda m, s: s.det(), S),
    "solve": (lambda m, s: m.linalg.solve(s, s[0]), S),
    "cholesky": (lambda m, s: m.linalg.cholesky(s @ s.mT), S),
    "eigvalsh": (lambda m, s: m.linalg.eigvalsh(s @ s.mT), S),
    "qr": (lambda m, s: m.linalg.qr(s).R.abs(), S),
    "log1p": (lambda m, x: m.log1p(x), X),
    "erfinv": (lambda m, x: m.erfinv(x), X),
    "lgamma": (lambda m, x: m.lgamma(x), X),
    "digamma": (lambda m, x: m.digamma(x), X),
    "xlogy": (lambda m, x: m.xlogy(x, x), X),
    "lerp": (lambda m, x: m.lerp(x, x * 2, 0.3), X),
    "atan2": (lambda m, x: m.atan2(x, x.flip(0)), X),
    "hypot": (lambda m, x: m.hypot(x, x), X),
    "round": (lambda m, x: m.round(x.detach(), decimals=1), X),
    "div_floor": (lambda m, x: m.div(x.detach() * 9, 2.0, rounding_mode="floor"), X),
    "add_alpha": (lambda m, x: m.add(x, x, alpha=2), X),
    "tril": (lambda m, x: x.tril(), X),
    "repeat": (lambda m, x: x.repeat(2, 1), X),
    "roll": (lambda m, x: x.roll(1, 0), X),
    "diag_embed": (lambda m, x: x.diag_embed(), X),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_matches_torch(name):
    fn, *inputs = FLOAT32_CASES[name]
    compare(fn, *inputs, rtol=2e-5, atol=1e-5)
