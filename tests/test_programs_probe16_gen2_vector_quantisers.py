# ruff: noqa: E501  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere, run as tests/probe16_gen2_common.py says: vector quantisers as lucidrains
writes them: k-means init by ``cdist``/``bincount``/``scatter_add_``, EMA by ``lerp_`` with Laplace smoothing,
dead-code expiry, cosine codebooks, residual VQ, orthogonal regularisation; FSQ (int32 level buffers, ``atanh``,
round_ste) and LFQ (bit masks by ``&``, an entropy loss)."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Vector quantisers as lucidrains/vector-quantize-pytorch writes them (without einops): a Euclidean codebook
# initialised by k-means (torch.cdist, bincount, scatter_add_), EMA updates by lerp_ with Laplace smoothing,
# dead codes expired to batch samples, a cosine-similarity codebook, residual VQ, orthogonal regularisation;
# FSQ (int32 level buffers, atanh/tanh bounds, round_ste, the implicit codebook by // and %) and LFQ (bit
# masks by &, an entropy loss)
# ----------------------------------------------------------------------------------------------


def vq_helpers(m):
    torch, F = m.torch, m.F

    def l2norm(t):
        return F.normalize(t, p=2, dim=-1)

    def laplace_smoothing(x, n_categories, eps=1e-5, dim=-1):
        denom = x.sum(dim=dim, keepdim=True)
        return (x + eps) / (denom + n_categories * eps)

    def sample_vectors(samples, num):
        num_samples, device = samples.shape[0], samples.device
        if num_samples >= num:
            indices = torch.randperm(num_samples, device=device)[:num]
        else:
            indices = torch.randint(0, num_samples, (num,), device=device)
        return samples[indices]

    def kmeans(samples, num_clusters, num_iters=10, use_cosine_sim=False):
        dim, dtype = samples.shape[-1], samples.dtype
        means = sample_vectors(samples, num_clusters)
        for _ in range(num_iters):
            if use_cosine_sim:
                dists = samples @ means.t()
            else:
                dists = -torch.cdist(samples, means, p=2)
            buckets = dists.max(dim=-1).indices
            bins = torch.bincount(buckets, minlength=num_clusters)
            zero_mask = bins == 0
            bins_min_clamped = bins.masked_fill(zero_mask, 1)
            new_means = buckets.new_zeros(num_clusters, dim, dtype=dtype)
            new_means.scatter_add_(0, buckets.unsqueeze(-1).expand(-1, dim), samples)
            new_means = new_means / bins_min_clamped[..., None]
            if use_cosine_sim:
                new_means = l2norm(new_means)
            means = torch.where(zero_mask[..., None], means, new_means)
        return means, bins

    def ema_inplace(old, new, decay):
        old.lerp_(new, 1 - decay)

    def orthogonal_loss_fn(t):
        # eq (2) from https://arxiv.org/abs/2112.00384
        n = t.shape[0]
        normed_codes = l2norm(t)
        identity = torch.eye(n, device=t.device)
        cosine_sim = torch.einsum('i d, j d -> i j', normed_codes, normed_codes)
        return ((cosine_sim - identity) ** 2).sum() / (n ** 2)

    return l2norm, laplace_smoothing, sample_vectors, kmeans, ema_inplace, orthogonal_loss_fn


