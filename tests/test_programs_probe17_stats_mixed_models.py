# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Statistical-modelling programs (see tests/pytorch_programs.py), as statisticians and epidemiologists write them,
each run on chainrule and on PyTorch in float64 and checked against NumPy by hand. Random effects and smoothing: a
random-intercept linear mixed model by REML (``cholesky``, ``logdet``, ``cholesky_solve``); a 2PL item-response
model; a P-spline GAM (Cox-de Boor basis, ``diff(n=2)`` penalty, GCV by L-BFGS); a random-effects meta-analysis
(DerSimonian-Laird, REML, a profile-likelihood bound by bisection)."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Linear mixed model (random intercepts) by REML
# ----------------------------------------------------------------------------------------------


def lmm_data(groups=8, per=6, seed=7):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.standard_normal(groups * per)
    u = 0.8 * rng.standard_normal(groups)
    y = 1.0 + 0.5 * x + u[g] + 0.5 * rng.standard_normal(groups * per)
    return np.column_stack([np.ones_like(x), x]), y, g


def reml(m):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    X, y, g = (torch.from_numpy(a) for a in lmm_data())
    Z = F.one_hot(g).to(X.dtype)
    n, p = X.shape

    class RandomIntercept(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_sigma_u = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
            self.log_sigma_e = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))

        def V(self):
            return (2 * self.log_sigma_u).exp() * Z @ Z.T + (2 * self.log_sigma_e).exp() * torch.eye(n, dtype=X.dtype)

        def gls(self):
            L = torch.linalg.cholesky(self.V())
            Vinv_X = torch.cholesky_solve(X, L)
            XtVinvX = X.T @ Vinv_X
            beta = torch.linalg.solve(XtVinvX, Vinv_X.T @ y)
            return L, XtVinvX, beta

        def forward(self):
            L, XtVinvX, beta = self.gls()
            r = y - X @ beta
            quad = r @ torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
            logdet_V = 2 * L.diagonal().log().sum()
            return 0.5 * (logdet_V + torch.logdet(XtVinvX) + quad + (n - p) * math.log(2 * math.pi))

    model = RandomIntercept()
    optimizer = optim.LBFGS(model.parameters(), lr=1, max_iter=100, tolerance_grad=1e-10,
                            line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = model()
        loss.backward()
        return loss

    optimizer.step(closure)
    loss = model()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        L, XtVinvX, beta = model.gls()
        se_beta = torch.linalg.inv(XtVinvX).diagonal().sqrt()
        # BLUPs of the random intercepts: sigma_u^2 Z^T V^{-1} (y - X beta)
        blup = (2 * model.log_sigma_u).exp() * Z.T @ torch.cholesky_solve((y - X @ beta).unsqueeze(-1), L).squeeze(-1)
        icc = model.log_sigma_u.exp() ** 2 / (model.log_sigma_u.exp() ** 2 + model.log_sigma_e.exp() ** 2)
    return {"sigmas": torch.stack([model.log_sigma_u, model.log_sigma_e]).detach().exp(), "reml": loss.detach(),
            "grads": grads, "beta": beta, "se_beta": se_beta, "blup": blup, "icc": icc}


def test_linear_mixed_model_reml():
    ours, _ = run_both(reml, rtol=1e-6, atol=1e-8)
    X, y, g = lmm_data()
    su, se = ours["sigmas"]
    Z = np.eye(8)[g]
    V = su ** 2 * Z @ Z.T + se ** 2 * np.eye(len(y))
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    by_hand = 0.5 * (np.linalg.slogdet(V)[1] + np.linalg.slogdet(X.T @ Vi @ X)[1] + r @ Vi @ r
                  + (len(y) - 2) * np.log(2 * np.pi))
    assert ours["reml"] == pytest.approx(by_hand, rel=1e-10)
    np.testing.assert_allclose(ours["beta"], beta, rtol=1e-9)
    assert max(abs(float(d)) for d in ours["grads"]) < 1e-3
    # balanced one-way design: REML's variances are ANOVA's (when positive)
    groups = y - X[:, 1] * beta[1]
    means = np.array([groups[g == k].mean() for k in range(8)])
    msw = sum(((groups[g == k] - means[k]) ** 2).sum() for k in range(8)) / (len(y) - 8)
    assert se ** 2 == pytest.approx(msw, rel=0.1)
    np.testing.assert_allclose(ours["blup"], su ** 2 * Z.T @ Vi @ r, rtol=1e-8, atol=1e-10)
    assert 0 < ours["icc"] < 1


# ----------------------------------------------------------------------------------------------
# Item response theory: the two-parameter logistic model
# ----------------------------------------------------------------------------------------------


def irt_data(persons=100, items=10, seed=8):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(persons)
    a = rng.uniform(0.5, 2.0, items)
    b = rng.normal(0, 1, items)
    p = 1 / (1 + np.exp(-a * (theta[:, None] - b)))
    responses = (rng.uniform(size=p.shape) < p).astype(np.float64)
    mask = rng.uniform(size=p.shape) < 0.9  # some items not administered
    return responses, mask, a, b


def irt_2pl(m):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    D = torch.distributions
    responses, mask, _, _ = irt_data()
    responses, mask = torch.from_numpy(responses), torch.from_numpy(mask)
    persons, items = responses.shape

    class TwoPL(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Embedding(persons, 1)
            self.log_a = nn.Parameter(torch.zeros(items))
            self.b = nn.Parameter(torch.zeros(items))
            nn.init.zeros_(self.theta.weight)

        def forward(self, person):
            theta = self.theta(person)  # (P, 1)
            return self.log_a.exp() * (theta - self.b)

    # float64: Adam divides each person's gradient by its own running size, so float32's last bits in a
    # gradient near zero move that person's theta by 1e-4 (the runs agree to 1e-10 in float64)
    model = TwoPL().double()
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    prior = D.Normal(0.0, 1.0)
    everyone = torch.arange(persons)
    for step in range(150):
        logits = model(everyone)
        ll = -F.binary_cross_entropy_with_logits(logits, responses, reduction="none")
        ll = (ll * mask).sum()
        log_prior = prior.log_prob(model.theta.weight).sum() + D.LogNormal(0.0, 0.5).log_prob(model.log_a.exp()).sum()
        loss = -(ll + log_prior) / persons
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logits = model(everyone)
    bern = D.Independent(D.Bernoulli(logits=logits), 1)
    info = (model.log_a.exp() ** 2 * torch.sigmoid(logits) * torch.sigmoid(-logits)).detach()  # item information
    return {"a": model.log_a.exp().detach(), "b": model.b.detach(), "theta": model.theta.weight.detach()[:10, 0],
            "loss": loss.detach(), "logp": bern.log_prob(responses).detach()[:10], "info": info.sum(1)[:10]}


def test_item_response_2pl():
    ours, _ = run_both(irt_2pl, rtol=1e-7, atol=1e-9)
    responses, mask, a, b = irt_data()
    assert np.corrcoef(ours["b"], b)[0, 1] > 0.9
    assert np.corrcoef(ours["a"], a)[0, 1] > 0.3
    theta = ours["theta"]
    logits = ours["a"] * (theta[:, None] - ours["b"])
    logp = (responses[:10] * logits - np.logaddexp(0, logits)).sum(1)
    np.testing.assert_allclose(ours["logp"], logp, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# A penalised-spline GAM with the smoothing parameter by GCV, and a random-effects meta-analysis
# ----------------------------------------------------------------------------------------------


def gam_data(n=120, seed=20):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, n))
    return x, np.sin(2 * np.pi * x) + 0.3 * rng.standard_normal(n)


def bspline_basis(torch, x, knots, degree=3):
    """Cox-de Boor recursion on a clamped knot vector."""
    t = torch.cat([knots[:1].repeat(degree), knots, knots[-1:].repeat(degree)])
    B = ((x.unsqueeze(1) >= t[:-1]) & (x.unsqueeze(1) < t[1:])).double()
    B[x == knots[-1], len(knots) + degree - 2] = 1.0  # the right end belongs to the last interval
    for k in range(1, degree + 1):
        left_den, right_den = t[k:-1] - t[:-k - 1], t[k + 1:] - t[1:-k]
        left = torch.where(left_den > 0, (x.unsqueeze(1) - t[:-k - 1]) / left_den.clamp_min(1e-12), 0.0)
        right = torch.where(right_den > 0, (t[k + 1:] - x.unsqueeze(1)) / right_den.clamp_min(1e-12), 0.0)
        B = left * B[:, :-1] + right * B[:, 1:]
    return B


def pspline_gam(m):
    torch, optim = m.torch, m.optim
    x, y = (torch.from_numpy(a) for a in gam_data())
    knots = torch.linspace(0, 1, 12, dtype=torch.float64)
    B = bspline_basis(torch, x, knots)
    K = B.shape[1]
    Dm = torch.diff(torch.eye(K, dtype=torch.float64), n=2, dim=0)
    P = Dm.T @ Dm
    n = len(y)

    def fit(log_lambda):
        A = B.T @ B + log_lambda.exp() * P
        coef = torch.linalg.solve(A, B.T @ y)
        hat_trace = torch.trace(torch.linalg.solve(A, B.T @ B))
        rss = ((y - B @ coef) ** 2).sum()
        return coef, hat_trace, rss

    def gcv(log_lambda):
        _, edf, rss = fit(log_lambda)
        return n * rss / (n - edf) ** 2

    grid = torch.linspace(-6, 6, 25, dtype=torch.float64)
    scores = torch.stack([gcv(g) for g in grid])
    log_lambda = grid[scores.argmin()].clone().requires_grad_(True)
    optimizer = optim.LBFGS([log_lambda], max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = gcv(log_lambda)
        loss.backward()
        return loss

    optimizer.step(closure)
    coef, edf, rss = fit(log_lambda.detach())
    (dgcv,) = torch.autograd.grad(gcv(log_lambda), log_lambda)
    return {"B_rowsum": B.sum(1), "scores": scores, "log_lambda": log_lambda.detach(), "edf": edf,
            "fitted": (B @ coef)[::10], "sigma2": rss / (n - edf), "dgcv": dgcv}


def test_pspline_gam_gcv():
    ours, _ = run_both(pspline_gam, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["B_rowsum"], 1, rtol=1e-12)  # a partition of unity
    assert abs(float(ours["dgcv"])) < 1e-6
    assert 4 < ours["edf"] < 12
    x, y = gam_data()
    np.testing.assert_allclose(ours["fitted"], np.sin(2 * np.pi * x[::10]), atol=0.3)
    assert ours["sigma2"] == pytest.approx(0.09, rel=0.35)


META_EFFECTS = np.array([-0.80, 0.10, 0.40, -0.90, -0.20, -0.60, 0.30, -0.30, -1.10, 0.20])
META_VARIANCES = np.array([0.04, 0.02, 0.05, 0.08, 0.01, 0.03, 0.06, 0.02, 0.09, 0.03])


def meta_analysis(m):
    torch, optim = m.torch, m.optim
    y, v = torch.from_numpy(META_EFFECTS), torch.from_numpy(META_VARIANCES)
    k = len(y)
    # DerSimonian-Laird
    w = 1 / v
    mu_fixed = (w * y).sum() / w.sum()
    Q = (w * (y - mu_fixed) ** 2).sum()
    tau2_dl = torch.clamp((Q - (k - 1)) / (w.sum() - (w ** 2).sum() / w.sum()), min=0.0)
    # REML for tau^2 by L-BFGS on log tau^2
    log_tau2 = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)

    def neg_reml(log_tau2):
        wt = 1 / (v + log_tau2.exp())
        mu = (wt * y).sum() / wt.sum()
        return 0.5 * (-(wt.log()).sum() + wt.sum().log() + (wt * (y - mu) ** 2).sum())

    optimizer = optim.LBFGS([log_tau2], max_iter=100, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = neg_reml(log_tau2)
        loss.backward()
        return loss

    optimizer.step(closure)
    tau2 = log_tau2.detach().exp()
    wt = 1 / (v + tau2)
    mu = (wt * y).sum() / wt.sum()
    se = wt.sum().rsqrt()
    I2 = torch.clamp((Q - (k - 1)) / Q, min=0.0)
    # a profile-likelihood bound for tau^2 by bisection: where 2 (REML(t) - REML(hat)) = 3.84
    best = neg_reml(log_tau2.detach())
    with torch.no_grad():
        lo, hi = log_tau2.detach().clone(), torch.tensor(3.0, dtype=torch.float64)
        for _ in range(60):
            mid = (lo + hi) / 2
            if 2 * (neg_reml(mid) - best) < 3.841458820694124:
                lo = mid
            else:
                hi = mid
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.975, dtype=torch.float64))
    return {"tau2_dl": tau2_dl, "tau2_reml": tau2, "mu": mu, "ci": torch.stack([mu - z * se, mu + z * se]),
            "Q": Q, "I2": I2, "upper_tau2": lo.exp(), "reml": best.detach()}


