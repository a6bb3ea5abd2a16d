# ruff: noqa: B007, B009, B010  (the programs are kept as their authors wrote them)
"""Sequence models beyond attention (see tests/pytorch_programs.py), as PyTorch users write them in pure PyTorch,
each run on chainrule and on PyTorch and compared (values and gradients, float32 and float64), and every scan,
parallel or chunkwise form checked against its loop form. S4D (complex diagonal state kept by view_as_real,
Vandermonde kernel, rfft/irfft with n=2L, _optim parameter groups, a cosine schedule) against its complex recurrence;
S4's Cauchy/Woodbury kernel (complex Hermitian eigh of the HiPPO-LegS NPLR form, ifft at the roots of unity) against
the bilinear-discretised SSM's powers; the Linear Recurrent Unit (complex Λ from real parameters, parallel form by
complex powers)."""

import math

import numpy as np

from .pytorch_programs import run_both, weights_of

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
