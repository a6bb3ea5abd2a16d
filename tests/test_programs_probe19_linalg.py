# ruff: noqa: B007, B008, B023, E741, E731, F841, N806  (the programs are kept as their authors wrote them)
"""Numerical linear algebra as real programs use it (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same data, comparing values, gradients, dtypes and errors.

Gaussian-process regression (an RBF kernel's hyperparameters learnt by Adam through ``linalg.cholesky``,
``cholesky_solve`` and the log-determinant as 2 Σ log diag L; predictions by ``solve_triangular``; GPyTorch's
``psd_safe_cholesky``, jitter added while ``cholesky_ex``'s info is non-zero); least squares and ridge
(``linalg.lstsq`` with every driver, ``solve``, ``pinv``, the normal equations, QR, a hyperparameter's gradient
through the solve, polynomial fits by ``linalg.vander``/``torch.vander``); orthogonal Procrustes and the polar
decomposition through ``linalg.svd`` (Newton–Schulz and Löwdin's (MᵀM)^(-1/2) by eigh against it); PCA and ZCA
whitening by ``linalg.eigh``, a decorrelated batch-norm layer trained through it; Glow's invertible 1x1
convolution, LU-parametrised (``linalg.lu``, ``lu_factor``/``lu_unpack``, ``lu_solve`` for the reverse, log|s|
against ``slogdet``) and plain (``slogdet``, ``inverse``); ``matrix_exp`` for Lie groups (expRNN's orthogonal
recurrence, SE(3) poses fitted by gradient descent, second derivatives); a Markov chain by ``matrix_power`` and
``eig`` (complex results); every vector and matrix norm (``vector_norm``/``matrix_norm``/``linalg.norm``/
``torch.norm``/``Tensor.norm``), ``cond`` of every p, ``matrix_rank`` with tolerances, a spectral-norm penalty;
QR by ``geqrf``/``householder_product``/``orgqr``/``ormqr`` with gradients; a linear system's spectral radius
penalised through ``eigvals``; mesh normals by ``linalg.cross``, ``multi_dot`` chains; the ``_ex`` variants'
info codes on batches with singular members and the errors PyTorch raises; a Kalman filter's likelihood and RTS
smoother; Newton's method and an implicit layer's gradient (``torch.func.jacrev``, ``linalg.solve``); a quantum
evolution by complex ``matrix_exp`` and ``eigh``; ``torch.func`` (vmap, grad, hessian, jacrev, jvp) over a GP's
likelihood; Shampoo (inverse fourth roots by eigh), K-FAC (Kronecker factors inverted by cholesky_inverse) and
conjugate gradients against solve. All in float64 and, where programs run so, float32. Then a hypothesis-driven
differential fuzz over shapes for 21 linalg functions (values, dtypes and gradients against PyTorch, batched and
broadcast, gradcheck in float64 on chainrule).

Focused tests of what the programs found: ``cholesky(upper=True)`` reads the upper triangle (values and
``cholesky_ex``'s info); a NaN pivot is not positive-definite; ``cholesky_solve``/``cholesky_inverse`` read only
the factor's triangle, and cholesky_solve gives inf for a singular factor with PyTorch's gradient for any factor;
``torch.svd(compute_uv=False)``'s square zero U and V; ``linalg.svd`` of an empty batch;
``vector_norm(ord=0)`` has no gradient; eigh's and svd's failure to converge is a ``LinAlgError`` naming the
batch element, ``eig`` refuses non-finite input; ``lstsq(driver='gels')`` refuses a rank-deficient matrix;
``solve(left=False)`` refuses vectors; ``geqrf`` of a tensor that requires grad runs and refuses only its
backward; ``matrix_exp``'s accuracy in float32 and for a batch of different norms; ``eigh``'s UPLO in either case;
out= of another dtype refused by norms, solves and cross; multi_dot's errors; vmap of jacfwd through det (where
PyTorch 2.13 itself is wrong)."""

import math
import warnings

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


# ----------------------------------------------------------------------------------------------
# Norms of every ord, cond, matrix_rank; a spectral-norm penalty; QR by Householder reflectors
# ----------------------------------------------------------------------------------------------

INF = float("inf")


def norm_diagnostics(m, dtype_name):
    """What a training script logs about its weights: every vector and matrix norm (linalg.norm, vector_norm,
    matrix_norm, torch.norm, Tensor.norm), condition numbers, numerical ranks with tolerances, and the gradients
    of a penalty made of all of them."""
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(10)
    W = torch.tensor(rng.standard_normal((3, 5, 4)), dtype=dtype, requires_grad=True)
    v = torch.tensor(rng.standard_normal((3, 7)), dtype=dtype, requires_grad=True)
    out = {}
    penalty = 0
    for ord in (2, 1, INF, -INF, 0.5, 3, -1.5):
        out[f"vector {ord}"] = torch.linalg.vector_norm(v, ord=ord, dim=-1)
        out[f"vector all {ord}"] = torch.linalg.vector_norm(W, ord=ord)
        out[f"vector dims {ord}"] = torch.linalg.vector_norm(W, ord=ord, dim=(0, 2), keepdim=True)
        penalty = penalty + out[f"vector {ord}"].sum() + out[f"vector dims {ord}"].sum()
    for ord in ("fro", "nuc", 1, -1, 2, -2, INF, -INF):
        out[f"matrix {ord}"] = torch.linalg.matrix_norm(W, ord=ord)
        out[f"matrix dims {ord}"] = torch.linalg.matrix_norm(W, ord=ord, dim=(2, 0), keepdim=True)
        out[f"norm {ord}"] = torch.linalg.norm(W[0], ord=ord)
        penalty = penalty + out[f"matrix {ord}"].sum()
    for ord in (None, 1, 2, INF, -INF, 0, 3):
        out[f"linalg.norm vec {ord}"] = torch.linalg.norm(v, ord=ord, dim=-1)
    out["linalg.norm all"] = torch.linalg.norm(W)
    out["torch.norm fro"] = torch.norm(W, p="fro", dim=(1, 2))
    out["torch.norm nuc"] = torch.norm(W, p="nuc", dim=(1, 2))
    out["torch.norm 3"] = torch.norm(v, p=3, dim=1, keepdim=True)
    out["Tensor.norm"] = W.norm(dim=-1)
    out["Tensor.norm inf"] = v.norm(p=INF)
    out["norm dtype"] = torch.linalg.vector_norm(v.detach().float(), dtype=torch.float64)
    S = W[:, :4, :] @ W[:, :4, :].mT + torch.eye(4, dtype=dtype)
    for p in (None, 2, -2):
        out[f"cond {p}"] = torch.linalg.cond(S, p)
        penalty = penalty + out[f"cond {p}"].sum() * 1e-3
    for p in ("fro", "nuc", 1, -1, INF, -INF):  # (values only: PyTorch's own backward of these fails, as its
        out[f"cond {p}"] = torch.linalg.cond(S.detach(), p)  # linalg.inv_ex output is written in place)
    out["cond rect"] = torch.linalg.cond(W)
    low = W[:, :, :2] @ W[:, :2, :2]  # rank 2 at most
    out["rank"] = torch.linalg.matrix_rank(W)
    out["rank low"] = torch.linalg.matrix_rank(low @ low.mT)
    out["rank hermitian"] = torch.linalg.matrix_rank(low @ low.mT, hermitian=True)
    out["rank atol"] = torch.linalg.matrix_rank(W, atol=2.0)
    out["rank rtol"] = torch.linalg.matrix_rank(W, rtol=0.4)
    out["rank atol tensor"] = torch.linalg.matrix_rank(W, atol=torch.tensor([0.5, 1.5, 3.0], dtype=dtype))
    out["rank dtype"] = str(out["rank"].dtype).split(".")[-1]
    out["dist"] = torch.dist(W[0], W[1], p=3)
    out["renorm"] = torch.renorm(W, p=2, dim=0, maxnorm=5.0)
    gW, gv = torch.autograd.grad(penalty, (W, v))
    out["grad W"], out["grad v"] = gW, gv
    return out


@pytest.mark.parametrize("dtype_name, rtol, atol", [("float64", 1e-8, 1e-10), ("float32", 1e-4, 1e-5)])
def test_norms_of_every_order_cond_and_rank(dtype_name, rtol, atol):
    ours, _ = run_both(norm_diagnostics, dtype_name, rtol=rtol, atol=atol)
    W = np.random.default_rng(10).standard_normal((3, 5, 4))
    for ord in ("fro", "nuc", 1, -1, 2, -2, INF, -INF):
        np.testing.assert_allclose(ours[f"matrix {ord}"], np.linalg.norm(W, ord=ord, axis=(1, 2)), rtol=rtol * 10)
    assert (ours["rank"] == 4).all() and (ours["rank low"] == 2).all() and (ours["rank hermitian"] == 2).all()
    assert ours["rank dtype"] == "int64"


