# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py), each run unchanged but for its imports on chainrule and on
PyTorch from the same weights, comparing losses, parameters and gradients. Generating and rendering: a DDPM training
step on 2-D toy data (sinusoidal time embeddings, a noise schedule held in buffers, ``alphas_cumprod.gather(-1, t)``,
MSE on the predicted noise) and its ancestral sampling loop drawn from a ``torch.Generator``; neural style transfer
(an input image optimised by ``optim.LBFGS`` with a closure, Gram matrices, content and style losses as layers
inserted into a truncated ``nn.Sequential``); NeRF's volume rendering (positional encoding, ``cumprod``
transmittance, hierarchical sampling); VQ-VAE (nearest-codebook quantisation, the straight-through estimator, EMA
codebook updates)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# DDPM on 2-D toy data: the training step and the sampling loop
# ----------------------------------------------------------------------------------------------


def ddpm_net(m):
    torch, nn = m.torch, m.nn

    class SinusoidalPosEmb(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dim = dim

        def forward(self, x):
            half_dim = self.dim // 2
            emb = math.log(10000) / (half_dim - 1)
            emb = torch.exp(torch.arange(half_dim, device=x.device) * -emb)
            emb = x[:, None] * emb[None, :]
            return torch.cat((emb.sin(), emb.cos()), dim=-1)

    class Denoiser(nn.Module):
        def __init__(self, dim=16):
            super().__init__()
            self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
            self.inp = nn.Linear(2, dim)
            self.mid = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())
            self.out = nn.Linear(dim, 2)

        def forward(self, x, t):
            h = self.inp(x) + self.time_mlp(t.float())
            return self.out(self.mid(h))

    return Denoiser()


def ddpm(m, weights, steps=5, T=20):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def extract(a, t, x_shape):
        b, *_ = t.shape
        out = a.gather(-1, t)
        return out.reshape(b, *((1,) * (len(x_shape) - 1)))

    class GaussianDiffusion(nn.Module):
        def __init__(self, model, timesteps):
            super().__init__()
            self.model = model
            self.num_timesteps = timesteps
            betas = torch.linspace(1e-4, 0.2, timesteps, dtype=torch.float64)
            alphas = 1.0 - betas
            alphas_cumprod = torch.cumprod(alphas, dim=0)
            alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
            register_buffer = lambda name, val: self.register_buffer(name, val.to(torch.float32))
            register_buffer("betas", betas)
            register_buffer("alphas_cumprod", alphas_cumprod)
            register_buffer("alphas_cumprod_prev", alphas_cumprod_prev)
            register_buffer("sqrt_alphas_cumprod", torch.sqrt(alphas_cumprod))
            register_buffer("sqrt_one_minus_alphas_cumprod", torch.sqrt(1.0 - alphas_cumprod))
            register_buffer("sqrt_recip_alphas", torch.sqrt(1.0 / alphas))
            posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
            register_buffer("posterior_variance", posterior_variance)
            register_buffer("posterior_log_variance_clipped", torch.log(posterior_variance.clamp(min=1e-20)))

        def q_sample(self, x_start, t, noise):
            return (extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                    + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

        def p_losses(self, x_start, t, noise):
            x_noisy = self.q_sample(x_start, t, noise)
            predicted = self.model(x_noisy, t)
            return F.mse_loss(predicted, noise)

        @torch.no_grad()
        def p_sample(self, x, t_index, generator):
            t = torch.full((x.shape[0],), t_index, dtype=torch.long)
            betas_t = extract(self.betas, t, x.shape)
            sqrt_one_minus = extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape)
            model_mean = extract(self.sqrt_recip_alphas, t, x.shape) * (x - betas_t * self.model(x, t) / sqrt_one_minus)
            if t_index == 0:
                return model_mean
            noise = torch.randn(x.shape, generator=generator)
            return model_mean + (0.5 * extract(self.posterior_log_variance_clipped, t, x.shape)).exp() * noise

        @torch.no_grad()
        def sample(self, n, generator):
            x = torch.randn((n, 2), generator=generator)
            for i in reversed(range(self.num_timesteps)):
                x = self.p_sample(x, i, generator)
            return x

    model = load(m, ddpm_net(m), weights)
    diffusion = GaussianDiffusion(model, T)
    optimizer = optim.AdamW(diffusion.parameters(), lr=3e-3, weight_decay=1e-2)
    rng = np.random.default_rng(5)
    theta = rng.uniform(0, 2 * np.pi, 64)
    data = np.stack([np.cos(theta), np.sin(theta)], 1) + 0.05 * rng.standard_normal((64, 2))
    data = data.astype(np.float32)
    losses = []
    for step in range(steps):
        x0 = torch.tensor(data[16 * (step % 4):16 * (step % 4 + 1)])
        t = torch.tensor(rng.integers(0, T, 16)).long()
        noise = torch.tensor(rng.standard_normal((16, 2)).astype(np.float32))
        loss = diffusion.p_losses(x0, t, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad.clone() for p in diffusion.parameters()]
        optimizer.step()
        losses.append(loss.item())
    generator = torch.Generator().manual_seed(0)
    samples_shape = tuple(diffusion.sample(4, generator).shape)
    buffers = sorted(name for name, _ in diffusion.named_buffers())
    # the sampling loop itself, from noise given to both libraries
    x = torch.tensor(rng.standard_normal((8, 2)).astype(np.float32))
    with torch.no_grad():
        for i in reversed(range(T)):
            t = torch.full((8,), i, dtype=torch.long)
            eps = diffusion.model(x, t)
            x = extract(diffusion.sqrt_recip_alphas, t, x.shape) * (
                x - extract(diffusion.betas, t, x.shape) * eps
                / extract(diffusion.sqrt_one_minus_alphas_cumprod, t, x.shape))
            if i > 0:
                z = torch.tensor(rng.standard_normal((8, 2)).astype(np.float32))
                x = x + extract(diffusion.posterior_variance, t, x.shape).sqrt() * z
    return (losses, grads, [p.detach() for p in diffusion.parameters()], diffusion.posterior_log_variance_clipped,
            diffusion.alphas_cumprod_prev, x, samples_shape, buffers, diffusion.betas.dtype == torch.float32)


