# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Numerical linear algebra as real programs use it (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same data, comparing values, gradients, dtypes and errors; all in float64 and, where programs run
so, float32. Statistical models: Gaussian-process regression (an RBF kernel's hyperparameters learnt by Adam through
``linalg.cholesky``, ``cholesky_solve`` and the log-determinant as 2 Σ log diag L; predictions by
``solve_triangular``; GPyTorch's ``psd_safe_cholesky``, jitter added while ``cholesky_ex``'s info is non-zero); least
squares and ridge (``linalg.lstsq`` with every driver, ``solve``, ``pinv``, the normal equations, QR, a
hyperparameter's gradient through the solve, polynomial fits by ``linalg.vander``/``torch.vander``); a Kalman
filter's likelihood and RTS smoother; ``torch.func`` (vmap, grad, hessian, jacrev, jvp) over a GP's likelihood."""

import math

import numpy as np
import pytest

from .pytorch_programs import pytorch, run_both

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
