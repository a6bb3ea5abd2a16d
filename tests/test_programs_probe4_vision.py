# ruff: noqa: B006, B007, B023, E741, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Real PyTorch vision programs (see tests/pytorch_programs.py), each run unchanged but for its imports
on chainrule and on PyTorch from the same weights, comparing losses, parameters and gradients.

What the other program tests do not already cover: a MobileNet/SE-style network (depthwise
``groups=`` convolutions, ``padding='same'``, Hardswish, squeeze-excitation, ``zero_init_residual``
through ``model.modules()``), trained with mixup on SGD(nesterov) with no weight decay on norms and
biases and OneCycleLR cycling the momentum; a WGAN-GP step (gradient penalty by
``torch.autograd.grad(create_graph=True)``, a critic with InstanceNorm and ``spectral_norm``, a
generator with ``ConvTranspose2d(output_padding=)`` and PixelShuffle, Adam(betas=(0.0, 0.9))); a
milesial-style U-Net (``F.interpolate`` bilinear with ``align_corners=True``, ``F.pad`` by the size
difference, ``torch.cat`` skips, GroupNorm, a per-pixel weighted cross-entropy plus a Dice loss through
``one_hot().permute``, RMSprop and ReduceLROnPlateau('max')); and augmentation code (reflect-pad then
crop, flips, ``torch.roll``, cutout by masked assignment, ViT patches by ``unfold`` equal to a strided
convolution and put back by ``F.fold``, test-time augmentation over ``rot90``/``flip``, an input saliency
gradient); and a tiny ViT as timm writes it (``torch.jit.Final``, ``@torch.jit.ignore``,
``torch.jit.is_scripting()``, ``torch.compiler.is_compiling()``, DropPath, in-place LayerScale); and
adversarial examples (the FGSM tutorial's ``data.grad.sign()`` and PGD training's ``delta.data = ...``); and a
small Glow (ActNorm's data-dependent initialisation, an invertible 1x1 convolution by ``slogdet``)."""

import math

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A MobileNetV3-style network with squeeze-excitation, trained with mixup and OneCycleLR
# ----------------------------------------------------------------------------------------------


def mobilenet(m, p_drop=0.0):
    torch, nn, F = m.torch, m.nn, m.F

    class SqueezeExcite(nn.Module):
        def __init__(self, ch, rd=4):
            super().__init__()
            self.fc1 = nn.Conv2d(ch, rd, 1)
            self.fc2 = nn.Conv2d(rd, ch, 1)

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            s = self.fc2(F.relu(self.fc1(s), inplace=True))
            return x * F.hardsigmoid(s)

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, expand, stride):
            super().__init__()
            mid = cin * expand
            self.use_res = stride == 1 and cin == cout
            self.block = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish(inplace=True),
                nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False),
                nn.BatchNorm2d(mid), nn.Hardswish(inplace=True),
                SqueezeExcite(mid),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )

        def forward(self, x):
            out = self.block(x)
            return out + x if self.use_res else out

    class Net(nn.Module):
        def __init__(self, num_classes=4):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding="same", bias=False), nn.BatchNorm2d(4), nn.Hardswish())
            self.features = nn.Sequential(InvertedResidual(4, 4, 2, 1), InvertedResidual(4, 6, 2, 2))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(p_drop), nn.Linear(6, num_classes))
            for mod in self.modules():
                if isinstance(mod, nn.Conv2d):
                    nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                    if mod.bias is not None:
                        nn.init.zeros_(mod.bias)
                elif isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.ones_(mod.weight)
                    nn.init.zeros_(mod.bias)

        def forward(self, x):
            return self.classifier(self.pool(self.features(self.stem(x))))

    return Net()


