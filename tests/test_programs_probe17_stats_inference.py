# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Statistical-modelling programs (see tests/pytorch_programs.py), as statisticians and epidemiologists write them,
each run on chainrule and on PyTorch in float64 and checked against NumPy by hand. Inference and latent variables:
Bayesian logistic regression by MAP plus a Laplace approximation (``MultivariateNormal(precision_matrix=)``); the
eight-schools hierarchical model by variational inference (``rsample``, ``kl_divergence``); a bootstrap with
``torch.Generator``-seeded ``randint``/``multinomial`` and Dirichlet weights; a Gaussian mixture by EM and by
``MixtureSameFamily``; factor analysis with ``LowRankMultivariateNormal``."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Bayesian logistic regression: MAP, then a Laplace approximation
# ----------------------------------------------------------------------------------------------


def logistic_data(n=100, seed=9):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.standard_normal((n, 3))])
    beta = np.array([-0.3, 1.2, -0.8, 0.0])
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ beta))).astype(np.float64)
    return X, y


def laplace_logistic(m):
    torch, optim, F = m.torch, m.optim, m.F
    D = torch.distributions
    X, y = (torch.from_numpy(a) for a in logistic_data())
    prior = D.Normal(torch.zeros(4, dtype=torch.float64), torch.tensor([5.0, 2.5, 2.5, 2.5], dtype=torch.float64))

    def neg_log_posterior(beta):
        return F.binary_cross_entropy_with_logits(X @ beta, y, reduction="sum") - prior.log_prob(beta).sum()

    beta = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    optimizer = optim.LBFGS([beta], lr=1, max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = neg_log_posterior(beta)
        loss.backward()
        return loss

    optimizer.step(closure)
    beta_map = beta.detach()
    H = torch.autograd.functional.hessian(neg_log_posterior, beta_map)
    posterior = D.MultivariateNormal(beta_map, precision_matrix=H)
    torch.manual_seed(0)
    draws = posterior.sample((2000,))
    x_new = torch.tensor([[1.0, 0.5, -0.5, 0.0]], dtype=torch.float64)
    p_mc = torch.sigmoid(draws @ x_new.T).mean()
    # the probit approximation to the predictive (MacKay): sigmoid(mu / sqrt(1 + pi s^2 / 8))
    mu = x_new @ beta_map
    s2 = x_new @ posterior.covariance_matrix @ x_new.T
    p_probit = torch.sigmoid(mu / torch.sqrt(1 + math.pi * s2.squeeze() / 8))
    # the Laplace evidence: log p(y, beta_map) + (d/2) log 2 pi - 0.5 log|H|
    log_evidence = -neg_log_posterior(beta_map) + 2 * math.log(2 * math.pi) - 0.5 * torch.logdet(H)
    return {"map": beta_map, "cov": posterior.covariance_matrix, "scale_tril": posterior.scale_tril,
            "entropy": posterior.entropy(), "p_mc": p_mc, "p_probit": p_probit.squeeze(),
            "log_evidence": log_evidence, "draw_mean": draws.mean(0)}


def test_bayesian_logistic_laplace():
    ours, _ = run_both(laplace_logistic, rtol=1e-7, atol=1e-9)
    X, y = logistic_data()
    b = ours["map"]
    p = 1 / (1 + np.exp(-X @ b))
    prior_prec = 1 / np.array([5.0, 2.5, 2.5, 2.5]) ** 2
    np.testing.assert_allclose(X.T @ (y - p) - prior_prec * b, 0, atol=1e-6)
    H = X.T @ ((p * (1 - p))[:, None] * X) + np.diag(prior_prec)
    np.testing.assert_allclose(ours["cov"], np.linalg.inv(H), rtol=1e-9)
    np.testing.assert_allclose(ours["scale_tril"] @ ours["scale_tril"].T, np.linalg.inv(H), rtol=1e-9)
    assert ours["entropy"] == pytest.approx(0.5 * 4 * (1 + np.log(2 * np.pi)) - 0.5 * np.linalg.slogdet(H)[1])
    assert ours["p_mc"] == pytest.approx(ours["p_probit"], abs=0.01)
    np.testing.assert_allclose(ours["draw_mean"], b, atol=0.05)


# ----------------------------------------------------------------------------------------------
# Eight schools: a hierarchical model by mean-field variational inference
# ----------------------------------------------------------------------------------------------

SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    D = torch.distributions
    y, sigma = torch.from_numpy(SCHOOLS_Y), torch.from_numpy(SCHOOLS_SIGMA)

    class Guide(nn.Module):
        """q(mu) q(log tau) q(eta): a non-centred parameterisation, theta = mu + tau * eta."""

        def __init__(self):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(10, dtype=torch.float64))
            self.raw_scale = nn.Parameter(torch.full((10,), -1.0, dtype=torch.float64))

        def forward(self):
            return D.Normal(self.loc, nn.functional.softplus(self.raw_scale))

    guide = Guide()
    prior = D.Normal(torch.zeros(10, dtype=torch.float64),
                     torch.tensor([5.0, 1.0] + [1.0] * 8, dtype=torch.float64))  # mu, log tau, eta
    optimizer = optim.Adam(guide.parameters(), lr=0.05)
    torch.manual_seed(0)
    elbos = []
    for step in range(300):
        q = guide()
        z = q.rsample((8,))  # 8 Monte Carlo draws
        mu, tau, eta = z[:, 0:1], z[:, 1:2].exp(), z[:, 2:]
        theta = mu + tau * eta
        log_lik = D.Normal(theta, sigma).log_prob(y).sum(-1).mean()
        kl = D.kl_divergence(q, prior).sum()
        loss = kl - log_lik
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        elbos.append(-loss.item())
    q = guide()
    with torch.no_grad():
        z = q.sample((4000,))
        theta = z[:, :1] + z[:, 1:2].exp() * z[:, 2:]
    return {"elbo_head": elbos[:20], "loc": q.loc.detach(), "scale": q.scale.detach(),
            "kl": D.kl_divergence(q, prior).detach(), "theta_mean": theta.mean(0)}


