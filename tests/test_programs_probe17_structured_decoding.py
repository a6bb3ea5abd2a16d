# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Structured prediction and differentiable dynamic programming (see tests/pytorch_programs.py), run on chainrule and
on PyTorch from the same weights and data, comparing losses, decodes and gradients; each model is run in float64
where its authors allow it, and checked besides against enumerating every structure in NumPy, so that the CI run
without PyTorch still asserts the numbers. Decoders: a pointer network trained by REINFORCE (``-inf`` masks, seeded
``Categorical`` sampling); fairseq's monotonic attention in expectation (a log-space exclusive cumprod, MoChA's
chunks by a ``conv1d`` moving sum, MILk's lookback by a flipped cumsum); a Transformer decoded by batched beam search
(``repeat_interleave`` of the memory, ``topk`` over beam x vocab, floor division and remainder, ``index_select`` of
hypotheses, finished beams frozen by ``-inf``), each hypothesis's score checked against its teacher-forced
log-likelihood."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A pointer network (Vinyals et al. 2015) learning to sort by REINFORCE (Bello et al. 2016): an LSTM
# encoder, a decoder whose attention logits over the inputs are masked with -inf once visited,
# Categorical sampling from the seeded generator, an exponential moving-average baseline; greedy
# decoding by argmax
# ----------------------------------------------------------------------------------------------


def pointer_network(m, hidden=8):
    torch, nn = m.torch, m.nn

    class Attention(nn.Module):
        def __init__(self, hidden, C=10.0):
            super().__init__()
            self.W_q = nn.Linear(hidden, hidden, bias=False)
            self.W_ref = nn.Linear(hidden, hidden, bias=False)
            self.v = nn.Parameter(torch.zeros(hidden).uniform_(-0.3, 0.3))
            self.C = C

        def forward(self, query, ref):
            # query: (B, H), ref: (B, N, H)
            u = torch.tanh(self.W_q(query).unsqueeze(1) + self.W_ref(ref)) @ self.v
            return self.C * torch.tanh(u)  # logit clipping

    class PointerNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Linear(1, hidden)
            self.encoder = nn.LSTM(hidden, hidden, batch_first=True)
            self.decoder = nn.LSTMCell(hidden, hidden)
            self.pointer = Attention(hidden)
            self.decoder_start = nn.Parameter(torch.zeros(hidden).uniform_(-0.1, 0.1))

        def forward(self, inputs, greedy=False):
            B, N = inputs.shape
            emb = self.embedding(inputs.unsqueeze(-1))
            ref, (h, c) = self.encoder(emb)
            h, c = h[0], c[0]
            dec_in = self.decoder_start.unsqueeze(0).expand(B, -1)
            mask = torch.zeros(B, N, dtype=torch.bool)
            log_probs, tours = [], []
            for step in range(N):
                h, c = self.decoder(dec_in, (h, c))
                logits = self.pointer(h, ref).masked_fill(mask, float("-inf"))
                dist = torch.distributions.Categorical(logits=logits)
                idx = logits.argmax(-1) if greedy else dist.sample()
                log_probs.append(dist.log_prob(idx))
                tours.append(idx)
                mask = mask.scatter(1, idx.unsqueeze(1), True)
                dec_in = emb.gather(1, idx[:, None, None].expand(-1, 1, emb.size(-1))).squeeze(1)
            return torch.stack(tours, 1), torch.stack(log_probs, 1).sum(1)

    return PointerNet()


