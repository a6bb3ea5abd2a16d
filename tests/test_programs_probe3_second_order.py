# ruff: noqa: B007, B023, E741, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py): second-order programs through the
piecewise-linear activations. A WGAN-GP critic with LeakyReLU (the gradient penalty through
``autograd.grad(create_graph=True)``), Hessian-vector products through Hardtanh (by double backward
and by ``autograd.functional.hvp``), and ``torch.func`` per-example gradients (DP-SGD style clipping)
and ``jacrev``/``hessian`` through ReLU6 and ELU."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of


def critic(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 16), nn.LeakyReLU(0.2),
                         nn.Linear(16, 1))


def generator(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))


def wgan_gp(m, wd, wg, steps=6):
    torch, nn, optim = m.torch, m.nn, m.optim
    D = load(m, critic(m), wd)
    G = load(m, generator(m), wg)
    optD = optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.9))
    optG = optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.9))
    rng = np.random.default_rng(0)
    real_all = torch.tensor(rng.standard_normal((steps, 16, 2)).astype(np.float32) * 0.3 + 2.0)
    z_all = torch.tensor(rng.standard_normal((steps, 16, 2)).astype(np.float32))
    alpha_all = torch.tensor(rng.uniform(size=(steps, 16, 1)).astype(np.float32))
    lambda_gp = 10.0
    d_losses, gps, g_losses = [], [], []
    for step in range(steps):
        real, z, alpha = real_all[step], z_all[step], alpha_all[step]
        fake = G(z)
        interpolates = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
        d_interpolates = D(interpolates)
        gradients = torch.autograd.grad(outputs=d_interpolates, inputs=interpolates,
                                        grad_outputs=torch.ones_like(d_interpolates),
                                        create_graph=True, retain_graph=True, only_inputs=True)[0]
        gradient_penalty = ((gradients.norm(2, dim=1) - 1) ** 2).mean()
        d_loss = -D(real).mean() + D(fake.detach()).mean() + lambda_gp * gradient_penalty
        optD.zero_grad()
        d_loss.backward()
        optD.step()
        d_losses.append(d_loss.item())
        gps.append(gradient_penalty.item())
        g_loss = -D(G(z)).mean()
        optG.zero_grad()
        g_loss.backward()
        optG.step()
        g_losses.append(g_loss.item())
    return d_losses, gps, g_losses, D[0].weight.grad, [p.detach() for p in G.parameters()]


def test_wgan_gp_with_a_leaky_relu_critic():
    wd, wg = weights_of(critic), weights_of(generator, seed=1)
    (d, gp, g, gw, gparams), _ = run_both(wgan_gp, wd, wg, rtol=1e-4, atol=1e-5)
    assert all(np.isfinite(d)) and all(v >= 0 for v in gp)
    # (the penalty over a few steps from PyTorch's initial weights for seeds 0 and 1 is not a trend, 0.90 -> 0.93
    # in both libraries: that it is computed and differentiated alike is run_both's comparison above)
    assert all(v < 10 for v in gp)
    assert gw.shape == (16, 2) and np.abs(gw).sum() > 0


def penalty_gradient_reaches_first_layer(m):
    """The penalty alone: its gradient comes only through the weights' appearance in the input
    gradient (LeakyReLU's second derivative is zero), so it must still be non-zero and exact."""
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(2, 3), nn.Linear(3, 1)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.5], [-1.0, 1.0]]))
        lin1.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        lin2.weight.copy_(torch.tensor([[1.0, 2.0, -3.0]]))
        lin2.bias.zero_()
    act = nn.LeakyReLU(0.1)
    x = torch.tensor([[0.3, 0.4], [-1.0, 0.2]], requires_grad=True)
    out = lin2(act(lin1(x)))
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    penalty = (g.norm(2, dim=1) - 1).pow(2).sum()
    penalty.backward()
    return g, penalty, lin1.weight.grad, lin2.weight.grad, lin1.bias.grad, x.grad


def test_gradient_penalty_gradients_are_exact():
    (g, pen, w1g, w2g, b1g, xg), _ = run_both(penalty_gradient_reaches_first_layer)
    # input gradient by hand: W1^T (slope * W2^T), slope 1 or 0.1 per hidden unit
    W1 = np.array([[1.0, -2.0], [0.5, 0.5], [-1.0, 1.0]])
    W2 = np.array([1.0, 2.0, -3.0])
    x = np.array([[0.3, 0.4], [-1.0, 0.2]])
    pre = x @ W1.T + [0.1, -0.2, 0.3]
    slope = np.where(pre > 0, 1.0, 0.1)
    np.testing.assert_allclose(g, (slope * W2) @ W1, rtol=1e-6)
    assert (b1g == 0).all() and (xg == 0).all()  # piecewise linear: the bias and the input do not move it


