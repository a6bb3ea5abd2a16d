# ruff: noqa: B007, B023, E731  (the programs are kept as their authors wrote them)
"""Differentiable numerical solvers written as torchdiffeq, torchsde, torchcde, DeepXDE and papers' code write them,
run as tests/probe18_odes_common.py says. Implicit solvers: BDF2 on Van der Pol with Newton by
``autograd.functional.jacobian(create_graph=True)`` and ``linalg.solve``; Gauss-Legendre stages by a Newton
``autograd.Function`` (``mark_non_differentiable``, ``set_materialize_grads``, ``once_differentiable``, an implicit
backward); Robertson kinetics by ROS2 with ``jacfwd`` Jacobians under ``vmap``; a convolutional DEQ by Anderson
acceleration."""

import math

import numpy as np
import pytest

from .probe18_odes_common import make_small_field
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Implicit time stepping: BDF2 on a stiff Van der Pol oscillator with Newton iterations by
# torch.autograd.functional.jacobian and linalg.solve, differentiated through the unrolled Newton solves
# ----------------------------------------------------------------------------------------------


def implicit_vdp(m, steps=3, n_steps=8, h=0.05):
    torch, optim = m.torch, m.optim
    log_mu = torch.tensor(math.log(3.0), dtype=torch.float64, requires_grad=True)
    true_mu = 5.0

    def vdp(y, mu):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    def newton(residual, y_guess, tol=1e-12, max_iter=20):
        y = y_guess
        for it in range(max_iter):
            r = residual(y)
            J = torch.autograd.functional.jacobian(residual, y, create_graph=True)
            dy = torch.linalg.solve(J, -r)
            y = y + dy
            if dy.abs().max() < tol:
                break
        return y, it + 1

    def integrate(mu):
        y_prev = torch.tensor([2.0, 0.0], dtype=torch.float64)
        # the first step by backward Euler, then BDF2: y_{n+1} - 4/3 y_n + 1/3 y_{n-1} = 2/3 h f(y_{n+1})
        y, its = newton(lambda z: z - y_prev - h * vdp(z, mu), y_prev)
        ys, iterations = [y_prev, y], [its]
        for n in range(n_steps - 1):
            y_n, y_nm1 = ys[-1], ys[-2]
            y, its = newton(lambda z: z - 4 / 3 * y_n + 1 / 3 * y_nm1 - 2 / 3 * h * vdp(z, mu), y_n)
            ys.append(y)
            iterations.append(its)
        return torch.stack(ys), iterations

    with torch.no_grad():
        observed, _ = integrate(torch.tensor(true_mu, dtype=torch.float64))
    optimizer = optim.Adam([log_mu], lr=0.1)
    losses, grads, all_iterations = [], [], []
    for step in range(steps):
        optimizer.zero_grad()
        ys, iterations = integrate(log_mu.exp())
        loss = ((ys - observed) ** 2).sum()
        loss.backward()
        grads.append(log_mu.grad.clone())
        optimizer.step()
        losses.append(loss.item())
        all_iterations.append(iterations)
    # the sensitivity dy_N/dmu by the implicit function theorem at the last BDF2 step, against autograd's
    mu = torch.tensor(true_mu, dtype=torch.float64, requires_grad=True)
    ys, _ = integrate(mu)
    dyN, = torch.autograd.grad(ys[-1].sum(), mu)
    return {"losses": losses, "grads": grads, "iterations": all_iterations, "observed": observed, "dyN": dyN}


def test_bdf2_newton_on_van_der_pol():
    ours, _ = run_both(implicit_vdp, rtol=1e-9, atol=1e-12)
    assert all(it <= 6 for its in ours["iterations"] for it in its)  # Newton converges quadratically
    assert ours["losses"][-1] < ours["losses"][0]


