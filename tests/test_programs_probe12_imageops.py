# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Image-processing and dense-prediction programs (see tests/pytorch_programs.py), each run on chainrule and
on PyTorch from the same weights and data (float64 mostly, to about 1e-9), comparing values and gradients, and
checked by hand where they run alone.

Unsupervised optical flow (backward warping by ``grid_sample`` over a meshgrid, Charbonnier and census losses,
edge-aware second-order smoothness, forward-backward occlusion, an 'area' pyramid); AdaIN style transfer (forward
hooks, ``calc_mean_std``, ReflectionPad2d and nearest Upsample) and Gatys-style image optimisation (einsum Gram
matrices, total variation, Adam and L-BFGS with strong Wolfe); SegNet (``max_unpool2d`` with ``output_size``) with
Dice, focal, soft IoU and weighted ``cross_entropy`` with ``ignore_index``; ESPCN (PixelShuffle with ICNR,
PixelUnshuffle, RGB/YCbCr by einsum, antialiased bicubic downscaling, PSNR); restoration by SSIM and MS-SSIM
(grouped Gaussian ``conv2d``), Sobel gradients, depthwise-separable and dilated convolutions (ASPP) and pyramid
pooling to odd sizes; patch processing (``F.unfold``/``F.fold`` overlap-add, im2col, a median filter by
``Tensor.unfold``, the guided filter by cumulative sums, sRGB to Lab); torchvision-style tensor augmentation on
the seeded generator (RandomResizedCrop, ColorJitter's HSV round trip, gaussian_blur, RandomErasing), DiffAugment,
CutMix and flip TTA; VoxelMorph (3-D SpatialTransformer, scaling and squaring, trilinear resize, NCC by
``conv3d``) and affine volume registration (5-D ``affine_grid``); the original U-Net (valid convolutions, skips
cropped by negative ``F.pad``, weight maps, channels_last, nearest-exact decoding); softmax splatting by
``index_add_``. Then focused tests of what the programs found: ``F.interpolate``'s empty sizes, ``grid_sample``'s
border clamp of infinite points, quotients by numbers and selections written in place, embedding tables updated
before a retained backward, ConvTranspose's ``output_size`` range."""

import math

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import raises

from .pytorch_programs import OURS, load, pytorch, run_both, weights_of

nn, F = ported_nn.nn, ported_nn.F  # the fixtures (the library under test's nn and nn.functional)

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
# Arbitrary style transfer (Huang & Belongie's AdaIN): a frozen encoder read by forward hooks,
# adaptive instance normalisation by calc_mean_std, a decoder of ReflectionPad2d + nearest Upsample;
# then Gatys-style optimisation of an image (einsum Gram matrices, total variation) by Adam and L-BFGS
# ----------------------------------------------------------------------------------------------


def adain_nets(m):
    nn = m.nn
    encoder = nn.Sequential(
        nn.Conv2d(3, 3, (1, 1)),
        nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(3, 8, (3, 3)), nn.ReLU(),  # relu1-1
        nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(8, 8, (3, 3)), nn.ReLU(),
        nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True),
        nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(8, 12, (3, 3)), nn.ReLU(),  # relu2-1
    )
    decoder = nn.Sequential(
        nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(12, 8, (3, 3)), nn.ReLU(),
        nn.Upsample(scale_factor=2, mode='nearest'),
        nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(8, 8, (3, 3)), nn.ReLU(),
        nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(8, 3, (3, 3)),
    )
    return nn.ModuleDict({"encoder": encoder, "decoder": decoder})


def calc_mean_std(feat, eps=1e-5):
    size = feat.size()
    assert (len(size) == 4)
    N, C = size[:2]
    feat_var = feat.view(N, C, -1).var(dim=2) + eps
    feat_std = feat_var.sqrt().view(N, C, 1, 1)
    feat_mean = feat.view(N, C, -1).mean(dim=2).view(N, C, 1, 1)
    return feat_mean, feat_std


def adaptive_instance_normalization(content_feat, style_feat):
    assert (content_feat.size()[:2] == style_feat.size()[:2])
    size = content_feat.size()
    style_mean, style_std = calc_mean_std(style_feat)
    content_mean, content_std = calc_mean_std(content_feat)
    normalized_feat = (content_feat - content_mean.expand(size)) / content_std.expand(size)
    return normalized_feat * style_std.expand(size) + style_mean.expand(size)


def adain_training(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    nets = load(m, adain_nets(m), weights).double()
    encoder, decoder = nets["encoder"], nets["decoder"]
    for param in encoder.parameters():
        param.requires_grad = False
    features = {}
    handles = [encoder[i].register_forward_hook(lambda mod, inp, out, i=i: features.__setitem__(i, out))
               for i in (3, 10)]

    def encode_with_intermediate(input):
        features.clear()
        encoder(input)
        return [features[3], features[10]]

    rng = np.random.default_rng(3)
    content = torch.tensor(rng.uniform(0, 1, (2, 3, 10, 10)))
    style = torch.tensor(rng.uniform(0, 1, (2, 3, 10, 10)) ** 2)
    optimizer = optim.Adam(decoder.parameters(), lr=1e-3)
    mse_loss = nn.MSELoss()
    history = []
    for step in range(steps):
        style_feats = encode_with_intermediate(style)
        content_feat = encode_with_intermediate(content)[-1]
        alpha = 0.8
        t = adaptive_instance_normalization(content_feat, style_feats[-1])
        t = alpha * t + (1 - alpha) * content_feat
        g_t = decoder(t)
        g_t_feats = encode_with_intermediate(g_t)
        loss_c = mse_loss(g_t_feats[-1], t)
        loss_s = 0
        for g, s in zip(g_t_feats, style_feats):
            g_mean, g_std = calc_mean_std(g)
            s_mean, s_std = calc_mean_std(s)
            loss_s = loss_s + mse_loss(g_mean, s_mean) + mse_loss(g_std, s_std)
        loss = loss_c + 10.0 * loss_s
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss_c.item(), loss_s.item()))
    for h in handles:
        h.remove()
    with torch.no_grad():
        stylised = decoder(adaptive_instance_normalization(encoder(content), encoder(style)))
    return history, [p.detach() for p in decoder.parameters()], stylised, len(features)