def pointer_program(m, weights):
    torch = m.torch
    model = load(m, pointer_network(m), weights)
    rng = np.random.default_rng(23)
    inputs = torch.from_numpy(rng.uniform(0, 1, (6, 5)).astype(np.float32))

    def reward(tours):  # how many adjacent pairs the tour visits in increasing order
        vals = inputs.gather(1, tours)
        return (vals[:, 1:] > vals[:, :-1]).float().sum(1)

    torch.manual_seed(5)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    baseline = None
    history, tours_seen = [], []
    for step in range(6):
        tours, log_prob = model(inputs)
        R = reward(tours)
        baseline = R.mean() if baseline is None else 0.8 * baseline + 0.2 * R.mean()
        loss = -((R - baseline).detach() * log_prob).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append((loss.item(), R.mean().item()))
        tours_seen.append(tours)
    with torch.no_grad():
        greedy, greedy_lp = model(inputs, greedy=True)
    return {"history": history, "tours": tours_seen, "greedy": greedy, "greedy_lp": greedy_lp,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_pointer_network_reinforce():
    weights = weights_of(pointer_network)
    ours, _ = run_both(pointer_program, weights, rtol=1e-5, atol=1e-6)
    for tours in ours["tours"] + [ours["greedy"]]:  # every tour is a permutation: masking never repeats
        assert all(sorted(t) == list(range(5)) for t in tours.tolist())
    assert np.all(ours["greedy_lp"] <= 0)


# ----------------------------------------------------------------------------------------------
# Monotonic attention in expectation as fairseq writes it (Raffel et al. 2017; MoChA, Chiu & Raffel
# 2018; MILk, Arivazhagan et al. 2019): an exclusive cumprod in log space, the expected alignment by
# a recursion over target steps, chunkwise soft attention by a conv1d moving sum and infinite
# lookback by a flipped cumsum, under a source padding mask
# ----------------------------------------------------------------------------------------------


def safe_cumprod(m, tensor, dim: int, eps: float = 1e-10):
    torch = m.torch
    if (tensor + eps < 0).any().item():
        raise RuntimeError("Safe cumprod can only take non-negative tensors as input.")
    # Convert the tensor to log space
    log_tensor = torch.log(tensor + eps)
    # Compute the cumsum in log space
    cumsum_log_tensor = torch.cumsum(log_tensor, dim)
    # Exponentiate back
    exp_cumsum_log_tensor = torch.exp(cumsum_log_tensor)
    return exp_cumsum_log_tensor


def exclusive_cumprod(m, tensor, dim: int, eps: float = 1e-10):
    torch = m.torch
    tensor_size = list(tensor.size())
    tensor_size[dim] = 1
    return_tensor = safe_cumprod(m, torch.cat([torch.ones(tensor_size).type_as(tensor), tensor], dim=dim), dim=dim, eps=eps)
    if dim == 0:
        return return_tensor[:-1]
    elif dim == 1:
        return return_tensor[:, :-1]
    elif dim == 2:
        return return_tensor[:, :, :-1]
    else:
        raise RuntimeError("Cumprod on dimension 3 and more is not implemented")


def expected_alignment_from_p_choose(m, p_choose, padding_mask=None, eps=1e-6):
    torch = m.torch
    bsz, tgt_len, src_len = p_choose.size()
    dtype = p_choose.dtype
    p_choose = p_choose.float()
    if padding_mask is not None:
        p_choose = p_choose.masked_fill(padding_mask.unsqueeze(1), 0.0)
    cumprod_1mp = exclusive_cumprod(m, 1 - p_choose, dim=2, eps=eps)
    cumprod_1mp_clamp = torch.clamp(cumprod_1mp, eps, 1.0)
    alpha_0 = p_choose.new_zeros([bsz, 1, src_len])
    alpha_0[:, :, 0] = 1.0
    previous_alpha = [alpha_0]
    for i in range(tgt_len):
        alpha_i = (p_choose[:, i] * cumprod_1mp[:, i] * torch.cumsum(previous_alpha[i][:, 0] / cumprod_1mp_clamp[:, i], dim=1)).clamp(0, 1.0)
        previous_alpha.append(alpha_i.unsqueeze(1))
    # alpha: bsz * num_heads, tgt_len, src_len
    alpha = torch.cat(previous_alpha[1:], dim=1)
    # Mix precision to prevent overflow for fp16
    alpha = alpha.type(dtype)
    assert not torch.isnan(alpha).any(), "NaN detected in alpha."
    return alpha


def moving_sum(m, x, start_idx: int, end_idx: int):
    torch = m.torch
    assert start_idx > 0 and end_idx > 0
    batch_size, tgt_len, src_len = x.size()
    x = x.view(-1, src_len).unsqueeze(1)
    # batch_size, 1, src_len
    moving_sum_weight = torch.ones([1, 1, end_idx + start_idx - 1]).type_as(x)
    moving_sum = torch.nn.functional.conv1d(x, moving_sum_weight, padding=start_idx + end_idx - 1).squeeze(1)
    moving_sum = moving_sum[:, end_idx:-start_idx]
    assert src_len == moving_sum.size(1)
    assert batch_size * tgt_len == moving_sum.size(0)
    moving_sum = moving_sum.view(batch_size, tgt_len, src_len)
    return moving_sum


def expected_soft_attention(m, alpha, soft_energy, padding_mask=None, chunk_size=None, eps=1e-10):
    torch = m.torch
    if padding_mask is not None:
        alpha = alpha.masked_fill(padding_mask.unsqueeze(1), 0.0)
        soft_energy = soft_energy.masked_fill(padding_mask.unsqueeze(1), -float("inf"))
    assert list(alpha.size()) == list(soft_energy.size())
    dtype = alpha.dtype
    alpha = alpha.float()
    soft_energy = soft_energy.float()
    soft_energy_max, _ = torch.max(soft_energy, dim=2, keepdim=True)
    exp_soft_energy = torch.exp(soft_energy - soft_energy_max) + eps
    if chunk_size is not None:
        # Chunkwise
        beta = (exp_soft_energy * moving_sum(m, alpha / (eps + moving_sum(m, exp_soft_energy, chunk_size, 1)), 1, chunk_size))
    else:
        # Infinite lookback
        # Notice that infinite lookback is a special case of chunkwise
        # where chunksize = inf
        inner_items = alpha / (eps + torch.cumsum(exp_soft_energy, dim=2))
        beta = (exp_soft_energy * torch.cumsum(inner_items.flip(dims=[2]), dim=2).flip(dims=[2]))
        if padding_mask is not None:
            beta = beta.masked_fill(padding_mask.unsqueeze(1).to(torch.bool), 0.0)
    # Mix precision to prevent overflow for fp16
    beta = beta.type(dtype)
    beta = beta.clamp(0, 1)
    assert not torch.isnan(beta).any(), "NaN detected in beta."
    return beta


def monotonic_attention_model(m, dim=6, vocab=8):
    torch, nn = m.torch, m.nn

    class MonotonicAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_embed = nn.Embedding(vocab, dim, padding_idx=0)
            self.tgt_embed = nn.Embedding(vocab, dim)
            self.k_mono, self.q_mono = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.k_soft, self.q_soft = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.energy_bias = nn.Parameter(torch.tensor([-1.0]))
            self.out = nn.Linear(2 * dim, vocab)

        def forward(self, src, tgt, chunk_size):
            padding_mask = src == 0
            k, q = self.src_embed(src), self.tgt_embed(tgt)
            mono_energy = torch.bmm(self.q_mono(q), self.k_mono(k).transpose(1, 2)) / math.sqrt(k.size(-1)) + self.energy_bias
            p_choose = torch.sigmoid(mono_energy)
            alpha = expected_alignment_from_p_choose(m, p_choose, padding_mask)
            soft_energy = torch.bmm(self.q_soft(q), self.k_soft(k).transpose(1, 2))
            beta = expected_soft_attention(m, alpha, soft_energy, padding_mask, chunk_size)
            context = torch.bmm(beta, self.src_embed(src))
            return self.out(torch.cat([context, q], -1)), alpha, beta

    return MonotonicAttention()


def monotonic_attention_program(m, weights, chunk_size):
    torch, F = m.torch, m.F
    model = load(m, monotonic_attention_model(m), weights)
    src = torch.tensor([[3, 1, 4, 1, 5, 2], [2, 7, 1, 0, 0, 0]])
    tgt = torch.tensor([[1, 3, 4, 5], [2, 7, 2, 1]])
    gold = torch.tensor([[3, 1, 4, 5], [2, 7, 1, 1]])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    history = []
    for step in range(5):
        opt.zero_grad()
        logits, alpha, beta = model(src, tgt, chunk_size)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), gold.reshape(-1))
        # MILk's latency term: the expected source position read before each output
        latency = (alpha * torch.arange(1, src.size(1) + 1, dtype=alpha.dtype)).sum(-1).mean()
        (loss + 0.01 * latency).backward()
        opt.step()
        history.append((loss.item(), latency.item()))
    return {"history": history, "alpha": alpha, "beta": beta,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_fairseq_monotonic_attention_in_expectation(chunk_size):
    weights = weights_of(monotonic_attention_model)
    ours, _ = run_both(monotonic_attention_program, weights, chunk_size, rtol=2e-5, atol=1e-6)
    assert ours["history"][-1][0] < ours["history"][0][0]
    alpha, beta = ours["alpha"], ours["beta"]
    assert np.all(alpha >= 0) and np.all(alpha.sum(-1) <= 1 + 1e-5)  # the rest of the mass never attends
    assert np.all(alpha[1, :, 3:] == 0) and np.all(beta[1, :, 3:] == 0)  # nothing on padding
    # the soft attention redistributes the monotonic mass, within a chunk or all the way back
    np.testing.assert_allclose(beta.sum(-1), alpha.sum(-1), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# A Transformer translation model decoded by batched beam search: encoder outputs and their padding
# masks expanded per beam by repeat_interleave, scores over (beam x vocab) by view + topk, beam and token
# by floor division and remainder, hypotheses re-gathered by index_select, finished beams frozen by
# masked_fill with -inf, an n-best list with length-normalised scores
# ----------------------------------------------------------------------------------------------

BOS, EOS, PAD, VOCAB_MT = 1, 2, 0, 9


def transformer_mt(m, d_model=8):
    torch, nn = m.torch, m.nn

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_embed = nn.Embedding(VOCAB_MT, d_model, padding_idx=PAD)
            self.tgt_embed = nn.Embedding(VOCAB_MT, d_model, padding_idx=PAD)
            self.pos = nn.Parameter(torch.randn(16, d_model) * 0.1)
            self.transformer = nn.Transformer(d_model, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                              dim_feedforward=16, dropout=0.0, batch_first=True)
            self.generator = nn.Linear(d_model, VOCAB_MT)

        def encode(self, src):
            src_key_padding_mask = src == PAD
            x = self.src_embed(src) + self.pos[: src.size(1)]
            return self.transformer.encoder(x, src_key_padding_mask=src_key_padding_mask), src_key_padding_mask

        def decode(self, tgt, memory, memory_key_padding_mask):
            tgt_mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), dtype=memory.dtype)
            y = self.tgt_embed(tgt) + self.pos[: tgt.size(1)]
            h = self.transformer.decoder(y, memory, tgt_mask=tgt_mask, tgt_is_causal=True,
                                         memory_key_padding_mask=memory_key_padding_mask)
            return self.generator(h)

        def forward(self, src, tgt_in):
            memory, mask = self.encode(src)
            return self.decode(tgt_in, memory, mask)

    return Seq2Seq()


