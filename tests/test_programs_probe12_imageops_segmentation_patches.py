# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Image-processing and dense-prediction programs (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data (float64 mostly, to about 1e-9), comparing values and gradients, and checked
by hand where they run alone. Segmentation and patches: SegNet (``max_unpool2d`` with ``output_size``) with Dice,
focal, soft IoU and weighted ``cross_entropy`` with ``ignore_index``; the original U-Net (valid convolutions, skips
cropped by negative ``F.pad``, weight maps, channels_last, nearest-exact decoding); patch processing
(``F.unfold``/``F.fold`` overlap-add, im2col, a median filter by ``Tensor.unfold``, the guided filter by cumulative
sums, sRGB to Lab)."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# SegNet (Badrinarayanan et al.): max-pooling indices carried to the decoder's max_unpool2d, on an
# odd-sized image (output_size); trained with the segmentation losses people write by hand: soft
# Dice over one_hot targets, focal loss from cross_entropy(reduction='none'), soft IoU, and
# cross_entropy with class weights and an ignore_index for the void label
# ----------------------------------------------------------------------------------------------


def segnet(m, classes=4):
    nn, F = m.nn, m.F

    class SegNet(nn.Module):
        def __init__(self, in_chn=3, out_chn=classes, BN_momentum=0.5):
            super(SegNet, self).__init__()
            self.MaxEn = nn.MaxPool2d(2, stride=2, return_indices=True)
            self.ConvEn11 = nn.Conv2d(in_chn, 8, kernel_size=3, padding=1)
            self.BNEn11 = nn.BatchNorm2d(8, momentum=BN_momentum)
            self.ConvEn21 = nn.Conv2d(8, 12, kernel_size=3, padding=1)
            self.BNEn21 = nn.BatchNorm2d(12, momentum=BN_momentum)
            self.MaxDe = nn.MaxUnpool2d(2, stride=2)
            self.ConvDe21 = nn.Conv2d(12, 8, kernel_size=3, padding=1)
            self.BNDe21 = nn.BatchNorm2d(8, momentum=BN_momentum)
            self.ConvDe11 = nn.Conv2d(8, out_chn, kernel_size=3, padding=1)

        def forward(self, x):
            x = F.relu(self.BNEn11(self.ConvEn11(x)))
            size1 = x.size()
            x, ind1 = self.MaxEn(x)
            x = F.relu(self.BNEn21(self.ConvEn21(x)))
            size2 = x.size()
            x, ind2 = self.MaxEn(x)
            x = self.MaxDe(x, ind2, output_size=size2)
            x = F.relu(self.BNDe21(self.ConvDe21(x)))
            x = F.max_unpool2d(x, ind1, kernel_size=2, stride=2, output_size=size1[-2:])
            return self.ConvDe11(x)

    return SegNet()


def dice_loss(m, logits, true, eps=1e-7, ignore_index=None):
    torch, F = m.torch, m.F
    num_classes = logits.shape[1]
    valid = torch.ones_like(true, dtype=torch.bool) if ignore_index is None else true != ignore_index
    true = torch.where(valid, true, torch.zeros_like(true))
    true_1_hot = F.one_hot(true, num_classes).permute(0, 3, 1, 2).float().to(logits.dtype)
    probas = F.softmax(logits, dim=1) * valid.unsqueeze(1)
    true_1_hot = true_1_hot * valid.unsqueeze(1)
    dims = (0,) + tuple(range(2, true.ndimension() + 1))
    intersection = torch.sum(probas * true_1_hot, dims)
    cardinality = torch.sum(probas + true_1_hot, dims)
    dice_loss = (2. * intersection / (cardinality + eps)).mean()
    return (1 - dice_loss)


class FocalLoss:
    def __init__(self, m, gamma=2.0, alpha=None, ignore_index=-100):
        self.m, self.gamma, self.alpha, self.ignore_index = m, gamma, alpha, ignore_index

    def __call__(self, input, target):
        F = self.m.F
        ce = F.cross_entropy(input, target, reduction="none", ignore_index=self.ignore_index)
        pt = (-ce).exp()
        loss = (1 - pt) ** self.gamma * ce
        if self.alpha is not None:
            at = self.alpha.gather(0, target.clamp(min=0, max=len(self.alpha) - 1).flatten()).view_as(target)
            loss = loss * at
        valid = target != self.ignore_index
        return loss.sum() / valid.sum().clamp(min=1)


