# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``), run on
chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

Linear algebra and Fourier programs: Gaussian-process regression (an RBF kernel, ``linalg.cholesky``,
``cholesky_solve``, ``linalg.solve_triangular``, the log marginal likelihood optimised over the
kernel's hyperparameters), FFT convolution (``fft.rfft``/``irfft`` with ``n=``) against ``F.conv1d``,
a spectral loss on ``stft(...).abs()`` trained through, and a complex-valued layer (complex
parameters, ``view_as_complex``/``view_as_real``, ``abs``, ``angle``) optimised by Adam."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Gaussian-process regression (the textbook algorithm: Rasmussen & Williams, Algorithm 2.1)
# ----------------------------------------------------------------------------------------------


def gp(m, X, y, Xs, steps=40):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X = torch.tensor(X, dtype=torch.float64)
    y = torch.tensor(y, dtype=torch.float64)
    Xs = torch.tensor(Xs, dtype=torch.float64)
    log_ls = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    log_sf = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    log_sn = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)

    def kern(a, b):
        d2 = torch.cdist(a / log_ls.exp(), b / log_ls.exp()).pow(2)
        return log_sf.exp().pow(2) * torch.exp(-0.5 * d2)

    opt = optim.Adam([log_ls, log_sf, log_sn], lr=0.05)
    nlls = []
    n = X.shape[0]
    for _ in range(steps):
        K = kern(X, X) + (log_sn.exp() ** 2 + 1e-6) * torch.eye(n, dtype=torch.float64)
        L = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
        nll = (
            0.5 * (y.unsqueeze(-1) * alpha).sum() + torch.log(torch.diagonal(L)).sum() + 0.5 * n * math.log(2 * math.pi)
        )
        opt.zero_grad()
        nll.backward()
        opt.step()
        nlls.append(nll.item())
    with torch.no_grad():
        K = kern(X, X) + log_sn.exp() ** 2 * torch.eye(n, dtype=torch.float64)
        L = torch.linalg.cholesky(K)
        Ks = kern(X, Xs)
        v = torch.linalg.solve_triangular(L, Ks, upper=False)
        a2 = torch.linalg.solve_triangular(
            L.T, torch.linalg.solve_triangular(L, y.unsqueeze(-1), upper=False), upper=True
        )
        mean = (Ks.T @ a2).squeeze(-1)
        var = torch.diagonal(kern(Xs, Xs)) - (v * v).sum(0)
    # MultivariateNormal log marginal likelihood agrees
    K = kern(X, X) + log_sn.exp() ** 2 * torch.eye(n, dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), covariance_matrix=K)
    lml = mvn.log_prob(y)
    g = torch.autograd.grad(lml, [log_ls, log_sf, log_sn])
    # left=False solve_triangular and a batched cholesky_solve with upper
    B = torch.linalg.solve_triangular(L, torch.eye(n, dtype=torch.float64)[:3], upper=False, left=False)
    U = L.mT
    alt = torch.cholesky_solve(torch.stack([y, 2 * y]).unsqueeze(-1), torch.stack([U, U]), upper=True)
    return nlls, mean, var, lml, g, B, alt


def test_gaussian_process_regression():
    rng = np.random.default_rng(0)
    X = np.sort(rng.uniform(-3, 3, (25, 1)), 0)
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(25)
    Xs = np.linspace(-3, 3, 7)[:, None]
    (nlls, mean, var, lml, grads, B, alt), _ = run_both(gp, X, y, Xs, rtol=1e-7, atol=1e-9)
    assert nlls[-1] < nlls[0] - 15  # 11.4 -> -7.2 on PyTorch
    np.testing.assert_allclose(mean, np.sin(2 * Xs[:, 0]), atol=0.3)  # the posterior mean fits sin(2x)
    assert (var > 0).all() and var.max() < 0.1
    np.testing.assert_allclose(lml, -nlls[-1], rtol=0.05)  # MultivariateNormal.log_prob is the same likelihood
    np.testing.assert_allclose(alt[1], 2 * alt[0], rtol=1e-10)  # a batched, upper cholesky_solve
    assert B.shape == (3, 25) and all(np.isfinite(g) for g in grads)


# ----------------------------------------------------------------------------------------------
# FFT convolution (scipy.signal.fftconvolve's recipe) against F.conv1d, values and gradients
# ----------------------------------------------------------------------------------------------


