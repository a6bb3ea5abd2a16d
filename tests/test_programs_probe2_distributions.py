# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``), run on
chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

Probabilistic programs built on ``torch.distributions``: a VAE (``Normal``/``Independent``,
``rsample``, ``kl_divergence``, a Bernoulli likelihood), a RealNVP flow of affine couplings, a
``TransformedDistribution`` of ``AffineTransform`` and ``TanhTransform`` fitted by ``log_prob``, a
Gaussian mixture (``MixtureSameFamily``), a ``MultivariateNormal`` with ``scale_tril`` fitted by
maximum likelihood, ``Beta``/``Dirichlet`` reparameterised gradients, and a Gaussian policy gradient.

The two libraries' random generators differ, so where a program draws (``rsample``) the comparison
takes the noise as data (``mean + stddev * eps``), and the drawing runs are checked by their
properties (the ELBO rises, the Monte Carlo gradient of a mean is its closed form)."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A VAE on binary data (the PyTorch VAE example's loss, written with distributions)
# ----------------------------------------------------------------------------------------------


def vae(m, weights, x, eps_all, steps=30, use_rsample=False):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(12, 16), nn.ReLU())
            self.mu = nn.Linear(16, 2)
            self.logvar = nn.Linear(16, 2)
            self.dec = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 12))

        def encode(self, x):
            h = self.enc(x)
            return self.mu(h), self.logvar(h)

    model = VAE()
    if weights is not None:
        load(m, model, weights)
    else:
        return model
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x = torch.tensor(x)
    prior = D.Independent(D.Normal(torch.zeros(2), torch.ones(2)), 1)
    losses = []
    for step in range(steps):
        mu, logvar = model.encode(x)
        q = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1)
        if use_rsample:
            z = q.rsample()
        else:
            z = q.mean + q.stddev * torch.tensor(eps_all[step])
        px = D.Independent(D.Bernoulli(logits=model.dec(z)), 1)
        rec = px.log_prob(x)
        kl = D.kl_divergence(q, prior)
        elbo = rec - kl
        loss = -elbo.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    mu, logvar = model.encode(x)
    q = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1)
    # analytic KL against the closed form
    kl_closed = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)
    return (
        losses,
        D.kl_divergence(q, prior),
        kl_closed,
        q.batch_shape == (x.shape[0],),
        list(q.event_shape),
        model.mu.weight.grad,
    )


def _binary_data(seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((32, 12)) < 0.3).astype(np.float32)
    eps = rng.standard_normal((30, 32, 2)).astype(np.float32)
    return x, eps


def test_vae_elbo_with_independent_normal_and_bernoulli():
    x, eps = _binary_data()
    weights = weights_of(lambda m: vae(m, None, x, eps))
    (losses, kl, kl_closed, batch_ok, event_shape, grad), _ = run_both(vae, weights, x, eps, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] - 1.2  # 8.38 -> 6.81 on PyTorch
    np.testing.assert_allclose(kl, kl_closed, rtol=1e-5, atol=1e-6)  # kl_divergence is the closed form
    assert batch_ok and event_shape == [2] and kl.shape == (32,) and grad.shape == (2, 16)


def test_vae_trains_through_rsample():
    x, eps = _binary_data()
    weights = weights_of(lambda m: vae(m, None, x, eps))
    (losses, *_), theirs = run_both(vae, weights, x, eps, use_rsample=True, compare=False)
    assert losses[-1] < losses[0] - 1.0  # 8.33 -> 6.78 here, 8.50 -> 6.87 on PyTorch (other draws)
    if theirs is not None:
        assert abs(losses[-1] - theirs[0][-1]) < 0.3


# ----------------------------------------------------------------------------------------------
# RealNVP (Dinh et al.): affine couplings with masks, a MultivariateNormal base
# ----------------------------------------------------------------------------------------------


def realnvp(m, weights, x, steps=25):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions

    class Coupling(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)
            self.s = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
            self.t = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))

        def forward(self, x):
            xm = x * self.mask
            s = self.s(xm) * (1 - self.mask)
            t = self.t(xm) * (1 - self.mask)
            y = xm + (1 - self.mask) * (x * torch.exp(s) + t)
            return y, s.sum(dim=1)

    class Flow(nn.Module):
        def __init__(self):
            super().__init__()
            masks = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])] * 2
            self.layers = nn.ModuleList([Coupling(mk) for mk in masks])
            self.base = D.MultivariateNormal(torch.zeros(2), torch.eye(2))

        def log_prob(self, x):
            ld = torch.zeros(x.shape[0])
            for layer in self.layers:
                x, l = layer(x)
                ld = ld + l
            return self.base.log_prob(x) + ld

    flow = Flow()
    if weights is None:
        return flow
    load(m, flow, weights)
    opt = optim.Adam(flow.parameters(), lr=5e-3)
    x = torch.tensor(x)
    losses = []
    for _ in range(steps):
        loss = -flow.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, flow.layers[0].s[0].weight.grad


