# ruff: noqa: B007, E501, UP008, UP034  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere, run as tests/probe16_gen2_common.py says: NVAE reduced to two groups
(weight-normalised convolutions with data-dependent init, TorchScript helpers with in-place sampling, residual
posteriors, the KL balancer, spectral regularisation by power iteration)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# NVAE (NVlabs/NVAE), reduced to two latent groups: weight-normalised Conv2D subclasses with data-dependent
# initialisation (``.data =`` on parameters inside the first forward), TorchScript helpers (soft_clamp5 by an
# in-place tanh_, sampling by ``mu.mul(0).normal_()`` then ``mul_``/``add_``), residual posteriors, the
# discretised logistic mixture as NVAE writes it (torch.where, log_softmax, logsumexp, Gumbel-max sampling),
# the KL balancer (coefficients from NumPy scalars times tensors), spectral regularisation by batched power
# iteration on weights grouped by torch.Size keys, and the BatchNorm scale penalty
# ----------------------------------------------------------------------------------------------


def nvae_modules(m, C=6, L=2, num_mix=2):
    torch, nn, F = m.torch, m.nn, m.F

    @torch.jit.script
    def soft_clamp5(x):
        return x.div(5.).tanh_().mul(5.)    # 5. * torch.tanh(x / 5.) <--> soft differentiable clamp between [-5, 5]

    @torch.jit.script
    def sample_normal_jit(mu, sigma):
        eps = mu.mul(0).normal_()
        z = eps.mul_(sigma).add_(mu)
        return z, eps

    @torch.jit.script
    def normalize_weight_jit(log_weight_norm, weight):
        n = torch.exp(log_weight_norm)
        wn = torch.sqrt(torch.sum(weight * weight, dim=[1, 2, 3]))   # norm(w)
        weight = n * weight / (wn.view(-1, 1, 1, 1) + 1e-5)
        return weight

    def norm(t, dim):
        return torch.sqrt(torch.sum(t * t, dim))

    class Normal:
        def __init__(self, mu, log_sigma, temp=1.):
            self.mu = soft_clamp5(mu)
            log_sigma = soft_clamp5(log_sigma)
            self.sigma = torch.exp(log_sigma) + 1e-2      # we don't need this after soft clamp
            if temp != 1.:
                self.sigma *= temp

        def sample(self):
            return sample_normal_jit(self.mu, self.sigma)

        def sample_given_eps(self, eps):
            return eps * self.sigma + self.mu

        def log_p(self, samples):
            normalized_samples = (samples - self.mu) / self.sigma
            log_p = - 0.5 * normalized_samples * normalized_samples - 0.5 * np.log(2 * np.pi) - torch.log(self.sigma)
            return log_p

        def kl(self, normal_dist):
            term1 = (self.mu - normal_dist.mu) / normal_dist.sigma
            term2 = self.sigma / normal_dist.sigma
            return 0.5 * (term1 * term1 + term2 * term2) - 0.5 - torch.log(term2)

    def one_hot(indices, depth, dim):
        indices = indices.unsqueeze(dim)
        size = list(indices.size())
        size[dim] = depth
        y_onehot = torch.zeros(size)
        y_onehot.zero_()
        y_onehot.scatter_(dim, indices, 1)
        return y_onehot

    class DiscMixLogistic:
        def __init__(self, param, num_mix=10, num_bits=8):
            B, C, H, W = param.size()
            self.num_mix = num_mix
            self.logit_probs = param[:, :num_mix, :, :]                                   # B, M, H, W
            l = param[:, num_mix:, :, :].view(B, 3, 3 * num_mix, H, W)                    # B, 3, 3 * M, H, W
            self.means = l[:, :, :num_mix, :, :]                                          # B, 3, M, H, W
            self.log_scales = torch.clamp(l[:, :, num_mix:2 * num_mix, :, :], min=-7.0)   # B, 3, M, H, W
            self.coeffs = torch.tanh(l[:, :, 2 * num_mix:3 * num_mix, :, :])              # B, 3, M, H, W
            self.max_val = 2. ** num_bits - 1

        def log_prob(self, samples):
            assert torch.max(samples) <= 1.0 and torch.min(samples) >= 0.0
            # convert samples to be in [-1, 1]
            samples = 2 * samples - 1.0
            B, C, H, W = samples.size()
            assert C == 3, 'only RGB images are considered.'
            samples = samples.unsqueeze(4)                                                  # B, 3, H , W
            samples = samples.expand(-1, -1, -1, -1, self.num_mix).permute(0, 1, 4, 2, 3)  # B, 3, M, H, W
            mean1 = self.means[:, 0, :, :, :]                                               # B, M, H, W
            mean2 = self.means[:, 1, :, :, :] + \
                self.coeffs[:, 0, :, :, :] * samples[:, 0, :, :, :]                         # B, M, H, W
            mean3 = self.means[:, 2, :, :, :] + \
                self.coeffs[:, 1, :, :, :] * samples[:, 0, :, :, :] + \
                self.coeffs[:, 2, :, :, :] * samples[:, 1, :, :, :]                         # B, M, H, W
            mean1 = mean1.unsqueeze(1)                          # B, 1, M, H, W
            mean2 = mean2.unsqueeze(1)                          # B, 1, M, H, W
            mean3 = mean3.unsqueeze(1)                          # B, 1, M, H, W
            means = torch.cat([mean1, mean2, mean3], dim=1)     # B, 3, M, H, W
            centered = samples - means                          # B, 3, M, H, W
            inv_stdv = torch.exp(- self.log_scales)
            plus_in = inv_stdv * (centered + 1. / self.max_val)
            cdf_plus = torch.sigmoid(plus_in)
            min_in = inv_stdv * (centered - 1. / self.max_val)
            cdf_min = torch.sigmoid(min_in)
            log_cdf_plus = plus_in - F.softplus(plus_in)
            log_one_minus_cdf_min = - F.softplus(min_in)
            cdf_delta = cdf_plus - cdf_min
            mid_in = inv_stdv * centered
            log_pdf_mid = mid_in - self.log_scales - 2. * F.softplus(mid_in)
            log_prob_mid_safe = torch.where(cdf_delta > 1e-5,
                                            torch.log(torch.clamp(cdf_delta, min=1e-10)),
                                            log_pdf_mid - np.log(self.max_val / 2))
            # the original implementation uses samples > 0.999, this ignores the largest possible pixel value (255)
            # which is mapped to 0.9922
            log_probs = torch.where(samples < -0.999, log_cdf_plus, torch.where(samples > 0.99, log_one_minus_cdf_min,
                                                                                log_prob_mid_safe))   # B, 3, M, H, W
            log_probs = torch.sum(log_probs, 1) + F.log_softmax(self.logit_probs, dim=1)  # B, M, H, W
            return torch.logsumexp(log_probs, dim=1)                                      # B, H, W

        def sample(self, t=1.):
            gumbel = -torch.log(- torch.log(torch.Tensor(self.logit_probs.size()).uniform_(1e-5, 1. - 1e-5)))  # B, M, H, W
            sel = one_hot(torch.argmax(self.logit_probs / t + gumbel, 1), self.num_mix, dim=1)          # B, M, H, W
            sel = sel.unsqueeze(1)                                                                 # B, 1, M, H, W
            # select logistic parameters
            means = torch.sum(self.means * sel, dim=2)                                             # B, 3, H, W
            log_scales = torch.sum(self.log_scales * sel, dim=2)                                   # B, 3, H, W
            coeffs = torch.sum(self.coeffs * sel, dim=2)                                           # B, 3, H, W
            # cells from logistic & clip to interval
            # we don't actually round to the nearest 8bit value when sampling
            u = torch.Tensor(means.size()).uniform_(1e-5, 1. - 1e-5)                               # B, 3, H, W
            x = means + torch.exp(log_scales) * t * (torch.log(u) - torch.log(1. - u))             # B, 3, H, W
            x0 = torch.clamp(x[:, 0, :, :], -1, 1.)                                                # B, H, W
            x1 = torch.clamp(x[:, 1, :, :] + coeffs[:, 0, :, :] * x0, -1, 1)                       # B, H, W
            x2 = torch.clamp(x[:, 2, :, :] + coeffs[:, 1, :, :] * x0 + coeffs[:, 2, :, :] * x1, -1, 1)  # B, H, W
            x0 = x0.unsqueeze(1)
            x1 = x1.unsqueeze(1)
            x2 = x2.unsqueeze(1)
            x = torch.cat([x0, x1, x2], 1)
            x = x / 2. + 0.5
            return x

    class Conv2D(nn.Conv2d):
        """Allows for weights as input."""

        def __init__(self, C_in, C_out, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=False,
                     data_init=False, weight_norm=True):
            super(Conv2D, self).__init__(C_in, C_out, kernel_size, stride, padding, dilation, groups, bias)
            self.log_weight_norm = None
            if weight_norm:
                init = norm(self.weight, dim=[1, 2, 3]).view(-1, 1, 1, 1)
                self.log_weight_norm = nn.Parameter(torch.log(init + 1e-2), requires_grad=True)
            self.data_init = data_init
            self.init_done = False
            self.weight_normalized = self.normalize_weight()

        def forward(self, x):
            # do data based initialization
            if self.data_init and not self.init_done:
                with torch.no_grad():
                    weight = self.weight / (norm(self.weight, dim=[1, 2, 3]).view(-1, 1, 1, 1) + 1e-5)
                    bias = None
                    out = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
                    mn = torch.mean(out, dim=[0, 2, 3])
                    st = 5 * torch.std(out, dim=[0, 2, 3])
                    if self.bias is not None:
                        self.bias.data = - mn / (st + 1e-5)
                    self.log_weight_norm.data = -torch.log((st.view(-1, 1, 1, 1) + 1e-5))
                    self.init_done = True
            self.weight_normalized = self.normalize_weight()
            bias = self.bias
            return F.conv2d(x, self.weight_normalized, bias, self.stride, self.padding, self.dilation, self.groups)

        def normalize_weight(self):
            """ applies weight normalization """
            if self.log_weight_norm is not None:
                weight = normalize_weight_jit(self.log_weight_norm, self.weight)
            else:
                weight = self.weight
            return weight

    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    class AutoEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            # (NVAE's stem has a bias; here its output goes only into a BatchNorm, which cancels a bias: its
            # gradient would be float32 rounding alone)
            self.stem = Conv2D(3, C, 3, padding=1, bias=False, data_init=True)
            self.enc1 = nn.Sequential(nn.BatchNorm2d(C, momentum=0.05), Swish(), Conv2D(C, C, 3, stride=2, padding=1, bias=True))
            self.enc2 = nn.Sequential(nn.BatchNorm2d(C, momentum=0.05), Swish(), Conv2D(C, C, 3, stride=2, padding=1, bias=True))
            self.enc_sampler1 = Conv2D(C, 2 * L, 3, padding=1, bias=True)
            self.dec_z1 = Conv2D(L, C, 1, bias=True)
            self.enc_sampler2 = Conv2D(2 * C, 2 * L, 3, padding=1, bias=True)
            self.dec_sampler2 = nn.Sequential(nn.ELU(), Conv2D(C, 2 * L, 3, padding=1, bias=True))
            self.dec_z2 = Conv2D(C + L, C, 3, padding=1, bias=True)
            self.image_conditional = nn.Sequential(nn.ELU(), Conv2D(C, 10 * num_mix, 3, padding=1, bias=True))
            self.sr_u, self.sr_v = {}, {}
            self.num_power_iter = 2
            self.all_conv_layers = [mod for mod in self.modules() if isinstance(mod, Conv2D)]
            self.all_bn_layers = [mod for mod in self.modules() if isinstance(mod, nn.BatchNorm2d)]

        def forward(self, x):
            s1 = self.enc1(self.stem(2 * x - 1.0))          # 4x4
            s2 = self.enc2(s1)                              # 2x2
            mu_q, log_sig_q = torch.chunk(self.enc_sampler1(s2), 2, dim=1)
            dist = Normal(mu_q, log_sig_q)
            z1, _ = dist.sample()
            log_q_conv = dist.log_p(z1)
            all_q, all_log_q = [dist], [log_q_conv]
            h = F.interpolate(self.dec_z1(z1), scale_factor=2, mode="nearest")
            mu_p, log_sig_p = torch.chunk(self.dec_sampler2(h), 2, dim=1)
            ftr = self.enc_sampler2(torch.cat([s1, h], dim=1))
            mu_q, log_sig_q = torch.chunk(ftr, 2, dim=1)
            dist = Normal(mu_p + mu_q, log_sig_p + log_sig_q)
            z2, _ = dist.sample()
            all_q.append(dist)
            all_log_q.append(dist.log_p(z2))
            all_p = [Normal(torch.zeros_like(z1), torch.zeros_like(z1)), Normal(mu_p, log_sig_p)]
            h = self.dec_z2(torch.cat([h, z2], dim=1))
            logits = self.image_conditional(F.interpolate(h, scale_factor=2, mode="nearest"))
            kl_all = [q.kl(p) for q, p in zip(all_q, all_p)]
            return logits, all_log_q, kl_all

        def decoder_output(self, logits):
            return DiscMixLogistic(logits, num_mix, num_bits=8)

        def spectral_norm_parallel(self):
            """ This method computes spectral normalization for all conv layers in parallel. This method should be called
             after calling the forward method of all the conv layers in each iteration. """
            weights = {}   # a dictionary indexed by the shape of weights
            for l in self.all_conv_layers:
                weight = l.weight_normalized
                weight_mat = weight.view(weight.size(0), -1)
                if weight_mat.shape not in weights:
                    weights[weight_mat.shape] = []
                weights[weight_mat.shape].append(weight_mat)
            loss = 0
            for i in weights:
                weights[i] = torch.stack(weights[i], dim=0)
                with torch.no_grad():
                    num_iter = self.num_power_iter
                    if i not in self.sr_u:
                        num_w, row, col = weights[i].shape
                        self.sr_u[i] = F.normalize(torch.ones(num_w, row).normal_(0, 1), dim=1, eps=1e-3)
                        self.sr_v[i] = F.normalize(torch.ones(num_w, col).normal_(0, 1), dim=1, eps=1e-3)
                        # increase the number of iterations for the first time
                        num_iter = 10 * self.num_power_iter
                    for j in range(num_iter):
                        # Spectral norm of weight equals to `u^T W v`, where `u` and `v`
                        # are the first left and right singular vectors.
                        # This power iteration produces approximations of `u` and `v`.
                        self.sr_v[i] = F.normalize(torch.matmul(self.sr_u[i].unsqueeze(1), weights[i]).squeeze(1),
                                                   dim=1, eps=1e-3)  # bx1xr * bxrxc --> bx1xc --> bxc
                        self.sr_u[i] = F.normalize(torch.matmul(weights[i], self.sr_v[i].unsqueeze(2)).squeeze(2),
                                                   dim=1, eps=1e-3)  # bxrxc * bxcx1 --> bxrx1  --> bxr
                sigma = torch.matmul(self.sr_u[i].unsqueeze(1), torch.matmul(weights[i], self.sr_v[i].unsqueeze(2)))
                loss += torch.sum(sigma)
            return loss

        def batchnorm_loss(self):
            loss = torch.zeros(size=())
            for l in self.all_bn_layers:
                if l.affine:
                    loss += torch.max(torch.abs(l.weight))
            return loss

    return AutoEncoder()


