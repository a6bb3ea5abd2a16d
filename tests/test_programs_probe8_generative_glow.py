# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Generative models (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and
the same noise, comparing losses, samples, parameters and gradients. Glow's blocks as rosinality's glow-pytorch
writes them (data-dependent ActNorm with an ``initialized`` buffer, an invertible 1x1 convolution both by ``slogdet``
and LU-parametrised, an affine coupling with a zero-initialised convolution, the squeeze by ``view``/``permute``),
and the invertible convolutions' log-determinants."""

from math import log

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

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
