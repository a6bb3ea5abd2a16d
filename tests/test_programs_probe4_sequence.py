# ruff: noqa: B007, B023, E741, E731, F841, UP008, UP018, UP045  (the programs are kept as their authors wrote them)
"""Real PyTorch sequence programs (see tests/pytorch_programs.py), each run unchanged but for its imports
on chainrule and on PyTorch from the same weights, comparing losses, parameters and gradients.

What the other program tests do not already cover: bentrevett's packed bidirectional two-layer LSTM
sentiment model (pretrained vectors copied into ``embedding.weight.data``, the padding row zeroed by
hand, ``torch.cat((hidden[-2], hidden[-1]))``, BCEWithLogitsLoss); PyTorch's translation tutorial's
``nn.Transformer`` seq2seq (``generate_square_subsequent_mask``, ``create_mask`` with key-padding masks,
``Adam(betas=(0.9, 0.98), eps=1e-9)``, CrossEntropyLoss with ``ignore_index`` and ``label_smoothing``,
greedy decoding through ``model.encoder``/``model.decoder``); a tied-weight causal Transformer LM
(``norm_first``, gelu, ``is_causal``) with top-k/temperature sampling by ``torch.multinomial`` on a
``Generator``; a Luong-attention LSTM decoder (``LSTMCell``, ``masked_fill(-inf)``, ``bmm``) with a
beam-search step (``topk`` over flattened scores, ``torch.div(rounding_mode='floor')``, ``gather``); and a
LLaMA-style block as Meta's reference code writes it (RMSNorm, rotary embeddings by ``torch.polar`` and
``view_as_complex``, grouped-query attention, SwiGLU, a KV cache, ``torch.dtype`` type hints)."""

import math

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# bentrevett/pytorch-sentiment-analysis 2: a packed bidirectional LSTM over padded reviews
# ----------------------------------------------------------------------------------------------

VOCAB, EMB, HID, PAD_IDX, UNK_IDX = 20, 6, 5, 1, 0


def sentiment(m):
    torch, nn = m.torch, m.nn

    class RNN(nn.Module):
        def __init__(self, vocab_size, embedding_dim, hidden_dim, output_dim, n_layers, bidirectional, dropout,
                     pad_idx):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_idx)
            self.rnn = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers, bidirectional=bidirectional,
                               dropout=dropout)
            self.fc = nn.Linear(hidden_dim * 2, output_dim)
            self.dropout = nn.Dropout(dropout)

        def forward(self, text, text_lengths):
            embedded = self.dropout(self.embedding(text))  # [sent len, batch size, emb dim]
            packed_embedded = nn.utils.rnn.pack_padded_sequence(embedded, text_lengths.to("cpu"),
                                                                enforce_sorted=False)
            packed_output, (hidden, cell) = self.rnn(packed_embedded)
            output, output_lengths = nn.utils.rnn.pad_packed_sequence(packed_output)
            hidden = self.dropout(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1))
            return self.fc(hidden), output, output_lengths

    return RNN(VOCAB, EMB, HID, 1, 2, True, 0.0, PAD_IDX)


