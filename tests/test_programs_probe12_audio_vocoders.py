# ruff: noqa: B006, B007, E712, E731, UP008  (the programs are kept as their authors wrote them)
"""Audio and signal-processing programs, written by hand as torchaudio's and the speech papers' authors write them,
run as tests/probe12_audio_common.py says. Waveform generators: the multi-resolution STFT loss of Parallel WaveGAN
training a small generator; a WaveNet (dilated causal ``Conv1d`` by left ``F.pad``, gated tanh·sigmoid units,
residual and skip connections, local conditioning) on mu-law classes (``sign``, ``log1p``); HiFi-GAN
(``weight_norm``, ``spectral_norm``, transposed convolutions, the period and scale discriminators and their losses)."""

import math

import numpy as np
import pytest

from .probe12_audio_common import waveform
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Multi-resolution STFT loss (Parallel WaveGAN, Yamamoto et al. 2020), training a small generator
# ----------------------------------------------------------------------------------------------


def mr_stft_program(m, target, weights=None):
    torch, nn, F = m.torch, m.nn, m.F

    def stft(x, fft_size, hop_size, win_length, window):
        x_stft = torch.stft(x, fft_size, hop_size, win_length, window, return_complex=True)
        real = x_stft.real
        imag = x_stft.imag
        # NOTE(kan-bayashi): clamp is needed to avoid nan or inf
        return torch.sqrt(torch.clamp(real ** 2 + imag ** 2, min=1e-7)).transpose(2, 1)

    class SpectralConvergenceLoss(nn.Module):
        def forward(self, x_mag, y_mag):
            return torch.norm(y_mag - x_mag, p="fro") / torch.norm(y_mag, p="fro")

    class LogSTFTMagnitudeLoss(nn.Module):
        def forward(self, x_mag, y_mag):
            return F.l1_loss(torch.log(y_mag), torch.log(x_mag))

    class STFTLoss(nn.Module):
        def __init__(self, fft_size=1024, shift_size=120, win_length=600, window="hann_window"):
            super().__init__()
            self.fft_size = fft_size
            self.shift_size = shift_size
            self.win_length = win_length
            self.register_buffer("window", getattr(torch, window)(win_length))
            self.spectral_convergence_loss = SpectralConvergenceLoss()
            self.log_stft_magnitude_loss = LogSTFTMagnitudeLoss()

        def forward(self, x, y):
            x_mag = stft(x, self.fft_size, self.shift_size, self.win_length, self.window)
            y_mag = stft(y, self.fft_size, self.shift_size, self.win_length, self.window)
            sc_loss = self.spectral_convergence_loss(x_mag, y_mag)
            mag_loss = self.log_stft_magnitude_loss(x_mag, y_mag)
            return sc_loss, mag_loss

    class MultiResolutionSTFTLoss(nn.Module):
        def __init__(self, fft_sizes=[128, 64, 32], hop_sizes=[32, 16, 8], win_lengths=[96, 48, 24],
                     window="hann_window"):
            super().__init__()
            assert len(fft_sizes) == len(hop_sizes) == len(win_lengths)
            self.stft_losses = nn.ModuleList()
            for fs, ss, wl in zip(fft_sizes, hop_sizes, win_lengths):
                self.stft_losses += [STFTLoss(fs, ss, wl, window)]

        def forward(self, x, y):
            if len(x.shape) == 3:
                x = x.view(-1, x.size(2))  # (B, C, T) -> (B x C, T)
                y = y.view(-1, y.size(2))
            sc_loss = 0.0
            mag_loss = 0.0
            for f in self.stft_losses:
                sc_l, mag_l = f(x, y)
                sc_loss += sc_l
                mag_loss += mag_l
            sc_loss /= len(self.stft_losses)
            mag_loss /= len(self.stft_losses)
            return sc_loss, mag_loss

    make = lambda: nn.Sequential(nn.Conv1d(1, 8, 7, padding=3), nn.LeakyReLU(0.2),
                                 nn.Conv1d(8, 8, 5, padding=4, dilation=2), nn.LeakyReLU(0.2),
                                 nn.Conv1d(8, 1, 7, padding=3), nn.Tanh())
    if weights is None:
        return make()
    generator = load(m, make(), weights).double()  # float64: float32 rounding is amplified through log |X|
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the windows too (PyTorch's float32 cos differs from NumPy's by an ulp)
    criterion = MultiResolutionSTFTLoss(window="hamming_window")
    torch.set_default_dtype(previous)
    optimizer = m.optim.RAdam(generator.parameters(), lr=1e-3)
    y = torch.tensor(target).unsqueeze(1)
    noise = torch.tensor(np.random.default_rng(1).standard_normal(target.shape).astype(target.dtype)).unsqueeze(1)
    history = []
    for step in range(4):
        y_ = generator(noise)
        sc_loss, mag_loss = criterion(y_, y)
        loss = sc_loss + mag_loss
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(generator.parameters(), 10.0)
        optimizer.step()
        history.append((sc_loss.item(), mag_loss.item()))
    return {"history": history, "weights": [p.detach() for p in generator.parameters()],
            "grads": [p.grad for p in generator.parameters()]}


