# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Diffusion models, flows, score matching and flow matching, run as tests/probe13_diffusion_common.py says.
diffusers' schedulers driving a training loop with conditioning dropout, ``EMAModel``, a ``LambdaLR`` warm-up and
guidance with rescale."""

import copy
import math

import numpy as np
import pytest

from .probe13_diffusion_common import diffusers_schedulers, make_cond_unet
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# diffusers' schedulers (DDPM, DDIM, Euler), its timestep embedding, training loop and EMAModel
# ----------------------------------------------------------------------------------------------


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