def sentiment_training(m, weights, epochs=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, sentiment(m), weights)
    rng = np.random.default_rng(5)
    pretrained_embeddings = torch.tensor(rng.standard_normal((VOCAB, EMB)).astype(np.float32))
    model.embedding.weight.data.copy_(pretrained_embeddings)
    model.embedding.weight.data[UNK_IDX] = torch.zeros(EMB)
    model.embedding.weight.data[PAD_IDX] = torch.zeros(EMB)
    lengths = [6, 3, 5, 2, 6, 4]
    text = np.full((6, len(lengths)), PAD_IDX)
    for j, n in enumerate(lengths):
        text[:n, j] = rng.integers(2, VOCAB, n)
    labels = (text[0] % 2).astype(np.float32)
    text, text_lengths, labels = torch.tensor(text), torch.tensor(lengths), torch.tensor(labels)
    optimizer = optim.Adam(model.parameters(), lr=0.02)
    criterion = nn.BCEWithLogitsLoss()

    def binary_accuracy(preds, y):
        rounded_preds = torch.round(torch.sigmoid(preds))
        correct = (rounded_preds == y).float()
        return correct.sum() / len(correct)

    losses, accs = [], []
    for epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        predictions, output, output_lengths = model(text, text_lengths)
        predictions = predictions.squeeze(1)
        loss = criterion(predictions, labels)
        acc = binary_accuracy(predictions, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        accs.append(acc.item())
    emb_grad = model.embedding.weight.grad
    model.eval()
    with torch.no_grad():
        pred, output, output_lengths = model(text, text_lengths)
        # the same reviews one at a time, unpadded, give the same predictions
        single = torch.cat([model(text[: n, j : j + 1], torch.tensor([n]))[0] for j, n in enumerate(lengths)])
    return (losses, accs, pred, single, output, output_lengths, emb_grad,
            [p.detach() for p in model.parameters()])


def test_sentiment_packed_bidirectional_lstm():
    weights = weights_of(sentiment)
    (losses, accs, pred, single, output, output_lengths, emb_grad, params), _ = run_both(
        sentiment_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(pred, single, rtol=1e-5, atol=1e-6)  # padding changes nothing
    np.testing.assert_array_equal(output_lengths, [6, 3, 5, 2, 6, 4])
    assert output.shape == (6, 6, 2 * HID) and (output[2:, 3] == 0).all()  # pad_packed_sequence's zeros
    assert (emb_grad[PAD_IDX] == 0).all() and (params[0][PAD_IDX] == 0).all()


# ----------------------------------------------------------------------------------------------
# PyTorch's "Language Translation with nn.Transformer" tutorial, in small
# ----------------------------------------------------------------------------------------------

SRC_V, TGT_V, EMB_SIZE, BOS, EOS, PAD = 11, 12, 8, 2, 3, 1


def comparable(model, E):
    """The parameters, less each attention's key bias: adding ``b_k`` adds ``q . b_k`` to every score of a
    query alike, which the softmax ignores, so its gradient is zero up to rounding and Adam's step on it
    (rounding noise over its own square root) is noise in either library. Its gradient is checked apart."""
    kept, key_bias_grads = [], []
    for name, p in model.named_parameters():
        if name.endswith("in_proj_bias"):
            kept += [p.detach()[:E], p.detach()[2 * E :]]
            key_bias_grads.append(p.grad[E : 2 * E].abs().max().item())
        else:
            kept.append(p.detach())
    return kept, key_bias_grads


def translation(m):
    torch, nn = m.torch, m.nn

    class PositionalEncoding(nn.Module):
        def __init__(self, emb_size, dropout, maxlen=20):
            super().__init__()
            den = torch.exp(-torch.arange(0, emb_size, 2) * math.log(10000) / emb_size)
            pos = torch.arange(0, maxlen).reshape(maxlen, 1)
            pos_embedding = torch.zeros((maxlen, emb_size))
            pos_embedding[:, 0::2] = torch.sin(pos * den)
            pos_embedding[:, 1::2] = torch.cos(pos * den)
            pos_embedding = pos_embedding.unsqueeze(-2)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer("pos_embedding", pos_embedding, persistent=False)

        def forward(self, token_embedding):
            return self.dropout(token_embedding + self.pos_embedding[: token_embedding.size(0), :])

    class TokenEmbedding(nn.Module):
        def __init__(self, vocab_size, emb_size):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, emb_size)
            self.emb_size = emb_size

        def forward(self, tokens):
            return self.embedding(tokens.long()) * math.sqrt(self.emb_size)

    class Seq2SeqTransformer(nn.Module):
        def __init__(self, num_encoder_layers, num_decoder_layers, emb_size, nhead, src_vocab_size,
                     tgt_vocab_size, dim_feedforward=16, dropout=0.0):
            super().__init__()
            self.transformer = nn.Transformer(d_model=emb_size, nhead=nhead, num_encoder_layers=num_encoder_layers,
                                              num_decoder_layers=num_decoder_layers,
                                              dim_feedforward=dim_feedforward, dropout=dropout)
            self.generator = nn.Linear(emb_size, tgt_vocab_size)
            self.src_tok_emb = TokenEmbedding(src_vocab_size, emb_size)
            self.tgt_tok_emb = TokenEmbedding(tgt_vocab_size, emb_size)
            self.positional_encoding = PositionalEncoding(emb_size, dropout=dropout)

        def forward(self, src, trg, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask,
                    memory_key_padding_mask):
            src_emb = self.positional_encoding(self.src_tok_emb(src))
            tgt_emb = self.positional_encoding(self.tgt_tok_emb(trg))
            outs = self.transformer(src_emb, tgt_emb, src_mask, tgt_mask, None, src_padding_mask,
                                    tgt_padding_mask, memory_key_padding_mask)
            return self.generator(outs)

        def encode(self, src, src_mask):
            return self.transformer.encoder(self.positional_encoding(self.src_tok_emb(src)), src_mask)

        def decode(self, tgt, memory, tgt_mask):
            return self.transformer.decoder(self.positional_encoding(self.tgt_tok_emb(tgt)), memory, tgt_mask)

    return Seq2SeqTransformer(2, 2, EMB_SIZE, 2, SRC_V, TGT_V)


def translation_training(m, weights, epochs=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    DEVICE = torch.device("cpu")
    transformer = load(m, translation(m), weights)
    assert "positional_encoding.pos_embedding" not in transformer.state_dict()

    def generate_square_subsequent_mask(sz):
        mask = (torch.triu(torch.ones((sz, sz), device=DEVICE)) == 1).transpose(0, 1)
        mask = mask.float().masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, float(0.0))
        return mask

    def create_mask(src, tgt):
        src_seq_len = src.shape[0]
        tgt_seq_len = tgt.shape[0]
        tgt_mask = generate_square_subsequent_mask(tgt_seq_len)
        src_mask = torch.zeros((src_seq_len, src_seq_len), device=DEVICE).type(torch.bool)
        src_padding_mask = (src == PAD).transpose(0, 1)
        tgt_padding_mask = (tgt == PAD).transpose(0, 1)
        return src_mask, tgt_mask, src_padding_mask, tgt_padding_mask

    rng = np.random.default_rng(6)

    def batch(lengths, V):
        out = np.full((max(lengths) + 2, len(lengths)), PAD)
        for j, n in enumerate(lengths):
            out[: n + 2, j] = [BOS, *rng.integers(4, V, n), EOS]
        return torch.tensor(out)

    src, tgt = batch([4, 2, 3], SRC_V), batch([3, 4, 2], TGT_V)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD, label_smoothing=0.1)
    optimizer = optim.Adam(transformer.parameters(), lr=0.001, betas=(0.9, 0.98), eps=1e-9)
    losses = []
    for epoch in range(epochs):
        transformer.train()
        tgt_input = tgt[:-1, :]
        src_mask, tgt_mask, src_padding_mask, tgt_padding_mask = create_mask(src, tgt_input)
        logits = transformer(src, tgt_input, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask,
                             src_padding_mask)
        optimizer.zero_grad()
        tgt_out = tgt[1:, :]
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = [p.grad for n, p in transformer.named_parameters() if not n.endswith("in_proj_bias")]
    params, key_bias_grads = comparable(transformer, EMB_SIZE)

    def greedy_decode(model, src, src_mask, max_len, start_symbol):
        memory = model.encode(src, src_mask)
        ys = torch.ones(1, 1).fill_(start_symbol).type(torch.long).to(DEVICE)
        for i in range(max_len - 1):
            tgt_mask = (generate_square_subsequent_mask(ys.size(0)).type(torch.bool)).to(DEVICE)
            out = model.decode(ys, memory, tgt_mask)
            out = out.transpose(0, 1)
            prob = model.generator(out[:, -1])
            _, next_word = torch.max(prob, dim=1)
            next_word = next_word.item()
            ys = torch.cat([ys, torch.ones(1, 1).type_as(src.data).fill_(next_word)], dim=0)
            if next_word == EOS:
                break
        return ys

    transformer.eval()
    one = src[:, :1]
    ys = greedy_decode(transformer, one, torch.zeros(one.shape[0], one.shape[0]).type(torch.bool), 6, BOS)
    same = nn.Transformer.generate_square_subsequent_mask(4)
    return losses, grads, params, ys, generate_square_subsequent_mask(4), same, max(key_bias_grads)


