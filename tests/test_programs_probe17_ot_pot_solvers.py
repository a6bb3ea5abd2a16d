# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Optimal-transport programs, run as tests/probe17_ot_common.py says. POT's torch-backend solvers as POT writes
them: ``sinkhorn_knopp`` (plain domain, marginal error by ``torch.norm`` every 10 iterations), ``sinkhorn_log``
(``torch.logsumexp`` of ``-M/reg`` plus log-weights), ``sinkhorn_stabilized`` with epsilon scaling (absorbing the
scalings into the potentials), unbalanced OT with KL marginals (the exponent ``reg_m / (reg_m + reg)``), entropic
Gromov-Wasserstein by projected gradient (``constC``, ``hC1``, ``hC2``), the Bregman-projection barycenter (a
weighted geometric mean by ``exp(log(.) @ w)``) and ``wasserstein_1d`` (quantile functions by ``cumsum``,
``searchsorted`` and ``take_along_dim``); POT's ``set_gradients`` (a custom Function returning its input, the
envelope gradients) and ``ot.dist`` (``torch.maximum`` with 0 at exact ties)."""

import numpy as np
import pytest

from .probe17_ot_common import clouds, sqdist_np
from .pytorch_programs import run_both


def sinkhorn_np(a, b, M, reg, iters=2000):
    K = np.exp(-M / reg)
    u = np.ones_like(a)
    for _ in range(iters):
        v = b / (K.T @ u)
        u = a / (K @ v)
    return u[:, None] * K * v[None, :]


# ----------------------------------------------------------------------------------------------
# POT: sinkhorn_knopp and sinkhorn_log (ot/bregman/_sinkhorn.py, torch backend)
# ----------------------------------------------------------------------------------------------


def pot_sinkhorn(m, reg=0.5, numItermax=1000, stopThr=1e-9):
    torch = m.torch
    x, y, a, b = (torch.tensor(v) for v in clouds())
    x.requires_grad_(True)
    a.requires_grad_(True)

    def sinkhorn_knopp(a, b, M, reg, numItermax=1000, stopThr=1e-9):
        dim_a, dim_b = M.shape
        u = torch.ones(dim_a, dtype=M.dtype) / dim_a
        v = torch.ones(dim_b, dtype=M.dtype) / dim_b
        K = torch.exp(M / (-reg))
        Kp = (1 / a).reshape(-1, 1) * K
        err = 1
        for ii in range(numItermax):
            uprev = u
            vprev = v
            KtransposeU = K.T @ u
            v = b / KtransposeU
            u = 1.0 / (Kp @ v)
            if (torch.any(KtransposeU == 0) or torch.any(torch.isnan(u)) or torch.any(torch.isnan(v))
                    or torch.any(torch.isinf(u)) or torch.any(torch.isinf(v))):
                u = uprev
                v = vprev
                break
            if ii % 10 == 0:
                tmp2 = torch.einsum("i,ij,j->j", u, K, v)
                err = torch.norm(tmp2 - b)
                if err < stopThr:
                    break
        return u.reshape((-1, 1)) * K * v.reshape((1, -1)), ii

    def sinkhorn_log(a, b, M, reg, numItermax=1000, stopThr=1e-9):
        dim_a, dim_b = M.shape
        Mr = -M / reg
        u = torch.zeros(dim_a, dtype=M.dtype)
        v = torch.zeros(dim_b, dtype=M.dtype)

        def get_logT(u, v):
            return Mr + u[:, None] + v[None, :]

        loga = torch.log(a)
        logb = torch.log(b)
        err = 1
        for ii in range(numItermax):
            v = logb - torch.logsumexp(Mr + u[:, None], 0)
            u = loga - torch.logsumexp(Mr + v[None, :], 1)
            if ii % 10 == 0:
                tmp2 = torch.sum(torch.exp(get_logT(u, v)), 0)
                err = torch.norm(tmp2 - b)
                if err < stopThr:
                    break
        return torch.exp(get_logT(u, v)), ii

    M = torch.cdist(x, y) ** 2
    G, it_plain = sinkhorn_knopp(a, b, M, reg, numItermax, stopThr)
    G_log, it_log = sinkhorn_log(a, b, M, reg, numItermax, stopThr)
    cost = torch.sum(G * M)
    cost_log = torch.sum(G_log * M)
    gx, ga = torch.autograd.grad(cost, [x, a], retain_graph=True)
    gx_log, ga_log = torch.autograd.grad(cost_log, [x, a])
    return {"G": G, "G_log": G_log, "cost": cost, "cost_log": cost_log, "gx": gx, "ga": ga, "gx_log": gx_log,
            "ga_log": ga_log, "iterations": (it_plain, it_log)}


def test_pot_sinkhorn_plain_and_log():
    ours, _ = run_both(pot_sinkhorn, rtol=1e-7, atol=1e-10)
    x, y, a, b = clouds()
    G = sinkhorn_np(a, b, sqdist_np(x, y), 0.5)
    np.testing.assert_allclose(ours["G"], G, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ours["G_log"], G, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ours["gx"], ours["gx_log"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ours["ga"], ours["ga_log"], rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# POT: sinkhorn_stabilized with epsilon scaling (absorption of large scalings into alpha, beta)
# ----------------------------------------------------------------------------------------------


def pot_epsilon_scaling(m, reg=0.05, tau=1e2, numItermax=400, epsilon0=1e2, numInnerItermax=50):
    torch = m.torch
    x, y, a, b = (torch.tensor(v) for v in clouds(seed=1))
    M = torch.cdist(x, y, p=2) ** 2
    M = M / M.max()
    dim_a, dim_b = M.shape

    def get_K(alpha, beta, reg):
        return torch.exp(-(M - alpha.reshape((dim_a, 1)) - beta.reshape((1, dim_b))) / reg)

    def get_Gamma(alpha, beta, u, v, reg):
        return torch.exp(-(M - alpha.reshape((dim_a, 1)) - beta.reshape((1, dim_b))) / reg
                         + torch.log(u.reshape((dim_a, 1))) + torch.log(v.reshape((1, dim_b))))

    def sinkhorn_stabilized(a, b, reg, warmstart, numItermax=50):
        alpha, beta = warmstart
        u = torch.ones(dim_a, dtype=M.dtype) / dim_a
        v = torch.ones(dim_b, dtype=M.dtype) / dim_b
        K = get_K(alpha, beta, reg)
        transp = K
        for ii in range(numItermax):
            uprev, vprev = u, v
            v = b / (K.T @ u)
            u = a / (K @ v)
            if torch.abs(u).max() > tau or torch.abs(v).max() > tau:
                alpha, beta = alpha + reg * torch.log(u), beta + reg * torch.log(v)
                u = torch.ones(dim_a, dtype=M.dtype) / dim_a
                v = torch.ones(dim_b, dtype=M.dtype) / dim_b
                K = get_K(alpha, beta, reg)
        return get_Gamma(alpha, beta, u, v, reg), (alpha + reg * torch.log(u), beta + reg * torch.log(v))

    def get_reg(n):
        return (epsilon0 - reg) * np.exp(-n) + reg

    alpha = torch.zeros(dim_a, dtype=M.dtype)
    beta = torch.zeros(dim_b, dtype=M.dtype)
    regs = []
    for ii in range(8):
        regi = get_reg(ii)
        G, (alpha, beta) = sinkhorn_stabilized(a, b, regi, (alpha, beta), numInnerItermax)
        regs.append(regi)
    return {"G": G, "alpha": alpha, "beta": beta, "M": M, "regs": regs}


def test_pot_sinkhorn_epsilon_scaling():
    ours, _ = run_both(pot_epsilon_scaling, rtol=1e-6, atol=1e-10)
    x, y, a, b = clouds(seed=1)
    G = ours["G"]
    np.testing.assert_allclose(G.sum(1), a, rtol=1e-6)
    np.testing.assert_allclose(G.sum(0), b, rtol=1e-3)  # the last half-iteration fits a exactly, b nearly
    # the plan is the Gibbs kernel of its potentials at the final epsilon
    M, alpha, beta = ours["M"], ours["alpha"], ours["beta"]
    np.testing.assert_allclose(G, np.exp(-(M - alpha[:, None] - beta[None, :]) / ours["regs"][-1]), rtol=1e-8)


# ----------------------------------------------------------------------------------------------
# POT: unbalanced Sinkhorn with KL-relaxed marginals (sinkhorn_knopp_unbalanced and its log version)
# ----------------------------------------------------------------------------------------------


def pot_unbalanced(m, reg=0.3, reg_m=1.0, numItermax=300):
    torch = m.torch
    x, y, a, b = (torch.tensor(v) for v in clouds(seed=2))
    a = (2 * a).requires_grad_(True)  # unequal masses
    y = y.requires_grad_(True)
    M = torch.cdist(x, y) ** 2

    def sinkhorn_knopp_unbalanced(a, b, M, reg, reg_m):
        dim_a, dim_b = M.shape
        u = torch.ones(dim_a, dtype=M.dtype) / dim_a
        v = torch.ones(dim_b, dtype=M.dtype) / dim_b
        K = torch.exp(M / (-reg))
        fi = reg_m / (reg_m + reg)
        for i in range(numItermax):
            uprev, vprev = u, v
            Kv = K @ v
            u = (a / Kv) ** fi
            Ktu = K.T @ u
            v = (b / Ktu) ** fi
            err_u = torch.max(torch.abs(u - uprev)) / max(torch.max(torch.abs(u)), torch.max(torch.abs(uprev)), 1.0)
            err_v = torch.max(torch.abs(v - vprev)) / max(torch.max(torch.abs(v)), torch.max(torch.abs(vprev)), 1.0)
            err = 0.5 * (err_u + err_v)
            if err < 1e-12:
                break
        return u[:, None] * K * v[None, :]

    def sinkhorn_unbalanced_log(a, b, M, reg, reg_m):
        fi = reg_m / (reg_m + reg)
        f = torch.zeros_like(a)
        g = torch.zeros_like(b)
        for i in range(numItermax):
            f = fi * reg * (torch.log(a) - torch.logsumexp((g[None, :] - M) / reg, dim=1))
            g = fi * reg * (torch.log(b) - torch.logsumexp((f[:, None] - M) / reg, dim=0))
        return torch.exp((f[:, None] + g[None, :] - M) / reg)

    G = sinkhorn_knopp_unbalanced(a, b, M, reg, reg_m)
    G_log = sinkhorn_unbalanced_log(a, b, M, reg, reg_m)
    # the unbalanced objective: <G, M> + reg_m KL(G1 | a) + reg_m KL(G^T1 | b) + reg KL(G | ab^T)
    kl = lambda p, q: torch.sum(p * torch.log(p / q) - p + q)
    loss = (torch.sum(G * M) + reg_m * kl(G.sum(1), a) + reg_m * kl(G.sum(0), b)
            + reg * kl(G.flatten(), torch.outer(a, b).flatten()))
    ga, gy = torch.autograd.grad(loss, [a, y])
    return {"G": G, "G_log": G_log, "loss": loss, "ga": ga, "gy": gy, "mass": G.sum()}


def test_pot_unbalanced_sinkhorn():
    ours, _ = run_both(pot_unbalanced, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours["G"], ours["G_log"], rtol=1e-8, atol=1e-12)
    x, y, a, b = clouds(seed=2)
    K = np.exp(-sqdist_np(x, y) / 0.3)
    u, v, fi = np.ones(7) / 7, np.ones(6) / 6, 1.0 / 1.3
    for _ in range(300):
        u = (2 * a / (K @ v)) ** fi
        v = (b / (K.T @ u)) ** fi
    np.testing.assert_allclose(ours["G"], u[:, None] * K * v[None, :], rtol=1e-8, atol=1e-12)
    assert 0.5 < ours["mass"] < 2.0  # the masses are relaxed, not matched


# ----------------------------------------------------------------------------------------------
# POT: wasserstein_1d by quantile functions (ot/lp/solver_1d.py)
# ----------------------------------------------------------------------------------------------


def pot_wasserstein_1d(m, p=1.5):
    torch = m.torch
    rng = np.random.default_rng(6)
    u_values = torch.tensor(rng.standard_normal((9, 3)), requires_grad=True)
    v_values = torch.tensor(rng.standard_normal((6, 3)) + 0.7, requires_grad=True)
    u_weights = torch.tensor(rng.random((9, 3)) + 0.1, requires_grad=True)
    v_weights = torch.full((6, 3), 1 / 6, dtype=torch.float64)

    def quantile_function(qs, cws, xs):
        n = xs.shape[0]
        cws = cws.T.contiguous()
        qs = qs.T.contiguous()
        idx = torch.searchsorted(cws, qs).T
        return torch.take_along_dim(xs, torch.clip(idx, 0, n - 1), dim=0)

    def wasserstein_1d(u_values, v_values, u_weights, v_weights, p=1):
        u_weights = u_weights / u_weights.sum(0, keepdims=True)
        v_weights = v_weights / v_weights.sum(0, keepdims=True)
        u_sorter = torch.argsort(u_values, 0)
        u_values = torch.take_along_dim(u_values, u_sorter, 0)
        v_sorter = torch.argsort(v_values, 0)
        v_values = torch.take_along_dim(v_values, v_sorter, 0)
        u_weights = torch.take_along_dim(u_weights, u_sorter, 0)
        v_weights = torch.take_along_dim(v_weights, v_sorter, 0)
        u_cumweights = torch.cumsum(u_weights, 0)
        v_cumweights = torch.cumsum(v_weights, 0)
        qs, _ = torch.sort(torch.cat((u_cumweights, v_cumweights), 0), 0)
        u_quantiles = quantile_function(qs, u_cumweights, u_values)
        v_quantiles = quantile_function(qs, v_cumweights, v_values)
        qs = torch.nn.functional.pad(qs, pad=(0, 0, 1, 0))
        delta = qs[1:, ...] - qs[:-1, ...]
        diff_quantiles = torch.abs(u_quantiles - v_quantiles)
        if p == 1:
            return torch.sum(delta * diff_quantiles, dim=0)
        return torch.sum(delta * torch.pow(diff_quantiles, p), dim=0)

    W = wasserstein_1d(u_values, v_values, u_weights, v_weights, p)
    W1 = wasserstein_1d(u_values, v_values, u_weights, v_weights, 1)
    grads = torch.autograd.grad(W.sum() + W1.sum(), [u_values, v_values, u_weights])
    return {"W": W, "W1": W1, "grads": grads}


def test_pot_wasserstein_1d():
    ours, _ = run_both(pot_wasserstein_1d, rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(6)
    u, v, uw = rng.standard_normal((9, 3)), rng.standard_normal((6, 3)) + 0.7, rng.random((9, 3)) + 0.1
    for k in range(3):  # W1 is the L1 distance between the two CDFs
        grid = np.sort(np.concatenate([u[:, k], v[:, k]]))
        cdf_u = np.array([uw[u[:, k] <= t, k].sum() for t in grid]) / uw[:, k].sum()
        cdf_v = np.array([(v[:, k] <= t).sum() for t in grid]) / 6
        assert ours["W1"][k] == pytest.approx(np.sum(np.abs(cdf_u - cdf_v)[:-1] * np.diff(grid)), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# POT: entropic Gromov-Wasserstein by projected gradient (ot/gromov/_gw.py, _utils.py), square loss
# ----------------------------------------------------------------------------------------------


def pot_gromov(m, epsilon=0.1, max_iter=20):
    torch = m.torch
    rng = np.random.default_rng(12)
    xs = torch.tensor(rng.standard_normal((8, 2)))
    xt = torch.tensor(rng.standard_normal((6, 3)))
    C1 = torch.cdist(xs, xs) ** 2
    C2 = torch.cdist(xt, xt) ** 2
    C1 = (C1 / C1.max()).requires_grad_(True)
    C2 = C2 / C2.max()
    p = torch.ones(8, dtype=torch.float64) / 8
    q = torch.ones(6, dtype=torch.float64) / 6

    def init_matrix(C1, C2, p, q):
        f1 = lambda a: a ** 2
        f2 = lambda b: b ** 2
        h1 = lambda a: a
        h2 = lambda b: 2 * b
        constC1 = torch.matmul(torch.matmul(f1(C1), p.reshape(-1, 1)), torch.ones((1, len(q)), dtype=q.dtype))
        constC2 = torch.matmul(torch.ones((len(p), 1), dtype=p.dtype), torch.matmul(q.reshape(1, -1), f2(C2).T))
        return constC1 + constC2, h1(C1), h2(C2)

    def tensor_product(constC, hC1, hC2, T):
        A = -torch.matmul(torch.matmul(hC1, T), hC2.T)
        return constC + A

    def gwloss(constC, hC1, hC2, T):
        return torch.sum(tensor_product(constC, hC1, hC2, T) * T)

    def gwggrad(constC, hC1, hC2, T):
        return 2 * tensor_product(constC, hC1, hC2, T)

    def sinkhorn(a, b, M, reg, n=100):
        K = torch.exp(-M / reg)
        u = torch.ones_like(a)
        for _ in range(n):
            v = b / (K.T @ u)
            u = a / (K @ v)
        return u[:, None] * K * v[None, :]

    constC, hC1, hC2 = init_matrix(C1, C2, p, q)
    T = torch.outer(p, q)
    errs = []
    for cpt in range(max_iter):
        Tprev = T
        tens = gwggrad(constC, hC1, hC2, T)
        T = sinkhorn(p, q, tens, epsilon)
        errs.append(torch.norm(T - Tprev).item())
    gw = gwloss(constC, hC1, hC2, T)
    # the envelope gradient POT's backend sets: the loss at a fixed plan
    gw_fixed = gwloss(*init_matrix(C1, C2, p, q), T.detach())
    (g_unrolled,) = torch.autograd.grad(gw, C1)
    (g_fixed,) = torch.autograd.grad(gw_fixed, C1)
    return {"T": T, "gw": gw, "errs": errs, "g_unrolled": g_unrolled, "g_fixed": g_fixed}


def test_pot_entropic_gromov_wasserstein():
    ours, _ = run_both(pot_gromov, rtol=1e-7, atol=1e-10)
    T = ours["T"]
    np.testing.assert_allclose(T.sum(1), np.ones(8) / 8, rtol=1e-8)
    # the square loss by its definition: sum_ijkl (C1_ik - C2_jl)^2 T_ij T_kl, and the fixed-plan gradient
    rng = np.random.default_rng(12)
    xs, xt = rng.standard_normal((8, 2)), rng.standard_normal((6, 3))
    C1, C2 = sqdist_np(xs, xs), sqdist_np(xt, xt)
    C1, C2 = C1 / C1.max(), C2 / C2.max()
    L = (C1[:, None, :, None] - C2[None, :, None, :]) ** 2
    assert ours["gw"] == pytest.approx(np.einsum("ijkl,ij,kl->", L, T, T), rel=1e-10)
    g = np.einsum("ijkl,ij,kl->ik", 2 * (C1[:, None, :, None] - C2[None, :, None, :]), T, T)
    np.testing.assert_allclose(ours["g_fixed"], g, rtol=1e-8, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# POT: the entropic Wasserstein barycenter by iterated Bregman projections (barycenter_sinkhorn)
# ----------------------------------------------------------------------------------------------


def pot_barycenter(m, reg=2e-3, numItermax=60, n=30):
    torch = m.torch
    grid = torch.arange(n, dtype=torch.float64)
    gauss = lambda mu, sigma: torch.exp(-((grid - mu) ** 2) / (2 * sigma ** 2))
    A = torch.stack([gauss(8.0, 2.0), gauss(22.0, 3.0), 0.5 * gauss(5.0, 1.0) + gauss(15.0, 2.5)], 1)
    A = A / A.sum(0, keepdim=True)
    M = (grid[:, None] - grid[None, :]) ** 2
    M = M / M.max()
    logits = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    weights = torch.softmax(logits + torch.tensor([0.0, 0.5, -0.5], dtype=torch.float64), 0)

    def barycenter_sinkhorn(A, M, reg, weights):
        K = torch.exp(-M / reg)
        UKv = torch.matmul(K, (A.T / torch.sum(K, axis=0)).T)
        u = (torch.exp(torch.matmul(torch.log(UKv), weights.T)) / UKv.T).T
        for ii in range(numItermax):
            UKv = u * torch.matmul(K.T, A / torch.matmul(K, u))
            u = (u.T * torch.exp(torch.matmul(torch.log(UKv), weights.T))).T / UKv
        return torch.exp(torch.matmul(torch.log(UKv), weights.T))

    def barycenter_log(A, M, reg, weights):
        # the log-domain version (_barycenter_sinkhorn_log)
        dim, n_hists = A.shape
        logA = torch.log(A + 1e-16)
        M = -M / reg
        logKv = torch.zeros_like(A)
        G = torch.zeros_like(A)
        for ii in range(numItermax):
            logKu = torch.logsumexp(M[:, :, None] + (logA - logKv)[None, :, :], axis=1)
            logbar = logKu @ weights
            G = logbar[:, None] - logKu
            logKv = torch.logsumexp(M[:, :, None] + G[None, :, :], axis=1)
        return torch.exp(logbar)

    bary = barycenter_sinkhorn(A, M, 0.01, weights)
    bary_log = barycenter_log(A, M, reg, weights)
    target = gauss(14.0, 2.0)
    target = target / target.sum()
    loss = torch.sum((bary - target) ** 2) + torch.sum(torch.abs(torch.cumsum(bary_log - target, 0)))
    (g,) = torch.autograd.grad(loss, logits)
    return {"bary": bary, "bary_log": bary_log, "loss": loss, "g": g}


def test_pot_barycenter():
    ours, _ = run_both(pot_barycenter, rtol=1e-7, atol=1e-12)
    grid = np.arange(30.0)
    gauss = lambda mu, sigma: np.exp(-((grid - mu) ** 2) / (2 * sigma ** 2))
    A = np.stack([gauss(8.0, 2.0), gauss(22.0, 3.0), 0.5 * gauss(5.0, 1.0) + gauss(15.0, 2.5)], 1)
    A = A / A.sum(0)
    w = np.exp([0.0, 0.5, -0.5]) / np.exp([0.0, 0.5, -0.5]).sum()
    K = np.exp(-((grid[:, None] - grid[None, :]) ** 2) / 29.0 ** 2 / 0.01)
    v = np.ones_like(A)  # Benamou et al.'s iterated projections: u = A / K v, then the barycenter
    for _ in range(200):
        u = A / (K @ v)
        bary = np.exp(np.log(K.T @ u) @ w)
        v = bary[:, None] / (K.T @ u)
    np.testing.assert_allclose(ours["bary"], bary, rtol=1e-3, atol=1e-6)
    assert ours["bary"].sum() == pytest.approx(1.0, rel=1e-3)
    assert ours["bary_log"].sum() == pytest.approx(1.0, rel=1e-3)


# ----------------------------------------------------------------------------------------------
# POT's emd2/sinkhorn2 gradients: the value computed without a graph, gradients set by a custom Function
# (ot/backend.py's ValFunction), and ot.dist's squared Euclidean distances (maximum with 0 at exact ties)
# ----------------------------------------------------------------------------------------------


def pot_set_gradients(m, reg=0.2):
    torch = m.torch

    class ValFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, val, grads, *inputs):
            ctx.grads = grads
            return val

        @staticmethod
        def backward(ctx, grad_output):
            return (None, None) + tuple(g * grad_output for g in ctx.grads)

    def set_gradients(val, inputs, grads):
        return ValFunction.apply(val, grads, *inputs)

    def euclidean_distances(X, Y, squared=False):
        a2 = torch.einsum("ij,ij->i", X, X)
        b2 = torch.einsum("ij,ij->i", Y, Y)
        c = -2 * (X @ Y.T)
        c += a2[:, None]
        c += b2[None, :]
        c = torch.maximum(c, torch.tensor(0, dtype=c.dtype))
        if not squared:
            c = torch.sqrt(c)
        if X is Y:
            c = c * (1 - torch.eye(X.shape[0], dtype=c.dtype))
        return c

    def sinkhorn2(a, b, M, reg, numItermax=500):
        a0, b0, M0 = a, b, M
        a, b, M = a.detach(), b.detach(), M.detach()
        with torch.no_grad():
            f = torch.zeros_like(a)
            g = torch.zeros_like(b)
            for _ in range(numItermax):
                f = -reg * torch.logsumexp((g[None, :] - M) / reg + torch.log(b)[None, :], 1)
                g = -reg * torch.logsumexp((f[:, None] - M) / reg + torch.log(a)[:, None], 0)
            G = torch.exp((f[:, None] + g[None, :] - M) / reg) * a[:, None] * b[None, :]
            loss = torch.sum(G * M)
        # the envelope theorem: d loss / d a = f, d / d b = g (centred), d / d M = G
        return set_gradients(loss, (a0, b0, M0), (f - f.mean(), g - g.mean(), G))

    x, y, a, b = clouds(seed=15)
    x = torch.tensor(np.vstack([x, x[:2]]), requires_grad=True)  # repeated points: zero distances, exactly
    y = torch.tensor(y, requires_grad=True)
    a = torch.tensor(np.concatenate([a, a[:2]]) / (1 + a[:2].sum()), requires_grad=True)
    b = torch.tensor(b)
    M = euclidean_distances(x, y, squared=True)
    loss = sinkhorn2(a, b, M, reg)
    loss.backward()
    Mxx = euclidean_distances(x, x, squared=True)
    # (not differentiated: sqrt's infinite slope at the zeros times the zeroed diagonal is nan, and whether the
    # other rows' zeros come out as 0 or -1e-16 before the maximum depends on the matrix product's rounding)
    Dxx = euclidean_distances(x, x)
    (gxx,) = torch.autograd.grad(Mxx.sum() + 0.5 * (Mxx ** 2).sum(), x)
    return {"loss": loss, "x_grad": x.grad, "y_grad": y.grad, "a_grad": a.grad, "Mxx": Mxx, "gxx": gxx,
            "Dxx": Dxx, "requires_grad": loss.requires_grad}


def test_pot_set_gradients_and_dist():
    ours, _ = run_both(pot_set_gradients, rtol=1e-7, atol=1e-7)
    assert ours["requires_grad"] is True
    assert ours["Mxx"][0, 7] == 0.0 and ours["Mxx"][1, 8] == 0.0
    np.testing.assert_allclose(ours["a_grad"].sum(), 0.0, atol=1e-12)
