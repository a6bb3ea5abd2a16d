# ruff: noqa: B007, E741, E731, F841  (the programs are kept as their authors wrote them)
"""Image augmentation written on tensors by hand, as torchvision's tensor transforms and training scripts write it
(no torchvision import), each run on chainrule and on PyTorch with the same seeds: RandomResizedCrop's sampling
(uniform_, log/exp, randint) with an antialiased resize, flips, ColorJitter (brightness/contrast/saturation blends,
rgb_to_grayscale, hue through rgb<->hsv with where/fmod/floor/einsum, and v2's in-place gather version), Gaussian
blur (grouped conv2d after reflect padding), affine and perspective warps (affine_grid/grid_sample both ways of
align_corners, every padding mode, fill through a mask channel, lstsq for the perspective coefficients), elastic
warps, RandAugment's uint8 ops (posterize, solarize, equalize with histc, autocontrast, sharpness), random erasing,
mixup and cutmix (Beta, _sample_dirichlet, randperm) in a training loop over a DataLoader with a generator, and
learned augmentation differentiated through (colour factors, a blur's sigma, a warp's theta, Beta.rsample's alpha,
straight-through quantisation). Without PyTorch each test still checks literals and invariants."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both


def dtype_name(t):
    return str(t.dtype).replace("torch.", "")


# ----------------------------------------------------------------------------------------------
# torchvision's tensor colour functions, written by hand
# ----------------------------------------------------------------------------------------------


def colour_functions(torch, F):
    def rgb_to_grayscale(img):
        r, g, b = img.unbind(dim=-3)
        return (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)

    def blend(a, b, ratio):
        bound = 1.0 if a.is_floating_point() else 255.0
        return (ratio * a + (1.0 - ratio) * b).clamp(0, bound).to(a.dtype)

    def adjust_contrast(img, f):
        mean = torch.mean(rgb_to_grayscale(img).to(torch.float32), dim=(-3, -2, -1), keepdim=True)
        return blend(img, mean, f)

    def adjust_saturation(img, f):
        return blend(img, rgb_to_grayscale(img), f)

    def rgb2hsv(img):
        r, g, b = img.unbind(dim=-3)
        maxc = torch.max(img, dim=-3).values
        minc = torch.min(img, dim=-3).values
        eqc = maxc == minc
        cr = maxc - minc
        ones = torch.ones_like(maxc)
        s = cr / torch.where(eqc, ones, maxc)
        cr_divisor = torch.where(eqc, ones, cr)
        rc, gc, bc = (maxc - r) / cr_divisor, (maxc - g) / cr_divisor, (maxc - b) / cr_divisor
        hr = (maxc == r) * (bc - gc)
        hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
        hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
        h = torch.fmod(((hr + hg + hb) / 6.0 + 1.0), 1.0)
        return torch.stack((h, s, maxc), dim=-3)

    def hsv2rgb(img):
        h, s, v = img.unbind(dim=-3)
        i = torch.floor(h * 6.0)
        f = (h * 6.0) - i
        i = i.to(dtype=torch.int32)
        p = torch.clamp((v * (1.0 - s)), 0.0, 1.0)
        q = torch.clamp((v * (1.0 - s * f)), 0.0, 1.0)
        t = torch.clamp((v * (1.0 - s * (1.0 - f))), 0.0, 1.0)
        i = i % 6
        mask = i.unsqueeze(dim=-3) == torch.arange(6, device=i.device).view(-1, 1, 1)
        a1 = torch.stack((v, q, p, p, t, v), dim=-3)
        a2 = torch.stack((t, v, v, q, p, p), dim=-3)
        a3 = torch.stack((p, p, t, v, v, q), dim=-3)
        a4 = torch.stack((a1, a2, a3), dim=-4)
        return torch.einsum("...ijk, ...xijk -> ...xjk", mask.to(dtype=img.dtype), a4)

    def adjust_hue(img, hue_factor):
        orig_dtype = img.dtype
        if img.dtype == torch.uint8:
            img = img.to(dtype=torch.float32) / 255.0
        h, s, v = rgb2hsv(img).unbind(dim=-3)
        h = (h + hue_factor) % 1.0
        out = hsv2rgb(torch.stack((h, s, v), dim=-3))
        if orig_dtype == torch.uint8:
            out = (out * 255.0).round().to(dtype=orig_dtype)
        return out

    def gaussian_blur(img, ks, sigma):
        def kernel1d(k, s):
            half = (k - 1) * 0.5
            pdf = torch.exp(-0.5 * (torch.linspace(-half, half, steps=k) / s).pow(2))
            return pdf / pdf.sum()

        kernel = torch.mm(kernel1d(ks[1], sigma[1])[:, None], kernel1d(ks[0], sigma[0])[None, :])
        kernel = kernel.expand(img.shape[-3], 1, kernel.shape[0], kernel.shape[1])
        x = F.pad(img, [ks[0] // 2, ks[0] // 2, ks[1] // 2, ks[1] // 2], mode="reflect")
        return F.conv2d(x, kernel, groups=x.shape[-3])

    return dict(gray=rgb_to_grayscale, blend=blend, contrast=adjust_contrast, saturation=adjust_saturation,
                hue=adjust_hue, rgb2hsv=rgb2hsv, hsv2rgb=hsv2rgb, blur=gaussian_blur)


def random_resized_crop_params(torch, h, w, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = h * w * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        ww = int(round(math.sqrt(target_area * aspect)))
        hh = int(round(math.sqrt(target_area / aspect)))
        if 0 < ww <= w and 0 < hh <= h:
            i = torch.randint(0, h - hh + 1, size=(1,)).item()
            j = torch.randint(0, w - ww + 1, size=(1,)).item()
            return i, j, hh, ww
    return 0, 0, h, w


def crop_resize_jitter(m):
    torch, F = m.torch, m.F
    fns = colour_functions(torch, F)
    torch.manual_seed(0)
    u8 = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8)
    x = u8.to(torch.float32).div(255)
    i, j, hh, ww = random_resized_crop_params(torch, 20, 24)
    crop = x[..., i:i + hh, j:j + ww]
    res = F.interpolate(crop, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    bicubic = F.interpolate(crop, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    if torch.rand(1) < 0.5:
        res = torch.flip(res, dims=[-1])
    b = float(torch.empty(1).uniform_(0.6, 1.4))
    order = torch.randperm(4)
    out = dict(params=[i, j, hh, ww], res=res, bicubic=bicubic, order=order,
               bright=fns["blend"](res, torch.zeros_like(res), b), contrast=fns["contrast"](res, 0.7),
               sat=fns["saturation"](res, 1.3), hue=fns["hue"](res, 0.2), hue_u8=fns["hue"](u8, -0.1),
               contrast_u8=fns["contrast"](u8, 1.5), sat_u8=fns["saturation"](u8, 0.5), gray_u8=fns["gray"](u8),
               blur=fns["blur"](res, [5, 3], [1.2, 0.8]), hue_identity=fns["hue"](res, 0.0) - res)
    out["dtypes"] = " ".join(dtype_name(out[k]) for k in ("res", "hue", "hue_u8", "contrast_u8", "gray_u8", "blur"))
    return out


def test_random_resized_crop_colour_jitter_and_blur():
    ours, _ = run_both(crop_resize_jitter, atol=2e-6)
    assert ours["params"] == [4, 10, 14, 14]
    assert ours["dtypes"] == "float32 float32 uint8 uint8 uint8 float32"
    assert sorted(ours["order"].tolist()) == [0, 1, 2, 3]
    assert [int(ours[k].astype(np.int64).sum()) for k in ("hue_u8", "contrast_u8", "sat_u8", "gray_u8")] == [
        361362, 359942, 360546, 120575]
    assert ours["res"].sum() == pytest.approx(749.17206, abs=1e-3)
    assert ours["blur"].sum() == pytest.approx(747.4929, abs=1e-3)
    np.testing.assert_allclose(ours["hue_identity"], 0, atol=2e-6)  # a zero hue shift gives the image back
    assert ours["bright"].max() <= 1.0 and ours["sat"].min() >= 0.0


# ----------------------------------------------------------------------------------------------
# Affine warps: affine_grid + grid_sample, values and gradients (a learned spatial transformer)
# ----------------------------------------------------------------------------------------------


def affine_warps(m):
    torch, F = m.torch, m.F
    torch.manual_seed(1)
    x = torch.rand(2, 3, 6, 5)
    ang = torch.empty(2).uniform_(-30, 30) * math.pi / 180
    tx = torch.empty(2, 2).uniform_(-0.1, 0.1)
    sc = torch.empty(2).uniform_(0.9, 1.1)
    theta = torch.zeros(2, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) * sc
    theta[:, 0, 1] = -torch.sin(ang) * sc
    theta[:, 1, 0] = torch.sin(ang) * sc
    theta[:, 1, 1] = torch.cos(ang) * sc
    theta[:, :, 2] = tx
    out = {}
    th = theta.clone().requires_grad_(True)
    xi = x.clone().requires_grad_(True)
    for ac in (True, False):
        for pm in ("zeros", "border", "reflection"):
            for mode in ("bilinear", "nearest", "bicubic"):
                th.grad = None
                xi.grad = None
                g = F.affine_grid(th, (2, 3, 4, 5), align_corners=ac)
                y = F.grid_sample(xi, g, mode=mode, padding_mode=pm, align_corners=ac)
                (y * torch.linspace(0, 1, 5)).pow(2).sum().backward()
                out[f"{ac}_{pm}_{mode}"] = (y, th.grad.clone(), xi.grad.clone())
    identity = torch.eye(2, 3).expand(2, 2, 3)
    out["identity"] = F.grid_sample(x, F.affine_grid(identity, x.shape, align_corners=True), align_corners=True) - x
    return out


def test_affine_grid_sample_every_mode_with_gradients():
    ours, _ = run_both(affine_warps, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(ours["identity"], 0, atol=1e-6)
    for key, (y, dtheta, dx) in ((k, v) for k, v in ours.items() if k != "identity"):
        assert y.shape == (2, 3, 4, 5) and dtheta.shape == (2, 2, 3) and dx.shape == (2, 3, 6, 5)
        if key.endswith("nearest"):
            assert not dtheta.any()  # nearest sampling is flat in the grid
        if not key.endswith("bicubic"):  # (bicubic's weights go negative)
            assert dx.min() >= 0  # the loss grows with every pixel's value
    assert ours["True_zeros_bilinear"][0].sum() == pytest.approx(64.14772, abs=1e-3)
    assert ours["False_reflection_bicubic"][1].sum() == pytest.approx(9.458019, abs=1e-3)


# ----------------------------------------------------------------------------------------------
# torchvision's affine/perspective/elastic with a fill, on a uint8 image
# ----------------------------------------------------------------------------------------------


def torchvision_warps(m):
    torch, F = m.torch, m.F
    torch.manual_seed(7)
    img = torch.randint(0, 256, (3, 10, 12), dtype=torch.uint8)

    def base_grid(oh, ow, start_x, start_y):
        grid = torch.empty(1, oh, ow, 3)
        grid[..., 0].copy_(torch.linspace(start_x, start_x + ow - 1, steps=ow))
        grid[..., 1].copy_(torch.linspace(start_y, start_y + oh - 1, steps=oh).unsqueeze_(-1))
        grid[..., 2].fill_(1)
        return grid

    def apply_grid(img, grid, mode, fill):
        x = img.unsqueeze(dim=0).to(grid.dtype)
        mask = torch.ones((x.shape[0], 1, x.shape[2], x.shape[3]), dtype=x.dtype)
        x = F.grid_sample(torch.cat((x, mask), dim=1), grid, mode=mode, padding_mode="zeros", align_corners=False)
        mask = x[:, -1:, :, :].expand_as(x[:, :-1])
        x = x[:, :-1, :, :]
        fill_img = torch.tensor(fill, dtype=x.dtype).view(1, -1, 1, 1).expand_as(x)
        if mode == "nearest":
            mask = mask < 0.5
            x[mask] = fill_img[mask]
        else:
            x = x * mask + (1.0 - mask) * fill_img
        return torch.round(x.squeeze(dim=0)).to(img.dtype)

    angle = math.radians(float(torch.empty(1).uniform_(-25.0, 25.0).item()))
    a, b, c, d = math.cos(angle), -math.sin(angle), math.sin(angle), math.cos(angle)
    theta = torch.tensor([[d, -b, 1.0], [-c, a, -2.0]]).view(1, 2, 3) / 1.1
    rescaled = theta.transpose(1, 2) / torch.tensor([0.5 * 12, 0.5 * 10])
    grid = base_grid(10, 12, -12 * 0.5 + 0.5, -10 * 0.5 + 0.5).view(1, 120, 3).bmm(rescaled).view(1, 10, 12, 2)

    starts = [[0, 0], [11, 0], [11, 9], [0, 9]]
    ends = [[1, 2], [10, 0], [11, 8], [0, 9]]
    a_matrix = torch.zeros(8, 8, dtype=torch.float64)
    for i, (p1, p2) in enumerate(zip(ends, starts)):
        a_matrix[2 * i, :] = torch.tensor([p1[0], p1[1], 1, 0, 0, 0, -p2[0] * p1[0], -p2[0] * p1[1]])
        a_matrix[2 * i + 1, :] = torch.tensor([0, 0, 0, p1[0], p1[1], 1, -p2[1] * p1[0], -p2[1] * p1[1]])
    coeffs = torch.linalg.lstsq(a_matrix, torch.tensor(starts, dtype=torch.float64).view(8), driver="gels")
    co = coeffs.solution.to(torch.float32).tolist()
    theta1 = torch.tensor([[[co[0], co[1], co[2]], [co[3], co[4], co[5]]]])
    theta2 = torch.tensor([[[co[6], co[7], 1.0], [co[6], co[7], 1.0]]])
    bg = base_grid(10, 12, 0.5, 0.5).view(1, 120, 3)
    persp = (bg.bmm(theta1.transpose(1, 2) / torch.tensor([6.0, 5.0])) / bg.bmm(theta2.transpose(1, 2)) - 1.0)

    size = [10, 12]
    dx = (torch.rand([1, 1] + size) * 2 - 1) * 5.0 / size[0]
    dy = (torch.rand([1, 1] + size) * 2 - 1) * 5.0 / size[1]
    displacement = torch.concat([dx, dy], 1).permute([0, 2, 3, 1])
    grid_y, grid_x = torch.meshgrid([torch.linspace((-s + 1) / s, (s - 1) / s, s) for s in size], indexing="ij")
    elastic = torch.stack([grid_x, grid_y], -1).unsqueeze(0) + displacement
    return dict(grid=grid, affine=apply_grid(img, grid, "bilinear", [10.0, 20.0, 30.0]),
                nearest=apply_grid(img, grid, "nearest", [77.0]), coeffs=coeffs.solution,
                persp=apply_grid(img, persp.view(1, 10, 12, 2), "bilinear", [0.0]),
                elastic=apply_grid(img, elastic, "bilinear", [0.0]),
                dtype=dtype_name(apply_grid(img, grid, "nearest", [1.0])))


def test_torchvision_affine_perspective_elastic_with_fill():
    ours, _ = run_both(torchvision_warps, atol=1e-5)
    assert ours["dtype"] == "uint8"
    assert (ours["nearest"] == 77).any() and ours["coeffs"].dtype == np.float64
    assert [int(ours[k].astype(np.int64).sum()) for k in ("affine", "nearest", "persp", "elastic")] == [
        38600, 42914, 35404, 37891]


# ----------------------------------------------------------------------------------------------
# RandAugment's uint8 ops, written on tensors
# ----------------------------------------------------------------------------------------------


def randaugment_uint8(m):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(3)
    u8 = torch.randint(0, 256, (2, 3, 9, 11), dtype=torch.uint8, generator=g)

    def equalize_channel(c):
        hist = torch.histc(c.to(torch.float32), bins=256, min=0, max=255)
        nz = hist[hist != 0]
        step = torch.div(nz[:-1].sum(), 255, rounding_mode="floor")
        if step == 0:
            return c
        lut = torch.div(torch.cumsum(hist, 0) + torch.div(step, 2, rounding_mode="floor"), step,
                        rounding_mode="floor")
        lut = F.pad(lut, [1, 0])[:-1].clamp(0, 255)
        return lut[c.to(torch.int64)].to(torch.uint8)

    def sharpness(img, f):
        k = torch.ones((3, 3), dtype=torch.float32)
        k[1, 1] = 5.0
        k /= k.sum()
        d = F.conv2d(img.to(torch.float32), k.expand(3, 1, 3, 3), groups=3).round().to(img.dtype)
        res = img.clone()
        res[..., 1:-1, 1:-1] = d
        return (f * img.float() + (1 - f) * res.float()).clamp(0, 255).to(img.dtype)

    mn = torch.amin(u8, dim=(-2, -1), keepdim=True).float()
    mx = torch.amax(u8, dim=(-2, -1), keepdim=True).float()
    autocontrast = ((u8.float() - mn) * (255.0 / torch.where(mx == mn, torch.ones_like(mx), mx - mn)))
    op = torch.randint(5, (1,), generator=g).item()
    return dict(invert=255 - u8, posterize=u8 & -int(2 ** (8 - 3)), solarize=torch.where(u8 >= 128, 255 - u8, u8),
                autocontrast=autocontrast.clamp(0, 255).to(torch.uint8), sharp=sharpness(u8, 1.7),
                equalize=torch.stack([equalize_channel(u8[0, c]) for c in range(3)]), op=op,
                bincount=torch.bincount(u8.flatten().long(), minlength=256),
                resized=F.interpolate(u8, size=(5, 6), mode="bilinear", antialias=True, align_corners=False),
                flipped=torch.where((torch.rand(2, generator=g) < 0.5)[:, None, None, None], u8.flip(-1), u8))


def test_randaugment_uint8_ops():
    ours, _ = run_both(randaugment_uint8)
    for k in ("invert", "posterize", "solarize", "autocontrast", "sharp", "equalize", "resized", "flipped"):
        assert ours[k].dtype == np.uint8, k
    assert (ours["posterize"] % 32 == 0).all() and ours["solarize"].max() <= 255
    assert ours["autocontrast"].reshape(6, -1).max(1).tolist() == [255] * 6
    assert ours["bincount"].sum() == 594
    assert [int(ours[k].astype(np.int64).sum()) for k in ("sharp", "equalize", "resized")] == [76352, 39040, 23152]


# ----------------------------------------------------------------------------------------------
# Mixup, cutmix and random erasing in a training loop over a DataLoader
# ----------------------------------------------------------------------------------------------


def mixup_training(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    imgs = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 3, (12,))

    class Augmented(m.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            x = imgs[i].float().div(255)
            if torch.rand(1) < 0.5:
                x = x.flip(-1)
            i0, j0 = torch.randint(0, 3, (1,)).item(), torch.randint(0, 3, (1,)).item()
            x = F.pad(x, [1, 1, 1, 1], mode="reflect")[:, i0:i0 + 8, j0:j0 + 8]
            area = 64 * torch.empty(1).uniform_(0.02, 0.33).item()
            h = w = int(round(math.sqrt(area)))
            if 0 < h < 8:
                top, left = torch.randint(0, 8 - h + 1, (1,)).item(), torch.randint(0, 8 - w + 1, (1,)).item()
                x[..., top:top + h, left:left + w] = torch.empty([3, h, w]).normal_()
            return (x - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / 0.25, labels[i]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1))

    net = Net()
    opt = m.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loader = m.data.DataLoader(Augmented(), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(42))
    losses, lams = [], []
    for epoch in range(2):
        for step, (xb, yb) in enumerate(loader):
            idx = torch.randperm(xb.size(0))
            if step % 2 == 0:  # mixup
                lam = float(torch.distributions.Beta(torch.tensor([0.4]), torch.tensor([0.4])).sample())
                xb = lam * xb + (1 - lam) * xb[idx]
            else:  # cutmix, as torchvision's v2 CutMix draws its box
                lam = float(torch._sample_dirichlet(torch.tensor([1.0, 1.0]))[0])
                r_x, r_y = torch.randint(8, (1,)), torch.randint(8, (1,))
                half = int(0.5 * math.sqrt(1.0 - lam) * 8)
                x1, y1 = int(torch.clamp(r_x - half, min=0)), int(torch.clamp(r_y - half, min=0))
                x2, y2 = int(torch.clamp(r_x + half, max=8)), int(torch.clamp(r_y + half, max=8))
                xb = xb.clone()
                xb[:, :, y1:y2, x1:x2] = xb[idx][:, :, y1:y2, x1:x2]
                lam = 1.0 - (x2 - x1) * (y2 - y1) / 64
            soft = lam * F.one_hot(yb, 3).float() + (1 - lam) * F.one_hot(yb[idx], 3).float()
            out = net(xb)
            loss = F.cross_entropy(out, soft, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            lams.append(lam)
    return dict(losses=losses, lams=lams, weight=net.conv.weight, after=torch.rand(1))


def test_mixup_cutmix_erasing_training_loop():
    ours, _ = run_both(mixup_training, rtol=1e-4, atol=1e-5)
    assert len(ours["losses"]) == 6 and all(0 <= lam <= 1 for lam in ours["lams"])
    np.testing.assert_allclose(ours["losses"], [1.032524, 1.221098, 0.991061, 0.965526, 1.09166, 1.099999], atol=1e-4)
    np.testing.assert_allclose(ours["lams"], [0.950567, 0.75, 0.329484, 0.001892, 0.4375, 0.015747], atol=1e-6)
    assert float(ours["after"][0]) == pytest.approx(0.7137175, abs=1e-6)  # the loop's draws match PyTorch's count


# ----------------------------------------------------------------------------------------------
# Learned augmentation: gradients through the augmentations themselves
# ----------------------------------------------------------------------------------------------


def learned_augmentation(m):
    torch, F = m.torch, m.F
    fns = colour_functions(torch, F)
    torch.manual_seed(5)
    x = torch.rand(2, 3, 10, 12)
    factors = torch.tensor([1.1, 0.8, 1.2, 0.05], requires_grad=True)
    b, c, s, h = factors
    y = fns["hue"](fns["saturation"](fns["contrast"](fns["blend"](x, torch.zeros_like(x), b), c), s), h)
    (y * torch.linspace(-1, 1, 12)).sum().backward()

    sigma = torch.tensor([1.3], requires_grad=True)
    xi = x.clone().requires_grad_(True)
    k = torch.exp(-0.5 * ((torch.arange(5, dtype=torch.float32) - 2) / sigma) ** 2)
    k = k / k.sum()
    blurred = F.conv2d(F.pad(xi, [2, 2, 2, 2], mode="reflect"), (k[:, None] * k[None, :]).expand(3, 1, 5, 5), groups=3)
    (blurred ** 2).mean().backward()

    xr = x.clone().requires_grad_(True)
    resized = F.interpolate(xr, size=(6, 7), mode="bicubic", antialias=True, align_corners=False)
    quantised = resized + ((resized * 255).round() / 255 - resized).detach()  # straight-through
    (quantised.sin() * torch.arange(7.0)).sum().backward()

    alpha = torch.tensor(0.7, requires_grad=True)
    torch.manual_seed(9)
    lam = torch.distributions.Beta(alpha, alpha).rsample((5,))
    lam.sum().backward()
    return dict(factors=factors.grad, sigma=sigma.grad, blur_x=xi.grad, resize_x=xr.grad, lam=lam, alpha=alpha.grad)


def test_learned_augmentation_gradients():
    ours, _ = run_both(learned_augmentation, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(ours["factors"], [-3.4636564, -7.539205, 5.580743, 60.304615], rtol=1e-4)
    assert ours["sigma"][0] == pytest.approx(-0.00389916, rel=1e-4)  # a wider blur lowers the mean square
    assert ours["blur_x"].sum() == pytest.approx(0.9478312, rel=1e-5)
    assert ours["resize_x"].sum() == pytest.approx(668.62463, rel=1e-5)
    np.testing.assert_allclose(ours["lam"][:4], [0.69043183, 0.7431575, 0.0429148, 0.00588271], rtol=1e-5)
    assert ours["alpha"] == pytest.approx(-0.33782017, rel=1e-4)


# ----------------------------------------------------------------------------------------------
# v2's in-place rgb<->hsv with gather, and channels_last images
# ----------------------------------------------------------------------------------------------


def v2_hsv_and_layouts(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    img = torch.rand(2, 3, 5, 6)

    def rgb_to_hsv(image):
        r, g, _ = image.unbind(dim=-3)
        minc, maxc = torch.aminmax(image, dim=-3)
        eqc = maxc == minc
        channels_range = maxc - minc
        ones = torch.ones_like(maxc)
        s = channels_range / torch.where(eqc, ones, maxc)
        divisor = torch.where(eqc, ones, channels_range).unsqueeze_(dim=-3)
        rc, gc, bc = ((maxc.unsqueeze(dim=-3) - image) / divisor).unbind(dim=-3)
        mask_maxc_neq_r = maxc != r
        mask_maxc_eq_g = maxc == g
        hg = rc.add(2.0).sub_(bc).mul_(mask_maxc_eq_g & mask_maxc_neq_r)
        hr = bc.sub_(gc).mul_(~mask_maxc_neq_r)
        hb = gc.add_(4.0).sub_(rc).mul_(mask_maxc_neq_r.logical_and_(mask_maxc_eq_g.logical_not_()))
        h = hr.add_(hg).add_(hb).mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
        return torch.stack((h, s, maxc), dim=-3)

    def hsv_to_rgb(img):
        h, s, v = img.unbind(dim=-3)
        h6 = h.mul(6)
        i = torch.floor(h6)
        f = h6.sub_(i)
        i = i.to(dtype=torch.int32)
        sxf = s * f
        one_minus_s = 1.0 - s
        q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
        t = sxf.add_(one_minus_s).mul_(v).clamp_(0.0, 1.0)
        p = one_minus_s.mul_(v).clamp_(0.0, 1.0)
        i.remainder_(6)
        vpqt = torch.stack((v, p, q, t), dim=-3)
        select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], dtype=torch.long)
        select = select[:, i].transpose(0, 1)
        return vpqt.gather(-3, select)

    hsv = rgb_to_hsv(img)
    shifted = torch.stack(((hsv[:, 0] + 0.3) % 1.0, hsv[:, 1], hsv[:, 2]), 1)
    cl = img.contiguous(memory_format=torch.channels_last)
    return dict(hsv=hsv, roundtrip=hsv_to_rgb(hsv) - img, hue=hsv_to_rgb(shifted),
                strides=[list(F.interpolate(cl, size=(3, 4), mode="bilinear", antialias=True).stride()),
                         list(cl.flip(-1).stride())])


def test_v2_hsv_in_place_and_channels_last():
    ours, _ = run_both(v2_hsv_and_layouts, atol=2e-6)
    np.testing.assert_allclose(ours["roundtrip"], 0, atol=2e-6)
    assert ours["strides"] == [[36, 1, 12, 3], [90, 1, 18, 3]]
    assert 0 <= ours["hsv"][:, 0].min() and ours["hsv"][:, 0].max() < 1