def spectral_norm_penalty(m):
    """A Lipschitz penalty: the largest singular value of each layer (matrix_norm(ord=2), svdvals, and power
    iteration) pushed toward 1 by training; nn.utils.parametrizations.spectral_norm's σ against svdvals."""
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(11)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.tensor(rng.standard_normal(p.shape) * 0.8, dtype=torch.float32))
    x = torch.tensor(rng.standard_normal((16, 6)), dtype=torch.float32)
    y = torch.tensor(rng.standard_normal((16, 2)), dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    history = []
    for step in range(6):
        opt.zero_grad()
        sigmas = [torch.linalg.matrix_norm(layer.weight, ord=2) for layer in (net[0], net[2])]
        loss = F.mse_loss(net(x), y) + sum((s - 1).relu() ** 2 for s in sigmas)
        loss.backward()
        opt.step()
        history.append((loss.item(), [s.item() for s in sigmas]))
    W = net[0].weight.detach()
    u = torch.tensor(rng.standard_normal(8), dtype=torch.float32)
    for _ in range(50):
        v = F.normalize(W.T @ u, dim=0)
        u = F.normalize(W @ v, dim=0)
    power = u @ W @ v
    return history, torch.linalg.svdvals(W), power, torch.linalg.matrix_norm(W, 2), [p.grad for p in net.parameters()]


def test_spectral_norm_penalty():
    ours, _ = run_both(spectral_norm_penalty, rtol=1e-4, atol=1e-5)
    history, svals, power, two_norm, grads = ours
    np.testing.assert_allclose([power, two_norm], [svals[0], svals[0]], rtol=1e-4)
    assert history[-1][0] < history[0][0]


def householder_qr(m):
    """QR as LAPACK stores it (geqrf's reflectors and τ), Q rebuilt by householder_product (and orgqr), applied by
    ormqr without forming it; gradients through householder_product and through linalg.qr; a Gram–Schmidt QR by
    hand against both; batched, and the wide case."""
    torch = m.torch
    rng = np.random.default_rng(12)
    A = torch.tensor(rng.standard_normal((2, 6, 4)))
    a, tau = torch.geqrf(A)
    Q = torch.linalg.householder_product(a, tau)
    Q2 = torch.orgqr(a, tau)
    R = a.triu()[..., :4, :]
    C = torch.tensor(rng.standard_normal((2, 6, 3)))
    QtC = torch.ormqr(a, tau, C, left=True, transpose=True)
    CQ = torch.ormqr(a, tau, C.mT, left=False, transpose=False)
    # gradients: through the reflectors and τ, and through linalg.qr's Q and R
    refl = a.detach().clone().requires_grad_()
    t = tau.detach().clone().requires_grad_()
    H = torch.linalg.householder_product(refl, t)
    g_refl, g_tau = torch.autograd.grad((H * torch.arange(24.0, dtype=H.dtype).reshape(6, 4)).sum(), (refl, t))
    X = A.clone().requires_grad_()
    Qx, Rx = torch.linalg.qr(X)
    (gX,) = torch.autograd.grad(Qx.sum() + (Rx ** 2).sum(), X)
    # Gram–Schmidt by hand
    cols = []
    for j in range(4):
        v = A[0, :, j]
        for q in cols:
            v = v - (q @ A[0, :, j]) * q
        cols.append(v / torch.linalg.vector_norm(v))
    Qgs = torch.stack(cols, 1)
    Qw, Rw = torch.linalg.qr(A[0].T)  # wide: 4 x 6
    Qc, Rc = torch.linalg.qr(A, mode="complete")
    return Q, Q2, R, QtC, CQ, g_refl, g_tau, Qx, Rx, gX, Qgs, Qw, Rw, Qc, Rc, torch.linalg.qr(A, mode="r")[1]


def test_householder_qr_and_gradients():
    ours, _ = run_both(householder_qr, rtol=1e-8, atol=1e-10)
    Q, Q2, R, QtC, CQ, g_refl, g_tau, Qx, Rx, gX, Qgs, Qw, Rw, Qc, Rc, R_only = ours
    A = np.random.default_rng(12).standard_normal((2, 6, 4))
    np.testing.assert_allclose(Q @ R, A, atol=1e-10)
    np.testing.assert_allclose(Q, Q2)
    np.testing.assert_allclose(np.abs(Qgs), np.abs(Qx[0]), atol=1e-10)
    np.testing.assert_allclose(Qc[..., :4], Qx, atol=1e-10)
    np.testing.assert_allclose(R_only, Rx, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# eigvals of non-symmetric matrices: a linear system's spectral radius penalised in training
# ----------------------------------------------------------------------------------------------


def stable_linear_dynamics(m, dtype_name):
    """x_{t+1} = A x_t fitted to trajectories, with a penalty on the spectral radius max|λ(A)| (complex
    eigenvalues, their gradient through a real A), and the trajectory's response through eig's vectors."""
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    rng = np.random.default_rng(13)
    A_true = torch.tensor([[0.9, -0.3, 0.0], [0.3, 0.9, 0.1], [0.0, 0.0, 0.7]], dtype=dtype)
    xs = [torch.tensor(rng.standard_normal((8, 3)), dtype=dtype)]
    for t in range(6):
        xs.append(xs[-1] @ A_true.T)
    X0, X1 = torch.cat(xs[:-1]), torch.cat(xs[1:])
    A = torch.nn.Parameter(torch.tensor(rng.standard_normal((3, 3)) * 0.5 + np.eye(3) * 0.5, dtype=dtype))
    opt = torch.optim.Adam([A], lr=0.05)
    history = []
    for step in range(12):
        opt.zero_grad()
        lam = torch.linalg.eigvals(A)
        radius = lam.abs().max()
        loss = ((X0 @ A.T - X1) ** 2).mean() + (radius - 0.95).relu() ** 2
        loss.backward()
        opt.step()
        history.append((loss.item(), radius.item()))
    lam, V = torch.linalg.eig(A.detach())
    recon = (V @ torch.diag_embed(lam) @ torch.linalg.inv(V)).real
    order = torch.argsort(lam.real * 10 + lam.imag)
    B = A.detach().clone().requires_grad_()
    lamB, VB = torch.linalg.eig(B)
    # a phase-invariant loss of the eigenvectors: |V|'s columns
    (gB,) = torch.autograd.grad(lamB.real.sum() + (VB.abs() ** 2 * torch.arange(3, dtype=dtype)).sum(), B)
    batched = torch.linalg.eigvals(torch.stack([A_true, A_true.T, 2 * A_true]))
    return (history, lam[order], recon, gB, lam.dtype == cdtype, batched.abs().sort(-1).values,
            torch.linalg.eigvals(A_true).real.sum())


# (float32's atol: the eigenvector term of gB is rounding noise around 0, 3e-5 to 7e-5 apart between LAPACK's kernels
# for one processor and another's)
@pytest.mark.parametrize("dtype_name, rtol, atol", [("float64", 1e-8, 1e-10), ("float32", 2e-4, 1e-4)])
def test_spectral_radius_penalty_through_eigvals(dtype_name, rtol, atol):
    ours, _ = run_both(stable_linear_dynamics, dtype_name, rtol=rtol, atol=atol)
    history, lam, recon, gB, complex_dtype, batched, trace = ours
    assert complex_dtype and history[-1][0] < history[0][0]
    np.testing.assert_allclose(trace, 2.5, rtol=rtol * 10)


# ----------------------------------------------------------------------------------------------
# multi_dot, cross products, and the _ex variants' info codes on batches with singular members
# ----------------------------------------------------------------------------------------------


def mesh_normals_and_chains(m):
    torch = m.torch
    rng = np.random.default_rng(14)
    verts = torch.tensor(rng.standard_normal((6, 3)), requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 3, 4], [2, 4, 5]])
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    n = torch.linalg.cross(v1 - v0, v2 - v0)
    area = 0.5 * torch.linalg.vector_norm(n, dim=-1)
    unit = torch.nn.functional.normalize(n, dim=-1)
    n_old = torch.cross(v1 - v0, v2 - v0, dim=1)
    n_dim0 = torch.linalg.cross((v1 - v0).T, (v2 - v0).T, dim=0).T
    n_bcast = torch.linalg.cross(v1 - v0, torch.tensor([[0.0, 0.0, 1.0]], dtype=verts.dtype))
    (g,) = torch.autograd.grad(area.sum() + unit[:, 2].sum(), verts)
    # multi_dot picks the cheapest order; the value and gradients are the product's
    mats = [torch.tensor(rng.standard_normal(s), requires_grad=True) for s in ((7,), (7, 2), (2, 9), (9, 3), (3,))]
    chain = torch.linalg.multi_dot(mats)
    grads = torch.autograd.grad(chain, mats)
    plain = mats[0] @ mats[1] @ mats[2] @ mats[3] @ mats[4]
    chain2 = torch.linalg.multi_dot([mats[1], mats[2], mats[3]])
    with warnings.catch_warnings():  # (deprecated in PyTorch, with a warning)
        warnings.simplefilter("ignore")
        chained = torch.chain_matmul(*[x.detach() for x in mats[1:4]])
    return area, unit, n_old, n_dim0, n_bcast, g, chain, grads, plain, chain2, chained


