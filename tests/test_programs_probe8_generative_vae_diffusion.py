# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Generative models (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and
the same noise, comparing losses, samples, parameters and gradients. pytorch/examples' VAE (``reparameterize`` with
``exp(0.5*logvar)``, ``binary_cross_entropy(..., reduction='sum')``, the closed-form KL) and a VAE written with
``torch.distributions`` (``Independent`` ``Normal``, ``kl_divergence``, ``log_prob`` of a Bernoulli with logits); a
diffusion model with a cosine schedule, v-prediction, classifier-free guidance and deterministic DDIM sampling."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# pytorch/examples' VAE
# ----------------------------------------------------------------------------------------------


def make_vae(m):
    torch, nn, F = m.torch, m.nn, m.F

    class VAE(nn.Module):
        def __init__(self):
            super(VAE, self).__init__()
            self.fc1 = nn.Linear(64, 32)
            self.fc21 = nn.Linear(32, 6)
            self.fc22 = nn.Linear(32, 6)
            self.fc3 = nn.Linear(6, 32)
            self.fc4 = nn.Linear(32, 64)
            self.noise = None  # the test feeds torch.randn_like's draws, the same in both libraries

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5 * logvar)
            eps = next(self.noise) if self.noise is not None else torch.randn_like(std)
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 64))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    return VAE()


def vae(m, weights, epochs=2):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(0)
    images = (rng.random((48, 1, 8, 8)) < 0.3).astype(np.float32)
    loader = m.data.DataLoader(m.data.TensorDataset(torch.tensor(images)), batch_size=16, shuffle=False)
    noise = [torch.tensor(rng.standard_normal((16, 6)).astype(np.float32)) for _ in range(3 * epochs)]
    model = load(m, make_vae(m), weights)
    model.noise = iter(noise)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)

    def loss_function(recon_x, x, mu, logvar):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 64), reduction='sum')
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        train_loss = 0
        for batch_idx, (data,) in enumerate(loader):
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        history.append(train_loss / len(loader.dataset))
    model.eval()
    with torch.no_grad():
        model.noise = iter([torch.zeros(16, 6)])
        recon, mu, logvar = model(torch.tensor(images[:16]))
        sample = model.decode(torch.tensor(rng.standard_normal((4, 6)).astype(np.float32))).cpu()
    return {"history": history, "recon": recon, "mu": mu, "sample": sample.view(4, 1, 8, 8),
            "grads": [p.grad for p in model.parameters()]}


def test_pytorch_examples_vae():
    weights = weights_of(make_vae)
    ours, _ = run_both(vae, weights, rtol=2e-5, atol=2e-6)
    assert ours["history"][1] < ours["history"][0]
    assert ours["sample"].shape == (4, 1, 8, 8) and ours["recon"].dtype == np.float32
    # the loss of one example by hand: BCE + KL, from chainrule's forward pieces
    model = load(OURS, make_vae(OURS), weights)
    x = OURS.torch.tensor((np.random.default_rng(1).random((1, 64)) < 0.3).astype(np.float32))
    model.noise = iter([OURS.torch.zeros(1, 6)])
    recon, mu, logvar = (t.detach().numpy().astype(np.float64) for t in model(x))
    xs = x.numpy()
    bce = -(xs * np.log(recon) + (1 - xs) * np.log(1 - recon)).sum()
    kld = -0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)).sum()
    w = model.fc1.weight.detach().numpy().astype(np.float64)
    h1 = np.maximum(xs @ w.T + model.fc1.bias.detach().numpy(), 0)
    np.testing.assert_allclose(mu, h1 @ model.fc21.weight.detach().numpy().T + model.fc21.bias.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    ours_loss = OURS.F.binary_cross_entropy(OURS.torch.tensor(recon), x.double(), reduction='sum').item() + kld
    assert ours_loss == pytest.approx(bce + kld, rel=1e-10)


# ----------------------------------------------------------------------------------------------
# A VAE written with torch.distributions (Independent Normal posterior, Bernoulli likelihood)
# ----------------------------------------------------------------------------------------------


def make_dist_vae(m):
    torch, nn = m.torch, m.nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 24), nn.Softplus(), nn.Linear(24, 2 * 3))

        def forward(self, x):
            loc, raw_scale = self.net(x).chunk(2, dim=-1)
            return loc, nn.functional.softplus(raw_scale) + 1e-4

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 24), nn.Softplus(), nn.Linear(24, 16))

        def forward(self, z):
            return self.net(z)

    return nn.ModuleDict({"encoder": Encoder(), "decoder": Decoder()})


