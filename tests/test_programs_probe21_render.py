# ruff: noqa: B006, B007, B008, B023, E501, E702, E741, E731, F841, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Differentiable rendering and geometry programs in plain PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and weights (float64 mostly, to about 1e-9; NeRF and the hash grid in
float32), comparing values, gradients and short optimisation trajectories, and checked by hand where they run alone.

A SoftRas-style soft rasteriser of 2-D triangles (edge distances, sigmoid coverage, ``1 - prod(1 - p)`` and a depth
softmax with a background term), vertices fitted by Adam to a soft IoU; 2-D Gaussian splatting (covariances from
angles and log-scales, ``meshgrid`` in 'xy' and 'ij', Mahalanobis distances by einsum, front-to-back compositing by
``cumprod`` with an exclusive product from ``cat`` with ones) and cumprod's first and second derivatives where
``1 - alpha`` is exactly 0; sphere tracing a learnt SDF (a no_grad marching loop, normals by ``autograd.grad`` with
``create_graph``, an eikonal loss, rays from ``linalg.inv(K)``, look-at and quaternion cameras, reprojection by
``linalg.solve``); Bezier curves by de Casteljau's ``lerp`` with tensor weights and by Bernstein polynomials from
``lgamma``, arc length by ``diff``/``cumsum``/``searchsorted``, clamped B-splines by Cox-de Boor with ``where``,
``lstsq`` fits and the Chamfer distance; deformable convolution built from ``grid_sample`` and a strided
convolution; flow warping (a meshgrid grid written in place, border padding, occlusion masks) and a 3-D
displacement field (reflection padding, align_corners=False, gradients w.r.t. the grid); soft histograms (sigmoid
bins, a Gaussian KDE, ``histc``, ``kl_div``) matched by Adam; nerf-pytorch's NeRF (positional encoding, skips,
``raw2outputs``, ``sample_pdf`` by ``searchsorted``/``gather``, hierarchical sampling); 3-D Gaussian splatting's
EWA projection (``vmap(jacrev)``, ``eigvalsh`` radii, spherical-harmonic colours); a hard rasteriser as a custom
``autograd.Function`` (``mark_non_differentiable``, ``once_differentiable``, ``needs_input_grad``) with
``gradcheck``, ``gradgradcheck``, ``setup_context`` and ``vmap``; Instant-NGP's hash encoding (int32 coordinates
times overflowing primes, XOR, masks, Embedding lookups); DeepSDF's auto-decoder (``weight_norm``,
``Embedding(max_norm=...)``, two parameter groups, StepLR, ``clip_grad_norm_``); SDF derivatives the torch.func way
(``functional_call``, ``vmap`` of ``grad``/``hessian``, per-sample gradients, ``vmap`` over ``grid_sample``,
``jacrev`` w.r.t. the grid); PyTorch3D-style mesh regularisers (unique edges, a sparse COO Laplacian, vertex
normals by ``index_add``); a Plenoxels-style voxel radiance field (3-D ``grid_sample`` of densities and SH
coefficients, an equirectangular environment map by bicubic ``grid_sample`` with reflection padding, 2x2
supersampling, total variation, RMSprop); projection Jacobians by ``autograd.functional`` (reverse, forward-mode,
vectorised; hvp/vhp) and Gauss-Newton bundle adjustment through ``lstsq``; rotation conversions (a masked-write
square root, ``Tensor.max(tensor)``, a ``one_hot`` mask selecting the best-conditioned quaternion, quaternion
products); a splatting blender (``F.pad`` over six dims, ``gather`` with expanded indices, occlusion layers from
``F.unfold`` and ``min(dim)``); FoV cameras (look-at with the degenerate straight-down case, projection matrices
written by index, clip/NDC/screen and unprojection through ``torch.inverse``); a chunked volume renderer under
``utils.checkpoint`` (both kinds, dropout's RNG state preserved) and ``saved_tensors_hooks``.

Every program agrees with PyTorch. What the probe found is pinned elsewhere: tests/test_avx_mathfun.py (randn's
float32 blocks of 16, an ulp off in one value in seven) and tests/test_probe21_render_fixes.py (shape refusals)."""


import itertools
import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

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
# Sphere tracing a learnt SDF, with cameras from intrinsics, quaternions and look-at
# ----------------------------------------------------------------------------------------------


def make_sdf_net(m, hidden=16):
    torch, nn = m.torch, m.nn

    class SDF(nn.Module):
        """A sphere of radius 0.5 plus a small learnt residual (an IGR-style geometric initialisation)."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, hidden), nn.Softplus(beta=10), nn.Linear(hidden, 1))

        def forward(self, x):
            return x.norm(dim=-1, keepdim=True) - 0.5 + 0.1 * self.net(x)

    return SDF()


def quaternion_to_matrix(torch, quaternions):
    r, i, j, k = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    o = torch.stack((
        1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
        two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
        two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
    ), -1)
    return o.reshape(quaternions.shape[:-1] + (3, 3))


def look_at(torch, F, eye, at, up):
    z = F.normalize(at - eye, dim=-1)
    x = F.normalize(torch.cross(up, z, dim=-1), dim=-1)
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z], dim=-1)  # camera-to-world rotation, columns are the axes
    c2w = torch.eye(4, dtype=eye.dtype).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, :3] = R
    c2w[:, :3, 3] = eye
    return c2w


