# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Quantitative-finance programs, run as tests/probe19_finance_common.py says. Networks that price and hedge: deep
hedging (an MLP policy, entropic risk by ``logsumexp``, ``clip_grad_norm_``); differential machine learning (input
gradients inside the loss) and a deep BSDE solver with ``BatchNorm1d`` and ``MultiStepLR``."""

import math

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Deep hedging (Buehler et al.): an MLP policy of (time, log-moneyness, position) trained on simulated
# paths to minimise the entropic risk / CVaR of the hedged P&L with proportional transaction costs
# ----------------------------------------------------------------------------------------------


def make_policy(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).double()


def deep_hedging(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    policy = load(m, make_policy(m), weights)
    torch.manual_seed(1)
    S0, K, sigma, T, n_steps, cost = 1.0, 1.0, 0.2, 30 / 365, 10, 1e-3
    dt = T / n_steps
    n_paths = 512

    def simulate(n):
        Z = torch.randn(n, n_steps, dtype=torch.float64)
        log_inc = -0.5 * sigma ** 2 * dt + sigma * math.sqrt(dt) * Z
        return S0 * torch.exp(F.pad(log_inc.cumsum(1), (1, 0)))

    def hedge_pnl(paths):
        position = torch.zeros(paths.shape[0], dtype=torch.float64)
        pnl = torch.zeros_like(position)
        for t in range(n_steps):
            features = torch.stack([torch.full_like(position, t * dt), torch.log(paths[:, t] / K), position], dim=1)
            new_position = policy(features).squeeze(-1)
            pnl = pnl - cost * paths[:, t] * (new_position - position).abs()
            pnl = pnl + new_position * (paths[:, t + 1] - paths[:, t])
            position = new_position
        payoff = torch.clamp(paths[:, -1] - K, min=0)
        return pnl - payoff

    def entropic_risk(pnl, lam=1.0):
        return (torch.logsumexp(-lam * pnl, dim=0) - math.log(pnl.shape[0])) / lam

    def cvar(pnl, alpha=0.5):
        losses = -pnl
        k = int(alpha * losses.shape[0])
        return losses.topk(k).values.mean()

    optimizer = optim.Adam(policy.parameters(), lr=5e-3)
    history = []
    for epoch in range(15):
        paths = simulate(n_paths)
        pnl = hedge_pnl(paths)
        premium = entropic_risk(pnl)
        loss = premium + 0.1 * cvar(pnl)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        history.append(loss.detach())
    with torch.no_grad():
        grid = torch.stack([torch.full((5,), 0.5 * T), torch.linspace(-0.1, 0.1, 5), torch.full((5,), 0.5)], 1).double()
        deltas = policy(grid).squeeze(-1)
    return dict(history=torch.stack(history), deltas=deltas, weights=policy.state_dict())


def test_deep_hedging():
    weights = weights_of(make_policy)
    ours, _ = run_both(deep_hedging, weights, rtol=1e-7, atol=1e-9)
    assert ours["history"][-5:].mean() < ours["history"][:5].mean()


# ----------------------------------------------------------------------------------------------
# Differential machine learning (Huge and Savine): a softplus network fitted to simulated payoffs and
# to their pathwise deltas, its input gradient taken with create_graph=True inside the loss
# ----------------------------------------------------------------------------------------------


def make_twin(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(1, 20), nn.Softplus(), nn.Linear(20, 20), nn.SiLU(), nn.Linear(20, 1)).double()


def differential_ml(m, weights):
    torch = m.torch
    net = load(m, make_twin(m), weights)
    gen = torch.Generator().manual_seed(2)
    n, K, sigma, T = 256, 1.0, 0.2, 0.5
    S0 = 0.6 + 0.8 * torch.rand(n, 1, generator=gen, dtype=torch.float64)
    S0.requires_grad_()
    Z = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    S_T = S0 * torch.exp(-0.5 * sigma ** 2 * T + sigma * math.sqrt(T) * Z)
    payoff = torch.relu(S_T - K)
    pathwise_delta, = torch.autograd.grad(payoff.sum(), S0)
    x, y, dydx = ((S0.detach() - 1.0) / 0.25), payoff.detach(), pathwise_delta.detach() * 0.25
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    history = []
    for step in range(40):
        xr = x.clone().requires_grad_()
        pred = net(xr)
        pred_delta, = torch.autograd.grad(pred.sum(), xr, create_graph=True)
        loss = ((pred - y) ** 2).mean() + ((pred_delta - dydx) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.detach())
    grid = torch.linspace(-1, 1, 5, dtype=torch.float64).unsqueeze(1).requires_grad_()
    value = net(grid)
    delta, = torch.autograd.grad(value.sum(), grid, create_graph=True)
    gamma, = torch.autograd.grad(delta.sum(), grid)
    return dict(history=torch.stack(history), value=value.detach(), delta=delta.detach(), gamma=gamma,
                weights=net.state_dict())


def test_differential_machine_learning():
    ours, _ = run_both(differential_ml, weights_of(make_twin), rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# The deep BSDE solver (Han, Jentzen and E) for a European call: a network per time step with
# BatchNorm1d gives Z_t, Y_0 and Z_0 are parameters, the terminal mismatch trained by Adam
# ----------------------------------------------------------------------------------------------


def make_bsde(m, n_steps=8):
    nn, torch = m.nn, m.torch

    class DeepBSDE(nn.Module):
        def __init__(self):
            super().__init__()
            self.y0 = nn.Parameter(torch.tensor([5.0]))
            self.z0 = nn.Parameter(torch.tensor([[0.1]]))
            self.subnets = nn.ModuleList(
                # no shift before a BatchNorm (bias=False, affine=False): its gradient is zero but for rounding,
                # which Adam would blow up to steps of lr in directions that change nothing
                nn.Sequential(nn.BatchNorm1d(1, affine=False), nn.Linear(1, 8, bias=False), nn.BatchNorm1d(8),
                              nn.ReLU(), nn.Linear(8, 1))
                for _ in range(n_steps - 1))

        def forward(self, x, dW, r, dt):
            y = self.y0.expand(x.shape[0], 1)
            z = self.z0.expand(x.shape[0], 1)
            for t in range(dW.shape[1]):
                y = y * (1 + r * dt) + z * dW[:, t:t + 1]
                if t < len(self.subnets):
                    z = self.subnets[t](x[:, t + 1:t + 2] / 100.0) * x[:, t + 1:t + 2] * 0.2 / 100.0
            return y

    return DeepBSDE().double()


def deep_bsde(m, weights):
    torch = m.torch
    model = load(m, make_bsde(m), weights)
    torch.manual_seed(6)
    n_steps, T, r, sigma, K = 8, 0.5, 0.02, 0.2, 100.0
    dt = T / n_steps
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[15], gamma=0.2)
    losses = []
    for step in range(25):
        dW = torch.randn(128, n_steps, dtype=torch.float64) * math.sqrt(dt)
        x = 100.0 * torch.exp(torch.cumsum(torch.cat([torch.zeros(128, 1, dtype=torch.float64),
                                                       (r - 0.5 * sigma ** 2) * dt + sigma * dW], 1), 1))
        # the martingale part of dX is sigma X dW: the network's z already carries sigma X
        y_T = model(x, dW * 100.0, r, dt)
        loss = ((y_T.squeeze(1) - torch.clamp(x[:, -1] - K, min=0)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    model.eval()
    with torch.no_grad():
        probe = model.subnets[3](torch.linspace(0.9, 1.1, 4, dtype=torch.float64).unsqueeze(1))
    return dict(losses=torch.stack(losses), y0=model.y0.detach(), probe=probe, state=model.state_dict())


def test_deep_bsde_solver():
    ours, _ = run_both(deep_bsde, weights_of(make_bsde), rtol=1e-7, atol=1e-9)
    assert ours["losses"][-5:].mean() < ours["losses"][:5].mean()