def test_multi_resolution_stft_loss_trains_a_generator():
    target = waveform(2, 512)
    weights = weights_of(lambda m: mr_stft_program(m, target))
    ours, _ = run_both(mr_stft_program, target.astype(np.float64), weights, rtol=1e-8, atol=1e-10)
    assert all(np.isfinite(h).all() for h in ours["history"])
    assert ours["history"][-1][1] < ours["history"][0][1]


# ----------------------------------------------------------------------------------------------
# WaveNet (van den Oord et al. 2016) on mu-law classes
# ----------------------------------------------------------------------------------------------


def mu_law_encoding(torch, x, quantization_channels):
    mu = quantization_channels - 1.0
    if not x.is_floating_point():
        x = x.to(torch.float)
    mu = torch.tensor(mu, dtype=x.dtype)
    x_mu = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / torch.log1p(mu)
    x_mu = ((x_mu + 1) / 2 * mu + 0.5).to(torch.int64)
    return x_mu


def mu_law_decoding(torch, x_mu, quantization_channels):
    mu = quantization_channels - 1.0
    if not x_mu.is_floating_point():
        x_mu = x_mu.to(torch.float)
    mu = torch.tensor(mu, dtype=x_mu.dtype)
    x = ((x_mu) / mu) * 2 - 1.0
    x = torch.sign(x) * (torch.exp(torch.abs(x) * torch.log1p(mu)) - 1.0) / mu
    return x


