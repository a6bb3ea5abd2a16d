# ruff: noqa: B007, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Differentiable numerical solvers written as torchdiffeq, torchsde, torchcde, DeepXDE and papers' code write them,
run as tests/probe18_odes_common.py says. Flows: FFJORD (ConcatSquash layers, the exact trace by a loop of grads,
Hutchinson's with Rademacher noise from a seeded ``Generator``) and RNODE's kinetic and Frobenius regularisers, with
a gradient-norm penalty (double backward through dopri5); an invertible ResNet (``spectral_norm`` and its
parametrization, the power-series logdet by Hutchinson, a fixed-point inverse); an ensemble of neural ODEs by
``stack_module_state`` and ``vmap(grad_and_value(functional_call))``, flow Jacobians by
``jacrev``/``jacfwd``/``forward_ad`` and Liouville's formula."""

import math

import numpy as np
import pytest

from .probe18_odes_common import make_odeint, make_small_field
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# FFJORD: a continuous normalizing flow with ConcatSquash layers, the exact trace and Hutchinson's estimator
# ----------------------------------------------------------------------------------------------


def make_cnf(m):
    torch, nn = m.torch, m.nn

    class ConcatSquashLinear(nn.Module):
        def __init__(self, dim_in, dim_out):
            super(ConcatSquashLinear, self).__init__()
            self._layer = nn.Linear(dim_in, dim_out)
            self._hyper_bias = nn.Linear(1, dim_out, bias=False)
            self._hyper_gate = nn.Linear(1, dim_out)

        def forward(self, t, x):
            return self._layer(x) * torch.sigmoid(self._hyper_gate(t.view(1, 1))) \
                + self._hyper_bias(t.view(1, 1))

    class ODEnet(nn.Module):
        def __init__(self, hidden_dims=(16, 16), input_dim=2):
            super(ODEnet, self).__init__()
            dims = (input_dim,) + tuple(hidden_dims) + (input_dim,)
            self.layers = nn.ModuleList([ConcatSquashLinear(a, b) for a, b in zip(dims[:-1], dims[1:])])
            self.activation_fns = nn.ModuleList([nn.Softplus() for _ in hidden_dims])

        def forward(self, t, y):
            dx = y
            for l, layer in enumerate(self.layers):
                dx = layer(t, dx)
                if l < len(self.layers) - 1:
                    dx = self.activation_fns[l](dx)
            return dx

    return ODEnet().double()


def make_cnf_func(m, diffeq, exact):
    torch, nn = m.torch, m.nn

    def divergence_bf(dx, y):
        sum_diag = 0.
        for i in range(y.shape[1]):
            sum_diag += torch.autograd.grad(dx[:, i].sum(), y, create_graph=True)[0].contiguous()[:, i].contiguous()
        return sum_diag.contiguous()

    def divergence_approx(f, y, e=None):
        e_dzdx = torch.autograd.grad(f, y, e, create_graph=True)[0]
        e_dzdx_e = e_dzdx * e
        approx_tr_dzdx = e_dzdx_e.view(y.shape[0], -1).sum(dim=1)
        return approx_tr_dzdx

    def sample_rademacher_like(y, generator):
        return torch.randint(low=0, high=2, size=y.shape, generator=generator).to(y) * 2 - 1

    class ODEfunc(nn.Module):
        def __init__(self, diffeq):
            super(ODEfunc, self).__init__()
            self.diffeq = diffeq
            self._e = None
            self.register_buffer("_num_evals", torch.tensor(0.))

        def before_odeint(self, e=None):
            self._e = e
            self._num_evals.fill_(0)

        def forward(self, t, states):
            y = states[:, :-1]
            self._num_evals += 1
            batchsize = y.shape[0]
            with torch.set_grad_enabled(True):
                y.requires_grad_(True)
                t.requires_grad_(True)
                dy = self.diffeq(t, y)
                if exact:
                    divergence = divergence_bf(dy, y).view(batchsize, 1)
                else:
                    divergence = divergence_approx(dy, y, e=self._e).view(batchsize, 1)
            return torch.cat([dy, -divergence], dim=1)

    return ODEfunc(diffeq), sample_rademacher_like


def cnf_data(n=32):
    rng = np.random.default_rng(8)
    theta = rng.uniform(0, 2 * np.pi, n)
    r = 1.5 + 0.1 * rng.standard_normal(n)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], 1)


