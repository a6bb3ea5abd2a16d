# ruff: noqa: B007, E731, F841, UP031  (the programs are kept as their authors wrote them)
"""Image-processing and dense-prediction programs (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data (float64 mostly, to about 1e-9), comparing values and gradients, and checked
by hand where they run alone. Warping: unsupervised optical flow (backward warping by ``grid_sample`` over a
meshgrid, Charbonnier and census losses, edge-aware second-order smoothness, forward-backward occlusion, an 'area'
pyramid); softmax splatting by ``index_add_``; VoxelMorph (3-D SpatialTransformer, scaling and squaring, trilinear
resize, NCC by ``conv3d``) and affine volume registration (5-D ``affine_grid``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, pytorch, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Unsupervised optical flow (UnFlow / ARFlow style): a small flow network, backward warping by
# grid_sample over a meshgrid base grid, a Charbonnier + census photometric loss, an edge-aware
# second-order smoothness loss, a forward-backward occlusion mask, and a two-level pyramid
# ----------------------------------------------------------------------------------------------


def flow_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class FlowNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.LeakyReLU(0.1),
                                          nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.LeakyReLU(0.1))
            self.predict_flow = nn.Conv2d(8, 2, 3, padding=1)

        def forward(self, im1, im2):
            return 0.5 * self.predict_flow(self.features(torch.cat([im1, im2], 1)))

    return FlowNet()


def flow_warp(m, x, flow12, pad="border", mode="bilinear"):
    torch, F = m.torch, m.F
    B, _, H, W = x.size()
    base_grid = torch.stack(torch.meshgrid(torch.arange(W), torch.arange(H), indexing="xy"), 0).to(x)  # 2HW
    v_grid = base_grid.unsqueeze(0) + flow12
    v_grid_norm = torch.zeros_like(v_grid)
    v_grid_norm[:, 0, :, :] = 2.0 * v_grid[:, 0, :, :] / (W - 1) - 1.0
    v_grid_norm[:, 1, :, :] = 2.0 * v_grid[:, 1, :, :] / (H - 1) - 1.0
    v_grid_norm = v_grid_norm.permute(0, 2, 3, 1)  # BHW2
    return F.grid_sample(x, v_grid_norm, mode=mode, padding_mode=pad, align_corners=True)


def gradient(data):
    D_dy = data[:, :, 1:] - data[:, :, :-1]
    D_dx = data[:, :, :, 1:] - data[:, :, :, :-1]
    return D_dx, D_dy


def smooth_grad_2nd(m, flo, image, alpha=10.0):
    torch = m.torch
    img_dx, img_dy = gradient(image)
    weights_x = torch.exp(-torch.mean(torch.abs(img_dx), 1, keepdim=True) * alpha)
    weights_y = torch.exp(-torch.mean(torch.abs(img_dy), 1, keepdim=True) * alpha)
    dx, dy = gradient(flo)
    dx2, dxdy = gradient(dx)
    dydx, dy2 = gradient(dy)
    loss_x = weights_x[:, :, :, 1:] * dx2.abs()
    loss_y = weights_y[:, :, 1:, :] * dy2.abs()
    return loss_x.mean() / 2.0 + loss_y.mean() / 2.0


def census_loss(m, im1, im2, max_distance=1):
    torch, F = m.torch, m.F
    patch_size = 2 * max_distance + 1

    def _ternary_transform(image):
        intensities = (0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]).unsqueeze(1) * 255
        out_channels = patch_size * patch_size
        w = torch.eye(out_channels).view((out_channels, 1, patch_size, patch_size)).to(image)
        patches = F.conv2d(intensities, w, padding=max_distance)
        transf = patches - intensities
        return transf / torch.sqrt(0.81 + torch.pow(transf, 2))

    def _hamming_distance(t1, t2):
        dist = torch.pow(t1 - t2, 2)
        dist_norm = dist / (0.1 + dist)
        return torch.sum(dist_norm, 1, keepdim=True)

    def _valid_mask(t, padding):
        n, _, h, w = t.size()
        inner = torch.ones(n, 1, h - 2 * padding, w - 2 * padding).type_as(t)
        return F.pad(inner, [padding] * 4)

    dist = _hamming_distance(_ternary_transform(im1), _ternary_transform(im2))
    return dist * _valid_mask(im1, max_distance)


def charbonnier(x, eps=1e-3, q=0.45):
    return (x.pow(2) + eps ** 2).pow(q)


def occlusion_mask(m, flow12, flow21, alpha1=0.01, alpha2=0.5):
    torch = m.torch
    flow21_warped = flow_warp(m, flow21, flow12, pad="zeros")
    flow12_diff = flow12 + flow21_warped
    mag = (flow12 * flow12).sum(1, keepdim=True) + (flow21_warped * flow21_warped).sum(1, keepdim=True)
    occ_thresh = alpha1 * mag + alpha2
    return ((flow12_diff * flow12_diff).sum(1, keepdim=True) < occ_thresh).float()


def flow_images(n=2, h=12, w=14, seed=0):
    rng = np.random.default_rng(seed)
    # a smooth random texture, moved by a sub-pixel translation plus a little rotation
    base = rng.standard_normal((n, 3, h + 6, w + 6))
    kernel = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0
    smooth = np.zeros((n, 3, h + 2, w + 2))
    for i in range(5):
        for j in range(5):
            smooth += kernel[i, j] * base[:, :, i:i + h + 2, j:j + w + 2]
    im1 = smooth[:, :, 1:-1, 1:-1]
    im2 = 0.6 * smooth[:, :, 2:, 1:-1] + 0.4 * smooth[:, :, 2:, 2:]
    return im1, im2


def unsupervised_flow(m, weights, steps=3, dtype="float64"):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, flow_net(m), weights).to(getattr(torch, dtype))
    optimizer = optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.999))
    im1, im2 = (torch.tensor(a.astype(dtype)) for a in flow_images())
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = 0
        for level, scale in enumerate((1, 2)):
            if scale > 1:
                i1 = F.interpolate(im1, scale_factor=1 / scale, mode="area")
                i2 = F.interpolate(im2, scale_factor=1 / scale, mode="area")
            else:
                i1, i2 = im1, im2
            flow12 = model(i1, i2)
            flow21 = model(i2, i1)
            occu_mask1 = occlusion_mask(m, flow12, flow21)
            im1_recons = flow_warp(m, i2, flow12)
            l1 = charbonnier(i1 - im1_recons) * occu_mask1
            l_ph = l1.mean() / (occu_mask1.mean() + 1e-6)
            l_census = (census_loss(m, i1, im1_recons) * occu_mask1).mean() / (occu_mask1.mean() + 1e-6)
            l_sm = smooth_grad_2nd(m, flow12, i1)
            loss = loss + (l_ph + 0.5 * l_census + 50.0 * l_sm) / scale
        loss.backward()
        grad_norm = m.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        flow = model(im1, im2)
        up = F.interpolate(model(*(F.interpolate(i, scale_factor=0.5, mode="area") for i in (im1, im2))),
                           size=im1.shape[-2:], mode="bilinear", align_corners=True) * 2.0
        nearest = flow_warp(m, im2, flow, pad="zeros", mode="nearest")
    return history, [p.detach() for p in model.parameters()], flow, up, nearest, occu_mask1


def test_unsupervised_optical_flow():
    weights = weights_of(flow_net)
    ours, _ = run_both(unsupervised_flow, weights, rtol=1e-9, atol=1e-11)
    history = ours[0]
    assert all(np.isfinite(history)) and ours[2].shape == (2, 2, 12, 14)
    run_both(unsupervised_flow, weights, steps=2, dtype="float32", rtol=2e-4, atol=2e-5)


def test_flow_warp_by_hand():
    """Zero flow warps an image onto itself; a whole-pixel flow shifts it (border padding repeats the edge)."""
    for m in (OURS, pytorch()):
        if m is None:
            continue
        torch = m.torch
        im = torch.arange(2 * 3 * 5 * 6, dtype=torch.float64).reshape(2, 3, 5, 6)
        flow = torch.zeros(2, 2, 5, 6, dtype=torch.float64)
        np.testing.assert_allclose(flow_warp(m, im, flow).numpy(), im.numpy(), atol=1e-12)
        flow[:, 0] = 1.0  # sample one pixel to the right
        shifted = flow_warp(m, im, flow).numpy()
        np.testing.assert_allclose(shifted[..., :-1], im.numpy()[..., 1:], atol=1e-12)
        np.testing.assert_allclose(shifted[..., -1], im.numpy()[..., -1], atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Volumetric registration: VoxelMorph (Balakrishnan et al.): a small 3-D U-Net predicting a velocity
# field at half resolution, integrated by scaling and squaring (VecInt: grid_sample of a field by
# itself), resized by trilinear interpolate, warping the moving volume by its SpatialTransformer
# (meshgrid buffer, channel order reversed by [..., [2, 1, 0]]), with local NCC by conv3d and the
# diffusion regulariser by its permutations; then affine 3-D registration by affine_grid on 5-D sizes
# ----------------------------------------------------------------------------------------------


def voxelmorph(m, inshape=(8, 8, 6), int_steps=3, int_downsize=2):
    torch, nn, F = m.torch, m.nn, m.F

    class SpatialTransformer(nn.Module):
        def __init__(self, size, mode='bilinear'):
            super().__init__()
            self.mode = mode
            vectors = [torch.arange(0, s) for s in size]
            grids = torch.meshgrid(vectors, indexing='ij')
            grid = torch.stack(grids)
            grid = torch.unsqueeze(grid, 0)
            grid = grid.type(torch.DoubleTensor)
            self.register_buffer('grid', grid, persistent=False)

        def forward(self, src, flow):
            new_locs = self.grid + flow
            shape = flow.shape[2:]
            for i in range(len(shape)):
                new_locs[:, i, ...] = 2 * (new_locs[:, i, ...] / (shape[i] - 1) - 0.5)
            if len(shape) == 2:
                new_locs = new_locs.permute(0, 2, 3, 1)
                new_locs = new_locs[..., [1, 0]]
            elif len(shape) == 3:
                new_locs = new_locs.permute(0, 2, 3, 4, 1)
                new_locs = new_locs[..., [2, 1, 0]]
            return F.grid_sample(src, new_locs, align_corners=True, mode=self.mode)

    class VecInt(nn.Module):
        def __init__(self, inshape, nsteps):
            super().__init__()
            assert nsteps >= 0, 'nsteps should be >= 0, found: %d' % nsteps
            self.nsteps = nsteps
            self.scale = 1.0 / (2 ** self.nsteps)
            self.transformer = SpatialTransformer(inshape)

        def forward(self, vec):
            vec = vec * self.scale
            for _ in range(self.nsteps):
                vec = vec + self.transformer(vec, vec)
            return vec

    class ResizeTransform(nn.Module):
        def __init__(self, vel_resize, ndims):
            super().__init__()
            self.factor = 1.0 / vel_resize
            self.mode = 'linear'
            if ndims == 2:
                self.mode = 'bi' + self.mode
            elif ndims == 3:
                self.mode = 'tri' + self.mode

        def forward(self, x):
            if self.factor < 1:
                x = F.interpolate(x, align_corners=True, scale_factor=self.factor, mode=self.mode)
                x = self.factor * x
            elif self.factor > 1:
                x = self.factor * x
                x = F.interpolate(x, align_corners=True, scale_factor=self.factor, mode=self.mode)
            return x

    class ConvBlock(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            self.main = nn.Conv3d(in_channels, out_channels, 3, stride, 1)
            self.activation = nn.LeakyReLU(0.2)

        def forward(self, x):
            return self.activation(self.main(x))

    class VxmDense(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.ModuleList([ConvBlock(2, 4), ConvBlock(4, 6)])
            self.pooling = nn.MaxPool3d(2)
            self.upsampling = nn.Upsample(scale_factor=2, mode='nearest')
            self.dec = ConvBlock(6 + 4, 4)
            self.flow = nn.Conv3d(4, 3, kernel_size=3, padding=1)
            self.flow.weight = nn.Parameter(torch.distributions.Normal(0, 1e-2).sample(self.flow.weight.shape))
            self.flow.bias = nn.Parameter(torch.zeros(self.flow.bias.shape))
            self.resize = ResizeTransform(int_downsize, 3)
            self.fullsize = ResizeTransform(1 / int_downsize, 3)
            down_shape = [int(dim / int_downsize) for dim in inshape]
            self.integrate = VecInt(down_shape, int_steps)
            self.transformer = SpatialTransformer(inshape)

        def forward(self, source, target):
            x = torch.cat([source, target], dim=1)
            skip = self.enc[0](x)
            x = self.enc[1](self.pooling(skip))
            x = self.dec(torch.cat([self.upsampling(x), skip], dim=1))
            flow_field = self.flow(x)
            pos_flow = self.resize(flow_field)
            preint_flow = pos_flow
            pos_flow = self.integrate(pos_flow)
            pos_flow = self.fullsize(pos_flow)
            y_source = self.transformer(source, pos_flow)
            return y_source, preint_flow, pos_flow

    return VxmDense()


def ncc_loss(m, y_true, y_pred, win=None):
    torch, F = m.torch, m.F
    Ii, Ji = y_true, y_pred
    ndims = len(list(Ii.size())) - 2
    win = [9] * ndims if win is None else win
    sum_filt = torch.ones([1, 1, *win], dtype=Ii.dtype)
    pad_no = math.floor(win[0] / 2)
    stride, padding = (1,) * ndims, (pad_no,) * ndims
    conv_fn = getattr(F, 'conv%dd' % ndims)
    I2, J2, IJ = Ii * Ii, Ji * Ji, Ii * Ji
    I_sum = conv_fn(Ii, sum_filt, stride=stride, padding=padding)
    J_sum = conv_fn(Ji, sum_filt, stride=stride, padding=padding)
    I2_sum = conv_fn(I2, sum_filt, stride=stride, padding=padding)
    J2_sum = conv_fn(J2, sum_filt, stride=stride, padding=padding)
    IJ_sum = conv_fn(IJ, sum_filt, stride=stride, padding=padding)
    win_size = np.prod(win)
    u_I, u_J = I_sum / win_size, J_sum / win_size
    cross = IJ_sum - u_J * I_sum - u_I * J_sum + u_I * u_J * win_size
    I_var = I2_sum - 2 * u_I * I_sum + u_I * u_I * win_size
    J_var = J2_sum - 2 * u_J * J_sum + u_J * u_J * win_size
    cc = cross * cross / (I_var * J_var + 1e-5)
    return -torch.mean(cc)


def grad_loss(m, y_pred, penalty='l2', loss_mult=2):
    torch = m.torch

    def _diffs(y):
        vol_shape = [n for n in y.shape][2:]
        ndims = len(vol_shape)
        df = [None] * ndims
        for i in range(ndims):
            d = i + 2
            r = [d, *range(0, d), *range(d + 1, ndims + 2)]
            y = y.permute(r)
            dfi = y[1:, ...] - y[:-1, ...]
            r = [*range(d - 1, d + 1), *reversed(range(1, d - 1)), 0, *range(d + 1, ndims + 2)]
            df[i] = dfi.permute(r)
        return df

    dif = [torch.abs(f) for f in _diffs(y_pred)] if penalty == 'l1' else [f * f for f in _diffs(y_pred)]
    df = [torch.mean(torch.flatten(f, start_dim=1), dim=-1) for f in dif]
    grad = sum(df) / len(df)
    grad *= loss_mult
    return grad.mean()


def volumes(seed=11):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:8, :8, :6]
    blob = lambda cz, cy, cx: np.exp(-((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2) / 6.0)
    moving = np.stack([blob(3.5, 3.5, 2.5) + 0.5 * blob(5.5, 2, 4)])[None]
    fixed = np.stack([blob(4.2, 3.1, 2.8) + 0.5 * blob(6, 2.5, 4)])[None]
    return moving + 0.01 * rng.standard_normal(moving.shape), fixed


def voxelmorph_training(m, weights, steps=2, dtype="float64"):
    torch, optim = m.torch, m.optim
    model = load(m, voxelmorph(m), weights).to(getattr(torch, dtype))
    for module in model.modules():  # (the meshgrid buffers too: grid_sample wants one dtype)
        if hasattr(module, "grid"):
            module.grid = module.grid.to(getattr(torch, dtype))
    moving, fixed = (torch.tensor(v.astype(dtype)) for v in volumes())
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for step in range(steps):
        y_source, preint_flow, pos_flow = model(moving, fixed)
        loss = ncc_loss(m, fixed, y_source, win=[5, 5, 5]) + 0.01 * grad_loss(m, preint_flow)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        warped, _, flow = model(moving, fixed)
        identity = model.transformer(moving, torch.zeros_like(flow))
    return history, [p.detach() for p in model.parameters()], warped, flow, identity


def affine_registration(m, steps=5, mode="bilinear", padding_mode="border", align_corners=False):
    torch, F, optim = m.torch, m.F, m.optim
    moving, fixed = (torch.tensor(v) for v in volumes())
    # (near the identity, not at it: there every grid point is a voxel centre, a kink of trilinear sampling, where
    # the gradient in the grid is one-sided by each library's rounding of the base grid)
    theta = torch.tensor([[1.0, 0.0, 0.0, 0.013], [0.0, 1.0, 0.0, -0.021], [0.0, 0.0, 1.0, 0.017]],
                         dtype=torch.float64).unsqueeze(0).requires_grad_(True)
    optimizer = optim.Adam([theta], lr=0.02)
    history = []
    for step in range(steps):
        grid = F.affine_grid(theta, list(fixed.shape), align_corners=align_corners)
        warped = F.grid_sample(moving, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
        loss = F.mse_loss(warped, fixed)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, theta.detach(), theta.grad, warped


def test_voxelmorph_registration():
    OURS.torch.manual_seed(0)
    weights = weights_of(voxelmorph)
    ours, _ = run_both(voxelmorph_training, weights, rtol=1e-9, atol=1e-11)
    history, params, warped, flow, identity = ours
    assert warped.shape == (1, 1, 8, 8, 6) and flow.shape == (1, 3, 8, 8, 6)
    np.testing.assert_allclose(identity, volumes()[0], rtol=1e-12, atol=1e-12)  # a zero field moves nothing
    run_both(voxelmorph_training, weights, dtype="float32", rtol=1e-4, atol=1e-5)
    # the diffusion regulariser by its permutations is the mean squared forward difference along each axis
    field = np.random.default_rng(0).standard_normal((2, 3, 4, 5, 6))
    by_hand = 2 * np.mean([np.mean(np.diff(field, axis=a) ** 2) for a in (2, 3, 4)])
    assert grad_loss(OURS, OURS.torch.tensor(field)).item() == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize("options", [dict(), dict(mode="nearest", padding_mode="zeros", align_corners=True),
                                     dict(padding_mode="reflection", align_corners=True)])
def test_affine_volume_registration(options):
    ours, _ = run_both(affine_registration, **options, rtol=1e-9, atol=1e-12)
    if options.get("mode") != "nearest":
        assert ours[0][-1] < ours[0][0]


# ----------------------------------------------------------------------------------------------
# Forward warping by softmax splatting (Niklaus & Liu 2020): each source pixel pushed to its four
# bilinear neighbours with index_add_ on a flattened output, weighted by exp(metric), normalised;
# the metric and the flow both learnt through the splat
# ----------------------------------------------------------------------------------------------


def softsplat(m, tenIn, tenFlow, tenMetric):
    torch = m.torch
    N, C, H, W = tenIn.shape
    weighted = torch.cat([tenIn * tenMetric.exp(), tenMetric.exp()], 1)  # the normaliser rides along
    gy, gx = torch.meshgrid(torch.arange(H, dtype=tenIn.dtype), torch.arange(W, dtype=tenIn.dtype), indexing="ij")
    fltX = gx + tenFlow[:, 0]
    fltY = gy + tenFlow[:, 1]
    x0, y0 = torch.floor(fltX), torch.floor(fltY)
    out = torch.zeros(N, C + 1, H * W, dtype=tenIn.dtype)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        w = (1 - (fltX - xi).abs()) * (1 - (fltY - yi).abs())
        valid = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        index = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long()  # (N, H, W)
        contribution = weighted * (w * valid).unsqueeze(1)
        for n in range(N):
            out[n].index_add_(1, index[n].flatten(), contribution[n].flatten(1))
    out = out.view(N, C + 1, H, W)
    return out[:, :-1] / (out[:, -1:] + 1e-7)


def splatting_net(m):
    nn = m.nn
    return nn.ModuleDict({"flow": nn.Conv2d(6, 2, 3, padding=1), "metric": nn.Conv2d(3, 1, 3, padding=1)})


def frame_interpolation(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    net = load(m, splatting_net(m), weights).double()
    im1, im2 = (torch.tensor(a) for a in flow_images(n=1, h=9, w=10, seed=4))
    optimizer = optim.Adam(net.parameters(), lr=5e-3)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        flow = 2.0 * torch.tanh(net["flow"](torch.cat([im1, im2], 1)))
        metric = -20.0 * F.l1_loss(im1, flow_warp(m, im2, flow), reduction="none").mean(1, keepdim=True) + \
            net["metric"](im1)
        splatted = softsplat(m, im1, flow, metric)
        loss = F.l1_loss(splatted, im2)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, [p.detach() for p in net.parameters()], splatted


def test_softmax_splatting():
    weights = weights_of(splatting_net)
    ours, _ = run_both(frame_interpolation, weights, rtol=1e-9, atol=1e-11)
    # splatting by a whole-pixel flow moves every pixel one to the right (the first column receives nothing)
    torch = OURS.torch
    image = torch.arange(12.0, dtype=torch.float64).view(1, 1, 3, 4)
    flow = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    flow[:, 0] = 1.0
    moved = softsplat(OURS, image, flow, torch.zeros(1, 1, 3, 4, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(moved[0, 0, :, 1:], image.numpy()[0, 0, :, :3], rtol=1e-6)
    np.testing.assert_allclose(moved[0, 0, :, 0], 0.0)
