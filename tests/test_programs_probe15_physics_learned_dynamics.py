# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Physics programs for scientific machine learning (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights, mostly in float64, comparing values, gradients and training trajectories, and checked
by hand (closed forms, NumPy, finite differences) where PyTorch is missing. Learnt dynamics: a deep equilibrium layer
with an adjoint fixed-point hook; deep Koopman with DMD (``svd``, complex ``eig``); a neural SDE (Euler-Maruyama)."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A deep equilibrium layer (implicit-layers tutorial, ch. 4): the fixed point found without a graph,
# its backward by a hook that solves the adjoint fixed point with autograd.grad
# ----------------------------------------------------------------------------------------------


def make_deq(m):
    torch, nn = m.torch, m.nn

    class TanhFixedPointLayer(nn.Module):
        def __init__(self, out_features, tol=1e-10, max_iter=200):
            super().__init__()
            self.linear = nn.Linear(out_features, out_features, bias=False)
            self.tol = tol
            self.max_iter = max_iter

        def forward(self, x):
            return torch.tanh(self.linear(x) + x)

    class DEQFixedPoint(nn.Module):
        def __init__(self, f, solver, **kwargs):
            super().__init__()
            self.f = f
            self.solver = solver
            self.kwargs = kwargs

        def forward(self, x):
            # compute forward pass and re-engage autograd tape
            with torch.no_grad():
                z, self.forward_res = self.solver(lambda z: self.f(z, x), torch.zeros_like(x), **self.kwargs)
            z = self.f(z, x)

            # set up Jacobian vector product (without additional forward calls)
            z0 = z.clone().detach().requires_grad_()
            f0 = self.f(z0, x)

            def backward_hook(grad):
                g, self.backward_res = self.solver(
                    lambda y: torch.autograd.grad(f0, z0, y, retain_graph=True)[0] + grad, grad, **self.kwargs)
                return g

            self.hook = z.register_hook(backward_hook)
            return z

    class Layer(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.lin = nn.Linear(n, n)
            self.inj = nn.Linear(n, n)
            with torch.no_grad():
                self.lin.weight.mul_(0.3)

        def forward(self, z, x):
            return torch.tanh(self.lin(z) + self.inj(x))

    def forward_iteration(f, x0, max_iter=200, tol=1e-11):
        f0 = f(x0)
        res = []
        for k in range(max_iter):
            x = f0
            f0 = f(x)
            res.append((f0 - x).norm().item() / (1e-5 + f0.norm().item()))
            if res[-1] < tol:
                break
        return f0, res

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.deq = DEQFixedPoint(Layer(6), forward_iteration, tol=1e-11, max_iter=200)
            self.head = nn.Linear(6, 1)

        def forward(self, x):
            return self.head(self.deq(x))

    return Model().double()


def deq(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    model = load(m, make_deq(m), weights)
    rng = np.random.default_rng(19)
    x = torch.tensor(rng.standard_normal((8, 6)))
    y = torch.tensor(rng.standard_normal((8, 1)))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), len(model.deq.forward_res), len(model.deq.backward_res)))
    grads = [p.grad.clone() for p in model.parameters()]
    # the implicit gradient against unrolling the fixed-point iteration with a graph
    z = torch.zeros_like(x)
    for k in range(200):
        z = model.deq.f(z, x)
    unrolled = ((model.head(z) - y) ** 2).mean()
    optimizer.zero_grad()
    unrolled_grads = torch.autograd.grad(unrolled, list(model.parameters()))
    implicit = ((model(x) - y) ** 2).mean()
    implicit.backward()
    return {"history": history, "grads": grads, "unrolled": unrolled_grads,
            "implicit": [p.grad for p in model.parameters()]}


def test_deep_equilibrium_layer():
    weights = weights_of(make_deq)
    ours, _ = run_both(deq, weights, rtol=1e-8, atol=1e-10)
    for a, b in zip(ours["implicit"], ours["unrolled"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0]


# ----------------------------------------------------------------------------------------------
# Deep Koopman with dynamic mode decomposition in the loss: truncated SVD, the reduced operator's
# complex eigenvalues by torch.linalg.eig, differentiated back to the encoder
# ----------------------------------------------------------------------------------------------


def make_koopman(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 12), nn.Tanh(), nn.Linear(12, 4)).double()


