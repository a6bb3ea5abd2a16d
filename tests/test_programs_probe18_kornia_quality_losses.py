# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: piq's SSIM / MS-SSIM / PSNR / GMSD / total variation, kornia's SSIM and
an LPIPS-like distance restoring an image."""

import numpy as np

from .probe18_kornia_common import compute_padding, filter2d, gaussian
from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# Image-quality losses as piq and kornia.losses write them: piq's SSIM (a Gaussian kernel by meshgrid,
# grouped conv2d, downsampling by avg_pool2d to about 256 pixels, the complex-free path) and MS-SSIM
# (relu of the cs terms, a weighted product over scales with odd-size avg_pool2d padding), PSNR by log10,
# GMSD (Prewitt gradients on a luminance image, the deviation of the similarity map), total variation in
# its three norms; kornia's SSIM loss (filter2d with 'valid' and 'same' padding, clamp of the map); an
# LPIPS-like perceptual distance (unit-normalised features, 1x1 linear heads with Dropout, spatial
# averages); then an image restored from a degraded copy by Adam through all of them
# ----------------------------------------------------------------------------------------------


def gaussian_filter_piq(m, kernel_size, sigma, dtype):
    torch = m.torch
    coords = torch.arange(kernel_size, dtype=dtype)
    coords -= (kernel_size - 1) / 2.0
    g = coords ** 2
    g = (-(g.unsqueeze(0) + g.unsqueeze(1)) / (2 * sigma ** 2)).exp()
    g /= g.sum()
    return g.unsqueeze(0)


def ssim_per_channel(m, x, y, kernel, data_range=1.0, k1=0.01, k2=0.03):
    torch, F = m.torch, m.F
    if x.size(-1) < kernel.size(-1) or x.size(-2) < kernel.size(-2):
        raise ValueError("Kernel size can't be greater than actual input size.")
    c1 = k1 ** 2
    c2 = k2 ** 2
    n_channels = x.size(1)
    mu_x = F.conv2d(x, weight=kernel, stride=1, padding=0, groups=n_channels)
    mu_y = F.conv2d(y, weight=kernel, stride=1, padding=0, groups=n_channels)
    mu_xx = mu_x ** 2
    mu_yy = mu_y ** 2
    mu_xy = mu_x * mu_y
    sigma_xx = F.conv2d(x ** 2, weight=kernel, stride=1, padding=0, groups=n_channels) - mu_xx
    sigma_yy = F.conv2d(y ** 2, weight=kernel, stride=1, padding=0, groups=n_channels) - mu_yy
    sigma_xy = F.conv2d(x * y, weight=kernel, stride=1, padding=0, groups=n_channels) - mu_xy
    cs = (2.0 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    ss = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs
    ssim_val = ss.mean(dim=(-1, -2))
    cs = cs.mean(dim=(-1, -2))
    return ssim_val, cs


def ssim_piq(m, x, y, kernel_size=5, kernel_sigma=1.5, data_range=1.0, reduction="mean", full=False,
             downsample=True, k1=0.01, k2=0.03):
    torch, F = m.torch, m.F
    x = x / float(data_range)
    y = y / float(data_range)
    f = max(1, round(min(x.size()[-2:]) / 256))
    if (f > 1) and downsample:
        x = F.avg_pool2d(x, kernel_size=f)
        y = F.avg_pool2d(y, kernel_size=f)
    kernel = gaussian_filter_piq(m, kernel_size, kernel_sigma, y.dtype).repeat(x.size(1), 1, 1, 1).to(y)
    ssim_map, cs_map = ssim_per_channel(m, x, y, kernel, data_range=1.0, k1=k1, k2=k2)
    ssim_val = ssim_map.mean(1)
    cs = cs_map.mean(1)
    if reduction == "mean":
        ssim_val, cs = ssim_val.mean(), cs.mean()
    return [ssim_val, cs] if full else ssim_val


def multi_scale_ssim(m, x, y, kernel, scale_weights, k1=0.01, k2=0.03):
    torch, F = m.torch, m.F
    levels = scale_weights.size(0)
    min_size = (kernel.size(-1) - 1) * 2 ** (levels - 1) + 1
    if x.size(-1) < min_size or x.size(-2) < min_size:
        raise ValueError(f"Invalid size of the input images. Provided image of size {x.size()}")
    mcs = []
    ssim_val = None
    for iteration in range(levels):
        if iteration > 0:
            padding = max(x.shape[2] % 2, x.shape[3] % 2)
            x = F.pad(x, pad=[padding, 0, padding, 0], mode="replicate")
            y = F.pad(y, pad=[padding, 0, padding, 0], mode="replicate")
            x = F.avg_pool2d(x, kernel_size=2, padding=0)
            y = F.avg_pool2d(y, kernel_size=2, padding=0)
        ssim_val, cs = ssim_per_channel(m, x, y, kernel, k1=k1, k2=k2)
        mcs.append(cs)
    mcs_ssim = torch.relu(torch.stack(mcs[:-1] + [ssim_val], dim=0))
    msssim_val = torch.prod((mcs_ssim ** scale_weights.view(-1, 1, 1)), dim=0).mean(1)
    return msssim_val


def psnr(m, x, y, data_range=1.0, reduction="mean", convert_to_greyscale=False):
    torch = m.torch
    EPS = 1e-8
    x = x / float(data_range)
    y = y / float(data_range)
    if (x.size(1) == 3) and convert_to_greyscale:
        rgb_to_grey = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, -1, 1, 1)
        x = torch.sum(x * rgb_to_grey, dim=1, keepdim=True)
        y = torch.sum(y * rgb_to_grey, dim=1, keepdim=True)
    mse = torch.mean((x - y) ** 2, dim=[1, 2, 3])
    score = -10 * torch.log10(mse + EPS)
    return score.mean() if reduction == "mean" else score


def gmsd_piq(m, x, y, t=170 / (255.0 ** 2), alpha=0.0):
    torch, F = m.torch, m.F
    if x.size(1) == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * weights).sum(1, keepdim=True)
        y = (y * weights).sum(1, keepdim=True)
    x = F.avg_pool2d(x, kernel_size=2, stride=2, padding=0)
    y = F.avg_pool2d(y, kernel_size=2, stride=2, padding=0)
    prewitt = torch.tensor([[[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]], dtype=x.dtype) / 3
    kernels = torch.stack([prewitt, prewitt.transpose(-1, -2)])
    padding = kernels.size(-1) // 2
    x_grad = F.conv2d(x, kernels, padding=padding)
    x_grad = torch.sqrt(torch.sum(x_grad ** 2, dim=-3, keepdim=True))
    y_grad = F.conv2d(y, kernels, padding=padding)
    y_grad = torch.sqrt(torch.sum(y_grad ** 2, dim=-3, keepdim=True))
    gms = (2 * x_grad * y_grad + t) / (x_grad ** 2 + y_grad ** 2 + t)
    return torch.std(gms.view(gms.shape[0], -1), dim=1, unbiased=True)


def total_variation(m, x, reduction="mean", norm_type="l2"):
    torch = m.torch
    if norm_type == "l1":
        w_variance = torch.sum(torch.abs(x[:, :, :, 1:] - x[:, :, :, :-1]), dim=[1, 2, 3])
        h_variance = torch.sum(torch.abs(x[:, :, 1:, :] - x[:, :, :-1, :]), dim=[1, 2, 3])
        score = h_variance + w_variance
    elif norm_type == "l2":
        w_variance = torch.sum(torch.pow(x[:, :, :, 1:] - x[:, :, :, :-1], 2), dim=[1, 2, 3])
        h_variance = torch.sum(torch.pow(x[:, :, 1:, :] - x[:, :, :-1, :], 2), dim=[1, 2, 3])
        score = torch.sqrt(h_variance + w_variance)
    else:
        w_variance = torch.sum(torch.pow(x[:, :, :, 1:] - x[:, :, :, :-1], 2), dim=[1, 2, 3])
        h_variance = torch.sum(torch.pow(x[:, :, 1:, :] - x[:, :, :-1, :], 2), dim=[1, 2, 3])
        score = h_variance + w_variance
    return score.mean() if reduction == "mean" else score


def kornia_ssim(m, img1, img2, window_size, max_val=1.0, eps=1e-12, padding="same"):
    torch = m.torch
    C1 = (0.01 * max_val) ** 2
    C2 = (0.03 * max_val) ** 2
    sigma = torch.tensor([[1.5, 1.5]], dtype=img1.dtype)
    ky = gaussian(m, window_size, sigma[:, 0].view(1, 1), img1.dtype)
    kx = gaussian(m, window_size, sigma[:, 1].view(1, 1), img1.dtype)
    kernel = ky.unsqueeze(-1) * kx.unsqueeze(-2)
    mu1 = filter2d(m, img1, kernel, padding=padding)
    mu2 = filter2d(m, img2, kernel, padding=padding)
    cropping_shape = []
    if padding == "same":
        pad = compute_padding([window_size, window_size])
        cropping_shape = pad
    mu1_sq = mu1 ** 2
    mu2_sq = mu2 ** 2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = filter2d(m, img1 ** 2, kernel, padding=padding) - mu1_sq
    sigma2_sq = filter2d(m, img2 ** 2, kernel, padding=padding) - mu2_sq
    sigma12 = filter2d(m, img1 * img2, kernel, padding=padding) - mu1_mu2
    num = (2.0 * mu1_mu2 + C1) * (2.0 * sigma12 + C2)
    den = (mu1_sq + mu2_sq + C1) * (sigma1_sq + sigma2_sq + C2)
    ssim_map = num / (den + eps)
    if padding == "same":
        ssim_map = ssim_map[..., cropping_shape[2]:-cropping_shape[3], cropping_shape[0]:-cropping_shape[1]]
    return ssim_map


def lpips_like(m):
    nn = m.nn

    class NetLinLayer(nn.Module):
        def __init__(self, chn_in, chn_out=1, use_dropout=True):
            super().__init__()
            layers = [nn.Dropout()] if use_dropout else []
            layers += [nn.Conv2d(chn_in, chn_out, 1, stride=1, padding=0, bias=False)]
            self.model = nn.Sequential(*layers)

        def forward(self, x):
            return self.model(x)

    class LPIPS(nn.Module):
        def __init__(self):
            super().__init__()
            self.slice1 = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=False))
            self.slice2 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
            self.lins = nn.ModuleList([NetLinLayer(6), NetLinLayer(8)])
            self.register_buffer("shift", m.torch.tensor([-.030, -.088, -.188])[None, :, None, None])
            self.register_buffer("scale", m.torch.tensor([.458, .448, .450])[None, :, None, None])

        def forward(self, in0, in1, normalize=True):
            if normalize:
                in0, in1 = 2 * in0 - 1, 2 * in1 - 1
            in0, in1 = (in0 - self.shift) / self.scale, (in1 - self.shift) / self.scale
            f0, f1 = [], []
            for x, feats in ((in0, f0), (in1, f1)):
                h = self.slice1(x)
                feats.append(h)
                feats.append(self.slice2(h))
            val = 0
            for kk in range(2):
                n0 = f0[kk] / (m.torch.sqrt(m.torch.sum(f0[kk] ** 2, dim=1, keepdim=True)) + 1e-10)
                n1 = f1[kk] / (m.torch.sqrt(m.torch.sum(f1[kk] ** 2, dim=1, keepdim=True)) + 1e-10)
                diff = (n0 - n1) ** 2
                val = val + self.lins[kk](diff).mean([2, 3], keepdim=True)
            return val

    return LPIPS()


def restoration(m, weights, clean_array, noisy_array, steps=6):
    torch, F = m.torch, m.F
    net = lpips_like(m)
    net.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    net = net.double().eval().requires_grad_(False)
    clean, noisy = torch.tensor(clean_array), torch.tensor(noisy_array)
    x = noisy.clone().requires_grad_(True)
    optimizer = m.optim.Adam([x], lr=0.01)
    kernel = gaussian_filter_piq(m, 3, 1.5, x.dtype).repeat(3, 1, 1, 1)
    scale_weights = torch.tensor([0.3, 0.3, 0.4], dtype=x.dtype)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        terms = {
            "ssim": 1 - ssim_piq(m, x, clean, kernel_size=5),
            "ms_ssim": 1 - multi_scale_ssim(m, x, clean, kernel, scale_weights).mean(),
            "psnr": -psnr(m, x.clamp(0, 1), clean) / 40,
            "gmsd": gmsd_piq(m, x, clean).mean(),
            "tv": sum(total_variation(m, x, norm_type=n) for n in ("l1", "l2", "l2_squared")) * 1e-3,
            "kornia_ssim": (1 - kornia_ssim(m, x, clean, 5)).clamp(0, 1).mean() / 2,
            "kornia_ssim_valid": (1 - kornia_ssim(m, x, clean, 3, padding="valid")).mean() / 2,
            "lpips": net(x, clean).mean(),
        }
        loss = sum(terms.values())
        loss.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in terms.items()})
    return history, x.detach()


def test_piq_and_kornia_losses_restore_an_image():
    OURS.torch.manual_seed(0)
    weights = {k: v.numpy().copy() for k, v in lpips_like(OURS).state_dict().items()}
    yy, xx = np.mgrid[0:14, 0:15] / 14.0
    clean = np.stack([0.5 + 0.4 * np.sin(3 * xx + c) * np.cos(2 * yy) for c in range(3)])[None].repeat(2, 0)
    noisy = np.clip(clean + 0.1 * np.random.default_rng(25).standard_normal(clean.shape), 0, 1)
    ours, _ = run_both(restoration, weights, clean, noisy, rtol=1e-8, atol=1e-10)
    history, restored = ours
    total = [sum(h.values()) for h in history]
    assert total[-1] < total[0]
    # by hand: the PSNR of the noisy image from its MSE
    mse = ((noisy - clean) ** 2).mean((1, 2, 3))
    np.testing.assert_allclose(psnr(OURS, OURS.torch.tensor(noisy), OURS.torch.tensor(clean),
                                    reduction="none").numpy(), -10 * np.log10(mse + 1e-8), rtol=1e-10)
