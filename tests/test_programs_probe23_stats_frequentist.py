# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Statistical-inference programs (see tests/pytorch_programs.py), as samplers, filters and tests are written in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
Tests, intervals and covariances: conformal prediction (``quantile`` in its five interpolations, ``nanquantile``,
``kthvalue``, adaptive prediction sets, conformalised quantile regression with a pinball loss); permutation,
sign-flip and bootstrap tests (``randperm``, ``randint`` with generators, BCa pieces); rank tests with ties
(``unique``, ``scatter_reduce`` "mean"), a KDE, Mahalanobis distances and a chi-squared test by ``gammainc``; a
sandwich covariance by ``torch.func`` (``vmap(grad)``, ``hessian``, ``jacrev``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Conformal prediction: split conformal quantiles, APS sets, conformalised quantile regression
# ----------------------------------------------------------------------------------------------

MODES = ["linear", "lower", "higher", "midpoint", "nearest"]


def conformal(m):
    torch = m.torch
    torch.manual_seed(0)
    scores = torch.rand(101, dtype=torch.float64)
    n, alpha = scores.numel(), 0.1
    level = math.ceil((n + 1) * (1 - alpha)) / n
    out = {"scores": scores}
    grid = scores[:100].reshape(10, 10)
    for mode in MODES:
        out[mode] = torch.quantile(scores, level, interpolation=mode)
        out[mode + "_many"] = torch.quantile(scores, torch.tensor([0.1, 0.5, level], dtype=torch.float64),
                                             interpolation=mode)
        out[mode + "_dim"] = torch.quantile(grid, torch.tensor([0.25, 0.75], dtype=torch.float64), dim=1,
                                            keepdim=True, interpolation=mode)
        out[mode + "_nan"] = torch.nanquantile(torch.tensor([1.0, float("nan"), 3.0, 2.0]), 0.4, interpolation=mode)
    k = math.ceil((n + 1) * (1 - alpha))
    out["kth"] = list(torch.kthvalue(scores, k))
    out["kth_dim"] = list(torch.kthvalue(grid, 3, dim=0, keepdim=True))
    logits = torch.randn(50, 5, dtype=torch.float64)
    probs = logits.softmax(-1)
    labels = torch.randint(0, 5, (50,))
    sp, si = probs.sort(-1, descending=True)
    cs = sp.cumsum(-1)
    rank = (si == labels[:, None]).float().argmax(-1)
    cal = cs.gather(1, rank[:, None]).squeeze(1)
    qhat = torch.quantile(cal, 0.9, interpolation="higher")
    out.update(cal=cal, qhat=qhat, set_sizes=((cs - sp) <= qhat).sum(-1))
    x = torch.randn(20, dtype=torch.float64, requires_grad=True)
    torch.quantile(x, torch.tensor([0.1, 0.9], dtype=torch.float64)).sum().backward()
    out.update(x=x.detach(), x_grad=x.grad)
    return out


def test_conformal_quantiles():
    ours, _ = run_both(conformal, rtol=1e-12, atol=1e-12)
    scores = ours["scores"]
    level = math.ceil(102 * 0.9) / 101
    grid = scores[:100].reshape(10, 10)
    for mode in MODES:
        assert ours[mode] == pytest.approx(np.quantile(scores, level, method=mode), rel=1e-12)
        np.testing.assert_allclose(ours[mode + "_many"], np.quantile(scores, [0.1, 0.5, level], method=mode))
        np.testing.assert_allclose(ours[mode + "_dim"], np.quantile(grid, [0.25, 0.75], axis=1, keepdims=True,
                                                                    method=mode))
        assert ours[mode + "_nan"] == pytest.approx(np.nanquantile([1.0, np.nan, 3.0, 2.0], 0.4, method=mode))
    value, index = ours["kth"]
    assert value == np.sort(scores)[91] and scores[index] == value
    np.testing.assert_array_equal(ours["kth_dim"][0], np.sort(grid, axis=0)[2:3])
    assert ours["qhat"] == np.quantile(ours["cal"], 0.9, method="higher")
    assert ((1 <= ours["set_sizes"]) & (ours["set_sizes"] <= 5)).all()
    # a quantile's gradient: the interpolation weights on the two order statistics beside it
    x, expected = ours["x"], np.zeros(20)
    order = np.argsort(x)
    for q in (0.1, 0.9):
        pos = q * 19
        lo = int(np.floor(pos))
        expected[order[lo]] += 1 - (pos - lo)
        expected[order[lo + 1]] += pos - lo
    np.testing.assert_allclose(ours["x_grad"], expected, rtol=1e-12)


def cqr(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(2)
    X = torch.rand(200, 1) * 5
    y = torch.sin(X[:, 0]) + 0.3 * X[:, 0] * torch.randn(200)
    net = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = m.optim.Adam(net.parameters(), lr=1e-2)
    taus = torch.tensor([0.05, 0.95])
    losses = []
    for it in range(60):
        e = y[:100, None] - net(X[:100])
        loss = torch.maximum(taus * e, (taus - 1) * e).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        pc = net(X[100:])
        sc = torch.maximum(pc[:, 0] - y[100:], y[100:] - pc[:, 1])
        qh = torch.quantile(sc, min(1.0, math.ceil(101 * 0.9) / 100))
        covered = ((y[100:] >= pc[:, 0] - qh) & (y[100:] <= pc[:, 1] + qh)).float().mean()
    return {"losses": torch.stack(losses), "scores": sc, "qhat": qh, "covered": covered}


def test_conformalised_quantile_regression():
    ours, _ = run_both(cqr, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["qhat"] == pytest.approx(np.quantile(ours["scores"], 0.91), rel=1e-6)
    assert ours["covered"] >= 0.9  # split conformal's guarantee holds on the calibration set itself


# ----------------------------------------------------------------------------------------------
# Permutation, sign-flip and bootstrap tests with seeded generators
# ----------------------------------------------------------------------------------------------


def resampling_tests(m):
    torch = m.torch
    g = torch.Generator().manual_seed(42)
    a = torch.randn(30, generator=g, dtype=torch.float64) + 0.4
    b = torch.randn(25, generator=g, dtype=torch.float64)
    pooled = torch.cat([a, b])
    observed = a.mean() - b.mean()
    perms = [torch.randperm(55, generator=g) for _ in range(200)]
    stats = torch.stack([pooled[p[:30]].mean() - pooled[p[30:]].mean() for p in perms])
    p_value = (stats.abs() >= observed.abs()).double().mean()
    batch = torch.rand(100, 55, generator=g).argsort(dim=1)  # permutations in a batch
    batch_stats = pooled[batch[:, :30]].mean(1) - pooled[batch[:, 30:]].mean(1)
    idx = torch.randint(0, 30, (500, 30), generator=g)
    boot = a[idx].mean(1)
    ci = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64))
    z0 = torch.distributions.Normal(0.0, 1.0).icdf((boot < a.mean()).float().mean())
    jack = torch.stack([torch.cat([a[:i], a[i + 1:]]).mean() for i in range(30)])
    acceleration = ((jack.mean() - jack) ** 3).sum() / (6 * ((jack.mean() - jack) ** 2).sum() ** 1.5)
    signs = torch.randint(0, 2, (300, 30), generator=g, dtype=torch.float64) * 2 - 1
    sign_flip = (signs * a).mean(1)
    return {"a": a, "b": b, "perm0": perms[0], "stats": stats, "p": p_value, "batch": batch,
            "batch_stats": batch_stats, "idx": idx, "boot": boot, "ci": ci, "z0": z0, "acc": acceleration,
            "sign_flip": sign_flip, "signs": signs,
            "rp32": torch.randperm(10, generator=g, dtype=torch.int32),
            "ri16": torch.randint(-5, 5, (3, 4), generator=g, dtype=torch.int16),
            "no_replacement": torch.multinomial(torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 0, 0, 1.0]]), 2,
                                                generator=g)}


