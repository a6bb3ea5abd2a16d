# ruff: noqa: E501, E702, E731, F841  (the programs are kept as their authors write them)
"""Gaussian processes and Bayesian optimisation as GPyTorch/BoTorch-style and hand-written PyTorch programs do them
(see tests/pytorch_programs.py), in float64 mostly, each run on chainrule and on PyTorch from the same seeds,
comparing values, gradients, dtypes and errors, and checked against NumPy by hand or invariants where PyTorch is not
installed. Bayesian optimisation: expected improvement by Normal.cdf/log_prob and log_ndtr, UCB, and Monte-Carlo qEI
from a fixed-seed base sample, each optimised over a box by Adam with clamping; QMC normal base samples; Thompson
sampling with random Fourier features over Sobol candidates; BoTorch's torch.set_default_dtype(torch.float64)."""

import math

import numpy as np

from .pytorch_programs import run_both


def ei_ucb(m):
    torch, nn = m.torch, m.nn
    from_dist = torch.distributions
    torch.manual_seed(3)
    X = torch.rand(10, 2, dtype=torch.float64)
    y = (X - 0.3).pow(2).sum(-1)
    ls = 0.3
    def K(a, b):
        return torch.exp(-0.5 * torch.cdist(a, b).pow(2) / ls ** 2)
    L = torch.linalg.cholesky(K(X, X) + 1e-4 * torch.eye(10, dtype=X.dtype))
    alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
    def posterior(x):
        ks = K(x, X)
        mu = (ks @ alpha).squeeze(-1)
        v = torch.linalg.solve_triangular(L, ks.mT, upper=False)
        var = (1 - v.pow(2).sum(-2)).clamp_min(1e-9)
        return mu, var.sqrt()
    best = y.min()
    normal = from_dist.Normal(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    def ei(x):
        mu, sd = posterior(x)
        u = (best - mu) / sd
        return sd * (u * normal.cdf(u) + normal.log_prob(u).exp())
    def ucb(x, beta=2.0):
        mu, sd = posterior(x)
        return -mu + math.sqrt(beta) * sd
    out = {}
    x0 = torch.rand(5, 2, dtype=torch.float64)
    for name, acq in [('ei', ei), ('ucb', ucb)]:
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.05)
        vals = []
        for _ in range(10):
            opt.zero_grad()
            loss = -acq(x).sum()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            vals.append(loss.item())
        out[name] = (vals, x.detach(), x.grad)
    # log EI via special.log_ndtr
    mu, sd = posterior(x0)
    u = (best - mu) / sd
    out['logndtr'] = torch.special.log_ndtr(u)
    out['ndtr'] = torch.special.ndtr(u)
    out['ndtri'] = torch.special.ndtri(torch.tensor([0.1, 0.5, 0.975], dtype=torch.float64))
    out['erfcx'] = torch.special.erfcx(u)
    n2 = from_dist.Normal(mu, sd)
    out['icdf'] = n2.icdf(torch.full_like(mu, 0.9))
    out['ent'] = n2.entropy()
    return out

