# ruff: noqa: B007, E501, E701, E702, E731, F841  (the programs are kept as their authors wrote them)
"""Implicit and bilevel differentiation programs (see tests/pytorch_programs.py) as PyTorch users write them, each
run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.
Equilibrium and implicit layers: a convolutional deep equilibrium model (Anderson acceleration under ``no_grad``, a
``register_hook`` on the fixed point solving the adjoint system, a hook that removes itself, Hutchinson's Jacobian
penalty with ``create_graph``) and one written as an ``autograd.Function`` whose backward re-enters grad mode; the
DEQ repository's Broyden solver; an implicit ridge layer as a custom Function with gradcheck, a custom Function's
context and a post-accumulate hook, a SciPy root layer with an implicit backward."""

import importlib

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Deep equilibrium models: Anderson acceleration, a backward hook solving the adjoint fixed point
# ----------------------------------------------------------------------------------------------


def anderson(torch, f, x0, m=5, lam=1e-4, threshold=50, eps=1e-8, stop_mode='rel', beta=1.0, **kwargs):
    """ Anderson acceleration for fixed point iteration (the DEQ repository's, with its bookkeeping). """
    bsz, d, L = x0.shape
    alternative_mode = 'rel' if stop_mode == 'abs' else 'abs'
    X = torch.zeros(bsz, m, d * L, dtype=x0.dtype, device=x0.device)
    F = torch.zeros(bsz, m, d * L, dtype=x0.dtype, device=x0.device)
    X[:, 0], F[:, 0] = x0.reshape(bsz, -1), f(x0).reshape(bsz, -1)
    X[:, 1], F[:, 1] = F[:, 0], f(F[:, 0].reshape_as(x0)).reshape(bsz, -1)
    H = torch.zeros(bsz, m + 1, m + 1, dtype=x0.dtype, device=x0.device)
    H[:, 0, 1:] = H[:, 1:, 0] = 1
    y = torch.zeros(bsz, m + 1, 1, dtype=x0.dtype, device=x0.device)
    y[:, 0] = 1
    trace_dict = {'abs': [], 'rel': []}
    lowest_dict = {'abs': 1e8, 'rel': 1e8}
    lowest_step_dict = {'abs': 0, 'rel': 0}
    lowest_xest = x0
    for k in range(2, threshold):
        n = min(k, m)
        G = F[:, :n] - X[:, :n]
        H[:, 1:n + 1, 1:n + 1] = torch.bmm(G, G.transpose(1, 2)) + lam * torch.eye(n, dtype=x0.dtype, device=x0.device)[None]
        alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]
        X[:, k % m] = beta * (alpha[:, None] @ F[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
        F[:, k % m] = f(X[:, k % m].reshape_as(x0)).reshape(bsz, -1)
        gx = (F[:, k % m] - X[:, k % m]).view_as(x0)
        abs_diff = gx.norm().item()
        rel_diff = abs_diff / (1e-5 + F[:, k % m].norm().item())
        diff_dict = {'abs': abs_diff, 'rel': rel_diff}
        trace_dict['abs'].append(abs_diff)
        trace_dict['rel'].append(rel_diff)
        for mode in ['rel', 'abs']:
            if diff_dict[mode] < lowest_dict[mode]:
                if mode == stop_mode:
                    lowest_xest, lowest_gx = X[:, k % m].view_as(x0).clone().detach(), gx.clone().detach()
                lowest_dict[mode] = diff_dict[mode]
                lowest_step_dict[mode] = k
        if trace_dict[stop_mode][-1] < eps:
            for _ in range(threshold - 1 - k):
                trace_dict[stop_mode].append(lowest_dict[stop_mode])
                trace_dict[alternative_mode].append(lowest_dict[alternative_mode])
            break
    out = {"result": lowest_xest, "lowest": lowest_dict[stop_mode], "nstep": lowest_step_dict[stop_mode],
           "prot_break": False, "abs_trace": trace_dict['abs'], "rel_trace": trace_dict['rel'], "eps": eps, "threshold": threshold}
    X = F = None
    return out


def deq_conv(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    autograd = torch.autograd
    torch.manual_seed(0)

    class ResNetLayer(nn.Module):
        def __init__(self, n_channels, n_inner_channels, kernel_size=3, num_groups=2):
            super().__init__()
            self.conv1 = nn.Conv2d(n_channels, n_inner_channels, kernel_size, padding=kernel_size // 2, bias=False)
            self.conv2 = nn.Conv2d(n_inner_channels, n_channels, kernel_size, padding=kernel_size // 2, bias=False)
            self.norm1 = nn.GroupNorm(num_groups, n_inner_channels)
            self.norm2 = nn.GroupNorm(num_groups, n_channels)
            self.norm3 = nn.GroupNorm(num_groups, n_channels)
            self.conv1.weight.data.normal_(0, 0.01)
            self.conv2.weight.data.normal_(0, 0.01)

        def forward(self, z, x):
            y = self.norm1(F.relu(self.conv1(z)))
            return self.norm3(F.relu(z + self.norm2(x + self.conv2(y))))

    class DEQFixedPoint(nn.Module):
        def __init__(self, f, solver, **kwargs):
            super().__init__()
            self.f = f
            self.solver = solver
            self.kwargs = kwargs
            self.hook = None

        def forward(self, x):
            with torch.no_grad():
                out = self.solver(lambda z: self.f(z.view_as(x), x).flatten(1).unsqueeze(-1),
                                  torch.zeros_like(x).flatten(1).unsqueeze(-1), **self.kwargs)
                z = out['result'].view_as(x)
                self.forward_res = out['lowest']
            z = self.f(z, x)
            z0 = z.clone().detach().requires_grad_()
            f0 = self.f(z0, x)
            self.jac_loss = torch.zeros(())
            if self.training:  # Hutchinson's estimate of the Jacobian's Frobenius norm (on its own copy of f)
                zj = z.clone().detach().requires_grad_()
                fj = self.f(zj, x)
                v = torch.randn_like(fj)
                vJ = autograd.grad(fj, zj, v, retain_graph=True, create_graph=True)[0]
                self.jac_loss = vJ.norm() ** 2 / v.numel()

            def backward_hook(grad):
                if self.hook is not None:
                    self.hook.remove()  # (the DEQ repository's guard: the hook runs once however often it is reached)
                g = self.solver(lambda y: autograd.grad(f0, z0, y.view_as(grad), retain_graph=True)[0].flatten(1).unsqueeze(-1) + grad.flatten(1).unsqueeze(-1),
                                torch.zeros_like(grad).flatten(1).unsqueeze(-1), **self.kwargs)
                self.backward_res = g['lowest']
                return g['result'].view_as(grad)
            if z.requires_grad:
                self.hook = z.register_hook(backward_hook)
            return z

    chan = 4
    f = ResNetLayer(chan, 8, kernel_size=3)
    model = nn.Sequential(nn.Conv2d(1, chan, kernel_size=3, bias=True, padding=1), nn.BatchNorm2d(chan),
                          DEQFixedPoint(f, lambda f_, x0, **kw: anderson(torch, f_, x0, **kw), threshold=30, eps=1e-6),
                          nn.BatchNorm2d(chan), nn.AvgPool2d(2, 2), nn.Flatten(), nn.Linear(chan * 3 * 3, 5))
    model = model.double()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    X = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (4,))
    hist = []
    for it in range(2):
        opt.zero_grad()
        yp = model(X)
        loss = nn.CrossEntropyLoss()(yp, y) + 0.5 * model[2].jac_loss
        loss.backward()
        opt.step()
        hist.append((loss.item(), model[2].forward_res, model[2].backward_res))
    model.eval()
    with torch.no_grad():
        ev = model(X)
    return {"hist": hist, "ev": ev, "grads": [p.grad for p in model.parameters()]}


def test_deq_convolutional_with_anderson_and_self_removing_hook():
    ours, _ = run_both(deq_conv, rtol=1e-6, atol=1e-8)
    assert all(h[1] < 1e-4 and h[2] < 1e-2 for h in ours["hist"])  # both fixed points found (relative residuals)
    np.testing.assert_allclose([h[0] for h in ours["hist"]], [1.8355967717546011, 1.771098096771409], rtol=1e-7)


def deq_function(m):
    torch, nn, F = m.torch, m.nn, m.F
    autograd = torch.autograd
    fwAD = importlib.import_module(torch.__name__ + ".autograd.forward_ad")
    func = importlib.import_module(torch.__name__ + ".func")
    torch.manual_seed(0)

    def fixed_point(f, z0, iters=60):
        z = z0
        for _ in range(iters):
            z = f(z)
        return z

    class DEQFunc(autograd.Function):
        @staticmethod
        def forward(ctx, x, W, U, b):
            with torch.no_grad():
                z = fixed_point(lambda z: torch.tanh(z @ W.t() + x @ U.t() + b), torch.zeros(x.shape[0], W.shape[0], dtype=x.dtype))
            ctx.save_for_backward(z, x, W, U, b)
            return z

        @staticmethod
        def backward(ctx, grad):
            z, x, W, U, b = ctx.saved_tensors
            with torch.enable_grad():
                z = z.detach().requires_grad_()
                W_ = W.detach().requires_grad_(); U_ = U.detach().requires_grad_(); b_ = b.detach().requires_grad_()
                x_ = x.detach().requires_grad_()
                fz = torch.tanh(z @ W_.t() + x_ @ U_.t() + b_)
                g = grad
                for _ in range(60):
                    g = autograd.grad(fz, z, g, retain_graph=True)[0] + grad
                gx, gW, gU, gb = autograd.grad(fz, (x_, W_, U_, b_), g)
            return gx, gW, gU, gb

    W = (0.3 * torch.randn(6, 6, dtype=torch.float64)).requires_grad_()
    U = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z = DEQFunc.apply(x, W, U, b)
    loss = z.pow(2).sum()
    loss.backward()
    # the same gradient through 80 unrolled iterations
    W2 = W.detach().clone().requires_grad_()
    zu = torch.zeros(4, 6, dtype=torch.float64)
    for _ in range(80):
        zu = torch.tanh(zu @ W2.t() + x.detach() @ U.detach().t() + b.detach())
    zu.pow(2).sum().backward()
    # Jacobian-vector products of f at the fixed point: dual numbers, torch.func, batched grads, HVPs
    z0 = z.detach()
    v = torch.randn_like(z0)
    with fwAD.dual_level():
        dz = fwAD.make_dual(z0, v)
        out = torch.tanh(dz @ W.detach().t() + x.detach() @ U.detach().t())
        jvp = fwAD.unpack_dual(out).tangent
    fn = lambda zz: torch.tanh(zz @ W.detach().t() + x.detach() @ U.detach().t())
    _, jvp2 = func.jvp(fn, (z0,), (v,))
    _, vjp_fn = func.vjp(fn, z0)
    (vjp2,) = vjp_fn(v)
    zz = z0.clone().requires_grad_()
    o = fn(zz)
    eye = torch.eye(6, dtype=torch.float64).unsqueeze(1).expand(6, 4, 6)
    jac_rows = autograd.grad(o, zz, eye, is_grads_batched=True)[0]
    hv = autograd.functional.hvp(lambda t: fn(t).pow(2).sum(), z0, v)[1]
    vh = autograd.functional.vhp(lambda t: fn(t).pow(2).sum(), z0, v)[1]
    J = autograd.functional.jacobian(lambda t: fn(t).sum(0), z0, vectorize=True)
    return {"z": z, "grads": [x.grad, W.grad, U.grad, b.grad], "unrolled": W2.grad, "jvp": jvp, "jvp2": jvp2,
            "vjp": vjp2, "jac_rows": jac_rows, "hvp": hv, "vhp": vh, "J": J, "v": v}


def test_deq_as_a_function_with_implicit_backward():
    ours, _ = run_both(deq_function, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["grads"][1], ours["unrolled"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["jvp"], ours["jvp2"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["hvp"], ours["vhp"], rtol=1e-10, atol=1e-12)  # the Hessian is symmetric
    # row j of the batched grads is e_j's vector-Jacobian product: the VJP with v is their v-weighted sum
    vjp = np.einsum("jbk,bj->bk", ours["jac_rows"], ours["v"])
    np.testing.assert_allclose(vjp, ours["vjp"], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Implicit layers as custom Functions, optimal transport, neural implicit surfaces, NAS relaxations,
# learning to reweight, the implicit function theorem with SciPy
# ----------------------------------------------------------------------------------------------


def implicit_fn(m):
    torch = m.torch
    torch.manual_seed(0)
    class ImplicitSolve(torch.autograd.Function):
        """z* = argmin ridge: (X'X + lam I) z = X'y; backward via adjoint solve."""
        @staticmethod
        def forward(ctx, X, y, lam):
            A = X.t() @ X + lam * torch.eye(X.shape[1], dtype=X.dtype)
            z = torch.linalg.solve(A, X.t() @ y)
            ctx.save_for_backward(X, y, lam, A, z)
            return z
        @staticmethod
        def backward(ctx, gz):
            X, y, lam, A, z = ctx.saved_tensors
            v = torch.linalg.solve(A.t(), gz)
            r = y - X @ z
            gX = torch.outer(r, v) - X @ torch.outer(v, z) if ctx.needs_input_grad[0] else None
            gy = X @ v if ctx.needs_input_grad[1] else None
            glam = -(v * z).sum() if ctx.needs_input_grad[2] else None
            return gX, gy, glam
    X = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    z = ImplicitSolve.apply(X, y, lam)
    (z ** 3).sum().backward()
    g1 = (X.grad.clone(), y.grad.clone(), lam.grad.clone())
    for t in (X, y, lam):
        t.grad = None
    A = X.t() @ X + lam * torch.eye(3, dtype=torch.float64)
    z2 = torch.linalg.solve(A, X.t() @ y)
    (z2 ** 3).sum().backward()
    ok = torch.autograd.gradcheck(ImplicitSolve.apply, (X, y, lam))
    ok2 = torch.autograd.gradgradcheck(lambda X_, l_: torch.linalg.solve(X_.t() @ X_ + l_ * torch.eye(3, dtype=torch.float64), X_.t() @ y.detach()), (X, lam))
    return {"z": z, "custom": g1, "through_solve": (X.grad, y.grad, lam.grad), "ok": ok, "ok2": ok2}


def test_implicit_ridge_layer_custom_function():
    ours, _ = run_both(implicit_fn, rtol=1e-8, atol=1e-10)
    assert ours["ok"] and ours["ok2"]
    for custom, through_solve in zip(ours["custom"], ours["through_solve"]):  # the adjoint solve is the IFT's gradient
        np.testing.assert_allclose(custom, through_solve, rtol=1e-10, atol=1e-12)


def fn_ctx(m):
    torch = m.torch
    autograd = torch.autograd
    from_fn = importlib.import_module(torch.__name__ + ".autograd.function")
    once_differentiable = from_fn.once_differentiable
    class SolveWithInfo(autograd.Function):
        @staticmethod
        def forward(ctx, A, b):
            x = torch.linalg.solve(A, b)
            iters = torch.tensor(3)
            ctx.mark_non_differentiable(iters)
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(A, x)
            return x, iters
        @staticmethod
        @once_differentiable
        def backward(ctx, gx, giters):
            A, x = ctx.saved_tensors
            if gx is None:
                return None, None
            gb = torch.linalg.solve(A.transpose(-1, -2), gx)
            gA = -gb.unsqueeze(-1) * x.unsqueeze(-2) if x.dim() == A.dim() - 1 else -gb @ x.transpose(-1, -2)
            return gA, gb
    torch.manual_seed(0)
    A = (torch.randn(2, 4, 4, dtype=torch.float64) + 4 * torch.eye(4, dtype=torch.float64)).requires_grad_()
    b = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    x, it = SolveWithInfo.apply(A, b)
    (x.sin().sum()).backward()
    res = [x, it, it.requires_grad, A.grad.clone(), b.grad.clone()]
    # create_graph through once_differentiable: error when differentiating again
    A.grad = None; b.grad = None
    x, it = SolveWithInfo.apply(A, b)
    g = autograd.grad(x.sum(), A, create_graph=True)[0]
    res.append(g.requires_grad)
    try:
        g.sum().backward()
        res.append("no error")
    except RuntimeError as e:
        res.append("error")
    # post-accumulate-grad hook (optimizer-in-backward)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    seen = []
    def hook(p):
        seen.append(p.grad.clone())
        with torch.no_grad():
            p.add_(p.grad, alpha=-0.1)
        p.grad = None
    w.register_post_accumulate_grad_hook(hook)
    (w ** 2).sum().backward()
    res += [w.detach().clone(), seen, w.grad]
    return res


def test_custom_function_context_and_post_accumulate_hook():
    ours, _ = run_both(fn_ctx, rtol=1e-8, atol=1e-10)
    x, it, it_requires_grad, gA, gb = ours[:5]
    assert it == 3 and it_requires_grad is False
    assert ours[5] is False and ours[6] == "error"  # once_differentiable's gradient has no graph (its inputs had none)
    w, seen, grad_after = ours[7:]
    np.testing.assert_allclose(w, 0.8 * (seen[0] / 2), rtol=1e-14)  # w - 0.1 * 2w, from the hook's own step
    assert grad_after is None


def scipy_layer(m):
    import scipy.optimize
    torch = m.torch
    torch.manual_seed(0)
    class RootLayer(torch.autograd.Function):
        """z solves z = tanh(W z + x); forward by scipy, backward by IFT."""
        @staticmethod
        def forward(ctx, x, W):
            Wn, xn = W.detach().numpy(), x.detach().numpy()
            sol = scipy.optimize.root(lambda z: z - np.tanh(Wn @ z + xn), np.zeros_like(xn), tol=1e-14)
            z = torch.from_numpy(sol.x).to(x.dtype)
            ctx.save_for_backward(z, x, W)
            return z
        @staticmethod
        def backward(ctx, gz):
            z, x, W = ctx.saved_tensors
            s = 1 - torch.tanh(W @ z + x) ** 2
            J = torch.eye(len(z), dtype=z.dtype) - s[:, None] * W
            u = torch.linalg.solve(J.t(), gz)
            gpre = u * s
            return gpre, torch.outer(gpre, z)
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    W = (0.3 * torch.randn(5, 5, dtype=torch.float64)).requires_grad_()
    z = RootLayer.apply(x, W)
    (z ** 2).sum().backward()
    ok = torch.autograd.gradcheck(RootLayer.apply, (x, W), atol=1e-6)
    a = np.arange(3.0)
    t = torch.from_numpy(a); a[0] = 7
    return {"z": z, "x_grad": x.grad, "W_grad": W.grad, "ok": ok, "shared": t, "x": x, "W": W}


def test_scipy_root_layer_with_implicit_backward():
    pytest.importorskip("scipy")
    ours, _ = run_both(scipy_layer, rtol=1e-8, atol=1e-10)
    z, x, W = ours["z"], ours["x"], ours["W"]
    np.testing.assert_allclose(z, np.tanh(W @ z + x), atol=1e-13)
    assert ours["ok"]
    np.testing.assert_array_equal(ours["shared"], [7.0, 1.0, 2.0])  # from_numpy shares the array's memory


# ----------------------------------------------------------------------------------------------
# The DEQ repository's Broyden solver (low-rank inverse-Jacobian updates by einsum, Armijo line search)
# ----------------------------------------------------------------------------------------------


def broyden_prog(m):
    torch = m.torch
    def _safe_norm(v):
        if not torch.isfinite(v).all():
            return float('inf')
        return torch.norm(v)
    def scalar_search_armijo(phi, phi0, derphi0, c1=1e-4, alpha0=1, amin=0):
        ite = 0
        phi_a0 = phi(alpha0)
        if phi_a0 <= phi0 + c1 * alpha0 * derphi0:
            return alpha0, phi_a0, ite
        alpha1 = -(derphi0) * alpha0 ** 2 / 2.0 / (phi_a0 - phi0 - derphi0 * alpha0)
        phi_a1 = phi(alpha1)
        while alpha1 > amin:
            factor = alpha0 ** 2 * alpha1 ** 2 * (alpha1 - alpha0)
            a = alpha0 ** 2 * (phi_a1 - phi0 - derphi0 * alpha1) - alpha1 ** 2 * (phi_a0 - phi0 - derphi0 * alpha0)
            a = a / factor
            b = -alpha0 ** 3 * (phi_a1 - phi0 - derphi0 * alpha1) + alpha1 ** 3 * (phi_a0 - phi0 - derphi0 * alpha0)
            b = b / factor
            alpha2 = (-b + torch.sqrt(torch.abs(b ** 2 - 3 * a * derphi0))) / (3.0 * a)
            phi_a2 = phi(alpha2)
            ite += 1
            if (phi_a2 <= phi0 + c1 * alpha2 * derphi0):
                return alpha2, phi_a2, ite
            if (alpha1 - alpha2) > alpha1 / 2.0 or (1 - alpha2 / alpha1) < 0.96:
                alpha2 = alpha1 / 2.0
            alpha0 = alpha1; alpha1 = alpha2; phi_a0 = phi_a1; phi_a1 = phi_a2
        return None, phi_a1, ite
    def line_search(update, x0, g0, g, nstep=0, on=True):
        tmp_s = [0]; tmp_g0 = [g0]; tmp_phi = [torch.norm(g0) ** 2]; s_norm = torch.norm(x0) / torch.norm(update)
        def phi(s, store=True):
            if s == tmp_s[0]:
                return tmp_phi[0]
            x_est = x0 + s * update
            g0_new = g(x_est)
            phi_new = _safe_norm(g0_new) ** 2
            if store:
                tmp_s[0] = s; tmp_g0[0] = g0_new; tmp_phi[0] = phi_new
            return phi_new
        if on:
            s, phi1, ite = scalar_search_armijo(phi, tmp_phi[0], -tmp_phi[0], amin=1e-2)
        if (not on) or s is None:
            s = 1.0; ite = 0
        x_est = x0 + s * update
        if s == tmp_s[0]:
            g0_new = tmp_g0[0]
        else:
            g0_new = g(x_est)
        return x_est, g0_new, x_est - x0, g0_new - g0, ite
    def rmatvec(part_Us, part_VTs, x):
        if part_Us.nelement() == 0:
            return -x
        xTU = torch.einsum('bij, bijd -> bd', x, part_Us)
        return -x + torch.einsum('bd, bdij -> bij', xTU, part_VTs)
    def matvec(part_Us, part_VTs, x):
        if part_Us.nelement() == 0:
            return -x
        VTx = torch.einsum('bdij, bij -> bd', part_VTs, x)
        return -x + torch.einsum('bijd, bd -> bij', part_Us, VTx)
    def broyden(f, x0, threshold, eps=1e-3, stop_mode="rel", ls=False, name="unknown"):
        bsz, total_hsize, seq_len = x0.size()
        g = lambda y: f(y) - y
        dev = x0.device
        alternative_mode = 'rel' if stop_mode == 'abs' else 'abs'
        x_est = x0
        gx = g(x_est)
        nstep = 0
        tnstep = 0
        Us = torch.zeros(bsz, total_hsize, seq_len, threshold, dtype=x0.dtype).to(dev)
        VTs = torch.zeros(bsz, threshold, total_hsize, seq_len, dtype=x0.dtype).to(dev)
        update = -matvec(Us[:, :, :, :nstep], VTs[:, :nstep], gx)
        prot_break = False
        protect_thres = (1e6 if stop_mode == "abs" else 1e3) * seq_len
        new_objective = 1e8
        trace_dict = {'abs': [], 'rel': []}
        lowest_dict = {'abs': 1e8, 'rel': 1e8}
        lowest_step_dict = {'abs': 0, 'rel': 0}
        nstep, lowest_xest, lowest_gx = 0, x_est, gx
        while nstep < threshold:
            x_est, gx, delta_x, delta_gx, ite = line_search(update, x_est, gx, g, nstep=nstep, on=ls)
            nstep += 1
            tnstep += (ite + 1)
            abs_diff = torch.norm(gx).item()
            rel_diff = abs_diff / (torch.norm(gx + x_est).item() + 1e-9)
            diff_dict = {'abs': abs_diff, 'rel': rel_diff}
            trace_dict['abs'].append(abs_diff)
            trace_dict['rel'].append(rel_diff)
            for mode in ['rel', 'abs']:
                if diff_dict[mode] < lowest_dict[mode]:
                    if mode == stop_mode:
                        lowest_xest, lowest_gx = x_est.clone().detach(), gx.clone().detach()
                    lowest_dict[mode] = diff_dict[mode]
                    lowest_step_dict[mode] = nstep
            new_objective = diff_dict[stop_mode]
            if new_objective < eps: break
            if new_objective < 3 * eps and nstep > 30 and np.max(trace_dict[stop_mode][-30:]) / np.min(trace_dict[stop_mode][-30:]) < 1.3:
                break
            if new_objective > trace_dict[stop_mode][0] * protect_thres:
                prot_break = True
                break
            part_Us, part_VTs = Us[:, :, :, :nstep - 1], VTs[:, :nstep - 1]
            vT = rmatvec(part_Us, part_VTs, delta_x)
            u = (delta_x - matvec(part_Us, part_VTs, delta_gx)) / torch.einsum('bij, bij -> b', vT, delta_gx)[:, None, None]
            vT[vT != vT] = 0
            u[u != u] = 0
            VTs[:, nstep - 1] = vT
            Us[:, :, :, nstep - 1] = u
            update = -matvec(Us[:, :, :, :nstep], VTs[:, :nstep], gx)
        for _ in range(threshold + 1 - len(trace_dict[stop_mode])):
            trace_dict[stop_mode].append(lowest_dict[stop_mode])
            trace_dict[alternative_mode].append(lowest_dict[alternative_mode])
        return {"result": lowest_xest, "lowest": lowest_dict[stop_mode], "nstep": lowest_step_dict[stop_mode],
                "prot_break": prot_break, "abs_trace": trace_dict['abs'], "rel_trace": trace_dict['rel'],
                "eps": eps, "threshold": threshold}
    torch.manual_seed(0)
    W = 0.4 * torch.randn(6, 6, dtype=torch.float64) / 6 ** 0.5
    U = torch.randn(6, 3, dtype=torch.float64)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    f = lambda z: torch.tanh(torch.einsum('ij,bjl->bil', W, z) + torch.einsum('ij,bjl->bil', U, x))
    out = broyden(f, torch.zeros(2, 6, 4, dtype=torch.float64), 30, eps=1e-10)
    out2 = broyden(f, torch.zeros(2, 6, 4, dtype=torch.float64), 30, eps=1e-10, ls=True)
    z = torch.zeros(2, 6, 4, dtype=torch.float64)
    for _ in range(200):
        z = f(z)
    return {"result": out["result"], "nstep": out["nstep"], "trace": out["rel_trace"][:8], "ls_result": out2["result"],
            "ls_nstep": out2["nstep"], "residual": (f(out["result"]) - out["result"]).abs().max(), "iterated": z}


def test_deq_broyden_solver_with_armijo_line_search():
    ours, _ = run_both(broyden_prog, rtol=1e-6, atol=1e-9)
    assert ours["residual"] < 1e-9 and ours["nstep"] < 30
    np.testing.assert_allclose(ours["result"], ours["iterated"], atol=1e-9)
    np.testing.assert_allclose(ours["ls_result"], ours["iterated"], atol=1e-9)
