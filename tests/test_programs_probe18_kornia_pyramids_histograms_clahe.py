# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: Gaussian and Laplacian pyramids, bilateral / joint bilateral / guided
filters, kernel-density histograms, mutual information, histogram matching, histc / histogram / bucketize, soft
equalisation by Adam; kornia's CLAHE."""

import math

import numpy as np
import pytest

from .probe18_kornia_common import filter2d, gaussian, quantised_image, smooth_image
from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# Pyramids, edge-preserving filters and histograms as kornia writes them: pyrdown / pyrup (a 5x5 binomial
# filter2d, then bilinear interpolate to a size, align_corners both ways), build_pyramid and the Laplacian
# pyramid (padded to a power of two by F.pad reflect) with its reconstruction; bilateral and joint bilateral
# blur (Tensor.unfold twice, flatten, l1 / l2 colour distances, a tensor sigma per image), the guided filter
# (box filters of the mean, variance and covariance); differentiable histograms (kernel density marginal_pdf,
# joint_pdf by matmul, mutual information), histogram matching by sort / searchsorted / gather, and
# torch.histc / torch.histogram / bucketize beside them; a soft-histogram equalisation optimised by Adam
# ----------------------------------------------------------------------------------------------


def pyramid_kernel(m):
    return m.torch.tensor([[[1.0, 4.0, 6.0, 4.0, 1.0], [4.0, 16.0, 24.0, 16.0, 4.0], [6.0, 24.0, 36.0, 24.0, 6.0],
                            [4.0, 16.0, 24.0, 16.0, 4.0], [1.0, 4.0, 6.0, 4.0, 1.0]]]) / 256.0