def test_translation_transformer_tutorial():
    weights = weights_of(translation)
    (losses, grads, params, ys, mask, same, key_bias_grad), _ = run_both(translation_training, weights, rtol=1e-4,
                                                                       atol=1e-5)
    assert key_bias_grad < 1e-5
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(mask, same)
    assert ys.dtype == np.int64 and ys[0, 0] == BOS and 2 <= ys.shape[0] <= 6


# ----------------------------------------------------------------------------------------------
# A tied-weight causal Transformer LM, sampled with top-k and temperature on a Generator
# ----------------------------------------------------------------------------------------------

LM_V, LM_D, LM_T = 10, 8, 6


def causal_lm(m):
    torch, nn = m.torch, m.nn

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(LM_V, LM_D)
            self.pos = nn.Parameter(torch.zeros(1, LM_T, LM_D))
            layer = nn.TransformerEncoderLayer(LM_D, 2, 2 * LM_D, dropout=0.0, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(LM_D), enable_nested_tensor=False)
            self.head = nn.Linear(LM_D, LM_V, bias=False)
            self.head.weight = self.tok.weight  # weight tying

        def forward(self, idx, pad_mask=None):
            T = idx.size(1)
            mask = nn.Transformer.generate_square_subsequent_mask(T)
            x = self.tok(idx) + self.pos[:, :T]
            x = self.blocks(x, mask=mask, src_key_padding_mask=pad_mask, is_causal=True)
            return self.head(x)

    return LM()


