# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Programs built on complex numbers (see tests/pytorch_programs.py), each run on chainrule and on PyTorch, comparing
values and gradients (PyTorch's conjugate convention: z.grad = ∂L/∂Re z + i ∂L/∂Im z), and where PyTorch is absent
checked against NumPy by hand or finite differences. Fourier optics, imaging and audio: phase retrieval
(``torch.polar``, ``fft2(norm="ortho")``, an amplitude loss); computer-generated holography (``torch.exp(1j *
phase)``, ``fftshift``, SGD with momentum); compressed-sensing MRI (masked k-space, ``ifftshift``/``fftshift``, a
total-variation prior through ``abs``, gradient steps under ``no_grad``, data consistency, root-sum-of-squares);
angular-spectrum wave propagation (``fftfreq``, ``meshgrid``, a complex transfer function); a phase vocoder (``stft``
→ ``angle``/``polar``/``cumsum`` → ``istft``) and Griffin-Lim."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# Phase retrieval and holography: optimise a phase so that a Fourier magnitude matches
# ----------------------------------------------------------------------------------------------


def phase_retrieval_data():
    rng = np.random.default_rng(0)
    obj = np.exp(1j * rng.uniform(-1, 1, (8, 8))) * (rng.uniform(size=(8, 8)) > 0.3)
    return np.abs(np.fft.fft2(obj)), np.abs(obj) > 0


def phase_retrieval(m):
    torch = m.torch
    meas, supp = phase_retrieval_data()
    target, support = torch.tensor(meas), torch.tensor(supp)
    phase = torch.zeros(8, 8, dtype=torch.float64, requires_grad=True)
    opt = m.optim.Adam([phase], lr=0.1)
    history = []
    for i in range(20):
        opt.zero_grad()
        field = torch.polar(support.double(), phase)
        spectrum = torch.fft.fft2(field, norm="ortho")
        loss = ((spectrum.abs() - target / 8) ** 2).mean()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "phase": phase.detach(), "angle": torch.angle(spectrum).detach()}


def test_phase_retrieval():
    ours, _ = run_both(phase_retrieval, rtol=1e-8, atol=1e-10)
    meas, supp = phase_retrieval_data()
    first = np.mean((np.abs(np.fft.fft2(supp.astype(float), norm="ortho")) - meas / 8) ** 2)
    assert ours["history"][0] == pytest.approx(first, rel=1e-12)
    assert ours["history"][-1] < ours["history"][0]


def hologram(m):
    torch = m.torch
    rng = np.random.default_rng(2)
    target = torch.tensor(rng.uniform(size=(16, 16)))
    slm = torch.tensor(rng.uniform(-math.pi, math.pi, (16, 16)), requires_grad=True)
    opt = m.optim.SGD([slm], lr=0.5, momentum=0.9)
    history, first_grad = [], None
    for i in range(10):
        opt.zero_grad()
        u = torch.exp(1j * slm)
        img = torch.fft.fftshift(torch.fft.fft2(u, norm="ortho"))
        intensity = img.abs() ** 2
        scale = (intensity * target).sum() / (intensity ** 2).sum()
        loss = m.F.mse_loss(scale * intensity, target)
        loss.backward()
        if first_grad is None:
            first_grad = slm.grad.clone()
        opt.step()
        history.append(loss.item())
    return {"history": history, "first_grad": first_grad, "grad": slm.grad}


