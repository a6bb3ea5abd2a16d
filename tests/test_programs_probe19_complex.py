# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Programs built on complex numbers (see tests/pytorch_programs.py), each run on chainrule and on PyTorch,
comparing values and gradients (PyTorch's conjugate convention: z.grad = ∂L/∂Re z + i ∂L/∂Im z), and where
PyTorch is absent checked against NumPy by hand or finite differences.

A complex-valued network (``nn.Linear(dtype=torch.cfloat)``, modReLU, CReLU through ``torch.complex``, Adam
with amsgrad on complex weights) and a deep complex CNN (complex batch norm by whitening, cardioid, pooling by
magnitude); phase retrieval (``torch.polar``, ``fft2(norm="ortho")``, an amplitude loss);
computer-generated holography (``torch.exp(1j * phase)``, ``fftshift``, SGD with momentum); compressed-sensing
MRI (masked k-space, ``ifftshift``/``fftshift``, a total-variation prior through ``abs``, gradient steps under
``no_grad``, data consistency, root-sum-of-squares); angular-spectrum wave propagation (``fftfreq``,
``meshgrid``, a complex transfer function); a phase vocoder (``stft`` → ``angle``/``polar``/``cumsum`` →
``istft``) and Griffin-Lim; a Fourier neural operator (``torch.rand(dtype=torch.cfloat)`` weights, ``einsum``
over ``rfft``/``rfft2`` modes); MoDL's unrolled conjugate gradient; dynamic mode decomposition (``eig`` of a
real matrix, ``lstsq`` of complex modes, ``λ ** steps``); a variational quantum circuit (unitaries by
``linalg.matrix_exp`` of Hermitian generators, ``kron``, ``vdot``) and a unitary learnt through a Hermitian
parameter; writes through ``.real``, ``.imag`` and ``view_as_real`` of tensors in a graph; complex recurrent
layers (RNN/GRU/LSTM, cells, double backward); a unitary RNN (``parametrizations.orthogonal`` of a complex
weight, ``spectral_norm``, modReLU by ``polar``); full backward hooks and custom ``autograd.Function``s on
complex tensors; ``abs``/``sgn``/``angle`` at 0, complex division, reductions and ``gradcheck``; every
optimiser on complex parameters."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# A complex-valued network: complex linear layers, modReLU, CReLU, a real classifier head
# ----------------------------------------------------------------------------------------------


def complex_net_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 6)) + 1j * rng.standard_normal((32, 6))
    W0 = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    y = (np.abs(X @ W0.T) > 2).astype(np.int64)[:, :3].sum(1)
    return X.astype(np.complex64), y


def complex_net(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = complex_net_data()

    class ModReLU(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.b = nn.Parameter(torch.full((n,), -0.1))

        def forward(self, z):
            mag = z.abs()
            return F.relu(mag + self.b) * z / (mag + 1e-6)

    def crelu(z):
        return torch.complex(F.relu(z.real), F.relu(z.imag))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(6, 8, dtype=torch.cfloat)
            self.act = ModReLU(8)
            self.l2 = nn.Linear(8, 8, dtype=torch.cfloat)
            self.out = nn.Linear(8, 4)

        def forward(self, z):
            h = self.act(self.l1(z))
            h = crelu(self.l2(h))
            return self.out(h.abs())

    net = Net()
    r = np.random.default_rng(1)
    weights = {}
    for k, v in net.state_dict().items():
        a = r.standard_normal(tuple(v.shape)) * 0.3
        if v.is_complex():
            weights[k] = torch.tensor((a + 0.3j * r.standard_normal(tuple(v.shape))).astype(np.complex64))
        else:
            weights[k] = torch.tensor(a.astype(np.float32))
    net.load_state_dict(weights)
    opt = optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3, amsgrad=True)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    history = []
    for i in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(net(Xt), yt)
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "w1": net.l1.weight.detach(), "b1_grad": net.l1.bias.grad,
            "complex64": net.l1.weight.dtype == torch.complex64 and net.l1.bias.grad.dtype == torch.complex64}


def test_complex_valued_network():
    ours, _ = run_both(complex_net, rtol=1e-4, atol=1e-5)
    assert ours["complex64"]
    assert ours["history"][-1] < ours["history"][0]


