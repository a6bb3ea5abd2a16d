# ruff: noqa: B007, B008, B023, E741, E731, F841, N806  (the programs are kept as their authors wrote them)
"""Numerical linear algebra as real programs use it (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same data, comparing values, gradients, dtypes and errors.

Gaussian-process regression (an RBF kernel's hyperparameters learnt by Adam through ``linalg.cholesky``,
``cholesky_solve`` and the log-determinant as 2 Σ log diag L; predictions by ``solve_triangular``; GPyTorch's
``psd_safe_cholesky``, jitter added while ``cholesky_ex``'s info is non-zero); least squares and ridge
(``linalg.lstsq`` with every driver, ``solve``, ``pinv``, the normal equations, a hyperparameter's gradient
through the solve, polynomial fits by ``linalg.vander``/``torch.vander``); orthogonal Procrustes and the polar
decomposition through ``linalg.svd`` (and the Newton–Schulz iteration against it); PCA and ZCA whitening by
``linalg.eigh`` with gradients, a decorrelated batch-norm layer trained through it; Glow's invertible 1x1
convolution, LU-parametrised (``linalg.lu_factor``/``lu_unpack``/``linalg.lu``/``lu_solve``, log|s| against
``slogdet``) and plain (``slogdet`` and ``inverse`` for the reverse pass); ``matrix_exp`` for Lie-group
parametrisations (an orthogonal RNN's skew-symmetric recurrent weight, SE(3) poses); ``matrix_power`` for
Markov chains; the whole family of norms (``vector_norm``/``matrix_norm``/``linalg.norm``/``torch.norm`` for
every ord), ``cond``, ``matrix_rank`` with tolerances, a spectral-norm penalty; QR by ``geqrf`` and
``householder_product``/``ormqr`` with gradients; the spectral radius of a linear system by ``linalg.eigvals``
(complex results) penalised in training; ``multi_dot``, ``linalg.cross`` normals, ``solve_ex``/``inv_ex``/
``cholesky_ex`` info codes on batches with singular members, batched and broadcast shapes, float32 and
float64, and the errors PyTorch raises for singular and malformed input. Then a hypothesis-driven
differential fuzz over shapes for a family of linalg functions (values and gradients against PyTorch,
``gradcheck`` in float64 on chainrule), and focused tests of what the programs found: ``cholesky(upper=True)``
reads the upper triangle, a NaN pivot is not positive-definite, ``cholesky_solve``/``cholesky_inverse`` read
only the factor's triangle, ``torch.svd(compute_uv=False)``'s square zero U and V, ``linalg.svd`` of an empty
batch, ``vector_norm(ord=0)`` has no gradient."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autograd

from .pytorch_programs import OURS, pytorch, run_both

TORCH = pytorch()


def gp_data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 3, (n, 1)), 0)
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.standard_normal(n)
    return x, y


# ----------------------------------------------------------------------------------------------
# Gaussian-process regression: exact marginal likelihood by Cholesky, hyperparameters by Adam
# ----------------------------------------------------------------------------------------------


def gp_regression(m, dtype_name, steps=15):
    torch, nn = m.torch, m.nn
    dtype = getattr(torch, dtype_name)
    x_np, y_np = gp_data()
    X = torch.tensor(x_np, dtype=dtype)
    y = torch.tensor(y_np, dtype=dtype)
    Xs = torch.linspace(-3.5, 3.5, 9, dtype=dtype).unsqueeze(-1)

    class ExactGP(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_lengthscale = nn.Parameter(torch.tensor(0.0, dtype=dtype))
            self.log_outputscale = nn.Parameter(torch.tensor(0.0, dtype=dtype))
            self.log_noise = nn.Parameter(torch.tensor(-1.0, dtype=dtype))

        def kernel(self, a, b):
            d2 = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)
            return self.log_outputscale.exp() * torch.exp(-0.5 * d2 / self.log_lengthscale.exp() ** 2)

        def nll(self, X, y):
            n = X.shape[0]
            K = self.kernel(X, X) + self.log_noise.exp() * torch.eye(n, dtype=X.dtype)
            L = torch.linalg.cholesky(K)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
            logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum()
            return 0.5 * (y @ alpha.squeeze(-1)) + 0.5 * logdet + 0.5 * n * math.log(2 * math.pi)

        def predict(self, X, y, Xs):
            n = X.shape[0]
            K = self.kernel(X, X) + self.log_noise.exp() * torch.eye(n, dtype=X.dtype)
            L = torch.linalg.cholesky(K)
            Ks = self.kernel(X, Xs)
            v = torch.linalg.solve_triangular(L, Ks, upper=False)
            alpha = torch.linalg.solve_triangular(L.mT, torch.linalg.solve_triangular(L, y.unsqueeze(-1), upper=False),
                                                  upper=True)
            mean = (Ks.mT @ alpha).squeeze(-1)
            var = self.log_outputscale.exp() - (v * v).sum(-2)
            return mean, var

    model = ExactGP()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = model.nll(X, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the marginal likelihood again, by slogdet and solve (the textbook way), and its gradients
    n = X.shape[0]
    K = model.kernel(X, X) + model.log_noise.exp() * torch.eye(n, dtype=dtype)
    nll2 = 0.5 * y @ torch.linalg.solve(K, y) + 0.5 * torch.linalg.slogdet(K)[1] + 0.5 * n * math.log(2 * math.pi)
    grads = torch.autograd.grad(nll2, list(model.parameters()))
    with torch.no_grad():
        mean, var = model.predict(X, y, Xs)
    return losses, [p.detach() for p in model.parameters()], nll2, grads, mean, var, K.dtype == dtype


@pytest.mark.parametrize("dtype_name, rtol, atol", [("float64", 1e-9, 1e-10), ("float32", 2e-4, 2e-5)])
def test_gp_regression_learns_hyperparameters_through_cholesky(dtype_name, rtol, atol):
    ours, _ = run_both(gp_regression, dtype_name, rtol=rtol, atol=atol)
    losses = ours[0]
    assert losses[-1] < losses[0]
    assert ours[-1] is True
    mean = ours[4]
    x = np.linspace(-3.5, 3.5, 9)
    inside = np.abs(x) < 2.5
    assert np.abs(mean[inside] - np.sin(2 * x[inside])).max() < 0.5


def psd_safe_cholesky(m):
    """GPyTorch's psd_safe_cholesky: jitter added to the failed matrices of a batch until cholesky_ex succeeds."""
    torch = m.torch

    def psd_safe_cholesky(A, upper=False, jitter=None, max_tries=6):
        L, info = torch.linalg.cholesky_ex(A)
        if not torch.any(info):
            return L, 0
        if jitter is None:
            jitter = 1e-6 if A.dtype == torch.float32 else 1e-8
        Aprime = A.clone()
        jitter_prev = 0
        for i in range(max_tries):
            jitter_new = jitter * (10**i)
            diag_add = ((info > 0) * (jitter_new - jitter_prev)).unsqueeze(-1).expand(*Aprime.shape[:-1])
            Aprime.diagonal(dim1=-1, dim2=-2).add_(diag_add)
            jitter_prev = jitter_new
            L, info = torch.linalg.cholesky_ex(Aprime)
            if not torch.any(info):
                return L, i + 1
        raise ValueError("not p.d.")

    rng = np.random.default_rng(1)
    Z = torch.tensor(rng.standard_normal((3, 6, 2)))
    A = Z @ Z.mT - 1e-9 * torch.eye(6, dtype=Z.dtype)  # rank 2, less a little: the third pivot fails, whatever
    A[0] += 6 * torch.eye(6, dtype=A.dtype)  # the rounding (the first matrix is fine)
    A.requires_grad_(True)
    L, tries = psd_safe_cholesky(A)
    _, info = torch.linalg.cholesky_ex(A.detach())
    loss = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum()
    (grad,) = torch.autograd.grad(loss, A)
    return L, tries, info, info.dtype == torch.int32, grad


