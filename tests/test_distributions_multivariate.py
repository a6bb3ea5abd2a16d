"""MultivariateNormal (by covariance, precision or Cholesky factor) and LowRankMultivariateNormal:
agreement with each other and with independent Normals, sample covariance, the rsample gradient,
shape and argument errors; values, gradients and KL against torch where installed."""

import math

import numpy as np
import pytest

import autograd
from autograd import distributions as D

R = np.random.default_rng(5)
A = R.standard_normal((2, 3, 3))
COV = A @ A.transpose(0, 2, 1) + np.eye(3)  # a batch of two 3×3 covariances
LOC = R.standard_normal(3)
X = R.standard_normal((4, 2, 3))
W = R.standard_normal((2, 3, 2))
DIAG = R.uniform(0.5, 2.0, 3)


def f64(values, requires_grad=False):
    return autograd.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


def close(a, b, rtol=1e-11, atol=1e-12):
    a = a.detach().numpy() if hasattr(a, "detach") else a
    b = b.detach().numpy() if hasattr(b, "detach") else b
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_three_parametrisations_agree():
    by_cov = D.MultivariateNormal(f64(LOC), covariance_matrix=f64(COV))
    by_precision = D.MultivariateNormal(f64(LOC), precision_matrix=f64(np.linalg.inv(COV)))
    by_tril = D.MultivariateNormal(f64(LOC), scale_tril=f64(np.linalg.cholesky(COV)))
    assert by_cov.batch_shape == (2,) and by_cov.event_shape == (3,)
    for other in (by_precision, by_tril):
        close(other.log_prob(f64(X)), by_cov.log_prob(f64(X)))
        close(other.entropy(), by_cov.entropy())
        close(other.covariance_matrix, COV)
        close(other.precision_matrix, np.linalg.inv(COV))
        close(other.scale_tril, np.linalg.cholesky(COV))
    # the density by hand
    diff = X - LOC
    quad = np.einsum("...i,...ij,...j->...", diff, np.linalg.inv(COV), diff)
    expected = -0.5 * (3 * math.log(2 * math.pi) + np.linalg.slogdet(COV)[1] + quad)
    close(by_cov.log_prob(f64(X)), expected)
    close(by_cov.entropy(), 0.5 * (3 * (1 + math.log(2 * math.pi)) + np.linalg.slogdet(COV)[1]))
    close(by_cov.variance, np.diagonal(COV, axis1=-2, axis2=-1))


def test_diagonal_is_independent_normals_and_low_rank_is_its_covariance():
    scale = np.array([0.5, 1.0, 2.0])
    mvn = D.MultivariateNormal(f64(LOC), covariance_matrix=f64(np.diag(scale**2)))
    ind = D.Independent(D.Normal(f64(LOC), f64(scale)), 1)
    close(mvn.log_prob(f64(X)), ind.log_prob(f64(X)))
    close(mvn.entropy(), ind.entropy())
    low = D.LowRankMultivariateNormal(f64(LOC), f64(W), f64(DIAG))
    full = D.MultivariateNormal(f64(LOC), covariance_matrix=f64(W @ W.transpose(0, 2, 1) + np.diag(DIAG)))
    assert low.batch_shape == (2,) and low.event_shape == (3,)
    close(low.log_prob(f64(X)), full.log_prob(f64(X)))
    close(low.entropy(), full.entropy())
    close(low.covariance_matrix, full.covariance_matrix)
    close(low.precision_matrix, full.precision_matrix)
    close(low.scale_tril, full.scale_tril)
    close(low.variance, full.variance)
    close(D.kl_divergence(low, full), np.zeros(2), atol=1e-12)
    close(D.kl_divergence(full, low), np.zeros(2), atol=1e-12)
    close(D.kl_divergence(low, low), np.zeros(2), atol=1e-12)
    close(D.kl_divergence(full, full), np.zeros(2), atol=1e-12)


