"""More families' tests ported from PyTorch's test/distributions/test_distributions.py
(TestDistributions: test_gamma_*, test_pareto, test_gumbel, test_chi2_shape, test_studentT*,
test_dirichlet_*, test_beta_*, test_continuous_bernoulli*, test_lowrank_multivariate_normal_*,
test_multivariate_normal_*; TestRsample.test_dirichlet_multivariate): shapes, log_prob against the
closed forms (SciPy's references replaced by the formulas), moments of many draws, edge cases.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math

import numpy as np
import pytest

from tests.ported import close, values
from tests.test_ported_distributions_continuous import draw
from tests.test_ported_distributions_discrete import check_log_prob, f64, gradcheck_log_prob


@pytest.fixture(autouse=True)
def validation_on(T):
    T.distributions.Distribution.set_default_validate_args(True)
    T.manual_seed(0)
    yield


def exp_draw(T, *shape, seed=0):
    return T.tensor(np.exp(np.random.default_rng(seed).standard_normal(shape)), requires_grad=True)


def test_gamma_shape_and_log_prob(T):
    """log p(x) = a ln b + (a - 1) ln x - b x - ln Γ(a)."""
    D = T.distributions
    alpha, beta = exp_draw(T, 2, 3), exp_draw(T, 2, 3, seed=1)
    assert tuple(D.Gamma(alpha, beta).sample().shape) == (2, 3)
    assert tuple(D.Gamma(alpha, beta).sample((5,)).shape) == (5, 2, 3)
    assert tuple(D.Gamma(exp_draw(T, 1), exp_draw(T, 1)).sample((1,)).shape) == (1, 1)
    assert tuple(D.Gamma(0.5, 0.5).sample().shape) == ()
    assert tuple(D.Gamma(0.5, 0.5).sample((1,)).shape) == (1,)
    a, b = values(alpha).reshape(-1), values(beta).reshape(-1)
    check_log_prob(D.Gamma(alpha, beta), lambda i, x: a[i] * math.log(b[i]) + (a[i] - 1) * math.log(x) - b[i] * x
                   - math.lgamma(a[i]))


def test_gamma_sample_moments(T):
    for alpha, beta in [(0.1, 1.0), (1.0, 0.1), (5.0, 10.0)]:
        x = values(T.distributions.Gamma(T.tensor([alpha]), T.tensor([beta])).sample((20000,)))
        assert abs(x.mean() / (alpha / beta) - 1) < 0.05
        assert abs(x.var() / (alpha / beta**2) - 1) < 0.15


def test_gamma_log_prob_at_boundary(T):
    """At x = 0 the density is infinite below a = 1, e^0 at a = 1, and 0 above (assertAlmostEqual there)."""
    for concentration, expected in [(0.5, math.inf), (1, 0.0), (2, -math.inf)]:
        close(T.distributions.Gamma(concentration, 1).log_prob(T.tensor(0.0)), expected, atol=1e-7)


def test_pareto(T):
    """log p(x) = ln α + α ln s - (α + 1) ln x on x ≥ s; mean and variance infinite for α ≤ 1, 2."""
    D = T.distributions
    scale, alpha = draw(T, 2, 3, positive=True), draw(T, 2, 3, seed=1, positive=True)
    scale_1d = draw(T, 1, positive=True)
    assert values(D.Pareto(scale_1d, 0.5).mean) == np.inf
    assert values(D.Pareto(scale_1d, 0.5).variance) == np.inf
    assert tuple(D.Pareto(scale, alpha).sample().shape) == (2, 3)
    assert tuple(D.Pareto(scale, alpha).sample((5,)).shape) == (5, 2, 3)
    assert tuple(D.Pareto(1.0, 1.0).sample().shape) == ()
    s, a = values(scale).reshape(-1), values(alpha).reshape(-1)
    check_log_prob(D.Pareto(scale, alpha), lambda i, x: math.log(a[i]) + a[i] * math.log(s[i])
                   - (a[i] + 1) * math.log(x))


def test_gumbel(T):
    """log p(x) = -ln s - z - e^-z, z = (x - μ)/s; the cdf reaches 0 and 1 without overflow."""
    D = T.distributions
    loc, scale = draw(T, 2, 3), draw(T, 2, 3, seed=1, positive=True)
    assert tuple(D.Gumbel(loc, scale).sample().shape) == (2, 3)
    assert tuple(D.Gumbel(loc, scale).sample((5,)).shape) == (5, 2, 3)
    assert tuple(D.Gumbel(1.0, 1.0).sample().shape) == ()
    assert tuple(D.Gumbel(1.0, 1.0).sample((1,)).shape) == (1,)
    for dtype, high, low, atol in [("float32", 20.0, -5.0, 1e-4), ("float64", 50.0, -10.0, 1e-8)]:
        g = D.Gumbel(T.tensor(0.0, dtype=getattr(T, dtype)), T.tensor(1.0, dtype=getattr(T, dtype)),
                     validate_args=False)
        close(g.cdf(high), 1.0, atol=1e-4)
        close(g.cdf(low), 0.0, atol=atol)
    m, s = values(loc).reshape(-1), values(scale).reshape(-1)

    def reference(i, x):
        z = (x - m[i]) / s[i]
        return -math.log(s[i]) - z - math.exp(-z)

    check_log_prob(D.Gumbel(loc, scale), reference)


def test_chi2_shape_and_log_prob(T):
    """Chi2(k) = Gamma(k/2, 1/2)."""
    D = T.distributions
    df = exp_draw(T, 2, 3)
    assert tuple(D.Chi2(df).sample().shape) == (2, 3)
    assert tuple(D.Chi2(df).sample((5,)).shape) == (5, 2, 3)
    assert tuple(D.Chi2(exp_draw(T, 1)).sample((1,)).shape) == (1, 1)
    assert tuple(D.Chi2(T.tensor(0.5, requires_grad=True)).sample().shape) == ()
    assert tuple(D.Chi2(0.5).sample((1,)).shape) == (1,)
    k = values(df).reshape(-1)
    check_log_prob(D.Chi2(df), lambda i, x: (k[i] / 2 - 1) * math.log(x) - x / 2 - k[i] / 2 * math.log(2)
                   - math.lgamma(k[i] / 2))


def student_t_log_pdf(x, df, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    return (math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi) - math.log(scale)
            - (df + 1) / 2 * math.log1p(z * z / df))


def test_studentT(T):
    D = T.distributions
    df = exp_draw(T, 2, 3)
    assert np.isnan(values(D.StudentT(1).mean)).all()
    assert np.isnan(values(D.StudentT(1).variance)).all()
    assert values(D.StudentT(2).variance) == np.inf
    assert tuple(D.StudentT(df).sample().shape) == (2, 3)
    assert tuple(D.StudentT(df).sample((5,)).shape) == (5, 2, 3)
    assert tuple(D.StudentT(exp_draw(T, 1)).sample((1,)).shape) == (1, 1)
    assert tuple(D.StudentT(T.tensor(0.5, requires_grad=True)).sample().shape) == ()
    assert tuple(D.StudentT(0.5).sample((1,)).shape) == (1,)
    k = values(df).reshape(-1)
    check_log_prob(D.StudentT(df), lambda i, x: student_t_log_pdf(x, k[i]))
    for dof, loc, scale in [(0.1, -1.0, 0.1), (1.0, 0.0, 1.0), (5.0, 1.0, 10.0), (10.0, -1.0, 1.0)]:
        d = D.StudentT(df=dof, loc=loc, scale=scale)
        x = d.sample((10,))
        expected = [student_t_log_pdf(float(v), dof, loc, scale) for v in values(x)]
        close(d.log_prob(x), expected, atol=1e-3, rtol=1e-5)


def test_dirichlet(T):
    """log p(x) = ln Γ(Σα) - Σ ln Γ(α_i) + Σ (α_i - 1) ln x_i; x_i = 0 with α_i = 1 adds 0 (0^0 = 1)."""
    D = T.distributions
    alpha = exp_draw(T, 2, 3)
    assert tuple(D.Dirichlet(alpha).sample().shape) == (2, 3)
    assert tuple(D.Dirichlet(alpha).sample((5,)).shape) == (5, 2, 3)
    assert tuple(D.Dirichlet(exp_draw(T, 4)).sample().shape) == (4,)
    assert tuple(D.Dirichlet(exp_draw(T, 4)).sample((1,)).shape) == (1, 4)
    a = np.exp(np.random.default_rng(2).standard_normal(5))
    d = D.Dirichlet(T.tensor(a))
    x = d.sample((10,))
    expected = [math.lgamma(a.sum()) - sum(math.lgamma(v) for v in a) + float(((a - 1) * np.log(xi)).sum())
                for xi in values(x)]
    close(d.log_prob(x), expected, atol=1e-3, rtol=1e-6)
    close(D.Dirichlet(T.tensor([1.0, 2.0])).log_prob(T.tensor([0.0, 1.0])), math.log(2.0), atol=1e-3)


def test_dirichlet_mode(T):
    for concentration, mode in [([2, 2, 1], [0.5, 0.5, 0.0]), ([3, 2, 1], [2 / 3, 1 / 3, 0]),
                                ([0.5, 0.2, 0.2], [1.0, 0.0, 0.0]), ([1, 1, 1], [math.nan] * 3)]:
        close(T.distributions.Dirichlet(T.tensor(concentration, dtype=T.float32)).mode, mode)


def test_dirichlet_multivariate_rsample_gradient(T):
    """d/dα E[(z3 - 1/(2α + 1))²] for z ~ Dirichlet(α, α, 1) is (1 - 2α - 4α²) / ((1 + α)² (1 + 2α)³)."""
    alpha_crit = 0.25 * (5.0**0.5 - 1.0)
    for shift in [-0.1, 0.0, 0.1]:
        alpha = T.tensor([alpha_crit + shift], requires_grad=True)
        z = T.distributions.Dirichlet(T.cat([alpha, alpha, T.ones(1)]).expand(50000, 3)).rsample()
        loss = ((z[:, 2] - 1.0 / (2.0 * alpha + 1.0)) ** 2).mean()
        (actual,) = T.autograd.grad(loss, [alpha])
        a = alpha_crit + shift
        close(actual, [(1.0 - 2.0 * a - 4.0 * a * a) / ((1.0 + a) ** 2 * (1.0 + 2.0 * a) ** 3)], atol=0.004, rtol=0)


def test_beta(T):
    """log p(x) = (a - 1) ln x + (b - 1) ln(1 - x) - ln B(a, b); small concentrations draw no NaN, and
    very small ones draw from both ends, never exactly 0 or 1."""
    D = T.distributions
    con1, con0 = exp_draw(T, 2, 3), exp_draw(T, 2, 3, seed=1)
    assert tuple(D.Beta(con1, con0).sample().shape) == (2, 3)
    assert tuple(D.Beta(con1, con0).sample((5,)).shape) == (5, 2, 3)
    assert tuple(D.Beta(exp_draw(T, 4), exp_draw(T, 4, seed=1)).sample((1,)).shape) == (1, 4)
    assert tuple(D.Beta(0.1, 0.3).sample().shape) == ()
    assert tuple(D.Beta(0.1, 0.3).sample((5,)).shape) == (5,)
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = math.exp(rng.standard_normal()), math.exp(rng.standard_normal())
        d = D.Beta(a, b)
        x = float(d.sample())
        if 0 < x < 1:
            expected = (a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b)
                                                                           - math.lgamma(a + b))
            close(d.log_prob(T.tensor(x)), expected, atol=1e-3, rtol=1e-5)
    for dtype in ("float32", "float64"):
        x = float(D.Beta(T.tensor([1e-6], dtype=getattr(T, dtype)), T.tensor([1e-6], dtype=getattr(T, dtype)))
                  .sample()[0])
        assert np.isfinite(x) and x > 0
        samples = values(D.Beta(T.tensor(1e-2, dtype=getattr(T, dtype)), T.tensor(1e-2, dtype=getattr(T, dtype)))
                         .sample((20000,)))
        assert (samples == 0).sum() == 0 and (samples == 1).sum() == 0
        assert abs((samples < 0.1).mean() - 0.5) < 0.05 and abs((samples > 0.9).mean() - 0.5) < 0.05


def cb_log_pdf(x, p):
    if 0.499 < p < 0.501:
        log_c = math.log(2.0) + 4.0 / 3.0 * (p - 0.5) ** 2 + 104.0 / 45.0 * (p - 0.5) ** 4
    else:
        log_c = math.log(2.0 * math.atanh(1.0 - 2.0 * p) / (1.0 - 2.0 * p))
    return x * math.log(p) + (1.0 - x) * math.log1p(-p) + log_c


def test_continuous_bernoulli(T):
    D = T.distributions
    p, r = f64(T, [0.7, 0.2, 0.4]), f64(T, 0.3)
    assert tuple(D.ContinuousBernoulli(p).sample((8,)).shape) == (8, 3)
    assert not D.ContinuousBernoulli(p).sample().requires_grad
    assert tuple(D.ContinuousBernoulli(r).sample((8,)).shape) == (8,)
    assert tuple(D.ContinuousBernoulli(r).sample().shape) == ()
    assert tuple(D.ContinuousBernoulli(r).sample((3, 2)).shape) == (3, 2)
    assert tuple(D.ContinuousBernoulli(0.3).sample().shape) == ()
    gradcheck_log_prob(T, D.ContinuousBernoulli, (p,))
    pv = values(p)
    check_log_prob(D.ContinuousBernoulli(p), lambda i, x: cb_log_pdf(x, pv[i]))
    check_log_prob(D.ContinuousBernoulli(logits=p.log() - (-p).log1p()), lambda i, x: cb_log_pdf(x, pv[i]))
    close(D.ContinuousBernoulli(p).entropy(), [-0.02938, -0.07641, -0.00682], atol=1e-4, rtol=0)
    # at p = 0 the probability is clamped to float64's eps (float32's would give -1.76898)
    close(D.ContinuousBernoulli(T.tensor([0.0], dtype=T.float64)).entropy(), [-2.58473], atol=1e-5, rtol=0)
    close(D.ContinuousBernoulli(T.tensor(0.3, dtype=T.float64)).entropy(), -0.02938, atol=1e-4, rtol=0)
    q = T.full((2, 3, 5), 0.5).requires_grad_()
    assert tuple(D.ContinuousBernoulli(q).sample().shape) == (2, 3, 5)
    assert tuple(D.ContinuousBernoulli(q).sample(sample_shape=(2, 5)).shape) == (2, 5, 2, 3, 5)
    assert tuple(D.ContinuousBernoulli(q).sample((2,)).shape) == (2, 2, 3, 5)


def psd(T, *batch, seed):
    a = np.random.default_rng(seed).standard_normal(batch + (3, 10))
    return T.tensor(a @ np.swapaxes(a, -1, -2) / 10)


def mvn_log_pdf(x, mean, cov):
    d = x - mean
    return -0.5 * (d @ np.linalg.solve(cov, d) + np.linalg.slogdet(cov)[1] + len(mean) * math.log(2 * math.pi))


def test_multivariate_normal_shape(T):
    D = T.distributions
    mean, mean_no_batch, mean_multi = draw(T, 5, 3), draw(T, 3, seed=1), draw(T, 6, 5, 3, seed=2)
    cov, cov_batched = psd(T, seed=3).requires_grad_(), psd(T, 6, 5, seed=4).requires_grad_()
    prec, prec_batched = T.linalg.inv(cov), T.linalg.inv(cov_batched)
    tril, tril_batched = T.linalg.cholesky(cov), T.linalg.cholesky(cov_batched)
    for m, c, batch in [(mean, cov, (5,)), (mean_no_batch, cov, ()), (mean_multi, cov, (6, 5)),
                        (mean, cov_batched, (6, 5)), (mean_no_batch, cov_batched, (6, 5))]:
        assert tuple(D.MultivariateNormal(m, c).sample().shape) == batch + (3,)
        assert tuple(D.MultivariateNormal(m, c).sample((2, 7)).shape) == (2, 7) + batch + (3,)
    assert tuple(D.MultivariateNormal(mean, precision_matrix=prec).sample((2, 7)).shape) == (2, 7, 5, 3)
    assert tuple(D.MultivariateNormal(mean, precision_matrix=prec_batched).sample((2, 7)).shape) == (2, 7, 6, 5, 3)
    assert tuple(D.MultivariateNormal(mean, scale_tril=tril).sample((2, 7)).shape) == (2, 7, 5, 3)
    assert tuple(D.MultivariateNormal(mean, scale_tril=tril_batched).sample((2, 7)).shape) == (2, 7, 6, 5, 3)

    def gradcheck(m, c=None, p=None, s=None):
        x = D.MultivariateNormal(m, c, p, s).sample().requires_grad_()

        def f(x, m, c, p, s):  # (keep the perturbed matrices symmetric, or triangular)
            return D.MultivariateNormal(m, None if c is None else 0.5 * (c + c.mT),
                                        None if p is None else 0.5 * (p + p.mT),
                                        None if s is None else s.tril()).log_prob(x)

        assert T.autograd.gradcheck(f, (x, m, c, p, s))

    gradcheck(mean, cov)
    gradcheck(mean_multi, cov_batched)
    gradcheck(mean, None, prec.detach().requires_grad_())
    gradcheck(mean, None, None, tril.detach().requires_grad_())


def test_multivariate_normal_log_prob_and_properties(T):
    D = T.distributions
    mean, cov = draw(T, 3), psd(T, seed=5)
    for d in (D.MultivariateNormal(mean, cov), D.MultivariateNormal(mean, precision_matrix=T.linalg.inv(cov)),
              D.MultivariateNormal(mean, scale_tril=T.linalg.cholesky(cov))):
        x = d.sample((10,))
        close(d.log_prob(x), [mvn_log_pdf(xi, values(mean), values(cov)) for xi in values(x)], rtol=1e-8)
    mean, cov = draw(T, 5, 3), psd(T, 5, seed=6)
    batched = D.MultivariateNormal(mean, cov)
    x = batched.sample((10,))
    unbatched = T.stack([D.MultivariateNormal(mean[i], cov[i]).log_prob(x[:, i]) for i in range(5)]).t()
    close(batched.log_prob(x), values(unbatched), rtol=1e-8)
    # x = RBF kernel: its precision form is stable
    x = np.random.default_rng(7).standard_normal(10)
    D.MultivariateNormal(T.zeros(10, dtype=T.float64), precision_matrix=T.tensor(np.exp(-(x - x[:, None]) ** 2)))
    tril = D.transform_to(D.constraints.lower_cholesky)(T.tensor(np.random.default_rng(8).standard_normal((5, 5))))
    m = D.MultivariateNormal(T.zeros(5, dtype=T.float64), scale_tril=tril)
    close(m.covariance_matrix, values(m.scale_tril @ m.scale_tril.t()), rtol=1e-10, atol=1e-12)
    close(m.covariance_matrix @ m.precision_matrix, np.eye(5), atol=1e-8)
    close(m.scale_tril, values(T.linalg.cholesky(m.covariance_matrix)), rtol=1e-8, atol=1e-10)
    samples = m.rsample((50000,))
    close(samples.mean(0), values(m.mean), atol=0.05, rtol=0)
    close(samples.var(0), values(m.variance), atol=0.05, rtol=0.03)


def test_lowrank_multivariate_normal(T):
    D = T.distributions
    mean, mean_no_batch, mean_multi = draw(T, 5, 3), draw(T, 3, seed=1), draw(T, 6, 5, 3, seed=2)
    factor, diag = draw(T, 3, 1, seed=3), draw(T, 3, seed=4, positive=True)
    factor_b, diag_b = draw(T, 6, 5, 3, 2, seed=5), draw(T, 6, 5, 3, seed=6, positive=True)
    for m, f, dg, batch in [(mean, factor, diag, (5,)), (mean_no_batch, factor, diag, ()),
                            (mean_multi, factor, diag, (6, 5)), (mean, factor_b, diag_b, (6, 5)),
                            (mean_no_batch, factor_b, diag_b, (6, 5))]:
        assert tuple(D.LowRankMultivariateNormal(m, f, dg).sample().shape) == batch + (3,)
        assert tuple(D.LowRankMultivariateNormal(m, f, dg).sample((2, 7)).shape) == (2, 7) + batch + (3,)
    gradcheck_log_prob(T, D.LowRankMultivariateNormal, (mean, factor, diag))
    gradcheck_log_prob(T, D.LowRankMultivariateNormal, (mean_multi, factor_b, diag_b))
    cov = values(factor @ factor.t() + T.diag(diag))
    d = D.LowRankMultivariateNormal(mean_no_batch, factor, diag)
    x = d.sample((10,))
    close(d.log_prob(x), [mvn_log_pdf(xi, values(mean_no_batch), cov) for xi in values(x)], rtol=1e-8)
    loc, f, dg = draw(T, 5, seed=7), draw(T, 5, 2, seed=8), draw(T, 5, seed=9, positive=True)
    m1 = D.LowRankMultivariateNormal(loc, f, dg)
    m2 = D.MultivariateNormal(loc=loc, covariance_matrix=f @ f.t() + T.diag(dg))
    for name in ("mean", "variance", "covariance_matrix", "scale_tril", "precision_matrix"):
        close(getattr(m1, name), values(getattr(m2, name)), rtol=1e-8, atol=1e-10)
    close(m1.entropy(), values(m2.entropy()), rtol=1e-10)
    samples = m1.rsample((50000,))
    close(samples.mean(0), values(m1.mean), atol=0.05, rtol=0)
    close(samples.var(0), values(m1.variance), atol=0.05, rtol=0.03)


def test_lkj_cholesky_log_prob(T):
    """With concentration 1 the LKJ law is uniform over correlation matrices: log p of the Cholesky
    factor less the log |det| of the map from it to the correlation matrix is the same at any draw
    (ln 1/2 in dimension 2); a non-Cholesky value is refused."""
    D = T.distributions
    utils = __import__(T.__name__ + ".distributions.utils", fromlist=["x"])

    def tril_cholesky_to_tril_corr(x):
        x = utils.vec_to_tril_matrix(x, -1)
        x = x + T.diag_embed((1 - (x * x).sum(-1)).sqrt())
        return utils.tril_matrix_to_vec(x @ x.T, -1)

    for dim in range(2, 5):
        lkj = D.LKJCholesky(dim, concentration=1.0, validate_args=True)
        log_probs = []
        for _ in range(2):
            sample = lkj.sample()
            jac = T.autograd.functional.jacobian(tril_cholesky_to_tril_corr,
                                                 utils.tril_matrix_to_vec(sample.double(), diag=-1))
            log_probs.append(float(lkj.log_prob(sample)) - float(T.linalg.slogdet(jac)[1]))
        if dim == 2:
            np.testing.assert_allclose(log_probs, [math.log(0.5)] * 2, atol=1e-6)
        np.testing.assert_allclose(log_probs[0], log_probs[1], rtol=1e-5)
        with pytest.raises(ValueError):
            lkj.log_prob(T.cat([sample, sample.new_ones(1, dim)], dim=0))
