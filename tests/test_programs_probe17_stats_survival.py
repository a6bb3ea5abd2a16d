# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Statistical-modelling programs (see tests/pytorch_programs.py), as statisticians and epidemiologists write them,
each run on chainrule and on PyTorch in float64 and checked against NumPy by hand. Survival: a Cox
proportional-hazards model (Breslow partial likelihood by ``torch.logcumsumexp`` over risk sets sorted by
``argsort(descending=True)``, ties gathered with ``unique_consecutive``/``scatter_reduce``, fitted by
``optim.LBFGS(line_search_fn="strong_wolfe")``, standard errors from ``torch.autograd.functional.hessian``); Weibull
and log-logistic accelerated-failure-time models with right censoring (``distributions.Weibull``, a
``TransformedDistribution`` of a logistic); DeepSurv (an MLP risk score under the Cox loss, Harrell's concordance);
Kaplan-Meier with Greenwood's variance by hand; Cox with Efron's ties and the restricted mean survival time
(``searchsorted``, ``trapezoid``); discrete-time survival (a logistic-hazard network) and the piecewise-exponential
model (``nn.PoissonNLLLoss(full=True)`` with an offset)."""

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
