# ruff: noqa: B007, E501, E702  (the programs are kept as their authors write them)
"""Gaussian processes and Bayesian optimisation as GPyTorch/BoTorch-style and hand-written PyTorch programs do them
(see tests/pytorch_programs.py), in float64 mostly, each run on chainrule and on PyTorch from the same seeds,
comparing values, gradients, dtypes and errors, and checked against NumPy by hand or invariants where PyTorch is not
installed. Exact GP regression with RBF, Matern 3/2 and 5/2 and periodic kernels under softplus-constrained
hyperparameters (cdist, cholesky, cholesky_solve, solve_triangular, logdet from the factor's diagonal) fitted by Adam
and by LBFGS(line_search_fn="strong_wolfe"), with the predictive mean and variance, and the periodic kernel that is
not positive definite; Kronecker GPs (kron, batched eigh); an ICM multi-task GP with a heteroscedastic noise network;
a spectral-mixture kernel over an MLP feature extractor (deep kernel learning) by LBFGS; torch.func grad, hessian,
vmap and jacfwd of a marginal likelihood; parametrized positive and interval constraints."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both


def exact_gp(m, kern='rbf', opt='adam'):
    torch, nn = m.torch, m.nn
    F = m.F
    torch.manual_seed(0)
    X = torch.rand(20, 2, dtype=torch.float64)
    y = torch.sin(3 * X[:, 0]) + 0.1 * torch.randn(20, dtype=torch.float64)
    raw_ls = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    raw_os = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    raw_noise = nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))
    raw_per = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
    def K(a, b):
        ls = F.softplus(raw_ls)
        d = torch.cdist(a / ls, b / ls)
        os_ = F.softplus(raw_os)
        if kern == 'rbf':
            return os_ * torch.exp(-0.5 * d.pow(2))
        if kern == 'matern52':
            s5 = math.sqrt(5) * d
            return os_ * (1 + s5 + s5 ** 2 / 3) * torch.exp(-s5)
        if kern == 'matern32':
            s3 = math.sqrt(3) * d
            return os_ * (1 + s3) * torch.exp(-s3)
        if kern == 'periodic':
            p = F.softplus(raw_per)
            dd = torch.cdist(a, b, p=2)
            return os_ * torch.exp(-2 * torch.sin(math.pi * dd / p).pow(2) / ls[0] ** 2)
    def nll():
        Kxx = K(X, X) + (F.softplus(raw_noise) + 1e-6) * torch.eye(20, dtype=X.dtype)
        L = torch.linalg.cholesky(Kxx)
        alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
        return 0.5 * (y.unsqueeze(-1) * alpha).sum() + L.diagonal().log().sum() + 0.5 * 20 * math.log(2 * math.pi)
    params = [raw_ls, raw_os, raw_noise] + ([raw_per] if kern == 'periodic' else [])
    losses = []
    if opt == 'adam':
        o = m.optim.Adam(params, lr=0.1)
        for i in range(15):
            o.zero_grad(); l = nll(); l.backward(); o.step(); losses.append(l.item())
    else:
        o = m.optim.LBFGS(params, lr=1, max_iter=20, line_search_fn="strong_wolfe")
        def closure():
            o.zero_grad(); l = nll(); l.backward(); return l
        for i in range(2):
            losses.append(o.step(closure).item())
    g = [p.grad for p in params]
    with torch.no_grad():
        Xs = torch.linspace(0, 1, 7, dtype=torch.float64).unsqueeze(-1).expand(7, 2)
        Kxx = K(X, X) + F.softplus(raw_noise) * torch.eye(20, dtype=X.dtype)
        L = torch.linalg.cholesky(Kxx)
        Ks = K(Xs, X)
        v = torch.linalg.solve_triangular(L, Ks.T, upper=False)
        a = torch.cholesky_solve(y.unsqueeze(-1), L)
        mean = (Ks @ a).squeeze(-1)
        var = K(Xs, Xs).diagonal() - v.pow(2).sum(0)
    return dict(losses=losses, g=g, mean=mean, var=var, dt=str(mean.dtype).replace("torch.",""))


def kron(m):
    torch = m.torch
    torch.manual_seed(8)
    x1 = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]
    x2 = torch.linspace(0, 1, 4, dtype=torch.float64)[:, None]
    ls = torch.tensor([0.3, 0.5], dtype=torch.float64, requires_grad=True)
    K1 = torch.exp(-0.5 * torch.cdist(x1, x1).pow(2) / ls[0] ** 2)
    K2 = torch.exp(-0.5 * torch.cdist(x2, x2).pow(2) / ls[1] ** 2)
    Y = torch.randn(5, 4, dtype=torch.float64)
    noise = 0.1
    Ks = torch.stack([K1[:4, :4], K2])
    w, Q = torch.linalg.eigh(Ks)
    w1, Q1 = torch.linalg.eigh(K1)
    w2, Q2 = w[1], Q[1]
    lam = torch.kron(w1, w2) + noise
    Qk = torch.kron(Q1, Q2)
    yv = Y.reshape(-1)
    a = Qk @ ((Qk.T @ yv) / lam)
    nll = 0.5 * yv @ a + 0.5 * lam.log().sum()
    # efficient version without forming kron
    Yt = Q1.T @ Y @ Q2
    lam2 = w1[:, None] * w2[None, :] + noise
    nll2 = 0.5 * (Yt.pow(2) / lam2).sum() + 0.5 * lam2.log().sum()
    Kfull = torch.kron(K1, K2) + noise * torch.eye(20, dtype=torch.float64)
    L = torch.linalg.cholesky(Kfull)
    nll3 = 0.5 * (torch.cholesky_solve(yv[:, None], L).squeeze() * yv).sum() + L.diagonal().log().sum()
    g = torch.autograd.grad(nll + nll2 + nll3, ls)
    eigs = torch.linalg.eigvalsh(Kfull)
    return dict(nll=nll, nll2=nll2, nll3=nll3, g=g, eigs=eigs, w=w, kr=torch.kron(torch.ones(2, 1, 3), torch.arange(4.).reshape(2, 2)))


def icm_het(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(11)
    T, n, rank = 3, 8, 1
    X = torch.rand(n, 1, dtype=torch.float64)
    task = torch.arange(T).repeat_interleave(n)
    Xall = X.repeat(T, 1)
    Y = torch.cat([torch.sin(5 * X + t).squeeze(-1) for t in range(T)])
    W = nn.Parameter(0.5 * torch.randn(T, rank, dtype=torch.float64))
    raw_v = nn.Parameter(torch.zeros(T, dtype=torch.float64))
    raw_ls = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))
    het = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    opt = torch.optim.Adam([W, raw_v, raw_ls] + list(het.parameters()), lr=0.05)
    hist = []
    for _ in range(6):
        opt.zero_grad()
        B = W @ W.T + torch.diag(F.softplus(raw_v))
        Kx = torch.exp(-0.5 * torch.cdist(Xall, Xall).pow(2) / F.softplus(raw_ls) ** 2)
        Kt = B[task][:, task]
        Kt2 = B.index_select(0, task).index_select(1, task)
        Kt3 = torch.kron(B, torch.ones(n, n, dtype=torch.float64))
        noise = F.softplus(het(Xall)).squeeze(-1) + 1e-4
        Kf = Kx * Kt + torch.diag_embed(noise)
        L = torch.linalg.cholesky(Kf)
        a = torch.cholesky_solve(Y[:, None], L)
        nll = 0.5 * (Y[:, None] * a).sum() + torch.log(torch.diagonal(L)).sum()
        mvn = torch.distributions.MultivariateNormal(torch.zeros_like(Y), scale_tril=L)
        nll2 = -mvn.log_prob(Y) - 0.5 * len(Y) * math.log(2 * math.pi)
        nll.backward()
        opt.step()
        hist.append((nll.item(), nll2.item(), (Kt - Kt2).abs().max().item(), (Kt - Kt3).abs().max().item()))
    return dict(hist=hist, W=W, gW=W.grad, gh=[p.grad for p in het.parameters()])

def spectral_dkl(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(12)
    Q = 3
    X = torch.linspace(0, 4, 25, dtype=torch.float64)[:, None]
    y = (torch.sin(3 * X) + torch.cos(7 * X)).squeeze(-1)
    raw_w = nn.Parameter(torch.zeros(Q, dtype=torch.float64))
    raw_mu = nn.Parameter(torch.rand(Q, 1, dtype=torch.float64))
    raw_sc = nn.Parameter(torch.randn(Q, 1, dtype=torch.float64))
    feat = nn.Sequential(nn.Linear(1, 10), nn.ReLU(), nn.Linear(10, 1)).to(torch.float64)
    def sm(a, b):
        tau = a.unsqueeze(-2) - b.unsqueeze(-3)  # n m d
        w = F.softmax(raw_w, 0)
        mu = F.softplus(raw_mu); sc = F.softplus(raw_sc)
        e = torch.exp(-2 * math.pi ** 2 * (tau.unsqueeze(0) ** 2 * sc[:, None, None, :] ** 2).sum(-1))
        c = torch.cos(2 * math.pi * (tau.unsqueeze(0) * mu[:, None, None, :]).sum(-1))
        return (w[:, None, None] * e * c).sum(0)
    opt = torch.optim.LBFGS([raw_w, raw_mu, raw_sc] + list(feat.parameters()), lr=0.5, max_iter=8, line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad()
        z = feat(X)
        K = sm(z, z) + 0.05 * torch.eye(25, dtype=torch.float64)
        L, info = torch.linalg.cholesky_ex(K)
        a = torch.cholesky_solve(y[:, None], L)
        loss = 0.5 * (y[:, None] * a).sum() + 2 * L.diagonal().log().sum() / 2
        loss.backward()
        return loss
    ls = [opt.step(closure).item() for _ in range(2)]
    st = opt.state[opt._params[0]] if hasattr(opt, '_params') else None
    return dict(ls=ls, g=[p.grad for p in [raw_w, raw_mu, raw_sc]], fe=st['func_evals'], ni=st['n_iter'])


def func_mll(m):
    torch = m.torch
    torch.manual_seed(3)
    X = torch.rand(12, 1, dtype=torch.float64)
    y = torch.sin(6 * X).squeeze(-1)
    def mll(theta):
        ls, os_, nz = theta.exp().unbind(-1)
        K = os_ * torch.exp(-0.5 * (X - X.T).pow(2) / ls ** 2) + nz * torch.eye(12, dtype=X.dtype)
        L = torch.linalg.cholesky(K)
        a = torch.cholesky_solve(y[:, None], L).squeeze(-1)
        return -0.5 * y @ a - L.diagonal().log().sum()
    theta = torch.tensor([-1.0, 0.0, -3.0], dtype=torch.float64)
    out = {}
    out['g'] = torch.func.grad(mll)(theta)
    out['h'] = torch.func.hessian(mll)(theta)
    thetas = torch.stack([theta, theta + 0.1, theta - 0.2])
    out['vg'] = torch.func.vmap(torch.func.grad(mll))(thetas)
    out['vv'] = torch.func.vmap(mll)(thetas)
    out['jf'] = torch.func.jacfwd(mll)(theta)
    out['hf'] = torch.autograd.functional.hessian(mll, theta)
    return out


def constraints(m):
    torch, nn, F = m.torch, m.nn, m.F
    P = nn.utils.parametrize
    class Positive(nn.Module):
        def forward(self, x):
            return F.softplus(x) + 1e-4
        def right_inverse(self, y):
            return torch.log(torch.expm1(y - 1e-4))
    class Interval(nn.Module):
        def __init__(self, lo, hi):
            super().__init__(); self.lo, self.hi = lo, hi
        def forward(self, x):
            return self.lo + (self.hi - self.lo) * torch.sigmoid(x)
        def right_inverse(self, y):
            v = (y - self.lo) / (self.hi - self.lo)
            return torch.log(v) - torch.log1p(-v)
    class Kern(nn.Module):
        def __init__(self):
            super().__init__()
            self.lengthscale = nn.Parameter(torch.ones(1, 2, dtype=torch.float64))
            self.noise = nn.Parameter(torch.tensor([0.1], dtype=torch.float64))
    k = Kern()
    P.register_parametrization(k, 'lengthscale', Positive())
    P.register_parametrization(k, 'noise', Interval(1e-4, 1.0))
    out = {}
    out['ls0'] = k.lengthscale
    k.lengthscale = torch.tensor([[0.5, 2.0]], dtype=torch.float64)
    out['ls1'] = k.lengthscale
    out['raw'] = k.parametrizations.lengthscale.original
    out['names'] = sorted(n for n, _ in k.named_parameters())
    torch.manual_seed(0)
    X = torch.rand(8, 2, dtype=torch.float64)
    y = X.sum(-1)
    opt = torch.optim.Adam(k.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        K = torch.exp(-0.5 * torch.cdist(X / k.lengthscale, X / k.lengthscale).pow(2)) + k.noise * torch.eye(8, dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(torch.zeros(8, dtype=torch.float64), covariance_matrix=K)
        loss = -dist.log_prob(y)
        loss.backward()
        opt.step()
    out['loss'] = loss
    out['ls'] = k.lengthscale
    out['nz'] = k.noise
    with P.cached():
        out['cached'] = k.lengthscale * 2
    sd = k.state_dict()
    out['sd'] = sorted(sd.keys())
    return out


@pytest.mark.parametrize("kern", ["rbf", "matern52", "matern32"])
def test_exact_gp_adam(kern):
    ours, _ = run_both(exact_gp, kern, rtol=1e-6, atol=1e-8)
    assert ours["losses"][-1] < ours["losses"][0] - 1  # the marginal likelihood improves
    assert (ours["var"] > 0).all() and ours["dt"] == "float64"
    assert np.isfinite(ours["g"][0]).all() and ours["g"][0].shape == (2,)


def test_exact_gp_lbfgs():
    ours, _ = run_both(exact_gp, "rbf", "lbfgs", rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["losses"][0], 6.175385822402692, rtol=1e-9)  # Adam's first loss too: same start
    assert ours["losses"][1] < -7
    ours2, _ = run_both(exact_gp, "matern52", "lbfgs", rtol=1e-6, atol=1e-8)
    assert ours2["losses"][1] < ours2["losses"][0]


def test_periodic_kernel_not_positive_definite():
    """A periodic kernel whose rows repeat is singular: both libraries refuse it in the same words."""
    import autograd
    with pytest.raises(autograd.linalg.LinAlgError, match="the leading minor of order 17 is not positive-definite"):
        exact_gp(OURS, "periodic")
    theirs = pytest.importorskip("torch")
    from .pytorch_programs import pytorch
    with pytest.raises(theirs.linalg.LinAlgError, match="the leading minor of order 17 is not positive-definite"):
        exact_gp(pytorch(), "periodic")


def test_kronecker_gp():
    ours, _ = run_both(kron, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose([ours["nll"], ours["nll2"]], [ours["nll3"]] * 2, rtol=1e-10)
    np.testing.assert_allclose(ours["nll3"], 31.402527575535892, rtol=1e-9)
    assert (np.diff(ours["eigs"]) >= 0).all() and ours["kr"].shape == (2, 2, 6)


def test_icm_multitask_heteroscedastic():
    ours, _ = run_both(icm_het, rtol=1e-6, atol=1e-8)
    for nll, nll2, d2, d3 in ours["hist"]:
        np.testing.assert_allclose(nll, nll2, rtol=1e-10)  # by hand = MultivariateNormal's log_prob
        assert d2 == 0 and d3 == 0  # B[task][:, task] = index_select twice = kron(B, ones)
    assert ours["hist"][-1][0] < ours["hist"][0][0]


def test_spectral_mixture_deep_kernel_lbfgs():
    ours, _ = run_both(spectral_dkl, rtol=1e-5, atol=1e-7)
    assert ours["ls"][1] < ours["ls"][0] and ours["fe"] == 19 and ours["ni"] == 15


def test_torch_func_marginal_likelihood():
    ours, _ = run_both(func_mll, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["h"], ours["hf"], rtol=1e-10)
    np.testing.assert_allclose(ours["h"], ours["h"].T, rtol=1e-10)
    np.testing.assert_allclose(ours["vg"][0], ours["g"], rtol=1e-12)
    np.testing.assert_allclose(ours["jf"], ours["g"], rtol=1e-8)


def test_parametrized_positive_and_interval_constraints():
    ours, _ = run_both(constraints, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["ls1"], [[0.5, 2.0]], rtol=1e-10)  # right_inverse then forward
    assert ours["names"] == ["parametrizations.lengthscale.original", "parametrizations.noise.original"]
    assert (ours["ls"] > 0).all() and 1e-4 < float(ours["nz"][0]) < 1.0
    np.testing.assert_allclose(ours["cached"], 2 * ours["ls"])