def complex_cnn(m):
    """Trabelsi et al.'s deep complex network pieces: complex batch norm by 2×2 whitening of (Re, Im), the
    cardioid activation, max pooling by magnitude (indices from max_pool2d, values by gather) and average
    pooling through view_as_real."""
    torch, nn, F = m.torch, m.nn, m.F

    def complex_max_pool(z, k):
        _, idx = F.max_pool2d(z.abs(), k, return_indices=True)
        return z.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)

    def complex_avg_pool(z, k):
        r = torch.view_as_real(z).permute(0, 1, 4, 2, 3).flatten(1, 2)
        p = F.avg_pool2d(r, k)
        p = p.view(z.shape[0], z.shape[1], 2, p.shape[-2], p.shape[-1]).permute(0, 1, 3, 4, 2).contiguous()
        return torch.view_as_complex(p)

    class ComplexBN(nn.Module):
        def __init__(self, c, eps=1e-5, momentum=0.1):
            super().__init__()
            self.eps, self.momentum = eps, momentum
            self.weight = nn.Parameter(torch.stack([torch.full((c,), 1 / math.sqrt(2)),
                                                    torch.full((c,), 1 / math.sqrt(2)), torch.zeros(c)], 0))
            self.bias = nn.Parameter(torch.zeros(c, dtype=torch.cfloat))
            self.register_buffer("running_mean", torch.zeros(c, dtype=torch.cfloat))

        def forward(self, z):
            mean = z.mean((0, 2, 3))
            if self.training:
                with torch.no_grad():
                    self.running_mean.mul_(1 - self.momentum).add_(mean * self.momentum)
            zc = z - mean[None, :, None, None]
            xr, xi = zc.real, zc.imag
            Vrr = (xr * xr).mean((0, 2, 3)) + self.eps
            Vii = (xi * xi).mean((0, 2, 3)) + self.eps
            Vri = (xr * xi).mean((0, 2, 3))
            tau, delta = Vrr + Vii, Vrr * Vii - Vri ** 2
            s = torch.sqrt(delta)
            t = torch.sqrt(tau + 2 * s)
            inv = 1.0 / (s * t)
            Wrr, Wii, Wri = (Vii + s) * inv, (Vrr + s) * inv, -Vri * inv
            v = lambda a: a[None, :, None, None]
            yr = v(Wrr) * xr + v(Wri) * xi
            yi = v(Wri) * xr + v(Wii) * xi
            gr, gi, gri = self.weight
            return torch.complex(v(gr) * yr + v(gri) * yi, v(gri) * yr + v(gi) * yi) + v(self.bias)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3, padding=1, dtype=torch.cfloat)
            self.bn = ComplexBN(4)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1, dtype=torch.cfloat)
            self.fc = nn.Linear(16, 3)

        def forward(self, z):
            h = self.bn(self.c1(z))
            h = 0.5 * (1 + torch.cos(h.angle())) * h  # cardioid
            h = complex_max_pool(h, 2)
            h = complex_avg_pool(self.c2(h), 2)
            return self.fc(h.abs().flatten(1))

    net = Net()
    rng = np.random.default_rng(0)
    weights = {}
    for k, v in net.state_dict().items():
        a = 0.3 * rng.standard_normal(tuple(v.shape))
        weights[k] = torch.tensor((a + 0.3j * rng.standard_normal(tuple(v.shape))).astype(np.complex64)) \
            if v.is_complex() else torch.tensor(a.astype(np.float32))
    net.load_state_dict(weights)
    x = torch.tensor((rng.standard_normal((6, 1, 8, 8)) + 1j * rng.standard_normal((6, 1, 8, 8))).astype(np.complex64))
    y = torch.tensor(rng.integers(0, 3, 6))
    opt = m.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    history = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "running_mean": net.bn.running_mean, "conv_grad": net.c1.weight.grad,
            "bn_grad": net.bn.weight.grad}


def test_deep_complex_network():
    ours, _ = run_both(complex_cnn, rtol=1e-4, atol=1e-5)
    assert min(ours["history"]) < ours["history"][0]


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


# ----------------------------------------------------------------------------------------------
# Quantum circuits: unitaries by matrix_exp of Hermitian generators
# ----------------------------------------------------------------------------------------------


def pauli(np_or_torch, dtype):
    X = np_or_torch.tensor([[0, 1], [1, 0]], dtype=dtype)
    Y = np_or_torch.tensor([[0, -1j], [1j, 0]], dtype=dtype)
    Z = np_or_torch.tensor([[1, 0], [0, -1]], dtype=dtype)
    return X, Y, Z


def variational_circuit(m, angles=(0.3, -0.7, 1.1, 0.5, 0.2, -0.4)):
    torch = m.torch
    X, Y, Z = pauli(torch, torch.cdouble)
    I = torch.eye(2, dtype=torch.cdouble)

    def kron(*ops):
        out = ops[0]
        for o in ops[1:]:
            out = torch.kron(out, o)
        return out

    theta = torch.tensor(angles, dtype=torch.float64, requires_grad=True)
    n = 3

    def rotation(P, angle, qubit):
        H = kron(*[P if i == qubit else I for i in range(n)])
        return torch.linalg.matrix_exp(-0.5j * angle * H)

    psi = torch.zeros(2 ** n, dtype=torch.cdouble)
    psi[0] = 1
    for q in range(n):
        psi = rotation(X, theta[q], q) @ psi
        psi = rotation(Y, theta[n + q], q) @ psi
    U = torch.linalg.matrix_exp(-1j * 0.3 * (kron(Z, Z, I) + kron(I, Z, Z)))
    psi = U @ psi
    H_obs = kron(Z, I, I) + 0.5 * kron(X, X, I) + 0.3 * kron(I, Y, Y)
    energy = (psi.conj() @ H_obs @ psi).real
    energy.backward()
    unitary_error = (U.conj().T @ U - torch.eye(8, dtype=torch.cdouble)).abs().max()
    return {"energy": energy.item(), "grad": theta.grad, "probs": (psi.abs() ** 2).detach(),
            "unitary": bool(unitary_error < 1e-12), "norm": torch.vdot(psi, psi).real.item()}