def qei(m):
    torch = m.torch
    torch.manual_seed(4)
    X = torch.rand(8, 1, dtype=torch.float64)
    y = torch.sin(6 * X).squeeze(-1)
    K = lambda a, b: torch.exp(-0.5 * torch.cdist(a, b).pow(2) / 0.2 ** 2)
    L = torch.linalg.cholesky(K(X, X) + 1e-5 * torch.eye(8, dtype=X.dtype))
    Kinv_y = torch.cholesky_solve(y[:, None], L)
    gen = torch.Generator().manual_seed(123)
    base = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    def qEI(xq):  # xq: b x q x d
        ks = K(xq, X)
        mu = (ks @ Kinv_y).squeeze(-1)
        v = torch.linalg.solve_triangular(L, ks.transpose(-1, -2), upper=False)
        cov = K(xq, xq) - v.transpose(-1, -2) @ v
        Lq = torch.linalg.cholesky(cov + 1e-6 * torch.eye(cov.shape[-1], dtype=cov.dtype))
        samples = mu.unsqueeze(-2) + (Lq.unsqueeze(-3) @ base.unsqueeze(-1)).squeeze(-1)
        imp = (samples - y.max()).clamp_min(0).max(dim=-1).values
        return imp.mean(-1)
    xq = torch.rand(4, 3, 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([xq], lr=0.02)
    hist = []
    for _ in range(8):
        opt.zero_grad()
        v = -qEI(xq).sum()
        v.backward()
        opt.step()
        with torch.no_grad():
            xq.clamp_(0.0, 1.0)
        hist.append(v.item())
    mvn = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), scale_tril=torch.eye(3, dtype=torch.float64))
    torch.manual_seed(7)
    s = mvn.rsample((5,))
    return dict(hist=hist, xq=xq, g=xq.grad, s=s, base=base)


def rff_thompson(m):
    torch = m.torch
    torch.manual_seed(13)
    d, D = 2, 50
    X = torch.rand(15, d, dtype=torch.float64)
    y = torch.cos(4 * X).sum(-1)
    ls = 0.4
    g = torch.Generator().manual_seed(99)
    Wf = torch.randn(D, d, generator=g, dtype=torch.float64) / ls
    b = 2 * math.pi * torch.rand(D, generator=g, dtype=torch.float64)
    phi = lambda x: math.sqrt(2.0 / D) * torch.cos(x @ Wf.T + b)
    P = phi(X)
    A = P.T @ P + 0.01 * torch.eye(D, dtype=torch.float64)
    L = torch.linalg.cholesky(A)
    mean = torch.cholesky_solve(P.T @ y[:, None], L).squeeze(-1)
    z = torch.randn(D, generator=g, dtype=torch.float64)
    theta = mean + 0.1 * torch.linalg.solve_triangular(L.T, z[:, None], upper=True).squeeze(-1)
    cand = torch.quasirandom.SobolEngine(d, scramble=True, seed=0).draw(64, dtype=torch.float64)
    f = phi(cand) @ theta
    idx = f.argmax()
    x = cand[idx].clone().requires_grad_()
    opt = torch.optim.LBFGS([x], max_iter=10, line_search_fn='strong_wolfe')
    def cl():
        opt.zero_grad(); v = -(phi(x[None]) @ theta).sum(); v.backward(); return v
    opt.step(cl)
    with torch.no_grad():
        x.clamp_(0, 1)
    sob = torch.quasirandom.SobolEngine(3, scramble=True, seed=5)
    s1 = sob.draw(8); sob.fast_forward(8); s2 = sob.draw_base2(4)
    normal_qmc = torch.distributions.Normal(0, 1).icdf(sob.draw(4).double().clamp(1e-6, 1 - 1e-6))
    return dict(f=f, idx=idx, x=x, cand=cand, s1=s1, s2=s2, nq=normal_qmc, dt=str(cand.dtype).split('.')[-1], dt1=str(s1.dtype).split('.')[-1])


def default_double(m):
    torch, nn = m.torch, m.nn
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        X = torch.rand(10, 2)
        lin = nn.Linear(2, 3)
        y = torch.tensor([1.0, 2.0])
        n = torch.distributions.Normal(0, 1)
        s = n.sample((3,))
        mvn = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
        r = mvn.rsample((2,))
        sob = torch.quasirandom.SobolEngine(2, scramble=True, seed=1).draw(4)
        lin_out = lin(X)
        ar = torch.arange(3.0); ls = torch.linspace(0, 1, 3); fl = torch.full((2,), 1.5); z = torch.zeros(2)
        t2 = torch.as_tensor([0.5]); nf = torch.tensor(3); cx = torch.tensor(1 + 2j)
        sc = torch.tensor([1.0]) * 2.5
        ei = torch.empty(2).uniform_()
        return dict(dts=[str(t.dtype).split('.')[-1] for t in [X, lin.weight, y, s, r, sob, lin_out, ar, ls, fl, z, t2, nf, cx, sc, ei, n.cdf(torch.tensor(0.)), torch.randn(2), torch.normal(0, 1, (2,))]],
                    X=X, r=r, s=s, w=lin.weight, sob=sob)
    finally:
        torch.set_default_dtype(old)


