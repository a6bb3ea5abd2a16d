# ruff: noqa: E501, E731, E741, N806  (the programs are kept as their authors wrote them)
"""Padding and resampling programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the
same weights and inputs, comparing outputs and gradients, and checked without PyTorch against literals worked out
once (and against PyTorch then) and invariants that can fail.

A CycleGAN/pix2pix ResNet generator (``ReflectionPad2d`` around 7x7 convolutions and inside residual blocks,
``InstanceNorm2d``, strided and transposed convolutions); Johnson's style-transfer upsampling layer (nearest
``interpolate`` then a reflection-padded convolution); an ESRGAN-style upsampler (nearest x2 twice with
convolutions, ``LeakyReLU``); a U-Net/FPN decoder resizing to a skip's odd size (bilinear with ``align_corners``
both ways, nearest to ``size=``, ``recompute_scale_factor``, scale factors 1.5, 0.5 and 0.3); a 3-D medical
segmentation head (``ReplicationPad3d``, ``Conv3d`` with ``padding_mode='replicate'``, trilinear to an odd size,
channels_last_3d); StyleGAN's upfirdn2d written with pads (zero insertion by reshape and pad, negative pads that
crop mixed with positive ones, a flipped FIR kernel); audio: a multi-resolution STFT loss with reflect-padded
centred frames, a 1-D replicate pad of a long signal and nearest 1-D upsampling by 2 and by 3 (a vocoder's
upsampling), an ``istft`` round trip, MelGAN's generator (``ReflectionPad1d``, weight-normed
convolutions) and Demucs's ``pad1d`` reflecting a signal shorter than its pad; WGAN-GP and R1 gradient penalties (``create_graph=True``) through reflection,
replication and circular pads and bilinear and nearest upsampling, in float64; gradcheck and gradgradcheck of the
pads and the resamplings."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of


def images(n=2, c=3, h=12, w=10, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(dtype)


def resnet_generator(m, channels=3, width=8, blocks=2):
    nn = m.nn

    class ResnetBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
                nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim))

        def forward(self, x):
            return x + self.conv_block(x)

    layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7), nn.InstanceNorm2d(width), nn.ReLU(True),
              nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * width), nn.ReLU(True)]
    layers += [ResnetBlock(2 * width) for _ in range(blocks)]
    layers += [nn.ConvTranspose2d(2 * width, width, 3, stride=2, padding=1, output_padding=1),
               nn.InstanceNorm2d(width), nn.ReLU(True), nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def cyclegan_step(m, weights, x, y):
    torch = m.torch
    G = load(m, resnet_generator(m), weights)
    real = torch.tensor(x)
    fake = G(real)
    loss = (fake - torch.tensor(y)).abs().mean()  # the cycle/identity L1 term
    loss.backward()
    return {"fake": fake, "loss": loss, "grads": [p.grad for p in G.parameters()], "node": fake.grad_fn.name()}


def test_cyclegan_resnet_generator_with_reflection_pads():
    weights = weights_of(resnet_generator)
    x, y = images(seed=1), np.tanh(images(seed=2))
    ours, _ = run_both(cyclegan_step, weights, x, y, rtol=2e-4, atol=2e-5)
    assert ours["fake"].shape == (2, 3, 12, 10) and ours["node"] == "TanhBackward0"
    assert np.abs(ours["fake"]).max() < 1
    assert ours["loss"] == pytest.approx(0.62868, abs=2e-5)


def style_upsample_block(m, weights, x):
    """Johnson et al.'s UpsampleConvLayer: nearest upsampling, then a reflection-padded convolution."""
    torch, nn, F = m.torch, m.nn, m.F

    class UpsampleConvLayer(nn.Module):
        def __init__(self, cin, cout, kernel_size, upsample=None):
            super().__init__()
            self.upsample = upsample
            self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
            self.conv2d = nn.Conv2d(cin, cout, kernel_size)

        def forward(self, x):
            if self.upsample:
                x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
            return self.conv2d(self.reflection_pad(x))

    layer = UpsampleConvLayer(3, 4, 3, upsample=2)
    layer.conv2d.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    inp = torch.tensor(x, requires_grad=True)
    out = layer(inp)
    gram = torch.einsum("bchw,bdhw->bcd", out, out) / out[0].numel()  # the style loss's Gram matrices
    gram.sum().backward()
    return {"out": out, "gram": gram, "grad": inp.grad}


