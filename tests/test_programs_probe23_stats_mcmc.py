# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Statistical-inference programs (see tests/pytorch_programs.py), as samplers, filters and tests are written in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
MCMC by ``torch.autograd.grad``: HMC with a leapfrog integrator and a Metropolis test, MALA on a banana with a
``torch.Generator`` (batched chains, ``torch.where`` acceptance), a recursive NUTS (Hoffman and Gelman's algorithm 3,
draws by ``torch.rand``), SGLD through ``optim.SGD`` and ``randint`` minibatches; a Gibbs sampler
(``MultivariateNormal(precision_matrix=)``, ``Gamma``, ``InverseGamma``) with Albert-Chib truncated normals; annealed
importance sampling; SVGD (``cdist``/``pdist`` with the median heuristic)."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Hamiltonian Monte Carlo on a correlated Gaussian
# ----------------------------------------------------------------------------------------------

HMC_A = np.array([[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.5]])
HMC_MU = np.array([1.0, -1.0, 0.5])


def hmc(m, iters=60, eps=0.2, L=10):
    torch = m.torch
    torch.manual_seed(0)
    A = torch.tensor(HMC_A, dtype=torch.float64)
    mu = torch.tensor(HMC_MU, dtype=torch.float64)

    def logp(x):
        r = x - mu
        return -0.5 * (r @ torch.linalg.solve(A, r))

    def grad_logp(x):
        x = x.detach().requires_grad_(True)
        lp = logp(x)
        g, = torch.autograd.grad(lp, x)
        return lp.detach(), g

    x = torch.zeros(3, dtype=torch.float64)
    samples, accepts, energy_errors = [], 0, []
    for it in range(iters):
        p0 = torch.randn(3, dtype=torch.float64)
        lp0, g = grad_logp(x)
        xn, p = x.clone(), p0 + 0.5 * eps * g
        for l in range(L):
            xn = xn + eps * p
            lpn, g = grad_logp(xn)
            if l < L - 1:
                p = p + eps * g
        p = p + 0.5 * eps * g
        logacc = (lpn - 0.5 * p.dot(p)) - (lp0 - 0.5 * p0.dot(p0))
        energy_errors.append(logacc)
        if torch.log(torch.rand(())) < logacc:
            x = xn
            accepts += 1
        samples.append(x)
    first_grad = grad_logp(torch.zeros(3, dtype=torch.float64))[1]
    return {"samples": torch.stack(samples), "accepts": accepts, "dH": torch.stack(energy_errors), "g0": first_grad}


def test_hmc_leapfrog():
    ours, _ = run_both(hmc, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["g0"], np.linalg.solve(HMC_A, HMC_MU), rtol=1e-12)  # -A⁻¹(0 - μ)
    assert np.abs(ours["dH"]).max() < 0.5  # the leapfrog nearly conserves energy at this step size
    assert 50 <= ours["accepts"] <= 60
    assert np.abs(ours["samples"][10:].mean(0) - HMC_MU).max() < 0.6


# ----------------------------------------------------------------------------------------------
# MALA on a banana, batched chains drawn from a Generator; SGLD through optim.SGD
# ----------------------------------------------------------------------------------------------


def banana_logp(x):
    return -0.5 * x[..., 0] ** 2 / 4 - 0.5 * (x[..., 1] - 0.5 * x[..., 0] ** 2) ** 2


def mala(m, h=0.1, steps=40):
    torch = m.torch
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(8, 2, requires_grad=True)
    out, accepted = [], 0
    for t in range(steps):
        lp = banana_logp(x)
        gr, = torch.autograd.grad(lp.sum(), x)
        prop = (x + h * gr + (2 * h) ** 0.5 * torch.randn(x.shape, generator=g)).detach().requires_grad_()
        lpp = banana_logp(prop)
        grp, = torch.autograd.grad(lpp.sum(), prop)
        fwd = -((prop - x - h * gr) ** 2).sum(-1) / (4 * h)
        bwd = -((x - prop - h * grp) ** 2).sum(-1) / (4 * h)
        acc = torch.rand(8, generator=g).log() < lpp - lp + bwd - fwd
        accepted += int(acc.sum())
        x = torch.where(acc.unsqueeze(-1), prop, x).detach().requires_grad_()
        out.append(x.detach())
    return {"chains": torch.stack(out), "accepted": accepted}