def beam_search(m, model, src, beam_size=3, max_len=6, alpha=0.6):
    torch = m.torch
    B = src.size(0)
    memory, mask = model.encode(src)
    memory = memory.repeat_interleave(beam_size, dim=0)
    mask = mask.repeat_interleave(beam_size, dim=0)
    seqs = torch.full((B * beam_size, 1), BOS, dtype=torch.long)
    scores = torch.zeros(B, beam_size, dtype=memory.dtype)
    scores[:, 1:] = float("-inf")  # start from one live beam per sentence
    scores = scores.view(-1)
    finished = torch.zeros(B * beam_size, dtype=torch.bool)
    for step in range(max_len):
        logp = model.decode(seqs, memory, mask)[:, -1].log_softmax(-1)  # (B*K, V)
        # a finished beam extends only by PAD at no cost
        pad_row = torch.full_like(logp, float("-inf"))
        pad_row[:, PAD] = 0.0
        logp = torch.where(finished[:, None], pad_row, logp.masked_fill(
            torch.arange(VOCAB_MT)[None] == PAD, float("-inf")))
        cand = (scores[:, None] + logp).view(B, -1)  # (B, K*V)
        top_scores, top_idx = cand.topk(beam_size, dim=-1)
        beam_idx = torch.div(top_idx, VOCAB_MT, rounding_mode="floor")
        token = top_idx % VOCAB_MT
        flat = (beam_idx + torch.arange(B)[:, None] * beam_size).view(-1)
        seqs = torch.cat([seqs.index_select(0, flat), token.view(-1, 1)], dim=1)
        finished = finished.index_select(0, flat) | (token.view(-1) == EOS)
        scores = top_scores.view(-1)
        if finished.all():
            break
    lengths = (seqs[:, 1:] != PAD).sum(1).to(scores.dtype)
    penalty = ((5 + lengths) / 6) ** alpha  # GNMT
    normalised = (scores / penalty).view(B, beam_size)
    order = normalised.argsort(dim=-1, descending=True)
    nbest = seqs.view(B, beam_size, -1).gather(1, order[..., None].expand(-1, -1, seqs.size(1)))
    return nbest, normalised.gather(1, order), scores.view(B, beam_size).gather(1, order)


