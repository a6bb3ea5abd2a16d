# ruff: noqa: E501, E702, F841  (the programs are kept as their authors write them)
"""Image synthesis by optimisation and image-to-image networks, run as tests/probe25_synthesis_common.py says. GAN
pieces and image losses: WGAN-GP and R1 penalties by ``autograd.grad(create_graph=True)``; StyleGAN2's modulated
convolution, noise, upfirdn by a grouped transposed convolution, minibatch std and path-length penalty; a perceptual
loss over namedtuple features; SSIM."""

import collections
import math

import numpy as np

from .probe25_synthesis_common import close
from .pytorch_programs import run_both


def gp(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(6)
    D = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 4 * 4, 1))
    real = torch.randn(3, 3, 8, 8); fake = torch.randn(3, 3, 8, 8, requires_grad=True)
    def cal_gp(netD, real_data, fake_data, type='mixed', constant=1.0, lambda_gp=10.0):
        alpha = torch.rand(real_data.shape[0], 1)
        alpha = alpha.expand(real_data.shape[0], real_data.nelement() // real_data.shape[0]).contiguous().view(*real_data.shape)
        interpolatesv = alpha * real_data + ((1 - alpha) * fake_data)
        interpolatesv.requires_grad_(True)
        disc_interpolates = netD(interpolatesv)
        gradients = torch.autograd.grad(outputs=disc_interpolates, inputs=interpolatesv,
                                        grad_outputs=torch.ones(disc_interpolates.size()),
                                        create_graph=True, retain_graph=True, only_inputs=True)
        gradients = gradients[0].view(real_data.size(0), -1)
        gradient_penalty = (((gradients + 1e-16).norm(2, dim=1) - constant) ** 2).mean() * lambda_gp
        return gradient_penalty, gradients
    pen, grads = cal_gp(D, real, fake.detach())
    pen.backward()
    g1 = D[0].weight.grad.clone()
    # R1 penalty
    real.requires_grad = True
    out = D(real)
    grad_real, = torch.autograd.grad(outputs=out.sum(), inputs=real, create_graph=True)
    r1 = grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()
    D.zero_grad(); r1.backward()
    return dict(pen=pen, grads=grads, g1=g1, r1=r1, g2=D[3].weight.grad, gr=real.grad)


def stylegan(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    class EqualLinear(nn.Module):
        def __init__(self, i, o, bias_init=0, lr_mul=1):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(o, i).div_(lr_mul))
            self.bias = nn.Parameter(torch.zeros(o).fill_(bias_init))
            self.scale = (1 / math.sqrt(i)) * lr_mul; self.lr_mul = lr_mul
        def forward(self, x):
            return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)
    class ModulatedConv2d(nn.Module):
        def __init__(self, cin, cout, k, style_dim, demodulate=True):
            super().__init__()
            self.eps = 1e-8; self.k = k; self.cin = cin; self.cout = cout
            self.scale = 1 / math.sqrt(cin * k ** 2); self.padding = k // 2
            self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k))
            self.modulation = EqualLinear(style_dim, cin, bias_init=1)
            self.demodulate = demodulate
        def forward(self, input, style):
            batch, in_channel, height, width = input.shape
            style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
            weight = self.scale * self.weight * style
            if self.demodulate:
                demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
                weight = weight * demod.view(batch, self.cout, 1, 1, 1)
            weight = weight.view(batch * self.cout, in_channel, self.k, self.k)
            input = input.view(1, batch * in_channel, height, width)
            out = F.conv2d(input, weight, padding=self.padding, groups=batch)
            _, _, height, width = out.shape
            return out.view(batch, self.cout, height, width)
    class NoiseInjection(nn.Module):
        def __init__(self):
            super().__init__(); self.weight = nn.Parameter(torch.zeros(1))
        def forward(self, image, noise=None):
            if noise is None:
                batch, _, height, width = image.shape
                noise = image.new_empty(batch, 1, height, width).normal_()
            return image + self.weight * noise
    def fused_leaky_relu(x, bias, negative_slope=0.2, scale=2 ** 0.5):
        rest_dim = [1] * (x.ndim - bias.ndim - 1)
        return F.leaky_relu(x + bias.view(1, bias.shape[0], *rest_dim), negative_slope=negative_slope) * scale
    def upfirdn_up2(x, k):
        b, c, h, w = x.shape
        kk = torch.tensor(k, dtype=torch.float32); kk = kk[None, :] * kk[:, None]; kk = kk / kk.sum() * 4
        w_ = kk.view(1, 1, 4, 4).repeat(c, 1, 1, 1)
        return F.conv_transpose2d(x, w_, stride=2, padding=1, groups=c)
    def minibatch_std(out, group=2):
        batch, channel, height, width = out.shape
        group = min(batch, group)
        stddev = out.view(group, -1, 1, channel, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
        stddev = stddev.mean([2, 3, 4], keepdims=True).squeeze(2)
        stddev = stddev.repeat(group, 1, height, width)
        return torch.cat([out, stddev], 1)
    mapping = nn.Sequential(*[EqualLinear(8, 8, lr_mul=0.01) for _ in range(2)])
    conv = ModulatedConv2d(4, 3, 3, 8); noise = NoiseInjection(); act_bias = nn.Parameter(torch.zeros(3))
    with torch.no_grad():
        noise.weight.fill_(0.1)
    z = torch.randn(2, 8)
    latents = mapping(z / torch.sqrt(torch.mean(z ** 2, dim=1, keepdim=True) + 1e-8))
    latents.retain_grad()
    x = torch.randn(2, 4, 5, 5)
    img = fused_leaky_relu(noise(conv(x, latents)), act_bias)
    img = upfirdn_up2(img, [1, 3, 3, 1])
    d = minibatch_std(img)
    # path length penalty
    pl_noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    grad, = torch.autograd.grad(outputs=(img * pl_noise).sum(), inputs=latents, create_graph=True)
    path_lengths = torch.sqrt(grad.pow(2).sum(1))
    mean_path_length = torch.tensor(0.)
    path_mean = mean_path_length + 0.01 * (path_lengths.mean() - mean_path_length)
    path_penalty = (path_lengths - path_mean).pow(2).mean()
    (path_penalty + d.mean()).backward()
    # EMA via lerp_
    ema = [p.detach().clone() for p in mapping.parameters()]
    for pe, p in zip(ema, mapping.parameters()):
        pe.lerp_(p.detach() * 1.1, 1 - 0.999)
    # non-saturating loss + r1 with softplus
    l = F.softplus(-d.mean((1, 2, 3))).mean()
    return dict(img=img, d=d, pp=path_penalty, gw=conv.weight.grad, gm=mapping[0].weight.grad, gn=noise.weight.grad, ema=ema, l=l, lg=latents.grad)


def perceptual(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    class Vgg(nn.Module):
        def __init__(self, requires_grad=False):
            super().__init__()
            feats = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2, 2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True))
            self.slice1 = nn.Sequential(); self.slice2 = nn.Sequential()
            for x in range(4):
                self.slice1.add_module(str(x), feats[x])
            for x in range(4, 7):
                self.slice2.add_module(str(x), feats[x])
            if not requires_grad:
                for param in self.parameters():
                    param.requires_grad = False
        def forward(self, X):
            h = self.slice1(X); h_relu1_2 = h
            h = self.slice2(h); h_relu2_2 = h
            VggOutputs = collections.namedtuple("VggOutputs", ['relu1_2', 'relu2_2'])
            return VggOutputs(h_relu1_2, h_relu2_2)
    def normalize_batch(batch):
        mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
        std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
        batch = batch.div_(255.0)
        return (batch - mean) / std
    def gram_matrix(y):
        (b, ch, h, w) = y.size()
        features = y.view(b, ch, w * h)
        return features.bmm(features.transpose(1, 2)) / (ch * h * w)
    vgg = Vgg()
    style = torch.rand(1, 3, 8, 8) * 255
    features_style = vgg(normalize_batch(style))
    gram_style = [gram_matrix(y) for y in features_style]
    x = torch.rand(2, 3, 8, 8) * 255
    y = (x + torch.randn_like(x)).requires_grad_()
    yn = normalize_batch(y.clone()); xn = normalize_batch(x.clone())
    features_y = vgg(yn); features_x = vgg(xn)
    mse = nn.MSELoss()
    content_loss = 1e5 * mse(features_y.relu2_2, features_x.relu2_2)
    style_loss = 0.
    for ft_y, gm_s in zip(features_y, gram_style):
        gm_y = gram_matrix(ft_y)
        style_loss += mse(gm_y, gm_s[:2, :, :] if gm_s.shape[0] > 1 else gm_s.expand_as(gm_y))
    total = content_loss + 1e10 * style_loss
    total.backward()
    return dict(c=content_loss, s=style_loss, g=y.grad, st=style, f=features_y._fields)