def test_mesh_normals_by_cross_and_chains_by_multi_dot():
    ours, _ = run_both(mesh_normals_and_chains, rtol=1e-9, atol=1e-10)
    area, unit, n_old, n_dim0, n_bcast, g, chain, grads, plain, chain2, chained = ours
    np.testing.assert_allclose(chain, plain, rtol=1e-10)
    np.testing.assert_allclose(n_old, n_dim0)
    np.testing.assert_allclose(chain2, chained, rtol=1e-10)


def ex_info_codes(m):
    """A batch of systems, some singular or not positive-definite: the _ex variants' info codes (int32), their
    results on the good members, and the errors the plain functions raise, naming the batch element."""
    torch = m.torch
    good = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    singular = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    indefinite = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    zero_row = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    A = torch.stack([good, singular, indefinite, zero_row])
    B = torch.arange(12.0, dtype=torch.float64).reshape(4, 3, 1)
    out = {}
    X, info = torch.linalg.solve_ex(A, B)
    out["solve_ex info"], out["solve_ex good"] = info, X[[0, 2]]
    inv, info = torch.linalg.inv_ex(A)
    out["inv_ex info"], out["inv_ex good"] = info, inv[[0, 2]]
    L, info = torch.linalg.cholesky_ex(A)
    out["cholesky_ex info"], out["cholesky_ex good"] = info, L[0]
    U, info = torch.linalg.cholesky_ex(A, upper=True)
    out["cholesky_ex upper info"], out["cholesky_ex upper good"] = info, U[0]
    LU, piv, info = torch.linalg.lu_factor_ex(A)
    out["lu_factor_ex info"], out["lu_factor_ex pivots"], out["lu_factor_ex LU good"] = info, piv, LU[[0, 2]]
    out["dtypes"] = [str(t.dtype).split(".")[-1] for t in (info, piv)]
    out["det"] = torch.linalg.det(A)
    # (not of the singular member: its last pivot is 0 or 1e-16, whichever LAPACK's kernel for the processor rounds
    # to, so its log|det| is -inf or -35 in either library)
    out["slogdet"] = torch.linalg.slogdet(A[[0, 2, 3]])
    out["matrix_rank"] = torch.linalg.matrix_rank(A)
    errors = {}
    for name, call in [("inv", lambda: torch.linalg.inv(A)), ("solve", lambda: torch.linalg.solve(A, B)),
                       ("cholesky", lambda: torch.linalg.cholesky(A)),
                       ("cholesky single", lambda: torch.linalg.cholesky(indefinite)),
                       ("inv_ex check", lambda: torch.linalg.inv_ex(A, check_errors=True)),
                       ("cholesky_ex check", lambda: torch.linalg.cholesky_ex(A, check_errors=True)),
                       ("lu_factor", lambda: torch.linalg.lu_factor(A)),
                       ("matrix_power -1", lambda: torch.linalg.matrix_power(A, -1)),
                       ("inverse", lambda: A.inverse()),
                       ("eigh nan", lambda: torch.linalg.eigh(A * float("nan"))),
                       ("svd inf", lambda: torch.linalg.svdvals(torch.stack([good, good * float("inf")]))),
                       ("eig nan", lambda: torch.linalg.eig(A * float("nan")))]:
        try:
            call()
            errors[name] = None
        except torch.linalg.LinAlgError as e:
            errors[name] = ("LinAlgError", str(e))
        except RuntimeError as e:
            errors[name] = ("RuntimeError", str(e))
    out["errors"] = errors
    return out


def test_ex_info_codes_and_singular_errors():
    ours, theirs = run_both(ex_info_codes, compare=False)
    errors = ours.pop("errors")
    if theirs is not None:
        their_errors = theirs.pop("errors")
        for name, error in errors.items():  # the class, and PyTorch's words (LAPACK's error code aside)
            assert error[0] == their_errors[name][0], name
            assert error[1].rstrip(".") == their_errors[name][1].split(" (error code")[0].rstrip("."), name
        run_both(lambda m: {k: v for k, v in ex_info_codes(m).items() if k != "errors"}, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours["solve_ex info"], [0, 3, 0, 3])
    np.testing.assert_array_equal(ours["cholesky_ex info"], [0, 2, 2, 3])
    assert ours["dtypes"] == ["int32", "int32"]
    assert errors["cholesky"] == ("LinAlgError", "linalg.cholesky: (Batch element 1): The factorization could not "
                                  "be completed because the input is not positive-definite (the leading minor of "
                                  "order 2 is not positive-definite).")


# ----------------------------------------------------------------------------------------------
# A differential fuzz over shapes: a family of linalg functions, values and gradients against PyTorch
# ----------------------------------------------------------------------------------------------


def _general(rng, shape):
    n = shape[-1]
    return rng.standard_normal(shape) + 2 * n ** 0.5 * np.eye(n)  # (well away from singular)


def _spd(rng, shape):
    x = rng.standard_normal(shape)
    return x @ np.swapaxes(x, -1, -2) + shape[-1] * np.eye(shape[-1])


def _spread_spd(rng, shape):
    """Symmetric, eigenvalues 1, 2, ..., n (apart, so that eigenvectors are well defined and gradients tame)."""
    q = np.linalg.qr(rng.standard_normal(shape))[0]
    return q @ (np.arange(1.0, shape[-1] + 1)[:, None] * np.swapaxes(q, -1, -2))


def _tall(rng, shape):
    return rng.standard_normal(shape[:-2] + (shape[-1] + 2, shape[-1]))


def sym(A):
    """A symmetric function of A: what a Cholesky or eigh program differentiates (they read one triangle, and give the
    symmetric gradient), so that finite differences of any entry see it."""
    return (A + A.mT) / 2


