# ruff: noqa: B007, B023, E501, E701, E702, E731, F841, N806  (the programs are kept as their authors write them)
"""Inverse problems and computational imaging (see tests/pytorch_programs.py), as the PyTorch ports of the textbook
algorithms and the imaging papers' reference code write them, each run on chainrule and on PyTorch from the same
seeds, comparing values and gradients, and checked against NumPy by hand, literals or invariants (adjoint tests,
closed forms) where PyTorch is not installed.

Deblurring with a known Gaussian kernel (``F.conv2d`` and its adjoint ``conv_transpose2d`` by the dot-product test,
Wiener filtering with ``rfft2``/``irfft2`` and complex division, Adam and strong-Wolfe LBFGS on the data term);
compressed sensing (FISTA with soft-thresholding, ``matrix_norm(ord=2)``, an unrolled LISTA trained end to end);
total-variation denoising by Chambolle-Pock with ``torch.diff`` finite differences (checked adjoint) and by
autograd through ``roll``; phase retrieval (Gerchberg-Saxton with ``polar``/``angle``, Wirtinger flow whose complex
autograd gradient is twice the conjugate Wirtinger derivative); CT (a Radon transform by ``affine_grid`` and
``grid_sample``, a ramp filter by ``fft``, backprojection); MRI (centred ``fft2`` by ``fftshift``/``ifftshift``,
undersampling masks, coil sensitivities, RSS and SENSE combination, complex SGD); Tikhonov by ``linalg.solve``,
``lstsq``, SVD and conjugate gradients; deep image prior; plug-and-play and RED with a small denoiser; complex
optimisers and complex linear algebra with their gradients."""

import math

import numpy as np

from .pytorch_programs import run_both


def close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


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


def wiener_grad(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    b = torch.randn(7, 9, dtype=torch.float64)
    K = torch.zeros(7, 9, dtype=torch.float64); K[:3, :3] = torch.rand(3, 3, dtype=torch.float64)
    lam = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    Kf = torch.fft.rfft2(K)
    Bf = torch.fft.rfft2(b)
    Xf = Kf.conj() * Bf / (Kf.abs() ** 2 + lam)
    x = torch.fft.irfft2(Xf, s=b.shape)
    x2 = torch.fft.irfft2(Xf)  # default size (even)
    (x.pow(2).sum() + x2.sum()).backward()
    c = torch.randn(5, 4, dtype=torch.complex128, requires_grad=True)
    d = torch.randn(5, 4, dtype=torch.complex128, requires_grad=True)
    q = c / d
    (q.abs().sum() + torch.angle(q).sum() + q.real.pow(2).sum()).backward()
    e = torch.randn(6, dtype=torch.float64, requires_grad=True)
    hf = torch.fft.hfft(torch.fft.ihfft(e), n=6)
    r = torch.fft.rfft(e, norm="forward")
    ir = torch.fft.irfft(r, n=6, norm="forward")
    (hf.sum() * 2 + (ir * torch.arange(6.)).sum() + r.abs().sum()).backward()
    return dict(x=x.detach(), x2s=tuple(x2.shape), lg=lam.grad, cg=c.grad, dg=d.grad, eg=e.grad, hf=hf.detach())

def fftshift_grads(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    x = torch.randn(5, 7, dtype=torch.complex64, requires_grad=True)
    y = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x), s=(6, 8), norm="ortho"))
    w = torch.arange(48.).reshape(6, 8)
    (torch.view_as_real(y)[..., 0] * w).sum().backward()
    z = torch.randn(3, 4, 4, requires_grad=True)
    Z = torch.fft.fft2(z)
    Zs = torch.fft.fftshift(Z, dim=(-2, -1))
    a = torch.fft.ifft2(torch.fft.ifftshift(Zs * torch.sgn(Zs), dim=(-2, -1))).real
    a.sum().backward()
    f = torch.fft.rfftfreq(7, d=0.5)
    g = torch.fft.fftfreq(6, d=0.1, dtype=torch.float64)
    return dict(xg=x.grad, zg=z.grad, a=a.detach(), f=f, g=g, dt=str(x.grad.dtype).split(".")[-1])

