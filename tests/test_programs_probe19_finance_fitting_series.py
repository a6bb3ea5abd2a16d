# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Quantitative-finance programs, run as tests/probe19_finance_common.py says. Models fitted to data: SABR by L-BFGS
with strong Wolfe and SVI by Adam with ``ExponentialLR``; GARCH(1,1) likelihoods (softplus/sigmoid constraints, a
Python loop, Normal and ``StudentT``, a VaR by ``icdf``); a Kalman filter for a pairs trade's hedge ratio; series
operations (``unfold`` windows, ``diff``, ``nan*`` reductions, ``conv1d`` moving averages, ``log_ndtr`` deep in the
tail, ``StudentT.rsample``, ``cumprod`` through a default); a two-regime HMM (forward algorithm by ``logsumexp``), a
generalized Pareto tail, a t copula."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# SABR (Hagan's lognormal approximation) by L-BFGS with strong Wolfe, and raw SVI by Adam
# ----------------------------------------------------------------------------------------------


def sabr_vol(torch, F0, K, T, alpha, beta, rho, nu):
    logFK = torch.log(F0 / K)
    FK_beta = (F0 * K) ** ((1 - beta) / 2)
    z = nu / alpha * FK_beta * logFK
    x = torch.log((torch.sqrt(1 - 2 * rho * z + z ** 2) + z - rho) / (1 - rho))
    denom = FK_beta * (1 + (1 - beta) ** 2 / 24 * logFK ** 2 + (1 - beta) ** 4 / 1920 * logFK ** 4)
    correction = 1 + ((1 - beta) ** 2 / 24 * alpha ** 2 / FK_beta ** 2 + rho * beta * nu * alpha / (4 * FK_beta)
                      + (2 - 3 * rho ** 2) / 24 * nu ** 2) * T
    z_over_x = torch.where(torch.abs(z) < 1e-7, torch.ones_like(z), z / x)
    return alpha / denom * z_over_x * correction


