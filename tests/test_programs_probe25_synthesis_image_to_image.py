# ruff: noqa: B007, E501, E701, E702, E721, F841  (the programs are kept as their authors write them)
"""Image synthesis by optimisation and image-to-image networks, run as tests/probe25_synthesis_common.py says.
Image-to-image networks: the fast style transfer network (reflection padding, affine InstanceNorm, upsample + conv),
conditional instance norm and AdaIN; CycleGAN (ResNet generator, PatchGAN, LSGAN targets as buffers, the image pool,
L1 cycle loss, LambdaLR) and pix2pix (the U-Net whose in-place LeakyReLU rewrites the skip input before ``cat``);
ESPCN/SRCNN with ``PixelShuffle`` and bicubic resizing."""

import functools
import random

import numpy as np

from .probe25_synthesis_common import close
from .pytorch_programs import run_both


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


def test_pix2pix_unet():
    ours, _ = run_both(unet, rtol=1e-4, atol=1e-5)
    close(ours["hist"], [(0.6891239, 50.376457), (0.6965494, 52.005688)], rtol=1e-4)
    assert np.abs(ours["out"]).max() <= 1 and np.abs(ours["fb"]).max() <= 1