# name: (inputs from (rng, batch, other_batch, n, k), the program on them; sign- and phase-free results only)
FAMILY = {
    "solve": (lambda r, b, b2, n, k: [_general(r, b + (n, n)), r.standard_normal(b2 + (n, k))],
              lambda m, A, B: m.torch.linalg.solve(A, B)),
    "solve left=False": (lambda r, b, b2, n, k: [_general(r, b + (n, n)), r.standard_normal(b2 + (k, n))],
                         lambda m, A, B: m.torch.linalg.solve(A, B, left=False)),
    "inv": (lambda r, b, b2, n, k: [_general(r, b + (n, n))], lambda m, A: m.torch.linalg.inv(A)),
    "det, slogdet": (lambda r, b, b2, n, k: [_general(r, b + (n, n))],
                     lambda m, A: (m.torch.linalg.det(A), m.torch.linalg.slogdet(A).logabsdet)),
    "logdet": (lambda r, b, b2, n, k: [_spd(r, b + (n, n))], lambda m, A: m.torch.logdet(A)),
    "cholesky": (lambda r, b, b2, n, k: [_spd(r, b + (n, n))],
                 lambda m, A: (m.torch.linalg.cholesky(sym(A)), m.torch.linalg.cholesky(sym(A), upper=True))),
    "cholesky_solve": (lambda r, b, b2, n, k: [_spd(r, b + (n, n)), r.standard_normal(b2 + (n, k))],
                       lambda m, A, B: m.torch.cholesky_solve(B, m.torch.linalg.cholesky(sym(A)))),
    "cholesky_inverse": (lambda r, b, b2, n, k: [_spd(r, b + (n, n))],
                         lambda m, A: m.torch.cholesky_inverse(m.torch.linalg.cholesky(sym(A), upper=True),
                                                               upper=True)),
    "solve_triangular": (lambda r, b, b2, n, k: [_general(r, b + (n, n)), r.standard_normal(b2 + (n, k))],
                         lambda m, A, B: (m.torch.linalg.solve_triangular(A, B, upper=True),
                                          m.torch.linalg.solve_triangular(A, B.mT, upper=False, left=False),
                                          m.torch.linalg.solve_triangular(A, B, upper=False, unitriangular=True))),
    "lu_solve": (lambda r, b, b2, n, k: [_general(r, b + (n, n)), r.standard_normal(b2 + (n, k))],
                 lambda m, A, B: (m.torch.linalg.lu_solve(*m.torch.linalg.lu_factor(A), B),
                                  m.torch.linalg.lu_solve(*m.torch.linalg.lu_factor(A), B, adjoint=True))),
    "lu": (lambda r, b, b2, n, k: [r.standard_normal(b + (n, n + k - 1))], lambda m, A: m.torch.linalg.lu(A)),
    "qr": (lambda r, b, b2, n, k: [_tall(r, b + (n, n))], lambda m, A: tuple(m.torch.linalg.qr(A))),
    "eigh": (lambda r, b, b2, n, k: [_spread_spd(r, b + (n, n))],
             lambda m, A: (lambda w, V: (w, V @ m.torch.diag_embed(w.sqrt()) @ V.mT, V.abs()))(
                 *m.torch.linalg.eigh(sym(A)))),
    "svd": (lambda r, b, b2, n, k: [_tall(r, b + (n, n))],
            lambda m, A: (lambda U, S, Vh: (S, U @ m.torch.diag_embed(S.log()) @ Vh, U.abs()))(
                *m.torch.linalg.svd(A, full_matrices=False))),
    "pinv, lstsq": (lambda r, b, b2, n, k: [_tall(r, b + (n, n)), r.standard_normal(b + (n + 2, k))],
                    lambda m, A, B: (m.torch.linalg.pinv(A), m.torch.linalg.lstsq(A, B).solution)),
    "matrix_exp": (lambda r, b, b2, n, k: [r.standard_normal(b + (n, n))], lambda m, A: m.torch.linalg.matrix_exp(A)),
    "matrix_power": (lambda r, b, b2, n, k: [_general(r, b + (n, n)) / n],
                     lambda m, A: tuple(m.torch.linalg.matrix_power(A, p) for p in (-2, 0, 1, 3))),
    "norms": (lambda r, b, b2, n, k: [r.standard_normal(b + (n, n + k))],
              lambda m, A: tuple(m.torch.linalg.matrix_norm(A, ord) for ord in ("fro", "nuc", 1, 2, -2, INF))
              + tuple(m.torch.linalg.vector_norm(A, ord, dim=-1) for ord in (1, 2, 3, INF, 0.5))),
    "householder_product": (lambda r, b, b2, n, k: [r.standard_normal(b + (n + 1, n)), r.standard_normal(b + (n,))],
                            lambda m, A, tau: m.torch.linalg.householder_product(A, tau)),
    "eigvals": (lambda r, b, b2, n, k: [r.standard_normal(b + (n, n))],  # (symmetric functions of λ: no order)
                lambda m, A: tuple((m.torch.linalg.eigvals(A) ** p).sum(-1).real for p in (1, 2, 3))),
    "multi_dot, cross, vander": (lambda r, b, b2, n, k: [r.standard_normal((n, 3)), r.standard_normal((3, k))],
                                 lambda m, A, B: (m.torch.linalg.multi_dot([A, B, B.T, A.T]),
                                                  m.torch.linalg.cross(A, A.roll(1, 0)),
                                                  m.torch.linalg.vander(A[:, 0], N=4))),
}

FUZZ = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def _run_family(m, name, arrays, dtype_name):
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    inputs = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    outputs = FAMILY[name][1](m, *inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    loss = sum((o * torch.cos(torch.arange(o.numel(), dtype=dtype)).reshape(o.shape)).sum() for o in outputs
               if o.requires_grad)
    grads = torch.autograd.grad(loss, inputs)
    return ([o.detach() for o in outputs], [str(o.dtype).split(".")[-1] for o in outputs], list(grads),
            [str(g.dtype).split(".")[-1] for g in grads])


@FUZZ
@given(name=st.sampled_from(sorted(FAMILY)), batch=st.sampled_from([(), (2,), (2, 1), (1, 3)]),
       other=st.sampled_from([None, (), (3,)]), n=st.integers(1, 4), k=st.integers(1, 3),
       dtype_name=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 2**16))
def test_fuzz_linalg_family_against_pytorch(name, batch, other, n, k, dtype_name, seed):
    """Values, dtypes and gradients of each function of the family on random shapes (batched, a second operand's
    batch broadcast against the first's), against PyTorch; in float64 chainrule's gradients against finite
    differences too (gradcheck), so that the check stands where PyTorch is missing."""
    rng = np.random.default_rng(seed)
    b2 = batch if other is None else other
    if other is not None and batch and other:  # (shapes that broadcast: (2, 1) with (3,) gives (2, 3))
        b2 = other if batch[-1] == 1 or batch[-1] == other[-1] else batch
    arrays = FAMILY[name][0](rng, batch, b2, n, k)
    tol = dict(rtol=1e-7, atol=1e-9) if dtype_name == "float64" else dict(rtol=2e-3, atol=2e-4)
    ours, _ = run_both(_run_family, name, arrays, dtype_name, **tol)
    assert all(d == dtype_name for d in ours[3])
    if dtype_name == "float64":
        def fn(*xs):
            outs = FAMILY[name][1](OURS, *xs)
            return outs if isinstance(outs, tuple) else (outs,)

        inputs = tuple(autograd.tensor(a, requires_grad=True) for a in arrays)
        assert autograd.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Focused tests of what the programs found (on chainrule and PyTorch: the T fixture)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_cholesky_upper_reads_the_upper_triangle(T, dtype):
    """LAPACK's potrf with uplo='U' reads A's upper triangle only: for an A whose triangles disagree (built upper
    only, or not exactly symmetric) U is the factor of the Hermitian matrix that triangle describes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 3)) + (1j * rng.standard_normal((2, 3, 3)) if dtype == "complex128" else 0)
    hermitian = x @ np.conj(np.swapaxes(x, -1, -2)) + 3 * np.eye(3)
    upper_only = np.triu(hermitian) + np.tril(np.full((3, 3), 50.0), -1)  # junk below the diagonal
    expected = np.conj(np.swapaxes(np.linalg.cholesky(hermitian), -1, -2))
    A = T.tensor(upper_only)
    np.testing.assert_allclose(T.linalg.cholesky(A, upper=True).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(T.linalg.cholesky_ex(A, upper=True).L.numpy(), expected, atol=1e-12)
    # the info codes read the same triangle: the lower one is not positive-definite, the upper is
    assert (T.linalg.cholesky_ex(A).info > 0).all()
    assert T.linalg.cholesky_ex(A, upper=True).info.tolist() == [0, 0]
    # and the lower factor still reads only the lower triangle
    lower_only = np.tril(hermitian) + np.triu(np.full((3, 3), 50.0), 1)
    np.testing.assert_allclose(T.linalg.cholesky(T.tensor(lower_only)).numpy(), np.linalg.cholesky(hermitian),
                               atol=1e-12)


def test_cholesky_of_a_nan_matrix_is_not_positive_definite(T):
    """A NaN pivot fails LAPACK's test (ajj <= 0 or NaN): LinAlgError, and info in cholesky_ex (NumPy returned
    NaN silently)."""
    A = T.stack([T.eye(3, dtype=T.float64), T.full((3, 3), float("nan"), dtype=T.float64)])
    with pytest.raises(T.linalg.LinAlgError, match=r"linalg.cholesky: \(Batch element 1\): The factorization could "
                                                   r"not be completed .* order 1 is not positive-definite"):
        T.linalg.cholesky(A)
    assert T.linalg.cholesky_ex(A).info.tolist() == [0, 1]


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_and_inverse_read_only_the_factors_triangle(T, upper):
    """potrs and potri read the factor's triangle alone: what lies across it (a factor stored in a full
    matrix beside other data) does not change the result."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3))
    A = x @ x.T + 3 * np.eye(3)
    L = np.linalg.cholesky(A)
    factor = L.T.copy() if upper else L.copy()
    junk = np.tril(rng.standard_normal((3, 3)), -1)
    stored = factor + (junk.T if not upper else junk)
    b = rng.standard_normal((3, 2))
    X = T.cholesky_solve(T.tensor(b), T.tensor(stored), upper=upper)
    np.testing.assert_allclose(X.numpy(), np.linalg.solve(A, b), rtol=1e-10)
    np.testing.assert_allclose(T.cholesky_inverse(T.tensor(stored), upper=upper).numpy(), np.linalg.inv(A),
                               rtol=1e-10)


