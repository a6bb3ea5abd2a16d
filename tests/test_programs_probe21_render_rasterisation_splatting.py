# ruff: noqa: B007, E501, E702  (the programs are kept as their authors wrote them)
"""Differentiable rendering and geometry programs in plain PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and weights (float64 mostly, to about 1e-9; NeRF and the hash grid in
float32), comparing values, gradients and short optimisation trajectories, and checked by hand where they run alone.
Rasterisation and splatting: a SoftRas-style soft rasteriser of 2-D triangles (edge distances, sigmoid coverage, ``1
- prod(1 - p)`` and a depth softmax with a background term), vertices fitted by Adam to a soft IoU; 2-D Gaussian
splatting (covariances from angles and log-scales, ``meshgrid`` in 'xy' and 'ij', Mahalanobis distances by einsum,
front-to-back compositing by ``cumprod`` with an exclusive product from ``cat`` with ones) and cumprod's first and
second derivatives where ``1 - alpha`` is exactly 0; 3-D Gaussian splatting's EWA projection (``vmap(jacrev)``,
``eigvalsh`` radii, spherical-harmonic colours); a hard rasteriser as a custom ``autograd.Function``
(``mark_non_differentiable``, ``once_differentiable``, ``needs_input_grad``) with ``gradcheck``, ``gradgradcheck``,
``setup_context`` and ``vmap``; a splatting blender (``F.pad`` over six dims, ``gather`` with expanded indices,
occlusion layers from ``F.unfold`` and ``min(dim)``).

Every program agrees with PyTorch. What the probe found is pinned elsewhere: tests/test_avx_mathfun.py (randn's
float32 blocks of 16, an ulp off in one value in seven) and tests/test_probe21_render_fixes.py (shape refusals)."""

import itertools

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# A soft rasteriser of 2-D triangles (SoftRas: Liu et al. 2019)
# ----------------------------------------------------------------------------------------------


def triangles_data():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-0.5, 0.5, (3, 1, 2))
    offsets = np.array([[0.0, 0.5], [-0.45, -0.3], [0.45, -0.3]])
    verts = centres + offsets[None] * rng.uniform(0.5, 0.9, (3, 1, 1))
    target = verts + 0.08 * rng.standard_normal(verts.shape)
    depth = np.array([0.3, 0.6, 0.9])
    colours = rng.uniform(0, 1, (3, 3))
    return verts, target, depth, colours


def soft_rasteriser(m, size=16, steps=12):
    torch, F, optim = m.torch, m.F, m.optim
    verts0, target_verts, depth, colours = (torch.from_numpy(a) for a in triangles_data())

    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size, dtype=torch.float64),
                            torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij")
    pix = torch.stack([xs, ys], dim=-1).reshape(-1, 2)  # (P, 2)

    def signed_distance(faces):
        # faces: (F, 3, 2). For each edge the distance of every pixel to its line, positive inside.
        a = faces
        b = faces.roll(-1, dims=1)
        edge = b - a  # (F, 3, 2)
        normal = torch.stack([-edge[..., 1], edge[..., 0]], dim=-1)
        normal = normal / normal.norm(dim=-1, keepdim=True)
        # orientation: the signed area tells whether the normals point inwards
        area = (edge[:, 0, 0] * edge[:, 1, 1] - edge[:, 0, 1] * edge[:, 1, 0])
        normal = normal * torch.sign(area)[:, None, None]
        rel = pix[None, None] - a[:, :, None]  # (F, 3, P, 2)
        d = (rel * normal[:, :, None]).sum(-1)  # (F, 3, P)
        return d.min(dim=1).values  # (F, P): inside iff every edge distance is positive

    def render(faces, sigma=2e-2, gamma=1e-1):
        d = signed_distance(faces)
        prob = torch.sigmoid(d / sigma)  # (F, P)
        silhouette = 1 - torch.prod(1 - prob, dim=0)
        # colour: a softmax over faces weighted by inverse depth, with a background term
        zinv = (1 / depth)[:, None]
        logits = torch.cat([prob.log() + zinv / gamma,
                            torch.full((1, pix.shape[0]), 1e-3 / gamma, dtype=torch.float64)], dim=0)
        w = torch.softmax(logits, dim=0)
        rgb = (w[:-1, :, None] * colours[:, None, :]).sum(0) + w[-1:, :, None].squeeze(0) * 1.0
        return silhouette.reshape(size, size), rgb.reshape(size, size, 3)

    with torch.no_grad():
        target_sil, target_rgb = render(target_verts)
    verts = verts0.clone().requires_grad_(True)
    opt = optim.Adam([verts], lr=0.02)
    history = []
    for step in range(steps):
        opt.zero_grad()
        sil, rgb = render(verts)
        iou = (sil * target_sil).sum() / (sil + target_sil - sil * target_sil).sum()
        loss = (1 - iou) + F.mse_loss(rgb, target_rgb)
        loss.backward()
        opt.step()
        history.append(loss.item())
    sil, rgb = render(verts)
    g_sil, = torch.autograd.grad(sil.sum(), verts)
    return {"history": history, "verts": verts.detach(), "sil": sil.detach(), "rgb": rgb.detach(),
            "target_sil": target_sil, "g_sil": g_sil}


