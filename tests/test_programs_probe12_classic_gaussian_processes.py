# ruff: noqa: B007, B023  (the programs are kept as their authors wrote them)
"""Classical machine learning and Bayesian numerics as GPyTorch / Pyro / scikit-learn-in-torch users write them, run
as tests/probe12_classic_common.py says. Gaussian processes and kernels: exact GP regression with an ARD Matérn-5/2
kernel written as GPyTorch computes it (in-place ``clamp_min_`` / ``sqrt_`` distances, noise added through a diagonal
view, logdet from the Cholesky diagonal, ``cholesky_solve``, ``solve_triangular``); a sparse variational GP (inducing
points, ``tril`` variational factor, ``kl_divergence`` of two ``MultivariateNormal(scale_tril=...)``); kernel ridge
regression (``solve``, ``cholesky_ex``/``cholesky_inverse`` for the leave-one-out error); the Hessian of a GP
marginal likelihood; GP classification by the Laplace approximation; Bayesian optimisation by hand (expected
improvement from ``Normal.cdf`` / ``log_prob``, maximised by L-BFGS through a sigmoid box)."""

import math

import numpy as np

from .probe12_classic_common import TOL, classification_data
from .pytorch_programs import run_both


def regression_data(n=30, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, d))
    y = np.sin(1.5 * X[:, 0]) + 0.5 * np.cos(X[:, -1]) + 0.1 * rng.standard_normal(n)
    Xs = rng.uniform(-2.5, 2.5, (6, d))
    return X, y, Xs


# ----------------------------------------------------------------------------------------------
# Exact GP with an ARD Matérn-5/2 kernel, distances as GPyTorch computes them (in-place clamp_min_ and
# sqrt_), jitter added through a diagonal view, logdet from the Cholesky diagonal
# ----------------------------------------------------------------------------------------------


def matern_gp(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y, Xs = (torch.from_numpy(a) for a in regression_data())

    def covar_dist(x1, x2):
        # gpytorch.kernels.Kernel.covar_dist / sq_dist: the norms trick, then clamp and sqrt in place
        adjustment = x1.mean(-2, keepdim=True)
        x1 = x1 - adjustment
        x2 = x2 - adjustment
        x1_norm = x1.pow(2).sum(dim=-1, keepdim=True)
        x2_norm = x2.pow(2).sum(dim=-1, keepdim=True)
        res = x1_norm - 2 * x1 @ x2.transpose(-2, -1) + x2_norm.transpose(-2, -1)
        res = res.clamp_min_(1e-30)
        return res.sqrt_()

    class MaternKernel(nn.Module):
        def __init__(self, ard_num_dims):
            super().__init__()
            self.raw_lengthscale = nn.Parameter(torch.zeros(1, ard_num_dims, dtype=torch.float64))
            self.raw_outputscale = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))

        @property
        def lengthscale(self):
            return F.softplus(self.raw_lengthscale)

        def forward(self, x1, x2):
            x1_ = x1.div(self.lengthscale)
            x2_ = x2.div(self.lengthscale)
            distance = covar_dist(x1_, x2_)
            exp_component = torch.exp(-math.sqrt(5) * distance)
            constant_component = (math.sqrt(5) * distance).add(1).add(5.0 / 3.0 * distance ** 2)
            return F.softplus(self.raw_outputscale) * constant_component * exp_component

    class ExactGP(nn.Module):
        def __init__(self):
            super().__init__()
            self.covar_module = MaternKernel(2)
            self.raw_noise = nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))
            self.mean_constant = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))

        def noise(self):
            return F.softplus(self.raw_noise) + 1e-4

        def mll(self, X, y):
            n = X.shape[0]
            K = self.covar_module(X, X)
            K.diagonal(dim1=-2, dim2=-1).add_(self.noise())  # jitter / noise through a diagonal view
            L = torch.linalg.cholesky(K)
            r = (y - self.mean_constant).unsqueeze(-1)
            alpha = torch.cholesky_solve(r, L)
            logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            return -0.5 * (r * alpha).sum() - 0.5 * logdet - 0.5 * n * math.log(2 * math.pi)

        @torch.no_grad()
        def predict(self, X, y, Xs):
            K = self.covar_module(X, X) + self.noise() * torch.eye(X.shape[0], dtype=X.dtype)
            L = torch.linalg.cholesky(K)
            Ks = self.covar_module(X, Xs)
            alpha = torch.cholesky_solve((y - self.mean_constant).unsqueeze(-1), L)
            mean = self.mean_constant + (Ks.transpose(-1, -2) @ alpha).squeeze(-1)
            v = torch.linalg.solve_triangular(L, Ks, upper=False)
            var = self.covar_module(Xs, Xs).diagonal() - v.pow(2).sum(0)
            return mean, var

    model = ExactGP()
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    losses, grads = [], []
    for i in range(15):
        optimizer.zero_grad()
        loss = -model.mll(X, y) / X.shape[0]
        loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
        optimizer.step()
        losses.append(loss.item())
    mean, var = model.predict(X, y, Xs)
    return dict(losses=losses, grads=torch.stack(grads), lengthscale=model.covar_module.lengthscale.detach(),
                outputscale=F.softplus(model.covar_module.raw_outputscale).detach(), noise=model.noise().detach(),
                mean_constant=model.mean_constant.detach(), mean=mean, var=var)


