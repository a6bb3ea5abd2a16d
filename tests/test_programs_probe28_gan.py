# ruff: noqa: B007, B023, E741, E731, F841, E712, UP004, UP008, UP031, E501, B006, B008, B018, E721, UP034, UP039, E701, E702  (the programs are kept as their authors wrote them)
"""Generative adversarial networks (see tests/pytorch_programs.py), each run on chainrule and on PyTorch under the
same seeds, comparing losses, samples, parameters, buffers and gradients after a few steps of training.

- Spectral normalisation both ways: the hook (``nn.utils.spectral_norm``: ``weight_orig``/``weight_u``/``weight_v``,
  dim 1 for a transposed convolution, an ``Embedding``, ``remove_spectral_norm``) and the parametrisation
  (``parametrizations.spectral_norm``: ``_u``/``_v`` power-iteration state across train/eval, ``parametrize.cached``,
  ``remove_parametrizations``, state_dict keys and round trips); SAGAN's own hand-written SpectralNorm
  (``w.data.new(h).normal_``, ``del module._parameters[name]``, ``u.data = ...``).
- pytorch/examples' DCGAN (``weights_init`` by class name, ``ConvTranspose2d``/``BatchNorm2d``/``LeakyReLU``, two Adam
  optimisers with betas (0.5, 0.999), the D step on ``fake.detach()``) and an image grid built by hand.
- WGAN with weight clipping (``p.data.clamp_``, RMSprop, ``requires_grad`` toggled), WGAN-GP (``autograd.grad`` with
  ``create_graph=True`` on interpolates) and R1, the gradient penalty through many layer kinds.
- A conditional GAN (``nn.Embedding`` labels, ``torch.cat``, a projection discriminator with a spectrally normed
  embedding, ``BCEWithLogitsLoss`` with smoothed labels, hinge and non-saturating losses); InfoGAN (categorical and
  Gaussian codes, noisy flipped labels, feature matching by a forward hook, a checkpoint through ``torch.save`` /
  ``torch.load``, an unrolled-D backup, ``parameters_to_vector``, mode seeking).
- Pix2Pix (U-Net skips, ``InstanceNorm2d``, PatchGAN, ``set_requires_grad``, ``clip_grad_norm_``) and CycleGAN
  (reflection-padded ResNet generators, cycle and identity losses, the image pool, ``LambdaLR``).
- SAGAN (self-attention by ``bmm``, a ``gamma`` gate), a generator EMA by ``deepcopy`` and ``mul_().add_()``,
  ``AveragedModel`` with EMA functions, ``_foreach_lerp_``, the truncation trick; StyleGAN's modulated convolution as
  a grouped convolution with per-sample weights and equalised learning rates; DiffAugment; ProGAN's pixel norm,
  minibatch standard deviation and fade-in; BigGAN's conditional batch norm and orthogonal regularisation;
  ESRGAN's RRDB, PixelShuffle and relativistic loss.

A convolution's bias just before a batch or instance norm gets a gradient that is zero in exact arithmetic, and
rounding noise in float32; Adam's first step turns that noise into full-size steps of either sign, so the programs
here leave such biases out (as the papers' code often does), else neither library's trajectory is reproducible.
"""

import copy
import io
import itertools
import random

import numpy as np
import pytest

from .pytorch_programs import OURS, error_of, plain, pytorch, run_both

# chainrule's numbers, computed once (they are PyTorch's to the tolerances below), for machines without PyTorch
LITERALS = {
    'sn_old': [-1.15050387, 1.86965168, 0.17116947],
    'sn_new': [0.82527167, 0.80600375, 0.15192367],
    'dcgan': [[1.36167765, 0.6908831], [1.3582809, 0.68563086], [1.35109329, 0.68461323]],
    'wgan_clip': [[-0.05259592, 0.01483694], [-0.05312188, -0.0006404], [-0.04326108, -0.01140591], [-0.03541042, -0.01845535]],
    'wgan_gp': [[-0.11576986, -0.10219623, 9.05107498, 0.10109387], [-0.11504674, -0.10192528, 9.05516052, 0.1009405], [-0.11428957, -0.10167209, 9.03738976, 0.101514]],
    'r1': 0.00328586,
    'gp_sn': 0.27757397,
    'gp_bn': 0.20904279,
    'gp_in': 0.57672364,
    'gp_gn': 0.81191713,
    'gp_up': 0.97092676,
    'cgan': [[0.68219435, 0.66846526], [0.65073711, 0.67485684], [0.60825503, 0.69858509]],
    'cgan_hinge': [1.82303643, 1.3184092],
    'pix2pix': [[0.60149562, 54.93282318, 37.26769257], [0.59516579, 54.60993195, 35.91809082]],
    'cycle': [[18.58735657, 0.95242286], [18.27303314, 0.94945282], [18.0037632, 0.94429237]],
    'sagan': [[1.86398435, -0.09752813, 0.001], [1.65213108, -0.00130206, 0.00230538], [1.56506276, -0.03174729, 0.00384075]],
    'modconv': [0.11293562, 0.86492634, -0.32849476],
    'diffaug': [0.0, 0.0, -0.02016034],
    'progan': 0.51115537,
    'averaged': [-0.3449775, -0.38786379],
    'infogan': [[1.36366773, 0.70900404, 0.01372185, 1.16780603, 0.15618245], [1.37256718, 0.73018628, 0.0214489, 1.07021689, 0.11792669], [1.34566426, 0.72810644, 0.0172781, 1.10620975, 0.05021776]],
    'cached_sn': [0.46845502, -0.118293, -0.77086544, -0.75398153],
    'sagan_own_sn': [-0.08198968, -0.56418306, -1.05639839],
    'esrgan': 0.09426122,
    'amp_gp': [[0.03287517, 256.0], [0.02747022, 256.0]],
    'dtypes': [-0.17755414, 0.055811],
    'melgan': [[2.64274836, 78.02581787, 74.62309265], [2.62428355, 77.4172287, 74.05983734]],
}


def sn_old(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    out = {}
    for mod, kw in [(nn.Conv2d(3, 4, 3), {}), (nn.ConvTranspose2d(4, 3, 4, 2, 1), {}), (nn.Linear(5, 6), {'n_power_iterations': 3}), (nn.Embedding(7, 4), {})]:
        sn = nn.utils.spectral_norm(mod, **kw)
        name = type(mod).__name__
        out[name + 'keys'] = sorted(sn.state_dict().keys())
        out[name + 'u0'] = sn.weight_u.clone()
        if isinstance(mod, nn.Embedding):
            x = torch.randint(0, 7, (3,))
        elif isinstance(mod, nn.Linear):
            x = torch.randn(2, 5)
        elif isinstance(mod, nn.Conv2d):
            x = torch.randn(2, 3, 5, 5)
        else:
            x = torch.randn(2, 4, 3, 3)
        y = sn(x); y.pow(2).sum().backward()
        out[name + 'y'] = y
        out[name + 'g'] = sn.weight_orig.grad
        out[name + 'u1'] = sn.weight_u.clone(); out[name + 'v1'] = sn.weight_v.clone()
        sn.eval(); y2 = sn(x); out[name + 'eval'] = y2
        out[name + 'u2'] = sn.weight_u.clone()
        sd = sn.state_dict()
        out[name + 'sdw'] = sd['weight_orig']
        nn.utils.remove_spectral_norm(sn)
        out[name + 'after'] = sorted(n for n, _ in sn.named_parameters())
        out[name + 'w'] = sn.weight
    return out

def sn_new(m):
    torch, nn = m.torch, m.nn
    P = nn.utils.parametrizations
    torch.manual_seed(0)
    out = {}
    for mod in [nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 3, 4, 2, 1), nn.Linear(5, 6)]:
        name = type(mod).__name__  # (before the parametrisation swaps the class for Parametrized...)
        sn = P.spectral_norm(mod)
        out[name + 'keys'] = sorted(sn.state_dict().keys())
        out[name + 'u0'] = sn.parametrizations.weight[0]._u.clone()
        x = torch.randn(2, 3, 5, 5) if isinstance(mod, nn.Conv2d) else (torch.randn(2, 5) if isinstance(mod, nn.Linear) else torch.randn(2, 4, 3, 3))
        for _ in range(2):
            y = sn(x); y.pow(2).sum().backward()
        out[name + 'y'] = y
        out[name + 'g'] = sn.parametrizations.weight.original.grad
        out[name + 'u1'] = sn.parametrizations.weight[0]._u.clone()
        sn.eval(); out[name + 'eval'] = sn(x); out[name + 'eval2'] = sn(x)
        out[name + 'sigma'] = torch.linalg.matrix_norm(sn.weight.flatten(1) if not isinstance(mod, nn.ConvTranspose2d) else sn.weight.transpose(0,1).flatten(1), 2)
        torch.nn.utils.parametrize.remove_parametrizations(sn, 'weight')
        out[name + 'w'] = sn.weight
        out[name + 'after'] = sorted(sn.state_dict().keys())
    return out


