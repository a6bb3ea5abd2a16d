# ruff: noqa: E501, F841  (the programs are kept as their authors wrote them)
"""Recent and unusual architectures (see tests/pytorch_programs.py) as their reference implementations write them,
each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.
Memories and attention: modern Hopfield retrieval and a Hopfield layer; a Perceiver (Fourier position features,
cross-attention from latents to a large input, a latent transformer); NTM addressing and the DNC's usage-based
allocation and temporal links; the memory these architectures share (a NumPy pool seen through ``from_numpy``, a grid
expanded then made contiguous, q/k/v unbound from one tensor, gates chunked from one projection, ``.data`` of a
parameter)."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Modern Hopfield networks: retrieval xi <- X softmax(beta X^T xi), a Hopfield layer
# ----------------------------------------------------------------------------------------------


def hopfield(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    d, N = 16, 8
    X = torch.sign(torch.randn(d, N))  # stored patterns as columns
    xi = X[:, 3].clone()
    xi[: d // 2] = -xi[: d // 2] * 0 + torch.randn(d // 2)  # half the pattern corrupted
    beta = 4.0
    for _ in range(3):
        xi = X @ torch.softmax(beta * X.T @ xi, dim=0)
    energy = -torch.logsumexp(beta * X.T @ xi, 0) / beta + 0.5 * xi @ xi

    class HopfieldLayer(nn.Module):
        def __init__(self, d_in, d_hidden, n_patterns, beta=None, update_steps=1):
            super().__init__()
            self.W_q = nn.Linear(d_in, d_hidden, bias=False)
            self.W_k = nn.Linear(d_in, d_hidden, bias=False)
            self.W_v = nn.Linear(d_in, d_hidden, bias=False)
            self.beta = beta if beta is not None else 1.0 / math.sqrt(d_hidden)
            self.update_steps = update_steps
            self.norm = nn.LayerNorm(d_hidden)

        def forward(self, R, Y):
            Q = self.W_q(R)
            K = self.W_k(Y)
            V = self.W_v(Y)
            for _ in range(self.update_steps):
                A = F.softmax(self.beta * torch.einsum("bqd,bkd->bqk", Q, K), dim=-1)
                Q = torch.bmm(A, K)
            return self.norm(torch.bmm(A, V)), A

    layer = HopfieldLayer(6, 8, 5, update_steps=2)
    R = torch.randn(2, 3, 6, requires_grad=True)
    Y = torch.randn(2, 5, 6)
    out, A = layer(R, Y)
    loss = out.pow(2).mean() + A.max(dim=-1).values.mean()
    loss.backward()
    return {"xi": xi, "energy": energy, "out": out, "A": A, "gR": R.grad,
            "gq": layer.W_q.weight.grad, "gk": layer.W_k.weight.grad}


def test_modern_hopfield_retrieval_and_layer():
    ours, _ = run_both(hopfield, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["A"].sum(-1), 1.0, rtol=1e-5)
    assert ours["xi"].shape == (16,)


# ----------------------------------------------------------------------------------------------
# Perceiver: Fourier position features, cross-attention from latents to a large input, a latent transformer
# ----------------------------------------------------------------------------------------------


def perceiver(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def fourier_encode(x, max_freq, num_bands=4):
        x = x.unsqueeze(-1)
        dtype, orig_x = x.dtype, x
        scales = torch.linspace(1., max_freq / 2, num_bands, dtype=dtype)
        scales = scales[(*((None,) * (len(x.shape) - 1)), Ellipsis)]
        x = x * scales * math.pi
        x = torch.cat([x.sin(), x.cos()], dim=-1)
        x = torch.cat((x, orig_x), dim=-1)
        return x

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
            b = q.shape[0]
            q, k, v = map(lambda t: t.reshape(b, t.shape[1], h, -1).permute(0, 2, 1, 3).reshape(b * h, t.shape[1], -1), (q, k, v))
            sim = torch.einsum("b i d, b j d -> b i j", q, k) * self.scale
            if mask is not None:
                mask = mask.reshape(b, -1)
                max_neg_value = -torch.finfo(sim.dtype).max
                mask = mask[:, None, :].repeat_interleave(h, dim=0)
                sim.masked_fill_(~mask, max_neg_value)
            attn = sim.softmax(dim=-1)
            out = torch.einsum("b i j, b j d -> b i d", attn, v)
            n = out.shape[1]
            out = out.reshape(b, h, n, -1).permute(0, 2, 1, 3).reshape(b, n, -1)
            return self.to_out(out)

    class Perceiver(nn.Module):
        def __init__(self, input_channels=3, num_latents=6, latent_dim=16, num_classes=4, depth=2, max_freq=5., num_bands=3):
            super().__init__()
            self.max_freq, self.num_bands = max_freq, num_bands
            input_dim = 2 * (num_bands * 2 + 1) + input_channels
            self.latents = nn.Parameter(torch.randn(num_latents, latent_dim))
            self.cross_attn = PreNorm(latent_dim, Attention(latent_dim, input_dim, heads=1, dim_head=16), context_dim=input_dim)
            self.cross_ff = PreNorm(latent_dim, nn.Sequential(nn.Linear(latent_dim, latent_dim * 4 * 2), GEGLU(), nn.Linear(latent_dim * 4, latent_dim)))
            self.layers = nn.ModuleList([nn.ModuleList([PreNorm(latent_dim, Attention(latent_dim)),
                                                        PreNorm(latent_dim, nn.Sequential(nn.Linear(latent_dim, 32), GEGLU(), nn.Linear(16, latent_dim)))])
                                         for _ in range(depth)])
            self.to_logits = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, num_classes))

        def forward(self, data, mask=None):
            b, *axis, _ = data.shape
            axis_pos = list(map(lambda size: torch.linspace(-1., 1., steps=size), axis))
            pos = torch.stack(torch.meshgrid(*axis_pos, indexing="ij"), dim=-1)
            enc_pos = fourier_encode(pos, self.max_freq, self.num_bands)
            enc_pos = enc_pos.reshape(*enc_pos.shape[:-2], -1)
            enc_pos = enc_pos.unsqueeze(0).expand(b, *enc_pos.shape)
            data = torch.cat((data, enc_pos), dim=-1)
            data = data.flatten(1, -2)
            x = self.latents.unsqueeze(0).expand(b, -1, -1)
            x = self.cross_attn(x, context=data, mask=mask) + x
            x = self.cross_ff(x) + x
            for self_attn, self_ff in self.layers:
                x = self_attn(x) + x
                x = self_ff(x) + x
            return self.to_logits(x.mean(dim=-2))

    model = Perceiver()
    img = torch.randn(2, 5, 4, 3)
    mask = torch.ones(2, 5, 4, dtype=torch.bool)
    mask[1, :, 2:] = False
    logits = model(img, mask=mask)
    loss = F.cross_entropy(logits, torch.tensor([1, 3]))
    loss.backward()
    # a masked input position does not reach the logits of its example
    img2 = img.clone()
    img2[1, :, 2:] += 10
    with torch.no_grad():
        logits2 = model(img2, mask=mask)
    return {"logits": logits, "logits2": logits2, "g_lat": model.latents.grad,
            "g_q": model.cross_attn.fn.to_q.weight.grad, "g_kv": model.cross_attn.fn.to_kv.weight.grad}


def test_perceiver_cross_attention_to_latents():
    ours, _ = run_both(perceiver, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["logits"][1], ours["logits2"][1], rtol=1e-5, atol=1e-6)
    assert np.abs(ours["g_kv"]).max() > 0


# ----------------------------------------------------------------------------------------------
# Neural Turing Machine addressing and the DNC's usage-based allocation and temporal links
# ----------------------------------------------------------------------------------------------


def ntm_dnc(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def _convolve(w, s):
        assert s.size(0) == 3
        t = torch.cat([w[-1:], w, w[:1]])
        c = F.conv1d(t.view(1, 1, -1), s.view(1, 1, -1)).view(-1)
        return c

    class NTMMemory(nn.Module):
        def __init__(self, N, M):
            super().__init__()
            self.N, self.M = N, M
            self.register_buffer("mem_bias", torch.Tensor(N, M))
            stdev = 1 / (np.sqrt(N + M))
            nn.init.uniform_(self.mem_bias, -stdev, stdev)

        def reset(self, batch_size):
            self.batch_size = batch_size
            self.memory = self.mem_bias.clone().repeat(batch_size, 1, 1)

        def read(self, w):
            return torch.matmul(w.unsqueeze(1), self.memory).squeeze(1)

        def write(self, w, e, a):
            self.prev_mem = self.memory
            self.memory = torch.Tensor(self.batch_size, self.N, self.M)
            erase = torch.matmul(w.unsqueeze(-1), e.unsqueeze(1))
            add = torch.matmul(w.unsqueeze(-1), a.unsqueeze(1))
            self.memory = self.prev_mem * (1 - erase) + add

        def address(self, k, β, g, s, γ, w_prev):
            wc = self._similarity(k, β)
            wg = self._interpolate(w_prev, wc, g)
            ŵ = self._shift(wg, s)
            w = self._sharpen(ŵ, γ)
            return w

        def _similarity(self, k, β):
            k = k.view(self.batch_size, 1, -1)
            w = F.softmax(β * F.cosine_similarity(self.memory + 1e-16, k + 1e-16, dim=-1), dim=1)
            return w

        def _interpolate(self, w_prev, wc, g):
            return g * wc + (1 - g) * w_prev

        def _shift(self, wg, s):
            result = torch.zeros(wg.size())
            for b in range(self.batch_size):
                result[b] = _convolve(wg[b], s[b])
            return result

        def _sharpen(self, ŵ, γ):
            w = ŵ ** γ
            w = torch.div(w, torch.sum(w, dim=1).view(-1, 1) + 1e-16)
            return w

    mem = NTMMemory(6, 4)
    mem.reset(2)
    head = nn.Linear(5, 4 + 1 + 1 + 3 + 1 + 4 + 4)
    x = torch.randn(2, 5)
    o = head(x)
    k, β, g, s, γ, e, a = torch.split(o, [4, 1, 1, 3, 1, 4, 4], dim=1)
    k = k.clone()
    β = F.softplus(β)
    g = F.sigmoid(g)
    s = F.softmax(s, dim=1)
    γ = 1 + F.softplus(γ)
    e = F.sigmoid(e)
    w_prev = torch.zeros(2, 6)
    w_prev[:, 0] = 1
    w = mem.address(k, β, g, s, γ, w_prev)
    mem.write(w, e, a)
    r = mem.read(w)
    # the same circular shift through F.pad(mode="circular") on the whole batch
    wg = g * mem._similarity(k, β) if False else None
    w_alt = F.conv1d(F.pad(w.unsqueeze(0), (1, 1), mode="circular"), s.unsqueeze(1), groups=2).squeeze(0)

    # DNC: allocation weighting from sorted usage, temporal link matrix and forward/backward weightings
    def allocation(usage, eps=1e-6):
        usage = eps + (1 - eps) * usage
        sorted_usage, phi = torch.topk(usage, usage.size(-1), dim=-1, largest=False)
        one = torch.ones(usage.size(0), 1)
        sorted_prod = torch.cumprod(torch.cat((one, sorted_usage), dim=-1), dim=-1)[:, :-1]
        sorted_alloc = (1 - sorted_usage) * sorted_prod
        _, phi_inv = torch.sort(phi, dim=-1)
        return sorted_alloc.gather(-1, phi_inv)

    usage = torch.rand(2, 6, requires_grad=True)
    alloc = allocation(usage)
    ww = F.softmax(torch.randn(2, 6), -1)
    L = torch.zeros(2, 6, 6)
    prec = torch.zeros(2, 6)
    for _ in range(2):
        L = (1 - ww.unsqueeze(2) - ww.unsqueeze(1)) * L + ww.unsqueeze(2) * prec.unsqueeze(1)
        L = L * (1 - torch.eye(6).unsqueeze(0))
        prec = (1 - ww.sum(-1, keepdim=True)) * prec + ww
    rw = F.softmax(torch.randn(2, 6), -1)
    fwd = torch.bmm(L, rw.unsqueeze(2)).squeeze(2)
    bwd = torch.bmm(L.transpose(1, 2), rw.unsqueeze(2)).squeeze(2)
    loss = r.pow(2).sum() + mem.memory.sum() + (alloc * torch.arange(6.)).sum()
    loss.backward()
    return {"w": w, "w_alt": w_alt, "r": r, "mem": mem.memory, "g_head": head.weight.grad, "alloc": alloc,
            "g_usage": usage.grad, "fwd": fwd, "bwd": bwd}


def test_ntm_addressing_and_dnc_allocation():
    ours, _ = run_both(ntm_dnc, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["w"].sum(-1), 1.0, rtol=1e-5)
    w, s = ours["w"], None
    np.testing.assert_allclose(ours["alloc"].sum(-1) <= 1 + 1e-6, True)
    assert ours["w_alt"].shape == (2, 6)


# ----------------------------------------------------------------------------------------------
# Memory the architectures above share: a NumPy pool seen through from_numpy, a grid expanded then made
# contiguous, q/k/v unbound from one tensor, the gates chunked from one projection, .data of a parameter
# ----------------------------------------------------------------------------------------------


def shared_memory(m):
    torch, nn, F = m.torch, m.nn, m.F
    pool = np.zeros((3, 2), np.float32)
    seen = torch.from_numpy(pool)
    seen[1] += 2  # writes into the pool
    grid = torch.linspace(-1, 1, 4).expand(3, -1)
    expanded_shares = grid.stride() == (0, 1)
    dense = grid.contiguous()
    dense[0, 0] = 9.0  # a copy: the linspace is untouched
    qkv = torch.zeros(3, 2, 4)
    q, k, v = qkv.unbind(0)
    k.add_(1)
    gates = torch.zeros(2, 6)
    i, f, o = gates.chunk(3, dim=-1)
    f.fill_(5)
    lin = nn.Linear(2, 2)
    lin.weight.data.zero_()
    arr = qkv.numpy()
    arr[2] = 7
    return {"pool": pool, "expanded_shares": expanded_shares, "grid": grid, "qkv": qkv, "gates": gates,
            "w": lin.weight, "v": v}


def test_memory_shared_as_pytorch_shares_it():
    ours, _ = run_both(shared_memory)
    assert ours["pool"].tolist() == [[0, 0], [2, 2], [0, 0]]
    assert ours["expanded_shares"] is True and ours["grid"][0, 0] == -1
    assert ours["qkv"][1].min() == 1 and ours["qkv"][2].min() == 7 and ours["v"].min() == 7
    assert ours["gates"][:, 2:4].min() == 5 and ours["gates"][:, :2].max() == 0
    assert not ours["w"].any()