def test_torch_svd_without_uv_gives_square_zero_u_and_v(T):
    """torch.svd(compute_uv=False): U and V are zero-filled (m, m) and (n, n), whatever ``some`` says; S is
    differentiable."""
    A = T.tensor(np.random.default_rng(2).standard_normal((2, 5, 3)), requires_grad=True)
    U, S, V = T.svd(A, compute_uv=False)
    assert tuple(U.shape) == (2, 5, 5) and tuple(V.shape) == (2, 3, 3)
    assert not U.any() and not V.any()
    (g,) = T.autograd.grad(S.sum(), A)
    u, s, vh = np.linalg.svd(A.detach().numpy(), full_matrices=False)
    np.testing.assert_allclose(g.numpy(), u @ vh, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 3, 3), (0, 3, 4), (0, 4, 3), (2, 0, 3), (0, 0, 0)])
@pytest.mark.parametrize("full_matrices", [True, False])
def test_svd_of_an_empty_batch(T, shape, full_matrices):
    m, n = shape[-2:]
    k = min(m, n)
    U, S, Vh = T.linalg.svd(T.zeros(shape, dtype=T.float64), full_matrices=full_matrices)
    assert tuple(U.shape) == shape[:-2] + ((m, m) if full_matrices else (m, k))
    assert tuple(S.shape) == shape[:-2] + (k,)
    assert tuple(Vh.shape) == shape[:-2] + ((n, n) if full_matrices else (k, n))


def test_vector_norm_of_order_zero_has_no_gradient(T):
    """ord=0 counts the non-zero entries: PyTorch's backward gives no gradient at all (x.grad stays None), not
    zeros; beside another path x's gradient is that path's."""
    for norm in (lambda x: T.linalg.vector_norm(x, 0), lambda x: T.norm(x, p=0), lambda x: T.linalg.norm(x, 0)):
        x = T.tensor([1.0, 0.0, 2.0], requires_grad=True)
        y = norm(x)
        assert y.item() == 2.0 and y.requires_grad
        y.backward()
        assert x.grad is None
        (g,) = T.autograd.grad(norm(x) + x.sum(), x)
        assert g.tolist() == [1.0, 1.0, 1.0]
    # cdist's and pdist's kernels give zeros for p = 0 (a gradient, not none)
    x = T.tensor([[1.0, 0.0, 2.0], [3.0, 4.0, 0.0]], requires_grad=True)
    (T.cdist(x, x.flip(0) * 2, p=0).sum() + T.pdist(x, p=0).sum()).backward()
    assert x.grad is not None and x.grad.tolist() == [[0.0] * 3] * 2


@pytest.mark.parametrize("call, op", [
    (lambda T, A: T.linalg.eigh(A), "linalg.eigh"),
    (lambda T, A: T.linalg.eigvalsh(A), "linalg.eigh"),
    (lambda T, A: T.linalg.pinv(A, hermitian=True), "linalg.eigh"),
    (lambda T, A: T.linalg.svd(A), "linalg.svd"),
    (lambda T, A: T.linalg.svdvals(A), "linalg.svd"),
    (lambda T, A: T.linalg.pinv(A), "linalg.svd"),
    (lambda T, A: T.linalg.matrix_rank(A), "linalg.svd"),
    (lambda T, A: T.linalg.matrix_norm(A, ord=2), "linalg.svd"),
    (lambda T, A: T.linalg.cond(A), "linalg.svd"),
])
def test_decompositions_that_do_not_converge_raise_linalg_error(T, call, op):
    """A NaN or inf stops the iteration: PyTorch's LinAlgError (a RuntimeError), naming the batch element, so
    that ``except torch.linalg.LinAlgError`` catches it (chainrule raised a ShapeError, or NumPy's ValueError)."""
    A = T.stack([T.eye(3, dtype=T.float64), T.full((3, 3), float("nan"), dtype=T.float64)])
    cause = "contained non-finite values" if op == "linalg.svd" else "is ill-conditioned or has too many repeated"
    with pytest.raises(T.linalg.LinAlgError, match=rf"{op}: \(Batch element 1\): The algorithm failed to converge "
                                                   rf"because the input matrix {cause}"):
        call(T, A)


def test_eig_refuses_non_finite_input(T):
    """linalg.eig, and eigvals where it is differentiated (through eig), refuse an inf or NaN with PyTorch's
    RuntimeError (NumPy's refusal is a ValueError); eigvals without a graph gives NaN, LAPACK's answer."""
    A = T.tensor([[1.0, float("inf")], [0.0, 1.0]])
    for call in (T.linalg.eig, lambda A: T.linalg.eigvals(A.requires_grad_())):
        with pytest.raises(RuntimeError, match="torch.linalg.eig: input tensor should not contain infs or NaNs."):
            call(A.detach())
    values = T.linalg.eigvals(A)
    assert values.dtype == T.complex64 and tuple(values.shape) == (2,) and values.isnan().all()


def test_lstsq_gels_refuses_a_rank_deficient_matrix(T):
    """gels assumes full rank: an exact zero on its QR's (LQ's, wide) diagonal is LAPACK's error, with the zero's
    1-based index; an all-zero matrix gets the zero solution (LAPACK's early return); gelsy takes any rank."""
    tall = np.outer([1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 1.0])  # the second column is zero
    b = T.ones(4, 1, dtype=T.float64)
    with pytest.raises(T.linalg.LinAlgError, match=r"torch.linalg.lstsq: The least squares solution could not be "
                                                   r"computed because the input matrix does not have full rank "
                                                   r"\(error code: 2\)"):
        T.linalg.lstsq(T.tensor(tall), b, driver="gels")
    wide = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]  # (a zero row: L's second pivot is 0)
    with pytest.raises(T.linalg.LinAlgError, match=r"\(Batch element 1\): .* \(error code: 2\)"):
        T.linalg.lstsq(T.tensor(np.stack([np.eye(3, 4), wide])),
                       T.ones(2, 3, 1, dtype=T.float64), driver="gels")
    assert not T.linalg.lstsq(T.zeros(4, 3, dtype=T.float64), b, driver="gels").solution.any()
    if T.__name__ == "autograd":  # (PyTorch's MKL gelsy decides this rank differently from run to run within one
        # process: in a full-suite run it once returned zeros here; chainrule's is the pseudo-inverse's, always)
        np.testing.assert_allclose(T.linalg.lstsq(T.tensor(tall), b, driver="gelsy").solution.numpy(),
                                   np.linalg.pinv(tall) @ np.ones((4, 1)), atol=1e-12)


@pytest.mark.parametrize("a_shape, b_shape, message", [
    ((3, 3), (3,), "3x3 and 3x1"),        # a vector is the column B: no X A is one
    ((2, 3, 3), (2, 3), "3x3 and 3x1"),   # a batch of vectors (it came out silently as a (2, 2, 3) batch)
    ((3, 3), (2, 4), "3x3 and 2x4"),      # the columns do not match A's rows
    ((3, 3), (4, 3, 2), "3x3 and 3x2"),
])
def test_solve_on_the_right_refuses_vectors_and_mismatched_shapes(T, a_shape, b_shape, message):
    A = T.ones(*a_shape, dtype=T.float64) + T.eye(3, dtype=T.float64)
    for solve in (T.linalg.solve, lambda A, B, left: T.linalg.solve_ex(A, B, left=left).result):
        with pytest.raises(RuntimeError, match=rf"linalg.solve: Incompatible shapes of A and B for the equation "
                                               rf"XA = B \({message}\)"):
            solve(A, T.ones(*b_shape, dtype=T.float64), left=False)
    X = T.linalg.solve(A, T.ones(*a_shape[:-2], 4, 3, dtype=T.float64), left=False)  # (a matrix B: X A = B)
    np.testing.assert_allclose((X @ A).numpy(), np.ones(a_shape[:-2] + (4, 3)), atol=1e-12)


# ----------------------------------------------------------------------------------------------
# More programs: a Kalman filter's likelihood, Newton's method with linalg.solve, a quantum evolution
# (complex matrix_exp and eigh), and torch.func over a GP's likelihood
# ----------------------------------------------------------------------------------------------


