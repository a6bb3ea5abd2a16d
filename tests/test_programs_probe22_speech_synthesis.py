"""Speech and sequence-transduction programs (see tests/pytorch_programs.py), written by hand as ESPnet, WeNet, NeMo,
torchaudio's recipes and the papers' reference code write them, run on chainrule and on PyTorch from the same seeds,
comparing values and gradients, and checked without PyTorch by NumPy and by invariants. Speech synthesis: Tacotron
2's location-sensitive attention; WaveNet's gated causal stack with incremental generation from rolled queues, and
mu-law companding; FastSpeech's length regulator and VITS's path and monotonic alignment search; VITS's
rational-quadratic spline; a guided attention loss; WaveGlow's invertible 1x1 convolution."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Tacotron 2: location-sensitive attention (a conv1d over the previous and cumulative weights)
# ----------------------------------------------------------------------------------------------


def location_attention_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class LocationLayer(nn.Module):
        def __init__(self, n_filters, kernel, dim):
            super().__init__()
            self.location_conv = nn.Conv1d(2, n_filters, kernel_size=kernel, padding=(kernel - 1) // 2, bias=False)
            self.location_dense = nn.Linear(n_filters, dim, bias=False)
            nn.init.xavier_uniform_(self.location_dense.weight, gain=nn.init.calculate_gain("tanh"))

        def forward(self, weights_cat):
            return self.location_dense(self.location_conv(weights_cat).transpose(1, 2))

    class Attention(nn.Module):
        def __init__(self, rnn_dim=12, emb_dim=10, att_dim=8):
            super().__init__()
            self.query_layer = nn.Linear(rnn_dim, att_dim, bias=False)
            self.memory_layer = nn.Linear(emb_dim, att_dim, bias=False)
            self.v = nn.Linear(att_dim, 1, bias=False)
            self.location_layer = LocationLayer(4, 5, att_dim)
            self.score_mask_value = -float("inf")

        def forward(self, h, memory, processed_memory, weights_cat, mask):
            energies = self.v(torch.tanh(self.query_layer(h.unsqueeze(1)) + self.location_layer(weights_cat)
                                         + processed_memory)).squeeze(-1)
            if mask is not None:
                energies.data.masked_fill_(mask, self.score_mask_value)
            weights = F.softmax(energies, dim=1)
            return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights

    attention, cell, proj = Attention(), nn.LSTMCell(10 + 3, 12), nn.Linear(12 + 10, 3)
    opt = torch.optim.SGD(list(attention.parameters()) + list(cell.parameters()) + list(proj.parameters()), lr=0.1,
                          momentum=0.9)
    B, L, D = 2, 7, 10
    memory = torch.randn(B, L, D)
    lengths = torch.tensor([7, 5])
    ids = torch.arange(0, lengths.max(), out=torch.LongTensor(lengths.max().item()))
    mask = ~(ids < lengths.unsqueeze(1)).bool()
    target = torch.randn(B, 6, 3)
    out = {}
    for step in range(2):
        h, c = torch.zeros(B, 12), torch.zeros(B, 12)
        weights, cumulative, context = torch.zeros(B, L), torch.zeros(B, L), torch.zeros(B, D)
        processed = attention.memory_layer(memory)
        previous = torch.zeros(B, 3)
        frames, alignments = [], []
        for t in range(target.shape[1]):
            h, c = cell(torch.cat((previous, context), -1), (h, c))
            weights_cat = torch.cat((weights.unsqueeze(1), cumulative.unsqueeze(1)), dim=1)
            context, weights = attention(h, memory, processed, weights_cat, mask)
            cumulative += weights
            frames.append(proj(torch.cat((h, context), dim=1)))
            alignments.append(weights)
            previous = target[:, t]
        mel = torch.stack(frames).transpose(0, 1)
        loss = F.mse_loss(mel, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out[f"loss{step}"] = loss
    out.update(alignments=torch.stack(alignments).transpose(0, 1), cumulative=cumulative,
               query=attention.query_layer.weight, conv=attention.location_layer.location_conv.weight)
    return out


def test_tacotron2_location_sensitive_attention():
    ours, _ = run_both(location_attention_program, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["alignments"].sum(-1), 1, rtol=1e-5)
    assert (ours["alignments"][1, :, 5:] == 0).all()  # the padded memory of the second utterance
    np.testing.assert_allclose(ours["cumulative"], ours["alignments"].sum(1), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# WaveNet: gated causal stack, incremental generation from queues; mu-law companding
# ----------------------------------------------------------------------------------------------


def wavenet_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    C, R, layers = 8, 4, 3
    embed = nn.Embedding(C, R)
    convs = nn.ModuleList([nn.Conv1d(R, 2 * R, 2, dilation=2 ** i) for i in range(layers)])
    residual = nn.ModuleList([nn.Conv1d(R, R, 1) for _ in range(layers)])
    skip = nn.ModuleList([nn.Conv1d(R, R, 1) for _ in range(layers)])
    head = nn.Sequential(nn.ReLU(), nn.Conv1d(R, R, 1), nn.ReLU(), nn.Conv1d(R, C, 1))

    def forward(x):
        h = embed(x).transpose(1, 2)
        skips = 0
        for i in range(layers):
            z = convs[i](F.pad(h, (2 ** i, 0)))
            a, b = z.chunk(2, dim=1)
            gated = torch.tanh(a) * torch.sigmoid(b)
            skips = skips + skip[i](gated)
            h = h + residual[i](gated)
        return head(skips)

    x = torch.randint(0, C, (2, 10))
    loss = F.cross_entropy(forward(x)[:, :, :-1], x[:, 1:])
    loss.backward()
    with torch.no_grad():  # generation: one queue of past inputs per layer, rolled left each step
        queues = [torch.zeros(1, R, 2 ** i + 1) for i in range(layers)]
        sample = torch.zeros(1, dtype=torch.long)
        generator = torch.Generator().manual_seed(5)
        generated, step_logits = [], []
        for _ in range(6):
            h = embed(sample).unsqueeze(-1)
            skips = 0
            for i in range(layers):
                queues[i] = torch.roll(queues[i], -1, dims=2)
                queues[i][:, :, -1:] = h
                z = F.conv1d(queues[i][:, :, ::2 ** i][:, :, -2:], convs[i].weight, convs[i].bias)
                a, b = z.chunk(2, dim=1)
                gated = torch.tanh(a) * torch.sigmoid(b)
                skips = skips + skip[i](gated)
                h = h + residual[i](gated)
            logits = head(skips)[:, :, -1]
            step_logits.append(logits)
            sample = torch.multinomial(F.softmax(logits / 0.8, dim=-1), 1, generator=generator).squeeze(1)
            generated.append(sample)
        generated = torch.cat(generated)
        teacher_forced = forward(torch.cat([torch.zeros(1, dtype=torch.long), generated[:-1]]).unsqueeze(0))[0].t()
    return {"loss": loss, "grad": convs[1].weight.grad, "generated": generated,
            "incremental": torch.cat(step_logits), "teacher_forced": teacher_forced}


def test_wavenet_training_and_incremental_generation():
    ours, _ = run_both(wavenet_program)
    np.testing.assert_allclose(ours["incremental"], ours["teacher_forced"], rtol=1e-5, atol=1e-6)
    assert ours["generated"].shape == (6,) and ((ours["generated"] >= 0) & (ours["generated"] < 8)).all()


def mu_law_program(m):
    torch = m.torch
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    mu = 255
    companded = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / math.log1p(mu)
    classes = ((companded + 1) / 2 * mu + 0.5).to(torch.int64)
    y = 2 * (classes.float() / mu) - 1
    expanded = torch.sign(y) * (torch.exp(torch.abs(y) * math.log1p(mu)) - 1.0) / mu
    mu_t = torch.tensor(mu, dtype=x.dtype)
    companded_t = torch.sign(x) * torch.log1p(mu_t * x.abs()) / torch.log1p(mu_t)
    expanded_pow = torch.sign(companded_t) * (torch.pow(1 + mu_t, companded_t.abs()) - 1) / mu_t
    expanded_expm1 = torch.sign(y) * torch.expm1(y.abs() * torch.log1p(mu_t)) / mu_t
    one_hot = torch.nn.functional.one_hot(classes, mu + 1)
    return {"x": x, "companded": companded, "classes": classes, "expanded": expanded, "expanded_pow": expanded_pow,
            "expanded_expm1": expanded_expm1, "expanded_dtype": str(expanded.dtype)[-7:],
            "expm1_dtype": str(expanded_expm1.dtype)[-7:], "one_hot": one_hot.sum(0),
            "one_hot_dtype": str(one_hot.dtype)[-5:],
            "bucketized": torch.bucketize(companded, torch.linspace(-1, 1, mu + 1, dtype=torch.float64))}


def test_mu_law_companding_and_expansion():
    ours, _ = run_both(mu_law_program, rtol=1e-6, atol=1e-6)
    x = ours["x"]  # (PyTorch's linspace: its middle point is -1.1e-16, not 0)
    np.testing.assert_allclose(x, np.linspace(-1, 1, 101), atol=1e-15)
    companded = np.sign(x) * np.log1p(255 * np.abs(x)) / np.log1p(255)
    np.testing.assert_allclose(ours["companded"], companded, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ours["classes"], ((companded + 1) / 2 * 255 + 0.5).astype(np.int64))
    np.testing.assert_allclose(ours["expanded_pow"], x, atol=1e-12)
    np.testing.assert_allclose(ours["expanded"], ours["expanded_expm1"], atol=1e-6)
    assert ours["expanded_dtype"] == "float32" and ours["expm1_dtype"] == "float32"  # classes.float()
    assert ours["one_hot"].sum() == 101 and ours["one_hot_dtype"] == "int64"


# ----------------------------------------------------------------------------------------------
# Text to speech: FastSpeech's length regulator, VITS's path, monotonic alignment search and spline,
# guided attention (DC-TTS), WaveGlow's invertible 1x1 convolution
# ----------------------------------------------------------------------------------------------


def length_regulator_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    B, L, D = 2, 4, 3
    x = torch.randn(B, L, D, requires_grad=True)
    durations = torch.tensor([[1, 2, 0, 3], [2, 2, 1, 0]])
    expanded = [torch.repeat_interleave(x[i], durations[i], dim=0) for i in range(B)]
    padded = nn.utils.rnn.pad_sequence(expanded, batch_first=True, padding_value=0.0)
    left = nn.utils.rnn.pad_sequence(expanded, batch_first=True, padding_value=-1.0, padding_side="left")
    mel_lengths = torch.LongTensor([e.size(0) for e in expanded])

    def sequence_mask(length, max_length=None):
        if max_length is None:
            max_length = length.max()
        return torch.arange(max_length, dtype=length.dtype, device=length.device).unsqueeze(0) < length.unsqueeze(1)

    T = int(durations.sum(1).max())
    cumulative = torch.cumsum(durations, -1)
    path = sequence_mask(cumulative.view(B * L), T).to(x.dtype).view(B, L, T)
    path = path - F.pad(path, (0, 0, 1, 0, 0, 0))[:, :-1]
    by_path = torch.matmul(path.transpose(1, 2), x)
    token_of_frame = torch.searchsorted(cumulative, torch.arange(T).expand(B, T).contiguous(), right=True)
    ((padded * torch.arange(1.0, D + 1)).sum() + by_path.pow(2).sum() + left.sum()).backward()
    return {"padded": padded, "left": left, "mel_lengths": mel_lengths, "path": path, "by_path": by_path,
            "grad": x.grad, "token_of_frame": token_of_frame, "log_durations": torch.log(durations.float() + 1),
            "x": x}


def test_fastspeech_length_regulator_and_vits_path():
    ours, _ = run_both(length_regulator_program)
    x, durations = ours["x"], np.array([[1, 2, 0, 3], [2, 2, 1, 0]])
    for b in range(2):
        expanded = np.repeat(x[b], durations[b], axis=0)
        np.testing.assert_array_equal(ours["padded"][b, :len(expanded)], expanded)
        np.testing.assert_array_equal(ours["by_path"][b, :len(expanded)], expanded)
        np.testing.assert_array_equal(ours["left"][b, 6 - len(expanded):], expanded)
        np.testing.assert_array_equal(ours["token_of_frame"][b, :len(expanded)], np.repeat(np.arange(4), durations[b]))
    np.testing.assert_array_equal(ours["mel_lengths"], [6, 5])
    np.testing.assert_array_equal(ours["path"].sum(1), [[1] * 6, [1] * 5 + [0]])


def vits_alignment_program(m):
    torch = m.torch
    torch.manual_seed(0)
    B, C, T, Tx = 2, 3, 7, 4
    m_p = torch.randn(B, C, Tx, requires_grad=True)
    logs_p = (torch.randn(B, C, Tx) * 0.1).requires_grad_()
    z_p = torch.randn(B, C, T)
    x_mask = (torch.arange(Tx)[None] < torch.tensor([4, 3])[:, None]).unsqueeze(1).float()
    y_mask = (torch.arange(T)[None] < torch.tensor([7, 5])[:, None]).unsqueeze(1).float()
    with torch.no_grad():
        s_p_sq_r = torch.exp(-2 * logs_p)
        neg_cent = (torch.sum(-0.5 * math.log(2 * math.pi) - logs_p, [1], keepdim=True)
                    + torch.matmul(-0.5 * (z_p ** 2).transpose(1, 2), s_p_sq_r)
                    + torch.matmul(z_p.transpose(1, 2), (m_p * s_p_sq_r))
                    + torch.sum(-0.5 * (m_p ** 2) * s_p_sq_r, [1], keepdim=True))
        attn_mask = torch.unsqueeze(x_mask, 2) * torch.unsqueeze(y_mask, -1)
        # monotonic alignment search in NumPy, as the reference's Cython
        value = (neg_cent * attn_mask.squeeze(1)).cpu().numpy().astype(np.float32)
        path = np.zeros_like(value, dtype=np.int32)
        t_ys = attn_mask.squeeze(1).sum(1)[:, 0].data.cpu().numpy().astype(np.int32)
        t_xs = attn_mask.squeeze(1).sum(2)[:, 0].data.cpu().numpy().astype(np.int32)
        for b in range(B):
            v, t_y, t_x = value[b], t_ys[b], t_xs[b]
            for y in range(t_y):
                for x in range(max(0, t_x + y - t_y), min(t_x, y + 1)):
                    v_cur = -1e9 if x == y else v[y - 1, x]
                    v_prev = (0.0 if y == 0 else -1e9) if x == 0 else v[y - 1, x - 1]
                    v[y, x] += max(v_prev, v_cur)
            index = t_x - 1
            for y in range(t_y - 1, -1, -1):
                path[b, y, index] = 1
                if index != 0 and (index == y or v[y - 1, index] < v[y - 1, index - 1]):
                    index -= 1
        attn = torch.from_numpy(path).unsqueeze(1).to(neg_cent.dtype).detach()
    durations = attn.sum(2)
    m_p_frames = torch.matmul(attn.squeeze(1), m_p.transpose(1, 2)).transpose(1, 2)
    logs_p_frames = torch.matmul(attn.squeeze(1), logs_p.transpose(1, 2)).transpose(1, 2)
    z_q = torch.randn(B, C, T, requires_grad=True)
    kl = logs_p_frames - torch.zeros(B, C, T) - 0.5
    kl += 0.5 * ((z_q - m_p_frames) ** 2) * torch.exp(-2.0 * logs_p_frames)
    kl = torch.sum(kl * y_mask) / torch.sum(y_mask)
    kl.backward()
    return {"path": attn, "log_durations": torch.log(durations + 1e-6) * x_mask, "kl": kl, "grad_m": m_p.grad,
            "grad_logs": logs_p.grad, "grad_z": z_q.grad}


def test_vits_monotonic_alignment_search_and_kl():
    ours, _ = run_both(vits_alignment_program, rtol=1e-5, atol=1e-5)
    path = ours["path"][:, 0]
    for b, (frames, tokens) in enumerate([(7, 4), (5, 3)]):
        assert (path[b, :frames, :tokens].sum(1) == 1).all() and path[b, frames:].sum() == 0
        chosen = path[b, :frames, :tokens].argmax(1)
        assert chosen[0] == 0 and chosen[-1] == tokens - 1 and set(np.diff(chosen)) <= {0, 1}  # monotonic


def rq_spline_program(m):
    torch, F = m.torch, m.F
    min_width = min_height = min_derivative = 1e-3

    def searchsorted(bin_locations, inputs, eps=1e-6):
        bin_locations[..., -1] += eps
        return torch.sum(inputs[..., None] >= bin_locations, dim=-1) - 1

    def unconstrained_rational_quadratic_spline(inputs, uw, uh, ud, inverse=False, tail_bound=1.0):
        inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
        outside = ~inside
        outputs, logabsdet = torch.zeros_like(inputs), torch.zeros_like(inputs)
        ud = F.pad(ud, pad=(1, 1))
        constant = np.log(np.exp(1 - min_derivative) - 1)
        ud[..., 0] = constant
        ud[..., -1] = constant
        outputs[outside] = inputs[outside]
        logabsdet[outside] = 0
        outputs[inside], logabsdet[inside] = rational_quadratic_spline(
            inputs[inside], uw[inside, :], uh[inside, :], ud[inside, :], inverse, -tail_bound, tail_bound,
            -tail_bound, tail_bound)
        return outputs, logabsdet

    def rational_quadratic_spline(inputs, uw, uh, ud, inverse, left, right, bottom, top):
        num_bins = uw.shape[-1]
        widths = min_width + (1 - min_width * num_bins) * F.softmax(uw, dim=-1)
        cumwidths = F.pad(torch.cumsum(widths, dim=-1), pad=(1, 0), mode="constant", value=0.0)
        cumwidths = (right - left) * cumwidths + left
        cumwidths[..., 0] = left
        cumwidths[..., -1] = right
        widths = cumwidths[..., 1:] - cumwidths[..., :-1]
        derivatives = min_derivative + F.softplus(ud)
        heights = min_height + (1 - min_height * num_bins) * F.softmax(uh, dim=-1)
        cumheights = F.pad(torch.cumsum(heights, dim=-1), pad=(1, 0), mode="constant", value=0.0)
        cumheights = (top - bottom) * cumheights + bottom
        cumheights[..., 0] = bottom
        cumheights[..., -1] = top
        heights = cumheights[..., 1:] - cumheights[..., :-1]
        bin_idx = searchsorted(cumheights if inverse else cumwidths, inputs)[..., None]
        input_cumwidths = cumwidths.gather(-1, bin_idx)[..., 0]
        input_bin_widths = widths.gather(-1, bin_idx)[..., 0]
        input_cumheights = cumheights.gather(-1, bin_idx)[..., 0]
        delta = heights / widths
        input_delta = delta.gather(-1, bin_idx)[..., 0]
        input_derivatives = derivatives.gather(-1, bin_idx)[..., 0]
        input_derivatives_plus_one = derivatives[..., 1:].gather(-1, bin_idx)[..., 0]
        input_heights = heights.gather(-1, bin_idx)[..., 0]
        slope_sum = input_derivatives + input_derivatives_plus_one - 2 * input_delta
        if inverse:
            a = (inputs - input_cumheights) * slope_sum + input_heights * (input_delta - input_derivatives)
            b = input_heights * input_derivatives - (inputs - input_cumheights) * slope_sum
            c = -input_delta * (inputs - input_cumheights)
            discriminant = b.pow(2) - 4 * a * c
            assert (discriminant >= 0).all()
            theta = (2 * c) / (-b - torch.sqrt(discriminant))
            outputs = theta * input_bin_widths + input_cumwidths
        else:
            theta = (inputs - input_cumwidths) / input_bin_widths
            theta_one_minus_theta = theta * (1 - theta)
            numerator = input_heights * (input_delta * theta.pow(2) + input_derivatives * theta_one_minus_theta)
            outputs = input_cumheights + numerator / (input_delta + slope_sum * theta_one_minus_theta)
        theta_one_minus_theta = theta * (1 - theta)
        denominator = input_delta + slope_sum * theta_one_minus_theta
        derivative_numerator = input_delta.pow(2) * (input_derivatives_plus_one * theta.pow(2)
                                                     + 2 * input_delta * theta_one_minus_theta
                                                     + input_derivatives * (1 - theta).pow(2))
        logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)
        return outputs, -logabsdet if inverse else logabsdet

    torch.manual_seed(0)
    K = 4
    x = (torch.randn(2, 3, 5, dtype=torch.float64) * 1.5).requires_grad_()
    h = torch.randn(2, 3, 5, 3 * K - 1, dtype=torch.float64, requires_grad=True)
    uw, uh, ud = h[..., :K] / math.sqrt(8), h[..., K:2 * K] / math.sqrt(8), h[..., 2 * K:]
    y, logdet = unconstrained_rational_quadratic_spline(x, uw, uh, ud, tail_bound=2.0)
    x_back, logdet_back = unconstrained_rational_quadratic_spline(y, uw, uh, ud, inverse=True, tail_bound=2.0)
    (y.sum() + logdet.sum() + x_back.pow(2).sum()).backward()
    return {"x": x, "y": y, "logdet": logdet, "x_back": x_back, "logdet_back": logdet_back, "grad_x": x.grad,
            "grad_h": h.grad}


def test_vits_rational_quadratic_spline_inverts():
    ours, _ = run_both(rq_spline_program, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["x_back"], ours["x"], atol=1e-10)
    np.testing.assert_allclose(ours["logdet"] + ours["logdet_back"], 0, atol=1e-10)
    outside = np.abs(ours["x"]) > 2
    assert outside.any() and (ours["y"][outside] == ours["x"][outside]).all()
    np.testing.assert_allclose(ours["grad_x"][outside], 1 + 2 * ours["x"][outside])  # y and x_back are x there


def guided_attention_program(m):
    torch = m.torch
    ilens, olens, sigma, B = torch.tensor([5, 3]), torch.tensor([8, 6]), 0.4, 2
    weights = torch.zeros(B, 8, 5)
    for i, (ilen, olen) in enumerate(zip(ilens, olens)):
        grid_x, grid_y = torch.meshgrid(torch.arange(olen, device=olen.device), torch.arange(ilen, device=ilen.device),
                                        indexing="ij")
        grid_x, grid_y = grid_x.float(), grid_y.float()
        weights[i, :olen, :ilen] = 1.0 - torch.exp(-((grid_y / ilen - grid_x / olen) ** 2) / (2 * (sigma ** 2)))
    att = torch.softmax(torch.randn(B, 8, 5, generator=torch.Generator().manual_seed(1)), -1).requires_grad_()
    out_masks, in_masks = torch.arange(8)[None] < olens[:, None], torch.arange(5)[None] < ilens[:, None]
    masks = out_masks.unsqueeze(-1) & in_masks.unsqueeze(-2)
    loss = (weights * att).masked_select(masks).mean()
    loss.backward()
    return {"weights": weights, "loss": loss, "grad": att.grad}


def test_guided_attention_loss():
    ours, _ = run_both(guided_attention_program)
    gx, gy = np.meshgrid(np.arange(6), np.arange(3), indexing="ij")
    np.testing.assert_allclose(ours["weights"][1, :6, :3], 1 - np.exp(-((gy / 3 - gx / 6) ** 2) / 0.32), rtol=1e-6)
    assert (ours["weights"][1, 6:] == 0).all()
    np.testing.assert_allclose(ours["grad"][0, :8, :5], ours["weights"][0] / (8 * 5 + 6 * 3), rtol=1e-6)


def waveglow_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class Invertible1x1Conv(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv1d(c, c, kernel_size=1, stride=1, padding=0, bias=False)
            W = torch.linalg.qr(torch.FloatTensor(c, c).normal_())[0]
            if torch.det(W) < 0:
                W[:, 0] = -1 * W[:, 0]
            self.conv.weight.data = W.view(c, c, 1)

        def forward(self, z, reverse=False):
            batch_size, group_size, n_of_groups = z.size()
            W = self.conv.weight.squeeze()
            if reverse:
                return F.conv1d(z, W.float().inverse()[..., None], bias=None, stride=1, padding=0)
            return self.conv(z), batch_size * n_of_groups * torch.logdet(W)

    class Coupling(nn.Module):
        def __init__(self, n_half):
            super().__init__()
            self.start = nn.utils.parametrizations.weight_norm(nn.Conv1d(n_half, 8, 1))
            self.mid = nn.Conv1d(8, 8, 3, padding=1)
            self.end = nn.Conv1d(8, 2 * n_half, 1)
            self.end.weight.data.zero_()
            self.end.bias.data.zero_()

        def forward(self, a):
            return self.end(torch.tanh(self.mid(self.start(a))))

    n_group = 4
    invertible, coupling = Invertible1x1Conv(n_group), Coupling(n_group // 2)
    initial_W = invertible.conv.weight.detach().clone()
    opt = torch.optim.Adam([*invertible.parameters(), *coupling.parameters()], lr=1e-3)
    audio = torch.randn(2, 32)
    out = {}
    for step in range(3):
        squeezed = audio.unfold(1, n_group, n_group).permute(0, 2, 1)
        mixed, log_det_W = invertible(squeezed)
        n_half = int(mixed.size(1) / 2)
        audio_0, audio_1 = mixed[:, :n_half, :], mixed[:, n_half:, :]
        output = coupling(audio_0)
        log_s, b = output[:, n_half:, :], output[:, :n_half, :]
        z = torch.cat([audio_0, torch.exp(log_s) * audio_1 + b], 1)
        loss = (torch.sum(z * z) / 2 - torch.sum(log_s) - log_det_W) / (z.size(0) * z.size(1) * z.size(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out[f"loss{step}"] = loss
    with torch.no_grad():
        out["back"] = invertible(invertible(squeezed)[0], reverse=True)
    sign, logabsdet = torch.linalg.slogdet(invertible.conv.weight.squeeze())
    out.update(squeezed=squeezed, initial_W=initial_W, W=invertible.conv.weight, sign=sign, logabsdet=logabsdet,
               g=coupling.start.parametrizations.weight.original0)
    return out


def test_waveglow_invertible_convolution():
    ours, _ = run_both(waveglow_program, rtol=1e-4, atol=1e-5)
    W0 = ours["initial_W"][..., 0].astype(np.float64)
    np.testing.assert_allclose(W0 @ W0.T, np.eye(4), atol=1e-5)
    assert np.linalg.det(W0) > 0
    np.testing.assert_allclose(ours["back"], ours["squeezed"], atol=1e-5)
    assert ours["sign"] == 1.0