def dcgan(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(0)
    nz, ngf, ndf = 8, 4, 4
    def weights_init(mm):
        classname = mm.__class__.__name__
        if classname.find('Conv') != -1:
            nn.init.normal_(mm.weight.data, 0.0, 0.02)
        elif classname.find('BatchNorm') != -1:
            nn.init.normal_(mm.weight.data, 1.0, 0.02)
            nn.init.constant_(mm.bias.data, 0)
    netG = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, 1, 4, 2, 1, bias=False), nn.Tanh())
    netD = nn.Sequential(
        nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False), nn.Sigmoid())
    netG.apply(weights_init); netD.apply(weights_init)
    criterion = nn.BCELoss()
    fixed_noise = torch.randn(4, nz, 1, 1)
    real_label, fake_label = 1., 0.
    optD = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = torch.rand(6, 1, 16, 16) * 2 - 1
    hist = []
    for i in range(3):
        netD.zero_grad()
        real = data
        b_size = real.size(0)
        label = torch.full((b_size,), real_label, dtype=torch.float)
        output = netD(real).view(-1)
        errD_real = criterion(output, label); errD_real.backward()
        D_x = output.mean().item()
        noise = torch.randn(b_size, nz, 1, 1)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label); errD_fake.backward()
        errD = errD_real + errD_fake
        optD.step()
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake).view(-1)
        errG = criterion(output, label); errG.backward()
        optG.step()
        hist.append((errD.item(), errG.item(), D_x))
    with torch.no_grad():
        netG.eval()
        fake = netG(fixed_noise).detach().cpu()
    # grid by hand
    nrow, pad = 2, 1
    n, c, h, w = fake.shape
    grid = torch.full((c, (h + pad) * 2 + pad, (w + pad) * nrow + pad), 0.0)
    for k in range(n):
        r, cc = divmod(k, nrow)
        grid[:, r * (h + pad) + pad: r * (h + pad) + pad + h, cc * (w + pad) + pad: cc * (w + pad) + pad + w].copy_(fake[k])
    grid2 = fake.view(2, 2, c, h, w).permute(2, 0, 3, 1, 4).reshape(c, 2 * h, 2 * w)
    img = grid.add(1).div(2).mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to('cpu', torch.uint8)
    return hist, fake, grid, grid2, img, netD[3].running_mean, netD[3].num_batches_tracked, [p for p in netG.parameters()]

def wgan_clip(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(1)
    G = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    optD = optim.RMSprop(D.parameters(), lr=5e-3)
    optG = optim.RMSprop(G.parameters(), lr=5e-3)
    real = torch.randn(32, 2) * 0.5 + torch.tensor([2.0, -1.0])
    hist = []
    for it in range(4):
        for p in D.parameters():
            p.requires_grad = True
        for _ in range(3):
            for p in D.parameters():
                p.data.clamp_(-0.05, 0.05)
            optD.zero_grad()
            z = torch.randn(32, 4)
            fake = G(z).detach()
            lossD = -(torch.mean(D(real)) - torch.mean(D(fake)))
            lossD.backward()
            optD.step()
        for p in D.parameters():
            p.requires_grad = False
        optG.zero_grad(set_to_none=True)
        lossG = -torch.mean(D(G(torch.randn(32, 4))))
        lossG.backward()
        optG.step()
        hist.append([lossD.item(), lossG.item()])
    return hist, [p for p in D.parameters()], [p.grad for p in D.parameters()], [p.grad for p in G.parameters()], optD.state_dict()['state'][0]

def wgan_gp(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    autograd = torch.autograd
    torch.manual_seed(2)
    D = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 8, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 2 * 2, 1))
    G = nn.Sequential(nn.Linear(3, 16 * 4), nn.Unflatten(1, (16, 2, 2)), nn.Upsample(scale_factor=2), nn.Conv2d(16, 4, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False), nn.Conv2d(4, 1, 3, padding=1), nn.Tanh())
    optD = optim.Adam(D.parameters(), lr=1e-3, betas=(0., 0.9))
    optG = optim.Adam(G.parameters(), lr=1e-3, betas=(0., 0.9))
    real = torch.rand(5, 1, 8, 8)
    def gp(D, real, fake):
        alpha = torch.rand(real.size(0), 1, 1, 1)
        alpha = alpha.expand_as(real)
        interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        d_int = D(interpolates)
        grads = autograd.grad(outputs=d_int, inputs=interpolates, grad_outputs=torch.ones(d_int.size()), create_graph=True, retain_graph=True, only_inputs=True)[0]
        grads = grads.view(grads.size(0), -1)
        return ((grads.norm(2, dim=1) - 1) ** 2).mean() * 10
    hist = []
    for it in range(3):
        optD.zero_grad()
        fake = G(torch.randn(5, 3))
        d_real = D(real).mean(); d_fake = D(fake.detach()).mean()
        penalty = gp(D, real, fake.detach())
        (d_fake - d_real + penalty).backward()
        optD.step()
        optG.zero_grad()
        lg = -D(G(torch.randn(5, 3))).mean(); lg.backward(); optG.step()
        hist.append([d_real.item(), d_fake.item(), penalty.item(), lg.item()])
    # R1 penalty
    x = real.detach().requires_grad_()
    out = D(x)
    g, = autograd.grad(out.sum(), x, create_graph=True)
    r1 = g.pow(2).reshape(g.shape[0], -1).sum(1).mean()
    D.zero_grad(); r1.backward()
    return hist, r1, [p.grad for p in D.parameters()], [p for p in G.parameters()]