def test_matern_gp_marginal_likelihood():
    ours, _ = run_both(matern_gp, **TOL)
    assert ours["losses"][-1] < ours["losses"][0]
    X, y, Xs = regression_data()
    ls, os_, noise, c = ours["lengthscale"], ours["outputscale"], ours["noise"], ours["mean_constant"]
    K = numpy_matern52(X, X, ls, os_) + noise * np.eye(len(X))
    Ks = numpy_matern52(X, Xs, ls, os_)
    np.testing.assert_allclose(ours["mean"], c + Ks.T @ np.linalg.solve(K, y - c), rtol=1e-8)
    np.testing.assert_allclose(ours["var"], os_ - np.einsum("ij,ij->j", Ks, np.linalg.solve(K, Ks)), rtol=1e-8)



def numpy_matern52(x1, x2, lengthscale, outputscale):
    d = np.sqrt(np.maximum((((x1[:, None, :] - x2[None, :, :]) / lengthscale) ** 2).sum(-1), 1e-30))
    return outputscale * (1 + math.sqrt(5) * d + 5.0 / 3.0 * d ** 2) * np.exp(-math.sqrt(5) * d)


# ----------------------------------------------------------------------------------------------
# Sparse variational GP (Titsias / Hensman): inducing points, a whitened-free variational Cholesky
# built with tril and a positive diagonal, KL(q(u) || p(u)) by kl_divergence of two MultivariateNormals
# ----------------------------------------------------------------------------------------------


def svgp(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_np = torch.from_numpy
    X, y, Xs = (from_np(a) for a in regression_data(n=40))
    dist = m.torch.distributions

    def rbf(x1, x2, lengthscale, outputscale):
        return outputscale * torch.exp(-0.5 * torch.cdist(x1 / lengthscale, x2 / lengthscale).pow(2))

    class SVGP(nn.Module):
        def __init__(self, Z):
            super().__init__()
            M = Z.shape[0]
            self.Z = nn.Parameter(Z.clone())
            self.q_mu = nn.Parameter(torch.zeros(M, dtype=torch.float64))
            self.q_sqrt_raw = nn.Parameter(torch.eye(M, dtype=torch.float64) * 0.5)
            self.log_lengthscale = nn.Parameter(torch.zeros(2, dtype=torch.float64))
            self.log_outputscale = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
            self.log_noise = nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))

        def q_sqrt(self):
            L = torch.tril(self.q_sqrt_raw, diagonal=-1)
            return L + torch.diag_embed(F.softplus(torch.diagonal(self.q_sqrt_raw)))

        def elbo(self, X, y):
            ls, os_ = self.log_lengthscale.exp(), self.log_outputscale.exp()
            M = self.Z.shape[0]
            Kzz = rbf(self.Z, self.Z, ls, os_) + 1e-6 * torch.eye(M, dtype=X.dtype)
            Kzx = rbf(self.Z, X, ls, os_)
            Lz = torch.linalg.cholesky(Kzz)
            A = torch.linalg.solve_triangular(Lz, Kzx, upper=False)  # Lz^-1 Kzx
            B = torch.linalg.solve_triangular(Lz.mT, A, upper=True)  # Kzz^-1 Kzx
            S_sqrt = self.q_sqrt()
            f_mean = B.mT @ self.q_mu
            SB = S_sqrt.mT @ B
            f_var = os_ - A.pow(2).sum(0) + SB.pow(2).sum(0)
            noise = self.log_noise.exp()
            expected_ll = (-0.5 * math.log(2 * math.pi) - 0.5 * torch.log(noise)
                           - 0.5 * ((y - f_mean).pow(2) + f_var) / noise).sum()
            q_u = dist.MultivariateNormal(self.q_mu, scale_tril=S_sqrt)
            p_u = dist.MultivariateNormal(torch.zeros(M, dtype=X.dtype), scale_tril=Lz)
            kl = dist.kl_divergence(q_u, p_u)
            return expected_ll - kl, kl

    Z0 = X[::5].clone()
    model = SVGP(Z0)
    optimizer = optim.Adam(model.parameters(), lr=0.03)
    elbos, kls = [], []
    for step in range(20):
        optimizer.zero_grad()
        elbo, kl = model.elbo(X, y)
        (-elbo).backward()
        optimizer.step()
        elbos.append(elbo.item())
        kls.append(kl.item())
    grad_Z = model.Z.grad.clone()
    return dict(elbos=elbos, kls=kls, Z=model.Z.detach(), q_sqrt=model.q_sqrt().detach(), grad_Z=grad_Z)


