# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Diffusion models, flows, score matching and flow matching (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same weights and the same seeded generators, comparing losses,
gradients, parameters after several optimiser steps, and whole sampling loops.

- The annotated diffusion model's UNet (weight-standardised convolutions, ``GroupNorm``, ``SiLU``, the time
  embedding's scale and shift by ``chunk``, attention and linear attention on feature maps by ``einsum``, a
  space-to-depth downsample, ``Upsample(mode="nearest")``, skip concatenation), trained with linear betas, an
  ``extract`` helper, ``torch.randint``/``torch.randn_like`` from a ``torch.Generator``, Huber/L1 losses and the
  min-SNR weight, then sampled by DDPM's ancestral loop under ``torch.inference_mode``; the schedule's float32
  ``cumprod`` compared exactly.
- diffusers' DDPM, DDIM and Euler schedulers (cosine/scaled-linear/sigmoid betas, zero terminal SNR,
  v-prediction, learned-range variances, dynamic thresholding by ``torch.quantile``, trailing spacing, Karras
  sigmas with churn, per-sample generator lists), its timestep embedding, a conditional UNet with
  ``ConvTranspose2d``, conditioning dropout, ``EMAModel``, a ``LambdaLR`` warm-up, guidance with rescale.
- EMA of weights: ema-pytorch's ``_foreach_lerp_``/``_foreach_copy_`` and ``lerp_`` loop (buffers too, names
  kept out), Karras' power-function EMA by ``_foreach_mul_``/``_foreach_add_``, ``AveragedModel`` with
  ``get_ema_multi_avg_fn`` (``use_buffers``), a custom ``avg_fn`` and ``update_bn``; and (a strict xfail) an
  EMA over the state dict filtered by ``dtype.is_floating_point``.
- RealNVP on images (logit dequantisation, checkerboard and channel-wise couplings with weight-normed
  convolutions, squeeze), nflows' ActNorm and ``LULinear`` (NumPy index assignment, ``solve_triangular``), an
  invertible 1x1 convolution from ``lu_factor``/``lu_unpack``/``lu_solve``, an ``Independent(Normal)`` prior.
- Score matching: NCSN's annealed DSM and Langevin dynamics, sliced score matching (``autograd.grad`` with
  ``create_graph``), exact score matching by the Jacobian's trace, Hutchinson's estimator against
  ``autograd.functional.jacobian``.