def mixup_training(m, weights, steps=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, mobilenet(m), weights)
    for mod in model.modules():  # torchvision's zero_init_residual: each residual block starts as identity
        if type(mod).__name__ == "InvertedResidual" and mod.use_res:
            nn.init.constant_(mod.block[-1].weight, 0)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    opt = optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                    lr=0.05, momentum=0.9, nesterov=True)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=steps, pct_start=0.3, base_momentum=0.85,
                                          max_momentum=0.95, div_factor=4.0)
    rng = np.random.default_rng(1)
    images = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 16)
    images[np.arange(16), 0, labels * 2, labels * 2] += 3.0  # a learnable signal
    perms = [rng.permutation(16) for _ in range(steps)]
    lams = rng.beta(0.4, 0.4, steps)
    X, y = torch.tensor(images), torch.tensor(labels)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    losses, lrs, moms = [], [], []
    for step in range(steps):
        model.train()
        lam = float(lams[step])
        index = torch.tensor(perms[step])
        mixed = lam * X + (1 - lam) * X[index, :]
        y_a, y_b = y, y[index]
        out = model(mixed)
        loss = lam * criterion(out, y_a) + (1 - lam) * criterion(out, y_b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(sched.get_last_lr()[0])
        moms.append(opt.param_groups[1]["momentum"])
    model.eval()
    with torch.no_grad():
        logits = model(X)
    bn = model.features[1].block[1]
    return (losses, lrs, moms, logits, [p.detach() for p in model.parameters()], bn.running_mean, bn.running_var,
            bn.num_batches_tracked, model.features[0].block[-1].weight)


def test_mobilenet_se_mixup_onecycle():
    weights = weights_of(mobilenet)
    (losses, lrs, moms, logits, params, rmean, rvar, tracked, zero_init), _ = run_both(
        mixup_training, weights, rtol=1e-4, atol=1e-5)
    assert lrs[-1] < lrs[1] and moms[0] < moms[-1]  # lr up then down, the momentum the other way
    assert int(tracked) == 6 and np.isfinite(losses).all()
    assert np.abs(zero_init).max() < 0.05  # the zero-initialised residual scale moved only a little


def dropout_in_the_classifier(m):
    """The Dropout of ``mobilenet``: active in train(), the identity in eval(), kept masks scaled by 1/(1-p)."""
    torch = m.torch
    torch.manual_seed(0)
    model = mobilenet(m, p_drop=0.5)
    drop = model.classifier[1]
    x = torch.ones(4, 64)
    model.train()
    a = drop(x)
    model.eval()
    b = drop(x)
    return sorted(set(a.flatten().tolist())), bool((b == x).all()), drop.training, model.training


def test_mobilenet_dropout_train_and_eval():
    ours, theirs = run_both(dropout_in_the_classifier, compare=False)
    for values, identity, drop_training, training in [ours] + ([theirs] if theirs else []):
        assert values == [0.0, 2.0] and identity and not drop_training and not training


# ----------------------------------------------------------------------------------------------
# WGAN-GP: a gradient penalty through create_graph, spectral_norm, PixelShuffle, two Adams
# ----------------------------------------------------------------------------------------------


def wgan_nets(m):
    torch, nn = m.torch, m.nn

    class Generator(nn.Module):
        def __init__(self, nz=3):
            super().__init__()
            self.fc = nn.Linear(nz, 4 * 2 * 2)
            self.up = nn.Sequential(
                nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, bias=False), nn.BatchNorm2d(4),
                nn.ReLU(True),
                nn.Conv2d(4, 4, 3, padding=1), nn.PixelShuffle(2), nn.Tanh(),
            )

        def forward(self, z):
            return self.up(self.fc(z).view(-1, 4, 2, 2))

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.utils.spectral_norm(nn.Conv2d(1, 4, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(4, 8, 4, stride=2, padding=1, bias=False), nn.InstanceNorm2d(8, affine=True),
                nn.LeakyReLU(0.2),
            )
            self.out = nn.Linear(8 * 2 * 2, 1)

        def forward(self, x):
            return self.out(self.main(x).flatten(1))

    return nn.ModuleDict({"G": Generator(), "D": Critic()})


def wgan_gp(m, weights, steps=3, n_critic=2, lambda_gp=10.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    nets = load(m, wgan_nets(m), weights)
    netG, netD = nets["G"], nets["D"]
    optG = optim.Adam(netG.parameters(), lr=1e-3, betas=(0.0, 0.9))
    optD = optim.Adam(netD.parameters(), lr=1e-3, betas=(0.0, 0.9))
    rng = np.random.default_rng(2)
    real_all = torch.tensor(np.tanh(rng.standard_normal((steps * n_critic, 4, 1, 8, 8))).astype(np.float32))
    noise_all = torch.tensor(rng.standard_normal((steps * (n_critic + 1), 4, 3)).astype(np.float32))
    alphas = torch.tensor(rng.random((steps * n_critic, 4, 1, 1, 1)).astype(np.float32))

    def gradient_penalty(real, fake, alpha):
        interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        d_interpolates = netD(interpolates)
        gradients = torch.autograd.grad(outputs=d_interpolates, inputs=interpolates,
                                        grad_outputs=torch.ones_like(d_interpolates),
                                        create_graph=True, retain_graph=True, only_inputs=True)[0]
        gradients = gradients.view(gradients.size(0), -1)
        return ((gradients.norm(2, dim=1) - 1) ** 2).mean()

    d_losses, g_losses, gps = [], [], []
    k = 0
    for it in range(steps):
        for p in netD.parameters():
            p.requires_grad = True
        for c in range(n_critic):
            real = real_all[it * n_critic + c]
            fake = netG(noise_all[k]).detach()
            k += 1
            optD.zero_grad()
            gp = gradient_penalty(real, fake, alphas[it * n_critic + c])
            d_loss = -torch.mean(netD(real)) + torch.mean(netD(fake)) + lambda_gp * gp
            d_loss.backward()
            optD.step()
            d_losses.append(d_loss.item())
            gps.append(gp.item())
        for p in netD.parameters():
            p.requires_grad = False  # no critic gradients during the generator's step
        optG.zero_grad()
        g_loss = -torch.mean(netD(netG(noise_all[k])))
        k += 1
        g_loss.backward()
        optG.step()
        g_losses.append(g_loss.item())
    critic_grads = [p.grad for p in netD.parameters()]
    sn = netD.main[0]
    return (d_losses, g_losses, gps, [p.detach() for p in nets.parameters()], sn.weight_u, sn.weight,
            critic_grads, netG.up[1].running_mean)


def test_wgan_gp_gradient_penalty_spectral_norm():
    weights = weights_of(wgan_nets)
    assert "D.main.0.weight_orig" in weights and "D.main.0.weight_u" in weights
    (d_losses, g_losses, gps, params, u, w, critic_grads, rmean), _ = run_both(wgan_gp, weights, rtol=1e-4,
                                                                               atol=1e-5)
    assert all(gp > 0 for gp in gps) and len(d_losses) == 6 and len(g_losses) == 3
    assert np.linalg.svd(w.reshape(4, -1), compute_uv=False)[0] < 1.2  # about 1 after the power iteration


# ----------------------------------------------------------------------------------------------
# milesial/Pytorch-UNet in small: bilinear up-sampling, pad to the skip's size, Dice + CE, RMSprop
# ----------------------------------------------------------------------------------------------


def unet(m):
    torch, nn, F = m.torch, m.nn, m.F

    class DoubleConv(nn.Module):
        def __init__(self, in_channels, out_channels, mid_channels=None):
            super().__init__()
            if not mid_channels:
                mid_channels = out_channels
            self.double_conv = nn.Sequential(
                nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(2, mid_channels), nn.ReLU(inplace=True),
                nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(2, out_channels), nn.ReLU(inplace=True),
            )

        def forward(self, x):
            return self.double_conv(x)

    class Down(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

        def forward(self, x):
            return self.maxpool_conv(x)

    class Up(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)

        def forward(self, x1, x2):
            x1 = F.interpolate(x1, scale_factor=2, mode="bilinear", align_corners=True)
            diffY = x2.size()[2] - x1.size()[2]
            diffX = x2.size()[3] - x1.size()[3]
            x1 = F.pad(x1, [diffX // 2, diffX - diffX // 2, diffY // 2, diffY - diffY // 2])
            return self.conv(torch.cat([x2, x1], dim=1))

    class UNet(nn.Module):
        def __init__(self, n_channels=1, n_classes=3):
            super().__init__()
            self.n_classes = n_classes
            self.inc = DoubleConv(n_channels, 4)
            self.down1 = Down(4, 8)
            self.down2 = Down(8, 8)
            self.up1 = Up(16, 4)
            self.up2 = Up(8, 4)
            self.outc = nn.Conv2d(4, n_classes, kernel_size=1)

        def forward(self, x):
            x1 = self.inc(x)
            x2 = self.down1(x1)
            x3 = self.down2(x2)
            x = self.up1(x3, x2)
            x = self.up2(x, x1)
            return self.outc(x)

    return UNet()


def dice_coeff(m, input, target, reduce_batch_first=False, epsilon=1e-6):
    sum_dim = (-1, -2) if input.dim() == 2 or not reduce_batch_first else (-1, -2, -3)
    inter = 2 * (input * target).sum(dim=sum_dim)
    sets_sum = input.sum(dim=sum_dim) + target.sum(dim=sum_dim)
    sets_sum = m.torch.where(sets_sum == 0, inter, sets_sum)
    dice = (inter + epsilon) / (sets_sum + epsilon)
    return dice.mean()


def multiclass_dice_coeff(m, input, target, reduce_batch_first=False, epsilon=1e-6):
    return dice_coeff(m, input.flatten(0, 1), target.flatten(0, 1), reduce_batch_first, epsilon)


def unet_training(m, weights, epochs=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, unet(m), weights)
    optimizer = optim.RMSprop(model.parameters(), lr=1e-3, weight_decay=1e-8, momentum=0.9, foreach=True)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max", patience=0, factor=0.5)
    criterion = nn.CrossEntropyLoss(weight=torch.tensor([0.5, 1.0, 2.0]))
    rng = np.random.default_rng(3)
    images = rng.standard_normal((2, 1, 10, 11)).astype(np.float32)  # odd sizes: the pad in Up matters
    masks = (images[:, 0] > 0.5).astype(np.int64) + (images[:, 0] > 1.2).astype(np.int64)
    images, true_masks = torch.tensor(images), torch.tensor(masks)
    losses, scores, lrs = [], [], []
    for epoch in range(epochs):
        model.train()
        masks_pred = model(images)
        loss = criterion(masks_pred, true_masks)
        loss += 1 - multiclass_dice_coeff(
            m, F.softmax(masks_pred, dim=1).float(),
            F.one_hot(true_masks, model.n_classes).permute(0, 3, 1, 2).float(),
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            pred = model(images).argmax(dim=1)
            score = multiclass_dice_coeff(m, F.one_hot(pred, 3).permute(0, 3, 1, 2)[:, 1:].float(),
                                          F.one_hot(true_masks, 3).permute(0, 3, 1, 2)[:, 1:].float())
        scheduler.step(score)
        scores.append(score.item())
        lrs.append(optimizer.param_groups[0]["lr"])
    return losses, scores, lrs, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()]


def test_unet_bilinear_pad_dice_rmsprop_plateau():
    weights = weights_of(unet)
    (losses, scores, lrs, params, grads), _ = run_both(unet_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    assert len(params) == len(grads) and all(g.shape == p.shape for g, p in zip(grads, params))


# ----------------------------------------------------------------------------------------------
# Augmentation-style tensor code: random crop with reflect padding, flips, rolls, cutout, ViT
# patches, test-time augmentation, a saliency map
# ----------------------------------------------------------------------------------------------


def patch_net(m):
    nn = m.nn
    return nn.ModuleDict({"proj": nn.Conv2d(3, 5, kernel_size=4, stride=4), "head": nn.Linear(5, 2)})


def augmentation(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    net = load(m, patch_net(m), weights)
    rng = np.random.default_rng(4)
    batch = torch.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), requires_grad=True)
    crops = rng.integers(0, 5, (2, 2))
    flips = [True, False]
    shifts = rng.integers(-3, 4, (2, 2))
    out = []
    x = F.pad(batch, (2, 2, 2, 2), mode="reflect")  # torchvision RandomCrop(8, padding=2, padding_mode='reflect')
    views = []
    for i in range(2):
        top, left = int(crops[i, 0]), int(crops[i, 1])
        v = x[i, :, top : top + 8, left : left + 8]
        if flips[i]:
            v = torch.flip(v, dims=[-1])  # RandomHorizontalFlip
        v = torch.roll(v, shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
        views.append(v)
    aug = torch.stack(views)
    aug = F.pad(aug, (1, 0, 0, 1), mode="replicate")[:, :, 1:, :-1]  # a one-pixel shift with edge repeat
    cut = aug.clone()
    cut[:, :, 2:5, 3:6] = 0.0  # Cutout
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.3, 0.4])[None, :, None, None]
    normed = (cut - mean) / std  # transforms.Normalize
    out.append(normed)

    # ViT patchify: unfold into 4x4 patches equals the strided convolution; fold puts them back
    p = 4
    patches = normed.unfold(2, p, p).unfold(3, p, p)  # (B, C, 2, 2, p, p)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 4, 3 * p * p)
    by_linear = patches @ net["proj"].weight.reshape(5, -1).t() + net["proj"].bias
    by_conv = net["proj"](normed).flatten(2).transpose(1, 2)
    out += [by_linear, by_conv]
    cols = F.unfold(normed, kernel_size=p, stride=p)
    back = F.fold(cols, output_size=(8, 8), kernel_size=p, stride=p)
    out.append(back)
    overlap = F.fold(F.unfold(normed, 3, padding=1), (8, 8), 3, padding=1)  # each pixel counted 9 times
    out.append(overlap)
    logits = net["head"](by_conv.mean(1))
    loss = F.cross_entropy(logits, torch.tensor([0, 1])) + 1e-3 * overlap.pow(2).mean()
    loss.backward()
    out += [loss, batch.grad, [q.grad for q in net.parameters()]]

    # test-time augmentation over the dihedral views, then a saliency map of the image
    def model(img):
        return net["head"](net["proj"](img).flatten(2).mean(2))

    img = batch.detach()[:1].clone().requires_grad_()
    tta = torch.stack([model(img), model(img.flip(3)), model(torch.rot90(img, 1, (2, 3))),
                       model(torch.rot90(img, 2, dims=[2, 3])), model(img.transpose(2, 3))]).softmax(-1).mean(0)
    score = tta[0, tta.argmax()]
    score.backward()
    saliency, _ = img.grad.data.abs().max(dim=1)
    out += [tta, saliency]
    return out


def test_augmentation_patches_and_tta():
    weights = weights_of(patch_net)
    out, _ = run_both(augmentation, weights, rtol=1e-4, atol=1e-5)
    normed, by_linear, by_conv, back, overlap = out[:5]
    np.testing.assert_allclose(by_linear, by_conv, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(back, normed, rtol=1e-6)
    np.testing.assert_allclose(normed[:, :, 2:5, 3:6], np.broadcast_to(
        -np.array([0.5, 0.4, 0.3])[:, None, None] / np.array([0.2, 0.3, 0.4])[:, None, None], (2, 3, 3, 3)),
        rtol=1e-6)
    assert out[-1].shape == (1, 8, 8) and out[-2].shape == (1, 2)


def test_the_programs_run_on_chainrule_alone():
    """Without PyTorch the programs still run: the same seeds give the same numbers twice."""
    weights = weights_of(patch_net)
    a = augmentation(OURS, weights)
    b = augmentation(OURS, weights)
    np.testing.assert_array_equal(a[-1].numpy(), b[-1].numpy())


# ----------------------------------------------------------------------------------------------
# A tiny ViT as timm writes it: `Final` annotations, `@torch.jit.ignore`, `torch.jit.is_scripting()`,
# a fused-attention switch, DropPath and LayerScale, no weight decay on what no_weight_decay() names
# ----------------------------------------------------------------------------------------------


def vit(m, drop_path_rate=0.0):
    torch, nn, F = m.torch, m.nn, m.F
    Final = torch.jit.Final

    def drop_path(x, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True):
        if drop_prob == 0.0 or not training:
            return x
        keep_prob = 1 - drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        if keep_prob > 0.0 and scale_by_keep:
            random_tensor.div_(keep_prob)
        return x * random_tensor

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return drop_path(x, self.drop_prob, self.training)

    class LayerScale(nn.Module):
        def __init__(self, dim: int, init_values: float = 1e-5, inplace: bool = False):
            super().__init__()
            self.inplace = inplace
            self.gamma = nn.Parameter(init_values * torch.ones(dim))

        def forward(self, x):
            return x.mul_(self.gamma) if self.inplace else x * self.gamma

    class Attention(nn.Module):
        fused_attn: Final[bool]

        def __init__(self, dim, num_heads=2, qkv_bias=False, fused_attn=True):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = dim // num_heads
            self.scale = self.head_dim ** -0.5
            self.fused_attn = fused_attn
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            if self.fused_attn and not torch.jit.is_scripting() and not torch.compiler.is_compiling():
                x = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
            else:
                q = q * self.scale
                attn = q @ k.transpose(-2, -1)
                attn = attn.softmax(dim=-1)
                x = attn @ v
            x = x.transpose(1, 2).reshape(B, N, C)
            return self.proj(x)

    class Block(nn.Module):
        def __init__(self, dim, fused_attn, dpr):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention(dim, fused_attn=fused_attn)
            self.ls1 = LayerScale(dim, init_values=0.1)
            self.drop_path1 = DropPath(dpr) if dpr > 0.0 else nn.Identity()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim))
            self.ls2 = LayerScale(dim, init_values=0.1, inplace=True)
            self.drop_path2 = DropPath(dpr) if dpr > 0.0 else nn.Identity()

        def forward(self, x):
            x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
            x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
            return x

    class VisionTransformer(nn.Module):
        def __init__(self, img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=2):
            super().__init__()
            self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            num_patches = (img_size // patch_size) ** 2
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, embed_dim) * 0.02)
            dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]  # stochastic depth decay rule
            self.blocks = nn.Sequential(*[Block(embed_dim, fused_attn=i % 2 == 0, dpr=dpr[i]) for i in range(depth)])
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.head = nn.Linear(embed_dim, num_classes)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)

        @torch.jit.ignore
        def no_weight_decay(self):
            return {"pos_embed", "cls_token"}

        def forward_features(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)  # BCHW -> BNC
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            x = x + self.pos_embed
            return self.norm(self.blocks(x))

        def forward(self, x):
            return self.head(self.forward_features(x)[:, 0])

    return VisionTransformer()


