# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is a function of
the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``), run on chainrule and, where PyTorch is
installed, on PyTorch, comparing the numbers. Small versions of well-known training programs: a seq2seq GRU with
Bahdanau attention and teacher forcing (PyTorch's "NLP From Scratch: Translation" tutorial, batched), word2vec
skip-gram with negative sampling, a Transformer-encoder classifier (padding mask, positional encodings, warmup +
cosine LambdaLR, clipping, AdamW weight-decay groups)."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# seq2seq with attention (PyTorch's "NLP From Scratch: Translation" tutorial, batched)
# ----------------------------------------------------------------------------------------------

PAD, SOS, EOS = 0, 1, 2


def seq2seq(m, weights, steps=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    V, H = 12, 16
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, H, padding_idx=PAD)
            self.gru = nn.GRU(H, H, batch_first=True)
            self.dropout = nn.Dropout(0.0)
        def forward(self, x):
            emb = self.dropout(self.embedding(x))
            out, hidden = self.gru(emb)
            return out, hidden
    class BahdanauAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.Wa = nn.Linear(H, H)
            self.Ua = nn.Linear(H, H)
            self.Va = nn.Linear(H, 1)
        def forward(self, query, keys, mask):
            scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
            scores = scores.squeeze(2).unsqueeze(1)
            scores = scores.masked_fill(mask.unsqueeze(1), float("-inf"))
            weights = F.softmax(scores, dim=-1)
            context = torch.bmm(weights, keys)
            return context, weights
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, H)
            self.attention = BahdanauAttention()
            self.gru = nn.GRU(2 * H, H, batch_first=True)
            self.out = nn.Linear(H, V)
        def forward(self, enc_out, enc_hidden, mask, target=None, max_len=5):
            B = enc_out.size(0)
            dec_input = torch.empty(B, 1, dtype=torch.long).fill_(SOS)
            hidden = enc_hidden
            outs, attns = [], []
            for i in range(max_len):
                emb = self.embedding(dec_input)
                query = hidden.permute(1, 0, 2)
                ctx, attn = self.attention(query, enc_out, mask)
                out, hidden = self.gru(torch.cat((emb, ctx), dim=2), hidden)
                out = self.out(out)
                outs.append(out)
                attns.append(attn)
                if target is not None:
                    dec_input = target[:, i].unsqueeze(1)
                else:
                    _, topi = out.topk(1)
                    dec_input = topi.squeeze(-1).detach()
            outs = torch.cat(outs, dim=1)
            return F.log_softmax(outs, dim=-1), hidden, torch.cat(attns, dim=1)
    class S2S(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.decoder = Decoder()
    model = S2S()
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(3)
    src = rng.integers(3, V, (4, 6))
    src[0, 4:] = PAD
    src[2, 5:] = PAD
    tgt = np.concatenate([src[:, :4][:, ::-1], np.full((4, 1), EOS)], 1).copy()
    tgt[1, 3:] = PAD
    src, tgt = torch.tensor(src), torch.tensor(tgt)
    mask = src == PAD
    crit = nn.NLLLoss(ignore_index=PAD)
    eopt = optim.Adam(model.encoder.parameters(), lr=0.01)
    dopt = optim.Adam(model.decoder.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        eopt.zero_grad()
        dopt.zero_grad()
        eo, eh = model.encoder(src)
        logp, _, attn = model.decoder(eo, eh, mask, target=tgt)
        loss = crit(logp.view(-1, logp.size(-1)), tgt.view(-1))
        loss.backward()
        eopt.step()
        dopt.step()
        losses.append(loss.item())
    with torch.no_grad():
        eo, eh = model.encoder(src)
        logp, _, attn = model.decoder(eo, eh, mask)
        pred = logp.argmax(-1)
    return losses, attn, pred, model.encoder.embedding.weight.grad


def test_seq2seq_attention_teacher_forcing():
    weights = weights_of(lambda m: seq2seq(m, None))
    (losses, attn, pred, emb_grad), _ = run_both(seq2seq, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] - 0.5  # 2.52 -> 1.86 on PyTorch
    assert attn.shape == (4, 5, 6) and pred.shape == (4, 5)
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)
    assert (attn[0, :, 4:] == 0).all() and (attn[2, :, 5:] == 0).all()  # masked_fill(-inf) on padding
    assert (emb_grad[PAD] == 0).all()  # padding_idx gets no gradient


# ----------------------------------------------------------------------------------------------
# word2vec skip-gram with negative sampling
# ----------------------------------------------------------------------------------------------


def skipgram(m, weights, epochs=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    V, D, K = 20, 8, 4
    class SkipGramNeg(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_embed = nn.Embedding(V, D)
            self.out_embed = nn.Embedding(V, D)
            self.in_embed.weight.data.uniform_(-1, 1)
            self.out_embed.weight.data.uniform_(-1, 1)
        def forward(self, input_words, output_words, noise_words):
            input_vectors = self.in_embed(input_words).unsqueeze(2)       # (B, D, 1)
            output_vectors = self.out_embed(output_words).unsqueeze(1)    # (B, 1, D)
            noise_vectors = self.out_embed(noise_words).neg()             # (B, K, D)
            out_loss = torch.bmm(output_vectors, input_vectors).sigmoid().log().squeeze()
            noise_loss = F.logsigmoid(torch.bmm(noise_vectors, input_vectors)).squeeze().sum(1)
            return -(out_loss + noise_loss).mean()
    model = SkipGramNeg()
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(1)
    corpus = rng.integers(0, V, 200)
    pairs = np.array([(corpus[i], corpus[j]) for i in range(len(corpus))
                      for j in range(max(0, i - 2), min(len(corpus), i + 3)) if i != j])
    freqs = np.bincount(corpus, minlength=V) ** 0.75
    noise_dist = torch.tensor(freqs / freqs.sum())
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for epoch in range(epochs):
        for b in range(0, 256, 64):
            inp = torch.tensor(pairs[b:b + 64, 0])
            out = torch.tensor(pairs[b:b + 64, 1])
            noise = torch.tensor(rng.choice(V, (64, K), p=freqs / freqs.sum()))
            loss = model(inp, out, noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    torch.manual_seed(0)
    drawn = torch.multinomial(noise_dist, 1000, replacement=True)
    emb = model.in_embed.weight
    sims = F.cosine_similarity(emb[:3].unsqueeze(1), emb.unsqueeze(0), dim=2)
    return losses, sims, model.out_embed.weight.grad, drawn.shape, drawn.dtype == torch.int64


def test_skipgram_negative_sampling():
    weights = weights_of(lambda m: skipgram(m, None))
    (losses, sims, out_grad, drawn_shape, drawn_long), _ = run_both(skipgram, weights, rtol=1e-4, atol=1e-5)
    assert len(losses) == 20 and losses[-1] < losses[0] - 0.3  # 4.06 -> 3.55 on PyTorch
    assert sims.shape == (3, 20)
    np.testing.assert_allclose(np.diag(sims[:, :3]), 1.0, rtol=1e-5)
    assert tuple(drawn_shape) == (1000,) and drawn_long


# ----------------------------------------------------------------------------------------------
# A Transformer-encoder classifier: padding mask, positional encodings, warmup + cosine,
# clip_grad_norm_, AdamW with and without weight decay
# ----------------------------------------------------------------------------------------------


def transformer_cls(m, weights, steps=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    V, D, C, L = 16, 16, 3, 7
    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.0, max_len=32):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            position = torch.arange(max_len).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
            pe = torch.zeros(max_len, 1, d_model)
            pe[:, 0, 0::2] = torch.sin(position * div_term)
            pe[:, 0, 1::2] = torch.cos(position * div_term)
            self.register_buffer('pe', pe)
        def forward(self, x):
            x = x + self.pe[:x.size(0)]
            return self.dropout(x)
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, D, padding_idx=0)
            self.pos_encoder = PositionalEncoding(D)
            layer = nn.TransformerEncoderLayer(D, nhead=2, dim_feedforward=32, dropout=0.0)
            self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(D)
            self.head = nn.Linear(D, C)
        def forward(self, src, pad_mask):
            x = self.embedding(src) * math.sqrt(D)     # (L, B, D): seq-first
            x = self.pos_encoder(x)
            x = self.transformer_encoder(x, src_key_padding_mask=pad_mask)
            keep = (~pad_mask).t().unsqueeze(-1).float()
            pooled = (x * keep).sum(0) / keep.sum(0)
            return self.head(self.norm(pooled))
    model = Classifier()
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(4)
    lengths = np.array([7, 5, 3, 6, 7, 4])
    src = rng.integers(1, V, (6, L))
    src[np.arange(L)[None, :] >= lengths[:, None]] = 0
    labels = torch.tensor(src[:, 0] % C)
    src_t = torch.tensor(src.T.copy())
    pad_mask = torch.tensor(src == 0)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    optimizer = optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.98))
    warmup = 3
    def lr_lambda(step):
        if step < warmup:
            return float(step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    losses, lrs, norms = [], [], []
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        logits = model(src_t, pad_mask)
        loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), 0.5).item())
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        lrs.append(scheduler.get_last_lr())
    model.eval()
    with torch.no_grad():
        out_eval = model(src_t, pad_mask)
        # a padded token's content must not change any output
        src2 = src.copy()
        src2[2, 5] = 9
        out_eval2 = model(torch.tensor(src2.T.copy()), pad_mask)
    return losses, lrs, norms, out_eval, out_eval2


def test_transformer_encoder_classifier():
    weights = weights_of(lambda m: transformer_cls(m, None))
    (losses, lrs, norms, out, out_padded_changed), _ = run_both(transformer_cls, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < 0.6 * losses[0]  # 1.56 -> 0.73 on PyTorch
    # read after scheduler.step(): warmup factors 2/3, 1, then the cosine from 1 down to 0
    factors = (2 / 3, 1, *(0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(6)))
    expected = [3e-3 * f for f in factors]
    np.testing.assert_allclose([lr[0] for lr in lrs], expected, rtol=1e-12, atol=1e-15)
    assert all(a == b for a, b in lrs)  # both groups follow the schedule
    assert norms[0] > 0.5  # the norm before clipping is returned
    np.testing.assert_array_equal(out, out_padded_changed)  # a padded token changes nothing
