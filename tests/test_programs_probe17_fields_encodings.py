# ruff: noqa: B007, F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Neural fields and differentiable rendering (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and data, comparing losses, outputs and gradients. Field encodings: instant-ngp's
multiresolution hash encoding (integer corners hashed by ``*`` with primes and ``^=``, masked by ``&``, trilinear
interpolation by hand, ``nn.Embedding`` tables, Adam with per-group learning rates, eps=1e-15); a Fourier-feature
network; tri-plane features by ``F.grid_sample`` with a TV loss; TensoRF's vector-matrix factorisation (upsampled by
``F.interpolate``, new optimiser); K-planes."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# instant-ngp: multiresolution hash encoding + tiny MLP, Adam with per-group learning rates
# ----------------------------------------------------------------------------------------------


def hash_net(m, n_levels=4, n_features=2, log2_hashmap_size=6, base_resolution=2, finest_resolution=16):
    torch, nn = m.torch, m.nn

    BOX_OFFSETS = torch.tensor([[[i, j, k] for i in [0, 1] for j in [0, 1] for k in [0, 1]]])

    def hash(coords, log2_hashmap_size):
        """coords: this function can process upto 7 dim coordinates; log2T: logarithm of T w.r.t 2"""
        primes = [1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737]
        xor_result = torch.zeros_like(coords)[..., 0]
        for i in range(coords.shape[-1]):
            xor_result ^= coords[..., i] * primes[i]
        return torch.tensor((1 << log2_hashmap_size) - 1).to(xor_result.device) & xor_result

    def get_voxel_vertices(xyz, bounding_box, resolution, log2_hashmap_size):
        box_min, box_max = bounding_box
        keep_mask = xyz == torch.max(torch.min(xyz, box_max), box_min)
        if not torch.all(xyz <= box_max) or not torch.all(xyz >= box_min):
            xyz = torch.clamp(xyz, min=box_min, max=box_max)
        grid_size = (box_max - box_min) / resolution
        bottom_left_idx = torch.floor((xyz - box_min) / grid_size).int()
        voxel_min_vertex = bottom_left_idx * grid_size + box_min
        voxel_max_vertex = voxel_min_vertex + torch.tensor([1.0, 1.0, 1.0], dtype=xyz.dtype) * grid_size
        voxel_indices = bottom_left_idx.unsqueeze(1) + BOX_OFFSETS
        hashed_voxel_indices = hash(voxel_indices, log2_hashmap_size)
        return voxel_min_vertex, voxel_max_vertex, hashed_voxel_indices, keep_mask

    class HashEmbedder(nn.Module):
        def __init__(self, bounding_box, n_levels=16, n_features_per_level=2, log2_hashmap_size=19,
                     base_resolution=16, finest_resolution=512):
            super(HashEmbedder, self).__init__()
            self.bounding_box = bounding_box
            self.n_levels = n_levels
            self.n_features_per_level = n_features_per_level
            self.log2_hashmap_size = log2_hashmap_size
            self.base_resolution = torch.tensor(base_resolution)
            self.finest_resolution = torch.tensor(finest_resolution)
            self.out_dim = self.n_levels * self.n_features_per_level
            self.b = torch.exp((torch.log(self.finest_resolution) - torch.log(self.base_resolution)) / (n_levels - 1))
            self.embeddings = nn.ModuleList([nn.Embedding(2 ** self.log2_hashmap_size, self.n_features_per_level)
                                             for i in range(n_levels)])
            for i in range(n_levels):
                nn.init.uniform_(self.embeddings[i].weight, a=-0.0001, b=0.0001)

        def trilinear_interp(self, x, voxel_min_vertex, voxel_max_vertex, voxel_embedds):
            weights = (x - voxel_min_vertex) / (voxel_max_vertex - voxel_min_vertex)  # B x 3
            c00 = voxel_embedds[:, 0] * (1 - weights[:, 0][:, None]) + voxel_embedds[:, 4] * weights[:, 0][:, None]
            c01 = voxel_embedds[:, 1] * (1 - weights[:, 0][:, None]) + voxel_embedds[:, 5] * weights[:, 0][:, None]
            c10 = voxel_embedds[:, 2] * (1 - weights[:, 0][:, None]) + voxel_embedds[:, 6] * weights[:, 0][:, None]
            c11 = voxel_embedds[:, 3] * (1 - weights[:, 0][:, None]) + voxel_embedds[:, 7] * weights[:, 0][:, None]
            c0 = c00 * (1 - weights[:, 1][:, None]) + c10 * weights[:, 1][:, None]
            c1 = c01 * (1 - weights[:, 1][:, None]) + c11 * weights[:, 1][:, None]
            c = c0 * (1 - weights[:, 2][:, None]) + c1 * weights[:, 2][:, None]
            return c

        def forward(self, x):
            x_embedded_all = []
            for i in range(self.n_levels):
                resolution = torch.floor(self.base_resolution * self.b ** i)
                voxel_min_vertex, voxel_max_vertex, hashed_voxel_indices, keep_mask = get_voxel_vertices(
                    x, self.bounding_box, resolution, self.log2_hashmap_size)
                voxel_embedds = self.embeddings[i](hashed_voxel_indices)
                x_embedded = self.trilinear_interp(x, voxel_min_vertex, voxel_max_vertex, voxel_embedds)
                x_embedded_all.append(x_embedded)
            keep_mask = keep_mask.sum(dim=-1) == keep_mask.shape[-1]
            return torch.cat(x_embedded_all, dim=-1), keep_mask

    class NGP(nn.Module):
        def __init__(self):
            super().__init__()
            box = (torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([1.0, 1.0, 1.0]))
            self.embed = HashEmbedder(box, n_levels, n_features, log2_hashmap_size, base_resolution,
                                      finest_resolution)
            self.mlp = nn.Sequential(nn.Linear(self.embed.out_dim, 16, bias=False), nn.ReLU(),
                                     nn.Linear(16, 1, bias=False))

        def forward(self, x):
            h, keep = self.embed(x)
            return self.mlp(h).squeeze(-1), keep

    return NGP()


