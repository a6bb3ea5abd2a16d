# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Differentiable numerical solvers written as torchdiffeq, torchsde, torchcde, DeepXDE and papers' code write them,
run as tests/probe18_odes_common.py says. PDE solvers: acoustic full-waveform inversion (``conv2d`` stencil, in-place
source injection); finite-volume Burgers (Godunov, minmod, circular padding) with a dot-product adjoint test by
``func.jvp``/``func.vjp``; a learnt geometric multigrid (``conv2d`` smoothing and restriction, ``interpolate``
prolongation); GRAPE quantum control (complex ``matrix_exp``, ``mH``, L-BFGS) and Crank-Nicolson Schrodinger (complex
``linalg.solve``, ``vdot``); the FNO paper's Navier-Stokes generator (``rfft2``/``irfft2``, dealiasing) in data
assimilation."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Full-waveform inversion (as deepwave's tutorials frame it): a 2-D acoustic wave equation stepped by a
# Laplacian stencil in F.conv2d, the source added in place into the wavefield, receivers read by index,
# and the velocity model updated from the gradient of the data misfit
# ----------------------------------------------------------------------------------------------


def fwi(m, steps=3, nz=16, nx=18, nt=70, dx=10.0, dt=0.002):
    torch, F, optim = m.torch, m.F, m.optim
    stencil = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64) / dx ** 2
    stencil = stencil.view(1, 1, 3, 3)
    freq, t = 25.0, torch.arange(nt, dtype=torch.float64) * dt
    arg = (math.pi * freq * (t - 1.5 / freq)) ** 2
    wavelet = (1 - 2 * arg) * torch.exp(-arg)  # a Ricker wavelet
    sources = [(2, 4), (2, 13)]
    receivers = torch.stack([torch.full((nx - 4,), 2), torch.arange(2, nx - 2)], dim=1)
    # a sponge at the edges damps the reflections
    zz, xx = torch.meshgrid(torch.arange(nz, dtype=torch.float64), torch.arange(nx, dtype=torch.float64),
                            indexing="ij")
    edge = torch.minimum(torch.minimum(zz, nz - 1 - zz), torch.minimum(xx, nx - 1 - xx))
    damping = torch.exp(-0.02 * torch.clamp(3 - edge, min=0) ** 2)

    def forward_model(v, source):
        u_prev = torch.zeros(1, 1, nz, nx, dtype=torch.float64)
        u = torch.zeros(1, 1, nz, nx, dtype=torch.float64)
        records = []
        for it in range(nt):
            lap = F.conv2d(u, stencil, padding=1)
            u_next = 2 * u - u_prev + (v * dt) ** 2 * lap
            u_next[0, 0, source[0], source[1]] += dt ** 2 * wavelet[it]
            u_next = u_next * damping
            u_prev, u = u, u_next
            records.append(u[0, 0, receivers[:, 0], receivers[:, 1]])
        return torch.stack(records)

    true_v = torch.full((nz, nx), 1500.0, dtype=torch.float64)
    true_v[8:, :] = 1800.0
    true_v[5:9, 6:11] = 1650.0
    with torch.no_grad():
        observed = [forward_model(true_v, s) for s in sources]
    v = torch.full((nz, nx), 1500.0, dtype=torch.float64)
    v[8:, :] = 1750.0
    v.requires_grad_()
    optimizer = optim.SGD([v], lr=1.0)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        loss = 0
        for s, d_obs in zip(sources, observed):
            loss = loss + 1e12 * F.mse_loss(forward_model(v, s), d_obs)
        loss.backward()
        # precondition as practitioners do: the gradient scaled to its largest value, clipped at the 98th percentile
        torch.nn.utils.clip_grad_value_(v, torch.quantile(v.grad.detach().abs(), 0.98).item())
        v.grad /= v.grad.abs().max() / 20.0
        grads.append(v.grad.clone())
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "v": v, "observed": observed}