def fftconv(m, x, w):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    x = torch.tensor(x, requires_grad=True)
    w = torch.tensor(w, requires_grad=True)
    N, L = x.shape[-1], w.shape[-1]
    n = N + L - 1
    X = torch.fft.rfft(x, n=n)
    W = torch.fft.rfft(torch.flip(w, dims=[-1]), n=n)
    y = torch.fft.irfft(X * W, n=n)[..., L - 1 : N]
    ref = F.conv1d(x.unsqueeze(1), w.view(1, 1, -1)).squeeze(1)
    loss = (y * torch.arange(y.shape[-1], dtype=y.dtype)).sum()
    gx, gw = torch.autograd.grad(loss, [x, w])
    loss2 = (ref * torch.arange(y.shape[-1], dtype=y.dtype)).sum()
    rx, rw = torch.autograd.grad(loss2, [x, w])
    # full convolution with fft (n != power of 2) and odd n irfft
    full = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(w, n=n), n=n)
    odd = torch.fft.irfft(torch.fft.rfft(x, n=9), n=9)
    hf = torch.fft.fftshift(torch.fft.fftfreq(8, d=0.5))
    return y, ref, gx, gw, rx, rw, full, odd, hf


def test_fft_convolution_matches_conv1d():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 20)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    (y, ref, gx, gw, rx, rw, full, odd, freqs), _ = run_both(fftconv, x, w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y, ref, atol=1e-4)
    np.testing.assert_allclose(gx, rx, atol=1e-4)
    np.testing.assert_allclose(gw, rw, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(full, np.stack([np.convolve(r, w) for r in x]), atol=1e-4)
    np.testing.assert_allclose(odd, x[:, :9], atol=1e-5)  # irfft(rfft(x, n=9), n=9) keeps the first 9
    np.testing.assert_allclose(freqs, np.arange(-4, 4) / 4.0)


# ----------------------------------------------------------------------------------------------
# A spectral (STFT magnitude) loss trained through, as in neural vocoders
# ----------------------------------------------------------------------------------------------


def spectral(m, weights, target, steps=15):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Gen(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv1d(1, 8, 9, padding=4), nn.Tanh(), nn.Conv1d(8, 1, 9, padding=4))

        def forward(self, z):
            return self.net(z).squeeze(1)

    g = Gen()
    if weights is None:
        return g
    load(m, g, weights)
    opt = optim.Adam(g.parameters(), lr=3e-3)
    z = torch.tensor(np.linspace(-1, 1, 128, dtype=np.float32)).view(1, 1, -1).repeat(2, 1, 1)
    target = torch.tensor(target)
    win = torch.hann_window(32)

    def mag(s):
        return torch.stft(s, n_fft=32, hop_length=8, window=win, return_complex=True).abs()

    tm = mag(target)
    losses = []
    for _ in range(steps):
        out = g(z)
        sm = mag(out)
        loss = F.l1_loss(torch.log(sm + 1e-1), torch.log(tm + 1e-1)) + (sm - tm).norm(p="fro") / tm.norm(p="fro")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    spec = torch.stft(out, n_fft=32, hop_length=8, window=win, return_complex=True)
    rec = torch.istft(spec, n_fft=32, hop_length=8, window=win, length=128)
    return losses, list(sm.shape), g.net[0].weight.grad, rec, out


def test_stft_magnitude_loss_trains_a_generator():
    target = np.stack([np.sin(np.arange(128) * 0.5), np.sin(np.arange(128) * 1.1)]).astype(np.float32)
    weights = weights_of(lambda m: spectral(m, None, target))
    (losses, shape, grad, rec, out), _ = run_both(spectral, weights, target, rtol=1e-3, atol=1e-4)
    assert losses[-1] < losses[0] - 0.08  # 2.06 -> 1.94 on PyTorch
    assert shape == [2, 17, 17] and grad.shape == (8, 1, 9)
    np.testing.assert_allclose(rec, out, atol=1e-4)  # istft inverts stft (Hann window, hop n_fft/4)


# ----------------------------------------------------------------------------------------------
# A complex-valued linear layer fitted by Adam on complex parameters
# ----------------------------------------------------------------------------------------------


def complex_layer(m, x, y, steps=40):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class CLinear(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            g = np.random.default_rng(1)
            w = (g.standard_normal((o, i)) + 1j * g.standard_normal((o, i))) / math.sqrt(2 * i)
            self.weight = nn.Parameter(torch.tensor(w.astype(np.complex64)))
            self.bias = nn.Parameter(torch.zeros(o, dtype=torch.cfloat))

        def forward(self, z):
            return z @ self.weight.T + self.bias

    layer = CLinear(4, 3)
    opt = optim.Adam(layer.parameters(), lr=0.02)
    xz = torch.view_as_complex(torch.tensor(x))
    yz = torch.tensor(y)
    losses = []
    for _ in range(steps):
        out = layer(xz)
        feats = torch.cat([out.abs(), out.angle()], dim=-1)
        loss = F.mse_loss(torch.view_as_real(out), yz) + 0.01 * feats.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return (
        losses,
        layer.weight.grad,
        layer.bias.grad,
        layer.weight.detach(),
        out.dtype == torch.complex64,
        layer.weight.grad.dtype == torch.complex64,
    )


def test_complex_linear_layer_with_adam():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4, 2)).astype(np.float32)
    W = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    z = (x[..., 0] + 1j * x[..., 1]) @ W.T
    y = np.stack([z.real, z.imag], -1).astype(np.float32)
    (losses, wg, bg, w, complex_out, complex_grad), _ = run_both(complex_layer, x, y, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] / 4  # 6.92 -> 1.47 on PyTorch
    assert complex_out and complex_grad and wg.shape == (3, 4) and np.iscomplexobj(bg)


