"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: torchvision v2's colour kernels (uint8 and float: Pillow-style HSV by
in-place ops on unbind's outputs, equalize by scatter_add_ histograms, posterize, solarize, autocontrast), affine /
rotate / perspective (lstsq) / elastic through _apply_grid_transform, ColorJitter's random order on a Generator."""

import math

import numpy as np

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# torchvision.transforms.v2's tensor kernels, on uint8 and float images, as torchvision writes them:
# to_dtype_image (scaling, bit shifts between integer widths), grayscale by chained add_(alpha=), _blend,
# brightness / contrast / saturation / sharpness (a strided view written in place by add_ with alpha),
# the Pillow-style HSV of adjust_hue (aminmax, in-place ops on unbind's outputs, logical_and_, fmod_, an
# int32 remainder_, a long table indexed by an int32 tensor, moveaxis, gather), posterize (bit masks),
# solarize, autocontrast (boolean-mask writes), equalize (scatter_add_ histograms, cumsum, argmax, floor
# division in place, a uint8 lookup table by gather), invert; then affine / rotate / perspective (Pillow
# coefficients by linalg.lstsq with driver='gels') / elastic through _apply_grid_transform's fill mask
# (tensor_split, torch.where for nearest), with rot90's fast paths; and ColorJitter's random order drawn
# from a seeded torch.Generator, batch-wise
# ----------------------------------------------------------------------------------------------


def max_value(m, dtype):
    torch = m.torch
    if dtype == torch.uint8:
        return 255
    if dtype == torch.int16:
        return 32767
    if dtype == torch.int32:
        return 2147483647
    return 1.0


def num_value_bits(m, dtype):
    torch = m.torch
    return {torch.uint8: 8, torch.int8: 7, torch.int16: 15, torch.int32: 31, torch.int64: 63}[dtype]


def to_dtype_image(m, image, dtype, scale=False):
    torch = m.torch
    if image.dtype == dtype:
        return image
    elif not scale:
        return image.to(dtype)
    float_input = image.is_floating_point()
    # torchvision v1's convert_image_dtype spelling ("replace with dtype.is_floating_point when torchscript
    # supports it"); v2's dtype.is_floating_point is tested below
    float_output = torch.tensor(0, dtype=dtype).is_floating_point()
    if float_input:
        if float_output:
            return image.to(dtype)
        eps = 1e-3
        max_v = float(max_value(m, dtype))
        return image.mul(max_v + 1.0 - eps).to(dtype)
    else:
        if float_output:
            return image.to(dtype).mul_(1.0 / max_value(m, image.dtype))
        num_value_bits_input = num_value_bits(m, image.dtype)
        num_value_bits_output = num_value_bits(m, dtype)
        if num_value_bits_input > num_value_bits_output:
            return image.bitwise_right_shift(num_value_bits_input - num_value_bits_output).to(dtype)
        else:
            return image.to(dtype).bitwise_left_shift_(num_value_bits_output - num_value_bits_input)


def rgb_to_grayscale_tv(m, image, num_output_channels=1, preserve_dtype=True):
    r, g, b = image.unbind(dim=-3)
    l_img = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114)
    l_img = l_img.unsqueeze(dim=-3)
    if preserve_dtype:
        l_img = l_img.to(image.dtype)
    if num_output_channels == 3:
        l_img = l_img.expand(image.shape)
    return l_img


def blend(m, image1, image2, ratio):
    ratio = float(ratio)
    fp = image1.is_floating_point()
    bound = max_value(m, image1.dtype)
    output = image1.mul(ratio).add_(image2, alpha=(1.0 - ratio)).clamp_(0, bound)
    return output if fp else output.to(image1.dtype)


def adjust_brightness_image(m, image, brightness_factor):
    fp = image.is_floating_point()
    bound = max_value(m, image.dtype)
    output = image.mul(brightness_factor).clamp_(0, bound)
    return output if fp else output.to(image.dtype)


def adjust_saturation_image(m, image, saturation_factor):
    grayscale_image = rgb_to_grayscale_tv(m, image, num_output_channels=1, preserve_dtype=False)
    if not image.is_floating_point():
        grayscale_image = grayscale_image.floor_()
    return blend(m, image, grayscale_image, saturation_factor)


