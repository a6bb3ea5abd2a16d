# ruff: noqa: E731, F841  (the programs are kept as their authors wrote them)
"""Statistical-modelling programs (see tests/pytorch_programs.py), as statisticians and epidemiologists write them,
each run on chainrule and on PyTorch in float64 and checked against NumPy by hand. Generalised linear models: Poisson
with an offset, Gamma and negative-binomial regressions fitted by L-BFGS with standard errors from the inverse
observed Fisher information; a zero-inflated Poisson; Tobit and probit regression (``special.log_ndtr``, ``ndtri``)
with a delta-method standard error (``autograd.functional.jacobian``); conditional logistic regression over matched
sets (``scatter_reduce`` "amax", ``index_add``); beta regression with ``torch.func.hessian`` and per-observation
scores by ``vmap(grad)`` for a sandwich covariance; temperature and Platt scaling by L-BFGS with the expected
calibration error by ``bucketize``."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

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
