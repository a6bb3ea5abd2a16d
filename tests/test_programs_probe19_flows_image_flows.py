# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Normalizing flows and density estimation, run as tests/probe19_flows_common.py says. an image flow in bits per
dimension (variational dequantisation, checkerboard coupling, ``pixel_unshuffle``, normflows' ActNorm, Glow's
coupling and Split2d); NICE with a logistic prior."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# An image flow scored in bits per dimension: Flow++'s variational dequantisation (a conditional
# flow on the noise, log q(u|x) subtracted), RealNVP's logit preprocessing, a checkerboard-masked
# coupling, the squeeze by F.pixel_unshuffle, normflows' ActNorm (data-dependent init through a
# buffer assigned a new tensor), Glow's sigmoid-scaled affine coupling with weight-normed and
# zero-initialised convolutions (padding="same"), and a Split2d with a learned conditional prior
# ----------------------------------------------------------------------------------------------


def make_image_flow(m, C=1):
    torch, nn, F = m.torch, m.nn, m.F
    Log2PI = float(np.log(2 * np.pi))

    class AffineConstFlow(nn.Module):
        def __init__(self, shape, scale=True, shift=True):
            super().__init__()
            self.s = nn.Parameter(torch.zeros(shape)[None])
            self.t = nn.Parameter(torch.zeros(shape)[None])
            self.n_dim = self.s.dim()
            self.batch_dims = torch.nonzero(torch.tensor(self.s.shape) == 1, as_tuple=False)[:, 0].tolist()

        def forward(self, z):
            z_ = z * torch.exp(self.s) + self.t
            if len(self.batch_dims) > 1:
                prod_batch_dims = np.prod([z.size(i) for i in self.batch_dims[1:]])
            else:
                prod_batch_dims = 1
            log_det = prod_batch_dims * torch.sum(self.s)
            return z_, log_det

    class ActNorm(AffineConstFlow):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_dep_init_done_cpu = torch.tensor(0.0)
            self.register_buffer("data_dep_init_done", self.data_dep_init_done_cpu)

        def forward(self, z):
            if not self.data_dep_init_done > 0.0:
                assert self.s is not None and self.t is not None
                s_init = -torch.log(z.std(dim=self.batch_dims, keepdim=True) + 1e-6)
                self.s.data = s_init.data
                self.t.data = (-z.mean(dim=self.batch_dims, keepdim=True) * torch.exp(self.s)).data
                self.data_dep_init_done = torch.tensor(1.0)
            return super().forward(z)

    class Conv2dZeros(nn.Conv2d):
        def __init__(self, in_channels, out_channels, kernel_size=3, logscale_factor=3):
            super().__init__(in_channels, out_channels, kernel_size, padding="same")
            self.logscale_factor = logscale_factor
            self.register_parameter("logs", nn.Parameter(torch.zeros(out_channels, 1, 1)))
            self.weight.data.normal_(0, 0.01)  # (zero in Glow; small here so the first step already couples)
            self.bias.data.zero_()

        def forward(self, input):
            output = super().forward(input)
            return output * torch.exp(self.logs * self.logscale_factor)

    def wn_conv(cin, cout, k=3):
        return nn.utils.parametrizations.weight_norm(nn.Conv2d(cin, cout, k, padding=k // 2))

    class GlowCoupling(nn.Module):
        def __init__(self, channels, hidden=8):
            super().__init__()
            self.block = nn.Sequential(wn_conv(channels // 2, hidden), nn.ReLU(inplace=False),
                                       Conv2dZeros(hidden, channels))

        def forward(self, z, logdet):
            z1, z2 = z[:, :z.size(1) // 2], z[:, z.size(1) // 2:]
            h = self.block(z1)
            shift, scale = h[:, 0::2, ...], h[:, 1::2, ...]
            scale = torch.sigmoid(scale + 2.)
            z2 = z2 + shift
            z2 = z2 * scale
            logdet = torch.sum(torch.log(scale), dim=[1, 2, 3]) + logdet
            return torch.cat((z1, z2), dim=1), logdet

    class CheckerboardCoupling(nn.Module):
        def __init__(self, channels, size, parity, hidden=8):
            super().__init__()
            i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
            mask = ((i + j) % 2 == parity).float().view(1, 1, size, size)
            self.register_buffer("mask", mask)
            self.net = nn.Sequential(wn_conv(channels + 1, hidden), nn.Tanh(),
                                     nn.Conv2d(hidden, 2 * channels, 3, padding=1))
            self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

        def forward(self, z, logdet):
            z_masked = z * self.mask
            st = self.net(torch.cat([z_masked, self.mask.expand(z.size(0), -1, -1, -1)], dim=1))
            s, t = st.chunk(2, dim=1)
            s = self.scale * torch.tanh(s) * (1 - self.mask)
            t = t * (1 - self.mask)
            z = z_masked + (1 - self.mask) * (z * torch.exp(s) + t)
            return z, logdet + s.flatten(1).sum(-1)

    class Split2d(nn.Module):
        def __init__(self, num_channels):
            super().__init__()
            self.conv = Conv2dZeros(num_channels // 2, num_channels)

        def prior(self, z):
            h = self.conv(z)
            return h[:, 0::2, ...], h[:, 1::2, ...]

        def forward(self, input, logdet=0.):
            z1, z2 = input[:, :input.size(1) // 2], input[:, input.size(1) // 2:]
            mean, logs = self.prior(z1)
            likelihood = -0.5 * (logs * 2. + ((z2 - mean) ** 2) / torch.exp(logs * 2.) + Log2PI)
            logdet = likelihood.sum(dim=[1, 2, 3]) + logdet
            return z1, logdet

    class Dequantizer(nn.Module):
        """q(u | x): u = sigmoid(mu(x) + exp(log_s(x)) * eps), its log-density by the change of variables."""

        def __init__(self, channels, hidden=8):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ELU(),
                                     nn.Conv2d(hidden, 2 * channels, 3, padding=1))

        def forward(self, x):
            mu, log_s = self.net(x / 255. - 0.5).chunk(2, dim=1)
            log_s = torch.tanh(log_s)
            eps = torch.randn_like(x)
            pre = mu + torch.exp(log_s) * eps
            u = torch.sigmoid(pre)
            log_q = (-0.5 * eps ** 2 - 0.5 * Log2PI).flatten(1).sum(-1) \
                - (log_s + F.logsigmoid(pre) + F.logsigmoid(-pre)).flatten(1).sum(-1)
            return u, log_q

    class ImageFlow(nn.Module):
        def __init__(self):
            super().__init__()
            self.dequant = Dequantizer(C)
            self.check = nn.ModuleList([CheckerboardCoupling(C, 4, 0), CheckerboardCoupling(C, 4, 1)])
            self.actnorm = ActNorm((4 * C, 1, 1))
            self.coupling = GlowCoupling(4 * C)
            self.split = Split2d(4 * C)
            self.alpha = 0.05

        def forward(self, x):
            u, log_q = self.dequant(x)
            y = (x + u) / 256.
            D = x[0].numel()
            y = self.alpha + (1 - 2 * self.alpha) * y
            z = torch.log(y) - torch.log1p(-y)
            logdet = ((math.log(1 - 2 * self.alpha) - torch.log(y) - torch.log1p(-y)).flatten(1).sum(-1)
                      - D * math.log(256.))
            for layer in self.check:
                z, logdet = layer(z, logdet)
            z = F.pixel_unshuffle(z, 2)
            z, ld = self.actnorm(z)
            logdet = logdet + ld
            z, logdet = self.coupling(z, logdet)
            z, logdet = self.split(z, logdet)
            log_pz = (-0.5 * z ** 2 - 0.5 * Log2PI).flatten(1).sum(-1)
            log_px = log_pz + logdet - log_q
            bpd = -log_px / (D * math.log(2.))
            return bpd, z

    return ImageFlow()


def tiny_images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 16).reshape(1, 4, 4)
    imgs = np.clip(base[None] * rng.uniform(0.3, 1.0, (n, 1, 1, 1)) + rng.normal(0, 20, (n, 1, 4, 4)), 0, 255)
    return imgs.astype(np.uint8)


def image_flow(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    flow = load(m, make_image_flow(m), weights)
    x = torch.from_numpy(tiny_images()).float()
    optimizer = optim.Adam(flow.parameters(), lr=1e-2)
    torch.manual_seed(0)
    history = []
    for step in range(steps):
        bpd, z = flow(x)
        loss = bpd.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        torch.manual_seed(1)
        bpd, z = flow(x)
    return {"history": history, "bpd": bpd, "z": z, "init": flow.actnorm.data_dep_init_done,
            "s": flow.actnorm.s.detach(), "state": {k: v for k, v in flow.state_dict().items()}}


def test_image_flow_bits_per_dim_with_variational_dequantisation():
    weights = weights_of(make_image_flow)
    ours, _ = run_both(image_flow, weights, rtol=2e-4, atol=2e-5)
    assert ours["init"] == 1.0 and ours["z"].shape == (6, 2, 2, 2)
    assert ours["history"][-1] < ours["history"][0] and 0 < ours["bpd"].mean() < 16


# ----------------------------------------------------------------------------------------------
# NICE (Dinh et al. 2014) as fmu2/NICE writes it: additive couplings on interleaved halves by reshape
# and stack, a learnt diagonal scaling, a StandardLogistic Distribution subclass (log-density by
# softplus, samples by the inverse CDF of a Uniform), Adam with beta2 = 0.01 and eps = 1e-4, uniform
# dequantisation and bits per dimension; sampling by the inverse pass; against the same prior written as
# a TransformedDistribution of a Uniform through SigmoidTransform().inv
# ----------------------------------------------------------------------------------------------


def nice_modules(m):
    torch, nn, F = m.torch, m.nn, m.F

    class StandardLogistic(torch.distributions.Distribution):
        arg_constraints = {}

        def __init__(self):
            super(StandardLogistic, self).__init__()

        def log_prob(self, x):
            return -(F.softplus(x) + F.softplus(-x))

        def sample(self, size):
            z = torch.distributions.Uniform(0., 1.).sample(size)
            return torch.log(z) - torch.log(1. - z)

    class Coupling(nn.Module):
        def __init__(self, in_out_dim, mid_dim, hidden, mask_config):
            super(Coupling, self).__init__()
            self.mask_config = mask_config
            self.in_block = nn.Sequential(nn.Linear(in_out_dim // 2, mid_dim), nn.ReLU())
            self.mid_block = nn.ModuleList([nn.Sequential(nn.Linear(mid_dim, mid_dim), nn.ReLU())
                                            for _ in range(hidden - 1)])
            self.out_block = nn.Linear(mid_dim, in_out_dim // 2)

        def forward(self, x, reverse=False):
            [B, W] = list(x.size())
            x = x.reshape((B, W // 2, 2))
            if self.mask_config:
                on, off = x[:, :, 0], x[:, :, 1]
            else:
                off, on = x[:, :, 0], x[:, :, 1]
            off_ = self.in_block(off)
            for i in range(len(self.mid_block)):
                off_ = self.mid_block[i](off_)
            shift = self.out_block(off_)
            if reverse:
                on = on - shift
            else:
                on = on + shift
            if self.mask_config:
                x = torch.stack((on, off), dim=2)
            else:
                x = torch.stack((off, on), dim=2)
            return x.reshape((B, W))

    class Scaling(nn.Module):
        def __init__(self, dim):
            super(Scaling, self).__init__()
            self.scale = nn.Parameter(torch.zeros((1, dim)), requires_grad=True)

        def forward(self, x, reverse=False):
            log_det_J = torch.sum(self.scale)
            if reverse:
                x = x * torch.exp(-self.scale)
            else:
                x = x * torch.exp(self.scale)
            return x, log_det_J

    class NICE(nn.Module):
        def __init__(self, prior, coupling, in_out_dim, mid_dim, hidden, mask_config):
            super(NICE, self).__init__()
            self.prior = prior
            self.in_out_dim = in_out_dim
            self.coupling = nn.ModuleList([
                Coupling(in_out_dim=in_out_dim, mid_dim=mid_dim, hidden=hidden, mask_config=(mask_config + i) % 2)
                for i in range(coupling)])
            self.scaling = Scaling(in_out_dim)

        def g(self, z):
            x, _ = self.scaling(z, reverse=True)
            for i in reversed(range(len(self.coupling))):
                x = self.coupling[i](x, reverse=True)
            return x

        def f(self, x):
            for i in range(len(self.coupling)):
                x = self.coupling[i](x)
            return self.scaling(x)

        def log_prob(self, x):
            z, log_det_J = self.f(x)
            log_ll = torch.sum(self.prior.log_prob(z), dim=1)
            return log_ll + log_det_J

        def sample(self, size):
            z = self.prior.sample((size, self.in_out_dim))
            return self.g(z)

        def forward(self, x):
            return self.log_prob(x)

    return NICE, StandardLogistic


def make_nice(m):
    NICE, StandardLogistic = nice_modules(m)
    return NICE(prior=StandardLogistic(), coupling=4, in_out_dim=16, mid_dim=24, hidden=2, mask_config=1.)


def nice(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    flow = load(m, make_nice(m), weights)
    data = torch.from_numpy(tiny_images(12, seed=2).reshape(12, 16)).float() / 255.
    optimizer = optim.Adam(flow.parameters(), lr=1e-3, betas=(0.9, 0.01), eps=1e-4)
    torch.manual_seed(0)
    history = []
    for step in range(steps):
        x = (data * 255. + torch.rand_like(data)) / 256.
        loss = -flow(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bit_per_dim = (loss.item() + 16 * np.log(256.)) / (16 * np.log(2.))
        history.append([loss.item(), bit_per_dim])
    flow.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        samples = flow.sample(5)
        z, _ = flow.f(samples)
        # the same prior as a TransformedDistribution: Logistic(0, 1) = sigmoid^-1 of a Uniform
        logistic = torch.distributions.TransformedDistribution(
            torch.distributions.Uniform(torch.tensor(0.), torch.tensor(1.)),
            [torch.distributions.transforms.SigmoidTransform().inv])
        by_td = logistic.log_prob(z).sum(1) + flow.scaling.scale.sum()
        by_flow = flow.log_prob(samples)
    return {"history": history, "samples": samples, "by_td": by_td, "by_flow": by_flow, "back": flow.g(z)}


def test_nice_additive_couplings_logistic_prior():
    weights = weights_of(make_nice)
    ours, _ = run_both(nice, weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["by_td"], ours["by_flow"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours["back"], ours["samples"], rtol=1e-5, atol=1e-5)
    assert ours["history"][-1][0] < ours["history"][0][0]