def test_ddpm_training_step_and_sampling():
    weights = weights_of(ddpm_net)
    ours, _ = run_both(ddpm, weights, rtol=1e-5, atol=1e-6)
    losses, grads, params, logvar, prev, x, samples_shape, buffers, is_f32 = ours
    assert samples_shape == (4, 2) and is_f32 and len(buffers) == 8
    assert prev[0] == 1.0 and np.all(np.isfinite(logvar)) and np.all(np.isfinite(x))
    assert all(np.abs(g).max() > 0 for g in grads)


# ----------------------------------------------------------------------------------------------
# Neural style transfer (the PyTorch tutorial): LBFGS on the input image, Gram matrices, loss layers
# ----------------------------------------------------------------------------------------------


def style_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))


def style_transfer(m, weights, num_steps=4, dtype="float32", max_iter=20):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    cnn = load(m, style_cnn(m), weights).eval().to(getattr(torch, dtype))
    for p in cnn.parameters():
        p.requires_grad_(False)

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d)

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super().__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, input):
            G = gram_matrix(input)
            self.loss = F.mse_loss(G, self.target)
            return input

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean = torch.tensor(mean, dtype=getattr(torch, dtype)).view(-1, 1, 1)
            self.std = torch.tensor(std, dtype=getattr(torch, dtype)).view(-1, 1, 1)

        def forward(self, img):
            return (img - self.mean) / self.std

    rng = np.random.default_rng(4)
    style_img = torch.tensor(rng.uniform(0, 1, (1, 3, 8, 8)).astype(dtype))
    content_img = torch.tensor(rng.uniform(0, 1, (1, 3, 8, 8)).astype(dtype))
    content_layers, style_layers = ["conv_3"], ["conv_1", "conv_2", "conv_3", "conv_4"]
    normalization = Normalization([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    content_losses, style_losses = [], []
    model = nn.Sequential(normalization)
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu_{i}"
            layer = nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = f"pool_{i}"
        else:
            raise RuntimeError(f"Unrecognized layer: {layer.__class__.__name__}")
        model.add_module(name, layer)
        if name in content_layers:
            target = model(content_img).detach()
            content_loss = ContentLoss(target)
            model.add_module(f"content_loss_{i}", content_loss)
            content_losses.append(content_loss)
        if name in style_layers:
            target_feature = model(style_img).detach()
            style_loss = StyleLoss(target_feature)
            model.add_module(f"style_loss_{i}", style_loss)
            style_losses.append(style_loss)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], (ContentLoss, StyleLoss)):
            break
    model = model[:(i + 1)]

    input_img = content_img.clone()
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = optim.LBFGS([input_img], max_iter=max_iter)
    style_weight, content_weight = 1e4, 1
    log = []
    run = [0]
    while run[0] <= num_steps:
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = sum(sl.loss for sl in style_losses) * style_weight
            content_score = sum(cl.loss for cl in content_losses) * content_weight
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            log.append((style_score.item(), content_score.item()))
            return style_score + content_score

        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    names = [name for name, _ in model.named_children()]
    return log, input_img.detach(), input_img.grad, names, len(optimizer.state_dict()["state"])


