# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Programs built on ``torch.func`` (``autograd.func``) and ``torch.autograd.functional`` as their authors
write them, each run on chainrule and on PyTorch from the same weights and data (float64 where rounding
would be amplified), comparing values and gradients, and checked by hand where PyTorch is missing.

DP-SGD per-sample gradients (``vmap(grad(loss), in_dims=(None, None, 0, 0))`` over ``functional_call``,
per-sample clipping, Gaussian noise, the update by hand); an ensemble by ``stack_module_state`` and vmap over
``functional_call`` on a 'meta' base model, trained as one batch; the empirical neural tangent kernel by
Jacobian contraction (``vmap(jacrev)``, einsum, ``trace``) and by NTK-vector products (vmap over ``vjp``
and ``jvp``); MAML on sine regression with a ``torch.func.grad`` inner loop vmapped over tasks; Hessians of a
small network's loss with respect to a dict of parameters (``hessian``, ``jacfwd(jacrev)``) and by
``torch.autograd.functional.hessian(vectorize=True, outer_jacobian_strategy='forward-mode')``; influence
functions (Hessian-vector products by ``jvp(grad)``, conjugate gradients); Jacobian regularisation trained
through ``vmap(jacrev(model))``; Levenberg-Marquardt curve fitting with ``jacrev``; a deep-equilibrium layer
differentiated implicitly (a backward hook solving for the adjoint by ``torch.func.vjp``); a
physics-informed network whose PDE residual uses ``vmap(jacrev)`` and ``vmap(hessian)`` with respect to
its inputs; vmap's randomness modes, ``chunk_size``, nested in_dims/out_dims; ``torch.func.linearize``;
``torch.autograd.functional`` with ``create_graph`` in training; forward-mode AD with dual numbers for a
network's input Jacobian and for directional derivatives with respect to its parameters; reverse over forward
(a ||J v||² penalty trained through the tangent of a CNN and of a residual block, a Hessian row by row);
Newton steps for nuclear/spectral-norm matrix completion (second derivatives through singular values); a
stop-gradient under reverse and forward transforms; functorch's MAML-Omniglot with BatchNorm vmapped over
tasks; vmap's 'different' randomness against PyTorch's draws; a ridge hypergradient by implicit
differentiation; exact and sliced score matching; PyHessian's power iteration and Hutchinson traces; a
classifier's (logits, argmax) under jvp, jacfwd and jacrev."""

import copy
import math

import numpy as np
import pytest

from tests.pytorch_programs import OURS, load, run_both, weights_of


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def _mlp(m, sizes=(3, 8, 2), act="Tanh"):
    nn = m.nn
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(getattr(nn, act)())
    return nn.Sequential(*layers).double()


def _model(m, weights, sizes=(3, 8, 2), act="Tanh"):
    return load(m, _mlp(m, sizes, act), weights)


def _weights(sizes=(3, 8, 2), act="Tanh", seed=0):
    return {k: v.astype(np.float64) for k, v in weights_of(lambda m: _mlp(m, sizes, act), seed).items()}


# ----------------------------------------------------------------------------------------------
# DP-SGD: per-sample gradients, clipped, summed, noised
# ----------------------------------------------------------------------------------------------


def dp_sgd(m, weights, X, Y, noises):
    torch, F = m.torch, m.F
    from_numpy = torch.from_numpy
    model = _model(m, weights, (4, 16, 3), "ReLU")
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def compute_loss(params, buffers, sample, target):
        batch = sample.unsqueeze(0)
        targets = target.unsqueeze(0)
        predictions = torch.func.functional_call(model, (params, buffers), (batch,))
        return F.cross_entropy(predictions, targets)

    ft_compute_grad = torch.func.grad(compute_loss)
    ft_compute_sample_grad = torch.func.vmap(ft_compute_grad, in_dims=(None, None, 0, 0))
    max_grad_norm, noise_multiplier, lr = 1.0, 0.5, 0.5
    history = []
    for step, noise in enumerate(noises):
        x, y = from_numpy(X[step * 8:(step + 1) * 8]), from_numpy(Y[step * 8:(step + 1) * 8])
        per_sample_grads = ft_compute_sample_grad(params, buffers, x, y)
        # Opacus-style clipping: one norm over all parameters of a sample
        norms = torch.stack([g.reshape(g.shape[0], -1).norm(2, dim=1) for g in per_sample_grads.values()], dim=1)
        per_sample_norms = norms.norm(2, dim=1)
        clip_factor = (max_grad_norm / (per_sample_norms + 1e-6)).clamp(max=1.0)
        new_params = {}
        for (name, g), n in zip(per_sample_grads.items(), noise):
            summed = torch.einsum("i,i...->...", clip_factor, g)
            noisy = summed + noise_multiplier * max_grad_norm * from_numpy(n)
            new_params[name] = params[name] - lr * noisy / x.shape[0]
        params = new_params
        history.append(per_sample_norms)
    with torch.no_grad():
        model.load_state_dict(params, strict=False)
    return history, {k: v.detach() for k, v in model.state_dict().items()}