def test_backward_euler_newton_by_hand():
    """Without torch: for a linear field f(y) = A y one Newton step of backward Euler is (I - hA)^{-1} y_n exactly
    (the second only confirms it), and the derivative of y_1 with respect to h is (I - hA)^{-2} A y_n."""
    torch = OURS.torch
    A_np = np.array([[-2.0, 1.0], [0.5, -3.0]])
    A = torch.tensor(A_np)
    y_n = torch.tensor([1.0, -1.0], dtype=torch.float64)
    h = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    residual = lambda z: z - y_n - h * (A @ z)
    z = y_n
    for _ in range(2):
        J = torch.autograd.functional.jacobian(residual, z, create_graph=True)
        z = z + torch.linalg.solve(J, -residual(z))
    M = np.linalg.inv(np.eye(2) - 0.1 * A_np)
    np.testing.assert_allclose(z.detach().numpy(), M @ [1.0, -1.0], rtol=1e-13)
    dz, = torch.autograd.grad(z.sum(), h)
    np.testing.assert_allclose(dz.item(), (M @ M @ A_np @ [1.0, -1.0]).sum(), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# A convolutional deep equilibrium model solved by Anderson acceleration (the implicit-layers tutorial's
# chapter 4: bmm, a bordered linear system by linalg.solve, in-place history buffers), its backward by a hook
# that solves the adjoint fixed point by Anderson too
# ----------------------------------------------------------------------------------------------


def make_conv_deq(m, n_channels=6, n_inner_channels=8):
    torch, nn = m.torch, m.nn

    class ResNetLayer(nn.Module):
        def __init__(self, n_channels, n_inner_channels, kernel_size=3, num_groups=2):
            super().__init__()
            self.conv1 = nn.Conv2d(n_channels, n_inner_channels, kernel_size, padding=kernel_size // 2, bias=False)
            self.conv2 = nn.Conv2d(n_inner_channels, n_channels, kernel_size, padding=kernel_size // 2, bias=False)
            self.norm1 = nn.GroupNorm(num_groups, n_inner_channels)
            self.norm2 = nn.GroupNorm(num_groups, n_channels)
            self.norm3 = nn.GroupNorm(num_groups, n_channels)
            self.conv1.weight.data.normal_(0, 0.01)
            self.conv2.weight.data.normal_(0, 0.01)

        def forward(self, z, x):
            y = self.norm1(torch.relu(self.conv1(z)))
            return self.norm3(torch.relu(z + self.norm2(x + self.conv2(y))))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, n_channels, kernel_size=3, bias=True, padding=1),
                                      nn.BatchNorm2d(n_channels))
            self.f = ResNetLayer(n_channels, n_inner_channels)
            self.head = nn.Sequential(nn.BatchNorm2d(n_channels), nn.AvgPool2d(4, 4), nn.Flatten(),
                                      nn.Linear(n_channels * 2 * 2, 4))

    return Model().double()


def conv_deq(m, weights, steps=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    from .pytorch_programs import quickstart_data
    model = load(m, make_conv_deq(m), weights)

    def anderson(f, x0, m=5, lam=1e-4, max_iter=50, tol=1e-8, beta=1.0):
        """ Anderson acceleration for fixed point iteration. """
        bsz, d, H, W = x0.shape
        X = torch.zeros(bsz, m, d * H * W, dtype=x0.dtype, device=x0.device)
        F = torch.zeros(bsz, m, d * H * W, dtype=x0.dtype, device=x0.device)
        X[:, 0], F[:, 0] = x0.view(bsz, -1), f(x0).view(bsz, -1)
        X[:, 1], F[:, 1] = F[:, 0], f(F[:, 0].view_as(x0)).view(bsz, -1)

        H = torch.zeros(bsz, m + 1, m + 1, dtype=x0.dtype, device=x0.device)
        H[:, 0, 1:] = H[:, 1:, 0] = 1
        y = torch.zeros(bsz, m + 1, 1, dtype=x0.dtype, device=x0.device)
        y[:, 0] = 1

        res = []
        for k in range(2, max_iter):
            n = min(k, m)
            G = F[:, :n] - X[:, :n]
            H[:, 1:n + 1, 1:n + 1] = torch.bmm(G, G.transpose(1, 2)) + lam * torch.eye(n, dtype=x0.dtype,
                                                                                        device=x0.device)[None]
            alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]  # (bsz x n)

            X[:, k % m] = beta * (alpha[:, None] @ F[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
            F[:, k % m] = f(X[:, k % m].view_as(x0)).view(bsz, -1)
            res.append((F[:, k % m] - X[:, k % m]).norm().item() / (1e-5 + F[:, k % m].norm().item()))
            if (res[-1] < tol):
                break
        return X[:, k % m].view_as(x0), res

    class DEQFixedPoint(nn.Module):
        def __init__(self, f, solver, **kwargs):
            super().__init__()
            self.f = f
            self.solver = solver
            self.kwargs = kwargs

        def forward(self, x):
            # compute forward pass and re-engage autograd tape
            with torch.no_grad():
                z, self.forward_res = self.solver(lambda z: self.f(z, x), torch.zeros_like(x), **self.kwargs)
            z = self.f(z, x)

            # set up Jacobian vector product (without additional forward calls)
            z0 = z.clone().detach().requires_grad_()
            f0 = self.f(z0, x)

            def backward_hook(grad):
                g, self.backward_res = self.solver(lambda y: torch.autograd.grad(f0, z0, y, retain_graph=True)[0]
                                                   + grad, grad, **self.kwargs)
                return g

            z.register_hook(backward_hook)
            return z

    deq = DEQFixedPoint(model.f, anderson, tol=1e-4, max_iter=50)
    net = nn.Sequential(model.stem, deq, model.head)
    images, labels = quickstart_data(n=6, side=8)
    x, y = torch.tensor(images.astype(np.float64)), torch.tensor(labels)
    opt = optim.Adam(net.parameters(), lr=1e-3)
    losses, grads, forward_iters, backward_iters = [], [], [], []
    for step in range(steps):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(net(x), y)
        loss.backward()
        grads.append([p.grad.clone() for p in net.parameters()])
        opt.step()
        losses.append(loss.item())
        forward_iters.append(len(deq.forward_res))
        backward_iters.append(len(deq.backward_res))
    return {"losses": losses, "grads": grads, "forward_iters": forward_iters, "backward_iters": backward_iters,
            "forward_res": deq.forward_res[-1], "backward_res": deq.backward_res[-1]}


def test_deq_with_anderson_acceleration():
    weights = weights_of(make_conv_deq)
    ours, _ = run_both(conv_deq, weights, rtol=1e-9, atol=1e-11)  # (the iteration counts alike)
    assert ours["forward_res"] < 1e-4 and max(ours["forward_iters"]) < 48 and ours["backward_res"] < 1e-2


# ----------------------------------------------------------------------------------------------
# A batched Newton root-finder for implicit Runge-Kutta stages (the 2-stage Gauss-Legendre method) as an
# autograd.Function: the iteration count marked non-differentiable, set_materialize_grads(False) with None
# gradients handled, needs_input_grad consulted, a once_differentiable backward by the implicit function theorem
# ----------------------------------------------------------------------------------------------


def gauss_legendre(m, weights, h=0.2, n_steps=5):
    torch = m.torch
    once_differentiable = torch.autograd.function.once_differentiable
    func = load(m, make_small_field(m), weights)
    params = tuple(func.parameters())
    s3 = math.sqrt(3)
    A = torch.tensor([[0.25, 0.25 - s3 / 6], [0.25 + s3 / 6, 0.25]], dtype=torch.float64)
    b = torch.tensor([0.5, 0.5], dtype=torch.float64)

    def stage_residual(K, y, *params):
        # K: (2, batch, d): K_i = f(y + h sum_j A_ij K_j)
        Y = y.unsqueeze(0) + h * torch.einsum("ij,jbd->ibd", A, K)
        return K - torch.func.functional_call(func, dict(zip([n for n, _ in func.named_parameters()], params)), (Y,))

    class StageSolve(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y, *params):
            ctx.set_materialize_grads(False)
            with torch.enable_grad():
                K = torch.zeros((2,) + y.shape, dtype=y.dtype)
                for it in range(30):
                    flat = lambda k: stage_residual(k.view_as(K), y.detach(), *(p.detach() for p in params)).reshape(-1)
                    r = flat(K.reshape(-1))
                    J = torch.autograd.functional.jacobian(flat, K.reshape(-1))
                    dK = torch.linalg.solve(J, -r)
                    K = (K.reshape(-1) + dK).view_as(K).detach()
                    if dK.abs().max() < 1e-13:
                        break
            iterations = torch.tensor(it + 1)
            ctx.mark_non_differentiable(iterations)
            ctx.save_for_backward(K, y, *params)
            return K, iterations

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_K, grad_iterations):
            K, y, *params = ctx.saved_tensors
            if grad_K is None:
                return (None,) * (1 + len(params))
            with torch.enable_grad():
                K = K.detach().requires_grad_(True)
                y_ = y.detach().requires_grad_(ctx.needs_input_grad[0])
                ps = [p.detach().requires_grad_(need) for p, need in zip(params, ctx.needs_input_grad[1:])]
                r = stage_residual(K, y_, *ps)
                J = torch.autograd.functional.jacobian(lambda k: stage_residual(k.view_as(K), y_.detach(),
                                                       *(p.detach() for p in ps)).reshape(-1), K.detach().reshape(-1))
                # implicit function theorem: dK = -J^{-1} dr, so the vjp is -lambda^T dr with J^T lambda = g
                lam = torch.linalg.solve(J.T, grad_K.reshape(-1)).view_as(K)
                wanted = [x for x in [y_] + ps if x.requires_grad]
                grads = iter(torch.autograd.grad(r, wanted, -lam, allow_unused=True))
            return tuple(next(grads) if x.requires_grad else None for x in [y_] + ps)

    rng = np.random.default_rng(3)
    y0 = torch.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    target = torch.tensor(rng.standard_normal((3, 2)))
    y, counts = y0, []
    for n in range(n_steps):
        K, iterations = StageSolve.apply(y, *params)
        counts.append(int(iterations))
        y = y + h * torch.einsum("i,ibd->bd", b, K)
    loss = ((y - target) ** 2).sum()
    grads = torch.autograd.grad(loss, (y0,) + params)
    # the same by backprop through the converged Newton iterations, unrolled, as a check of the implicit backward
    y = y0
    for n in range(n_steps):
        K = torch.zeros((2,) + y.shape, dtype=y.dtype)
        for it in range(counts[n] + 1):
            flat = lambda k: stage_residual(k.view_as(K), y, *params).reshape(-1)
            J = torch.autograd.functional.jacobian(flat, K.reshape(-1), create_graph=True)
            K = K + torch.linalg.solve(J, -flat(K.reshape(-1))).view_as(K)
        y = y + h * torch.einsum("i,ibd->bd", b, K)
    unrolled = torch.autograd.grad(((y - target) ** 2).sum(), (y0,) + params)
    return {"loss": loss, "grads": grads, "counts": counts, "unrolled": unrolled}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_gauss_legendre_with_an_implicit_stage_solve():
    weights = weights_of(make_small_field)
    ours, _ = run_both(gauss_legendre, weights, rtol=1e-9, atol=1e-12)
    assert all(c <= 6 for c in ours["counts"])
    for a, b in zip(ours["grads"], ours["unrolled"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# A stiff chemical kinetics problem (Robertson) by a linearly implicit Rosenbrock method (ROS2, gamma =
# 1 + 1/sqrt(2)) with the Jacobian by torch.func.jacfwd, vmapped over a batch of rate constants, and the
# rates' log-sensitivities by reverse mode through the solver
# ----------------------------------------------------------------------------------------------


def robertson(m, n_steps=24):
    torch = m.torch
    gamma = 1 + 1 / math.sqrt(2)
    log_k = torch.log(torch.tensor([[0.04, 3e7, 1e4], [0.05, 2e7, 2e4], [0.03, 4e7, 5e3]], dtype=torch.float64))
    log_k.requires_grad_(True)

    def rhs(y, k):
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-k[0] * y1 + k[2] * y2 * y3,
                            k[0] * y1 - k[2] * y2 * y3 - k[1] * y2 ** 2,
                            k[1] * y2 ** 2], -1)

    def ros2_solve(log_k):
        k = log_k.exp()
        y = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        t, h, ys = 0.0, 1e-4, []
        for n in range(n_steps):
            J = torch.func.jacfwd(rhs)(y, k)
            W = torch.eye(3, dtype=y.dtype) - gamma * h * J
            k1 = torch.linalg.solve(W, rhs(y, k))
            k2 = torch.linalg.solve(W, rhs(y + h * k1, k) - 2 * k1)
            y = y + 1.5 * h * k1 + 0.5 * h * k2
            t, h = t + h, h * 1.5  # a geometric step ladder through the stiff transient
            ys.append(y)
        return torch.stack(ys), t

    ys, t_end = torch.func.vmap(ros2_solve, out_dims=(0, None))(log_k)
    mass = ys.sum(-1)
    d_log_k, = torch.autograd.grad(ys[:, -1, 2].sum(), log_k)
    return {"ys": ys, "t_end": t_end, "mass": mass, "d_log_k": d_log_k}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_robertson_by_rosenbrock():
    ours, _ = run_both(robertson, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(ours["mass"], 1.0, rtol=1e-12)  # ROS2 conserves the linear invariant
    assert (ours["ys"][..., 1] < 1e-4).all() and (ours["ys"] > -1e-12).all()