def test_svgp_elbo_with_kl():
    ours, _ = run_both(svgp, **TOL)
    assert ours["elbos"][-1] > ours["elbos"][0]
    assert all(k >= 0 for k in ours["kls"])
    assert np.allclose(np.triu(ours["q_sqrt"], 1), 0) and np.all(np.diag(ours["q_sqrt"]) > 0)


# ----------------------------------------------------------------------------------------------
# Kernel ridge regression with torch.linalg.solve, its bandwidth and ridge chosen by gradient on the
# closed-form leave-one-out error (the diagonal of the hat matrix from cholesky_inverse)
# ----------------------------------------------------------------------------------------------


def kernel_ridge(m):
    torch, optim = m.torch, m.optim
    X, y, Xs = (torch.from_numpy(a) for a in regression_data(n=35, seed=5))
    log_gamma = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    log_lam = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)

    def gram(a, b, gamma):
        return torch.exp(-gamma * torch.cdist(a, b, p=2.0) ** 2)

    def loo_error(gamma, lam):
        K = gram(X, X, gamma)
        A = K + lam * torch.eye(len(X), dtype=X.dtype)
        L, info = torch.linalg.cholesky_ex(A)
        A_inv = torch.cholesky_inverse(L)
        alpha = A_inv @ y
        loo_resid = alpha / torch.diagonal(A_inv)
        return loo_resid.pow(2).mean()

    optimizer = optim.Adam([log_gamma, log_lam], lr=0.1)
    errs = []
    for step in range(20):
        optimizer.zero_grad()
        err = loo_error(log_gamma.exp(), log_lam.exp())
        err.backward()
        optimizer.step()
        errs.append(err.item())

    gamma, lam = log_gamma.detach().exp(), log_lam.detach().exp()
    K = gram(X, X, gamma)
    alpha = torch.linalg.solve(K + lam * torch.eye(len(X), dtype=X.dtype), y)
    pred = gram(Xs, X, gamma) @ alpha
    # the same fit through the batched, left-hand solve with several right-hand sides
    Y2 = torch.stack([y, 2 * y], 1)
    alpha2 = torch.linalg.solve(K + lam * torch.eye(len(X), dtype=X.dtype), Y2, left=True)
    return dict(errs=errs, gamma=gamma, lam=lam, alpha=alpha, pred=pred, alpha2=alpha2,
                grads=torch.stack([log_gamma.grad, log_lam.grad]))


def test_kernel_ridge_loo():
    ours, _ = run_both(kernel_ridge, **TOL)
    X, y, Xs = regression_data(n=35, seed=5)
    gamma, lam = float(ours["gamma"]), float(ours["lam"])
    K = np.exp(-gamma * ((X[:, None] - X[None]) ** 2).sum(-1))
    alpha = np.linalg.solve(K + lam * np.eye(len(X)), y)
    np.testing.assert_allclose(ours["alpha"], alpha, rtol=1e-8)
    np.testing.assert_allclose(ours["alpha2"][:, 1], 2 * alpha, rtol=1e-8)
    assert ours["errs"][-1] < ours["errs"][0]


