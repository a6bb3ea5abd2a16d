# ruff: noqa: B007, B023, E501, E702, E741, E731, F841, N806, C408  (the programs are kept as their authors write them)
"""Gaussian processes and Bayesian optimisation as GPyTorch/BoTorch-style and hand-written PyTorch programs do
them (see tests/pytorch_programs.py), in float64 mostly, each run on chainrule and on PyTorch from the same seeds,
comparing values, gradients, dtypes and errors, and checked against NumPy by hand or invariants where PyTorch is not
installed.

Exact GP regression with RBF, Matern 3/2 and 5/2 and periodic kernels under softplus-constrained hyperparameters
(cdist, cholesky, cholesky_solve, solve_triangular, logdet from the factor's diagonal) fitted by Adam and by
LBFGS(line_search_fn="strong_wolfe"), with the predictive mean and variance; jitter retries by cholesky_ex and its
info (batched, float32, check_errors); gradients through cdist (p = 0, ½, 1, 2, 3, ∞, the matrix-product path,
zero distances), slogdet, logdet, eigh, solve_triangular (left=False, unitriangular), cholesky_solve and
cholesky_inverse, twice where a Hessian needs it; expected improvement by Normal.cdf/log_prob and log_ndtr, UCB, and
Monte-Carlo qEI from a fixed-seed base sample, each optimised over a box by Adam with clamping; whitened and
unwhitened SVGPs (tril + diag_embed scale_tril, kl_divergence of MultivariateNormals, the KL by hand); Kronecker
GPs (kron, batched eigh); conjugate gradients and Lanczos quadrature written with torch ops; Thompson sampling with
random Fourier features over Sobol candidates; an ICM multi-task GP with a heteroscedastic noise network; a
spectral-mixture kernel over an MLP feature extractor (deep kernel learning) by LBFGS; torch.func grad, hessian,
vmap and jacfwd of a marginal likelihood; BoTorch's torch.set_default_dtype(torch.float64); and the errors of
non-PD, singular, integer and misshapen inputs.
"""

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


def jitter(m):
    torch = m.torch
    torch.manual_seed(1)
    X = torch.rand(6, 1, dtype=torch.float64)
    X = torch.cat([X, X[:2]])  # duplicate rows: singular
    K = torch.exp(-0.5 * torch.cdist(X, X).pow(2) / 0.3**2)
    out = {}
    L, info = torch.linalg.cholesky_ex(K)
    out['info0'] = info
    out['info0_dt'] = str(info.dtype).replace('torch.', '')
    jit = 1e-8
    tries = 0
    while True:
        L, info = torch.linalg.cholesky_ex(K + jit * torch.eye(8, dtype=K.dtype))
        tries += 1
        if not torch.any(info):
            break
        jit *= 10
    out['tries'] = tries; out['L'] = L
    # batched info
    Kb = torch.stack([K, torch.eye(8, dtype=K.dtype), -torch.eye(8, dtype=K.dtype)])
    Lb, infob = torch.linalg.cholesky_ex(Kb)
    out['infob'] = infob
    try:
        torch.linalg.cholesky(Kb)
    except Exception as e:
        out['err'] = str(e)
    try:
        torch.linalg.cholesky_ex(Kb, check_errors=True)
    except Exception as e:
        out['err2'] = str(e)
    # nan input
    try:
        torch.linalg.cholesky(torch.full((3, 3), float('nan'), dtype=torch.float64))
    except Exception as e:
        out['errnan'] = str(e)
    # float32 info
    L32, info32 = torch.linalg.cholesky_ex(K.float())
    out['info32'] = info32
    # upper
    U, i2 = torch.linalg.cholesky_ex(K + 1e-4 * torch.eye(8, dtype=K.dtype), upper=True)
    out['U'] = U
    # gradient through cholesky_ex
    A = (K + 1e-3 * torch.eye(8, dtype=K.dtype)).requires_grad_()
    L, info = torch.linalg.cholesky_ex(A)
    (L.diagonal().log().sum() * 2 + L.sum()).backward()
    out['gA'] = A.grad
    return out

