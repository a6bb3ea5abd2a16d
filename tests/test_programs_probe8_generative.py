# ruff: noqa: B007, B023, E741, E731, F841, E712, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Generative models (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights and the same noise, comparing losses, samples, parameters and gradients.

pytorch/examples' VAE (``reparameterize`` with ``exp(0.5*logvar)``, ``binary_cross_entropy(...,
reduction='sum')``, the closed-form KL) and a VAE written with ``torch.distributions`` (``Independent``
``Normal``, ``kl_divergence``, ``log_prob`` of a Bernoulli with logits); RealNVP as the popular notebook
writes it (masks held in a frozen ``nn.Parameter``, a ``MultivariateNormal`` prior, ``log_det_J -=
s.sum(dim=1)``); Glow's blocks as rosinality's glow-pytorch writes them (data-dependent ActNorm with an
``initialized`` buffer, an invertible 1x1 convolution both by ``slogdet`` and LU-parametrised, an affine
coupling with a zero-initialised convolution, the squeeze by ``view``/``permute``); and a diffusion model
with a cosine schedule, v-prediction, classifier-free guidance and deterministic DDIM sampling."""

import math
from math import log

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
# RealNVP on two moons (the notebook everyone copies)
# ----------------------------------------------------------------------------------------------


def realnvp(m, seed=0, steps=5):
    torch, nn, optim = m.torch, m.nn, m.optim
    distributions = torch.distributions
    nets = lambda: nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(), nn.Linear(32, 32), nn.LeakyReLU(), nn.Linear(32, 2),
                                 nn.Tanh())
    nett = lambda: nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(), nn.Linear(32, 32), nn.LeakyReLU(), nn.Linear(32, 2))
    masks = torch.from_numpy(np.array([[0, 1], [1, 0]] * 3).astype(np.float32))
    prior = distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))

    class RealNVP(nn.Module):
        def __init__(self, nets, nett, mask, prior):
            super(RealNVP, self).__init__()

            self.prior = prior
            self.mask = nn.Parameter(mask, requires_grad=False)
            self.t = nn.ModuleList([nett() for _ in range(len(masks))])
            self.s = nn.ModuleList([nets() for _ in range(len(masks))])

        def g(self, z):
            x = z
            for i in range(len(self.t)):
                x_ = x * self.mask[i]
                s = self.s[i](x_) * (1 - self.mask[i])
                t = self.t[i](x_) * (1 - self.mask[i])
                x = x_ + (1 - self.mask[i]) * (x * torch.exp(s) + t)
            return x

        def f(self, x):
            log_det_J, z = x.new_zeros(x.shape[0]), x
            for i in reversed(range(len(self.t))):
                z_ = self.mask[i] * z
                s = self.s[i](z_) * (1 - self.mask[i])
                t = self.t[i](z_) * (1 - self.mask[i])
                z = (1 - self.mask[i]) * (z - t) * torch.exp(-s) + z_
                log_det_J -= s.sum(dim=1)
            return z, log_det_J

        def log_prob(self, x):
            z, logp = self.f(x)
            return self.prior.log_prob(z) + logp

        def sample(self, batchSize):
            z = self.prior.sample((batchSize, 1))
            logp = self.prior.log_prob(z)
            x = self.g(z)
            return x

    def make():
        return RealNVP(nets, nett, masks, prior)

    return make


def moons(n, seed):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return (np.stack([x, y], 1) + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)


def train_realnvp(m, weights, steps=5):
    torch, optim = m.torch, m.optim
    flow = load(m, realnvp(m)(), weights)
    optimizer = optim.Adam([p for p in flow.parameters() if p.requires_grad == True], lr=1e-3)
    history = []
    for t in range(steps):
        noisy_moons = moons(64, t)
        loss = -flow.log_prob(torch.from_numpy(noisy_moons)).mean()
        optimizer.zero_grad()
        loss.backward(retain_graph=True)
        optimizer.step()
        history.append(loss.item())
    x = torch.from_numpy(moons(8, 99))
    z, log_det = flow.f(x)
    samples = flow.sample(5)
    return {"history": history, "z": z, "log_det": log_det, "roundtrip": flow.g(z), "x": x,
            "sample_shape": tuple(samples.shape), "mask_grad": flow.mask.grad,
            "n_trainable": len([p for p in flow.parameters() if p.requires_grad]),
            "grads": [p.grad for p in flow.parameters() if p.requires_grad]}


def test_realnvp_two_moons():
    weights = weights_of(lambda m: realnvp(m)())
    ours, _ = run_both(train_realnvp, weights, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(ours["roundtrip"], ours["x"], atol=1e-5)  # g inverts f
    assert ours["sample_shape"] == (5, 1, 2) and ours["mask_grad"] is None and ours["n_trainable"] == 72
    assert ours["history"][-1] < ours["history"][0]


def test_realnvp_log_det_by_the_jacobian():
    """f's log-determinant equals log|det J| of f computed by autograd.functional.jacobian."""
    torch = OURS.torch
    flow = load(OURS, realnvp(OURS)(), weights_of(lambda m: realnvp(m)())).double()
    x = torch.tensor(moons(3, 5).astype(np.float64))
    z, log_det = flow.f(x)
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda v: flow.f(v.unsqueeze(0))[0].squeeze(0), x[i])
        sign, logabs = np.linalg.slogdet(J.numpy())
        assert logabs == pytest.approx(log_det[i].item(), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# Glow's blocks (rosinality/glow-pytorch): ActNorm, InvConv2d, InvConv2dLU, AffineCoupling, squeeze
# ----------------------------------------------------------------------------------------------

logabs = lambda x: (x.abs()).log()


def make_glow(m):
    torch, nn, F = m.torch, m.nn, m.F
    from math import log, pi

    class ActNorm(nn.Module):
        def __init__(self, in_channel, logdet=True):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(1, in_channel, 1, 1))
            self.scale = nn.Parameter(torch.ones(1, in_channel, 1, 1))
            self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
            self.logdet = logdet

        def initialize(self, input):
            with torch.no_grad():
                flatten = input.permute(1, 0, 2, 3).contiguous().view(input.shape[1], -1)
                mean = (flatten.mean(1).unsqueeze(1).unsqueeze(2).unsqueeze(3).permute(1, 0, 2, 3))
                std = (flatten.std(1).unsqueeze(1).unsqueeze(2).unsqueeze(3).permute(1, 0, 2, 3))
                self.loc.data.copy_(-mean)
                self.scale.data.copy_(1 / (std + 1e-6))

        def forward(self, input):
            _, _, height, width = input.shape
            if self.initialized.item() == 0:
                self.initialize(input)
                self.initialized.fill_(1)
            log_abs = logabs(self.scale)
            logdet = height * width * torch.sum(log_abs)
            if self.logdet:
                return self.scale * (input + self.loc), logdet
            else:
                return self.scale * (input + self.loc)

        def reverse(self, output):
            return output / self.scale - self.loc

    class InvConv2d(nn.Module):
        def __init__(self, in_channel):
            super().__init__()
            weight = torch.randn(in_channel, in_channel)
            q, _ = torch.linalg.qr(weight)
            weight = q.unsqueeze(2).unsqueeze(3)
            self.weight = nn.Parameter(weight)

        def forward(self, input):
            _, _, height, width = input.shape
            out = F.conv2d(input, self.weight)
            logdet = (height * width * torch.slogdet(self.weight.squeeze().double())[1].float())
            return out, logdet

        def reverse(self, output):
            return F.conv2d(output, self.weight.squeeze().inverse().unsqueeze(2).unsqueeze(3))

    class InvConv2dLU(nn.Module):
        def __init__(self, in_channel):
            super().__init__()
            weight = torch.randn(in_channel, in_channel)
            q, _ = torch.linalg.qr(weight)
            w_p, w_l, w_u = torch.linalg.lu(q)
            w_s = torch.diag(w_u)
            w_u = torch.triu(w_u, 1)
            u_mask = torch.triu(torch.ones_like(w_u), 1)
            l_mask = u_mask.T
            self.register_buffer("w_p", w_p)
            self.register_buffer("u_mask", u_mask)
            self.register_buffer("l_mask", l_mask)
            self.register_buffer("s_sign", torch.sign(w_s))
            self.register_buffer("l_eye", torch.eye(l_mask.shape[0]))
            self.w_l = nn.Parameter(w_l)
            self.w_s = nn.Parameter(logabs(w_s))
            self.w_u = nn.Parameter(w_u)

        def forward(self, input):
            _, _, height, width = input.shape
            weight = self.calc_weight()
            out = F.conv2d(input, weight)
            logdet = height * width * torch.sum(self.w_s)
            return out, logdet

        def calc_weight(self):
            weight = (self.w_p @ (self.w_l * self.l_mask + self.l_eye)
                      @ ((self.w_u * self.u_mask) + torch.diag(self.s_sign * torch.exp(self.w_s))))
            return weight.unsqueeze(2).unsqueeze(3)

        def reverse(self, output):
            weight = self.calc_weight()
            return F.conv2d(output, weight.squeeze().inverse().unsqueeze(2).unsqueeze(3))

    class ZeroConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, padding=1):
            super().__init__()
            self.conv = nn.Conv2d(in_channel, out_channel, 3, padding=0)
            self.conv.weight.data.zero_()
            self.conv.bias.data.zero_()
            self.scale = nn.Parameter(torch.zeros(1, out_channel, 1, 1))

        def forward(self, input):
            out = F.pad(input, [1, 1, 1, 1], value=1)
            out = self.conv(out)
            out = out * torch.exp(self.scale * 3)
            return out

    class AffineCoupling(nn.Module):
        def __init__(self, in_channel, filter_size=8, affine=True):
            super().__init__()
            self.affine = affine
            self.net = nn.Sequential(
                nn.Conv2d(in_channel // 2, filter_size, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(filter_size, filter_size, 1), nn.ReLU(inplace=True),
                ZeroConv2d(filter_size, in_channel if self.affine else in_channel // 2))
            self.net[0].weight.data.normal_(0, 0.05)
            self.net[0].bias.data.zero_()
            self.net[2].weight.data.normal_(0, 0.05)
            self.net[2].bias.data.zero_()

        def forward(self, input):
            in_a, in_b = input.chunk(2, 1)
            if self.affine:
                log_s, t = self.net(in_a).chunk(2, 1)
                s = F.sigmoid(log_s + 2)
                out_b = (in_b + t) * s
                logdet = torch.sum(torch.log(s).view(input.shape[0], -1), 1)
            else:
                net_out = self.net(in_a)
                out_b = in_b + net_out
                logdet = None
            return torch.cat([in_a, out_b], 1), logdet

        def reverse(self, output):
            out_a, out_b = output.chunk(2, 1)
            log_s, t = self.net(out_a).chunk(2, 1)
            s = F.sigmoid(log_s + 2)
            in_b = out_b / s - t
            return torch.cat([out_a, in_b], 1)

    class Flow(nn.Module):
        def __init__(self, in_channel, conv_lu=True):
            super().__init__()
            self.actnorm = ActNorm(in_channel)
            self.invconv = InvConv2dLU(in_channel) if conv_lu else InvConv2d(in_channel)
            self.coupling = AffineCoupling(in_channel)

        def forward(self, input):
            out, logdet = self.actnorm(input)
            out, det1 = self.invconv(out)
            out, det2 = self.coupling(out)
            logdet = logdet + det1
            if det2 is not None:
                logdet = logdet + det2
            return out, logdet

        def reverse(self, output):
            input = self.coupling.reverse(output)
            input = self.invconv.reverse(input)
            return self.actnorm.reverse(input)

    def gaussian_log_p(x, mean, log_sd):
        return -0.5 * log(2 * pi) - log_sd - 0.5 * (x - mean) ** 2 / torch.exp(2 * log_sd)

    def squeeze(input):
        b_size, n_channel, height, width = input.shape
        squeezed = input.view(b_size, n_channel, height // 2, 2, width // 2, 2)
        squeezed = squeezed.permute(0, 1, 3, 5, 2, 4)
        return squeezed.contiguous().view(b_size, n_channel * 4, height // 2, width // 2)

    class Glow(nn.Module):
        def __init__(self):
            super().__init__()
            self.flows = nn.ModuleList([Flow(4, conv_lu=True), Flow(4, conv_lu=False)])
            self.prior = ZeroConv2d(4, 8)

        def forward(self, input):
            out = squeeze(input)
            logdet = 0
            for flow in self.flows:
                out, det = flow(out)
                logdet = logdet + det
            zero = torch.zeros_like(out)
            mean, log_sd = self.prior(zero).chunk(2, 1)
            log_p = gaussian_log_p(out, mean, log_sd).view(input.shape[0], -1).sum(1)
            return log_p, logdet, out

        def reverse(self, z):
            for flow in self.flows[::-1]:
                z = flow.reverse(z)
            b, c, h, w = z.shape
            return z.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).contiguous().view(b, c // 4, h * 2, w * 2)

    return Glow()


def glow(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(7)
    n_bins = 2.0 ** 5
    images = rng.random((6, 1, 4, 4)).astype(np.float32) - 0.5
    model = load(m, make_glow(m), weights)
    for flow in model.flows:
        flow.actnorm.initialized.fill_(0)  # data-dependent init on the first batch, in both libraries
    # SGD, not glow-pytorch's Adam: after ActNorm's data-dependent init the gradient of its loc is zero up
    # to rounding, which Adam's g / sqrt(v) turns into a full step of either sign (in either library)
    optimizer = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    history = []
    n_pixel = 16
    for step in range(steps):
        image = torch.tensor(images)
        dequantised = image + torch.tensor(rng.random(images.shape).astype(np.float32)) / n_bins
        log_p, logdet, z = model(dequantised)
        logdet = logdet.mean()
        loss = -log(n_bins) * n_pixel + logdet + log_p
        loss = (-loss / (log(2) * n_pixel)).mean()
        model.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), log_p.mean().item(), logdet.item()))
    with torch.no_grad():
        log_p, logdet, z = model(torch.tensor(images))
        roundtrip = model.reverse(z)
    return {"history": history, "z": z, "roundtrip": roundtrip,
            "actnorm": [f.actnorm.loc.detach() for f in model.flows],
            "initialized": [f.actnorm.initialized.item() for f in model.flows],
            "grads": [p.grad for p in model.parameters()]}


def test_glow_blocks():
    torch = OURS.torch
    OURS.torch.manual_seed(0)
    weights = weights_of(make_glow)
    ours, _ = run_both(glow, weights, rtol=1e-4, atol=1e-5)
    images = np.random.default_rng(7).random((6, 1, 4, 4)).astype(np.float32) - 0.5
    np.testing.assert_allclose(ours["roundtrip"], images, atol=1e-5)
    assert ours["initialized"] == [1, 1] and ours["history"][-1][0] < ours["history"][0][0]
    grads = ours["grads"]
    assert all(g is not None for g in grads)


def test_invertible_convolutions_log_det():
    """InvConv2d's slogdet and InvConv2dLU's sum(w_s) both equal log|det W| (NumPy) times H·W, and the
    gradient of slogdet is W^-T."""
    torch = OURS.torch
    torch.manual_seed(3)
    model = make_glow(OURS)
    x = torch.randn(2, 4, 3, 5)
    for flow in model.flows:
        conv = flow.invconv
        out, logdet = conv(x)
        W = (conv.calc_weight() if hasattr(conv, "calc_weight") else conv.weight).detach().squeeze().numpy()
        assert logdet.item() == pytest.approx(15 * np.linalg.slogdet(W.astype(np.float64))[1], abs=1e-4)
        np.testing.assert_allclose(conv.reverse(out).detach().numpy(), x.numpy(), atol=1e-5)
    w = model.flows[1].invconv.weight
    torch.slogdet(w.squeeze().double())[1].backward()
    np.testing.assert_allclose(w.grad.squeeze().numpy(), np.linalg.inv(w.detach().squeeze().numpy()).T, rtol=1e-5,
                               atol=1e-6)


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


# ----------------------------------------------------------------------------------------------
# PixelCNN's masked convolutions (type A then B), trained by cross-entropy over 4 intensity levels
# ----------------------------------------------------------------------------------------------


def make_pixelcnn(m):
    torch, nn = m.torch, m.nn

    class MaskedConv2d(nn.Conv2d):
        def __init__(self, mask_type, *args, **kwargs):
            super(MaskedConv2d, self).__init__(*args, **kwargs)
            assert mask_type in {'A', 'B'}
            self.register_buffer('mask', self.weight.data.clone())
            _, _, kH, kW = self.weight.size()
            self.mask.fill_(1)
            self.mask[:, :, kH // 2, kW // 2 + (mask_type == 'B'):] = 0
            self.mask[:, :, kH // 2 + 1:] = 0

        def forward(self, x):
            self.weight.data *= self.mask
            return super(MaskedConv2d, self).forward(x)

    fm = 8
    return nn.Sequential(
        MaskedConv2d('A', 1, fm, 5, 1, 2, bias=False), nn.BatchNorm2d(fm), nn.ReLU(True),
        MaskedConv2d('B', fm, fm, 3, 1, 1, bias=False), nn.BatchNorm2d(fm), nn.ReLU(True),
        nn.Conv2d(fm, 4, 1))


def pixelcnn(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(13)
    levels = rng.integers(0, 4, (6, 1, 7, 7))
    net = load(m, make_pixelcnn(m), weights)
    optimizer = optim.Adam(net.parameters())
    history = []
    for step in range(steps):
        input = torch.tensor(levels.astype(np.float32) / 3)
        target = torch.tensor(levels[:, 0])
        loss = F.cross_entropy(net(input), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    # sampling, pixel by pixel, with the probabilities fed to the same inverse-CDF draw
    sample = torch.zeros(2, 1, 7, 7)
    net.train(False)
    u = rng.random((2, 7, 7))
    with torch.no_grad():
        for i in range(7):
            for j in range(7):
                out = net(sample)
                probs = F.softmax(out[:, :, i, j], dim=1)
                cdf = probs.cumsum(1)
                k = (cdf < torch.tensor(u[:, i, j], dtype=torch.float32).unsqueeze(1)).sum(1).clamp(max=3)
                sample[:, :, i, j] = (k.float() / 3).unsqueeze(1)
    return {"history": history, "sample": sample, "weight0": net[0].weight.detach(),
            "grads": [p.grad for p in net.parameters()], "mask_b": net[3].mask[0, 0]}


def test_pixelcnn_masked_convolutions():
    weights = weights_of(make_pixelcnn)
    ours, _ = run_both(pixelcnn, weights, rtol=2e-5, atol=2e-6)
    assert ours["mask_b"].tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    w = ours["weight0"]
    assert (w[:, :, 2, 2:] == 0).all() and (w[:, :, 3:] == 0).all()  # type A sees no centre, nothing below
    assert set(np.unique(ours["sample"] * 3).round().astype(int)) <= {0, 1, 2, 3}


def test_pixelcnn_receptive_field_is_causal():
    """The gradient of one output pixel's logits reaches only the pixels above it and to its left."""
    torch = OURS.torch
    net = load(OURS, make_pixelcnn(OURS), weights_of(make_pixelcnn)).eval()
    x = torch.rand(1, 1, 7, 7, requires_grad=True)
    net(x)[0, :, 3, 3].sum().backward()
    g = x.grad[0, 0].abs().numpy()
    assert g[3, 3] == 0 and (g[3, 4:] == 0).all() and (g[4:] == 0).all()
    assert g[3, :3].sum() > 0 and g[:3].sum() > 0


# ----------------------------------------------------------------------------------------------
# MADE (karpathy/pytorch-made): masked linear layers, orderings, connectivity-agnostic training
# ----------------------------------------------------------------------------------------------


def make_made(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MaskedLinear(nn.Linear):
        """ same as Linear except has a configurable mask on the weights """

        def __init__(self, in_features, out_features, bias=True):
            super().__init__(in_features, out_features, bias)
            self.register_buffer('mask', torch.ones(out_features, in_features))

        def set_mask(self, mask):
            self.mask.data.copy_(torch.from_numpy(mask.astype(np.uint8).T))

        def forward(self, input):
            return F.linear(input, self.mask * self.weight, self.bias)

    class MADE(nn.Module):
        def __init__(self, nin, hidden_sizes, nout, num_masks=1, natural_ordering=False):
            super().__init__()
            self.nin = nin
            self.nout = nout
            self.hidden_sizes = hidden_sizes
            assert self.nout % self.nin == 0, "nout must be integer multiple of nin"

            self.net = []
            hs = [nin] + hidden_sizes + [nout]
            for h0, h1 in zip(hs, hs[1:]):
                self.net.extend([MaskedLinear(h0, h1), nn.ReLU()])
            self.net.pop()  # pop the last ReLU for the output layer
            self.net = nn.Sequential(*self.net)

            self.natural_ordering = natural_ordering
            self.num_masks = num_masks
            self.seed = 0  # for cycling through num_masks orderings

            self.m = {}
            self.update_masks()  # builds the initial self.m connectivity

        def update_masks(self):
            if self.m and self.num_masks == 1:
                return  # only a single seed, skip for efficiency
            L = len(self.hidden_sizes)

            rng = np.random.RandomState(self.seed)
            self.seed = (self.seed + 1) % self.num_masks

            self.m[-1] = np.arange(self.nin) if self.natural_ordering else rng.permutation(self.nin)
            for l in range(L):
                self.m[l] = rng.randint(self.m[l - 1].min(), self.nin - 1, size=self.hidden_sizes[l])

            masks = [self.m[l - 1][:, None] <= self.m[l][None, :] for l in range(L)]
            masks.append(self.m[L - 1][:, None] < self.m[-1][None, :])

            if self.nout > self.nin:
                k = int(self.nout / self.nin)
                masks[-1] = np.concatenate([masks[-1]] * k, axis=1)

            layers = [l for l in self.net.modules() if isinstance(l, MaskedLinear)]
            for l, m_ in zip(layers, masks):
                l.set_mask(m_)

        def forward(self, x):
            return self.net(x)

    return MADE(6, [24, 24], 6, num_masks=2)


def made(m, weights, steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_made(m), weights)
    model.seed = 0
    model.update_masks()
    rng = np.random.default_rng(14)
    xtr = torch.tensor((rng.random((32, 6)) < 0.3).astype(np.float32))
    opt = optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.StepLR(opt, step_size=45, gamma=0.1)
    history = []
    for step in range(steps):
        model.update_masks()
        xbhat = model(xtr)
        loss = F.binary_cross_entropy_with_logits(xbhat, xtr, reduction='sum') / xtr.size(0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        scheduler.step()
        history.append(loss.item())
    return {"history": history, "masks": [l.mask for l in model.net if hasattr(l, "mask")],
            "grads": [p.grad for p in model.parameters()], "mask_dtype": model.net[0].mask.dtype == torch.float32}


def test_made_autoregressive_masks():
    weights = weights_of(make_made)
    ours, _ = run_both(made, weights, rtol=1e-5, atol=1e-6)
    assert ours["mask_dtype"] and ours["masks"][0].shape == (24, 6)
    # the autoregressive property: output d depends only on inputs before d in the ordering
    torch = OURS.torch
    model = load(OURS, make_made(OURS), weights)
    x = torch.rand(1, 6, requires_grad=True)
    order = model.m[-1]
    for d in range(6):
        (g,) = torch.autograd.grad(model(x)[0, d], x)
        assert all(g[0, e].item() == 0 for e in range(6) if order[e] >= order[d])


# ----------------------------------------------------------------------------------------------
# Neural spline flows (nflows' rational-quadratic spline with linear tails), in a coupling layer
# ----------------------------------------------------------------------------------------------

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def spline_functions(m):
    torch, F = m.torch, m.F

    def searchsorted(bin_locations, inputs, eps=1e-6):
        bin_locations[..., -1] += eps
        return torch.sum(inputs[..., None] >= bin_locations, dim=-1) - 1

    def unconstrained_rational_quadratic_spline(inputs, unnormalized_widths, unnormalized_heights,
                                                unnormalized_derivatives, inverse=False, tails="linear",
                                                tail_bound=1.0, min_bin_width=DEFAULT_MIN_BIN_WIDTH,
                                                min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
                                                min_derivative=DEFAULT_MIN_DERIVATIVE):
        inside_interval_mask = (inputs >= -tail_bound) & (inputs <= tail_bound)
        outside_interval_mask = ~inside_interval_mask

        outputs = torch.zeros_like(inputs)
        logabsdet = torch.zeros_like(inputs)

        if tails == "linear":
            unnormalized_derivatives = F.pad(unnormalized_derivatives, pad=(1, 1))
            constant = np.log(np.exp(1 - min_derivative) - 1)
            unnormalized_derivatives[..., 0] = constant
            unnormalized_derivatives[..., -1] = constant

            outputs[outside_interval_mask] = inputs[outside_interval_mask]
            logabsdet[outside_interval_mask] = 0
        else:
            raise RuntimeError(f"{tails} tails are not implemented.")

        if torch.any(inside_interval_mask):
            (outputs[inside_interval_mask], logabsdet[inside_interval_mask]) = rational_quadratic_spline(
                inputs=inputs[inside_interval_mask],
                unnormalized_widths=unnormalized_widths[inside_interval_mask, :],
                unnormalized_heights=unnormalized_heights[inside_interval_mask, :],
                unnormalized_derivatives=unnormalized_derivatives[inside_interval_mask, :],
                inverse=inverse, left=-tail_bound, right=tail_bound, bottom=-tail_bound, top=tail_bound,
                min_bin_width=min_bin_width, min_bin_height=min_bin_height, min_derivative=min_derivative)

        return outputs, logabsdet

    def rational_quadratic_spline(inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
                                  inverse=False, left=0.0, right=1.0, bottom=0.0, top=1.0,
                                  min_bin_width=DEFAULT_MIN_BIN_WIDTH, min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
                                  min_derivative=DEFAULT_MIN_DERIVATIVE):
        if torch.min(inputs) < left or torch.max(inputs) > right:
            raise ValueError("Input to a transform is not within its domain")

        num_bins = unnormalized_widths.shape[-1]

        widths = F.softmax(unnormalized_widths, dim=-1)
        widths = min_bin_width + (1 - min_bin_width * num_bins) * widths
        cumwidths = torch.cumsum(widths, dim=-1)
        cumwidths = F.pad(cumwidths, pad=(1, 0), mode="constant", value=0.0)
        cumwidths = (right - left) * cumwidths + left
        cumwidths[..., 0] = left
        cumwidths[..., -1] = right
        widths = cumwidths[..., 1:] - cumwidths[..., :-1]

        derivatives = min_derivative + F.softplus(unnormalized_derivatives)

        heights = F.softmax(unnormalized_heights, dim=-1)
        heights = min_bin_height + (1 - min_bin_height * num_bins) * heights
        cumheights = torch.cumsum(heights, dim=-1)
        cumheights = F.pad(cumheights, pad=(1, 0), mode="constant", value=0.0)
        cumheights = (top - bottom) * cumheights + bottom
        cumheights[..., 0] = bottom
        cumheights[..., -1] = top
        heights = cumheights[..., 1:] - cumheights[..., :-1]

        if inverse:
            bin_idx = searchsorted(cumheights, inputs)[..., None]
        else:
            bin_idx = searchsorted(cumwidths, inputs)[..., None]

        input_cumwidths = cumwidths.gather(-1, bin_idx)[..., 0]
        input_bin_widths = widths.gather(-1, bin_idx)[..., 0]

        input_cumheights = cumheights.gather(-1, bin_idx)[..., 0]
        delta = heights / widths
        input_delta = delta.gather(-1, bin_idx)[..., 0]

        input_derivatives = derivatives.gather(-1, bin_idx)[..., 0]
        input_derivatives_plus_one = derivatives[..., 1:].gather(-1, bin_idx)[..., 0]

        input_heights = heights.gather(-1, bin_idx)[..., 0]

        if inverse:
            a = (inputs - input_cumheights) * (input_derivatives + input_derivatives_plus_one - 2 * input_delta) \
                + input_heights * (input_delta - input_derivatives)
            b = input_heights * input_derivatives - (inputs - input_cumheights) * (
                input_derivatives + input_derivatives_plus_one - 2 * input_delta)
            c = -input_delta * (inputs - input_cumheights)

            discriminant = b.pow(2) - 4 * a * c
            assert (discriminant >= 0).all()

            root = (2 * c) / (-b - torch.sqrt(discriminant))
            outputs = root * input_bin_widths + input_cumwidths

            theta_one_minus_theta = root * (1 - root)
            denominator = input_delta + (
                (input_derivatives + input_derivatives_plus_one - 2 * input_delta) * theta_one_minus_theta)
            derivative_numerator = input_delta.pow(2) * (
                input_derivatives_plus_one * root.pow(2) + 2 * input_delta * theta_one_minus_theta
                + input_derivatives * (1 - root).pow(2))
            logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)

            return outputs, -logabsdet
        else:
            theta = (inputs - input_cumwidths) / input_bin_widths
            theta_one_minus_theta = theta * (1 - theta)

            numerator = input_heights * (input_delta * theta.pow(2) + input_derivatives * theta_one_minus_theta)
            denominator = input_delta + (
                (input_derivatives + input_derivatives_plus_one - 2 * input_delta) * theta_one_minus_theta)
            outputs = input_cumheights + numerator / denominator

            derivative_numerator = input_delta.pow(2) * (
                input_derivatives_plus_one * theta.pow(2) + 2 * input_delta * theta_one_minus_theta
                + input_derivatives * (1 - theta).pow(2))
            logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)

            return outputs, logabsdet

    return unconstrained_rational_quadratic_spline


def make_spline_coupling(m):
    nn = m.nn
    num_bins = 5
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2 * (3 * num_bins - 1)))


def spline_flow(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    spline = spline_functions(m)
    net = load(m, make_spline_coupling(m), weights).double()
    num_bins = 5
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    base = torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))

    def forward(x, inverse=False):
        identity, transform = x[:, :2], x[:, 2:]
        params = net(identity).view(x.shape[0], 2, 3 * num_bins - 1)
        uw, uh, ud = params[..., :num_bins], params[..., num_bins:2 * num_bins], params[..., 2 * num_bins:]
        uw, uh = uw / np.sqrt(16), uh / np.sqrt(16)
        out, logabsdet = spline(transform, uw, uh, ud, inverse=inverse, tails="linear", tail_bound=2.0)
        return torch.cat([identity, out], dim=1), logabsdet.sum(-1)

    rng = np.random.default_rng(19)
    data = torch.tensor(np.concatenate([rng.standard_normal((64, 2)), 2.5 * np.tanh(rng.standard_normal((64, 2)))], 1))
    data[0, 2] = 3.0  # beyond the tail bound: the linear tail
    optimizer = optim.Adam(net.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        z, logdet = forward(data)
        loss = -(base.log_prob(z).sum(-1) + logdet).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    z, logdet = forward(data)
    x_back, logdet_inv = forward(z.detach(), inverse=True)
    return {"history": history, "z": z, "logdet": logdet, "x_back": x_back, "logdet_inv": logdet_inv,
            "data": data, "grads": [p.grad for p in net.parameters()]}


def test_neural_spline_flow():
    weights = weights_of(make_spline_coupling)
    ours, _ = run_both(spline_flow, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["x_back"], ours["data"], atol=1e-9)  # the inverse inverts
    np.testing.assert_allclose(ours["logdet_inv"], -ours["logdet"], atol=1e-9)
    assert ours["z"][0, 2] == 3.0  # the linear tail is the identity
    assert ours["history"][-1] < ours["history"][0]


def test_spline_log_det_by_autograd():
    """The spline's logabsdet equals log dz/dx by autograd, elementwise (the transform is elementwise)."""
    torch = OURS.torch
    spline = spline_functions(OURS)
    rng = np.random.default_rng(20)
    x = torch.tensor(rng.uniform(-1.9, 1.9, 7), requires_grad=True)
    uw, uh, ud = (torch.tensor(rng.standard_normal((7, 4))) for _ in range(3))
    y, logabsdet = spline(x, uw, uh, ud[:, :3], tail_bound=2.0)
    (dy,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(np.log(dy.numpy()), logabsdet.detach().numpy(), rtol=1e-10, atol=1e-12)
