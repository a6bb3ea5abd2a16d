# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031, B009, B010  (the programs are kept as their authors wrote them)
"""Sequence models beyond attention (see tests/pytorch_programs.py), as PyTorch users write them in pure
PyTorch, each run on chainrule and on PyTorch and compared (values and gradients, float32 and float64), and
every scan, parallel or chunkwise form checked against its loop form.

Mamba's selective scan three ways (mamba.py's Blelloch pscan as an autograd.Function working in place on views
of a transposed clone, and the log-space cumsum / segsum form); mamba_ssm's selective_scan_ref with real and
complex A (view_as_complex of interleaved B and C) in float32 and float16, and the Mamba block's own
initialisation (inverse-softplus dt bias, _no_weight_decay groups, out_proj rescaled in place); S4D (complex
diagonal state kept by view_as_real, Vandermonde kernel, rfft/irfft with n=2L, _optim parameter groups, a
cosine schedule) against its complex recurrence; S4's Cauchy/Woodbury kernel (complex Hermitian eigh of the
HiPPO-LegS NPLR form, ifft at the roots of unity) against the bilinear-discretised SSM's powers; the Linear
Recurrent Unit (complex Λ from real parameters, parallel form by complex powers); RWKV-4 (ZeroPad2d token
shift with a negative pad, the stable WKV with a running maximum against its parallel softmax form);
RetNet retention parallel, recurrent and chunkwise, and a RetNet trained in the parallel form; xLSTM's mLSTM
parallel / recurrent / chunkwise (and the in-place squeeze_ that makes both libraries refuse backward) and
the sLSTM cell with its stabiliser; Hyena's implicit filter and fftconv against the causal convolution;
minGRU's Heinsen scan (logcumsumexp) against its recurrence and a minGRU LM; causal and gated linear
attention quadratic, cumsum and chunkwise; and Griffin's RG-LRU block (block-diagonal gates, a bounded-sqrt
autograd.Function, document resets as boolean arithmetic)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

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
# S4D (state-spaces/s4, models/s4/s4d.py and example.py): a complex diagonal state matrix kept as real
# parameters (C by torch.view_as_real, read back by view_as_complex; A = -exp(log_A_real) + 1j * A_imag),
# its Vandermonde kernel by einsum and .real, the long convolution by torch.fft.rfft/irfft with n=2L, a D
# skip, GELU, a 1x1 Conv1d with GLU over channels; SSM parameters registered with their own optimiser
# hyperparameters (_optim attributes, no weight decay) gathered into AdamW param groups with a cosine
# schedule; the FFT convolution checked against the complex recurrence it stands for
# ----------------------------------------------------------------------------------------------

S4_H, S4_N, S4_L = 6, 8, 16


def make_s4d(m, d_input=3, d_output=4, n_layers=2):
    torch, nn = m.torch, m.nn

    class S4DKernel(nn.Module):
        def __init__(self, d_model, N=64, dt_min=0.001, dt_max=0.1, lr=None):
            super().__init__()
            H = d_model
            log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            C = torch.randn(H, N // 2, dtype=torch.cfloat)
            self.C = nn.Parameter(torch.view_as_real(C))
            self.register("log_dt", log_dt, lr)
            log_A_real = torch.log(0.5 * torch.ones(H, N // 2))
            A_imag = math.pi * torch.arange(N // 2).repeat(H, 1)  # repeat(torch.arange(N//2), 'n -> h n', h=H)
            self.register("log_A_real", log_A_real, lr)
            self.register("A_imag", A_imag, lr)

        def forward(self, L):
            dt = torch.exp(self.log_dt)  # (H)
            C = torch.view_as_complex(self.C)  # (H N)
            A = -torch.exp(self.log_A_real) + 1j * self.A_imag  # (H N)
            dtA = A * dt.unsqueeze(-1)  # (H N)
            K = dtA.unsqueeze(-1) * torch.arange(L, device=A.device)  # (H N L)
            C = C * (torch.exp(dtA) - 1.) / A
            K = 2 * torch.einsum("hn, hnl -> hl", C, torch.exp(K)).real
            return K

        def register(self, name, tensor, lr=None):
            if lr == 0.0:
                self.register_buffer(name, tensor)
            else:
                self.register_parameter(name, nn.Parameter(tensor))
                optim = {"weight_decay": 0.0}
                if lr is not None:
                    optim["lr"] = lr
                setattr(getattr(self, name), "_optim", optim)

    class S4D(nn.Module):
        def __init__(self, d_model, d_state=64, dropout=0.0, transposed=True, **kernel_args):
            super().__init__()
            self.h = d_model
            self.n = d_state
            self.d_output = self.h
            self.transposed = transposed
            self.D = nn.Parameter(torch.randn(self.h))
            self.kernel = S4DKernel(self.h, N=self.n, **kernel_args)
            self.activation = nn.GELU()
            self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
            self.output_linear = nn.Sequential(
                nn.Conv1d(self.h, 2 * self.h, kernel_size=1),
                nn.GLU(dim=-2),
            )

        def forward(self, u, **kwargs):
            if not self.transposed:
                u = u.transpose(-1, -2)
            L = u.size(-1)
            k = self.kernel(L=L)  # (H L)
            k_f = torch.fft.rfft(k, n=2 * L)  # (H L)
            u_f = torch.fft.rfft(u, n=2 * L)  # (B H L)
            y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]  # (B H L)
            y = y + u * self.D.unsqueeze(-1)
            y = self.dropout(self.activation(y))
            y = self.output_linear(y)
            if not self.transposed:
                y = y.transpose(-1, -2)
            return y, None

    class S4Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(d_input, S4_H)
            self.s4_layers = nn.ModuleList()
            self.norms = nn.ModuleList()
            for _ in range(n_layers):
                self.s4_layers.append(S4D(S4_H, d_state=S4_N, dropout=0.0, transposed=True, lr=0.001))
                self.norms.append(nn.LayerNorm(S4_H))
            self.decoder = nn.Linear(S4_H, d_output)

        def forward(self, x):
            x = self.encoder(x)  # (B, L, d_input) -> (B, L, d_model)
            x = x.transpose(-1, -2)  # (B, L, d_model) -> (B, d_model, L)
            for layer, norm in zip(self.s4_layers, self.norms):
                z = x
                z = norm(z.transpose(-1, -2)).transpose(-1, -2)  # prenorm
                z, _ = layer(z)
                x = z + x
            x = x.transpose(-1, -2)
            x = x.mean(dim=1)
            return self.decoder(x)

    return S4Model()


def setup_optimizer(m, model, lr, weight_decay, epochs):
    all_parameters = list(model.parameters())
    params = [p for p in all_parameters if not hasattr(p, "_optim")]
    optimizer = m.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    hps = [getattr(p, "_optim") for p in all_parameters if hasattr(p, "_optim")]
    hps = [dict(s) for s in sorted(list(dict.fromkeys(frozenset(hp.items()) for hp in hps)))]
    for hp in hps:
        params = [p for p in all_parameters if getattr(p, "_optim", None) == hp]
        optimizer.add_param_group({"params": params, **hp})
    scheduler = m.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    return optimizer, scheduler


def s4d_training(m, weights, steps=4):
    torch, F = m.torch, m.F
    model = make_s4d(m)
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})  # keeps the _optim attributes
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((5, S4_L, 3)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 4, 5))
    optimizer, scheduler = setup_optimizer(m, model, lr=0.01, weight_decay=0.01, epochs=steps)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    groups = [(g["lr"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]
    return losses, groups, {k: v for k, v in model.state_dict().items()}


def test_s4d_trains_with_its_ssm_parameter_groups():
    weights = weights_of(make_s4d)
    assert weights["s4_layers.0.kernel.C"].shape == (S4_H, S4_N // 2, 2)
    (losses, groups, state), _ = run_both(s4d_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    # AdamW's own group, then the one group of the SSM parameters (log_dt, log_A_real, A_imag per layer)
    assert [g[1:] for g in groups] == [(0.01, 16), (0.0, 6)]
    np.testing.assert_allclose(groups[1][0], 0.001 * 0.5 * (1 + math.cos(math.pi * 4 / 4)), atol=1e-12)


def s4d_convolution_against_recurrence(m, weights):
    torch = m.torch
    model = make_s4d(m).double()
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    layer = model.s4_layers[0]
    rng = np.random.default_rng(4)
    u = torch.tensor(rng.standard_normal((2, S4_H, S4_L)), requires_grad=True)
    # the FFT convolution of the S4D layer, before its activation
    L = u.size(-1)
    k = layer.kernel(L=L)
    y_conv = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
    y_conv = y_conv + u * layer.D.unsqueeze(-1)
    # the same layer as a recurrence: x_k = exp(dt A) x_{k-1} + (exp(dt A) - 1) / A u_k, y_k = 2 Re(C x_k) + D u_k
    kern = layer.kernel
    dt = torch.exp(kern.log_dt)
    A = -torch.exp(kern.log_A_real) + 1j * kern.A_imag
    dA = torch.exp(A * dt.unsqueeze(-1))
    dB = (dA - 1.0) / A
    C = torch.view_as_complex(kern.C)
    state = torch.zeros(2, S4_H, S4_N // 2, dtype=torch.complex128)
    ys = []
    for t in range(L):
        state = dA * state + dB * u[:, :, t, None]
        ys.append(2 * (state * C).sum(-1).real)
    y_rec = torch.stack(ys, dim=-1) + u * layer.D.unsqueeze(-1)
    params = [u, kern.C, kern.log_dt, kern.log_A_real, kern.A_imag, layer.D]
    w = torch.tensor(rng.standard_normal((2, S4_H, S4_L)))
    g_conv = torch.autograd.grad((y_conv * w).sum(), params)
    g_rec = torch.autograd.grad((y_rec * w).sum(), params)
    return y_conv, y_rec, g_conv, g_rec


def test_s4d_fft_convolution_is_the_recurrence():
    weights = weights_of(make_s4d)
    (y_conv, y_rec, g_conv, g_rec), _ = run_both(s4d_convolution_against_recurrence, weights,
                                                 rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(y_conv, y_rec, rtol=1e-9, atol=1e-11)
    for a, b in zip(g_conv, g_rec):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# RWKV-4 (RWKV-LM): token shift by nn.ZeroPad2d((0, 0, 1, -1)) (a negative pad crops the last step),
# time-mixing whose WKV is the numerically stable recurrence with a running maximum (torch.maximum, exp of
# differences), squared-ReLU channel mixing, the parallel WKV by a decay matrix under a tril mask against
# it, and a few AdamW steps with the time_* parameters and LayerNorms in a group without weight decay
# ----------------------------------------------------------------------------------------------

RW_V, RW_D, RW_LAYERS = 11, 8, 2


def make_rwkv(m):
    torch, nn = m.torch, m.nn

    class RWKV_TimeMix(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            ratio_0_to_1 = layer_id / (RW_LAYERS - 1)
            ratio_1_to_almost0 = 1.0 - (layer_id / RW_LAYERS)
            with torch.no_grad():
                decay_speed = torch.ones(RW_D)
                for h in range(RW_D):
                    decay_speed[h] = -5 + 8 * (h / (RW_D - 1)) ** (0.7 + 1.3 * ratio_0_to_1)
                self.time_decay = nn.Parameter(decay_speed)
                zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(RW_D)]) * 0.5
                self.time_first = nn.Parameter(torch.ones(RW_D) * math.log(0.3) + zigzag)
                x = torch.ones(1, 1, RW_D)
                for i in range(RW_D):
                    x[0, 0, i] = i / RW_D
                self.time_mix_k = nn.Parameter(torch.pow(x, ratio_1_to_almost0))
                self.time_mix_v = nn.Parameter(torch.pow(x, ratio_1_to_almost0) + 0.3 * ratio_0_to_1)
                self.time_mix_r = nn.Parameter(torch.pow(x, 0.5 * ratio_1_to_almost0))
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            self.key = nn.Linear(RW_D, RW_D, bias=False)
            self.value = nn.Linear(RW_D, RW_D, bias=False)
            self.receptance = nn.Linear(RW_D, RW_D, bias=False)
            self.output = nn.Linear(RW_D, RW_D, bias=False)

        def wkv(self, k, v):
            B, T, C = k.shape
            w = -torch.exp(self.time_decay)
            u = self.time_first
            aa = torch.zeros(B, C, dtype=k.dtype)
            bb = torch.zeros(B, C, dtype=k.dtype)
            pp = torch.full((B, C), -1e38, dtype=k.dtype)
            out = []
            for t in range(T):
                kk, vv = k[:, t], v[:, t]
                ww = u + kk
                p = torch.maximum(pp, ww)
                e1 = torch.exp(pp - p)
                e2 = torch.exp(ww - p)
                out.append((e1 * aa + e2 * vv) / (e1 * bb + e2))
                ww = pp + w
                p = torch.maximum(ww, kk)
                e1 = torch.exp(ww - p)
                e2 = torch.exp(kk - p)
                aa = e1 * aa + e2 * vv
                bb = e1 * bb + e2
                pp = p
            return torch.stack(out, dim=1)

        def forward(self, x):
            xx = self.time_shift(x)
            xk = x * self.time_mix_k + xx * (1 - self.time_mix_k)
            xv = x * self.time_mix_v + xx * (1 - self.time_mix_v)
            xr = x * self.time_mix_r + xx * (1 - self.time_mix_r)
            k = self.key(xk)
            v = self.value(xv)
            sr = torch.sigmoid(self.receptance(xr))
            return self.output(sr * self.wkv(k, v))

    class RWKV_ChannelMix(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            with torch.no_grad():
                ratio_1_to_almost0 = 1.0 - (layer_id / RW_LAYERS)
                x = torch.ones(1, 1, RW_D)
                for i in range(RW_D):
                    x[0, 0, i] = i / RW_D
                self.time_mix_k = nn.Parameter(torch.pow(x, ratio_1_to_almost0))
                self.time_mix_r = nn.Parameter(torch.pow(x, ratio_1_to_almost0))
            self.key = nn.Linear(RW_D, 4 * RW_D, bias=False)
            self.receptance = nn.Linear(RW_D, RW_D, bias=False)
            self.value = nn.Linear(4 * RW_D, RW_D, bias=False)

        def forward(self, x):
            xx = self.time_shift(x)
            xk = x * self.time_mix_k + xx * (1 - self.time_mix_k)
            xr = x * self.time_mix_r + xx * (1 - self.time_mix_r)
            k = self.key(xk)
            k = torch.square(torch.relu(k))
            kv = self.value(k)
            return torch.sigmoid(self.receptance(xr)) * kv

    class Block(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            self.ln1 = nn.LayerNorm(RW_D)
            self.ln2 = nn.LayerNorm(RW_D)
            if layer_id == 0:
                self.ln0 = nn.LayerNorm(RW_D)
            self.layer_id = layer_id
            self.att = RWKV_TimeMix(layer_id)
            self.ffn = RWKV_ChannelMix(layer_id)

        def forward(self, x):
            if self.layer_id == 0:
                x = self.ln0(x)
            x = x + self.att(self.ln1(x))
            x = x + self.ffn(self.ln2(x))
            return x

    class RWKV(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(RW_V, RW_D)
            self.blocks = nn.Sequential(*[Block(i) for i in range(RW_LAYERS)])
            self.ln_out = nn.LayerNorm(RW_D)
            self.head = nn.Linear(RW_D, RW_V, bias=False)

        def forward(self, idx):
            return self.head(self.ln_out(self.blocks(self.emb(idx))))

    return RWKV()


def rwkv_training(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_rwkv(m), weights)
    tokens = torch.tensor(np.random.default_rng(8).integers(0, RW_V, (3, 10)))
    no_decay = [p for n, p in model.named_parameters() if "time_" in n or "ln" in n or "emb" in n]
    decay = [p for n, p in model.named_parameters() if not ("time_" in n or "ln" in n or "emb" in n)]
    optimizer = m.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                               {"params": no_decay, "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.99), eps=1e-8)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        full = model(tokens)
        prefix = model(tokens[:, :4])
    return losses, full, prefix, {n: p for n, p in model.named_parameters() if "time_" in n}


def test_rwkv4_trains_and_stays_causal():
    weights = weights_of(make_rwkv)
    (losses, full, prefix, time_params), _ = run_both(rwkv_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(prefix, full[:, :4], rtol=1e-5, atol=1e-6)


def rwkv_wkv_stable_against_parallel(m, weights):
    torch = m.torch
    model = load(m, make_rwkv(m), weights).double()
    att = model.blocks[1].att
    rng = np.random.default_rng(9)
    B, T, C = 2, 7, RW_D
    k = torch.tensor(rng.standard_normal((B, T, C)) * 3, requires_grad=True)
    v = torch.tensor(rng.standard_normal((B, T, C)), requires_grad=True)
    stable = att.wkv(k, v)
    # parallel: wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (the same with v = 1)
    w = torch.exp(att.time_decay)
    t_idx = torch.arange(T, dtype=torch.float64)
    dist = (t_idx[:, None] - 1 - t_idx[None, :])  # (t, i)
    logits = -dist[None, :, :, None] * w + k[:, None, :, :]  # (B, t, i, C)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)[None, :, :, None]
    logits = logits.masked_fill(~mask, float("-inf"))
    bonus = (att.time_first + k)[:, :, None, :]  # the current token, weighted by u
    all_logits = torch.cat([logits, bonus], dim=2)  # (B, t, i + 1, C)
    all_v = torch.cat([v[:, None].expand(B, T, T, C), v[:, :, None]], dim=2)
    weights_ = torch.softmax(all_logits, dim=2)
    parallel = (weights_ * all_v).sum(2)
    leaves = [k, v, att.time_decay, att.time_first]
    g = torch.tensor(rng.standard_normal((B, T, C)))
    return stable, parallel, torch.autograd.grad((stable * g).sum(), leaves), \
        torch.autograd.grad((parallel * g).sum(), leaves)


def test_rwkv4_stable_wkv_is_the_parallel_softmax():
    weights = weights_of(make_rwkv)
    (stable, parallel, g_stable, g_parallel), _ = run_both(rwkv_wkv_stable_against_parallel, weights,
                                                          rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(stable, parallel, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_stable, g_parallel):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# RetNet retention (torchscale's retnet): multi-scale decays log(1 - 2^(-5 - h)), xPos-style rotation by
# rotate_every_two (strided ::2 slices, stack, flatten), the decay mask built by masked_fill with inf,
# exp, nan_to_num and a row normalisation by its square-rooted sum; the parallel, recurrent and chunkwise
# forms of retention against each other (values and gradients, float64), and a small RetNet trained a few
# steps in the parallel form (retention scores divided by their detached absolute row sums, per-head RMS
# group norm, swish gate)
# ----------------------------------------------------------------------------------------------

RN_V, RN_D, RN_H = 12, 8, 2


def rotate_every_two(m, x):
    x1 = x[:, :, :, ::2]
    x2 = x[:, :, :, 1::2]
    x = m.torch.stack((-x2, x1), dim=-1)
    return x.flatten(-2)  # in einsum notation: rearrange(x, '... d j -> ... (d j)')


def theta_shift(m, x, sin, cos):
    return (x * cos) + (rotate_every_two(m, x) * sin)


def retnet_rel_pos(m, slen, embed_dim, num_heads, dtype):
    torch = m.torch
    angle = 1.0 / (10000 ** torch.linspace(0, 1, embed_dim // num_heads // 2, dtype=dtype))
    angle = angle.unsqueeze(-1).repeat(1, 2).flatten()
    decay = torch.log(1 - 2 ** (-5 - torch.arange(num_heads, dtype=dtype)))
    index = torch.arange(slen).to(decay)
    sin = torch.sin(index[:, None] * angle[None, :])
    cos = torch.cos(index[:, None] * angle[None, :])
    mask = torch.tril(torch.ones(slen, slen).to(decay))
    mask = torch.masked_fill(index[:, None] - index[None, :], ~mask.bool(), float("inf"))
    mask = torch.exp(mask * decay[:, None, None])
    mask = torch.nan_to_num(mask)
    return (sin, cos), mask, decay


def retention_three_forms(m, chunk):
    torch = m.torch
    rng = np.random.default_rng(12)
    b, h, T, dk, dv = 2, 3, 12, 4, 5
    q = torch.tensor(rng.standard_normal((b, h, T, dk)), requires_grad=True)
    k = torch.tensor(rng.standard_normal((b, h, T, dk)), requires_grad=True)
    v = torch.tensor(rng.standard_normal((b, h, T, dv)), requires_grad=True)
    (sin, cos), mask, decay = retnet_rel_pos(m, T, h * dk, h, torch.float64)
    gamma = torch.exp(decay)  # (h)

    def rotated():
        return theta_shift(m, q, sin, cos), theta_shift(m, k, sin, cos)

    # parallel
    qr, kr = rotated()
    parallel = (qr @ kr.transpose(-1, -2) * mask) @ v
    # recurrent: S_n = gamma S_{n-1} + k_n^T v_n, o_n = q_n S_n
    qr, kr = rotated()
    S = torch.zeros(b, h, dk, dv, dtype=torch.float64)
    outs = []
    for t in range(T):
        S = gamma.view(1, h, 1, 1) * S + kr[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", qr[:, :, t], S))
    recurrent = torch.stack(outs, dim=2)
    # chunkwise: inside a chunk the parallel form, across chunks the state R decayed by gamma^B
    qr, kr = rotated()
    inner_mask = mask[:, :chunk, :chunk]
    idx = torch.arange(1, chunk + 1, dtype=torch.float64)
    cross_decay = gamma.view(h, 1) ** idx  # xi: decay from the chunk's start to each position
    value_decay = gamma.view(h, 1) ** (chunk - idx)  # zeta: decay from each position to the chunk's end
    R = torch.zeros(b, h, dk, dv, dtype=torch.float64)
    pieces = []
    for start in range(0, T, chunk):
        qc, kc, vc = (t_[:, :, start:start + chunk] for t_ in (qr, kr, v))
        inner = (qc @ kc.transpose(-1, -2) * inner_mask) @ vc
        cross = (qc @ R) * cross_decay.view(1, h, chunk, 1)
        pieces.append(inner + cross)
        R = kc.transpose(-1, -2) @ (vc * value_decay.view(1, h, chunk, 1)) + R * (gamma ** chunk).view(1, h, 1, 1)
    chunkwise = torch.cat(pieces, dim=2)
    w = torch.tensor(rng.standard_normal((b, h, T, dv)))
    grads = [torch.autograd.grad((o * w).sum(), (q, k, v)) for o in (parallel, recurrent, chunkwise)]
    return [parallel, recurrent, chunkwise], grads


@pytest.mark.parametrize("chunk", [3, 4])
def test_retention_parallel_recurrent_and_chunkwise_agree(chunk):
    (outs, grads), _ = run_both(retention_three_forms, chunk, rtol=1e-9, atol=1e-11)
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-9, atol=1e-11)
    for gs in grads[1:]:
        for a, b in zip(gs, grads[0]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def make_retnet(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MultiScaleRetention(nn.Module):
        def __init__(self, embed_dim, value_dim, num_heads):
            super().__init__()
            self.embed_dim = embed_dim
            self.num_heads = num_heads
            self.head_dim = value_dim // num_heads
            self.key_dim = embed_dim // num_heads
            self.scaling = self.key_dim ** -0.5
            self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
            self.v_proj = nn.Linear(embed_dim, value_dim, bias=False)
            self.g_proj = nn.Linear(embed_dim, value_dim, bias=False)
            self.out_proj = nn.Linear(value_dim, embed_dim, bias=False)
            self.group_norm = nn.RMSNorm(self.head_dim, eps=1e-6, elementwise_affine=False)
            nn.init.xavier_uniform_(self.q_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.k_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.v_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.g_proj.weight, gain=2 ** -2.5)
            nn.init.xavier_uniform_(self.out_proj.weight, gain=2 ** -1)

        def parallel_forward(self, qr, kr, v, mask):
            bsz, tgt_len, embed_dim = v.size()
            vr = v.view(bsz, tgt_len, self.num_heads, self.head_dim).transpose(1, 2)
            qk_mat = qr @ kr.transpose(-1, -2)  # bsz * m * tgt_len * tgt_len
            qk_mat = qk_mat * mask
            # invariant after normalization
            qk_mat = qk_mat / qk_mat.detach().abs().sum(dim=-1, keepdim=True).clamp(min=1, max=5e4)
            output = torch.matmul(qk_mat, vr)
            output = output.transpose(1, 2)
            return output

        def forward(self, x, rel_pos):
            bsz, tgt_len, _ = x.size()
            (sin, cos), inner_mask = rel_pos
            q = self.q_proj(x)
            k = self.k_proj(x)
            v = self.v_proj(x)
            g = self.g_proj(x)
            k *= self.scaling
            q = q.view(bsz, tgt_len, self.num_heads, self.key_dim).transpose(1, 2)
            k = k.view(bsz, tgt_len, self.num_heads, self.key_dim).transpose(1, 2)
            qr = theta_shift(m, q, sin, cos)
            kr = theta_shift(m, k, sin, cos)
            output = self.parallel_forward(qr, kr, v, inner_mask)
            output = self.group_norm(output).reshape(bsz, tgt_len, self.head_dim * self.num_heads)
            output = F.silu(g) * output
            return self.out_proj(output)

    class RetNetLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.retention = MultiScaleRetention(RN_D, 2 * RN_D, RN_H)
            self.retention_layer_norm = nn.LayerNorm(RN_D)
            self.ffn = nn.Sequential(nn.Linear(RN_D, 2 * RN_D), nn.GELU(), nn.Linear(2 * RN_D, RN_D))
            self.final_layer_norm = nn.LayerNorm(RN_D)

        def forward(self, x, rel_pos):
            x = x + self.retention(self.retention_layer_norm(x), rel_pos)
            return x + self.ffn(self.final_layer_norm(x))

    class RetNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(RN_V, RN_D)
            self.layers = nn.ModuleList([RetNetLayer() for _ in range(2)])
            self.layer_norm = nn.LayerNorm(RN_D)
            self.output_projection = nn.Linear(RN_D, RN_V, bias=False)

        def forward(self, tokens):
            x = self.embed_tokens(tokens)
            (sin, cos), mask, _ = retnet_rel_pos(m, tokens.size(1), RN_D, RN_H, x.dtype)
            mask = mask / mask.sum(dim=-1, keepdim=True).sqrt()
            for layer in self.layers:
                x = layer(x, ((sin, cos), mask))
            return self.output_projection(self.layer_norm(x))

    return RetNet()


def retnet_training(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_retnet(m), weights)
    tokens = torch.tensor(np.random.default_rng(13).integers(0, RN_V, (3, 9)))
    optimizer = m.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.05)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        full = model(tokens)
        prefix = model(tokens[:, :5])
    return losses, full, prefix


def test_retnet_trains_in_its_parallel_form():
    weights = weights_of(make_retnet)
    (losses, full, prefix), _ = run_both(retnet_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(prefix, full[:, :5], rtol=1e-4, atol=1e-5)  # causal


# ----------------------------------------------------------------------------------------------
# xLSTM (NX-AI/xlstm): the mLSTM cell in its stabilised parallel form (logsigmoid forget gates, cumsum,
# repeat and transpose into a log gate matrix, torch.where with -inf, a row max subtracted before exp, the
# normaliser max(|row sum|, exp(-max))), its recurrent step (squeeze_ in place on the step's slices, a running
# stabiliser state m) and its chunkwise form (states written by index into zero tensors, triu of inf); the
# three against each other in float64, values and gradients; and the sLSTM pointwise cell with exponential
# gating, its stabiliser and the torch.all(n == 0) first step, run over a sequence
# ----------------------------------------------------------------------------------------------


def mlstm_forms(m, chunk_size, squeeze_in_place=False):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(21)
    B, NH, S, DH = 2, 2, 8, 4
    eps = 1e-6
    leaves = [torch.tensor(rng.standard_normal(shape) * scale, requires_grad=True)
              for shape, scale in [((B, NH, S, DH), 1.0)] * 3 + [((B, NH, S, 1), 2.0), ((B, NH, S, 1), 2.0)]]
    leaves[4].data.add_(3.0)  # forget gates mostly open, as their bias init makes them

    def inputs():
        return [x * 1.0 for x in leaves]  # non-leaf copies (projections in the model)

    # parallel
    queries, keys, values, igate_preact, fgate_preact = inputs()
    log_fgates = F.logsigmoid(fgate_preact)
    ltr = torch.tril(torch.ones((S, S), dtype=torch.bool))
    log_fgates_cumsum = torch.cat([torch.zeros((B, NH, 1, 1), dtype=torch.float64),
                                   torch.cumsum(log_fgates, dim=-2)], dim=-2)
    rep_log_fgates_cumsum = log_fgates_cumsum.repeat(1, 1, 1, S + 1)
    _log_fg_matrix = rep_log_fgates_cumsum - rep_log_fgates_cumsum.transpose(-2, -1)
    log_fg_matrix = torch.where(ltr, _log_fg_matrix[:, :, 1:, 1:], -float("inf"))
    log_D_matrix = log_fg_matrix + igate_preact.transpose(-2, -1)
    max_log_D, _ = torch.max(log_D_matrix, dim=-1, keepdim=True)
    D_matrix = torch.exp(log_D_matrix - max_log_D)
    keys_scaled = keys / math.sqrt(DH)
    C_matrix = (queries @ keys_scaled.transpose(-2, -1)) * D_matrix
    normalizer = torch.maximum(C_matrix.sum(dim=-1, keepdim=True).abs(), torch.exp(-max_log_D))
    parallel = (C_matrix / (normalizer + eps)) @ values

    # recurrent, from m = -inf (no state yet), which is what the parallel form assumes
    queries, keys, values, igate_preact, fgate_preact = inputs()
    c_state = torch.zeros(B, NH, DH, DH, dtype=torch.float64)
    n_state = torch.zeros(B, NH, DH, 1, dtype=torch.float64)
    m_state = torch.full((B, NH, 1, 1), -float("inf"), dtype=torch.float64)
    hs = []
    for t in range(S):
        q, k, v = (x[:, :, t:t + 1] for x in (queries, keys, values))
        if squeeze_in_place:  # as the library's inference step does: squeeze_ bumps the shared version
            q, k, v = q.squeeze_(2).unsqueeze(-1), k.squeeze_(2).unsqueeze(-1), v.squeeze_(2).unsqueeze(-1)
        else:
            q, k, v = q.squeeze(2).unsqueeze(-1), k.squeeze(2).unsqueeze(-1), v.squeeze(2).unsqueeze(-1)
        i_t, f_t = igate_preact[:, :, t:t + 1], fgate_preact[:, :, t:t + 1]
        log_fg_act = F.logsigmoid(f_t)
        m_state_new = torch.max(log_fg_act + m_state, i_t)
        fg_act = torch.exp(log_fg_act + m_state - m_state_new)
        ig_act = torch.exp(i_t - m_state_new)
        k_scaled = k / math.sqrt(DH)
        c_state = fg_act * c_state + ig_act * (k_scaled @ v.transpose(-1, -2))
        n_state = fg_act * n_state + ig_act * k_scaled
        h_num = q.transpose(-1, -2) @ c_state
        qn_dotproduct = q.transpose(-1, -2) @ n_state
        h_denom = torch.maximum(qn_dotproduct.abs(), torch.exp(-m_state_new)) + eps
        hs.append(h_num / h_denom)
        m_state = m_state_new
    recurrent = torch.cat(hs, dim=2)

    # chunkwise, its initial stabiliser also -inf
    queries, keys, values, igate_preact, fgate_preact = inputs()
    igate_preact, fgate_preact = igate_preact.squeeze(-1), fgate_preact.squeeze(-1)
    NS, CS = S // chunk_size, chunk_size
    q = queries.view(B, NH, NS, CS, DH) / math.sqrt(DH)
    k = keys.view(B, NH, NS, CS, DH)
    v = values.view(B, NH, NS, CS, DH)
    log_fgates = F.logsigmoid(fgate_preact).view(B, NH, NS, CS)
    log_fgates_acc = log_fgates.cumsum(dim=3)
    igate_preact = igate_preact.view(B, NH, NS, CS)
    loggates = (igate_preact - log_fgates_acc)[:, :, :, :, None]
    m_loc, _ = torch.max(loggates + log_fgates_acc[:, :, :, -1, None, None], dim=3, keepdim=True)
    loggates = loggates + log_fgates_acc[:, :, :, -1, None, None] - m_loc
    kv = k.transpose(-1, -2) @ (v * (loggates).exp())
    ksum = (k * (loggates).exp()).sum(dim=-2)
    C = torch.zeros((B, NH, NS + 1, DH, DH), dtype=kv.dtype)
    n = torch.zeros((B, NH, NS + 1, DH), dtype=kv.dtype)
    mm = torch.zeros((B, NH, NS + 1, 1, 1), dtype=kv.dtype)
    mm[:, :, 0] = torch.full((B, NH, 1, 1), -float("inf"), dtype=kv.dtype)
    for i in range(1, NS + 1):
        mm[:, :, i] = torch.maximum(log_fgates_acc[:, :, i - 1, -1, None, None] + mm[:, :, i - 1], m_loc[:, :, i - 1])
        C[:, :, i] = (C[:, :, i - 1].clone() * (log_fgates_acc[:, :, i - 1, -1, None, None] + mm[:, :, i - 1]
                                                - mm[:, :, i]).exp()
                      + kv[:, :, i - 1] * (m_loc[:, :, i - 1] - mm[:, :, i]).exp())
        n[:, :, i] = (n[:, :, i - 1].clone() * (log_fgates_acc[:, :, i - 1, -1, None] + mm[:, :, i - 1, 0]
                                                - mm[:, :, i, 0]).exp()
                      + ksum[:, :, i - 1] * (m_loc[:, :, i - 1, 0] - mm[:, :, i, 0]).exp())
    log_fgates_rep = log_fgates_acc[:, :, :, :, None].repeat(1, 1, 1, 1, CS)
    log_fg_matrix = (log_fgates_rep - log_fgates_rep.transpose(-1, -2)
                     - torch.triu(float("inf") * torch.ones([1, 1, 1, CS, CS]).to(q), diagonal=1))
    log_D_matrix = log_fg_matrix + igate_preact[:, :, :, :, None].transpose(-2, -1)
    D_max, _ = torch.max(log_D_matrix, dim=-1, keepdim=True)
    stab = torch.maximum(D_max, mm[:, :, :-1, :] + log_fgates_acc[:, :, :, :, None])
    inter_C = (q * (mm[:, :, :-1, :] + log_fgates_acc[:, :, :, :, None] - stab).exp()) @ C[:, :, :-1]
    inter_n = (q * (mm[:, :, :-1, :] + log_fgates_acc[:, :, :, :, None] - stab).exp()) @ n[:, :, :-1, :, None]
    E_matrix = (q @ k.transpose(-2, -1)) * torch.exp(log_D_matrix - stab)
    normalizer = torch.maximum((E_matrix.sum(dim=-1, keepdim=True) + inter_n).abs(), torch.exp(-stab))
    intra = (E_matrix / (normalizer + eps)) @ v
    inter = inter_C / (normalizer + eps)
    chunkwise = (intra + inter).view((B, NH, S, DH))

    w = torch.tensor(rng.standard_normal((B, NH, S, DH)))
    grads = [torch.autograd.grad((h * w).sum(), leaves) for h in (parallel, recurrent, chunkwise)]
    return [parallel, recurrent, chunkwise], grads


@pytest.mark.parametrize("chunk_size", [2, 4])
def test_mlstm_parallel_recurrent_and_chunkwise_agree(chunk_size):
    (outs, grads), _ = run_both(mlstm_forms, chunk_size, rtol=1e-9, atol=1e-11)
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-9, atol=1e-11)
    for gs in grads[1:]:
        for a, b in zip(gs, grads[0]):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    assert all(np.isfinite(g).all() for gs in grads for g in gs)


def test_mlstm_recurrent_step_squeezing_in_place_refuses_backward_as_pytorch():
    """The library's recurrent step squeezes its slices in place (q.squeeze_(2)): each squeeze_ counts as a
    change of the sequence they are cut from, which an earlier step's matmul saved, so backward refuses on
    both libraries (the step is meant for inference)."""
    from .pytorch_programs import pytorch
    for modules in (OURS, pytorch()):
        if modules is None:
            continue
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            mlstm_forms(modules, 4, squeeze_in_place=True)


def slstm_sequence(m, dtype_name):
    torch, nn, F = m.torch, m.nn, m.F
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(22)
    B, H, T, D = 3, 4, 6, 5
    W = nn.Linear(D, 4 * H, bias=False).to(dtype)
    R = nn.Linear(H, 4 * H, bias=False).to(dtype)  # block-diagonal per head in xLSTM; dense here
    with torch.no_grad():
        W.weight.copy_(torch.tensor(rng.standard_normal((4 * H, D)) * 0.5))
        R.weight.copy_(torch.tensor(rng.standard_normal((4 * H, H)) * 0.5))
    b = nn.Parameter(torch.tensor(np.concatenate([np.zeros(H), np.linspace(3, 6, H), np.zeros(2 * H)])[None],
                                  dtype=dtype))
    x = torch.tensor(rng.standard_normal((T, B, D)) * 2, dtype=dtype, requires_grad=True)

    def slstm_forward_pointwise(Wx, Ry, b, states):
        raw = Wx + Ry + b
        y, c, n, m_ = torch.unbind(states.view(4, states.shape[1], -1), dim=0)
        iraw, fraw, zraw, oraw = torch.unbind(raw.view(raw.shape[0], 4, -1), dim=1)
        logfplusm = m_ + F.logsigmoid(fraw)
        if torch.all(n == 0.0):
            mnew = iraw
        else:
            mnew = torch.max(iraw, logfplusm)
        ogate = torch.sigmoid(oraw)
        igate = torch.exp(iraw - mnew)
        fgate = torch.exp(logfplusm - mnew)
        cnew = fgate * c + igate * torch.tanh(zraw)
        nnew = fgate * n + igate
        ynew = ogate * cnew / nnew
        return torch.stack((ynew, cnew, nnew, mnew), dim=0), torch.stack((igate, fgate, zraw, ogate), dim=0)

    states = torch.zeros(4, B, H, dtype=dtype)
    ys, gates = [], []
    for t in range(T):
        states, g = slstm_forward_pointwise(W(x[t]), R(states[0]), b, states)
        ys.append(states[0])
        gates.append(g)
    y = torch.stack(ys)
    loss = (y ** 2).sum() + states[2].log().sum()
    loss.backward()
    return y, states, torch.stack(gates), x.grad, W.weight.grad, R.weight.grad, b.grad


@pytest.mark.parametrize("dtype_name, rtol, atol", [("float32", 1e-5, 1e-5), ("float64", 1e-10, 1e-12)])
def test_slstm_exponential_gating_with_its_stabiliser(dtype_name, rtol, atol):
    (y, states, gates, *grads), _ = run_both(slstm_sequence, dtype_name, rtol=rtol, atol=atol)
    assert np.all(np.abs(y) < 1) and np.all(states[2] > 0)  # |c| <= n: the normaliser bounds the output
    # stabilised gates stay <= 1 (after the first step, whose forget gate multiplies empty states)
    assert np.all(gates[:, 0] <= 1 + 1e-6) and np.all(gates[1:, 1] <= 1 + 1e-6)


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
# minGRU (Feng et al., "Were RNNs all we needed?", the log-space parallel form): g / log_g by torch.where of
# two branches (log of relu + 0.5, -softplus(-x)), the Heinsen scan (cumsum of log-coefficients padded by
# F.pad, logcumsumexp of the values, exp), against the sequential recurrence h_t = (1 - z_t) h_{t-1} + z_t
# g(h̃_t), values and gradients in float32 and float64; and a small minGRU language model trained a few
# steps with AdamW, its hidden state carried from a prefix into the continuation
# ----------------------------------------------------------------------------------------------


def make_min_gru_ops(m):
    torch, F = m.torch, m.F

    def g(x):
        return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))

    def log_g(x):
        return torch.where(x >= 0, (F.relu(x) + 0.5).log(), -F.softplus(-x))

    def parallel_scan_log(log_coeffs, log_values):
        # log_coeffs: (batch_size, seq_len, input_size), log_values: (batch_size, seq_len + 1, input_size)
        a_star = F.pad(torch.cumsum(log_coeffs, dim=1), (0, 0, 1, 0))
        log_h0_plus_b_star = torch.logcumsumexp(log_values - a_star, dim=1)
        log_h = a_star + log_h0_plus_b_star
        return torch.exp(log_h)[:, 1:]

    return g, log_g, parallel_scan_log


def make_min_gru_lm(m, vocab=11, dim=8):
    torch, nn, F = m.torch, m.nn, m.F
    g, log_g, parallel_scan_log = make_min_gru_ops(m)

    class MinGRU(nn.Module):
        def __init__(self, dim_in, dim_hidden):
            super().__init__()
            self.linear_z = nn.Linear(dim_in, dim_hidden)
            self.linear_h = nn.Linear(dim_in, dim_hidden)

        def forward(self, x, h_0=None, sequential=False):
            k = self.linear_z(x)
            tilde_h = self.linear_h(x)
            if h_0 is None:
                h_0 = torch.zeros(x.shape[0], 1, k.shape[-1], dtype=x.dtype)
            if sequential:
                z = torch.sigmoid(k)
                h_prev, hs = g(h_0[:, 0]), []
                for t in range(x.shape[1]):
                    h_prev = (1 - z[:, t]) * h_prev + z[:, t] * g(tilde_h[:, t])
                    hs.append(h_prev)
                return torch.stack(hs, dim=1)
            log_z = -F.softplus(-k)
            log_coeffs = -F.softplus(k)
            log_h_0 = log_g(h_0)
            log_tilde_h = log_g(tilde_h)
            return parallel_scan_log(log_coeffs, torch.cat([log_h_0, log_z + log_tilde_h], dim=1))

    class MinGRULM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.layers = nn.ModuleList([MinGRU(dim, dim) for _ in range(2)])
            self.norms = nn.ModuleList([nn.RMSNorm(dim) for _ in range(2)])
            self.head = nn.Linear(dim, vocab, bias=False)

        def forward(self, ids, sequential=False):
            x = self.emb(ids)
            for norm, layer in zip(self.norms, self.layers):
                x = x + layer(norm(x), sequential=sequential)
            return self.head(x)

    return MinGRULM()


def min_gru_scan_against_loop(m, dtype_name):
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    g, log_g, parallel_scan_log = make_min_gru_ops(m)
    F = m.F
    rng = np.random.default_rng(50)
    b, L, d = 2, 9, 3
    k = torch.tensor(rng.standard_normal((b, L, d)) * 2, dtype=dtype, requires_grad=True)
    tilde_h = torch.tensor(rng.standard_normal((b, L, d)) * 2, dtype=dtype, requires_grad=True)
    h_0 = torch.tensor(rng.standard_normal((b, 1, d)), dtype=dtype, requires_grad=True)
    parallel = parallel_scan_log(-F.softplus(k), torch.cat([log_g(h_0), -F.softplus(-k) + log_g(tilde_h)], dim=1))
    z = torch.sigmoid(k)
    h, hs = g(h_0[:, 0]), []
    for t in range(L):
        h = (1 - z[:, t]) * h + z[:, t] * g(tilde_h[:, t])
        hs.append(h)
    sequential = torch.stack(hs, dim=1)
    w = torch.tensor(rng.standard_normal((b, L, d)), dtype=dtype)
    leaves = (k, tilde_h, h_0)
    return parallel, sequential, torch.autograd.grad((parallel * w).sum(), leaves), \
        torch.autograd.grad((sequential * w).sum(), leaves)


@pytest.mark.parametrize("dtype_name, tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_min_gru_log_space_scan_is_the_recurrence(dtype_name, tol):
    (parallel, sequential, g_par, g_seq), _ = run_both(min_gru_scan_against_loop, dtype_name, rtol=tol * 10,
                                                       atol=tol)
    assert np.all(sequential > 0)  # g keeps the state positive: its logarithm exists
    np.testing.assert_allclose(parallel, sequential, rtol=tol * 10, atol=tol)
    for a, b in zip(g_par, g_seq):
        np.testing.assert_allclose(a, b, rtol=tol * 100, atol=tol * 10)


def min_gru_training(m, weights, steps=4):
    torch, F = m.torch, m.F
    model = load(m, make_min_gru_lm(m), weights)
    tokens = torch.tensor(np.random.default_rng(51).integers(0, 11, (4, 12)))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        parallel = model(tokens)
        sequential = model(tokens, sequential=True)
    return losses, parallel, sequential


def test_min_gru_language_model_trains_in_log_space():
    weights = weights_of(make_min_gru_lm)
    (losses, parallel, sequential), _ = run_both(min_gru_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(parallel, sequential, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Causal linear attention (Katharopoulos et al.) with the elu + 1 feature map, three ways: the masked
# quadratic form, the cumsum of outer products (einsum, cumsum over the length), and gated linear attention's
# chunkwise form with per-step decays (cumsum of log-sigmoid gates inside a chunk, a carried state between
# chunks, torch.split into chunks); values and gradients in float64
# ----------------------------------------------------------------------------------------------


def linear_attention_forms(m, chunk):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(60)
    b, h, T, dk, dv = 2, 2, 10, 3, 4
    q = torch.tensor(rng.standard_normal((b, h, T, dk)), requires_grad=True)
    k = torch.tensor(rng.standard_normal((b, h, T, dk)), requires_grad=True)
    v = torch.tensor(rng.standard_normal((b, h, T, dv)), requires_grad=True)
    gate = torch.tensor(rng.standard_normal((b, h, T)) + 2, requires_grad=True)
    leaves = (q, k, v, gate)
    phi = lambda x: F.elu(x) + 1
    eps = 1e-6

    def normalised(num, den):
        return num / (den.unsqueeze(-1) + eps)

    # quadratic, with decay: A_ts = phi(q_t) . phi(k_s) * prod_{s < r <= t} gate_r, s <= t
    Q, K = phi(q), phi(k)
    log_g = F.logsigmoid(gate)
    cum = log_g.cumsum(-1)
    decay = torch.exp((cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(
        ~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf")))
    A = (Q @ K.transpose(-1, -2)) * decay
    quadratic = normalised(A @ v, A.sum(-1))
    # recurrent by cumsum, without decay (plain linear attention) and the quadratic form without it, to check
    KV = torch.einsum("bhtd,bhte->bhtde", K, v).cumsum(2)
    Ksum = K.cumsum(2)
    plain_cumsum = normalised(torch.einsum("bhtd,bhtde->bhte", Q, KV), (Q * Ksum).sum(-1))
    A0 = (Q @ K.transpose(-1, -2)).tril()
    plain_quadratic = normalised(A0 @ v, A0.sum(-1))
    # chunkwise with decay
    S = torch.zeros(b, h, dk, dv, dtype=torch.float64)
    z = torch.zeros(b, h, dk, dtype=torch.float64)
    outs = []
    for Qc, Kc, vc, lg in zip(Q.split(chunk, 2), K.split(chunk, 2), v.split(chunk, 2), log_g.split(chunk, -1)):
        C = Qc.shape[2]
        c = lg.cumsum(-1)  # decay from the chunk's start to each step
        inner = torch.exp((c.unsqueeze(-1) - c.unsqueeze(-2)).masked_fill(
            ~torch.tril(torch.ones(C, C, dtype=torch.bool)), float("-inf")))
        Ac = (Qc @ Kc.transpose(-1, -2)) * inner
        into = torch.exp(c).unsqueeze(-1)  # the carried state, decayed to each step
        num = Ac @ vc + (Qc * into) @ S
        den = Ac.sum(-1) + ((Qc * into) * z.unsqueeze(2)).sum(-1)
        outs.append(normalised(num, den))
        to_end = torch.exp(c[..., -1:] - c).unsqueeze(-1)  # each step's key, decayed to the chunk's end
        S = S * torch.exp(c[..., -1]).view(b, h, 1, 1) + (Kc * to_end).transpose(-1, -2) @ vc
        z = z * torch.exp(c[..., -1]).unsqueeze(-1) + (Kc * to_end).sum(2)
    chunkwise = torch.cat(outs, dim=2)
    w = torch.tensor(rng.standard_normal((b, h, T, dv)))
    grads = [torch.autograd.grad((o * w).sum(), leaves, retain_graph=True) for o in (quadratic, chunkwise)]
    return quadratic, chunkwise, plain_cumsum, plain_quadratic, grads


@pytest.mark.parametrize("chunk", [3, 5])
def test_linear_attention_quadratic_cumsum_and_chunkwise_agree(chunk):
    (quadratic, chunkwise, plain_cumsum, plain_quadratic, grads), _ = run_both(
        linear_attention_forms, chunk, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(plain_cumsum, plain_quadratic, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunkwise, quadratic, rtol=1e-10, atol=1e-12)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# The Linear Recurrent Unit (Orvieto et al., 2023) as its PyTorch ports write it: a complex diagonal
# recurrence Λ = exp(-exp(ν_log) + i exp(θ_log)) from real parameters, the input projection B_re + 1j B_im
# normalised by γ = sqrt(1 - |Λ|²) (torch.abs of a complex tensor), a real input cast to complex and
# multiplied by a complex matrix, y = Re(h Cᵀ) + D x; the step-by-step recurrence against the parallel form
# by complex powers Λ^(t-s) (a complex base to a real tensor exponent, torch.where on the causal mask); the
# ring initialisation by torch.rand and log of -0.5 log(u (r_max² - r_min²) + r_min²); a few AdamW steps with
# the recurrence parameters in a group of their own learning rate
# ----------------------------------------------------------------------------------------------

LRU_IN, LRU_N, LRU_OUT = 3, 4, 2


def make_lru(m, r_min=0.4, r_max=0.9, max_phase=6.28):
    torch, nn = m.torch, m.nn

    class LRU(nn.Module):
        def __init__(self):
            super().__init__()
            u1 = torch.rand(LRU_N)
            u2 = torch.rand(LRU_N)
            self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2)))
            self.theta_log = nn.Parameter(torch.log(max_phase * u2))
            Lambda_mod = torch.exp(-torch.exp(self.nu_log))
            self.gamma_log = nn.Parameter(torch.log(torch.sqrt(torch.ones_like(Lambda_mod) - torch.square(Lambda_mod))))
            self.B_re = nn.Parameter(torch.randn(LRU_N, LRU_IN) / math.sqrt(2 * LRU_IN))
            self.B_im = nn.Parameter(torch.randn(LRU_N, LRU_IN) / math.sqrt(2 * LRU_IN))
            self.C_re = nn.Parameter(torch.randn(LRU_OUT, LRU_N) / math.sqrt(LRU_N))
            self.C_im = nn.Parameter(torch.randn(LRU_OUT, LRU_N) / math.sqrt(LRU_N))
            self.D = nn.Parameter(torch.randn(LRU_OUT, LRU_IN) / math.sqrt(LRU_IN))

        def lam(self):
            return torch.exp(-torch.exp(self.nu_log) + 1j * torch.exp(self.theta_log))

        def forward(self, x, parallel=False):  # x: (batch, length, LRU_IN)
            Lambda = self.lam()
            B_norm = (self.B_re + 1j * self.B_im) * torch.exp(self.gamma_log).unsqueeze(-1)
            C = self.C_re + 1j * self.C_im
            Bu = x.to(B_norm.dtype) @ B_norm.T  # (batch, length, N)
            L = x.shape[1]
            if parallel:
                t = torch.arange(L, dtype=x.dtype)
                lags = t[:, None] - t[None, :]  # (t, s)
                causal = lags >= 0
                powers = torch.where(causal[..., None], Lambda ** lags.clamp(min=0)[..., None],
                                     torch.zeros((), dtype=Lambda.dtype))  # (t, s, N)
                h = torch.einsum("tsn,bsn->btn", powers, Bu)
            else:
                state = torch.zeros(x.shape[0], LRU_N, dtype=Bu.dtype)
                hs = []
                for i in range(L):
                    state = Lambda * state + Bu[:, i]
                    hs.append(state)
                h = torch.stack(hs, dim=1)
            return (h @ C.T).real + x @ self.D.T

    return LRU()


def lru_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    model = make_lru(m).double()
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(70)
    x = torch.tensor(rng.standard_normal((3, 8, LRU_IN)))
    target = torch.tensor(rng.standard_normal((3, 8, LRU_OUT)))
    y_seq, y_par = model(x), model(x, parallel=True)
    names = ["nu_log", "theta_log", "gamma_log", "B_re", "B_im", "C_re", "C_im", "D"]
    params = [getattr(model, n) for n in names]
    g_seq = torch.autograd.grad(F.mse_loss(y_seq, target), params)
    g_par = torch.autograd.grad(F.mse_loss(y_par, target), params)
    recurrence = [p for n, p in model.named_parameters() if n in ("nu_log", "theta_log", "gamma_log")]
    others = [p for n, p in model.named_parameters() if n not in ("nu_log", "theta_log", "gamma_log")]
    optimizer = m.optim.AdamW([{"params": recurrence, "lr": 1e-3, "weight_decay": 0.0},
                               {"params": others}], lr=1e-2, weight_decay=0.05)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return y_seq, y_par, g_seq, g_par, losses, model.lam().abs()


def test_lru_complex_recurrence_and_its_parallel_form():
    weights = weights_of(make_lru)
    modulus = np.exp(-np.exp(weights["nu_log"]))
    assert np.all((modulus >= 0.4) & (modulus <= 0.9))  # the ring initialisation
    (y_seq, y_par, g_seq, g_par, losses, lam_abs), _ = run_both(lru_program, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(y_par, y_seq, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_par, g_seq):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    assert losses[-1] < losses[0] and np.all(lam_abs < 1)


# ----------------------------------------------------------------------------------------------
# S4's original kernel (Gu et al., 2022, Algorithm 1): HiPPO-LegS A and B, the normal-plus-low-rank split
# A = V Λ V* - P P* found by torch.linalg.eigh of the complex Hermitian AP · -1j, the truncated generating
# function at the roots of unity through Cauchy sums (z - Λ)^-1 and the Woodbury identity, and the kernel
# by torch.fft.ifft; against the kernel of the bilinear discretisation Ā = (I - dt/2 A)^-1 (I + dt/2 A)
# (torch.linalg.solve) by its powers C Ā^k B̄, values and gradients in float64
# ----------------------------------------------------------------------------------------------


def s4_kernel_program(m, N=6, L=10):
    torch = m.torch
    q = np.arange(N, dtype=np.float64)
    col, row = np.meshgrid(q, q)
    r = 2 * q + 1
    M = -(np.where(row >= col, r, 0) - np.diag(q))
    T = np.sqrt(np.diag(2 * q + 1))
    A_np = T @ M @ np.linalg.inv(T)  # HiPPO-LegS
    B_np = np.diag(T)[:, None].copy()  # (np.diag gives a read-only view)
    A = torch.as_tensor(A_np)
    B = torch.as_tensor(B_np)[:, 0]
    P = torch.sqrt(0.5 + torch.arange(N, dtype=torch.float64)).unsqueeze(0)  # rank-1 correction (1, N)
    AP = A + torch.sum(P.unsqueeze(-2) * P.unsqueeze(-1), dim=-3)
    W_re = torch.mean(torch.diagonal(AP), -1, keepdim=True)  # AP = -1/2 I + skew-symmetric
    W_im, V = torch.linalg.eigh(AP * -1j)
    W = W_re + 1j * W_im
    reconstructed = V @ torch.diag_embed(W) @ V.conj().transpose(-1, -2)
    V_inv = V.conj().transpose(-1, -2)
    B_t = V_inv @ B.to(V.dtype)
    P_t = V_inv @ P[0].to(V.dtype)

    rng = np.random.default_rng(80)
    C = torch.tensor(rng.standard_normal(N), requires_grad=True)
    log_dt = torch.tensor(math.log(0.1), dtype=torch.float64, requires_grad=True)
    dt = torch.exp(log_dt)
    I = torch.eye(N, dtype=torch.float64)
    # bilinear discretisation and the kernel by powers
    back = I - dt / 2 * A
    dA = torch.linalg.solve(back, I + dt / 2 * A)
    dB = torch.linalg.solve(back, (dt * B).unsqueeze(-1))[:, 0]
    powers = []
    x = dB
    for k in range(L):
        powers.append(C @ x)
        x = dA @ x
    K_powers = torch.stack(powers)
    # Algorithm 1: C~ = C (I - Ā^L), the generating function at the roots of unity
    C_tilde = C @ (I - torch.linalg.matrix_power(dA, L))
    C_t = C_tilde.to(V.dtype) @ V  # in Λ's basis
    omega = torch.exp(-2j * math.pi / L * torch.arange(L, dtype=torch.float64))  # (an int64 arange: complex64)
    z = 2 / dt * (1 - omega) / (1 + omega)
    R = 1 / (z.unsqueeze(-1) - W)  # (L, N): the Cauchy kernel

    def cauchy(a, b):
        return (a * b * R).sum(-1)

    k00 = cauchy(C_t, B_t)
    k01 = cauchy(C_t, P_t)
    k10 = cauchy(P_t.conj(), B_t)
    k11 = cauchy(P_t.conj(), P_t)
    K_hat = 2 / (1 + omega) * (k00 - k01 * k10 / (1 + k11))
    K_fft = torch.fft.ifft(K_hat, n=L)
    w = torch.tensor(rng.standard_normal(L))
    g_powers = torch.autograd.grad((K_powers * w).sum(), (C, log_dt), retain_graph=True)
    g_fft = torch.autograd.grad((K_fft.real * w).sum(), (C, log_dt))
    return K_powers, K_fft, g_powers, g_fft, W.imag.sort().values, reconstructed, AP


def test_s4_cauchy_woodbury_kernel_is_the_discretised_ssm():
    (K_powers, K_fft, g_powers, g_fft, W_im, reconstructed, AP), theirs = run_both(
        s4_kernel_program, compare=False)
    np.testing.assert_allclose(reconstructed, AP, atol=1e-12)  # V Λ V* = AP
    np.testing.assert_allclose(K_fft.real, K_powers, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(K_fft.imag, 0, atol=1e-12)
    for a, b in zip(g_fft, g_powers):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    if theirs is not None:  # the eigenvectors' phases are LAPACK's choice: compare what does not depend on them
        np.testing.assert_allclose(W_im, theirs[4], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(K_fft, theirs[1], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(K_powers, theirs[0], rtol=1e-10, atol=1e-12)
        for a, b in zip(g_fft + g_powers, theirs[3] + theirs[2]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Griffin's recurrent block (google-deepmind/recurrentgemma, torch/layers.py): the RG-LRU with block-diagonal
# gates (einsum over heads), log a = -8 · gate · softplus(Λ), a custom autograd.Function that bounds sqrt's
# derivative (clip of 4x before the division), resets at document starts as boolean arithmetic
# (reset + ~reset * multiplier, a * ~reset), the scan written into a preallocated zeros_like output, the
# temporal Conv1D as shifted windows with F.pad, and the softplus-inverse rnn_param_init done in place
# (uniform_, log_, mul_, neg_, exp_, sub_); a packed sequence of two documents against each run alone, and a
# few AdamW steps with gradient clipping
# ----------------------------------------------------------------------------------------------

GR_W, GR_H, GR_TW = 6, 2, 3
_MAX_SQRT_GRADIENT = 1000.0


def make_griffin_block(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SqrtBoundDerivative(torch.autograd.Function):
        """Computes a square root with a gradient clipped at `_MAX_SQRT_GRADIENT`."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sqrt(x)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            clipped_x_times_4 = torch.clip(4.0 * x, min=_MAX_SQRT_GRADIENT ** -2)
            return grad_output / torch.sqrt(clipped_x_times_4)

    def rnn_param_init(tensor, min_rad, max_rad, transform="softplus", eps=1e-8):
        with torch.no_grad():
            tensor.uniform_(min_rad ** 2 + eps, max_rad ** 2 + eps)
            tensor.log_().mul_(0.5)
            if transform == "softplus":
                return tensor.neg_().exp_().sub_(1.0).log_()
            return tensor

    class BlockDiagonalLinear(nn.Module):
        def __init__(self, width, num_blocks):
            super().__init__()
            self.num_blocks = num_blocks
            self.block_width = width // num_blocks
            self.w = nn.Parameter(torch.randn([num_blocks, self.block_width, self.block_width])
                                  / math.sqrt(self.block_width))
            self.b = nn.Parameter(torch.zeros([num_blocks, self.block_width]))

        def forward(self, x):
            x = x.reshape(*x.shape[:-1], self.num_blocks, self.block_width)  # "... (h i) -> ... h i"
            y = torch.einsum("... h i, h i j -> ... h j", x, self.w) + self.b
            return y.reshape(*y.shape[:-2], -1)  # "... h j -> ... (h j)"

    def rnn_scan(x, a, reset, h0, acc_dtype=torch.float32):
        a = a * ~reset
        h_t = torch.zeros(x[:, 0].shape, dtype=acc_dtype) if h0 is None else h0
        y = torch.zeros_like(x)
        for t in range(x.shape[1]):
            h_t = a[:, t].type(acc_dtype) * h_t + x[:, t].type(acc_dtype)
            y[:, t] = h_t.type(x.dtype)
        return y, h_t

    class RGLRU(nn.Module):
        def __init__(self, width, num_heads):
            super().__init__()
            self.a_param = nn.Parameter(torch.empty([width]))
            self.input_gate = BlockDiagonalLinear(width, num_heads)
            self.a_gate = BlockDiagonalLinear(width, num_heads)
            rnn_param_init(self.a_param, min_rad=0.9, max_rad=0.999)

        def forward(self, x, segment_pos, prev_h=None):
            reset = segment_pos[:, :, None] == 0
            gate_x = torch.sigmoid(self.input_gate(x))
            gate_a = torch.sigmoid(self.a_gate(x))
            log_a = -8.0 * gate_a * F.softplus(self.a_param)
            a = torch.exp(log_a)
            a_square = torch.exp(2 * log_a)
            gated_x = x * gate_x
            multiplier = SqrtBoundDerivative.apply(1 - a_square)
            multiplier = reset + ~reset * multiplier
            normalized_x = gated_x * multiplier.type(x.dtype)
            return rnn_scan(x=normalized_x, a=a, reset=reset, h0=prev_h)

    class Conv1D(nn.Module):
        def __init__(self, width, temporal_width):
            super().__init__()
            self.temporal_width = temporal_width
            self.w = nn.Parameter(torch.randn([temporal_width, width]) * 0.1)
            self.b = nn.Parameter(torch.zeros([width]))

        def forward(self, x, segment_pos):
            output_len = x.shape[1]
            conv_output = 0.0
            for temporal_shift in range(self.temporal_width):
                x_window = x[:, :output_len - temporal_shift]
                x_window = F.pad(x_window, (0, 0, temporal_shift, 0))  # shift right by temporal_shift
                # no mixing across documents: a token sees only those of its own document
                document_start = (segment_pos >= temporal_shift)[:, :, None]
                w_t = self.w[self.temporal_width - temporal_shift - 1]
                conv_output = conv_output + x_window * w_t[None, None] * document_start
            return conv_output + self.b[None, None]

    class RecurrentBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear_y = nn.Linear(GR_W, GR_W)
            self.linear_x = nn.Linear(GR_W, GR_W)
            self.linear_out = nn.Linear(GR_W, GR_W)
            self.conv_1d = Conv1D(GR_W, GR_TW)
            self.rg_lru = RGLRU(GR_W, GR_H)

        def forward(self, x, segment_pos):
            y = F.gelu(self.linear_y(x), approximate="tanh")
            x = self.linear_x(x)
            x = self.conv_1d(x, segment_pos)
            x, last_h = self.rg_lru(x, segment_pos)
            return self.linear_out(x * y), last_h

    return RecurrentBlock()


