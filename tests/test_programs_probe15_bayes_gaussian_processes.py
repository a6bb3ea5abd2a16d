# ruff: noqa: B007, B023, E501, E731, F841  (the programs are kept as their authors wrote them)
"""Bayesian and probabilistic deep learning as PyTorch users write it, run as tests/probe15_bayes_common.py says.
Gaussian processes: deep kernel learning with GPyTorch's ``psd_safe_cholesky``; a Laplace approximation over GP
log-hyperparameters with Hessians by four transforms of five likelihood forms."""

import math

import numpy as np

from .pytorch_programs import OURS, assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Deep kernel learning (Wilson et al.): a feature extractor under an ARD RBF kernel, the exact
# marginal likelihood of a batch of tasks (batched cholesky / cholesky_solve, the logdet from the
# diagonal, MultivariateNormal(scale_tril=L).log_prob), GPyTorch's psd_safe_cholesky (cholesky_ex,
# jitter added in place on the diagonal of a clone), Adam with one learning rate per group, and the
# predictive by solve_triangular (left and right) and an upper factor
# ----------------------------------------------------------------------------------------------


def feature_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def deep_kernel_gp(m, weights, steps=12):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    rng = np.random.default_rng(8)
    xn = rng.uniform(-2, 2, (30, 2))
    yn = np.stack([np.sin(xn[:, 0] * 2) + xn[:, 1] ** 2 * 0.3, np.cos(xn.sum(1))]) + 0.05 * rng.standard_normal((2, 30))
    X, Y = torch.from_numpy(xn), torch.from_numpy(yn)            # Y: (tasks, n)

    def psd_safe_cholesky(A, upper=False, jitter=None, max_tries=4):
        L, info = torch.linalg.cholesky_ex(A)
        if not torch.any(info):
            return L.mT if upper else L, 0.0
        if torch.isnan(A).any():
            raise ValueError("cholesky_cpu: input matrix contains NaNs")
        if jitter is None:
            jitter = 1e-6 if A.dtype == torch.float32 else 1e-8
        Aprime = A.clone()
        jitter_prev = 0
        for i in range(max_tries):
            jitter_new = jitter * (10 ** i)
            Aprime.diagonal(dim1=-2, dim2=-1).add_(jitter_new - jitter_prev)
            jitter_prev = jitter_new
            L, info = torch.linalg.cholesky_ex(Aprime)
            if not torch.any(info):
                return L.mT if upper else L, jitter_new
        raise torch.linalg.LinAlgError(f"Matrix not positive definite after repeatedly adding jitter up to {jitter_new:.1e}.")

    class DKLModel(nn.Module):
        def __init__(self, extractor):
            super().__init__()
            self.feature_extractor = extractor
            self.raw_lengthscale = nn.Parameter(torch.zeros(2, 1, 3, dtype=torch.float64))
            self.raw_outputscale = nn.Parameter(torch.zeros(2, 1, 1, dtype=torch.float64))
            self.raw_noise = nn.Parameter(torch.full((2, 1, 1), -2.0, dtype=torch.float64))
            self.mean_constant = nn.Parameter(torch.zeros(2, 1, dtype=torch.float64))

        def kernel(self, a, b):
            ls = F.softplus(self.raw_lengthscale)
            a, b = a.unsqueeze(0).div(ls), b.unsqueeze(0).div(ls)        # (tasks, n, d)
            sq = (a.pow(2).sum(-1, keepdim=True) - 2 * a @ b.mT + b.pow(2).sum(-1).unsqueeze(-2)).clamp_min(0)
            return F.softplus(self.raw_outputscale) * torch.exp(-0.5 * sq)

        def covariance(self, z):
            K = self.kernel(z, z)
            n = z.shape[0]
            return K + F.softplus(self.raw_noise) * torch.eye(n, dtype=z.dtype)

        def mll(self, x, y):
            z = self.feature_extractor(x)
            K = self.covariance(z)
            L, _ = psd_safe_cholesky(K)
            r = (y - self.mean_constant).unsqueeze(-1)
            alpha = torch.cholesky_solve(r, L)
            n = x.shape[0]
            by_hand = -0.5 * (r * alpha).sum((-2, -1)) - L.diagonal(dim1=-2, dim2=-1).log().sum(-1) \
                - 0.5 * n * math.log(2 * math.pi)
            by_mvn = D.MultivariateNormal(self.mean_constant.expand(2, n), scale_tril=L).log_prob(y)
            return by_hand, by_mvn

    model = DKLModel(load(m, feature_net(m), weights).double())
    optimizer = optim.Adam([
        {"params": model.feature_extractor.parameters()},
        {"params": [model.raw_lengthscale, model.raw_outputscale, model.raw_noise, model.mean_constant], "lr": 0.05},
    ], lr=0.01)
    history = []
    for i in range(steps):
        optimizer.zero_grad()
        by_hand, by_mvn = model.mll(X, Y)
        loss = -by_mvn.sum() / X.shape[0]
        loss.backward()
        optimizer.step()
        history.append((by_hand.detach(), by_mvn.detach()))

    Xs = torch.tensor([[0.0, 0.0], [1.5, -1.0], [3.0, 3.0]], dtype=torch.float64)
    with torch.no_grad():
        z, zs = model.feature_extractor(X), model.feature_extractor(Xs)
        K = model.covariance(z)
        U, _ = psd_safe_cholesky(K, upper=True)
        Ks = model.kernel(z, zs)                                 # (tasks, n, s)
        r = (Y - model.mean_constant).unsqueeze(-1)
        mean = model.mean_constant.unsqueeze(-1) + Ks.mT @ torch.cholesky_solve(r, U, upper=True)
        V = torch.linalg.solve_triangular(U.mT, Ks, upper=False)
        Vr = torch.linalg.solve_triangular(U, Ks.mT, upper=True, left=False)  # Ks^T U^-1 = V^T
        var = model.kernel(zs, zs).diagonal(dim1=-2, dim2=-1) - V.pow(2).sum(-2)
    # a singular Gram matrix (repeated inputs, no noise) takes jitter, its gradient through the in-place add
    A = torch.ones(4, 4, dtype=torch.float64, requires_grad=True)
    L0, info0 = torch.linalg.cholesky_ex(A.detach())
    Lj, jitter = psd_safe_cholesky(A * 1.0)
    Lj.diagonal().log().sum().backward()
    return {"history": history, "mean": mean.squeeze(-1), "var": var, "V": V, "Vr_T": Vr.mT,
            "params": [p.detach() for p in model.parameters()], "info0": info0, "jitter": jitter,
            "Lj": Lj.detach(), "A_grad": A.grad}