def qmc_sampler(m):
    torch = m.torch
    out = {}
    eng = torch.quasirandom.SobolEngine(dimension=4, scramble=True, seed=12)
    u = eng.draw(16, dtype=torch.float64)
    out['u'] = u
    z = torch.erfinv(2 * u - 1) * math.sqrt(2)
    out['z'] = z
    n = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    out['icdf'] = n.icdf(u)
    eng.reset()
    out['again'] = eng.draw(4, dtype=torch.float64)
    eng2 = torch.quasirandom.SobolEngine(dimension=2)
    out['plain'] = eng2.draw(5)
    out['nd'] = eng2.num_generated
    # erfinv grad
    x = torch.tensor([-0.999, -0.5, 0.0, 0.9, 0.999999], dtype=torch.float64, requires_grad=True)
    y = torch.erfinv(x)
    out['erfinv'] = (y, torch.autograd.grad(y.sum(), x)[0])
    x32 = torch.tensor([-0.999, -0.5, 0.0, 0.9, 0.99999], requires_grad=True)
    out['erfinv32'] = torch.erfinv(x32)
    return out


def test_expected_improvement_and_ucb_over_a_box():
    ours, _ = run_both(ei_ucb, rtol=1e-6, atol=1e-8)
    for name in ("ei", "ucb"):
        vals, x, g = ours[name]
        assert ((x >= 0) & (x <= 1)).all() and vals[-1] < vals[0]
    from scipy.special import ndtri
    u = np.log(ours["ndtr"])
    np.testing.assert_allclose(ours["logndtr"], u, rtol=1e-10)
    np.testing.assert_allclose(ours["ndtri"], ndtri([0.1, 0.5, 0.975]), rtol=1e-12)


def test_monte_carlo_qei():
    ours, _ = run_both(qei, rtol=1e-6, atol=1e-8)
    hist = ours["hist"]
    assert all(b <= a + 1e-12 for a, b in zip(hist, hist[1:]))  # -qEI falls as the batch moves
    np.testing.assert_allclose(hist[0], -0.6652856056585859, rtol=1e-9)
    assert ((ours["xq"] >= 0) & (ours["xq"] <= 1)).all()


def test_thompson_sampling_random_features():
    ours, _ = run_both(rff_thompson, rtol=1e-6, atol=1e-8)
    assert int(ours["idx"]) == 35 and ours["dt"] == "float64" and ours["dt1"] == "float32"
    assert ours["cand"].shape == (64, 2) and ((ours["cand"] >= 0) & (ours["cand"] < 1)).all()
    assert ((ours["x"] >= 0) & (ours["x"] <= 1)).all()


def test_botorch_default_float64():
    ours, _ = run_both(default_double)
    assert ours["dts"] == ["float64"] * 12 + ["int64", "complex128"] + ["float64"] * 5


def test_qmc_normal_base_samples():
    ours, _ = run_both(qmc_sampler, rtol=1e-6, atol=1e-8)
    from scipy.special import erfinv, ndtri
    np.testing.assert_allclose(ours["z"], erfinv(2 * ours["u"] - 1) * math.sqrt(2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["icdf"], ndtri(ours["u"]), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours["again"], ours["u"][:4])  # reset() starts the sequence again
    assert ours["nd"] == 5 and ours["plain"][0].tolist() == [0.0, 0.0]
    y, g = ours["erfinv"]
    np.testing.assert_allclose(g, math.sqrt(math.pi) / 2 * np.exp(y ** 2), rtol=1e-10)
