# ruff: noqa: B007, B008, B023, E741, E501, E731, F841, N806, UP004, UP008, UP018, UP031, UP032  (the programs are kept as their authors wrote them)
"""3-D volumetric programs as medical-imaging and video code writes them (see tests/pytorch_programs.py), each run
on chainrule and on PyTorch from the same weights, comparing values, gradients and short training trajectories,
and checked without PyTorch against known values.

A MONAI-style residual U-Net (strided ``Conv3d`` down, ``ConvTranspose3d`` up with ``output_padding``,
``InstanceNorm3d(affine=True)``, ``PReLU``, deep supervision with labels resized by ``F.interpolate(mode='nearest')``)
trained by Adam on DiceCE (``one_hot`` permuted to channels-first, ``include_background=False``); a SegNet-3D
(``MaxPool3d(return_indices=True)`` / ``MaxUnpool3d(output_size=...)``, ``BatchNorm3d``) trained by SGD with
Nesterov on Tversky + focal losses; VoxelMorph (the spatial transformer on a ``meshgrid`` buffer, ``grid_sample``
with ``align_corners=True`` on channel-reversed locations, scaling-and-squaring ``VecInt``, ``ResizeTransform`` by
trilinear interpolation, the NCC loss by ``conv3d`` box filters and the gradient smoothness loss by finite
differences); MONAI's sliding-window inference (scan intervals, ``F.pad`` to the ROI, a Gaussian importance map,
overlapping windows accumulated in place and normalised by the count map); patches by ``Tensor.unfold`` on three
dims and their reassembly; a random 3-D affine augmentation (rotation matrices by ``stack``, ``affine_grid`` on a
5-D size, ``grid_sample`` trilinear for the image and nearest for the labels) and a 3-D spatial transformer network
learning its theta; video models: an R(2+1)D ResNet (factorised ``(1,k,k)``/``(k,1,1)`` convolutions with
torchvision's midplanes, a ``(B, T, C, H, W)`` clip permuted to channels-first), C3D with ``(1,2,2)`` pools and
``ceil_mode``, I3D weights inflated from 2-D ones (checked on a static clip against the 2-D network) and a
SlowFast-style lateral connection; a PSP-style pyramid pooling head (``AdaptiveAvgPool3d`` bins, trilinear
``align_corners=True``) with ``AvgPool3d(ceil_mode, count_include_pad, divisor_override)`` and
``AdaptiveMaxPool3d(return_indices=True)``; 3-D sub-pixel upsampling by reshape/permute with ICNR initialisation;
an attention U-Net's gates in ``channels_last_3d``; Gaussian smoothing and edge losses with 6-element ``F.pad``
in reflect / replicate / circular modes and ``Conv3d(padding_mode=...)``; nnU-Net's training step (PlainConvUNet,
a bool one-hot by ``scatter_``, a PolyLR ``_LRScheduler`` subclass, deep supervision, mirroring TTA by ``flip``);
MONAI's registration and topology losses (soft-clDice by asymmetric ``max_pool3d``, 3-D SSIM, mutual information by
Parzen windows and ``bmm``, bending energy, a Hausdorff metric by ``cdist``); Video Swin's shifted 3-D windows, TSM,
a non-local block and X3D; V-Net's ``ContBatchNorm3d`` (a ``_BatchNorm`` subclass); a weight-standardised 3-D
ResNet over ``Conv3d._conv_forward`` and ``_reversed_padding_repeated_twice``; a weight-standardised
``ConvTranspose3d`` calling PyTorch's ``_output_padding``; pytorch-i3d's InceptionI3d (``MaxPool3dSamePadding``,
``F.upsample`` in time); CondConv3D subclassing ``_ConvNd`` with PyTorch's constructor; MedicalNet's 3-D ResNet
(type-A shortcuts by ``.data``); Grad-CAM by full backward hooks and occlusion sensitivity; a voxel WGAN-GP
(second order through ``Conv3d`` and ``InstanceNorm3d``); pytorch-3dunet's UNet3D with GeneralizedDiceLoss; and a
3-D network deployed through ``torch.ao.quantization.fuse_modules``; ``channels_last_3d`` layouts,
``torch.cuda.FloatTensor`` checks and pickling ``torch.flip``."""

import itertools
import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of


def volumes(n=2, channels=1, side=8, classes=3, seed=0):
    """Synthetic volumes: blobs of a few classes in noise, and their integer labels."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1)
    labels = np.zeros((n, side, side, side), dtype=np.int64)
    for b in range(n):
        for c in range(1, classes):
            centre = rng.uniform(2, side - 2, 3)
            radius = rng.uniform(1.5, 2.5)
            labels[b][np.linalg.norm(grid - centre, axis=-1) < radius] = c
    images = labels[:, None].astype(np.float64) + 0.3 * rng.standard_normal((n, channels, side, side, side))
    return images, labels


# ----------------------------------------------------------------------------------------------
# MONAI-style residual U-Net trained on DiceCE with deep supervision
# ----------------------------------------------------------------------------------------------


def monai_unet(m):
    nn = m.nn

    class ResidualUnit(nn.Module):
        def __init__(self, in_channels, out_channels, strides=1, subunits=2):
            super().__init__()
            self.conv = nn.Sequential()
            schannels, sstrides = in_channels, strides
            for su in range(subunits):
                unit = nn.Sequential(
                    nn.Conv3d(schannels, out_channels, 3, stride=sstrides, padding=1),
                    nn.InstanceNorm3d(out_channels, affine=True),
                    nn.PReLU(),
                )
                self.conv.add_module(f"unit{su}", unit)
                schannels, sstrides = out_channels, 1
            if strides != 1 or in_channels != out_channels:
                rkernel, rpadding = (3, 1) if strides != 1 else (1, 0)
                self.residual = nn.Conv3d(in_channels, out_channels, rkernel, strides, rpadding)
            else:
                self.residual = nn.Identity()

        def forward(self, x):
            return self.conv(x) + self.residual(x)

    class UpBlock(nn.Module):
        def __init__(self, in_channels, out_channels, is_top):
            super().__init__()
            self.up = nn.ConvTranspose3d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
            self.norm = nn.Sequential() if is_top else nn.Sequential(nn.InstanceNorm3d(out_channels, affine=True), nn.PReLU())
            self.res = ResidualUnit(out_channels, out_channels, subunits=1)

        def forward(self, x):
            return self.res(self.norm(self.up(x)))

    class UNet(nn.Module):
        def __init__(self, in_channels=1, out_channels=3, channels=(4, 8, 8)):
            super().__init__()
            self.down1 = ResidualUnit(in_channels, channels[0], strides=2)
            self.down2 = ResidualUnit(channels[0], channels[1], strides=2)
            self.bottom = ResidualUnit(channels[1], channels[2], strides=1)
            self.up2 = UpBlock(channels[1] + channels[2], channels[0], is_top=False)
            self.up1 = UpBlock(channels[0] * 2, out_channels, is_top=True)
            self.aux = nn.Conv3d(channels[0], out_channels, 1)

        def forward(self, x):
            d1 = self.down1(x)
            d2 = self.down2(d1)
            b = self.bottom(d2)
            u2 = self.up2(torch_cat(m, [d2, b]))
            out = self.up1(torch_cat(m, [d1, u2]))
            if self.training:
                return out, self.aux(u2)
            return out

    return UNet()


def torch_cat(m, tensors):
    return m.torch.cat(tensors, dim=1)


def dice_ce_loss(m, input, target, include_background=False, smooth_nr=1e-5, smooth_dr=1e-5, lambda_dice=1.0,
                 lambda_ce=1.0):
    """MONAI's DiceCELoss(to_onehot_y=True, softmax=True): target (B, 1, D, H, W) of class indices."""
    torch, F = m.torch, m.F
    n_pred_ch = input.shape[1]
    ce = F.cross_entropy(input, target.squeeze(1).long())
    pred = torch.softmax(input, 1)
    onehot = F.one_hot(target.squeeze(1).long(), num_classes=n_pred_ch).permute(0, 4, 1, 2, 3).float().to(input.dtype)
    if not include_background:
        pred, onehot = pred[:, 1:], onehot[:, 1:]
    reduce_axis = list(range(2, len(input.shape)))
    intersection = torch.sum(onehot * pred, dim=reduce_axis)
    ground_o = torch.sum(onehot, dim=reduce_axis)
    pred_o = torch.sum(pred, dim=reduce_axis)
    denominator = ground_o + pred_o
    f = 1.0 - (2.0 * intersection + smooth_nr) / (denominator + smooth_dr)
    dice = torch.mean(f)
    return lambda_dice * dice + lambda_ce * ce


def unet_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, monai_unet(m), weights).double()
    images, labels = volumes()
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels).unsqueeze(1)
    optimizer = optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-5)
    history = []
    for step in range(4):
        model.train()
        optimizer.zero_grad()
        out, aux = model(x)
        y_small = F.interpolate(y.float(), size=aux.shape[2:], mode="nearest").long()
        loss = dice_ce_loss(m, out, y) + 0.5 * dice_ce_loss(m, aux, y_small)
        loss.backward()
        history.append(loss.item())
        optimizer.step()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if "up1" in n or "aux" in n}
    model.eval()
    with torch.no_grad():
        pred = model(x)
    return {"history": history, "grads": grads, "pred": pred, "labels": pred.argmax(1),
            "prelu": model.down1.conv.unit0[2].weight}


def test_monai_unet_trained_on_dice_ce_with_deep_supervision():
    weights = weights_of(monai_unet)
    ours, _ = run_both(unet_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["pred"].shape == (2, 3, 8, 8, 8)
    assert ours["history"][-1] < ours["history"][0]


def test_dice_loss_by_hand():
    """Perfect one-hot logits give a Dice near 0 and a large margin gives CE near 0; the background is left out."""
    torch, F = OURS.torch, OURS.F
    _, labels = volumes(n=1)
    y = torch.from_numpy(labels).unsqueeze(1)
    logits = 50.0 * F.one_hot(y.squeeze(1), 3).permute(0, 4, 1, 2, 3).double()
    assert dice_ce_loss(OURS, logits, y).item() < 1e-6
    # uniform predictions: dice per class = 1 - 2 * (n_c / 3) / (n_c + N / 3)
    flat = torch.zeros(1, 3, 8, 8, 8, dtype=torch.float64)
    n = np.array([(labels == c).sum() for c in (1, 2)])
    want = np.mean(1 - (2 * n / 3 + 1e-5) / (n + 512 / 3 + 1e-5)) + math.log(3)
    np.testing.assert_allclose(dice_ce_loss(OURS, flat, y).item(), want, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# SegNet-3D: max-pooling indices carried to the decoder's MaxUnpool3d; Tversky + focal losses
# ----------------------------------------------------------------------------------------------


def segnet3d(m):
    nn = m.nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

    class SegNet3D(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1, self.enc2 = block(1, 4), block(4, 6)
            self.pool = nn.MaxPool3d(2, stride=2, return_indices=True)
            self.pool2 = nn.MaxPool3d(3, stride=2, padding=1, ceil_mode=True, return_indices=True)
            self.unpool = nn.MaxUnpool3d(2, stride=2)
            self.unpool2 = nn.MaxUnpool3d(3, stride=2, padding=1)
            self.dec2, self.dec1 = block(6, 4), block(4, 4)
            self.head = nn.Conv3d(4, 1, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            p1, i1 = self.pool(e1)
            e2 = self.enc2(p1)
            p2, i2 = self.pool2(e2)
            d2 = self.unpool2(p2, i2, output_size=e2.size())
            d2 = self.dec2(d2)
            d1 = self.unpool(d2, i1, output_size=e1.shape[2:])
            return self.head(self.dec1(d1))

    return SegNet3D()


def tversky_loss(m, logits, target, alpha=0.3, beta=0.7, smooth=1.0):
    probs = m.torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    tp = (probs * target).sum(1)
    fp = (probs * (1 - target)).sum(1)
    fn = ((1 - probs) * target).sum(1)
    return (1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)).mean()


def focal_loss(m, logits, target, alpha=0.25, gamma=2.0):
    F, torch = m.F, m.torch
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * loss).mean()


def segnet_training(m, weights):
    torch, optim = m.torch, m.optim
    model = load(m, segnet3d(m), weights).double()
    images, labels = volumes(n=3, seed=1)
    x = torch.from_numpy(images)
    y = (torch.from_numpy(labels) > 0).unsqueeze(1).double()
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    history = []
    for step in range(4):
        optimizer.zero_grad()
        logits = model(x)
        loss = tversky_loss(m, logits, y) + 10 * focal_loss(m, logits, y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        e1 = model.enc1(x)
        p1, i1 = model.pool(e1)
    return {"history": history, "running_mean": model.enc2[1].running_mean, "running_var": model.dec1[1].running_var,
            "indices": i1, "unpooled": model.unpool(p1, i1), "weight": model.enc1[0].weight,
            "eval": model(x)}


def test_segnet3d_max_unpool_trained_on_tversky_and_focal():
    weights = weights_of(segnet3d)
    ours, _ = run_both(segnet_training, weights, rtol=1e-7, atol=1e-9)
    # unpooling puts every maximum back where it came from, and zeros elsewhere
    u, i = ours["unpooled"], ours["indices"]
    assert ((u != 0).reshape(3, 4, -1).sum(-1) <= i[0, 0].size).all()
    assert ours["history"][-1] < ours["history"][0]


def test_max_unpool3d_restores_maxima_by_hand():
    torch, F = OURS.torch, OURS.F
    x = torch.tensor(np.random.default_rng(0).permutation(4 * 6 * 4).reshape(1, 1, 4, 6, 4).astype(np.float64))
    pooled, idx = F.max_pool3d(x, 2, return_indices=True)
    restored = F.max_unpool3d(pooled, idx, 2, output_size=x.shape[-3:])
    xn = x.numpy()[0, 0]
    want = np.zeros_like(xn)
    for a, b, c in itertools.product(range(2), range(3), range(2)):
        win = xn[2 * a:2 * a + 2, 2 * b:2 * b + 2, 2 * c:2 * c + 2]
        k = np.unravel_index(win.argmax(), win.shape)
        want[2 * a + k[0], 2 * b + k[1], 2 * c + k[2]] = win.max()
        assert idx[0, 0, a, b, c].item() == np.ravel_multi_index((2 * a + k[0], 2 * b + k[1], 2 * c + k[2]), xn.shape)
    np.testing.assert_array_equal(restored.numpy()[0, 0], want)


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
# MONAI's sliding-window inference: padded ROI windows, a Gaussian importance map, overlap averaging
# ----------------------------------------------------------------------------------------------


def _get_scan_interval(image_size, roi_size, num_spatial_dims, overlap):
    scan_interval = []
    for i in range(num_spatial_dims):
        if roi_size[i] == image_size[i]:
            scan_interval.append(int(roi_size[i]))
        else:
            interval = int(roi_size[i] * (1 - overlap))
            scan_interval.append(interval if interval > 0 else 1)
    return tuple(scan_interval)


def dense_patch_slices(image_size, patch_size, scan_interval):
    num_spatial_dims = len(image_size)
    scan_num = []
    for i in range(num_spatial_dims):
        if scan_interval[i] == 0:
            scan_num.append(1)
        else:
            num = int(math.ceil(float(image_size[i]) / scan_interval[i]))
            scan_dim = first(d for d in range(num) if d * scan_interval[i] + patch_size[i] >= image_size[i])
            scan_num.append(scan_dim + 1 if scan_dim is not None else 1)
    starts = []
    for dim in range(num_spatial_dims):
        dim_starts = []
        for idx in range(scan_num[dim]):
            start_idx = idx * scan_interval[dim]
            start_idx -= max(start_idx + patch_size[dim] - image_size[dim], 0)
            dim_starts.append(start_idx)
        starts.append(dim_starts)
    out = np.asarray([x.flatten() for x in np.meshgrid(*starts, indexing="ij")]).T
    return [tuple(slice(s, s + patch_size[d]) for d, s in enumerate(x)) for x in out]


def first(iterable, default=None):
    for i in iterable:
        return i
    return default


def compute_importance_map(m, patch_size, mode="gaussian", sigma_scale=0.125, dtype=None):
    torch = m.torch
    if mode == "constant":
        return torch.ones(patch_size, dtype=dtype)
    sigmas = [i * sigma_scale for i in patch_size]
    importance_map = None
    for i, (size, sigma) in enumerate(zip(patch_size, sigmas)):
        x = torch.arange(start=-(size - 1) / 2.0, end=size / 2.0, step=1, dtype=torch.float64)
        g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
        g = g.reshape([-1 if j == i else 1 for j in range(len(patch_size))])
        importance_map = g if importance_map is None else importance_map * g
    importance_map = importance_map / torch.max(importance_map)
    importance_map = importance_map.to(dtype)
    min_non_zero = max(torch.min(importance_map[importance_map != 0]).item(), 1e-3)
    importance_map = torch.clamp_min(importance_map, min_non_zero)
    return importance_map


def sliding_window_inference(m, inputs, roi_size, sw_batch_size, predictor, overlap=0.25, mode="gaussian",
                             padding_mode="constant", cval=0.0):
    torch, F = m.torch, m.F
    num_spatial_dims = len(inputs.shape) - 2
    batch_size, _, *image_size_ = inputs.shape
    image_size = tuple(max(image_size_[i], roi_size[i]) for i in range(num_spatial_dims))
    pad_size = []
    for k in range(len(inputs.shape) - 1, 1, -1):
        diff = max(roi_size[k - 2] - inputs.shape[k], 0)
        half = diff // 2
        pad_size.extend([half, diff - half])
    if any(pad_size):
        inputs = F.pad(inputs, pad=pad_size, mode=padding_mode, value=cval)
    scan_interval = _get_scan_interval(image_size, roi_size, num_spatial_dims, overlap)
    slices = dense_patch_slices(image_size, roi_size, scan_interval)
    num_win = len(slices)
    total_slices = num_win * batch_size
    importance_map = compute_importance_map(m, roi_size, mode=mode, dtype=inputs.dtype)
    output_image, count_map = None, None
    for slice_g in range(0, total_slices, sw_batch_size):
        slice_range = range(slice_g, min(slice_g + sw_batch_size, total_slices))
        unravel_slice = [[slice(int(idx / num_win), int(idx / num_win) + 1), slice(None)] + list(slices[idx % num_win])
                         for idx in slice_range]
        window_data = torch.cat([inputs[tuple(win_slice)] for win_slice in unravel_slice])
        seg_prob = predictor(window_data)
        if output_image is None:
            output_shape = [batch_size, seg_prob.shape[1]] + list(image_size)
            output_image = torch.zeros(output_shape, dtype=seg_prob.dtype)
            count_map = torch.zeros(output_shape, dtype=seg_prob.dtype)
        for idx, original_idx in zip(slice_range, unravel_slice):
            output_image[tuple(original_idx)] += importance_map * seg_prob[idx - slice_g]
            count_map[tuple(original_idx)] += importance_map
    output_image = output_image / count_map
    final_slicing = []
    for sp in range(num_spatial_dims):
        slice_dim = slice(pad_size[sp * 2], image_size_[num_spatial_dims - sp - 1] + pad_size[sp * 2])
        final_slicing.insert(0, slice_dim)
    while len(final_slicing) < len(output_image.shape):
        final_slicing.insert(0, slice(None))
    return output_image[tuple(final_slicing)]


def small_segmenter(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 2, 1), nn.Softmax(dim=1))


def sliding_window(m, weights):
    torch = m.torch
    model = load(m, small_segmenter(m), weights).double().eval()
    rng = np.random.default_rng(4)
    volume = torch.from_numpy(rng.standard_normal((2, 1, 9, 12, 5)))
    with torch.no_grad():
        gaussian = sliding_window_inference(m, volume, (6, 6, 6), 3, model, overlap=0.5)
        constant = sliding_window_inference(m, volume, (6, 6, 6), 4, model, overlap=0.25, mode="constant",
                                            padding_mode="replicate")
    # test-time adaptation differentiates through the windows
    x = volume.clone().requires_grad_(True)
    entropy = sliding_window_inference(m, x, (5, 8, 5), 2, model, overlap=0.4)
    loss = -(entropy * entropy.clamp_min(1e-6).log()).sum(1).mean()
    loss.backward()
    return {"gaussian": gaussian, "constant": constant, "loss": loss, "grad": x.grad,
            "map": compute_importance_map(m, (6, 5, 4), dtype=torch.float32)}


def test_sliding_window_inference_with_gaussian_importance():
    weights = weights_of(small_segmenter)
    ours, _ = run_both(sliding_window, weights, rtol=1e-9, atol=1e-11)
    assert ours["gaussian"].shape == (2, 2, 9, 12, 5)
    np.testing.assert_allclose(ours["gaussian"].sum(1), 1.0, rtol=1e-12)


def test_sliding_window_of_a_pointwise_model_is_the_whole_volume_by_hand():
    """With a model that looks at one voxel at a time, the weighted average of overlapping windows is the model's
    output on the whole volume (the padding is cropped away again)."""
    torch, nn = OURS.torch, OURS.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 3, 1), nn.Tanh()).double()
    volume = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 7, 10, 4)))
    with torch.no_grad():
        got = sliding_window_inference(OURS, volume, (4, 4, 6), 2, model, overlap=0.5)
        np.testing.assert_allclose(got.numpy(), model(volume).numpy(), rtol=1e-12)
    windows = dense_patch_slices((7, 10, 6), (4, 4, 6), (2, 2, 6))
    assert sorted({(s[0].start, s[0].stop) for s in windows}) == [(0, 4), (2, 6), (3, 7)]  # the last one moved in
    assert sorted({(s[1].start, s[1].stop) for s in windows}) == [(0, 4), (2, 6), (4, 8), (6, 10)]