def gp_hessian(m):
    torch = m.torch
    X, y, _ = (torch.from_numpy(a) for a in regression_data(n=15, d=1, seed=11))

    def nll(theta):
        ls, os_, noise = theta.exp().unbind()
        K = os_ * torch.exp(-0.5 * (X - X.T).pow(2) / ls ** 2) + noise * torch.eye(len(X), dtype=X.dtype)
        L = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y[:, None], L)
        v = torch.linalg.solve_triangular(L, y[:, None], upper=False)
        return 0.5 * (v * v).sum() + 0.25 * (y[:, None] * alpha).sum() * 0 + L.diagonal().log().sum()

    theta = torch.tensor([0.0, 0.2, -1.5], dtype=torch.float64)
    g = torch.autograd.functional.jacobian(nll, theta)
    H = torch.autograd.functional.hessian(nll, theta)
    # the same Hessian by double backward, as authors write a Newton step
    t = theta.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(nll(t), t, create_graph=True)
    rows = [torch.autograd.grad(g1[i], t, retain_graph=True)[0] for i in range(3)]
    newton = theta - torch.linalg.solve(H, g)
    return dict(g=g, H=H, H2=torch.stack(rows), newton=newton, nll_newton=nll(newton))


def test_gp_hessian_through_cholesky():
    ours, _ = run_both(gp_hessian, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours["H"], ours["H2"], rtol=1e-10)
    np.testing.assert_allclose(ours["H"], ours["H"].T, rtol=1e-8)


# ----------------------------------------------------------------------------------------------
# GP classification by the Laplace approximation (Rasmussen & Williams Algorithm 3.1 and 3.2): Newton
# iterations with B = I + W^½ K W^½, its Cholesky, the approximate marginal likelihood differentiated in
# the kernel hyperparameters, and the probit-averaged predictive with Normal(0, 1).cdf
# ----------------------------------------------------------------------------------------------


def gp_laplace_classification(m):
    torch, optim = m.torch, m.optim
    Xn, labels = classification_data(n=40, d=2, classes=2, seed=12)
    X = torch.from_numpy(Xn)
    y = torch.from_numpy(2.0 * labels - 1)  # labels in {-1, +1}
    Xs = torch.from_numpy(np.array([[0.0, 0.0], [1.0, -1.0], [-2.0, 2.0]]))
    std_normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64),
                                            torch.tensor(1.0, dtype=torch.float64))

    def kernel(a, b, log_ls, log_sf):
        d2 = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)
        return torch.exp(2 * log_sf) * torch.exp(-0.5 * d2 / torch.exp(2 * log_ls))

    def laplace_mode(K, iters=12):
        n = K.shape[0]
        f = torch.zeros(n, dtype=K.dtype)
        for _ in range(iters):
            pi = torch.sigmoid(f)
            t = (y + 1) / 2
            grad = t - pi
            W = pi * (1 - pi)
            sW = W.sqrt()
            B = torch.eye(n, dtype=K.dtype) + sW[:, None] * K * sW[None, :]
            L = torch.linalg.cholesky(B)
            b = W * f + grad
            a = b - sW * torch.cholesky_solve((sW * (K @ b)).unsqueeze(-1), L).squeeze(-1)
            f = K @ a
        return f, a, L, sW

    log_ls = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    log_sf = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    opt = optim.Adam([log_ls, log_sf], lr=0.05)
    evidences = []
    for step in range(8):
        opt.zero_grad()
        K = kernel(X, X, log_ls, log_sf)
        f, a, L, sW = laplace_mode(K.detach())  # the mode found without a graph, as GPML does
        f = K @ a  # re-attached: the explicit dependence of the objective on K
        log_lik = -m.F.softplus(-y * f).sum()
        log_q = -0.5 * a @ f + log_lik - L.diagonal().log().sum()
        (-log_q).backward()
        opt.step()
        evidences.append(log_q.item())

    with torch.no_grad():
        K = kernel(X, X, log_ls, log_sf)
        f, a, L, sW = laplace_mode(K)
        Ks = kernel(X, Xs, log_ls, log_sf)
        pi = torch.sigmoid(f)
        fs_mean = Ks.T @ ((y + 1) / 2 - pi)
        v = torch.linalg.solve_triangular(L, sW[:, None] * Ks, upper=False)
        fs_var = torch.exp(2 * log_sf) - v.pow(2).sum(0)
        # MacKay's probit approximation of E[sigmoid(f*)], and the probit likelihood's exact average
        kappa = 1 / torch.sqrt(1 + math.pi * fs_var / 8)
        p_logit = torch.sigmoid(kappa * fs_mean)
        p_probit = std_normal.cdf(fs_mean / torch.sqrt(1 + fs_var))
    return dict(evidences=evidences, log_ls=log_ls.detach(), log_sf=log_sf.detach(), f=f, fs_mean=fs_mean,
                fs_var=fs_var, p_logit=p_logit, p_probit=p_probit)