def make_vq_autoencoder(m, dim=4, codebook_size=6):
    torch, nn, F = m.torch, m.nn, m.F
    l2norm, laplace_smoothing, sample_vectors, kmeans, ema_inplace, orthogonal_loss_fn = vq_helpers(m)

    class EuclideanCodebook(nn.Module):
        def __init__(self, dim, codebook_size, kmeans_init=False, kmeans_iters=4, decay=0.8, eps=1e-5,
                     threshold_ema_dead_code=0, use_cosine_sim=False):
            super().__init__()
            self.decay = decay
            init_fn = torch.randn if not kmeans_init else torch.zeros
            embed = init_fn(codebook_size, dim)
            if use_cosine_sim:
                embed = l2norm(embed)
            self.codebook_size = codebook_size
            self.kmeans_iters = kmeans_iters
            self.eps = eps
            self.threshold_ema_dead_code = threshold_ema_dead_code
            self.use_cosine_sim = use_cosine_sim
            self.register_buffer('initted', torch.Tensor([not kmeans_init]))
            self.register_buffer('cluster_size', torch.zeros(codebook_size))
            self.register_buffer('embed', embed)
            self.register_buffer('embed_avg', embed.clone())

        def init_embed_(self, data):
            if self.initted:
                return
            embed, cluster_size = kmeans(data, self.codebook_size, self.kmeans_iters, self.use_cosine_sim)
            self.embed.data.copy_(embed)
            self.embed_avg.data.copy_(embed.clone())
            self.cluster_size.data.copy_(cluster_size)
            self.initted.data.copy_(torch.Tensor([True]))

        def replace(self, samples, mask):
            modified_codebook = torch.where(mask[..., None], sample_vectors(samples, self.codebook_size), self.embed)
            self.embed.data.copy_(modified_codebook)

        def expire_codes_(self, batch_samples):
            if self.threshold_ema_dead_code == 0:
                return
            expired_codes = self.cluster_size < self.threshold_ema_dead_code
            if not torch.any(expired_codes):
                return
            batch_samples = batch_samples.reshape(-1, batch_samples.shape[-1])
            self.replace(batch_samples, mask=expired_codes)

        def forward(self, x):
            shape, dtype = x.shape, x.dtype
            flatten = x.reshape(-1, shape[-1])
            if self.use_cosine_sim:
                flatten = l2norm(flatten)
            self.init_embed_(flatten)
            embed = self.embed.t()
            if self.use_cosine_sim:
                dist = flatten @ embed
            else:
                dist = -(flatten.pow(2).sum(1, keepdim=True) - 2 * flatten @ embed
                         + embed.pow(2).sum(0, keepdim=True))
            embed_ind = dist.max(dim=-1).indices
            embed_onehot = F.one_hot(embed_ind, self.codebook_size).type(dtype)
            embed_ind = embed_ind.view(*shape[:-1])
            quantize = F.embedding(embed_ind, self.embed)
            if self.training:
                ema_inplace(self.cluster_size, embed_onehot.sum(0), self.decay)
                embed_sum = flatten.t() @ embed_onehot
                ema_inplace(self.embed_avg, embed_sum.t(), self.decay)
                cluster_size = laplace_smoothing(self.cluster_size, self.codebook_size, self.eps) * self.cluster_size.sum()
                embed_normalized = self.embed_avg / cluster_size.unsqueeze(1)
                if self.use_cosine_sim:
                    embed_normalized = l2norm(embed_normalized)
                self.embed.data.copy_(embed_normalized)
                self.expire_codes_(x)
            return quantize, embed_ind

    class VectorQuantize(nn.Module):
        def __init__(self, dim, codebook_size, codebook_dim=None, commitment_weight=1., orthogonal_reg_weight=0.,
                     **kwargs):
            super().__init__()
            codebook_dim = codebook_dim if codebook_dim is not None else dim
            requires_projection = codebook_dim != dim
            self.project_in = nn.Linear(dim, codebook_dim) if requires_projection else nn.Identity()
            self.project_out = nn.Linear(codebook_dim, dim) if requires_projection else nn.Identity()
            self.commitment_weight = commitment_weight
            self.orthogonal_reg_weight = orthogonal_reg_weight
            self._codebook = EuclideanCodebook(codebook_dim, codebook_size, **kwargs)

        @property
        def codebook(self):
            return self._codebook.embed

        def forward(self, x):
            device = x.device
            x = self.project_in(x)
            quantize, embed_ind = self._codebook(x)
            if self.training:
                quantize = x + (quantize - x).detach()
            loss = torch.tensor([0.], device=device, requires_grad=self.training)
            if self.training:
                if self.commitment_weight > 0:
                    commit_loss = F.mse_loss(quantize.detach(), x)
                    loss = loss + commit_loss * self.commitment_weight
                if self.orthogonal_reg_weight > 0:
                    orthogonal_reg_loss = orthogonal_loss_fn(self.codebook)
                    loss = loss + orthogonal_reg_loss * self.orthogonal_reg_weight
            quantize = self.project_out(quantize)
            return quantize, embed_ind, loss

    class ResidualVQ(nn.Module):
        """ Follows Algorithm 1. in https://arxiv.org/pdf/2107.03312.pdf """

        def __init__(self, *, num_quantizers, **kwargs):
            super().__init__()
            self.layers = nn.ModuleList([VectorQuantize(**kwargs) for _ in range(num_quantizers)])

        def forward(self, x):
            quantized_out = 0.
            residual = x
            all_losses = []
            all_indices = []
            for layer in self.layers:
                quantized, indices, loss = layer(residual)
                residual = residual - quantized.detach()
                quantized_out = quantized_out + quantized
                all_indices.append(indices)
                all_losses.append(loss)
            all_losses, all_indices = map(torch.stack, (all_losses, all_indices))
            return quantized_out, all_indices, all_losses

    class Autoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.GELU(), nn.Conv1d(8, dim, 1))
            self.vq = VectorQuantize(dim, codebook_size, codebook_dim=3, kmeans_init=True,
                                     threshold_ema_dead_code=2, orthogonal_reg_weight=0.1)
            self.cos_vq = VectorQuantize(dim, codebook_size, use_cosine_sim=True, decay=0.9)
            self.rvq = ResidualVQ(num_quantizers=2, dim=dim, codebook_size=codebook_size, kmeans_init=True)
            self.decoder = nn.Sequential(nn.Conv1d(3 * dim, 8, 3, padding=1), nn.GELU(), nn.Conv1d(8, 2, 1))

        def forward(self, x):
            z = self.encoder(x).transpose(1, 2)  # b d n -> b n d
            q1, i1, l1 = self.vq(z)
            q2, i2, l2 = self.cos_vq(z)
            q3, i3, l3 = self.rvq(z)
            q = torch.cat([q1, q2, q3], dim=-1).transpose(1, 2)
            return self.decoder(q), (i1, i2, i3), l1.sum() + l2.sum() + l3.sum()

    return Autoencoder()