def complex_optim(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    n = 5
    A = torch.randn(12, n, dtype=torch.complex64)
    xt = torch.randn(n, dtype=torch.complex64)
    y = (A @ xt).abs()
    outs = {}
    for name, make in [("adam", lambda p: torch.optim.Adam(p, lr=0.05)), ("sgd", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)),
                       ("rms", lambda p: torch.optim.RMSprop(p, lr=0.01)), ("adamw", lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1))]:
        torch.manual_seed(1)
        z = torch.randn(n, dtype=torch.complex64, requires_grad=True)
        opt = make([z])
        for _ in range(4):
            opt.zero_grad(); l = ((A @ z).abs() - y).pow(2).mean(); l.backward(); opt.step()
        outs[name] = z.detach()
    zz = torch.randn(n, dtype=torch.complex64, requires_grad=True)
    lb = torch.optim.LBFGS([zz], max_iter=5)
    def closure():
        lb.zero_grad(); l = ((A @ zz).abs() - y).pow(2).mean(); l.backward(); return l
    lb.step(closure)
    outs["lbfgs"] = zz.detach()
    return outs

def complex_linalg(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    A = torch.randn(4, 4, dtype=torch.complex128, requires_grad=True)
    b = torch.randn(4, 2, dtype=torch.complex128, requires_grad=True)
    x = torch.linalg.solve(A, b)
    AH = A.mH
    n = torch.linalg.norm(x)
    v = torch.vdot(x[:, 0], x[:, 1])
    (n + v.real + (AH @ A).diagonal().real.sum() + torch.linalg.vector_norm(b, ord=1)).backward()
    B = torch.randn(6, 3, dtype=torch.complex128, requires_grad=True)
    c = torch.randn(6, dtype=torch.complex128)
    sol = torch.linalg.lstsq(B, c[:, None]).solution
    sol.abs().pow(2).sum().backward()
    P = torch.randn(3, 3, dtype=torch.complex128, requires_grad=True)
    H = P @ P.mH + torch.eye(3)
    L = torch.linalg.cholesky(H)
    xs = torch.cholesky_solve(torch.ones(3, 1, dtype=torch.complex128), L)
    xs.real.sum().backward()
    return dict(x=x.detach(), Ag=A.grad, bg=b.grad, Bg=B.grad, Pg=P.grad, Hdt=str(H.dtype).split(".")[-1])

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

def adjoint_autograd(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    k = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    y = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    A = lambda u: F.conv2d(u, k, stride=2, padding=1)
    At = lambda v: F.conv_transpose2d(v, k, stride=2, padding=1, output_padding=0)
    lhs = (A(x) * y).sum(); rhs = (x * At(y)).sum()
    # adjoint via autograd vjp
    xr = torch.zeros_like(x, requires_grad=True)
    Aty, = torch.autograd.grad(A(xr), xr, grad_outputs=y)
    from_func = torch.func.vjp(A, x)[1](y)[0] if hasattr(torch, "func") else Aty
    x10 = torch.randn(1, 3, 10, 10, dtype=torch.float64)
    y10 = A(x10)
    At10 = F.conv_transpose2d(y10, k, stride=2, padding=1, output_padding=1)
    return dict(d=(lhs - rhs).item(), Aty=Aty, At=At(y), ff=from_func, s10=tuple(At10.shape))

def complex_optimisers_more(m):
    torch = m.torch
    out = {}
    A = None
    for name, make in [("adam_amsgrad", lambda p: torch.optim.Adam(p, lr=0.05, amsgrad=True)), ("adam_foreach", lambda p: torch.optim.Adam(p, lr=0.05, foreach=True)),
                       ("nadam", lambda p: torch.optim.NAdam(p, lr=0.05)), ("radam", lambda p: torch.optim.RAdam(p, lr=0.05)),
                       ("adagrad", lambda p: torch.optim.Adagrad(p, lr=0.05)), ("adadelta", lambda p: torch.optim.Adadelta(p, lr=0.5)),
                       ("adamax", lambda p: torch.optim.Adamax(p, lr=0.05)), ("asgd", lambda p: torch.optim.ASGD(p, lr=0.05)),
                       ("rprop", lambda p: torch.optim.Rprop(p, lr=0.05)), ("sgd_nest", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
                       ("rms_c", lambda p: torch.optim.RMSprop(p, lr=0.01, centered=True, momentum=0.5)),
                       ("lbfgs_sw", None)]:
        torch.manual_seed(0)
        A = torch.randn(10, 4, dtype=torch.complex64); y = (A @ torch.randn(4, dtype=torch.complex64)).abs()
        z = torch.randn(4, dtype=torch.complex64, requires_grad=True)
        loss_fn = lambda: ((A @ z).abs() - y).pow(2).mean()
        if make is None:
            opt = torch.optim.LBFGS([z], max_iter=6, line_search_fn="strong_wolfe")
            def closure():
                opt.zero_grad(); l = loss_fn(); l.backward(); return l
            opt.step(closure)
        else:
            opt = make([z])
            for _ in range(3):
                opt.zero_grad(); l = loss_fn(); l.backward(); opt.step()
        out[name] = z.detach()
    # scheduler + complex param in a module
    class PhaseMask(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.mask = torch.nn.Parameter(torch.ones(4, 4, dtype=torch.complex64))
        def forward(self, x):
            return torch.fft.ifft2(torch.fft.fft2(x) * self.mask)
    net = PhaseMask()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    x = torch.rand(4, 4); t = torch.rand(4, 4)
    for _ in range(3):
        opt.zero_grad(); l = (net(x).abs() - t).pow(2).sum(); l.backward(); opt.step(); sched.step()
    sd = net.state_dict()
    out["mask"] = sd["mask"]; out["st"] = opt.state_dict()["state"][0]["exp_avg"]
    torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
    out["clipped"] = net.mask.grad
    return out


def complex_second_order(m):
    torch = m.torch
    torch.manual_seed(0)
    A = torch.randn(8, 3, dtype=torch.complex128); y = (A @ torch.randn(3, dtype=torch.complex128)).abs() ** 2
    z = torch.randn(3, dtype=torch.complex128, requires_grad=True)
    f = (((A @ z).abs() ** 2 - y) ** 2).mean()
    g, = torch.autograd.grad(f, z, create_graph=True)
    v = torch.randn(3, dtype=torch.complex128)
    hv, = torch.autograd.grad((g.conj() * v).real.sum(), z)
    H = torch.randn(4, 4, dtype=torch.complex128, requires_grad=True)
    Hh = H + H.mH
    w, V = torch.linalg.eigh(Hh)
    (w.pow(2).sum() + (V.abs() ** 2)[0].sum()).backward()
    B = torch.randn(5, 3, dtype=torch.complex128, requires_grad=True)
    U, S, Vh = torch.linalg.svd(B, full_matrices=False)
    (S.sum() + (U @ Vh).real.sum()).backward()
    P = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    torch.linalg.pinv(P).pow(2).sum().backward()
    Q = torch.randn(3, 3, dtype=torch.complex128, requires_grad=True)
    (torch.linalg.det(Q).abs() + torch.linalg.slogdet(Q).logabsdet + torch.linalg.inv(Q).real.sum()).backward()
    X = torch.randn(3, 3, dtype=torch.complex128, requires_grad=True)
    torch.linalg.matrix_exp(X).abs().sum().backward()
    return dict(g=g.detach(), hv=hv, Hg=H.grad, Bg=B.grad, Pg=P.grad, Qg=Q.grad, Xg=X.grad, w=w.detach())


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


def test_wiener_gradients_and_complex_division():
    ours, _ = run_both(wiener_grad, rtol=1e-6, atol=1e-8)
    assert ours["x2s"] == (7, 8)
    close(ours["lg"], -1678.6468829919331, rtol=1e-8)
    close(ours["eg"], [1.6720486, 3.1438469, 3.7467341, 4.6812088, 5.5812173, 7.1749443], rtol=1e-6)
    close(ours["cg"][0, :2], [0.6470044 + 4.3748536j, -3.9675509 - 2.762368j], rtol=1e-6)


def test_centred_fft_gradients():
    ours, _ = run_both(fftshift_grads, rtol=1e-5, atol=1e-5)
    assert ours["dt"] == "complex64"
    close(ours["zg"], np.ones((3, 4, 4)), rtol=1e-5, atol=1e-5)  # ifft2(fft2(z) * sgn).real summed: d/dz = 1
    close(ours["f"], np.fft.rfftfreq(7, 0.5))
    close(ours["g"], np.fft.fftfreq(6, 0.1), rtol=1e-12)


def test_complex_optimisers():
    ours, _ = run_both(complex_optim, rtol=1e-4, atol=1e-5)
    close(ours["adam"][:2], [0.6617403 - 0.0071716j, 0.240689 + 0.2457316j], rtol=1e-4, atol=1e-6)
    close(ours["sgd"][:2], [0.4912393 + 0.0720843j, 0.0852374 + 0.4260504j], rtol=1e-4, atol=1e-6)
    close(ours["lbfgs"][:2], [-0.2191437 - 0.1950768j, -0.6700422 - 1.0774754j], rtol=1e-4, atol=1e-6)


def test_complex_linalg_gradients():
    ours, _ = run_both(complex_linalg, rtol=1e-7, atol=1e-9)
    assert ours["Hdt"] == "complex128"
    close(ours["Ag"][0, :2], [-2.7852464 - 7.5571329j, 2.252749 + 0.5617349j], rtol=1e-6)
    close(ours["Bg"][0, :2], [0.2121151 + 0.234212j, 0.0131005 + 0.257875j], rtol=1e-6)


def test_radon_by_batched_affine_grid():
    ours, _ = run_both(radon_matrix, rtol=1e-7, atol=1e-9)
    close(ours["tg"][0], [[-7.672819, 1.3308078, -7.6141715], [-8.9974011, -1.6197248, 0.6023905]], rtol=1e-6)
    close(ours["ig"][1, 0, 3, 2:5], [23.3480634, 29.2770132, 27.9453695], rtol=1e-6)


def test_conv_adjoint_by_autograd_and_vjp():
    ours, _ = run_both(adjoint_autograd, rtol=1e-10, atol=1e-12)
    assert abs(ours["d"]) < 1e-12 and ours["s10"] == (1, 3, 10, 10)
    close(ours["Aty"], ours["At"], rtol=1e-12)  # the vjp of conv2d is conv_transpose2d
    close(ours["ff"], ours["At"], rtol=1e-12)


def test_complex_optimisers_more_and_a_complex_parameter():
    ours, _ = run_both(complex_optimisers_more, rtol=1e-4, atol=1e-5)
    close(ours["adam_amsgrad"][:2], [1.3050956 - 0.1728189j, 0.1828882 - 0.3929225j], rtol=1e-4, atol=1e-6)
    close(ours["adam_foreach"], ours["adam_amsgrad"], rtol=1e-2, atol=1e-2)  # (3 steps: v never falls below its max)
    close(ours["nadam"][:2], [1.3277068 - 0.1432505j, 0.1422484 - 0.4193924j], rtol=1e-4, atol=1e-6)
    close(ours["rprop"][:2], [1.2729368 - 0.207047j, 0.2263489 - 0.3598603j], rtol=1e-4, atol=1e-6)
    close(ours["lbfgs_sw"][:2], [0.150243 - 0.0597393j, -0.600157 - 0.0942597j], rtol=1e-4, atol=1e-6)
    close(ours["mask"][0, :2], [1.1703367, 0.8259935 - 0.1745741j], rtol=1e-4, atol=1e-6)
    close(np.linalg.norm(ours["clipped"]), 0.1, rtol=1e-5)  # clip_grad_norm_ of a complex gradient: its modulus


def test_complex_hessian_vector_and_spectral_gradients():
    ours, _ = run_both(complex_second_order, rtol=1e-7, atol=1e-9)
    # (Wirtinger flow's Gauss-Newton step: the Hessian-vector product of a real loss of complex z, by double backward)
    close(ours["hv"], [-2.8589356 - 1.0217823j, 4.2575005 + 0.1343503j, -15.6503049 + 1.3199753j], rtol=1e-6)
    close(ours["Pg"][0], [0.1939668, -0.4331658, 0.2618441], rtol=1e-6)
    close(ours["Xg"][0], [2.9184784 - 0.1359108j, 4.8225543 + 0.863748j, 2.1917973 - 1.727732j], rtol=1e-6)
    assert (np.diff(ours["w"]) >= 0).all()  # eigh's eigenvalues ascending
