# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Memory-augmented and set-structured models as their reference PyTorch code writes them, each run as a program on
chainrule and on PyTorch from the same seed (tests/pytorch_programs.py), comparing losses, outputs and gradients
after a few Adam/AdamW steps, with invariants and NumPy checks that hold without PyTorch. Models of context sets:
Conditional and Attentive Neural Processes (``nn.MultiheadAttention``, ``Normal`` with a softplus scale,
``kl_divergence`` between latent posteriors); the Neural Statistician, reduced (a statistic network pooling each set
into q(c | D), a latent drawn by ``rsample``)."""

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Neural Processes
# ----------------------------------------------------------------------------------------------


def gp_like_tasks(torch, batch=4, n_context=5, n_target=9):
    x = torch.rand(batch, n_target, 1) * 4 - 2
    phase = torch.rand(batch, 1, 1) * 3
    y = torch.sin(2 * x + phase) + 0.05 * torch.randn(batch, n_target, 1)
    return x[:, :n_context], y[:, :n_context], x, y


def conditional_np(m):
    """A Conditional Neural Process (Garnelo et al. 2018, DeepMind's notebook in PyTorch): an MLP encoder of
    (x, y) pairs averaged into r, a decoder of (r, x*) giving a mean and a scale 0.1 + 0.9 softplus, trained on
    the negative Normal log-likelihood with Adam."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_dists = m.torch.distributions

    class CNP(nn.Module):
        def __init__(self, r_dim=16):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, r_dim))
            self.decoder = nn.Sequential(nn.Linear(r_dim + 1, 32), nn.ReLU(), nn.Linear(32, 2))

        def forward(self, xc, yc, xt):
            r = self.encoder(torch.cat([xc, yc], dim=-1)).mean(dim=1, keepdim=True)
            r = r.expand(-1, xt.size(1), -1)
            out = self.decoder(torch.cat([r, xt], dim=-1))
            mu, log_sigma = torch.split(out, 1, dim=-1)
            sigma = 0.1 + 0.9 * F.softplus(log_sigma)
            dist = from_dists.Independent(from_dists.Normal(loc=mu, scale=sigma), 1)
            return dist, mu, sigma

    torch.manual_seed(3)
    model = CNP()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for it in range(5):
        xc, yc, xt, yt = gp_like_tasks(torch)
        dist, mu, sigma = model(xc, yc, xt)
        log_p = dist.log_prob(yt)
        loss = -log_p.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "mu": mu.detach(), "sigma": sigma.detach(), "batch_shape": tuple(dist.batch_shape),
            "event_shape": tuple(dist.event_shape), "grad": model.decoder[2].bias.grad}


def test_conditional_np():
    ours, _ = run_both(conditional_np, rtol=1e-4, atol=1e-6)
    assert ours["batch_shape"] == (4, 9) and ours["event_shape"] == (1,)
    assert (ours["sigma"] > 0.1).all()