def test_psd_safe_cholesky_jitters_the_failed_members_of_a_batch():
    ours, _ = run_both(psd_safe_cholesky, rtol=1e-5, atol=1e-6)  # (jittered by 1e-8: gradients of 1e6)
    L, tries, info, int32, grad = ours
    assert tries > 0 and int32
    assert info[0] == 0 and (info[1:] > 0).all()
    assert np.isfinite(L).all() and np.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------
# Least squares and ridge: lstsq (every driver), solve, pinv, normal equations, a hyperparameter's gradient
# ----------------------------------------------------------------------------------------------


def least_squares(m, dtype_name):
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(2)
    X = torch.tensor(rng.standard_normal((40, 5)), dtype=dtype)
    w_true = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=dtype)
    y = X @ w_true + 0.1 * torch.tensor(rng.standard_normal(40), dtype=dtype)
    Y = torch.stack([y, 2 * y], -1)
    out = {}
    for driver in ("gels", "gelsy", "gelsd", "gelss"):
        res = torch.linalg.lstsq(X, Y, driver=driver)
        out[driver] = res.solution
        out[driver + "_rank"] = res.rank if driver != "gels" else None
        out[driver + "_sv"] = res.singular_values if driver in ("gelsd", "gelss") else None
    # residuals are returned only for a full-rank tall system with gels/gelsd/gelss (not gelsy, PyTorch's rule)
    out["residuals"] = torch.linalg.lstsq(X, Y, driver="gelsd").residuals
    out["residuals_gelsy"] = torch.linalg.lstsq(X, Y, driver="gelsy").residuals.shape
    out["pinv"] = torch.linalg.pinv(X) @ Y
    out["normal"] = torch.linalg.solve(X.T @ X, X.T @ Y)
    Q, R = torch.linalg.qr(X)
    out["qr"] = torch.linalg.solve_triangular(R, Q.T @ Y, upper=True)
    out["cholesky"] = torch.cholesky_solve(X.T @ Y, torch.linalg.cholesky(X.T @ X))
    # batched: one regression per group, broadcasting a shared design
    Xb = torch.tensor(rng.standard_normal((3, 12, 4)), dtype=dtype)
    yb = torch.tensor(rng.standard_normal((3, 12, 1)), dtype=dtype)
    out["batched"] = torch.linalg.lstsq(Xb, yb).solution
    # underdetermined: the minimum-norm solution (gelsd) equals pinv's
    Xw = X[:3]
    out["min_norm"] = torch.linalg.lstsq(Xw, Y[:3], driver="gelsd").solution
    out["min_norm_pinv"] = torch.linalg.pinv(Xw) @ Y[:3]
    # a rank-deficient design: gelsy's rank, and the pinv's cut-off by rtol
    Xr = torch.cat([X[:, :3], X[:, :1] + X[:, 1:2]], 1)
    out["rank_deficient_rank"] = torch.linalg.lstsq(Xr, y.unsqueeze(-1), driver="gelsy").rank
    out["rank_deficient_pinv"] = torch.linalg.pinv(Xr) @ y  # (the default rtol, eps · max(m, n), cuts the null one)
    return out


