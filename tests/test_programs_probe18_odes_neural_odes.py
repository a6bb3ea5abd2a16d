# ruff: noqa: B007, E731, UP008  (the programs are kept as their authors wrote them)
"""Differentiable numerical solvers written as torchdiffeq, torchsde, torchcde, DeepXDE and papers' code write them,
run as tests/probe18_odes_common.py says. ODE solvers: dopri5 on an exponential; a neural ODE differentiated both
through the solver and by torchdiffeq's adjoint (an ``autograd.Function`` integrating the augmented state [y, a,
a_theta] backwards with ``autograd.grad`` of f.a); torchdiffeq's odenet_mnist (ConcatConv2d, GroupNorm, dopri5); a
skew-symmetric neural ODE by ``register_parametrization`` (``right_inverse``, ``cached``); RK4 steps under
``torch.utils.checkpoint`` (reentrant and not) as ANODE checkpoints them. Strict xfail: forward-mode tangents of
``clamp``/``fmax`` at ties."""

import numpy as np
import pytest

from .probe18_odes_common import make_odeint, make_small_field
from .pytorch_programs import OURS, load, plain, pytorch, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# torchdiffeq's dopri5: adaptive Dormand-Prince with error control, step-size adaptation and dense output
# ----------------------------------------------------------------------------------------------


def dopri5_exponential(m):
    """y' = -k y (k = 1.3), y(0) = [1, 2], by dopri5 to 1e-8: e^{-kt} y0 at the output times, and d y(T)/dk."""
    torch = m.torch
    odeint = make_odeint(m)
    k = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    stats = {}
    ys = odeint(lambda t, y: -k * y, y0, t, rtol=1e-8, atol=1e-10, stats=stats)
    dk, dy0 = torch.autograd.grad(ys[-1].sum(), (k, y0))
    return ys, dk, dy0, stats


def test_dopri5_on_an_exponential():
    ours, _ = run_both(dopri5_exponential, rtol=1e-10, atol=1e-12)
    ys, dk, dy0, stats = ours
    t = np.linspace(0, 2, 5)
    np.testing.assert_allclose(ys, np.exp(-1.3 * t)[:, None] * [1, 2], rtol=1e-7)
    np.testing.assert_allclose(dk, -2 * np.exp(-2.6) * 3, rtol=1e-6)
    np.testing.assert_allclose(dy0, [np.exp(-2.6)] * 2, rtol=1e-7)
    assert stats["accepted"] > 5


# ----------------------------------------------------------------------------------------------
# A neural ODE through dopri5, differentiated by backprop through the solver and by torchdiffeq's adjoint
# ----------------------------------------------------------------------------------------------


def make_odefunc(m):
    nn = m.nn

    class ODEFunc(nn.Module):
        def __init__(self):
            super(ODEFunc, self).__init__()
            self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
            self.nfe = 0

        def forward(self, t, y):
            self.nfe += 1
            t_vec = t.expand(y.shape[0], 1) if y.dim() == 2 else t.reshape(1)
            return self.net(torch_cat(m, y, t_vec))

    return ODEFunc().double()


def torch_cat(m, y, t_vec):
    return m.torch.cat([y, t_vec.to(y.dtype)], dim=-1)