# ----------------------------------------------------------------------------------------------
# Patches by Tensor.unfold on three dims: a patch classifier and the volume put back together
# ----------------------------------------------------------------------------------------------


def patch_net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.GELU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(4, 1))


def patches(m, weights):
    torch, optim = m.torch, m.optim
    model = load(m, patch_net(m), weights).double()
    rng = np.random.default_rng(5)
    vol = torch.from_numpy(rng.standard_normal((2, 2, 8, 8, 12)))
    p = 4
    # non-overlapping patches: (B, C, nD, nH, nW, p, p, p) -> (B * n, C, p, p, p)
    tiles = vol.unfold(2, p, p).unfold(3, p, p).unfold(4, p, p)
    grid = tiles.shape[2:5]
    batch = tiles.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(-1, 2, p, p, p)
    # ... and back: the inverse permutation
    back = batch.reshape(2, *grid, 2, p, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(vol.shape)
    # overlapping patches (stride 2) with their gradient accumulated back into the volume
    x = vol.clone().requires_grad_(True)
    over = x.unfold(2, p, 2).unfold(3, p, 2).unfold(4, p, 4)
    over_batch = over.permute(0, 2, 3, 4, 1, 5, 6, 7).contiguous().view(-1, 2, p, p, p)
    targets = (over_batch.detach().mean((1, 2, 3, 4)) > 0).double()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        logits = model(over_batch).squeeze(1)
        loss = m.F.binary_cross_entropy_with_logits(logits, targets)
        loss.backward(retain_graph=True)
        optimizer.step()
        history.append(loss.item())
    # patches averaged back into a volume by fold's 3-D equivalent: index arithmetic with index_add_
    counts = torch.zeros_like(vol)
    recon = torch.zeros_like(vol)
    k = 0
    n_d, n_h, n_w = over.shape[2:5]
    for b in range(2):
        for i in range(n_d):
            for j in range(n_h):
                for l in range(n_w):
                    sl = (b, slice(None), slice(2 * i, 2 * i + p), slice(2 * j, 2 * j + p), slice(4 * l, 4 * l + p))
                    recon[sl] += over_batch[k].detach()
                    counts[sl] += 1
                    k += 1
    return {"batch": batch, "back": back, "grid": tuple(grid), "over_shape": tuple(over.shape), "history": history,
            "x_grad": x.grad, "recon": recon / counts}


def test_patch_extraction_with_unfold_and_reassembly():
    weights = weights_of(patch_net)
    ours, _ = run_both(patches, weights, rtol=1e-9, atol=1e-11)
    vol = np.random.default_rng(5).standard_normal((2, 2, 8, 8, 12))
    np.testing.assert_array_equal(ours["back"], vol)
    np.testing.assert_array_equal(ours["recon"], vol)
    np.testing.assert_array_equal(ours["batch"][1], vol[0, :, :4, :4, 4:8])
    assert ours["over_shape"] == (2, 2, 3, 3, 3, 4, 4, 4)


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
# Video: an R(2+1)D ResNet as torchvision writes it, on (B, T, C, H, W) clips
# ----------------------------------------------------------------------------------------------


def r2plus1d(m):
    nn = m.nn

    class Conv2Plus1D(nn.Sequential):
        def __init__(self, in_planes, out_planes, midplanes, stride=1, padding=1):
            super().__init__(
                nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                          padding=(0, padding, padding), bias=False),
                nn.BatchNorm3d(midplanes),
                nn.ReLU(inplace=True),
                nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1), padding=(padding, 0, 0),
                          bias=False),
            )

        @staticmethod
        def get_downsample_stride(stride):
            return stride, stride, stride

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, conv_builder, stride=1, downsample=None):
            midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
            super().__init__()
            self.conv1 = nn.Sequential(conv_builder(inplanes, planes, midplanes, stride), nn.BatchNorm3d(planes),
                                       nn.ReLU(inplace=True))
            self.conv2 = nn.Sequential(conv_builder(planes, planes, midplanes), nn.BatchNorm3d(planes))
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            residual = x
            out = self.conv1(x)
            out = self.conv2(out)
            if self.downsample is not None:
                residual = self.downsample(x)
            out += residual
            out = self.relu(out)
            return out

    class R2Plus1dStem(nn.Sequential):
        def __init__(self):
            super().__init__(
                nn.Conv3d(3, 6, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                nn.BatchNorm3d(6), nn.ReLU(inplace=True),
                nn.Conv3d(6, 8, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
                nn.BatchNorm3d(8), nn.ReLU(inplace=True))

    class VideoResNet(nn.Module):
        def __init__(self, num_classes=5):
            super().__init__()
            self.inplanes = 8
            self.stem = R2Plus1dStem()
            self.layer1 = self._make_layer(Conv2Plus1D, 8, 1, stride=1)
            self.layer2 = self._make_layer(Conv2Plus1D, 12, 1, stride=2)
            self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
            self.fc = nn.Linear(12, num_classes)
            for mod in self.modules():
                if isinstance(mod, nn.Conv3d):
                    nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(mod, nn.BatchNorm3d):
                    nn.init.constant_(mod.weight, 1)
                    nn.init.constant_(mod.bias, 0)

        def _make_layer(self, conv_builder, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                ds_stride = conv_builder.get_downsample_stride(stride)
                downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes, kernel_size=1, stride=ds_stride, bias=False),
                                           nn.BatchNorm3d(planes))
            layers = [BasicBlock(self.inplanes, planes, conv_builder, stride, downsample)]
            self.inplanes = planes
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.stem(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.avgpool(x)
            x = x.flatten(1)
            return self.fc(x)

    return VideoResNet()


def video_training(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, r2plus1d(m), weights)
    rng = np.random.default_rng(7)
    clips = torch.from_numpy(rng.standard_normal((4, 6, 3, 12, 12)).astype(np.float32))  # (B, T, C, H, W)
    labels = torch.tensor([0, 3, 1, 4])
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    history = []
    for step in range(3):
        video = clips.permute(0, 2, 1, 3, 4)  # to (B, C, T, H, W)
        output = model(video)
        loss = criterion(output, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        # clip-level predictions averaged over temporal crops, as video evaluation does
        crops = [clips[:, t:t + 4].permute(0, 2, 1, 3, 4) for t in (0, 2)]
        probs = torch.stack([model(c).softmax(1) for c in crops]).mean(0)
    return {"history": history, "probs": probs, "stem_grad": model.stem[0].weight.grad,
            "mid": model.layer2[0].conv1[0][0].weight.shape[0], "running": model.layer2[0].downsample[1].running_var}


def test_r2plus1d_video_resnet_training():
    weights = weights_of(r2plus1d)
    ours, _ = run_both(video_training, weights, rtol=1e-5, atol=1e-6)
    assert ours["mid"] == (8 * 12 * 27) // (8 * 9 + 3 * 12)  # torchvision's midplanes keep the parameter count
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# C3D, I3D inflation from a 2-D network, and a SlowFast-style lateral connection
# ----------------------------------------------------------------------------------------------


def c3d(m):
    nn = m.nn

    class C3D(nn.Module):
        def __init__(self, num_classes=4):
            super().__init__()
            self.conv1 = nn.Conv3d(3, 4, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.conv2 = nn.Conv3d(4, 8, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool2 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2))
            self.conv3 = nn.Conv3d(8, 8, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool3 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 1, 1), ceil_mode=True)
            self.fc6 = nn.Linear(8 * 2 * 2 * 2, 16)
            self.fc7 = nn.Linear(16, num_classes)
            self.dropout = nn.Dropout(p=0.5)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.pool1(self.relu(self.conv1(x)))
            x = self.pool2(self.relu(self.conv2(x)))
            x = self.pool3(self.relu(self.conv3(x)))
            x = x.view(-1, 8 * 2 * 2 * 2)
            x = self.dropout(self.relu(self.fc6(x)))
            return self.fc7(x)

    return C3D()


def c3d_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, c3d(m), weights).double()
    model.dropout.p = 0.0  # the mask is drawn differently by the two libraries
    rng = np.random.default_rng(8)
    clips = torch.from_numpy(rng.standard_normal((3, 3, 8, 8, 8)))
    labels = torch.tensor([2, 0, 3])
    optimizer = optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(clips), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    feats = model.pool3(model.relu(model.conv3(model.pool2(model.relu(model.conv2(model.pool1(model.relu(model.conv1(clips)))))))))
    return {"history": history, "feats": feats, "grad": model.conv1.weight.grad}


def test_c3d_training():
    weights = weights_of(c3d)
    ours, _ = run_both(c3d_training, weights, rtol=1e-8, atol=1e-10)
    # time 8 -> 8 -> 4 -> 2; space 8 -> 4 -> 2 -> ceil((2 + 2 - 2) / 2) + 1 = 2 (a window starting in the padding is dropped)
    assert ours["feats"].shape == (3, 8, 2, 2, 2)


def image_net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def inflate(m, net2d, time_dim=3):
    """I3D: every Conv2d becomes a Conv3d whose kernel is the 2-D one repeated over time and divided by its length,
    pools and norms become their 3-D forms (the time axis untouched by the pools)."""
    nn, torch = m.nn, m.torch

    class TimePad(nn.Module):
        """Replicates the first and last frames (F.pad's 6 numbers run last dim first: W, H, then T)."""

        def forward(self, x):
            return m.F.pad(x, (0, 0, 0, 0, time_dim // 2, time_dim // 2), mode="replicate")

    layers = []
    for layer in net2d:
        if isinstance(layer, nn.Conv2d):
            layers.append(TimePad())
            conv = nn.Conv3d(layer.in_channels, layer.out_channels, (time_dim, *layer.kernel_size),
                             padding=(0, *layer.padding))
            weight_3d = layer.weight.data.unsqueeze(2).repeat(1, 1, time_dim, 1, 1) / time_dim
            conv.weight = nn.Parameter(weight_3d)
            conv.bias = nn.Parameter(layer.bias.data.clone())
            layers.append(conv)
        elif isinstance(layer, nn.BatchNorm2d):
            bn = nn.BatchNorm3d(layer.num_features)
            bn.load_state_dict(layer.state_dict())
            layers.append(bn)
        elif isinstance(layer, nn.MaxPool2d):
            layers.append(nn.MaxPool3d((1, layer.kernel_size, layer.kernel_size), (1, layer.stride, layer.stride)))
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            layers.append(nn.AdaptiveAvgPool3d(1))
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


def i3d(m, weights):
    torch, optim, F = m.torch, m.optim, m.F
    net2d = load(m, image_net(m), weights).double().eval()
    net3d = inflate(m, net2d).double().eval()
    rng = np.random.default_rng(9)
    frames = torch.from_numpy(rng.standard_normal((2, 3, 8, 8)))
    boring = frames.unsqueeze(2).expand(-1, -1, 5, -1, -1)  # a static clip of 5 frames
    with torch.no_grad():
        out2d, out3d = net2d(frames), net3d(boring)
    # fine-tune the inflated network on moving clips, temporal average pooling at the end
    net3d.train()
    clips = torch.from_numpy(rng.standard_normal((4, 3, 6, 8, 8)))
    labels = torch.tensor([0, 1, 2, 1])
    optimizer = optim.Adam(net3d.parameters(), lr=1e-3)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(net3d(clips), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"out2d": out2d, "out3d": out3d, "history": history, "w": net3d[1].weight, "bn": net3d[2].running_mean}


def test_i3d_inflated_from_2d_weights():
    weights = weights_of(image_net)
    ours, _ = run_both(i3d, weights, rtol=1e-8, atol=1e-10)
    # on a clip of one repeated frame, the inflated network answers as the 2-D one (replicate padding in time)
    np.testing.assert_allclose(ours["out3d"], ours["out2d"], rtol=1e-10, atol=1e-12)


def slowfast(m):
    nn = m.nn

    class SlowFastTiny(nn.Module):
        def __init__(self, alpha=4, beta_inv=4, num_classes=3):
            super().__init__()
            self.alpha = alpha
            self.slow_stem = nn.Conv3d(3, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
            self.fast_stem = nn.Conv3d(3, 8 // beta_inv, (5, 3, 3), stride=(1, 2, 2), padding=(2, 1, 1), bias=False)
            self.slow_bn, self.fast_bn = nn.BatchNorm3d(8), nn.BatchNorm3d(8 // beta_inv)
            # fast -> slow lateral connection: a time-strided convolution
            self.lateral = nn.Conv3d(8 // beta_inv, 2 * 8 // beta_inv, (5, 1, 1), stride=(alpha, 1, 1), padding=(2, 0, 0),
                                     bias=False)
            self.slow_res = nn.Conv3d(8 + 2 * 8 // beta_inv, 8, (1, 3, 3), padding=(0, 1, 1))
            self.fast_res = nn.Conv3d(8 // beta_inv, 8 // beta_inv, (3, 3, 3), padding=1)
            self.head = nn.Linear(8 + 8 // beta_inv, num_classes)

        def forward(self, frames):
            # the slow pathway sees every alpha-th frame, chosen with linspace as PySlowFast's pack_pathway_output
            t = frames.shape[2]
            index = m.torch.linspace(0, t - 1, t // self.alpha).long()
            slow_in = m.torch.index_select(frames, 2, index)
            slow = m.F.relu(self.slow_bn(self.slow_stem(slow_in)))
            fast = m.F.relu(self.fast_bn(self.fast_stem(frames)))
            slow = m.torch.cat([slow, self.lateral(fast)], 1)
            slow, fast = m.F.relu(self.slow_res(slow)), m.F.relu(self.fast_res(fast))
            pooled = [m.F.adaptive_avg_pool3d(slow, 1).flatten(1), m.F.adaptive_max_pool3d(fast, 1).flatten(1)]
            return self.head(m.torch.cat(pooled, 1))

    return SlowFastTiny()


def slowfast_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, slowfast(m), weights).double()
    rng = np.random.default_rng(10)
    frames = torch.from_numpy(rng.standard_normal((3, 3, 8, 8, 8)))
    labels = torch.tensor([1, 0, 2])
    optimizer = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(frames), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    index = torch.linspace(0, 7, 2).long()
    return {"history": history, "index": index, "grad": model.lateral.weight.grad, "fast": model.fast_stem.weight}


def test_slowfast_lateral_connection_training():
    weights = weights_of(slowfast)
    ours, _ = run_both(slowfast_training, weights, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(ours["index"], [0, 7])


# ----------------------------------------------------------------------------------------------
# Pyramid pooling (PSPNet-3D) with AvgPool3d's options and AdaptiveMaxPool3d's indices
# ----------------------------------------------------------------------------------------------


def psp3d(m):
    nn, F, torch = m.nn, m.F, m.torch

    class PyramidPooling(nn.Module):
        def __init__(self, in_channels, bins=(1, 2, 3)):
            super().__init__()
            self.stages = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool3d(b), nn.Conv3d(in_channels, 2, 1, bias=False),
                                                       nn.GroupNorm(1, 2), nn.ReLU()) for b in bins])

        def forward(self, x):
            size = x.shape[2:]
            outs = [x] + [F.interpolate(stage(x), size=size, mode="trilinear", align_corners=True) for stage in self.stages]
            return torch.cat(outs, 1)

    class PSP3D(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(),
                                      nn.AvgPool3d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False))
            self.ppm = PyramidPooling(4)
            self.smooth = nn.AvgPool3d((3, 3, 1), stride=1, padding=(1, 1, 0), divisor_override=6)
            self.cls = nn.Conv3d(10, 2, 1)
            self.amax = nn.AdaptiveMaxPool3d((2, 3, 2), return_indices=True)

        def forward(self, x):
            f = self.stem(x)
            f = self.smooth(self.ppm(f))
            logits = F.interpolate(self.cls(f), size=x.shape[2:], mode="trilinear", align_corners=False)
            peaks, where = self.amax(f)
            return logits, peaks, where

    return PSP3D()


def psp_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, psp3d(m), weights).double()
    images, labels = volumes(n=2, side=9, classes=2, seed=11)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    optimizer = optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.5)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        logits, peaks, where = model(x)
        loss = F.cross_entropy(logits, y) + 0.01 * peaks.mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "logits": logits, "peaks": peaks, "where": where,
            "grad": model.ppm.stages[2][1].weight.grad, "stem_shape": tuple(model.stem(x).shape)}


def test_pyramid_pooling_with_avgpool_options_and_adaptive_max_indices():
    weights = weights_of(psp3d)
    ours, _ = run_both(psp_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["stem_shape"] == (2, 4, 5, 5, 5)
    assert ours["where"].dtype == np.int64 and ours["where"].max() < 125


# ----------------------------------------------------------------------------------------------
# 3-D sub-pixel convolution (pixel shuffle by reshape/permute) with ICNR initialisation
# ----------------------------------------------------------------------------------------------


def pixel_shuffle_3d(m, x, r):
    b, c, d, h, w = x.shape
    oc = c // r ** 3
    x = x.contiguous().view(b, oc, r, r, r, d, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).contiguous()
    return x.view(b, oc, d * r, h * r, w * r)


def icnr_(m, weight, r):
    """ICNR: a kernel for r^3 sub-pixels made of one random kernel repeated, so that the shuffle starts as a
    nearest-neighbour upsampling (no checkerboard)."""
    out_channels = weight.shape[0] // r ** 3
    base = m.torch.empty(out_channels, *weight.shape[1:])
    m.nn.init.kaiming_normal_(base)
    base = base.transpose(0, 1).contiguous().view(weight.shape[1], out_channels, -1)
    k = base.repeat_interleave(r ** 3, dim=1)
    k = k.contiguous().view(weight.shape[1], weight.shape[0], *weight.shape[2:]).transpose(0, 1)
    with m.torch.no_grad():
        weight.copy_(k)
    return weight


def subpixel(m):
    nn = m.nn

    class SubPixelSR(nn.Module):
        def __init__(self, r=2):
            super().__init__()
            self.r = r
            self.body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1, padding_mode="replicate"), nn.ReLU())
            self.up = nn.Conv3d(4, 2 * r ** 3, 3, padding=1, padding_mode="replicate")
            self.tail = nn.Conv3d(2, 1, 1)

        def forward(self, x):
            return self.tail(pixel_shuffle_3d(m, self.up(self.body(x)), self.r)) + m.F.interpolate(x, scale_factor=self.r, mode="trilinear")

    return SubPixelSR()


def subpixel_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, subpixel(m), weights).double()
    rng = np.random.default_rng(12)
    hr = torch.from_numpy(rng.standard_normal((2, 1, 8, 8, 8)))
    lr = F.avg_pool3d(hr, 2)
    optimizer = optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.99))
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.l1_loss(model(lr), hr)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "sr": model(lr), "grad": model.up.weight.grad}