def kernel_grads(m):
    torch = m.torch
    torch.manual_seed(2)
    X = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    Z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = {}
    for p in [1.0, 2.0, 3.0, float('inf'), 0.5]:
        d = torch.cdist(X, Z, p=p)
        gX, gZ = torch.autograd.grad((d * torch.arange(4.0, dtype=torch.float64)).sum(), [X, Z])
        out[f'd{p}'] = d; out[f'gx{p}'] = gX; out[f'gz{p}'] = gZ
    # self distance: zero diagonal gradient should be 0 not nan
    d = torch.cdist(X, X)
    g, = torch.autograd.grad(torch.exp(-d).sum(), X)
    out['self'] = g
    d2 = torch.cdist(X, X, compute_mode='use_mm_for_euclid_dist')
    out['mm'] = d2[~torch.eye(7, dtype=torch.bool)]
    g, = torch.autograd.grad(torch.exp(-d2).sum(), X)
    out['selfmm'] = g
    # batched cdist
    Xb = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    db = torch.cdist(Xb, Xb[:1].detach())
    g, = torch.autograd.grad(db.sum(), Xb)
    out['gb'] = g
    # slogdet, logdet grads
    A = torch.randn(5, 5, dtype=torch.float64)
    A = (A @ A.T + 5 * torch.eye(5, dtype=torch.float64)).requires_grad_()
    s, ld = torch.linalg.slogdet(A)
    g1, = torch.autograd.grad(ld, A)
    out['sl'] = (s, ld, g1)
    g2, = torch.autograd.grad(torch.logdet(A), A)
    out['ld'] = g2
    # eigh grads
    w, V = torch.linalg.eigh(A)
    g3, = torch.autograd.grad(w.log().sum() + (V[:, 0] ** 4).sum(), A)
    out['eigh'] = (w, g3)
    # solve_triangular grads both args, left=False
    L = torch.linalg.cholesky(A.detach()).requires_grad_()
    B = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    x = torch.linalg.solve_triangular(L, B, upper=False)
    x2 = torch.linalg.solve_triangular(L.mT, B.mT, upper=True, left=False)
    x3 = torch.linalg.solve_triangular(L, B, upper=False, unitriangular=True)
    gL, gB = torch.autograd.grad((x ** 2).sum() + x2.sum() + x3.pow(3).sum(), [L, B])
    out['st'] = (x, x2, x3, gL, gB)
    # cholesky_solve grads, upper
    C = torch.linalg.cholesky(A.detach(), upper=True).requires_grad_()
    y = torch.cholesky_solve(B, C, upper=True)
    gC, gB = torch.autograd.grad(y.sin().sum(), [C, B])
    out['cs'] = (y, gC, gB)
    # cholesky_inverse
    Li = torch.linalg.cholesky(A.detach()).requires_grad_()
    Ai = torch.cholesky_inverse(Li)
    g, = torch.autograd.grad(Ai.trace(), Li)
    out['ci'] = (Ai, g)
    return out

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


def svgp(m, whiten=True):
    torch, nn, F = m.torch, m.nn, m.F
    D = torch.distributions
    torch.manual_seed(5)
    N, M = 40, 6
    X = torch.linspace(-2, 2, N, dtype=torch.float64).unsqueeze(-1)
    y = torch.sin(2 * X).squeeze(-1) + 0.1 * torch.randn(N, dtype=torch.float64)
    class SVGP(nn.Module):
        def __init__(self):
            super().__init__()
            self.Z = nn.Parameter(torch.linspace(-1.5, 1.5, M, dtype=torch.float64).unsqueeze(-1))
            self.q_mu = nn.Parameter(torch.zeros(M, dtype=torch.float64))
            self.q_sqrt_raw = nn.Parameter(torch.eye(M, dtype=torch.float64) * 0.5 + 0.01 * torch.randn(M, M, dtype=torch.float64))
            self.raw_ls = nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
            self.raw_noise = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))
        def K(self, a, b):
            ls = F.softplus(self.raw_ls)
            return torch.exp(-0.5 * torch.cdist(a / ls, b / ls).pow(2))
        def scale_tril(self):
            S = torch.tril(self.q_sqrt_raw, diagonal=-1)
            return S + torch.diag_embed(F.softplus(torch.diagonal(self.q_sqrt_raw, dim1=-2, dim2=-1)))
        def elbo(self, X, y):
            Kzz = self.K(self.Z, self.Z) + 1e-6 * torch.eye(M, dtype=X.dtype)
            Lz = torch.linalg.cholesky(Kzz)
            Kzx = self.K(self.Z, X)
            A = torch.linalg.solve_triangular(Lz, Kzx, upper=False)
            S = self.scale_tril()
            if whiten:
                mean = A.T @ self.q_mu
                SA = S.T @ A
                p = D.MultivariateNormal(torch.zeros(M, dtype=X.dtype), scale_tril=torch.eye(M, dtype=X.dtype))
            else:
                B = torch.linalg.solve_triangular(Lz.T, A, upper=True)
                mean = B.T @ self.q_mu
                SA = S.T @ B
                p = D.MultivariateNormal(torch.zeros(M, dtype=X.dtype), scale_tril=Lz)
            var = 1.0 - A.pow(2).sum(0) + SA.pow(2).sum(0)
            noise = F.softplus(self.raw_noise)
            ell = -0.5 * math.log(2 * math.pi) - 0.5 * noise.log() - 0.5 * ((y - mean) ** 2 + var) / noise
            q = D.MultivariateNormal(self.q_mu, scale_tril=S)
            kl = D.kl_divergence(q, p)
            # kl by hand
            if whiten:
                kl_hand = 0.5 * (S.pow(2).sum() + self.q_mu.pow(2).sum() - M - 2 * S.diagonal().log().sum())
            else:
                kl_hand = kl
            return ell.sum() - kl, kl, kl_hand
    model = SVGP()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    hist = []
    for _ in range(10):
        opt.zero_grad()
        e, kl, klh = model.elbo(X, y)
        (-e).backward()
        opt.step()
        hist.append((e.item(), kl.item(), klh.item()))
    return dict(hist=hist, grads={n: p.grad for n, p in model.named_parameters()})

