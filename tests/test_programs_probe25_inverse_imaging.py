# ruff: noqa: B007, E501, E702, E731, F841  (the programs are kept as their authors write them)
"""Inverse problems and computational imaging (see tests/pytorch_programs.py), as the PyTorch ports of the textbook
algorithms and the imaging papers' reference code write them, each run on chainrule and on PyTorch from the same
seeds, comparing values and gradients, and checked against NumPy by hand, literals or invariants (adjoint tests,
closed forms) where PyTorch is not installed. Deblurring with a known Gaussian kernel (``F.conv2d`` and its adjoint
``conv_transpose2d`` by the dot-product test, Wiener filtering with ``rfft2``/``irfft2`` and complex division, Adam
and strong-Wolfe LBFGS on the data term); compressed sensing (FISTA with soft-thresholding, ``matrix_norm(ord=2)``,
an unrolled LISTA trained end to end); total-variation denoising by Chambolle-Pock with ``torch.diff`` finite
differences (checked adjoint) and by autograd through ``roll``; phase retrieval (Gerchberg-Saxton with
``polar``/``angle``, Wirtinger flow whose complex autograd gradient is twice the conjugate Wirtinger derivative); CT
(a Radon transform by ``affine_grid`` and ``grid_sample``, also batched, a ramp filter by ``fft``, backprojection);
MRI (centred ``fft2`` by ``fftshift``/``ifftshift``, undersampling masks, coil sensitivities, RSS and SENSE
combination, complex SGD); Tikhonov by ``linalg.solve``, ``lstsq``, SVD and conjugate gradients; deep image prior;
plug-and-play and RED with a small denoiser."""

import math

import numpy as np

from .probe25_inverse_common import close
from .pytorch_programs import run_both