def test_neural_style_transfer_with_lbfgs():
    weights = weights_of(style_cnn)
    # LBFGS's 20 inner iterations amplify float32 rounding (2e-4 apart by the 20th loss; in float64 the
    # two libraries agree to 1e-12): the whole run is compared in float64, a short one in float32, whose first
    # loss already differs in its 7th digit (convolutions and Gram matrices summed in other orders): its image
    # gradient (largest 0.3) agrees to 2e-6
    run_both(style_transfer, weights, max_iter=3, rtol=1e-4, atol=1e-5)
    ours, _ = run_both(style_transfer, weights, dtype="float64", rtol=1e-10, atol=1e-12)
    log, img, grad, names, n_state = ours
    assert names[-1] == "style_loss_4" and "content_loss_3" in names and n_state == 1
    assert len(log) > 5 and log[-1][0] < log[0][0]
    assert img.min() >= 0 and img.max() <= 1


# ----------------------------------------------------------------------------------------------
# NeRF's volume rendering: positional encoding, cumprod transmittance, hierarchical sampling
# ----------------------------------------------------------------------------------------------


def nerf_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3 + 3 * 2 * 3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def nerf(m, weights, steps=3, N_samples=8, N_importance=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, nerf_net(m), weights)

    def embed(x, multires=3):
        out = [x]
        for freq in 2.0 ** torch.linspace(0.0, multires - 1, multires):
            for p_fn in (torch.sin, torch.cos):
                out.append(p_fn(x * freq))
        return torch.cat(out, -1)

    def raw2outputs(raw, z_vals, rays_d):
        raw2alpha = lambda raw, dists, act_fn=F.relu: 1.0 - torch.exp(-act_fn(raw) * dists)
        dists = z_vals[..., 1:] - z_vals[..., :-1]
        dists = torch.cat([dists, torch.Tensor([1e10]).expand(dists[..., :1].shape)], -1)
        dists = dists * torch.norm(rays_d[..., None, :], dim=-1)
        rgb = torch.sigmoid(raw[..., :3])
        alpha = raw2alpha(raw[..., 3], dists)
        transmittance = torch.cumprod(torch.cat([torch.ones((alpha.shape[0], 1)), 1.0 - alpha + 1e-10], -1), -1)
        weights = alpha * transmittance[:, :-1]
        rgb_map = torch.sum(weights[..., None] * rgb, -2)
        depth_map = torch.sum(weights * z_vals, -1)
        disp_map = 1.0 / torch.max(1e-10 * torch.ones_like(depth_map), depth_map / torch.sum(weights, -1))
        acc_map = torch.sum(weights, -1)
        return rgb_map, disp_map, acc_map, weights, depth_map

    def sample_pdf(bins, weights, N_samples, u):
        weights = weights + 1e-5
        pdf = weights / torch.sum(weights, -1, keepdim=True)
        cdf = torch.cumsum(pdf, -1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
        u = u.contiguous()
        inds = torch.searchsorted(cdf, u, right=True)
        below = torch.max(torch.zeros_like(inds - 1), inds - 1)
        above = torch.min((cdf.shape[-1] - 1) * torch.ones_like(inds), inds)
        inds_g = torch.stack([below, above], -1)
        matched_shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
        cdf_g = torch.gather(cdf.unsqueeze(1).expand(matched_shape), 2, inds_g)
        bins_g = torch.gather(bins.unsqueeze(1).expand(matched_shape), 2, inds_g)
        denom = cdf_g[..., 1] - cdf_g[..., 0]
        denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
        t = (u - cdf_g[..., 0]) / denom
        return bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0])

    rng = np.random.default_rng(21)
    N_rays = 6
    rays_o = torch.tensor(rng.standard_normal((N_rays, 3)).astype(np.float32))
    rays_d = torch.tensor(rng.standard_normal((N_rays, 3)).astype(np.float32))
    target = torch.tensor(rng.uniform(0, 1, (N_rays, 3)).astype(np.float32))
    near, far = 2.0, 6.0
    optimizer = optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.999))
    img2mse = lambda x, y: torch.mean((x - y) ** 2)
    mse2psnr = lambda x: -10.0 * torch.log(x) / torch.log(torch.Tensor([10.0]))
    log = []
    for step in range(steps):
        t_vals = torch.linspace(0.0, 1.0, steps=N_samples)
        z_vals = near * (1.0 - t_vals) + far * t_vals
        z_vals = z_vals.expand([N_rays, N_samples])
        mids = 0.5 * (z_vals[..., 1:] + z_vals[..., :-1])
        upper = torch.cat([mids, z_vals[..., -1:]], -1)
        lower = torch.cat([z_vals[..., :1], mids], -1)
        t_rand = torch.tensor(rng.uniform(0, 1, z_vals.shape).astype(np.float32))
        z_vals = lower + (upper - lower) * t_rand
        pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]
        raw = model(embed(pts.reshape(-1, 3))).reshape(N_rays, N_samples, 4)
        rgb_map, disp_map, acc_map, weights, depth_map = raw2outputs(raw, z_vals, rays_d)
        z_vals_mid = 0.5 * (z_vals[..., 1:] + z_vals[..., :-1])
        u = torch.tensor(rng.uniform(0, 1, (N_rays, N_importance)).astype(np.float32))
        z_samples = sample_pdf(z_vals_mid, weights[..., 1:-1], N_importance, u).detach()
        z_vals, _ = torch.sort(torch.cat([z_vals, z_samples], -1), -1)
        pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]
        raw = model(embed(pts.reshape(-1, 3))).reshape(N_rays, N_samples + N_importance, 4)
        rgb_fine, disp_fine, acc_fine, _, _ = raw2outputs(raw, z_vals, rays_d)
        optimizer.zero_grad()
        img_loss = img2mse(rgb_fine, target)
        loss = img_loss + img2mse(rgb_map, target)
        psnr = mse2psnr(img_loss)
        loss.backward()
        optimizer.step()
        log.append((loss.item(), psnr.item()))
    return (log, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], z_samples,
            disp_fine.detach(), acc_fine.detach())