def test_random_effects_meta_analysis():
    ours, _ = run_both(meta_analysis, rtol=1e-7, atol=1e-9)
    y, v = META_EFFECTS, META_VARIANCES
    w = 1 / v
    mu_f = (w * y).sum() / w.sum()
    Q = (w * (y - mu_f) ** 2).sum()
    assert ours["Q"] == pytest.approx(Q, rel=1e-12)
    assert ours["tau2_dl"] == pytest.approx(max(0.0, (Q - 9) / (w.sum() - (w ** 2).sum() / w.sum())), rel=1e-12)
    t = ours["tau2_reml"]
    wt = 1 / (v + t)
    mu = (wt * y).sum() / wt.sum()
    # the REML estimating equation: sum wt^2 ((y - mu)^2 - v - t) = -sum wt^2 / sum wt ... by its fixed point
    t_next = (wt ** 2 * ((y - mu) ** 2 - v)).sum() / (wt ** 2).sum() + 1 / wt.sum()
    assert t == pytest.approx(t_next, rel=1e-5)
    assert ours["mu"] == pytest.approx(mu, rel=1e-10)
    assert ours["I2"] == pytest.approx((Q - 9) / Q, rel=1e-12)
    assert ours["upper_tau2"] > t > ours["tau2_dl"] / 10