def hash_grid(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    model = load(m, hash_net(m), weights)
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.uniform(-1.1, 1.1, (64, 3)).astype(np.float32))
    target = torch.tensor(np.sin(3 * rng.uniform(-1, 1, 64)).astype(np.float32))
    optimizer = optim.Adam([{"params": model.embed.parameters(), "lr": 1e-1},
                            {"params": model.mlp.parameters(), "lr": 1e-2, "weight_decay": 1e-6}],
                           betas=(0.9, 0.99), eps=1e-15)
    history = []
    for step in range(steps):
        pred, keep = model(x)
        loss = ((pred - target) ** 2 * keep).sum() / keep.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "keep": keep, "pred": pred.detach(),
            "grads": [p.grad for p in model.parameters()], "tables": [p.detach() for p in model.embed.parameters()]}


def test_hash_grid_encoding_with_tiny_mlp():
    weights = weights_of(hash_net)
    ours, _ = run_both(hash_grid, weights, rtol=2e-4, atol=1e-6)
    # points outside the box are clamped in and masked out of the loss
    x = np.random.default_rng(3).uniform(-1.1, 1.1, (64, 3))
    np.testing.assert_array_equal(ours["keep"], np.all(np.abs(x) <= 1, axis=1))
    assert ours["history"][-1] < ours["history"][0]


def test_hash_of_integer_corners_by_hand():
    """The spatial hash is xor of coordinate * prime in int64 (wrapping), masked to the table size."""
    torch = OURS.torch
    coords = np.array([[3, 5, 7], [0, 0, 1], [15, 15, 15]])
    primes = [1, 2654435761, 805459861]
    xor = torch.zeros_like(torch.tensor(coords))[..., 0]
    for i in range(3):
        xor ^= torch.tensor(coords)[..., i] * primes[i]
    got = (torch.tensor((1 << 6) - 1) & xor).numpy()
    want = np.array([(int(c[0]) ^ (int(c[1]) * primes[1]) ^ (int(c[2]) * primes[2])) & 63 for c in coords])
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# Fourier-feature network (Tancik et al.): random Gaussian features, image regression, PSNR
# ----------------------------------------------------------------------------------------------