def test_eight_schools_variational():
    ours, _ = run_both(eight_schools, rtol=1e-6, atol=1e-8)
    loc, scale = ours["loc"], ours["scale"]
    prior_scale = np.array([5.0, 1.0] + [1.0] * 8)
    kl = np.log(prior_scale / scale) + (scale ** 2 + loc ** 2) / (2 * prior_scale ** 2) - 0.5
    np.testing.assert_allclose(ours["kl"], kl, rtol=1e-10)
    assert np.mean(ours["elbo_head"][-5:]) > np.mean(ours["elbo_head"][:5])
    assert 0 < loc[0] < 15  # the population mean, shrunk
    assert ours["theta_mean"][0] > ours["theta_mean"][2]  # school A above school C, as the data


# ----------------------------------------------------------------------------------------------
# The bootstrap, resampled with a seeded torch.Generator
# ----------------------------------------------------------------------------------------------


def bootstrap_data(n=40, seed=10):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = 2.0 + 1.5 * x + rng.standard_t(3, n)
    return x, y


def bootstrap(m):
    torch = m.torch
    x, y = (torch.from_numpy(a) for a in bootstrap_data())
    n, B = len(x), 500
    g = torch.Generator().manual_seed(2024)
    idx = torch.randint(0, n, (B, n), generator=g)  # nonparametric: rows resampled with replacement
    xb, yb = x[idx], y[idx]
    Xb = torch.stack([torch.ones_like(xb), xb], -1)
    slopes = torch.linalg.lstsq(Xb, yb.unsqueeze(-1)).solution[:, 1, 0]
    medians = yb.median(dim=1).values
    corr = torch.stack([torch.corrcoef(torch.stack([xb[b], yb[b]]))[0, 1] for b in range(B)])
    # the Bayesian bootstrap: Dirichlet weights; and a weighted resample by multinomial
    weights = torch.rand(B, n, generator=g, dtype=torch.float64)
    weights = -weights.log()
    weights = weights / weights.sum(-1, keepdim=True)  # Exp(1)s normalised: Dirichlet(1, ..., 1)
    bayes_means = (weights * y).sum(-1)
    torch.manual_seed(1)
    dirichlet_means = torch.distributions.Dirichlet(torch.ones(n, dtype=torch.float64)).sample((B,)) @ y
    resample = torch.multinomial(weights[0], n, replacement=True, generator=g)
    # percentile and basic intervals
    lo, hi = torch.quantile(slopes, torch.tensor([0.025, 0.975], dtype=torch.float64))
    X = torch.stack([torch.ones_like(x), x], -1)
    slope_hat = torch.linalg.lstsq(X, y.unsqueeze(-1)).solution[1, 0]
    std, mean = torch.std_mean(slopes, correction=1)
    return {"idx": idx[:3], "slopes": slopes, "medians": medians, "corr": corr, "se": std, "bias": mean - slope_hat,
            "percentile": torch.stack([lo, hi]), "basic": torch.stack([2 * slope_hat - hi, 2 * slope_hat - lo]),
            "bayes_means": bayes_means, "dirichlet_means": dirichlet_means, "resample": resample,
            "median_ci": torch.quantile(medians, torch.tensor([0.05, 0.95], dtype=torch.float64),
                                        interpolation="lower")}