def lm_training(m, weights, steps=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, causal_lm(m), weights)
    rng = np.random.default_rng(7)
    data = rng.integers(0, LM_V - 1, (4, LM_T + 1))
    data[1, 5:] = LM_V - 1  # padding at the end of one row, ignored by the loss
    x, y = torch.tensor(data[:, :-1]), torch.tensor(data[:, 1:])
    pad = x == LM_V - 1
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    losses = []
    for step in range(steps):
        logits = model(x, pad)
        loss = F.cross_entropy(logits.view(-1, LM_V), y.reshape(-1), ignore_index=LM_V - 1, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tied_grad = model.tok.weight.grad
    params, key_bias_grads = comparable(model, LM_D)
    assert model.head.weight is model.tok.weight and len(list(model.parameters())) == len(model.state_dict()) - 1

    @torch.no_grad()
    def generate(idx, max_new_tokens, temperature=1.0, top_k=None, generator=None):
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -LM_T:]
            logits = model(idx_cond)[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

    model.eval()
    start = torch.zeros((2, 1), dtype=torch.long)
    greedy = generate(start, 7, top_k=1)  # top-1 sampling is deterministic: both libraries agree
    g = torch.Generator().manual_seed(42)
    sampled = generate(start, 7, temperature=0.8, top_k=3, generator=g)
    g.manual_seed(42)
    again = generate(start, 7, temperature=0.8, top_k=3, generator=g)
    # each sampled token is among the 3 most likely at its step
    ok = True
    with torch.no_grad():
        for t in range(1, sampled.size(1)):
            ctx = sampled[:, max(0, t - LM_T) : t]
            top3 = torch.topk(model(ctx)[:, -1], 3).indices
            ok = ok and bool((top3 == sampled[:, t : t + 1]).any(1).all())
    return (losses, tied_grad, params, greedy,
            bool((sampled == again).all()), ok, sampled.shape, str(sampled.dtype), max(key_bias_grads))


def test_tied_causal_lm_topk_sampling():
    weights = weights_of(causal_lm)
    (losses, tied_grad, params, greedy, reproducible, in_top3, shape, dtype, key_bias_grad), theirs = run_both(
        lm_training, weights, rtol=1e-4, atol=1e-5, compare=False)
    if theirs is not None:  # the sampled tokens come from different generators: compare the rest
        from .pytorch_programs import assert_same
        assert_same((losses, tied_grad, params, greedy), theirs[:4], rtol=1e-4, atol=1e-5)
        assert theirs[4:7] == (reproducible, in_top3, shape)
    assert losses[-1] < losses[0] and reproducible and in_top3 and tuple(shape) == (2, 8)
    assert dtype.endswith("int64") and key_bias_grad < 1e-5


# ----------------------------------------------------------------------------------------------
# A Luong-attention LSTM decoder with masked attention, and one step of beam search
# ----------------------------------------------------------------------------------------------

V2, H2, BEAM = 9, 6, 3


def luong(m):
    torch, nn = m.torch, m.nn

    class Attn(nn.Module):
        def __init__(self, hidden_size):
            super().__init__()
            self.attn = nn.Linear(hidden_size, hidden_size, bias=False)

        def forward(self, hidden, encoder_outputs, mask):
            # hidden (B, H), encoder_outputs (B, S, H): the "general" score h^T W e
            energy = torch.bmm(self.attn(encoder_outputs), hidden.unsqueeze(2)).squeeze(2)
            energy = energy.masked_fill(mask == 0, float("-inf"))
            return torch.softmax(energy, dim=1)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V2, H2, padding_idx=0)
            self.encoder = nn.GRU(H2, H2, batch_first=True)
            self.cell = nn.LSTMCell(2 * H2, H2)
            self.attn = Attn(H2)
            self.concat = nn.Linear(2 * H2, H2)
            self.out = nn.Linear(H2, V2)

        def step(self, token, state, context, enc, mask):
            h, c = self.cell(torch.cat([self.embedding(token), context], 1), state)
            weights = self.attn(h, enc, mask)
            context = weights.unsqueeze(1).bmm(enc).squeeze(1)
            concat_output = torch.tanh(self.concat(torch.cat((h, context), 1)))
            return self.out(concat_output), (h, c), context, weights

    return Model()