def test_sample_covariance_and_rsample_gradient():
    """The sample covariance within 5 standard errors of Σ (Var of x_i x_j is Σ_ii Σ_jj + Σ_ij²);
    x = μ + L ε gives d(Σ x)/dL_ij = Σ ε_j over draws (on the whole matrix: the product L ε reads
    every entry, as PyTorch's does)."""
    autograd.manual_seed(3)
    n = 20000
    L = f64(np.linalg.cholesky(COV[0]), True)
    loc = f64(LOC, True)
    m = D.MultivariateNormal(loc, scale_tril=L)
    x = m.rsample((n,))
    sample = x.detach().numpy()
    centred = sample - LOC
    empirical = centred.T @ centred / n
    error = np.sqrt((np.outer(np.diag(COV[0]), np.diag(COV[0])) + COV[0] ** 2) / n)
    assert (np.abs(empirical - COV[0]) < 5 * error).all()
    x.sum().backward()
    close(loc.grad, np.full(3, float(n)))
    noise = np.linalg.solve(np.linalg.cholesky(COV[0]), centred.T).T  # ε of each draw
    close(L.grad, np.outer(np.ones(3), noise.sum(0)), rtol=1e-9, atol=1e-8)
    low = D.LowRankMultivariateNormal(f64(LOC), f64(W[0]), f64(DIAG))
    drawn = low.sample((n,)).numpy() - LOC
    covariance = W[0] @ W[0].T + np.diag(DIAG)
    error = np.sqrt((np.outer(np.diag(covariance), np.diag(covariance)) + covariance**2) / n)
    assert (np.abs(drawn.T @ drawn / n - covariance) < 5 * error).all()


def test_expand_and_shapes():
    m = D.MultivariateNormal(f64(LOC), covariance_matrix=f64(COV[0])).expand((4, 2))
    assert m.batch_shape == (4, 2) and m.sample((3,)).shape == (3, 4, 2, 3)
    assert m.log_prob(f64(np.zeros(3))).shape == (4, 2) and m.entropy().shape == (4, 2)
    low = D.LowRankMultivariateNormal(f64(LOC), f64(W[0]), f64(DIAG)).expand((5,))
    assert low.rsample().shape == (5, 3) and low.log_prob(f64(np.zeros(3))).shape == (5,)