def test_adain_style_transfer():
    weights = weights_of(adain_nets)
    ours, _ = run_both(adain_training, weights, rtol=1e-9, atol=1e-11)
    history, params, stylised, hooked = ours
    assert stylised.shape == (2, 3, 10, 10) and hooked == 2  # removed hooks record nothing
    # by hand: AdaIN gives the content features the style's per-channel mean and (unbiased) std
    rng = np.random.default_rng(0)
    c, s = rng.standard_normal((1, 2, 4, 5)), 3 + 2 * rng.standard_normal((1, 2, 4, 5))
    out = adaptive_instance_normalization(OURS.torch.tensor(c), OURS.torch.tensor(s)).numpy()
    np.testing.assert_allclose(out.mean((2, 3)), s.mean((2, 3)), rtol=1e-10)
    np.testing.assert_allclose(out.std((2, 3), ddof=1), np.sqrt(s.var((2, 3), ddof=1) + 1e-5), rtol=1e-5)


def gatys_features(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Conv2d(6, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU())


def gram(m, x):
    b, c, h, w = x.shape
    return m.torch.einsum("bchw,bdhw->bcd", x, x) / (c * h * w)


def tv_loss(img):
    return (img[:, :, 1:, :] - img[:, :, :-1, :]).abs().mean() + (img[:, :, :, 1:] - img[:, :, :, :-1]).abs().mean()


def image_optimisation(m, weights, optimizer_name="adam", steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    cnn = load(m, gatys_features(m), weights).double().eval().requires_grad_(False)
    layers = {1: "relu1", 3: "relu2", 6: "relu3"}

    def get_features(x):
        feats = {}
        for i, layer in enumerate(cnn):
            x = layer(x)
            if i in layers:
                feats[layers[i]] = x
        return feats

    rng = np.random.default_rng(4)
    content = torch.tensor(rng.uniform(0, 1, (1, 3, 12, 12)))
    style = torch.tensor(rng.uniform(0, 1, (1, 3, 12, 12)))
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(-1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(-1, 1, 1)
    norm = lambda img: (img - mean) / std
    content_feats = {k: v.detach() for k, v in get_features(norm(content)).items()}
    style_grams = {k: gram(m, v).detach() for k, v in get_features(norm(style)).items()}
    # optimise an unconstrained image; sigmoid maps it into [0, 1]
    raw = torch.logit(content.clamp(0.01, 0.99)).clone().requires_grad_(True)
    if optimizer_name == "adam":
        optimizer = optim.Adam([raw], lr=0.05)
    else:
        optimizer = optim.LBFGS([raw], lr=1, max_iter=6, history_size=5, line_search_fn="strong_wolfe")
    history = []

    def closure():
        optimizer.zero_grad()
        img = torch.sigmoid(raw)
        feats = get_features(norm(img))
        c_loss = F.mse_loss(feats["relu2"], content_feats["relu2"])
        s_loss = sum(F.mse_loss(gram(m, feats[k]), style_grams[k], reduction="sum") for k in feats)
        loss = c_loss + 1e3 * s_loss + 0.1 * tv_loss(img)
        loss.backward()
        history.append(loss.item())
        return loss

    for step in range(steps if optimizer_name == "adam" else 1):
        optimizer.step(closure)
    return history, torch.sigmoid(raw).detach(), raw.grad


@pytest.mark.parametrize("optimizer_name", ["adam", "lbfgs"])
def test_gatys_image_optimisation(optimizer_name):
    weights = weights_of(gatys_features)
    ours, _ = run_both(image_optimisation, weights, optimizer_name, rtol=1e-8, atol=1e-10)
    history = ours[0]
    assert history[-1] < history[0]
    # the Gram matrix by einsum is the batched X Xᵀ / (c h w)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    flat = x.reshape(2, 3, 20)
    np.testing.assert_allclose(gram(OURS, OURS.torch.tensor(x)).numpy(), flat @ flat.transpose(0, 2, 1) / 60,
                               rtol=1e-12)


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
# ESPCN super-resolution (Shi et al. 2016) on the Y channel: RGB -> YCbCr by einsum, the low-resolution
# input by antialiased bicubic downscaling, sub-pixel convolution (PixelShuffle) with ICNR initialisation,
# PSNR against a bicubic baseline; and a PixelUnshuffle (space-to-depth) encoder that inverts it
# ----------------------------------------------------------------------------------------------

RGB_TO_YCBCR = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0


def rgb_to_ycbcr(m, img):
    torch = m.torch
    matrix = torch.tensor(RGB_TO_YCBCR, dtype=img.dtype)
    return torch.einsum("...chw,dc->...dhw", img, matrix) + torch.tensor(YCBCR_OFFSET, dtype=img.dtype).view(3, 1, 1)


def ycbcr_to_rgb(m, img):
    torch = m.torch
    inverse = torch.linalg.inv(torch.tensor(RGB_TO_YCBCR, dtype=img.dtype))
    shifted = img - torch.tensor(YCBCR_OFFSET, dtype=img.dtype).view(3, 1, 1)
    return torch.einsum("dc,bchw->bdhw", inverse, shifted)


def espcn(m, upscale_factor=3):
    torch, nn = m.torch, m.nn

    def icnr_(tensor, scale, init=nn.init.kaiming_normal_):
        ni, nf, h, w = tensor.shape
        ni2 = int(ni / (scale ** 2))
        k = init(torch.zeros([ni2, nf, h, w])).transpose(0, 1)
        k = k.contiguous().view(ni2, nf, -1)
        k = k.repeat(1, 1, scale ** 2)
        k = k.contiguous().view([nf, ni, h, w]).transpose(0, 1)
        tensor.data.copy_(k)

    class ESPCN(nn.Module):
        def __init__(self, scale_factor, num_channels=1):
            super(ESPCN, self).__init__()
            self.first_part = nn.Sequential(
                nn.Conv2d(num_channels, 16, kernel_size=5, padding=5 // 2), nn.Tanh(),
                nn.Conv2d(16, 8, kernel_size=3, padding=3 // 2), nn.Tanh())
            self.last_part = nn.Sequential(
                nn.Conv2d(8, num_channels * (scale_factor ** 2), kernel_size=3, padding=3 // 2),
                nn.PixelShuffle(scale_factor))
            icnr_(self.last_part[0].weight, scale_factor)

        def forward(self, x):
            return self.last_part(self.first_part(x))

    return ESPCN(upscale_factor)


def psnr(m, a, b, max_value=1.0):
    return 10.0 * m.torch.log10(max_value ** 2 / ((a - b) ** 2).mean())


def espcn_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, espcn(m), weights).double()
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[:18, :15] / 6.0
    hr_rgb = np.stack([0.5 + 0.4 * np.sin(xx + k + rng.uniform(0, 3, (2, 1, 1))) * np.cos(yy * (k + 1) / 2)
                       for k in range(3)], 1)
    hr_rgb = torch.tensor(hr_rgb).clamp(0, 1)
    hr = rgb_to_ycbcr(m, hr_rgb)
    lr = F.interpolate(hr, scale_factor=1 / 3, mode="bicubic", align_corners=False, antialias=True)
    lr_y, hr_y = lr[:, :1], hr[:, :1]
    optimizer = optim.Adam([{"params": model.first_part.parameters()},
                            {"params": model.last_part.parameters(), "lr": 1e-3 * 0.1}], lr=1e-3)
    scheduler = optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 3], gamma=0.5)
    criterion = nn.MSELoss()
    history = []
    for step in range(steps):
        preds = model(lr_y)
        loss = criterion(preds, hr_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        sr_y = model(lr_y).clamp(0.0, 1.0)
        bicubic = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0.0, 1.0)
        sr_rgb = ycbcr_to_rgb(m, torch.cat([sr_y, bicubic[:, 1:]], dim=1)).clamp(0.0, 1.0)
        scores = [psnr(m, sr_y, hr_y), psnr(m, bicubic[:, :1], hr_y), psnr(m, sr_rgb, hr_rgb)]
    depth = nn.PixelUnshuffle(3)(hr)
    back = F.pixel_shuffle(depth, 3)
    return history, [p.detach() for p in model.parameters()], lr, sr_rgb, scores, depth, back, \
        [g["lr"] for g in optimizer.param_groups]


def test_espcn_super_resolution():
    weights = weights_of(espcn)
    ours, _ = run_both(espcn_training, weights, rtol=1e-9, atol=1e-11)
    history, params, lr, sr_rgb, scores, depth, back, lrs = ours
    assert lr.shape == (2, 3, 6, 5) and sr_rgb.shape == (2, 3, 18, 15) and depth.shape == (2, 27, 6, 5)
    assert lrs == [2.5e-4, 2.5e-5]
    # ICNR makes the first sub-pixel output nearest-neighbour upsampling: the 9 sub-pixels of a block agree
    np.testing.assert_allclose(weights_of(espcn)["last_part.0.weight"].reshape(9, -1),
                               np.repeat(weights_of(espcn)["last_part.0.weight"][:1].reshape(1, -1), 9, 0))
    rgb = np.random.default_rng(0).uniform(0, 1, (1, 3, 2, 2))
    round_trip = ycbcr_to_rgb(OURS, rgb_to_ycbcr(OURS, OURS.torch.tensor(rgb))).numpy()
    np.testing.assert_allclose(round_trip, rgb, rtol=1e-12, atol=1e-12)
    y = 16 / 255 + np.einsum("c,bchw->bhw", RGB_TO_YCBCR[0], rgb)
    np.testing.assert_allclose(rgb_to_ycbcr(OURS, OURS.torch.tensor(rgb)).numpy()[:, 0], y, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Image restoration losses: SSIM with a Gaussian window by grouped conv2d (pytorch-ssim), MS-SSIM by
# avg_pool2d, Sobel image gradients, and a denoiser built of depthwise-separable convolutions, dilated
# convolutions (ASPP) and pyramid pooling to odd sizes (PSPNet)
# ----------------------------------------------------------------------------------------------


def gaussian(m, window_size, sigma):
    torch = m.torch
    gauss = torch.tensor([math.exp(-(x - window_size // 2) ** 2 / float(2 * sigma ** 2)) for x in range(window_size)],
                         dtype=torch.float64)
    return gauss / gauss.sum()


def create_window(m, window_size, channel):
    _1D_window = gaussian(m, window_size, 1.5).unsqueeze(1)
    _2D_window = _1D_window.mm(_1D_window.t()).float().unsqueeze(0).unsqueeze(0)
    return _2D_window.expand(channel, 1, window_size, window_size).contiguous()


def _ssim(m, img1, img2, window, window_size, channel, size_average=True, full=False):
    F = m.F
    mu1 = F.conv2d(img1, window, padding=window_size // 2, groups=channel)
    mu2 = F.conv2d(img2, window, padding=window_size // 2, groups=channel)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = F.conv2d(img1 * img1, window, padding=window_size // 2, groups=channel) - mu1_sq
    sigma2_sq = F.conv2d(img2 * img2, window, padding=window_size // 2, groups=channel) - mu2_sq
    sigma12 = F.conv2d(img1 * img2, window, padding=window_size // 2, groups=channel) - mu1_mu2
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    cs = (2 * sigma12 + C2) / (sigma1_sq + sigma2_sq + C2)
    ssim_map = ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)) / ((mu1_sq + mu2_sq + C1) * (sigma1_sq + sigma2_sq + C2))
    if full:
        return ssim_map.mean(), cs.mean()
    if size_average:
        return ssim_map.mean()
    return ssim_map.mean(1).mean(1).mean(1)


class SSIM:
    def __init__(self, m, window_size=7, size_average=True):
        self.m, self.window_size, self.size_average, self.channel = m, window_size, size_average, 1
        self.window = create_window(m, window_size, self.channel)

    def __call__(self, img1, img2):
        (_, channel, _, _) = img1.size()
        if channel == self.channel and self.window.dtype == img1.dtype:
            window = self.window
        else:
            window = create_window(self.m, self.window_size, channel).type_as(img1)
            self.window, self.channel = window, channel
        return _ssim(self.m, img1, img2, window, self.window_size, channel, self.size_average)


def msssim(m, img1, img2, window_size=5, levels=3):
    torch, F = m.torch, m.F
    weights = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333][:levels], dtype=img1.dtype)
    window = create_window(m, window_size, img1.shape[1]).type_as(img1)
    mssim, mcs = [], []
    for _ in range(levels):
        sim, cs = _ssim(m, img1, img2, window, window_size, img1.shape[1], full=True)
        mssim.append(sim)
        mcs.append(cs)
        img1 = F.avg_pool2d(img1, (2, 2), ceil_mode=True)
        img2 = F.avg_pool2d(img2, (2, 2), ceil_mode=True)
    mssim, mcs = torch.stack(mssim), torch.stack(mcs)
    mssim, mcs = (mssim + 1) / 2, (mcs + 1) / 2  # normalize=True, as pytorch-msssim: keeps the powers real
    pow1, pow2 = mcs ** weights, mssim ** weights
    return torch.prod(pow1[:-1] * pow2[-1])


def sobel(m, img):
    torch, F = m.torch, m.F
    kx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=img.dtype)
    ky = kx.t()
    kernel = torch.stack([kx, ky]).unsqueeze(1).repeat(img.shape[1], 1, 1, 1)  # (2C, 1, 3, 3)
    padded = F.pad(img, (1, 1, 1, 1), mode="replicate")
    grads = F.conv2d(padded, kernel, groups=img.shape[1])
    gx, gy = grads[:, 0::2], grads[:, 1::2]
    return torch.sqrt(gx ** 2 + gy ** 2 + 1e-6), torch.atan2(gy, gx)


def restoration_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SeparableConv2d(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size=3, dilation=1):
            super().__init__()
            self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=dilation * (kernel_size // 2),
                                       dilation=dilation, groups=in_channels, bias=False)
            self.bn = nn.BatchNorm2d(in_channels)
            self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

        def forward(self, x):
            return self.pointwise(F.relu6(self.bn(self.depthwise(x))))

    class ASPP(nn.Module):
        def __init__(self, in_channels, out_channels, rates=(1, 2, 3)):
            super().__init__()
            self.branches = nn.ModuleList(
                [nn.Conv2d(in_channels, out_channels, 1)] +
                [nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r) for r in rates[1:]] +
                [SeparableConv2d(in_channels, out_channels, dilation=rates[-1])])
            self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1))
            self.project = nn.Conv2d(out_channels * (len(self.branches) + 1), out_channels, 1)

        def forward(self, x):
            size = x.shape[-2:]
            pooled = F.interpolate(self.image_pool(x), size=size, mode="bilinear", align_corners=False)
            return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))

    class PyramidPooling(nn.Module):
        def __init__(self, in_channels, bins=(1, 2, 3, 5)):
            super().__init__()
            self.stages = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, 2, 1))
                                         for b in bins])

        def forward(self, x):
            h, w = x.shape[-2:]
            return torch.cat([x] + [F.interpolate(stage(x), size=(h, w), mode="bilinear", align_corners=True)
                                    for stage in self.stages], 1)

    class Denoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(3, 6, 3, padding=1)
            self.body = nn.Sequential(SeparableConv2d(6, 6), nn.ReLU(), ASPP(6, 4))
            self.ppm = PyramidPooling(4)
            self.tail = nn.Conv2d(4 + 2 * 4, 3, 3, padding=1)

        def forward(self, x):
            return x - self.tail(self.ppm(self.body(self.head(x))))  # residual learning (DnCNN)

    return Denoiser()