def cgan(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(3)
    n_classes, latent = 5, 6
    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.label_emb = nn.Embedding(n_classes, n_classes)
            def block(i, o, normalize=True):
                layers = [nn.Linear(i, o)]
                if normalize:
                    layers.append(nn.BatchNorm1d(o, 0.8))
                layers.append(nn.LeakyReLU(0.2, inplace=True))
                return layers
            self.model = nn.Sequential(*block(latent + n_classes, 16, normalize=False), *block(16, 32), nn.Linear(32, 16), nn.Tanh())
        def forward(self, noise, labels):
            gen_input = torch.cat((self.label_emb(labels), noise), -1)
            img = self.model(gen_input)
            return img.view(img.size(0), 1, 4, 4)
    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.label_embedding = nn.Embedding(n_classes, n_classes)
            self.model = nn.Sequential(nn.Linear(n_classes + 16, 32), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(0.4), nn.Linear(32, 1))
            self.embed = nn.utils.spectral_norm(nn.Embedding(n_classes, 32))
        def forward(self, img, labels):
            d_in = torch.cat((img.view(img.size(0), -1), self.label_embedding(labels)), -1)
            h = self.model[0](d_in); h = self.model[1](h)
            # projection discriminator term
            proj = (self.embed(labels) * h).sum(dim=1, keepdim=True)
            return self.model[3](self.model[2](h)) + proj
    G, D = Generator(), Discriminator()
    optG = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    crit = nn.BCEWithLogitsLoss()
    imgs = torch.rand(8, 1, 4, 4) * 2 - 1
    labels = torch.randint(0, n_classes, (8,))
    hist = []
    for i in range(3):
        valid = torch.full((8, 1), 0.9)
        fake_t = torch.zeros(8, 1)
        optG.zero_grad()
        z = torch.randn(8, latent)
        gen_labels = torch.randint(0, n_classes, (8,))
        gen_imgs = G(z, gen_labels)
        g_loss = crit(D(gen_imgs, gen_labels), torch.ones(8, 1))
        g_loss.backward(); optG.step()
        optD.zero_grad()
        d_real = crit(D(imgs, labels), valid)
        d_fake = crit(D(gen_imgs.detach(), gen_labels), fake_t)
        d_loss = (d_real + d_fake) / 2
        d_loss.backward(); optD.step()
        hist.append([g_loss.item(), d_loss.item()])
    # hinge
    D.zero_grad()
    dr = D(imgs, labels); df = D(gen_imgs.detach(), gen_labels)
    hinge = F.relu(1. - dr).mean() + F.relu(1. + df).mean()
    hinge.backward()
    ns = F.softplus(-dr).mean() + F.softplus(df).mean()
    return hist, hinge, ns, [p.grad for p in D.parameters()], D.embed.weight_u

def pix2pix(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(4)
    class Down(nn.Module):
        def __init__(self, i, o, norm=True):
            super().__init__()
            layers = [nn.Conv2d(i, o, 4, 2, 1, bias=False)]
            if norm: layers.append(nn.InstanceNorm2d(o))
            layers.append(nn.LeakyReLU(0.2))
            self.model = nn.Sequential(*layers)
        def forward(self, x): return self.model(x)
    class Up(nn.Module):
        def __init__(self, i, o, dropout=0.0):
            super().__init__()
            layers = [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.InstanceNorm2d(o, affine=True), nn.ReLU(inplace=True)]
            if dropout: layers.append(nn.Dropout(dropout))
            self.model = nn.Sequential(*layers)
        def forward(self, x, skip):
            x = self.model(x)
            return torch.cat((x, skip), 1)
    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.d1 = Down(3, 4, norm=False); self.d2 = Down(4, 8); self.d3 = Down(8, 8, norm=False)
            self.u1 = Up(8, 8, dropout=0.5); self.u2 = Up(16, 4)
            self.final = nn.Sequential(nn.Upsample(scale_factor=2), nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(8, 3, 4, padding=1), nn.Tanh())
        def forward(self, x):
            d1 = self.d1(x); d2 = self.d2(d1); d3 = self.d3(d2)
            u1 = self.u1(d3, d2); u2 = self.u2(u1, d1)
            return self.final(u2)
    class PatchD(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Conv2d(6, 4, 4, 2, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(4, 8, 4, 2, 1, bias=False), nn.InstanceNorm2d(8, track_running_stats=True), nn.LeakyReLU(0.2, True), nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(8, 1, 4, padding=1, bias=False))
        def forward(self, a, b): return self.model(torch.cat((a, b), 1))
    G, D = UNet(), PatchD()
    def set_requires_grad(nets, requires_grad=False):
        if not isinstance(nets, list): nets = [nets]
        for net in nets:
            if net is not None:
                for param in net.parameters():
                    param.requires_grad = requires_grad
    optG = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    crit_gan = nn.MSELoss(); crit_l1 = nn.L1Loss()
    A = torch.rand(2, 3, 16, 16) * 2 - 1; B = torch.rand(2, 3, 16, 16) * 2 - 1
    hist = []
    for i in range(2):
        fake_B = G(A)
        set_requires_grad(D, True)
        optD.zero_grad()
        pred_fake = D(A, fake_B.detach())
        loss_D_fake = crit_gan(pred_fake, torch.zeros_like(pred_fake))
        pred_real = D(A, B)
        loss_D_real = crit_gan(pred_real, torch.tensor(1.0).expand_as(pred_real))
        loss_D = (loss_D_fake + loss_D_real) * 0.5
        loss_D.backward(); optD.step()
        set_requires_grad(D, False)
        optG.zero_grad()
        pred_fake = D(A, fake_B)
        loss_G = crit_gan(pred_fake, torch.ones_like(pred_fake)) + crit_l1(fake_B, B) * 100
        loss_G.backward()
        gn = torch.nn.utils.clip_grad_norm_(G.parameters(), 1.0) if hasattr(torch, 'nn') else None
        optG.step()
        hist.append([loss_D.item(), loss_G.item(), float(gn)])
    D.eval()
    return hist, fake_B, D(A, B), D.model[3].running_var, [p.grad for p in G.parameters()], [p.grad for p in D.parameters()]


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

def cycle(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    import itertools
    torch.manual_seed(7)
    random.seed(0)
    class ImagePool:
        def __init__(self, pool_size):
            self.pool_size = pool_size; self.num_imgs = 0; self.images = []
        def query(self, images):
            return_images = []
            for image in images:
                image = torch.unsqueeze(image.data, 0)
                if self.num_imgs < self.pool_size:
                    self.num_imgs += 1; self.images.append(image); return_images.append(image)
                else:
                    p = random.uniform(0, 1)
                    if p > 0.5:
                        random_id = random.randint(0, self.pool_size - 1)
                        tmp = self.images[random_id].clone()
                        self.images[random_id] = image
                        return_images.append(tmp)
                    else:
                        return_images.append(image)
            return torch.cat(return_images, 0)
    class ResBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.b = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=False), nn.InstanceNorm2d(c), nn.ReLU(True), nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=False), nn.InstanceNorm2d(c))
        def forward(self, x): return x + self.b(x)
    def gen():
        return nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 4, 7, bias=False), nn.InstanceNorm2d(4), nn.ReLU(True), nn.Conv2d(4, 8, 3, 2, 1, bias=False), nn.InstanceNorm2d(8), nn.ReLU(True), ResBlock(8), nn.ConvTranspose2d(8, 4, 3, 2, 1, output_padding=1, bias=False), nn.InstanceNorm2d(4), nn.ReLU(True), nn.ReflectionPad2d(3), nn.Conv2d(4, 3, 7), nn.Tanh())
    def disc():
        return nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(4, 1, 4, 1, 1))
    G_AB, G_BA, D_A, D_B = gen(), gen(), disc(), disc()
    optG = optim.Adam(itertools.chain(G_AB.parameters(), G_BA.parameters()), lr=2e-4, betas=(0.5, 0.999))
    optD = optim.Adam(itertools.chain(D_A.parameters(), D_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
    sched = optim.lr_scheduler.LambdaLR(optG, lr_lambda=lambda ep: 1.0 - max(0, ep - 1) / 3.0)
    pool_A, pool_B = ImagePool(2), ImagePool(2)
    mse, l1 = nn.MSELoss(), nn.L1Loss()
    A = torch.rand(2, 3, 8, 8) * 2 - 1; B = torch.rand(2, 3, 8, 8) * 2 - 1
    hist = []
    for ep in range(3):
        optG.zero_grad(set_to_none=True)
        fake_B = G_AB(A); rec_A = G_BA(fake_B)
        fake_A = G_BA(B); rec_B = G_AB(fake_A)
        pb = D_B(fake_B); pa = D_A(fake_A)
        loss_G = mse(pb, torch.ones_like(pb)) + mse(pa, torch.ones_like(pa)) + 10 * (l1(rec_A, A) + l1(rec_B, B)) + 5 * (l1(G_BA(A), A) + l1(G_AB(B), B))
        loss_G.backward(); optG.step()
        optD.zero_grad(set_to_none=True)
        fb = pool_B.query(fake_B); fa = pool_A.query(fake_A)
        loss_D = 0.5 * (mse(D_B(B), torch.ones_like(pb)) + mse(D_B(fb.detach()), torch.zeros_like(pb))) + 0.5 * (mse(D_A(A), torch.ones_like(pa)) + mse(D_A(fa.detach()), torch.zeros_like(pa)))
        loss_D.backward(); optD.step(); sched.step()
        hist.append([loss_G.item(), loss_D.item(), sched.get_last_lr()[0]])
    return hist, rec_A, [p.grad for p in D_A.parameters()], [p for p in G_AB.parameters()]


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

def errors(m):
    torch, nn = m.torch, m.nn
    out = []
    c = nn.utils.spectral_norm(nn.Linear(3, 3))
    out.append(error_of(lambda: nn.utils.spectral_norm(c)))
    out.append(error_of(lambda: nn.utils.remove_spectral_norm(nn.Linear(2, 2))))
    out.append(error_of(lambda: nn.utils.parametrizations.spectral_norm(nn.Linear(2, 2), name='nope')))
    p = nn.Parameter(torch.ones(3)); p.grad = torch.tensor([float('inf'), 1., 1.])
    out.append(error_of(lambda: nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)))
    p.grad = torch.tensor([3., 4., 0.])
    q = nn.Parameter(torch.ones(2)); q.grad = torch.tensor([1., 2.])
    out.append(nn.utils.clip_grad_norm_([p, q], 1.0, norm_type='inf', foreach=True))
    out.append([p.grad.clone(), q.grad.clone()])
    out.append(nn.utils.clip_grad_norm_(iter([p, q]), 0.5, norm_type=1.0))
    out.append(nn.utils.get_total_norm([p.grad, q.grad], 2.0))
    nn.utils.clip_grad_value_([p, q], 0.01)
    out.append([p.grad.clone(), q.grad.clone()])
    x = torch.randn(2, 3)
    out.append(error_of(lambda: torch.autograd.grad(x.sum(), x)))
    y = torch.randn(2, 3, requires_grad=True)
    out.append(error_of(lambda: torch.autograd.grad((y * 2).sum(), [y, x])))
    out.append(torch.autograd.grad((y * 2).sum(), [y, torch.randn(1, requires_grad=True)], allow_unused=True, materialize_grads=True))
    net = nn.Linear(2, 2)
    net.requires_grad_(False)
    out.append([pp.requires_grad for pp in net.parameters()])
    out.append(error_of(lambda: net(torch.randn(1, 2)).sum().backward()))
    return out


def gp_layers(m, which):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(11)
    SN = nn.utils.spectral_norm
    PSN = nn.utils.parametrizations.spectral_norm
    layers = {
        'sn': lambda: nn.Sequential(SN(nn.Conv2d(2, 4, 3, 1, 1)), nn.LeakyReLU(0.2), PSN(nn.Conv2d(4, 4, 4, 2, 1)), nn.ELU(), nn.Flatten(), SN(nn.Linear(64, 1))),
        'bn': lambda: nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 8)),
        'in': lambda: nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1), nn.InstanceNorm2d(4, affine=True), nn.SiLU(), nn.AvgPool2d(2), nn.Conv2d(4, 1, 4)),
        'gn': lambda: nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1), nn.GroupNorm(2, 4), nn.GELU(), nn.MaxPool2d(2), nn.LayerNorm([4, 4, 4]), nn.Softplus(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)),
        'up': lambda: nn.Sequential(nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False), nn.Conv2d(2, 8, 3, 2, 1), nn.PixelShuffle(2), nn.Tanh(), nn.ConvTranspose2d(2, 2, 4, 2, 1), nn.ReflectionPad2d(1), nn.Conv2d(2, 1, 3, 2), nn.Flatten(), nn.Linear(256, 1)),
        'zero': lambda: nn.Sequential(nn.Conv2d(2, 1, 3, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 1)),
    }
    D = layers[which]()
    if which == 'zero':
        with torch.no_grad():
            D[0].bias.fill_(-100.)
    real = torch.randn(3, 2, 8, 8); fake = torch.randn(3, 2, 8, 8)
    alpha = torch.rand(3, 1, 1, 1)
    xi = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = D(xi)
    g = torch.autograd.grad(outputs=out, inputs=xi, grad_outputs=torch.ones_like(out), create_graph=True, retain_graph=True)[0]
    gp = ((g.view(3, -1).norm(2, dim=1) - 1) ** 2).mean()
    (out.mean() + 10 * gp).backward()
    return out, g, gp, [p.grad for p in D.parameters()]