def make_odeint_adjoint(m):
    torch = m.torch
    odeint = make_odeint(m)

    class OdeintAdjointMethod(torch.autograd.Function):
        @staticmethod
        def forward(ctx, shapes, func, y0, t, rtol, atol, *adjoint_params):
            ctx.shapes = shapes
            ctx.func = func
            ctx.rtol, ctx.atol = rtol, atol
            with torch.no_grad():
                ans = odeint(func, y0, t, rtol=rtol, atol=atol)
            ctx.save_for_backward(t, ans, *adjoint_params)
            return ans

        @staticmethod
        def backward(ctx, *grad_y):
            with torch.no_grad():
                func = ctx.func
                t, y, *adjoint_params = ctx.saved_tensors
                adjoint_params = tuple(adjoint_params)
                grad_y = grad_y[0]
                numels = [p.numel() for p in adjoint_params]

                def augmented_dynamics(t, y_aug):
                    # the augmented state is flat: [y, adj_y, adj_params...]; time runs backwards
                    n = y.shape[1:].numel()
                    y_ = y_aug[:n].reshape(y.shape[1:])
                    adj_y = y_aug[n:2 * n].reshape(y.shape[1:])
                    with torch.enable_grad():
                        t_ = t.detach().requires_grad_(True)
                        y_ = y_.detach().requires_grad_(True)
                        func_eval = func(t_, y_)
                        vjp_t, vjp_y, *vjp_params = torch.autograd.grad(
                            func_eval, (t_, y_) + adjoint_params, -adj_y, allow_unused=True, retain_graph=True)
                    vjp_params = [torch.zeros_like(p) if g is None else g for p, g in zip(adjoint_params, vjp_params)]
                    return torch.cat([func_eval.reshape(-1), vjp_y.reshape(-1)] + [g.reshape(-1) for g in vjp_params])

                time_vjps = torch.empty(len(t), dtype=t.dtype)
                aug_state = [torch.zeros((), dtype=y.dtype), y[-1], grad_y[-1]]
                aug_state.extend([torch.zeros_like(param) for param in adjoint_params])
                adj_params = torch.zeros(sum(numels), dtype=y.dtype)
                adj_y = grad_y[-1]
                for i in range(len(t) - 1, 0, -1):
                    func_eval = func(t[i], y[i])
                    dLd_cur_t = func_eval.reshape(-1).dot(grad_y[i].reshape(-1))
                    time_vjps[i] = dLd_cur_t
                    state = torch.cat([y[i].reshape(-1), adj_y.reshape(-1), adj_params])
                    # integrate from t[i] down to t[i-1]: in reversed time s = -t
                    reverse = lambda s, z: -augmented_dynamics(-s, z)
                    state = odeint(reverse, state, torch.stack([-t[i], -t[i - 1]]), rtol=ctx.rtol, atol=ctx.atol)[1]
                    n = y.shape[1:].numel()
                    adj_y = state[n:2 * n].reshape(y.shape[1:]) + grad_y[i - 1]
                    adj_params = state[2 * n:]
                time_vjps[0] = -func(t[0], y[0]).reshape(-1).dot(adj_y.reshape(-1))
                time_vjps[-1] = -time_vjps[-1]
                split = list(torch.split(adj_params, numels))
                grads = [g.reshape(p.shape) for g, p in zip(split, adjoint_params)]
            return (None, None, adj_y, time_vjps, None, None, *grads)

    def odeint_adjoint(func, y0, t, rtol=1e-7, atol=1e-9):
        adjoint_params = tuple(p for p in func.parameters() if p.requires_grad)
        return OdeintAdjointMethod.apply(None, func, y0, t, rtol, atol, *adjoint_params)

    return odeint_adjoint


def neural_ode_dopri5(m, weights, adjoint, steps=3):
    torch, optim = m.torch, m.optim
    odeint = make_odeint_adjoint(m) if adjoint else make_odeint(m)
    func = load(m, make_odefunc(m), weights)
    rng = np.random.default_rng(5)
    y0 = torch.tensor(rng.standard_normal(2))
    t = torch.linspace(0., 1.5, 6, dtype=torch.float64)
    true_y = torch.tensor(np.stack([np.cos(2 * t.numpy()), -np.sin(2 * t.numpy())], 1)) * y0.norm()
    optimizer = optim.Adam(func.parameters(), lr=0.02)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        y0_ = y0.clone().requires_grad_(True)
        pred_y = odeint(func, y0_, t, rtol=1e-9, atol=1e-11)
        loss = torch.mean((pred_y - true_y) ** 2)
        loss.backward()
        grads.append([p.grad.clone() for p in func.parameters()] + [y0_.grad.clone()])
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "nfe": func.nfe}


