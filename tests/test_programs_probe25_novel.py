# ruff: noqa: B007, B008, B023, E501, E722, E701, E702, E731, E741, F841, N801, N802, N806, B006, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Recent and unusual architectures (see tests/pytorch_programs.py) as their reference implementations write them,
each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.

Kolmogorov-Arnold networks (efficient-KAN's B-spline bases by the Cox-de Boor recursion over a grid buffer, spline
weights and scalers, the grid updated from data by ``linalg.lstsq``); modern Hopfield retrieval; neural cellular
automata (depthwise Sobel perception, stochastic update and alive masks, pool training with replacement); liquid
time-constant and CfC cells; minGRU's parallel scan in log space; RetNet's retention (parallel, recurrent and
chunkwise); xLSTM's sLSTM and mLSTM with stabiliser states; a Perceiver; NTM addressing; NeuralSort and
Gumbel-Sinkhorn."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# efficient-KAN: KANLinear with B-spline bases, grid update by least squares
# ----------------------------------------------------------------------------------------------


def kan(m, steps=3, update_grid=True):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class KANLinear(nn.Module):
        def __init__(self, in_features, out_features, grid_size=5, spline_order=3, scale_noise=0.1, scale_base=1.0,
                     scale_spline=1.0, enable_standalone_scale_spline=True, base_activation=nn.SiLU,
                     grid_eps=0.02, grid_range=[-1, 1]):
            super().__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.grid_size = grid_size
            self.spline_order = spline_order
            h = (grid_range[1] - grid_range[0]) / grid_size
            grid = ((torch.arange(-spline_order, grid_size + spline_order + 1) * h + grid_range[0])
                    .expand(in_features, -1).contiguous())
            self.register_buffer("grid", grid)
            self.base_weight = nn.Parameter(torch.Tensor(out_features, in_features))
            self.spline_weight = nn.Parameter(torch.Tensor(out_features, in_features, grid_size + spline_order))
            if enable_standalone_scale_spline:
                self.spline_scaler = nn.Parameter(torch.Tensor(out_features, in_features))
            self.scale_noise = scale_noise
            self.scale_base = scale_base
            self.scale_spline = scale_spline
            self.enable_standalone_scale_spline = enable_standalone_scale_spline
            self.base_activation = base_activation()
            self.grid_eps = grid_eps
            self.reset_parameters()

        def reset_parameters(self):
            torch.nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
            with torch.no_grad():
                noise = ((torch.rand(self.grid_size + 1, self.in_features, self.out_features) - 1 / 2)
                         * self.scale_noise / self.grid_size)
                self.spline_weight.data.copy_(
                    (self.scale_spline if not self.enable_standalone_scale_spline else 1.0)
                    * self.curve2coeff(self.grid.T[self.spline_order: -self.spline_order], noise))
                if self.enable_standalone_scale_spline:
                    torch.nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)

        def b_splines(self, x):
            assert x.dim() == 2 and x.size(1) == self.in_features
            grid = self.grid
            x = x.unsqueeze(-1)
            bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
            for k in range(1, self.spline_order + 1):
                bases = ((x - grid[:, : -(k + 1)]) / (grid[:, k:-1] - grid[:, : -(k + 1)]) * bases[:, :, :-1]) + (
                    (grid[:, k + 1:] - x) / (grid[:, k + 1:] - grid[:, 1:(-k)]) * bases[:, :, 1:])
            assert bases.size() == (x.size(0), self.in_features, self.grid_size + self.spline_order)
            return bases.contiguous()

        def curve2coeff(self, x, y):
            assert x.dim() == 2 and x.size(1) == self.in_features
            assert y.size() == (x.size(0), self.in_features, self.out_features)
            A = self.b_splines(x).transpose(0, 1)
            B = y.transpose(0, 1)
            solution = torch.linalg.lstsq(A, B).solution
            result = solution.permute(2, 0, 1)
            assert result.size() == (self.out_features, self.in_features, self.grid_size + self.spline_order)
            return result.contiguous()

        @property
        def scaled_spline_weight(self):
            return self.spline_weight * (self.spline_scaler.unsqueeze(-1)
                                         if self.enable_standalone_scale_spline else 1.0)

        def forward(self, x):
            assert x.size(-1) == self.in_features
            original_shape = x.shape
            x = x.reshape(-1, self.in_features)
            base_output = F.linear(self.base_activation(x), self.base_weight)
            spline_output = F.linear(self.b_splines(x).view(x.size(0), -1),
                                     self.scaled_spline_weight.view(self.out_features, -1))
            output = base_output + spline_output
            output = output.reshape(*original_shape[:-1], self.out_features)
            return output

        @torch.no_grad()
        def update_grid(self, x, margin=0.01):
            assert x.dim() == 2 and x.size(1) == self.in_features
            batch = x.size(0)
            splines = self.b_splines(x)
            splines = splines.permute(1, 0, 2)
            orig_coeff = self.scaled_spline_weight
            orig_coeff = orig_coeff.permute(1, 2, 0)
            unreduced_spline_output = torch.bmm(splines, orig_coeff)
            unreduced_spline_output = unreduced_spline_output.permute(1, 0, 2)
            x_sorted = torch.sort(x, dim=0)[0]
            grid_adaptive = x_sorted[torch.linspace(0, batch - 1, self.grid_size + 1, dtype=torch.int64, device=x.device)]
            uniform_step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / self.grid_size
            grid_uniform = (torch.arange(self.grid_size + 1, dtype=torch.float32, device=x.device).unsqueeze(1)
                            * uniform_step + x_sorted[0] - margin)
            grid = self.grid_eps * grid_uniform + (1 - self.grid_eps) * grid_adaptive
            grid = torch.concatenate([
                grid[:1] - uniform_step * torch.arange(self.spline_order, 0, -1, device=x.device).unsqueeze(1),
                grid,
                grid[-1:] + uniform_step * torch.arange(1, self.spline_order + 1, device=x.device).unsqueeze(1)], dim=0)
            self.grid.copy_(grid.T)
            self.spline_weight.data.copy_(self.curve2coeff(x, unreduced_spline_output))

        def regularization_loss(self, regularize_activation=1.0, regularize_entropy=1.0):
            l1_fake = self.spline_weight.abs().mean(-1)
            regularization_loss_activation = l1_fake.sum()
            p = l1_fake / regularization_loss_activation
            regularization_loss_entropy = -torch.sum(p * p.log())
            return (regularize_activation * regularization_loss_activation
                    + regularize_entropy * regularization_loss_entropy)

    class KAN(nn.Module):
        def __init__(self, layers_hidden, grid_size=5, spline_order=3):
            super().__init__()
            self.layers = torch.nn.ModuleList()
            for in_features, out_features in zip(layers_hidden, layers_hidden[1:]):
                self.layers.append(KANLinear(in_features, out_features, grid_size=grid_size, spline_order=spline_order))

        def forward(self, x, update_grid=False):
            for layer in self.layers:
                if update_grid:
                    layer.update_grid(x)
                x = layer(x)
            return x

        def regularization_loss(self, regularize_activation=1.0, regularize_entropy=1.0):
            return sum(layer.regularization_loss(regularize_activation, regularize_entropy) for layer in self.layers)

    model = KAN([2, 4, 1])
    x = torch.rand(64, 2) * 2 - 1
    y = torch.sin(math.pi * x[:, :1]) * x[:, 1:] ** 2
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        out = model(x, update_grid=(update_grid and step == 1))
        loss = F.mse_loss(out, y) + 1e-3 * model.regularization_loss()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    grads = [p.grad for p in model.parameters()]
    return {"losses": losses, "grid": model.layers[0].grid, "grads": grads,
            "w": model.layers[1].spline_weight, "bases": model.layers[0].b_splines(x[:5])}


