"""Statistical-inference programs (see tests/pytorch_programs.py), as samplers, filters and tests are written in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
Sequential models: a bootstrap particle filter with systematic resampling (``cumsum``/``searchsorted``), multinomial,
stratified and residual resampling (``multinomial``, ``repeat_interleave``) against the Kalman filter's exact
likelihood, and a differentiable filter (stop-gradient resampling weights); Kalman filtering and RTS smoothing
(``cholesky``, ``solve_triangular``, ``logdet``, ``slogdet``, ``cholesky_solve``) with likelihood gradients; an
extended Kalman filter by ``autograd.functional.jacobian``; unscented sigma points; a Hawkes process (matrix and
recursive intensities, a Hessian by double ``autograd.grad``, simulation by thinning)."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

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