def luong_training(m, weights, steps=4, tf_ratio=0.5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, luong(m), weights)
    rng = np.random.default_rng(8)
    src = np.zeros((3, 5), np.int64)
    for i, n in enumerate([5, 3, 4]):
        src[i, :n] = rng.integers(1, V2, n)
    tgt = torch.tensor(rng.integers(1, V2, (3, 4)))
    teacher = rng.random((steps, 4)) < tf_ratio
    src = torch.tensor(src)
    mask = src != 0
    opt = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for it in range(steps):
        enc, h_n = model.encoder(model.embedding(src))
        state = (h_n[0], torch.zeros_like(h_n[0]))
        context = torch.zeros(3, H2)
        token = torch.zeros(3, dtype=torch.long)
        loss = 0
        for t in range(4):
            logits, state, context, attn = model.step(token, state, context, enc, mask)
            loss = loss + F.cross_entropy(logits, tgt[:, t])
            token = tgt[:, t] if teacher[it, t] else logits.argmax(1).detach()
        opt.zero_grad()
        (loss / 4).backward()
        nn.utils.clip_grad_value_(model.parameters(), 0.5)
        opt.step()
        losses.append(loss.item() / 4)

    # one step of beam search from BEAM copies of the first source
    with torch.no_grad():
        enc, h_n = model.encoder(model.embedding(src[:1].expand(BEAM, -1)))
        m1 = mask[:1].repeat(BEAM, 1)
        state = (h_n[0], torch.zeros_like(h_n[0]))
        context = torch.zeros(BEAM, H2)
        beams = torch.zeros(BEAM, 1, dtype=torch.long)
        scores = torch.tensor([0.0] + [-float("inf")] * (BEAM - 1))
        for t in range(3):
            logits, state, context, attn = model.step(beams[:, -1], state, context, enc, m1)
            cand = (scores.unsqueeze(1) + F.log_softmax(logits, -1)).view(-1)
            scores, flat = cand.topk(BEAM)
            origin = torch.div(flat, V2, rounding_mode="floor")
            word = flat % V2
            beams = torch.cat([beams.index_select(0, origin), word.unsqueeze(1)], 1)
            state = tuple(s.index_select(0, origin) for s in state)
            context = context.gather(0, origin.unsqueeze(1).expand(-1, H2))
    return losses, [p.detach() for p in model.parameters()], attn, scores, beams


