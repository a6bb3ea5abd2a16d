# ruff: noqa: B007, B008, B023, E721, E741, E731, F841, UP004, UP008, UP031, UP032  (the programs are kept as their authors wrote them)
"""Dense-prediction and image-synthesis programs (see tests/pytorch_programs.py), each run unchanged but for its
imports on chainrule and on PyTorch from the same weights and data in float32, comparing losses, outputs,
gradients and parameters after a few optimizer steps (float32 tolerances), and checked by hand where they run
alone.

A U-Net on odd sizes (grouped ``ConvTranspose2d`` with ``output_padding``, skips centre-cropped or padded, weighted
and label-smoothed cross-entropy with ``ignore_index`` plus soft Dice on ``one_hot().permute``; in channels_last
too); PyTorch's neural style transfer tutorial (loss modules inserted into a copied feature stack, ``model[:i+1]``,
total variation, LBFGS on the input image clamped in place under ``no_grad``); Real-ESRGAN-style super-resolution
(``pixel_unshuffle``, residual dense blocks, nearest ``Upsample`` and ``PixelShuffle``, bicubic skip, antialiased
down-sampling consistency, MultiStepLR, clipping, PSNR); CycleGAN (ResnetGenerator with reflection/replication
padding and InstanceNorm, PatchGAN, LSGAN by a buffered GANLoss, ``itertools.chain``, LambdaLR); Monodepth2
(tuple-keyed ``OrderedDict`` decoder, backprojection by inverse intrinsics, projection and ``grid_sample(border)``,
axis-angle poses written element by element, SSIM by ``AvgPool2d(3, 1)``, auto-masking with seeded noise, edge-aware
smoothness); DeepLabV3+ (depthwise-separable dilated convs, ASPP with image pooling, OHEM cross-entropy, pixel-wise
distillation by KL at a temperature, poly LambdaLR, SGD nesterov, channels_last against contiguous); segmentation
losses with their gradients (Lovasz-softmax and hinge with in-place slice assignment, focal with per-class alpha,
focal Tversky, log-cosh Dice, boundary-weighted CE by max-pool morphology) and training on their sum; multi-scale
training with random scale factors and every ``F.interpolate`` mode / ``nn.Upsample`` with gradients; pix2pix's
recursive U-Net and GauGAN (SPADE, ``spectral_norm``, multi-scale discriminator, hinge and feature matching);
torchvision's FCN segmentation reference (IntermediateLayerGetter, aux loss, SequentialLR of LinearLR and
PolynomialLR, ConfusionMatrix by ``bincount`` under ``inference_mode``); RAFT (all-pairs correlation pyramid,
``grid_sample`` lookup, ConvGRU, convex upsampling by ``F.unfold``, sequence loss, OneCycleLR); a panorama
denoiser (``CircularPad2d``, InstanceNorm with running statistics, ``unfold``/``fold`` overlap averaging, roll
equivariance); mmsegmentation's sliding-window inference (in-place adds into slices, ``F.pad`` into the full map,
count matrix) with multi-scale flip test-time augmentation and a saliency gradient through it. The fixes they led
to are tested in tests/test_probe15_dense_fixes.py."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, one_blas_thread, run_both, weights_of

F32 = dict(rtol=2e-4, atol=2e-5)  # a few float32 optimizer steps through a convolutional network


def images(shape, seed=0, low=0.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def masks(shape, classes, seed=0, ignore=None, ignore_fraction=0.1):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, shape)
    if ignore is not None:
        target[rng.uniform(size=shape) < ignore_fraction] = ignore
    return target


# ----------------------------------------------------------------------------------------------
# A U-Net on odd sizes: ConvTranspose2d (stride 2, output_padding, groups), skips centre-cropped or
# padded, trained by cross-entropy (class weights, ignore_index, label smoothing) plus a soft Dice loss
# ----------------------------------------------------------------------------------------------


def unet(m, in_ch=3, classes=4, base=8):
    nn, torch = m.nn, m.torch

    class DoubleConv(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Up(nn.Module):
        def __init__(self, cin, cout, output_padding):
            super().__init__()
            # grouped transposed convolution: each half of the channels upsampled by its own filters
            self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=3, stride=2, padding=1,
                                         output_padding=output_padding, groups=2)
            self.conv = DoubleConv(cin, cout)

        @staticmethod
        def center_crop(layer, target_size):
            _, _, h, w = layer.size()
            dy, dx = (h - target_size[0]) // 2, (w - target_size[1]) // 2
            return layer[:, :, dy:(dy + target_size[0]), dx:(dx + target_size[1])]

        def forward(self, x, skip):
            x = self.up(x)
            if x.shape[2:] != skip.shape[2:]:
                if x.shape[2] >= skip.shape[2] and x.shape[3] >= skip.shape[3]:
                    x = self.center_crop(x, skip.shape[2:])
                else:
                    diffY = skip.size()[2] - x.size()[2]
                    diffX = skip.size()[3] - x.size()[3]
                    x = nn.functional.pad(x, [diffX // 2, diffX - diffX // 2, diffY // 2, diffY - diffY // 2])
            return self.conv(torch.cat([skip, x], dim=1))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inc = DoubleConv(in_ch, base)
            self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(base, base * 2))
            self.down2 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), DoubleConv(base * 2, base * 4))
            self.up1 = Up(base * 4, base * 2, output_padding=0)
            self.up2 = Up(base * 2, base, output_padding=1)
            self.outc = nn.Conv2d(base, classes, kernel_size=1)

        def forward(self, x):
            x1 = self.inc(x)
            x2 = self.down1(x1)
            x3 = self.down2(x2)
            x = self.up1(x3, x2)
            x = self.up2(x, x1)
            return self.outc(x)

    return UNet()


def dice_loss(m, logits, target, classes, ignore_index=255, eps=1e-6):
    torch, F = m.torch, m.F
    valid = (target != ignore_index).unsqueeze(1)
    probs = F.softmax(logits, dim=1) * valid
    one_hot = F.one_hot(torch.where(valid.squeeze(1), target, 0), classes).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    intersection = torch.sum(probs * one_hot, dims)
    cardinality = torch.sum(probs + one_hot, dims)
    return 1.0 - (2.0 * intersection / (cardinality + eps)).mean()


def unet_training(m, weights, steps=3, channels_last=False):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, unet(m), weights)
    x = torch.tensor(images((2, 3, 13, 11)))
    y = torch.tensor(masks((2, 13, 11), 4, ignore=255))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    class_weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    criterion = nn.CrossEntropyLoss(weight=class_weights, ignore_index=255, label_smoothing=0.1)
    optimizer = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    history = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = criterion(logits, y) + dice_loss(m, logits, y, 4)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    grads = {name: p.grad for name, p in model.named_parameters()}
    return history, pred, model.state_dict(), grads, logits.shape


def test_unet_with_grouped_transposed_convolutions():
    weights = weights_of(unet)
    ours, theirs = run_both(unet_training, weights, **F32)
    history, pred, state, grads, shape = ours
    assert tuple(shape) == (2, 4, 13, 11) and pred.shape == (2, 13, 11)
    assert history[-1] < history[0]
    assert state["up2.up.weight"].shape == (16, 4, 3, 3)  # groups=2: in_channels x out_channels / groups


def test_unet_channels_last_gives_the_same_training():
    weights = weights_of(unet)
    contiguous, _ = run_both(unet_training, weights, **F32)
    last, _ = run_both(unet_training, weights, channels_last=True, **F32)
    for a, b in zip(contiguous[0], last[0]):
        assert a == pytest.approx(b, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Neural style transfer as PyTorch's tutorial writes it: loss modules inserted into a copy of a
# VGG-like feature stack, the model truncated after the last loss, the input image optimised by
# LBFGS with a total-variation term, clamped in place under no_grad
# ----------------------------------------------------------------------------------------------


def vgg_features(m):
    nn = m.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, padding=1))


def style_transfer(m, weights, num_steps=3, style_weight=1e4, content_weight=1.0, tv_weight=1e-2, dtype="float32",
                   max_iter=20):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    dtype = getattr(torch, dtype)
    cnn = load(m, vgg_features(m), weights).to(dtype).eval()
    cnn_normalization_mean = torch.tensor([0.485, 0.456, 0.406], dtype=dtype)
    cnn_normalization_std = torch.tensor([0.229, 0.224, 0.225], dtype=dtype)
    content_img = torch.tensor(images((1, 3, 16, 16), seed=1), dtype=dtype)
    style_img = torch.tensor(images((1, 3, 16, 16), seed=2), dtype=dtype)

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super(ContentLoss, self).__init__()
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d)

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super(StyleLoss, self).__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, input):
            G = gram_matrix(input)
            self.loss = F.mse_loss(G, self.target)
            return input

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super(Normalization, self).__init__()
            self.mean = mean.clone().detach().view(-1, 1, 1)
            self.std = std.clone().detach().view(-1, 1, 1)

        def forward(self, img):
            return (img - self.mean) / self.std

    content_layers = ['conv_4']
    style_layers = ['conv_1', 'conv_2', 'conv_3', 'conv_4', 'conv_5']

    def get_style_model_and_losses(cnn, normalization_mean, normalization_std, style_img, content_img):
        normalization = Normalization(normalization_mean, normalization_std)
        content_losses = []
        style_losses = []
        model = nn.Sequential(normalization)
        i = 0
        for layer in cnn.children():
            if isinstance(layer, nn.Conv2d):
                i += 1
                name = 'conv_{}'.format(i)
            elif isinstance(layer, nn.ReLU):
                name = 'relu_{}'.format(i)
                layer = nn.ReLU(inplace=False)
            elif isinstance(layer, nn.MaxPool2d):
                name = 'pool_{}'.format(i)
            elif isinstance(layer, nn.BatchNorm2d):
                name = 'bn_{}'.format(i)
            else:
                raise RuntimeError('Unrecognized layer: {}'.format(layer.__class__.__name__))
            model.add_module(name, layer)
            if name in content_layers:
                target = model(content_img).detach()
                content_loss = ContentLoss(target)
                model.add_module("content_loss_{}".format(i), content_loss)
                content_losses.append(content_loss)
            if name in style_layers:
                target_feature = model(style_img).detach()
                style_loss = StyleLoss(target_feature)
                model.add_module("style_loss_{}".format(i), style_loss)
                style_losses.append(style_loss)
        for i in range(len(model) - 1, -1, -1):
            if isinstance(model[i], ContentLoss) or isinstance(model[i], StyleLoss):
                break
        model = model[:(i + 1)]
        return model, style_losses, content_losses

    def total_variation(img):
        return (torch.sum(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]))
                + torch.sum(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :])))

    input_img = content_img.clone()
    model, style_losses, content_losses = get_style_model_and_losses(
        cnn, cnn_normalization_mean, cnn_normalization_std, style_img, content_img)
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = optim.LBFGS([input_img], max_iter=max_iter)
    run = [0]
    history = []
    while run[0] <= num_steps:
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = 0
            content_score = 0
            for sl in style_losses:
                style_score += sl.loss
            for cl in content_losses:
                content_score += cl.loss
            style_score *= style_weight
            content_score *= content_weight
            loss = style_score + content_score + tv_weight * total_variation(input_img)
            loss.backward()
            run[0] += 1
            history.append((style_score.item(), content_score.item()))
            return style_score + content_score
        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    names = [name for name, _ in model.named_children()]
    return history, input_img, names, [p.requires_grad for p in model.parameters()]


def test_neural_style_transfer_tutorial():
    weights = weights_of(vgg_features)
    ours, _ = run_both(style_transfer, weights, dtype="float64", rtol=1e-8, atol=1e-10)
    history, image, names, requires_grad = ours
    assert names[-1] == "style_loss_5" and "content_loss_4" in names and "pool_2" in names
    assert not any(requires_grad)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert history[-1][0] < history[0][0]
    # in float32 LBFGS's twenty evaluations a step amplify rounding (the style term is weighted 1e4): compare fewer
    run_both(style_transfer, weights, max_iter=6, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Super-resolution, Real-ESRGAN style: PixelUnshuffle to fold a x2 input into channels, residual-in-
# residual dense blocks with residual scaling and LeakyReLU(inplace), nearest nn.Upsample + conv and
# PixelShuffle heads over a bicubic skip; L1 plus an antialiased bicubic down-sampling consistency term,
# Adam with MultiStepLR and gradient-norm clipping, PSNR
# ----------------------------------------------------------------------------------------------


def rrdb_net(m, nf=8, gc=4, scale=2):
    nn, torch, F = m.nn, m.torch, m.F

    class ResidualDenseBlock(nn.Module):
        def __init__(self, nf=nf, gc=gc):
            super().__init__()
            self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
            self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
            self.conv3 = nn.Conv2d(nf + 2 * gc, nf, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

        def forward(self, x):
            x1 = self.lrelu(self.conv1(x))
            x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
            x3 = self.conv3(torch.cat((x, x1, x2), 1))
            return x3 * 0.2 + x

    class RRDB(nn.Module):
        def __init__(self, nf):
            super().__init__()
            self.rdb1 = ResidualDenseBlock(nf)
            self.rdb2 = ResidualDenseBlock(nf)

        def forward(self, x):
            out = self.rdb2(self.rdb1(x))
            return out * 0.2 + x

    class RRDBNet(nn.Module):
        def __init__(self, num_in_ch=3, num_out_ch=3, scale=scale, num_block=2):
            super().__init__()
            self.scale = scale
            if scale == 2:
                num_in_ch = num_in_ch * 4
            self.conv_first = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
            self.body = nn.Sequential(*[RRDB(nf) for _ in range(num_block)])
            self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
            self.upsample = nn.Upsample(scale_factor=2, mode='nearest')
            self.conv_last = nn.Conv2d(nf, num_out_ch, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

        def forward(self, x):
            if self.scale == 2:
                feat = F.pixel_unshuffle(x, downscale_factor=2)
            else:
                feat = x
            feat = self.conv_first(feat)
            body_feat = self.conv_body(self.body(feat))
            feat = feat + body_feat
            feat = self.lrelu(self.conv_up1(self.upsample(feat)))  # x2 by nearest: back to the input size
            feat = self.lrelu(self.pixel_shuffle(self.conv_up2(feat)))  # x2 by sub-pixel convolution
            out = self.conv_last(feat)
            return out + F.interpolate(x, scale_factor=self.scale, mode='bicubic', align_corners=False)

    return RRDBNet()


def super_resolution_training(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, rrdb_net(m), weights)
    hr = torch.tensor(images((2, 3, 16, 16), seed=3))
    lr_img = F.interpolate(hr, scale_factor=0.5, mode='bicubic', align_corners=False, antialias=True).clamp(0, 1)
    optimizer = optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.99))
    scheduler = optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.5)
    l1 = nn.L1Loss()
    history, norms = [], []
    for step in range(steps):
        optimizer.zero_grad()
        sr = model(lr_img)
        down = F.interpolate(sr, size=lr_img.shape[-2:], mode='bilinear', align_corners=False, antialias=True)
        loss = l1(sr, hr) + 0.5 * F.mse_loss(down, lr_img)
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5))
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    with torch.no_grad():
        sr = model(lr_img).clamp_(0, 1)
        mse = ((sr - hr) ** 2).mean(dim=(1, 2, 3))
        psnr = 10 * torch.log10(1.0 / mse)
    return history, norms, psnr, sr, scheduler.get_last_lr(), model.state_dict()


def test_real_esrgan_style_super_resolution():
    weights = weights_of(rrdb_net)
    ours, _ = run_both(super_resolution_training, weights, **F32)
    history, norms, psnr, sr, last_lr, state = ours
    assert sr.shape == (2, 3, 16, 16) and state["conv_first.weight"].shape == (8, 12, 3, 3)
    assert last_lr == [1e-3] and np.isfinite(psnr).all()


# ----------------------------------------------------------------------------------------------
# CycleGAN as junyanz/pytorch-CycleGAN-and-pix2pix writes it: a ResnetGenerator (ReflectionPad2d,
# InstanceNorm2d, ConvTranspose2d with output_padding=1, Tanh), a PatchGAN discriminator, LSGAN losses
# by a GANLoss that caches its target tensors as buffers, cycle and identity L1 terms, set_requires_grad,
# Adam over itertools.chain, and a linear LambdaLR decay
# ----------------------------------------------------------------------------------------------


def cyclegan(m, ngf=4, ndf=4):
    nn, torch = m.nn, m.torch
    import functools

    norm_layer = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)

    class ResnetBlock(nn.Module):
        def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
            super(ResnetBlock, self).__init__()
            self.conv_block = self.build_conv_block(dim, padding_type, norm_layer, use_dropout, use_bias)

        def build_conv_block(self, dim, padding_type, norm_layer, use_dropout, use_bias):
            conv_block = []
            p = 0
            if padding_type == 'reflect':
                conv_block += [nn.ReflectionPad2d(1)]
            elif padding_type == 'replicate':
                conv_block += [nn.ReplicationPad2d(1)]
            elif padding_type == 'zero':
                p = 1
            else:
                raise NotImplementedError('padding [%s] is not implemented' % padding_type)
            conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim), nn.ReLU(True)]
            if use_dropout:
                conv_block += [nn.Dropout(0.5)]
            p = 0
            if padding_type == 'reflect':
                conv_block += [nn.ReflectionPad2d(1)]
            elif padding_type == 'replicate':
                conv_block += [nn.ReplicationPad2d(1)]
            elif padding_type == 'zero':
                p = 1
            conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim)]
            return nn.Sequential(*conv_block)

        def forward(self, x):
            out = x + self.conv_block(x)
            return out

    class ResnetGenerator(nn.Module):
        def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False, n_blocks=6,
                     padding_type='reflect'):
            assert(n_blocks >= 0)
            super(ResnetGenerator, self).__init__()
            if type(norm_layer) == functools.partial:
                use_bias = norm_layer.func == nn.InstanceNorm2d
            else:
                use_bias = norm_layer == nn.InstanceNorm2d
            model = [nn.ReflectionPad2d(3),
                     nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                     norm_layer(ngf),
                     nn.ReLU(True)]
            n_downsampling = 2
            for i in range(n_downsampling):
                mult = 2 ** i
                model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                          norm_layer(ngf * mult * 2),
                          nn.ReLU(True)]
            mult = 2 ** n_downsampling
            for i in range(n_blocks):
                model += [ResnetBlock(ngf * mult, padding_type=padding_type, norm_layer=norm_layer,
                                      use_dropout=use_dropout, use_bias=use_bias)]
            for i in range(n_downsampling):
                mult = 2 ** (n_downsampling - i)
                model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2),
                                             kernel_size=3, stride=2,
                                             padding=1, output_padding=1,
                                             bias=use_bias),
                          norm_layer(int(ngf * mult / 2)),
                          nn.ReLU(True)]
            model += [nn.ReflectionPad2d(3)]
            model += [nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0)]
            model += [nn.Tanh()]
            self.model = nn.Sequential(*model)

        def forward(self, input):
            return self.model(input)

    class NLayerDiscriminator(nn.Module):
        def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d):
            super(NLayerDiscriminator, self).__init__()
            if type(norm_layer) == functools.partial:
                use_bias = norm_layer.func == nn.InstanceNorm2d
            else:
                use_bias = norm_layer == nn.InstanceNorm2d
            kw = 4
            padw = 1
            sequence = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
            nf_mult = 1
            nf_mult_prev = 1
            for n in range(1, n_layers):
                nf_mult_prev = nf_mult
                nf_mult = min(2 ** n, 8)
                sequence += [
                    nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                    norm_layer(ndf * nf_mult),
                    nn.LeakyReLU(0.2, True)
                ]
            nf_mult_prev = nf_mult
            nf_mult = min(2 ** n_layers, 8)
            sequence += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True)
            ]
            sequence += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
            self.model = nn.Sequential(*sequence)

        def forward(self, input):
            return self.model(input)

    nets = nn.ModuleDict({
        "G_A": ResnetGenerator(3, 3, ngf, norm_layer=norm_layer, n_blocks=2),
        "G_B": ResnetGenerator(3, 3, ngf, norm_layer=norm_layer, n_blocks=2, padding_type='replicate'),
        "D_A": NLayerDiscriminator(3, ndf, n_layers=2, norm_layer=norm_layer),
        "D_B": NLayerDiscriminator(3, ndf, n_layers=2, norm_layer=norm_layer),
    })
    return nets


def cyclegan_training(m, weights, steps=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    import itertools

    nets = load(m, cyclegan(m), weights)
    netG_A, netG_B, netD_A, netD_B = nets["G_A"], nets["G_B"], nets["D_A"], nets["D_B"]

    class GANLoss(nn.Module):
        def __init__(self, gan_mode, target_real_label=1.0, target_fake_label=0.0):
            super(GANLoss, self).__init__()
            self.register_buffer('real_label', torch.tensor(target_real_label))
            self.register_buffer('fake_label', torch.tensor(target_fake_label))
            self.gan_mode = gan_mode
            if gan_mode == 'lsgan':
                self.loss = nn.MSELoss()
            elif gan_mode == 'vanilla':
                self.loss = nn.BCEWithLogitsLoss()

        def get_target_tensor(self, prediction, target_is_real):
            if target_is_real:
                target_tensor = self.real_label
            else:
                target_tensor = self.fake_label
            return target_tensor.expand_as(prediction)

        def __call__(self, prediction, target_is_real):
            target_tensor = self.get_target_tensor(prediction, target_is_real)
            return self.loss(prediction, target_tensor)

    def set_requires_grad(nets, requires_grad=False):
        if not isinstance(nets, list):
            nets = [nets]
        for net in nets:
            if net is not None:
                for param in net.parameters():
                    param.requires_grad = requires_grad

    criterionGAN = GANLoss('lsgan')
    criterionCycle = nn.L1Loss()  # torch.nn.L1Loss in the repository (autograd.nn: see test_torch_dot_nn_spelling)
    criterionIdt = nn.L1Loss()
    optimizer_G = optim.Adam(itertools.chain(netG_A.parameters(), netG_B.parameters()), lr=2e-3, betas=(0.5, 0.999))
    optimizer_D = optim.Adam(itertools.chain(netD_A.parameters(), netD_B.parameters()), lr=2e-3, betas=(0.5, 0.999))

    def lambda_rule(epoch):
        return 1.0 - max(0, epoch + 1 - 1) / float(2 + 1)

    schedulers = [optim.lr_scheduler.LambdaLR(o, lr_lambda=lambda_rule) for o in (optimizer_G, optimizer_D)]
    real_A = torch.tensor(images((1, 3, 16, 16), seed=4, low=-1.0))
    real_B = torch.tensor(images((1, 3, 16, 16), seed=5, low=-1.0))
    lambda_A = lambda_B = 10.0
    lambda_idt = 0.5
    history = []
    for step in range(steps):
        fake_B = netG_A(real_A)
        rec_A = netG_B(fake_B)
        fake_A = netG_B(real_B)
        rec_B = netG_A(fake_A)
        set_requires_grad([netD_A, netD_B], False)
        optimizer_G.zero_grad()
        idt_A = netG_A(real_B)
        loss_idt_A = criterionIdt(idt_A, real_B) * lambda_B * lambda_idt
        idt_B = netG_B(real_A)
        loss_idt_B = criterionIdt(idt_B, real_A) * lambda_A * lambda_idt
        loss_G_A = criterionGAN(netD_A(fake_B), True)
        loss_G_B = criterionGAN(netD_B(fake_A), True)
        loss_cycle_A = criterionCycle(rec_A, real_A) * lambda_A
        loss_cycle_B = criterionCycle(rec_B, real_B) * lambda_B
        loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        loss_G.backward()
        optimizer_G.step()
        set_requires_grad([netD_A, netD_B], True)
        optimizer_D.zero_grad()

        def backward_D_basic(netD, real, fake):
            pred_real = netD(real)
            loss_D_real = criterionGAN(pred_real, True)
            pred_fake = netD(fake.detach())
            loss_D_fake = criterionGAN(pred_fake, False)
            loss_D = (loss_D_real + loss_D_fake) * 0.5
            loss_D.backward()
            return loss_D

        loss_D_A = backward_D_basic(netD_A, real_B, fake_B)
        loss_D_B = backward_D_basic(netD_B, real_A, fake_A)
        optimizer_D.step()
        for scheduler in schedulers:
            scheduler.step()
        history.append([loss_G.item(), loss_D_A.item(), loss_D_B.item(), loss_cycle_A.item(), loss_idt_B.item()])
    # a convolution's bias just before an InstanceNorm has a gradient of zero up to rounding (the norm takes out
    # each channel's mean), which Adam scales up to steps of ±lr: compare those by size, the rest by value
    before_norm = set()
    for name, module in nets.named_modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i + 1], nn.InstanceNorm2d) and module[i].bias is not None:
                    before_norm.add(f"{name}.{i}.bias")
    grads = {name: p.grad for name, p in nets.named_parameters() if name not in before_norm}
    state = {name: v for name, v in nets.state_dict().items() if name not in before_norm}
    largest = max(nets.get_parameter(name).grad.abs().max().item() for name in before_norm)
    return history, fake_B, rec_A, state, grads, optimizer_G.param_groups[0]["lr"], largest < 1e-5


def test_cyclegan_resnet_generator_and_patchgan():
    weights = weights_of(cyclegan)
    ours, _ = run_both(cyclegan_training, weights, **F32)
    history, fake_B, rec_A, state, grads, lr, bias_gradients_vanish = ours
    assert bias_gradients_vanish
    assert fake_B.shape == (1, 3, 16, 16) and np.abs(fake_B).max() <= 1.0
    assert lr == pytest.approx(2e-3 * (1 - 2 / 3))
    assert not any(k.endswith("running_mean") for k in state)  # InstanceNorm without running statistics


# ----------------------------------------------------------------------------------------------
# Monodepth2 (self-supervised monocular depth): a depth decoder keyed by tuples in an OrderedDict
# (ReflectionPad2d convs, ELU, nearest x2 upsampling, multi-scale sigmoid disparities), a pose decoder,
# backprojection by matmul with inverse intrinsics over a meshgrid held in a frozen nn.Parameter,
# projection and grid_sample(padding_mode="border"), axis-angle rotations written element by element,
# SSIM by AvgPool2d(3, 1), auto-masking by torch.min over stacked losses with seeded noise, and the
# edge-aware smoothness of mean-normalised disparity
# ----------------------------------------------------------------------------------------------


def monodepth(m, num_ch_enc=(4, 8, 8)):
    nn, torch, F = m.nn, m.torch, m.F
    from collections import OrderedDict

    class Conv3x3(nn.Module):
        def __init__(self, in_channels, out_channels, use_refl=True):
            super(Conv3x3, self).__init__()
            if use_refl:
                self.pad = nn.ReflectionPad2d(1)
            else:
                self.pad = nn.ZeroPad2d(1)
            self.conv = nn.Conv2d(int(in_channels), int(out_channels), 3)

        def forward(self, x):
            out = self.pad(x)
            out = self.conv(out)
            return out

    class ConvBlock(nn.Module):
        def __init__(self, in_channels, out_channels):
            super(ConvBlock, self).__init__()
            self.conv = Conv3x3(in_channels, out_channels)
            self.nonlin = nn.ELU(inplace=True)

        def forward(self, x):
            out = self.conv(x)
            out = self.nonlin(out)
            return out

    def upsample(x):
        return F.interpolate(x, scale_factor=2, mode="nearest")

    class Encoder(nn.Module):
        def __init__(self, num_input_images=1):
            super().__init__()
            self.num_ch_enc = np.array(num_ch_enc)
            chans = [3 * num_input_images] + list(num_ch_enc)
            self.layers = nn.ModuleList([
                nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, bias=False),
                              nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True))
                for i in range(len(num_ch_enc))])

        def forward(self, input_image):
            self.features = []
            x = (input_image - 0.45) / 0.225
            for layer in self.layers:
                x = layer(x)
                self.features.append(x)
            return self.features

    class DepthDecoder(nn.Module):
        def __init__(self, num_ch_enc, scales=range(3), num_output_channels=1, use_skips=True):
            super(DepthDecoder, self).__init__()
            self.num_output_channels = num_output_channels
            self.use_skips = use_skips
            self.upsample_mode = 'nearest'
            self.scales = scales
            self.num_ch_enc = num_ch_enc
            self.num_ch_dec = np.array([4, 4, 8])
            self.convs = OrderedDict()
            for i in range(2, -1, -1):
                num_ch_in = self.num_ch_enc[-1] if i == 2 else self.num_ch_dec[i + 1]
                num_ch_out = self.num_ch_dec[i]
                self.convs[("upconv", i, 0)] = ConvBlock(num_ch_in, num_ch_out)
                num_ch_in = self.num_ch_dec[i]
                if self.use_skips and i > 0:
                    num_ch_in += self.num_ch_enc[i - 1]
                num_ch_out = self.num_ch_dec[i]
                self.convs[("upconv", i, 1)] = ConvBlock(num_ch_in, num_ch_out)
            for s in self.scales:
                self.convs[("dispconv", s)] = Conv3x3(self.num_ch_dec[s], self.num_output_channels)
            self.decoder = nn.ModuleList(list(self.convs.values()))
            self.sigmoid = nn.Sigmoid()

        def forward(self, input_features):
            self.outputs = {}
            x = input_features[-1]
            for i in range(2, -1, -1):
                x = self.convs[("upconv", i, 0)](x)
                x = [upsample(x)]
                if self.use_skips and i > 0:
                    x += [input_features[i - 1]]
                x = torch.cat(x, 1)
                x = self.convs[("upconv", i, 1)](x)
                if i in self.scales:
                    self.outputs[("disp", i)] = self.sigmoid(self.convs[("dispconv", i)](x))
            return self.outputs

    class PoseDecoder(nn.Module):
        def __init__(self, num_ch_enc, num_input_features, num_frames_to_predict_for=None, stride=1):
            super(PoseDecoder, self).__init__()
            self.num_ch_enc = num_ch_enc
            self.num_input_features = num_input_features
            if num_frames_to_predict_for is None:
                num_frames_to_predict_for = num_input_features - 1
            self.num_frames_to_predict_for = num_frames_to_predict_for
            self.convs = OrderedDict()
            self.convs[("squeeze")] = nn.Conv2d(self.num_ch_enc[-1], 8, 1)
            self.convs[("pose", 0)] = nn.Conv2d(num_input_features * 8, 8, 3, stride, 1)
            self.convs[("pose", 1)] = nn.Conv2d(8, 8, 3, stride, 1)
            self.convs[("pose", 2)] = nn.Conv2d(8, 6 * num_frames_to_predict_for, 1)
            self.relu = nn.ReLU()
            self.net = nn.ModuleList(list(self.convs.values()))

        def forward(self, input_features):
            last_features = [f[-1] for f in input_features]
            cat_features = [self.relu(self.convs["squeeze"](f)) for f in last_features]
            cat_features = torch.cat(cat_features, 1)
            out = cat_features
            for i in range(3):
                out = self.convs[("pose", i)](out)
                if i != 2:
                    out = self.relu(out)
            out = out.mean(3).mean(2)
            out = 0.01 * out.view(-1, self.num_frames_to_predict_for, 1, 6)
            axisangle = out[..., :3]
            translation = out[..., 3:]
            return axisangle, translation

    class BackprojectDepth(nn.Module):
        def __init__(self, batch_size, height, width):
            super(BackprojectDepth, self).__init__()
            self.batch_size = batch_size
            self.height = height
            self.width = width
            meshgrid = np.meshgrid(range(self.width), range(self.height), indexing='xy')
            self.id_coords = np.stack(meshgrid, axis=0).astype(np.float32)
            self.id_coords = nn.Parameter(torch.from_numpy(self.id_coords), requires_grad=False)
            self.ones = nn.Parameter(torch.ones(self.batch_size, 1, self.height * self.width), requires_grad=False)
            self.pix_coords = torch.unsqueeze(torch.stack(
                [self.id_coords[0].view(-1), self.id_coords[1].view(-1)], 0), 0)
            self.pix_coords = self.pix_coords.repeat(batch_size, 1, 1)
            self.pix_coords = nn.Parameter(torch.cat([self.pix_coords, self.ones], 1), requires_grad=False)

        def forward(self, depth, inv_K):
            cam_points = torch.matmul(inv_K[:, :3, :3], self.pix_coords)
            cam_points = depth.view(self.batch_size, 1, -1) * cam_points
            cam_points = torch.cat([cam_points, self.ones], 1)
            return cam_points

    class Project3D(nn.Module):
        def __init__(self, batch_size, height, width, eps=1e-7):
            super(Project3D, self).__init__()
            self.batch_size = batch_size
            self.height = height
            self.width = width
            self.eps = eps

        def forward(self, points, K, T):
            P = torch.matmul(K, T)[:, :3, :]
            cam_points = torch.matmul(P, points)
            pix_coords = cam_points[:, :2, :] / (cam_points[:, 2, :].unsqueeze(1) + self.eps)
            pix_coords = pix_coords.view(self.batch_size, 2, self.height, self.width)
            pix_coords = pix_coords.permute(0, 2, 3, 1)
            pix_coords[..., 0] /= self.width - 1
            pix_coords[..., 1] /= self.height - 1
            pix_coords = (pix_coords - 0.5) * 2
            return pix_coords

    class SSIM(nn.Module):
        def __init__(self):
            super(SSIM, self).__init__()
            self.mu_x_pool = nn.AvgPool2d(3, 1)
            self.mu_y_pool = nn.AvgPool2d(3, 1)
            self.sig_x_pool = nn.AvgPool2d(3, 1)
            self.sig_y_pool = nn.AvgPool2d(3, 1)
            self.sig_xy_pool = nn.AvgPool2d(3, 1)
            self.refl = nn.ReflectionPad2d(1)
            self.C1 = 0.01 ** 2
            self.C2 = 0.03 ** 2

        def forward(self, x, y):
            x = self.refl(x)
            y = self.refl(y)
            mu_x = self.mu_x_pool(x)
            mu_y = self.mu_y_pool(y)
            sigma_x = self.sig_x_pool(x ** 2) - mu_x ** 2
            sigma_y = self.sig_y_pool(y ** 2) - mu_y ** 2
            sigma_xy = self.sig_xy_pool(x * y) - mu_x * mu_y
            SSIM_n = (2 * mu_x * mu_y + self.C1) * (2 * sigma_xy + self.C2)
            SSIM_d = (mu_x ** 2 + mu_y ** 2 + self.C1) * (sigma_x + sigma_y + self.C2)
            return torch.clamp((1 - SSIM_n / SSIM_d) / 2, 0, 1)

    models = nn.ModuleDict({
        "encoder": Encoder(), "depth": DepthDecoder(np.array(num_ch_enc)),
        "pose_encoder": Encoder(num_input_images=2), "pose": PoseDecoder(np.array(num_ch_enc), 1, 2)})
    return models, dict(BackprojectDepth=BackprojectDepth, Project3D=Project3D, SSIM=SSIM)


def monodepth_parts(m):
    return monodepth(m)[0]


def rot_from_axisangle(torch, vec):
    angle = torch.norm(vec, 2, 2, True)
    axis = vec / (angle + 1e-7)
    ca = torch.cos(angle)
    sa = torch.sin(angle)
    C = 1 - ca
    x = axis[..., 0].unsqueeze(1)
    y = axis[..., 1].unsqueeze(1)
    z = axis[..., 2].unsqueeze(1)
    xs = x * sa
    ys = y * sa
    zs = z * sa
    xC = x * C
    yC = y * C
    zC = z * C
    xyC = x * yC
    yzC = y * zC
    zxC = z * xC
    rot = torch.zeros((vec.shape[0], 4, 4), device=vec.device)
    rot[:, 0, 0] = torch.squeeze(x * xC + ca)
    rot[:, 0, 1] = torch.squeeze(xyC - zs)
    rot[:, 0, 2] = torch.squeeze(zxC + ys)
    rot[:, 1, 0] = torch.squeeze(xyC + zs)
    rot[:, 1, 1] = torch.squeeze(y * yC + ca)
    rot[:, 1, 2] = torch.squeeze(yzC - xs)
    rot[:, 2, 0] = torch.squeeze(zxC - ys)
    rot[:, 2, 1] = torch.squeeze(yzC + xs)
    rot[:, 2, 2] = torch.squeeze(z * zC + ca)
    rot[:, 3, 3] = 1
    return rot


def get_translation_matrix(torch, translation_vector):
    T = torch.zeros(translation_vector.shape[0], 4, 4).to(device=translation_vector.device)
    t = translation_vector.contiguous().view(-1, 3, 1)
    T[:, 0, 0] = 1
    T[:, 1, 1] = 1
    T[:, 2, 2] = 1
    T[:, 3, 3] = 1
    T[:, :3, 3, None] = t
    return T


def transformation_from_parameters(torch, axisangle, translation, invert=False):
    R = rot_from_axisangle(torch, axisangle)
    t = translation.clone()
    if invert:
        R = R.transpose(1, 2)
        t *= -1
    T = get_translation_matrix(torch, t)
    if invert:
        M = torch.matmul(R, T)
    else:
        M = torch.matmul(T, R)
    return M


def monodepth_training(m, weights, steps=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    models, layers = monodepth(m)
    models = load(m, models, weights)
    B, H, W = 2, 16, 24
    scales = [0, 1, 2]
    frame_ids = [0, -1, 1]
    backproject_depth = layers["BackprojectDepth"](B, H, W)
    project_3d = layers["Project3D"](B, H, W)
    ssim = layers["SSIM"]()
    K = np.array([[0.58 * W, 0, 0.5 * W, 0], [0, 1.92 * H, 0.5 * H, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)
    inputs = {("K", 0): torch.from_numpy(K).unsqueeze(0).repeat(B, 1, 1),
              ("inv_K", 0): torch.from_numpy(np.linalg.pinv(K)).unsqueeze(0).repeat(B, 1, 1)}
    for seed, f_i in enumerate(frame_ids):
        inputs[("color", f_i, 0)] = torch.tensor(images((B, 3, H, W), seed=10 + seed))
    parameters_to_train = list(models["encoder"].parameters()) + list(models["depth"].parameters()) \
        + list(models["pose_encoder"].parameters()) + list(models["pose"].parameters())
    model_optimizer = optim.Adam(parameters_to_train, 1e-3)
    model_lr_scheduler = optim.lr_scheduler.StepLR(model_optimizer, 1, 0.1)

    def disp_to_depth(disp, min_depth, max_depth):
        min_disp = 1 / max_depth
        max_disp = 1 / min_depth
        scaled_disp = min_disp + (max_disp - min_disp) * disp
        depth = 1 / scaled_disp
        return scaled_disp, depth

    def compute_reprojection_loss(pred, target):
        abs_diff = torch.abs(target - pred)
        l1_loss = abs_diff.mean(1, True)
        ssim_loss = ssim(pred, target).mean(1, True)
        return 0.85 * ssim_loss + 0.15 * l1_loss

    def get_smooth_loss(disp, img):
        grad_disp_x = torch.abs(disp[:, :, :, :-1] - disp[:, :, :, 1:])
        grad_disp_y = torch.abs(disp[:, :, :-1, :] - disp[:, :, 1:, :])
        grad_img_x = torch.mean(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]), 1, keepdim=True)
        grad_img_y = torch.mean(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :]), 1, keepdim=True)
        grad_disp_x *= torch.exp(-grad_img_x)
        grad_disp_y *= torch.exp(-grad_img_y)
        return grad_disp_x.mean() + grad_disp_y.mean()

    history = []
    torch.manual_seed(0)
    for step in range(steps):
        features = models["encoder"](inputs[("color", 0, 0)])
        outputs = models["depth"](features)
        for f_i in frame_ids[1:]:
            if f_i < 0:
                pose_inputs = [inputs[("color", f_i, 0)], inputs[("color", 0, 0)]]
            else:
                pose_inputs = [inputs[("color", 0, 0)], inputs[("color", f_i, 0)]]
            pose_inputs = [models["pose_encoder"](torch.cat(pose_inputs, 1))]
            axisangle, translation = models["pose"](pose_inputs)
            outputs[("axisangle", 0, f_i)] = axisangle
            outputs[("translation", 0, f_i)] = translation
            outputs[("cam_T_cam", 0, f_i)] = transformation_from_parameters(
                torch, axisangle[:, 0], translation[:, 0], invert=(f_i < 0))
        for scale in scales:
            disp = outputs[("disp", scale)]
            disp = F.interpolate(disp, [H, W], mode="bilinear", align_corners=False)
            _, depth = disp_to_depth(disp, 0.1, 100.0)
            outputs[("depth", 0, scale)] = depth
            for i, frame_id in enumerate(frame_ids[1:]):
                T = outputs[("cam_T_cam", 0, frame_id)]
                cam_points = backproject_depth(depth, inputs[("inv_K", 0)])
                pix_coords = project_3d(cam_points, inputs[("K", 0)], T)
                outputs[("sample", frame_id, scale)] = pix_coords
                outputs[("color", frame_id, scale)] = F.grid_sample(
                    inputs[("color", frame_id, 0)], outputs[("sample", frame_id, scale)],
                    padding_mode="border", align_corners=True)
        losses = {}
        total_loss = 0
        for scale in scales:
            loss = 0
            reprojection_losses = []
            disp = outputs[("disp", scale)]
            color = inputs[("color", 0, 0)]
            color = F.interpolate(color, disp.shape[-2:], mode="area") if scale else color
            target = inputs[("color", 0, 0)]
            for frame_id in frame_ids[1:]:
                pred = outputs[("color", frame_id, scale)]
                reprojection_losses.append(compute_reprojection_loss(pred, target))
            reprojection_losses = torch.cat(reprojection_losses, 1)
            identity_reprojection_losses = []
            for frame_id in frame_ids[1:]:
                pred = inputs[("color", frame_id, 0)]
                identity_reprojection_losses.append(compute_reprojection_loss(pred, target))
            identity_reprojection_losses = torch.cat(identity_reprojection_losses, 1)
            identity_reprojection_loss = identity_reprojection_losses
            reprojection_loss = reprojection_losses
            identity_reprojection_loss += torch.randn(identity_reprojection_loss.shape) * 0.00001
            combined = torch.cat((identity_reprojection_loss, reprojection_loss), dim=1)
            if combined.shape[1] == 1:
                to_optimise = combined
            else:
                to_optimise, idxs = torch.min(combined, dim=1)
            outputs["identity_selection/{}".format(scale)] = (idxs > identity_reprojection_loss.shape[1] - 1).float()
            loss += to_optimise.mean()
            mean_disp = disp.mean(2, True).mean(3, True)
            norm_disp = disp / (mean_disp + 1e-7)
            smooth_loss = get_smooth_loss(norm_disp, color)
            loss += 1e-3 * smooth_loss / (2 ** scale)
            total_loss += loss
            losses["loss/{}".format(scale)] = loss
        total_loss /= len(scales)
        losses["loss"] = total_loss
        model_optimizer.zero_grad()
        losses["loss"].backward()
        model_optimizer.step()
        model_lr_scheduler.step()
        history.append({k: v.item() for k, v in losses.items()})
    grads = {name: p.grad for name, p in models.named_parameters()}
    return (history, outputs[("depth", 0, 0)], outputs[("cam_T_cam", 0, -1)], outputs[("sample", 1, 0)],
            outputs["identity_selection/0"], grads, models.state_dict())


def test_monodepth2_self_supervised_depth():
    weights = weights_of(monodepth_parts)
    ours, _ = run_both(monodepth_training, weights, **F32)
    history, depth, T, sample, selection, grads, state = ours
    assert depth.shape == (2, 1, 16, 24) and 0.1 <= depth.min() and depth.max() <= 100.0
    # a rigid motion: the rotation block orthonormal, the bottom row (0, 0, 0, 1)
    R = T[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(T[:, 3], [[0, 0, 0, 1]] * 2)
    assert set(np.unique(selection)) <= {0.0, 1.0}


# ----------------------------------------------------------------------------------------------
# DeepLabV3+: a depthwise-separable dilated backbone, ASPP (dilated branches and an image-pooling branch
# by AdaptiveAvgPool2d(1) upsampled back), a decoder fusing low-level features after bilinear upsampling,
# the model and batch in channels_last; SGD(nesterov) with the poly schedule by LambdaLR, OHEM cross-entropy
# (per-pixel losses thresholded and top-k'd, ignore_index) and pixel-wise distillation from a frozen teacher
# by KL at a temperature
# ----------------------------------------------------------------------------------------------


def deeplab(m, classes=5):
    nn, torch, F = m.nn, m.torch, m.F

    class SeparableConv2d(nn.Sequential):
        def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1, bias=False):
            dephtwise_conv = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                       dilation=dilation, groups=in_channels, bias=False)
            pointwise_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=bias)
            super().__init__(dephtwise_conv, pointwise_conv)

    class ASPPConv(nn.Sequential):
        def __init__(self, in_channels, out_channels, dilation):
            super().__init__(SeparableConv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
                             nn.BatchNorm2d(out_channels), nn.ReLU())

    class ASPPPooling(nn.Sequential):
        def __init__(self, in_channels, out_channels):
            super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                             nn.BatchNorm2d(out_channels), nn.ReLU())

        def forward(self, x):
            size = x.shape[-2:]
            for mod in self:
                x = mod(x)
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    class ASPP(nn.Module):
        def __init__(self, in_channels, atrous_rates, out_channels=8):
            super().__init__()
            modules = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                                     nn.ReLU())]
            for rate in tuple(atrous_rates):
                modules.append(ASPPConv(in_channels, out_channels, rate))
            modules.append(ASPPPooling(in_channels, out_channels))
            self.convs = nn.ModuleList(modules)
            self.project = nn.Sequential(nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
                                         nn.BatchNorm2d(out_channels), nn.ReLU())

        def forward(self, x):
            res = []
            for conv in self.convs:
                res.append(conv(x))
            res = torch.cat(res, dim=1)
            return self.project(res)

    class DeepLabV3Plus(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                      nn.ReLU(inplace=True))
            self.low = nn.Sequential(SeparableConv2d(8, 12, stride=2), nn.BatchNorm2d(12), nn.ReLU(inplace=True))
            self.high = nn.Sequential(SeparableConv2d(12, 16, padding=2, dilation=2), nn.BatchNorm2d(16),
                                      nn.ReLU(inplace=True))
            self.aspp = ASPP(16, [1, 2, 3])
            self.low_proj = nn.Sequential(nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
            self.decoder = nn.Sequential(SeparableConv2d(12, 8), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                         nn.Conv2d(8, num_classes, 1))

        def forward(self, x):
            input_shape = x.shape[-2:]
            low_level = self.stem(x)
            high = self.high(self.low(low_level))
            feature = self.aspp(high)
            feature = F.interpolate(feature, size=low_level.shape[2:], mode="bilinear", align_corners=False)
            out = self.decoder(torch.cat([self.low_proj(low_level), feature], dim=1))
            return F.interpolate(out, size=input_shape, mode="bilinear", align_corners=False)

    return DeepLabV3Plus(classes)


class OhemCrossEntropy:
    """OHEM as the segmentation repositories write it: pixels whose probability of their class is under
    ``thresh`` (at least ``min_kept`` of them, the hardest first) carry the loss."""

    def __init__(self, m, ignore_label=255, thresh=0.7, min_kept=20, weight=None):
        self.m = m
        self.thresh = thresh
        self.min_kept = max(1, min_kept)
        self.ignore_label = ignore_label
        self.criterion = m.nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_label, reduction='none')

    def __call__(self, score, target):
        torch, F = self.m.torch, self.m.F
        pred = F.softmax(score, dim=1)
        pixel_losses = self.criterion(score, target).contiguous().view(-1)
        mask = target.contiguous().view(-1) != self.ignore_label
        tmp_target = target.clone()
        tmp_target[tmp_target == self.ignore_label] = 0
        pred = pred.gather(1, tmp_target.unsqueeze(1))
        pred, ind = pred.contiguous().view(-1,)[mask].contiguous().sort()
        min_value = pred[min(self.min_kept, pred.numel() - 1)]
        threshold = max(min_value, self.thresh)
        pixel_losses = pixel_losses[mask][ind]
        pixel_losses = pixel_losses[pred < threshold]
        return pixel_losses.mean()


def deeplab_training(m, weights, teacher_weights, steps=3, channels_last=True):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, deeplab(m), weights)
    teacher = load(m, deeplab(m), teacher_weights).eval()
    teacher.requires_grad_(False)
    x = torch.tensor(images((2, 3, 20, 20), seed=6))
    target = torch.tensor(masks((2, 20, 20), 5, seed=6, ignore=255))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = [{"params": [p for n, p in model.named_parameters() if p.ndim > 1], "weight_decay": 1e-4},
              {"params": [p for n, p in model.named_parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    optimizer = optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
    max_iter = 10
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1 - it / max_iter) ** 0.9)
    ohem = OhemCrossEntropy(m, thresh=0.7, min_kept=50, weight=torch.tensor([1.0, 0.8, 1.2, 1.0, 0.9]))
    T = 2.0
    history = []
    for step in range(steps):
        model.train()
        out = model(x)
        with torch.no_grad():
            soft = teacher(x)
        valid = (target != 255).unsqueeze(1).float()
        kd = F.kl_div(F.log_softmax(out / T, dim=1), F.softmax(soft / T, dim=1), reduction="none")
        kd = (kd * valid).sum() / valid.sum() * T * T
        loss = ohem(out, target) + 0.5 * kd
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append((loss.item(), kd.item(), scheduler.get_last_lr()[0]))
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    grads = {n: p.grad for n, p in model.named_parameters()}
    return history, pred, grads, model.state_dict()


def test_deeplabv3plus_ohem_distillation_channels_last():
    weights, teacher = weights_of(deeplab), weights_of(deeplab, seed=1)
    ours, _ = run_both(deeplab_training, weights, teacher, **F32)
    history, pred, grads, state = ours
    assert pred.shape == (2, 20, 20)
    assert history[-1][2] == pytest.approx(0.05 * (1 - 3 / 10) ** 0.9)
    plain, _ = run_both(deeplab_training, weights, teacher, channels_last=False, **F32)
    np.testing.assert_allclose([h[0] for h in plain[0]], [h[0] for h in history], rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Segmentation losses on one-hot masks made by F.one_hot + permute, as their repositories write them:
# Lovasz-softmax and Lovasz hinge (Berman et al.: errors sorted, the Jaccard gradient by cumsum with a
# slice assigned in place, torch.autograd.Variable), focal loss with per-class alpha by gather, focal
# Tversky, a log-cosh Dice, a boundary-weighted cross-entropy (edges by max_pool2d of the one-hot mask),
# each differentiated, and a small head trained on their sum by Adam
# ----------------------------------------------------------------------------------------------


def lovasz_grad(gt_sorted):
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.float().cumsum(0)
    union = gts + (1 - gt_sorted).float().cumsum(0)
    jaccard = 1. - intersection / union
    if p > 1:  # cover 1-pixel case
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def lovasz_softmax_flat(m, probas, labels, classes='present'):
    torch = m.torch
    Variable = torch.autograd.Variable
    if probas.numel() == 0:
        return probas * 0.
    C = probas.size(1)
    losses = []
    class_to_sum = list(range(C)) if classes in ['all', 'present'] else classes
    for c in class_to_sum:
        fg = (labels == c).float()
        if (classes == 'present' and fg.sum() == 0):
            continue
        class_pred = probas[:, c]
        errors = (Variable(fg) - class_pred).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        perm = perm.data
        fg_sorted = fg[perm]
        losses.append(torch.dot(errors_sorted, Variable(lovasz_grad(fg_sorted))))
    return sum(losses) / len(losses)


def flatten_probas(probas, labels, ignore=None):
    B, C, H, W = probas.size()
    probas = probas.permute(0, 2, 3, 1).contiguous().view(-1, C)
    labels = labels.view(-1)
    if ignore is None:
        return probas, labels
    valid = (labels != ignore)
    vprobas = probas[valid.nonzero().squeeze()]
    vlabels = labels[valid]
    return vprobas, vlabels


def lovasz_hinge_flat(m, logits, labels):
    torch, F = m.torch, m.F
    if len(labels) == 0:
        return logits.sum() * 0.
    signs = 2. * labels.float() - 1.
    errors = (1. - logits * torch.autograd.Variable(signs))
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    perm = perm.data
    gt_sorted = labels[perm]
    grad = lovasz_grad(gt_sorted)
    loss = torch.dot(F.relu(errors_sorted), torch.autograd.Variable(grad))
    return loss


def focal_loss(m, logits, target, alpha, gamma=2.0, ignore_index=255):
    torch, F = m.torch, m.F
    valid = target != ignore_index
    safe = target.masked_fill(~valid, 0)
    logpt = F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    pt = logpt.exp()
    at = alpha.gather(0, safe.view(-1)).view_as(safe)
    loss = -at * (1 - pt) ** gamma * logpt
    return loss[valid].mean()


def focal_tversky(m, probs, one_hot, alpha=0.7, beta=0.3, gamma=4 / 3, smooth=1.0):
    torch = m.torch
    dims = (0,) + tuple(range(2, probs.ndim))
    tp = torch.sum(probs * one_hot, dims)
    fn = torch.sum(one_hot * (1 - probs), dims)
    fp = torch.sum((1 - one_hot) * probs, dims)
    tversky = (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    return torch.pow(1 - tversky, 1 / gamma).mean()


def log_cosh_dice(m, probs, one_hot, smooth=1.0):
    torch = m.torch
    inter = (probs * one_hot).sum(dim=(2, 3))
    dice = (2 * inter + smooth) / (probs.sum(dim=(2, 3)) + one_hot.sum(dim=(2, 3)) + smooth)
    return torch.log(torch.cosh(1 - dice.mean()))


def boundary_weighted_ce(m, logits, target, one_hot, weight=4.0):
    F = m.F
    # a pixel lies on a boundary when a 3x3 max pool of its one-hot mask differs from the mask itself
    dilated = F.max_pool2d(one_hot, kernel_size=3, stride=1, padding=1)
    eroded = -F.max_pool2d(-one_hot, kernel_size=3, stride=1, padding=1)
    boundary = (dilated - eroded).amax(dim=1)
    pixel = F.cross_entropy(logits, target, reduction='none')
    return ((1 + weight * boundary) * pixel).sum() / (1 + weight * boundary).sum()


def segmentation_losses(m, logits_array, target_array, binary_logits_array):
    torch, F = m.torch, m.F
    classes = logits_array.shape[1]
    logits = torch.tensor(logits_array, requires_grad=True)
    binary_logits = torch.tensor(binary_logits_array, requires_grad=True)
    target = torch.tensor(target_array)
    probs = F.softmax(logits, dim=1)
    vprobas, vlabels = flatten_probas(probs, target, ignore=255)
    valid_target = torch.where(target == 255, torch.zeros_like(target), target)
    one_hot = F.one_hot(valid_target, num_classes=classes).permute(0, 3, 1, 2).float()
    losses = {
        "lovasz_softmax": lovasz_softmax_flat(m, vprobas, vlabels),
        "lovasz_softmax_all": lovasz_softmax_flat(m, vprobas, vlabels, classes='all'),
        "lovasz_hinge": lovasz_hinge_flat(m, binary_logits.view(-1), (valid_target > 1).long().view(-1)),
        "focal": focal_loss(m, logits, target, torch.tensor([0.25, 0.5, 0.75, 1.0][:classes])),
        "focal_tversky": focal_tversky(m, probs, one_hot),
        "log_cosh_dice": log_cosh_dice(m, probs, one_hot),
        "boundary_ce": boundary_weighted_ce(m, logits, valid_target, one_hot),
    }
    grads = {}
    for name, loss in losses.items():
        inputs = [binary_logits] if name == "lovasz_hinge" else [logits]
        grads[name] = torch.autograd.grad(loss, inputs, retain_graph=True)[0]
    return {k: v.detach() for k, v in losses.items()}, grads


def seg_head(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.GELU(), nn.Conv2d(8, 4, 1))


def segmentation_losses_training(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, seg_head(m), weights)
    x = torch.tensor(images((2, 3, 10, 12), seed=7))
    target = torch.tensor(masks((2, 10, 12), 4, seed=7, ignore=255))
    valid_target = torch.where(target == 255, torch.zeros_like(target), target)
    one_hot = F.one_hot(valid_target, num_classes=4).permute(0, 3, 1, 2).float()
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for step in range(steps):
        logits = model(x)
        probs = F.softmax(logits, dim=1)
        loss = (lovasz_softmax_flat(m, *flatten_probas(probs, target, ignore=255))
                + focal_loss(m, logits, target, torch.tensor([0.25, 0.5, 0.75, 1.0]))
                + focal_tversky(m, probs, one_hot) + boundary_weighted_ce(m, logits, valid_target, one_hot))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, {n: p.grad for n, p in model.named_parameters()}, model.state_dict()


def test_segmentation_losses_and_their_gradients():
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((2, 4, 6, 7)).astype(np.float32)
    target = masks((2, 6, 7), 3, seed=8, ignore=255)  # class 3 absent: 'present' skips it, 'all' does not
    binary = rng.standard_normal((2, 6, 7)).astype(np.float32)
    ours, _ = run_both(segmentation_losses, logits, target, binary, rtol=1e-5, atol=1e-6)
    losses, grads = ours
    assert losses["lovasz_softmax_all"] != pytest.approx(losses["lovasz_softmax"])
    assert all(np.isfinite(g).all() for g in grads.values())


def test_lovasz_grad_by_hand():
    torch = OURS.torch
    # sorted ground truth 1, 0, 1 (two positives): after each pixel the intersection left is 1, 1, 0 and the
    # union 2, 3, 3, so the Jaccard losses are 1/2, 2/3, 1; their successive differences (the right side read
    # before the slice is written)
    g = lovasz_grad(torch.tensor([1.0, 0.0, 1.0])).numpy()
    np.testing.assert_allclose(g, [0.5, 1 / 6, 1 / 3], rtol=1e-6)
    errors = torch.tensor([0.9, 0.2, 0.4, 0.1], requires_grad=True)
    loss = lovasz_softmax_flat(OURS, torch.stack([1 - errors, errors], dim=1), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert np.isfinite(errors.grad.numpy()).all() and loss.item() > 0


def test_segmentation_losses_training():
    weights = weights_of(seg_head)
    ours, _ = run_both(segmentation_losses_training, weights, **F32)
    assert ours[0][-1] < ours[0][0]


# ----------------------------------------------------------------------------------------------
# Resizing as the training loops write it: multi-scale training with random scale factors (some keep the
# size of a small map: floor(12 * 1.05) = 12), image by bilinear and mask by nearest; a feature pyramid fused
# by every interpolation mode (nearest, nearest-exact, bilinear and bicubic with align_corners both ways,
# area, antialiased downsampling, scale_factor with recompute_scale_factor, nn.Upsample, size=) with the
# gradient of each
# ----------------------------------------------------------------------------------------------


def resize_head(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 1))


def multiscale_training(m, weights, scales=(1.05, 0.75, 1.3, 1.0, 0.9)):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, resize_head(m), weights)
    image = torch.tensor(images((2, 3, 12, 14), seed=9))
    mask = torch.tensor(masks((2, 12, 14), 3, seed=9))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history, shapes = [], []
    for s in scales:
        x = F.interpolate(image, scale_factor=s, mode='bilinear', align_corners=False, recompute_scale_factor=False)
        y = F.interpolate(mask[:, None].float(), size=x.shape[-2:], mode='nearest').squeeze(1).long()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        shapes.append(tuple(x.shape[-2:]))
    return history, shapes, model.state_dict()


def every_resize(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(10)
    p3 = torch.tensor(rng.standard_normal((2, 3, 5, 6)).astype(np.float32), requires_grad=True)
    p2 = torch.tensor(rng.standard_normal((2, 3, 10, 12)).astype(np.float32), requires_grad=True)
    big = torch.tensor(rng.standard_normal((2, 3, 21, 17)).astype(np.float32), requires_grad=True)
    outs = {
        "nearest": F.interpolate(p3, size=p2.shape[-2:], mode="nearest"),
        "nearest-exact": F.interpolate(p3, scale_factor=1.9, mode="nearest-exact"),
        "bilinear": F.interpolate(p3, size=(10, 12), mode="bilinear", align_corners=False),
        "bilinear-ac": F.interpolate(p3, scale_factor=2, mode="bilinear", align_corners=True),
        "bicubic": F.interpolate(p3, size=(11, 9), mode="bicubic", align_corners=False),
        "bicubic-ac": F.interpolate(p3, scale_factor=(1.5, 2.5), mode="bicubic", align_corners=True),
        "bilinear-rsf": F.interpolate(p3, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
        "bilinear-kept": F.interpolate(p3, scale_factor=1.1, mode="bilinear"),  # 5 and 6 rows kept, 6 cols
        "nearest-doubled": F.interpolate(p3, scale_factor=2.1, mode="nearest"),  # 10 = 2 * 5 rows: o // 2
        "nearest-exact-kept": F.interpolate(p3, scale_factor=1.1, mode="nearest-exact"),  # sizes kept, resampled
        "area": F.interpolate(big, size=(5, 6), mode="area"),
        "bilinear-aa": F.interpolate(big, size=(5, 6), mode="bilinear", antialias=True),
        "bicubic-aa": F.interpolate(big, scale_factor=0.3, mode="bicubic", antialias=True),
        "bilinear-aa-ac": F.interpolate(big, size=(7, 4), mode="bilinear", antialias=True, align_corners=True),
        "upsample": nn.Upsample(scale_factor=2, mode="nearest")(p3),
        "upsample-bilinear2d": nn.UpsamplingBilinear2d(size=(9, 7))(p3),
        "upsample-nearest2d": nn.UpsamplingNearest2d(scale_factor=3)(p3),
        "linear": F.interpolate(p3.flatten(2), size=40, mode="linear", align_corners=False),
        "trilinear": F.interpolate(p3.unsqueeze(2), scale_factor=(2, 1.5, 0.5), mode="trilinear"),
    }
    # an FPN top-down fusion: the coarse level upsampled to the fine one's size and added
    fused = p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest")
    outs["fpn"] = fused
    rng = np.random.default_rng(11)
    total = sum((o * torch.tensor(rng.standard_normal(tuple(o.shape)).astype(np.float32))).sum() for o in outs.values())
    total.backward()
    return {k: v.detach() for k, v in outs.items()}, p3.grad, p2.grad, big.grad


def test_multiscale_training_with_random_scale_factors():
    weights = weights_of(resize_head)
    ours, _ = run_both(multiscale_training, weights, **F32)
    assert ours[1] == [(12, 14), (9, 10), (15, 18), (12, 14), (10, 12)]


def test_every_resize_mode_and_its_gradient():
    ours, _ = run_both(every_resize, rtol=1e-5, atol=1e-5)
    outs = ours[0]
    assert outs["nearest"].shape == (2, 3, 10, 12) and outs["bicubic-aa"].shape == (2, 3, 6, 5)
    # floor(5 * 1.1) = 5, floor(6 * 1.1) = 6: the input itself (which nearest x2 shows at its even positions)
    np.testing.assert_array_equal(outs["bilinear-kept"], outs["nearest"][:, :, ::2, ::2])
    # nearest x2 repeats each pixel twice along both dims
    np.testing.assert_array_equal(outs["upsample"], outs["upsample"][:, :, ::2, ::2].repeat(2, 2).repeat(2, 3))


# ----------------------------------------------------------------------------------------------
# pix2pix and GauGAN: the recursive UnetSkipConnectionBlock (innermost / outermost, LeakyReLU(0.2, True),
# ConvTranspose2d, torch.cat skips), a conditional PatchGAN on cat(A, B), vanilla GAN loss by
# BCEWithLogits plus L1; SPADE (a parameter-free BatchNorm modulated by gamma / beta convolved from the
# segmentation map resized by nearest interpolation) in a SPADEResnetBlock with spectral_norm and a learnt
# shortcut, a multi-scale discriminator (avg_pool2d with count_include_pad=False), hinge losses and
# feature matching
# ----------------------------------------------------------------------------------------------


def pix2pix(m, ngf=4, ndf=4):
    nn, torch = m.nn, m.torch
    import functools

    class UnetSkipConnectionBlock(nn.Module):
        def __init__(self, outer_nc, inner_nc, input_nc=None,
                     submodule=None, outermost=False, innermost=False, norm_layer=nn.BatchNorm2d, use_dropout=False):
            super(UnetSkipConnectionBlock, self).__init__()
            self.outermost = outermost
            if type(norm_layer) == functools.partial:
                use_bias = norm_layer.func == nn.InstanceNorm2d
            else:
                use_bias = norm_layer == nn.InstanceNorm2d
            if input_nc is None:
                input_nc = outer_nc
            downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4,
                                 stride=2, padding=1, bias=use_bias)
            downrelu = nn.LeakyReLU(0.2, True)
            downnorm = norm_layer(inner_nc)
            uprelu = nn.ReLU(True)
            upnorm = norm_layer(outer_nc)
            if outermost:
                upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc,
                                            kernel_size=4, stride=2,
                                            padding=1)
                down = [downconv]
                up = [uprelu, upconv, nn.Tanh()]
                model = down + [submodule] + up
            elif innermost:
                upconv = nn.ConvTranspose2d(inner_nc, outer_nc,
                                            kernel_size=4, stride=2,
                                            padding=1, bias=use_bias)
                down = [downrelu, downconv]
                up = [uprelu, upconv, upnorm]
                model = down + up
            else:
                upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc,
                                            kernel_size=4, stride=2,
                                            padding=1, bias=use_bias)
                down = [downrelu, downconv, downnorm]
                up = [uprelu, upconv, upnorm]
                if use_dropout:
                    model = down + [submodule] + up + [nn.Dropout(0.5)]
                else:
                    model = down + [submodule] + up
            self.model = nn.Sequential(*model)

        def forward(self, x):
            if self.outermost:
                return self.model(x)
            else:
                return torch.cat([x, self.model(x)], 1)

    class UnetGenerator(nn.Module):
        def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False):
            super(UnetGenerator, self).__init__()
            unet_block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, input_nc=None, submodule=None,
                                                 norm_layer=norm_layer, innermost=True)
            for i in range(num_downs - 5):
                unet_block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, input_nc=None, submodule=unet_block,
                                                     norm_layer=norm_layer, use_dropout=use_dropout)
            unet_block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, input_nc=None, submodule=unet_block,
                                                 norm_layer=norm_layer)
            unet_block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, input_nc=None, submodule=unet_block,
                                                 norm_layer=norm_layer)
            unet_block = UnetSkipConnectionBlock(ngf, ngf * 2, input_nc=None, submodule=unet_block,
                                                 norm_layer=norm_layer)
            self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=unet_block,
                                                 outermost=True, norm_layer=norm_layer)

        def forward(self, input):
            return self.model(input)

    netD = nn.Sequential(
        nn.Conv2d(6, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1, bias=False), nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 2, 1, kernel_size=4, stride=1, padding=1))
    return nn.ModuleDict({"G": UnetGenerator(3, 3, 6, ngf), "D": netD})


def pix2pix_training(m, weights, steps=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    nets = load(m, pix2pix(m), weights)
    netG, netD = nets["G"], nets["D"]
    real_A = torch.tensor(images((2, 3, 64, 64), seed=12, low=-1.0))
    real_B = torch.tensor(images((2, 3, 64, 64), seed=13, low=-1.0))
    criterionGAN = nn.BCEWithLogitsLoss()
    criterionL1 = nn.L1Loss()
    optimizer_G = optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_D = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    history = []
    for step in range(steps):
        fake_B = netG(real_A)
        for p in netD.parameters():
            p.requires_grad = True
        optimizer_D.zero_grad()
        fake_AB = torch.cat((real_A, fake_B), 1)
        pred_fake = netD(fake_AB.detach())
        loss_D_fake = criterionGAN(pred_fake, torch.zeros_like(pred_fake))
        real_AB = torch.cat((real_A, real_B), 1)
        pred_real = netD(real_AB)
        loss_D_real = criterionGAN(pred_real, torch.ones_like(pred_real))
        loss_D = (loss_D_fake + loss_D_real) * 0.5
        loss_D.backward()
        optimizer_D.step()
        for p in netD.parameters():
            p.requires_grad = False
        optimizer_G.zero_grad()
        pred_fake = netD(torch.cat((real_A, fake_B), 1))
        loss_G_GAN = criterionGAN(pred_fake, torch.ones_like(pred_fake))
        loss_G_L1 = criterionL1(fake_B, real_B) * 100.0
        loss_G = loss_G_GAN + loss_G_L1
        loss_G.backward()
        optimizer_G.step()
        history.append((loss_D.item(), loss_G_GAN.item(), loss_G_L1.item()))
    grads = {n: p.grad for n, p in nets.named_parameters()}
    return history, fake_B, grads, nets.state_dict()


def test_pix2pix_unet_generator():
    weights = weights_of(pix2pix)
    ours, _ = run_both(pix2pix_training, weights, **F32)
    history, fake_B, grads, state = ours
    assert fake_B.shape == (2, 3, 64, 64)
    # six blocks nested by recursion: the innermost (at 1x1) is the submodule of the submodule of ...
    assert "G.model.model.1.model.3.model.3.model.3.model.3.model.4.running_mean" in state
    assert all(np.isfinite(h).all() for h in history)


def spade(m, label_nc=3, nf=8):
    nn, torch, F = m.nn, m.torch, m.F

    spectral_norm = nn.utils.spectral_norm

    class SPADE(nn.Module):
        def __init__(self, norm_nc, label_nc, nhidden=8):
            super().__init__()
            self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
            self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, nhidden, kernel_size=3, padding=1), nn.ReLU())
            self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, kernel_size=3, padding=1)
            self.mlp_beta = nn.Conv2d(nhidden, norm_nc, kernel_size=3, padding=1)

        def forward(self, x, segmap):
            normalized = self.param_free_norm(x)
            segmap = F.interpolate(segmap, size=x.size()[2:], mode='nearest')
            actv = self.mlp_shared(segmap)
            gamma = self.mlp_gamma(actv)
            beta = self.mlp_beta(actv)
            out = normalized * (1 + gamma) + beta
            return out

    class SPADEResnetBlock(nn.Module):
        def __init__(self, fin, fout):
            super().__init__()
            self.learned_shortcut = (fin != fout)
            fmiddle = min(fin, fout)
            self.conv_0 = nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1)
            self.conv_1 = nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1)
            if self.learned_shortcut:
                self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
            self.conv_0 = spectral_norm(self.conv_0)
            self.conv_1 = spectral_norm(self.conv_1)
            if self.learned_shortcut:
                self.conv_s = spectral_norm(self.conv_s)
            self.norm_0 = SPADE(fin, label_nc)
            self.norm_1 = SPADE(fmiddle, label_nc)
            if self.learned_shortcut:
                self.norm_s = SPADE(fin, label_nc)

        def forward(self, x, seg):
            x_s = self.shortcut(x, seg)
            dx = self.conv_0(self.actvn(self.norm_0(x, seg)))
            dx = self.conv_1(self.actvn(self.norm_1(dx, seg)))
            out = x_s + dx
            return out

        def shortcut(self, x, seg):
            if self.learned_shortcut:
                x_s = self.conv_s(self.norm_s(x, seg))
            else:
                x_s = x
            return x_s

        def actvn(self, x):
            return F.leaky_relu(x, 2e-1)

    class SPADEGenerator(nn.Module):
        def __init__(self):
            super().__init__()
            self.sw, self.sh = 4, 4
            self.fc = nn.Conv2d(label_nc, 2 * nf, 3, padding=1)
            self.head_0 = SPADEResnetBlock(2 * nf, 2 * nf)
            self.up_0 = SPADEResnetBlock(2 * nf, nf)
            self.up_1 = SPADEResnetBlock(nf, nf // 2)
            self.conv_img = nn.Conv2d(nf // 2, 3, 3, padding=1)
            self.up = nn.Upsample(scale_factor=2)

        def forward(self, input):
            seg = input
            x = F.interpolate(seg, size=(self.sh, self.sw))
            x = self.fc(x)
            x = self.head_0(x, seg)
            x = self.up(x)
            x = self.up_0(x, seg)
            x = self.up(x)
            x = self.up_1(x, seg)
            x = self.conv_img(F.leaky_relu(x, 2e-1))
            x = torch.tanh(x)
            return x

    class NLayerDiscriminator(nn.Module):
        def __init__(self, input_nc):
            super().__init__()
            self.model0 = nn.Sequential(nn.Conv2d(input_nc, 8, 4, 2, 2), nn.LeakyReLU(0.2, False))
            self.model1 = nn.Sequential(spectral_norm(nn.Conv2d(8, 8, 4, 2, 2)), nn.InstanceNorm2d(8, affine=False),
                                        nn.LeakyReLU(0.2, False))
            self.model2 = nn.Conv2d(8, 1, 4, 1, 2)

        def forward(self, input):
            results = [input]
            for submodel in [self.model0, self.model1, self.model2]:
                intermediate_output = submodel(results[-1])
                results.append(intermediate_output)
            return results[1:]

    class MultiscaleDiscriminator(nn.Module):
        def __init__(self, num_D=2):
            super().__init__()
            for i in range(num_D):
                self.add_module('discriminator_%d' % i, NLayerDiscriminator(label_nc + 3))

        def downsample(self, input):
            return F.avg_pool2d(input, kernel_size=3, stride=2, padding=[1, 1], count_include_pad=False)

        def forward(self, input):
            result = []
            for name, D in self.named_children():
                out = D(input)
                result.append(out)
                input = self.downsample(input)
            return result

    return nn.ModuleDict({"G": SPADEGenerator(), "D": MultiscaleDiscriminator()})


def gaugan_training(m, weights, steps=2, dtype="float32"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    dtype = getattr(torch, dtype)
    nets = load(m, spade(m), weights).to(dtype)
    netG, netD = nets["G"], nets["D"]
    label = torch.tensor(masks((2, 16, 16), 3, seed=14))
    input_semantics = F.one_hot(label, 3).permute(0, 3, 1, 2).to(dtype)
    real_image = torch.tensor(images((2, 3, 16, 16), seed=15, low=-1.0), dtype=dtype)
    optimizer_G = optim.Adam(netG.parameters(), lr=1e-3, betas=(0.0, 0.9))
    optimizer_D = optim.Adam(netD.parameters(), lr=4e-3, betas=(0.0, 0.9))

    def discriminate(fake_image):
        fake_concat = torch.cat([input_semantics, fake_image], dim=1)
        real_concat = torch.cat([input_semantics, real_image], dim=1)
        fake_and_real = torch.cat([fake_concat, real_concat], dim=0)
        discriminator_out = netD(fake_and_real)
        pred_fake = [[tensor[:tensor.size(0) // 2] for tensor in p] for p in discriminator_out]
        pred_real = [[tensor[tensor.size(0) // 2:] for tensor in p] for p in discriminator_out]
        return pred_fake, pred_real

    def hinge(input, target_is_real, for_discriminator=True):
        loss = 0
        for pred_i in input:
            pred_i = pred_i[-1]
            if for_discriminator:
                if target_is_real:
                    minval = torch.min(pred_i - 1, torch.zeros_like(pred_i))
                else:
                    minval = torch.min(-pred_i - 1, torch.zeros_like(pred_i))
                loss_tensor = -torch.mean(minval)
            else:
                loss_tensor = -torch.mean(pred_i)
            loss += loss_tensor
        return loss / len(input)

    history = []
    for step in range(steps):
        optimizer_G.zero_grad()
        fake_image = netG(input_semantics)
        pred_fake, pred_real = discriminate(fake_image)
        G_GAN = hinge(pred_fake, True, for_discriminator=False)
        GAN_Feat_loss = torch.zeros(1, dtype=dtype)
        num_D = len(pred_fake)
        for i in range(num_D):
            num_intermediate_outputs = len(pred_fake[i]) - 1
            for j in range(num_intermediate_outputs):
                unweighted_loss = F.l1_loss(pred_fake[i][j], pred_real[i][j].detach())
                GAN_Feat_loss += unweighted_loss * 10.0 / num_D
        g_loss = G_GAN + GAN_Feat_loss.squeeze()
        g_loss.backward()
        optimizer_G.step()
        optimizer_D.zero_grad()
        with torch.no_grad():
            fake_image = netG(input_semantics)
            fake_image = fake_image.detach()
            fake_image.requires_grad_()
        pred_fake, pred_real = discriminate(fake_image)
        d_loss = hinge(pred_fake, False) + hinge(pred_real, True)
        d_loss.backward()
        optimizer_D.step()
        history.append((g_loss.item(), d_loss.item(), GAN_Feat_loss.item()))
    grads = {n: p.grad for n, p in nets.named_parameters()}
    return history, fake_image, grads, nets.state_dict()


def test_gaugan_spade_generator_and_multiscale_discriminator():
    weights = weights_of(spade)
    ours, _ = run_both(gaugan_training, weights, dtype="float64", rtol=1e-9, atol=1e-9)
    # in float32, several parameters have gradients of zero up to rounding (biases before a parameter-free norm;
    # the last conv's bias, whose hinge gradients cancel over fakes and reals), which Adam(betas=(0, 0.9)) turns
    # into steps of ±lr that differ between the libraries: the losses and image of one step compare
    run_both(lambda m, weights: gaugan_training(m, weights, steps=1)[:2], weights, **F32)
    history, fake, grads, state = ours
    assert fake.shape == (2, 3, 16, 16)
    assert "G.head_0.conv_0.weight_orig" in state and "G.head_0.conv_0.weight_u" in state


# ----------------------------------------------------------------------------------------------
# torchvision's segmentation reference: an FCN whose backbone's features are taken by an
# IntermediateLayerGetter (a ModuleDict walked by named_children, returning an OrderedDict), main and
# auxiliary heads upsampled to the input, the criterion summing both (ignore_index=255), parameters in
# groups, warmup by LinearLR then PolynomialLR under SequentialLR, and evaluation under inference_mode
# with a ConfusionMatrix by bincount (global accuracy, per-class accuracy and IoU)
# ----------------------------------------------------------------------------------------------


def fcn(m, num_classes=4):
    nn, torch, F = m.nn, m.torch, m.F
    from collections import OrderedDict

    class IntermediateLayerGetter(nn.ModuleDict):
        _version = 2
        __annotations__ = {"return_layers": dict}

        def __init__(self, model, return_layers):
            if not set(return_layers).issubset([name for name, _ in model.named_children()]):
                raise ValueError("return_layers are not present in model")
            orig_return_layers = return_layers
            return_layers = {str(k): str(v) for k, v in return_layers.items()}
            layers = OrderedDict()
            for name, module in model.named_children():
                layers[name] = module
                if name in return_layers:
                    del return_layers[name]
                if not return_layers:
                    break
            super().__init__(layers)
            self.return_layers = orig_return_layers

        def forward(self, x):
            out = OrderedDict()
            for name, module in self.items():
                x = module(x)
                if name in self.return_layers:
                    out_name = self.return_layers[name]
                    out[out_name] = x
            return out

    def block(cin, cout, stride, dilation=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    backbone = nn.Sequential(OrderedDict([
        ("conv1", block(3, 8, 2)), ("layer1", block(8, 8, 1)), ("layer2", block(8, 12, 2)),
        ("layer3", block(12, 16, 1, dilation=2)), ("layer4", block(16, 16, 1, dilation=4)),
        ("avgpool", nn.AdaptiveAvgPool2d(1)), ("fc", nn.Flatten())]))

    class FCNHead(nn.Sequential):
        def __init__(self, in_channels, channels):
            inter_channels = in_channels // 4
            layers = [
                nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(inter_channels),
                nn.ReLU(),
                nn.Dropout(0.0),
                nn.Conv2d(inter_channels, channels, 1),
            ]
            super().__init__(*layers)

    class FCN(nn.Module):
        __constants__ = ["aux_classifier"]

        def __init__(self, backbone, classifier, aux_classifier=None):
            super().__init__()
            self.backbone = backbone
            self.classifier = classifier
            self.aux_classifier = aux_classifier

        def forward(self, x):
            input_shape = x.shape[-2:]
            features = self.backbone(x)
            result = OrderedDict()
            x = features["out"]
            x = self.classifier(x)
            x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
            result["out"] = x
            if self.aux_classifier is not None:
                x = features["aux"]
                x = self.aux_classifier(x)
                x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
                result["aux"] = x
            return result

    body = IntermediateLayerGetter(backbone, return_layers={"layer4": "out", "layer3": "aux"})
    return FCN(body, FCNHead(16, num_classes), FCNHead(16, num_classes))


class ConfusionMatrix:
    def __init__(self, m, num_classes):
        self.m = m
        self.num_classes = num_classes
        self.mat = None

    def update(self, a, b):
        torch = self.m.torch
        n = self.num_classes
        if self.mat is None:
            self.mat = torch.zeros((n, n), dtype=torch.int64, device=a.device)
        with torch.inference_mode():
            k = (a >= 0) & (a < n)
            inds = n * a[k].to(torch.int64) + b[k]
            self.mat += torch.bincount(inds, minlength=n ** 2).reshape(n, n)

    def compute(self):
        torch = self.m.torch
        h = self.mat.float()
        acc_global = torch.diag(h).sum() / h.sum()
        acc = torch.diag(h) / h.sum(1)
        iu = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
        return acc_global, acc, iu


def fcn_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, fcn(m), weights)
    image = torch.tensor(images((2, 3, 16, 18), seed=16))
    target = torch.tensor(masks((2, 16, 18), 4, seed=16, ignore=255))

    def criterion(inputs, target):
        losses = {}
        for name, x in inputs.items():
            losses[name] = nn.functional.cross_entropy(x, target, ignore_index=255)
        if len(losses) == 1:
            return losses["out"]
        return losses["out"] + 0.5 * losses["aux"]

    params_to_optimize = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in model.classifier.parameters() if p.requires_grad]},
    ]
    params = [p for p in model.aux_classifier.parameters() if p.requires_grad]
    params_to_optimize.append({"params": params, "lr": 0.02 * 10})
    optimizer = optim.SGD(params_to_optimize, lr=0.02, momentum=0.9, weight_decay=1e-4)
    iters_per_epoch, epochs, warmup_iters = 1, steps, 2
    main_lr_scheduler = optim.lr_scheduler.PolynomialLR(
        optimizer, total_iters=iters_per_epoch * (epochs - warmup_iters), power=0.9)
    warmup_lr_scheduler = optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup_iters)
    lr_scheduler = optim.lr_scheduler.SequentialLR(
        optimizer, schedulers=[warmup_lr_scheduler, main_lr_scheduler], milestones=[warmup_iters])
    history, lrs = [], []
    for step in range(steps):
        model.train()
        output = model(image)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        history.append(loss.item())
        lrs.append([g["lr"] for g in optimizer.param_groups])
    model.eval()
    confmat = ConfusionMatrix(m, 4)
    with torch.inference_mode():
        output = model(image)["out"]
        confmat.update(target.flatten(), output.argmax(1).flatten())
    acc_global, acc, iu = confmat.compute()
    return history, lrs, confmat.mat, acc_global, acc, iu, list(model.backbone.keys()), model.state_dict()


def test_torchvision_fcn_segmentation_reference():
    weights = weights_of(fcn)
    ours, _ = run_both(fcn_training, weights, **F32)
    history, lrs, mat, acc_global, acc, iu, layers, state = ours
    assert layers == ["conv1", "layer1", "layer2", "layer3", "layer4"]  # avgpool and fc dropped
    assert mat.sum() == (masks((2, 16, 18), 4, seed=16, ignore=255) != 255).sum()
    np.testing.assert_allclose(lrs[0], [0.02 * (0.01 + 0.99 / 2), 0.02 * (0.01 + 0.99 / 2), 0.2 * (0.01 + 0.99 / 2)])


# ----------------------------------------------------------------------------------------------
# RAFT (optical flow): an all-pairs correlation volume by matmul and its avg_pool2d pyramid, looked up
# around the current flow by grid_sample (align_corners=True) over a meshgrid of offsets, a ConvGRU update
# operator iterated with the coordinates detached, convex upsampling (softmax over 9 neighbours of an
# F.unfold of the flow, then permute / reshape to 8x), the sequence loss with geometrically decaying weights
# and validity masks, AdamW with OneCycleLR (linear annealing, no momentum cycling) and gradient clipping
# ----------------------------------------------------------------------------------------------


def raft(m, fdim=16, hdim=8, cdim=8, corr_levels=2, corr_radius=2):
    nn, torch, F = m.nn, m.torch, m.F

    def encoder(out_dim):
        return nn.Sequential(
            nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.InstanceNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.InstanceNorm2d(12), nn.ReLU(inplace=True),
            nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.InstanceNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, out_dim, 1))

    class ConvGRU(nn.Module):
        def __init__(self, hidden_dim, input_dim):
            super(ConvGRU, self).__init__()
            self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
            self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
            self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

        def forward(self, h, x):
            hx = torch.cat([h, x], dim=1)
            z = torch.sigmoid(self.convz(hx))
            r = torch.sigmoid(self.convr(hx))
            q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
            h = (1 - z) * h + z * q
            return h

    class SmallMotionEncoder(nn.Module):
        def __init__(self):
            super(SmallMotionEncoder, self).__init__()
            cor_planes = corr_levels * (2 * corr_radius + 1) ** 2
            self.convc1 = nn.Conv2d(cor_planes, 12, 1, padding=0)
            self.convf1 = nn.Conv2d(2, 8, 7, padding=3)
            self.convf2 = nn.Conv2d(8, 4, 3, padding=1)
            self.conv = nn.Conv2d(16, 10, 3, padding=1)

        def forward(self, flow, corr):
            cor = F.relu(self.convc1(corr))
            flo = F.relu(self.convf1(flow))
            flo = F.relu(self.convf2(flo))
            cor_flo = torch.cat([cor, flo], dim=1)
            out = F.relu(self.conv(cor_flo))
            return torch.cat([out, flow], dim=1)

    class UpdateBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = SmallMotionEncoder()
            self.gru = ConvGRU(hidden_dim=hdim, input_dim=12 + cdim)
            self.flow_head = nn.Sequential(nn.Conv2d(hdim, 16, 3, padding=1), nn.ReLU(inplace=True),
                                           nn.Conv2d(16, 2, 3, padding=1))
            self.mask = nn.Sequential(nn.Conv2d(hdim, 16, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(16, 64 * 9, 1, padding=0))

        def forward(self, net, inp, corr, flow):
            motion_features = self.encoder(flow, corr)
            inp = torch.cat([inp, motion_features], dim=1)
            net = self.gru(net, inp)
            delta_flow = self.flow_head(net)
            mask = .25 * self.mask(net)  # scale mask to balence gradients
            return net, mask, delta_flow

    class RAFT(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden_dim, self.context_dim = hdim, cdim
            self.fnet = encoder(fdim)
            self.cnet = encoder(hdim + cdim)
            self.update_block = UpdateBlock()

    return RAFT()


def bilinear_sampler(m, img, coords):
    torch, F = m.torch, m.F
    H, W = img.shape[-2:]
    xgrid, ygrid = coords.split([1, 1], dim=-1)
    xgrid = 2 * xgrid / (W - 1) - 1
    ygrid = 2 * ygrid / (H - 1) - 1
    grid = torch.cat([xgrid, ygrid], dim=-1)
    img = F.grid_sample(img, grid, align_corners=True)
    return img


def coords_grid(torch, batch, ht, wd):
    coords = torch.meshgrid(torch.arange(ht), torch.arange(wd), indexing='ij')
    coords = torch.stack(coords[::-1], dim=0).float()
    return coords[None].repeat(batch, 1, 1, 1)


class CorrBlock:
    def __init__(self, m, fmap1, fmap2, num_levels=2, radius=2):
        self.m = m
        self.num_levels = num_levels
        self.radius = radius
        self.corr_pyramid = []
        corr = CorrBlock.corr(m.torch, fmap1, fmap2)
        batch, h1, w1, dim, h2, w2 = corr.shape
        corr = corr.reshape(batch * h1 * w1, dim, h2, w2)
        self.corr_pyramid.append(corr)
        for i in range(self.num_levels - 1):
            corr = m.F.avg_pool2d(corr, 2, stride=2)
            self.corr_pyramid.append(corr)

    def __call__(self, coords):
        torch = self.m.torch
        r = self.radius
        coords = coords.permute(0, 2, 3, 1)
        batch, h1, w1, _ = coords.shape
        out_pyramid = []
        for i in range(self.num_levels):
            corr = self.corr_pyramid[i]
            dx = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
            dy = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
            delta = torch.stack(torch.meshgrid(dy, dx, indexing='ij'), axis=-1)
            centroid_lvl = coords.reshape(batch * h1 * w1, 1, 1, 2) / 2 ** i
            delta_lvl = delta.view(1, 2 * r + 1, 2 * r + 1, 2)
            coords_lvl = centroid_lvl + delta_lvl
            corr = bilinear_sampler(self.m, corr, coords_lvl)
            corr = corr.view(batch, h1, w1, -1)
            out_pyramid.append(corr)
        out = torch.cat(out_pyramid, dim=-1)
        return out.permute(0, 3, 1, 2).contiguous().float()

    @staticmethod
    def corr(torch, fmap1, fmap2):
        batch, dim, ht, wd = fmap1.shape
        fmap1 = fmap1.view(batch, dim, ht * wd)
        fmap2 = fmap2.view(batch, dim, ht * wd)
        corr = torch.matmul(fmap1.transpose(1, 2), fmap2)
        corr = corr.view(batch, ht, wd, 1, ht, wd)
        return corr / torch.sqrt(torch.tensor(dim).float())


def raft_forward(m, model, image1, image2, iters=3, flow_init=None):
    torch, F = m.torch, m.F
    image1 = 2 * (image1 / 255.0) - 1.0
    image2 = 2 * (image2 / 255.0) - 1.0
    image1 = image1.contiguous()
    image2 = image2.contiguous()
    hdim, cdim = model.hidden_dim, model.context_dim
    fmap = model.fnet(torch.cat([image1, image2], dim=0))
    fmap1, fmap2 = torch.split(fmap, [image1.shape[0], image1.shape[0]], dim=0)
    fmap1, fmap2 = fmap1.float(), fmap2.float()
    corr_fn = CorrBlock(m, fmap1, fmap2, radius=2)
    cnet = model.cnet(image1)
    net, inp = torch.split(cnet, [hdim, cdim], dim=1)
    net = torch.tanh(net)
    inp = torch.relu(inp)
    N, C, H, W = image1.shape
    coords0 = coords_grid(torch, N, H // 8, W // 8)
    coords1 = coords_grid(torch, N, H // 8, W // 8)
    if flow_init is not None:
        coords1 = coords1 + flow_init

    def upsample_flow(flow, mask):
        N, _, H, W = flow.shape
        mask = mask.view(N, 1, 9, 8, 8, H, W)
        mask = torch.softmax(mask, dim=2)
        up_flow = F.unfold(8 * flow, [3, 3], padding=1)
        up_flow = up_flow.view(N, 2, 9, 1, 1, H, W)
        up_flow = torch.sum(mask * up_flow, dim=2)
        up_flow = up_flow.permute(0, 1, 4, 2, 5, 3)
        return up_flow.reshape(N, 2, 8 * H, 8 * W)

    flow_predictions = []
    for itr in range(iters):
        coords1 = coords1.detach()
        corr = corr_fn(coords1)
        flow = coords1 - coords0
        net, up_mask, delta_flow = model.update_block(net, inp, corr, flow)
        coords1 = coords1 + delta_flow
        flow_up = upsample_flow(coords1 - coords0, up_mask)
        flow_predictions.append(flow_up)
    return flow_predictions


def sequence_loss(torch, flow_preds, flow_gt, valid, gamma=0.8, max_flow=400):
    n_predictions = len(flow_preds)
    flow_loss = 0.0
    mag = torch.sum(flow_gt ** 2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < max_flow)
    for i in range(n_predictions):
        i_weight = gamma ** (n_predictions - i - 1)
        i_loss = (flow_preds[i] - flow_gt).abs()
        flow_loss += i_weight * (valid[:, None] * i_loss).mean()
    epe = torch.sum((flow_preds[-1] - flow_gt) ** 2, dim=1).sqrt()
    epe = epe.view(-1)[valid.view(-1)]
    metrics = {
        'epe': epe.mean().item(),
        '1px': (epe < 1).float().mean().item(),
        '3px': (epe < 3).float().mean().item(),
    }
    return flow_loss, metrics


def raft_training(m, weights, steps=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, raft(m), weights)
    rng = np.random.default_rng(17)
    image1 = torch.tensor(rng.uniform(0, 255, (2, 3, 32, 32)).astype(np.float32))
    image2 = torch.tensor(np.roll(image1.numpy(), 2, axis=3))
    flow_gt = torch.tensor(np.stack([np.full((2, 32, 32), 2.0), np.zeros((2, 32, 32))], 1).astype(np.float32))
    valid = torch.tensor((rng.uniform(size=(2, 32, 32)) > 0.1).astype(np.float32))
    optimizer = optim.AdamW(model.parameters(), lr=4e-4, weight_decay=1e-5, eps=1e-8)
    scheduler = optim.lr_scheduler.OneCycleLR(optimizer, 4e-4, 10 + 100, pct_start=0.05, cycle_momentum=False,
                                              anneal_strategy='linear')
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        flow_predictions = raft_forward(m, model, image1, image2, iters=3)
        loss, metrics = sequence_loss(torch, flow_predictions, flow_gt, valid)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        history.append((loss.item(), metrics['epe'], metrics['1px'], norm.item(), scheduler.get_last_lr()[0]))
    grads = {n: p.grad for n, p in model.named_parameters()}
    return history, flow_predictions[-1], grads, model.state_dict()


def test_raft_optical_flow():
    weights = weights_of(raft)
    with one_blas_thread():
        ours, _ = run_both(raft_training, weights, **F32)
    history, flow, grads, state = ours
    assert flow.shape == (2, 2, 32, 32)


def test_raft_convex_upsampling_by_hand():
    torch, F = OURS.torch, OURS.F
    # a mask that puts all weight on the centre neighbour gives 8x nearest upsampling of 8 · flow
    flow = torch.tensor(np.random.default_rng(18).standard_normal((1, 2, 2, 3)).astype(np.float32))
    logits = np.full((1, 9, 8, 8, 2, 3), -1e4, dtype=np.float32)
    logits[:, 4] = 0.0
    mask = torch.tensor(logits.reshape(1, 9 * 64, 2, 3))
    N, _, H, W = flow.shape
    up_mask = torch.softmax(mask.view(N, 1, 9, 8, 8, H, W), dim=2)
    up_flow = F.unfold(8 * flow, [3, 3], padding=1).view(N, 2, 9, 1, 1, H, W)
    up = torch.sum(up_mask * up_flow, dim=2).permute(0, 1, 4, 2, 5, 3).reshape(N, 2, 8 * H, 8 * W)
    np.testing.assert_allclose(up.numpy(), 8 * flow.numpy().repeat(8, 2).repeat(8, 3), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# A panorama denoiser: 360-degree images wrap around horizontally, so convolutions pad circularly along the
# width (CircularPad2d on the sides, ReplicationPad2d top and bottom), blocks are depthwise-separable and
# dilated, normalised by InstanceNorm2d(affine=True, track_running_stats=True) whose running statistics
# serve in eval; overlapping patches are processed by F.unfold and put back by F.fold divided by the fold of
# ones (overlap averaging); Adam with a cosine schedule, then evaluation
# ----------------------------------------------------------------------------------------------


def panorama_net(m, ch=8):
    nn = m.nn

    class PanoPad(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.wrap = nn.CircularPad2d((p, p, 0, 0))
            self.edge = nn.ReplicationPad2d((0, 0, p, p))

        def forward(self, x):
            return self.edge(self.wrap(x))

    class SepBlock(nn.Module):
        def __init__(self, ch, dilation):
            super().__init__()
            self.pad = PanoPad(dilation)
            self.depthwise = nn.Conv2d(ch, ch, 3, dilation=dilation, groups=ch, bias=False)
            self.pointwise = nn.Conv2d(ch, ch, 1, bias=False)
            self.norm = nn.InstanceNorm2d(ch, affine=True, track_running_stats=True, momentum=0.3)
            self.act = nn.PReLU(ch)

        def forward(self, x):
            return x + self.act(self.norm(self.pointwise(self.depthwise(self.pad(x)))))

    return nn.Sequential(PanoPad(1), nn.Conv2d(3, ch, 3), SepBlock(ch, 1), SepBlock(ch, 2), SepBlock(ch, 3),
                         nn.Conv2d(ch, 3, 1))


def panorama_denoising(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, panorama_net(m), weights)
    rng = np.random.default_rng(19)
    u = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    clean = np.stack([np.sin(u + k)[None, :].repeat(12, 0) for k in range(3)])[None].repeat(2, 0)
    clean = torch.tensor(clean.astype(np.float32))
    noisy = clean + torch.tensor(0.3 * rng.standard_normal(clean.shape).astype(np.float32))
    kernel, stride = 8, 4

    def patchwise(x):
        patches = F.unfold(x, kernel_size=kernel, stride=stride)  # (N, C*k*k, L)
        L = patches.shape[-1]
        patches = patches.transpose(1, 2).reshape(-1, 3, kernel, kernel)
        out = model(patches)
        out = out.reshape(x.shape[0], L, -1).transpose(1, 2)
        summed = F.fold(out, x.shape[-2:], kernel_size=kernel, stride=stride)
        counts = F.fold(torch.ones_like(out), x.shape[-2:], kernel_size=kernel, stride=stride)
        return summed / counts

    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = []
    for step in range(steps):
        model.train()
        loss = F.mse_loss(model(noisy), clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    norm = model[2].norm
    running = (norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone())
    model.eval()
    with torch.no_grad():
        whole = model(noisy)
        patched = patchwise(noisy)
        # the wrap-around padding makes the network equivariant to horizontal rolls
        rolled = model(torch.roll(noisy, shifts=5, dims=3))
    return history, running, whole, patched, rolled, model.state_dict()


def test_panorama_denoiser_with_circular_padding_and_patches():
    weights = weights_of(panorama_net)
    ours, _ = run_both(panorama_denoising, weights, **F32)
    history, (mean, var, tracked), whole, patched, rolled, state = ours
    # instance norm updates its running statistics but, unlike batch norm, never counts the batches
    assert tracked == 0 and np.abs(mean).max() > 0 and patched.shape == whole.shape == (2, 3, 12, 24)
    np.testing.assert_allclose(np.roll(whole, 5, axis=3), rolled, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# mmsegmentation's sliding-window inference: overlapping crops (the last clamped to the border), logits
# accumulated by in-place adds into slices of a preallocated map and by F.pad into the full size, a count
# matrix, then multi-scale and flip test-time augmentation averaging softmaxes resized back by bilinear
# interpolation; the gradient of the averaged prediction with respect to the image (a saliency map)
# ----------------------------------------------------------------------------------------------


def slide_inference(m, model, img, crop_size=(8, 8), stride=(5, 5), num_classes=4):
    torch, F = m.torch, m.F
    h_stride, w_stride = stride
    h_crop, w_crop = crop_size
    batch_size, _, h_img, w_img = img.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((batch_size, num_classes, h_img, w_img))
    padded = img.new_zeros((batch_size, num_classes, h_img, w_img))
    count_mat = img.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            crop_img = img[:, :, y1:y2, x1:x2]
            crop_seg_logit = model(crop_img)
            preds[:, :, y1:y2, x1:x2] += crop_seg_logit
            padded = padded + F.pad(crop_seg_logit, (int(x1), int(preds.shape[3] - x2), int(y1),
                                                     int(preds.shape[2] - y2)))
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    return preds / count_mat, padded / count_mat, count_mat


def segmentation_tta(m, weights):
    torch, F = m.torch, m.F
    model = load(m, seg_head(m), weights).eval()
    img = torch.tensor(images((1, 3, 13, 17), seed=20), requires_grad=True)
    by_slices, by_pad, counts = slide_inference(m, model, img)
    probs = []
    for scale in (0.75, 1.0, 1.25):
        for flip in (False, True):
            x = F.interpolate(img, scale_factor=scale, mode='bilinear', align_corners=False) if scale != 1.0 else img
            if flip:
                x = x.flip(dims=(3,))
            logits, _, _ = slide_inference(m, model, x)
            if flip:
                logits = logits.flip(dims=(3,))
            logits = F.interpolate(logits, size=img.shape[2:], mode='bilinear', align_corners=False)
            probs.append(logits.softmax(dim=1))
    prob = torch.stack(probs).mean(0)
    pred = prob.argmax(dim=1)
    # the saliency of the predicted class's total probability
    score = prob.gather(1, pred.unsqueeze(1)).sum()
    saliency, = torch.autograd.grad(score, img)
    return by_slices, by_pad, counts, prob, pred, saliency.abs().amax(dim=1)


def test_sliding_window_and_test_time_augmentation():
    weights = weights_of(seg_head)
    ours, _ = run_both(segmentation_tta, weights, rtol=1e-4, atol=1e-5)
    by_slices, by_pad, counts, prob, pred, saliency = ours
    np.testing.assert_allclose(by_slices, by_pad, rtol=1e-6, atol=1e-6)  # the two ways of accumulating agree
    # 13 rows in crops of 8 every 5: rows 0-7 and 5-12, so rows 5-7 are counted twice
    assert counts[0, 0, :, 0].tolist() == [1] * 5 + [2] * 3 + [1] * 5
    np.testing.assert_allclose(prob.sum(1), 1.0, rtol=1e-5)
