# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Physics programs for scientific machine learning (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights, mostly in float64, comparing values, gradients and training trajectories, and checked
by hand (closed forms, NumPy, finite differences) where PyTorch is missing. Differentiable solvers and operators: a
pseudo-spectral Burgers solver (``rfft``/``irfft``, ``fftfreq``, ``1j*k``); an FNO layer with ``view_as_complex``
weights and ``rfftn(norm='ortho')``; implicit diffusion with ``lu_factor``/``lu_solve`` fitted by L-BFGS; backward
Euler whose Newton solve is an ``autograd.Function`` (``setup_context``, ``generate_vmap_rule``, implicit-function
backward)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A pseudo-spectral Burgers solver differentiated with respect to its initial condition
# ----------------------------------------------------------------------------------------------


def spectral_burgers(m, steps=30):
    torch, optim = m.torch, m.optim
    n, nu, dt = 32, 0.05, 0.01
    x = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    k = torch.fft.rfftfreq(n, d=1.0 / n).to(torch.float64)
    k_full = torch.fft.fftfreq(n, d=1.0 / n)
    dealias = (k.abs() < (2.0 / 3.0) * (n // 2)).to(torch.float64)

    def rhs(u):
        u_hat = torch.fft.rfft(u)
        u_x = torch.fft.irfft(1j * k * u_hat, n=n)
        u_xx = torch.fft.irfft(-(k ** 2) * u_hat, n=n)
        nonlinear = torch.fft.irfft(dealias * torch.fft.rfft(u * u_x), n=n)
        return -nonlinear + nu * u_xx

    def solve(u):
        for _ in range(steps):
            k1 = rhs(u)
            k2 = rhs(u + 0.5 * dt * k1)
            k3 = rhs(u + 0.5 * dt * k2)
            k4 = rhs(u + dt * k3)
            u = u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return u

    with torch.no_grad():
        target = solve(torch.sin(x) + 0.5 * torch.cos(2 * x))
    coeffs = torch.tensor([0.5, 0.0, 0.2, 0.3], dtype=torch.float64, requires_grad=True)

    def initial(c):
        return c[0] * torch.sin(x) + c[1] * torch.cos(x) + c[2] * torch.sin(2 * x) + c[3] * torch.cos(2 * x)

    optimizer = optim.Adam([coeffs], lr=0.1)
    history = []
    for it in range(6):
        optimizer.zero_grad()
        loss = ((solve(initial(coeffs)) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), coeffs.detach().clone()))
    # the spectral derivative with the complex fft as well, and its gradient
    u = torch.sin(3 * x).requires_grad_(True)
    u_x_full = torch.fft.ifft(1j * k_full * torch.fft.fft(u)).real
    energy = (u_x_full ** 2).sum()
    (g,) = torch.autograd.grad(energy, u)
    return {"history": history, "target": target, "u_x": u_x_full, "energy_grad": g, "k": k_full}


def test_pseudo_spectral_burgers():
    ours, _ = run_both(spectral_burgers, rtol=1e-8, atol=1e-10)
    x = np.arange(32) * 2 * np.pi / 32
    np.testing.assert_allclose(ours["u_x"], 3 * np.cos(3 * x), atol=1e-12)
    # d/du sum (D u)^2 = 2 D^T D u = -2 D^2 u = 2 * 9 sin(3x) for the spectral derivative D
    np.testing.assert_allclose(ours["energy_grad"], 18 * np.sin(3 * x), atol=1e-10)
    losses = [loss for loss, _ in ours["history"]]
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------------------------
# An FNO layer whose complex weights are real parameters seen through view_as_complex
# ----------------------------------------------------------------------------------------------


def make_fno_vac(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SpectralConv2d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1, modes2):
            super().__init__()
            self.modes1, self.modes2, self.out_channels = modes1, modes2, out_channels
            scale = 1 / (in_channels * out_channels)
            self.weight = nn.Parameter(scale * torch.randn(2, in_channels, out_channels, modes1, modes2, 2))

        def forward(self, x):
            B, C, H, W = x.shape
            x_ft = torch.fft.rfftn(x.float(), dim=(-2, -1), norm="ortho")
            weight = torch.view_as_complex(self.weight)
            out_ft = torch.zeros(B, self.out_channels, H, W // 2 + 1, dtype=x_ft.dtype, device=x.device)
            out_ft[..., :self.modes1, :self.modes2] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[..., :self.modes1, :self.modes2], weight[0])
            out_ft[..., -self.modes1:, :self.modes2] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[..., -self.modes1:, :self.modes2], weight[1])
            return torch.fft.irfftn(out_ft, s=(H, W), dim=(-2, -1), norm="ortho")

    class Block(nn.Module):
        def __init__(self, width, modes):
            super().__init__()
            self.spectral = SpectralConv2d(width, width, modes, modes)
            self.skip = nn.Conv2d(width, width, 1)
            self.norm = nn.InstanceNorm2d(width)

        def forward(self, x):
            return F.gelu(self.norm(self.spectral(x) + self.skip(x)))

    return nn.Sequential(nn.Conv2d(1, 4, 1), Block(4, 3), Block(4, 3), nn.Conv2d(4, 1, 1))