def test_permutation_and_bootstrap():
    ours, _ = run_both(resampling_tests, rtol=1e-10, atol=1e-12)
    a, b, pooled = ours["a"], ours["b"], np.concatenate([ours["a"], ours["b"]])
    assert sorted(ours["perm0"]) == list(range(55))
    assert (np.sort(ours["batch"], axis=1) == np.arange(55)).all()
    np.testing.assert_allclose(ours["batch_stats"], [pooled[p[:30]].mean() - pooled[p[30:]].mean()
                                                     for p in ours["batch"]], rtol=1e-12)
    assert 0 <= ours["p"] <= 1 and abs(ours["stats"].mean()) < 0.1
    np.testing.assert_allclose(ours["boot"], a[ours["idx"]].mean(1), rtol=1e-12)
    np.testing.assert_allclose(ours["ci"], np.quantile(ours["boot"], [0.025, 0.975]), rtol=1e-12)
    jack = np.array([np.delete(a, i).mean() for i in range(30)])
    d = jack.mean() - jack
    assert ours["acc"] == pytest.approx((d ** 3).sum() / (6 * (d ** 2).sum() ** 1.5), rel=1e-10)
    assert set(np.unique(ours["signs"])) == {-1.0, 1.0}
    np.testing.assert_allclose(ours["sign_flip"], (ours["signs"] * a).mean(1), rtol=1e-12)
    assert ours["rp32"].dtype == np.int32 and sorted(ours["rp32"]) == list(range(10))
    assert ours["ri16"].dtype == np.int16 and ours["ri16"].min() >= -5 and ours["ri16"].max() < 5
    assert set(ours["no_replacement"][1]) == {0, 3}  # the only two categories with mass, each once


