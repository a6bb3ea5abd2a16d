# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Scientific programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch in float64, comparing
values, hyperparameters and gradients to about 1e-10, and checked against NumPy by hand. Gaussian-process regression
with its marginal likelihood (``torch.linalg.cholesky``, ``torch.cholesky_solve``, ``torch.linalg.solve_triangular``,
``logdet``, ``MultivariateNormal(scale_tril=L)``, hyperparameters learnt by Adam then L-BFGS); a Kalman filter whose
log-likelihood is differentiated with respect to its noise levels (``torch.linalg.solve``, ``slogdet``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Gaussian-process regression (exact inference, hyperparameters by the marginal likelihood)
# ----------------------------------------------------------------------------------------------


def gp_data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, (25, 1))
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(25)
    Xs = np.linspace(-3.5, 3.5, 7)[:, None]
    return X, y, Xs


def gp(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    X, y, Xs = (torch.from_numpy(a) for a in gp_data())

    class ExactGP(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_lengthscale = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
            self.log_outputscale = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
            self.log_noise = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))

        def kernel(self, x1, x2):
            sqdist = torch.cdist(x1 / self.log_lengthscale.exp(), x2 / self.log_lengthscale.exp()).pow(2)
            return self.log_outputscale.exp() * torch.exp(-0.5 * sqdist)

        def nll(self, X, y):
            n = X.shape[0]
            K = self.kernel(X, X) + self.log_noise.exp() * torch.eye(n, dtype=X.dtype)
            L = torch.linalg.cholesky(K)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
            return 0.5 * (y.unsqueeze(-1) * alpha).sum() + L.diagonal().log().sum() + 0.5 * n * math.log(2 * math.pi)

        def predict(self, X, y, Xs):
            n = X.shape[0]
            K = self.kernel(X, X) + self.log_noise.exp() * torch.eye(n, dtype=X.dtype)
            L = torch.linalg.cholesky(K)
            Ks = self.kernel(X, Xs)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
            mean = (Ks.T @ alpha).squeeze(-1)
            v = torch.linalg.solve_triangular(L, Ks, upper=False)
            var = self.kernel(Xs, Xs).diagonal() - (v ** 2).sum(0)
            return mean, var

    model = ExactGP()
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    history = []
    for i in range(10):
        optimizer.zero_grad()
        loss = model.nll(X, y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    lbfgs = optim.LBFGS(model.parameters(), lr=1, max_iter=20, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = model.nll(X, y)
        loss.backward()
        return loss

    lbfgs.step(closure)
    with torch.no_grad():
        mean, var = model.predict(X, y, Xs)
        K = model.kernel(X, X) + model.log_noise.exp() * torch.eye(25, dtype=torch.float64)
        mvn = torch.distributions.MultivariateNormal(torch.zeros(25, dtype=torch.float64),
                                                     scale_tril=torch.linalg.cholesky(K))
        by_distribution = -mvn.log_prob(y)
        by_logdet = 0.5 * y @ torch.linalg.solve(K, y) + 0.5 * torch.logdet(K) + 12.5 * math.log(2 * math.pi)
        K_inv = torch.cholesky_inverse(torch.linalg.cholesky(K))
    loss = model.nll(X, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return {"history": history, "hyper": [p.detach() for p in model.parameters()], "nll": loss, "grads": grads,
            "mean": mean, "var": var, "by_distribution": by_distribution, "by_logdet": by_logdet, "K_inv": K_inv}


def test_gaussian_process_regression():
    ours, _ = run_both(gp, rtol=1e-8, atol=1e-10)
    X, y, Xs = gp_data()
    ell, sf2, sn2 = np.exp(ours["hyper"])
    k = lambda a, b: sf2 * np.exp(-0.5 * (a - b.T) ** 2 / ell ** 2)
    K = k(X, X) + sn2 * np.eye(25)
    nll = 0.5 * y @ np.linalg.solve(K, y) + 0.5 * np.linalg.slogdet(K)[1] + 12.5 * np.log(2 * np.pi)
    assert ours["nll"] == pytest.approx(nll, rel=1e-10)
    assert ours["by_distribution"] == pytest.approx(nll, rel=1e-10)
    assert ours["by_logdet"] == pytest.approx(nll, rel=1e-10)
    np.testing.assert_allclose(ours["mean"], k(X, Xs).T @ np.linalg.solve(K, y), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["var"], sf2 - np.einsum("ij,ij->j", k(X, Xs), np.linalg.solve(K, k(X, Xs))),
                               rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ours["K_inv"], np.linalg.inv(K), rtol=1e-7, atol=1e-8)
    assert max(abs(g) for g in ours["grads"]) < 1e-4  # L-BFGS found the optimum
    assert ours["history"][-1] < ours["history"][0]
    # the gradient of the marginal likelihood by hand: 0.5 tr((alpha alpha^T - K^-1) dK/dtheta)
    alpha = np.linalg.solve(K, y)
    W = np.outer(alpha, alpha) - np.linalg.inv(K)
    dK_dnoise = sn2 * np.eye(25)
    assert ours["grads"][2] == pytest.approx(-0.5 * np.trace(W @ dK_dnoise), abs=1e-9)


# ----------------------------------------------------------------------------------------------
# A Kalman filter's log-likelihood, differentiated with respect to its noise levels
# ----------------------------------------------------------------------------------------------


def kalman_data():
    rng = np.random.default_rng(3)
    T = 25
    A = np.array([[1.0, 0.1], [0.0, 1.0]])
    x = np.zeros(2)
    ys = []
    for t in range(T):
        x = A @ x + np.array([0.0, 0.05]) * rng.standard_normal()
        ys.append(x[:1] + 0.3 * rng.standard_normal(1))
    return A, np.array(ys)


def kalman(m):
    torch, optim = m.torch, m.optim
    A_np, ys_np = kalman_data()
    A = torch.tensor(A_np)
    H = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    ys = torch.tensor(ys_np)
    log_q = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    log_r = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)

    def log_likelihood(log_q, log_r):
        Q = torch.diag(torch.stack([torch.zeros((), dtype=torch.float64), log_q.exp()]))
        R = log_r.exp().reshape(1, 1)
        x = torch.zeros(2, dtype=torch.float64)
        P = torch.eye(2, dtype=torch.float64)
        ll = 0
        for y in ys:
            x = A @ x
            P = A @ P @ A.T + Q
            S = H @ P @ H.T + R
            innovation = y - H @ x
            ll = ll - 0.5 * (innovation @ torch.linalg.solve(S, innovation) + torch.slogdet(2 * math.pi * S)[1])
            K = P @ H.T @ torch.linalg.inv(S)
            x = x + K @ innovation
            P = (torch.eye(2, dtype=torch.float64) - K @ H) @ P
        return ll

    ll = log_likelihood(log_q, log_r)
    g_q, g_r = torch.autograd.grad(ll, (log_q, log_r), create_graph=True)
    h_qr = torch.autograd.grad(g_q, log_r)[0]
    optimizer = optim.Adam([log_q, log_r], lr=0.05)
    history = []
    for step in range(5):
        optimizer.zero_grad()
        loss = -log_likelihood(log_q, log_r)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"ll": ll, "grads": (g_q, g_r), "h_qr": h_qr, "history": history, "params": (log_q, log_r)}


def test_kalman_filter_likelihood_gradients():
    ours, _ = run_both(kalman, rtol=1e-9, atol=1e-11)
    A, ys = kalman_data()

    def ll(log_q, log_r):
        Q, R = np.diag([0.0, np.exp(log_q)]), np.exp(log_r)
        x, P, total = np.zeros(2), np.eye(2), 0.0
        for y in ys[:, 0]:
            x, P = A @ x, A @ P @ A.T + Q
            S = P[0, 0] + R
            v = y - x[0]
            total -= 0.5 * (v * v / S + np.log(2 * np.pi * S))
            K = P[:, 0] / S
            x, P = x + K * v, P - np.outer(K, P[0])
        return total

    assert ours["ll"] == pytest.approx(ll(-3.0, -1.0), rel=1e-12)
    h = 1e-6
    assert ours["grads"][0] == pytest.approx((ll(-3.0 + h, -1.0) - ll(-3.0 - h, -1.0)) / (2 * h), rel=1e-6)
    assert ours["grads"][1] == pytest.approx((ll(-3.0, -1.0 + h) - ll(-3.0, -1.0 - h)) / (2 * h), rel=1e-6)
    h = 1e-4
    mixed = (ll(-3 + h, -1 + h) - ll(-3 + h, -1 - h) - ll(-3 - h, -1 + h) + ll(-3 - h, -1 - h)) / (4 * h * h)
    assert ours["h_qr"] == pytest.approx(mixed, rel=1e-4)
