# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Object-detection and audio programs written with plain tensor idioms, as the model repositories write them without
torchvision / torchaudio, run as tests/probe10_detect_common.py says. Audio models: WaveNet's causal dilated gated
stack; a Conformer block (GLU, depthwise Conv1d, BatchNorm1d, masked attention); HiFi-GAN's weight-normed generator
and multi-period discriminator; Conv-TasNet's ``overlap_and_add`` (``index_add_``) with PIT SI-SNR."""

import math

import numpy as np
import pytest

from .probe10_detect_common import audio_signal
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# WaveNet: causal dilated Conv1d (padded on the left), gated units, residual and skip sums
# ----------------------------------------------------------------------------------------------


def mu_law_encoding(x, quantization_channels):
    mu = quantization_channels - 1.0
    x_mu = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return ((x_mu + 1) / 2 * mu + 0.5).astype(np.int64)


def wavenet_model(m):
    nn, F = m.nn, m.F

    class CausalConv1d(nn.Conv1d):
        def __init__(self, in_channels, out_channels, kernel_size, dilation=1):
            super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
            self.left_padding = (kernel_size - 1) * dilation

        def forward(self, x):
            return super().forward(F.pad(x, (self.left_padding, 0)))

    class ResidualBlock(nn.Module):
        def __init__(self, res_channels, skip_channels, dilation):
            super().__init__()
            self.dilated = CausalConv1d(res_channels, 2 * res_channels, 2, dilation=dilation)
            self.conv_res = nn.Conv1d(res_channels, res_channels, 1)
            self.conv_skip = nn.Conv1d(res_channels, skip_channels, 1)

        def forward(self, x):
            filt, gate = self.dilated(x).chunk(2, dim=1)
            gated = torch_tanh(filt) * torch_sigmoid(gate)
            return self.conv_res(gated) + x, self.conv_skip(gated)

    torch_tanh, torch_sigmoid = m.torch.tanh, m.torch.sigmoid

    class WaveNet(nn.Module):
        def __init__(self, classes=16, res=8, skip=12, dilations=(1, 2, 4, 8, 1, 2)):
            super().__init__()
            self.embed = nn.Embedding(classes, res)
            self.causal = CausalConv1d(res, res, 2)
            self.blocks = nn.ModuleList(ResidualBlock(res, skip, d) for d in dilations)
            self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(skip, skip, 1), nn.ReLU(), nn.Conv1d(skip, classes, 1))

        @property
        def receptive_field(self):
            return 1 + sum(b.dilated.left_padding for b in self.blocks) + self.causal.left_padding

        def forward(self, x):
            h = self.causal(self.embed(x).transpose(1, 2))
            skip_sum = 0
            for block in self.blocks:
                h, skip = block(h)
                skip_sum = skip_sum + skip
            return self.head(skip_sum)

    return WaveNet()