# ----------------------------------------------------------------------------------------------
# Rank tests with ties, a kernel density estimate, Mahalanobis distances, a chi-squared test
# ----------------------------------------------------------------------------------------------

RANK_A = np.array([1.2, 3.4, 3.4, 0.5, 2.2, 2.2, 2.2, 5.0])
RANK_B = np.array([0.7, 3.4, 1.1, 2.2, 4.0])


def rank_tests(m):
    torch = m.torch
    a, b = torch.tensor(RANK_A, dtype=torch.float64), torch.tensor(RANK_B, dtype=torch.float64)
    values = torch.cat([a, b])
    n1, n2, N = len(a), len(b), len(values)
    uniq, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    mid_ranks = torch.cumsum(counts, 0) - (counts - 1) / 2.0  # tied values share their mean rank
    ranks = mid_ranks[inverse]
    U = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    tie_term = (counts ** 3 - counts).sum().double()
    sigma = math.sqrt(n1 * n2 / 12 * ((N + 1) - tie_term.item() / (N * (N - 1))))
    z = (U - n1 * n2 / 2) / sigma
    p = 2 * torch.distributions.Normal(0.0, 1.0).cdf(-z.abs())
    order = values.argsort(stable=True)
    plain = torch.empty_like(order)
    plain[order] = torch.arange(1, N + 1)
    by_scatter = torch.zeros(len(uniq), dtype=torch.float64).scatter_reduce(
        0, inverse, plain.double(), reduce="mean", include_self=False)[inverse]
    grid = torch.linspace(-1, 6, 8, dtype=torch.float64)
    bw = 1.06 * values.std() * N ** (-0.2)
    kde = torch.exp(-0.5 * ((grid[:, None] - values[None]) / bw) ** 2).sum(1) / (N * bw * math.sqrt(2 * math.pi))
    torch.manual_seed(0)
    Z = torch.randn(20, 3, dtype=torch.float64)
    L = torch.linalg.cholesky(torch.cov(Z.T))
    mahalanobis = torch.linalg.solve_triangular(L, (Z - Z.mean(0)).T, upper=False).pow(2).sum(0).sqrt()
    observed = torch.tensor([[10.0, 20.0], [30.0, 25.0]], dtype=torch.float64)
    expected = observed.sum(1, keepdim=True) * observed.sum(0, keepdim=True) / observed.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum()
    return {"ranks": ranks, "U": U, "z": z, "p": p, "by_scatter": by_scatter, "kde": kde, "Z": Z,
            "mahalanobis": mahalanobis, "chi2": chi2,
            "p_chi2": 1 - torch.special.gammainc(torch.tensor(0.5, dtype=torch.float64), chi2 / 2),
            "p_chi2c": torch.special.gammaincc(torch.tensor(0.5, dtype=torch.float64), chi2 / 2)}


