# ruff: noqa: B006, B007, B008, B023, E701, E741, E731, F841, UP004, UP008, UP031, UP032, UP034, UP039  (the programs are kept as their authors wrote them)
"""Neural fields and differentiable rendering (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing losses, outputs and gradients.

instant-ngp's multiresolution hash encoding (integer corners hashed by ``*`` with primes and ``^=``, masked by
``&``, trilinear interpolation by hand, ``nn.Embedding`` tables, Adam with per-group learning rates, eps=1e-15);
IGR / DeepSDF-style SDF fitting with geometric initialisation, a skip connection and ``Softplus(beta=100)``, the
eikonal and normal losses (double backward); a Fourier-feature network; tri-plane features by ``F.grid_sample``
with a TV loss; TensoRF's vector-matrix factorisation (upsampled by ``F.interpolate``, new optimiser); NeRF as
nerf-pytorch writes it (rays from a meshgrid, NDC rays, view directions, skips, white background, a decaying
learning rate) and its training loop on PyTorch's random draws (randperm batching, stratified ``torch.rand``,
density noise, ``sample_pdf(det=False)``, chunked no_grad rendering); soft splatting by
``index_put_(accumulate=True)`` and ``scatter_add``; 2D Gaussian splatting of an image; 3D Gaussian splatting's
densification and pruning, which rewrites Adam's state; NeuS (weight norm, learnt variance, up-sampling by
inverse CDF merged with ``sort`` and advanced indexing); nerfacc-style packed rendering (``repeat_interleave``,
``index_add_``, segmented cumsum); mip-NeRF 360 (integrated positional encoding, contraction, interlevel and
distortion losses); K-planes; Occupancy Networks with conditional batch norm; DVGO's dense grids (5-D
``grid_sample``, trilinear upscaling, ``max_pool3d`` mask); SDF normals and curvature by ``torch.func``; BARF's
pose refinement (se(3) by Taylor series, an in-place coarse-to-fine chain); DeepSDF's auto-decoder
(``Embedding(max_norm)``); torch-ngp's custom autograd Functions with checkpointing and hooks; IDR's sphere
tracing with implicit differentiation and mask loss; Convolutional Occupancy Networks (scatter_reduce mean into a
voxel grid, a 3-D U-Net, 5-D grid_sample); and LLFF's NumPy-built poses through ``torch.Tensor(...)``
(a strict xfail: the legacy constructor keeps float64 here)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, same_dropout_masks, weights_of

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
# IGR / DeepSDF: geometric initialisation, skip connection, Softplus(beta=100), eikonal loss
# ----------------------------------------------------------------------------------------------


def igr_net(m):
    torch, nn = m.torch, m.nn

    class ImplicitNet(nn.Module):
        def __init__(self, d_in, dims, skip_in=(), geometric_init=True, radius_init=1, beta=100):
            super().__init__()
            dims = [d_in] + dims + [1]
            self.num_layers = len(dims)
            self.skip_in = skip_in
            for layer in range(0, self.num_layers - 1):
                if layer + 1 in skip_in:
                    out_dim = dims[layer + 1] - d_in
                else:
                    out_dim = dims[layer + 1]
                lin = nn.Linear(dims[layer], out_dim)
                if geometric_init:
                    if layer == self.num_layers - 2:
                        torch.nn.init.normal_(lin.weight, mean=np.sqrt(np.pi) / np.sqrt(dims[layer]), std=0.00001)
                        torch.nn.init.constant_(lin.bias, -radius_init)
                    else:
                        torch.nn.init.constant_(lin.bias, 0.0)
                        torch.nn.init.normal_(lin.weight, 0.0, np.sqrt(2) / np.sqrt(out_dim))
                setattr(self, "lin" + str(layer), lin)
            if beta > 0:
                self.activation = nn.Softplus(beta=beta)
            else:
                self.activation = nn.ReLU()

        def forward(self, input):
            x = input
            for layer in range(0, self.num_layers - 1):
                lin = getattr(self, "lin" + str(layer))
                if layer in self.skip_in:
                    x = torch.cat([x, input], -1) / np.sqrt(2)
                x = lin(x)
                if layer < self.num_layers - 2:
                    x = self.activation(x)
            return x

    return ImplicitNet(3, [16, 16, 16, 16], skip_in=(2,))


def igr(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    model = load(m, igr_net(m), weights).double()
    rng = np.random.default_rng(5)
    pts = rng.standard_normal((48, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    normals = torch.from_numpy(pts.copy())
    pnts = torch.from_numpy(pts * 0.8).requires_grad_()
    local_sigma = torch.from_numpy(np.full((48, 1), 0.05))

    def gradient(inputs, outputs):
        d_points = torch.ones_like(outputs, requires_grad=False, device=outputs.device)
        points_grad = torch.autograd.grad(outputs=outputs, inputs=inputs, grad_outputs=d_points,
                                          create_graph=True, retain_graph=True, only_inputs=True)[0][:, -3:]
        return points_grad

    optimizer = optim.Adam([{"params": model.parameters(), "lr": 5e-3, "weight_decay": 0}])
    history = []
    noise = [torch.from_numpy(rng.standard_normal((48, 3))) for _ in range(steps)]
    glob = [torch.from_numpy(rng.uniform(-1.2, 1.2, (12, 3))) for _ in range(steps)]
    for step in range(steps):
        sample_local = pnts.detach() + noise[step] * local_sigma
        nonmnfld_pnts = torch.cat([sample_local, glob[step]], dim=0).requires_grad_()
        mnfld_pred = model(pnts)
        nonmnfld_pred = model(nonmnfld_pnts)
        mnfld_grad = gradient(pnts, mnfld_pred)
        nonmnfld_grad = gradient(nonmnfld_pnts, nonmnfld_pred)
        mnfld_loss = (mnfld_pred.abs()).mean()
        grad_loss = ((nonmnfld_grad.norm(2, dim=-1) - 1) ** 2).mean()
        loss = mnfld_loss + 0.1 * grad_loss
        normals_loss = ((mnfld_grad - normals).abs()).norm(2, dim=1).mean()
        loss = loss + 1.0 * normals_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), mnfld_loss.item(), grad_loss.item(), normals_loss.item()))
    return {"history": history, "grads": [p.grad for p in model.parameters()], "pnts_grad": pnts.grad,
            "sdf": model(torch.zeros(1, 3, dtype=torch.float64)).detach()}


def test_igr_sdf_with_eikonal_and_normal_losses():
    weights = weights_of(igr_net)
    ours, _ = run_both(igr, weights, rtol=1e-8, atol=1e-10)
    # the geometric initialisation gives roughly the SDF of a sphere of radius 1: negative at the centre
    assert ours["sdf"].item() < 0
    assert ours["history"][-1][0] < ours["history"][0][0]


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
# NeRF as nerf-pytorch writes it: rays from a meshgrid and a camera-to-world matrix, NDC rays, the MLP with
# a skip connection and view directions, exclusive-cumprod transmittance, white background
# ----------------------------------------------------------------------------------------------


def nerf_full_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class NeRF(nn.Module):
        def __init__(self, D=4, W=16, input_ch=3, input_ch_views=3, output_ch=4, skips=[2], use_viewdirs=False):
            super(NeRF, self).__init__()
            self.D = D
            self.W = W
            self.input_ch = input_ch
            self.input_ch_views = input_ch_views
            self.skips = skips
            self.use_viewdirs = use_viewdirs
            self.pts_linears = nn.ModuleList(
                [nn.Linear(input_ch, W)] + [nn.Linear(W, W) if i not in self.skips else nn.Linear(W + input_ch, W)
                                            for i in range(D - 1)])
            self.views_linears = nn.ModuleList([nn.Linear(input_ch_views + W, W // 2)])
            if use_viewdirs:
                self.feature_linear = nn.Linear(W, W)
                self.alpha_linear = nn.Linear(W, 1)
                self.rgb_linear = nn.Linear(W // 2, 3)
            else:
                self.output_linear = nn.Linear(W, output_ch)

        def forward(self, x):
            input_pts, input_views = torch.split(x, [self.input_ch, self.input_ch_views], dim=-1)
            h = input_pts
            for i, l in enumerate(self.pts_linears):
                h = self.pts_linears[i](h)
                h = F.relu(h)
                if i in self.skips:
                    h = torch.cat([input_pts, h], -1)
            if self.use_viewdirs:
                alpha = self.alpha_linear(h)
                feature = self.feature_linear(h)
                h = torch.cat([feature, input_views], -1)
                for i, l in enumerate(self.views_linears):
                    h = self.views_linears[i](h)
                    h = F.relu(h)
                rgb = self.rgb_linear(h)
                outputs = torch.cat([rgb, alpha], -1)
            else:
                outputs = self.output_linear(h)
            return outputs

    class Embedder:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            self.create_embedding_fn()

        def create_embedding_fn(self):
            embed_fns = []
            d = self.kwargs['input_dims']
            out_dim = 0
            if self.kwargs['include_input']:
                embed_fns.append(lambda x: x)
                out_dim += d
            max_freq = self.kwargs['max_freq_log2']
            N_freqs = self.kwargs['num_freqs']
            if self.kwargs['log_sampling']:
                freq_bands = 2. ** torch.linspace(0., max_freq, steps=N_freqs)
            else:
                freq_bands = torch.linspace(2. ** 0., 2. ** max_freq, steps=N_freqs)
            for freq in freq_bands:
                for p_fn in self.kwargs['periodic_fns']:
                    embed_fns.append(lambda x, p_fn=p_fn, freq=freq: p_fn(x * freq))
                    out_dim += d
            self.embed_fns = embed_fns
            self.out_dim = out_dim

        def embed(self, inputs):
            return torch.cat([fn(inputs) for fn in self.embed_fns], -1)

    def get_embedder(multires, log_sampling=True):
        embed_kwargs = {'include_input': True, 'input_dims': 3, 'max_freq_log2': multires - 1,
                        'num_freqs': multires, 'log_sampling': log_sampling, 'periodic_fns': [torch.sin, torch.cos]}
        embedder_obj = Embedder(**embed_kwargs)
        return lambda x, eo=embedder_obj: eo.embed(x), embedder_obj.out_dim

    embed_fn, input_ch = get_embedder(4)
    embeddirs_fn, input_ch_views = get_embedder(2, log_sampling=False)
    model = NeRF(input_ch=input_ch, input_ch_views=input_ch_views, use_viewdirs=True)
    model.embed_fn, model.embeddirs_fn = embed_fn, embeddirs_fn
    return model


def nerf_full(m, weights, steps=3, N_samples=10, ndc=True):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, nerf_full_net(m), weights)

    def get_rays(H, W, K, c2w):
        i, j = torch.meshgrid(torch.linspace(0, W - 1, W), torch.linspace(0, H - 1, H), indexing='ij')
        i = i.t()
        j = j.t()
        dirs = torch.stack([(i - K[0][2]) / K[0][0], -(j - K[1][2]) / K[1][1], -torch.ones_like(i)], -1)
        rays_d = torch.sum(dirs[..., np.newaxis, :] * c2w[:3, :3], -1)
        rays_o = c2w[:3, -1].expand(rays_d.shape)
        return rays_o, rays_d

    def ndc_rays(H, W, focal, near, rays_o, rays_d):
        t = -(near + rays_o[..., 2]) / rays_d[..., 2]
        rays_o = rays_o + t[..., None] * rays_d
        o0 = -1. / (W / (2. * focal)) * rays_o[..., 0] / rays_o[..., 2]
        o1 = -1. / (H / (2. * focal)) * rays_o[..., 1] / rays_o[..., 2]
        o2 = 1. + 2. * near / rays_o[..., 2]
        d0 = -1. / (W / (2. * focal)) * (rays_d[..., 0] / rays_d[..., 2] - rays_o[..., 0] / rays_o[..., 2])
        d1 = -1. / (H / (2. * focal)) * (rays_d[..., 1] / rays_d[..., 2] - rays_o[..., 1] / rays_o[..., 2])
        d2 = -2. * near / rays_o[..., 2]
        rays_o = torch.stack([o0, o1, o2], -1)
        rays_d = torch.stack([d0, d1, d2], -1)
        return rays_o, rays_d

    def raw2outputs(raw, z_vals, rays_d, white_bkgd=True):
        dists = z_vals[..., 1:] - z_vals[..., :-1]
        dists = torch.cat([dists, torch.Tensor([1e10]).expand(dists[..., :1].shape)], -1)
        dists = dists * torch.norm(rays_d[..., None, :], dim=-1)
        rgb = torch.sigmoid(raw[..., :3])
        alpha = 1. - torch.exp(-F.softplus(raw[..., 3]) * dists)
        weights = alpha * torch.cumprod(torch.cat([torch.ones((alpha.shape[0], 1)), 1. - alpha + 1e-10], -1),
                                        -1)[:, :-1]
        rgb_map = torch.sum(weights[..., None] * rgb, -2)
        depth_map = torch.sum(weights * z_vals, -1)
        acc_map = torch.sum(weights, -1)
        if white_bkgd:
            rgb_map = rgb_map + (1. - acc_map[..., None])
        return rgb_map, depth_map, acc_map, weights

    H, W, focal = 4, 5, 6.0
    K = np.array([[focal, 0, 0.5 * W], [0, focal, 0.5 * H], [0, 0, 1]])
    theta = 0.3
    c2w = torch.Tensor(np.array([[np.cos(theta), 0, np.sin(theta), 0.4],
                                 [0, 1, 0, -0.2],
                                 [-np.sin(theta), 0, np.cos(theta), 4.0]], dtype=np.float32))
    rays_o, rays_d = get_rays(H, W, K, c2w)
    viewdirs = rays_d / torch.norm(rays_d, dim=-1, keepdim=True)
    viewdirs = torch.reshape(viewdirs, [-1, 3]).float()
    sh = rays_d.shape
    if ndc:
        rays_o, rays_d = ndc_rays(H, W, K[0][0], 1., rays_o, rays_d)
    rays_o = torch.reshape(rays_o, [-1, 3]).float()
    rays_d = torch.reshape(rays_d, [-1, 3]).float()
    near, far = 0., 1.
    N_rays = rays_o.shape[0]
    rng = np.random.default_rng(17)
    target = torch.tensor(rng.uniform(0, 1, (N_rays, 3)).astype(np.float32))
    optimizer = optim.Adam(params=model.parameters(), lr=5e-3, betas=(0.9, 0.999))
    history = []
    for step in range(steps):
        t_vals = torch.linspace(0., 1., steps=N_samples)
        z_vals = 1. / (1. / near * (1. - t_vals) + 1. / far * t_vals) if near > 0 else \
            near * (1. - t_vals) + far * t_vals
        z_vals = z_vals.expand([N_rays, N_samples])
        pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]
        inputs_flat = torch.reshape(pts, [-1, pts.shape[-1]])
        embedded = model.embed_fn(inputs_flat)
        input_dirs = viewdirs[:, None].expand(pts.shape)
        input_dirs_flat = torch.reshape(input_dirs, [-1, input_dirs.shape[-1]])
        embedded = torch.cat([embedded, model.embeddirs_fn(input_dirs_flat)], -1)
        raw = torch.reshape(model(embedded), list(pts.shape[:-1]) + [4])
        rgb_map, depth_map, acc_map, weights = raw2outputs(raw, z_vals, rays_d)
        loss = torch.mean((rgb_map - target) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        new_lrate = 5e-3 * (0.1 ** ((step + 1) / 10))
        for param_group in optimizer.param_groups:
            param_group['lr'] = new_lrate
        history.append(loss.item())
    return {"history": history, "rays": (rays_o, rays_d), "image": rgb_map.reshape(H, W, 3).detach(),
            "depth": depth_map.detach(), "grads": [p.grad for p in model.parameters()]}


def test_nerf_with_view_directions_ndc_rays_and_skips():
    weights = weights_of(nerf_full_net)
    ours, _ = run_both(nerf_full, weights, rtol=2e-5, atol=1e-6)
    assert ours["image"].shape == (4, 5, 3)
    # NDC: every ray starts on the near plane z = -1
    np.testing.assert_allclose(ours["rays"][0][:, 2], -1.0, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Differentiable soft splatting: points projected to an image, bilinear weights accumulated by
# index_put_(accumulate=True) and scatter_add_, normalised by the accumulated weight
# ----------------------------------------------------------------------------------------------


def soft_splat(m, steps=4, how="index_put"):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(19)
    H, W, N = 6, 7, 30
    points = torch.tensor(rng.uniform(-0.9, 0.9, (N, 3)), requires_grad=True)
    colors = torch.tensor(rng.uniform(0, 1, (N, 3)), requires_grad=True)
    target = torch.tensor(rng.uniform(0, 1, (H, W, 3)))
    optimizer = optim.Adam([{"params": [points], "lr": 1e-2}, {"params": [colors], "lr": 5e-2}])

    def splat(points, colors):
        z = points[:, 2] + 3.0
        u = (points[:, 0] / z * 2.5 + 0.5) * (W - 1)
        v = (points[:, 1] / z * 2.5 + 0.5) * (H - 1)
        u0, v0 = u.floor().long(), v.floor().long()
        image = torch.zeros(H * W, 3, dtype=points.dtype)
        weight = torch.zeros(H * W, dtype=points.dtype)
        depth_w = torch.exp(-z)
        for du in (0, 1):
            for dv in (0, 1):
                ui, vi = u0 + du, v0 + dv
                w = (1 - (u - ui).abs()) * (1 - (v - vi).abs()) * depth_w
                valid = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
                idx = (vi * W + ui)[valid]
                wv = w[valid]
                if how == "index_put":
                    image.index_put_((idx,), wv[:, None] * colors[valid], accumulate=True)
                    weight.index_put_((idx,), wv, accumulate=True)
                else:
                    image = image.scatter_add(0, idx[:, None].expand(-1, 3), wv[:, None] * colors[valid])
                    weight = weight.scatter_add(0, idx, wv)
        image = image / (weight[:, None] + 1e-4)
        return image.view(H, W, 3), weight.view(H, W)

    history = []
    for step in range(steps):
        image, weight = splat(points, colors)
        loss = ((image - target) ** 2 * (weight > 0)[..., None]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "image": image.detach(), "weight": weight.detach(),
            "grads": (points.grad, colors.grad)}


@pytest.mark.parametrize("how", ["index_put", "scatter_add"])
def test_soft_splatting(how):
    ours, _ = run_both(soft_splat, how=how, rtol=1e-8, atol=1e-10)
    other = run_both(soft_splat, how="scatter_add" if how == "index_put" else "index_put", compare=False)[0]
    np.testing.assert_allclose(ours["image"], other["image"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["grads"][0], other["grads"][0], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# 2D Gaussian splatting fit of an image: covariances from rotation and scale, depth-sorted alpha
# compositing with exclusive transmittance, per-group learning rates
# ----------------------------------------------------------------------------------------------


def gaussians_2d(m, steps=5, N=12, side=8):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(23)
    means = torch.nn.Parameter(torch.tensor(rng.uniform(-0.8, 0.8, (N, 2))))
    log_scales = torch.nn.Parameter(torch.tensor(np.log(rng.uniform(0.1, 0.3, (N, 2)))))
    rotations = torch.nn.Parameter(torch.tensor(rng.uniform(-np.pi, np.pi, N)))
    colors = torch.nn.Parameter(torch.tensor(rng.standard_normal((N, 3)) * 0.5))
    opacities = torch.nn.Parameter(torch.tensor(rng.standard_normal(N) * 0.5))
    depths = torch.tensor(rng.uniform(0, 1, N))
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, side, dtype=torch.float64),
                            torch.linspace(-1, 1, side, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(-1, 2)
    target = torch.tensor(rng.uniform(0, 1, (side * side, 3)))
    optimizer = optim.Adam([
        {"params": [means], "lr": 1e-2, "name": "xyz"},
        {"params": [log_scales], "lr": 5e-3, "name": "scaling"},
        {"params": [rotations], "lr": 1e-3, "name": "rotation"},
        {"params": [colors], "lr": 2.5e-2, "name": "f_dc"},
        {"params": [opacities], "lr": 5e-2, "name": "opacity"}], lr=0.0, eps=1e-15)

    def render():
        c, s = torch.cos(rotations), torch.sin(rotations)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        S = torch.diag_embed(torch.exp(log_scales))
        L = R @ S
        cov = L @ L.transpose(1, 2)
        det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] * cov[:, 1, 0]
        conic = torch.stack([cov[:, 1, 1], -cov[:, 0, 1], cov[:, 0, 0]], -1) / det[:, None]
        order = torch.argsort(depths)
        d = pixels[:, None, :] - means[order][None]  # P x N x 2
        co = conic[order]
        power = -0.5 * (co[:, 0] * d[..., 0] ** 2 + co[:, 2] * d[..., 1] ** 2) - co[:, 1] * d[..., 0] * d[..., 1]
        alpha = torch.clamp(torch.sigmoid(opacities[order]) * torch.exp(power), max=0.99)
        T = torch.cumprod(1 - alpha, dim=1)
        T = torch.cat([torch.ones_like(T[:, :1]), T[:, :-1]], dim=1)
        w = alpha * T
        rgb = w @ torch.sigmoid(colors[order])
        return rgb, T[:, -1] * (1 - alpha[:, -1]), torch.linalg.inv(cov)

    history = []
    for it in range(steps):
        rgb, final_T, cov_inv = render()
        l1 = torch.abs(rgb - target).mean()
        loss = 0.8 * l1 + 0.2 * F.mse_loss(rgb, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "rgb": rgb.detach(), "final_T": final_T.detach(), "cov_inv": cov_inv.detach(),
            "grads": [p.grad for g in optimizer.param_groups for p in g["params"]],
            "names": [g["name"] for g in optimizer.param_groups]}


def test_gaussian_splatting_2d_image_fit():
    ours, _ = run_both(gaussians_2d, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    assert np.all((ours["final_T"] > 0) & (ours["final_T"] <= 1))


# ----------------------------------------------------------------------------------------------
# NeuS: an SDF network with weight norm and geometric init, a learnt variance, alpha from the
# logistic CDF of the SDF at section ends, normals by autograd.grad, eikonal loss, and up-sampling by
# inverse-CDF (det=True) merged into the sorted samples with torch.sort and advanced indexing
# ----------------------------------------------------------------------------------------------


def neus_net(m):
    torch, nn = m.torch, m.nn

    class SDFNetwork(nn.Module):
        def __init__(self, d_in=3, d_out=5, d_hidden=16, n_layers=3, skip_in=(2,), multires=2, bias=0.5, scale=1,
                     geometric_init=True, weight_norm=True, inside_outside=False):
            super(SDFNetwork, self).__init__()
            dims = [d_in] + [d_hidden for _ in range(n_layers)] + [d_out]
            self.embed_fn_fine = None
            if multires > 0:
                freq_bands = 2. ** torch.linspace(0., multires - 1, multires)
                self.embed_fn_fine = lambda x: torch.cat(
                    [x] + [fn(x * freq) for freq in freq_bands for fn in (torch.sin, torch.cos)], -1)
                dims[0] = d_in * (1 + 2 * multires)
            self.num_layers = len(dims)
            self.skip_in = skip_in
            self.scale = scale
            for l in range(0, self.num_layers - 1):
                if l + 1 in self.skip_in:
                    out_dim = dims[l + 1] - dims[0]
                else:
                    out_dim = dims[l + 1]
                lin = nn.Linear(dims[l], out_dim)
                if geometric_init:
                    if l == self.num_layers - 2:
                        if not inside_outside:
                            torch.nn.init.normal_(lin.weight, mean=np.sqrt(np.pi) / np.sqrt(dims[l]), std=0.0001)
                            torch.nn.init.constant_(lin.bias, -bias)
                    elif multires > 0 and l == 0:
                        torch.nn.init.constant_(lin.bias, 0.0)
                        torch.nn.init.constant_(lin.weight[:, 3:], 0.0)
                        torch.nn.init.normal_(lin.weight[:, :3], 0.0, np.sqrt(2) / np.sqrt(out_dim))
                    elif multires > 0 and l in self.skip_in:
                        torch.nn.init.constant_(lin.bias, 0.0)
                        torch.nn.init.normal_(lin.weight, 0.0, np.sqrt(2) / np.sqrt(out_dim))
                        torch.nn.init.constant_(lin.weight[:, -(dims[0] - 3):], 0.0)
                    else:
                        torch.nn.init.constant_(lin.bias, 0.0)
                        torch.nn.init.normal_(lin.weight, 0.0, np.sqrt(2) / np.sqrt(out_dim))
                if weight_norm:
                    lin = nn.utils.weight_norm(lin)
                setattr(self, "lin" + str(l), lin)
            self.activation = nn.Softplus(beta=100)

        def forward(self, inputs):
            inputs = inputs * self.scale
            if self.embed_fn_fine is not None:
                inputs = self.embed_fn_fine(inputs)
            x = inputs
            for l in range(0, self.num_layers - 1):
                lin = getattr(self, "lin" + str(l))
                if l in self.skip_in:
                    x = torch.cat([x, inputs], 1) / np.sqrt(2)
                x = lin(x)
                if l < self.num_layers - 2:
                    x = self.activation(x)
            return torch.cat([x[:, :1] / self.scale, x[:, 1:]], dim=-1)

        def sdf(self, x):
            return self.forward(x)[:, :1]

        def gradient(self, x):
            x.requires_grad_(True)
            y = self.sdf(x)
            d_output = torch.ones_like(y, requires_grad=False, device=y.device)
            gradients = torch.autograd.grad(outputs=y, inputs=x, grad_outputs=d_output, create_graph=True,
                                            retain_graph=True, only_inputs=True)[0]
            return gradients.unsqueeze(1)

    class SingleVarianceNetwork(nn.Module):
        def __init__(self, init_val):
            super(SingleVarianceNetwork, self).__init__()
            self.register_parameter('variance', nn.Parameter(torch.tensor(init_val)))

        def forward(self, x):
            return torch.ones([len(x), 1]) * torch.exp(self.variance * 10.0)

    class ColorNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3 + 3 + 3 + 4, 16), nn.ReLU(), nn.Linear(16, 3), nn.Sigmoid())

        def forward(self, points, normals, view_dirs, feature_vectors):
            return self.net(torch.cat([points, view_dirs, normals, feature_vectors], dim=-1))

    class NeuS(nn.Module):
        def __init__(self):
            super().__init__()
            self.sdf_network = SDFNetwork()
            self.deviation_network = SingleVarianceNetwork(0.3)
            self.color_network = ColorNetwork()

    return NeuS()


def neus(m, weights, steps=3, n_samples=8, n_importance=4, up_sample_steps=2):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, neus_net(m), weights).double()
    sdf_network, deviation_network, color_network = model.sdf_network, model.deviation_network, \
        model.color_network

    def sample_pdf(bins, weights, n_samples, det=False):
        weights = weights + 1e-5
        pdf = weights / torch.sum(weights, -1, keepdim=True)
        cdf = torch.cumsum(pdf, -1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
        u = torch.linspace(0. + 0.5 / n_samples, 1. - 0.5 / n_samples, steps=n_samples, dtype=bins.dtype)
        u = u.expand(list(cdf.shape[:-1]) + [n_samples])
        u = u.contiguous()
        inds = torch.searchsorted(cdf, u, right=True)
        below = torch.max(torch.zeros_like(inds - 1), inds - 1)
        above = torch.min((cdf.shape[-1] - 1) * torch.ones_like(inds), inds)
        inds_g = torch.stack([below, above], -1)
        matched_shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
        cdf_g = torch.gather(cdf.unsqueeze(1).expand(matched_shape), 2, inds_g)
        bins_g = torch.gather(bins.unsqueeze(1).expand(matched_shape), 2, inds_g)
        denom = (cdf_g[..., 1] - cdf_g[..., 0])
        denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
        t = (u - cdf_g[..., 0]) / denom
        samples = bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0])
        return samples

    def up_sample(rays_o, rays_d, z_vals, sdf, n_importance, inv_s):
        batch_size, n_samples = z_vals.shape
        pts = rays_o[:, None, :] + rays_d[:, None, :] * z_vals[..., :, None]
        radius = torch.linalg.norm(pts, ord=2, dim=-1, keepdim=False)
        inside_sphere = (radius[:, :-1] < 1.0) | (radius[:, 1:] < 1.0)
        sdf = sdf.reshape(batch_size, n_samples)
        prev_sdf, next_sdf = sdf[:, :-1], sdf[:, 1:]
        prev_z_vals, next_z_vals = z_vals[:, :-1], z_vals[:, 1:]
        mid_sdf = (prev_sdf + next_sdf) * 0.5
        cos_val = (next_sdf - prev_sdf) / (next_z_vals - prev_z_vals + 1e-5)
        prev_cos_val = torch.cat([torch.zeros([batch_size, 1], dtype=z_vals.dtype), cos_val[:, :-1]], dim=-1)
        cos_val = torch.stack([prev_cos_val, cos_val], dim=-1)
        cos_val, _ = torch.min(cos_val, dim=-1, keepdim=False)
        cos_val = cos_val.clip(-1e3, 0.0) * inside_sphere
        dist = (next_z_vals - prev_z_vals)
        prev_esti_sdf = mid_sdf - cos_val * dist * 0.5
        next_esti_sdf = mid_sdf + cos_val * dist * 0.5
        prev_cdf = torch.sigmoid(prev_esti_sdf * inv_s)
        next_cdf = torch.sigmoid(next_esti_sdf * inv_s)
        alpha = (prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)
        weights = alpha * torch.cumprod(
            torch.cat([torch.ones([batch_size, 1], dtype=z_vals.dtype), 1. - alpha + 1e-7], -1), -1)[:, :-1]
        z_samples = sample_pdf(z_vals, weights, n_importance, det=True).detach()
        return z_samples

    def cat_z_vals(rays_o, rays_d, z_vals, new_z_vals, sdf):
        batch_size, n_samples = z_vals.shape
        _, n_importance = new_z_vals.shape
        pts = rays_o[:, None, :] + rays_d[:, None, :] * new_z_vals[..., :, None]
        z_vals = torch.cat([z_vals, new_z_vals], dim=-1)
        z_vals, index = torch.sort(z_vals, dim=-1)
        new_sdf = sdf_network.sdf(pts.reshape(-1, 3)).reshape(batch_size, n_importance)
        sdf = torch.cat([sdf, new_sdf], dim=-1)
        xx = torch.arange(batch_size)[:, None].expand(batch_size, n_samples + n_importance).reshape(-1)
        index = index.reshape(-1)
        sdf = sdf[(xx, index)].reshape(batch_size, n_samples + n_importance)
        return z_vals, sdf

    def render_core(rays_o, rays_d, z_vals, cos_anneal_ratio=0.0):
        batch_size, n_samples = z_vals.shape
        dists = z_vals[..., 1:] - z_vals[..., :-1]
        sample_dist = 2.0 / n_samples
        dists = torch.cat([dists, torch.Tensor([sample_dist]).double().expand(dists[..., :1].shape)], -1)
        mid_z_vals = z_vals + dists * 0.5
        pts = rays_o[:, None, :] + rays_d[:, None, :] * mid_z_vals[..., :, None]
        dirs = rays_d[:, None, :].expand(pts.shape)
        pts = pts.reshape(-1, 3)
        dirs = dirs.reshape(-1, 3)
        sdf_nn_output = sdf_network(pts)
        sdf = sdf_nn_output[:, :1]
        feature_vector = sdf_nn_output[:, 1:]
        gradients = sdf_network.gradient(pts).squeeze()
        sampled_color = color_network(pts, gradients, dirs, feature_vector).reshape(batch_size, n_samples, 3)
        inv_s = deviation_network(torch.zeros([1, 3])).clip(1e-6, 1e6)
        inv_s = inv_s.expand(batch_size * n_samples, 1)
        true_cos = (dirs * gradients).sum(-1, keepdim=True)
        iter_cos = -(F.relu(-true_cos * 0.5 + 0.5) * (1.0 - cos_anneal_ratio) +
                     F.relu(-true_cos) * cos_anneal_ratio)
        estimated_next_sdf = sdf + iter_cos * dists.reshape(-1, 1) * 0.5
        estimated_prev_sdf = sdf - iter_cos * dists.reshape(-1, 1) * 0.5
        prev_cdf = torch.sigmoid(estimated_prev_sdf * inv_s)
        next_cdf = torch.sigmoid(estimated_next_sdf * inv_s)
        p = prev_cdf - next_cdf
        c = prev_cdf
        alpha = ((p + 1e-5) / (c + 1e-5)).reshape(batch_size, n_samples).clip(0.0, 1.0)
        pts_norm = torch.linalg.norm(pts, ord=2, dim=-1, keepdim=True).reshape(batch_size, n_samples)
        inside_sphere = (pts_norm < 1.0).float().detach()
        relax_inside_sphere = (pts_norm < 1.2).float().detach()
        weights = alpha * torch.cumprod(
            torch.cat([torch.ones([batch_size, 1], dtype=alpha.dtype), 1. - alpha + 1e-7], -1), -1)[:, :-1]
        weights_sum = weights.sum(dim=-1, keepdim=True)
        color = (sampled_color * weights[:, :, None]).sum(dim=1)
        gradient_error = (torch.linalg.norm(gradients.reshape(batch_size, n_samples, 3), ord=2,
                                            dim=-1) - 1.0) ** 2
        gradient_error = (relax_inside_sphere * gradient_error).sum() / (relax_inside_sphere.sum() + 1e-5)
        return {'color': color, 's_val': 1.0 / inv_s, 'weights': weights, 'weight_sum': weights_sum,
                'gradient_error': gradient_error, 'inside_sphere': inside_sphere}

    rng = np.random.default_rng(29)
    batch_size = 6
    rays_o = torch.tensor(rng.standard_normal((batch_size, 3)) * 0.1 + np.array([0, 0, -1.5]))
    rays_d = torch.tensor(rng.standard_normal((batch_size, 3)) * 0.2 + np.array([0, 0, 1.0]))
    rays_d = rays_d / torch.linalg.norm(rays_d, ord=2, dim=-1, keepdim=True)
    true_rgb = torch.tensor(rng.uniform(0, 1, (batch_size, 3)))
    near, far = torch.full((batch_size, 1), 0.5, dtype=torch.float64), torch.full((batch_size, 1), 2.5,
                                                                                  dtype=torch.float64)
    params_to_train = list(model.parameters())
    optimizer = torch.optim.Adam(params_to_train, lr=5e-4)
    history = []
    for it in range(steps):
        z_vals = torch.linspace(0.0, 1.0, n_samples, dtype=torch.float64)
        z_vals = near + (far - near) * z_vals[None, :]
        with torch.no_grad():
            pts = rays_o[:, None, :] + rays_d[:, None, :] * z_vals[..., :, None]
            sdf = sdf_network.sdf(pts.reshape(-1, 3)).reshape(batch_size, n_samples)
            for i in range(up_sample_steps):
                new_z_vals = up_sample(rays_o, rays_d, z_vals, sdf, n_importance // up_sample_steps, 64 * 2 ** i)
                z_vals, sdf = cat_z_vals(rays_o, rays_d, z_vals, new_z_vals, sdf)
        out = render_core(rays_o, rays_d, z_vals, cos_anneal_ratio=min(1.0, it / 2))
        color_error = out['color'] - true_rgb
        color_fine_loss = F.l1_loss(color_error, torch.zeros_like(color_error), reduction='sum') / batch_size
        eikonal_loss = out['gradient_error']
        loss = color_fine_loss + eikonal_loss * 0.1
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), out['s_val'].mean().item()))
    return {"history": history, "z_vals": z_vals, "weights": out['weights'].detach(),
            "grads": {n: p.grad for n, p in model.named_parameters()}}


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_neus_sdf_volume_rendering():
    weights = weights_of(neus_net)
    assert any(k.endswith("weight_g") for k in weights)
    # inv_s is float32 (torch.ones of the default dtype): its mean is summed in float32
    ours, _ = run_both(neus, weights, rtol=1e-6, atol=1e-10)
    assert np.all(np.diff(ours["z_vals"], axis=-1) >= 0)
    assert ours["grads"]["deviation_network.variance"] != 0


# ----------------------------------------------------------------------------------------------
# nerfacc-style packed rendering: a variable number of samples per ray (repeat_interleave), per-ray
# sums by index_add_ and exclusive transmittance by a segmented cumsum
# ----------------------------------------------------------------------------------------------


def packed_render(m, steps=4):
    torch, nn, optim = m.torch, m.nn, m.optim
    rng = np.random.default_rng(31)
    n_rays = 5
    counts = torch.tensor([3, 0, 5, 1, 4])
    n = int(counts.sum())
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    chunk_starts = torch.cumsum(counts, 0) - counts
    t_starts = torch.tensor(rng.uniform(0, 1, n)).sort()[0]
    t_ends = t_starts + torch.tensor(rng.uniform(0.05, 0.2, n))
    positions = torch.tensor(rng.standard_normal((n, 3)))
    target = torch.tensor(rng.uniform(0, 1, (n_rays, 3)))
    torch.manual_seed(0)
    field = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    for p in field.parameters():
        nn.init.normal_(p, std=0.5) if p.dim() > 1 else nn.init.zeros_(p)
    with torch.no_grad():
        field[0].weight.copy_(torch.tensor(rng.standard_normal((16, 3)) * 0.5))
        field[2].weight.copy_(torch.tensor(rng.standard_normal((4, 16)) * 0.5))
    optimizer = optim.Adam(field.parameters(), lr=1e-2)

    def exclusive_sum(inputs):
        outputs = torch.cumsum(inputs, dim=0)
        # subtract each ray's total before its first sample, then shift by one
        offsets = torch.repeat_interleave(outputs[chunk_starts - 1] * (chunk_starts > 0), counts)
        return outputs - offsets - inputs

    def accumulate_along_rays(weights, values):
        src = weights[..., None] * values
        outputs = torch.zeros((n_rays, src.shape[-1]), dtype=src.dtype)
        outputs.index_add_(0, ray_indices, src)
        return outputs

    history = []
    for step in range(steps):
        out = field(positions)
        rgbs, sigmas = torch.sigmoid(out[:, :3]), torch.exp(out[:, 3])
        sigmas_dt = sigmas * (t_ends - t_starts)
        alphas = 1.0 - torch.exp(-sigmas_dt)
        trans = torch.exp(-exclusive_sum(sigmas_dt))
        weights = trans * alphas
        colors = accumulate_along_rays(weights, rgbs)
        opacities = accumulate_along_rays(weights, torch.ones_like(weights)[:, None])
        depths = accumulate_along_rays(weights, ((t_starts + t_ends) / 2.0)[:, None])
        colors = colors + 1.0 * (1.0 - opacities)
        loss = torch.nn.functional.smooth_l1_loss(colors, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "trans": trans.detach(), "opacities": opacities.detach(), "depths": depths.detach(),
            "grads": [p.grad for p in field.parameters()]}


def test_packed_rendering_with_index_add():
    ours, _ = run_both(packed_render, rtol=1e-8, atol=1e-10)
    # a ray with no samples is transparent; the first sample of each ray sees full transmittance
    assert ours["opacities"][1, 0] == 0 and ours["depths"][1, 0] == 0
    np.testing.assert_allclose(ours["trans"][[0, 3, 8, 9]], 1.0)


# ----------------------------------------------------------------------------------------------
# 3D Gaussian splatting's model bookkeeping: quaternions to rotations, covariances, SH degree 0 colour,
# gradients of screen-space means kept by retain_grad, densification by clone / split and pruning that
# rewrites Adam's state (exp_avg, exp_avg_sq) in place of the replaced parameters
# ----------------------------------------------------------------------------------------------


def gs_densify(m, steps=6, N=10):
    torch, nn, optim = m.torch, m.nn, m.optim
    rng = np.random.default_rng(37)
    C0 = 0.28209479177387814

    def inverse_sigmoid(x):
        return torch.log(x / (1 - x))

    def build_rotation(r):
        norm = torch.sqrt(r[:, 0] * r[:, 0] + r[:, 1] * r[:, 1] + r[:, 2] * r[:, 2] + r[:, 3] * r[:, 3])
        q = r / norm[:, None]
        R = torch.zeros((q.size(0), 3, 3), dtype=r.dtype)
        r, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
        R[:, 0, 0] = 1 - 2 * (y * y + z * z)
        R[:, 0, 1] = 2 * (x * y - r * z)
        R[:, 0, 2] = 2 * (x * z + r * y)
        R[:, 1, 0] = 2 * (x * y + r * z)
        R[:, 1, 1] = 1 - 2 * (x * x + z * z)
        R[:, 1, 2] = 2 * (y * z - r * x)
        R[:, 2, 0] = 2 * (x * z - r * y)
        R[:, 2, 1] = 2 * (y * z + r * x)
        R[:, 2, 2] = 1 - 2 * (x * x + y * y)
        return R

    def build_scaling_rotation(s, r):
        L = torch.zeros((s.shape[0], 3, 3), dtype=s.dtype)
        R = build_rotation(r)
        L[:, 0, 0] = s[:, 0]
        L[:, 1, 1] = s[:, 1]
        L[:, 2, 2] = s[:, 2]
        return R @ L

    class GaussianModel:
        def __init__(self):
            self._xyz = nn.Parameter(torch.tensor(rng.uniform(-1, 1, (N, 3))).requires_grad_(True))
            self._features_dc = nn.Parameter(torch.tensor(rng.standard_normal((N, 1, 3)) * 0.3).requires_grad_(True))
            self._scaling = nn.Parameter(torch.tensor(np.log(rng.uniform(0.05, 0.3, (N, 3)))).requires_grad_(True))
            rots = torch.zeros((N, 4), dtype=torch.float64)
            rots[:, 0] = 1
            rots = rots + torch.tensor(rng.standard_normal((N, 4)) * 0.2)
            self._rotation = nn.Parameter(rots.requires_grad_(True))
            self._opacity = nn.Parameter(inverse_sigmoid(0.1 * torch.ones((N, 1), dtype=torch.float64)))
            self.xyz_gradient_accum = torch.zeros((N, 1), dtype=torch.float64)
            self.denom = torch.zeros((N, 1), dtype=torch.float64)
            self.percent_dense = 0.05
            lr = [{'params': [self._xyz], 'lr': 1.6e-2, "name": "xyz"},
                  {'params': [self._features_dc], 'lr': 2.5e-2, "name": "f_dc"},
                  {'params': [self._opacity], 'lr': 5e-2, "name": "opacity"},
                  {'params': [self._scaling], 'lr': 5e-3, "name": "scaling"},
                  {'params': [self._rotation], 'lr': 1e-3, "name": "rotation"}]
            self.optimizer = torch.optim.Adam(lr, lr=0.0, eps=1e-15)

        get_scaling = property(lambda self: torch.exp(self._scaling))
        get_rotation = property(lambda self: torch.nn.functional.normalize(self._rotation))
        get_xyz = property(lambda self: self._xyz)
        get_opacity = property(lambda self: torch.sigmoid(self._opacity))

        def get_covariance(self, scaling_modifier=1):
            L = build_scaling_rotation(scaling_modifier * self.get_scaling, self._rotation)
            actual_covariance = L @ L.transpose(1, 2)
            return actual_covariance

        def update_learning_rate(self, iteration):
            for param_group in self.optimizer.param_groups:
                if param_group["name"] == "xyz":
                    lr = np.exp(np.log(1.6e-2) * (1 - iteration / 10) + np.log(1.6e-4) * iteration / 10)
                    param_group['lr'] = lr
                    return lr

        def replace_tensor_to_optimizer(self, tensor, name):
            optimizable_tensors = {}
            for group in self.optimizer.param_groups:
                if group["name"] == name:
                    stored_state = self.optimizer.state.get(group['params'][0], None)
                    stored_state["exp_avg"] = torch.zeros_like(tensor)
                    stored_state["exp_avg_sq"] = torch.zeros_like(tensor)
                    del self.optimizer.state[group['params'][0]]
                    group["params"][0] = nn.Parameter(tensor.requires_grad_(True))
                    self.optimizer.state[group['params'][0]] = stored_state
                    optimizable_tensors[group["name"]] = group["params"][0]
            return optimizable_tensors

        def reset_opacity(self):
            opacities_new = inverse_sigmoid(torch.min(self.get_opacity, torch.ones_like(self.get_opacity) * 0.01))
            optimizable_tensors = self.replace_tensor_to_optimizer(opacities_new, "opacity")
            self._opacity = optimizable_tensors["opacity"]

        def _prune_optimizer(self, mask):
            optimizable_tensors = {}
            for group in self.optimizer.param_groups:
                stored_state = self.optimizer.state.get(group['params'][0], None)
                if stored_state is not None:
                    stored_state["exp_avg"] = stored_state["exp_avg"][mask]
                    stored_state["exp_avg_sq"] = stored_state["exp_avg_sq"][mask]
                    del self.optimizer.state[group['params'][0]]
                    group["params"][0] = nn.Parameter((group["params"][0][mask].requires_grad_(True)))
                    self.optimizer.state[group['params'][0]] = stored_state
                    optimizable_tensors[group["name"]] = group["params"][0]
                else:
                    group["params"][0] = nn.Parameter(group["params"][0][mask].requires_grad_(True))
                    optimizable_tensors[group["name"]] = group["params"][0]
            return optimizable_tensors

        def prune_points(self, mask):
            valid_points_mask = ~mask
            optimizable_tensors = self._prune_optimizer(valid_points_mask)
            self._xyz = optimizable_tensors["xyz"]
            self._features_dc = optimizable_tensors["f_dc"]
            self._opacity = optimizable_tensors["opacity"]
            self._scaling = optimizable_tensors["scaling"]
            self._rotation = optimizable_tensors["rotation"]
            self.xyz_gradient_accum = self.xyz_gradient_accum[valid_points_mask]
            self.denom = self.denom[valid_points_mask]

        def cat_tensors_to_optimizer(self, tensors_dict):
            optimizable_tensors = {}
            for group in self.optimizer.param_groups:
                assert len(group["params"]) == 1
                extension_tensor = tensors_dict[group["name"]]
                stored_state = self.optimizer.state.get(group['params'][0], None)
                if stored_state is not None:
                    stored_state["exp_avg"] = torch.cat((stored_state["exp_avg"], torch.zeros_like(extension_tensor)),
                                                        dim=0)
                    stored_state["exp_avg_sq"] = torch.cat((stored_state["exp_avg_sq"],
                                                            torch.zeros_like(extension_tensor)), dim=0)
                    del self.optimizer.state[group['params'][0]]
                    group["params"][0] = nn.Parameter(
                        torch.cat((group["params"][0], extension_tensor), dim=0).requires_grad_(True))
                    self.optimizer.state[group['params'][0]] = stored_state
                    optimizable_tensors[group["name"]] = group["params"][0]
                else:
                    group["params"][0] = nn.Parameter(
                        torch.cat((group["params"][0], extension_tensor), dim=0).requires_grad_(True))
                    optimizable_tensors[group["name"]] = group["params"][0]
            return optimizable_tensors

        def densification_postfix(self, new_xyz, new_features_dc, new_opacities, new_scaling, new_rotation):
            d = {"xyz": new_xyz, "f_dc": new_features_dc, "opacity": new_opacities, "scaling": new_scaling,
                 "rotation": new_rotation}
            optimizable_tensors = self.cat_tensors_to_optimizer(d)
            self._xyz = optimizable_tensors["xyz"]
            self._features_dc = optimizable_tensors["f_dc"]
            self._opacity = optimizable_tensors["opacity"]
            self._scaling = optimizable_tensors["scaling"]
            self._rotation = optimizable_tensors["rotation"]
            self.xyz_gradient_accum = torch.zeros((self.get_xyz.shape[0], 1), dtype=torch.float64)
            self.denom = torch.zeros((self.get_xyz.shape[0], 1), dtype=torch.float64)

        def densify_and_split(self, grads, grad_threshold, scene_extent, N=2):
            n_init_points = self.get_xyz.shape[0]
            padded_grad = torch.zeros((n_init_points), dtype=torch.float64)
            padded_grad[:grads.shape[0]] = grads.squeeze()
            selected_pts_mask = torch.where(padded_grad >= grad_threshold, True, False)
            selected_pts_mask = torch.logical_and(
                selected_pts_mask, torch.max(self.get_scaling, dim=1).values > self.percent_dense * scene_extent)
            stds = self.get_scaling[selected_pts_mask].repeat(N, 1)
            means = torch.zeros((stds.size(0), 3), dtype=torch.float64)
            samples = means + 0.5 * stds  # torch.normal(mean=means, std=stds) with a fixed draw
            rots = build_rotation(self._rotation[selected_pts_mask]).repeat(N, 1, 1)
            new_xyz = torch.bmm(rots, samples.unsqueeze(-1)).squeeze(-1) + self.get_xyz[selected_pts_mask].repeat(N, 1)
            new_scaling = torch.log(self.get_scaling[selected_pts_mask].repeat(N, 1) / (0.8 * N))
            new_rotation = self._rotation[selected_pts_mask].repeat(N, 1)
            new_features_dc = self._features_dc[selected_pts_mask].repeat(N, 1, 1)
            new_opacity = self._opacity[selected_pts_mask].repeat(N, 1)
            self.densification_postfix(new_xyz, new_features_dc, new_opacity, new_scaling, new_rotation)
            prune_filter = torch.cat((selected_pts_mask, torch.zeros(N * selected_pts_mask.sum(), dtype=bool)))
            self.prune_points(prune_filter)

        def densify_and_clone(self, grads, grad_threshold, scene_extent):
            selected_pts_mask = torch.where(torch.norm(grads, dim=-1) >= grad_threshold, True, False)
            selected_pts_mask = torch.logical_and(
                selected_pts_mask, torch.max(self.get_scaling, dim=1).values <= self.percent_dense * scene_extent)
            self.densification_postfix(self._xyz[selected_pts_mask], self._features_dc[selected_pts_mask],
                                       self._opacity[selected_pts_mask], self._scaling[selected_pts_mask],
                                       self._rotation[selected_pts_mask])

        def densify_and_prune(self, max_grad, min_opacity, extent):
            grads = self.xyz_gradient_accum / self.denom
            grads[grads.isnan()] = 0.0
            self.densify_and_clone(grads, max_grad, extent)
            self.densify_and_split(grads, max_grad, extent)
            prune_mask = (self.get_opacity < min_opacity).squeeze()
            self.prune_points(prune_mask)

        def add_densification_stats(self, viewspace_point_tensor, update_filter):
            self.xyz_gradient_accum[update_filter] += torch.norm(viewspace_point_tensor.grad[update_filter, :2],
                                                                 dim=-1, keepdim=True)
            self.denom[update_filter] += 1

    gaussians = GaussianModel()
    side = 6
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, side, dtype=torch.float64),
                            torch.linspace(-1, 1, side, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(-1, 2)
    gt = torch.tensor(rng.uniform(0, 1, (side * side, 3)))

    def render(g):
        xyz = g.get_xyz
        screenspace = xyz[:, :2] / (xyz[:, 2:] + 3.0)
        screenspace.retain_grad()
        cov2d = g.get_covariance()[:, :2, :2] / (xyz[:, 2:, None] + 3.0) ** 2 + 0.01 * torch.eye(2, dtype=xyz.dtype)
        conic = torch.linalg.inv(cov2d)
        d = pixels[:, None] - screenspace[None]
        power = -0.5 * torch.einsum("pni,nij,pnj->pn", d, conic, d)
        alpha = (g.get_opacity.T * torch.exp(power)).clamp(max=0.99)
        order = torch.argsort(xyz[:, 2].detach())
        alpha = alpha[:, order]
        T = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
        color = torch.clamp_min(C0 * g._features_dc[:, 0] + 0.5, 0.0)[order]
        image = (alpha * T) @ color
        visibility_filter = (alpha > 1 / 255).any(0)[torch.argsort(order)]
        return image, screenspace, visibility_filter

    history, counts = [], []
    for iteration in range(1, steps + 1):
        gaussians.update_learning_rate(iteration)
        image, viewspace_point_tensor, visibility_filter = render(gaussians)
        Ll1 = torch.abs(image - gt).mean()
        loss = Ll1
        loss.backward()
        with torch.no_grad():
            gaussians.add_densification_stats(viewspace_point_tensor, visibility_filter)
            if iteration % 3 == 0:
                gaussians.densify_and_prune(1e-3, 0.005, 1.0)
            if iteration == 4:
                gaussians.reset_opacity()
            gaussians.optimizer.step()
            gaussians.optimizer.zero_grad(set_to_none=True)
        history.append(loss.item())
        counts.append(gaussians.get_xyz.shape[0])
    states = [(g["name"], gaussians.optimizer.state[g["params"][0]]["exp_avg"],
               gaussians.optimizer.state[g["params"][0]]["exp_avg_sq"]) for g in gaussians.optimizer.param_groups
              if g["params"][0] in gaussians.optimizer.state]
    return {"history": history, "counts": counts, "xyz": gaussians.get_xyz.detach(),
            "opacity": gaussians.get_opacity.detach(), "states": states,
            "lrs": [g["lr"] for g in gaussians.optimizer.param_groups]}


def test_gaussian_splatting_densification_rewrites_adam_state():
    ours, _ = run_both(gs_densify, rtol=1e-8, atol=1e-10)
    assert ours["counts"][2] != ours["counts"][1]  # densification changed the number of Gaussians
    assert len(ours["states"]) == 5 and ours["states"][0][1].shape == ours["xyz"].shape


# ----------------------------------------------------------------------------------------------
# mip-NeRF 360: conical frustums lifted to Gaussians, integrated positional encoding, scene contraction,
# the proposal network's interlevel loss (histogram bounds by searchsorted-free cumsum) and the
# distortion loss (pairwise |s_i - s_j| by broadcasting)
# ----------------------------------------------------------------------------------------------


def mipnerf360(m, steps=4, num_samples=8):
    torch, nn, optim = m.torch, m.nn, m.optim
    rng = np.random.default_rng(41)
    eps = torch.finfo(torch.float64).eps

    def lift_gaussian(d, t_mean, t_var, r_var, diag=True):
        mean = d[..., None, :] * t_mean[..., None]
        d_mag_sq = torch.maximum(torch.tensor(1e-10, dtype=d.dtype), torch.sum(d ** 2, dim=-1, keepdim=True))
        if diag:
            d_outer_diag = d ** 2
            null_outer_diag = 1 - d_outer_diag / d_mag_sq
            t_cov_diag = t_var[..., None] * d_outer_diag[..., None, :]
            xy_cov_diag = r_var[..., None] * null_outer_diag[..., None, :]
            cov_diag = t_cov_diag + xy_cov_diag
            return mean, cov_diag

    def conical_frustum_to_gaussian(d, t0, t1, base_radius, diag, stable=True):
        mu = (t0 + t1) / 2
        hw = (t1 - t0) / 2
        t_mean = mu + (2 * mu * hw ** 2) / (3 * mu ** 2 + hw ** 2)
        t_var = (hw ** 2) / 3 - (4 / 15) * ((hw ** 4 * (12 * mu ** 2 - hw ** 2)) / (3 * mu ** 2 + hw ** 2) ** 2)
        r_var = base_radius ** 2 * ((mu ** 2) / 4 + (5 / 12) * hw ** 2 - 4 / 15 * (hw ** 4) / (3 * mu ** 2 + hw ** 2))
        return lift_gaussian(d, t_mean, t_var, r_var, diag)

    def contract(x):
        x_mag_sq = torch.sum(x ** 2, dim=-1, keepdim=True).clamp_min(eps)
        z = torch.where(x_mag_sq <= 1, x, ((2 * torch.sqrt(x_mag_sq) - 1) / x_mag_sq) * x)
        return z

    def integrated_pos_enc(x_coord, min_deg, max_deg, diag=True):
        x, x_cov_diag = x_coord
        scales = torch.tensor([2 ** i for i in range(min_deg, max_deg)], dtype=x.dtype)
        shape = list(x.shape[:-1]) + [-1]
        y = torch.reshape(x[..., None, :] * scales[:, None], shape)
        y_var = torch.reshape(x_cov_diag[..., None, :] * scales[:, None] ** 2, shape)
        x = torch.cat([y, y + 0.5 * math.pi], -1)
        y_var = torch.cat([y_var] * 2, -1)
        return torch.exp(-0.5 * y_var) * torch.sin(x)

    def lossfun_distortion(t, w):
        ut = (t[..., 1:] + t[..., :-1]) / 2
        dut = torch.abs(ut[..., :, None] - ut[..., None, :])
        loss_inter = torch.sum(w * torch.sum(w[..., None, :] * dut, dim=-1), dim=-1)
        loss_intra = torch.sum(w ** 2 * (t[..., 1:] - t[..., :-1]), dim=-1) / 3
        return loss_inter + loss_intra

    def inner_outer(t0, t1, y1):
        cy1 = torch.cat([torch.zeros_like(y1[..., :1]), torch.cumsum(y1, dim=-1)], dim=-1)
        idx_lo = torch.searchsorted(t1.contiguous(), t0.contiguous(), right=True) - 1
        idx_lo = idx_lo.clamp(0, t1.shape[-1] - 1)
        idx_hi = torch.searchsorted(t1.contiguous(), t0.contiguous(), right=False)
        idx_hi = idx_hi.clamp(0, t1.shape[-1] - 1)
        cy1_lo = torch.take_along_dim(cy1, idx_lo, dim=-1)
        cy1_hi = torch.take_along_dim(cy1, idx_hi, dim=-1)
        y0_outer = cy1_hi[..., 1:] - cy1_lo[..., :-1]
        y0_inner = torch.where(idx_hi[..., :-1] <= idx_lo[..., 1:], cy1_lo[..., 1:] - cy1_hi[..., :-1],
                               torch.zeros_like(idx_lo[..., 1:], dtype=cy1.dtype))
        return y0_inner, y0_outer

    def lossfun_outer(t, w, t_env, w_env):
        _, w_outer = inner_outer(t, t_env, w_env)
        return torch.clip(w - w_outer, min=0) ** 2 / (w + eps)

    class MLP(nn.Module):
        def __init__(self, deg=3, width=16):
            super().__init__()
            self.deg = deg
            self.net = nn.Sequential(nn.Linear(2 * 3 * deg, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                     nn.Linear(width, 4))

        def forward(self, d, t, radius):
            mean, cov = conical_frustum_to_gaussian(d, t[..., :-1], t[..., 1:], radius, True)
            feats = integrated_pos_enc((contract(mean), cov), 0, self.deg)
            raw = self.net(feats)
            return raw[..., :3], nn.functional.softplus(raw[..., 3] - 1)

    torch.manual_seed(0)
    prop_mlp, nerf_mlp = MLP(deg=2).double(), MLP(deg=3).double()
    for mod in (prop_mlp, nerf_mlp):
        for p in mod.parameters():
            with torch.no_grad():
                p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)) * 0.4))
    with torch.no_grad():
        prop_mlp.net[-1].bias[3] = -3.0  # a thin proposal: the fine weights stick out of its envelope
    n_rays = 4
    dirs = torch.tensor(rng.standard_normal((n_rays, 3)))
    radii = torch.full((n_rays, 1), 0.01, dtype=torch.float64)
    target = torch.tensor(rng.uniform(0, 1, (n_rays, 3)))
    optimizer = optim.Adam(list(prop_mlp.parameters()) + list(nerf_mlp.parameters()), lr=2e-3)
    history = []
    for step in range(steps):
        s = torch.linspace(0, 1, num_samples + 1, dtype=torch.float64).expand(n_rays, -1)
        t = 0.2 + s * (4.0 - 0.2)
        _, density = prop_mlp(dirs, t, radii)
        delta = density * (t[..., 1:] - t[..., :-1]) * torch.norm(dirs, dim=-1, keepdim=True)
        alpha = 1 - torch.exp(-delta)
        trans = torch.exp(-torch.cat([torch.zeros_like(delta[..., :1]), torch.cumsum(delta[..., :-1], dim=-1)],
                                     dim=-1))
        w_prop = alpha * trans
        t_fine = torch.sort(torch.cat([t, (t[..., 1:] + t[..., :-1]) / 2], -1), -1)[0]
        rgb, density = nerf_mlp(dirs, t_fine, radii)
        delta = density * (t_fine[..., 1:] - t_fine[..., :-1]) * torch.norm(dirs, dim=-1, keepdim=True)
        alpha = 1 - torch.exp(-delta)
        trans = torch.exp(-torch.cat([torch.zeros_like(delta[..., :1]), torch.cumsum(delta[..., :-1], dim=-1)],
                                     dim=-1))
        w = alpha * trans
        color = (w[..., None] * torch.sigmoid(rgb)).sum(-2)
        data_loss = torch.sqrt((color - target) ** 2 + 1e-3 ** 2).mean()
        interlevel = lossfun_outer(t_fine.detach(), w.detach(), t, w_prop).mean()
        distortion = lossfun_distortion(t_fine, w).mean()
        loss = data_loss + interlevel + 0.01 * distortion
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((data_loss.item(), interlevel.item(), distortion.item()))
    return {"history": history, "w": w.detach(), "w_prop": w_prop.detach(),
            "contract": contract(torch.tensor([[0.5, 0., 0.], [3., 4., 0.]], dtype=torch.float64)),
            "grads": [p.grad for p in list(prop_mlp.parameters()) + list(nerf_mlp.parameters())]}


def test_mipnerf360_ipe_contraction_interlevel_and_distortion():
    ours, _ = run_both(mipnerf360, rtol=1e-8, atol=1e-10)
    # a point of norm 5 is contracted to norm 2 - 1/5
    np.testing.assert_allclose(np.linalg.norm(ours["contract"], axis=-1), [0.5, 1.8])
    assert all(np.abs(g).sum() > 0 for g in ours["grads"])


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


# ----------------------------------------------------------------------------------------------
# Occupancy Networks: a ResNet-PointNet encoder (max pooling over points), a decoder of ResnetBlockFC
# layers with conditional batch norm (CBatchNorm1d, gamma and beta from the latent code, as Conv1d),
# binary cross-entropy on occupancy logits, IoU
# ----------------------------------------------------------------------------------------------


def onet_net(m, c_dim=8, hidden=16):
    torch, nn, F = m.torch, m.nn, m.F

    def maxpool(x, dim=-1, keepdim=False):
        out, _ = x.max(dim=dim, keepdim=keepdim)
        return out

    class ResnetBlockFC(nn.Module):
        def __init__(self, size_in, size_out=None, size_h=None):
            super().__init__()
            if size_out is None:
                size_out = size_in
            if size_h is None:
                size_h = min(size_in, size_out)
            self.size_in, self.size_h, self.size_out = size_in, size_h, size_out
            self.fc_0 = nn.Linear(size_in, size_h)
            self.fc_1 = nn.Linear(size_h, size_out)
            self.actvn = nn.ReLU()
            if size_in == size_out:
                self.shortcut = None
            else:
                self.shortcut = nn.Linear(size_in, size_out, bias=False)
            nn.init.zeros_(self.fc_1.weight)

        def forward(self, x):
            net = self.fc_0(self.actvn(x))
            dx = self.fc_1(self.actvn(net))
            if self.shortcut is not None:
                x_s = self.shortcut(x)
            else:
                x_s = x
            return x_s + dx

    class ResnetPointnet(nn.Module):
        def __init__(self, c_dim=128, dim=3, hidden_dim=128):
            super().__init__()
            self.c_dim = c_dim
            self.fc_pos = nn.Linear(dim, 2 * hidden_dim)
            self.block_0 = ResnetBlockFC(2 * hidden_dim, hidden_dim)
            self.block_1 = ResnetBlockFC(2 * hidden_dim, hidden_dim)
            self.fc_c = nn.Linear(hidden_dim, c_dim)
            self.actvn = nn.ReLU()
            self.pool = maxpool

        def forward(self, p):
            batch_size, T, D = p.size()
            net = self.fc_pos(p)
            net = self.block_0(net)
            pooled = self.pool(net, dim=1, keepdim=True).expand(net.size())
            net = torch.cat([net, pooled], dim=2)
            net = self.block_1(net)
            net = self.pool(net, dim=1)
            c = self.fc_c(self.actvn(net))
            return c

    class CBatchNorm1d(nn.Module):
        def __init__(self, c_dim, f_dim, norm_method='batch_norm'):
            super().__init__()
            self.c_dim = c_dim
            self.f_dim = f_dim
            self.conv_gamma = nn.Conv1d(c_dim, f_dim, 1)
            self.conv_beta = nn.Conv1d(c_dim, f_dim, 1)
            self.bn = nn.BatchNorm1d(f_dim, affine=False)
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.zeros_(self.conv_gamma.weight)
            nn.init.zeros_(self.conv_beta.weight)
            nn.init.ones_(self.conv_gamma.bias)
            nn.init.zeros_(self.conv_beta.bias)

        def forward(self, x, c):
            assert (x.size(0) == c.size(0))
            assert (c.size(1) == self.c_dim)
            if len(c.size()) == 2:
                c = c.unsqueeze(2)
            gamma = self.conv_gamma(c)
            beta = self.conv_beta(c)
            net = self.bn(x)
            out = gamma * net + beta
            return out

    class CResnetBlockConv1d(nn.Module):
        def __init__(self, c_dim, size_in, size_h=None, size_out=None):
            super().__init__()
            size_h = size_in if size_h is None else size_h
            size_out = size_in if size_out is None else size_out
            self.bn_0 = CBatchNorm1d(c_dim, size_in)
            self.bn_1 = CBatchNorm1d(c_dim, size_h)
            self.fc_0 = nn.Conv1d(size_in, size_h, 1)
            self.fc_1 = nn.Conv1d(size_h, size_out, 1)
            self.actvn = nn.ReLU()
            self.shortcut = None if size_in == size_out else nn.Conv1d(size_in, size_out, 1, bias=False)
            nn.init.zeros_(self.fc_1.weight)

        def forward(self, x, c):
            net = self.fc_0(self.actvn(self.bn_0(x, c)))
            dx = self.fc_1(self.actvn(self.bn_1(net, c)))
            x_s = self.shortcut(x) if self.shortcut is not None else x
            return x_s + dx

    class DecoderCBatchNorm(nn.Module):
        def __init__(self, dim=3, z_dim=0, c_dim=128, hidden_size=256, leaky=False):
            super().__init__()
            self.fc_p = nn.Conv1d(dim, hidden_size, 1)
            self.block0 = CResnetBlockConv1d(c_dim, hidden_size)
            self.block1 = CResnetBlockConv1d(c_dim, hidden_size)
            self.bn = CBatchNorm1d(c_dim, hidden_size)
            self.fc_out = nn.Conv1d(hidden_size, 1, 1)
            self.actvn = F.relu if not leaky else (lambda x: F.leaky_relu(x, 0.2))

        def forward(self, p, z, c, **kwargs):
            p = p.transpose(1, 2)
            net = self.fc_p(p)
            net = self.block0(net, c)
            net = self.block1(net, c)
            out = self.fc_out(self.actvn(self.bn(net, c)))
            out = out.squeeze(1)
            return out

    class OccupancyNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = ResnetPointnet(c_dim=c_dim, hidden_dim=hidden)
            self.decoder = DecoderCBatchNorm(c_dim=c_dim, hidden_size=hidden)

        def forward(self, p, inputs):
            c = self.encoder(inputs)
            return torch.distributions.Bernoulli(logits=self.decoder(p, None, c))

    return OccupancyNetwork()


def onet(m, weights, steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, onet_net(m), weights).double()
    rng = np.random.default_rng(47)
    B, T, P = 3, 20, 24
    radii = np.array([0.4, 0.6, 0.8])
    surface = rng.standard_normal((B, T, 3))
    surface = surface / np.linalg.norm(surface, axis=-1, keepdims=True) * radii[:, None, None]
    p = rng.uniform(-1, 1, (B, P, 3))
    occ = (np.linalg.norm(p, axis=-1) < radii[:, None]).astype(np.float64)
    inputs, p, occ = torch.tensor(surface), torch.tensor(p), torch.tensor(occ)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for it in range(steps):
        model.train()
        optimizer.zero_grad()
        c = model.encoder(inputs)
        logits = model.decoder(p, None, c)
        loss_i = F.binary_cross_entropy_with_logits(logits, occ, reduction='none')
        loss = loss_i.sum(-1).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        p_out = model(p, inputs)
        occ_iou_hat_np = (p_out.probs >= 0.5).cpu().numpy()
    occ_np = (occ >= 0.5).cpu().numpy()
    iou = (occ_iou_hat_np & occ_np).sum(-1) / np.maximum((occ_iou_hat_np | occ_np).sum(-1), 1)
    return {"history": history, "probs": p_out.probs, "iou": iou,
            "grads": {n: p.grad for n, p in model.named_parameters()},
            "running": {n: b for n, b in model.named_buffers()}}


def test_occupancy_network_with_conditional_batch_norm():
    weights = weights_of(onet_net)
    ours, _ = run_both(onet, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    assert np.abs(ours["grads"]["decoder.bn.conv_gamma.weight"]).sum() > 0


# ----------------------------------------------------------------------------------------------
# DVGO: dense voxel grids read by 5-D grid_sample (trilinear), a softplus density with a shift, the
# grid upscaled by F.interpolate(mode='trilinear') mid-training, a max_pool3d-dilated occupancy mask,
# and total variation of the grid
# ----------------------------------------------------------------------------------------------


def dvgo(m, steps=5, scale_at=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(53)

    class DenseGrid(nn.Module):
        def __init__(self, channels, world_size, xyz_min, xyz_max):
            super(DenseGrid, self).__init__()
            self.channels = channels
            self.world_size = world_size
            self.register_buffer('xyz_min', torch.tensor(xyz_min, dtype=torch.float64))
            self.register_buffer('xyz_max', torch.tensor(xyz_max, dtype=torch.float64))
            self.grid = nn.Parameter(torch.tensor(rng.standard_normal([1, channels, *world_size]) * 0.3))

        def forward(self, xyz):
            shape = xyz.shape[:-1]
            xyz = xyz.reshape(1, 1, 1, -1, 3)
            ind_norm = ((xyz - self.xyz_min) / (self.xyz_max - self.xyz_min)).flip((-1,)) * 2 - 1
            out = F.grid_sample(self.grid, ind_norm, mode='bilinear', align_corners=True)
            out = out.reshape(self.channels, -1).T.reshape(*shape, self.channels)
            if self.channels == 1:
                out = out.squeeze(-1)
            return out

        def scale_volume_grid(self, new_world_size):
            self.grid = nn.Parameter(F.interpolate(self.grid.data, size=tuple(new_world_size), mode='trilinear',
                                                   align_corners=True))

        def total_variation_add_grad(self, wx, wy, wz, dense_mode):
            tv = (wz * (self.grid[:, :, 1:] - self.grid[:, :, :-1]).abs().mean()
                  + wy * (self.grid[:, :, :, 1:] - self.grid[:, :, :, :-1]).abs().mean()
                  + wx * (self.grid[:, :, :, :, 1:] - self.grid[:, :, :, :, :-1]).abs().mean())
            return tv

    class DirectVoxGO(nn.Module):
        def __init__(self):
            super().__init__()
            self.alpha_init = 1e-2
            self.voxel_size = 2.0 / 4
            self.act_shift = np.log(1 / (1 - self.alpha_init) - 1)
            self.density = DenseGrid(1, [4, 4, 4], [-1, -1, -1], [1, 1, 1])
            self.k0 = DenseGrid(3, [4, 4, 4], [-1, -1, -1], [1, 1, 1])

        def activate_density(self, density, interval=None):
            interval = interval if interval is not None else 0.5
            shape = density.shape
            return (1 - torch.exp(-F.softplus(density.flatten() + self.act_shift) * interval)).reshape(shape)

        @torch.no_grad()
        def scale_volume_grid(self, num_voxels):
            self.density.scale_volume_grid(num_voxels)
            self.k0.scale_volume_grid(num_voxels)
            cache_grid_alpha = self.activate_density(self.density.grid)
            self.mask = F.max_pool3d(cache_grid_alpha, kernel_size=3, padding=1, stride=1)[0, 0] > 1e-3

    model = DirectVoxGO()
    n_rays, n_pts = 5, 9
    rays_o = torch.tensor(rng.uniform(-0.3, 0.3, (n_rays, 3)) + np.array([0, 0, -1.5]))
    rays_d = torch.tensor(rng.standard_normal((n_rays, 3)) * 0.2 + np.array([0, 0, 1.0]))
    target = torch.tensor(rng.uniform(0, 1, (n_rays, 3)))

    def make_optimizer():
        return torch.optim.Adam([{'params': model.density.parameters(), 'lr': 1e-1, 'skip_zero_grad': True},
                                 {'params': model.k0.parameters(), 'lr': 1e-1, 'skip_zero_grad': True}],
                                betas=(0.9, 0.99))

    optimizer = make_optimizer()
    history = []
    for it in range(steps):
        if it == scale_at:
            model.scale_volume_grid([6, 7, 5])
            optimizer = make_optimizer()
        t = torch.linspace(0.2, 3.0, n_pts, dtype=torch.float64)
        pts = rays_o[:, None] + rays_d[:, None] * t[None, :, None]
        inside = ((pts >= -1) & (pts <= 1)).all(-1)
        density = model.density(pts)
        alpha = model.activate_density(density, interval=(t[1] - t[0]).item()) * inside
        T = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], -1), -1)
        weights = alpha * T
        rgb = torch.sigmoid(model.k0(pts))
        rgb_marched = (weights[..., None] * rgb).sum(-2) + T[:, -1:] * (1 - alpha[:, -1:]) * 1.0
        loss = F.mse_loss(rgb_marched, target)
        pout = -torch.log(1 - T[:, -1].clamp(1e-6, 1 - 1e-6))
        loss = loss + 1e-3 * pout.mean()
        loss = loss + model.density.total_variation_add_grad(1e-3, 1e-3, 1e-3, True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "mask": model.mask, "grid_shape": tuple(model.density.grid.shape),
            "density_grad": model.density.grid.grad, "k0_grad": model.k0.grid.grad,
            "rgb": rgb_marched.detach()}


def test_dvgo_dense_grids_with_trilinear_upscaling():
    ours, _ = run_both(dvgo, rtol=1e-8, atol=1e-10)
    assert ours["grid_shape"] == (1, 1, 6, 7, 5) and ours["mask"].shape == (6, 7, 5)


# ----------------------------------------------------------------------------------------------
# An SDF's normals and mean curvature by torch.func (vmap of jacrev / hessian over functional_call),
# an eikonal + curvature loss differentiated by grad_and_value, and the same normals by autograd.grad
# ----------------------------------------------------------------------------------------------


def sdf_func(m, steps=3):
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(59)
    net = nn.Sequential(nn.Linear(3, 16), nn.Softplus(beta=10), nn.Linear(16, 16), nn.Softplus(beta=10),
                        nn.Linear(16, 1)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)) * 0.5))
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = torch.tensor(rng.standard_normal((6, 3)))

    def f(params, x):
        return torch.func.functional_call(net, params, (x,)).squeeze(-1)

    def loss_fn(params, x):
        normals = torch.func.vmap(torch.func.jacrev(f, argnums=1), in_dims=(None, 0))(params, x)
        hess = torch.func.vmap(torch.func.hessian(f, argnums=1), in_dims=(None, 0))(params, x)
        mean_curvature = torch.diagonal(hess, dim1=-2, dim2=-1).sum(-1)
        eikonal = ((normals.norm(dim=-1) - 1) ** 2).mean()
        return eikonal + 1e-2 * mean_curvature.abs().mean(), (normals, mean_curvature)

    history = []
    lr = 1e-2
    for step in range(steps):
        grads, (loss, (normals, curvature)) = torch.func.grad_and_value(loss_fn, has_aux=True)(params, x)
        params = {k: v - lr * grads[k] for k, v in params.items()}
        history.append(loss.item())
    xg = x.clone().requires_grad_(True)
    y = torch.func.functional_call(net, params, (xg,))
    (normals_autograd,) = torch.autograd.grad(y.sum(), xg)
    return {"history": history, "normals": normals, "curvature": curvature, "params": params,
            "normals_autograd": normals_autograd,
            "normals_final": torch.func.vmap(torch.func.jacrev(f, argnums=1), in_dims=(None, 0))(params, x)}


def test_sdf_normals_and_curvature_by_torch_func():
    ours, _ = run_both(sdf_func, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["normals_final"], ours["normals_autograd"], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# BARF: camera poses refined jointly with the field (se(3) exponential by Taylor series, poses composed
# and inverted by hand, the pose corrections an nn.Embedding), rays from a meshgrid through the inverse
# intrinsics, coarse-to-fine positional encoding weighted by an in-place clamp_/mul_/cos_ chain
# ----------------------------------------------------------------------------------------------


def barf(m, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(61)

    class Lie():
        def so3_to_SO3(self, w):
            wx = self.skew_symmetric(w)
            theta = w.norm(dim=-1)[..., None, None]
            I = torch.eye(3, device=w.device, dtype=torch.float32)
            A = self.taylor_A(theta)
            B = self.taylor_B(theta)
            R = I + A * wx + B * wx @ wx
            return R

        def se3_to_SE3(self, wu):
            w, u = wu.split([3, 3], dim=-1)
            wx = self.skew_symmetric(w)
            theta = w.norm(dim=-1)[..., None, None]
            I = torch.eye(3, device=w.device, dtype=torch.float32)
            A = self.taylor_A(theta)
            B = self.taylor_B(theta)
            C = self.taylor_C(theta)
            R = I + A * wx + B * wx @ wx
            V = I + B * wx + C * wx @ wx
            Rt = torch.cat([R, (V @ u[..., None])], dim=-1)
            return Rt

        def skew_symmetric(self, w):
            w0, w1, w2 = w.unbind(dim=-1)
            O = torch.zeros_like(w0)
            wx = torch.stack([torch.stack([O, -w2, w1], dim=-1),
                              torch.stack([w2, O, -w0], dim=-1),
                              torch.stack([-w1, w0, O], dim=-1)], dim=-2)
            return wx

        def taylor_A(self, x, nth=10):
            ans = torch.zeros_like(x)
            denom = 1.
            for i in range(nth + 1):
                if i > 0: denom *= (2 * i) * (2 * i + 1)
                ans = ans + (-1) ** i * x ** (2 * i) / denom
            return ans

        def taylor_B(self, x, nth=10):
            ans = torch.zeros_like(x)
            denom = 1.
            for i in range(nth + 1):
                denom *= (2 * i + 1) * (2 * i + 2)
                ans = ans + (-1) ** i * x ** (2 * i) / denom
            return ans

        def taylor_C(self, x, nth=10):
            ans = torch.zeros_like(x)
            denom = 1.
            for i in range(nth + 1):
                denom *= (2 * i + 2) * (2 * i + 3)
                ans = ans + (-1) ** i * x ** (2 * i) / denom
            return ans

    lie = Lie()

    class Pose():
        def __call__(self, R=None, t=None):
            if R is None:
                if not isinstance(t, torch.Tensor): t = torch.tensor(t)
                R = torch.eye(3, device=t.device).repeat(*t.shape[:-1], 1, 1)
            elif t is None:
                if not isinstance(R, torch.Tensor): R = torch.tensor(R)
                t = torch.zeros(R.shape[:-1], device=R.device)
            else:
                if not isinstance(R, torch.Tensor): R = torch.tensor(R)
                if not isinstance(t, torch.Tensor): t = torch.tensor(t)
            assert (R.shape[:-1] == t.shape and R.shape[-2:] == (3, 3))
            R = R.float()
            t = t.float()
            pose = torch.cat([R, t[..., None]], dim=-1)
            assert (pose.shape[-2:] == (3, 4))
            return pose

        def invert(self, pose, use_inverse=False):
            R, t = pose[..., :3], pose[..., 3:]
            R_inv = R.inverse() if use_inverse else R.transpose(-1, -2)
            t_inv = (-R_inv @ t)[..., 0]
            pose_inv = self(R=R_inv, t=t_inv)
            return pose_inv

        def compose(self, pose_list):
            pose_new = pose_list[0]
            for pose in pose_list[1:]:
                pose_new = self.compose_pair(pose_new, pose)
            return pose_new

        def compose_pair(self, pose_a, pose_b):
            R_a, t_a = pose_a[..., :3], pose_a[..., 3:]
            R_b, t_b = pose_b[..., :3], pose_b[..., 3:]
            R_new = R_b @ R_a
            t_new = (R_b @ t_a + t_b)[..., 0]
            pose_new = self(R=R_new, t=t_new)
            return pose_new

    pose = Pose()

    def to_hom(X):
        X_hom = torch.cat([X, torch.ones_like(X[..., :1])], dim=-1)
        return X_hom

    def cam2world(X, pose_):
        X_hom = to_hom(X)
        pose_inv = pose.invert(pose_)
        return X_hom @ pose_inv.transpose(-1, -2)

    def get_center_and_ray(pose_, intr, H, W):
        with torch.no_grad():
            y_range = torch.arange(H, dtype=torch.float32).add_(0.5)
            x_range = torch.arange(W, dtype=torch.float32).add_(0.5)
            Y, X = torch.meshgrid(y_range, x_range, indexing="ij")
            xy_grid = torch.stack([X, Y], dim=-1).view(-1, 2)
        batch_size = len(pose_)
        xy_grid = xy_grid.repeat(batch_size, 1, 1)
        grid_3D = torch.cat([xy_grid, torch.ones_like(xy_grid[..., :1])], dim=-1) @ intr.inverse().transpose(-1, -2)
        center_3D = torch.zeros_like(grid_3D)
        grid_3D = cam2world(grid_3D, pose_)
        center_3D = cam2world(center_3D, pose_)
        ray = grid_3D - center_3D
        return center_3D, ray

    def positional_encoding(input, L, progress, c2f=(0.1, 0.5)):
        shape = input.shape
        freq = 2 ** torch.arange(L, dtype=torch.float32) * np.pi
        spectrum = input[..., None] * freq
        sin, cos = spectrum.sin(), spectrum.cos()
        input_enc = torch.stack([sin, cos], dim=-2)
        input_enc = input_enc.view(*shape[:-1], -1)
        start, end = c2f
        alpha = (progress.data - start) / (end - start) * L
        k = torch.arange(L, dtype=torch.float32)
        weight = (1 - (alpha - k).clamp_(min=0, max=1).mul_(np.pi).cos_()) / 2
        shape = input_enc.shape
        input_enc = (input_enc.view(-1, L) * weight).view(*shape)
        return input_enc

    class Graph(nn.Module):
        def __init__(self, n_views=3, L=4, W=16):
            super().__init__()
            self.L = L
            self.se3_refine = torch.nn.Embedding(n_views, 6)
            torch.nn.init.zeros_(self.se3_refine.weight)
            self.mlp = nn.Sequential(nn.Linear(3 + 6 * L, W), nn.ReLU(), nn.Linear(W, 4))
            self.progress = torch.nn.Parameter(torch.tensor(0.))

        def get_pose(self, pose_GT, pose_noise):
            pose = pose_GT if pose_noise is None else Pose().compose([pose_noise, pose_GT])
            se3_refine = self.se3_refine.weight
            pose_refine = lie.se3_to_SE3(se3_refine)
            return Pose().compose([pose_refine, pose])

        def forward(self, poses, intr, H, W, n_samples=6):
            center, ray = get_center_and_ray(poses, intr, H, W)
            depth = torch.linspace(1.0, 3.0, n_samples)[None, None, :, None]
            pts = center[..., None, :] + ray[..., None, :] * depth
            enc = positional_encoding(pts, self.L, self.progress)
            raw = self.mlp(torch.cat([pts, enc], dim=-1))
            rgb, density = raw[..., :3].sigmoid(), F.softplus(raw[..., 3])
            dist = (depth[..., 1:, 0] - depth[..., :-1, 0]) * ray.norm(dim=-1, keepdim=True)
            dist = torch.cat([dist, torch.full_like(dist[..., :1], 1e10)], dim=-1)
            sigma_delta = density * dist
            alpha = 1 - (-sigma_delta).exp_()
            T = (-torch.cat([torch.zeros_like(sigma_delta[..., :1]), sigma_delta[..., :-1]], dim=-1)
                 .cumsum(dim=-1)).exp_()
            prob = (T * alpha)[..., None]
            return (rgb * prob).sum(dim=-2)

    torch.manual_seed(0)
    graph = Graph()
    with torch.no_grad():
        for p in graph.mlp.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32) * 0.3))
    H, W = 3, 4
    intr = torch.tensor([[4.0, 0, W / 2], [0, 4.0, H / 2], [0, 0, 1]])
    pose_GT = torch.tensor(np.concatenate([np.tile(np.eye(3), (3, 1, 1)), rng.standard_normal((3, 3, 1)) * 0.1], -1),
                           dtype=torch.float32)
    se3_noise = torch.tensor(rng.standard_normal((3, 6)).astype(np.float32)) * 0.15
    pose_noise = lie.se3_to_SE3(se3_noise)
    target = torch.tensor(rng.uniform(0, 1, (3, H * W, 3)).astype(np.float32))
    optim_pose = torch.optim.Adam([dict(params=graph.se3_refine.parameters(), lr=1e-3)])
    optim_nerf = torch.optim.Adam([dict(params=graph.mlp.parameters(), lr=5e-4)])
    sched_pose = torch.optim.lr_scheduler.ExponentialLR(optim_pose, 0.9)
    history = []
    for it in range(steps):
        graph.progress.data.fill_(it / steps)
        optim_pose.zero_grad()
        optim_nerf.zero_grad()
        poses = graph.get_pose(pose_GT, pose_noise)
        rgb = graph(poses, intr, H, W)
        loss = F.mse_loss(rgb, target)
        loss.backward()
        optim_nerf.step()
        optim_pose.step()
        sched_pose.step()
        history.append(loss.item())
    poses = graph.get_pose(pose_GT, pose_noise)
    return {"history": history, "poses": poses.detach(), "se3_grad": graph.se3_refine.weight.grad,
            "rot": lie.so3_to_SO3(se3_noise[:, :3]), "lr": sched_pose.get_last_lr()}


def test_barf_pose_refinement_with_coarse_to_fine_encoding():
    ours, _ = run_both(barf, rtol=1e-5, atol=1e-6)
    assert np.abs(ours["se3_grad"]).sum() > 0
    # so(3) by Taylor series is a rotation: R R^T = I
    np.testing.assert_allclose(ours["rot"] @ ours["rot"].transpose(0, 2, 1), np.broadcast_to(np.eye(3), (3, 3, 3)),
                               atol=1e-6)


# ----------------------------------------------------------------------------------------------
# DeepSDF's auto-decoder: per-shape latent codes (nn.Embedding with max_norm, renormalised in place at
# lookup), a weight-normed decoder with the latent re-injected mid-way, clamped L1 on SDF samples
# ----------------------------------------------------------------------------------------------


def deepsdf_net(m, latent_size=4, num_scenes=3, dropout=None, code_bound=0.5):
    torch, nn, F = m.torch, m.nn, m.F

    class Decoder(nn.Module):
        def __init__(self, latent_size, dims, dropout=None, dropout_prob=0.0, norm_layers=(), latent_in=(),
                     weight_norm=False, xyz_in_all=None, use_tanh=False, latent_dropout=False):
            super(Decoder, self).__init__()
            dims = [latent_size + 3] + dims + [1]
            self.num_layers = len(dims)
            self.norm_layers = norm_layers
            self.latent_in = latent_in
            self.latent_dropout = latent_dropout
            if self.latent_dropout:
                self.lat_dp = nn.Dropout(0.2)
            self.xyz_in_all = xyz_in_all
            self.weight_norm = weight_norm
            for layer in range(0, self.num_layers - 1):
                if layer + 1 in latent_in:
                    out_dim = dims[layer + 1] - dims[0]
                else:
                    out_dim = dims[layer + 1]
                    if self.xyz_in_all and layer != self.num_layers - 2:
                        out_dim -= 3
                if weight_norm and layer in self.norm_layers:
                    setattr(self, "lin" + str(layer), nn.utils.weight_norm(nn.Linear(dims[layer], out_dim)))
                else:
                    setattr(self, "lin" + str(layer), nn.Linear(dims[layer], out_dim))
                if (not weight_norm) and self.norm_layers is not None and layer in self.norm_layers:
                    setattr(self, "bn" + str(layer), nn.LayerNorm(out_dim))
            self.use_tanh = use_tanh
            if use_tanh:
                self.tanh = nn.Tanh()
            self.relu = nn.ReLU()
            self.dropout_prob = dropout_prob
            self.dropout = dropout
            self.th = nn.Tanh()

        def forward(self, input):
            xyz = input[:, -3:]
            if input.shape[1] > 3 and self.latent_dropout:
                latent_vecs = input[:, :-3]
                latent_vecs = F.dropout(latent_vecs, p=0.2, training=self.training)
                x = torch.cat([latent_vecs, xyz], 1)
            else:
                x = input
            for layer in range(0, self.num_layers - 1):
                lin = getattr(self, "lin" + str(layer))
                if layer in self.latent_in:
                    x = torch.cat([x, input], 1)
                elif layer != 0 and self.xyz_in_all:
                    x = torch.cat([x, xyz], 1)
                x = lin(x)
                if layer == self.num_layers - 2 and self.use_tanh:
                    x = self.tanh(x)
                if layer < self.num_layers - 2:
                    if (self.norm_layers is not None and layer in self.norm_layers and not self.weight_norm):
                        bn = getattr(self, "bn" + str(layer))
                        x = bn(x)
                    x = self.relu(x)
                    if self.dropout is not None and layer in self.dropout:
                        x = F.dropout(x, p=self.dropout_prob, training=self.training)
            if hasattr(self, "th"):
                x = self.th(x)
            return x

    class AutoDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = Decoder(latent_size, [16, 16, 16, 16], dropout=dropout, dropout_prob=0.2,
                                   norm_layers=[0, 1, 2, 3], latent_in=[2], weight_norm=True, xyz_in_all=False,
                                   latent_dropout=False)
            self.lat_vecs = torch.nn.Embedding(num_scenes, latent_size, max_norm=code_bound)
            torch.nn.init.normal_(self.lat_vecs.weight.data, 0.0, 1.0 / np.sqrt(latent_size))

    return AutoDecoder()


def deepsdf(m, weights, steps=4, clamp_dist=0.1, dropout=None):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, deepsdf_net(m, dropout=dropout), weights)
    decoder, lat_vecs = model.decoder, model.lat_vecs
    rng = np.random.default_rng(67)
    n_scenes, per_scene = 3, 16
    xyz = rng.uniform(-1, 1, (n_scenes, per_scene, 3)).astype(np.float32)
    radii = np.array([0.3, 0.5, 0.7], dtype=np.float32)
    sdf = np.linalg.norm(xyz, axis=-1) - radii[:, None]
    sdf_data = torch.tensor(np.concatenate([xyz, sdf[..., None]], -1))
    indices = torch.arange(n_scenes)
    loss_l1 = torch.nn.L1Loss(reduction="sum")
    optimizer_all = torch.optim.Adam([{"params": decoder.parameters(), "lr": 5e-4},
                                      {"params": lat_vecs.parameters(), "lr": 1e-3}])
    history = []
    torch.manual_seed(0)
    for epoch in range(steps):
        decoder.train()
        sdf_data_ = sdf_data.reshape(-1, 4)
        num_sdf_samples = sdf_data_.shape[0]
        xyz_ = sdf_data_[:, 0:3]
        sdf_gt = torch.clamp(sdf_data_[:, 3].unsqueeze(1), -clamp_dist, clamp_dist)
        idx = indices.unsqueeze(-1).repeat(1, per_scene).view(-1)
        optimizer_all.zero_grad()
        batch_vecs = lat_vecs(idx)
        input = torch.cat([batch_vecs, xyz_], dim=1)
        pred_sdf = decoder(input)
        pred_sdf = torch.clamp(pred_sdf, -clamp_dist, clamp_dist)
        chunk_loss = loss_l1(pred_sdf, sdf_gt) / num_sdf_samples
        l2_size_loss = torch.sum(torch.norm(batch_vecs, dim=1))
        reg_loss = (1e-4 * min(1, epoch / 100) * l2_size_loss) / num_sdf_samples
        chunk_loss = chunk_loss + reg_loss
        chunk_loss.backward()
        optimizer_all.step()
        history.append(chunk_loss.item())
    return {"history": history, "lat": lat_vecs.weight.detach(),
            "grads": {n: p.grad for n, p in model.named_parameters()}}


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("dropout", [None, pytest.param([0, 1, 2, 3], marks=pytest.mark.skipif(
    not same_dropout_masks(), reason="PyTorch's dropout masks are not chainrule's here"))])
def test_deepsdf_auto_decoder(dropout):
    weights = weights_of(lambda m: deepsdf_net(m, dropout=dropout))
    ours, _ = run_both(deepsdf, weights, dropout=dropout, rtol=1e-5, atol=1e-6)
    # max_norm renormalises the looked-up codes in place to the code bound (0.5, from up to 0.68), and each
    # Adam step after the last lookup moves a code by a few lr
    assert np.all(np.abs(np.linalg.norm(ours["lat"], axis=1) - 0.5) <= 1e-2)


# ----------------------------------------------------------------------------------------------
# LLFF's spiral render path built in NumPy (float64) and handed to the renderer by torch.Tensor(...),
# the legacy constructor, which makes float32 of any array in PyTorch
# ----------------------------------------------------------------------------------------------


def spiral_render(m, n_views=3, H=3, W=4, focal=3.0):
    torch, nn, F = m.torch, m.nn, m.F

    def normalize(x):
        return x / np.linalg.norm(x)

    def viewmatrix(z, up, pos):
        vec2 = normalize(z)
        vec1_avg = up
        vec0 = normalize(np.cross(vec1_avg, vec2))
        vec1 = normalize(np.cross(vec2, vec0))
        m_ = np.stack([vec0, vec1, vec2, pos], 1)
        return m_

    def render_path_spiral(c2w, up, rads, focal, zdelta, zrate, rots, N):
        render_poses = []
        rads = np.array(list(rads) + [1.])
        hwf = c2w[:, 4:5]
        for theta in np.linspace(0., 2. * np.pi * rots, N + 1)[:-1]:
            c = np.dot(c2w[:3, :4], np.array([np.cos(theta), -np.sin(theta), -np.sin(theta * zrate), 1.]) * rads)
            z = normalize(c - np.dot(c2w[:3, :4], np.array([0, 0, -focal, 1.])))
            render_poses.append(np.concatenate([viewmatrix(z, up, c), hwf], 1))
        return render_poses

    c2w = np.concatenate([np.eye(3), np.zeros((3, 1)), np.array([[H], [W], [focal]])], 1)
    render_poses = np.array(render_path_spiral(c2w, np.array([0., 1., 0.]), [0.3, 0.2, 0.1], focal, 0.1, 0.5, 2,
                                               n_views))
    render_poses = torch.Tensor(render_poses)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
    images = []
    for c2w in render_poses[:, :3, :4]:
        i, j = torch.meshgrid(torch.linspace(0, W - 1, W), torch.linspace(0, H - 1, H), indexing='ij')
        dirs = torch.stack([(i.t() - W * .5) / focal, -(j.t() - H * .5) / focal, -torch.ones_like(i.t())], -1)
        rays_d = torch.sum(dirs[..., None, :] * c2w[:3, :3], -1)
        rays_o = c2w[:3, -1].expand(rays_d.shape)
        z_vals = torch.linspace(2., 6., 5)
        pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[:, None]
        raw = model(pts)
        alpha = 1. - torch.exp(-F.relu(raw[..., 3]) * 0.8)
        weights = alpha * torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1. - alpha + 1e-10], -1),
                                        -1)[..., :-1]
        images.append(torch.sum(weights[..., None] * torch.sigmoid(raw[..., :3]), -2))
    return render_poses.dtype == torch.float32, torch.stack(images, 0).detach()


@pytest.mark.xfail(strict=True, reason="autograd.Tensor(a float64 ndarray) keeps float64 (README: 'a floating array "
                   "keeps its dtype'), where PyTorch's legacy constructor makes float32 of any array: the rays are "
                   "float64 and nn.Linear's float32 weight refuses them (autograd/tensor.py, not this probe's file)")
def test_llff_spiral_poses_through_the_legacy_tensor_constructor():
    (is_float32, images), _ = run_both(spiral_render, rtol=1e-5, atol=1e-6)
    assert is_float32 and images.shape == (3, 3, 4, 3)


# ----------------------------------------------------------------------------------------------
# torch-ngp's pure-PyTorch pieces: trunc_exp as an autograd.Function under custom_fwd/custom_bwd, a hash-table
# lookup Function whose backward scatters by index_add_ (once_differentiable, needs_input_grad, an index
# output marked non-differentiable), a hook that freezes half the table, checkpointed MLP blocks that draw
# noise (the RNG state restored on recomputation), spherical-harmonics direction encoding of degree 3
# ----------------------------------------------------------------------------------------------


def ngp_functions(m, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    checkpoint = m.torch.utils.checkpoint.checkpoint
    custom_fwd, custom_bwd = torch.amp.custom_fwd, torch.amp.custom_bwd
    rng = np.random.default_rng(71)

    class _trunc_exp(torch.autograd.Function):
        @staticmethod
        @custom_fwd(device_type="cuda", cast_inputs=torch.float32)
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.exp(x)

        @staticmethod
        @custom_bwd(device_type="cuda")
        def backward(ctx, g):
            x = ctx.saved_tensors[0]
            return g * torch.exp(x.clamp(-15, 15))

    trunc_exp = _trunc_exp.apply

    class _hash_lookup(torch.autograd.Function):
        @staticmethod
        def forward(ctx, table, idx, w):
            ctx.save_for_backward(idx, w)
            ctx.table_shape = table.shape
            ctx.mark_non_differentiable(idx)
            return (table[idx] * w[..., None]).sum(1), idx

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad, grad_idx):
            idx, w = ctx.saved_tensors
            grad_table = None
            if ctx.needs_input_grad[0]:
                grad_table = torch.zeros(ctx.table_shape, dtype=grad.dtype)
                grad_table.index_add_(0, idx.reshape(-1), (grad[:, None, :] * w[..., None]).reshape(-1, grad.shape[-1]))
            return grad_table, None, None

    def sh_encode(dirs):
        x, y, z = dirs.unbind(-1)
        xy, xz, yz, x2, y2, z2 = x * y, x * z, y * z, x * x, y * y, z * z
        return torch.stack([
            0.28209479177387814 * torch.ones_like(x),
            -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
            1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * z2 - 0.31539156525251999,
            -1.0925484305920792 * xz, 0.54627421529603959 * x2 - 0.54627421529603959 * y2,
            0.59004358992664352 * y * (-3.0 * x2 + y2), 2.8906114426405538 * xy * z,
            0.45704579946446572 * y * (1.0 - 5.0 * z2), 0.3731763325901154 * z * (5.0 * z2 - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * z2), 1.4453057213202769 * z * (x2 - y2),
            0.59004358992664352 * x * (-x2 + 3.0 * y2)], -1)

    class NGPField(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.tensor(rng.uniform(-1e-1, 1e-1, (32, 4))))
            self.sigma_net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 5)).double()
            self.color_net = nn.Sequential(nn.Linear(16 + 4, 16), nn.ReLU(), nn.Linear(16, 3)).double()
            for p in self.parameters():
                if p is not self.table:
                    with torch.no_grad():
                        p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)) * 0.4))

        def forward(self, idx, w, dirs):
            feats, _ = _hash_lookup.apply(self.table, idx, w)
            h = checkpoint(lambda f: self.sigma_net(f) + 0.01 * torch.randn(f.shape[0], 5, dtype=f.dtype), feats,
                           use_reentrant=False)
            sigma = trunc_exp(h[..., 0])
            color = checkpoint(self.color_net, torch.cat([sh_encode(dirs), h[..., 1:]], -1), use_reentrant=False)
            return sigma, torch.sigmoid(color)

    field = NGPField()
    frozen = (torch.arange(32) % 2 == 1)
    field.table.register_hook(lambda g: g.masked_fill(frozen[:, None], 0.0))
    n = 12
    idx = torch.tensor(rng.integers(0, 32, (n, 8)))
    w = torch.tensor(rng.dirichlet(np.ones(8), n))
    dirs = F.normalize(torch.tensor(rng.standard_normal((n, 3))), dim=-1)
    target = torch.tensor(rng.uniform(0, 1, (n, 3)))
    optimizer = optim.Adam([{"params": [field.table], "lr": 1e-2, "eps": 1e-15},
                            {"params": list(field.sigma_net.parameters()) + list(field.color_net.parameters()),
                             "lr": 1e-3, "weight_decay": 1e-6}], betas=(0.9, 0.99))
    history = []
    torch.manual_seed(3)
    for step in range(steps):
        sigma, rgb = field(idx, w, dirs)
        loss = F.mse_loss(rgb * (1 - torch.exp(-sigma))[:, None], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "sigma": sigma.detach(), "sigma_dtype": str(sigma.dtype).split(".")[-1],
            "table_grad": field.table.grad, "sh": sh_encode(dirs),
            "grads": [p.grad for p in field.sigma_net.parameters()] + [p.grad for p in field.color_net.parameters()]}


def test_ngp_custom_functions_checkpoint_and_hooks():
    ours, _ = run_both(ngp_functions, rtol=1e-8, atol=1e-10)
    # the hook froze the odd rows; custom_fwd only casts on CUDA, so the CPU forward stays float64
    assert np.all(ours["table_grad"][1::2] == 0) and np.abs(ours["table_grad"][0::2]).sum() > 0
    assert ours["sigma_dtype"] == "float64"
    # SH of degree 0 and 1 are orthonormal on the sphere: for unit directions, band 1 has norm sqrt(3 / 4pi)
    np.testing.assert_allclose(np.linalg.norm(ours["sh"][:, 1:4], axis=-1), np.sqrt(3 / (4 * np.pi)), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# nerf-pytorch's training loop with PyTorch's random draws: rays of every pixel shuffled by randperm and
# batched, stratified perturbation by torch.rand, density noise by torch.randn, importance samples by
# sample_pdf(det=False), a fine network, and rendering of the full image in chunks under no_grad
# ----------------------------------------------------------------------------------------------


def nerf_loop(m, weights, iters=3, N_rand=8, N_samples=6, N_importance=4, chunk=7):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, nerf_full_net(m), weights)
    model_fine = load(m, nerf_full_net(m), weights)
    H, W, focal = 3, 4, 3.0
    rng = np.random.default_rng(73)
    image = torch.Tensor(rng.uniform(0, 1, (H, W, 3)).astype(np.float32))
    c2w = torch.Tensor(np.array([[1, 0, 0, 0.1], [0, 1, 0, -0.1], [0, 0, 1, 3.0]], dtype=np.float32))

    def batchify(fn, chunk):
        def ret(inputs):
            return torch.cat([fn(inputs[i:i + chunk]) for i in range(0, inputs.shape[0], chunk)], 0)
        return ret

    def run_network(inputs, viewdirs, fn, netchunk=16):
        inputs_flat = torch.reshape(inputs, [-1, inputs.shape[-1]])
        embedded = model.embed_fn(inputs_flat)
        input_dirs = viewdirs[:, None].expand(inputs.shape)
        input_dirs_flat = torch.reshape(input_dirs, [-1, input_dirs.shape[-1]])
        embedded = torch.cat([embedded, model.embeddirs_fn(input_dirs_flat)], -1)
        outputs_flat = batchify(fn, netchunk)(embedded)
        return torch.reshape(outputs_flat, list(inputs.shape[:-1]) + [outputs_flat.shape[-1]])

    def raw2outputs(raw, z_vals, rays_d, raw_noise_std=0.):
        raw2alpha = lambda raw, dists, act_fn=F.relu: 1. - torch.exp(-act_fn(raw) * dists)
        dists = z_vals[..., 1:] - z_vals[..., :-1]
        dists = torch.cat([dists, torch.Tensor([1e10]).expand(dists[..., :1].shape)], -1)
        dists = dists * torch.norm(rays_d[..., None, :], dim=-1)
        rgb = torch.sigmoid(raw[..., :3])
        noise = 0.
        if raw_noise_std > 0.:
            noise = torch.randn(raw[..., 3].shape) * raw_noise_std
        alpha = raw2alpha(raw[..., 3] + noise, dists)
        weights = alpha * torch.cumprod(torch.cat([torch.ones((alpha.shape[0], 1)), 1. - alpha + 1e-10], -1),
                                        -1)[:, :-1]
        rgb_map = torch.sum(weights[..., None] * rgb, -2)
        return rgb_map, weights

    def sample_pdf(bins, weights, N_samples, det=False):
        weights = weights + 1e-5
        pdf = weights / torch.sum(weights, -1, keepdim=True)
        cdf = torch.cumsum(pdf, -1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
        if det:
            u = torch.linspace(0., 1., steps=N_samples)
            u = u.expand(list(cdf.shape[:-1]) + [N_samples])
        else:
            u = torch.rand(list(cdf.shape[:-1]) + [N_samples])
        u = u.contiguous()
        inds = torch.searchsorted(cdf, u, right=True)
        below = torch.max(torch.zeros_like(inds - 1), inds - 1)
        above = torch.min((cdf.shape[-1] - 1) * torch.ones_like(inds), inds)
        inds_g = torch.stack([below, above], -1)
        matched_shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
        cdf_g = torch.gather(cdf.unsqueeze(1).expand(matched_shape), 2, inds_g)
        bins_g = torch.gather(bins.unsqueeze(1).expand(matched_shape), 2, inds_g)
        denom = (cdf_g[..., 1] - cdf_g[..., 0])
        denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
        t = (u - cdf_g[..., 0]) / denom
        return bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0])

    def render_rays(ray_batch, perturb=1., raw_noise_std=0.):
        N_rays = ray_batch.shape[0]
        rays_o, rays_d = ray_batch[:, 0:3], ray_batch[:, 3:6]
        viewdirs = ray_batch[:, -3:]
        near, far = 1.5, 4.5
        t_vals = torch.linspace(0., 1., steps=N_samples)
        z_vals = near * (1. - t_vals) + far * (t_vals)
        z_vals = z_vals.expand([N_rays, N_samples])
        if perturb > 0.:
            mids = .5 * (z_vals[..., 1:] + z_vals[..., :-1])
            upper = torch.cat([mids, z_vals[..., -1:]], -1)
            lower = torch.cat([z_vals[..., :1], mids], -1)
            t_rand = torch.rand(z_vals.shape)
            z_vals = lower + (upper - lower) * t_rand
        pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]
        raw = run_network(pts, viewdirs, model)
        rgb_map_0, weights = raw2outputs(raw, z_vals, rays_d, raw_noise_std)
        z_vals_mid = .5 * (z_vals[..., 1:] + z_vals[..., :-1])
        z_samples = sample_pdf(z_vals_mid, weights[..., 1:-1], N_importance, det=(perturb == 0.))
        z_samples = z_samples.detach()
        z_vals, _ = torch.sort(torch.cat([z_vals, z_samples], -1), -1)
        pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]
        raw = run_network(pts, viewdirs, model_fine)
        rgb_map, _ = raw2outputs(raw, z_vals, rays_d, raw_noise_std)
        return {'rgb_map': rgb_map, 'rgb0': rgb_map_0}

    def batchify_rays(rays_flat, chunk):
        all_ret = {}
        for i in range(0, rays_flat.shape[0], chunk):
            ret = render_rays(rays_flat[i:i + chunk], perturb=0.)
            for k in ret:
                all_ret.setdefault(k, []).append(ret[k])
        return {k: torch.cat(all_ret[k], 0) for k in all_ret}

    i, j = torch.meshgrid(torch.linspace(0, W - 1, W), torch.linspace(0, H - 1, H), indexing='ij')
    i, j = i.t(), j.t()
    dirs = torch.stack([(i - W * .5) / focal, -(j - H * .5) / focal, -torch.ones_like(i)], -1)
    rays_d = torch.sum(dirs[..., np.newaxis, :] * c2w[:3, :3], -1)
    rays_o = c2w[:3, -1].expand(rays_d.shape)
    viewdirs = rays_d / torch.norm(rays_d, dim=-1, keepdim=True)
    rays_rgb = torch.cat([rays_o, rays_d, viewdirs, image], -1).reshape(-1, 12)
    torch.manual_seed(0)
    rays_rgb = rays_rgb[torch.randperm(rays_rgb.shape[0])]
    grad_vars = list(model.parameters()) + list(model_fine.parameters())
    optimizer = torch.optim.Adam(params=grad_vars, lr=5e-4, betas=(0.9, 0.999))
    img2mse = lambda x, y: torch.mean((x - y) ** 2)
    mse2psnr = lambda x: -10. * torch.log(x) / torch.log(torch.Tensor([10.]))
    i_batch, history = 0, []
    for it in range(iters):
        batch = rays_rgb[i_batch:i_batch + N_rand]
        batch_rays, target_s = batch[:, :9], batch[:, 9:]
        i_batch += N_rand
        if i_batch >= rays_rgb.shape[0]:
            rand_idx = torch.randperm(rays_rgb.shape[0])
            rays_rgb = rays_rgb[rand_idx]
            i_batch = 0
        ret = render_rays(batch_rays, perturb=1., raw_noise_std=1.)
        optimizer.zero_grad()
        img_loss = img2mse(ret['rgb_map'], target_s)
        loss = img_loss + img2mse(ret['rgb0'], target_s)
        psnr = mse2psnr(img_loss)
        loss.backward()
        optimizer.step()
        history.append((loss.item(), psnr.item()))
    with torch.no_grad():
        rays = torch.cat([rays_o, rays_d, viewdirs], -1).reshape(-1, 9)
        rendered = batchify_rays(rays, chunk)['rgb_map'].reshape(H, W, 3)
    return {"history": history, "rendered": rendered, "order": rays_rgb[:, 9:],
            "grads": [p.grad for p in grad_vars]}


def test_nerf_training_loop_with_torch_random_draws():
    weights = weights_of(nerf_full_net)
    ours, _ = run_both(nerf_loop, weights, rtol=1e-4, atol=1e-6)
    assert ours["rendered"].shape == (3, 4, 3)
    assert all(np.isfinite(g).all() for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# IDR: sphere tracing under no_grad with boolean-mask updates, the surface point made differentiable by
# implicit differentiation (x = c + (t - (f(x) - f(x).detach()) / (∇f·v)) v), the mask loss on the minimum
# SDF along non-hit rays (BCE with logits of -alpha·sdf), and the eikonal loss
# ----------------------------------------------------------------------------------------------


def idr(m, weights, steps=3, n_rays=8, n_march=30, n_samples=10, alpha=50.0, step_scale=0.5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    implicit_network = load(m, igr_net(m), weights).double()
    rendering_network = nn.Sequential(nn.Linear(9, 16), nn.ReLU(), nn.Linear(16, 3), nn.Tanh()).double()
    rng = np.random.default_rng(79)
    with torch.no_grad():
        for p in rendering_network.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)) * 0.3))
    cam_loc = torch.tensor([0.0, 0.0, -2.5], dtype=torch.float64)
    ray_dirs = torch.tensor(rng.standard_normal((n_rays, 3)) * np.array([0.35, 0.35, 0.0]) + np.array([0, 0, 1.0]))
    ray_dirs = F.normalize(ray_dirs, dim=-1)
    object_mask = torch.tensor(rng.uniform(0, 1, n_rays) < 0.6)
    rgb_gt = torch.tensor(rng.uniform(-1, 1, (n_rays, 3)))

    def gradient(x):
        x.requires_grad_(True)
        y = implicit_network(x)[:, :1]
        d_output = torch.ones_like(y, requires_grad=False)
        return torch.autograd.grad(outputs=y, inputs=x, grad_outputs=d_output, create_graph=True,
                                   retain_graph=True, only_inputs=True)[0]

    def sphere_tracing(threshold=5e-5):
        dists = torch.full((n_rays,), 0.5, dtype=torch.float64)
        unfinished = torch.ones(n_rays, dtype=torch.bool)
        for _ in range(n_march):
            points = cam_loc + dists[:, None] * ray_dirs
            sdf = implicit_network(points)[:, 0]
            sdf[~unfinished] = 0
            dists[unfinished] = dists[unfinished] + step_scale * sdf[unfinished]  # (the small net is no true SDF)
            unfinished = unfinished & (sdf.abs() > threshold) & (dists < 5.0)
        points = cam_loc + dists[:, None] * ray_dirs
        network_object_mask = implicit_network(points)[:, 0].abs() < 1e-3
        return points, network_object_mask, dists

    def sample_network(surface_output, surface_sdf_values, surface_points_grad, surface_dists, surface_cam_loc,
                       surface_ray_dirs):
        surface_ray_dirs_0 = surface_ray_dirs.detach()
        surface_points_dot = torch.bmm(surface_points_grad.view(-1, 1, 3),
                                       surface_ray_dirs_0.view(-1, 3, 1)).squeeze(-1)
        surface_dists_theta = surface_dists - (surface_output - surface_sdf_values) / surface_points_dot
        return surface_cam_loc + surface_dists_theta * surface_ray_dirs

    params = list(implicit_network.parameters()) + list(rendering_network.parameters())
    optimizer = optim.Adam(params, lr=1e-4)
    history = []
    for step in range(steps):
        implicit_network.eval()
        with torch.no_grad():
            points, network_object_mask, dists = sphere_tracing()
        implicit_network.train()
        surface_mask = network_object_mask & object_mask
        surface_points = points[surface_mask]
        surface_dists = dists[surface_mask].unsqueeze(-1)
        surface_ray_dirs = ray_dirs[surface_mask]
        surface_cam_loc = cam_loc.expand(surface_points.shape)
        surface_output = implicit_network(surface_points)[:, 0:1]
        surface_sdf_values = surface_output.detach()
        g = gradient(surface_points.clone())
        surface_points_grad = g.clone().detach()
        differentiable_surface_points = sample_network(surface_output, surface_sdf_values, surface_points_grad,
                                                       surface_dists, surface_cam_loc, surface_ray_dirs)
        eik_points = torch.tensor(rng.uniform(-1, 1, (16, 3)))
        grad_theta = gradient(eik_points)
        normals = gradient(differentiable_surface_points)
        rgb = rendering_network(torch.cat([differentiable_surface_points, normals, surface_ray_dirs], -1))
        rgb_loss = F.l1_loss(rgb, rgb_gt[surface_mask], reduction='sum') / float(n_rays)
        # mask loss: the minimum SDF along each ray that missed, pushed positive (or negative, inside the mask)
        t = torch.linspace(0.5, 4.5, n_samples, dtype=torch.float64)
        pts = cam_loc + t[None, :, None] * ray_dirs[:, None, :]
        sdf_along = implicit_network(pts.reshape(-1, 3))[:, 0].reshape(n_rays, n_samples)
        min_sdf, min_idx = sdf_along.min(-1)
        missed = ~surface_mask
        sdf_pred = -alpha * min_sdf[missed]
        gt = object_mask[missed].double()
        mask_loss = (1 / alpha) * F.binary_cross_entropy_with_logits(sdf_pred, gt, reduction='sum') / float(n_rays)
        eikonal_loss = ((grad_theta.norm(2, dim=1) - 1) ** 2).mean()
        loss = rgb_loss + 0.1 * eikonal_loss + 100.0 * mask_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), rgb_loss.item(), eikonal_loss.item(), mask_loss.item(),
                        int(surface_mask.sum())))
    return {"history": history, "dists": dists, "min_idx": min_idx, "hits": network_object_mask,
            "grads": [p.grad for p in params]}


def test_idr_sphere_tracing_with_implicit_differentiation():
    weights = weights_of(igr_net)
    ours, _ = run_both(idr, weights, rtol=1e-7, atol=1e-10)
    assert any(h[4] > 0 for h in ours["history"])  # some rays hit the surface and reach the renderer
    assert all(np.isfinite(g).all() for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# Convolutional Occupancy Networks: point features averaged into a voxel grid (scatter_reduce 'mean', the
# torch_scatter.scatter_mean of the original), a small 3-D U-Net (Conv3d, GroupNorm, MaxPool3d, BatchNorm3d,
# ConvTranspose3d and a trilinear upsampling skip), features read back at query points by 5-D grid_sample
# ----------------------------------------------------------------------------------------------


def convonet_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class UNet3D(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv3d(4, 6, 3, padding=1), nn.GroupNorm(2, 6), nn.ReLU())
            self.down = nn.MaxPool3d(2)
            self.mid = nn.Sequential(nn.Conv3d(6, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU())
            self.up = nn.ConvTranspose3d(8, 6, 2, stride=2)
            self.dec = nn.Conv3d(12, 4, 3, padding=1)

        def forward(self, x):
            e = self.enc(x)
            mid = self.mid(self.down(e))
            u = self.up(mid)
            u2 = F.interpolate(mid, scale_factor=2, mode="trilinear", align_corners=False)
            return self.dec(torch.cat([e, u + u2[:, :6]], 1))

    class ConvONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_pos = nn.Linear(3, 4)
            self.unet3d = UNet3D()
            self.fc_out = nn.Linear(4, 1)

    return ConvONet()


def convonet(m, weights, steps=3, reso=4):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, convonet_net(m), weights).double()
    rng = np.random.default_rng(83)
    p = torch.tensor(rng.uniform(-0.5, 0.5, (1, 30, 3)))
    query = torch.tensor(rng.uniform(-0.55, 0.55, (1, 12, 3)))
    occ = torch.tensor((np.linalg.norm(query.numpy()[0], axis=-1) < 0.4).astype(np.float64))[None]

    def normalize_3d_coordinate(p, padding=0.1):
        p_nor = p / (1 + padding + 10e-4)
        p_nor = p_nor + 0.5
        p_nor = torch.where(p_nor >= 1, torch.full_like(p_nor, 1 - 10e-4), p_nor)
        p_nor = torch.where(p_nor < 0, torch.zeros_like(p_nor), p_nor)
        return p_nor

    def coordinate2index(x, reso):
        x = (x * reso).long()
        return x[:, :, 0] + reso * (x[:, :, 1] + reso * x[:, :, 2])

    def generate_grid_features(p, c):
        p_nor = normalize_3d_coordinate(p.clone())
        index = coordinate2index(p_nor, reso)
        fea_grid = c.new_zeros(p.size(0), c.size(-1), reso ** 3)
        c = c.permute(0, 2, 1)
        fea_grid = fea_grid.scatter_reduce(2, index[:, None].expand(-1, c.size(1), -1), c, reduce="mean",
                                           include_self=False)
        fea_grid = fea_grid.reshape(p.size(0), c.size(1), reso, reso, reso)
        return model.unet3d(fea_grid)

    def sample_grid_feature(p, c):
        p_nor = normalize_3d_coordinate(p.clone())
        p_nor = p_nor[:, :, None, None].float() if p.dtype == torch.float32 else p_nor[:, :, None, None]
        vgrid = 2.0 * p_nor - 1.0
        return F.grid_sample(c, vgrid, padding_mode='border', align_corners=True, mode='bilinear').squeeze(-1) \
            .squeeze(-1)

    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for it in range(steps):
        model.train()
        c = generate_grid_features(p, F.relu(model.fc_pos(p)))
        features = sample_grid_feature(query, c).transpose(1, 2)
        logits = model.fc_out(features).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, occ, reduction='none').sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "logits": logits.detach(), "grads": {n: p.grad for n, p in model.named_parameters()},
            "running": {n: b for n, b in model.named_buffers()}}


def test_convolutional_occupancy_network():
    weights = weights_of(convonet_net)
    ours, _ = run_both(convonet, weights, rtol=1e-8, atol=1e-10)
    assert np.abs(ours["grads"]["fc_pos.weight"]).sum() > 0  # through scatter_reduce's mean into the grid