- Flow matching (torchcfm's matchers), Euler/Heun/midpoint samplers, the CNF likelihood by
  ``torch.func.vmap(jacrev)``, a reflow step.
- EDM's preconditioning, loss and float64 Heun sampler with churn; consistency training with dropout replayed by
  ``get_rng_state``/``set_rng_state``, the pseudo-Huber loss and multistep sampling.
- DiT (adaLN-Zero, ``scaled_dot_product_attention``, patchify/unpatchify by ``einsum``, label dropout) trained by
  guided-diffusion's hybrid loss (learned variances, ``discretized_gaussian_log_likelihood``), respaced sampling.
- A half-precision diffusers-style DDIM pipeline (float16 UNet, latents and EMA) and a VQ-VAE with an EMA
  codebook (straight-through estimator, ``scatter_``, ``bincount``, ``index_add_``, ``one_hot``).
- Latent diffusion's spatial transformer as diffusers writes it: cross-attention scores by ``baddbmm`` of an
  empty tensor with beta=0, an additive padding mask repeated per head, GEGLU."""

import copy
import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# The annotated diffusion model's UNet, DDPM training and ancestral sampling
# ----------------------------------------------------------------------------------------------


def make_unet(m, dim=8, channels=1, dim_mults=(1, 2)):
    torch, nn, F = m.torch, m.nn, m.F
    from functools import partial

    def exists(x):
        return x is not None

    def default(val, d):
        if exists(val):
            return val
        return d() if callable(d) else d

    class Residual(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x, *args, **kwargs):
            return self.fn(x, *args, **kwargs) + x

    def Upsample(dim, dim_out=None):
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(dim, default(dim_out, dim), 3, padding=1),
        )

    class SpaceToDepth(nn.Module):  # Rearrange("b c (h p1) (w p2) -> b (c p1 p2) h w", p1=2, p2=2)
        def forward(self, x):
            b, c, h, w = x.shape
            x = x.reshape(b, c, h // 2, 2, w // 2, 2)
            return x.permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)

    def Downsample(dim, dim_out=None):
        return nn.Sequential(SpaceToDepth(), nn.Conv2d(dim * 4, default(dim_out, dim), 1))

    class SinusoidalPositionEmbeddings(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dim = dim

        def forward(self, time):
            device = time.device
            half_dim = self.dim // 2
            embeddings = math.log(10000) / (half_dim - 1)
            embeddings = torch.exp(torch.arange(half_dim, device=device) * -embeddings)
            embeddings = time[:, None] * embeddings[None, :]
            embeddings = torch.cat((embeddings.sin(), embeddings.cos()), dim=-1)
            return embeddings

    class WeightStandardizedConv2d(nn.Conv2d):
        def forward(self, x):
            eps = 1e-5 if x.dtype == torch.float32 else 1e-3
            weight = self.weight
            mean = weight.mean(dim=[1, 2, 3], keepdim=True)
            var = torch.var(weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
            normalized_weight = (weight - mean) * (var + eps).rsqrt()
            return F.conv2d(x, normalized_weight, self.bias, self.stride, self.padding, self.dilation,
                            self.groups)

    class Block(nn.Module):
        def __init__(self, dim, dim_out, groups=8):
            super().__init__()
            self.proj = WeightStandardizedConv2d(dim, dim_out, 3, padding=1)
            self.norm = nn.GroupNorm(groups, dim_out)
            self.act = nn.SiLU()

        def forward(self, x, scale_shift=None):
            x = self.proj(x)
            x = self.norm(x)
            if exists(scale_shift):
                scale, shift = scale_shift
                x = x * (scale + 1) + shift
            x = self.act(x)
            return x

    class ResnetBlock(nn.Module):
        def __init__(self, dim, dim_out, *, time_emb_dim=None, groups=8):
            super().__init__()
            self.mlp = (nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out * 2))
                        if exists(time_emb_dim) else None)
            self.block1 = Block(dim, dim_out, groups=groups)
            self.block2 = Block(dim_out, dim_out, groups=groups)
            self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

        def forward(self, x, time_emb=None):
            scale_shift = None
            if exists(self.mlp) and exists(time_emb):
                time_emb = self.mlp(time_emb)
                time_emb = time_emb[:, :, None, None]  # rearrange(time_emb, "b c -> b c 1 1")
                scale_shift = time_emb.chunk(2, dim=1)
            h = self.block1(x, scale_shift=scale_shift)
            h = self.block2(h)
            return h + self.res_conv(x)

    class Attention(nn.Module):
        def __init__(self, dim, heads=2, dim_head=4):
            super().__init__()
            self.scale = dim_head ** -0.5
            self.heads = heads
            hidden_dim = dim_head * heads
            self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, bias=False)
            self.to_out = nn.Conv2d(hidden_dim, dim, 1)

        def forward(self, x):
            b, c, h, w = x.shape
            qkv = self.to_qkv(x).chunk(3, dim=1)
            q, k, v = map(lambda t: t.reshape(b, self.heads, -1, h * w), qkv)
            q = q * self.scale
            sim = torch.einsum("b h d i, b h d j -> b h i j", q, k)
            sim = sim - sim.amax(dim=-1, keepdim=True).detach()
            attn = sim.softmax(dim=-1)
            out = torch.einsum("b h i j, b h d j -> b h i d", attn, v)
            out = out.permute(0, 1, 3, 2).reshape(b, -1, h, w)  # "b h (x y) d -> b (h d) x y"
            return self.to_out(out)

    class LinearAttention(nn.Module):
        def __init__(self, dim, heads=2, dim_head=4):
            super().__init__()
            self.scale = dim_head ** -0.5
            self.heads = heads
            hidden_dim = dim_head * heads
            self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, bias=False)
            self.to_out = nn.Sequential(nn.Conv2d(hidden_dim, dim, 1), nn.GroupNorm(1, dim))

        def forward(self, x):
            b, c, h, w = x.shape
            qkv = self.to_qkv(x).chunk(3, dim=1)
            q, k, v = map(lambda t: t.reshape(b, self.heads, -1, h * w), qkv)
            q = q.softmax(dim=-2)
            k = k.softmax(dim=-1)
            q = q * self.scale
            context = torch.einsum("b h d n, b h e n -> b h d e", k, v)
            out = torch.einsum("b h d e, b h d n -> b h e n", context, q)
            out = out.reshape(b, -1, h, w)  # "b h c (x y) -> b (h c) x y"
            return self.to_out(out)

    class PreNorm(nn.Module):
        def __init__(self, dim, fn):
            super().__init__()
            self.fn = fn
            self.norm = nn.GroupNorm(1, dim)

        def forward(self, x):
            x = self.norm(x)
            return self.fn(x)

    class Unet(nn.Module):
        def __init__(self, dim, init_dim=None, out_dim=None, dim_mults=(1, 2, 4, 8), channels=3,
                     self_condition=False, resnet_block_groups=4):
            super().__init__()
            self.channels = channels
            self.self_condition = self_condition
            input_channels = channels * (2 if self_condition else 1)
            init_dim = default(init_dim, dim)
            self.init_conv = nn.Conv2d(input_channels, init_dim, 1, padding=0)
            dims = [init_dim, *map(lambda m: dim * m, dim_mults)]
            in_out = list(zip(dims[:-1], dims[1:]))
            block_klass = partial(ResnetBlock, groups=resnet_block_groups)
            time_dim = dim * 4
            self.time_mlp = nn.Sequential(
                SinusoidalPositionEmbeddings(dim), nn.Linear(dim, time_dim), nn.GELU(),
                nn.Linear(time_dim, time_dim))
            self.downs = nn.ModuleList([])
            self.ups = nn.ModuleList([])
            num_resolutions = len(in_out)
            for ind, (dim_in, dim_out) in enumerate(in_out):
                is_last = ind >= (num_resolutions - 1)
                self.downs.append(nn.ModuleList([
                    block_klass(dim_in, dim_in, time_emb_dim=time_dim),
                    block_klass(dim_in, dim_in, time_emb_dim=time_dim),
                    Residual(PreNorm(dim_in, LinearAttention(dim_in))),
                    Downsample(dim_in, dim_out) if not is_last else nn.Conv2d(dim_in, dim_out, 3, padding=1),
                ]))
            mid_dim = dims[-1]
            self.mid_block1 = block_klass(mid_dim, mid_dim, time_emb_dim=time_dim)
            self.mid_attn = Residual(PreNorm(mid_dim, Attention(mid_dim)))
            self.mid_block2 = block_klass(mid_dim, mid_dim, time_emb_dim=time_dim)
            for ind, (dim_in, dim_out) in enumerate(reversed(in_out)):
                is_last = ind == (len(in_out) - 1)
                self.ups.append(nn.ModuleList([
                    block_klass(dim_out + dim_in, dim_out, time_emb_dim=time_dim),
                    block_klass(dim_out + dim_in, dim_out, time_emb_dim=time_dim),
                    Residual(PreNorm(dim_out, LinearAttention(dim_out))),
                    Upsample(dim_out, dim_in) if not is_last else nn.Conv2d(dim_out, dim_in, 3, padding=1),
                ]))
            self.out_dim = default(out_dim, channels)
            self.final_res_block = block_klass(dim * 2, dim, time_emb_dim=time_dim)
            self.final_conv = nn.Conv2d(dim, self.out_dim, 1)

        def forward(self, x, time, x_self_cond=None):
            x = self.init_conv(x)
            r = x.clone()
            t = self.time_mlp(time)
            h = []
            for block1, block2, attn, downsample in self.downs:
                x = block1(x, t)
                h.append(x)
                x = block2(x, t)
                x = attn(x)
                h.append(x)
                x = downsample(x)
            x = self.mid_block1(x, t)
            x = self.mid_attn(x)
            x = self.mid_block2(x, t)
            for block1, block2, attn, upsample in self.ups:
                x = torch.cat((x, h.pop()), dim=1)
                x = block1(x, t)
                x = torch.cat((x, h.pop()), dim=1)
                x = block2(x, t)
                x = attn(x)
                x = upsample(x)
            x = torch.cat((x, r), dim=1)
            x = self.final_res_block(x, t)
            return self.final_conv(x)

    return Unet(dim=dim, channels=channels, dim_mults=dim_mults)


def linear_beta_schedule(m, timesteps):
    beta_start = 0.0001
    beta_end = 0.02
    return m.torch.linspace(beta_start, beta_end, timesteps)


def annotated_ddpm(m, weights, steps=3, timesteps=40):
    torch, F = m.torch, m.F
    model = load(m, make_unet(m), weights)
    betas = linear_beta_schedule(m, timesteps)
    alphas = 1. - betas
    alphas_cumprod = torch.cumprod(alphas, axis=0)
    alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
    sqrt_recip_alphas = torch.sqrt(1.0 / alphas)
    sqrt_alphas_cumprod = torch.sqrt(alphas_cumprod)
    sqrt_one_minus_alphas_cumprod = torch.sqrt(1. - alphas_cumprod)
    posterior_variance = betas * (1. - alphas_cumprod_prev) / (1. - alphas_cumprod)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    maybe_clipped_snr = snr.clone()
    maybe_clipped_snr.clamp_(max=5)
    loss_weight = maybe_clipped_snr / snr

    def extract(a, t, x_shape):
        batch_size = t.shape[0]
        out = a.gather(-1, t.cpu())
        return out.reshape(batch_size, *((1,) * (len(x_shape) - 1))).to(t.device)

    def q_sample(x_start, t, noise=None):
        if noise is None:
            noise = torch.randn_like(x_start)
        sqrt_alphas_cumprod_t = extract(sqrt_alphas_cumprod, t, x_start.shape)
        sqrt_one_minus_alphas_cumprod_t = extract(sqrt_one_minus_alphas_cumprod, t, x_start.shape)
        return sqrt_alphas_cumprod_t * x_start + sqrt_one_minus_alphas_cumprod_t * noise

    def p_losses(denoise_model, x_start, t, noise=None, loss_type="huber"):
        if noise is None:
            noise = torch.randn_like(x_start, generator=g)
        x_noisy = q_sample(x_start=x_start, t=t, noise=noise)
        predicted_noise = denoise_model(x_noisy, t)
        if loss_type == 'l1':
            loss = F.l1_loss(noise, predicted_noise)
        elif loss_type == 'l2':
            loss = F.mse_loss(noise, predicted_noise)
        elif loss_type == "huber":
            loss = F.smooth_l1_loss(noise, predicted_noise, reduction='none')
            loss = loss.mean(dim=[1, 2, 3])
            loss = (loss * extract(loss_weight, t, loss.shape)).mean()
        else:
            raise NotImplementedError()
        return loss

    rng = np.random.default_rng(0)
    images = np.tanh(rng.standard_normal((12, 1, 8, 8))).astype(np.float32)
    loader = m.data.DataLoader(m.data.TensorDataset(torch.from_numpy(images)), batch_size=4)
    g = torch.Generator().manual_seed(1234)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for epoch in range(1):
        for step, (batch,) in enumerate(loader):
            optimizer.zero_grad()
            batch_size = batch.shape[0]
            t = torch.randint(0, timesteps, (batch_size,), device="cpu", generator=g).long()
            loss = p_losses(model, batch, t, loss_type="huber" if step % 2 == 0 else "l1")
            losses.append(loss.item())
            loss.backward()
            optimizer.step()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    @torch.inference_mode()
    def p_sample(model, x, t, t_index):
        betas_t = extract(betas, t, x.shape)
        sqrt_one_minus_alphas_cumprod_t = extract(sqrt_one_minus_alphas_cumprod, t, x.shape)
        sqrt_recip_alphas_t = extract(sqrt_recip_alphas, t, x.shape)
        model_mean = sqrt_recip_alphas_t * (x - betas_t * model(x, t) / sqrt_one_minus_alphas_cumprod_t)
        if t_index == 0:
            return model_mean
        else:
            posterior_variance_t = extract(posterior_variance, t, x.shape)
            noise = torch.randn(x.shape, generator=g)
            return model_mean + torch.sqrt(posterior_variance_t) * noise

    @torch.inference_mode()
    def p_sample_loop(model, shape):
        b = shape[0]
        img = torch.randn(shape, generator=g)
        imgs = []
        for i in reversed(range(0, timesteps)):
            img = p_sample(model, img, torch.full((b,), i, dtype=torch.long), i)
            if i % 10 == 0:
                imgs.append(img.cpu().numpy())
        return imgs, img

    model.eval()
    imgs, img = p_sample_loop(model, shape=(2, 1, 8, 8))
    return {"losses": losses, "grads": grads, "params": dict(model.named_parameters()), "imgs": imgs,
            "inference": img.is_inference(), "requires_grad": img.requires_grad,
            "posterior_variance": posterior_variance, "loss_weight": loss_weight,
            "schedule": torch.cumprod(1 - linear_beta_schedule(m, 1000), dim=0)}


def test_annotated_diffusion_unet_training_and_ddpm_sampling():
    weights = weights_of(make_unet)
    ours, theirs = run_both(annotated_ddpm, weights, rtol=2e-4, atol=2e-5)
    if theirs is not None:  # the schedule itself exactly (its float32 running product was a unit off in 869 of 1000)
        np.testing.assert_array_equal(ours["schedule"], theirs["schedule"])
    assert ours["inference"] is True and ours["requires_grad"] is False
    betas = np.linspace(1e-4, 0.02, 40, dtype=np.float32)
    acp = np.cumprod(1 - betas.astype(np.float64))
    acp_prev = np.concatenate([[1.0], acp[:-1]])
    # (to 1e-3: float32's cancellation in 1 - acp)
    np.testing.assert_allclose(ours["posterior_variance"], betas * (1 - acp_prev) / (1 - acp), rtol=1e-3)
    assert ours["posterior_variance"][0] == 0.0 and len(ours["imgs"]) == 4
    np.testing.assert_allclose(ours["loss_weight"], np.minimum(acp / (1 - acp), 5) / (acp / (1 - acp)), rtol=1e-3)


# ----------------------------------------------------------------------------------------------
# diffusers' schedulers (DDPM, DDIM, Euler), its timestep embedding, training loop and EMAModel
# ----------------------------------------------------------------------------------------------


def diffusers_schedulers(m):
    torch = m.torch

    def betas_for_alpha_bar(num_diffusion_timesteps, max_beta=0.999):
        def alpha_bar_fn(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = []
        for i in range(num_diffusion_timesteps):
            t1 = i / num_diffusion_timesteps
            t2 = (i + 1) / num_diffusion_timesteps
            betas.append(min(1 - alpha_bar_fn(t2) / alpha_bar_fn(t1), max_beta))
        return torch.tensor(betas, dtype=torch.float32)

    def rescale_zero_terminal_snr(betas):
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_bar_sqrt = alphas_cumprod.sqrt()
        alphas_bar_sqrt_0 = alphas_bar_sqrt[0].clone()
        alphas_bar_sqrt_T = alphas_bar_sqrt[-1].clone()
        alphas_bar_sqrt -= alphas_bar_sqrt_T
        alphas_bar_sqrt *= alphas_bar_sqrt_0 / (alphas_bar_sqrt_0 - alphas_bar_sqrt_T)
        alphas_bar = alphas_bar_sqrt**2
        alphas = alphas_bar[1:] / alphas_bar[:-1]
        alphas = torch.cat([alphas_bar[0:1], alphas])
        betas = 1 - alphas
        return betas

    def randn_tensor(shape, generator=None, device=None, dtype=None):
        if isinstance(generator, list):
            shape = (1,) + shape[1:]
            latents = [torch.randn(shape, generator=generator[i], device=device, dtype=dtype)
                       for i in range(len(generator))]
            return torch.cat(latents, dim=0).to(device)
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    class SchedulerBase:
        def __init__(self, num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                     rescale_betas_zero_snr=False):
            self.num_train_timesteps = num_train_timesteps
            if beta_schedule == "linear":
                self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
            elif beta_schedule == "scaled_linear":
                self.betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps,
                                            dtype=torch.float32) ** 2
            elif beta_schedule == "squaredcos_cap_v2":
                self.betas = betas_for_alpha_bar(num_train_timesteps)
            elif beta_schedule == "sigmoid":
                betas = torch.linspace(-6, 6, num_train_timesteps)
                self.betas = torch.sigmoid(betas) * (beta_end - beta_start) + beta_start
            if rescale_betas_zero_snr:
                self.betas = rescale_zero_terminal_snr(self.betas)
            self.alphas = 1.0 - self.betas
            self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
            if rescale_betas_zero_snr:
                self.alphas_cumprod[-1] = 2**-24
            self.one = torch.tensor(1.0)
            self.init_noise_sigma = 1.0
            self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy())

        def add_noise(self, original_samples, noise, timesteps):
            alphas_cumprod = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
            timesteps = timesteps.to(original_samples.device)
            sqrt_alpha_prod = alphas_cumprod[timesteps] ** 0.5
            sqrt_alpha_prod = sqrt_alpha_prod.flatten()
            while len(sqrt_alpha_prod.shape) < len(original_samples.shape):
                sqrt_alpha_prod = sqrt_alpha_prod.unsqueeze(-1)
            sqrt_one_minus_alpha_prod = (1 - alphas_cumprod[timesteps]) ** 0.5
            sqrt_one_minus_alpha_prod = sqrt_one_minus_alpha_prod.flatten()
            while len(sqrt_one_minus_alpha_prod.shape) < len(original_samples.shape):
                sqrt_one_minus_alpha_prod = sqrt_one_minus_alpha_prod.unsqueeze(-1)
            return sqrt_alpha_prod * original_samples + sqrt_one_minus_alpha_prod * noise

        def get_velocity(self, sample, noise, timesteps):
            alphas_cumprod = self.alphas_cumprod.to(dtype=sample.dtype)
            sqrt_alpha_prod = (alphas_cumprod[timesteps] ** 0.5).flatten()
            while len(sqrt_alpha_prod.shape) < len(sample.shape):
                sqrt_alpha_prod = sqrt_alpha_prod.unsqueeze(-1)
            sqrt_one_minus_alpha_prod = ((1 - alphas_cumprod[timesteps]) ** 0.5).flatten()
            while len(sqrt_one_minus_alpha_prod.shape) < len(sample.shape):
                sqrt_one_minus_alpha_prod = sqrt_one_minus_alpha_prod.unsqueeze(-1)
            return sqrt_alpha_prod * noise - sqrt_one_minus_alpha_prod * sample

        def scale_model_input(self, sample, timestep=None):
            return sample

    class DDPMScheduler(SchedulerBase):
        def __init__(self, variance_type="fixed_small", clip_sample=True, prediction_type="epsilon",
                     thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0, **kwargs):
            super().__init__(**kwargs)
            self.variance_type = variance_type
            self.clip_sample = clip_sample
            self.prediction_type = prediction_type
            self.thresholding = thresholding
            self.dynamic_thresholding_ratio = dynamic_thresholding_ratio
            self.sample_max_value = sample_max_value

        def set_timesteps(self, num_inference_steps):
            self.num_inference_steps = num_inference_steps
            step_ratio = self.num_train_timesteps // self.num_inference_steps
            timesteps = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].copy().astype(np.int64)
            self.timesteps = torch.from_numpy(timesteps)

        def previous_timestep(self, timestep):
            return timestep - self.num_train_timesteps // self.num_inference_steps

        def _get_variance(self, t, predicted_variance=None):
            prev_t = self.previous_timestep(t)
            alpha_prod_t = self.alphas_cumprod[t]
            alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
            current_beta_t = 1 - alpha_prod_t / alpha_prod_t_prev
            variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t
            variance = torch.clamp(variance, min=1e-20)
            if self.variance_type == "fixed_small":
                variance = variance
            elif self.variance_type == "fixed_small_log":
                variance = torch.log(variance)
                variance = torch.exp(0.5 * variance)
            elif self.variance_type == "fixed_large":
                variance = current_beta_t
            elif self.variance_type == "learned_range":
                min_log = torch.log(variance)
                max_log = torch.log(current_beta_t)
                frac = (predicted_variance + 1) / 2
                variance = frac * max_log + (1 - frac) * min_log
            return variance

        def _threshold_sample(self, sample):
            dtype = sample.dtype
            batch_size, channels, *remaining_dims = sample.shape
            if dtype not in (torch.float32, torch.float64):
                sample = sample.float()
            sample = sample.reshape(batch_size, channels * np.prod(remaining_dims))
            abs_sample = sample.abs()
            s = torch.quantile(abs_sample, self.dynamic_thresholding_ratio, dim=1)
            s = torch.clamp(s, min=1, max=self.sample_max_value)
            s = s.unsqueeze(1)
            sample = torch.clamp(sample, -s, s) / s
            sample = sample.reshape(batch_size, channels, *remaining_dims)
            return sample.to(dtype)

        def step(self, model_output, timestep, sample, generator=None):
            t = timestep
            prev_t = self.previous_timestep(t)
            if model_output.shape[1] == sample.shape[1] * 2 and self.variance_type in ["learned", "learned_range"]:
                model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
            else:
                predicted_variance = None
            alpha_prod_t = self.alphas_cumprod[t]
            alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
            beta_prod_t = 1 - alpha_prod_t
            beta_prod_t_prev = 1 - alpha_prod_t_prev
            current_alpha_t = alpha_prod_t / alpha_prod_t_prev
            current_beta_t = 1 - current_alpha_t
            if self.prediction_type == "epsilon":
                pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
            elif self.prediction_type == "sample":
                pred_original_sample = model_output
            elif self.prediction_type == "v_prediction":
                pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
            if self.thresholding:
                pred_original_sample = self._threshold_sample(pred_original_sample)
            elif self.clip_sample:
                pred_original_sample = pred_original_sample.clamp(-1.0, 1.0)
            pred_original_sample_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
            current_sample_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
            pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * sample
            variance = 0
            if t > 0:
                variance_noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                              dtype=model_output.dtype)
                if self.variance_type == "fixed_small_log":
                    variance = self._get_variance(t, predicted_variance=predicted_variance) * variance_noise
                elif self.variance_type == "learned_range":
                    variance = self._get_variance(t, predicted_variance=predicted_variance)
                    variance = torch.exp(0.5 * variance) * variance_noise
                else:
                    variance = (self._get_variance(t, predicted_variance=predicted_variance) ** 0.5) * variance_noise
            pred_prev_sample = pred_prev_sample + variance
            return pred_prev_sample, pred_original_sample

    class DDIMScheduler(SchedulerBase):
        def __init__(self, clip_sample=True, set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon",
                     timestep_spacing="leading", **kwargs):
            super().__init__(**kwargs)
            self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
            self.clip_sample = clip_sample
            self.steps_offset = steps_offset
            self.prediction_type = prediction_type
            self.timestep_spacing = timestep_spacing

        def _get_variance(self, timestep, prev_timestep):
            alpha_prod_t = self.alphas_cumprod[timestep]
            alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
            beta_prod_t = 1 - alpha_prod_t
            beta_prod_t_prev = 1 - alpha_prod_t_prev
            return (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)

        def set_timesteps(self, num_inference_steps):
            self.num_inference_steps = num_inference_steps
            if self.timestep_spacing == "leading":
                step_ratio = self.num_train_timesteps // self.num_inference_steps
                timesteps = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].copy().astype(np.int64)
                timesteps += self.steps_offset
            elif self.timestep_spacing == "trailing":
                step_ratio = self.num_train_timesteps / self.num_inference_steps
                timesteps = np.round(np.arange(self.num_train_timesteps, 0, -step_ratio)).astype(np.int64)
                timesteps -= 1
            self.timesteps = torch.from_numpy(timesteps)

        def step(self, model_output, timestep, sample, eta=0.0, use_clipped_model_output=False, generator=None):
            prev_timestep = timestep - self.num_train_timesteps // self.num_inference_steps
            alpha_prod_t = self.alphas_cumprod[timestep]
            alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
            beta_prod_t = 1 - alpha_prod_t
            if self.prediction_type == "epsilon":
                pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
                pred_epsilon = model_output
            elif self.prediction_type == "v_prediction":
                pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
                pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
            if self.clip_sample:
                pred_original_sample = pred_original_sample.clamp(-1.0, 1.0)
            variance = self._get_variance(timestep, prev_timestep)
            std_dev_t = eta * variance ** (0.5)
            if use_clipped_model_output:
                pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
            pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
            prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
            if eta > 0:
                variance_noise = randn_tensor(model_output.shape, generator=generator, dtype=model_output.dtype)
                prev_sample = prev_sample + std_dev_t * variance_noise
            return prev_sample, pred_original_sample

    class EulerDiscreteScheduler(SchedulerBase):
        def __init__(self, use_karras_sigmas=False, **kwargs):
            super().__init__(**kwargs)
            self.use_karras_sigmas = use_karras_sigmas

        def _sigma_to_t(self, sigma, log_sigmas):
            log_sigma = np.log(np.maximum(sigma, 1e-10))
            dists = log_sigma - log_sigmas[:, np.newaxis]
            low_idx = np.cumsum((dists >= 0), axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
            high_idx = low_idx + 1
            low = log_sigmas[low_idx]
            high = log_sigmas[high_idx]
            w = (low - log_sigma) / (low - high)
            w = np.clip(w, 0, 1)
            t = (1 - w) * low_idx + w * high_idx
            return t.reshape(sigma.shape)

        def _convert_to_karras(self, in_sigmas, num_inference_steps):
            sigma_min = in_sigmas[-1].item()
            sigma_max = in_sigmas[0].item()
            rho = 7.0
            ramp = np.linspace(0, 1, num_inference_steps)
            min_inv_rho = sigma_min ** (1 / rho)
            max_inv_rho = sigma_max ** (1 / rho)
            return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho

        def set_timesteps(self, num_inference_steps):
            self.num_inference_steps = num_inference_steps
            timesteps = np.linspace(0, self.num_train_timesteps - 1, num_inference_steps, dtype=np.float32)[::-1].copy()
            sigmas = np.array(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5)
            log_sigmas = np.log(sigmas)
            sigmas = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)
            if self.use_karras_sigmas:
                sigmas = self._convert_to_karras(in_sigmas=sigmas, num_inference_steps=self.num_inference_steps)
                timesteps = np.array([self._sigma_to_t(sigma, log_sigmas) for sigma in sigmas])
            sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
            self.sigmas = torch.from_numpy(sigmas)
            self.timesteps = torch.from_numpy(timesteps.astype(np.float32))
            self.init_noise_sigma = (self.sigmas.max() ** 2 + 1) ** 0.5
            self._step_index = None

        def index_for_timestep(self, timestep):
            indices = (self.timesteps == timestep).nonzero()
            pos = 1 if len(indices) > 1 else 0
            return indices[pos].item()

        def scale_model_input(self, sample, timestep):
            if self._step_index is None:
                self._step_index = self.index_for_timestep(timestep)
            sigma = self.sigmas[self._step_index]
            return sample / ((sigma**2 + 1) ** 0.5)

        def step(self, model_output, timestep, sample, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"),
                 s_noise=1.0, generator=None):
            if self._step_index is None:
                self._step_index = self.index_for_timestep(timestep)
            sample = sample.to(torch.float32)
            sigma = self.sigmas[self._step_index]
            gamma = min(s_churn / (len(self.sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
            noise = randn_tensor(model_output.shape, dtype=model_output.dtype, generator=generator)
            eps = noise * s_noise
            sigma_hat = sigma * (gamma + 1)
            if gamma > 0:
                sample = sample + eps * (sigma_hat**2 - sigma**2) ** 0.5
            pred_original_sample = sample - sigma_hat * model_output
            derivative = (sample - pred_original_sample) / sigma_hat
            dt = self.sigmas[self._step_index + 1] - sigma_hat
            prev_sample = sample + derivative * dt
            prev_sample = prev_sample.to(model_output.dtype)
            self._step_index += 1
            return prev_sample, pred_original_sample

    return DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler


def get_timestep_embedding(m, timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1, scale=1,
                           max_period=10000):
    torch = m.torch
    assert len(timesteps.shape) == 1, "Timesteps should be a 1d-array"
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=torch.float32,
                                                    device=timesteps.device)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].float() * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = m.F.pad(emb, (0, 1, 0, 0))
    return emb


def make_cond_unet(m, channels=2, dim=8, num_classes=3):
    """A small conditional UNet in diffusers' manner: a timestep embedding, class embeddings with a null class,
    a strided-convolution downsample and a transposed-convolution upsample, skip concatenation."""
    torch, nn, F = m.torch, m.nn, m.F

    class TinyCondUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.time_embedding = nn.Sequential(nn.Linear(dim, dim * 2), nn.SiLU(), nn.Linear(dim * 2, dim * 2))
            self.class_embedding = nn.Embedding(num_classes + 1, dim * 2)
            self.conv_in = nn.Conv2d(channels, dim, 3, padding=1)
            self.norm1 = nn.GroupNorm(4, dim)
            self.down = nn.Conv2d(dim, dim * 2, 3, stride=2, padding=1)
            self.norm2 = nn.GroupNorm(4, dim * 2)
            self.mid = nn.Conv2d(dim * 2, dim * 2, 3, padding=1)
            self.up = nn.ConvTranspose2d(dim * 2, dim, 4, stride=2, padding=1)
            self.norm_out = nn.GroupNorm(4, dim * 2)
            self.conv_out = nn.Conv2d(dim * 2, channels, 3, padding=1)

        def forward(self, sample, timestep, class_labels):
            timesteps = timestep
            if not torch.is_tensor(timesteps):
                timesteps = torch.tensor([timesteps], dtype=torch.long, device=sample.device)
            elif len(timesteps.shape) == 0:
                timesteps = timesteps[None].to(sample.device)
            timesteps = timesteps.expand(sample.shape[0])
            t_emb = get_timestep_embedding(m, timesteps, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
            t_emb = t_emb.to(dtype=sample.dtype)
            emb = self.time_embedding(t_emb) + self.class_embedding(class_labels)
            h0 = F.silu(self.norm1(self.conv_in(sample)))
            h = self.down(h0)
            h = h + emb[:, :, None, None]
            h = F.silu(self.norm2(h))
            h = h + self.mid(h)
            h = self.up(h)
            h = torch.cat([h, h0], dim=1)
            return self.conv_out(F.silu(self.norm_out(h)))

    return TinyCondUNet()


def diffusers_train_and_sample(m, weights, steps=4):
    torch, F = m.torch, m.F
    DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler = diffusers_schedulers(m)
    model = load(m, make_cond_unet(m), weights)
    ema_model = copy.deepcopy(model)
    for p in ema_model.parameters():
        p.requires_grad_(False)

    class EMAModel:  # diffusers.training_utils.EMAModel's step
        def __init__(self, parameters, decay=0.9999, min_decay=0.0, update_after_step=0, inv_gamma=1.0, power=2 / 3):
            parameters = list(parameters)
            self.shadow_params = [p.clone().detach() for p in parameters]
            self.decay, self.min_decay, self.update_after_step = decay, min_decay, update_after_step
            self.inv_gamma, self.power = inv_gamma, power
            self.optimization_step = 0
            self.cur_decay_value = None

        def get_decay(self, optimization_step):
            step = max(0, optimization_step - self.update_after_step - 1)
            if step <= 0:
                return 0.0
            cur_decay_value = 1 - (1 + step / self.inv_gamma) ** -self.power
            cur_decay_value = min(cur_decay_value, self.decay)
            cur_decay_value = max(cur_decay_value, self.min_decay)
            return cur_decay_value

        @torch.no_grad()
        def step(self, parameters):
            parameters = list(parameters)
            self.optimization_step += 1
            decay = self.get_decay(self.optimization_step)
            self.cur_decay_value = decay
            one_minus_decay = 1 - decay
            for s_param, param in zip(self.shadow_params, parameters):
                if param.requires_grad:
                    s_param.sub_(one_minus_decay * (s_param - param))
                else:
                    s_param.copy_(param)

        def copy_to(self, parameters):
            for s_param, param in zip(self.shadow_params, parameters):
                param.data.copy_(s_param.to(param.device).data)

    ema = EMAModel(model.parameters(), decay=0.999, inv_gamma=1.0, power=0.75)
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                              prediction_type="v_prediction")
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-08)
    lr_scheduler = m.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 2) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    rng = np.random.default_rng(3)
    gen = torch.Generator().manual_seed(0)
    losses, lrs = [], []
    for step in range(steps):
        clean_images = torch.from_numpy(rng.uniform(-1, 1, (4, 2, 8, 8)).astype(np.float32))
        class_labels = torch.from_numpy(rng.integers(0, 3, 4))
        # conditioning dropout: a null class for about one label in five
        drop = torch.rand(class_labels.shape[0], generator=gen) < 0.2
        class_labels = class_labels.masked_fill(drop, 3)
        noise = torch.randn(clean_images.shape, dtype=clean_images.dtype, generator=gen)
        bsz = clean_images.shape[0]
        timesteps = torch.randint(0, scheduler.num_train_timesteps, (bsz,), generator=gen).long()
        noisy_images = scheduler.add_noise(clean_images, noise, timesteps)
        model_output = model(noisy_images, timesteps, class_labels)
        target = scheduler.get_velocity(clean_images, noise, timesteps)
        alpha_t = scheduler.alphas_cumprod[timesteps][:, None, None, None]
        snr_weights = alpha_t / (1 - alpha_t)
        loss = snr_weights * F.mse_loss(model_output.float(), target.float(), reduction="none")
        loss = loss.mean()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(model.parameters())
        losses.append(loss.item())
        lrs.append(lr_scheduler.get_last_lr()[0])
    ema.copy_to(ema_model.parameters())
    ema_model.eval()

    out = {"losses": losses, "lrs": lrs, "decay": ema.cur_decay_value, "ema": dict(ema_model.named_parameters()),
           "params": dict(model.named_parameters())}

    # DDPM with v-prediction and dynamic thresholding, classifier-free guidance by batch doubling
    def guided(scheduler, latents, t, labels, guidance_scale=2.5, guidance_rescale=0.7):
        latent_model_input = torch.cat([latents] * 2)
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        cond_in = torch.cat([torch.full_like(labels, 3), labels])
        noise_pred = ema_model(latent_model_input, t, cond_in)
        noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
        noise_cfg = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        std_text = noise_pred_text.std(dim=list(range(1, noise_pred_text.ndim)), keepdim=True)
        std_cfg = noise_cfg.std(dim=list(range(1, noise_cfg.ndim)), keepdim=True)
        noise_pred_rescaled = noise_cfg * (std_text / std_cfg)
        return guidance_rescale * noise_pred_rescaled + (1 - guidance_rescale) * noise_cfg

    labels = torch.tensor([0, 2])
    with torch.no_grad():
        ddpm = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                             prediction_type="v_prediction", thresholding=True, sample_max_value=1.5)
        ddpm.set_timesteps(10)
        generator = torch.Generator().manual_seed(7)
        image = torch.randn((2, 2, 8, 8), generator=generator)
        for t in ddpm.timesteps:
            model_output = guided(ddpm, image, t, labels)
            image, x0 = ddpm.step(model_output, t, image, generator=generator)
        out["ddpm"] = image
        out["ddpm_timesteps"] = ddpm.timesteps

        # DDPM, learned-range variance (the model's second half of channels), per-sample generators
        ddpm = DDPMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                             beta_end=0.012, variance_type="learned_range")
        ddpm.set_timesteps(5)
        generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
        image = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
        for t in ddpm.timesteps:
            model_output = ema_model(image.repeat(1, 2, 1, 1), t, labels)
            model_output = torch.cat([model_output[:, :1], torch.tanh(model_output[:, 1:])], dim=1)
            image, x0 = ddpm.step(model_output, t, image, generator=generators)
        out["learned_range"] = image

        # DDIM with eta > 0, trailing spacing, zero terminal SNR, clipped model output
        ddim = DDIMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                             beta_end=0.012, rescale_betas_zero_snr=True, timestep_spacing="trailing",
                             prediction_type="v_prediction", set_alpha_to_one=False)
        ddim.set_timesteps(8)
        generator = torch.Generator().manual_seed(11)
        latents = torch.randn((2, 2, 8, 8), generator=generator) * ddim.init_noise_sigma
        for i, t in enumerate(ddim.timesteps):
            noise_pred = guided(ddim, latents, t, labels)
            latents, x0 = ddim.step(noise_pred, t, latents, eta=0.5, use_clipped_model_output=True,
                                    generator=generator)
        out["ddim"] = latents
        out["ddim_timesteps"] = ddim.timesteps
        out["zero_snr_betas"] = ddim.betas

        # Euler with Karras sigmas and churn
        euler = EulerDiscreteScheduler(num_train_timesteps=100, beta_schedule="sigmoid", use_karras_sigmas=True)
        euler.set_timesteps(6)
        generator = torch.Generator().manual_seed(5)
        latents = torch.randn((2, 2, 8, 8), generator=generator) * euler.init_noise_sigma
        for t in euler.timesteps:
            latent_model_input = euler.scale_model_input(latents, t)
            noise_pred = ema_model(latent_model_input, t.round().long(), labels)
            latents, x0 = euler.step(noise_pred, t, latents, s_churn=1.0, generator=generator)
        out["euler"] = latents
        out["euler_sigmas"] = euler.sigmas
        out["euler_timesteps"] = euler.timesteps
    return out


def test_diffusers_schedulers_training_ema_and_guided_sampling():
    weights = weights_of(make_cond_unet)
    ours, _ = run_both(diffusers_train_and_sample, weights, rtol=2e-4, atol=2e-5)
    assert ours["ddpm_timesteps"].tolist() == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    assert ours["ddim_timesteps"].tolist() == [99, 87, 74, 61, 49, 37, 24, 11]
    assert ours["decay"] == pytest.approx(1 - 4 ** -0.75, rel=1e-12)
    betas = ours["zero_snr_betas"]
    assert betas[-1] == pytest.approx(1.0, abs=1e-6) and betas.dtype == np.float32
    assert np.all(np.isfinite(ours["ddim"])) and np.all(np.isfinite(ours["euler"]))
    assert np.abs(ours["ddpm"]).max() < 10


# ----------------------------------------------------------------------------------------------
# EMA of weights: ema-pytorch's foreach updates, Karras' power-function EMA, and swa_utils.AveragedModel
# ----------------------------------------------------------------------------------------------


def make_bn_net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def ema_program(m, weights, steps=6):
    torch, nn, F = m.torch, m.nn, m.F
    AveragedModel, get_ema_multi_avg_fn = m.optim.swa_utils.AveragedModel, m.optim.swa_utils.get_ema_multi_avg_fn
    model = load(m, make_bn_net(m), weights)

    class EMA(nn.Module):  # lucidrains' ema-pytorch, its update path
        def __init__(self, model, beta=0.99, update_after_step=1, update_every=1, inv_gamma=1.0, power=2 / 3,
                     min_value=0.0, use_foreach=True, param_or_buffer_names_no_ema=()):
            super().__init__()
            self.beta = beta
            self.online_model = [model]
            self.ema_model = copy.deepcopy(model)
            self.ema_model.requires_grad_(False)
            self.parameter_names = {name for name, param in self.ema_model.named_parameters()
                                    if torch.is_floating_point(param) or torch.is_complex(param)}
            self.buffer_names = {name for name, buffer in self.ema_model.named_buffers()
                                 if torch.is_floating_point(buffer) or torch.is_complex(buffer)}
            self.update_every = update_every
            self.update_after_step = update_after_step
            self.inv_gamma, self.power, self.min_value = inv_gamma, power, min_value
            self.param_or_buffer_names_no_ema = param_or_buffer_names_no_ema
            self.use_foreach = use_foreach
            self.register_buffer("initted", torch.tensor(False))
            self.register_buffer("step", torch.tensor(0))

        @property
        def model(self):
            return self.online_model[0]

        def get_params_iter(self, model):
            for name, param in model.named_parameters():
                if name not in self.parameter_names:
                    continue
                yield name, param

        def get_buffers_iter(self, model):
            for name, buffer in model.named_buffers():
                if name not in self.buffer_names:
                    continue
                yield name, buffer

        def copy_params_from_model_to_ema(self):
            copy_ = lambda tgt, src: tgt.copy_(src)
            for (_, ma_params), (_, current_params) in zip(self.get_params_iter(self.ema_model),
                                                           self.get_params_iter(self.model)):
                copy_(ma_params.data, current_params.data)
            for (_, ma_buffers), (_, current_buffers) in zip(self.get_buffers_iter(self.ema_model),
                                                             self.get_buffers_iter(self.model)):
                copy_(ma_buffers.data, current_buffers.data)

        def get_current_decay(self):
            epoch = (self.step - self.update_after_step - 1).clamp(min=0.)
            value = 1 - (1 + epoch / self.inv_gamma) ** - self.power
            if epoch.item() <= 0:
                return 0.
            return value.clamp(min=self.min_value, max=self.beta).item()

        def update(self):
            step = self.step.item()
            self.step += 1
            if (step % self.update_every) != 0:
                return
            if step <= self.update_after_step:
                self.copy_params_from_model_to_ema()
                return
            if not self.initted.item():
                self.copy_params_from_model_to_ema()
                self.initted.data.copy_(torch.tensor(True))
            self.update_moving_average(self.ema_model, self.model)

        @torch.no_grad()
        def update_moving_average(self, ma_model, current_model):
            current_decay = self.get_current_decay()
            tensors_to_copy = []
            tensors_to_lerp = []
            for (name, current_params), (_, ma_params) in zip(self.get_params_iter(current_model),
                                                              self.get_params_iter(ma_model)):
                if name in self.param_or_buffer_names_no_ema:
                    tensors_to_copy.append((ma_params.data, current_params.data))
                    continue
                tensors_to_lerp.append((ma_params.data, current_params.data))
            for (name, current_buffer), (_, ma_buffer) in zip(self.get_buffers_iter(current_model),
                                                              self.get_buffers_iter(ma_model)):
                tensors_to_lerp.append((ma_buffer.data, current_buffer.data))
            if len(tensors_to_copy) > 0:
                tgt_copy, src_copy = zip(*tensors_to_copy)
                torch._foreach_copy_(tgt_copy, src_copy)
            if len(tensors_to_lerp) > 0:
                tgt_lerp, src_lerp = zip(*tensors_to_lerp)
                if self.use_foreach:
                    torch._foreach_lerp_(tgt_lerp, src_lerp, 1. - current_decay)
                else:
                    for tgt, src in zip(tgt_lerp, src_lerp):
                        tgt.lerp_(src, 1. - current_decay)

        def __call__(self, *args, **kwargs):
            return self.ema_model(*args, **kwargs)

    ema = EMA(model, beta=0.9, update_after_step=1, param_or_buffer_names_no_ema=("4.bias",))
    ema_loop = EMA(model, beta=0.9, update_after_step=1, use_foreach=False, param_or_buffer_names_no_ema=("4.bias",))

    # Karras et al.'s power-function EMA (post-hoc EMA): beta = (1 - 1/t) ** (gamma + 1), by _foreach_mul_/_add_
    karras_model = copy.deepcopy(model).requires_grad_(False)
    gamma = 6.94

    @torch.no_grad()
    def karras_update(step):
        beta = (1. - 1. / step) ** (gamma + 1.)
        ema_params = list(karras_model.parameters())
        online = [p.detach() for p in model.parameters()]
        torch._foreach_mul_(ema_params, beta)
        torch._foreach_add_(ema_params, online, alpha=1. - beta)
        for ema_b, b in zip(karras_model.buffers(), model.buffers()):
            ema_b.copy_(b)

    swa_ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.95), use_buffers=True)

    def avg_fn(averaged_param, model_param, num_averaged):
        return 0.8 * averaged_param + 0.2 * model_param

    swa_custom = AveragedModel(model, avg_fn=avg_fn)
    swa_mean = AveragedModel(model)

    rng = np.random.default_rng(5)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    losses = []
    for step in range(1, steps + 1):
        x = torch.from_numpy(rng.standard_normal((8, 1, 4, 4)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 3, 8))
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        ema.update()
        ema_loop.update()
        karras_update(step)
        swa_ema.update_parameters(model)
        swa_custom.update_parameters(model)
        swa_mean.update_parameters(model)

    probe = torch.from_numpy(rng.standard_normal((4, 1, 4, 4)).astype(np.float32))
    ema.ema_model.eval()
    swa_ema.eval()
    with torch.no_grad():
        outputs = {"ema": ema(probe), "swa_ema": swa_ema(probe), "karras": karras_model.eval()(probe)}
    # update_bn recomputes the BatchNorm statistics of the plain average from data
    loader = [torch.from_numpy(rng.standard_normal((8, 1, 4, 4)).astype(np.float32)) for _ in range(3)]
    m.optim.swa_utils.update_bn(loader, swa_mean)
    return {"losses": losses, "decay": ema.get_current_decay(), "step": ema.step,
            "ema": ema.ema_model.state_dict(), "ema_loop": ema_loop.ema_model.state_dict(),
            "karras": karras_model.state_dict(), "swa_ema": swa_ema.state_dict(),
            "swa_custom": swa_custom.state_dict(), "swa_mean": swa_mean.state_dict(), "outputs": outputs,
            "model": model.state_dict()}


def test_ema_foreach_lerp_power_ema_and_averaged_models():
    weights = weights_of(make_bn_net)
    ours, _ = run_both(ema_program, weights, rtol=1e-5, atol=1e-6)
    for name in ours["ema"]:
        np.testing.assert_allclose(ours["ema"][name], ours["ema_loop"][name], rtol=1e-6, atol=1e-7, err_msg=name)
    # names the EMA keeps out follow the online model exactly, as do integer buffers
    np.testing.assert_array_equal(ours["ema"]["4.bias"], ours["model"]["4.bias"])
    assert ours["step"] == 6 and ours["decay"] == pytest.approx(1 - (1 + 4) ** (-2 / 3), rel=1e-6)
    assert ours["swa_ema"]["n_averaged"] == 6 and ours["swa_mean"]["n_averaged"] == 6
    # buffers averaged too (use_buffers=True), an integer one by copy_ of its blend: int(1 * 0.95 + k * 0.05) stays 1
    assert ours["swa_ema"]["module.1.num_batches_tracked"] == 1
    assert ours["swa_mean"]["module.1.num_batches_tracked"] == 3  # update_bn's three batches


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


# ----------------------------------------------------------------------------------------------
# Score matching: NCSN's annealed denoising score matching and Langevin dynamics, sliced score matching
# (Song et al.'s variance-reduced estimator), exact score matching by the Jacobian's trace, and an energy
# model whose score is minus the gradient of its energy (double backward)
# ----------------------------------------------------------------------------------------------


def make_score_nets(m, num_classes=6):
    torch, nn, F = m.torch, m.nn, m.F

    class ConditionalLinear(nn.Module):
        def __init__(self, num_in, num_out, num_classes):
            super().__init__()
            self.num_out = num_out
            self.lin = nn.Linear(num_in, num_out)
            self.embed = nn.Embedding(num_classes, num_out)
            self.embed.weight.data.uniform_()

        def forward(self, x, y):
            out = self.lin(x)
            gamma = self.embed(y)
            out = gamma.view(-1, self.num_out) * out
            return out

    class ConditionalModel(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.lin1 = ConditionalLinear(2, 32, num_classes)
            self.lin2 = ConditionalLinear(32, 32, num_classes)
            self.lin3 = nn.Linear(32, 2)

        def forward(self, x, y):
            x = F.softplus(self.lin1(x, y))
            x = F.softplus(self.lin2(x, y))
            return self.lin3(x)

    class Energy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 32), nn.SiLU(), nn.Linear(32, 32), nn.ELU(), nn.Linear(32, 1))

        def forward(self, x):
            return self.net(x).squeeze(-1)

    return nn.ModuleDict({"ncsn": ConditionalModel(num_classes),
                          "ssm": nn.Sequential(nn.Linear(2, 32), nn.Softplus(), nn.Linear(32, 32), nn.Tanh(),
                                               nn.Linear(32, 2)),
                          "energy": Energy()})


def swiss_roll(n, seed):
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5
    return (x + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)


def score_matching(m, weights, steps=4):
    torch, autograd = m.torch, m.torch.autograd
    nets = load(m, make_score_nets(m), weights)
    ncsn, ssm, energy = nets["ncsn"], nets["ssm"], nets["energy"]
    sigmas = torch.tensor(np.exp(np.linspace(np.log(1.0), np.log(0.01), 6))).float()
    g = torch.Generator().manual_seed(0)

    def anneal_dsm_score_estimation(scorenet, samples, labels, sigmas, anneal_power=2.):
        used_sigmas = sigmas[labels].view(samples.shape[0], *([1] * len(samples.shape[1:])))
        perturbed_samples = samples + torch.randn_like(samples, generator=g) * used_sigmas
        target = - 1 / (used_sigmas ** 2) * (perturbed_samples - samples)
        scores = scorenet(perturbed_samples, labels)
        target = target.view(target.shape[0], -1)
        scores = scores.view(scores.shape[0], -1)
        loss = 1 / 2. * ((scores - target) ** 2).sum(dim=-1) * used_sigmas.squeeze() ** anneal_power
        return loss.mean(dim=0)

    def sliced_score_estimation_vr(score_net, samples, n_particles=1):
        dup_samples = samples.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
        dup_samples.requires_grad_(True)
        vectors = torch.randn_like(dup_samples, generator=g)
        grad1 = score_net(dup_samples)
        gradv = torch.sum(grad1 * vectors)
        grad2 = autograd.grad(gradv, dup_samples, create_graph=True)[0]
        grad1 = grad1.view(dup_samples.shape[0], -1)
        loss1 = torch.sum(grad1 * grad1, dim=-1) / 2.
        loss2 = torch.sum((vectors * grad2).view(dup_samples.shape[0], -1), dim=-1)
        loss1 = loss1.view(n_particles, -1).mean(dim=0)
        loss2 = loss2.view(n_particles, -1).mean(dim=0)
        loss = loss1 + loss2
        return loss.mean(), loss1.mean(), loss2.mean()

    def sliced_score_estimation(score_net, samples, n_particles=1):
        dup_samples = samples.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
        dup_samples.requires_grad_(True)
        vectors = torch.randn_like(dup_samples, generator=g)
        vectors = vectors / torch.norm(vectors, dim=-1, keepdim=True)
        grad1 = score_net(dup_samples)
        gradv = torch.sum(grad1 * vectors)
        loss1 = torch.sum(grad1 * vectors, dim=-1) ** 2 * 0.5
        grad2 = autograd.grad(gradv, dup_samples, create_graph=True)[0]
        loss2 = torch.sum(vectors * grad2, dim=-1)
        loss1 = loss1.view(n_particles, -1).mean(dim=0)
        loss2 = loss2.view(n_particles, -1).mean(dim=0)
        loss = loss1 + loss2
        return loss.mean(), loss1.mean(), loss2.mean()

    def exact_score_matching(energy_net, samples):
        samples.requires_grad_(True)
        logp = -energy_net(samples).sum()
        grad1 = autograd.grad(logp, samples, create_graph=True)[0]
        loss1 = (torch.norm(grad1, dim=-1) ** 2 / 2.).detach()
        loss2 = torch.zeros(samples.shape[0])
        for i in range(samples.shape[1]):
            grad = autograd.grad(grad1[:, i].sum(), samples, create_graph=True)[0][:, i]
            loss2 += grad
        loss = loss1 + loss2
        return loss.mean()

    def hutchinson_trace(score_net, samples, n_probes=3):
        # tr(d score / dx) by E[v^T J v] with Rademacher probes
        samples = samples.detach().requires_grad_(True)
        s = score_net(samples)
        total = torch.zeros(samples.shape[0])
        for _ in range(n_probes):
            v = torch.randint(0, 2, samples.shape, generator=g).to(samples.dtype) * 2 - 1
            vjp = autograd.grad(s, samples, grad_outputs=v, create_graph=True, retain_graph=True)[0]
            total = total + (vjp * v).sum(-1)
        return total / n_probes, s

    data = swiss_roll(64, seed=1)
    opt = m.optim.Adam(nets.parameters(), lr=1e-3)
    hist = []
    for step in range(steps):
        x = torch.from_numpy(data[16 * step:16 * step + 16])
        labels = torch.randint(0, len(sigmas), (x.shape[0],), generator=g)
        dsm = anneal_dsm_score_estimation(ncsn, x, labels, sigmas)
        ssm_vr, l1, l2 = sliced_score_estimation_vr(ssm, x, n_particles=2)
        ssm_plain, _, _ = sliced_score_estimation(ssm, x)
        esm = exact_score_matching(energy, x.clone())
        loss = dsm + ssm_vr + 0.5 * ssm_plain + esm
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append([dsm.item(), ssm_vr.item(), l1.item(), l2.item(), ssm_plain.item(), esm.item()])
    grads = {n: p.grad for n, p in nets.named_parameters()}

    # Hutchinson's estimate against the exact trace, by torch.autograd.functional.jacobian
    x = torch.from_numpy(data[:5])
    estimate, _ = hutchinson_trace(ssm, x, n_probes=200)
    jac = autograd.functional.jacobian(lambda z: ssm(z).sum(0), x)  # (2, 5, 2)
    exact = torch.einsum("ibi->b", jac)

    # annealed Langevin dynamics (NCSN's sampler)
    @torch.no_grad()
    def anneal_Langevin_dynamics(x_mod, scorenet, sigmas, n_steps_each=3, step_lr=0.00002):
        images = []
        for c, sigma in enumerate(sigmas):
            labels = torch.ones(x_mod.shape[0], dtype=torch.long) * c
            step_size = step_lr * (sigma / sigmas[-1]) ** 2
            for s in range(n_steps_each):
                images.append(torch.clamp(x_mod, -5.0, 5.0).to('cpu'))
                noise = torch.randn_like(x_mod, generator=g) * torch.sqrt(step_size * 2)
                grad = scorenet(x_mod, labels)
                x_mod = x_mod + step_size * grad + noise
        return images

    x_init = torch.rand(8, 2, generator=g) * 4 - 2
    chain = anneal_Langevin_dynamics(x_init, ncsn, sigmas)
    return {"hist": hist, "grads": grads, "estimate": estimate, "exact": exact, "jac": jac,
            "chain": torch.stack(chain), "params": nets.state_dict()}


def test_score_matching_dsm_sliced_exact_and_langevin():
    weights = weights_of(make_score_nets)
    ours, _ = run_both(score_matching, weights, rtol=2e-4, atol=2e-5)
    # the exact trace from the Jacobian, and Hutchinson's estimate close to it with 200 probes
    np.testing.assert_allclose(ours["exact"], np.einsum("ibi->b", ours["jac"]), rtol=1e-6)
    assert np.all(np.abs(ours["estimate"] - ours["exact"]) < 0.25 * np.abs(ours["exact"]).max() + 0.05)
    hist = np.array(ours["hist"])
    np.testing.assert_allclose(hist[:, 1], hist[:, 2] + hist[:, 3], rtol=1e-5, atol=1e-6)
    assert ours["chain"].shape == (18, 8, 2)


# ----------------------------------------------------------------------------------------------
# Flow matching (torchcfm's conditional flow matcher), Euler / Heun / midpoint ODE sampling, the
# likelihood by the instantaneous change of variables (exact divergence by torch.func.vmap(jacrev)),
# and a reflow step (rectified flow) on the model's own couplings
# ----------------------------------------------------------------------------------------------


def make_velocity_net(m, dim=2, w=32):
    nn = m.nn

    class MLP(nn.Module):
        def __init__(self, dim, out_dim=None, w=64, time_varying=False):
            super().__init__()
            self.time_varying = time_varying
            if out_dim is None:
                out_dim = dim
            self.net = nn.Sequential(
                nn.Linear(dim + (1 if time_varying else 0), w), nn.SELU(),
                nn.Linear(w, w), nn.SELU(),
                nn.Linear(w, w), nn.SELU(),
                nn.Linear(w, out_dim))

        def forward(self, x):
            return self.net(x)

    return MLP(dim=dim, w=w, time_varying=True)


def flow_matching(m, weights, steps=5):
    torch, F = m.torch, m.F
    model = load(m, make_velocity_net(m), weights)

    def pad_t_like_x(t, x):
        if isinstance(t, (float, int)):
            return t
        return t.reshape(-1, *([1] * (x.dim() - 1)))

    class ConditionalFlowMatcher:
        def __init__(self, sigma=0.0):
            self.sigma = sigma

        def compute_mu_t(self, x0, x1, t):
            t = pad_t_like_x(t, x0)
            return t * x1 + (1 - t) * x0

        def compute_sigma_t(self, t):
            del t
            return self.sigma

        def sample_xt(self, x0, x1, t, epsilon):
            mu_t = self.compute_mu_t(x0, x1, t)
            sigma_t = self.compute_sigma_t(t)
            sigma_t = pad_t_like_x(sigma_t, x0)
            return mu_t + sigma_t * epsilon

        def compute_conditional_flow(self, x0, x1, t, xt):
            del t, xt
            return x1 - x0

        def sample_noise_like(self, x):
            return torch.randn_like(x, generator=gen)

        def sample_location_and_conditional_flow(self, x0, x1, t=None, return_noise=False):
            if t is None:
                t = torch.rand(x0.shape[0], generator=gen).type_as(x0)
            assert len(t) == x0.shape[0], "t has to have batch size dimension"
            eps = self.sample_noise_like(x0)
            xt = self.sample_xt(x0, x1, t, eps)
            ut = self.compute_conditional_flow(x0, x1, t, xt)
            if return_noise:
                return t, xt, ut, eps
            return t, xt, ut

    class VariancePreservingConditionalFlowMatcher(ConditionalFlowMatcher):
        def compute_mu_t(self, x0, x1, t):
            t = pad_t_like_x(t, x0)
            return torch.cos(math.pi / 2 * t) * x0 + torch.sin(math.pi / 2 * t) * x1

        def compute_conditional_flow(self, x0, x1, t, xt):
            del xt
            t = pad_t_like_x(t, x0)
            return math.pi / 2 * (torch.cos(math.pi / 2 * t) * x1 - torch.sin(math.pi / 2 * t) * x0)

    gen = torch.Generator().manual_seed(42)
    data = swiss_roll(64, seed=4)
    optimizer = m.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    matchers = [ConditionalFlowMatcher(sigma=0.05), VariancePreservingConditionalFlowMatcher(sigma=0.0)]
    for k in range(steps):
        optimizer.zero_grad()
        x1 = torch.from_numpy(data[(16 * k) % 64:(16 * k) % 64 + 16])
        x0 = torch.randn(x1.shape, generator=gen)
        FM = matchers[k % 2]
        t, xt, ut = FM.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1))
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = {n: p.grad for n, p in model.named_parameters()}

    def velocity(t, x):
        return model(torch.cat([x, t.expand(x.shape[0], 1)], dim=-1))

    @torch.no_grad()
    def euler(x, n):
        ts = torch.linspace(0, 1, n + 1)
        for t0, t1 in zip(ts[:-1], ts[1:]):
            x = x + (t1 - t0) * velocity(t0, x)
        return x

    @torch.no_grad()
    def heun(x, n):
        ts = torch.linspace(0, 1, n + 1)
        for t0, t1 in zip(ts[:-1], ts[1:]):
            dt = t1 - t0
            d0 = velocity(t0, x)
            x_pred = x + dt * d0
            x = x + dt * 0.5 * (d0 + velocity(t1, x_pred))
        return x

    @torch.inference_mode()
    def midpoint(x, n):
        dt = 1.0 / n
        for i in range(n):
            t = torch.tensor(i * dt)
            x_mid = x + 0.5 * dt * velocity(t, x)
            x = x + dt * velocity(t + 0.5 * dt, x_mid)
        return x

    x0 = torch.randn(6, 2, generator=gen)
    samples = {"euler": euler(x0, 8), "heun": heun(x0, 4), "midpoint": midpoint(x0, 4)}

    # log-likelihood of data under the CNF: integrate backwards with the divergence of the velocity field
    from_func = m.torch.func

    def v_single(x, t):
        return model(torch.cat([x, t.reshape(1)]))

    def divergence(x, t):
        jac = from_func.vmap(from_func.jacrev(v_single), in_dims=(0, None))(x, t)
        return torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1)

    def log_likelihood(x1, n=8):
        x = x1
        delta_logp = torch.zeros(x.shape[0])
        ts = torch.linspace(1, 0, n + 1)
        for t0, t1 in zip(ts[:-1], ts[1:]):
            dt = t1 - t0
            delta_logp = delta_logp - dt * divergence(x, t0)
            x = x + dt * velocity(t0, x)
        prior = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
        return prior.log_prob(x) - delta_logp

    with torch.no_grad():
        ll = log_likelihood(torch.from_numpy(data[:6]))

    # divergence also by torch.autograd.grad, one coordinate at a time, for the check below
    x = torch.from_numpy(data[:6]).requires_grad_(True)
    v = velocity(torch.tensor(0.3), x)
    div_autograd = sum(torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
    div_func = divergence(x.detach(), torch.tensor(0.3))

    # a reflow step: train on (noise, the flow's own sample) couplings, which are straighter
    z0 = torch.randn(16, 2, generator=gen)
    with torch.no_grad():
        z1 = heun(z0, 4)
    reflow_model = copy.deepcopy(model)
    opt2 = m.optim.SGD(reflow_model.parameters(), lr=0.05)
    reflow = []
    for _ in range(3):
        t = torch.rand(16, 1, generator=gen)
        zt = t * z1 + (1. - t) * z0
        target = z1 - z0
        pred = reflow_model(torch.cat([zt, t], dim=1))
        loss = F.mse_loss(pred, target, reduction="none").view(16, -1).mean(1).mean()
        opt2.zero_grad()
        loss.backward()
        opt2.step()
        reflow.append(loss.item())
    return {"losses": losses, "grads": grads, "samples": samples, "ll": ll, "div_autograd": div_autograd,
            "div_func": div_func, "reflow": reflow, "params": reflow_model.state_dict()}


def test_flow_matching_training_ode_samplers_and_likelihood():
    weights = weights_of(make_velocity_net)
    ours, _ = run_both(flow_matching, weights, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(ours["div_func"], ours["div_autograd"], rtol=1e-5, atol=1e-6)
    s = ours["samples"]
    assert np.abs(s["heun"] - s["midpoint"]).max() < 0.1  # two second-order integrators agree closely
    assert np.all(np.isfinite(ours["ll"]))


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


# ----------------------------------------------------------------------------------------------
# DiT (Peebles & Xie) with adaLN-Zero, its label dropout and 2-D sin-cos position embedding from NumPy,
# trained by guided-diffusion's GaussianDiffusion with learned variances (the hybrid loss: MSE plus the
# variational bound through discretized_gaussian_log_likelihood), respaced for sampling
# ----------------------------------------------------------------------------------------------


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
        assert embed_dim % 2 == 0
        omega = np.arange(embed_dim // 2, dtype=np.float64)
        omega /= embed_dim / 2.
        omega = 1. / 10000**omega
        pos = pos.reshape(-1)
        out = np.einsum('m,d->md', pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)
    grid = np.stack(grid, axis=0)
    grid = grid.reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def make_dit(m, input_size=8, patch_size=2, in_channels=2, hidden_size=16, depth=2, num_heads=2, num_classes=3,
             class_dropout_prob=0.1, learn_sigma=True):
    torch, nn, F = m.torch, m.nn, m.F

    def modulate(x, shift, scale):
        return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

    class PatchEmbed(nn.Module):  # timm's PatchEmbed
        def __init__(self, img_size, patch_size, in_chans, embed_dim, bias=True):
            super().__init__()
            self.patch_size = (patch_size, patch_size)
            self.grid_size = (img_size // patch_size, img_size // patch_size)
            self.num_patches = self.grid_size[0] * self.grid_size[1]
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

        def forward(self, x):
            x = self.proj(x)
            return x.flatten(2).transpose(1, 2)  # NCHW -> NLC

    class Attention(nn.Module):  # timm's Attention (fused)
        def __init__(self, dim, num_heads=8, qkv_bias=False):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = dim // num_heads
            self.scale = self.head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            x = F.scaled_dot_product_attention(q, k, v)
            x = x.transpose(1, 2).reshape(B, N, C)
            return self.proj(x)

    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features, act_layer):
            super().__init__()
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.fc2 = nn.Linear(hidden_features, in_features)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class TimestepEmbedder(nn.Module):
        def __init__(self, hidden_size, frequency_embedding_size=32):
            super().__init__()
            self.mlp = nn.Sequential(
                nn.Linear(frequency_embedding_size, hidden_size, bias=True), nn.SiLU(),
                nn.Linear(hidden_size, hidden_size, bias=True))
            self.frequency_embedding_size = frequency_embedding_size

        @staticmethod
        def timestep_embedding(t, dim, max_period=10000):
            half = dim // 2
            freqs = torch.exp(
                -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
            ).to(device=t.device)
            args = t[:, None].float() * freqs[None]
            embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
            if dim % 2:
                embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
            return embedding

        def forward(self, t):
            t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
            return self.mlp(t_freq)

    class LabelEmbedder(nn.Module):
        def __init__(self, num_classes, hidden_size, dropout_prob):
            super().__init__()
            use_cfg_embedding = dropout_prob > 0
            self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
            self.num_classes = num_classes
            self.dropout_prob = dropout_prob

        def token_drop(self, labels, force_drop_ids=None):
            if force_drop_ids is None:
                drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            else:
                drop_ids = force_drop_ids == 1
            labels = torch.where(drop_ids, self.num_classes, labels)
            return labels

        def forward(self, labels, train, force_drop_ids=None):
            use_dropout = self.dropout_prob > 0
            if (train and use_dropout) or (force_drop_ids is not None):
                labels = self.token_drop(labels, force_drop_ids)
            return self.embedding_table(labels)

    class DiTBlock(nn.Module):
        def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
            super().__init__()
            self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
            self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            mlp_hidden_dim = int(hidden_size * mlp_ratio)
            approx_gelu = lambda: nn.GELU(approximate="tanh")
            self.mlp = Mlp(in_features=hidden_size, hidden_features=mlp_hidden_dim, act_layer=approx_gelu)
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

        def forward(self, x, c):
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
            x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
            x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
            return x

    class FinalLayer(nn.Module):
        def __init__(self, hidden_size, patch_size, out_channels):
            super().__init__()
            self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

        def forward(self, x, c):
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
            x = modulate(self.norm_final(x), shift, scale)
            return self.linear(x)

    class DiT(nn.Module):
        def __init__(self):
            super().__init__()
            self.learn_sigma = learn_sigma
            self.in_channels = in_channels
            self.out_channels = in_channels * 2 if learn_sigma else in_channels
            self.patch_size = patch_size
            self.num_heads = num_heads
            self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
            self.t_embedder = TimestepEmbedder(hidden_size)
            self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
            num_patches = self.x_embedder.num_patches
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
            self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads) for _ in range(depth)])
            self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
            self.initialize_weights()

        def initialize_weights(self):
            def _basic_init(module):
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.constant_(module.bias, 0)
            self.apply(_basic_init)
            pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], int(self.x_embedder.num_patches ** 0.5))
            self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))
            w = self.x_embedder.proj.weight.data
            nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
            nn.init.constant_(self.x_embedder.proj.bias, 0)
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
            nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
            # adaLN-Zero: the modulations start at zero (the test loads small random ones instead, so that
            # every block contributes)
            for block in self.blocks:
                nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
                nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
            nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
            nn.init.constant_(self.final_layer.linear.weight, 0)
            nn.init.constant_(self.final_layer.linear.bias, 0)

        def unpatchify(self, x):
            c = self.out_channels
            p = self.x_embedder.patch_size[0]
            h = w = int(x.shape[1] ** 0.5)
            assert h * w == x.shape[1]
            x = x.reshape(shape=(x.shape[0], h, w, p, p, c))
            x = torch.einsum('nhwpqc->nchpwq', x)
            imgs = x.reshape(shape=(x.shape[0], c, h * p, h * p))
            return imgs

        def forward(self, x, t, y):
            x = self.x_embedder(x) + self.pos_embed
            t = self.t_embedder(t)
            y = self.y_embedder(y, self.training)
            c = t + y
            for block in self.blocks:
                x = block(x, c)
            x = self.final_layer(x, c)
            x = self.unpatchify(x)
            return x

        def forward_with_cfg(self, x, t, y, cfg_scale):
            half = x[: len(x) // 2]
            combined = torch.cat([half, half], dim=0)
            model_out = self.forward(combined, t, y)
            eps, rest = model_out[:, :self.in_channels], model_out[:, self.in_channels:]
            cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
            eps = torch.cat([half_eps, half_eps], dim=0)
            return torch.cat([eps, rest], dim=1)

    return DiT()


def dit_weights():
    """DiT's own initialisation, then small random adaLN and output weights (adaLN-Zero would start every
    block as the identity and the output at zero)."""
    weights = weights_of(make_dit)
    rng = np.random.default_rng(21)
    for k in weights:
        if "adaLN_modulation" in k or "final_layer.linear" in k:
            weights[k] = (0.05 * rng.standard_normal(weights[k].shape)).astype(np.float32)
    return weights


def guided_diffusion(m, weights, steps=3, num_timesteps=50):
    th, nn = m.torch, m.nn
    model = load(m, make_dit(m), weights)

    def normal_kl(mean1, logvar1, mean2, logvar2):
        tensor = None
        for obj in (mean1, logvar1, mean2, logvar2):
            if isinstance(obj, th.Tensor):
                tensor = obj
                break
        assert tensor is not None, "at least one argument must be a Tensor"
        logvar1, logvar2 = [x if isinstance(x, th.Tensor) else th.tensor(x).to(tensor) for x in (logvar1, logvar2)]
        return 0.5 * (-1.0 + logvar2 - logvar1 + th.exp(logvar1 - logvar2)
                      + ((mean1 - mean2) ** 2) * th.exp(-logvar2))

    def approx_standard_normal_cdf(x):
        return 0.5 * (1.0 + th.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * th.pow(x, 3))))

    def discretized_gaussian_log_likelihood(x, *, means, log_scales):
        assert x.shape == means.shape == log_scales.shape
        centered_x = x - means
        inv_stdv = th.exp(-log_scales)
        plus_in = inv_stdv * (centered_x + 1.0 / 255.0)
        cdf_plus = approx_standard_normal_cdf(plus_in)
        min_in = inv_stdv * (centered_x - 1.0 / 255.0)
        cdf_min = approx_standard_normal_cdf(min_in)
        log_cdf_plus = th.log(cdf_plus.clamp(min=1e-12))
        log_one_minus_cdf_min = th.log((1.0 - cdf_min).clamp(min=1e-12))
        cdf_delta = cdf_plus - cdf_min
        log_probs = th.where(
            x < -0.999, log_cdf_plus,
            th.where(x > 0.999, log_one_minus_cdf_min, th.log(cdf_delta.clamp(min=1e-12))))
        assert log_probs.shape == x.shape
        return log_probs

    def mean_flat(tensor):
        return tensor.mean(dim=list(range(1, len(tensor.shape))))

    def _extract_into_tensor(arr, timesteps, broadcast_shape):
        res = th.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
        while len(res.shape) < len(broadcast_shape):
            res = res[..., None]
        return res + th.zeros(broadcast_shape, device=timesteps.device)

    def get_named_beta_schedule(schedule_name, num_diffusion_timesteps):
        if schedule_name == "linear":
            scale = 1000 / num_diffusion_timesteps
            return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)

    class GaussianDiffusion:
        def __init__(self, *, betas):
            betas = np.array(betas, dtype=np.float64)
            self.betas = betas
            self.num_timesteps = int(betas.shape[0])
            alphas = 1.0 - betas
            self.alphas_cumprod = np.cumprod(alphas, axis=0)
            self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
            self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
            self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
            self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
            self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
            self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
            self.posterior_log_variance_clipped = np.log(
                np.append(self.posterior_variance[1], self.posterior_variance[1:])) \
                if len(self.posterior_variance) > 1 else np.array([])
            self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
            self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

        def q_sample(self, x_start, t, noise=None):
            if noise is None:
                noise = th.randn_like(x_start)
            assert noise.shape == x_start.shape
            return (_extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                    + _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

        def q_posterior_mean_variance(self, x_start, x_t, t):
            posterior_mean = (_extract_into_tensor(self.posterior_mean_coef1, t, x_t.shape) * x_start
                              + _extract_into_tensor(self.posterior_mean_coef2, t, x_t.shape) * x_t)
            posterior_variance = _extract_into_tensor(self.posterior_variance, t, x_t.shape)
            posterior_log_variance_clipped = _extract_into_tensor(self.posterior_log_variance_clipped, t, x_t.shape)
            return posterior_mean, posterior_variance, posterior_log_variance_clipped

        def _predict_xstart_from_eps(self, x_t, t, eps):
            return (_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                    - _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

        def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
            return (_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart) \
                / _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape)

        def _scale_timesteps(self, t):
            return t

        def p_mean_variance(self, model, x, t, clip_denoised=True, model_kwargs=None):
            if model_kwargs is None:
                model_kwargs = {}
            B, C = x.shape[:2]
            assert t.shape == (B,)
            model_output = model(x, self._scale_timesteps(t), **model_kwargs)
            if isinstance(model_output, tuple):
                model_output, extra = model_output
            assert model_output.shape == (B, C * 2, *x.shape[2:])
            model_output, model_var_values = th.split(model_output, C, dim=1)
            min_log = _extract_into_tensor(self.posterior_log_variance_clipped, t, x.shape)
            max_log = _extract_into_tensor(np.log(self.betas), t, x.shape)
            frac = (model_var_values + 1) / 2
            model_log_variance = frac * max_log + (1 - frac) * min_log
            model_variance = th.exp(model_log_variance)

            def process_xstart(x):
                if clip_denoised:
                    return x.clamp(-1, 1)
                return x

            pred_xstart = process_xstart(self._predict_xstart_from_eps(x_t=x, t=t, eps=model_output))
            model_mean, _, _ = self.q_posterior_mean_variance(x_start=pred_xstart, x_t=x, t=t)
            return {"mean": model_mean, "variance": model_variance, "log_variance": model_log_variance,
                    "pred_xstart": pred_xstart}

        def _vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=True, model_kwargs=None):
            true_mean, _, true_log_variance_clipped = self.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)
            out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
            kl = normal_kl(true_mean, true_log_variance_clipped, out["mean"], out["log_variance"])
            kl = mean_flat(kl) / np.log(2.0)
            decoder_nll = -discretized_gaussian_log_likelihood(
                x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
            assert decoder_nll.shape == x_start.shape
            decoder_nll = mean_flat(decoder_nll) / np.log(2.0)
            output = th.where((t == 0), decoder_nll, kl)
            return {"output": output, "pred_xstart": out["pred_xstart"]}

        def training_losses(self, model, x_start, t, model_kwargs=None, noise=None):
            if model_kwargs is None:
                model_kwargs = {}
            if noise is None:
                noise = th.randn_like(x_start)
            x_t = self.q_sample(x_start, t, noise=noise)
            terms = {}
            model_output = model(x_t, self._scale_timesteps(t), **model_kwargs)
            B, C = x_t.shape[:2]
            assert model_output.shape == (B, C * 2, *x_t.shape[2:])
            model_output, model_var_values = th.split(model_output, C, dim=1)
            frozen_out = th.cat([model_output.detach(), model_var_values], dim=1)
            terms["vb"] = self._vb_terms_bpd(model=lambda *args, r=frozen_out: r, x_start=x_start, x_t=x_t, t=t,
                                             clip_denoised=False)["output"]
            terms["vb"] *= self.num_timesteps / 1000.0
            target = noise
            assert model_output.shape == target.shape == x_start.shape
            terms["mse"] = mean_flat((target - model_output) ** 2)
            terms["loss"] = terms["mse"] + terms["vb"]
            return terms

        def p_sample(self, model, x, t, clip_denoised=True, model_kwargs=None, generator=None):
            out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
            noise = th.randn(x.shape, generator=generator)
            nonzero_mask = ((t != 0).float().view(-1, *([1] * (len(x.shape) - 1))))
            sample = out["mean"] + nonzero_mask * th.exp(0.5 * out["log_variance"]) * noise
            return {"sample": sample, "pred_xstart": out["pred_xstart"]}

        def ddim_sample(self, model, x, t, clip_denoised=True, model_kwargs=None, eta=0.0, generator=None):
            out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
            eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
            alpha_bar = _extract_into_tensor(self.alphas_cumprod, t, x.shape)
            alpha_bar_prev = _extract_into_tensor(self.alphas_cumprod_prev, t, x.shape)
            sigma = (eta * th.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * th.sqrt(1 - alpha_bar / alpha_bar_prev))
            noise = th.randn(x.shape, generator=generator)
            mean_pred = (out["pred_xstart"] * th.sqrt(alpha_bar_prev)
                         + th.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps)
            nonzero_mask = ((t != 0).float().view(-1, *([1] * (len(x.shape) - 1))))
            sample = mean_pred + nonzero_mask * sigma * noise
            return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def space_timesteps(num_timesteps, section_counts):
        size_per = num_timesteps // len(section_counts)
        extra = num_timesteps % len(section_counts)
        start_idx = 0
        all_steps = []
        for i, section_count in enumerate(section_counts):
            size = size_per + (1 if i < extra else 0)
            frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
            cur_idx = 0.0
            taken_steps = []
            for _ in range(section_count):
                taken_steps.append(start_idx + round(cur_idx))
                cur_idx += frac_stride
            all_steps += taken_steps
            start_idx += size
        return set(all_steps)

    class _WrappedModel:
        def __init__(self, model, timestep_map, original_num_steps):
            self.model = model
            self.timestep_map = timestep_map
            self.original_num_steps = original_num_steps

        def __call__(self, x, ts, **kwargs):
            map_tensor = th.tensor(self.timestep_map, device=ts.device, dtype=ts.dtype)
            new_ts = map_tensor[ts]
            return self.model(x, new_ts, **kwargs)

    class SpacedDiffusion(GaussianDiffusion):
        def __init__(self, use_timesteps, **kwargs):
            self.use_timesteps = set(use_timesteps)
            self.timestep_map = []
            self.original_num_steps = len(kwargs["betas"])
            base_diffusion = GaussianDiffusion(**kwargs)
            last_alpha_cumprod = 1.0
            new_betas = []
            for i, alpha_cumprod in enumerate(base_diffusion.alphas_cumprod):
                if i in self.use_timesteps:
                    new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                    last_alpha_cumprod = alpha_cumprod
                    self.timestep_map.append(i)
            kwargs["betas"] = np.array(new_betas)
            super().__init__(**kwargs)

        def p_mean_variance(self, model, *args, **kwargs):
            return super().p_mean_variance(self._wrap_model(model), *args, **kwargs)

        def _wrap_model(self, model):
            if isinstance(model, _WrappedModel):
                return model
            return _WrappedModel(model, self.timestep_map, self.original_num_steps)

    betas = get_named_beta_schedule("linear", num_timesteps)
    diffusion = GaussianDiffusion(betas=betas)
    th.manual_seed(0)
    opt = m.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0)
    rng = np.random.default_rng(13)
    data = np.clip(rng.standard_normal((12, 2, 8, 8)) * 0.5, -1, 1).astype(np.float32)
    data[:4, :, :1] = -1.0  # the decoder's edge cases: exactly -1 and 1
    data[4:8, :, -1:] = 1.0
    logs = []
    model.train()
    for step in range(steps):
        x = th.from_numpy(data[4 * step:4 * step + 4])
        y = th.from_numpy(rng.integers(0, 3, 4))
        t = th.randint(0, diffusion.num_timesteps, (x.shape[0],))
        t[0] = 0  # one sample at t = 0, where the loss is the decoder's NLL
        model_kwargs = dict(y=y)
        loss_dict = diffusion.training_losses(model, x, t, model_kwargs)
        loss = loss_dict["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        logs.append([loss_dict[k].detach() for k in ("loss", "mse", "vb")])
    grads = {n: p.grad for n, p in model.named_parameters()}

    model.eval()
    spaced = SpacedDiffusion(use_timesteps=space_timesteps(num_timesteps, [5]), betas=betas)
    g = th.Generator().manual_seed(2)
    with th.no_grad():
        z = th.randn(2, 2, 8, 8, generator=g)
        z = th.cat([z, z], 0)
        y = th.tensor([0, 2])
        y_null = th.tensor([3] * 2)
        y = th.cat([y, y_null], 0)
        model_kwargs = dict(y=y, cfg_scale=2.0)
        img = z
        for i in list(range(spaced.num_timesteps))[::-1]:
            t = th.tensor([i] * img.shape[0])
            img = spaced.p_sample(model.forward_with_cfg, img, t, clip_denoised=False, model_kwargs=model_kwargs,
                                  generator=g)["sample"]
        ancestral = img
        img = z
        for i in list(range(spaced.num_timesteps))[::-1]:
            t = th.tensor([i] * img.shape[0])
            img = spaced.ddim_sample(model.forward_with_cfg, img, t, model_kwargs=model_kwargs, eta=0.3,
                                     generator=g)["sample"]
    return {"logs": logs, "grads": grads, "params": dict(model.named_parameters()), "ancestral": ancestral,
            "ddim": img, "timestep_map": spaced.timestep_map}


def test_dit_with_guided_diffusion_hybrid_loss_and_respaced_sampling():
    weights = dit_weights()
    ours, _ = run_both(guided_diffusion, weights, rtol=2e-4, atol=2e-5)
    assert ours["timestep_map"] == [0, 12, 24, 37, 49]
    for loss, mse, vb in ours["logs"]:
        np.testing.assert_allclose(loss, mse + vb, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Half precision, as diffusers' pipelines run with torch_dtype=torch.float16: the UNet cast by .half(),
# float16 latents from seeded generators, the scheduler's float32 alphas (0-d tensors) against float16
# latents, classifier-free guidance, and an EMA kept in float16 by _foreach_lerp_ / _foreach_mul_
# ----------------------------------------------------------------------------------------------


def half_pipeline(m, weights, drawn_in_half=False):
    """``drawn_in_half``: the latents and DDIM's noise drawn as float16 (eta=1) and the EMA's decay by
    _foreach_mul_, as diffusers and Karras' EMA write them; otherwise drawn in float32 and cast (eta=0), and the
    decay by mul_ per tensor."""
    torch = m.torch
    _, DDIMScheduler, _ = diffusers_schedulers(m)
    unet = load(m, make_cond_unet(m), weights).half().eval()
    scheduler = DDIMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    scheduler.set_timesteps(5)
    generator = torch.Generator().manual_seed(1)
    if drawn_in_half:
        latents = torch.randn((2, 2, 8, 8), generator=generator, dtype=torch.float16)
    else:
        latents = torch.randn((2, 2, 8, 8), generator=generator).to(torch.float16)
    latents = latents * scheduler.init_noise_sigma
    labels = torch.tensor([1, 2])
    guidance_scale = 4.5
    trajectory = []
    with torch.no_grad():
        for t in scheduler.timesteps:
            latent_model_input = torch.cat([latents] * 2)
            noise_pred = unet(latent_model_input, t, torch.cat([torch.full_like(labels, 3), labels]))
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
            latents, x0 = scheduler.step(noise_pred, t, latents, eta=1.0 if drawn_in_half else 0.0,
                                         generator=generator)
            trajectory.append(latents)
    image = (latents / 2 + 0.5).clamp(0, 1)

    # an EMA of float16 weights, lerp and mul/add forms
    ema = [p.detach().clone() for p in unet.parameters()]
    ema2 = [p.detach().clone() for p in unet.parameters()]
    rng = np.random.default_rng(0)
    for step in range(3):
        with torch.no_grad():
            for p in unet.parameters():
                p.add_(torch.from_numpy(rng.standard_normal(p.shape).astype(np.float16)), alpha=0.01)
        decay = 1 - (1 + step) ** -0.75
        torch._foreach_lerp_(ema, [p.detach() for p in unet.parameters()], 1 - decay)
        if drawn_in_half:
            torch._foreach_mul_(ema2, decay)
        else:
            for e in ema2:
                e.mul_(decay)
        torch._foreach_add_(ema2, [p.detach() for p in unet.parameters()], alpha=1 - decay)
    return {"latents": torch.stack(trajectory), "image": image, "dtype": str(latents.dtype).split(".")[-1],
            "ema": ema, "ema2": ema2}


@pytest.mark.parametrize("drawn_in_half", [False, pytest.param(True, marks=pytest.mark.torch)])
def test_half_precision_pipeline_and_ema(drawn_in_half):
    weights = weights_of(make_cond_unet)
    ours, theirs = run_both(half_pipeline, weights, drawn_in_half, rtol=1e-2, atol=1e-2, own_float16_kernels=True)
    assert ours["dtype"] == "float16" and ours["latents"].dtype == np.float16
    if theirs is not None:
        # float16 rounded as PyTorch's kernels round it: the same numbers after the first two steps but for a
        # few that float32's own summation order (in the convolutions and normalisations) puts a unit off (53%
        # of the first step's were before); the later steps carry those units on
        same = (ours["latents"][:2] == theirs["latents"][:2]).mean()
        assert same > 0.98, same
        # (PyTorch's vectorised loops and their scalar tails round add's alpha differently: the tails of the
        # small tensors here may be a unit off)
        pairs = list(zip(ours["ema"] + ours["ema2"], theirs["ema"] + theirs["ema2"]))
        same = sum(int((a == b).sum()) for a, b in pairs) / sum(a.size for a, _ in pairs)
        assert same > 0.99, same


# ----------------------------------------------------------------------------------------------
# VQ-VAE with an EMA codebook (as the autoencoders of latent diffusion train it): nearest codes by distances,
# the straight-through estimator, codebook counts by one_hot / bincount, EMA sums by index_add_, Laplace
# smoothing of the cluster sizes, dead-code restarts from the batch, and the commitment loss
# ----------------------------------------------------------------------------------------------


def make_vqvae(m, num_embeddings=8, embedding_dim=4):
    torch, nn, F = m.torch, m.nn, m.F

    class VectorQuantizerEMA(nn.Module):
        def __init__(self, num_embeddings, embedding_dim, commitment_cost=0.25, decay=0.9, epsilon=1e-5):
            super().__init__()
            self._embedding_dim = embedding_dim
            self._num_embeddings = num_embeddings
            self._embedding = nn.Embedding(self._num_embeddings, self._embedding_dim)
            self._embedding.weight.data.normal_()
            self._commitment_cost = commitment_cost
            self.register_buffer('_ema_cluster_size', torch.zeros(num_embeddings))
            self._ema_w = nn.Parameter(torch.Tensor(num_embeddings, self._embedding_dim))
            self._ema_w.data.normal_()
            self._decay = decay
            self._epsilon = epsilon

        def forward(self, inputs):
            inputs = inputs.permute(0, 2, 3, 1).contiguous()
            input_shape = inputs.shape
            flat_input = inputs.view(-1, self._embedding_dim)
            distances = (torch.sum(flat_input ** 2, dim=1, keepdim=True)
                         + torch.sum(self._embedding.weight ** 2, dim=1)
                         - 2 * torch.matmul(flat_input, self._embedding.weight.t()))
            encoding_indices = torch.argmin(distances, dim=1).unsqueeze(1)
            encodings = torch.zeros(encoding_indices.shape[0], self._num_embeddings, device=inputs.device)
            encodings.scatter_(1, encoding_indices, 1)
            quantized = torch.matmul(encodings, self._embedding.weight).view(input_shape)
            if self.training:
                self._ema_cluster_size = self._ema_cluster_size * self._decay + \
                    (1 - self._decay) * torch.sum(encodings, 0)
                n = torch.sum(self._ema_cluster_size.data)
                self._ema_cluster_size = (
                    (self._ema_cluster_size + self._epsilon)
                    / (n + self._num_embeddings * self._epsilon) * n)
                dw = torch.matmul(encodings.t(), flat_input)
                self._ema_w = nn.Parameter(self._ema_w * self._decay + (1 - self._decay) * dw)
                self._embedding.weight = nn.Parameter(self._ema_w / self._ema_cluster_size.unsqueeze(1))
            e_latent_loss = F.mse_loss(quantized.detach(), inputs)
            loss = self._commitment_cost * e_latent_loss
            quantized = inputs + (quantized - inputs).detach()
            avg_probs = torch.mean(encodings, dim=0)
            perplexity = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-10)))
            return loss, quantized.permute(0, 3, 1, 2).contiguous(), perplexity, encodings

    class VQVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(),
                                         nn.Conv2d(8, embedding_dim, 3, padding=1))
            self.vq = VectorQuantizerEMA(num_embeddings, embedding_dim)
            self.decoder = nn.Sequential(nn.Conv2d(embedding_dim, 8, 3, padding=1), nn.ReLU(),
                                         nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1))

        def forward(self, x):
            z = self.encoder(x)
            loss, quantized, perplexity, encodings = self.vq(z)
            return loss, self.decoder(quantized), perplexity, encodings

    return VQVAE()


def vqvae(m, weights, steps=4):
    torch, F = m.torch, m.F
    model = load(m, make_vqvae(m), weights)
    rng = np.random.default_rng(6)
    data = rng.random((16, 1, 8, 8)).astype(np.float32)
    data_variance = float(np.var(data))
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3, amsgrad=False)
    history = []
    model.train()
    for step in range(steps):
        x = torch.from_numpy(data[4 * step:4 * step + 4])
        optimizer.zero_grad()
        vq_loss, data_recon, perplexity, encodings = model(x)
        recon_error = F.mse_loss(data_recon, x) / data_variance
        loss = recon_error + vq_loss
        loss.backward()
        optimizer.step()
        history.append([recon_error.item(), vq_loss.item(), perplexity.item()])
        # restart dead codes from the batch's encoder outputs (as many VQ trainers do)
        with torch.no_grad():
            usage = torch.bincount(encodings.argmax(1), minlength=8)
            dead = (usage == 0).nonzero().flatten()
            z = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, 4)
            if len(dead) > 0:
                model.vq._embedding.weight.data[dead] = z[:len(dead)]
            counts = torch.zeros(8).index_add_(0, encodings.argmax(1), torch.ones(encodings.shape[0]))
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    model.eval()
    with torch.no_grad():
        _, recon, perplexity, encodings = model(torch.from_numpy(data[:4]))
    codes = F.one_hot(encodings.argmax(1), num_classes=8).sum(0)
    return {"history": history, "grads": grads, "state": model.state_dict(), "recon": recon, "codes": codes,
            "counts": counts, "usage": usage}


def test_vqvae_ema_codebook_straight_through():
    weights = weights_of(make_vqvae)
    ours, _ = run_both(vqvae, weights, rtol=2e-4, atol=2e-5)
    assert ours["codes"].sum() == 4 * 4 * 4
    np.testing.assert_array_equal(ours["counts"], ours["usage"].astype(np.float32))


# ----------------------------------------------------------------------------------------------
# An EMA over the state dict that skips integer buffers by ``dtype.is_floating_point`` (a torch.dtype's
# property, as EMA teachers and many training loops test it)
# ----------------------------------------------------------------------------------------------


def state_dict_ema(m, weights):
    torch = m.torch
    model = load(m, make_bn_net(m), weights)
    teacher = copy.deepcopy(model)
    rng = np.random.default_rng(1)
    model.train()
    for step in range(3):
        model(torch.from_numpy(rng.standard_normal((8, 1, 4, 4)).astype(np.float32))).sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        student = model.state_dict()
        with torch.no_grad():
            momentum = 0.9
            for name, param in teacher.state_dict().items():
                if param.dtype.is_floating_point:
                    param.mul_(momentum).add_((1.0 - momentum) * student[name].detach())
    return teacher.state_dict()


def test_state_dict_ema_filters_by_dtype_is_floating_point():
    weights = weights_of(make_bn_net)
    ours, _ = run_both(state_dict_ema, weights)
    assert ours["1.num_batches_tracked"] == 0  # the integer buffer is left alone


# ----------------------------------------------------------------------------------------------
# Latent diffusion's spatial transformer as diffusers writes it: cross-attention to padded text embeddings
# (attention scores by baddbmm of an empty tensor with beta=0, the padding mask made additive and repeated per
# head), GEGLU feed-forward, GroupNorm then a 1x1 projection in and out, trained a few steps
# ----------------------------------------------------------------------------------------------


def make_spatial_transformer(m, channels=8, heads=2, dim_head=4, context_dim=6):
    torch, nn, F = m.torch, m.nn, m.F

    class Attention(nn.Module):
        def __init__(self, query_dim, cross_attention_dim=None, heads=8, dim_head=64):
            super().__init__()
            inner_dim = dim_head * heads
            cross_attention_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
            self.scale = dim_head ** -0.5
            self.heads = heads
            self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
            self.to_k = nn.Linear(cross_attention_dim, inner_dim, bias=False)
            self.to_v = nn.Linear(cross_attention_dim, inner_dim, bias=False)
            self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(0.0)])

        def head_to_batch_dim(self, tensor, out_dim=3):
            head_size = self.heads
            batch_size, seq_len, dim = tensor.shape
            tensor = tensor.reshape(batch_size, seq_len, head_size, dim // head_size)
            tensor = tensor.permute(0, 2, 1, 3)
            if out_dim == 3:
                tensor = tensor.reshape(batch_size * head_size, seq_len, dim // head_size)
            return tensor

        def batch_to_head_dim(self, tensor):
            head_size = self.heads
            batch_size, seq_len, dim = tensor.shape
            tensor = tensor.reshape(batch_size // head_size, head_size, seq_len, dim)
            tensor = tensor.permute(0, 2, 1, 3).reshape(batch_size // head_size, seq_len, dim * head_size)
            return tensor

        def get_attention_scores(self, query, key, attention_mask=None):
            dtype = query.dtype
            if attention_mask is None:
                baddbmm_input = torch.empty(query.shape[0], query.shape[1], key.shape[1], dtype=query.dtype,
                                            device=query.device)
                beta = 0
            else:
                baddbmm_input = attention_mask
                beta = 1
            attention_scores = torch.baddbmm(baddbmm_input, query, key.transpose(-1, -2), beta=beta,
                                             alpha=self.scale)
            del baddbmm_input
            attention_probs = attention_scores.softmax(dim=-1)
            return attention_probs.to(dtype)

        def prepare_attention_mask(self, attention_mask, target_length, batch_size, out_dim=3):
            head_size = self.heads
            current_length = attention_mask.shape[-1]
            if current_length != target_length:
                attention_mask = F.pad(attention_mask, (0, target_length), value=0.0)
            if out_dim == 3:
                if attention_mask.shape[0] < batch_size * head_size:
                    attention_mask = attention_mask.repeat_interleave(head_size, dim=0)
            return attention_mask

        def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None):
            batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                              else encoder_hidden_states.shape)
            if attention_mask is not None:
                attention_mask = self.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            query = self.to_q(hidden_states)
            if encoder_hidden_states is None:
                encoder_hidden_states = hidden_states
            key = self.to_k(encoder_hidden_states)
            value = self.to_v(encoder_hidden_states)
            query = self.head_to_batch_dim(query)
            key = self.head_to_batch_dim(key)
            value = self.head_to_batch_dim(value)
            attention_probs = self.get_attention_scores(query, key, attention_mask)
            hidden_states = torch.bmm(attention_probs, value)
            hidden_states = self.batch_to_head_dim(hidden_states)
            hidden_states = self.to_out[0](hidden_states)
            return self.to_out[1](hidden_states)

    class GEGLU(nn.Module):
        def __init__(self, dim_in, dim_out):
            super().__init__()
            self.proj = nn.Linear(dim_in, dim_out * 2)

        def forward(self, hidden_states):
            hidden_states, gate = self.proj(hidden_states).chunk(2, dim=-1)
            return hidden_states * F.gelu(gate)

    class FeedForward(nn.Module):
        def __init__(self, dim, mult=4):
            super().__init__()
            inner_dim = int(dim * mult)
            self.net = nn.ModuleList([GEGLU(dim, inner_dim), nn.Dropout(0.0), nn.Linear(inner_dim, dim)])

        def forward(self, hidden_states):
            for module in self.net:
                hidden_states = module(hidden_states)
            return hidden_states

    class BasicTransformerBlock(nn.Module):
        def __init__(self, dim, num_attention_heads, attention_head_dim, cross_attention_dim):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, elementwise_affine=True, eps=1e-5)
            self.attn1 = Attention(dim, heads=num_attention_heads, dim_head=attention_head_dim)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=True, eps=1e-5)
            self.attn2 = Attention(dim, cross_attention_dim=cross_attention_dim, heads=num_attention_heads,
                                   dim_head=attention_head_dim)
            self.norm3 = nn.LayerNorm(dim, elementwise_affine=True, eps=1e-5)
            self.ff = FeedForward(dim)

        def forward(self, hidden_states, encoder_hidden_states, encoder_attention_mask=None):
            hidden_states = self.attn1(self.norm1(hidden_states)) + hidden_states
            hidden_states = self.attn2(self.norm2(hidden_states), encoder_hidden_states=encoder_hidden_states,
                                       attention_mask=encoder_attention_mask) + hidden_states
            return self.ff(self.norm3(hidden_states)) + hidden_states

    class Transformer2DModel(nn.Module):
        def __init__(self):
            super().__init__()
            inner_dim = heads * dim_head
            self.norm = nn.GroupNorm(num_groups=4, num_channels=channels, eps=1e-6, affine=True)
            self.proj_in = nn.Conv2d(channels, inner_dim, kernel_size=1, stride=1, padding=0)
            self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner_dim, heads, dim_head, context_dim)])
            self.proj_out = nn.Conv2d(inner_dim, channels, kernel_size=1, stride=1, padding=0)

        def forward(self, hidden_states, encoder_hidden_states, encoder_attention_mask=None):
            if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
                encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
                encoder_attention_mask = encoder_attention_mask.unsqueeze(1)
            batch, _, height, width = hidden_states.shape
            residual = hidden_states
            hidden_states = self.norm(hidden_states)
            hidden_states = self.proj_in(hidden_states)
            inner_dim = hidden_states.shape[1]
            hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, inner_dim)
            for block in self.transformer_blocks:
                hidden_states = block(hidden_states, encoder_hidden_states, encoder_attention_mask)
            hidden_states = hidden_states.reshape(batch, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
            hidden_states = self.proj_out(hidden_states)
            return hidden_states + residual

    return Transformer2DModel()


def spatial_transformer(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_spatial_transformer(m), weights)
    rng = np.random.default_rng(12)
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    losses = []
    for step in range(steps):
        x = torch.from_numpy(rng.standard_normal((2, 8, 4, 4)).astype(np.float32))
        context = torch.from_numpy(rng.standard_normal((2, 5, 6)).astype(np.float32))
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        target = torch.from_numpy(rng.standard_normal((2, 8, 4, 4)).astype(np.float32))
        out = model(x, context, encoder_attention_mask=mask if step != 1 else None)
        loss = F.mse_loss(out.float(), target.float(), reduction="mean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        # the padded text tokens take no part: changing them changes nothing
        x = torch.from_numpy(rng.standard_normal((1, 8, 4, 4)).astype(np.float32))
        context = torch.from_numpy(rng.standard_normal((1, 5, 6)).astype(np.float32))
        mask = torch.tensor([[1, 1, 0, 0, 0]])
        a = model(x, context, encoder_attention_mask=mask)
        context[:, 2:] = 100.0
        b = model(x, context, encoder_attention_mask=mask)
    return {"losses": losses, "grads": {n: p.grad for n, p in model.named_parameters()},
            "params": dict(model.named_parameters()), "masked": a, "masked_changed": b}


def test_spatial_transformer_cross_attention_with_padding_mask():
    weights = weights_of(make_spatial_transformer)
    ours, _ = run_both(spatial_transformer, weights, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(ours["masked"], ours["masked_changed"], rtol=1e-5, atol=1e-5)
