# ruff: noqa: B006, B007, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch vision programs (see tests/pytorch_programs.py), each run unchanged but for its imports on chainrule
and on PyTorch from the same weights, comparing losses, parameters and gradients. A milesial-style U-Net
(``F.interpolate`` bilinear with ``align_corners=True``, ``F.pad`` by the size difference, ``torch.cat`` skips,
GroupNorm, a per-pixel weighted cross-entropy plus a Dice loss through ``one_hot().permute``, RMSprop and
ReduceLROnPlateau('max')); augmentation code (reflect-pad then crop, flips, ``torch.roll``, cutout by masked
assignment, ViT patches by ``unfold`` equal to a strided convolution and put back by ``F.fold``, test-time
augmentation over ``rot90``/``flip``, an input saliency gradient), also run on chainrule alone; adversarial examples
(the FGSM tutorial's ``data.grad.sign()`` and PGD training's ``delta.data = ...``)."""

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

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