def dist_vae(m, weights, steps=4, n_samples=2):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    rng = np.random.default_rng(2)
    x = torch.tensor((rng.random((10, 16)) < 0.4).astype(np.float64))
    eps = [torch.tensor(rng.standard_normal((n_samples, 10, 3))) for _ in range(steps)]
    model = load(m, make_dist_vae(m), weights).double()
    optimizer = optim.RMSprop(model.parameters(), lr=1e-3, centered=True)
    prior = D.Independent(D.Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1)
    history = []
    for step in range(steps):
        loc, scale = model["encoder"](x)
        q = D.Independent(D.Normal(loc, scale), reinterpreted_batch_ndims=1)
        z = loc + scale * eps[step]  # q.rsample((n_samples,)) with the noise fed in
        likelihood = D.Independent(D.Bernoulli(logits=model["decoder"](z)), 1)
        log_px_z = likelihood.log_prob(x)  # (n_samples, batch)
        kl = D.kl_divergence(q, prior)  # closed form
        elbo = (log_px_z.mean(0) - kl).mean()
        iwae = (torch.logsumexp(log_px_z + prior.log_prob(z) - q.log_prob(z), dim=0) - math.log(n_samples)).mean()
        loss = -elbo
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((elbo.item(), iwae.item(), kl.mean().item()))
    return {"history": history, "batch_shape": tuple(q.batch_shape), "event_shape": tuple(q.event_shape),
            "entropy": q.entropy(), "mean": likelihood.mean, "grads": [p.grad for p in model.parameters()]}


def test_vae_with_torch_distributions():
    weights = weights_of(make_dist_vae)
    ours, _ = run_both(dist_vae, weights, rtol=1e-10, atol=1e-12)
    assert ours["batch_shape"] == (10,) and ours["event_shape"] == (3,)
    elbo, iwae, kl = zip(*ours["history"])
    assert elbo[-1] > elbo[0] and all(k > 0 for k in kl)
    assert ours["mean"].shape == (2, 10, 16) and ours["entropy"].shape == (10,)


# ----------------------------------------------------------------------------------------------
# Diffusion: cosine schedule, v-prediction, classifier-free guidance, deterministic DDIM sampling
# ----------------------------------------------------------------------------------------------


def make_denoiser(m):
    torch, nn = m.torch, m.nn

    class SinusoidalPosEmb(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dim = dim

        def forward(self, x):
            half_dim = self.dim // 2
            emb = math.log(10000) / (half_dim - 1)
            emb = torch.exp(torch.arange(half_dim, device=x.device) * -emb)
            emb = x[:, None] * emb[None, :]
            return torch.cat((emb.sin(), emb.cos()), dim=-1)

    class Denoiser(nn.Module):
        def __init__(self, num_classes=3, dim=16):
            super().__init__()
            self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, dim * 2), nn.GELU(),
                                          nn.Linear(dim * 2, dim))
            self.classes_emb = nn.Embedding(num_classes + 1, dim)  # the last class is the null class
            self.null_class = num_classes
            self.net = nn.Sequential(nn.Linear(2 + dim, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 2))

        def forward(self, x, time, classes, cond_drop_prob=0.0, drop_mask=None):
            if drop_mask is None:
                drop_mask = torch.rand(classes.shape[0]) < cond_drop_prob
            classes = torch.where(drop_mask, torch.full_like(classes, self.null_class), classes)
            c = self.classes_emb(classes)
            t = self.time_mlp(time.float())
            return self.net(torch.cat([x, t + c], dim=-1))

        def forward_with_cond_scale(self, x, time, classes, cond_scale=1.0):
            logits = self.forward(x, time, classes, drop_mask=torch.zeros(classes.shape[0], dtype=torch.bool))
            if cond_scale == 1:
                return logits
            null_logits = self.forward(x, time, classes, drop_mask=torch.ones(classes.shape[0], dtype=torch.bool))
            return null_logits + (logits - null_logits) * cond_scale

    return Denoiser()