def test_deep_kernel_learning_psd_safe_cholesky():
    ours, _ = run_both(deep_kernel_gp, weights_of(feature_net), rtol=1e-7, atol=1e-9)
    for by_hand, by_mvn in ours["history"]:
        np.testing.assert_allclose(by_hand, by_mvn, rtol=1e-10)
    np.testing.assert_allclose(ours["V"], ours["Vr_T"], rtol=1e-9, atol=1e-12)
    assert int(ours["info0"]) == 2 and ours["jitter"] > 0 and (ours["var"] > 0).all()


# ----------------------------------------------------------------------------------------------
# A Laplace approximation over a GP's log-hyperparameters: the MAP by Adam then L-BFGS (strong
# Wolfe), the Hessian of the negative log marginal likelihood (with a log-normal prior) by
# torch.func.hessian, jacfwd(jacfwd), jacrev(jacrev) and autograd.functional.hessian with the
# forward-mode outer Jacobian, for five ways of writing the likelihood (cholesky_solve,
# MultivariateNormal, solve + slogdet, cholesky_inverse + logdet, solve_triangular), then
# hyperparameter samples from N(MAP, H^-1) averaged in the predictive
# ----------------------------------------------------------------------------------------------

GP_WAYS = ("chol", "mvn", "slogdet", "inv", "tri")
HESSIANS = ("hessian", "jacfwd_jacfwd", "jacrev_jacrev", "af_forward")


def gp_hyper_problem(m):
    """The data, the kernel and the negative log posterior of the log-hyperparameters."""
    torch = m.torch
    D = torch.distributions
    rng = np.random.default_rng(12)
    X = torch.from_numpy(rng.uniform(-3, 3, (15, 1)))
    y = torch.sin(1.5 * X[:, 0]) + 0.1 * torch.from_numpy(rng.standard_normal(15))
    n = X.shape[0]
    prior = D.Normal(torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64))

    def rbf(a, b, ls, os_):
        return os_ * torch.exp(-0.5 * ((a / ls) - (b / ls).T).pow(2))   # (no cdist: PyTorch has no 2nd derivative of it)

    def neg_log_posterior(theta, way="chol"):
        ls, os_, noise = theta.exp()
        K = rbf(X, X, ls, os_) + noise * torch.eye(n, dtype=X.dtype)
        if way == "mvn":
            nll = -D.MultivariateNormal(torch.zeros(n, dtype=X.dtype), covariance_matrix=K).log_prob(y)
        elif way == "slogdet":
            nll = 0.5 * y @ torch.linalg.solve(K, y) + 0.5 * torch.linalg.slogdet(K)[1] + 0.5 * n * math.log(2 * math.pi)
        elif way == "inv":
            L = torch.linalg.cholesky(K)
            nll = 0.5 * y @ torch.cholesky_inverse(L) @ y + torch.logdet(L) + 0.5 * n * math.log(2 * math.pi)
        elif way == "tri":
            L = torch.linalg.cholesky(K)
            a = torch.linalg.solve_triangular(L, y.unsqueeze(-1), upper=False)
            nll = 0.5 * a.pow(2).sum() + L.diagonal().log().sum() + 0.5 * n * math.log(2 * math.pi)
        else:
            L = torch.linalg.cholesky(K)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
            nll = 0.5 * (y.unsqueeze(-1) * alpha).sum() + L.diagonal().log().sum() + 0.5 * n * math.log(2 * math.pi)
        return nll - prior.log_prob(theta).sum()

    return X, y, rbf, neg_log_posterior