def test_errors_as_pytorch():
    cases = [
        (lambda: D.MultivariateNormal(f64(LOC)), "Exactly one of covariance_matrix or precision_matrix or scale_tril"),
        (lambda: D.MultivariateNormal(f64(LOC), covariance_matrix=f64(COV), scale_tril=f64(COV)), "Exactly one"),
        (lambda: D.MultivariateNormal(f64(1.0), covariance_matrix=f64(COV)), "loc must be at least one-dimensional."),
        (lambda: D.MultivariateNormal(f64(LOC), scale_tril=f64(DIAG)),
         "scale_tril matrix must be at least two-dimensional, with optional leading batch dimensions"),
        (lambda: D.MultivariateNormal(f64(LOC), covariance_matrix=f64(DIAG)),
         "covariance matrix must be at least two-dimensional"),
        (lambda: D.MultivariateNormal(f64(LOC), covariance_matrix=f64(-np.eye(3))),
         "covariance_matrix .* PositiveDefinite\\(\\)"),
        (lambda: D.MultivariateNormal(f64(LOC), scale_tril=f64(np.ones((3, 3)))), "scale_tril .* LowerCholesky\\(\\)"),
        (lambda: D.LowRankMultivariateNormal(f64(LOC), f64(W[0]), f64(-DIAG)), "cov_diag"),
        (lambda: D.LowRankMultivariateNormal(f64(LOC), f64(DIAG), f64(DIAG)),
         "cov_factor must be at least two-dimensional, with optional leading batch dimensions"),
        (lambda: D.LowRankMultivariateNormal(f64(LOC), f64(np.ones((4, 2))), f64(DIAG)),
         "cov_factor must be a batch of matrices with shape 3 x m"),
        (lambda: D.LowRankMultivariateNormal(f64(LOC), f64(W[0]), f64(np.ones(2))),
         "cov_diag must be a batch of vectors with shape Size\\(\\[3\\]\\)"),
        (lambda: D.MultivariateNormal(f64(LOC), covariance_matrix=f64(COV)).log_prob(f64(np.zeros(2))),
         "The right-most size of value must match event_shape"),
        (lambda: D.kl_divergence(D.MultivariateNormal(f64(LOC), covariance_matrix=f64(COV)),
                                 D.MultivariateNormal(f64(np.zeros(2)), covariance_matrix=f64(np.eye(2)))),
         "different event shapes"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["covariance_matrix", "precision_matrix", "scale_tril"])
def test_matches_torch(kind):
    torch = pytest.importorskip("torch")
    matrix = np.linalg.cholesky(COV) if kind == "scale_tril" else (np.linalg.inv(COV) if kind == "precision_matrix"
                                                                   else COV)

    def run(lib, module):
        loc, mat = lib.tensor(LOC, requires_grad=True), lib.tensor(matrix, requires_grad=True)
        m = module.MultivariateNormal(loc, **{kind: mat})
        values = [m.log_prob(lib.tensor(X)), m.entropy(), m.variance, m.covariance_matrix, m.precision_matrix,
                  m.scale_tril]
        total = sum((v * (i + 1.0)).sum() for i, v in enumerate(values))
        total.backward()
        return [v.detach().numpy() for v in values], loc.grad.numpy(), mat.grad.numpy()

    ours, theirs = run(autograd, D), run(torch, torch.distributions)
    for a, b in zip(ours[0], theirs[0]):
        close(a, b, rtol=1e-10)
    close(ours[1], theirs[1], rtol=1e-9)
    # a gradient on a symmetric parameter is defined up to its antisymmetric part: compare the
    # symmetric parts (PyTorch's own convention varies by op); a Cholesky factor's in full
    if kind == "scale_tril":
        close(ours[2], theirs[2], rtol=1e-9, atol=1e-10)
    else:
        close(ours[2] + ours[2].transpose(0, 2, 1), theirs[2] + theirs[2].transpose(0, 2, 1), rtol=1e-9, atol=1e-10)


@pytest.mark.torch
def test_low_rank_and_kl_match_torch():
    torch = pytest.importorskip("torch")
    B = R.standard_normal((3, 3))
    other_cov = B @ B.T + np.eye(3)
    W2, D2 = R.standard_normal((3, 1)), R.uniform(0.5, 2.0, 3)

    def run(lib, module):
        params = [lib.tensor(v, requires_grad=True) for v in (LOC, W, DIAG, COV, other_cov, W2, D2)]
        loc, w, d, cov, cov2, w2, d2 = params
        low = module.LowRankMultivariateNormal(loc, w, d)
        low2 = module.LowRankMultivariateNormal(loc * 0.5, w2, d2)
        full = module.MultivariateNormal(loc * 2, covariance_matrix=cov)
        full2 = module.MultivariateNormal(loc, covariance_matrix=cov2)
        kl = module.kl_divergence
        values = [low.log_prob(lib.tensor(X)), low.entropy(), low.variance, low.covariance_matrix,
                  low.precision_matrix, low.scale_tril, kl(low, low2), kl(low2, low), kl(full, low), kl(low, full),
                  kl(full, full2), kl(full2, full), kl(full2, low2), kl(low2, full2)]
        total = sum((v * (i + 1.0)).sum() for i, v in enumerate(values))
        total.backward()
        return [v.detach().numpy() for v in values], [p.grad.numpy() for p in params]

    ours, theirs = run(autograd, D), run(torch, torch.distributions)
    for a, b in zip(ours[0], theirs[0]):
        close(a, b, rtol=1e-9, atol=1e-11)
    for i, (a, b) in enumerate(zip(ours[1], theirs[1])):
        if i in (3, 4):  # symmetric covariances: their gradients' symmetric parts
            a, b = a + np.swapaxes(a, -1, -2), b + np.swapaxes(b, -1, -2)
        close(a, b, rtol=1e-8, atol=1e-10)


def test_corr_cholesky_transform_and_lkj():
    x = f64(R.standard_normal((5, 6)))
    t = D.transforms.CorrCholeskyTransform()
    y = t(x)
    assert y.shape == (5, 4, 4) and bool(D.constraints.corr_cholesky.check(y).all())
    close((y @ y.mT).diagonal(dim1=-2, dim2=-1), np.ones((5, 4)))  # a correlation matrix: unit diagonal
    close(t.inv(y), x, rtol=1e-9, atol=1e-10)
    # log |det J| by finite differences of the free (strictly lower) entries
    free = D.transforms.tril_matrix_to_vec
    h = 1e-6
    point = x.numpy()[0]
    jac = np.stack([(free(t(f64(point + h * e)), diag=-1).numpy() - free(t(f64(point - h * e)), diag=-1).numpy())
                    / (2 * h) for e in np.eye(6)], -1)
    assert t.log_abs_det_jacobian(x, y).numpy()[0] == pytest.approx(np.linalg.slogdet(jac)[1], rel=1e-6)
    assert t.forward_shape((5, 6)) == (5, 4, 4) and t.inverse_shape((5, 4, 4)) == (5, 6)
    with pytest.raises(ValueError, match="flattened lower-diagonal"):
        t.forward_shape((5,))
    # LKJ(η = 1) over 2×2 correlations is uniform on ρ ∈ (-1, 1): L = [[1, 0], [ρ, √(1 - ρ²)]],
    # and its density in L's free entry ρ is ½
    lkj = D.LKJCholesky(2, f64(1.0))
    rho = np.array([-0.9, 0.0, 0.6])
    L = np.zeros((3, 2, 2))
    L[:, 0, 0], L[:, 1, 0], L[:, 1, 1] = 1.0, rho, np.sqrt(1 - rho**2)
    close(lkj.log_prob(f64(L)), np.full(3, math.log(0.5)))
    autograd.manual_seed(4)
    draws = D.LKJCholesky(3, f64([0.5, 4.0])).sample((4000,))
    assert draws.shape == (4000, 2, 3, 3) and bool(D.constraints.corr_cholesky.check(draws).all())
    # E[ρ²] = 1/(2η + D - 1) for an off-diagonal correlation of LKJ(η) in D dimensions
    corr = (draws @ draws.mT).numpy()[..., 1, 0]
    expected = 1 / (2 * np.array([0.5, 4.0]) + 2)
    error = (corr**2).std(0) / np.sqrt(4000)
    assert (np.abs((corr**2).mean(0) - expected) < 5 * error).all()
    with pytest.raises(ValueError, match="Expected dim to be an integer greater than or equal to 2. Found dim=1."):
        D.LKJCholesky(1)
    assert D.LKJCholesky(3, f64(2.0)).expand((4,)).sample().shape == (4, 3, 3)
    spd = D.transform_to(D.constraints.positive_definite)(f64(R.standard_normal((2, 3, 3))))
    assert bool(D.constraints.positive_definite.check(spd).all())


@pytest.mark.torch
def test_lkj_and_corr_cholesky_match_torch():
    torch = pytest.importorskip("torch")
    x = R.standard_normal((2, 6))
    ours, theirs = D.transforms.CorrCholeskyTransform(), torch.distributions.transforms.CorrCholeskyTransform()
    y_ours, y_theirs = ours(f64(x)), theirs(torch.tensor(x))
    close(y_ours, y_theirs.numpy())
    close(ours.log_abs_det_jacobian(f64(x), y_ours), theirs.log_abs_det_jacobian(torch.tensor(x), y_theirs).numpy())
    for eta in [0.5, 1.0, 3.0]:
        concentration, t_concentration = f64(eta, requires_grad=True), torch.tensor(eta, requires_grad=True,
                                                                                   dtype=torch.float64)
        lp = D.LKJCholesky(4, concentration).log_prob(f64(y_theirs.numpy()))
        tlp = torch.distributions.LKJCholesky(4, t_concentration).log_prob(y_theirs)
        close(lp, tlp.detach().numpy(), rtol=1e-12, atol=1e-13)
        lp.sum().backward()
        tlp.sum().backward()
        close(concentration.grad, t_concentration.grad.numpy(), rtol=1e-8)


def test_wishart():
    """Values by hand (p = 1 is a scaled χ²), sample mean νΣ within 5 standard errors, and the
    rsample gradient d/dν E[X] = Σ (one law per draw)."""
    chi2 = D.Chi2(f64(4.5))
    one = D.Wishart(f64(4.5), covariance_matrix=f64([[2.0]]))
    x = f64([[[0.7]], [[3.0]]])
    close(one.log_prob(x), chi2.log_prob(x[:, 0, 0] / 2.0) - math.log(2.0))  # X = 2 χ²
    w = D.Wishart(f64(5.0), covariance_matrix=f64(COV[0]))
    assert w.batch_shape == () and w.event_shape == (3, 3)
    autograd.manual_seed(6)
    n = 4000
    draws = w.sample((n,)).numpy()
    assert bool(D.constraints.positive_definite.check(f64(draws)).all())
    error = np.sqrt(w.variance.numpy() / n)
    assert (np.abs(draws.mean(0) - 5.0 * COV[0]) < 5 * error).all()
    df = f64(np.full(n, 5.0), requires_grad=True)
    sample = D.Wishart(df, covariance_matrix=f64(COV[0])).rsample()
    (grad,) = autograd.grad(sample[:, 0, 0].sum(), df)
    mean, spread = grad.numpy().mean(), grad.numpy().std() / math.sqrt(n)
    assert abs(mean - COV[0][0, 0]) < 5 * spread
    with pytest.raises(ValueError, match="Value of df=1.5 expected to be greater than ndim - 1 = 2."):
        D.Wishart(1.5, covariance_matrix=f64(COV[0]))
    with pytest.raises(ValueError, match="Exactly one"):
        D.Wishart(5.0)
    assert D.Wishart(f64(5.0), scale_tril=f64(np.linalg.cholesky(COV[0]))).expand((2,)).rsample().shape == (2, 3, 3)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["covariance_matrix", "precision_matrix", "scale_tril"])