def test_variational_quantum_circuit():
    ours, _ = run_both(variational_circuit, rtol=1e-9, atol=1e-11)
    assert ours["unitary"] and ours["norm"] == pytest.approx(1.0, abs=1e-12)
    angles = np.array([0.3, -0.7, 1.1, 0.5, 0.2, -0.4])
    for k in range(6):  # the parameter-shift rule: exact for these rotations, e^{-iθP/2}
        shift = np.zeros(6)
        shift[k] = math.pi / 2
        up = variational_circuit(OURS, tuple(angles + shift))["energy"]
        down = variational_circuit(OURS, tuple(angles - shift))["energy"]
        assert ours["grad"][k] == pytest.approx((up - down) / 2, abs=1e-10)


def learnt_unitary(m):
    torch = m.torch
    rng = np.random.default_rng(5)
    A = torch.tensor(rng.standard_normal((4, 4)) + 1j * rng.standard_normal((4, 4)), requires_grad=True)
    psi0 = torch.tensor(rng.standard_normal(4) + 1j * rng.standard_normal(4))
    psi0 = psi0 / torch.linalg.vector_norm(psi0)
    target = torch.tensor(np.eye(4)[2], dtype=torch.cdouble)
    opt = m.optim.Adam([A], lr=0.05)
    history = []
    for i in range(10):
        opt.zero_grad()
        H = (A + A.mH) / 2
        psi = torch.linalg.matrix_exp(-1j * H) @ psi0
        loss = 1 - torch.abs(torch.vdot(target, psi)) ** 2
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "A": A.detach()}


def test_unitary_learnt_through_a_hermitian_parameter():
    ours, _ = run_both(learnt_unitary, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Operator learning and model-based reconstruction: a Fourier neural operator, MoDL's conjugate
# gradient, dynamic mode decomposition
# ----------------------------------------------------------------------------------------------


def fourier_neural_operator(m):
    """Li et al.'s FNO as its reference code writes it: complex weights by torch.rand(dtype=torch.cfloat),
    einsum over the kept modes of rfft/rfft2, written into a zero spectrum by slices, irfft back."""
    torch, nn, F = m.torch, m.nn, m.F

    class SpectralConv1d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1):
            super().__init__()
            self.in_channels, self.out_channels, self.modes1 = in_channels, out_channels, modes1
            self.scale = 1 / (in_channels * out_channels)
            self.weights1 = nn.Parameter(self.scale * torch.rand(in_channels, out_channels, self.modes1,
                                                                 dtype=torch.cfloat))

        def compl_mul1d(self, input, weights):
            return torch.einsum("bix,iox->box", input, weights)

        def forward(self, x):
            batchsize = x.shape[0]
            x_ft = torch.fft.rfft(x)
            out_ft = torch.zeros(batchsize, self.out_channels, x.size(-1) // 2 + 1, device=x.device,
                                 dtype=torch.cfloat)
            out_ft[:, :, :self.modes1] = self.compl_mul1d(x_ft[:, :, :self.modes1], self.weights1)
            return torch.fft.irfft(out_ft, n=x.size(-1))

    class SpectralConv2d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1, modes2):
            super().__init__()
            self.out_channels, self.modes1, self.modes2 = out_channels, modes1, modes2
            scale = 1 / (in_channels * out_channels)
            self.weights1 = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes1, modes2,
                                                            dtype=torch.cfloat))
            self.weights2 = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes1, modes2,
                                                            dtype=torch.cfloat))

        def forward(self, x):
            b = x.shape[0]
            x_ft = torch.fft.rfft2(x)
            out_ft = torch.zeros(b, self.out_channels, x.size(-2), x.size(-1) // 2 + 1, dtype=torch.cfloat,
                                 device=x.device)
            out_ft[:, :, :self.modes1, :self.modes2] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[:, :, :self.modes1, :self.modes2], self.weights1)
            out_ft[:, :, -self.modes1:, :self.modes2] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[:, :, -self.modes1:, :self.modes2], self.weights2)
            return torch.fft.irfft2(out_ft, s=(x.size(-2), x.size(-1)))

    class FNO1d(nn.Module):
        def __init__(self, modes, width):
            super().__init__()
            self.fc0 = nn.Linear(2, width)
            self.conv0 = SpectralConv1d(width, width, modes)
            self.conv1 = SpectralConv1d(width, width, modes)
            self.w0 = nn.Conv1d(width, width, 1)
            self.w1 = nn.Conv1d(width, width, 1)
            self.fc1 = nn.Linear(width, 16)
            self.fc2 = nn.Linear(16, 1)

        def forward(self, x):
            grid = torch.linspace(0, 1, x.shape[1]).reshape(1, -1, 1).repeat(x.shape[0], 1, 1)
            x = torch.cat((x, grid), dim=-1)
            x = self.fc0(x).permute(0, 2, 1)
            x = F.gelu(self.conv0(x) + self.w0(x))
            x = self.conv1(x) + self.w1(x)
            x = x.permute(0, 2, 1)
            return self.fc2(F.gelu(self.fc1(x)))

    torch.manual_seed(0)  # (chainrule's generator draws PyTorch's numbers, complex ones included)
    model = FNO1d(modes=6, width=8)
    spectral2d = SpectralConv2d(3, 2, 3, 2)
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.standard_normal((4, 32, 1)).astype(np.float32))
    u = torch.tensor(np.cumsum(rng.standard_normal((4, 32, 1)), 1).astype(np.float32) * 0.1)
    x2 = torch.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    opt = m.optim.Adam(list(model.parameters()) + list(spectral2d.parameters()), lr=1e-2, weight_decay=1e-4)
    scheduler = m.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    history = []
    for ep in range(6):
        opt.zero_grad()
        out = model(a)
        loss = F.mse_loss(out.view(4, -1), u.view(4, -1), reduction="sum") / 4 + spectral2d(x2).pow(2).mean()
        loss.backward()
        opt.step()
        scheduler.step()
        history.append(loss.item())
    return {"history": history, "weights": model.conv0.weights1.detach(), "grad": model.conv1.weights1.grad,
            "grad2d": spectral2d.weights2.grad, "cfloat": model.conv0.weights1.dtype == torch.cfloat}