# a ray whose densities all ReLU to 0 has depth/acc = 0/0 = NaN disparity, silently in PyTorch; NumPy
# warns from Divide's forward (autograd/ops/elementwise.py, the lead's file: see the report)
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_nerf_volume_rendering_and_hierarchical_sampling():
    weights = weights_of(nerf_net)
    ours, _ = run_both(nerf, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, z_samples, disp, acc = ours
    assert np.all((z_samples >= 2.0) & (z_samples <= 6.0)) and np.all(acc <= 1 + 1e-6)
    assert all(np.isfinite(g).all() for g in grads) and np.isnan(disp).any()


# ----------------------------------------------------------------------------------------------
# VQ-VAE: nearest-codebook quantisation, the straight-through estimator, EMA codebook updates
# ----------------------------------------------------------------------------------------------


def vqvae_net(m):
    nn = m.nn

    class VQVAE(nn.Module):
        def __init__(self, num_embeddings=6, embedding_dim=3):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(),
                                         nn.Conv2d(8, embedding_dim, 1))
            self.embedding = nn.Embedding(num_embeddings, embedding_dim)
            self.embedding.weight.data.uniform_(-1 / num_embeddings, 1 / num_embeddings)
            self.decoder = nn.Sequential(nn.ConvTranspose2d(embedding_dim, 8, 4, stride=2, padding=1), nn.ReLU(),
                                         nn.Conv2d(8, 1, 3, padding=1))
            self.register_buffer("ema_cluster_size", m.torch.zeros(num_embeddings))
            self.register_buffer("ema_w", self.embedding.weight.data.clone())

    return VQVAE()