def test_subpixel_3d_super_resolution():
    weights = weights_of(subpixel)
    ours, _ = run_both(subpixel_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["sr"].shape == (2, 1, 8, 8, 8)


def test_icnr_shuffle_starts_as_nearest_upsampling_by_hand():
    torch, nn, F = OURS.torch, OURS.nn, OURS.F
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 2 * 8, 3, padding=1).double()
    icnr_(OURS, conv.weight, 2)
    conv.bias.data.zero_()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 3, 4, 2)))
    shuffled = pixel_shuffle_3d(OURS, conv(x), 2)
    base = F.conv3d(x, conv.weight[::8], padding=1)
    np.testing.assert_allclose(shuffled.detach().numpy(), F.interpolate(base, scale_factor=2, mode="nearest").detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    # the reshape/permute shuffle is PixelShuffle's rule in 3-D: channel c*r^3 + (i*r + j)*r + k goes to (r*d+i, r*h+j, r*w+k)
    y = torch.arange(2 * 8 * 2 * 3 * 1.0).view(1, 16, 2, 3, 1)
    s = pixel_shuffle_3d(OURS, y, 2).numpy()
    assert s[0, 1, 2 * 1 + 1, 2 * 2 + 0, 1] == y.numpy()[0, 8 + (1 * 2 + 0) * 2 + 1, 1, 2, 0]


# ----------------------------------------------------------------------------------------------
# Attention U-Net gates (Oktay et al.) on channels_last_3d tensors
# ----------------------------------------------------------------------------------------------


def attention_unet(m):
    nn, F, torch = m.nn, m.F, m.torch

    class GridAttentionBlock3D(nn.Module):
        def __init__(self, in_channels, gating_channels, inter_channels, sub_sample_factor=(2, 2, 2)):
            super().__init__()
            self.W = nn.Sequential(nn.Conv3d(in_channels, in_channels, 1), nn.BatchNorm3d(in_channels))
            self.theta = nn.Conv3d(in_channels, inter_channels, kernel_size=sub_sample_factor, stride=sub_sample_factor,
                                   bias=False)
            self.phi = nn.Conv3d(gating_channels, inter_channels, 1, bias=True)
            self.psi = nn.Conv3d(inter_channels, 1, 1, bias=True)

        def forward(self, x, g):
            input_size = x.size()
            theta_x = self.theta(x)
            theta_x_size = theta_x.size()
            phi_g = F.interpolate(self.phi(g), size=theta_x_size[2:], mode="trilinear", align_corners=False)
            f = F.relu(theta_x + phi_g, inplace=True)
            sigm_psi_f = torch.sigmoid(self.psi(f))
            sigm_psi_f = F.interpolate(sigm_psi_f, size=input_size[2:], mode="trilinear", align_corners=False)
            y = sigm_psi_f.expand_as(x) * x
            return self.W(y), sigm_psi_f

    class AttentionUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(inplace=True))
            self.enc2 = nn.Sequential(nn.MaxPool3d(2), nn.Conv3d(4, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(inplace=True))
            self.center = nn.Sequential(nn.MaxPool3d(2), nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(inplace=True))
            self.gate2 = GridAttentionBlock3D(8, 8, 4)
            self.gate1 = GridAttentionBlock3D(4, 8, 4)
            self.up2 = nn.Conv3d(16, 8, 3, padding=1)
            self.up1 = nn.Conv3d(12, 4, 3, padding=1)
            self.final = nn.Conv3d(4, 2, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(e1)
            c = self.center(e2)
            g2, att2 = self.gate2(e2, c)
            d2 = F.relu(self.up2(torch.cat([g2, F.interpolate(c, scale_factor=2, mode="trilinear")], 1)))
            g1, att1 = self.gate1(e1, d2)
            d1 = F.relu(self.up1(torch.cat([g1, F.interpolate(d2, scale_factor=2, mode="trilinear")], 1)))
            return self.final(d1), att1, att2

    return AttentionUNet()


def attention_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, attention_unet(m), weights).to(memory_format=torch.channels_last_3d)
    images, labels = volumes(n=2, classes=2, seed=13)
    x = torch.from_numpy(images.astype(np.float32)).to(memory_format=torch.channels_last_3d)
    y = torch.from_numpy(labels)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        logits, att1, att2 = model(x)
        loss = F.cross_entropy(logits, y) + dice_ce_loss(m, logits, y.unsqueeze(1), lambda_ce=0.0)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "att1": att1, "att2": att2, "logits": logits,
            "psi_grad": model.gate1.psi.weight.grad}


def test_attention_unet_gates_in_channels_last_3d():
    weights = weights_of(attention_unet)
    ours, _ = run_both(attention_training, weights, rtol=1e-5, atol=1e-5)
    assert ours["att1"].shape == (2, 1, 8, 8, 8) and ours["att2"].shape == (2, 1, 4, 4, 4)
    assert 0 < ours["att1"].min() and ours["att1"].max() < 1
    assert ours["history"][-1] < ours["history"][0]


def test_to_channels_last_3d_is_contiguous_in_that_format():
    """.to(memory_format=channels_last_3d) lays the tensor out as N, D, H, W, C, as PyTorch's (values unchanged)."""
    torch = OURS.torch
    x = torch.randn(2, 3, 4, 5, 6).to(memory_format=torch.channels_last_3d)
    assert x.is_contiguous(memory_format=torch.channels_last_3d)
    assert x.stride() == (360, 1, 90, 18, 3)


# ----------------------------------------------------------------------------------------------
# Gaussian smoothing and edge losses with 6-number F.pad in reflect / replicate / circular modes
# ----------------------------------------------------------------------------------------------


def gaussian_kernel_1d(m, sigma, truncated=3.0):
    torch = m.torch
    tail = int(max(float(sigma) * truncated, 0.5) + 0.5)
    x = torch.arange(-tail, tail + 1, dtype=torch.float64)
    k = torch.exp(-0.5 / (sigma * sigma) * x ** 2)
    return k / k.sum()


def gaussian_filter(m, x, sigma, mode):
    """Separable smoothing as MONAI's GaussianFilter: one 1-D depthwise conv3d per spatial dim."""
    F = m.F
    channels = x.shape[1]
    for d in range(3):
        k = gaussian_kernel_1d(m, sigma[d])
        r = k.numel() // 2
        shape = [1, 1, 1]
        shape[d] = k.numel()
        weight = k.view(1, 1, *shape).repeat(channels, 1, 1, 1, 1)
        pad = [0] * 6
        pad[2 * (2 - d)] = pad[2 * (2 - d) + 1] = r
        x = F.conv3d(F.pad(x, pad, mode=mode), weight, groups=channels)
    return x


def laplacian_edges(m, x):
    """A 3-D Sobel magnitude with replicate padding, and a Laplacian with the periodic (circular) boundary."""
    torch, F = m.torch, m.F
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype)
    kernels = []
    for axis in range(3):
        parts = [diff if a == axis else smooth for a in range(3)]
        kernels.append(torch.einsum("i,j,k->ijk", *parts))
    sobel = torch.stack(kernels).unsqueeze(1)  # (3, 1, 3, 3, 3)
    padded = F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate")
    grads = F.conv3d(padded, sobel)
    magnitude = grads.pow(2).sum(1, keepdim=True).add(1e-8).sqrt()
    lap = torch.zeros(1, 1, 3, 3, 3, dtype=x.dtype)
    lap[0, 0, 1, 1, 1] = -6
    for i in range(3):
        idx = [1, 1, 1]
        for v in (0, 2):
            idx[i] = v
            lap[(0, 0, *idx)] = 1
    laplace = F.conv3d(F.pad(x, (1,) * 6, mode="circular"), lap)
    return magnitude, laplace