def denoiser_training(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, restoration_net(m), weights).double()
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[:13, :11]
    clean = np.stack([0.5 + 0.4 * np.sign(np.sin(xx / (2 + k) + yy / 3)) for k in range(3)])[None].repeat(2, 0)
    clean = torch.tensor(clean * rng.uniform(0.8, 1.0, (2, 1, 1, 1)))
    noisy = clean + 0.1 * torch.tensor(rng.standard_normal(clean.shape))
    ssim_loss = SSIM(m, window_size=7)
    optimizer = optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    history = []
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        out = model(noisy)
        mag_out, _ = sobel(m, out)
        mag_clean, _ = sobel(m, clean)
        loss = F.l1_loss(out, clean) + (1 - ssim_loss(out, clean)) + 0.1 * F.mse_loss(mag_out, mag_clean) + \
            0.5 * (1 - msssim(m, out, clean))
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        restored = model(noisy)
        per_image = _ssim(m, restored, clean, create_window(m, 7, 3).double(), 7, 3, size_average=False)
    magnitude, angle = sobel(m, clean)
    return history, [p.detach() for p in model.parameters()], list(model.buffers()), restored, per_image, \
        magnitude, angle


def test_restoration_with_ssim_sobel_aspp_and_pyramid_pooling():
    weights = weights_of(restoration_net)
    ours, _ = run_both(denoiser_training, weights, rtol=1e-9, atol=1e-11)
    history, params, buffers, restored, per_image, magnitude, angle = ours
    assert restored.shape == (2, 3, 13, 11) and per_image.shape == (2,)
    # SSIM of an image with itself is 1; the Gaussian window sums to 1
    x = OURS.torch.tensor(np.random.default_rng(0).uniform(0, 1, (1, 3, 9, 9)))
    assert SSIM(OURS)(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert create_window(OURS, 7, 1).sum().item() == pytest.approx(1.0, rel=1e-6)
    # Sobel on a horizontal ramp: gx = 8 · slope inside, 0 vertically, the angle 0
    ramp = OURS.torch.tensor(np.tile(np.arange(6.0) * 0.5, (1, 1, 5, 1)))
    mag, ang = sobel(OURS, ramp)
    np.testing.assert_allclose(mag.numpy()[0, 0, :, 1:-1], np.sqrt(16.0 + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(ang.numpy()[0, 0, :, 1:-1], 0.0, atol=1e-12)


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
# Data augmentation as torchvision writes it on tensors (RandomResizedCrop.get_params, an antialiased
# resize, ColorJitter with its randperm order and the HSV round trip of adjust_hue, gaussian_blur,
# RandomErasing), all drawn from the seeded global generator; then DiffAugment (Zhao et al. 2020):
# differentiable colour, translation by meshgrid index math and cutout by masked index assignment, the
# gradient reaching the generated images; CutMix boxes with torch.roll; flip TTA
# ----------------------------------------------------------------------------------------------


def _rgb2hsv(m, img):
    torch = m.torch
    r, g, b = img.unbind(dim=-3)
    maxc = torch.max(img, dim=-3).values
    minc = torch.min(img, dim=-3).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc = (maxc - r) / cr_divisor
    gc = (maxc - g) / cr_divisor
    bc = (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = hr + hg + hb
    h = torch.fmod((h / 6.0 + 1.0), 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv2rgb(m, img):
    torch = m.torch
    h, s, v = img.unbind(dim=-3)
    i = torch.floor(h * 6.0)
    f = (h * 6.0) - i
    i = i.to(dtype=torch.int32)
    p = torch.clamp((v * (1.0 - s)), 0.0, 1.0)
    q = torch.clamp((v * (1.0 - s * f)), 0.0, 1.0)
    t = torch.clamp((v * (1.0 - s * (1.0 - f))), 0.0, 1.0)
    i = i % 6
    mask = i.unsqueeze(dim=-3) == torch.arange(6).view(-1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=-3)
    a2 = torch.stack((t, v, v, q, p, p), dim=-3)
    a3 = torch.stack((p, p, t, v, v, q), dim=-3)
    a4 = torch.stack((a1, a2, a3), dim=-4)
    return torch.einsum("...ijk, ...xijk -> ...xjk", mask.to(dtype=img.dtype), a4)


def rgb_to_grayscale(img):
    r, g, b = img.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)


def _blend(img1, img2, ratio):
    return (ratio * img1 + (1.0 - ratio) * img2).clamp(0, 1.0).to(img1.dtype)


def adjust_hue(m, img, hue_factor):
    img = _rgb2hsv(m, img)
    h, s, v = img.unbind(dim=-3)
    h = (h + hue_factor) % 1.0
    return _hsv2rgb(m, m.torch.stack((h, s, v), dim=-3))


def color_jitter(m, img, brightness=(0.6, 1.4), contrast=(0.6, 1.4), saturation=(0.6, 1.4), hue=(-0.1, 0.1)):
    torch = m.torch
    fn_idx = torch.randperm(4)
    b = float(torch.empty(1).uniform_(brightness[0], brightness[1]))
    c = float(torch.empty(1).uniform_(contrast[0], contrast[1]))
    s = float(torch.empty(1).uniform_(saturation[0], saturation[1]))
    h = float(torch.empty(1).uniform_(hue[0], hue[1]))
    for fn_id in fn_idx:
        if fn_id == 0:
            img = _blend(img, torch.zeros_like(img), b)
        elif fn_id == 1:
            mean = torch.mean(rgb_to_grayscale(img), dim=(-3, -2, -1), keepdim=True)
            img = _blend(img, mean, c)
        elif fn_id == 2:
            img = _blend(img, rgb_to_grayscale(img), s)
        elif fn_id == 3:
            img = adjust_hue(m, img, h)
    return img


def random_resized_crop(m, img, size, scale=(0.3, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    torch, F = m.torch, m.F
    height, width = img.shape[-2:]
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            break
    else:
        i, j, h, w = (height - min(height, width)) // 2, (width - min(height, width)) // 2, height, width
    crop = img[..., i:i + h, j:j + w]
    return F.interpolate(crop.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def gaussian_blur(m, img, kernel_size, sigma):
    torch, F = m.torch, m.F
    ksize_half = (kernel_size - 1) * 0.5
    x = torch.linspace(-ksize_half, ksize_half, steps=kernel_size, dtype=img.dtype)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    kernel1d = pdf / pdf.sum()
    kernel = torch.mm(kernel1d[:, None], kernel1d[None, :])
    kernel = kernel.expand(img.shape[-3], 1, kernel.shape[0], kernel.shape[1])
    padding = [kernel_size // 2] * 4
    out = F.pad(img.unsqueeze(0), padding, mode="reflect")
    return F.conv2d(out, kernel, groups=img.shape[-3])[0]


def random_erasing(m, img, p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3), value=(0.485, 0.456, 0.406)):
    torch = m.torch
    if torch.rand(1) >= p:
        return img
    img_c, img_h, img_w = img.shape
    area = img_h * img_w
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        erase_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        h = int(round(math.sqrt(erase_area * aspect_ratio)))
        w = int(round(math.sqrt(erase_area / aspect_ratio)))
        if not (h < img_h and w < img_w):
            continue
        if value is None:  # (PyTorch's float32 normals of 16 or more are its vector loop's: an ulp from NumPy's)
            v = torch.empty([img_c, h, w], dtype=torch.float32).normal_()
        else:
            v = torch.tensor(value)[:, None, None]
        i = torch.randint(0, img_h - h + 1, size=(1,)).item()
        j = torch.randint(0, img_w - w + 1, size=(1,)).item()
        img = img.clone()
        img[..., i:i + h, j:j + w] = v
        return img
    return img


def rand_brightness(m, x):
    return x + (m.torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) - 0.5)


def rand_saturation(m, x):
    x_mean = x.mean(dim=1, keepdim=True)
    return (x - x_mean) * (m.torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) * 2) + x_mean


def rand_contrast(m, x):
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - x_mean) * (m.torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) + 0.5) + x_mean


def rand_translation(m, x, ratio=0.125):
    torch, F = m.torch, m.F
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1])
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1])
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long), torch.arange(x.size(2), dtype=torch.long),
        torch.arange(x.size(3), dtype=torch.long), indexing="ij")
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def rand_cutout(m, x, ratio=0.5):
    torch = m.torch
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1])
    offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1])
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long), torch.arange(cutout_size[0], dtype=torch.long),
        torch.arange(cutout_size[1], dtype=torch.long), indexing="ij")
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


