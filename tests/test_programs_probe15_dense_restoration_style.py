# ruff: noqa: B007, F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Dense-prediction and image-synthesis programs, run as tests/probe15_dense_common.py says. Restoration and style:
PyTorch's neural style transfer tutorial (loss modules inserted into a copied feature stack, ``model[:i+1]``, total
variation, LBFGS on the input image clamped in place under ``no_grad``); Real-ESRGAN-style super-resolution
(``pixel_unshuffle``, residual dense blocks, nearest ``Upsample`` and ``PixelShuffle``, bicubic skip, antialiased
down-sampling consistency, MultiStepLR, clipping, PSNR); a panorama denoiser (``CircularPad2d``, InstanceNorm with
running statistics, ``unfold``/``fold`` overlap averaging, roll equivariance)."""

import numpy as np

from .probe15_dense_common import F32, images
from .pytorch_programs import load, run_both, weights_of

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