def test_wishart_matches_torch(kind):
    torch = pytest.importorskip("torch")
    matrix = np.linalg.cholesky(COV) if kind == "scale_tril" else (np.linalg.inv(COV) if kind == "precision_matrix"
                                                                   else COV)
    B = R.standard_normal((4, 2, 3, 3))
    value = B @ np.swapaxes(B, -1, -2) + np.eye(3)

    def run(lib, module):
        df, mat = lib.tensor(np.array([3.5, 6.0]), requires_grad=True), lib.tensor(matrix, requires_grad=True)
        m = module.Wishart(df, **{kind: mat})
        values = [m.log_prob(lib.tensor(value)), m.entropy(), m.mean, m.variance]
        sum((v * (i + 1.0)).sum() for i, v in enumerate(values)).backward()
        return [v.detach().numpy() for v in values], df.grad.numpy(), mat.grad.numpy()

    ours, theirs = run(autograd, D), run(torch, torch.distributions)
    for a, b in zip(ours[0], theirs[0]):
        close(a, b, rtol=1e-10)
    close(ours[1], theirs[1], rtol=1e-8)  # (through digamma's derivative: PyTorch's trigamma is good to 5e-10)
    a, b = ours[2], theirs[2]
    if kind != "scale_tril":
        a, b = a + np.swapaxes(a, -1, -2), b + np.swapaxes(b, -1, -2)
    close(a, b, rtol=1e-9, atol=1e-10)