@pytest.mark.parametrize("dtype_name, rtol, atol", [("float64", 1e-8, 1e-10), ("float32", 1e-3, 1e-4)])
def test_least_squares_by_every_route_agree(dtype_name, rtol, atol):
    ours, _ = run_both(least_squares, dtype_name, rtol=rtol, atol=atol)
    for route in ("gels", "gelsy", "gelss", "pinv", "normal", "qr", "cholesky"):
        np.testing.assert_allclose(ours[route], ours["gelsd"], rtol=max(rtol, 1e-6) * 10, atol=atol * 10)
    np.testing.assert_allclose(ours["min_norm"], ours["min_norm_pinv"], rtol=rtol * 10, atol=atol * 10)
    assert ours["gelsd_rank"] == 5 and ours["rank_deficient_rank"] == 3
    assert ours["residuals_gelsy"] == (0,)


def ridge_hyperparameter(m):
    """Ridge regression's validation loss differentiated with respect to log λ through the solve (implicit
    hyperparameter optimisation), and the same by the SVD's closed form; features standardised by hand."""
    torch = m.torch
    rng = np.random.default_rng(3)
    X = torch.tensor(rng.standard_normal((30, 6)))
    w = torch.tensor(rng.standard_normal(6))
    y = X @ w + 0.5 * torch.tensor(rng.standard_normal(30))
    Xtr, ytr, Xva, yva = X[:20], y[:20], X[20:], y[20:]
    mu, sd = Xtr.mean(0), Xtr.std(0)
    Xtr, Xva = (Xtr - mu) / sd, (Xva - mu) / sd
    log_lam = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([log_lam], lr=0.5)
    history = []
    for step in range(8):
        opt.zero_grad()
        lam = log_lam.exp()
        A = Xtr.T @ Xtr + lam * torch.eye(6, dtype=X.dtype)
        beta = torch.linalg.solve(A, Xtr.T @ ytr)
        val = ((Xva @ beta - yva) ** 2).mean()
        val.backward()
        opt.step()
        history.append((val.item(), log_lam.grad.item()))
    lam = log_lam.detach().exp().requires_grad_()
    U, S, Vh = torch.linalg.svd(Xtr, full_matrices=False)
    beta_svd = Vh.T @ ((S / (S ** 2 + lam)) * (U.T @ ytr))
    A = Xtr.T @ Xtr + lam * torch.eye(6, dtype=X.dtype)
    beta_solve = torch.linalg.solve(A, Xtr.T @ ytr)
    g_svd = torch.autograd.grad(beta_svd.sum(), lam)[0]
    g_solve = torch.autograd.grad(beta_solve.sum(), lam)[0]
    # effective degrees of freedom: tr(X (XᵀX + λI)⁻¹ Xᵀ) by inv, by solve, and Σ s²/(s²+λ)
    dof = torch.trace(Xtr @ torch.linalg.inv(A) @ Xtr.T)
    dof2 = torch.trace(torch.linalg.solve(A, Xtr.T @ Xtr))
    dof3 = (S ** 2 / (S ** 2 + lam)).sum()
    return history, beta_svd, beta_solve, g_svd, g_solve, dof, dof2, dof3