def test_luong_attention_and_beam_search():
    weights = weights_of(luong)
    (losses, params, attn, scores, beams), _ = run_both(luong_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(attn.sum(1), 1.0, rtol=1e-6)
    assert (attn[:, 5:] == 0).all() if attn.shape[1] > 5 else True
    assert beams.shape == (BEAM, 4) and (np.diff(scores) <= 0).all()


def test_the_programs_run_on_chainrule_alone():
    weights = weights_of(luong)
    a = luong_training(OURS, weights, steps=2)
    b = luong_training(OURS, weights, steps=2)
    assert a[0] == b[0] and np.isfinite(a[0]).all()


# ----------------------------------------------------------------------------------------------
# A LLaMA-style block, as Meta's reference model.py writes it: RMSNorm, rotary embeddings through
# torch.polar and view_as_complex, grouped-query attention (repeat_kv), SwiGLU, a KV cache, and
# type hints with torch.dtype / torch.device
# ----------------------------------------------------------------------------------------------

DIM, N_HEADS, N_KV_HEADS, LLAMA_V, MAX_SEQ = 8, 2, 1, 11, 8


def llama(m):
    torch, nn, F = m.torch, m.nn, m.F
    from typing import Optional

    class RMSNorm(nn.Module):
        def __init__(self, dim: int, eps: float = 1e-6, device: Optional[torch.device] = None,
                     dtype: Optional[torch.dtype] = None):
            super().__init__()
            factory_kwargs = {"device": device, "dtype": dtype}
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(dim, **factory_kwargs))

        def _norm(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            output = self._norm(x.float()).type_as(x)
            return output * self.weight

    def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
        t = torch.arange(end, device=freqs.device, dtype=torch.float32)
        freqs = torch.outer(t, freqs)
        return torch.polar(torch.ones_like(freqs), freqs)  # complex64

    def reshape_for_broadcast(freqs_cis, x):
        ndim = x.ndim
        assert freqs_cis.shape == (x.shape[1], x.shape[-1])
        shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
        return freqs_cis.view(*shape)

    def apply_rotary_emb(xq, xk, freqs_cis):
        xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
        xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
        freqs_cis = reshape_for_broadcast(freqs_cis, xq_)
        xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
        xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
        return xq_out.type_as(xq), xk_out.type_as(xk)

    def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
        bs, slen, n_kv_heads, head_dim = x.shape
        if n_rep == 1:
            return x
        return (x[:, :, :, None, :].expand(bs, slen, n_kv_heads, n_rep, head_dim)
                .reshape(bs, slen, n_kv_heads * n_rep, head_dim))

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_rep = N_HEADS // N_KV_HEADS
            self.head_dim = DIM // N_HEADS
            self.wq = nn.Linear(DIM, N_HEADS * self.head_dim, bias=False)
            self.wk = nn.Linear(DIM, N_KV_HEADS * self.head_dim, bias=False)
            self.wv = nn.Linear(DIM, N_KV_HEADS * self.head_dim, bias=False)
            self.wo = nn.Linear(N_HEADS * self.head_dim, DIM, bias=False)
            self.register_buffer("cache_k", torch.zeros(2, MAX_SEQ, N_KV_HEADS, self.head_dim), persistent=False)
            self.register_buffer("cache_v", torch.zeros(2, MAX_SEQ, N_KV_HEADS, self.head_dim), persistent=False)

        def forward(self, x: torch.Tensor, start_pos: int, freqs_cis: torch.Tensor, mask: Optional[torch.Tensor],
                    use_cache: bool = False):
            bsz, seqlen, _ = x.shape
            xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)
            xq = xq.view(bsz, seqlen, N_HEADS, self.head_dim)
            xk = xk.view(bsz, seqlen, N_KV_HEADS, self.head_dim)
            xv = xv.view(bsz, seqlen, N_KV_HEADS, self.head_dim)
            xq, xk = apply_rotary_emb(xq, xk, freqs_cis=freqs_cis)
            if use_cache:
                self.cache_k = self.cache_k.to(xq)
                self.cache_v = self.cache_v.to(xq)
                self.cache_k[:bsz, start_pos : start_pos + seqlen] = xk
                self.cache_v[:bsz, start_pos : start_pos + seqlen] = xv
                keys = self.cache_k[:bsz, : start_pos + seqlen]
                values = self.cache_v[:bsz, : start_pos + seqlen]
            else:
                keys, values = xk, xv
            keys = repeat_kv(keys, self.n_rep)
            values = repeat_kv(values, self.n_rep)
            xq, keys, values = xq.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2)
            scores = torch.matmul(xq, keys.transpose(2, 3)) / (self.head_dim ** 0.5)
            if mask is not None:
                scores = scores + mask
            scores = F.softmax(scores.float(), dim=-1).type_as(xq)
            output = torch.matmul(scores, values)
            output = output.transpose(1, 2).contiguous().view(bsz, seqlen, -1)
            return self.wo(output)

    class FeedForward(nn.Module):
        def __init__(self, dim: int, hidden_dim: int, multiple_of: int = 4):
            super().__init__()
            hidden_dim = int(2 * hidden_dim / 3)
            hidden_dim = multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)
            self.w1 = nn.Linear(dim, hidden_dim, bias=False)
            self.w2 = nn.Linear(hidden_dim, dim, bias=False)
            self.w3 = nn.Linear(dim, hidden_dim, bias=False)

        def forward(self, x):
            return self.w2(F.silu(self.w1(x)) * self.w3(x))

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_embeddings = nn.Embedding(LLAMA_V, DIM)
            self.attention_norm = RMSNorm(DIM, eps=1e-5)
            self.attention = Attention()
            self.ffn_norm = RMSNorm(DIM, eps=1e-5)
            self.feed_forward = FeedForward(DIM, 4 * DIM)
            self.norm = RMSNorm(DIM, eps=1e-5)
            self.output = nn.Linear(DIM, LLAMA_V, bias=False)
            self.freqs_cis = precompute_freqs_cis(DIM // N_HEADS, MAX_SEQ * 2)

        def forward(self, tokens: torch.Tensor, start_pos: int = 0, use_cache: bool = False):
            _bsz, seqlen = tokens.shape
            h = self.tok_embeddings(tokens)
            freqs_cis = self.freqs_cis[start_pos : start_pos + seqlen]
            mask = None
            if seqlen > 1:
                mask = torch.full((seqlen, seqlen), float("-inf"), device=tokens.device)
                mask = torch.triu(mask, diagonal=1)
                mask = torch.hstack([torch.zeros((seqlen, start_pos), device=tokens.device), mask]).type_as(h)
            h = h + self.attention(self.attention_norm(h), start_pos, freqs_cis, mask, use_cache)
            h = h + self.feed_forward(self.ffn_norm(h))
            return self.output(self.norm(h)).float()

    return Transformer()


def llama_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, llama(m), weights)
    assert str(model.freqs_cis.dtype).endswith("complex64")
    rng = np.random.default_rng(14)
    tokens = torch.tensor(rng.integers(0, LLAMA_V, (2, 7)))
    opt = optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    losses = []
    for step in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, LLAMA_V), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    grads = [p.grad for p in model.parameters()]
    model.eval()
    with torch.inference_mode():
        full = model(tokens[:, :5])
        prefix = model(tokens[:, :3], start_pos=0, use_cache=True)
        step3 = model(tokens[:, 3:4], start_pos=3, use_cache=True)
        step4 = model(tokens[:, 4:5], start_pos=4, use_cache=True)
    return losses, grads, [p.detach() for p in model.parameters()], full, prefix, step3, step4


