# ruff: noqa: B007, E501, E731, UP031  (the programs are kept as their authors wrote them)
"""3-D volumetric programs as medical-imaging and video code writes them, run as tests/probe19_volumes_common.py
says. Registration and spatial transforms: VoxelMorph (the spatial transformer on a ``meshgrid`` buffer,
``grid_sample`` with ``align_corners=True`` on channel-reversed locations, scaling-and-squaring ``VecInt``,
``ResizeTransform`` by trilinear interpolation, the NCC loss by ``conv3d`` box filters and the gradient smoothness
loss by finite differences); MONAI's registration and topology losses (soft-clDice by asymmetric ``max_pool3d``, 3-D
SSIM, mutual information by Parzen windows and ``bmm``, bending energy, a Hausdorff metric by ``cdist``); a random
3-D affine augmentation (rotation matrices by ``stack``, ``affine_grid`` on a 5-D size, ``grid_sample`` trilinear for
the image and nearest for the labels) and a 3-D spatial transformer network learning its theta."""

import math

import numpy as np

from .probe19_volumes_common import gaussian_kernel_1d, volumes
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# VoxelMorph: unsupervised registration with a spatial transformer, NCC and a smoothness loss
# ----------------------------------------------------------------------------------------------


def voxelmorph(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SpatialTransformer(nn.Module):
        def __init__(self, size, mode="bilinear"):
            super().__init__()
            self.mode = mode
            vectors = [torch.arange(0, s) for s in size]
            grids = torch.meshgrid(vectors, indexing="ij")
            grid = torch.stack(grids)
            grid = torch.unsqueeze(grid, 0)
            grid = grid.type(torch.FloatTensor)
            self.register_buffer("grid", grid, persistent=False)

        def forward(self, src, flow):
            new_locs = self.grid + flow
            shape = flow.shape[2:]
            for i in range(len(shape)):
                new_locs[:, i, ...] = 2 * (new_locs[:, i, ...] / (shape[i] - 1) - 0.5)
            new_locs = new_locs.permute(0, 2, 3, 4, 1)
            new_locs = new_locs[..., [2, 1, 0]]
            return F.grid_sample(src, new_locs, align_corners=True, mode=self.mode)

    class VecInt(nn.Module):
        def __init__(self, inshape, nsteps):
            super().__init__()
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
            self.mode = "trilinear"

        def forward(self, x):
            if self.factor < 1:
                x = F.interpolate(x, align_corners=True, scale_factor=self.factor, mode=self.mode)
                x = self.factor * x
            elif self.factor > 1:
                x = self.factor * x
                x = F.interpolate(x, align_corners=True, scale_factor=self.factor, mode=self.mode)
            return x

    class ConvBlock(nn.Module):
        def __init__(self, ndims, in_channels, out_channels, stride=1):
            super().__init__()
            Conv = getattr(nn, "Conv%dd" % ndims)
            self.main = Conv(in_channels, out_channels, 3, stride, 1)
            self.activation = nn.LeakyReLU(0.2)

        def forward(self, x):
            return self.activation(self.main(x))

    class Unet(nn.Module):
        def __init__(self, inshape, enc_nf=(4, 8), dec_nf=(8, 4, 4)):
            super().__init__()
            ndims = len(inshape)
            MaxPooling = getattr(nn, "MaxPool%dd" % ndims)
            self.pooling = [MaxPooling(2) for _ in enc_nf]
            self.upsampling = [nn.Upsample(scale_factor=2, mode="nearest") for _ in enc_nf]
            prev_nf = 2
            encoder_nfs = [prev_nf]
            self.encoder = nn.ModuleList()
            for nf in enc_nf:
                self.encoder.append(ConvBlock(ndims, prev_nf, nf))
                prev_nf = nf
                encoder_nfs.append(nf)
            encoder_nfs = np.flip(encoder_nfs)
            self.decoder = nn.ModuleList()
            for level, nf in enumerate(dec_nf[:len(enc_nf)]):
                self.decoder.append(ConvBlock(ndims, prev_nf, nf))
                prev_nf = nf + int(encoder_nfs[level])
            self.remaining = nn.ModuleList()
            for nf in dec_nf[len(enc_nf):]:
                self.remaining.append(ConvBlock(ndims, prev_nf, nf))
                prev_nf = nf
            self.final_nf = prev_nf

        def forward(self, x):
            x_history = [x]
            for level, conv in enumerate(self.encoder):
                x = conv(x)
                x_history.append(x)
                x = self.pooling[level](x)
            for level, conv in enumerate(self.decoder):
                x = conv(x)
                x = self.upsampling[level](x)
                x = torch.cat([x, x_history.pop()], dim=1)
            for conv in self.remaining:
                x = conv(x)
            return x

    class VxmDense(nn.Module):
        def __init__(self, inshape, int_steps=3, int_downsize=2):
            super().__init__()
            self.unet_model = Unet(inshape)
            self.flow = nn.Conv3d(self.unet_model.final_nf, 3, kernel_size=3, padding=1)
            self.resize = ResizeTransform(int_downsize, 3)
            self.fullsize = ResizeTransform(1 / int_downsize, 3)
            down_shape = [int(dim / int_downsize) for dim in inshape]
            self.integrate = VecInt(down_shape, int_steps)
            self.transformer = SpatialTransformer(inshape)

        def forward(self, source, target):
            x = torch.cat([source, target], dim=1)
            x = self.unet_model(x)
            flow_field = self.flow(x)
            pos_flow = self.resize(flow_field)
            preint_flow = pos_flow
            pos_flow = self.integrate(pos_flow)
            pos_flow = self.fullsize(pos_flow)
            y_source = self.transformer(source, pos_flow)
            return y_source, preint_flow, pos_flow

    return VxmDense((8, 8, 8))


class NCC:
    """Local (over window) normalised cross correlation loss."""

    def __init__(self, m, win=None):
        self.m = m
        self.win = win

    def loss(self, y_true, y_pred):
        torch, F = self.m.torch, self.m.F
        Ii, Ji = y_true, y_pred
        ndims = len(list(Ii.size())) - 2
        win = [5] * ndims if self.win is None else self.win
        sum_filt = torch.ones([1, 1, *win], dtype=Ii.dtype)
        pad_no = math.floor(win[0] / 2)
        stride, padding = (1,) * ndims, (pad_no,) * ndims
        conv_fn = getattr(F, "conv%dd" % ndims)
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


class Grad:
    """N-D gradient loss."""

    def __init__(self, m, penalty="l1", loss_mult=None):
        self.m, self.penalty, self.loss_mult = m, penalty, loss_mult

    def loss(self, _, y_pred):
        torch = self.m.torch
        dy = torch.abs(y_pred[:, :, 1:, :, :] - y_pred[:, :, :-1, :, :])
        dx = torch.abs(y_pred[:, :, :, 1:, :] - y_pred[:, :, :, :-1, :])
        dz = torch.abs(y_pred[:, :, :, :, 1:] - y_pred[:, :, :, :, :-1])
        if self.penalty == "l2":
            dy, dx, dz = dy * dy, dx * dx, dz * dz
        d = torch.mean(dx) + torch.mean(dy) + torch.mean(dz)
        grad = d / 3.0
        if self.loss_mult is not None:
            grad *= self.loss_mult
        return grad


def registration_pair(seed=0):
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(8.0)] * 3, indexing="ij"))
    moving = np.exp(-((g - 3.5) ** 2 / np.array([4.0, 6.0, 3.0])[:, None, None, None]).sum(0))
    fixed = np.exp(-((g - np.array([4.2, 3.1, 3.8])[:, None, None, None]) ** 2 / np.array([5.0, 4.0, 4.0])[:, None, None, None]).sum(0))
    moving = moving + 0.02 * rng.standard_normal(moving.shape)
    return moving[None, None].astype(np.float32), fixed[None, None].astype(np.float32)