def infogan(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(12)
    n_cat, n_cont, nz = 3, 2, 4
    G = nn.Sequential(nn.Linear(nz + n_cat + n_cont, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 10), nn.Tanh())
    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(10 + n_cat, 16), nn.LeakyReLU(0.2))
            self.adv = nn.Linear(16, 1); self.q_cat = nn.Linear(16, n_cat); self.q_mu = nn.Linear(16, n_cont); self.q_logvar = nn.Linear(16, n_cont)
        def forward(self, x, y):
            h = self.body(torch.cat([x, y], 1))
            return self.adv(h), self.q_cat(h), self.q_mu(h), self.q_logvar(h)
    Dn = D()
    feats = []
    hook = Dn.body.register_forward_hook(lambda mod, inp, out: feats.append(out))
    gen = torch.Generator().manual_seed(3)
    fixed = torch.randn(4, nz, generator=gen)
    optD = optim.Adam(Dn.parameters(), lr=1e-3, betas=(0.5, 0.999))
    optG = optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    optInfo = optim.Adam(itertools.chain(G.parameters(), Dn.parameters()), lr=1e-3, betas=(0.5, 0.999))
    real = torch.rand(6, 10) * 2 - 1
    bce = nn.BCEWithLogitsLoss()
    hist = []
    for it in range(3):
        labels = torch.randint(0, n_cat, (6,))
        y = torch.zeros(6, n_cat).scatter_(1, labels.view(-1, 1), 1)
        y2 = F.one_hot(labels, n_cat).float()
        c = torch.empty(6, n_cont).uniform_(-1, 1)
        z = torch.randn(6, nz)
        fake = G(torch.cat([z, y, c], -1))
        real_lbl = torch.empty(6, 1).uniform_(0.7, 1.2)
        flip = torch.rand(6, 1) < 0.3
        real_lbl = torch.where(flip, torch.zeros_like(real_lbl), real_lbl)
        optD.zero_grad()
        dr = Dn(real, y2)[0]; df = Dn(fake.detach(), y)[0]
        ld = bce(dr, real_lbl) + bce(df, torch.zeros_like(df))
        ld.backward(); optD.step()
        feats.clear()
        optG.zero_grad()
        adv, qc, qmu, qlv = Dn(fake, y)
        f_fake = feats[-1]
        Dn(real, y2); f_real = feats[-1]
        fm = F.mse_loss(f_fake.mean(0), f_real.detach().mean(0))
        lg = bce(adv, torch.ones_like(adv)) + fm
        lg.backward(retain_graph=True); optG.step()
        optInfo.zero_grad()
        _, qc, qmu, qlv = Dn(G(torch.cat([z, y, c], -1)), y)
        l_cat = F.cross_entropy(qc, labels)
        l_cont = F.gaussian_nll_loss(qmu, c, qlv.exp())
        (l_cat + 0.1 * l_cont).backward(); optInfo.step()
        hist.append([ld.item(), lg.item(), fm.item(), l_cat.item(), l_cont.item()])
    hook.remove()
    # checkpoint round trip + unrolled backup
    buf = io.BytesIO()
    torch.save({'G': G.state_dict(), 'D': Dn.state_dict(), 'optD': optD.state_dict(), 'it': 3}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    D2 = D(); D2.load_state_dict(ck['D'])
    optD2 = optim.Adam(D2.parameters(), lr=1e-3, betas=(0.5, 0.999)); optD2.load_state_dict(ck['optD'])
    backup = copy.deepcopy(D2.state_dict())
    for k in range(2):
        optD2.zero_grad()
        l = bce(D2(real, y2)[0], torch.ones(6, 1)); l.backward(); optD2.step()
    unrolled = D2(real, y2)[0]
    D2.load_state_dict(backup)
    vec = nn.utils.parameters_to_vector(D2.parameters())
    nn.utils.vector_to_parameters(vec * 2, D2.parameters())
    G.eval()
    @torch.no_grad()
    def sample(n):
        yy = F.one_hot(torch.arange(n) % n_cat, n_cat).float()
        cc = torch.linspace(-1, 1, n).unsqueeze(1).repeat(1, n_cont)
        return G(torch.cat([fixed[:n], yy, cc], 1))
    s = sample(4)
    # mode seeking
    z1, z2 = torch.randn(2, 6, nz).unbind(0)
    G.train()
    lz = torch.mean(torch.abs(G(torch.cat([z1, y, c], 1)) - G(torch.cat([z2, y, c], 1)))) / torch.mean(torch.abs(z1 - z2))
    return hist, unrolled, s, vec, [p for p in D2.parameters()], lz, ck['it'], optD2.state_dict()['state'][0]['step'], sorted(ck['optD']['param_groups'][0].keys())

def cached_sn(m):
    torch, nn = m.torch, m.nn
    P = nn.utils.parametrize
    torch.manual_seed(13)
    lin = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 4), n_power_iterations=2)
    x = torch.randn(3, 4)
    with P.cached():
        y = lin(x) + lin(x)
    y.sum().backward()
    sd = lin.state_dict()
    lin2 = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 4), n_power_iterations=2)
    lin2.load_state_dict(sd)
    lin2.eval()
    old = nn.utils.spectral_norm(nn.Linear(4, 4))
    old(x)
    sd_old = old.state_dict()
    old2 = nn.utils.spectral_norm(nn.Linear(4, 4)); old2.load_state_dict(sd_old); old2.eval()
    return y, lin.parametrizations.weight.original.grad, lin2(x), lin2.parametrizations.weight[0]._v, sorted(sd.keys()), old2(x), list(sd_old._metadata.keys()) if hasattr(sd_old, '_metadata') else None, P.is_parametrized(lin), P.is_parametrized(lin, 'bias')