def test_gp_laplace_classification():
    ours, _ = run_both(gp_laplace_classification, **TOL)
    assert np.all((0 < ours["p_logit"]) & (ours["p_logit"] < 1)) and np.all(ours["fs_var"] > 0)
    Xn, labels = classification_data(n=40, d=2, classes=2, seed=12)
    assert ((ours["f"] > 0) == (labels == 1)).mean() > 0.7


# ----------------------------------------------------------------------------------------------
# Bayesian optimisation by hand (BoTorch's idiom without BoTorch): an exact GP on a few evaluations, expected
# improvement from Normal(0, 1).cdf and log_prob, its maximiser found by L-BFGS from the best of random
# candidates (torch.rand) with the box enforced by a sigmoid, then the loop run for a few evaluations
# ----------------------------------------------------------------------------------------------


def bayes_opt(m):
    torch, optim = m.torch, m.optim
    f64 = dict(dtype=torch.float64)
    std = torch.distributions.Normal(torch.tensor(0.0, **f64), torch.tensor(1.0, **f64))
    lo, hi = torch.tensor([-2.0, -1.0], **f64), torch.tensor([2.0, 3.0], **f64)

    def objective(x):  # Rosenbrock-like, to be minimised
        return (1 - x[..., 0]) ** 2 + 0.5 * (x[..., 1] - x[..., 0] ** 2) ** 2

    torch.manual_seed(0)
    X = lo + (hi - lo) * torch.rand(5, 2, **f64)
    Y = objective(X)
    picks, eis = [], []
    for it in range(4):
        mean_y, std_y = Y.mean(), Y.std()
        y = (Y - mean_y) / std_y
        K = torch.exp(-0.5 * torch.cdist(X / 0.8, X / 0.8) ** 2) + 1e-4 * torch.eye(len(X), **f64)
        L = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
        best = y.min()

        def neg_ei(x):
            ks = torch.exp(-0.5 * torch.cdist(x / 0.8, X / 0.8) ** 2)  # (q, n)
            mu = (ks @ alpha).squeeze(-1)
            v = torch.linalg.solve_triangular(L, ks.T, upper=False)
            sigma = (1 - (v ** 2).sum(0)).clamp_min(1e-12).sqrt()
            z = (best - mu) / sigma
            return -(sigma * (z * std.cdf(z) + std.log_prob(z).exp()))

        candidates = lo + (hi - lo) * torch.rand(64, 2, **f64)
        start = candidates[neg_ei(candidates).argmin()]
        raw = torch.logit((start - lo) / (hi - lo)).clone().requires_grad_(True)
        opt = optim.LBFGS([raw], lr=0.5, max_iter=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = neg_ei((lo + (hi - lo) * torch.sigmoid(raw)).unsqueeze(0)).sum()
            loss.backward()
            return loss

        opt.step(closure)
        x_new = (lo + (hi - lo) * torch.sigmoid(raw)).detach()
        eis.append(-neg_ei(x_new.unsqueeze(0)).item())
        picks.append(x_new)
        X = torch.cat([X, x_new.unsqueeze(0)])
        Y = torch.cat([Y, objective(x_new).unsqueeze(0)])
    return dict(picks=torch.stack(picks), eis=eis, Y=Y)


def test_bayesian_optimisation_loop():
    ours, _ = run_both(bayes_opt, rtol=1e-7, atol=1e-9)
    picks = ours["picks"]
    assert np.all((picks >= [-2, -1]) & (picks <= [2, 3]))
    assert all(e >= 0 for e in ours["eis"])
