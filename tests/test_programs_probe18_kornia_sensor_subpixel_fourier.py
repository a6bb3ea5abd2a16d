# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: Bayer demosaicing, YUV 4:2:0, distance transform, connected components,
soft-argmax keypoints, 3-D quadratic refinement (lu_factor_ex, masked_scatter), Fourier filters and phase
correlation."""

import math

import numpy as np

from .probe18_kornia_common import create_meshgrid, filter2d, smooth_image
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# More of kornia: Bayer demosaicing (raw_to_rgb: strided slices, replicate pads, align_corners bilinear
# resize, crops by negative F.pad, green by conv2d with strided writes into it) and rgb_to_raw; YUV 4:2:0
# (avg_pool2d chroma, repeat_interleave back); the soft distance transform (hypot kernel, log of 0 turned
# by nan_to_num(posinf=0), torch.where with Python numbers); connected components by iterated max_pool2d;
# spatial soft-argmax keypoints (softmax over flattened pixels, meshgrid expectation) trained with a
# regression loss; sub-pixel 3-D quadratic refinement (second-order 3-D gradients by a flipped grouped
# conv3d, max_pool3d NMS, Hessians solved by lu_factor_ex / lu_solve on the masked maxima, masked_scatter,
# masked_fill_ of a view); Fourier filters (rfft2 / irfft2 with s=, fftshift, fftfreq low-pass, phase
# correlation recovering a shift)
# ----------------------------------------------------------------------------------------------


def raw_to_rgb_bg(m, image):
    torch, F = m.torch, m.F
    imagesize = image.size()
    image = image.view(-1, 1, image.shape[-2], image.shape[-1])
    r = image[..., :, ::2, ::2]
    b = image[..., :, 1::2, 1::2]
    rpad = (0, 1, 0, 1)
    bpad = (1, 0, 1, 0)
    r = F.interpolate(F.pad(r, rpad, "replicate"), size=(image.shape[-2] + 1, image.shape[-1] + 1),
                      mode="bilinear", align_corners=True)
    b = F.interpolate(F.pad(b, bpad, "replicate"), size=(image.shape[-2] + 1, image.shape[-1] + 1),
                      mode="bilinear", align_corners=True)
    r = F.pad(r, [-x for x in rpad])
    b = F.pad(b, [-x for x in bpad])
    kernel = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]], dtype=image.dtype)[None, None]
    g = F.conv2d(F.pad(image, [1, 1, 1, 1], "reflect"), kernel)
    g[:, :, ::2, 1::2] = image[:, :, ::2, 1::2]
    g[:, :, 1::2, ::2] = image[:, :, 1::2, ::2]
    rgb = torch.cat([r, g, b], dim=-3)
    return rgb.view(*imagesize[:-3], 3, imagesize[-2], imagesize[-1])


def rgb_to_raw_bg(m, image):
    output = image[..., 1:2, :, :].clone()
    output[..., :, ::2, ::2] = image[..., 0:1, ::2, ::2]
    output[..., :, 1::2, 1::2] = image[..., 2:3, 1::2, 1::2]
    return output


def rgb_to_yuv420(m, image):
    F = m.F
    r, g, b = image[..., 0, :, :], image[..., 1, :, :], image[..., 2, :, :]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = -0.147 * r - 0.289 * g + 0.436 * b
    v = 0.615 * r - 0.515 * g - 0.100 * b
    yuv = m.torch.stack([y, u, v], -3)
    return yuv[..., :1, :, :], F.avg_pool2d(yuv[..., 1:3, :, :], (2, 2))


def yuv420_to_rgb(m, imagey, imageuv):
    torch = m.torch
    yuv444 = torch.cat([imagey, imageuv.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)], dim=-3)
    y, u, v = yuv444[..., 0, :, :], yuv444[..., 1, :, :], yuv444[..., 2, :, :]
    r = y + 1.14 * v
    g = y + -0.396 * u - 0.581 * v
    b = y + 2.029 * u
    return torch.stack([r, g, b], -3)


def distance_transform(m, image, kernel_size=3, h=0.35):
    torch = m.torch
    n_iters = math.ceil(max(image.shape[2], image.shape[3]) / math.floor(kernel_size / 2))
    grid = create_meshgrid(m, kernel_size, kernel_size, normalized_coordinates=False, dtype=image.dtype)
    grid -= math.floor(kernel_size / 2)
    kernel = torch.hypot(grid[0, :, :, 0], grid[0, :, :, 1])
    kernel = torch.exp(kernel / -h).unsqueeze(0)
    out = torch.zeros_like(image)
    boundary = image.clone()
    signal_ones = torch.ones_like(boundary)
    for i in range(n_iters):
        cdt = filter2d(m, boundary, kernel, border_type="replicate")
        cdt = -h * torch.log(cdt)
        cdt = torch.nan_to_num(cdt, posinf=0.0)
        mask = torch.where(cdt > 0, 1.0, 0.0)
        if mask.sum() == 0:
            break
        offset = i * (kernel_size // 2)
        out += (offset + cdt) * mask
        boundary = torch.where(mask == 1, signal_ones, boundary)
    return out


def connected_components(m, image, num_iterations=100):
    torch, F = m.torch, m.F
    H, W = image.shape[-2:]
    image_view = image.view(-1, 1, H, W)
    mask = image_view == 1
    B = image_view.shape[0]
    out = torch.arange(B * H * W, device=image.device, dtype=image.dtype).view((-1, 1, H, W))
    out[~mask] = 0
    for _ in range(num_iterations):
        out = F.max_pool2d(out, kernel_size=3, stride=1, padding=1)
        out = torch.mul(out, mask)
    return out.view_as(image)


def sensor_programs(m, rgb_array, binary_array):
    torch = m.torch
    rgb = torch.tensor(rgb_array).requires_grad_(True)
    raw = rgb_to_raw_bg(m, rgb)
    demosaiced = raw_to_rgb_bg(m, raw)
    y, uv = rgb_to_yuv420(m, rgb)
    back = yuv420_to_rgb(m, y, uv)
    (demosaiced.pow(2).sum() + (back * rgb).sum()).backward()
    binary = torch.tensor(binary_array)
    dist = distance_transform(m, binary)
    labels = connected_components(m, binary, 20)
    return raw, demosaiced, y, uv, back, rgb.grad, dist, labels


def test_kornia_sensor_and_binary_image_programs():
    rgb = smooth_image((2, 3, 6, 8), seed=29)
    binary = np.zeros((2, 1, 7, 9))
    binary[0, 0, 1:3, 1:4] = 1
    binary[0, 0, 5, 6:9] = 1
    binary[1, 0, 3, 4] = 1
    ours, _ = run_both(sensor_programs, rgb, binary, rtol=1e-9, atol=1e-10)
    raw, demosaiced, y, uv, back, grad, dist, labels = ours
    # by hand: the demosaiced image keeps the sampled values at their sites, labels count two blobs in image 0
    np.testing.assert_allclose(demosaiced[:, 0, ::2, ::2], rgb[:, 0, ::2, ::2], rtol=1e-12)
    np.testing.assert_allclose(demosaiced[:, 2, 1::2, 1::2], rgb[:, 2, 1::2, 1::2], rtol=1e-12)
    assert len(np.unique(labels[0][labels[0] > 0])) == 2 and (dist[binary == 1] == 0).all()
    assert (dist[binary == 0] > 0).all()


def spatial_soft_argmax_training(m, array, targets, steps=5):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.linspace(-0.3, 0.3, p.numel()).view_as(p))
    net = net.double()
    images, target = torch.tensor(array), torch.tensor(targets)
    temperature = torch.tensor(2.0, dtype=images.dtype, requires_grad=True)
    optimizer = m.optim.Adam(list(net.parameters()) + [temperature], lr=0.02)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        heat = net(images)
        B, C, H, W = heat.shape
        soft = F.softmax(heat.view(B, C, -1) * temperature, dim=-1).view(B, C, H, W)
        grid = create_meshgrid(m, H, W, True, dtype=heat.dtype)
        pos_x, pos_y = grid[..., 0].reshape(-1), grid[..., 1].reshape(-1)
        flat = soft.view(B, C, -1)
        coords = torch.cat([torch.sum(pos_x * flat, -1, keepdim=True), torch.sum(pos_y * flat, -1, keepdim=True)],
                           -1)
        loss = F.smooth_l1_loss(coords, target, beta=0.1)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, coords.detach(), temperature.detach()


def test_spatial_soft_argmax_keypoint_regression():
    array = smooth_image((2, 3, 7, 9), seed=30)
    targets = np.array([[[0.5, -0.5], [-0.2, 0.3]], [[0.0, 0.9], [-0.8, -0.1]]])
    ours, _ = run_both(spatial_soft_argmax_training, array, targets, rtol=1e-8, atol=1e-10)
    assert ours[0][-1] < ours[0][0]


def second_order_3d_kernel(m, dtype):
    torch = m.torch
    z = [[0.0, 0.0, 0.0]] * 3
    gxx = [z, [[0.0, 0.0, 0.0], [1.0, -2.0, 1.0], [0.0, 0.0, 0.0]], z]
    gyy = [z, [[0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [0.0, 1.0, 0.0]], z]
    gss = [[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 0.0]],
           [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]
    gxy = [z, [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, -1.0]], z]
    gxs = [[[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], z,
           [[0.0, 0.0, 0.0], [1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]]
    gys = [[[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], z,
           [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]]]
    return torch.tensor([[gxx], [gyy], [gss], [gxy], [gxs], [gys]], dtype=dtype)


def spatial_gradient3d(m, input, order):
    torch, F = m.torch, m.F
    b, c, d, h, w = input.shape
    if order == 1:
        x = F.pad(input, 6 * [1], "replicate")
        center, left, right = slice(1, -1), slice(0, -2), slice(2, None)
        out = torch.empty(b, c, 3, d, h, w, dtype=input.dtype)
        out[..., 0, :, :, :] = x[..., center, center, right] - x[..., center, center, left]
        out[..., 1, :, :, :] = x[..., center, right, center] - x[..., center, left, center]
        out[..., 2, :, :, :] = x[..., right, center, center] - x[..., left, center, center]
        return 0.5 * out
    kernel = second_order_3d_kernel(m, input.dtype)
    tmp_kernel = kernel.repeat(c, 1, 1, 1, 1)
    kernel_flip = tmp_kernel.flip(-3)
    return F.conv3d(F.pad(input, [1] * 6, "replicate"), kernel_flip, padding=0, groups=c).view(b, c, 6, d, h, w)


def conv_quad_interp3d(m, input, strict_maxima_bonus=10.0):
    torch, F = m.torch, m.F
    B, CH, D, H, W = input.shape
    xs = torch.linspace(0, W - 1, W, dtype=input.dtype)
    ys = torch.linspace(0, H - 1, H, dtype=input.dtype)
    zs = torch.linspace(0, D - 1, D, dtype=input.dtype)
    grid_global = torch.stack(torch.meshgrid([zs, xs, ys], indexing="ij"), dim=-1).permute(0, 2, 1, 3)[None]
    grid_global = grid_global.permute(0, 4, 1, 2, 3)
    b = spatial_gradient3d(m, input, 1)
    b = b.permute(0, 1, 3, 4, 5, 2).reshape(-1, 3, 1)
    A = spatial_gradient3d(m, input, 2)
    A = A.permute(0, 1, 3, 4, 5, 2).reshape(-1, 6)
    dxx, dyy, dss = A[..., 0], A[..., 1], A[..., 2]
    dxy, dys, dxs = 0.25 * A[..., 3], 0.25 * A[..., 4], 0.25 * A[..., 5]
    Hes = torch.stack([dxx, dxy, dxs, dxy, dyy, dys, dxs, dys, dss], dim=-1).view(-1, 3, 3)
    max_non_center = F.max_pool3d(F.pad(input, [1] * 6, mode="constant", value=-1e9), 3, stride=1)
    nms_mask = input >= max_non_center
    x_solved = torch.zeros_like(b)
    LU, pivots, info = torch.linalg.lu_factor_ex(Hes[nms_mask.view(-1)])
    solved_correctly = info == 0
    x_solved_masked = torch.linalg.lu_solve(LU, pivots, b[nms_mask.view(-1)])
    new_nms_mask = nms_mask.masked_scatter(nms_mask, solved_correctly)
    x_solved[torch.where(new_nms_mask.view(-1, 1, 1))[0]] = x_solved_masked[solved_correctly]
    dx = -x_solved
    mask1 = dx.abs().max(dim=1, keepdim=True)[0] > 0.7
    dx.masked_fill_(mask1.expand_as(dx), 0)
    dy = 0.5 * torch.bmm(b.permute(0, 2, 1), dx)
    y_max = input + dy.view(B, CH, D, H, W)
    if strict_maxima_bonus > 0:
        y_max += strict_maxima_bonus * new_nms_mask.to(input.dtype)
    dx_res = dx.flip(1).reshape(B, CH, D, H, W, 3).permute(0, 1, 5, 2, 3, 4)
    coords_max = grid_global.repeat(B, 1, 1, 1, 1).unsqueeze(1)
    return coords_max + dx_res, y_max, new_nms_mask


def quad_interp(m, array):
    torch = m.torch
    volume = torch.tensor(array).requires_grad_(True)
    coords, y_max, mask = conv_quad_interp3d(m, volume)
    (coords.pow(2).sum() + y_max.sum()).backward()
    return coords, y_max, mask, volume.grad


def test_kornia_subpixel_quadratic_refinement_3d():
    rng = np.random.default_rng(31)
    zz, yy, xx = np.mgrid[0:4, 0:6, 0:7]
    blob = np.exp(-((zz - 1.6) ** 2 + (yy - 2.3) ** 2 + (xx - 3.8) ** 2) / 2.0)
    array = np.stack([blob, 0.5 * blob + 0.01 * rng.standard_normal(blob.shape)])[:, None]
    ours, _ = run_both(quad_interp, array, rtol=1e-8, atol=1e-10)
    coords, y_max, mask, grad = ours
    assert mask[0, 0, 2, 2, 4] or mask[0, 0, 1, 2, 4]  # the peak sits near (1.6, 2.3, 3.8)


def fourier_programs(m, array, shift):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    moved = torch.roll(image, shifts=shift, dims=(-2, -1))
    Fa = torch.fft.rfft2(moved)
    Fb = torch.fft.rfft2(image)
    R = Fa * Fb.conj()
    R = R / (R.abs() + 1e-8)
    r = torch.fft.irfft2(R, s=image.shape[-2:])
    r = torch.fft.fftshift(r, dim=(-2, -1))
    H, W = image.shape[-2:]
    fy = torch.fft.fftfreq(H, dtype=image.dtype).view(-1, 1)
    fx = torch.fft.rfftfreq(W, dtype=image.dtype).view(1, -1)
    low_pass = torch.exp(-(fx ** 2 + fy ** 2) / (2 * 0.15 ** 2))
    smoothed = torch.fft.irfft2(torch.fft.rfft2(image) * low_pass, s=(H, W))
    # a convolution by FFT with zero padding equals F.conv2d with padding
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=image.dtype)
    padded = torch.fft.rfft2(image, s=(H + 2, W + 2)) * torch.fft.rfft2(kernel, s=(H + 2, W + 2))
    fft_conv = torch.fft.irfft2(padded, s=(H + 2, W + 2))[..., 1:H + 1, 1:W + 1]
    direct = m.F.conv2d(image.reshape(-1, 1, H, W), kernel.flip(-1, -2)[None, None], padding=1).view_as(image)
    (smoothed.pow(2).sum() + fft_conv.abs().sum() + r.amax((-2, -1)).sum()).backward()
    return r, smoothed, fft_conv, direct, image.grad


def test_fourier_filters_and_phase_correlation():
    array = smooth_image((2, 1, 8, 10), seed=32)
    ours, _ = run_both(fourier_programs, array, (2, -3), rtol=1e-8, atol=1e-9)
    r, smoothed, fft_conv, direct, grad = ours
    peak = np.unravel_index(r[0, 0].argmax(), r[0, 0].shape)
    assert (peak[0] - 4, peak[1] - 5) == (2, -3)  # the shift, from the centred correlation
    np.testing.assert_allclose(fft_conv, direct, atol=1e-12)