def vit_training(m, weights, steps=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, vit(m), weights)
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    optimizer = optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.05}],
                            lr=5e-3)
    warmup = optim.lr_scheduler.LinearLR(optimizer, start_factor=0.2, total_iters=2)
    cosine = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - 2, eta_min=1e-4)
    scheduler = optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[2])
    rng = np.random.default_rng(15)
    images = torch.tensor(rng.standard_normal((6, 1, 8, 8)).astype(np.float32))
    labels = torch.tensor(rng.integers(0, 3, 6))
    losses = []
    for step in range(steps):
        model.train()
        loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    grads = [p.grad for p in model.parameters()]
    model.eval()
    with torch.no_grad():
        fused = model.blocks[0].attn(model.blocks[0].norm1(torch.ones(1, 5, 8)))
        model.blocks[0].attn.fused_attn = False
        unfused = model.blocks[0].attn(model.blocks[0].norm1(torch.ones(1, 5, 8)))
    return losses, grads, [p.detach() for p in model.parameters()], fused, unfused, len(no_decay), len(decay)


def test_timm_style_vit_with_jit_markers():
    weights = weights_of(vit)
    (losses, grads, params, fused, unfused, n_no_decay, n_decay), _ = run_both(vit_training, weights, rtol=1e-4,
                                                                               atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-6)  # the two attention paths agree
    assert n_decay == 10 and n_no_decay == 24  # weights of convs and linears; the rest, and what no_weight_decay names


