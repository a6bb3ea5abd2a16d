# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Differentiable numerical solvers written as torchdiffeq, torchsde, torchcde, DeepXDE and papers' code write them,
run as tests/probe18_odes_common.py says. Latent and stochastic models: a latent ODE with an ODE-RNN encoder (GRU
unit with masks, ``kl_divergence``, ``logsumexp`` over samples) and the fixed-grid rk4 on an exponential; torchsde's
latent SDE by Euler-Maruyama and Milstein (g' by ``autograd.grad``), the KL by Girsanov's ratio; the reversible Heun
method with its exact-reconstruction adjoint (increments drawn again from ``Generator.get_state``/``set_state``)."""

import math

import numpy as np
import pytest

from .probe18_odes_common import make_fixed_grid_odeint
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Latent ODE (Rubanova et al. 2019) with an ODE-RNN encoder run backwards over irregular observations
# ----------------------------------------------------------------------------------------------


def make_latent_ode(m, latent_dim=3, rec_dims=8, obs_dim=2):
    torch, nn = m.torch, m.nn

    def init_network_weights(net, std=0.1):
        for mod in net.modules():
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, mean=0, std=std)
                nn.init.constant_(mod.bias, val=0)

    class ODEFunc(nn.Module):
        def __init__(self, dim, hidden):
            super(ODEFunc, self).__init__()
            self.gradient_net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
            init_network_weights(self.gradient_net)

        def forward(self, t_local, y, backwards=False):
            grad = self.gradient_net(y)
            if backwards:
                grad = -grad
            return grad

    class GRU_unit(nn.Module):
        def __init__(self, latent_dim, input_dim, n_units=12):
            super(GRU_unit, self).__init__()
            self.update_gate = nn.Sequential(nn.Linear(latent_dim * 2 + input_dim, n_units), nn.Tanh(),
                                             nn.Linear(n_units, latent_dim), nn.Sigmoid())
            self.reset_gate = nn.Sequential(nn.Linear(latent_dim * 2 + input_dim, n_units), nn.Tanh(),
                                            nn.Linear(n_units, latent_dim), nn.Sigmoid())
            self.new_state_net = nn.Sequential(nn.Linear(latent_dim * 2 + input_dim, n_units), nn.Tanh(),
                                               nn.Linear(n_units, latent_dim * 2))
            init_network_weights(self.update_gate)
            init_network_weights(self.reset_gate)
            init_network_weights(self.new_state_net)

        def forward(self, y_mean, y_std, x, masked_update=True):
            y_concat = torch.cat([y_mean, y_std, x], -1)
            update_gate = self.update_gate(y_concat)
            reset_gate = self.reset_gate(y_concat)
            concat = torch.cat([y_mean * reset_gate, y_std * reset_gate, x], -1)
            new_state, new_state_std = self.new_state_net(concat).chunk(2, dim=-1)
            new_state_std = new_state_std.abs()
            new_y = (1 - update_gate) * new_state + update_gate * y_mean
            new_y_std = (1 - update_gate) * new_state_std + update_gate * y_std
            if masked_update:
                # only the observed dimensions update the state (the mask is the second half of x)
                n_data_dims = x.size(-1) // 2
                mask = x[:, :, n_data_dims:]
                mask = (torch.sum(mask, -1, keepdim=True) > 0).float()
                new_y = mask * new_y + (1 - mask) * y_mean
                new_y_std = mask * new_y_std + (1 - mask) * y_std
            new_y_std = new_y_std.abs()
            return new_y, new_y_std

    class LatentODE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc_ode = ODEFunc(rec_dims, 12)
            self.gru = GRU_unit(rec_dims, obs_dim * 2)
            self.transform_z0 = nn.Sequential(nn.Linear(rec_dims * 2, 16), nn.Tanh(), nn.Linear(16, latent_dim * 2))
            init_network_weights(self.transform_z0)
            self.gen_ode = ODEFunc(latent_dim, 16)
            self.decoder = nn.Sequential(nn.Linear(latent_dim, obs_dim))
            init_network_weights(self.decoder)

    return LatentODE().double()


def latent_ode_data(batch=4, n_t=7, obs_dim=2):
    rng = np.random.default_rng(12)
    t = np.sort(rng.uniform(0, 2, n_t))
    t[0] = 0.0
    phase = rng.uniform(0, np.pi, (batch, 1))
    x = np.stack([np.sin(2 * t + phase), np.cos(3 * t + phase)], -1)
    mask = (rng.uniform(size=(batch, n_t, obs_dim)) > 0.3).astype(np.float64)
    return t, x * mask, mask


def latent_ode(m, weights, steps=3, n_traj_samples=3):
    torch, optim = m.torch, m.optim
    from_numpy = torch.from_numpy
    odeint = make_fixed_grid_odeint(m)
    model = load(m, make_latent_ode(m), weights)
    t_np, x_np, mask_np = latent_ode_data()
    time_steps, data, mask = from_numpy(t_np), from_numpy(x_np), from_numpy(mask_np)
    g = torch.Generator().manual_seed(4)
    optimizer = optim.Adamax(model.parameters(), lr=1e-2)
    Normal, kl_divergence = torch.distributions.Normal, torch.distributions.kl_divergence

    def run_odernn(data, time_steps):
        n_traj, n_tp, n_dims = data.size()
        prev_y = torch.zeros((1, n_traj, 8)).to(data)
        prev_std = torch.zeros((1, n_traj, 8)).to(data)
        prev_t, t_i = time_steps[-1] + 0.01, time_steps[-1]
        interval_length = time_steps[-1] - time_steps[0]
        minimum_step = interval_length / 50
        for i in reversed(range(0, n_tp)):
            if (prev_t - t_i) < minimum_step:
                inc = model.enc_ode(prev_t, prev_y, backwards=True) * (t_i - prev_t)
                ode_sol = prev_y + inc
                ode_sol = torch.stack((prev_y, ode_sol), 2)
            else:
                n_intermediate_tp = max(2, ((prev_t - t_i) / minimum_step).int())
                time_points = torch.linspace(prev_t.item(), t_i.item(), int(n_intermediate_tp), dtype=data.dtype)
                ode_sol = odeint(model.enc_ode, prev_y, time_points, step_size=(prev_t - t_i).item() / 3)
                ode_sol = ode_sol.permute(1, 2, 0, 3)
            yi_ode = ode_sol[:, :, -1, :]
            xi = data[:, i, :].unsqueeze(0)
            yi, yi_std = model.gru(yi_ode, prev_std, xi)
            prev_y, prev_std = yi, yi_std
            prev_t, t_i = time_steps[i], time_steps[i - 1]
        return yi, yi_std

    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        truth_w_mask = torch.cat((data, mask), -1)
        last_yi, last_yi_std = run_odernn(truth_w_mask, time_steps)
        means_z0, std_z0 = model.transform_z0(torch.cat((last_yi, last_yi_std), -1)).chunk(2, dim=-1)
        std_z0 = std_z0.abs()
        eps = torch.randn(n_traj_samples, *means_z0.shape[1:], generator=g, dtype=data.dtype)
        first_point_enc = means_z0 + std_z0 * eps
        # the generative ODE from z0 at every time point: (n_traj_samples, batch, n_tp, latent)
        sol_z = odeint(model.gen_ode, first_point_enc, time_steps, step_size=0.1).permute(1, 2, 0, 3)
        pred_x = model.decoder(sol_z)
        gaussian = Normal(pred_x, torch.tensor([0.1], dtype=data.dtype))
        log_prob = gaussian.log_prob(data.unsqueeze(0).expand_as(pred_x)) * mask
        rec_likelihood = log_prob.sum((2, 3)) / mask.sum((1, 2))
        fp_distr = Normal(means_z0, std_z0)
        kldiv_z0 = kl_divergence(fp_distr, Normal(torch.zeros_like(means_z0), torch.ones_like(std_z0)))
        kldiv_z0 = torch.mean(kldiv_z0, (1, 2))
        loss = -torch.logsumexp(rec_likelihood - 0.5 * kldiv_z0.unsqueeze(-1), 0)
        loss = torch.mean(loss)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "pred": pred_x, "kl": kldiv_z0}


def test_latent_ode_with_an_ode_rnn_encoder():
    weights = weights_of(make_latent_ode)
    ours, _ = run_both(latent_ode, weights, rtol=1e-9, atol=1e-11)
    assert ours["pred"].shape == (3, 4, 7, 2) and np.isfinite(ours["losses"]).all()


def test_fixed_grid_rk4_on_an_exponential():
    """Without torch: torchdiffeq's rk4 (3/8 rule) on y' = -y at step 0.1, interpolated linearly onto times off the
    grid: e^{-t} at the grid times to RK4's accuracy, and between them the chord of e^{-t}."""
    torch = OURS.torch
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    ys = make_fixed_grid_odeint(OURS)(lambda t, y: -y, torch.ones(2, dtype=torch.float64), t, step_size=0.1)
    np.testing.assert_allclose(ys[1, 0].item(), (np.exp(-0.2) + np.exp(-0.3)) / 2, rtol=1e-6)
    np.testing.assert_allclose(ys[[0, 2, 3], 0].numpy(), np.exp(-t.numpy()[[0, 2, 3]]), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# torchsde-style latent SDE: Euler-Maruyama and Milstein (diagonal noise) with Brownian increments drawn from
# a seeded Generator, the KL of the posterior path by Girsanov's log-ratio
# ----------------------------------------------------------------------------------------------


def make_latent_sde(m):
    torch, nn = m.torch, m.nn

    class LatentSDE(nn.Module):
        sde_type = "ito"
        noise_type = "diagonal"

        def __init__(self, theta=1.0, mu=0.0, sigma=0.5):
            super().__init__()
            logvar = math.log(sigma ** 2 / (2. * theta))
            # Prior drift.
            self.register_buffer("theta", torch.tensor([[theta]]))
            self.register_buffer("mu", torch.tensor([[mu]]))
            self.register_buffer("sigma", torch.tensor([[sigma]]))
            # p(y0).
            self.register_buffer("py0_mean", torch.tensor([[mu]]))
            self.register_buffer("py0_logvar", torch.tensor([[logvar]]))
            # Approximate posterior drift: Takes in 2 positional encodings and the state.
            self.net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 1))
            self.net[-1].weight.data.fill_(0.)
            self.net[-1].bias.data.fill_(0.)
            # q(y0).
            self.qy0_mean = nn.Parameter(torch.tensor([[mu]]), requires_grad=True)
            self.qy0_logvar = nn.Parameter(torch.tensor([[logvar]]), requires_grad=True)
            # a state-dependent diffusion, so Milstein's correction does something
            self.log_scale = nn.Parameter(torch.tensor([[0.0]]))

        def f(self, t, y):  # Approximate posterior drift.
            if t.dim() == 0:
                t = torch.full_like(y, fill_value=t)
            # Positional encoding in transformers for time-inhomogeneous posterior.
            return self.net(torch.cat((torch.sin(t), torch.cos(t), y), dim=-1))

        def g(self, t, y):  # Shared diffusion.
            return self.sigma.repeat(y.size(0), 1) * torch.sigmoid(y + self.log_scale) * 2

        def h(self, t, y):  # Prior drift.
            return self.theta * (self.mu - y)

        def f_aug(self, t, y):  # Drift for augmented dynamics with logqp term.
            y = y[:, 0:1]
            f, g, h = self.f(t, y), self.g(t, y), self.h(t, y)
            u = _stable_division(m, f - h, g)
            f_logqp = .5 * (u ** 2).sum(dim=1, keepdim=True)
            return torch.cat([f, f_logqp], dim=1)

        def g_aug(self, t, y):  # Diffusion for augmented dynamics with logqp term.
            y = y[:, 0:1]
            g = self.g(t, y)
            g_logqp = torch.zeros_like(y)
            return torch.cat([g, g_logqp], dim=1)

        @property
        def py0_std(self):
            return torch.exp(.5 * self.py0_logvar)

        @property
        def qy0_std(self):
            return torch.exp(.5 * self.qy0_logvar)

    return LatentSDE().double()


