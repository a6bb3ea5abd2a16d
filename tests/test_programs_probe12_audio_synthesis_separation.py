# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Audio and signal-processing programs, written by hand as torchaudio's and the speech papers' authors write them,
run as tests/probe12_audio_common.py says. Speech synthesis and separation: Tacotron 2's decoder (location-sensitive
attention masked through ``.data.masked_fill_``, ``LSTMCell`` loop, postnet); DDSP's harmonic-plus-noise synthesiser;
Conv-TasNet trained by permutation-invariant SI-SNR."""

import math

import numpy as np

from .probe12_audio_common import waveform
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Conv-TasNet (Luo & Mesgarani 2019, shrunk) trained by SI-SNR with permutation-invariant training
# ----------------------------------------------------------------------------------------------


def convtasnet_program(m, mixture, sources, weights=None):
    import itertools

    torch, nn, F = m.torch, m.nn, m.F
    EPS = 1e-8

    class GlobalLayerNorm(nn.Module):
        """gLN: normalise over channels and time together."""

        def __init__(self, channel_size):
            super().__init__()
            self.gamma = nn.Parameter(torch.Tensor(1, channel_size, 1))
            self.beta = nn.Parameter(torch.Tensor(1, channel_size, 1))
            self.reset_parameters()

        def reset_parameters(self):
            self.gamma.data.fill_(1)
            self.beta.data.zero_()

        def forward(self, y):
            mean = y.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True)
            var = (torch.pow(y - mean, 2)).mean(dim=1, keepdim=True).mean(dim=2, keepdim=True)
            return self.gamma * (y - mean) / torch.pow(var + EPS, 0.5) + self.beta

    class DepthwiseSeparableConv(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation):
            super().__init__()
            depthwise_conv = nn.Conv1d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                       dilation=dilation, groups=in_channels, bias=False)
            prelu = nn.PReLU()
            norm = GlobalLayerNorm(in_channels)
            pointwise_conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
            self.net = nn.Sequential(depthwise_conv, prelu, norm, pointwise_conv)

        def forward(self, x):
            return self.net(x)

    class TemporalBlock(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation):
            super().__init__()
            conv1x1 = nn.Conv1d(in_channels, out_channels, 1, bias=False)
            prelu = nn.PReLU()
            norm = GlobalLayerNorm(out_channels)
            dsconv = DepthwiseSeparableConv(out_channels, in_channels, kernel_size, stride, padding, dilation)
            self.net = nn.Sequential(conv1x1, prelu, norm, dsconv)

        def forward(self, x):
            residual = x
            out = self.net(x)
            return out + residual

    class ConvTasNet(nn.Module):
        def __init__(self, N=16, L=8, B=8, H=16, P=3, X=3, R=1, C=2):
            super().__init__()
            self.N, self.L, self.C = N, L, C
            self.encoder = nn.Conv1d(1, N, kernel_size=L, stride=L // 2, bias=False)
            blocks = []
            for r in range(R):
                for x in range(X):
                    dilation = 2 ** x
                    padding = (P - 1) * dilation // 2
                    blocks += [TemporalBlock(B, H, P, stride=1, padding=padding, dilation=dilation)]
            self.separator = nn.Sequential(GlobalLayerNorm(N), nn.Conv1d(N, B, 1, bias=False), *blocks,
                                           nn.Conv1d(B, C * N, 1, bias=False))
            self.decoder = nn.ConvTranspose1d(N, 1, kernel_size=L, stride=L // 2, bias=False)

        def forward(self, mixture):
            mixture_w = F.relu(self.encoder(mixture.unsqueeze(1)))  # [M, N, K]
            M, N, K = mixture_w.size()
            score = self.separator(mixture_w).view(M, self.C, N, K)
            est_mask = F.relu(score)
            source_w = mixture_w.unsqueeze(1) * est_mask  # [M, C, N, K]
            est_source = self.decoder(source_w.view(M * self.C, N, K)).view(M, self.C, -1)
            T_origin = mixture.size(-1)
            return F.pad(est_source, (0, T_origin - est_source.size(-1)))

    def si_snr(est, ref):
        est = est - est.mean(dim=-1, keepdim=True)
        ref = ref - ref.mean(dim=-1, keepdim=True)
        s_target = (est * ref).sum(-1, keepdim=True) * ref / (ref.pow(2).sum(-1, keepdim=True) + EPS)
        e_noise = est - s_target
        return 10 * torch.log10(s_target.pow(2).sum(-1) / (e_noise.pow(2).sum(-1) + EPS) + EPS)

    def pit_loss(est, ref):
        C = est.shape[1]
        perms = list(itertools.permutations(range(C)))
        scores = torch.stack([si_snr(est[:, list(p)], ref).mean(-1) for p in perms], dim=1)  # [M, perms]
        best, best_idx = scores.max(dim=1)
        return -best.mean(), best_idx

    if weights is None:
        return ConvTasNet()
    model = load(m, ConvTasNet(), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3)
    mix, src = torch.tensor(mixture), torch.tensor(sources)
    history = []
    for step in range(3):
        est = model(mix)
        loss, perm = pit_loss(est, src)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "perm": perm, "est": est, "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_convtasnet_pit_si_snr():
    rng = np.random.default_rng(6)
    t = np.arange(202) / 8000
    sources = np.stack([np.sin(2 * np.pi * 440 * t + rng.uniform(0, 6, (3, 1))),
                        np.sign(np.sin(2 * np.pi * 130 * t + rng.uniform(0, 6, (3, 1))))], 1).astype(np.float32)
    mixture = sources.sum(1)
    weights = weights_of(lambda m: convtasnet_program(m, mixture, sources))
    ours, _ = run_both(convtasnet_program, mixture, sources, weights, rtol=2e-4, atol=2e-6)
    assert ours["est"].shape == (3, 2, 202)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Tacotron 2's decoder (NVIDIA/tacotron2's model.py, shrunk): location-sensitive attention over a padded
# encoder output, masked by ``alignment.data.masked_fill_``, LSTMCells stepped in a Python loop (teacher
# forcing), the postnet, and the masked mel + gate losses
# ----------------------------------------------------------------------------------------------


def tacotron2_program(m, text, text_lengths, mels, mel_lengths, weights=None):
    torch, nn, F = m.torch, m.nn, m.F

    def get_mask_from_lengths(lengths):
        max_len = torch.max(lengths).item()
        ids = torch.arange(0, max_len, out=torch.LongTensor(max_len))
        mask = (ids < lengths.unsqueeze(1)).bool()
        return mask

    class LinearNorm(nn.Module):
        def __init__(self, in_dim, out_dim, bias=True, w_init_gain="linear"):
            super(LinearNorm, self).__init__()
            self.linear_layer = nn.Linear(in_dim, out_dim, bias=bias)
            nn.init.xavier_uniform_(self.linear_layer.weight, gain=nn.init.calculate_gain(w_init_gain))

        def forward(self, x):
            return self.linear_layer(x)

    class ConvNorm(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=None, dilation=1, bias=True,
                     w_init_gain="linear"):
            super(ConvNorm, self).__init__()
            if padding is None:
                assert (kernel_size % 2 == 1)
                padding = int(dilation * (kernel_size - 1) / 2)
            self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, bias=bias)
            nn.init.xavier_uniform_(self.conv.weight, gain=nn.init.calculate_gain(w_init_gain))

        def forward(self, signal):
            return self.conv(signal)

    class LocationLayer(nn.Module):
        def __init__(self, attention_n_filters, attention_kernel_size, attention_dim):
            super(LocationLayer, self).__init__()
            padding = int((attention_kernel_size - 1) / 2)
            self.location_conv = ConvNorm(2, attention_n_filters, kernel_size=attention_kernel_size, padding=padding,
                                          bias=False, stride=1, dilation=1)
            self.location_dense = LinearNorm(attention_n_filters, attention_dim, bias=False, w_init_gain="tanh")

        def forward(self, attention_weights_cat):
            processed_attention = self.location_conv(attention_weights_cat)
            processed_attention = processed_attention.transpose(1, 2)
            processed_attention = self.location_dense(processed_attention)
            return processed_attention

    class Attention(nn.Module):
        def __init__(self, attention_rnn_dim, embedding_dim, attention_dim, attention_location_n_filters,
                     attention_location_kernel_size):
            super(Attention, self).__init__()
            self.query_layer = LinearNorm(attention_rnn_dim, attention_dim, bias=False, w_init_gain="tanh")
            self.memory_layer = LinearNorm(embedding_dim, attention_dim, bias=False, w_init_gain="tanh")
            self.v = LinearNorm(attention_dim, 1, bias=False)
            self.location_layer = LocationLayer(attention_location_n_filters, attention_location_kernel_size,
                                                attention_dim)
            self.score_mask_value = -float("inf")

        def get_alignment_energies(self, query, processed_memory, attention_weights_cat):
            processed_query = self.query_layer(query.unsqueeze(1))
            processed_attention_weights = self.location_layer(attention_weights_cat)
            energies = self.v(torch.tanh(processed_query + processed_attention_weights + processed_memory))
            energies = energies.squeeze(-1)
            return energies

        def forward(self, attention_hidden_state, memory, processed_memory, attention_weights_cat, mask):
            alignment = self.get_alignment_energies(attention_hidden_state, processed_memory, attention_weights_cat)
            if mask is not None:
                alignment.data.masked_fill_(mask, self.score_mask_value)
            attention_weights = F.softmax(alignment, dim=1)
            attention_context = torch.bmm(attention_weights.unsqueeze(1), memory)
            attention_context = attention_context.squeeze(1)
            return attention_context, attention_weights

    class Prenet(nn.Module):
        def __init__(self, in_dim, sizes):
            super(Prenet, self).__init__()
            in_sizes = [in_dim] + sizes[:-1]
            self.layers = nn.ModuleList([LinearNorm(in_size, out_size, bias=False)
                                         for (in_size, out_size) in zip(in_sizes, sizes)])

        def forward(self, x):
            for linear in self.layers:
                x = F.dropout(F.relu(linear(x)), p=0.5, training=False)  # (training=True in the original)
            return x

    class Postnet(nn.Module):
        def __init__(self, n_mel, emb, k=5, n=3):
            super(Postnet, self).__init__()
            self.convolutions = nn.ModuleList()
            chans = [n_mel] + [emb] * (n - 1) + [n_mel]
            for i in range(n):
                self.convolutions.append(nn.Sequential(
                    ConvNorm(chans[i], chans[i + 1], kernel_size=k, stride=1, padding=int((k - 1) / 2), dilation=1,
                             w_init_gain="tanh" if i < n - 1 else "linear"),
                    nn.BatchNorm1d(chans[i + 1])))

        def forward(self, x):
            for i in range(len(self.convolutions) - 1):
                x = F.dropout(torch.tanh(self.convolutions[i](x)), 0.5, self.training and False)
            x = F.dropout(self.convolutions[-1](x), 0.5, False)
            return x

    class Tacotron2(nn.Module):
        def __init__(self, n_symbols=12, emb=16, n_mel=6, rnn=16, att=8):
            super(Tacotron2, self).__init__()
            self.n_mel, self.rnn, self.emb = n_mel, rnn, emb
            self.embedding = nn.Embedding(n_symbols, emb, padding_idx=0)
            std = math.sqrt(2.0 / (n_symbols + emb))
            val = math.sqrt(3.0) * std  # uniform bounds for std
            self.embedding.weight.data.uniform_(-val, val)
            self.encoder_lstm = nn.LSTM(emb, emb // 2, 1, batch_first=True, bidirectional=True)
            self.prenet = Prenet(n_mel, [8, 8])
            self.attention_rnn = nn.LSTMCell(8 + emb, rnn)
            self.attention_layer = Attention(rnn, emb, att, 4, 5)
            self.decoder_rnn = nn.LSTMCell(rnn + emb, rnn, 1)
            self.linear_projection = LinearNorm(rnn + emb, n_mel)
            self.gate_layer = LinearNorm(rnn + emb, 1, bias=True, w_init_gain="sigmoid")
            self.postnet = Postnet(n_mel, 8)

        def forward(self, text, text_lengths, mels):
            embedded = self.embedding(text)
            packed = nn.utils.rnn.pack_padded_sequence(embedded, text_lengths, batch_first=True)
            memory, _ = self.encoder_lstm(packed)
            memory, _ = nn.utils.rnn.pad_packed_sequence(memory, batch_first=True)
            B, T_in = memory.size(0), memory.size(1)
            mask = ~get_mask_from_lengths(text_lengths)
            go = memory.new_zeros(1, B, self.n_mel)
            decoder_inputs = torch.cat((go, mels.permute(2, 0, 1)), dim=0)
            decoder_inputs = self.prenet(decoder_inputs)
            attention_hidden = memory.new_zeros(B, self.rnn)
            attention_cell = memory.new_zeros(B, self.rnn)
            decoder_hidden = memory.new_zeros(B, self.rnn)
            decoder_cell = memory.new_zeros(B, self.rnn)
            attention_weights = memory.new_zeros(B, T_in)
            attention_weights_cum = memory.new_zeros(B, T_in)
            attention_context = memory.new_zeros(B, self.emb)
            processed_memory = self.attention_layer.memory_layer(memory)
            mel_outputs, gate_outputs, alignments = [], [], []
            while len(mel_outputs) < decoder_inputs.size(0) - 1:
                decoder_input = decoder_inputs[len(mel_outputs)]
                cell_input = torch.cat((decoder_input, attention_context), -1)
                attention_hidden, attention_cell = self.attention_rnn(cell_input, (attention_hidden, attention_cell))
                attention_weights_cat = torch.cat((attention_weights.unsqueeze(1),
                                                   attention_weights_cum.unsqueeze(1)), dim=1)
                attention_context, attention_weights = self.attention_layer(
                    attention_hidden, memory, processed_memory, attention_weights_cat, mask)
                attention_weights_cum += attention_weights
                decoder_input = torch.cat((attention_hidden, attention_context), -1)
                decoder_hidden, decoder_cell = self.decoder_rnn(decoder_input, (decoder_hidden, decoder_cell))
                decoder_hidden_attention_context = torch.cat((decoder_hidden, attention_context), dim=1)
                mel_outputs += [self.linear_projection(decoder_hidden_attention_context).squeeze(1)]
                gate_outputs += [self.gate_layer(decoder_hidden_attention_context).squeeze(1)]
                alignments += [attention_weights]
            alignments = torch.stack(alignments).transpose(0, 1)
            gate_outputs = torch.stack(gate_outputs).transpose(0, 1).contiguous()
            mel_outputs = torch.stack(mel_outputs).transpose(0, 1).contiguous().transpose(1, 2)
            mel_outputs_postnet = mel_outputs + self.postnet(mel_outputs)
            return mel_outputs, mel_outputs_postnet, gate_outputs, alignments

    if weights is None:
        return Tacotron2()
    model = load(m, Tacotron2(), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    text, text_lengths = torch.tensor(text), torch.tensor(text_lengths)
    mels, mel_lengths = torch.tensor(mels), torch.tensor(mel_lengths)
    gate_target = torch.zeros(mels.size(0), mels.size(2))
    for i, n in enumerate(mel_lengths.tolist()):
        gate_target[i, n - 1:] = 1
    history = []
    for step in range(2):
        mel_out, mel_out_postnet, gate_out, alignments = model(text, text_lengths, mels)
        mask = ~get_mask_from_lengths(mel_lengths)
        mask = mask.expand(model.n_mel, mask.size(0), mask.size(1)).permute(1, 0, 2)
        mel_out = mel_out.masked_fill(mask, 0.0)
        mel_out_postnet = mel_out_postnet.masked_fill(mask, 0.0)
        gate_out = gate_out.masked_fill(mask[:, 0, :], 1e3)
        mel_loss = nn.MSELoss()(mel_out, mels) + nn.MSELoss()(mel_out_postnet, mels)
        gate_loss = nn.BCEWithLogitsLoss()(gate_out.view(-1, 1), gate_target.view(-1, 1))
        loss = mel_loss + gate_loss
        model.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append([mel_loss.item(), gate_loss.item(), grad_norm.item()])
    return {"history": history, "alignments": alignments, "mel": mel_out_postnet,
            "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_tacotron2_decoder_training():
    rng = np.random.default_rng(8)
    text = np.array([[3, 5, 7, 2, 9, 4, 1], [6, 2, 8, 3, 0, 0, 0]])
    text_lengths = np.array([7, 4])
    mels = rng.standard_normal((2, 6, 9)).astype(np.float32)
    mel_lengths = np.array([9, 6])
    mels[1, :, 6:] = 0
    weights = weights_of(lambda m: tacotron2_program(m, text, text_lengths, mels, mel_lengths))
    ours, _ = run_both(tacotron2_program, text, text_lengths, mels, mel_lengths, weights, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(ours["alignments"].sum(-1), 1.0, rtol=1e-5)
    assert (ours["alignments"][1, :, 4:] == 0).all()  # masked by .data.masked_fill_(mask, -inf)
    assert ours["history"][-1][0] < ours["history"][0][0]


# ----------------------------------------------------------------------------------------------
# DDSP (Engel et al. 2020, shrunk): a harmonic oscillator bank driven by f0 (phase by cumsum), amplitudes
# upsampled by F.interpolate, filtered noise from learnt magnitudes (irfft, roll, hann window, FFT
# convolution), trained a few steps by a multi-scale spectral loss
# ----------------------------------------------------------------------------------------------


def ddsp_program(m, f0_hz, loudness, target, weights=None):
    torch, nn, F = m.torch, m.nn, m.F
    sr, block, n_harm, n_bands = 8000, 32, 8, 9

    def upsample(x, factor):
        x = x.permute(0, 2, 1)
        x = F.interpolate(x, size=x.shape[-1] * factor, mode="linear", align_corners=False)
        return x.permute(0, 2, 1)

    def remove_above_nyquist(amplitudes, pitch, sampling_rate):
        n_harm = amplitudes.shape[-1]
        pitches = pitch * torch.arange(1, n_harm + 1).to(pitch)
        aa = (pitches < sampling_rate / 2).float() + 1e-4
        return amplitudes * aa

    def scale_function(x):
        return 2 * torch.sigmoid(x) ** (math.log(10)) + 1e-7

    def amp_to_impulse_response(amp, target_size):
        amp = torch.stack([amp, torch.zeros_like(amp)], -1)
        amp = torch.view_as_complex(amp)
        amp = torch.fft.irfft(amp)
        filter_size = amp.shape[-1]
        amp = torch.roll(amp, filter_size // 2, -1)
        win = torch.hann_window(filter_size, dtype=amp.dtype, device=amp.device)
        amp = amp * win
        amp = F.pad(amp, (0, int(target_size) - int(filter_size)))
        amp = torch.roll(amp, -filter_size // 2, -1)
        return amp

    def fft_convolve(signal, kernel):
        signal = F.pad(signal, (0, signal.shape[-1]))
        kernel = F.pad(kernel, (kernel.shape[-1], 0))
        output = torch.fft.irfft(torch.fft.rfft(signal) * torch.fft.rfft(kernel))
        output = output[..., output.shape[-1] // 2:]
        return output

    def harmonic_synth(pitch, amplitudes, sampling_rate):
        n_harmonic = amplitudes.shape[-1]
        omega = torch.cumsum(2 * math.pi * pitch / sampling_rate, 1)
        omegas = omega * torch.arange(1, n_harmonic + 1).to(omega)
        signal = (torch.sin(omegas) * amplitudes).sum(-1, keepdim=True)
        return signal

    class DDSP(nn.Module):
        def __init__(self, hidden=16):
            super().__init__()
            self.in_mlp = nn.Sequential(nn.Linear(2, hidden), nn.LayerNorm(hidden), nn.LeakyReLU())
            self.gru = nn.GRU(hidden, hidden, batch_first=True)
            self.proj = nn.Linear(hidden, 1 + n_harm + n_bands)

        def forward(self, pitch, loudness):
            hidden = self.in_mlp(torch.cat([pitch / 500, loudness], -1))
            hidden = self.gru(hidden)[0]
            param = scale_function(self.proj(hidden))
            total_amp = param[..., :1]
            amplitudes = param[..., 1:1 + n_harm]
            amplitudes = remove_above_nyquist(amplitudes, pitch, sr)
            amplitudes /= amplitudes.sum(-1, keepdim=True)
            amplitudes *= total_amp
            amplitudes = upsample(amplitudes, block)
            pitch = upsample(pitch, block)
            harmonic = harmonic_synth(pitch, amplitudes, sr)
            param = scale_function(self.proj(hidden) - 5)[..., 1 + n_harm:]
            impulse = amp_to_impulse_response(param, block)
            noise = torch.tensor(np.random.default_rng(3).uniform(-1, 1, (impulse.shape[0], impulse.shape[1],
                                                                           block)), dtype=impulse.dtype)
            noise = fft_convolve(noise, impulse).contiguous()
            noise = noise.reshape(noise.shape[0], -1, 1)
            return harmonic + noise

    def multiscale_fft(signal, scales=(64, 32), overlap=0.75):
        stfts = []
        for s in scales:
            S = torch.stft(signal, s, int(s * (1 - overlap)), s, torch.hann_window(s, dtype=signal.dtype), True,
                           normalized=True, return_complex=True).abs()
            stfts.append(S)
        return stfts

    def safe_log(x):
        return torch.log(x + 1e-7)

    if weights is None:
        return DDSP()
    model = load(m, DDSP(), weights).double()  # float64: the phase sums up to hundreds of radians
    optimizer = m.optim.Adam(model.parameters(), lr=3e-3)
    pitch = torch.tensor(f0_hz)[..., None]
    loud = torch.tensor(loudness)[..., None]
    y = torch.tensor(target)
    history = []
    for step in range(3):
        signal = model(pitch, loud).squeeze(-1)
        ori_stft = multiscale_fft(y)
        rec_stft = multiscale_fft(signal)
        loss = 0
        for s_x, s_y in zip(ori_stft, rec_stft):
            lin_loss = (s_x - s_y).abs().mean()
            log_loss = (safe_log(s_x) - safe_log(s_y)).abs().mean()
            loss = loss + lin_loss + log_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "signal": signal, "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_ddsp_harmonic_plus_noise():
    frames = 10
    f0 = np.linspace(180, 260, frames)[None].repeat(2, 0)
    f0[1] *= 1.5
    loudness = np.linspace(-1, 0, frames)[None].repeat(2, 0)
    target = waveform(2, frames * 32).astype(np.float64)
    weights = weights_of(lambda m: ddsp_program(m, f0, loudness, target))
    # (in float32 the upsampled f0 differs from PyTorch's by an ulp, which the phase accumulates)
    ours, _ = run_both(ddsp_program, f0, loudness, target, weights, rtol=1e-7, atol=1e-9)
    assert ours["signal"].shape == (2, 320)
    assert ours["history"][-1] < ours["history"][0]
