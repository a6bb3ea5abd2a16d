# ruff: noqa: B008, E501, UP008  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere, run as tests/probe16_gen2_common.py says: densities: MAF/MADE,
BatchNormFlow, an LU-parametrised matrix and a coupling layer as ikostrikov/pytorch-flows writes them; a VAE with a
custom ``Distribution`` subclass as its likelihood (``_get_checked_instance`` in its expand), a
``TransformedDistribution`` subclass prior expanded over the batch, KLs registered for them (one chosen over an
inherited closed form, with PyTorch's ambiguity warning)."""

import math
import warnings

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# MAF as ikostrikov/pytorch-flows writes it: MADE with masked F.linear and conditioning inputs, the
# sequential inverse by column assignment, BatchNormFlow (running statistics by mul_/add_, momentum switched
# to refresh them), Reverse by NumPy index arrays, an LU-parametrised invertible matrix (torch.linalg.lu in
# place of scipy's), RealNVP's coupling layer with a mask; log_probs, sampling and the inverse's round trip
# ----------------------------------------------------------------------------------------------


def make_maf(m, num_inputs=4, num_hidden=12, num_cond_inputs=2, num_blocks=2):
    torch, nn, F = m.torch, m.nn, m.F

    def get_mask(in_features, out_features, in_flow_features, mask_type=None):
        """
        mask_type: input | None | output

        See Figure 1 for a better illustration:
        https://arxiv.org/pdf/1502.03509.pdf
        """
        if mask_type == 'input':
            in_degrees = torch.arange(in_features) % in_flow_features
        else:
            in_degrees = torch.arange(in_features) % (in_flow_features - 1)

        if mask_type == 'output':
            out_degrees = torch.arange(out_features) % in_flow_features - 1
        else:
            out_degrees = torch.arange(out_features) % (in_flow_features - 1)

        return (out_degrees.unsqueeze(-1) >= in_degrees.unsqueeze(0)).float()

    class MaskedLinear(nn.Module):
        def __init__(self, in_features, out_features, mask, cond_in_features=None, bias=True):
            super(MaskedLinear, self).__init__()
            self.linear = nn.Linear(in_features, out_features)
            if cond_in_features is not None:
                self.cond_linear = nn.Linear(cond_in_features, out_features, bias=False)
            self.register_buffer('mask', mask)

        def forward(self, inputs, cond_inputs=None):
            output = F.linear(inputs, self.linear.weight * self.mask, self.linear.bias)
            if cond_inputs is not None:
                output += self.cond_linear(cond_inputs)
            return output

    class MADE(nn.Module):
        """ An implementation of MADE
        (https://arxiv.org/abs/1502.03509).
        """

        def __init__(self, num_inputs, num_hidden, num_cond_inputs=None, act='relu', pre_exp_tanh=False):
            super(MADE, self).__init__()
            activations = {'relu': nn.ReLU, 'sigmoid': nn.Sigmoid, 'tanh': nn.Tanh}
            act_func = activations[act]
            input_mask = get_mask(num_inputs, num_hidden, num_inputs, mask_type='input')
            hidden_mask = get_mask(num_hidden, num_hidden, num_inputs)
            output_mask = get_mask(num_hidden, num_inputs * 2, num_inputs, mask_type='output')
            self.joiner = MaskedLinear(num_inputs, num_hidden, input_mask, num_cond_inputs)
            self.trunk = nn.Sequential(act_func(), MaskedLinear(num_hidden, num_hidden, hidden_mask), act_func(),
                                       MaskedLinear(num_hidden, num_inputs * 2, output_mask))

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            if mode == 'direct':
                h = self.joiner(inputs, cond_inputs)
                m, a = self.trunk(h).chunk(2, 1)
                u = (inputs - m) * torch.exp(-a)
                return u, -a.sum(-1, keepdim=True)
            else:
                x = torch.zeros_like(inputs)
                for i_col in range(inputs.shape[1]):
                    h = self.joiner(x, cond_inputs)
                    m, a = self.trunk(h).chunk(2, 1)
                    x[:, i_col] = inputs[:, i_col] * torch.exp(a[:, i_col]) + m[:, i_col]
                return x, -a.sum(-1, keepdim=True)

    class BatchNormFlow(nn.Module):
        """ An implementation of a batch normalization layer from
        Density estimation using Real NVP
        (https://arxiv.org/abs/1605.08803).
        """

        def __init__(self, num_inputs, momentum=0.0, eps=1e-5):
            super(BatchNormFlow, self).__init__()
            self.log_gamma = nn.Parameter(torch.zeros(num_inputs))
            self.beta = nn.Parameter(torch.zeros(num_inputs))
            self.momentum = momentum
            self.eps = eps
            self.register_buffer('running_mean', torch.zeros(num_inputs))
            self.register_buffer('running_var', torch.ones(num_inputs))

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            if mode == 'direct':
                if self.training:
                    self.batch_mean = inputs.mean(0)
                    self.batch_var = (inputs - self.batch_mean).pow(2).mean(0) + self.eps
                    self.running_mean.mul_(self.momentum)
                    self.running_var.mul_(self.momentum)
                    self.running_mean.add_(self.batch_mean.data * (1 - self.momentum))
                    self.running_var.add_(self.batch_var.data * (1 - self.momentum))
                    mean = self.batch_mean
                    var = self.batch_var
                else:
                    mean = self.running_mean
                    var = self.running_var
                x_hat = (inputs - mean) / var.sqrt()
                y = torch.exp(self.log_gamma) * x_hat + self.beta
                return y, (self.log_gamma - 0.5 * torch.log(var)).sum(-1, keepdim=True)
            else:
                if self.training:
                    mean = self.batch_mean
                    var = self.batch_var
                else:
                    mean = self.running_mean
                    var = self.running_var
                x_hat = (inputs - self.beta) / torch.exp(self.log_gamma)
                y = x_hat * var.sqrt() + mean
                return y, (-self.log_gamma + 0.5 * torch.log(var)).sum(-1, keepdim=True)

    class Reverse(nn.Module):
        """ An implementation of a reversing layer from
        Density estimation using Real NVP
        (https://arxiv.org/abs/1605.08803).
        """

        def __init__(self, num_inputs):
            super(Reverse, self).__init__()
            self.perm = np.array(np.arange(0, num_inputs)[::-1])
            self.inv_perm = np.argsort(self.perm)

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            if mode == 'direct':
                return inputs[:, self.perm], torch.zeros(inputs.size(0), 1, device=inputs.device)
            else:
                return inputs[:, self.inv_perm], torch.zeros(inputs.size(0), 1, device=inputs.device)

    class LUInvertibleMM(nn.Module):
        """ An implementation of a invertible matrix multiplication
        layer from Glow: Generative Flow with Invertible 1x1 Convolutions
        (https://arxiv.org/abs/1807.03039).
        """

        def __init__(self, num_inputs):
            super(LUInvertibleMM, self).__init__()
            self.W = torch.Tensor(num_inputs, num_inputs)
            nn.init.orthogonal_(self.W)
            self.L_mask = torch.tril(torch.ones(self.W.size()), -1)
            self.U_mask = self.L_mask.t().clone()

            P, L, U = torch.linalg.lu(self.W)
            self.P = P
            self.L = nn.Parameter(L)
            self.U = nn.Parameter(U)

            S = np.diag(U.numpy())
            sign_S = np.sign(S)
            log_S = np.log(abs(S))
            self.sign_S = torch.from_numpy(sign_S)
            self.log_S = nn.Parameter(torch.from_numpy(log_S))

            self.I = torch.eye(self.L.size(0))

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            L = self.L * self.L_mask + self.I
            U = self.U * self.U_mask + torch.diag(self.sign_S * torch.exp(self.log_S))
            W = self.P @ L @ U

            if mode == 'direct':
                return inputs @ W, self.log_S.sum().unsqueeze(0).unsqueeze(0).repeat(inputs.size(0), 1)
            else:
                return inputs @ torch.inverse(W), -self.log_S.sum().unsqueeze(0).unsqueeze(0).repeat(
                    inputs.size(0), 1)

    class CouplingLayer(nn.Module):
        """ An implementation of a coupling layer
        from RealNVP (https://arxiv.org/abs/1605.08803).
        """

        def __init__(self, num_inputs, num_hidden, mask, num_cond_inputs=None, s_act='tanh', t_act='relu'):
            super(CouplingLayer, self).__init__()
            self.num_inputs = num_inputs
            self.mask = mask
            activations = {'relu': nn.ReLU, 'sigmoid': nn.Sigmoid, 'tanh': nn.Tanh}
            s_act_func = activations[s_act]
            t_act_func = activations[t_act]
            if num_cond_inputs is not None:
                total_inputs = num_inputs + num_cond_inputs
            else:
                total_inputs = num_inputs
            self.scale_net = nn.Sequential(nn.Linear(total_inputs, num_hidden), s_act_func(),
                                           nn.Linear(num_hidden, num_hidden), s_act_func(),
                                           nn.Linear(num_hidden, num_inputs))
            self.translate_net = nn.Sequential(nn.Linear(total_inputs, num_hidden), t_act_func(),
                                               nn.Linear(num_hidden, num_hidden), t_act_func(),
                                               nn.Linear(num_hidden, num_inputs))

            def init(m):
                if isinstance(m, nn.Linear):
                    m.bias.data.fill_(0)
                    nn.init.orthogonal_(m.weight.data)

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            mask = self.mask
            masked_inputs = inputs * mask
            if cond_inputs is not None:
                masked_inputs = torch.cat([masked_inputs, cond_inputs], -1)
            if mode == 'direct':
                log_s = self.scale_net(masked_inputs) * (1 - mask)
                t = self.translate_net(masked_inputs) * (1 - mask)
                s = torch.exp(log_s)
                return inputs * s + t, log_s.sum(-1, keepdim=True)
            else:
                log_s = self.scale_net(masked_inputs) * (1 - mask)
                t = self.translate_net(masked_inputs) * (1 - mask)
                s = torch.exp(-log_s)
                return (inputs - t) * s, -log_s.sum(-1, keepdim=True)

    class FlowSequential(nn.Sequential):
        """ A sequential container for flows.
        In addition to a forward pass it implements a backward pass and
        computes log jacobians.
        """

        def forward(self, inputs, cond_inputs=None, mode='direct', logdets=None):
            """ Performs a forward or backward pass for flow modules.
            Args:
                inputs: a tuple of inputs and logdets
                mode: to run direct computation or inverse
            """
            self.num_inputs = inputs.size(-1)
            if logdets is None:
                logdets = torch.zeros(inputs.size(0), 1, device=inputs.device)
            assert mode in ['direct', 'inverse']
            if mode == 'direct':
                for module in self._modules.values():
                    inputs, logdet = module(inputs, cond_inputs, mode)
                    logdets += logdet
            else:
                for module in reversed(self._modules.values()):
                    inputs, logdet = module(inputs, cond_inputs, mode)
                    logdets += logdet
            return inputs, logdets

        def log_probs(self, inputs, cond_inputs=None):
            u, log_jacob = self(inputs, cond_inputs)
            log_probs = (-0.5 * u.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
            return (log_probs + log_jacob).sum(-1, keepdim=True)

        def sample(self, num_samples=None, noise=None, cond_inputs=None):
            if noise is None:
                noise = torch.Tensor(num_samples, self.num_inputs).normal_()
            device = next(self.parameters()).device
            noise = noise.to(device)
            if cond_inputs is not None:
                cond_inputs = cond_inputs.to(device)
            samples = self.forward(noise, cond_inputs, mode='inverse')[0]
            return samples

    modules = []
    for _ in range(num_blocks):
        modules += [MADE(num_inputs, num_hidden, num_cond_inputs, act='tanh'), BatchNormFlow(num_inputs),
                    Reverse(num_inputs)]
    mask = torch.arange(0, num_inputs) % 2
    mask = mask.float()
    modules += [LUInvertibleMM(num_inputs),
                CouplingLayer(num_inputs, num_hidden, mask, num_cond_inputs, s_act='tanh', t_act='relu')]
    model = FlowSequential(*modules)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.orthogonal_(module.weight)
            if hasattr(module, 'bias') and module.bias is not None:
                module.bias.data.fill_(0)
    return model, BatchNormFlow


def maf(m, steps=4):
    torch = m.torch
    torch.manual_seed(0)  # the orthogonal inits, the LU layer's P and sign_S: both libraries draw the same
    model, BatchNormFlow = make_maf(m)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    x[:, 1] += x[:, 0] ** 2
    x[:, 3] = np.sin(x[:, 2]) + 0.1 * x[:, 3]
    y = rng.standard_normal((32, 2)).astype(np.float32)
    train_loader = m.data.DataLoader(m.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                     batch_size=8, shuffle=False)
    # (pytorch-flows trains with Adam; here SGD: MADE's output biases feed a BatchNormFlow, which cancels them
    # (the shift goes with the batch mean, the log-scale's -a.sum with 0.5*log(var)), so their gradient is
    # float32 rounding alone, and Adam would scale that noise up to steps of lr in either direction)
    optimizer = m.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-6)
    history = []
    model.train()
    for batch_idx, (data, cond_data) in enumerate(train_loader):
        if batch_idx == steps:
            break
        optimizer.zero_grad()
        loss = -model.log_probs(data, cond_data).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    grads = {n: p.grad for n, p in model.named_parameters()}

    for module in model.modules():
        if isinstance(module, BatchNormFlow):
            module.momentum = 0
    with torch.no_grad():
        model(train_loader.dataset.tensors[0], train_loader.dataset.tensors[1])
    for module in model.modules():
        if isinstance(module, BatchNormFlow):
            module.momentum = 1

    model.eval()
    with torch.no_grad():
        test_log_probs = model.log_probs(torch.from_numpy(x[:8]), torch.from_numpy(y[:8]))
        u, logdet = model(torch.from_numpy(x[:8]), torch.from_numpy(y[:8]))
        back = model.sample(noise=u, cond_inputs=torch.from_numpy(y[:8]))
        torch.manual_seed(5)
        samples = model.sample(num_samples=6, cond_inputs=torch.from_numpy(y[:6]))
    null = torch.stack([p.grad for n, p in model.named_parameters() if n.endswith("trunk.3.linear.bias")])
    return {"history": history, "grads": grads, "state": model.state_dict(), "test": test_log_probs,
            "u": u, "logdet": logdet, "back": back, "x": x[:8], "samples": samples, "null": null}


def test_maf_made_batchnorm_flow_lu_and_coupling():
    ours, _ = run_both(maf, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["back"], ours["x"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["null"][:, [0, 4, 5, 6, 7]], 0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# A VAE whose likelihood is a distribution of its own: a discretised logistic written as a
# torch.distributions.Distribution subclass (arg_constraints, support, validation, an expand by
# _get_checked_instance), wrapped in Independent, expanded over importance samples, with a KL registered for it
# ----------------------------------------------------------------------------------------------


def make_custom_likelihood_vae(m, z_dim=3):
    nn = m.nn

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16, 24), nn.Softplus(), nn.Linear(24, 2 * z_dim))
            self.dec = nn.Sequential(nn.Linear(z_dim, 24), nn.Softplus(), nn.Linear(24, 2 * 2 * 16),
                                     nn.Unflatten(-1, (4, 4, 4)))

    return VAE()


def custom_likelihood_vae(m, weights, steps=4, k=3):
    torch, F = m.torch, m.F
    D = torch.distributions

    class DiscretizedLogistic(D.Distribution):
        """A logistic on [-1, 1] binned to 256 values, the edge bins taking the tails."""
        arg_constraints = {"loc": D.constraints.real, "log_scale": D.constraints.real}
        support = D.constraints.interval(-1.0, 1.0)
        has_rsample = True

        def __init__(self, loc, log_scale, validate_args=None):
            self.loc, self.log_scale = D.utils.broadcast_all(loc, log_scale)
            super().__init__(self.loc.shape, validate_args=validate_args)

        def expand(self, batch_shape, _instance=None):
            new = self._get_checked_instance(DiscretizedLogistic, _instance)
            batch_shape = torch.Size(batch_shape)
            new.loc = self.loc.expand(batch_shape)
            new.log_scale = self.log_scale.expand(batch_shape)
            super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
            new._validate_args = self._validate_args
            return new

        @property
        def mean(self):
            return self.loc

        def log_prob(self, x):
            if self._validate_args:
                self._validate_sample(x)
            centered = x - self.loc
            inv_scale = torch.exp(-self.log_scale)
            plus, minus = inv_scale * (centered + 1 / 255.), inv_scale * (centered - 1 / 255.)
            cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
            return torch.where(x < -0.999, F.logsigmoid(plus),
                               torch.where(x > 0.999, -F.softplus(minus), torch.log(cdf_delta.clamp(min=1e-12))))

        def rsample(self, sample_shape=torch.Size()):
            shape = self._extended_shape(sample_shape)
            u = torch.rand(shape).clamp(1e-5, 1 - 1e-5)
            return (self.loc + self.log_scale.exp() * (torch.log(u) - torch.log1p(-u))).clamp(-1, 1)

    @D.kl.register_kl(DiscretizedLogistic, DiscretizedLogistic)
    def _kl_discretized(p, q):  # (a moment-matching surrogate, to check that the registry dispatches to it)
        return (p.loc - q.loc) ** 2 + (p.log_scale - q.log_scale) ** 2

    class Logistic(D.TransformedDistribution):
        """A logistic prior as torch's LogNormal is written: a TransformedDistribution subclass whose expand sets
        its own parameters, then lets TransformedDistribution.expand fill in the rest."""
        arg_constraints = {"loc": D.constraints.real, "scale": D.constraints.positive}
        has_rsample = True

        def __init__(self, loc, scale, validate_args=None):
            self.loc, self.scale = D.utils.broadcast_all(loc, scale)
            base = D.Uniform(torch.zeros_like(self.loc), torch.ones_like(self.loc))
            transforms = [D.transforms.SigmoidTransform().inv, D.transforms.AffineTransform(self.loc, self.scale)]
            super().__init__(base, transforms, validate_args=validate_args)

        def expand(self, batch_shape, _instance=None):
            new = self._get_checked_instance(Logistic, _instance)
            new.loc = self.loc.expand(batch_shape)
            new.scale = self.scale.expand(batch_shape)
            return super().expand(batch_shape, _instance=new)

        @property
        def mean(self):
            return self.loc

    class MCNormal(D.Normal):
        """A posterior whose KL to any prior is estimated from one reparameterised draw (registered below for
        (MCNormal, Distribution): PyTorch prefers it to the inherited (Normal, Normal) closed form, with a warning)."""

    @D.kl.register_kl(MCNormal, D.Distribution)
    def _kl_monte_carlo(p, q):
        z = p.rsample()
        return p.log_prob(z) - q.log_prob(z)

    model = load(m, make_custom_likelihood_vae(m), weights)
    rng = np.random.default_rng(12)
    pixels = rng.integers(0, 256, (3, 4, 2, 4, 4))
    pixels[:, :, 0, 0, 0] = 0
    pixels[:, :, 1, 3, 3] = 255
    images = (pixels / 127.5 - 1).astype(np.float32)
    optimizer = m.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(6)
    history = []
    for step in range(steps):
        x = torch.from_numpy(images[step % 3])
        mu, log_sigma = model.enc(x).chunk(2, dim=-1)
        qz = D.Independent(D.Normal(mu, log_sigma.exp()), 1)
        pz = D.Independent(D.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
        z = qz.rsample((k,))  # (k, batch, z_dim)
        loc, log_scale = model.dec(z).chunk(2, dim=-3)
        px = D.Independent(DiscretizedLogistic(loc, log_scale.clamp(min=-7.)), 3)
        log_px = px.log_prob(x.expand(k, *x.shape))
        elbo = log_px - D.kl_divergence(qz, pz)
        if step % 2:  # every other step, a logistic prior of the prior's scale, expanded over the batch
            pz = D.Independent(Logistic(torch.zeros(mu.shape[-1]), torch.ones(mu.shape[-1]) * 0.6).expand(mu.shape), 1)
            assert pz.base_dist.mean.shape == mu.shape
        iwae = torch.logsumexp(log_px + pz.log_prob(z) - qz.log_prob(z), dim=0) - math.log(k)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kl_mc = D.kl_divergence(MCNormal(mu, log_sigma.exp()), D.Normal(torch.zeros_like(mu), 1.)).sum(-1)
        loss = -iwae.mean() / (2 * 16 * math.log(2.)) + 0.01 * kl_mc.mean()  # bits per dim, and a little MC KL
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append([loss.item(), elbo.mean().item(), kl_mc.mean().item(),
                        sum("Ambiguous kl_divergence(MCNormal, Normal)" in str(w.message) for w in caught)])
    grads = {n: p.grad for n, p in model.named_parameters()}
    with torch.no_grad():
        base = DiscretizedLogistic(loc[0], log_scale[0])
        wide = base.expand((2,) + tuple(base.batch_shape))
        sample = D.Independent(wide, 3).sample()
        kl = D.kl_divergence(base, DiscretizedLogistic(loc[1], log_scale[1]))
    try:
        DiscretizedLogistic(loc[0], log_scale[0]).log_prob(torch.from_numpy(images[0]) * 2)
        refused = False
    except ValueError:
        refused = True
    return {"history": history, "grads": grads, "state": model.state_dict(), "sample": sample, "kl": kl,
            "wide": list(wide.batch_shape), "refused": refused, "px_shape": [list(px.batch_shape), list(px.event_shape)]}


def test_vae_with_a_custom_distribution_likelihood():
    weights = weights_of(make_custom_likelihood_vae)
    ours, _ = run_both(custom_likelihood_vae, weights, rtol=2e-4, atol=5e-5)
    assert ours["wide"] == [2, 4, 2, 4, 4] and ours["refused"] is True
    assert [h[3] for h in ours["history"]] == [1, 0, 0, 0]  # the ambiguity warned once (the choice is memoised)
    assert ours["px_shape"] == [[3, 4], [2, 4, 4]]
    assert np.all(np.abs(ours["sample"]) <= 1)