def koopman(m, weights, steps=4, rank=3):
    torch, optim = m.torch, m.optim
    encoder = load(m, make_koopman(m), weights)
    # a Duffing oscillator's trajectory by RK4
    def f(z):
        return np.array([z[1], -0.1 * z[1] - z[0] - 0.5 * z[0] ** 3])

    z, traj = np.array([1.0, 0.0]), []
    for i in range(30):
        traj.append(z)
        k1 = f(z)
        k2 = f(z + 0.05 * k1)
        k3 = f(z + 0.05 * k2)
        k4 = f(z + 0.1 * k3)
        z = z + 0.1 / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    data = torch.tensor(np.array(traj))
    optimizer = optim.Adam(encoder.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        g = encoder(data).T  # observables x time
        X, Y = g[:, :-1], g[:, 1:]
        U, S, Vh = torch.linalg.svd(X, full_matrices=False)
        U_r, S_r, V_r = U[:, :rank], S[:rank], Vh[:rank].T
        A_tilde = U_r.T @ Y @ V_r @ torch.diag(1 / S_r)
        eigvals, W = torch.linalg.eig(A_tilde)
        # DMD modes and the one-step prediction by the rank-r Koopman operator
        Phi = Y.to(torch.complex128) @ (V_r @ torch.diag(1 / S_r)).to(torch.complex128) @ W
        pred = U_r @ A_tilde @ U_r.T @ X
        loss = ((pred - Y) ** 2).mean() + 0.1 * (eigvals.abs() - 1).clamp(min=0).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), eigvals.abs().max().item()))
    spectrum = torch.sort(eigvals.detach().abs()).values
    return {"history": history, "spectrum": spectrum, "mode_norms": torch.sort(Phi.detach().abs().sum(0)).values,
            "grads": [p.grad for p in encoder.parameters()]}


def test_deep_koopman_dmd():
    weights = weights_of(make_koopman)
    ours, _ = run_both(koopman, weights, rtol=1e-7, atol=1e-9)
    assert ours["history"][-1][0] < ours["history"][0][0]
    assert ours["spectrum"].shape == (3,)


# ----------------------------------------------------------------------------------------------
# A neural SDE (Euler-Maruyama, noise from the seeded global generator) fitted to the moments and the
# likelihood of an Ornstein-Uhlenbeck process, gradients through the reparameterised paths
# ----------------------------------------------------------------------------------------------


def make_sde(m):
    nn = m.nn

    class SDE(nn.Module):
        def __init__(self):
            super().__init__()
            self.drift = nn.Sequential(nn.Linear(2, 12), nn.SiLU(), nn.Linear(12, 1))
            self.log_sigma = nn.Parameter(m.torch.tensor([-1.0]))

        def f(self, t, x):
            return self.drift(m.torch.cat([x, t.expand_as(x)], 1))

        def g(self, t, x):
            return self.log_sigma.exp().expand_as(x)

    return SDE().double()


def neural_sde(m, weights, epochs=4, n_paths=32, n_steps=20):
    torch, optim = m.torch, m.optim
    torch.manual_seed(1)
    sde = load(m, make_sde(m), weights)
    dt = 1.0 / n_steps
    # observations of an OU process dx = -2 (x - 0.5) dt + 0.3 dW at t = 1, drawn with NumPy
    rng = np.random.default_rng(23)
    x_np = np.zeros(200)
    for k in range(n_steps):
        x_np = x_np - 2 * (x_np - 0.5) * dt + 0.3 * np.sqrt(dt) * rng.standard_normal(200)
    observed = torch.tensor(x_np)

    def sdeint(x0):
        x, t = x0, torch.zeros(1, 1, dtype=torch.float64)
        for k in range(n_steps):
            dW = torch.randn_like(x) * math.sqrt(dt)
            x = x + sde.f(t, x) * dt + sde.g(t, x) * dW
            t = t + dt
        return x

    optimizer = optim.Adam(sde.parameters(), lr=2e-2)
    history = []
    for epoch in range(epochs):
        x_T = sdeint(torch.zeros(n_paths, 1, dtype=torch.float64)).squeeze(1)
        fitted = torch.distributions.Normal(x_T.mean(), x_T.std())
        nll = -fitted.log_prob(observed).mean()
        moments = (x_T.mean() - observed.mean()) ** 2 + (x_T.var() - observed.var()) ** 2
        loss = nll + 10 * moments
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), sde.log_sigma.exp().item(), x_T.mean().item()))
    return {"history": history, "x_T": x_T.detach(), "grads": [p.grad for p in sde.parameters()]}


def test_neural_sde_euler_maruyama():
    weights = weights_of(make_sde)
    ours, _ = run_both(neural_sde, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0]
    assert ours["x_T"].shape == (32,)