def test_fourier_neural_operator():
    ours, _ = run_both(fourier_neural_operator, rtol=1e-4, atol=1e-5)
    assert ours["cfloat"]
    assert min(ours["history"]) < ours["history"][0]


def modl_conjugate_gradient(m, lam0=0.05):
    """MoDL's data-consistency step: conjugate gradient on (AᴴA + λI) x = Aᴴy + λz, unrolled and differentiated
    with respect to λ and a (stand-in) denoiser's weight."""
    torch = m.torch
    rng = np.random.default_rng(1)
    n = 12
    img = rng.standard_normal((2, n, n)) + 1j * rng.standard_normal((2, n, n))
    mask = torch.tensor(rng.uniform(size=(n, n)) < 0.5)
    A = lambda x: torch.fft.fft2(x, norm="ortho") * mask
    AH = lambda k: torch.fft.ifft2(k * mask, norm="ortho")
    y = A(torch.tensor(img))
    lam = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
    denoiser_w = torch.tensor(0.9 + 0.1j, requires_grad=True)

    def cg(rhs, x0, iters=6):
        x = x0
        r = rhs - (AH(A(x)) + lam * x)
        p = r.clone()
        rsold = torch.sum(r.conj() * r).real
        for i in range(iters):
            Ap = AH(A(p)) + lam * p
            alpha = rsold / torch.sum(p.conj() * Ap)
            x = x + alpha * p
            r = r - alpha * Ap
            rsnew = torch.sum(r.conj() * r).real
            p = r + (rsnew / rsold) * p
            rsold = rsnew
        return x

    x = AH(y)
    for k in range(3):
        z = denoiser_w * x
        x = cg(AH(y) + lam * z, x)
    loss = (x - torch.tensor(img)).abs().pow(2).mean()
    loss.backward()
    return {"x": x.detach(), "loss": loss.item(), "lam_grad": lam.grad, "w_grad": denoiser_w.grad}


def test_modl_conjugate_gradient():
    ours, _ = run_both(modl_conjugate_gradient, rtol=1e-8, atol=1e-10)
    up, down = (modl_conjugate_gradient(OURS, 0.05 + s)["loss"] for s in (1e-6, -1e-6))
    assert float(ours["lam_grad"]) == pytest.approx((up - down) / 2e-6, rel=1e-5)