def soft_iou_loss(m, logits, target, n_classes):
    torch, F = m.torch, m.F
    pred = F.softmax(logits, dim=1)
    target_onehot = torch.zeros_like(pred).scatter_(1, target.unsqueeze(1), 1)
    inter = (pred * target_onehot).view(len(pred), n_classes, -1).sum(2)
    union = (pred + target_onehot - pred * target_onehot).view(len(pred), n_classes, -1).sum(2)
    return -(inter / (union + 1e-16)).mean()


def segmentation_data(n=3, h=11, w=13, classes=4, seed=5):
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, h, w), dtype=np.int64)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        for c in range(1, classes):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 4)
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = c
    images = np.stack([labels == c for c in range(3)], 1).astype(np.float64)
    images += 0.3 * rng.standard_normal(images.shape)
    labels[:, 0, :] = 255  # a void border, as in VOC
    return images, labels


def segnet_training(m, weights, steps=3, dtype="float64"):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, segnet(m), weights).to(getattr(torch, dtype))
    images, labels = segmentation_data()
    x, y = torch.tensor(images.astype(dtype)), torch.tensor(labels)
    class_weights = torch.tensor([0.2, 1.0, 1.5, 2.0], dtype=getattr(torch, dtype))
    focal = FocalLoss(m, gamma=2.0, alpha=torch.tensor([0.25, 0.75, 0.75, 0.75], dtype=getattr(torch, dtype)),
                      ignore_index=255)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    history = []
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        out = model(x)
        ce = F.cross_entropy(out, y, weight=class_weights, ignore_index=255)
        dl = dice_loss(m, out, y, ignore_index=255)
        fl = focal(out, y)
        valid = y != 255
        iou = soft_iou_loss(m, out * valid.unsqueeze(1), torch.where(valid, y, 0), 4)
        loss = ce + dl + fl + 0.1 * iou
        loss.backward()
        optimizer.step()
        history.append([ce.item(), dl.item(), fl.item(), iou.item()])
    model.eval()
    with torch.no_grad():
        out = model(x)
        pred = out.argmax(1)
        valid = y != 255
        accuracy = (pred[valid] == y[valid]).float().mean()
        intersection = torch.stack([((pred == c) & (y == c)).sum() for c in range(4)])
        union = torch.stack([(((pred == c) | (y == c)) & valid).sum() for c in range(4)])
    return history, [p.detach() for p in model.parameters()], [b for b in model.buffers()], out, accuracy, \
        intersection, union


def test_segnet_with_unpooling_and_segmentation_losses():
    weights = weights_of(segnet)
    ours, _ = run_both(segnet_training, weights, rtol=1e-9, atol=1e-11)
    history = ours[0]
    assert all(np.isfinite(h).all() for h in history) and ours[3].shape == (3, 4, 11, 13)
    run_both(segnet_training, weights, dtype="float32", rtol=1e-4, atol=1e-5)


def test_segmentation_losses_by_hand():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, 3, 4, 5))
    target = rng.integers(0, 3, (2, 4, 5))
    target[0, 0, :2] = 255
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    valid = target != 255
    onehot = np.stack([(target == c) & valid for c in range(3)], 1)
    pv = p * valid[:, None]
    dice = 1 - np.mean(2 * (pv * onehot).sum((0, 2, 3)) / ((pv + onehot).sum((0, 2, 3)) + 1e-7))
    torch = OURS.torch
    assert dice_loss(OURS, torch.tensor(logits), torch.tensor(target), ignore_index=255).item() == \
        pytest.approx(dice, rel=1e-12)
    ce = -np.log(np.take_along_axis(p, np.where(valid, target, 0)[:, None], 1)[:, 0])
    focal = ((1 - np.exp(-ce)) ** 2 * ce)[valid].sum() / valid.sum()
    assert FocalLoss(OURS, ignore_index=255)(torch.tensor(logits), torch.tensor(target)).item() == \
        pytest.approx(focal, rel=1e-12)
    weights = np.array([0.5, 1.0, 2.0])
    w = weights[np.where(valid, target, 0)] * valid
    weighted = (w * ce).sum() / w.sum()
    assert OURS.F.cross_entropy(torch.tensor(logits), torch.tensor(target), weight=torch.tensor(weights),
                                ignore_index=255).item() == pytest.approx(weighted, rel=1e-12)