def fourier_net(m, mapping_size=16, scale=10.0):
    torch, nn = m.torch, m.nn

    class GaussianFourierFeatureTransform(nn.Module):
        def __init__(self, num_input_channels, mapping_size=256, scale=10):
            super().__init__()
            self._num_input_channels = num_input_channels
            self._mapping_size = mapping_size
            self.register_buffer("_B", torch.randn((num_input_channels, mapping_size)) * scale)

        def forward(self, x):
            assert x.dim() == 4, 'Expected 4D input (got {}D input)'.format(x.dim())
            batches, channels, width, height = x.shape
            assert channels == self._num_input_channels, \
                "Expected input to have {} channels (got {} channels)".format(self._num_input_channels, channels)
            x = x.permute(0, 2, 3, 1).reshape(batches * width * height, channels)
            x = x @ self._B.to(x.device)
            x = x.view(batches, width, height, self._mapping_size)
            x = x.permute(0, 3, 1, 2)
            x = 2 * np.pi * x
            return torch.cat([torch.sin(x), torch.cos(x)], dim=1)

    return nn.Sequential(
        GaussianFourierFeatureTransform(2, mapping_size, scale),
        nn.Conv2d(2 * mapping_size, 16, kernel_size=1, padding=0), nn.ReLU(), nn.BatchNorm2d(16),
        nn.Conv2d(16, 16, kernel_size=1, padding=0), nn.ReLU(), nn.BatchNorm2d(16),
        nn.Conv2d(16, 3, kernel_size=1, padding=0), nn.Sigmoid())


def fourier_features(m, weights, steps=5):
    torch, optim = m.torch, m.optim
    model = load(m, fourier_net(m), weights).double()
    side = 8
    coords = np.linspace(0, 1, side, endpoint=False)
    xy_grid = np.stack(np.meshgrid(coords, coords), -1)
    tensor = torch.tensor(xy_grid).unsqueeze(0).permute(0, 3, 1, 2).double()
    rng = np.random.default_rng(7)
    target = torch.tensor(rng.uniform(0, 1, (1, 3, side, side)))
    optimizer = torch.optim.Adam(list(model.parameters()), lr=1e-2)
    history = []
    for epoch in range(steps):
        optimizer.zero_grad()
        generated = model(tensor)
        loss = torch.nn.functional.l1_loss(target, generated)
        loss.backward()
        optimizer.step()
        psnr = -10 * torch.log10(torch.mean((generated - target) ** 2))
        history.append((loss.item(), psnr.item()))
    model.eval()
    with torch.no_grad():
        final = model(tensor)
    return {"history": history, "final": final, "grads": [p.grad for p in model.parameters()],
            "running": [b for n, b in model.named_buffers() if "running" in n]}


def test_fourier_feature_network_image_regression():
    weights = weights_of(fourier_net)
    ours, _ = run_both(fourier_features, weights, rtol=1e-8, atol=1e-10)
    assert ours["final"].shape == (1, 3, 8, 8)
    assert ours["history"][-1][0] < ours["history"][0][0]


# ----------------------------------------------------------------------------------------------
# Tri-plane features sampled by grid_sample, summed, decoded by an MLP; TV regulariser on the planes
# ----------------------------------------------------------------------------------------------


def triplane_net(m, C=4, R=6):
    torch, nn = m.torch, m.nn

    class TriPlane(nn.Module):
        def __init__(self):
            super().__init__()
            self.planes = nn.Parameter(torch.randn(3, C, R, R) * 0.1)
            self.decoder = nn.Sequential(nn.Linear(C, 16), nn.Softplus(), nn.Linear(16, 4))

        def sample_plane(self, coords2d, plane):
            # coords2d: N x 2 in [-1, 1]; grid_sample wants 1 x 1 x N x 2
            feat = m.F.grid_sample(plane.unsqueeze(0), coords2d[None, None], mode="bilinear",
                                   padding_mode="border", align_corners=False)
            return feat[0, :, 0].T

        def forward(self, x):
            xy, xz, yz = x[:, [0, 1]], x[:, [0, 2]], x[:, [1, 2]]
            feats = self.sample_plane(xy, self.planes[0]) + self.sample_plane(xz, self.planes[1]) \
                + self.sample_plane(yz, self.planes[2])
            out = self.decoder(feats)
            return torch.sigmoid(out[:, :3]), torch.nn.functional.softplus(out[:, 3])

    return TriPlane()


def tv_loss(torch, planes):
    batch_size, c, h, w = planes.shape
    count_h = batch_size * c * (h - 1) * w
    count_w = batch_size * c * h * (w - 1)
    h_tv = torch.square(planes[..., 1:, :] - planes[..., :h - 1, :]).sum()
    w_tv = torch.square(planes[..., :, 1:] - planes[..., :, :w - 1]).sum()
    return 2 * (h_tv / count_h + w_tv / count_w)