def dynamic_mode_decomposition(m):
    """Exact DMD of a damped oscillation: SVD, the reduced operator's eig (complex eigenvalues of a real
    matrix), modes, amplitudes by lstsq, the reconstruction λᵏ, and the gradient of its error."""
    torch = m.torch
    rng = np.random.default_rng(2)
    t = np.arange(20) * 0.1
    modes = rng.standard_normal((6, 2))
    data = modes @ np.stack([np.cos(2 * t) * np.exp(-0.1 * t), np.sin(2 * t) * np.exp(-0.1 * t)])
    X = torch.tensor(data + 0.01 * rng.standard_normal((6, 20)), requires_grad=True)
    X1, X2 = X[:, :-1], X[:, 1:]
    U, S, Vh = torch.linalg.svd(X1, full_matrices=False)
    r = 2
    U, S, V = U[:, :r], S[:r], Vh[:r].mH
    Atilde = U.mH @ X2 @ V / S
    lam, W = torch.linalg.eig(Atilde)
    Phi = X2.to(torch.cdouble) @ (V / S).to(torch.cdouble) @ W
    b = torch.linalg.lstsq(Phi, X[:, 0].to(torch.cdouble).unsqueeze(-1)).solution.squeeze(-1)
    steps = torch.arange(20, dtype=torch.float64)
    recon = (Phi @ (b[:, None] * lam[:, None] ** steps)).real
    omega = torch.log(lam) / 0.1
    loss = (recon - X).pow(2).mean() + omega.imag.abs().sum() * 0.01
    loss.backward()
    order = torch.argsort(lam.imag)
    return {"recon": recon.detach(), "omega": omega[order].detach(), "grad": X.grad}


def test_dynamic_mode_decomposition():
    ours, _ = run_both(dynamic_mode_decomposition, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["omega"], [-0.1 - 2j, -0.1 + 2j], atol=0.01)  # the damping and frequency


# ----------------------------------------------------------------------------------------------
# Views: view_as_real / view_as_complex, writes through .real, .imag and view_as_real in a graph
# ----------------------------------------------------------------------------------------------


def views_and_writes(m):
    torch = m.torch
    rng = np.random.default_rng(6)
    r = torch.tensor(rng.standard_normal((3, 4, 2)), requires_grad=True)
    z = torch.view_as_complex(r)
    w = z * torch.tensor(1 + 2j, dtype=torch.cdouble)
    back = torch.view_as_real(w)
    (back[..., 0] ** 2 - back[..., 1]).sum().add(w.abs().sum()).backward()
    q = torch.zeros(3, dtype=torch.cfloat)
    q.real[:] = torch.tensor([1.0, 2.0, 3.0])
    q.imag.add_(5)
    q.imag[1] = -1
    torch.view_as_real(q)[0, 1] = 9
    # writes into the spectrum of a tensor in a graph, then back
    x = torch.tensor(rng.standard_normal((4, 4)) + 1j * rng.standard_normal((4, 4)), requires_grad=True)
    v = torch.tensor(rng.standard_normal(4), requires_grad=True)
    k = torch.fft.fft2(x)
    kr = torch.view_as_real(k)
    kr[0, :, 1] = v
    kr[1:3, 1:3] *= 2
    k.real[3] = v * 3
    k.imag[2, 0] = 0
    k[:, 3] = k[:, 3].conj()
    k.imag.mul_(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    y = torch.fft.ifft2(k)
    ((y.abs() ** 2).sum() + y.angle().sum()).backward()
    # x.real = ..., x.imag = ... on a non-leaf
    c = torch.tensor(rng.standard_normal(5) + 1j * rng.standard_normal(5), requires_grad=True)
    s = torch.tensor(rng.standard_normal(5), requires_grad=True)
    e = c * 1j
    e.real = s ** 2
    e.imag = torch.tensor(2.0, dtype=torch.float64)
    (e * e).real.sum().backward()
    return {"r_grad": r.grad, "q": q, "y": y.detach(), "x_grad": x.grad, "v_grad": v.grad, "e": e.detach(),
            "c_grad": c.grad, "s": s.detach(), "s_grad": s.grad}


def test_views_and_writes_through_parts():
    ours, _ = run_both(views_and_writes, rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(ours["q"], [1 + 9j, 2 - 1j, 3 + 5j])
    np.testing.assert_allclose(ours["c_grad"], 0)  # e no longer depends on c: both parts were overwritten
    np.testing.assert_allclose(ours["e"], ours["s"] ** 2 + 2j)
    np.testing.assert_allclose(ours["s_grad"], 4 * ours["s"] ** 3, rtol=1e-12)  # Re(e²) = s⁴ - 4


# ----------------------------------------------------------------------------------------------
# Complex recurrent layers (RNN, GRU, LSTM, their cells), a full backward hook, a custom Function
# ----------------------------------------------------------------------------------------------

RECURRENT = ["RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell"]


def complex_recurrent(m, kind, **options):
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(0)
    layer = getattr(nn, kind)(3, 4, dtype=torch.cdouble, **options)
    layer.load_state_dict({k: torch.tensor(0.4 * (rng.standard_normal(tuple(v.shape)) + 1j * rng.standard_normal(
        tuple(v.shape)))) for k, v in layer.state_dict().items()})
    x = torch.tensor(rng.standard_normal((5, 2, 3)) + 1j * rng.standard_normal((5, 2, 3)), requires_grad=True)
    if kind.endswith("Cell"):
        h, outputs = None, []
        for t in range(5):
            h = layer(x[t], h)
            outputs.append(h[0] if isinstance(h, tuple) else h)
        y = torch.stack(outputs)
    else:
        y = layer(x)[0]
    loss = (y.abs() ** 2).sum() + (y * (0.3 - 0.7j)).real.sum()
    grads = torch.autograd.grad(loss, [x] + list(layer.parameters()), create_graph=True)
    second, = torch.autograd.grad((grads[0].abs() ** 2).sum(), x)
    return {"y": y.detach(), "grads": [g.detach() for g in grads], "second": second}


@pytest.mark.parametrize("kind", RECURRENT)
def test_complex_recurrent_layer(kind):
    ours, _ = run_both(complex_recurrent, kind, rtol=1e-9, atol=1e-11)
    if kind == "RNN":  # against the recurrence written out in NumPy (tanh(W_ih x + b_ih + W_hh h + b_hh))
        rng = np.random.default_rng(0)
        shapes = [(4, 3), (4, 4), (4,), (4,)]
        w_ih, w_hh, b_ih, b_hh = (0.4 * (rng.standard_normal(s) + 1j * rng.standard_normal(s)) for s in shapes)
        x = rng.standard_normal((5, 2, 3)) + 1j * rng.standard_normal((5, 2, 3))
        h = np.zeros((2, 4), complex)
        for t in range(5):
            h = np.tanh(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
            np.testing.assert_allclose(ours["y"][t], h, rtol=1e-12)


def test_complex_lstm_with_projections_and_layers():
    run_both(complex_recurrent, "LSTM", proj_size=2, num_layers=2, bias=False, rtol=1e-9, atol=1e-11)


def hooks_and_functions(m):
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(4)
    layer = nn.Linear(3, 2, dtype=torch.cdouble)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))))
        layer.bias.copy_(torch.tensor(rng.standard_normal(2) + 1j * rng.standard_normal(2)))
    seen = []
    layer.register_full_backward_hook(lambda mod, grad_in, grad_out: seen.append((grad_in[0].clone(),
                                                                                   grad_out[0].clone())))
    layer.register_forward_hook(lambda mod, inputs, output: output * 1j)

    class CMul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved_tensors
            return g * b.conj(), g * a.conj()

    x = torch.tensor(rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3)), requires_grad=True)
    y = CMul.apply(layer(x), x[:, :2])
    (y.real ** 2 + y.imag).sum().backward()
    checked = torch.autograd.gradcheck(CMul.apply, (x.detach()[0].requires_grad_(), x.detach()[1].requires_grad_()))
    return {"y": y.detach(), "grad_input": seen[0][0], "grad_output": seen[0][1], "weight_grad": layer.weight.grad,
            "x_grad": x.grad, "gradcheck": checked}