def sphere_tracing(m, weights, H=6, W=7, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_sdf_net(m), weights).double()
    K = torch.tensor([[8.0, 0.0, W / 2], [0.0, 8.0, H / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    eye = torch.tensor([[0.0, 0.3, -2.0], [1.5, 0.5, -1.2]], dtype=torch.float64)
    c2w = look_at(torch, F, eye, torch.zeros_like(eye), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(eye))
    # a small extra rotation from a quaternion, applied about the origin
    q = torch.tensor([0.98, 0.05, -0.1, 0.02], dtype=torch.float64)
    Rq = quaternion_to_matrix(torch, q)
    c2w = torch.cat([Rq @ c2w[:, :3, :4], c2w[:, 3:]], dim=1)

    j, i = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    pix = torch.stack([i + 0.5, j + 0.5, torch.ones_like(i)], -1).reshape(-1, 3)  # (P, 3) homogeneous
    dirs_cam = (torch.linalg.inv(K) @ pix.T).T
    dirs = torch.einsum("bij,pj->bpi", c2w[:, :3, :3], dirs_cam)
    dirs = dirs / torch.linalg.norm(dirs, dim=-1, keepdim=True)
    origins = c2w[:, None, :3, 3].expand_as(dirs)

    def trace(origins, dirs, n_iter=30):
        with torch.no_grad():
            t = torch.zeros(origins.shape[:-1] + (1,), dtype=origins.dtype)
            for _ in range(n_iter):
                d = model(origins + t * dirs)
                t = t + d
                t = torch.where(t > 4.0, torch.full_like(t, 4.0), t)
            hit = model(origins + t * dirs).abs() < 1e-3
        x = origins + t * dirs
        return x, hit.squeeze(-1)

    def shade(x, light=torch.tensor([0.3, 0.8, -0.5], dtype=torch.float64)):
        x = x.detach().requires_grad_(True)
        sdf = model(x)
        n, = torch.autograd.grad(sdf, x, torch.ones_like(sdf), create_graph=True)
        n = F.normalize(n, dim=-1)
        return (n * F.normalize(light, dim=0)).sum(-1).clamp(min=0), sdf, n

    opt = optim.Adam(model.parameters(), lr=1e-2)
    target = torch.linspace(0.2, 0.9, H * W, dtype=torch.float64).reshape(1, -1).expand(2, -1)
    history = []
    for step in range(steps):
        opt.zero_grad()
        x, hit = trace(origins, dirs)
        shading, sdf, normals = shade(x)
        # differentiable surface points: x - n * sdf (the implicit-differentiation trick of IDR)
        loss = ((shading - target) ** 2 * hit).sum() / hit.sum().clamp(min=1)
        eik = torch.from_numpy(np.random.default_rng(step).uniform(-1, 1, (64, 3)))
        eik.requires_grad_(True)
        g, = torch.autograd.grad(model(eik).sum(), eik, create_graph=True)
        loss = loss + 0.1 * ((g.norm(dim=-1) - 1) ** 2).mean()
        loss.backward()
        opt.step()
        history.append(loss.item())
    x, hit = trace(origins, dirs)
    shading, sdf, normals = shade(x)
    # project the hit points back through the camera: world -> camera by solve, then K
    Xh = torch.cat([x, torch.ones_like(x[..., :1])], -1)  # (B, P, 4)
    Xc = torch.linalg.solve(c2w, Xh.transpose(1, 2)).transpose(1, 2)[..., :3]
    uvw = Xc @ K.T
    uv = uvw[..., :2] / uvw[..., 2:]
    grads = torch.autograd.grad(shading.sum(), list(model.parameters()), allow_unused=True)
    grads = [g if g is not None else torch.zeros(()) for g in grads]  # the last bias moves no normal
    return {"history": history, "x": x.detach(), "hit": hit, "shading": shading.detach(), "normals": normals.detach(),
            "uv": uv.detach(), "pix": pix[:, :2], "grads": grads, "c2w": c2w}


def test_sphere_tracing_a_learnt_sdf():
    weights = weights_of(make_sdf_net)
    ours, _ = run_both(sphere_tracing, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    hit = ours["hit"]
    assert hit.any() and not hit.all()
    # the traced points project back onto their own pixels
    np.testing.assert_allclose(ours["uv"][hit], np.broadcast_to(ours["pix"], hit.shape + (2,))[hit], atol=1e-8)
    # rotation matrices stay orthonormal
    R = ours["c2w"][:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Bezier and B-spline curves: de Casteljau by lerp, Bernstein by lgamma, arc length, Chamfer fitting
# ----------------------------------------------------------------------------------------------


def curve_data():
    rng = np.random.default_rng(3)
    s = np.linspace(0, 1, 40)
    target = np.stack([np.cos(3 * s) * (1 + s), np.sin(3 * s) * (1 + 0.5 * s)], -1) + 0.01 * rng.standard_normal((40, 2))
    ctrl = np.stack([np.linspace(1, -1, 6), np.linspace(0, 1, 6)], -1) + 0.1 * rng.standard_normal((6, 2))
    return target, ctrl


def de_casteljau(torch, ctrl, t):
    # ctrl: (n+1, D), t: (T,) -> (T, D), by repeated lerp with a tensor weight
    pts = ctrl[None].expand(t.shape[0], -1, -1)
    w = t[:, None, None]
    while pts.shape[1] > 1:
        pts = torch.lerp(pts[:, :-1], pts[:, 1:], w)
    return pts[:, 0]


def bernstein(torch, n, t):
    k = torch.arange(n + 1, dtype=t.dtype)
    log_binom = torch.lgamma(torch.tensor(n + 1.0, dtype=t.dtype)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    return torch.exp(log_binom) * t[:, None] ** k * (1 - t[:, None]) ** (n - k)


def bspline_basis(torch, knots, degree, t):
    """Cox-de Boor recursion; 0/0 terms of repeated knots are taken as 0 by torch.where."""
    t = t[:, None]
    B = ((knots[:-1] <= t) & (t < knots[1:])).to(t.dtype)
    # the right end belongs to the last non-empty span
    last = (knots[1:] > knots[:-1]).nonzero()[-1, 0]
    B[:, last] = torch.where(t[:, 0] == knots[-1], torch.ones_like(t[:, 0]), B[:, last])
    for p in range(1, degree + 1):
        left_den = knots[p:-1] - knots[:-p - 1]
        right_den = knots[p + 1:] - knots[1:-p]
        left = torch.where(left_den > 0, (t - knots[:-p - 1]) / torch.where(left_den > 0, left_den, torch.ones_like(left_den)),
                           torch.zeros_like(left_den))
        right = torch.where(right_den > 0, (knots[p + 1:] - t) / torch.where(right_den > 0, right_den, torch.ones_like(right_den)),
                            torch.zeros_like(right_den))
        B = left * B[:, :-1] + right * B[:, 1:]
    return B


def chamfer(torch, a, b):
    d = torch.cdist(a, b) ** 2
    return d.min(dim=1).values.mean() + d.min(dim=0).values.mean()


def curve_fitting(m, steps=15):
    torch, optim = m.torch, m.optim
    target, ctrl0 = (torch.from_numpy(a) for a in curve_data())
    t = torch.linspace(0, 1, 50, dtype=torch.float64)

    ctrl = ctrl0.clone().requires_grad_(True)
    opt = optim.Adam([ctrl], lr=0.05)
    history = []
    for step in range(steps):
        opt.zero_grad()
        curve = de_casteljau(torch, ctrl, t)
        seg = torch.diff(curve, dim=0)
        length = torch.linalg.vector_norm(seg, dim=-1).sum()
        loss = chamfer(torch, curve, target) + 1e-3 * length
        loss.backward()
        opt.step()
        history.append(loss.item())

    curve = de_casteljau(torch, ctrl, t)
    by_bernstein = bernstein(torch, ctrl.shape[0] - 1, t) @ ctrl
    # arc-length reparametrisation: cumulative length, then searchsorted and a lerp inside each segment
    seg_len = torch.diff(curve, dim=0).norm(dim=-1)
    s = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(seg_len, 0)])
    wanted = torch.linspace(0, 1, 11, dtype=torch.float64) * s[-1]
    idx = torch.searchsorted(s.detach(), wanted.detach(), right=False).clamp(1, len(s) - 1)
    s0, s1 = s[idx - 1], s[idx]
    frac = ((wanted - s0) / (s1 - s0)).unsqueeze(-1)
    uniform = torch.lerp(curve[idx - 1], curve[idx], frac)

    # a clamped cubic B-spline through the same control points, and a least-squares fit to the target
    degree, n_ctrl = 3, 6
    knots = torch.cat([torch.zeros(degree, dtype=torch.float64), torch.linspace(0, 1, n_ctrl - degree + 1, dtype=torch.float64),
                       torch.ones(degree, dtype=torch.float64)])
    B = bspline_basis(torch, knots, degree, t)
    spline = B @ ctrl
    u = torch.linspace(0, 1, target.shape[0], dtype=torch.float64)
    Bu = bspline_basis(torch, knots, degree, u)
    fitted = torch.linalg.lstsq(Bu, target).solution

    g_ctrl, = torch.autograd.grad(s[-1] + uniform.pow(2).sum() + spline.pow(2).sum(), ctrl)
    return {"history": history, "curve": curve.detach(), "by_bernstein": by_bernstein.detach(), "length": s[-1],
            "uniform": uniform.detach(), "B": B, "spline": spline.detach(), "fitted": fitted, "g_ctrl": g_ctrl}


def test_bezier_and_bspline_curves():
    ours, _ = run_both(curve_fitting, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    np.testing.assert_allclose(ours["by_bernstein"], ours["curve"], atol=1e-12)
    np.testing.assert_allclose(ours["B"].sum(1), 1.0, atol=1e-12)  # a partition of unity, right end included
    # the arc-length samples are equally spaced along the polyline
    gaps = np.linalg.norm(np.diff(ours["uniform"], axis=0), axis=-1)
    assert gaps.sum() <= ours["length"] + 1e-12
    np.testing.assert_allclose(ours["uniform"][[0, -1]], ours["curve"][[0, -1]], atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Image warping: deformable convolution, flow warping, a 3-D transformer, a soft histogram
# ----------------------------------------------------------------------------------------------


def make_deform_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class DeformConv2d(nn.Module):
        """Deformable convolution v2 written with grid_sample: each of the k*k taps is sampled at its regular
        position plus a learnt offset, modulated by a sigmoid mask, and the taps are contracted with the weight
        as an unfolded convolution would be."""

        def __init__(self, inc, outc, kernel_size=3, padding=1, stride=1):
            super().__init__()
            self.k, self.padding, self.stride = kernel_size, padding, stride
            self.p_conv = nn.Conv2d(inc, 2 * kernel_size * kernel_size, 3, padding=1, stride=stride)
            nn.init.normal_(self.p_conv.weight, std=0.01)
            self.m_conv = nn.Conv2d(inc, kernel_size * kernel_size, 3, padding=1, stride=stride)
            self.conv = nn.Conv2d(inc, outc, kernel_size, stride=kernel_size, bias=False)

        def forward(self, x):
            B, C, H, W = x.shape
            offset = self.p_conv(x)  # (B, 2kk, Ho, Wo): (dy, dx) per tap
            mask = torch.sigmoid(self.m_conv(x))
            Ho, Wo = offset.shape[-2:]
            k = self.k
            ky, kx = torch.meshgrid(torch.arange(-(k - 1) // 2, (k - 1) // 2 + 1),
                                    torch.arange(-(k - 1) // 2, (k - 1) // 2 + 1), indexing="ij")
            oy, ox = torch.meshgrid(torch.arange(Ho) * self.stride, torch.arange(Wo) * self.stride, indexing="ij")
            base_y = (oy[None] + ky.reshape(-1, 1, 1)).to(x.dtype)  # (kk, Ho, Wo)
            base_x = (ox[None] + kx.reshape(-1, 1, 1)).to(x.dtype)
            py = base_y[None] + offset[:, 0::2]
            px = base_x[None] + offset[:, 1::2]
            grid = torch.stack([2 * px / (W - 1) - 1, 2 * py / (H - 1) - 1], dim=-1)  # (B, kk, Ho, Wo, 2)
            sampled = F.grid_sample(x, grid.reshape(B, k * k * Ho, Wo, 2), mode="bilinear", padding_mode="zeros",
                                    align_corners=True).reshape(B, C, k * k, Ho, Wo)
            sampled = sampled * mask[:, None]
            # (B, C, kk, Ho, Wo) -> tiles of k x k per output pixel, then a stride-k convolution
            tiles = sampled.reshape(B, C, k, k, Ho, Wo).permute(0, 1, 4, 2, 5, 3).reshape(B, C, Ho * k, Wo * k)
            return self.conv(tiles)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.deform = DeformConv2d(4, 5)
            self.head = nn.Conv2d(5, 1, 1)

        def forward(self, x):
            return self.head(F.relu(self.deform(F.relu(self.conv(x)))))

    return Net()


def deformable_convolution(m, weights, steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    net = load(m, make_deform_net(m), weights).double()
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal((2, 2, 7, 8)))
    y = torch.from_numpy(rng.standard_normal((2, 1, 7, 8)))
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    history = []
    for step in range(steps):
        opt.zero_grad()
        loss = F.smooth_l1_loss(net(x), y)
        loss.backward()
        opt.step()
        history.append(loss.item())
    # with zero offsets and a unit mask the layer is an ordinary convolution
    d = net.deform
    with torch.no_grad():
        d.p_conv.weight.zero_()
        d.p_conv.bias.zero_()
        d.m_conv.weight.zero_()
        d.m_conv.bias.fill_(20.0)
        h = torch.from_numpy(rng.standard_normal((1, 4, 5, 6)))
        as_deform = d(h)
        as_conv = F.conv2d(h, d.conv.weight, padding=1) * torch.sigmoid(torch.tensor(20.0, dtype=torch.float64))
    grads = {k: p.grad for k, p in net.named_parameters()}
    return {"history": history, "grads": grads, "as_deform": as_deform, "as_conv": as_conv}


def test_deformable_convolution_by_grid_sample():
    ours, _ = run_both(deformable_convolution, weights_of(make_deform_net), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["as_deform"], ours["as_conv"], rtol=1e-10, atol=1e-12)
    assert ours["history"][-1] < ours["history"][0]


def flow_warping(m, steps=20):
    """Recover a smooth flow field by gradient descent on the photometric error of a backward warp, with the
    grid built from a meshgrid plus the flow (normalised by (size - 1), align_corners=True) and an occlusion
    mask from warping ones; then the same for a 3-D volume with reflection padding and align_corners=False."""
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(11)
    H, W = 9, 10
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    img1 = np.sin(xx / 2.0) * np.cos(yy / 3.0) + 0.1 * xx / W
    true_flow = np.stack([0.6 + 0.1 * np.sin(yy / 4.0), -0.4 + 0.05 * xx / W])  # (2, H, W)
    img1_t = torch.from_numpy(img1)[None, None]

    def warp(x, flo, padding_mode="zeros"):
        B, C, H, W = x.size()
        xx = torch.arange(0, W).view(1, -1).repeat(H, 1)
        yy = torch.arange(0, H).view(-1, 1).repeat(1, W)
        xx = xx.view(1, 1, H, W).repeat(B, 1, 1, 1)
        yy = yy.view(1, 1, H, W).repeat(B, 1, 1, 1)
        grid = torch.cat((xx, yy), 1).to(x.dtype)
        vgrid = grid + flo
        vgrid[:, 0, :, :] = 2.0 * vgrid[:, 0, :, :].clone() / max(W - 1, 1) - 1.0
        vgrid[:, 1, :, :] = 2.0 * vgrid[:, 1, :, :].clone() / max(H - 1, 1) - 1.0
        vgrid = vgrid.permute(0, 2, 3, 1)
        output = F.grid_sample(x, vgrid, align_corners=True, padding_mode=padding_mode)
        mask = torch.ones(x.size(), dtype=x.dtype)
        mask = F.grid_sample(mask, vgrid, align_corners=True)
        mask = (mask > 0.9999).to(x.dtype)
        return output * mask, mask

    with torch.no_grad():
        img2, _ = warp(img1_t, torch.from_numpy(true_flow)[None], padding_mode="border")
    flow = torch.zeros(1, 2, H, W, dtype=torch.float64, requires_grad=True)
    opt = optim.Adam([flow], lr=0.1)
    history = []
    for step in range(steps):
        opt.zero_grad()
        warped, mask = warp(img1_t, flow, padding_mode="border")
        photo = (torch.sqrt((warped - img2) ** 2 + 1e-6) * mask).sum() / mask.sum()
        smooth = (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., 1:] - flow[..., :-1]).abs().mean()
        loss = photo + 0.1 * smooth
        loss.backward()
        opt.step()
        history.append(loss.item())

    # a 3-D displacement field, reflection padding, align_corners=False, gradients w.r.t. the grid and the volume
    vol = torch.from_numpy(rng.standard_normal((1, 2, 4, 5, 6))).requires_grad_(True)
    disp = torch.from_numpy(0.3 * rng.standard_normal((1, 4, 5, 6, 3))).requires_grad_(True)
    d, h, w = torch.meshgrid(torch.linspace(-1, 1, 4, dtype=torch.float64), torch.linspace(-1, 1, 5, dtype=torch.float64),
                             torch.linspace(-1, 1, 6, dtype=torch.float64), indexing="ij")
    ident = torch.stack([w, h, d], dim=-1)[None]
    moved = {}
    for mode in ("bilinear", "nearest"):
        out = F.grid_sample(vol, ident * 1.3 + disp, mode=mode, padding_mode="reflection", align_corners=False)
        g_vol, g_disp = torch.autograd.grad((out * out.detach().flip(-1)).sum(), [vol, disp])
        moved[mode] = (out, g_vol, g_disp)
    return {"history": history, "flow": flow.detach(), "moved": moved}


def test_flow_warping_2d_and_3d():
    ours, _ = run_both(flow_warping, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < 0.7 * ours["history"][0]
    assert np.abs(ours["moved"]["nearest"][2]).max() == 0  # nearest sampling: no gradient w.r.t. the grid


def soft_histogram(m, steps=25):
    """A differentiable histogram (soft binning: differences of sigmoids at bin edges, and a Gaussian kernel
    density) whose image is pushed towards a target histogram, compared against torch.histc's hard counts."""
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(4)
    img = torch.from_numpy(rng.beta(2, 5, (1, 16, 16)))
    target = torch.from_numpy(np.histogram(rng.beta(5, 2, 4096), bins=8, range=(0, 1))[0] / 4096.0)
    edges = torch.linspace(0, 1, 9, dtype=torch.float64)
    centres = 0.5 * (edges[1:] + edges[:-1])

    def soft_hist(x, sigma=0.02):
        v = x.reshape(-1, 1)
        upper = torch.sigmoid((edges[1:] - v) / sigma)
        lower = torch.sigmoid((edges[:-1] - v) / sigma)
        return (upper - lower).sum(0) / v.shape[0]

    def kde_hist(x, bandwidth=0.05):
        v = x.reshape(-1, 1)
        k = torch.exp(-0.5 * ((v - centres) / bandwidth) ** 2)
        k = k / k.sum(1, keepdim=True)
        return k.mean(0)

    hard = torch.histc(img, bins=8, min=0, max=1) / img.numel()
    soft0 = soft_hist(img)
    logits = torch.logit(img.clamp(1e-4, 1 - 1e-4)).clone().requires_grad_(True)
    opt = optim.Adam([logits], lr=0.1)
    history = []
    for step in range(steps):
        opt.zero_grad()
        x = torch.sigmoid(logits)
        h = soft_hist(x)
        loss = ((h.cumsum(0) - target.cumsum(0)) ** 2).sum() + torch.nn.functional.kl_div(
            (kde_hist(x) + 1e-8).log(), target + 1e-8, reduction="sum")
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"hard": hard, "soft0": soft0, "history": history, "final": soft_hist(torch.sigmoid(logits)).detach()}


def test_soft_histogram_matching():
    ours, _ = run_both(soft_histogram, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["soft0"], ours["hard"], atol=0.05)
    assert ours["history"][-1] < 0.5 * ours["history"][0]


# ----------------------------------------------------------------------------------------------
# NeRF (nerf-pytorch's run_nerf_helpers and raw2outputs / sample_pdf, float32 as written)
# ----------------------------------------------------------------------------------------------


def make_nerf(m):
    nn, torch = m.nn, m.torch
    class NeRF(nn.Module):
        def __init__(self, D=3, W=32, input_ch=3*(1+2*4), input_ch_views=3*(1+2*2), skips=[1]):
            super().__init__()
            self.skips = skips
            self.pts_linears = nn.ModuleList([nn.Linear(input_ch, W)] + [nn.Linear(W, W) if i not in self.skips else nn.Linear(W + input_ch, W) for i in range(D-1)])
            self.views_linears = nn.ModuleList([nn.Linear(input_ch_views + W, W//2)])
            self.feature_linear = nn.Linear(W, W)
            self.alpha_linear = nn.Linear(W, 1)
            self.rgb_linear = nn.Linear(W//2, 3)
            self.input_ch, self.input_ch_views = input_ch, input_ch_views
        def forward(self, x):
            input_pts, input_views = torch.split(x, [self.input_ch, self.input_ch_views], dim=-1)
            h = input_pts
            for i, l in enumerate(self.pts_linears):
                h = self.pts_linears[i](h)
                h = nn.functional.relu(h)
                if i in self.skips:
                    h = torch.cat([input_pts, h], -1)
            alpha = self.alpha_linear(h)
            feature = self.feature_linear(h)
            h = torch.cat([feature, input_views], -1)
            for i, l in enumerate(self.views_linears):
                h = self.views_linears[i](h)
                h = nn.functional.relu(h)
            rgb = self.rgb_linear(h)
            return torch.cat([rgb, alpha], -1)
    return NeRF()

def nerf(m, weights):
    torch, F = m.torch, m.F
    model = load(m, make_nerf(m), weights)
    def embed(x, L):
        out = [x]
        freq_bands = 2.**torch.linspace(0., L-1, steps=L)
        for freq in freq_bands:
            for p_fn in [torch.sin, torch.cos]:
                out.append(p_fn(x * freq))
        return torch.cat(out, -1)
    def get_rays(H, W, K, c2w):
        i, j = torch.meshgrid(torch.linspace(0, W-1, W), torch.linspace(0, H-1, H), indexing='ij')
        i = i.t(); j = j.t()
        dirs = torch.stack([(i-K[0][2])/K[0][0], -(j-K[1][2])/K[1][1], -torch.ones_like(i)], -1)
        rays_d = torch.sum(dirs[..., np.newaxis, :] * c2w[:3,:3], -1)
        rays_o = c2w[:3,-1].expand(rays_d.shape)
        return rays_o, rays_d
    def raw2outputs(raw, z_vals, rays_d, raw_noise_std=0, white_bkgd=False):
        raw2alpha = lambda raw, dists, act_fn=F.relu: 1.-torch.exp(-act_fn(raw)*dists)
        dists = z_vals[...,1:] - z_vals[...,:-1]
        dists = torch.cat([dists, torch.Tensor([1e10]).expand(dists[...,:1].shape)], -1)
        dists = dists * torch.norm(rays_d[...,None,:], dim=-1)
        rgb = torch.sigmoid(raw[...,:3])
        alpha = raw2alpha(raw[...,3], dists)
        weights = alpha * torch.cumprod(torch.cat([torch.ones((alpha.shape[0], 1)), 1.-alpha + 1e-10], -1), -1)[:, :-1]
        rgb_map = torch.sum(weights[...,None] * rgb, -2)
        depth_map = torch.sum(weights * z_vals, -1)
        disp_map = 1./torch.max(1e-10 * torch.ones_like(depth_map), depth_map / torch.sum(weights, -1))
        acc_map = torch.sum(weights, -1)
        if white_bkgd:
            rgb_map = rgb_map + (1.-acc_map[...,None])
        return rgb_map, disp_map, acc_map, weights, depth_map
    def sample_pdf(bins, weights, N_samples, det=True):
        weights = weights + 1e-5
        pdf = weights / torch.sum(weights, -1, keepdim=True)
        cdf = torch.cumsum(pdf, -1)
        cdf = torch.cat([torch.zeros_like(cdf[...,:1]), cdf], -1)
        u = torch.linspace(0., 1., steps=N_samples)
        u = u.expand(list(cdf.shape[:-1]) + [N_samples])
        u = u.contiguous()
        inds = torch.searchsorted(cdf, u, right=True)
        below = torch.max(torch.zeros_like(inds-1), inds-1)
        above = torch.min((cdf.shape[-1]-1) * torch.ones_like(inds), inds)
        inds_g = torch.stack([below, above], -1)
        matched_shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
        cdf_g = torch.gather(cdf.unsqueeze(1).expand(matched_shape), 2, inds_g)
        bins_g = torch.gather(bins.unsqueeze(1).expand(matched_shape), 2, inds_g)
        denom = (cdf_g[...,1]-cdf_g[...,0])
        denom = torch.where(denom<1e-5, torch.ones_like(denom), denom)
        t = (u-cdf_g[...,0])/denom
        samples = bins_g[...,0] + t * (bins_g[...,1]-bins_g[...,0])
        return samples
    H, W = 5, 6
    K = np.array([[6., 0, W/2], [0, 6., H/2], [0, 0, 1]])
    c2w = torch.Tensor(np.array([[1, 0, 0, 0.1], [0, 1, 0, -0.2], [0, 0, 1, 3.0]], dtype=np.float32))
    rays_o, rays_d = get_rays(H, W, K, c2w)
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    viewdirs = rays_d / torch.norm(rays_d, dim=-1, keepdim=True)
    near, far, N_samples = 2., 4., 8
    t_vals = torch.linspace(0., 1., steps=N_samples)
    z_vals = near * (1.-t_vals) + far * (t_vals)
    z_vals = z_vals.expand([rays_o.shape[0], N_samples])
    opt = m.optim.Adam(model.parameters(), lr=5e-4, betas=(0.9, 0.999))
    target = torch.Tensor(np.random.default_rng(0).uniform(0, 1, (H*W, 3)))
    hist = []
    for it in range(3):
        pts = rays_o[...,None,:] + rays_d[...,None,:] * z_vals[...,:,None]
        vd = viewdirs[:, None].expand(pts.shape)
        inp = torch.cat([embed(pts.reshape(-1,3), 4), embed(vd.reshape(-1,3), 2)], -1)
        raw = model(inp).reshape(list(pts.shape[:-1]) + [4])
        rgb_map, disp_map, acc_map, weights, depth_map = raw2outputs(raw, z_vals, rays_d, white_bkgd=True)
        z_vals_mid = .5 * (z_vals[...,1:] + z_vals[...,:-1])
        z_samples = sample_pdf(z_vals_mid, weights[...,1:-1], 6).detach()
        z_all, _ = torch.sort(torch.cat([z_vals, z_samples], -1), -1)
        pts = rays_o[...,None,:] + rays_d[...,None,:] * z_all[...,:,None]
        vd = viewdirs[:, None].expand(pts.shape)
        inp = torch.cat([embed(pts.reshape(-1,3), 4), embed(vd.reshape(-1,3), 2)], -1)
        raw = model(inp).reshape(list(pts.shape[:-1]) + [4])
        rgb_f, disp_f, acc_f, weights_f, depth_f = raw2outputs(raw, z_all, rays_d, white_bkgd=True)
        img2mse = lambda x, y : torch.mean((x - y) ** 2)
        mse2psnr = lambda x : -10. * torch.log(x) / torch.log(torch.Tensor([10.]))
        loss = img2mse(rgb_map, target) + img2mse(rgb_f, target)
        psnr = mse2psnr(img2mse(rgb_f, target))
        opt.zero_grad(); loss.backward(); opt.step()
        hist.append((loss.item(), psnr.item()))
    return dict(hist=hist, rgb=rgb_f, disp=disp_f, z=z_all, w=weights_f)


def test_nerf_hierarchical_sampling():
    ours, _ = run_both(nerf, weights_of(make_nerf), rtol=2e-4, atol=2e-5)
    z = ours["z"]
    assert (np.diff(z, axis=-1) >= 0).all()  # the fine samples are sorted into the coarse ones
    assert (z >= 2.0 - 1e-6).all() and (z <= 4.0 + 1e-6).all()
    w = ours["w"]
    assert (w >= 0).all() and (w.sum(-1) <= 1 + 1e-5).all()
    assert ours["hist"][-1][0] < ours["hist"][0][0]


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
# Instant-NGP's multiresolution hash encoding in plain PyTorch (int32 coordinates times primes that overflow,
# XOR folding, a bit mask, Embedding lookups, trilinear interpolation by hand), trained by Adam
# ----------------------------------------------------------------------------------------------


def hash_grid(m):
    torch, nn = m.torch, m.nn
    class HashEmbedder(nn.Module):
        def __init__(self, n_levels=4, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, finest_resolution=32):
            super().__init__()
            self.n_levels, self.n_features_per_level = n_levels, n_features_per_level
            self.log2_hashmap_size = log2_hashmap_size
            self.base_resolution = torch.tensor(base_resolution)
            self.finest_resolution = torch.tensor(finest_resolution)
            self.b = torch.exp((torch.log(self.finest_resolution) - torch.log(self.base_resolution)) / (n_levels - 1))
            self.embeddings = nn.ModuleList([nn.Embedding(2 ** self.log2_hashmap_size, self.n_features_per_level) for i in range(n_levels)])
            for i in range(n_levels):
                nn.init.uniform_(self.embeddings[i].weight, a=-0.0001, b=0.0001)
                with torch.no_grad():
                    self.embeddings[i].weight.copy_(torch.tensor(np.random.default_rng(i).uniform(-1, 1, (2 ** log2_hashmap_size, n_features_per_level)), dtype=torch.float32))
            self.box_offsets = torch.tensor([[[i, j, k] for i in [0, 1] for j in [0, 1] for k in [0, 1]]])
        def hash(self, coords, log2_hashmap_size):
            primes = [1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737]
            xor_result = torch.zeros_like(coords)[..., 0]
            for i in range(coords.shape[-1]):
                xor_result ^= coords[..., i] * primes[i]
            return torch.tensor((1 << log2_hashmap_size) - 1).to(xor_result.device) & xor_result
        def get_voxel_vertices(self, xyz, bounding_box, resolution, log2_hashmap_size):
            box_min, box_max = bounding_box
            keep_mask = xyz == torch.max(torch.min(xyz, box_max), box_min)
            if not torch.all(xyz <= box_max) or not torch.all(xyz >= box_min):
                xyz = torch.clamp(xyz, min=box_min, max=box_max)
            grid_size = (box_max - box_min) / resolution
            bottom_left_idx = torch.floor((xyz - box_min) / grid_size).int()
            voxel_min_vertex = bottom_left_idx * grid_size + box_min
            voxel_max_vertex = voxel_min_vertex + torch.tensor([1.0, 1.0, 1.0]) * grid_size
            voxel_indices = bottom_left_idx.unsqueeze(1) + self.box_offsets
            hashed_voxel_indices = self.hash(voxel_indices, log2_hashmap_size)
            return voxel_min_vertex, voxel_max_vertex, hashed_voxel_indices, keep_mask
        def trilinear_interp(self, x, voxel_min_vertex, voxel_max_vertex, voxel_embedds):
            weights = (x - voxel_min_vertex) / (voxel_max_vertex - voxel_min_vertex)
            c00 = voxel_embedds[:, 0] * (1 - weights[:, 0][:, None]) + voxel_embedds[:, 4] * weights[:, 0][:, None]
            c01 = voxel_embedds[:, 1] * (1 - weights[:, 0][:, None]) + voxel_embedds[:, 5] * weights[:, 0][:, None]
            c10 = voxel_embedds[:, 2] * (1 - weights[:, 0][:, None]) + voxel_embedds[:, 6] * weights[:, 0][:, None]
            c11 = voxel_embedds[:, 3] * (1 - weights[:, 0][:, None]) + voxel_embedds[:, 7] * weights[:, 0][:, None]
            c0 = c00 * (1 - weights[:, 1][:, None]) + c10 * weights[:, 1][:, None]
            c1 = c01 * (1 - weights[:, 1][:, None]) + c11 * weights[:, 1][:, None]
            c = c0 * (1 - weights[:, 2][:, None]) + c1 * weights[:, 2][:, None]
            return c
        def forward(self, x, bounding_box):
            x_embedded_all = []
            for i in range(self.n_levels):
                resolution = torch.floor(self.base_resolution * self.b ** i)
                voxel_min_vertex, voxel_max_vertex, hashed_voxel_indices, keep_mask = self.get_voxel_vertices(x, bounding_box, resolution, self.log2_hashmap_size)
                voxel_embedds = self.embeddings[i](hashed_voxel_indices)
                x_embedded = self.trilinear_interp(x, voxel_min_vertex, voxel_max_vertex, voxel_embedds)
                x_embedded_all.append(x_embedded)
            keep_mask = keep_mask.sum(dim=-1) == keep_mask.shape[-1]
            return torch.cat(x_embedded_all, dim=-1), keep_mask
    emb = HashEmbedder()
    x = torch.tensor(np.random.default_rng(9).uniform(-1.2, 1.2, (20, 3)), dtype=torch.float32)
    bbox = (torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0]))
    out, keep = emb(x, bbox)
    mlp = nn.Linear(out.shape[-1], 1)
    with torch.no_grad():
        mlp.weight.copy_(torch.linspace(-1, 1, out.shape[-1])[None]); mlp.bias.fill_(0.1)
    opt = m.optim.Adam(list(emb.parameters()) + list(mlp.parameters()), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    hist = []
    for it in range(3):
        opt.zero_grad()
        out, keep = emb(x, bbox)
        loss = (mlp(out).squeeze(-1) - x.norm(dim=-1)).pow(2)[keep].mean()
        loss.backward(); opt.step(); hist.append(loss.item())
    vidx = emb.get_voxel_vertices(x, bbox, torch.tensor(16.0), 10)[2]
    return out, keep, hist, vidx, emb.hash(torch.tensor([[7, -3, 100000]]), 22), emb.b, [e.weight.grad for e in emb.embeddings]


def test_hash_grid_encoding():
    ours, _ = run_both(hash_grid, rtol=1e-5, atol=1e-6)
    out, keep, hist, vidx, hashed, b, grads = ours
    assert out.shape == (20, 8) and keep.dtype == bool and not keep.all() and keep.any()
    # the hash by hand, in wrapping int64 arithmetic as PyTorch's
    coords = np.array([7, -3, 100000], dtype=np.int64)
    primes = np.array([1, 2654435761, 805459861], dtype=np.int64)
    with np.errstate(over="ignore"):
        h = np.bitwise_xor.reduce(coords * primes)
    assert hashed[0] == h & ((1 << 22) - 1)
    assert (vidx >= 0).all() and (vidx < 1024).all()
    assert b == pytest.approx(2 ** (1 / 1), rel=1e-6)
    assert hist[-1] < hist[0]


# ----------------------------------------------------------------------------------------------
# DeepSDF's auto-decoder (weight_norm layers, a latent skip, latent codes in Embedding(max_norm=...), clamped L1,
# two parameter groups, StepLR, clip_grad_norm_)
# ----------------------------------------------------------------------------------------------


def make_deepsdf(m):
    nn, torch = m.torch.nn, m.torch
    class Decoder(nn.Module):
        def __init__(self, latent_size=8, dims=[32, 32, 32, 32], norm_layers=(0, 1, 2, 3), latent_in=(2,), weight_norm=True, xyz_in_all=False, use_tanh=True):
            super().__init__()
            dims = [latent_size + 3] + dims + [1]
            self.num_layers = len(dims)
            self.norm_layers = norm_layers
            self.latent_in = latent_in
            self.weight_norm = weight_norm
            for layer in range(0, self.num_layers - 1):
                if layer + 1 in latent_in:
                    out_dim = dims[layer + 1] - dims[0]
                else:
                    out_dim = dims[layer + 1]
                if weight_norm and layer in self.norm_layers:
                    setattr(self, "lin" + str(layer), nn.utils.weight_norm(nn.Linear(dims[layer], out_dim)))
                else:
                    setattr(self, "lin" + str(layer), nn.Linear(dims[layer], out_dim))
            self.use_tanh = use_tanh
            if use_tanh:
                self.tanh = nn.Tanh()
            self.relu = nn.ReLU()
            self.th = nn.Tanh()
        def forward(self, input):
            x = input
            for layer in range(0, self.num_layers - 1):
                lin = getattr(self, "lin" + str(layer))
                if layer in self.latent_in:
                    x = torch.cat([x, input], 1)
                x = lin(x)
                if layer == self.num_layers - 2 and self.use_tanh:
                    x = self.tanh(x)
                if layer < self.num_layers - 2:
                    x = self.relu(x)
            if hasattr(self, "th"):
                x = self.th(x)
            return x
    return Decoder()
def deepsdf(m, weights):
    torch, nn = m.torch, m.torch.nn
    decoder = load(m, make_deepsdf(m), weights)
    num_shapes, latent_size, code_bound = 3, 8, 1.0
    lat_vecs = nn.Embedding(num_shapes, latent_size, max_norm=code_bound)
    with torch.no_grad():
        lat_vecs.weight.copy_(torch.tensor(np.random.default_rng(0).standard_normal((3, 8)) * 0.7, dtype=torch.float32))
    rng = np.random.default_rng(1)
    xyz = torch.tensor(rng.uniform(-1, 1, (3, 16, 3)), dtype=torch.float32)
    sdf_gt = (xyz.norm(dim=-1) - torch.tensor([0.3, 0.5, 0.7])[:, None]).reshape(-1, 1)
    indices = torch.arange(3)[:, None].expand(3, 16).reshape(-1)
    xyz = xyz.reshape(-1, 3)
    optimizer_all = torch.optim.Adam([
        {"params": decoder.parameters(), "lr": 5e-4},
        {"params": lat_vecs.parameters(), "lr": 1e-3},
    ])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer_all, step_size=2, gamma=0.5)
    loss_l1 = torch.nn.L1Loss(reduction="sum")
    clamp_dist = 0.1
    hist = []
    for epoch in range(4):
        optimizer_all.zero_grad()
        batch_vecs = lat_vecs(indices)
        input = torch.cat([batch_vecs, xyz], dim=1)
        pred_sdf = decoder(input)
        pred_sdf = torch.clamp(pred_sdf, -clamp_dist, clamp_dist)
        sdf = torch.clamp(sdf_gt, -clamp_dist, clamp_dist)
        chunk_loss = loss_l1(pred_sdf, sdf) / xyz.shape[0]
        l2_size_loss = torch.sum(torch.norm(batch_vecs, dim=1))
        chunk_loss = chunk_loss + 1e-4 * min(1, epoch / 100) * l2_size_loss / xyz.shape[0]
        chunk_loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimizer_all.step()
        scheduler.step()
        hist.append(chunk_loss.item())
    return hist, lat_vecs.weight.detach(), lat_vecs.weight.detach().norm(dim=1), decoder.lin0.weight_g.detach(), decoder.lin0.weight_v.detach(), scheduler.get_last_lr()


def test_deepsdf_auto_decoder():
    ours, _ = run_both(deepsdf, weights_of(make_deepsdf), rtol=1e-4, atol=1e-6)
    hist, codes, code_norms, g, v, last_lr = ours
    assert (code_norms <= 1.0 + 1e-6).all()  # max_norm renormalised the looked-up rows in place
    np.testing.assert_allclose(last_lr, [5e-4 / 4, 1e-3 / 4])
    assert g.shape == (32, 1) and v.shape == (32, 11)  # weight_norm's magnitude and direction, per output row


# ----------------------------------------------------------------------------------------------
# SDF normals and curvature the torch.func way: vmap of grad / hessian through functional_call, per-sample gradients,
# vmap over grid_sample, and jacrev of grid_sample with respect to the grid
# ----------------------------------------------------------------------------------------------


def make_sdf_mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 16), nn.Softplus(beta=100), nn.Linear(16, 16), nn.Softplus(beta=100), nn.Linear(16, 1))
def functional_sdf(m, weights):
    torch, F = m.torch, m.F
    from_func = torch.func
    net = load(m, make_sdf_mlp(m), weights).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    def sdf(p, x):
        return from_func.functional_call(net, p, (x[None],))[0, 0]
    x = torch.tensor(np.random.default_rng(2).uniform(-1, 1, (6, 3)))
    normals = from_func.vmap(from_func.grad(sdf, argnums=1), in_dims=(None, 0))(params, x)
    hess = from_func.vmap(from_func.hessian(sdf, argnums=1), in_dims=(None, 0))(params, x)
    mean_curv = torch.diagonal(hess, dim1=-2, dim2=-1).sum(-1)
    def eik_loss(p):
        g = from_func.vmap(from_func.grad(sdf, argnums=1), in_dims=(None, 0))(p, x)
        return ((g.norm(dim=-1) - 1) ** 2).mean()
    g_params = from_func.grad(eik_loss)(params)
    # per-sample gradients of a loss w.r.t. the parameters
    def loss_one(p, xi):
        return (sdf(p, xi) - xi.norm() + 0.5) ** 2
    per_sample = from_func.vmap(from_func.grad(loss_one), in_dims=(None, 0))(params, x)
    # vmap over grid_sample: each image sampled at its own grid
    imgs = torch.tensor(np.random.default_rng(3).standard_normal((4, 2, 5, 6)))
    grids = torch.tensor(np.random.default_rng(4).uniform(-1, 1, (4, 3, 3, 2)))
    sampled = from_func.vmap(lambda im, g: F.grid_sample(im[None], g[None], align_corners=False)[0])(imgs, grids)
    direct = F.grid_sample(imgs, grids, align_corners=False)
    jac_grid = from_func.jacrev(lambda g: F.grid_sample(imgs[:1], g, mode="bilinear", padding_mode="border", align_corners=True).sum((0, 1)))(grids[:1])
    return normals, hess, mean_curv, g_params, per_sample, sampled, direct, jac_grid


def test_functional_sdf_derivatives():
    ours, _ = run_both(functional_sdf, weights_of(make_sdf_mlp), rtol=1e-8, atol=1e-10)
    normals, hess, mean_curv, g_params, per_sample, sampled, direct, jac_grid = ours
    np.testing.assert_allclose(hess, hess.transpose(0, 2, 1), atol=1e-10)
    np.testing.assert_allclose(sampled, direct, rtol=1e-12, atol=1e-14)
    assert jac_grid.shape == (3, 3, 1, 3, 3, 2)


# ----------------------------------------------------------------------------------------------
# Mesh regularisers as PyTorch3D writes them: unique edges, the uniform Laplacian as sparse COO tensors
# (torch.sparse.sum, sparse -= sparse, L.mm), edge-length and volume terms, vertex normals by index_add
# ----------------------------------------------------------------------------------------------


def icosphere():
    t = (1.0 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    return v / np.linalg.norm(v, axis=1, keepdims=True), f
def mesh_regularisers(m):
    torch = m.torch
    v0, f = icosphere()
    verts = torch.tensor(v0 * np.array([1.0, 0.8, 1.2]), requires_grad=True)
    faces = torch.tensor(f)
    V = verts.shape[0]
    def edges_packed(faces):
        e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
        e, _ = e.sort(dim=1)
        return torch.unique(e, dim=0)
    edges = edges_packed(faces)
    def laplacian_packed(V, edges):
        e0, e1 = edges.unbind(1)
        idx01 = torch.stack([e0, e1], dim=1)
        idx10 = torch.stack([e1, e0], dim=1)
        idx = torch.cat([idx01, idx10], dim=0).t()
        ones = torch.ones(idx.shape[1], dtype=torch.float64)
        A = torch.sparse_coo_tensor(idx, ones, (V, V))
        deg = torch.sparse.sum(A, dim=1).to_dense()
        deg0 = deg[e0]
        deg0 = torch.where(deg0 > 0.0, 1.0 / deg0, deg0)
        deg1 = deg[e1]
        deg1 = torch.where(deg1 > 0.0, 1.0 / deg1, deg1)
        val = torch.cat([deg0, deg1])
        L = torch.sparse_coo_tensor(idx, val, (V, V))
        idx = torch.arange(V)
        idx = torch.stack([idx, idx], dim=0)
        ones = torch.ones(idx.shape[1], dtype=torch.float64)
        L -= torch.sparse_coo_tensor(idx, ones, (V, V))
        return L
    L = laplacian_packed(V, edges)
    opt = torch.optim.SGD([verts], lr=0.5, momentum=0.9)
    hist = []
    for it in range(6):
        opt.zero_grad()
        lap = L.mm(verts)
        loss_lap = lap.norm(dim=1).mean()
        v0e, v1e = verts[edges].unbind(1)
        loss_edge = ((v0e - v1e).norm(dim=1, p=2) - 0.9).pow(2).mean()
        fv = verts[faces]
        n = torch.cross(fv[:, 1] - fv[:, 0], fv[:, 2] - fv[:, 0], dim=1)
        area = 0.5 * n.norm(dim=1)
        vol = (fv[:, 0] * torch.cross(fv[:, 1], fv[:, 2], dim=1)).sum() / 6
        loss = loss_lap + loss_edge + 0.1 * (vol - 3.0) ** 2
        loss.backward()
        opt.step()
        hist.append(loss.item())
    # vertex normals by index_add of face normals
    vn = torch.zeros_like(verts).index_add(0, faces[:, 0], n).index_add(0, faces[:, 1], n).index_add(0, faces[:, 2], n)
    vn = torch.nn.functional.normalize(vn, dim=1)
    # cotangent weights
    fv = verts[faces]
    A_, B_, C_ = fv.unbind(1)
    a = (B_ - C_).norm(dim=1); b = (A_ - C_).norm(dim=1); c = (A_ - B_).norm(dim=1)
    s = 0.5 * (a + b + c)
    area = (s * (s - a) * (s - b) * (s - c)).clamp_(min=1e-12).sqrt()
    cota = (b * b + c * c - a * a) / area / 4
    Ld = L.to_dense()
    return hist, verts.detach(), edges, Ld, vn.detach(), cota.detach(), area.sum().detach()


def test_mesh_laplacian_and_normals():
    ours, _ = run_both(mesh_regularisers, rtol=1e-9, atol=1e-11)
    hist, verts, edges, L, vn, cota, area = ours
    assert edges.shape == (30, 2)  # an icosahedron's 30 edges
    np.testing.assert_allclose(L.sum(1), 0, atol=1e-12)  # each row of the uniform Laplacian sums to zero
    np.testing.assert_allclose(np.diag(L), -1)
    np.testing.assert_allclose(np.linalg.norm(vn, axis=1), 1, atol=1e-12)
    assert hist[-1] < hist[0]


# ----------------------------------------------------------------------------------------------
# A Plenoxels-style voxel radiance field: trilinear 3-D grid_sample of densities (zeros, align_corners=True) and
# degree-2 spherical harmonics (border, align_corners=False), compositing with F.pad(value=1) and cumprod, an
# equirectangular environment map by bicubic grid_sample with reflection padding, 2x2 supersampling, total
# variation, RMSprop
# ----------------------------------------------------------------------------------------------


def voxel_radiance_field(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(0)
    R = 6
    density = torch.tensor(rng.uniform(0, 2, (1, 1, R, R, R)), requires_grad=True)
    sh = torch.tensor(rng.standard_normal((1, 27, R, R, R)) * 0.2, requires_grad=True)
    env = torch.tensor(rng.uniform(0, 1, (1, 3, 8, 16)), requires_grad=True)
    def eval_sh2(sh, d):  # sh: (..., 3, 9), d: (..., 3)
        C0 = 0.28209479177387814; C1 = 0.4886025119029199
        C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]
        x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
        xx, yy, zz = x * x, y * y, z * z
        res = C0 * sh[..., 0]
        res = res - C1 * y * sh[..., 1] + C1 * z * sh[..., 2] - C1 * x * sh[..., 3]
        res = (res + C2[0] * x * y * sh[..., 4] + C2[1] * y * z * sh[..., 5] + C2[2] * (2.0 * zz - xx - yy) * sh[..., 6]
               + C2[3] * x * z * sh[..., 7] + C2[4] * (xx - yy) * sh[..., 8])
        return res
    H, W, S = 4, 5, 12
    j, i = torch.meshgrid(torch.arange(H * 2, dtype=torch.float64), torch.arange(W * 2, dtype=torch.float64), indexing="ij")
    dirs = torch.stack([(i - W + 0.5) / (2 * W), (j - H + 0.5) / (2 * H), torch.ones_like(i)], -1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origin = torch.tensor([0.0, 0.0, -1.8], dtype=torch.float64)
    t = torch.linspace(0.9, 2.7, S, dtype=torch.float64)
    pts = origin + dirs[..., None, :] * t[:, None]  # (2H, 2W, S, 3)
    grid = pts.reshape(1, 1, -1, 1, 3)
    def render():
        sigma = F.grid_sample(density, grid, mode="bilinear", padding_mode="zeros", align_corners=True).reshape(2 * H, 2 * W, S)
        coef = F.grid_sample(sh, grid, mode="bilinear", padding_mode="border", align_corners=False).reshape(27, 2 * H, 2 * W, S)
        coef = coef.permute(1, 2, 3, 0).reshape(2 * H, 2 * W, S, 3, 9)
        rgb = torch.sigmoid(eval_sh2(coef, dirs[..., None, :].expand(-1, -1, S, -1)))
        delta = torch.diff(t, append=t[-1:] + 1e10)
        alpha = 1 - torch.exp(-F.relu(sigma) * delta)
        T = torch.cumprod(F.pad(1 - alpha + 1e-10, (1, 0), value=1.0), dim=-1)
        weights = alpha * T[..., :-1]
        # the environment map behind the volume, looked up by direction (equirectangular)
        theta = torch.atan2(dirs[..., 0], dirs[..., 2]) / np.pi
        phi = torch.acos(dirs[..., 1].clamp(-1 + 1e-7, 1 - 1e-7)) / np.pi * 2 - 1
        bg = F.grid_sample(env, torch.stack([theta, phi], -1)[None], mode="bicubic", padding_mode="reflection", align_corners=False)[0].permute(1, 2, 0)
        img = (weights[..., None] * rgb).sum(-2) + T[..., -1:] * bg
        # supersampled: 2x2 average down to H x W
        return F.avg_pool2d(img.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
    target = torch.tensor(rng.uniform(0, 1, (H, W, 3)))
    opt = torch.optim.RMSprop([density, sh, env], lr=1e-2)
    hist = []
    for it in range(4):
        opt.zero_grad()
        img = render()
        tv = (density[..., 1:, :, :] - density[..., :-1, :, :]).pow(2).mean() + (density[..., 1:, :] - density[..., :-1, :]).pow(2).mean() + (density[..., 1:] - density[..., :-1]).pow(2).mean()
        loss = F.mse_loss(img, target) + 1e-3 * tv
        loss.backward()
        opt.step()
        hist.append(loss.item())
    return hist, render().detach(), density.grad, sh.grad, env.grad


def test_voxel_radiance_field():
    ours, _ = run_both(voxel_radiance_field, rtol=1e-8, atol=1e-10)
    hist, img, g_density, g_sh, g_env = ours
    assert img.shape == (4, 5, 3) and hist[-1] < hist[0]
    assert np.abs(g_env).sum() > 0 and np.abs(g_density).sum() > 0


# ----------------------------------------------------------------------------------------------
# Projection Jacobians by torch.autograd.functional (reverse, forward-mode and vectorised), Hessian products,
# and Gauss-Newton bundle adjustment through lstsq (gelsd)
# ----------------------------------------------------------------------------------------------


def bundle_adjustment(m):
    torch = m.torch
    AF = torch.autograd.functional
    K = torch.tensor([[20., 0, 8], [0, 20, 6], [0, 0, 1]], dtype=torch.float64)
    def project(X, R):
        Xc = X @ R.T + torch.tensor([0., 0, 4], dtype=torch.float64)
        uvw = Xc @ K.T
        return uvw[..., :2] / uvw[..., 2:]
    X = torch.tensor(np.random.default_rng(0).standard_normal((4, 3)))
    R = torch.linalg.matrix_exp(torch.tensor([[0., -0.1, 0.2], [0.1, 0., -0.3], [-0.2, 0.3, 0.]], dtype=torch.float64))
    out = {}
    out["jac_rev"] = AF.jacobian(project, (X, R))
    out["jac_fwd"] = AF.jacobian(project, (X, R), vectorize=True, strategy="forward-mode")
    out["jac_vec"] = AF.jacobian(project, (X, R), vectorize=True)
    f = lambda X: project(X, R).pow(2).sum()
    out["hess"] = AF.hessian(f, X)
    out["hess_vec"] = AF.hessian(f, X, vectorize=True, outer_jacobian_strategy="forward-mode")
    v = torch.ones_like(X)
    out["vjp"] = AF.vjp(lambda X: project(X, R), X, torch.ones(4, 2, dtype=torch.float64))
    out["jvp"] = AF.jvp(lambda X: project(X, R), X, v)
    out["hvp"] = AF.hvp(f, X, v)
    out["vhp"] = AF.vhp(f, X, v)
    # Gauss-Newton bundle adjustment on the points with lstsq of the Jacobian
    obs = project(X, R).detach() + 0.5
    Xk = X.clone()
    for it in range(3):
        r = (project(Xk, R) - obs).reshape(-1)
        J = AF.jacobian(lambda Y: project(Y, R).reshape(-1), Xk).reshape(8, 12)
        delta = torch.linalg.lstsq(J, -r[:, None], driver="gelsd").solution[:, 0]
        Xk = Xk + delta.reshape(4, 3)
    out["ba"] = Xk
    out["resid"] = (project(Xk, R) - obs).abs().max()
    return out


def test_projection_jacobians_and_bundle_adjustment():
    ours, _ = run_both(bundle_adjustment, rtol=1e-8, atol=1e-10)
    for k in range(2):
        np.testing.assert_allclose(ours["jac_fwd"][k], ours["jac_rev"][k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours["jac_vec"][k], ours["jac_rev"][k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["hess_vec"], ours["hess"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["hvp"][1], ours["vhp"][1], rtol=1e-10)  # a symmetric Hessian
    assert ours["resid"] < 1e-8  # the points reproject onto the shifted observations


# ----------------------------------------------------------------------------------------------
# Rotation conversions as PyTorch3D's transforms write them: quaternion -> matrix, matrix -> quaternion through
# a masked-write square root, Tensor.max(tensor) as a floor, a one_hot mask selecting the best-conditioned
# candidate, an int64 sign tensor times a float quaternion, rotating points by quaternion products, Euler angles
# ----------------------------------------------------------------------------------------------


def rotation_conversions(m):
    torch, F = m.torch, m.F
    def quat_to_mat(q):
        w, x, y, z = q.unbind(-1)
        s = 2.0 / (q * q).sum(-1)
        rows = (1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
                s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
                s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y))
        return torch.stack(rows, -1).view(*q.shape[:-1], 3, 3)
    def safe_sqrt(v):
        out = torch.zeros_like(v)
        pos = v > 0
        out[pos] = torch.sqrt(v[pos])  # masked write: zero subgradient where v <= 0
        return out
    def mat_to_quat(R):
        lead = R.shape[:-2]
        r = R.reshape(*lead, 9).unbind(-1)
        a00, a01, a02, a10, a11, a12, a20, a21, a22 = r
        mags = safe_sqrt(torch.stack([1 + a00 + a11 + a22, 1 + a00 - a11 - a22, 1 - a00 + a11 - a22, 1 - a00 - a11 + a22], -1))
        cand = torch.stack([
            torch.stack([mags[..., 0] ** 2, a21 - a12, a02 - a20, a10 - a01], -1),
            torch.stack([a21 - a12, mags[..., 1] ** 2, a10 + a01, a02 + a20], -1),
            torch.stack([a02 - a20, a10 + a01, mags[..., 2] ** 2, a12 + a21], -1),
            torch.stack([a10 - a01, a20 + a02, a21 + a12, mags[..., 3] ** 2], -1)], -2)
        floor = torch.tensor(0.1).to(dtype=mags.dtype)
        cand = cand / (2.0 * mags[..., None].max(floor))
        best = F.one_hot(mags.argmax(-1), num_classes=4) > 0.5
        q = cand[best, :].reshape(*lead, 4)
        return torch.where(q[..., :1] < 0, -q, q)
    def conj(q):
        return q * torch.tensor([1, -1, -1, -1])
    def qmul(a, b):
        aw, ax, ay, az = a.unbind(-1); bw, bx, by, bz = b.unbind(-1)
        return torch.stack((aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                            aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw), -1)
    def rotate(q, p):
        pq = torch.cat([p.new_zeros(p.shape[:-1] + (1,)), p], -1)
        return qmul(qmul(q, pq), conj(q))[..., 1:]
    def euler_zyx(R):
        pitch = torch.asin(R[..., 2, 0] * -1.0)
        yaw = torch.atan2(R[..., 1, 0], R[..., 0, 0])
        roll = torch.atan2(R[..., 2, 1], R[..., 2, 2])
        return torch.stack([yaw, pitch, roll], -1)
    rng = np.random.default_rng(5)
    q0 = torch.tensor(rng.standard_normal((6, 4)))
    q0 = q0 / q0.norm(dim=-1, keepdim=True)
    q0[0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # the identity: three of the magnitudes are 0
    q0[1] = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)  # a half turn
    q = q0.clone().requires_grad_(True)
    R = quat_to_mat(q)
    q_back = mat_to_quat(R)
    pts = torch.tensor(rng.standard_normal((6, 5, 3)))
    rotated = rotate(q[:, None], pts)
    by_matrix = pts @ R.transpose(-1, -2)
    angles = euler_zyx(R[2:])
    loss = q_back.pow(2).sum() + rotated.sin().sum() + angles.cos().sum()
    g, = torch.autograd.grad(loss, q)
    # fit a rotation to point correspondences through the matrix -> quaternion round trip
    target = pts[2] @ quat_to_mat(torch.tensor([0.9, 0.1, -0.3, 0.2], dtype=torch.float64)).T
    param = torch.tensor([1.0, 0.0, 0.0, 0.05], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([param], lr=0.05)
    hist = []
    for it in range(20):
        opt.zero_grad()
        Rq = quat_to_mat(mat_to_quat(quat_to_mat(param)))
        l = (pts[2] @ Rq.T - target).pow(2).mean()
        l.backward()
        opt.step()
        hist.append(l.item())
    return q_back.detach(), rotated.detach(), by_matrix.detach(), angles.detach(), g, hist, R.detach()


def test_rotation_conversions():
    ours, _ = run_both(rotation_conversions, rtol=1e-9, atol=1e-11)
    q_back, rotated, by_matrix, angles, g, hist, R = ours
    rng = np.random.default_rng(5)
    q0 = rng.standard_normal((6, 4))
    q0 /= np.linalg.norm(q0, axis=-1, keepdims=True)
    q0[0], q0[1] = [1, 0, 0, 0], [0, 0, 1, 0]
    np.testing.assert_allclose(q_back, np.where(q0[:, :1] < 0, -q0, q0), atol=1e-12)
    np.testing.assert_allclose(rotated, by_matrix, atol=1e-12)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    assert hist[-1] < 0.1 * hist[0]


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


# ----------------------------------------------------------------------------------------------
# FoV perspective cameras: positions from distance/elevation/azimuth (deg2rad), look-at rotations with the
# degenerate straight-down case repaired by isclose/where, projection matrices filled by index writes, clip ->
# NDC -> screen, and unprojection through torch.inverse; gradients w.r.t. the camera parameters
# ----------------------------------------------------------------------------------------------


def fov_cameras(m):
    torch, F = m.torch, m.F
    def look_at_rotation(eye, at, up):
        z = F.normalize(at - eye, eps=1e-5)
        x = F.normalize(torch.cross(up, z, dim=1), eps=1e-5)
        y = F.normalize(torch.cross(z, x, dim=1), eps=1e-5)
        degenerate = torch.isclose(x, torch.tensor(0.0, dtype=x.dtype), atol=5e-3).all(dim=1, keepdim=True)
        if degenerate.any():
            fix = F.normalize(torch.cross(y, z, dim=1), eps=1e-5)
            x = torch.where(degenerate, fix, x)
        R = torch.cat((x[:, None, :], y[:, None, :], z[:, None, :]), dim=1)
        return R.transpose(1, 2)
    def camera_position(dist, elev, azim):
        elev, azim = torch.deg2rad(elev), torch.deg2rad(azim)
        return torch.stack([dist * torch.cos(elev) * torch.sin(azim), dist * torch.sin(elev), dist * torch.cos(elev) * torch.cos(azim)], dim=1)
    def fov_projection(znear, zfar, fov_deg, aspect=1.0):
        fov = math.pi / 180 * fov_deg
        t = torch.tan(fov / 2) * znear
        r = t * aspect
        K = torch.zeros((fov_deg.shape[0], 4, 4), dtype=torch.float64)
        K[:, 0, 0] = 2.0 * znear / (2 * r)
        K[:, 1, 1] = 2.0 * znear / (2 * t)
        K[:, 3, 2] = 1.0
        K[:, 2, 2] = zfar / (zfar - znear)
        K[:, 2, 3] = -(zfar * znear) / (zfar - znear)
        return K
    dist = torch.tensor([2.7, 3.0, 2.0], dtype=torch.float64, requires_grad=True)
    elev = torch.tensor([10.0, 90.0, -30.0], dtype=torch.float64, requires_grad=True)  # 90: looking straight down
    azim = torch.tensor([0.0, 45.0, 150.0], dtype=torch.float64, requires_grad=True)
    fov = torch.tensor([60.0, 45.0, 30.0], dtype=torch.float64, requires_grad=True)
    eye = camera_position(dist, elev, azim)
    up = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64).expand(3, 3)
    R = look_at_rotation(eye, torch.zeros_like(eye), up)
    T = -torch.bmm(R.transpose(1, 2), eye[:, :, None])[:, :, 0]
    P = fov_projection(torch.tensor(1.0, dtype=torch.float64), torch.tensor(100.0, dtype=torch.float64), fov)
    M = torch.zeros(3, 4, 4, dtype=torch.float64)
    M[:, :3, :3] = R
    M[:, 3, :3] = T
    M[:, 3, 3] = 1.0
    full = M @ P.transpose(1, 2)  # row-vector convention: points @ full
    pts = torch.tensor(np.random.default_rng(3).uniform(-0.5, 0.5, (3, 7, 3)))
    ph = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)
    clip = torch.bmm(ph, full)
    ndc = clip[..., :3] / clip[..., 3:]
    back = torch.bmm(torch.cat([ndc * clip[..., 3:], clip[..., 3:]], -1), torch.inverse(full))[..., :3]
    screen = (1.0 - ndc[..., :2]) * 0.5 * torch.tensor([64.0, 48.0], dtype=torch.float64)
    loss = screen.pow(2).mean() + ndc[..., 2].sum()
    grads = torch.autograd.grad(loss, [dist, elev, azim, fov])
    return R.detach(), T.detach(), ndc.detach(), back.detach(), pts, grads


def test_fov_cameras():
    ours, _ = run_both(fov_cameras, rtol=1e-9, atol=1e-10)
    R, T, ndc, back, pts, grads = ours
    # (the straight-down camera's repaired axes are not orthonormal: the look-at rule's own weakness, shared)
    upright = R[[0, 2]]
    np.testing.assert_allclose(upright @ upright.transpose(0, 2, 1), np.broadcast_to(np.eye(3), upright.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(upright), 1.0, atol=1e-12)
    np.testing.assert_allclose(back, pts, atol=1e-12)  # unprojecting the clip coordinates gives the points back
    assert (np.abs(ndc[0, :, :2]) < 1).all() and (ndc[..., 2] > 0).all()  # in the first camera's view, past znear


# ----------------------------------------------------------------------------------------------
# A chunked volume renderer under torch.utils.checkpoint (reentrant and not, the dropout mask's RNG state
# preserved for the rerun) and under saved_tensors_hooks
# ----------------------------------------------------------------------------------------------


def checkpointed_renderer(m):
    torch, F = m.torch, m.F
    from_cp = torch.utils.checkpoint
    rng = np.random.default_rng(1)
    vol = torch.tensor(rng.uniform(0, 1, (1, 4, 5, 5, 5)), requires_grad=True)
    rays = torch.tensor(rng.uniform(-1, 1, (64, 8, 3)))
    def render_chunk(vol, pts):
        feat = F.grid_sample(vol, pts[None, :, :, None, :], align_corners=True)[0, :, :, :, 0]  # (4, R, S)
        sigma = F.softplus(feat[0])
        rgb = torch.sigmoid(feat[1:]).permute(1, 2, 0)
        alpha = 1 - torch.exp(-sigma * 0.25)
        T = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
        w = alpha * T
        return (w[..., None] * rgb).sum(1), F.dropout(w.sum(1), 0.2, training=True)
    out = {}
    for mode in ("plain", "reentrant", "nonreentrant"):
        torch.manual_seed(0)
        if vol.grad is not None:
            vol.grad = None
        imgs, accs = [], []
        for chunk in rays.split(16):
            if mode == "plain":
                img, acc = render_chunk(vol, chunk)
            else:
                img, acc = from_cp.checkpoint(render_chunk, vol, chunk, use_reentrant=(mode == "reentrant"), preserve_rng_state=True)
            imgs.append(img); accs.append(acc)
        img = torch.cat(imgs); acc = torch.cat(accs)
        (img.pow(2).sum() + acc.sum()).backward()
        out[mode] = (img.detach(), acc.detach(), vol.grad.clone())
    # saved-tensor hooks that pack detached clones
    count = [0]
    def pack(t):
        count[0] += 1
        return t.detach().clone()
    def unpack(t):
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        img, acc = render_chunk(vol, rays[:8])
    g, = torch.autograd.grad(img.sum(), vol)
    out["hooks"] = g
    return out


def test_checkpointed_chunked_renderer():
    ours, _ = run_both(checkpointed_renderer, rtol=1e-9, atol=1e-11)
    for mode in ("reentrant", "nonreentrant"):  # recomputation changes nothing, dropout's mask included
        for a, b in zip(ours[mode], ours["plain"]):
            np.testing.assert_array_equal(a, b)
    assert np.abs(ours["hooks"]).sum() > 0