def nvae(m, weights, steps=4, fun="sqrt"):
    torch = m.torch
    model = load(m, nvae_modules(m), weights)

    def kl_balancer_coeff(num_scales, groups_per_scale, fun):
        if fun == 'equal':
            coeff = torch.cat([torch.ones(groups_per_scale[num_scales - i - 1]) for i in range(num_scales)], dim=0)
        elif fun == 'linear':
            coeff = torch.cat([(2 ** i) * torch.ones(groups_per_scale[num_scales - i - 1]) for i in range(num_scales)], dim=0)
        elif fun == 'sqrt':
            coeff = torch.cat([np.sqrt(2 ** i) * torch.ones(groups_per_scale[num_scales - i - 1]) for i in range(num_scales)], dim=0)
        elif fun == 'square':
            coeff = torch.cat([np.square(2 ** i) / groups_per_scale[num_scales - i - 1] * torch.ones(groups_per_scale[num_scales - i - 1]) for i in range(num_scales)], dim=0)
        else:
            raise NotImplementedError
        # convert min to 1.
        coeff /= torch.min(coeff)
        return coeff

    def kl_per_group(kl_all):
        kl_vals = torch.mean(kl_all, dim=0)
        kl_coeff_i = torch.abs(kl_all)
        kl_coeff_i = torch.mean(kl_coeff_i, dim=0, keepdim=True) + 0.01
        return kl_coeff_i, kl_vals

    def kl_balancer(kl_all, kl_coeff=1.0, kl_balance=False, alpha_i=None):
        if kl_balance and kl_coeff < 1.0:
            alpha_i = alpha_i.unsqueeze(0)
            kl_all = torch.stack(kl_all, dim=1)
            kl_coeff_i, kl_vals = kl_per_group(kl_all)
            total_kl = torch.sum(kl_coeff_i)
            kl_coeff_i = kl_coeff_i / alpha_i * total_kl
            kl_coeff_i = kl_coeff_i / torch.mean(kl_coeff_i, dim=1, keepdim=True)
            kl = torch.sum(kl_all * kl_coeff_i.detach(), dim=1)
            # for reporting
            kl_coeffs = kl_coeff_i.squeeze(0)
        else:
            kl_all = torch.stack(kl_all, dim=1)
            kl_vals = torch.mean(kl_all, dim=0)
            kl = torch.sum(kl_all, dim=1)
            kl_coeffs = torch.ones(size=(len(kl_vals),))
        return kl_coeff * kl, kl_coeffs, kl_vals

    def kl_coeff(step, total_step, constant_step, min_kl_coeff):
        return max(min((step - constant_step) / total_step, 1.0), min_kl_coeff)

    alpha_i = kl_balancer_coeff(num_scales=2, groups_per_scale=[1, 1], fun=fun)
    cnn_optimizer = m.optim.Adamax(model.parameters(), 1e-2, weight_decay=3e-4, eps=1e-3)
    rng = np.random.default_rng(41)
    images = (rng.integers(0, 256, (steps, 3, 3, 8, 8)) / 255.).astype(np.float32)
    torch.manual_seed(9)
    history = []
    model.train()
    for global_step in range(steps):
        x = torch.from_numpy(images[global_step])
        cnn_optimizer.zero_grad()
        logits, log_q, kl_all = model(x)
        output = model.decoder_output(logits)
        kl_coeff_now = kl_coeff(global_step, 4, 1, 0.1)
        recon_loss = -output.log_prob(x).sum(dim=[1, 2])
        balanced_kl, kl_coeffs, kl_vals = kl_balancer([k.sum(dim=[1, 2, 3]) for k in kl_all], kl_coeff_now,
                                                      kl_balance=True, alpha_i=alpha_i)
        nelbo_batch = recon_loss + balanced_kl
        loss = torch.mean(nelbo_batch)
        norm_loss = model.spectral_norm_parallel()
        bn_loss = model.batchnorm_loss()
        wdn_coeff = 0.1
        loss += norm_loss * wdn_coeff + bn_loss * wdn_coeff
        loss.backward()
        cnn_optimizer.step()
        history.append([loss.item(), norm_loss.item(), bn_loss.item(), kl_coeff_now] + kl_coeffs.tolist())
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        logits, _, _ = model(torch.from_numpy(images[0]))
        sample = model.decoder_output(logits).sample(t=0.8)
    return {"history": history, "grads": grads, "state": model.state_dict(), "alpha": alpha_i, "sample": sample,
            "sr_u": {str(tuple(k)): v for k, v in model.sr_u.items()}, "init_done": model.stem.init_done}


@pytest.mark.filterwarnings("ignore:`.*jit.script` is deprecated")
@pytest.mark.parametrize("fun", ["sqrt", "square"])
def test_nvae_weight_norm_data_init_kl_balancing_and_spectral_regularisation(fun):
    weights = weights_of(nvae_modules)
    # (1e-3: the discretised logistic's bin probabilities are differences of two sigmoids 2/255 apart, so in float32
    # its log-likelihood's gradient carries relative errors of about 2e-4 against float64, the same size in
    # PyTorch's and in chainrule's, which four optimiser steps then carry into every layer)
    ours, _ = run_both(nvae, weights, fun=fun, rtol=1e-3, atol=1e-3)
    assert ours["init_done"] is True
    np.testing.assert_allclose(ours["alpha"], [1.0, np.sqrt(2.0)] if fun == "sqrt" else [1.0, 4.0], rtol=1e-6)
    assert np.all((ours["sample"] >= 0) & (ours["sample"] <= 1))
