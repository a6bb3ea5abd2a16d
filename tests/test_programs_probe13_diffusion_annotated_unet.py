# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Diffusion models, flows, score matching and flow matching, run as tests/probe13_diffusion_common.py says. The
annotated diffusion model's UNet (weight-standardised convolutions, ``GroupNorm``, ``SiLU``, the time embedding's
scale and shift by ``chunk``, attention and linear attention on feature maps by ``einsum``, a space-to-depth
downsample, ``Upsample(mode="nearest")``, skip concatenation), trained with linear betas, an ``extract`` helper,
``torch.randint``/``torch.randn_like`` from a ``torch.Generator``, Huber/L1 losses and the min-SNR weight, then
sampled by DDPM's ancestral loop under ``torch.inference_mode``; the schedule's float32 ``cumprod`` compared exactly."""

import math

import numpy as np

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