# ----------------------------------------------------------------------------------------------
# Patch-based processing: overlapping patches by F.unfold, a learnt patch transform, and overlap-add
# back by F.fold normalised by fold(unfold(ones)); convolution as im2col + matmul; a median filter by
# Tensor.unfold; He et al.'s guided filter with a box filter of cumulative sums; sRGB -> CIE Lab with
# torch.where's piecewise gamma and cube root, and a Lab colour loss
# ----------------------------------------------------------------------------------------------


def box_filter(m, x, r):
    """(2r+1)² box sums by cumulative sums (the guided-filter papers' diff_x / diff_y)."""
    def diff_x(input, r):
        left = input[:, :, r:2 * r + 1]
        middle = input[:, :, 2 * r + 1:] - input[:, :, :-2 * r - 1]
        right = input[:, :, -1:] - input[:, :, -2 * r - 1:-r - 1]
        return m.torch.cat([left, middle, right], dim=2)

    def diff_y(input, r):
        left = input[:, :, :, r:2 * r + 1]
        middle = input[:, :, :, 2 * r + 1:] - input[:, :, :, :-2 * r - 1]
        right = input[:, :, :, -1:] - input[:, :, :, -2 * r - 1:-r - 1]
        return m.torch.cat([left, middle, right], dim=3)

    return diff_y(diff_x(x.cumsum(dim=2), r).cumsum(dim=3), r)


def guided_filter(m, x, y, r, eps=1e-2):
    torch = m.torch
    n_x, c_x, h_x, w_x = x.size()
    N = box_filter(m, torch.ones((1, 1, h_x, w_x), dtype=x.dtype), r)
    mean_x = box_filter(m, x, r) / N
    mean_y = box_filter(m, y, r) / N
    cov_xy = box_filter(m, x * y, r) / N - mean_x * mean_y
    var_x = box_filter(m, x * x, r) / N - mean_x * mean_x
    A = cov_xy / (var_x + eps)
    b = mean_y - A * mean_x
    mean_A = box_filter(m, A, r) / N
    mean_b = box_filter(m, b, r) / N
    return mean_A * x + mean_b


def srgb_to_lab(m, rgb):
    torch = m.torch
    linear = torch.where(rgb > 0.04045, ((rgb.clamp(min=1e-8) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    rgb_to_xyz = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                               [0.019334, 0.119193, 0.950227]], dtype=rgb.dtype)
    xyz = torch.einsum("ij,bjhw->bihw", rgb_to_xyz, linear)
    xyz = xyz / torch.tensor([0.950456, 1.0, 1.088754], dtype=rgb.dtype)[None, :, None, None]
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-8).pow(1 / 3), 7.787 * xyz + 16 / 116)
    L = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([L, a, b], 1)


def patch_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3 * 16, 24), nn.GELU(), nn.Linear(24, 3 * 16))


