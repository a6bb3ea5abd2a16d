# ruff: noqa: B006, B007, E501, E702, E731  (the programs are kept as their authors wrote them)
"""Differentiable rendering and geometry programs in plain PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and weights (float64 mostly, to about 1e-9; NeRF and the hash grid in
float32), comparing values, gradients and short optimisation trajectories, and checked by hand where they run alone.
Radiance fields: nerf-pytorch's NeRF (positional encoding, skips, ``raw2outputs``, ``sample_pdf`` by
``searchsorted``/``gather``, hierarchical sampling); Instant-NGP's hash encoding (int32 coordinates times overflowing
primes, XOR, masks, Embedding lookups); a Plenoxels-style voxel radiance field (3-D ``grid_sample`` of densities and
SH coefficients, an equirectangular environment map by bicubic ``grid_sample`` with reflection padding, 2x2
supersampling, total variation, RMSprop); a chunked volume renderer under ``utils.checkpoint`` (both kinds, dropout's
RNG state preserved) and ``saved_tensors_hooks``.

Every program agrees with PyTorch. What the probe found is pinned elsewhere: tests/test_avx_mathfun.py (randn's
float32 blocks of 16, an ulp off in one value in seven) and tests/test_probe21_render_fixes.py (shape refusals)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

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