def transformer_beam_program(m, weights):
    torch, F = m.torch, m.F
    model = load(m, transformer_mt(m), weights).double()
    src = torch.tensor([[3, 4, 5, 6], [7, 3, 8, PAD], [5, 5, PAD, PAD]])
    tgt = torch.tensor([[BOS, 6, 5, 4, 3, EOS], [BOS, 8, 3, 7, EOS, PAD], [BOS, 5, 5, EOS, PAD, PAD]])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    history = []
    for step in range(15):
        opt.zero_grad()
        logits = model(src, tgt[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB_MT), tgt[:, 1:].reshape(-1), ignore_index=PAD)
        loss.backward()
        opt.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        nbest, normalised, raw = beam_search(m, model, src)
        # each hypothesis's raw score is its teacher-forced log-likelihood
        rescored = []
        for b in range(3):
            for k in range(nbest.size(1)):
                hyp = nbest[b, k]
                n = int((hyp[1:] != PAD).sum())
                lp = model(src[b:b + 1], hyp[None, :n]).log_softmax(-1)[0]
                rescored.append(lp.gather(1, hyp[1:n + 1, None]).sum())
    return {"history": history, "nbest": nbest, "normalised": normalised, "raw": raw,
            "rescored": torch.stack(rescored).view(3, -1)}


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # (PyTorch's eval fast path)
def test_transformer_batched_beam_search():
    weights = weights_of(transformer_mt)
    ours, _ = run_both(transformer_beam_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    np.testing.assert_allclose(ours["rescored"], ours["raw"], rtol=1e-9, atol=1e-10)
    assert np.all(np.diff(ours["normalised"], axis=1) <= 0)
    for hyp in ours["nbest"].reshape(-1, ours["nbest"].shape[-1]):
        tokens = list(hyp)
        assert tokens[0] == BOS
        if EOS in tokens:  # nothing but padding after the end
            assert all(t == PAD for t in tokens[tokens.index(EOS) + 1:])