def mvn_bits(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(6)
    A = torch.randn(4, 4, dtype=torch.float64)
    C = A @ A.T + torch.eye(4, dtype=torch.float64)
    mu = torch.randn(4, dtype=torch.float64, requires_grad=True)
    Cp = C.clone().requires_grad_()
    mvn = D.MultivariateNormal(mu, covariance_matrix=Cp)
    x = torch.randn(3, 4, dtype=torch.float64)
    lp = mvn.log_prob(x)
    g = torch.autograd.grad(lp.sum() + mvn.entropy(), [mu, Cp], retain_graph=True)
    mvn2 = D.MultivariateNormal(torch.zeros(4, dtype=torch.float64), precision_matrix=C)
    kl = D.kl_divergence(mvn, mvn2)
    gk = torch.autograd.grad(kl, [mu, Cp])
    b = D.MultivariateNormal(torch.zeros(2, 3, dtype=torch.float64), scale_tril=torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.manual_seed(1)
    s = b.rsample((2,))
    out = dict(lp=lp, g=g, kl=kl, gk=gk, s=s, st=mvn.scale_tril, prec=mvn2.covariance_matrix, var=mvn.variance,
               bs=tuple(b.batch_shape), es=tuple(b.event_shape), lpb=b.log_prob(s))
    try:
        D.MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64))
    except Exception as e:
        out['err'] = type(e).__name__ + str(e)[:80]
    lr = D.LowRankMultivariateNormal(torch.zeros(4, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    out['lr'] = (lr.log_prob(x), lr.entropy(), lr.covariance_matrix, D.kl_divergence(lr, mvn2))
    ind = D.Independent(D.Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)), 1)
    out['kl_ind'] = D.kl_divergence(mvn, D.MultivariateNormal(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)))
    return out

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

def cg_lanczos(m):
    torch = m.torch
    torch.manual_seed(9)
    n = 12
    X = torch.randn(n, 2, dtype=torch.float64)
    K = torch.exp(-0.5 * torch.cdist(X, X).pow(2)) + 0.1 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, 3, dtype=torch.float64)
    def cg(A, b, iters=30, tol=1e-10):
        x = torch.zeros_like(b)
        r = b - A @ x
        p = r.clone()
        rs = (r * r).sum(0, keepdim=True)
        for i in range(iters):
            Ap = A @ p
            alpha = rs / (p * Ap).sum(0, keepdim=True)
            x = x + alpha * p
            r = r - alpha * Ap
            rs_new = (r * r).sum(0, keepdim=True)
            if torch.all(rs_new.sqrt() < tol):
                break
            p = r + (rs_new / rs) * p
            rs = rs_new
        return x, i
    x, it = cg(K, b)
    def lanczos(A, v, k):
        n = A.shape[0]
        Qm = torch.zeros(n, k, dtype=A.dtype)
        alphas = torch.zeros(k, dtype=A.dtype); betas = torch.zeros(k - 1, dtype=A.dtype)
        q = v / v.norm()
        Qm[:, 0] = q
        beta = 0.0; q_prev = torch.zeros_like(q)
        for j in range(k):
            w = A @ q - beta * q_prev
            alpha = torch.dot(w, q)
            w = w - alpha * q
            w = w - Qm[:, :j + 1] @ (Qm[:, :j + 1].T @ w)  # full reorth
            alphas[j] = alpha
            if j < k - 1:
                beta = w.norm()
                betas[j] = beta
                q_prev = q; q = w / beta
                Qm[:, j + 1] = q
        T = torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)
        return Qm, T
    torch.manual_seed(10)
    zs = torch.randn(4, n, dtype=torch.float64).sign()
    quads = []
    for z in zs:
        Qm, T = lanczos(K, z, n)  # a full Lanczos run: the quadrature is exact, z^T log(K) z
        ev, evec = torch.linalg.eigh(T)
        quads.append(n * (evec[0] ** 2 * ev.log()).sum())
    quads = torch.stack(quads)
    Qm8, T8 = lanczos(K, zs[0], 8)
    exact = torch.logdet(K)
    # gradient through CG solution (autograd through the loop)
    Kp = K.clone().requires_grad_()
    xg, _ = cg(Kp, b, iters=5)
    g, = torch.autograd.grad(xg.sum(), Kp)
    return dict(x=x, it=it, direct=torch.linalg.solve(K, b), quads=quads, est=quads.mean(), exact=exact, g=g, K=K, zs=zs, Q8=Qm8, T8=T8)


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


def catch(f):
    try:
        r = f()
        return ('ok', r)
    except Exception as e:
        return (type(e).__name__.lstrip('_'), str(e).replace('torch.', '')[:200])  # (_LinAlgError; torch.Size)

