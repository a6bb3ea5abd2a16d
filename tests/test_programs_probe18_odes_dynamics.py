# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Differentiable numerical solvers written as torchdiffeq, torchsde, torchcde, DeepXDE and papers' code write them,
run as tests/probe18_odes_common.py says. Dynamics identified, conserved or interrupted: SINDy on Lorenz
(``torch.gradient`` on a non-uniform grid, ``combinations``, thresholded ``linalg.lstsq``, a masking hook); a
separable Hamiltonian network trained through leapfrog rollouts; a continuous-time Markov chain by ``matrix_exp``
against the forward equation; the bouncing ball with event times by bisection differentiated by implicit gradient
rerouting."""

import math

import numpy as np

from .probe18_odes_common import make_odeint
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# SINDy (Brunton et al. 2016) on the Lorenz system: derivatives by torch.gradient (non-uniform, second-order
# edges), a polynomial library from torch.combinations, sequentially thresholded least squares by linalg.lstsq,
# then the coefficients refined through an RK4 rollout with a hook that keeps the pruned terms at zero
# ----------------------------------------------------------------------------------------------


def sindy(m, steps=3):
    torch, optim = m.torch, m.optim
    odeint = make_odeint(m)
    sigma, rho, beta = 10.0, 28.0, 8.0 / 3.0

    def lorenz(t, s):
        x, y, z = s.unbind(-1)
        return torch.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], -1)

    rng = np.random.default_rng(1)
    t = torch.tensor(np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 118)])))
    with torch.no_grad():
        X = odeint(lorenz, torch.tensor([-8.0, 7.0, 27.0], dtype=torch.float64), t, rtol=1e-10, atol=1e-10)
    X = X.clone().requires_grad_(True)
    dX, = torch.gradient(X, spacing=(t,), dim=0, edge_order=2)

    def library(X):
        n, d = X.shape
        pairs = torch.combinations(torch.arange(d), r=2, with_replacement=True)
        quadratic = X[:, pairs[:, 0]] * X[:, pairs[:, 1]]
        return torch.cat([torch.ones(n, 1, dtype=X.dtype), X, quadratic], dim=1)

    Theta = library(X)
    # column scaling, as PySINDy normalises before thresholding
    norms = Theta.norm(dim=0, keepdim=True)
    Theta_n = Theta / norms
    Xi = torch.linalg.lstsq(Theta_n, dX).solution
    threshold = 0.5
    for k in range(10):
        small = (Xi / norms.T).abs() < threshold
        Xi = Xi.masked_fill(small, 0.0)
        columns = []
        for j in range(dX.shape[1]):
            big = ~small[:, j]
            column = torch.zeros(Theta.shape[1], dtype=Xi.dtype)
            column[big] = torch.linalg.lstsq(Theta_n[:, big], dX[:, j:j + 1]).solution[:, 0]
            columns.append(column)
        Xi = torch.stack(columns, dim=1)
    coefficients = Xi / norms.T
    # how the identified coefficients move with the data: through lstsq, the library and torch.gradient
    d_data, = torch.autograd.grad((coefficients ** 2).sum(), X)

    # refinement: the surviving coefficients trained on short RK4 rollouts from the data
    mask = (coefficients != 0).detach()
    xi = coefficients.detach().clone().requires_grad_(True)
    xi.register_hook(lambda grad: grad * mask)
    optimizer = optim.Adam([xi], lr=1e-3)
    data = X.detach()
    starts = torch.tensor([0, 30, 60, 90])
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        field = lambda s: library(s) @ xi
        y = data[starts]
        loss = 0.0
        for i in range(1, 6):
            h = (t[starts + i] - t[starts + i - 1]).unsqueeze(1)
            k1 = field(y)
            k2 = field(y + h / 2 * k1)
            k3 = field(y + h / 2 * k2)
            k4 = field(y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            loss = loss + ((y - data[starts + i]) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"coefficients": coefficients, "d_data": d_data, "losses": losses, "xi": xi, "dX": dX}


def test_sindy_on_lorenz():
    ours, _ = run_both(sindy, rtol=1e-7, atol=1e-9)
    true = np.zeros((10, 3))  # terms: 1, x, y, z, xx, xy, xz, yy, yz, zz
    true[[1, 2], 0] = [-10, 10]
    true[[1, 2, 6], 1] = [28, -1, -1]
    true[[3, 5], 2] = [-8 / 3, 1]
    np.testing.assert_allclose(ours["coefficients"], true, atol=0.3)
    assert ((ours["coefficients"] != 0) == (true != 0)).all()
    assert ((ours["xi"] != 0) == (true != 0)).all()  # the hook kept the pruned terms out


# ----------------------------------------------------------------------------------------------
# torchdiffeq's bouncing ball: event times found by bisection under no_grad and differentiated by the implicit
# function theorem (an autograd.Function rerouting the gradient, as odeint_event's ImplicitFnGradientRerouting)
# ----------------------------------------------------------------------------------------------


def make_bouncing_ball(m):
    torch, nn = m.torch, m.nn

    class BouncingBallExample(nn.Module):
        def __init__(self, radius=0.2, gravity=9.8, adjoint=False):
            super().__init__()
            self.gravity = nn.Parameter(torch.as_tensor([gravity], dtype=torch.float64))
            self.log_radius = nn.Parameter(torch.log(torch.as_tensor([radius], dtype=torch.float64)))
            self.t0 = nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
            self.init_pos = nn.Parameter(torch.tensor([10.0], dtype=torch.float64))
            self.init_vel = nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
            self.absorption = nn.Parameter(torch.tensor([0.2], dtype=torch.float64))
            self.drag = nn.Parameter(torch.tensor([0.05], dtype=torch.float64))

        def forward(self, t, state):
            pos, vel, log_radius = state
            dpos = vel
            dvel = -self.gravity - self.drag * vel * vel.abs()
            return dpos, dvel, torch.zeros_like(log_radius)

        def event_fn(self, t, state):
            # positive if ball in mid-air, negative if ball within ground.
            pos, _, log_radius = state
            return pos - torch.exp(log_radius)

        def get_initial_state(self):
            state = (self.init_pos, self.init_vel, self.log_radius)
            return self.t0, state

        def state_update(self, state):
            """ Updates state based on an event (collision)."""
            pos, vel, log_radius = state
            pos = pos + 1e-7  # need to add a small eps so as not to trigger the event function immediately.
            vel = -vel * (1 - self.absorption)
            return (pos, vel, log_radius)

    return BouncingBallExample()


def bouncing_ball(m, weights, nbounces=3):
    torch = m.torch
    system = load(m, make_bouncing_ball(m), weights)
    params = tuple(system.parameters())

    def rk4(func, t0, t1, state, n=4):
        h = (t1 - t0) / n
        for i in range(n):
            t = t0 + i * h
            k1 = func(t, state)
            k2 = func(t + h / 2, tuple(s + h / 2 * k for s, k in zip(state, k1)))
            k3 = func(t + h / 2, tuple(s + h / 2 * k for s, k in zip(state, k2)))
            k4 = func(t + h, tuple(s + h * k for s, k in zip(state, k3)))
            state = tuple(s + h / 6 * (a + 2 * b + 2 * c + d) for s, a, b, c, d in zip(state, k1, k2, k3, k4))
        return state

    def find_event(interp_fn, sign0, t0, t1, event_fn, tol=1e-12):
        with torch.no_grad():
            # Num iterations for the secant method until tolerance is within target.
            nitrs = torch.ceil(torch.log((t1 - t0) / tol) / math.log(2.0))
            for _ in range(nitrs.long()):
                t_mid = (t1 + t0) / 2.0
                y_mid = interp_fn(t_mid)
                sign_mid = torch.sign(event_fn(t_mid, y_mid))
                same_as_sign0 = (sign0 == sign_mid)
                t0 = torch.where(same_as_sign0, t_mid, t0)
                t1 = torch.where(same_as_sign0, t1, t_mid)
            event_t = (t0 + t1) / 2.0
        return event_t, interp_fn(event_t)

    def odeint_event_forward(func, state, t0, event_fn, dt=0.05):
        """Steps of dt until the event function changes sign, then bisection inside the last step."""
        with torch.no_grad():
            sign0 = torch.sign(event_fn(t0, state))
            t = t0
            while True:
                nxt = rk4(func, t, t + dt, state)
                if (torch.sign(event_fn(t + dt, nxt)) != sign0).any():
                    break
                t, state = t + dt, nxt
            start_t, start_state = t, state
            return find_event(lambda tt: rk4(func, start_t, tt, start_state), sign0, t, t + dt, event_fn)

    class ImplicitFnGradientRerouting(torch.autograd.Function):
        @staticmethod
        def forward(ctx, func, event_fn, n_state, event_t, *state_and_params):
            """ event_t is the solution to event_fn """
            state_t = state_and_params[:n_state]
            ctx.func = func
            ctx.event_fn = event_fn
            ctx.n_state = n_state
            ctx.save_for_backward(event_t, *state_t)
            return (event_t.detach(), *(s.detach() for s in state_t))

        @staticmethod
        def backward(ctx, grad_t, *grad_state):
            func = ctx.func
            event_fn = ctx.event_fn
            event_t, *state_t = ctx.saved_tensors
            event_t = event_t.detach().clone().requires_grad_(True)
            state_t = tuple(s.detach().clone().requires_grad_(True) for s in state_t)
            with torch.enable_grad():
                f_val = func(event_t, state_t)
                c = event_fn(event_t, state_t)
                par_dt, *dstate = torch.autograd.grad(c, (event_t, *state_t), allow_unused=True, retain_graph=True)
            dstate = [torch.zeros_like(s) if d is None else d for s, d in zip(state_t, dstate)]
            par_dt = torch.zeros_like(event_t) if par_dt is None else par_dt
            dcdt = par_dt + sum(torch.sum(d * f) for d, f in zip(dstate, f_val))
            # Add terms from gradient wrt state
            grad_t = grad_t + sum(torch.sum(g * f) for g, f in zip(grad_state, f_val))
            dstate = [d * (-grad_t / (dcdt + 1e-12)).reshape_as(c) for d in dstate]
            grad_state = [g + d for g, d in zip(grad_state, dstate)]
            with torch.enable_grad():
                c = event_fn(event_t, state_t)
            params_grads = torch.autograd.grad(c, params, -grad_t / (dcdt + 1e-12), allow_unused=True)
            return (None, None, None, None, *grad_state, *params_grads)

    def rerouted(event_t, state_t):
        out = ImplicitFnGradientRerouting.apply(system, system.event_fn, len(state_t), event_t, *state_t, *params)
        return out[0], out[1:]

    # the ball's state flows back to the parameters through a differentiable re-integration of the last step
    t0, state = system.get_initial_state()
    event_times = []
    for i in range(nbounces):
        event_t, _ = odeint_event_forward(system, state, t0, system.event_fn)
        # re-attach: integrate from t0 to the (detached) event time with grad, then reroute through the implicit fn
        state_t = rk4(system, t0, event_t, state, n=max(4, int((event_t - t0).item() / 0.01)))
        event_t, state_t = rerouted(event_t + 0 * t0, state_t)
        event_times.append(event_t)
        state = system.state_update(tuple(state_t))
        t0 = event_t
    times = torch.cat(event_times)
    loss = (times * torch.arange(1, nbounces + 1, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    return {"times": times, "grads": grads}


def test_bouncing_ball_event_times():
    weights = weights_of(make_bouncing_ball)
    ours, _ = run_both(bouncing_ball, weights, rtol=1e-9, atol=1e-11)
    assert np.all(np.diff(ours["times"]) > 0)


def test_event_time_gradient_by_hand():
    """Without torch: with no drag the first bounce of a ball dropped from h is at t = sqrt(2 (h - r) / g), so
    dt/dg = -t / (2 g), dt/dh = t / (2 (h - r)) and dt/dt0 = 1."""
    weights = weights_of(make_bouncing_ball)
    weights["drag"] = np.zeros(1)
    torch = OURS.torch
    ours = bouncing_ball(OURS, weights, nbounces=1)
    t = math.sqrt(2 * (10 - 0.2) / 9.8)
    np.testing.assert_allclose(ours["times"][0].item(), t, rtol=1e-9)
    names = [name for name, _ in make_bouncing_ball(OURS).named_parameters()]
    grads = dict(zip(names, (g.item() for g in ours["grads"])))
    np.testing.assert_allclose(grads["gravity"], -t / (2 * 9.8), rtol=1e-7)
    np.testing.assert_allclose(grads["init_pos"], t / (2 * (10 - 0.2)), rtol=1e-7)
    np.testing.assert_allclose(grads["t0"], 1.0, rtol=1e-9)


# ----------------------------------------------------------------------------------------------
# A separable Hamiltonian network trained through symplectic leapfrog rollouts (kinetic and potential
# nets, dH/dq and dH/dp by autograd.grad with create_graph inside the integrator)
# ----------------------------------------------------------------------------------------------


def make_separable_hnn(m):
    nn = m.nn

    class SeparableHNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.V = nn.Sequential(nn.Linear(1, 16), nn.Softplus(), nn.Linear(16, 1))
            self.T = nn.Sequential(nn.Linear(1, 16), nn.Softplus(), nn.Linear(16, 1))

        def forward(self, q, p):
            return self.T(p) + self.V(q)

    return SeparableHNN().double()


def pendulum_trajectories(n_traj=4, n_steps=12, h=0.1):
    """The pendulum H = p^2/2 + (1 - cos q), by leapfrog at a fine step (exact enough for the data)."""
    rng = np.random.default_rng(7)
    q, p = rng.uniform(-1.5, 1.5, n_traj), rng.uniform(-1, 1, n_traj)
    out = [np.stack([q, p], 1)]
    fine = 50
    for _ in range(n_steps):
        for _ in range(fine):
            p = p - h / fine / 2 * np.sin(q)
            q = q + h / fine * p
            p = p - h / fine / 2 * np.sin(q)
        out.append(np.stack([q, p], 1))
    return np.stack(out)  # (n_steps + 1, n_traj, 2)


def separable_hnn(m, weights, steps=3, h=0.1):
    torch, optim = m.torch, m.optim
    model = load(m, make_separable_hnn(m), weights)
    data = torch.tensor(pendulum_trajectories())

    def dV(q):
        with torch.enable_grad():
            q = q if q.requires_grad else q.requires_grad_(True)
            V = model.V(q).sum()
            return torch.autograd.grad(V, q, create_graph=True)[0]

    def dT(p):
        with torch.enable_grad():
            p = p if p.requires_grad else p.requires_grad_(True)
            T = model.T(p).sum()
            return torch.autograd.grad(T, p, create_graph=True)[0]

    def leapfrog(q, p, n):
        qs, ps = [q], [p]
        for _ in range(n):
            p = p - h / 2 * dV(q)
            q = q + h * dT(p)
            p = p - h / 2 * dV(q)
            qs.append(q)
            ps.append(p)
        return torch.stack(qs), torch.stack(ps)

    optimizer = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        q0, p0 = data[0, :, 0:1].clone(), data[0, :, 1:2].clone()
        qs, ps = leapfrog(q0, p0, data.shape[0] - 1)
        loss = ((qs[..., 0] - data[..., 0]) ** 2 + (ps[..., 0] - data[..., 1]) ** 2).mean()
        loss.backward()
        grads.append([None if p.grad is None else p.grad.clone() for p in model.parameters()])  # (last biases: none)
        optimizer.step()
        losses.append(loss.item())
    # the learnt energy along a long rollout: leapfrog keeps it bounded (no drift)
    with torch.no_grad():
        q0, p0 = data[0, :, 0:1].clone(), data[0, :, 1:2].clone()
    qs, ps = leapfrog(q0, p0, 60)
    energy = model(qs.detach().reshape(-1, 1), ps.detach().reshape(-1, 1)).view(61, -1)
    return {"losses": losses, "grads": grads, "energy": energy}


def test_separable_hnn_with_leapfrog():
    weights = weights_of(make_separable_hnn)
    ours, _ = run_both(separable_hnn, weights, rtol=1e-9, atol=1e-11)
    energy = ours["energy"]
    assert np.abs(energy - energy[0]).max() < 0.05 * np.abs(energy).max()  # symplectic: bounded energy error
    assert ours["losses"][-1] < ours["losses"][0]


def test_leapfrog_conserves_the_pendulums_energy():
    """Without torch: leapfrog with step 0.1 keeps the pendulum's energy within O(h^2) over the data's span."""
    traj = pendulum_trajectories()
    energy = traj[..., 1] ** 2 / 2 + 1 - np.cos(traj[..., 0])
    assert np.abs(energy - energy[0]).max() < 1e-4


# ----------------------------------------------------------------------------------------------
# A continuous-time Markov chain fitted to irregularly timed transitions: P(t) = matrix_exp(Q t) of a rate
# matrix built from softplus'd off-diagonals, checked against the Kolmogorov forward equation by dopri5
# ----------------------------------------------------------------------------------------------


def ctmc(m, steps=4, k=4):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(13)
    n = 40
    gaps = torch.tensor(rng.exponential(0.7, n))
    states = rng.integers(0, k, n + 1)
    src, dst = torch.tensor(states[:-1]), torch.tensor(states[1:])
    raw = torch.zeros(k, k, dtype=torch.float64, requires_grad=True)
    off_diagonal = ~torch.eye(k, dtype=torch.bool)

    def generator():
        rates = F.softplus(raw) * off_diagonal
        return rates - torch.diag_embed(rates.sum(-1))

    optimizer = optim.Adam([raw], lr=0.1)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        Q = generator()
        P = torch.linalg.matrix_exp(Q.unsqueeze(0) * gaps.view(-1, 1, 1))  # (n, k, k), one per gap
        loss = -torch.log(P[torch.arange(n), src, dst]).mean()
        loss.backward()
        grads.append(raw.grad.clone())
        optimizer.step()
        losses.append(loss.item())
    # the transition matrix at t = 1.3 by expm against the forward equation dP/dt = P Q, by dopri5
    Q = generator()
    P_expm = torch.linalg.matrix_exp(1.3 * Q)
    P_ode = make_odeint(m)(lambda t, P: P @ Q, torch.eye(k, dtype=torch.float64),
                           torch.tensor([0.0, 1.3], dtype=torch.float64), rtol=1e-10, atol=1e-12)[-1]
    d_expm = torch.autograd.grad(P_expm[0, 1], raw, retain_graph=True)[0]
    d_ode = torch.autograd.grad(P_ode[0, 1], raw)[0]
    return {"losses": losses, "grads": grads, "P_expm": P_expm, "P_ode": P_ode, "d_expm": d_expm,
            "d_ode": d_ode}


def test_continuous_time_markov_chain():
    ours, _ = run_both(ctmc, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["P_expm"], ours["P_ode"], atol=1e-9)
    np.testing.assert_allclose(ours["P_expm"].sum(1), 1.0, rtol=1e-12)  # stochastic rows
    np.testing.assert_allclose(ours["d_expm"], ours["d_ode"], atol=1e-8)
    assert ours["losses"][-1] < ours["losses"][0]
