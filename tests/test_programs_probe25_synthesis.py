# ruff: noqa: B007, B023, E501, E701, E702, E721, E731, F841, N806, SIM108, UP032  (the programs are kept as their authors write them)
"""Image synthesis by optimisation and image-to-image networks (see tests/pytorch_programs.py), as the PyTorch
tutorials, pytorch/examples, CycleGAN/pix2pix, Lucid/Lucent and the super-resolution papers' code write them, each
run on chainrule and on PyTorch from the same seeds, comparing values and gradients, and checked against NumPy by
hand, literals or invariants where PyTorch is not installed.

Gatys style transfer (a random-weight conv stack sliced into an ``nn.Sequential`` with content and style losses
recording in forward, Gram matrices by ``mm`` and ``bmm``, ``optim.LBFGS`` with a closure and ``clamp_`` under
``no_grad``, the strong-Wolfe line search), total variation; DeepDream (a forward hook, jitter by ``torch.roll``,
octaves by ``interpolate``, gradient normalisation, clamping by tensor bounds); Fourier-parametrised images with
decorrelated colours (``torch.fft.irfft2``, ``view_as_complex``, a complex Adam parameter, ``linalg.norm(...,
axis=0)``); the fast style transfer network (reflection padding, affine InstanceNorm, upsample + conv), conditional
instance norm and AdaIN; CycleGAN (ResNet generator, PatchGAN, LSGAN targets as buffers, the image pool, L1 cycle
loss, LambdaLR) and pix2pix (the U-Net whose in-place LeakyReLU rewrites the skip input before ``cat``); WGAN-GP
and R1 penalties by ``autograd.grad(create_graph=True)``; ESPCN/SRCNN with ``PixelShuffle`` and bicubic resizing;
adversarial patches, FGSM/PGD and feature inversion; texture synthesis by einsum Grams, sliced Wasserstein,
patch matching with ``unfold``/``fold``, a Laplacian pyramid; WCT whitening by ``svd`` (and differentiated through ``eigh``/``svd``); guided backpropagation by
backward hooks, Lucid's redirected ReLU as an ``autograd.Function``, editing an ``nn.Sequential``; StyleGAN2's modulated convolution, noise, upfirdn
by a grouped transposed convolution, minibatch std and path-length penalty; a perceptual loss over namedtuple
features; SSIM; and what these programs
share memory with (``.data``, ``detach``, ``numpy``, views)."""

import collections
import copy
import functools
import math
import random
import warnings

import numpy as np

from .pytorch_programs import OURS, run_both


def style_transfer(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=False), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval()
    for p in cnn.parameters():
        p.requires_grad_(False)
    content = torch.rand(1, 3, 16, 16); style = torch.rand(1, 3, 16, 16)
    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d)
    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__(); self.target = target.detach()
        def forward(self, input):
            self.loss = F.mse_loss(input, self.target); return input
    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super().__init__(); self.target = gram_matrix(target_feature).detach()
        def forward(self, input):
            G = gram_matrix(input); self.loss = F.mse_loss(G, self.target); return input
    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean = torch.tensor(mean).view(-1, 1, 1); self.std = torch.tensor(std).view(-1, 1, 1)
        def forward(self, img):
            return (img - self.mean) / self.std
    norm = Normalization([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    model = nn.Sequential(norm)
    content_losses, style_losses = [], []
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1; name = 'conv_{}'.format(i)
        elif isinstance(layer, nn.ReLU):
            name = 'relu_{}'.format(i); layer = nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = 'pool_{}'.format(i)
        model.add_module(name, layer)
        if name == 'conv_3':
            target = model(content).detach(); cl = ContentLoss(target)
            model.add_module("content_loss_{}".format(i), cl); content_losses.append(cl)
        if name in ('conv_1', 'conv_2', 'conv_3', 'conv_4'):
            target_feature = model(style).detach(); sl = StyleLoss(target_feature)
            model.add_module("style_loss_{}".format(i), sl); style_losses.append(sl)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], (ContentLoss, StyleLoss)):
            break
    model = model[:(i + 1)]
    input_img = content.clone()
    input_img.requires_grad_(True)
    model.requires_grad_(False)
    optimizer = optim.LBFGS([input_img])
    run = [0]; losses = []
    while run[0] <= 6:
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = sum(sl.loss for sl in style_losses) * 1000
            content_score = sum(cl.loss for cl in content_losses)
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            losses.append(loss.item())
            return style_score + content_score
        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    return dict(losses=losses[:8], img=input_img, names=[n for n, _ in model.named_children()], typ=str(type(model).__name__))


def gram_bmm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    def gram(y):
        (b, ch, h, w) = y.size()
        features = y.view(b, ch, w * h)
        features_t = features.transpose(1, 2)
        return features.bmm(features_t) / (ch * h * w)
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    g = gram(x)
    t = torch.randn(2, 4, 4)
    loss = F.mse_loss(g, t.expand_as(g))
    loss.backward()
    def tv(img, weight):
        b, c, h, w = img.size()
        tv_h = torch.pow(img[:, :, 1:, :] - img[:, :, :-1, :], 2).sum()
        tv_w = torch.pow(img[:, :, :, 1:] - img[:, :, :, :-1], 2).sum()
        return weight * (tv_h + tv_w) / (b * c * h * w)
    y = torch.randn(1, 3, 8, 8, requires_grad=True)
    l2 = tv(y, 2.0) + (torch.abs(y[:, :, :, :-1] - y[:, :, :, 1:]).mean() + torch.abs(y[:, :, :-1, :] - y[:, :, 1:, :]).mean())
    l2.backward()
    return dict(g=g, gx=x.grad, l2=l2, gy=y.grad, dt=g.dtype == torch.float32, x=x, t=t, y=y)


