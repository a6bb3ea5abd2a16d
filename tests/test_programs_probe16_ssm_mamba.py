# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Sequence models beyond attention (see tests/pytorch_programs.py), as PyTorch users write them in pure PyTorch,
each run on chainrule and on PyTorch and compared (values and gradients, float32 and float64), and every scan,
parallel or chunkwise form checked against its loop form. Mamba's selective scan three ways (mamba.py's Blelloch
pscan as an autograd.Function working in place on views of a transposed clone, and the log-space cumsum / segsum
form); mamba_ssm's selective_scan_ref with real and complex A (view_as_complex of interleaved B and C) in float32 and
float16, and the Mamba block's own initialisation (inverse-softplus dt bias, _no_weight_decay groups, out_proj
rescaled in place); decays by cumprod with hard resets, as quick ports write them."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Mamba's selective scan three ways (mamba.py): the step-by-step loop, the Blelloch parallel scan as a
# torch.autograd.Function that works in place on views of a transposed clone (view that splits the length
# of a non-contiguous tensor, add_/mul_ on strided slices) with its own reverse-scan backward, and the
# log-space form by cumsum of log-decays (exp of segment sums under a tril mask, einsum); values and
# gradients of all three, in float32 and float64
# ----------------------------------------------------------------------------------------------