def test_bootstrap():
    ours, _ = run_both(bootstrap, rtol=1e-10, atol=1e-12)
    x, y = bootstrap_data()
    idx = ours["idx"]
    assert idx.min() >= 0 and idx.max() < 40
    for b in range(3):
        slope = np.polyfit(x[idx[b]], y[idx[b]], 1)[0]
        assert ours["slopes"][b] == pytest.approx(slope, rel=1e-10)
        assert ours["corr"][b] == pytest.approx(np.corrcoef(x[idx[b]], y[idx[b]])[0, 1], rel=1e-12)
        assert ours["medians"][b] == np.sort(y[idx[b]])[19]  # torch's median: the lower of the middle two
    np.testing.assert_allclose(ours["percentile"], np.quantile(ours["slopes"], [0.025, 0.975]), rtol=1e-12)
    assert ours["se"] == pytest.approx(np.std(ours["slopes"], ddof=1), rel=1e-12)
    np.testing.assert_allclose(ours["median_ci"], np.quantile(ours["medians"], [0.05, 0.95], method="lower"))
    assert 0.1 < ours["se"] < 0.6
    slope_hat = np.polyfit(x, y, 1)[0]
    assert ours["percentile"][0] < slope_hat < ours["percentile"][1]
    np.testing.assert_allclose(ours["basic"], 2 * slope_hat - ours["percentile"][::-1], rtol=1e-12)
    assert abs(np.mean(ours["bayes_means"]) - y.mean()) < 0.1
    assert abs(np.mean(ours["dirichlet_means"]) - y.mean()) < 0.1
    assert np.std(ours["dirichlet_means"]) == pytest.approx(np.std(ours["bayes_means"]), rel=0.2)


# ----------------------------------------------------------------------------------------------
# Latent structure: a Gaussian mixture by EM and by gradient (MixtureSameFamily); factor analysis
# ----------------------------------------------------------------------------------------------


def mixture_data(n=200, seed=17):
    rng = np.random.default_rng(seed)
    z = rng.uniform(size=n) < 0.35
    return np.where(z, rng.normal(-2.0, 0.6, n), rng.normal(1.5, 1.0, n))