def griffin_program(m, weights, steps=3):
    torch, F = m.torch, m.F
    block = make_griffin_block(m)
    block.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(90)
    x = torch.tensor(rng.standard_normal((2, 9, GR_W)), dtype=torch.float32)
    # two documents packed in the first row (lengths 4 and 5), one in the second
    segment_pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4], list(range(9))])
    packed, _ = block(x, segment_pos)
    alone_a, _ = block(x[:1, :4], segment_pos[:1, :4])
    alone_b, _ = block(x[:1, 4:], segment_pos[:1, 4:])
    target = torch.tensor(rng.standard_normal((2, 9, GR_W)), dtype=torch.float32)
    optimizer = m.optim.AdamW(block.parameters(), lr=1e-2, weight_decay=0.1)
    losses, norms = [], []
    for step in range(steps):
        optimizer.zero_grad()
        out, _ = block(x, segment_pos)
        loss = F.mse_loss(out, target)
        loss.backward()
        norms.append(m.nn.utils.clip_grad_norm_(block.parameters(), max_norm=0.5))
        optimizer.step()
        losses.append(loss.item())
    # the bounded derivative: at 1 - a² = 0 the gradient is finite, 1 / sqrt(1000^-2) = 1000
    z = torch.zeros(3, requires_grad=True)
    sqrt_grad = torch.autograd.grad(_sqrt_bound(m)(z).sum(), z)[0]
    return packed, alone_a, alone_b, losses, norms, sqrt_grad


def _sqrt_bound(m):
    """The block's SqrtBoundDerivative on its own."""
    torch = m.torch

    class SqrtBoundDerivative(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sqrt(x)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output / torch.sqrt(torch.clip(4.0 * x, min=_MAX_SQRT_GRADIENT ** -2))

    return SqrtBoundDerivative.apply


def test_griffin_recurrent_block_resets_at_document_starts():
    weights = weights_of(make_griffin_block)
    a_param = weights["rg_lru.a_param"]
    a = np.exp(-8 * np.log1p(np.exp(a_param)))  # a at a gate of 1: the init puts it in [0.9, 0.999]^8
    assert np.all((a >= 0.9 ** 8 * 0.999) & (a <= 0.999 ** 8 * 1.001))
    (packed, alone_a, alone_b, losses, norms, sqrt_grad), _ = run_both(griffin_program, weights, rtol=1e-4,
                                                                       atol=1e-5)
    np.testing.assert_allclose(packed[:1, :4], alone_a, rtol=1e-5, atol=1e-6)  # documents do not mix
    np.testing.assert_allclose(packed[:1, 4:], alone_b, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(sqrt_grad, 1000.0, rtol=1e-6)


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