def _stable_division(m, a, b, epsilon=1e-7):
    torch = m.torch
    b = torch.where(b.abs().detach() > epsilon, b, torch.full_like(b, fill_value=epsilon) * b.sign())
    return a / b


def latent_sde(m, weights, method, steps=3, batch_size=16, dt=0.05):
    torch, optim = m.torch, m.optim
    model = load(m, make_latent_sde(m), weights)
    ts = torch.tensor([0.3, 0.6, 1.0, 1.4, 1.7], dtype=torch.float64)
    ys = torch.tensor([0.5, 0.8, -0.2, -0.4, 0.3], dtype=torch.float64)
    optimizer = optim.Adam(params=model.parameters(), lr=1e-2)
    scheduler = optim.lr_scheduler.ExponentialLR(optimizer=optimizer, gamma=0.999)
    generator = torch.Generator().manual_seed(0)

    def sdeint(f, g, y0, ts):
        """A fixed-step solver on a grid of step dt through the output times; Milstein's correction
        1/2 g g' (dW^2 - dt) for diagonal noise by autograd.grad of g with create_graph."""
        t0, out, y = ts[0], [y0], y0
        for t1 in ts[1:]:
            n = max(1, int(math.ceil(round((t1 - t0).item() / dt, 9))))
            step = (t1 - t0) / n
            for i in range(n):
                t = t0 + i * step
                dW = torch.randn(y.shape, generator=generator, dtype=y.dtype) * step.sqrt()
                if method == "milstein":
                    with torch.enable_grad():
                        y_ = y if y.requires_grad else y.detach().requires_grad_(True)
                        g_val = g(t, y_)
                        dg, = torch.autograd.grad(g_val, y_, torch.ones_like(g_val), create_graph=True)
                    y = y + f(t, y) * step + g_val * dW + 0.5 * g_val * dg * (dW ** 2 - step)
                else:
                    y = y + f(t, y) * step + g(t, y) * dW
            out.append(y)
            t0 = t1
        return torch.stack(out)

    losses, grads = [], []
    for global_step in range(steps):
        # Note: This 1e-3 is not a hyperparameter, but rather ensures that logqp is ~positive.
        eps = torch.randn(size=(batch_size, 1), generator=generator, dtype=torch.float64)
        y0 = model.qy0_mean + eps * model.qy0_std
        qy0 = torch.distributions.Normal(loc=model.qy0_mean, scale=model.qy0_std)
        py0 = torch.distributions.Normal(loc=model.py0_mean, scale=model.py0_std)
        logqp0 = torch.distributions.kl_divergence(qy0, py0).sum(dim=1)  # KL(t=0).
        aug_y0 = torch.cat([y0, torch.zeros(batch_size, 1).to(y0)], dim=1)
        aug_ys = sdeint(model.f_aug, model.g_aug, aug_y0, torch.cat([torch.zeros(1, dtype=ts.dtype), ts]))[1:]
        ys_, logqp_path = aug_ys[:, :, 0:1], aug_ys[-1, :, 1]
        likelihood = torch.distributions.Laplace(loc=ys_, scale=0.1)
        logpy = likelihood.log_prob(ys.view(-1, 1, 1).expand_as(ys_)).sum(dim=0).mean(dim=0)
        loss = -logpy + (logqp0 + logqp_path).mean(dim=0)
        optimizer.zero_grad()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "paths": aug_ys}