def sabr_svi(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    F0, T, beta = 100.0, 1.0, 0.5
    K = torch.tensor([70.0, 80.0, 90.0, 95.0, 105.0, 110.0, 120.0, 135.0], dtype=torch.float64)
    F_ = torch.tensor(F0, dtype=torch.float64)
    market = sabr_vol(torch, F_, K, T, torch.tensor(2.5, dtype=torch.float64), beta,
                      torch.tensor(-0.3, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64))

    class SABR(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_alpha = nn.Parameter(torch.tensor(math.log(1.5), dtype=torch.float64))
            self.rho_raw = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
            self.log_nu = nn.Parameter(torch.tensor(math.log(0.3), dtype=torch.float64))

        def forward(self, K):
            return sabr_vol(torch, F_, K, T, self.log_alpha.exp(), beta, 0.999 * torch.tanh(self.rho_raw),
                            self.log_nu.exp())

    model = SABR()
    lbfgs = optim.LBFGS(model.parameters(), lr=1.0, max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-14,
                        history_size=10, line_search_fn="strong_wolfe")
    evaluations = []

    def closure():
        lbfgs.zero_grad()
        loss = ((model(K) - market) ** 2).sum() * 1e4
        loss.backward()
        evaluations.append(loss.item())
        return loss

    final = lbfgs.step(closure)
    state = lbfgs.state[lbfgs._params[0]]
    sabr_fit = torch.stack([model.log_alpha.exp(), torch.tanh(model.rho_raw) * 0.999, model.log_nu.exp()]).detach()

    # raw SVI total variance w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2)) by Adam
    k = torch.log(K / F0)
    w_market = market.detach() ** 2 * T
    params = torch.tensor([0.01, -2.0, 0.0, 0.0, -2.0], dtype=torch.float64, requires_grad=True)
    adam = optim.Adam([params], lr=0.05)
    sched = optim.lr_scheduler.ExponentialLR(adam, gamma=0.995)
    svi_losses = []
    for step in range(150):
        a, log_b, rho_raw, m_, log_s = params
        b, rho, s = torch.nn.functional.softplus(log_b), torch.tanh(rho_raw), log_s.exp()
        w = a + b * (rho * (k - m_) + torch.sqrt((k - m_) ** 2 + s ** 2))
        loss = torch.mean((w - w_market) ** 2) * 1e4
        adam.zero_grad()
        loss.backward()
        adam.step()
        sched.step()
        svi_losses.append(loss.detach())
    return dict(evaluations=evaluations, final=final, sabr_fit=sabr_fit, n_iter=state["n_iter"],
                func_evals=state["func_evals"], svi_losses=torch.stack(svi_losses), svi=params.detach(),
                market=market)


def test_sabr_lbfgs_and_svi_adam():
    ours, _ = run_both(sabr_svi, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours["sabr_fit"], [2.5, -0.3, 0.6], rtol=1e-5)
    assert ours["evaluations"][-1] < 1e-12
    assert ours["svi_losses"][-1] < 0.05 * ours["svi_losses"][0]


# ----------------------------------------------------------------------------------------------
# GARCH(1,1) by maximum likelihood: softplus / sigmoid reparametrisations, a Python loop over time,
# Normal and StudentT innovations, L-BFGS then Adam
# ----------------------------------------------------------------------------------------------


def garch_returns(n=250, omega=0.05, alpha=0.1, beta=0.85, seed=3):
    rng = np.random.default_rng(seed)
    r = np.zeros(n)
    h = omega / (1 - alpha - beta)
    for t in range(n):
        r[t] = math.sqrt(h) * rng.standard_t(6) * math.sqrt(4 / 6)
        h = omega + alpha * r[t] ** 2 + beta * h
    return r


def garch_nll_numpy(r, omega, alpha, beta):
    h = np.var(r, ddof=1)  # Tensor.var is unbiased
    nll = 0.0
    for t in range(len(r)):
        nll += 0.5 * (math.log(2 * math.pi) + math.log(h) + r[t] ** 2 / h)
        h = omega + alpha * r[t] ** 2 + beta * h
    return nll


def garch(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    returns = torch.tensor(garch_returns(), dtype=torch.float64)

    class GARCH(nn.Module):
        def __init__(self, student=False):
            super().__init__()
            self.raw_omega = nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))
            self.raw_persistence = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))  # alpha + beta
            self.raw_share = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))  # alpha / (alpha + beta)
            self.student = student
            if student:
                self.raw_nu = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

        def constrained(self):
            omega = F.softplus(self.raw_omega)
            persistence = torch.sigmoid(self.raw_persistence)
            alpha = persistence * torch.sigmoid(self.raw_share)
            return omega, alpha, persistence - alpha

        def forward(self, r):
            omega, alpha, beta = self.constrained()
            h = r.var()
            variances = []
            for t in range(r.shape[0]):
                variances.append(h)
                h = omega + alpha * r[t] ** 2 + beta * h
            sigma2 = torch.stack(variances)
            if self.student:
                nu = 2 + F.softplus(self.raw_nu)
                scale = torch.sqrt(sigma2 * (nu - 2) / nu)
                return -torch.distributions.StudentT(nu, torch.zeros_like(scale), scale).log_prob(r).sum(), sigma2
            return -torch.distributions.Normal(torch.zeros_like(sigma2), sigma2.sqrt()).log_prob(r).sum(), sigma2

    normal = GARCH()
    lbfgs = optim.LBFGS(normal.parameters(), lr=1, max_iter=25, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss, _ = normal(returns)
        loss.backward()
        return loss

    lbfgs.step(closure)
    nll, sigma2 = normal(returns)
    grads = torch.autograd.grad(nll, list(normal.parameters()))
    fitted = torch.stack(normal.constrained()).detach()
    # one-step-ahead forecast and 99% VaR from the Normal quantile
    omega, alpha, beta = normal.constrained()
    h_next = omega + alpha * returns[-1] ** 2 + beta * sigma2[-1]
    var_99 = -torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.01)).double() * h_next.sqrt()

    student = GARCH(student=True)
    adam = optim.Adam(student.parameters(), lr=0.05)
    t_losses = []
    for step in range(8):
        adam.zero_grad()
        loss, _ = student(returns)
        loss.backward()
        adam.step()
        t_losses.append(loss.detach())
    return dict(fitted=fitted, nll=nll, grads=grads, sigma2=sigma2.detach(), var_99=var_99.detach(),
                t_losses=torch.stack(t_losses), t_params=[p.detach() for p in student.parameters()])