def sgld(m):
    torch = m.torch
    torch.manual_seed(1)
    X = torch.randn(50, 3)
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(50)
    w = torch.zeros(3, requires_grad=True)
    opt = m.optim.SGD([w], lr=3e-3)
    ws = []
    for t in range(100):
        idx = torch.randint(0, 50, (10,))
        loss = 5.0 * ((X[idx] @ w - y[idx]) ** 2).sum() / 2 + 0.5 * (w ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            w.add_(torch.randn_like(w) * (2 * 3e-3) ** 0.5)
        ws.append(w.detach().clone())
    return {"ws": torch.stack(ws), "X": X, "y": y}


def test_mala_and_sgld():
    ours, _ = run_both(mala, rtol=1e-5, atol=1e-6)
    chains = ours["chains"]
    assert chains.shape == (40, 8, 2)
    assert 0.6 * 320 < ours["accepted"] < 320  # Langevin proposals at h=0.1 are mostly accepted
    moved = np.abs(np.diff(chains, axis=0, prepend=0.0)).sum(-1) > 0  # (every chain starts at 0)
    assert moved.sum() == ours["accepted"]  # a chain moves exactly when its proposal is accepted
    ours, _ = run_both(sgld, rtol=1e-4, atol=1e-5)
    X, y = ours["X"].astype(np.float64), ours["y"].astype(np.float64)
    posterior_mean = np.linalg.solve(X.T @ X + np.eye(3), X.T @ y)
    np.testing.assert_allclose(ours["ws"][-50:].mean(0), posterior_mean, atol=0.1)


# ----------------------------------------------------------------------------------------------
# NUTS (recursive, Hoffman and Gelman's algorithm 3) on a correlated Gaussian
# ----------------------------------------------------------------------------------------------


def nuts(m, iters=25, eps=0.3, max_depth=6):
    torch = m.torch
    torch.manual_seed(3)
    Sinv = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64).inverse()

    def logp_grad(x):
        x = x.detach().requires_grad_()
        lp = -0.5 * x @ Sinv @ x
        g, = torch.autograd.grad(lp, x)
        return lp.detach(), g

    def leapfrog(x, r, g, eps):
        r = r + 0.5 * eps * g
        x = x + eps * r
        lp, g = logp_grad(x)
        return x, r + 0.5 * eps * g, g, lp

    def build(x, r, g, logu, v, j, H0):
        if j == 0:
            x1, r1, g1, lp1 = leapfrog(x, r, g, v * eps)
            H = lp1 - 0.5 * r1 @ r1
            return x1, r1, g1, x1, r1, g1, x1, int(logu <= H), int(logu < H + 1000)
        xm, rm, gm, xp, rp, gp, x1, n1, s1 = build(x, r, g, logu, v, j - 1, H0)
        if s1 == 1:
            if v == -1:
                xm, rm, gm, _, _, _, x2, n2, s2 = build(xm, rm, gm, logu, v, j - 1, H0)
            else:
                _, _, _, xp, rp, gp, x2, n2, s2 = build(xp, rp, gp, logu, v, j - 1, H0)
            if n1 + n2 > 0 and torch.rand(()).item() < n2 / (n1 + n2):
                x1 = x2
            dx = xp - xm
            s1 = int(s2 and (dx @ rm >= 0).item() and (dx @ rp >= 0).item())
            n1 += n2
        return xm, rm, gm, xp, rp, gp, x1, n1, s1

    x = torch.zeros(2, dtype=torch.float64)
    lp, g = logp_grad(x)
    out, depths = [], []
    for it in range(iters):
        r0 = torch.randn(2, dtype=torch.float64)
        H0 = lp - 0.5 * r0 @ r0
        logu = (H0 + torch.log(torch.rand((), dtype=torch.float64))).item()
        xm = xp = x
        rm = rp = r0
        gm = gp = g
        j, n, s = 0, 1, 1
        while s == 1 and j < max_depth:
            v = 1 if torch.rand(()).item() < 0.5 else -1
            if v == -1:
                xm, rm, gm, _, _, _, x1, n1, s1 = build(xm, rm, gm, logu, v, j, H0)
            else:
                _, _, _, xp, rp, gp, x1, n1, s1 = build(xp, rp, gp, logu, v, j, H0)
            if s1 == 1 and torch.rand(()).item() < min(1, n1 / n):
                x = x1
            n += n1
            dx = xp - xm
            s = int(s1 and (dx @ rm >= 0).item() and (dx @ rp >= 0).item())
            j += 1
        depths.append(j)
        lp, g = logp_grad(x)
        out.append(x)
    return {"samples": torch.stack(out), "depths": depths}


def test_nuts():
    ours, _ = run_both(nuts, rtol=1e-9, atol=1e-11)
    assert all(1 <= d <= 6 for d in ours["depths"]) and max(ours["depths"]) >= 2  # the tree doubles
    assert np.isfinite(ours["samples"]).all() and np.abs(ours["samples"]).max() < 5
    assert (np.abs(np.diff(ours["samples"], axis=0)).sum(-1) > 0).sum() >= 15  # it moves


# ----------------------------------------------------------------------------------------------
# A Gibbs sampler for Bayesian linear regression; Albert-Chib truncated normals; AIS; SVGD
# ----------------------------------------------------------------------------------------------


