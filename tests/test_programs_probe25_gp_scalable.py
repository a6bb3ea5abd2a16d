# ruff: noqa: B007, E501, E702, F841  (the programs are kept as their authors write them)
"""Gaussian processes and Bayesian optimisation as GPyTorch/BoTorch-style and hand-written PyTorch programs do them
(see tests/pytorch_programs.py), in float64 mostly, each run on chainrule and on PyTorch from the same seeds,
comparing values, gradients, dtypes and errors, and checked against NumPy by hand or invariants where PyTorch is not
installed. Scalable approximations: whitened and unwhitened SVGPs (tril + diag_embed scale_tril, kl_divergence of
MultivariateNormals, the KL by hand) and the MultivariateNormal's pieces; conjugate gradients and Lanczos quadrature
written with torch ops; a pivoted-Cholesky preconditioner, and writing its saved permutation."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both


def svgp(m, whiten=True):
    torch, nn, F = m.torch, m.nn, m.F
    D = torch.distributions
    torch.manual_seed(5)
    N, M = 40, 6
    X = torch.linspace(-2, 2, N, dtype=torch.float64).unsqueeze(-1)
    y = torch.sin(2 * X).squeeze(-1) + 0.1 * torch.randn(N, dtype=torch.float64)
    class SVGP(nn.Module):
        def __init__(self):
            super().__init__()
            self.Z = nn.Parameter(torch.linspace(-1.5, 1.5, M, dtype=torch.float64).unsqueeze(-1))
            self.q_mu = nn.Parameter(torch.zeros(M, dtype=torch.float64))
            self.q_sqrt_raw = nn.Parameter(torch.eye(M, dtype=torch.float64) * 0.5 + 0.01 * torch.randn(M, M, dtype=torch.float64))
            self.raw_ls = nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
            self.raw_noise = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))
        def K(self, a, b):
            ls = F.softplus(self.raw_ls)
            return torch.exp(-0.5 * torch.cdist(a / ls, b / ls).pow(2))
        def scale_tril(self):
            S = torch.tril(self.q_sqrt_raw, diagonal=-1)
            return S + torch.diag_embed(F.softplus(torch.diagonal(self.q_sqrt_raw, dim1=-2, dim2=-1)))
        def elbo(self, X, y):
            Kzz = self.K(self.Z, self.Z) + 1e-6 * torch.eye(M, dtype=X.dtype)
            Lz = torch.linalg.cholesky(Kzz)
            Kzx = self.K(self.Z, X)
            A = torch.linalg.solve_triangular(Lz, Kzx, upper=False)
            S = self.scale_tril()
            if whiten:
                mean = A.T @ self.q_mu
                SA = S.T @ A
                p = D.MultivariateNormal(torch.zeros(M, dtype=X.dtype), scale_tril=torch.eye(M, dtype=X.dtype))
            else:
                B = torch.linalg.solve_triangular(Lz.T, A, upper=True)
                mean = B.T @ self.q_mu
                SA = S.T @ B
                p = D.MultivariateNormal(torch.zeros(M, dtype=X.dtype), scale_tril=Lz)
            var = 1.0 - A.pow(2).sum(0) + SA.pow(2).sum(0)
            noise = F.softplus(self.raw_noise)
            ell = -0.5 * math.log(2 * math.pi) - 0.5 * noise.log() - 0.5 * ((y - mean) ** 2 + var) / noise
            q = D.MultivariateNormal(self.q_mu, scale_tril=S)
            kl = D.kl_divergence(q, p)
            # kl by hand
            if whiten:
                kl_hand = 0.5 * (S.pow(2).sum() + self.q_mu.pow(2).sum() - M - 2 * S.diagonal().log().sum())
            else:
                kl_hand = kl
            return ell.sum() - kl, kl, kl_hand
    model = SVGP()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    hist = []
    for _ in range(10):
        opt.zero_grad()
        e, kl, klh = model.elbo(X, y)
        (-e).backward()
        opt.step()
        hist.append((e.item(), kl.item(), klh.item()))
    return dict(hist=hist, grads={n: p.grad for n, p in model.named_parameters()})

def mvn_bits(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(6)
    A = torch.randn(4, 4, dtype=torch.float64)
    C = A @ A.T + torch.eye(4, dtype=torch.float64)
    mu = torch.randn(4, dtype=torch.float64, requires_grad=True)
    Cp = C.clone().requires_grad_()
    mvn = D.MultivariateNormal(mu, covariance_matrix=Cp)
    x = torch.randn(3, 4, dtype=torch.float64)
    lp = mvn.log_prob(x)
    g = torch.autograd.grad(lp.sum() + mvn.entropy(), [mu, Cp], retain_graph=True)
    mvn2 = D.MultivariateNormal(torch.zeros(4, dtype=torch.float64), precision_matrix=C)
    kl = D.kl_divergence(mvn, mvn2)
    gk = torch.autograd.grad(kl, [mu, Cp])
    b = D.MultivariateNormal(torch.zeros(2, 3, dtype=torch.float64), scale_tril=torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.manual_seed(1)
    s = b.rsample((2,))
    out = dict(lp=lp, g=g, kl=kl, gk=gk, s=s, st=mvn.scale_tril, prec=mvn2.covariance_matrix, var=mvn.variance,
               bs=tuple(b.batch_shape), es=tuple(b.event_shape), lpb=b.log_prob(s))
    try:
        D.MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64))
    except Exception as e:
        out['err'] = type(e).__name__ + str(e)[:80]
    lr = D.LowRankMultivariateNormal(torch.zeros(4, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    out['lr'] = (lr.log_prob(x), lr.entropy(), lr.covariance_matrix, D.kl_divergence(lr, mvn2))
    ind = D.Independent(D.Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)), 1)
    out['kl_ind'] = D.kl_divergence(mvn, D.MultivariateNormal(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)))
    return out


def cg_lanczos(m):
    torch = m.torch
    torch.manual_seed(9)
    n = 12
    X = torch.randn(n, 2, dtype=torch.float64)
    K = torch.exp(-0.5 * torch.cdist(X, X).pow(2)) + 0.1 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, 3, dtype=torch.float64)
    def cg(A, b, iters=30, tol=1e-10):
        x = torch.zeros_like(b)
        r = b - A @ x
        p = r.clone()
        rs = (r * r).sum(0, keepdim=True)
        for i in range(iters):
            Ap = A @ p
            alpha = rs / (p * Ap).sum(0, keepdim=True)
            x = x + alpha * p
            r = r - alpha * Ap
            rs_new = (r * r).sum(0, keepdim=True)
            if torch.all(rs_new.sqrt() < tol):
                break
            p = r + (rs_new / rs) * p
            rs = rs_new
        return x, i
    x, it = cg(K, b)
    def lanczos(A, v, k):
        n = A.shape[0]
        Qm = torch.zeros(n, k, dtype=A.dtype)
        alphas = torch.zeros(k, dtype=A.dtype); betas = torch.zeros(k - 1, dtype=A.dtype)
        q = v / v.norm()
        Qm[:, 0] = q
        beta = 0.0; q_prev = torch.zeros_like(q)
        for j in range(k):
            w = A @ q - beta * q_prev
            alpha = torch.dot(w, q)
            w = w - alpha * q
            w = w - Qm[:, :j + 1] @ (Qm[:, :j + 1].T @ w)  # full reorth
            alphas[j] = alpha
            if j < k - 1:
                beta = w.norm()
                betas[j] = beta
                q_prev = q; q = w / beta
                Qm[:, j + 1] = q
        T = torch.diag(alphas) + torch.diag(betas, 1) + torch.diag(betas, -1)
        return Qm, T
    torch.manual_seed(10)
    zs = torch.randn(4, n, dtype=torch.float64).sign()
    quads = []
    for z in zs:
        Qm, T = lanczos(K, z, n)  # a full Lanczos run: the quadrature is exact, z^T log(K) z
        ev, evec = torch.linalg.eigh(T)
        quads.append(n * (evec[0] ** 2 * ev.log()).sum())
    quads = torch.stack(quads)
    Qm8, T8 = lanczos(K, zs[0], 8)
    exact = torch.logdet(K)
    # gradient through CG solution (autograd through the loop)
    Kp = K.clone().requires_grad_()
    xg, _ = cg(Kp, b, iters=5)
    g, = torch.autograd.grad(xg.sum(), Kp)
    return dict(x=x, it=it, direct=torch.linalg.solve(K, b), quads=quads, est=quads.mean(), exact=exact, g=g, K=K, zs=zs, Q8=Qm8, T8=T8)


def pivoted_cholesky_precond(m, clone_perm=True):
    torch = m.torch
    torch.manual_seed(21)
    n, k = 15, 5
    X = torch.randn(n, 2, dtype=torch.float64)
    ls = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    K = torch.exp(-0.5 * torch.cdist(X, X).pow(2) / ls ** 2)
    def pivoted_cholesky(K, k):
        n = K.shape[-1]
        d = K.diagonal().clone()
        perm = torch.arange(n)
        L = torch.zeros(k, n, dtype=K.dtype)
        piv_list = []
        for i in range(k):
            pi = int(torch.argmax(d[perm[i:]])) + i
            if clone_perm:  # (the last step's perm[i + 1:] is a view of perm, which the swap writes)
                perm = perm.clone()
            perm[[i, pi]] = perm[[pi, i]]
            p = perm[i]
            piv_list.append(int(p))
            l = K[p, perm[i + 1:]] - (L[:i, p:p + 1] * L[:i, perm[i + 1:]]).sum(0) if i > 0 else K[p, perm[i + 1:]]
            Lp = d[p].sqrt()
            L = L.clone()
            L[i, p] = Lp
            L[i, perm[i + 1:]] = l / Lp
            d = d - torch.zeros_like(d).index_put((perm[i + 1:],), (l / Lp) ** 2)
            d[p] = 0.0
        return L.T, piv_list
    Lk, piv = pivoted_cholesky(K, k)
    approx = Lk @ Lk.T
    err = (K - approx).diagonal().sum()
    # Woodbury solve of (Lk Lk^T + s I) with the preconditioner
    s = 0.1
    b = torch.randn(n, 1, dtype=torch.float64)
    inner = torch.eye(k, dtype=torch.float64) + Lk.T @ Lk / s
    Li = torch.linalg.cholesky(inner)
    pinv_b = b / s - Lk @ torch.cholesky_solve(Lk.T @ b, Li) / s ** 2
    direct = torch.linalg.solve(approx + s * torch.eye(n, dtype=torch.float64), b)
    # logdet of preconditioner via matrix determinant lemma
    ld = 2 * Li.diagonal().log().sum() + n * math.log(s)
    g = torch.autograd.grad(err + ld + pinv_b.sum(), ls)
    return dict(piv=piv, err=err, pinv_b=pinv_b, direct=direct, ld=ld, ld2=torch.logdet(approx + s * torch.eye(n, dtype=torch.float64)), g=g)


@pytest.mark.parametrize("whiten", [True, False])
def test_svgp(whiten):
    ours, _ = run_both(svgp, whiten, rtol=1e-6, atol=1e-8)
    hist = ours["hist"]
    assert hist[-1][0] > hist[0][0] + 20  # the ELBO rises
    assert all(kl >= 0 for _, kl, _ in hist)
    if whiten:  # kl_divergence agrees with the KL by hand
        np.testing.assert_allclose([h[1] for h in hist], [h[2] for h in hist], rtol=1e-10)


def test_multivariate_normal_pieces():
    ours, _ = run_both(mvn_bits, rtol=1e-6, atol=1e-8)
    assert ours["bs"] == (2,) and ours["es"] == (3,)
    assert ours["err"].startswith("ValueError") and float(ours["kl"]) > 0
    np.testing.assert_allclose(ours["kl_ind"], ours["kl_ind"])


def test_conjugate_gradients_and_lanczos():
    ours, _ = run_both(cg_lanczos, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["x"], ours["direct"], rtol=1e-8, atol=1e-10)
    w, V = np.linalg.eigh(ours["K"])
    logK = (V * np.log(w)) @ V.T
    np.testing.assert_allclose(ours["quads"], np.einsum("bi,ij,bj->b", ours["zs"], logK, ours["zs"]), rtol=1e-8)
    np.testing.assert_allclose(ours["exact"], np.log(w).sum(), rtol=1e-12)
    Q8, T8 = ours["Q8"], ours["T8"]
    np.testing.assert_allclose(Q8.T @ Q8, np.eye(8), atol=1e-10)  # fully reorthogonalised
    np.testing.assert_allclose(Q8.T @ ours["K"] @ Q8, T8, atol=1e-10)


def test_pivoted_cholesky_preconditioner():
    ours, _ = run_both(pivoted_cholesky_precond, rtol=1e-6, atol=1e-8)
    assert ours["piv"] == [0, 6, 3, 1, 10]
    np.testing.assert_allclose(ours["ld"], ours["ld2"], rtol=1e-10)  # the matrix determinant lemma
    np.testing.assert_allclose(ours["pinv_b"], ours["direct"], rtol=1e-8, atol=1e-10)  # Woodbury


def test_pivoted_cholesky_writing_its_saved_permutation():
    """perm[i + 1:] indexes K and d and is then written by the next swap: PyTorch refuses the backward, as the
    indexing node saved it (ours read the index's shared array, a silently wrong gradient, before)."""
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        pivoted_cholesky_precond(OURS, clone_perm=False)
    from .pytorch_programs import pytorch
    if pytorch() is not None:
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            pivoted_cholesky_precond(pytorch(), clone_perm=False)