def test_soft_rasteriser_fits_triangles():
    ours, _ = run_both(soft_rasteriser, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    assert 0 <= ours["sil"].min() and ours["sil"].max() <= 1
    # a pixel far inside the first target triangle is covered, the corners are background
    assert ours["target_sil"][0, 0] < 0.05 or ours["target_sil"][-1, -1] < 0.05


# ----------------------------------------------------------------------------------------------
# 2-D Gaussian splatting
# ----------------------------------------------------------------------------------------------


def splat_data(n=6, opaque=True):
    rng = np.random.default_rng(1)
    means = rng.uniform(-0.6, 0.6, (n, 2))
    log_scales = np.log(rng.uniform(0.1, 0.3, (n, 2)))
    thetas = rng.uniform(0, np.pi, n)
    colours = rng.uniform(0, 1, (n, 3))
    opacities = rng.uniform(0.3, 0.9, n)
    if opaque:
        opacities[2] = 1.0  # an opaque splat: 1 - alpha is exactly 0 at its centre
    depths = rng.permutation(n).astype(np.float64)
    target = rng.uniform(0, 1, (12, 10, 3))
    return means, log_scales, thetas, colours, opacities, depths, target


def gaussian_splatting(m, indexing="xy", steps=8):
    torch, F, optim = m.torch, m.F, m.optim
    means0, log_scales, thetas, colours0, opacities, depths, target = (
        torch.from_numpy(a) for a in splat_data())
    H, W = 12, 10

    if indexing == "xy":
        gx, gy = torch.meshgrid(torch.linspace(-1, 1, W, dtype=torch.float64),
                                torch.linspace(-1, 1, H, dtype=torch.float64), indexing="xy")  # (H, W)
    else:
        gy, gx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                                torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)  # (H, W, 2)

    def covariance(thetas, log_scales):
        c, s = torch.cos(thetas), torch.sin(thetas)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (N, 2, 2)
        S = torch.diag_embed(torch.exp(log_scales))
        M = R @ S
        return M @ M.transpose(-1, -2)

    def render(means, colours, opac_logit=None):
        cov = covariance(thetas, log_scales)
        inv_cov = torch.linalg.inv(cov)
        order = torch.argsort(depths)
        d = grid[None] - means[order][:, None, None, :]  # (N, H, W, 2)
        maha = torch.einsum("nhwi,nij,nhwj->nhw", d, inv_cov[order], d)
        alpha = opacities[order][:, None, None] * torch.exp(-0.5 * maha)
        alpha = alpha.clamp(max=0.99)
        T = torch.cumprod(1 - alpha, dim=0)
        T = torch.cat([torch.ones_like(T[:1]), T[:-1]], dim=0)  # exclusive transmittance
        weights = alpha * T
        img = (weights[..., None] * colours[order][:, None, None, :]).sum(0)
        return img, T, weights

    means = means0.clone().requires_grad_(True)
    colours = colours0.clone().requires_grad_(True)
    opt = optim.Adam([means, colours], lr=0.05)
    history = []
    for step in range(steps):
        opt.zero_grad()
        img, T, weights = render(means, colours)
        loss = F.mse_loss(img, target)
        loss.backward()
        opt.step()
        with torch.no_grad():
            colours.clamp_(0, 1)
        history.append(loss.item())
    img, T, weights = render(means, colours)
    g_means, g_colours = torch.autograd.grad(img.pow(2).sum(), [means, colours])
    return {"history": history, "img": img.detach(), "T": T.detach(), "g_means": g_means,
            "g_colours": g_colours}