def errors(m):
    torch = m.torch
    t = torch
    out = {}
    A = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)
    Ab = torch.stack([torch.eye(2, dtype=torch.float64), A, A])
    out['b'] = catch(lambda: torch.linalg.cholesky(Ab))
    out['b32'] = catch(lambda: torch.linalg.cholesky(Ab.float()))
    out['old'] = catch(lambda: torch.cholesky(torch.eye(2) * 2))
    out['oldu'] = catch(lambda: torch.cholesky(torch.eye(2) * 2, upper=True))
    out['ts'] = catch(lambda: tuple(torch.triangular_solve(torch.ones(2, 1), torch.eye(2) * 2, upper=False)))
    out['mixed_st'] = catch(lambda: torch.linalg.solve_triangular(torch.eye(2), torch.ones(2, 1, dtype=torch.float64), upper=False))
    out['mixed_cs'] = catch(lambda: torch.cholesky_solve(torch.ones(2, 1, dtype=torch.float64), torch.eye(2)))
    out['mixed_cd'] = catch(lambda: torch.cdist(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.float64)))
    out['cd_shape'] = catch(lambda: torch.cdist(torch.ones(2, 3), torch.ones(2, 4)))
    out['cd_1d'] = catch(lambda: torch.cdist(torch.ones(3), torch.ones(3)))
    out['cd_neg'] = catch(lambda: torch.cdist(torch.ones(2, 3), torch.ones(2, 3), p=-1))
    out['cd_int'] = catch(lambda: torch.cdist(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)))
    out['chol_int'] = catch(lambda: torch.linalg.cholesky(torch.eye(2, dtype=torch.long)))
    out['chol_rect'] = catch(lambda: torch.linalg.cholesky(torch.ones(2, 3)))
    out['st_1d'] = catch(lambda: torch.linalg.solve_triangular(torch.eye(2), torch.ones(2), upper=False))
    out['st_noupper'] = catch(lambda: torch.linalg.solve_triangular(torch.eye(2), torch.ones(2, 1)))[0]  # (Python's words)
    out['st_bcast'] = catch(lambda: torch.linalg.solve_triangular(torch.eye(2).expand(3, 2, 2) * 2, torch.ones(4, 1, 2, 1), upper=False).shape)
    out['st_sing'] = catch(lambda: torch.linalg.solve_triangular(torch.zeros(2, 2), torch.ones(2, 1), upper=False))
    out['cs_bcast'] = catch(lambda: torch.cholesky_solve(torch.ones(4, 1, 2, 1), torch.eye(2).expand(3, 2, 2) * 2).shape)
    out['cs_1d'] = catch(lambda: torch.cholesky_solve(torch.ones(2), torch.eye(2)))
    out['eigh_int'] = catch(lambda: torch.linalg.eigh(torch.eye(2, dtype=torch.long)))
    out['eigh_rect'] = catch(lambda: torch.linalg.eigh(torch.ones(2, 3)))
    out['eigh_uplo'] = catch(lambda: torch.linalg.eigh(torch.tensor([[1.0, 5.0], [0.0, 1.0]]), UPLO='U')[0])
    out['eigh_badup'] = catch(lambda: torch.linalg.eigh(torch.eye(2), UPLO='X'))
    out['slog_sing'] = catch(lambda: tuple(torch.linalg.slogdet(torch.zeros(2, 2))))
    out['logdet_neg'] = catch(lambda: torch.logdet(-torch.eye(3)))
    out['logdet_sing'] = catch(lambda: torch.logdet(torch.zeros(2, 2)))
    out['kron_dt'] = catch(lambda: str(torch.kron(torch.ones(2, dtype=torch.long), torch.ones(2)).dtype).split('.')[-1])
    out['chex_dt'] = catch(lambda: [str(x.dtype).split('.')[-1] for x in torch.linalg.cholesky_ex(torch.eye(2, dtype=torch.float64))])
    out['chex_err'] = catch(lambda: torch.linalg.cholesky_ex(-torch.eye(2), check_errors=True))
    out['inv_ex'] = catch(lambda: tuple(torch.linalg.inv_ex(torch.zeros(2, 2))[1:]))  # (its NaN/inf pattern is LAPACK's)
    out['inv_sing'] = catch(lambda: torch.linalg.inv(torch.zeros(2, 2)))
    out['solve_sing'] = catch(lambda: torch.linalg.solve(torch.zeros(3, 2, 2), torch.ones(3, 2)))
    out['mvn_bad'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]])))
    out['mvn_nosym'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])))
    out['mvn_tril_bad'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2), scale_tril=torch.tensor([[1.0, 0.5], [0.0, 1.0]])))
    out['mvn_none'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2)))
    out['mvn_two'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2), scale_tril=torch.eye(2)))
    out['mvn_shape'] = catch(lambda: tuple(torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(2)).event_shape))
    out['mvn_0d'] = catch(lambda: torch.distributions.MultivariateNormal(torch.tensor(0.0), torch.eye(2)).batch_shape)
    out['normal_neg'] = catch(lambda: torch.distributions.Normal(0.0, -1.0))
    out['normal_cdf_bad'] = catch(lambda: torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor([float('nan')])))
    out['normal_dt'] = catch(lambda: str(torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor(0.3, dtype=torch.float64)).dtype).split('.')[-1])
    out['normal_dt2'] = catch(lambda: str(torch.distributions.Normal(torch.tensor(0.0), 1.0).cdf(torch.tensor(0.3, dtype=torch.float64)).dtype).split('.')[-1])
    out['diag_embed'] = catch(lambda: torch.diag_embed(torch.ones(2, 3), offset=1, dim1=0, dim2=2).shape)
    out['tril_1d'] = catch(lambda: torch.tril(torch.ones(3)))
    return out

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