def adjust_contrast_image(m, image, contrast_factor):
    torch = m.torch
    fp = image.is_floating_point()
    grayscale_image = rgb_to_grayscale_tv(m, image, num_output_channels=1, preserve_dtype=False)
    if not fp:
        grayscale_image = grayscale_image.floor_()
    mean = torch.mean(grayscale_image, dim=(-3, -2, -1), keepdim=True)
    return blend(m, image, mean, contrast_factor)


def adjust_sharpness_image(m, image, sharpness_factor):
    torch, F = m.torch, m.F
    num_channels, height, width = image.shape[-3:]
    bound = max_value(m, image.dtype)
    fp = image.is_floating_point()
    kernel_dtype = image.dtype if fp else torch.float32
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=kernel_dtype, device=image.device)
    kernel = kernel.expand(num_channels, 1, 3, 3)
    output = image.to(dtype=kernel_dtype, copy=True)
    blurred_degenerate = F.conv2d(output, kernel, groups=num_channels)
    if not fp:
        blurred_degenerate = blurred_degenerate.round_()
    view = output[..., 1:-1, 1:-1]
    view.add_(blurred_degenerate.sub_(view), alpha=(1.0 - sharpness_factor))
    output = output.clamp_(0, bound)
    if not fp:
        output = output.to(image.dtype)
    return output


def rgb_to_hsv_tv(m, image):
    torch = m.torch
    r, g, _ = image.unbind(dim=-3)
    minc, maxc = torch.aminmax(image, dim=-3)
    eqc = maxc == minc
    channels_range = maxc - minc
    ones = torch.ones_like(maxc)
    s = channels_range / torch.where(eqc, ones, maxc)
    channels_range_divisor = torch.where(eqc, ones, channels_range).unsqueeze_(dim=-3)
    rc, gc, bc = ((maxc.unsqueeze(dim=-3) - image) / channels_range_divisor).unbind(dim=-3)
    mask_maxc_neq_r = maxc != r
    mask_maxc_eq_g = maxc == g
    hg = rc.add(2.0).sub_(bc).mul_(mask_maxc_eq_g & mask_maxc_neq_r)
    hr = bc.sub_(gc).mul_(~mask_maxc_neq_r)
    hb = gc.add_(4.0).sub_(rc).mul_(mask_maxc_neq_r.logical_and_(mask_maxc_eq_g.logical_not_()))
    h = hr.add_(hg).add_(hb)
    h = h.mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb_tv(m, img):
    torch = m.torch
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
    select = select.to(device=img.device, non_blocking=True)
    select = select[:, i]
    if select.ndim > 3:
        select = select.moveaxis(0, -3)
    return vpqt.gather(-3, select)


def adjust_hue_image(m, image, hue_factor):
    torch = m.torch
    orig_dtype = image.dtype
    image = to_dtype_image(m, image, torch.float32, scale=True)
    image = rgb_to_hsv_tv(m, image)
    h, s, v = image.unbind(dim=-3)
    h.add_(hue_factor).remainder_(1.0)
    image = torch.stack((h, s, v), dim=-3)
    image_hue_adj = hsv_to_rgb_tv(m, image)
    return to_dtype_image(m, image_hue_adj, orig_dtype, scale=True)


def adjust_gamma_image(m, image, gamma, gain=1.0):
    torch = m.torch
    if not torch.is_floating_point(image):
        output = to_dtype_image(m, image, torch.float32, scale=True).pow_(gamma)
    else:
        output = image.pow(gamma)
    if gain != 1.0:
        output = output.mul_(gain).clamp_(0.0, 1.0)
    return to_dtype_image(m, output, image.dtype, scale=True)


def posterize_image(m, image, bits):
    if image.is_floating_point():
        levels = 1 << bits
        return image.mul(levels).floor_().clamp_(0, levels - 1).mul_(1.0 / levels)
    n_bits = num_value_bits(m, image.dtype)
    if bits >= n_bits:
        return image
    mask = ((1 << bits) - 1) << (n_bits - bits)
    return image & mask


def invert_image(m, image):
    torch = m.torch
    if image.is_floating_point():
        return 1.0 - image
    elif image.dtype == torch.uint8:
        return image.bitwise_not()
    return image.bitwise_xor((1 << num_value_bits(m, image.dtype)) - 1)


def solarize_image(m, image, threshold):
    return m.torch.where(image >= threshold, invert_image(m, image), image)