def test_ridge_hyperparameter_gradient_through_solve():
    ours, _ = run_both(ridge_hyperparameter, rtol=1e-8, atol=1e-10)
    history, beta_svd, beta_solve, g_svd, g_solve, dof, dof2, dof3 = ours
    np.testing.assert_allclose(beta_svd, beta_solve, rtol=1e-10)
    np.testing.assert_allclose(g_svd, g_solve, rtol=1e-8)
    np.testing.assert_allclose([dof, dof2], [dof3, dof3], rtol=1e-10)
    assert history[-1][0] < history[0][0]


def polynomial_fit(m):
    """Polynomial regression by a Vandermonde matrix (linalg.vander increasing, torch.vander decreasing) and lstsq;
    its conditioning by cond; Chebyshev nodes against equispaced ones."""
    torch = m.torch
    x = torch.linspace(-1, 1, 15, dtype=torch.float64)
    y = torch.cos(3 * x) + 0.3 * x ** 3
    V = torch.linalg.vander(x, N=6)
    coef = torch.linalg.lstsq(V, y.unsqueeze(-1)).solution.squeeze(-1)
    Vd = torch.vander(x, N=6)
    coef_d = torch.linalg.lstsq(Vd, y.unsqueeze(-1)).solution.squeeze(-1)
    k = torch.arange(15, dtype=torch.float64)
    cheb = torch.cos((2 * k + 1) * math.pi / 30)
    conds = (torch.linalg.cond(torch.linalg.vander(x, N=10)), torch.linalg.cond(torch.linalg.vander(cheb, N=10)))
    # differentiate the fitted curve's value at 0.3 with respect to the data
    yy = y.clone().requires_grad_()
    c = torch.linalg.lstsq(V, yy.unsqueeze(-1)).solution.squeeze(-1)
    at = torch.linalg.vander(torch.tensor([0.3], dtype=torch.float64), N=6) @ c
    (g,) = torch.autograd.grad(at.sum(), yy)
    # integer nodes: vander of int64 stays int64
    Vi = torch.linalg.vander(torch.arange(4), N=4)
    return coef, coef_d.flip(0), conds, g, Vi, str(Vi.dtype).split(".")[-1]


def test_polynomial_fit_by_vandermonde():
    ours, _ = run_both(polynomial_fit, rtol=1e-8, atol=1e-10)
    coef, coef_flipped, conds, g, Vi, dtype = ours
    np.testing.assert_allclose(coef, coef_flipped, rtol=1e-8, atol=1e-10)
    assert conds[1] < conds[0]
    np.testing.assert_allclose(g.sum(), 1.0, rtol=1e-10)  # the fit reproduces constants: weights sum to one
    assert dtype == "int64" and (Vi == np.arange(4)[:, None] ** np.arange(4)).all()


# ----------------------------------------------------------------------------------------------
# Orthogonal Procrustes and the polar decomposition through the SVD; PCA and ZCA whitening through eigh
# ----------------------------------------------------------------------------------------------


