# ruff: noqa: B006, B008, E501, F841  (the programs are kept as their authors wrote them)
"""Differentiable rendering and geometry programs in plain PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and weights (float64 mostly, to about 1e-9; NeRF and the hash grid in
float32), comparing values, gradients and short optimisation trajectories, and checked by hand where they run alone.
Signed distance functions: sphere tracing a learnt SDF (a no_grad marching loop, normals by ``autograd.grad`` with
``create_graph``, an eikonal loss, rays from ``linalg.inv(K)``, look-at and quaternion cameras, reprojection by
``linalg.solve``); DeepSDF's auto-decoder (``weight_norm``, ``Embedding(max_norm=...)``, two parameter groups,
StepLR, ``clip_grad_norm_``); SDF derivatives the torch.func way (``functional_call``, ``vmap`` of
``grad``/``hessian``, per-sample gradients, ``vmap`` over ``grid_sample``, ``jacrev`` w.r.t. the grid).

Every program agrees with PyTorch. What the probe found is pinned elsewhere: tests/test_avx_mathfun.py (randn's
float32 blocks of 16, an ulp off in one value in seven) and tests/test_probe21_render_fixes.py (shape refusals)."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

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