def ssim_prog(m):
    torch, F = m.torch, m.F
    torch.manual_seed(2)
    def gaussian(window_size, sigma):
        gauss = torch.Tensor([math.exp(-(x - window_size // 2) ** 2 / float(2 * sigma ** 2)) for x in range(window_size)])
        return gauss / gauss.sum()
    def create_window(window_size, channel):
        _1D_window = gaussian(window_size, 1.5).unsqueeze(1)
        _2D_window = _1D_window.mm(_1D_window.t()).float().unsqueeze(0).unsqueeze(0)
        return torch.autograd.Variable(_2D_window.expand(channel, 1, window_size, window_size).contiguous())
    def ssim(img1, img2, window_size=5):
        channel = img1.size(1); window = create_window(window_size, channel).type_as(img1)
        mu1 = F.conv2d(img1, window, padding=window_size // 2, groups=channel)
        mu2 = F.conv2d(img2, window, padding=window_size // 2, groups=channel)
        mu1_sq = mu1.pow(2); mu2_sq = mu2.pow(2); mu1_mu2 = mu1 * mu2
        sigma1_sq = F.conv2d(img1 * img1, window, padding=window_size // 2, groups=channel) - mu1_sq
        sigma2_sq = F.conv2d(img2 * img2, window, padding=window_size // 2, groups=channel) - mu2_sq
        sigma12 = F.conv2d(img1 * img2, window, padding=window_size // 2, groups=channel) - mu1_mu2
        C1 = 0.01 ** 2; C2 = 0.03 ** 2
        ssim_map = ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)) / ((mu1_sq + mu2_sq + C1) * (sigma1_sq + sigma2_sq + C2))
        return ssim_map.mean()
    a = torch.rand(1, 3, 8, 8, requires_grad=True); b = (a.detach() + 0.1 * torch.randn(1, 3, 8, 8)).clamp(0, 1)
    s = ssim(a, b); (1 - s).backward()
    s_same = ssim(b, b)
    dbl = ssim(a.double(), b.double())
    return dict(s=s, g=a.grad, same=s_same, dbl=dbl, dt=str(dbl.dtype).replace('torch.', ''))


def test_gradient_penalties():
    ours, _ = run_both(gp, rtol=1e-4, atol=1e-6)
    g = ours["grads"].astype(np.float64)
    assert g.shape == (3, 192)
    close(ours["pen"], 10 * ((np.linalg.norm(g + 1e-16, axis=1) - 1) ** 2).mean(), rtol=1e-5)
    close(ours["pen"], 6.791715, rtol=1e-5)
    close(ours["r1"], 0.0345736, rtol=1e-4)
    assert ours["gr"] is None or np.isfinite(ours["gr"]).all()


def test_stylegan2_pieces():
    ours, _ = run_both(stylegan, rtol=1e-4, atol=1e-6)
    assert ours["img"].shape == (2, 3, 10, 10) and ours["d"].shape == (2, 4, 10, 10)
    assert np.ptp(ours["d"][:, 3]) < 1e-6  # the minibatch standard deviation is one number, repeated
    close(ours["pp"], 0.0744834, rtol=1e-4)
    close(ours["l"], 0.5195649, rtol=1e-5)
    assert all(np.isfinite(ours[k]).all() for k in ("gw", "gm", "gn", "lg"))


def test_perceptual_loss_namedtuple_features():
    ours, _ = run_both(perceptual, rtol=1e-4, atol=1e-4)  # (gradients of size 60, summed with cancellation)
    assert ours["f"] == ("relu1_2", "relu2_2")
    assert 0 <= ours["st"].min() and ours["st"].max() <= 1  # normalize_batch divided the style image in place
    close(ours["c"], 0.1509813, rtol=1e-4)
    close(ours["s"], 2.266904e-06, rtol=1e-4)


def test_ssim():
    ours, _ = run_both(ssim_prog)
    assert ours["same"] == 1.0 and ours["dt"] == "float64"
    close(ours["s"], 0.9605042, rtol=1e-5)
    close(ours["dbl"], ours["s"], rtol=1e-6)