def autocontrast_image(m, image):
    torch = m.torch
    bound = max_value(m, image.dtype)
    fp = image.is_floating_point()
    float_image = image if fp else image.to(torch.float32)
    minimum = float_image.amin(dim=(-2, -1), keepdim=True)
    maximum = float_image.amax(dim=(-2, -1), keepdim=True)
    eq_idxs = maximum == minimum
    inv_scale = maximum.sub_(minimum).mul_(1.0 / bound)
    minimum[eq_idxs] = 0.0
    inv_scale[eq_idxs] = 1.0
    if fp:
        diff = float_image.sub(minimum)
    else:
        diff = float_image.sub_(minimum)
    return diff.div_(inv_scale).clamp_(0, bound).to(image.dtype)


def equalize_image(m, image):
    torch = m.torch
    output_dtype = image.dtype
    image = to_dtype_image(m, image, torch.uint8, scale=True)
    batch_shape = image.shape[:-2]
    flat_image = image.flatten(start_dim=-2).to(torch.long)
    hist = flat_image.new_zeros(batch_shape + (256,), dtype=torch.int32)
    hist.scatter_add_(dim=-1, index=flat_image, src=hist.new_ones(1).expand_as(flat_image))
    cum_hist = hist.cumsum(dim=-1)
    index = cum_hist.argmax(dim=-1)
    num_non_max_pixels = flat_image.shape[-1] - hist.gather(dim=-1, index=index.unsqueeze_(-1))
    step = num_non_max_pixels.div_(255, rounding_mode="floor")
    valid_equalization = step.ne(0).unsqueeze_(-1)
    cum_hist = cum_hist[..., :-1]
    (cum_hist.add_(step // 2).div_(step.clamp_(min=1), rounding_mode="floor").clamp_(0, 255))
    lut = cum_hist.to(torch.uint8)
    lut = torch.cat([lut.new_zeros(1).expand(batch_shape + (1,)), lut], dim=-1)
    equalized_image = lut.gather(dim=-1, index=flat_image).view_as(image)
    output = torch.where(valid_equalization, equalized_image, image)
    return to_dtype_image(m, output, output_dtype, scale=True)


def torchvision_colour_kernels(m, array_uint8):
    torch = m.torch
    results = {}
    for kind in ("uint8", "float32"):
        image = torch.tensor(array_uint8)
        if kind == "float32":
            image = to_dtype_image(m, image, torch.float32, scale=True)
        r = {
            "gray": rgb_to_grayscale_tv(m, image), "gray3": rgb_to_grayscale_tv(m, image, 3),
            "brightness": adjust_brightness_image(m, image, 1.7),
            "saturation": adjust_saturation_image(m, image, 0.3),
            "contrast": adjust_contrast_image(m, image, 1.4),
            "sharpness": adjust_sharpness_image(m, image, 2.5),
            "hue": adjust_hue_image(m, image, -0.3), "hue+": adjust_hue_image(m, image, 0.45),
            "gamma": adjust_gamma_image(m, image, 0.6, gain=1.2),
            "posterize": posterize_image(m, image, 3),
            "solarize": solarize_image(m, image, 128 if kind == "uint8" else 0.5),
            "invert": invert_image(m, image), "autocontrast": autocontrast_image(m, image),
            "equalize": equalize_image(m, image),
        }
        if kind == "uint8":
            r["int16"] = to_dtype_image(m, image, torch.int16, scale=True)
            r["back"] = to_dtype_image(m, r["int16"], torch.uint8, scale=True)
            r["int16_invert"] = invert_image(m, r["int16"])
        results[kind] = r
    return {k: {n: (v, str(v.dtype).split(".")[-1]) for n, v in r.items()} for k, r in results.items()}


def test_torchvision_colour_kernels():
    rng = np.random.default_rng(13)
    array = rng.integers(0, 256, (2, 3, 6, 7)).astype(np.uint8)
    array[0, :, 0, :3] = 77  # grey pixels: S = 0 and H's branches tie
    array[1, 1] = array[1, 0]  # r == g on a whole image
    array[1, 2, :2] = 255
    ours, _ = run_both(torchvision_colour_kernels, array, rtol=1e-6, atol=1e-6)
    u = ours["uint8"]
    assert u["hue"][1] == "uint8" and u["int16"][1] == "int16" and u["gray3"][0].shape == (2, 3, 6, 7)
    np.testing.assert_array_equal(u["invert"][0], 255 - array)
    np.testing.assert_array_equal(u["posterize"][0], array & 0b11100000)
    np.testing.assert_array_equal(u["back"][0], array)
    # equalize by hand: the Pillow lookup table from the cumulative histogram
    for b in range(2):
        for c in range(3):
            flat = array[b, c].ravel()
            hist = np.bincount(flat, minlength=256)
            step = (flat.size - hist[flat.max()]) // 255
            if step:
                lut = np.concatenate([[0], np.clip((np.cumsum(hist)[:-1] + step // 2) // step, 0, 255)])
                np.testing.assert_array_equal(u["equalize"][0][b, c].ravel(), lut[flat])


def get_inverse_affine_matrix(center, angle, translate, scale, shear):
    rot = math.radians(angle)
    sx = math.radians(shear[0])
    sy = math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    cos_sy = math.cos(sy)
    tan_sx = math.tan(sx)
    rot_minus_sy = rot - sy
    cx_plus_tx = cx + tx
    cy_plus_ty = cy + ty
    a = math.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot_minus_sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    matrix = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0]
    matrix[2] += matrix[0] * (-cx_plus_tx) + matrix[1] * (-cy_plus_ty)
    matrix[5] += matrix[3] * (-cx_plus_tx) + matrix[4] * (-cy_plus_ty)
    matrix[2] += cx
    matrix[5] += cy
    return matrix


def apply_grid_transform(m, img, grid, mode, fill):
    torch, F = m.torch, m.F
    input_shape = img.shape
    output_height, output_width = grid.shape[1], grid.shape[2]
    num_channels, input_height, input_width = input_shape[-3:]
    output_shape = input_shape[:-3] + (num_channels, output_height, output_width)
    img = img.reshape(-1, num_channels, input_height, input_width)
    squashed_batch_size = img.shape[0]
    fp = img.dtype == grid.dtype
    float_img = img if fp else img.to(grid.dtype)
    if squashed_batch_size > 1:
        grid = grid.expand(squashed_batch_size, -1, -1, -1)
    if fill is not None:
        mask = torch.ones((squashed_batch_size, 1, input_height, input_width), dtype=float_img.dtype)
        float_img = torch.cat((float_img, mask), dim=1)
    float_img = F.grid_sample(float_img, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if fill is not None:
        float_img, mask = torch.tensor_split(float_img, indices=(-1,), dim=-3)
        mask = mask.expand_as(float_img)
        fill_list = fill if isinstance(fill, (tuple, list)) else [float(fill)]
        fill_img = torch.tensor(fill_list, dtype=float_img.dtype, device=float_img.device).view(1, -1, 1, 1)
        if mode == "nearest":
            float_img = torch.where(mask < 0.5, fill_img.expand_as(float_img), float_img)
        else:
            float_img = float_img.sub_(fill_img).mul_(mask).add_(fill_img)
    img = float_img.round_().to(img.dtype) if not fp else float_img
    return img.reshape(output_shape)


def affine_grid_tv(m, theta, w, h, ow, oh):
    torch = m.torch
    dtype = theta.dtype
    base_grid = torch.empty(1, oh, ow, 3, dtype=dtype)
    x_grid = torch.linspace((1.0 - ow) * 0.5, (ow - 1.0) * 0.5, steps=ow)
    base_grid[..., 0].copy_(x_grid)
    y_grid = torch.linspace((1.0 - oh) * 0.5, (oh - 1.0) * 0.5, steps=oh).unsqueeze_(-1)
    base_grid[..., 1].copy_(y_grid)
    base_grid[..., 2].fill_(1)
    rescaled_theta = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], dtype=dtype))
    output_grid = base_grid.view(1, oh * ow, 3).bmm(rescaled_theta)
    return output_grid.view(1, oh, ow, 2)


def affine_image(m, image, angle, translate, scale, shear, interpolation="nearest", fill=None, center=None):
    torch = m.torch
    height, width = image.shape[-2:]
    center_f = [0.0, 0.0]
    if center is not None:
        center_f = [(c - s * 0.5) for c, s in zip(center, [width, height])]
    matrix = get_inverse_affine_matrix(center_f, angle, [float(t) for t in translate], scale, shear)
    dtype = image.dtype if torch.is_floating_point(image) else torch.float32
    theta = torch.tensor(matrix, dtype=dtype).reshape(1, 2, 3)
    grid = affine_grid_tv(m, theta, w=width, h=height, ow=width, oh=height)
    return apply_grid_transform(m, image, grid, interpolation, fill=fill)


def rotate_image(m, image, angle, interpolation="nearest", fill=None):
    torch = m.torch
    angle = angle % 360
    if angle == 0:
        return image.clone()
    if angle == 180:
        return torch.rot90(image, k=2, dims=(-2, -1))
    if image.shape[-1] == image.shape[-2]:
        if angle == 90:
            return torch.rot90(image, k=1, dims=(-2, -1))
        if angle == 270:
            return torch.rot90(image, k=3, dims=(-2, -1))
    return affine_image(m, image, -angle, [0.0, 0.0], 1.0, [0.0, 0.0], interpolation, fill)


def get_perspective_coeffs(m, startpoints, endpoints):
    torch = m.torch
    a_matrix = torch.zeros(2 * len(startpoints), 8, dtype=torch.float64)
    for i, (p1, p2) in enumerate(zip(endpoints, startpoints)):
        a_matrix[2 * i, :] = torch.tensor([p1[0], p1[1], 1, 0, 0, 0, -p2[0] * p1[0], -p2[0] * p1[1]])
        a_matrix[2 * i + 1, :] = torch.tensor([0, 0, 0, p1[0], p1[1], 1, -p2[1] * p1[0], -p2[1] * p1[1]])
    b_matrix = torch.tensor(startpoints, dtype=torch.float64).view(8)
    res = torch.linalg.lstsq(a_matrix, b_matrix, driver="gels").solution.to(torch.float32)
    return res.tolist()


def perspective_grid(m, coeffs, ow, oh, dtype):
    torch = m.torch
    theta1 = torch.tensor([[[coeffs[0], coeffs[1], coeffs[2]], [coeffs[3], coeffs[4], coeffs[5]]]], dtype=dtype)
    theta2 = torch.tensor([[[coeffs[6], coeffs[7], 1.0], [coeffs[6], coeffs[7], 1.0]]], dtype=dtype)
    d = 0.5
    base_grid = torch.empty(1, oh, ow, 3, dtype=dtype)
    x_grid = torch.linspace(d, ow + d - 1.0, steps=ow, dtype=dtype)
    base_grid[..., 0].copy_(x_grid)
    y_grid = torch.linspace(d, oh + d - 1.0, steps=oh, dtype=dtype).unsqueeze_(-1)
    base_grid[..., 1].copy_(y_grid)
    base_grid[..., 2].fill_(1)
    rescaled_theta1 = theta1.transpose(1, 2).div_(torch.tensor([0.5 * ow, 0.5 * oh], dtype=dtype))
    shape = (1, oh * ow, 3)
    output_grid1 = base_grid.view(shape).bmm(rescaled_theta1)
    output_grid2 = base_grid.view(shape).bmm(theta2.transpose(1, 2))
    output_grid = output_grid1.div_(output_grid2).sub_(1.0)
    return output_grid.view(1, oh, ow, 2)


def perspective_image(m, image, startpoints, endpoints, interpolation="bilinear", fill=None):
    torch = m.torch
    coeffs = get_perspective_coeffs(m, startpoints, endpoints)
    oh, ow = image.shape[-2:]
    dtype = image.dtype if torch.is_floating_point(image) else torch.float32
    grid = perspective_grid(m, coeffs, ow=ow, oh=oh, dtype=dtype)
    return apply_grid_transform(m, image, grid, interpolation, fill=fill), coeffs


def create_identity_grid(m, size, dtype):
    torch = m.torch
    sy, sx = size
    base_grid = torch.empty(1, sy, sx, 2, dtype=dtype)
    x_grid = torch.linspace((-sx + 1) / sx, (sx - 1) / sx, sx, dtype=dtype)
    base_grid[..., 0].copy_(x_grid)
    y_grid = torch.linspace((-sy + 1) / sy, (sy - 1) / sy, sy, dtype=dtype).unsqueeze_(-1)
    base_grid[..., 1].copy_(y_grid)
    return base_grid


def elastic_image(m, image, displacement, interpolation="bilinear", fill=None):
    torch = m.torch
    height, width = image.shape[-2:]
    dtype = image.dtype if torch.is_floating_point(image) else torch.float32
    grid = create_identity_grid(m, (height, width), dtype).add_(displacement.to(dtype=dtype))
    return apply_grid_transform(m, image, grid, interpolation, fill=fill)


def torchvision_geometry_kernels(m, array_uint8, displacement_array):
    torch = m.torch
    out = {}
    for kind in ("uint8", "float32"):
        image = torch.tensor(array_uint8)
        if kind == "float32":
            image = to_dtype_image(m, image, torch.float32, scale=True)
        square = image[..., :6, :6]
        w, h = image.shape[-1], image.shape[-2]
        start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
        end = [[1, 1], [w - 2, 0], [w - 1, h - 2], [0, h - 1]]
        displacement = torch.tensor(displacement_array).to(torch.float32)
        out[kind] = {
            "affine": affine_image(m, image, 25.0, [1, -1], 0.9, [10.0, -5.0], "bilinear", fill=[10.0, 20.0, 30.0]),
            "affine_nearest": affine_image(m, image, -40.0, [0, 2], 1.1, [0.0, 0.0], "nearest", fill=5.0,
                                           center=[2.0, 3.0]),
            "affine_nofill": affine_image(m, image, 10.0, [0, 0], 1.0, [0.0, 0.0], "bilinear"),
            "rotate90": rotate_image(m, square, 90.0), "rotate180": rotate_image(m, image, -180.0),
            "rotate270": rotate_image(m, square, -90.0), "rotate33": rotate_image(m, image, 33.0, "bilinear", 0.0),
            "perspective": perspective_image(m, image, start, end, "bilinear", fill=0.0)[0],
            "perspective_nearest": perspective_image(m, image, start, end, "nearest")[0],
            "elastic": elastic_image(m, image, displacement, "bilinear", fill=[1.0, 2.0, 3.0]),
        }
        out[kind]["coeffs"] = perspective_image(m, image, start, end)[1]
    return out


def test_torchvision_geometry_kernels():
    rng = np.random.default_rng(14)
    array = rng.integers(0, 256, (2, 3, 7, 8)).astype(np.uint8)
    displacement = rng.uniform(-0.2, 0.2, (1, 7, 8, 2))
    ours, _ = run_both(torchvision_geometry_kernels, array, displacement, rtol=1e-5, atol=1e-5)
    u = ours["uint8"]
    np.testing.assert_array_equal(u["rotate90"], np.rot90(array[..., :6, :6], 1, axes=(-2, -1)))
    np.testing.assert_array_equal(u["rotate180"], array[..., ::-1, ::-1])
    assert u["affine"].dtype == np.uint8 and u["affine"].shape == array.shape
    # a zero displacement is the identity grid: elastic returns the image
    zero = torchvision_geometry_kernels(OURS, array, np.zeros((1, 7, 8, 2)))["uint8"]["elastic"].numpy()
    np.testing.assert_array_equal(zero, array)


def colour_jitter_batch(m, array, seed):
    """ColorJitter with its functions in a random order per image, factors drawn from a seeded Generator."""
    torch = m.torch
    images = torch.tensor(array)
    g = torch.Generator().manual_seed(seed)
    out, orders, factors = [], [], []
    for img in images:
        fn_idx = torch.randperm(4, generator=g)
        b = float(torch.empty(1).uniform_(0.6, 1.4, generator=g))
        c = float(torch.empty(1).uniform_(0.6, 1.4, generator=g))
        s = float(torch.empty(1).uniform_(0.0, 2.0, generator=g))
        h = float(torch.empty(1).uniform_(-0.2, 0.2, generator=g))
        for fn_id in fn_idx:
            if fn_id == 0:
                img = adjust_brightness_image(m, img, b)
            elif fn_id == 1:
                img = adjust_contrast_image(m, img, c)
            elif fn_id == 2:
                img = adjust_saturation_image(m, img, s)
            elif fn_id == 3:
                img = adjust_hue_image(m, img, h)
        if torch.rand(1, generator=g) < 0.5:
            img = img.flip(-1)
        out.append(img)
        orders.append(fn_idx)
        factors.append([b, c, s, h])
    return torch.stack(out), torch.stack(orders), factors


def test_colour_jitter_random_order_on_a_generator():
    array = np.random.default_rng(15).integers(0, 256, (4, 3, 5, 6)).astype(np.uint8)
    ours, theirs = run_both(colour_jitter_batch, array, 7, rtol=1e-6, atol=1e-6)
    images, orders, factors = ours
    assert images.dtype == np.uint8 and all(sorted(o) == [0, 1, 2, 3] for o in orders)
