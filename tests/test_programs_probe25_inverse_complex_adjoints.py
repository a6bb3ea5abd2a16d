# ruff: noqa: B023, E501, E702, E731, F841  (the programs are kept as their authors write them)
"""Inverse problems and computational imaging (see tests/pytorch_programs.py), as the PyTorch ports of the textbook
algorithms and the imaging papers' reference code write them, each run on chainrule and on PyTorch from the same
seeds, comparing values and gradients, and checked against NumPy by hand, literals or invariants (adjoint tests,
closed forms) where PyTorch is not installed. Gradients the programs rely on: Wiener filtering's gradients and
complex division, centred FFTs' gradients, complex optimisers (and a complex parameter), complex linear algebra with
its gradients, complex Hessian-vector products and spectral gradients, a convolution's adjoint by autograd and
``vjp``."""

import numpy as np

from .probe25_inverse_common import close
from .pytorch_programs import run_both


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
