# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: kornia's colour spaces (HSV, HLS, Lab, YCbCr; hue / saturation / gamma
fitted by gradient descent, pow at 0); kornia.enhance with torch._assert_async checks."""

import math

import numpy as np
import pytest

from tests.ported import raises

from .probe18_kornia_common import quantised_image, smooth_image
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Colour spaces as kornia.color writes them: RGB<->HSV (amax/amin, nested torch.where, % 1.0, floor % 6
# and a long index clamp_), RGB<->HLS (max(-3) with its index compared to a channel table, % 6, addcmul
# with value=-1, in-place clamp_), sRGB<->linear (pow(2.4) on a where branch), RGB<->XYZ by einsum,
# RGB<->Lab (clamped cube roots), RGB<->YCbCr; then kornia.enhance's adjust_hue (fmod by 2π),
# adjust_saturation, adjust_gamma (pow at 0 with gamma above and below 1) and a differentiable
# hue/saturation/gamma fit by gradient descent on the factors
# ----------------------------------------------------------------------------------------------


def rgb_to_hsv(m, image, eps=1e-8):
    torch = m.torch
    max_rgb = image.amax(-3)
    min_rgb = image.amin(-3)
    deltac = max_rgb - min_rgb
    v = max_rgb
    s = deltac / (max_rgb + eps)
    deltac = torch.where(deltac == 0, torch.ones_like(deltac), deltac)
    rc, gc, bc = torch.unbind((max_rgb.unsqueeze(-3) - image), dim=-3)
    h1 = bc - gc
    h2 = (rc - bc) + 2.0 * deltac
    h3 = (gc - rc) + 4.0 * deltac
    r, g, b = torch.unbind(image, dim=-3)
    h = torch.where((r >= g) & (r >= b), h1, torch.where(g >= b, h2, h3))
    h = h / deltac
    h = (h / 6.0) % 1.0
    h = 2.0 * math.pi * h
    return torch.stack((h, s, v), dim=-3)


def hsv_to_rgb(m, image):
    torch = m.torch
    h = image[..., 0, :, :] / (2 * math.pi)
    s = image[..., 1, :, :]
    v = image[..., 2, :, :]
    hi = torch.floor(h * 6) % 6
    f = ((h * 6) % 6) - hi
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    hi = hi.long().clamp_(0, 5)
    m0, m1, m2, m3, m4 = (hi == 0), (hi == 1), (hi == 2), (hi == 3), (hi == 4)
    r = torch.where(m0, v, torch.where(m1, q, torch.where(m2, p, torch.where(m3, p, torch.where(m4, t, v)))))
    g = torch.where(m0, t, torch.where(m1, v, torch.where(m2, v, torch.where(m3, q, torch.where(m4, p, p)))))
    b = torch.where(m0, p, torch.where(m1, p, torch.where(m2, t, torch.where(m3, v, torch.where(m4, v, q)))))
    return torch.stack((r, g, b), dim=-3)


def rgb_to_hls(m, image, eps=1e-8):
    torch = m.torch
    _RGB2HSL_IDX = torch.tensor([[[0.0]], [[1.0]], [[2.0]]], device=image.device, dtype=image.dtype)
    _img_max = image.max(-3)
    maxc = _img_max[0]
    imax = _img_max[1]
    minc = image.min(-3)[0]
    if image.requires_grad:
        l_ = maxc + minc
        s = maxc - minc
        h = l_
        image_hls = l_
    else:
        image_hls = torch.empty_like(image)
        h, l_, s = (image_hls[..., 0, :, :], image_hls[..., 1, :, :], image_hls[..., 2, :, :])
        torch.add(maxc, minc, out=l_)
        torch.sub(maxc, minc, out=s)
    im = image / (s + eps).unsqueeze(-3)
    s /= torch.where(l_ < 1.0, l_, 2.0 - l_) + eps
    l_ /= 2
    r, g, b = im[..., 0, :, :], im[..., 1, :, :], im[..., 2, :, :]
    cond = imax[..., None, :, :] == _RGB2HSL_IDX
    if image.requires_grad:
        h = ((g - b) % 6) * cond[..., 0, :, :]
    else:
        torch.mul((g - b) % 6, cond[..., 0, :, :], out=h)
    h += (b - r + 2) * cond[..., 1, :, :]
    h += (r - g + 4) * cond[..., 2, :, :]
    h *= math.pi / 3.0
    if image.requires_grad:
        return torch.stack([h, l_, s], -3)
    return image_hls


def hls_to_rgb(m, image):
    torch = m.torch
    _HLS2RGB = torch.tensor([[[0.0]], [[8.0]], [[4.0]]], device=image.device, dtype=image.dtype)
    im = image.unsqueeze(-4)
    h_ch = im[..., 0, :, :]
    l_ch = im[..., 1, :, :]
    s_ch = im[..., 2, :, :]
    h_ch = h_ch * (6 / math.pi)
    a = s_ch * torch.min(l_ch, 1.0 - l_ch)
    k = (h_ch + _HLS2RGB) % 12
    mink = torch.min(k - 3.0, 9.0 - k)
    return torch.addcmul(l_ch, a, mink.clamp_(min=-1.0, max=1.0), value=-1)


def rgb_to_linear_rgb(m, image):
    torch = m.torch
    return torch.where(image > 0.04045, torch.pow(((image + 0.055) / 1.055), 2.4), image / 12.92)


def linear_rgb_to_rgb(m, image):
    torch = m.torch
    threshold = 0.0031308
    return torch.where(image > threshold, 1.055 * torch.pow(image.clamp(min=threshold), 1 / 2.4) - 0.055,
                       12.92 * image)


def apply_linear_transformation(m, image, kernel):
    kernel_compute = kernel.to(dtype=image.dtype, device=image.device)
    return m.torch.einsum("...chw,oc->...ohw", image, kernel_compute).contiguous()


def rgb_to_xyz(m, image):
    kernel = m.torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                             [0.019334, 0.119193, 0.950227]], device=image.device, dtype=m.torch.float32)
    return apply_linear_transformation(m, image, kernel)


def xyz_to_rgb(m, image):
    kernel = m.torch.tensor([[3.2404813432005266, -1.5371515162713185, -0.4985363261688878],
                             [-0.9692549499965682, 1.8759900014898907, 0.0415559265582928],
                             [0.0556466391351772, -0.2040413383665112, 1.0573110696453443]],
                            device=image.device, dtype=m.torch.float32)
    return apply_linear_transformation(m, image, kernel)


def rgb_to_lab(m, image):
    torch = m.torch
    lin_rgb = rgb_to_linear_rgb(m, image)
    xyz_im = rgb_to_xyz(m, lin_rgb)
    xyz_ref_white = torch.tensor([0.95047, 1.0, 1.08883], device=xyz_im.device, dtype=xyz_im.dtype)[..., :, None, None]
    xyz_normalized = torch.div(xyz_im, xyz_ref_white)
    threshold = 0.008856
    power = torch.pow(xyz_normalized.clamp(min=threshold), 1 / 3.0)
    scale = 7.787 * xyz_normalized + 4.0 / 29.0
    xyz_int = torch.where(xyz_normalized > threshold, power, scale)
    x, y, z = xyz_int[..., 0, :, :], xyz_int[..., 1, :, :], xyz_int[..., 2, :, :]
    L = (116.0 * y) - 16.0
    a = 500.0 * (x - y)
    _b = 200.0 * (y - z)
    return torch.stack([L, a, _b], dim=-3)


def lab_to_rgb(m, image, clip=True):
    torch = m.torch
    L, a, _b = image[..., 0, :, :], image[..., 1, :, :], image[..., 2, :, :]
    fy = (L + 16.0) / 116.0
    fx = (a / 500.0) + fy
    fz = fy - (_b / 200.0)
    fz = fz.clamp(min=0.0)
    fxyz = torch.stack([fx, fy, fz], dim=-3)
    power = torch.pow(fxyz, 3.0)
    scale = (fxyz - 4.0 / 29.0) / 7.787
    xyz = torch.where(fxyz > 0.2068966, power, scale)
    xyz_ref_white = torch.tensor([0.95047, 1.0, 1.08883], device=xyz.device, dtype=xyz.dtype)[..., :, None, None]
    rgb_im = linear_rgb_to_rgb(m, xyz_to_rgb(m, xyz * xyz_ref_white))
    if clip:
        rgb_im = torch.clamp(rgb_im, min=0.0, max=1.0)
    return rgb_im


def rgb_to_ycbcr(m, image):
    r, g, b = image[..., 0, :, :], image[..., 1, :, :], image[..., 2, :, :]
    delta = 0.5
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = (b - y) * 0.564 + delta
    cr = (r - y) * 0.713 + delta
    return m.torch.stack([y, cb, cr], -3)


def ycbcr_to_rgb(m, image):
    y, cb, cr = image[..., 0, :, :], image[..., 1, :, :], image[..., 2, :, :]
    delta = 0.5
    cb_shifted = cb - delta
    cr_shifted = cr - delta
    r = y + 1.403 * cr_shifted
    g = y - 0.714 * cr_shifted - 0.344 * cb_shifted
    b = y + 1.773 * cb_shifted
    return m.torch.stack([r, g, b], -3)


def colour_conversions(m, array):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    hsv = rgb_to_hsv(m, image)
    hls = rgb_to_hls(m, image)
    lab = rgb_to_lab(m, image)
    ycc = rgb_to_ycbcr(m, image)
    back = [hsv_to_rgb(m, hsv), hls_to_rgb(m, hls), lab_to_rgb(m, lab), ycbcr_to_rgb(m, ycc)]
    weights = torch.linspace(0.5, 1.5, image.shape[-1], dtype=image.dtype)
    # a loss on every space, so each branch carries a gradient to the pixels
    losses = [(hsv * weights).sum(), (hls * weights).sum(), (lab / 100 * weights).sum(), (ycc * weights).sum()]
    losses += [(b * weights).pow(2).sum() for b in back]
    grads = [torch.autograd.grad(loss, image, retain_graph=True)[0] for loss in losses]
    with torch.no_grad():
        hls_no_grad = rgb_to_hls(m, image)  # the out= and in-place branch
    return [hsv, hls, lab, ycc], back, grads, hls_no_grad


@pytest.mark.parametrize("image", ["quantised", "smooth", "float32"])
def test_kornia_colour_conversions(image):
    if image == "quantised":
        array = quantised_image((2, 3, 5, 6))
    else:
        array = smooth_image((2, 3, 5, 6))
    tolerances = dict(rtol=1e-9, atol=1e-10)
    if image == "float32":
        array, tolerances = array.astype(np.float32), dict(rtol=2e-5, atol=5e-5)
    ours, _ = run_both(colour_conversions, array, **tolerances)
    spaces, back, grads, hls_no_grad = ours
    np.testing.assert_allclose(hls_no_grad, spaces[1], rtol=1e-6, atol=1e-6)
    for rgb, atol in zip(back, (1e-6, 1e-6, 1e-6, 5e-4)):  # every round trip returns the image (YCbCr's
        np.testing.assert_allclose(rgb, array, atol=max(atol, 2e-4 if image == "float32" else 0))  # rounded)
    # by hand: V is the channel maximum, HLS's L the mid-range, Y the luma
    np.testing.assert_allclose(spaces[0][:, 2], array.max(1), rtol=1e-6)
    np.testing.assert_allclose(spaces[1][:, 1], (array.max(1) + array.min(1)) / 2, rtol=1e-6)
    np.testing.assert_allclose(spaces[3][:, 0], array.transpose(0, 2, 3, 1) @ [0.299, 0.587, 0.114], rtol=1e-6)


def adjust_hue_raw(m, image, factor):
    torch = m.torch
    factor = torch.as_tensor(factor, device=image.device, dtype=image.dtype)
    for _ in range(image.dim() - factor.dim()):
        factor = torch.unsqueeze(factor, dim=-1)
    h, s, v = torch.chunk(image, chunks=3, dim=-3)
    divisor = 2 * math.pi
    h_out = torch.fmod(h + factor, divisor)
    return torch.cat([h_out, s, v], dim=-3)


def adjust_saturation_raw(m, image, factor):
    torch = m.torch
    factor = torch.as_tensor(factor, device=image.device, dtype=image.dtype)
    for _ in range(image.dim() - factor.dim()):
        factor = torch.unsqueeze(factor, dim=-1)
    h, s, v = torch.chunk(image, chunks=3, dim=-3)
    s_out = torch.clamp(s * factor, min=0, max=1)
    return torch.cat([h, s_out, v], dim=-3)


def adjust_gamma(m, input, gamma, gain=1.0):
    torch = m.torch
    if isinstance(gamma, float):
        gamma = torch.Tensor([gamma])
    if isinstance(gain, float):
        gain = torch.Tensor([gain])
    gamma = gamma.to(input.device).to(input.dtype)
    gain = gain.to(input.device).to(input.dtype)
    for _ in range(len(input.shape) - len(gamma.shape)):
        gamma = torch.unsqueeze(gamma, dim=-1)
    for _ in range(len(input.shape) - len(gain.shape)):
        gain = torch.unsqueeze(gain, dim=-1)
    x_adjust = gain * torch.pow(input, gamma)
    return torch.clamp(x_adjust, 0.0, 1.0)


def colour_fit(m, array, target_array, steps=15):
    """Recover hue, saturation and gamma factors (one per image) by gradient descent through the conversions."""
    torch = m.torch
    image, target = torch.tensor(array), torch.tensor(target_array)
    hue = torch.zeros(image.shape[0], dtype=image.dtype, requires_grad=True)
    sat = torch.ones(image.shape[0], dtype=image.dtype, requires_grad=True)
    gamma = torch.ones(image.shape[0], dtype=image.dtype, requires_grad=True)
    optimizer = m.optim.Adam([hue, sat, gamma], lr=0.05)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        hsv = rgb_to_hsv(m, image)
        out = hsv_to_rgb(m, adjust_saturation_raw(m, adjust_hue_raw(m, hsv, hue), sat))
        out = adjust_gamma(m, out, gamma)
        loss = m.F.mse_loss(out, target)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, hue.detach(), sat.detach(), gamma.detach()


def gamma_at_zero(m, array):
    """pow at 0: gamma > 1 has gradient 0 there, gamma < 1 infinite, gamma = 1 one; the gradient for gamma is
    log(0) * 0 — PyTorch gives 0 there (the x == 0 case of pow's exponent derivative)."""
    torch = m.torch
    out = []
    for g in (0.5, 1.0, 2.2):
        x = torch.tensor(array, requires_grad=True)
        gamma = torch.full((x.shape[0],), g, dtype=x.dtype, requires_grad=True)
        y = torch.pow(x, gamma[:, None, None, None])
        y.sum().backward()
        out += [y, x.grad, gamma.grad]
    x = torch.tensor(array, requires_grad=True)
    adjust = adjust_gamma(m, x, 0.7, gain=1.5)  # clamp's gradient at the saturated pixels is 0
    (adjust * 2).sum().backward()
    return out + [adjust, x.grad]


def test_kornia_enhance_hue_saturation_gamma():
    array = smooth_image((2, 3, 6, 5), seed=1)
    target = smooth_image((2, 3, 6, 5), seed=1) ** 1.3
    ours, _ = run_both(colour_fit, array, target, rtol=1e-8, atol=1e-10)
    assert ours[0][-1] < ours[0][0]
    zeros = quantised_image((2, 1, 3, 4), levels=2, seed=2)
    assert (zeros == 0).any()
    ours, _ = run_both(gamma_at_zero, zeros, rtol=1e-12, atol=1e-12)
    at_zero = zeros == 0
    assert np.isinf(ours[1][at_zero]).all() and (ours[4][at_zero] == 1).all() and (ours[7][at_zero] == 0).all()
    assert np.isfinite(ours[2]).all()


# ----------------------------------------------------------------------------------------------
# kornia.enhance as current kornia writes it: factors checked by torch._assert_async((factor >= 0).all(), msg)
# (compile-friendly assertions), made broadcastable by factor[..., None] in a while loop; contrast,
# brightness and gamma per image, with the factors learned by gradient descent
# ----------------------------------------------------------------------------------------------


def assert_async_value_check(m, cond, msg):
    if cond.device.type == "mps":
        return
    m.torch._assert_async(cond, msg)


def adjust_contrast_kornia(m, image, factor, clip_output=True):
    if isinstance(factor, float):
        factor = m.torch.as_tensor(factor, device=image.device, dtype=image.dtype)
    elif isinstance(factor, m.torch.Tensor):
        factor = factor.to(image.device, image.dtype)
    while len(factor.shape) != len(image.shape):
        factor = factor[..., None]
    assert_async_value_check(m, (factor >= 0).all(), "Contrast factor must be non-negative. Clamp it first: "
                             "max(factor, 0.0) for floats, factor.clamp_min(0.0) for tensors.")
    img_adjust = image * factor
    if clip_output:
        img_adjust = img_adjust.clamp(min=0.0, max=1.0)
    return img_adjust


def adjust_brightness_kornia(m, image, factor, clip_output=True):
    if isinstance(factor, float):
        factor = m.torch.as_tensor(factor, device=image.device, dtype=image.dtype)
    while len(factor.shape) != len(image.shape):
        factor = factor[..., None]
    img_adjust = image + factor
    return img_adjust.clamp(min=0.0, max=1.0) if clip_output else img_adjust


def enhance_fit(m, array, target_array, steps=12):
    torch = m.torch
    image, target = torch.tensor(array), torch.tensor(target_array)
    contrast = torch.ones(image.shape[0], dtype=image.dtype, requires_grad=True)
    brightness = torch.zeros(image.shape[0], dtype=image.dtype, requires_grad=True)
    optimizer = m.optim.SGD([contrast, brightness], lr=0.5)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        out = adjust_brightness_kornia(m, adjust_contrast_kornia(m, image, contrast), brightness)
        out = adjust_gamma(m, out, torch.full((image.shape[0],), 1.1, dtype=image.dtype))
        loss = (out - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            contrast.clamp_(min=0.0)
        history.append(loss.item())
    refused = None
    try:
        adjust_contrast_kornia(m, image, torch.tensor([0.5, -0.1], dtype=image.dtype))
    except RuntimeError as error:
        refused = str(error)
    return history, contrast.detach(), brightness.detach(), refused


def test_kornia_enhance_with_assert_async_checks():
    array = 0.2 + 0.5 * smooth_image((2, 3, 5, 6), seed=37)
    target = np.clip(array * np.array([1.3, 0.8])[:, None, None, None] + 0.05, 0, 1)
    ours, _ = run_both(enhance_fit, array, target, rtol=1e-9, atol=1e-11)
    history, contrast, brightness, refused = ours
    assert history[-1] < history[0] and refused.startswith("Contrast factor must be non-negative")


def test_assert_async_checks_a_one_element_tensor(T):
    """torch._assert_async (kornia's factor checks): a zero one-element tensor is a RuntimeError, with the message
    given; a nonzero one passes; several elements are bool's ambiguity error (chainrule had no _assert_async)."""
    T._assert_async(T.tensor(True))
    T._assert_async(T.tensor(3), "unused")
    raises(RuntimeError, "Expected Tensor with single nonzero value, but got zero", T._assert_async, T.tensor(0.0))
    raises(RuntimeError, "^Gamma must be non-negative$", T._assert_async, T.tensor(False), "Gamma must be non-negative")
    raises(RuntimeError, "more than one value is ambiguous", T._assert_async, T.tensor([1, 1]))
    raises(AssertionError, "nope", T._assert, T.tensor(False), "nope")
    T._assert(True, "unused")
