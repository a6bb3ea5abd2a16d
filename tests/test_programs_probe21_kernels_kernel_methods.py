# ruff: noqa: B007, E501, E731, F841  (the programs are kept as their authors wrote them)
"""Kernel methods and Gaussian processes written by hand in PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and initial values, comparing values, gradients, dtypes and training
trajectories, and checked against NumPy by hand where the formula is short (so that each still asserts something
where PyTorch is not installed). Kernel methods: random Fourier features with a learnt lengthscale, kernel ridge
regression over a batch of bandwidths with its leave-one-out gradient, Nyström by
``eigh``/``pinv(hermitian=True)``/``lstsq`` and kernel PCA; an MMD two-sample test (median heuristics by
``median``/``quantile`` in every interpolation/``nanmedian``, a ``randperm`` permutation null) and a generator
trained by MMD; HSIC, kernel k-means, kernel herding and a GPLVM."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Random Fourier features (Rahimi & Recht) with a learnt lengthscale, Nyström features by eigh and
# pinv, kernel ridge regression by linalg.solve over a batch of bandwidths, kernel PCA
# ----------------------------------------------------------------------------------------------


def approx_data(n=60, d=3):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(n)).astype(np.float32)
    return X, y


def rff_regression(m, D=128):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = (torch.from_numpy(a) for a in approx_data())
    torch.manual_seed(0)

    class RFF(nn.Module):
        def __init__(self, in_dim, num_features):
            super().__init__()
            self.register_buffer("omega", torch.randn(in_dim, num_features))
            self.register_buffer("phase", torch.rand(num_features) * 2 * math.pi)
            self.log_ls = nn.Parameter(torch.zeros(in_dim))
            self.num_features = num_features

        def forward(self, x):
            proj = (x / self.log_ls.exp()) @ self.omega + self.phase
            return math.sqrt(2.0 / self.num_features) * torch.cos(proj)

    feats = RFF(X.shape[1], D)
    log_lam = nn.Parameter(torch.tensor(-2.0))
    opt = optim.Adam(list(feats.parameters()) + [log_lam], lr=0.05)
    Xtr, ytr, Xva, yva = X[:40], y[:40], X[40:], y[40:]
    losses = []
    for step in range(20):
        Phi = feats(Xtr)
        A = Phi.T @ Phi + log_lam.exp() * torch.eye(D)
        w = torch.linalg.solve(A, Phi.T @ ytr)
        val = F.mse_loss(feats(Xva) @ w, yva)
        opt.zero_grad()
        val.backward()
        opt.step()
        losses.append(val.item())
    with torch.no_grad():
        Phi = feats(X)
        approx_K = Phi @ Phi.T
        ls = feats.log_ls.exp()
        exact_K = torch.exp(-0.5 * torch.cdist(X / ls, X / ls).pow(2))
    return {"omega": feats.omega, "phase": feats.phase, "losses": losses, "log_ls": feats.log_ls.detach(),
            "approx_err": (approx_K - exact_K).abs().mean()}


def test_random_fourier_features_learn_a_lengthscale():
    ours, theirs = run_both(rff_regression, rtol=2e-4, atol=2e-5)
    assert ours["approx_err"] < 0.1
    assert ours["losses"][-1] < ours["losses"][0]


def nystrom_krr(m):
    torch = m.torch
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        X, y = (torch.from_numpy(a.astype(np.float64)) for a in approx_data())
        n = len(X)
        bandwidths = torch.tensor([0.5, 1.0, 2.0]).requires_grad_(True)
        lam = 1e-2
        sq = torch.cdist(X, X).pow(2)
        K = torch.exp(-sq / (2 * bandwidths[:, None, None] ** 2))  # (3, n, n): one Gram matrix per bandwidth
        # kernel ridge regression for every bandwidth at once: a batch of systems, one right-hand side
        alpha = torch.linalg.solve(K + lam * torch.eye(n), y)  # (3, n)
        fit = (K @ alpha.unsqueeze(-1)).squeeze(-1)
        # the leave-one-out residuals in closed form (the hat matrix's diagonal)
        H = K @ torch.linalg.inv(K + lam * torch.eye(n))
        loo = ((y - fit) / (1 - torch.diagonal(H, dim1=-2, dim2=-1))).pow(2).mean(-1)
        loo.sum().backward()
        bw_grad = bandwidths.grad.clone()
        # Nyström with m landmarks: K ~ C W^+ C^T, features C U diag(s^-1/2)
        idx = torch.arange(0, n, 4)
        C = K[1, :, idx].detach()
        W = C[idx]
        evals, evecs = torch.linalg.eigh(W)
        keep = evals > 1e-8 * evals.max()
        features = C @ evecs[:, keep] / evals[keep].sqrt()
        nys = features @ features.T
        via_pinv = C @ torch.linalg.pinv(W, hermitian=True) @ C.T
        via_lstsq = C @ torch.linalg.lstsq(W, C.T).solution
        rel_err = torch.linalg.matrix_norm(K[1].detach() - nys) / torch.linalg.matrix_norm(K[1].detach())
        # kernel PCA (Schölkopf et al.): centre the Gram matrix, top eigenvectors, projections
        Kc = K[1].detach()
        one = torch.full((n, n), 1.0 / n)
        Kc = Kc - one @ Kc - Kc @ one + one @ Kc @ one
        lam_k, V = torch.linalg.eigh(Kc)
        lam_k, V = lam_k.flip(0)[:3], V.flip(1)[:, :3]
        V = V * torch.sign(V[V.abs().argmax(0), torch.arange(3)])  # sklearn's deterministic sign
        projections = V * lam_k.sqrt()
        eigvalsh = torch.linalg.eigvalsh(Kc)[-3:].flip(0)
    finally:
        torch.set_default_dtype(previous)
    return {"alpha": alpha, "loo": loo, "bw_grad": bw_grad, "nys": nys, "via_pinv": via_pinv,
            "via_lstsq": via_lstsq, "rel_err": rel_err, "lam_k": lam_k, "projections": projections,
            "eigvalsh": eigvalsh, "rank": int(keep.sum())}


def test_nystrom_kernel_ridge_and_kernel_pca():
    ours, _ = run_both(nystrom_krr, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["nys"], ours["via_pinv"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["nys"], ours["via_lstsq"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours["lam_k"], ours["eigvalsh"], rtol=1e-10)
    X, y = approx_data()
    X = X.astype(np.float64)
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    for j, h in enumerate([0.5, 1.0, 2.0]):
        K = np.exp(-d2 / (2 * h * h))
        np.testing.assert_allclose(ours["alpha"][j], np.linalg.solve(K + 1e-2 * np.eye(60), y), rtol=1e-6,
                                   atol=1e-8)
    assert ours["rel_err"] < 0.5


# ----------------------------------------------------------------------------------------------
# MMD two-sample test (Gretton et al.): the median heuristic by torch.median / quantile / nanmedian
# over the pairwise distances, a mixture of bandwidths, the unbiased statistic, a permutation test
# by randperm; then a generator trained by MMD (a bandwidth held fixed, its gradient through cdist)
# ----------------------------------------------------------------------------------------------


def mmd_data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((30, 2)).astype(np.float32)
    y = (rng.standard_normal((34, 2)) * np.array([1.0, 1.6]) + np.array([0.3, 0.0])).astype(np.float32)
    return x, y


def mmd_test(m, n_perm=50):
    torch = m.torch
    x, y = (torch.from_numpy(a) for a in mmd_data())
    z = torch.cat([x, y])
    d = torch.cdist(z, z)
    iu = torch.triu_indices(len(z), len(z), offset=1)
    pair = d[iu[0], iu[1]]
    med = torch.median(pair)
    med_dim = d.median(dim=1)  # (values, indices): the lower median of every row, zeros included
    q = {mode: torch.quantile(pair, torch.tensor([0.1, 0.5, 0.9]), interpolation=mode)
         for mode in ("linear", "lower", "higher", "midpoint", "nearest")}
    masked = torch.where(d > 0, d, torch.tensor(float("nan")))
    nanmed = torch.nanmedian(masked, dim=1).values
    sigmas = med * torch.tensor([0.5, 1.0, 2.0])

    def mmd2_unbiased(K, nx):
        Kxx, Kyy, Kxy = K[:nx, :nx], K[nx:, nx:], K[:nx, nx:]
        ny = K.shape[0] - nx
        return ((Kxx.sum() - Kxx.diagonal().sum()) / (nx * (nx - 1))
                + (Kyy.sum() - Kyy.diagonal().sum()) / (ny * (ny - 1)) - 2 * Kxy.mean())

    K = torch.exp(-d.pow(2).unsqueeze(0) / (2 * sigmas.view(-1, 1, 1) ** 2)).sum(0)
    stat = mmd2_unbiased(K, len(x))
    g = torch.Generator().manual_seed(3)
    null = []
    for _ in range(n_perm):
        p = torch.randperm(len(z), generator=g)
        null.append(mmd2_unbiased(K[p][:, p], len(x)))
    null = torch.stack(null)
    p_value = (1 + (null >= stat).sum()) / (1 + n_perm)
    return {"med": med, "med_dim": tuple(med_dim), "q": q, "nanmed": nanmed, "stat": stat, "null": null,
            "p_value": p_value, "dtypes": [str(t.dtype).split(".")[-1] for t in (p_value, med_dim.indices)]}


def test_mmd_two_sample_test():
    ours, _ = run_both(mmd_test, rtol=1e-5, atol=1e-6)
    x, y = mmd_data()
    z = np.concatenate([x, y]).astype(np.float64)
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    pair = d[np.triu_indices(64, 1)]
    assert ours["med"] == pytest.approx(np.sort(pair)[(len(pair) - 1) // 2], rel=1e-5)  # the lower median
    for mode in ("linear", "lower", "higher", "midpoint", "nearest"):
        np.testing.assert_allclose(ours["q"][mode], np.quantile(pair, [0.1, 0.5, 0.9], method=mode), rtol=1e-5)
    assert ours["dtypes"] == ["float32", "int64"]


def mmd_generator(m, steps=25):
    torch, nn, optim = m.torch, m.nn, m.optim
    x_np, y_np = mmd_data()
    target = torch.from_numpy(y_np)
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(3, 16), nn.ELU(), nn.Linear(16, 2))
    opt = optim.RMSprop(gen.parameters(), lr=5e-3)
    noise = torch.from_numpy(np.random.default_rng(8).standard_normal((32, 3)).astype(np.float32))

    def mmd2_biased(a, b, sigma):
        xx, yy, xy = torch.cdist(a, a), torch.cdist(b, b), torch.cdist(a, b)
        k = lambda dist: torch.exp(-dist.pow(2) / (2 * sigma ** 2))
        return k(xx).mean() + k(yy).mean() - 2 * k(xy).mean()

    history = []
    for step in range(steps):
        fake = gen(noise)
        with torch.no_grad():
            sigma = torch.quantile(torch.cdist(fake, target).flatten(), 0.5)
        loss = mmd2_biased(fake, target, sigma)
        opt.zero_grad()
        loss.backward()  # cdist(fake, fake) has zeros on its diagonal: its gradient there must be 0, not NaN
        opt.step()
        history.append(loss.item())
    return {"history": history, "weights": {k: v.detach() for k, v in gen.state_dict().items()}}


def test_generator_trained_by_mmd():
    ours, _ = run_both(mmd_generator, rtol=1e-4, atol=1e-5)
    assert all(np.isfinite(v).all() for v in ours["weights"].values())
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# More kernel methods: HSIC (Gretton et al., the biased statistic with centred Gram matrices, a
# permutation null by randperm on a seeded Generator, the gamma approximation's p-value by
# torch.special.gammaincc), kernel k-means (distances in feature space from the Gram matrix,
# one_hot assignments, a fixed point), kernel herding (greedy points maximising the mean embedding
# minus the herd), and a GPLVM whose latent inputs are learnt by Adam with the hyperparameters
# ----------------------------------------------------------------------------------------------


def more_kernel_methods(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(16)
    out = {}
    n = 50
    x = torch.from_numpy(rng.standard_normal((n, 1)))
    y = torch.from_numpy(np.sin(2 * x.numpy()) + 0.3 * rng.standard_normal((n, 1)))

    def rbf(a, b, sigma):
        return torch.exp(-torch.cdist(a, b) ** 2 / (2 * sigma ** 2))

    def median_sigma(a):
        d = torch.pdist(a)
        return d.median()

    H = torch.eye(n, dtype=torch.float64) - 1.0 / n
    K, L = rbf(x, x, median_sigma(x)), rbf(y, y, median_sigma(y))
    Kc, Lc = H @ K @ H, H @ L @ H
    hsic = torch.trace(Kc @ Lc) / n ** 2
    g = torch.Generator().manual_seed(0)
    null = torch.stack([torch.trace(Kc @ (H @ L[p][:, p] @ H)) / n ** 2
                        for p in (torch.randperm(n, generator=g) for _ in range(40))])
    mean_null = (1 + K.diagonal().sum() * L.diagonal().sum() / n ** 2 - K.sum() / n ** 2
                 - L.sum() / n ** 2 + K.sum() * L.sum() / n ** 4) / n  # Gretton's approximation (rough)
    shape = null.mean() ** 2 / null.var()
    scale = null.var() / null.mean()
    p_gamma = torch.special.gammaincc(shape, hsic / scale)
    out["hsic"] = [hsic, null, (null >= hsic).float().mean(), shape, scale, p_gamma]

    # kernel k-means on two rings
    t = torch.from_numpy(rng.uniform(0, 2 * math.pi, 60))
    r = torch.cat([torch.full((30,), 1.0, dtype=torch.float64), torch.full((30,), 3.0, dtype=torch.float64)])
    pts = torch.stack([r * t.cos(), r * t.sin()], 1) + 0.05 * torch.from_numpy(rng.standard_normal((60, 2)))
    Kr = rbf(pts, pts, torch.tensor(1.0, dtype=torch.float64))
    assign = (pts.norm(dim=1) > pts.norm(dim=1).median()).long()  # a start
    for it in range(10):
        Z = F.one_hot(assign, 2).to(Kr.dtype)  # (n, 2)
        counts = Z.sum(0)
        dist = Kr.diagonal()[:, None] - 2 * (Kr @ Z) / counts + torch.diagonal(Z.T @ Kr @ Z) / counts ** 2
        new = dist.argmin(1)
        if torch.equal(new, assign):
            break
        assign = new
    out["kkm"] = [assign, dist, it]

    # kernel herding over a sample from a mixture
    sample = torch.cat([torch.from_numpy(rng.normal(-2, 0.5, (100, 1))), torch.from_numpy(rng.normal(1.5, 0.8, (100, 1)))])
    grid = torch.linspace(-4, 4, 161, dtype=torch.float64)[:, None]
    embedding = rbf(grid, sample, 0.5).mean(1)
    herd = []
    for i in range(8):
        score = embedding - (rbf(grid, torch.cat(herd), 0.5).sum(1) / (len(herd) + 1) if herd else 0)
        herd.append(grid[score.argmax()][None])
    out["herd"] = torch.cat(herd)

    # GPLVM: latent 1-d inputs for 3-d observations of a curve
    s = torch.from_numpy(np.sort(rng.uniform(-1, 1, 25)))
    Yobs = torch.stack([s.cos(), s.sin(), s ** 2], 1) + 0.02 * torch.from_numpy(rng.standard_normal((25, 3)))
    Yobs = Yobs - Yobs.mean(0)
    U, S, Vh = torch.linalg.svd(Yobs, full_matrices=False)
    latent = nn.Parameter((U[:, :1] * S[:1]).clone())  # initialised by PCA
    log_ls = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    log_noise = nn.Parameter(torch.tensor(-3.0, dtype=torch.float64))
    opt = optim.Adam([latent, log_ls, log_noise], lr=0.02)
    losses = []
    for step in range(30):
        opt.zero_grad()
        Kl = rbf(latent, latent, log_ls.exp()) + (log_noise.exp() + 1e-6) * torch.eye(25, dtype=torch.float64)
        Lk = torch.linalg.cholesky(Kl)
        alpha = torch.cholesky_solve(Yobs, Lk)
        loss = 0.5 * (Yobs * alpha).sum() + 3 * Lk.diagonal().log().sum() + 0.5 * latent.pow(2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out["gplvm"] = [losses, latent.detach(), log_ls.detach(), log_noise.detach()]
    return out


def test_more_kernel_methods():
    ours, _ = run_both(more_kernel_methods, rtol=1e-7, atol=1e-9)
    hsic, null, p_perm = ours["hsic"][:3]
    assert hsic > null.max() and p_perm == 0  # y depends on x
    assign = ours["kkm"][0]
    assert len(set(assign[:30])) == 1 and len(set(assign[30:])) == 1 and assign[0] != assign[30]  # the two rings
    herd = ours["herd"][:, 0]
    assert (herd < 0).any() and (herd > 0).any()  # the herd visits both modes
    assert ours["gplvm"][0][-1] < ours["gplvm"][0][0]
