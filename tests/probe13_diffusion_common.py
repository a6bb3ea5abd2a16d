"""What the files of session 13's diffusion probe (tests/test_programs_probe13_diffusion_*.py, one family of models
or tools each) share: diffusers' DDPM, DDIM and Euler schedulers (cosine/scaled-linear/sigmoid betas, zero terminal
SNR, v-prediction, learned-range variances, dynamic thresholding by ``torch.quantile``, trailing spacing, Karras
sigmas with churn, per-sample generator lists), its timestep embedding and a conditional UNet with
``ConvTranspose2d``, which the diffusers training loop and the half-precision pipeline both run.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and the
same seeded generators, comparing losses, gradients, parameters after several optimiser steps, and whole sampling
loops."""

import math

import numpy as np


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
