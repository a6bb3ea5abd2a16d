# ruff: noqa: E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch vision programs (see tests/pytorch_programs.py), each run unchanged but for its imports on chainrule
and on PyTorch from the same weights, comparing losses, parameters and gradients. A WGAN-GP step (gradient penalty by
``torch.autograd.grad(create_graph=True)``, a critic with InstanceNorm and ``spectral_norm``, a generator with
``ConvTranspose2d(output_padding=)`` and PixelShuffle, Adam(betas=(0.0, 0.9))); a small Glow (ActNorm's
data-dependent initialisation, an invertible 1x1 convolution by ``slogdet``)."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# WGAN-GP: a gradient penalty through create_graph, spectral_norm, PixelShuffle, two Adams
# ----------------------------------------------------------------------------------------------


def wgan_nets(m):
    torch, nn = m.torch, m.nn

    class Generator(nn.Module):
        def __init__(self, nz=3):
            super().__init__()
            self.fc = nn.Linear(nz, 4 * 2 * 2)
            self.up = nn.Sequential(
                nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, bias=False), nn.BatchNorm2d(4),
                nn.ReLU(True),
                nn.Conv2d(4, 4, 3, padding=1), nn.PixelShuffle(2), nn.Tanh(),
            )

        def forward(self, z):
            return self.up(self.fc(z).view(-1, 4, 2, 2))

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.utils.spectral_norm(nn.Conv2d(1, 4, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(4, 8, 4, stride=2, padding=1, bias=False), nn.InstanceNorm2d(8, affine=True),
                nn.LeakyReLU(0.2),
            )
            self.out = nn.Linear(8 * 2 * 2, 1)

        def forward(self, x):
            return self.out(self.main(x).flatten(1))

    return nn.ModuleDict({"G": Generator(), "D": Critic()})


def wgan_gp(m, weights, steps=3, n_critic=2, lambda_gp=10.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    nets = load(m, wgan_nets(m), weights)
    netG, netD = nets["G"], nets["D"]
    optG = optim.Adam(netG.parameters(), lr=1e-3, betas=(0.0, 0.9))
    optD = optim.Adam(netD.parameters(), lr=1e-3, betas=(0.0, 0.9))
    rng = np.random.default_rng(2)
    real_all = torch.tensor(np.tanh(rng.standard_normal((steps * n_critic, 4, 1, 8, 8))).astype(np.float32))
    noise_all = torch.tensor(rng.standard_normal((steps * (n_critic + 1), 4, 3)).astype(np.float32))
    alphas = torch.tensor(rng.random((steps * n_critic, 4, 1, 1, 1)).astype(np.float32))

    def gradient_penalty(real, fake, alpha):
        interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        d_interpolates = netD(interpolates)
        gradients = torch.autograd.grad(outputs=d_interpolates, inputs=interpolates,
                                        grad_outputs=torch.ones_like(d_interpolates),
                                        create_graph=True, retain_graph=True, only_inputs=True)[0]
        gradients = gradients.view(gradients.size(0), -1)
        return ((gradients.norm(2, dim=1) - 1) ** 2).mean()

    d_losses, g_losses, gps = [], [], []
    k = 0
    for it in range(steps):
        for p in netD.parameters():
            p.requires_grad = True
        for c in range(n_critic):
            real = real_all[it * n_critic + c]
            fake = netG(noise_all[k]).detach()
            k += 1
            optD.zero_grad()
            gp = gradient_penalty(real, fake, alphas[it * n_critic + c])
            d_loss = -torch.mean(netD(real)) + torch.mean(netD(fake)) + lambda_gp * gp
            d_loss.backward()
            optD.step()
            d_losses.append(d_loss.item())
            gps.append(gp.item())
        for p in netD.parameters():
            p.requires_grad = False  # no critic gradients during the generator's step
        optG.zero_grad()
        g_loss = -torch.mean(netD(netG(noise_all[k])))
        k += 1
        g_loss.backward()
        optG.step()
        g_losses.append(g_loss.item())
    critic_grads = [p.grad for p in netD.parameters()]
    sn = netD.main[0]
    return (d_losses, g_losses, gps, [p.detach() for p in nets.parameters()], sn.weight_u, sn.weight,
            critic_grads, netG.up[1].running_mean)


def test_wgan_gp_gradient_penalty_spectral_norm():
    weights = weights_of(wgan_nets)
    assert "D.main.0.weight_orig" in weights and "D.main.0.weight_u" in weights
    (d_losses, g_losses, gps, params, u, w, critic_grads, rmean), _ = run_both(wgan_gp, weights, rtol=1e-4,
                                                                               atol=1e-5)
    assert all(gp > 0 for gp in gps) and len(d_losses) == 6 and len(g_losses) == 3
    assert np.linalg.svd(w.reshape(4, -1), compute_uv=False)[0] < 1.2  # about 1 after the power iteration


# ----------------------------------------------------------------------------------------------
# Glow (rosinality/glow-pytorch, in small): ActNorm with data-dependent initialisation (a uint8 buffer
# as its flag), an invertible 1x1 convolution with slogdet, affine coupling, squeeze, the likelihood
# ----------------------------------------------------------------------------------------------

logabs = lambda x: x.abs().log()


def glow(m):
    torch, nn, F = m.torch, m.nn, m.F

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
                mean = flatten.mean(1).unsqueeze(1).unsqueeze(2).unsqueeze(3).permute(1, 0, 2, 3)
                std = flatten.std(1).unsqueeze(1).unsqueeze(2).unsqueeze(3).permute(1, 0, 2, 3)
                self.loc.data.copy_(-mean)
                self.scale.data.copy_(1 / (std + 1e-6))

        def forward(self, input):
            _, _, height, width = input.shape
            if self.initialized.item() == 0:
                self.initialize(input)
                self.initialized.fill_(1)
            log_abs = logabs(self.scale)
            logdet = height * width * torch.sum(log_abs)
            return self.scale * (input + self.loc), logdet

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
            logdet = height * width * torch.slogdet(self.weight.squeeze().double())[1].float()
            return out, logdet

        def reverse(self, output):
            return F.conv2d(output, self.weight.squeeze().inverse().unsqueeze(2).unsqueeze(3))

    class AffineCoupling(nn.Module):
        def __init__(self, in_channel, filter_size=8):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(in_channel // 2, filter_size, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(filter_size, in_channel, 3, padding=1))

        def forward(self, input):
            in_a, in_b = input.chunk(2, 1)
            log_s, t = self.net(in_a).chunk(2, 1)
            s = F.sigmoid(log_s + 2)
            out_b = (in_b + t) * s
            logdet = torch.sum(torch.log(s).view(input.shape[0], -1), 1)
            return torch.cat([in_a, out_b], 1), logdet

        def reverse(self, output):
            out_a, out_b = output.chunk(2, 1)
            log_s, t = self.net(out_a).chunk(2, 1)
            s = F.sigmoid(log_s + 2)
            return torch.cat([out_a, out_b / s - t], 1)

    class Flow(nn.Module):
        def __init__(self, in_channel):
            super().__init__()
            self.actnorm = ActNorm(in_channel)
            self.invconv = InvConv2d(in_channel)
            self.coupling = AffineCoupling(in_channel)

        def forward(self, input):
            out, logdet = self.actnorm(input)
            out, det1 = self.invconv(out)
            out, det2 = self.coupling(out)
            return out, logdet + det1 + det2

        def reverse(self, output):
            return self.actnorm.reverse(self.invconv.reverse(self.coupling.reverse(output)))

    class Glow(nn.Module):
        def __init__(self, in_channel=1, n_flow=2):
            super().__init__()
            squeeze_dim = in_channel * 4
            self.flows = nn.ModuleList([Flow(squeeze_dim) for _ in range(n_flow)])

        def squeeze(self, input):
            b_size, n_channel, height, width = input.shape
            squeezed = input.view(b_size, n_channel, height // 2, 2, width // 2, 2)
            squeezed = squeezed.permute(0, 1, 3, 5, 2, 4)
            return squeezed.contiguous().view(b_size, n_channel * 4, height // 2, width // 2)

        def forward(self, input):
            out = self.squeeze(input)
            logdet = 0
            for flow in self.flows:
                out, det = flow(out)
                logdet = logdet + det
            log_p = (-0.5 * math.log(2 * math.pi) - 0.5 * out ** 2).view(input.shape[0], -1).sum(1)
            return log_p, logdet, out

        def reverse(self, z):
            for flow in self.flows[::-1]:
                z = flow.reverse(z)
            return z

    return Glow()


def glow_training(m, weights, steps=4, n_bins=32.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, glow(m), weights)
    assert [int(f.actnorm.initialized) for f in model.flows] == [0, 0]
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(19)
    image = torch.tensor(rng.random((4, 1, 4, 4)).astype(np.float32) - 0.5)
    noise = torch.tensor(rng.random((steps, 4, 1, 4, 4)).astype(np.float32) / n_bins)
    n_pixel = 16
    losses = []
    for i in range(steps):
        log_p, logdet, z = model(image + noise[i])
        logdet = logdet.mean()
        loss = -math.log(n_bins) * n_pixel + logdet + log_p
        loss = (-loss / (math.log(2) * n_pixel)).mean()
        model.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        _, _, z = model(image)
        back = model.reverse(z)
    flag_dtype = str(model.flows[0].actnorm.initialized.dtype).split(".")[-1]
    return (losses, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()],
            [int(f.actnorm.initialized) for f in model.flows], flag_dtype, back, model.squeeze(image))


def test_glow_actnorm_invconv_coupling():
    weights = weights_of(glow)
    (losses, params, grads, initialized, flag_dtype, back, squeezed), _ = run_both(glow_training, weights, rtol=1e-4,
                                                                                   atol=1e-5)
    assert initialized == [1, 1] and flag_dtype == "uint8" and losses[-1] < losses[0]
    np.testing.assert_allclose(back, squeezed, rtol=1e-4, atol=1e-5)  # the flow inverts itself
    image = np.random.default_rng(19).random((4, 1, 4, 4)).astype(np.float32) - 0.5
    np.testing.assert_array_equal(squeezed[:, :, 0, 0], image[:, 0, :2, :2].reshape(4, 4))  # a 2x2 block