def patch_processing(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    net = load(m, patch_net(m), weights).double()
    rng = np.random.default_rng(9)
    clean = torch.tensor(rng.uniform(0.1, 0.9, (2, 3, 10, 9)))
    clean = F.avg_pool2d(F.pad(clean, (1, 1, 1, 1), mode="reflect"), 3, stride=1)  # smooth it
    noisy = (clean + 0.05 * torch.tensor(rng.standard_normal(clean.shape))).clamp(0, 1)
    kernel, stride = 4, 2
    H, W = noisy.shape[-2:]
    pad = (0, (stride - (W - kernel) % stride) % stride, 0, (stride - (H - kernel) % stride) % stride)
    optimizer = optim.Adam(net.parameters(), lr=1e-3)
    history = []

    def denoise(img):
        padded = F.pad(img, pad, mode="replicate")
        Hp, Wp = padded.shape[-2:]
        patches = F.unfold(padded, kernel_size=kernel, stride=stride)  # (B, C·k·k, L)
        out = net(patches.transpose(1, 2)).transpose(1, 2) + patches
        summed = F.fold(out, output_size=(Hp, Wp), kernel_size=kernel, stride=stride)
        counts = F.fold(F.unfold(torch.ones_like(padded), kernel, stride=stride), (Hp, Wp), kernel, stride=stride)
        return (summed / counts)[..., :H, :W]

    for step in range(steps):
        optimizer.zero_grad()
        out = denoise(noisy)
        loss = F.mse_loss(out, clean) + 1e-4 * (srgb_to_lab(m, out.clamp(0, 1)) -
                                                 srgb_to_lab(m, clean)).norm(dim=1).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        restored = denoise(noisy)
    # convolution as im2col + matmul
    weight = torch.tensor(rng.standard_normal((5, 3, 3, 3)))
    cols = F.unfold(noisy, 3, padding=1, dilation=1)
    by_im2col = (weight.view(5, -1) @ cols).view(2, 5, H, W)
    by_conv = F.conv2d(noisy, weight, padding=1)
    # a 3 x 3 median filter by Tensor.unfold
    padded = F.pad(noisy, (1, 1, 1, 1), mode="reflect")
    median = padded.unfold(2, 3, 1).unfold(3, 3, 1).contiguous().view(2, 3, H, W, 9).median(dim=-1)[0]
    # the guided filter, its gradient with respect to the guide
    guide = noisy.mean(1, keepdim=True).requires_grad_(True)
    smoothed = guided_filter(m, guide, noisy, r=2)
    smoothed.pow(2).sum().backward()
    lab = srgb_to_lab(m, clean)
    return history, [p.detach() for p in net.parameters()], restored, by_im2col, by_conv, median, smoothed, \
        guide.grad, lab


def test_patch_based_processing():
    weights = weights_of(patch_net)
    ours, _ = run_both(patch_processing, weights, rtol=1e-9, atol=1e-10)
    history, params, restored, by_im2col, by_conv, median, smoothed, guide_grad, lab = ours
    np.testing.assert_allclose(by_im2col, by_conv, rtol=1e-10, atol=1e-12)
    assert restored.shape == (2, 3, 10, 9) and median.shape == (2, 3, 10, 9)
    # the box filter by cumulative sums is the windowed sum (clipped at the edges)
    x = np.random.default_rng(0).standard_normal((1, 1, 7, 6))
    boxed = box_filter(OURS, OURS.torch.tensor(x), 2).numpy()
    expected = np.array([[x[0, 0, max(i - 2, 0):i + 3, max(j - 2, 0):j + 3].sum() for j in range(6)] for i in range(7)])
    np.testing.assert_allclose(boxed[0, 0], expected, rtol=1e-10, atol=1e-12)
    # Lab of white is (100, 0, 0), of black (0, 0, 0)
    corners = OURS.torch.tensor(np.array([1.0, 0.0]).reshape(1, 1, 1, 2).repeat(3, 1))
    np.testing.assert_allclose(srgb_to_lab(OURS, corners).numpy()[0, :, 0].T, [[100, 0, 0], [0, 0, 0]], atol=2e-3)


# ----------------------------------------------------------------------------------------------
# The original U-Net (Ronneberger et al. 2015): unpadded convolutions, ConvTranspose2d up-convolutions,
# skip connections centre-cropped by negative F.pad, a per-pixel weight map on the loss
# (binary_cross_entropy_with_logits with weight and pos_weight), channels_last inputs and model; a
# decoder variant upsampling by nearest-exact interpolate
# ----------------------------------------------------------------------------------------------


def original_unet(m, upsample="transpose"):
    torch, nn, F = m.torch, m.nn, m.F

    def double_conv(in_c, out_c):
        return nn.Sequential(nn.Conv2d(in_c, out_c, 3), nn.ReLU(inplace=True), nn.Conv2d(out_c, out_c, 3),
                             nn.ReLU(inplace=True))

    def crop_like(skip, x):
        dy, dx = skip.size(2) - x.size(2), skip.size(3) - x.size(3)
        return F.pad(skip, [-(dx // 2), -(dx - dx // 2), -(dy // 2), -(dy - dy // 2)])

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.down1 = double_conv(1, 4)
            self.down2 = double_conv(4, 8)
            self.bottom = double_conv(8, 8)
            if upsample == "transpose":
                self.up2 = nn.ConvTranspose2d(8, 8, kernel_size=2, stride=2)
                self.up1 = nn.ConvTranspose2d(4, 4, kernel_size=2, stride=2)
            self.dec2 = double_conv(16, 4)
            self.dec1 = double_conv(8, 4)
            self.out = nn.Conv2d(4, 1, 1)

        def _up(self, name, x):
            if upsample == "transpose":
                return getattr(self, name)(x)
            return F.interpolate(x, scale_factor=2, mode="nearest-exact")

        def forward(self, x):
            c1 = self.down1(x)
            c2 = self.down2(F.max_pool2d(c1, 2))
            b = self.bottom(F.max_pool2d(c2, 2))
            u2 = self._up("up2", b)
            d2 = self.dec2(torch.cat([crop_like(c2, u2), u2], dim=1))
            u1 = self._up("up1", d2)
            d1 = self.dec1(torch.cat([crop_like(c1, u1), u1], dim=1))
            return self.out(d1)

    return UNet()


def unet_weight_map(mask, w0=10.0, sigma=2.0):
    """The paper's border weights, simplified: w_c(x) + w0 · exp(-d(x)² / 2σ²), d the distance to the other class."""
    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w]
    fg = np.argwhere(mask)
    bg = np.argwhere(~mask)
    d = np.where(mask, np.min(np.hypot(yy[..., None] - bg[:, 0], xx[..., None] - bg[:, 1]), -1),
                 np.min(np.hypot(yy[..., None] - fg[:, 0], xx[..., None] - fg[:, 1]), -1))
    class_weight = np.where(mask, 0.5 / mask.mean(), 0.5 / (1 - mask.mean()))
    return class_weight + w0 * np.exp(-d ** 2 / (2 * sigma ** 2))


def unet_training(m, weights, upsample="transpose", channels_last=False, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, original_unet(m, upsample), weights).double()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(12)
    image = rng.uniform(0, 1, (2, 1, 44, 44))
    yy, xx = np.mgrid[:4, :4]
    masks = np.stack([(np.hypot(yy - 1.5, xx - 1.5) < 1.6 + 0.3 * i) for i in range(2)])  # the output is 4 x 4
    weight_map = np.stack([unet_weight_map(mk) for mk in masks])[:, None]
    x = torch.tensor(image)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.tensor(masks[:, None].astype(np.float64))
    wmap = torch.tensor(weight_map)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.99)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits, target, weight=wmap,
                                                  pos_weight=torch.tensor([2.0], dtype=torch.float64))
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        out = model(x)
    return history, [p.detach() for p in model.parameters()], out


@pytest.mark.parametrize("options", [dict(), dict(upsample="nearest-exact"), dict(channels_last=True)])
def test_original_unet_with_valid_convolutions(options):
    weights = weights_of(lambda m: original_unet(m, options.get("upsample", "transpose")))
    ours, _ = run_both(unet_training, weights, **options, rtol=1e-9, atol=1e-11)
    history, params, out = ours
    assert out.shape == (2, 1, 4, 4)  # 44 -> 40 -> 20 -> 16 -> 8 -> 4 -> 8 -> 4 -> 8 -> 4
    if options.get("channels_last"):  # the layout changes no value
        plain, _ = run_both(unet_training, weights, compare=False)
        np.testing.assert_allclose(out, plain[2], rtol=1e-12, atol=1e-12)