def sagan_own_sn(m):
    torch, nn, F = m.torch, m.nn, m.F
    Parameter = nn.Parameter
    torch.manual_seed(14)
    def l2normalize(v, eps=1e-12):
        return v / (v.norm() + eps)
    class SpectralNorm(nn.Module):
        def __init__(self, module, name='weight', power_iterations=1):
            super(SpectralNorm, self).__init__()
            self.module = module; self.name = name; self.power_iterations = power_iterations
            if not self._made_params():
                self._make_params()
        def _update_u_v(self):
            u = getattr(self.module, self.name + "_u")
            v = getattr(self.module, self.name + "_v")
            w = getattr(self.module, self.name + "_bar")
            height = w.data.shape[0]
            for _ in range(self.power_iterations):
                v.data = l2normalize(torch.mv(torch.t(w.view(height, -1).data), u.data))
                u.data = l2normalize(torch.mv(w.view(height, -1).data, v.data))
            sigma = u.dot(w.view(height, -1).mv(v))
            setattr(self.module, self.name, w / sigma.expand_as(w))
        def _made_params(self):
            try:
                u = getattr(self.module, self.name + "_u"); v = getattr(self.module, self.name + "_v"); w = getattr(self.module, self.name + "_bar")
                return True
            except AttributeError:
                return False
        def _make_params(self):
            w = getattr(self.module, self.name)
            height = w.data.shape[0]
            width = w.view(height, -1).data.shape[1]
            u = Parameter(w.data.new(height).normal_(0, 1), requires_grad=False)
            v = Parameter(w.data.new(width).normal_(0, 1), requires_grad=False)
            u.data = l2normalize(u.data); v.data = l2normalize(v.data)
            w_bar = Parameter(w.data)
            del self.module._parameters[self.name]
            self.module.register_parameter(self.name + "_u", u)
            self.module.register_parameter(self.name + "_v", v)
            self.module.register_parameter(self.name + "_bar", w_bar)
        def forward(self, *args):
            self._update_u_v()
            return self.module.forward(*args)
    net = nn.Sequential(SpectralNorm(nn.Conv2d(2, 4, 3)), nn.LeakyReLU(0.1), SpectralNorm(nn.Linear(4 * 4 * 4, 1)))
    # fix Linear input: flatten in between
    class Net(nn.Module):
        def __init__(self):
            super().__init__(); self.c = net[0]; self.l = net[2]
        def forward(self, x):
            return self.l(F.leaky_relu(self.c(x), 0.1).view(x.size(0), -1))
    N = Net()
    opt = torch.optim.Adam(filter(lambda p: p.requires_grad, N.parameters()), lr=1e-2, betas=(0.0, 0.9))
    x = torch.randn(3, 2, 6, 6)
    hist = []
    for i in range(3):
        opt.zero_grad(); l = N(x).mean(); l.backward(); opt.step(); hist.append(l.item())
    return hist, sorted(N.state_dict().keys()), [p for p in N.parameters()], N.c.module.weight, [p.requires_grad for p in N.parameters()], len(opt.param_groups[0]['params'])

def esrgan(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(15)
    class RDB(nn.Module):
        def __init__(self, nf=4, gc=2):
            super().__init__()
            self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1); self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1); self.conv3 = nn.Conv2d(nf + 2 * gc, nf, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
            for mm in self.modules():
                if isinstance(mm, nn.Conv2d):
                    nn.init.kaiming_normal_(mm.weight, a=0, mode='fan_in'); mm.weight.data *= 0.1
                    if mm.bias is not None: mm.bias.data.zero_()
        def forward(self, x):
            x1 = self.lrelu(self.conv1(x)); x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
            x3 = self.conv3(torch.cat((x, x1, x2), 1))
            return x3 * 0.2 + x
    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(3, 4, 3, 1, 1); self.body = nn.Sequential(RDB(), RDB())
            self.up = nn.Conv2d(4, 4 * 4, 3, 1, 1); self.ps = nn.PixelShuffle(2); self.last = nn.Conv2d(4, 3, 3, 1, 1)
        def forward(self, x):
            f = self.first(x); f = f + self.body(f)
            f = F.leaky_relu(self.ps(self.up(f)), 0.2)
            return self.last(f) + F.interpolate(x, scale_factor=2, mode='bicubic', align_corners=False)
    g = G()
    feat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)).eval()
    for p in feat.parameters(): p.requires_grad = False
    D = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
    lr_img = torch.rand(2, 3, 6, 6); hr = torch.rand(2, 3, 12, 12)
    sr = g(lr_img)
    bce = nn.BCEWithLogitsLoss()
    pred_real = D(hr).detach(); pred_fake = D(sr)
    l_g_gan = (bce(pred_real - torch.mean(pred_fake), torch.zeros_like(pred_real)) + bce(pred_fake - torch.mean(pred_real), torch.ones_like(pred_fake))) / 2
    l_percep = F.l1_loss(feat(sr), feat(hr).detach())
    l_pix = F.l1_loss(sr, hr)
    loss = l_pix * 0.01 + l_percep + l_g_gan * 0.005
    loss.backward()
    # fade-in from progressive growing
    alpha = 0.3
    lo = F.interpolate(F.avg_pool2d(hr, 2), scale_factor=2, mode='nearest')
    blend = torch.lerp(lo, hr, alpha)
    lo2 = F.interpolate(hr, scale_factor=0.5, mode='area')
    lo3 = F.interpolate(hr, size=(5, 7), mode='bilinear', antialias=True, align_corners=False)
    return sr, loss, [p.grad for p in g.parameters()], [p.grad for p in D.parameters()], blend, lo2, lo3