def vqvae(m, weights, steps=4, commitment_cost=0.25, decay=0.9, epsilon=1e-5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, vqvae_net(m), weights)
    emb = model.embedding

    def quantize(inputs, ema):
        inputs = inputs.permute(0, 2, 3, 1).contiguous()
        input_shape = inputs.shape
        flat_input = inputs.view(-1, emb.embedding_dim)
        distances = (torch.sum(flat_input ** 2, dim=1, keepdim=True) + torch.sum(emb.weight ** 2, dim=1)
                     - 2 * torch.matmul(flat_input, emb.weight.t()))
        encoding_indices = torch.argmin(distances, dim=1).unsqueeze(1)
        encodings = torch.zeros(encoding_indices.shape[0], emb.num_embeddings, device=inputs.device)
        encodings.scatter_(1, encoding_indices, 1)
        quantized = torch.matmul(encodings, emb.weight).view(input_shape)
        if ema and model.training:
            model.ema_cluster_size = model.ema_cluster_size * decay + (1 - decay) * torch.sum(encodings, 0)
            n = torch.sum(model.ema_cluster_size.data)
            model.ema_cluster_size = ((model.ema_cluster_size + epsilon) / (n + emb.num_embeddings * epsilon) * n)
            dw = torch.matmul(encodings.t(), flat_input)
            model.ema_w = nn.Parameter(model.ema_w * decay + (1 - decay) * dw)
            emb.weight = nn.Parameter(model.ema_w / model.ema_cluster_size.unsqueeze(1))
            e_latent_loss = F.mse_loss(quantized.detach(), inputs)
            loss = commitment_cost * e_latent_loss
        else:
            e_latent_loss = F.mse_loss(quantized.detach(), inputs)
            q_latent_loss = F.mse_loss(quantized, inputs.detach())
            loss = q_latent_loss + commitment_cost * e_latent_loss
        quantized = inputs + (quantized - inputs).detach()
        avg_probs = torch.mean(encodings, dim=0)
        perplexity = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-10)))
        return loss, quantized.permute(0, 3, 1, 2).contiguous(), perplexity, encoding_indices

    rng = np.random.default_rng(6)
    x = torch.tensor(rng.uniform(0, 1, (4, 1, 8, 8)).astype(np.float32))
    optimizer = optim.Adam(model.parameters(), lr=1e-2, amsgrad=False)
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        vq_loss, quantized, perplexity, indices = quantize(model.encoder(x), ema=False)
        recon = model.decoder(quantized)
        loss = F.mse_loss(recon, x) + vq_loss
        loss.backward()
        optimizer.step()
        log.append((loss.item(), perplexity.item()))
    grads = [p.grad for p in model.parameters()]
    # the EMA variant replaces the codebook by hand (a fresh Parameter, not in the optimizer)
    with torch.no_grad():
        _, _, _, ema_indices = quantize(model.encoder(x), ema=True)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    return log, [p.detach() for p in model.parameters()], grads, indices, ema_indices, sd


def test_vqvae_straight_through_and_ema_codebook():
    weights = weights_of(vqvae_net)
    ours, _ = run_both(vqvae, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, indices, ema_indices, sd = ours
    assert grads[4].shape == (6, 3) and np.abs(grads[4]).max() > 0  # the codebook learns by q_latent_loss
    assert np.abs(grads[0]).max() > 0  # and the encoder through the straight-through estimator
    assert set(sd) >= {"ema_cluster_size", "ema_w", "embedding.weight"}
