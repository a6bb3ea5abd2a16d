# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Differentiable numerical solvers written as torchdiffeq, torchsde, torchcde, DeepXDE and papers' code write them,
run as tests/probe18_odes_common.py says. Neural CDEs: on torchcde's natural cubic spline (the Thomas algorithm over
NumPy object arrays of tensors, ``bucketize``) and on its linear/rectilinear interpolation of data with missing
values (``masked_select``, writes by index, ``cummax``/``gather`` forward fill, coefficients as buffers)."""

import numpy as np
import pytest

from .probe18_odes_common import make_fixed_grid_odeint
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A neural CDE (Kidger et al. 2020) on torchcde's natural cubic spline of the control path
# ----------------------------------------------------------------------------------------------


def make_natural_cubic_spline(m):
    torch = m.torch

    def tridiagonal_solve(b, A_upper, A_diagonal, A_lower):
        """Solves Ax=b, where A is a tridiagonal matrix, by the Thomas algorithm (as torchcde's misc.py)."""
        A_upper, _ = torch.broadcast_tensors(A_upper, b[..., :-1])
        A_lower, _ = torch.broadcast_tensors(A_lower, b[..., :-1])
        A_diagonal, b = torch.broadcast_tensors(A_diagonal, b)

        channels = b.size(-1)

        new_b = np.empty(channels, dtype=object)
        new_A_diagonal = np.empty(channels, dtype=object)
        outs = np.empty(channels, dtype=object)

        new_b[0] = b[..., 0]
        new_A_diagonal[0] = A_diagonal[..., 0]
        for i in range(1, channels):
            w = A_lower[..., i - 1] / new_A_diagonal[i - 1]
            new_A_diagonal[i] = A_diagonal[..., i] - w * A_upper[..., i - 1]
            new_b[i] = b[..., i] - w * new_b[i - 1]

        outs[channels - 1] = new_b[channels - 1] / new_A_diagonal[channels - 1]
        for i in range(channels - 2, -1, -1):
            outs[i] = (new_b[i] - A_upper[..., i] * outs[i + 1]) / new_A_diagonal[i]

        return torch.stack(outs.tolist(), dim=-1)

    def _natural_cubic_spline_coeffs_without_missing_values(t, x):
        # x should be a tensor of shape (..., length)
        length = x.size(-1)
        time_diffs = t[1:] - t[:-1]
        time_diffs_reciprocal = time_diffs.reciprocal()
        time_diffs_reciprocal_squared = time_diffs_reciprocal ** 2
        three_path_diffs = 3 * (x[..., 1:] - x[..., :-1])
        six_path_diffs = 2 * three_path_diffs
        path_diffs_scaled = three_path_diffs * time_diffs_reciprocal_squared

        # Solve a tridiagonal linear system to find the derivatives at the knots
        system_diagonal = torch.empty(length, dtype=x.dtype, device=x.device)
        system_diagonal[:-1] = time_diffs_reciprocal
        system_diagonal[-1] = 0
        system_diagonal[1:] += time_diffs_reciprocal
        system_diagonal *= 2
        system_rhs = torch.empty_like(x)
        system_rhs[..., :-1] = path_diffs_scaled
        system_rhs[..., -1] = 0
        system_rhs[..., 1:] += path_diffs_scaled
        knot_derivatives = tridiagonal_solve(system_rhs, time_diffs_reciprocal, system_diagonal,
                                             time_diffs_reciprocal)

        a = x[..., :-1]
        b = knot_derivatives[..., :-1]
        two_c = (six_path_diffs * time_diffs_reciprocal
                 - 4 * knot_derivatives[..., :-1]
                 - 2 * knot_derivatives[..., 1:]) * time_diffs_reciprocal
        three_d = (-six_path_diffs * time_diffs_reciprocal
                   + 3 * (knot_derivatives[..., :-1]
                          + knot_derivatives[..., 1:])) * time_diffs_reciprocal_squared
        return a, b, two_c, three_d

    def natural_cubic_coeffs(x, t):
        x = x.transpose(-1, -2)  # channels first, time last
        a, b, two_c, three_d = _natural_cubic_spline_coeffs_without_missing_values(t, x)
        a, b, two_c, three_d = (c.transpose(-1, -2) for c in (a, b, two_c, three_d))
        return torch.cat([a, b, two_c, three_d], dim=-1)

    class CubicSpline:
        def __init__(self, coeffs, t):
            channels = coeffs.size(-1) // 4
            self._t = t
            self._a, self._b, self._two_c, self._three_d = coeffs.split(channels, dim=-1)

        def _interpret_t(self, t):
            t = torch.as_tensor(t, dtype=self._b.dtype, device=self._b.device)
            maxlen = self._b.size(-2) - 1
            # clamp because t may go outside of [t[0], t[-1]]; this is fine
            index = torch.bucketize(t.detach(), self._t.detach()).sub(1).clamp(0, maxlen)
            # will never access the last element of self._t; this is correct behaviour
            fractional_part = t - self._t[index]
            return fractional_part, index

        def evaluate(self, t):
            fractional_part, index = self._interpret_t(t)
            fractional_part = fractional_part.unsqueeze(-1)
            inner = 0.5 * self._two_c[..., index, :] + self._three_d[..., index, :] * fractional_part / 3
            inner = self._b[..., index, :] + inner * fractional_part
            return self._a[..., index, :] + inner * fractional_part

        def derivative(self, t):
            fractional_part, index = self._interpret_t(t)
            fractional_part = fractional_part.unsqueeze(-1)
            inner = self._two_c[..., index, :] + self._three_d[..., index, :] * fractional_part
            deriv = self._b[..., index, :] + inner * fractional_part
            return deriv

    return natural_cubic_coeffs, CubicSpline


def make_neural_cde(m, input_channels=3, hidden_channels=8, output_channels=1):
    torch, nn = m.torch, m.nn

    class CDEFunc(nn.Module):
        def __init__(self, input_channels, hidden_channels):
            super(CDEFunc, self).__init__()
            self.input_channels = input_channels
            self.hidden_channels = hidden_channels
            self.linear1 = nn.Linear(hidden_channels, 16)
            self.linear2 = nn.Linear(16, input_channels * hidden_channels)

        def forward(self, t, z):
            z = self.linear1(z)
            z = z.relu()
            z = self.linear2(z)
            z = z.tanh()
            z = z.view(z.size(0), self.hidden_channels, self.input_channels)
            return z

    class NeuralCDE(nn.Module):
        def __init__(self):
            super(NeuralCDE, self).__init__()
            self.func = CDEFunc(input_channels, hidden_channels)
            self.initial = nn.Linear(input_channels, hidden_channels)
            self.readout = nn.Linear(hidden_channels, output_channels)

    return NeuralCDE().double()


def cde_data(batch=8, length=9):
    rng = np.random.default_rng(17)
    t = np.linspace(0, 4 * np.pi, length)
    start = rng.uniform(0, 2 * np.pi, batch)
    x_pos = np.cos(start[:, None] + t[None])
    y_pos = np.sin(start[:, None] + t[None])
    y = (np.arange(batch) % 2).astype(np.float64)
    y_pos[y == 1] = -y_pos[y == 1]  # the other direction of spin
    X = np.stack([np.broadcast_to(t, (batch, length)), x_pos, y_pos], 2)
    X = X + 0.05 * rng.standard_normal((batch, length, 3))
    return t, X, y


def neural_cde(m, weights, epochs=3):
    torch, optim, F = m.torch, m.optim, m.F
    odeint = make_fixed_grid_odeint(m)
    natural_cubic_coeffs, CubicSpline = make_natural_cubic_spline(m)
    model = load(m, make_neural_cde(m), weights)
    t_np, X_np, y_np = cde_data()
    t, train_X, train_y = (torch.from_numpy(a) for a in (t_np, X_np, y_np))
    optimizer = optim.Adam(model.parameters(), lr=0.01)

    def cdeint(X, z0, func, t):
        def vector_field(t, z):
            return (func(t, z) @ X.derivative(t).unsqueeze(-1)).squeeze(-1)
        return odeint(vector_field, z0, t, step_size=(t[1] - t[0]).item())

    losses, grads = [], []
    for epoch in range(epochs):
        train_coeffs = natural_cubic_coeffs(train_X, t)
        X = CubicSpline(train_coeffs, t)
        X0 = X.evaluate(t[0])
        z0 = model.initial(X0)
        z_T = cdeint(X, z0, model.func, t[[0, -1]])[1]
        pred_y = model.readout(z_T).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(pred_y, train_y)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    # the spline's derivative with respect to the data, through the Thomas algorithm
    data = train_X.clone().requires_grad_(True)
    spline = CubicSpline(natural_cubic_coeffs(data, t), t)
    query = torch.tensor([0.3, 2.0, 7.7, 12.5], dtype=torch.float64)
    values = spline.evaluate(query)
    d_data, = torch.autograd.grad((values ** 2).sum() + spline.derivative(query).sum(), data)
    return {"losses": losses, "grads": grads, "values": values, "d_data": d_data,
            "knots": spline.evaluate(t), "slopes": spline.derivative(t)}


def test_neural_cde():
    weights = weights_of(make_neural_cde)
    ours, _ = run_both(neural_cde, weights, rtol=1e-9, atol=1e-11)
    _, X, _ = cde_data()
    np.testing.assert_allclose(ours["knots"], X, rtol=1e-10, atol=1e-12)  # through the data
    assert np.isfinite(ours["losses"]).all()


def test_natural_cubic_spline_against_a_dense_solve():
    """Without torch: the Thomas algorithm's knot derivatives solve the natural spline's tridiagonal system (built
    densely here with NumPy), and a cubic through the knots of a straight line is that line."""
    torch = OURS.torch
    natural_cubic_coeffs, CubicSpline = make_natural_cubic_spline(OURS)
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 3, 6))
    x = rng.standard_normal((6, 1))
    coeffs = natural_cubic_coeffs(torch.tensor(x), torch.tensor(t))
    h = np.diff(t)
    A = np.zeros((6, 6))
    rhs = np.zeros(6)
    for i in range(5):  # natural: continuous second derivatives, zero at the ends
        A[i, i] += 2 / h[i]
        A[i, i + 1] += 1 / h[i]
        A[i + 1, i] += 1 / h[i]
        A[i + 1, i + 1] += 2 / h[i]
        rhs[i] += 3 * (x[i + 1, 0] - x[i, 0]) / h[i] ** 2
        rhs[i + 1] += 3 * (x[i + 1, 0] - x[i, 0]) / h[i] ** 2
    np.testing.assert_allclose(coeffs[:, 1].numpy(), np.linalg.solve(A, rhs)[:-1], rtol=1e-10)
    line = CubicSpline(natural_cubic_coeffs(torch.tensor(2 * t[:, None] - 1), torch.tensor(t)), torch.tensor(t))
    q = torch.tensor([0.5, 1.1, 2.9], dtype=torch.float64)
    np.testing.assert_allclose(line.evaluate(q)[:, 0].numpy(), 2 * q.numpy() - 1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(line.derivative(q)[:, 0].numpy(), [2.0] * 3, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# torchcde's linear and rectilinear interpolation of irregular data with missing values (NaNs filled by
# masked_select and writes by index, forward_fill by cumsum/cummax/gather, repeat_interleave), its coefficients
# held as module buffers, driving the neural CDE above; gradients with respect to the observed values
# ----------------------------------------------------------------------------------------------


def make_linear_interpolation(m):
    torch = m.torch

    def cheap_stack(tensors, dim):
        if len(tensors) == 1:
            return tensors[0].unsqueeze(dim)
        else:
            return torch.stack(tensors, dim=dim)

    def forward_fill(x, fill_index=-2):
        mask = torch.isnan(x)
        if mask.any():
            cumsum_mask = (~mask).cumsum(dim=fill_index)
            cumsum_mask[mask] = 0
            _, index = cumsum_mask.cummax(dim=fill_index)
            x = x.gather(dim=fill_index, index=index)
        return x

    def _linear_interpolation_coeffs_with_missing_values_scalar(t, x):
        # t and X both have shape (length,)
        not_nan = ~torch.isnan(x)
        path_no_nan = x.masked_select(not_nan)
        if path_no_nan.size(0) == 0:
            return torch.zeros(x.size(0), dtype=x.dtype, device=x.device)
        if path_no_nan.size(0) == x.size(0):
            return x
        x = x.clone()
        if torch.isnan(x[0]):
            x[0] = path_no_nan[0]
        if torch.isnan(x[-1]):
            x[-1] = path_no_nan[-1]
        nan_indices = torch.arange(x.size(0), device=x.device).masked_select(torch.isnan(x))
        if nan_indices.size(0) == 0:
            return x
        prev_nan_index = nan_indices[0]
        prev_not_nan_index = prev_nan_index - 1
        prev_not_nan_indices = [prev_not_nan_index]
        for nan_index in nan_indices[1:]:
            if prev_nan_index != nan_index - 1:
                prev_not_nan_index = nan_index - 1
            prev_nan_index = nan_index
            prev_not_nan_indices.append(prev_not_nan_index)

        next_nan_index = nan_indices[-1]
        next_not_nan_index = next_nan_index + 1
        next_not_nan_indices = [next_not_nan_index]
        for nan_index in reversed(nan_indices[:-1]):
            if next_nan_index != nan_index + 1:
                next_not_nan_index = nan_index + 1
            next_nan_index = nan_index
            next_not_nan_indices.append(next_not_nan_index)
        next_not_nan_indices = reversed(next_not_nan_indices)
        for prev_not_nan_index, nan_index, next_not_nan_index in zip(prev_not_nan_indices, nan_indices,
                                                                     next_not_nan_indices):
            prev_stream = x[prev_not_nan_index]
            next_stream = x[next_not_nan_index]
            prev_time = t[prev_not_nan_index]
            next_time = t[next_not_nan_index]
            time = t[nan_index]
            ratio = (time - prev_time) / (next_time - prev_time)
            x[nan_index] = prev_stream + ratio * (next_stream - prev_stream)
        return x

    def _linear_interpolation_coeffs_with_missing_values(t, x):
        if x.ndimension() == 1:
            return _linear_interpolation_coeffs_with_missing_values_scalar(t, x)
        else:
            out_pieces = []
            for p in x.unbind(dim=0):
                out = _linear_interpolation_coeffs_with_missing_values(t, p)
                out_pieces.append(out)
            return cheap_stack(out_pieces, dim=0)

    def _prepare_rectilinear_interpolation(data, time_index):
        data_filled = forward_fill(data)
        data_repeat = data_filled.repeat_interleave(2, dim=-2)
        data_repeat[..., :-1, time_index] = data_repeat[..., 1:, time_index]
        data_rect = data_repeat[..., :-1, :]
        return data_rect

    def linear_interpolation_coeffs(x, t=None, rectilinear=None):
        if rectilinear is not None:
            x = _prepare_rectilinear_interpolation(x, rectilinear)
        if t is None:
            t = torch.linspace(0, x.size(-2) - 1, x.size(-2), dtype=x.dtype, device=x.device)
        if torch.isnan(x).any():
            x = _linear_interpolation_coeffs_with_missing_values(t, x.transpose(-1, -2)).transpose(-1, -2)
        return x

    class LinearInterpolation(torch.nn.Module):
        def __init__(self, coeffs, t=None, **kwargs):
            super(LinearInterpolation, self).__init__(**kwargs)
            if t is None:
                t = torch.linspace(0, coeffs.size(-2) - 1, coeffs.size(-2), dtype=coeffs.dtype, device=coeffs.device)
            derivs = (coeffs[..., 1:, :] - coeffs[..., :-1, :]) / (t[1:] - t[:-1]).unsqueeze(-1)
            self.register_buffer('_t', t)
            self.register_buffer('_coeffs', coeffs)
            self.register_buffer('_derivs', derivs)

        @property
        def grid_points(self):
            return self._t

        @property
        def interval(self):
            return torch.stack([self._t[0], self._t[-1]])

        def _interpret_t(self, t):
            t = torch.as_tensor(t, dtype=self._derivs.dtype, device=self._derivs.device)
            maxlen = self._derivs.size(-2) - 1
            index = torch.bucketize(t.detach(), self._t.detach()).sub(1).clamp(0, maxlen)
            fractional_part = t - self._t[index]
            return fractional_part, index

        def evaluate(self, t):
            fractional_part, index = self._interpret_t(t)
            fractional_part = fractional_part.unsqueeze(-1)
            prev_coeff = self._coeffs[..., index, :]
            next_coeff = self._coeffs[..., index + 1, :]
            prev_t = self._t[index]
            next_t = self._t[index + 1]
            diff_t = next_t - prev_t
            return prev_coeff + fractional_part * (next_coeff - prev_coeff) / diff_t.unsqueeze(-1)

        def derivative(self, t):
            fractional_part, index = self._interpret_t(t)
            deriv = self._derivs[..., index, :]
            return deriv

    return linear_interpolation_coeffs, LinearInterpolation


def missing_data_cde(m, weights, rectilinear):
    torch, F = m.torch, m.F
    odeint = make_fixed_grid_odeint(m)
    linear_interpolation_coeffs, LinearInterpolation = make_linear_interpolation(m)
    model = load(m, make_neural_cde(m), weights)
    t_np, X_np, y_np = cde_data()
    rng = np.random.default_rng(40)
    drop = rng.uniform(size=X_np.shape) < 0.3
    drop[..., 0] = False  # the time channel is always observed
    drop[0, :3, 1] = True  # a gap at the start of a channel
    drop[1, -2:, 2] = True  # and at its end
    X_np = np.where(drop, np.nan, X_np)
    X = torch.tensor(X_np, requires_grad=True)
    y = torch.tensor(y_np)
    coeffs = linear_interpolation_coeffs(X, rectilinear=0 if rectilinear else None)
    if rectilinear:
        path = LinearInterpolation(coeffs)  # over the index of the doubled grid
        times = path.grid_points
    else:
        path = LinearInterpolation(coeffs, torch.tensor(t_np))
        times = torch.tensor(t_np)
    z0 = model.initial(path.evaluate(times[0]))

    def vector_field(t, z):
        return (model.func(t, z) @ path.derivative(t).unsqueeze(-1)).squeeze(-1)

    z_T = odeint(vector_field, z0, times[[0, -1]], step_size=(times[1] - times[0]).item() / 2)[1]
    loss = F.binary_cross_entropy_with_logits(model.readout(z_T).squeeze(-1), y)
    d_X, *d_params = torch.autograd.grad(loss, [X] + list(model.parameters()))
    return {"coeffs": coeffs, "loss": loss, "d_X": d_X, "d_params": d_params}


@pytest.mark.parametrize("rectilinear", [False, True])
def test_neural_cde_with_missing_values(rectilinear):
    weights = weights_of(make_neural_cde)
    ours, _ = run_both(missing_data_cde, weights, rectilinear, rtol=1e-9, atol=1e-12)
    assert not np.isnan(ours["coeffs"]).any() and not np.isnan(ours["d_X"]).any()
    _, X, _ = cde_data()
    if not rectilinear:  # the observed values are kept; a gap at the start takes the first observation
        rng = np.random.default_rng(40)
        drop = rng.uniform(size=X.shape) < 0.3
        drop[..., 0] = False
        drop[0, :3, 1] = True
        drop[1, -2:, 2] = True
        np.testing.assert_array_equal(ours["coeffs"][~drop], X[~drop])
        first = np.flatnonzero(~drop[0, :, 1])[0]
        np.testing.assert_array_equal(ours["coeffs"][0, :first, 1], X[0, first, 1])
        assert (ours["d_X"][drop] == 0).all()  # the missing entries were overwritten: no gradient reaches them