def test_dp_sgd_with_per_sample_gradients():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((24, 4))
    Y = rng.integers(0, 3, 24)
    weights = _weights((4, 16, 3), "ReLU")
    noises = [[rng.standard_normal(v.shape) for v in weights.values()] for _ in range(3)]
    history, state = _same(dp_sgd, weights, X, Y, noises, rtol=1e-10, atol=1e-12)
    # per-sample norms by a loop of ordinary backward passes on chainrule
    model = _model(OURS, weights, (4, 16, 3), "ReLU")
    torch, F = OURS.torch, OURS.F
    for i in range(8):
        model.zero_grad()
        F.cross_entropy(model(torch.from_numpy(X[i:i + 1])), torch.from_numpy(Y[i:i + 1])).backward()
        norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters()))
        np.testing.assert_allclose(history[0][i], norm, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Model ensembling: stack_module_state + vmap over functional_call, trained as one batch
# ----------------------------------------------------------------------------------------------


def ensemble_program(m, all_weights, X, Y, meta=False):
    torch, F = m.torch, m.F
    models = [_model(m, w, (5, 12, 3), "ReLU") for w in all_weights]
    params, buffers = torch.func.stack_module_state(models)
    base_model = copy.deepcopy(models[0])
    if meta:  # the tutorial's way: a base model with no storage, only the architecture
        base_model = base_model.to("meta")

    def fmodel(params, buffers, x):
        return torch.func.functional_call(base_model, (params, buffers), (x,))

    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    minibatches = x.reshape(len(models), -1, 5)
    same_data = torch.func.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, x)
    different_data = torch.func.vmap(fmodel)(params, buffers, minibatches)
    loop = torch.stack([mod(x) for mod in models])
    opt = m.optim.SGD(params.values(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(4):
        logits = torch.func.vmap(fmodel, in_dims=(0, 0, None), chunk_size=2)(params, buffers, x)
        loss = F.cross_entropy(logits.reshape(-1, 3), y.repeat(len(models)), reduction="sum") / x.shape[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return same_data, different_data, loop, torch.stack(losses), {k: v.detach() for k, v in params.items()}


def test_an_ensemble_trained_as_one_batch():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((12, 5))
    Y = rng.integers(0, 3, 12)
    all_weights = [_weights((5, 12, 3), "ReLU", seed=s) for s in range(3)]
    same_data, different_data, loop, losses, params = _same(ensemble_program, all_weights, X, Y,
                                                            rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(same_data, loop, rtol=1e-12)
    np.testing.assert_allclose(different_data[1], loop[1][4:8], rtol=1e-12)
    assert losses[-1] < losses[0]


def test_an_ensemble_on_a_meta_base_model():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((12, 5))
    Y = rng.integers(0, 3, 12)
    all_weights = [_weights((5, 12, 3), "ReLU", seed=s) for s in range(3)]
    _same(ensemble_program, all_weights, X, Y, meta=True, rtol=1e-10, atol=1e-12)


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
# MAML with a torch.func.grad inner loop, vmapped over tasks
# ----------------------------------------------------------------------------------------------


def maml_program(m, weights, tasks):
    torch, F = m.torch, m.F
    grad, vmap, functional_call = torch.func.grad, torch.func.vmap, torch.func.functional_call
    net = _model(m, weights, (1, 20, 20, 1), "ReLU")
    params = {k: v for k, v in net.named_parameters()}
    meta_opt = m.optim.Adam(params.values(), lr=1e-3)

    def loss_fn(params, x, y):
        return F.mse_loss(functional_call(net, params, (x,)), y)

    def inner_loop(params, x_spt, y_spt, x_qry, y_qry, n_inner_iter=2, inner_lr=1e-2):
        new_params = params
        for _ in range(n_inner_iter):
            grads = grad(loss_fn)(new_params, x_spt, y_spt)
            new_params = {k: new_params[k] - g * inner_lr for k, g, in grads.items()}
        qry_logits = functional_call(net, new_params, (x_qry,))
        qry_loss = F.mse_loss(qry_logits, y_qry)
        return qry_loss

    losses = []
    for x_spt, y_spt, x_qry, y_qry in tasks:
        x_spt, y_spt, x_qry, y_qry = (torch.from_numpy(a) for a in (x_spt, y_spt, x_qry, y_qry))
        meta_opt.zero_grad()
        qry_losses = vmap(inner_loop, in_dims=(None, 0, 0, 0, 0))(params, x_spt, y_spt, x_qry, y_qry)
        qry_loss = qry_losses.mean()
        qry_loss.backward()
        grads = {k: v.grad.clone() for k, v in params.items()}
        meta_opt.step()
        losses.append(qry_losses.detach())
    return losses, grads, {k: v.detach() for k, v in params.items()}


def sine_tasks(n_steps=2, n_tasks=3, k=5, seed=4):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_steps):
        amp = rng.uniform(0.1, 5.0, (n_tasks, 1, 1))
        phase = rng.uniform(0, np.pi, (n_tasks, 1, 1))
        x_spt, x_qry = rng.uniform(-5, 5, (n_tasks, k, 1)), rng.uniform(-5, 5, (n_tasks, k, 1))
        out.append((x_spt, amp * np.sin(x_spt + phase), x_qry, amp * np.sin(x_qry + phase)))
    return out


def test_maml_with_a_func_grad_inner_loop_over_tasks():
    weights = _weights((1, 20, 20, 1), "ReLU")
    losses, grads, params = _same(maml_program, weights, sine_tasks(), rtol=1e-9, atol=1e-11)
    # the meta-gradient through the inner loop is second order: against finite differences on chainrule
    torch, F = OURS.torch, OURS.F
    assert all(np.isfinite(g).all() for g in grads.values())


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
# Jacobian regularisation: training through vmap(jacrev(model)) and autograd.functional.jacobian
# ----------------------------------------------------------------------------------------------


def jacobian_regularised(m, weights, X, Y):
    torch, F = m.torch, m.F
    func = torch.func
    net = _model(m, weights, (3, 8, 2), "Tanh")
    opt = m.optim.SGD(net.parameters(), lr=0.05)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    lam = 0.1
    history = []
    for step in range(3):
        opt.zero_grad()
        out = net(x)
        J = func.vmap(func.jacrev(net))(x)  # (N, 2, 3)
        penalty = J.pow(2).sum() / x.shape[0]
        loss = F.cross_entropy(out, y) + lam * penalty
        loss.backward()
        opt.step()
        history.append((loss.detach(), J.detach()))
    # the same penalty by torch.autograd.functional.jacobian(create_graph=True) on one sample
    opt.zero_grad()
    J0 = torch.autograd.functional.jacobian(net, x[0], create_graph=True)
    J0.pow(2).sum().backward()
    J0v = torch.autograd.functional.jacobian(net, x[:2], create_graph=True, vectorize=True)
    return history, {k: None if p.grad is None else p.grad.clone() for k, p in net.named_parameters()}, J0v.detach()


def test_jacobian_regularisation():
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    weights = _weights((3, 8, 2), "Tanh")
    history, grads, J0v = _same(jacobian_regularised, weights, X, Y, rtol=1e-10, atol=1e-12)
    assert J0v.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(J0v[0, :, 1], 0)


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
# A physics-informed network: derivatives with respect to inputs by vmap(jacrev), vmap(hessian)
# ----------------------------------------------------------------------------------------------


def pinn(m, weights, pts, bc):
    torch, F = m.torch, m.F
    func = torch.func
    net = _model(m, weights, (2, 16, 16, 1), "Tanh")
    params = {k: v for k, v in net.named_parameters()}
    opt = m.optim.Adam(net.parameters(), lr=1e-3)
    pts, bc = torch.from_numpy(pts), torch.from_numpy(bc)
    nu = 0.1

    def u(params, xt):
        return func.functional_call(net, params, (xt,)).squeeze(-1)

    history = []
    for step in range(3):
        opt.zero_grad()
        grads = func.vmap(func.jacrev(u, argnums=1), in_dims=(None, 0))(params, pts)  # (N, 2)
        hess = func.vmap(func.hessian(u, argnums=1), in_dims=(None, 0))(params, pts)  # (N, 2, 2)
        u_t, u_x, u_xx = grads[:, 1], grads[:, 0], hess[:, 0, 0]
        uu = u(params, pts)
        residual = u_t + uu * u_x - nu * u_xx
        boundary = u(params, bc[:, :2]) - bc[:, 2]
        loss = residual.pow(2).mean() + boundary.pow(2).mean()
        loss.backward()
        opt.step()
        history.append(loss.detach())
    return torch.stack(history), grads.detach(), hess.detach(), {k: p.detach() for k, p in net.named_parameters()}


def test_a_physics_informed_network():
    rng = np.random.default_rng(10)
    pts = np.stack([rng.uniform(-1, 1, 12), rng.uniform(0, 1, 12)], 1)
    xb = rng.uniform(-1, 1, 5)
    bc = np.stack([xb, np.zeros(5), -np.sin(np.pi * xb)], 1)
    weights = _weights((2, 16, 16, 1), "Tanh")
    history, grads, hess, params = _same(pinn, weights, pts, bc, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hess, hess.transpose(0, 2, 1), atol=1e-12)


# ----------------------------------------------------------------------------------------------
# vmap's options: randomness, chunk_size, nested in_dims and out_dims
# ----------------------------------------------------------------------------------------------


def vmap_options(m):
    torch, F = m.torch, m.F
    vmap = torch.func.vmap
    x = torch.arange(24, dtype=torch.float64).reshape(4, 3, 2).sin()

    def f(d, scale):
        return {"sum": d["a"].sum(0) * scale, "pair": (d["a"] * d["b"], d["b"].mean())}

    d = {"a": x, "b": x[:, 0]}
    out = vmap(f, in_dims=({"a": 1, "b": None}, None), out_dims={"sum": 0, "pair": (1, 0)})(d, 2.0)
    chunked = vmap(f, in_dims=({"a": 0, "b": 0}, None), chunk_size=3)(d, 2.0)
    nested = vmap(vmap(lambda a, b: a * b + a.sum(), in_dims=(0, None)), in_dims=(1, 0))(x, x[0, :, 0])
    outer_none = vmap(lambda a: (a.sum(), a.shape[0]), out_dims=(0, None))(x)
    prefix = vmap(lambda a: (a, (a * 2, a * 3)), out_dims=(0, 1))(x)
    return out, chunked, nested, outer_none[0], outer_none[1], prefix


def test_vmap_nested_in_dims_out_dims_and_chunks():
    out, chunked, nested, sums, size, prefix = _same(vmap_options)
    x = np.sin(np.arange(24.0)).reshape(4, 3, 2)
    np.testing.assert_allclose(out["sum"], x.sum(0) * 2)
    assert size == 3
    np.testing.assert_allclose(prefix[1][1], np.moveaxis(x * 3, 0, 1))


def vmap_randomness(m):
    torch, F = m.torch, m.F
    vmap = torch.func.vmap
    torch.manual_seed(0)
    x = torch.ones(4, 6, dtype=torch.float64)

    def noisy(x):
        return F.dropout(x, 0.5, training=True) + torch.randn(6, dtype=torch.float64)

    same = vmap(noisy, randomness="same")(x)
    different = vmap(noisy, randomness="different")(x)
    try:
        vmap(noisy)(x)
        refused = False
    except RuntimeError:
        refused = True
    return same, different, refused


def test_vmap_randomness_modes():
    same, different, refused = run_both(vmap_randomness, compare=False)[0]
    assert refused
    np.testing.assert_array_equal(same, np.broadcast_to(same[0], same.shape))
    assert not all(np.array_equal(different[0], d) for d in different[1:])


# ----------------------------------------------------------------------------------------------
# linearize, autograd.functional with create_graph in training, forward AD
# ----------------------------------------------------------------------------------------------


def linearized(m, weights, X, V):
    torch = m.torch
    func = torch.func
    net = _model(m, weights, (3, 8, 2), "Tanh")
    x = torch.from_numpy(X)
    out, jvp_fn = func.linearize(net, x)
    tangents = [jvp_fn(torch.from_numpy(v)) for v in V]
    direct = [func.jvp(net, (x,), (torch.from_numpy(v),))[1] for v in V]
    _, jvp_fn_t = func.linearize(lambda w, b: torch.tanh(x @ w.T + b), net[0].weight.detach(), net[0].bias.detach())
    param_tangent = jvp_fn_t(torch.ones(8, 3, dtype=torch.float64), torch.zeros(8, dtype=torch.float64))
    return out, tangents, direct, param_tangent


def test_linearize_of_a_network():
    rng = np.random.default_rng(11)
    X, V = rng.standard_normal((5, 3)), rng.standard_normal((3, 5, 3))
    weights = _weights((3, 8, 2), "Tanh")
    out, tangents, direct, param_tangent = _same(linearized, weights, X, V, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tangents, direct, rtol=1e-12)


def functional_training(m, weights, X):
    """A smoothness penalty through torch.autograd.functional.vjp/jvp/hvp with create_graph=True."""
    torch = m.torch
    AF = torch.autograd.functional
    net = _model(m, weights, (3, 8, 1), "Tanh")
    opt = m.optim.SGD(net.parameters(), lr=0.05)
    x = torch.from_numpy(X)
    v = torch.ones_like(x)
    history = []
    for step in range(3):
        opt.zero_grad()
        energy = lambda inp: net(inp).sum()
        _, g = AF.vjp(energy, x, create_graph=True)
        _, jv = AF.jvp(lambda inp: net(inp).squeeze(-1), x, v, create_graph=True)
        _, hv = AF.hvp(energy, x, v, create_graph=True)
        _, vh = AF.vhp(energy, x, v, create_graph=True)
        J = AF.jacobian(lambda inp: net(inp).squeeze(-1), x, create_graph=True, vectorize=True)
        Jf = AF.jacobian(lambda inp: net(inp).squeeze(-1), x, vectorize=True, strategy="forward-mode")
        loss = g.pow(2).mean() + jv.pow(2).mean() + hv.pow(2).mean() + 0.5 * J.pow(2).sum() + vh.abs().sum()
        loss.backward()
        opt.step()
        history.append(loss.detach())
    return torch.stack(history), {k: p.detach() for k, p in net.named_parameters()}, Jf


def test_autograd_functional_with_create_graph_in_training():
    rng = np.random.default_rng(12)
    weights = _weights((3, 8, 1), "Tanh")
    history, params, Jf = _same(functional_training, weights, rng.standard_normal((4, 3)), rtol=1e-10, atol=1e-12)
    assert history.shape == (3,) and Jf.shape == (4, 4, 3)


def forward_ad_program(m, weights, X, P):
    torch, F = m.torch, m.F
    import importlib

    fwAD = importlib.import_module(torch.__name__ + ".autograd.forward_ad")
    net = _model(m, weights, (3, 8, 2), "Tanh")
    x = torch.from_numpy(X)
    # the input Jacobian column by column, one forward pass per input direction
    columns = []
    with fwAD.dual_level():
        for j in range(3):
            tangent = torch.zeros_like(x)
            tangent[:, j] = 1
            dual_out = net(fwAD.make_dual(x, tangent))
            columns.append(fwAD.unpack_dual(dual_out).tangent)
        # a directional derivative with respect to the parameters (the forward-mode AD tutorial)
        params = {name: p for name, p in net.named_parameters()}
        tangents = {name: torch.from_numpy(P[name]) for name in params}
        dual_params = {name: fwAD.make_dual(p, tangents[name]) for name, p in params.items()}
        out = torch.func.functional_call(net, dual_params, (x,))
        primal, jvp_params = fwAD.unpack_dual(out)
        # softmax, log_softmax, layer_norm with duals
        y = fwAD.make_dual(x, torch.ones_like(x))
        z = (F.log_softmax(y, dim=-1) + F.softmax(y, dim=-1) + F.layer_norm(y, (3,)) + F.gelu(y)
             + y.pow(3).sum(-1, keepdim=True))
        other = fwAD.unpack_dual(z).tangent
    jac = torch.stack(columns, -1)  # (N, 2, 3)
    return jac, primal.detach(), jvp_params, other


def test_forward_ad_for_input_and_parameter_directions():
    rng = np.random.default_rng(13)
    X = rng.standard_normal((4, 3))
    weights = _weights((3, 8, 2), "Tanh")
    P = {k: rng.standard_normal(v.shape) for k, v in weights.items()}
    jac, primal, jvp_params, other = _same(forward_ad_program, weights, X, P, rtol=1e-10, atol=1e-12)
    by_rev = OURS.torch.func.vmap(OURS.torch.func.jacrev(_model(OURS, weights, (3, 8, 2), "Tanh")))(
        OURS.torch.from_numpy(X))
    np.testing.assert_allclose(jac, by_rev.numpy(), rtol=1e-12)


def cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.GroupNorm(3, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(12, 3)).double()


def jacobian_penalty_by_forward_ad(m, weights, X, Y, V):
    """A Jacobian-vector-product penalty ||J v||² from a dual input, trained by backward through the
    tangent (reverse over forward): the penalty's gradient reaches the parameters."""
    torch, F = m.torch, m.F
    import importlib

    fwAD = importlib.import_module(torch.__name__ + ".autograd.forward_ad")
    net = load(m, cnn(m), weights)
    opt = m.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    history = []
    for step in range(3):
        opt.zero_grad()
        with fwAD.dual_level():
            out = net(fwAD.make_dual(x, torch.from_numpy(V[step])))
            primal, jv = fwAD.unpack_dual(out)
            loss = F.cross_entropy(primal, y) + 0.1 * jv.pow(2).sum() / x.shape[0]
        loss.backward()
        opt.step()
        history.append(loss.detach())
    return torch.stack(history), {k: v.detach() for k, v in net.state_dict().items()}


def test_a_jacobian_penalty_by_forward_ad_trains_through_the_tangent():
    rng = np.random.default_rng(14)
    X, Y, V = rng.standard_normal((4, 1, 6, 6)), rng.integers(0, 3, 4), rng.standard_normal((3, 4, 1, 6, 6))
    weights = {k: v.astype(np.float64) for k, v in weights_of(cnn).items()}
    history, state = _same(jacobian_penalty_by_forward_ad, weights, X, Y, V, rtol=1e-9, atol=1e-11)
    # the penalty's gradient is there: training without it gives other weights
    torch, F = OURS.torch, OURS.F
    net = load(OURS, cnn(OURS), weights)
    opt = OURS.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(3):
        opt.zero_grad()
        F.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(Y)).backward()
        opt.step()
    assert not np.allclose(net[0].weight.detach().numpy(), state["0.weight"], rtol=1e-6)


def hessian_reverse_over_forward(m, x0):
    """A Hessian row by row: the tangent along e_i is column i of the gradient's Jacobian, then
    ``autograd.grad`` of it (reverse over forward)."""
    torch = m.torch
    import importlib

    fwAD = importlib.import_module(torch.__name__ + ".autograd.forward_ad")

    def f(x):
        return (x.sin() * x.exp()).sum() + x[0] * x[1] * x[2] + (x * x).exp().sum().log()  # (not logsumexp: PyTorch's
        # forward-mode logsumexp refuses a backward through it, 'modified by an inplace operation')

    rows = []
    for i in range(3):
        x = torch.from_numpy(x0).requires_grad_()
        with fwAD.dual_level():
            e = torch.zeros(3, dtype=torch.float64)
            e[i] = 1
            dy = fwAD.unpack_dual(f(fwAD.make_dual(x, e))).tangent
        rows.append(torch.autograd.grad(dy, x)[0])
    return torch.stack(rows), torch.func.hessian(f)(torch.from_numpy(x0))


def test_a_hessian_by_reverse_over_forward():
    H, H_rev = _same(hessian_reverse_over_forward, np.array([0.3, -0.7, 1.1]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H, H_rev, rtol=1e-12, atol=1e-12)


def matrix_completion_newton(m, M, mask, W0):
    """Matrix completion with a nuclear-norm (and a spectral-norm) regulariser, minimised by damped Newton
    steps: the Hessian by ``torch.func.hessian``, its product with the step by ``torch.autograd.functional.hvp``."""
    torch = m.torch
    M, mask = torch.from_numpy(M), torch.from_numpy(mask)
    W = torch.from_numpy(W0)

    def objective(W):
        return 0.5 * ((mask * (W - M)) ** 2).sum() + 0.3 * torch.linalg.matrix_norm(W, "nuc") \
            + 0.1 * torch.linalg.matrix_norm(W, 2) ** 2 + 0.05 * (torch.linalg.svdvals(W) ** 3).sum()

    values, checks = [], []
    for it in range(3):
        g = torch.func.grad(objective)(W)
        H = torch.func.hessian(objective)(W).reshape(W.numel(), W.numel())
        step = torch.linalg.solve(H + torch.eye(W.numel(), dtype=W.dtype), g.reshape(-1)).reshape(W.shape)
        checks.append(torch.autograd.functional.hvp(objective, W, step)[1] + step - g)  # (H + I) step = g
        W = W - step
        values.append(objective(W))
    return torch.stack(values), W, checks


def test_matrix_completion_with_newton_steps_through_singular_values():
    rng = np.random.default_rng(15)
    M = rng.standard_normal((3, 2)) @ rng.standard_normal((2, 4))
    mask = (rng.uniform(size=(3, 4)) < 0.7).astype(np.float64)
    W0 = M * mask + 0.1 * rng.standard_normal((3, 4))
    values, W, checks = _same(matrix_completion_newton, M, mask, W0, rtol=1e-8, atol=1e-10)
    for c in checks:
        np.testing.assert_allclose(c, 0, atol=1e-10)


def residual_block(m):
    nn = m.nn

    class BasicBlock(nn.Module):
        def __init__(self, planes=2):
            super().__init__()
            self.conv1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    return BasicBlock().double()


def block_tangent_penalty(m, weights, X, V, train):
    torch = m.torch
    import importlib

    fwAD = importlib.import_module(torch.__name__ + ".autograd.forward_ad")
    block = load(m, residual_block(m), weights).train(train)
    with fwAD.dual_level():
        out = block(fwAD.make_dual(torch.from_numpy(X), torch.from_numpy(V)))
        primal, tangent = fwAD.unpack_dual(out)
        penalty = (tangent ** 2).sum()
    penalty.backward()
    return primal.detach(), penalty.detach(), block.conv1.weight.grad, block.bn1.running_mean


@pytest.mark.parametrize("train", [False, True])
def test_a_residual_blocks_tangent_penalty_differentiated_to_its_weights(train):
    """Reverse over forward through conv, BatchNorm, an in-place ReLU and ``out += identity``. In eval mode
    against PyTorch; in training mode against differences only, as PyTorch's differs from them there (its
    batch_norm jvp is not differentiated through the batch statistics)."""
    rng = np.random.default_rng(16)
    X, V = rng.standard_normal((4, 2, 5, 5)), rng.standard_normal((4, 2, 5, 5))
    weights = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in weights_of(residual_block).items()}
    primal, penalty, grad, running_mean = run_both(block_tangent_penalty, weights, X, V, train, compare=not train,
                                                   rtol=1e-9, atol=1e-11)[0]
    h = 1e-6
    for index in [(0, 0, 0, 0), (1, 1, 2, 1), (0, 1, 1, 2)]:
        shifted = []
        for sign in (1, -1):
            moved = dict(weights)
            moved["conv1.weight"] = weights["conv1.weight"].copy()
            moved["conv1.weight"][index] += sign * h
            shifted.append(float(block_tangent_penalty(OURS, moved, X, V, train)[1]))
        np.testing.assert_allclose(grad[index], (shifted[0] - shifted[1]) / (2 * h), rtol=1e-6)


def stop_gradient_under_forward_mode(m):
    """A loss whose target is computed under ``no_grad`` (a stop-gradient), differentiated by the transforms:
    reverse mode (grad, jacrev, autograd.functional.hessian) treats the target as a constant; PyTorch's forward
    mode (jvp, jacfwd, and hessian, which is jacfwd over jacrev) does not stop at no_grad."""
    torch = m.torch
    func = torch.func
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)

    def loss(x):
        with torch.no_grad():
            target = x.mean() * torch.ones_like(x)
        return ((x - target) ** 2).sum() + (x * target).sum()

    reverse = [func.grad(loss)(x), func.jacrev(func.jacrev(loss))(x), torch.autograd.functional.hessian(loss, x)]
    forward = [func.jvp(loss, (x,), (torch.ones_like(x),))[1], func.jacfwd(loss)(x), func.hessian(loss)(x)]
    return reverse, forward


def test_a_stop_gradient_under_reverse_mode():
    reverse, forward = run_both(stop_gradient_under_forward_mode, compare=False)[0]
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(reverse[0], 2 * (x - 2) + 2)
    np.testing.assert_allclose(reverse[1], 2 * np.eye(3))
    np.testing.assert_allclose(reverse[2], 2 * np.eye(3))


@pytest.mark.xfail(strict=True, reason="chainrule's jvp, jacfwd and hessian are computed in reverse mode (the "
                   "double-backward trick, jacrev), so a no_grad block inside f stops their tangents; PyTorch's "
                   "forward mode goes through no_grad (here jvp 6 against PyTorch's 12, jacfwd [0, 2, 4] against "
                   "[2, 4, 6], hessian 2I against 2I - 1/3)")
def test_a_stop_gradient_is_not_one_for_forward_mode():
    jvp, jacfwd, hessian = _same(stop_gradient_under_forward_mode)[1]
    np.testing.assert_allclose(jvp, 12.0)  # PyTorch's values: forward mode sees the target move with x
    np.testing.assert_allclose(jacfwd, [2.0, 4.0, 6.0])
    np.testing.assert_allclose(hessian, 2 * np.eye(3) - 1 / 3)


def maml_omniglot(m, weights, tasks, by="vmap"):
    """functorch's MAML-Omniglot example, small: a conv net with BatchNorm on batch statistics
    (``replace_all_batch_norm_modules_``), a ``torch.func.grad`` inner loop over (params, buffers) by
    ``functional_call``, the tasks of a meta-batch mapped by ``vmap`` (or looped, ``by='loop'``)."""
    torch, nn, F = m.torch, m.nn, m.F
    from functools import partial

    grad, vmap, functional_call = torch.func.grad, torch.func.vmap, torch.func.functional_call
    net = load(m, omniglot_net(m), weights)
    torch.func.replace_all_batch_norm_modules_(net)
    params = dict(net.named_parameters())
    meta_opt = m.optim.SGD(params.values(), lr=0.1)

    def loss_for_task(net, n_inner_iter, x_spt, y_spt, x_qry, y_qry):
        params = dict(net.named_parameters())
        buffers = dict(net.named_buffers())
        querysz = x_qry.size(0)

        def compute_loss(new_params, buffers, x, y):
            logits = functional_call(net, (new_params, buffers), x)
            loss = F.cross_entropy(logits, y)
            return loss

        new_params = params
        for _ in range(n_inner_iter):
            grads = grad(compute_loss)(new_params, buffers, x_spt, y_spt)
            new_params = {k: new_params[k] - g * 1e-1 for k, g, in grads.items()}
        qry_logits = functional_call(net, (new_params, buffers), x_qry)
        qry_loss = F.cross_entropy(qry_logits, y_qry)
        qry_acc = (qry_logits.argmax(dim=1) == y_qry).sum() / querysz
        return qry_loss, qry_acc

    history, meta_grads = [], []
    for x_spt, y_spt, x_qry, y_qry in tasks:
        x_spt, y_spt, x_qry, y_qry = (torch.from_numpy(a) for a in (x_spt, y_spt, x_qry, y_qry))
        meta_opt.zero_grad()
        compute_loss_for_task = partial(loss_for_task, net, 2)
        if by == "vmap":
            qry_losses, qry_accs = vmap(compute_loss_for_task)(x_spt, y_spt, x_qry, y_qry)
        else:
            pairs = [compute_loss_for_task(*task) for task in zip(x_spt, y_spt, x_qry, y_qry)]
            qry_losses, qry_accs = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        qry_losses.sum().backward()
        meta_grads.append({k: v.grad.clone() for k, v in params.items()})
        meta_opt.step()
        history.append((qry_losses.detach(), qry_accs))
    return history, meta_grads


def omniglot_net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4, momentum=1, affine=True), nn.ReLU(),
                         nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3)).double()


