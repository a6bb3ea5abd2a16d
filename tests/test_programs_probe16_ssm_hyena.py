# ruff: noqa: B007, B010, E731  (the programs are kept as their authors wrote them)
"""Sequence models beyond attention (see tests/pytorch_programs.py), as PyTorch users write them in pure PyTorch,
each run on chainrule and on PyTorch and compared (values and gradients, float32 and float64), and every scan,
parallel or chunkwise form checked against its loop form. Hyena's implicit filter and fftconv against the causal
convolution; torch.func over the kernels (vmap of Hyena's fftconv, jacfwd / jacrev)."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Hyena (HazyResearch/safari, src/models/sequence/hyena.py): an implicit long filter (a complex positional
# embedding exp(-1j f w) split into .real/.imag, an MLP with one shared Sin activation module appended
# several times to nn.Sequential, an exponential decay modulation), fftconv with rfft(k, n=2L) / 2L and
# irfft(norm="forward"), a short depthwise Conv1d (padding=2, sliced back to the length), the order-2
# gating recurrence; parameters registered with their own lr/weight decay (_optim) gathered into AdamW
# groups; and fftconv checked against the direct causal convolution, values and gradients
# ----------------------------------------------------------------------------------------------

HY_V, HY_D, HY_L = 10, 8, 12


def fftconv(m, u, k, D):
    torch = m.torch
    seqlen = u.shape[-1]
    fft_size = 2 * seqlen
    k_f = torch.fft.rfft(k, n=fft_size) / fft_size
    u_f = torch.fft.rfft(u.to(dtype=k.dtype), n=fft_size)
    if len(u.shape) > 3:
        k_f = k_f.unsqueeze(1)
    y = torch.fft.irfft(u_f * k_f, n=fft_size, norm="forward")[..., :seqlen]
    out = y + u * D.unsqueeze(-1)
    return out.to(dtype=u.dtype)


def make_hyena(m):
    torch, nn = m.torch, m.nn

    class OptimModule(nn.Module):
        def register(self, name, tensor, lr=None):
            if lr == 0.0:
                self.register_buffer(name, tensor)
            else:
                self.register_parameter(name, nn.Parameter(tensor))
                optim = {"weight_decay": 0}
                if lr is not None:
                    optim["lr"] = lr
                setattr(getattr(self, name), "_optim", optim)

    class Sin(nn.Module):
        def __init__(self, dim, w=10, train_freq=True):
            super().__init__()
            self.freq = nn.Parameter(w * torch.ones(1, dim)) if train_freq else w * torch.ones(1, dim)

        def forward(self, x):
            return torch.sin(self.freq * x)

    class PositionalEmbedding(OptimModule):
        def __init__(self, emb_dim, seq_len, lr_pos_emb=1e-5):
            super().__init__()
            self.seq_len = seq_len
            t = torch.linspace(0, 1, self.seq_len)[None, :, None]  # 1, L, 1
            bands = (emb_dim - 1) // 2
            t_rescaled = torch.linspace(0, seq_len - 1, seq_len)[None, :, None]
            w = 2 * math.pi * t_rescaled / seq_len  # 1, L, 1
            f = torch.linspace(1e-4, bands - 1, bands)[None, None]
            z = torch.exp(-1j * f * w)
            z = torch.cat([t, z.real, z.imag], dim=-1)
            self.register("z", z, lr=lr_pos_emb)
            self.register("t", t, lr=0.0)

        def forward(self, L):
            return self.z[:, :L], self.t[:, :L]

    class ExponentialModulation(OptimModule):
        def __init__(self, d_model, fast_decay_pct=0.3, slow_decay_pct=1.5, target=1e-2, modulation_lr=0.0,
                     modulate=True, shift=0.0):
            super().__init__()
            self.modulate = modulate
            self.shift = shift
            max_decay = math.log(target) / fast_decay_pct
            min_decay = math.log(target) / slow_decay_pct
            deltas = torch.linspace(min_decay, max_decay, d_model)[None, None]
            self.register("deltas", deltas, lr=modulation_lr)

        def forward(self, t, x):
            if self.modulate:
                decay = torch.exp(-t * self.deltas.abs())
                x = x * (decay + self.shift)
            return x

    class HyenaFilter(OptimModule):
        def __init__(self, d_model, emb_dim=3, order=16, seq_len=1024, lr=1e-3, lr_pos_emb=1e-5, dropout=0.0,
                     w=1, wd=0, bias=True, num_inner_mlps=2):
            super().__init__()
            self.d_model = d_model
            self.bias = nn.Parameter(torch.randn(self.d_model))
            self.dropout = nn.Dropout(dropout)
            act = Sin(dim=order, w=w)
            self.emb_dim = emb_dim
            self.seq_len = seq_len
            self.pos_emb = PositionalEmbedding(emb_dim, seq_len, lr_pos_emb)
            self.implicit_filter = nn.Sequential(nn.Linear(emb_dim, order), act)
            for i in range(num_inner_mlps):
                self.implicit_filter.append(nn.Linear(order, order))
                self.implicit_filter.append(act)
            self.implicit_filter.append(nn.Linear(order, d_model, bias=False))
            self.modulation = ExponentialModulation(d_model)
            for c in self.implicit_filter.children():
                for name, v in c.state_dict().items():
                    optim = {"weight_decay": wd, "lr": lr}
                    setattr(getattr(c, name), "_optim", optim)

        def filter(self, L):
            z, t = self.pos_emb(L)
            h = self.implicit_filter(z)
            h = self.modulation(t, h)
            return h

        def forward(self, x, L, k=None, bias=None):
            if k is None:
                k = self.filter(L)
            k = k[0] if type(k) is tuple else k
            return fftconv(m, x, k, bias)

    class HyenaOperator(nn.Module):
        def __init__(self, d_model, l_max, order=2, filter_order=64, dropout=0.0, filter_dropout=0.0):
            super().__init__()
            self.d_model = d_model
            self.l_max = l_max
            self.order = order
            inner_width = d_model * (order + 1)
            self.dropout = nn.Dropout(dropout)
            self.in_proj = nn.Linear(d_model, inner_width)
            self.out_proj = nn.Linear(d_model, d_model)
            self.short_filter = nn.Conv1d(inner_width, inner_width, 3, padding=2, groups=inner_width)
            self.filter_fn = HyenaFilter(d_model * (order - 1), order=filter_order, seq_len=l_max,
                                         dropout=filter_dropout)

        def forward(self, u):
            l = u.size(-2)
            l_filter = min(l, self.l_max)
            u = self.in_proj(u)
            u = u.transpose(1, 2)  # rearrange(u, 'b l d -> b d l')
            uc = self.short_filter(u)[..., :l_filter]
            *x, v = uc.split(self.d_model, dim=1)
            k = self.filter_fn.filter(l_filter)[0]
            k = k.reshape(l_filter, self.order - 1, self.d_model).permute(1, 2, 0)  # 'l (o d) -> o d l'
            bias = self.filter_fn.bias.reshape(self.order - 1, self.d_model)  # '(o d) -> o d'
            for o, x_i in enumerate(reversed(x[1:])):
                v = self.dropout(v * x_i)
                v = self.filter_fn(v, l_filter, k=k[o], bias=bias[o])
            y = (v * x[0]).transpose(1, 2)  # 'b d l -> b l d'
            return self.out_proj(y)

    class HyenaLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(HY_V, HY_D)
            self.mixer = HyenaOperator(HY_D, l_max=HY_L, order=2, filter_order=16)
            self.norm1 = nn.LayerNorm(HY_D)
            self.mlp = nn.Sequential(nn.Linear(HY_D, 4 * HY_D), nn.GELU(approximate="tanh"),
                                     nn.Linear(4 * HY_D, HY_D))
            self.norm2 = nn.LayerNorm(HY_D)
            self.head = nn.Linear(HY_D, HY_V)

        def forward(self, ids):
            x = self.embedding(ids)
            x = x + self.mixer(self.norm1(x))
            x = x + self.mlp(self.norm2(x))
            return self.head(x)

    return HyenaLM()


def hyena_training(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = make_hyena(m)
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    all_parameters = list(model.parameters())
    params = [p for p in all_parameters if not hasattr(p, "_optim")]
    optimizer = m.optim.AdamW(params, lr=3e-3, weight_decay=0.1)
    hps = [dict(s) for s in sorted(dict.fromkeys(frozenset(p._optim.items()) for p in all_parameters
                                                  if hasattr(p, "_optim")), key=sorted)]
    for hp in hps:
        optimizer.add_param_group({"params": [p for p in all_parameters if getattr(p, "_optim", None) == hp], **hp})
    tokens = torch.tensor(np.random.default_rng(30).integers(0, HY_V, (3, HY_L + 1)))
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, HY_V), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        full = model(tokens[:, :HY_L])
        prefix = model(tokens[:, :6])
    groups = [(g["lr"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]
    n_children = len(list(model.mixer.filter_fn.implicit_filter.children()))
    buffers = sorted(n for n, _ in model.named_buffers())
    return losses, full, prefix, groups, n_children, buffers


def test_hyena_trains_with_its_implicit_filter_groups():
    weights = weights_of(make_hyena)
    assert "mixer.filter_fn.pos_emb.t" in weights and "mixer.filter_fn.modulation.deltas" in weights  # buffers
    (losses, full, prefix, groups, n_children, buffers), _ = run_both(hyena_training, weights, rtol=1e-4,
                                                                      atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(prefix, full[:, :6], rtol=1e-5, atol=1e-6)  # the FFT convolution is causal
    assert n_children == 5  # four Linears and the shared Sin, one child however often it was appended
    # AdamW's own, pos_emb.z's, the filter MLP's (lr 1e-3: 4 linear weights, 3 biases, the Sin frequency)
    assert groups == [(3e-3, 0.1, 18), (1e-5, 0, 1), (1e-3, 0, 8)]
    assert buffers == ["mixer.filter_fn.modulation.deltas", "mixer.filter_fn.pos_emb.t"]


def fftconv_against_direct(m, dtype_name):
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(31)
    b, d, L = 2, 3, 10
    u = torch.tensor(rng.standard_normal((b, d, L)), dtype=dtype, requires_grad=True)
    k = torch.tensor(rng.standard_normal((d, L)), dtype=dtype, requires_grad=True)
    D = torch.tensor(rng.standard_normal(d), dtype=dtype, requires_grad=True)
    y_fft = fftconv(m, u, k, D)
    # y_t = sum_{s <= t} k_{t-s} u_s + D u_t, by flipping the filter into a causal conv1d
    y_direct = m.F.conv1d(m.F.pad(u, (L - 1, 0)), k.flip(-1).unsqueeze(1), groups=d) + u * D.unsqueeze(-1)
    w = torch.tensor(rng.standard_normal((b, d, L)), dtype=dtype)
    return y_fft, y_direct, torch.autograd.grad((y_fft * w).sum(), (u, k, D)), \
        torch.autograd.grad((y_direct * w).sum(), (u, k, D))


@pytest.mark.parametrize("dtype_name, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_hyena_fftconv_is_the_causal_convolution(dtype_name, tol):
    (y_fft, y_direct, g_fft, g_direct), _ = run_both(fftconv_against_direct, dtype_name, rtol=tol, atol=tol)
    assert y_fft.dtype == np.dtype(dtype_name)
    np.testing.assert_allclose(y_fft, y_direct, rtol=tol * 10, atol=tol)
    for a, b in zip(g_fft, g_direct):
        np.testing.assert_allclose(a, b, rtol=tol * 10, atol=tol)


# ----------------------------------------------------------------------------------------------
# torch.func over the kernels: vmap of Hyena's fftconv, jacfwd / jacrev of it and of the S4D kernel
# (forward mode through view_as_complex, complex exp and einsum, .real), a gradient penalty through
# rfft/irfft (create_graph), Hessians of logcumsumexp, cumprod and softplus(beta, threshold) scans, and jvp
# through the mLSTM's stabilised gate matrix (a -inf masked row max)
# ----------------------------------------------------------------------------------------------


def func_transforms_program(m):
    torch, F = m.torch, m.F
    out = {}
    rng = np.random.default_rng(3)
    u = torch.tensor(rng.standard_normal((3, 4, 8)))
    k = torch.tensor(rng.standard_normal((4, 8)))
    D = torch.tensor(rng.standard_normal(4))
    conv = lambda u, k: fftconv(m, u, k, D)
    out["vmap_fft"] = torch.func.vmap(conv, in_dims=(0, None))(u, k)
    out["jacfwd_fft"] = torch.func.jacfwd(conv, argnums=1)(u[:1], k)
    out["jacrev_fft"] = torch.func.jacrev(conv, argnums=1)(u[:1], k)

    def s4d_kernel(log_dt, C_ri, log_A_real, A_imag, L=8):
        dt = torch.exp(log_dt)
        C = torch.view_as_complex(C_ri)
        A = -torch.exp(log_A_real) + 1j * A_imag
        dtA = A * dt.unsqueeze(-1)
        K = dtA.unsqueeze(-1) * torch.arange(L)
        C = C * (torch.exp(dtA) - 1.) / A
        return 2 * torch.einsum("hn, hnl -> hl", C, torch.exp(K)).real

    args = (torch.tensor(rng.standard_normal(4) - 2), torch.tensor(rng.standard_normal((4, 3, 2))),
            torch.tensor(rng.standard_normal((4, 3)) - 1), torch.tensor(rng.standard_normal((4, 3))))
    out["jacfwd_s4d"] = torch.func.jacfwd(s4d_kernel, argnums=(0, 1, 2, 3))(*args)
    out["jacrev_s4d"] = torch.func.jacrev(s4d_kernel, argnums=(0, 1, 2, 3))(*args)
    kk = k.clone().requires_grad_()
    uu = u.clone().requires_grad_()
    y = conv(uu, kk)
    (gu,) = torch.autograd.grad(y.pow(2).sum(), uu, create_graph=True)
    out["double_fft"] = torch.autograd.grad(gu.pow(2).sum(), kk)[0]
    x0 = torch.tensor(rng.standard_normal(6))
    out["hess_lcse"] = torch.autograd.functional.hessian(lambda x: torch.logcumsumexp(x, 0).pow(2).sum(), x0)
    out["hess_cumprod"] = torch.autograd.functional.hessian(lambda x: torch.cumprod(x, 0).sum(), x0)
    out["hess_softplus"] = torch.func.hessian(lambda x: F.softplus(x, beta=2, threshold=1).sum())(x0)

    def mlstm(q, f):
        lf = F.logsigmoid(f).cumsum(-1)
        D = (lf[:, None] - lf[None, :]).masked_fill(~torch.tril(torch.ones(6, 6, dtype=torch.bool)), float("-inf"))
        mx = D.max(-1, keepdim=True).values
        return (torch.exp(D - mx) * q).sum(-1)

    out["jvp_mlstm"] = torch.func.jvp(mlstm, (x0[None], x0), (torch.ones(1, 6, dtype=torch.float64),
                                                              torch.ones(6, dtype=torch.float64)))
    return out


def test_func_transforms_over_the_ssm_kernels():
    ours, _ = run_both(func_transforms_program, rtol=1e-9, atol=1e-11)
    for a, b in zip(ours["jacfwd_s4d"], ours["jacrev_s4d"]):  # forward and reverse mode agree
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["jacfwd_fft"], ours["jacrev_fft"], rtol=1e-10, atol=1e-12)
    h = ours["hess_cumprod"]
    np.testing.assert_allclose(h, h.T, atol=1e-12)