# ----------------------------------------------------------------------------------------------
# A complex-valued MLP: nn.Linear(..., dtype=torch.cfloat) layers and a modReLU activation
# ----------------------------------------------------------------------------------------------


def complex_mlp(m, weights, x, y, steps=30):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class ModReLU(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.b = nn.Parameter(torch.full((n,), -0.1))

        def forward(self, z):
            mag = z.abs()
            return z * (F.relu(mag + self.b) / (mag + 1e-6))

    model = nn.Sequential(nn.Linear(4, 16, dtype=torch.cfloat), ModReLU(16), nn.Linear(16, 2, dtype=torch.cfloat))
    if weights is None:
        return model
    load(m, model, weights)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.tensor(x), torch.tensor(y)
    losses = []
    for _ in range(steps):
        out = model(x)
        loss = (out - y).abs().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model[0].weight.grad, model[1].b.grad, out


def test_complex_mlp_with_complex_linear_layers():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((32, 4)) + 1j * rng.standard_normal((32, 4))).astype(np.complex64)
    W = rng.standard_normal((2, 4)) + 1j * rng.standard_normal((2, 4))
    y = (x @ W.T * 0.5).astype(np.complex64)
    weights = weights_of(lambda m: complex_mlp(m, None, x, y))
    assert np.abs(weights["0.weight"].imag).max() > 0  # complex initialisation, both parts drawn
    (losses, w_grad, b_grad, out), _ = run_both(complex_mlp, weights, x, y, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] / 2
    assert np.iscomplexobj(w_grad) and w_grad.shape == (16, 4) and b_grad.dtype == np.float32


# ----------------------------------------------------------------------------------------------
# 2-D FFT convolution (rfft2/irfft2 with s=) against F.conv2d; a log-magnitude spectrum; ortho fftn
# ----------------------------------------------------------------------------------------------


def fft2conv(m, img, k):
    torch, F = m.torch, m.F
    img = torch.tensor(img, requires_grad=True)
    k = torch.tensor(k, requires_grad=True)
    H, W = img.shape[-2:]
    kh, kw = k.shape[-2:]
    s = (H + kh - 1, W + kw - 1)
    Y = torch.fft.irfft2(torch.fft.rfft2(img, s=s) * torch.fft.rfft2(torch.flip(k, dims=(-2, -1)), s=s), s=s)
    valid = Y[..., kh - 1 : H, kw - 1 : W]
    ref = F.conv2d(img.unsqueeze(1), k.view(1, 1, kh, kw)).squeeze(1)
    loss = (valid**2).sum()
    gi, gk = torch.autograd.grad(loss, [img, k])
    r1, r2 = torch.autograd.grad((ref**2).sum(), [img, k])
    spec = torch.fft.fftshift(torch.fft.fft2(img), dim=(-2, -1)).abs().log1p()
    c = torch.fft.ifftn(torch.fft.fftn(img, dim=(-2, -1), norm="ortho"), dim=(-2, -1), norm="ortho").real
    return valid, ref, gi, gk, r1, r2, spec, c


def test_fft2_convolution_matches_conv2d():
    g = np.random.default_rng(0)
    img, k = g.standard_normal((2, 9, 10)), g.standard_normal((3, 4))
    (valid, ref, gi, gk, ri, rk, spec, back), _ = run_both(fft2conv, img, k, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(valid, ref, atol=1e-9)
    np.testing.assert_allclose(gi, ri, atol=1e-9)
    np.testing.assert_allclose(gk, rk, atol=1e-8)
    np.testing.assert_allclose(back, img, atol=1e-12)  # ifftn(fftn(x, ortho), ortho) is x
    np.testing.assert_allclose(spec, np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(img), axes=(-2, -1)))), rtol=1e-10)