def diff_augment(m, x):
    for f in (rand_brightness, rand_saturation, rand_contrast, rand_translation, rand_cutout):
        x = f(m, x)
    return x.contiguous()


def small_classifier(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(8, 3))


def augmentation_pipeline(m, weights, dtype="float64"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, small_classifier(m), weights).to(getattr(torch, dtype))
    rng = np.random.default_rng(10)
    images = torch.tensor(rng.uniform(0, 1, (4, 3, 14, 12)).astype(dtype))
    labels = torch.tensor(rng.integers(0, 3, 4))
    torch.manual_seed(0)
    batch = []
    for img in images:
        img = random_resized_crop(m, img, (8, 8))
        if torch.rand(1) < 0.5:
            img = img.flip(-1)
        img = color_jitter(m, img)
        sigma = torch.empty(1).uniform_(0.1, 2.0).item()
        img = gaussian_blur(m, img, 3, sigma)
        img = random_erasing(m, img, p=0.7)
        batch.append(img)
    batch = torch.stack(batch)
    # CutMix: a box from a Beta(1, 1) area, pasted from the batch rolled by one
    lam = float(torch.distributions.Beta(torch.tensor([1.0]), torch.tensor([1.0])).sample())
    H, W = batch.shape[-2:]
    r_x, r_y = torch.randint(W, (1,)), torch.randint(H, (1,))
    r = 0.5 * math.sqrt(1.0 - lam)
    r_w_half, r_h_half = int(r * W), int(r * H)
    x1, y1 = int(torch.clamp(r_x - r_w_half, min=0)), int(torch.clamp(r_y - r_h_half, min=0))
    x2, y2 = int(torch.clamp(r_x + r_w_half, max=W)), int(torch.clamp(r_y + r_h_half, max=H))
    mixed = batch.clone()
    mixed[:, :, y1:y2, x1:x2] = batch.roll(1, 0)[:, :, y1:y2, x1:x2]
    lam_adjusted = float(1.0 - (x2 - x1) * (y2 - y1) / (W * H))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.zero_grad()
    out = model(mixed)
    loss = lam_adjusted * F.cross_entropy(out, labels) + (1 - lam_adjusted) * F.cross_entropy(out, labels.roll(1, 0))
    loss.backward()
    optimizer.step()
    # DiffAugment: the gradient of a discriminator's loss reaches the (generated) images through it
    fake = batch.detach().requires_grad_(True)
    d_out = model(diff_augment(m, fake))
    g_loss = F.softplus(-d_out).mean()
    g_loss.backward()
    # test-time augmentation: the mean of the model over the identity and the two flips
    with torch.no_grad():
        tta = torch.stack([F.softmax(model(t), 1) for t in (batch, batch.flip(3), batch.flip(2))]).mean(0)
        rotated = torch.rot90(batch, 1, dims=(2, 3))
    return batch, lam, (x1, y1, x2, y2), loss, [p.detach() for p in model.parameters()], fake.grad, tta, rotated


