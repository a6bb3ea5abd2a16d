# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: filter2d in every border mode, Gaussian / box / unsharp / Laplacian,
spatial gradients, median blur, Canny (NMS by gather, hysteresis loop), Harris and Shi-Tomasi responses."""

import math

import numpy as np
import pytest

from .probe18_kornia_common import corners, edges, filter2d, gaussian_blur2d, smooth_image, spatial_gradient
from .pytorch_programs import OURS, assert_same, run_both

# ----------------------------------------------------------------------------------------------
# Linear and rank filters as kornia.filters writes them: filter2d (a kernel expanded over channels, F.pad
# in each border mode, a grouped conv2d, 'valid' padding, the 'conv' behaviour's flip), separable Gaussian
# and box blurs, unsharp masking, spatial_gradient (Sobel and 'diff', first and second order, replicate
# padding, channels folded into the batch), the Laplacian, median_blur (a binary kernel by conv2d, then
# median over the window), Canny (atan2 angles rounded to 45°, non-maximum suppression by gather of
# directional differences, hysteresis by a loop of conv2d until nothing changes) and the Harris / Shi-Tomasi
# responses with max_pool2d non-maximum suppression; the image is optimised through the edge maps
# ----------------------------------------------------------------------------------------------


def box_blur(m, input, kernel_size, border_type="reflect"):
    ky, kx = kernel_size
    kernel = m.torch.ones(1, ky, kx, dtype=input.dtype) / (ky * kx)
    return filter2d(m, input, kernel, border_type)


def unsharp_mask(m, input, kernel_size, sigma, border_type="reflect"):
    data_blur = gaussian_blur2d(m, input, kernel_size, sigma, border_type)
    return input + (input - data_blur)


def laplacian(m, input, kernel_size, border_type="reflect", normalized=True):
    torch = m.torch
    kernel = torch.ones(kernel_size, kernel_size, dtype=input.dtype)
    mid = kernel_size // 2
    kernel[mid, mid] = 1 - kernel_size ** 2
    kernel = kernel[None]
    if normalized:
        norm = kernel.abs().sum(dim=-1).sum(dim=-1)
        kernel = kernel / norm.unsqueeze(-1).unsqueeze(-1)
    return filter2d(m, input, kernel, border_type)


def median_blur(m, input, kernel_size):
    torch, F = m.torch, m.F
    ky, kx = kernel_size
    padding = ((ky - 1) // 2, (kx - 1) // 2)
    window_range = kx * ky
    kernel = torch.zeros(window_range, window_range, dtype=input.dtype)
    idx = torch.arange(window_range)
    kernel[idx, idx] += 1.0
    kernel = kernel.view(window_range, 1, ky, kx)
    b, c, h, w = input.shape
    features = F.conv2d(input.reshape(b * c, 1, h, w), kernel, padding=padding, stride=1)
    features = features.view(b, c, ky * kx, h, w)
    return features.median(dim=2)[0]


def canny(m, input, low_threshold=0.1, high_threshold=0.2, kernel_size=(5, 5), sigma=(1.0, 1.0), hysteresis=True,
          eps=1e-6):
    torch, F = m.torch, m.F
    dtype = input.dtype
    if input.shape[1] == 3:
        input = 0.299 * input[:, 0:1] + 0.587 * input[:, 1:2] + 0.114 * input[:, 2:3]
    blurred = gaussian_blur2d(m, input, kernel_size, sigma)
    gradients = spatial_gradient(m, blurred, normalized=False)
    gx = gradients[:, :, 0]
    gy = gradients[:, :, 1]
    magnitude = torch.sqrt(gx * gx + gy * gy + eps)
    angle = torch.atan2(gy, gx)
    angle_45 = (angle * (4 / math.pi)).round()
    nms_kernels = torch.tensor([
        [[[0.0, 0.0, 0.0], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0]]],
        [[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]],
        [[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]],
        [[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]],
        [[[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]],
        [[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]],
        [[[0.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]],
        [[[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]], dtype=dtype)
    nms_magnitude = F.conv2d(magnitude, nms_kernels, padding=nms_kernels.shape[-1] // 2)
    positive_idx = (angle_45 % 8).long()
    negative_idx = ((angle_45 + 4) % 8).long()
    channel_select_filtered_positive = torch.gather(nms_magnitude, 1, positive_idx)
    channel_select_filtered_negative = torch.gather(nms_magnitude, 1, negative_idx)
    channel_select_filtered = torch.stack([channel_select_filtered_positive, channel_select_filtered_negative], 1)
    is_max = channel_select_filtered.min(dim=1)[0] > 0.0
    magnitude = magnitude * is_max
    edges = F.threshold(magnitude, low_threshold, 0.0)
    low = magnitude > low_threshold
    high = magnitude > high_threshold
    edges = low * 0.5 + high * 0.5
    edges = edges.to(dtype)
    rounds = 0
    if hysteresis:
        edges_old = -torch.ones(edges.shape, device=edges.device, dtype=dtype)
        hysteresis_kernels = torch.zeros(8, 1, 3, 3, dtype=dtype)
        for i, (r, c) in enumerate([(1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0), (0, 1), (0, 2)]):
            hysteresis_kernels[i, 0, r, c] = 1.0
        while ((edges_old - edges).abs() != 0).any():
            weak = (edges == 0.5).float()
            strong = (edges == 1).float()
            hysteresis_magnitude = F.conv2d(edges, hysteresis_kernels, padding=hysteresis_kernels.shape[-1] // 2)
            hysteresis_magnitude = (hysteresis_magnitude == 1).any(1, keepdim=True).to(dtype)
            hysteresis_magnitude = hysteresis_magnitude * weak + strong
            edges_old = edges.clone()
            edges = hysteresis_magnitude + (hysteresis_magnitude == 0) * weak * 0.5
            rounds += 1
        edges = hysteresis_magnitude
    return magnitude, edges, rounds


def filtering(m, array, border_type):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    kernel = torch.tensor([[[0.0, 1.0, 0.5], [2.0, -1.0, 0.25], [0.0, 0.5, 1.0], [0.3, 0.2, 0.1]]])
    outs = {
        "filter2d": filter2d(m, image, kernel, border_type),
        "filter2d_conv_normalized": filter2d(m, image, kernel, border_type, normalized=True, behaviour="conv"),
        "filter2d_valid": filter2d(m, image, kernel, border_type, padding="valid"),
        "gaussian": gaussian_blur2d(m, image, (5, 3), (1.5, 0.8), border_type),
        "gaussian_full": gaussian_blur2d(m, image, (4, 3), torch.tensor([[1.5, 0.8], [0.7, 1.2]]).double(),
                                         border_type, separable=False),
        "box": box_blur(m, image, (3, 4), border_type),
        "unsharp": unsharp_mask(m, image, (3, 3), (1.0, 1.0), border_type),
        "laplacian": laplacian(m, image, 3, border_type),
    }
    weights = torch.linspace(-1, 2, image.numel(), dtype=image.dtype)
    grads = {}
    for name, out in outs.items():
        loss = (out.reshape(-1)[: weights.numel()] * weights[: out.numel()]).sum() + out.pow(2).mean()
        grads[name] = torch.autograd.grad(loss, image)[0]
    return outs, grads


@pytest.mark.parametrize("border_type", ["constant", "reflect", "replicate", "circular"])
def test_kornia_filter2d_in_every_border_mode(border_type):
    array = smooth_image((2, 3, 7, 8), seed=3)
    ours, _ = run_both(filtering, array, border_type, rtol=1e-9, atol=1e-11)
    outs, grads = ours
    # by hand: a box blur's interior is the window mean; the blurs of a constant image are the constant
    np.testing.assert_allclose(outs["box"][..., 1:-1, 1:-2], np.mean(
        [array[..., 1 + i:6 + i, j:5 + j] for i in (-1, 0, 1) for j in range(4)], 0), rtol=1e-12)
    flat = filtering(OURS, np.full((2, 2, 5, 6), 0.25), border_type)[0]
    if border_type != "constant":
        for name in ("gaussian", "gaussian_full", "box", "unsharp"):
            np.testing.assert_allclose(flat[name].numpy(), 0.25, rtol=1e-12)


@pytest.mark.parametrize("mode,order,normalized", [("sobel", 1, True), ("sobel", 1, False), ("diff", 1, True),
                                                   ("sobel", 2, True)])
def test_kornia_spatial_gradient(mode, order, normalized):
    array = smooth_image((2, 2, 6, 7), seed=4)
    ours, _ = run_both(edges, array, mode, order, normalized, rtol=1e-9, atol=1e-11)
    if (mode, order) == ("diff", 1):  # by hand: central differences at the interior
        np.testing.assert_allclose(ours[0][:, :, 0, :, 1:-1], (array[..., 2:] - array[..., :-2]) / 2 / 1, rtol=1e-12)


def median_filtering(m, array, kernel_size):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    out = median_blur(m, image, kernel_size)
    (out * torch.linspace(0.5, 2.0, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out, image.grad


@pytest.mark.parametrize("kernel_size", [(3, 3), (3, 5)])
def test_kornia_median_blur(kernel_size):
    array = smooth_image((2, 2, 6, 7), seed=5)  # distinct values: the median's index is unique
    ours, _ = run_both(median_filtering, array, kernel_size, rtol=1e-12, atol=1e-12)
    ky, kx = kernel_size
    padded = np.pad(array, ((0, 0), (0, 0), (ky // 2, ky // 2), (kx // 2, kx // 2)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (ky, kx), axis=(2, 3))
    np.testing.assert_allclose(ours[0], np.median(windows.reshape(*windows.shape[:4], -1), -1), rtol=1e-12)
    # every output but the zero padding's takes its gradient from exactly one input pixel
    weights = np.linspace(0.5, 2.0, array.size).reshape(array.shape)
    assert np.isclose(ours[1].sum(), weights[ours[0] > 0].sum())


def canny_edges(m, array, hysteresis, steps=5):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    magnitude, edges_map, rounds = canny(m, image, 0.1, 0.3, hysteresis=hysteresis)
    magnitude.sum().backward()
    first_grad = image.grad.clone()
    # sharpen the image: gradient ascent on the suppressed edge magnitude (through gather's mask)
    x = torch.tensor(array).requires_grad_(True)
    optimizer = m.optim.SGD([x], lr=0.05, momentum=0.9)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        mag, _, _ = canny(m, x, 0.1, 0.3, hysteresis=False)
        loss = -mag.mean() + 0.1 * (x - torch.tensor(array)).pow(2).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return magnitude, edges_map, rounds, first_grad, history, x.detach()


@pytest.mark.parametrize("hysteresis", [True, False])
def test_kornia_canny(hysteresis):
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[0:12, 0:13]
    disc = ((yy - 5.5) ** 2 + (xx - 6.2) ** 2 < 16).astype(float)
    array = np.stack([disc, 0.5 * disc + 0.1 * rng.uniform(0, 1, disc.shape)])[:, None]  # two grey images
    rgb = np.repeat(array, 3, 1) * np.array([1.0, 0.9, 0.8])[None, :, None, None]
    ours, _ = run_both(canny_edges, rgb, hysteresis, rtol=1e-9, atol=1e-11)
    magnitude, edges_map, rounds, first_grad, history, x = ours
    assert set(np.unique(edges_map)) <= {0.0, 0.5, 1.0} and (edges_map == 1).any()
    if hysteresis:
        assert rounds >= 1 and not (edges_map == 0.5).any()
    assert history[-1] < history[0]


def test_kornia_harris_and_shi_tomasi_corners():
    square = np.zeros((12, 12))
    square[3:9, 4:10] = 1.0
    rng = np.random.default_rng(7)
    array = np.stack([square, square.T * 0.7 + 0.05 * rng.uniform(0, 1, square.shape)])[:, None]
    ours, theirs = run_both(corners, array, compare=False)
    harris, gftt, peaks, mask, grad, top, index = ours
    if theirs is not None:
        assert_same(ours[:6], theirs[:6], 1e-9, 1e-12)
        # the square's corners tie in exact arithmetic: which of two responses equal to 1e-16 topk puts first
        # follows their last bits, so the indices are compared through the responses they pick
        np.testing.assert_allclose(np.take_along_axis(harris.reshape(2, -1), index, 1),
                                   np.take_along_axis(theirs[0].reshape(2, -1), theirs[6], 1), rtol=1e-9)
    # the strongest Harris responses of the square sit near its corners
    rows, cols = np.divmod(index[0], 12)
    assert all(min(abs(r - 3), abs(r - 8)) <= 1 and min(abs(c - 4), abs(c - 9)) <= 1 for r, c in zip(rows, cols))
    assert mask.dtype == bool and mask[0, 0][rows[0], cols[0]]