def grad_edges(m):
    torch = m.torch
    out = {}
    x = torch.tensor([-40.0, -10.0, -1.0, 0.0, 3.0, 10.0], dtype=torch.float64, requires_grad=True)
    for name, f in [('logndtr', torch.special.log_ndtr), ('ndtr', torch.special.ndtr), ('erfcx', torch.special.erfcx),
                    ('cdf', torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0).cdf),
                    ('lp', torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0).log_prob),
                    ('erfc', torch.erfc), ('logerfc', lambda t: torch.log(torch.erfc(-t / math.sqrt(2)) / 2))]:
        y = f(x)
        g, = torch.autograd.grad(y.sum(), x)
        out[name] = (y, g)
    # float32 log_ndtr
    x32 = torch.tensor([-5.0, 0.0, 5.0], requires_grad=True)  # (at -40 PyTorch's float32 gradient is 1.7e-5 off)
    y = torch.special.log_ndtr(x32)
    out['ln32'] = (y, torch.autograd.grad(y.sum(), x32)[0], str(y.dtype).split('.')[-1])
    # cdist p<1 and p=0 grads, zero distances
    X = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, -1.0]], dtype=torch.float64, requires_grad=True)
    for p in [0.0, 0.5, 1.0, 2.0, 3.0, float('inf')]:
        d = torch.cdist(X, X, p=p)
        out[f'cd{p}'] = (d, torch.autograd.grad(d.sum(), X)[0])
    # big cdist (mm path) with grad
    torch.manual_seed(0)
    A = torch.randn(30, 3, dtype=torch.float64, requires_grad=True)
    B = torch.randn(27, 3, dtype=torch.float64, requires_grad=True)
    d = torch.cdist(A, B)
    out['mm'] = (d, torch.autograd.grad((d * d.detach()).sum(), [A, B]))
    d = torch.cdist(A, A)
    out['mmself'] = torch.autograd.grad(d.exp().sum(), A)[0]
    # eigh degenerate gradient: inf / nan in PyTorch
    E = torch.eye(3, dtype=torch.float64, requires_grad=True)
    w, V = torch.linalg.eigh(E)
    out['eigh_deg_vals'] = torch.autograd.grad(w.sum(), E, retain_graph=True)[0]
    gV = torch.autograd.grad(V.sum(), E)[0]
    out['eigh_deg_vecs_finite'] = torch.isfinite(gV).all()
    # slogdet of negative det matrix
    M = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    s, l = torch.linalg.slogdet(M)
    out['slog'] = (s, l, torch.autograd.grad(l, M)[0])
    M2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    ld = torch.logdet(M2)
    out['logdet_neg'] = ld
    # cholesky backward with nonsymmetric grad usage
    P = torch.tensor([[4.0, 2.0, 0.6], [2.0, 2.0, 0.5], [0.6, 0.5, 3.0]], dtype=torch.float64, requires_grad=True)
    L = torch.linalg.cholesky(P)
    out['chol_g'] = torch.autograd.grad((L * torch.arange(9.0, dtype=torch.float64).reshape(3, 3)).sum(), P)[0]
    U = torch.linalg.cholesky(P, upper=True)
    out['chol_gu'] = torch.autograd.grad((U * torch.arange(9.0, dtype=torch.float64).reshape(3, 3)).sum(), P)[0]
    # second order through cholesky (Hessian of logdet)
    Pp = P.detach().clone().requires_grad_()
    L = torch.linalg.cholesky(Pp)
    g, = torch.autograd.grad(2 * L.diagonal().log().sum(), Pp, create_graph=True)
    out['hess'] = torch.autograd.grad(g[0, 1] + g[2, 2], Pp)[0]
    # solve_triangular double backward
    Lt = torch.linalg.cholesky(P.detach()).requires_grad_()
    b = torch.ones(3, 1, dtype=torch.float64, requires_grad=True)
    x = torch.linalg.solve_triangular(Lt, b, upper=False)
    gb, = torch.autograd.grad(x.pow(2).sum(), b, create_graph=True)
    out['st2'] = torch.autograd.grad(gb.sum(), [Lt, b])
    # cholesky_solve double backward
    b2 = b.detach().clone().requires_grad_()
    y = torch.cholesky_solve(b2, Lt)
    gb, = torch.autograd.grad((y ** 3).sum(), b2, create_graph=True)
    out['cs2'] = torch.autograd.grad(gb.sum(), [Lt, b2])
    return out

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


