# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Quantitative-finance programs, run as tests/probe19_finance_common.py says. Credit: ``matrix_exp`` of a migration
generator fitted by L-BFGS, ``matrix_power``, ``eigvals``, CDS hazards by Newton with ``create_graph``; credit
survival models (Cox's partial likelihood with Breslow ties by ``logcumsumexp`` and ``searchsorted``, a
right-censored Weibull by ``Adam``)."""

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Credit: rating migration as a continuous-time Markov chain (matrix_exp of a generator learnt from an
# annual transition matrix), hazard-rate bootstrapping from CDS spreads by cumsum
# ----------------------------------------------------------------------------------------------


ANNUAL = np.array([[0.90, 0.08, 0.015, 0.005],
                   [0.05, 0.85, 0.08, 0.02],
                   [0.01, 0.09, 0.80, 0.10],
                   [0.0, 0.0, 0.0, 1.0]])


def credit(m):
    torch, F, optim = m.torch, m.F, m.optim
    target = torch.tensor(ANNUAL, dtype=torch.float64)
    raw = torch.full((3, 4), -3.0, dtype=torch.float64, requires_grad=True)
    mask = 1 - torch.eye(4, dtype=torch.float64)[:3]

    def generator():
        off = F.softplus(raw) * mask
        Q = off.clone()
        Q[torch.arange(3), torch.arange(3)] = -off.sum(1)
        return torch.cat([Q, torch.zeros(1, 4, dtype=torch.float64)])

    opt = optim.LBFGS([raw], lr=1, max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        P = torch.linalg.matrix_exp(generator())
        loss = ((P - target) ** 2).sum() * 100
        loss.backward()
        return loss

    opt.step(closure)
    Q = generator().detach()
    P1 = torch.linalg.matrix_exp(Q)
    P5 = torch.linalg.matrix_power(P1, 5)
    P5_exp = torch.linalg.matrix_exp(5 * Q)
    monthly = torch.linalg.matrix_exp(Q / 12)
    eig = torch.linalg.eigvals(P1)
    # CDS bootstrapping: piecewise-constant hazards so that premium leg = protection leg
    spreads = torch.tensor([0.010, 0.012, 0.015, 0.017, 0.020], dtype=torch.float64, requires_grad=True)
    R = 0.4
    dt = 0.25
    times = torch.arange(1, 21, dtype=torch.float64) * dt
    disc = torch.exp(-0.03 * times)
    hazards = []
    for j in range(5):
        h = (spreads[j] / (1 - R)).detach().clone().requires_grad_()
        for it in range(30):  # Newton, a graph per step
            hs = torch.stack(hazards + [h])
            per_q = hs.repeat_interleave(4)[: 4 * (j + 1)]
            surv = torch.exp(-torch.cumsum(per_q * dt, 0))
            prev = F.pad(surv, (1, 0), value=1.0)[:-1]
            premium = spreads[j] * (disc[: 4 * (j + 1)] * surv * dt).sum()
            protection = (1 - R) * (disc[: 4 * (j + 1)] * (prev - surv)).sum()
            f = premium - protection
            g, = torch.autograd.grad(f, h, create_graph=True)
            h = h - f / g
        hazards.append(h)
    hazards = torch.stack(hazards)
    dh = torch.autograd.grad(hazards.sum(), spreads)[0]
    return dict(Q=Q, P1=P1, P5=P5, P5_exp=P5_exp, monthly=monthly, eig=eig, hazards=hazards.detach(), dh=dh)


def test_credit_migration_and_hazards():
    ours, _ = run_both(credit, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["P5"], ours["P5_exp"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours["P1"].sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.matrix_power(ours["monthly"], 12), ours["P1"], rtol=1e-9, atol=1e-12)
    # flat spread 1% with R = 40%: hazard about s / (1 - R)
    assert ours["hazards"][0] == pytest.approx(0.01 / 0.6, rel=0.01)
    assert np.all(np.diff(ours["hazards"]) > 0)


# ----------------------------------------------------------------------------------------------
# Credit survival models: Cox proportional hazards (Breslow's partial likelihood by logcumsumexp over the
# risk scores sorted by default time, with ties) and a Weibull accelerated-failure-time model with right
# censoring (log_prob for defaults, log survival 1 - cdf for the censored)
# ----------------------------------------------------------------------------------------------


def default_times(n=120, seed=31):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    beta = np.array([0.8, -0.5, 0.3])
    times = rng.weibull(1.5, n) * np.exp(-X @ beta / 1.5) * 5
    censor = rng.uniform(0, 8, n)
    observed = times <= censor
    return X, np.maximum(np.round(np.minimum(times, censor), 1), 0.1), observed  # rounded: tied default times


def survival(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    X, t_obs, event = default_times()
    X, t_obs = torch.tensor(X), torch.tensor(t_obs)
    event = torch.tensor(event)

    cox = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        cox.weight.zero_()
    order = torch.argsort(t_obs, descending=True, stable=True)
    opt = optim.LBFGS(cox.parameters(), lr=1, max_iter=30, line_search_fn="strong_wolfe")

    def partial_nll():
        risk = cox(X).squeeze(-1)[order]
        log_risk_set = torch.logcumsumexp(risk, dim=0)  # over everyone still at risk (later or equal times)
        # Breslow: tied times share the risk set of the earliest among them (the last in descending order)
        times = t_obs[order]
        last_of_tie = torch.searchsorted(-times, -times, right=True) - 1
        log_risk_set = log_risk_set[last_of_tie]
        return -((risk - log_risk_set) * event[order].double()).sum() / event.sum()

    def closure():
        opt.zero_grad()
        loss = partial_nll()
        loss.backward()
        return loss

    opt.step(closure)
    cox_beta = cox.weight.detach().clone().squeeze(0)
    cox_nll = partial_nll().detach()

    # Weibull AFT: log T = mu + x'b + sigma * eps, by Adam
    params = torch.zeros(5, dtype=torch.float64, requires_grad=True)  # mu, b (3), log sigma
    adam = optim.Adam([params], lr=0.05)
    aft_losses = []
    for step in range(60):
        scale = torch.exp(params[0] + X @ params[1:4])
        concentration = torch.exp(-params[4])
        weibull = torch.distributions.Weibull(scale, concentration)
        log_surv = torch.log1p(-weibull.cdf(t_obs).clamp(max=1 - 1e-12))
        ll = torch.where(event, weibull.log_prob(t_obs), log_surv).sum()
        adam.zero_grad()
        (-ll).backward()
        adam.step()
        aft_losses.append(-ll.detach())
    return dict(cox_beta=cox_beta, cox_nll=cox_nll, aft_losses=torch.stack(aft_losses), aft=params.detach())


def breslow_numpy(X, t, e, beta):
    risk = X @ beta
    nll = 0.0
    for i in np.where(e)[0]:
        at_risk = t >= t[i]
        nll -= risk[i] - np.log(np.exp(risk[at_risk]).sum())
    return nll / e.sum()


def test_credit_survival_models():
    ours, _ = run_both(survival, rtol=1e-8, atol=1e-10)
    X, t, e = default_times()
    assert len(np.unique(t[e])) < e.sum()  # tied default times
    assert ours["cox_nll"] == pytest.approx(breslow_numpy(X, t, e, ours["cox_beta"]), rel=1e-10)
    # the hazard rises with the first covariate, falls with the second
    assert ours["cox_beta"][0] > 0.3 and ours["cox_beta"][1] < -0.1
    assert ours["aft_losses"][-1] < ours["aft_losses"][0]