def denoiser(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1, padding_mode="reflect"), nn.InstanceNorm3d(4), nn.SiLU(),
                         nn.Conv3d(4, 4, 3, padding=2, dilation=2, padding_mode="circular"), nn.SiLU(),
                         nn.Conv3d(4, 1, 3, padding=1, padding_mode="replicate"))


def smoothing_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(14)
    clean = gaussian_filter(m, torch.from_numpy(rng.standard_normal((2, 1, 8, 8, 8))), (1.0, 0.8, 1.2), "reflect")
    noisy = clean + 0.2 * torch.from_numpy(rng.standard_normal((2, 1, 8, 8, 8)))
    model = load(m, denoiser(m), weights).double()
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        out = noisy - model(noisy)
        edge_out, lap_out = laplacian_edges(m, out)
        edge_clean, _ = laplacian_edges(m, clean)
        loss = F.mse_loss(out, clean) + 0.01 * F.l1_loss(edge_out, edge_clean) + 1e-3 * lap_out.pow(2).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    blurred = {mode: gaussian_filter(m, noisy, (0.7, 0.7, 0.7), mode) for mode in ("constant", "reflect", "replicate", "circular")}
    return {"history": history, "blurred": blurred, "grad": model[3].weight.grad, "clean": clean}


def test_gaussian_smoothing_and_edge_losses_with_padding_modes():
    weights = weights_of(denoiser)
    ours, _ = run_both(smoothing_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]


def test_gaussian_filter_and_laplacian_by_hand():
    """Circular padding makes the Laplacian of a periodic wave exact: -(kx^2 + ...) in the discrete sense; the
    reflect-padded Gaussian keeps a constant volume constant."""
    torch = OURS.torch
    g = np.stack(np.meshgrid(*[np.arange(8.0)] * 3, indexing="ij"))
    wave = np.sin(2 * np.pi * g[0] / 8) + np.cos(2 * np.pi * 2 * g[2] / 8)
    _, lap = laplacian_edges(OURS, torch.from_numpy(wave[None, None]))
    eig0, eig2 = 2 * np.cos(2 * np.pi / 8) - 2, 2 * np.cos(4 * np.pi / 8) - 2
    want = eig0 * np.sin(2 * np.pi * g[0] / 8) + eig2 * np.cos(2 * np.pi * 2 * g[2] / 8)
    np.testing.assert_allclose(lap.numpy()[0, 0], want, atol=1e-12)
    const = torch.full((1, 2, 5, 6, 7), 3.0, dtype=torch.float64)
    for mode in ("reflect", "replicate", "circular"):
        np.testing.assert_allclose(gaussian_filter(OURS, const, (1.0, 1.0, 1.0), mode).numpy(), 3.0, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# nnU-Net's training step: PlainConvUNet with deep supervision, MemoryEfficientSoftDiceLoss (a bool one-hot by
# scatter_), RobustCrossEntropyLoss, a PolyLR scheduler subclass, SGD Nesterov 0.99, gradient clipping, and
# mirroring test-time augmentation
# ----------------------------------------------------------------------------------------------


def plain_conv_unet(m):
    nn = m.nn

    class ConvDropoutNormReLU(nn.Module):
        def __init__(self, input_channels, output_channels, kernel_size, stride):
            super().__init__()
            self.conv = nn.Conv3d(input_channels, output_channels, kernel_size, stride,
                                  padding=[(i - 1) // 2 for i in kernel_size], dilation=1, bias=True)
            self.norm = nn.InstanceNorm3d(output_channels, eps=1e-5, affine=True)
            self.nonlin = nn.LeakyReLU(inplace=True)
            self.all_modules = nn.Sequential(self.conv, self.norm, self.nonlin)

        def forward(self, x):
            return self.all_modules(x)

    class StackedConvBlocks(nn.Module):
        def __init__(self, num_convs, input_channels, output_channels, kernel_size, initial_stride):
            super().__init__()
            self.convs = nn.Sequential(
                ConvDropoutNormReLU(input_channels, output_channels, kernel_size, initial_stride),
                *[ConvDropoutNormReLU(output_channels, output_channels, kernel_size, 1) for i in range(1, num_convs)])

        def forward(self, x):
            return self.convs(x)

    class PlainConvUNet(nn.Module):
        def __init__(self, input_channels=1, features=(4, 8, 8), kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3)),
                     strides=((1, 1, 1), (1, 2, 2), (2, 2, 2)), num_classes=3, deep_supervision=True):
            super().__init__()
            self.deep_supervision = deep_supervision
            stages = []
            for s in range(len(features)):
                stages.append(StackedConvBlocks(2, input_channels, features[s], kernel_sizes[s], strides[s]))
                input_channels = features[s]
            self.stages = nn.Sequential(*stages)
            transpconvs, dec_stages, seg_layers = [], [], []
            for s in range(1, len(features)):
                below, skip = features[-s], features[-(s + 1)]
                stride_for_transpconv = strides[-s]
                transpconvs.append(nn.ConvTranspose3d(below, skip, stride_for_transpconv, stride_for_transpconv, bias=True))
                dec_stages.append(StackedConvBlocks(2, 2 * skip, skip, kernel_sizes[-(s + 1)], 1))
                seg_layers.append(nn.Conv3d(skip, num_classes, 1, 1, 0, bias=True))
            self.transpconvs = nn.ModuleList(transpconvs)
            self.dec_stages = nn.ModuleList(dec_stages)
            self.seg_layers = nn.ModuleList(seg_layers)

        def forward(self, x):
            skips = []
            for s in self.stages:
                x = s(x)
                skips.append(x)
            lres_input = skips[-1]
            seg_outputs = []
            for s in range(len(self.dec_stages)):
                x = self.transpconvs[s](lres_input)
                x = m.torch.cat((x, skips[-(s + 2)]), 1)
                x = self.dec_stages[s](x)
                if self.deep_supervision:
                    seg_outputs.append(self.seg_layers[s](x))
                elif s == (len(self.dec_stages) - 1):
                    seg_outputs.append(self.seg_layers[-1](x))
                lres_input = x
            seg_outputs = seg_outputs[::-1]
            return seg_outputs if self.deep_supervision else seg_outputs[0]

    class InitWeights_He:
        def __init__(self, neg_slope=1e-2):
            self.neg_slope = neg_slope

        def __call__(self, module):
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                module.weight = nn.init.kaiming_normal_(module.weight, a=self.neg_slope)
                if module.bias is not None:
                    module.bias = nn.init.constant_(module.bias, 0)

    net = PlainConvUNet()
    net.apply(InitWeights_He(1e-2))
    return net


def nnunet_training(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim

    class MemoryEfficientSoftDiceLoss(nn.Module):
        def __init__(self, apply_nonlin=None, batch_dice=False, do_bg=True, smooth=1.0):
            super().__init__()
            self.do_bg, self.batch_dice, self.apply_nonlin, self.smooth = do_bg, batch_dice, apply_nonlin, smooth

        def forward(self, x, y, loss_mask=None):
            if self.apply_nonlin is not None:
                x = self.apply_nonlin(x)
            axes = tuple(range(2, x.ndim))
            with torch.no_grad():
                if x.ndim != y.ndim:
                    y = y.view((y.shape[0], 1, *y.shape[1:]))
                if x.shape == y.shape:
                    y_onehot = y
                else:
                    y_onehot = torch.zeros(x.shape, device=x.device, dtype=torch.bool)
                    y_onehot.scatter_(1, y.long(), 1)
                if not self.do_bg:
                    y_onehot = y_onehot[:, 1:]
                sum_gt = y_onehot.sum(axes) if loss_mask is None else (y_onehot * loss_mask).sum(axes)
            if not self.do_bg:
                x = x[:, 1:]
            intersect = (x * y_onehot).sum(axes)
            sum_pred = x.sum(axes)
            if self.batch_dice:
                intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)
            dc = (2 * intersect + self.smooth) / (torch.clip(sum_gt + sum_pred + self.smooth, 1e-8))
            return -dc.mean()

    class RobustCrossEntropyLoss(nn.CrossEntropyLoss):
        def forward(self, input, target):
            if target.ndim == input.ndim:
                assert target.shape[1] == 1
                target = target[:, 0]
            return super().forward(input, target.long())

    class DC_and_CE_loss(nn.Module):
        def __init__(self, weight_ce=1, weight_dice=1, ignore_label=None):
            super().__init__()
            self.weight_dice, self.weight_ce, self.ignore_label = weight_dice, weight_ce, ignore_label
            self.ce = RobustCrossEntropyLoss()
            self.dc = MemoryEfficientSoftDiceLoss(apply_nonlin=lambda x: torch.softmax(x, 1), batch_dice=True, do_bg=False,
                                                  smooth=1e-5)

        def forward(self, net_output, target):
            dc_loss = self.dc(net_output, target) if self.weight_dice != 0 else 0
            ce_loss = self.ce(net_output, target[:, 0]) if self.weight_ce != 0 else 0
            return self.weight_ce * ce_loss + self.weight_dice * dc_loss

    class DeepSupervisionWrapper(nn.Module):
        def __init__(self, loss, weight_factors=None):
            super().__init__()
            assert any([x != 0 for x in weight_factors]), "At least one weight factor should be != 0.0"
            self.weight_factors = tuple(weight_factors)
            self.loss = loss

        def forward(self, *args):
            assert all([isinstance(i, (tuple, list)) for i in args])
            weights = self.weight_factors if self.weight_factors is not None else (1,) * len(args[0])
            return sum([weights[i] * self.loss(*inputs) for i, inputs in enumerate(zip(*args)) if weights[i] != 0.0])

    class PolyLRScheduler(optim.lr_scheduler._LRScheduler):
        def __init__(self, optimizer, initial_lr, max_steps, exponent=0.9, current_step=None):
            self.optimizer = optimizer
            self.initial_lr = initial_lr
            self.max_steps = max_steps
            self.exponent = exponent
            self.ctr = 0
            super().__init__(optimizer, current_step if current_step is not None else -1)

        def step(self, current_step=None):
            if current_step is None or current_step == -1:
                current_step = self.ctr
                self.ctr += 1
            new_lr = self.initial_lr * (1 - current_step / self.max_steps) ** self.exponent
            for param_group in self.optimizer.param_groups:
                param_group["lr"] = new_lr
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    network = load(m, plain_conv_unet(m), weights).double()
    deep_supervision_scales = [[1, 1, 1], [1, 0.5, 0.5], [0.5, 0.25, 0.25]]
    weights_ds = np.array([1 / (2 ** i) for i in range(len(deep_supervision_scales))])
    weights_ds = weights_ds / weights_ds.sum()
    loss = DeepSupervisionWrapper(DC_and_CE_loss(), weights_ds)
    optimizer = optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    lr_scheduler = PolyLRScheduler(optimizer, 1e-2, 10)
    images, labels = volumes(n=2, seed=15)
    data = torch.from_numpy(images)
    seg = torch.from_numpy(labels).unsqueeze(1).double()
    # the targets of the lower resolutions, as nnU-Net's DownsampleSegForDSTransform2 (nearest, order 0)
    target = [m.F.interpolate(seg, scale_factor=tuple(s), mode="nearest-exact") if s != [1, 1, 1] else seg
              for s in deep_supervision_scales]
    history, lrs = [], []
    for epoch in range(4):
        network.train()
        lr_scheduler.step(epoch)
        optimizer.zero_grad(set_to_none=True)
        output = network(data)
        l = loss(output, target)
        l.backward()
        norm = nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimizer.step()
        history.append(l.detach().cpu().numpy().item())
        lrs.append(optimizer.param_groups[0]["lr"])
    # validation with mirroring: the prediction averaged over every flip of the spatial axes
    network.eval()
    network.deep_supervision = False
    with torch.no_grad():
        prediction = network(data)
        mirror_axes = (0, 1, 2)
        axes_combinations = [c for i in range(len(mirror_axes)) for c in itertools.combinations([m_ + 2 for m_ in mirror_axes], i + 1)]
        for axes in axes_combinations:
            prediction += torch.flip(network(torch.flip(data, axes)), axes)
        prediction /= (len(axes_combinations) + 1)
    return {"history": history, "lrs": lrs, "norm": norm, "prediction": prediction,
            "targets": [tuple(t.shape) for t in target], "seg": prediction.argmax(1)}


def test_nnunet_training_step_with_deep_supervision_and_mirroring():
    weights = weights_of(plain_conv_unet)
    ours, _ = run_both(nnunet_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["targets"] == [(2, 1, 8, 8, 8), (2, 1, 8, 4, 4), (2, 1, 4, 2, 2)]
    np.testing.assert_allclose(ours["lrs"], [1e-2 * (1 - e / 10) ** 0.9 for e in range(4)], rtol=1e-12)


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


# ----------------------------------------------------------------------------------------------
# Video transformers and temporal modules: Video Swin's 3-D shifted windows (window partition by view/permute,
# torch.roll, the attention mask built by slices, a relative position bias table), TSM's temporal shift, a
# non-local block, and X3D's depthwise Conv3d with squeeze-excitation
# ----------------------------------------------------------------------------------------------


def window_partition(x, window_size):
    B, D, H, W, C = x.shape
    x = x.view(B, D // window_size[0], window_size[0], H // window_size[1], window_size[1], W // window_size[2],
               window_size[2], C)
    windows = x.permute(0, 1, 3, 5, 2, 4, 6, 7).contiguous().view(-1, window_size[0] * window_size[1] * window_size[2], C)
    return windows


def window_reverse(windows, window_size, B, D, H, W):
    x = windows.view(B, D // window_size[0], H // window_size[1], W // window_size[2], window_size[0], window_size[1],
                     window_size[2], -1)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).contiguous().view(B, D, H, W, -1)
    return x


def compute_mask(m, D, H, W, window_size, shift_size):
    torch = m.torch
    img_mask = torch.zeros((1, D, H, W, 1))
    cnt = 0
    for d in slice(-window_size[0]), slice(-window_size[0], -shift_size[0]), slice(-shift_size[0], None):
        for h in slice(-window_size[1]), slice(-window_size[1], -shift_size[1]), slice(-shift_size[1], None):
            for w in slice(-window_size[2]), slice(-window_size[2], -shift_size[2]), slice(-shift_size[2], None):
                img_mask[:, d, h, w, :] = cnt
                cnt += 1
    mask_windows = window_partition(img_mask, window_size)
    mask_windows = mask_windows.squeeze(-1)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
    return attn_mask


def video_swin(m):
    torch, nn, F = m.torch, m.nn, m.F

    class WindowAttention3D(nn.Module):
        def __init__(self, dim, window_size, num_heads):
            super().__init__()
            self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
            head_dim = dim // num_heads
            self.scale = head_dim ** -0.5
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1) * (2 * window_size[2] - 1), num_heads))
            coords_d = torch.arange(self.window_size[0])
            coords_h = torch.arange(self.window_size[1])
            coords_w = torch.arange(self.window_size[2])
            coords = torch.stack(torch.meshgrid(coords_d, coords_h, coords_w, indexing="ij"))
            coords_flatten = torch.flatten(coords, 1)
            relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
            relative_coords = relative_coords.permute(1, 2, 0).contiguous()
            relative_coords[:, :, 0] += self.window_size[0] - 1
            relative_coords[:, :, 1] += self.window_size[1] - 1
            relative_coords[:, :, 2] += self.window_size[2] - 1
            relative_coords[:, :, 0] *= (2 * self.window_size[1] - 1) * (2 * self.window_size[2] - 1)
            relative_coords[:, :, 1] *= (2 * self.window_size[2] - 1)
            relative_position_index = relative_coords.sum(-1)
            self.register_buffer("relative_position_index", relative_position_index)
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
            self.proj = nn.Linear(dim, dim)
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x, mask=None):
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            relative_position_bias = self.relative_position_bias_table[self.relative_position_index[:N, :N].reshape(-1)].reshape(
                N, N, -1)
            relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
            attn = attn + relative_position_bias.unsqueeze(0)
            if mask is not None:
                nW = mask.shape[0]
                attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, self.num_heads, N, N)
            attn = self.softmax(attn)
            x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
            return self.proj(x)

    class SwinTransformerBlock3D(nn.Module):
        def __init__(self, dim, num_heads, window_size=(2, 2, 2), shift_size=(0, 0, 0)):
            super().__init__()
            self.window_size, self.shift_size = window_size, shift_size
            self.norm1 = nn.LayerNorm(dim)
            self.attn = WindowAttention3D(dim, window_size=self.window_size, num_heads=num_heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x, mask_matrix):
            B, D, H, W, C = x.shape
            shortcut = x
            x = self.norm1(x)
            pad_d1 = (self.window_size[0] - D % self.window_size[0]) % self.window_size[0]
            pad_b = (self.window_size[1] - H % self.window_size[1]) % self.window_size[1]
            pad_r = (self.window_size[2] - W % self.window_size[2]) % self.window_size[2]
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b, 0, pad_d1))
            _, Dp, Hp, Wp, _ = x.shape
            if any(i > 0 for i in self.shift_size):
                shifted_x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1], -self.shift_size[2]),
                                       dims=(1, 2, 3))
                attn_mask = mask_matrix
            else:
                shifted_x = x
                attn_mask = None
            x_windows = window_partition(shifted_x, self.window_size)
            attn_windows = self.attn(x_windows, mask=attn_mask)
            attn_windows = attn_windows.view(-1, *(self.window_size + (C,)))
            shifted_x = window_reverse(attn_windows, self.window_size, B, Dp, Hp, Wp)
            if any(i > 0 for i in self.shift_size):
                x = torch.roll(shifted_x, shifts=(self.shift_size[0], self.shift_size[1], self.shift_size[2]), dims=(1, 2, 3))
            else:
                x = shifted_x
            if pad_d1 > 0 or pad_r > 0 or pad_b > 0:
                x = x[:, :D, :H, :W, :].contiguous()
            x = shortcut + x
            return x + self.mlp(self.norm2(x))

    class TinyVideoSwin(nn.Module):
        def __init__(self, dim=8, num_classes=3):
            super().__init__()
            self.patch_embed = nn.Conv3d(3, dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
            self.blocks = nn.ModuleList([SwinTransformerBlock3D(dim, 2), SwinTransformerBlock3D(dim, 2, shift_size=(1, 1, 1))])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, num_classes)

        def forward(self, x):
            x = self.patch_embed(x)  # B C D H W
            x = x.permute(0, 2, 3, 4, 1)  # B D H W C
            B, D, H, W, C = x.shape
            Dp, Hp, Wp = (int(np.ceil(s / 2)) * 2 for s in (D, H, W))
            attn_mask = compute_mask(m, Dp, Hp, Wp, (2, 2, 2), (1, 1, 1)).to(x.dtype)
            for blk in self.blocks:
                x = blk(x, attn_mask)
            x = self.norm(x)
            return self.head(x.mean(dim=(1, 2, 3)))

    return TinyVideoSwin()