def vq_autoencoder(m, weights, steps=4):
    torch, F = m.torch, m.F
    torch.manual_seed(0)  # the codebooks' own init (randn / zeros) is replaced by the weights below
    model = make_vq_autoencoder(m)
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(9)
    series = rng.standard_normal((8, 2, 10)).astype(np.float32).cumsum(-1) * 0.3
    optimizer = m.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    torch.manual_seed(4)  # k-means' and the dead-code replacement's randperm / randint
    history, codes = [], []
    model.train()
    for step in range(steps):
        x = torch.from_numpy(series[2 * step:2 * step + 2])
        recon, indices, vq_loss = model(x)
        loss = F.mse_loss(recon, x) + vq_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append([loss.item(), vq_loss.item()])
        codes.append(torch.cat([i.reshape(-1) for i in indices]))
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    model.eval()
    with torch.no_grad():
        recon, indices, eval_loss = model(torch.from_numpy(series[:2]))
    return {"history": history, "codes": codes, "grads": grads, "state": model.state_dict(), "recon": recon,
            "eval_loss": eval_loss, "initted": bool(model.vq._codebook.initted)}


def test_vq_kmeans_ema_dead_codes_cosine_and_residual():
    weights = weights_of(make_vq_autoencoder)
    ours, _ = run_both(vq_autoencoder, weights, rtol=2e-4, atol=2e-5)
    assert ours["initted"] is True
    assert ours["eval_loss"] == 0
    assert ours["codes"][0].max() < 6


