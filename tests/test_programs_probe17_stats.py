# ruff: noqa: B007, B008, B023, E741, E731, F841, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Statistical-modelling programs (see tests/pytorch_programs.py), as statisticians and epidemiologists write
them, each run on chainrule and on PyTorch in float64 and checked against NumPy by hand.

Survival: a Cox proportional-hazards model (Breslow partial likelihood by ``torch.logcumsumexp`` over risk
sets sorted by ``argsort(descending=True)``, ties gathered with ``unique_consecutive``/``scatter_reduce``,
fitted by ``optim.LBFGS(line_search_fn="strong_wolfe")``, standard errors from
``torch.autograd.functional.hessian``); Weibull and log-logistic accelerated-failure-time models with
right censoring (``distributions.Weibull``, a ``TransformedDistribution`` of a logistic); DeepSurv (an MLP
risk score under the Cox loss, Harrell's concordance); Kaplan-Meier with Greenwood's variance by hand.
GLMs: Poisson with an offset, Gamma and negative-binomial regressions fitted by L-BFGS with standard errors
from the inverse observed Fisher information; a zero-inflated Poisson. Others: quantile regression with a
pinball loss over several quantiles and a crossing penalty; cumulative-logit ordinal regression (cutpoints
by ``cumsum`` of ``softplus``); a random-intercept linear mixed model by REML (``cholesky``, ``logdet``,
``cholesky_solve``); a 2PL item-response model; Bayesian logistic regression by MAP plus a Laplace
approximation (``MultivariateNormal(precision_matrix=)``); the eight-schools hierarchical model by
variational inference (``rsample``, ``kl_divergence``); a bootstrap with ``torch.Generator``-seeded
``randint``/``multinomial`` and Dirichlet weights; Huber and Tukey-biweight robust regression by IRLS;
temperature and Platt scaling by L-BFGS with the expected calibration error by ``bucketize``. Further: Tobit
and probit regression (``special.log_ndtr``, ``ndtri``) with a delta-method standard error
(``autograd.functional.jacobian``); conditional logistic regression over matched sets (``scatter_reduce``
"amax", ``index_add``); beta regression with ``torch.func.hessian`` and per-observation scores by
``vmap(grad)`` for a sandwich covariance; Cox with Efron's ties and the restricted mean survival time
(``searchsorted``, ``trapezoid``); a Gaussian mixture by EM and by ``MixtureSameFamily``; factor analysis
with ``LowRankMultivariateNormal``; discrete-time survival (a logistic-hazard network) and the
piecewise-exponential model (``nn.PoissonNLLLoss(full=True)`` with an offset); a P-spline GAM (Cox-de Boor
basis, ``diff(n=2)`` penalty, GCV by L-BFGS); a random-effects meta-analysis (DerSimonian-Laird, REML, a
profile-likelihood bound by bisection)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Cox proportional hazards, Breslow ties
# ----------------------------------------------------------------------------------------------


def survival_data(n=60, p=3, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    beta = np.array([0.8, -0.5, 0.3])[:p]
    t = rng.exponential(1.0 / np.exp(X @ beta))
    c = rng.exponential(1.5, n)
    time = np.minimum(t, c)
    if ties:
        time = np.ceil(time * 10) / 10  # recorded to a tenth: ties
    event = (t <= c).astype(np.float64)
    return X, time, event


def cox_breslow_nll(torch, eta, time, event):
    """Negative Breslow partial log-likelihood: each event's risk set is everyone still at risk at its time."""
    order = torch.argsort(time, descending=True)
    eta, time, event = eta[order], time[order], event[order]
    log_risk = torch.logcumsumexp(eta, dim=0)
    # with ties, every member of a tied group shares the risk set of the group's last (smallest-index-last) member
    _, inverse, counts = torch.unique_consecutive(time, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0) - 1
    log_risk = log_risk[last[inverse]]
    return -((eta - log_risk) * event).sum() / event.sum()


def cox(m):
    torch, optim = m.torch, m.optim
    X, time, event = (torch.from_numpy(a) for a in survival_data())
    beta = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = optim.LBFGS([beta], lr=1, max_iter=50, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = cox_breslow_nll(torch, X @ beta, time, event)
        loss.backward()
        return loss

    optimizer.step(closure)
    nll = lambda b: cox_breslow_nll(torch, X @ b, time, event) * event.sum()
    H = torch.autograd.functional.hessian(nll, beta.detach())
    se = torch.linalg.inv(H).diagonal().sqrt()
    z = beta.detach() / se
    p_values = 2 * torch.distributions.Normal(0.0, 1.0).cdf(-z.abs())
    loss = nll(beta)
    (grad,) = torch.autograd.grad(loss, beta)
    return {"beta": beta.detach(), "se": se, "p": p_values, "loglik": -loss.detach(), "grad": grad, "H": H}


def breslow_loglik_numpy(X, time, event, beta):
    eta = X @ beta
    ll = 0.0
    for i in np.flatnonzero(event):
        ll += eta[i] - np.log(np.exp(eta[time >= time[i]]).sum())
    return ll


def test_cox_proportional_hazards_breslow():
    ours, _ = run_both(cox, rtol=1e-7, atol=1e-9)
    X, time, event = survival_data()
    assert len(np.unique(time)) < len(time)  # the data has ties
    assert ours["loglik"] == pytest.approx(breslow_loglik_numpy(X, time, event, ours["beta"]), rel=1e-12)
    assert np.abs(ours["grad"]).max() < 1e-5  # L-BFGS reached the maximum
    # the observed information by hand: sum over events of the risk set's weighted covariance of X
    I = np.zeros((3, 3))
    for i in np.flatnonzero(event):
        at_risk = time >= time[i]
        w = np.exp(X[at_risk] @ ours["beta"])
        w /= w.sum()
        mean = w @ X[at_risk]
        I += (X[at_risk] * w[:, None]).T @ X[at_risk] - np.outer(mean, mean)
    np.testing.assert_allclose(ours["H"], I, rtol=1e-9)
    np.testing.assert_allclose(ours["se"], np.sqrt(np.diag(np.linalg.inv(I))), rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# Weibull and log-logistic accelerated failure time, right censoring
# ----------------------------------------------------------------------------------------------


def aft(m, family):
    torch, nn, optim = m.torch, m.nn, m.optim
    D = torch.distributions
    X, time, event = (torch.from_numpy(a) for a in survival_data(ties=False))

    class AFT(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.linear = nn.Linear(p, 1).double()
            self.log_shape = nn.Parameter(torch.zeros((), dtype=torch.float64))
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

        def dist(self, x):
            log_scale = self.linear(x).squeeze(-1)
            k = self.log_shape.exp()
            if family == "weibull":
                return D.Weibull(log_scale.exp(), k)
            # log T = log_scale + logistic / k; a logistic is the logit of a uniform
            base = D.Uniform(torch.zeros_like(log_scale), torch.ones_like(log_scale))
            return D.TransformedDistribution(base, [D.SigmoidTransform().inv,
                                                    D.AffineTransform(log_scale, 1 / k), D.ExpTransform()])

        def log_survival(self, x, t):
            d = self.dist(x)
            if family == "weibull":
                return -(t / d.scale) ** d.concentration
            return torch.log1p(-d.cdf(t))

        def nll(self, x, t, e):
            d = self.dist(x)
            return -(e * d.log_prob(t) + (1 - e) * self.log_survival(x, t)).mean()

    model = AFT(X.shape[1])
    optimizer = optim.LBFGS(model.parameters(), lr=1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = model.nll(X, time, event)
        loss.backward()
        return loss

    optimizer.step(closure)
    loss = model.nll(X, time, event)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        median = model.dist(X[:5]).icdf(torch.full((5,), 0.5, dtype=torch.float64)) if family == "weibull" \
            else model.dist(X[:5]).icdf(torch.tensor(0.5, dtype=torch.float64))
    return {"params": [p.detach() for p in model.parameters()], "nll": loss.detach(), "grads": grads,
            "median": median}


@pytest.mark.parametrize("family", ["weibull", "loglogistic"])
def test_accelerated_failure_time(family):
    ours, _ = run_both(aft, family, rtol=1e-6, atol=1e-8)
    X, time, event = survival_data(ties=False)
    log_k, w, b = ours["params"]  # a module's own parameters come before its children's
    k = np.exp(log_k)
    lam = np.exp(X @ w[0] + b[0])
    z = k * (np.log(time) - np.log(lam))
    if family == "weibull":
        log_f = np.log(k) - np.log(time) + z - np.exp(z)
        log_S = -np.exp(z)
        median = lam[:5] * np.log(2) ** (1 / k)
    else:
        log_f = np.log(k) - np.log(time) + z - 2 * np.log1p(np.exp(z))
        log_S = -np.log1p(np.exp(z))
        median = lam[:5]
    assert ours["nll"] == pytest.approx(-(event * log_f + (1 - event) * log_S).mean(), rel=1e-10)
    assert max(np.abs(g).max() for g in ours["grads"]) < 1e-5
    np.testing.assert_allclose(ours["median"], median, rtol=1e-9)
    assert w[0][0] < 0  # a larger hazard (beta_0 > 0 in the data) shortens the time


# ----------------------------------------------------------------------------------------------
# DeepSurv: an MLP's risk score under the Cox loss
# ----------------------------------------------------------------------------------------------


def make_deepsurv(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 16), nn.SELU(), nn.AlphaDropout(0.0), nn.Linear(16, 16), nn.SELU(),
                         nn.Linear(16, 1, bias=False))


def concordance(torch, risk, time, event):
    """Harrell's C: among comparable pairs (i had the event, j outlived i), the share with risk_i > risk_j."""
    comparable = (time[:, None] < time[None, :]) & (event[:, None] == 1)
    concordant = (risk[:, None] > risk[None, :]) & comparable
    tied = (risk[:, None] == risk[None, :]) & comparable
    return (concordant.sum() + 0.5 * tied.sum()) / comparable.sum()


def deepsurv(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    X, time, event = (torch.from_numpy(a) for a in survival_data(n=80, seed=1))
    X = X.float()
    model = load(m, make_deepsurv(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.5)
    losses = []
    for epoch in range(40):
        model.train()
        optimizer.zero_grad()
        risk = model(X).squeeze(-1)
        loss = cox_breslow_nll(torch, risk.double(), time, event)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        risk = model(X).squeeze(-1)
    return {"losses": losses, "risk": risk, "c_index": concordance(torch, risk, time, event)}


def test_deepsurv():
    weights = weights_of(make_deepsurv)
    ours, _ = run_both(deepsurv, weights, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]
    X, time, event = survival_data(n=80, seed=1)
    r = ours["risk"]
    num = den = 0.0
    for i in range(len(time)):
        for j in range(len(time)):
            if event[i] and time[i] < time[j]:
                den += 1
                num += 1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0
    assert ours["c_index"] == pytest.approx(num / den, rel=1e-12)
    assert ours["c_index"] > 0.6


# ----------------------------------------------------------------------------------------------
# Kaplan-Meier with Greenwood's variance, by hand
# ----------------------------------------------------------------------------------------------


def kaplan_meier(m):
    torch = m.torch
    _, time, event = (torch.from_numpy(a) for a in survival_data(n=50, seed=2))
    times, inverse = torch.unique(time, sorted=True, return_inverse=True)
    deaths = torch.zeros_like(times).scatter_add_(0, inverse, event)
    leaving = torch.bincount(inverse, minlength=len(times)).to(times.dtype)
    at_risk = leaving.flip(0).cumsum(0).flip(0)
    hazard = deaths / at_risk
    survival = torch.cumprod(1 - hazard, dim=0)
    greenwood = survival ** 2 * torch.cumsum(deaths / (at_risk * (at_risk - deaths)).clamp_min(1e-12), 0)
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.975, dtype=torch.float64))
    # log(-log) confidence band, as R's survival package
    log_log_se = greenwood.sqrt() / (survival * (-survival.log()))
    lower = survival ** torch.exp(z * log_log_se)
    upper = survival ** torch.exp(-z * log_log_se)
    median = times[torch.searchsorted(-survival, torch.tensor([-0.5], dtype=torch.float64))]
    nelson_aalen = torch.cumsum(hazard, 0)
    keep = deaths > 0
    return {"times": times[keep], "S": survival[keep], "var": greenwood[keep], "lower": lower[keep][:-1],
            "upper": upper[keep][:-1], "median": median, "H": nelson_aalen[keep], "at_risk": at_risk[keep]}


def test_kaplan_meier():
    ours, _ = run_both(kaplan_meier, rtol=1e-10, atol=1e-12)
    _, time, event = survival_data(n=50, seed=2)
    S, var_sum, rows = 1.0, 0.0, []
    for t in np.unique(time[event == 1]):
        n = (time >= t).sum()
        d = ((time == t) & (event == 1)).sum()
        S *= 1 - d / n
        var_sum += d / (n * (n - d)) if n > d else 0.0
        rows.append((t, S, S * S * var_sum, n))
    t, S, var, n = map(np.array, zip(*rows))
    np.testing.assert_allclose(ours["times"], t)
    np.testing.assert_allclose(ours["S"], S, rtol=1e-12)
    np.testing.assert_allclose(ours["var"], var, rtol=1e-10)
    np.testing.assert_allclose(ours["at_risk"], n)
    assert ours["median"][0] == t[np.argmax(S <= 0.5)]
    assert np.all(ours["lower"] <= S[:-1]) and np.all(S[:-1] <= ours["upper"])


# ----------------------------------------------------------------------------------------------
# GLMs by L-BFGS: Poisson with an offset, Gamma, negative binomial; standard errors from the Hessian
# ----------------------------------------------------------------------------------------------


def glm_data(family, n=120, seed=3):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.standard_normal((n, 2))])
    beta = np.array([0.5, 0.4, -0.3])
    exposure = rng.uniform(0.5, 2.0, n)
    mu = exposure * np.exp(X @ beta)
    if family == "poisson":
        y = rng.poisson(mu)
    elif family == "gamma":
        y = rng.gamma(2.0, mu / 2.0)
    else:
        y = rng.negative_binomial(3.0, 3.0 / (3.0 + mu))
    return X, y.astype(np.float64), exposure


def glm(m, family):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    X, y, exposure = (torch.from_numpy(a) for a in glm_data(family))
    offset = torch.log(exposure)
    n, p = X.shape
    beta = torch.zeros(p, dtype=torch.float64, requires_grad=True)
    log_phi = torch.zeros((), dtype=torch.float64, requires_grad=True)  # Gamma shape / NB size

    def nll(beta, log_phi):
        mu = torch.exp(X @ beta + offset)
        if family == "poisson":
            return -D.Poisson(mu).log_prob(y).sum()
        if family == "gamma":
            shape = log_phi.exp()
            return -D.Gamma(shape, shape / mu).log_prob(y).sum()
        r = log_phi.exp()
        return -D.NegativeBinomial(total_count=r, logits=torch.log(mu) - torch.log(r)).log_prob(y).sum()

    params = [beta] if family == "poisson" else [beta, log_phi]
    optimizer = optim.LBFGS(params, lr=1, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nll(beta, log_phi) / n
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    theta = torch.cat([beta.detach(), log_phi.detach().reshape(1)])
    H = torch.autograd.functional.hessian(lambda t: nll(t[:p], t[p]), theta)
    if family == "poisson":
        H = H[:p, :p]
    cov = torch.linalg.inv(H)
    se = cov.diagonal().sqrt()
    # the expected (Fisher) information of the Poisson GLM, X^T W X with W = mu: same as observed for the canonical link
    mu = torch.exp(X @ beta.detach() + offset)
    fisher = X.T @ (mu[:, None] * X)
    deviance = 2 * (torch.special.xlogy(y, y / mu) - (y - mu)).sum()
    loss = nll(beta, log_phi)
    grads = torch.autograd.grad(loss, params)
    return {"beta": beta.detach(), "log_phi": log_phi.detach(), "se": se, "H": H, "fisher": fisher,
            "deviance": deviance, "nll": loss.detach(), "grads": grads}


@pytest.mark.parametrize("family", ["poisson", "gamma", "negbin"])
def test_glm_by_lbfgs_with_standard_errors(family):
    ours, _ = run_both(glm, family, rtol=1e-6, atol=1e-8)
    X, y, exposure = glm_data(family)
    beta = ours["beta"]
    mu = exposure * np.exp(X @ beta)
    assert max(np.abs(g).max() for g in ours["grads"]) < 1e-5
    # the score equations by hand
    if family == "poisson":
        np.testing.assert_allclose(X.T @ (y - mu), 0, atol=1e-5)
        np.testing.assert_allclose(ours["H"], ours["fisher"], rtol=1e-10)
        np.testing.assert_allclose(ours["se"], np.sqrt(np.diag(np.linalg.inv(X.T @ (mu[:, None] * X)))), rtol=1e-8)
        from math import lgamma
        nll = -(y * np.log(mu) - mu - np.array([lgamma(v + 1) for v in y])).sum()
        assert ours["nll"] == pytest.approx(nll, rel=1e-10)
    elif family == "gamma":
        np.testing.assert_allclose(X.T @ ((y - mu) / mu), 0, atol=1e-5)
        k = np.exp(ours["log_phi"])
        W = k * np.ones_like(mu)  # the Gamma log-link's observed information at the MLE for beta: k * y / mu
        Hb = X.T @ ((k * y / mu)[:, None] * X)
        np.testing.assert_allclose(ours["H"][:3, :3], Hb, rtol=1e-9)
    else:
        r = np.exp(ours["log_phi"])
        np.testing.assert_allclose(X.T @ ((y - mu) * r / (r + mu)), 0, atol=1e-5)
        assert 1.0 < r < 10.0
    assert np.all(ours["se"] > 0)


# ----------------------------------------------------------------------------------------------
# Zero-inflated Poisson
# ----------------------------------------------------------------------------------------------


def zip_data(n=200, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    pi = 1 / (1 + np.exp(-(-0.5 + 1.0 * x)))
    lam = np.exp(0.7 + 0.3 * x)
    y = np.where(rng.uniform(size=n) < pi, 0, rng.poisson(lam))
    return x, y.astype(np.float64)


def zero_inflated_poisson(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    D = torch.distributions
    x, y = (torch.from_numpy(a) for a in zip_data())

    class ZIP(nn.Module):
        def __init__(self):
            super().__init__()
            self.count = nn.Linear(1, 1, dtype=torch.float64)
            self.zero = nn.Linear(1, 1, dtype=torch.float64)
            for p in self.parameters():
                nn.init.constant_(p, 0.0)

        def log_prob(self, x, y):
            x = x.unsqueeze(-1)
            rate = self.count(x).squeeze(-1).exp()
            zero_logit = self.zero(x).squeeze(-1)
            log_pi = F_logsigmoid(zero_logit)
            log_not_pi = F_logsigmoid(-zero_logit)
            poisson = D.Poisson(rate).log_prob(y)
            at_zero = torch.logsumexp(torch.stack([log_pi, log_not_pi + poisson]), dim=0)
            return torch.where(y == 0, at_zero, log_not_pi + poisson)

    F_logsigmoid = m.F.logsigmoid
    model = ZIP()
    optimizer = optim.LBFGS(model.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -model.log_prob(x, y).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    loss = -model.log_prob(x, y).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        pi = torch.sigmoid(model.zero(x[:, None])).squeeze(-1)
        lam = model.count(x[:, None]).exp().squeeze(-1)
        expected_zeros = (pi + (1 - pi) * torch.exp(-lam)).sum()
    return {"params": [p.detach().reshape(()) for p in model.parameters()], "nll": loss.detach(),
            "grads": grads, "expected_zeros": expected_zeros}


def test_zero_inflated_poisson():
    ours, _ = run_both(zero_inflated_poisson, rtol=1e-6, atol=1e-8)
    x, y = zip_data()
    cw, cb, zw, zb = ours["params"]
    lam = np.exp(cb + cw * x)
    pi = 1 / (1 + np.exp(-(zb + zw * x)))
    from math import lgamma
    log_pois = y * np.log(lam) - lam - np.array([lgamma(v + 1) for v in y])
    ll = np.where(y == 0, np.log(pi + (1 - pi) * np.exp(-lam)), np.log(1 - pi) + log_pois)
    assert ours["nll"] == pytest.approx(-ll.sum(), rel=1e-10)
    assert max(np.abs(g).max() for g in ours["grads"]) < 1e-3
    assert ours["expected_zeros"] == pytest.approx((y == 0).sum(), rel=0.05)
    assert 0.4 < cb + 0.0 < 1.0 and 0.5 < zw < 1.6


# ----------------------------------------------------------------------------------------------
# Quantile regression: pinball loss over several quantiles, with a crossing penalty
# ----------------------------------------------------------------------------------------------


def quantile_data(n=200, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 4, (n, 1))
    y = 1.0 + 0.5 * x[:, 0] + (0.2 + 0.3 * x[:, 0]) * rng.standard_normal(n)  # heteroscedastic
    return x.astype(np.float32), y.astype(np.float32)


def make_quantile_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(1, 32), nn.GELU(), nn.Linear(32, 3))


def pinball(torch, pred, y, taus):
    diff = y.unsqueeze(-1) - pred
    return torch.maximum(taus * diff, (taus - 1) * diff).mean()


def quantile_regression(m, weights):
    torch, nn, optim, data = m.torch, m.nn, m.optim, m.data
    x, y = (torch.from_numpy(a) for a in quantile_data())
    taus = torch.tensor([0.1, 0.5, 0.9])
    model = load(m, make_quantile_net(m), weights)
    optimizer = optim.AdamW(model.parameters(), lr=1e-2)
    loader = data.DataLoader(data.TensorDataset(x, y), batch_size=50, shuffle=True,
                             generator=torch.Generator().manual_seed(0))
    losses = []
    for epoch in range(15):
        for xb, yb in loader:
            pred = model(xb)
            crossing = torch.relu(pred[:, :-1] - pred[:, 1:]).sum(-1).mean()
            loss = pinball(torch, pred, yb, taus) + 10.0 * crossing
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    # a linear quantile regression too, with the check function written by hand (x = tau - 1{u<0}); in
    # float64, as float32's last bit decides which residuals sit on the kink and the runs part after ~200 steps
    x64, y64, taus64 = x.double(), y.double(), taus.double()
    w = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    X = torch.cat([torch.ones_like(x64), x64], 1)
    opt = optim.Adam([w], lr=0.05)
    for step in range(300):
        u = y64.unsqueeze(-1) - X @ w
        loss = (u * (taus64 - (u < 0).double())).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(x)
        coverage = ((y.unsqueeze(-1) <= pred).float().mean(0))
        lin_coverage = ((y64.unsqueeze(-1) <= X @ w).double().mean(0))
    return {"losses": losses, "pred": pred, "coverage": coverage, "w": w.detach(), "lin_coverage": lin_coverage}


def test_quantile_regression():
    weights = weights_of(make_quantile_net)
    ours, _ = run_both(quantile_regression, weights, rtol=2e-4, atol=2e-4)
    assert np.mean(ours["losses"][-4:]) < np.mean(ours["losses"][:4])
    np.testing.assert_allclose(ours["lin_coverage"], [0.1, 0.5, 0.9], atol=0.05)
    assert ours["w"][1, 2] > ours["w"][1, 0]  # the spread grows with x
    assert np.mean(ours["pred"][:, 0] <= ours["pred"][:, 2]) == 1.0


# ----------------------------------------------------------------------------------------------
# Ordinal regression: cumulative logit with ordered cutpoints
# ----------------------------------------------------------------------------------------------


def ordinal_data(n=150, seed=6):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    latent = X @ np.array([1.0, -0.7]) + rng.logistic(size=n)
    y = np.digitize(latent, [-1.0, 0.2, 1.5])
    return X, y


def ordinal(m):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    X, y = (torch.from_numpy(a) for a in ordinal_data())
    K = 4

    class CumulativeLogit(nn.Module):
        def __init__(self, p, K):
            super().__init__()
            self.beta = nn.Parameter(torch.zeros(p, dtype=torch.float64))
            self.first = nn.Parameter(torch.tensor([-1.0], dtype=torch.float64))
            self.log_gaps = nn.Parameter(torch.zeros(K - 2, dtype=torch.float64))

        def cutpoints(self):
            return torch.cumsum(torch.cat([self.first, F.softplus(self.log_gaps)]), dim=0)

        def forward(self, x):
            eta = x @ self.beta
            cdf = torch.sigmoid(self.cutpoints() - eta.unsqueeze(-1))
            cdf = F.pad(cdf, (1, 1), value=0.0)
            cdf[:, -1] = 1.0
            return torch.diff(cdf, dim=-1)

    model = CumulativeLogit(X.shape[1], K)
    optimizer = optim.LBFGS(model.parameters(), lr=1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        probs = model(X)
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    params = torch.cat([model.beta, model.cutpoints()]).detach()

    def loglik_per_obs(theta):
        beta, cuts = theta[:2], theta[2:]
        cdf = torch.sigmoid(cuts - (X @ beta).unsqueeze(-1))
        upper = torch.cat([cdf, torch.ones_like(cdf[:, :1])], 1).gather(1, y[:, None])
        lower = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], 1).gather(1, y[:, None])
        return (upper - lower).log().squeeze(1)

    nll_of = lambda theta: -loglik_per_obs(theta).sum()
    H = torch.autograd.functional.hessian(nll_of, params)
    bread = torch.linalg.inv(H)
    se = bread.diagonal().sqrt()
    scores = torch.autograd.functional.jacobian(loglik_per_obs, params)  # n x p: each observation's score
    sandwich = bread @ (scores.T @ scores) @ bread  # Huber-White robust covariance
    probs = model(X)
    return {"params": params, "se": se, "robust_se": sandwich.diagonal().sqrt(), "nll": nll_of(params),
            "score": scores.sum(0), "scores": scores,
            "pred": probs.argmax(-1), "probs": probs.detach()[:5]}


def test_ordinal_regression():
    ours, _ = run_both(ordinal, rtol=1e-6, atol=1e-8)
    X, y = ordinal_data()
    beta, cuts = ours["params"][:2], ours["params"][2:]
    assert np.all(np.diff(cuts) > 0)
    F = lambda z: 1 / (1 + np.exp(-z))
    c = np.concatenate([[-np.inf], cuts, [np.inf]])
    eta = X @ beta
    p = F(c[y + 1] - eta) - F(c[y] - eta)
    assert ours["nll"] == pytest.approx(-np.log(p).sum(), rel=1e-10)
    np.testing.assert_allclose(ours["score"], 0, atol=1e-3)
    np.testing.assert_allclose(ours["probs"].sum(-1), 1, rtol=1e-12)
    # each observation's score in beta by hand: x (f(c_y - eta) - f(c_{y+1} - eta)) / p, f the logistic density
    f = lambda z: np.where(np.isinf(z), 0.0, F(z) * (1 - F(z)))
    np.testing.assert_allclose(ours["scores"][:, :2], X * ((f(c[y] - eta) - f(c[y + 1] - eta)) / p)[:, None],
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["robust_se"], ours["se"], rtol=0.3)  # the model is right: both agree
    assert 0.6 < beta[0] < 1.6 and -1.2 < beta[1] < -0.3
    assert np.all(ours["se"] > 0) and np.all(ours["se"] < 0.5)


# ----------------------------------------------------------------------------------------------
# Linear mixed model (random intercepts) by REML
# ----------------------------------------------------------------------------------------------


def lmm_data(groups=8, per=6, seed=7):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), per)
    x = rng.standard_normal(groups * per)
    u = 0.8 * rng.standard_normal(groups)
    y = 1.0 + 0.5 * x + u[g] + 0.5 * rng.standard_normal(groups * per)
    return np.column_stack([np.ones_like(x), x]), y, g


def reml(m):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    X, y, g = (torch.from_numpy(a) for a in lmm_data())
    Z = F.one_hot(g).to(X.dtype)
    n, p = X.shape

    class RandomIntercept(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_sigma_u = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
            self.log_sigma_e = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))

        def V(self):
            return (2 * self.log_sigma_u).exp() * Z @ Z.T + (2 * self.log_sigma_e).exp() * torch.eye(n, dtype=X.dtype)

        def gls(self):
            L = torch.linalg.cholesky(self.V())
            Vinv_X = torch.cholesky_solve(X, L)
            XtVinvX = X.T @ Vinv_X
            beta = torch.linalg.solve(XtVinvX, Vinv_X.T @ y)
            return L, XtVinvX, beta

        def forward(self):
            L, XtVinvX, beta = self.gls()
            r = y - X @ beta
            quad = r @ torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
            logdet_V = 2 * L.diagonal().log().sum()
            return 0.5 * (logdet_V + torch.logdet(XtVinvX) + quad + (n - p) * math.log(2 * math.pi))

    model = RandomIntercept()
    optimizer = optim.LBFGS(model.parameters(), lr=1, max_iter=100, tolerance_grad=1e-10,
                            line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = model()
        loss.backward()
        return loss

    optimizer.step(closure)
    loss = model()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        L, XtVinvX, beta = model.gls()
        se_beta = torch.linalg.inv(XtVinvX).diagonal().sqrt()
        # BLUPs of the random intercepts: sigma_u^2 Z^T V^{-1} (y - X beta)
        blup = (2 * model.log_sigma_u).exp() * Z.T @ torch.cholesky_solve((y - X @ beta).unsqueeze(-1), L).squeeze(-1)
        icc = model.log_sigma_u.exp() ** 2 / (model.log_sigma_u.exp() ** 2 + model.log_sigma_e.exp() ** 2)
    return {"sigmas": torch.stack([model.log_sigma_u, model.log_sigma_e]).detach().exp(), "reml": loss.detach(),
            "grads": grads, "beta": beta, "se_beta": se_beta, "blup": blup, "icc": icc}


def test_linear_mixed_model_reml():
    ours, _ = run_both(reml, rtol=1e-6, atol=1e-8)
    X, y, g = lmm_data()
    su, se = ours["sigmas"]
    Z = np.eye(8)[g]
    V = su ** 2 * Z @ Z.T + se ** 2 * np.eye(len(y))
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    by_hand = 0.5 * (np.linalg.slogdet(V)[1] + np.linalg.slogdet(X.T @ Vi @ X)[1] + r @ Vi @ r
                  + (len(y) - 2) * np.log(2 * np.pi))
    assert ours["reml"] == pytest.approx(by_hand, rel=1e-10)
    np.testing.assert_allclose(ours["beta"], beta, rtol=1e-9)
    assert max(abs(float(d)) for d in ours["grads"]) < 1e-3
    # balanced one-way design: REML's variances are ANOVA's (when positive)
    groups = y - X[:, 1] * beta[1]
    means = np.array([groups[g == k].mean() for k in range(8)])
    msw = sum(((groups[g == k] - means[k]) ** 2).sum() for k in range(8)) / (len(y) - 8)
    assert se ** 2 == pytest.approx(msw, rel=0.1)
    np.testing.assert_allclose(ours["blup"], su ** 2 * Z.T @ Vi @ r, rtol=1e-8, atol=1e-10)
    assert 0 < ours["icc"] < 1


# ----------------------------------------------------------------------------------------------
# Item response theory: the two-parameter logistic model
# ----------------------------------------------------------------------------------------------


def irt_data(persons=100, items=10, seed=8):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(persons)
    a = rng.uniform(0.5, 2.0, items)
    b = rng.normal(0, 1, items)
    p = 1 / (1 + np.exp(-a * (theta[:, None] - b)))
    responses = (rng.uniform(size=p.shape) < p).astype(np.float64)
    mask = rng.uniform(size=p.shape) < 0.9  # some items not administered
    return responses, mask, a, b


def irt_2pl(m):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    D = torch.distributions
    responses, mask, _, _ = irt_data()
    responses, mask = torch.from_numpy(responses), torch.from_numpy(mask)
    persons, items = responses.shape

    class TwoPL(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Embedding(persons, 1)
            self.log_a = nn.Parameter(torch.zeros(items))
            self.b = nn.Parameter(torch.zeros(items))
            nn.init.zeros_(self.theta.weight)

        def forward(self, person):
            theta = self.theta(person)  # (P, 1)
            return self.log_a.exp() * (theta - self.b)

    # float64: Adam divides each person's gradient by its own running size, so float32's last bits in a
    # gradient near zero move that person's theta by 1e-4 (the runs agree to 1e-10 in float64)
    model = TwoPL().double()
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    prior = D.Normal(0.0, 1.0)
    everyone = torch.arange(persons)
    for step in range(150):
        logits = model(everyone)
        ll = -F.binary_cross_entropy_with_logits(logits, responses, reduction="none")
        ll = (ll * mask).sum()
        log_prior = prior.log_prob(model.theta.weight).sum() + D.LogNormal(0.0, 0.5).log_prob(model.log_a.exp()).sum()
        loss = -(ll + log_prior) / persons
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logits = model(everyone)
    bern = D.Independent(D.Bernoulli(logits=logits), 1)
    info = (model.log_a.exp() ** 2 * torch.sigmoid(logits) * torch.sigmoid(-logits)).detach()  # item information
    return {"a": model.log_a.exp().detach(), "b": model.b.detach(), "theta": model.theta.weight.detach()[:10, 0],
            "loss": loss.detach(), "logp": bern.log_prob(responses).detach()[:10], "info": info.sum(1)[:10]}


def test_item_response_2pl():
    ours, _ = run_both(irt_2pl, rtol=1e-7, atol=1e-9)
    responses, mask, a, b = irt_data()
    assert np.corrcoef(ours["b"], b)[0, 1] > 0.9
    assert np.corrcoef(ours["a"], a)[0, 1] > 0.3
    theta = ours["theta"]
    logits = ours["a"] * (theta[:, None] - ours["b"])
    logp = (responses[:10] * logits - np.logaddexp(0, logits)).sum(1)
    np.testing.assert_allclose(ours["logp"], logp, rtol=1e-10)


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
# Robust regression: Huber by gradient descent, Tukey's biweight by IRLS with a MAD scale
# ----------------------------------------------------------------------------------------------


def robust_data(n=80, seed=11):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    y = 1.0 + 2.0 * x + 0.3 * rng.standard_normal(n)
    y[:8] += rng.uniform(5, 10, 8)  # gross outliers
    return x, y


def robust(m):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    x, y = (torch.from_numpy(a) for a in robust_data())
    X = torch.stack([torch.ones_like(x), x], 1)
    # Huber's M-estimator, the loss from nn.HuberLoss, fitted by L-BFGS
    huber = nn.HuberLoss(delta=0.5, reduction="sum")
    w_huber = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = optim.LBFGS([w_huber], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = huber(X @ w_huber, y)
        loss.backward()
        return loss

    opt.step(closure)
    smooth_l1 = F.smooth_l1_loss(X @ w_huber, y, beta=0.5, reduction="sum") * 0.5
    # Tukey's biweight by IRLS, starting from least squares
    beta = torch.linalg.lstsq(X, y.unsqueeze(-1)).solution.squeeze(-1)
    c = 4.685
    history = []
    for it in range(30):
        r = y - X @ beta
        mad = (r - r.median()).abs().median() / 0.6745
        u = r / (c * mad)
        weights = torch.where(u.abs() < 1, (1 - u ** 2) ** 2, torch.zeros_like(u))
        W = torch.diag(weights)
        beta = torch.linalg.solve(X.T @ W @ X, X.T @ W @ y)
        history.append(beta)
    # Tukey's rho is not convex; its gradient at the IRLS solution is zero all the same
    b = beta.clone().requires_grad_(True)
    r = y - X @ b
    u = r / (c * mad)
    rho = torch.where(u.abs() < 1, (c * mad) ** 2 / 6 * (1 - (1 - u ** 2) ** 3),
                      torch.full_like(u, 1.0) * (c * mad) ** 2 / 6)
    (grad,) = torch.autograd.grad(rho.sum(), b)
    return {"huber": w_huber.detach(), "huber_loss": closure().detach(), "smooth_l1": smooth_l1.detach(),
            "tukey": beta, "weights": weights, "grad": grad, "ols": history[0]}


def test_robust_regression():
    ours, _ = run_both(robust, rtol=1e-7, atol=1e-9)
    x, y = robust_data()
    X = np.column_stack([np.ones_like(x), x])
    r = y - X @ ours["huber"]
    psi = np.clip(r, -0.5, 0.5)
    np.testing.assert_allclose(X.T @ psi, 0, atol=1e-4)  # Huber's estimating equations
    assert ours["huber_loss"] == pytest.approx(ours["smooth_l1"], rel=1e-12)  # huber = beta * smooth_l1
    np.testing.assert_allclose(ours["tukey"], [1.0, 2.0], atol=0.15)
    assert np.all(ours["weights"][:8] < 0.05)  # the outliers are down-weighted to nothing
    np.testing.assert_allclose(ours["grad"], 0, atol=1e-6)
    assert abs(ours["huber"][0] - 1.0) < abs(np.linalg.lstsq(X, y, rcond=None)[0][0] - 1.0)


# ----------------------------------------------------------------------------------------------
# Calibration: temperature scaling and Platt scaling by L-BFGS, the expected calibration error
# ----------------------------------------------------------------------------------------------


def calibration_data(n=300, classes=4, seed=12):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.standard_normal((n, classes)) + 1.5 * np.eye(classes)[labels]
    return (3.0 * logits).astype(np.float32), labels  # overconfident


def ece(torch, confidence, correct, bins=10):
    edges = torch.linspace(0, 1, bins + 1)
    which = torch.bucketize(confidence, edges[1:-1])
    count = torch.bincount(which, minlength=bins).float()
    conf_sum = torch.zeros(bins).index_add_(0, which, confidence)
    acc_sum = torch.zeros(bins).scatter_add_(0, which, correct.float())
    gap = (acc_sum - conf_sum).abs()
    return gap.sum() / len(confidence), count


def calibration(m):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    logits, labels = (torch.from_numpy(a) for a in calibration_data())

    class TemperatureScaler(nn.Module):
        def __init__(self):
            super().__init__()
            self.temperature = nn.Parameter(torch.ones(1) * 1.5)

        def forward(self, logits):
            return logits / self.temperature.unsqueeze(1).expand(logits.size(0), logits.size(1))

    scaler = TemperatureScaler()
    nll_criterion = nn.CrossEntropyLoss()
    before = nll_criterion(logits, labels).item()
    optimizer = optim.LBFGS([scaler.temperature], lr=0.01, max_iter=50)

    def closure():
        optimizer.zero_grad()
        loss = nll_criterion(scaler(logits), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    after = nll_criterion(scaler(logits), labels).item()
    probs = F.softmax(scaler(logits), dim=1)
    confidence, prediction = probs.max(1)
    ece_after, counts = ece(torch, confidence.detach(), prediction == labels)
    conf0, pred0 = F.softmax(logits, 1).max(1)
    ece_before, _ = ece(torch, conf0, pred0 == labels)
    # Platt scaling of a binary score (class 0 against the rest): sigmoid(a s + b). In float64: in float32
    # the loss's last bit decides whether L-BFGS's tolerance_change stops it at the 9th evaluation or later
    score = (logits[:, 0] - torch.logsumexp(logits[:, 1:], 1)).double()
    target = (labels == 0).double()
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    platt = optim.LBFGS([ab], lr=1, max_iter=100, line_search_fn="strong_wolfe")

    def platt_closure():
        platt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(ab[0] * score + ab[1], target)
        loss.backward()
        return loss

    platt.step(platt_closure)
    return {"T": scaler.temperature.detach(), "before": before, "after": after, "ece": [ece_before, ece_after],
            "counts": counts, "platt": ab.detach(), "platt_loss": platt_closure().detach()}


def test_temperature_and_platt_scaling():
    ours, _ = run_both(calibration, rtol=1e-4, atol=1e-5)
    assert ours["T"][0] > 1.5  # the logits were overconfident
    assert ours["after"] < ours["before"]
    assert ours["ece"][1] < ours["ece"][0]
    assert ours["counts"].sum() == 300
    assert 0 < ours["platt"][0] < 1  # Platt shrinks the overconfident score too
    logits, labels = calibration_data()
    z = logits / ours["T"][0]
    z = z - z.max(1, keepdims=True)
    nll = -(z[np.arange(300), labels] - np.log(np.exp(z).sum(1))).mean()
    assert ours["after"] == pytest.approx(nll, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Tobit (left-censored normal) regression and probit, with the delta method
# ----------------------------------------------------------------------------------------------


def tobit_data(n=150, seed=13):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.standard_normal((n, 2))])
    latent = X @ np.array([0.5, 1.0, -0.5]) + 0.8 * rng.standard_normal(n)
    return X, np.maximum(latent, 0.0)


def tobit(m):
    torch, optim = m.torch, m.optim
    special = torch.special
    X, y = (torch.from_numpy(a) for a in tobit_data())
    censored = y <= 0

    def nll(theta):
        beta, log_sigma = theta[:-1], theta[-1]
        sigma = log_sigma.exp()
        mu = X @ beta
        observed = torch.distributions.Normal(mu, sigma).log_prob(y)
        at_zero = special.log_ndtr(-mu / sigma)  # log P(latent <= 0)
        return -torch.where(censored, at_zero, observed).sum()

    theta = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    optimizer = optim.LBFGS([theta], lr=1, max_iter=100, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nll(theta) / len(y)
        loss.backward()
        return loss

    optimizer.step(closure)
    theta_hat = theta.detach()
    cov = torch.linalg.inv(torch.autograd.functional.hessian(nll, theta_hat))

    # the delta method: the average marginal effect of x1 on E[y], Phi(mu / sigma) * beta_1, averaged
    def marginal_effect(theta):
        beta, sigma = theta[:-1], theta[-1].exp()
        return (special.ndtr(X @ beta / sigma) * beta[1]).mean()

    J = torch.autograd.functional.jacobian(marginal_effect, theta_hat)
    me_se = torch.sqrt(J @ cov @ J)

    # a probit of (y > 0) on the same data: identifies beta / sigma
    gamma = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    probit = optim.LBFGS([gamma], lr=1, max_iter=100, tolerance_grad=1e-10, line_search_fn="strong_wolfe")
    d = (~censored).double()

    def probit_closure():
        probit.zero_grad()
        eta = X @ gamma
        loss = -(d * special.log_ndtr(eta) + (1 - d) * special.log_ndtr(-eta)).mean()
        loss.backward()
        return loss

    probit.step(probit_closure)
    return {"theta": theta_hat, "se": cov.diagonal().sqrt(), "nll": nll(theta_hat), "me": marginal_effect(theta_hat),
            "me_se": me_se, "J": J, "probit": gamma.detach(),
            "quantile": special.ndtri(torch.tensor([0.025, 0.5, 0.975], dtype=torch.float64))}


def test_tobit_probit_delta_method():
    ours, _ = run_both(tobit, rtol=1e-6, atol=1e-8)
    from math import erfc, log, sqrt
    X, y = tobit_data()
    beta, sigma = ours["theta"][:3], np.exp(ours["theta"][3])
    mu = X @ beta
    Phi = lambda z: 0.5 * erfc(-z / sqrt(2))
    ll = sum(log(Phi(-m / sigma)) if v <= 0 else -0.5 * ((v - m) / sigma) ** 2 - log(sigma) - 0.5 * log(2 * np.pi)
             for m, v in zip(mu, y))
    assert ours["nll"] == pytest.approx(-ll, rel=1e-10)
    assert 0.6 < sigma < 1.0 and 0.8 < beta[1] < 1.2
    Phis = np.array([Phi(m / sigma) for m in mu])
    assert ours["me"] == pytest.approx((Phis * beta[1]).mean(), rel=1e-10)
    phis = np.exp(-0.5 * (mu / sigma) ** 2) / np.sqrt(2 * np.pi)
    assert ours["J"][2] == pytest.approx((phis * X[:, 2] / sigma * beta[1]).mean(), rel=1e-8)
    np.testing.assert_allclose(ours["probit"], beta / sigma, atol=0.25)
    np.testing.assert_allclose(ours["quantile"], [-1.959963984540054, 0.0, 1.959963984540054], atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Conditional logistic regression for 1:M matched case-control sets
# ----------------------------------------------------------------------------------------------


def matched_data(strata=30, per=4, seed=14):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((strata * per, 2))
    stratum = np.repeat(np.arange(strata), per)
    score = X @ np.array([1.0, -0.5]) + rng.gumbel(size=len(X))
    case = np.zeros(len(X))
    for s in range(strata):
        rows = np.flatnonzero(stratum == s)
        case[rows[np.argmax(score[rows])]] = 1.0
    return X, stratum, case


def conditional_logistic(m):
    torch, optim = m.torch, m.optim
    X, stratum, case = (torch.from_numpy(a) for a in matched_data())
    S = int(stratum.max()) + 1

    def nll(beta):
        eta = X @ beta
        # log sum_j exp(eta_j) within each stratum, stabilised by the stratum's max
        top = torch.full((S,), -math.inf, dtype=eta.dtype).scatter_reduce(0, stratum, eta, reduce="amax")
        sums = torch.zeros(S, dtype=eta.dtype).index_add(0, stratum, (eta - top[stratum]).exp())
        log_denominator = top + sums.log()
        return -(eta[case.bool()] - log_denominator).sum()

    beta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = optim.LBFGS([beta], max_iter=100, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nll(beta)
        loss.backward()
        return loss

    optimizer.step(closure)
    H = torch.autograd.functional.hessian(nll, beta.detach())
    # the same likelihood as a softmax over each (equal-sized) stratum
    logits = (X @ beta).view(S, -1)
    by_softmax = torch.nn.functional.cross_entropy(logits, case.view(S, -1).argmax(1), reduction="sum")
    grad = torch.autograd.grad(by_softmax, beta)[0]
    return {"beta": beta.detach(), "se": torch.linalg.inv(H).diagonal().sqrt(), "nll": nll(beta.detach()),
            "by_softmax": by_softmax.detach(), "grad": grad}


def test_conditional_logistic_regression():
    ours, _ = run_both(conditional_logistic, rtol=1e-7, atol=1e-9)
    X, stratum, case = matched_data()
    eta = X @ ours["beta"]
    ll = sum(eta[(stratum == s) & (case == 1)][0] - np.log(np.exp(eta[stratum == s]).sum()) for s in range(30))
    assert ours["nll"] == pytest.approx(-ll, rel=1e-12)
    assert ours["by_softmax"] == pytest.approx(-ll, rel=1e-12)
    np.testing.assert_allclose(ours["grad"], 0, atol=1e-4)
    assert ours["beta"][0] > 0 > ours["beta"][1]


# ----------------------------------------------------------------------------------------------
# Beta regression (a logit mean and a precision), standard errors by torch.func.hessian
# ----------------------------------------------------------------------------------------------


def beta_data(n=120, seed=15):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    mu = 1 / (1 + np.exp(-(X @ np.array([-0.5, 0.8]))))
    phi = 12.0
    return X, rng.beta(mu * phi, (1 - mu) * phi)


def beta_regression(m):
    torch, optim = m.torch, m.optim
    from_func = torch.func
    X, y = (torch.from_numpy(a) for a in beta_data())

    def nll(theta):
        mu = torch.sigmoid(X @ theta[:2])
        phi = theta[2].exp()
        return -torch.distributions.Beta(mu * phi, (1 - mu) * phi).log_prob(y).sum()

    theta = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    optimizer = optim.LBFGS([theta], max_iter=100, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nll(theta) / len(y)
        loss.backward()
        return loss

    optimizer.step(closure)
    theta_hat = theta.detach()
    H = from_func.hessian(nll)(theta_hat)
    loss, g = from_func.grad_and_value(nll)(theta_hat)[::-1]

    # per-observation scores by vmap(grad) for the robust (sandwich) covariance
    def nll_one(theta, x, y):
        mu = torch.sigmoid(x @ theta[:2])
        phi = theta[2].exp()
        a, b = mu * phi, (1 - mu) * phi
        return -((a - 1) * torch.log(y) + (b - 1) * torch.log1p(-y) - (torch.lgamma(a) + torch.lgamma(b)
                                                                        - torch.lgamma(a + b)))

    scores = from_func.vmap(from_func.grad(nll_one), in_dims=(None, 0, 0))(theta_hat, X, y)
    bread = torch.linalg.inv(H)
    sandwich = bread @ scores.T @ scores @ bread
    return {"theta": theta_hat, "H": H, "loss": loss, "grad": g, "scores": scores,
            "se": bread.diagonal().sqrt(), "robust_se": sandwich.diagonal().sqrt()}


def test_beta_regression():
    ours, _ = run_both(beta_regression, rtol=1e-6, atol=1e-8)
    from math import lgamma
    X, y = beta_data()
    t = ours["theta"]

    def nll(t):
        mu = 1 / (1 + np.exp(-(X @ t[:2])))
        a, b = mu * np.exp(t[2]), (1 - mu) * np.exp(t[2])
        return -sum((ai - 1) * np.log(v) + (bi - 1) * np.log1p(-v) - lgamma(ai) - lgamma(bi) + lgamma(ai + bi)
                    for ai, bi, v in zip(a, b, y))

    assert ours["loss"] == pytest.approx(nll(t), rel=1e-12)
    # the Hessian and the scores against central differences of the likelihood by hand
    h = 1e-4
    E = np.eye(3) * h
    fd_grad = np.array([(nll(t + E[i]) - nll(t - E[i])) / (2 * h) for i in range(3)])
    np.testing.assert_allclose(ours["grad"], fd_grad, atol=1e-6)
    fd_H = np.array([[(nll(t + E[i] + E[j]) - nll(t + E[i] - E[j]) - nll(t - E[i] + E[j]) + nll(t - E[i] - E[j]))
                      / (4 * h * h) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(ours["H"], fd_H, rtol=1e-4)
    np.testing.assert_allclose(ours["scores"].sum(0), ours["grad"], atol=1e-9)
    assert np.exp(t[2]) == pytest.approx(12.0, rel=0.35)
    np.testing.assert_allclose(ours["robust_se"], ours["se"], rtol=0.35)


# ----------------------------------------------------------------------------------------------
# Cox with Efron's ties, and the restricted mean survival time by the trapezoid rule
# ----------------------------------------------------------------------------------------------


def cox_efron_nll(torch, eta, time, event):
    """Efron's partial likelihood: the d tied events at a time share the risk set, whose tied part is
    removed a fraction (l / d) at a time, l = 0, ..., d - 1."""
    times, inverse = torch.unique(time, return_inverse=True)
    T = len(times)
    w = eta.exp()
    # the risk-set sum at each distinct time: all with time >= t (a reversed cumulative sum)
    at_time = torch.zeros(T, dtype=eta.dtype).index_add_(0, inverse, w)
    risk = at_time.flip(0).cumsum(0).flip(0)
    tied = torch.zeros(T, dtype=eta.dtype).index_add_(0, inverse, w * event)
    d = torch.bincount(inverse, weights=event, minlength=T)
    eta_events = torch.zeros(T, dtype=eta.dtype).index_add_(0, inverse, eta * event)
    L = int(d.max().item())
    l = torch.arange(L, dtype=eta.dtype)
    active = l < d.unsqueeze(1)  # T x L
    # inactive fractions are zeroed before the log (not only masked after), as log(0)'s gradient is 0/0
    frac = torch.where(active, l / d.clamp_min(1).unsqueeze(1), torch.zeros(()).double())
    terms = torch.log(risk.unsqueeze(1) - frac * tied.unsqueeze(1))
    return -(eta_events - torch.where(active, terms, torch.zeros_like(terms)).sum(1)).sum()


def cox_efron(m):
    torch, optim = m.torch, m.optim
    X, time, event = (torch.from_numpy(a) for a in survival_data(n=80, seed=16))
    beta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = optim.LBFGS([beta], max_iter=100, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = cox_efron_nll(torch, X @ beta, time, event) / event.sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    b = beta.detach()
    H = torch.autograd.functional.hessian(lambda b: cox_efron_nll(torch, X @ b, time, event), b)
    breslow = cox_breslow_nll(torch, X @ b, time, event) * event.sum()
    # the Breslow baseline cumulative hazard, the survival of a profile, and its restricted mean to t = 2
    times, inverse = torch.unique(time, return_inverse=True)
    w = (X @ b).exp()
    risk = torch.zeros_like(times).index_add_(0, inverse, w).flip(0).cumsum(0).flip(0)
    deaths = torch.zeros_like(times).index_add_(0, inverse, event)
    H0 = torch.cumsum(deaths / risk, 0)
    profile = torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64)
    S = torch.exp(-H0 * torch.exp(profile @ b))
    grid = torch.linspace(0, 2, 201, dtype=torch.float64)
    step = torch.searchsorted(times, grid, right=True) - 1
    S_grid = torch.where(step >= 0, S[step.clamp_min(0)], torch.ones_like(grid))
    rmst = torch.trapezoid(S_grid, grid)
    return {"beta": b, "se": torch.linalg.inv(H).diagonal().sqrt(), "efron": cox_efron_nll(torch, X @ b, time, event),
            "breslow": breslow, "H0": H0, "rmst": rmst, "S_grid": S_grid[::20]}


def efron_loglik_numpy(X, time, event, beta):
    eta = X @ beta
    ll = 0.0
    for t in np.unique(time[event == 1]):
        ev = (time == t) & (event == 1)
        d = ev.sum()
        risk = np.exp(eta[time >= t]).sum()
        tied = np.exp(eta[ev]).sum()
        ll += eta[ev].sum() - sum(np.log(risk - l / d * tied) for l in range(d))
    return ll


def test_cox_efron_ties_and_rmst():
    ours, _ = run_both(cox_efron, rtol=1e-7, atol=1e-9)
    X, time, event = survival_data(n=80, seed=16)
    counts = np.unique(time[event == 1], return_counts=True)[1]
    assert counts.max() >= 3  # ties of three or more
    assert ours["efron"] == pytest.approx(-efron_loglik_numpy(X, time, event, ours["beta"]), rel=1e-12)
    assert ours["breslow"] == pytest.approx(-breslow_loglik_numpy(X, time, event, ours["beta"]), rel=1e-12)
    assert ours["breslow"] > ours["efron"]  # Breslow's larger risk sets lower the likelihood
    assert np.all(np.diff(ours["S_grid"]) <= 0) and ours["S_grid"][0] == 1.0
    # the trapezoid rule over a step function on a fine grid: close to the exact area under the steps
    t = np.unique(time)
    H0 = ours["H0"]
    S = np.exp(-H0 * np.exp(np.array([0.5, 0.0, -0.5]) @ ours["beta"]))
    knots = np.concatenate([[0.0], t[t < 2], [2.0]])
    values = np.concatenate([[1.0], S[t < 2]])
    assert ours["rmst"] == pytest.approx((np.diff(knots) * values).sum(), abs=0.01)


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


# ----------------------------------------------------------------------------------------------
# Discrete-time survival (a logistic-hazard network) and the piecewise-exponential model as a Poisson GLM
# ----------------------------------------------------------------------------------------------

CUTS = np.array([0.0, 0.2, 0.5, 1.0, 2.0, np.inf])


def make_hazard_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.LayerNorm(16), nn.Linear(16, len(CUTS) - 1))


def discrete_survival(m, weights):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    X, time, event = (torch.from_numpy(a) for a in survival_data(n=100, seed=19, ties=False))
    cuts = torch.from_numpy(CUTS)
    interval = torch.bucketize(time, cuts[1:-1], right=True)  # the interval each time falls in
    K = len(CUTS) - 1
    # person-period targets: survived every earlier interval, event (or not) in the last
    k = torch.arange(K)
    at_risk = (k <= interval.unsqueeze(1)).double()
    target = ((k == interval.unsqueeze(1)) & (event.unsqueeze(1) == 1)).double()
    model = load(m, make_hazard_net(m), weights).double()
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for epoch in range(60):
        logits = model(X)
        loss = F.binary_cross_entropy_with_logits(logits, target, weight=at_risk, reduction="sum") / at_risk.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        hazard = torch.sigmoid(model(X[:4]))
        survival = torch.cumprod(1 - hazard, dim=1)
    # piecewise exponential: events ~ Poisson(exposure * exp(alpha_k + x beta)), one row per person-interval
    lower, upper = cuts[:-1], cuts[1:]
    exposure = (torch.minimum(time.unsqueeze(1), upper) - lower).clamp_min(0) * at_risk
    keep = exposure > 0
    rows, ks = keep.nonzero(as_tuple=True)
    design = torch.cat([F.one_hot(ks, K).double(), X[rows]], 1)
    offset = exposure[keep].log()
    y = target[keep]
    theta = torch.zeros(K + 3, dtype=torch.float64, requires_grad=True)
    poisson = nn.PoissonNLLLoss(log_input=True, full=True, reduction="sum")
    lbfgs = optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = poisson(design @ theta + offset, y)
        loss.backward()
        return loss

    lbfgs.step(closure)
    return {"losses": losses, "survival": survival, "theta": theta.detach(), "pe_loss": closure().detach(),
            "rows": len(rows), "offset": offset}


def test_discrete_time_and_piecewise_exponential():
    weights = weights_of(make_hazard_net)
    ours, _ = run_both(discrete_survival, weights, rtol=1e-6, atol=1e-8)
    assert ours["losses"][-1] < ours["losses"][0]
    assert np.all(np.diff(ours["survival"], axis=1) <= 0)
    # the piecewise-exponential likelihood equals the exponential-hazard likelihood with censoring
    X, time, event = survival_data(n=100, seed=19, ties=False)
    theta = ours["theta"]
    log_h = theta[:5]
    beta = theta[5:]
    ll = 0.0
    for x, t, e in zip(X, time, event):
        k = np.searchsorted(CUTS[1:-1], t, side="right")
        H = sum(np.exp(log_h[j]) * (min(t, CUTS[j + 1]) - CUTS[j]) for j in range(k + 1))
        ll += e * (log_h[k] + x @ beta) - H * np.exp(x @ beta)
    # PoissonNLLLoss(full=True) adds Stirling's term only for targets > 1 (none here), so the Poisson
    # likelihood is the survival one plus y log(exposure) of the event rows
    event_rows_log_exposure = 0.0
    for t, e in zip(time, event):
        if e:
            k = np.searchsorted(CUTS[1:-1], t, side="right")
            event_rows_log_exposure += np.log(min(t, CUTS[k + 1]) - CUTS[k])
    assert ours["pe_loss"] == pytest.approx(-ll - event_rows_log_exposure, rel=1e-10)
    np.testing.assert_allclose(beta, [0.8, -0.5, 0.3], atol=0.35)
    assert ours["rows"] == len(ours["offset"]) > 100


# ----------------------------------------------------------------------------------------------
# A penalised-spline GAM with the smoothing parameter by GCV, and a random-effects meta-analysis
# ----------------------------------------------------------------------------------------------


def gam_data(n=120, seed=20):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, n))
    return x, np.sin(2 * np.pi * x) + 0.3 * rng.standard_normal(n)


def bspline_basis(torch, x, knots, degree=3):
    """Cox-de Boor recursion on a clamped knot vector."""
    t = torch.cat([knots[:1].repeat(degree), knots, knots[-1:].repeat(degree)])
    B = ((x.unsqueeze(1) >= t[:-1]) & (x.unsqueeze(1) < t[1:])).double()
    B[x == knots[-1], len(knots) + degree - 2] = 1.0  # the right end belongs to the last interval
    for k in range(1, degree + 1):
        left_den, right_den = t[k:-1] - t[:-k - 1], t[k + 1:] - t[1:-k]
        left = torch.where(left_den > 0, (x.unsqueeze(1) - t[:-k - 1]) / left_den.clamp_min(1e-12), 0.0)
        right = torch.where(right_den > 0, (t[k + 1:] - x.unsqueeze(1)) / right_den.clamp_min(1e-12), 0.0)
        B = left * B[:, :-1] + right * B[:, 1:]
    return B


def pspline_gam(m):
    torch, optim = m.torch, m.optim
    x, y = (torch.from_numpy(a) for a in gam_data())
    knots = torch.linspace(0, 1, 12, dtype=torch.float64)
    B = bspline_basis(torch, x, knots)
    K = B.shape[1]
    Dm = torch.diff(torch.eye(K, dtype=torch.float64), n=2, dim=0)
    P = Dm.T @ Dm
    n = len(y)

    def fit(log_lambda):
        A = B.T @ B + log_lambda.exp() * P
        coef = torch.linalg.solve(A, B.T @ y)
        hat_trace = torch.trace(torch.linalg.solve(A, B.T @ B))
        rss = ((y - B @ coef) ** 2).sum()
        return coef, hat_trace, rss

    def gcv(log_lambda):
        _, edf, rss = fit(log_lambda)
        return n * rss / (n - edf) ** 2

    grid = torch.linspace(-6, 6, 25, dtype=torch.float64)
    scores = torch.stack([gcv(g) for g in grid])
    log_lambda = grid[scores.argmin()].clone().requires_grad_(True)
    optimizer = optim.LBFGS([log_lambda], max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = gcv(log_lambda)
        loss.backward()
        return loss

    optimizer.step(closure)
    coef, edf, rss = fit(log_lambda.detach())
    (dgcv,) = torch.autograd.grad(gcv(log_lambda), log_lambda)
    return {"B_rowsum": B.sum(1), "scores": scores, "log_lambda": log_lambda.detach(), "edf": edf,
            "fitted": (B @ coef)[::10], "sigma2": rss / (n - edf), "dgcv": dgcv}


def test_pspline_gam_gcv():
    ours, _ = run_both(pspline_gam, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["B_rowsum"], 1, rtol=1e-12)  # a partition of unity
    assert abs(float(ours["dgcv"])) < 1e-6
    assert 4 < ours["edf"] < 12
    x, y = gam_data()
    np.testing.assert_allclose(ours["fitted"], np.sin(2 * np.pi * x[::10]), atol=0.3)
    assert ours["sigma2"] == pytest.approx(0.09, rel=0.35)


META_EFFECTS = np.array([-0.80, 0.10, 0.40, -0.90, -0.20, -0.60, 0.30, -0.30, -1.10, 0.20])
META_VARIANCES = np.array([0.04, 0.02, 0.05, 0.08, 0.01, 0.03, 0.06, 0.02, 0.09, 0.03])


def meta_analysis(m):
    torch, optim = m.torch, m.optim
    y, v = torch.from_numpy(META_EFFECTS), torch.from_numpy(META_VARIANCES)
    k = len(y)
    # DerSimonian-Laird
    w = 1 / v
    mu_fixed = (w * y).sum() / w.sum()
    Q = (w * (y - mu_fixed) ** 2).sum()
    tau2_dl = torch.clamp((Q - (k - 1)) / (w.sum() - (w ** 2).sum() / w.sum()), min=0.0)
    # REML for tau^2 by L-BFGS on log tau^2
    log_tau2 = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)

    def neg_reml(log_tau2):
        wt = 1 / (v + log_tau2.exp())
        mu = (wt * y).sum() / wt.sum()
        return 0.5 * (-(wt.log()).sum() + wt.sum().log() + (wt * (y - mu) ** 2).sum())

    optimizer = optim.LBFGS([log_tau2], max_iter=100, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = neg_reml(log_tau2)
        loss.backward()
        return loss

    optimizer.step(closure)
    tau2 = log_tau2.detach().exp()
    wt = 1 / (v + tau2)
    mu = (wt * y).sum() / wt.sum()
    se = wt.sum().rsqrt()
    I2 = torch.clamp((Q - (k - 1)) / Q, min=0.0)
    # a profile-likelihood bound for tau^2 by bisection: where 2 (REML(t) - REML(hat)) = 3.84
    best = neg_reml(log_tau2.detach())
    with torch.no_grad():
        lo, hi = log_tau2.detach().clone(), torch.tensor(3.0, dtype=torch.float64)
        for _ in range(60):
            mid = (lo + hi) / 2
            if 2 * (neg_reml(mid) - best) < 3.841458820694124:
                lo = mid
            else:
                hi = mid
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.975, dtype=torch.float64))
    return {"tau2_dl": tau2_dl, "tau2_reml": tau2, "mu": mu, "ci": torch.stack([mu - z * se, mu + z * se]),
            "Q": Q, "I2": I2, "upper_tau2": lo.exp(), "reml": best.detach()}


def test_random_effects_meta_analysis():
    ours, _ = run_both(meta_analysis, rtol=1e-7, atol=1e-9)
    y, v = META_EFFECTS, META_VARIANCES
    w = 1 / v
    mu_f = (w * y).sum() / w.sum()
    Q = (w * (y - mu_f) ** 2).sum()
    assert ours["Q"] == pytest.approx(Q, rel=1e-12)
    assert ours["tau2_dl"] == pytest.approx(max(0.0, (Q - 9) / (w.sum() - (w ** 2).sum() / w.sum())), rel=1e-12)
    t = ours["tau2_reml"]
    wt = 1 / (v + t)
    mu = (wt * y).sum() / wt.sum()
    # the REML estimating equation: sum wt^2 ((y - mu)^2 - v - t) = -sum wt^2 / sum wt ... by its fixed point
    t_next = (wt ** 2 * ((y - mu) ** 2 - v)).sum() / (wt ** 2).sum() + 1 / wt.sum()
    assert t == pytest.approx(t_next, rel=1e-5)
    assert ours["mu"] == pytest.approx(mu, rel=1e-10)
    assert ours["I2"] == pytest.approx((Q - 9) / Q, rel=1e-12)
    assert ours["upper_tau2"] > t > ours["tau2_dl"] / 10