def test_efficient_kan_trains_and_updates_its_grid():
    ours, _ = run_both(kan, rtol=2e-4, atol=1e-5)
    # B-spline bases of order 3 are a partition of unity inside the grid
    np.testing.assert_allclose(ours["bases"].sum(-1), 1.0, rtol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]
    assert np.all(np.diff(ours["grid"], axis=1) > 0)


# ----------------------------------------------------------------------------------------------
# FastKAN (Gaussian radial bases over a frozen grid parameter) and ChebyKAN (cos(k acos x), an in-place
# multiply after an expand), trained by L-BFGS with the strong Wolfe line search as pykan trains
# ----------------------------------------------------------------------------------------------


def kan_lbfgs(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    try:
        class FastKANLayer(nn.Module):
            def __init__(self, i, o, grid_min=-2., grid_max=2., num_grids=8):
                super().__init__()
                self.layernorm = nn.LayerNorm(i)
                grid = torch.linspace(grid_min, grid_max, num_grids)
                self.grid = nn.Parameter(grid, requires_grad=False)
                self.denominator = (grid_max - grid_min) / (num_grids - 1)
                self.spline_linear = nn.Linear(i * num_grids, o, bias=False)
                nn.init.trunc_normal_(self.spline_linear.weight, mean=0.0, std=0.1)
                self.base_linear = nn.Linear(i, o)
            def forward(self, x):
                spline_basis = torch.exp(-((self.layernorm(x)[..., None] - self.grid) / self.denominator) ** 2)
                ret = self.spline_linear(spline_basis.view(*spline_basis.shape[:-2], -1))
                return ret + self.base_linear(F.silu(x))
        class ChebyKANLayer(nn.Module):
            def __init__(self, input_dim, output_dim, degree):
                super().__init__()
                self.inputdim, self.outdim, self.degree = input_dim, output_dim, degree
                self.cheby_coeffs = nn.Parameter(torch.empty(input_dim, output_dim, degree + 1))
                nn.init.normal_(self.cheby_coeffs, mean=0.0, std=1 / (input_dim * (degree + 1)))
                self.register_buffer("arange", torch.arange(0, degree + 1, 1))
            def forward(self, x):
                x = torch.reshape(x, (-1, self.inputdim))
                x = torch.tanh(x)
                x = x.view((-1, self.inputdim, 1)).expand(-1, -1, self.degree + 1)
                x = x.acos()
                x *= self.arange
                x = x.cos()
                y = torch.einsum("bid,iod->bo", x, self.cheby_coeffs)
                return y.view(-1, self.outdim)
        model = nn.Sequential(FastKANLayer(2, 4), ChebyKANLayer(4, 1, 3))
        x = torch.rand(32, 2) * 2 - 1
        y = torch.exp(torch.sin(math.pi * x[:, :1]) + x[:, 1:] ** 2)
        opt = torch.optim.LBFGS(model.parameters(), lr=1, history_size=10, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-32, tolerance_change=1e-32)
        losses = []
        for step in range(3):
            def closure():
                opt.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                return loss
            opt.step(closure)
            losses.append(closure().item())
        st = opt.state[opt._params[0]]
        return {"losses": losses, "n_iter": st["n_iter"], "func_evals": st["func_evals"],
                "w": model[1].cheby_coeffs, "grid_grad": model[0].grid.grad}
    finally:
        torch.set_default_dtype(torch.float32)


def test_fastkan_and_chebykan_trained_by_lbfgs():
    ours, theirs = run_both(kan_lbfgs, rtol=1e-6, atol=1e-8)
    assert ours["losses"][-1] < ours["losses"][0] / 3
    assert ours["grid_grad"] is None  # (a parameter that does not require grad gets none)
    assert ours["func_evals"] >= ours["n_iter"] > 3


# ----------------------------------------------------------------------------------------------
# Modern Hopfield networks: retrieval xi <- X softmax(beta X^T xi), a Hopfield layer
# ----------------------------------------------------------------------------------------------


def hopfield(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    d, N = 16, 8
    X = torch.sign(torch.randn(d, N))  # stored patterns as columns
    xi = X[:, 3].clone()
    xi[: d // 2] = -xi[: d // 2] * 0 + torch.randn(d // 2)  # half the pattern corrupted
    beta = 4.0
    for _ in range(3):
        xi = X @ torch.softmax(beta * X.T @ xi, dim=0)
    energy = -torch.logsumexp(beta * X.T @ xi, 0) / beta + 0.5 * xi @ xi

    class HopfieldLayer(nn.Module):
        def __init__(self, d_in, d_hidden, n_patterns, beta=None, update_steps=1):
            super().__init__()
            self.W_q = nn.Linear(d_in, d_hidden, bias=False)
            self.W_k = nn.Linear(d_in, d_hidden, bias=False)
            self.W_v = nn.Linear(d_in, d_hidden, bias=False)
            self.beta = beta if beta is not None else 1.0 / math.sqrt(d_hidden)
            self.update_steps = update_steps
            self.norm = nn.LayerNorm(d_hidden)

        def forward(self, R, Y):
            Q = self.W_q(R)
            K = self.W_k(Y)
            V = self.W_v(Y)
            for _ in range(self.update_steps):
                A = F.softmax(self.beta * torch.einsum("bqd,bkd->bqk", Q, K), dim=-1)
                Q = torch.bmm(A, K)
            return self.norm(torch.bmm(A, V)), A

    layer = HopfieldLayer(6, 8, 5, update_steps=2)
    R = torch.randn(2, 3, 6, requires_grad=True)
    Y = torch.randn(2, 5, 6)
    out, A = layer(R, Y)
    loss = out.pow(2).mean() + A.max(dim=-1).values.mean()
    loss.backward()
    return {"xi": xi, "energy": energy, "out": out, "A": A, "gR": R.grad,
            "gq": layer.W_q.weight.grad, "gk": layer.W_k.weight.grad}


def test_modern_hopfield_retrieval_and_layer():
    ours, _ = run_both(hopfield, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["A"].sum(-1), 1.0, rtol=1e-5)
    assert ours["xi"].shape == (16,)


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


# ----------------------------------------------------------------------------------------------
# minGRU / minLSTM: the parallel scan in log space (Heinsen's) against the sequential recurrence
# ----------------------------------------------------------------------------------------------


def min_gru(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def exists(v):
        return v is not None

    def heinsen_associative_scan_log(log_coeffs, log_values):
        a_star = log_coeffs.cumsum(dim=1)
        log_h0_plus_b_star = (log_values - a_star).logcumsumexp(dim=1)
        log_h = a_star + log_h0_plus_b_star
        return log_h.exp()

    def g(x):
        return torch.where(x >= 0, x + 0.5, x.sigmoid())

    def log_g(x):
        return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))

    class minGRU(nn.Module):
        def __init__(self, dim, expansion_factor=1.0):
            super().__init__()
            dim_inner = int(dim * expansion_factor)
            self.to_hidden_and_gate = nn.Linear(dim, dim_inner * 2, bias=False)
            self.to_out = nn.Linear(dim_inner, dim, bias=False) if expansion_factor != 1.0 else nn.Identity()

        def forward(self, x, prev_hidden=None, return_next_prev_hidden=False):
            seq_len = x.shape[1]
            hidden, gate = self.to_hidden_and_gate(x).chunk(2, dim=-1)
            if seq_len == 1:
                hidden = g(hidden)
                gate = gate.sigmoid()
                out = torch.lerp(prev_hidden, hidden, gate) if exists(prev_hidden) else (hidden * gate)
            else:
                log_coeffs = -F.softplus(gate)
                log_z = -F.softplus(-gate)
                log_tilde_h = log_g(hidden)
                log_values = log_z + log_tilde_h
                if exists(prev_hidden):
                    log_values = torch.cat((prev_hidden.log(), log_values), dim=1)
                    log_coeffs = F.pad(log_coeffs, (0, 0, 1, 0))
                out = heinsen_associative_scan_log(log_coeffs, log_values)
                out = out[:, -seq_len:]
            next_prev_hidden = out[:, -1:]
            out = self.to_out(out)
            if not return_next_prev_hidden:
                return out
            return out, next_prev_hidden

    class minLSTM(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.to_hidden_and_f_i_gate = nn.Linear(dim, dim * 3, bias=False)

        def forward(self, x):
            hidden, f_gate, i_gate = self.to_hidden_and_f_i_gate(x).chunk(3, dim=-1)
            diff = F.softplus(-f_gate) - F.softplus(-i_gate)
            log_f = -F.softplus(diff)
            log_i = -F.softplus(-diff)
            log_tilde_h = log_g(hidden)
            return heinsen_associative_scan_log(log_f, log_i + log_tilde_h)

    net = minGRU(6, expansion_factor=1.5)
    x = torch.randn(2, 7, 6, requires_grad=True)
    h0 = torch.rand(2, 1, 9) + 0.1
    out, last = net(x, prev_hidden=h0, return_next_prev_hidden=True)
    # sequential decoding one step at a time gives the same hidden states
    h = h0
    seq = []
    for t in range(7):
        o, h = net(x[:, t:t + 1], prev_hidden=h, return_next_prev_hidden=True)
        seq.append(o)
    seq = torch.cat(seq, dim=1)
    lstm = minLSTM(6)
    y = lstm(x)
    loss = out.sum() + y.pow(2).mean()
    loss.backward()
    return {"out": out, "seq": seq, "last": last, "y": y, "gx": x.grad,
            "gw": net.to_hidden_and_gate.weight.grad, "gl": lstm.to_hidden_and_f_i_gate.weight.grad}


def test_min_gru_parallel_scan_in_log_space():
    ours, _ = run_both(min_gru, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["out"], ours["seq"], rtol=1e-4, atol=1e-5)
    assert np.all(ours["y"] > 0)


# ----------------------------------------------------------------------------------------------
# RetNet: multi-scale retention in its parallel, recurrent and chunkwise forms, with xPos rotations
# ----------------------------------------------------------------------------------------------


def retnet(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def rotate_every_two(x):
        x1 = x[:, :, :, ::2]
        x2 = x[:, :, :, 1::2]
        x = torch.stack((-x2, x1), dim=-1)
        return x.flatten(-2)

    def theta_shift(x, sin, cos):
        return (x * cos) + (rotate_every_two(x) * sin)

    class RetNetRelPos(nn.Module):
        def __init__(self, embed_dim, num_heads):
            super().__init__()
            angle = 1.0 / (10000 ** torch.linspace(0, 1, embed_dim // num_heads // 2))
            angle = angle.unsqueeze(-1).repeat(1, 2).flatten()
            decay = torch.log(1 - 2 ** (-5 - torch.arange(num_heads, dtype=torch.float)))
            self.register_buffer("angle", angle)
            self.register_buffer("decay", decay)

        def forward(self, slen, chunk_size=None):
            index = torch.arange(slen).to(self.decay)
            sin = torch.sin(index[:, None] * self.angle[None, :])
            cos = torch.cos(index[:, None] * self.angle[None, :])
            mask = torch.tril(torch.ones(slen, slen).to(self.decay))
            mask = torch.masked_fill(index[:, None] - index[None, :], ~mask.bool(), float("inf"))
            mask = torch.exp(mask * self.decay[:, None, None])
            mask = torch.nan_to_num(mask)
            mask = mask / mask.sum(dim=-1, keepdim=True).sqrt()
            return (sin, cos), mask

    class MultiScaleRetention(nn.Module):
        def __init__(self, embed_dim, value_dim, num_heads):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = value_dim // num_heads
            self.key_dim = embed_dim // num_heads
            self.scaling = self.key_dim ** -0.5
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.v_proj = nn.Linear(embed_dim, value_dim, bias=False)
            self.g_proj = nn.Linear(embed_dim, value_dim, bias=False)
            self.out_proj = nn.Linear(value_dim, embed_dim, bias=False)
            self.group_norm = nn.LayerNorm(self.head_dim, eps=1e-6, elementwise_affine=False)
            nn.init.xavier_uniform_(self.q_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.k_proj.weight, gain=2 ** -2.5)

        def parallel_forward(self, qr, kr, v, mask):
            bsz, tgt_len, embed_dim = v.size()
            vr = v.view(bsz, tgt_len, self.num_heads, self.head_dim).transpose(1, 2)
            qk_mat = qr @ kr.transpose(-1, -2)
            qk_mat = qk_mat * mask
            qk_mat = qk_mat / qk_mat.detach().abs().sum(dim=-1, keepdim=True).clamp(min=1, max=5e4)
            output = torch.matmul(qk_mat, vr)
            return output.transpose(1, 2)

        def recurrent_forward(self, qr, kr, v, decay, incremental_state):
            bsz = v.size(0)
            v = v.view(bsz, self.num_heads, self.head_dim, 1)
            kv = kr * v
            if "prev_key_value" in incremental_state:
                prev_kv = incremental_state["prev_key_value"]
                prev_scale = incremental_state["scale"]
                scale = prev_scale * decay + 1
                kv = prev_kv * (prev_scale.sqrt() * decay / scale.sqrt()).view(self.num_heads, 1, 1) + kv / scale.sqrt().view(self.num_heads, 1, 1)
            else:
                scale = torch.ones_like(decay)
            incremental_state["prev_key_value"] = kv
            incremental_state["scale"] = scale
            output = torch.sum(qr * kv, dim=3)
            return output

        def forward(self, x, rel_pos, incremental_state=None):
            bsz, tgt_len, _ = x.size()
            (sin, cos), inner_mask = rel_pos
            q = self.q_proj(x)
            k = self.k_proj(x)
            v = self.v_proj(x)
            g = self.g_proj(x)
            k *= self.scaling
            q = q.view(bsz, tgt_len, self.num_heads, self.key_dim).transpose(1, 2)
            k = k.view(bsz, tgt_len, self.num_heads, self.key_dim).transpose(1, 2)
            qr = theta_shift(q, sin, cos)
            kr = theta_shift(k, sin, cos)
            if incremental_state is not None:
                output = self.recurrent_forward(qr, kr, v, inner_mask, incremental_state)
            else:
                output = self.parallel_forward(qr, kr, v, inner_mask)
            output = self.group_norm(output).reshape(bsz, tgt_len, self.head_dim * self.num_heads)
            output = F.silu(g) * output
            return self.out_proj(output)

    E, H, T = 16, 2, 6
    relpos = RetNetRelPos(E, H)
    msr = MultiScaleRetention(E, 2 * E, H)
    x = torch.randn(2, T, E, requires_grad=True)
    out = msr(x, relpos(T))
    loss = out.pow(2).mean()
    loss.backward()
    # the unnormalised retention of the paper: parallel D-masked form equals the recurrent S_n = gamma S_{n-1} + k^T v
    gamma = 1 - 2 ** (-5 - torch.arange(H, dtype=torch.float))
    q, k, v = torch.randn(3, 1, H, T, 4).unbind(0)
    n = torch.arange(T)
    D = (gamma.view(H, 1, 1) ** (n[:, None] - n[None, :]).clamp(min=0)) * (n[:, None] >= n[None, :])
    par = (q @ k.transpose(-1, -2) * D) @ v
    S = torch.zeros(1, H, 4, 4)
    rec = []
    for t in range(T):
        S = gamma.view(1, H, 1, 1) * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        rec.append(torch.einsum("bhd,bhde->bhe", q[:, :, t], S))
    rec = torch.stack(rec, 2)
    # chunkwise: inner-chunk parallel plus the cross-chunk state
    B = 3
    chunk = []
    R = torch.zeros(1, H, 4, 4)
    Dc = D[:, :B, :B]
    for c in range(T // B):
        qc, kc, vc = (z[:, :, c * B:(c + 1) * B] for z in (q, k, v))
        inner = (qc @ kc.transpose(-1, -2) * Dc) @ vc
        xi = gamma.view(1, H, 1, 1) ** (torch.arange(B).view(1, 1, B, 1) + 1)
        cross = (qc @ R) * xi
        chunk.append(inner + cross)
        decay_k = gamma.view(1, H, 1, 1) ** (B - 1 - torch.arange(B).view(1, 1, B, 1))
        R = (kc * decay_k).transpose(-1, -2) @ vc + (gamma.view(1, H, 1, 1) ** B) * R
    chunk = torch.cat(chunk, 2)
    return {"out": out, "gx": x.grad, "gq": msr.q_proj.weight.grad, "par": par, "rec": rec, "chunk": chunk,
            "mask": relpos(T)[1]}


def test_retnet_retention_three_forms():
    ours, _ = run_both(retnet, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["par"], ours["rec"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["par"], ours["chunk"], rtol=1e-4, atol=1e-5)
    assert np.all(np.triu(ours["mask"][0], 1) == 0)


# ----------------------------------------------------------------------------------------------
# xLSTM: sLSTM's exponential gating with a stabiliser state, mLSTM's matrix memory in its parallel form
# ----------------------------------------------------------------------------------------------


def xlstm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class sLSTMCell(nn.Module):
        def __init__(self, input_size, hidden_size):
            super().__init__()
            self.W = nn.Linear(input_size, 4 * hidden_size)
            self.R = nn.Linear(hidden_size, 4 * hidden_size, bias=False)

        def forward(self, x, state):
            h, c, n, m_ = state
            i_tilde, f_tilde, z_tilde, o_tilde = (self.W(x) + self.R(h)).chunk(4, dim=-1)
            log_f = F.logsigmoid(f_tilde)
            m_new = torch.max(log_f + m_, i_tilde)
            i = torch.exp(i_tilde - m_new)
            f = torch.exp(log_f + m_ - m_new)
            z = torch.tanh(z_tilde)
            o = torch.sigmoid(o_tilde)
            c = f * c + i * z
            n = f * n + i
            h = o * (c / n)
            return h, (h, c, n, m_new)

    def mlstm_parallel(q, k, v, igate_preact, fgate_preact, eps=1e-6):
        B, NH, S, DH = q.shape
        log_fgates = F.logsigmoid(fgate_preact)
        ltr = torch.tril(torch.ones((S, S), dtype=torch.bool))
        log_fgates_cumsum = torch.cat([torch.zeros((B, NH, 1, 1)), torch.cumsum(log_fgates, dim=-2)], dim=-2)
        rep_log_fgates_cumsum = log_fgates_cumsum.repeat(1, 1, 1, S + 1)
        _log_fg_matrix = rep_log_fgates_cumsum - rep_log_fgates_cumsum.transpose(-2, -1)
        log_fg_matrix = torch.where(ltr, _log_fg_matrix[:, :, 1:, 1:], -float("inf"))
        log_D_matrix = log_fg_matrix + igate_preact.transpose(-2, -1)
        max_log_D, _ = torch.max(log_D_matrix, dim=-1, keepdim=True)
        log_D_matrix_stabilized = log_D_matrix - max_log_D
        D_matrix = torch.exp(log_D_matrix_stabilized)
        keys_scaled = k / math.sqrt(DH)
        qk_matrix = q @ keys_scaled.transpose(-2, -1)
        C_matrix = qk_matrix * D_matrix
        normalizer = torch.maximum(C_matrix.sum(dim=-1, keepdim=True).abs(), torch.exp(-max_log_D))
        C_matrix_normalized = C_matrix / (normalizer + eps)
        return C_matrix_normalized @ v

    def mlstm_recurrent(q, k, v, igate_preact, fgate_preact, eps=1e-6):
        B, NH, S, DH = q.shape
        C = torch.zeros(B, NH, DH, DH)
        n = torch.zeros(B, NH, DH, 1)
        m_ = torch.zeros(B, NH, 1, 1)
        hs = []
        for t in range(S):
            qt, kt, vt = q[:, :, t, :, None], k[:, :, t, :, None] / math.sqrt(DH), v[:, :, t, :, None]
            it, ft = igate_preact[:, :, t, :, None], fgate_preact[:, :, t, :, None]
            log_f = F.logsigmoid(ft)
            m_new = torch.max(log_f + m_, it) if t > 0 else it
            f_act = torch.exp(log_f + m_ - m_new)
            i_act = torch.exp(it - m_new)
            C = f_act * C + i_act * (vt @ kt.transpose(-1, -2))
            n = f_act * n + i_act * kt
            h_num = C @ qt
            h_den = torch.maximum((n.transpose(-1, -2) @ qt).abs(), torch.exp(-m_new))
            hs.append((h_num / (h_den + eps)).squeeze(-1))
            m_ = m_new
        return torch.stack(hs, dim=2)

    cell = sLSTMCell(3, 5)
    xs = torch.randn(4, 2, 3)
    state = (torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 5), torch.full((2, 5), -float("inf")))
    state = tuple(s.clone() for s in state[:3]) + (torch.zeros(2, 5),)
    hs = []
    for t in range(4):
        h, state = cell(xs[t], state)
        hs.append(h)
    hs = torch.stack(hs)
    q, k, v = torch.randn(3, 1, 2, 5, 4, requires_grad=True).unbind(0)
    ig = torch.randn(1, 2, 5, 1, requires_grad=True)
    fg = (torch.randn(1, 2, 5, 1) + 3).requires_grad_()
    par = mlstm_parallel(q, k, v, ig, fg)
    rec = mlstm_recurrent(q, k, v, ig, fg)
    loss = hs.pow(2).sum() + par.sum()
    loss.backward()
    return {"hs": hs, "par": par, "rec": rec, "gW": cell.W.weight.grad, "gR": cell.R.weight.grad,
            "gig": ig.grad, "gfg": fg.grad}


def test_xlstm_slstm_and_mlstm():
    ours, _ = run_both(xlstm, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["par"], ours["rec"], rtol=1e-3, atol=1e-5)
    assert np.all(np.abs(ours["hs"]) < 1)


# ----------------------------------------------------------------------------------------------
# Perceiver: Fourier position features, cross-attention from latents to a large input, a latent transformer
# ----------------------------------------------------------------------------------------------


def perceiver(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def fourier_encode(x, max_freq, num_bands=4):
        x = x.unsqueeze(-1)
        dtype, orig_x = x.dtype, x
        scales = torch.linspace(1., max_freq / 2, num_bands, dtype=dtype)
        scales = scales[(*((None,) * (len(x.shape) - 1)), Ellipsis)]
        x = x * scales * math.pi
        x = torch.cat([x.sin(), x.cos()], dim=-1)
        x = torch.cat((x, orig_x), dim=-1)
        return x

    class PreNorm(nn.Module):
        def __init__(self, dim, fn, context_dim=None):
            super().__init__()
            self.fn = fn
            self.norm = nn.LayerNorm(dim)
            self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

        def forward(self, x, **kwargs):
            x = self.norm(x)
            if self.norm_context is not None:
                kwargs.update(context=self.norm_context(kwargs["context"]))
            return self.fn(x, **kwargs)

    class GEGLU(nn.Module):
        def forward(self, x):
            x, gates = x.chunk(2, dim=-1)
            return x * F.gelu(gates)

    class Attention(nn.Module):
        def __init__(self, query_dim, context_dim=None, heads=2, dim_head=8):
            super().__init__()
            inner_dim = dim_head * heads
            context_dim = context_dim if context_dim is not None else query_dim
            self.scale = dim_head ** -0.5
            self.heads = heads
            self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
            self.to_kv = nn.Linear(context_dim, inner_dim * 2, bias=False)
            self.to_out = nn.Linear(inner_dim, query_dim)

        def forward(self, x, context=None, mask=None):
            h = self.heads
            q = self.to_q(x)
            context = context if context is not None else x
            k, v = self.to_kv(context).chunk(2, dim=-1)
            b = q.shape[0]
            q, k, v = map(lambda t: t.reshape(b, t.shape[1], h, -1).permute(0, 2, 1, 3).reshape(b * h, t.shape[1], -1), (q, k, v))
            sim = torch.einsum("b i d, b j d -> b i j", q, k) * self.scale
            if mask is not None:
                mask = mask.reshape(b, -1)
                max_neg_value = -torch.finfo(sim.dtype).max
                mask = mask[:, None, :].repeat_interleave(h, dim=0)
                sim.masked_fill_(~mask, max_neg_value)
            attn = sim.softmax(dim=-1)
            out = torch.einsum("b i j, b j d -> b i d", attn, v)
            n = out.shape[1]
            out = out.reshape(b, h, n, -1).permute(0, 2, 1, 3).reshape(b, n, -1)
            return self.to_out(out)

    class Perceiver(nn.Module):
        def __init__(self, input_channels=3, num_latents=6, latent_dim=16, num_classes=4, depth=2, max_freq=5., num_bands=3):
            super().__init__()
            self.max_freq, self.num_bands = max_freq, num_bands
            input_dim = 2 * (num_bands * 2 + 1) + input_channels
            self.latents = nn.Parameter(torch.randn(num_latents, latent_dim))
            self.cross_attn = PreNorm(latent_dim, Attention(latent_dim, input_dim, heads=1, dim_head=16), context_dim=input_dim)
            self.cross_ff = PreNorm(latent_dim, nn.Sequential(nn.Linear(latent_dim, latent_dim * 4 * 2), GEGLU(), nn.Linear(latent_dim * 4, latent_dim)))
            self.layers = nn.ModuleList([nn.ModuleList([PreNorm(latent_dim, Attention(latent_dim)),
                                                        PreNorm(latent_dim, nn.Sequential(nn.Linear(latent_dim, 32), GEGLU(), nn.Linear(16, latent_dim)))])
                                         for _ in range(depth)])
            self.to_logits = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, num_classes))

        def forward(self, data, mask=None):
            b, *axis, _ = data.shape
            axis_pos = list(map(lambda size: torch.linspace(-1., 1., steps=size), axis))
            pos = torch.stack(torch.meshgrid(*axis_pos, indexing="ij"), dim=-1)
            enc_pos = fourier_encode(pos, self.max_freq, self.num_bands)
            enc_pos = enc_pos.reshape(*enc_pos.shape[:-2], -1)
            enc_pos = enc_pos.unsqueeze(0).expand(b, *enc_pos.shape)
            data = torch.cat((data, enc_pos), dim=-1)
            data = data.flatten(1, -2)
            x = self.latents.unsqueeze(0).expand(b, -1, -1)
            x = self.cross_attn(x, context=data, mask=mask) + x
            x = self.cross_ff(x) + x
            for self_attn, self_ff in self.layers:
                x = self_attn(x) + x
                x = self_ff(x) + x
            return self.to_logits(x.mean(dim=-2))

    model = Perceiver()
    img = torch.randn(2, 5, 4, 3)
    mask = torch.ones(2, 5, 4, dtype=torch.bool)
    mask[1, :, 2:] = False
    logits = model(img, mask=mask)
    loss = F.cross_entropy(logits, torch.tensor([1, 3]))
    loss.backward()
    # a masked input position does not reach the logits of its example
    img2 = img.clone()
    img2[1, :, 2:] += 10
    with torch.no_grad():
        logits2 = model(img2, mask=mask)
    return {"logits": logits, "logits2": logits2, "g_lat": model.latents.grad,
            "g_q": model.cross_attn.fn.to_q.weight.grad, "g_kv": model.cross_attn.fn.to_kv.weight.grad}


def test_perceiver_cross_attention_to_latents():
    ours, _ = run_both(perceiver, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["logits"][1], ours["logits2"][1], rtol=1e-5, atol=1e-6)
    assert np.abs(ours["g_kv"]).max() > 0


# ----------------------------------------------------------------------------------------------
# Neural Turing Machine addressing and the DNC's usage-based allocation and temporal links
# ----------------------------------------------------------------------------------------------


def ntm_dnc(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def _convolve(w, s):
        assert s.size(0) == 3
        t = torch.cat([w[-1:], w, w[:1]])
        c = F.conv1d(t.view(1, 1, -1), s.view(1, 1, -1)).view(-1)
        return c

    class NTMMemory(nn.Module):
        def __init__(self, N, M):
            super().__init__()
            self.N, self.M = N, M
            self.register_buffer("mem_bias", torch.Tensor(N, M))
            stdev = 1 / (np.sqrt(N + M))
            nn.init.uniform_(self.mem_bias, -stdev, stdev)

        def reset(self, batch_size):
            self.batch_size = batch_size
            self.memory = self.mem_bias.clone().repeat(batch_size, 1, 1)

        def read(self, w):
            return torch.matmul(w.unsqueeze(1), self.memory).squeeze(1)

        def write(self, w, e, a):
            self.prev_mem = self.memory
            self.memory = torch.Tensor(self.batch_size, self.N, self.M)
            erase = torch.matmul(w.unsqueeze(-1), e.unsqueeze(1))
            add = torch.matmul(w.unsqueeze(-1), a.unsqueeze(1))
            self.memory = self.prev_mem * (1 - erase) + add

        def address(self, k, β, g, s, γ, w_prev):
            wc = self._similarity(k, β)
            wg = self._interpolate(w_prev, wc, g)
            ŵ = self._shift(wg, s)
            w = self._sharpen(ŵ, γ)
            return w

        def _similarity(self, k, β):
            k = k.view(self.batch_size, 1, -1)
            w = F.softmax(β * F.cosine_similarity(self.memory + 1e-16, k + 1e-16, dim=-1), dim=1)
            return w

        def _interpolate(self, w_prev, wc, g):
            return g * wc + (1 - g) * w_prev

        def _shift(self, wg, s):
            result = torch.zeros(wg.size())
            for b in range(self.batch_size):
                result[b] = _convolve(wg[b], s[b])
            return result

        def _sharpen(self, ŵ, γ):
            w = ŵ ** γ
            w = torch.div(w, torch.sum(w, dim=1).view(-1, 1) + 1e-16)
            return w

    mem = NTMMemory(6, 4)
    mem.reset(2)
    head = nn.Linear(5, 4 + 1 + 1 + 3 + 1 + 4 + 4)
    x = torch.randn(2, 5)
    o = head(x)
    k, β, g, s, γ, e, a = torch.split(o, [4, 1, 1, 3, 1, 4, 4], dim=1)
    k = k.clone()
    β = F.softplus(β)
    g = F.sigmoid(g)
    s = F.softmax(s, dim=1)
    γ = 1 + F.softplus(γ)
    e = F.sigmoid(e)
    w_prev = torch.zeros(2, 6)
    w_prev[:, 0] = 1
    w = mem.address(k, β, g, s, γ, w_prev)
    mem.write(w, e, a)
    r = mem.read(w)
    # the same circular shift through F.pad(mode="circular") on the whole batch
    wg = g * mem._similarity(k, β) if False else None
    w_alt = F.conv1d(F.pad(w.unsqueeze(0), (1, 1), mode="circular"), s.unsqueeze(1), groups=2).squeeze(0)

    # DNC: allocation weighting from sorted usage, temporal link matrix and forward/backward weightings
    def allocation(usage, eps=1e-6):
        usage = eps + (1 - eps) * usage
        sorted_usage, phi = torch.topk(usage, usage.size(-1), dim=-1, largest=False)
        one = torch.ones(usage.size(0), 1)
        sorted_prod = torch.cumprod(torch.cat((one, sorted_usage), dim=-1), dim=-1)[:, :-1]
        sorted_alloc = (1 - sorted_usage) * sorted_prod
        _, phi_inv = torch.sort(phi, dim=-1)
        return sorted_alloc.gather(-1, phi_inv)

    usage = torch.rand(2, 6, requires_grad=True)
    alloc = allocation(usage)
    ww = F.softmax(torch.randn(2, 6), -1)
    L = torch.zeros(2, 6, 6)
    prec = torch.zeros(2, 6)
    for _ in range(2):
        L = (1 - ww.unsqueeze(2) - ww.unsqueeze(1)) * L + ww.unsqueeze(2) * prec.unsqueeze(1)
        L = L * (1 - torch.eye(6).unsqueeze(0))
        prec = (1 - ww.sum(-1, keepdim=True)) * prec + ww
    rw = F.softmax(torch.randn(2, 6), -1)
    fwd = torch.bmm(L, rw.unsqueeze(2)).squeeze(2)
    bwd = torch.bmm(L.transpose(1, 2), rw.unsqueeze(2)).squeeze(2)
    loss = r.pow(2).sum() + mem.memory.sum() + (alloc * torch.arange(6.)).sum()
    loss.backward()
    return {"w": w, "w_alt": w_alt, "r": r, "mem": mem.memory, "g_head": head.weight.grad, "alloc": alloc,
            "g_usage": usage.grad, "fwd": fwd, "bwd": bwd}


def test_ntm_addressing_and_dnc_allocation():
    ours, _ = run_both(ntm_dnc, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["w"].sum(-1), 1.0, rtol=1e-5)
    w, s = ours["w"], None
    np.testing.assert_allclose(ours["alloc"].sum(-1) <= 1 + 1e-6, True)
    assert ours["w_alt"].shape == (2, 6)


# ----------------------------------------------------------------------------------------------
# Differentiable sorting: NeuralSort's relaxed permutation, soft ranks; Gumbel-Sinkhorn permutation learning
# ----------------------------------------------------------------------------------------------


def neuralsort_sinkhorn(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def neural_sort(s, tau):
        n = s.size()[1]
        one = torch.ones((n, 1), dtype=s.dtype)
        A_s = torch.abs(s - s.permute(0, 2, 1))
        B = torch.matmul(A_s, torch.matmul(one, torch.transpose(one, 0, 1)))
        scaling = (n + 1 - 2 * (torch.arange(n) + 1)).type(s.dtype)
        C = torch.matmul(s, scaling.unsqueeze(0))
        P_max = (C - B).permute(0, 2, 1)
        sm = torch.nn.Softmax(-1)
        P_hat = sm(P_max / tau)
        return P_hat

    def soft_rank(x, tau):
        diff = x.unsqueeze(-1) - x.unsqueeze(-2)
        return 1 + torch.sigmoid(diff / tau).sum(-1) - 0.5

    def sample_gumbel(shape, eps=1e-20):
        U = torch.rand(shape).float()
        return -torch.log(eps - torch.log(U + eps))

    def log_sinkhorn(log_alpha, n_iter=20):
        for _ in range(n_iter):
            log_alpha = log_alpha - torch.logsumexp(log_alpha, -1, keepdim=True)
            log_alpha = log_alpha - torch.logsumexp(log_alpha, -2, keepdim=True)
        return log_alpha.exp()

    def gumbel_sinkhorn(log_alpha, tau=1.0, n_iter=20, noise=True):
        if noise:
            log_alpha = log_alpha + sample_gumbel(log_alpha.shape)
        return log_sinkhorn(log_alpha / tau, n_iter)

    scores = torch.randn(2, 5, 1, requires_grad=True)
    P = neural_sort(scores, tau=0.1)
    sorted_soft = torch.bmm(P, scores)
    ranks = soft_rank(scores.squeeze(-1), tau=0.05)
    hard_perm = torch.argsort(scores.squeeze(-1), dim=-1, descending=True)
    (sorted_soft.sum() + (ranks * torch.arange(5.)).sum()).backward()

    # learning to unscramble: a network produces log_alpha for a shuffled sequence
    n = 5
    x = torch.rand(8, n)
    perm = torch.stack([torch.randperm(n) for _ in range(8)])
    shuffled = torch.gather(x, 1, perm)
    net = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, n))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    ordered = torch.sort(x, dim=1).values
    losses = []
    for step in range(3):
        log_alpha = net(shuffled.unsqueeze(-1))
        soft_perm = gumbel_sinkhorn(log_alpha, tau=0.5, n_iter=10)
        recon = torch.matmul(soft_perm.transpose(1, 2), shuffled.unsqueeze(-1)).squeeze(-1)
        loss = F.mse_loss(recon, ordered)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ds = gumbel_sinkhorn(log_alpha.detach(), noise=False, n_iter=50)
    return {"P": P, "sorted": sorted_soft, "ranks": ranks, "hard": hard_perm, "g_scores": scores.grad,
            "losses": losses, "ds": ds, "w": net[2].weight}


def test_neuralsort_and_gumbel_sinkhorn():
    ours, _ = run_both(neuralsort_sinkhorn, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["P"].sum(-1), 1.0, rtol=1e-5)
    # at a small temperature the relaxed sort orders descending
    s = ours["sorted"][..., 0]
    assert np.all(np.diff(s, axis=-1) <= 1e-3)
    np.testing.assert_allclose(ours["ds"].sum(-2), 1.0, rtol=1e-4)
    np.testing.assert_allclose(ours["ds"].sum(-1), 1.0, rtol=1e-2)


# ----------------------------------------------------------------------------------------------
# Memory the architectures above share: a NumPy pool seen through from_numpy, a grid expanded then made
# contiguous, q/k/v unbound from one tensor, the gates chunked from one projection, .data of a parameter
# ----------------------------------------------------------------------------------------------


def shared_memory(m):
    torch, nn, F = m.torch, m.nn, m.F
    pool = np.zeros((3, 2), np.float32)
    seen = torch.from_numpy(pool)
    seen[1] += 2  # writes into the pool
    grid = torch.linspace(-1, 1, 4).expand(3, -1)
    expanded_shares = grid.stride() == (0, 1)
    dense = grid.contiguous()
    dense[0, 0] = 9.0  # a copy: the linspace is untouched
    qkv = torch.zeros(3, 2, 4)
    q, k, v = qkv.unbind(0)
    k.add_(1)
    gates = torch.zeros(2, 6)
    i, f, o = gates.chunk(3, dim=-1)
    f.fill_(5)
    lin = nn.Linear(2, 2)
    lin.weight.data.zero_()
    arr = qkv.numpy()
    arr[2] = 7
    return {"pool": pool, "expanded_shares": expanded_shares, "grid": grid, "qkv": qkv, "gates": gates,
            "w": lin.weight, "v": v}


def test_memory_shared_as_pytorch_shares_it():
    ours, _ = run_both(shared_memory)
    assert ours["pool"].tolist() == [[0, 0], [2, 2], [0, 0]]
    assert ours["expanded_shares"] is True and ours["grid"][0, 0] == -1
    assert ours["qkv"][1].min() == 1 and ours["qkv"][2].min() == 7 and ours["v"].min() == 7
    assert ours["gates"][:, 2:4].min() == 5 and ours["gates"][:, :2].max() == 0
    assert not ours["w"].any()


# ----------------------------------------------------------------------------------------------
# An xLSTM-style block trained as its repository trains: a causal depthwise convolution, a multi-head layer norm
# by group_norm, small/Wang inits, AdamW with decay split by parameter kind, warmup-cosine LambdaLR, clipping,
# gradient accumulation; a Perceiver-IO decoder through nn.MultiheadAttention with kdim/vdim
# ----------------------------------------------------------------------------------------------


def xlstm_block_training(m, steps=3):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def small_init_init_(param, dim):
        std = math.sqrt(2 / (5 * dim))
        torch.nn.init.normal_(param, mean=0.0, std=std)
        return param

    def wang_init_(param, dim, num_blocks):
        std = 2 / num_blocks / math.sqrt(dim)
        torch.nn.init.normal_(param, mean=0.0, std=std)
        return param

    class CausalConv1d(nn.Module):
        def __init__(self, feature_dim, kernel_size=4):
            super().__init__()
            self.pad = kernel_size - 1
            self.conv = nn.Conv1d(feature_dim, feature_dim, kernel_size, padding=self.pad, groups=feature_dim)

        def forward(self, x):
            y = self.conv(x.transpose(1, 2))
            return y[:, :, :-self.pad].transpose(1, 2)

    class MultiHeadLayerNorm(nn.Module):
        def __init__(self, ndim, num_heads):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(ndim))
            self.num_heads = num_heads

        def forward(self, x):  # (B, NH, S, DH)
            B, NH, S, DH = x.shape
            gn_in = x.transpose(1, 2).reshape(B * S, NH * DH)
            out = F.group_norm(gn_in, num_groups=NH, weight=1.0 + self.weight, eps=1e-5)
            return out.view(B, S, NH * DH)

    class Block(nn.Module):
        def __init__(self, dim=8, heads=2, vocab=11):
            super().__init__()
            self.heads = heads
            self.emb = nn.Embedding(vocab, dim)
            self.norm = nn.LayerNorm(dim, bias=False)
            self.proj_up = nn.Linear(dim, 2 * dim)
            self.conv = CausalConv1d(dim)
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.igate = nn.Linear(3 * dim, heads)
            self.fgate = nn.Linear(3 * dim, heads)
            self.outnorm = MultiHeadLayerNorm(dim, heads)
            self.proj_down = nn.Linear(dim, dim)
            self.head = nn.Linear(dim, vocab, bias=False)
            small_init_init_(self.proj_up.weight, dim)
            wang_init_(self.proj_down.weight, dim, 1)
            torch.nn.init.zeros_(self.igate.weight)
            torch.nn.init.normal_(self.igate.bias, mean=0.0, std=0.1)
            with torch.no_grad():
                self.fgate.bias.copy_(torch.linspace(3.0, 6.0, heads))

        def forward(self, idx):
            x = self.emb(idx)
            B, S, D = x.shape
            h = self.norm(x)
            x_m, z = self.proj_up(h).split(D, dim=-1)
            c = F.silu(self.conv(x_m))
            q, k, v = self.qkv(c).chunk(3, dim=-1)
            gates_in = torch.cat([q, k, v], dim=-1)
            ig = self.igate(gates_in).transpose(-1, -2).unsqueeze(-1)
            fg = self.fgate(gates_in).transpose(-1, -2).unsqueeze(-1)
            q, k, v = (t.view(B, S, self.heads, -1).transpose(1, 2) for t in (q, k, v))
            log_f = F.logsigmoid(fg)
            cum = torch.cat([torch.zeros(B, self.heads, 1, 1), torch.cumsum(log_f, dim=-2)], dim=-2)
            log_fg = cum[:, :, 1:] - cum[:, :, 1:].transpose(-2, -1)
            log_fg = log_fg.masked_fill(~torch.tril(torch.ones(S, S, dtype=torch.bool)), float("-inf"))
            log_D = log_fg + ig.transpose(-2, -1)
            max_log_D = log_D.amax(dim=-1, keepdim=True)
            Dm = torch.exp(log_D - max_log_D)
            C = (q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])) * Dm
            norm = torch.maximum(C.sum(-1, keepdim=True).abs(), torch.exp(-max_log_D))
            hs = (C / (norm + 1e-6)) @ v
            out = self.outnorm(hs) * F.silu(z)
            x = x + self.proj_down(out)
            return self.head(x)

    model = Block()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or "emb" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    warmup, total = 2, 6

    def lr_lambda(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    data = torch.randint(0, 11, (4, 7))
    losses, norms, lrs = [], [], []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        for micro in data.split(2):
            logits = model(micro[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), micro[:, 1:].reshape(-1)) / 2
            loss.backward()
            losses.append(loss.item())
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5).item())
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())

    # a Perceiver-IO decoder: output queries attend to latents of another width
    torch.manual_seed(1)
    dec = nn.MultiheadAttention(6, 2, kdim=8, vdim=5, batch_first=True)
    queries = torch.randn(2, 3, 6, requires_grad=True)
    latents = torch.randn(2, 4, 8)
    values = torch.randn(2, 4, 5)
    pad = torch.tensor([[False, False, False, True], [False, True, False, False]])
    out, w = dec(queries, latents, values, key_padding_mask=pad, average_attn_weights=False)
    out.pow(2).sum().backward()
    return {"losses": losses, "norms": norms, "lrs": lrs, "up": model.proj_up.weight, "fgate_b": model.fgate.bias,
            "out": out, "w": w, "gq": queries.grad, "g_k": dec.k_proj_weight.grad, "g_v": dec.v_proj_weight.grad}


def test_xlstm_block_training_and_perceiver_io_decoder():
    ours, _ = run_both(xlstm_block_training, rtol=1e-4, atol=1e-6)
    assert len(ours["losses"]) == 6 and all(n > 0 for n in ours["norms"])
    np.testing.assert_allclose([lr[0] for lr in ours["lrs"]], [3e-3, 3e-3, 3e-3 * 0.5 * (1 + math.cos(math.pi / 4))])
    assert np.all(ours["w"][0, :, :, 3] == 0) and np.all(ours["w"][1, :, :, 1] == 0)
    np.testing.assert_allclose(ours["w"].sum(-1), 1.0, rtol=1e-5)