@pytest.mark.parametrize("adjoint", [False, True])
def test_neural_ode_dopri5(adjoint):
    weights = weights_of(make_odefunc)
    ours, _ = run_both(neural_ode_dopri5, weights, adjoint, rtol=1e-9, atol=1e-11)
    if adjoint:  # the adjoint's gradients are the backprop's to the solver's tolerance
        direct, _ = run_both(neural_ode_dopri5, weights, False, compare=False)
        np.testing.assert_allclose(ours["losses"], direct["losses"], rtol=1e-7)
        for a, b in zip(ours["grads"][0], direct["grads"][0]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# torchdiffeq's odenet_mnist: a convolutional ODE block (ConcatConv2d, GroupNorm) solved by dopri5 at
# tolerance 1e-3, counting function evaluations forward and backward, trained with SGD and a cross-entropy loss
# ----------------------------------------------------------------------------------------------


def make_odenet(m, dim=8):
    torch, nn = m.torch, m.nn

    def norm(dim):
        return nn.GroupNorm(min(4, dim), dim)

    class ConcatConv2d(nn.Module):
        def __init__(self, dim_in, dim_out, ksize=3, stride=1, padding=0, dilation=1, groups=1, bias=True,
                     transpose=False):
            super(ConcatConv2d, self).__init__()
            module = nn.ConvTranspose2d if transpose else nn.Conv2d
            self._layer = module(dim_in + 1, dim_out, kernel_size=ksize, stride=stride, padding=padding,
                                 dilation=dilation, groups=groups, bias=bias)

        def forward(self, t, x):
            tt = torch.ones_like(x[:, :1, :, :]) * t
            ttx = torch.cat([tt, x], 1)
            return self._layer(ttx)

    class ODEfunc(nn.Module):
        def __init__(self, dim):
            super(ODEfunc, self).__init__()
            self.norm1 = norm(dim)
            self.relu = nn.ReLU(inplace=True)
            self.conv1 = ConcatConv2d(dim, dim, 3, 1, 1)
            self.norm2 = norm(dim)
            self.conv2 = ConcatConv2d(dim, dim, 3, 1, 1)
            self.norm3 = norm(dim)
            self.nfe = 0

        def forward(self, t, x):
            self.nfe += 1
            out = self.norm1(x)
            out = self.relu(out)
            out = self.conv1(t, out)
            out = self.norm2(out)
            out = self.relu(out)
            out = self.conv2(t, out)
            out = self.norm3(out)
            return out

    class ODEBlock(nn.Module):
        def __init__(self, odefunc):
            super(ODEBlock, self).__init__()
            self.odefunc = odefunc
            self.integration_time = torch.tensor([0, 1]).float()

        def forward(self, x):
            self.integration_time = self.integration_time.type_as(x)
            out = make_odeint(m)(self.odefunc, x, self.integration_time, rtol=1e-3, atol=1e-3)
            return out[1]

        @property
        def nfe(self):
            return self.odefunc.nfe

        @nfe.setter
        def nfe(self, value):
            self.odefunc.nfe = value

    class Flatten(nn.Module):
        def forward(self, x):
            shape = torch.prod(torch.tensor(x.shape[1:])).item()
            return x.view(-1, shape)

    downsampling_layers = [nn.Conv2d(1, dim, 3, 1), norm(dim), nn.ReLU(inplace=True),
                           nn.Conv2d(dim, dim, 4, 2, 1)]
    feature_layers = [ODEBlock(ODEfunc(dim))]
    fc_layers = [norm(dim), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)), Flatten(), nn.Linear(dim, 4)]
    return nn.Sequential(*downsampling_layers, *feature_layers, *fc_layers).double()


def odenet(m, weights, steps=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    from .pytorch_programs import quickstart_data
    images, labels = quickstart_data(n=12, side=10)
    x, y = torch.tensor(images.astype(np.float64)), torch.tensor(labels)
    model = load(m, make_odenet(m), weights)
    feature_layers = [model[4]]
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses, grads, nfe_f, nfe_b = [], [], [], []
    for itr in range(steps):
        optimizer.zero_grad()
        logits = model(x)
        loss = criterion(logits, y)
        nfe_forward = feature_layers[0].nfe
        feature_layers[0].nfe = 0
        loss.backward()
        optimizer.step()
        nfe_backward = feature_layers[0].nfe
        feature_layers[0].nfe = 0
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in model.parameters()])
        nfe_f.append(nfe_forward)
        nfe_b.append(nfe_backward)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean()
    return {"losses": losses, "grads": grads, "nfe_f": nfe_f, "nfe_b": nfe_b, "accuracy": accuracy}