def kalman_filter(m, dtype_name):
    """A constant-velocity Kalman filter: predict, update by the Cholesky of the innovation covariance
    (cholesky_solve for the gain, 2 Σ log diag L for the likelihood), Joseph-form covariance; the marginal log
    likelihood differentiated with respect to the log noise levels and optimised; an RTS smoother by solve."""
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(15)
    dt = 0.1
    F = torch.tensor([[1, 0, dt, 0], [0, 1, 0, dt], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=dtype)
    H = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]], dtype=dtype)
    truth = np.cumsum(rng.standard_normal((30, 2)) * 0.05 + np.array([0.1, -0.05]), 0)
    ys = torch.tensor(truth + 0.2 * rng.standard_normal((30, 2)), dtype=dtype)
    log_q = torch.tensor(-2.0, dtype=dtype, requires_grad=True)
    log_r = torch.tensor(0.0, dtype=dtype, requires_grad=True)

    def filter(log_q, log_r):
        Q = log_q.exp() * torch.eye(4, dtype=dtype)
        Rn = log_r.exp() * torch.eye(2, dtype=dtype)
        x = torch.zeros(4, dtype=dtype)
        P = torch.eye(4, dtype=dtype)
        ll = 0
        means, covs, preds = [], [], []
        for y in ys:
            x, P = F @ x, F @ P @ F.T + Q
            preds.append((x, P))
            Sinn = H @ P @ H.T + Rn
            L = torch.linalg.cholesky(Sinn)
            v = y - H @ x
            K = torch.cholesky_solve(H @ P, L).T  # P Hᵀ S⁻¹
            ll = ll - 0.5 * (v @ torch.cholesky_solve(v.unsqueeze(-1), L).squeeze(-1)) \
                - torch.log(torch.diagonal(L)).sum() - math.log(2 * math.pi)
            x = x + K @ v
            IKH = torch.eye(4, dtype=dtype) - K @ H
            P = IKH @ P @ IKH.T + K @ Rn @ K.T
            means.append(x)
            covs.append(P)
        return ll, means, covs, preds

    opt = torch.optim.Adam([log_q, log_r], lr=0.1)
    history = []
    for step in range(5):
        opt.zero_grad()
        ll, *_ = filter(log_q, log_r)
        (-ll).backward()
        opt.step()
        history.append((ll.item(), log_q.grad.item(), log_r.grad.item()))
    with torch.no_grad():
        ll, means, covs, preds = filter(log_q, log_r)
        xs, Ps = means[-1], covs[-1]
        smoothed = [xs]
        for t in range(len(means) - 2, -1, -1):
            x_pred, P_pred = preds[t + 1]
            G = torch.linalg.solve(P_pred, F @ covs[t]).T  # P_t Fᵀ P_pred⁻¹
            xs = means[t] + G @ (xs - x_pred)
            smoothed.append(xs)
        smoothed = torch.stack(smoothed[::-1])
    return history, torch.stack(means), smoothed, torch.linalg.slogdet(covs[-1])


@pytest.mark.parametrize("dtype_name, rtol, atol", [("float64", 1e-8, 1e-9), ("float32", 1e-3, 1e-4)])
def test_kalman_filter_likelihood_and_smoother(dtype_name, rtol, atol):
    ours, _ = run_both(kalman_filter, dtype_name, rtol=rtol, atol=atol)
    history, means, smoothed, slogdet = ours
    assert history[-1][0] > history[0][0]
    assert slogdet[0] == 1


def newton_and_implicit_layer(m):
    """Newton's method for a nonlinear system (the Jacobian by torch.func.jacrev, the step by linalg.solve),
    then an implicit layer's gradient by the implicit function theorem (a solve with the transposed Jacobian)
    against unrolled differentiation."""
    torch = m.torch
    rng = np.random.default_rng(16)
    W = torch.tensor(rng.standard_normal((5, 5)) * 0.3, requires_grad=True)
    b = torch.tensor(rng.standard_normal(5), requires_grad=True)

    def g(z, W, b):
        return z - torch.tanh(W @ z + b)

    z = torch.zeros(5, dtype=torch.float64)
    with torch.no_grad():
        for it in range(8):
            J = torch.func.jacrev(g)(z, W, b)
            z = z - torch.linalg.solve(J, g(z, W, b))
    residual = torch.linalg.vector_norm(g(z, W, b))
    # implicit gradient of L(z*) = Σ z*: dL/dθ = -(∂g/∂θ)ᵀ (∂g/∂z)⁻ᵀ 1
    J = torch.func.jacrev(g)(z, W.detach(), b.detach())
    u = torch.linalg.solve(J.T, torch.ones(5, dtype=torch.float64))
    _, vjp = torch.func.vjp(lambda W, b: g(z, W, b), W, b)
    gW_implicit, gb_implicit = (-x for x in vjp(u))
    # unrolled fixed-point iteration, differentiated through
    zz = torch.zeros(5, dtype=torch.float64)
    for it in range(60):
        zz = torch.tanh(W @ zz + b)
    gW_unrolled, gb_unrolled = torch.autograd.grad(zz.sum(), (W, b))
    return z, residual, gW_implicit, gb_implicit, gW_unrolled, gb_unrolled


def test_newton_and_implicit_layer_gradients():
    ours, _ = run_both(newton_and_implicit_layer, rtol=1e-8, atol=1e-10)
    z, residual, gW_i, gb_i, gW_u, gb_u = ours
    assert residual < 1e-12
    np.testing.assert_allclose(gW_i, gW_u, atol=1e-8)
    np.testing.assert_allclose(gb_i, gb_u, atol=1e-8)


def quantum_evolution(m):
    """A two-qubit Hamiltonian H(θ) (complex Hermitian), evolved by U = exp(-iHt) (complex matrix_exp) and by its
    eigendecomposition (complex eigh), an expectation value's gradient with respect to θ; a fidelity through
    svdvals and a state's purity; the unitary's determinant's phase by slogdet."""
    torch = m.torch
    X = torch.tensor([[0, 1], [1, 0]], dtype=torch.complex128)
    Y = torch.tensor([[0, -1j], [1j, 0]], dtype=torch.complex128)
    Z = torch.tensor([[1, 0], [0, -1]], dtype=torch.complex128)
    I2 = torch.eye(2, dtype=torch.complex128)
    theta = torch.tensor([0.7, -0.3, 0.5, 0.2], dtype=torch.float64, requires_grad=True)
    H = (theta[0] * torch.kron(Z, Z) + theta[1] * torch.kron(X, I2) + theta[2] * torch.kron(I2, Y)
         + theta[3] * torch.kron(X, X))
    t = 0.8
    U = torch.linalg.matrix_exp(-1j * t * H)
    evals, evecs = torch.linalg.eigh(H)
    U2 = evecs @ torch.diag_embed(torch.exp(-1j * t * evals)) @ evecs.mH
    psi0 = torch.zeros(4, dtype=torch.complex128)
    psi0[0] = 1
    psi = U @ psi0
    obs = torch.kron(Z, I2)
    expectation = (psi.conj() @ obs @ psi).real
    (g,) = torch.autograd.grad(expectation, theta, retain_graph=True)
    rho = torch.outer(psi, psi.conj())
    purity = torch.trace(rho @ rho).real
    fidelity = torch.linalg.svdvals(U @ U2.mH).sum() / 4
    sign, logabsdet = torch.linalg.slogdet(U)
    (g_evals,) = torch.autograd.grad(evals.sum() + evals[-1] * 2, theta)
    return U, U2, expectation, g, purity, fidelity, sign, logabsdet, g_evals, U.dtype == torch.complex128


def test_quantum_evolution_by_complex_matrix_exp_and_eigh():
    ours, _ = run_both(quantum_evolution, rtol=1e-9, atol=1e-10)
    U, U2, expectation, g, purity, fidelity, sign, logabsdet, g_evals, complex_ = ours
    np.testing.assert_allclose(U, U2, atol=1e-10)
    np.testing.assert_allclose(U @ U.conj().T, np.eye(4), atol=1e-10)
    np.testing.assert_allclose([purity, fidelity, abs(sign)], [1, 1, 1], atol=1e-10)
    np.testing.assert_allclose(logabsdet, 0, atol=1e-10)
    assert complex_


def functorch_gp(m):
    """torch.func over a GP's negative log marginal likelihood: per-dataset gradients by vmap(grad), the Hessian
    for a Laplace approximation by hessian (jacfwd over jacrev), a Jacobian of the posterior mean by jacrev,
    and jvp through cholesky_solve."""
    torch = m.torch
    func = torch.func
    rng = np.random.default_rng(17)
    Xs = torch.tensor(np.sort(rng.uniform(-2, 2, (3, 10, 1)), 1))
    ys = torch.sin(2 * Xs[..., 0]) + 0.1 * torch.tensor(rng.standard_normal((3, 10)))

    def nll(params, X, y):
        log_ell, log_sf, log_sn = params[0], params[1], params[2]
        d2 = (X - X.T) ** 2
        K = log_sf.exp() * torch.exp(-0.5 * d2 / log_ell.exp() ** 2) + log_sn.exp() * torch.eye(X.shape[0],
                                                                                               dtype=X.dtype)
        L = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y.unsqueeze(-1), L).squeeze(-1)
        return 0.5 * y @ alpha + torch.log(torch.diagonal(L)).sum()

    params = torch.tensor([0.0, 0.0, -2.0], dtype=torch.float64)
    per_dataset = func.vmap(func.grad(nll), in_dims=(None, 0, 0))(params, Xs, ys)
    H = func.hessian(nll)(params, Xs[0], ys[0])
    H_rev = func.jacrev(func.jacrev(nll))(params, Xs[0], ys[0])

    def posterior_mean(y, X, Xstar):
        d2 = (X - X.T) ** 2
        K = torch.exp(-0.5 * d2) + 0.1 * torch.eye(X.shape[0], dtype=X.dtype)
        Ks = torch.exp(-0.5 * (Xstar - X.T) ** 2)
        return Ks @ torch.linalg.solve(K, y)

    Xstar = torch.linspace(-2, 2, 4, dtype=torch.float64).unsqueeze(-1)
    J = func.jacrev(posterior_mean)(ys[0], Xs[0], Xstar)
    L0 = torch.linalg.cholesky(torch.exp(-0.5 * (Xs[0] - Xs[0].T) ** 2) + 0.1 * torch.eye(10, dtype=torch.float64))
    _, tangent = func.jvp(lambda b: torch.cholesky_solve(b, L0), (ys[0].unsqueeze(-1),), (ys[1].unsqueeze(-1),))
    return per_dataset, H, H_rev, J, J @ ys[0], posterior_mean(ys[0], Xs[0], Xstar), tangent


