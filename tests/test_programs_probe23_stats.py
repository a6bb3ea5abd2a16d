# ruff: noqa: B007, B008, B023, E741, E731, F841, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Statistical-inference programs (see tests/pytorch_programs.py), as samplers, filters and tests are written in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.

MCMC by ``torch.autograd.grad``: HMC with a leapfrog integrator and a Metropolis test, MALA on a banana with a
``torch.Generator`` (batched chains, ``torch.where`` acceptance), a recursive NUTS (Hoffman and Gelman's
algorithm 3, draws by ``torch.rand``), SGLD through ``optim.SGD`` and ``randint`` minibatches, and SVGD
(``cdist``/``pdist`` with the median heuristic). Sequential Monte Carlo: a bootstrap particle filter with
systematic resampling (``cumsum``/``searchsorted``), multinomial, stratified and residual resampling
(``multinomial``, ``repeat_interleave``) against the Kalman filter's exact likelihood, and a differentiable filter
(stop-gradient resampling weights); annealed importance sampling. Kalman filtering and RTS smoothing
(``cholesky``, ``solve_triangular``, ``logdet``, ``slogdet``, ``cholesky_solve``) with likelihood gradients; an
extended Kalman filter by ``autograd.functional.jacobian``; unscented sigma points. A Hawkes process (matrix and
recursive intensities, a Hessian by double ``autograd.grad``, simulation by thinning). Conformal prediction
(``quantile`` in its five interpolations, ``nanquantile``, ``kthvalue``, adaptive prediction sets, conformalised
quantile regression with a pinball loss). Permutation, sign-flip and bootstrap tests (``randperm``, ``randint``
with generators, BCa pieces). Gaussian-mixture EM (``logsumexp``, ``scatter_add_``, ``index_add_``,
``scatter_reduce``, ``bincount``, ``MixtureSameFamily``). Variational inference (mean-field and full-rank ADVI
with ``rsample``/``kl_divergence``/``entropy``, an IWAE bound, a score-function estimator, planar flows).
Empirical Bayes (beta-binomial by L-BFGS through ``lgamma``, a negative-binomial shape by Newton with ``digamma``
and ``polygamma``). Copulas (Gaussian by ``erf``/``ndtr``/``ndtri``/``erfinv``, Clayton by a gamma frailty, Frank;
Kendall's tau, Spearman's rho), and scores of one parameter after the graph through another was freed. A
Gaussian-process regression by L-BFGS (``cdist``, ``cholesky_inverse``); rank tests with ties (``unique``,
``scatter_reduce`` "mean"), a KDE, Mahalanobis distances and a chi-squared test by ``gammainc``. A Gibbs sampler
(``MultivariateNormal(precision_matrix=)``, ``Gamma``, ``InverseGamma``) with Albert-Chib truncated normals; a
sandwich covariance by ``torch.func`` (``vmap(grad)``, ``hessian``, ``jacrev``)."""

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
# Particle filters against the Kalman filter of the same linear-Gaussian model
# ----------------------------------------------------------------------------------------------

PF_PHI, PF_Q, PF_R = 0.9, 0.5, 0.7


def pf_observations(T=20):
    return 2 * np.sin(np.arange(T) * 0.3)


def particle_filter(m, N=512, scheme="systematic"):
    torch = m.torch
    g = torch.Generator().manual_seed(7)
    ys = torch.tensor(pf_observations(), dtype=torch.float64)
    x = torch.randn(N, generator=g, dtype=torch.float64)
    logw = torch.zeros(N, dtype=torch.float64)
    ll = torch.zeros((), dtype=torch.float64)
    means, resampled = [], []
    for t in range(len(ys)):
        x = PF_PHI * x + PF_Q * torch.randn(N, generator=g, dtype=torch.float64)
        logw = logw + torch.distributions.Normal(x, PF_R).log_prob(ys[t])
        lse = torch.logsumexp(logw, 0)
        ll = ll + lse - math.log(N) if t == 0 or resampled[-1] else ll + lse
        w = torch.softmax(logw, 0)
        means.append((w * x).sum())
        if 1.0 / (w ** 2).sum() < N / 2:
            if scheme == "systematic":
                u = (torch.rand(1, generator=g, dtype=torch.float64) + torch.arange(N)) / N
                c = torch.cumsum(w, 0)
                c[-1] = 1.0
                idx = torch.searchsorted(c, u)
            elif scheme == "stratified":
                u = (torch.arange(N) + torch.rand(N, generator=g, dtype=torch.float64)) / N
                idx = torch.searchsorted(torch.cumsum(w, 0), u, right=True).clamp(max=N - 1)
            elif scheme == "multinomial":
                idx = torch.multinomial(w, N, replacement=True, generator=g)
            else:  # residual: the integer parts, then a multinomial draw on the remainders
                counts = torch.floor(N * w).long()
                rest = N - int(counts.sum())
                extra = torch.multinomial(N * w - counts, rest, replacement=True, generator=g)
                counts = counts + torch.bincount(extra, minlength=N)
                idx = torch.repeat_interleave(torch.arange(N), counts)
            x = x[idx]
            logw = torch.zeros(N, dtype=torch.float64)
            resampled.append(True)
        else:
            logw = logw - lse
            resampled.append(False)
    return {"ll": ll, "means": torch.stack(means), "resampled": resampled}


def kalman_loglik_numpy(ys):
    """The exact likelihood and filtered means of x_t = φ x_{t-1} + q ε, y_t = x_t + r η, x_0 ~ N(0, 1)."""
    m, P, ll, means = 0.0, 1.0, 0.0, []
    for y in ys:
        m, P = PF_PHI * m, PF_PHI ** 2 * P + PF_Q ** 2
        S = P + PF_R ** 2
        ll += -0.5 * (math.log(2 * math.pi * S) + (y - m) ** 2 / S)
        K = P / S
        m, P = m + K * (y - m), (1 - K) * P
        means.append(m)
    return ll, np.array(means)


@pytest.mark.parametrize("scheme", ["systematic", "stratified", "multinomial", "residual"])
def test_particle_filter_against_kalman(scheme):
    ours, _ = run_both(particle_filter, scheme=scheme, rtol=1e-8, atol=1e-10)
    exact_ll, exact_means = kalman_loglik_numpy(pf_observations())
    assert any(ours["resampled"])
    assert ours["ll"] == pytest.approx(exact_ll, abs=0.5)
    np.testing.assert_allclose(ours["means"], exact_means, atol=0.15)


def differentiable_pf(m, T=15, N=32):
    """Stop-gradient resampling: w[idx] / w[idx].detach() carries the weights' gradient through the draw."""
    torch = m.torch
    g = torch.Generator().manual_seed(11)
    phi = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    sig = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    ys = torch.cos(torch.arange(T, dtype=torch.float64) * 0.4)
    x = torch.randn(N, generator=g, dtype=torch.float64)
    logw = torch.full((N,), -math.log(N), dtype=torch.float64)
    ll = 0.0
    for t in range(T):
        x = phi * x + sig * torch.randn(N, generator=g, dtype=torch.float64)
        lw = logw + torch.distributions.Normal(x, 0.6).log_prob(ys[t])
        ll = ll + torch.logsumexp(lw, 0)
        w = torch.softmax(lw, 0)
        idx = torch.multinomial(w.detach(), N, replacement=True, generator=g)
        x = x[idx]
        logw = torch.log(w[idx]) - torch.log(w[idx]).detach() - math.log(N)
    ll.backward()
    return {"ll": ll, "phi": phi.grad, "sig": sig.grad}


