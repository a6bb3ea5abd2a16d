# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Sequence-to-sequence training and decoding as PyTorch users write them (see tests/pytorch_programs.py), each run
on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy, brute force and
invariants; what tests/test_programs_probe4_sequence.py does not already cover. Recurrent encoders and language
models: packed bidirectional LSTMs with ``enforce_sorted=False``, ``pad_sequence`` on either side and
``total_length``; the word language model example with tied weights over all four recurrent types (truncated BPTT, a
manual SGD step); Listen, Attend and Spell's pyramidal BiLSTMs with location-aware attention."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Packed bidirectional LSTMs over unsorted lengths; pad_sequence on either side
# ----------------------------------------------------------------------------------------------


def packed_bidirectional(m):
    torch, nn, F = m.torch, m.nn, m.F
    rnn_utils = nn.utils.rnn
    torch.manual_seed(0)
    seqs = [torch.randn(n, 3) for n in (2, 5, 3, 1)]
    for s in seqs:
        s.requires_grad_(True)
    padded = rnn_utils.pad_sequence(seqs, batch_first=True)
    padded_left = rnn_utils.pad_sequence(seqs, batch_first=True, padding_side="left", padding_value=-1.0)
    padded_time_major = rnn_utils.pad_sequence(seqs)
    lengths = torch.tensor([len(s) for s in seqs])
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    packed = rnn_utils.pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
    out, (h, c) = lstm(packed)
    unpacked, lens = rnn_utils.pad_packed_sequence(out, batch_first=True, total_length=6, padding_value=0.5)
    idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, unpacked.size(2))
    last_out = unpacked.gather(1, idx).squeeze(1)
    loss = last_out[:, :4].sum() + (h[-2] ** 2).sum() + c.mean() + unpacked[unpacked != 0.5].pow(2).sum()
    loss.backward()
    info = (packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    return (padded, padded_left, padded_time_major, unpacked, lens, h, c, last_out,
            [s.grad for s in seqs], [p.grad for p in lstm.parameters()], info)


def test_packed_bidirectional_lstm_unsorted():
    (padded, left, time_major, unpacked, lens, h, c, last_out, seq_grads, grads, info), _ = run_both(
        packed_bidirectional)
    lengths = [2, 5, 3, 1]
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(left[b, 5 - n:], padded[b, :n])
        assert (left[b, :5 - n] == -1).all() and (padded[b, n:] == 0).all()
        assert (unpacked[b, n:] == 0.5).all()
        assert seq_grads[b].shape == (n, 3)
    np.testing.assert_array_equal(time_major, padded.transpose(1, 0, 2))
    assert unpacked.shape == (4, 6, 8)
    np.testing.assert_array_equal(lens, lengths)
    # the last layer's final states: forward at each sequence's last step, backward at its first
    np.testing.assert_allclose(h[-2], last_out[:, :4], rtol=1e-6)
    np.testing.assert_allclose(h[-1], unpacked[:, 0, 4:], rtol=1e-6)
    np.testing.assert_array_equal(info[0], [4, 3, 2, 1, 1])
    np.testing.assert_array_equal(info[1], [1, 2, 0, 3])
    np.testing.assert_array_equal(info[2], [2, 0, 1, 3])


# ----------------------------------------------------------------------------------------------
# PyTorch's word_language_model example: tied weights, truncated BPTT, a manual SGD step, sampling
# ----------------------------------------------------------------------------------------------


def word_language_model(m, rnn_type="LSTM"):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class RNNModel(nn.Module):
        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
            super(RNNModel, self).__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            if rnn_type in ['LSTM', 'GRU']:
                self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
            else:
                nonlinearity = {'RNN_TANH': 'tanh', 'RNN_RELU': 'relu'}[rnn_type]
                self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            if tie_weights:
                self.decoder.weight = self.encoder.weight
            self.init_weights()
            self.rnn_type = rnn_type
            self.nhid = nhid
            self.nlayers = nlayers

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.encoder.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            output = self.drop(output)
            decoded = self.decoder(output)
            decoded = decoded.view(-1, self.ntoken)
            return F.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            if self.rnn_type == 'LSTM':
                return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))
            return weight.new_zeros(self.nlayers, bsz, self.nhid)

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        return data.view(bsz, -1).t().contiguous()

    def repackage_hidden(h):
        if isinstance(h, torch.Tensor):
            return h.detach()
        return tuple(repackage_hidden(v) for v in h)

    def get_batch(source, i, bptt=5):
        seq_len = min(bptt, len(source) - 1 - i)
        return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].view(-1)

    train_data = batchify(torch.randint(0, 15, (83,)), 4)
    model = RNNModel(rnn_type, 15, 8, 8, 2, 0.2, tie_weights=True)
    criterion = nn.NLLLoss()
    lr = 5.0
    model.train()
    hidden = model.init_hidden(4)
    losses = []
    for batch, i in enumerate(range(0, train_data.size(0) - 1, 5)):
        data, targets = get_batch(train_data, i)
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
    model.eval()
    words = []
    with torch.no_grad():
        hidden = model.init_hidden(1)
        input = torch.randint(15, (1, 1), dtype=torch.long)
        for i in range(6):
            output, hidden = model(input, hidden)
            word_weights = output.squeeze().div(1.0).exp().cpu()
            word_idx = torch.multinomial(word_weights, 1)[0]
            input.fill_(word_idx)
            words.append(word_idx.item())
    tied = model.decoder.weight is model.encoder.weight
    return losses, words, [p.detach() for p in model.parameters()], tied, train_data.shape


