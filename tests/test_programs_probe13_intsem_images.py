# ruff: noqa: B023  (the programs are kept as their authors wrote them)
"""Integer, bool and uint8 programs, run as tests/probe13_intsem_common.py says. Images: torchvision's v2 colour
kernels on uint8, int8 and int16 images (grayscale, brightness, saturation, contrast, sharpness by a 3x3 ``conv2d``
written back through a view, posterize by ``&``, solarize, autocontrast, equalize by ``scatter_add_`` into int32
histograms, invert by ``bitwise_not``/``bitwise_xor``, hue through HSV with ``fmod_``, ``remainder_`` and a
``gather`` of int32 indices, gamma, ``to_dtype`` with bit shifts); an image-loading pipeline (HWC uint8 from NumPy,
``permute``/``contiguous``/``flip``, BGR, ToTensor, Normalize, ``save_image``'s ``mul(255).add_(0.5).clamp_(0,
255).to(uint8)``, uint8 arithmetic that wraps, saturating adds, histograms)."""

import numpy as np
import pytest

from .probe13_intsem_common import outcome, typed
from .pytorch_programs import OURS, assert_same, run_both

# ----------------------------------------------------------------------------------------------
# torchvision's v2 colour kernels (transforms/v2/functional/_color.py and _misc.py), on integer images
# ----------------------------------------------------------------------------------------------