def voxelmorph_training(m, weights):
    torch, optim = m.torch, m.optim
    model = load(m, voxelmorph(m), weights)
    with torch.no_grad():  # the flow layer starts near zero, as VoxelMorph's Normal(0, 1e-5) init (here scaled up)
        model.flow.weight.mul_(0.1)
        model.flow.bias.zero_()
    moving, fixed = (torch.from_numpy(a) for a in registration_pair())
    losses = [NCC(m, win=[5, 5, 5]).loss, Grad(m, "l2", loss_mult=2).loss]
    weights_ = [1, 0.01]
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for step in range(4):
        y_pred = model(moving, fixed)
        loss = 0
        loss_list = []
        for n, loss_function in enumerate(losses):
            curr_loss = loss_function(fixed, y_pred[n]) * weights_[n]
            loss_list.append(curr_loss.item())
            loss += curr_loss
        history.append(loss_list)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"history": history, "moved": y_pred[0], "flow": y_pred[2], "grad": model.flow.weight.grad,
            "enc_grad": model.unet_model.encoder[0].main.weight.grad}


def test_voxelmorph_registration_trains_on_ncc_and_smoothness():
    weights = weights_of(voxelmorph)
    ours, _ = run_both(voxelmorph_training, weights, rtol=1e-5, atol=1e-7)
    assert ours["moved"].shape == (1, 1, 8, 8, 8) and ours["flow"].shape == (1, 3, 8, 8, 8)
    assert ours["history"][-1][0] < ours["history"][0][0]