def test_differentiable_particle_filter():
    ours, _ = run_both(differentiable_pf, rtol=1e-8, atol=1e-10)
    assert np.isfinite([ours["ll"], ours["phi"], ours["sig"]]).all()
    assert -25 < ours["ll"] < 0


# ----------------------------------------------------------------------------------------------
# Kalman filter and RTS smoother with likelihood gradients; EKF; unscented sigma points
# ----------------------------------------------------------------------------------------------

KF_DT = 0.1


def kf_observations(T=30):
    rng = np.random.default_rng(0)
    return (np.arange(T) * 0.1) ** 2 + 0.3 * rng.standard_normal(T)


def kalman(m, q=0.3, r=0.5):
    torch = m.torch
    dt = KF_DT
    Fm = torch.tensor([[1.0, dt], [0.0, 1.0]], dtype=torch.float64)
    H = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(r, dtype=torch.float64, requires_grad=True)
    Q = q ** 2 * torch.tensor([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]], dtype=torch.float64)
    R = (r ** 2).reshape(1, 1)
    ys = torch.tensor(kf_observations(), dtype=torch.float64)
    m_, P = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    ll = 0
    ms, Ps, mps, Pps = [], [], [], []
    for t in range(len(ys)):
        mp, Pp = Fm @ m_, Fm @ P @ Fm.T + Q
        S = H @ Pp @ H.T + R
        Ls = torch.linalg.cholesky(S)
        v = ys[t:t + 1] - H @ mp
        sol = torch.linalg.solve_triangular(Ls, v.unsqueeze(-1), upper=False)
        ll = ll - 0.5 * (sol ** 2).sum() - torch.log(torch.diagonal(Ls)).sum() - 0.5 * math.log(2 * math.pi)
        K = torch.linalg.solve(S, H @ Pp).T
        m_ = mp + K @ v
        P = (torch.eye(2, dtype=torch.float64) - K @ H) @ Pp
        ms.append(m_), Ps.append(P), mps.append(mp), Pps.append(Pp)
    msm, Psm = [ms[-1]], [Ps[-1]]
    for t in range(len(ys) - 2, -1, -1):
        G = Ps[t] @ Fm.T @ torch.linalg.inv(Pps[t + 1])
        msm.insert(0, ms[t] + G @ (msm[0] - mps[t + 1]))
        Psm.insert(0, Ps[t] + G @ (Psm[0] - Pps[t + 1]) @ G.T)
    gq, gr = torch.autograd.grad(ll, (q, r))
    mvn = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                 scale_tril=torch.linalg.cholesky(Pps[3]))
    return {"ll": ll, "gq": gq, "gr": gr, "msm": torch.stack(msm), "Psm": torch.stack(Psm),
            "logdet": torch.logdet(Pps[5]), "slogdet": list(torch.linalg.slogdet(Pps[5])),
            "cs": torch.cholesky_solve(torch.ones(2, 1, dtype=torch.float64), torch.linalg.cholesky(Pps[5])),
            "P5": Pps[5], "mvn_lp": mvn.log_prob(torch.stack(ms)), "mvn_ent": mvn.entropy()}