def pyrdown(m, input, border_type="reflect", align_corners=False, factor=2.0):
    kernel = pyramid_kernel(m)
    _, _, height, width = input.shape
    x_blur = filter2d(m, input, kernel, border_type)
    return m.F.interpolate(x_blur, size=(int(float(height) / factor), int(float(width) // factor)), mode="bilinear",
                           align_corners=align_corners)


def pyrup(m, input, border_type="reflect", align_corners=False):
    kernel = pyramid_kernel(m)
    _, _, height, width = input.shape
    x_up = m.F.interpolate(input, size=(height * 2, width * 2), mode="bilinear", align_corners=align_corners)
    return filter2d(m, x_up, kernel, border_type)


def build_pyramid(m, input, max_level, border_type="reflect", align_corners=False):
    pyramid = [input]
    for _ in range(max_level - 1):
        pyramid.append(pyrdown(m, pyramid[-1], border_type, align_corners))
    return pyramid


def build_laplacian_pyramid(m, input, max_level, border_type="reflect", align_corners=False):
    h, w = input.size()[2], input.size()[3]
    is_powerof_two = lambda x: bool(x) and (not (x & (x - 1)))
    find_next_powerof_two = lambda x: 1 << (x - 1).bit_length()
    require_padding = not (is_powerof_two(w) or is_powerof_two(h))
    if require_padding:
        padding = (0, find_next_powerof_two(w) - w, 0, find_next_powerof_two(h) - h)
        input = m.F.pad(input, padding, "reflect")
    gaussian_pyramid = build_pyramid(m, input, max_level, border_type, align_corners)
    laplacian_pyramid = []
    for i in range(max_level - 1):
        img_expand = pyrup(m, gaussian_pyramid[i + 1], border_type, align_corners)
        laplacian_pyramid.append(gaussian_pyramid[i] - img_expand)
    laplacian_pyramid.append(gaussian_pyramid[-1])
    return laplacian_pyramid


def pyramids(m, array, align_corners, border_type):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    gauss = build_pyramid(m, image, 3, border_type, align_corners)
    lap = build_laplacian_pyramid(m, image, 3, border_type, align_corners)
    # reconstruction: collapse the Laplacian pyramid from the top
    rec = lap[-1]
    for level in reversed(lap[:-1]):
        rec = pyrup(m, rec, border_type, align_corners) + level
    loss = sum((g * (i + 1)).pow(2).mean() for i, g in enumerate(gauss)) + sum(l.abs().mean() for l in lap)
    loss.backward()
    return gauss, lap, rec, image.grad


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("border_type", ["reflect", "replicate"])
def test_kornia_gaussian_and_laplacian_pyramids(align_corners, border_type):
    array = smooth_image((2, 2, 7, 6), seed=19)
    ours, _ = run_both(pyramids, array, align_corners, border_type, rtol=1e-9, atol=1e-11)
    gauss, lap, rec, grad = ours
    assert [g.shape[-2:] for g in gauss] == [(7, 6), (3, 3), (1, 1)]
    assert [l.shape[-2:] for l in lap] == [(8, 8), (4, 4), (2, 2)]  # padded to 8 x 8 first
    np.testing.assert_allclose(rec[..., :7, :6], array, rtol=1e-10)  # the pyramid reconstructs exactly


def bilateral_blur(m, input, guidance, kernel_size, sigma_color, sigma_space, border_type="reflect",
                   color_distance_type="l1"):
    torch, F = m.torch, m.F
    if isinstance(sigma_color, m.torch.Tensor):
        sigma_color = sigma_color.to(device=input.device, dtype=input.dtype).view(-1, 1, 1, 1, 1)
    ky, kx = kernel_size
    pad_y, pad_x = (ky - 1) // 2, (kx - 1) // 2
    padded_input = F.pad(input, (pad_x, pad_x, pad_y, pad_y), mode=border_type)
    unfolded_input = padded_input.unfold(2, ky, 1).unfold(3, kx, 1).flatten(-2)
    if guidance is None:
        guidance = input
        unfolded_guidance = unfolded_input
    else:
        padded_guidance = F.pad(guidance, (pad_x, pad_x, pad_y, pad_y), mode=border_type)
        unfolded_guidance = padded_guidance.unfold(2, ky, 1).unfold(3, kx, 1).flatten(-2)
    diff = unfolded_guidance - guidance.unsqueeze(-1)
    if color_distance_type == "l1":
        color_distance_sq = diff.abs().sum(1, keepdim=True).square()
    else:
        color_distance_sq = diff.square().sum(1, keepdim=True)
    color_kernel = (-0.5 / sigma_color ** 2 * color_distance_sq).exp()
    sigma = torch.tensor([sigma_space], dtype=input.dtype)
    kernel_y = gaussian(m, ky, sigma[:, 0].view(1, 1), input.dtype)
    kernel_x = gaussian(m, kx, sigma[:, 1].view(1, 1), input.dtype)
    space_kernel = (kernel_y.unsqueeze(-1) * kernel_x.unsqueeze(-2)).view(-1, 1, 1, 1, kx * ky)
    kernel = space_kernel * color_kernel
    return (unfolded_input * kernel).sum(-1) / kernel.sum(-1)


def box_filter(m, x, r):
    """The guided filter's box filter as He et al.'s PyTorch port writes it: cumulative sums and differences."""
    torch = m.torch

    def diff_x(input, r):
        left = input[:, :, r:2 * r + 1]
        middle = input[:, :, 2 * r + 1:] - input[:, :, :-2 * r - 1]
        right = input[:, :, -1:] - input[:, :, -2 * r - 1:-r - 1]
        return torch.cat([left, middle, right], dim=2)

    def diff_y(input, r):
        left = input[:, :, :, r:2 * r + 1]
        middle = input[:, :, :, 2 * r + 1:] - input[:, :, :, :-2 * r - 1]
        right = input[:, :, :, -1:] - input[:, :, :, -2 * r - 1:-r - 1]
        return torch.cat([left, middle, right], dim=3)

    return diff_y(diff_x(x.cumsum(dim=2), r).cumsum(dim=3), r)


def guided_filter(m, x, y, r, eps):
    torch = m.torch
    n_x, c_x, h_x, w_x = x.size()
    N = box_filter(m, x.data.new().resize_((1, 1, h_x, w_x)).fill_(1.0), r)
    mean_x = box_filter(m, x, r) / N
    mean_y = box_filter(m, y, r) / N
    cov_xy = box_filter(m, x * y, r) / N - mean_x * mean_y
    var_x = box_filter(m, x * x, r) / N - mean_x * mean_x
    A = cov_xy / (var_x + eps)
    b = mean_y - A * mean_x
    mean_A = box_filter(m, A, r) / N
    mean_b = box_filter(m, b, r) / N
    return mean_A * x + mean_b


def edge_preserving(m, array, guide_array, distance):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    guide = torch.tensor(guide_array).requires_grad_(True)
    sigma_color = torch.tensor([0.1, 0.3], dtype=image.dtype, requires_grad=True)
    bil = bilateral_blur(m, image, None, (5, 3), sigma_color, (1.5, 1.0), color_distance_type=distance)
    joint = bilateral_blur(m, image, guide, (3, 3), 0.2, (1.0, 1.0), border_type="replicate",
                           color_distance_type=distance)
    guided = guided_filter(m, guide[:, :1], image, 1, 1e-2)
    loss = bil.pow(2).sum() + (joint * guided).sum()
    grads = torch.autograd.grad(loss, (image, guide, sigma_color))
    return bil, joint, guided, grads


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_kornia_bilateral_and_guided_filters(distance):
    array = quantised_image((2, 3, 6, 7), levels=4, seed=20)  # ties: colour differences of exactly 0
    guide = smooth_image((2, 3, 6, 7), seed=21)
    ours, _ = run_both(edge_preserving, array, guide, distance, rtol=1e-9, atol=1e-11)
    bil, joint, guided, grads = ours
    # a constant image is left unchanged by every filter
    flat = edge_preserving(OURS, np.full((2, 3, 6, 7), 0.4), guide, distance)
    for out in flat[:2]:
        np.testing.assert_allclose(out.detach().numpy(), 0.4, rtol=1e-12)


def marginal_pdf(m, values, bins, sigma, epsilon=1e-10):
    torch = m.torch
    residuals = values - bins.unsqueeze(0).unsqueeze(0)
    kernel_values = torch.exp(-0.5 * (residuals / sigma).pow(2))
    pdf = torch.mean(kernel_values, dim=1)
    normalization = torch.sum(pdf, dim=1).unsqueeze(1) + epsilon
    pdf = pdf / normalization
    return pdf, kernel_values


def joint_pdf(m, kernel_values1, kernel_values2, epsilon=1e-10):
    torch = m.torch
    joint_kernel_values = torch.matmul(kernel_values1.transpose(1, 2), kernel_values2)
    normalization = torch.sum(joint_kernel_values, dim=(1, 2)).view(-1, 1, 1) + epsilon
    return joint_kernel_values / normalization


def histograms(m, array, other_array):
    torch = m.torch
    x = torch.tensor(array).requires_grad_(True)
    y = torch.tensor(other_array)
    bins = torch.linspace(0, 1, 16, dtype=x.dtype)
    bandwidth = torch.tensor(0.05, dtype=x.dtype)
    flat_x, flat_y = x.flatten(1), y.flatten(1)
    pdf, kx = marginal_pdf(m, flat_x.unsqueeze(2), bins, bandwidth)
    pdf_y, ky = marginal_pdf(m, flat_y.unsqueeze(2), bins, bandwidth)
    joint = joint_pdf(m, kx, ky)
    eps = 1e-10
    mi = (joint * (torch.log(joint + eps) - torch.log(pdf.unsqueeze(2) * pdf_y.unsqueeze(1) + eps))).sum((1, 2))
    entropy = -(pdf * torch.log(pdf + eps)).sum(1)
    (mi.sum() - 0.5 * entropy.sum()).backward()
    # histogram matching: each pixel takes the reference value of its rank (sort, argsort, gather)
    src = flat_x.detach()
    sorted_ref, _ = torch.sort(flat_y, dim=1)
    ranks = src.argsort(dim=1).argsort(dim=1)
    matched = torch.gather(sorted_ref, 1, ranks)
    # CDF matching through searchsorted: quantiles of the source looked up in the reference's sorted values
    quantiles = (torch.arange(src.shape[1], dtype=src.dtype) + 0.5) / src.shape[1]
    ref_cdf = quantiles.expand_as(sorted_ref).contiguous()
    position = torch.searchsorted(torch.sort(src, dim=1)[0], src.contiguous(), right=True)
    hard = [torch.histc(src[i], bins=8, min=0, max=1) for i in range(src.shape[0])]
    hist, edges = torch.histogram(src[0], bins=8, range=(0.0, 1.0), density=True)
    weighted, _ = torch.histogram(src[1], bins=torch.linspace(0, 1, 5, dtype=src.dtype), weight=src[0])
    buckets = torch.bucketize(src, torch.linspace(0, 1, 9, dtype=src.dtype), right=False)
    return pdf, joint, mi, entropy, x.grad, matched, position, torch.stack(hard), hist, edges, weighted, buckets


def test_kornia_soft_histograms_and_matching():
    array = smooth_image((2, 1, 5, 6), seed=22)
    other = smooth_image((2, 1, 5, 6), seed=23) ** 2
    array[0, 0, 0, :3] = [0.0, 0.5, 1.0]  # on bin edges
    ours, _ = run_both(histograms, array, other, rtol=1e-9, atol=1e-11)
    pdf, joint, mi, entropy, grad, matched, position, hard, hist, edges, weighted, buckets = ours
    np.testing.assert_allclose(pdf.sum(1), 1.0, rtol=1e-8)
    np.testing.assert_allclose(np.sort(matched, 1), np.sort(other.reshape(2, -1), 1))
    np.testing.assert_allclose(hard.sum(1), 30)
    np.testing.assert_allclose(hard[0], np.histogram(array[0].ravel(), bins=8, range=(0, 1))[0])


def soft_equalisation(m, array, steps=20):
    """Gradient descent on the pixels so their soft histogram becomes flat, with a total-variation prior."""
    torch = m.torch
    x = torch.tensor(array).requires_grad_(True)
    bins = torch.linspace(0, 1, 8, dtype=x.dtype)
    optimizer = m.optim.Adam([x], lr=0.02)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        pdf, _ = marginal_pdf(m, x.flatten(1).unsqueeze(2).clamp(0, 1), bins, torch.tensor(0.08, dtype=x.dtype))
        flatness = (pdf - 1.0 / bins.numel()).pow(2).sum()
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
        loss = flatness + 0.01 * tv
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, x.detach()


def test_soft_histogram_equalisation_by_gradient_descent():
    array = 0.3 + 0.2 * smooth_image((2, 1, 6, 6), seed=24)  # a low-contrast image
    ours, _ = run_both(soft_equalisation, array, rtol=1e-8, atol=1e-10)
    assert ours[0][-1] < ours[0][0]


# ----------------------------------------------------------------------------------------------
# kornia's CLAHE (equalize_clahe), as kornia writes it: tiles by Tensor.unfold over channels, rows and
# columns (reflect-padded to whole tiles), per-tile histograms by torch.histc or the differentiable kernel
# histogram, clipped and redistributed in place (clamp_, remainder, a boolean added to a float), cumulative
# LUTs, the LUT table assembled by strided writes (0::gh-1) and advanced indexing with repeated index
# tensors, a gather of the LUTs at the pixel codes, and bilinear blending of neighbouring tiles by addcmul
# ----------------------------------------------------------------------------------------------


def compute_tiles(m, imgs, grid_size, even_tile_size=False):
    F = m.F
    batch = imgs
    h, w = batch.shape[-2:]
    kernel_vert = math.ceil(h / grid_size[0])
    kernel_horz = math.ceil(w / grid_size[1])
    if even_tile_size:
        kernel_vert += 1 if kernel_vert % 2 else 0
        kernel_horz += 1 if kernel_horz % 2 else 0
    pad_vert = kernel_vert * grid_size[0] - h
    pad_horz = kernel_horz * grid_size[1] - w
    if pad_vert > 0 or pad_horz > 0:
        batch = F.pad(batch, [0, pad_horz, 0, pad_vert], mode="reflect")
    c = batch.shape[-3]
    tiles = (batch.unfold(1, c, c).unfold(2, kernel_vert, kernel_vert).unfold(3, kernel_horz, kernel_horz)
             .squeeze(1)).contiguous()
    return tiles, batch


def compute_interpolation_tiles(m, padded_imgs, tile_size):
    interp_kernel_vert = tile_size[0] // 2
    interp_kernel_horz = tile_size[1] // 2
    c = padded_imgs.shape[-3]
    return (padded_imgs.unfold(1, c, c).unfold(2, interp_kernel_vert, interp_kernel_vert)
            .unfold(3, interp_kernel_horz, interp_kernel_horz).squeeze(1)).contiguous()


def compute_luts(m, tiles_x_im, num_bins=256, clip=40.0, diff=False):
    torch = m.torch
    b, gh, gw, c, th, tw = tiles_x_im.shape
    pixels = th * tw
    tiles = tiles_x_im.view(-1, pixels)
    if not diff:
        histos = torch.stack(list(map(lambda t, n: torch.histc(t, bins=n, min=0, max=1), tiles,
                                      [num_bins] * len(tiles))))
    else:
        bins = torch.linspace(0, 1, num_bins, device=tiles.device, dtype=tiles.dtype)
        histos = marginal_pdf(m, tiles.unsqueeze(2), bins, torch.tensor(0.001, dtype=tiles.dtype))[0].squeeze()
        histos *= pixels
    if clip > 0.0:
        max_val = max(clip * pixels // num_bins, 1)
        histos.clamp_(max=max_val)
        clipped = pixels - histos.sum(1)
        residual = torch.remainder(clipped, num_bins)
        redist = (clipped - residual).div(num_bins)
        histos += redist[None].transpose(0, 1)
        v_range = torch.arange(num_bins, device=histos.device)
        mat_range = v_range.repeat(histos.shape[0], 1)
        histos += mat_range < residual[None].transpose(0, 1)
    lut_scale = (num_bins - 1) / pixels
    luts = torch.cumsum(histos, 1) * lut_scale
    luts = luts.clamp(0, num_bins - 1)
    if not diff:
        luts = luts.floor()
    return luts.view((b, gh, gw, c, num_bins))


def map_luts(m, interp_tiles, luts):
    torch = m.torch
    num_imgs, gh, gw, c, _, _ = interp_tiles.shape
    j_idxs = torch.empty(0, 4, dtype=torch.long)
    if gh > 2:
        j_floor = torch.arange(1, gh - 1).view(gh - 2, 1).div(2, rounding_mode="trunc")
        j_idxs = torch.tensor([[0, 0, 1, 1], [-1, -1, 0, 0]] * ((gh - 2) // 2))
        j_idxs += j_floor
    i_idxs = torch.empty(0, 4, dtype=torch.long)
    if gw > 2:
        i_floor = torch.arange(1, gw - 1).view(gw - 2, 1).div(2, rounding_mode="trunc")
        i_idxs = torch.tensor([[0, 1, 0, 1], [-1, 0, -1, 0]] * ((gw - 2) // 2))
        i_idxs += i_floor
    luts_x_interp_tiles = torch.full((num_imgs, gh, gw, 4, c, luts.shape[-1]), -1, dtype=interp_tiles.dtype,
                                     device=interp_tiles.device)
    luts_x_interp_tiles[:, 0::gh - 1, 0::gw - 1, 0] = luts[:, 0::max(gh // 2 - 1, 1), 0::max(gw // 2 - 1, 1)]
    luts_x_interp_tiles[:, 1:-1, 0::gw - 1, 0] = luts[:, j_idxs[:, 0], 0::max(gw // 2 - 1, 1)]
    luts_x_interp_tiles[:, 1:-1, 0::gw - 1, 1] = luts[:, j_idxs[:, 2], 0::max(gw // 2 - 1, 1)]
    luts_x_interp_tiles[:, 0::gh - 1, 1:-1, 0] = luts[:, 0::max(gh // 2 - 1, 1), i_idxs[:, 0]]
    luts_x_interp_tiles[:, 0::gh - 1, 1:-1, 1] = luts[:, 0::max(gh // 2 - 1, 1), i_idxs[:, 1]]
    luts_x_interp_tiles[:, 1:-1, 1:-1, :] = luts[
        :, j_idxs.repeat(max(gh - 2, 1), 1, 1).permute(1, 0, 2), i_idxs.repeat(max(gw - 2, 1), 1, 1)]
    return luts_x_interp_tiles


def compute_equalized_tiles(m, interp_tiles, luts):
    torch = m.torch
    mapped_luts = map_luts(m, interp_tiles, luts)
    num_imgs, gh, gw, c, th, tw = interp_tiles.shape
    flatten_interp_tiles = (interp_tiles * 255).long().flatten(-2, -1)
    flatten_interp_tiles = flatten_interp_tiles.unsqueeze(-3).expand(num_imgs, gh, gw, 4, c, th * tw)
    preinterp_tiles_equalized = (torch.gather(mapped_luts, 5, flatten_interp_tiles).to(interp_tiles)
                                 .reshape(num_imgs, gh, gw, 4, c, th, tw))
    tiles_equalized = torch.zeros_like(interp_tiles)
    ih = (torch.arange(2 * th - 1, -1, -1, dtype=interp_tiles.dtype).div(2.0 * th - 1)[None].transpose(-2, -1)
          .expand(2 * th, tw))
    ih = ih.unfold(0, th, th).unfold(1, tw, tw)
    iw = torch.arange(2 * tw - 1, -1, -1, dtype=interp_tiles.dtype).div(2.0 * tw - 1).expand(th, 2 * tw)
    iw = iw.unfold(0, th, th).unfold(1, tw, tw)
    tiw = iw.expand((gw - 2) // 2, 2, th, tw).reshape(gw - 2, 1, th, tw).unsqueeze(0)
    tih = ih.repeat((gh - 2) // 2, 1, 1, 1).unsqueeze(1)
    tl, tr, bl, br = preinterp_tiles_equalized[:, 1:-1, 1:-1].unbind(3)
    t = torch.addcmul(tr, tiw, torch.sub(tl, tr))
    b = torch.addcmul(br, tiw, torch.sub(bl, br))
    tiles_equalized[:, 1:-1, 1:-1] = torch.addcmul(b, tih, torch.sub(t, b))
    tiles_equalized[:, 0::gh - 1, 0::gw - 1] = preinterp_tiles_equalized[:, 0::gh - 1, 0::gw - 1, 0]
    t, b, _, _ = preinterp_tiles_equalized[:, 1:-1, 0].unbind(2)
    tiles_equalized[:, 1:-1, 0] = torch.addcmul(b, tih.squeeze(1), torch.sub(t, b))
    t, b, _, _ = preinterp_tiles_equalized[:, 1:-1, gh - 1].unbind(2)
    tiles_equalized[:, 1:-1, gh - 1] = torch.addcmul(b, tih.squeeze(1), torch.sub(t, b))
    left, right, _, _ = preinterp_tiles_equalized[:, 0, 1:-1].unbind(2)
    tiles_equalized[:, 0, 1:-1] = torch.addcmul(right, tiw, torch.sub(left, right))
    left, right, _, _ = preinterp_tiles_equalized[:, gw - 1, 1:-1].unbind(2)
    tiles_equalized[:, gw - 1, 1:-1] = torch.addcmul(right, tiw, torch.sub(left, right))
    return tiles_equalized.div(255.0)


def equalize_clahe(m, imgs, clip_limit=40.0, grid_size=(8, 8), slow_and_differentiable=False):
    hist_tiles, img_padded = compute_tiles(m, imgs, grid_size, True)
    tile_size = (hist_tiles.shape[-2], hist_tiles.shape[-1])
    interp_tiles = compute_interpolation_tiles(m, img_padded, tile_size)
    luts = compute_luts(m, hist_tiles, clip=clip_limit, diff=slow_and_differentiable)
    equalized_tiles = compute_equalized_tiles(m, interp_tiles, luts)
    eq_imgs = equalized_tiles.permute(0, 3, 1, 4, 2, 5).reshape_as(img_padded)
    h, w = imgs.shape[-2:]
    return eq_imgs[..., :h, :w]


def clahe_program(m, array, grid_size, clip, differentiable):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(differentiable)
    out = equalize_clahe(m, image, clip, grid_size, slow_and_differentiable=differentiable)
    grad = torch.autograd.grad(out.pow(2).sum(), image)[0] if differentiable else None
    return out, grad


@pytest.mark.parametrize("grid_size,clip,differentiable", [((2, 2), 40.0, False), ((3, 3), 2.0, False),
                                                          ((2, 2), 4.0, True), ((4, 4), 0.0, False)])
def test_kornia_clahe(grid_size, clip, differentiable):
    array = smooth_image((2, 3, 10, 13), seed=28) ** 2
    dtype_tol = dict(rtol=1e-9, atol=1e-9) if differentiable else dict(rtol=0, atol=1e-12)
    ours, _ = run_both(clahe_program, array, grid_size, clip, differentiable, **dtype_tol)
    out, grad = ours
    assert out.shape == array.shape and np.isfinite(out).all()