def video_swin_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, video_swin(m), weights).double()
    rng = np.random.default_rng(17)
    clips = torch.from_numpy(rng.standard_normal((2, 3, 6, 12, 16)))  # 3 x 3 x 4 tokens: padded to windows
    labels = torch.tensor([2, 0])
    optimizer = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(clips), labels, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "bias_grad": model.blocks[1].attn.relative_position_bias_table.grad,
            "index": model.blocks[0].attn.relative_position_index, "mask": compute_mask(m, 4, 4, 4, (2, 2, 2), (1, 1, 1))}


def test_video_swin_shifted_window_attention():
    weights = weights_of(video_swin)
    ours, _ = run_both(video_swin_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["index"].shape == (8, 8) and ours["index"].max() == 3 * 3 * 3 - 1 and (np.diag(ours["index"]) == 13).all()
    mask = ours["mask"]
    assert mask.shape == (8, 8, 8) and (mask[0] == 0).all() and set(np.unique(mask[-1])) == {0.0, -100.0}


def temporal_modules(m):
    nn, torch, F = m.nn, m.torch, m.F

    class TemporalShift(nn.Module):
        def __init__(self, net, n_segment=4, n_div=4):
            super().__init__()
            self.net, self.n_segment, self.fold_div = net, n_segment, n_div

        def forward(self, x):
            nt, c, h, w = x.size()
            n_batch = nt // self.n_segment
            x = x.view(n_batch, self.n_segment, c, h, w)
            fold = c // self.fold_div
            out = torch.zeros_like(x)
            out[:, :-1, :fold] = x[:, 1:, :fold]  # shift left
            out[:, 1:, fold: 2 * fold] = x[:, :-1, fold: 2 * fold]  # shift right
            out[:, :, 2 * fold:] = x[:, :, 2 * fold:]  # not shift
            return self.net(out.view(nt, c, h, w))

    class NonLocalBlock3D(nn.Module):
        def __init__(self, in_channels, inter_channels):
            super().__init__()
            self.inter_channels = inter_channels
            self.g = nn.Conv3d(in_channels, inter_channels, 1)
            self.theta = nn.Conv3d(in_channels, inter_channels, 1)
            self.phi = nn.Conv3d(in_channels, inter_channels, 1)
            self.W = nn.Sequential(nn.Conv3d(inter_channels, in_channels, 1), nn.BatchNorm3d(in_channels))
            self.pool = nn.MaxPool3d(kernel_size=(1, 2, 2))

        def forward(self, x):
            batch_size = x.size(0)
            g_x = self.pool(self.g(x)).view(batch_size, self.inter_channels, -1).permute(0, 2, 1)
            theta_x = self.theta(x).view(batch_size, self.inter_channels, -1).permute(0, 2, 1)
            phi_x = self.pool(self.phi(x)).view(batch_size, self.inter_channels, -1)
            f_div_C = F.softmax(torch.matmul(theta_x, phi_x), dim=-1)
            y = torch.matmul(f_div_C, g_x).permute(0, 2, 1).contiguous()
            y = y.view(batch_size, self.inter_channels, *x.size()[2:])
            return self.W(y) + x

    class X3DBlock(nn.Module):
        def __init__(self, channels, expansion=2):
            super().__init__()
            mid = channels * expansion
            self.a = nn.Sequential(nn.Conv3d(channels, mid, 1, bias=False), nn.BatchNorm3d(mid), nn.ReLU())
            self.b = nn.Conv3d(mid, mid, 3, padding=1, groups=mid, bias=False)
            self.se = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(mid, 4, 1), nn.ReLU(), nn.Conv3d(4, mid, 1), nn.Sigmoid())
            self.swish = nn.SiLU()
            self.c = nn.Sequential(nn.Conv3d(mid, channels, 1, bias=False), nn.BatchNorm3d(channels))

        def forward(self, x):
            y = self.b(self.a(x))
            y = self.swish(y * self.se(y))
            return F.relu(x + self.c(y))

    class TemporalNet(nn.Module):
        def __init__(self, n_segment=4):
            super().__init__()
            self.n_segment = n_segment
            self.tsm = TemporalShift(nn.Conv2d(8, 8, 3, padding=1), n_segment=n_segment)
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.nonlocal_ = NonLocalBlock3D(8, 4)
            self.x3d = X3DBlock(8)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):  # x: (B, T, C, H, W)
            b, t = x.shape[:2]
            y = F.relu(self.tsm(F.relu(self.stem(x.flatten(0, 1)))))
            y = y.view(b, t, *y.shape[1:]).transpose(1, 2)  # to (B, C, T, H, W)
            y = self.x3d(self.nonlocal_(y))
            return self.fc(y.mean((2, 3, 4)))

    return TemporalNet()


def temporal_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, temporal_modules(m), weights).double()
    rng = np.random.default_rng(18)
    clips = torch.from_numpy(rng.standard_normal((2, 4, 3, 6, 6)))
    labels = torch.tensor([1, 2])
    optimizer = optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(clips), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    x = torch.arange(2 * 4 * 8 * 1 * 1.0).view(8, 8, 1, 1).requires_grad_(True)
    shifted = model.tsm.__class__(m.nn.Identity(), 4, 4)(x)
    shifted.backward(torch.arange(shifted.numel() * 1.0).view(shifted.shape))
    return {"history": history, "se_grad": model.x3d.se[1].weight.grad, "dw_grad": model.x3d.b.weight.grad,
            "shifted": shifted, "shift_grad": x.grad}


def test_tsm_nonlocal_and_x3d_blocks():
    weights = weights_of(temporal_modules)
    ours, _ = run_both(temporal_training, weights, rtol=1e-8, atol=1e-10)
    s = ours["shifted"].reshape(2, 4, 8)
    x = np.arange(64.0).reshape(2, 4, 8)
    np.testing.assert_array_equal(s[:, :-1, :2], x[:, 1:, :2])
    np.testing.assert_array_equal(s[:, -1, :2], 0)
    np.testing.assert_array_equal(s[:, 1:, 2:4], x[:, :-1, 2:4])
    np.testing.assert_array_equal(s[:, :, 4:], x[:, :, 4:])


# ----------------------------------------------------------------------------------------------
# V-Net (Milletari et al., as vnet.pytorch writes it): ContBatchNorm3d, a _BatchNorm subclass with its own
# _check_input_dim that always normalises by the batch; 5x5x5 convolutions, ELU, strided down / transposed up
# convolutions, Dropout3d, and a softmax over voxels flattened to (N*D*H*W, 2)
# ----------------------------------------------------------------------------------------------


def vnet(m):
    nn, F, torch = m.nn, m.F, m.torch

    class ContBatchNorm3d(nn.modules.batchnorm._BatchNorm):
        def _check_input_dim(self, input):
            if input.dim() != 5:
                raise ValueError("expected 5D input (got {}D input)".format(input.dim()))

        def forward(self, input):
            self._check_input_dim(input)
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, True, self.momentum,
                                self.eps)

    def ELUCons(elu, nchan):
        return nn.ELU(inplace=True) if elu else nn.PReLU(nchan)

    class LUConv(nn.Module):
        def __init__(self, nchan, elu):
            super().__init__()
            self.relu1 = ELUCons(elu, nchan)
            self.conv1 = nn.Conv3d(nchan, nchan, kernel_size=5, padding=2)
            self.bn1 = ContBatchNorm3d(nchan)

        def forward(self, x):
            return self.relu1(self.bn1(self.conv1(x)))

    def _make_nConv(nchan, depth, elu):
        return nn.Sequential(*[LUConv(nchan, elu) for _ in range(depth)])

    class InputTransition(nn.Module):
        def __init__(self, outChans, elu):
            super().__init__()
            self.conv1 = nn.Conv3d(1, 4, kernel_size=5, padding=2)
            self.bn1 = ContBatchNorm3d(4)
            self.relu1 = ELUCons(elu, 4)

        def forward(self, x):
            out = self.bn1(self.conv1(x))
            x4 = torch.cat((x, x, x, x), 1)
            return self.relu1(torch.add(out, x4))

    class DownTransition(nn.Module):
        def __init__(self, inChans, nConvs, elu, dropout=False):
            super().__init__()
            outChans = 2 * inChans
            self.down_conv = nn.Conv3d(inChans, outChans, kernel_size=2, stride=2)
            self.bn1 = ContBatchNorm3d(outChans)
            self.do1 = nn.Identity()
            self.relu1 = ELUCons(elu, outChans)
            self.relu2 = ELUCons(elu, outChans)
            if dropout:
                self.do1 = nn.Dropout3d()
            self.ops = _make_nConv(outChans, nConvs, elu)

        def forward(self, x):
            down = self.relu1(self.bn1(self.down_conv(x)))
            out = self.do1(down)
            out = self.ops(out)
            return self.relu2(torch.add(out, down))

    class UpTransition(nn.Module):
        def __init__(self, inChans, outChans, nConvs, elu):
            super().__init__()
            self.up_conv = nn.ConvTranspose3d(inChans, outChans // 2, kernel_size=2, stride=2)
            self.bn1 = ContBatchNorm3d(outChans // 2)
            self.relu1 = ELUCons(elu, outChans // 2)
            self.relu2 = ELUCons(elu, outChans)
            self.ops = _make_nConv(outChans, nConvs, elu)

        def forward(self, x, skipx):
            out = self.relu1(self.bn1(self.up_conv(x)))
            xcat = torch.cat((out, skipx), 1)
            out = self.ops(xcat)
            return self.relu2(torch.add(out, xcat))

    class OutputTransition(nn.Module):
        def __init__(self, inChans, elu, nll):
            super().__init__()
            self.conv1 = nn.Conv3d(inChans, 2, kernel_size=5, padding=2)
            self.bn1 = ContBatchNorm3d(2)
            self.conv2 = nn.Conv3d(2, 2, kernel_size=1)
            self.relu1 = ELUCons(elu, 2)
            self.softmax = F.log_softmax if nll else F.softmax

        def forward(self, x):
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.conv2(out)
            out = out.permute(0, 2, 3, 4, 1).contiguous()
            out = out.view(out.numel() // 2, 2)
            return self.softmax(out, dim=1)

    class VNet(nn.Module):
        def __init__(self, elu=True, nll=False):
            super().__init__()
            self.in_tr = InputTransition(4, elu)
            self.down_tr32 = DownTransition(4, 1, elu)
            self.down_tr64 = DownTransition(8, 1, elu)
            self.up_tr64 = UpTransition(16, 16, 1, elu)
            self.up_tr32 = UpTransition(16, 8, 1, elu)
            self.out_tr = OutputTransition(8, elu, nll)

        def forward(self, x):
            out16 = self.in_tr(x)
            out32 = self.down_tr32(out16)
            out64 = self.down_tr64(out32)
            out = self.up_tr64(out64, out32)
            out = self.up_tr32(out, out16)
            return self.out_tr(out)

    return VNet(elu=False, nll=True)


def vnet_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, vnet(m), weights).double()
    images, labels = volumes(n=2, classes=2, seed=19)
    data, target = torch.from_numpy(images), torch.from_numpy(labels)
    bg_weight = (target == 0).double().mean()
    weights_ = torch.stack([1 - bg_weight, bg_weight])
    optimizer = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-8)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        output = model(data)
        target_flat = target.view(target.numel())
        loss = F.nll_loss(output, target_flat, weight=weights_)
        loss.backward()
        optimizer.step()
        pred = output.data.max(1)[1]
        incorrect = pred.ne(target_flat).sum()
        history.append((loss.item(), incorrect.item()))
    return {"history": history, "output": output, "prelu": model.up_tr32.relu2.weight,
            "running": model.down_tr64.bn1.running_var}


def test_vnet_with_cont_batch_norm_subclass():
    weights = weights_of(vnet)
    ours, _ = run_both(vnet_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["output"].shape == (2 * 512, 2)
    np.testing.assert_allclose(np.exp(ours["output"]).sum(1), 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# A 3-D ResNet with weight-standardised convolutions (BiT's StdConv, written over Conv3d._conv_forward with
# _reversed_padding_repeated_twice for its reflect padding) and GroupNorm, trained with gradient accumulation
# ----------------------------------------------------------------------------------------------


def std_resnet3d(m):
    nn, F, torch = m.nn, m.F, m.torch

    class StdConv3d(nn.Conv3d):
        def _conv_forward(self, input, weight, bias):
            v, mu = torch.var_mean(weight, dim=[1, 2, 3, 4], keepdim=True, unbiased=False)
            weight = (weight - mu) / torch.sqrt(v + 1e-10)
            if self.padding_mode != "zeros":
                return F.conv3d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                                weight, bias, self.stride, (0, 0, 0), self.dilation, self.groups)
            return F.conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    class PreActBottleneck(nn.Module):
        def __init__(self, cin, cout, cmid, stride=1):
            super().__init__()
            self.gn1 = nn.GroupNorm(2, cin)
            self.conv1 = StdConv3d(cin, cmid, 1, bias=False)
            self.gn2 = nn.GroupNorm(2, cmid)
            self.conv2 = StdConv3d(cmid, cmid, 3, stride=stride, padding=1, bias=False, padding_mode="reflect")
            self.gn3 = nn.GroupNorm(2, cmid)
            self.conv3 = StdConv3d(cmid, cout, 1, bias=False)
            self.relu = nn.ReLU(inplace=True)
            if stride != 1 or cin != cout:
                self.downsample = StdConv3d(cin, cout, 1, stride=stride, bias=False)

        def forward(self, x):
            out = self.relu(self.gn1(x))
            residual = x
            if hasattr(self, "downsample"):
                residual = self.downsample(out)
            out = self.conv1(out)
            out = self.conv2(self.relu(self.gn2(out)))
            out = self.conv3(self.relu(self.gn3(out)))
            return out + residual

    class ResNetV2_3D(nn.Module):
        def __init__(self, num_classes=2):
            super().__init__()
            self.root = nn.Sequential(StdConv3d(1, 8, kernel_size=(3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2),
                                                bias=False, padding_mode="replicate"),
                                      nn.ConstantPad3d(1, 0), nn.MaxPool3d(kernel_size=3, stride=2))
            self.body = nn.Sequential(PreActBottleneck(8, 16, 4), PreActBottleneck(16, 16, 4, stride=2))
            self.head = nn.Sequential(nn.GroupNorm(2, 16), nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(output_size=1),
                                      nn.Conv3d(16, num_classes, kernel_size=1, bias=True))

        def forward(self, x):
            x = self.head(self.body(self.root(x)))
            assert x.shape[-3:] == (1, 1, 1)
            return x[..., 0, 0, 0]

    return ResNetV2_3D()


def std_resnet_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, std_resnet3d(m), weights).double()
    images, labels = volumes(n=4, classes=2, seed=20)
    x = torch.from_numpy(images)
    y = torch.tensor([0, 1, 1, 0])
    optimizer = optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    history = []
    accum = 2
    for step in range(2):
        optimizer.zero_grad()
        for micro in range(accum):
            xb, yb = x[micro * 2:(micro + 1) * 2], y[micro * 2:(micro + 1) * 2]
            loss = F.cross_entropy(model(xb), yb) / accum
            loss.backward()
            history.append(loss.item())
        optimizer.step()
    return {"history": history, "grad": model.body[1].conv2.weight.grad, "root": model.root[0].weight,
            "logits": model(x), "pad": model.body[0].conv2._reversed_padding_repeated_twice}


def test_weight_standardised_resnet3d_with_padding_modes():
    weights = weights_of(std_resnet3d)
    ours, _ = run_both(std_resnet_training, weights, rtol=1e-7, atol=1e-9)
    assert tuple(ours["pad"]) == (1, 1, 1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------
# A 3-D autoencoder whose decoder's transposed convolutions are weight-standardised (NF-Net's scaled WS), their
# forward copied from ConvTranspose3d's: _output_padding(input, output_size, stride, padding, kernel_size,
# num_spatial_dims, dilation) for odd-sized volumes restored by output_size
# ----------------------------------------------------------------------------------------------


def ws_autoencoder(m):
    nn, F, torch = m.nn, m.F, m.torch

    class ScaledWSConvTranspose3d(nn.ConvTranspose3d):
        def __init__(self, *args, gain=True, eps=1e-4, **kwargs):
            super().__init__(*args, **kwargs)
            self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1, 1)) if gain else None
            self.eps = eps

        def get_weight(self):
            # the fan-in of a transposed convolution's output channel: dims (0, 2, 3, 4)
            fan_in = np.prod(self.weight.shape[2:]) * self.weight.shape[0]
            mean = torch.mean(self.weight, dim=(0, 2, 3, 4), keepdim=True)
            var = torch.var(self.weight, dim=(0, 2, 3, 4), keepdim=True, unbiased=False)
            weight = (self.weight - mean) / (var * fan_in + self.eps) ** 0.5
            if self.gain is not None:
                weight = weight * self.gain.transpose(0, 1)
            return weight

        def forward(self, input, output_size=None):
            num_spatial_dims = 3
            output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                                  num_spatial_dims, self.dilation)
            return F.conv_transpose3d(input, self.get_weight(), self.bias, self.stride, self.padding, output_padding,
                                      self.groups, self.dilation)

    class AE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Conv3d(1, 4, 3, stride=2, padding=1)
            self.enc2 = nn.Conv3d(4, 8, 3, stride=2, padding=1)
            self.dec2 = ScaledWSConvTranspose3d(8, 4, 3, stride=2, padding=1)
            self.dec1 = ScaledWSConvTranspose3d(4, 1, 3, stride=2, padding=1)

        def forward(self, x):
            h1 = F.gelu(self.enc1(x))
            h2 = F.gelu(self.enc2(h1))
            d2 = F.gelu(self.dec2(h2, output_size=h1.shape))
            return self.dec1(d2 + h1, output_size=x.size()[2:])

    return AE()


