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