def deepdream(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    acts = {}
    def hook(module, inp, out):
        acts['x'] = out
    h = net[2].register_forward_hook(hook)
    base = torch.rand(1, 3, 12, 12)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    octaves = []
    img = base
    for i in range(2):
        octaves.append(img)
        img = F.interpolate(img, scale_factor=1 / 1.4, mode='bilinear', align_corners=False, recompute_scale_factor=False)
    detail = torch.zeros_like(octaves[-1])
    out_hist = []
    for oi, oct_base in enumerate(octaves[::-1]):
        if oi > 0:
            detail = F.interpolate(detail, size=oct_base.shape[-2:], mode='bilinear', align_corners=False)
        x = (oct_base + detail).clone().detach().requires_grad_(True)
        for it in range(3):
            ox, oy = np.random.RandomState(it + oi).randint(-2, 3, 2)
            xj = torch.roll(x, shifts=(int(ox), int(oy)), dims=(2, 3))
            xj = xj.detach().requires_grad_(True)
            net((xj - mean) / std)
            loss = acts['x'].norm()
            loss.backward()
            g = xj.grad
            g = g / (g.abs().mean() + 1e-8)
            with torch.no_grad():
                xj += 0.01 * g
                xj.clamp_(-mean / std, (1 - mean) / std)  # tensor bounds, broadcast
                x = torch.roll(xj, shifts=(-int(ox), -int(oy)), dims=(2, 3)).detach()
            out_hist.append(loss.item())
        detail = x - oct_base
    h.remove()
    return dict(out=x, hist=out_hist, nhooks=len(net[2]._forward_hooks))


def fourier(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(3)
    h, w = 8, 10
    def rfft2d_freqs(h, w):
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.fftfreq(w)[: w // 2 + 1]
        return np.sqrt(fx * fx + fy * fy)
    freqs = rfft2d_freqs(h, w)
    init = torch.randn(2, 1, 3, *freqs.shape) * 0.01
    spectrum = nn.Parameter(init)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** 1.0
    scale = torch.tensor(scale).float()[None, None]
    color_corr = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    max_norm = torch.max(torch.linalg.norm(color_corr, axis=0))
    def image():
        sc = torch.complex(spectrum[0], spectrum[1]) * scale
        img = torch.fft.irfft2(sc, s=(h, w), norm='ortho')
        img = img[:, :3, :h, :w] / 4.0
        flat = img.permute(0, 2, 3, 1)
        flat = torch.matmul(flat, (color_corr / max_norm).T)
        img = flat.permute(0, 3, 1, 2)
        return torch.sigmoid(img)
    opt = torch.optim.Adam([spectrum], lr=0.05)
    conv = nn.Conv2d(3, 4, 3)
    for p in conv.parameters(): p.requires_grad_(False)
    ls = []
    for _ in range(4):
        opt.zero_grad()
        im = image()
        loss = -conv(im)[:, 1].mean()
        loss.backward(); opt.step(); ls.append(loss.item())
    sp = torch.fft.rfft2(im)
    return dict(ls=ls, im=im, g=spectrum.grad, dt=sp.dtype == torch.complex64, sp_shape=tuple(sp.shape))


def transformer_net(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    class ConvLayer(nn.Module):
        def __init__(self, i, o, k, s):
            super().__init__()
            self.reflection_pad = nn.ReflectionPad2d(k // 2)
            self.conv2d = nn.Conv2d(i, o, k, s)
        def forward(self, x):
            return self.conv2d(self.reflection_pad(x))
    class ResidualBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = ConvLayer(c, c, 3, 1); self.in1 = nn.InstanceNorm2d(c, affine=True)
            self.conv2 = ConvLayer(c, c, 3, 1); self.in2 = nn.InstanceNorm2d(c, affine=True)
            self.relu = nn.ReLU()
        def forward(self, x):
            residual = x
            out = self.relu(self.in1(self.conv1(x)))
            out = self.in2(self.conv2(out))
            return out + residual
    class UpsampleConvLayer(nn.Module):
        def __init__(self, i, o, k, s, upsample=None):
            super().__init__()
            self.upsample = upsample
            self.reflection_pad = nn.ReflectionPad2d(k // 2)
            self.conv2d = nn.Conv2d(i, o, k, s)
        def forward(self, x):
            x_in = x
            if self.upsample:
                x_in = nn.functional.interpolate(x_in, mode='nearest', scale_factor=self.upsample)
            return self.conv2d(self.reflection_pad(x_in))
    class TransformerNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = ConvLayer(3, 4, 9, 1); self.in1 = nn.InstanceNorm2d(4, affine=True)
            self.conv2 = ConvLayer(4, 8, 3, 2); self.in2 = nn.InstanceNorm2d(8, affine=True)
            self.res1 = ResidualBlock(8); self.res2 = ResidualBlock(8)
            self.deconv1 = UpsampleConvLayer(8, 4, 3, 1, upsample=2); self.in4 = nn.InstanceNorm2d(4, affine=True)
            self.deconv3 = ConvLayer(4, 3, 9, 1)
            self.relu = nn.ReLU()
        def forward(self, X):
            y = self.relu(self.in1(self.conv1(X)))
            y = self.relu(self.in2(self.conv2(y)))
            y = self.res2(self.res1(y))
            y = self.relu(self.in4(self.deconv1(y)))
            return self.deconv3(y)
    net = TransformerNet()
    opt = optim.Adam(net.parameters(), 1e-3)
    mse = nn.MSELoss()
    x = torch.rand(2, 3, 12, 12) * 255
    losses = []
    for _ in range(2):
        opt.zero_grad()
        y = net(x)
        loss = mse(y, x / 255.) + 1e-6 * (torch.sum(torch.abs(y[:, :, :, :-1] - y[:, :, :, 1:])) + torch.sum(torch.abs(y[:, :, :-1, :] - y[:, :, 1:, :])))
        loss.backward(); opt.step(); losses.append(loss.item())
    sd = net.state_dict()
    keys = [k for k in sd.keys()]
    inorm = nn.InstanceNorm2d(3)
    z = inorm(x[:1])
    net.eval()
    with torch.no_grad():
        out = net(x[:1]).clamp(0, 255)
    return dict(losses=losses, keys=keys, g=net.conv1.conv2d.weight.grad, z=z, out=out, nb=len(list(inorm.buffers())), rs=str(inorm), x=x)


def cond_in(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(4)
    class ConditionalInstanceNorm2d(nn.Module):
        def __init__(self, num_features, num_classes):
            super().__init__()
            self.num_features = num_features
            self.bn = nn.InstanceNorm2d(num_features, affine=False)
            self.embed = nn.Embedding(num_classes, num_features * 2)
            self.embed.weight.data[:, :num_features].normal_(1, 0.02)
            self.embed.weight.data[:, num_features:].zero_()
        def forward(self, x, y):
            out = self.bn(x)
            gamma, beta = self.embed(y).chunk(2, 1)
            return gamma.view(-1, self.num_features, 1, 1) * out + beta.view(-1, self.num_features, 1, 1)
    cin = ConditionalInstanceNorm2d(4, 3)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    y = torch.tensor([0, 2])
    out = cin(x, y)
    (out * torch.arange(out.numel()).view_as(out).float().sin()).sum().backward()
    # adaptive instance norm (AdaIN)
    def calc_mean_std(feat, eps=1e-5):
        N, C = feat.size()[:2]
        feat_var = feat.view(N, C, -1).var(dim=2) + eps
        feat_std = feat_var.sqrt().view(N, C, 1, 1)
        feat_mean = feat.view(N, C, -1).mean(dim=2).view(N, C, 1, 1)
        return feat_mean, feat_std
    def adain(content_feat, style_feat):
        size = content_feat.size()
        style_mean, style_std = calc_mean_std(style_feat)
        content_mean, content_std = calc_mean_std(content_feat)
        normalized_feat = (content_feat - content_mean.expand(size)) / content_std.expand(size)
        return normalized_feat * style_std.expand(size) + style_mean.expand(size)
    c = torch.randn(2, 4, 6, 6, requires_grad=True); s = torch.randn(2, 4, 6, 6) * 3 + 1
    t = adain(c, s)
    t.pow(2).mean().backward()
    return dict(out=out, gx=x.grad, ge=cin.embed.weight.grad, t=t, gc=c.grad, x=x, s=s, emb=cin.embed.weight)


def cyclegan(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(5); random.seed(0)
    class NLayerDiscriminator(nn.Module):
        def __init__(self, input_nc, ndf=4, n_layers=2, norm_layer=nn.InstanceNorm2d):
            super().__init__()
            use_bias = norm_layer == nn.InstanceNorm2d
            kw = 4; padw = 1
            sequence = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
            nf_mult = 1
            for n in range(1, n_layers):
                nf_mult_prev = nf_mult; nf_mult = min(2 ** n, 8)
                sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                             norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
            sequence += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
            self.model = nn.Sequential(*sequence)
        def forward(self, input):
            return self.model(input)
    class ResnetBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
                                            nn.Dropout(0.5), nn.ReplicationPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim))
        def forward(self, x):
            return x + self.conv_block(x)
    G = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 4, 7), nn.InstanceNorm2d(4), nn.ReLU(True),
                      nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.InstanceNorm2d(8), nn.ReLU(True),
                      ResnetBlock(8),
                      nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(4), nn.ReLU(True),
                      nn.ReflectionPad2d(3), nn.Conv2d(4, 3, 7), nn.Tanh())
    F_ = G  # same for brevity
    D = NLayerDiscriminator(3)
    def init_weights(net, init_type='normal', init_gain=0.02):
        def init_func(m):
            classname = m.__class__.__name__
            if hasattr(m, 'weight') and (classname.find('Conv') != -1 or classname.find('Linear') != -1):
                nn.init.normal_(m.weight.data, 0.0, init_gain)
                if hasattr(m, 'bias') and m.bias is not None:
                    nn.init.constant_(m.bias.data, 0.0)
            elif classname.find('BatchNorm2d') != -1:
                nn.init.normal_(m.weight.data, 1.0, init_gain); nn.init.constant_(m.bias.data, 0.0)
        net.apply(init_func)
    init_weights(G); init_weights(D)
    class GANLoss(nn.Module):
        def __init__(self, gan_mode, target_real_label=1.0, target_fake_label=0.0):
            super().__init__()
            self.register_buffer('real_label', torch.tensor(target_real_label))
            self.register_buffer('fake_label', torch.tensor(target_fake_label))
            self.loss = nn.MSELoss() if gan_mode == 'lsgan' else nn.BCEWithLogitsLoss()
        def get_target_tensor(self, prediction, target_is_real):
            target_tensor = self.real_label if target_is_real else self.fake_label
            return target_tensor.expand_as(prediction)
        def __call__(self, prediction, target_is_real):
            return self.loss(prediction, self.get_target_tensor(prediction, target_is_real))
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
    crit = GANLoss('lsgan'); l1 = nn.L1Loss()
    pool = ImagePool(2)
    optG = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999)); optD = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    sched = optim.lr_scheduler.LambdaLR(optG, lr_lambda=lambda ep: 1.0 - max(0, ep - 1) / 3.0)
    def set_requires_grad(nets, requires_grad=False):
        for net in nets:
            for p in net.parameters(): p.requires_grad = requires_grad
    G.eval()  # deterministic dropout off
    res = []
    for step in range(3):
        real_A = torch.rand(2, 3, 8, 8) * 2 - 1; real_B = torch.rand(2, 3, 8, 8) * 2 - 1
        fake_B = G(real_A); rec_A = F_(fake_B)
        set_requires_grad([D], False)
        optG.zero_grad()
        loss_G = crit(D(fake_B), True) + l1(rec_A, real_A) * 10.0
        loss_G.backward(); optG.step()
        set_requires_grad([D], True)
        optD.zero_grad()
        fake = pool.query(fake_B)
        loss_D = (crit(D(real_B), True) + crit(D(fake.detach()), False)) * 0.5
        loss_D.backward(); optD.step(); sched.step()
        res.append((loss_G.item(), loss_D.item(), optG.param_groups[0]['lr']))
    return dict(res=res, dshape=tuple(D(real_B).shape), w=D.model[0].weight, pooln=pool.num_imgs)


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


def sr(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(7)
    class ESPCN(nn.Module):
        def __init__(self, upscale_factor):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, (5, 5), (1, 1), (2, 2))
            self.conv2 = nn.Conv2d(8, 4, (3, 3), (1, 1), (1, 1))
            self.conv3 = nn.Conv2d(4, upscale_factor ** 2, (3, 3), (1, 1), (1, 1))
            self.pixel_shuffle = nn.PixelShuffle(upscale_factor)
            nn.init.orthogonal_(self.conv1.weight, nn.init.calculate_gain('relu'))
            nn.init.orthogonal_(self.conv3.weight)
        def forward(self, x):
            x = torch.tanh(self.conv1(x)); x = torch.tanh(self.conv2(x))
            return self.pixel_shuffle(self.conv3(x))
    class SRCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 9, padding=9 // 2); self.conv2 = nn.Conv2d(8, 4, 5, padding=5 // 2)
            self.conv3 = nn.Conv2d(4, 1, 5, padding=5 // 2); self.relu = nn.ReLU(inplace=True)
        def forward(self, x):
            return self.conv3(self.relu(self.conv2(self.relu(self.conv1(x)))))
    hr = torch.rand(2, 1, 12, 12)
    lr_ = F.interpolate(hr, scale_factor=0.5, mode='bicubic', align_corners=False)
    up = F.interpolate(lr_, scale_factor=2, mode='bicubic', align_corners=False).clamp(0, 1)
    net = ESPCN(2); s = SRCNN()
    opt = optim.Adam([{'params': net.parameters()}, {'params': s.parameters(), 'lr': 1e-4}], lr=1e-3)
    out = []
    for _ in range(2):
        opt.zero_grad()
        l = F.mse_loss(net(lr_), hr) + F.mse_loss(s(up), hr)
        l.backward(); opt.step(); out.append(l.item())
    mse = F.mse_loss(net(lr_), hr)
    psnr = 10 * torch.log10(1 / mse)
    x = torch.arange(32.).view(1, 8, 2, 2)
    ps = F.pixel_shuffle(x, 2); pu = F.pixel_unshuffle(ps, 2)
    unsh = nn.PixelUnshuffle(2)(torch.arange(16.).view(1, 1, 4, 4))
    return dict(out=out, psnr=psnr, mse=mse, ps=ps, pu=pu, unsh=unsh, w=net.conv1.weight, lr=lr_, up=up)


def adv_patch(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(8)
    clf = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    clf.eval()
    for p in clf.parameters(): p.requires_grad = False
    patch = torch.zeros(3, 4, 4, requires_grad=True)
    opt = optim.SGD([patch], lr=1.0, momentum=0.9)
    imgs = torch.rand(4, 3, 10, 10)
    target = torch.full((4,), 3, dtype=torch.long)
    hist = []
    for it in range(3):
        p = (torch.tanh(patch) + 1) / 2
        padded = F.pad(p, (2, 4, 3, 3))
        mask = F.pad(torch.ones(3, 4, 4), (2, 4, 3, 3))
        x = imgs * (1 - mask) + padded * mask
        logits = clf(x)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(); loss.backward(); opt.step()
        hist.append(loss.item())
    # FGSM / PGD
    x0 = imgs.clone().requires_grad_(True)
    l = F.cross_entropy(clf(x0), torch.tensor([0, 1, 2, 3]))
    g, = torch.autograd.grad(l, x0)
    adv = (x0 + 0.03 * g.sign()).clamp(0, 1).detach()
    delta = torch.zeros_like(imgs).uniform_(-0.03, 0.03).requires_grad_()
    for _ in range(2):
        l = F.cross_entropy(clf(imgs + delta), torch.tensor([0, 1, 2, 3]))
        l.backward()
        delta.data = (delta + 0.01 * delta.grad.detach().sign()).clamp(-0.03, 0.03)
        delta.grad.zero_()
    return dict(hist=hist, patch=patch, adv=adv, delta=delta, pg=patch.grad)


def inversion(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(9)
    feat = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(6, 6, 3, padding=1))
    for p in feat.parameters(): p.requires_grad_(False)
    target = feat(torch.rand(1, 3, 8, 8))
    x = torch.randn(1, 3, 8, 8).mul_(0.1).requires_grad_()
    opt = optim.Adam([x], lr=0.1)
    sched = optim.lr_scheduler.StepLR(opt, 2, 0.5)
    alpha_norm = lambda x, a=6: x.abs().pow(a).sum()
    tv = lambda x, b=2: ((x[:, :, 1:, :-1] - x[:, :, :-1, :-1]) ** 2 + (x[:, :, :-1, 1:] - x[:, :, :-1, :-1]) ** 2).pow(b / 2).sum()
    hist = []
    for i in range(4):
        opt.zero_grad()
        rep = feat(x)
        loss = (rep - target).norm() / target.norm() + 1e-5 * alpha_norm(x) + 1e-4 * tv(x)
        loss.backward(); opt.step(); sched.step(); hist.append(loss.item())
    # texture synthesis: gram with einsum
    def gram(f):
        b, c, h, w = f.shape
        return torch.einsum('bchw,bdhw->bcd', f, f) / (h * w)
    tex = torch.rand(1, 3, 8, 8)
    y = torch.rand(1, 3, 8, 8, requires_grad=True)
    ltex = sum(F.mse_loss(gram(l(y)), gram(l(tex)), reduction='sum') for l in [feat[:2], feat])
    ltex.backward()
    return dict(hist=hist, x=x, gy=y.grad, lr=sched.get_last_lr())


def lbfgs_wolfe(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    x = torch.rand(1, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3)
    tgt = torch.randn(1, 4, 4, 4)
    opt = optim.LBFGS([x], lr=1, max_iter=5, history_size=3, line_search_fn='strong_wolfe')
    calls = [0]
    def closure():
        opt.zero_grad()
        l = F.mse_loss(F.conv2d(x, w), tgt) + 0.1 * (x[..., 1:] - x[..., :-1]).abs().sum()
        l.backward(); calls[0] += 1
        return l
    ls = [opt.step(closure).item() for _ in range(2)]
    st = opt.state_dict()['state'][0]
    return dict(ls=ls, x=x, calls=calls[0], n_iter=st['n_iter'], func_evals=st['func_evals'], keys=sorted(st.keys()))


def grid_jitter(m):
    torch, F = m.torch, m.F
    torch.manual_seed(4)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    ang = torch.tensor([0.3, -0.2]); sc = torch.tensor([1.1, 0.9])
    theta = torch.zeros(2, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) * sc; theta[:, 0, 1] = -torch.sin(ang) * sc
    theta[:, 1, 0] = torch.sin(ang) * sc; theta[:, 1, 1] = torch.cos(ang) * sc
    grid = F.affine_grid(theta, x.size(), align_corners=False)
    y = F.grid_sample(x, grid, align_corners=False, padding_mode='reflection')
    y2 = F.grid_sample(x, grid, mode='nearest', padding_mode='border', align_corners=True)
    (y.pow(2).sum() + y2.sum()).backward()
    # gaussian blur via depthwise conv
    k = torch.tensor([1., 4., 6., 4., 1.]); k = k[:, None] * k[None, :]; k = k / k.sum()
    k = k.expand(3, 1, 5, 5)
    b = F.conv2d(F.pad(x, (2, 2, 2, 2), mode='reflect'), k, groups=3)
    c = F.pad(x, (1, 1, 1, 1), mode='circular'); r = F.pad(x, (1, 2, 0, 1), mode='replicate')
    return dict(y=y, y2=y2, g=x.grad, b=b, c=c, r=r, grid=grid, x=x)


def hooks_grad(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    feats = []
    h1 = net[1].register_forward_hook(lambda mod, i, o: feats.append(o))
    grads = []
    h2 = net[0].register_full_backward_hook(lambda mod, gi, go: grads.append((gi[0], go[0])))
    pre = net[2].register_forward_pre_hook(lambda mod, inp: (inp[0] * 2,))
    x = torch.rand(1, 3, 7, 7, requires_grad=True)
    x.register_hook(lambda g: g / (g.std() + 1e-8))
    out = net(x)
    out.mean().backward()
    h1.remove(); h2.remove(); pre.remove()
    out2 = net(x)
    return dict(out=out, f=feats[0], gi_none=grads[0][0] is None, go=grads[0][1], gx=x.grad, out2=out2, nf=len(feats))


def memory(m):
    torch = m.torch
    torch.manual_seed(6)
    res = {}
    fake = torch.randn(2, 3, 4, 4, requires_grad=True) * 1
    img = torch.unsqueeze(fake.data, 0)
    img[0, 0, 0, 0, 0] = 100.
    res['data_shares'] = fake[0, 0, 0, 0].item() == 100.
    d = fake.detach(); d[1, 0, 0, 0] = 7.
    res['detach_shares'] = fake[1, 0, 0, 0].item() == 7.
    x = torch.rand(1, 3, 4, 4)
    n = x.numpy(); n[0, 0, 0, 0] = -1
    res['numpy_shares'] = x[0, 0, 0, 0].item() == -1
    v = x.view(3, 16); v[0, 0] = -2
    res['view'] = x[0, 0, 0, 0].item()
    imgs = list(x.split(1, 1)); imgs[0].mul_(0)
    res['split'] = x.sum().item() == x[:, 1:].sum().item()
    t = torch.from_numpy(np.ones((2, 2), np.float32)); t.add_(1)
    res['fn'] = t
    p = torch.nn.Parameter(torch.zeros(3)); q = p.data; q.fill_(3)
    res['p'] = p
    ch = x[0].permute(1, 2, 0)
    res['perm_contig'] = ch.is_contiguous()
    c2 = ch.contiguous(); c2[0, 0, 0] = 55
    res['contig_copy'] = x[0, 0, 0, 0].item() != 55
    res['flat'] = x.flatten().data_ptr() == x.data_ptr()
    res['reshape_view'] = x[0].permute(1, 2, 0).reshape(-1, 3).data_ptr() == x.data_ptr()
    return res


def view_complex(m):
    torch = m.torch
    torch.manual_seed(7)
    p = torch.randn(1, 3, 4, 3, 2) * 0.01
    p.requires_grad_()
    c = torch.view_as_complex(p)
    img = torch.fft.irfft2(c, s=(4, 4), norm='ortho')
    back = torch.view_as_real(torch.fft.rfft2(img, norm='ortho'))
    (img.sin().sum() + back.pow(2).sum()).backward()
    fy = torch.fft.fftfreq(4)[:, None]; fx = torch.fft.rfftfreq(4)
    freqs = torch.sqrt(fx * fx + fy * fy)
    return dict(img=img, back=back, g=p.grad, p=p, freqs=freqs, dt=freqs.dtype == torch.float32, cdt=c.dtype == torch.complex64)


def unet(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    class UnetSkipConnectionBlock(nn.Module):
        def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False, norm_layer=nn.BatchNorm2d, use_dropout=False):
            super().__init__()
            self.outermost = outermost
            if type(norm_layer) == functools.partial:
                use_bias = norm_layer.func == nn.InstanceNorm2d
            else:
                use_bias = norm_layer == nn.InstanceNorm2d
            if input_nc is None:
                input_nc = outer_nc
            downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            downrelu = nn.LeakyReLU(0.2, True)
            downnorm = norm_layer(inner_nc)
            uprelu = nn.ReLU(True)
            upnorm = norm_layer(outer_nc)
            if outermost:
                upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
                model = [downconv] + [submodule] + [uprelu, upconv, nn.Tanh()]
            elif innermost:
                upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
                model = [downrelu, downconv] + [uprelu, upconv, upnorm]
            else:
                upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
                model = [downrelu, downconv, downnorm] + [submodule] + [uprelu, upconv, upnorm]
                if use_dropout:
                    model = model + [nn.Dropout(0.5)]
            self.model = nn.Sequential(*model)
        def forward(self, x):
            if self.outermost:
                return self.model(x)
            return torch.cat([x, self.model(x)], 1)
    norm = functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    blk = UnetSkipConnectionBlock(8, 8, innermost=True, norm_layer=norm)
    blk = UnetSkipConnectionBlock(4, 8, submodule=blk, norm_layer=norm, use_dropout=True)
    G = UnetSkipConnectionBlock(3, 4, input_nc=3, submodule=blk, outermost=True, norm_layer=norm)
    for mod in G.modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(mod.weight, 0.0, 0.02)
    D = nn.Sequential(nn.Conv2d(6, 4, 4, 2, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(4, 1, 4, 1, 1))
    optG = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999)); optD = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    crit = nn.BCEWithLogitsLoss(); l1 = nn.L1Loss()
    hist = []
    for step in range(2):
        A = torch.rand(2, 3, 8, 8) * 2 - 1; B = torch.rand(2, 3, 8, 8) * 2 - 1
        fake_B = G(A)
        optD.zero_grad()
        pred_fake = D(torch.cat((A, fake_B), 1).detach())
        loss_D_fake = crit(pred_fake, torch.zeros_like(pred_fake))
        pred_real = D(torch.cat((A, B), 1))
        loss_D_real = crit(pred_real, torch.ones_like(pred_real))
        loss_D = (loss_D_fake + loss_D_real) * 0.5
        loss_D.backward(); optD.step()
        for p in D.parameters(): p.requires_grad = False
        optG.zero_grad()
        pred_fake = D(torch.cat((A, fake_B), 1))
        loss_G = crit(pred_fake, torch.ones_like(pred_fake)) + l1(fake_B, B) * 100
        loss_G.backward(); optG.step()
        for p in D.parameters(): p.requires_grad = True
        hist.append((loss_D.item(), loss_G.item()))
    G.eval()
    with torch.no_grad():
        out = G(A)
    return dict(hist=hist, out=out, rm=G.model[1].model[2].running_mean, fb=fake_B)


def complex_adam(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(1)
    spec = nn.Parameter(torch.randn(1, 3, 4, 3, dtype=torch.complex64) * 0.1)
    opt = optim.Adam([spec], lr=0.05)
    w = torch.randn(3, 4, 4)
    ls = []
    for _ in range(3):
        opt.zero_grad()
        img = torch.fft.irfft2(spec, s=(4, 4), norm='ortho')
        loss = -(img * w).sum() + img.pow(2).mean()
        loss.backward(); opt.step(); ls.append(loss.item())
    return dict(ls=ls, spec=torch.view_as_real(spec.detach()), g=torch.view_as_real(spec.grad), st=torch.view_as_real(opt.state[spec]['exp_avg']), sq=opt.state[spec]['exp_avg_sq'])


def uint8_io(m):
    torch = m.torch
    torch.manual_seed(5)
    img = torch.rand(3, 4, 4) * 1.2 - 0.1
    nd = img.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to('cpu', torch.uint8).numpy()
    back = torch.from_numpy(nd).permute(2, 0, 1).float().div(255)
    wrap = (torch.tensor([300.7, -3.2, 255.9]) ).to(torch.uint8)
    b2 = torch.tensor([1, 200], dtype=torch.uint8) + torch.tensor([100, 100], dtype=torch.uint8)
    mean_u8 = torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8).float().mean()
    grid = torch.stack([img, img.flip(-1)]).permute(1, 0, 2, 3).reshape(3, 2 * 4, 4)
    return dict(nd=nd, back=back, dt=nd.dtype == np.uint8, wrap=wrap, b2=b2, mean=mean_u8, grid=grid, img=img)


def wct(m):
    torch = m.torch
    torch.manual_seed(0)
    def whiten_and_color(cF, sF):
        cFSize = cF.size()
        c_mean = torch.mean(cF, 1).unsqueeze(1).expand_as(cF)
        cF = cF - c_mean
        contentConv = torch.mm(cF, cF.t()).div(cFSize[1] - 1) + torch.eye(cFSize[0]).double()
        c_u, c_e, c_v = torch.svd(contentConv, some=False)
        k_c = cFSize[0]
        for i in range(cFSize[0]):
            if c_e[i] < 0.00001:
                k_c = i; break
        sFSize = sF.size()
        s_mean = torch.mean(sF, 1)
        sF = sF - s_mean.unsqueeze(1).expand_as(sF)
        styleConv = torch.mm(sF, sF.t()).div(sFSize[1] - 1)
        s_u, s_e, s_v = torch.svd(styleConv, some=False)
        k_s = sFSize[0]
        for i in range(sFSize[0]):
            if s_e[i] < 0.00001:
                k_s = i; break
        c_d = (c_e[0:k_c]).pow(-0.5)
        step1 = torch.mm(c_v[:, 0:k_c], torch.diag(c_d))
        step2 = torch.mm(step1, (c_v[:, 0:k_c].t()))
        whiten_cF = torch.mm(step2, cF)
        s_d = (s_e[0:k_s]).pow(0.5)
        targetFeature = torch.mm(torch.mm(torch.mm(s_v[:, 0:k_s], torch.diag(s_d)), (s_v[:, 0:k_s].t())), whiten_cF)
        targetFeature = targetFeature + s_mean.unsqueeze(1).expand_as(targetFeature)
        return targetFeature
    cF = torch.randn(4, 30).double(); sF = (torch.randn(4, 25) * 2 + 1).double()
    out = whiten_and_color(cF, sF)
    # eigh variant
    cov = torch.cov(sF)
    evals, evecs = torch.linalg.eigh(cov)
    sq = evecs @ torch.diag_embed(evals.clamp_min(0).sqrt()) @ evecs.T
    return dict(out=out, cov=cov, sq=sq, dt=out.dtype == torch.float64, sF=sF)


def swd(m):
    torch, F = m.torch, m.F
    torch.manual_seed(1)
    def sliced_wasserstein(f1, f2, n_proj=8):
        c = f1.shape[1]
        proj = torch.randn(c, n_proj)
        proj = proj / torch.sqrt(torch.sum(proj ** 2, dim=0, keepdim=True))
        p1 = torch.einsum('bcn,cp->bpn', f1.flatten(2), proj)
        p2 = torch.einsum('bcn,cp->bpn', f2.flatten(2), proj)
        p1s, _ = torch.sort(p1, dim=-1); p2s = torch.sort(p2, dim=-1).values
        return F.mse_loss(p1s, p2s)
    x = torch.rand(1, 4, 5, 5, requires_grad=True); y = torch.rand(1, 4, 5, 5)
    l = sliced_wasserstein(x, y); l.backward()
    # histogram matching-ish
    q = torch.quantile(x.detach().flatten(), torch.tensor([0.1, 0.5, 0.9]))
    hc = torch.histc(y, bins=5, min=0, max=1)
    ss = torch.searchsorted(torch.sort(y.flatten()).values, x.detach().flatten()[:6])
    return dict(l=l, g=x.grad, q=q, hc=hc, ss=ss, x=x, y=y)


def mrf(m):
    torch, F = m.torch, m.F
    torch.manual_seed(2)
    x = torch.rand(1, 3, 6, 6, requires_grad=True)
    s = torch.rand(1, 3, 6, 6)
    k = 3
    sp = F.unfold(s, kernel_size=k, stride=1)  # (1, 27, L)
    sp = sp.squeeze(0).t().reshape(-1, 3, k, k)
    norms = sp.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    resp = F.conv2d(x, sp / norms)
    best = resp.argmax(dim=1)
    xp = F.unfold(x, k).squeeze(0).t()
    tgt = sp.flatten(1)[best.flatten()]
    loss = F.mse_loss(xp, tgt, reduction='sum')
    loss.backward()
    folded = F.fold(F.unfold(x, 2, stride=2), (6, 6), 2, stride=2)
    cs = F.cosine_similarity(xp, tgt, dim=1)
    d = torch.cdist(xp.detach(), sp.flatten(1))
    with warnings.catch_warnings():  # (PyTorch warns that an even kernel pads by a copy)
        warnings.simplefilter("ignore")
        pad_same = F.conv2d(x, torch.ones(2, 3, 2, 2), padding='same')
    x.grad = None
    ps = F.conv2d(x, torch.ones(2, 3, 4, 3), padding='same', dilation=1)
    ps.sum().backward()
    return dict(loss=loss, best=best, folded=folded, cs=cs, d=d, pad_same=pad_same, ps=ps, g=x.grad, x=x, s=s)


def lapstyle(m):
    torch, F = m.torch, m.F
    torch.manual_seed(3)
    def gauss_kernel(channels=3):
        k = torch.tensor([[1., 4., 6., 4., 1], [4., 16., 24., 16., 4.], [6., 24., 36., 24., 6.], [4., 16., 24., 16., 4.], [1., 4., 6., 4., 1.]]) / 256.
        return k.repeat(channels, 1, 1, 1)
    def downsample(x): return x[:, :, ::2, ::2]
    def upsample(x):
        cc = torch.cat([x, torch.zeros(x.shape[0], x.shape[1], x.shape[2], x.shape[3], device=x.device)], dim=3)
        cc = cc.view(x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3])
        cc = cc.permute(0, 1, 3, 2)
        cc = torch.cat([cc, torch.zeros(x.shape[0], x.shape[1], x.shape[3], x.shape[2] * 2, device=x.device)], dim=3)
        cc = cc.view(x.shape[0], x.shape[1], x.shape[3] * 2, x.shape[2] * 2)
        x_up = cc.permute(0, 1, 3, 2)
        return conv_gauss(x_up, 4 * gauss_kernel(channels=x.shape[1]))
    def conv_gauss(img, kernel):
        img = F.pad(img, (2, 2, 2, 2), mode='reflect')
        return F.conv2d(img, kernel, groups=img.shape[1])
    def laplacian_pyramid(img, kernel, max_levels=2):
        current = img; pyr = []
        for level in range(max_levels):
            filtered = conv_gauss(current, kernel)
            down = downsample(filtered)
            up = upsample(down)
            pyr.append(current - up); current = down
        pyr.append(current)
        return pyr
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    pyr = laplacian_pyramid(x, gauss_kernel())
    loss = sum(p.abs().mean() for p in pyr)
    loss.backward()
    return dict(pyr=pyr, g=x.grad)


def guided(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    hs = []
    for mod in net.modules():
        if isinstance(mod, nn.ReLU):
            hs.append(mod.register_full_backward_hook(lambda mod, gi, go: (torch.clamp(gi[0], min=0.0),)))
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    out = net(x)
    out[0, 1].backward()
    g1 = x.grad.clone()
    for h in hs: h.remove()
    # old-style backward hook
    x.grad = None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        net[3] = nn.ReLU(); h = net[3].register_backward_hook(lambda mod, gi, go: (gi[0] * 0.5,))
    net(x)[0, 2].backward()
    h.remove()
    g2 = x.grad.clone()
    # forward hook replacing output, with_kwargs, prepend
    order = []
    net[5].register_forward_hook(lambda mod, i, o: (order.append('a'), o * 2)[1])
    net[5].register_forward_hook(lambda mod, i, o: order.append('b'), prepend=True)
    net[5].register_forward_pre_hook(lambda mod, args, kwargs: (order.append('pre'), None)[1], with_kwargs=True)
    y = net(x)
    sub = net.get_submodule('2')
    named = dict(net.named_modules())
    cp = copy.deepcopy(net)
    y2 = cp(x)
    return dict(g1=g1, g2=g2, y=y, order=order, x=x, sub=type(sub).__name__, names=list(named.keys()), y2=y2)


def redirected(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(1)
    class RedirectedReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input_tensor):
            ctx.save_for_backward(input_tensor)
            return input_tensor.clamp(min=0)
        @staticmethod
        def backward(ctx, grad_output):
            input_tensor, = ctx.saved_tensors
            relu_grad = grad_output.clone()
            relu_grad[input_tensor < 0] = 0
            if torch.all(relu_grad == 0):
                return grad_output * (grad_output < 0).float() * 0 + grad_output * (input_tensor < 0).float() * (grad_output < 0).float()
            return relu_grad
    class RedirectedReluLayer(nn.Module):
        def forward(self, tensor):
            return RedirectedReLU.apply(tensor)
    x = torch.randn(2, 5, requires_grad=True)
    y = RedirectedReluLayer()(x - 3)
    (y * (torch.arange(10.).view(2, 5) - 5)).sum().backward()
    g1 = x.grad.clone(); x.grad = None
    y = RedirectedReluLayer()(x)
    (y * torch.arange(10.).view(2, 5)).sum().backward()
    return dict(g1=g1, g2=x.grad, name=type(y.grad_fn).__name__, x=x)


def seq_edit(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(2)
    s = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Conv2d(3, 3, 1), nn.ReLU(), nn.MaxPool2d(2))
    s.insert(2, nn.Identity()); s.append(nn.Flatten()); s.extend([nn.Identity()])
    p = s.pop(1)
    del s[0]
    names = [n for n, _ in s.named_children()]
    s2 = s[1:3]
    for i, layer in enumerate(s):
        if isinstance(layer, nn.ReLU):
            s[i] = nn.LeakyReLU(0.1)
    r = repr(s)
    return dict(names=names, p=type(p).__name__, n2=[n for n, _ in s2.named_children()], r=r, l=len(s))


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


def wct_grad(m):
    torch = m.torch
    torch.manual_seed(3)
    cF = torch.randn(4, 30, dtype=torch.float64, requires_grad=True)
    sF = torch.randn(4, 25, dtype=torch.float64) * 2 + 1
    def cov(f):
        fc = f - f.mean(1, keepdim=True)
        return fc @ fc.T / (f.shape[1] - 1), fc
    Cc, fc = cov(cF); Cs, _ = cov(sF)
    ec, Vc = torch.linalg.eigh(Cc + 1e-5 * torch.eye(4, dtype=torch.float64))
    es, Vs = torch.linalg.eigh(Cs)
    white = Vc @ torch.diag(ec.rsqrt()) @ Vc.T @ fc
    out = Vs @ torch.diag(es.sqrt()) @ Vs.T @ white + sF.mean(1, keepdim=True)
    (out * torch.arange(120., dtype=torch.float64).view(4, 30).cos()).sum().backward()
    g1 = cF.grad.clone(); cF.grad = None
    Cc, fc = cov(cF)
    U, S, Vh = torch.linalg.svd(Cc)
    white2 = U @ torch.diag(S.pow(-0.5)) @ Vh @ fc
    (white2.sin()).sum().backward()
    L = torch.linalg.cholesky(Cs)
    Lc = torch.linalg.cholesky(Cc.detach().requires_grad_())
    sv = torch.linalg.svdvals(fc.detach())
    return dict(out=out, g1=g1, g2=cF.grad, L=L, sv=sv, Cs=Cs, wcov=white @ white.T / 29, fc=fc)


def close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def test_gatys_style_transfer():
    ours, _ = run_both(style_transfer, rtol=1e-3, atol=1e-4)  # (LBFGS amplifies rounding: 1e-13 apart in float64)
    assert ours["typ"] == "Sequential"
    assert ours["names"] == ["0", "conv_1", "style_loss_1", "relu_1", "conv_2", "style_loss_2", "relu_2", "pool_2",
                             "conv_3", "content_loss_3", "style_loss_3", "relu_3", "conv_4", "style_loss_4"]
    close(ours["losses"][:3], [0.0280423, 0.0257789, 0.0057247], rtol=1e-3)
    assert ours["losses"][-1] < ours["losses"][0] / 10
    assert ours["img"].min() >= 0 and ours["img"].max() <= 1


def test_gram_bmm_and_total_variation():
    ours, _ = run_both(gram_bmm)
    x, t, y = ours["x"].astype(np.float64), ours["t"], ours["y"].astype(np.float64)
    f = x.reshape(2, 4, 30)
    gram = f @ f.transpose(0, 2, 1) / 120
    close(ours["g"], gram, rtol=1e-5, atol=1e-6)
    grad_gram = 2 * (gram - t) / gram.size  # mse_loss's mean over the 2x4x4 Gram entries
    close(ours["gx"], ((grad_gram + grad_gram.transpose(0, 2, 1)) @ f / 120).reshape(x.shape), rtol=1e-4, atol=1e-7)
    dh, dw = y[:, :, 1:] - y[:, :, :-1], y[..., 1:] - y[..., :-1]
    close(ours["l2"], 2 * ((dh ** 2).sum() + (dw ** 2).sum()) / 192 + np.abs(dw).mean() + np.abs(dh).mean(), 1e-5)
    assert ours["dt"]


def test_deepdream_octaves_jitter():
    ours, _ = run_both(deepdream, rtol=1e-4, atol=1e-5)
    close(ours["hist"], [4.595663, 5.100882, 5.120187, 9.878288, 10.649216, 11.010086], rtol=1e-4)
    assert ours["nhooks"] == 0  # the hook's handle removed it
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    lo, hi = (-mean / std)[None, :, None, None], ((1 - mean) / std)[None, :, None, None]
    assert (ours["out"] >= lo - 1e-6).all() and (ours["out"] <= hi + 1e-6).all()  # clamp_ by tensor bounds


def test_fourier_parametrised_image():
    ours, _ = run_both(fourier, rtol=1e-4, atol=1e-5)
    close(ours["ls"], [-0.0530852, -0.0572844, -0.0614769, -0.0656564], rtol=1e-4)
    assert ours["dt"] and ours["sp_shape"] == (1, 3, 8, 6)
    assert ((ours["im"] > 0) & (ours["im"] < 1)).all()


def test_fast_style_transfer_network():
    ours, _ = run_both(transformer_net, rtol=1e-4, atol=1e-5)
    close(ours["losses"], [0.4464417, 0.2774734], rtol=1e-4)
    assert len(ours["keys"]) == 30 and ours["keys"][:4] == ["conv1.conv2d.weight", "conv1.conv2d.bias", "in1.weight",
                                                             "in1.bias"]
    assert ours["nb"] == 0 and "affine=False" in ours["rs"] and "track_running_stats=False" in ours["rs"]
    x = ours["x"][:1].astype(np.float64)
    by_hand = (x - x.mean((2, 3), keepdims=True)) / np.sqrt(x.var((2, 3), keepdims=True) + 1e-5)
    close(ours["z"], by_hand, rtol=1e-4, atol=1e-5)
    assert ours["out"].min() >= 0 and ours["out"].max() <= 255


def test_conditional_instance_norm_and_adain():
    ours, _ = run_both(cond_in)
    x, emb = ours["x"].astype(np.float64), ours["emb"].astype(np.float64)
    normed = (x - x.mean((2, 3), keepdims=True)) / np.sqrt(x.var((2, 3), keepdims=True) + 1e-5)
    gamma, beta = emb[[0, 2], :4], emb[[0, 2], 4:]
    close(ours["out"], gamma[..., None, None] * normed + beta[..., None, None], rtol=1e-4, atol=1e-5)
    assert (ours["ge"][1] == 0).all()  # class 1 was not looked up
    s, t = ours["s"].astype(np.float64), ours["t"].astype(np.float64)
    close(t.mean((2, 3)), s.mean((2, 3)), rtol=1e-4, atol=1e-5)  # AdaIN gives the content the style's statistics
    close(t.std((2, 3), ddof=1), np.sqrt(s.var((2, 3), ddof=1) + 1e-5), rtol=1e-3)


def test_cyclegan_step():
    ours, _ = run_both(cyclegan, rtol=1e-4, atol=1e-5)
    close([r[:2] for r in ours["res"]], [(6.181966, 0.487081), (6.448324, 0.482778), (6.094874, 0.399473)], 1e-4)
    close([r[2] for r in ours["res"]], [2e-4, 2e-4 * 2 / 3, 2e-4 / 3], rtol=1e-12)  # LambdaLR's linear decay
    assert ours["dshape"] == (2, 1, 1, 1) and ours["pooln"] == 2


def test_gradient_penalties():
    ours, _ = run_both(gp, rtol=1e-4, atol=1e-6)
    g = ours["grads"].astype(np.float64)
    assert g.shape == (3, 192)
    close(ours["pen"], 10 * ((np.linalg.norm(g + 1e-16, axis=1) - 1) ** 2).mean(), rtol=1e-5)
    close(ours["pen"], 6.791715, rtol=1e-5)
    close(ours["r1"], 0.0345736, rtol=1e-4)
    assert ours["gr"] is None or np.isfinite(ours["gr"]).all()


def test_super_resolution_pixel_shuffle():
    ours, _ = run_both(sr, rtol=1e-4, atol=1e-5)
    x = np.arange(32.).reshape(1, 8, 2, 2)
    by_hand = x.reshape(1, 2, 2, 2, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(1, 2, 4, 4)
    close(ours["ps"], by_hand, 0, 0)
    close(ours["pu"], x, 0, 0)
    y = np.arange(16.).reshape(1, 1, 2, 2, 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(1, 4, 2, 2)
    close(ours["unsh"], y, 0, 0)
    close(ours["psnr"], 10 * np.log10(1 / ours["mse"]), rtol=1e-5)
    close(ours["out"], [0.8188492, 0.7831587], rtol=1e-4)
    assert ours["lr"].shape == (2, 1, 6, 6) and ours["up"].min() >= 0 and ours["up"].max() <= 1


def test_adversarial_patch_and_pgd():
    ours, _ = run_both(adv_patch, rtol=1e-4, atol=1e-6)
    assert ours["hist"][-1] < ours["hist"][0]
    assert np.abs(ours["delta"]).max() <= 0.03 + 1e-7
    assert ours["adv"].min() >= 0 and ours["adv"].max() <= 1


def test_feature_inversion_and_texture():
    ours, _ = run_both(inversion, rtol=1e-4, atol=1e-6)
    close(ours["hist"], [0.8922942, 0.7565635, 0.6261178, 0.5635614], rtol=1e-4)
    close(ours["lr"], [0.025], rtol=1e-12)


def test_lbfgs_strong_wolfe():
    ours, _ = run_both(lbfgs_wolfe, rtol=1e-4, atol=1e-5)
    close(ours["ls"], [17.194653, 1.840287], rtol=1e-4)
    assert (ours["calls"], ours["n_iter"], ours["func_evals"]) == (12, 9, 12)
    assert ours["keys"] == ["H_diag", "al", "d", "func_evals", "n_iter", "old_dirs", "old_stps", "prev_flat_grad",
                            "prev_loss", "ro", "t"]


def test_jitter_by_grid_sample_and_padding():
    ours, _ = run_both(grid_jitter, rtol=1e-4, atol=1e-5)
    x = ours["x"]
    close(ours["c"], np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="wrap"), 0, 0)
    close(ours["r"], np.pad(x, ((0, 0), (0, 0), (0, 1), (1, 2)), mode="edge"), 0, 0)
    close(ours["b"].mean(), x.mean(), rtol=0.1)  # a normalised blur keeps the image's level
    assert ours["grid"].shape == (2, 8, 8, 2)


def test_hooks_and_gradient_normalisation():
    ours, _ = run_both(hooks_grad, rtol=1e-4, atol=1e-6)
    assert ours["nf"] == 1 and not ours["gi_none"]
    g = ours["gx"]
    close(g.std(ddof=1), 1.0, rtol=1e-4)  # the tensor hook divided the input's gradient by its std
    assert (ours["f"] >= 0).all()


def test_memory_sharing():
    ours, _ = run_both(memory)
    for flag in ("data_shares", "detach_shares", "numpy_shares", "split", "contig_copy", "flat", "reshape_view"):
        assert ours[flag] is True, flag
    assert ours["view"] == -2.0 and ours["perm_contig"] is False
    close(ours["fn"], np.full((2, 2), 2.0), 0, 0)
    close(ours["p"], [3, 3, 3], 0, 0)


def test_view_as_complex_spectrum():
    ours, _ = run_both(view_complex, rtol=1e-4, atol=1e-6)
    c = ours["p"][..., 0] + 1j * ours["p"][..., 1]
    close(ours["img"], np.fft.irfft2(c, s=(4, 4), norm="ortho"), rtol=1e-4, atol=1e-7)
    fy, fx = np.fft.fftfreq(4)[:, None], np.fft.rfftfreq(4)
    close(ours["freqs"], np.sqrt(fx * fx + fy * fy), rtol=1e-6)
    assert ours["dt"] and ours["cdt"]


def test_pix2pix_unet():
    ours, _ = run_both(unet, rtol=1e-4, atol=1e-5)
    close(ours["hist"], [(0.6891239, 50.376457), (0.6965494, 52.005688)], rtol=1e-4)
    assert np.abs(ours["out"]).max() <= 1 and np.abs(ours["fb"]).max() <= 1


def test_complex_parameter_adam():
    ours, _ = run_both(complex_adam, rtol=1e-4, atol=1e-5)
    close(ours["ls"], [0.2471237, -2.5126364, -5.2634115], rtol=1e-4)
    sq = ours["sq"]  # exp_avg_sq of a complex parameter: its real and imaginary parts' squares, separately
    assert (sq.real >= 0).all() and (sq.imag >= 0).all()


def test_uint8_image_io():
    ours, _ = run_both(uint8_io)
    img = ours["img"]
    nd = np.clip(img * 255 + 0.5, 0, 255).transpose(1, 2, 0).astype(np.uint8)
    assert ours["dt"] and (ours["nd"] == nd).all()
    close(ours["back"], nd.transpose(2, 0, 1) / 255, rtol=1e-6)
    assert ours["wrap"].tolist() == [44, 253, 255] and ours["b2"].tolist() == [101, 44]
    assert ours["mean"] == 2.5 and ours["grid"].shape == (3, 8, 4)


def test_whitening_colouring_transform():
    ours, _ = run_both(wct, rtol=1e-8, atol=1e-9)
    out = ours["out"]
    close(out.mean(1), ours["sF"].mean(1), rtol=1e-10)  # the whitened content is centred: the style's mean comes back
    close(ours["cov"], np.cov(ours["sF"]), rtol=1e-10)
    close(ours["sq"] @ ours["sq"], ours["cov"], rtol=1e-8, atol=1e-10)
    assert ours["dt"]


def test_sliced_wasserstein_and_histograms():
    ours, _ = run_both(swd)
    x, y = ours["x"], ours["y"]
    close(ours["q"], np.quantile(x.flatten(), [0.1, 0.5, 0.9]), rtol=1e-6)
    close(ours["hc"], np.histogram(y, bins=5, range=(0, 1))[0], 0, 0)
    assert ours["ss"].tolist() == np.searchsorted(np.sort(y.flatten()), x.flatten()[:6]).tolist()


def test_patch_matching_unfold_fold():
    ours, _ = run_both(mrf, rtol=1e-4, atol=1e-5)
    close(ours["folded"], ours["x"], 0, 0)  # non-overlapping patches fold back to the image
    assert ours["best"].shape == (1, 4, 4) and ((0 <= ours["best"]) & (ours["best"] < 16)).all()
    assert ours["pad_same"].shape == (1, 2, 6, 6) and ours["ps"].shape == (1, 2, 6, 6)


def test_laplacian_pyramid():
    ours, _ = run_both(lapstyle, rtol=1e-4, atol=1e-6)
    assert [p.shape for p in ours["pyr"]] == [(1, 3, 8, 8), (1, 3, 4, 4), (1, 3, 2, 2)]
    assert np.isfinite(ours["g"]).all() and np.abs(ours["g"]).sum() > 0


def test_programs_run_without_pytorch():
    for program in (gram_bmm, memory):
        assert program(OURS)


def test_guided_backprop_and_module_hooks():
    ours, _ = run_both(guided, rtol=1e-4, atol=1e-6)
    assert ours["order"] == ["pre", "b", "a"] * 2  # prepend puts b first; a's returned output replaces it
    assert ours["sub"] == "Conv2d" and ours["names"] == ["", "0", "1", "2", "3", "4", "5"]
    close(ours["y2"], ours["y"], 0, 0)  # a deep copy keeps the hooks


def test_custom_function_redirected_relu():
    ours, _ = run_both(redirected)
    x, go = ours["x"], np.arange(10.).reshape(2, 5) - 5
    relu_grad = np.where(x - 3 < 0, 0, go)
    expected = relu_grad if relu_grad.any() else go * (x - 3 < 0) * (go < 0)
    close(ours["g1"], expected, 0, 0)
    close(ours["g2"], np.where(x < 0, 0, np.arange(10.).reshape(2, 5)), 0, 0)
    assert ours["name"] == "RedirectedReLUBackward"


def test_sequential_editing():
    ours, _ = run_both(seq_edit)
    assert ours["names"] == ["0", "1", "2", "3", "4", "5"] and ours["n2"] == ["1", "2"]
    assert ours["p"] == "ReLU" and ours["l"] == 6 and "(2): LeakyReLU(negative_slope=0.1)" in ours["r"]


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


def test_differentiable_whitening_by_eigh_and_svd():
    ours, _ = run_both(wct_grad, rtol=1e-7, atol=1e-9)
    close(ours["wcov"], np.eye(4), rtol=0, atol=1e-4)  # whitened features have unit covariance (up to the 1e-5 ridge)
    close(ours["L"] @ ours["L"].T, ours["Cs"], rtol=1e-10)
    close(ours["sv"], np.linalg.svd(ours["fc"], compute_uv=False), rtol=1e-10)
    assert np.isfinite(ours["g1"]).all() and np.isfinite(ours["g2"]).all()
