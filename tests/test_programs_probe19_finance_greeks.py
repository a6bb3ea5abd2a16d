# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Quantitative-finance programs, run as tests/probe19_finance_common.py says. Black-Scholes prices and Greeks (delta
to volga, theta and rho) by ``autograd.grad(create_graph=True)``, ``Normal.cdf``, ``special.ndtr``, ``erf`` and
``autograd.functional.hessian``; implied volatility by Newton under ``no_grad``, bisection by ``where`` and a custom
``autograd.Function`` whose backward is the implicit-function theorem (``gradcheck``); Greeks by ``torch.func``
(``vmap`` of ``grad``, ``hessian``, ``jacfwd(jacrev)``, ``jvp``), forward-mode dual numbers and
``functional.jacobian``; Merton's jump diffusion (``lgamma`` series, ``torch.poisson``); an analytic-adjoint
Black-Scholes ``autograd.Function`` (``setup_context``, ``jvp``) under ``torch.func``, ``gradcheck`` and
``gradgradcheck``; Dupire's local volatility by autograd (second order in strike) and a Crank-Nicolson pricer through
``lu_factor``/``lu_solve``."""

import math

import numpy as np
import pytest

from .probe19_finance_common import bs_closed_form, norm_cdf
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Black-Scholes Greeks by autograd (first and second order, create_graph=True)
# ----------------------------------------------------------------------------------------------

STRIKES = np.array([80.0, 90.0, 100.0, 110.0, 125.0])


def black_scholes_greeks(m):
    torch = m.torch
    from_normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64),
                                             torch.tensor(1.0, dtype=torch.float64))
    N = from_normal.cdf

    def bs_call(S, K, T, r, sigma):
        d1 = (torch.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * torch.sqrt(T))
        d2 = d1 - sigma * torch.sqrt(T)
        return S * N(d1) - K * torch.exp(-r * T) * N(d2)

    S = torch.full((5,), 100.0, dtype=torch.float64, requires_grad=True)
    K = torch.tensor(STRIKES, dtype=torch.float64)
    T = torch.tensor(0.75, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(0.03, dtype=torch.float64, requires_grad=True)
    sigma = torch.full((5,), 0.25, dtype=torch.float64, requires_grad=True)

    price = bs_call(S, K, T, r, sigma)
    delta, vega, theta_neg, rho = torch.autograd.grad(price.sum(), (S, sigma, T, r), create_graph=True)
    gamma, vanna = torch.autograd.grad(delta.sum(), (S, sigma), retain_graph=True)
    volga, = torch.autograd.grad(vega.sum(), sigma)
    # put by parity, delta by a second graph through torch.special.ndtr
    def bs_put(S, K, T, r, sigma):
        d1 = (torch.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * torch.sqrt(T))
        d2 = d1 - sigma * torch.sqrt(T)
        return K * torch.exp(-r * T) * torch.special.ndtr(-d2) - S * torch.special.ndtr(-d1)

    put = bs_put(S, K, T, r, sigma)
    put_delta, = torch.autograd.grad(put, S, grad_outputs=torch.ones_like(put))
    # the erf form many notebooks use
    def ncdf(x):
        return 0.5 * (1 + torch.erf(x / math.sqrt(2)))

    d1 = (torch.log(S / K) + (0.03 + 0.5 * sigma ** 2) * 0.75) / (sigma * math.sqrt(0.75))
    erf_price = S * ncdf(d1) - K * math.exp(-0.03 * 0.75) * ncdf(d1 - sigma * math.sqrt(0.75))
    # the full Hessian of the price of one option in (S, sigma) by torch.autograd.functional.hessian
    def one(x):
        return bs_call(x[0], torch.tensor(100.0, dtype=torch.float64), torch.tensor(0.75, dtype=torch.float64),
                       torch.tensor(0.03, dtype=torch.float64), x[1])

    H = torch.autograd.functional.hessian(one, torch.tensor([100.0, 0.25], dtype=torch.float64))
    return dict(price=price, delta=delta, gamma=gamma, vega=vega, theta=-theta_neg, rho=rho, vanna=vanna,
                volga=volga, put=put, put_delta=put_delta, erf_price=erf_price, H=H)


def test_black_scholes_greeks_by_autograd():
    ours, _ = run_both(black_scholes_greeks, rtol=1e-10, atol=1e-12)
    want = bs_closed_form(100.0, STRIKES, 0.75, 0.03, 0.25)
    for name in ("price", "delta", "gamma", "vega", "vanna", "volga"):
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-9, atol=1e-11, err_msg=name)
    # theta and rho: the gradient of the sum over strikes in the shared scalar T, r
    assert ours["theta"] == pytest.approx(want["theta"].sum(), rel=1e-9)
    assert ours["rho"] == pytest.approx(want["rho"].sum(), rel=1e-9)
    np.testing.assert_allclose(ours["put"], want["price"] - 100.0 + STRIKES * math.exp(-0.03 * 0.75), rtol=1e-9)
    np.testing.assert_allclose(ours["put_delta"], want["delta"] - 1, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["erf_price"], want["price"], rtol=1e-12)
    atm = bs_closed_form(100.0, 100.0, 0.75, 0.03, 0.25)
    np.testing.assert_allclose(ours["H"], [[atm["gamma"], atm["vanna"]], [atm["vanna"], atm["volga"]]], rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# Implied volatility: Newton under no_grad, bisection by torch.where, and its gradient by the implicit
# function theorem (a custom autograd.Function)
# ----------------------------------------------------------------------------------------------


def implied_vol(m):
    torch = m.torch
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))

    def bs_call(S, K, T, r, sigma):
        sqrtT = T ** 0.5
        d1 = (torch.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * sqrtT)
        d2 = d1 - sigma * sqrtT
        return S * normal.cdf(d1) - K * torch.exp(torch.as_tensor(-r * T, dtype=torch.float64)) * normal.cdf(d2)

    def vega(S, K, T, r, sigma):
        d1 = (torch.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * T ** 0.5)
        return S * normal.log_prob(d1).exp() * T ** 0.5

    S, T, r = 100.0, 0.5, 0.01
    K = torch.linspace(70.0, 140.0, 8, dtype=torch.float64)
    true_vol = 0.2 + 0.1 * ((K / 100 - 1.0) ** 2) - 0.05 * (K / 100 - 1.0)
    market = bs_call(torch.tensor(S, dtype=torch.float64), K, T, r, true_vol)

    # Newton, as in most notebooks: iterate without building a graph
    sigma = torch.full_like(K, 0.5)
    newton_path = []
    with torch.no_grad():
        for i in range(20):
            diff = bs_call(torch.tensor(S, dtype=torch.float64), K, T, r, sigma) - market
            sigma -= diff / vega(torch.tensor(S, dtype=torch.float64), K, T, r, sigma)
            sigma.clamp_(1e-4, 5.0)
            newton_path.append(sigma.clone())
    # bisection on the whole vector at once
    lo, hi = torch.full_like(K, 1e-3), torch.full_like(K, 3.0)
    for i in range(60):
        mid = 0.5 * (lo + hi)
        too_high = bs_call(torch.tensor(S, dtype=torch.float64), K, T, r, mid) > market
        hi = torch.where(too_high, mid, hi)
        lo = torch.where(too_high, lo, mid)
    bisect = 0.5 * (lo + hi)

    # Newton by autograd for the vega (a graph per step, then detached)
    sig = torch.full_like(K, 0.3).requires_grad_()
    for i in range(8):
        price = bs_call(torch.tensor(S, dtype=torch.float64), K, T, r, sig)
        g, = torch.autograd.grad(price.sum(), sig)
        sig = (sig - (price - market) / g).detach().requires_grad_()

    class ImpliedVol(torch.autograd.Function):
        @staticmethod
        def forward(ctx, price, strike):
            with torch.no_grad():
                s = torch.full_like(strike, 0.3)
                for i in range(30):
                    s = s - (bs_call(torch.tensor(S, dtype=torch.float64), strike, T, r, s) - price) / vega(
                        torch.tensor(S, dtype=torch.float64), strike, T, r, s)
            ctx.save_for_backward(s, strike)
            return s

        @staticmethod
        def backward(ctx, grad_out):
            s, strike = ctx.saved_tensors
            with torch.enable_grad():
                s_ = s.detach().requires_grad_()
                k_ = strike.detach().requires_grad_()
                c = bs_call(torch.tensor(S, dtype=torch.float64), k_, T, r, s_)
                dc_ds, dc_dk = torch.autograd.grad(c.sum(), (s_, k_))
            # C(sigma(p, k), k) = p: dsigma/dp = 1/vega, dsigma/dk = -dC/dk / vega
            return grad_out / dc_ds, -grad_out * dc_dk / dc_ds

    prices = market.clone().requires_grad_()
    strikes = K.clone().requires_grad_()
    iv = ImpliedVol.apply(prices, strikes)
    iv.sum().backward()
    check = torch.autograd.gradcheck(ImpliedVol.apply,
                                     (market[:3].clone().requires_grad_(), K[:3].clone().requires_grad_()),
                                     eps=1e-6, atol=1e-5)
    return dict(newton=sigma, newton_path=torch.stack(newton_path), bisect=bisect, autograd_newton=sig.detach(), iv=iv,
                dprice=prices.grad, dstrike=strikes.grad, true_vol=true_vol, check=check)


def test_implied_volatility_solvers():
    ours, _ = run_both(implied_vol, rtol=1e-8, atol=1e-10)
    for name in ("newton", "bisect", "autograd_newton", "iv"):
        np.testing.assert_allclose(ours[name], ours["true_vol"], rtol=1e-7, err_msg=name)
    # dsigma/dprice = 1/vega by hand
    K = np.linspace(70.0, 140.0, 8)
    want_vega = bs_closed_form(100.0, K, 0.5, 0.01, ours["true_vol"])["vega"]
    np.testing.assert_allclose(ours["dprice"], 1 / want_vega, rtol=1e-6)
    assert ours["check"] is True


# ----------------------------------------------------------------------------------------------
# Greeks by torch.func (vmap of grad, jacfwd of jacrev, hessian) and by forward-mode dual numbers
# ----------------------------------------------------------------------------------------------


def func_greeks(m):
    torch = m.torch
    from_func = torch.func

    def bs_call(S, sigma, K, T, r):
        d1 = (torch.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * torch.sqrt(T))
        d2 = d1 - sigma * torch.sqrt(T)
        return S * torch.special.ndtr(d1) - K * torch.exp(-r * T) * torch.special.ndtr(d2)

    S = torch.tensor([90.0, 100.0, 110.0], dtype=torch.float64)
    sigma = torch.tensor([0.2, 0.25, 0.3], dtype=torch.float64)
    K = torch.tensor(100.0, dtype=torch.float64)
    T = torch.tensor(0.5, dtype=torch.float64)
    r = torch.tensor(0.01, dtype=torch.float64)
    over_options = (0, 0, None, None, None)
    delta_vega = from_func.vmap(from_func.grad(bs_call, argnums=(0, 1)), in_dims=over_options)(S, sigma, K, T, r)
    second = from_func.vmap(from_func.hessian(bs_call, argnums=(0, 1)), in_dims=over_options)(S, sigma, K, T, r)
    gamma_fwd = from_func.vmap(from_func.jacfwd(from_func.jacrev(bs_call)), in_dims=over_options)(S, sigma, K, T, r)
    # all first-order Greeks at once by the Jacobian of the vector of prices
    jac = torch.autograd.functional.jacobian(lambda S_, s_: bs_call(S_, s_, K, T, r), (S, sigma), vectorize=True)
    # forward-mode: one dual pass per direction
    import_fwad = torch.autograd.forward_ad
    with import_fwad.dual_level():
        dual_S = import_fwad.make_dual(S, torch.ones_like(S))
        price = bs_call(dual_S, sigma, K, T, r)
        delta_fwd = import_fwad.unpack_dual(price).tangent
    _, theta_jvp = from_func.jvp(lambda T_: bs_call(S, sigma, K, T_, r), (T,), (torch.ones_like(T),))
    return dict(delta=delta_vega[0], vega=delta_vega[1], gamma=second[0][0], vanna=second[0][1], volga=second[1][1],
                gamma_fwd=gamma_fwd, jac_S=jac[0], jac_sigma=jac[1], delta_fwd=delta_fwd, theta=-theta_jvp)


def test_greeks_by_torch_func():
    ours, _ = run_both(func_greeks, rtol=1e-10, atol=1e-12)
    want = bs_closed_form(np.array([90.0, 100.0, 110.0]), 100.0, 0.5, 0.01, np.array([0.2, 0.25, 0.3]))
    for name in ("delta", "vega", "gamma", "vanna", "volga", "theta"):
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(ours["gamma_fwd"], want["gamma"], rtol=1e-9)
    np.testing.assert_allclose(ours["delta_fwd"], want["delta"], rtol=1e-9)
    np.testing.assert_allclose(ours["jac_S"], np.diag(want["delta"]), rtol=1e-9, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# Merton jump diffusion: the Poisson-weighted series of Black-Scholes prices (lgamma factorials) and a
# Monte Carlo check with torch.poisson counts
# ----------------------------------------------------------------------------------------------


def merton(m):
    torch = m.torch
    S0, K, T, r = 100.0, torch.tensor([90.0, 100.0, 110.0], dtype=torch.float64), 1.0, 0.02
    p = torch.tensor([0.2, 0.8, -0.1, 0.15], dtype=torch.float64, requires_grad=True)  # sigma, lambda, mu_J, delta_J
    sigma, lam, muJ, dJ = p
    kbar = torch.exp(muJ + 0.5 * dJ ** 2) - 1
    n = torch.arange(40, dtype=torch.float64).unsqueeze(1)
    sigma_n = torch.sqrt(sigma ** 2 + n * dJ ** 2 / T)
    r_n = r - lam * kbar + n * (muJ + 0.5 * dJ ** 2) / T
    lam_p = lam * (1 + kbar)
    log_w = -lam_p * T + n * torch.log(lam_p * T) - torch.lgamma(n + 1)
    d1 = (math.log(S0) - torch.log(K) + (r_n + 0.5 * sigma_n ** 2) * T) / (sigma_n * math.sqrt(T))
    d2 = d1 - sigma_n * math.sqrt(T)
    N = torch.special.ndtr
    bs = S0 * N(d1) - K * torch.exp(-r_n * T) * N(d2)
    series = (torch.exp(log_w) * bs).sum(0)
    g_series = torch.autograd.grad(series.sum(), p, retain_graph=True)[0]
    # Monte Carlo: compound Poisson log-jumps, the sum of n normals ~ N(n mu, n delta^2)
    gen = torch.Generator().manual_seed(3)
    n_paths = 20000
    counts = torch.poisson(torch.full((n_paths,), 0.8, dtype=torch.float64), generator=gen)
    Z = torch.randn(n_paths, generator=gen, dtype=torch.float64)
    Zj = torch.randn(n_paths, generator=gen, dtype=torch.float64)
    log_ST = math.log(S0) + (r - lam * kbar - 0.5 * sigma ** 2) * T + sigma * math.sqrt(T) * Z \
        + counts * muJ + torch.sqrt(counts) * dJ * Zj
    mc = math.exp(-r * T) * torch.relu(log_ST.exp().unsqueeze(1) - K).mean(0)
    g_mc = torch.autograd.grad(mc.sum(), p)[0]
    return dict(series=series, g_series=g_series, mc=mc, g_mc=g_mc, counts=torch.bincount(counts.long()))


def test_merton_jump_diffusion():
    ours, _ = run_both(merton, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours["mc"], ours["series"], rtol=0.03)
    # pathwise, lambda reaches the paths only through the compensator (the counts are drawn): the others agree
    np.testing.assert_allclose(ours["g_mc"][[0, 2, 3]], ours["g_series"][[0, 2, 3]], rtol=0.05)
    # Poisson(0.8) frequencies
    freq = ours["counts"][:4] / 20000
    np.testing.assert_allclose(freq, [math.exp(-0.8) * 0.8 ** k / math.factorial(k) for k in range(4)], atol=0.01)


# ----------------------------------------------------------------------------------------------
# Dupire's local volatility from a smooth call surface, by autograd in strike (twice) and maturity, and
# a Crank-Nicolson finite-difference pricer differentiated through its time loop
# ----------------------------------------------------------------------------------------------


def local_vol_and_pde(m):
    torch = m.torch
    N = torch.special.ndtr
    S0, r = 100.0, 0.02

    def total_variance(k, T):  # an SVI slice per maturity, a + b(rho (k - m) + sqrt((k - m)^2 + s^2)), times T
        a, b, rho, m_, s = 0.02, 0.1, -0.4, 0.0, 0.3
        return T * (a + b * (rho * (k - m_) + torch.sqrt((k - m_) ** 2 + s ** 2)))

    K = torch.linspace(80.0, 120.0, 5, dtype=torch.float64).requires_grad_()
    T = torch.full((5,), 0.75, dtype=torch.float64, requires_grad=True)
    k = torch.log(K / (S0 * torch.exp(r * T)))
    w = total_variance(k, T)
    d1 = (-k + 0.5 * w) / torch.sqrt(w)
    d2 = d1 - torch.sqrt(w)
    C = S0 * N(d1) - K * torch.exp(-r * T) * N(d2)
    dC_dK, dC_dT = torch.autograd.grad(C.sum(), (K, T), create_graph=True)
    d2C_dK2, = torch.autograd.grad(dC_dK.sum(), K, create_graph=True)
    local_var = (dC_dT + r * K * dC_dK) / (0.5 * K ** 2 * d2C_dK2)
    local_vol = torch.sqrt(local_var)
    # the local volatility's sensitivity to the surface point (third-order through the graph)
    dlv_dK, = torch.autograd.grad(local_vol.sum(), K)

    # Crank-Nicolson on a log-price grid: (I - dt/2 A) V^{n+1} = (I + dt/2 A) V^n, A tridiagonal
    sigma = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    n_x, n_t, Tm, strike = 161, 60, 0.5, 100.0
    x = torch.linspace(math.log(20.0), math.log(500.0), n_x, dtype=torch.float64)
    dx = (x[1] - x[0]).item()
    dt = Tm / n_t
    mu = r - 0.5 * sigma ** 2
    lower = 0.5 * sigma ** 2 / dx ** 2 - mu / (2 * dx)
    diag = -sigma ** 2 / dx ** 2 - r
    upper = 0.5 * sigma ** 2 / dx ** 2 + mu / (2 * dx)
    inner = n_x - 2
    A = (torch.diag(diag.expand(inner)) + torch.diag(lower.expand(inner - 1), -1)
         + torch.diag(upper.expand(inner - 1), 1))
    I = torch.eye(inner, dtype=torch.float64)
    lu = torch.linalg.lu_factor(I - 0.5 * dt * A)
    B = I + 0.5 * dt * A
    V = torch.clamp(torch.exp(x) - strike, min=0)[1:-1]
    for n in range(n_t):
        tau = (n + 1) * dt
        rhs = B @ V
        upper_boundary = math.exp(x[-1].item()) - strike * torch.exp(torch.tensor(-r * tau, dtype=torch.float64))
        boundary_term = (0.5 * dt * upper * 2 * upper_boundary).reshape(1)
        rhs = rhs + torch.cat([torch.zeros(inner - 1, dtype=torch.float64), boundary_term])
        V = torch.linalg.lu_solve(*lu, rhs.unsqueeze(-1)).squeeze(-1)
    at = torch.searchsorted(x[1:-1], torch.tensor([math.log(S0)], dtype=torch.float64)).item()
    wgt = (math.log(S0) - x[at]) / dx
    pde_price = V[at - 1] * (1 - wgt) + V[at] * wgt
    pde_vega, = torch.autograd.grad(pde_price, sigma)
    return dict(C=C.detach(), local_vol=local_vol.detach(), dlv_dK=dlv_dK, pde_price=pde_price.detach(),
                pde_vega=pde_vega)


def test_local_vol_and_crank_nicolson():
    ours, _ = run_both(local_vol_and_pde, rtol=1e-8, atol=1e-10)
    assert np.all(np.isfinite(ours["local_vol"])) and np.all(ours["local_vol"] > 0)
    # Dupire by central differences on the same surface in NumPy
    def call(K, T):
        k = np.log(K / (100.0 * np.exp(0.02 * T)))
        w = T * (0.02 + 0.1 * (-0.4 * k + np.sqrt(k ** 2 + 0.09)))
        d1 = (-k + 0.5 * w) / np.sqrt(w)
        return 100.0 * norm_cdf(d1) - K * np.exp(-0.02 * T) * norm_cdf(d1 - np.sqrt(w))

    K, T, h = np.linspace(80.0, 120.0, 5), 0.75, 1e-3
    dT = (call(K, T + h) - call(K, T - h)) / (2 * h)
    dK = (call(K + 0.01, T) - call(K - 0.01, T)) / 0.02
    dKK = (call(K + 0.01, T) - 2 * call(K, T) + call(K - 0.01, T)) / 1e-4
    np.testing.assert_allclose(ours["local_vol"], np.sqrt((dT + 0.02 * K * dK) / (0.5 * K ** 2 * dKK)), rtol=1e-4)
    bs = bs_closed_form(100.0, 100.0, 0.5, 0.02, 0.25)
    assert ours["pde_price"] == pytest.approx(bs["price"], rel=5e-3)
    assert ours["pde_vega"] == pytest.approx(bs["vega"], rel=2e-2)


# ----------------------------------------------------------------------------------------------
# Adjoint Greeks by hand: a Black-Scholes autograd.Function in the setup_context style, with an analytic
# backward and jvp, under torch.func (vmap of grad, grad of grad, jvp, jacfwd) and the checks
# ----------------------------------------------------------------------------------------------


def analytic_adjoint(m):
    torch = m.torch
    N = torch.special.ndtr

    class BSCall(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(S, sigma, K):  # unit maturity, zero rates
            d1 = (torch.log(S / K) + 0.5 * sigma ** 2) / sigma
            return S * N(d1) - K * N(d1 - sigma)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)
            ctx.save_for_forward(*inputs)

        @staticmethod
        def backward(ctx, grad):
            S, sigma, K = ctx.saved_tensors
            d1 = (torch.log(S / K) + 0.5 * sigma ** 2) / sigma
            return grad * N(d1), grad * S * torch.exp(-0.5 * d1 ** 2) / math.sqrt(2 * math.pi), None

        @staticmethod
        def jvp(ctx, dS, dsigma, dK):
            S, sigma, K = ctx.saved_tensors
            d1 = (torch.log(S / K) + 0.5 * sigma ** 2) / sigma
            return dS * N(d1) + dsigma * S * torch.exp(-0.5 * d1 ** 2) / math.sqrt(2 * math.pi)

    S = torch.tensor([90.0, 100.0, 110.0], dtype=torch.float64)
    sigma = torch.tensor([0.2, 0.25, 0.3], dtype=torch.float64)
    K = torch.tensor(100.0, dtype=torch.float64)
    delta, vega = torch.func.vmap(torch.func.grad(BSCall.apply, argnums=(0, 1)), in_dims=(0, 0, None))(S, sigma, K)
    gamma = torch.func.vmap(torch.func.grad(torch.func.grad(BSCall.apply)), in_dims=(0, 0, None))(S, sigma, K)
    S_ = S.clone().requires_grad_()
    first, = torch.autograd.grad(BSCall.apply(S_, sigma, K).sum(), S_, create_graph=True)
    gamma_graph, = torch.autograd.grad(first.sum(), S_)
    inputs = (S.clone().requires_grad_(), sigma.clone().requires_grad_(), K)
    checks = (torch.autograd.gradcheck(BSCall.apply, inputs), torch.autograd.gradgradcheck(BSCall.apply, inputs))
    delta_jvp = torch.func.jvp(lambda s: BSCall.apply(s, sigma, K), (S,), (torch.ones_like(S),))[1]
    jac = torch.func.jacfwd(lambda s: BSCall.apply(s, sigma, K))(S)
    return dict(delta=delta, vega=vega, gamma=gamma, gamma_graph=gamma_graph, checks=checks, delta_jvp=delta_jvp,
                jac=jac)


def test_analytic_adjoint_function():
    ours, _ = run_both(analytic_adjoint, rtol=1e-10, atol=1e-12)
    want = bs_closed_form(np.array([90.0, 100.0, 110.0]), 100.0, 1.0, 0.0, np.array([0.2, 0.25, 0.3]))
    for name in ("delta", "vega", "gamma"):
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(ours["gamma_graph"], want["gamma"], rtol=1e-9)
    np.testing.assert_allclose(ours["delta_jvp"], want["delta"], rtol=1e-9)
    np.testing.assert_allclose(ours["jac"], np.diag(want["delta"]), rtol=1e-9, atol=1e-14)
    assert ours["checks"] == (True, True)