def test_garch_maximum_likelihood():
    ours, _ = run_both(garch, rtol=1e-7, atol=1e-9)
    r = garch_returns()
    omega, alpha, beta = ours["fitted"]
    assert ours["nll"] == pytest.approx(garch_nll_numpy(r, omega, alpha, beta), rel=1e-10)
    assert max(abs(g) for g in ours["grads"]) < 1e-3
    assert 0.5 < alpha + beta < 1
    assert ours["t_losses"][-1] < ours["t_losses"][0]


# ----------------------------------------------------------------------------------------------
# Pairs trading: a Kalman filter for the dynamic hedge ratio, its noise levels learnt by the likelihood
# ----------------------------------------------------------------------------------------------


def pairs_data(n=100, seed=5):
    rng = np.random.default_rng(seed)
    x = 50 + np.cumsum(rng.standard_normal(n))
    hedge = 1.2 + np.cumsum(0.01 * rng.standard_normal(n))
    y = 3.0 + hedge * x + 0.5 * rng.standard_normal(n)
    return x, y


def kalman_pairs(m):
    torch = m.torch
    x, y = (torch.tensor(a, dtype=torch.float64) for a in pairs_data())
    log_delta = torch.tensor(math.log(1e-4), dtype=torch.float64, requires_grad=True)
    log_ve = torch.tensor(math.log(0.1), dtype=torch.float64, requires_grad=True)

    def run(log_delta, log_ve):
        delta = log_delta.exp()
        Vw = delta / (1 - delta) * torch.eye(2, dtype=torch.float64)
        Ve = log_ve.exp()
        theta = torch.zeros(2, dtype=torch.float64)
        P = torch.zeros(2, 2, dtype=torch.float64)
        loglik = torch.zeros((), dtype=torch.float64)
        states, errors, Qs = [], [], []
        for t in range(x.shape[0]):
            F_t = torch.stack([x[t], torch.ones((), dtype=torch.float64)])
            R = P + Vw
            y_hat = F_t @ theta
            Q = F_t @ R @ F_t + Ve
            e = y[t] - y_hat
            K = R @ F_t / Q
            theta = theta + K * e
            P = R - torch.outer(K, F_t @ R)
            loglik = loglik + torch.distributions.Normal(y_hat, Q.sqrt()).log_prob(y[t])
            states.append(theta)
            errors.append(e)
            Qs.append(Q)
        return loglik, torch.stack(states), torch.stack(errors), torch.stack(Qs)

    optimizer = m.optim.Adam([log_delta, log_ve], lr=0.1)
    history = []
    for step in range(5):
        optimizer.zero_grad()
        loglik, states, errors, Qs = run(log_delta, log_ve)
        (-loglik).backward()
        optimizer.step()
        history.append(loglik.detach())
    loglik, states, errors, Qs = run(log_delta, log_ve)
    z = errors / Qs.sqrt()
    position = torch.zeros_like(z)
    position = torch.where(z > 1.0, -torch.ones_like(z), position)
    position = torch.where(z < -1.0, torch.ones_like(z), position)
    pnl = (position[:-1] * (y.diff() - states[:-1, 0].detach() * x.diff())).cumsum(0)
    return dict(history=torch.stack(history), states=states.detach(), z=z.detach(), pnl=pnl.detach(),
                params=torch.stack([log_delta, log_ve]).detach(), grads=torch.stack([log_delta.grad, log_ve.grad]))