def inplace_jitter(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    X = torch.rand(6, 2, dtype=torch.float64)
    raw = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    noise = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    out = {}
    K = torch.exp(-0.5 * torch.cdist(X / F.softplus(raw), X / F.softplus(raw)) ** 2) * 1.0
    K.diagonal(dim1=-2, dim2=-1).add_(F.softplus(noise))
    K.diagonal().add_(1e-6)
    L = torch.empty(6, 6, dtype=torch.float64)
    info = torch.empty((), dtype=torch.int32)
    torch.linalg.cholesky_ex(K.detach(), out=(L, info))
    out['info_out'] = info
    L2 = torch.linalg.cholesky(K)
    Lo = torch.empty(6, 6, dtype=torch.float64)
    torch.linalg.cholesky(K.detach(), out=Lo)
    out['Lo'] = Lo
    y = torch.arange(6.0, dtype=torch.float64)[:, None]
    a = y.cholesky_solve(L2)
    sol = torch.empty(6, 1, dtype=torch.float64)
    torch.linalg.solve_triangular(L2.detach(), y, upper=False, out=sol)
    out['sol'] = sol
    loss = (y * a).sum() + 2 * L2.diagonal().log().sum()
    out['g'] = torch.autograd.grad(loss, [raw, noise])
    out['ver'] = K._version if hasattr(K, '_version') else None
    # batched kernels: (b, n, n) with batch of lengthscales
    ls = torch.tensor([[0.2], [0.5], [1.0]], dtype=torch.float64, requires_grad=True)
    Xb = X.unsqueeze(0) / ls.unsqueeze(-1)
    Kb = torch.exp(-0.5 * torch.cdist(Xb, Xb).pow(2)) + 1e-3 * torch.eye(6, dtype=torch.float64)
    Lb = torch.linalg.cholesky(Kb)
    ab = torch.cholesky_solve(y.expand(3, 6, 1), Lb)
    mll = -0.5 * (y * ab).sum((-1, -2)) - Lb.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    out['mll'] = mll
    out['gls'] = torch.autograd.grad(mll.sum(), ls)[0]
    # MVN with batch loc and shared scale_tril
    mvn = torch.distributions.MultivariateNormal(torch.zeros(3, 6, dtype=torch.float64), scale_tril=Lb[0].detach())
    out['mvn_lp'] = mvn.log_prob(torch.ones(2, 1, 6, dtype=torch.float64))
    out['mvn_bs'] = tuple(mvn.batch_shape)
    e = mvn.expand((4, 3))
    out['exp_bs'] = tuple(e.batch_shape)
    torch.manual_seed(1)
    out['rs'] = mvn.rsample(torch.Size([2]))
    return out

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


def pivoted_cholesky_precond(m, clone_perm=True):
    torch = m.torch
    torch.manual_seed(21)
    n, k = 15, 5
    X = torch.randn(n, 2, dtype=torch.float64)
    ls = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    K = torch.exp(-0.5 * torch.cdist(X, X).pow(2) / ls ** 2)
    def pivoted_cholesky(K, k):
        n = K.shape[-1]
        d = K.diagonal().clone()
        perm = torch.arange(n)
        L = torch.zeros(k, n, dtype=K.dtype)
        piv_list = []
        for i in range(k):
            pi = int(torch.argmax(d[perm[i:]])) + i
            if clone_perm:  # (the last step's perm[i + 1:] is a view of perm, which the swap writes)
                perm = perm.clone()
            perm[[i, pi]] = perm[[pi, i]]
            p = perm[i]
            piv_list.append(int(p))
            l = K[p, perm[i + 1:]] - (L[:i, p:p + 1] * L[:i, perm[i + 1:]]).sum(0) if i > 0 else K[p, perm[i + 1:]]
            Lp = d[p].sqrt()
            L = L.clone()
            L[i, p] = Lp
            L[i, perm[i + 1:]] = l / Lp
            d = d - torch.zeros_like(d).index_put((perm[i + 1:],), (l / Lp) ** 2)
            d[p] = 0.0
        return L.T, piv_list
    Lk, piv = pivoted_cholesky(K, k)
    approx = Lk @ Lk.T
    err = (K - approx).diagonal().sum()
    # Woodbury solve of (Lk Lk^T + s I) with the preconditioner
    s = 0.1
    b = torch.randn(n, 1, dtype=torch.float64)
    inner = torch.eye(k, dtype=torch.float64) + Lk.T @ Lk / s
    Li = torch.linalg.cholesky(inner)
    pinv_b = b / s - Lk @ torch.cholesky_solve(Lk.T @ b, Li) / s ** 2
    direct = torch.linalg.solve(approx + s * torch.eye(n, dtype=torch.float64), b)
    # logdet of preconditioner via matrix determinant lemma
    ld = 2 * Li.diagonal().log().sum() + n * math.log(s)
    g = torch.autograd.grad(err + ld + pinv_b.sum(), ls)
    return dict(piv=piv, err=err, pinv_b=pinv_b, direct=direct, ld=ld, ld2=torch.logdet(approx + s * torch.eye(n, dtype=torch.float64)), g=g)


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


def test_jitter_retries_and_cholesky_ex_info():
    ours, _ = run_both(jitter)
    assert int(ours["info0"]) == 7 and ours["info0_dt"] == "int32" and ours["tries"] == 1
    assert ours["infob"].tolist() == [7, 0, 1] and int(ours["info32"]) == 7
    assert ours["err"].startswith("linalg.cholesky: (Batch element 0): The factorization could not be completed")
    assert ours["err2"].startswith("linalg.cholesky_ex: (Batch element 0)")
    assert "leading minor of order 1" in ours["errnan"]
    assert np.allclose(ours["U"], np.triu(ours["U"]))


def test_kernel_gradients():
    ours, _ = run_both(kernel_grads, rtol=1e-6, atol=1e-8)
    assert np.isfinite(ours["self"]).all()  # the zero self-distances give gradient 0, not NaN
    rng_free = ours["sl"]
    assert float(rng_free[0]) == 1.0
    # d logdet / dA = A^-T: the slogdet, logdet and eigh (sum of log eigenvalues part) gradients agree
    np.testing.assert_allclose(ours["sl"][2], ours["ld"], rtol=1e-12)
    x, x2, x3, gL, gB = ours["st"]
    assert np.isfinite(gL).all() and np.isfinite(gB).all()


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


@pytest.mark.parametrize("whiten", [True, False])
def test_svgp(whiten):
    ours, _ = run_both(svgp, whiten, rtol=1e-6, atol=1e-8)
    hist = ours["hist"]
    assert hist[-1][0] > hist[0][0] + 20  # the ELBO rises
    assert all(kl >= 0 for _, kl, _ in hist)
    if whiten:  # kl_divergence agrees with the KL by hand
        np.testing.assert_allclose([h[1] for h in hist], [h[2] for h in hist], rtol=1e-10)


def test_multivariate_normal_pieces():
    ours, _ = run_both(mvn_bits, rtol=1e-6, atol=1e-8)
    assert ours["bs"] == (2,) and ours["es"] == (3,)
    assert ours["err"].startswith("ValueError") and float(ours["kl"]) > 0
    np.testing.assert_allclose(ours["kl_ind"], ours["kl_ind"])


def test_kronecker_gp():
    ours, _ = run_both(kron, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose([ours["nll"], ours["nll2"]], [ours["nll3"]] * 2, rtol=1e-10)
    np.testing.assert_allclose(ours["nll3"], 31.402527575535892, rtol=1e-9)
    assert (np.diff(ours["eigs"]) >= 0).all() and ours["kr"].shape == (2, 2, 6)


def test_conjugate_gradients_and_lanczos():
    ours, _ = run_both(cg_lanczos, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["x"], ours["direct"], rtol=1e-8, atol=1e-10)
    w, V = np.linalg.eigh(ours["K"])
    logK = (V * np.log(w)) @ V.T
    np.testing.assert_allclose(ours["quads"], np.einsum("bi,ij,bj->b", ours["zs"], logK, ours["zs"]), rtol=1e-8)
    np.testing.assert_allclose(ours["exact"], np.log(w).sum(), rtol=1e-12)
    Q8, T8 = ours["Q8"], ours["T8"]
    np.testing.assert_allclose(Q8.T @ Q8, np.eye(8), atol=1e-10)  # fully reorthogonalised
    np.testing.assert_allclose(Q8.T @ ours["K"] @ Q8, T8, atol=1e-10)


def test_icm_multitask_heteroscedastic():
    ours, _ = run_both(icm_het, rtol=1e-6, atol=1e-8)
    for nll, nll2, d2, d3 in ours["hist"]:
        np.testing.assert_allclose(nll, nll2, rtol=1e-10)  # by hand = MultivariateNormal's log_prob
        assert d2 == 0 and d3 == 0  # B[task][:, task] = index_select twice = kron(B, ones)
    assert ours["hist"][-1][0] < ours["hist"][0][0]


def test_spectral_mixture_deep_kernel_lbfgs():
    ours, _ = run_both(spectral_dkl, rtol=1e-5, atol=1e-7)
    assert ours["ls"][1] < ours["ls"][0] and ours["fe"] == 19 and ours["ni"] == 15


def test_thompson_sampling_random_features():
    ours, _ = run_both(rff_thompson, rtol=1e-6, atol=1e-8)
    assert int(ours["idx"]) == 35 and ours["dt"] == "float64" and ours["dt1"] == "float32"
    assert ours["cand"].shape == (64, 2) and ((ours["cand"] >= 0) & (ours["cand"] < 1)).all()
    assert ((ours["x"] >= 0) & (ours["x"] <= 1)).all()


def test_errors_of_gp_linear_algebra():
    ours, _ = run_both(errors)
    assert ours["b"][0] == "LinAlgError" and "(Batch element 1)" in ours["b"][1]
    assert ours["cs_1d"] == ("RuntimeError", "b should have at least 2 dimensions, but has 1 dimensions instead")
    assert ours["cd_1d"] == ("RuntimeError", "cdist only supports at least 2D tensors, X1 got: 1D")
    assert ours["cd_int"] == ("RuntimeError", "cdist only supports floating-point dtypes, X1 got: Long")
    assert ours["eigh_int"] == ("NotImplementedError", "\"linalg_eigh_cpu\" not implemented for 'Long'")
    assert ours["st_bcast"] == ("ok", (4, 3, 2, 1)) and ours["cs_bcast"] == ("ok", (4, 3, 2, 1))
    assert ours["chex_dt"] == ("ok", ["float64", "int32"])
    assert ours["chol_int"][1] == "linalg.cholesky: Expected a floating point or complex tensor as input. Got Long"
    assert ours["chol_rect"][1] == "linalg.cholesky: A must be batches of square matrices, but they are 2 by 3 matrices"
    assert ours["tril_1d"] == ("RuntimeError", "tril: input tensor must have at least 2 dimensions")


def test_botorch_default_float64():
    ours, _ = run_both(default_double)
    assert ours["dts"] == ["float64"] * 12 + ["int64", "complex128"] + ["float64"] * 5


def test_gradient_edges():
    ours, _ = run_both(grad_edges, rtol=1e-6, atol=1e-8)
    from scipy.special import log_ndtr
    x = np.array([-40.0, -10.0, -1.0, 0.0, 3.0, 10.0])
    np.testing.assert_allclose(ours["logndtr"][0], log_ndtr(x), rtol=1e-12)
    np.testing.assert_allclose(ours["logndtr"][1], np.exp(-x * x / 2 - log_ndtr(x)) / math.sqrt(2 * math.pi), rtol=1e-10)
    assert np.isfinite(ours["cd2.0"][1]).all()
    np.testing.assert_allclose(ours["eigh_deg_vals"], np.eye(3), atol=1e-12)
    s, l, g = ours["slog"]
    assert float(s) == -1.0 and abs(float(l)) < 1e-15 and np.isnan(ours["logdet_neg"])
    np.testing.assert_allclose(g, [[0, 1], [1, 0]], atol=1e-15)


def test_torch_func_marginal_likelihood():
    ours, _ = run_both(func_mll, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["h"], ours["hf"], rtol=1e-10)
    np.testing.assert_allclose(ours["h"], ours["h"].T, rtol=1e-10)
    np.testing.assert_allclose(ours["vg"][0], ours["g"], rtol=1e-12)
    np.testing.assert_allclose(ours["jf"], ours["g"], rtol=1e-8)


def test_in_place_jitter_out_and_batched_kernels():
    ours, _ = run_both(inplace_jitter, rtol=1e-6, atol=1e-8)
    assert int(ours["info_out"]) == 0 and ours["mvn_bs"] == (3,) and ours["exp_bs"] == (4, 3)
    np.testing.assert_allclose(np.tril(ours["Lo"]) @ ours["sol"], np.arange(6.0)[:, None], atol=1e-10)
    assert ours["mvn_lp"].shape == (2, 3) and ours["ver"] == 2  # two add_ through diagonal views
    assert np.isfinite(ours["gls"]).all() and ours["gls"].shape == (3, 1)


def test_qmc_normal_base_samples():
    ours, _ = run_both(qmc_sampler, rtol=1e-6, atol=1e-8)
    from scipy.special import erfinv, ndtri
    np.testing.assert_allclose(ours["z"], erfinv(2 * ours["u"] - 1) * math.sqrt(2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["icdf"], ndtri(ours["u"]), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours["again"], ours["u"][:4])  # reset() starts the sequence again
    assert ours["nd"] == 5 and ours["plain"][0].tolist() == [0.0, 0.0]
    y, g = ours["erfinv"]
    np.testing.assert_allclose(g, math.sqrt(math.pi) / 2 * np.exp(y ** 2), rtol=1e-10)


def test_parametrized_positive_and_interval_constraints():
    ours, _ = run_both(constraints, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["ls1"], [[0.5, 2.0]], rtol=1e-10)  # right_inverse then forward
    assert ours["names"] == ["parametrizations.lengthscale.original", "parametrizations.noise.original"]
    assert (ours["ls"] > 0).all() and 1e-4 < float(ours["nz"][0]) < 1.0
    np.testing.assert_allclose(ours["cached"], 2 * ours["ls"])


def test_pivoted_cholesky_preconditioner():
    ours, _ = run_both(pivoted_cholesky_precond, rtol=1e-6, atol=1e-8)
    assert ours["piv"] == [0, 6, 3, 1, 10]
    np.testing.assert_allclose(ours["ld"], ours["ld2"], rtol=1e-10)  # the matrix determinant lemma
    np.testing.assert_allclose(ours["pinv_b"], ours["direct"], rtol=1e-8, atol=1e-10)  # Woodbury


def test_pivoted_cholesky_writing_its_saved_permutation():
    """perm[i + 1:] indexes K and d and is then written by the next swap: PyTorch refuses the backward, as the
    indexing node saved it (ours read the index's shared array, a silently wrong gradient, before)."""
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        pivoted_cholesky_precond(OURS, clone_perm=False)
    from .pytorch_programs import pytorch
    if pytorch() is not None:
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            pivoted_cholesky_precond(pytorch(), clone_perm=False)