def test_augmentation_pipelines():
    weights = weights_of(small_classifier)
    ours, _ = run_both(augmentation_pipeline, weights, rtol=1e-9, atol=1e-10)
    batch, lam, box, loss, params, fake_grad, tta, rotated = ours
    assert batch.shape == (4, 3, 8, 8) and np.abs(fake_grad).sum() > 0
    assert (batch[:, 0] == np.float32(0.485)).any()  # RandomErasing erased somewhere
    x1, y1, x2, y2 = box
    assert x2 > x1 and y2 > y1  # and CutMix pasted a box
    np.testing.assert_allclose(tta.sum(1), 1.0, rtol=1e-12)
    run_both(augmentation_pipeline, weights, dtype="float32", rtol=2e-5, atol=2e-6)
    # the HSV round trip is the identity, a hue shift of 1 too
    rgb = OURS.torch.tensor(np.random.default_rng(3).uniform(0, 1, (2, 3, 4, 5)))
    np.testing.assert_allclose(_hsv2rgb(OURS, _rgb2hsv(OURS, rgb)).numpy(), rgb.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(adjust_hue(OURS, rgb, 1.0).numpy(), rgb.numpy(), rtol=1e-10, atol=1e-12)


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


# ----------------------------------------------------------------------------------------------
# Focused tests of the fixes the programs above led to
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic"])
def test_interpolate_refuses_an_empty_output(T, F, mode):
    """A size of 0 or a scale factor that floors a size to 0 is PyTorch's RuntimeError (chainrule divided by
    zero, or gave an empty tensor for a negative scale factor)."""
    x = T.ones(2, 3, 4, 5)
    raises(RuntimeError, r"Input and output sizes should be greater than 0, but got input \(H: 4, W: 5\) output "
           r"\(H: 0, W: 3\)", F.interpolate, x, size=(0, 3), mode=mode)
    raises(RuntimeError, r"output \(H: 0, W: 0\)", F.interpolate, x, scale_factor=0.1, mode=mode)
    raises(RuntimeError, r"output \(H: -4, W: -5\)", F.interpolate, x, scale_factor=-1.0, mode=mode)
    raises(RuntimeError, r"input \(H: 0, W: 5\) output \(H: 0, W: 10\)", F.interpolate, T.ones(1, 1, 0, 5),
           scale_factor=2.0, mode=mode)
    raises(RuntimeError, r"input \(D: 2, H: 3, W: 4\) output \(D: 0, H: 0, W: 1\)", F.interpolate,
           T.ones(1, 1, 2, 3, 4), scale_factor=0.3, mode="trilinear")
    raises(NotImplementedError, "linear mode needs 3D input", F.interpolate, x, scale_factor=0.1, mode="linear")
    assert F.interpolate(T.ones(1, 1, 3), size=1, mode="linear").shape == (1, 1, 1)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_grid_sample_border_clamps_an_infinite_point_to_the_edge(T, F, mode):
    """'border' padding clamps a grid point at ±inf to the edge pixel, and its gradient in the grid is 0 there (as
    at any clamped point); chainrule gave nan (the clamp's slope 0 times the infinite coordinate)."""
    image = T.arange(12.0, dtype=T.float64).reshape(1, 1, 3, 4).requires_grad_(True)
    grid = T.tensor([[[[math.inf, 0.0], [-math.inf, 0.0], [0.0, math.inf], [0.25, -0.5]]]], dtype=T.float64,
                    requires_grad=True)
    out = F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=True)
    # x at +inf reads the last column, -inf the first; y at +inf the last row; (0.25, -0.5) is the pixel
    # (x, y) = (1.875, 0.5), 4 y + x bilinearly, (2, 0) nearest (y's half rounds to even)
    expected = [7.0, 4.0, 9.5, 3.875] if mode == "bilinear" else [7.0, 4.0, 10.0, 2.0]
    np.testing.assert_allclose(out.detach().numpy().ravel(), expected)
    out.sum().backward()
    assert np.isfinite(grid.grad.numpy()).all() and np.isfinite(image.grad.numpy()).all()
    assert grid.grad[0, 0, 0, 0].item() == 0 and grid.grad[0, 0, 2, 1].item() == 0
    if mode == "bilinear":
        assert grid.grad[0, 0, 0, 1].item() == pytest.approx(4.0)  # d/dy at x = 3: (11 − 3) / 2


