# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Energy-based models and gradient-based samplers (see tests/pytorch_programs.py), as their authors write them in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
Denoising and sliced score matching (second derivatives by ``create_graph=True``, Hutchinson's trace with Rademacher
probes, the exact trace by a loop of gradients); Stein variational gradient descent (RBF kernel by ``cdist``, the
median heuristic, the kernel's gradient by autograd and by hand) and the kernel Stein discrepancy."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Score matching: denoising (Vincent), sliced (Song et al.) with Rademacher probes, exact trace
# ----------------------------------------------------------------------------------------------


def score_matching(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(0)
    score = nn.Sequential(nn.Linear(2, 32), nn.Softplus(), nn.Linear(32, 32), nn.Softplus(), nn.Linear(32, 2))
    opt = optim.SGD(score.parameters(), lr=0.01, momentum=0.9)
    data = torch.randn(64, 2) @ torch.tensor([[1.0, 0.0], [0.5, 0.5]])

    def dsm_loss(x, sigma=0.1):
        noise = torch.randn_like(x)
        x_tilde = x + sigma * noise
        target = -noise / sigma
        return 0.5 * ((score(x_tilde) - target) ** 2).sum(dim=-1).mean()

    def ssm_loss(x, n_particles=2):
        dup = x.unsqueeze(0).expand(n_particles, *x.shape).contiguous().view(-1, *x.shape[1:])
        dup.requires_grad_(True)
        vectors = torch.randint(0, 2, dup.shape).float() * 2 - 1  # Rademacher
        s = score(dup)
        gradv = torch.sum(s * vectors)
        loss1 = torch.sum(s * vectors, dim=-1) ** 2 * 0.5
        grad2 = torch.autograd.grad(gradv, dup, create_graph=True)[0]
        loss2 = torch.sum(vectors * grad2, dim=-1)
        return (loss1 + loss2).view(n_particles, -1).mean(dim=0).mean()

    def exact_sm_loss(x):
        x = x.requires_grad_(True)
        s = score(x)
        trace = torch.zeros(x.shape[0])
        for i in range(x.shape[1]):
            trace = trace + torch.autograd.grad(s[:, i].sum(), x, create_graph=True)[0][:, i]
        return (0.5 * s.pow(2).sum(-1) + trace).mean()

    hist = []
    for step in range(3):
        for loss_fn in (dsm_loss, ssm_loss, exact_sm_loss):
            opt.zero_grad()
            loss = loss_fn(data.clone())
            loss.backward()
            opt.step()
            hist.append(loss.detach())
    grads = [p.grad.clone() for p in score.parameters()]
    return dict(hist=torch.stack(hist), grads=grads, w=score[2].weight)


def test_score_matching():
    ours, _ = run_both(score_matching, rtol=1e-4, atol=1e-5)
    assert np.isfinite(ours["hist"]).all()


def hutchinson_vs_exact(m):
    torch = m.torch
    torch.manual_seed(4)
    W = torch.randn(3, 3, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    s = torch.tanh(x @ W)  # a score field; its Jacobian is diag(1 - s^2) W^T per row
    exact = torch.stack([torch.autograd.grad(s[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(3)], 1)
    exact = exact.sum(1)
    est = torch.zeros(5, dtype=torch.float64)
    n = 2000
    v = torch.randint(0, 2, (n, 5, 3), dtype=torch.float64) * 2 - 1
    for k in range(n // 500):
        vk = v[k * 500:(k + 1) * 500]
        xs = x.detach().unsqueeze(0).repeat(500, 1, 1).requires_grad_()
        ss = torch.tanh(xs @ W)
        (jv,) = torch.autograd.grad((ss * vk).sum(), xs)
        est = est + (jv * vk).sum(-1).sum(0)
    est = est / n
    gx, = torch.autograd.grad(exact.sum(), x)
    return dict(exact=exact, est=est, gx=gx, s=s, W=W)


def test_hutchinson_vs_exact():
    ours, _ = run_both(hutchinson_vs_exact, rtol=1e-10, atol=1e-12)
    W, s = ours["W"], ours["s"]
    # d s_i / d x_i = (1 - s_i^2) W_ii
    np.testing.assert_allclose(ours["exact"], ((1 - s ** 2) * np.diag(W)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(ours["est"], ours["exact"], atol=0.15)


# ----------------------------------------------------------------------------------------------
# Stein variational gradient descent (Liu & Wang): RBF kernel by cdist, the median heuristic
# ----------------------------------------------------------------------------------------------


def svgd(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(4)
    target = D.MixtureSameFamily(D.Categorical(torch.tensor([0.3, 0.7])),
                                 D.Normal(torch.tensor([-2.0, 2.0]), torch.tensor([1.0, 1.0])))

    class RBF:
        def __call__(self, X, Y):
            XY = torch.cdist(X, Y) ** 2
            h = torch.median(XY.detach()) / (2 * math.log(X.size(0) + 1))
            self.h = h
            return torch.exp(-0.5 * XY / h)

    K_fn = RBF()
    X = (torch.randn(16, 1) * 0.5).double()
    opt = m.optim.Adagrad([X], lr=0.5)
    for it in range(6):
        Xd = X.detach().requires_grad_(True)
        log_prob = target.log_prob(Xd.squeeze(-1).float()).sum()
        score_func = torch.autograd.grad(log_prob, Xd)[0]
        K_XX = K_fn(Xd, Xd.detach())
        grad_K = -torch.autograd.grad(K_XX.sum(), Xd)[0]
        phi = (K_XX.detach().matmul(score_func) + grad_K) / Xd.size(0)
        by_hand = (Xd.detach() * K_XX.sum(1, keepdim=True) - K_XX.matmul(Xd.detach())).detach() / K_fn.h
        opt.zero_grad()
        X.grad = -phi
        opt.step()
    return dict(X=X, phi=phi, grad_K=grad_K, by_hand=by_hand, h=K_fn.h,
                dtypes=[score_func.dtype == torch.float64, X.dtype == torch.float64])


def test_svgd():
    ours, _ = run_both(svgd, rtol=1e-6, atol=1e-8)
    assert ours["dtypes"] == [True, True]
    # the repulsive term -d/dx_i sum_j k(x_i, x_j) is the closed form sum_j k(x_i, x_j)(x_i - x_j)/h
    np.testing.assert_allclose(ours["grad_K"], ours["by_hand"], rtol=1e-10, atol=1e-12)


def kernel_stein_discrepancy(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(1)
    X = torch.randn(6, 2, dtype=torch.float64)
    X[2] = X[0]  # a repeated particle: cdist's gradient at distance 0
    target = D.MultivariateNormal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    Xg = X.clone().requires_grad_()
    s = torch.autograd.grad(target.log_prob(Xg).sum(), Xg)[0]
    x, y = X.clone().requires_grad_(), X.clone().requires_grad_()
    K = (1.0 + torch.cdist(x, y) ** 2) ** -0.5  # inverse multiquadric
    dKx = torch.autograd.grad(K.sum(), x, create_graph=True)[0]
    try:  # cdist's backward has no derivative of its own, in PyTorch as here
        torch.autograd.grad(dKx.sum(), y)
        mixed = "differentiable"
    except NotImplementedError as e:
        mixed = str(e)
    diff = x[:, None, :] - y[None, :, :]
    r2 = (diff ** 2).sum(-1)
    Kb = (1.0 + r2) ** -0.5
    gradx = -(1.0 + r2)[..., None] ** -1.5 * diff
    trace = 0
    for i in range(2):
        trace = trace + torch.autograd.grad(gradx[..., i].sum(), y, retain_graph=True, create_graph=True)[0][:, i]
    u = Kb * (s @ s.T) - (s[:, None, :] * gradx).sum(-1) + (s[None, :, :] * gradx).sum(-1)
    u = u - torch.diag(torch.diag(u))
    ksd = u.sum() / (6 * 5)
    (gx,) = torch.autograd.grad(ksd, x)
    return dict(K=K, Kb=Kb, dKx=dKx, mixed=mixed, trace=trace, ksd=ksd, gx=gx, s=s, X=X)


def test_kernel_stein_discrepancy():
    ours, _ = run_both(kernel_stein_discrepancy, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["K"], ours["Kb"], rtol=1e-12)
    assert ours["mixed"] == "the derivative for '_cdist_backward' is not implemented."
    np.testing.assert_allclose(ours["s"], -ours["X"], rtol=1e-12)
    X = ours["X"]
    r2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    # sum_i d2k/dx_i dy_i = sum_j [2/(1+r2)^1.5 - 3 r2/(1+r2)^2.5] over the particles x_j
    np.testing.assert_allclose(ours["trace"], (2 / (1 + r2) ** 1.5 - 3 * r2 / (1 + r2) ** 2.5).sum(0), rtol=1e-10)
