# ruff: noqa: B006, B007, E501, E702, F841  (the programs are kept as their authors wrote them)
"""Generative adversarial networks, run as tests/probe28_gan_common.py says. Generator architectures and averaging:
SAGAN (self-attention by ``bmm``, a ``gamma`` gate), a generator EMA by ``deepcopy`` and ``mul_().add_()``,
``AveragedModel`` with EMA functions, ``_foreach_lerp_``, the truncation trick; StyleGAN's modulated convolution as a
grouped convolution with per-sample weights and equalised learning rates; DiffAugment; ProGAN's pixel norm, minibatch
standard deviation and fade-in; BigGAN's conditional batch norm and orthogonal regularisation."""

import copy

import numpy as np

from .probe28_gan_common import LITERALS
from .pytorch_programs import run_both


def sagan_ema(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    SN = nn.utils.spectral_norm
    torch.manual_seed(5)
    class SelfAttn(nn.Module):
        def __init__(self, in_dim):
            super().__init__()
            self.query_conv = SN(nn.Conv2d(in_dim, in_dim // 2, 1))
            self.key_conv = SN(nn.Conv2d(in_dim, in_dim // 2, 1))
            self.value_conv = nn.utils.parametrizations.spectral_norm(nn.Conv2d(in_dim, in_dim, 1))
            self.gamma = nn.Parameter(torch.zeros(1))
            self.softmax = nn.Softmax(dim=-1)
        def forward(self, x):
            B, C, W, H = x.size()
            q = self.query_conv(x).view(B, -1, W * H).permute(0, 2, 1)
            k = self.key_conv(x).view(B, -1, W * H)
            energy = torch.bmm(q, k)
            attention = self.softmax(energy)
            v = self.value_conv(x).view(B, -1, W * H)
            out = torch.bmm(v, attention.permute(0, 2, 1))
            out = out.view(B, C, W, H)
            return self.gamma * out + x, attention
    class Gen(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Sequential(SN(nn.ConvTranspose2d(6, 8, 4, bias=False)), nn.BatchNorm2d(8), nn.ReLU())
            self.attn = SelfAttn(8)
            self.last = nn.Sequential(nn.ConvTranspose2d(8, 1, 4, 2, 1), nn.Tanh())
        def forward(self, z):
            h = self.l1(z.view(z.size(0), z.size(1), 1, 1))
            h, p = self.attn(h)
            return self.last(h), p
    G = Gen()
    G_ema = copy.deepcopy(G).eval()
    for p in G_ema.parameters():
        p.requires_grad_(False)
    D = nn.Sequential(SN(nn.Conv2d(1, 4, 4, 2, 1)), nn.LeakyReLU(0.1), SN(nn.Conv2d(4, 1, 4)))
    optG = optim.Adam(filter(lambda p: p.requires_grad, G.parameters()), 1e-3, [0.0, 0.9])
    optD = optim.Adam(D.parameters(), 4e-3, [0.0, 0.9])
    real = torch.rand(4, 1, 8, 8)
    hist = []
    def accumulate(model1, model2, decay=0.9):
        par1 = dict(model1.named_parameters()); par2 = dict(model2.named_parameters())
        for k in par1.keys():
            par1[k].data.mul_(decay).add_(par2[k].data, alpha=1 - decay)
    for i in range(3):
        z = torch.randn(4, 6)
        fake, _ = G(z)
        d_loss = F.relu(1.0 - D(real)).mean() + F.relu(1.0 + D(fake.detach())).mean()
        optD.zero_grad(); d_loss.backward(); optD.step()
        g_loss = -D(fake).mean()
        optG.zero_grad(); g_loss.backward(); optG.step()
        accumulate(G_ema, G)
        with torch.no_grad():
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        hist.append([d_loss.item(), g_loss.item(), G.attn.gamma.item()])
    with torch.no_grad():
        z = torch.randn(4, 6)
        # truncation trick
        z_mean = torch.randn(100, 6).mean(0, keepdim=True)
        z_t = z_mean + 0.7 * (z - z_mean)
        z_tr = torch.fmod(torch.randn(4, 6), 2.0)
        s_ema, attn = G_ema(z_t)
    sd = G_ema.state_dict()
    return hist, s_ema, attn, sorted(sd.keys()), [p for p in G_ema.parameters()], z_tr, [p.grad for p in G.parameters()]

def modconv(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(6)
    class EqualLinear(nn.Module):
        def __init__(self, i, o, bias_init=0, lr_mul=1):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(o, i).div_(lr_mul))
            self.bias = nn.Parameter(torch.zeros(o).fill_(bias_init))
            self.scale = (1 / np.sqrt(i)) * lr_mul
            self.lr_mul = lr_mul
        def forward(self, x):
            return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)
    class ModConv(nn.Module):
        def __init__(self, i, o, k, style_dim, demodulate=True):
            super().__init__()
            self.eps = 1e-8; self.k = k; self.i = i; self.o = o
            self.scale = 1 / np.sqrt(i * k ** 2)
            self.padding = k // 2
            self.weight = nn.Parameter(torch.randn(1, o, i, k, k))
            self.modulation = EqualLinear(style_dim, i, bias_init=1)
            self.demodulate = demodulate
        def forward(self, x, style):
            b, c, h, w = x.shape
            style = self.modulation(style).view(b, 1, c, 1, 1)
            weight = self.scale * self.weight * style
            if self.demodulate:
                demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
                weight = weight * demod.view(b, self.o, 1, 1, 1)
            weight = weight.view(b * self.o, c, self.k, self.k)
            x = x.view(1, b * c, h, w)
            out = F.conv2d(x, weight, padding=self.padding, groups=b)
            return out.view(b, self.o, out.shape[-2], out.shape[-1])
    mapping = nn.Sequential(EqualLinear(4, 4, lr_mul=0.01), nn.LeakyReLU(0.2), EqualLinear(4, 4, lr_mul=0.01))
    conv = ModConv(3, 5, 3, 4)
    noise_strength = nn.Parameter(torch.zeros(1))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    z = torch.randn(2, 4)
    w = mapping(F.normalize(z, dim=1))
    w_avg = torch.zeros(4).lerp_(w.detach().mean(0), 0.005)
    w_trunc = w_avg.lerp(w, 0.7)
    out = conv(x, w_trunc)
    out = out + noise_strength * torch.randn(2, 1, 6, 6)
    out = F.leaky_relu(out, 0.2) * np.sqrt(2)
    loss = out.square().mean()
    grads = torch.autograd.grad(loss, [x, conv.weight, noise_strength] + list(mapping.parameters()), retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward()
    return out, grads, conv.weight.grad, w_avg, x.grad


def diffaug(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(8)
    def rand_brightness(x):
        return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)
    def rand_saturation(x):
        x_mean = x.mean(dim=1, keepdim=True)
        return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + x_mean
    def rand_contrast(x):
        x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
        return (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + x_mean
    def rand_translation(x, ratio=0.125):
        shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
        translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1], device=x.device)
        translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1], device=x.device)
        grid_batch, grid_x, grid_y = torch.meshgrid(
            torch.arange(x.size(0), dtype=torch.long, device=x.device),
            torch.arange(x.size(2), dtype=torch.long, device=x.device),
            torch.arange(x.size(3), dtype=torch.long, device=x.device), indexing='ij')
        grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
        grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
        x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
        x = x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)
        return x
    def rand_cutout(x, ratio=0.5):
        cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
        offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1], device=x.device)
        offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1], device=x.device)
        grid_batch, grid_x, grid_y = torch.meshgrid(
            torch.arange(x.size(0), dtype=torch.long, device=x.device),
            torch.arange(cutout_size[0], dtype=torch.long, device=x.device),
            torch.arange(cutout_size[1], dtype=torch.long, device=x.device), indexing='ij')
        grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
        grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
        mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
        mask[grid_batch, grid_x, grid_y] = 0
        x = x * mask.unsqueeze(1)
        return x
    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    y = x
    for f in [rand_brightness, rand_saturation, rand_contrast, rand_translation, rand_cutout]:
        y = f(y)
    y = y.contiguous()
    (y * torch.arange(y.numel()).view_as(y).float().sin()).sum().backward()
    return y, x.grad