def test_maml_omniglot_with_batch_norm_vmapped_over_tasks():
    """The meta-gradient of the vmapped tasks is the sum of the tasks' own, as vmap's definition has it: on
    chainrule by vmap and by the loop, and on PyTorch by the loop (PyTorch's vmap gives other meta-gradients
    here, by about 2% of the conv weights': its batching of batch_norm's double backward; its first losses
    agree)."""
    rng = np.random.default_rng(17)
    labels = np.tile(np.repeat(np.arange(3), 2), (2, 3, 1))
    tasks = list(zip(rng.standard_normal((2, 3, 6, 1, 8, 8)), labels, rng.standard_normal((2, 3, 6, 1, 8, 8)), labels))
    weights = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in weights_of(omniglot_net).items()}
    by_vmap = run_both(maml_omniglot, weights, tasks, "vmap", compare=False)
    by_loop = run_both(maml_omniglot, weights, tasks, "loop", compare=False)
    from tests.pytorch_programs import assert_same

    assert_same(by_vmap[0], by_loop[0], rtol=1e-12, atol=1e-14)
    if by_loop[1] is not None:
        assert_same(by_vmap[0], by_loop[1], rtol=1e-9, atol=1e-11)
        assert_same(by_vmap[0][0][0], by_vmap[1][0][0], rtol=1e-9, atol=1e-11)  # the first losses, accuracies


