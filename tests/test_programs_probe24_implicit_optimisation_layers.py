# ruff: noqa: B007, E501, E702, F841  (the programs are kept as their authors wrote them)
"""Implicit and bilevel differentiation programs (see tests/pytorch_programs.py) as PyTorch users write them, each
run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants. Layers
that solve or generate: OptNet-style layers (projected-gradient QP, a KKT system by ``linalg.solve``,
``lu_factor``/``lu_solve``, ``cholesky_solve``, a log-barrier Newton method, a custom sparsemax); Sinkhorn's entropic
transport with a gradient penalty; hypernetworks (``F.conv2d``/``F.linear``/``bmm`` with generated weights, a grouped
convolution with per-example kernels, a hypernetwork as a ``parametrize`` parametrization)."""

import importlib

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Hypernetworks: generated convolution kernels, per-example heads, a parametrization
# ----------------------------------------------------------------------------------------------


def hypernet(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class HyperNet(nn.Module):
        def __init__(self, z_dim=8, in_c=3, out_c=4, k=3):
            super().__init__()
            self.in_c, self.out_c, self.k = in_c, out_c, k
            self.w1 = nn.Parameter(torch.fmod(torch.randn(z_dim, out_c * k * k), 2))
            self.b1 = nn.Parameter(torch.fmod(torch.randn(out_c * k * k), 2))
            self.w2 = nn.Parameter(torch.fmod(torch.randn(z_dim, in_c * z_dim), 2))
            self.b2 = nn.Parameter(torch.fmod(torch.randn(in_c * z_dim), 2))
            self.z_dim = z_dim

        def forward(self, z):
            h_in = torch.matmul(z, self.w2) + self.b2
            h_in = h_in.view(self.in_c, self.z_dim)
            h_final = torch.matmul(h_in, self.w1) + self.b1
            kernel = h_final.view(self.out_c, self.in_c, self.k, self.k)
            return kernel

    class Target(nn.Module):
        def __init__(self):
            super().__init__()
            self.hyper = HyperNet()
            self.z = nn.Parameter(torch.randn(8))
            self.emb = nn.Embedding(5, 6)
            self.head_gen = nn.Linear(6, 4 * 3 + 3)

        def forward(self, x, task):
            w = self.hyper(self.z)
            h = F.relu(F.conv2d(x, w, padding=1, stride=1))
            h = F.adaptive_avg_pool2d(h, 1).flatten(1)
            p = self.head_gen(self.emb(task))  # a head per example
            W = p[:, :12].view(-1, 3, 4); bias = p[:, 12:]
            out = torch.bmm(W, h.unsqueeze(-1)).squeeze(-1) + bias
            # per-example kernels by one grouped convolution
            B = x.shape[0]
            pw = torch.tanh(p[:, :9]).view(B, 1, 1, 3, 3).expand(B, 3, 1, 3, 3).reshape(B * 3, 1, 3, 3)
            y2 = F.conv2d(x.view(1, B * 3, *x.shape[2:]), pw, padding=1, groups=B * 3).view(B, 3, *x.shape[2:])
            self.per_example = (x, pw, y2)
            out = out + y2.mean((2, 3))
            Wl = self.hyper(self.z * 0.5).flatten(1)[:, :5]
            out2 = F.linear(h, Wl.t(), None)
            return out, out2

    model = Target().double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    t = torch.tensor([0, 3, 4])
    y = torch.tensor([1, 0, 2])
    hist = []
    for s in range(3):
        opt.zero_grad()
        out, out2 = model(x, t)
        loss = F.cross_entropy(out, y) + out2.pow(2).mean()
        loss.backward()
        opt.step()
        hist.append(loss.item())
    x, pw, y2 = model.per_example
    looped = torch.stack([F.conv2d(x[i:i + 1], pw[3 * i:3 * i + 3], padding=1, groups=3)[0] for i in range(3)])
    return {"hist": hist, "grads": [p.grad for p in model.parameters()], "grouped": y2, "looped": looped}


def test_hypernetwork_generated_weights():
    ours, _ = run_both(hypernet, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(ours["grouped"], ours["looped"], rtol=1e-12, atol=1e-12)
    assert ours["hist"][2] < ours["hist"][0]


def parametrize_hyper(m):
    torch, nn, F = m.torch, m.nn, m.F
    P = importlib.import_module(nn.__name__ + ".utils.parametrize")
    torch.manual_seed(0)

    class HyperWeight(nn.Module):
        def __init__(self, shape, zdim=4):
            super().__init__()
            self.z = nn.Parameter(torch.randn(zdim))
            self.gen = nn.Linear(zdim, int(np.prod(shape)))
            self.shape = shape

        def forward(self, W):
            return W + 0.1 * self.gen(self.z).view(self.shape)

    class Sym(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)

    lin = nn.Linear(5, 5).double()
    P.register_parametrization(lin, "weight", HyperWeight((5, 5)).double())
    P.register_parametrization(lin, "weight", Sym())
    x = torch.randn(3, 5, dtype=torch.float64)
    y = lin(x)
    y.pow(2).sum().backward()
    names = sorted(n for n, _ in lin.named_parameters())
    grads = [p.grad for _, p in sorted(lin.named_parameters())]
    with P.cached():
        y2 = lin(x) + lin(x)
    sd = sorted(lin.state_dict().keys())
    w = lin.weight
    P.remove_parametrizations(lin, "weight", leave_parametrized=True)
    return {"y": y, "names": names, "sd": sd, "y2": y2, "w": w, "w_after": lin.weight, "grads": grads,
            "still": P.is_parametrized(lin)}


def test_hypernetwork_as_a_parametrization():
    ours, _ = run_both(parametrize_hyper, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours["w"], ours["w"].T)
    np.testing.assert_array_equal(ours["w"], ours["w_after"])
    np.testing.assert_allclose(ours["y2"], 2 * ours["y"], rtol=1e-14)
    assert ours["names"] == ["bias", "parametrizations.weight.0.gen.bias", "parametrizations.weight.0.gen.weight",
                             "parametrizations.weight.0.z", "parametrizations.weight.original"]
    assert not ours["still"]


# ----------------------------------------------------------------------------------------------
# OptNet-style layers: a QP by projected gradient, a KKT system, Cholesky and LU, a barrier method
# ----------------------------------------------------------------------------------------------


def optnet(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    dt = torch.float64

    class QPLayer(nn.Module):
        """min 1/2 z'Qz + p'z  s.t. z >= 0, by projected gradient; Q = LL' + 0.1 I."""
        def __init__(self, n, steps=300):
            super().__init__()
            self.L = nn.Parameter(torch.tril(torch.rand(n, n, dtype=dt)))
            self.steps = steps

        def forward(self, p):
            Q = self.L.mm(self.L.t()) + 0.1 * torch.eye(self.L.size(0), dtype=dt)
            step = 1.0 / torch.linalg.matrix_norm(Q, ord=2)
            z = torch.zeros_like(p)
            for _ in range(self.steps):
                z = torch.clamp(z - step * (z @ Q + p), min=0)
            self.Q = Q
            return z

    class EqQP(nn.Module):
        """min 1/2 z'Qz + p'z  s.t. Az = b: the KKT system."""
        def __init__(self, n, neq):
            super().__init__()
            self.M = nn.Parameter(torch.randn(n, n, dtype=dt) * 0.3)
            self.A = nn.Parameter(torch.randn(neq, n, dtype=dt))
            self.b = nn.Parameter(torch.randn(neq, dtype=dt))

        def forward(self, p):
            n = self.M.shape[0]; neq = self.A.shape[0]
            Q = self.M @ self.M.T + torch.eye(n, dtype=dt)
            K = torch.cat([torch.cat([Q, self.A.t()], 1),
                           torch.cat([self.A, torch.zeros(neq, neq, dtype=dt)], 1)], 0)
            rhs = torch.cat([-p, self.b.unsqueeze(0).expand(p.size(0), neq)], 1)
            sol = torch.linalg.solve(K.unsqueeze(0).expand(p.size(0), -1, -1), rhs.unsqueeze(-1)).squeeze(-1)
            z, nu = sol[:, :n], sol[:, n:]
            Lc = torch.linalg.cholesky(Q)
            z_unc = torch.cholesky_solve(-p.t(), Lc).t()
            LU, piv = torch.linalg.lu_factor(K)
            sol2 = torch.linalg.lu_solve(LU, piv, rhs.t()).t()
            self.Qe = Q
            return z, nu, z_unc, sol2

    n = 5
    qp = QPLayer(n)
    eq = EqQP(n, 2)
    p = torch.randn(3, n, dtype=dt, requires_grad=True)
    z = qp(p)
    z2, nu, zu, s2 = eq(p)
    loss = z.pow(2).sum() + (z2 * torch.arange(n, dtype=dt)).sum() + nu.sum() + zu.sin().sum() + s2.cos().sum()
    loss.backward()
    return {"z": z, "z2": z2, "nu": nu, "zu": zu, "s2": s2, "grads": [p.grad, qp.L.grad, eq.M.grad, eq.A.grad, eq.b.grad],
            "Q": qp.Q, "Qe": eq.Qe, "p": p, "A": eq.A, "b": eq.b}


def test_optnet_qp_and_kkt_layers():
    ours, _ = run_both(optnet, rtol=1e-8, atol=1e-10)
    z, Q, p = ours["z"], ours["Q"], ours["p"]
    # the QP's KKT conditions: z >= 0, the gradient Qz + p >= 0 and zero wherever z > 0
    grad = z @ Q + p
    assert (z >= 0).all() and (grad > -1e-8).all() and np.abs(grad * z).max() < 1e-8
    Qe, A, b = ours["Qe"], ours["A"], ours["b"]
    np.testing.assert_allclose(ours["z2"] @ A.T, np.broadcast_to(b, (3, 2)), atol=1e-12)
    np.testing.assert_allclose(ours["z2"] @ Qe + p + ours["nu"] @ A, 0, atol=1e-12)
    np.testing.assert_allclose(ours["zu"], np.linalg.solve(Qe, -p.T).T, rtol=1e-12)
    np.testing.assert_allclose(ours["s2"], np.concatenate([ours["z2"], ours["nu"]], 1), rtol=1e-10, atol=1e-12)


def barrier_qp(m):
    torch = m.torch
    torch.manual_seed(0)
    n = 4
    Q = torch.eye(n, dtype=torch.float64) * 2
    q = torch.randn(n, dtype=torch.float64, requires_grad=True)
    G = torch.randn(6, n, dtype=torch.float64)
    h = torch.ones(6, dtype=torch.float64, requires_grad=True)
    z = torch.zeros(n, dtype=torch.float64)
    t = 1.0
    for outer in range(4):
        for _ in range(8):
            s = h - G @ z
            grad = t * (Q @ z + q) + G.t() @ (1 / s)
            H = t * Q + G.t() @ torch.diag(1 / s ** 2) @ G
            dz = torch.linalg.solve(H, grad)
            z = z - 0.5 * dz
        t *= 4
    loss = (z ** 2).sum()
    loss.backward()
    L = torch.linalg.cholesky(H.detach())
    tri = torch.linalg.solve_triangular(L, torch.eye(n, dtype=torch.float64), upper=False)
    Ainv, info = torch.linalg.inv_ex(H.detach())
    ev, V = torch.linalg.eigh(H.detach())
    return {"z": z, "q_grad": q.grad, "h_grad": h.grad, "tri": tri, "Ainv": Ainv, "info": info, "ev": ev,
            "H": H, "L": L, "recon": V @ torch.diag(ev) @ V.t()}  # (V's signs are LAPACK's: MKL's and OpenBLAS's differ)


def test_log_barrier_newton_unrolled():
    ours, _ = run_both(barrier_qp, rtol=1e-7, atol=1e-9)
    H = ours["H"]
    np.testing.assert_allclose(ours["Ainv"], np.linalg.inv(H), rtol=1e-10)
    np.testing.assert_allclose(ours["recon"], H, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours["tri"] @ ours["L"], np.eye(4), atol=1e-12)
    assert ours["info"] == 0


def sparsemax_prog(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class SparsemaxFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input = input - max_val
            tau, supp_size = SparsemaxFunction._threshold_and_support(input, dim=dim)
            output = torch.clamp(input - tau, min=0)
            ctx.save_for_backward(supp_size, output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            supp_size, output = ctx.saved_tensors
            dim = ctx.dim
            grad_input = grad_output.clone()
            grad_input[output == 0] = 0
            v_hat = grad_input.sum(dim=dim) / supp_size.to(output.dtype).squeeze()
            v_hat = v_hat.unsqueeze(dim)
            grad_input = torch.where(output != 0, grad_input - v_hat, grad_input)
            return grad_input, None

        @staticmethod
        def _threshold_and_support(input, dim=-1):
            input_srt, _ = torch.sort(input, descending=True, dim=dim)
            input_cumsum = input_srt.cumsum(dim) - 1
            d = input.size(dim)
            rhos = torch.arange(1, d + 1, device=input.device, dtype=input.dtype)
            view = [1] * input.dim(); view[0] = -1
            rhos = rhos.view(view).transpose(0, dim)
            support = rhos * input_srt > input_cumsum
            support_size = support.sum(dim=dim).unsqueeze(dim)
            tau = input_cumsum.gather(dim, support_size - 1)
            tau /= support_size.to(input.dtype)
            return tau, support_size

    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    y = SparsemaxFunction.apply(x, -1)
    w = torch.randn(4, 7, dtype=torch.float64)
    (y * w).sum().backward()
    ok = torch.autograd.gradcheck(lambda t: SparsemaxFunction.apply(t, 1), (x.detach().clone().requires_grad_(),))
    return {"y": y, "grad": x.grad, "ok": ok, "x": x, "w": w}


def test_sparsemax_custom_function():
    ours, _ = run_both(sparsemax_prog, rtol=1e-10, atol=1e-12)
    y, x, w = ours["y"], ours["x"], ours["w"]
    assert ours["ok"] and (y >= 0).all() and (y == 0).any()
    np.testing.assert_allclose(y.sum(1), 1, rtol=1e-12)
    # sparsemax(x) = max(x - τ, 0) with τ from the sorted prefix sums (Martins & Astudillo), by NumPy
    for row, out, wr, g in zip(x, y, w, ours["grad"]):
        srt = np.sort(row)[::-1]
        k = np.arange(1, 8)
        support = k * srt > np.cumsum(srt) - 1
        kz = k[support][-1]
        tau = (np.cumsum(srt)[kz - 1] - 1) / kz
        np.testing.assert_allclose(out, np.maximum(row - tau, 0), atol=1e-12)
        s = out > 0
        np.testing.assert_allclose(g, np.where(s, wr - wr[s].mean(), 0), atol=1e-12)


def sinkhorn(m):
    torch = m.torch
    torch.manual_seed(0)
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64)
    a = torch.full((6,), 1 / 6, dtype=torch.float64); b = torch.full((5,), 1 / 5, dtype=torch.float64)

    def transport(x, eps=0.1, iters=50):
        C = ((x[:, None] - y[None]) ** 2).sum(-1)
        f = torch.zeros(6, dtype=torch.float64); g = torch.zeros(5, dtype=torch.float64)
        for _ in range(iters):
            f = -eps * torch.logsumexp((g[None, :] - C) / eps + b.log()[None, :], dim=1)
            g = -eps * torch.logsumexp((f[:, None] - C) / eps + a.log()[:, None], dim=0)
        Pm = torch.exp((f[:, None] + g[None, :] - C) / eps) * a[:, None] * b[None, :]
        return (Pm * C).sum(), Pm

    cost, Pm = transport(x)
    gx = torch.autograd.grad(cost, x, create_graph=True)[0]
    gg = torch.autograd.grad(gx.pow(2).sum(), x)[0]
    with torch.no_grad():
        e = torch.zeros(6, 2, dtype=torch.float64); e[2, 1] = 1e-6
        fd = (transport(x + e)[0] - transport(x - e)[0]) / 2e-6
    return {"cost": cost, "marginal": Pm.sum(0), "gx": gx, "gg": gg, "P": Pm, "fd": fd}


def test_sinkhorn_transport_with_gradient_penalty():
    ours, _ = run_both(sinkhorn, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["marginal"], np.full(5, 0.2), rtol=1e-12)  # the last half-step fits b exactly
    np.testing.assert_allclose(ours["P"].sum(1), np.full(6, 1 / 6), atol=5e-3)
    np.testing.assert_allclose(ours["gx"][2, 1], ours["fd"], rtol=1e-6)  # the unrolled iterations' gradient