def progan_bits(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(9)
    class PixelNorm(nn.Module):
        def forward(self, x):
            return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)
    class MinibatchStd(nn.Module):
        def __init__(self, group_size=2, num_channels=1):
            super().__init__(); self.group_size = group_size; self.num_channels = num_channels
        def forward(self, x):
            N, C, H, W = x.shape
            G = min(self.group_size, N)
            Fc = self.num_channels
            c = C // Fc
            y = x.reshape(G, -1, Fc, c, H, W)
            y = y - y.mean(dim=0)
            y = y.square().mean(dim=0)
            y = (y + 1e-8).sqrt()
            y = y.mean(dim=[2, 3, 4])
            y = y.reshape(-1, Fc, 1, 1)
            y = y.repeat(G, 1, H, W)
            return torch.cat([x, y], dim=1)
    x = torch.randn(4, 6, 3, 3, requires_grad=True)
    y = MinibatchStd()(PixelNorm()(x))
    y2 = MinibatchStd(4, 2)(x)
    loss = (y.sin().sum() + y2.cos().sum())
    g, = torch.autograd.grad(loss, x, create_graph=True)
    gg, = torch.autograd.grad(g.square().sum(), x)
    # BigGAN: conditional BN, hierarchical z, orthogonal reg
    class CBN(nn.Module):
        def __init__(self, c, n):
            super().__init__()
            self.bn = nn.BatchNorm2d(c, affine=False, momentum=0.1, eps=1e-4)
            self.gain = nn.Linear(n, c, bias=False); self.bias = nn.Linear(n, c, bias=False)
        def forward(self, x, y):
            gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
            bias = self.bias(y).view(y.size(0), -1, 1, 1)
            return self.bn(x) * gain + bias
    shared = nn.Embedding(3, 4)
    nn.init.orthogonal_(shared.weight)
    cbn = CBN(6, 4 + 2)
    z = torch.randn(4, 6)
    zs = torch.split(z, 2, 1)
    ys = [torch.cat([shared(torch.tensor([0, 1, 2, 1])), item], 1) for item in zs[1:]]
    h = cbn(x, ys[0])
    def ortho(model, strength=1e-4, blacklist=[]):
        with torch.no_grad():
            for param in model.parameters():
                if len(param.shape) < 2 or any([param is item for item in blacklist]):
                    continue
                w = param.view(param.shape[0], -1)
                grad = (2 * torch.mm(torch.mm(w, w.t()) * (1. - torch.eye(w.shape[0], device=w.device)), w))
                param.grad.data += strength * grad.view(param.shape)
    h.square().mean().backward()
    ortho(cbn, 1.0)
    return y, y2, g, gg, h, [p.grad for p in cbn.parameters()], shared.weight, cbn.bn.running_var