def procrustes_and_polar(m, dtype_name):
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(4)
    A = torch.tensor(rng.standard_normal((2, 20, 4)), dtype=dtype)
    Q_true = torch.linalg.qr(torch.tensor(rng.standard_normal((2, 4, 4)), dtype=dtype)).Q
    B = A @ Q_true + 0.01 * torch.tensor(rng.standard_normal((2, 20, 4)), dtype=dtype)
    A.requires_grad_(True)
    # orthogonal Procrustes: argmin_R ‖A R − B‖ over orthogonal R is U Vᴴ of AᵀB
    U, S, Vh = torch.linalg.svd(A.mT @ B)
    R = U @ Vh
    err = torch.linalg.matrix_norm(A @ R - B)
    (gA,) = torch.autograd.grad(err.sum(), A, retain_graph=True)
    # polar decomposition M = W P (W orthogonal, P symmetric positive semi-definite) and Newton–Schulz toward W
    M = torch.tensor(rng.standard_normal((3, 3)), dtype=dtype, requires_grad=True)
    U2, S2, Vh2 = torch.linalg.svd(M)
    W = U2 @ Vh2
    P = Vh2.mT @ torch.diag_embed(S2) @ Vh2
    X = M / torch.linalg.matrix_norm(M, ord=2)
    for _ in range(25):
        X = 1.5 * X - 0.5 * X @ X.mT @ X
    gM = torch.autograd.grad((W * torch.arange(9, dtype=dtype).reshape(3, 3)).sum(), M)[0]
    # the symmetric orthogonalisation (Löwdin) by the inverse square root through eigh: (MᵀM)^(-1/2)
    lam, V = torch.linalg.eigh(M.mT @ M)
    W2 = M @ V @ torch.diag_embed(lam.rsqrt()) @ V.mT
    return R, err, gA, W, P, X, gM, W2, torch.dist(W @ P, M)


@pytest.mark.parametrize("dtype_name, rtol, atol", [("float64", 1e-8, 1e-10), ("float32", 2e-4, 2e-5)])
def test_procrustes_and_polar_decomposition(dtype_name, rtol, atol):
    ours, _ = run_both(procrustes_and_polar, dtype_name, rtol=rtol, atol=atol)
    R, err, gA, W, P, X, gM, W2, reconstruction = ours
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(4), (2, 4, 4)), atol=atol * 10)
    np.testing.assert_allclose(X, W, atol=atol * 100)
    np.testing.assert_allclose(W2, W, atol=atol * 100)
    assert reconstruction < atol * 100


def pca_whitening(m):
    """PCA by eigh of the covariance (sorted descending by flip, sign-fixed), ZCA whitening, and a decorrelated
    batch-norm layer (Huang et al.: Σ^(-1/2) by eigh, differentiated through) trained for a few steps."""
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(5)
    mix = rng.standard_normal((4, 4))
    data = torch.tensor(rng.standard_normal((64, 4)) @ mix + 1.0)
    Xc = data - data.mean(0)
    cov = Xc.T @ Xc / (Xc.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(-1), evecs.flip(-1)
    evecs = evecs * torch.sign(evecs[0:1])  # a sign convention: the first row positive
    explained = evals / evals.sum()
    scores = Xc @ evecs[:, :2]
    zca = evecs @ torch.diag(1.0 / torch.sqrt(evals + 1e-5)) @ evecs.T
    white = Xc @ zca
    white_cov = white.T @ white / (white.shape[0] - 1)
    # torch.pca_lowrank's centre and q: the same subspace (without its random sketch: compared through projectors)
    U, S, V = torch.svd(Xc)
    proj = V[:, :2] @ V[:, :2].T

    class DecorrelatedBN(nn.Module):
        def __init__(self, features, eps=1e-5):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(features, dtype=torch.float64))
            self.bias = nn.Parameter(torch.zeros(features, dtype=torch.float64))

        def forward(self, x):
            xc = x - x.mean(0, keepdim=True)
            sigma = xc.T @ xc / x.shape[0] + self.eps * torch.eye(x.shape[1], dtype=x.dtype)
            lam, D = torch.linalg.eigh(sigma)
            whitening = D @ torch.diag(lam.rsqrt()) @ D.T
            return xc @ whitening * self.weight + self.bias

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4).double(), DecorrelatedBN(4), nn.ReLU(), nn.Linear(4, 1).double())
    with torch.no_grad():
        w0 = torch.tensor(rng.standard_normal((4, 4)) * 0.5)
        w1 = torch.tensor(rng.standard_normal((1, 4)) * 0.5)
        net[0].weight.copy_(w0)
        net[0].bias.zero_()
        net[3].weight.copy_(w1)
        net[3].bias.zero_()
    target = (data[:, :1] - data[:, 1:2]).tanh()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(data), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    grads = [p.grad for p in net.parameters()]
    return evals, evecs, explained, scores, white_cov, proj, losses, grads


