# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Meta-learning and higher-order programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights, comparing losses, parameters and gradients (float64 where the program allows, to about 1e-10). A
deep equilibrium layer with the implicit-layers tutorial's backward hook (Anderson acceleration through ``bmm`` and
``torch.linalg.solve``, a hook on the output that solves the adjoint fixed point with ``autograd.grad``), its
implicit gradient equal to the unrolled one; a hyperparameter's gradient by the implicit function theorem (conjugate
gradient on Hessian-vector products)."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A deep equilibrium layer (the implicit-layers tutorial): Anderson acceleration and a backward hook
# ----------------------------------------------------------------------------------------------


def anderson(m, f, x0, m_=5, lam=1e-4, max_iter=50, tol=1e-10, beta=1.0):
    """ Anderson acceleration for fixed point iteration. """
    torch = m.torch
    bsz, d, H = x0.shape
    X = torch.zeros(bsz, m_, d * H, dtype=x0.dtype, device=x0.device)
    F = torch.zeros(bsz, m_, d * H, dtype=x0.dtype, device=x0.device)
    X[:, 0], F[:, 0] = x0.view(bsz, -1), f(x0).view(bsz, -1)
    X[:, 1], F[:, 1] = F[:, 0], f(F[:, 0].view_as(x0)).view(bsz, -1)

    Hm = torch.zeros(bsz, m_ + 1, m_ + 1, dtype=x0.dtype, device=x0.device)
    Hm[:, 0, 1:] = Hm[:, 1:, 0] = 1
    y = torch.zeros(bsz, m_ + 1, 1, dtype=x0.dtype, device=x0.device)
    y[:, 0] = 1

    res = []
    for k in range(2, max_iter):
        n = min(k, m_)
        G = F[:, :n] - X[:, :n]
        Hm[:, 1:n + 1, 1:n + 1] = torch.bmm(G, G.transpose(1, 2)) + lam * torch.eye(n, dtype=x0.dtype,
                                                                                      device=x0.device)[None]
        alpha = torch.linalg.solve(Hm[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]  # (bsz x n)

        X[:, k % m_] = beta * (alpha[:, None] @ F[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
        F[:, k % m_] = f(X[:, k % m_].view_as(x0)).view(bsz, -1)
        res.append((F[:, k % m_] - X[:, k % m_]).norm().item() / (1e-5 + F[:, k % m_].norm().item()))
        if (res[-1] < tol):
            break
    return X[:, k % m_].view_as(x0), res


def make_deq(m):
    torch, nn = m.torch, m.nn

    class TanhFixedPointLayer(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.linear = nn.Linear(n, n, bias=False)

        def forward(self, z, x):
            return torch.tanh(self.linear(z) + x)

    class DEQFixedPoint(nn.Module):
        def __init__(self, f, solver, **kwargs):
            super().__init__()
            self.f = f
            self.solver = solver
            self.kwargs = kwargs

        def forward(self, x):
            # compute forward pass and re-engage autograd tape
            with torch.no_grad():
                z, self.forward_res = self.solver(lambda z: self.f(z, x), torch.zeros_like(x), **self.kwargs)
            z = self.f(z, x)

            # set up Jacobian vector product (without additional forward calls)
            z0 = z.clone().detach().requires_grad_()
            f0 = self.f(z0, x)

            def backward_hook(grad):
                g, self.backward_res = self.solver(
                    lambda y: torch.autograd.grad(f0, z0, y, retain_graph=True)[0] + grad, grad, **self.kwargs)
                return g

            z.register_hook(backward_hook)
            return z

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(3, 10)
            self.deq = DEQFixedPoint(TanhFixedPointLayer(10), None)
            self.out = nn.Linear(10, 2)

        def forward(self, x):
            return self.out(self.deq(self.inp(x).unsqueeze(-1).transpose(1, 2)).transpose(1, 2).squeeze(-1))

    return Net()


def deq(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_deq(m), weights).double()
    with torch.no_grad():
        model.deq.f.linear.weight.mul_(0.5)  # a contraction, so the fixed point exists
    solver = lambda f, x0, **kw: anderson(m, f, x0, **kw)
    model.deq.solver = solver
    model.deq.kwargs = dict(tol=1e-12, max_iter=60)
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((4, 3)))
    y = torch.tensor(rng.integers(0, 2, 4))
    opt = optim.SGD(model.parameters(), lr=0.1)
    history = []
    for step in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        history.append((loss.item(), len(model.deq.forward_res), len(model.deq.backward_res)))
    return {"history": history, "grads": [p.grad for p in model.parameters()]}


def test_deq_with_anderson_and_implicit_backward():
    weights = weights_of(make_deq)
    ours, _ = run_both(deq, weights, rtol=1e-8, atol=1e-10)
    assert all(h[1] < 58 and h[2] < 58 for h in ours["history"])  # both solves converged


def test_deq_implicit_gradient_equals_unrolled_gradient():
    """The hook's implicit gradient equals the gradient through a long unrolled fixed-point iteration."""
    torch = OURS.torch
    weights = weights_of(make_deq)
    implicit = load(OURS, make_deq(OURS), weights).double()
    with torch.no_grad():
        implicit.deq.f.linear.weight.mul_(0.5)
    implicit.deq.solver = lambda f, x0, **kw: anderson(OURS, f, x0, **kw)
    implicit.deq.kwargs = dict(tol=1e-13, max_iter=80)
    x = torch.tensor(np.random.default_rng(3).standard_normal((4, 3)))
    implicit(x).square().sum().backward()
    W = implicit.deq.f.linear.weight
    unrolled_W = W.detach().clone().requires_grad_()
    h = implicit.inp(x).detach().unsqueeze(-1).transpose(1, 2)
    z = torch.zeros_like(h)
    for _ in range(200):
        z = torch.tanh(z @ unrolled_W.T + h)
    implicit.out(z.transpose(1, 2).squeeze(-1)).square().sum().backward()
    np.testing.assert_allclose(W.grad.numpy(), unrolled_W.grad.numpy(), rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# A hyperparameter's gradient by the implicit function theorem (ridge regression's weight decay)
# ----------------------------------------------------------------------------------------------


def implicit_hypergradient(m):
    torch = m.torch
    rng = np.random.default_rng(4)
    Xtr, ytr = torch.tensor(rng.standard_normal((20, 5))), torch.tensor(rng.standard_normal(20))
    Xval, yval = torch.tensor(rng.standard_normal((10, 5))), torch.tensor(rng.standard_normal(10))
    log_lam = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def train_loss(w, log_lam):
        return ((Xtr @ w - ytr) ** 2).mean() + torch.exp(log_lam) * (w ** 2).sum()

    def val_loss(w):
        return ((Xval @ w - yval) ** 2).mean()

    # inner problem by gradient descent to convergence
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    inner = m.optim.SGD([w], lr=0.05)
    for _ in range(400):
        inner.zero_grad()
        train_loss(w, log_lam.detach()).backward()
        inner.step()

    w = w.detach().requires_grad_()
    v = torch.autograd.grad(val_loss(w), w)[0]
    g = torch.autograd.grad(train_loss(w, log_lam), w, create_graph=True)[0]

    def hvp(vec):
        return torch.autograd.grad(g, w, grad_outputs=vec, retain_graph=True)[0]

    # conjugate gradient for H q = v
    q = torch.zeros_like(v)
    r = v.clone()
    p = r.clone()
    rs = r.dot(r)
    for _ in range(20):
        Ap = hvp(p)
        alpha = rs / p.dot(Ap)
        q = q + alpha * p
        r = r - alpha * Ap
        rs_new = r.dot(r)
        if rs_new.sqrt() < 1e-14:
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    hypergrad = -torch.autograd.grad(g, log_lam, grad_outputs=q)[0]
    return {"w": w.detach(), "hypergrad": hypergrad, "q": q}


def test_hypergradient_by_implicit_differentiation():
    ours, _ = run_both(implicit_hypergradient, rtol=1e-8, atol=1e-11)
    rng = np.random.default_rng(4)
    Xtr, ytr = rng.standard_normal((20, 5)), rng.standard_normal(20)
    Xval, yval = rng.standard_normal((10, 5)), rng.standard_normal(10)
    lam = np.exp(0.3)
    A = 2 * Xtr.T @ Xtr / 20 + 2 * lam * np.eye(5)
    w = np.linalg.solve(A, 2 * Xtr.T @ ytr / 20)
    dw = np.linalg.solve(A, -2 * lam * w)  # dw / dlog_lam
    expected = (2 * Xval.T @ (Xval @ w - yval) / 10) @ dw
    np.testing.assert_allclose(ours["w"], w, rtol=1e-9)
    assert ours["hypergrad"] == pytest.approx(expected, rel=1e-7)