def ws_autoencoder_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, ws_autoencoder(m), weights).double()
    rng = np.random.default_rng(21)
    x = torch.from_numpy(rng.standard_normal((2, 1, 7, 9, 6)))
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.smooth_l1_loss(model(x + 0.1 * torch.from_numpy(rng.standard_normal(x.shape))), x, beta=0.5)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "out": model(x), "gain_grad": model.dec1.gain.grad, "w_grad": model.dec2.weight.grad}


def test_weight_standardised_transposed_conv_autoencoder_with_output_size():
    weights = weights_of(ws_autoencoder)
    ours, _ = run_both(ws_autoencoder_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["out"].shape == (2, 1, 7, 9, 6)


# ----------------------------------------------------------------------------------------------
# pytorch-i3d (piergiaj): InceptionI3d's Unit3D and MaxPool3dSamePadding (TensorFlow's 'SAME' padding by F.pad,
# a subclass of MaxPool3d reading its kernel_size/stride), end points run through self._modules, and train_i3d's
# localisation + classification losses on logits upsampled in time by the deprecated F.upsample(mode='linear')
# ----------------------------------------------------------------------------------------------


def inception_i3d(m):
    nn, F, torch = m.nn, m.F, m.torch

    class MaxPool3dSamePadding(nn.MaxPool3d):
        def compute_pad(self, dim, s):
            if s % self.stride[dim] == 0:
                return max(self.kernel_size[dim] - self.stride[dim], 0)
            else:
                return max(self.kernel_size[dim] - (s % self.stride[dim]), 0)

        def forward(self, x):
            (batch, channel, t, h, w) = x.size()
            pad_t = self.compute_pad(0, t)
            pad_h = self.compute_pad(1, h)
            pad_w = self.compute_pad(2, w)
            pad_t_f = pad_t // 2
            pad_t_b = pad_t - pad_t_f
            pad_h_f = pad_h // 2
            pad_h_b = pad_h - pad_h_f
            pad_w_f = pad_w // 2
            pad_w_b = pad_w - pad_w_f
            pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
            x = F.pad(x, pad)
            return super(MaxPool3dSamePadding, self).forward(x)

    class Unit3D(nn.Module):
        def __init__(self, in_channels, output_channels, kernel_shape=(1, 1, 1), stride=(1, 1, 1), padding=0,
                     activation_fn=F.relu, use_batch_norm=True, use_bias=False, name="unit_3d"):
            super(Unit3D, self).__init__()
            self._output_channels = output_channels
            self._kernel_shape = kernel_shape
            self._stride = stride
            self._use_batch_norm = use_batch_norm
            self._activation_fn = activation_fn
            self._use_bias = use_bias
            self.name = name
            self.padding = padding
            self.conv3d = nn.Conv3d(in_channels=in_channels, out_channels=self._output_channels,
                                    kernel_size=self._kernel_shape, stride=self._stride, padding=0, bias=self._use_bias)
            if self._use_batch_norm:
                self.bn = nn.BatchNorm3d(self._output_channels, eps=0.001, momentum=0.01)

        def compute_pad(self, dim, s):
            if s % self._stride[dim] == 0:
                return max(self._kernel_shape[dim] - self._stride[dim], 0)
            else:
                return max(self._kernel_shape[dim] - (s % self._stride[dim]), 0)

        def forward(self, x):
            (batch, channel, t, h, w) = x.size()
            pad_t = self.compute_pad(0, t)
            pad_h = self.compute_pad(1, h)
            pad_w = self.compute_pad(2, w)
            pad_t_f = pad_t // 2
            pad_t_b = pad_t - pad_t_f
            pad_h_f = pad_h // 2
            pad_h_b = pad_h - pad_h_f
            pad_w_f = pad_w // 2
            pad_w_b = pad_w - pad_w_f
            pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
            x = F.pad(x, pad)
            x = self.conv3d(x)
            if self._use_batch_norm:
                x = self.bn(x)
            if self._activation_fn is not None:
                x = self._activation_fn(x)
            return x

    class InceptionModule(nn.Module):
        def __init__(self, in_channels, out_channels, name):
            super(InceptionModule, self).__init__()
            self.b0 = Unit3D(in_channels=in_channels, output_channels=out_channels[0], kernel_shape=[1, 1, 1], padding=0,
                             name=name + "/Branch_0/Conv3d_0a_1x1")
            self.b1a = Unit3D(in_channels=in_channels, output_channels=out_channels[1], kernel_shape=[1, 1, 1], padding=0,
                              name=name + "/Branch_1/Conv3d_0a_1x1")
            self.b1b = Unit3D(in_channels=out_channels[1], output_channels=out_channels[2], kernel_shape=[3, 3, 3],
                              name=name + "/Branch_1/Conv3d_0b_3x3")
            self.b2a = Unit3D(in_channels=in_channels, output_channels=out_channels[3], kernel_shape=[1, 1, 1], padding=0,
                              name=name + "/Branch_2/Conv3d_0a_1x1")
            self.b2b = Unit3D(in_channels=out_channels[3], output_channels=out_channels[4], kernel_shape=[3, 3, 3],
                              name=name + "/Branch_2/Conv3d_0b_3x3")
            self.b3a = MaxPool3dSamePadding(kernel_size=[3, 3, 3], stride=(1, 1, 1), padding=0)
            self.b3b = Unit3D(in_channels=in_channels, output_channels=out_channels[5], kernel_shape=[1, 1, 1], padding=0,
                              name=name + "/Branch_3/Conv3d_0b_1x1")
            self.name = name

        def forward(self, x):
            b0 = self.b0(x)
            b1 = self.b1b(self.b1a(x))
            b2 = self.b2b(self.b2a(x))
            b3 = self.b3b(self.b3a(x))
            return torch.cat([b0, b1, b2, b3], dim=1)

    class InceptionI3d(nn.Module):
        VALID_ENDPOINTS = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Mixed_3b", "MaxPool3d_4a_3x3", "Mixed_4b", "Logits")

        def __init__(self, num_classes=4, spatial_squeeze=True, name="inception_i3d", in_channels=3,
                     dropout_keep_prob=0.0):
            super(InceptionI3d, self).__init__()
            self._num_classes = num_classes
            self._spatial_squeeze = spatial_squeeze
            self.end_points = {}
            self.end_points["Conv3d_1a_7x7"] = Unit3D(in_channels=in_channels, output_channels=8, kernel_shape=[3, 3, 3],
                                                      stride=(2, 2, 2), padding=(3, 3, 3), name=name + "Conv3d_1a_7x7")
            self.end_points["MaxPool3d_2a_3x3"] = MaxPool3dSamePadding(kernel_size=[1, 3, 3], stride=(1, 2, 2), padding=0)
            self.end_points["Mixed_3b"] = InceptionModule(8, [4, 4, 6, 2, 4, 2], name + "Mixed_3b")
            self.end_points["MaxPool3d_4a_3x3"] = MaxPool3dSamePadding(kernel_size=[3, 3, 3], stride=(2, 2, 2), padding=0)
            self.end_points["Mixed_4b"] = InceptionModule(16, [6, 4, 6, 2, 4, 4], name + "Mixed_4b")
            self.avg_pool = nn.AvgPool3d(kernel_size=[1, 2, 2], stride=(1, 1, 1))
            self.dropout = nn.Dropout(dropout_keep_prob)
            self.logits = Unit3D(in_channels=20, output_channels=self._num_classes, kernel_shape=[1, 1, 1], padding=0,
                                 activation_fn=None, use_batch_norm=False, use_bias=True, name="logits")
            self.build()

        def build(self):
            for k in self.end_points.keys():
                self.add_module(k, self.end_points[k])

        def forward(self, x):
            for end_point in self.VALID_ENDPOINTS:
                if end_point in self.end_points:
                    x = self._modules[end_point](x)
            x = self.logits(self.dropout(self.avg_pool(x)))
            if self._spatial_squeeze:
                logits = x.squeeze(3).squeeze(3)
            else:
                return x
            return logits

    return InceptionI3d()


def i3d_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    i3d = load(m, inception_i3d(m), weights).double()
    rng = np.random.default_rng(22)
    inputs = torch.from_numpy(rng.standard_normal((2, 3, 8, 16, 16)))
    labels = torch.zeros(2, 4, 8, dtype=torch.float64)
    labels[0, 1, 2:6] = 1
    labels[1, 3, :] = 1
    t = inputs.size(2)
    optimizer = optim.SGD(i3d.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0000001)
    lr_sched = optim.lr_scheduler.MultiStepLR(optimizer, [2, 4])
    num_steps_per_update = 2
    history = []
    for step in range(4):
        per_frame_logits = i3d(inputs)
        per_frame_logits = F.upsample(per_frame_logits, t, mode="linear")
        loc_loss = F.binary_cross_entropy_with_logits(per_frame_logits, labels)
        cls_loss = F.binary_cross_entropy_with_logits(torch.max(per_frame_logits, dim=2)[0], torch.max(labels, dim=2)[0])
        loss = (0.5 * loc_loss + 0.5 * cls_loss) / num_steps_per_update
        loss.backward()
        if step % num_steps_per_update == num_steps_per_update - 1:
            optimizer.step()
            optimizer.zero_grad()
            lr_sched.step()
        history.append([loc_loss.item(), cls_loss.item()])
    shapes = {}
    x = inputs
    for end_point in i3d.VALID_ENDPOINTS:
        if end_point in i3d.end_points:
            x = i3d._modules[end_point](x)
            shapes[end_point] = tuple(x.shape)
    return {"history": history, "per_frame": per_frame_logits, "shapes": shapes,
            "bn": i3d.Mixed_4b.b1b.bn.running_mean, "w": i3d.Conv3d_1a_7x7.conv3d.weight}


@pytest.mark.filterwarnings("ignore:`nn.functional.upsample` is deprecated")
def test_pytorch_i3d_inception_with_same_padding_subclasses():
    weights = weights_of(inception_i3d)
    ours, _ = run_both(i3d_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["shapes"] == {"Conv3d_1a_7x7": (2, 8, 4, 8, 8), "MaxPool3d_2a_3x3": (2, 8, 4, 4, 4),
                              "Mixed_3b": (2, 16, 4, 4, 4), "MaxPool3d_4a_3x3": (2, 16, 2, 2, 2),
                              "Mixed_4b": (2, 20, 2, 2, 2)}
    assert ours["per_frame"].shape == (2, 4, 8)


# ----------------------------------------------------------------------------------------------
# CondConv in 3-D: a layer subclassing _ConvNd itself with PyTorch's constructor (transposed, output_padding),
# a weight of several experts mixed per sample by a routing function, reflect padding through
# _reversed_padding_repeated_twice; the legacy torch.Tensor(sizes) constructor and reset_parameters
# ----------------------------------------------------------------------------------------------


def condconv_net(m):
    torch, nn, F = m.torch, m.nn, m.F
    from functools import partial

    _ConvNd = nn.modules.conv._ConvNd
    _triple = nn.modules.utils._triple

    class _routing(nn.Module):
        def __init__(self, in_channels, num_experts, dropout_rate):
            super(_routing, self).__init__()
            self.dropout = nn.Dropout(dropout_rate)
            self.fc = nn.Linear(in_channels, num_experts)

        def forward(self, x):
            x = torch.flatten(x)
            x = self.dropout(x)
            x = self.fc(x)
            return torch.sigmoid(x)

    class CondConv3D(_ConvNd):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                     padding_mode="zeros", num_experts=3, dropout_rate=0.0):
            kernel_size = _triple(kernel_size)
            stride = _triple(stride)
            padding = _triple(padding)
            dilation = _triple(dilation)
            super(CondConv3D, self).__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, False,
                                             _triple(0), groups, bias, padding_mode)
            self._avg_pooling = partial(F.adaptive_avg_pool3d, output_size=(1, 1, 1))
            self._routing_fn = _routing(in_channels, num_experts, dropout_rate)
            self.weight = nn.Parameter(torch.Tensor(num_experts, out_channels, in_channels // groups, *kernel_size))
            self.reset_parameters()

        def _conv_forward(self, input, weight):
            if self.padding_mode != "zeros":
                return F.conv3d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), weight,
                                self.bias, self.stride, _triple(0), self.dilation, self.groups)
            return F.conv3d(input, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

        def forward(self, inputs):
            b, _, _, _, _ = inputs.size()
            res = []
            for input in inputs:
                input = input.unsqueeze(0)
                pooled_inputs = self._avg_pooling(input)
                routing_weights = self._routing_fn(pooled_inputs)
                kernels = torch.sum(routing_weights[:, None, None, None, None, None] * self.weight, 0)
                out = self._conv_forward(input, kernels)
                res.append(out)
            return torch.cat(res, dim=0)

    return nn.Sequential(CondConv3D(1, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm3d(4), nn.ReLU(),
                         CondConv3D(4, 4, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), groups=2), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))