def amp_gp(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(16)
    D = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    nn.init.xavier_uniform_(D[0].weight, gain=nn.init.calculate_gain('leaky_relu', 0.2))
    nn.init.trunc_normal_(D[2].weight, std=0.02)
    opt = optim.Adam(D.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler('cpu', init_scale=2. ** 8)
    x = torch.randn(5, 4, requires_grad=True)
    hist = []
    for i in range(2):
        opt.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=False):
            out = D(x)
            loss = out.float().mean()
        scaled_grads = torch.autograd.grad(outputs=scaler.scale(loss), inputs=x, create_graph=True)
        inv_scale = 1. / scaler.get_scale()
        grads = [p * inv_scale for p in scaled_grads]
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=False):
            grad_norm = grads[0].pow(2).sum().sqrt()
            loss = loss + grad_norm
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        hist.append([loss.item(), scaler.get_scale(), out.dtype == torch.float32])
    # progressive growing: new block, add_param_group
    blocks = nn.ModuleList([nn.Linear(4, 4)])
    optG = optim.Adam(blocks.parameters(), lr=1e-2, betas=(0.0, 0.99))
    sched = optim.lr_scheduler.StepLR(optG, 1, gamma=0.5)
    z = torch.randn(3, 4)
    for stage in range(2):
        for k in range(2):
            h = z
            for b in blocks:
                h = F.leaky_relu(b(h), 0.2)
            l = h.square().mean()
            optG.zero_grad(); l.backward(); optG.step()
        sched.step()
        new = nn.Linear(4, 4)
        blocks.append(new)
        optG.add_param_group({'params': new.parameters(), 'lr': 5e-3})
    sd = optG.state_dict()
    h = z
    for b in blocks:
        h = b(h)
    # gradient reversal by a hook
    fake = torch.randn(3, 4, requires_grad=True)
    y = fake * 2
    y.register_hook(lambda g: -0.5 * g)
    (y.sum() * 3).backward()
    return hist, [p.grad for p in D.parameters()], h, [g['lr'] for g in optG.param_groups], sorted(sd['state'].keys()), [g['initial_lr'] if 'initial_lr' in g else None for g in optG.param_groups], fake.grad, [p for p in D.parameters()]

def dtypes(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(17)
    net = nn.Sequential(nn.utils.spectral_norm(nn.Linear(3, 3)), nn.utils.parametrizations.spectral_norm(nn.Linear(3, 2))).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    y = net(x)
    n = torch.randn(4, dtype=torch.float64)
    e = torch.empty(3, dtype=torch.float64).normal_(0, 1)
    return y, y.dtype == torch.float64, net[0].weight_u.dtype == torch.float64, net[1].parametrizations.weight[0]._u.dtype == torch.float64, n, e, net[1].parametrizations.weight.original.dtype == torch.float64


def melgan(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_wn = nn.utils.weight_norm
    pwn = nn.utils.parametrizations.weight_norm
    SN = nn.utils.spectral_norm
    torch.manual_seed(18)
    LRELU = 0.1
    def init_weights(mm, mean=0.0, std=0.01):
        if mm.__class__.__name__.find("Conv") != -1:
            mm.weight.data.normal_(mean, std)
    def get_padding(k, d=1):
        return int((k * d - d) / 2)
    class ResBlock(nn.Module):
        def __init__(self, ch, k=3, dilation=(1, 3)):
            super().__init__()
            self.convs = nn.ModuleList([from_wn(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=get_padding(k, d))) for d in dilation])
            self.convs.apply(init_weights)
        def forward(self, x):
            for c in self.convs:
                xt = F.leaky_relu(x, LRELU)
                xt = c(xt)
                x = xt + x
            return x
        def remove_weight_norm(self):
            for l in self.convs:
                nn.utils.remove_weight_norm(l)
    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_pre = from_wn(nn.Conv1d(4, 8, 7, 1, padding=3))
            self.ups = nn.ModuleList([pwn(nn.ConvTranspose1d(8, 4, 4, 2, padding=1)), from_wn(nn.ConvTranspose1d(4, 2, 4, 2, padding=1))])
            self.resblocks = nn.ModuleList([ResBlock(4), ResBlock(2)])
            self.conv_post = from_wn(nn.Conv1d(2, 1, 7, 1, padding=3))
            self.ups.apply(init_weights)
        def forward(self, x):
            x = self.conv_pre(x)
            for i in range(2):
                x = F.leaky_relu(x, LRELU)
                x = self.ups[i](x)
                x = self.resblocks[i](x)
            x = F.leaky_relu(x)
            return torch.tanh(self.conv_post(x))
    class DiscriminatorS(nn.Module):
        def __init__(self, use_spectral_norm=False):
            super().__init__()
            norm_f = SN if use_spectral_norm else from_wn
            self.convs = nn.ModuleList([norm_f(nn.Conv1d(1, 4, 15, 1, padding=7)), norm_f(nn.Conv1d(4, 8, 41, 2, groups=4, padding=20)), norm_f(nn.Conv1d(8, 8, 5, 1, padding=2))])
            self.conv_post = norm_f(nn.Conv1d(8, 1, 3, 1, padding=1))
        def forward(self, x):
            fmap = []
            for l in self.convs:
                x = F.leaky_relu(l(x), LRELU); fmap.append(x)
            x = self.conv_post(x); fmap.append(x)
            return torch.flatten(x, 1, -1), fmap
    class MSD(nn.Module):
        def __init__(self):
            super().__init__()
            self.discriminators = nn.ModuleList([DiscriminatorS(use_spectral_norm=True), DiscriminatorS(), DiscriminatorS()])
            self.meanpools = nn.ModuleList([nn.AvgPool1d(4, 2, padding=2), nn.AvgPool1d(4, 2, padding=2)])
        def forward(self, y, y_hat):
            y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
            for i, d in enumerate(self.discriminators):
                if i != 0:
                    y = self.meanpools[i - 1](y); y_hat = self.meanpools[i - 1](y_hat)
                y_d_r, fmap_r = d(y); y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r); fmap_rs.append(fmap_r); y_d_gs.append(y_d_g); fmap_gs.append(fmap_g)
            return y_d_rs, y_d_gs, fmap_rs, fmap_gs
    def feature_loss(fmap_r, fmap_g):
        loss = 0
        for dr, dg in zip(fmap_r, fmap_g):
            for rl, gl in zip(dr, dg):
                loss += torch.mean(torch.abs(rl - gl))
        return loss * 2
    def discriminator_loss(disc_real_outputs, disc_generated_outputs):
        loss = 0
        for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
            loss += torch.mean((1 - dr) ** 2) + torch.mean(dg ** 2)
        return loss
    def generator_loss(disc_outputs):
        loss = 0
        for dg in disc_outputs:
            loss += torch.mean((1 - dg) ** 2)
        return loss
    def stft_mag(x):
        spec = torch.stft(x, n_fft=16, hop_length=4, win_length=16, window=torch.hann_window(16), return_complex=True, center=True, pad_mode='reflect')
        return torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    G, D = Generator(), MSD()
    optG = optim.AdamW(G.parameters(), 2e-4, betas=[0.8, 0.99])
    optD = optim.AdamW(D.parameters(), 2e-4, betas=[0.8, 0.99])
    schG = optim.lr_scheduler.ExponentialLR(optG, gamma=0.999)
    mel = torch.randn(2, 4, 8); y = torch.sin(torch.linspace(0, 20, 32)).repeat(2, 1, 1) * 0.5
    hist = []
    for it in range(2):
        y_g_hat = G(mel)
        optD.zero_grad()
        y_d_rs, y_d_gs, _, _ = D(y, y_g_hat.detach())
        loss_disc = discriminator_loss(y_d_rs, y_d_gs)
        loss_disc.backward(); optD.step()
        optG.zero_grad()
        sc = F.l1_loss(stft_mag(y_g_hat.squeeze(1)).log(), stft_mag(y.squeeze(1)).log()) * 45
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = D(y, y_g_hat)
        loss_gen = generator_loss(y_d_gs) + feature_loss(fmap_rs, fmap_gs) + sc
        loss_gen.backward(); optG.step(); schG.step()
        hist.append([loss_disc.item(), loss_gen.item(), sc.item()])
    grads = [p.grad for p in G.parameters()]
    names = sorted(n for n, _ in G.named_parameters())
    G.eval()
    for l in G.ups:
        if hasattr(l, 'weight_g'):
            nn.utils.remove_weight_norm(l)
        else:
            torch.nn.utils.parametrize.remove_parametrizations(l, 'weight')
    for l in G.resblocks:
        l.remove_weight_norm()
    nn.utils.remove_weight_norm(G.conv_pre); nn.utils.remove_weight_norm(G.conv_post)
    with torch.no_grad():
        out = G(mel)
    return hist, grads, names, out, sorted(G.state_dict().keys())