def kalman_numpy(x, y, delta, Ve):
    theta, P, ll = np.zeros(2), np.zeros((2, 2)), 0.0
    Vw = delta / (1 - delta) * np.eye(2)
    states = []
    for t in range(len(x)):
        F = np.array([x[t], 1.0])
        R = P + Vw
        Q = F @ R @ F + Ve
        e = y[t] - F @ theta
        K = R @ F / Q
        theta = theta + K * e
        P = R - np.outer(K, F @ R)
        ll += -0.5 * (math.log(2 * math.pi * Q) + e * e / Q)
        states.append(theta)
    return ll, np.array(states)


def test_kalman_pairs_trading():
    ours, _ = run_both(kalman_pairs, rtol=1e-8, atol=1e-10)
    x, y = pairs_data()
    delta, Ve = np.exp(ours["params"])
    ll, states = kalman_numpy(x, y, delta, Ve)
    np.testing.assert_allclose(ours["states"], states, rtol=1e-9, atol=1e-10)
    assert ours["history"][-1] > ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Time-series operations: rolling statistics by unfold, returns by diff, NaN-aware reductions, VaR from
# Normal and StudentT, tail-safe log Normal cdfs, a wiped-out asset through cumprod
# ----------------------------------------------------------------------------------------------


def price_series(n=120, d=3, seed=21):
    rng = np.random.default_rng(seed)
    prices = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal((n, d)), axis=0))
    prices[[5, 17, 60], [0, 1, 2]] = np.nan  # missing quotes
    return prices


def series_ops(m):
    torch, F = m.torch, m.F
    prices = torch.tensor(price_series(), dtype=torch.float64, requires_grad=True)
    filled = torch.where(torch.isnan(prices), prices.nan_to_num().roll(1, 0), prices)  # carry the previous close
    log_ret = torch.log(filled).diff(dim=0)
    simple = filled.diff(dim=0, prepend=filled[:1]) / filled
    window = 20
    windows = log_ret.unfold(0, window, 1)  # (n - window, d, window)
    roll_vol = windows.std(dim=-1) * math.sqrt(252)
    roll_mean = windows.mean(dim=-1)
    ewm_weights = 0.94 ** torch.arange(window - 1, -1, -1, dtype=torch.float64)
    ewm_var = (windows ** 2 * ewm_weights).sum(-1) / ewm_weights.sum()
    # rolling beta of asset 1 on asset 0, and rolling correlation, by unfold with a step
    x, y = log_ret[:, 0].unfold(0, window, 5), log_ret[:, 1].unfold(0, window, 5)
    xc, yc = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    beta = (xc * yc).sum(-1) / (xc ** 2).sum(-1)
    rho = F.cosine_similarity(xc, yc, dim=-1)
    # a moving average by conv1d, as signal people write it
    sma = F.conv1d(filled.T.unsqueeze(1), torch.full((1, 1, 10), 0.1, dtype=torch.float64)).squeeze(1).T
    raw_ret = prices.diff(dim=0)
    nan_stats = torch.stack([raw_ret.nanmean(0), raw_ret.nansum(0), raw_ret.nanmedian(0).values,
                             torch.nanquantile(raw_ret, 0.1, dim=0)])
    # parametric VaR at 99% and 97.5%: Normal and StudentT
    mu, sd = log_ret.mean(0), log_ret.std(0)
    normal = torch.distributions.Normal(mu, sd)
    var_normal = -normal.icdf(torch.tensor([[0.01], [0.025]], dtype=torch.float64))
    nu = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    t_scale = sd * torch.sqrt((nu - 2) / nu)
    student = torch.distributions.StudentT(nu, mu, t_scale)
    t_sample = student.rsample((4000,))
    var_t_mc = -torch.quantile(t_sample, 0.01, dim=0)
    t_loglik = student.log_prob(log_ret).sum()
    entropy = student.entropy()
    # log-cdf deep in the tails (digital option on a far strike): log_ndtr and Normal.cdf().log()
    d = torch.linspace(-40.0, 5.0, 10, dtype=torch.float64, requires_grad=True)
    log_digital = torch.special.log_ndtr(d)
    ndtri = torch.special.ndtri(torch.tensor([1e-10, 0.01, 0.5, 0.975], dtype=torch.float64))
    # wealth of an equally weighted book where one asset defaults (return −100%): cumprod through a zero
    rets = simple.detach().clone()
    rets[40, 2] = -1.0
    rets.requires_grad_()
    wealth = torch.cumprod(1 + rets, dim=0)
    book = wealth.mean(1)
    loss = (roll_vol.sum() + beta.nansum() + rho.sum() + sma.sum() * 1e-3 + ewm_var.sum() + var_normal.sum()
            + nan_stats.nansum() + var_t_mc.sum() - 1e-3 * t_loglik + entropy.sum())
    g_prices, g_nu = torch.autograd.grad(loss, (prices, nu))
    g_d, = torch.autograd.grad(log_digital.sum(), d)
    g_rets, = torch.autograd.grad(book[-1] + wealth[:, 2].sum(), rets)
    return dict(log_ret=log_ret, roll_vol=roll_vol, roll_mean=roll_mean, ewm_var=ewm_var, beta=beta, rho=rho, sma=sma,
                nan_stats=nan_stats, var_normal=var_normal, var_t_mc=var_t_mc, t_loglik=t_loglik, entropy=entropy,
                log_digital=log_digital, ndtri=ndtri, wealth=wealth, g_prices=g_prices, g_nu=g_nu, g_d=g_d,
                g_rets=g_rets)