def test_full_backward_hook_and_custom_function_on_complex_tensors():
    ours, _ = run_both(hooks_and_functions, rtol=1e-10, atol=1e-12)
    assert ours["gradcheck"]


# ----------------------------------------------------------------------------------------------
# A unitary RNN: the recurrent matrix kept unitary by orthogonal(), a spectrally normalised input map
# ----------------------------------------------------------------------------------------------


def unitary_rnn(m, orthogonal_map):
    torch, nn, F = m.torch, m.nn, m.F
    orthogonal = nn.utils.parametrizations.orthogonal
    spectral_norm = nn.utils.parametrizations.spectral_norm

    class ModReLU(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.b = nn.Parameter(torch.full((n,), -0.05, dtype=torch.float64))

        def forward(self, z):
            return torch.polar(F.relu(z.abs() + self.b), z.angle())

    class URNN(nn.Module):
        def __init__(self, hidden=6):
            super().__init__()
            self.inp = nn.Linear(2, hidden, dtype=torch.cdouble)
            self.rec = nn.Linear(hidden, hidden, bias=False, dtype=torch.cdouble)
            self.act = ModReLU(hidden)
            self.out = nn.Linear(2 * hidden, 3, dtype=torch.float64)

        def forward(self, x):
            h = torch.zeros(x.shape[0], self.rec.in_features, dtype=torch.cdouble)
            for t in range(x.shape[1]):
                h = self.act(self.rec(h) + self.inp(x[:, t]))
            return self.out(torch.cat([h.real, h.imag], -1))

    rng = np.random.default_rng(7)
    model = URNN()
    model.load_state_dict({k: torch.tensor(0.4 * (rng.standard_normal(tuple(v.shape)) + (
        1j * rng.standard_normal(tuple(v.shape)) if v.is_complex() else 0))) for k, v in model.state_dict().items()})
    torch.manual_seed(0)  # spectral_norm's first u, v
    orthogonal(model.rec, orthogonal_map=orthogonal_map)
    spectral_norm(model.inp)
    x = torch.tensor(rng.standard_normal((8, 5, 2)) + 1j * rng.standard_normal((8, 5, 2)))
    y = torch.tensor(rng.integers(0, 3, 8))
    opt = m.optim.RMSprop(model.parameters(), lr=0.01)
    history = []
    for step in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        history.append(loss.item())
    W = model.rec.weight.detach()
    return {"history": history, "W": W, "unitarity": (W.mH @ W - torch.eye(6)).abs().max().item(),
            "sigma": torch.linalg.matrix_norm(model.inp.weight.detach(), 2).item(),
            "grad": model.rec.parametrizations.weight.original.grad}


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
def test_unitary_rnn(orthogonal_map):
    ours, _ = run_both(unitary_rnn, orthogonal_map, rtol=1e-8, atol=1e-10)
    assert ours["unitarity"] < 1e-12
    assert ours["sigma"] == pytest.approx(1.0, abs=0.05)  # one power iteration a step: σ(W / σ̂) ≈ 1


# ----------------------------------------------------------------------------------------------
# The convention's corners: abs, sgn, angle at 0; division; reductions; gradcheck
# ----------------------------------------------------------------------------------------------


def corners(m):
    torch = m.torch
    z = torch.tensor([0j, 1 + 1j, -2 + 0j, 0 - 3j], dtype=torch.cdouble, requires_grad=True)
    out = {}
    out["abs"], = torch.autograd.grad(z.abs().sum(), z)
    out["sgn"], = torch.autograd.grad(torch.sgn(z).real.sum() + torch.sgn(z).imag.sum(), z)
    out["angle"], = torch.autograd.grad(z.angle().sum(), z)
    out["abs2"], = torch.autograd.grad((z.abs() ** 2).sum(), z)
    out["norm"], = torch.autograd.grad(torch.linalg.vector_norm(z), z)
    out["norm1"], = torch.autograd.grad(torch.linalg.vector_norm(z, ord=1), z)
    x = torch.tensor([0.0, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    out["real_angle"], = torch.autograd.grad(x.angle().sum(), x)
    out["values"] = (torch.sgn(z).detach(), z.angle().detach(), x.angle().detach())
    rng = np.random.default_rng(1)
    a = torch.tensor(rng.standard_normal(4) + 1j * rng.standard_normal(4), requires_grad=True)
    b = torch.tensor(rng.standard_normal(4) + 1j * rng.standard_normal(4), requires_grad=True)
    r = torch.tensor(rng.standard_normal(4), requires_grad=True)
    loss = ((a / b).abs() ** 2).sum() + (r / a).real.sum() + (a / r).imag.sum() + (1 / a).angle().sum()
    loss = loss + (2j / b).real.sum() + torch.reciprocal(b).imag.sum() + torch.true_divide(a, 3 + 1j).abs().sum()
    out["division"] = torch.autograd.grad(loss, (a, b, r))
    A = torch.tensor(rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4)), requires_grad=True)
    B = torch.tensor(rng.standard_normal((4, 2)) + 1j * rng.standard_normal((4, 2)), requires_grad=True)
    mu, mm = A.mean(), A @ B
    loss = A.sum(0).abs().sum() + mu.real + mu.imag * 2 + A.prod(1).real.sum() + A.cumsum(1).imag.sum()
    loss = loss + A.cumprod(0).abs().sum() + (mm * mm.conj()).real.sum() + A.var(1).sum() + A.std()
    out["reductions"] = torch.autograd.grad(loss, (A, B))
    Z = torch.tensor([[1 + 1j, 0j, 2 - 1j], [0j, 0j, 1j]], requires_grad=True)
    out["prod_zeros"], = torch.autograd.grad(Z.prod(1).real.sum(), Z)
    c = torch.tensor(rng.standard_normal(3) + 1j * rng.standard_normal(3), requires_grad=True)
    M = torch.tensor(rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3)), requires_grad=True)
    out["gradcheck"] = [torch.autograd.gradcheck(f, (c,)) for f in (
        lambda x: x * x.conj() + x.exp(), lambda x: torch.sin(x) / (x + 2), lambda x: x.abs() * torch.sgn(x),
        lambda x: torch.fft.fft(x), lambda x: torch.view_as_real(x) ** 2, lambda x: x.sqrt().log())]
    out["gradcheck"] += [torch.autograd.gradcheck(lambda M, v: M @ v, (M, c)),
                         torch.autograd.gradcheck(torch.linalg.matrix_exp, (M,)),
                         torch.autograd.gradgradcheck(lambda x: (x * x.conj()).abs(), (c,))]
    return out