def make_fsq_lfq(m, levels=(8, 5, 4), lfq_codebook_size=16):
    torch, nn, F = m.torch, m.nn, m.F
    int32 = torch.int32

    def round_ste(z):
        """Round with straight through gradients."""
        zhat = z.round()
        return z + (zhat - z).detach()

    class FSQ(nn.Module):
        def __init__(self, levels, dim=None):
            super().__init__()
            _levels = torch.tensor(levels, dtype=int32)
            self.register_buffer("_levels", _levels, persistent=False)
            _basis = torch.cumprod(torch.tensor([1] + levels[:-1]), dim=0, dtype=int32)
            self.register_buffer("_basis", _basis, persistent=False)
            codebook_dim = len(levels)
            self.codebook_dim = codebook_dim
            self.dim = dim if dim is not None else codebook_dim
            has_projections = self.dim != codebook_dim
            self.project_in = nn.Linear(self.dim, codebook_dim) if has_projections else nn.Identity()
            self.project_out = nn.Linear(codebook_dim, self.dim) if has_projections else nn.Identity()
            self.codebook_size = self._levels.prod().item()
            implicit_codebook = self.indices_to_codes(torch.arange(self.codebook_size), project_out=False)
            self.register_buffer("implicit_codebook", implicit_codebook, persistent=False)

        def bound(self, z, eps: float = 1e-3):
            """Bound `z`, an array of shape (..., d)."""
            half_l = (self._levels - 1) * (1 + eps) / 2
            offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
            shift = (offset / half_l).atanh()
            return (z + shift).tanh() * half_l - offset

        def quantize(self, z):
            """Quantizes z, returns quantized zhat, same shape as z."""
            quantized = round_ste(self.bound(z))
            half_width = self._levels // 2  # Renormalize to [-1, 1].
            return quantized / half_width

        def _scale_and_shift(self, zhat_normalized):
            half_width = self._levels // 2
            return (zhat_normalized * half_width) + half_width

        def _scale_and_shift_inverse(self, zhat):
            half_width = self._levels // 2
            return (zhat - half_width) / half_width

        def codes_to_indices(self, zhat):
            """Converts a `code` to an index in the codebook."""
            assert zhat.shape[-1] == self.codebook_dim
            zhat = self._scale_and_shift(zhat)
            return (zhat * self._basis).sum(dim=-1).to(int32)

        def indices_to_codes(self, indices, project_out=True):
            """Inverse of `codes_to_indices`."""
            indices = indices.unsqueeze(-1)
            codes_non_centered = (indices // self._basis) % self._levels
            codes = self._scale_and_shift_inverse(codes_non_centered)
            if project_out:
                codes = self.project_out(codes)
            return codes

        def forward(self, z):
            z = self.project_in(z)
            codes = self.quantize(z)
            indices = self.codes_to_indices(codes)
            out = self.project_out(codes)
            return out, indices

    def log(t, eps=1e-5):
        return t.clamp(min=eps).log()

    def entropy(prob):
        return (-prob * log(prob)).sum(dim=-1)

    class LFQ(nn.Module):
        def __init__(self, dim, codebook_size, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                     diversity_gamma=1., inv_temperature=100., codebook_scale=1.):
            super().__init__()
            codebook_dim = int(math.log2(codebook_size))
            self.project_in = nn.Linear(dim, codebook_dim)
            self.project_out = nn.Linear(codebook_dim, dim)
            self.codebook_dim = codebook_dim
            self.diversity_gamma = diversity_gamma
            self.inv_temperature = inv_temperature
            self.entropy_loss_weight = entropy_loss_weight
            self.commitment_loss_weight = commitment_loss_weight
            self.codebook_scale = codebook_scale
            self.register_buffer('mask', 2 ** torch.arange(codebook_dim - 1, -1, -1), persistent=False)
            all_codes = torch.arange(codebook_size)
            bits = ((all_codes[..., None].int() & self.mask) != 0).float()
            codebook = bits * codebook_scale * 2 - codebook_scale
            self.register_buffer('codebook', codebook, persistent=False)

        def indices_to_codes(self, indices):
            bits = ((indices[..., None].int() & self.mask) != 0).float()
            return self.project_out(bits * self.codebook_scale * 2 - self.codebook_scale)

        def forward(self, x):
            x = self.project_in(x)
            original_input = x
            codebook_value = torch.ones_like(x) * self.codebook_scale
            quantized = torch.where(x > 0, codebook_value, -codebook_value)
            indices = ((quantized > 0).int() * self.mask.int()).sum(dim=-1)
            if self.training:
                x = x + (quantized - x).detach()
            else:
                x = quantized
            if self.training:
                distance = -2 * torch.einsum('... i d, j d -> ... i j', original_input, self.codebook)
                prob = (-distance * self.inv_temperature).softmax(dim=-1)
                per_sample_entropy = entropy(prob).mean()
                avg_prob = prob.reshape(-1, prob.shape[-1]).mean(dim=0)
                codebook_entropy = entropy(avg_prob).mean()
                entropy_aux_loss = per_sample_entropy - self.diversity_gamma * codebook_entropy
                commit_loss = F.mse_loss(original_input, quantized.detach(), reduction='none').mean()
            else:
                entropy_aux_loss = commit_loss = torch.zeros(())
            aux_loss = entropy_aux_loss * self.entropy_loss_weight + commit_loss * self.commitment_loss_weight
            return self.project_out(x), indices, aux_loss

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 5))
            self.fsq = FSQ(list(levels), dim=5)
            self.lfq = LFQ(5, lfq_codebook_size, inv_temperature=10.)  # 100 (the default) amplifies float32 rounding
            self.dec = nn.Sequential(nn.Linear(10, 16), nn.SiLU(), nn.Linear(16, 6))

        def forward(self, x):
            z = self.enc(x)
            q1, i1 = self.fsq(z)
            q2, i2, aux = self.lfq(z)
            return self.dec(torch.cat([q1, q2], -1)), i1, i2, aux

    return Model()


