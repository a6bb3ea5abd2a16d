# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""3-D volumetric programs as medical-imaging and video code writes them, run as tests/probe19_volumes_common.py
says. U-Nets: a MONAI-style residual U-Net (strided ``Conv3d`` down, ``ConvTranspose3d`` up with ``output_padding``,
``InstanceNorm3d(affine=True)``, ``PReLU``, deep supervision with labels resized by
``F.interpolate(mode='nearest')``) trained by Adam on DiceCE (``one_hot`` permuted to channels-first,
``include_background=False``); a SegNet-3D (``MaxPool3d(return_indices=True)`` / ``MaxUnpool3d(output_size=...)``,
``BatchNorm3d``) trained by SGD with Nesterov on Tversky + focal losses; an attention U-Net's gates in
``channels_last_3d`` (and that layout's contiguity); nnU-Net's training step (PlainConvUNet, a bool one-hot by
``scatter_``, a PolyLR ``_LRScheduler`` subclass, deep supervision, mirroring TTA by ``flip``)."""

import itertools
import math

import numpy as np

from .probe19_volumes_common import volumes
from .pytorch_programs import OURS, load, run_both, weights_of

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
