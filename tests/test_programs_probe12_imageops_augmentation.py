# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Image-processing and dense-prediction programs (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data (float64 mostly, to about 1e-9), comparing values and gradients, and checked
by hand where they run alone. torchvision-style tensor augmentation on the seeded generator (RandomResizedCrop,
ColorJitter's HSV round trip, gaussian_blur, RandomErasing), DiffAugment, CutMix and flip TTA."""

import math

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Data augmentation as torchvision writes it on tensors (RandomResizedCrop.get_params, an antialiased
# resize, ColorJitter with its randperm order and the HSV round trip of adjust_hue, gaussian_blur,
# RandomErasing), all drawn from the seeded global generator; then DiffAugment (Zhao et al. 2020):
# differentiable colour, translation by meshgrid index math and cutout by masked index assignment, the
# gradient reaching the generated images; CutMix boxes with torch.roll; flip TTA
# ----------------------------------------------------------------------------------------------


def _rgb2hsv(m, img):
    torch = m.torch
    r, g, b = img.unbind(dim=-3)
    maxc = torch.max(img, dim=-3).values
    minc = torch.min(img, dim=-3).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc = (maxc - r) / cr_divisor
    gc = (maxc - g) / cr_divisor
    bc = (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = hr + hg + hb
    h = torch.fmod((h / 6.0 + 1.0), 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv2rgb(m, img):
    torch = m.torch
    h, s, v = img.unbind(dim=-3)
    i = torch.floor(h * 6.0)
    f = (h * 6.0) - i
    i = i.to(dtype=torch.int32)
    p = torch.clamp((v * (1.0 - s)), 0.0, 1.0)
    q = torch.clamp((v * (1.0 - s * f)), 0.0, 1.0)
    t = torch.clamp((v * (1.0 - s * (1.0 - f))), 0.0, 1.0)
    i = i % 6
    mask = i.unsqueeze(dim=-3) == torch.arange(6).view(-1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=-3)
    a2 = torch.stack((t, v, v, q, p, p), dim=-3)
    a3 = torch.stack((p, p, t, v, v, q), dim=-3)
    a4 = torch.stack((a1, a2, a3), dim=-4)
    return torch.einsum("...ijk, ...xijk -> ...xjk", mask.to(dtype=img.dtype), a4)


def rgb_to_grayscale(img):
    r, g, b = img.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)


def _blend(img1, img2, ratio):
    return (ratio * img1 + (1.0 - ratio) * img2).clamp(0, 1.0).to(img1.dtype)


def adjust_hue(m, img, hue_factor):
    img = _rgb2hsv(m, img)
    h, s, v = img.unbind(dim=-3)
    h = (h + hue_factor) % 1.0
    return _hsv2rgb(m, m.torch.stack((h, s, v), dim=-3))


def color_jitter(m, img, brightness=(0.6, 1.4), contrast=(0.6, 1.4), saturation=(0.6, 1.4), hue=(-0.1, 0.1)):
    torch = m.torch
    fn_idx = torch.randperm(4)
    b = float(torch.empty(1).uniform_(brightness[0], brightness[1]))
    c = float(torch.empty(1).uniform_(contrast[0], contrast[1]))
    s = float(torch.empty(1).uniform_(saturation[0], saturation[1]))
    h = float(torch.empty(1).uniform_(hue[0], hue[1]))
    for fn_id in fn_idx:
        if fn_id == 0:
            img = _blend(img, torch.zeros_like(img), b)
        elif fn_id == 1:
            mean = torch.mean(rgb_to_grayscale(img), dim=(-3, -2, -1), keepdim=True)
            img = _blend(img, mean, c)
        elif fn_id == 2:
            img = _blend(img, rgb_to_grayscale(img), s)
        elif fn_id == 3:
            img = adjust_hue(m, img, h)
    return img


def random_resized_crop(m, img, size, scale=(0.3, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    torch, F = m.torch, m.F
    height, width = img.shape[-2:]
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            break
    else:
        i, j, h, w = (height - min(height, width)) // 2, (width - min(height, width)) // 2, height, width
    crop = img[..., i:i + h, j:j + w]
    return F.interpolate(crop.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def gaussian_blur(m, img, kernel_size, sigma):
    torch, F = m.torch, m.F
    ksize_half = (kernel_size - 1) * 0.5
    x = torch.linspace(-ksize_half, ksize_half, steps=kernel_size, dtype=img.dtype)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    kernel1d = pdf / pdf.sum()
    kernel = torch.mm(kernel1d[:, None], kernel1d[None, :])
    kernel = kernel.expand(img.shape[-3], 1, kernel.shape[0], kernel.shape[1])
    padding = [kernel_size // 2] * 4
    out = F.pad(img.unsqueeze(0), padding, mode="reflect")
    return F.conv2d(out, kernel, groups=img.shape[-3])[0]


def random_erasing(m, img, p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3), value=(0.485, 0.456, 0.406)):
    torch = m.torch
    if torch.rand(1) >= p:
        return img
    img_c, img_h, img_w = img.shape
    area = img_h * img_w
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        erase_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        h = int(round(math.sqrt(erase_area * aspect_ratio)))
        w = int(round(math.sqrt(erase_area / aspect_ratio)))
        if not (h < img_h and w < img_w):
            continue
        if value is None:  # (PyTorch's float32 normals of 16 or more are its vector loop's: an ulp from NumPy's)
            v = torch.empty([img_c, h, w], dtype=torch.float32).normal_()
        else:
            v = torch.tensor(value)[:, None, None]
        i = torch.randint(0, img_h - h + 1, size=(1,)).item()
        j = torch.randint(0, img_w - w + 1, size=(1,)).item()
        img = img.clone()
        img[..., i:i + h, j:j + w] = v
        return img
    return img


def rand_brightness(m, x):
    return x + (m.torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) - 0.5)


def rand_saturation(m, x):
    x_mean = x.mean(dim=1, keepdim=True)
    return (x - x_mean) * (m.torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) * 2) + x_mean


def rand_contrast(m, x):
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - x_mean) * (m.torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) + 0.5) + x_mean


def rand_translation(m, x, ratio=0.125):
    torch, F = m.torch, m.F
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1])
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1])
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long), torch.arange(x.size(2), dtype=torch.long),
        torch.arange(x.size(3), dtype=torch.long), indexing="ij")
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def rand_cutout(m, x, ratio=0.5):
    torch = m.torch
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1])
    offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1])
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long), torch.arange(cutout_size[0], dtype=torch.long),
        torch.arange(cutout_size[1], dtype=torch.long), indexing="ij")
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