@pytest.mark.parametrize("write", ["new[:, 0] = 2 * (new[:, 0] / 3 - 0.5)", "new[:, 0] = new[:, 0].div(3.0)",
                                   "new[:, 0] = 3 / new[:, 0]", "new[:, 0] = new[:, 0] % 1.0",
                                   "new[:, 0] = torch.fmod(new[:, 0], 1.0)"])
def test_a_quotient_by_a_number_may_be_written_in_place(T, write):
    """x / c, c / x, x % c and fmod(x, c) for a Python number c keep nothing x's in-place writes would change (PyTorch's
    nodes keep the number, or 1/x), so VoxelMorph's new_locs[:, i] = 2 * (new_locs[:, i] / (n − 1) − 0.5) trains;
    chainrule refused its backward ("modified by an inplace operation")."""
    torch = T
    x = torch.tensor([[0.5, 1.5], [2.5, 4.0]], dtype=torch.float64, requires_grad=True)
    new = x * 1.0
    exec(write)
    new.sum().backward()
    column = {"/ 3": 2 / 3, "div": 1 / 3, "3 /": None, "%": 1.0, "fmod": 1.0}
    slope = next(v for k, v in column.items() if k in write)
    expected = -3 / np.array([0.5, 2.5]) ** 2 if slope is None else [slope, slope]
    np.testing.assert_allclose(x.grad.numpy()[:, 0], expected, rtol=1e-15)
    np.testing.assert_allclose(x.grad.numpy()[:, 1], [1.0, 1.0])