def drop_path_statistics(m):
    """DropPath in train(): whole samples dropped, the kept ones scaled by 1/keep; eval(): the identity."""
    torch = m.torch
    torch.manual_seed(0)
    model = vit(m, drop_path_rate=0.5)
    dp = model.blocks[1].drop_path1
    x = torch.ones(400, 2, 3)
    model.train()
    y = dp(x)
    per_sample = y.flatten(1)
    same_within = bool((per_sample == per_sample[:, :1]).all())
    model.eval()
    dropped = (per_sample[:, 0] == 0).float().mean()
    return sorted(set(y.flatten().tolist())), same_within, bool((dp(x) == x).all()), dropped


def test_drop_path_drops_whole_samples():
    ours, theirs = run_both(drop_path_statistics, compare=False)
    for values, same_within, identity, dropped in [ours] + ([theirs] if theirs else []):
        assert values == [0.0, 2.0] and same_within and identity and 0.4 < float(dropped) < 0.6


# ----------------------------------------------------------------------------------------------
# Adversarial examples: PyTorch's FGSM tutorial (denorm, data.grad.sign()) and PGD adversarial
# training as the "Adversarial Robustness" tutorial writes it (delta.data = ..., delta.grad.zero_())
# ----------------------------------------------------------------------------------------------