def attentive_np(m):
    """An Attentive Neural Process (Kim et al. 2019) as soobinseo/Attentive-Neural-Process writes it: a latent
    path (self-attention over the context, mean, a Normal posterior with scale 0.1 + 0.9 sigmoid), a deterministic
    path with cross-attention from targets to context by nn.MultiheadAttention, the ELBO with
    kl_divergence(posterior, prior) over the latent, trained with AdamW; at test time samples by rsample."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = m.torch.distributions

    class LatentEncoder(nn.Module):
        def __init__(self, h=16, z=8):
            super().__init__()
            self.input = nn.Linear(2, h)
            self.self_attn = nn.MultiheadAttention(h, 2, batch_first=True)
            self.penultimate = nn.Linear(h, h)
            self.mu = nn.Linear(h, z)
            self.log_sigma = nn.Linear(h, z)

        def forward(self, x, y):
            e = self.input(torch.cat([x, y], dim=-1))
            e, _ = self.self_attn(e, e, e)
            hidden = torch.relu(self.penultimate(e.mean(dim=1)))
            mu = self.mu(hidden)
            sigma = 0.1 + 0.9 * torch.sigmoid(self.log_sigma(hidden))
            return D.Normal(mu, sigma)

    class DeterministicEncoder(nn.Module):
        def __init__(self, h=16):
            super().__init__()
            self.input = nn.Linear(2, h)
            self.context_projection = nn.Linear(1, h)
            self.target_projection = nn.Linear(1, h)
            self.self_attn = nn.MultiheadAttention(h, 4, batch_first=True)
            self.cross_attn = nn.MultiheadAttention(h, 4, batch_first=True)

        def forward(self, xc, yc, xt):
            e = self.input(torch.cat([xc, yc], dim=-1))
            e, _ = self.self_attn(e, e, e, need_weights=False)
            q = self.target_projection(xt)
            k = self.context_projection(xc)
            r, w = self.cross_attn(q, k, e, average_attn_weights=False)
            return r, w

    class Decoder(nn.Module):
        def __init__(self, h=16, z=8):
            super().__init__()
            self.target_projection = nn.Linear(1, h)
            self.layers = nn.ModuleList([nn.Linear(2 * h + z, 2 * h + z) for _ in range(2)])
            self.final = nn.Linear(2 * h + z, 2)

        def forward(self, r, z, xt):
            hidden = torch.cat([torch.cat([r, z], dim=-1), self.target_projection(xt)], dim=-1)
            for layer in self.layers:
                hidden = F.relu(layer(hidden))
            mu, log_sigma = self.final(hidden).chunk(2, dim=-1)
            sigma = 0.1 + 0.9 * F.softplus(log_sigma)
            return D.Normal(mu, sigma)

    class ANP(nn.Module):
        def __init__(self):
            super().__init__()
            self.latent_encoder = LatentEncoder()
            self.deterministic_encoder = DeterministicEncoder()
            self.decoder = Decoder()

        def forward(self, xc, yc, xt, yt=None):
            n_target = xt.size(1)
            prior = self.latent_encoder(xc, yc)
            if yt is not None:
                posterior = self.latent_encoder(xt, yt)
                z = posterior.rsample()
            else:
                z = prior.rsample()
            z = z.unsqueeze(1).repeat(1, n_target, 1)
            r, w = self.deterministic_encoder(xc, yc, xt)
            dist = self.decoder(r, z, xt)
            if yt is not None:
                log_p = dist.log_prob(yt).sum(-1).mean()
                kl = D.kl_divergence(posterior, prior).sum(-1).mean()
                loss = -log_p + kl / n_target
            else:
                log_p = kl = loss = None
            return dist.mean, dist.stddev, loss, kl, w

    torch.manual_seed(4)
    model = ANP()
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    losses, kls = [], []
    for it in range(4):
        model.train()
        xc, yc, xt, yt = gp_like_tasks(torch)
        mu, sigma, loss, kl, w = model(xc, yc, xt, yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        kls.append(kl.item())
    model.eval()
    with torch.no_grad():
        mu, sigma, _, _, w = model(xc, yc, xt)
    return {"losses": losses, "kls": kls, "mu": mu, "sigma": sigma, "w": w,
            "grad": model.deterministic_encoder.cross_attn.in_proj_weight.grad,
            "grad_out": model.latent_encoder.self_attn.out_proj.weight.grad}


def test_attentive_np():
    ours, _ = run_both(attentive_np, rtol=2e-4, atol=1e-6)
    assert all(k >= 0 for k in ours["kls"])
    assert ours["w"].shape == (4, 4, 9, 5)  # per head
    np.testing.assert_allclose(ours["w"].sum(-1), 1.0, rtol=1e-5)


def neural_statistician(m):
    """The Neural Statistician (Edwards & Storkey 2017), reduced: a statistic network pools each set (masked mean of
    an element encoder) into q(c | D), a Normal with softplus scale; the latent c, drawn by rsample, conditions a
    Gaussian decoder of every element; the loss is the negative ELBO with ``kl_divergence(q(c|D), N(0, I))``
    through ``Independent``; trained with Adam; sets of different sizes padded in one batch."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = m.torch.distributions

    class Statistician(nn.Module):
        def __init__(self, x_dim=2, h=16, c_dim=3):
            super().__init__()
            self.element = nn.Sequential(nn.Linear(x_dim, h), nn.ELU(), nn.Linear(h, h), nn.ELU())
            self.post = nn.Linear(h, 2 * c_dim)
            self.decoder = nn.Sequential(nn.Linear(c_dim, h), nn.Tanh(), nn.Linear(h, 2 * x_dim))
            self.c_dim = c_dim

        def forward(self, x, mask):
            keep = (~mask).unsqueeze(-1).to(x.dtype)
            e = self.element(x) * keep
            pooled = e.sum(1) / keep.sum(1)
            mu, pre = self.post(pooled).chunk(2, -1)
            q_c = D.Independent(D.Normal(mu, F.softplus(pre) + 1e-4), 1)
            prior = D.Independent(D.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
            c = q_c.rsample()
            x_mu, x_pre = self.decoder(c).chunk(2, -1)
            p_x = D.Normal(x_mu.unsqueeze(1), F.softplus(x_pre).unsqueeze(1) + 1e-3)
            log_lik = (p_x.log_prob(x).sum(-1) * keep.squeeze(-1)).sum(1)
            kl = D.kl_divergence(q_c, prior)
            return -(log_lik - kl).mean(), kl, q_c.mean

    torch.manual_seed(14)
    model = Statistician()
    opt = optim.Adam(model.parameters(), lr=5e-3)
    centres = torch.randn(6, 1, 2) * 2
    x = centres + 0.3 * torch.randn(6, 5, 2)
    sizes = torch.tensor([5, 3, 4, 2, 5, 1])
    mask = torch.arange(5)[None] >= sizes[:, None]
    x = x.masked_fill(mask.unsqueeze(-1), 0.0)
    losses = []
    for step in range(5):
        loss, kl, c_mean = model(x, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "kl": kl.detach(), "c_mean": c_mean.detach(), "grad": model.post.weight.grad}


def test_neural_statistician():
    ours, _ = run_both(neural_statistician, rtol=2e-4, atol=1e-5)
    assert (ours["kl"] >= 0).all()
    assert ours["c_mean"].shape == (6, 3)
