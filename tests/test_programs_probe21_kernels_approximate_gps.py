# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Kernel methods and Gaussian processes written by hand in PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and initial values, comparing values, gradients, dtypes and training
trajectories, and checked against NumPy by hand where the formula is short (so that each still asserts something
where PyTorch is not installed). Approximate GPs: whitened and unwhitened sparse variational GPs (``kl_divergence``
of ``MultivariateNormal(scale_tril=)``, a Bernoulli likelihood by Gauss-Hermite, a DataLoader); GP classification by
the Laplace approximation (Newton under no_grad, a recorded last step, L-BFGS and Adam on the hyperparameters, the
probit predictive); deep kernel learning (a BatchNorm extractor under an exact-GP head, per-group learning rates, a
state_dict round trip)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Sparse variational GP with whitening (Hensman et al. / GPyTorch's WhitenedVariationalStrategy):
# inducing locations learnt, q(v) = N(m, S S^T) by a tril scale with softplus diagonal, the KL to
# N(0, I) by kl_divergence, minibatches from a DataLoader, a Bernoulli likelihood by Gauss-Hermite
# ----------------------------------------------------------------------------------------------


def svgp_data(n=64):
    rng = np.random.default_rng(4)
    X = rng.uniform(-3, 3, (n, 2)).astype(np.float32)
    f = np.sin(X[:, 0]) * np.cos(X[:, 1]) * 2
    y_reg = (f + 0.1 * rng.standard_normal(n)).astype(np.float32)
    y_cls = (f + 0.3 * rng.standard_normal(n) > 0).astype(np.float32)
    return X, y_reg, y_cls


def svgp(m, likelihood="gaussian", whiten=True, epochs=4):
    torch, nn, F, optim, data = m.torch, m.nn, m.F, m.optim, m.data
    D = torch.distributions
    X_np, y_reg, y_cls = svgp_data()
    X = torch.from_numpy(X_np)
    y = torch.from_numpy(y_reg if likelihood == "gaussian" else y_cls)
    M = 8

    class SVGP(nn.Module):
        def __init__(self, Z):
            super().__init__()
            self.Z = nn.Parameter(Z.clone())
            self.q_mu = nn.Parameter(torch.zeros(M))
            self.q_sqrt_raw = nn.Parameter(torch.eye(M) * 0.5413)  # softplus(0.5413) = 1
            self.log_ls = nn.Parameter(torch.zeros(2))
            self.log_sf2 = nn.Parameter(torch.tensor(0.0))
            self.log_noise = nn.Parameter(torch.tensor(-1.0))

        def kern(self, a, b):
            a, b = a / self.log_ls.exp(), b / self.log_ls.exp()
            return self.log_sf2.exp() * torch.exp(-0.5 * torch.cdist(a, b).pow(2))

        @property
        def q_sqrt(self):
            L = torch.tril(self.q_sqrt_raw, diagonal=-1)
            return L + torch.diag_embed(F.softplus(torch.diagonal(self.q_sqrt_raw)))

        def forward(self, x):
            Kzz = self.kern(self.Z, self.Z) + 1e-5 * torch.eye(M)
            Lz = torch.linalg.cholesky(Kzz)
            Kzx = self.kern(self.Z, x)
            A = torch.linalg.solve_triangular(Lz, Kzx, upper=False)  # Lz^-1 Kzx
            if not whiten:
                A = torch.linalg.solve_triangular(Lz.mT, A, upper=True)  # Kzz^-1 Kzx
            S = self.q_sqrt
            mean = A.T @ self.q_mu
            if whiten:
                SA = S.T @ A
                var = self.log_sf2.exp() - A.pow(2).sum(0) + SA.pow(2).sum(0)
            else:
                SA = S.T @ A
                var = self.log_sf2.exp() - (Kzx * A).sum(0) + SA.pow(2).sum(0)
            return mean, var.clamp_min(1e-8)

        def kl(self):
            q = D.MultivariateNormal(self.q_mu, scale_tril=self.q_sqrt)
            if whiten:
                p = D.MultivariateNormal(torch.zeros(M), scale_tril=torch.eye(M))
            else:
                Kzz = self.kern(self.Z, self.Z) + 1e-5 * torch.eye(M)
                p = D.MultivariateNormal(torch.zeros(M), covariance_matrix=Kzz)
            return D.kl_divergence(q, p)

    gh_x, gh_w = np.polynomial.hermite.hermgauss(20)
    gh_x = torch.tensor(gh_x * math.sqrt(2), dtype=torch.float32)
    gh_w = torch.tensor(gh_w / math.sqrt(math.pi), dtype=torch.float32)

    def expected_log_lik(mean, var, yb, noise):
        if likelihood == "gaussian":
            return -0.5 * math.log(2 * math.pi) - 0.5 * noise.log() - 0.5 * ((yb - mean) ** 2 + var) / noise
        f = mean.unsqueeze(-1) + var.sqrt().unsqueeze(-1) * gh_x  # (B, 20)
        logp = D.Bernoulli(logits=f).log_prob(yb.unsqueeze(-1).expand_as(f))
        return (logp * gh_w).sum(-1)

    torch.manual_seed(0)
    perm = torch.randperm(len(X))[:M]
    model = SVGP(X[perm])
    opt = optim.Adam([{"params": [model.q_mu, model.q_sqrt_raw]},
                      {"params": [model.Z, model.log_ls, model.log_sf2, model.log_noise], "lr": 0.02}], lr=0.05)
    loader = data.DataLoader(data.TensorDataset(X, y), batch_size=16, shuffle=True,
                             generator=torch.Generator().manual_seed(1))
    elbos = []
    for epoch in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            mean, var = model(xb)
            ell = expected_log_lik(mean, var, yb, model.log_noise.exp()).sum() * (len(X) / len(xb))
            elbo = ell - model.kl()
            (-elbo / len(X)).backward()
            opt.step()
            elbos.append(elbo.item())
    with torch.no_grad():
        mean, var = model(X)
        kl = model.kl()
    return {"perm": perm, "elbos": elbos, "mean": mean, "var": var, "kl": kl,
            "params": {k: v.detach() for k, v in model.named_parameters()}}


@pytest.mark.parametrize("likelihood,whiten", [("gaussian", True), ("bernoulli", True), ("gaussian", False)])
def test_sparse_variational_gp(likelihood, whiten):
    ours, _ = run_both(svgp, likelihood=likelihood, whiten=whiten, rtol=2e-4, atol=2e-4)
    assert np.isfinite(ours["elbos"]).all() and ours["kl"] >= 0
    assert np.mean(ours["elbos"][-4:]) > np.mean(ours["elbos"][:4])


# ----------------------------------------------------------------------------------------------
# GP classification by the Laplace approximation (GPML Algorithm 3.1): Newton's iterations for the
# mode under no_grad, then one differentiable Newton step from the detached mode so the approximate
# marginal likelihood's gradient reaches the hyperparameters; LBFGS over them, the predictive
# probability by probit-approximate averaging
# ----------------------------------------------------------------------------------------------


def laplace_data(n=40):
    rng = np.random.default_rng(5)
    X = rng.uniform(-3, 3, (n, 1))
    y = np.where(np.sin(1.5 * X[:, 0]) + 0.4 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return X, y


def laplace_gpc(m, optimizer="lbfgs"):
    torch, nn, optim = m.torch, m.nn, m.optim
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        X, y = (torch.tensor(a) for a in laplace_data())
        n = len(X)
        log_ls = nn.Parameter(torch.tensor(0.0))
        log_sf = nn.Parameter(torch.tensor(0.5))

        def kernel(a, b):
            return torch.exp(2 * log_sf) * torch.exp(-0.5 * torch.cdist(a, b) ** 2 / torch.exp(2 * log_ls))

        def newton_step(K, f):
            pi = torch.sigmoid(f)
            t = (y + 1) / 2
            W = pi * (1 - pi)
            sW = W.sqrt()
            B = torch.eye(n) + sW[:, None] * K * sW[None, :]
            L = torch.linalg.cholesky(B)
            b = W * f + (t - pi)
            a = b - sW * torch.cholesky_solve((sW * (K @ b))[:, None], L).squeeze(-1)
            return K @ a, a, L

        def approx_log_marginal():
            K = kernel(X, X)
            f = torch.zeros(n)
            with torch.no_grad():
                Kd = K.detach()
                for it in range(30):
                    f_new, _, _ = newton_step(Kd, f)
                    if (f_new - f).abs().max() < 1e-10:
                        f = f_new
                        break
                    f = f_new
            f, a, L = newton_step(K, f.detach())  # one step more, now recorded
            log_lik = -torch.nn.functional.softplus(-y * f).sum()
            return -0.5 * (a * f).sum() + log_lik - torch.log(torch.diagonal(L)).sum(), f

        if optimizer == "lbfgs":
            opt = optim.LBFGS([log_ls, log_sf], lr=0.5, max_iter=20, line_search_fn="strong_wolfe")
        else:
            opt = optim.Adam([log_ls, log_sf], lr=0.1)
        values = []

        def closure():
            opt.zero_grad()
            lml, _ = approx_log_marginal()
            (-lml).backward()
            values.append(lml.item())
            return -lml

        for _ in range(1 if optimizer == "lbfgs" else 20):
            opt.step(closure)
        lml, f_hat = approx_log_marginal()
        grad = torch.autograd.grad(lml, [log_ls, log_sf])
        with torch.no_grad():
            Xs = torch.linspace(-3.5, 3.5, 8)[:, None]
            K = kernel(X, X)
            pi = torch.sigmoid(f_hat)
            W = pi * (1 - pi)
            sW = W.sqrt()
            L = torch.linalg.cholesky(torch.eye(n) + sW[:, None] * K * sW[None, :])
            Ks = kernel(X, Xs)
            fs = Ks.T @ ((y + 1) / 2 - pi)
            v = torch.linalg.solve_triangular(L, sW[:, None] * Ks, upper=False)
            vs = torch.exp(2 * log_sf) - (v * v).sum(0)
            prob = torch.sigmoid(fs / torch.sqrt(1 + math.pi * vs / 8))  # MacKay's probit approximation
    finally:
        torch.set_default_dtype(previous)
    return {"values": values, "lml": lml, "grad": grad, "hyper": [log_ls.detach(), log_sf.detach()],
            "f_hat": f_hat, "prob": prob, "dtype": str(prob.dtype).split(".")[-1]}


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_laplace_gp_classification(optimizer):
    ours, _ = run_both(laplace_gpc, optimizer=optimizer, rtol=1e-7, atol=1e-9)
    assert ours["dtype"] == "float64"
    assert ours["values"][-1] > ours["values"][0]
    if optimizer == "lbfgs":
        assert max(abs(g) for g in ours["grad"]) < 1e-4
    # the mode satisfies f = K grad log p(y|f) (by NumPy, from the learnt hyperparameters)
    X, y = laplace_data()
    ls, sf = np.exp(ours["hyper"])
    K = sf ** 2 * np.exp(-0.5 * (X - X.T) ** 2 / ls ** 2)
    f = ours["f_hat"]
    np.testing.assert_allclose(f, K @ ((y + 1) / 2 - 1 / (1 + np.exp(-f))), rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# Deep kernel learning (Wilson et al.): an MLP feature extractor under an exact-GP head with a
# RBF on 2-d features scaled to [-1, 1], trained end to end by Adam with per-group learning
# rates (as GPyTorch's DKL example), BatchNorm in the extractor, eval-mode predictions, a
# state_dict round trip; float32 throughout
# ----------------------------------------------------------------------------------------------


def make_extractor(m):
    nn = m.nn
    # no bias before the BatchNorm nor under the min-max scaling: their gradients are zero but for rounding, and
    # Adam would walk them along that noise (differently in each library)
    return nn.Sequential(nn.Linear(4, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(),
                         nn.Linear(16, 2, bias=False))


def dkl_data(n=48):
    rng = np.random.default_rng(10)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    y = (np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] - 0.5 * X[:, 3] ** 2).astype(np.float32)
    return X, (y - y.mean()) / y.std()


def dkl(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = (torch.from_numpy(a) for a in dkl_data())
    Xtr, ytr, Xte = X[:40], y[:40], X[40:]

    class GPHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.raw_lengthscale = nn.Parameter(torch.zeros(1, 2))
            self.raw_outputscale = nn.Parameter(torch.tensor(0.0))
            self.raw_noise = nn.Parameter(torch.tensor(0.0))
            self.mean_constant = nn.Parameter(torch.zeros(1))

        def covar(self, a, b):
            ls = F.softplus(self.raw_lengthscale) + 1e-4
            return F.softplus(self.raw_outputscale) * torch.exp(-0.5 * torch.cdist(a / ls, b / ls) ** 2)

    class DKL(nn.Module):
        def __init__(self):
            super().__init__()
            self.feature_extractor = make_extractor(m)
            self.gp = GPHead()
            self.scale_to_bounds = lambda z: (z - z.min(0)[0]) / (z.max(0)[0] - z.min(0)[0]) * 2 - 1

        def features(self, x):
            return self.scale_to_bounds(self.feature_extractor(x))

        def neg_mll(self, x, y):
            z = self.features(x)
            K = self.gp.covar(z, z) + (F.softplus(self.gp.raw_noise) + 1e-4) * torch.eye(len(x))
            L = torch.linalg.cholesky(K)
            r = (y - self.gp.mean_constant).unsqueeze(-1)
            alpha = torch.cholesky_solve(r, L)
            return (0.5 * (r * alpha).sum() + torch.log(torch.diagonal(L)).sum()) / len(x) + 0.5 * math.log(2 * math.pi)

    model = DKL()
    load(m, model.feature_extractor, weights)
    optimizer = optim.Adam([
        {"params": model.feature_extractor.parameters()},
        {"params": model.gp.parameters(), "lr": 0.05},
    ], lr=0.01, weight_decay=0.0)
    losses = []
    model.train()
    for i in range(15):
        optimizer.zero_grad()
        loss = model.neg_mll(Xtr, ytr)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        z_all = model.features(torch.cat([Xtr, Xte]))
        ztr, zte = z_all[:40], z_all[40:]
        K = model.gp.covar(ztr, ztr) + (F.softplus(model.gp.raw_noise) + 1e-4) * torch.eye(40)
        L = torch.linalg.cholesky(K)
        Ks = model.gp.covar(ztr, zte)
        mean = model.gp.mean_constant + Ks.T @ torch.cholesky_solve((ytr - model.gp.mean_constant)[:, None], L).squeeze(-1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model2 = DKL()
    model2.load_state_dict(state)
    model2.eval()
    with torch.no_grad():
        same = torch.equal(model2.features(Xte), model.features(Xte))
    return {"losses": losses, "mean": mean, "state": state, "same": same,
            "running_var": model.feature_extractor[1].running_var, "keys": sorted(state)}


def test_deep_kernel_learning():
    weights = weights_of(make_extractor)
    ours, _ = run_both(dkl, weights, rtol=1e-4, atol=1e-5)
    assert ours["same"] and ours["losses"][-1] < ours["losses"][0]
    assert "feature_extractor.1.num_batches_tracked" in ours["keys"]