def torchvision_color(m, dtype_name):
    torch, F = m.torch, m.F
    conv2d = F.conv2d

    def _max_value(dtype):
        if dtype == torch.uint8:
            return 255
        elif dtype == torch.int8:
            return 127
        elif dtype == torch.int16:
            return 32767
        elif dtype == torch.int32:
            return 2147483647
        elif dtype == torch.int64:
            return 9223372036854775807
        else:
            return 1

    def _num_value_bits(dtype):
        if dtype == torch.uint8:
            return 8
        elif dtype == torch.int8:
            return 7
        elif dtype == torch.int16:
            return 15
        elif dtype == torch.int32:
            return 31
        elif dtype == torch.int64:
            return 63
        else:
            raise TypeError(f"Number of value bits is only defined for integer dtypes, but got {dtype}.")

    def to_dtype_image(image, dtype=torch.float, scale=False):
        if image.dtype == dtype:
            return image
        elif not scale:
            return image.to(dtype)
        float_input = image.is_floating_point()
        float_output = torch.tensor(0, dtype=dtype).is_floating_point()  # (torchvision's TorchScript branch)
        if float_input:
            if float_output:
                return image.to(dtype)
            if (image.dtype == torch.float32 and dtype in (torch.int32, torch.int64)) or (
                image.dtype == torch.float64 and dtype == torch.int64
            ):
                raise RuntimeError(f"The conversion from {image.dtype} to {dtype} cannot be performed safely.")
            eps = 1e-3
            max_value = float(_max_value(dtype))
            return image.mul(max_value + 1.0 - eps).to(dtype)
        else:
            if float_output:
                return image.to(dtype).mul_(1.0 / _max_value(image.dtype))
            num_value_bits_input = _num_value_bits(image.dtype)
            num_value_bits_output = _num_value_bits(dtype)
            if num_value_bits_input > num_value_bits_output:
                return image.bitwise_right_shift(num_value_bits_input - num_value_bits_output).to(dtype)
            else:
                return image.to(dtype).bitwise_left_shift_(num_value_bits_output - num_value_bits_input)

    def _rgb_to_grayscale_image(image, num_output_channels=1, preserve_dtype=True):
        r, g, b = image.unbind(dim=-3)
        l_img = r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114)
        l_img = l_img.unsqueeze(dim=-3)
        if preserve_dtype:
            l_img = l_img.to(image.dtype)
        if num_output_channels == 3:
            l_img = l_img.expand(image.shape)
        return l_img

    def _blend(image1, image2, ratio):
        ratio = float(ratio)
        fp = image1.is_floating_point()
        bound = _max_value(image1.dtype)
        output = image1.mul(ratio).add_(image2, alpha=(1.0 - ratio)).clamp_(0, bound)
        return output if fp else output.to(image1.dtype)

    def adjust_brightness_image(image, brightness_factor):
        fp = image.is_floating_point()
        bound = _max_value(image.dtype)
        output = image.mul(brightness_factor).clamp_(0, bound)
        return output if fp else output.to(image.dtype)

    def adjust_saturation_image(image, saturation_factor):
        grayscale_image = _rgb_to_grayscale_image(image, num_output_channels=1, preserve_dtype=False)
        if not image.is_floating_point():
            grayscale_image = grayscale_image.floor_()
        return _blend(image, grayscale_image, saturation_factor)

    def adjust_contrast_image(image, contrast_factor):
        fp = image.is_floating_point()
        grayscale_image = _rgb_to_grayscale_image(image, num_output_channels=1, preserve_dtype=False)
        if not fp:
            grayscale_image = grayscale_image.floor_()
        mean = torch.mean(grayscale_image, dim=(-3, -2, -1), keepdim=True)
        return _blend(image, mean, contrast_factor)

    def adjust_sharpness_image(image, sharpness_factor):
        num_channels, height, width = image.shape[-3:]
        bound = _max_value(image.dtype)
        fp = image.is_floating_point()
        kernel_dtype = image.dtype if fp else torch.float32
        a, b = 1.0 / 13.0, 5.0 / 13.0
        kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=kernel_dtype, device=image.device)
        kernel = kernel.expand(num_channels, 1, 3, 3)
        output = image.to(dtype=kernel_dtype, copy=True)
        blurred_degenerate = conv2d(output, kernel, groups=num_channels)
        if not fp:
            blurred_degenerate = blurred_degenerate.round_()
        view = output[..., 1:-1, 1:-1]
        view.add_(blurred_degenerate.sub_(view), alpha=(1.0 - sharpness_factor))
        output = output.clamp_(0, bound)
        if not fp:
            output = output.to(image.dtype)
        return output

    def posterize_image(image, bits):
        if image.is_floating_point():
            levels = 1 << bits
            return image.mul(levels).floor_().clamp_(0, levels - 1).mul_(1.0 / levels)
        else:
            num_value_bits = _num_value_bits(image.dtype)
            if bits >= num_value_bits:
                return image
            mask = ((1 << bits) - 1) << (num_value_bits - bits)
            return image & mask

    def invert_image(image):
        if image.is_floating_point():
            return 1.0 - image
        elif image.dtype == torch.uint8:
            return image.bitwise_not()
        else:
            return image.bitwise_xor((1 << _num_value_bits(image.dtype)) - 1)

    def solarize_image(image, threshold):
        return torch.where(image >= threshold, invert_image(image), image)

    def autocontrast_image(image):
        bound = _max_value(image.dtype)
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

    def equalize_image(image):
        output_dtype = image.dtype
        image = to_dtype_image(image, torch.uint8, scale=True)
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
        return to_dtype_image(output, output_dtype, scale=True)

    def _rgb_to_hsv(image):
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

    def _hsv_to_rgb(img):
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
        select = select[:, i]
        if select.ndim > 3:
            select = select.moveaxis(0, -3)
        return vpqt.gather(-3, select)

    def adjust_hue_image(image, hue_factor):
        orig_dtype = image.dtype
        image = to_dtype_image(image, torch.float32, scale=True)
        image = _rgb_to_hsv(image)
        h, s, v = image.unbind(dim=-3)
        h.add_(hue_factor).remainder_(1.0)
        image = torch.stack((h, s, v), dim=-3)
        image_hue_adj = _hsv_to_rgb(image)
        return to_dtype_image(image_hue_adj, orig_dtype, scale=True)

    def adjust_gamma_image(image, gamma, gain=1.0):
        if not torch.is_floating_point(image):
            output = to_dtype_image(image, torch.float32, scale=True).pow_(gamma)
        else:
            output = image.pow(gamma)
        if gain != 1.0:
            output = output.mul_(gain).clamp_(0.0, 1.0)
        return to_dtype_image(output, image.dtype, scale=True)

    rng = np.random.default_rng(0)
    dtype = getattr(torch, dtype_name)
    high = {"uint8": 256, "int8": 128, "int16": 32768}[dtype_name]
    pixels = rng.integers(0, high, (2, 3, 6, 7))
    pixels[1, :, :2] = pixels[1, 0, :2]  # a gray patch: S = 0, and maxc == minc in HSV
    image = torch.tensor(pixels).to(dtype)
    out = {}
    out["gray"] = typed(_rgb_to_grayscale_image(image))
    out["gray3"] = typed(_rgb_to_grayscale_image(image, num_output_channels=3))
    out["brightness"] = typed(adjust_brightness_image(image, 1.7))
    out["saturation"] = typed(adjust_saturation_image(image, 0.3))
    out["contrast"] = typed(adjust_contrast_image(image, 1.6))
    out["sharpness"] = typed(adjust_sharpness_image(image, 2.5))
    out["posterize"] = typed(posterize_image(image, 3))
    out["invert"] = typed(invert_image(image))
    out["solarize"] = typed(solarize_image(image, _max_value(image.dtype) // 2))
    out["autocontrast"] = typed(autocontrast_image(image))
    out["equalize"] = typed(equalize_image(image))
    out["hue"] = typed(adjust_hue_image(image, 0.2))
    out["gamma"] = typed(adjust_gamma_image(image, 0.7, gain=1.2))
    for target in ("uint8", "int8", "int16", "int32", "float32", "float64"):
        out[f"to_{target}"] = outcome(lambda: to_dtype_image(image, getattr(torch, target), scale=True))
    as_float = to_dtype_image(image, torch.float32, scale=True)
    out["float_back"] = typed(to_dtype_image(as_float, dtype, scale=True))
    out["float_to_int32"] = outcome(lambda: to_dtype_image(as_float, torch.int32, scale=True))
    return out


# the kernels that blend by add_(other, alpha=1 - ratio) before truncating to integers: PyTorch's add with alpha is
# one fused multiply-add (a single rounding), chainrule's rounds alpha · other first, so a float32 sum that lands
# within an ulp of a whole number may truncate one lower (see test_add_with_alpha_rounds_once)
BLENDED = {"saturation", "contrast", "sharpness"}


@pytest.mark.parametrize("dtype_name", ["uint8", "int8", "int16"])
def test_torchvision_color_kernels_on_integer_images(dtype_name):
    ours, theirs = run_both(torchvision_color, dtype_name, compare=False)
    if theirs is not None:
        assert set(ours) == set(theirs)
        for key in ours:
            assert_same(ours[key], theirs[key], rtol=0, atol=1 if key in BLENDED else 0, where=key)
    assert ours["posterize"][0] == dtype_name and ours["hue"][0] == dtype_name
    assert ours["to_float32"] == ours["to_float32"] and ours["to_float32"][0] == "float32"
    if dtype_name == "uint8":  # by hand: invert is 255 - x, posterize to 3 bits keeps the top three
        image = OURS.torch.tensor(np.random.default_rng(0).integers(0, 256, (2, 3, 6, 7))).numpy()
        image[1, :, :2] = image[1, 0, :2]
        np.testing.assert_array_equal(ours["invert"][1], 255 - image)
        np.testing.assert_array_equal(ours["posterize"][1], image & 0b11100000)
        assert ours["float_to_int32"] == ("error", "RuntimeError", "other")


# ----------------------------------------------------------------------------------------------
# An image-loading pipeline on uint8: NumPy HWC in, normalised CHW float out, saved back as uint8
# ----------------------------------------------------------------------------------------------


def image_pipeline(m):
    torch = m.torch
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, (8, 10, 3)).astype(np.uint8)
    noise = rng.integers(0, 256, (3, 8, 10)).astype(np.uint8)
    out = {}
    img = torch.from_numpy(hwc)
    chw = img.permute(2, 0, 1).contiguous()
    out["chw"] = typed(chw)
    bgr = chw[[2, 1, 0]]
    out["bgr_flip"] = typed(torch.flip(chw, dims=[0]))
    out["same_bgr"] = bool(torch.equal(bgr, chw.flip(0)))
    out["hflip"] = typed(chw.flip(-1))
    out["crop"] = typed(chw[:, 1:7, 2:9])
    # ToTensor / Normalize
    x = chw.float().div(255)
    out["to_tensor"] = typed(x)
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    x_norm = x.clone().sub_(mean[:, None, None]).div_(std[:, None, None])
    out["normalized"] = typed(x_norm)
    # save_image: denormalise, then mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8)
    back = x_norm * std.view(-1, 1, 1) + mean.view(-1, 1, 1)
    ndarr = back.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8)
    out["saved"] = typed(ndarr)
    out["roundtrip"] = bool(torch.equal(ndarr, img))
    # arithmetic on uint8: wraps, true division gives floats, floor division stays uint8
    n = torch.from_numpy(noise)
    out["wrap_add"] = typed(chw + n)
    out["wrap_sub"] = typed(chw - 10)
    out["wrap_mul"] = typed(chw * 2)
    out["rsub"] = typed(255 - chw)
    out["neg_int_add"] = typed(chw + (-3))
    out["saturating_add"] = typed((chw.int() + n).clamp(0, 255).byte())
    out["saturating_sub"] = typed((chw.to(torch.int16) - n).clamp_(0, 255).to(torch.uint8))
    out["average"] = typed(((chw.to(torch.int16) + n) // 2).to(torch.uint8))
    out["true_div"] = typed(chw / 2)
    out["floor_div"] = typed(chw // 3)
    out["shift"] = typed(chw >> 4)
    out["mask"] = typed(chw & 0xF0)
    out["to_pm1"] = typed(chw.float() / 255 * 2 - 1)
    out["mean_rgb"] = typed(chw.float().mean(dim=(1, 2)))
    out["sum"] = typed(chw.sum())
    out["sum_dim"] = typed(chw.sum(dim=0))
    out["max"] = typed(chw.max())
    out["amax"] = typed(chw.amax(dim=(1, 2)))
    out["bright"] = typed((chw > 128).sum())
    out["bincount"] = typed(torch.bincount(chw.flatten(), minlength=256))
    out["histc"] = typed(torch.histc(chw.float(), bins=16, min=0, max=255))
    out["clamp_neg"] = typed(chw.clamp(min=-1))  # (-1 is 255 in uint8: everything becomes 255)
    out["clamp_neg_"] = typed(chw.clone().clamp_(-1, 200))  # (and in place: min 255 > max 200, all 200)
    out["blend"] = typed((chw.float() * 0.3 + n.float() * 0.7).to(torch.uint8))
    out["gray"] = typed((0.299 * chw[0] + 0.587 * chw[1] + 0.114 * chw[2]).round().to(torch.uint8))
    out["numpy_back"] = typed(torch.from_numpy(ndarr.numpy().astype(np.int16)))
    return out


def test_image_pipeline_on_uint8():
    ours, _ = run_both(image_pipeline, rtol=1e-6, atol=1e-6)
    assert ours["roundtrip"] is True and ours["same_bgr"] is True
    assert ours["wrap_add"][0] == "uint8" and ours["true_div"][0] == "float32" and ours["sum"][0] == "int64"
    hwc = np.random.default_rng(1).integers(0, 256, (8, 10, 3)).astype(np.uint8)
    chw = hwc.transpose(2, 0, 1)
    np.testing.assert_array_equal(ours["wrap_sub"][1], (chw - np.uint8(10)))  # (NumPy's uint8 wraps too)
    np.testing.assert_array_equal(ours["rsub"][1], 255 - chw)
    assert (ours["clamp_neg"][1] == 255).all() and (ours["clamp_neg_"][1] == 200).all()