def modes(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(20)
    a = nn.utils.spectral_norm(nn.Linear(3, 3))
    b = nn.utils.parametrizations.spectral_norm(nn.Linear(3, 3))
    x = torch.randn(2, 3)
    out = []
    with torch.no_grad():
        out += [a(x), b(x)]
    with torch.inference_mode():
        out += [a(x), b(x)]
    out += [a.weight_u.clone(), b.parametrizations.weight[0]._u.clone()]
    y = a(x).sum() + b(x).sum()
    y.backward()
    out += [a.weight_orig.grad, b.parametrizations.weight.original.grad, a.weight.requires_grad, a.weight.is_leaf]
    opt = torch.optim.SGD(list(a.parameters()) + list(b.parameters()), lr=0.1)
    opt.zero_grad(set_to_none=False)
    out.append([p.grad.abs().sum() for p in a.parameters()])
    a.zero_grad()
    out.append([p.grad is None for p in a.parameters()])
    # forward twice then one backward (the G step in many repos calls D twice)
    y = a(x).sum() + a(x * 2).sum()
    y.backward()
    out.append(a.weight_orig.grad)
    c = copy.deepcopy(b)
    out.append(c(x))
    out.append(c.parametrizations.weight[0]._u)  # (a fixed point of the power iteration, to rounding)
    return out

def metrics(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(19)
    feats_r = torch.randn(40, 5, dtype=torch.float64); feats_f = torch.randn(40, 5, dtype=torch.float64) * 1.2 + 0.3
    mu1, mu2 = feats_r.mean(0), feats_f.mean(0)
    s1, s2 = torch.cov(feats_r.T), torch.cov(feats_f.T)
    ev, V = torch.linalg.eigh(s1)
    s1_half = V @ torch.diag(ev.clamp(min=0).sqrt()) @ V.T
    M = s1_half @ s2 @ s1_half
    ev2 = torch.linalg.eigvalsh(M)
    fid = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * ev2.clamp(min=0).sqrt().sum()
    eigs = torch.linalg.eigvals(s1 @ s2)
    fid2 = (mu1 - mu2).dot(mu1 - mu2) + s1.trace() + s2.trace() - 2 * eigs.sqrt().real.sum()
    d = feats_r.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    m_ = feats_r.shape[0]
    kxx, kyy, kxy = k(feats_r, feats_r), k(feats_f, feats_f), k(feats_r, feats_f)
    kid = (kxx.sum() - kxx.diagonal().sum()) / (m_ * (m_ - 1)) + (kyy.sum() - kyy.trace()) / (m_ * (m_ - 1)) - 2 * kxy.mean()
    logits = torch.randn(30, 6)
    p_yx = F.softmax(logits, dim=1)
    p_y = p_yx.mean(0, keepdim=True)
    kl = p_yx * (torch.log(p_yx + 1e-12) - torch.log(p_y + 1e-12))
    is_score = kl.sum(1).mean().exp()
    splits = torch.stack([(c * (c.log() - c.mean(0, keepdim=True).log())).sum(1).mean().exp() for c in p_yx.chunk(3)])
    dist = torch.cdist(feats_r.float(), feats_f.float())
    pd = F.pdist(feats_r[:6].float())
    prec = (dist.min(1).values < 1.5).float().mean()
    img = (torch.rand(2, 3, 4, 4) * 2 - 1)
    with torch.no_grad():
        u8 = img.clamp_(-1, 1).add(1).mul(127.5).round().byte()
        u8b = ((img + 1) * 127.5).to(torch.uint8)
    return fid, fid2, kid, is_score, splits, splits.std(), dist, pd, prec, u8, u8b, eigs.dtype == torch.complex128


# ----------------------------------------------------------------------------------------------
# the tests: each compares with PyTorch where installed, and checks literals and invariants always
# ----------------------------------------------------------------------------------------------


def test_spectral_norm_hook_state_across_train_and_eval():
    ours, _ = run_both(sn_old, rtol=1e-5, atol=1e-6)
    assert ours['Conv2dkeys'] == ['bias', 'weight_orig', 'weight_u', 'weight_v']
    assert ours['Conv2dafter'] == ['bias', 'weight']
    for name in ['Conv2d', 'ConvTranspose2d', 'Linear', 'Embedding']:
        # training moved u; eval did not; the removed weight is W / (u · W v) with eval's u and v
        assert not np.allclose(ours[name + 'u0'], ours[name + 'u1'])
        np.testing.assert_array_equal(ours[name + 'u1'], ours[name + 'u2'])
        w = ours[name + 'sdw']
        mat = (np.swapaxes(w, 0, 1) if name == 'ConvTranspose2d' else w).reshape(ours[name + 'u1'].shape[0], -1)
        sigma = ours[name + 'u1'] @ mat @ ours[name + 'v1']
        np.testing.assert_allclose(ours[name + 'w'], w / sigma, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours['Lineary'][0, :3], LITERALS['sn_old'], rtol=1e-5)


def test_spectral_norm_parametrization_state_across_train_and_eval():
    ours, _ = run_both(sn_new, rtol=1e-4, atol=1e-5)  # (float32 convolutions: oneDNN's AVX-512 sums 5e-5 apart)
    assert ours['Linearkeys'] == ['bias', 'parametrizations.weight.0._u', 'parametrizations.weight.0._v',
                                  'parametrizations.weight.original']
    assert ours['Linearafter'] == ['bias', 'weight']
    for name in ['Conv2d', 'ConvTranspose2d', 'Linear']:
        np.testing.assert_array_equal(ours[name + 'eval'], ours[name + 'eval2'])  # eval runs no power iteration
        # sigma's estimate u·Wv is at most W's norm, so the normed weight's norm is at least 1, and close to it
        assert 1.0 - 1e-5 <= ours[name + 'sigma'] < 1.01
    np.testing.assert_allclose(ours['Lineary'][0, :3], LITERALS['sn_new'], rtol=1e-5)


def test_dcgan_two_optimizers_and_a_grid_by_hand():
    ours, _ = run_both(dcgan, rtol=1e-4, atol=1e-5)
    hist, fake, grid, grid2, img, running_mean, tracked, params = ours
    np.testing.assert_allclose(np.array(hist)[:, :2], LITERALS['dcgan'], rtol=1e-4)
    assert tracked == 9  # BatchNorm in D sees 3 batches a step (real, fake.detach() and G's fake)
    assert img.dtype == np.uint8 and img.shape == (35, 35, 1)
    np.testing.assert_array_equal(grid[:, 1:17, 1:17], fake[0])
    np.testing.assert_array_equal(grid[:, 18:34, 18:34], fake[3])
    np.testing.assert_array_equal(grid2[:, 16:, :16], fake[2])
    assert np.all(np.abs(fake) <= 1)


def test_wgan_weight_clipping_with_rmsprop():
    ours, _ = run_both(wgan_clip, rtol=1e-4, atol=5e-6)  # (gradients of 1e-5: 2e-6 apart on an AVX-512 machine)
    hist, d_params, d_grads, g_grads, state = ours
    np.testing.assert_allclose(np.array(hist), LITERALS['wgan_clip'], rtol=1e-4)
    # one RMSprop step of lr 5e-3 past the clip: |p| <= 0.05 + lr / sqrt(1 - alpha) at most
    assert all(np.abs(p).max() <= 0.05 + 5e-3 / np.sqrt(0.01) + 1e-6 for p in d_params)
    assert all(g is not None for g in g_grads) and sorted(state) == ['square_avg', 'step']


def test_wgan_gp_and_r1_penalty():
    ours, _ = run_both(wgan_gp, rtol=1e-4, atol=1e-6)
    hist, r1, d_grads, g_params = ours
    np.testing.assert_allclose(np.array(hist), LITERALS['wgan_gp'], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r1, LITERALS['r1'], rtol=1e-4)


@pytest.mark.parametrize("which", ['sn', 'bn', 'in', 'gn', 'up', 'zero'])
def test_gradient_penalty_through_layers(which):
    ours, _ = run_both(gp_layers, which, rtol=1e-4, atol=1e-6)
    out, g, gp, grads = ours
    if which == 'zero':  # a dead critic: its input gradient is 0, and the norm's gradient at 0 is 0, not nan
        assert np.all(g == 0) and gp == 1.0 and all(np.all(np.isfinite(x)) for x in grads)
    else:
        np.testing.assert_allclose(gp, LITERALS['gp_' + which], rtol=1e-4)


def test_conditional_projection_gan_hinge_and_non_saturating():
    ours, _ = run_both(cgan, rtol=1e-4, atol=1e-6)
    hist, hinge, ns, grads, u = ours
    np.testing.assert_allclose(np.array(hist), LITERALS['cgan'], rtol=1e-4)
    np.testing.assert_allclose([hinge, ns], LITERALS['cgan_hinge'], rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(u), 1.0, rtol=1e-6)


def test_pix2pix_unet_and_patchgan():
    ours, _ = run_both(pix2pix, rtol=1e-4, atol=1e-6)
    hist = np.array(ours[0])
    np.testing.assert_allclose(hist, LITERALS['pix2pix'], rtol=1e-4)
    assert np.all(hist[:, 2] > 1.0)  # the clipped gradient norms are those before clipping


def test_cyclegan_image_pool_and_lambda_lr():
    ours, _ = run_both(cycle, rtol=1e-4, atol=1e-6)
    hist = np.array(ours[0])
    np.testing.assert_allclose(hist[:, :2], LITERALS['cycle'], rtol=1e-4)
    np.testing.assert_allclose(hist[:, 2], [2e-4, 2e-4 * 2 / 3, 2e-4 / 3], rtol=1e-6)


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


def test_gan_utility_errors_and_gradient_clipping():
    ours = plain(errors(OURS))
    torch_modules = pytorch()
    if torch_modules is not None:
        theirs = plain(errors(torch_modules))
        for a, b in zip(ours, theirs):
            if isinstance(a, tuple) and isinstance(a[0], str):  # (an error: the class, and PyTorch's words first)
                assert a[0] == b[0] and a[1].startswith(b[1]), (a, b)
            else:
                run_both_same(a, b)
    assert ours[0][0] == 'RuntimeError' and 'two spectral_norm hooks' in ours[0][1]
    assert ours[4] == 4.0 and ours[6] == pytest.approx(2.5)
    np.testing.assert_allclose(ours[5][0], [0.75, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(ours[8][0], [0.01, 0.01, 0.0], rtol=1e-6)
    assert ours[9][1].startswith('element 0 of tensors does not require grad')
    assert ours[10][1].startswith('One of the differentiated Tensors does not require grad')
    assert ours[12] == [False, False]


def run_both_same(a, b):
    from .pytorch_programs import assert_same

    assert_same(a, b, 1e-6, 1e-7)


def test_infogan_feature_matching_checkpoint_and_unrolled_backup():
    ours, _ = run_both(infogan, rtol=1e-4, atol=1e-6)
    hist, unrolled, sample, vec, d2_params, mode_seeking, it, step, group_keys = ours
    np.testing.assert_allclose(np.array(hist), LITERALS['infogan'], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in d2_params]), 2 * vec)
    assert it == 3 and step == 5.0


def test_parametrize_cached_and_state_dict_round_trips():
    ours, _ = run_both(cached_sn, rtol=1e-5, atol=1e-6)
    y, grad, y2, v, keys, y_old, metadata, whole, bias = ours
    assert whole is True and bias is False
    np.testing.assert_allclose(y[0], LITERALS['cached_sn'], rtol=1e-5)


def test_sagan_hand_written_spectral_norm():
    ours, _ = run_both(sagan_own_sn, rtol=1e-4, atol=1e-6)
    hist, keys, params, weight, requires, n_optimized = ours
    assert keys == ['c.module.bias', 'c.module.weight_bar', 'c.module.weight_u', 'c.module.weight_v',
                    'l.module.bias', 'l.module.weight_bar', 'l.module.weight_u', 'l.module.weight_v']
    assert n_optimized == 4
    np.testing.assert_allclose(hist, LITERALS['sagan_own_sn'], rtol=1e-4)


def test_esrgan_relativistic_and_perceptual_losses():
    ours, _ = run_both(esrgan, rtol=1e-4, atol=1e-6)
    sr, loss, g_grads, d_grads, blend, lo2, lo3 = ours
    assert sr.shape == (2, 3, 12, 12) and lo2.shape == (2, 3, 6, 6) and lo3.shape == (2, 3, 5, 7)
    np.testing.assert_allclose(loss, LITERALS['esrgan'], rtol=1e-5)


def test_grad_scaler_gradient_penalty_progressive_growing_and_a_reversal_hook():
    # (autocast itself is off: chainrule has no bfloat16; the scaler's penalty recipe from PyTorch's AMP notes runs)
    ours, _ = run_both(amp_gp, rtol=1e-4, atol=1e-6)
    hist, d_grads, h, lrs, state_keys, initial_lrs, reversed_grad, d_params = ours
    np.testing.assert_allclose([row[:2] for row in hist], LITERALS['amp_gp'], rtol=1e-4)
    np.testing.assert_allclose(lrs, [0.0025, 0.0025, 0.005])
    assert state_keys == [0, 1, 2, 3] and initial_lrs == [0.01, None, None]
    np.testing.assert_array_equal(reversed_grad, np.full((3, 4), -3.0))


def test_spectral_norms_follow_a_model_to_float64():
    ours, _ = run_both(dtypes, rtol=1e-10, atol=1e-12)
    assert ours[1:4] == (True, True, True) and ours[6] is True
    np.testing.assert_allclose(ours[0][0], LITERALS['dtypes'], rtol=1e-7)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_hifigan_weight_norm_multi_scale_discriminators_and_stft_loss():
    # the log-magnitude STFT loss amplifies rounding: gradients of size ~10 agree to 1e-3 absolute
    ours, _ = run_both(melgan, rtol=1e-4, atol=1e-3)
    hist, grads, names, out, keys = ours
    np.testing.assert_allclose(hist, LITERALS['melgan'], rtol=1e-4)
    assert 'ups.0.parametrizations.weight.original0' in names and 'conv_pre.weight_g' in names
    # both weight norms removed: plain weights again
    assert len(keys) == 16 and 'ups.0.weight' in keys and not any('_g' in k or 'parametrizations' in k for k in keys)
    assert np.all(np.abs(out) <= 1)


def test_spectral_norms_under_no_grad_inference_mode_and_deepcopy():
    ours, _ = run_both(modes, rtol=1e-5, atol=1e-6)
    # train-mode forwards under no_grad and inference_mode still step the power iteration
    assert not np.array_equal(ours[0], ours[2])
    assert ours[8] is True and ours[9] is False  # the hook's weight is computed, not a leaf
    assert ours[10] == [0.0, 0.0] and ours[11] == [True, True]  # zero_grad(set_to_none=False), then module.zero_grad()
    np.testing.assert_allclose(ours[14], ours[5], rtol=1e-5)  # the deepcopy's u: the same fixed point
    np.testing.assert_allclose(ours[0][0], [0.4654574, -0.12284949, -1.0504853], rtol=1e-5)


def test_fid_kid_and_inception_score_by_hand():
    ours, _ = run_both(metrics, rtol=1e-5, atol=1e-6)
    fid, fid2, kid, is_score, splits, splits_std, dist, pd, prec, u8, u8b, complex_eigs = ours
    np.testing.assert_allclose(fid, fid2, rtol=1e-8)  # the symmetric square root and eigvals(s1 s2) agree
    assert 1.0 <= is_score <= 6.0 and complex_eigs is True
    np.testing.assert_allclose([fid, kid, is_score], [1.387455755601291, 0.32583281390878227, 1.3123539686],
                               rtol=1e-6)
    assert u8.dtype == np.uint8 and u8b.dtype == np.uint8 and np.all(np.abs(u8.astype(int) - u8b) <= 1)