def test_spatial_transformer_with_an_integer_flow_shifts_by_hand():
    """A constant flow of whole voxels moves the image by that many voxels (zeros come in at the edge)."""
    torch = OURS.torch
    model = voxelmorph(OURS)
    src = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 8, 8, 8)).astype(np.float32))
    flow = torch.zeros(1, 3, 8, 8, 8)
    flow[:, 0] = 1.0  # along the first spatial axis
    flow[:, 2] = -2.0
    moved = model.transformer(src, flow).numpy()[0, 0]
    want = np.zeros((8, 8, 8), np.float32)
    want[:7, :, 2:] = src.numpy()[0, 0, 1:, :, :6]
    np.testing.assert_allclose(moved, want, atol=1e-5)


def test_ncc_of_an_image_with_itself_is_minus_one_by_hand():
    torch = OURS.torch
    img = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (1, 1, 8, 8, 8)))
    ncc = NCC(OURS, win=[3, 3, 3]).loss(img, img).item()
    assert -1.0 <= ncc < -0.999
    # scaling the intensity leaves it as it is (a shift would not: the windows' zero padding stays zero)
    np.testing.assert_allclose(NCC(OURS, win=[3, 3, 3]).loss(img, 3 * img).item(), ncc, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Random 3-D affine augmentation, and a 3-D spatial transformer network that learns its theta
# ----------------------------------------------------------------------------------------------


def rotation_3d(m, angles):
    """Rz @ Ry @ Rx from a (B, 3) tensor of angles, built by stack as augmentation code does."""
    torch = m.torch
    ax, ay, az = angles.unbind(-1)
    one, zero = torch.ones_like(ax), torch.zeros_like(ax)
    rx = torch.stack([one, zero, zero, zero, ax.cos(), -ax.sin(), zero, ax.sin(), ax.cos()], -1).view(-1, 3, 3)
    ry = torch.stack([ay.cos(), zero, ay.sin(), zero, one, zero, -ay.sin(), zero, ay.cos()], -1).view(-1, 3, 3)
    rz = torch.stack([az.cos(), -az.sin(), zero, az.sin(), az.cos(), zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def random_affine(m, image, label, angles, scales, shifts, flips):
    torch, F = m.torch, m.F
    rot = rotation_3d(m, angles)
    theta = torch.cat([rot * scales.unsqueeze(1), shifts.unsqueeze(-1)], dim=2)
    grid = F.affine_grid(theta, list(image.size()), align_corners=False)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    label = F.grid_sample(label.unsqueeze(1).float(), grid.float(), mode="nearest", padding_mode="zeros",
                          align_corners=False).squeeze(1).long()
    for b, dims in enumerate(flips):
        if dims:
            image[b] = torch.flip(image[b], dims=[d + 1 for d in dims])
            label[b] = torch.flip(label[b], dims=dims)
    return image, label


def stn3d(m):
    nn = m.nn

    class STN3d(nn.Module):
        def __init__(self):
            super().__init__()
            self.localization = nn.Sequential(nn.Conv3d(1, 4, 3), nn.MaxPool3d(2, stride=2), nn.ReLU(True),
                                              nn.Conv3d(4, 4, 3, padding=1), nn.AdaptiveAvgPool3d(2), nn.ReLU(True))
            self.fc_loc = nn.Sequential(nn.Linear(4 * 8, 16), nn.ReLU(True), nn.Linear(16, 3 * 4))
            self.classifier = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool3d(1),
                                            nn.Flatten(), nn.Linear(4, 2))

        def stn(self, x):
            xs = self.localization(x)
            xs = xs.view(-1, 4 * 8)
            theta = self.fc_loc(xs)
            theta = theta.view(-1, 3, 4)
            grid = m.F.affine_grid(theta, x.size(), align_corners=False)
            return m.F.grid_sample(x, grid, align_corners=False), theta

        def forward(self, x):
            x, theta = self.stn(x)
            return self.classifier(x), theta

    model = STN3d()
    # identity initialisation of the transformation
    model.fc_loc[2].weight.data.zero_()
    model.fc_loc[2].bias.data.copy_(m.torch.tensor([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], dtype=m.torch.float))
    return model


def augmentation_and_stn(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    images, labels = volumes(n=4, seed=2)
    rng = np.random.default_rng(6)
    angles = torch.from_numpy(rng.uniform(-0.4, 0.4, (4, 3)))
    scales = torch.from_numpy(rng.uniform(0.9, 1.1, (4, 3)))
    shifts = torch.from_numpy(rng.uniform(-0.1, 0.1, (4, 3)))
    flips = [(1,), (), (0, 2), ()]
    image, label = random_affine(m, torch.from_numpy(images), torch.from_numpy(labels), angles, scales, shifts, flips)
    # gamma intensity augmentation on the image rescaled to [0, 1]
    lo = image.amin(dim=(1, 2, 3, 4), keepdim=True)
    hi = image.amax(dim=(1, 2, 3, 4), keepdim=True)
    gamma = torch.from_numpy(rng.uniform(0.7, 1.5, (4, 1, 1, 1, 1)))
    image = ((image - lo) / (hi - lo + 1e-7)).pow(gamma) * (hi - lo) + lo
    model = load(m, stn3d(m), weights).double()
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    target = torch.tensor([0, 1, 1, 0])
    history, thetas = [], []
    for step in range(4):
        optimizer.zero_grad()
        logits, theta = model(image)
        loss = F.cross_entropy(logits, target)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        thetas.append(theta.detach())
    return {"image": image, "label": label, "history": history, "thetas": thetas,
            "loc_grad": model.fc_loc[2].weight.grad, "rot": rotation_3d(m, angles)}


def test_random_affine_augmentation_and_spatial_transformer_3d():
    weights = weights_of(stn3d)
    ours, _ = run_both(augmentation_and_stn, weights, rtol=1e-8, atol=1e-10)
    rot = ours["rot"]
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, rtol=1e-12)
    assert set(np.unique(ours["label"])) <= {0, 1, 2}
    np.testing.assert_allclose(ours["thetas"][0], np.broadcast_to(np.eye(3, 4), (4, 3, 4)), atol=1e-12)


def test_identity_affine_grid_sample_with_flips_by_hand():
    """The identity theta reproduces image and labels exactly (align_corners=False samples voxel centres); a flip
    of dims (0, 2) reverses those spatial axes."""
    torch = OURS.torch
    images, labels = volumes(n=2, seed=3)
    zero = torch.zeros(2, 3, dtype=torch.float64)
    image, label = random_affine(OURS, torch.from_numpy(images), torch.from_numpy(labels), zero, torch.ones(2, 3, dtype=torch.float64),
                                 zero, [(), (0, 2)])
    np.testing.assert_allclose(image.numpy()[0], images[0], atol=1e-12)
    np.testing.assert_allclose(image.numpy()[1], images[1][:, ::-1, :, ::-1], atol=1e-12)
    np.testing.assert_array_equal(label.numpy()[1], labels[1][::-1, :, ::-1])


# ----------------------------------------------------------------------------------------------
# MONAI's registration and topology losses: soft-clDice (soft skeletons by asymmetric max_pool3d), 3-D SSIM,
# global mutual information (Parzen windows and bmm), bending energy; a Hausdorff metric by cdist on boundaries
# ----------------------------------------------------------------------------------------------


def soft_erode(m, img):
    F = m.F
    p1 = -F.max_pool3d(-img, (3, 1, 1), (1, 1, 1), (1, 0, 0))
    p2 = -F.max_pool3d(-img, (1, 3, 1), (1, 1, 1), (0, 1, 0))
    p3 = -F.max_pool3d(-img, (1, 1, 3), (1, 1, 1), (0, 0, 1))
    return m.torch.min(m.torch.min(p1, p2), p3)


def soft_dilate(m, img):
    return m.F.max_pool3d(img, (3, 3, 3), (1, 1, 1), (1, 1, 1))


def soft_skel(m, img, iter_):
    F = m.F
    img1 = soft_dilate(m, soft_erode(m, img))
    skel = F.relu(img - img1)
    for j in range(iter_):
        img = soft_erode(m, img)
        img1 = soft_dilate(m, soft_erode(m, img))
        delta = F.relu(img - img1)
        skel = skel + F.relu(delta - skel * delta)
    return skel


def soft_cldice(m, y_true, y_pred, iter_=2, smooth=1.0):
    torch = m.torch
    skel_pred = soft_skel(m, y_pred, iter_)
    skel_true = soft_skel(m, y_true, iter_)
    tprec = (torch.sum(torch.multiply(skel_pred, y_true)[:, 1:, ...]) + smooth) / (torch.sum(skel_pred[:, 1:, ...]) + smooth)
    tsens = (torch.sum(torch.multiply(skel_true, y_pred)[:, 1:, ...]) + smooth) / (torch.sum(skel_true[:, 1:, ...]) + smooth)
    return 1.0 - 2.0 * (tprec * tsens) / (tprec + tsens)


def ssim3d(m, x, y, data_range=1.0, win_size=5, sigma=1.5, k1=0.01, k2=0.03):
    torch, F = m.torch, m.F
    g = gaussian_kernel_1d(m, sigma, truncated=(win_size // 2) / sigma)
    kernel = torch.einsum("i,j,k->ijk", g, g, g).to(x.dtype)
    kernel = kernel.expand(x.shape[1], 1, *kernel.shape)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    conv = lambda t: F.conv3d(t, kernel, groups=x.shape[1])
    mu_x, mu_y = conv(x), conv(y)
    sigma_x = conv(x * x) - mu_x * mu_x
    sigma_y = conv(y * y) - mu_y * mu_y
    sigma_xy = conv(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sigma_x + sigma_y + c2))
    return ssim.view(x.shape[0], -1).mean(1)


def global_mutual_information(m, target, pred, num_bins=8, sigma_ratio=0.5, smooth_nr=1e-7, smooth_dr=1e-7):
    torch = m.torch
    bin_centers = torch.linspace(0.0, 1.0, num_bins, dtype=pred.dtype)
    sigma = torch.mean(bin_centers[1:] - bin_centers[:-1]) * sigma_ratio
    preterm = 1 / (2 * sigma ** 2)

    def parzen_windowing(img):
        img = torch.clamp(img, 0, 1)
        img = img.reshape(img.shape[0], -1, 1)
        weight = torch.exp(-preterm.to(img) * (img - bin_centers) ** 2)
        weight = weight / torch.sum(weight, dim=-1, keepdim=True)
        probability = torch.mean(weight, dim=-2, keepdim=True)
        return weight, probability

    wa, pa = parzen_windowing(pred)
    wb, pb = parzen_windowing(target)
    pab = torch.bmm(wa.permute(0, 2, 1), wb.to(wa)).div(wa.shape[1])
    papb = torch.bmm(pa.permute(0, 2, 1), pb.to(pa))
    mi = torch.sum(pab * torch.log((pab + smooth_nr) / (papb + smooth_dr) + smooth_dr), dim=(1, 2))
    return -torch.mean(mi)


def spatial_gradient(x, dim):
    """The central difference along dim, the other spatial dims cropped by one voxel at each end."""
    slice_1, slice_2_s, slice_2_e, slice_all = slice(1, -1), slice(2, None), slice(None, -2), slice(None)
    slicing_s, slicing_e = [slice_all, slice_all], [slice_all, slice_all]
    for d in range(2, x.ndim):
        slicing_s.append(slice_2_s if d == dim else slice_1)
        slicing_e.append(slice_2_e if d == dim else slice_1)
    return (x[tuple(slicing_s)] - x[tuple(slicing_e)]) / 2.0


def bending_energy(m, pred):
    energy = 0
    first_order = [spatial_gradient(pred, dim) for dim in range(2, pred.ndim)]
    for dim_1, g in enumerate(first_order):
        dim_1 += 2
        energy = spatial_gradient(g, dim_1) ** 2 + energy
        for dim_2 in range(dim_1 + 1, pred.ndim):
            energy = 2 * spatial_gradient(g, dim_2) ** 2 + energy
    return energy.mean()


def boundary(m, mask):
    return mask - soft_erode(m, mask) > 0.5


def hausdorff(m, a, b, percentile=95):
    torch = m.torch
    pa = torch.nonzero(boundary(m, a)[0, 0]).double()
    pb = torch.nonzero(boundary(m, b)[0, 0]).double()
    d = torch.cdist(pa, pb)
    return torch.quantile(torch.cat([d.min(1).values, d.min(0).values]), percentile / 100.0)


def warper(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv3d(4, 3, 3, padding=1))


def registration_losses(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    net = load(m, warper(m), weights).double()
    moving, fixed = (torch.from_numpy(a.astype(np.float64)).clamp(0, 1) for a in registration_pair(seed=1))
    identity = F.affine_grid(torch.eye(3, 4, dtype=torch.float64).unsqueeze(0), list(moving.shape), align_corners=True)
    optimizer = optim.Adam(net.parameters(), lr=1e-3)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        ddf = 0.1 * net(torch.cat([moving, fixed], 1))
        warped = F.grid_sample(moving, identity + ddf.permute(0, 2, 3, 4, 1), align_corners=True, padding_mode="border")
        mi = global_mutual_information(m, fixed, warped)
        ssim = 1 - ssim3d(m, warped, fixed).mean()
        be = bending_energy(m, ddf)
        loss = mi + ssim + 0.5 * be
        loss.backward()
        optimizer.step()
        history.append([mi.item(), ssim.item(), be.item()])
    # topology-aware segmentation loss on soft masks
    images, labels = volumes(n=1, classes=2, seed=16)
    truth = m.F.one_hot(torch.from_numpy(labels), 2).permute(0, 4, 1, 2, 3).double()
    logits = torch.from_numpy(images).repeat(1, 2, 1, 1, 1).mul(torch.tensor([-2.0, 2.0], dtype=torch.float64).view(1, 2, 1, 1, 1))
    logits.requires_grad_(True)
    cl = soft_cldice(m, truth, logits.softmax(1))
    cl.backward()
    a = (torch.from_numpy(labels[:1]) > 0).double().unsqueeze(1)
    b = torch.roll(a, shifts=(1, -1), dims=(2, 4))
    return {"history": history, "warped": warped, "grad": net[2].weight.grad, "cldice": cl, "cl_grad": logits.grad,
            "skel": soft_skel(m, truth, 2), "hd95": hausdorff(m, a, b)}


def test_monai_registration_and_topology_losses():
    weights = weights_of(warper)
    ours, _ = run_both(registration_losses, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1][0] < ours["history"][0][0] + 1e-3  # MI does not get worse in 3 small steps


def test_losses_by_hand():
    """SSIM of a volume with itself is 1; the bending energy of an affine field is 0; the soft skeleton of a binary
    mask lies inside it; the Hausdorff distance of a mask shifted by one voxel along two axes is at most sqrt(2)."""
    torch = OURS.torch
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (2, 1, 8, 8, 8)))
    np.testing.assert_allclose(ssim3d(OURS, x, x).numpy(), 1.0, rtol=1e-12)
    g = np.stack(np.meshgrid(*[np.arange(8.0)] * 3, indexing="ij"))
    field = torch.from_numpy(np.einsum("ij,jdhw->idhw", np.random.default_rng(1).standard_normal((3, 3)), g)[None] + 0.5)
    assert abs(bending_energy(OURS, field).item()) < 1e-20
    _, labels = volumes(n=1, classes=2, seed=16)
    mask = torch.from_numpy((labels[:, None] > 0).astype(np.float64))
    skel = soft_skel(OURS, mask, 3).numpy()
    assert (skel[mask.numpy() == 0] == 0).all() and skel.max() == 1
    b = torch.roll(mask, shifts=(1, -1), dims=(2, 4))
    assert 0 < hausdorff(OURS, mask, b).item() <= math.sqrt(2) + 1e-12