def wavenet_program(m, audio, weights=None):
    torch, nn, F = m.torch, m.nn, m.F

    class CausalConv1d(nn.Conv1d):
        def __init__(self, in_channels, out_channels, kernel_size, dilation=1, **kwargs):
            super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, **kwargs)
            self.left_padding = (kernel_size - 1) * dilation

        def forward(self, x):
            return super().forward(F.pad(x, (self.left_padding, 0)))

    class ResidualBlock(nn.Module):
        def __init__(self, residual_channels, gate_channels, skip_channels, dilation, cond_channels):
            super().__init__()
            self.dilated = CausalConv1d(residual_channels, gate_channels, 2, dilation=dilation)
            self.cond = nn.Conv1d(cond_channels, gate_channels, 1, bias=False)
            self.res = nn.Conv1d(gate_channels // 2, residual_channels, 1)
            self.skip = nn.Conv1d(gate_channels // 2, skip_channels, 1)

        def forward(self, x, c):
            h = self.dilated(x) + self.cond(c)
            xa, xb = h.split(h.size(1) // 2, dim=1)
            z = torch.tanh(xa) * torch.sigmoid(xb)
            s = self.skip(z)
            x = (self.res(z) + x) * math.sqrt(0.5)
            return x, s

    class WaveNet(nn.Module):
        def __init__(self, classes=32, residual=8, gate=16, skip=12, layers=6, stacks=2, cond_channels=4):
            super().__init__()
            self.embed = nn.Embedding(classes, residual)
            self.first = CausalConv1d(residual, residual, 2)
            self.blocks = nn.ModuleList([ResidualBlock(residual, gate, skip, 2 ** (i % (layers // stacks)),
                                                       cond_channels) for i in range(layers)])
            self.last = nn.Sequential(nn.ReLU(inplace=True), nn.Conv1d(skip, skip, 1), nn.ReLU(inplace=True),
                                      nn.Conv1d(skip, classes, 1))

        def receptive_field(self):
            return sum(b.dilated.left_padding for b in self.blocks) + 2

        def forward(self, x, c):
            x = self.first(self.embed(x).transpose(1, 2))
            skips = 0
            for block in self.blocks:
                x, h = block(x, c)
                skips = skips + h
            skips *= math.sqrt(1.0 / len(self.blocks))
            return self.last(skips)

    if weights is None:
        return WaveNet()
    model = load(m, WaveNet(), weights)
    x = torch.tensor(audio)
    q = mu_law_encoding(torch, x, 32)
    decoded = mu_law_decoding(torch, q, 32)
    # local conditioning: frame features upsampled to the sample rate by repeat_interleave
    frames = torch.tensor(np.random.default_rng(2).standard_normal((x.shape[0], 4, x.shape[1] // 16)),
                          dtype=torch.float32)
    c = torch.repeat_interleave(frames, 16, dim=2)
    optimizer = m.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for step in range(3):
        logits = model(q[:, :-1], c[:, :, 1:])
        loss = F.cross_entropy(logits, q[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        history.append(loss.item())
        optimizer.step()
    # causality: changing a later sample must not change an earlier output
    with torch.no_grad():
        q2 = q.clone()
        q2[:, 100] = (q2[:, 100] + 7) % 32
        out1, out2 = model(q, c), model(q2, c)
        leak = (out1[:, :, :100] - out2[:, :, :100]).abs().max()
        changed = (out1[:, :, 100:] - out2[:, :, 100:]).abs().amax(1)
    # sampling one step from the softmax, deterministically by the argmax
    probs = F.softmax(logits[:, :, -1], dim=1)
    return {"q": q, "decoded": decoded, "history": history, "grads": [p.grad for p in model.parameters()],
            "probs": probs, "leak": leak, "changed": changed, "rf": model.receptive_field(),
            "next": probs.argmax(1)}


def test_wavenet_on_mu_law_classes():
    audio = waveform(2, 160)
    weights = weights_of(lambda m: wavenet_program(m, audio))
    ours, _ = run_both(wavenet_program, audio, weights, rtol=2e-4, atol=2e-6)
    mu = 31.0
    by_hand = ((np.sign(audio) * np.log1p(mu * np.abs(audio)) / np.log1p(mu) + 1) / 2 * mu + 0.5).astype(np.int64)
    np.testing.assert_array_equal(ours["q"], by_hand)
    np.testing.assert_allclose(ours["decoded"], audio, atol=0.08)  # quantisation error of 32 levels
    assert ours["leak"] == 0.0
    assert (ours["changed"][:, 0] > 0).all()  # sample 100's own output depends on it
    assert ours["rf"] == 1 + 2 * (1 + 2 + 4) + 1
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# HiFi-GAN (Kong et al. 2020, jik876/hifi-gan's models.py, shrunk): weight_norm'd convolutions, transposed
# convolution upsampling, the multi-period and multi-scale discriminators (spectral_norm), and the losses
# (`torch.nn.Module` spelled `nn.Module`: chainrule does not reach nn through autograd, see its README)
# ----------------------------------------------------------------------------------------------

LRELU_SLOPE = 0.1


def get_padding(kernel_size, dilation=1):
    return int((kernel_size * dilation - dilation) / 2)


def hifigan_modules(m):
    torch, nn, F = m.torch, m.nn, m.F
    from_utils = nn.utils
    weight_norm, remove_weight_norm, spectral_norm = from_utils.weight_norm, from_utils.remove_weight_norm, \
        from_utils.spectral_norm
    Conv1d, ConvTranspose1d, Conv2d, AvgPool1d = nn.Conv1d, nn.ConvTranspose1d, nn.Conv2d, nn.AvgPool1d

    def init_weights(m, mean=0.0, std=0.01):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            m.weight.data.normal_(mean, std)

    class ResBlock1(nn.Module):
        def __init__(self, channels, kernel_size=3, dilation=(1, 3, 5)):
            super(ResBlock1, self).__init__()
            self.convs1 = nn.ModuleList([
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d)))
                for d in dilation])
            self.convs1.apply(init_weights)
            self.convs2 = nn.ModuleList([
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1, padding=get_padding(kernel_size, 1)))
                for _ in dilation])
            self.convs2.apply(init_weights)

        def forward(self, x):
            for c1, c2 in zip(self.convs1, self.convs2):
                xt = F.leaky_relu(x, LRELU_SLOPE)
                xt = c1(xt)
                xt = F.leaky_relu(xt, LRELU_SLOPE)
                xt = c2(xt)
                x = xt + x
            return x

        def remove_weight_norm(self):
            for l in self.convs1:
                remove_weight_norm(l)
            for l in self.convs2:
                remove_weight_norm(l)

    class Generator(nn.Module):
        def __init__(self, n_mels=8, upsample_rates=(4, 4), upsample_kernel_sizes=(8, 8), initial_channel=16,
                     resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3), (1, 3))):
            super(Generator, self).__init__()
            self.num_kernels = len(resblock_kernel_sizes)
            self.num_upsamples = len(upsample_rates)
            self.conv_pre = weight_norm(Conv1d(n_mels, initial_channel, 7, 1, padding=3))
            self.ups = nn.ModuleList()
            for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
                self.ups.append(weight_norm(ConvTranspose1d(initial_channel // (2 ** i),
                                                            initial_channel // (2 ** (i + 1)), k, u,
                                                            padding=(k - u) // 2)))
            self.resblocks = nn.ModuleList()
            for i in range(len(self.ups)):
                ch = initial_channel // (2 ** (i + 1))
                for j, (k, d) in enumerate(zip(resblock_kernel_sizes, resblock_dilation_sizes)):
                    self.resblocks.append(ResBlock1(ch, k, d))
            self.conv_post = weight_norm(Conv1d(ch, 1, 7, 1, padding=3))
            self.ups.apply(init_weights)
            self.conv_post.apply(init_weights)

        def forward(self, x):
            x = self.conv_pre(x)
            for i in range(self.num_upsamples):
                x = F.leaky_relu(x, LRELU_SLOPE)
                x = self.ups[i](x)
                xs = None
                for j in range(self.num_kernels):
                    if xs is None:
                        xs = self.resblocks[i * self.num_kernels + j](x)
                    else:
                        xs += self.resblocks[i * self.num_kernels + j](x)
                x = xs / self.num_kernels
            x = F.leaky_relu(x)
            x = self.conv_post(x)
            x = torch.tanh(x)
            return x

        def remove_weight_norm(self):
            for l in self.ups:
                remove_weight_norm(l)
            for l in self.resblocks:
                l.remove_weight_norm()
            remove_weight_norm(self.conv_pre)
            remove_weight_norm(self.conv_post)

    class DiscriminatorP(nn.Module):
        def __init__(self, period, kernel_size=5, stride=3, use_spectral_norm=False):
            super(DiscriminatorP, self).__init__()
            self.period = period
            norm_f = weight_norm if use_spectral_norm == False else spectral_norm
            self.convs = nn.ModuleList([
                norm_f(Conv2d(1, 8, (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(8, 16, (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(16, 16, (kernel_size, 1), 1, padding=(2, 0))),
            ])
            self.conv_post = norm_f(Conv2d(16, 1, (3, 1), 1, padding=(1, 0)))

        def forward(self, x):
            fmap = []
            # 1d to 2d
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
            x = torch.flatten(x, 1, -1)
            return x, fmap

    class MultiPeriodDiscriminator(nn.Module):
        def __init__(self):
            super(MultiPeriodDiscriminator, self).__init__()
            self.discriminators = nn.ModuleList([DiscriminatorP(2), DiscriminatorP(3), DiscriminatorP(5)])

        def forward(self, y, y_hat):
            y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
            for i, d in enumerate(self.discriminators):
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)
            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    class DiscriminatorS(nn.Module):
        def __init__(self, use_spectral_norm=False):
            super(DiscriminatorS, self).__init__()
            norm_f = weight_norm if use_spectral_norm == False else spectral_norm
            self.convs = nn.ModuleList([
                norm_f(Conv1d(1, 8, 15, 1, padding=7)),
                norm_f(Conv1d(8, 16, 41, 2, groups=4, padding=20)),
                norm_f(Conv1d(16, 16, 41, 4, groups=16, padding=20)),
                norm_f(Conv1d(16, 16, 5, 1, padding=2)),
            ])
            self.conv_post = norm_f(Conv1d(16, 1, 3, 1, padding=1))

        def forward(self, x):
            fmap = []
            for l in self.convs:
                x = l(x)
                x = F.leaky_relu(x, LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            x = torch.flatten(x, 1, -1)
            return x, fmap

    class MultiScaleDiscriminator(nn.Module):
        def __init__(self):
            super(MultiScaleDiscriminator, self).__init__()
            self.discriminators = nn.ModuleList([DiscriminatorS(use_spectral_norm=True), DiscriminatorS(),
                                                 DiscriminatorS()])
            self.meanpools = nn.ModuleList([AvgPool1d(4, 2, padding=2), AvgPool1d(4, 2, padding=2)])

        def forward(self, y, y_hat):
            y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
            for i, d in enumerate(self.discriminators):
                if i != 0:
                    y = self.meanpools[i - 1](y)
                    y_hat = self.meanpools[i - 1](y_hat)
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)
            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    def feature_loss(fmap_r, fmap_g):
        loss = 0
        for dr, dg in zip(fmap_r, fmap_g):
            for rl, gl in zip(dr, dg):
                loss += torch.mean(torch.abs(rl - gl))
        return loss * 2

    def discriminator_loss(disc_real_outputs, disc_generated_outputs):
        loss = 0
        r_losses = []
        g_losses = []
        for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
            r_loss = torch.mean((1 - dr) ** 2)
            g_loss = torch.mean(dg ** 2)
            loss += (r_loss + g_loss)
            r_losses.append(r_loss.item())
            g_losses.append(g_loss.item())
        return loss, r_losses, g_losses

    def generator_loss(disc_outputs):
        loss = 0
        gen_losses = []
        for dg in disc_outputs:
            l = torch.mean((1 - dg) ** 2)
            gen_losses.append(l)
            loss += l
        return loss, gen_losses

    return Generator, MultiPeriodDiscriminator, MultiScaleDiscriminator, feature_loss, discriminator_loss, \
        generator_loss


def hifigan_program(m, mel, audio, weights=None):
    torch, nn, F = m.torch, m.nn, m.F
    Generator, MPD, MSD, feature_loss, discriminator_loss, generator_loss = hifigan_modules(m)
    make = lambda: nn.ModuleDict({"generator": Generator(), "mpd": MPD(), "msd": MSD()})
    if weights is None:
        return make()
    models = load(m, make(), weights)
    generator, mpd, msd = models["generator"], models["mpd"], models["msd"]
    optim_g = m.optim.AdamW(generator.parameters(), 2e-4, betas=(0.8, 0.99))
    optim_d = m.optim.AdamW(list(msd.parameters()) + list(mpd.parameters()), 2e-4, betas=(0.8, 0.99))
    x, y = torch.tensor(mel), torch.tensor(audio).unsqueeze(1)
    history = []
    for step in range(2):
        y_g_hat = generator(x)
        optim_d.zero_grad()
        # MPD
        y_df_hat_r, y_df_hat_g, _, _ = mpd(y, y_g_hat.detach())
        loss_disc_f, losses_disc_f_r, losses_disc_f_g = discriminator_loss(y_df_hat_r, y_df_hat_g)
        # MSD
        y_ds_hat_r, y_ds_hat_g, _, _ = msd(y, y_g_hat.detach())
        loss_disc_s, losses_disc_s_r, losses_disc_s_g = discriminator_loss(y_ds_hat_r, y_ds_hat_g)
        loss_disc_all = loss_disc_s + loss_disc_f
        loss_disc_all.backward()
        optim_d.step()
        # Generator
        optim_g.zero_grad()
        loss_wave = F.l1_loss(y, y_g_hat) * 45
        y_df_hat_r, y_df_hat_g, fmap_f_r, fmap_f_g = mpd(y, y_g_hat)
        y_ds_hat_r, y_ds_hat_g, fmap_s_r, fmap_s_g = msd(y, y_g_hat)
        loss_fm_f = feature_loss(fmap_f_r, fmap_f_g)
        loss_fm_s = feature_loss(fmap_s_r, fmap_s_g)
        loss_gen_f, losses_gen_f = generator_loss(y_df_hat_g)
        loss_gen_s, losses_gen_s = generator_loss(y_ds_hat_g)
        loss_gen_all = loss_gen_s + loss_gen_f + loss_fm_s + loss_fm_f + loss_wave
        loss_gen_all.backward()
        optim_g.step()
        history.append([loss_disc_all.item(), loss_gen_all.item(), loss_wave.item()] + losses_disc_f_r)
    grads = {k: p.grad for k, p in models.named_parameters()}
    generator.eval()
    generator.remove_weight_norm()
    with torch.no_grad():
        y_g_hat = generator(x)
    return {"history": history, "grads": grads, "audio": y_g_hat,
            "state": {k: v for k, v in generator.state_dict().items()}}


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_hifigan_training_steps():
    rng = np.random.default_rng(5)
    mel = rng.standard_normal((2, 8, 10)).astype(np.float32)
    audio = waveform(2, 160)
    weights = weights_of(lambda m: hifigan_program(m, mel, audio))
    ours, _ = run_both(hifigan_program, mel, audio, weights, rtol=2e-4, atol=2e-6)
    assert ours["audio"].shape == (2, 1, 160)
    assert not any(k.endswith(("weight_g", "weight_v")) for k in ours["state"])
