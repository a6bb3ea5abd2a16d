# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Optimal-transport programs, run as tests/probe17_ot_common.py says. Sinkhorn divergences, sliced and
one-dimensional transport: GeomLoss's Sinkhorn divergence (a softmin by ``logsumexp``, epsilon annealing from the
diameter, debiasing, the extrapolation step) and a point cloud flowed to a target by its gradient; GeomLoss's kernel
losses (``double_grad``) and unbalanced batched divergence; sliced Wasserstein (projections drawn on the sphere,
``torch.sort`` and its gradient), sliced W by ``torch.quantile`` and semi-discrete OT by ASGD on the dual; 1D duals
by backpropagation and W1 on the circle."""

import math

import numpy as np
import pytest

from .probe17_ot_common import clouds, sqdist_np
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# GeomLoss: the debiased Sinkhorn divergence with epsilon annealing, and a point cloud flowed to a target
# ----------------------------------------------------------------------------------------------


def geomloss_flow(m, blur=0.05, scaling=0.5, p=2, steps=6, lr=0.5, debias=True):
    torch = m.torch
    x, y, a, b = (torch.tensor(v) for v in clouds(n=12, m=10, seed=3))

    def squared_distances(x, y):
        D_xx = (x * x).sum(-1).unsqueeze(1)
        D_xy = torch.matmul(x, y.permute(1, 0))
        D_yy = (y * y).sum(-1).unsqueeze(0)
        return D_xx - 2 * D_xy + D_yy

    def cost(x, y):
        return squared_distances(x, y) / 2

    def softmin(eps, C_xy, h_y):
        return -eps * (h_y.view(1, -1) - C_xy / eps).logsumexp(1).view(-1)

    def max_diameter(x, y):
        mins = torch.stack((x.min(dim=0)[0], y.min(dim=0)[0])).min(dim=0)[0]
        maxs = torch.stack((x.max(dim=0)[0], y.max(dim=0)[0])).max(dim=0)[0]
        return (maxs - mins).norm().item()

    def epsilon_schedule(p, diameter, blur, scaling):
        eps_list = ([diameter ** p]
                    + [np.exp(e) for e in np.arange(p * np.log(diameter), p * np.log(blur), p * np.log(scaling))]
                    + [blur ** p])
        return eps_list

    def sinkhorn_loop(a_log, b_log, C_xy, C_yx, C_xx, C_yy, eps_list):
        eps = eps_list[0]
        g_ab = softmin(eps, C_yx, a_log)
        f_ba = softmin(eps, C_xy, b_log)
        f_aa = softmin(eps, C_xx, a_log)
        g_bb = softmin(eps, C_yy, b_log)
        for eps in eps_list:
            ft_ba = softmin(eps, C_xy, b_log + g_ab / eps)
            gt_ab = softmin(eps, C_yx, a_log + f_ba / eps)
            ft_aa = softmin(eps, C_xx, a_log + f_aa / eps)
            gt_bb = softmin(eps, C_yy, b_log + g_bb / eps)
            f_ba, g_ab = 0.5 * (f_ba + ft_ba), 0.5 * (g_ab + gt_ab)
            f_aa, g_bb = 0.5 * (f_aa + ft_aa), 0.5 * (g_bb + gt_bb)
        torch.autograd.set_grad_enabled(True)
        # the extrapolation step, the only one that carries gradients
        f_ba, g_ab = (softmin(eps, C_xy, (b_log + g_ab / eps).detach()),
                      softmin(eps, C_yx, (a_log + f_ba / eps).detach()))
        f_aa = softmin(eps, C_xx, (a_log + f_aa / eps).detach())
        g_bb = softmin(eps, C_yy, (b_log + g_bb / eps).detach())
        return f_aa, g_bb, g_ab, f_ba

    def sinkhorn_divergence(a, x, b, y):
        eps_list = epsilon_schedule(p, max_diameter(x, y), blur, scaling)
        C_xx, C_yy = cost(x, x.detach()), cost(y, y.detach())
        C_xy, C_yx = cost(x, y.detach()), cost(y, x.detach())
        prev = torch.is_grad_enabled()
        torch.autograd.set_grad_enabled(False)
        f_aa, g_bb, g_ab, f_ba = sinkhorn_loop(a.log(), b.log(), C_xy, C_yx, C_xx, C_yy, eps_list)
        torch.autograd.set_grad_enabled(prev)
        if debias:
            return torch.dot(a, f_ba - f_aa) + torch.dot(b, g_ab - g_bb)
        return torch.dot(a, f_ba) + torch.dot(b, g_ab)

    losses, grads = [], []
    x_i = x.clone().requires_grad_(True)
    for step in range(steps):
        L = sinkhorn_divergence(a, x_i, b, y)
        [g] = torch.autograd.grad(L, [x_i])
        losses.append(L.item())
        grads.append(g)
        x_i.data -= lr * g / a.view(-1, 1)  # the gradient of a measure: divided by the weights
    with torch.no_grad():
        self_loss = sinkhorn_divergence(b, y, b, y)
    return {"losses": losses, "grads": grads, "x": x_i, "self": self_loss}


def test_geomloss_sinkhorn_divergence_flow():
    ours, _ = run_both(geomloss_flow, rtol=1e-6, atol=1e-9)
    assert ours["losses"][-1] < 0.5 * ours["losses"][0]
    assert abs(ours["self"]) < 1e-10  # debiased: zero between a measure and itself
    assert all(l >= -1e-10 for l in ours["losses"])


# ----------------------------------------------------------------------------------------------
# Sliced Wasserstein: projections on the sphere, sorted projections, a cloud flowed by Adam
# ----------------------------------------------------------------------------------------------


def sliced_wasserstein(m, n_projections=20, p=2, steps=8):
    torch = m.torch
    x, y, _, _ = clouds(n=16, m=16, d=3, seed=4)
    X = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    Y = torch.tensor(y, dtype=torch.float32)
    rng = np.random.default_rng(5)

    def get_random_projections(d, n_projections):
        projections = torch.tensor(rng.standard_normal((d, n_projections)), dtype=torch.float32)
        return projections / torch.sqrt(torch.sum(projections ** 2, 0, keepdims=True))

    def sliced_wasserstein_distance(X_s, X_t, projections):
        X_s_projections = X_s @ projections
        X_t_projections = X_t @ projections
        X_s_sorted, _ = torch.sort(X_s_projections, dim=0)
        X_t_sorted = torch.sort(X_t_projections, dim=0).values
        projected_emd = torch.mean(torch.abs(X_s_sorted - X_t_sorted) ** p, dim=0)
        return torch.mean(projected_emd) ** (1.0 / p)

    optimizer = m.optim.Adam([X], lr=0.1)
    losses = []
    for step in range(steps):
        projections = get_random_projections(3, n_projections)
        loss = sliced_wasserstein_distance(X, Y, projections)
        optimizer.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    # a max-sliced direction: the projection that separates the clouds most, by gradient ascent on the sphere
    theta = torch.tensor(rng.standard_normal(3), dtype=torch.float32, requires_grad=True)
    for _ in range(5):
        direction = theta / theta.norm()
        distance = sliced_wasserstein_distance(X.detach(), Y, direction[:, None])
        (g,) = torch.autograd.grad(distance, theta)
        with torch.no_grad():
            theta += 0.5 * g
    return {"losses": losses, "X": X, "theta": theta}


def test_sliced_wasserstein_flow():
    ours, _ = run_both(sliced_wasserstein, rtol=2e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]


def sliced_with_ties(m):
    """Sorting with tied projections: the gradient of each sorted value goes back to the element sorted there."""
    torch = m.torch
    X = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [1.0, 0.0]], dtype=torch.float64,
                     requires_grad=True)
    Y = torch.tensor([[0.5, 0.5], [1.5, -1.0], [3.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    proj = torch.tensor([[1.0, 0.0, 1 / math.sqrt(2)], [0.0, 1.0, 1 / math.sqrt(2)]], dtype=torch.float64)
    xs, ix = torch.sort(X @ proj, dim=0, stable=True)
    yt, iy = torch.sort(Y @ proj, dim=0, descending=False, stable=True)
    loss = ((xs - yt) ** 2).sum()
    (g,) = torch.autograd.grad(loss, X)
    return {"xs": xs, "ix": ix, "iy": iy, "g": g}


def test_sliced_wasserstein_tied_projections():
    ours, _ = run_both(sliced_with_ties, rtol=1e-12, atol=1e-12)
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [1.0, 0.0]])
    Y = np.array([[0.5, 0.5], [1.5, -1.0], [3.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    proj = np.array([[1.0, 0.0, 1 / math.sqrt(2)], [0.0, 1.0, 1 / math.sqrt(2)]])
    ix = np.argsort(X @ proj, axis=0, kind="stable")
    np.testing.assert_array_equal(ours["ix"], ix)
    px, py = X @ proj, np.sort(Y @ proj, axis=0)
    g_proj = np.zeros_like(px)
    np.put_along_axis(g_proj, ix, 2 * (np.take_along_axis(px, ix, 0) - py), 0)
    np.testing.assert_allclose(ours["g"], g_proj @ proj.T, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# GeomLoss's kernel losses (double_grad, a Function returning its input) and its unbalanced, batched
# Sinkhorn divergence (the reach rho, dampening, the weights' gradient)
# ----------------------------------------------------------------------------------------------


def geomloss_kernels_and_unbalanced(m, blur=0.2, reach=0.5, eps_steps=6):
    torch = m.torch
    rng = np.random.default_rng(20)
    x = torch.tensor(rng.standard_normal((2, 9, 2)), requires_grad=True)
    y = torch.tensor(rng.standard_normal((2, 7, 2)) + 0.5)
    a = torch.tensor(rng.random((2, 9)) + 0.2, requires_grad=True)
    b = torch.tensor(rng.random((2, 7)) + 0.2)

    class DoubleGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            return input

        @staticmethod
        def backward(ctx, grad_output):
            return 2 * grad_output

    def double_grad(x):
        return DoubleGrad.apply(x)

    def scal(a, f, batch=False):
        if batch:
            B = a.shape[0]
            return (a.reshape(B, -1) * f.reshape(B, -1)).sum(1)
        return torch.dot(a.view(-1), f.view(-1))

    def squared_distances(x, y):
        D_xx = (x * x).sum(-1).unsqueeze(2)
        D_xy = torch.matmul(x, y.permute(0, 2, 1))
        D_yy = (y * y).sum(-1).unsqueeze(1)
        return D_xx - 2 * D_xy + D_yy

    def distances(x, y):
        return torch.sqrt(torch.clamp_min(squared_distances(x, y), 1e-8))

    def gaussian_kernel(x, y, blur=0.5):
        C2 = squared_distances(x / blur, y / blur)
        return (-0.5 * C2).exp()

    def energy_kernel(x, y, blur=None):
        return -distances(x, y)

    def kernel_loss(α, x, β, y, kernel):
        K_xx = kernel(double_grad(x), x.detach())
        K_yy = kernel(y, y.detach())
        K_xy = kernel(x, y.detach())
        a_x = torch.matmul(K_xx, α.detach().unsqueeze(-1)).squeeze(-1)
        b_y = torch.matmul(K_yy, β.detach().unsqueeze(-1)).squeeze(-1)
        b_x = torch.matmul(K_xy, β.detach().unsqueeze(-1)).squeeze(-1)
        return 0.5 * scal(double_grad(α), a_x, batch=True) + 0.5 * scal(β, b_y, batch=True) - scal(α, b_x, batch=True)

    def dampening(eps, rho):
        return 1 if rho is None else 1 / (1 + eps / rho)

    def softmin_tensorized(eps, C_xy, h_y):
        B = C_xy.shape[0]
        return -eps * (h_y.view(B, 1, -1) - C_xy / eps).logsumexp(2).view(B, -1)

    def sinkhorn_cost(eps, rho, a, b, f_aa, g_bb, g_ab, f_ba, batch=True):
        # the unbalanced debiased cost: the potentials through the reach's exponential
        return (scal(a, rho * (1 - (-f_aa / rho).exp()) - rho * (1 - (-f_ba / rho).exp()), batch=batch)
                + scal(b, rho * (1 - (-g_bb / rho).exp()) - rho * (1 - (-g_ab / rho).exp()), batch=batch))

    def unbalanced_divergence(a, x, b, y, p=2):
        rho = reach ** p
        C_xy = squared_distances(x, y.detach()) / 2
        C_yx = squared_distances(y, x.detach()) / 2
        C_xx = squared_distances(x, x.detach()) / 2
        C_yy = squared_distances(y, y.detach()) / 2
        a_log, b_log = a.log(), b.log()
        eps_list = [2.0 ** (-k) * 4 for k in range(eps_steps)] + [blur ** p]
        with torch.no_grad():
            eps = eps_list[0]
            damp = dampening(eps, rho)
            g_ab = damp * softmin_tensorized(eps, C_yx, a_log)
            f_ba = damp * softmin_tensorized(eps, C_xy, b_log)
            f_aa = damp * softmin_tensorized(eps, C_xx, a_log)
            g_bb = damp * softmin_tensorized(eps, C_yy, b_log)
            for eps in eps_list:
                damp = dampening(eps, rho)
                ft_ba = damp * softmin_tensorized(eps, C_xy, b_log + g_ab / eps)
                gt_ab = damp * softmin_tensorized(eps, C_yx, a_log + f_ba / eps)
                ft_aa = damp * softmin_tensorized(eps, C_xx, a_log + f_aa / eps)
                gt_bb = damp * softmin_tensorized(eps, C_yy, b_log + g_bb / eps)
                f_ba, g_ab = 0.5 * (f_ba + ft_ba), 0.5 * (g_ab + gt_ab)
                f_aa, g_bb = 0.5 * (f_aa + ft_aa), 0.5 * (g_bb + gt_bb)
        damp = dampening(eps, rho)
        f_ba, g_ab = (damp * softmin_tensorized(eps, C_xy, (b_log + g_ab / eps).detach()),
                      damp * softmin_tensorized(eps, C_yx, (a_log + f_ba / eps).detach()))
        f_aa = damp * softmin_tensorized(eps, C_xx, (a_log + f_aa / eps).detach())
        g_bb = damp * softmin_tensorized(eps, C_yy, (b_log + g_bb / eps).detach())
        return sinkhorn_cost(eps, rho, a, b, f_aa, g_bb, g_ab, f_ba)

    results = {}
    for name, kernel in [("gaussian", gaussian_kernel), ("energy", energy_kernel)]:
        L = kernel_loss(a, x, b, y, kernel)
        gx, ga = torch.autograd.grad(L.sum(), [x, a])
        results[name] = (L, gx, ga)
    L = unbalanced_divergence(a, x, b, y)
    gx, ga = torch.autograd.grad(L.sum(), [x, a])
    results["unbalanced"] = (L, gx, ga)
    return results


def test_geomloss_kernels_and_unbalanced_divergence():
    ours, _ = run_both(geomloss_kernels_and_unbalanced, rtol=1e-7, atol=1e-10)
    rng = np.random.default_rng(20)
    x, y = rng.standard_normal((2, 9, 2)), rng.standard_normal((2, 7, 2)) + 0.5
    a, b = rng.random((2, 9)) + 0.2, rng.random((2, 7)) + 0.2
    for k in range(2):  # the energy distance as a kernel norm: 1/2 |a - b|_K^2 with K = -|x - y|
        z, w = np.concatenate([x[k], y[k]]), np.concatenate([a[k], -b[k]])
        K = -np.sqrt(np.maximum(sqdist_np(z, z), 1e-8))
        assert ours["energy"][0][k] == pytest.approx(0.5 * w @ K @ w, rel=1e-10)


# ----------------------------------------------------------------------------------------------
# Sliced Wasserstein between clouds of different sizes by torch.quantile, and semi-discrete OT by
# stochastic gradient ascent on the dual (Genevay et al.: a c-transform by a smoothed minimum)
# ----------------------------------------------------------------------------------------------


def quantile_sliced_and_semidiscrete(m, n_quantiles=25, eps=0.05, steps=30):
    torch = m.torch
    rng = np.random.default_rng(21)
    X = torch.tensor(rng.standard_normal((40, 3)), requires_grad=True)
    Y = torch.tensor(rng.standard_normal((25, 3)) * 0.5 + 1.0)
    theta = torch.tensor(rng.standard_normal((3, 6)))
    theta = theta / theta.norm(dim=0, keepdim=True)
    qs = torch.linspace(0, 1, n_quantiles, dtype=torch.float64)
    qx = torch.quantile(X @ theta, qs, dim=0)
    qy = torch.quantile(Y @ theta, qs, dim=0, interpolation="linear")
    sw = ((qx - qy) ** 2).mean().sqrt()
    (g_sw,) = torch.autograd.grad(sw, X)
    qx_mid = torch.quantile(X @ theta, qs, dim=0, interpolation="midpoint")
    qx_near = torch.nanquantile(X @ theta, qs, dim=0, interpolation="nearest")
    (g_mid,) = torch.autograd.grad((qx_mid ** 2).sum() + qx_near.sum(), X)
    # semi-discrete: a continuous source (drawn) to the 25 points of Y, the dual potential v on them
    v = torch.zeros(25, dtype=torch.float64, requires_grad=True)
    nu = torch.full((25,), 1 / 25, dtype=torch.float64)
    optimizer = m.optim.ASGD([v], lr=0.5, t0=5)
    duals = []
    for step in range(steps):
        x = torch.tensor(rng.standard_normal((16, 3)))
        C = torch.cdist(x, Y) ** 2
        c_transform = -eps * torch.logsumexp((v[None, :] - C) / eps + torch.log(nu)[None, :], dim=1)
        dual = c_transform.mean() + torch.dot(v, nu)
        optimizer.zero_grad()
        (-dual).backward()
        optimizer.step()
        duals.append(dual.item())
    # the Laguerre cells' masses under the learnt potential
    with torch.no_grad():
        x = torch.tensor(rng.standard_normal((200, 3)))
        cells = torch.argmin(torch.cdist(x, Y) ** 2 - v[None, :], dim=1)
        masses = torch.bincount(cells, minlength=25) / 200.0
    return {"sw": sw, "g_sw": g_sw, "qx_mid": qx_mid, "qx_near": qx_near, "g_mid": g_mid, "duals": duals,
            "v": v, "masses": masses, "averaged": optimizer.state[v]["ax"]}


def test_quantile_sliced_and_semidiscrete():
    ours, _ = run_both(quantile_sliced_and_semidiscrete, rtol=1e-7, atol=1e-10)
    rng = np.random.default_rng(21)
    X, Y, theta = rng.standard_normal((40, 3)), rng.standard_normal((25, 3)) * 0.5 + 1.0, rng.standard_normal((3, 6))
    theta = theta / np.linalg.norm(theta, axis=0, keepdims=True)
    qs = np.linspace(0, 1, 25)
    qx, qy = np.quantile(X @ theta, qs, axis=0), np.quantile(Y @ theta, qs, axis=0)
    assert ours["sw"] == pytest.approx(np.sqrt(((qx - qy) ** 2).mean()), rel=1e-10)
    # (not "midpoint" against NumPy: at q = 16/24 the position 39 q rounds above 26 and PyTorch averages two
    # order statistics where NumPy takes one)
    assert ours["masses"].sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# 1D duals by backpropagation (the weights' gradients of wasserstein_1d are the potentials, centred), and
# W1 on the circle (Delon et al.: the L1 distance of the CDFs' difference less its weighted median)
# ----------------------------------------------------------------------------------------------


def duals_and_circle(m, p=2):
    torch = m.torch
    rng = np.random.default_rng(22)

    def w_1d(u, v, uw, vw, p):
        us, ui = torch.sort(u, 0)
        vs, vi = torch.sort(v, 0)
        ucw = torch.cumsum(torch.gather(uw, 0, ui), 0)
        vcw = torch.cumsum(torch.gather(vw, 0, vi), 0)
        qs = torch.sort(torch.cat([ucw, vcw], 0), 0)[0]
        uq = torch.take_along_dim(us, torch.clamp(torch.searchsorted(ucw.T.contiguous(), qs.T.contiguous()).T, 0,
                                                   u.shape[0] - 1), 0)
        vq = torch.take_along_dim(vs, torch.clamp(torch.searchsorted(vcw.T.contiguous(), qs.T.contiguous()).T, 0,
                                                   v.shape[0] - 1), 0)
        delta = torch.diff(qs, dim=0, prepend=torch.zeros_like(qs[:1]))
        return (delta * (uq - vq).abs().pow(p)).sum(0)

    u = torch.tensor(rng.standard_normal((7, 2)))
    v = torch.tensor(rng.standard_normal((5, 2)) * 2)
    uw = torch.full(u.shape, 1.0 / 7, dtype=torch.float64)
    vw = torch.tensor(rng.random((5, 2)) + 0.1)
    vw = vw / vw.sum(0)
    uw_diff = uw.clone()
    vw_diff = torch.clone(vw)
    uw_diff.requires_grad_(True)
    vw_diff.requires_grad_(True)
    cost = w_1d(u, v, uw_diff, vw_diff, p)
    cost.sum().backward()
    f, g = uw_diff.grad.detach(), vw_diff.grad.detach()
    # centre the potentials so that both carry half the shift: sum(f a) = sum(g b)
    shift = ((f * uw).sum(0) - (g * vw).sum(0)) / 2
    f, g = f - shift, g + shift

    def w1_circle(x, y, xw, yw):
        x, y = torch.remainder(x, 1.0), torch.remainder(y, 1.0)
        z, order = torch.sort(torch.cat([x, y]))
        w = torch.cat([xw, -yw])[order]
        F = torch.cumsum(w, 0)  # F_x - F_y on each arc [z_i, z_{i+1})
        gaps = torch.diff(z, append=z[:1] + 1.0)
        # the weighted median of F under the gap lengths: the alpha where the cumulated gaps cross half
        Fs, fo = torch.sort(F)
        cg = torch.cumsum(gaps[fo], 0)
        alpha = Fs[torch.searchsorted(cg, cg[-1:] / 2)]
        return torch.sum(gaps * torch.abs(F - alpha))

    x = torch.tensor(rng.random(6), requires_grad=True)
    y = torch.tensor(rng.random(4) + 0.3)
    xw = torch.full((6,), 1 / 6, dtype=torch.float64)
    yw = torch.full((4,), 1 / 4, dtype=torch.float64)
    wc = w1_circle(x, y, xw, yw)
    (gx,) = torch.autograd.grad(wc, x)
    return {"cost": cost, "f": f, "g": g, "wc": wc, "gx": gx}


def test_duals_by_backprop_and_circle():
    ours, _ = run_both(duals_and_circle, rtol=1e-9, atol=1e-12)
    rng = np.random.default_rng(22)
    u, v = rng.standard_normal((7, 2)), rng.standard_normal((5, 2)) * 2
    vw = rng.random((5, 2)) + 0.1
    vw = vw / vw.sum(0)
    # strong duality: the cost is the potentials' integral (the cost is linear in the weights on its cell)
    np.testing.assert_allclose((ours["f"] / 7).sum(0) + (ours["g"] * vw).sum(0), ours["cost"], rtol=1e-9)
    x, y = rng.random(6), (rng.random(4) + 0.3) % 1.0
    # the circle's W1 by brute force over the cut: min over alpha of the L1 distance of F_x - F_y - alpha
    grid = np.linspace(0, 1, 200001)[:-1]
    Fx = (x[None, :] <= grid[:, None]).mean(1)
    Fy = (y[None, :] <= grid[:, None]).mean(1)
    D = Fx - Fy
    best = min(np.abs(D - alpha).mean() for alpha in np.unique(D))
    assert ours["wc"] == pytest.approx(best, abs=1e-4)
