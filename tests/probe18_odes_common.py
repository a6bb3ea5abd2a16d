# ruff: noqa: E731  (the programs are kept as their authors wrote them)
"""What the files of session 18's probe of differentiable numerical solvers (tests/test_programs_probe18_odes_*.py,
one family of solvers or problems each) share: torchdiffeq's adaptive dopri5 (error ratio by an RMS norm, the
step-size controller in tensors so backprop runs through it, FSAL, fourth-order dense output) and its fixed-grid rk4
(3/8 rule, linear interpolation, reversed time), and a small vector field.

The programs (see tests/pytorch_programs.py) are written as torchdiffeq, torchsde, torchcde, DeepXDE and papers' code
write them, each run on chainrule and on PyTorch from the same weights and data in float64, comparing solutions,
losses and gradients, and checked by hand (closed forms, NumPy) where PyTorch is missing."""

DPS_C_MID = [6025192743 / 30085553152 / 2, 0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
             187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2]
DOPRI5_ALPHA = [1 / 5, 3 / 10, 4 / 5, 8 / 9, 1., 1.]
DOPRI5_BETA = [[1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
               [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
               [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
               [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]]
DOPRI5_C_SOL = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
DOPRI5_C_ERROR = [35 / 384 - 1951 / 21600, 0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
                  -2187 / 6784 - -12231 / 42400, 11 / 84 - 649 / 6300, -1. / 60.]


def make_odeint(m):
    """``odeint(func, y0, t, rtol, atol)`` as torchdiffeq's RKAdaptiveStepsizeODESolver computes it: every step
    size, error ratio and interpolation coefficient a tensor (so backprop runs through the controller too)."""
    torch = m.torch

    def rms_norm(tensor):
        return tensor.abs().pow(2).mean().sqrt()

    def runge_kutta_step(func, y0, f0, t0, dt):
        k = [f0]
        for alpha_i, beta_i in zip(DOPRI5_ALPHA, DOPRI5_BETA):
            ti = t0 + alpha_i * dt
            yi = y0 + sum(b * ki for b, ki in zip(beta_i, k) if b != 0) * dt
            k.append(func(ti, yi))
        k = torch.stack(k, dim=-1)
        y1 = yi  # the last stage is the solution (FSAL)
        f1 = k[..., -1]
        y1_error = torch.matmul(k, torch.tensor(DOPRI5_C_ERROR, dtype=y0.dtype)) * dt
        return y1, f1, y1_error, k

    def interp_fit(y0, y1, y_mid, f0, f1, dt):
        a = 2 * dt * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
        b = dt * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
        c = dt * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
        d = dt * f0
        e = y0
        return [e, d, c, b, a]

    def interp_evaluate(coefficients, t0, t1, t):
        x = (t - t0) / (t1 - t0)
        x = x.to(coefficients[0].dtype)
        total = coefficients[0] + x * coefficients[1]
        x_power = x
        for coefficient in coefficients[2:]:
            x_power = x_power * x
            total = total + x_power * coefficient
        return total

    def select_initial_step(func, t0, y0, order, rtol, atol, f0):
        scale = atol + torch.abs(y0) * rtol
        d0 = rms_norm(y0 / scale)
        d1 = rms_norm(f0 / scale)
        if d0 < 1e-5 or d1 < 1e-5:
            h0 = torch.tensor(1e-6, dtype=y0.dtype)
        else:
            h0 = 0.01 * d0 / d1
        y1 = y0 + h0 * f0
        f1 = func(t0 + h0, y1)
        d2 = rms_norm((f1 - f0) / scale) / h0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = torch.max(torch.tensor(1e-6, dtype=y0.dtype), h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1. / float(order + 1))
        return torch.min(100 * h0, h1)

    def optimal_step_size(last_step, error_ratio, safety=0.9, ifactor=10.0, dfactor=0.2, order=5):
        if error_ratio == 0:
            return last_step * ifactor
        if error_ratio < 1:
            dfactor = torch.ones((), dtype=last_step.dtype)
        error_ratio = error_ratio.type_as(last_step)
        exponent = torch.tensor(order, dtype=last_step.dtype).reciprocal()
        factor = torch.min(torch.tensor(ifactor, dtype=last_step.dtype),
                           torch.max(safety / error_ratio ** exponent, torch.as_tensor(dfactor, dtype=last_step.dtype)))
        return last_step * factor

    def odeint(func, y0, t, rtol=1e-7, atol=1e-9, stats=None):
        f0 = func(t[0], y0)
        dt = select_initial_step(func, t[0], y0, 4, rtol, atol, f0)
        t0, y, f = t[0], y0, f0
        coefficients, t_prev = [y0] * 5, t[0]
        solution = [y0]
        n_accepted = n_rejected = 0
        for i in range(1, len(t)):
            next_t = t[i]
            while next_t > t0:
                y1, f1, y1_error, k = runge_kutta_step(func, y, f, t0, dt)
                error_tol = atol + rtol * torch.max(y.abs(), y1.abs())
                error_ratio = rms_norm(y1_error / error_tol)
                accept_step = error_ratio <= 1
                if accept_step:
                    n_accepted += 1
                    y_mid = y + torch.matmul(k, torch.tensor(DPS_C_MID, dtype=y.dtype)) * dt
                    coefficients = interp_fit(y, y1, y_mid, f, f1, dt)
                    t_prev, t0, y, f = t0, t0 + dt, y1, f1
                else:
                    n_rejected += 1
                dt = optimal_step_size(dt, error_ratio)
            solution.append(interp_evaluate(coefficients, t_prev, t0, next_t))
        if stats is not None:
            stats.update(accepted=n_accepted, rejected=n_rejected)
        return torch.stack(solution)

    return odeint


# ----------------------------------------------------------------------------------------------
# torchdiffeq's fixed-grid rk4 (the 3/8 rule) with linear interpolation onto the output times
# ----------------------------------------------------------------------------------------------


def make_fixed_grid_odeint(m):
    torch = m.torch
    _one_third = 1 / 3
    _two_thirds = 2 / 3

    def rk4_alt_step_func(func, t0, dt, t1, y0, f0=None):
        k1 = f0
        if k1 is None:
            k1 = func(t0, y0)
        k2 = func(t0 + dt * _one_third, y0 + dt * k1 * _one_third)
        k3 = func(t0 + dt * _two_thirds, y0 + dt * (k2 - k1 * _one_third))
        k4 = func(t1, y0 + dt * (k1 - k2 + k3))
        return (k1 + 3 * (k2 + k3) + k4) * dt * 0.125

    def grid_constructor_from_step_size(step_size):
        def _grid_constructor(func, y0, t):
            start_time = t[0]
            end_time = t[-1]
            niters = torch.ceil((end_time - start_time) / step_size + 1).item()
            t_infer = torch.arange(0, niters, dtype=t.dtype, device=t.device) * step_size + start_time
            t_infer[-1] = t[-1]
            return t_infer
        return _grid_constructor

    def linear_interp(t0, t1, y0, y1, t):
        if t == t0:
            return y0
        if t == t1:
            return y1
        slope = (t - t0) / (t1 - t0)
        return y0 + slope * (y1 - y0)

    def odeint(func, y0, t, step_size):
        if len(t) > 1 and t[0] > t[1]:  # backwards in time: torchdiffeq flips time and the field
            t = -t
            _base_func = func
            func = lambda t, y: -_base_func(-t, y)
        time_grid = grid_constructor_from_step_size(step_size)(func, y0, t)
        assert time_grid[0] == t[0] and time_grid[-1] == t[-1]
        solution = torch.empty(len(t), *y0.shape, dtype=y0.dtype, device=y0.device)
        solution[0] = y0
        j = 1
        for t0, t1 in zip(time_grid[:-1], time_grid[1:]):
            dt = t1 - t0
            dy = rk4_alt_step_func(func, t0, dt, t1, y0)
            y1 = y0 + dy
            while j < len(t) and t1 >= t[j]:
                solution[j] = linear_interp(t0, t1, y0, y1, t[j])
                j += 1
            y0 = y1
        return solution

    return odeint


def make_small_field(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 12), nn.Tanh(), nn.Linear(12, 2)).double()