@pytest.mark.parametrize("indexing", ["xy", "ij"])
def test_gaussian_splatting(indexing):
    ours, _ = run_both(gaussian_splatting, indexing, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    assert ours["img"].shape == (12, 10, 3)
    np.testing.assert_array_equal(ours["T"][0], 1.0)


def cumprod_at_zeros(m):
    """Front-to-back compositing where splats are opaque: 1 - alpha is exactly zero at some pixels (one zero,
    and two zeros along the same ray), so cumprod's gradient must not divide by the product."""
    torch = m.torch
    alpha = torch.tensor([[0.5, 1.0, 0.2, 0.7], [1.0, 0.3, 1.0, 0.4], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64,
                         requires_grad=True)
    colours = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    T = torch.cumprod(1 - alpha, dim=1)
    T_excl = torch.cat([torch.ones_like(T[:, :1]), T[:, :-1]], dim=1)
    rgb = (alpha * T_excl * colours).sum(1)
    g, = torch.autograd.grad(rgb.sum(), alpha, create_graph=True)
    gg, = torch.autograd.grad(g.pow(2).sum(), alpha)
    return rgb, g, gg, T


def test_cumprod_gradient_at_zeros():
    ours, _ = run_both(cumprod_at_zeros, rtol=1e-10, atol=1e-12)
    rgb, g, gg, T = ours
    # by hand on the first ray: weights 0.5, 0.5 * 1, then nothing passes
    assert rgb[0] == pytest.approx(0.5 * 1 + 0.5 * 2)
    # d rgb / d alpha_j = c_j T_j - sum_{k>j} c_k alpha_k T_k / (1 - alpha_j), by finite differences
    a = np.array([[0.5, 1.0, 0.2, 0.7], [1.0, 0.3, 1.0, 0.4], [0.1, 0.2, 0.3, 0.4]])
    c = np.array([1.0, 2.0, 3.0, 4.0])

    def f(a):
        Tx = np.concatenate([np.ones((3, 1)), np.cumprod(1 - a, 1)[:, :-1]], 1)
        return (a * Tx * c).sum()

    eps = 1e-6
    fd = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        e = np.zeros_like(a)
        e[idx] = eps
        fd[idx] = (f(a + e) - f(a - e)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# 3-D Gaussian splatting's EWA projection (vmap of jacrev, eigvalsh radii, SH colours)
# ----------------------------------------------------------------------------------------------


def ewa_splatting(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(5)
    N = 8
    means = torch.tensor(rng.uniform(-1, 1, (N, 3)) + np.array([0, 0, 4.0]), requires_grad=True)
    quats = torch.tensor(rng.standard_normal((N, 4)), requires_grad=True)
    log_s = torch.tensor(np.log(rng.uniform(0.05, 0.3, (N, 3))), requires_grad=True)
    sh = torch.tensor(rng.standard_normal((N, 4, 3)) * 0.3, requires_grad=True)
    fx = fy = 20.0; cx, cy = 8.0, 6.0
    def proj(p):
        return torch.stack([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
    # EWA: the Jacobian of the projection at each mean, by vmap(jacrev)
    J = torch.func.vmap(torch.func.jacrev(proj))(means)  # (N, 2, 3)
    J2 = torch.autograd.functional.jacobian(proj, means[0], create_graph=True)
    q = F.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    R = torch.stack([1 - 2*(y*y + z*z), 2*(x*y - w*z), 2*(x*z + w*y),
                     2*(x*y + w*z), 1 - 2*(x*x + z*z), 2*(y*z - w*x),
                     2*(x*z - w*y), 2*(y*z + w*x), 1 - 2*(x*x + y*y)], -1).view(N, 3, 3)
    M = R * log_s.exp()[:, None, :]
    cov3 = M @ M.mT
    cov2 = J @ cov3 @ J.transpose(1, 2) + 0.3 * torch.eye(2, dtype=torch.float64)
    det = torch.linalg.det(cov2)
    lam = torch.linalg.eigvalsh(cov2)
    radius = torch.ceil(3 * lam[:, -1].sqrt())
    conic = torch.linalg.inv(cov2)
    mu2 = torch.func.vmap(proj)(means)
    # SH degree 1 colour
    dirs = F.normalize(means - torch.zeros(3, dtype=torch.float64), dim=-1)
    C0, C1 = 0.28209479177387814, 0.4886025119029199
    col = C0 * sh[:, 0] - C1 * dirs[:, 1:2] * sh[:, 1] + C1 * dirs[:, 2:3] * sh[:, 2] - C1 * dirs[:, 0:1] * sh[:, 3]
    col = (col + 0.5).clamp_min(0.0)
    H, W = 12, 16
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    pix = torch.stack([xx, yy], -1) + 0.5
    d = pix[None] - mu2[:, None, None]
    power = -0.5 * (conic[:, None, None, 0, 0] * d[..., 0]**2 + conic[:, None, None, 1, 1] * d[..., 1]**2) - conic[:, None, None, 0, 1] * d[..., 0] * d[..., 1]
    alpha = (0.8 * power.exp()).clamp(max=0.99)
    alpha = torch.where(power > 0, torch.zeros_like(alpha), alpha)
    order = means[:, 2].argsort()
    alpha, col_s = alpha[order], col[order]
    Tr = torch.cumprod(torch.cat([torch.ones_like(alpha[:1]), 1 - alpha[:-1]]), 0)
    img = torch.einsum("nhw,nc->hwc", alpha * Tr, col_s)
    loss = img.square().mean() + det.sum() * 1e-3
    grads = torch.autograd.grad(loss, [means, quats, log_s, sh])
    gJ = torch.autograd.grad(J2.sum(), means)[0]
    return dict(J=J, J2=J2, det=det, lam=lam, radius=radius, img=img, grads=grads, gJ=gJ)


def test_ewa_projection_of_3d_gaussians():
    ours, _ = run_both(ewa_splatting, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["J2"], ours["J"][0], rtol=1e-12)
    # the projection's Jacobian by hand: [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]]
    np.testing.assert_allclose(ours["det"], np.prod(ours["lam"], -1), rtol=1e-10)
    assert (ours["img"] >= 0).all()


# ----------------------------------------------------------------------------------------------
# A hard rasteriser as a custom autograd.Function (NMR-style approximate gradient), and gradcheck
# ----------------------------------------------------------------------------------------------


def custom_rasteriser(m):
    torch = m.torch
    from_fn = torch.autograd.function
    class HardRaster(torch.autograd.Function):
        """1-D hard rasteriser of segments with an NMR-style approximate gradient."""
        @staticmethod
        def forward(ctx, left, right, colours, width):
            pix = torch.arange(width, dtype=left.dtype) + 0.5
            inside = (pix[None] >= left[:, None]) & (pix[None] < right[:, None])  # (S, W)
            idx = torch.where(inside.any(0), inside.to(torch.int64).argmax(0), torch.full((width,), -1, dtype=torch.int64))
            img = torch.where(idx >= 0, colours[idx.clamp(min=0)], torch.zeros((), dtype=left.dtype))
            ctx.save_for_backward(left, right, colours, idx)
            ctx.width = width
            ctx.mark_non_differentiable(idx)
            return img, idx
        @staticmethod
        @from_fn.once_differentiable
        def backward(ctx, grad_img, grad_idx):
            left, right, colours, idx = ctx.saved_tensors
            pix = torch.arange(ctx.width, dtype=left.dtype) + 0.5
            g_col = torch.zeros_like(colours).index_add_(0, idx.clamp(min=0), grad_img * (idx >= 0))
            # moving an edge by dx changes the pixels it sweeps: d img / d edge ~ (colour - background) / distance
            d_left = (grad_img[None] * (0 - colours[:, None]) / (pix[None] - left[:, None]).abs().clamp(min=0.5)).sum(1)
            d_right = (grad_img[None] * (colours[:, None] - 0) / (pix[None] - right[:, None]).abs().clamp(min=0.5)).sum(1)
            g_left = d_left if ctx.needs_input_grad[0] else None
            g_right = d_right if ctx.needs_input_grad[1] else None
            return g_left, g_right, g_col, None
    left = torch.tensor([1.2, 4.6], dtype=torch.float64, requires_grad=True)
    right = torch.tensor([3.3, 7.1], dtype=torch.float64, requires_grad=True)
    cols = torch.tensor([0.4, 0.9], dtype=torch.float64, requires_grad=True)
    img, idx = HardRaster.apply(left, right, cols, 9)
    loss = ((img - torch.linspace(0, 1, 9, dtype=torch.float64)) ** 2).sum()
    loss.backward()
    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x ** 3
        @staticmethod
        def setup_context(ctx, inputs, output):
            x, = inputs
            ctx.save_for_backward(x)
        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 3 * x ** 2 * g
        @staticmethod
        def vmap(info, in_dims, x):
            return Cube.apply(x), in_dims[0]
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ok1 = torch.autograd.gradcheck(Cube.apply, (x,))
    ok2 = torch.autograd.gradgradcheck(Cube.apply, (x,))
    jac = torch.func.jacrev(Cube.apply)(x)
    vm = torch.vmap(Cube.apply)(x[:, None].detach())
    return img, idx, left.grad, right.grad, cols.grad, ok1, ok2, jac, vm


def test_custom_function_rasteriser():
    ours, _ = run_both(custom_rasteriser, rtol=1e-10, atol=1e-12)
    img, idx, g_left, g_right, g_cols, ok1, ok2, jac, vm = ours
    np.testing.assert_array_equal(idx, [-1, 0, 0, -1, -1, 1, 1, -1, -1])
    np.testing.assert_allclose(img, [0, 0.4, 0.4, 0, 0, 0.9, 0.9, 0, 0])
    assert ok1 and ok2
    np.testing.assert_allclose(jac, np.diag(3 * np.array([0.5, -1.0, 2.0]) ** 2))


# ----------------------------------------------------------------------------------------------
# A splatting blender (Cole et al.'s differentiable surface splatting, as PyTorch3D's SplatterBlender arranges
# it): Gaussian weights toward nine neighbours, F.pad over six dims, gathers with expanded index tensors, occlusion
# layers from F.unfold of depths and min(dim) indices, masked writes of background layers
# ----------------------------------------------------------------------------------------------


def splatter_blend(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(8)
    N, H, W, K = 1, 5, 6, 2
    # per-pixel, per-layer surface points in screen space (a rasteriser's output), and their colours
    base = torch.stack(torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"), -1) + 0.5
    jitter = torch.tensor(rng.normal(0, 0.2, (N, H, W, K, 2)), requires_grad=True)
    depth = torch.tensor(np.sort(rng.uniform(1, 3, (N, H, W, K)), -1))
    colors = torch.tensor(rng.uniform(0, 1, (N, H, W, K, 3)), requires_grad=True)
    background = torch.tensor(rng.uniform(0, 1, (N, H, W, K)) < 0.2)
    coords = base[None, :, :, None, :] + jitter
    rgba = torch.cat([colors, torch.ones_like(colors[..., :1])], dim=-1)
    rgba = rgba.clone()
    rgba[background] = 0.0  # background layers splat nothing
    depth = depth.clone()
    depth[background] = 10.0
    offsets = torch.tensor(list(itertools.product((-1, 0, 1), repeat=2)), dtype=torch.long)  # (9, 2)
    sigma = 0.5
    norm = (1 + 0.05) / torch.exp(-(offsets ** 2).sum(dim=1) / (2 * sigma ** 2)).sum()
    to_centre = (torch.floor(coords) - coords + 0.5).view(N, H, W, K, 1, 2)
    d2 = torch.sum((to_centre + offsets) ** 2, dim=5)
    w = (rgba[..., 3:4] * norm * torch.exp(-d2 / (2 * sigma ** 2))).unsqueeze(5)  # (N, H, W, K, 9, 1)
    splats = torch.cat([w * rgba.unsqueeze(4), w], dim=5)  # (N, H, W, K, 9, 5)
    # shift every direction's splats onto the pixel they land on: pad H and W by one, then gather
    padded = F.pad(splats, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
    rows = (torch.arange(H).view(1, H, 1, 1, 1, 1) + torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]).view(1, 1, 1, 1, 9, 1)).expand(N, H, W + 2, K, 9, 5)
    cols = (torch.arange(W).view(1, 1, W, 1, 1, 1) + torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2]).view(1, 1, 1, 1, 9, 1)).expand(N, H, W, K, 9, 5)
    landed = torch.gather(torch.gather(padded, 1, rows), 2, cols)
    # occlusion layers from 3x3 neighbourhoods of depth (unfold on (N, K, H, W))
    q = depth.permute(0, 3, 1, 2)
    p = F.unfold(q, kernel_size=3, padding=1).view(N, K, 9, H, W)
    q = q.view(N, K, 1, H, W)
    zd_qp, id_qp = torch.abs(p - q[:, 0:1]).min(dim=1)
    zd_pq, id_pq = torch.abs(p[:, 0:1] - q).min(dim=1)
    layers = torch.where(zd_pq < zd_qp, -id_pq, id_qp).permute(0, 2, 3, 1)  # (N, H, W, 9)
    surface = (layers == 0).to(landed.dtype)[:, :, :, None, :, None]
    acc = (landed * surface).sum(dim=(3, 4))  # (N, H, W, 5)
    img = acc[..., :3] / acc[..., 4:].clamp(min=1e-4)
    loss = img.pow(2).mean() + acc[..., 4].mean()
    g_jitter, g_colors = torch.autograd.grad(loss, [jitter, colors])
    return img.detach(), layers, g_jitter, g_colors, landed.sum().detach()


def test_splatter_blend():
    ours, _ = run_both(splatter_blend, rtol=1e-9, atol=1e-11)
    img, layers, g_jitter, g_colors, total = ours
    assert img.shape == (1, 5, 6, 3) and layers.shape == (1, 5, 6, 9)
    assert ((-1 <= layers) & (layers <= 1)).all()  # K = 2 layers: behind, on or in front of the surface
    assert np.abs(g_jitter).sum() > 0
