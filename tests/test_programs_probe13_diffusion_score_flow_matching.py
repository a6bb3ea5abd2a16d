# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Diffusion models, flows, score matching and flow matching, run as tests/probe13_diffusion_common.py says. Score
matching: NCSN's annealed DSM and Langevin dynamics, sliced score matching (``autograd.grad`` with ``create_graph``),
exact score matching by the Jacobian's trace, Hutchinson's estimator against ``autograd.functional.jacobian``. Flow
matching (torchcfm's matchers), Euler/Heun/midpoint samplers, the CNF likelihood by ``torch.func.vmap(jacrev)``, a
reflow step."""

import copy
import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Score matching: NCSN's annealed denoising score matching and Langevin dynamics, sliced score matching
# (Song et al.'s variance-reduced estimator), exact score matching by the Jacobian's trace, and an energy
# model whose score is minus the gradient of its energy (double backward)
# ----------------------------------------------------------------------------------------------


def make_score_nets(m, num_classes=6):
    torch, nn, F = m.torch, m.nn, m.F

    class ConditionalLinear(nn.Module):
        def __init__(self, num_in, num_out, num_classes):
            super().__init__()
            self.num_out = num_out
            self.lin = nn.Linear(num_in, num_out)
            self.embed = nn.Embedding(num_classes, num_out)
            self.embed.weight.data.uniform_()

        def forward(self, x, y):
            out = self.lin(x)
            gamma = self.embed(y)
            out = gamma.view(-1, self.num_out) * out
            return out

    class ConditionalModel(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.lin1 = ConditionalLinear(2, 32, num_classes)
            self.lin2 = ConditionalLinear(32, 32, num_classes)
            self.lin3 = nn.Linear(32, 2)

        def forward(self, x, y):
            x = F.softplus(self.lin1(x, y))
            x = F.softplus(self.lin2(x, y))
            return self.lin3(x)

    class Energy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 32), nn.SiLU(), nn.Linear(32, 32), nn.ELU(), nn.Linear(32, 1))

        def forward(self, x):
            return self.net(x).squeeze(-1)

    return nn.ModuleDict({"ncsn": ConditionalModel(num_classes),
                          "ssm": nn.Sequential(nn.Linear(2, 32), nn.Softplus(), nn.Linear(32, 32), nn.Tanh(),
                                               nn.Linear(32, 2)),
                          "energy": Energy()})


def swiss_roll(n, seed):
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5
    return (x + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)


def score_matching(m, weights, steps=4):
    torch, autograd = m.torch, m.torch.autograd
    nets = load(m, make_score_nets(m), weights)
    ncsn, ssm, energy = nets["ncsn"], nets["ssm"], nets["energy"]
    sigmas = torch.tensor(np.exp(np.linspace(np.log(1.0), np.log(0.01), 6))).float()
    g = torch.Generator().manual_seed(0)

    def anneal_dsm_score_estimation(scorenet, samples, labels, sigmas, anneal_power=2.):
        used_sigmas = sigmas[labels].view(samples.shape[0], *([1] * len(samples.shape[1:])))
        perturbed_samples = samples + torch.randn_like(samples, generator=g) * used_sigmas
        target = - 1 / (used_sigmas ** 2) * (perturbed_samples - samples)
        scores = scorenet(perturbed_samples, labels)
        target = target.view(target.shape[0], -1)
        scores = scores.view(scores.shape[0], -1)
        loss = 1 / 2. * ((scores - target) ** 2).sum(dim=-1) * used_sigmas.squeeze() ** anneal_power
        return loss.mean(dim=0)

    def sliced_score_estimation_vr(score_net, samples, n_particles=1):
        dup_samples = samples.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
        dup_samples.requires_grad_(True)
        vectors = torch.randn_like(dup_samples, generator=g)
        grad1 = score_net(dup_samples)
        gradv = torch.sum(grad1 * vectors)
        grad2 = autograd.grad(gradv, dup_samples, create_graph=True)[0]
        grad1 = grad1.view(dup_samples.shape[0], -1)
        loss1 = torch.sum(grad1 * grad1, dim=-1) / 2.
        loss2 = torch.sum((vectors * grad2).view(dup_samples.shape[0], -1), dim=-1)
        loss1 = loss1.view(n_particles, -1).mean(dim=0)
        loss2 = loss2.view(n_particles, -1).mean(dim=0)
        loss = loss1 + loss2
        return loss.mean(), loss1.mean(), loss2.mean()

    def sliced_score_estimation(score_net, samples, n_particles=1):
        dup_samples = samples.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
        dup_samples.requires_grad_(True)
        vectors = torch.randn_like(dup_samples, generator=g)
        vectors = vectors / torch.norm(vectors, dim=-1, keepdim=True)
        grad1 = score_net(dup_samples)
        gradv = torch.sum(grad1 * vectors)
        loss1 = torch.sum(grad1 * vectors, dim=-1) ** 2 * 0.5
        grad2 = autograd.grad(gradv, dup_samples, create_graph=True)[0]
        loss2 = torch.sum(vectors * grad2, dim=-1)
        loss1 = loss1.view(n_particles, -1).mean(dim=0)
        loss2 = loss2.view(n_particles, -1).mean(dim=0)
        loss = loss1 + loss2
        return loss.mean(), loss1.mean(), loss2.mean()

    def exact_score_matching(energy_net, samples):
        samples.requires_grad_(True)
        logp = -energy_net(samples).sum()
        grad1 = autograd.grad(logp, samples, create_graph=True)[0]
        loss1 = (torch.norm(grad1, dim=-1) ** 2 / 2.).detach()
        loss2 = torch.zeros(samples.shape[0])
        for i in range(samples.shape[1]):
            grad = autograd.grad(grad1[:, i].sum(), samples, create_graph=True)[0][:, i]
            loss2 += grad
        loss = loss1 + loss2
        return loss.mean()

    def hutchinson_trace(score_net, samples, n_probes=3):
        # tr(d score / dx) by E[v^T J v] with Rademacher probes
        samples = samples.detach().requires_grad_(True)
        s = score_net(samples)
        total = torch.zeros(samples.shape[0])
        for _ in range(n_probes):
            v = torch.randint(0, 2, samples.shape, generator=g).to(samples.dtype) * 2 - 1
            vjp = autograd.grad(s, samples, grad_outputs=v, create_graph=True, retain_graph=True)[0]
            total = total + (vjp * v).sum(-1)
        return total / n_probes, s

    data = swiss_roll(64, seed=1)
    opt = m.optim.Adam(nets.parameters(), lr=1e-3)
    hist = []
    for step in range(steps):
        x = torch.from_numpy(data[16 * step:16 * step + 16])
        labels = torch.randint(0, len(sigmas), (x.shape[0],), generator=g)
        dsm = anneal_dsm_score_estimation(ncsn, x, labels, sigmas)
        ssm_vr, l1, l2 = sliced_score_estimation_vr(ssm, x, n_particles=2)
        ssm_plain, _, _ = sliced_score_estimation(ssm, x)
        esm = exact_score_matching(energy, x.clone())
        loss = dsm + ssm_vr + 0.5 * ssm_plain + esm
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append([dsm.item(), ssm_vr.item(), l1.item(), l2.item(), ssm_plain.item(), esm.item()])
    grads = {n: p.grad for n, p in nets.named_parameters()}

    # Hutchinson's estimate against the exact trace, by torch.autograd.functional.jacobian
    x = torch.from_numpy(data[:5])
    estimate, _ = hutchinson_trace(ssm, x, n_probes=200)
    jac = autograd.functional.jacobian(lambda z: ssm(z).sum(0), x)  # (2, 5, 2)
    exact = torch.einsum("ibi->b", jac)

    # annealed Langevin dynamics (NCSN's sampler)
    @torch.no_grad()
    def anneal_Langevin_dynamics(x_mod, scorenet, sigmas, n_steps_each=3, step_lr=0.00002):
        images = []
        for c, sigma in enumerate(sigmas):
            labels = torch.ones(x_mod.shape[0], dtype=torch.long) * c
            step_size = step_lr * (sigma / sigmas[-1]) ** 2
            for s in range(n_steps_each):
                images.append(torch.clamp(x_mod, -5.0, 5.0).to('cpu'))
                noise = torch.randn_like(x_mod, generator=g) * torch.sqrt(step_size * 2)
                grad = scorenet(x_mod, labels)
                x_mod = x_mod + step_size * grad + noise
        return images

    x_init = torch.rand(8, 2, generator=g) * 4 - 2
    chain = anneal_Langevin_dynamics(x_init, ncsn, sigmas)
    return {"hist": hist, "grads": grads, "estimate": estimate, "exact": exact, "jac": jac,
            "chain": torch.stack(chain), "params": nets.state_dict()}


def test_score_matching_dsm_sliced_exact_and_langevin():
    weights = weights_of(make_score_nets)
    ours, _ = run_both(score_matching, weights, rtol=2e-4, atol=2e-5)
    # the exact trace from the Jacobian, and Hutchinson's estimate close to it with 200 probes
    np.testing.assert_allclose(ours["exact"], np.einsum("ibi->b", ours["jac"]), rtol=1e-6)
    assert np.all(np.abs(ours["estimate"] - ours["exact"]) < 0.25 * np.abs(ours["exact"]).max() + 0.05)
    hist = np.array(ours["hist"])
    np.testing.assert_allclose(hist[:, 1], hist[:, 2] + hist[:, 3], rtol=1e-5, atol=1e-6)
    assert ours["chain"].shape == (18, 8, 2)


# ----------------------------------------------------------------------------------------------
# Flow matching (torchcfm's conditional flow matcher), Euler / Heun / midpoint ODE sampling, the
# likelihood by the instantaneous change of variables (exact divergence by torch.func.vmap(jacrev)),
# and a reflow step (rectified flow) on the model's own couplings
# ----------------------------------------------------------------------------------------------


def make_velocity_net(m, dim=2, w=32):
    nn = m.nn

    class MLP(nn.Module):
        def __init__(self, dim, out_dim=None, w=64, time_varying=False):
            super().__init__()
            self.time_varying = time_varying
            if out_dim is None:
                out_dim = dim
            self.net = nn.Sequential(
                nn.Linear(dim + (1 if time_varying else 0), w), nn.SELU(),
                nn.Linear(w, w), nn.SELU(),
                nn.Linear(w, w), nn.SELU(),
                nn.Linear(w, out_dim))

        def forward(self, x):
            return self.net(x)

    return MLP(dim=dim, w=w, time_varying=True)


def flow_matching(m, weights, steps=5):
    torch, F = m.torch, m.F
    model = load(m, make_velocity_net(m), weights)

    def pad_t_like_x(t, x):
        if isinstance(t, (float, int)):
            return t
        return t.reshape(-1, *([1] * (x.dim() - 1)))

    class ConditionalFlowMatcher:
        def __init__(self, sigma=0.0):
            self.sigma = sigma

        def compute_mu_t(self, x0, x1, t):
            t = pad_t_like_x(t, x0)
            return t * x1 + (1 - t) * x0

        def compute_sigma_t(self, t):
            del t
            return self.sigma

        def sample_xt(self, x0, x1, t, epsilon):
            mu_t = self.compute_mu_t(x0, x1, t)
            sigma_t = self.compute_sigma_t(t)
            sigma_t = pad_t_like_x(sigma_t, x0)
            return mu_t + sigma_t * epsilon

        def compute_conditional_flow(self, x0, x1, t, xt):
            del t, xt
            return x1 - x0

        def sample_noise_like(self, x):
            return torch.randn_like(x, generator=gen)

        def sample_location_and_conditional_flow(self, x0, x1, t=None, return_noise=False):
            if t is None:
                t = torch.rand(x0.shape[0], generator=gen).type_as(x0)
            assert len(t) == x0.shape[0], "t has to have batch size dimension"
            eps = self.sample_noise_like(x0)
            xt = self.sample_xt(x0, x1, t, eps)
            ut = self.compute_conditional_flow(x0, x1, t, xt)
            if return_noise:
                return t, xt, ut, eps
            return t, xt, ut

    class VariancePreservingConditionalFlowMatcher(ConditionalFlowMatcher):
        def compute_mu_t(self, x0, x1, t):
            t = pad_t_like_x(t, x0)
            return torch.cos(math.pi / 2 * t) * x0 + torch.sin(math.pi / 2 * t) * x1

        def compute_conditional_flow(self, x0, x1, t, xt):
            del xt
            t = pad_t_like_x(t, x0)
            return math.pi / 2 * (torch.cos(math.pi / 2 * t) * x1 - torch.sin(math.pi / 2 * t) * x0)

    gen = torch.Generator().manual_seed(42)
    data = swiss_roll(64, seed=4)
    optimizer = m.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    matchers = [ConditionalFlowMatcher(sigma=0.05), VariancePreservingConditionalFlowMatcher(sigma=0.0)]
    for k in range(steps):
        optimizer.zero_grad()
        x1 = torch.from_numpy(data[(16 * k) % 64:(16 * k) % 64 + 16])
        x0 = torch.randn(x1.shape, generator=gen)
        FM = matchers[k % 2]
        t, xt, ut = FM.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1))
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = {n: p.grad for n, p in model.named_parameters()}

    def velocity(t, x):
        return model(torch.cat([x, t.expand(x.shape[0], 1)], dim=-1))

    @torch.no_grad()
    def euler(x, n):
        ts = torch.linspace(0, 1, n + 1)
        for t0, t1 in zip(ts[:-1], ts[1:]):
            x = x + (t1 - t0) * velocity(t0, x)
        return x

    @torch.no_grad()
    def heun(x, n):
        ts = torch.linspace(0, 1, n + 1)
        for t0, t1 in zip(ts[:-1], ts[1:]):
            dt = t1 - t0
            d0 = velocity(t0, x)
            x_pred = x + dt * d0
            x = x + dt * 0.5 * (d0 + velocity(t1, x_pred))
        return x

    @torch.inference_mode()
    def midpoint(x, n):
        dt = 1.0 / n
        for i in range(n):
            t = torch.tensor(i * dt)
            x_mid = x + 0.5 * dt * velocity(t, x)
            x = x + dt * velocity(t + 0.5 * dt, x_mid)
        return x

    x0 = torch.randn(6, 2, generator=gen)
    samples = {"euler": euler(x0, 8), "heun": heun(x0, 4), "midpoint": midpoint(x0, 4)}

    # log-likelihood of data under the CNF: integrate backwards with the divergence of the velocity field
    from_func = m.torch.func

    def v_single(x, t):
        return model(torch.cat([x, t.reshape(1)]))

    def divergence(x, t):
        jac = from_func.vmap(from_func.jacrev(v_single), in_dims=(0, None))(x, t)
        return torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1)

    def log_likelihood(x1, n=8):
        x = x1
        delta_logp = torch.zeros(x.shape[0])
        ts = torch.linspace(1, 0, n + 1)
        for t0, t1 in zip(ts[:-1], ts[1:]):
            dt = t1 - t0
            delta_logp = delta_logp - dt * divergence(x, t0)
            x = x + dt * velocity(t0, x)
        prior = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
        return prior.log_prob(x) - delta_logp

    with torch.no_grad():
        ll = log_likelihood(torch.from_numpy(data[:6]))

    # divergence also by torch.autograd.grad, one coordinate at a time, for the check below
    x = torch.from_numpy(data[:6]).requires_grad_(True)
    v = velocity(torch.tensor(0.3), x)
    div_autograd = sum(torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
    div_func = divergence(x.detach(), torch.tensor(0.3))

    # a reflow step: train on (noise, the flow's own sample) couplings, which are straighter
    z0 = torch.randn(16, 2, generator=gen)
    with torch.no_grad():
        z1 = heun(z0, 4)
    reflow_model = copy.deepcopy(model)
    opt2 = m.optim.SGD(reflow_model.parameters(), lr=0.05)
    reflow = []
    for _ in range(3):
        t = torch.rand(16, 1, generator=gen)
        zt = t * z1 + (1. - t) * z0
        target = z1 - z0
        pred = reflow_model(torch.cat([zt, t], dim=1))
        loss = F.mse_loss(pred, target, reduction="none").view(16, -1).mean(1).mean()
        opt2.zero_grad()
        loss.backward()
        opt2.step()
        reflow.append(loss.item())
    return {"losses": losses, "grads": grads, "samples": samples, "ll": ll, "div_autograd": div_autograd,
            "div_func": div_func, "reflow": reflow, "params": reflow_model.state_dict()}


def test_flow_matching_training_ode_samplers_and_likelihood():
    weights = weights_of(make_velocity_net)
    ours, _ = run_both(flow_matching, weights, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(ours["div_func"], ours["div_autograd"], rtol=1e-5, atol=1e-6)
    s = ours["samples"]
    assert np.abs(s["heun"] - s["midpoint"]).max() < 0.1  # two second-order integrators agree closely
    assert np.all(np.isfinite(ours["ll"]))
