# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Memory-augmented and set-structured models as their reference PyTorch code writes them, each run as a program on
chainrule and on PyTorch from the same seed (tests/pytorch_programs.py), comparing losses, outputs and gradients
after a few Adam/AdamW steps, with invariants and NumPy checks that hold without PyTorch. Latent bottlenecks over
inputs: Slot Attention (``GRUCell``, softmax over the slots, epsilon-weighted means), a Perceiver's latent
cross-attention with Fourier features, and a Perceiver IO on PyTorch's modules (``nn.MultiheadAttention(kdim=,
vdim=)`` with a key padding mask, a latent ``nn.TransformerEncoder``, a decoder cross-attending from output queries;
AdamW under OneCycleLR, then the fused inference path)."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Slot Attention, Perceiver, Deep Sets
# ----------------------------------------------------------------------------------------------


def slot_attention(m):
    """Slot Attention (Locatello et al. 2020) as lucidrains/slot-attention writes it: slots drawn from a learnt
    Gaussian (mu + exp(logsigma) * randn), dots scaled by d^-0.5, softmax over the slots (dim=1) plus eps,
    weights renormalised over the inputs, ``einsum('bjd,bij->bid')`` updates through a GRUCell and a residual MLP;
    inside an autoencoder with a soft position embedding built from ``torch.meshgrid``, a spatial broadcast
    decoder and an alpha-mask recombination, trained with Adam under warmup and decay."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class SlotAttention(nn.Module):
        def __init__(self, num_slots, dim, iters=3, eps=1e-8, hidden_dim=32):
            super().__init__()
            self.num_slots = num_slots
            self.iters = iters
            self.eps = eps
            self.scale = dim ** -0.5
            self.slots_mu = nn.Parameter(torch.randn(1, 1, dim))
            self.slots_logsigma = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.xavier_uniform_(self.slots_logsigma)
            self.to_q = nn.Linear(dim, dim)
            self.to_k = nn.Linear(dim, dim)
            self.to_v = nn.Linear(dim, dim)
            self.gru = nn.GRUCell(dim, dim)
            hidden_dim = max(dim, hidden_dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, dim))
            self.norm_input = nn.LayerNorm(dim)
            self.norm_slots = nn.LayerNorm(dim)
            self.norm_pre_ff = nn.LayerNorm(dim)

        def forward(self, inputs, num_slots=None):
            b, n, d = inputs.shape
            n_s = num_slots if num_slots is not None else self.num_slots
            mu = self.slots_mu.expand(b, n_s, -1)
            sigma = self.slots_logsigma.exp().expand(b, n_s, -1)
            slots = mu + sigma * torch.randn(mu.shape)
            inputs = self.norm_input(inputs)
            k, v = self.to_k(inputs), self.to_v(inputs)
            for _ in range(self.iters):
                slots_prev = slots
                slots = self.norm_slots(slots)
                q = self.to_q(slots)
                dots = torch.einsum('bid,bjd->bij', q, k) * self.scale
                attn = dots.softmax(dim=1) + self.eps
                attn = attn / attn.sum(dim=-1, keepdim=True)
                updates = torch.einsum('bjd,bij->bid', v, attn)
                slots = self.gru(updates.reshape(-1, d), slots_prev.reshape(-1, d))
                slots = slots.reshape(b, -1, d)
                slots = slots + self.mlp(self.norm_pre_ff(slots))
            return slots, attn

    def build_grid(resolution):
        ranges = [torch.linspace(0.0, 1.0, steps=res) for res in resolution]
        grid = torch.meshgrid(*ranges, indexing="ij")
        grid = torch.stack(grid, dim=-1)
        grid = torch.reshape(grid, [resolution[0], resolution[1], -1])
        grid = grid.unsqueeze(0)
        return torch.cat([grid, 1.0 - grid], dim=-1)

    class SoftPositionEmbed(nn.Module):
        def __init__(self, hidden_size, resolution):
            super().__init__()
            self.embedding = nn.Linear(4, hidden_size, bias=True)
            self.register_buffer("grid", build_grid(resolution))

        def forward(self, inputs):
            return inputs + self.embedding(self.grid)

    class SlotAutoEncoder(nn.Module):
        def __init__(self, resolution=(8, 8), num_slots=3, hid=16):
            super().__init__()
            self.resolution, self.num_slots, self.hid = resolution, num_slots, hid
            self.conv1 = nn.Conv2d(3, hid, 5, padding=2)
            self.conv2 = nn.Conv2d(hid, hid, 5, padding=2)
            self.enc_pos = SoftPositionEmbed(hid, resolution)
            self.dec_pos = SoftPositionEmbed(hid, resolution)
            self.fc1 = nn.Linear(hid, hid)
            self.fc2 = nn.Linear(hid, hid)
            self.deconv = nn.ConvTranspose2d(hid, 4, 3, stride=(1, 1), padding=1)
            self.slot_attention = SlotAttention(num_slots, hid, iters=3, eps=1e-8, hidden_dim=32)

        def forward(self, image):
            x = F.relu(self.conv2(F.relu(self.conv1(image))))
            x = x.permute(0, 2, 3, 1)
            x = self.enc_pos(x)
            x = torch.flatten(x, 1, 2)
            x = nn.LayerNorm(x.shape[1:])(x)
            x = self.fc2(F.relu(self.fc1(x)))
            slots, attn = self.slot_attention(x)
            b = slots.shape[0]
            slots = slots.reshape((-1, slots.shape[-1])).unsqueeze(1).unsqueeze(2)
            slots = slots.repeat((1, self.resolution[0], self.resolution[1], 1))
            x = self.dec_pos(slots).permute(0, 3, 1, 2)
            x = self.deconv(x).permute(0, 2, 3, 1)
            recons, masks = x.reshape(b, -1, x.shape[1], x.shape[2], x.shape[3]).split([3, 1], dim=-1)
            masks = nn.Softmax(dim=1)(masks)
            recon_combined = torch.sum(recons * masks, dim=1).permute(0, 3, 1, 2)
            return recon_combined, recons, masks, attn

    torch.manual_seed(7)
    model = SlotAutoEncoder()
    opt = optim.Adam(model.parameters(), lr=4e-4)
    images = torch.rand(2, 3, 8, 8)
    losses = []
    warmup, decay_rate, decay_steps = 2, 0.5, 10
    for step in range(3):
        lr = 4e-4 * min(1.0, (step + 1) / warmup) * decay_rate ** (step / decay_steps)
        opt.param_groups[0]["lr"] = lr
        recon, recons, masks, attn = model(images)
        loss = F.mse_loss(recon, images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "masks": masks.detach(), "attn": attn.detach(),
            "mu_grad": model.slot_attention.slots_mu.grad, "gru_grad": model.slot_attention.gru.weight_hh.grad,
            "deconv_grad": model.deconv.weight.grad}


def test_slot_attention():
    ours, _ = run_both(slot_attention, rtol=3e-4, atol=1e-6)
    np.testing.assert_allclose(ours["masks"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ours["attn"].sum(-1), 1.0, rtol=1e-5)
    assert ours["attn"].shape == (2, 3, 64)


def perceiver(m):
    """A Perceiver (Jaegle et al. 2021) as lucidrains/perceiver-pytorch writes it: Fourier features of the input
    positions (``torch.linspace`` grids, ``einops``-free ``repeat`` by ``expand``), a learnt latent array
    cross-attending to the data with a mask, latent self-attention blocks with weight sharing, GEGLU feed-forward,
    mean pooling into logits; trained with AdamW."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def fourier_encode(x, max_freq, num_bands=4):
        x = x.unsqueeze(-1)
        dtype, orig_x = x.dtype, x
        scales = torch.linspace(1., max_freq / 2, num_bands, dtype=dtype)
        scales = scales[(*((None,) * (len(x.shape) - 1)), Ellipsis)]
        x = x * scales * math.pi
        x = torch.cat([x.sin(), x.cos()], dim=-1)
        return torch.cat((x, orig_x), dim=-1)

    class PreNorm(nn.Module):
        def __init__(self, dim, fn, context_dim=None):
            super().__init__()
            self.fn = fn
            self.norm = nn.LayerNorm(dim)
            self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

        def forward(self, x, **kwargs):
            x = self.norm(x)
            if self.norm_context is not None:
                kwargs.update(context=self.norm_context(kwargs["context"]))
            return self.fn(x, **kwargs)

    class GEGLU(nn.Module):
        def forward(self, x):
            x, gates = x.chunk(2, dim=-1)
            return x * F.gelu(gates)

    class FeedForward(nn.Module):
        def __init__(self, dim, mult=2):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim, dim * mult * 2), GEGLU(), nn.Linear(dim * mult, dim))

        def forward(self, x):
            return self.net(x)

    class Attention(nn.Module):
        def __init__(self, query_dim, context_dim=None, heads=2, dim_head=8):
            super().__init__()
            inner_dim = dim_head * heads
            context_dim = context_dim if context_dim is not None else query_dim
            self.scale = dim_head ** -0.5
            self.heads = heads
            self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
            self.to_kv = nn.Linear(context_dim, inner_dim * 2, bias=False)
            self.to_out = nn.Linear(inner_dim, query_dim)

        def forward(self, x, context=None, mask=None):
            h = self.heads
            q = self.to_q(x)
            context = context if context is not None else x
            k, v = self.to_kv(context).chunk(2, dim=-1)
            q, k, v = (t.reshape(t.shape[0], t.shape[1], h, -1).permute(0, 2, 1, 3).reshape(t.shape[0] * h, t.shape[1], -1)
                       for t in (q, k, v))
            sim = torch.einsum('b i d, b j d -> b i j', q, k) * self.scale
            if mask is not None:
                mask = mask.reshape(mask.shape[0], -1)
                max_neg_value = -torch.finfo(sim.dtype).max
                mask = mask[:, None, :].repeat_interleave(h, dim=0)
                sim.masked_fill_(~mask, max_neg_value)
            attn = sim.softmax(dim=-1)
            out = torch.einsum('b i j, b j d -> b i d', attn, v)
            out = out.reshape(-1, h, out.shape[1], out.shape[2]).permute(0, 2, 1, 3).flatten(2)
            return self.to_out(out)

    class Perceiver(nn.Module):
        def __init__(self, input_channels=3, num_latents=6, latent_dim=16, depth=2, num_classes=4, max_freq=5.,
                     num_freq_bands=4):
            super().__init__()
            self.max_freq, self.num_freq_bands = max_freq, num_freq_bands
            input_dim = 2 * (num_freq_bands * 2 + 1) + input_channels
            self.latents = nn.Parameter(torch.randn(num_latents, latent_dim))
            self.cross_attn = PreNorm(latent_dim, Attention(latent_dim, input_dim, heads=1, dim_head=16),
                                      context_dim=input_dim)
            self.cross_ff = PreNorm(latent_dim, FeedForward(latent_dim))
            self.latent_attn = PreNorm(latent_dim, Attention(latent_dim))
            self.latent_ff = PreNorm(latent_dim, FeedForward(latent_dim))
            self.depth = depth
            self.to_logits = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, num_classes))

        def forward(self, data, mask=None):
            b, *axis, _ = data.shape
            axis_pos = [torch.linspace(-1., 1., steps=size) for size in axis]
            pos = torch.stack(torch.meshgrid(*axis_pos, indexing="ij"), dim=-1)
            enc_pos = fourier_encode(pos, self.max_freq, self.num_freq_bands)
            enc_pos = enc_pos.reshape(*enc_pos.shape[:-2], -1)
            enc_pos = enc_pos.unsqueeze(0).expand(b, *enc_pos.shape)
            data = torch.cat((data, enc_pos), dim=-1)
            data = data.reshape(b, -1, data.shape[-1])
            x = self.latents.unsqueeze(0).expand(b, -1, -1)
            for _ in range(self.depth):  # weights tied across depth
                x = self.cross_attn(x, context=data, mask=mask) + x
                x = self.cross_ff(x) + x
                x = self.latent_attn(x) + x
                x = self.latent_ff(x) + x
            return self.to_logits(x.mean(dim=-2))

    torch.manual_seed(8)
    model = Perceiver()
    opt = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    img = torch.randn(3, 5, 4, 3)
    mask = torch.ones(3, 5, 4, dtype=torch.bool)
    mask[0, 3:] = False
    labels = torch.tensor([1, 3, 0])
    losses = []
    for step in range(4):
        loss = F.cross_entropy(model(img, mask), labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) if hasattr(torch, "nn") else nn.utils.clip_grad_norm_(
            model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "latent_grad": model.latents.grad, "kv_grad": model.cross_attn.fn.to_kv.weight.grad,
            "logits": model(img, mask).detach()}


