# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""What the files of session 18's image-processing probe (tests/test_programs_probe18_kornia_*.py, one family of
programs each) share: the test images, and the kornia.filters and kornia.geometry building blocks that several of the
programs call, as kornia writes them (filter2d and its padding, Gaussian kernels and blurs, spatial gradients, edges,
Harris and Shi-Tomasi corners with their non-maximum suppression, meshgrids, homogeneous points and their
transforms).

The programs are written as kornia, torchvision.transforms.v2's tensor kernels and piq write them (see
tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same data (float64 mostly, to about 1e-9),
comparing values and the gradients with respect to the pixels, and checked by hand where they run alone."""

import numpy as np


def quantised_image(shape, levels=8, seed=0):
    """An image in [0, 1] on a few grey levels, so that channels tie (max/min with equal arguments) and pixels
    sit exactly on the branch points of the piecewise colour formulas."""
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(0, 1, shape) * levels) / levels


def smooth_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.95, shape)


def compute_padding(kernel_size):
    computed = [k - 1 for k in kernel_size]
    out_padding = 2 * len(kernel_size) * [0]
    for i in range(len(kernel_size)):
        computed_tmp = computed[-(i + 1)]
        pad_front = computed_tmp // 2
        pad_rear = computed_tmp - pad_front
        out_padding[2 * i + 0] = pad_front
        out_padding[2 * i + 1] = pad_rear
    return out_padding


def normalize_kernel2d(input):
    norm = input.abs().sum(dim=-1).sum(dim=-1)
    return input / (norm[..., None, None])


def filter2d(m, input, kernel, border_type="reflect", normalized=False, padding="same", behaviour="corr"):
    F = m.F
    b, c, h, w = input.shape
    if behaviour == "conv":
        tmp_kernel = kernel.flip((-2, -1))[:, None, ...].to(device=input.device, dtype=input.dtype)
    else:
        tmp_kernel = kernel[:, None, ...].to(device=input.device, dtype=input.dtype)
    if normalized:
        tmp_kernel = normalize_kernel2d(tmp_kernel)
    tmp_kernel = tmp_kernel.expand(-1, c, -1, -1)
    height, width = tmp_kernel.shape[-2:]
    if padding == "same":
        input = F.pad(input, compute_padding([height, width]), mode=border_type)
    tmp_kernel = tmp_kernel.reshape(-1, 1, height, width)
    input = input.view(-1, tmp_kernel.size(0), input.size(-2), input.size(-1))
    output = F.conv2d(input, tmp_kernel, groups=tmp_kernel.size(0), padding=0, stride=1)
    if padding == "same":
        return output.view(b, c, h, w)
    return output.view(b, c, h - height + 1, w - width + 1)


def gaussian(m, window_size, sigma, dtype):
    torch = m.torch
    batch_size = sigma.shape[0]
    x = (torch.arange(window_size, device=sigma.device, dtype=sigma.dtype) - window_size // 2).expand(batch_size, -1)
    if window_size % 2 == 0:
        x = x + 0.5
    gauss = torch.exp(-x.pow(2.0) / (2 * sigma.pow(2.0)))
    return gauss / gauss.sum(-1, keepdim=True)


def gaussian_blur2d(m, input, kernel_size, sigma, border_type="reflect", separable=True):
    torch = m.torch
    if isinstance(sigma, tuple):
        sigma = torch.tensor([sigma], device=input.device, dtype=input.dtype)
    ky, kx = kernel_size
    bs = sigma.shape[0]
    kernel_x = gaussian(m, kx, sigma[:, 1].view(bs, 1), input.dtype)
    kernel_y = gaussian(m, ky, sigma[:, 0].view(bs, 1), input.dtype)
    if separable:
        out_x = filter2d(m, input, kernel_x[..., None, :], border_type)
        return filter2d(m, out_x, kernel_y[..., None], border_type)
    kernel = kernel_y.unsqueeze(-1) * kernel_x.unsqueeze(-2)
    return filter2d(m, input, kernel, border_type)


def spatial_gradient_kernel(m, mode, order, dtype):
    torch = m.torch
    if mode == "sobel" and order == 1:
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=dtype)
        return torch.stack([kx, kx.transpose(0, 1)])
    if mode == "diff" and order == 1:
        kx = torch.tensor([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5], [0.0, 0.0, 0.0]], dtype=dtype)
        return torch.stack([kx, kx.transpose(0, 1)])
    # sobel, second order: xx, xy, yy
    gxx = torch.tensor([[1.0, -2.0, 1.0], [4.0, -8.0, 4.0], [6.0, -12.0, 6.0], [4.0, -8.0, 4.0],
                        [1.0, -2.0, 1.0]], dtype=dtype)
    gxx = torch.cat([torch.zeros(5, 1, dtype=dtype), gxx, torch.zeros(5, 1, dtype=dtype)], 1)
    gxy = torch.tensor([[-1.0, -2.0, 0.0, 2.0, 1.0], [-2.0, -4.0, 0.0, 4.0, 2.0], [0.0] * 5,
                        [2.0, 4.0, 0.0, -4.0, -2.0], [1.0, 2.0, 0.0, -2.0, -1.0]], dtype=dtype)
    return torch.stack([gxx, gxy, gxx.transpose(0, 1)])


def spatial_gradient(m, input, mode="sobel", order=1, normalized=True):
    F = m.F
    kernel = spatial_gradient_kernel(m, mode, order, input.dtype)
    if normalized:
        kernel = normalize_kernel2d(kernel)
    b, c, h, w = input.shape
    tmp_kernel = kernel[:, None, ...]
    spatial_pad = [kernel.size(1) // 2, kernel.size(1) // 2, kernel.size(2) // 2, kernel.size(2) // 2]
    out_channels = 3 if order == 2 else 2
    padded_inp = F.pad(input.reshape(b * c, 1, h, w), spatial_pad, "replicate")
    out = F.conv2d(padded_inp, tmp_kernel, groups=1, padding=0, stride=1)
    return out.reshape(b, c, out_channels, h, w)


def harris_response(m, input, k=0.04, grads_mode="sobel", sigmas=None):
    torch = m.torch
    gradients = spatial_gradient(m, input, grads_mode)
    dx = gradients[:, :, 0]
    dy = gradients[:, :, 1]

    def g(x):
        return gaussian_blur2d(m, x, (7, 7), (1.0, 1.0))

    dx2 = g(dx ** 2)
    dy2 = g(dy ** 2)
    dxy = g(dx * dy)
    det_m = dx2 * dy2 - dxy * dxy
    trace_m = dx2 + dy2
    scores = det_m - k * (trace_m ** 2)
    if sigmas is not None:
        scores = scores * sigmas.pow(4).view(-1, 1, 1, 1)
    return scores


def gftt_response(m, input, grads_mode="sobel"):
    torch = m.torch
    gradients = spatial_gradient(m, input, grads_mode)
    dx, dy = gradients[:, :, 0], gradients[:, :, 1]
    dx2 = gaussian_blur2d(m, dx ** 2, (7, 7), (1.0, 1.0))
    dy2 = gaussian_blur2d(m, dy ** 2, (7, 7), (1.0, 1.0))
    dxy = gaussian_blur2d(m, dx * dy, (7, 7), (1.0, 1.0))
    det_m = dx2 * dy2 - dxy * dxy
    trace_m = dx2 + dy2
    e1 = 0.5 * (trace_m + torch.sqrt((trace_m ** 2 - 4 * det_m).abs()))
    e2 = 0.5 * (trace_m - torch.sqrt((trace_m ** 2 - 4 * det_m).abs()))
    return torch.min(e1, e2)


def nms2d(m, input, kernel_size=(3, 3), mask_only=False):
    F = m.F
    pad = compute_padding(list(kernel_size))
    max_non_center = F.max_pool2d(F.pad(input, pad, mode="constant", value=-1e9), kernel_size, stride=1)
    mask = input >= max_non_center
    if mask_only:
        return mask
    return input * mask.to(input.dtype)


def edges(m, array, mode, order, normalized):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    grad = spatial_gradient(m, image, mode, order, normalized)
    (grad * torch.arange(grad.shape[2], dtype=grad.dtype).view(1, 1, -1, 1, 1)).pow(2).sum().backward()
    return grad, image.grad


def corners(m, array):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    sigmas = torch.tensor([1.0, 1.5], dtype=image.dtype)
    harris = harris_response(m, image, sigmas=sigmas)
    gftt = gftt_response(m, image)
    peaks = nms2d(m, harris)
    mask = nms2d(m, harris, mask_only=True)
    (peaks.sum() + gftt.pow(2).sum() * 10).backward()
    flat = harris.flatten(1)
    top, index = flat.topk(3, dim=1)
    return harris, gftt, peaks, mask, image.grad, top, index


def create_meshgrid(m, height, width, normalized_coordinates=True, dtype=None):
    torch = m.torch
    xs = torch.linspace(0, width - 1, width, dtype=dtype)
    ys = torch.linspace(0, height - 1, height, dtype=dtype)
    if normalized_coordinates:
        xs = (xs / (width - 1) - 0.5) * 2
        ys = (ys / (height - 1) - 0.5) * 2
    base_grid = torch.stack(torch.meshgrid([xs, ys], indexing="ij"), dim=-1)  # WxHx2
    return base_grid.permute(1, 0, 2).unsqueeze(0)  # 1xHxWx2


def convert_points_to_homogeneous(m, points):
    return m.F.pad(points, [0, 1], "constant", 1.0)


def convert_points_from_homogeneous(m, points, eps=1e-8):
    torch = m.torch
    z_vec = points[..., -1:]
    mask = torch.abs(z_vec) > eps
    scale = torch.where(mask, 1.0 / (z_vec + eps), torch.ones_like(z_vec))
    return scale * points[..., :-1]


def transform_points(m, trans_01, points_1):
    torch = m.torch
    shape_inp = list(points_1.shape)
    points_1 = points_1.reshape(-1, points_1.shape[-2], points_1.shape[-1])
    trans_01 = trans_01.reshape(-1, trans_01.shape[-2], trans_01.shape[-1])
    trans_01 = torch.repeat_interleave(trans_01, repeats=points_1.shape[0] // trans_01.shape[0], dim=0)
    points_1_h = convert_points_to_homogeneous(m, points_1)
    points_0_h = torch.bmm(points_1_h, trans_01.permute(0, 2, 1))
    points_0_h = torch.squeeze(points_0_h, dim=-1)
    points_0 = convert_points_from_homogeneous(m, points_0_h)
    shape_inp[-2] = points_0.shape[-2]
    shape_inp[-1] = points_0.shape[-1]
    return points_0.reshape(shape_inp)


def normalize_points(m, points, eps=1e-8):
    torch = m.torch
    x_mean = torch.mean(points, dim=1, keepdim=True)
    scale = (points - x_mean).norm(dim=-1, p=2).mean(dim=-1)
    scale = torch.sqrt(torch.tensor(2.0, dtype=points.dtype)) / (scale + eps)
    ones, zeros = torch.ones_like(scale), torch.zeros_like(scale)
    transform = torch.stack([scale, zeros, -scale * x_mean[..., 0, 0], zeros, scale, -scale * x_mean[..., 0, 1],
                             zeros, zeros, ones], dim=-1)
    transform = transform.view(-1, 3, 3)
    return transform_points(m, transform, points), transform