def test_pca_and_zca_whitening_through_eigh():
    ours, _ = run_both(pca_whitening, rtol=1e-7, atol=1e-9)
    evals, evecs, explained, scores, white_cov, proj, losses, grads = ours
    assert (np.diff(evals) <= 0).all()
    np.testing.assert_allclose(white_cov, np.eye(4), atol=1e-3)  # (less the 1e-5 added to small eigenvalues)
    np.testing.assert_allclose(proj, evecs[:, :2] @ evecs[:, :2].T, atol=1e-10)
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------------------
# Glow's invertible 1x1 convolution: LU-parametrised and plain (slogdet), trained by a flow's likelihood
# ----------------------------------------------------------------------------------------------


def glow_invconv(m, lu_init):
    torch, nn, F = m.torch, m.nn, m.F
    logabs = lambda x: torch.log(torch.abs(x))

    class InvConv2d(nn.Module):
        def __init__(self, weight):
            super().__init__()
            self.weight = nn.Parameter(weight.unsqueeze(2).unsqueeze(3))

        def forward(self, input):
            _, _, height, width = input.shape
            out = F.conv2d(input, self.weight)
            logdet = height * width * torch.slogdet(self.weight.squeeze().double())[1].float()
            return out, logdet

        def reverse(self, output):
            return F.conv2d(output, self.weight.squeeze().inverse().unsqueeze(2).unsqueeze(3))

    class InvConv2dLU(nn.Module):
        def __init__(self, weight):
            super().__init__()
            if lu_init == "lu":
                w_p, w_l, w_u = torch.linalg.lu(weight)
            else:  # the packed factorisation, unpacked (torch.lu_unpack's P, L, U)
                w_p, w_l, w_u = torch.lu_unpack(*torch.linalg.lu_factor(weight))
            w_s = torch.diag(w_u)
            w_u = torch.triu(w_u, 1)
            u_mask = torch.triu(torch.ones_like(w_u), 1)
            l_mask = u_mask.T
            self.register_buffer("w_p", w_p)
            self.register_buffer("u_mask", u_mask)
            self.register_buffer("l_mask", l_mask)
            self.register_buffer("s_sign", torch.sign(w_s))
            self.register_buffer("l_eye", torch.eye(l_mask.shape[0]))
            self.w_l = nn.Parameter(w_l)
            self.w_s = nn.Parameter(logabs(w_s))
            self.w_u = nn.Parameter(w_u)

        def forward(self, input):
            _, _, height, width = input.shape
            weight = self.calc_weight()
            out = F.conv2d(input, weight)
            logdet = height * width * torch.sum(self.w_s)
            return out, logdet

        def calc_weight(self):
            weight = (self.w_p @ (self.w_l * self.l_mask + self.l_eye)
                      @ ((self.w_u * self.u_mask) + torch.diag(self.s_sign * torch.exp(self.w_s))))
            return weight.unsqueeze(2).unsqueeze(3)

        def reverse(self, output):
            weight = self.calc_weight().squeeze()
            LU, pivots = torch.linalg.lu_factor(weight)
            flat = output.permute(0, 2, 3, 1).reshape(-1, weight.shape[0], 1)
            x = torch.linalg.lu_solve(LU, pivots, flat)
            return x.reshape(output.shape[0], output.shape[2], output.shape[3], -1).permute(0, 3, 1, 2)

    rng = np.random.default_rng(6)
    q = torch.linalg.qr(torch.tensor(rng.standard_normal((4, 4)), dtype=torch.float32)).Q
    x = torch.tensor(rng.standard_normal((3, 4, 5, 5)), dtype=torch.float32)
    results = {}
    for name, layer in (("plain", InvConv2d(q.clone())), ("lu", InvConv2dLU(q.clone()))):
        opt = torch.optim.Adam(layer.parameters(), lr=0.01)
        losses = []
        for step in range(5):
            opt.zero_grad()
            z, logdet = layer(x)
            nll = 0.5 * (z ** 2).sum() / x.shape[0] - logdet  # a standard normal prior
            nll.backward()
            opt.step()
            losses.append(nll.item())
        with torch.no_grad():
            z, logdet = layer(x)
            back = layer.reverse(z)
            w = (layer.calc_weight() if name == "lu" else layer.weight).squeeze()
            sign, logabsdet = torch.linalg.slogdet(w)
        results[name] = (losses, z, logdet, back, logabsdet * 25, sign, torch.linalg.det(w))
    return results