def test_computer_generated_hologram():
    ours, _ = run_both(hologram, rtol=1e-8, atol=1e-10)
    # the first gradient against central differences of the same loss in NumPy
    rng = np.random.default_rng(2)
    target = rng.uniform(size=(16, 16))
    slm = rng.uniform(-math.pi, math.pi, (16, 16))

    def loss(phase):
        intensity = np.abs(np.fft.fft2(np.exp(1j * phase), norm="ortho")) ** 2
        intensity = np.fft.fftshift(intensity)
        scale = (intensity * target).sum() / (intensity ** 2).sum()
        return np.mean((scale * intensity - target) ** 2)

    for i, j in [(0, 0), (3, 7), (15, 2)]:
        step = np.zeros_like(slm)
        step[i, j] = 1e-6
        assert ours["first_grad"][i, j] == pytest.approx((loss(slm + step) - loss(slm - step)) / 2e-6, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Compressed-sensing MRI: masked k-space, a total-variation prior, gradient steps, data consistency
# ----------------------------------------------------------------------------------------------


def mri_data():
    rng = np.random.default_rng(3)
    img = rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))
    mask = rng.uniform(size=(16, 16)) < 0.4
    mask[:, :3] = True
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)) * mask
    return kspace.astype(np.complex64), mask


def mri(m):
    torch = m.torch
    ks, mask = mri_data()
    kspace, M = torch.tensor(ks), torch.tensor(mask)

    def A(x):
        return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)) * M

    def AH(k):
        return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k * M, dim=(-2, -1)), norm="ortho"),
                                  dim=(-2, -1))

    zero_filled = AH(kspace)
    x = zero_filled.clone().requires_grad_(True)
    lam = torch.tensor(0.01)
    history = []
    for it in range(8):
        dc = (A(x) - kspace).abs().pow(2).sum()
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., :, 1:] - x[..., :, :-1]).abs().sum()
        loss = dc + lam * tv
        g, = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= 0.2 * g
        history.append(loss.item())
    consistent = AH(kspace + (1 - M.to(kspace.dtype)) * A(x))
    rss = torch.sqrt((consistent.abs() ** 2).sum(0))
    return {"history": history, "rss": rss.detach(), "zero_filled": zero_filled.abs(), "last_grad": g,
            "dtype": str(x.dtype).split(".")[-1]}