def test_odenet_classifier():
    weights = weights_of(make_odenet)
    ours, _ = run_both(odenet, weights, rtol=1e-8, atol=1e-10)
    assert ours["nfe_f"][0] >= 8 and ours["nfe_b"] == [0, 0]  # backprop through the solver: no new evaluations


# ----------------------------------------------------------------------------------------------
# Forward-mode sensitivities through a positivity clamp at a tie (a state already on its bound)
# ----------------------------------------------------------------------------------------------


def clamp_tie_tangents():
    """PyTorch's forward-mode rule for clamp with a tensor min alone is where(x > min, x_t, min_t): at a tie the
    tangent is the bound's (its backward gives the gradient to x there); with a tensor max alone, where(x < max,
    x_t, max_t); fmax's tangent at a tie is other's."""
    x = np.array([0.0, 0.5, 1.0])
    bound = np.array([0.0, 0.0, 1.0])
    x_t = np.array([1.0, 2.0, 3.0])
    bound_t = np.array([-1.0, -2.0, -3.0])
    return x, bound, x_t, bound_t, np.array([-1.0, 2.0, -3.0])


def clamp_tie_program(m):
    torch = m.torch
    x, bound, x_t, bound_t, _ = clamp_tie_tangents()
    args = (torch.tensor(x), torch.tensor(bound))
    tangents = (torch.tensor(x_t), torch.tensor(bound_t))
    return [torch.func.jvp(f, args, tangents)[1] for f in (lambda u, lo: torch.clamp(u, min=lo),
                                                           lambda u, hi: torch.clamp(u, max=hi),
                                                           torch.fmax)]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_clamp_tie_tangents_are_pytorchs():
    torch_modules = pytorch()
    if torch_modules is None:
        pytest.skip("PyTorch is not installed")
    x, bound, x_t, bound_t, expected = clamp_tie_tangents()
    low, high, fmax = plain(clamp_tie_program(torch_modules))
    np.testing.assert_array_equal(low, expected)
    np.testing.assert_array_equal(high, bound_t)  # x < max nowhere: every tangent the bound's
    np.testing.assert_array_equal(fmax, expected)


@pytest.mark.xfail(strict=True, reason="torch.func.jvp here is the double-backward trick over the whole function "
                   "(autograd/func/transforms.py), so each op's tangent is its backward read forward: at a tie x's, "
                   "where PyTorch's forward rules for clamp with one tensor bound and for fmax take the bound's "
                   "(other's). forward_ad's dual levels use those rules (Primitive.jvp; tests/test_forward_ad.py)")
def test_clamp_tie_tangents_as_pytorch():
    x, bound, x_t, bound_t, expected = clamp_tie_tangents()
    low, high, fmax = plain(clamp_tie_program(OURS))
    np.testing.assert_array_equal(low, expected)
    np.testing.assert_array_equal(fmax, expected)


# ----------------------------------------------------------------------------------------------
# A stable neural ODE with a skew-symmetric recurrent weight (AntisymmetricRNN / "stable architectures" papers):
# nn.utils.parametrize.register_parametrization with a right_inverse, parametrize.cached() around an Euler
# rollout, and the parametrized module's state_dict
# ----------------------------------------------------------------------------------------------


def make_skew_ode(m, hidden=6):
    torch, nn = m.torch, m.nn
    parametrize = nn.utils.parametrize

    class Skew(nn.Module):
        def __init__(self, gamma=0.05):
            super().__init__()
            self.gamma = gamma

        def forward(self, X):
            A = X.triu(1)
            return A - A.T - self.gamma * torch.eye(X.shape[0], dtype=X.dtype)

        def right_inverse(self, W):
            return (W + self.gamma * torch.eye(W.shape[0], dtype=W.dtype)).triu(1)

    class SkewODE(nn.Module):
        def __init__(self):
            super().__init__()
            self.recurrent = nn.Linear(hidden, hidden, bias=False)
            self.inp = nn.Linear(2, hidden)
            self.out = nn.Linear(hidden, 1)
            parametrize.register_parametrization(self.recurrent, "weight", Skew())

        def forward(self, xs, h=0.1):
            z = torch.zeros(xs.shape[0], hidden, dtype=xs.dtype)
            for t in range(xs.shape[1]):
                z = z + h * torch.tanh(self.recurrent(z) + self.inp(xs[:, t]))
            return self.out(z).squeeze(-1)

    return SkewODE().double()


