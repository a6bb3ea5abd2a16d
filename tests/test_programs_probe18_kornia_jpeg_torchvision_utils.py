# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: images encoded and drawn: differentiable JPEG; torchvision.utils
(make_grid, draw_segmentation_masks, flow_to_image)."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Differentiable JPEG (DiffJPEG, as its authors write it): RGB -> YCbCr by tensordot(dims=1) with Parameter
# matrices, chroma subsampling by AvgPool2d(count_include_pad=False), 8x8 block splitting by view / permute /
# contiguous, the DCT as tensordot(dims=2) with a 4-D cosine tensor, quality-scaled quantisation tables,
# the cubic straight-through rounding round(x) + (x - round(x))^3, and the inverse path (repeat + view
# chroma upsampling, block merging); an image optimised through the codec so its JPEG matches a target
# ----------------------------------------------------------------------------------------------

Y_TABLE = np.array([[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
                    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
                    [18, 22, 37, 56, 68, 109, 103, 77],
                    [24, 35, 55, 64, 81, 104, 113, 92], [49, 64, 78, 87, 103, 121, 120, 101],
                    [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.float32).T
C_TABLE = np.full((8, 8), 99, dtype=np.float32)
C_TABLE[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]).T


def diff_jpeg(m, quality=75):
    torch, nn = m.torch, m.nn
    import itertools

    def diff_round(x):
        return torch.round(x) + (x - torch.round(x)) ** 3

    def quality_to_factor(quality):
        if quality < 50:
            quality = 5000. / quality
        else:
            quality = 200. - quality * 2
        return quality / 100.

    class RgbToYcbcrJpeg(nn.Module):
        def __init__(self):
            super().__init__()
            matrix = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                              dtype=np.float32).T
            self.shift = nn.Parameter(torch.tensor([0., 128., 128.]))
            self.matrix = nn.Parameter(torch.from_numpy(matrix))

        def forward(self, image):
            image = image.permute(0, 2, 3, 1)
            result = torch.tensordot(image, self.matrix, dims=1) + self.shift
            result.view(image.shape)
            return result

    class ChromaSubsampling(nn.Module):
        def forward(self, image):
            image_2 = image.permute(0, 3, 1, 2).clone()
            avg_pool = nn.AvgPool2d(kernel_size=2, stride=(2, 2), count_include_pad=False)
            cb = avg_pool(image_2[:, 1, :, :].unsqueeze(1))
            cr = avg_pool(image_2[:, 2, :, :].unsqueeze(1))
            cb = cb.permute(0, 2, 3, 1)
            cr = cr.permute(0, 2, 3, 1)
            return image[:, :, :, 0], cb.squeeze(3), cr.squeeze(3)

    class BlockSplitting(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = 8

        def forward(self, image):
            height, width = image.shape[1:3]
            batch_size = image.shape[0]
            image_reshaped = image.view(batch_size, height // self.k, self.k, -1, self.k)
            image_transposed = image_reshaped.permute(0, 1, 3, 2, 4)
            return image_transposed.contiguous().view(batch_size, -1, self.k, self.k)

    class DCT8x8(nn.Module):
        def __init__(self):
            super().__init__()
            tensor = np.zeros((8, 8, 8, 8), dtype=np.float32)
            for x, y, u, v in itertools.product(range(8), repeat=4):
                tensor[x, y, u, v] = np.cos((2 * x + 1) * u * np.pi / 16) * np.cos((2 * y + 1) * v * np.pi / 16)
            alpha = np.array([1. / np.sqrt(2)] + [1] * 7)
            self.tensor = nn.Parameter(torch.from_numpy(tensor).float())
            self.scale = nn.Parameter(torch.from_numpy(np.outer(alpha, alpha) * 0.25).float())

        def forward(self, image):
            image = image - 128
            result = self.scale * torch.tensordot(image, self.tensor, dims=2)
            result.view(image.shape)
            return result

    class Quantize(nn.Module):
        def __init__(self, table, rounding, factor=1):
            super().__init__()
            self.rounding = rounding
            self.factor = factor
            self.table = nn.Parameter(torch.from_numpy(table.copy()))

        def forward(self, image):
            image = image.float() / (self.table * self.factor)
            return self.rounding(image)

    class Dequantize(nn.Module):
        def __init__(self, table, factor=1):
            super().__init__()
            self.factor = factor
            self.table = nn.Parameter(torch.from_numpy(table.copy()))

        def forward(self, image):
            return image * (self.table * self.factor)

    class IDCT8x8(nn.Module):
        def __init__(self):
            super().__init__()
            alpha = np.array([1. / np.sqrt(2)] + [1] * 7)
            self.alpha = nn.Parameter(torch.from_numpy(np.outer(alpha, alpha)).float())
            tensor = np.zeros((8, 8, 8, 8), dtype=np.float32)
            for x, y, u, v in itertools.product(range(8), repeat=4):
                tensor[x, y, u, v] = np.cos((2 * u + 1) * x * np.pi / 16) * np.cos((2 * v + 1) * y * np.pi / 16)
            self.tensor = nn.Parameter(torch.from_numpy(tensor).float())

        def forward(self, image):
            image = image * self.alpha
            result = 0.25 * torch.tensordot(image, self.tensor, dims=2) + 128
            result.view(image.shape)
            return result

    class BlockMerging(nn.Module):
        def forward(self, patches, height, width):
            k = 8
            batch_size = patches.shape[0]
            image_reshaped = patches.view(batch_size, height // k, width // k, k, k)
            image_transposed = image_reshaped.permute(0, 1, 3, 2, 4)
            return image_transposed.contiguous().view(batch_size, height, width)

    class ChromaUpsampling(nn.Module):
        def forward(self, y, cb, cr):
            def repeat(x, k=2):
                height, width = x.shape[1:3]
                x = x.unsqueeze(-1)
                x = x.repeat(1, 1, k, k)
                return x.view(-1, height * k, width * k)
            cb = repeat(cb)
            cr = repeat(cr)
            return torch.cat([y.unsqueeze(3), cb.unsqueeze(3), cr.unsqueeze(3)], dim=3)

    class YcbcrToRgbJpeg(nn.Module):
        def __init__(self):
            super().__init__()
            matrix = np.array([[1., 0., 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]], dtype=np.float32).T
            self.shift = nn.Parameter(torch.tensor([0, -128., -128.]))
            self.matrix = nn.Parameter(torch.from_numpy(matrix))

        def forward(self, image):
            result = torch.tensordot(image + self.shift, self.matrix, dims=1)
            result.view(image.shape)
            return result.permute(0, 3, 1, 2)

    class DiffJPEG(nn.Module):
        def __init__(self, height, width, differentiable=True, quality=80):
            super().__init__()
            rounding = diff_round if differentiable else torch.round
            factor = quality_to_factor(quality)
            self.l1 = nn.Sequential(RgbToYcbcrJpeg(), ChromaSubsampling())
            self.l2 = nn.Sequential(BlockSplitting(), DCT8x8())
            self.c_quantize = Quantize(C_TABLE, rounding=rounding, factor=factor)
            self.y_quantize = Quantize(Y_TABLE, rounding=rounding, factor=factor)
            self.c_dequantize = Dequantize(C_TABLE, factor=factor)
            self.y_dequantize = Dequantize(Y_TABLE, factor=factor)
            self.idct = IDCT8x8()
            self.merging = BlockMerging()
            self.chroma = ChromaUpsampling()
            self.colors = YcbcrToRgbJpeg()
            self.height, self.width = height, width

        def forward(self, x):
            y, cb, cr = self.l1(x * 255)
            components = {'y': y, 'cb': cb, 'cr': cr}
            for k in components.keys():
                comp = self.l2(components[k])
                if k in ('cb', 'cr'):
                    comp = self.c_quantize(comp)
                else:
                    comp = self.y_quantize(comp)
                components[k] = comp
            for k in ('y', 'cb', 'cr'):
                comp = components[k]
                comp = self.c_dequantize(comp) if k in ('cb', 'cr') else self.y_dequantize(comp)
                comp = self.idct(comp)
                if k in ('cb', 'cr'):
                    height, width = int(self.height / 2), int(self.width / 2)
                else:
                    height, width = self.height, self.width
                components[k] = self.merging(comp, height, width)
            image = self.chroma(components['y'], components['cb'], components['cr'])
            image = self.colors(image)
            image = torch.min(255 * torch.ones_like(image), torch.max(torch.zeros_like(image), image))
            return image / 255

    return DiffJPEG(16, 16, quality=quality)


def jpeg_program(m, array, target_array, quality, steps=4):
    torch = m.torch
    codec = diff_jpeg(m, quality).requires_grad_(False)
    image = torch.tensor(array, dtype=torch.float32)
    decoded = codec(image)
    x = image.clone().requires_grad_(True)
    target = torch.tensor(target_array, dtype=torch.float32)
    optimizer = m.optim.Adam([x], lr=0.02)
    history, first_grad = [], None
    for step in range(steps):
        optimizer.zero_grad()
        loss = (codec(x.clamp(0, 1)) - target).pow(2).mean()
        loss.backward()
        first_grad = x.grad.clone() if first_grad is None else first_grad
        optimizer.step()
        history.append(loss.item())
    # (the pixels after the steps are not compared: in float32 a coefficient near a rounding step may round
    # either way after a few updates, and the codec's value jumps there)
    return decoded, history, first_grad


@pytest.mark.parametrize("quality", [30, 80])
def test_differentiable_jpeg(quality):
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    image = np.stack([0.5 + 0.4 * np.sin(4 * xx + c) * np.cos(3 * yy - c) for c in range(3)])[None].repeat(2, 0)
    image[1] = image[1, ::-1]
    target = np.clip(image + 0.05, 0, 1)
    ours, _ = run_both(jpeg_program, image.copy(), target, quality, rtol=2e-4, atol=2e-5)
    decoded, history, first_grad = ours
    assert np.abs(decoded - image).mean() < 0.05 and history[-1] < history[0]


# ----------------------------------------------------------------------------------------------
# torchvision.utils as torchvision writes it, under torch.no_grad: make_grid (new_full, narrow().narrow().copy_
# into the grid, in-place clamp_ / sub_ / div_ normalisation of each image in a loop over the batch), the
# save_image conversion (mul, add_(0.5), clamp_, permute, to uint8); draw_segmentation_masks (a palette of
# 0-d tensors in a tuple made a uint8 tensor, boolean-mask writes img[:, mask] = color[:, None], uint8 times
# a float); flow_to_image (the Middlebury colour wheel by floor of aranges, atan2, indices wrapped by a
# boolean write, two-index gathers from the wheel)
# ----------------------------------------------------------------------------------------------


def make_grid(m, tensor, nrow=8, padding=2, normalize=False, value_range=None, scale_each=False, pad_value=0):
    torch = m.torch
    if isinstance(tensor, list):
        tensor = torch.stack(tensor, dim=0)
    if tensor.dim() == 4 and tensor.size(1) == 1:
        tensor = torch.cat((tensor, tensor, tensor), 1)
    if normalize is True:
        tensor = tensor.clone()

        def norm_ip(img, low, high):
            img.clamp_(min=low, max=high)
            img.sub_(low).div_(max(high - low, 1e-5))

        def norm_range(t, value_range):
            if value_range is not None:
                norm_ip(t, value_range[0], value_range[1])
            else:
                norm_ip(t, float(t.min()), float(t.max()))

        if scale_each is True:
            for t in tensor:
                norm_range(t, value_range)
        else:
            norm_range(tensor, value_range)
    nmaps = tensor.size(0)
    xmaps = min(nrow, nmaps)
    ymaps = int(math.ceil(float(nmaps) / xmaps))
    height, width = int(tensor.size(2) + padding), int(tensor.size(3) + padding)
    num_channels = tensor.size(1)
    grid = tensor.new_full((num_channels, height * ymaps + padding, width * xmaps + padding), pad_value)
    k = 0
    for y in range(ymaps):
        for x in range(xmaps):
            if k >= nmaps:
                break
            grid.narrow(1, y * height + padding, height - padding).narrow(2, x * width + padding,
                                                                          width - padding).copy_(tensor[k])
            k = k + 1
    return grid


def draw_segmentation_masks(m, image, masks, alpha=0.8, colors=None):
    torch = m.torch
    if masks.ndim == 2:
        masks = masks[None, :, :]
    num_masks = masks.size()[0]
    if colors is None:
        palette = torch.tensor([2 ** 25 - 1, 2 ** 15 - 1, 2 ** 21 - 1])
        colors = [tuple((i * palette) % 255) for i in range(num_masks)]
    out_dtype = torch.uint8
    colors_ = [torch.tensor(color, dtype=out_dtype) for color in colors]
    img_to_draw = image.detach().clone()
    for mask, color in zip(masks, colors_):
        img_to_draw[:, mask] = color[:, None]
    out = image * (1 - alpha) + img_to_draw * alpha
    return out.to(out_dtype)


def flow_to_image(m, flow):
    torch = m.torch

    def make_colorwheel():
        RY, YG, GC, CB, BM, MR = 15, 6, 4, 11, 13, 6
        ncols = RY + YG + GC + CB + BM + MR
        colorwheel = torch.zeros((ncols, 3))
        col = 0
        colorwheel[0:RY, 0] = 255
        colorwheel[0:RY, 1] = torch.floor(255 * torch.arange(0, RY) / RY)
        col = col + RY
        colorwheel[col:col + YG, 0] = 255 - torch.floor(255 * torch.arange(0, YG) / YG)
        colorwheel[col:col + YG, 1] = 255
        col = col + YG
        colorwheel[col:col + GC, 1] = 255
        colorwheel[col:col + GC, 2] = torch.floor(255 * torch.arange(0, GC) / GC)
        col = col + GC
        colorwheel[col:col + CB, 1] = 255 - torch.floor(255 * torch.arange(CB) / CB)
        colorwheel[col:col + CB, 2] = 255
        col = col + CB
        colorwheel[col:col + BM, 2] = 255
        colorwheel[col:col + BM, 0] = torch.floor(255 * torch.arange(0, BM) / BM)
        col = col + BM
        colorwheel[col:col + MR, 2] = 255 - torch.floor(255 * torch.arange(MR) / MR)
        colorwheel[col:col + MR, 0] = 255
        return colorwheel

    def normalized_flow_to_image(normalized_flow):
        N, _, H, W = normalized_flow.shape
        flow_image = torch.zeros((N, 3, H, W), dtype=torch.uint8)
        colorwheel = make_colorwheel()
        num_cols = colorwheel.shape[0]
        norm = torch.sum(normalized_flow ** 2, dim=1).sqrt()
        a = torch.atan2(-normalized_flow[:, 1, :, :], -normalized_flow[:, 0, :, :]) / torch.pi
        fk = (a + 1) / 2 * (num_cols - 1)
        k0 = torch.floor(fk).to(torch.long)
        k1 = k0 + 1
        k1[k1 == num_cols] = 0
        f = fk - k0
        for c in range(colorwheel.shape[1]):
            tmp = colorwheel[:, c]
            col0 = tmp[k0] / 255.0
            col1 = tmp[k1] / 255.0
            col = (1 - f) * col0 + f * col1
            col = 1 - norm * (1 - col)
            flow_image[:, c, :, :] = torch.floor(255 * col)
        return flow_image

    if flow.ndim == 3:
        flow = flow[None]
    max_norm = torch.sum(flow ** 2, dim=1).sqrt().max()
    epsilon = torch.finfo(flow.dtype).eps
    normalized_flow = flow / (max_norm + epsilon)
    return normalized_flow_to_image(normalized_flow)


def torchvision_utils(m, images_array, masks_array, flow_array):
    torch = m.torch
    with torch.no_grad():
        images = torch.tensor(images_array)
        grids = [make_grid(m, images, nrow=3), make_grid(m, images, nrow=2, padding=1, normalize=True),
                 make_grid(m, images[:, :1], nrow=4, normalize=True, scale_each=True, pad_value=1),
                 make_grid(m, list(images), normalize=True, value_range=(-0.5, 0.5))]
        saved = [g.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8) for g in grids]
        image_u8 = saved[0][:10, :12].permute(2, 0, 1).contiguous()
        masks = torch.tensor(masks_array)
        drawn = draw_segmentation_masks(m, image_u8, masks)
        drawn_colours = draw_segmentation_masks(m, image_u8, masks[0], alpha=0.3, colors=[(240, 10, 157)])
        flow_image = flow_to_image(m, torch.tensor(flow_array, dtype=torch.float32))
    return grids, saved, drawn, drawn_colours, flow_image


def test_torchvision_utils_grid_masks_and_flow_images():
    rng = np.random.default_rng(36)
    images = rng.uniform(-1, 1, (5, 3, 4, 5)).astype(np.float32)
    masks = rng.uniform(0, 1, (3, 10, 12)) > 0.6
    yy, xx = np.mgrid[0:6, 0:7]
    flow = np.stack([np.cos(xx / 2.0) * 3, np.sin(yy / 2.0) * 2 - 1]).astype(np.float32)
    ours, _ = run_both(torchvision_utils, images, masks, flow, rtol=1e-6, atol=1e-6)
    grids, saved, drawn, drawn_colours, flow_image = ours
    assert grids[0].shape == (3, 2 * 6 + 2, 3 * 7 + 2) and saved[0].dtype == np.uint8
    np.testing.assert_allclose(grids[0][:, 2:6, 2:7], images[0])  # by hand: the first tile
    assert flow_image.dtype == np.uint8 and flow_image.shape == (1, 3, 6, 7)