def test_realnvp_affine_couplings():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 2)) * [1.0, 0.3] + [0.5, -1]).astype(np.float32)
    weights = weights_of(lambda m: realnvp(m, None, x))
    (losses, grad), _ = run_both(realnvp, weights, x, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] - 1.4  # 3.43 -> 1.76 nats on PyTorch
    assert grad.shape == (16, 2) and np.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------
# A TransformedDistribution: Normal -> AffineTransform -> TanhTransform, fitted by log_prob
# ----------------------------------------------------------------------------------------------


def tanh_flow(m, data, steps=40):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    T = D.transforms
    loc = torch.zeros(2, requires_grad=True)
    log_scale = torch.zeros(2, requires_grad=True)
    shift = torch.tensor([0.1, -0.2], requires_grad=True)
    opt = optim.Adam([loc, log_scale, shift], lr=0.05)
    y = torch.tensor(data)
    losses = []
    for _ in range(steps):
        base = D.Independent(D.Normal(loc, log_scale.exp()), 1)
        dist = D.TransformedDistribution(base, [T.AffineTransform(shift, 0.5), T.TanhTransform(cache_size=1)])
        lp = dist.log_prob(y)
        loss = -lp.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    s = dist.rsample((5,))
    inv = dist.transforms[-1].inv(torch.tensor([[0.3, -0.9]]))
    return (
        losses,
        loc.grad,
        log_scale.grad,
        shift.grad,
        list(s.shape),
        inv,
        dist.event_shape == (2,),
        lp.shape == (len(data),),
    )


def test_transformed_distribution_affine_tanh():
    rng = np.random.default_rng(1)
    y = np.tanh(rng.standard_normal((50, 2)) * 0.4 + 0.3).astype(np.float32)
    (losses, *grads, shape, inv, event_ok, lp_ok), _ = run_both(tanh_flow, y, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] - 0.5
    assert shape == [5, 2] and event_ok and lp_ok
    # the inverse of tanh, then of y = shift + 0.5 x
    np.testing.assert_allclose(np.tanh(inv), [[0.3, -0.9]], rtol=1e-5)
    assert all(np.isfinite(g).all() for g in grads)


# ----------------------------------------------------------------------------------------------
# A Gaussian mixture: MixtureSameFamily(Categorical, Independent(Normal))
# ----------------------------------------------------------------------------------------------


def gmm(m, data, steps=60):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    logits = torch.zeros(3, requires_grad=True)
    means = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    log_std = torch.zeros(3, 2, requires_grad=True)
    opt = optim.Adam([logits, means, log_std], lr=0.05)
    x = torch.tensor(data)
    losses = []
    for _ in range(steps):
        mix = D.Categorical(logits=logits)
        comp = D.Independent(D.Normal(means, log_std.exp()), 1)
        gmm = D.MixtureSameFamily(mix, comp)
        loss = -gmm.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    gmm_mean = gmm.mean
    gmm_var = gmm.variance
    cdf_like = D.MixtureSameFamily(D.Categorical(logits=logits), D.Normal(means[:, 0], log_std[:, 0].exp())).cdf(
        torch.tensor([0.0, 0.5])
    )
    return losses, logits.grad, means.grad, gmm_mean, gmm_var, cdf_like, list(gmm.sample((4,)).shape)


def test_gaussian_mixture_same_family():
    rng = np.random.default_rng(2)
    data = np.concatenate([rng.standard_normal((40, 2)) * 0.3 + c for c in ([-2, 0], [0, 2], [2, 0])])
    (losses, lg, mg, mean, var, cdf, shape), _ = run_both(gmm, data.astype(np.float32), rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] - 1.5  # 3.36 -> 1.53 on PyTorch (seed 0)
    np.testing.assert_allclose(mean, data.mean(0), atol=0.15)
    assert shape == [4, 2] and var.shape == (2,) and (var > 0).all() and ((cdf > 0) & (cdf < 1)).all()
    np.testing.assert_allclose(lg.sum(), 0.0, atol=1e-5)  # softmax logits: the gradient sums to zero


# ----------------------------------------------------------------------------------------------
# A MultivariateNormal fitted by maximum likelihood through a scale_tril parameterisation
# ----------------------------------------------------------------------------------------------