def test_perceiver():
    ours, _ = run_both(perceiver, rtol=2e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# Perceiver IO on nn modules, the Neural Statistician, Hopfield fixed points through torch.func
# ----------------------------------------------------------------------------------------------


def perceiver_io(m):
    """A Perceiver IO (Jaegle et al. 2021) on PyTorch's modules: the encoder's cross-attention from the latent array
    to the inputs by ``nn.MultiheadAttention(kdim=, vdim=)`` with a key padding mask, a latent
    ``nn.TransformerEncoder`` (pre-norm, GELU), a decoder cross-attending from output queries (a learnt array plus
    query features) to the latents; trained with AdamW under OneCycleLR, then evaluated (the fused inference path of
    the latent encoder)."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class PerceiverIO(nn.Module):
        def __init__(self, in_dim=5, latent_dim=16, num_latents=4, query_dim=3, out_dim=2):
            super().__init__()
            self.latents = nn.Parameter(torch.randn(num_latents, latent_dim) * 0.02)
            self.encode = nn.MultiheadAttention(latent_dim, 2, kdim=in_dim, vdim=in_dim, batch_first=True)
            self.encode_norm = nn.LayerNorm(latent_dim)
            layer = nn.TransformerEncoderLayer(latent_dim, 2, 32, dropout=0.1, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.process = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.query_embed = nn.Linear(query_dim, latent_dim)
            self.decode = nn.MultiheadAttention(latent_dim, 2, batch_first=True)
            self.head = nn.Linear(latent_dim, out_dim)

        def forward(self, inputs, input_mask, queries):
            b = inputs.size(0)
            latents = self.latents.unsqueeze(0).expand(b, -1, -1)
            z, _ = self.encode(latents, inputs, inputs, key_padding_mask=input_mask)
            z = self.encode_norm(z + latents)
            z = self.process(z)
            q = self.query_embed(queries)
            out, weights = self.decode(q, z, z)
            return self.head(out + q), weights

    torch.manual_seed(13)
    model = PerceiverIO()
    inputs = torch.randn(3, 7, 5)
    input_mask = torch.zeros(3, 7, dtype=torch.bool)
    input_mask[0, 5:] = True
    input_mask[2, 2:] = True
    queries = torch.rand(3, 6, 3)
    target = torch.stack([queries.sum(-1), queries.prod(-1)], -1)
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=5)
    losses, lrs = [], []
    for step in range(5):
        pred, _ = model(inputs, input_mask, queries)
        loss = F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(sched.get_last_lr()[0])
    model.eval()
    with torch.no_grad():
        pred, weights = model(inputs, input_mask, queries)
    return {"losses": losses, "lrs": lrs, "pred": pred, "weights": weights, "latent_grad": model.latents.grad,
            "k_grad": model.encode.k_proj_weight.grad, "v_grad": model.encode.v_proj_weight.grad}


def test_perceiver_io():
    ours, _ = run_both(perceiver_io, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(ours["weights"].sum(-1), 1.0, rtol=1e-5)
    assert ours["weights"].shape == (3, 6, 4)
    assert ours["lrs"][-1] < ours["lrs"][1]