def skew_ode(m, weights, steps=3):
    torch, nn, optim = m.torch, m.nn, m.optim
    parametrize = nn.utils.parametrize
    model = load(m, make_skew_ode(m), weights)
    rng = np.random.default_rng(14)
    xs = torch.tensor(rng.standard_normal((8, 12, 2)))
    y = torch.tensor(rng.standard_normal(8))
    optimizer = optim.RMSprop(model.parameters(), lr=1e-2)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        with parametrize.cached():
            loss = ((model(xs) - y) ** 2).mean()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
        losses.append(loss.item())
    W = model.recurrent.weight
    eigenvalues = torch.linalg.eigvals(W.detach())
    # assigning a weight goes through right_inverse
    with torch.no_grad():
        model.recurrent.weight = W.detach() * 2 + 0.1 * torch.eye(W.shape[0], dtype=W.dtype)
    return {"losses": losses, "grads": grads, "W": W, "real_parts": eigenvalues.real,
            "reassigned": model.recurrent.weight, "keys": sorted(model.state_dict().keys()),
            "parametrized": parametrize.is_parametrized(model.recurrent, "weight")}


def test_skew_symmetric_neural_ode():
    weights = weights_of(make_skew_ode)
    ours, _ = run_both(skew_ode, weights, rtol=1e-10, atol=1e-12)
    W = ours["W"]
    np.testing.assert_allclose(W + W.T, -0.1 * np.eye(6), atol=1e-14)
    np.testing.assert_allclose(ours["real_parts"], -0.05, atol=1e-12)  # A - A^T - gamma I: Re(lambda) = -gamma
    assert ours["parametrized"] and "recurrent.parametrizations.weight.original" in ours["keys"]


# ----------------------------------------------------------------------------------------------
# ANODE-style checkpointed backprop through a solver: each RK4 step under torch.utils.checkpoint (reentrant
# and not), the gradients those of plain backprop, and the field called again in the backward
# ----------------------------------------------------------------------------------------------


def checkpointed_rk4(m, weights, use_reentrant, n_steps=8, h=0.1):
    torch = m.torch
    checkpoint = torch.utils.checkpoint.checkpoint
    func = load(m, make_small_field(m), weights)
    calls = [0]

    def field(y):
        calls[0] += 1
        return func(y)

    def rk4_step(y):
        k1 = field(y)
        k2 = field(y + h / 2 * k1)
        k3 = field(y + h / 2 * k2)
        k4 = field(y + h * k3)
        return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    rng = np.random.default_rng(19)
    y0 = torch.tensor(rng.standard_normal((5, 2)), requires_grad=True)
    target = torch.tensor(rng.standard_normal((5, 2)))
    y = y0
    for n in range(n_steps):
        y = checkpoint(rk4_step, y, use_reentrant=use_reentrant) if use_reentrant is not None else rk4_step(y)
    forward_calls = calls[0]
    loss = ((y - target) ** 2).sum()
    loss.backward()
    return {"loss": loss, "grads": [y0.grad] + [p.grad for p in func.parameters()],
            "calls": [forward_calls, calls[0]]}


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpointed_rk4(use_reentrant):
    weights = weights_of(make_small_field)
    ours, _ = run_both(checkpointed_rk4, weights, use_reentrant, rtol=1e-12, atol=1e-14)
    plain_run = checkpointed_rk4(OURS, weights, None)
    np.testing.assert_allclose(plain(ours["loss"]), plain(plain_run["loss"]), rtol=1e-14)
    for a, b in zip(ours["grads"], plain(plain_run["grads"])):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert ours["calls"] == [32, 64]  # each step's four evaluations again in the backward