@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_latent_sde(method):
    weights = weights_of(make_latent_sde)
    ours, _ = run_both(latent_sde, weights, method, rtol=1e-9, atol=1e-11)
    assert ours["paths"].shape == (5, 16, 2) and (ours["paths"][-1, :, 1] >= 0).all()  # the KL grows


def test_milstein_on_geometric_brownian_motion():
    """Without torch: for dX = a X dt + b X dW, Milstein's step is X (1 + a dt + b dW + b^2/2 (dW^2 - dt)), which
    the solver above takes with g' from autograd.grad; on one path its strong error against the exact solution
    X0 exp((a - b^2/2) t + b W_t) is far below Euler-Maruyama's."""
    torch = OURS.torch
    a, b, dt, n = 0.5, 0.8, 1e-3, 1000
    dW = np.random.default_rng(0).standard_normal(n) * math.sqrt(dt)
    exact = math.exp((a - b * b / 2) * 1.0 + b * dW.sum())
    results = {}
    for method in ("euler", "milstein"):
        x = torch.tensor([1.0], dtype=torch.float64)
        for w in dW:
            w = torch.tensor(w)
            x_ = x.detach().requires_grad_(True)
            g = b * x_
            dg, = torch.autograd.grad(g, x_, torch.ones_like(g))
            x = x + a * x * dt + b * x * w + (0.5 * b * x * dg * (w ** 2 - dt) if method == "milstein" else 0)
        results[method] = abs(x.item() - exact)
    assert results["milstein"] < results["euler"] / 5