def test_style_transfer_upsample_conv_layer():
    weights = weights_of(lambda m: m.nn.Conv2d(3, 4, 3))
    ours, _ = run_both(style_upsample_block, weights, images(1, 3, 5, 7))
    assert ours["out"].shape == (1, 4, 10, 14)
    np.testing.assert_allclose(ours["gram"][0], ours["gram"][0].T, rtol=1e-6)  # a Gram matrix is symmetric
    # the input gradient of a nearest x2 is the sum of each 2x2 block of the padded conv's input gradient
    assert ours["grad"].shape == (1, 3, 5, 7) and np.isfinite(ours["grad"]).all()


def esrgan_upsampler(m, weights, x):
    torch, nn, F = m.torch, m.nn, m.F
    convs = nn.ModuleList([nn.Conv2d(4, 4, 3, 1, 1) for _ in range(3)])
    load(m, convs, weights)
    lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
    feat = torch.tensor(x, requires_grad=True)
    out = lrelu(convs[0](F.interpolate(feat, scale_factor=2, mode="nearest")))
    out = lrelu(convs[1](F.interpolate(out, scale_factor=2, mode="nearest")))
    out = convs[2](out)
    out.pow(2).mean().backward()
    return {"out": out, "grad": feat.grad, "wgrad": [p.grad for p in convs.parameters()]}


def test_esrgan_nearest_upsampling_with_convolutions():
    weights = weights_of(lambda m: m.nn.ModuleList([m.nn.Conv2d(4, 4, 3, 1, 1) for _ in range(3)]))
    ours, _ = run_both(esrgan_upsampler, weights, images(2, 4, 6, 5, seed=3))
    assert ours["out"].shape == (2, 4, 24, 20)
    assert float(np.square(ours["out"]).mean()) == pytest.approx(0.017776, rel=1e-4)


def unet_decoder(m, x, skips):
    """Decoder steps as U-Net, FPN and DeepLab write them: resize to the skip's size (odd sizes), concatenate or add."""
    torch, F = m.torch, m.F
    deep = torch.tensor(x, requires_grad=True)
    outs = {}
    for name, skip_shape in skips.items():
        skip = torch.ones(skip_shape)
        up_t = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        up_f = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        up_n = F.interpolate(deep, size=skip.shape[2:], mode="nearest")
        outs[name] = torch.cat([up_t, up_f, up_n, skip], dim=1)
    outs["x1.5"] = F.interpolate(deep, scale_factor=1.5, mode="bilinear", align_corners=False, recompute_scale_factor=True)
    outs["x0.5"] = F.interpolate(deep, scale_factor=0.5, mode="bilinear", align_corners=False)
    outs["x0.3"] = F.interpolate(deep, scale_factor=0.3, mode="nearest")
    up = F.interpolate(deep, scale_factor=2, mode="bilinear", align_corners=False)
    up += 1.0  # (FPN adds the lateral in place: the result is a fresh tensor)
    outs["x2"] = up
    total = sum((o * (k + 1)).sum() for k, o in enumerate(outs.values()))
    (grad,) = torch.autograd.grad(total, deep)
    outs["grad"] = grad
    outs["node"] = outs["x1.5"].grad_fn.name()
    return outs


