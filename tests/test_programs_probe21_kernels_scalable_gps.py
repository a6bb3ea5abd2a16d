# ruff: noqa: B007, E501, E731, F841  (the programs are kept as their authors wrote them)
"""Kernel methods and Gaussian processes written by hand in PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and initial values, comparing values, gradients, dtypes and training
trajectories, and checked against NumPy by hand where the formula is short (so that each still asserts something
where PyTorch is not installed). Scalable GP numerics: GPyTorch's iterative numerics (preconditioned batched CG,
pivoted Cholesky, stochastic Lanczos quadrature, the inv-quad-logdet gradient estimator); KISS-GP by circulant
embedding and ``rfft``, a Kronecker multi-task GP solved by ``eigh`` of its factors, the Titsias bound, a graph
diffusion kernel by ``matrix_exp``, a spectral-mixture kernel from the periodogram; GPyTorch's InvQuadLogdet as a
custom ``autograd.Function`` (``needs_input_grad``, ``gradcheck``); a Nyström GP as a ``LowRankMultivariateNormal``
beside float32 ``torch.zeros`` means."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# A Nyström (subset-of-regressors) GP as a LowRankMultivariateNormal: K ~ C Kmm^-1 C^T + noise, the
# marginal likelihood by its log_prob, landmarks learnt by Adam, the KL to the exact GP's
# MultivariateNormal; the data are float64 (from NumPy) while the mean is torch.zeros(n), float32
# ----------------------------------------------------------------------------------------------


def nystrom_gp(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    D = torch.distributions
    rng = np.random.default_rng(9)
    X = torch.from_numpy(rng.uniform(-3, 3, (50, 1)))
    y = torch.sin(2 * X[:, 0]) + 0.1 * torch.from_numpy(rng.standard_normal(50))
    Z = nn.Parameter(torch.linspace(-2.5, 2.5, 6, dtype=torch.float64)[:, None])
    log_ls = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    log_noise = nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))
    opt = optim.Adam([Z, log_ls, log_noise], lr=0.05)

    def k(a, b):
        return torch.exp(-0.5 * torch.cdist(a, b).pow(2) / log_ls.exp().pow(2))

    def marginal():
        Kmm = k(Z, Z) + 1e-6 * torch.eye(len(Z), dtype=torch.float64)
        Lm = torch.linalg.cholesky(Kmm)
        W = torch.linalg.solve_triangular(Lm, k(Z, X), upper=False).T  # C Lm^-T: K ~ W W^T
        return D.LowRankMultivariateNormal(torch.zeros(len(X)), W, log_noise.exp().expand(len(X)))

    losses = []
    for step in range(20):
        opt.zero_grad()
        loss = -marginal().log_prob(y) / len(X)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    q = marginal()
    exact = D.MultivariateNormal(torch.zeros(len(X)), covariance_matrix=k(X, X) + log_noise.exp() * torch.eye(len(X)))
    kl_to_exact = D.kl_divergence(q, exact)
    # (the other way round PyTorch's matmul refuses the float32 mean difference, so both means are float64 there)
    q64 = D.LowRankMultivariateNormal(q.loc.double(), q.cov_factor, q.cov_diag)
    kl_from_exact = D.kl_divergence(exact, q64)
    grads = torch.autograd.grad(kl_to_exact + kl_from_exact, [Z, log_ls, log_noise])
    return {"losses": losses, "Z": Z.detach(), "kl": [kl_to_exact, kl_from_exact], "grads": grads,
            "dtypes": [str(t.dtype).split(".")[-1] for t in (q.loc, q.log_prob(y), kl_to_exact)]}


def test_nystrom_gp_as_a_low_rank_gaussian():
    ours, _ = run_both(nystrom_gp, rtol=1e-6, atol=1e-8)
    assert ours["dtypes"] == ["float32", "float64", "float64"]
    assert ours["losses"][-1] < ours["losses"][0] and min(ours["kl"]) > 0


def test_low_rank_gaussian_kl_to_a_full_one_promotes_dtypes(T):
    """KL(LowRankMultivariateNormal || MultivariateNormal) with a float32 loc beside float64 factors: PyTorch's
    triangular solve promotes the float32 mean difference (chainrule's refused it, as linalg.solve does)."""
    D = T.distributions
    W = T.tensor([[1.0, 0.0], [0.5, 1.0], [0.0, 2.0]], dtype=T.float64, requires_grad=True)
    diag = T.tensor([0.3, 0.2, 0.5], dtype=T.float64)
    p = D.LowRankMultivariateNormal(T.zeros(3), W, diag)
    q = D.MultivariateNormal(T.ones(3), scale_tril=T.tensor([[1.0, 0, 0], [0.2, 1.5, 0], [0.1, 0.3, 0.9]],
                                                               dtype=T.float64))
    kl = D.kl_divergence(p, q)
    kl.backward()
    Sp = W.detach().numpy() @ W.detach().numpy().T + np.diag(diag.numpy())
    Sq = np.array([[1.0, 0, 0], [0.2, 1.5, 0], [0.1, 0.3, 0.9]])
    Sq = Sq @ Sq.T
    mu = np.ones(3)
    expected = 0.5 * (np.trace(np.linalg.solve(Sq, Sp)) + mu @ np.linalg.solve(Sq, mu) - 3
                      + np.linalg.slogdet(Sq)[1] - np.linalg.slogdet(Sp)[1])
    assert kl.dtype == T.float64 and kl.item() == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(W.grad.numpy(), (np.linalg.inv(Sq) - np.linalg.inv(Sp)) @ W.detach().numpy(),
                               rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# GPyTorch's iterative numerics written out: batched preconditioned conjugate gradients (masks by
# torch.where once a column converged), a pivoted-Cholesky preconditioner (argmax pivots, index
# writes, the Woodbury solve), and stochastic Lanczos quadrature for log|K| (Rademacher probes from
# a seeded Generator, the tridiagonal's eigh); the marginal likelihood's gradient by the
# "inv_quad + logdet" estimator, K^-1 y and the probes' solves shared, against the exact one
# ----------------------------------------------------------------------------------------------


def iterative_gp(m, n=80, probes=16, lanczos_steps=25):
    torch = m.torch
    rng = np.random.default_rng(11)
    X = torch.from_numpy(rng.uniform(-4, 4, (n, 1)))
    y = torch.from_numpy(np.sin(X[:, 0].numpy()) + 0.1 * rng.standard_normal(n))
    log_ls = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    log_noise = torch.tensor(-2.5, dtype=torch.float64, requires_grad=True)

    def kernel():
        K = torch.exp(-0.5 * (X - X.T) ** 2 / log_ls.exp() ** 2)
        return K + log_noise.exp() * torch.eye(n, dtype=K.dtype)

    def pivoted_cholesky(matrix, rank):
        diag = matrix.diagonal().clone()
        perm = torch.arange(n)
        L = torch.zeros(rank, n, dtype=matrix.dtype)
        for k in range(rank):
            pivot = int(torch.argmax(diag[perm[k:]])) + k
            perm[[k, pivot]] = perm[[pivot, k]]
            i = perm[k]
            row = matrix[i, perm[k + 1:]] - L[:k, i] @ L[:k, perm[k + 1:]]
            L[k, i] = diag[i].sqrt()
            L[k, perm[k + 1:]] = row / L[k, i]
            diag[perm[k + 1:]] -= L[k, perm[k + 1:]] ** 2
        return L.T  # (n, rank): K ~ L L^T

    def preconditioner(Lp, sigma2):
        # (L L^T + s I)^-1 r = (r - L (s I + L^T L)^-1 L^T r) / s
        cap = torch.linalg.cholesky(sigma2 * torch.eye(Lp.shape[1], dtype=Lp.dtype) + Lp.T @ Lp)
        return lambda r: (r - Lp @ torch.cholesky_solve(Lp.T @ r, cap)) / sigma2

    def batched_cg(matmul, rhs, precond, max_iter=200, tol=1e-10):
        x = torch.zeros_like(rhs)
        r = rhs - matmul(x)
        z = precond(r)
        p = z.clone()
        rz = (r * z).sum(0, keepdim=True)
        iters = 0
        for it in range(max_iter):
            Ap = matmul(p)
            alpha = rz / (p * Ap).sum(0, keepdim=True)
            x = x + alpha * p
            r = r - alpha * Ap
            done = r.norm(dim=0, keepdim=True) < tol * rhs.norm(dim=0, keepdim=True)
            iters += 1
            if bool(done.all()):
                break
            z = precond(r)
            rz_new = (r * z).sum(0, keepdim=True)
            beta = torch.where(done, torch.zeros_like(rz_new), rz_new / rz)
            p = torch.where(done, p, z + beta * p)
            rz = rz_new
        return x, iters

    def lanczos_logdet(matmul, probes_mat, steps):
        total = 0.0
        for j in range(probes_mat.shape[1]):
            z = probes_mat[:, j]
            q = z / z.norm()
            q_prev = torch.zeros_like(q)
            alphas, betas = [], []
            beta = torch.tensor(0.0, dtype=z.dtype)
            Q = [q]
            for k in range(steps):
                w = matmul(q[:, None])[:, 0] - beta * q_prev
                a = w @ q
                w = w - a * q
                W = torch.stack(Q, 1)
                w = w - W @ (W.T @ w)  # full reorthogonalisation
                alphas.append(a)
                beta = w.norm()
                if k < steps - 1:
                    betas.append(beta)
                q_prev, q = q, w / beta
                Q.append(q)
            T = torch.diag(torch.stack(alphas)) + torch.diag(torch.stack(betas), 1) + torch.diag(torch.stack(betas), -1)
            evals, evecs = torch.linalg.eigh(T)
            total = total + z.norm() ** 2 * (evecs[0] ** 2 * evals.log()).sum()
        return total / probes_mat.shape[1]

    with torch.no_grad():
        K = kernel()
        Lp = pivoted_cholesky(K - log_noise.exp() * torch.eye(n, dtype=K.dtype), 10)
        precond = preconditioner(Lp, log_noise.exp())
        g = torch.Generator().manual_seed(0)
        Z = torch.randint(0, 2, (n, probes), generator=g).to(torch.float64) * 2 - 1
        rhs = torch.cat([y[:, None], Z], 1)
        solves, iters = batched_cg(lambda v: K @ v, rhs, precond)
        _, iters_plain = batched_cg(lambda v: K @ v, rhs, lambda r: r.clone())
        logdet_slq = lanczos_logdet(lambda v: K @ v, Z, lanczos_steps)
        logdet_exact = torch.logdet(K)
        pc_err = torch.linalg.matrix_norm(K - log_noise.exp() * torch.eye(n, dtype=K.dtype) - Lp @ Lp.T)
    # the surrogate whose gradient is the marginal likelihood's (GPyTorch's InvQuadLogdet backward):
    # d/dθ [½ yᵀK⁻¹y + ½ log|K|] = -½ αᵀ dK α + ½ mean_j (K⁻¹z_j)ᵀ dK z_j
    K = kernel()
    alpha, Kinv_Z = solves[:, :1], solves[:, 1:]
    surrogate = -0.5 * (alpha * (K @ alpha)).sum() + 0.5 * (Kinv_Z * (K @ Z)).sum() / probes
    grad_est = torch.autograd.grad(surrogate, [log_ls, log_noise])
    Kx = kernel()
    L = torch.linalg.cholesky(Kx)
    exact_nll = 0.5 * y @ torch.cholesky_solve(y[:, None], L)[:, 0] + torch.log(L.diagonal()).sum()
    grad_exact = torch.autograd.grad(exact_nll, [log_ls, log_noise])
    return {"alpha": alpha, "iters": [iters, iters_plain], "logdet": [logdet_slq, logdet_exact], "pc_err": pc_err,
            "grad_est": grad_est, "grad_exact": grad_exact, "Lp": Lp}


def test_iterative_gp_numerics():
    ours, _ = run_both(iterative_gp, rtol=1e-6, atol=1e-7)
    assert ours["iters"][0] < ours["iters"][1]  # the preconditioner helps
    slq, exact = ours["logdet"]
    assert abs(slq - exact) < 0.1 * abs(exact)
    np.testing.assert_allclose(ours["grad_est"], ours["grad_exact"], rtol=0.3)
    rng = np.random.default_rng(11)
    X = rng.uniform(-4, 4, (80, 1))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(80)
    K = np.exp(-0.5 * (X - X.T) ** 2 / np.exp(0.6)) + np.exp(-2.5) * np.eye(80)
    np.testing.assert_allclose(ours["alpha"][:, 0], np.linalg.solve(K, y), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Structured kernels: KISS-GP (cubic interpolation onto a regular grid, a Toeplitz grid kernel
# multiplied by circulant embedding through rfft/irfft), a multi-task GP whose Kronecker covariance
# is solved through the eigendecompositions of its factors, the Titsias (VFE) collapsed bound,
# a diffusion kernel on a graph by matrix_exp, a spectral-mixture kernel initialised from the
# data's periodogram; all in float64 with their gradients
# ----------------------------------------------------------------------------------------------


def structured_kernels(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(12)
    out = {}

    # KISS-GP: W K_grid W^T v with cubic convolution weights (Keys, a = -0.5) on a 1-d grid
    x = torch.from_numpy(np.sort(rng.uniform(0.1, 0.9, 30)))
    v = torch.from_numpy(rng.standard_normal(30))
    log_ls = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    G = 64
    grid = torch.linspace(0, 1, G, dtype=torch.float64)
    h = grid[1] - grid[0]

    def cubic(s):
        s = s.abs()
        return torch.where(s <= 1, 1.5 * s ** 3 - 2.5 * s ** 2 + 1,
                           torch.where(s < 2, -0.5 * s ** 3 + 2.5 * s ** 2 - 4 * s + 2, torch.zeros_like(s)))

    left = torch.floor((x - grid[0]) / h).long()
    idx = (left[:, None] + torch.arange(-1, 3)[None, :]).clamp(0, G - 1)  # (n, 4)
    w = cubic((x[:, None] - grid[idx]) / h)
    W = torch.zeros(30, G, dtype=torch.float64).scatter_add_(1, idx, w)
    col = torch.exp(-0.5 * (grid - grid[0]) ** 2 / log_ls.exp() ** 2)  # the first column of the Toeplitz K_grid
    circ = torch.cat([col, col[1:-1].flip(0)])  # circulant embedding, length 2G - 2

    def toeplitz_mv(u):
        padded = torch.cat([u, torch.zeros(G - 2, dtype=u.dtype)])
        return torch.fft.irfft(torch.fft.rfft(circ) * torch.fft.rfft(padded), n=2 * G - 2)[:G]

    ski = W @ toeplitz_mv(W.T @ v)
    dense = W @ (torch.exp(-0.5 * (grid[:, None] - grid[None]) ** 2 / log_ls.exp() ** 2) @ (W.T @ v))
    exact = torch.exp(-0.5 * (x[:, None] - x[None]) ** 2 / log_ls.exp() ** 2) @ v
    out["ski_grad"] = torch.autograd.grad(ski.pow(2).sum(), log_ls)[0]
    out["ski"], out["ski_dense_gap"], out["ski_exact_gap"] = ski.detach(), (ski - dense).abs().max().detach(), \
        (ski - exact).abs().max().detach()

    # multi-task (ICM): K = B ⊗ Kx + s I solved by eigh(B), eigh(Kx)
    T_, n = 3, 12
    X = torch.from_numpy(rng.uniform(-2, 2, (n, 1)))
    Y = torch.from_numpy(rng.standard_normal((T_, n)))
    Wt = torch.from_numpy(rng.standard_normal((T_, 2))).requires_grad_(True)
    log_kappa = torch.zeros(T_, dtype=torch.float64, requires_grad=True)
    log_s = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    B = Wt @ Wt.T + torch.diag(log_kappa.exp())
    Kx = torch.exp(-0.5 * torch.cdist(X, X) ** 2)
    eb, Qb = torch.linalg.eigh(B)
    ex, Qx = torch.linalg.eigh(Kx)
    lam = (eb[:, None] * ex[None, :]) + log_s.exp()  # eigenvalues of B ⊗ Kx + sI as (T, n)
    Yt = Qb.T @ Y @ Qx  # (Q_b ⊗ Q_x)^T vec(Y)
    alpha = Qb @ (Yt / lam) @ Qx.T
    nll_kron = 0.5 * (Y * alpha).sum() + 0.5 * lam.log().sum()
    K_full = torch.kron(B, Kx) + log_s.exp() * torch.eye(T_ * n, dtype=torch.float64)
    L = torch.linalg.cholesky(K_full)
    y_vec = Y.reshape(-1)
    nll_dense = 0.5 * y_vec @ torch.cholesky_solve(y_vec[:, None], L)[:, 0] + L.diagonal().log().sum()
    g_kron = torch.autograd.grad(nll_kron, [Wt, log_kappa, log_s], retain_graph=True)  # (B is shared)
    g_dense = torch.autograd.grad(nll_dense, [Wt, log_kappa, log_s])
    out["kron"] = [nll_kron.detach(), nll_dense.detach(), *g_kron, *g_dense]

    # Titsias's collapsed bound: log N(y | 0, Qnn + s I) - tr(Knn - Qnn) / (2 s)
    Xn = torch.from_numpy(rng.uniform(-3, 3, (40, 1)))
    yn = torch.sin(Xn[:, 0]) + 0.1 * torch.from_numpy(rng.standard_normal(40))
    Z = torch.linspace(-2.5, 2.5, 7, dtype=torch.float64)[:, None].requires_grad_(True)
    s2 = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    k = lambda a, b: torch.exp(-0.5 * torch.cdist(a, b) ** 2)
    Kmm = k(Z, Z) + 1e-6 * torch.eye(7, dtype=torch.float64)
    Lm = torch.linalg.cholesky(Kmm)
    A = torch.linalg.solve_triangular(Lm, k(Z, Xn), upper=False) / s2.sqrt()
    LB = torch.linalg.cholesky(A @ A.T + torch.eye(7, dtype=torch.float64))
    c = torch.linalg.solve_triangular(LB, A @ yn[:, None], upper=False) / s2.sqrt()
    bound = (-0.5 * 40 * math.log(2 * math.pi) - LB.diagonal().log().sum() - 0.5 * 40 * s2.log()
             - 0.5 * (yn @ yn) / s2 + 0.5 * (c ** 2).sum() - 0.5 * (40 - (A ** 2).sum() * s2) / s2)
    out["vfe"] = [bound.detach(), *torch.autograd.grad(bound, [Z, s2])]

    # a diffusion kernel on a ring-with-chords graph: K = expm(-beta L)
    Adj = torch.zeros(10, 10, dtype=torch.float64)
    i = torch.arange(10)
    Adj[i, (i + 1) % 10] = 1.0
    Adj[(i + 1) % 10, i] = 1.0
    Adj[0, 5] = Adj[5, 0] = 1.0
    Lap = torch.diag(Adj.sum(1)) - Adj
    beta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    Kg = torch.linalg.matrix_exp(-beta * Lap)
    evals, evecs = torch.linalg.eigh(Lap)
    Kg_eig = evecs @ torch.diag(torch.exp(-beta * evals)) @ evecs.T
    yg = torch.from_numpy(rng.standard_normal(10))
    nll_g = 0.5 * yg @ torch.linalg.solve(Kg + 0.1 * torch.eye(10, dtype=torch.float64), yg) + \
        0.5 * torch.logdet(Kg + 0.1 * torch.eye(10, dtype=torch.float64))
    out["graph"] = [Kg.detach(), (Kg - Kg_eig).abs().max().detach(), nll_g.detach(), torch.autograd.grad(nll_g, beta)[0]]

    # spectral mixture (Wilson & Adams), weights/means/scales from the periodogram's peaks
    t = torch.linspace(0, 10, 80, dtype=torch.float64)
    series = torch.sin(2 * math.pi * 0.8 * t) + 0.5 * torch.cos(2 * math.pi * 2.1 * t)
    power = torch.fft.rfft(series - series.mean()).abs() ** 2
    freqs = torch.fft.rfftfreq(80, d=(t[1] - t[0]).item())
    top = torch.topk(power[1:], 2).indices + 1
    mu = nn.Parameter(freqs[top].clone())
    log_w = nn.Parameter(torch.log(power[top] / power[top].sum()))
    log_v = nn.Parameter(torch.full((2,), -3.0, dtype=torch.float64))
    tau = t[:, None] - t[None, :]
    Ksm = (log_w.exp()[:, None, None] * torch.exp(-2 * math.pi ** 2 * tau ** 2 * log_v.exp()[:, None, None])
           * torch.cos(2 * math.pi * tau * mu[:, None, None])).sum(0)
    Lsm = torch.linalg.cholesky(Ksm + 0.01 * torch.eye(80, dtype=torch.float64))
    nll_sm = 0.5 * (torch.cholesky_solve(series[:, None], Lsm) * series[:, None]).sum() + Lsm.diagonal().log().sum()
    out["sm"] = [freqs[top], nll_sm.detach(), *torch.autograd.grad(nll_sm, [mu, log_w, log_v])]
    return out


def test_structured_kernels():
    ours, _ = run_both(structured_kernels, rtol=1e-7, atol=1e-9)
    assert ours["ski_dense_gap"] < 1e-10  # the FFT product is the Toeplitz one
    assert ours["ski_exact_gap"] < 0.05  # and interpolation is close to the exact kernel
    kron = ours["kron"]
    assert kron[0] == pytest.approx(kron[1], rel=1e-10)
    for a, b in zip(kron[2:5], kron[5:]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    assert ours["graph"][1] < 1e-10
    np.testing.assert_allclose(sorted(ours["sm"][0]), [0.8, 2.1], atol=0.07)


# ----------------------------------------------------------------------------------------------
# GPyTorch's InvQuadLogdet as a custom autograd.Function: the forward solves and factors outside
# the graph, saves K^-1 y and the Cholesky factor, and the backward returns the closed-form
# gradients (-½ αα^T + ½ K^-1 for the matrix, α for the right-hand side) only where
# ctx.needs_input_grad asks; batched inputs, gradcheck in float64, training against the plain graph
# ----------------------------------------------------------------------------------------------


def inv_quad_logdet_function(m):
    torch, nn, optim = m.torch, m.nn, m.optim

    class InvQuadLogdet(torch.autograd.Function):
        @staticmethod
        def forward(ctx, matrix, rhs):
            L = torch.linalg.cholesky(matrix)
            alpha = torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)
            inv_quad = (rhs * alpha).sum(-1)
            logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            ctx.save_for_backward(L, alpha)
            return inv_quad, logdet

        @staticmethod
        def backward(ctx, grad_inv_quad, grad_logdet):
            L, alpha = ctx.saved_tensors
            grad_matrix = grad_rhs = None
            if ctx.needs_input_grad[0]:
                K_inv = torch.cholesky_inverse(L)
                grad_matrix = (-grad_inv_quad[..., None, None] * alpha.unsqueeze(-1) * alpha.unsqueeze(-2)
                               + grad_logdet[..., None, None] * K_inv)
            if ctx.needs_input_grad[1]:
                grad_rhs = 2 * grad_inv_quad.unsqueeze(-1) * alpha
            return grad_matrix, grad_rhs

    rng = np.random.default_rng(15)
    X = torch.from_numpy(rng.uniform(-2, 2, (2, 15, 1)))  # two independent problems
    Y = torch.from_numpy(rng.standard_normal((2, 15)))
    log_ls = nn.Parameter(torch.zeros(2, 1, 1, dtype=torch.float64))
    log_noise = nn.Parameter(torch.full((2, 1, 1), -1.0, dtype=torch.float64))

    def kernel():
        return torch.exp(-0.5 * torch.cdist(X, X) ** 2 / log_ls.exp() ** 2) + log_noise.exp() * torch.eye(15, dtype=torch.float64)

    def by_function():
        inv_quad, logdet = InvQuadLogdet.apply(kernel(), Y)
        return 0.5 * (inv_quad + logdet).sum()

    def by_graph():
        L = torch.linalg.cholesky(kernel())
        alpha = torch.cholesky_solve(Y.unsqueeze(-1), L).squeeze(-1)
        return 0.5 * ((Y * alpha).sum() + 2 * L.diagonal(dim1=-2, dim2=-1).log().sum())

    g_fn = torch.autograd.grad(by_function(), [log_ls, log_noise])
    g_graph = torch.autograd.grad(by_graph(), [log_ls, log_noise])
    K = kernel().detach()
    A = (K + K.mT) / 2
    ok = torch.autograd.gradcheck(lambda a, y: InvQuadLogdet.apply((a + a.mT) / 2, y),
                                  (A.clone().requires_grad_(True), Y.clone().requires_grad_(True)))
    only_rhs = InvQuadLogdet.apply(K, Y.clone().requires_grad_(True))[0].sum()
    opt = optim.Adam([log_ls, log_noise], lr=0.1)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = by_function()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"g_fn": g_fn, "g_graph": g_graph, "gradcheck": ok, "losses": losses,
            "only_rhs_requires_grad": only_rhs.requires_grad, "hyper": [log_ls.detach(), log_noise.detach()]}


def test_inv_quad_logdet_custom_function():
    ours, _ = run_both(inv_quad_logdet_function, rtol=1e-9, atol=1e-11)
    for a, b in zip(ours["g_fn"], ours["g_graph"]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert ours["gradcheck"] and ours["only_rhs_requires_grad"]
    assert ours["losses"][-1] < ours["losses"][0]