def test_full_waveform_inversion():
    ours, _ = run_both(fwi, rtol=1e-9, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert np.abs(ours["observed"][0]).max() > 0


# ----------------------------------------------------------------------------------------------
# A finite-volume Burgers solver (Godunov flux, MUSCL reconstruction with a minmod limiter, periodic by
# F.pad(mode="circular"), SSP-RK2), its discrete adjoint checked by the dot-product test (torch.func.jvp
# against torch.func.vjp), and the initial condition recovered by L-BFGS
# ----------------------------------------------------------------------------------------------


def burgers_fv(m, n=32, nt=20, cfl=0.4):
    torch, F, optim = m.torch, m.F, m.optim
    dx = 2 * math.pi / n
    x = torch.arange(n, dtype=torch.float64) * dx

    def minmod(a, b):
        return 0.5 * (torch.sign(a) + torch.sign(b)) * torch.minimum(a.abs(), b.abs())

    def flux(u):
        return 0.5 * u ** 2

    def godunov(uL, uR):
        # exact Riemann flux for a convex flux with its minimum at 0
        return torch.maximum(flux(torch.clamp(uL, min=0)), flux(torch.clamp(uR, max=0)))

    def rhs(u):
        padded = F.pad(u.view(1, 1, -1), (2, 2), mode="circular").view(-1)
        du = padded[1:] - padded[:-1]
        slope = minmod(du[:-1], du[1:])  # at cells -1 .. n
        cells = padded[1:-1]
        uL = (cells + 0.5 * slope)[:-1]  # left state at the faces i + 1/2, i = -1 .. n-1
        uR = (cells - 0.5 * slope)[1:]
        fluxes = godunov(uL, uR)
        return -(fluxes[1:] - fluxes[:-1]) / dx

    def solve(u0):
        dt = cfl * dx / 1.5
        u = u0
        for _ in range(nt):
            u1 = u + dt * rhs(u)
            u = 0.5 * u + 0.5 * (u1 + dt * rhs(u1))
        return u

    u0 = 0.5 + torch.sin(x) + 0.3 * torch.cos(3 * x)
    u0[5:8] = 0.0  # a plateau at the sonic point, where the limiter and the flux meet ties
    rng = np.random.default_rng(6)
    v = torch.tensor(rng.standard_normal(n))
    w = torch.tensor(rng.standard_normal(n))
    uT, Jv = torch.func.jvp(solve, (u0,), (v,))
    _, vjp_fn = torch.func.vjp(solve, u0)
    JTw, = vjp_fn(w)

    observed = uT.detach()
    guess = (0.5 + 0.8 * torch.sin(x)).requires_grad_(True)
    optimizer = optim.LBFGS([guess], lr=1, max_iter=8, line_search_fn="strong_wolfe")
    losses = []

    def closure():
        optimizer.zero_grad()
        loss = ((solve(guess) - observed) ** 2).sum() * dx
        loss.backward()
        losses.append(loss.item())
        return loss

    optimizer.step(closure)
    return {"uT": uT, "Jv": Jv, "JTw": JTw, "dot_left": (w * Jv).sum(), "dot_right": (JTw * v).sum(),
            "losses": losses, "guess": guess}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_finite_volume_burgers_adjoint():
    ours, _ = run_both(burgers_fv, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["dot_left"], ours["dot_right"], rtol=1e-10)  # <w, J v> = <J^T w, v>
    assert min(ours["losses"]) < 0.1 * ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# A learnt geometric multigrid (as "deep multigrid" papers train one): damped Jacobi by conv2d, full-weighting
# restriction by a strided conv2d, prolongation by F.interpolate(bilinear, align_corners=True), the smoothers'
# weights trained on the error after two V-cycles
# ----------------------------------------------------------------------------------------------


def multigrid(m, steps=4, n=17):
    torch, F, optim = m.torch, m.F, m.optim
    laplace = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    laplace = laplace.view(1, 1, 3, 3)
    full_weighting = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64)
    full_weighting = full_weighting.view(1, 1, 3, 3) / 16
    levels = int(math.log2(n - 1))  # 17, 9, 5, 3
    log_omega = torch.full((levels,), math.log(0.6), dtype=torch.float64, requires_grad=True)

    def interior(u):
        mask = torch.zeros_like(u)
        mask[..., 1:-1, 1:-1] = 1
        return u * mask

    def apply_A(u, h):
        return interior(F.conv2d(u, laplace, padding=1)) / h ** 2

    def smooth(u, f, h, omega, sweeps=2):
        for _ in range(sweeps):
            u = u + omega * interior(f - apply_A(u, h)) * h ** 2 / 4
        return u

    def v_cycle(u, f, h, level=0):
        omega = log_omega[level].exp()
        if u.shape[-1] == 3:
            return smooth(u, f, h, omega, sweeps=10)
        u = smooth(u, f, h, omega)
        r = interior(f - apply_A(u, h))
        r_coarse = F.conv2d(F.pad(r, (1, 1, 1, 1)), full_weighting, stride=2)
        e_coarse = v_cycle(torch.zeros_like(r_coarse), r_coarse, 2 * h, level + 1)
        e = F.interpolate(e_coarse, size=u.shape[-2:], mode="bilinear", align_corners=True)
        u = u + interior(e)
        return smooth(u, f, h, omega)

    h = 1.0 / (n - 1)
    xs = torch.linspace(0, 1, n, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    rng = np.random.default_rng(21)
    u_true = torch.sin(math.pi * X) * torch.sin(2 * math.pi * Y) \
        + 0.3 * torch.sin(3 * math.pi * X) * torch.sin(5 * math.pi * Y)
    u_true = u_true.view(1, 1, n, n)
    f = apply_A(u_true, h)
    u0 = interior(torch.tensor(rng.standard_normal((1, 1, n, n))))
    optimizer = optim.Adam([log_omega], lr=0.05)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        u = v_cycle(v_cycle(u0, f, h), f, h)
        loss = ((u - u_true) ** 2).mean() / ((u0 - u_true) ** 2).mean()
        loss.backward()
        grads.append(log_omega.grad.clone())
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        residuals = [(f - apply_A(u0, h)).norm()]
        u = u0
        for _ in range(3):
            u = v_cycle(u, f, h)
            residuals.append((f - apply_A(u, h)).norm())
    return {"losses": losses, "grads": grads, "omega": log_omega.exp(), "residuals": torch.stack(residuals)}


def test_learnt_multigrid():
    ours, _ = run_both(multigrid, rtol=1e-9, atol=1e-12)
    residuals = ours["residuals"]
    assert (residuals[1:] / residuals[:-1] < 0.3).all()  # each V-cycle cuts the residual
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# Quantum optimal control (GRAPE): piecewise-constant controls, propagators by complex matrix_exp, the gate
# fidelity |tr(U_target^H U)|^2 maximised by L-BFGS; and a Crank-Nicolson Schrodinger solver (complex
# linalg.solve) whose final-state overlap is differentiated with respect to a real potential
# ----------------------------------------------------------------------------------------------


def grape(m, n_slices=8, T=2.0):
    torch, optim = m.torch, m.optim
    sx = torch.tensor([[0, 1], [1, 0]], dtype=torch.complex128)
    sy = torch.tensor([[0, -1j], [1j, 0]], dtype=torch.complex128)
    sz = torch.tensor([[1, 0], [0, -1]], dtype=torch.complex128)
    H0 = 0.5 * sz
    # a two-qubit-free target: the Hadamard gate (up to a global phase)
    U_target = torch.tensor([[1, 1], [1, -1]], dtype=torch.complex128) / math.sqrt(2)
    rng = np.random.default_rng(2)
    controls = torch.tensor(0.1 * rng.standard_normal((n_slices, 2)), requires_grad=True)
    dt = T / n_slices

    def propagate(controls):
        U = torch.eye(2, dtype=torch.complex128)
        for k in range(n_slices):
            H = H0 + controls[k, 0] * sx + controls[k, 1] * sy
            U = torch.linalg.matrix_exp(-1j * dt * H) @ U
        return U

    def fidelity(U):
        return (torch.trace(U_target.mH @ U).abs() / 2) ** 2

    optimizer = optim.LBFGS([controls], lr=1, max_iter=15, line_search_fn="strong_wolfe")
    infidelities = []

    def closure():
        optimizer.zero_grad()
        loss = 1 - fidelity(propagate(controls))
        loss.backward()
        infidelities.append(loss.item())
        return loss

    optimizer.step(closure)
    U = propagate(controls)
    # the gradient of the fidelity by the propagators' derivatives, term by term (GRAPE's first-order formula
    # needs small dt; here: the exact derivative by autograd of the complex product, at the optimum's start)
    c0 = torch.tensor(0.1 * rng.standard_normal((n_slices, 2)), requires_grad=True)
    g_fid, = torch.autograd.grad(fidelity(propagate(c0)), c0)
    return {"infidelities": infidelities, "U": U, "controls": controls, "g_fid": g_fid,
            "unitarity": U.mH @ U}


def crank_nicolson(m, n=48, nt=30, dt=0.01):
    torch = m.torch
    L = 10.0
    dx = L / (n + 1)
    x = torch.linspace(-L / 2 + dx, L / 2 - dx, n, dtype=torch.float64)
    strength = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    width = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    V = strength * torch.exp(-x ** 2 / width ** 2)
    ones = torch.ones(n - 1, dtype=torch.float64)
    kinetic = (torch.diag(torch.full((n,), 2.0, dtype=torch.float64)) - torch.diag(ones, 1) - torch.diag(ones, -1)) \
        / (2 * dx ** 2)
    H = (kinetic + torch.diag(V)).to(torch.complex128)
    eye = torch.eye(n, dtype=torch.complex128)
    A = eye + 0.5j * dt * H
    B = eye - 0.5j * dt * H
    psi = torch.exp(-(x + 2) ** 2 + 3j * x).to(torch.complex128)
    psi = psi / torch.sqrt((psi.abs() ** 2).sum() * dx)
    psi0 = psi
    for _ in range(nt):
        psi = torch.linalg.solve(A, B @ psi)
    norm = (psi.abs() ** 2).sum() * dx
    transmitted = (psi.abs() ** 2 * (x > 0)).sum() * dx
    overlap = torch.vdot(psi0, psi) * dx
    d_strength, d_width = torch.autograd.grad(transmitted + overlap.real, (strength, width))
    return {"norm": norm, "transmitted": transmitted, "overlap": overlap, "d_strength": d_strength,
            "d_width": d_width, "psi": psi}


def test_grape_hadamard():
    ours, _ = run_both(grape, rtol=1e-8, atol=1e-10)
    assert ours["infidelities"][-1] < 1e-6 < ours["infidelities"][0]
    np.testing.assert_allclose(ours["unitarity"], np.eye(2), atol=1e-12)


def test_crank_nicolson_schrodinger():
    ours, _ = run_both(crank_nicolson, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["norm"], 1.0, rtol=1e-10)  # Crank-Nicolson is unitary


# ----------------------------------------------------------------------------------------------
# The FNO paper's 2-D Navier-Stokes data generator (vorticity form, pseudo-spectral with rfft2/irfft2, 2/3
# dealiasing, Crank-Nicolson for the viscous term), differentiated for 4D-Var-style data assimilation of the
# initial vorticity
# ----------------------------------------------------------------------------------------------


def navier_stokes_2d(w0, f, visc, T, delta_t, record_steps, m):
    torch = m.torch
    # Grid size - must be power of 2
    N = w0.size()[-1]
    # Maximum frequency
    k_max = math.floor(N / 2.0)
    # Number of steps to final time
    steps = math.ceil(T / delta_t)
    # Initial vorticity to Fourier space
    w_h = torch.fft.rfft2(w0)
    # Forcing to Fourier space
    f_h = torch.fft.rfft2(f)
    # If same forcing for the whole batch
    if len(f_h.size()) < len(w_h.size()):
        f_h = torch.unsqueeze(f_h, 0)
    # Record solution every this number of steps
    record_time = math.floor(steps / record_steps)
    # Wavenumbers in y-direction
    k_y = torch.cat((torch.arange(start=0, end=k_max, step=1, device=w0.device),
                     torch.arange(start=-k_max, end=0, step=1, device=w0.device)), 0).repeat(N, 1)
    # Wavenumbers in x-direction
    k_x = k_y.transpose(0, 1)
    # Truncate redundant modes
    k_x = k_x[..., :k_max + 1]
    k_y = k_y[..., :k_max + 1]
    # Negative Laplacian in Fourier space
    lap = 4 * (math.pi ** 2) * (k_x ** 2 + k_y ** 2)
    lap[0, 0] = 1.0
    # Dealiasing mask
    dealias = torch.unsqueeze(torch.logical_and(torch.abs(k_y) <= (2.0 / 3.0) * k_max,
                                                torch.abs(k_x) <= (2.0 / 3.0) * k_max).to(w0.dtype), 0)
    # Saving solution and time
    sol = torch.zeros(*w0.size(), record_steps, device=w0.device, dtype=w0.dtype)
    sol_t = torch.zeros(record_steps, device=w0.device, dtype=w0.dtype)
    # Record counter
    c = 0
    # Physical time
    t = 0.0
    for j in range(steps):
        # Stream function in Fourier space: solve Poisson equation
        psi_h = w_h / lap
        # Velocity field in x-direction = psi_y
        q = 2. * math.pi * k_y * 1j * psi_h
        q = torch.fft.irfft2(q, s=(N, N))
        # Velocity field in y-direction = -psi_x
        v = -2. * math.pi * k_x * 1j * psi_h
        v = torch.fft.irfft2(v, s=(N, N))
        # Partial x of vorticity
        w_x = 2. * math.pi * k_x * 1j * w_h
        w_x = torch.fft.irfft2(w_x, s=(N, N))
        # Partial y of vorticity
        w_y = 2. * math.pi * k_y * 1j * w_h
        w_y = torch.fft.irfft2(w_y, s=(N, N))
        # Non-linear term (u.grad(w)): compute in physical space then back to Fourier space
        F_h = torch.fft.rfft2(q * w_x + v * w_y)
        # Dealias
        F_h = dealias * F_h
        # Crank-Nicolson update
        w_h = (-delta_t * F_h + delta_t * f_h + (1.0 - 0.5 * delta_t * visc * lap) * w_h) / \
            (1.0 + 0.5 * delta_t * visc * lap)
        # Update real time (used only for recording)
        t += delta_t
        if (j + 1) % record_time == 0:
            # Solution in physical space
            w = torch.fft.irfft2(w_h, s=(N, N))
            # Record solution and time
            sol[..., c] = w
            sol_t[c] = t
            c += 1
    return sol, sol_t


def ns_assimilation(m, N=16, steps=3):
    torch, optim = m.torch, m.optim
    t = torch.linspace(0, 1, N + 1, dtype=torch.float64)[:-1]
    X, Y = torch.meshgrid(t, t, indexing="ij")
    f = 0.1 * (torch.sin(2 * math.pi * (X + Y)) + torch.cos(2 * math.pi * (X + Y)))
    w_true = torch.sin(2 * math.pi * X) * torch.cos(4 * math.pi * Y) + 0.5 * torch.cos(2 * math.pi * (X - Y))
    with torch.no_grad():
        observed, sol_t = navier_stokes_2d(w_true.unsqueeze(0), f, 1e-3, 0.5, 0.05, 5, m)
    rng = np.random.default_rng(30)
    w0 = (w_true + 0.3 * torch.tensor(rng.standard_normal((N, N)))).unsqueeze(0).requires_grad_(True)
    optimizer = optim.Adam([w0], lr=0.05)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        sol, _ = navier_stokes_2d(w0, f, 1e-3, 0.5, 0.05, 5, m)
        loss = ((sol - observed) ** 2).mean()
        loss.backward()
        grads.append(w0.grad.clone())
        optimizer.step()
        losses.append(loss.item())
    return {"observed": observed, "sol_t": sol_t, "losses": losses, "grads": grads}


def test_navier_stokes_data_assimilation():
    ours, _ = run_both(ns_assimilation, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["sol_t"], [0.1, 0.2, 0.3, 0.4, 0.5], rtol=1e-12)
    # the mean vorticity is conserved (the forcing has none, the k = 0 mode only decays through nothing)
    np.testing.assert_allclose(ours["observed"].mean((1, 2)), 0.0, atol=1e-12)
    assert ours["losses"][-1] < ours["losses"][0]