def mvn_mle(m, data, steps=80):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    mu = torch.zeros(3, requires_grad=True)
    raw = torch.zeros(3, 3, requires_grad=True)
    opt = optim.Adam([mu, raw], lr=0.05)
    x = torch.tensor(data)
    losses = []
    for _ in range(steps):
        L = torch.tril(raw, diagonal=-1) + torch.diag_embed(F.softplus(torch.diagonal(raw)) + 1e-3)
        dist = D.MultivariateNormal(mu, scale_tril=L)
        loss = -dist.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, mu.detach(), dist.covariance_matrix, dist.entropy(), raw.grad, dist.precision_matrix


def test_multivariate_normal_scale_tril_mle():
    rng = np.random.default_rng(3)
    C = np.array([[1.0, 0.5, 0.2], [0.5, 2.0, -0.3], [0.2, -0.3, 0.5]])
    data = (rng.standard_normal((200, 3)) @ np.linalg.cholesky(C).T + [1, -1, 0.5]).astype(np.float32)
    (losses, mu, cov, entropy, grad, precision), _ = run_both(mvn_mle, data, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] - 3.0  # 7.39 -> 3.86 on PyTorch (seed 0)
    np.testing.assert_allclose(mu, data.mean(0), atol=0.1)
    np.testing.assert_allclose(cov @ precision, np.eye(3), atol=1e-4)
    assert np.allclose(np.triu(grad, 1), 0.0)  # only tril(raw) and its diagonal are used
    np.testing.assert_allclose(entropy, 0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov)[1], rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Reparameterised Beta and Dirichlet draws: the gradient of a Monte Carlo mean
# ----------------------------------------------------------------------------------------------


def dirichlet_beta_grads(m, n=20000):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(0)
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    x = D.Beta(a, b).rsample((n,))
    x.mean().backward()
    conc = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = D.Dirichlet(conc).rsample((n,))
    (y[:, 0].mean()).backward()
    return a.grad, b.grad, conc.grad


def test_beta_and_dirichlet_rsample_gradients():
    """d/da E[x] for x ~ Beta(a, b) is b / (a + b)^2; for the first part of a Dirichlet(c) draw,
    d/dc_0 E = (S - c_0) / S^2 and d/dc_j = -c_0 / S^2 (S = sum c): implicit reparameterisation."""
    (ga, gb, gc), theirs = run_both(dirichlet_beta_grads, compare=False)
    np.testing.assert_allclose([ga, gb], [3 / 25, -2 / 25], atol=3e-3)
    np.testing.assert_allclose(gc, [5 / 36, -1 / 36, -1 / 36], atol=3e-3)
    if theirs is not None:
        np.testing.assert_allclose(np.hstack([ga, gb, gc]), np.hstack(theirs), atol=4e-3)


# ----------------------------------------------------------------------------------------------
# A policy gradient (REINFORCE with a baseline) with a Gaussian policy and an entropy bonus
# ----------------------------------------------------------------------------------------------


def policy_gradient(m, weights, obs, steps=30):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions

    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 16), nn.Tanh())
            self.mu = nn.Linear(16, 2)
            self.log_std = nn.Parameter(torch.zeros(2))

        def forward(self, s):
            return D.Normal(self.mu(self.body(s)), self.log_std.exp())

    pi = Policy()
    if weights is None:
        return pi
    load(m, pi, weights)
    opt = optim.Adam(pi.parameters(), lr=1e-2)
    s = torch.tensor(obs)
    target = torch.tensor([0.5, -0.5])
    rets = []
    for i in range(steps):
        dist = pi(s)
        with torch.no_grad():
            a = dist.mean + dist.stddev * torch.tensor(
                np.random.default_rng(i).standard_normal((len(obs), 2)).astype(np.float32)
            )
        r = -((a - target) ** 2).sum(-1)
        adv = (r - r.mean()) / (r.std() + 1e-8)
        logp = dist.log_prob(a).sum(-1)
        loss = -(logp * adv).mean() - 0.01 * dist.entropy().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rets.append(r.mean().item())
    return rets, pi.log_std.grad, pi(s).mean.mean(0)


def test_gaussian_policy_gradient():
    obs = np.random.default_rng(4).standard_normal((64, 3)).astype(np.float32)
    weights = weights_of(lambda m: policy_gradient(m, None, obs))
    (returns, log_std_grad, mean_action), _ = run_both(policy_gradient, weights, obs, rtol=1e-4, atol=1e-5)
    assert returns[-1] > returns[0] + 1.0  # -2.79 -> -1.36 on PyTorch (seed 0)
    assert log_std_grad.shape == (2,)
    assert np.abs(mean_action - [0.5, -0.5]).max() < 0.3  # the policy's mean moves to the target
