# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Physics programs for scientific machine learning (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights, mostly in float64, comparing values, gradients and training trajectories, and checked
by hand (closed forms, NumPy, finite differences) where PyTorch is missing. Mechanics: a Lagrangian neural network
(accelerations from ``autograd.functional.hessian``/``jacobian (create_graph=True)`` and ``linalg.pinv``, again by
``torch.func.vmap(hessian)`` and ``linalg.solve``); the Jacobian of a Stormer-Verlet step by
``jacrev``/``jacfwd``/``functional.jacobian`` (symplectic, ``slogdet`` 0); Hamiltonian Monte Carlo by leapfrog with
``autograd.grad`` and a Laplace approximation (``MultivariateNormal``); a differentiable mass-spring body with
penalty ground contact (SGD nesterov)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Lagrangian neural network (Cranmer, Greydanus, Hoyer et al. 2020) on a pair of coupled oscillators
# ----------------------------------------------------------------------------------------------


def make_lnn(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Softplus(), nn.Linear(16, 16), nn.Softplus(),
                         nn.Linear(16, 1)).double()


def oscillator_data(n=12):
    rng = np.random.default_rng(3)
    q = rng.uniform(-1, 1, (n, 2))
    qdot = rng.uniform(-1, 1, (n, 2))
    # L = 1/2 |q'|^2 - 1/2 |q|^2 - 1/2 k (q1 - q2)^2 with k = 0.5
    qddot = np.stack([-q[:, 0] - 0.5 * (q[:, 0] - q[:, 1]), -q[:, 1] + 0.5 * (q[:, 0] - q[:, 1])], 1)
    return np.concatenate([q, qdot], 1), qddot