def test_unet_fpn_decoder_resizes_to_skips():
    skips = {"s1": (2, 1, 11, 9), "s2": (2, 1, 23, 17), "s3": (2, 1, 3, 3)}
    x = images(2, 2, 6, 5, seed=4)
    ours, _ = run_both(unet_decoder, x, skips)
    assert ours["s2"].shape == (2, 7, 23, 17) and ours["x0.3"].shape == (2, 2, 1, 1)
    assert ours["x1.5"].shape == (2, 2, 9, 7) and ours["node"] == "UpsampleBilinear2DBackward0"
    # align_corners=True keeps the corners; nearest to a smaller size reads input rows floor(o * 6 / 3)
    np.testing.assert_array_equal(ours["s1"][:, :2, [0, -1]][..., [0, -1]], x[:, :, [0, -1]][..., [0, -1]])
    np.testing.assert_array_equal(ours["s3"][:, 4:6], x[:, :, [0, 2, 4]][..., [0, 1, 3]])
    np.testing.assert_allclose(ours["x2"] - 1, np.kron(x.mean((2, 3), keepdims=True), np.ones((12, 10))),
                               atol=4)  # (a loose sanity bound on a bilinear x2)
    # every output reads weights summing to 1: the gradient of each map's sum sums to that map's element count
    counts = [np.prod(skips[k][2:]) * 3 * (i + 1) for i, k in enumerate(skips)]
    counts += [9 * 7 * 4, 3 * 2 * 5, 1 * 1 * 6, 12 * 10 * 7]
    assert float(ours["grad"].sum()) == pytest.approx(2 * 2 * sum(counts), rel=1e-5)


def medical_head(m, weights, x):
    torch, nn, F = m.torch, m.nn, m.F
    head = nn.Sequential(nn.ReplicationPad3d(1), nn.Conv3d(2, 3, 3), nn.ReLU(),
                         nn.Conv3d(3, 2, 3, padding=1, padding_mode="replicate"))
    load(m, head, weights)
    vol = torch.tensor(x).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    logits = F.interpolate(head(vol), size=(9, 7, 11), mode="trilinear", align_corners=False)
    probs = logits.softmax(1)
    dice = 1 - (2 * probs[:, 1].sum() + 1) / (probs[:, 1].pow(2).sum() + 1 + 9 * 7 * 11 * x.shape[0])
    dice.backward()
    return {"logits": logits, "dice": dice, "grad": vol.grad, "wgrad": [p.grad for p in head.parameters()],
            "cl": logits.is_contiguous(memory_format=torch.channels_last_3d)}


def test_medical_volume_replication_pad_and_trilinear():
    make = lambda m: m.nn.Sequential(m.nn.ReplicationPad3d(1), m.nn.Conv3d(2, 3, 3), m.nn.ReLU(),
                                     m.nn.Conv3d(3, 2, 3, padding=1, padding_mode="replicate"))
    weights = weights_of(make)
    x = np.random.default_rng(5).standard_normal((1, 2, 4, 5, 6)).astype(np.float32)
    ours, _ = run_both(medical_head, weights, x)
    assert ours["logits"].shape == (1, 2, 9, 7, 11)
    assert float(ours["dice"]) == pytest.approx(0.19057, abs=1e-5)