def kalman_numpy(q, r):
    dt = KF_DT
    F = np.array([[1.0, dt], [0.0, 1.0]])
    Q = q ** 2 * np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])
    m, P, ll = np.zeros(2), np.eye(2), 0.0
    for y in kf_observations():
        m, P = F @ m, F @ P @ F.T + Q
        S = P[0, 0] + r ** 2
        ll += -0.5 * (math.log(2 * math.pi * S) + (y - m[0]) ** 2 / S)
        K = P[:, 0] / S
        m, P = m + K * (y - m[0]), P - np.outer(K, P[0])
    return ll


def test_kalman_filter_and_smoother():
    ours, _ = run_both(kalman, rtol=1e-8, atol=1e-10)
    assert ours["ll"] == pytest.approx(kalman_numpy(0.3, 0.5), rel=1e-10)
    h = 1e-6
    assert ours["gq"] == pytest.approx((kalman_numpy(0.3 + h, 0.5) - kalman_numpy(0.3 - h, 0.5)) / (2 * h), rel=1e-5)
    assert ours["gr"] == pytest.approx((kalman_numpy(0.3, 0.5 + h) - kalman_numpy(0.3, 0.5 - h)) / (2 * h), rel=1e-5)
    P5 = ours["P5"]
    assert ours["logdet"] == pytest.approx(math.log(np.linalg.det(P5)), rel=1e-10)
    assert ours["slogdet"][0] == 1.0
    np.testing.assert_allclose(ours["cs"][:, 0], np.linalg.solve(P5, np.ones(2)), rtol=1e-10)
    assert (np.linalg.eigvalsh(ours["Psm"]) > 0).all()  # smoothed covariances stay positive definite
    # the smoother's last state is the filter's; smoothing shrinks variances below the filter's
    assert ours["Psm"][:, 0, 0].max() < 1.0


def ekf(m):
    torch = m.torch
    g = torch.Generator().manual_seed(5)

    def f(x):
        return torch.stack([x[0] + 0.1 * x[1], x[1] - 0.1 * torch.sin(x[0])])

    def h(x):
        return torch.atan2(x[1:2], x[0:1] + 2.0)

    jac = torch.autograd.functional.jacobian
    x, P = torch.tensor([0.5, 0.0], dtype=torch.float64), 0.1 * torch.eye(2, dtype=torch.float64)
    Q, R = 0.01 * torch.eye(2, dtype=torch.float64), torch.tensor([[0.05]], dtype=torch.float64)
    out, jacobians = [], []
    for t in range(15):
        Fj = jac(f, x)
        jacobians.append((x.clone(), Fj))
        x, P = f(x), Fj @ P @ Fj.T + Q
        Hj = jac(h, x)
        y = torch.tensor([0.1 * t], dtype=torch.float64) + 0.05 * torch.randn(1, generator=g, dtype=torch.float64)
        S = Hj @ P @ Hj.T + R
        K = P @ Hj.T @ torch.linalg.inv(S)
        x = x + K @ (y - h(x))
        P = (torch.eye(2, dtype=torch.float64) - K @ Hj) @ P
        out.append(x)
    return {"x": torch.stack(out), "P": P, "jacobians": jacobians}


def test_extended_kalman_filter():
    ours, _ = run_both(ekf, rtol=1e-9, atol=1e-11)
    for x, Fj in ours["jacobians"]:
        np.testing.assert_allclose(Fj, [[1.0, 0.1], [-0.1 * math.cos(x[0]), 1.0]], rtol=1e-12)
    assert (np.linalg.eigvalsh(ours["P"]) > 0).all()


def unscented(m):
    torch = m.torch
    x = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    P = torch.tensor([[1.0, 0.2, 0.0], [0.2, 2.0, 0.1], [0.0, 0.1, 0.5]], dtype=torch.float64)
    n, alpha, beta, kappa = 3, 1e-1, 2.0, 0.0
    lam = alpha ** 2 * (n + kappa) - n
    Lc = torch.linalg.cholesky((n + lam) * P)
    sig = torch.cat([x.unsqueeze(0), x + Lc.T, x - Lc.T])
    Wm = torch.full((2 * n + 1,), 1 / (2 * (n + lam)), dtype=torch.float64)
    Wm[0] = lam / (n + lam)
    Wc = Wm.clone()
    Wc[0] += 1 - alpha ** 2 + beta
    Y = sig[:, :2] * torch.tensor([2.0, -1.0], dtype=torch.float64) + 0.5  # a linear map: exact moments
    ym = Wm @ Y
    dY = Y - ym
    return {"ym": ym, "Py": (Wc[:, None] * dY).T @ dY, "sigma_mean": Wm @ sig}


def test_unscented_transform_is_exact_for_a_linear_map():
    ours, _ = run_both(unscented, rtol=1e-9, atol=1e-9)
    A = np.diag([2.0, -1.0])
    P = np.array([[1.0, 0.2, 0.0], [0.2, 2.0, 0.1], [0.0, 0.1, 0.5]])
    np.testing.assert_allclose(ours["sigma_mean"], [1.0, 2.0, 0.5], rtol=1e-9)
    np.testing.assert_allclose(ours["ym"], A @ [1.0, 2.0] + 0.5, rtol=1e-9)
    np.testing.assert_allclose(ours["Py"], A @ P[:2, :2] @ A.T, rtol=1e-7)