def make_pscan(m):
    torch, F = m.torch, m.F

    def npo2(len):
        return 2 ** math.ceil(math.log2(len))

    def pad_npo2(X):
        len_npo2 = npo2(X.size(1))
        pad_tuple = (0, 0, 0, 0, 0, len_npo2 - X.size(1))
        return F.pad(X, pad_tuple, "constant", 0)

    class PScan(torch.autograd.Function):
        @staticmethod
        def pscan(A, X):
            B, D, L, _ = A.size()
            num_steps = int(math.log2(L))
            Aa = A
            Xa = X
            for _ in range(num_steps - 2):
                T = Xa.size(2)
                Aa = Aa.view(B, D, T // 2, 2, -1)
                Xa = Xa.view(B, D, T // 2, 2, -1)
                Xa[:, :, :, 1].add_(Aa[:, :, :, 1].mul(Xa[:, :, :, 0]))
                Aa[:, :, :, 1].mul_(Aa[:, :, :, 0])
                Aa = Aa[:, :, :, 1]
                Xa = Xa[:, :, :, 1]
            if Xa.size(2) == 4:
                Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 0]))
                Aa[:, :, 1].mul_(Aa[:, :, 0])
                Xa[:, :, 3].add_(Aa[:, :, 3].mul(Xa[:, :, 2] + Aa[:, :, 2].mul(Xa[:, :, 1])))
            elif Xa.size(2) == 2:
                Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 0]))
                return
            else:
                return
            Aa = A[:, :, 2 ** (num_steps - 2) - 1:L:2 ** (num_steps - 2)]
            Xa = X[:, :, 2 ** (num_steps - 2) - 1:L:2 ** (num_steps - 2)]
            Xa[:, :, 2].add_(Aa[:, :, 2].mul(Xa[:, :, 1]))
            Aa[:, :, 2].mul_(Aa[:, :, 1])
            for k in range(num_steps - 3, -1, -1):
                Aa = A[:, :, 2 ** k - 1:L:2 ** k]
                Xa = X[:, :, 2 ** k - 1:L:2 ** k]
                T = Xa.size(2)
                Aa = Aa.view(B, D, T // 2, 2, -1)
                Xa = Xa.view(B, D, T // 2, 2, -1)
                Xa[:, :, 1:, 0].add_(Aa[:, :, 1:, 0].mul(Xa[:, :, :-1, 1]))
                Aa[:, :, 1:, 0].mul_(Aa[:, :, :-1, 1])

        @staticmethod
        def pscan_rev(A, X):
            B, D, L, _ = A.size()
            num_steps = int(math.log2(L))
            Aa = A
            Xa = X
            for _ in range(num_steps - 2):
                T = Xa.size(2)
                Aa = Aa.view(B, D, T // 2, 2, -1)
                Xa = Xa.view(B, D, T // 2, 2, -1)
                Xa[:, :, :, 0].add_(Aa[:, :, :, 0].mul(Xa[:, :, :, 1]))
                Aa[:, :, :, 0].mul_(Aa[:, :, :, 1])
                Aa = Aa[:, :, :, 0]
                Xa = Xa[:, :, :, 0]
            if Xa.size(2) == 4:
                Xa[:, :, 2].add_(Aa[:, :, 2].mul(Xa[:, :, 3]))
                Aa[:, :, 2].mul_(Aa[:, :, 3])
                Xa[:, :, 0].add_(Aa[:, :, 0].mul(Xa[:, :, 1].add(Aa[:, :, 1].mul(Xa[:, :, 2]))))
            elif Xa.size(2) == 2:
                Xa[:, :, 0].add_(Aa[:, :, 0].mul(Xa[:, :, 1]))
                return
            else:
                return
            Aa = A[:, :, 0:L:2 ** (num_steps - 2)]
            Xa = X[:, :, 0:L:2 ** (num_steps - 2)]
            Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 2]))
            Aa[:, :, 1].mul_(Aa[:, :, 2])
            for k in range(num_steps - 3, -1, -1):
                Aa = A[:, :, 0:L:2 ** k]
                Xa = X[:, :, 0:L:2 ** k]
                T = Xa.size(2)
                Aa = Aa.view(B, D, T // 2, 2, -1)
                Xa = Xa.view(B, D, T // 2, 2, -1)
                Xa[:, :, :-1, 1].add_(Aa[:, :, :-1, 1].mul(Xa[:, :, 1:, 0]))
                Aa[:, :, :-1, 1].mul_(Aa[:, :, 1:, 0])

        @staticmethod
        def forward(ctx, A_in, X_in):
            L = X_in.size(1)
            if L == npo2(L):  # cloning is required because of the in-place ops
                A = A_in.clone()
                X = X_in.clone()
            else:
                A = pad_npo2(A_in)
                X = pad_npo2(X_in)
            A = A.transpose(2, 1)
            X = X.transpose(2, 1)
            PScan.pscan(A, X)
            ctx.save_for_backward(A_in, X)
            return X.transpose(2, 1)[:, :L]

        @staticmethod
        def backward(ctx, grad_output_in):
            A_in, X = ctx.saved_tensors
            L = grad_output_in.size(1)
            if L == npo2(L):
                grad_output = grad_output_in.clone()
            else:
                grad_output = pad_npo2(grad_output_in)
                A_in = pad_npo2(A_in)
            grad_output = grad_output.transpose(2, 1)
            A_in = A_in.transpose(2, 1)
            A = F.pad(A_in[:, :, 1:], (0, 0, 0, 1))  # shift one to the left
            PScan.pscan_rev(A, grad_output)
            Q = torch.zeros_like(X)
            Q[:, :, 1:].add_(X[:, :, :-1] * grad_output[:, :, 1:])
            return Q.transpose(2, 1)[:, :L], grad_output.transpose(2, 1)[:, :L]

    return PScan.apply


def selective_scan_three_ways(m, dtype_name, L):
    torch, F = m.torch, m.F
    dtype = getattr(torch, dtype_name)
    pscan = make_pscan(m)
    rng = np.random.default_rng(5)
    b, d, n = 2, 3, 4
    x = torch.tensor(rng.standard_normal((b, L, d)), dtype=dtype, requires_grad=True)
    delta_raw = torch.tensor(rng.standard_normal((b, L, d)), dtype=dtype, requires_grad=True)
    A_log = torch.tensor(np.log(np.tile(np.arange(1, n + 1), (d, 1)) * 0.3), dtype=dtype, requires_grad=True)
    Bm = torch.tensor(rng.standard_normal((b, L, n)), dtype=dtype, requires_grad=True)
    Cm = torch.tensor(rng.standard_normal((b, L, n)), dtype=dtype, requires_grad=True)
    leaves = (x, delta_raw, A_log, Bm, Cm)

    def inputs():
        delta = F.softplus(delta_raw)
        A = -torch.exp(A_log)
        deltaA = torch.exp(delta.unsqueeze(-1) * A)  # (b, l, d, n)
        BX = delta.unsqueeze(-1) * Bm.unsqueeze(2) * x.unsqueeze(-1)  # (b, l, d, n)
        return delta, A, deltaA, BX

    def readout(hs):
        return (hs @ Cm.unsqueeze(-1)).squeeze(3)  # (b, l, d, n) @ (b, l, n, 1) -> (b, l, d)

    # 1. sequential
    delta, A, deltaA, BX = inputs()
    h = torch.zeros(b, d, n, dtype=dtype)
    hs = []
    for t in range(L):
        h = deltaA[:, t] * h + BX[:, t]
        hs.append(h)
    y_seq = readout(torch.stack(hs, dim=1))
    # 2. Blelloch parallel scan
    delta, A, deltaA, BX = inputs()
    y_par = readout(pscan(deltaA, BX))
    # 3. log space: h_t = sum_{s<=t} exp(sum_{s<r<=t} delta_r A) BX_s
    delta, A, deltaA, BX = inputs()
    logdecay = (delta.unsqueeze(-1) * A).permute(0, 2, 3, 1)  # (b, d, n, l)
    cum = torch.cumsum(logdecay, dim=-1)
    seg = cum[..., :, None] - cum[..., None, :]  # (b, d, n, t, s)
    mask = torch.tril(torch.ones(L, L, dtype=torch.bool))
    weights = torch.exp(seg.masked_fill(~mask, -float("inf")))
    hs_log = torch.einsum("bdnts,bsdn->btdn", weights, BX)
    y_log = readout(hs_log)

    w = torch.tensor(rng.standard_normal((b, L, d)), dtype=dtype)
    grads = [torch.autograd.grad((y * w).sum(), leaves) for y in (y_seq, y_par, y_log)]
    return [y_seq, y_par, y_log], grads


@pytest.mark.parametrize("L", [8, 11])
@pytest.mark.parametrize("dtype_name, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_mamba_selective_scan_loop_parallel_and_log_space(dtype_name, tol, L):
    (ys, grads), _ = run_both(selective_scan_three_ways, dtype_name, L, rtol=tol * 10, atol=tol)
    for y in ys[1:]:
        np.testing.assert_allclose(y, ys[0], rtol=tol * 10, atol=tol)
    for gs in grads[1:]:
        for a, b in zip(gs, grads[0]):
            np.testing.assert_allclose(a, b, rtol=tol * 100, atol=tol * 10)


# ----------------------------------------------------------------------------------------------
# mamba_ssm's reference selective scan (ops/selective_scan_interface.py, selective_scan_ref) with real and
# complex A (B and C read as complex by view_as_complex of a (L two) rearrangement, A.new_zeros of a complex
# state, einsum of real and complex operands, y.real * 2), delta_bias and delta_softplus, z gating and
# float16 inputs cast in and out; and the Mamba block's own initialisation (dt drawn log-uniformly, clamped,
# put through the inverse softplus dt + log(-expm1(-dt)) into dt_proj.bias under no_grad, _no_reinit and
# _no_weight_decay flags, out_proj rescaled in place by 1/sqrt(n_layer) in _init_weights) trained a few
# steps with AdamW's weight-decay groups built from the flags
# ----------------------------------------------------------------------------------------------


def selective_scan_ref(m, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    torch, F = m.torch, m.F
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    is_variable_B = B.dim() >= 3
    is_variable_C = C.dim() >= 3
    if A.is_complex():
        if is_variable_B:  # rearrange(B.float(), "... (L two) -> ... L two", two=2)
            B = torch.view_as_complex(B.float().reshape(*B.shape[:-1], -1, 2))
        if is_variable_C:
            C = torch.view_as_complex(C.float().reshape(*C.shape[:-1], -1, 2))
    else:
        B = B.float()
        C = C.float()
    x = A.new_zeros((batch, dim, dstate))
    ys = []
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    if not is_variable_B:
        deltaB_u = torch.einsum("bdl,dn,bdl->bdln", delta, B, u)
    else:
        deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    last_state = None
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        if not is_variable_C:
            y = torch.einsum("bdn,dn->bd", x, C)
        else:
            y = torch.einsum("bdn,bn->bd", x, C[:, :, i])
        if i == u.shape[2] - 1:
            last_state = x
        if y.is_complex():
            y = y.real * 2
        ys.append(y)
    y = torch.stack(ys, dim=2)  # (batch dim L)
    out = y if D is None else y + u * D.unsqueeze(-1)  # rearrange(D, "d -> d 1")
    if z is not None:
        out = out * F.silu(z)
    out = out.to(dtype=dtype_in)
    return out if not return_last_state else (out, last_state)


def selective_scan_ref_program(m, complex_A, dtype_name, variable_C):
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(40)
    b, d, n, L = 2, 4, 3, 7
    u = torch.tensor(rng.standard_normal((b, d, L)), dtype=dtype, requires_grad=True)
    delta = torch.tensor(rng.standard_normal((b, d, L)) * 0.5, dtype=dtype, requires_grad=True)
    delta_bias = torch.tensor(rng.standard_normal(d) * 0.1 - 1, requires_grad=True, dtype=torch.float32)
    z = torch.tensor(rng.standard_normal((b, d, L)), dtype=dtype, requires_grad=True)
    D = torch.ones(d, requires_grad=True)
    if complex_A:
        A_real = torch.tensor(np.log(0.5 * np.ones((d, n))), dtype=torch.float32, requires_grad=True)
        A_imag = torch.tensor(math.pi * np.tile(np.arange(n), (d, 1)), dtype=torch.float32, requires_grad=True)
        A = -torch.exp(A_real) + 1j * A_imag  # complex64
        state_leaves = [A_real, A_imag]
        nl = 2 * L  # a complex B / C comes with its real and imaginary parts interleaved along the length
    else:
        A_log = torch.tensor(np.log(np.tile(np.arange(1, n + 1), (d, 1))), dtype=torch.float32,
                             requires_grad=True)
        A = -torch.exp(A_log)
        state_leaves = [A_log]
        nl = L
    B = torch.tensor(rng.standard_normal((b, n, nl)), dtype=dtype, requires_grad=True)
    C = torch.tensor(rng.standard_normal((b, n, nl) if variable_C else (d, n, 2) if complex_A else (d, n)),
                     dtype=dtype if variable_C else torch.float32, requires_grad=True)
    C_in = C if variable_C or not complex_A else torch.view_as_complex(C)
    out, last_state = selective_scan_ref(m, u, delta, A, B, C_in, D=D, z=z, delta_bias=delta_bias,
                                         delta_softplus=True, return_last_state=True)
    loss = (out.float() ** 2).sum() + (torch.view_as_real(last_state) if last_state.is_complex()
                                       else last_state).sum()
    leaves = [u, delta, delta_bias, z, D, B, C] + state_leaves
    grads = torch.autograd.grad(loss, leaves)
    return out, last_state, grads, str(out.dtype), str(last_state.dtype)


@pytest.mark.parametrize("variable_C", [True, False])
@pytest.mark.parametrize("complex_A", [False, True])
@pytest.mark.parametrize("dtype_name", ["float32", "float16"])  # bfloat16: NumPy has none
def test_mamba_selective_scan_ref_real_and_complex(complex_A, dtype_name, variable_C):
    (out, last_state, grads, out_dtype, state_dtype), theirs = run_both(
        selective_scan_ref_program, complex_A, dtype_name, variable_C, compare=False)
    assert out_dtype.endswith(dtype_name) and state_dtype.endswith("complex64" if complex_A else "float32")
    if theirs is not None:
        tol = 1e-5 if dtype_name == "float32" else 2e-3  # a float16 output is rounded once at the end
        np.testing.assert_allclose(out.astype(np.float64), theirs[0].astype(np.float64), rtol=tol, atol=tol)
        np.testing.assert_allclose(last_state, theirs[1], rtol=1e-5, atol=1e-5)
        for a, b in zip(grads, theirs[2]):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol * 4, atol=tol * 4)


def make_mamba_official(m, d_model=8, n_layer=2, d_state=4, d_conv=4, expand=2):
    torch, nn, F = m.torch, m.nn, m.F
    d_inner = expand * d_model
    dt_rank = math.ceil(d_model / 16)

    class Mamba(nn.Module):
        def __init__(self, dt_min=0.001, dt_max=0.1, dt_init="random", dt_scale=1.0, dt_init_floor=1e-4):
            super().__init__()
            self.in_proj = nn.Linear(d_model, d_inner * 2, bias=False)
            self.conv1d = nn.Conv1d(in_channels=d_inner, out_channels=d_inner, bias=True, kernel_size=d_conv,
                                    groups=d_inner, padding=d_conv - 1)
            self.act = nn.SiLU()
            self.x_proj = nn.Linear(d_inner, dt_rank + d_state * 2, bias=False)
            self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
            # Initialize special dt projection to preserve variance at initialization
            dt_init_std = dt_rank ** -0.5 * dt_scale
            if dt_init == "constant":
                nn.init.constant_(self.dt_proj.weight, dt_init_std)
            elif dt_init == "random":
                nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
            # Initialize dt bias so that F.softplus(dt_bias) is between dt_min and dt_max
            dt = torch.exp(
                torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            ).clamp(min=dt_init_floor)
            # Inverse of softplus: https://github.com/pytorch/pytorch/issues/72759
            inv_dt = dt + torch.log(-torch.expm1(-dt))
            with torch.no_grad():
                self.dt_proj.bias.copy_(inv_dt)
            self.dt_proj.bias._no_reinit = True
            A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1).contiguous()
            A_log = torch.log(A)  # Keep A_log in fp32
            self.A_log = nn.Parameter(A_log)
            self.A_log._no_weight_decay = True
            self.D = nn.Parameter(torch.ones(d_inner))  # Keep in fp32
            self.D._no_weight_decay = True
            self.out_proj = nn.Linear(d_inner, d_model, bias=False)

        def forward(self, hidden_states):
            batch, seqlen, dim = hidden_states.shape
            xz = self.in_proj(hidden_states).transpose(1, 2)  # rearrange "b l d -> b d l"
            A = -torch.exp(self.A_log.float())  # (d_inner, d_state)
            x, z = xz.chunk(2, dim=1)
            x = self.act(self.conv1d(x)[..., :seqlen])
            x_dbl = self.x_proj(x.transpose(1, 2).reshape(batch * seqlen, d_inner))  # "b d l -> (b l) d"
            dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
            dt = self.dt_proj.weight @ dt.t()
            dt = dt.reshape(d_inner, batch, seqlen).permute(1, 0, 2)  # "d (b l) -> b d l"
            B = B.reshape(batch, seqlen, d_state).transpose(1, 2).contiguous()  # "(b l) dstate -> b dstate l"
            C = C.reshape(batch, seqlen, d_state).transpose(1, 2).contiguous()
            y = selective_scan_ref(m, x, dt, A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                                   delta_softplus=True)
            return self.out_proj(y.transpose(1, 2))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = Mamba()
            self.norm = nn.RMSNorm(d_model, eps=1e-5)

        def forward(self, hidden_states, residual=None):
            residual = (hidden_states + residual) if residual is not None else hidden_states
            hidden_states = self.norm(residual.to(dtype=self.norm.weight.dtype))
            return self.mixer(hidden_states), residual

    class MambaLMHeadModel(nn.Module):
        def __init__(self, vocab_size=10):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, d_model)
            self.layers = nn.ModuleList([Block() for _ in range(n_layer)])
            self.norm_f = nn.RMSNorm(d_model, eps=1e-5)
            self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
            self.apply(self._init_weights)
            self.lm_head.weight = self.embedding.weight  # tie_weights

        @staticmethod
        def _init_weights(module, initializer_range=0.02, rescale_prenorm_residual=True, n_residuals_per_layer=1):
            if isinstance(module, nn.Linear):
                if module.bias is not None:
                    if not getattr(module.bias, "_no_reinit", False):
                        nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=initializer_range)
            if rescale_prenorm_residual:
                for name, p in module.named_parameters():
                    if name in ["out_proj.weight", "fc2.weight"]:
                        nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                        with torch.no_grad():
                            p /= math.sqrt(n_residuals_per_layer * n_layer)

        def forward(self, input_ids):
            hidden_states = self.embedding(input_ids)
            residual = None
            for layer in self.layers:
                hidden_states, residual = layer(hidden_states, residual)
            residual = (hidden_states + residual) if residual is not None else hidden_states
            hidden_states = self.norm_f(residual.to(dtype=self.norm_f.weight.dtype))
            return self.lm_head(hidden_states)

    return MambaLMHeadModel()


def test_mamba_dt_init_lands_softplus_between_dt_min_and_dt_max():
    model = make_mamba_official(OURS)
    for layer in model.layers:
        dt = OURS.F.softplus(layer.mixer.dt_proj.bias).detach().numpy()
        assert np.all(dt >= 1e-3 * (1 - 1e-5)) and np.all(dt <= 0.1 * (1 + 1e-5))
        assert layer.mixer.dt_proj.bias._no_reinit and layer.mixer.A_log._no_weight_decay
    bound = 1 / math.sqrt(16) / math.sqrt(2)  # kaiming_uniform(a=sqrt 5) of fan_in 16, then / sqrt(n_layer)
    w = model.layers[0].mixer.out_proj.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound


def mamba_official_training(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = make_mamba_official(m)
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if getattr(p, "_no_weight_decay", False) or p.ndim < 2 or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    optimizer = m.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=5e-3, betas=(0.9, 0.95))
    tokens = torch.tensor(np.random.default_rng(41).integers(0, 10, (2, 9)))
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 10), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, (len(decay), len(no_decay)), model.layers[0].mixer.A_log, model.layers[1].mixer.dt_proj.bias