def upfirdn2d(m, x, kernel, up, down, pad):
    """StyleGAN2's upfirdn2d written with pads (its reference, native path): zeros inserted by reshape and pad,
    pads that may crop, a flipped FIR kernel, then every ``down``-th sample."""
    torch, F = m.torch, m.F
    b, c, h, w = x.shape
    x = x.reshape(b * c, 1, h, 1, w, 1)
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape(b * c, 1, h * up, w * up)
    x = F.pad(x, [max(pad[0], 0), max(pad[1], 0), max(pad[2], 0), max(pad[3], 0)])
    x = x[:, :, max(-pad[2], 0): x.shape[2] - max(-pad[3], 0), max(-pad[0], 0): x.shape[3] - max(-pad[1], 0)]
    w_ = torch.flip(kernel, [0, 1]).view(1, 1, *kernel.shape)
    x = F.conv2d(x, w_)
    return x[:, :, ::down, ::down].reshape(b, c, -1, x.shape[-1] // 1)[:, :, :, ::down] if down > 1 else x.reshape(b, c, x.shape[-2], x.shape[-1])


def stylegan_blur(m, x):
    torch, F = m.torch, m.F
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None, :] * k[:, None]
    k = k / k.sum() * 4  # an upsampling FIR's gain: up ** 2
    inp = torch.tensor(x, requires_grad=True)
    up = upfirdn2d(m, inp, k, up=2, down=1, pad=(2, 1, 2, 1))
    cropped = F.pad(up, (-1, 2, 1, -2), mode="replicate")  # crops on one side, pads on the other
    mirrored = F.pad(up, (2, -1, -2, 1), mode="reflect")
    circled = F.pad(up, (1, 0, -2, 1), mode="circular")
    loss = (cropped * mirrored - circled).square().sum()
    (g,) = torch.autograd.grad(loss, inp, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), inp)
    return {"up": up, "cropped": cropped, "mirrored": mirrored, "circled": circled, "g": g, "gg": gg}


def test_stylegan_upfirdn_by_pads_with_crops():
    x = images(1, 2, 4, 5, seed=6)
    ours, _ = run_both(stylegan_blur, x, rtol=1e-4, atol=1e-5)
    assert ours["up"].shape == (1, 2, 8, 10)
    assert float(ours["up"].sum()) == pytest.approx(25.81423, rel=1e-5)
    assert ours["cropped"].shape == ours["mirrored"].shape == ours["circled"].shape == (1, 2, 7, 11)
    np.testing.assert_array_equal(ours["cropped"][..., 1:, :9], ours["up"][..., :6, 1:])  # (rows from -1, columns from 1)
    np.testing.assert_array_equal(ours["cropped"][..., 1:, 9:], ours["up"][..., :6, 9:].repeat(2, -1))  # (the edge)
    np.testing.assert_array_equal(ours["cropped"][..., 0, :], ours["cropped"][..., 1, :])  # (row -1 is row 0)
    np.testing.assert_array_equal(ours["mirrored"][..., :6, 2:], ours["up"][..., 2:, :9])
    np.testing.assert_array_equal(ours["mirrored"][..., :6, 0], ours["up"][..., 2:, 2])  # (mirrored about column 0)
    np.testing.assert_array_equal(ours["mirrored"][..., 6, 2:], ours["up"][..., 6, :9])  # (about the last row)


def audio_losses(m, signal, target):
    torch, F = m.torch, m.F
    x = torch.tensor(signal, requires_grad=True)
    y = torch.tensor(target)
    loss = 0
    for n_fft, hop in ((64, 16), (128, 32), (32, 8)):
        window = torch.hann_window(n_fft, dtype=x.dtype)  # (float64: float32 FFTs round near-empty bins apart)
        X = torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True).abs()
        Y = torch.stft(y, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True).abs()
        sc = torch.norm(Y - X, p="fro") / torch.norm(Y, p="fro")
        mag = F.l1_loss(torch.log(X.clamp(min=1e-7)), torch.log(Y.clamp(min=1e-7)))
        loss = loss + sc + mag
    # a vocoder's conditioning: 1-D replicate pads of a long sequence, nearest upsampling by 2 and 3
    frames = x.reshape(2, 1, -1)[:, :, ::50]
    padded = F.pad(frames, (7, 9), mode="replicate")
    up2 = F.interpolate(padded, scale_factor=2, mode="nearest")
    up3 = F.interpolate(padded, scale_factor=3, mode="nearest")
    loss = loss + up2.square().mean() + up3.abs().mean()
    loss.backward()
    w = torch.hann_window(64, dtype=x.dtype)
    roundtrip = torch.istft(torch.stft(x.detach(), 64, 16, window=w, return_complex=True), 64, 16, window=w,
                            length=signal.shape[-1])
    return {"loss": loss, "grad": x.grad, "up3": up3, "roundtrip": roundtrip}