def test_a_number_over_a_tensor_rounds_as_pytorch(T):
    """c / x is PyTorch's x.reciprocal() * c (Tensor.__rtruediv__): rounded twice, differentiated as a product
    (MulBackward0), with the reciprocal's derivative -g · (y · y); 3 / 1.7 in float32 is an ulp from the quotient
    rounded once."""
    x = T.tensor([1.7, 0.3, 7.0], requires_grad=True)
    y = 3 / x
    assert y.grad_fn.name() == "MulBackward0"
    reciprocal = np.float32(1) / np.float32([1.7, 0.3, 7.0])
    np.testing.assert_array_equal(y.detach().numpy(), reciprocal * np.float32(3))
    y.backward(T.ones(3))
    np.testing.assert_array_equal(x.grad.numpy(), -np.float32(3) * (reciprocal * reciprocal))
    z = x.detach().requires_grad_(True) / 3
    assert z.grad_fn.name() == "DivBackward0" and len(z.grad_fn.next_functions) == 2
    np.testing.assert_array_equal(z.detach().numpy(), np.float32([1.7, 0.3, 7.0]) / np.float32(3))
    r = x.detach().requires_grad_(True) % 2.0
    assert r.grad_fn.name() == "RemainderBackward0" and len(r.grad_fn.next_functions) == 1


