# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Programs built on ``torch.func`` (``autograd.func``) and ``torch.autograd.functional`` as their authors write
them, run as tests/probe12_func_common.py says. Curvature and implicit differentiation: the empirical neural tangent
kernel by Jacobian contraction (``vmap(jacrev)``, einsum, ``trace``) and by NTK-vector products (vmap over ``vjp``
and ``jvp``); Hessians of a small network's loss with respect to a dict of parameters (``hessian``,
``jacfwd(jacrev)``) and by ``torch.autograd.functional.hessian(vectorize=True,
outer_jacobian_strategy='forward-mode')``; influence functions (Hessian-vector products by ``jvp(grad)``, conjugate
gradients); Levenberg-Marquardt curve fitting with ``jacrev``; a deep-equilibrium layer differentiated implicitly (a
backward hook solving for the adjoint by ``torch.func.vjp``); a ridge hypergradient by implicit differentiation;
exact and sliced score matching; PyHessian's power iteration and Hutchinson traces; a classifier's (logits, argmax)
under jvp, jacfwd and jacrev."""

import numpy as np

from tests.pytorch_programs import OURS

from .probe12_func_common import _model, _same, _weights

# ----------------------------------------------------------------------------------------------
# Neural tangent kernels
# ----------------------------------------------------------------------------------------------


def ntk(m, weights, X1, X2):
    torch, nn = m.torch, m.nn
    from_numpy = torch.from_numpy
    torch_func = torch.func
    net = _model(m, weights, (3, 10, 10, 2), "Tanh")
    params = {k: v.detach() for k, v in net.named_parameters()}

    def fnet_single(params, x):
        return torch_func.functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)

    def empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2, compute="full"):
        jac1 = torch_func.vmap(torch_func.jacrev(fnet_single), (None, 0))(params, x1)
        jac1 = jac1.values()
        jac1 = [j.flatten(2) for j in jac1]
        jac2 = torch_func.vmap(torch_func.jacrev(fnet_single), (None, 0))(params, x2)
        jac2 = jac2.values()
        jac2 = [j.flatten(2) for j in jac2]
        einsum_expr = None
        if compute == "full":
            einsum_expr = "Naf,Mbf->NMab"
        elif compute == "trace":
            einsum_expr = "Naf,Maf->NM"
        elif compute == "diagonal":
            einsum_expr = "Naf,Maf->NMa"
        result = torch.stack([torch.einsum(einsum_expr, j1, j2) for j1, j2 in zip(jac1, jac2)])
        result = result.sum(0)
        return result

    def empirical_ntk_ntk_vps(func, params, x1, x2, compute="full"):
        def get_ntk(x1, x2):
            def func_x1(params):
                return func(params, x1)

            def func_x2(params):
                return func(params, x2)

            output, vjp_fn = torch_func.vjp(func_x1, params)

            def get_ntk_slice(vec):
                vjps = vjp_fn(vec)
                _, jvps = torch_func.jvp(func_x2, (params,), vjps)
                return jvps

            basis = torch.eye(output.numel(), dtype=output.dtype, device=output.device).view(output.numel(), -1)
            return torch_func.vmap(get_ntk_slice)(basis)

        result = torch_func.vmap(torch_func.vmap(get_ntk, (None, 0)), (0, None))(x1, x2)
        if compute == "full":
            return result
        if compute == "trace":
            return torch.einsum("NMKK->NM", result)
        if compute == "diagonal":
            return torch.einsum("NMKK->NMK", result)

    x1, x2 = from_numpy(X1), from_numpy(X2)
    full = empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2, "full")
    trace = empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2, "trace")
    diagonal = empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2, "diagonal")
    by_vps = empirical_ntk_ntk_vps(fnet_single, params, x1, x2, "full")
    by_vps_trace = empirical_ntk_ntk_vps(fnet_single, params, x1, x2, "trace")
    return full, trace, diagonal, by_vps, by_vps_trace


def test_empirical_ntk_two_ways():
    rng = np.random.default_rng(3)
    X1, X2 = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    weights = _weights((3, 10, 10, 2), "Tanh")
    full, trace, diagonal, by_vps, by_vps_trace = _same(ntk, weights, X1, X2, rtol=1e-10, atol=1e-12)
    assert full.shape == (4, 3, 2, 2)
    np.testing.assert_allclose(by_vps, full, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(trace, np.einsum("NMKK->NM", full), rtol=1e-10)
    np.testing.assert_allclose(by_vps_trace, trace, rtol=1e-10)
    np.testing.assert_allclose(diagonal, np.einsum("NMKK->NMK", full), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Hessians of a small network's loss
# ----------------------------------------------------------------------------------------------


def hessians_program(m, weights, X, Y):
    torch, F = m.torch, m.F
    func = torch.func
    net = _model(m, weights, (2, 3, 1), "Tanh")
    params = {k: v.detach() for k, v in net.named_parameters()}
    x, y = torch.from_numpy(X), torch.from_numpy(Y)

    def loss(params):  # (F.mse_loss here: PyTorch's forward-over-reverse refuses it, "ZeroTensors are immutable")
        return ((func.functional_call(net, params, (x,)) - y) ** 2).mean()

    H = func.hessian(loss)(params)
    H2 = func.jacfwd(func.jacrev(loss))(params)
    flat, unravel_sizes = torch.cat([p.reshape(-1) for p in params.values()]), [p.shape for p in params.values()]

    def loss_flat(theta):
        out, i = {}, 0
        for (k, p) in params.items():
            out[k] = theta[i:i + p.numel()].view(p.shape)
            i += p.numel()
        return loss(out)

    H_flat = func.hessian(loss_flat)(flat)
    H_functional = torch.autograd.functional.hessian(loss_flat, flat, vectorize=True,
                                                     outer_jacobian_strategy="forward-mode")
    H_functional_rev = torch.autograd.functional.hessian(loss_flat, flat)
    eig = torch.linalg.eigvalsh(H_flat)
    return H, H2, H_flat, H_functional, H_functional_rev, eig


def test_hessians_of_a_small_network():
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((6, 2)), rng.standard_normal((6, 1))
    weights = _weights((2, 3, 1), "Tanh")
    H, H2, H_flat, H_functional, H_functional_rev, eig = _same(hessians_program, weights, X, Y,
                                                               rtol=1e-9, atol=1e-12)
    assert H_flat.shape == (13, 13)
    np.testing.assert_allclose(H_flat, H_flat.T, atol=1e-12)
    np.testing.assert_allclose(H_functional, H_flat, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H_functional_rev, H_flat, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H["0.weight"]["2.bias"].reshape(-1), H_flat[:6, 12], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H2["2.weight"]["0.bias"], H_flat[9:12, 6:9][None], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Influence functions: Hessian-vector products by jvp(grad), conjugate gradients
# ----------------------------------------------------------------------------------------------


def influence(m, weights, X, Y, Xt, Yt):
    torch, F = m.torch, m.F
    func = torch.func
    net = _model(m, weights, (3, 6, 1), "Tanh")
    params = {k: v.detach() for k, v in net.named_parameters()}
    x, y, xt, yt = (torch.from_numpy(a) for a in (X, Y, Xt, Yt))
    damping = 1.0

    def loss(params, x, y):
        return ((func.functional_call(net, params, (x,)) - y) ** 2).mean()

    def hvp(v):
        return func.jvp(lambda p: func.grad(loss)(p, x, y), (params,), (v,))[1]

    def tree_dot(a, b):
        return sum((a[k] * b[k]).sum() for k in a)

    def cg(b, iters=100):
        x_ = {k: torch.zeros_like(v) for k, v in b.items()}
        r = {k: v.clone() for k, v in b.items()}
        p = {k: v.clone() for k, v in b.items()}
        rs = tree_dot(r, r)
        for _ in range(iters):
            Hp = hvp(p)
            Ap = {k: Hp[k] + damping * p[k] for k in p}
            alpha = rs / tree_dot(p, Ap)
            x_ = {k: x_[k] + alpha * p[k] for k in p}
            r = {k: r[k] - alpha * Ap[k] for k in p}
            rs_new = tree_dot(r, r)
            if rs_new.sqrt() < 1e-11:
                break
            p = {k: r[k] + (rs_new / rs) * p[k] for k in p}
            rs = rs_new
        return x_

    g_test = func.grad(loss)(params, xt, yt)
    s_test = cg(g_test)
    per_sample = func.vmap(func.grad(loss), in_dims=(None, 0, 0))(params, x.unsqueeze(1), y.unsqueeze(1))
    scores = -sum((per_sample[k] * s_test[k].unsqueeze(0)).flatten(1).sum(1) for k in params)
    hv_functional = torch.autograd.functional.hvp(lambda *ps: loss(dict(zip(params, ps)), x, y),
                                                  tuple(params.values()), tuple(s_test.values()))[1]
    return s_test, scores, hv_functional


def test_influence_functions_by_hessian_vector_products():
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    Xt, Yt = rng.standard_normal((2, 3)), rng.standard_normal((2, 1))
    weights = _weights((3, 6, 1), "Tanh")
    s_test, scores, hv = _same(influence, weights, X, Y, Xt, Yt, rtol=1e-8, atol=1e-10)
    assert scores.shape == (10,)


# ----------------------------------------------------------------------------------------------
# Levenberg-Marquardt curve fitting with jacrev
# ----------------------------------------------------------------------------------------------


def levenberg_marquardt(m, T, Yobs):
    torch = m.torch
    func = torch.func
    t, yobs = torch.from_numpy(T), torch.from_numpy(Yobs)

    def residual(theta):
        a, k, c = theta
        return a * torch.exp(-k * t) + c - yobs

    theta = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    lam = 1e-2
    costs = []
    for it in range(15):
        r = residual(theta)
        J = func.jacrev(residual)(theta)
        A = J.T @ J + lam * torch.diag(torch.diagonal(J.T @ J))
        delta = torch.linalg.solve(A, -J.T @ r)
        new_theta = theta + delta
        if residual(new_theta).pow(2).sum() < r.pow(2).sum():
            theta, lam = new_theta, lam / 3
        else:
            lam = lam * 3
        costs.append(0.5 * residual(theta).pow(2).sum())
    Jf = func.jacfwd(residual)(theta)
    return theta, torch.stack(costs), Jf


def test_levenberg_marquardt_fit():
    T = np.linspace(0, 4, 20)
    rng = np.random.default_rng(8)
    Yobs = 2.5 * np.exp(-1.3 * T) + 0.4 + 0.01 * rng.standard_normal(20)
    theta, costs, Jf = _same(levenberg_marquardt, T, Yobs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(theta, [2.5, 1.3, 0.4], atol=0.05)
    a, k, c = theta
    np.testing.assert_allclose(Jf, np.stack([np.exp(-k * T), -a * T * np.exp(-k * T), np.ones(20)], 1), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# A deep-equilibrium layer differentiated implicitly
# ----------------------------------------------------------------------------------------------


def deq(m, weights, X, Y):
    torch, nn, F = m.torch, m.nn, m.F
    func = torch.func

    class TanhFixedPointLayer(nn.Module):
        def __init__(self, out_features, tol=1e-10, max_iter=200):
            super().__init__()
            self.linear = nn.Linear(out_features, out_features, bias=False)
            self.tol = tol
            self.max_iter = max_iter

        def f(self, z, x):
            return torch.tanh(self.linear(z) + x)

        def solve(self, g, z0):
            z = z0
            for _ in range(self.max_iter):
                z_next = g(z)
                if (z_next - z).norm() < self.tol:
                    return z_next
                z = z_next
            return z

        def forward(self, x):
            with torch.no_grad():
                z = self.solve(lambda z: self.f(z, x), torch.zeros_like(x))
            z = self.f(z, x)
            z0 = z.clone().detach().requires_grad_()
            _, vjp_fn = func.vjp(lambda z_: self.f(z_, x), z0)

            def backward_hook(grad):
                return self.solve(lambda y: vjp_fn(y)[0] + grad, grad)

            if z.requires_grad:
                z.register_hook(backward_hook)
            return z

    layer = TanhFixedPointLayer(4).double()
    layer.linear.weight.data = torch.from_numpy(weights) * 0.3
    head = nn.Linear(4, 2).double()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(np.linspace(-1, 1, 8).reshape(2, 4)))
        head.bias.zero_()
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    loss = F.cross_entropy(head(layer(x)), y)
    loss.backward()
    return loss.detach(), layer.linear.weight.grad.clone()


def test_a_deep_equilibrium_layer_by_implicit_differentiation():
    rng = np.random.default_rng(9)
    W = rng.standard_normal((4, 4)) / 2
    X, Y = rng.standard_normal((5, 4)), rng.integers(0, 2, 5)
    loss, grad = _same(deq, W, X, Y, rtol=1e-8, atol=1e-10)
    # against central differences of the fixed point (on chainrule)
    torch, nn, F = OURS.torch, OURS.nn, OURS.F

    def loss_at(Wp):
        return float(deq(OURS, Wp, X, Y)[0])

    eps, i, j = 1e-6, 1, 2
    Wp, Wm = W.copy(), W.copy()
    Wp[i, j] += eps / 0.3
    Wm[i, j] -= eps / 0.3
    np.testing.assert_allclose(grad[i, j], (loss_at(Wp) - loss_at(Wm)) / (2 * eps), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Hypergradients, score matching, curvature estimates
# ----------------------------------------------------------------------------------------------


def ridge_hypergradient(m, X, Y, Xv, Yv):
    """d(validation loss)/d(log λ) of ridge regression three ways: by the implicit function theorem (jacrev
    of the inner gradient, a linear solve), by the adjoint (a vjp), and by differentiating the closed form."""
    torch = m.torch
    func = torch.func
    x, y, xv, yv = (torch.from_numpy(a) for a in (X, Y, Xv, Yv))

    def inner_solution(log_lam):
        A = x.T @ x + log_lam.exp() * torch.eye(x.shape[1], dtype=torch.float64)
        return torch.linalg.solve(A, x.T @ y)

    def inner_grad(w, log_lam):
        return func.grad(lambda w: 0.5 * ((x @ w - y) ** 2).sum() + 0.5 * log_lam.exp() * (w ** 2).sum())(w)

    def outer(w):
        return 0.5 * ((xv @ w - yv) ** 2).mean()

    log_lam = torch.tensor(0.5, dtype=torch.float64)
    w = inner_solution(log_lam)
    dg_dw = func.jacrev(inner_grad, argnums=0)(w, log_lam)
    dg_dl = func.jacrev(inner_grad, argnums=1)(w, log_lam)
    implicit = func.grad(outer)(w) @ -torch.linalg.solve(dg_dw, dg_dl)
    u = torch.linalg.solve(dg_dw.T, func.grad(outer)(w))
    _, vjp_fn = func.vjp(lambda l: inner_grad(w, l), log_lam)
    adjoint = -vjp_fn(u)[0]
    direct = func.grad(lambda l: outer(inner_solution(l)))(log_lam)
    return implicit, adjoint, direct, func.jacfwd(inner_solution)(log_lam)


def test_a_ridge_hypergradient_by_implicit_differentiation():
    rng = np.random.default_rng(18)
    X, Xv = rng.standard_normal((20, 3)), rng.standard_normal((8, 3))
    Y, Yv = X @ [1.0, -2.0, 0.5] + 0.1 * rng.standard_normal(20), Xv @ [1.0, -2.0, 0.5]
    implicit, adjoint, direct, dw = _same(ridge_hypergradient, X, Y, Xv, Yv, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(implicit, direct, rtol=1e-10)
    np.testing.assert_allclose(adjoint, direct, rtol=1e-10)


def score_matching(m, weights, data, V):
    """Exact score matching (the Jacobian's trace by ``vmap(jacrev)``) and sliced score matching (vᵀJv by
    ``jvp``), trained together by Adam."""
    torch = m.torch
    func = torch.func
    net = _model(m, weights, (2, 16, 2), "Softplus")
    opt = m.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.from_numpy(data)
    history = []
    for step in range(3):
        opt.zero_grad()
        s = net(x)
        J = func.vmap(func.jacrev(net))(x)
        loss = (0.5 * (s ** 2).sum(-1) + J.diagonal(dim1=-2, dim2=-1).sum(-1)).mean()
        v = torch.from_numpy(V[step])
        _, jv = func.jvp(net, (x,), (v,))
        sliced = (0.5 * (s ** 2).sum(-1) + (v * jv).sum(-1)).mean()
        (loss + sliced).backward()
        opt.step()
        history.append(torch.stack([loss.detach(), sliced.detach()]))
    return torch.stack(history), {k: p.detach() for k, p in net.named_parameters()}


def test_score_matching_exact_and_sliced():
    rng = np.random.default_rng(19)
    weights = _weights((2, 16, 2), "Softplus")
    history, params = _same(score_matching, weights, rng.standard_normal((8, 2)), rng.standard_normal((3, 8, 2)),
                            rtol=1e-9, atol=1e-11)
    assert history.shape == (3, 2)


def curvature(m, weights, X, Y, V0, R):
    """PyHessian's top eigenvalue by power iteration (Hessian-vector products by ``autograd.grad`` of the
    gradient with ``grad_outputs``) and its Hutchinson trace, beside the full Hessian of the flattened
    parameters (``parameters_to_vector``, ``torch.autograd.functional.hessian``) and a Hutchinson estimate
    by vmap over ``jvp(grad)``."""
    torch, nn, F = m.torch, m.nn, m.F
    net = _model(m, weights, (4, 8, 3), "Tanh")
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    params = [p for p in net.parameters() if p.requires_grad]
    loss = F.cross_entropy(net(x), y)
    gradsH = torch.autograd.grad(loss, params, create_graph=True)

    def normalization(v):
        s = sum(torch.sum(x * x) for x in v) ** 0.5
        return [x / (s + 1e-6) for x in v]

    v = normalization([torch.from_numpy(a) for a in V0])
    eigenvalue = None
    for i in range(300):
        Hv = torch.autograd.grad(gradsH, params, grad_outputs=v, only_inputs=True, retain_graph=True)
        eigenvalue = sum(torch.sum(x * y) for x, y in zip(Hv, v)).item()
        v = normalization(Hv)
    trace = []
    for r in R:
        vr = [torch.from_numpy(a) for a in r]
        Hv = torch.autograd.grad(gradsH, params, grad_outputs=vr, retain_graph=True)
        trace.append(sum(torch.sum(x * y) for x, y in zip(Hv, vr)))
    flat = nn.utils.parameters_to_vector(net.parameters()).detach()
    names = [k for k, _ in net.named_parameters()]

    def loss_of_vector(vec):
        chunks, i = {}, 0
        for name, p in zip(names, params):
            chunks[name] = vec[i:i + p.numel()].view_as(p)
            i += p.numel()
        return F.cross_entropy(torch.func.functional_call(net, chunks, (x,)), y)

    H = torch.autograd.functional.hessian(loss_of_vector, flat)
    flat_r = torch.stack([torch.cat([torch.from_numpy(a).reshape(-1) for a in r]) for r in R])
    hvp = lambda v: torch.func.jvp(torch.func.grad(loss_of_vector), (flat,), (v,))[1]
    hutchinson = torch.func.vmap(lambda v: (v * hvp(v)).sum())(flat_r)
    return eigenvalue, torch.stack(trace), H, hutchinson


def test_curvature_by_power_iteration_and_hutchinson():
    rng = np.random.default_rng(20)
    weights = _weights((4, 8, 3), "Tanh")
    X, Y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
    V0 = [rng.standard_normal(v.shape) for v in weights.values()]
    R = [[np.sign(rng.standard_normal(v.shape)) for v in weights.values()] for _ in range(4)]
    eigenvalue, trace, H, hutchinson = _same(curvature, weights, X, Y, V0, R, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(eigenvalue, np.linalg.eigvalsh(H).max(), rtol=1e-4)  # (the largest in size)
    np.testing.assert_allclose(trace, hutchinson, rtol=1e-10)


def predictions_and_their_sensitivity(m, weights, X, V):
    """A classifier returning (logits, predicted class): the class is an integer output, whose tangent under
    ``jvp`` and Jacobian under ``jacfwd`` are zeros of its dtype; ``jacrev`` needs the logits alone."""
    torch = m.torch
    func = torch.func
    net = _model(m, weights, (3, 8, 2), "Tanh")

    def classify(x):
        logits = net(x)
        return logits, logits.argmax(-1)

    x, v = torch.from_numpy(X), torch.from_numpy(V)
    (logits, label), (logits_dot, label_dot) = func.jvp(classify, (x,), (v,))
    J, label_J = func.jacfwd(classify)(x[0])
    J_rev = func.jacrev(lambda x: classify(x)[0])(x[0])
    return logits_dot, label, label_dot, J, label_J, J_rev


def test_the_sensitivity_of_a_classifiers_outputs():
    rng = np.random.default_rng(21)
    logits_dot, label, label_dot, J, label_J, J_rev = _same(
        predictions_and_their_sensitivity, _weights((3, 8, 2), "Tanh"), rng.standard_normal((5, 3)),
        rng.standard_normal((5, 3)), rtol=1e-10, atol=1e-12)
    assert label_dot.dtype == np.int64 and not label_dot.any() and label_J.shape == (3,)
    np.testing.assert_allclose(J, J_rev, rtol=1e-12)
