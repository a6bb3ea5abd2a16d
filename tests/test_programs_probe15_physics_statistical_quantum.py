# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Physics programs for scientific machine learning (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights, mostly in float64, comparing values, gradients and training trajectories, and checked
by hand (closed forms, NumPy, finite differences) where PyTorch is missing. Statistical and quantum physics:
variational Monte Carlo (Laplacian of log psi by ``vmap(jacrev(jacrev))``); heat capacities as the second derivative
of ln Z with ``logcumsumexp`` over levels, trained through a third derivative; a phi^4 lattice normalizing flow
(circular convolutions, ``roll``); two-qubit tomography with a complex leaf under L-BFGS."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Variational Monte Carlo for the 2-D harmonic oscillator: the local energy by vmap(jacrev(jacrev))
# ----------------------------------------------------------------------------------------------


def make_wavefunction(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 10), nn.Tanh(), nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, 1)).double()


def vmc(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    from_func = torch.func
    model = load(m, make_wavefunction(m), weights)
    rng = np.random.default_rng(13)
    walkers = torch.tensor(rng.standard_normal((64, 2)))

    def log_psi(params, r):
        # a Gaussian envelope times a learnt correction
        return from_func.functional_call(model, params, (r,)).squeeze(-1) - 0.4 * (r ** 2).sum(-1)

    def local_energy(params, r):
        g = from_func.jacrev(log_psi, argnums=1)(params, r)
        H = from_func.jacrev(from_func.jacrev(log_psi, argnums=1), argnums=1)(params, r)
        kinetic = -0.5 * (torch.trace(H) + (g ** 2).sum())
        return kinetic + 0.5 * (r ** 2).sum()

    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    optimizer = optim.Adam(params.values(), lr=1e-2)
    history = []
    for step in range(steps):
        e_loc = from_func.vmap(local_energy, in_dims=(None, 0))(params, walkers)
        lp = from_func.vmap(log_psi, in_dims=(None, 0))(params, walkers)
        e_mean = e_loc.mean()
        # the usual VMC gradient estimator: 2 <(E_L - <E_L>) d log psi>
        loss = 2 * ((e_loc - e_mean).detach() * lp).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((e_mean.item(), e_loc.var().item()))
    # the same Laplacian by autograd.grad loops over the batch
    r = walkers[:8].clone().requires_grad_(True)
    lp = log_psi(params, r)
    g = torch.autograd.grad(lp.sum(), r, create_graph=True)[0]
    lap = sum(torch.autograd.grad(g[:, i].sum(), r, retain_graph=True)[0][:, i] for i in range(2))
    by_loop = -0.5 * (lap + (g ** 2).sum(-1)) + 0.5 * (r ** 2).sum(-1)
    by_vmap = from_func.vmap(local_energy, in_dims=(None, 0))(params, walkers[:8])
    # the exact ground state psi = exp(-|r|^2 / 2): local energy 1 everywhere
    exact = {k: torch.zeros_like(v) for k, v in params.items()}
    exact_params = dict(exact)
    e_exact = from_func.vmap(lambda r: local_energy(exact_params, r) - 0.1 * (r ** 2).sum() * 0)(walkers[:8])
    return {"history": history, "by_loop": by_loop.detach(), "by_vmap": by_vmap.detach(), "e_exact": e_exact,
            "grads": [p.grad for p in params.values()]}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_variational_monte_carlo():
    weights = weights_of(make_wavefunction)
    ours, _ = run_both(vmc, weights, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["by_vmap"], ours["by_loop"], rtol=1e-10, atol=1e-12)
    # psi = exp(-0.4 |r|^2) (zero network): E_L = 0.8 + 0.5 * 0.36 |r|^2 ... checked in closed form
    r = np.random.default_rng(13).standard_normal((64, 2))[:8]
    np.testing.assert_allclose(ours["e_exact"], 0.8 + 0.5 * (1 - 0.64) * (r ** 2).sum(-1), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Heat capacities from a partition function: the second derivative of ln Z(beta) by autograd, with the
# truncation of the sum over levels followed by logcumsumexp
# ----------------------------------------------------------------------------------------------


def heat_capacity(m, n_levels=40, steps=5, anharmonicity=0.1, third_derivatives=True):
    torch, optim = m.torch, m.optim
    beta = torch.linspace(0.5, 3.0, 6, dtype=torch.float64).requires_grad_(True)
    n = torch.arange(n_levels, dtype=torch.float64)

    def thermodynamics(log_omega, anharmonicity):
        omega = log_omega.exp()
        levels = omega * (n + 0.5) - anharmonicity * (n + 0.5) ** 2 / n_levels
        log_Z = torch.logcumsumexp(-beta[:, None] * levels, dim=1)  # ln Z with the first 1, 2, ... levels
        (dlogZ,) = torch.autograd.grad(log_Z[:, -1].sum(), beta, create_graph=True)
        U_all = []
        for k in (4, 12, n_levels - 1):
            (U_k,) = torch.autograd.grad(-log_Z[:, k].sum(), beta, create_graph=True)
            U_all.append(U_k)
        (d2logZ,) = torch.autograd.grad(dlogZ.sum(), beta, create_graph=True)
        return log_Z, -dlogZ, beta ** 2 * d2logZ, torch.stack(U_all)

    log_omega = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    anharmonicity = torch.tensor(anharmonicity, dtype=torch.float64, requires_grad=True)
    log_Z, U, C, U_trunc = thermodynamics(log_omega, anharmonicity)
    # learn the level spacing from a measured heat capacity curve (that of omega = 1.5)
    b = beta.detach()
    target = (1.5 * b / 2) ** 2 / torch.sinh(1.5 * b / 2) ** 2
    optimizer = optim.Adam([log_omega], lr=0.1)
    history = []
    for step in range(steps):
        _, _, C_fit, _ = thermodynamics(log_omega, torch.zeros((), dtype=torch.float64))
        loss = ((C_fit - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        history.append((loss.item(), log_omega.item(), log_omega.grad.item()))
        optimizer.step()
    out = {"log_Z": log_Z, "U": U, "C": C, "U_trunc": U_trunc, "history": history, "beta_grad": beta.grad}
    if third_derivatives:
        out["anharmonicity_grad"] = torch.autograd.grad(C.sum(), anharmonicity, retain_graph=True)[0]
    return out


def harmonic_heat_capacity_loss(log_omega):
    b = np.linspace(0.5, 3.0, 6)
    levels = np.exp(log_omega) * (np.arange(40) + 0.5)
    p = np.exp(-b[:, None] * levels)
    p /= p.sum(1, keepdims=True)
    C = b ** 2 * ((p * levels ** 2).sum(1) - (p * levels).sum(1) ** 2)
    return ((C - (1.5 * b / 2) ** 2 / np.sinh(1.5 * b / 2) ** 2) ** 2).mean()


def test_heat_capacity_from_the_partition_function():
    ours, _ = run_both(heat_capacity, steps=0, third_derivatives=False, rtol=1e-9, atol=1e-11)
    assert ours["beta_grad"] is None  # beta was differentiated with autograd.grad only
    # training the level spacing through C differentiates logcumsumexp three times, where PyTorch's third
    # derivative is NaN (every step of its training comes out NaN): checked by hand instead
    trained = heat_capacity(OURS)
    history = trained["history"]
    losses = [loss for loss, _, _ in history]
    assert losses[-1] < losses[0]
    h = 1e-5
    for loss, log_omega, grad in history[:3]:
        assert loss == pytest.approx(harmonic_heat_capacity_loss(log_omega), rel=1e-10)
        fd = (harmonic_heat_capacity_loss(log_omega + h) - harmonic_heat_capacity_loss(log_omega - h)) / (2 * h)
        assert grad == pytest.approx(fd, rel=1e-6)
    # ln Z, U = <E> and C = beta^2 Var(E) over the levels, by NumPy
    b = np.linspace(0.5, 3.0, 6)[:, None]
    n = np.arange(40) + 0.5
    levels = n - 0.1 * n ** 2 / 40
    p = np.exp(-b * levels)
    np.testing.assert_allclose(ours["log_Z"], np.log(np.cumsum(p, 1)), rtol=1e-12)
    p /= p.sum(1, keepdims=True)
    mean = (p * levels).sum(1)
    np.testing.assert_allclose(ours["U"], mean, rtol=1e-10)
    np.testing.assert_allclose(ours["C"], b[:, 0] ** 2 * ((p * levels ** 2).sum(1) - mean ** 2), rtol=1e-9)
    a, h = 0.1, 1e-5
    C_of = lambda a: (b[:, 0] ** 2 * (lambda l, w: (w * l ** 2).sum(1) / w.sum(1) - ((w * l).sum(1) / w.sum(1)) ** 2)(
        n - a * n ** 2 / 40, np.exp(-b * (n - a * n ** 2 / 40)))).sum()
    assert trained["anharmonicity_grad"] == pytest.approx((C_of(a + h) - C_of(a - h)) / (2 * h), rel=1e-6)
    q = np.exp(-b * levels[:5])
    np.testing.assert_allclose(ours["U_trunc"][0], (q * levels[:5]).sum(1) / q.sum(1), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# A normalizing flow for phi^4 lattice field theory (Albergo, Kanwar & Shanahan's tutorial): checkerboard
# affine couplings over circular-padded convolutions, the action by torch.roll, trained by reverse KL
# ----------------------------------------------------------------------------------------------


def lattice_flow(m, n_era=4, batch_size=16, L=4):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(0)

    class ScalarPhi4Action:
        def __init__(self, M2, lam):
            self.M2 = M2
            self.lam = lam

        def __call__(self, cfgs):
            # potential term
            action_density = self.M2 * cfgs ** 2 + self.lam * cfgs ** 4
            # kinetic term (discrete Laplacian)
            Nd = len(cfgs.shape) - 1
            dims = range(1, Nd + 1)
            for mu in dims:
                action_density += 2 * cfgs ** 2
                action_density -= cfgs * torch.roll(cfgs, -1, mu)
                action_density -= cfgs * torch.roll(cfgs, 1, mu)
            return torch.sum(action_density, dim=tuple(dims))

    class SimpleNormal:
        def __init__(self, loc, var):
            self.dist = torch.distributions.normal.Normal(torch.flatten(loc), torch.flatten(var))
            self.shape = loc.shape

        def log_prob(self, x):
            logp = self.dist.log_prob(x.reshape(x.shape[0], -1))
            return torch.sum(logp, dim=1)

        def sample_n(self, batch_size):
            x = self.dist.sample((batch_size,))
            return x.reshape(batch_size, *self.shape)

    def make_checker_mask(shape, parity):
        checker = torch.ones(shape, dtype=torch.uint8) - parity
        checker[::2, ::2] = parity
        checker[1::2, 1::2] = parity
        return checker

    class AffineCoupling(nn.Module):
        def __init__(self, net, *, mask_shape, mask_parity):
            super().__init__()
            self.mask = make_checker_mask(mask_shape, mask_parity)
            self.net = net

        def forward(self, x):
            x_frozen = self.mask * x
            x_active = (1 - self.mask) * x
            net_out = self.net(x_frozen.unsqueeze(1))
            s, t = net_out[:, 0], net_out[:, 1]
            fx = (1 - self.mask) * t + x_active * torch.exp(s) + x_frozen
            axes = range(1, len(s.size()))
            logJ = torch.sum((1 - self.mask) * s, dim=tuple(axes))
            return fx, logJ

    def make_conv_net(*, hidden_sizes, kernel_size, in_channels, out_channels, use_final_tanh):
        sizes = [in_channels] + hidden_sizes + [out_channels]
        padding_size = (kernel_size // 2)
        net = []
        for i in range(len(sizes) - 1):
            net.append(nn.Conv2d(sizes[i], sizes[i + 1], kernel_size, padding=padding_size, stride=1,
                                 padding_mode='circular'))
            if i != len(sizes) - 2:
                net.append(nn.LeakyReLU())
            else:
                if use_final_tanh:
                    net.append(nn.Tanh())
        return nn.Sequential(*net)

    def make_phi4_affine_layers(*, n_layers, lattice_shape, hidden_sizes, kernel_size):
        layers = []
        for i in range(n_layers):
            parity = i % 2
            net = make_conv_net(in_channels=1, out_channels=2, hidden_sizes=hidden_sizes, kernel_size=kernel_size,
                                use_final_tanh=True)
            coupling = AffineCoupling(net, mask_shape=lattice_shape, mask_parity=parity)
            layers.append(coupling)
        return nn.ModuleList(layers)

    def apply_flow_to_prior(prior, coupling_layers, *, batch_size):
        x = prior.sample_n(batch_size)
        logq = prior.log_prob(x)
        for layer in coupling_layers:
            x, logJ = layer.forward(x)
            logq = logq - logJ
        return x, logq

    def calc_dkl(logp, logq):
        return (logq - logp).mean()

    def compute_ess(logp, logq):
        logw = logp - logq
        log_ess = 2 * torch.logsumexp(logw, dim=0) - torch.logsumexp(2 * logw, dim=0)
        ess_per_cfg = torch.exp(log_ess) / len(logw)
        return ess_per_cfg

    lattice_shape = (L, L)
    phi4_action = ScalarPhi4Action(M2=-4.0, lam=8.0)
    prior = SimpleNormal(torch.zeros(lattice_shape), torch.ones(lattice_shape))
    layers = make_phi4_affine_layers(lattice_shape=lattice_shape, n_layers=4, hidden_sizes=[4, 4], kernel_size=3)
    model = {'layers': layers, 'prior': prior}
    optimizer = optim.Adam(model['layers'].parameters(), lr=0.001)
    history = []
    for era in range(n_era):
        optimizer.zero_grad()
        x, logq = apply_flow_to_prior(prior, layers, batch_size=batch_size)
        logp = -phi4_action(x)
        loss = calc_dkl(logp, logq)
        loss.backward()
        optimizer.step()
        history.append((loss.item(), compute_ess(logp, logq).item()))
    # the force of the action (for HMC on the lattice) against its closed form
    phi = x.detach().requires_grad_(True)
    force = -torch.autograd.grad(phi4_action(phi).sum(), phi)[0]
    return {"history": history, "x": x.detach(), "force": force, "grads": [p.grad for p in layers.parameters()]}


def test_phi4_lattice_normalizing_flow():
    # (the prior's draws are the same on both: chainrule's generator reproduces PyTorch's normal_; float32
    # gradients of an action with phi^4 terms of ~50 agree to a few 1e-4)
    ours, _ = run_both(lattice_flow, rtol=5e-4, atol=5e-5)
    phi = ours["x"].astype(np.float64)
    lap = sum(np.roll(phi, 1, a) + np.roll(phi, -1, a) - 2 * phi for a in (1, 2))
    np.testing.assert_allclose(ours["force"], -(2 * -4.0 * phi + 4 * 8.0 * phi ** 3 - 2 * lap), rtol=1e-4, atol=1e-4)
    assert all(0 < ess <= 1 for _, ess in ours["history"])


# ----------------------------------------------------------------------------------------------
# Two-qubit state tomography: a complex amplitude vector (a complex leaf) fitted by L-BFGS to the
# outcome frequencies of Pauli measurements (torch.kron of basis changes, |U psi|^2)
# ----------------------------------------------------------------------------------------------


def tomography(m, max_iter=25):
    torch, optim = m.torch, m.optim
    c = torch.complex128
    I = torch.eye(2, dtype=c)
    H = torch.tensor([[1, 1], [1, -1]], dtype=c) / math.sqrt(2)  # Z basis -> X basis
    S_dag = torch.tensor([[1, 0], [0, -1j]], dtype=c)
    bases = {"Z": I, "X": H, "Y": H @ S_dag}
    settings = [(a, b) for a in "XYZ" for b in "XYZ"]
    rotations = torch.stack([torch.kron(bases[a], bases[b]) for a, b in settings])
    psi_true = torch.tensor([1.0, 0.3j, -0.2, 0.5 + 0.5j], dtype=c)
    psi_true = psi_true / torch.linalg.vector_norm(psi_true)
    with torch.no_grad():
        frequencies = (rotations @ psi_true).abs() ** 2
    psi = torch.tensor([1.0, 0.1, 0.1j, 0.1], dtype=c, requires_grad=True)
    optimizer = optim.LBFGS([psi], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")
    history = []

    def closure():
        optimizer.zero_grad()
        amplitudes = rotations @ (psi / torch.linalg.vector_norm(psi))
        probs = amplitudes.real ** 2 + amplitudes.imag ** 2
        loss = ((probs - frequencies) ** 2).sum()
        loss.backward()
        history.append(loss.item())
        return loss

    optimizer.step(closure)
    estimate = psi.detach() / torch.linalg.vector_norm(psi.detach())
    fidelity = torch.abs(torch.vdot(psi_true, estimate)) ** 2
    rho = torch.outer(estimate, estimate.conj())
    return {"history": history, "fidelity": fidelity, "purity": torch.trace(rho @ rho).real,
            "frequencies": frequencies, "grad": psi.grad}


def test_two_qubit_state_tomography():
    ours, _ = run_both(tomography, rtol=1e-7, atol=1e-9)
    assert ours["history"][-1] < 1e-6 * ours["history"][0]
    assert ours["fidelity"] == pytest.approx(1.0, abs=1e-6)
    assert ours["purity"] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(ours["frequencies"].reshape(9, 4).sum(1), 1.0, rtol=1e-12)
    assert ours["grad"].dtype == np.complex128
