# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Programs built on ``torch.func`` (``autograd.func``) and ``torch.autograd.functional`` as their authors write
them, run as tests/probe12_func_common.py says. Training through transforms: DP-SGD per-sample gradients
(``vmap(grad(loss), in_dims=(None, None, 0, 0))`` over ``functional_call``, per-sample clipping, Gaussian noise, the
update by hand); an ensemble by ``stack_module_state`` and vmap over ``functional_call`` on a 'meta' base model,
trained as one batch; MAML on sine regression with a ``torch.func.grad`` inner loop vmapped over tasks, and
functorch's MAML-Omniglot with BatchNorm vmapped over tasks; Jacobian regularisation trained through
``vmap(jacrev(model))``; a physics-informed network whose PDE residual uses ``vmap(jacrev)`` and ``vmap(hessian)``
with respect to its inputs."""

import copy
import math

import numpy as np

from tests.pytorch_programs import OURS, load, run_both, weights_of

from .probe12_func_common import _model, _same, _weights

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