def diff_augment(m, x):
    for f in (rand_brightness, rand_saturation, rand_contrast, rand_translation, rand_cutout):
        x = f(m, x)
    return x.contiguous()


def small_classifier(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(8, 3))


def augmentation_pipeline(m, weights, dtype="float64"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, small_classifier(m), weights).to(getattr(torch, dtype))
    rng = np.random.default_rng(10)
    images = torch.tensor(rng.uniform(0, 1, (4, 3, 14, 12)).astype(dtype))
    labels = torch.tensor(rng.integers(0, 3, 4))
    torch.manual_seed(0)
    batch = []
    for img in images:
        img = random_resized_crop(m, img, (8, 8))
        if torch.rand(1) < 0.5:
            img = img.flip(-1)
        img = color_jitter(m, img)
        sigma = torch.empty(1).uniform_(0.1, 2.0).item()
        img = gaussian_blur(m, img, 3, sigma)
        img = random_erasing(m, img, p=0.7)
        batch.append(img)
    batch = torch.stack(batch)
    # CutMix: a box from a Beta(1, 1) area, pasted from the batch rolled by one
    lam = float(torch.distributions.Beta(torch.tensor([1.0]), torch.tensor([1.0])).sample())
    H, W = batch.shape[-2:]
    r_x, r_y = torch.randint(W, (1,)), torch.randint(H, (1,))
    r = 0.5 * math.sqrt(1.0 - lam)
    r_w_half, r_h_half = int(r * W), int(r * H)
    x1, y1 = int(torch.clamp(r_x - r_w_half, min=0)), int(torch.clamp(r_y - r_h_half, min=0))
    x2, y2 = int(torch.clamp(r_x + r_w_half, max=W)), int(torch.clamp(r_y + r_h_half, max=H))
    mixed = batch.clone()
    mixed[:, :, y1:y2, x1:x2] = batch.roll(1, 0)[:, :, y1:y2, x1:x2]
    lam_adjusted = float(1.0 - (x2 - x1) * (y2 - y1) / (W * H))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.zero_grad()
    out = model(mixed)
    loss = lam_adjusted * F.cross_entropy(out, labels) + (1 - lam_adjusted) * F.cross_entropy(out, labels.roll(1, 0))
    loss.backward()
    optimizer.step()
    # DiffAugment: the gradient of a discriminator's loss reaches the (generated) images through it
    fake = batch.detach().requires_grad_(True)
    d_out = model(diff_augment(m, fake))
    g_loss = F.softplus(-d_out).mean()
    g_loss.backward()
    # test-time augmentation: the mean of the model over the identity and the two flips
    with torch.no_grad():
        tta = torch.stack([F.softmax(model(t), 1) for t in (batch, batch.flip(3), batch.flip(2))]).mean(0)
        rotated = torch.rot90(batch, 1, dims=(2, 3))
    return batch, lam, (x1, y1, x2, y2), loss, [p.detach() for p in model.parameters()], fake.grad, tta, rotated


def test_augmentation_pipelines():
    weights = weights_of(small_classifier)
    ours, _ = run_both(augmentation_pipeline, weights, rtol=1e-9, atol=1e-10)
    batch, lam, box, loss, params, fake_grad, tta, rotated = ours
    assert batch.shape == (4, 3, 8, 8) and np.abs(fake_grad).sum() > 0
    assert (batch[:, 0] == np.float32(0.485)).any()  # RandomErasing erased somewhere
    x1, y1, x2, y2 = box
    assert x2 > x1 and y2 > y1  # and CutMix pasted a box
    np.testing.assert_allclose(tta.sum(1), 1.0, rtol=1e-12)
    run_both(augmentation_pipeline, weights, dtype="float32", rtol=2e-5, atol=2e-6)
    # the HSV round trip is the identity, a hue shift of 1 too
    rgb = OURS.torch.tensor(np.random.default_rng(3).uniform(0, 1, (2, 3, 4, 5)))
    np.testing.assert_allclose(_hsv2rgb(OURS, _rgb2hsv(OURS, rgb)).numpy(), rgb.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(adjust_hue(OURS, rgb, 1.0).numpy(), rgb.numpy(), rtol=1e-10, atol=1e-12)