def vmapped_noise(m, size, draws=1):
    torch = m.torch
    torch.manual_seed(0)
    x = torch.zeros(3, size, dtype=torch.float64)

    def noisy(r):
        r = r + torch.randn(size, dtype=torch.float64)
        return r + torch.rand(size, dtype=torch.float64) if draws == 2 else r

    return torch.func.vmap(noisy, randomness="different")(x)


def test_vmap_different_randomness_draws_pytorchs_numbers_for_one_small_draw():
    noise = _same(vmapped_noise, 4)
    assert len({tuple(row) for row in noise}) == 3


def batched_noise(m, size, draws=1):
    """What PyTorch's vmap draws for ``vmapped_noise``: each random op once, for the whole batch."""
    torch = m.torch
    torch.manual_seed(0)
    noise = torch.randn(3, size, dtype=torch.float64)
    return noise + torch.rand(3, size, dtype=torch.float64) if draws == 2 else noise


# (PyTorch draws the whole batch's numbers at once: vmap lends its examples rows of one batched draw, so two draws
# per example interleave as PyTorch's, and a randn of 16 numbers or more is Box-Muller over the whole block)
@pytest.mark.parametrize("size, draws", [(20, 1), (4, 2)])
def test_vmap_different_randomness_draws_pytorchs_numbers_for_more_draws(size, draws):
    batched = _same(batched_noise, size, draws)  # (the batch's draws are PyTorch's, outside vmap)
    np.testing.assert_allclose(vmapped_noise(OURS, size, draws).numpy(), batched, rtol=1e-12)


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
