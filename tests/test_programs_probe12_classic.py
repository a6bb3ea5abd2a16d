# ruff: noqa: B007, B008, B023, E741, E731, F841, N802, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Classical machine learning and Bayesian numerics as GPyTorch / Pyro / scikit-learn-in-torch users write
them (see tests/pytorch_programs.py), each run on chainrule and on PyTorch in float64 from the same data and
initial values, comparing values, hyperparameters and gradients (to about 1e-9 unless said), and checked
against NumPy by hand where the formula is short (so that they still assert something without PyTorch).

Exact GP regression with an ARD Matérn-5/2 kernel written as GPyTorch computes it (in-place ``clamp_min_`` /
``sqrt_`` distances, noise added through a diagonal view, logdet from the Cholesky diagonal, ``cholesky_solve``,
``solve_triangular``); a sparse variational GP (inducing points, ``tril`` variational factor,
``kl_divergence`` of two ``MultivariateNormal(scale_tril=...)``); Bayesian linear regression in closed form
(``inv``, ``slogdet``, evidence by Adam and by Bishop's fixed point with ``eigvalsh``); logistic regression by
``LBFGS(line_search_fn="strong_wolfe")`` (binary and multinomial); k-means (k-means++ with ``multinomial``,
``cdist``/``argmin``, ``scatter_add_``/``index_add_``/``bincount``) and soft k-means by gradient; PCA by
``linalg.svd`` with sklearn's ``svd_flip`` and by ``eigh``; kernel ridge regression (``solve``,
``cholesky_ex``/``cholesky_inverse`` for the leave-one-out error); LDA (the generalised eigenproblem through
the Cholesky of Sw); a Gaussian mixture by EM (batched ``MultivariateNormal.log_prob``, ``logsumexp``,
``einsum`` covariances, then ``MixtureSameFamily`` gradients); MAP with priors through ``biject_to`` /
``transform_to`` (Normal, HalfCauchy, Gamma, Beta, a ``TransformedDistribution``; ``StudentT`` likelihood) and
a Laplace approximation from ``autograd.functional.hessian``; HMC with ``autograd.grad``; matrix calculus in
training loops (``slogdet`` of a negative determinant, ``inv``, ``pinv`` rank-deficient and hermitian,
``matrix_exp``, eigh-based matrix log / square root, nuclear norm) and the Hessian of a GP marginal likelihood;
GP classification by the Laplace approximation; variational Bayesian logistic regression (Normal guide
``rsample``, analytic KL); spectral clustering (``fill_diagonal_``, ``eigh``, ``lobpcg``, ``F.normalize``) with
a batched multi-output GP; Pyro-style Beta / Dirichlet / Gamma guides; a Gibbs sampler (Categorical, Dirichlet, Normal,
Gamma and float64 Bernoulli draws after one seed); a VonMises mixture fitted by maximum likelihood from
VonMises draws; the Gaussian's quantile in its tails (copula scores, truncated-normal draws by the inverse
CDF, probit regression with ``special.log_ndtr``); Bayesian optimisation by hand (expected improvement from
``Normal.cdf`` / ``log_prob``, maximised by L-BFGS through a sigmoid box); t-SNE (perplexity by bisection,
``F.kl_div``), the lasso by ISTA (``F.softshrink``) and a kernel density bandwidth by leave-one-out likelihood."""

import math

import numpy as np

from .pytorch_programs import run_both

TOL = dict(rtol=1e-9, atol=1e-10)


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
# Bayesian linear regression (Bishop 3.3-3.5): closed-form posterior, evidence maximised over alpha and
# beta by gradient, and by the fixed-point updates through eigvalsh
# ----------------------------------------------------------------------------------------------


def blr_data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    Phi = np.stack([x ** k for k in range(5)], 1)
    w_true = np.array([0.3, -1.0, 0.5, 0.8, 0.0])
    t = Phi @ w_true + 0.2 * rng.standard_normal(n)
    return Phi, t


def bayesian_linear_regression(m):
    torch, optim = m.torch, m.optim
    Phi, t = (torch.from_numpy(a) for a in blr_data())
    N, M = Phi.shape
    log_alpha = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    log_beta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    def posterior(alpha, beta):
        S_N_inv = alpha * torch.eye(M, dtype=torch.float64) + beta * Phi.T @ Phi
        S_N = torch.linalg.inv(S_N_inv)
        m_N = beta * S_N @ Phi.T @ t
        return m_N, S_N, S_N_inv

    def log_evidence(alpha, beta):
        m_N, S_N, A = posterior(alpha, beta)
        E = beta / 2 * (t - Phi @ m_N).pow(2).sum() + alpha / 2 * m_N @ m_N
        sign, logabsdet = torch.linalg.slogdet(A)
        return (M / 2 * torch.log(alpha) + N / 2 * torch.log(beta) - E - 0.5 * logabsdet
                - N / 2 * math.log(2 * math.pi))

    optimizer = optim.Adam([log_alpha, log_beta], lr=0.1)
    evidences = []
    for it in range(25):
        optimizer.zero_grad()
        loss = -log_evidence(log_alpha.exp(), log_beta.exp())
        loss.backward()
        optimizer.step()
        evidences.append(-loss.item())

    # Bishop's fixed-point updates, starting from the same values
    alpha, beta = torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    eig0 = torch.linalg.eigvalsh(Phi.T @ Phi)
    for it in range(10):
        m_N, S_N, _ = posterior(alpha, beta)
        lam = beta * eig0
        gamma = (lam / (alpha + lam)).sum()
        alpha = gamma / (m_N @ m_N)
        beta = (N - gamma) / (t - Phi @ m_N).pow(2).sum()
    m_N, S_N, _ = posterior(alpha, beta)
    phi_star = torch.stack([torch.linspace(-1, 1, 5, dtype=torch.float64) ** k for k in range(M)], 1)
    pred_mean = phi_star @ m_N
    pred_var = 1 / beta + (phi_star @ S_N * phi_star).sum(-1)
    return dict(evidences=evidences, log_alpha=log_alpha.detach(), log_beta=log_beta.detach(),
                alpha=alpha, beta=beta, m_N=m_N, pred_mean=pred_mean, pred_var=pred_var,
                evidence_grad=torch.stack([log_alpha.grad, log_beta.grad]))


def test_bayesian_linear_regression():
    ours, _ = run_both(bayesian_linear_regression, **TOL)
    Phi, t = blr_data()
    alpha, beta = float(ours["alpha"]), float(ours["beta"])
    S_N = np.linalg.inv(alpha * np.eye(5) + beta * Phi.T @ Phi)
    np.testing.assert_allclose(ours["m_N"], beta * S_N @ Phi.T @ t, rtol=1e-9)
    assert ours["evidences"][-1] > ours["evidences"][0]


# ----------------------------------------------------------------------------------------------
# Logistic regression fitted by L-BFGS with a strong-Wolfe line search (sklearn's lbfgs solver in torch):
# binary with an L2 penalty on the weights only, and multinomial with cross_entropy
# ----------------------------------------------------------------------------------------------


def classification_data(n=60, d=3, classes=3, seed=2):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)) * 1.5
    labels = rng.integers(0, classes, n)
    X = centers[labels] + rng.standard_normal((n, d))
    return X, labels


def logistic_lbfgs(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Xn, labels = classification_data()
    X = torch.from_numpy(Xn)
    yb = torch.from_numpy((labels == 0).astype(np.float64))
    yc = torch.from_numpy(labels)

    C = 1.0
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = optim.LBFGS([w, b], lr=1, max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-12,
                      history_size=10, line_search_fn="strong_wolfe")
    evals = []

    def closure():
        opt.zero_grad()
        logits = X @ w + b
        loss = F.binary_cross_entropy_with_logits(logits, yb, reduction="sum") + 0.5 / C * w.dot(w)
        loss.backward()
        evals.append(loss.item())
        return loss

    first = opt.step(closure)
    state = opt.state[opt._params[0]]
    binary = dict(w=w.detach().clone(), b=b.detach().clone(), first=first.detach(), n_iter=state["n_iter"],
                  func_evals=state["func_evals"], evals=evals)

    linear = nn.Linear(3, 3).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.1, -0.1], [0.2, 0.2, 0.2]]))
        linear.bias.zero_()
    opt = optim.LBFGS(linear.parameters(), lr=0.5, max_iter=30, line_search_fn="strong_wolfe")
    losses = []
    for epoch in range(2):
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(linear(X), yc) + 1e-2 * linear.weight.pow(2).sum()
            loss.backward()
            return loss
        losses.append(opt.step(closure).item())
    with torch.no_grad():
        proba = F.softmax(linear(X), dim=1)
        acc = (proba.argmax(1) == yc).double().mean()
    return dict(binary=binary, losses=losses, weight=linear.weight.detach(), bias=linear.bias.detach(),
                proba=proba, acc=acc)


def test_logistic_regression_lbfgs():
    ours, _ = run_both(logistic_lbfgs, rtol=1e-7, atol=1e-8)
    Xn, labels = classification_data()
    w, b = ours["binary"]["w"], ours["binary"]["b"]
    p = 1 / (1 + np.exp(-(Xn @ w + b)))
    grad = Xn.T @ (p - (labels == 0)) + w  # the penalised objective is stationary at the optimum
    np.testing.assert_allclose(grad, 0, atol=1e-4)
    assert ours["acc"] > 0.8


# ----------------------------------------------------------------------------------------------
# k-means (Lloyd) with cdist/argmin and centroid updates by scatter_add_ and index_add_, k-means++ seeding
# with torch.multinomial, inertia; and mini-batch soft k-means whose centroids are learnt by gradient
# ----------------------------------------------------------------------------------------------


def blobs(n=90, seed=3):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [4.0, 4.0], [-4.0, 3.0]])
    labels = rng.integers(0, 3, n)
    return centers[labels] + 0.7 * rng.standard_normal((n, 2)), labels


def kmeans(m):
    torch, F = m.torch, m.F
    X = torch.from_numpy(blobs()[0])
    n, d = X.shape
    k = 3
    torch.manual_seed(0)

    # k-means++ seeding
    centers = X[torch.randint(0, n, (1,))]
    for _ in range(1, k):
        d2 = torch.cdist(X, centers).pow(2).min(dim=1).values
        idx = torch.multinomial(d2 / d2.sum(), 1)
        centers = torch.cat([centers, X[idx]], 0)
    init = centers.clone()

    inertias = []
    for it in range(10):
        dists = torch.cdist(X, centers)
        assign = dists.argmin(dim=1)
        sums = torch.zeros(k, d, dtype=X.dtype).scatter_add_(0, assign.unsqueeze(1).expand(-1, d), X)
        counts = torch.zeros(k, dtype=X.dtype).index_add_(0, assign, torch.ones(n, dtype=X.dtype))
        counts2 = torch.bincount(assign, minlength=k)
        new_centers = sums / counts.clamp(min=1).unsqueeze(1)
        inertias.append(dists.gather(1, assign[:, None]).pow(2).sum().item())
        if torch.allclose(new_centers, centers):
            break
        centers = new_centers

    # soft k-means, centroids learnt by gradient on the negative log of a mixture of isotropic kernels
    mu = init.clone().requires_grad_(True)
    opt = m.optim.SGD([mu], lr=0.05, momentum=0.5)
    soft = []
    for step in range(10):
        opt.zero_grad()
        logits = -0.5 * torch.cdist(X, mu).pow(2)
        loss = -torch.logsumexp(logits, dim=1).mean()
        loss.backward()
        resp = F.softmax(logits, dim=1)
        opt.step()
        soft.append(loss.item())
    return dict(init=init, centers=centers, assign=assign, counts=counts, counts2=counts2, inertias=inertias,
                soft=soft, mu=mu.detach(), resp=resp.detach())


def test_kmeans():
    ours, _ = run_both(kmeans, **TOL)
    X = blobs()[0]
    assign = ((X[:, None] - ours["centers"][None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(assign, ours["assign"])
    for j in range(3):
        np.testing.assert_allclose(ours["centers"][j], X[assign == j].mean(0), rtol=1e-12)
    assert np.all(np.diff(ours["inertias"]) <= 1e-9)


# ----------------------------------------------------------------------------------------------
# PCA by SVD with sklearn's svd_flip sign convention, and by eigh of the covariance (descending order by
# flip); explained variance, whitening, reconstruction; torch.linalg.svd(full_matrices=False) and torch.svd
# ----------------------------------------------------------------------------------------------


def pca_data(seed=4):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((4, 4))
    return rng.standard_normal((50, 4)) @ A * np.array([3.0, 1.0, 0.5, 0.1])


def pca(m):
    torch = m.torch
    X = torch.from_numpy(pca_data())
    mean = X.mean(0)
    Xc = X - mean
    U, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    # svd_flip(u_based_decision=True): the largest |u| of each column made positive
    max_abs_cols = torch.argmax(torch.abs(U), dim=0)
    signs = torch.sign(U[max_abs_cols, torch.arange(U.shape[1])])
    U = U * signs
    Vh = Vh * signs.unsqueeze(1)
    n_components = 2
    components = Vh[:n_components]
    explained_variance = S.pow(2) / (X.shape[0] - 1)
    ratio = explained_variance / explained_variance.sum()
    Z = Xc @ components.T
    X_rec = Z @ components + mean
    whitened = Z / explained_variance[:n_components].sqrt()

    cov = torch.cov(X.T)
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0), evecs.flip(1)
    # sign: the largest |component| positive
    evecs = evecs * torch.sign(evecs[evecs.abs().argmax(0), torch.arange(4)])
    U2, S2, V2 = torch.svd(Xc)
    return dict(S=S, components=components.abs(), signs_fixed=components * torch.sign(components[:, :1]),
                ratio=ratio, Z_abs=Z.abs(), rec_err=(X - X_rec).pow(2).mean(), whitened_cov=torch.cov(whitened.T),
                evals=evals, evecs_match=(evecs.T @ Vh.T).abs(), S2=S2, U2V2=U2 @ torch.diag(S2) @ V2.T)


def test_pca_svd_and_eigh():
    ours, _ = run_both(pca, **TOL)
    X = pca_data()
    Xc = X - X.mean(0)
    S = np.linalg.svd(Xc, compute_uv=False)
    np.testing.assert_allclose(ours["S"], S, rtol=1e-10)
    np.testing.assert_allclose(ours["evals"], S ** 2 / (len(X) - 1), rtol=1e-10)
    np.testing.assert_allclose(ours["evecs_match"], np.eye(4), atol=1e-9)
    np.testing.assert_allclose(ours["U2V2"], Xc, atol=1e-10)
    np.testing.assert_allclose(ours["whitened_cov"], np.eye(2), atol=1e-10)


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


# ----------------------------------------------------------------------------------------------
# Linear discriminant analysis: within/between scatter, the generalised eigenproblem Sb v = l Sw v reduced
# through the Cholesky of Sw, projections, class posteriors from shared-covariance Gaussians
# ----------------------------------------------------------------------------------------------


def lda(m):
    torch, F = m.torch, m.F
    Xn, labels = classification_data(n=90, d=4, seed=6)
    X, y = torch.from_numpy(Xn), torch.from_numpy(labels)
    classes = torch.unique(y)
    n, d = X.shape
    means = torch.stack([X[y == c].mean(0) for c in classes])
    priors = torch.bincount(y).double() / n
    overall = X.mean(0)
    Sw = sum((X[y == c] - means[i]).T @ (X[y == c] - means[i]) for i, c in enumerate(classes))
    Sb = sum((y == c).sum() * torch.outer(means[i] - overall, means[i] - overall) for i, c in enumerate(classes))
    L = torch.linalg.cholesky(Sw)
    Linv_Sb = torch.linalg.solve_triangular(L, Sb, upper=False)
    C = torch.linalg.solve_triangular(L, Linv_Sb.T, upper=False)  # L^-1 Sb L^-T (symmetric)
    evals, V = torch.linalg.eigh(C)
    order = torch.argsort(evals, descending=True)
    evals, V = evals[order], V[:, order]
    W = torch.linalg.solve_triangular(L.T, V, upper=True)[:, : len(classes) - 1]
    W = W * torch.sign(W[0])
    proj = (X - overall) @ W

    cov = Sw / (n - len(classes))
    prec = torch.linalg.inv(cov)
    coef = means @ prec
    intercept = -0.5 * (coef * means).sum(1) + torch.log(priors)
    scores = X @ coef.T + intercept
    proba = F.softmax(scores, dim=1)
    pred = classes[scores.argmax(1)]
    return dict(evals=evals, W=W, proj=proj, coef=coef, intercept=intercept, proba=proba, pred=pred)


def test_lda():
    ours, _ = run_both(lda, **TOL)
    Xn, labels = classification_data(n=90, d=4, seed=6)
    assert (ours["pred"] == labels).mean() > 0.8
    np.testing.assert_allclose(ours["proba"].sum(1), 1, rtol=1e-12)
    assert np.all(ours["evals"][2:] < 1e-10)  # rank of Sb is classes - 1


# ----------------------------------------------------------------------------------------------
# Gaussian mixture by EM: E step with batched MultivariateNormal(scale_tril=...).log_prob and logsumexp,
# M step with weighted covariances and a regularised Cholesky; then the same mixture's likelihood
# differentiated through MixtureSameFamily
# ----------------------------------------------------------------------------------------------


def gmm_em(m):
    torch = m.torch
    D = torch.distributions
    X = torch.from_numpy(blobs(n=120, seed=7)[0])
    n, d = X.shape
    K = 3
    mu = X[torch.tensor([0, 40, 80])].clone()
    cov = torch.eye(d, dtype=X.dtype).expand(K, d, d).clone()
    pi = torch.full((K,), 1.0 / K, dtype=X.dtype)
    lls = []
    for it in range(15):
        scale_tril = torch.linalg.cholesky(cov)
        comp = D.MultivariateNormal(mu, scale_tril=scale_tril)
        log_prob = comp.log_prob(X.unsqueeze(1)) + pi.log()  # (n, K)
        log_norm = torch.logsumexp(log_prob, dim=1, keepdim=True)
        resp = (log_prob - log_norm).exp()
        lls.append(log_norm.sum().item())
        Nk = resp.sum(0) + 10 * torch.finfo(X.dtype).eps
        mu = resp.T @ X / Nk.unsqueeze(1)
        diff = X.unsqueeze(1) - mu.unsqueeze(0)  # (n, K, d)
        cov = torch.einsum("nk,nki,nkj->kij", resp, diff, diff) / Nk[:, None, None]
        cov = cov + 1e-6 * torch.eye(d, dtype=X.dtype)
        pi = Nk / n

    logits = pi.log().clone().requires_grad_(True)
    loc = mu.clone().requires_grad_(True)
    tril = torch.linalg.cholesky(cov).requires_grad_(True)
    mix = D.MixtureSameFamily(D.Categorical(logits=logits), D.MultivariateNormal(loc, scale_tril=tril))
    nll = -mix.log_prob(X).sum()
    nll.backward()
    return dict(lls=lls, mu=mu, cov=cov, pi=pi, nll=nll.detach(), g_logits=logits.grad, g_loc=loc.grad,
                g_tril=tril.grad)


def test_gmm_em():
    ours, _ = run_both(gmm_em, **TOL)
    assert np.all(np.diff(ours["lls"]) > -1e-8)  # EM never decreases the likelihood
    np.testing.assert_allclose(ours["nll"], -ours["lls"][-1], rtol=1e-3)
    # at an EM fixed point the gradient with respect to the means is nearly zero
    np.testing.assert_allclose(ours["g_loc"], 0, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# MAP estimation as Pyro / GPyTorch write it: unconstrained parameters pushed through biject_to /
# transform_to(constraint), priors' log_prob (Gamma, HalfCauchy, LogNormal, a TransformedDistribution)
# plus the log |det J| of the transform, a Student-t likelihood, then a Laplace approximation from the
# Hessian of the negative log posterior
# ----------------------------------------------------------------------------------------------


def map_priors(m):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    C = D.constraints
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.uniform(-2, 2, 40))
    y = torch.from_numpy(1.5 * rng.uniform(-2, 2, 40) * 0 + 0.7 * np.sin(np.linspace(0, 6, 40))) + 0.3 * x

    to_pos = D.biject_to(C.positive)
    to_unit = D.transform_to(C.interval(0.0, 1.0))
    to_gt1 = D.biject_to(C.greater_than(1.0))
    unconstrained = {
        "slope": torch.tensor(0.0, dtype=torch.float64, requires_grad=True),
        "sigma": torch.tensor(0.0, dtype=torch.float64, requires_grad=True),
        "tau": torch.tensor(0.0, dtype=torch.float64, requires_grad=True),
        "rho": torch.tensor(0.0, dtype=torch.float64, requires_grad=True),
        "nu": torch.tensor(1.0, dtype=torch.float64, requires_grad=True),
    }
    priors = {
        "slope": D.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)),
        "sigma": D.HalfCauchy(torch.tensor(1.0, dtype=torch.float64)),
        "tau": D.Gamma(torch.tensor(2.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)),
        "rho": D.Beta(torch.tensor(2.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)),
        "nu": D.TransformedDistribution(D.Exponential(torch.tensor(0.1, dtype=torch.float64)),
                                        [D.transforms.AffineTransform(1.0, 1.0)]),
    }
    transforms = {"slope": D.transforms.identity_transform, "sigma": to_pos, "tau": to_pos, "rho": to_unit,
                  "nu": to_gt1}

    def neg_log_posterior(values):
        total = 0.0
        c = {}
        for k, u in values.items():
            t = transforms[k]
            c[k] = t(u)
            total = total + priors[k].log_prob(c[k]) + t.log_abs_det_jacobian(u, c[k])
        f = c["slope"] * x + c["tau"] * torch.sin(c["rho"] * 6 * x)
        lik = D.StudentT(c["nu"], f, c["sigma"]).log_prob(y).sum()
        return -(total + lik)

    optimizer = optim.Adam(list(unconstrained.values()), lr=0.05)
    history = []
    for step in range(40):
        optimizer.zero_grad()
        loss = neg_log_posterior(unconstrained)
        loss.backward()
        optimizer.step()
        history.append(loss.item())

    names = list(unconstrained)
    flat = torch.stack([unconstrained[k].detach() for k in names])
    H = torch.autograd.functional.hessian(lambda v: neg_log_posterior(dict(zip(names, v.unbind()))), flat)
    laplace = D.MultivariateNormal(flat, precision_matrix=H)
    constrained = {k: transforms[k](unconstrained[k]).detach() for k in names}
    lognormal = D.LogNormal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    return dict(history=history, flat=flat, H=H, cov=laplace.covariance_matrix, entropy=laplace.entropy(),
                constrained=constrained, ln=lognormal.log_prob(constrained["sigma"]),
                ln_cdf=lognormal.cdf(constrained["sigma"]),
                hc_icdf=priors["sigma"].icdf(torch.tensor(0.3, dtype=torch.float64)))


def test_map_with_priors_and_laplace():
    ours, _ = run_both(map_priors, **TOL)
    assert ours["history"][-1] < ours["history"][0]
    np.testing.assert_allclose(ours["H"], ours["H"].T, atol=1e-8)
    np.testing.assert_allclose(ours["cov"] @ ours["H"], np.eye(5), atol=1e-8)
    assert 1 < ours["constrained"]["nu"] and 0 < ours["constrained"]["rho"] < 1
    np.testing.assert_allclose(ours["hc_icdf"], math.tan(math.pi * 0.3 / 2), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Hamiltonian Monte Carlo on a Bayesian logistic regression: the potential's gradient by
# torch.autograd.grad, leapfrog steps, Metropolis corrections with uniforms drawn by torch.rand
# ----------------------------------------------------------------------------------------------


def hmc(m):
    torch, F = m.torch, m.F
    D = torch.distributions
    Xn, labels = classification_data(n=50, d=3, seed=9)
    X = torch.from_numpy(Xn)
    yb = torch.from_numpy((labels == 1).astype(np.float64))
    prior = D.Normal(torch.zeros(3, dtype=torch.float64), 2 * torch.ones(3, dtype=torch.float64))

    def potential(q):
        return -(prior.log_prob(q).sum() + D.Bernoulli(logits=X @ q).log_prob(yb).sum())

    def grad_U(q):
        q = q.detach().requires_grad_(True)
        U = potential(q)
        (g,) = torch.autograd.grad(U, q)
        return U.detach(), g

    def leapfrog(q, p, step_size, n_steps):
        U, g = grad_U(q)
        p = p - 0.5 * step_size * g
        for i in range(n_steps):
            q = q + step_size * p
            U, g = grad_U(q)
            if i != n_steps - 1:
                p = p - step_size * g
        p = p - 0.5 * step_size * g
        return q, -p, U

    torch.manual_seed(0)
    q = torch.zeros(3, dtype=torch.float64)
    U_q = potential(q)
    samples, accepts, energies = [], [], []
    for it in range(30):
        p0 = torch.randn(3, dtype=torch.float64)
        q_new, p_new, U_new = leapfrog(q, p0, 0.05, 10)
        H0 = U_q + 0.5 * p0 @ p0
        H1 = U_new + 0.5 * p_new @ p_new
        accept_prob = torch.exp(torch.clamp(H0 - H1, max=0.0))
        if torch.rand(()) < accept_prob:
            q, U_q = q_new, U_new
            accepts.append(1)
        else:
            accepts.append(0)
        samples.append(q.clone())
        energies.append((H1 - H0).item())
    return dict(samples=torch.stack(samples), accepts=accepts, energies=energies)


def test_hmc():
    ours, _ = run_both(hmc, rtol=1e-8, atol=1e-9)
    assert sum(ours["accepts"]) > 15
    assert max(abs(e) for e in ours["energies"]) < 1.0  # leapfrog nearly conserves the energy


# ----------------------------------------------------------------------------------------------
# Matrix calculus inside training loops: fit through slogdet (a negative determinant), inv, pinv of a
# rank-deficient rectangular matrix, matrix_exp of a non-normal generator, eigh-based matrix square root
# and logarithm (the log-Euclidean mean of SPD matrices), svdvals / nuclear norm, and the Hessian of a GP
# marginal likelihood (second derivatives of cholesky, cholesky_solve and solve_triangular)
# ----------------------------------------------------------------------------------------------


def matrix_calculus(m):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(10)
    dt = torch.float64
    out = {}

    # slogdet / inv: maximum-likelihood Gaussian precision by gradient (det of the start matrix is negative)
    S = torch.from_numpy(np.cov(rng.standard_normal((4, 30))))
    P = torch.tensor([[1.0, 2.0, 0, 0], [2.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]], dtype=dt, requires_grad=True)
    sign, logabs = torch.linalg.slogdet(P)
    out["slogdet0"] = torch.stack([sign, logabs])
    gl = torch.autograd.grad(logabs, P)[0]
    out["slogdet_grad"] = gl
    out["inv_T"] = torch.linalg.inv(P).T.detach()
    B = torch.from_numpy(rng.standard_normal((4, 4))).requires_grad_(True)
    opt = optim.SGD([B], lr=0.01)
    for step in range(10):
        opt.zero_grad()
        Prec = B @ B.T + 0.1 * torch.eye(4, dtype=dt)
        loss = torch.trace(S @ Prec) - torch.logdet(Prec) + 0.1 * torch.linalg.inv(Prec).diagonal().sum()
        loss.backward()
        opt.step()
    out["B"] = B.detach()

    # pinv of a rank-deficient tall matrix (hermitian=False) and of a PSD one (hermitian=True)
    A = torch.from_numpy(rng.standard_normal((6, 2)) @ rng.standard_normal((2, 4))).requires_grad_(True)
    b = torch.from_numpy(rng.standard_normal(6))
    x = torch.linalg.pinv(A, rtol=1e-10) @ b
    x.pow(2).sum().backward()
    out["pinv_x"], out["pinv_grad"] = x.detach(), A.grad.clone()
    Q = torch.from_numpy(rng.standard_normal((4, 4))).requires_grad_(True)
    Ppsd = Q @ Q.T
    Pi = torch.linalg.pinv(Ppsd, hermitian=True)
    (Pi * torch.arange(16, dtype=dt).reshape(4, 4)).sum().backward()
    out["pinv_h"], out["pinv_h_grad"] = Pi.detach(), Q.grad.clone()

    # matrix_exp: learn a generator whose exponential matches a target rotation-and-shear
    target = torch.linalg.matrix_exp(torch.tensor([[0.0, -1.2, 0.3], [1.2, 0.0, 0.5], [0.0, 0.0, -0.4]], dtype=dt))
    G = torch.zeros(3, 3, dtype=dt, requires_grad=True)
    opt = optim.Adam([G], lr=0.05)
    exp_losses = []
    for step in range(15):
        opt.zero_grad()
        loss = (torch.linalg.matrix_exp(G) - target).pow(2).sum()
        loss.backward()
        opt.step()
        exp_losses.append(loss.item())
    big = (3.0 * torch.from_numpy(rng.standard_normal((3, 3)))).requires_grad_(True)  # scaling and squaring
    E = torch.matrix_exp(big)
    E.sum().backward()
    out.update(exp_losses=exp_losses, G=G.detach(), big_exp=E.detach(), big_grad=big.grad.clone())

    # eigh-based matrix functions: log-Euclidean mean of SPD matrices and a matrix square root
    def spd_fn(M, fn):
        evals, evecs = torch.linalg.eigh(M)
        return evecs @ torch.diag_embed(fn(evals)) @ evecs.mT

    mats = [torch.from_numpy(a @ a.T + 0.5 * np.eye(3)) for a in rng.standard_normal((4, 3, 3))]
    M = (sum(mats) / len(mats)).requires_grad_(True)  # the arithmetic mean to start (eye has a repeated eigenvalue)
    opt = optim.SGD([M], lr=0.1)
    le_losses = []
    for step in range(10):
        opt.zero_grad()
        Msym = 0.5 * (M + M.T)
        logM = spd_fn(Msym, torch.log)
        loss = sum((logM - spd_fn(Si, torch.log)).pow(2).sum() for Si in mats)
        loss.backward()
        opt.step()
        le_losses.append(loss.item())
    Msqrt = spd_fn(mats[0].clone().requires_grad_(True), torch.sqrt)
    out.update(le_losses=le_losses, M=M.detach(), sqrt_sq=(Msqrt @ Msqrt).detach())

    # svdvals and the nuclear norm as a low-rank regulariser (matrix completion)
    W = torch.from_numpy(rng.standard_normal((5, 4))).requires_grad_(True)
    mask = torch.from_numpy(rng.uniform(size=(5, 4)) < 0.6)
    Y = torch.from_numpy(rng.standard_normal((5, 2)) @ rng.standard_normal((2, 4)))
    opt = optim.SGD([W], lr=0.05)
    for step in range(10):
        opt.zero_grad()
        loss = ((W - Y)[mask]).pow(2).sum() + 0.1 * torch.linalg.matrix_norm(W, ord="nuc")
        loss.backward()
        opt.step()
    out.update(W=W.detach(), svdvals=torch.linalg.svdvals(W.detach()), cond=torch.linalg.cond(W.detach()))
    return out


def test_matrix_calculus_in_training_loops():
    ours, _ = run_both(matrix_calculus, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours["slogdet0"], [-1.0, math.log(3.0)], rtol=1e-12)
    np.testing.assert_allclose(ours["slogdet_grad"], ours["inv_T"], rtol=1e-12)
    assert ours["exp_losses"][-1] < ours["exp_losses"][0]
    assert ours["le_losses"][-1] < ours["le_losses"][0]


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
# Mean-field variational Bayesian logistic regression as Pyro's SVI writes it by hand: a Normal guide with
# softplus scales, rsample (several particles), the prior's analytic KL, the Jaakkola-Jordan bound as a
# check, and predictive probabilities by Monte Carlo
# ----------------------------------------------------------------------------------------------


def vb_logistic(m):
    torch, F, optim = m.torch, m.F, m.optim
    D = torch.distributions
    Xn, labels = classification_data(n=60, d=3, classes=2, seed=13)
    X = torch.from_numpy(Xn)
    y = torch.from_numpy(labels.astype(np.float64))
    torch.manual_seed(0)
    q_loc = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    q_rho = torch.full((3,), -1.0, dtype=torch.float64, requires_grad=True)
    prior = D.Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    opt = optim.Adam([q_loc, q_rho], lr=0.05)
    elbos = []
    for step in range(25):
        opt.zero_grad()
        q = D.Normal(q_loc, F.softplus(q_rho))
        w = q.rsample((8,))  # (particles, d)
        log_lik = D.Bernoulli(logits=w @ X.T).log_prob(y).sum(-1).mean()
        kl = D.kl_divergence(q, prior).sum()
        elbo = log_lik - kl
        (-elbo).backward()
        opt.step()
        elbos.append(elbo.item())

    # Jaakkola-Jordan: a lower bound on each sigmoid, tight at xi = sqrt(E[(x.w)^2])
    with torch.no_grad():
        s2 = F.softplus(q_rho).pow(2)
        xi = torch.sqrt((X @ q_loc).pow(2) + (X.pow(2) * s2).sum(-1))
        lam = torch.tanh(xi / 2) / (4 * xi)
        jj = (F.logsigmoid(xi) + (y - 0.5) * (X @ q_loc) - xi / 2).sum() - D.kl_divergence(
            D.Normal(q_loc, s2.sqrt()), prior).sum()
        w = D.Normal(q_loc, s2.sqrt()).sample((200,))
        pred = torch.sigmoid(X[:5] @ w.T).mean(-1)
    return dict(elbos=elbos, q_loc=q_loc.detach(), q_scale=F.softplus(q_rho).detach(), lam=lam, jj=jj,
                pred=pred, grad=torch.cat([q_loc.grad, q_rho.grad]))


def test_vb_logistic():
    ours, _ = run_both(vb_logistic, **TOL)
    assert np.mean(ours["elbos"][-5:]) > np.mean(ours["elbos"][:5])
    assert ours["jj"] <= ours["elbos"][-1] + 5  # the bound is below the likelihood's (noisy) estimate


# ----------------------------------------------------------------------------------------------
# Spectral clustering (Ng, Jordan & Weiss): an RBF affinity with its diagonal zeroed in place, the
# symmetric normalised Laplacian, eigh's smallest eigenvectors row-normalised with F.normalize (and lobpcg's
# eigenvalues), then k-means on the embedding; and a batched multi-output GP (a batch of Cholesky factors) for the
# same points
# ----------------------------------------------------------------------------------------------


def spectral_and_batched_gp(m):
    torch, F = m.torch, m.F
    X = torch.from_numpy(blobs(n=45, seed=14)[0])
    n = X.shape[0]
    A = torch.exp(-torch.cdist(X, X).pow(2) / 2.0)
    A.fill_diagonal_(0)
    deg = A.sum(1)
    D_inv_sqrt = torch.diag(deg.pow(-0.5))
    Lsym = torch.eye(n, dtype=X.dtype) - D_inv_sqrt @ A @ D_inv_sqrt
    evals, evecs = torch.linalg.eigh(Lsym)
    torch.manual_seed(0)
    lob_vals, lob_vecs = torch.lobpcg(Lsym, k=3, largest=False)  # the same three, iteratively in PyTorch
    U = F.normalize(evecs[:, :3], p=2, dim=1)
    # deterministic init: farthest-point seeding
    idx = [0]
    for _ in range(2):
        d = torch.cdist(U, U[idx]).min(1).values
        idx.append(int(d.argmax()))
    C = U[idx]
    for it in range(10):
        assign = torch.cdist(U, C).argmin(1)
        C = torch.stack([U[assign == k].mean(0) for k in range(3)])

    # a multi-output GP: one lengthscale per output, batched kernels (3, n, n), batched Cholesky/solves
    Y = torch.stack([X[:, 0].sin(), X[:, 1].cos(), X.sum(1) * 0.1], 0)  # (3, n)
    log_ls = torch.tensor([0.0, 0.3, -0.2], dtype=torch.float64, requires_grad=True)
    d2 = torch.cdist(X, X).pow(2)
    K = torch.exp(-0.5 * d2.unsqueeze(0) / log_ls.exp().pow(2)[:, None, None])
    K = K + 0.05 * torch.eye(n, dtype=X.dtype).expand(3, n, n)
    L = torch.linalg.cholesky(K)
    alpha = torch.cholesky_solve(Y.unsqueeze(-1), L)
    nll = 0.5 * (Y.unsqueeze(-1) * alpha).sum((-1, -2)) + L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    nll.sum().backward()
    V = torch.linalg.solve_triangular(L, K[:, :, :5], upper=False)
    return dict(evals=evals[:4], lob_vals=lob_vals, after_lobpcg=torch.rand(2),
                assign_rows=torch.stack([assign == assign[0], assign == assign[-1]]),
                nll=nll.detach(), grad=log_ls.grad, V=V.detach())


def test_spectral_clustering_and_batched_gp():
    ours, _ = run_both(spectral_and_batched_gp, **TOL)
    _, labels = blobs(n=45, seed=14)
    np.testing.assert_allclose(ours["evals"][0], 0, atol=1e-10)
    np.testing.assert_allclose(ours["lob_vals"], ours["evals"][:3], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours["assign_rows"][0], labels == labels[0])


# ----------------------------------------------------------------------------------------------
# Pyro's "SVI Part I" coin (a Beta guide for a coin's fairness, its parameters kept positive by
# clamping) and a Dirichlet guide for a die, ELBOs by reparameterised draws (Beta / Dirichlet rsample,
# whose gradients are PyTorch's _dirichlet_grad), and a Gamma guide for a Poisson rate
# ----------------------------------------------------------------------------------------------


def pyro_style_guides(m):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    f64 = dict(dtype=torch.float64)
    flips = torch.tensor([1.0] * 6 + [0.0] * 4, **f64)
    rolls = torch.tensor([0, 1, 1, 2, 2, 2, 3, 4, 5, 5, 5, 5])
    counts = torch.tensor([3.0, 5.0, 4.0, 6.0, 2.0], **f64)
    torch.manual_seed(0)

    alpha_q = torch.tensor(15.0, **f64, requires_grad=True)
    beta_q = torch.tensor(15.0, **f64, requires_grad=True)
    conc_q = torch.ones(6, **f64).mul(2).requires_grad_(True)
    shape_q = torch.tensor(2.0, **f64, requires_grad=True)
    rate_q = torch.tensor(1.0, **f64, requires_grad=True)
    opt = optim.Adam([alpha_q, beta_q, conc_q, shape_q, rate_q], lr=0.05, betas=(0.90, 0.999))
    prior_coin = D.Beta(torch.tensor(10.0, **f64), torch.tensor(10.0, **f64))
    prior_die = D.Dirichlet(torch.ones(6, **f64))
    prior_rate = D.Gamma(torch.tensor(2.0, **f64), torch.tensor(0.5, **f64))
    losses, grads = [], []
    for step in range(12):
        opt.zero_grad()
        q_coin = D.Beta(alpha_q, beta_q)
        fairness = q_coin.rsample((4,))  # four particles
        elbo_coin = (D.Bernoulli(fairness.unsqueeze(-1)).log_prob(flips).sum(-1) + prior_coin.log_prob(fairness)
                     - q_coin.log_prob(fairness)).mean()
        q_die = D.Dirichlet(conc_q)
        probs = q_die.rsample((4,))
        elbo_die = (D.Categorical(probs=probs.unsqueeze(1)).log_prob(rolls).sum(-1) + prior_die.log_prob(probs)
                    - q_die.log_prob(probs)).mean()
        q_rate = D.Gamma(shape_q, rate_q)
        rate = q_rate.rsample((4,))
        elbo_rate = (D.Poisson(rate.unsqueeze(-1)).log_prob(counts).sum(-1) + prior_rate.log_prob(rate)
                     - q_rate.log_prob(rate)).mean()
        loss = -(elbo_coin + elbo_die + elbo_rate)
        loss.backward()
        grads.append(torch.cat([alpha_q.grad.view(1), beta_q.grad.view(1), conc_q.grad, shape_q.grad.view(1),
                                rate_q.grad.view(1)]).clone())
        opt.step()
        with torch.no_grad():  # Pyro's constraint.positive, done by hand
            for p in (alpha_q, beta_q, conc_q, shape_q, rate_q):
                p.clamp_(min=1e-3)
        losses.append(loss.item())
    return dict(losses=losses, grads=torch.stack(grads), alpha_q=alpha_q.detach(), beta_q=beta_q.detach(),
                conc_q=conc_q.detach(), shape_rate=torch.stack([shape_q, rate_q]).detach())


def test_pyro_style_beta_dirichlet_gamma_guides():
    ours, theirs = run_both(pyro_style_guides, compare=False)
    assert ours["conc_q"].argmax() == 5  # the die's guide leans to the face rolled most
    if theirs is not None:
        # Beta and Dirichlet draws carry PyTorch's gradient (its _dirichlet_grad), to rounding
        for key in ("alpha_q", "beta_q", "conc_q"):
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(ours["grads"][:, :8], theirs["grads"][:, :8], rtol=1e-10, atol=1e-12)
        # a Gamma draw's gradient is exact here, PyTorch's a fitted approximation (about 1e-4 apart): see
        # autograd/ops/standard_gamma.py
        np.testing.assert_allclose(ours["grads"][:, 8:], theirs["grads"][:, 8:], rtol=2e-3, atol=1e-3)
        np.testing.assert_allclose(ours["losses"], theirs["losses"], rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# A Gibbs sampler (collapsed-free, conjugate) for a Bayesian mixture with spike-and-slab feature selection:
# Categorical(probs).sample for the assignments, Dirichlet / Normal / Gamma draws for the parameters,
# Bernoulli(probs).sample in float64 for the inclusion indicators; every draw after one seed is PyTorch's
# ----------------------------------------------------------------------------------------------


def gibbs_mixture(m):
    torch = m.torch
    D = torch.distributions
    f64 = dict(dtype=torch.float64)
    x = torch.from_numpy(blobs(n=60, seed=15)[0][:, 0].copy())  # one dimension: three clusters
    n, K = x.shape[0], 3
    torch.manual_seed(0)
    alpha0, mu0, kappa0, a0, b0 = 1.0, 0.0, 0.1, 2.0, 2.0
    z = torch.randint(0, K, (n,))
    mu = torch.tensor([-3.0, 0.0, 3.0], **f64)
    tau = torch.ones(K, **f64)
    pi = torch.full((K,), 1.0 / K, **f64)
    traces = []
    for sweep in range(15):
        log_r = pi.log() + D.Normal(mu, tau.rsqrt()).log_prob(x.unsqueeze(-1))
        z = D.Categorical(logits=log_r).sample()
        counts = torch.bincount(z, minlength=K).to(torch.float64)
        pi = D.Dirichlet(alpha0 + counts).sample()
        sums = torch.zeros(K, **f64).index_add_(0, z, x)
        kappa_n = kappa0 + counts
        mu_n = (kappa0 * mu0 + sums) / kappa_n
        mu = D.Normal(mu_n, (kappa_n * tau).rsqrt()).sample()
        sq = torch.zeros(K, **f64).scatter_add_(0, z, (x - mu[z]) ** 2)
        tau = D.Gamma(a0 + counts / 2, b0 + sq / 2 + kappa0 * (mu - mu0) ** 2 / 2).sample()
        traces.append(torch.cat([pi, mu, tau]))

    # spike and slab: which of 4 regressors enter, by Bernoulli draws of their posterior inclusion odds
    rng = np.random.default_rng(16)
    X = torch.from_numpy(rng.standard_normal((40, 4)))
    y = X @ torch.tensor([1.5, 0.0, -2.0, 0.0], **f64) + 0.3 * torch.from_numpy(rng.standard_normal(40))
    gamma = torch.ones(4, **f64)
    beta = torch.zeros(4, **f64)
    inclusions = []
    for sweep in range(10):
        for j in range(4):
            resid = y - X @ (beta * gamma) + X[:, j] * beta[j] * gamma[j]
            prec = 1.0 + X[:, j] @ X[:, j] / 0.09
            mean = (X[:, j] @ resid / 0.09) / prec
            log_odds = 0.5 * mean ** 2 * prec - 0.5 * torch.log(prec) + math.log(0.5 / 0.5)
            gamma[j] = D.Bernoulli(probs=torch.sigmoid(log_odds)).sample()
            beta[j] = D.Normal(mean, prec.rsqrt()).sample() if gamma[j] else D.Normal(
                torch.tensor(0.0, **f64), torch.tensor(1.0, **f64)).sample()
        inclusions.append(gamma.clone())
    return dict(traces=torch.stack(traces), z=z, inclusions=torch.stack(inclusions), beta=beta)


def test_gibbs_mixture_and_spike_and_slab():
    ours, _ = run_both(gibbs_mixture, **TOL)
    np.testing.assert_allclose(ours["traces"][:, :3].sum(1), 1, rtol=1e-12)
    np.testing.assert_array_equal(ours["inclusions"][-1], [1, 0, 1, 0])


# ----------------------------------------------------------------------------------------------
# Circular statistics: wind directions drawn from a VonMises mixture, its concentration and mean direction
# fitted by maximum likelihood (log_prob through the Bessel functions), against the closed-form estimates
# ----------------------------------------------------------------------------------------------


def von_mises_fit(m):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    f64 = dict(dtype=torch.float64)
    torch.manual_seed(0)
    angles = torch.cat([D.VonMises(torch.tensor(1.0, **f64), torch.tensor(4.0, **f64)).sample((150,)),
                        D.VonMises(torch.tensor(-2.0, **f64), torch.tensor(8.0, **f64)).sample((100,))])
    loc = torch.tensor([0.5, -1.5], **f64, requires_grad=True)
    log_kappa = torch.zeros(2, **f64, requires_grad=True)
    logits = torch.zeros(2, **f64, requires_grad=True)
    opt = optim.Adam([loc, log_kappa, logits], lr=0.05)
    nlls = []
    for step in range(40):
        opt.zero_grad()
        mix = D.MixtureSameFamily(D.Categorical(logits=logits), D.VonMises(loc, log_kappa.exp()))
        nll = -mix.log_prob(angles).mean()
        nll.backward()
        opt.step()
        nlls.append(nll.item())
    # the first component's closed-form mean direction from its own draws
    first = angles[:150]
    mean_dir = torch.atan2(first.sin().mean(), first.cos().mean())
    R = torch.sqrt(first.sin().mean() ** 2 + first.cos().mean() ** 2)
    return dict(angles=angles, nlls=nlls, loc=loc.detach(), kappa=log_kappa.exp().detach(), mean_dir=mean_dir, R=R)


def test_von_mises_mixture_fit():
    ours, _ = run_both(von_mises_fit, rtol=1e-6, atol=1e-8)  # (ln I0: exact here, a 1e-7 fit in PyTorch)
    assert np.all((-np.pi <= ours["angles"]) & (ours["angles"] < np.pi))
    assert abs(ours["mean_dir"] - 1.0) < 0.2
    assert ours["nlls"][-1] < ours["nlls"][0]


# ----------------------------------------------------------------------------------------------
# The Gaussian's quantile in its tails: a Gaussian copula's normal scores of ranks (Normal.icdf near 0 and 1),
# truncated-normal draws by the inverse CDF (a BoTorch/EI idiom), and a probit regression whose likelihood is
# special.log_ndtr, fitted by L-BFGS
# ----------------------------------------------------------------------------------------------


def gaussian_tails(m):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    f64 = dict(dtype=torch.float64)
    std = D.Normal(torch.tensor(0.0, **f64), torch.tensor(1.0, **f64))
    rng = np.random.default_rng(17)
    data = torch.from_numpy(rng.lognormal(size=(200, 2)))
    ranks = data.argsort(0).argsort(0).to(torch.float64) + 1
    u = ranks / (data.shape[0] + 1)
    scores = std.icdf(u)  # normal scores
    corr = torch.corrcoef(scores.T)
    # extreme quantiles, as a tail-risk program asks for them
    tail_p = torch.tensor([1e-12, 1e-9, 1e-6, 1 - 1e-6, 1 - 1e-9], **f64)
    tail_z = std.icdf(tail_p)

    # truncated N(mu, sigma) on [a, b] by the inverse CDF, differentiable in mu and sigma
    mu = torch.tensor(0.3, **f64, requires_grad=True)
    sigma = torch.tensor(0.8, **f64, requires_grad=True)
    a, b = 2.5, 6.0
    torch.manual_seed(0)
    uu = torch.rand(50, **f64)
    alpha, beta = (a - mu) / sigma, (b - mu) / sigma
    cdf_a, cdf_b = std.cdf(alpha), std.cdf(beta)
    draws = mu + sigma * std.icdf(cdf_a + uu * (cdf_b - cdf_a))
    draws.mean().backward()

    # probit regression by L-BFGS on -Σ log Φ(±x·w)
    Xn, labels = classification_data(n=80, d=3, classes=2, seed=18)
    X, s = torch.from_numpy(Xn), torch.from_numpy(2.0 * labels - 1)
    w = torch.zeros(3, **f64, requires_grad=True)
    opt = optim.LBFGS([w], line_search_fn="strong_wolfe", max_iter=50)

    def closure():
        opt.zero_grad()
        loss = -torch.special.log_ndtr(s * (X @ w)).sum() + 0.5 * w.dot(w)
        loss.backward()
        return loss

    opt.step(closure)
    return dict(scores=scores, corr=corr, tail_z=tail_z, draws=draws.detach(), grads=torch.stack([mu.grad, sigma.grad]),
                w=w.detach(), ndtri=torch.special.ndtri(tail_p), erfinv=torch.erfinv(2 * tail_p - 1))


def test_gaussian_tails():
    ours, _ = run_both(gaussian_tails, rtol=1e-11, atol=1e-12)
    assert np.all((ours["draws"] >= 2.5) & (ours["draws"] <= 6.0))
    np.testing.assert_allclose(ours["tail_z"][:3], [-7.034484, -5.997807, -4.753424], rtol=1e-6)
    np.testing.assert_allclose(ours["scores"].mean(0), 0, atol=1e-12)  # ranks' scores are symmetric


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


# ----------------------------------------------------------------------------------------------
# t-SNE as the torch ports write it (perplexity by bisection on each row's precision, symmetrised P, Student-t
# Q with its diagonal masked, KL by F.kl_div, early exaggeration, SGD with momentum); the lasso by ISTA with
# F.softshrink; and a Gaussian kernel density estimate with its bandwidth by leave-one-out likelihood
# ----------------------------------------------------------------------------------------------


def tsne_lasso_kde(m):
    torch, F, optim = m.torch, m.F, m.optim
    f64 = dict(dtype=torch.float64)
    X = torch.from_numpy(blobs(n=36, seed=19)[0])
    n = X.shape[0]
    D2 = torch.cdist(X, X).pow(2)
    target = math.log(8.0)  # perplexity 8
    beta = torch.ones(n, **f64)
    lo, hi = torch.zeros(n, **f64), torch.full((n,), float("inf"), **f64)
    mask = ~torch.eye(n, dtype=torch.bool)
    for it in range(40):  # bisection on each row's precision
        P = torch.exp(-D2 * beta[:, None]) * mask
        P = P / P.sum(1, keepdim=True)
        H = -(torch.where(P > 0, P * P.log(), torch.zeros_like(P))).sum(1)
        too_flat = H > target
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    P = (P + P.T) / (2 * n)
    torch.manual_seed(0)
    Y = (1e-2 * torch.randn(n, 2, **f64)).requires_grad_(True)
    opt = optim.SGD([Y], lr=20.0, momentum=0.5)
    kls = []
    for step in range(30):
        opt.zero_grad()
        num = 1 / (1 + torch.cdist(Y, Y).pow(2))
        num = num.masked_fill(~mask, 0)
        Q = (num / num.sum()).clamp_min(1e-12)
        exaggeration = 4.0 if step < 10 else 1.0
        loss = F.kl_div(Q.log(), exaggeration * P, reduction="sum")
        loss.backward()
        opt.step()
        kls.append(loss.item())

    # lasso by ISTA: x <- softshrink(x - t A^T (A x - b), t lambda)
    rng = np.random.default_rng(20)
    A = torch.from_numpy(rng.standard_normal((30, 10)))
    x_true = torch.zeros(10, **f64)
    x_true[[1, 4, 7]] = torch.tensor([2.0, -1.5, 1.0], **f64)
    b = A @ x_true + 0.05 * torch.from_numpy(rng.standard_normal(30))
    t = 1 / torch.linalg.matrix_norm(A, ord=2) ** 2
    x = torch.zeros(10, **f64)
    for it in range(200):
        x = F.softshrink(x - t * A.T @ (A @ x - b), lambd=float(t * 2.0))

    # KDE bandwidth by leave-one-out log likelihood, by Adam on its log
    pts = X[:, 0]
    log_h = torch.tensor(0.0, **f64, requires_grad=True)
    opt = optim.Adam([log_h], lr=0.1)
    for step in range(20):
        opt.zero_grad()
        h = log_h.exp()
        logk = -0.5 * ((pts[:, None] - pts[None, :]) / h) ** 2 - torch.log(h) - 0.5 * math.log(2 * math.pi)
        logk = logk.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
        loo = (torch.logsumexp(logk, dim=1) - math.log(n - 1)).mean()
        (-loo).backward()
        opt.step()
    return dict(beta=beta, H=H, kls=kls, Y=Y.detach(), x=x, h=log_h.exp().detach(), loo=loo.detach())


def test_tsne_lasso_kde():
    ours, _ = run_both(tsne_lasso_kde, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["H"], math.log(8.0), atol=1e-6)  # each row at the perplexity asked for
    assert set(np.flatnonzero(np.abs(ours["x"]) > 0.1)) == {1, 4, 7}
    assert ours["kls"][-1] < ours["kls"][10]