# ----------------------------------------------------------------------------------------------
# A Hawkes process: likelihood, gradient and Hessian, recursive intensity, simulation by thinning
# ----------------------------------------------------------------------------------------------

HAWKES_T = np.array([0.3, 0.9, 1.1, 1.15, 2.7, 3.3, 3.35, 4.8, 6.0, 6.1])
HAWKES_END = 7.0


def hawkes(m, mu=0.5, alpha=0.6, beta=1.5):
    torch = m.torch
    t = torch.tensor(HAWKES_T, dtype=torch.float64)
    n = len(t)
    mu, alpha, beta = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (mu, alpha, beta))
    dt = t[:, None] - t[None, :]
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)
    kernel = torch.where(mask, alpha * beta * torch.exp(-beta * dt.clamp(min=0)), torch.zeros((), dtype=torch.float64))
    lam = mu + kernel.sum(1)
    compensator = mu * HAWKES_END + alpha * (1 - torch.exp(-beta * (HAWKES_END - t))).sum()
    ll = torch.log(lam).sum() - compensator
    g = torch.autograd.grad(ll, (mu, alpha, beta), create_graph=True)
    H = torch.stack([torch.stack(torch.autograd.grad(gi, (mu, alpha, beta), retain_graph=True)) for gi in g])
    A = torch.zeros((), dtype=torch.float64)
    recursive = [mu + 0 * A]
    for i in range(1, n):
        A = torch.exp(-beta * (t[i] - t[i - 1])) * (1 + A)
        recursive.append(mu + alpha * beta * A)
    gen = torch.Generator().manual_seed(2)
    s, events = 0.0, []
    with torch.no_grad():
        while s < HAWKES_END:
            past = torch.tensor(events, dtype=torch.float64)
            bound = mu + (alpha * beta * torch.exp(-beta * (s - past))).sum()  # decreasing until the next event
            s = s - torch.log(torch.rand((), generator=gen, dtype=torch.float64)).item() / bound.item()
            lam_s = mu + (alpha * beta * torch.exp(-beta * (s - past))).sum()
            if torch.rand((), generator=gen, dtype=torch.float64) * bound <= lam_s and s < HAWKES_END:
                events.append(s)
    return {"ll": ll, "g": list(g), "H": H, "lam": lam, "recursive": torch.stack(recursive),
            "events": torch.tensor(events, dtype=torch.float64)}


def hawkes_ll_numpy(p):
    mu, alpha, beta = p
    t = HAWKES_T
    lam = np.array([mu + alpha * beta * np.exp(-beta * (t[i] - t[:i])).sum() for i in range(len(t))])
    return np.log(lam).sum() - mu * HAWKES_END - alpha * (1 - np.exp(-beta * (HAWKES_END - t))).sum()


def test_hawkes_process():
    ours, _ = run_both(hawkes, rtol=1e-10, atol=1e-12)
    p = np.array([0.5, 0.6, 1.5])
    assert ours["ll"] == pytest.approx(hawkes_ll_numpy(p), rel=1e-12)
    np.testing.assert_allclose(ours["lam"], ours["recursive"], rtol=1e-12)
    h = 1e-5
    fd = [(hawkes_ll_numpy(p + h * e) - hawkes_ll_numpy(p - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(ours["g"], fd, rtol=1e-7)
    np.testing.assert_allclose(ours["H"], ours["H"].T, rtol=1e-12)
    fd2 = np.array([[(hawkes_ll_numpy(p + h * a + h * b) - hawkes_ll_numpy(p + h * a - h * b)
                      - hawkes_ll_numpy(p - h * a + h * b) + hawkes_ll_numpy(p - h * a - h * b)) / (4 * h * h)
                     for b in np.eye(3)] for a in np.eye(3)])
    np.testing.assert_allclose(ours["H"], fd2, rtol=1e-4, atol=1e-4)
    ev = ours["events"]
    assert len(ev) > 0 and (np.diff(ev) > 0).all() and ev.max() < HAWKES_END


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
# Gaussian-mixture EM: logsumexp responsibilities, scatter statistics, MixtureSameFamily
# ----------------------------------------------------------------------------------------------


def gmm_em(m, K=3, D=2, N=150):
    torch = m.torch
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [3.0, 3.0], [-3.0, 2.0]], dtype=torch.float64)
    z = torch.randint(0, K, (N,), generator=g)
    X = centres[z] + torch.randn(N, D, generator=g, dtype=torch.float64)
    mu = X[torch.randperm(N, generator=g)[:K]].clone()
    var, pi = torch.ones(K, D, dtype=torch.float64), torch.full((K,), 1.0 / K, dtype=torch.float64)
    lls = []
    for it in range(15):
        lp = torch.distributions.Normal(mu[None], var[None].sqrt()).log_prob(X[:, None]).sum(-1) + pi.log()
        ll = torch.logsumexp(lp, 1)
        lls.append(ll.sum())
        r = (lp - ll[:, None]).exp()
        Nk = r.sum(0)
        mu = (r.T @ X) / Nk[:, None]
        var = (r.T @ X ** 2) / Nk[:, None] - mu ** 2 + 1e-6
        pi = Nk / N
    hard = r.argmax(1)
    index = hard[:, None].expand(-1, D)
    torch.manual_seed(0)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(pi),
        torch.distributions.Independent(torch.distributions.Normal(mu, var.sqrt()), 1))
    return {"X": X, "lls": torch.stack(lls), "mu": mu, "var": var, "pi": pi, "hard": hard,
            "counts": torch.zeros(K, dtype=torch.float64).scatter_add_(0, hard, torch.ones(N, dtype=torch.float64)),
            "sums": torch.zeros(K, D, dtype=torch.float64).index_add_(0, hard, X),
            "sums2": torch.zeros(K, D, dtype=torch.float64).scatter_add(0, index, X),
            "amax": torch.zeros(K, D, dtype=torch.float64).scatter_reduce(0, index, X, reduce="amax",
                                                                          include_self=False),
            "means": torch.zeros(K, D, dtype=torch.float64).scatter_reduce(0, index, X, reduce="mean",
                                                                           include_self=False),
            "bincount": torch.bincount(hard, minlength=K), "weighted": torch.bincount(hard, weights=X[:, 0]),
            "mix_lp": mixture.log_prob(X[:5]), "mix_draws": mixture.sample((4,))}