@pytest.mark.parametrize("write", ["new[:, 0] = new[:, 0].max(-1, keepdim=True)[0].expand(-1, 3)",
                                   "new[:, 0] = new[:, 0].sort(-1, descending=True)[0]",
                                   "new[:, 0] = new[:, 0].topk(3, -1)[0]",
                                   "new[:, 0] = F.pad(new[:, 0, 1:], (1, 0), value=7.0)"])
def test_selections_and_padding_may_be_written_in_place(T, F, write):
    """max over a dim, sort, topk and constant padding need only the indices or the padding for backward (PyTorch's
    nodes keep those, not the input), so their input may be written in place afterwards; chainrule kept the input
    and refused the backward."""
    torch = T
    x = torch.tensor([[[0.5, 2.0, 1.0], [3.0, 0.1, 0.2]], [[1.5, 0.3, 0.9], [0.4, 0.6, 0.8]]], dtype=torch.float64,
                     requires_grad=True)
    new = x * 1.0
    exec(write)
    (new * torch.arange(12.0, dtype=torch.float64).view(2, 2, 3)).sum().backward()
    weights = np.arange(12.0).reshape(2, 2, 3)
    expected = weights.copy()
    if "max" in write:
        expected[:, 0] = 0
        expected[0, 0, 1], expected[1, 0, 0] = weights[0, 0].sum(), weights[1, 0].sum()
    elif "pad" in write:
        expected[:, 0, 0] = 0  # the padded position
        expected[:, 0, 1:] = weights[:, 0, 1:]
    else:  # sorted descending: position k of the output came from the k-th largest
        order = np.argsort(-x.detach().numpy()[:, 0], axis=-1)
        expected[:, 0] = 0
        for b in range(2):
            expected[b, 0, order[b]] = weights[b, 0]
    np.testing.assert_allclose(x.grad.numpy(), expected)


def test_an_embedding_table_may_change_in_place_before_backward(T, nn):
    """F.embedding's backward needs the indices and the table's shape only (PyTorch's node keeps those): the table may
    be updated in place (an optimizer step) before a retained graph's second backward."""
    T.manual_seed(0)
    emb = nn.Embedding(5, 3, padding_idx=0).double()
    idx = T.tensor([[0, 1, 2], [2, 3, 0]])
    loss = (emb(idx) * T.arange(18.0, dtype=T.float64).view(2, 3, 3)).sum()
    loss.backward(retain_graph=True)
    first = emb.weight.grad.clone()
    with T.no_grad():
        emb.weight.mul_(0.5)
    emb.weight.grad = None
    loss.backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy(), first.numpy())
    expected = np.zeros((5, 3))
    for (b, k), row in np.ndenumerate(idx.numpy()):
        if row:
            expected[row] += np.arange(18.0).reshape(2, 3, 3)[b, k]
    np.testing.assert_array_equal(first.numpy(), expected)


def test_denormalising_in_place_through_a_constant_tensor():
    """img[:, c] = img[:, c] * std[c] + mean[c] on an image that needs a gradient (an adversarial example shown in
    pixel space): PyTorch's MulBackward0 keeps std[c] only."""
    torch = OURS.torch
    x = torch.tensor(np.random.default_rng(0).uniform(-1, 1, (2, 3, 4, 4)), requires_grad=True)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)
    img = x * 1.0
    for c in range(3):
        img[:, c] = img[:, c] * std[c] + mean[c]
    img.clamp(0, 1).sum().backward()
    inside = (x.detach().numpy() * std.numpy()[:, None, None] + mean.numpy()[:, None, None])
    inside = (inside > 0) & (inside < 1)
    np.testing.assert_allclose(x.grad.numpy(), inside * std.numpy()[:, None, None])


def test_conv_transpose_output_size_ranges_over_the_stride(T, nn):
    """forward(input, output_size) reaches the sizes from the smallest to smallest + stride − 1, as PyTorch's
    _output_padding: with stride 1 only the smallest, whatever the dilation (chainrule allowed up to the dilation)."""
    T.manual_seed(0)
    up = nn.ConvTranspose2d(2, 3, 3, stride=1, dilation=2)
    x = T.ones(1, 2, 5, 6)
    assert tuple(up(x, output_size=[9, 10]).shape) == (1, 3, 9, 10)
    raises(ValueError, r"requested an output size of \[10, 11\], but valid sizes range from", up, x,
           output_size=[10, 11])
    strided = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, dilation=3)
    assert tuple(strided(x, output_size=(14, 15)).shape) == (1, 3, 14, 15)  # from (13, 15) to (14, 16)
    raises(ValueError, "valid sizes range from", strided, x, output_size=(15, 15))