def test_time_series_operations():
    ours, _ = run_both(series_ops, rtol=1e-8, atol=1e-11)
    d = np.linspace(-40.0, 5.0, 10)
    # d/dd log Phi(d) = phi(d)/Phi(d): about -d deep in the left tail
    assert np.all(np.isfinite(ours["g_d"]))
    assert ours["g_d"][0] == pytest.approx(40.0249, rel=1e-4)
    assert ours["log_digital"][0] == pytest.approx(-804.608442013754, rel=1e-12)
    np.testing.assert_allclose(ours["wealth"][41:, 2], 0.0)


# ----------------------------------------------------------------------------------------------
# Regime switching (a two-state Gaussian HMM fitted by the forward algorithm in log space), extreme
# values (a generalized Pareto fitted to losses over a threshold) and a Student-t copula by sampling
# ----------------------------------------------------------------------------------------------


def regime_returns(n=200, seed=8):
    rng = np.random.default_rng(seed)
    states = np.zeros(n, dtype=int)
    for t in range(1, n):
        stay = 0.97 if states[t - 1] == 0 else 0.9
        states[t] = states[t - 1] if rng.uniform() < stay else 1 - states[t - 1]
    mu, sd = np.array([0.05, -0.1]), np.array([0.5, 1.5])
    return mu[states] + sd[states] * rng.standard_normal(n), states


