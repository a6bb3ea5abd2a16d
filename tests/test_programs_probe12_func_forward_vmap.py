# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Programs built on ``torch.func`` (``autograd.func``) and ``torch.autograd.functional`` as their authors write
them, run as tests/probe12_func_common.py says. Forward mode and vmap's options: vmap's randomness modes,
``chunk_size``, nested in_dims/out_dims, and its 'different' randomness against PyTorch's draws;
``torch.func.linearize``; ``torch.autograd.functional`` with ``create_graph`` in training; forward-mode AD with dual
numbers for a network's input Jacobian and for directional derivatives with respect to its parameters; reverse over
forward (a ||J v||² penalty trained through the tangent of a CNN and of a residual block, a Hessian row by row);
Newton steps for nuclear/spectral-norm matrix completion (second derivatives through singular values); a
stop-gradient under reverse and forward transforms."""

import numpy as np
import pytest

from tests.pytorch_programs import OURS, load, run_both, weights_of

from .probe12_func_common import _model, _same, _weights

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
