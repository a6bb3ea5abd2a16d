# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Numerical linear algebra as real programs use it (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same data, comparing values, gradients, dtypes and errors; all in float64 and, where programs run
so, float32. Decompositions and norms: orthogonal Procrustes and the polar decomposition through ``linalg.svd``
(Newton–Schulz and Löwdin's (MᵀM)^(-1/2) by eigh against it); PCA and ZCA whitening by ``linalg.eigh``, a
decorrelated batch-norm layer trained through it; Glow's invertible 1x1 convolution, LU-parametrised (``linalg.lu``,
``lu_factor``/``lu_unpack``, ``lu_solve`` for the reverse, log|s| against ``slogdet``) and plain (``slogdet``,
``inverse``); every vector and matrix norm (``vector_norm``/``matrix_norm``/``linalg.norm``/
``torch.norm``/``Tensor.norm``), ``cond`` of every p, ``matrix_rank`` with tolerances, a spectral-norm penalty; QR by
``geqrf``/``householder_product``/``orgqr``/``ormqr`` with gradients; a linear system's spectral radius penalised
through ``eigvals``."""

import numpy as np
import pytest

from .probe19_linalg_common import INF
from .pytorch_programs import run_both

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
# Norms of every ord, cond, matrix_rank; a spectral-norm penalty; QR by Householder reflectors
# ----------------------------------------------------------------------------------------------


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