def test_abs_sgn_angle_division_reductions_gradcheck():
    ours, _ = run_both(corners, rtol=1e-10, atol=1e-12)
    assert all(ours["gradcheck"])
    np.testing.assert_allclose(ours["abs"], [0, (1 + 1j) / math.sqrt(2), -1, -1j])  # z / |z|, 0 at 0
    np.testing.assert_allclose(ours["angle"], [0, (-1 + 1j) / 2, -0.5j, 1 / 3])  # i z / |z|²
    np.testing.assert_allclose(ours["abs2"], 2 * np.array([0, 1 + 1j, -2, -3j]))
    np.testing.assert_array_equal(ours["real_angle"], 0)
    np.testing.assert_allclose(ours["prod_zeros"], [[0, 3 - 1j, 0], [0, 0, 0]])  # conj(∂ prod / ∂ z)


# ----------------------------------------------------------------------------------------------
# Every optimiser on complex parameters: each is optimised as its (real, imaginary) pairs
# ----------------------------------------------------------------------------------------------

OPTIMISERS = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)), ("Adam", dict(lr=0.05)),
              ("AdamW", dict(lr=0.05, amsgrad=True)), ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
              ("Adagrad", dict(lr=0.1, weight_decay=0.1)), ("Adamax", dict(lr=0.05)),
              ("NAdam", dict(lr=0.05, decoupled_weight_decay=True, weight_decay=0.1)), ("RAdam", dict(lr=0.05)),
              ("ASGD", dict(lr=0.05)), ("Rprop", dict(lr=0.05)), ("Adadelta", dict(lr=1.0)),
              ("Adam", dict(lr=0.05, foreach=True, maximize=True)),
              ("LBFGS", dict(lr=0.5, history_size=3, max_iter=4, line_search_fn="strong_wolfe"))]