def fno_vac(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    model = load(m, make_fno_vac(m), weights)
    rng = np.random.default_rng(9)
    a = torch.tensor(rng.standard_normal((3, 1, 8, 8)).astype(np.float32))
    u = torch.tensor(rng.standard_normal((3, 1, 8, 8)).astype(np.float32))
    optimizer = optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        out = model(a)
        loss = torch.linalg.vector_norm(out - u) / torch.linalg.vector_norm(u)
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    spectral = [p for n, p in model.named_parameters() if "spectral" in n]
    return {"history": history, "out": out, "spectral_grads": [p.grad for p in spectral],
            "grads": [p.grad for n, p in model.named_parameters() if "spectral" not in n]}


def test_fno_with_view_as_complex_weights():
    weights = weights_of(make_fno_vac)
    ours, _ = run_both(fno_vac, weights, rtol=2e-4, atol=2e-5)
    assert all(g.dtype == np.float32 and g.shape[-1] == 2 for g in ours["spectral_grads"])
    assert ours["history"][-1] < ours["history"][0]


def test_view_as_complex_gradient_by_finite_differences():
    torch = OURS.torch
    rng = np.random.default_rng(10)
    x = torch.tensor(rng.standard_normal((1, 1, 6, 6)))
    w0 = rng.standard_normal((2, 2, 2))

    def loss(w):
        x_ft = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        out = torch.zeros_like(x_ft)
        out[..., :2, :2] = x_ft[..., :2, :2] * torch.view_as_complex(w)
        return torch.fft.irfftn(out, s=(6, 6), dim=(-2, -1), norm="ortho").pow(2).sum()

    w = torch.tensor(w0, requires_grad=True)
    loss(w).backward()
    h = 1e-6
    for idx in [(0, 0, 0), (0, 1, 1), (1, 1, 0)]:
        plus, minus = w0.copy(), w0.copy()
        plus[idx] += h
        minus[idx] -= h
        fd = (loss(torch.tensor(plus)).item() - loss(torch.tensor(minus)).item()) / (2 * h)
        assert w.grad[idx].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# Implicit (backward Euler) diffusion with a learnt conductivity field: the system matrix factorised once
# per solve by lu_factor and reused by lu_solve, fitted by L-BFGS
# ----------------------------------------------------------------------------------------------


def implicit_diffusion(m, steps=8):
    torch, optim = m.torch, m.optim
    n, dt = 12, 0.01
    dx = 1.0 / (n + 1)
    xs = torch.linspace(dx, 1 - dx, n, dtype=torch.float64)
    u0 = torch.sin(math.pi * xs) + 0.5 * torch.sin(3 * math.pi * xs)

    def system(log_k):
        k = log_k.exp()  # conductivity at the n + 1 cell faces
        main = (k[:-1] + k[1:]) / dx ** 2
        off = -k[1:-1] / dx ** 2
        K = torch.diag(main) + torch.diag(off, 1) + torch.diag(off, -1)
        return torch.eye(n, dtype=torch.float64) + dt * K

    def solve(log_k):
        LU, pivots = torch.linalg.lu_factor(system(log_k))
        u, out = u0[:, None], []
        for _ in range(steps):
            u = torch.linalg.lu_solve(LU, pivots, u)
            out.append(u[:, 0])
        return torch.stack(out)

    true_log_k = torch.log(1.0 + 0.5 * torch.linspace(0, 1, n + 1, dtype=torch.float64))
    with torch.no_grad():
        observed = solve(true_log_k)
    log_k = torch.zeros(n + 1, dtype=torch.float64, requires_grad=True)
    optimizer = optim.LBFGS([log_k], lr=1, max_iter=15, line_search_fn="strong_wolfe")
    history = []

    def closure():
        optimizer.zero_grad()
        loss = ((solve(log_k) - observed) ** 2).sum() * 1e3 + 1e-4 * (log_k.diff() ** 2).sum()
        loss.backward()
        history.append(loss.item())
        return loss

    optimizer.step(closure)
    # the same trajectory by torch.linalg.solve, and its gradient
    k_probe = true_log_k.clone().requires_grad_(True)
    by_lu = solve(k_probe)
    u, by_solve = u0, []
    A = system(k_probe)
    for _ in range(steps):
        u = torch.linalg.solve(A, u)
        by_solve.append(u)
    by_solve = torch.stack(by_solve)
    g_lu = torch.autograd.grad(by_lu.pow(2).sum(), k_probe)[0]
    g_solve = torch.autograd.grad(by_solve.pow(2).sum(), k_probe)[0]
    return {"history": history, "log_k": log_k.detach(), "observed": observed, "by_lu": by_lu.detach(),
            "by_solve": by_solve.detach(), "g_lu": g_lu, "g_solve": g_solve}


def test_implicit_diffusion_with_lu_factor():
    ours, _ = run_both(implicit_diffusion, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["by_lu"], ours["by_solve"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["g_lu"], ours["g_solve"], rtol=1e-10, atol=1e-12)
    assert ours["history"][-1] < 1e-2 * ours["history"][0]
    # backward Euler by NumPy
    n, dt = 12, 0.01
    dx = 1 / 13
    x = np.linspace(dx, 1 - dx, n)
    k = 1 + 0.5 * np.linspace(0, 1, n + 1)
    A = np.eye(n) + dt * (np.diag((k[:-1] + k[1:]) / dx ** 2) - np.diag(k[1:-1] / dx ** 2, 1)
                          - np.diag(k[1:-1] / dx ** 2, -1))
    u = np.sin(np.pi * x) + 0.5 * np.sin(3 * np.pi * x)
    for _ in range(8):
        u = np.linalg.solve(A, u)
    np.testing.assert_allclose(ours["observed"][-1], u, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# A stiff ODE by backward Euler whose Newton solve is an autograd.Function differentiated by the implicit
# function theorem (setup_context, generate_vmap_rule: vmapped over initial states, jacrev through it)
# ----------------------------------------------------------------------------------------------


def make_stiff_rhs(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 10), nn.Tanh(), nn.Linear(10, 2)).double()


def implicit_euler(m, weights, steps=3, h=0.2, n_steps=5):
    torch, optim = m.torch, m.optim
    from_func = torch.func
    net = load(m, make_stiff_rhs(m), weights)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    stiffness = torch.tensor([[-20.0, 1.0], [0.0, -0.5]], dtype=torch.float64)

    def rhs(p, y):
        return y @ stiffness.T + 0.3 * from_func.functional_call(net, p, (y,))

    def residual(y_next, y_prev, p):
        return y_next - y_prev - h * rhs(p, y_next)

    class BackwardEulerStep(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(y_prev, flat):
            p = unflatten(flat)
            y = y_prev.clone()
            for _ in range(6):  # Newton (quadratic: converged to rounding well before)
                J = from_func.jacrev(residual, argnums=0)(y, y_prev, p)
                y = y - torch.linalg.solve(J, residual(y, y_prev, p))
            return y

        @staticmethod
        def setup_context(ctx, inputs, output):
            y_prev, flat = inputs
            ctx.save_for_backward(y_prev, flat, output)

        @staticmethod
        def backward(ctx, grad_y):
            y_prev, flat, y = ctx.saved_tensors
            with torch.enable_grad():
                J = from_func.jacrev(residual, argnums=0)(y, y_prev, unflatten(flat))
                lam = torch.linalg.solve(J.T, grad_y)  # dL/dy_prev, dL/dp by the adjoint of F(y, y_prev, p) = 0
                _, vjp_fn = from_func.vjp(lambda yp, fl: residual(y, yp, unflatten(fl)), y_prev, flat)
                g_prev, g_flat = vjp_fn(-lam)
            return g_prev, g_flat

    names = list(params)
    shapes = [params[k].shape for k in names]

    def unflatten(flat):
        out, i = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = flat[i:i + math.prod(shape)].view(shape)
            i += math.prod(shape)
        return out

    def solve(y0, flat, step=BackwardEulerStep.apply):
        ys, y = [], y0
        for _ in range(n_steps):
            y = step(y, flat)
            ys.append(y)
        return torch.stack(ys)

    def unrolled_step(y_prev, flat):
        p, y = unflatten(flat), y_prev.clone()
        for _ in range(6):
            J = torch.autograd.functional.jacobian(lambda z: residual(z, y_prev, p), y, create_graph=True)
            y = y - torch.linalg.solve(J, residual(y, y_prev, p))
        return y

    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    target = torch.tensor([0.0, 0.3], dtype=torch.float64)
    flat = torch.cat([params[k].flatten() for k in names]).detach().requires_grad_(True)
    optimizer = optim.Adam([flat], lr=1e-2)
    history = []
    for it in range(steps):
        path = solve(y0, flat)
        loss = ((path[-1] - target) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        history.append((loss.item(), flat.grad.clone()))
        optimizer.step()
    y0_req = y0.clone().requires_grad_(True)
    implicit = torch.autograd.grad(solve(y0_req, flat)[-1].sum(), (y0_req, flat))
    unrolled = torch.autograd.grad(solve(y0_req, flat, unrolled_step)[-1].sum(), (y0_req, flat))
    batch = torch.stack([y0, 2 * y0, -y0])
    vmapped = from_func.vmap(lambda y: solve(y, flat.detach()))(batch)
    J = from_func.jacrev(lambda y: solve(y, flat.detach())[-1])(y0)
    return {"history": history, "implicit": implicit, "unrolled": unrolled, "vmapped": vmapped, "J": J,
            "residual": residual(vmapped[0, 0], y0, unflatten(flat.detach()))}


def test_backward_euler_with_an_implicit_function():
    weights = weights_of(make_stiff_rhs)
    ours, _ = run_both(implicit_euler, weights, rtol=1e-8, atol=1e-10)
    for a, b in zip(ours["implicit"], ours["unrolled"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["residual"], 0.0, atol=1e-12)
    np.testing.assert_allclose(ours["J"].sum(0), ours["implicit"][0], rtol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0]