def test_word_language_model_all_recurrent_types():
    for rnn_type in ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]:
        (losses, words, params, tied, shape), _ = run_both(word_language_model, rtol=1e-4, atol=1e-5,
                                                            rnn_type=rnn_type)
        assert tied and tuple(shape) == (20, 4) and len(losses) == 4 and len(words) == 6
        np.testing.assert_allclose(losses[0], math.log(15), atol=0.05)  # weights within ±0.1: nearly uniform
        assert all(0 <= w < 15 for w in words)


# ----------------------------------------------------------------------------------------------
# Listen, Attend and Spell: pyramidal BiLSTMs (reshape of padded outputs, lengths halved, re-packed) and
# location-aware attention (a Conv1d over the previous attention weights)
# ----------------------------------------------------------------------------------------------


def listen_attend_spell(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class pBLSTM(nn.Module):
        def __init__(self, input_dim, hidden_dim):
            super().__init__()
            self.blstm = nn.LSTM(input_dim * 2, hidden_dim, 1, bidirectional=True, batch_first=True)

        def forward(self, x, lens):
            B, T, Fd = x.size()
            if T % 2:
                x = x[:, :-1]
                T -= 1
            x = x.contiguous().view(B, T // 2, Fd * 2)
            lens = lens // 2
            packed = nn.utils.rnn.pack_padded_sequence(x, lens.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.blstm(packed)
            out, lens = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
            return out, lens

    class LocationAttention(nn.Module):
        def __init__(self, dim, conv_channels=3, kernel=5):
            super().__init__()
            self.conv = nn.Conv1d(1, conv_channels, kernel, padding=kernel // 2, bias=False)
            self.loc = nn.Linear(conv_channels, dim, bias=False)
            self.q = nn.Linear(dim, dim, bias=False)
            self.k = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, 1, bias=False)

        def forward(self, query, keys, prev_attn, mask):
            loc = self.loc(self.conv(prev_attn.unsqueeze(1)).transpose(1, 2))
            e = self.v(torch.tanh(self.q(query).unsqueeze(1) + self.k(keys) + loc)).squeeze(-1)
            e = e.masked_fill(~mask, float("-inf"))
            a = F.softmax(e, -1)
            return torch.bmm(a.unsqueeze(1), keys).squeeze(1), a

    x = torch.randn(3, 17, 4)
    lens = torch.tensor([17, 12, 14])
    listener1, listener2 = pBLSTM(4, 3), pBLSTM(6, 3)
    h, hl = listener1(x, lens)
    h, hl = listener2(h, hl)
    mask = torch.arange(h.size(1))[None] < hl[:, None]
    attention = LocationAttention(6)
    cell, emb, out = nn.LSTMCell(6 + 5, 6), nn.Embedding(5, 5), nn.Linear(12, 5)
    ys = torch.tensor([[1, 2, 3], [2, 2, 4], [3, 1, 0]])
    state = (torch.zeros(3, 6), torch.zeros(3, 6))
    ctx = torch.zeros(3, 6)
    prev = mask.float() / mask.float().sum(1, keepdim=True)
    logits, attentions = [], []
    for t in range(3):
        state = cell(torch.cat([emb(ys[:, t]), ctx], -1), state)
        ctx, prev = attention(state[0], h, prev, mask)
        logits.append(out(torch.cat([state[0], ctx], -1)))
        attentions.append(prev)
    logits = torch.stack(logits, 1)
    loss = F.cross_entropy(logits.reshape(-1, 5), ys.reshape(-1), ignore_index=0, label_smoothing=0.1)
    loss.backward()
    return (h, hl, torch.stack(attentions, 1), loss, [p.grad for p in attention.parameters()],
            [p.grad for p in listener1.parameters()])


def test_listen_attend_spell_pyramid_and_location_attention():
    (h, hl, attentions, loss, attention_grads, listener_grads), _ = run_both(listen_attend_spell, rtol=1e-4,
                                                                             atol=1e-6)
    np.testing.assert_array_equal(hl, [4, 3, 3])  # 17, 12, 14 frames halved twice
    assert h.shape == (3, 4, 6) and (h[1:, 3:] == 0).all()
    np.testing.assert_allclose(attentions.sum(-1), 1.0, rtol=1e-6)
    assert (attentions[1:, :, 3:] == 0).all()  # nothing attends past a sequence's end
    assert float(loss) > 0 and all(np.isfinite(g).all() and g.any() for g in attention_grads + listener_grads)