def test_torch_func_over_a_gp_likelihood():
    ours, _ = run_both(functorch_gp, rtol=1e-8, atol=1e-9)
    per_dataset, H, H_rev, J, J_y, mean, tangent = ours
    np.testing.assert_allclose(H, H_rev, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(H, H.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(J_y, mean, rtol=1e-10)  # the mean is linear in y


def test_vmap_of_jacfwd_through_det_and_slogdet():
    """vmap over jacfwd of det and slogdet: the Jacobian of each matrix of the batch, as a loop gives it (and the
    cofactors d · A⁻ᵀ in closed form). PyTorch 2.13's own answer is wrong past the first matrix of the batch
    (vmap of its det's forward-mode rule), so the reference here is the loop and NumPy."""
    import autograd as T

    rng = np.random.default_rng(18)
    A = rng.standard_normal((4, 3, 3))
    S = T.tensor(A @ np.swapaxes(A, -1, -2) + 3 * np.eye(3))
    batched = T.func.vmap(T.func.jacfwd(T.linalg.det))(S)
    looped = T.stack([T.func.jacfwd(T.linalg.det)(s) for s in S])
    expected = np.linalg.det(S.numpy())[:, None, None] * np.linalg.inv(np.swapaxes(S.numpy(), -1, -2))
    np.testing.assert_allclose(batched.numpy(), looped.numpy(), rtol=1e-12)
    np.testing.assert_allclose(batched.numpy(), expected, rtol=1e-10)
    logdet = T.func.vmap(T.func.jacfwd(lambda x: T.linalg.slogdet(x)[1]))(S)
    np.testing.assert_allclose(logdet.numpy(), np.linalg.inv(np.swapaxes(S.numpy(), -1, -2)), rtol=1e-10)
    hessian = T.func.vmap(T.func.hessian(T.logdet))(S)
    looped = T.stack([T.func.hessian(T.logdet)(s) for s in S])
    np.testing.assert_allclose(hessian.numpy(), looped.numpy(), rtol=1e-10, atol=1e-12)


def test_geqrf_of_a_tensor_that_requires_grad_runs_and_refuses_only_its_backward(T):
    """PyTorch computes geqrf of a parameter (a graph node, GeqrfBackward0) and raises only when a backward pass
    reaches it; chainrule refused the call itself, so a program using the factors' values (an orthogonal
    initialisation, a log) stopped."""
    W = T.tensor(np.random.default_rng(3).standard_normal((5, 3)), requires_grad=True)
    a, tau = T.geqrf(W)
    assert a.requires_grad and tau.requires_grad and type(a.grad_fn).__name__ != "NoneType"
    Q = T.linalg.householder_product(a, tau)
    np.testing.assert_allclose((Q.mT @ Q).detach().numpy(), np.eye(3), atol=1e-12)
    with pytest.raises(NotImplementedError, match="the derivative for 'geqrf' is not implemented."):
        Q.sum().backward()
    with T.no_grad():
        assert not T.geqrf(W)[0].requires_grad


def _expm_by_eigh(A):
    """e^A of symmetric matrices by their eigendecomposition, in double: the reference."""
    w, V = np.linalg.eigh(A)
    return V @ (np.exp(w)[..., :, None] * np.swapaxes(V, -1, -2))


def test_matrix_exp_in_single_precision_is_accurate_to_its_rounding(T):
    """float32 e^A within a few ulps of the exact one, as PyTorch's (chainrule summed and squared in float32: each
    squaring doubled the rounding error, 1e-5 relative at a norm of 20)."""
    rng = np.random.default_rng(19)
    x = rng.standard_normal((4, 6, 6))
    A = (x + np.swapaxes(x, -1, -2)) * np.array([0.1, 1.0, 3.0, 5.0])[:, None, None]
    A32 = A.astype(np.float32)
    expected = _expm_by_eigh(A32.astype(np.float64))
    got = T.linalg.matrix_exp(T.tensor(A32)).numpy()
    assert got.dtype == np.float32
    error = np.abs(got - expected).max((-2, -1)) / np.abs(expected).max((-2, -1))
    assert (error < 1e-6).all(), error


def test_matrix_exp_scales_each_matrix_of_a_batch_for_itself(T):
    """A small matrix beside a big one keeps double precision's accuracy (chainrule squared every matrix as often
    as the batch's largest needed: 4e-14 relative error for the small one)."""
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 5, 5))
    A = (x + np.swapaxes(x, -1, -2)) * np.array([1e-3, 20.0])[:, None, None]
    got = T.linalg.matrix_exp(T.tensor(A)).numpy()
    error = np.abs(got - _expm_by_eigh(A)).max((-2, -1)) / np.abs(_expm_by_eigh(A)).max((-2, -1))
    assert error[0] < 4e-15 and error[1] < 1e-13, error  # (the eigh reference is itself a unit or so off)


@pytest.mark.parametrize("uplo", ["u", "l"])
def test_eigh_takes_uplo_in_either_case(T, uplo):
    """PyTorch reads UPLO's letter in either case (chainrule refused 'u' and 'l')."""
    A = T.tensor([[2.0, 10.0], [1.0, 2.0]], dtype=T.float64)  # the triangles disagree: which one is read shows
    off = 10.0 if uplo == "u" else 1.0
    np.testing.assert_allclose(T.linalg.eigvalsh(A, UPLO=uplo).numpy(), [2 - off, 2 + off])
    np.testing.assert_allclose(T.linalg.eigh(A, uplo).eigenvalues.numpy(), [2 - off, 2 + off])
    with pytest.raises(RuntimeError, match="Expected UPLO argument to be 'L' or 'U', but got Lower"):
        T.linalg.eigh(A, UPLO="Lower")


# ----------------------------------------------------------------------------------------------
# Second-order optimisers built on linalg: Shampoo (inverse fourth roots by eigh), K-FAC (damped Kronecker
# factors by cholesky_inverse), conjugate gradients against solve
# ----------------------------------------------------------------------------------------------