def test_mamba_official_block_trains_with_no_weight_decay_flags():
    weights = weights_of(make_mamba_official)
    (losses, sizes, A_log, dt_bias), _ = run_both(mamba_official_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    # decayed: embedding (tied head), in_proj, conv1d, x_proj, dt_proj, out_proj weights per layer
    assert sizes == (1 + 2 * 5, 2 * 5 + 1)


# ----------------------------------------------------------------------------------------------
# Decays by cumprod rather than in log space, as quick ports write them: forget gates with hard resets
# (exact zeros from a segment mask) multiplied by torch.cumprod, the gradient through the zeros (PyTorch's
# cumprod backward handles them without dividing), against the running product of a Python loop, in float32
# and float64; and logcumsumexp over -inf entries (masked positions) with its gradient
# ----------------------------------------------------------------------------------------------


def cumprod_with_resets(m, dtype_name):
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(95)
    raw = torch.tensor(rng.standard_normal((3, 10)), dtype=dtype, requires_grad=True)
    keep = torch.tensor(rng.uniform(size=(3, 10)) > 0.25)  # False: a reset, the gate is exactly 0
    gates = torch.sigmoid(raw) * keep
    decays = torch.cumprod(gates, dim=1)
    running, outs = torch.ones(3, dtype=dtype), []
    for t in range(10):
        running = running * gates[:, t]
        outs.append(running)
    looped = torch.stack(outs, dim=1)
    w = torch.tensor(rng.standard_normal((3, 10)), dtype=dtype)
    g_cum = torch.autograd.grad((decays * w).sum(), raw, retain_graph=True)[0]
    g_loop = torch.autograd.grad((looped * w).sum(), raw)[0]
    scores = torch.tensor(rng.standard_normal((3, 10)), dtype=dtype, requires_grad=True)
    masked = scores.masked_fill(~keep, float("-inf"))
    lcse = torch.logcumsumexp(masked, dim=1)
    g_lcse = torch.autograd.grad(lcse.clamp(min=-30).sum(), scores)[0]
    return decays, looped, g_cum, g_loop, lcse, g_lcse, keep


@pytest.mark.parametrize("dtype_name, tol", [("float32", 1e-6), ("float64", 1e-14)])
def test_cumprod_decays_with_hard_resets(dtype_name, tol):
    (decays, looped, g_cum, g_loop, lcse, g_lcse, keep), _ = run_both(cumprod_with_resets, dtype_name,
                                                                     rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(decays, looped, rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(g_cum, g_loop, rtol=tol * 100, atol=tol * 10)
    assert np.isfinite(g_cum).all() and np.isfinite(g_lcse).all()
    first_kept = np.argmax(keep, axis=1)
    for row, start in enumerate(first_kept):  # before the first kept score the running log-sum is -inf
        assert np.all(np.isneginf(lcse[row, :start])) and np.all(np.isfinite(lcse[row, start:]))