def small_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def adversarial(m, weights, epochs=3, epsilon=0.1, alpha=0.04, num_iter=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, small_cnn(m), weights)
    rng = np.random.default_rng(18)
    X = torch.tensor(rng.random((6, 1, 8, 8)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 3, 6))
    starts = rng.uniform(-epsilon, epsilon, (epochs, 6, 1, 8, 8)).astype(np.float32)

    def fgsm_attack(image, epsilon, data_grad):
        sign_data_grad = data_grad.sign()
        perturbed_image = image + epsilon * sign_data_grad
        return torch.clamp(perturbed_image, 0, 1)

    def denorm(batch, mean=[0.1307], std=[0.3081]):
        if isinstance(mean, list):
            mean = torch.tensor(mean).to("cpu")
        if isinstance(std, list):
            std = torch.tensor(std).to("cpu")
        return batch * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)

    # the FGSM tutorial's test step, on normalised data
    data = ((X - 0.1307) / 0.3081).clone()
    data.requires_grad = True
    output = model(data)
    loss = F.nll_loss(F.log_softmax(output, dim=1), y)
    model.zero_grad()
    loss.backward()
    data_grad = data.grad.data
    data_denorm = denorm(data)
    perturbed_data = fgsm_attack(data_denorm, epsilon, data_grad)
    perturbed_data_normalized = (perturbed_data - 0.1307) / 0.3081
    final_pred = model(perturbed_data_normalized).max(1, keepdim=True)[1]

    def pgd_linf(model, X, y, epsilon, alpha, num_iter, start):
        delta = torch.tensor(start, requires_grad=True)
        for t in range(num_iter):
            loss = nn.CrossEntropyLoss()(model(X + delta), y)
            loss.backward()
            delta.data = (delta + alpha * delta.grad.detach().sign()).clamp(-epsilon, epsilon)
            delta.grad.zero_()
        return delta.detach()

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    log = []
    for epoch in range(epochs):
        model.train()
        delta = pgd_linf(model, X, y, epsilon, alpha, num_iter, starts[epoch])
        yp = model(X + delta)
        loss = nn.CrossEntropyLoss()(yp, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.append((loss.item(), (yp.max(dim=1)[1] != y).sum().item(), delta.abs().max().item()))
    return (data_grad, perturbed_data, final_pred, log, [p.detach() for p in model.parameters()],
            [p.grad for p in model.parameters()])


def test_fgsm_and_pgd_adversarial_training():
    weights = weights_of(small_cnn)
    (data_grad, perturbed, final_pred, log, params, grads), _ = run_both(adversarial, weights, rtol=1e-4, atol=1e-5)
    assert perturbed.min() >= 0 and perturbed.max() <= 1 and final_pred.shape == (6, 1)
    assert all(entry[2] <= 0.1 + 1e-7 for entry in log)  # the perturbation stays in the epsilon ball


# ----------------------------------------------------------------------------------------------
# Glow (rosinality/glow-pytorch, in small): ActNorm with data-dependent initialisation (a uint8 buffer
# as its flag), an invertible 1x1 convolution with slogdet, affine coupling, squeeze, the likelihood
# ----------------------------------------------------------------------------------------------

logabs = lambda x: x.abs().log()


def glow(m):
    torch, nn, F = m.torch, m.nn, m.F

    class ActNorm(nn.Module):
        def __init__(self, in_channel, logdet=True):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(1, in_channel, 1, 1))
            self.scale = nn.Parameter(torch.ones(1, in_channel, 1, 1))
            self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
            self.logdet = logdet

        def initialize(self, input):
            with torch.no_grad():
                flatten = input.permute(1, 0, 2, 3).contiguous().view(input.shape[1], -1)
                mean = flatten.mean(1).unsqueeze(1).unsqueeze(2).unsqueeze(3).permute(1, 0, 2, 3)
                std = flatten.std(1).unsqueeze(1).unsqueeze(2).unsqueeze(3).permute(1, 0, 2, 3)
                self.loc.data.copy_(-mean)
                self.scale.data.copy_(1 / (std + 1e-6))

        def forward(self, input):
            _, _, height, width = input.shape
            if self.initialized.item() == 0:
                self.initialize(input)
                self.initialized.fill_(1)
            log_abs = logabs(self.scale)
            logdet = height * width * torch.sum(log_abs)
            return self.scale * (input + self.loc), logdet

        def reverse(self, output):
            return output / self.scale - self.loc

    class InvConv2d(nn.Module):
        def __init__(self, in_channel):
            super().__init__()
            weight = torch.randn(in_channel, in_channel)
            q, _ = torch.linalg.qr(weight)
            weight = q.unsqueeze(2).unsqueeze(3)
            self.weight = nn.Parameter(weight)

        def forward(self, input):
            _, _, height, width = input.shape
            out = F.conv2d(input, self.weight)
            logdet = height * width * torch.slogdet(self.weight.squeeze().double())[1].float()
            return out, logdet

        def reverse(self, output):
            return F.conv2d(output, self.weight.squeeze().inverse().unsqueeze(2).unsqueeze(3))

    class AffineCoupling(nn.Module):
        def __init__(self, in_channel, filter_size=8):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(in_channel // 2, filter_size, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(filter_size, in_channel, 3, padding=1))

        def forward(self, input):
            in_a, in_b = input.chunk(2, 1)
            log_s, t = self.net(in_a).chunk(2, 1)
            s = F.sigmoid(log_s + 2)
            out_b = (in_b + t) * s
            logdet = torch.sum(torch.log(s).view(input.shape[0], -1), 1)
            return torch.cat([in_a, out_b], 1), logdet

        def reverse(self, output):
            out_a, out_b = output.chunk(2, 1)
            log_s, t = self.net(out_a).chunk(2, 1)
            s = F.sigmoid(log_s + 2)
            return torch.cat([out_a, out_b / s - t], 1)

    class Flow(nn.Module):
        def __init__(self, in_channel):
            super().__init__()
            self.actnorm = ActNorm(in_channel)
            self.invconv = InvConv2d(in_channel)
            self.coupling = AffineCoupling(in_channel)

        def forward(self, input):
            out, logdet = self.actnorm(input)
            out, det1 = self.invconv(out)
            out, det2 = self.coupling(out)
            return out, logdet + det1 + det2

        def reverse(self, output):
            return self.actnorm.reverse(self.invconv.reverse(self.coupling.reverse(output)))

    class Glow(nn.Module):
        def __init__(self, in_channel=1, n_flow=2):
            super().__init__()
            squeeze_dim = in_channel * 4
            self.flows = nn.ModuleList([Flow(squeeze_dim) for _ in range(n_flow)])

        def squeeze(self, input):
            b_size, n_channel, height, width = input.shape
            squeezed = input.view(b_size, n_channel, height // 2, 2, width // 2, 2)
            squeezed = squeezed.permute(0, 1, 3, 5, 2, 4)
            return squeezed.contiguous().view(b_size, n_channel * 4, height // 2, width // 2)

        def forward(self, input):
            out = self.squeeze(input)
            logdet = 0
            for flow in self.flows:
                out, det = flow(out)
                logdet = logdet + det
            log_p = (-0.5 * math.log(2 * math.pi) - 0.5 * out ** 2).view(input.shape[0], -1).sum(1)
            return log_p, logdet, out

        def reverse(self, z):
            for flow in self.flows[::-1]:
                z = flow.reverse(z)
            return z

    return Glow()


def glow_training(m, weights, steps=4, n_bins=32.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, glow(m), weights)
    assert [int(f.actnorm.initialized) for f in model.flows] == [0, 0]
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(19)
    image = torch.tensor(rng.random((4, 1, 4, 4)).astype(np.float32) - 0.5)
    noise = torch.tensor(rng.random((steps, 4, 1, 4, 4)).astype(np.float32) / n_bins)
    n_pixel = 16
    losses = []
    for i in range(steps):
        log_p, logdet, z = model(image + noise[i])
        logdet = logdet.mean()
        loss = -math.log(n_bins) * n_pixel + logdet + log_p
        loss = (-loss / (math.log(2) * n_pixel)).mean()
        model.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        _, _, z = model(image)
        back = model.reverse(z)
    flag_dtype = str(model.flows[0].actnorm.initialized.dtype).split(".")[-1]
    return (losses, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()],
            [int(f.actnorm.initialized) for f in model.flows], flag_dtype, back, model.squeeze(image))


def test_glow_actnorm_invconv_coupling():
    weights = weights_of(glow)
    (losses, params, grads, initialized, flag_dtype, back, squeezed), _ = run_both(glow_training, weights, rtol=1e-4,
                                                                                   atol=1e-5)
    assert initialized == [1, 1] and flag_dtype == "uint8" and losses[-1] < losses[0]
    np.testing.assert_allclose(back, squeezed, rtol=1e-4, atol=1e-5)  # the flow inverts itself
    image = np.random.default_rng(19).random((4, 1, 4, 4)).astype(np.float32) - 0.5
    np.testing.assert_array_equal(squeezed[:, :, 0, 0], image[:, 0, :2, :2].reshape(4, 4))  # a 2x2 block
