# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Classical machine learning and Bayesian numerics as GPyTorch / Pyro / scikit-learn-in-torch users write them, run
as tests/probe12_classic_common.py says. Clustering and projections: k-means (k-means++ with ``multinomial``,
``cdist``/``argmin``, ``scatter_add_``/``index_add_``/``bincount``) and soft k-means by gradient; PCA by
``linalg.svd`` with sklearn's ``svd_flip`` and by ``eigh``; LDA (the generalised eigenproblem through the Cholesky of
Sw); a Gaussian mixture by EM (batched ``MultivariateNormal.log_prob``, ``logsumexp``, ``einsum`` covariances, then
``MixtureSameFamily`` gradients); spectral clustering (``fill_diagonal_``, ``eigh``, ``lobpcg``, ``F.normalize``)
with a batched multi-output GP; t-SNE (perplexity by bisection, ``F.kl_div``), the lasso by ISTA (``F.softshrink``)
and a kernel density bandwidth by leave-one-out likelihood."""

import math

import numpy as np

from .probe12_classic_common import TOL, blobs, classification_data
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# k-means (Lloyd) with cdist/argmin and centroid updates by scatter_add_ and index_add_, k-means++ seeding
# with torch.multinomial, inertia; and mini-batch soft k-means whose centroids are learnt by gradient
# ----------------------------------------------------------------------------------------------


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