def hvp_hardtanh(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(5)
    W1 = torch.tensor(rng.standard_normal((6, 3)).astype(np.float64), requires_grad=True)
    W2 = torch.tensor(rng.standard_normal((1, 6)).astype(np.float64), requires_grad=True)
    X = torch.tensor(rng.standard_normal((10, 3)))
    y = torch.tensor(rng.standard_normal((10, 1)))
    act = nn.Hardtanh(-0.5, 0.5)
    def loss_fn(W1, W2):
        return F.mse_loss(act(X @ W1.t()) @ W2.t(), y)
    loss = loss_fn(W1, W2)
    grads = torch.autograd.grad(loss, (W1, W2), create_graph=True)
    v = (torch.ones_like(W1), torch.ones_like(W2))
    gv = sum((g * vi).sum() for g, vi in zip(grads, v))
    hv = torch.autograd.grad(gv, (W1, W2))
    _, hv_func = torch.autograd.functional.hvp(loss_fn, (W1.detach(), W2.detach()), v)
    H = torch.autograd.functional.hessian(lambda w2: loss_fn(W1.detach(), w2), W2.detach())
    return hv, hv_func, H


def test_hessian_vector_product_through_hardtanh():
    (hv, hv_func, H), _ = run_both(hvp_hardtanh, rtol=1e-8, atol=1e-10)
    for a, b in zip(hv, hv_func):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert H.shape == (1, 6, 1, 6)
    Hm = H.reshape(6, 6)
    np.testing.assert_allclose(Hm, Hm.T, atol=1e-12)  # a Gauss-Newton block: symmetric, PSD
    assert np.linalg.eigvalsh(Hm).min() > -1e-10


def dp_sgd(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_func = torch.func
    model = load(m, nn.Sequential(nn.Linear(3, 8), nn.ReLU6(), nn.Linear(8, 8), nn.ELU(), nn.Linear(8, 1)),
                 weights)
    rng = np.random.default_rng(6)
    X = torch.tensor(rng.standard_normal((8, 3)).astype(np.float32) * 3)
    Y = torch.tensor(rng.standard_normal((8, 1)).astype(np.float32))
    params = {k: v.detach() for k, v in model.named_parameters()}
    def loss_one(params, x, y):
        out = from_func.functional_call(model, params, (x.unsqueeze(0),))
        return F.mse_loss(out, y.unsqueeze(0))
    max_norm, lr, losses = 1.0, 0.1, []
    for step in range(4):
        per = from_func.vmap(from_func.grad(loss_one), in_dims=(None, 0, 0))(params, X, Y)
        norms = torch.stack([g.reshape(8, -1).norm(dim=1) for g in per.values()]).norm(dim=0)
        factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        params = {k: p - lr * (per[k] * factor.view(-1, *([1] * (per[k].dim() - 1)))).mean(0)
                  for k, p in params.items()}
        losses.append(F.mse_loss(from_func.functional_call(model, params, (X,)), Y).item())
    x0 = X[0]
    jac = from_func.jacrev(lambda x: from_func.functional_call(model, params, (x.unsqueeze(0),)).squeeze(0))(x0)
    hess = from_func.hessian(lambda x: from_func.functional_call(model, params, (x.unsqueeze(0),)).sum())(x0)
    return losses, norms, jac, hess


def test_dp_sgd_per_example_gradients_through_relu6_and_elu():
    make = lambda m: m.nn.Sequential(m.nn.Linear(3, 8), m.nn.ReLU6(), m.nn.Linear(8, 8), m.nn.ELU(), m.nn.Linear(8, 1))
    weights = weights_of(make)
    (losses, norms, jac, hess), _ = run_both(dp_sgd, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and norms.shape == (8,)
    assert jac.shape == (1, 3) and hess.shape == (3, 3)
    np.testing.assert_allclose(hess, hess.T, rtol=1e-4, atol=1e-6)


def elu_family_at_zero(m):
    torch, F = m.torch, m.F
    out = []
    for f in (lambda x: F.elu(x, 0.5), lambda x: F.celu(x, 0.7), F.selu, lambda x: F.elu(x * 1, inplace=True)):
        x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.sum(), x)
        out.append((g, gg))
    return out


def test_elu_family_second_derivative_at_zero_is_pytorchs():
    # chainrule gave d²elu/dx² = α at x = 0 (the negative branch's), PyTorch 0 (its first derivative
    # takes the negative branch at 0, its second only where x < 0)
    out, _ = run_both(elu_family_at_zero, rtol=1e-7, atol=1e-12)  # PyTorch rounds 1/α for celu
    alphas = [0.5, 1.0, 1.6732632423543772 * 1.0507009873554805, 1.0]
    for (g, gg), a in zip(out, alphas):
        np.testing.assert_allclose(g[1], a, rtol=1e-7)
        assert gg[1] == 0 and gg[2] == 0 and gg[0] != 0