def ffjord(m, weights, exact, steps=2):
    torch, optim = m.torch, m.optim
    odeint = make_odeint(m)
    diffeq = load(m, make_cnf(m), weights)
    odefunc, sample_rademacher_like = make_cnf_func(m, diffeq, exact)
    optimizer = optim.Adam(odefunc.parameters(), lr=1e-2, weight_decay=1e-5)
    x = torch.tensor(cnf_data())
    g = torch.Generator().manual_seed(0)

    def standard_normal_logprob(z):
        logZ = -0.5 * math.log(2 * math.pi)
        return logZ - z.pow(2) / 2

    losses, grads = [], []
    for itr in range(steps):
        optimizer.zero_grad()
        zero = torch.zeros(x.shape[0], 1).to(x)
        odefunc.before_odeint(e=sample_rademacher_like(x, g))
        integration_times = torch.tensor([0.0, 0.5]).to(x)
        state_t = odeint(odefunc, torch.cat([x, zero], 1), integration_times, rtol=1e-5, atol=1e-7)
        z, delta_logp = state_t[-1][:, :-1], state_t[-1][:, -1:]
        logpz = standard_normal_logprob(z).view(z.shape[0], -1).sum(1, keepdim=True)
        logpx = logpz - delta_logp
        loss = -torch.mean(logpx)
        loss.backward()
        grads.append([p.grad.clone() for p in odefunc.parameters()])
        torch.nn.utils.clip_grad_norm_(odefunc.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "grads": grads, "z": z, "delta_logp": delta_logp, "nfe": odefunc._num_evals}


@pytest.mark.parametrize("exact", [True, False])
def test_ffjord(exact):
    weights = weights_of(make_cnf)
    ours, _ = run_both(ffjord, weights, exact, rtol=1e-8, atol=1e-10)
    assert np.isfinite(ours["losses"]).all() and ours["nfe"] > 6


