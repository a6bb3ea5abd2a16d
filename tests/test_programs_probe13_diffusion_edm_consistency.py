# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Diffusion models, flows, score matching and flow matching, run as tests/probe13_diffusion_common.py says. EDM's
preconditioning, loss and float64 Heun sampler with churn; consistency training with dropout replayed by
``get_rng_state``/``set_rng_state``, the pseudo-Huber loss and multistep sampling."""

import copy
import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# EDM (Karras et al. 2022): the preconditioned denoiser, its log-normal noise levels and loss, and the
# second-order sampler with churn in float64; consistency training (Song et al. 2023) with an EMA target,
# dropout replayed by get_rng_state/set_rng_state, the pseudo-Huber loss, and multistep sampling
# ----------------------------------------------------------------------------------------------


def make_edm_net(m, channels=2, dim=16, label_dim=3):
    torch, nn, F = m.torch, m.nn, m.F

    class FourierEmbedding(nn.Module):  # EDM's FourierEmbedding (its frequencies a buffer)
        def __init__(self, num_channels, scale=16):
            super().__init__()
            self.register_buffer('freqs', torch.randn(num_channels // 2) * scale)

        def forward(self, x):
            x = x.ger((2 * np.pi * self.freqs).to(x.dtype))
            x = torch.cat([x.cos(), x.sin()], dim=1)
            return x

    class TinyDenoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.map_noise = FourierEmbedding(dim)
            self.map_label = nn.Linear(label_dim, dim, bias=False)
            self.map_layer0 = nn.Linear(dim, dim)
            self.conv0 = nn.Conv2d(channels, dim, 3, padding=1)
            self.norm = nn.GroupNorm(4, dim, eps=1e-6)
            self.dropout = nn.Dropout(0.1)
            self.conv1 = nn.Conv2d(dim, channels, 3, padding=1)

        def forward(self, x, noise_labels, class_labels=None):
            emb = self.map_noise(noise_labels)
            emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # swap sin/cos
            if class_labels is not None:
                emb = emb + self.map_label(class_labels * np.sqrt(self.map_label.in_features))
            emb = F.silu(self.map_layer0(emb))
            h = self.conv0(x) + emb.unsqueeze(-1).unsqueeze(-1)
            h = F.silu(self.norm(h))
            return self.conv1(self.dropout(h))

    return TinyDenoiser()


def edm_and_consistency(m, weights, steps=4):
    torch, F = m.torch, m.F
    nn = m.nn

    class EDMPrecond(nn.Module):
        def __init__(self, model, label_dim=3, sigma_min=0, sigma_max=float('inf'), sigma_data=0.5):
            super().__init__()
            self.label_dim = label_dim
            self.sigma_min, self.sigma_max, self.sigma_data = sigma_min, sigma_max, sigma_data
            self.model = model

        def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
            x = x.to(torch.float32)
            sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
            class_labels = None if self.label_dim == 0 else torch.zeros([1, self.label_dim], device=x.device) \
                if class_labels is None else class_labels.to(torch.float32).reshape(-1, self.label_dim)
            dtype = torch.float32
            c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
            c_out = sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2).sqrt()
            c_in = 1 / (self.sigma_data ** 2 + sigma ** 2).sqrt()
            c_noise = sigma.log() / 4
            F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
            assert F_x.dtype == dtype
            D_x = c_skip * x + c_out * F_x.to(torch.float32)
            return D_x

        def round_sigma(self, sigma):
            return torch.as_tensor(sigma)

    class EDMLoss:
        def __init__(self, P_mean=-1.2, P_std=1.2, sigma_data=0.5):
            self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data

        def __call__(self, net, images, labels=None, augment_pipe=None):
            rnd_normal = torch.randn([images.shape[0], 1, 1, 1], device=images.device)
            sigma = (rnd_normal * self.P_std + self.P_mean).exp()
            weight = (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2
            y, augment_labels = augment_pipe(images) if augment_pipe is not None else (images, None)
            n = torch.randn_like(y) * sigma
            D_yn = net(y + n, sigma, labels)
            loss = weight * ((D_yn - y) ** 2)
            return loss

    torch.manual_seed(0)
    net = EDMPrecond(load(m, make_edm_net(m), weights))
    rng = np.random.default_rng(8)
    images = torch.from_numpy(np.tanh(rng.standard_normal((16, 2, 4, 4))).astype(np.float32))
    labels = torch.eye(3)[torch.from_numpy(rng.integers(0, 3, 16))]
    opt = m.optim.Adam(net.parameters(), lr=1e-3, betas=[0.9, 0.999], eps=1e-8)
    loss_fn = EDMLoss()
    edm_losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net=net, images=images[4 * step:4 * step + 4], labels=labels[4 * step:4 * step + 4])
        loss.sum().mul(1 / 4).backward()
        for param in net.parameters():
            if param.grad is not None:
                torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
        for g in opt.param_groups:
            g['lr'] = 1e-3 * min(step * 4 / 8, 1)
        opt.step()
        edm_losses.append(loss.mean().item())
    net.eval()

    def edm_sampler(net, latents, class_labels=None, randn_like=torch.randn_like, num_steps=6, sigma_min=0.002,
                    sigma_max=80, rho=7, S_churn=0, S_min=0, S_max=float('inf'), S_noise=1):
        sigma_min = max(sigma_min, net.sigma_min)
        sigma_max = min(sigma_max, net.sigma_max)
        step_indices = torch.arange(num_steps, dtype=torch.float64, device=latents.device)
        t_steps = (sigma_max ** (1 / rho) + step_indices / (num_steps - 1) * (
            sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        t_steps = torch.cat([net.round_sigma(t_steps), torch.zeros_like(t_steps[:1])])
        x_next = latents.to(torch.float64) * t_steps[0]
        for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
            x_cur = x_next
            gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
            t_hat = net.round_sigma(t_cur + gamma * t_cur)
            x_hat = x_cur + (t_hat ** 2 - t_cur ** 2).sqrt() * S_noise * randn_like(x_cur)
            denoised = net(x_hat, t_hat, class_labels).to(torch.float64)
            d_cur = (x_hat - denoised) / t_hat
            x_next = x_hat + (t_next - t_hat) * d_cur
            if i < num_steps - 1:
                denoised = net(x_next, t_next, class_labels).to(torch.float64)
                d_prime = (x_next - denoised) / t_next
                x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        return x_next, t_steps

    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        latents = torch.randn([3, 2, 4, 4], generator=gen)
        class_labels = torch.eye(3)[torch.tensor([0, 1, 2])]
        edm_images, t_steps = edm_sampler(net, latents, class_labels, S_churn=2, S_min=0.05, S_max=50,
                                          randn_like=lambda x: torch.randn_like(x, generator=gen))

    # consistency training: online model and its EMA target share a parametrisation with a boundary condition
    sigma_min, sigma_max, sigma_data, rho, num_scales = 0.002, 80.0, 0.5, 7.0, 10
    online = load(m, make_edm_net(m), weights)
    target = copy.deepcopy(online)
    target.requires_grad_(False)

    def append_dims(x, target_dims):
        dims_to_append = target_dims - x.ndim
        return x[(...,) + (None,) * dims_to_append]

    def get_scalings_for_boundary_condition(sigma):
        c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
        c_out = (sigma - sigma_min) * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
        c_in = 1 / (sigma**2 + sigma_data**2) ** 0.5
        return c_skip, c_out, c_in

    def denoise(model, x_t, sigmas, class_labels):
        c_skip, c_out, c_in = [append_dims(x, x_t.ndim) for x in get_scalings_for_boundary_condition(sigmas)]
        rescaled_t = 1000 * 0.25 * torch.log(sigmas + 1e-44)
        model_output = model(c_in * x_t, rescaled_t / 1000, class_labels)
        denoised = c_out * model_output + c_skip * x_t
        return denoised

    def mean_flat(tensor):
        return tensor.mean(dim=list(range(1, len(tensor.shape))))

    c = 0.00054 * math.sqrt(2 * 4 * 4)
    opt_ct = m.optim.RAdam(online.parameters(), lr=1e-3)
    ct_losses, same_dropout = [], []
    gen_ct = torch.Generator().manual_seed(9)
    online.train()
    target.train()
    for step in range(steps):
        x_start = images[4 * step:4 * step + 4]
        y = labels[4 * step:4 * step + 4]
        noise = torch.randn(x_start.shape, generator=gen_ct)
        indices = torch.randint(0, num_scales - 1, (x_start.shape[0],), generator=gen_ct)
        t = sigma_max ** (1 / rho) + indices / (num_scales - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
        t = t**rho
        t2 = sigma_max ** (1 / rho) + (indices + 1) / (num_scales - 1) * (
            sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
        t2 = t2**rho
        x_t = x_start + noise * append_dims(t, x_start.ndim)
        dropout_state = torch.get_rng_state()
        distiller = denoise(online, x_t, t, y)
        x_t2 = x_start + noise * append_dims(t2, x_start.ndim)
        torch.set_rng_state(dropout_state)
        with torch.no_grad():
            distiller_target = denoise(target, x_t2, t2, y).detach()
        diffs = (distiller - distiller_target) ** 2
        loss = mean_flat(torch.sqrt(diffs + c ** 2) - c)
        weights_ = 1.0 / (t - t2)  # iCT's 1 / (sigma_{i+1} - sigma_i)
        loss = (loss * weights_).mean()
        opt_ct.zero_grad()
        loss.backward()
        opt_ct.step()
        with torch.no_grad():
            mu = 0.9
            for targ, src in zip(target.parameters(), online.parameters()):
                targ.detach().mul_(mu).add_(src, alpha=1 - mu)
        ct_losses.append(loss.item())
    online.eval()

    # multistep consistency sampling
    @torch.no_grad()
    def stochastic_iterative_sampler(distiller, x, ts, t_min=0.002, t_max=80.0, generator=None):
        t_max_rho = t_max ** (1 / rho)
        t_min_rho = t_min ** (1 / rho)
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(ts) - 1):
            t = (t_max_rho + ts[i] / (num_scales - 1) * (t_min_rho - t_max_rho)) ** rho
            x0 = distiller(x, t * s_in)
            next_t = (t_max_rho + ts[i + 1] / (num_scales - 1) * (t_min_rho - t_max_rho)) ** rho
            next_t = np.clip(next_t, t_min, t_max)
            x = x0 + torch.randn(x.shape, generator=generator) * np.sqrt(next_t**2 - t_min**2)
        return x

    g_s = torch.Generator().manual_seed(4)
    x_T = torch.randn(3, 2, 4, 4, generator=g_s) * sigma_max
    cm_samples = stochastic_iterative_sampler(lambda x, t: denoise(online, x, t, class_labels), x_T, [0, 4, 9],
                                              generator=g_s)
    return {"edm_losses": edm_losses, "edm_params": net.state_dict(), "edm_images": edm_images,
            "t_steps": t_steps, "ct_losses": ct_losses, "online": online.state_dict(),
            "target": target.state_dict(), "cm_samples": cm_samples}


@pytest.mark.skipif(not __import__("tests.pytorch_programs", fromlist=["same_dropout_masks"]).same_dropout_masks(),
                    reason="PyTorch's dropout masks are not chainrule's here")
def test_edm_sampler_and_consistency_training():
    weights = weights_of(make_edm_net)
    ours, _ = run_both(edm_and_consistency, weights, rtol=2e-4, atol=2e-5)
    assert ours["edm_images"].dtype == np.float64 and ours["t_steps"].dtype == np.float64
    sigma = (80 ** (1 / 7) + np.arange(6) / 5 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(ours["t_steps"], np.append(sigma, 0.0), rtol=1e-12)
    assert np.all(np.isfinite(ours["cm_samples"]))