def deblur(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    g = torch.exp(-torch.arange(-2., 3., dtype=torch.float64) ** 2 / 2)
    k = torch.outer(g, g); k = k / k.sum(); k = k[None, None]
    A = lambda u: F.conv2d(u, k, padding=2)
    At = lambda v: F.conv_transpose2d(v, k, padding=2)
    y = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    dot = (A(x) * y).sum() - (x * At(y)).sum()
    b = A(x) + 0.01 * torch.randn_like(x)
    # Wiener
    K = torch.zeros(12, 12, dtype=torch.float64); K[:5, :5] = k[0, 0]
    K = torch.roll(K, shifts=(-2, -2), dims=(0, 1))
    Kf = torch.fft.rfft2(K)
    Bf = torch.fft.rfft2(b[0, 0])
    Xf = Kf.conj() * Bf / (Kf.abs() ** 2 + 1e-2)
    xw = torch.fft.irfft2(Xf, s=(12, 12))
    # gradient descent via autograd
    u = torch.zeros_like(b, requires_grad=True)
    opt = torch.optim.Adam([u], lr=0.1)
    ls = []
    for _ in range(5):
        opt.zero_grad(); loss = 0.5 * ((A(u) - b) ** 2).sum() + 1e-3 * u.pow(2).sum(); loss.backward(); opt.step(); ls.append(loss.item())
    # LBFGS
    v = torch.zeros_like(b, requires_grad=True)
    lb = torch.optim.LBFGS([v], lr=1, max_iter=10, line_search_fn="strong_wolfe")
    def closure():
        lb.zero_grad(); l = 0.5 * ((A(v) - b) ** 2).sum(); l.backward(); return l
    lb.step(closure)
    return dict(dot=dot.item(), dtype=str(Xf.dtype).split(".")[-1], xw=xw, kfdt=str(Kf.dtype).split(".")[-1], ls=ls, v=v.detach(), xwshape=tuple(xw.shape))

def ista(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    n, d = 20, 40
    A = torch.randn(n, d) / math.sqrt(n)
    x0 = torch.zeros(d); x0[torch.randperm(d)[:4]] = torch.randn(4)
    y = A @ x0
    L = torch.linalg.matrix_norm(A, ord=2) ** 2
    lam = 0.05
    soft = lambda z, t: torch.sign(z) * torch.clamp(z.abs() - t, min=0)
    x = torch.zeros(d); z = x.clone(); t = 1.0
    for _ in range(30):
        xn = soft(z - A.T @ (A @ z - y) / L, lam / L)
        tn = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = xn + (t - 1) / tn * (xn - x); x, t = xn, tn
    x2 = F.softshrink(torch.zeros(d) + 0.3 * torch.randn(d), 0.1)
    class LISTA(nn.Module):
        def __init__(self, A, K=3):
            super().__init__()
            self.We = nn.Linear(A.shape[0], A.shape[1], bias=False)
            self.S = nn.Linear(A.shape[1], A.shape[1], bias=False)
            with torch.no_grad():
                self.We.weight.copy_(A.T / L); self.S.weight.copy_(torch.eye(A.shape[1]) - A.T @ A / L)
            self.theta = nn.Parameter(torch.full((K,), lam / L.item()))
            self.K = K
        def forward(self, y):
            B = self.We(y); z = soft(B, self.theta[0])
            for k in range(1, self.K):
                z = soft(B + self.S(z), self.theta[k])
            return z
    net = LISTA(A)
    X = torch.zeros(16, d)
    idx = torch.randint(0, d, (16, 3))
    X.scatter_(1, idx, torch.randn(16, 3))
    Y = X @ A.T
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    ls = []
    for _ in range(4):
        opt.zero_grad(); l = F.mse_loss(net(Y), X); l.backward(); opt.step(); ls.append(l.item())
    return dict(x=x, L=L, x2=x2, ls=ls, gth=net.theta.grad, nz=int((x.abs() > 1e-6).sum()))

def tv_cp(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    img = torch.zeros(16, 16); img[4:12, 4:12] = 1
    f = img + 0.2 * torch.randn(16, 16)
    def grad(u):
        gx = torch.zeros_like(u); gy = torch.zeros_like(u)
        gx[:, :-1] = torch.diff(u, dim=1); gy[:-1, :] = torch.diff(u, dim=0)
        return torch.stack([gx, gy])
    def div(p):
        px, py = p[0], p[1]
        dx = torch.zeros_like(px); dy = torch.zeros_like(py)
        dx[:, 0] = px[:, 0]; dx[:, 1:-1] = px[:, 1:-1] - px[:, :-2]; dx[:, -1] = -px[:, -2]
        dy[0, :] = py[0, :]; dy[1:-1, :] = py[1:-1, :] - py[:-2, :]; dy[-1, :] = -py[-2, :]
        return dx + dy
    # adjoint check
    u = torch.randn(16, 16); p = torch.randn(2, 16, 16)
    adj = (grad(u) * p).sum() + (u * div(p)).sum()
    lam = 8.0; tau = 0.25; sigma = 0.5
    x = f.clone(); xb = x.clone(); y = torch.zeros(2, 16, 16)
    for _ in range(20):
        y = y + sigma * grad(xb)
        y = y / torch.clamp(torch.sqrt((y ** 2).sum(0, keepdim=True)), min=1.0)
        xo = x
        x = (x + tau * div(y) + tau * lam * f) / (1 + tau * lam)
        xb = 2 * x - xo
    # roll-based periodic and autograd TV
    v = f.clone().requires_grad_(True)
    tv = torch.sqrt((torch.roll(v, -1, 0) - v) ** 2 + (torch.roll(v, -1, 1) - v) ** 2 + 1e-8).sum()
    e = 0.5 * ((v - f) ** 2).sum() + 0.1 * tv
    g, = torch.autograd.grad(e, v)
    d = torch.diff(v, dim=0, prepend=v[:1]); d2 = torch.diff(v, n=2, dim=1, append=v[:, -1:])
    (d.abs().sum() + d2.abs().sum()).backward()
    return dict(adj=adj.item(), x=x, g=g, vg=v.grad, d2s=tuple(d2.shape))

def phase(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    amp = torch.rand(8, 8, dtype=torch.float64) + 0.5
    ph = torch.rand(8, 8, dtype=torch.float64) * 2 * math.pi
    obj = torch.polar(amp, ph)
    meas = torch.fft.fft2(obj).abs()
    g = torch.polar(amp, torch.zeros_like(amp))
    errs = []
    for _ in range(5):
        G = torch.fft.fft2(g)
        G = meas * torch.exp(1j * torch.angle(G))
        g = torch.fft.ifft2(G)
        g = amp * torch.exp(1j * g.angle())
        errs.append(((torch.fft.fft2(g).abs() - meas) ** 2).mean().item())
    # Wirtinger flow
    n, mm = 6, 30
    A = torch.randn(mm, n, dtype=torch.complex128)
    xt = torch.randn(n, dtype=torch.complex128)
    y = (A @ xt).abs() ** 2
    z = torch.randn(n, dtype=torch.complex128, requires_grad=True)
    f = ((((A @ z).abs() ** 2) - y) ** 2).mean()
    f.backward()
    zg = z.grad.clone()
    # manual Wirtinger gradient
    Az = A @ z.detach()
    wg = A.conj().T @ ((Az.abs() ** 2 - y) * Az) / mm
    z2 = torch.randn(n, dtype=torch.complex64, requires_grad=True)
    loss = (z2 * z2.conj()).real.sum() + torch.view_as_real(z2).pow(3).sum()
    loss.backward()
    r = torch.randn(4, requires_grad=True); th = torch.randn(4, requires_grad=True)
    c = torch.polar(r.abs(), th)
    (c.real.sum() + c.imag.pow(2).sum() + c.angle().sum()).backward()
    return dict(errs=errs, zg=zg, wg=wg, z2g=z2.grad, dt=str(z2.grad.dtype).split(".")[-1], rg=r.grad, thg=th.grad, cdt=str(c.dtype).split(".")[-1])

def radon(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    N = 16
    img = torch.zeros(1, 1, N, N); img[..., 5:11, 6:10] = 1.0
    img = img.requires_grad_(True)
    angles = torch.linspace(0, math.pi, 8 + 1)[:-1]
    def rotate(x, th):
        c, s = torch.cos(th), torch.sin(th)
        R = torch.stack([torch.stack([c, -s, torch.zeros(())]), torch.stack([s, c, torch.zeros(())])])[None]
        grid = F.affine_grid(R, x.shape, align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)
    sino = torch.stack([rotate(img, a).sum(dim=2)[0, 0] for a in angles])
    sino.pow(2).sum().backward()
    # ramp filter
    n = sino.shape[1]
    freqs = torch.fft.fftfreq(2 * n)
    ramp = 2 * freqs.abs()
    P = torch.fft.fft(F.pad(sino.detach(), (0, n)), dim=-1)
    filt = torch.fft.ifft(P * ramp, dim=-1).real[:, :n]
    # backprojection
    xs = torch.linspace(-1, 1, N)
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    rec = torch.zeros(N, N)
    for i, a in enumerate(angles):
        t = X * torch.cos(a) + Y * torch.sin(a)
        grid = torch.stack([t, torch.zeros_like(t)], dim=-1)[None]
        rec = rec + F.grid_sample(filt[i][None, None, None], grid, align_corners=True)[0, 0]
    rec = rec * math.pi / (2 * len(angles))
    return dict(sino=sino.detach(), g=img.grad, filt=filt, rec=rec, fr=freqs)

def mri(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    H = W = 8
    img = torch.rand(H, W) * torch.exp(1j * torch.rand(H, W))
    fft2c = lambda x: torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    ifft2c = lambda k: torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    mask = (torch.rand(1, W) < 0.5).float(); mask[:, W // 2 - 1:W // 2 + 1] = 1
    ncoil = 3
    sens = torch.randn(ncoil, H, W, dtype=torch.complex64)
    sens = sens / torch.sqrt((sens.abs() ** 2).sum(0, keepdim=True))
    k = fft2c(sens * img) * mask
    zf = ifft2c(k)
    rss = torch.sqrt((zf.abs() ** 2).sum(0))
    sense = (sens.conj() * zf).sum(0)
    # CG-SENSE-like: gradient descent with autograd on complex image
    x = torch.zeros(H, W, dtype=torch.complex64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.5)
    ls = []
    for _ in range(5):
        opt.zero_grad()
        r = fft2c(sens * x) * mask - k
        loss = (r.abs() ** 2).sum(); loss.backward(); opt.step(); ls.append(loss.item())
    kr = torch.view_as_real(k)
    return dict(rss=rss, sense=sense, ls=ls, x=x.detach(), dt=str(k.dtype).split(".")[-1], mdt=str(mask.dtype).split(".")[-1], krs=tuple(kr.shape), xg=x.grad)

def tikhonov(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    A = torch.randn(15, 10, dtype=torch.float64); b = torch.randn(15, dtype=torch.float64)
    lam = 0.1
    x1 = torch.linalg.solve(A.T @ A + lam * torch.eye(10, dtype=torch.float64), A.T @ b)
    Aaug = torch.cat([A, math.sqrt(lam) * torch.eye(10, dtype=torch.float64)])
    baug = torch.cat([b, torch.zeros(10, dtype=torch.float64)])
    x2 = torch.linalg.lstsq(Aaug, baug[:, None]).solution[:, 0]
    M = A.T @ A + lam * torch.eye(10, dtype=torch.float64); rhs = A.T @ b
    x = torch.zeros(10, dtype=torch.float64); r = rhs - M @ x; p = r.clone(); rs = r @ r
    for _ in range(10):
        Ap = M @ p; alpha = rs / (p @ Ap); x = x + alpha * p; r = r - alpha * Ap
        rsn = r @ r
        p = r + rsn / rs * p; rs = rsn
    Ar = A.clone().requires_grad_(True)
    xs = torch.linalg.solve(Ar.T @ Ar + lam * torch.eye(10, dtype=torch.float64), Ar.T @ b)
    xs.sum().backward()
    Ac = A.clone().requires_grad_(True)
    xl = torch.linalg.lstsq(Ac, b[:, None]).solution
    xl.pow(2).sum().backward()
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    xsvd = Vh.T @ (S / (S ** 2 + lam) * (U.T @ b))
    xc = torch.linalg.solve(torch.complex(M, M * 0.1), rhs.to(torch.complex128))
    return dict(x1=x1, x2=x2, x=x, gA=Ar.grad, glA=Ac.grad, xsvd=xsvd, xc=xc)

def dip(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(8), nn.LeakyReLU(0.2),
                        nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(8, 3, 3, padding=1), nn.Sigmoid())
    z = torch.rand(1, 4, 8, 8) * 0.1
    target = torch.rand(1, 3, 16, 16)
    mask = (torch.rand(1, 1, 16, 16) > 0.3).float()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    ls = []
    for i in range(4):
        opt.zero_grad()
        zin = z + torch.randn_like(z) * (1. / 30)
        out = net(zin)
        loss = F.mse_loss(out * mask, target * mask); loss.backward(); opt.step(); ls.append(loss.item())
    psnr = 10 * torch.log10(1 / F.mse_loss(out.detach(), target))
    return dict(ls=ls, psnr=psnr)

def pnp(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    den = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    x_true = torch.rand(1, 1, 10, 10)
    k = torch.ones(1, 1, 3, 3) / 9
    A = lambda u: F.conv2d(F.pad(u, (1, 1, 1, 1), mode="circular"), k)
    y = A(x_true) + 0.01 * torch.randn_like(x_true)
    x = y.clone()
    with torch.no_grad():
        for _ in range(3):
            z = x - 0.5 * (A(A(x) - y))
            x = z - den(z)
    # RED with gradient
    xr = y.clone().requires_grad_(True)
    red = 0.5 * ((A(xr) - y) ** 2).sum() + 0.5 * (xr * (xr - den(xr))).sum()
    gr, = torch.autograd.grad(red, xr)
    return dict(x=x, gr=gr)


def radon_matrix(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    N = 8
    img = torch.rand(2, 1, N, N, dtype=torch.float64, requires_grad=True)
    th = torch.tensor([0.0, 0.3, 1.2], dtype=torch.float64)
    c, s = torch.cos(th), torch.sin(th)
    theta = torch.zeros(3, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = c; theta[:, 0, 1] = -s; theta[:, 1, 0] = s; theta[:, 1, 1] = c
    grid = F.affine_grid(theta, (3, 1, N, N), align_corners=True)
    x = img.repeat_interleave(3, dim=0) if False else img[:, None].expand(2, 3, 1, N, N).reshape(6, 1, N, N)
    rot = F.grid_sample(x, grid.repeat(2, 1, 1, 1), mode="bilinear", padding_mode="zeros", align_corners=True)
    sino = rot.sum(-2)
    rot2 = F.grid_sample(x, grid.repeat(2, 1, 1, 1), mode="nearest", padding_mode="border", align_corners=False)
    rot3 = F.grid_sample(x, grid.repeat(2, 1, 1, 1), mode="bicubic", padding_mode="reflection", align_corners=False)
    (sino.pow(2).sum() + rot3.sum() + rot2.sum()).backward()
    # theta grad
    th2 = torch.tensor([[[0.9, -0.2, 0.1], [0.2, 0.9, 0.0]]], dtype=torch.float64, requires_grad=True)
    g2 = F.affine_grid(th2, (1, 1, N, N), align_corners=False)
    F.grid_sample(img[:1], g2, align_corners=False).pow(2).sum().backward()
    return dict(sino=sino.detach(), ig=img.grad, tg=th2.grad)


def test_deblur_adjoint_wiener_adam_lbfgs():
    ours, _ = run_both(deblur, rtol=1e-5, atol=1e-8)
    assert abs(ours["dot"]) < 1e-12  # <Ax, y> = <x, A^T y>: conv_transpose2d is conv2d's adjoint
    assert ours["dtype"] == ours["kfdt"] == "complex128" and ours["xwshape"] == (12, 12)
    close(ours["ls"], [13.695242842636507, 8.678470080641885, 4.866273916515542, 2.2448267353879037,
                       0.7437643025376833], rtol=1e-10)


def test_fista_and_lista():
    ours, _ = run_both(ista, rtol=1e-4, atol=1e-6)
    assert ours["nz"] == 4
    close(ours["L"], 5.168207, rtol=1e-5)
    close(ours["ls"], [0.038637690246105194, 0.036700379103422165, 0.03491755202412605, 0.03328334540128708], 1e-5)
    close(ours["gth"], [-0.0244352, -0.0221488, -0.0038628], rtol=1e-4, atol=1e-7)


def test_total_variation_chambolle_pock_and_autograd():
    ours, _ = run_both(tv_cp, rtol=1e-5, atol=1e-5)
    assert abs(ours["adj"]) < 1e-4  # <grad u, p> = -<u, div p>
    assert ours["d2s"] == (16, 15)
    close(ours["x"][8, 4:8], [1.0058748, 1.0183598, 1.0423417, 0.9829834], rtol=1e-5)
    close(ours["g"][0, :3], [0.1066754, -0.0143516, -0.017272], rtol=1e-4, atol=1e-6)
    close(ours["vg"][0, :3], [2.0, -2.0, 3.0])


def test_gerchberg_saxton_and_wirtinger_flow():
    ours, _ = run_both(phase, rtol=1e-5, atol=1e-6)
    close(ours["errs"], [7.891478751445662, 3.760370974008868, 2.359979728445551, 1.751605698386962,
                         1.419721390011126], rtol=1e-10)
    close(ours["zg"], 4 * ours["wg"], rtol=1e-10)  # z.grad = 2 dL/d(conj z) = (4/m) A^H ((|Az|^2 - y) Az)
    assert ours["dt"] == ours["cdt"] == "complex64"


def test_radon_ramp_filter_backprojection():
    ours, _ = run_both(radon, rtol=1e-4, atol=1e-4)
    close(ours["sino"][0, 6:10], [6.0] * 4, rtol=1e-5)  # angle 0 samples the pixel centres: column sums
    close(ours["fr"], np.fft.fftfreq(32), rtol=1e-6)
    close(ours["g"][0, 0, 5, 6:9], [60.881943, 68.99575, 68.995766], rtol=1e-4)
    close(ours["rec"][8, 5:9], [0.8931248, 0.9224361, 0.9712054, 0.9712054], rtol=1e-4)


def test_mri_undersampled_sense():
    ours, _ = run_both(mri, rtol=1e-4, atol=1e-5)
    assert ours["dt"] == "complex64" and ours["mdt"] == "float32" and ours["krs"] == (3, 8, 8, 2)
    close(ours["ls"], [15.789179801940918, 0.7651945352554321, 0.20806214213371277, 0.06983411312103271,
                       0.02469494193792343], rtol=1e-4)
    close(ours["rss"][0, :3], [0.4429142, 0.5670432, 0.3605452], rtol=1e-5)
    close(ours["sense"][0, :2], [0.2839146 + 0.1998765j, 0.4046586 + 0.378517j], rtol=1e-5)


def test_tikhonov_solve_lstsq_cg_svd():
    ours, _ = run_both(tikhonov, rtol=1e-6, atol=1e-9)
    for other in ("x2", "x", "xsvd"):
        close(ours[other], ours["x1"], rtol=1e-8, atol=1e-10)
    assert ours["xc"].dtype == np.complex128


def test_deep_image_prior():
    ours, _ = run_both(dip, rtol=1e-4, atol=1e-6)
    close(ours["ls"], [0.06732719391584396, 0.0618678480386734, 0.06272882968187332, 0.06188230589032173], 1e-4)
    close(ours["psnr"], 10.458601, rtol=1e-4)


def test_plug_and_play_and_red():
    ours, _ = run_both(pnp, rtol=1e-4, atol=1e-5)
    close(ours["x"].sum(), 36.241028, rtol=1e-4)
    close(ours["gr"][0, 0, 0, :3], [0.4595923, 0.3981548, 0.4791728], rtol=1e-4)


def test_radon_by_batched_affine_grid():
    ours, _ = run_both(radon_matrix, rtol=1e-7, atol=1e-9)
    close(ours["tg"][0], [[-7.672819, 1.3308078, -7.6141715], [-8.9974011, -1.6197248, 0.6023905]], rtol=1e-6)
    close(ours["ig"][1, 0, 3, 2:5], [23.3480634, 29.2770132, 27.9453695], rtol=1e-6)