def condconv_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, condconv_net(m), weights).double()
    images, labels = volumes(n=3, classes=2, seed=23)
    x = torch.from_numpy(images)
    y = torch.tensor([0, 1, 1])
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "experts_grad": model[0].weight.grad, "route_grad": model[3]._routing_fn.fc.weight.grad,
            "shapes": [tuple(model[0].weight.shape), tuple(model[3].weight.shape)],
            "attrs": [model[0].transposed, tuple(model[0].output_padding), tuple(model[0]._reversed_padding_repeated_twice)]}


def test_condconv3d_subclassing_convnd_with_pytorchs_constructor():
    weights = weights_of(condconv_net)
    ours, _ = run_both(condconv_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["shapes"] == [(3, 4, 1, 3, 3, 3), (3, 4, 2, 1, 3, 3)]
    assert ours["attrs"] == [False, (0, 0, 0), (1, 1, 1, 1, 1, 1)]


# ----------------------------------------------------------------------------------------------
# MedicalNet (Med3D, Tencent): a 3-D ResNet with shortcut type 'A' (avg_pool3d of stride, zero channels from the
# legacy torch.Tensor(sizes).zero_(), torch.cat of .data: no gradient through the shortcut), dilated layers 3 and 4,
# a transposed-convolution segmentation head, pretrained weights merged by dict update, the head's parameters at
# 100 times the learning rate, ExponentialLR
# ----------------------------------------------------------------------------------------------


def medicalnet(m):
    torch, nn, F = m.torch, m.nn, m.F
    from functools import partial

    Variable = m.torch.autograd.Variable

    def conv3x3x3(in_planes, out_planes, stride=1, dilation=1):
        return nn.Conv3d(in_planes, out_planes, kernel_size=3, dilation=dilation, stride=stride, padding=dilation,
                         bias=False)

    def downsample_basic_block(x, planes, stride, no_cuda=False):
        out = F.avg_pool3d(x, kernel_size=1, stride=stride)
        zero_pads = torch.Tensor(out.size(0), planes - out.size(1), out.size(2), out.size(3), out.size(4)).zero_()
        if not no_cuda:
            if isinstance(out.data, torch.cuda.FloatTensor):
                zero_pads = zero_pads.cuda()
        out = Variable(torch.cat([out.data, zero_pads.to(out.dtype)], dim=1))
        return out

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
            super(BasicBlock, self).__init__()
            self.conv1 = conv3x3x3(inplanes, planes, stride=stride, dilation=dilation)
            self.bn1 = nn.BatchNorm3d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv3x3x3(planes, planes, dilation=dilation)
            self.bn2 = nn.BatchNorm3d(planes)
            self.downsample = downsample
            self.stride = stride
            self.dilation = dilation

        def forward(self, x):
            residual = x
            out = self.conv1(x)
            out = self.bn1(out)
            out = self.relu(out)
            out = self.conv2(out)
            out = self.bn2(out)
            if self.downsample is not None:
                residual = self.downsample(x)
            out += residual
            out = self.relu(out)
            return out

    class ResNet(nn.Module):
        def __init__(self, block, layers, num_seg_classes, shortcut_type="A", no_cuda=True):
            self.inplanes = 4
            self.no_cuda = no_cuda
            super(ResNet, self).__init__()
            self.conv1 = nn.Conv3d(1, 4, kernel_size=7, stride=(2, 2, 2), padding=(3, 3, 3), bias=False)
            self.bn1 = nn.BatchNorm3d(4)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool3d(kernel_size=(3, 3, 3), stride=2, padding=1)
            self.layer1 = self._make_layer(block, 4, layers[0], shortcut_type)
            self.layer2 = self._make_layer(block, 8, layers[1], shortcut_type, stride=2)
            self.layer3 = self._make_layer(block, 8, layers[2], shortcut_type, stride=1, dilation=2)
            self.layer4 = self._make_layer(block, 12, layers[3], shortcut_type, stride=1, dilation=4)
            self.conv_seg = nn.Sequential(
                nn.ConvTranspose3d(12 * block.expansion, 6, 2, stride=2), nn.BatchNorm3d(6), nn.ReLU(inplace=True),
                nn.Conv3d(6, 6, kernel_size=3, stride=(1, 1, 1), padding=(1, 1, 1), bias=False), nn.BatchNorm3d(6),
                nn.ReLU(inplace=True), nn.Conv3d(6, num_seg_classes, kernel_size=1, stride=(1, 1, 1), bias=False))
            for mod in self.modules():
                if isinstance(mod, nn.Conv3d):
                    mod.weight = nn.init.kaiming_normal(mod.weight, mode="fan_out")
                elif isinstance(mod, nn.BatchNorm3d):
                    mod.weight.data.fill_(1)
                    mod.bias.data.zero_()

        def _make_layer(self, block, planes, blocks, shortcut_type, stride=1, dilation=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                if shortcut_type == "A":
                    downsample = partial(downsample_basic_block, planes=planes * block.expansion, stride=stride,
                                         no_cuda=self.no_cuda)
                else:
                    downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes * block.expansion, kernel_size=1,
                                                         stride=stride, bias=False), nn.BatchNorm3d(planes * block.expansion))
            layers = [block(self.inplanes, planes, stride=stride, dilation=dilation, downsample=downsample)]
            self.inplanes = planes * block.expansion
            for i in range(1, blocks):
                layers.append(block(self.inplanes, planes, dilation=dilation))
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.conv1(x)
            x = self.bn1(x)
            x = self.relu(x)
            x = self.maxpool(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
            x = self.conv_seg(x)
            return x

    return ResNet(BasicBlock, [1, 1, 1, 1], num_seg_classes=2)


def medicalnet_training(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = medicalnet(m).double()
    # "pretrained" weights (a checkpoint with a classifier this model lacks), merged as MedicalNet does
    net_dict = model.state_dict()
    pretrain = {"state_dict": {**{k: torch.tensor(v) for k, v in weights.items()}, "fc.weight": torch.zeros(3, 12)}}
    pretrain_dict = {k: v for k, v in pretrain["state_dict"].items() if k in net_dict.keys()}
    net_dict.update(pretrain_dict)
    model.load_state_dict(net_dict)
    new_layer_names = ["conv_seg"]
    new_parameters = []
    for pname, p in model.named_parameters():
        for layer_name in new_layer_names:
            if pname.find(layer_name) >= 0:
                new_parameters.append(p)
                break
    new_parameters_id = list(map(id, new_parameters))
    base_parameters = list(filter(lambda p: id(p) not in new_parameters_id, model.parameters()))
    params = [{"params": base_parameters, "lr": 1e-4}, {"params": new_parameters, "lr": 1e-4 * 100}]
    optimizer = optim.SGD(params, momentum=0.9, weight_decay=1e-3)
    scheduler = optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99)
    loss_seg = nn.CrossEntropyLoss(ignore_index=-1)
    images, labels = volumes(n=2, classes=2, side=16, seed=24)
    volumes_ = torch.from_numpy(images)
    label_masks = torch.from_numpy(labels)
    label_masks[:, :2] = -1  # slices without annotation
    history = []
    for step in range(3):
        optimizer.zero_grad()
        out_masks = model(volumes_)
        [n, _, d, h, w] = out_masks.shape
        new_label_masks = F.interpolate(label_masks[:, None].double(), size=(d, h, w), mode="nearest")[:, 0].long()
        loss_value_seg = loss_seg(out_masks, new_label_masks)
        loss = loss_value_seg
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    # the shortcut's zero channels carry no gradient, and .data cuts the graph there
    x = torch.ones(1, 4, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    shortcut = model.layer2[0].downsample(x)
    return {"history": history, "out": out_masks, "seg_grad": model.conv_seg[0].weight.grad,
            "base_grad": model.layer3[0].conv1.weight.grad, "shortcut": shortcut,
            "shortcut_requires_grad": shortcut.requires_grad, "lrs": [g["lr"] for g in optimizer.param_groups]}


@pytest.mark.filterwarnings("ignore:`nn.init.kaiming_normal` is now deprecated")
def test_medicalnet_resnet3d_with_type_a_shortcuts():
    weights = weights_of(medicalnet)
    ours, _ = run_both(medicalnet_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["out"].shape == (2, 2, 4, 4, 4)  # 16 -> 8 (conv1) -> 4 (maxpool) -> 2 (layer2) -> 4 (head)
    assert ours["shortcut"].shape == (1, 8, 2, 2, 2) and (ours["shortcut"][:, 4:] == 0).all()
    assert ours["shortcut_requires_grad"] is False
    np.testing.assert_allclose(ours["lrs"], [1e-4 * 0.99 ** 3, 1e-2 * 0.99 ** 3], rtol=1e-12)


def test_isinstance_of_a_cuda_legacy_type_is_false_on_the_cpu():
    """MedicalNet's downsample_basic_block asks isinstance(x, torch.cuda.FloatTensor) (autograd.cuda's legacy typed
    constructors): False on the CPU, and making one refuses, as PyTorch's without CUDA."""
    torch = OURS.torch
    assert not isinstance(torch.ones(2).data, torch.cuda.FloatTensor) and isinstance(torch.ones(2), torch.FloatTensor)
    assert repr(torch.cuda.LongTensor) == "<class 'torch.cuda.LongTensor'>"
    with pytest.raises(TypeError, match="not available"):
        torch.cuda.FloatTensor(2)


# ----------------------------------------------------------------------------------------------
# Explaining a 3-D classifier: Grad-CAM (forward and full backward hooks on the last Conv3d, channel weights by the
# spatial mean of the gradients, the map upsampled trilinearly to the volume) and occlusion sensitivity (a cube of
# the mean intensity slid over the volume, the drop of the target logit per position, batched by torch.stack)
# ----------------------------------------------------------------------------------------------


def cam_classifier(m):
    nn = m.nn
    # the ReLU after the hooked layer is not in place: PyTorch refuses an in-place change of a full backward
    # hook's output (chainrule allows it, and gives these values)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(inplace=True), nn.MaxPool3d(2),
                         nn.Conv3d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Linear(6, 3))


def gradcam_and_occlusion(m, weights):
    torch, F = m.torch, m.F
    model = load(m, cam_classifier(m), weights).double().eval()
    images, _ = volumes(n=2, seed=25)
    x = torch.from_numpy(images)
    target_layer = model[4]
    store = {}

    def forward_hook(module, inputs, output):
        store["activations"] = output.detach()

    def backward_hook(module, grad_input, grad_output):
        store["gradients"] = grad_output[0].detach()

    handles = [target_layer.register_forward_hook(forward_hook), target_layer.register_full_backward_hook(backward_hook)]
    logits = model(x)
    class_idx = logits.argmax(1)
    model.zero_grad()
    score = logits.gather(1, class_idx[:, None]).sum()
    score.backward()
    for h in handles:
        h.remove()
    weights_ = store["gradients"].mean(dim=(2, 3, 4), keepdim=True)
    cam = F.relu((weights_ * store["activations"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False)
    cam_min = cam.amin(dim=(2, 3, 4), keepdim=True)
    cam_max = cam.amax(dim=(2, 3, 4), keepdim=True)
    cam = (cam - cam_min) / (cam_max - cam_min + 1e-8)
    # occlusion sensitivity: a 4^3 cube of the mean value at stride 2
    mask_size, stride = 4, 2
    with torch.no_grad():
        base = model(x).gather(1, class_idx[:, None])
        positions = list(itertools.product(range(0, 8 - mask_size + 1, stride), repeat=3))
        occluded = []
        for (d, h, w) in positions:
            xo = x.clone()
            xo[:, :, d:d + mask_size, h:h + mask_size, w:w + mask_size] = x.mean()
            occluded.append(xo)
        batch = torch.stack(occluded, 1).flatten(0, 1)  # (B * P, 1, 8, 8, 8)
        out = model(batch).view(2, len(positions), -1)
        drops = base - out.gather(2, class_idx[:, None, None].expand(-1, len(positions), 1))[..., 0]
        sensitivity = torch.zeros(2, 1, 8, 8, 8, dtype=x.dtype)
        counts = torch.zeros_like(sensitivity)
        for p, (d, h, w) in enumerate(positions):
            sensitivity[:, :, d:d + mask_size, h:h + mask_size, w:w + mask_size] += drops[:, p].view(2, 1, 1, 1, 1)
            counts[:, :, d:d + mask_size, h:h + mask_size, w:w + mask_size] += 1
        sensitivity = sensitivity / counts
    return {"cam": cam, "class": class_idx, "grads": store["gradients"], "sensitivity": sensitivity, "drops": drops}


def test_gradcam_and_occlusion_sensitivity_3d():
    weights = weights_of(cam_classifier)
    ours, _ = run_both(gradcam_and_occlusion, weights, rtol=1e-8, atol=1e-10)
    assert ours["cam"].shape == (2, 1, 8, 8, 8) and ours["cam"].min() >= 0 and ours["cam"].max() <= 1
    assert ours["drops"].shape == (2, 27)


# ----------------------------------------------------------------------------------------------
# A voxel WGAN-GP (3D-GAN's generator of ConvTranspose3d + BatchNorm3d, a critic of Conv3d + InstanceNorm3d(affine)
# + LeakyReLU): the gradient penalty differentiates the critic's input gradient (create_graph=True) through
# 3-D convolutions and instance norm; Adam with betas (0.5, 0.9), n_critic steps per generator step
# ----------------------------------------------------------------------------------------------


def voxel_gan(m):
    nn = m.nn

    class Generator(nn.Module):
        def __init__(self, z_dim=8):
            super().__init__()
            self.net = nn.Sequential(
                nn.ConvTranspose3d(z_dim, 8, 4, 1, 0, bias=False), nn.BatchNorm3d(8), nn.ReLU(True),
                nn.ConvTranspose3d(8, 4, 4, 2, 1, bias=False), nn.BatchNorm3d(4), nn.ReLU(True),
                nn.ConvTranspose3d(4, 1, 3, 1, 1), nn.Sigmoid())

        def forward(self, z):
            return self.net(z.view(-1, z.size(1), 1, 1, 1))

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv3d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv3d(4, 8, 4, 2, 1, bias=False), nn.InstanceNorm3d(8, affine=True), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv3d(8, 1, 2, 1, 0))

        def forward(self, x):
            return self.net(x).view(-1)

    return nn.ModuleDict({"G": Generator(), "D": Critic()})


def gan_training(m, weights):
    torch, optim = m.torch, m.optim
    models = load(m, voxel_gan(m), weights).double()
    G, D = models["G"], models["D"]
    rng = np.random.default_rng(26)
    _, labels = volumes(n=4, classes=2, seed=27)
    real = torch.from_numpy((labels[:, None] > 0).astype(np.float64))
    opt_g = optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.9))
    opt_d = optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.9))
    lambda_gp, n_critic = 10.0, 2
    history = []
    for it in range(2):
        for _ in range(n_critic):
            z = torch.from_numpy(rng.standard_normal((4, 8)))
            fake = G(z).detach()
            alpha = torch.from_numpy(rng.uniform(size=(4, 1, 1, 1, 1)))
            interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            d_interpolates = D(interpolates)
            gradients = torch.autograd.grad(outputs=d_interpolates, inputs=interpolates,
                                            grad_outputs=torch.ones_like(d_interpolates), create_graph=True,
                                            retain_graph=True, only_inputs=True)[0]
            gradients = gradients.view(gradients.size(0), -1)
            gradient_penalty = ((gradients.norm(2, dim=1) - 1) ** 2).mean()
            d_loss = -D(real).mean() + D(fake).mean() + lambda_gp * gradient_penalty
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        z = torch.from_numpy(rng.standard_normal((4, 8)))
        g_loss = -D(G(z)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        history.append([d_loss.item(), gradient_penalty.item(), g_loss.item()])
    return {"history": history, "d_grad": D.net[2].weight.grad, "in_grad": D.net[3].weight.grad,
            "g_grad": G.net[0].weight.grad, "sample": G(torch.from_numpy(rng.standard_normal((1, 8))))}


def test_voxel_wgan_gp_second_order_through_conv3d_and_instance_norm():
    weights = weights_of(voxel_gan)
    ours, _ = run_both(gan_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["sample"].shape == (1, 1, 8, 8, 8)


# ----------------------------------------------------------------------------------------------
# pytorch-3dunet (wolny): UNet3D built from an order string ('gcr': GroupNorm, Conv3d, ReLU), interpolation
# upsampling by functools.partial(F.interpolate), summation or concatenation joining, the final activation only in
# eval; GeneralizedDiceLoss over channels flattened by permute, expand_as_one_hot with an ignore_index (scatter_ and
# boolean assignment), _MaskingLossWrapper's mask with requires_grad set False
# ----------------------------------------------------------------------------------------------


def wolny_unet3d(m):
    nn, F, torch = m.nn, m.F, m.torch
    from functools import partial

    def create_conv(in_channels, out_channels, kernel_size, order, num_groups, padding):
        modules = []
        for i, char in enumerate(order):
            if char == "r":
                modules.append(("ReLU", nn.ReLU(inplace=True)))
            elif char == "e":
                modules.append(("ELU", nn.ELU(inplace=True)))
            elif char == "c":
                bias = not ("g" in order or "b" in order)
                modules.append(("conv", nn.Conv3d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)))
            elif char == "g":
                is_before_conv = i < order.index("c")
                num_channels = in_channels if is_before_conv else out_channels
                if num_channels < num_groups:
                    num_groups = 1
                assert num_channels % num_groups == 0
                modules.append(("groupnorm", nn.GroupNorm(num_groups=num_groups, num_channels=num_channels)))
        return modules

    class SingleConv(nn.Sequential):
        def __init__(self, in_channels, out_channels, kernel_size=3, order="gcr", num_groups=8, padding=1):
            super(SingleConv, self).__init__()
            for name, module in create_conv(in_channels, out_channels, kernel_size, order, num_groups, padding=padding):
                self.add_module(name, module)

    class DoubleConv(nn.Sequential):
        def __init__(self, in_channels, out_channels, encoder, kernel_size=3, order="gcr", num_groups=8, padding=1):
            super(DoubleConv, self).__init__()
            if encoder:
                conv1_in_channels = in_channels
                conv1_out_channels = out_channels // 2
                if conv1_out_channels < in_channels:
                    conv1_out_channels = in_channels
                conv2_in_channels, conv2_out_channels = conv1_out_channels, out_channels
            else:
                conv1_in_channels, conv1_out_channels = in_channels, out_channels
                conv2_in_channels, conv2_out_channels = out_channels, out_channels
            self.add_module("SingleConv1", SingleConv(conv1_in_channels, conv1_out_channels, kernel_size, order, num_groups,
                                                      padding=padding))
            self.add_module("SingleConv2", SingleConv(conv2_in_channels, conv2_out_channels, kernel_size, order, num_groups,
                                                      padding=padding))

    class Encoder(nn.Module):
        def __init__(self, in_channels, out_channels, apply_pooling=True, pool_kernel_size=2, pool_type="max",
                     conv_layer_order="gcr", num_groups=8):
            super(Encoder, self).__init__()
            assert pool_type in ["max", "avg"]
            if apply_pooling:
                self.pooling = nn.MaxPool3d(kernel_size=pool_kernel_size) if pool_type == "max" else \
                    nn.AvgPool3d(kernel_size=pool_kernel_size)
            else:
                self.pooling = None
            self.basic_module = DoubleConv(in_channels, out_channels, encoder=True, order=conv_layer_order,
                                           num_groups=num_groups)

        def forward(self, x):
            if self.pooling is not None:
                x = self.pooling(x)
            return self.basic_module(x)

    class InterpolateUpsampling(nn.Module):
        def __init__(self, mode="nearest"):
            super().__init__()
            self.upsample = partial(self._interpolate, mode=mode)

        @staticmethod
        def _interpolate(x, size, mode):
            return F.interpolate(x, size=size, mode=mode)

        def forward(self, encoder_features, x):
            output_size = encoder_features.size()[2:]
            return self.upsample(x, output_size)

    class Decoder(nn.Module):
        def __init__(self, in_channels, out_channels, conv_layer_order="gcr", num_groups=8, mode="nearest", concat=True):
            super(Decoder, self).__init__()
            self.upsampling = InterpolateUpsampling(mode=mode)
            self.joining = partial(self._joining, concat=concat)
            self.basic_module = DoubleConv(in_channels, out_channels, encoder=False, order=conv_layer_order,
                                           num_groups=num_groups)

        def forward(self, encoder_features, x):
            x = self.upsampling(encoder_features=encoder_features, x=x)
            x = self.joining(encoder_features, x)
            return self.basic_module(x)

        @staticmethod
        def _joining(encoder_features, x, concat):
            if concat:
                return torch.cat((encoder_features, x), dim=1)
            else:
                return encoder_features + x

    class UNet3D(nn.Module):
        def __init__(self, in_channels=1, out_channels=3, f_maps=(4, 8, 16), layer_order="gcr", num_groups=4,
                     is_segmentation=True):
            super().__init__()
            self.encoders = nn.ModuleList([Encoder(in_channels if i == 0 else f_maps[i - 1], f, apply_pooling=i > 0,
                                                   conv_layer_order=layer_order, num_groups=num_groups)
                                           for i, f in enumerate(f_maps)])
            reversed_f_maps = list(reversed(f_maps))
            self.decoders = nn.ModuleList([Decoder(reversed_f_maps[i] + reversed_f_maps[i + 1], reversed_f_maps[i + 1],
                                                   conv_layer_order=layer_order, num_groups=num_groups,
                                                   mode="trilinear" if i == 0 else "nearest")
                                           for i in range(len(reversed_f_maps) - 1)])
            self.final_conv = nn.Conv3d(f_maps[0], out_channels, 1)
            self.final_activation = nn.Softmax(dim=1) if is_segmentation else nn.Sigmoid()

        def forward(self, x):
            encoders_features = []
            for encoder in self.encoders:
                x = encoder(x)
                encoders_features.insert(0, x)
            encoders_features = encoders_features[1:]
            for decoder, encoder_features in zip(self.decoders, encoders_features):
                x = decoder(encoder_features, x)
            x = self.final_conv(x)
            if not self.training and self.final_activation is not None:
                x = self.final_activation(x)
            return x

    return UNet3D()


def wolny_training(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim

    def expand_as_one_hot(input, C, ignore_index=None):
        assert input.dim() == 4
        input = input.unsqueeze(1)
        shape = list(input.size())
        shape[1] = C
        if ignore_index is not None:
            mask = input.expand(shape) == ignore_index
            input = input.clone()
            input[input == ignore_index] = 0
            result = torch.zeros(shape).to(input.device).scatter_(1, input, 1)
            result[mask] = ignore_index
            return result
        else:
            return torch.zeros(shape).to(input.device).scatter_(1, input, 1)

    def flatten(tensor):
        C = tensor.size(1)
        axis_order = (1, 0) + tuple(range(2, tensor.dim()))
        transposed = tensor.permute(axis_order)
        return transposed.contiguous().view(C, -1)

    class GeneralizedDiceLoss(nn.Module):
        def __init__(self, normalization="softmax", epsilon=1e-6):
            super().__init__()
            self.epsilon = epsilon
            self.normalization = nn.Softmax(dim=1) if normalization == "softmax" else nn.Sigmoid()

        def forward(self, input, target):
            input = self.normalization(input)
            input = flatten(input)
            target = flatten(target).float().to(input.dtype)
            w_l = target.sum(-1)
            w_l = 1 / (w_l * w_l).clamp(min=self.epsilon)
            w_l.requires_grad = False
            intersect = (input * target).sum(-1)
            intersect = intersect * w_l
            denominator = (input + target).sum(-1)
            denominator = (denominator * w_l).clamp(min=self.epsilon)
            return 1 - 2 * (intersect.sum() / denominator.sum())

    class _MaskingLossWrapper(nn.Module):
        def __init__(self, loss, ignore_index):
            super(_MaskingLossWrapper, self).__init__()
            self.loss = loss
            self.ignore_index = ignore_index

        def forward(self, input, target):
            mask = target.clone().ne_(self.ignore_index)
            mask.requires_grad = False
            input = input * mask
            target = target * mask
            return self.loss(input, target)

    model = load(m, wolny_unet3d(m), weights).double()
    images, labels = volumes(n=2, seed=28)
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)
    y[:, :, :, :1] = -1  # an unlabelled border
    target = expand_as_one_hot(y, 3, ignore_index=-1)
    loss_criterion = _MaskingLossWrapper(GeneralizedDiceLoss(), ignore_index=-1)
    optimizer = optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-5)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    history = []
    for step in range(3):
        model.train()
        optimizer.zero_grad()
        output = model(x)
        loss = loss_criterion(output, target)
        loss.backward()
        optimizer.step()
        scheduler.step(loss.item() + 1.0 * (step == 1))
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        probs = model(x)
    return {"history": history, "target": target, "probs": probs, "lr": optimizer.param_groups[0]["lr"],
            "grad": model.decoders[0].basic_module.SingleConv1.conv.weight.grad,
            "groups": [mod.num_groups for mod in model.modules() if isinstance(mod, nn.GroupNorm)]}


