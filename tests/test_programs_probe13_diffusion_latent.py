"""Diffusion models, flows, score matching and flow matching, run as tests/probe13_diffusion_common.py says. Latent
diffusion's pieces: a VQ-VAE with an EMA codebook (straight-through estimator, ``scatter_``, ``bincount``,
``index_add_``, ``one_hot``); latent diffusion's spatial transformer as diffusers writes it: cross-attention scores
by ``baddbmm`` of an empty tensor with beta=0, an additive padding mask repeated per head, GEGLU."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

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
