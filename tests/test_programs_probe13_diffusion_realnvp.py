# ruff: noqa: UP008  (the programs are kept as their authors wrote them)
"""Diffusion models, flows, score matching and flow matching, run as tests/probe13_diffusion_common.py says. RealNVP
on images (logit dequantisation, checkerboard and channel-wise couplings with weight-normed convolutions, squeeze),
nflows' ActNorm and ``LULinear`` (NumPy index assignment, ``solve_triangular``), an invertible 1x1 convolution from
``lu_factor``/``lu_unpack``/``lu_solve``, an ``Independent(Normal)`` prior."""

import numpy as np

from .pytorch_programs import run_both, weights_of

# ----------------------------------------------------------------------------------------------
# RealNVP on images (chrischute/real-nvp's logit preprocessing, checkerboard and channel-wise couplings,
# squeeze), nflows' ActNorm and LU-parametrised linear layer, and an LU-factored invertible 1x1 convolution
# ----------------------------------------------------------------------------------------------


def make_image_flow(m, c=1, mid=8):
    torch, nn, F = m.torch, m.nn, m.F

    def checkerboard_mask(height, width, reverse=False, dtype=torch.float32, requires_grad=False):
        checkerboard = [[((i % 2) + j) % 2 for j in range(width)] for i in range(height)]
        mask = torch.tensor(checkerboard, dtype=dtype, requires_grad=requires_grad)
        if reverse:
            mask = 1 - mask
        mask = mask.view(1, 1, height, width)
        return mask

    def squeeze_2x2(x, reverse=False):
        b, c, h, w = x.size()
        if reverse:
            x = x.permute(0, 2, 3, 1)
            x = x.view(b, h, w, c // 4, 2, 2)
            x = x.permute(0, 1, 4, 2, 5, 3)
            x = x.contiguous().view(b, 2 * h, 2 * w, c // 4)
            x = x.permute(0, 3, 1, 2)
        else:
            x = x.permute(0, 2, 3, 1)
            x = x.view(b, h // 2, 2, w // 2, 2, c)
            x = x.permute(0, 1, 3, 5, 2, 4)
            x = x.contiguous().view(b, h // 2, w // 2, c * 4)
            x = x.permute(0, 3, 1, 2)
        return x

    class Rescale(nn.Module):
        def __init__(self, num_channels):
            super(Rescale, self).__init__()
            self.weight = nn.Parameter(torch.ones(num_channels, 1, 1))

        def forward(self, x):
            return self.weight * x

    class STNet(nn.Module):
        def __init__(self, in_channels, mid_channels, out_channels):
            super().__init__()
            self.in_norm = nn.BatchNorm2d(in_channels)
            self.in_conv = nn.utils.parametrizations.weight_norm(
                nn.Conv2d(2 * in_channels, mid_channels, 3, padding=1, bias=True))
            self.mid = nn.Sequential(nn.BatchNorm2d(mid_channels), nn.ReLU(),
                                     nn.Conv2d(mid_channels, mid_channels, 3, padding=1))
            # (chrischute's out_norm, a BatchNorm here, is left out: it would leave the convolutions' biases
            # without a gradient but rounding noise, which Adam's normalised step then amplifies)
            self.out_conv = nn.Conv2d(mid_channels, 2 * out_channels, 1)

        def forward(self, x):
            x = self.in_norm(x)
            x = torch.cat((x, -x), dim=1)  # chrischute's "double after norm"
            x = F.relu(x)
            x = self.in_conv(x)
            x = x + self.mid(x)
            x = F.relu(x)
            return self.out_conv(x)

    class CouplingLayer(nn.Module):
        def __init__(self, in_channels, mid_channels, mask_type, reverse_mask):
            super().__init__()
            self.mask_type = mask_type
            self.reverse_mask = reverse_mask
            if self.mask_type == "channel_wise":
                in_channels //= 2
            self.st_net = STNet(in_channels, mid_channels, in_channels)
            self.rescale = Rescale(in_channels)

        def forward(self, x, sldj=None, reverse=True):
            if self.mask_type == "checkerboard":
                b = checkerboard_mask(x.size(2), x.size(3), self.reverse_mask)
                x_b = x * b
                st = self.st_net(x_b)
                s, t = st.chunk(2, dim=1)
                s = self.rescale(torch.tanh(s))
                s = s * (1 - b)
                t = t * (1 - b)
                if reverse:
                    inv_exp_s = s.mul(-1).exp()
                    if torch.isnan(inv_exp_s).any():
                        raise RuntimeError('Scale factor has NaN entries')
                    x = x * inv_exp_s - t
                else:
                    exp_s = s.exp()
                    if torch.isnan(exp_s).any():
                        raise RuntimeError('Scale factor has NaN entries')
                    x = (x + t) * exp_s
                    sldj += s.reshape(s.size(0), -1).sum(-1)
            else:
                if self.reverse_mask:
                    x_id, x_change = x.chunk(2, dim=1)
                else:
                    x_change, x_id = x.chunk(2, dim=1)
                st = self.st_net(x_id)
                s, t = st.chunk(2, dim=1)
                s = self.rescale(torch.tanh(s))
                if reverse:
                    x_change = x_change * s.mul(-1).exp() - t
                else:
                    x_change = (x_change + t) * s.exp()
                    sldj += s.reshape(s.size(0), -1).sum(-1)
                if self.reverse_mask:
                    x = torch.cat((x_id, x_change), dim=1)
                else:
                    x = torch.cat((x_change, x_id), dim=1)
            return x, sldj

    class ActNorm(nn.Module):  # nflows' ActNorm, data-dependent initialisation on the first batch
        def __init__(self, features):
            super().__init__()
            self.register_buffer("initialized", torch.tensor(False, dtype=torch.bool))
            self.log_scale = nn.Parameter(torch.zeros(features))
            self.shift = nn.Parameter(torch.zeros(features))

        @property
        def scale(self):
            return torch.exp(self.log_scale)

        def _broadcastable_scale_shift(self, inputs):
            if inputs.dim() == 4:
                return self.scale.view(1, -1, 1, 1), self.shift.view(1, -1, 1, 1)
            else:
                return self.scale.view(1, -1), self.shift.view(1, -1)

        def forward(self, inputs, context=None):
            if self.training and not self.initialized:
                self._initialize(inputs)
            scale, shift = self._broadcastable_scale_shift(inputs)
            outputs = scale * inputs + shift
            if inputs.dim() == 4:
                batch_size, _, h, w = inputs.shape
                logabsdet = h * w * torch.sum(self.log_scale) * outputs.new_ones(batch_size)
            else:
                batch_size, _ = inputs.shape
                logabsdet = torch.sum(self.log_scale) * outputs.new_ones(batch_size)
            return outputs, logabsdet

        def inverse(self, inputs, context=None):
            scale, shift = self._broadcastable_scale_shift(inputs)
            return (inputs - shift) / scale

        def _initialize(self, inputs):
            if inputs.dim() == 4:
                num_channels = inputs.shape[1]
                inputs = inputs.permute(0, 2, 3, 1).reshape(-1, num_channels)
            with torch.no_grad():
                std = inputs.std(dim=0)
                mu = (inputs / std).mean(dim=0)
                self.log_scale.data = -torch.log(std)
                self.shift.data = -mu
                self.initialized.data = torch.tensor(True, dtype=torch.bool)

    class InvConv1x1LU(nn.Module):  # the 1x1 convolution's weight held as P L U, from lu_factor/lu_unpack
        def __init__(self, num_channels):
            super().__init__()
            w = torch.linalg.qr(torch.randn(num_channels, num_channels))[0]
            LU, pivots = torch.linalg.lu_factor(w)
            P, L, U = torch.lu_unpack(LU, pivots)
            s = torch.diagonal(U)
            self.register_buffer("P", P)
            self.register_buffer("sign_s", torch.sign(s))
            self.register_buffer("lower_mask", torch.tril(torch.ones(num_channels, num_channels), -1))
            self.register_buffer("eye", torch.eye(num_channels))
            self.L = nn.Parameter(L)
            self.U = nn.Parameter(torch.triu(U, 1))
            self.log_s = nn.Parameter(torch.log(torch.abs(s)))

        def weight(self):
            L = self.L * self.lower_mask + self.eye
            U = self.U * self.lower_mask.T + torch.diag_embed(self.sign_s * torch.exp(self.log_s))
            return self.P @ L @ U

        def forward(self, x, sldj):
            w = self.weight()
            sldj = sldj + x.size(2) * x.size(3) * self.log_s.sum()
            return F.conv2d(x, w.view(*w.shape, 1, 1)), sldj

        def reverse(self, z):
            LU, pivots = torch.linalg.lu_factor(self.weight())
            b, c, h, w = z.shape
            flat = z.permute(1, 0, 2, 3).reshape(c, -1)
            x = torch.linalg.lu_solve(LU, pivots, flat)
            return x.reshape(c, b, h, w).permute(1, 0, 2, 3)

    class LULinear(nn.Module):  # nflows' LULinear, identity-initialised
        def __init__(self, features, eps=1e-3):
            super().__init__()
            self.features = features
            self.eps = eps
            self.lower_indices = np.tril_indices(features, k=-1)
            self.upper_indices = np.triu_indices(features, k=1)
            self.diag_indices = np.diag_indices(features)
            n_triangular_entries = ((features - 1) * features) // 2
            self.lower_entries = nn.Parameter(torch.zeros(n_triangular_entries))
            self.upper_entries = nn.Parameter(torch.zeros(n_triangular_entries))
            self.unconstrained_upper_diag = nn.Parameter(torch.zeros(features))
            self.bias = nn.Parameter(torch.zeros(features))
            constant = np.log(np.exp(1 - eps) - 1)
            stdv = 1.0 / np.sqrt(features)
            nn.init.uniform_(self.lower_entries, -stdv, stdv)
            nn.init.uniform_(self.upper_entries, -stdv, stdv)
            nn.init.constant_(self.unconstrained_upper_diag, constant)

        def _create_lower_upper(self):
            lower = self.lower_entries.new_zeros(self.features, self.features)
            lower[self.lower_indices[0], self.lower_indices[1]] = self.lower_entries
            lower[self.diag_indices[0], self.diag_indices[1]] = 1.0
            upper = self.upper_entries.new_zeros(self.features, self.features)
            upper[self.upper_indices[0], self.upper_indices[1]] = self.upper_entries
            upper[self.diag_indices[0], self.diag_indices[1]] = self.upper_diag
            return lower, upper

        @property
        def upper_diag(self):
            return F.softplus(self.unconstrained_upper_diag) + self.eps

        def forward(self, inputs):
            lower, upper = self._create_lower_upper()
            outputs = F.linear(inputs, upper)
            outputs = F.linear(outputs, lower, self.bias)
            logabsdet = self.logabsdet() * inputs.new_ones(outputs.shape[0])
            return outputs, logabsdet

        def inverse(self, inputs):
            lower, upper = self._create_lower_upper()
            outputs = inputs - self.bias
            outputs = torch.linalg.solve_triangular(lower, outputs.t(), upper=False, unitriangular=True)
            outputs = torch.linalg.solve_triangular(upper, outputs, upper=True, unitriangular=False)
            return outputs.t()

        def logabsdet(self):
            return torch.sum(torch.log(self.upper_diag))

    class TinyRealNVP(nn.Module):
        def __init__(self, in_channels=c, mid_channels=mid, side=4):
            super().__init__()
            self.register_buffer('data_constraint', torch.tensor([0.9], dtype=torch.float32))
            self.actnorm = ActNorm(in_channels)
            self.in_couplings = nn.ModuleList([
                CouplingLayer(in_channels, mid_channels, "checkerboard", reverse_mask=False),
                CouplingLayer(in_channels, mid_channels, "checkerboard", reverse_mask=True)])
            self.invconv = InvConv1x1LU(4 * in_channels)
            self.out_couplings = nn.ModuleList([
                CouplingLayer(4 * in_channels, mid_channels, "channel_wise", reverse_mask=False),
                CouplingLayer(4 * in_channels, mid_channels, "channel_wise", reverse_mask=True)])
            self.lu_linear = LULinear(in_channels * side * side)

        def _pre_process(self, x, noise):
            y = (x * 255. + noise) / 256.
            y = (2 * y - 1) * self.data_constraint
            y = (y + 1) / 2
            y = y.log() - (1. - y).log()
            ldj = F.softplus(y) + F.softplus(-y) \
                - F.softplus((1. - self.data_constraint).log() - self.data_constraint.log())
            sldj = ldj.view(ldj.size(0), -1).sum(-1)
            return y, sldj

        def forward(self, x, noise):
            y, sldj = self._pre_process(x, noise)
            y, ld = self.actnorm(y)
            sldj = sldj + ld
            for coupling in self.in_couplings:
                y, sldj = coupling(y, sldj, reverse=False)
            y = squeeze_2x2(y)
            y, sldj = self.invconv(y, sldj)
            for coupling in self.out_couplings:
                y, sldj = coupling(y, sldj, reverse=False)
            y = squeeze_2x2(y, reverse=True)
            shape = y.shape
            z, ld = self.lu_linear(y.flatten(1))
            return z.view(shape), sldj + ld

        def reverse(self, z):
            y = self.lu_linear.inverse(z.flatten(1)).view(z.shape)
            y = squeeze_2x2(y)
            for coupling in reversed(self.out_couplings):
                y, _ = coupling(y, reverse=True)
            y = self.invconv.reverse(y)
            y = squeeze_2x2(y, reverse=True)
            for coupling in reversed(self.in_couplings):
                y, _ = coupling(y, reverse=True)
            return torch.sigmoid(self.actnorm.inverse(y))

    return TinyRealNVP()


def image_flow(m, weights, steps=4):
    torch, D = m.torch, m.torch.distributions
    model = make_image_flow(m)
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(2)
    images = (rng.integers(0, 256, (16, 1, 4, 4)) / 255.).astype(np.float32)
    images[:, :, :2] = np.clip(images[:, :, :2] * 0.3, 0, 1)  # some structure: a darker top half
    g = torch.Generator().manual_seed(3)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-5)
    prior = D.Independent(D.Normal(torch.zeros(1, 4, 4), torch.ones(1, 4, 4)), 3)

    class RealNVPLoss(m.nn.Module):
        def __init__(self, k=256):
            super(RealNVPLoss, self).__init__()
            self.k = k

        def forward(self, z, sldj):
            prior_ll = -0.5 * (z ** 2 + np.log(2 * np.pi))
            prior_ll = prior_ll.view(z.size(0), -1).sum(-1) - np.log(self.k) * np.prod(z.size()[1:])
            ll = prior_ll + sldj
            nll = -ll.mean()
            return nll

    loss_fn = RealNVPLoss()
    history, bpds, by_dist = [], [], []
    model.train()
    for step in range(steps):
        x = torch.from_numpy(images[(4 * step) % 16:(4 * step) % 16 + 8])
        noise = torch.rand_like(x, generator=g)
        optimizer.zero_grad()
        z, sldj = model(x, noise)
        loss = loss_fn(z, sldj)
        by_dist.append(-(prior.log_prob(z) + sldj).mean() + np.log(256) * 16)
        bpd = loss / (np.log(2) * np.prod(x.size()[1:]))
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 100.)
        optimizer.step()
        history.append(loss.item())
        bpds.append(bpd.item())
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        z, sldj = model(torch.from_numpy(images[:4]), torch.full((4, 1, 4, 4), 0.5))
        x_back = model.reverse(z)
        torch.manual_seed(0)
        samples = model.reverse(prior.sample((3,)))
    return {"losses": history, "bpd": bpds, "by_dist": by_dist, "grads": grads, "state": model.state_dict(),
            "z": z, "x_back": x_back, "samples": samples,
            "initialized": model.actnorm.initialized}


def test_realnvp_images_actnorm_lu_linear_and_lu_convolution():
    weights = weights_of(make_image_flow)
    ours, _ = run_both(image_flow, weights, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(ours["by_dist"], ours["losses"], rtol=1e-5)
    assert bool(ours["initialized"]) is True
    rng = np.random.default_rng(2)
    images = (rng.integers(0, 256, (16, 1, 4, 4)) / 255.).astype(np.float32)
    images[:, :, :2] = np.clip(images[:, :, :2] * 0.3, 0, 1)
    # the inverse undoes the forward up to the dequantisation: (x * 255 + 0.5) / 256, squeezed by 0.9
    expected = ((2 * (images[:4] * 255 + 0.5) / 256 - 1) * 0.9 + 1) / 2
    np.testing.assert_allclose(ours["x_back"], expected, rtol=1e-4, atol=1e-5)
    assert ours["samples"].shape == (3, 1, 4, 4) and np.all((ours["samples"] > 0) & (ours["samples"] < 1))