def test_pytorch_3dunet_generalized_dice_with_ignore_index():
    weights = weights_of(wolny_unet3d)
    ours, _ = run_both(wolny_training, weights, rtol=1e-6, atol=1e-8)
    t = ours["target"]
    assert t.shape == (2, 3, 8, 8, 8) and (t[:, :, :, :, :1] == -1).all() and set(np.unique(t)) == {-1.0, 0.0, 1.0}
    np.testing.assert_allclose(ours["probs"].sum(1), 1.0, rtol=1e-12)
    assert ours["groups"][0] == 1  # 1 channel in, fewer than 4 groups


# ----------------------------------------------------------------------------------------------
# Deploying a 3-D network: eval, torch.ao.quantization.fuse_modules folding BatchNorm3d into Conv3d (with its ReLU)
# and into a ConvTranspose3d, then inference on the fused copy, which must answer as the original
# ----------------------------------------------------------------------------------------------


def deploy_net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1, bias=False), nn.BatchNorm3d(4), nn.ReLU(inplace=True),
                         nn.MaxPool3d(2), nn.Conv3d(4, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(inplace=True),
                         nn.ConvTranspose3d(8, 4, 2, stride=2), nn.BatchNorm3d(4), nn.Conv3d(4, 2, 1))


def deployment(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    ao = m.torch.ao.quantization
    model = load(m, deploy_net(m), weights).double()
    images, labels = volumes(n=2, classes=2, seed=29)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(3):  # a little training, so that the running statistics move
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    fused = ao.fuse_modules(model, [["0", "1", "2"], ["4", "5", "6"], ["7", "8"]])
    with torch.no_grad():
        return {"fused": fused(x), "original": model(x), "kinds": [type(mod).__name__ for mod in fused],
                "folded_bias": fused[0][0].bias}


def test_deploying_a_3d_network_with_fuse_modules():
    weights = weights_of(deploy_net)
    ours, _ = run_both(deployment, weights, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["fused"], ours["original"], rtol=1e-10, atol=1e-12)
    assert ours["kinds"] == ["ConvReLU3d", "Identity", "Identity", "MaxPool3d", "ConvReLU3d", "Identity", "Identity",
                             "ConvTranspose3d", "Identity", "Conv3d"]


def test_an_augmentation_holding_torch_functions_pickles():
    """autograd.<name> pickles by that name (ops/names.py's pickled_by_name), so an augmentation holding torch.flip,
    torch.rot90 or torch.relu goes to a spawned DataLoader worker."""
    import pickle
    from functools import partial

    torch = OURS.torch
    flips = [partial(torch.flip, dims=[2]), partial(torch.rot90, k=1, dims=(1, 2)), torch.relu]
    for op in flips:
        again = pickle.loads(pickle.dumps(op))
        assert getattr(again, "func", again) is getattr(op, "func", op)


def test_nearest_resize_of_labels_by_a_fractional_scale_by_hand():
    """Nearest resizing by a fractional scale factor reads source floor(o / s) (clamped) along each dim, and its
    gradient is the adjoint of that selection. (PyTorch's 1-d and 3-d CPU kernels give another gradient when a dim
    keeps its size under a scale other than 1, inconsistent with their own forward: torch.autograd.gradcheck fails
    there, so this is checked by hand only.)"""
    torch, F = OURS.torch, OURS.F
    scale = (0.71, 2.709, 1.084)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 5, 2, 4))).requires_grad_(True)
    y = F.interpolate(x, scale_factor=scale, mode="nearest")
    assert y.shape == (1, 1, 3, 5, 4)
    index = [np.minimum(np.floor(np.arange(out, dtype=np.float32) * np.float32(1 / s)).astype(int), n - 1)
             for out, s, n in zip(y.shape[2:], scale, x.shape[2:])]
    want = x.detach().numpy()[0, 0][np.ix_(*index)]
    np.testing.assert_array_equal(y.detach().numpy()[0, 0], want)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(torch.from_numpy(g))
    adjoint = np.zeros(x.shape[2:])
    np.add.at(adjoint, np.ix_(*index), g[0, 0])
    np.testing.assert_allclose(x.grad.numpy()[0, 0], adjoint, rtol=1e-12)
