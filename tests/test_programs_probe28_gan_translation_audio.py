# ruff: noqa: B007, E501, E701, E702, F841  (the programs are kept as their authors wrote them)
"""Generative adversarial networks, run as tests/probe28_gan_common.py says. Image translation, super-resolution and
audio: Pix2Pix (U-Net skips, ``InstanceNorm2d``, PatchGAN, ``set_requires_grad``, ``clip_grad_norm_``) and CycleGAN
(reflection-padded ResNet generators, cycle and identity losses, the image pool, ``LambdaLR``); ESRGAN's RRDB,
PixelShuffle, relativistic and perceptual losses; HiFi-GAN / MelGAN (weight norm both ways, multi-scale
discriminators, an STFT loss)."""

import random

import numpy as np
import pytest

from .probe28_gan_common import LITERALS
from .pytorch_programs import run_both


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


def test_esrgan_relativistic_and_perceptual_losses():
    ours, _ = run_both(esrgan, rtol=1e-4, atol=1e-6)
    sr, loss, g_grads, d_grads, blend, lo2, lo3 = ours
    assert sr.shape == (2, 3, 12, 12) and lo2.shape == (2, 3, 6, 6) and lo3.shape == (2, 3, 5, 7)
    np.testing.assert_allclose(loss, LITERALS['esrgan'], rtol=1e-5)


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