def test_audio_multi_resolution_stft_loss_and_1d_resampling():
    rng = np.random.default_rng(7)
    t = np.arange(1600) / 16000
    signal = (np.sin(2 * np.pi * 440 * t)[None] * [[1.0], [0.5]] + 0.05 * rng.standard_normal((2, 1600)))
    target = (np.sin(2 * np.pi * 440 * t)[None] * [[0.9], [0.6]] + 0.05 * rng.standard_normal((2, 1600)))
    ours, _ = run_both(audio_losses, signal, target, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["roundtrip"], signal, atol=1e-5)  # centred Hann frames at 1/4 hop invert
    frames = signal[:, ::50]
    np.testing.assert_array_equal(ours["up3"][:, 0, :21], np.repeat(frames[:, :1], 21, 1))  # (7 replicated) x 3
    np.testing.assert_array_equal(ours["up3"][:, 0, 21:24], np.repeat(frames[:, :1], 3, 1))
    np.testing.assert_array_equal(ours["up3"][:, 0, 24::3], np.concatenate([frames[:, 1:], np.repeat(frames[:, -1:], 9, 1)], 1))
    assert float(ours["loss"]) == pytest.approx(3.0886679, rel=1e-6)


def gradient_penalties(m, weights, x):
    torch, nn = m.torch, m.nn
    D = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3, 4, 3), nn.Softplus(),
                      nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                      nn.ReplicationPad2d((1, 0, 2, 1)), nn.Conv2d(4, 2, 3), nn.Softplus(), nn.Upsample(scale_factor=2),
                      nn.Conv2d(2, 1, 3, padding=1, padding_mode="circular")).double()
    load(m, D, weights)
    real = torch.tensor(x)
    fake = torch.tensor(x[::-1].copy()) * 0.5
    alpha = torch.tensor(np.array([0.3, 0.7]).reshape(2, 1, 1, 1))
    interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(D(interp).sum(), interp, create_graph=True)
    gp = ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()  # WGAN-GP
    real.requires_grad_(True)
    (gr,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
    r1 = gr.pow(2).reshape(2, -1).sum(1).mean()  # R1
    (10 * gp + 5 * r1).backward()
    return {"gp": gp, "r1": r1, "grads": [p.grad for p in D.parameters()]}


def test_wgan_gp_and_r1_penalties_through_pads_and_upsampling():
    make = lambda m: m.nn.Sequential(m.nn.ReflectionPad2d(1), m.nn.Conv2d(3, 4, 3), m.nn.Softplus(),
                                     m.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                     m.nn.ReplicationPad2d((1, 0, 2, 1)), m.nn.Conv2d(4, 2, 3), m.nn.Softplus(),
                                     m.nn.Upsample(scale_factor=2),
                                     m.nn.Conv2d(2, 1, 3, padding=1, padding_mode="circular")).double()
    weights = weights_of(make)
    ours, _ = run_both(gradient_penalties, weights, images(2, 3, 6, 7, seed=8, dtype=np.float64), rtol=1e-9, atol=1e-11)
    assert float(ours["gp"]) == pytest.approx(86.5408, rel=1e-5)
    assert float(ours["r1"]) == pytest.approx(100.38935, rel=1e-6)
    assert ours["grads"][-1] is None  # (the last bias moves no gradient of the input)
    assert all(np.isfinite(g).all() for g in ours["grads"][:-1])


@pytest.mark.parametrize("case", ["reflect", "replicate", "circular", "nearest", "nearest-exact", "linear",
                                  "bilinear", "trilinear", "bicubic"])
def test_gradcheck_and_gradgradcheck_in_float64(case):
    torch, F = OURS.torch, OURS.F
    rng = np.random.default_rng(9)
    if case in ("reflect", "replicate", "circular"):
        x = torch.tensor(rng.standard_normal((1, 2, 4, 5)), requires_grad=True)
        fn = lambda x: F.pad(x, (2, -1, 1, 3), mode=case)
    else:
        spatial = {"linear": 1, "trilinear": 3}.get(case, 2)
        x = torch.tensor(rng.standard_normal((1, 2) + (3, 4, 5)[:spatial]), requires_grad=True)
        corners = {} if "nearest" in case else {"align_corners": case == "bilinear"}
        fn = lambda x: F.interpolate(x, scale_factor=1.7, mode=case, **corners)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def melgan(m, c=4):
    nn = m.nn
    wn = nn.utils.weight_norm
    class ResStack(nn.Module):
        def __init__(self, ch, d):
            super().__init__()
            self.block = nn.Sequential(nn.LeakyReLU(0.2), nn.ReflectionPad1d(d), wn(nn.Conv1d(ch, ch, 3, dilation=d)),
                                       nn.LeakyReLU(0.2), wn(nn.Conv1d(ch, ch, 1)))
            self.shortcut = wn(nn.Conv1d(ch, ch, 1))
        def forward(self, x): return self.shortcut(x) + self.block(x)
    return nn.Sequential(nn.ReflectionPad1d(3), wn(nn.Conv1d(5, 8, 7)), nn.LeakyReLU(0.2),
        wn(nn.ConvTranspose1d(8, c, 8, stride=4, padding=2)), ResStack(c, 1), ResStack(c, 3), ResStack(c, 9),
        nn.LeakyReLU(0.2), nn.ReflectionPad1d(3), wn(nn.Conv1d(c, 1, 7)), nn.Tanh())
def melgan_step(m, weights, mel):
    torch, F = m.torch, m.F
    G = load(m, melgan(m), weights)
    x = torch.tensor(mel, requires_grad=True)
    audio = G(x)
    # Demucs's pad1d: reflect where the signal is shorter than the pad, by zero padding first
    def pad1d(x, paddings, mode="reflect", value=0.0):
        length = x.shape[-1]
        l, r = paddings
        if mode == "reflect":
            max_pad = max(l, r)
            extra = 0
            if length <= max_pad:
                extra = max_pad - length + 1
                x = F.pad(x, (0, extra))
            padded = F.pad(x, paddings, mode, value)
            end = padded.shape[-1] - extra
            return padded[..., :end]
        return F.pad(x, paddings, mode, value)
    short = pad1d(audio[..., :5], (7, 9))
    loss = audio.square().mean() + short.abs().sum()
    loss.backward()
    return {"audio": audio, "short": short, "grad": x.grad, "w": [p.grad for p in G.parameters()]}

@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
def test_melgan_generator_and_demucs_pad1d_on_a_short_signal():
    """MelGAN's generator (ReflectionPad1d around weight-normed convolutions, dilated residual stacks) and Demucs's
    pad1d, which reflects a signal shorter than its pad after padding it with zeros."""
    weights = weights_of(melgan)
    mel = np.random.default_rng(0).standard_normal((2, 5, 10)).astype(np.float32)
    ours, _ = run_both(melgan_step, weights, mel, rtol=1e-4, atol=1e-6)
    assert ours["audio"].shape == (2, 1, 40) and ours["short"].shape == (2, 1, 21)
    head = np.concatenate([ours["audio"][..., :5], np.zeros((2, 1, 3), np.float32)], -1)  # (5 samples and 3 zeros)
    np.testing.assert_array_equal(ours["short"][..., 7:12], head[..., :5])
    np.testing.assert_array_equal(ours["short"][..., :7], head[..., 7:0:-1])  # (mirrored about sample 0)
    assert float(np.square(ours["audio"]).mean()) == pytest.approx(0.00351202, rel=1e-5)