def test_cnf_of_a_linear_field_by_hand():
    """Without torch: under dz/dt = A z the log-density changes by -trace(A) t, by either trace, and z(t) =
    expm(A t) z(0); Hutchinson's estimate of a linear field's trace is e^T A e, exact where A is diagonal (its
    gradient is e e^T, not the identity)."""
    torch = OURS.torch
    A = np.array([[-0.3, 0.0], [0.0, 0.7]])
    At = torch.tensor(A, requires_grad=True)
    for exact in (True, False):
        odefunc, sample = make_cnf_func(OURS, lambda t, y: y @ At.T, exact)
        x = torch.tensor(cnf_data(4))
        e = sample(x, torch.Generator().manual_seed(1))
        odefunc.before_odeint(e=e)
        state = make_odeint(OURS)(odefunc, torch.cat([x, torch.zeros(4, 1, dtype=x.dtype)], 1),
                                  torch.tensor([0.0, 0.5], dtype=torch.float64), rtol=1e-9, atol=1e-11)[-1]
        np.testing.assert_allclose(state[:, -1].detach().numpy(), -0.4 * 0.5 * np.ones(4), rtol=1e-9)
        np.testing.assert_allclose(state[:, :2].detach().numpy(), cnf_data(4) * np.exp(np.diag(A) * 0.5), rtol=1e-7)
        grad, = torch.autograd.grad(state[:, -1].sum(), At)
        # d(-tr(A) t)/dA summed over the batch, or -t e e^T summed, for Hutchinson's e^T A e
        expected = -4 * 0.5 * np.eye(2) if exact else -0.5 * e.numpy().T @ e.numpy()
        np.testing.assert_allclose(grad.numpy(), expected, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# An ensemble of neural ODEs through torch.func (stack_module_state, vmap of functional_call), forward-mode
# sensitivities (forward_ad dual numbers, jacfwd) and Liouville's formula for the flow's Jacobian
# ----------------------------------------------------------------------------------------------


def rk4_flow(func, y0, t0=0.0, t1=1.0, n=10):
    h = (t1 - t0) / n
    y = y0
    for i in range(n):
        k1 = func(y)
        k2 = func(y + h / 2 * k1)
        k3 = func(y + h / 2 * k2)
        k4 = func(y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def ode_ensemble(m, weights_list):
    torch = m.torch
    from_numpy = torch.from_numpy
    models = [load(m, make_small_field(m), w) for w in weights_list]
    params, buffers = torch.func.stack_module_state(models)
    base = make_small_field(m)  # (a meta skeleton is a known gap: tests/test_programs_probe12_func_*.py)
    y0 = torch.tensor(np.random.default_rng(4).standard_normal((5, 2)))
    target = torch.tensor(np.random.default_rng(5).standard_normal((5, 2)))

    def flow_of(params, buffers, y0):
        return rk4_flow(lambda y: torch.func.functional_call(base, (params, buffers), (y,)), y0)

    def loss_of(params, buffers, y0):
        return ((flow_of(params, buffers, y0) - target) ** 2).mean()

    ends = torch.func.vmap(flow_of, in_dims=(0, 0, None))(params, buffers, y0)
    grads, losses = torch.func.vmap(torch.func.grad_and_value(loss_of), in_dims=(0, 0, None))(params, buffers, y0)
    # the same gradient by autograd on the first model, as a check of vmap's
    first = models[0]
    loss0 = ((rk4_flow(first, y0) - target) ** 2).mean()
    direct = torch.autograd.grad(loss0, list(first.parameters()))

    # the flow's Jacobian at one point: jacrev, jacfwd, and forward_ad's dual numbers column by column
    point = y0[0]
    single = lambda y: rk4_flow(models[1], y)
    J_rev = torch.func.jacrev(single)(point)
    J_fwd = torch.func.jacfwd(single)(point)
    import_fwad = torch.autograd.forward_ad
    columns = []
    with import_fwad.dual_level():
        for e in torch.eye(2, dtype=torch.float64):
            dual = import_fwad.make_dual(point, e)
            columns.append(import_fwad.unpack_dual(single(dual)).tangent)
    J_dual = torch.stack(columns, dim=1)
    # Liouville: log det of the flow's Jacobian is the integral of the field's divergence along the path
    divergence = lambda y: torch.func.jacrev(models[1])(y).diagonal().sum()
    augmented = lambda z: torch.cat([models[1](z[:2]), divergence(z[:2]).reshape(1)])
    z_end = rk4_flow(augmented, torch.cat([point, torch.zeros(1, dtype=point.dtype)]), n=16)
    return {"ends": ends, "losses": losses, "grads": grads, "direct": direct, "J_rev": J_rev, "J_fwd": J_fwd,
            "J_dual": J_dual, "logdet": torch.linalg.slogdet(J_rev)[1], "liouville": z_end[2]}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_neural_ode_ensemble_by_torch_func():
    weights_list = [weights_of(make_small_field, seed=s) for s in range(3)]
    ours, _ = run_both(ode_ensemble, weights_list, rtol=1e-10, atol=1e-12)
    for name, g in zip(["0.weight", "0.bias", "2.weight", "2.bias"], ours["direct"]):
        np.testing.assert_allclose(ours["grads"][name][0], g, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ours["J_fwd"], ours["J_rev"], rtol=1e-10)
    np.testing.assert_allclose(ours["J_dual"], ours["J_rev"], rtol=1e-10)
    np.testing.assert_allclose(ours["logdet"], ours["liouville"], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# An invertible residual network (Behrmann et al. 2019): spectrally normalised blocks (nn.utils.spectral_norm
# and the parametrization), the log-determinant by its power series with Hutchinson's estimator (repeated vjps
# with create_graph) against the exact logdet, and the inverse by fixed-point iteration
# ----------------------------------------------------------------------------------------------


def make_iresnet(m, dim=2, hidden=16, n_blocks=2):
    torch, nn = m.torch, m.nn
    sn_old, sn_new = nn.utils.spectral_norm, nn.utils.parametrizations.spectral_norm

    class InvertibleBlock(nn.Module):
        def __init__(self, sn, coeff=0.9):
            super().__init__()
            self.coeff = coeff
            self.net = nn.Sequential(sn(nn.Linear(dim, hidden), n_power_iterations=3), nn.ELU(),
                                     sn(nn.Linear(hidden, hidden), n_power_iterations=3), nn.ELU(),
                                     sn(nn.Linear(hidden, dim), n_power_iterations=3))

        def g(self, x):
            return self.coeff * self.net(x)

        def forward(self, x, v, n_terms=8, exact=False):
            if exact:
                jac = torch.func.vmap(torch.func.jacrev(self.g))(x)
                logdet = torch.logdet(torch.eye(dim, dtype=x.dtype) + jac)
                return x + self.g(x), logdet
            with torch.enable_grad():
                x = x.requires_grad_(True) if not x.requires_grad else x
                gx = self.g(x)
                w = v
                logdet = 0
                for k in range(1, n_terms + 1):
                    w = torch.autograd.grad(gx, x, w, create_graph=True)[0]
                    logdet = logdet + (-1) ** (k + 1) / k * (w * v).sum(1)
            return x + gx, logdet

        def inverse(self, y, n_iter=60):
            x = y
            for _ in range(n_iter):
                x = y - self.g(x)
            return x

    class IResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([InvertibleBlock(sn_old if i % 2 == 0 else sn_new) for i in range(n_blocks)])

    return IResNet().double()


def iresnet(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    model = load(m, make_iresnet(m), weights)
    x = torch.tensor(cnf_data(24))
    g = torch.Generator().manual_seed(3)
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        z, logdet = x, 0
        for block in model.blocks:
            v = torch.randn(z.shape, generator=g, dtype=z.dtype)
            z, ld = block(z, v)
            logdet = logdet + ld
        logpz = -0.5 * (z ** 2).sum(1) - math.log(2 * math.pi)
        loss = -(logpz + logdet).mean()
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        z_exact, logdet_exact = x, 0
        for block in model.blocks:
            z_exact, ld = block(z_exact, None, exact=True)
            logdet_exact = logdet_exact + ld
        x_back = z_exact
        for block in reversed(model.blocks):
            x_back = block.inverse(x_back)
    # Hutchinson's power series averaged over 200 probes, in eval mode (the spectral norms frozen)
    z, hutchinson = x, 0
    for block in model.blocks:
        vs = torch.randn((200 * z.shape[0],) + z.shape[1:], generator=g, dtype=z.dtype)
        lds = block(z.detach().repeat(200, 1), vs, n_terms=10)[1].view(200, -1)
        z = block(z.detach(), vs[:z.shape[0]])[0]
        hutchinson = hutchinson + lds.mean(0)
    buffers = {k: v for k, v in model.state_dict().items() if k.endswith(("_u", "_v"))}
    return {"losses": losses, "grads": grads, "logdet_exact": logdet_exact, "hutchinson": hutchinson,
            "x_back": x_back, "buffers": buffers}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_invertible_resnet():
    weights = weights_of(make_iresnet)
    ours, _ = run_both(iresnet, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["x_back"], cnf_data(24), atol=1e-10)  # the fixed point inverts the flow
    np.testing.assert_allclose(ours["hutchinson"], ours["logdet_exact"], atol=0.1)


# ----------------------------------------------------------------------------------------------
# RNODE (Finlay et al. 2020): FFJORD regularised by the kinetic energy |f|^2 and the Jacobian's Frobenius norm
# |e^T J|^2 integrated in the augmented state; then a gradient-norm penalty, a double backward through dopri5
# ----------------------------------------------------------------------------------------------


def rnode(m, weights, steps=1, lam_k=0.01, lam_j=0.01):
    torch, optim = m.torch, m.optim
    odeint = make_odeint(m)
    diffeq = load(m, make_cnf(m), weights)
    x = torch.tensor(cnf_data(16))
    g = torch.Generator().manual_seed(5)
    optimizer = optim.Adam(diffeq.parameters(), lr=1e-2)

    class RegularizedODEfunc(torch.nn.Module):
        def __init__(self, diffeq):
            super().__init__()
            self.diffeq = diffeq
            self.e = None

        def forward(self, t, state):
            y = state[:, :2]
            with torch.enable_grad():
                y = y.requires_grad_(True) if not y.requires_grad else y
                dy = self.diffeq(t, y)
                e_dzdx = torch.autograd.grad(dy, y, self.e, create_graph=True)[0]
            divergence = (e_dzdx * self.e).sum(1, keepdim=True)
            kinetic = (dy ** 2).sum(1, keepdim=True)
            frobenius = (e_dzdx ** 2).sum(1, keepdim=True)
            return torch.cat([dy, -divergence, kinetic, frobenius], dim=1)

    func = RegularizedODEfunc(diffeq)
    losses, grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        func.e = torch.randint(0, 2, x.shape, generator=g).to(x) * 2 - 1
        state0 = torch.cat([x, torch.zeros(x.shape[0], 3, dtype=x.dtype)], 1)
        state = odeint(func, state0, torch.tensor([0.0, 0.5], dtype=x.dtype), rtol=1e-5, atol=1e-7)[-1]
        z, delta_logp, kinetic, frobenius = state[:, :2], state[:, 2], state[:, 3], state[:, 4]
        logpx = -0.5 * (z ** 2).sum(1) - math.log(2 * math.pi) - delta_logp
        loss = -logpx.mean() + lam_k * kinetic.mean() + lam_j * frobenius.mean()
        loss.backward()
        grads.append([p.grad.clone() for p in diffeq.parameters()])
        optimizer.step()
        losses.append(loss.item())
    # a gradient-norm penalty on the flow's end points: double backward through the adaptive solver
    y0 = x[:4].clone().requires_grad_(True)
    ends = odeint(lambda t, y: diffeq(t, y), y0, torch.tensor([0.0, 0.5], dtype=x.dtype), rtol=1e-8, atol=1e-10)[-1]
    d_y0, = torch.autograd.grad((ends ** 2).sum(), y0, create_graph=True)
    penalty = (d_y0 ** 2).sum()
    d_penalty = torch.autograd.grad(penalty, list(diffeq.parameters()), allow_unused=True, materialize_grads=True)
    return {"losses": losses, "grads": grads, "penalty": penalty, "d_penalty": d_penalty}


def test_rnode_regularisers_and_a_double_backward():
    weights = weights_of(make_cnf)
    ours, _ = run_both(rnode, weights, rtol=1e-8, atol=1e-10)
    assert np.isfinite(ours["losses"]).all() and ours["penalty"] > 0