def gaussian_mixture(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    D = torch.distributions
    x = torch.from_numpy(mixture_data())
    # EM, by hand
    pi = torch.tensor([0.5, 0.5], dtype=torch.float64)
    mu = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    sd = torch.tensor([1.0, 1.0], dtype=torch.float64)
    em_ll = []
    for it in range(60):
        log_joint = D.Normal(mu, sd).log_prob(x.unsqueeze(-1)) + pi.log()
        ll = torch.logsumexp(log_joint, -1)
        resp = torch.softmax(log_joint, -1)
        nk = resp.sum(0)
        pi, mu = nk / len(x), (resp * x.unsqueeze(-1)).sum(0) / nk
        sd = torch.sqrt((resp * (x.unsqueeze(-1) - mu) ** 2).sum(0) / nk)
        em_ll.append(ll.sum().item())
    # the same model by gradient, a MixtureSameFamily from unconstrained parameters
    logits = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    loc = nn.Parameter(torch.tensor([-1.0, 1.0], dtype=torch.float64))
    log_scale = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = optim.LBFGS([logits, loc, log_scale], max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def mixture():
        return D.MixtureSameFamily(D.Categorical(logits=logits), D.Normal(loc, log_scale.exp()))

    def closure():
        optimizer.zero_grad()
        loss = -mixture().log_prob(x).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    gmm = mixture()
    with torch.no_grad():
        cdf = gmm.cdf(torch.tensor([-2.0, 0.0, 1.5], dtype=torch.float64))
        post = torch.softmax(D.Normal(loc, log_scale.exp()).log_prob(x[:5, None]) + logits.log_softmax(0), -1)
    return {"em_ll": em_ll, "em": torch.stack([pi, mu, sd]), "gd": torch.stack([logits.softmax(0), loc,
            log_scale.exp()]).detach(), "mean": gmm.mean.detach(), "var": gmm.variance.detach(), "cdf": cdf,
            "post": post}


def test_gaussian_mixture_em_and_gradient():
    ours, _ = run_both(gaussian_mixture, rtol=1e-7, atol=1e-9)
    assert np.all(np.diff(ours["em_ll"]) >= -1e-9)  # EM never decreases the likelihood
    np.testing.assert_allclose(ours["gd"], ours["em"], atol=2e-3)  # both reach the same maximum
    pi, mu, sd = ours["gd"]
    assert ours["mean"] == pytest.approx(pi @ mu, rel=1e-12)
    assert ours["var"] == pytest.approx(pi @ (sd ** 2 + mu ** 2) - (pi @ mu) ** 2, rel=1e-12)
    from math import erf, sqrt
    for v, c in zip([-2.0, 0.0, 1.5], ours["cdf"]):
        assert c == pytest.approx(sum(p * 0.5 * (1 + erf((v - u) / (s * sqrt(2)))) for p, u, s in zip(pi, mu, sd)))
    np.testing.assert_allclose(ours["post"].sum(-1), 1, rtol=1e-12)


def factor_data(n=100, seed=18):
    rng = np.random.default_rng(seed)
    loadings = rng.standard_normal((6, 2))
    return rng.standard_normal((n, 2)) @ loadings.T + 0.5 * rng.standard_normal((n, 6))


def factor_analysis(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    D = torch.distributions
    Y = torch.from_numpy(factor_data())
    Y = Y - Y.mean(0)
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(0.1 * torch.randn(6, 2, generator=g, dtype=torch.float64))
    log_psi = nn.Parameter(torch.zeros(6, dtype=torch.float64))
    optimizer = optim.LBFGS([W, log_psi], max_iter=300, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        dist = D.LowRankMultivariateNormal(torch.zeros(6, dtype=torch.float64), W, log_psi.exp())
        loss = -dist.log_prob(Y).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    dist = D.LowRankMultivariateNormal(torch.zeros(6, dtype=torch.float64), W, log_psi.exp())
    full = D.MultivariateNormal(torch.zeros(6, dtype=torch.float64), covariance_matrix=dist.covariance_matrix)
    S = torch.cov(Y.T, correction=0)
    # rotation-free summaries: the common covariance W W^T and the communalities
    return {"nll": -dist.log_prob(Y).mean().detach(), "full": -full.log_prob(Y).mean().detach(),
            "common": (W @ W.T).detach(), "psi": log_psi.exp().detach(), "S": S,
            "entropy": dist.entropy().detach(), "precision": dist.precision_matrix.detach()}


def test_factor_analysis():
    ours, _ = run_both(factor_analysis, rtol=1e-6, atol=1e-8)
    Y = factor_data()
    Y = Y - Y.mean(0)
    S = Y.T @ Y / len(Y)
    np.testing.assert_allclose(ours["S"], S, rtol=1e-12)
    Sigma = ours["common"] + np.diag(ours["psi"])
    nll = 0.5 * (6 * np.log(2 * np.pi) + np.linalg.slogdet(Sigma)[1] + np.trace(np.linalg.solve(Sigma, S)))
    assert ours["nll"] == pytest.approx(nll, rel=1e-10)
    assert ours["full"] == pytest.approx(nll, rel=1e-10)
    np.testing.assert_allclose(ours["precision"], np.linalg.inv(Sigma), rtol=1e-8)
    # at the maximum the model reproduces the sample variances (a property of ML factor analysis)
    np.testing.assert_allclose(np.diag(Sigma), np.diag(S), rtol=1e-3)