def fsq_lfq(m, weights, steps=5):
    torch, F = m.torch, m.F
    model = load(m, make_fsq_lfq(m), weights)
    rng = np.random.default_rng(3)
    data = rng.standard_normal((5, 4, 7, 6)).astype(np.float32)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-2)
    history, indices = [], []
    model.train()
    for step in range(steps):
        x = torch.from_numpy(data[step])
        recon, i1, i2, aux = model(x)
        loss = F.mse_loss(recon, x) + aux
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append([loss.item(), aux.item()])
        indices.append([i1, i2])
    grads = {n: p.grad for n, p in model.named_parameters()}
    fsq = model.fsq
    model.eval()
    with torch.no_grad():
        recon, i1, i2, aux = model(torch.from_numpy(data[0]))
        codes = fsq.indices_to_codes(i1, project_out=False)
    return {"history": history, "indices": indices, "grads": grads, "state": model.state_dict(),
            "implicit_codebook": fsq.implicit_codebook, "codebook_size": fsq.codebook_size,
            "basis": fsq._basis, "codes": codes, "round_trip": fsq.codes_to_indices(codes), "i1": i1,
            "lfq_codes": model.lfq.indices_to_codes(i2), "lfq_codebook": model.lfq.codebook,
            "dtypes": [fsq.implicit_codebook.dtype == torch.float32, i1.dtype == torch.int32,
                       i2.dtype == torch.int64, fsq._basis.dtype == torch.int32]}


def test_fsq_and_lookup_free_quantization():
    weights = weights_of(make_fsq_lfq)
    ours, _ = run_both(fsq_lfq, weights, rtol=1e-4, atol=1e-5)
    assert ours["codebook_size"] == 8 * 5 * 4
    np.testing.assert_array_equal(ours["round_trip"], ours["i1"])
    assert ours["dtypes"] == [True] * 4
    np.testing.assert_array_equal(ours["basis"], [1, 8, 40])