def cosine_beta_schedule(m, timesteps, s=0.008):
    torch = m.torch
    steps = timesteps + 1
    x = torch.linspace(0, timesteps, steps, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0, 0.999)


def diffusion(m, weights, steps=4, T=50):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_denoiser(m), weights)
    betas = cosine_beta_schedule(m, T)
    alphas = 1. - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    sqrt_alphas_cumprod = torch.sqrt(alphas_cumprod).float()
    sqrt_one_minus_alphas_cumprod = torch.sqrt(1. - alphas_cumprod).float()

    def extract(a, t, x_shape):
        b, *_ = t.shape
        out = a.gather(-1, t)
        return out.reshape(b, *((1,) * (len(x_shape) - 1)))

    rng = np.random.default_rng(11)
    centres = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    optimizer = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scaler_losses = []
    for step in range(steps):
        classes = rng.integers(0, 3, 32)
        x_start = torch.tensor(centres[classes] + 0.1 * rng.standard_normal((32, 2)).astype(np.float32))
        classes = torch.tensor(classes)
        t = torch.tensor(rng.integers(0, T, 32))
        noise = torch.tensor(rng.standard_normal((32, 2)).astype(np.float32))
        drop_mask = torch.tensor(rng.random(32) < 0.2)
        x_t = extract(sqrt_alphas_cumprod, t, x_start.shape) * x_start + \
            extract(sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        v = extract(sqrt_alphas_cumprod, t, x_start.shape) * noise - \
            extract(sqrt_one_minus_alphas_cumprod, t, x_start.shape) * x_start
        model_out = model(x_t, t, classes, drop_mask=drop_mask)
        loss = F.mse_loss(model_out, v, reduction='none')
        loss = loss.mean(dim=1)
        loss = loss.mean()
        optimizer.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scaler_losses.append(loss.item())

    # deterministic DDIM (eta = 0) with 10 of the 50 steps, guided by cond_scale 3
    times = torch.linspace(-1, T - 1, steps=11)
    times = list(reversed(times.int().tolist()))
    time_pairs = list(zip(times[:-1], times[1:]))
    img = torch.tensor(rng.standard_normal((6, 2)).astype(np.float32))
    classes = torch.tensor([0, 1, 2, 0, 1, 2])
    acp = alphas_cumprod.float()
    trajectory = []
    with torch.no_grad():
        for time, time_next in time_pairs:
            time_cond = torch.full((6,), time, dtype=torch.long)
            v = model.forward_with_cond_scale(img, time_cond, classes, cond_scale=3.)
            a = acp[time]
            x_start = a.sqrt() * img - (1 - a).sqrt() * v
            x_start = torch.clamp(x_start, min=-2., max=2.)
            pred_noise = (img - a.sqrt() * x_start) / (1 - a).sqrt()
            if time_next < 0:
                img = x_start
                continue
            alpha_next = acp[time_next]
            img = x_start * alpha_next.sqrt() + (1 - alpha_next).sqrt() * pred_noise
            trajectory.append(img.clone())
    return {"losses": scaler_losses, "betas": betas, "img": img, "trajectory": torch.stack(trajectory),
            "time_pairs": time_pairs, "grads": [p.grad for p in model.parameters()]}


def test_diffusion_cosine_schedule_cfg_and_ddim():
    weights = weights_of(make_denoiser)
    ours, _ = run_both(diffusion, weights, rtol=1e-4, atol=2e-5)
    betas = ours["betas"]
    s, T = 0.008, 50
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(betas, np.clip(1 - f[1:] / f[:-1], 0, 0.999), rtol=1e-12)
    assert betas.dtype == np.float64 and betas[-1] == 0.999
    assert ours["time_pairs"][0] == (49, 44) and ours["time_pairs"][-1] == (4, -1)
    assert ours["trajectory"].shape == (9, 6, 2) and np.abs(ours["img"]).max() <= 2.0