def shampoo_and_kfac(m, dtype_name):
    torch, nn, F = m.torch, m.nn, m.F
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(21)
    x = torch.tensor(rng.standard_normal((32, 6)), dtype=dtype)
    y = torch.tensor(rng.integers(0, 3, 32))

    def matrix_power_eigh(M, p, eps=1e-6):
        lam, Q = torch.linalg.eigh(M)
        return Q @ torch.diag(lam.clamp_min(eps) ** p) @ Q.T

    def make():
        net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.tensor(np.random.default_rng(p.numel()).standard_normal(p.shape) * 0.5, dtype=dtype))
        return net

    # Shampoo: L ← L + G Gᵀ, R ← R + Gᵀ G, W ← W − lr L^(-1/4) G R^(-1/4)
    net = make()
    stats = {id(p): (1e-4 * torch.eye(p.shape[0], dtype=dtype), 1e-4 * torch.eye(p.shape[1], dtype=dtype))
             for p in net.parameters() if p.ndim == 2}
    shampoo_losses = []
    for step in range(5):
        net.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        shampoo_losses.append(loss.item())
        with torch.no_grad():
            for p in net.parameters():
                if p.ndim == 2:
                    L, Rm = stats[id(p)]
                    L += p.grad @ p.grad.T
                    Rm += p.grad.T @ p.grad
                    p -= 0.3 * matrix_power_eigh(L, -0.25) @ p.grad @ matrix_power_eigh(Rm, -0.25)
                else:
                    p -= 0.3 * p.grad
    # K-FAC for the first layer: A = E[a aᵀ], G = E[g gᵀ], update G⁻¹ ∇W A⁻¹ with damping, by cholesky_inverse
    net2 = make()
    acts, grads_out = {}, {}
    net2[0].register_forward_hook(lambda mod, inp, out: acts.__setitem__("a", inp[0].detach()))
    net2[0].register_full_backward_hook(lambda mod, gin, gout: grads_out.__setitem__("g", gout[0].detach()))
    kfac_losses = []
    for step in range(5):
        net2.zero_grad()
        loss = F.cross_entropy(net2(x), y)
        loss.backward()
        kfac_losses.append(loss.item())
        a, g = acts["a"], grads_out["g"] * x.shape[0]
        A = a.T @ a / a.shape[0] + 0.1 * torch.eye(6, dtype=dtype)
        G = g.T @ g / g.shape[0] + 0.1 * torch.eye(5, dtype=dtype)
        A_inv = torch.cholesky_inverse(torch.linalg.cholesky(A))
        G_inv = torch.cholesky_inverse(torch.linalg.cholesky(G))
        with torch.no_grad():
            net2[0].weight -= 0.2 * G_inv @ net2[0].weight.grad @ A_inv
            for p in list(net2.parameters())[1:]:
                p -= 0.2 * p.grad
    # conjugate gradients on a damped Gauss–Newton system against solve
    M = A @ A + torch.eye(6, dtype=dtype)
    rhs = x[0]
    z, r = torch.zeros(6, dtype=dtype), rhs.clone()
    d = r.clone()
    for it in range(6):
        Md = M @ d
        alpha = (r @ r) / (d @ Md)
        z = z + alpha * d
        r_new = r - alpha * Md
        d = r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
    return (shampoo_losses, [p.detach() for p in net.parameters()], kfac_losses,
            [p.detach() for p in net2.parameters()], z, torch.linalg.solve(M, rhs), A_inv @ A)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # (the input x needs no grad: both libraries warn)
@pytest.mark.parametrize("dtype_name, rtol, atol", [("float64", 1e-8, 1e-10), ("float32", 2e-4, 2e-5)])
def test_shampoo_kfac_and_conjugate_gradients(dtype_name, rtol, atol):
    ours, _ = run_both(shampoo_and_kfac, dtype_name, rtol=rtol, atol=atol)
    shampoo_losses, shampoo_params, kfac_losses, kfac_params, z_cg, z_solve, identity = ours
    assert shampoo_losses[-1] < shampoo_losses[0] and kfac_losses[-1] < kfac_losses[0]
    np.testing.assert_allclose(z_cg, z_solve, rtol=rtol * 100, atol=atol * 100)
    np.testing.assert_allclose(identity, np.eye(6), atol=atol * 10)


@pytest.mark.parametrize("call, message", [
    (lambda T, A, o: T.linalg.vector_norm(A, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.norm(A, dim=1, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.svdvals(A, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.matrix_norm(A, "nuc", out=o),
     "linalg.matrix_norm expected out tensor dtype Double but got: Float"),
    (lambda T, A, o: T.linalg.norm(A, out=o), "linalg.norm expected out tensor dtype Double but got: Float"),
    (lambda T, A, o: T.linalg.norm(A.to(T.complex128), 2, out=o),
     "linalg.norm expected out tensor dtype Double but got: Float"),
    (lambda T, A, o: T.linalg.solve(A, A[0], out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.solve_ex(A, A, out=(o, T.empty(0, dtype=T.int32))),
     "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.cross(A, A, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.cross(A, A, dim=0, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.ldl_solve(*T.linalg.ldl_factor(A), A, out=o),
     "Expected out tensor to have dtype double, but got float instead"),
])
def test_linalg_out_of_another_dtype_is_refused(T, call, message):
    """PyTorch's norms, solves and cross products write into an out= of their result's dtype only (chainrule cast
    the double result into a float32 out, silently losing its precision)."""
    A = T.eye(3, dtype=T.float64) * 2
    with pytest.raises(RuntimeError, match=message):
        call(T, A, T.empty(0, dtype=T.float32))
    result = call(T, A, T.empty(0, dtype=T.float64))  # (the result's own dtype is written into)
    assert (result[0] if isinstance(result, tuple) else result).dtype == T.float64


@pytest.mark.parametrize("tensors, out_dtype, message", [
    (lambda T, a: [a, a.float()], None, "all tensors must have be the same dtype but tensor 0 is double and tensor 1 "
                                        "float"),
    (lambda T, a: [a, T.ones(4, 3, dtype=a.dtype)], None, r"tensors 0 and 1 with shapes \[3, 3\] and \[4, 3\] cannot "
                                                          "be multiplied"),
    (lambda T, a: [T.ones(3, dtype=a.dtype), a, T.ones(4, dtype=a.dtype)], None,
     r"tensors 1 and 2 with shapes \[3, 3\] and \[4\] cannot be multiplied"),
    (lambda T, a: [a, a], "float32", "expected out tensor to have dtype double but got float"),
])
def test_multi_dot_errors_are_pytorchs(T, tensors, out_dtype, message):
    a = T.eye(3, dtype=T.float64)
    out = None if out_dtype is None else T.empty(0, dtype=getattr(T, out_dtype))
    with pytest.raises(RuntimeError, match=f"multi_dot\\(\\): {message}"):
        T.linalg.multi_dot(tensors(T, a), out=out)


def test_cholesky_solve_of_a_singular_factor_gives_inf_not_an_error(T):
    """potrs divides by the factor's diagonal without checking it: a zero there gives inf / NaN in the solution, as
    PyTorch's (chainrule raised linalg.solve's LinAlgError); cholesky_inverse's potri refuses it, naming the
    diagonal element (PyTorch's words, not linalg.inv's)."""
    L = T.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 3.0]], dtype=T.float64)
    X = T.cholesky_solve(T.ones(3, 1, dtype=T.float64), L)
    assert not X.isfinite().all() and X.isinf().any()
    with pytest.raises(T.linalg.LinAlgError, match=r"cholesky_inverse: \(Batch element 1\): The diagonal element 2 "
                                                   r"is zero, the inversion could not be completed because the "
                                                   r"input matrix is singular."):
        T.cholesky_inverse(T.stack([T.eye(3, dtype=T.float64), L]))


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_inverse_gradient_is_pytorchs_for_any_factor(T, upper):
    """cholesky_inverse reads the factor's triangle; its gradient is PyTorch's formula of the factor as given,
    -Y (G + Gᴴ) Y L (chainrule's passed through the triangle as if it were the whole factor)."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 3))
    L = np.linalg.cholesky(x @ x.T + 3 * np.eye(3)) + np.triu(rng.standard_normal((3, 3)), 1)  # junk across
    F = L.T.copy() if upper else L
    factor = T.tensor(F, requires_grad=True)
    Y = T.cholesky_inverse(factor, upper=upper)
    lower = np.tril(L)
    expected = np.linalg.inv(lower @ lower.T)
    np.testing.assert_allclose(Y.detach().numpy(), expected, rtol=1e-12)
    G = np.arange(9.0).reshape(3, 3)
    (gF,) = T.autograd.grad((Y * T.tensor(G)).sum(), factor)
    common = expected @ (G + G.T) @ expected
    np.testing.assert_allclose(gF.numpy(), -(F @ common) if upper else -(common @ F), rtol=1e-10)


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_gradient_is_pytorchs_for_any_factor(T, upper):
    """The gradient with respect to the factor is PyTorch's formula of the factor as given, -(C + Cᴴ) L, whatever
    lies across its triangle (which the value does not read); and it differentiates again."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal((3, 3))
    L = np.linalg.cholesky(x @ x.T + 3 * np.eye(3)) + np.triu(rng.standard_normal((3, 3)), 1)  # junk across
    F = L.T.copy() if upper else L
    factor = T.tensor(F, requires_grad=True)
    b = T.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    X = T.cholesky_solve(b, factor, upper=upper)
    lower = np.tril(L)
    np.testing.assert_allclose(X.detach().numpy(), np.linalg.solve(lower @ lower.T, b.detach().numpy()), rtol=1e-12)
    gF, gb = T.autograd.grad(X.sum(), (factor, b), create_graph=True)
    expected_gb = np.linalg.solve(lower @ lower.T, np.ones((3, 2)))
    common = expected_gb @ X.detach().numpy().T
    common = common + common.T
    np.testing.assert_allclose(gb.detach().numpy(), expected_gb, rtol=1e-12)
    np.testing.assert_allclose(gF.detach().numpy(), -(F @ common) if upper else -(common @ F), rtol=1e-10)
    (h,) = T.autograd.grad(gF.sum(), b)
    assert np.isfinite(h.numpy()).all()