def test_rank_tests_kde_mahalanobis_chi2():
    ours, _ = run_both(rank_tests, rtol=1e-10, atol=1e-12)
    values = np.concatenate([RANK_A, RANK_B])
    by_hand = np.array([(values < v).sum() + ((values == v).sum() + 1) / 2 for v in values])
    np.testing.assert_allclose(ours["ranks"], by_hand)
    np.testing.assert_allclose(ours["by_scatter"], by_hand)
    U = sum((x > y) + 0.5 * (x == y) for x in RANK_A for y in RANK_B)  # Mann-Whitney's U by its definition
    assert ours["U"] == U
    assert ours["p"] == pytest.approx(math.erfc(abs(ours["z"]) / math.sqrt(2)), rel=1e-12)
    bw = 1.06 * values.std(ddof=1) * len(values) ** -0.2
    grid = np.linspace(-1, 6, 8)
    kde = np.exp(-0.5 * ((grid[:, None] - values) / bw) ** 2).sum(1) / (len(values) * bw * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(ours["kde"], kde, rtol=1e-12)
    Z = ours["Z"]
    d = Z - Z.mean(0)
    np.testing.assert_allclose(ours["mahalanobis"] ** 2, np.einsum("ij,jk,ik->i", d, np.linalg.inv(np.cov(Z.T)), d),
                               rtol=1e-10)
    assert ours["p_chi2"] == pytest.approx(math.erfc(math.sqrt(ours["chi2"] / 2)), rel=1e-10)  # χ²₁ tail
    assert ours["p_chi2c"] == pytest.approx(ours["p_chi2"], rel=1e-10)


# ----------------------------------------------------------------------------------------------
# A sandwich covariance by torch.func: per-observation scores by vmap(grad), the Hessian, jacrev
# ----------------------------------------------------------------------------------------------


def sandwich(m):
    torch, D = m.torch, m.torch.distributions
    vmap, grad, hessian, jacrev = torch.func.vmap, torch.func.grad, torch.func.hessian, torch.func.jacrev
    t = torch.linspace(-2, 2, 20, dtype=torch.float64)
    X = torch.stack([t, t.cos()], 1)
    y = (X.sum(1) > 0.5).double()
    y[::4] = 1 - y[::4]  # not separable

    def nll(beta, x, yy):
        return -D.Bernoulli(logits=x @ beta).log_prob(yy)

    beta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    scores = vmap(grad(nll), in_dims=(None, 0, 0))(beta, X, y)
    H = hessian(lambda b: nll(b, X, y).sum())(beta)
    Hinv = torch.linalg.inv(H)
    J = jacrev(lambda p: D.Gamma(p[0], p[1]).log_prob(torch.tensor([0.5, 1.5], dtype=torch.float64)))(
        torch.tensor([2.0, 3.0], dtype=torch.float64))
    return {"X": X, "y": y, "scores": scores, "H": H, "sandwich": Hinv @ (scores.T @ scores) @ Hinv, "J": J}


def test_sandwich_by_torch_func():
    ours, _ = run_both(sandwich, rtol=1e-10, atol=1e-12)
    X, y, beta = ours["X"], ours["y"], np.array([0.3, -0.2])
    p = 1 / (1 + np.exp(-X @ beta))
    np.testing.assert_allclose(ours["scores"], (p - y)[:, None] * X, rtol=1e-10)
    H = (X * (p * (1 - p))[:, None]).T @ X
    np.testing.assert_allclose(ours["H"], H, rtol=1e-10)
    S = ours["scores"]
    np.testing.assert_allclose(ours["sandwich"], np.linalg.inv(H) @ S.T @ S @ np.linalg.inv(H), rtol=1e-9)
    x = np.array([0.5, 1.5])  # d/dα and d/dβ of α log β + (α-1) log x - βx - log Γ(α)
    digamma2 = 1 - 0.5772156649015329  # ψ(2)
    np.testing.assert_allclose(ours["J"], np.stack([math.log(3.0) + np.log(x) - digamma2, 2 / 3 - x], 1), rtol=1e-10)