def test_gaussian_mixture_em():
    ours, _ = run_both(gmm_em, rtol=1e-8, atol=1e-10)
    X, hard, lls = ours["X"], ours["hard"], ours["lls"]
    assert (np.diff(lls) > -1e-9).all()  # EM never lowers the likelihood
    assert ours["pi"].sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(ours["counts"], np.bincount(hard, minlength=3))
    np.testing.assert_array_equal(ours["bincount"], np.bincount(hard, minlength=3))
    for k in range(3):
        np.testing.assert_allclose(ours["sums"][k], X[hard == k].sum(0), rtol=1e-12)
        np.testing.assert_allclose(ours["sums2"][k], X[hard == k].sum(0), rtol=1e-12)
        np.testing.assert_allclose(ours["amax"][k], X[hard == k].max(0), rtol=1e-12)
        np.testing.assert_allclose(ours["means"][k], X[hard == k].mean(0), rtol=1e-12)
    np.testing.assert_allclose(ours["weighted"], np.bincount(hard, weights=X[:, 0]), rtol=1e-12)
    comp = -0.5 * (((X[:5, None] - ours["mu"]) ** 2 / ours["var"]) + np.log(2 * np.pi * ours["var"])).sum(-1)
    np.testing.assert_allclose(ours["mix_lp"], np.log((np.exp(comp) * ours["pi"]).sum(1)), rtol=1e-10)
    assert ours["mix_draws"].shape == (4, 2)


# ----------------------------------------------------------------------------------------------
# Variational inference: mean-field and full-rank ADVI, IWAE, a score-function gradient, planar flows
# ----------------------------------------------------------------------------------------------


def advi(m, N=80, P=3):
    torch, D = m.torch, m.torch.distributions
    torch.manual_seed(0)
    X = torch.randn(N, P)
    y = torch.bernoulli(torch.sigmoid(X @ torch.tensor([1.5, -1.0, 0.5])))
    mu, rho = torch.zeros(P, requires_grad=True), torch.full((P,), -1.0, requires_grad=True)
    opt = m.optim.Adam([mu, rho], lr=0.05)
    prior = D.Normal(torch.zeros(P), torch.ones(P))
    elbos, kls = [], []
    for it in range(40):
        q = D.Normal(mu, m.F.softplus(rho))
        w = q.rsample((8,))
        kl = D.kl_divergence(q, prior).sum()
        elbo = D.Bernoulli(logits=w @ X.T).log_prob(y).sum(-1).mean() - kl
        opt.zero_grad()
        (-elbo).backward()
        opt.step()
        elbos.append(elbo.detach())
        kls.append(kl.detach())
    L_raw = torch.zeros(P, P, requires_grad=True)
    scale_tril = torch.tril(L_raw, -1) + torch.diag_embed(m.F.softplus(torch.diagonal(L_raw)) + 1e-3)
    q2 = D.MultivariateNormal(mu.detach(), scale_tril=scale_tril)
    objective = D.Bernoulli(logits=q2.rsample((4,)) @ X.T).log_prob(y).sum(-1).mean() + q2.entropy()
    g_full, = torch.autograd.grad(objective, L_raw)
    q = D.Normal(mu, m.F.softplus(rho))
    ws = q.rsample((16,))
    logw = D.Bernoulli(logits=ws @ X.T).log_prob(y).sum(-1) + prior.log_prob(ws).sum(-1) - q.log_prob(ws).sum(-1)
    iwae = torch.logsumexp(logw, 0) - math.log(16)
    logits = torch.zeros(5, requires_grad=True)
    qb = D.Bernoulli(logits=logits)
    zs = qb.sample((10,))
    surrogate = (qb.log_prob(zs).sum(-1) * ((zs - 0.3) ** 2).sum(-1).detach()).mean()
    g_score, = torch.autograd.grad(surrogate, logits)
    return {"elbos": torch.stack(elbos), "kls": torch.stack(kls), "mu": mu.detach(),
            "sigma": m.F.softplus(rho).detach(), "g_full": g_full, "iwae": iwae.detach(), "logw": logw.detach(),
            "zs": zs, "g_score": g_score}