@pytest.mark.parametrize("lu_init", ["lu", "lu_factor"])
def test_glow_invertible_1x1_convolution(lu_init):
    ours, _ = run_both(glow_invconv, lu_init, rtol=2e-4, atol=2e-5)
    x = np.random.default_rng(6)
    for name, (losses, z, logdet, back, logabsdet, sign, det) in ours.items():
        assert losses[-1] < losses[0], name
        np.testing.assert_allclose(logdet, logabsdet, rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(sign * np.exp(logabsdet / 25), det, rtol=1e-4, err_msg=name)


# ----------------------------------------------------------------------------------------------
# matrix_exp for Lie groups: an orthogonal RNN (expRNN), SE(3) poses; matrix_power for Markov chains
# ----------------------------------------------------------------------------------------------


def exp_rnn(m):
    """expRNN (Lezcano-Casado & Martínez-Rubio): the recurrent weight is exp(A − Aᵀ), orthogonal for any A."""
    torch, nn = m.torch, m.nn

    class ExpRNN(nn.Module):
        def __init__(self, n_in, hidden, n_out):
            super().__init__()
            self.A = nn.Parameter(torch.zeros(hidden, hidden))
            self.inp = nn.Linear(n_in, hidden)
            self.out = nn.Linear(hidden, n_out)

        def recurrent(self):
            skew = self.A.triu(1) - self.A.triu(1).T
            return torch.matrix_exp(skew)

        def forward(self, x):
            W = self.recurrent()
            h = torch.zeros(x.shape[0], W.shape[0])
            for t in range(x.shape[1]):
                h = torch.tanh(h @ W.T + self.inp(x[:, t]))
            return self.out(h)

    rng = np.random.default_rng(7)
    torch.manual_seed(0)
    model = ExpRNN(2, 6, 1)
    with torch.no_grad():
        model.A.copy_(torch.tensor(rng.standard_normal((6, 6)) * 0.5, dtype=torch.float32))
        model.inp.weight.copy_(torch.tensor(rng.standard_normal((6, 2)) * 0.5, dtype=torch.float32))
        model.inp.bias.zero_()
        model.out.weight.copy_(torch.tensor(rng.standard_normal((1, 6)) * 0.5, dtype=torch.float32))
        model.out.bias.zero_()
    x = torch.tensor(rng.standard_normal((8, 7, 2)), dtype=torch.float32)
    y = x.sum((1, 2)).unsqueeze(-1).tanh()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    losses = []
    for step in range(6):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    W = model.recurrent().detach()
    return losses, model.A.grad, W, W @ W.T, torch.linalg.det(W)


def test_exp_rnn_orthogonal_recurrence_by_matrix_exp():
    ours, _ = run_both(exp_rnn, rtol=1e-4, atol=1e-5)
    losses, grad_A, W, WWt, det = ours
    np.testing.assert_allclose(WWt, np.eye(6), atol=1e-5)
    np.testing.assert_allclose(det, 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.triu(grad_A, 0) == 0, np.tri(6, dtype=bool))  # only A's strict upper triangle


def se3_poses(m):
    """SE(3) poses: exp of the 4x4 twist matrix (rotation by Rodrigues' closed form beside it), batched, float64,
    a pose fitted by gradient descent; matrix_exp's second derivative; matrix_power of the pose."""
    torch = m.torch

    def hat(w):
        z = torch.zeros_like(w[..., 0])
        return torch.stack([torch.stack([z, -w[..., 2], w[..., 1]], -1),
                            torch.stack([w[..., 2], z, -w[..., 0]], -1),
                            torch.stack([-w[..., 1], w[..., 0], z], -1)], -2)

    def se3_exp(xi):
        omega, v = xi[..., :3], xi[..., 3:]
        top = torch.cat([hat(omega), v.unsqueeze(-1)], -1)
        bottom = torch.zeros(*xi.shape[:-1], 1, 4, dtype=xi.dtype)
        return torch.linalg.matrix_exp(torch.cat([top, bottom], -2))

    def rodrigues(omega):
        theta = torch.linalg.vector_norm(omega, dim=-1, keepdim=True).unsqueeze(-1)
        K = hat(omega / theta.squeeze(-1))
        eye = torch.eye(3, dtype=omega.dtype)
        return eye + torch.sin(theta) * K + (1 - torch.cos(theta)) * K @ K

    rng = np.random.default_rng(8)
    xi = torch.tensor(rng.standard_normal((5, 6)), requires_grad=True)
    T = se3_exp(xi)
    R_closed = rodrigues(xi[:, :3])
    points = torch.tensor(rng.standard_normal((10, 3)))
    target = se3_exp(torch.tensor([[0.3, -0.2, 0.5, 1.0, 0.0, -1.0]], dtype=torch.float64))[0]
    homogeneous = torch.cat([points, torch.ones(10, 1, dtype=points.dtype)], -1)
    goal = homogeneous @ target.T
    pose = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([pose], lr=0.05)
    for step in range(30):
        opt.zero_grad()
        loss = ((homogeneous @ se3_exp(pose).T - goal) ** 2).sum(-1).mean()
        loss.backward()
        opt.step()
    (g,) = torch.autograd.grad(T[..., :3, 3].sum() + T[..., :3, :3].diagonal(0, -2, -1).sum(), xi, create_graph=True)
    (gg,) = torch.autograd.grad(g.pow(2).sum(), xi)
    P3 = torch.linalg.matrix_power(T.detach(), 3)
    return T, R_closed, pose.detach(), loss.item(), g, gg, P3, se3_exp(3 * xi.detach())


def test_se3_poses_by_matrix_exp():
    ours, _ = run_both(se3_poses, rtol=1e-8, atol=1e-9)
    T, R_closed, pose, loss, g, gg, P3, T3 = ours
    np.testing.assert_allclose(T[:, :3, :3], R_closed, atol=1e-10)
    np.testing.assert_allclose(P3, T3, atol=1e-9)
    assert loss < 1e-2


def markov_chain(m):
    """A Markov chain's n-step transitions by matrix_power (positive, zero and negative powers), its stationary
    distribution by eig of Pᵀ (the eigenvalue 1, complex results) and by solve with the normalisation row."""
    torch = m.torch
    rng = np.random.default_rng(9)
    logits = torch.tensor(rng.standard_normal((5, 5)), requires_grad=True)
    P = torch.softmax(logits, -1)
    P50 = torch.linalg.matrix_power(P, 50)
    P0 = torch.linalg.matrix_power(P, 0)
    Pinv2 = torch.linalg.matrix_power(P, -2)
    evals, evecs = torch.linalg.eig(P.T)
    k = torch.argmin((evals - 1).abs())
    pi_eig = evecs[:, k].real
    pi_eig = pi_eig / pi_eig.sum()
    A = torch.cat([(P.T - torch.eye(5, dtype=P.dtype))[:-1], torch.ones(1, 5, dtype=P.dtype)])
    b = torch.zeros(5, dtype=P.dtype)
    b[-1] = 1
    pi_solve = torch.linalg.solve(A, b)
    (g,) = torch.autograd.grad(pi_solve[0] + P50[1, 2], logits)
    spectral_gap = 1 - torch.sort(evals.abs(), descending=True).values[1]
    batched = torch.linalg.matrix_power(P.detach().expand(3, 5, 5), 4)
    return P50, P0, Pinv2, pi_eig, pi_solve, g, spectral_gap, evals.dtype == torch.complex128, batched


def test_markov_chain_by_matrix_power_and_eig():
    ours, _ = run_both(markov_chain, rtol=1e-8, atol=1e-10)
    P50, P0, Pinv2, pi_eig, pi_solve, g, gap, complex_, batched = ours
    np.testing.assert_allclose(pi_eig, pi_solve, rtol=1e-8)
    np.testing.assert_allclose(P50, np.broadcast_to(pi_solve, (5, 5)), atol=1e-8)
    np.testing.assert_allclose(P0, np.eye(5))
    assert complex_ and 0 < gap < 1