def gibbs(m, N=50, P=3, iters=30):
    torch, D = m.torch, m.torch.distributions
    torch.manual_seed(0)
    X = torch.cat([torch.ones(N, 1), torch.randn(N, 2)], 1).double()
    y = X @ torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64) + 0.5 * torch.randn(N, dtype=torch.float64)
    a0, b0 = 2.0, 1.0
    tau = torch.tensor(1.0, dtype=torch.float64)
    betas, taus = [], []
    for it in range(iters):
        precision = tau * X.T @ X + torch.eye(P, dtype=torch.float64)
        mean = torch.linalg.solve(precision, tau * X.T @ y)
        beta = D.MultivariateNormal(mean, precision_matrix=precision).sample()
        resid = y - X @ beta
        tau = D.Gamma(a0 + N / 2, b0 + 0.5 * resid @ resid).sample()
        betas.append(beta)
        taus.append(tau)
    variances = D.InverseGamma(torch.tensor(3.0), torch.tensor(2.0)).sample((4,))
    z = torch.bernoulli(torch.full((N,), 0.5, dtype=torch.float64))
    mu = X @ betas[-1] * 0.3
    Nd = D.Normal(mu, torch.ones_like(mu))
    at_zero = Nd.cdf(torch.zeros_like(mu))
    lo = torch.where(z > 0, at_zero, torch.zeros_like(mu))
    hi = torch.where(z > 0, torch.ones_like(mu), at_zero)
    y_star = Nd.icdf(lo + torch.rand(N, dtype=torch.float64) * (hi - lo))
    return {"X": X, "y": y, "betas": torch.stack(betas), "taus": torch.stack(taus), "variances": variances, "z": z,
            "y_star": y_star}


def test_gibbs_sampler():
    ours, _ = run_both(gibbs, rtol=1e-8, atol=1e-10)
    X, y = ours["X"], ours["y"]
    ols = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(ours["betas"][5:].mean(0), ols, atol=0.15)
    assert 1 / ours["taus"][5:].mean() == pytest.approx(0.25, rel=0.5)  # the noise variance 0.5²
    assert (ours["variances"] > 0).all()
    assert ((ours["y_star"] > 0) == (ours["z"] > 0)).all()  # each latent on its label's side of zero


def ais(m, n=200):
    torch, D = m.torch, m.torch.distributions
    g = torch.Generator().manual_seed(4)
    prior = D.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64))
    loglik = lambda x: D.Normal(torch.tensor(1.5, dtype=torch.float64), 0.5).log_prob(x)
    betas = torch.linspace(0, 1, 21, dtype=torch.float64)
    x = prior.icdf(torch.rand(n, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6))
    logw = torch.zeros(n, dtype=torch.float64)
    for t in range(1, len(betas)):
        logw += (betas[t] - betas[t - 1]) * loglik(x)
        for _ in range(2):
            prop = x + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
            log_ratio = prior.log_prob(prop) + betas[t] * loglik(prop) - prior.log_prob(x) - betas[t] * loglik(x)
            x = torch.where(torch.rand(n, generator=g, dtype=torch.float64).log() < log_ratio, prop, x)
    return {"logZ": torch.logsumexp(logw, 0) - math.log(n),
            "ess": torch.exp(2 * torch.logsumexp(logw, 0) - torch.logsumexp(2 * logw, 0)), "mean": x.mean()}


def test_annealed_importance_sampling():
    ours, _ = run_both(ais, rtol=1e-8, atol=1e-10)
    exact = -0.5 * math.log(2 * math.pi * (9 + 0.25)) - 0.5 * 1.5 ** 2 / (9 + 0.25)  # ∫ N(x;0,9) N(1.5;x,¼) dx
    assert ours["logZ"] == pytest.approx(exact, abs=0.15)  # (20 temperatures: a little low, as AIS is on average)
    assert 30 < ours["ess"] <= 200
    assert ours["mean"] == pytest.approx(1.5 * 9 / 9.25, abs=0.15)


def svgd(m, n=30, steps=20):
    torch, D = m.torch, m.torch.distributions
    torch.manual_seed(0)
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)
    target = D.MixtureSameFamily(D.Categorical(f64([0.3, 0.7])), D.Normal(f64([-2.0, 2.0]), f64([0.5, 1.0])))
    x = torch.randn(n, 1, dtype=torch.float64) * 0.5
    for it in range(steps):
        x = x.detach().requires_grad_(True)
        score, = torch.autograd.grad(target.log_prob(x.squeeze(1)).sum(), x)
        xd = x.detach().requires_grad_(True)
        h = torch.median(torch.pdist(xd.detach()) ** 2) / math.log(n + 1)  # the median heuristic
        K = torch.exp(-torch.cdist(xd, xd) ** 2 / h)
        repulsion, = torch.autograd.grad(K.sum(), xd)
        x = x.detach() + 0.3 * (K.detach() @ score + repulsion) / n
    return x[:, 0]


def test_svgd():
    # PyTorch's cdist takes its matrix-product route past 25 rows: its distances differ in the last bits
    x, _ = run_both(svgd, rtol=1e-5, atol=1e-6)
    assert 1.0 < np.median(x) < 2.5 and (x > 0).sum() >= 20  # most particles find the heavier mode at 2
    assert np.isfinite(x).all() and np.abs(x).max() < 6 and np.unique(x.round(6)).size == len(x)  # kept apart