def averaged(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    from_ = m.optim.swa_utils
    torch.manual_seed(10)
    G = nn.Sequential(nn.Linear(3, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    ema = from_.AveragedModel(G, multi_avg_fn=from_.get_ema_multi_avg_fn(0.9), use_buffers=True)
    ema2 = from_.AveragedModel(G, avg_fn=from_.get_ema_avg_fn(0.8))
    opt = optim.Adam(G.parameters(), lr=0.01)
    for i in range(3):
        x = torch.randn(6, 3)
        loss = G(x).square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
        ema.update_parameters(G); ema2.update_parameters(G)
    # EMA by hand with _foreach and lerp_
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        ep = [p for p in G_ema.parameters()]; gp = [p for p in G.parameters()]
        torch._foreach_mul_(ep, 0.5)
        torch._foreach_add_(ep, gp, alpha=0.5)
        torch._foreach_lerp_(ep, gp, 0.25)
        for pe, p in zip(G_ema.parameters(), G.parameters()):
            pe.lerp_(p, torch.tensor(0.1))
    ema.eval()
    x = torch.randn(4, 3)
    return ema(x), ema.n_averaged, sorted(ema.state_dict().keys()), [p for p in ema.parameters()], list(ema.buffers()), [p for p in ema2.parameters()], list(ema2.buffers()), ep


def test_sagan_generator_ema_and_truncation():
    ours, _ = run_both(sagan_ema, rtol=1e-4, atol=1e-6)
    hist, sample, attention, keys, ema_params, z_tr, grads = ours
    np.testing.assert_allclose(np.array(hist), LITERALS['sagan'], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.abs(z_tr) < 2)
    assert 'attn.value_conv.parametrizations.weight.0._u' in keys and 'l1.0.weight_orig' in keys


def test_stylegan_modulated_convolution_as_a_grouped_convolution():
    ours, _ = run_both(modconv, rtol=1e-4, atol=1e-6)
    out, grads, weight_grad, w_avg, x_grad = ours
    # two backward passes through the retained graph: twice autograd.grad's gradients
    np.testing.assert_allclose(weight_grad, 2 * grads[1], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(x_grad, 2 * grads[0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(out[0, 0, 0, :3], LITERALS['modconv'], rtol=1e-4)


def test_diffaugment():
    ours, _ = run_both(diffaug, rtol=1e-5, atol=1e-6)
    y, x_grad = ours
    assert (y == 0).reshape(3, 3, -1).all(1).sum() >= 3 * 16  # each cutout zeroes a 4x4 square in all channels
    np.testing.assert_allclose(y[0, 0, 2, :3], LITERALS['diffaug'], rtol=1e-5)


def test_progan_pixel_norm_minibatch_std_and_biggan_conditional_norm():
    # the second derivative of the minibatch std passes sqrt(1e-8 + a small variance): both libraries are ~1e-3
    # from float64's there, so it is compared loosely
    ours, _ = run_both(progan_bits, rtol=2e-3, atol=1e-4)
    y, y2, g, gg, h, grads, shared, running_var = ours
    np.testing.assert_allclose((y[:, :6] ** 2).mean(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(y[0, 6], y[2, 6])  # groups of 2: samples 0 and 2 share a std
    np.testing.assert_allclose(shared @ shared.T, np.eye(3), atol=1e-6)  # orthogonal_'s rows
    np.testing.assert_allclose(y[0, 6, 0, 0], LITERALS['progan'], rtol=1e-5)


def test_averaged_model_ema_and_foreach_lerp():
    ours, _ = run_both(averaged, rtol=1e-5, atol=1e-6)
    out, n_averaged, keys, params, buffers, params2, buffers2, ep = ours
    assert n_averaged == 3 and 'n_averaged' in keys and 'module.1.running_mean' in keys
    np.testing.assert_allclose(out[0], LITERALS['averaged'], rtol=1e-5)
