# ruff: noqa: B007, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Image-processing and dense-prediction programs (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data (float64 mostly, to about 1e-9), comparing values and gradients, and checked
by hand where they run alone. Style and restoration: AdaIN style transfer (forward hooks, ``calc_mean_std``,
ReflectionPad2d and nearest Upsample) and Gatys-style image optimisation (einsum Gram matrices, total variation, Adam
and L-BFGS with strong Wolfe); ESPCN (PixelShuffle with ICNR, PixelUnshuffle, RGB/YCbCr by einsum, antialiased
bicubic downscaling, PSNR); restoration by SSIM and MS-SSIM (grouped Gaussian ``conv2d``), Sobel gradients,
depthwise-separable and dilated convolutions (ASPP) and pyramid pooling to odd sizes."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

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