def complex_parameters(m, name, options, as_pairs=False):
    torch = m.torch
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))
    w = torch.tensor(np.stack([w0.real, w0.imag], -1) if as_pairs else w0, requires_grad=True)
    b = torch.tensor(rng.standard_normal(2), requires_grad=True)
    x = torch.tensor(rng.standard_normal((5, 3)) + 1j * rng.standard_normal((5, 3)))
    opt = getattr(m.optim, name)([w, b], **options)
    history = []
    for i in range(8):
        def closure():
            opt.zero_grad()
            y = x @ (torch.view_as_complex(w) if as_pairs else w)
            loss = ((y.abs() - 1) ** 2).mean() + (y.real * b).sum() * 0.1 + (b ** 2).sum()
            loss.backward()
            return loss
        history.append(opt.step(closure).item())
    return {"history": history, "w": torch.view_as_complex(w.detach()) if as_pairs else w.detach(), "b": b.detach()}


@pytest.mark.parametrize("name, options", OPTIMISERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMISERS)])
def test_optimiser_on_complex_parameters(name, options):
    ours, _ = run_both(complex_parameters, name, options, rtol=1e-9, atol=1e-11)
    as_pairs = complex_parameters(OURS, name, options, as_pairs=True)
    np.testing.assert_allclose(ours["w"], as_pairs["w"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["history"], as_pairs["history"], rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# What chainrule does not do: conj() is a copy, not PyTorch's lazy view
# ----------------------------------------------------------------------------------------------


def conjugate_view(m):
    torch = m.torch
    z = torch.tensor([1 + 2j, -3 + 0.5j])
    c = z.conj()
    z.mul_(2)  # PyTorch's c is a view of z's memory with the conjugate bit set: it sees the write
    return {"c": c.resolve_conj(), "is_conj": c.is_conj()}


@pytest.mark.xfail(strict=True, reason="conj() materialises a copy (autograd/ops/conjugation.py: conj, resolve_conj); "
                                       "PyTorch's is a lazy view with the conjugate bit, so a later in-place write to "
                                       "the tensor shows through it and is_conj() is True; a conjugate bit would need "
                                       "Tensor (autograd/tensor.py) to carry it")
def test_conj_is_a_view_of_the_same_memory():
    ours, _ = run_both(conjugate_view, compare=False)
    np.testing.assert_array_equal(ours["c"], [2 - 4j, -6 - 1j])
    assert ours["is_conj"]


def test_a_conjugate_copy_has_the_right_values():
    """What holds of conj() on both: its values, its gradient, and that resolve_conj gives a plain tensor."""
    def program(m):
        torch = m.torch
        z = torch.tensor([1 + 2j, -3 + 0.5j], requires_grad=True)
        c = z.conj()
        (c * torch.tensor([1j, 2.0])).real.sum().backward()
        return {"c": c.detach().resolve_conj(), "grad": z.grad.resolve_conj(), "resolved": c.resolve_conj().is_conj()}

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours["c"], [1 - 2j, -3 - 0.5j])
    np.testing.assert_array_equal(ours["grad"], [1j, 2])  # Re(conj(z) w) = Re(z conj(w)): gradient conj(conj(w)) = w
    assert ours["resolved"] is False


def state_norm_as_python_number(m):
    torch = m.torch
    psi = torch.tensor([0.6 + 0.0j, 0.0 + 0.8j], dtype=torch.cdouble)
    overlap = torch.vdot(psi, psi)  # ⟨ψ|ψ⟩: its imaginary part is exactly 0
    return {"norm": float(overlap), "count": int(torch.tensor(3 + 0j))}


def test_float_of_a_complex_number_with_no_imaginary_part():
    ours, _ = run_both(state_norm_as_python_number)
    assert ours == {"norm": pytest.approx(1.0), "count": 3}