# ----------------------------------------------------------------------------------------------
# The reversible Heun method (Kidger et al. 2021, torchsde's reversible_heun) for a Stratonovich neural SDE:
# its adjoint reconstructs the forward trajectory exactly backwards, the Brownian increments drawn again from
# the saved Generator state (get_state/set_state), so its gradients are backprop's to rounding
# ----------------------------------------------------------------------------------------------


def make_neural_sde(m):
    nn = m.nn

    class NeuralSDE(nn.Module):
        def __init__(self):
            super().__init__()
            self.drift = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
            self.diffusion = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2), nn.Sigmoid())

        def f(self, t, y):
            return self.drift(y)

        def g(self, t, y):  # diagonal noise
            return 0.3 * self.diffusion(y)

    return NeuralSDE().double()


def reversible_heun(m, weights, adjoint, n_steps=20, dt=0.05):
    torch = m.torch
    sde = load(m, make_neural_sde(m), weights)
    params = tuple(sde.parameters())

    def brownian_increments(generator, shape):
        return [torch.randn(shape, generator=generator, dtype=torch.float64) * math.sqrt(dt) for _ in range(n_steps)]

    def forward_step(t, y, z, f_z, g_z, dW):
        z1 = 2 * y - z + f_z * dt + g_z * dW
        f_z1, g_z1 = sde.f(t + dt, z1), sde.g(t + dt, z1)
        y1 = y + 0.5 * (f_z + f_z1) * dt + 0.5 * (g_z + g_z1) * dW
        return y1, z1, f_z1, g_z1

    def solve(y0, generator):
        dWs = brownian_increments(generator, y0.shape)
        y, z = y0, y0
        f_z, g_z = sde.f(0.0, z), sde.g(0.0, z)
        for n in range(n_steps):
            y, z, f_z, g_z = forward_step(n * dt, y, z, f_z, g_z, dWs[n])
        return y

    class ReversibleHeunAdjoint(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y0, generator_state, *params):
            generator = torch.Generator().manual_seed(0)
            generator.set_state(generator_state)
            with torch.no_grad():
                dWs = brownian_increments(generator, y0.shape)
                y, z = y0, y0
                f_z, g_z = sde.f(0.0, z), sde.g(0.0, z)
                for n in range(n_steps):
                    y, z, f_z, g_z = forward_step(n * dt, y, z, f_z, g_z, dWs[n])
            ctx.save_for_backward(y, z, generator_state)
            return y

        @staticmethod
        def backward(ctx, grad_y):
            y, z, generator_state = ctx.saved_tensors
            generator = torch.Generator().manual_seed(0)
            generator.set_state(generator_state)
            dWs = brownian_increments(generator, y.shape)  # the same increments, drawn again
            adj_y, adj_z = grad_y, torch.zeros_like(grad_y)
            adj_params = [torch.zeros_like(p) for p in params]
            for n in reversed(range(n_steps)):
                t1 = (n + 1) * dt
                with torch.no_grad():  # one step back, exactly: z_n then y_n
                    f_z1, g_z1 = sde.f(t1, z), sde.g(t1, z)
                    z0 = 2 * y - z - f_z1 * dt - g_z1 * dWs[n]
                    f_z0, g_z0 = sde.f(t1 - dt, z0), sde.g(t1 - dt, z0)
                    y0 = y - 0.5 * (f_z0 + f_z1) * dt - 0.5 * (g_z0 + g_z1) * dWs[n]
                with torch.enable_grad():  # the vjp of the step (y_n, z_n) -> (y_{n+1}, z_{n+1})
                    y_ = y0.detach().requires_grad_(True)
                    z_ = z0.detach().requires_grad_(True)
                    y1, z1, _, _ = forward_step(t1 - dt, y_, z_, sde.f(t1 - dt, z_), sde.g(t1 - dt, z_), dWs[n])
                    grads = torch.autograd.grad((y1, z1), (y_, z_) + params, (adj_y, adj_z), allow_unused=True)
                adj_y, adj_z = grads[0], grads[1]
                adj_params = [a if g is None else a + g for a, g in zip(adj_params, grads[2:])]
                y, z = y0, z0
            # y_0 = z_0 = the initial state: both adjoints flow to it
            return (adj_y + adj_z, None, *adj_params)

    rng = np.random.default_rng(8)
    y0 = torch.tensor(rng.standard_normal((6, 2)), requires_grad=True)
    target = torch.tensor(rng.standard_normal((6, 2)))
    generator = torch.Generator().manual_seed(11)
    state = generator.get_state()
    if adjoint:
        yT = ReversibleHeunAdjoint.apply(y0, state, *params)
    else:
        yT = solve(y0, generator)
    loss = ((yT - target) ** 2).sum()
    grads = torch.autograd.grad(loss, (y0,) + params)
    return {"yT": yT, "loss": loss, "grads": grads}


@pytest.mark.parametrize("adjoint", [False, True])
def test_reversible_heun(adjoint):
    weights = weights_of(make_neural_sde)
    ours, _ = run_both(reversible_heun, weights, adjoint, rtol=1e-10, atol=1e-12)
    if adjoint:  # the exact reconstruction: backprop's gradients to rounding
        direct, _ = run_both(reversible_heun, weights, False, compare=False)
        np.testing.assert_allclose(ours["yT"], direct["yT"], rtol=1e-13)
        for a, b in zip(ours["grads"], direct["grads"]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
