# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: morphology by unfold + max and by the convolution engine, max_pool2d
morphology and clDice's soft skeleton; F.pad's reflect / replicate / circular modes with crops and their gradients,
pixel_shuffle and fold / unfold round trips."""

import numpy as np
import pytest

from .probe18_kornia_common import quantised_image
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Mathematical morphology as kornia.morphology writes it: dilation / erosion by Tensor.unfold twice and
# torch.max / torch.min over the window (with a flat or non-flat structuring element, geodesic and
# replicate borders, an off-centre origin), the 'convolution' engine (eye kernels with a bias, then
# max(dim=1)), opening, closing, gradient, top-hat, black-hat; and the max_pool2d idiom (-max_pool(-x) for
# erosion); on quantised images, so that windows tie and the gradient goes to the index max chooses
# ----------------------------------------------------------------------------------------------


def dilation(m, tensor, kernel, structuring_element=None, origin=None, border_type="geodesic", border_value=0.0,
             max_val=1e4, engine="unfold"):
    torch, F = m.torch, m.F
    se_h, se_w = kernel.shape
    if origin is None:
        origin = [se_h // 2, se_w // 2]
    pad_e = [origin[1], se_w - origin[1] - 1, origin[0], se_h - origin[0] - 1]
    if border_type == "geodesic":
        border_value = -max_val
        border_type = "constant"
    if border_type == "constant":
        output = F.pad(tensor, pad_e, mode=border_type, value=border_value)
    else:
        output = F.pad(tensor, pad_e, mode=border_type)
    if structuring_element is None:
        neighborhood = torch.zeros_like(kernel)
        neighborhood[kernel == 0] = -max_val
    else:
        neighborhood = structuring_element.clone()
        neighborhood[kernel == 0] = -max_val
    if engine == "unfold":
        output = output.unfold(2, se_h, 1).unfold(3, se_w, 1)
        output, _ = torch.max(output + neighborhood.flip((0, 1)), 4)
        output, _ = torch.max(output, 4)
    else:
        B, C, H, W = tensor.size()
        h_pad, w_pad = output.shape[-2:]
        reshape_kernel = torch.eye(se_h * se_w, dtype=kernel.dtype).view(se_h * se_w, 1, se_h, se_w)
        output, _ = F.conv2d(output.view(B * C, 1, h_pad, w_pad), reshape_kernel, padding=0,
                             bias=neighborhood.view(-1).flip(0)).max(dim=1)
        output = output.view(B, C, H, W)
    return output.view_as(tensor)


def erosion(m, tensor, kernel, structuring_element=None, origin=None, border_type="geodesic", border_value=0.0,
            max_val=1e4, engine="unfold"):
    torch, F = m.torch, m.F
    se_h, se_w = kernel.shape
    if origin is None:
        origin = [se_h // 2, se_w // 2]
    pad_e = [origin[1], se_w - origin[1] - 1, origin[0], se_h - origin[0] - 1]
    if border_type == "geodesic":
        border_value = max_val
        border_type = "constant"
    if border_type == "constant":
        output = F.pad(tensor, pad_e, mode=border_type, value=border_value)
    else:
        output = F.pad(tensor, pad_e, mode=border_type)
    if structuring_element is None:
        neighborhood = torch.zeros_like(kernel)
        neighborhood[kernel == 0] = -max_val
    else:
        neighborhood = structuring_element.clone()
        neighborhood[kernel == 0] = -max_val
    if engine == "unfold":
        output = output.unfold(2, se_h, 1).unfold(3, se_w, 1)
        output, _ = torch.min(output - neighborhood, 4)
        output, _ = torch.min(output, 4)
    else:
        B, C, H, W = tensor.size()
        Hpad, Wpad = output.shape[-2:]
        reshape_kernel = torch.eye(se_h * se_w, dtype=kernel.dtype).view(se_h * se_w, 1, se_h, se_w)
        output, _ = F.conv2d(output.view(B * C, 1, Hpad, Wpad), reshape_kernel, padding=0,
                             bias=-neighborhood.view(-1)).min(dim=1)
        output = output.view(B, C, H, W)
    return output


def morphology(m, array, engine, border_type, structured, origin):
    torch, F = m.torch, m.F
    image = torch.tensor(array).requires_grad_(True)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]], dtype=image.dtype)
    se = torch.tensor([[0.0, 0.1, 0.0], [0.2, 0.0, 0.05], [0.0, 0.1, 0.3]], dtype=image.dtype) if structured else None
    kw = dict(structuring_element=se, origin=origin, border_type=border_type, engine=engine)
    dil = dilation(m, image, kernel, **kw)
    ero = erosion(m, image, kernel, **kw)
    opening = dilation(m, erosion(m, image, kernel, **kw), kernel, **kw)
    closing = erosion(m, dilation(m, image, kernel, **kw), kernel, **kw)
    results = {"dilation": dil, "erosion": ero, "opening": opening, "closing": closing, "gradient": dil - ero,
               "top_hat": image - opening, "bottom_hat": closing - image}
    weights = torch.linspace(0.5, 1.5, image.numel(), dtype=image.dtype).view_as(image)
    grads = {k: torch.autograd.grad((v * weights).sum(), image, retain_graph=True)[0] for k, v in results.items()}
    return results, grads


@pytest.mark.parametrize("engine,border_type,structured,origin", [
    ("unfold", "geodesic", False, None), ("unfold", "replicate", True, None), ("unfold", "geodesic", True, [0, 1]),
    ("convolution", "geodesic", False, None), ("convolution", "constant", True, [2, 2])])
def test_kornia_morphology(engine, border_type, structured, origin):
    array = quantised_image((2, 2, 6, 7), levels=3, seed=8)
    ours, _ = run_both(morphology, array, engine, border_type, structured, origin, rtol=1e-12, atol=1e-12)
    results, grads = ours
    if not structured and border_type == "geodesic" and origin is None:  # by hand: a flat cross-like dilation
        padded = np.pad(array, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        offsets = [(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0), (1, 1)]  # the kernel's ones, flipped (a dilation)
        expected = np.max([padded[..., 1 - i:7 - i, 1 - j:8 - j] for i, j in offsets], 0)
        np.testing.assert_allclose(results["dilation"], expected)
    # each output pixel's gradient goes to exactly one input pixel, however many tie
    weights = np.linspace(0.5, 1.5, array.size).reshape(array.shape)
    if border_type in ("geodesic", "replicate"):
        np.testing.assert_allclose(grads["dilation"].sum(), weights.sum())


def max_pool_morphology(m, array):
    torch, F = m.torch, m.F
    image = torch.tensor(array).requires_grad_(True)
    dil = F.max_pool2d(image, 3, stride=1, padding=1)
    ero = -F.max_pool2d(-image, 3, stride=1, padding=1)
    opening = F.max_pool2d(-F.max_pool2d(-image, (3, 5), 1, (1, 2)), (3, 5), 1, (1, 2))
    skeleton_step = F.relu(image - opening)
    # the soft skeleton of clDice (Shit et al.): iterated soft erosions by min-pools along each axis
    def soft_erode(img):
        p1 = -F.max_pool2d(-img, (3, 1), (1, 1), (1, 0))
        p2 = -F.max_pool2d(-img, (1, 3), (1, 1), (0, 1))
        return torch.min(p1, p2)

    def soft_dilate(img):
        return F.max_pool2d(img, (3, 3), (1, 1), (1, 1))

    def soft_skel(img, iter_):
        img1 = soft_dilate(soft_erode(img))
        skel = F.relu(img - img1)
        for j in range(iter_):
            img = soft_erode(img)
            img1 = soft_dilate(soft_erode(img))
            delta = F.relu(img - img1)
            skel = skel + F.relu(delta - skel * delta)
        return skel

    skel = soft_skel(image, 3)
    results = [dil, ero, opening, skeleton_step, skel]
    weights = torch.linspace(0.5, 1.5, image.numel(), dtype=image.dtype).view_as(image)
    grads = [torch.autograd.grad((r * weights).sum(), image, retain_graph=True)[0] for r in results]
    return results, grads


def test_max_pool_morphology_and_soft_skeleton():
    array = quantised_image((2, 1, 7, 8), levels=2, seed=9)  # binary: most windows tie
    ours, _ = run_both(max_pool_morphology, array, rtol=1e-12, atol=1e-12)
    results, grads = ours
    np.testing.assert_allclose(grads[0].sum(), np.linspace(0.5, 1.5, array.size).sum())
    assert set(np.unique(results[0])) <= {0.0, 0.5, 1.0}


# ----------------------------------------------------------------------------------------------
# F.pad's reflect / replicate / circular modes on 3-, 4- and 5-D images, asymmetric and with pads as wide as
# the image allows (reflect up to size - 1, circular up to the size), negative pads (cropping) beside
# positive ones, and their gradients (the folded-back edges sum); pixel_shuffle / pixel_unshuffle round trips
# and modules; fold / unfold round trips with stride, dilation and padding, normalised by fold(unfold(ones))
# ----------------------------------------------------------------------------------------------


def padding_modes(m, array, mode, pads):
    torch, F = m.torch, m.F
    x = torch.tensor(array).requires_grad_(True)
    y = F.pad(x, pads, mode=mode)
    weights = torch.linspace(-1, 2, y.numel(), dtype=y.dtype).view_as(y)
    (y * weights).sum().backward()
    return y, x.grad


PAD_CASES = [
    ((2, 3, 7), (3, 6)), ((2, 3, 7), (0, 2)), ((2, 3, 5, 6), (1, 2, 3, 4)), ((2, 3, 5, 6), (5, 5, 4, 4)),
    ((1, 2, 3, 4, 5), (1, 0, 2, 1, 0, 2)), ((1, 2, 3, 4, 5), (4, 4, 3, 3, 2, 2)), ((3, 5, 6), (2, 1, 0, 3)),
    ((2, 3, 5, 6), (2, -1, -2, 3)), ((2, 3, 5, 6), (-3, 4, 2, -4)), ((1, 2, 3, 4, 5), (-2, 3, 0, 0, -1, 2)),
]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,pads", PAD_CASES)
def test_pad_modes_and_their_gradients(mode, shape, pads):
    dims = len(pads) // 2
    sizes = shape[-dims:][::-1]  # pads run from the last dimension
    wide = any(max(p, 0) > (s - 1 if mode == "reflect" else s) for p, s in zip(
        [p for pair in zip(pads[::2], pads[1::2]) for p in pair], [s for s in sizes for _ in (0, 1)]))
    if wide:
        pytest.skip("wider than this mode allows (the refusals are tested below)")
    pairs = [(pads[2 * i], pads[2 * i + 1], sizes[i]) for i in range(dims)]
    if mode == "circular" and any(max(b, a) > s + min(b, a, 0) for b, a, s in pairs):
        pytest.skip("a wrap wider than a crop leaves: PyTorch's circular pad reads memory it has not written")
    array = np.random.default_rng(16).standard_normal(shape)
    ours, _ = run_both(padding_modes, array, mode, pads, rtol=1e-12, atol=1e-12)
    if min(pads) >= 0:  # by hand: NumPy's edge / reflect / wrap padding
        widths = [(0, 0)] * (len(shape) - dims) + [(pads[2 * i], pads[2 * i + 1]) for i in range(dims)][::-1]
        numpy_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
        np.testing.assert_allclose(ours[0], np.pad(array, widths, mode=numpy_mode))


def shuffles(m, array, r):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.tensor(array).requires_grad_(True)
    down = F.pixel_unshuffle(x, r)
    up = F.pixel_shuffle(down * torch.arange(1, down.shape[1] + 1, dtype=x.dtype).view(1, -1, 1, 1), r)
    mods = nn.Sequential(nn.PixelUnshuffle(r), nn.Conv2d(x.shape[-3] * r * r, 4 * r * r, 1), nn.PixelShuffle(r))
    with torch.no_grad():
        for p in mods.parameters():
            p.copy_(torch.linspace(-0.5, 0.5, p.numel(), dtype=p.dtype).view_as(p))
    mods = mods.to(x.dtype)
    out = mods(x)
    (up.pow(2).sum() + out.sin().sum()).backward()
    return down, up, out, x.grad, F.pixel_shuffle(F.pixel_unshuffle(x, r), r)


@pytest.mark.parametrize("shape,r", [((2, 3, 6, 4), 2), ((1, 2, 6, 9), 3), ((2, 5, 2, 3, 4, 4), 2)])
def test_pixel_shuffle_round_trips(shape, r):
    array = np.random.default_rng(17).standard_normal(shape)
    if len(shape) > 4:  # extra batch dimensions: the functional forms only (Conv2d wants 4-D)
        def prog(m, a):
            torch, F = m.torch, m.F
            x = torch.tensor(a).requires_grad_(True)
            y = F.pixel_shuffle(F.pixel_unshuffle(x, r) * 2, r)
            (y * y).sum().backward()
            return F.pixel_unshuffle(x, r), y, x.grad
        ours, _ = run_both(prog, array, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours[1], 2 * array)
        return
    ours, _ = run_both(shuffles, array, r, rtol=1e-10, atol=1e-12)
    down, up, out, grad, back = ours
    np.testing.assert_allclose(back, array)
    b, c, h, w = shape  # by hand: unshuffle moves each r x r block into channels, channel-major
    np.testing.assert_allclose(down[:, :r * r].reshape(b, r, r, h // r, w // r).transpose(0, 3, 1, 4, 2).reshape(
        b, h, w), array[:, 0])


def fold_round_trip(m, array, kernel_size, dilation, padding, stride):
    torch, F = m.torch, m.F
    x = torch.tensor(array).requires_grad_(True)
    H, W = x.shape[-2:]
    kw = dict(kernel_size=kernel_size, dilation=dilation, padding=padding, stride=stride)
    patches = F.unfold(x, **kw)
    # process the patches (a per-patch affine map), then overlap-add and normalise by the coverage
    weights = torch.linspace(0.5, 1.5, patches.shape[1], dtype=x.dtype).view(1, -1, 1)
    folded = F.fold(patches * weights, output_size=(H, W), **kw)
    coverage = F.fold(F.unfold(torch.ones_like(x), **kw), output_size=(H, W), **kw)
    out = folded / coverage.clamp(min=1)
    unfold_module = m.nn.Unfold(**kw)
    fold_module = m.nn.Fold(output_size=(H, W), **kw)
    again = fold_module(unfold_module(x))
    (out.pow(2).sum() + again.sum()).backward()
    return patches, folded, coverage, out, again, x.grad


@pytest.mark.parametrize("kernel_size,dilation,padding,stride", [
    (3, 1, 1, 1), ((2, 3), (2, 1), (1, 0), (1, 2)), (4, 1, 0, 4), ((3, 2), 1, (2, 1), (2, 3))])
def test_fold_unfold_round_trips(kernel_size, dilation, padding, stride):
    array = np.random.default_rng(18).standard_normal((2, 3, 8, 9))
    ours, _ = run_both(fold_round_trip, array, kernel_size, dilation, padding, stride, rtol=1e-12, atol=1e-12)
    patches, folded, coverage, out, again, grad = ours
    np.testing.assert_allclose(again, array * coverage)  # fold(unfold(x)) counts each pixel once per window
    if (kernel_size, stride) == (4, 4):  # tiles: every pixel in at most one window
        assert set(np.unique(coverage)) <= {0.0, 1.0}