def regimes_and_tails(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    r = torch.tensor(regime_returns()[0], dtype=torch.float64)

    class HMM(nn.Module):
        def __init__(self):
            super().__init__()
            self.mu = nn.Parameter(torch.tensor([0.1, -0.1], dtype=torch.float64))
            self.log_sd = nn.Parameter(torch.tensor([-0.5, 0.5], dtype=torch.float64))
            self.trans_logits = nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 3.0]], dtype=torch.float64))

        def forward(self, x):
            log_A = F.log_softmax(self.trans_logits, dim=-1)
            emission = D.Normal(self.mu, self.log_sd.exp()).log_prob(x.unsqueeze(-1))  # (T, 2)
            log_alpha = math.log(0.5) + emission[0]
            filtered = [log_alpha.softmax(-1)]
            for t in range(1, x.shape[0]):
                log_alpha = torch.logsumexp(log_alpha.unsqueeze(-1) + log_A, dim=0) + emission[t]
                filtered.append(log_alpha.softmax(-1))
            return torch.logsumexp(log_alpha, -1), torch.stack(filtered)

    hmm = HMM()
    opt = optim.Adam(hmm.parameters(), lr=0.05)
    hmm_ll = []
    for step in range(12):
        ll, filtered = hmm(r)
        opt.zero_grad()
        (-ll).backward()
        opt.step()
        hmm_ll.append(ll.detach())

    # peaks over threshold: losses over their 90% quantile, a GPD by L-BFGS
    losses = -r
    u = torch.quantile(losses, 0.9)
    excess = losses[losses > u] - u
    xi_raw = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    log_beta = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    lbfgs = optim.LBFGS([xi_raw, log_beta], lr=1, max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        # by hand: PyTorch's GeneralizedPareto.log_prob compares a float64 concentration with a float32 zero
        # by isclose, and fails ("Double did not match Float")
        xi, beta = 0.5 * torch.tanh(xi_raw), log_beta.exp()
        nll = excess.numel() * torch.log(beta) + (1 + 1 / xi) * torch.log1p(xi * excess / beta).sum()
        nll.backward()
        return nll

    lbfgs.step(closure)
    xi, beta = 0.5 * torch.tanh(xi_raw.detach()), log_beta.detach().exp()
    zeta = excess.numel() / losses.numel()
    var_99 = u + beta / xi * ((0.01 / zeta) ** (-xi) - 1)
    es_99 = (var_99 + beta - xi * u) / (1 - xi)

    # a Student-t copula: correlated normals over a chi-square mixing, margins by the t cdf through
    # the regularised incomplete beta (torch.special has none: by the Normal for large df instead)
    torch.manual_seed(4)
    corr = torch.tensor([[1.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    nu = 6.0
    mvn = D.MultivariateNormal(torch.zeros(2, dtype=torch.float64), covariance_matrix=corr)
    z = mvn.sample((5000,))
    w = D.Chi2(torch.tensor(nu, dtype=torch.float64)).sample((5000,)) / nu
    t_draws = z / w.sqrt().unsqueeze(-1)
    joint_tail = ((t_draws[:, 0] < -2.0) & (t_draws[:, 1] < -2.0)).double().mean()
    rank = t_draws.argsort(0).argsort(0).double()
    spearman = torch.corrcoef(rank.T)[0, 1]
    if torch is OURS.torch:  # chainrule's distribution, against the fit by hand
        gpd = D.GeneralizedPareto(torch.zeros((), dtype=torch.float64), beta, xi)
        assert torch.allclose(-gpd.log_prob(excess).sum(), closure(), rtol=1e-12)
    return dict(hmm_ll=torch.stack(hmm_ll), filtered=filtered.detach(),
                hmm_params=[p.detach() for p in hmm.parameters()], u=u, gpd=torch.stack([xi, beta]), var_99=var_99,
                es_99=es_99, joint_tail=joint_tail, spearman=spearman)


def test_regimes_and_tails():
    ours, _ = run_both(regimes_and_tails, rtol=1e-7, atol=1e-9)
    _, states = regime_returns()
    assert ours["hmm_ll"][-1] > ours["hmm_ll"][0]
    calm = np.argmin(np.exp(ours["hmm_params"][1]))
    accuracy = ((ours["filtered"][:, calm] > 0.5) == (states == 0)).mean()
    assert accuracy > 0.8
    assert ours["es_99"] > ours["var_99"] > ours["u"]
    # Spearman's rho of a t copula with rho = 0.6: about 6/pi asin(rho/2) = 0.58
    assert ours["spearman"] == pytest.approx(6 / math.pi * math.asin(0.3), abs=0.03)
