# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Statistical-modelling programs (see tests/pytorch_programs.py), as statisticians and epidemiologists write them,
each run on chainrule and on PyTorch in float64 and checked against NumPy by hand. Regression beyond the mean and the
normal: quantile regression with a pinball loss over several quantiles and a crossing penalty; cumulative-logit
ordinal regression (cutpoints by ``cumsum`` of ``softplus``); Huber and Tukey-biweight robust regression by IRLS."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

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