def triplane(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    model = load(m, triplane_net(m), weights).double()
    rng = np.random.default_rng(11)
    x = torch.tensor(rng.uniform(-1.2, 1.2, (40, 3)))
    rgb_t = torch.tensor(rng.uniform(0, 1, (40, 3)))
    sigma_t = torch.tensor(rng.uniform(0, 2, 40))
    optimizer = optim.Adam([{"params": [model.planes], "lr": 5e-2},
                            {"params": model.decoder.parameters(), "lr": 1e-2}])
    history = []
    for step in range(steps):
        rgb, sigma = model(x)
        loss = torch.nn.functional.mse_loss(rgb, rgb_t) + torch.nn.functional.smooth_l1_loss(sigma, sigma_t) \
            + 1e-2 * tv_loss(torch, model.planes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "planes_grad": model.planes.grad, "rgb": rgb.detach(), "sigma": sigma.detach(),
            "grads": [p.grad for p in model.decoder.parameters()]}


def test_triplane_grid_sample_with_tv_loss():
    weights = weights_of(triplane_net)
    ours, _ = run_both(triplane, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]


def test_tv_loss_by_hand():
    planes = np.arange(2 * 1 * 3 * 3, dtype=np.float64).reshape(2, 1, 3, 3) ** 1.5
    got = tv_loss(OURS.torch, OURS.torch.tensor(planes)).item()
    h = ((planes[..., 1:, :] - planes[..., :-1, :]) ** 2).sum() / (2 * 2 * 3)
    w = ((planes[..., :, 1:] - planes[..., :, :-1]) ** 2).sum() / (2 * 3 * 2)
    assert got == pytest.approx(2 * (h + w), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# TensoRF: vector-matrix decomposition of a density grid, upsampled mid-training
# ----------------------------------------------------------------------------------------------


def tensorf(m, steps=4, upsample_at=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(13)

    class TensorVM(nn.Module):
        def __init__(self, gridSize, n_comp=3):
            super().__init__()
            self.matMode = [[0, 1], [0, 2], [1, 2]]
            self.vecMode = [2, 1, 0]
            self.n_comp = n_comp
            self.init_svd_volume(gridSize)

        def init_one_svd(self, n_component, gridSize, scale):
            plane_coef, line_coef = [], []
            for i in range(len(self.vecMode)):
                vec_id = self.vecMode[i]
                mat_id_0, mat_id_1 = self.matMode[i]
                plane = rng.standard_normal((1, n_component, gridSize[mat_id_1], gridSize[mat_id_0]))
                plane_coef.append(torch.nn.Parameter(scale * torch.tensor(plane)))
                line_coef.append(torch.nn.Parameter(
                    scale * torch.tensor(rng.standard_normal((1, n_component, gridSize[vec_id], 1)))))
            return torch.nn.ParameterList(plane_coef), torch.nn.ParameterList(line_coef)

        def init_svd_volume(self, res):
            self.density_plane, self.density_line = self.init_one_svd(self.n_comp, res, 0.1)

        def get_optparam_groups(self, lr_init_spatialxyz=0.02):
            return [{'params': self.density_line, 'lr': lr_init_spatialxyz},
                    {'params': self.density_plane, 'lr': lr_init_spatialxyz * 2}]

        def compute_densityfeature(self, xyz_sampled):
            coordinate_plane = torch.stack((xyz_sampled[..., self.matMode[0]], xyz_sampled[..., self.matMode[1]],
                                            xyz_sampled[..., self.matMode[2]])).detach().view(3, -1, 1, 2)
            coordinate_line = torch.stack((xyz_sampled[..., self.vecMode[0]], xyz_sampled[..., self.vecMode[1]],
                                           xyz_sampled[..., self.vecMode[2]]))
            coordinate_line = torch.stack((torch.zeros_like(coordinate_line), coordinate_line),
                                          dim=-1).detach().view(3, -1, 1, 2)
            sigma_feature = torch.zeros((xyz_sampled.shape[0],), device=xyz_sampled.device, dtype=torch.float64)
            for idx_plane in range(len(self.density_plane)):
                plane_coef_point = F.grid_sample(self.density_plane[idx_plane], coordinate_plane[[idx_plane]],
                                                 align_corners=True).view(-1, *xyz_sampled.shape[:1])
                line_coef_point = F.grid_sample(self.density_line[idx_plane], coordinate_line[[idx_plane]],
                                                align_corners=True).view(-1, *xyz_sampled.shape[:1])
                sigma_feature = sigma_feature + torch.sum(plane_coef_point * line_coef_point, dim=0)
            return sigma_feature

        @torch.no_grad()
        def up_sampling_VM(self, plane_coef, line_coef, res_target):
            for i in range(len(self.vecMode)):
                vec_id = self.vecMode[i]
                mat_id_0, mat_id_1 = self.matMode[i]
                plane_coef[i] = torch.nn.Parameter(
                    F.interpolate(plane_coef[i].data, size=(res_target[mat_id_1], res_target[mat_id_0]),
                                  mode='bilinear', align_corners=True))
                line_coef[i] = torch.nn.Parameter(
                    F.interpolate(line_coef[i].data, size=(res_target[vec_id], 1), mode='bilinear',
                                  align_corners=True))
            return plane_coef, line_coef

        @torch.no_grad()
        def upsample_volume_grid(self, res_target):
            self.density_plane, self.density_line = self.up_sampling_VM(self.density_plane, self.density_line,
                                                                        res_target)

        def vector_comp_diffs(self):
            total = 0
            for idx in range(len(self.density_line)):
                n_comp, n_size = self.density_line[idx].shape[1:-1]
                dotp = torch.matmul(self.density_line[idx].view(n_comp, n_size),
                                    self.density_line[idx].view(n_comp, n_size).transpose(-1, -2))
                non_diagonal = dotp.view(-1)[1:].view(n_comp - 1, n_comp + 1)[..., :-1]
                total = total + torch.mean(torch.abs(non_diagonal))
            return total

        def density_L1(self):
            total = 0
            for idx in range(len(self.density_plane)):
                total = total + torch.mean(torch.abs(self.density_plane[idx])) + torch.mean(
                    torch.abs(self.density_line[idx]))
            return total

    model = TensorVM([5, 6, 7])
    xyz = torch.tensor(rng.uniform(-1, 1, (50, 3)))
    target = torch.tensor(rng.uniform(0, 1, 50))
    optimizer = torch.optim.Adam(model.get_optparam_groups(), betas=(0.9, 0.99))
    history, shapes = [], []
    for it in range(steps):
        if it == upsample_at:
            model.upsample_volume_grid([8, 9, 10])
            optimizer = torch.optim.Adam(model.get_optparam_groups(), betas=(0.9, 0.99))
        sigma = F.softplus(model.compute_densityfeature(xyz) - 1)
        loss = torch.mean((sigma - target) ** 2) + 1e-3 * model.vector_comp_diffs() + 1e-4 * model.density_L1()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        shapes.append([tuple(p.shape) for p in model.parameters()])
    return {"history": history, "shapes": str(shapes), "sigma": sigma.detach(),
            "grads": [p.grad for p in model.parameters()], "params": [p.detach() for p in model.parameters()]}


def test_tensorf_vm_decomposition_with_upsampling():
    ours, _ = run_both(tensorf, rtol=1e-8, atol=1e-10)
    assert "(1, 3, 10, 8)" in ours["shapes"] and "(1, 3, 10, 1)" in ours["shapes"]


# ----------------------------------------------------------------------------------------------
# K-planes: six planes over (x, y, z, t) at two scales, features multiplied across planes and
# concatenated across scales, with the time-smoothness (second difference) and plane-TV regularisers
# ----------------------------------------------------------------------------------------------


def kplanes(m, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(43)

    def grid_sample_wrapper(grid, coords, align_corners=True):
        grid_dim = coords.shape[-1]
        if grid.dim() == grid_dim + 1:
            grid = grid.unsqueeze(0)
        if coords.dim() == 2:
            coords = coords.unsqueeze(0)
        if grid_dim == 2 or grid_dim == 3:
            grid_sampler = F.grid_sample
        else:
            raise NotImplementedError(f"Grid-sample was called with {grid_dim}D data but is only "
                                      f"implemented for 2 and 3D data.")
        coords = coords.view([coords.shape[0]] + [1] * (grid_dim - 1) + list(coords.shape[1:]))
        B, feature_dim = grid.shape[:2]
        n = coords.shape[-2]
        interp = grid_sampler(grid, coords, align_corners=align_corners, mode='bilinear', padding_mode='border')
        interp = interp.view(B, feature_dim, n).transpose(-1, -2)
        interp = interp.squeeze()
        return interp

    import itertools as it

    def init_grid_param(grid_nd, in_dim, out_dim, reso, a=0.1, b=0.5):
        has_time_planes = in_dim == 4
        coo_combs = list(it.combinations(range(in_dim), grid_nd))
        grid_coefs = nn.ParameterList()
        for ci, coo_comb in enumerate(coo_combs):
            new_grid_coef = nn.Parameter(torch.empty([1, out_dim] + [reso[cc] for cc in coo_comb[::-1]],
                                                     dtype=torch.float64))
            if has_time_planes and 3 in coo_comb:
                nn.init.ones_(new_grid_coef)
            else:
                with torch.no_grad():
                    new_grid_coef.copy_(torch.tensor(rng.uniform(a, b, tuple(new_grid_coef.shape))))
            grid_coefs.append(new_grid_coef)
        return grid_coefs

    def interpolate_ms_features(pts, ms_grids, grid_dimensions, concat_features, num_levels):
        coo_combs = list(it.combinations(range(pts.shape[-1]), grid_dimensions))
        if num_levels is None:
            num_levels = len(ms_grids)
        multi_scale_interp = [] if concat_features else 0.
        for scale_id, grid in enumerate(ms_grids[:num_levels]):
            interp_space = 1.
            for ci, coo_comb in enumerate(coo_combs):
                feature_dim = grid[ci].shape[1]
                interp_out_plane = grid_sample_wrapper(grid[ci], pts[..., coo_comb]).view(-1, feature_dim)
                interp_space = interp_space * interp_out_plane
            if concat_features:
                multi_scale_interp.append(interp_space)
            else:
                multi_scale_interp = multi_scale_interp + interp_space
        if concat_features:
            multi_scale_interp = torch.cat(multi_scale_interp, dim=-1)
        return multi_scale_interp

    def compute_plane_tv(t):
        batch_size, c, h, w = t.shape
        count_h = batch_size * c * (h - 1) * w
        count_w = batch_size * c * h * (w - 1)
        h_tv = torch.square(t[..., 1:, :] - t[..., :h - 1, :]).sum()
        w_tv = torch.square(t[..., :, 1:] - t[..., :, :w - 1]).sum()
        return 2 * (h_tv / count_h + w_tv / count_w)

    def compute_plane_smoothness(t):
        batch_size, c, h, w = t.shape
        first_difference = t[..., 1:, :] - t[..., :h - 1, :]
        second_difference = first_difference[..., 1:, :] - first_difference[..., :h - 2, :]
        return torch.square(second_difference).mean()

    class KPlaneField(nn.Module):
        def __init__(self, multiscale_res=(1, 2), base_reso=(4, 4, 4, 5), out_dim=4):
            super().__init__()
            self.grids = nn.ModuleList()
            for res in multiscale_res:
                reso = [r * res for r in base_reso[:3]] + list(base_reso[3:])
                self.grids.append(init_grid_param(2, 4, out_dim, reso))
            self.sigma_net = nn.Sequential(nn.Linear(out_dim * len(multiscale_res), 16), nn.ReLU(),
                                           nn.Linear(16, 4)).double()

        def forward(self, pts, timestamps):
            pts = torch.cat((pts, timestamps[:, None]), dim=-1)
            features = interpolate_ms_features(pts, ms_grids=self.grids, grid_dimensions=2,
                                               concat_features=True, num_levels=None)
            out = self.sigma_net(features)
            return torch.sigmoid(out[:, :3]), F.softplus(out[:, 3])

    torch.manual_seed(0)
    field = KPlaneField()
    with torch.no_grad():
        for p in field.sigma_net.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)) * 0.3))
    pts = torch.tensor(rng.uniform(-1, 1, (30, 3)))
    times = torch.tensor(rng.uniform(-1, 1, 30))
    target = torch.tensor(rng.uniform(0, 1, (30, 3)))
    optimizer = optim.Adam([{"params": field.grids.parameters(), "lr": 1e-2},
                            {"params": field.sigma_net.parameters(), "lr": 1e-3}], eps=1e-15)
    history = []
    for step in range(steps):
        rgb, sigma = field(pts, times)
        loss = F.mse_loss(rgb * (1 - torch.exp(-sigma))[:, None], target)
        for grids in field.grids:
            for grid_id, grid in enumerate(grids):
                if grid_id in (2, 4, 5):  # time planes: (x,t), (y,t), (z,t)
                    loss = loss + 1e-3 * compute_plane_smoothness(grid)
                else:
                    loss = loss + 2e-4 * compute_plane_tv(grid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "rgb": rgb.detach(), "sigma": sigma.detach(),
            "grads": [p.grad for p in field.parameters()]}


def test_kplanes_multiscale_space_time_planes():
    ours, _ = run_both(kplanes, rtol=1e-8, atol=1e-10)
    assert len(ours["grads"]) == 2 * 6 + 4
    assert ours["history"][-1] < ours["history"][0]