def gp_hyper_laplace(m, ways=GP_WAYS, hessians=HESSIANS):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    func = torch.func
    X, y, rbf, neg_log_posterior = gp_hyper_problem(m)
    n = X.shape[0]
    Xs = torch.linspace(-4, 4, 5, dtype=torch.float64).unsqueeze(1)
    theta = nn.Parameter(torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    adam = optim.Adam([theta], lr=0.05)
    for i in range(20):
        adam.zero_grad()
        neg_log_posterior(theta).backward()
        adam.step()
    lbfgs = optim.LBFGS([theta], lr=1, max_iter=50, line_search_fn="strong_wolfe", tolerance_grad=1e-10)

    def closure():
        lbfgs.zero_grad()
        loss = neg_log_posterior(theta)
        loss.backward()
        return loss

    lbfgs.step(closure)
    theta_map = theta.detach().clone()
    H = {}
    for way in ways:
        f = lambda t: neg_log_posterior(t, way)
        for how in hessians:
            if how == "hessian":
                H[way, how] = func.hessian(f)(theta_map)
            elif how == "jacfwd_jacfwd":
                H[way, how] = func.jacfwd(func.jacfwd(f))(theta_map)
            elif how == "jacrev_jacrev":
                H[way, how] = func.jacrev(func.jacrev(f))(theta_map)
            else:
                try:
                    H[way, how] = torch.autograd.functional.hessian(f, theta_map, vectorize=True,
                                                                    outer_jacobian_strategy="forward-mode")
                except RuntimeError as error:  # PyTorch's batched forward mode through cholesky_inverse
                    H[way, how] = f"RuntimeError: {error}"
    Hm = func.jacrev(func.jacrev(neg_log_posterior))(theta_map)
    posterior = D.MultivariateNormal(theta_map, precision_matrix=Hm)
    torch.manual_seed(0)
    draws = posterior.sample((6,))
    means = []
    for t in draws:
        ls, os_, noise = t.exp()
        K = rbf(X, X, ls, os_) + noise * torch.eye(n, dtype=X.dtype)
        L = torch.linalg.cholesky(K)
        means.append(rbf(Xs, X, ls, os_) @ torch.cholesky_solve(y.unsqueeze(-1), L))
    return {"theta_map": theta_map, "grad_at_map": theta.grad, "H": {f"{w}/{h}": v for (w, h), v in H.items()},
            "Hm": Hm, "cov": posterior.covariance_matrix, "draws": draws, "bma": torch.stack(means).mean(0).squeeze(-1)}


def test_gp_hyperparameter_laplace_hessians_agree():
    # PyTorch's forward-mode derivative of cholesky_inverse is wrong (pytorch/pytorch#196682; its vectorised
    # forward-mode Hessian there raises a shape error in dot), and so is its forward-over-forward through
    # linalg.solve / slogdet (#198017): those are compared with chainrule's own reverse-over-reverse Hessian
    # and with finite differences below, the rest with PyTorch
    compared = [(way, how) for way in GP_WAYS for how in HESSIANS
                if not (way == "inv" and how != "jacrev_jacrev") and not (way == "slogdet" and how == "jacfwd_jacfwd")]
    ours, theirs = run_both(gp_hyper_laplace, compare=False)
    if theirs is not None:
        for key in ("theta_map", "Hm", "cov", "draws", "bma"):
            assert_same(ours[key], theirs[key], 1e-7, 1e-9, key)
        for way, how in compared:
            assert_same(ours["H"][f"{way}/{how}"], theirs["H"][f"{way}/{how}"], 1e-7, 1e-9, f"{way}/{how}")
    for name, H in ours["H"].items():
        np.testing.assert_allclose(H, ours["Hm"], rtol=1e-8, atol=1e-9, err_msg=name)
    assert np.abs(ours["grad_at_map"]).max() < 1e-4 and np.all(np.linalg.eigvalsh(ours["Hm"]) > 0)
    # the Hessian by central differences of the gradient, on chainrule alone
    torch = OURS.torch
    _, _, _, neg_log_posterior = gp_hyper_problem(OURS)
    theta = torch.tensor(ours["theta_map"])
    eps = 1e-5
    columns = []
    for i in range(3):
        step = torch.tensor(np.eye(3)[i] * eps)
        plus, minus = (torch.func.grad(neg_log_posterior)(theta + s) for s in (step, -step))
        columns.append(((plus - minus) / (2 * eps)).numpy())
    np.testing.assert_allclose(np.stack(columns, 1), ours["Hm"], rtol=1e-5, atol=1e-6)