def test_advi():
    ours, _ = run_both(advi, rtol=1e-4, atol=1e-5)
    assert ours["elbos"][-5:].mean() > ours["elbos"][:5].mean()
    s, mu = ours["sigma"], ours["mu"]
    kl = 0.5 * (s ** 2 + mu ** 2 - 1 - 2 * np.log(s)).sum()  # KL(N(μ, σ²) ‖ N(0, 1)) by hand, after the last step
    assert ours["kls"][-1] == pytest.approx(kl, rel=0.1)
    assert ours["iwae"] >= ours["logw"].mean() - 1e-4  # the IWAE bound is above the ELBO's estimate
    assert np.tril(ours["g_full"], 1)[0, 1] == 0 and np.abs(np.triu(ours["g_full"], 1)).max() == 0
    zs = ours["zs"]
    f = ((zs - 0.3) ** 2).sum(-1)
    np.testing.assert_allclose(ours["g_score"], ((zs - 0.5) * f[:, None]).mean(0), rtol=1e-5)  # d/dl log p = z - σ(l)


def planar_flows(m, steps=30):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)

    class Planar(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.u = nn.Parameter(torch.randn(d) * 0.1)
            self.w = nn.Parameter(torch.randn(d) * 0.1)
            self.b = nn.Parameter(torch.zeros(1))

        def forward(self, z):
            wu = self.w @ self.u
            u_hat = self.u + (-1 + F.softplus(wu) - wu) * self.w / (self.w ** 2).sum()  # keeps it invertible
            a = z @ self.w + self.b
            psi = (1 - torch.tanh(a) ** 2)[:, None] * self.w
            return z + u_hat * torch.tanh(a)[:, None], torch.log(torch.abs(1 + psi @ u_hat))

    flows = nn.ModuleList([Planar(2) for _ in range(4)])
    opt = m.optim.Adam(flows.parameters(), lr=1e-2)
    base = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    losses = []
    for it in range(steps):
        z = base.sample((64,))
        lq = base.log_prob(z)
        for f in flows:
            z, log_det = f(z)
            lq = lq - log_det
        loss = (lq + 0.5 * ((torch.linalg.vector_norm(z, dim=1) - 2) / 0.4) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def test_planar_flows():
    losses, _ = run_both(planar_flows, rtol=1e-4, atol=5e-5)  # (float32 training: 2e-5 apart on an AVX-512 machine)
    assert losses[-5:].mean() < losses[:5].mean()


# ----------------------------------------------------------------------------------------------
# Empirical Bayes: beta-binomial by L-BFGS through lgamma; a negative-binomial shape by Newton
# ----------------------------------------------------------------------------------------------

EB_K = np.array([12.0, 50.0, 2.0, 44.0, 1.0, 30.0, 27.0, 20.0])
EB_N = np.array([40.0, 90.0, 20.0, 120.0, 15.0, 60.0, 80.0, 30.0])
NB_Y = np.array([0.0, 3.0, 1.0, 7.0, 2.0, 0.0, 4.0, 5.0, 1.0, 2.0])


def empirical_bayes(m):
    torch, D = m.torch, m.torch.distributions
    k, n = torch.tensor(EB_K, dtype=torch.float64), torch.tensor(EB_N, dtype=torch.float64)
    log_ab = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = m.optim.LBFGS([log_ab], lr=1, max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        a, b = log_ab.exp()
        ll = (torch.lgamma(k + a) + torch.lgamma(n - k + b) - torch.lgamma(n + a + b)
              - (torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)))
        loss = -ll.sum()
        loss.backward()
        return loss

    opt.step(closure)
    a, b = log_ab.exp().detach()
    y = torch.tensor(NB_Y, dtype=torch.float64)
    r = torch.tensor(1.0, dtype=torch.float64)
    for _ in range(20):  # the score in r, and its derivative, with ȳ's MLE of the mean plugged in
        p = r / (r + y.mean())
        score = (torch.digamma(y + r) - torch.digamma(r) + torch.log(p)).sum()
        slope = (torch.polygamma(1, y + r) - torch.polygamma(1, r)).sum() + len(y) * (1 / r - 1 / (r + y.mean()))
        r = r - score / slope
    prior, post = D.Beta(a, b), D.Beta(a + k, b + n - k)
    return {"a": a, "b": b, "r": r, "post_mean": post.mean, "post_entropy": post.entropy(),
            "kl": D.kl_divergence(post, prior),
            "nb_lp": D.NegativeBinomial(r, probs=1 - r / (r + y.mean())).log_prob(y)}


def beta_binomial_ll(a, b):
    lg = np.vectorize(math.lgamma)
    return (lg(EB_K + a) + lg(EB_N - EB_K + b) - lg(EB_N + a + b) - lg(a) - lg(b) + lg(a + b)).sum()


def test_empirical_bayes():
    ours, _ = run_both(empirical_bayes, rtol=1e-6, atol=1e-8)
    a, b, h = ours["a"], ours["b"], 1e-6
    for da, db in ((h, 0), (0, h)):  # the maximum in (log a, log b): both partial derivatives vanish
        slope = (beta_binomial_ll(a * math.exp(da), b * math.exp(db))
                 - beta_binomial_ll(a * math.exp(-da), b * math.exp(-db))) / (2 * h)
        assert abs(slope) < 1e-4
    np.testing.assert_allclose(ours["post_mean"], (a + EB_K) / (a + b + EB_N), rtol=1e-12)
    assert (ours["kl"] > 0).all()
    r = ours["r"]
    m = NB_Y.mean()
    lg = np.vectorize(math.lgamma)
    nb = lambda r: (lg(NB_Y + r) - lg(r) + r * np.log(r / (r + m)) + NB_Y * np.log(m / (r + m))).sum()
    assert (nb(r + 1e-5) - nb(r - 1e-5)) / 2e-5 == pytest.approx(0.0, abs=1e-6)  # Newton reached the MLE
    np.testing.assert_allclose(ours["nb_lp"], lg(NB_Y + r) - lg(r) - lg(NB_Y + 1) + r * np.log(r / (r + m))
                               + NB_Y * np.log(m / (r + m)), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Copulas: Gaussian (erf, ndtr, ndtri, erfinv), Clayton by a gamma frailty, Frank
# ----------------------------------------------------------------------------------------------


def copulas(m, n=200):
    torch, D = m.torch, m.torch.distributions
    g = torch.Generator().manual_seed(9)
    rho = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    one = torch.ones((), dtype=torch.float64)
    Sigma = torch.stack([torch.stack([one, rho]), torch.stack([rho, one])])
    z = torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(Sigma).T
    u = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    x = D.Exponential(torch.tensor(2.0, dtype=torch.float64)).icdf(u)  # exponential margins
    zz = torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12))
    log_c = (D.MultivariateNormal(torch.zeros(2, dtype=torch.float64), Sigma).log_prob(zz)
             - D.Normal(0.0, 1.0).log_prob(zz).sum(-1))
    ll = log_c.sum()
    g_rho, = torch.autograd.grad(ll, rho)  # frees u's graph (through rho)
    s1 = torch.sign(x[:, None, 0] - x[None, :, 0])
    s2 = torch.sign(x[:, None, 1] - x[None, :, 1])
    tau = (s1 * s2).triu(1).sum() / (n * (n - 1) / 2)
    ranks = u.argsort(0).argsort(0).double()
    spearman = torch.corrcoef(ranks.T)[0, 1]
    torch.manual_seed(3)
    V = D.Gamma(torch.tensor(0.5), torch.tensor(1.0)).sample((100,))  # Clayton θ = 2: frailty Γ(1/θ, 1)
    E = torch.empty(100, 2).exponential_(generator=g)
    Uc = (1 + E / V[:, None]) ** (-1 / 2.0)
    theta = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    a, b = Uc[:, 0].double(), Uc[:, 1].double()
    clayton = (torch.log1p(theta) - (1 + theta) * (a.log() + b.log())
               - (2 + 1 / theta) * torch.log(a ** -theta + b ** -theta - 1)).sum()
    g_theta, = torch.autograd.grad(clayton, theta)
    # Frank's score on the Gaussian sample's u: its graph through rho is already freed, but theta_f alone is
    # asked for, so the pass never runs those nodes
    theta_f = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    uu, vv = u[:, 0], u[:, 1]
    frank = (torch.log(theta_f) + torch.log(-torch.expm1(-theta_f)) - theta_f * (uu + vv)
             - 2 * torch.log(torch.abs(-torch.expm1(-theta_f) - (-torch.expm1(-theta_f * uu))
                                       * (-torch.expm1(-theta_f * vv))))).sum()
    g_frank, = torch.autograd.grad(frank, theta_f)
    return {"z": z.detach(), "u": u.detach(), "ndtr": torch.special.ndtr(z.detach()), "x": x.detach(),
            "zz": zz.detach(), "erfinv": math.sqrt(2) * torch.erfinv(2 * u.detach() - 1), "ll": ll.detach(),
            "g_rho": g_rho, "tau": tau, "spearman": spearman, "Uc": Uc, "clayton": clayton.detach(),
            "g_theta": g_theta, "frank": frank.detach(), "g_frank": g_frank}


def gaussian_copula_ll(u, rho):
    z = math.sqrt(2) * np.vectorize(_erfinv)(2 * u - 1)
    q = (z[:, 0] ** 2 - 2 * rho * z[:, 0] * z[:, 1] + z[:, 1] ** 2) / (1 - rho ** 2)
    return (-0.5 * math.log(1 - rho ** 2) - 0.5 * q + 0.5 * (z ** 2).sum(1)).sum()


def _erfinv(y):
    """erf⁻¹ by Newton on math.erf (for the NumPy side)."""
    x = 0.0
    for _ in range(100):
        x -= (math.erf(x) - y) / (2 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


def frank_ll(u, t):
    uu, vv = u[:, 0], u[:, 1]
    return (np.log(t) + np.log(-np.expm1(-t)) - t * (uu + vv)
            - 2 * np.log(np.abs(-np.expm1(-t) - (-np.expm1(-t * uu)) * (-np.expm1(-t * vv))))).sum()


def test_copulas():
    ours, _ = run_both(copulas, rtol=1e-6, atol=1e-8)
    u, z = ours["u"], ours["z"]
    np.testing.assert_allclose(ours["ndtr"], u, rtol=1e-12)
    np.testing.assert_allclose(ours["zz"], z, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["erfinv"], z, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["x"], -np.log1p(-u) / 2, rtol=1e-10)
    assert ours["ll"] == pytest.approx(gaussian_copula_ll(u, 0.6), rel=1e-6)
    # dll/drho moves z too (the sample is drawn through rho's Cholesky factor): checked against PyTorch only
    assert np.isfinite(ours["g_rho"])
    assert 0.3 < ours["tau"] < 0.55 and 0.45 < ours["spearman"] < 0.75  # ρ = 0.6: τ = 2 asin(ρ)/π ≈ 0.41
    assert ((0 < ours["Uc"]) & (ours["Uc"] <= 1)).all()
    Uc = ours["Uc"].astype(np.float64)
    clayton = lambda t: (np.log1p(t) - (1 + t) * np.log(Uc).sum(1) - (2 + 1 / t) * np.log((Uc ** -t).sum(1) - 1)).sum()
    assert ours["g_theta"] == pytest.approx((clayton(1.5 + 1e-6) - clayton(1.5 - 1e-6)) / 2e-6, rel=1e-6)
    assert ours["frank"] == pytest.approx(frank_ll(u, 3.0), rel=1e-10)
    assert ours["g_frank"] == pytest.approx((frank_ll(u, 3 + 1e-6) - frank_ll(u, 3 - 1e-6)) / 2e-6, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Gaussian-process regression by L-BFGS on the marginal likelihood
# ----------------------------------------------------------------------------------------------


def gp_data(n=25):
    rng = np.random.default_rng(1)
    X = np.linspace(0, 5, n)[:, None]
    return X, np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)


def gp_regression(m):
    torch = m.torch
    Xn, yn = gp_data()
    X, y = torch.tensor(Xn), torch.tensor(yn)
    n = len(y)
    log_ls, log_sf, log_sn = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.0, 0.0, -1.0))
    opt = m.optim.LBFGS([log_ls, log_sf, log_sn], lr=0.5, max_iter=30, line_search_fn="strong_wolfe")

    def neg_mll():
        K = (log_sf.exp() ** 2 * torch.exp(-0.5 * torch.cdist(X, X) ** 2 / log_ls.exp() ** 2)
             + (log_sn.exp() ** 2 + 1e-6) * torch.eye(n, dtype=torch.float64))
        L = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y[:, None], L)
        loss = 0.5 * (y[:, None] * alpha).sum() + torch.log(torch.diagonal(L)).sum() + n / 2 * math.log(2 * math.pi)
        return loss, L, alpha

    def closure():
        opt.zero_grad()
        loss = neg_mll()[0]
        loss.backward()
        return loss

    opt.step(closure)
    loss, L, alpha = neg_mll()
    grads = torch.autograd.grad(loss, (log_ls, log_sf, log_sn))
    Xs = torch.linspace(0, 6, 7, dtype=torch.float64)[:, None]
    Ks = log_sf.exp() ** 2 * torch.exp(-0.5 * torch.cdist(Xs, X) ** 2 / log_ls.exp() ** 2)
    v = torch.linalg.solve_triangular(L, Ks.T, upper=False)
    return {"loss": loss.detach(), "params": torch.stack([log_ls, log_sf, log_sn]).detach(), "grads": list(grads),
            "mean": (Ks @ alpha).detach()[:, 0], "var": (log_sf.exp() ** 2 - (v ** 2).sum(0)).detach(),
            "Kinv": torch.cholesky_inverse(L).detach(), "L": L.detach()}


