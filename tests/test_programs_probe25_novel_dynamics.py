# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Recent and unusual architectures (see tests/pytorch_programs.py) as their reference implementations write them,
each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.
Cells and automata in time: neural cellular automata (depthwise Sobel perception, stochastic update and alive masks,
pool training with replacement); liquid time-constant (a semi-implicit ODE unfolding) and CfC (closed-form
continuous-time) cells."""

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Neural cellular automata (growing NCA): Sobel perception, stochastic update, alive masking, pool training
# ----------------------------------------------------------------------------------------------


def nca(m, steps=2):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    CHANNEL_N, CELL_FIRE_RATE = 8, 0.5

    class CAModel(nn.Module):
        def __init__(self, channel_n, fire_rate, hidden_size=32):
            super().__init__()
            self.channel_n = channel_n
            self.fire_rate = fire_rate
            self.fc0 = nn.Linear(channel_n * 3, hidden_size)
            self.fc1 = nn.Linear(hidden_size, channel_n, bias=False)
            with torch.no_grad():
                self.fc1.weight.zero_()

        def alive(self, x):
            return F.max_pool2d(x[:, 3:4, :, :], kernel_size=3, stride=1, padding=1) > 0.1

        def perceive(self, x, angle):
            def _perceive_with(x, weight):
                conv_weights = torch.from_numpy(weight.astype(np.float32))
                conv_weights = conv_weights.view(1, 1, 3, 3).repeat(self.channel_n, 1, 1, 1)
                return F.conv2d(x, conv_weights, padding=1, groups=self.channel_n)
            dx = np.outer([1, 2, 1], [-1, 0, 1]) / 8.0
            dy = dx.T
            c = np.cos(angle * np.pi / 180)
            s = np.sin(angle * np.pi / 180)
            w1 = c * dx - s * dy
            w2 = s * dx + c * dy
            y1 = _perceive_with(x, w1)
            y2 = _perceive_with(x, w2)
            return torch.cat((x, y1, y2), 1)

        def update(self, x, fire_rate, angle):
            x = x.transpose(1, 3)
            pre_life_mask = self.alive(x)
            dx = self.perceive(x, angle)
            dx = dx.transpose(1, 3)
            dx = self.fc0(dx)
            dx = F.relu(dx)
            dx = self.fc1(dx)
            if fire_rate is None:
                fire_rate = self.fire_rate
            stochastic = torch.rand([dx.size(0), dx.size(1), dx.size(2), 1]) > fire_rate
            stochastic = stochastic.float()
            dx = dx * stochastic
            x = x + dx.transpose(1, 3)
            post_life_mask = self.alive(x)
            life_mask = (pre_life_mask & post_life_mask).float()
            x = x * life_mask
            return x.transpose(1, 3)

        def forward(self, x, steps=1, fire_rate=None, angle=0.0):
            for step in range(steps):
                x = self.update(x, fire_rate, angle)
            return x

    ca = CAModel(CHANNEL_N, CELL_FIRE_RATE)
    with torch.no_grad():
        ca.fc1.weight.normal_(0, 0.05)
    H = W = 9
    seed = np.zeros([H, W, CHANNEL_N], np.float32)
    seed[H // 2, W // 2, 3:] = 1.0
    target = torch.rand(H, W, 4)
    pool = np.repeat(seed[None, ...], 6, 0)
    optimizer = torch.optim.Adam(ca.parameters(), lr=2e-3, betas=(0.5, 0.5))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.9999)
    losses = []
    for i in range(steps):
        batch_idx = np.array([0, 2, 5, 1])
        x0 = pool[batch_idx]
        with torch.no_grad():
            loss_rank = ((torch.from_numpy(x0)[..., :4] - target) ** 2).mean(dim=(1, 2, 3)).argsort(descending=True)
        x0 = x0[loss_rank.numpy()]
        x0[:1] = seed
        x0 = torch.from_numpy(x0.astype(np.float32))
        x = ca(x0, steps=4)
        loss = F.mse_loss(x[:, :, :, :4], target.expand(x.shape[0], -1, -1, -1))
        optimizer.zero_grad()
        loss.backward()
        for p in ca.parameters():
            p.grad.data = p.grad.data / (p.grad.data.norm() + 1e-8)
        optimizer.step()
        scheduler.step()
        pool[batch_idx] = x.detach().numpy()
        losses.append(loss.item())
    return {"losses": losses, "pool": pool, "w0": ca.fc0.weight, "lr": scheduler.get_last_lr()}


def test_neural_cellular_automaton_pool_training():
    ours, _ = run_both(nca, rtol=1e-4, atol=1e-6)
    # cells outside the 3x3 neighbourhood of living cells stay dead
    assert ours["pool"].shape == (6, 9, 9, 8)
    assert np.all(ours["pool"][:, 0, 0] == 0)


# ----------------------------------------------------------------------------------------------
# Liquid time-constant cell (semi-implicit ODE unfolding) and CfC (closed-form continuous-time)
# ----------------------------------------------------------------------------------------------


def ltc_cfc(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class LTCCell(nn.Module):
        def __init__(self, in_features, units, ode_unfolds=6, epsilon=1e-8):
            super().__init__()
            self.units = units
            self._ode_unfolds = ode_unfolds
            self._epsilon = epsilon
            self._params = {}
            init = {"gleak": (0.001, 1.0), "vleak": (-0.2, 0.2), "cm": (0.4, 0.6), "w": (0.001, 1.0),
                    "sigma": (3, 8), "mu": (0.3, 0.8), "sensory_w": (0.001, 1.0), "sensory_sigma": (3, 8),
                    "sensory_mu": (0.3, 0.8)}
            shapes = {"gleak": (units,), "vleak": (units,), "cm": (units,), "w": (units, units),
                      "sigma": (units, units), "mu": (units, units), "sensory_w": (in_features, units),
                      "sensory_sigma": (in_features, units), "sensory_mu": (in_features, units)}
            for name, (lo, hi) in init.items():
                self._params[name] = self.add_weight(name, torch.rand(*shapes[name]) * (hi - lo) + lo)
            erev = torch.randint(0, 2, (units, units)).float() * 2 - 1
            self._params["erev"] = self.add_weight("erev", erev)
            self._params["sensory_erev"] = self.add_weight("sensory_erev",
                                                           torch.randint(0, 2, (in_features, units)).float() * 2 - 1)
            self.softplus = nn.Softplus()

        def add_weight(self, name, init_value):
            param = torch.nn.Parameter(init_value)
            self.register_parameter(name, param)
            return param

        def _sigmoid(self, v_pre, mu, sigma):
            v_pre = torch.unsqueeze(v_pre, -1)
            mues = v_pre - mu
            x = sigma * mues
            return torch.sigmoid(x)

        def _ode_solver(self, inputs, state, elapsed_time):
            v_pre = state
            sensory_w_activation = self.softplus(self._params["sensory_w"]) * self._sigmoid(
                inputs, self._params["sensory_mu"], self._params["sensory_sigma"])
            sensory_rev_activation = sensory_w_activation * self._params["sensory_erev"]
            w_numerator_sensory = torch.sum(sensory_rev_activation, dim=1)
            w_denominator_sensory = torch.sum(sensory_w_activation, dim=1)
            cm_t = self.softplus(self._params["cm"]) / (elapsed_time / self._ode_unfolds)
            w_param = self.softplus(self._params["w"])
            for t in range(self._ode_unfolds):
                w_activation = w_param * self._sigmoid(v_pre, self._params["mu"], self._params["sigma"])
                rev_activation = w_activation * self._params["erev"]
                w_numerator = torch.sum(rev_activation, dim=1) + w_numerator_sensory
                w_denominator = torch.sum(w_activation, dim=1) + w_denominator_sensory
                gleak = self.softplus(self._params["gleak"])
                numerator = cm_t * v_pre + gleak * self._params["vleak"] + w_numerator
                denominator = cm_t + gleak + w_denominator
                v_pre = numerator / (denominator + self._epsilon)
            return v_pre

        def forward(self, inputs, states, elapsed_time=1.0):
            return self._ode_solver(inputs, states, elapsed_time)

    class CfCCell(nn.Module):
        def __init__(self, input_size, hidden_size, backbone_units=16, mode="default"):
            super().__init__()
            self.mode = mode
            self.backbone = nn.Sequential(nn.Linear(input_size + hidden_size, backbone_units), nn.LeCun()
                                          if hasattr(nn, "LeCun") else nn.Tanh())
            self.ff1 = nn.Linear(backbone_units, hidden_size)
            self.ff2 = nn.Linear(backbone_units, hidden_size)
            self.time_a = nn.Linear(backbone_units, hidden_size)
            self.time_b = nn.Linear(backbone_units, hidden_size)
            for w in self.parameters():
                if w.dim() == 2:
                    torch.nn.init.xavier_uniform_(w)

        def forward(self, input, hx, ts):
            x = torch.cat([input, hx], 1)
            x = self.backbone(x)
            ff1 = torch.tanh(self.ff1(x))
            ff2 = torch.tanh(self.ff2(x))
            t_a = self.time_a(x)
            t_b = self.time_b(x)
            t_interp = torch.sigmoid(t_a * ts + t_b)
            return ff1 * (1.0 - t_interp) + t_interp * ff2

    B, T, I, U = 3, 5, 2, 4
    x = torch.randn(B, T, I)
    timespans = torch.rand(B, T) + 0.5
    ltc = LTCCell(I, U)
    cfc = CfCCell(I, U)
    h1 = torch.zeros(B, U)
    h2 = torch.zeros(B, U)
    outs = []
    for t in range(T):
        h1 = ltc(x[:, t], h1, timespans[:, t].unsqueeze(-1))
        h2 = cfc(x[:, t], h2, timespans[:, t].view(B, 1))
        outs.append(h1 + h2)
    out = torch.stack(outs, dim=1)
    loss = out.pow(2).sum()
    loss.backward()
    return {"out": out, "g_sigma": ltc.sigma.grad, "g_cm": ltc.cm.grad, "g_ff1": cfc.ff1.weight.grad,
            "g_time_a": cfc.time_a.bias.grad, "names": sorted(n for n, _ in ltc.named_parameters())}


def test_liquid_time_constant_and_cfc_cells():
    ours, _ = run_both(ltc_cfc, rtol=1e-4, atol=1e-6)
    assert ours["out"].shape == (3, 5, 4)
    assert "sensory_erev" in ours["names"] and len(ours["names"]) == 11
