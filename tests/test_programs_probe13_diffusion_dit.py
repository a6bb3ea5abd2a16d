# ruff: noqa: E731, F841  (the programs are kept as their authors wrote them)
"""Diffusion models, flows, score matching and flow matching, run as tests/probe13_diffusion_common.py says. DiT
(adaLN-Zero, ``scaled_dot_product_attention``, patchify/unpatchify by ``einsum``, label dropout) trained by
guided-diffusion's hybrid loss (learned variances, ``discretized_gaussian_log_likelihood``), respaced sampling."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

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