def test_llama_block_rotary_gqa_kv_cache():
    weights = weights_of(llama)
    (losses, grads, params, full, prefix, step3, step4), _ = run_both(llama_training, weights, rtol=1e-4,
                                                                       atol=1e-5)
    assert losses[-1] < losses[0]
    # decoding with the KV cache gives the logits of the full forward pass
    np.testing.assert_allclose(prefix, full[:, :3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(step3[:, 0], full[:, 3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(step4[:, 0], full[:, 4], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# A collate_fn that packs, and a loop that moves the PackedSequence with .to(device) / .double()
# ----------------------------------------------------------------------------------------------


def packed_batches(m, weights, epochs=2):
    torch, nn, F, optim, D = m.torch, m.nn, m.F, m.optim, m.data
    device = torch.device("cpu")
    rng = np.random.default_rng(21)
    items = [(rng.standard_normal((n, 3)).astype(np.float32), int(n % 2)) for n in (3, 5, 2, 4, 1, 5)]

    def collate(batch):
        seqs = [torch.from_numpy(x) for x, _ in batch]
        return nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False), torch.tensor([y for _, y in batch])

    loader = D.DataLoader(items, batch_size=3, collate_fn=collate)
    gru = load(m, nn.GRU(3, 4), weights["gru"]).double().to(device)
    head = load(m, nn.Linear(4, 2), weights["head"]).double().to(device)
    opt = optim.SGD([*gru.parameters(), *head.parameters()], lr=0.1)
    log = []
    for epoch in range(epochs):
        for packed, labels in loader:
            packed, labels = packed.to(device), labels.to(device)
            assert packed.to(device) is packed
            packed = packed.double()
            _, h = gru(packed)
            loss = F.cross_entropy(head(h[-1]), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            log.append((loss.item(), str(packed.data.dtype).split(".")[-1], packed.is_cuda,
                        packed.float().data.dtype == torch.float32, packed.batch_sizes.tolist()))
    return log, [p.detach() for p in gru.parameters()]


def test_packed_sequences_move_and_convert_like_tensors():
    weights = {"gru": weights_of(lambda m: m.nn.GRU(3, 4)), "head": weights_of(lambda m: m.nn.Linear(4, 2), seed=1)}
    (log, params), _ = run_both(packed_batches, weights, rtol=1e-10, atol=1e-12)
    assert [entry[1:4] for entry in log] == [("float64", False, True)] * 4
    assert log[0][4] == [3, 3, 2, 1, 1]
