# ruff: noqa: B007, E501, E702, F841  (the programs are kept as their authors wrote them)
"""Generative adversarial networks, run as tests/probe28_gan_common.py says. Training and its losses:
pytorch/examples' DCGAN (``weights_init`` by class name, ``ConvTranspose2d``/``BatchNorm2d``/``LeakyReLU``, two Adam
optimisers with betas (0.5, 0.999), the D step on ``fake.detach()``) and an image grid built by hand; WGAN with
weight clipping (``p.data.clamp_``, RMSprop, ``requires_grad`` toggled), WGAN-GP (``autograd.grad`` with
``create_graph=True`` on interpolates) and R1, the gradient penalty through many layer kinds, and under a GradScaler
with progressive growing and a reversal hook; a conditional GAN (``nn.Embedding`` labels, ``torch.cat``, a projection
discriminator with a spectrally normed embedding, ``BCEWithLogitsLoss`` with smoothed labels, hinge and
non-saturating losses); InfoGAN (categorical and Gaussian codes, noisy flipped labels, feature matching by a forward
hook, a checkpoint through ``torch.save`` / ``torch.load``, an unrolled-D backup, ``parameters_to_vector``, mode
seeking)."""

import copy
import io
import itertools

import numpy as np
import pytest

from .probe28_gan_common import LITERALS
from .pytorch_programs import run_both


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


def test_infogan_feature_matching_checkpoint_and_unrolled_backup():
    ours, _ = run_both(infogan, rtol=1e-4, atol=1e-6)
    hist, unrolled, sample, vec, d2_params, mode_seeking, it, step, group_keys = ours
    np.testing.assert_allclose(np.array(hist), LITERALS['infogan'], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in d2_params]), 2 * vec)
    assert it == 3 and step == 5.0


def test_grad_scaler_gradient_penalty_progressive_growing_and_a_reversal_hook():
    # (autocast itself is off: chainrule has no bfloat16; the scaler's penalty recipe from PyTorch's AMP notes runs)
    ours, _ = run_both(amp_gp, rtol=1e-4, atol=1e-6)
    hist, d_grads, h, lrs, state_keys, initial_lrs, reversed_grad, d_params = ours
    np.testing.assert_allclose([row[:2] for row in hist], LITERALS['amp_gp'], rtol=1e-4)
    np.testing.assert_allclose(lrs, [0.0025, 0.0025, 0.005])
    assert state_keys == [0, 1, 2, 3] and initial_lrs == [0.01, None, None]
    np.testing.assert_array_equal(reversed_grad, np.full((3, 4), -3.0))