def test_compressed_sensing_mri():
    ours, _ = run_both(mri, rtol=1e-4, atol=1e-5)
    ks, mask = mri_data()
    zero_filled = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(ks * mask, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(ours["zero_filled"], np.abs(zero_filled), rtol=1e-4, atol=1e-5)
    assert ours["dtype"] == "complex64"
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Angular-spectrum propagation of a field, differentiated with respect to its phase
# ----------------------------------------------------------------------------------------------


def angular_spectrum(m, phase0=None):
    torch = m.torch
    n, dx, wl, z = 32, 4e-6, 0.5e-6, 1e-4
    fx = torch.fft.fftfreq(n, d=dx, dtype=torch.float64)
    FX, FY = torch.meshgrid(fx, fx, indexing="ij")
    arg = 1 / wl ** 2 - FX ** 2 - FY ** 2
    kz = 2 * math.pi * torch.sqrt(torch.clamp(arg, min=0))
    H = torch.exp(1j * kz * z) * (arg > 0)
    rng = np.random.default_rng(4)
    amp = torch.tensor(rng.uniform(size=(n, n)))
    target = torch.tensor(rng.uniform(size=(n, n)))
    phase = torch.tensor(rng.uniform(-1, 1, (n, n)) if phase0 is None else phase0, requires_grad=True)
    u0 = amp * torch.exp(1j * phase)
    u1 = torch.fft.ifft2(torch.fft.fft2(u0) * H)
    loss = ((u1.abs() ** 2 - target) ** 2).sum()
    loss.backward()
    return {"u1": u1.detach(), "loss": loss.item(), "grad": phase.grad, "complex128": H.dtype == torch.complex128}


def test_angular_spectrum_propagation():
    ours, _ = run_both(angular_spectrum, rtol=1e-9, atol=1e-11)
    assert ours["complex128"]
    phase = np.random.default_rng(4).uniform(-1, 1, (32, 32))  # the program's draw: amp, target, phase
    rng = np.random.default_rng(4)
    amp, target = rng.uniform(size=(32, 32)), rng.uniform(size=(32, 32))
    phase = rng.uniform(-1, 1, (32, 32))
    fx = np.fft.fftfreq(32, d=4e-6)
    arg = 1 / 0.5e-6 ** 2 - fx[:, None] ** 2 - fx[None, :] ** 2
    H = np.exp(1j * 2 * np.pi * np.sqrt(np.clip(arg, 0, None)) * 1e-4) * (arg > 0)
    np.testing.assert_allclose(ours["u1"], np.fft.ifft2(np.fft.fft2(amp * np.exp(1j * phase)) * H), atol=1e-12)
    for i, j in [(0, 0), (5, 17)]:
        step = np.zeros((32, 32))
        step[i, j] = 1e-6
        up = angular_spectrum(OURS, phase + step)["loss"]
        down = angular_spectrum(OURS, phase - step)["loss"]
        assert ours["grad"][i, j] == pytest.approx((up - down) / 2e-6, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Audio: a phase vocoder (time stretch) and Griffin-Lim phase reconstruction
# ----------------------------------------------------------------------------------------------


def phase_vocoder(m):
    torch = m.torch
    rng = np.random.default_rng(0)
    t = np.arange(2048) / 8000
    sig = torch.tensor(np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(2048), requires_grad=True)
    win = torch.hann_window(256, dtype=torch.float64)
    S = torch.stft(sig, 256, hop_length=64, window=win, return_complex=True)
    rate = 1.3
    steps = torch.arange(0, S.shape[-1], rate, dtype=torch.float64)
    phase_advance = torch.linspace(0, math.pi * 64, S.shape[-2], dtype=torch.float64)[..., None]
    S = torch.nn.functional.pad(S, [0, 2])
    s0 = S.index_select(-1, steps.long())
    s1 = S.index_select(-1, (steps + 1).long())
    alphas = steps % 1.0
    phase = s1.angle() - s0.angle() - phase_advance
    phase = phase - 2 * math.pi * torch.round(phase / (2 * math.pi))
    phase = phase + phase_advance
    phase = torch.cat([S[..., :1].angle(), phase[..., :-1]], dim=-1)
    phase_acc = torch.cumsum(phase, -1)
    mag = alphas * s1.abs() + (1 - alphas) * s0.abs()
    stretched = torch.polar(mag, phase_acc)
    y = torch.istft(stretched, 256, hop_length=64, window=win)
    loss = (y ** 2).sum()
    loss.backward()
    return {"y": y.detach(), "grad": sig.grad, "frames": (S.shape[-1] - 2, stretched.shape[-1])}


def test_phase_vocoder():
    ours, _ = run_both(phase_vocoder, rtol=1e-7, atol=1e-9)
    assert ours["frames"] == (33, 26)  # 2048 / 64 + 1 frames, stretched by 1.3
    assert np.all(np.isfinite(ours["grad"]))


def griffin_lim(m):
    torch = m.torch
    rng = np.random.default_rng(0)
    n_fft, hop = 64, 16
    t = np.arange(512) / 8000
    sig = torch.tensor(np.sin(2 * np.pi * 500 * t) * np.hanning(512))
    win = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(sig, n_fft, hop, window=win, return_complex=True).abs()
    angles = torch.polar(torch.ones_like(spec), torch.tensor(rng.uniform(0, 2 * np.pi, tuple(spec.shape))))
    tprev = torch.tensor(0.0, dtype=torch.complex128)
    momentum = 0.99 / (1 + 0.99)
    errors = []
    for i in range(10):
        inverse = torch.istft(spec * angles, n_fft, hop, window=win, length=512)
        rebuilt = torch.stft(inverse, n_fft, hop, window=win, return_complex=True)
        angles = rebuilt
        angles = angles - tprev.mul_(momentum)
        angles = angles.div(angles.abs().add(1e-16))
        tprev = rebuilt
        errors.append((rebuilt.abs() - spec).norm().item())
    return {"errors": errors, "out": torch.istft(spec * angles, n_fft, hop, window=win, length=512)}


def test_griffin_lim():
    ours, _ = run_both(griffin_lim, rtol=1e-7, atol=1e-9)
    assert ours["errors"][-1] < ours["errors"][0]
