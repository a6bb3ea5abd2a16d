# ruff: noqa: B006, B007, E501  (the programs are kept as their authors wrote them)
"""Recent and unusual architectures (see tests/pytorch_programs.py) as their reference implementations write them,
each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.
Kolmogorov-Arnold networks: efficient-KAN's B-spline bases by the Cox-de Boor recursion over a grid buffer, spline
weights and scalers, the grid updated from data by ``linalg.lstsq``; FastKAN (Gaussian radial bases over a frozen
grid parameter) and ChebyKAN (cos(k acos x)), trained by L-BFGS with the strong Wolfe line search as pykan trains."""

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
