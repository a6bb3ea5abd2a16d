# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Quantitative-finance programs, run as tests/probe19_finance_common.py says. Monte Carlo and Heston: exotics
(antithetic normals, ``cumsum`` of log-returns, ``clamp``/``maximum``/``relu`` payoffs, a ``torch.where`` knock-out,
``cummax`` lookbacks, a geometric-Asian control variate, a Cholesky basket, pathwise and likelihood-ratio Greeks);
Longstaff-Schwartz by ``linalg.lstsq`` on boolean-masked paths (with ``solve`` and ``pinv``); Heston by Euler with
full truncation (calibration gradients through the paths, Adam) and by Andersen's QE scheme (``Normal.icdf`` of
``torch.rand``, branches by ``torch.where``), and in semi-closed form (the characteristic function in complex
arithmetic, ``trapezoid`` and Carr-Madan's ``fft`` with ``searchsorted``/``lerp``); pricers mapped by ``vmap`` with
``randomness='same'``/``'different'``; a float32 pricer and a Nelson-Siegel-Svensson curve."""

import math

import numpy as np
import pytest

from .probe19_finance_common import bs_closed_form
from .pytorch_programs import assert_same, run_both

# ----------------------------------------------------------------------------------------------
# Monte Carlo: European, Asian, barrier, lookback and basket options with variance reduction and
# pathwise Greeks through the simulated paths
# ----------------------------------------------------------------------------------------------


def monte_carlo_exotics(m):
    torch = m.torch
    torch.manual_seed(0)
    n_paths, n_steps = 4000, 16
    S0 = torch.tensor(100.0, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    r, T, K, B = 0.02, 1.0, 100.0, 120.0
    dt = T / n_steps
    Z = torch.randn(n_paths // 2, n_steps, dtype=torch.float64)
    Z = torch.cat([Z, -Z])  # antithetic variates
    log_returns = (r - 0.5 * sigma ** 2) * dt + sigma * math.sqrt(dt) * Z
    log_paths = torch.log(S0) + torch.cumsum(log_returns, dim=1)
    paths = torch.exp(log_paths)
    S_T = paths[:, -1]
    disc = math.exp(-r * T)
    european = disc * torch.clamp(S_T - K, min=0)
    asian = disc * torch.maximum(paths.mean(dim=1) - K, torch.zeros(()).double())
    knocked = (paths >= B).any(dim=1)
    up_and_out = torch.where(knocked, torch.zeros_like(S_T), disc * F_relu(m, S_T - K))
    running_max = paths.cummax(dim=1).values
    lookback = disc * (running_max[:, -1] - S_T)
    # geometric Asian as control variate for the arithmetic one (closed form known)
    geo = torch.exp(log_paths.mean(dim=1))
    geo_payoff = disc * (geo - K).clamp(min=0)
    n = n_steps
    sigma_g = sigma * math.sqrt((n + 1) * (2 * n + 1) / (6 * n * n))
    mu_g = 0.5 * sigma_g ** 2 + (r - 0.5 * sigma ** 2) * (n + 1) / (2 * n)
    d1 = (torch.log(S0 / K) + (mu_g + 0.5 * sigma_g ** 2) * T) / (sigma_g * math.sqrt(T))
    d2 = d1 - sigma_g * math.sqrt(T)
    Ncdf = torch.distributions.Normal(0.0, 1.0).cdf
    geo_exact = math.exp(-r * T) * (S0 * torch.exp(mu_g * T) * Ncdf(d1) - K * Ncdf(d2))
    a, g = asian.detach(), geo_payoff.detach()
    beta = ((a - a.mean()) * (g - g.mean())).sum() / ((g - g.mean()) ** 2).sum()
    asian_cv = asian - beta * (geo_payoff - geo_exact)
    # basket of three correlated assets: Cholesky of the correlation
    corr = torch.tensor([[1.0, 0.5, 0.3], [0.5, 1.0, 0.4], [0.3, 0.4, 1.0]], dtype=torch.float64)
    L = torch.linalg.cholesky(corr)
    vols = torch.tensor([0.2, 0.25, 0.3], dtype=torch.float64, requires_grad=True)
    Zb = torch.randn(n_paths, 3, dtype=torch.float64) @ L.T
    S_b = 100.0 * torch.exp((r - 0.5 * vols ** 2) * T + vols * math.sqrt(T) * Zb)
    w = torch.tensor([0.4, 0.3, 0.3], dtype=torch.float64)
    basket = disc * torch.relu(S_b @ w - K)
    prices = torch.stack([european.mean(), asian.mean(), asian_cv.mean(), up_and_out.mean(), lookback.mean(),
                          basket.mean()])
    std_errors = torch.stack([european.std() / math.sqrt(n_paths), asian_cv.std(unbiased=True) / math.sqrt(n_paths)])
    grads = {}
    for name, i in (("european", 0), ("asian", 1), ("barrier", 3), ("lookback", 4)):
        grads[name] = torch.autograd.grad(prices[i], (S0, sigma), retain_graph=True)
    grads["basket_vega"], = torch.autograd.grad(prices[5], vols, retain_graph=True)
    # pathwise gamma is zero almost surely; the likelihood-ratio gamma instead
    W_T = Z.sum(1) * math.sqrt(dt)
    lr_weight = (W_T ** 2 / (S0 ** 2 * sigma ** 2 * T ** 2) - W_T / (S0 ** 2 * sigma * T)
                 - 1 / (S0 ** 2 * sigma ** 2 * T))
    lr_gamma = (european.detach() * lr_weight.detach()).mean()
    return dict(prices=prices, std_errors=std_errors, grads=grads, beta=beta, knocked=knocked.sum(),
                lr_gamma=lr_gamma, geo_exact=geo_exact)


def F_relu(m, x):
    return m.F.relu(x)


def test_monte_carlo_exotics():
    ours, _ = run_both(monte_carlo_exotics, rtol=1e-9, atol=1e-10)
    bs = bs_closed_form(100.0, 100.0, 1.0, 0.02, 0.2)
    price, se = ours["prices"][0], ours["std_errors"][0]
    assert abs(price - bs["price"]) < 4 * se
    delta, vega = ours["grads"]["european"]
    assert delta == pytest.approx(bs["delta"], abs=0.03)
    assert vega == pytest.approx(bs["vega"], rel=0.1)
    assert ours["std_errors"][1] < 0.2 * ours["std_errors"][0]  # the control variate works
    assert ours["prices"][3] < ours["prices"][0]  # knock-out is cheaper
    assert ours["lr_gamma"] == pytest.approx(bs["gamma"], rel=0.3)


# ----------------------------------------------------------------------------------------------
# Longstaff-Schwartz: the American put by least-squares regression on in-the-money paths
# ----------------------------------------------------------------------------------------------


def longstaff_schwartz(m):
    torch = m.torch
    gen = torch.Generator().manual_seed(42)
    n_paths, n_steps = 2000, 25
    S0, K, r, sigma, T = 36.0, 40.0, 0.06, 0.2, 1.0
    dt = T / n_steps
    Z = torch.randn(n_paths, n_steps, generator=gen, dtype=torch.float64)
    increments = (r - 0.5 * sigma ** 2) * dt + sigma * math.sqrt(dt) * Z
    S = S0 * torch.exp(torch.cat([torch.zeros(n_paths, 1, dtype=torch.float64), increments.cumsum(1)], dim=1))
    cashflow = torch.clamp(K - S[:, -1], min=0.0)
    exercise_time = torch.full((n_paths,), n_steps, dtype=torch.long)
    coefs = []
    for t in range(n_steps - 1, 0, -1):
        cashflow = cashflow * math.exp(-r * dt)
        itm = (K - S[:, t]) > 0
        x = S[itm, t] / S0
        X = torch.stack([torch.ones_like(x), x, x ** 2, x ** 3], dim=1)
        y = cashflow[itm].unsqueeze(1)
        beta = torch.linalg.lstsq(X, y).solution
        continuation = (X @ beta).squeeze(1)
        exercise = K - S[itm, t]
        do_exercise = exercise > continuation
        idx = torch.nonzero(itm).squeeze(1)[do_exercise]
        cashflow[idx] = exercise[do_exercise]
        exercise_time[idx] = t
        coefs.append(beta.squeeze(1))
    price = math.exp(-r * dt) * cashflow.mean()
    # the same regression by the normal equations and by pinv, as people also write it
    beta_ne = torch.linalg.solve(X.T @ X, X.T @ y)
    beta_pinv = torch.linalg.pinv(X) @ y
    counts = torch.bincount(exercise_time, minlength=n_steps + 1)
    return dict(price=price, coefs=torch.stack(coefs), beta_ne=beta_ne, beta_pinv=beta_pinv, counts=counts,
                last_beta=beta)


def test_longstaff_schwartz_american_put():
    ours, theirs = run_both(longstaff_schwartz, compare=False)
    if theirs is not None:
        # the normal equations square a condition number of about 1e5: their solution agrees to about 1e-5
        # (chainrule's is the nearer to lstsq's); everything else to rounding
        loose = {"beta_ne"}
        assert_same({k: v for k, v in ours.items() if k not in loose},
                    {k: v for k, v in theirs.items() if k not in loose}, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ours["beta_ne"], theirs["beta_ne"], rtol=1e-4)
    # Longstaff & Schwartz (2001), table 1: S0=36, sigma=0.2, T=1 gives 4.472 (finite differences 4.478)
    assert ours["price"] == pytest.approx(4.47, abs=0.15)
    np.testing.assert_allclose(ours["beta_ne"], ours["last_beta"], rtol=1e-5)
    np.testing.assert_allclose(ours["beta_pinv"], ours["last_beta"], rtol=1e-6)
    assert ours["counts"].sum() == 2000


# ----------------------------------------------------------------------------------------------
# Heston: Euler with full truncation and correlated normals; calibration gradients through the paths
# ----------------------------------------------------------------------------------------------


def heston(m):
    torch, nn = m.torch, m.nn

    class Heston(nn.Module):
        def __init__(self):
            super().__init__()
            self.raw_kappa = nn.Parameter(torch.tensor(math.log(math.expm1(2.0)), dtype=torch.float64))
            self.raw_theta = nn.Parameter(torch.tensor(math.log(math.expm1(0.04)), dtype=torch.float64))
            self.raw_xi = nn.Parameter(torch.tensor(math.log(math.expm1(0.3)), dtype=torch.float64))
            self.raw_rho = nn.Parameter(torch.tensor(math.atanh(-0.7), dtype=torch.float64))
            self.v0 = nn.Parameter(torch.tensor(0.04, dtype=torch.float64))

        def params(self):
            F = m.F
            return (F.softplus(self.raw_kappa), F.softplus(self.raw_theta), F.softplus(self.raw_xi),
                    torch.tanh(self.raw_rho))

        def forward(self, S0, r, T, strikes, n_paths=2000, n_steps=32, generator=None):
            kappa, theta, xi, rho = self.params()
            dt = T / n_steps
            Z = torch.randn(n_steps, n_paths, 2, generator=generator, dtype=torch.float64)
            corr = torch.stack([torch.stack([torch.ones_like(rho), rho]), torch.stack([rho, torch.ones_like(rho)])])
            L = torch.linalg.cholesky(corr)
            W = Z @ L.mT
            log_S = torch.full((n_paths,), math.log(S0), dtype=torch.float64)
            v = self.v0.expand(n_paths)
            for t in range(n_steps):
                v_pos = v.clamp(min=0.0)
                sqrt_v = torch.sqrt(v_pos)  # full truncation: where(v<0) masks sqrt's infinite slope
                log_S = log_S + (r - 0.5 * v_pos) * dt + sqrt_v * math.sqrt(dt) * W[t, :, 0]
                v = v + kappa * (theta - v_pos) * dt + xi * sqrt_v * math.sqrt(dt) * W[t, :, 1]
            S_T = log_S.exp()
            payoff = (S_T.unsqueeze(1) - strikes.unsqueeze(0)).clamp(min=0)
            return math.exp(-r * T) * payoff.mean(0), S_T

    model = Heston()
    strikes = torch.tensor([90.0, 100.0, 110.0], dtype=torch.float64)
    market = torch.tensor([13.0, 6.3, 2.2], dtype=torch.float64)
    optimizer = m.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for step in range(5):
        gen = torch.Generator().manual_seed(7)  # common random numbers across steps
        prices, S_T = model(100.0, 0.01, 1.0, strikes, generator=gen)
        loss = ((prices - market) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    with torch.no_grad():
        forward_price = S_T.mean() * math.exp(-0.01)
    return dict(losses=torch.stack(losses), grads=grads, params=torch.stack(model.params()),
                forward_price=forward_price, prices=prices)


def test_heston_calibration_through_paths():
    ours, _ = run_both(heston, rtol=1e-8, atol=1e-10)
    assert ours["forward_price"] == pytest.approx(100.0, rel=0.02)  # the discounted stock is a martingale
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# Heston in semi-closed form: the characteristic function in complex arithmetic, integrated by
# torch.trapezoid (Gil-Pelaez) and by Carr-Madan's FFT; gradients in the real parameters through it
# ----------------------------------------------------------------------------------------------


def heston_cf(torch, u, S0, r, T, kappa, theta, xi, rho, v0):
    """The 'little Heston trap' form (Albrecher et al.), stable for long maturities."""
    i = torch.complex(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))
    a = kappa - rho * xi * i * u
    d = torch.sqrt(a ** 2 + xi ** 2 * (i * u + u ** 2))
    g = (a - d) / (a + d)
    e = torch.exp(-d * T)
    C = kappa * theta / xi ** 2 * ((a - d) * T - 2 * torch.log((1 - g * e) / (1 - g)))
    D = (a - d) / xi ** 2 * (1 - e) / (1 - g * e)
    return torch.exp(i * u * (math.log(S0) + r * T) + C + D * v0)


def heston_fourier(m):
    torch = m.torch
    S0, r, T = 100.0, 0.02, 0.5
    params = torch.tensor([2.0, 0.04, 0.5, -0.7, 0.05], dtype=torch.float64, requires_grad=True)
    kappa, theta, xi, rho, v0 = params
    K = torch.tensor([80.0, 100.0, 120.0], dtype=torch.float64)
    u = torch.linspace(1e-6, 150.0, 3001, dtype=torch.float64)
    i = torch.complex(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    phi = lambda v: heston_cf(torch, v, S0, r, T, kappa, theta, xi, rho, v0)
    logK = torch.log(K).unsqueeze(1)
    uc = u.to(torch.complex128)
    integrand1 = (torch.exp(-i * uc * logK) * phi(uc - i) / (i * uc * phi(-i))).real
    integrand2 = (torch.exp(-i * uc * logK) * phi(uc) / (i * uc)).real
    P1 = 0.5 + torch.trapezoid(integrand1, u, dim=1) / math.pi
    P2 = 0.5 + torch.trapezoid(integrand2, u, dim=1) / math.pi
    calls = S0 * P1 - K * math.exp(-r * T) * P2
    grads = torch.autograd.grad(calls.sum(), params, retain_graph=True)[0]

    # Carr-Madan: the damped call transform on a grid, one FFT for all log-strikes
    N, eta, alpha = 2 ** 10, 0.25, 1.5
    v = torch.arange(N, dtype=torch.float64) * eta
    lam = 2 * math.pi / (N * eta)
    b = N * lam / 2
    vc = v.to(torch.complex128)
    psi = math.exp(-r * T) * phi(vc - (alpha + 1) * i) / (alpha ** 2 + alpha - vc ** 2 + i * (2 * alpha + 1) * vc)
    simpson = (3 + (-1) ** torch.arange(1, N + 1, dtype=torch.float64) - (torch.arange(N) == 0).double()) / 3
    x = torch.exp(i * b * vc) * psi * eta * simpson
    k_grid = -b + lam * torch.arange(N, dtype=torch.float64)
    fft_calls = torch.exp(-alpha * k_grid) / math.pi * torch.fft.fft(x).real
    at = torch.searchsorted(k_grid, torch.log(K))
    w = (torch.log(K) - k_grid[at - 1]) / (k_grid[at] - k_grid[at - 1])
    fft_at_K = torch.lerp(fft_calls[at - 1], fft_calls[at], w)
    g_fft = torch.autograd.grad(fft_at_K.sum(), params)[0]
    return dict(calls=calls, grads=grads, fft_at_K=fft_at_K, g_fft=g_fft, P1=P1, P2=P2)


def test_heston_characteristic_function_pricing():
    ours, _ = run_both(heston_fourier, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours["fft_at_K"], ours["calls"], rtol=2e-3, atol=2e-2)
    np.testing.assert_allclose(ours["g_fft"], ours["grads"], rtol=0.05, atol=0.05)
    # with xi -> 0 Heston is Black-Scholes; here only sanity: prices in the no-arbitrage bounds
    K = np.array([80.0, 100.0, 120.0])
    assert np.all(ours["calls"] > np.maximum(100.0 - K * math.exp(-0.01), 0)) and np.all(ours["calls"] < 100.0)


# ----------------------------------------------------------------------------------------------
# In float32, as most scripts run: a Monte Carlo pricer on the default dtype with torch.randn, and a
# Nelson-Siegel-Svensson curve fitted by L-BFGS, with a discount curve interpolated by searchsorted
# ----------------------------------------------------------------------------------------------


def float32_programs(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(123)
    S0 = torch.tensor(100.0, requires_grad=True)
    sigma = torch.tensor(0.3, requires_grad=True)
    n, steps, T, r = 8192, 12, 1.0, 0.05
    dt = T / steps
    Z = torch.randn(n, steps)
    paths = S0 * torch.exp(torch.cumsum((r - sigma ** 2 / 2) * dt + sigma * dt ** 0.5 * Z, dim=1))
    payoff = torch.clamp(paths.mean(1) - 100.0, min=0) * math.exp(-r * T)
    price = payoff.mean()
    delta, vega = torch.autograd.grad(price, (S0, sigma))
    U = torch.rand(n)
    inv = torch.distributions.Normal(0.0, 1.0).icdf(U.clamp(1e-6, 1 - 1e-6))
    erfinv = math.sqrt(2) * torch.erfinv(2 * U - 1)

    class NSS(nn.Module):
        def __init__(self):
            super().__init__()
            self.beta = nn.Parameter(torch.tensor([0.03, -0.01, 0.01, 0.0]))
            self.log_tau = nn.Parameter(torch.tensor([0.0, 1.0]))

        def forward(self, t):
            tau1, tau2 = self.log_tau.exp()
            x1, x2 = t / tau1, t / tau2
            f1 = (1 - torch.exp(-x1)) / x1
            f2 = f1 - torch.exp(-x1)
            f3 = (1 - torch.exp(-x2)) / x2 - torch.exp(-x2)
            return self.beta[0] + self.beta[1] * f1 + self.beta[2] * f2 + self.beta[3] * f3

    maturities = torch.tensor([0.25, 0.5, 1, 2, 3, 5, 7, 10, 20, 30])
    yields = torch.tensor([0.052, 0.051, 0.049, 0.045, 0.043, 0.042, 0.042, 0.043, 0.046, 0.045])
    model = NSS()
    opt = optim.LBFGS(model.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((model(maturities) - yields) ** 2).sum() * 1e4
        loss.backward()
        return loss

    opt.step(closure)
    fitted = model(maturities).detach()
    grid = torch.linspace(0.25, 30, 50)
    idx = torch.searchsorted(maturities, grid, right=False).clamp(1, len(maturities) - 1)
    t0, t1 = maturities[idx - 1], maturities[idx]
    y0, y1 = fitted[idx - 1], fitted[idx]
    interp = y0 + (y1 - y0) * (grid - t0) / (t1 - t0)
    discount = torch.exp(-interp * grid)
    forward = -torch.diff(torch.log(discount)) / torch.diff(grid)
    return dict(price=price, delta=delta, vega=vega, inv=inv[:100], erfinv=erfinv[:100], fitted=fitted,
                interp=interp, forward=forward, params=[p.detach() for p in model.parameters()])


def test_float32_pricer_and_curve():
    ours, theirs = run_both(float32_programs, compare=False)
    if theirs is not None:
        assert_same({k: v for k, v in ours.items() if k != "params"},
                    {k: v for k, v in theirs.items() if k != "params"}, rtol=2e-4, atol=1e-5)
    assert ours["fitted"].dtype == np.float32
    np.testing.assert_allclose(ours["inv"], ours["erfinv"], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Pricers mapped over parameter sets by torch.func.vmap, with randomness='same' (common random numbers
# across the batch) and 'different' (fresh paths per parameter set)
# ----------------------------------------------------------------------------------------------


def vmapped_pricer(m, randomness, n_paths):
    torch = m.torch
    torch.manual_seed(0)

    def price(sigma, strike):
        Z = torch.randn(n_paths, dtype=torch.float64)
        S_T = 100.0 * torch.exp(-0.5 * sigma ** 2 + sigma * Z)
        return torch.clamp(S_T - strike, min=0).mean()

    sigmas = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    strikes = torch.tensor([95.0, 100.0, 105.0], dtype=torch.float64)
    prices = torch.func.vmap(price, randomness=randomness)(sigmas, strikes)
    vegas = torch.func.vmap(torch.func.grad(price), in_dims=(0, 0), randomness=randomness)(sigmas, strikes)
    return prices, vegas


def test_vmapped_pricer_common_random_numbers():
    (prices, vegas), _ = run_both(vmapped_pricer, "same", 1000, rtol=1e-10, atol=1e-12)
    want = bs_closed_form(100.0, np.array([95.0, 100.0, 105.0]), 1.0, 0.0, np.array([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(prices, want["price"], rtol=0.1)
    np.testing.assert_allclose(vegas, want["vega"], rtol=0.1)


def test_vmapped_pricer_fresh_paths_small_draws():
    # per example draws of fewer than 16 numbers, 3 * 5 < 16 in all: PyTorch's one batched draw is then
    # the examples' draws one after the other, as chainrule's loop makes them
    (prices, vegas), _ = run_both(vmapped_pricer, "different", 5, rtol=1e-10, atol=1e-12)
    (same_prices, _), _ = run_both(vmapped_pricer, "same", 5, rtol=1e-10, atol=1e-12)
    assert np.all(np.isfinite(prices)) and np.all(vegas >= 0)
    assert not np.allclose(prices, same_prices)  # each example its own paths


@pytest.mark.torch  # (only PyTorch's numbers show it: one randn(B, n) drawn for the batch, each example its row)
def test_vmapped_pricer_fresh_paths():
    run_both(vmapped_pricer, "different", 1000, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Heston by Andersen's quadratic-exponential scheme: the variance switched between a moment-matched
# quadratic of a normal and an exponential mixture by torch.where, normals by Normal.icdf of uniforms
# ----------------------------------------------------------------------------------------------


def heston_qe(m):
    torch = m.torch
    gen = torch.Generator().manual_seed(11)
    n_paths, n_steps, T = 4000, 20, 1.0
    dt = T / n_steps
    kappa = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    theta = torch.tensor(0.04, dtype=torch.float64, requires_grad=True)
    xi = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    rho, v0, S0, r, K = -0.7, 0.04, 100.0, 0.0, 100.0
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    psi_c = 1.5
    v = torch.full((n_paths,), v0, dtype=torch.float64)
    log_S = torch.full((n_paths,), math.log(S0), dtype=torch.float64)
    g1 = g2 = 0.5
    k0 = -rho * kappa * theta / xi * dt
    k1 = g1 * dt * (kappa * rho / xi - 0.5) - rho / xi
    k2 = g2 * dt * (kappa * rho / xi - 0.5) + rho / xi
    k3 = g1 * dt * (1 - rho ** 2)
    k4 = g2 * dt * (1 - rho ** 2)
    E = torch.exp(-kappa * dt)
    branch_counts = []
    for step in range(n_steps):
        m_ = theta + (v - theta) * E
        s2 = v * xi ** 2 * E / kappa * (1 - E) + theta * xi ** 2 / (2 * kappa) * (1 - E) ** 2
        psi = s2 / m_ ** 2
        U = torch.rand(n_paths, generator=gen, dtype=torch.float64)
        Zv = normal.icdf(U.clamp(1e-12, 1 - 1e-12))
        # quadratic branch (psi <= psi_c)
        b2 = 2 / psi - 1 + torch.sqrt(2 / psi) * torch.sqrt((2 / psi - 1).clamp(min=0))
        a = m_ / (1 + b2)
        v_quad = a * (torch.sqrt(b2) + Zv) ** 2
        # exponential branch (psi > psi_c)
        p = (psi - 1) / (psi + 1)
        beta = (1 - p) / m_
        v_exp = torch.where(U <= p, torch.zeros_like(U), torch.log((1 - p) / (1 - U).clamp(min=1e-12)) / beta)
        use_quad = psi <= psi_c
        v_next = torch.where(use_quad, v_quad, v_exp)
        branch_counts.append(use_quad.sum())
        Z = torch.randn(n_paths, generator=gen, dtype=torch.float64)
        log_S = log_S + r * dt + k0 + k1 * v + k2 * v_next + torch.sqrt(k3 * v + k4 * v_next) * Z
        v = v_next
    S_T = log_S.exp()
    price = torch.clamp(S_T - K, min=0).mean()
    grads = torch.autograd.grad(price, (kappa, theta, xi))
    return dict(price=price.detach(), grads=grads, mean_S=S_T.mean().detach(), mean_v=v.mean().detach(),
                branch_counts=torch.stack(branch_counts))


def test_heston_quadratic_exponential_scheme():
    ours, _ = run_both(heston_qe, rtol=1e-8, atol=1e-10)
    assert ours["mean_S"] == pytest.approx(100.0, rel=0.01)  # the martingale correction of the scheme
    # E[v_T] = theta + (v0 - theta) e^{-kappa T} = 0.04
    assert ours["mean_v"] == pytest.approx(0.04, rel=0.05)
    assert 0 < ours["branch_counts"].sum() < 20 * 4000  # both branches taken
