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
``randint``/``multinomial``; Huber and Tukey-biweight robust regression by IRLS; temperature and Platt
scaling by L-BFGS with the expected calibration error by ``bucketize``."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

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