def wavenet_program(m, weights, steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    model = wavenet_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    wave = np.sin(np.arange(2 * 41) * 0.3).reshape(2, 41) * 0.8
    q = torch.tensor(mu_law_encoding(wave, 16))
    inputs, targets = q[:, :-1], q[:, 1:]
    opt = optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        logits = model(inputs)  # [B, classes, T]
        loss = F.cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(
            model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    # causality: changing a later sample leaves earlier outputs alone
    x2 = inputs.clone()
    x2[:, 30] = (x2[:, 30] + 5) % 16
    with torch.no_grad():
        a, b = model(inputs), model(x2)
    unchanged = torch.allclose(a[..., :30], b[..., :30])
    # sampling by argmax, one step at a time over the receptive field
    gen = inputs[:1, :model.receptive_field].clone()
    with torch.no_grad():
        for _ in range(5):
            nxt = model(gen[:, -model.receptive_field:])[:, :, -1].argmax(1, keepdim=True)
            gen = torch.cat([gen, nxt], dim=1)
    return losses, unchanged, (a[..., 30:] - b[..., 30:]).abs().sum() > 0, gen, model.blocks[0].dilated.weight.grad


def test_wavenet_causal_dilated_gated_stack():
    weights = weights_of(lambda m: wavenet_program(m, None))
    (losses, unchanged, changed, gen, g), _ = run_both(wavenet_program, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and unchanged and changed and gen.shape == (1, 25)


# ----------------------------------------------------------------------------------------------
# A Conformer convolution module: pointwise conv, GLU, depthwise conv, BatchNorm1d, SiLU
# ----------------------------------------------------------------------------------------------


def conformer_model(m):
    nn = m.nn

    class ConvolutionModule(nn.Module):
        def __init__(self, input_dim, num_channels, depthwise_kernel_size, dropout=0.0):
            super().__init__()
            self.layer_norm = nn.LayerNorm(input_dim)
            self.sequential = nn.Sequential(
                nn.Conv1d(input_dim, 2 * num_channels, 1, stride=1, padding=0),
                nn.GLU(dim=1),
                nn.Conv1d(num_channels, num_channels, depthwise_kernel_size, stride=1,
                          padding=(depthwise_kernel_size - 1) // 2, groups=num_channels),
                nn.BatchNorm1d(num_channels),
                nn.SiLU(),
                nn.Conv1d(num_channels, input_dim, kernel_size=1, stride=1, padding=0),
                nn.Dropout(dropout),
            )

        def forward(self, input):
            x = self.layer_norm(input)
            x = x.transpose(1, 2)
            x = self.sequential(x)
            return x.transpose(1, 2)

    class FeedForward(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))

        def forward(self, x):
            return self.net(x)

    class ConformerBlock(nn.Module):
        def __init__(self, d=8, heads=2):
            super().__init__()
            self.ffn1 = FeedForward(d)
            self.attn_norm = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.conv = ConvolutionModule(d, d, 5)
            self.ffn2 = FeedForward(d)
            self.final_norm = nn.LayerNorm(d)

        def forward(self, x, key_padding_mask):
            x = x + 0.5 * self.ffn1(x)
            h = self.attn_norm(x)
            x = x + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
            x = x + self.conv(x)
            x = x + 0.5 * self.ffn2(x)
            return self.final_norm(x)

    return ConformerBlock()


def conformer_program(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = conformer_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(14)
    x = torch.tensor(rng.standard_normal((3, 12, 8)), dtype=torch.float32)
    lengths = torch.tensor([12, 9, 7])
    key_padding_mask = torch.arange(12).expand(3, 12) >= lengths[:, None]
    target = torch.tensor(rng.standard_normal((3, 12, 8)), dtype=torch.float32)
    # SGD, not Adam: the depthwise conv's bias (before BatchNorm) and the attention's key bias have gradient 0
    # in exact arithmetic, and Adam would blow their rounding noise (1e-8) up to full steps of lr
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    losses = []
    model.train()
    for _ in range(steps):
        out = model(x, key_padding_mask)
        valid = ~key_padding_mask
        loss = F.mse_loss(out[valid], target[valid])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    bn = model.conv.sequential[3]
    model.eval()
    with torch.no_grad():
        ev = model(x, key_padding_mask)
    return (losses, model.conv.sequential[2].weight.grad, model.conv.sequential[0].weight.grad, bn.running_mean,
            bn.running_var, bn.num_batches_tracked, ev[~key_padding_mask])


def test_conformer_convolution_module():
    weights = weights_of(lambda m: conformer_program(m, None))
    (losses, g_dw, g_pw, rm, rv, nbt, ev), _ = run_both(conformer_program, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and g_dw.shape == (8, 1, 5) and int(nbt) == 3


# ----------------------------------------------------------------------------------------------
# HiFi-GAN: weight-normed ConvTranspose1d generator with MRF blocks, a multi-period discriminator
# ----------------------------------------------------------------------------------------------


def hifigan_models(m, parametrized):
    nn, F = m.nn, m.F
    weight_norm = nn.utils.parametrizations.weight_norm if parametrized else nn.utils.weight_norm
    LRELU_SLOPE = 0.1

    def get_padding(kernel_size, dilation=1):
        return int((kernel_size * dilation - dilation) / 2)

    def init_weights(mod, mean=0.0, std=0.01):
        if mod.__class__.__name__.find("Conv") != -1:
            mod.weight.data.normal_(mean, std)

    class ResBlock(nn.Module):
        def __init__(self, channels, kernel_size=3, dilation=(1, 3)):
            super().__init__()
            self.convs = nn.ModuleList([weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                                              padding=get_padding(kernel_size, d)))
                                        for d in dilation])

        def forward(self, x):
            for c in self.convs:
                xt = F.leaky_relu(x, LRELU_SLOPE)
                xt = c(xt)
                x = xt + x
            return x

    class Generator(nn.Module):
        def __init__(self, in_ch=4, up_rates=(2, 2), up_kernels=(4, 4), ch=8):
            super().__init__()
            self.conv_pre = weight_norm(nn.Conv1d(in_ch, ch, 7, 1, padding=3))
            self.ups = nn.ModuleList()
            for i, (u, k) in enumerate(zip(up_rates, up_kernels)):
                self.ups.append(weight_norm(nn.ConvTranspose1d(ch // (2 ** i), ch // (2 ** (i + 1)), k, u,
                                                               padding=(k - u) // 2)))
            self.resblocks = nn.ModuleList()
            for i in range(len(self.ups)):
                c = ch // (2 ** (i + 1))
                for k, d in zip((3, 5), ((1, 3), (1, 2))):
                    self.resblocks.append(ResBlock(c, k, d))
            self.conv_post = weight_norm(nn.Conv1d(c, 1, 7, 1, padding=3))
            self.ups.apply(init_weights)
            self.num_kernels = 2

        def forward(self, x):
            x = self.conv_pre(x)
            for i, up in enumerate(self.ups):
                x = F.leaky_relu(x, LRELU_SLOPE)
                x = up(x)
                xs = None
                for j in range(self.num_kernels):
                    if xs is None:
                        xs = self.resblocks[i * self.num_kernels + j](x)
                    else:
                        xs += self.resblocks[i * self.num_kernels + j](x)
                x = xs / self.num_kernels
            x = F.leaky_relu(x)
            x = self.conv_post(x)
            return torch_tanh(x)

    torch_tanh = m.torch.tanh

    class DiscriminatorP(nn.Module):
        def __init__(self, period, kernel_size=5, stride=3):
            super().__init__()
            self.period = period
            self.convs = nn.ModuleList([
                weight_norm(nn.Conv2d(1, 4, (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                weight_norm(nn.Conv2d(4, 8, (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
            ])
            self.conv_post = weight_norm(nn.Conv2d(8, 1, (3, 1), 1, padding=(1, 0)))

        def forward(self, x):
            fmap = []
            b, c, t = x.shape
            if t % self.period != 0:  # pad first
                n_pad = self.period - (t % self.period)
                x = F.pad(x, (0, n_pad), "reflect")
                t = t + n_pad
            x = x.view(b, c, t // self.period, self.period)
            for l in self.convs:
                x = l(x)
                x = F.leaky_relu(x, LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            x = m.torch.flatten(x, 1, -1)
            return x, fmap

    class MultiPeriodDiscriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.discriminators = nn.ModuleList([DiscriminatorP(2), DiscriminatorP(3), DiscriminatorP(5)])

        def forward(self, y, y_hat):
            y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
            for d in self.discriminators:
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)
            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    return nn.ModuleDict({"generator": Generator(), "mpd": MultiPeriodDiscriminator()})


def hifigan_program(m, weights, parametrized, steps=2):
    torch, F, optim = m.torch, m.F, m.optim
    models = hifigan_models(m, parametrized)
    if weights is None:
        return models
    load(m, models, weights)
    generator, mpd = models["generator"], models["mpd"]

    def feature_loss(fmap_r, fmap_g):
        loss = 0
        for dr, dg in zip(fmap_r, fmap_g):
            for rl, gl in zip(dr, dg):
                loss += torch.mean(torch.abs(rl - gl))
        return loss * 2

    def discriminator_loss(disc_real_outputs, disc_generated_outputs):
        loss = 0
        for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
            loss += torch.mean((1 - dr) ** 2) + torch.mean(dg ** 2)
        return loss

    def generator_loss(disc_outputs):
        loss = 0
        for dg in disc_outputs:
            loss += torch.mean((1 - dg) ** 2)
        return loss

    rng = np.random.default_rng(24)
    mel = torch.tensor(rng.standard_normal((2, 4, 10)), dtype=torch.float32)
    y = torch.tensor(audio_signal(n=40, seed=25)[:, None] * 0.5, dtype=torch.float32)
    optim_g = optim.AdamW(generator.parameters(), 2e-4, betas=(0.8, 0.99))
    optim_d = optim.AdamW(mpd.parameters(), 2e-4, betas=(0.8, 0.99))
    scheduler_g = optim.lr_scheduler.ExponentialLR(optim_g, gamma=0.999)
    history = []
    for _ in range(steps):
        y_g_hat = generator(mel)
        optim_d.zero_grad()
        y_df_hat_r, y_df_hat_g, _, _ = mpd(y, y_g_hat.detach())
        loss_disc_all = discriminator_loss(y_df_hat_r, y_df_hat_g)
        loss_disc_all.backward()
        optim_d.step()
        optim_g.zero_grad()
        y_df_hat_r, y_df_hat_g, fmap_f_r, fmap_f_g = mpd(y, y_g_hat)
        loss_gen_all = generator_loss(y_df_hat_g) + feature_loss(fmap_f_r, fmap_f_g) + \
            F.l1_loss(y_g_hat, y) * 45
        loss_gen_all.backward()
        optim_g.step()
        scheduler_g.step()
        history.append([loss_disc_all.item(), loss_gen_all.item()])
    grads = {k: p.grad for k, p in generator.named_parameters() if p.grad is not None}
    return history, y_g_hat, grads, sorted(grads)


@pytest.mark.filterwarnings("ignore:.*weight_norm. is deprecated:FutureWarning")
@pytest.mark.parametrize("parametrized", [False, True])
def test_hifigan_weight_norm_generator_and_period_discriminator(parametrized):
    weights = weights_of(lambda m: hifigan_program(m, None, parametrized))
    (history, audio, grads, names), _ = run_both(hifigan_program, weights, parametrized, rtol=1e-4, atol=1e-6)
    assert audio.shape == (2, 1, 40) and len(names) == 3 * (1 + 2 + 4 * 2 + 1)  # weight_g, weight_v, bias of 12 convs


# ----------------------------------------------------------------------------------------------
# Conv-TasNet pieces: a strided Conv1d encoder, masks, overlap_and_add by index_add_, and the
# permutation-invariant SI-SNR loss
# ----------------------------------------------------------------------------------------------


def overlap_and_add(m, signal, frame_step):
    torch = m.torch
    outer_dimensions = signal.size()[:-2]
    frames, frame_length = signal.size()[-2:]
    subframe_length = math.gcd(frame_length, frame_step)  # gcd=Greatest Common Divisor
    subframe_step = frame_step // subframe_length
    subframes_per_frame = frame_length // subframe_length
    output_size = frame_step * (frames - 1) + frame_length
    output_subframes = output_size // subframe_length
    subframe_signal = signal.view(*outer_dimensions, -1, subframe_length)
    frame = torch.arange(0, output_subframes).unfold(0, subframes_per_frame, subframe_step)
    frame = frame.clone().detach().to(signal.device).long()
    frame = frame.contiguous().view(-1)
    result = signal.new_zeros(*outer_dimensions, output_subframes, subframe_length)
    result.index_add_(-2, frame, subframe_signal)
    result = result.view(*outer_dimensions, -1)
    return result


def tasnet_model(m):
    nn, F = m.nn, m.F

    class TinyTasNet(nn.Module):
        def __init__(self, L=4, N=8, C=2):
            super().__init__()
            self.L, self.N, self.C = L, N, C
            self.conv1d_U = nn.Conv1d(1, N, kernel_size=L, stride=L // 2, bias=False)
            self.separator = nn.Sequential(nn.GroupNorm(1, N), nn.Conv1d(N, N, 1), nn.PReLU(),
                                           nn.Conv1d(N, N, 3, padding=2, dilation=2, groups=N),
                                           nn.Conv1d(N, C * N, 1))
            self.basis_signals = nn.Linear(N, L, bias=False)

        def forward(self, mixture):
            mixture_w = F.relu(self.conv1d_U(mixture.unsqueeze(1)))  # [M, N, K]
            M, N, K = mixture_w.size()
            score = self.separator(mixture_w).view(M, self.C, N, K)
            est_mask = F.softmax(score, dim=1)
            source_w = mixture_w.unsqueeze(1) * est_mask  # [M, C, N, K]
            source_w = source_w.transpose(2, 3)  # [M, C, K, N]
            est_source = self.basis_signals(source_w)  # [M, C, K, L]
            return overlap_and_add(m, est_source, self.L // 2)  # M x C x T

    return TinyTasNet()


def tasnet_program(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    from itertools import permutations
    model = tasnet_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    EPS = 1e-8

    def cal_si_snr_with_pit(source, estimate_source, source_lengths):
        B, C, T = source.size()
        mask = (torch.arange(T)[None, :] < source_lengths[:, None]).unsqueeze(1).to(source.dtype)  # [B, 1, T]
        estimate_source = estimate_source * mask
        num_samples = source_lengths.view(-1, 1, 1).float()
        mean_target = torch.sum(source, dim=2, keepdim=True) / num_samples
        mean_estimate = torch.sum(estimate_source, dim=2, keepdim=True) / num_samples
        zero_mean_target = (source - mean_target) * mask
        zero_mean_estimate = (estimate_source - mean_estimate) * mask
        s_target = torch.unsqueeze(zero_mean_target, dim=1)  # [B, 1, C, T]
        s_estimate = torch.unsqueeze(zero_mean_estimate, dim=2)  # [B, C, 1, T]
        pair_wise_dot = torch.sum(s_estimate * s_target, dim=3, keepdim=True)  # [B, C, C, 1]
        s_target_energy = torch.sum(s_target ** 2, dim=3, keepdim=True) + EPS  # [B, 1, C, 1]
        pair_wise_proj = pair_wise_dot * s_target / s_target_energy  # [B, C, C, T]
        e_noise = s_estimate - pair_wise_proj  # [B, C, C, T]
        pair_wise_si_snr = torch.sum(pair_wise_proj ** 2, dim=3) / (torch.sum(e_noise ** 2, dim=3) + EPS)
        pair_wise_si_snr = 10 * torch.log10(pair_wise_si_snr + EPS)  # [B, C, C]
        perms = source.new_tensor(list(permutations(range(C))), dtype=torch.long)
        index = torch.unsqueeze(perms, 2)
        perms_one_hot = source.new_zeros((*perms.size(), C)).scatter_(2, index, 1)
        snr_set = torch.einsum("bij,pij->bp", [pair_wise_si_snr, perms_one_hot])
        max_snr_idx = torch.argmax(snr_set, dim=1)  # [B]
        max_snr, _ = torch.max(snr_set, dim=1, keepdim=True)
        max_snr /= C
        return max_snr, perms, max_snr_idx

    rng = np.random.default_rng(35)
    sources = torch.tensor(np.stack([audio_signal(n=30, seed=36), audio_signal(n=30, seed=37)[::-1].copy()]),
                           dtype=torch.float32)  # [B, C, T]
    mixture = sources.sum(1)
    lengths = torch.tensor([30, 24])
    opt = optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(steps):
        est = model(mixture)
        max_snr, perms, max_snr_idx = cal_si_snr_with_pit(sources, est, lengths)
        loss = 0 - torch.mean(max_snr)
        opt.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 5)
        opt.step()
        history.append(loss.item())
    reorder = torch.index_select(perms, dim=0, index=max_snr_idx)
    return history, est, reorder, model.conv1d_U.weight.grad, model.separator[2].weight.grad


def test_conv_tasnet_overlap_add_and_pit_si_snr():
    weights = weights_of(lambda m: tasnet_program(m, None))
    (history, est, reorder, g_enc, g_prelu), _ = run_both(tasnet_program, weights, rtol=1e-4, atol=1e-5)
    assert est.shape == (2, 2, 30) and history[-1] < history[0] and reorder.dtype == np.int64


def test_overlap_and_add_against_numpy():
    frames = np.random.default_rng(38).standard_normal((2, 5, 6))
    (out, grad), _ = run_both(lambda m: (lambda f: (overlap_and_add(m, f, 4), m.torch.autograd.grad(
        overlap_and_add(m, f, 4).pow(2).sum(), f)[0]))(m.torch.tensor(frames, requires_grad=True)),
        rtol=1e-12, atol=1e-12)
    expected = np.zeros((2, 22))
    for k in range(5):
        expected[:, 4 * k:4 * k + 6] += frames[:, k]
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert grad.shape == (2, 5, 6)