def test_gaussian_process_regression():
    ours, _ = run_both(gp_regression, rtol=1e-6, atol=1e-8)
    X, y = gp_data()
    ls, sf, sn = np.exp(ours["params"])
    K = sf ** 2 * np.exp(-0.5 * (X - X.T) ** 2 / ls ** 2) + (sn ** 2 + 1e-6) * np.eye(len(y))
    nll = 0.5 * y @ np.linalg.solve(K, y) + 0.5 * np.linalg.slogdet(K)[1] + len(y) / 2 * math.log(2 * math.pi)
    assert ours["loss"] == pytest.approx(nll, rel=1e-10)
    assert np.abs(ours["grads"]).max() < 1e-3  # a stationary point
    np.testing.assert_allclose(ours["Kinv"], np.linalg.inv(K), rtol=1e-7, atol=1e-9)
    Xs = np.linspace(0, 6, 7)[:, None]
    Ks = sf ** 2 * np.exp(-0.5 * (Xs - X.T) ** 2 / ls ** 2)
    np.testing.assert_allclose(ours["mean"], Ks @ np.linalg.solve(K, y), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["var"], sf ** 2 - np.einsum("ij,ji->i", Ks, np.linalg.solve(K, Ks.T)),
                               rtol=1e-6, atol=1e-9)
    assert np.abs(ours["mean"][:5] - np.sin(Xs[:5, 0])).max() < 0.2


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