def lnn(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    net = load(m, make_lnn(m), weights)
    x_np, qddot_np = oscillator_data()
    x, qddot_true = torch.tensor(x_np), torch.tensor(qddot_np)

    def lagrangian(state):
        return net(state).squeeze(-1)

    def equation_of_motion(lagrangian, state):
        n = state.shape[0] // 2
        q_t = state[n:]
        H = torch.autograd.functional.hessian(lagrangian, state, create_graph=True)
        J = torch.autograd.functional.jacobian(lagrangian, state, create_graph=True)
        A = J[:n]
        B = H[n:, n:]
        C = H[n:, :n]
        q_tt = torch.linalg.pinv(B) @ (A - C @ q_t)
        return torch.cat([q_t, q_tt])

    optimizer = optim.Adam(net.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        pred = torch.stack([equation_of_motion(lagrangian, xi)[2:] for xi in x])
        loss = ((pred - qddot_true) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]

    # the same accelerations batched with torch.func
    from_func = torch.func
    params = {k: v.detach() for k, v in net.named_parameters()}

    def L(params, state):
        return from_func.functional_call(net, params, (state,)).squeeze(-1)

    def accel(params, state):
        H = from_func.hessian(L, argnums=1)(params, state)
        g = from_func.jacrev(L, argnums=1)(params, state)
        return torch.linalg.solve(H[2:, 2:], g[:2] - H[2:, :2] @ state[2:])

    batched = from_func.vmap(accel, in_dims=(None, 0))(params, x)
    looped = torch.stack([equation_of_motion(lagrangian, xi)[2:] for xi in x]).detach()

    # the analytic Lagrangian: the same machinery must recover its equations of motion exactly
    def true_lagrangian(state):
        q, q_t = state[:2], state[2:]
        return 0.5 * (q_t ** 2).sum() - 0.5 * (q ** 2).sum() - 0.25 * (q[0] - q[1]) ** 2

    exact = torch.stack([equation_of_motion(true_lagrangian, xi)[2:] for xi in x])
    return {"history": history, "grads": grads, "batched": batched, "looped": looped, "exact": exact}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_lagrangian_neural_network():
    weights = weights_of(make_lnn)
    ours, _ = run_both(lnn, weights, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["exact"], oscillator_data()[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["batched"], ours["looped"], rtol=1e-7, atol=1e-9)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Hamiltonian Monte Carlo for a damped oscillator's parameters (leapfrog by autograd.grad)
# ----------------------------------------------------------------------------------------------


def oscillator_observations():
    rng = np.random.default_rng(15)
    t = np.linspace(0, 4, 21)
    y = np.exp(-0.3 * t) * np.cos(2.0 * t) + 0.05 * rng.standard_normal(21)
    return t, y


def hmc(m, n_samples=12, n_leapfrog=10, step_size=0.003):
    torch = m.torch
    D = torch.distributions
    t_np, y_np = oscillator_observations()
    t, y = torch.tensor(t_np), torch.tensor(y_np)
    prior = D.Normal(torch.tensor([0.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64))
    noise = D.HalfNormal(torch.tensor(0.1, dtype=torch.float64))

    def simulate(theta):
        gamma, log_omega = theta[0].exp(), theta[1]
        omega = log_omega.exp()
        return torch.exp(-gamma * t) * torch.cos(omega * t)

    def log_prob(theta):
        mean = simulate(theta)
        return D.Normal(mean, 0.05).log_prob(y).sum() + prior.log_prob(theta).sum()

    def potential_grad(theta):
        theta = theta.detach().requires_grad_(True)
        U = -log_prob(theta)
        (g,) = torch.autograd.grad(U, theta)
        return U.detach(), g

    rng = np.random.default_rng(16)
    theta = torch.tensor([math.log(0.3), math.log(2.0)], dtype=torch.float64)
    samples, accepts, energies = [], [], []
    for i in range(n_samples):
        p0 = torch.tensor(rng.standard_normal(2))
        U0, g = potential_grad(theta)
        q, p = theta.clone(), p0.clone()
        p = p - 0.5 * step_size * g
        for k in range(n_leapfrog):
            q = q + step_size * p
            U, g = potential_grad(q)
            if k != n_leapfrog - 1:
                p = p - step_size * g
        p = p - 0.5 * step_size * g
        H0 = U0 + 0.5 * (p0 ** 2).sum()
        H1 = U + 0.5 * (p ** 2).sum()
        accept = bool(math.log(rng.uniform()) < (H0 - H1).item())
        if accept:
            theta = q
        samples.append(theta.clone())
        accepts.append(accept)
        energies.append((H1 - H0).item())
    # the posterior's curvature at the last sample: a Laplace approximation's covariance
    H = torch.autograd.functional.hessian(lambda th: -log_prob(th), theta)
    cov = torch.linalg.inv(H)
    laplace = D.MultivariateNormal(theta, covariance_matrix=cov)
    return {"samples": torch.stack(samples), "accepts": accepts, "energy_errors": energies, "hessian": H,
            "entropy": laplace.entropy(), "lp": laplace.log_prob(theta + 0.01)}


def test_hamiltonian_monte_carlo():
    ours, _ = run_both(hmc, rtol=1e-8, atol=1e-10)
    # leapfrog nearly conserves H (so nearly all proposals are accepted) and the posterior is near the truth
    assert max(abs(e) for e in ours["energy_errors"]) < 1.0 and sum(ours["accepts"]) >= 8
    assert abs(np.exp(ours["samples"][-1, 1]) - 2.0) < 0.1
    H = ours["hessian"]
    np.testing.assert_allclose(H, H.T, rtol=1e-10)
    assert np.all(np.linalg.eigvalsh(H) > 0)
    assert ours["entropy"] == pytest.approx(1 + np.log(2 * np.pi) - 0.5 * np.log(np.linalg.det(H)), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# The Jacobian of a symplectic integrator step (Stormer-Verlet) by torch.func: J^T Omega J = Omega
# ----------------------------------------------------------------------------------------------


def make_potential(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 12), nn.Softplus(), nn.Linear(12, 1)).double()


def symplectic(m, weights):
    torch = m.torch
    from_func = torch.func
    V = load(m, make_potential(m), weights)

    def force(q):
        return -torch.autograd.grad(V(q).sum(), q, create_graph=True)[0]

    def verlet(z, dt=0.1):
        q, p = z[:2], z[2:]
        q = q if q.requires_grad else q.requires_grad_(True)
        p = p + 0.5 * dt * force(q)
        q = q + dt * p
        p = p + 0.5 * dt * force(q)
        return torch.cat([q, p])

    def verlet_func(z, dt=0.1):
        grad_V = from_func.grad(lambda q: V(q).sum())
        q, p = z[:2], z[2:]
        p = p - 0.5 * dt * grad_V(q)
        q = q + dt * p
        p = p - 0.5 * dt * grad_V(q)
        return torch.cat([q, p])

    z0 = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    J_func = from_func.jacrev(verlet_func)(z0)
    J_fwd = from_func.jacfwd(verlet_func)(z0)
    J_auto = torch.autograd.functional.jacobian(verlet, z0.clone().requires_grad_(True))
    Omega = torch.zeros(4, 4, dtype=torch.float64)
    Omega[:2, 2:] = torch.eye(2, dtype=torch.float64)
    Omega[2:, :2] = -torch.eye(2, dtype=torch.float64)
    sign, logdet = torch.linalg.slogdet(J_func)
    # many steps: a trajectory, and the gradient of its end point's energy with respect to the weights
    z = z0.clone().requires_grad_(True)
    zs = [z]
    for _ in range(10):
        z = verlet(z)
        zs.append(z)
    traj = torch.stack(zs)
    energy = V(z[:2]).sum() + 0.5 * (z[2:] ** 2).sum()
    grads = torch.autograd.grad(energy, list(V.parameters()) + [zs[0]])
    return {"J": J_func, "J_fwd": J_fwd, "J_auto": J_auto, "symplectic": J_func.T @ Omega @ J_func,
            "Omega": Omega, "logdet": logdet, "sign": sign, "traj": traj.detach(), "grads": grads}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_symplectic_integrator_jacobian():
    weights = weights_of(make_potential)
    ours, _ = run_both(symplectic, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["symplectic"], ours["Omega"], atol=1e-12)
    np.testing.assert_allclose(ours["J_fwd"], ours["J"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["J_auto"], ours["J"], rtol=1e-12, atol=1e-14)
    assert ours["sign"] == 1.0 and abs(ours["logdet"]) < 1e-12  # volume preserving


# ----------------------------------------------------------------------------------------------
# A differentiable mass-spring system with ground contact (DiffTaichi-style): the initial velocity
# optimised by backpropagation through 60 semi-implicit Euler steps with a penalty contact force
# ----------------------------------------------------------------------------------------------


def mass_spring(m, iters=5, n_steps=60, v_start=(1.0, 1.0)):
    torch, optim = m.torch, m.optim
    dt, k_spring, k_ground, damping, gravity = 0.01, 200.0, 1e4, 0.5, torch.tensor([0.0, -9.8], dtype=torch.float64)
    x0 = torch.tensor([[0.0, 0.3], [0.1, 0.3], [0.0, 0.4], [0.1, 0.4]], dtype=torch.float64)
    springs = torch.tensor([[0, 1], [0, 2], [1, 3], [2, 3], [0, 3], [1, 2]])
    rest = (x0[springs[:, 0]] - x0[springs[:, 1]]).norm(dim=1)
    target = torch.tensor([0.6, 0.2], dtype=torch.float64)

    def simulate(v_init):
        x, v = x0.clone(), v_init.expand(4, 2)
        heights = []
        for step in range(n_steps):
            d = x[springs[:, 0]] - x[springs[:, 1]]
            length = d.norm(dim=1, keepdim=True)
            f_spring = -k_spring * (length - rest[:, None]) * d / length
            force = torch.zeros_like(x).index_add(0, springs[:, 0], f_spring).index_add(0, springs[:, 1], -f_spring)
            penetration = torch.relu(-x[:, 1:2])
            contact = torch.cat([-50.0 * v[:, :1] * (penetration > 0), k_ground * penetration], dim=1)
            v = v + dt * (force + contact + gravity - damping * v)
            x = x + dt * v
            heights.append(x[:, 1].min())
        return x, torch.stack(heights)

    v_init = torch.tensor([v_start], dtype=torch.float64, requires_grad=True)
    optimizer = optim.SGD([v_init], lr=2.0, momentum=0.5, nesterov=True)
    history = []
    for it in range(iters):
        x, heights = simulate(v_init)
        loss = ((x.mean(0) - target) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        history.append((loss.item(), v_init.detach().clone(), v_init.grad.clone(), heights.min().item()))
        optimizer.step()
    return {"history": history}


def test_differentiable_mass_spring_with_contact():
    ours, _ = run_both(mass_spring, rtol=1e-7, atol=1e-9)
    losses = [h[0] for h in ours["history"]]
    assert losses[-1] < losses[0]
    assert min(h[3] for h in ours["history"]) < 0  # the body did touch the ground
    # the gradient at the first iterate by central differences through the same simulator
    loss_at = lambda v: mass_spring(OURS, iters=1, v_start=v)["history"][0][0]
    grad = ours["history"][0][2][0]
    h = 1e-6
    for c in range(2):
        plus, minus = [1.0, 1.0], [1.0, 1.0]
        plus[c] += h
        minus[c] -= h
        assert grad[c] == pytest.approx((loss_at(plus) - loss_at(minus)) / (2 * h), rel=1e-5)
