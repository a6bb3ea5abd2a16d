# ruff: noqa: B007, B023, E501, E701, E702, E731, E741, F841, N801, N802, N806, UP008  (the programs are kept as their authors wrote them)
"""Sequence-to-sequence training and decoding as PyTorch users write them (see tests/pytorch_programs.py), each run
on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy, brute force and
invariants. What tests/test_programs_probe4_sequence.py does not already cover:

PyTorch's seq2seq tutorial in both its versions (the batched EncoderRNN/AttnDecoderRNN with Bahdanau attention and
``topk`` decoding; the older one-token-at-a-time loop with random teacher forcing, ``loss +=`` over steps and an
early break on EOS); bentrevett's packed bidirectional GRU encoder with a masked attention decoder; packed
bidirectional LSTMs with ``enforce_sorted=False``, ``pad_sequence`` on either side and ``total_length``; batched
beam search (a -1e9 start, finished beams forced to EOS, ``index_select`` of states, a GNMT length penalty);
greedy decoding with an early-stop mask; label smoothing with ``ignore_index`` and weights (and the Annotated
Transformer's ``KLDivLoss`` version); CTC training with greedy ``unique_consecutive`` decoding; an RNN-T joint
network (a broadcast add to a 4-d tensor, ``log_softmax`` over it) with its forward-variable lattice; scheduled
sampling with ``clip_grad_norm_``; the BiLSTM-CRF tutorial and a batched CRF; a pointer-generator's
``scatter_add`` over an extended vocabulary; HuggingFace's logits processors; the word language model example
with tied weights over all four recurrent types."""

import itertools
import math
import random

import numpy as np

from .pytorch_programs import run_both


def _log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


# ----------------------------------------------------------------------------------------------
# PyTorch's "NLP From Scratch: Translation with a Sequence to Sequence Network and Attention" (batched version)
# ----------------------------------------------------------------------------------------------


def seq2seq_tutorial(m, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    SOS_token, EOS_token, MAX_LENGTH = 0, 1, 6

    class EncoderRNN(nn.Module):
        def __init__(self, input_size, hidden_size, dropout_p=0.1):
            super(EncoderRNN, self).__init__()
            self.hidden_size = hidden_size
            self.embedding = nn.Embedding(input_size, hidden_size)
            self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, input):
            embedded = self.dropout(self.embedding(input))
            output, hidden = self.gru(embedded)
            return output, hidden

    class BahdanauAttention(nn.Module):
        def __init__(self, hidden_size):
            super(BahdanauAttention, self).__init__()
            self.Wa = nn.Linear(hidden_size, hidden_size)
            self.Ua = nn.Linear(hidden_size, hidden_size)
            self.Va = nn.Linear(hidden_size, 1)

        def forward(self, query, keys):
            scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
            scores = scores.squeeze(2).unsqueeze(1)
            weights = F.softmax(scores, dim=-1)
            context = torch.bmm(weights, keys)
            return context, weights

    class AttnDecoderRNN(nn.Module):
        def __init__(self, hidden_size, output_size, dropout_p=0.1):
            super(AttnDecoderRNN, self).__init__()
            self.embedding = nn.Embedding(output_size, hidden_size)
            self.attention = BahdanauAttention(hidden_size)
            self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
            self.out = nn.Linear(hidden_size, output_size)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, encoder_outputs, encoder_hidden, target_tensor=None):
            batch_size = encoder_outputs.size(0)
            decoder_input = torch.empty(batch_size, 1, dtype=torch.long).fill_(SOS_token)
            decoder_hidden = encoder_hidden
            decoder_outputs = []
            attentions = []
            for i in range(MAX_LENGTH):
                decoder_output, decoder_hidden, attn_weights = self.forward_step(decoder_input, decoder_hidden,
                                                                                 encoder_outputs)
                decoder_outputs.append(decoder_output)
                attentions.append(attn_weights)
                if target_tensor is not None:
                    decoder_input = target_tensor[:, i].unsqueeze(1)  # Teacher forcing
                else:
                    _, topi = decoder_output.topk(1)
                    decoder_input = topi.squeeze(-1).detach()
            decoder_outputs = torch.cat(decoder_outputs, dim=1)
            decoder_outputs = F.log_softmax(decoder_outputs, dim=-1)
            attentions = torch.cat(attentions, dim=1)
            return decoder_outputs, decoder_hidden, attentions

        def forward_step(self, input, hidden, encoder_outputs):
            embedded = self.dropout(self.embedding(input))
            query = hidden.permute(1, 0, 2)
            context, attn_weights = self.attention(query, encoder_outputs)
            input_gru = torch.cat((embedded, context), dim=2)
            output, hidden = self.gru(input_gru, hidden)
            output = self.out(output)
            return output, hidden, attn_weights

    H, IN, OUT = 8, 10, 9
    encoder, decoder = EncoderRNN(IN, H), AttnDecoderRNN(H, OUT)
    input_tensor = torch.randint(2, IN, (4, MAX_LENGTH))
    target_tensor = torch.randint(2, OUT, (4, MAX_LENGTH))
    target_tensor[:, -1] = EOS_token
    encoder_optimizer = optim.Adam(encoder.parameters(), lr=0.01)
    decoder_optimizer = optim.Adam(decoder.parameters(), lr=0.01)
    criterion = nn.NLLLoss()
    losses = []
    for s in range(steps):
        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()
        encoder_outputs, encoder_hidden = encoder(input_tensor)
        decoder_outputs, _, _ = decoder(encoder_outputs, encoder_hidden, target_tensor)
        loss = criterion(decoder_outputs.view(-1, decoder_outputs.size(-1)), target_tensor.view(-1))
        loss.backward()
        encoder_optimizer.step()
        decoder_optimizer.step()
        losses.append(loss.item())
    grads = [p.grad for p in list(encoder.parameters()) + list(decoder.parameters())]
    encoder.eval()
    decoder.eval()
    with torch.no_grad():
        encoder_outputs, encoder_hidden = encoder(input_tensor)
        decoder_outputs, decoder_hidden, decoder_attn = decoder(encoder_outputs, encoder_hidden)
        _, topi = decoder_outputs.topk(1)
        decoded_ids = topi.squeeze()
    return losses, grads, decoder_outputs, decoder_attn, decoded_ids


def test_seq2seq_tutorial_batched_bahdanau():
    (losses, grads, outputs, attn, decoded), _ = run_both(seq2seq_tutorial, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses[0], 2.164684, rtol=1e-5)  # near ln 9: nothing learnt yet
    np.testing.assert_allclose(np.exp(outputs).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)
    assert attn.shape == (4, 6, 6) and decoded.shape == (4, 6)
    np.testing.assert_array_equal(decoded, outputs.argmax(-1))


# ----------------------------------------------------------------------------------------------
# The tutorial's older version: one token at a time, random teacher forcing, loss += per step, break on EOS
# ----------------------------------------------------------------------------------------------


def seq2seq_classic(m, iterations=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(1)
    SOS_token, EOS_token, MAX_LENGTH, hidden_size = 0, 1, 5, 6

    class EncoderRNN(nn.Module):
        def __init__(self, input_size, hidden_size):
            super(EncoderRNN, self).__init__()
            self.hidden_size = hidden_size
            self.embedding = nn.Embedding(input_size, hidden_size)
            self.gru = nn.GRU(hidden_size, hidden_size)

        def forward(self, input, hidden):
            embedded = self.embedding(input).view(1, 1, -1)
            output = embedded
            output, hidden = self.gru(output, hidden)
            return output, hidden

        def initHidden(self):
            return torch.zeros(1, 1, self.hidden_size)

    class AttnDecoderRNN(nn.Module):
        def __init__(self, hidden_size, output_size, dropout_p=0.1, max_length=MAX_LENGTH):
            super(AttnDecoderRNN, self).__init__()
            self.hidden_size = hidden_size
            self.output_size = output_size
            self.dropout_p = dropout_p
            self.max_length = max_length
            self.embedding = nn.Embedding(self.output_size, self.hidden_size)
            self.attn = nn.Linear(self.hidden_size * 2, self.max_length)
            self.attn_combine = nn.Linear(self.hidden_size * 2, self.hidden_size)
            self.dropout = nn.Dropout(self.dropout_p)
            self.gru = nn.GRU(self.hidden_size, self.hidden_size)
            self.out = nn.Linear(self.hidden_size, self.output_size)

        def forward(self, input, hidden, encoder_outputs):
            embedded = self.embedding(input).view(1, 1, -1)
            embedded = self.dropout(embedded)
            attn_weights = F.softmax(self.attn(torch.cat((embedded[0], hidden[0]), 1)), dim=1)
            attn_applied = torch.bmm(attn_weights.unsqueeze(0), encoder_outputs.unsqueeze(0))
            output = torch.cat((embedded[0], attn_applied[0]), 1)
            output = self.attn_combine(output).unsqueeze(0)
            output = F.relu(output)
            output, hidden = self.gru(output, hidden)
            output = F.log_softmax(self.out(output[0]), dim=1)
            return output, hidden, attn_weights

    encoder, decoder = EncoderRNN(7, hidden_size), AttnDecoderRNN(hidden_size, 8)
    encoder_optimizer = optim.SGD(encoder.parameters(), lr=0.05)
    decoder_optimizer = optim.SGD(decoder.parameters(), lr=0.05)
    criterion = nn.NLLLoss()
    rnd = random.Random(3)
    input_tensor = torch.tensor([[3], [4], [5], [EOS_token]], dtype=torch.long)
    target_tensor = torch.tensor([[2], [6], [7], [EOS_token]], dtype=torch.long)
    losses, lengths = [], []
    for it in range(iterations):
        encoder_hidden = encoder.initHidden()
        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()
        input_length = input_tensor.size(0)
        target_length = target_tensor.size(0)
        encoder_outputs = torch.zeros(MAX_LENGTH, encoder.hidden_size)
        loss = 0
        for ei in range(input_length):
            encoder_output, encoder_hidden = encoder(input_tensor[ei], encoder_hidden)
            encoder_outputs[ei] = encoder_output[0, 0]
        decoder_input = torch.tensor([[SOS_token]])
        decoder_hidden = encoder_hidden
        use_teacher_forcing = True if rnd.random() < 0.5 else False
        di = 0
        for di in range(target_length):
            decoder_output, decoder_hidden, decoder_attention = decoder(decoder_input, decoder_hidden, encoder_outputs)
            if use_teacher_forcing:
                decoder_input = target_tensor[di]  # Teacher forcing
            else:
                topv, topi = decoder_output.topk(1)
                decoder_input = topi.squeeze().detach()  # detach from history as input
            loss += criterion(decoder_output, target_tensor[di])
            if not use_teacher_forcing and decoder_input.item() == EOS_token:
                break
        loss.backward()
        encoder_optimizer.step()
        decoder_optimizer.step()
        losses.append(loss.item() / target_length)
        lengths.append(di + 1)
    return losses, lengths, [p.grad for p in encoder.parameters()], [p.grad for p in decoder.parameters()]


def test_seq2seq_tutorial_classic_teacher_forcing_loop():
    (losses, lengths, enc_grads, dec_grads), _ = run_both(seq2seq_classic, rtol=1e-4, atol=1e-5)
    assert all(0 < n <= 4 for n in lengths) and all(loss > 0 for loss in losses)
    # the encoder's embedding rows of tokens never read get no gradient
    np.testing.assert_array_equal(enc_grads[0][[0, 2, 6]], 0)
    assert np.abs(enc_grads[0][[3, 4, 5]]).sum() > 0 and all(np.isfinite(g).all() for g in dec_grads)


# ----------------------------------------------------------------------------------------------
# bentrevett/pytorch-seq2seq 4: a packed bidirectional GRU encoder and a masked attention decoder
# ----------------------------------------------------------------------------------------------


def packed_attention_seq2seq(m, steps=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    rnd = random.Random(0)

    class Encoder(nn.Module):
        def __init__(self, input_dim, emb_dim, enc_hid_dim, dec_hid_dim, dropout):
            super().__init__()
            self.embedding = nn.Embedding(input_dim, emb_dim)
            self.rnn = nn.GRU(emb_dim, enc_hid_dim, bidirectional=True)
            self.fc = nn.Linear(enc_hid_dim * 2, dec_hid_dim)
            self.dropout = nn.Dropout(dropout)

        def forward(self, src, src_len):
            embedded = self.dropout(self.embedding(src))
            packed_embedded = nn.utils.rnn.pack_padded_sequence(embedded, src_len.to('cpu'))
            packed_outputs, hidden = self.rnn(packed_embedded)
            outputs, _ = nn.utils.rnn.pad_packed_sequence(packed_outputs)
            hidden = torch.tanh(self.fc(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1)))
            return outputs, hidden

    class Attention(nn.Module):
        def __init__(self, enc_hid_dim, dec_hid_dim):
            super().__init__()
            self.attn = nn.Linear((enc_hid_dim * 2) + dec_hid_dim, dec_hid_dim)
            self.v = nn.Linear(dec_hid_dim, 1, bias=False)

        def forward(self, hidden, encoder_outputs, mask):
            src_len = encoder_outputs.shape[0]
            hidden = hidden.unsqueeze(1).repeat(1, src_len, 1)
            encoder_outputs = encoder_outputs.permute(1, 0, 2)
            energy = torch.tanh(self.attn(torch.cat((hidden, encoder_outputs), dim=2)))
            attention = self.v(energy).squeeze(2)
            attention = attention.masked_fill(mask == 0, -1e10)
            return F.softmax(attention, dim=1)

    class Decoder(nn.Module):
        def __init__(self, output_dim, emb_dim, enc_hid_dim, dec_hid_dim, dropout, attention):
            super().__init__()
            self.output_dim = output_dim
            self.attention = attention
            self.embedding = nn.Embedding(output_dim, emb_dim)
            self.rnn = nn.GRU((enc_hid_dim * 2) + emb_dim, dec_hid_dim)
            self.fc_out = nn.Linear((enc_hid_dim * 2) + dec_hid_dim + emb_dim, output_dim)
            self.dropout = nn.Dropout(dropout)

        def forward(self, input, hidden, encoder_outputs, mask):
            input = input.unsqueeze(0)
            embedded = self.dropout(self.embedding(input))
            a = self.attention(hidden, encoder_outputs, mask).unsqueeze(1)
            encoder_outputs = encoder_outputs.permute(1, 0, 2)
            weighted = torch.bmm(a, encoder_outputs).permute(1, 0, 2)
            rnn_input = torch.cat((embedded, weighted), dim=2)
            output, hidden = self.rnn(rnn_input, hidden.unsqueeze(0))
            assert (output == hidden).all()
            embedded, output, weighted = embedded.squeeze(0), output.squeeze(0), weighted.squeeze(0)
            prediction = self.fc_out(torch.cat((output, weighted, embedded), dim=1))
            return prediction, hidden.squeeze(0), a.squeeze(1)

    class Seq2Seq(nn.Module):
        def __init__(self, encoder, decoder, src_pad_idx):
            super().__init__()
            self.encoder, self.decoder, self.src_pad_idx = encoder, decoder, src_pad_idx

        def create_mask(self, src):
            return (src != self.src_pad_idx).permute(1, 0)

        def forward(self, src, src_len, trg, teacher_forcing_ratio=0.5):
            batch_size, trg_len = src.shape[1], trg.shape[0]
            outputs = torch.zeros(trg_len, batch_size, self.decoder.output_dim)
            attentions = torch.zeros(trg_len, batch_size, src.shape[0])
            encoder_outputs, hidden = self.encoder(src, src_len)
            input = trg[0, :]
            mask = self.create_mask(src)
            for t in range(1, trg_len):
                output, hidden, a = self.decoder(input, hidden, encoder_outputs, mask)
                outputs[t] = output
                attentions[t] = a
                teacher_force = rnd.random() < teacher_forcing_ratio
                top1 = output.argmax(1)
                input = trg[t] if teacher_force else top1
            return outputs, attentions

    IN, OUT, PAD = 12, 10, 1
    model = Seq2Seq(Encoder(IN, 5, 6, 6, 0.5), Decoder(OUT, 5, 6, 6, 0.5, Attention(6, 6)), PAD)

    def init_weights(m):
        for name, param in m.named_parameters():
            if 'weight' in name:
                nn.init.normal_(param.data, mean=0, std=0.01)
            else:
                nn.init.constant_(param.data, 0)

    model.apply(init_weights)
    optimizer = optim.Adam(model.parameters())
    criterion = nn.CrossEntropyLoss(ignore_index=PAD)
    src = torch.randint(2, IN, (7, 3))
    src_len = torch.tensor([7, 5, 3])
    src[5:, 1] = PAD
    src[3:, 2] = PAD
    trg = torch.randint(2, OUT, (6, 3))
    trg[4:, 2] = PAD
    losses = []
    for s in range(steps):
        model.train()
        optimizer.zero_grad()
        output, _ = model(src, src_len, trg)
        output = output[1:].view(-1, output.shape[-1])
        loss = criterion(output, trg[1:].view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out, attentions = model(src, src_len, trg, 0)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return losses, out, attentions, n_params, [p.grad for p in model.parameters()]


def test_packed_encoder_masked_attention_decoder():
    (losses, out, attentions, n_params, grads), _ = run_both(packed_attention_seq2seq, rtol=1e-4, atol=1e-6)
    assert n_params == 1466 and all(np.isfinite(g).all() for g in grads)
    np.testing.assert_allclose(losses[0], math.log(10), atol=1e-3)  # weights of std 0.01: uniform predictions
    np.testing.assert_allclose(attentions[1:].sum(-1), 1.0, rtol=1e-5)
    assert (attentions[1:, 1, 5:] == 0).all() and (attentions[1:, 2, 3:] == 0).all()  # padding masked out
    assert (out[0] == 0).all()


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
# Batched beam search: -1e9 start, finished beams forced to EOS, index_select of states, GNMT length penalty
# ----------------------------------------------------------------------------------------------


def beam_search(m, beam_size=3, max_len=6, alpha=0.7):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    V, H, B = 7, 5, 2
    emb, cell, proj = nn.Embedding(V, H), nn.GRUCell(H, H), nn.Linear(H, V)
    bos, eos = 1, 2
    h = h_start = torch.randn(B, H)
    h = h.unsqueeze(1).expand(B, beam_size, H).reshape(B * beam_size, H)
    tokens = torch.full((B * beam_size, 1), bos, dtype=torch.long)
    scores = torch.zeros(B, beam_size)
    scores[:, 1:] = -1e9
    scores = scores.view(-1)
    finished = torch.zeros(B * beam_size, dtype=torch.bool)
    with torch.no_grad():
        for t in range(max_len):
            h = cell(emb(tokens[:, -1]), h)
            logp = F.log_softmax(proj(h), dim=-1)
            logp[finished] = -float("inf")
            logp[finished, eos] = 0.0
            cand = (scores.unsqueeze(1) + logp).view(B, -1)
            top_scores, top_idx = cand.topk(beam_size, dim=1)
            beam_idx = top_idx // V
            tok_idx = top_idx % V
            base = (torch.arange(B) * beam_size).unsqueeze(1)
            flat = (base + beam_idx).view(-1)
            tokens = torch.cat([tokens.index_select(0, flat), tok_idx.view(-1, 1)], dim=1)
            h = h.index_select(0, flat)
            finished = finished[flat] | (tok_idx.view(-1) == eos)
            scores = top_scores.view(-1)
            if finished.all():
                break
        lengths = (tokens != eos).sum(1).float()
        lp = ((5 + lengths) / 6) ** alpha
        normed = (scores / lp).view(B, beam_size)
        best = normed.argmax(1)
        best_tokens = tokens.view(B, beam_size, -1)[torch.arange(B), best]
    return tokens, scores, normed, best, best_tokens, finished, (h_start, emb, cell, proj)


def _beam_program(m):
    torch = m.torch
    tokens, scores, normed, best, best_tokens, finished, (h_start, emb, cell, proj) = beam_search(m)
    # replay: the sum of each kept beam's step log-probabilities, up to and including its first EOS
    h = h_start.repeat_interleave(3, dim=0)
    replay = torch.zeros(6)
    with torch.no_grad():
        done = torch.zeros(6, dtype=torch.bool)
        for t in range(1, tokens.size(1)):
            h = cell(emb(tokens[:, t - 1]), h)
            logp = m.F.log_softmax(proj(h), -1).gather(1, tokens[:, t:t + 1]).squeeze(1)
            replay += torch.where(done, torch.zeros(6), logp)
            done = done | (tokens[:, t] == 2)
    return tokens, scores, normed, best, best_tokens, finished, replay


def test_batched_beam_search_with_length_penalty():
    (tokens, scores, normed, best, best_tokens, finished, replay), _ = run_both(_beam_program)
    assert (tokens[:, 0] == 1).all()
    for row in tokens:  # after a beam's first EOS it only repeats EOS
        ends = np.flatnonzero(row == 2)
        assert len(ends) == 0 or (row[ends[0]:] == 2).all()
    per_batch = scores.reshape(2, 3)
    assert (np.diff(per_batch, axis=1) <= 0).all()  # topk keeps them sorted
    np.testing.assert_allclose(scores, replay, rtol=1e-5, atol=1e-5)
    lengths = (tokens != 2).sum(1)
    np.testing.assert_allclose(normed.ravel(), scores / ((5 + lengths) / 6) ** 0.7, rtol=1e-6)
    np.testing.assert_array_equal(best_tokens, tokens.reshape(2, 3, -1)[[0, 1], best])


# ----------------------------------------------------------------------------------------------
# Greedy decoding with an early-stop mask; label smoothing with ignore_index
# ----------------------------------------------------------------------------------------------


def greedy_early_stop(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(5)
    B, V, H, eos, pad = 4, 5, 6, 0, 4
    emb, rnn, out = nn.Embedding(V, H), nn.GRU(H, H, batch_first=True), nn.Linear(H, V)
    x = torch.full((B, 1), 1, dtype=torch.long)
    hidden = None
    done = torch.zeros(B, dtype=torch.bool)
    logps = []
    for t in range(8):
        o, hidden = rnn(emb(x[:, -1:]), hidden)
        logits = out(o[:, -1])
        nxt = logits.argmax(-1).masked_fill(done, pad)
        logps.append(F.log_softmax(logits, -1).gather(1, nxt.unsqueeze(1)).squeeze(1) * (~done).float())
        x = torch.cat([x, nxt[:, None]], 1)
        done = done | (nxt == eos)
        if done.all():
            break
    seq_logp = torch.stack(logps, 1).sum(1)
    seq_logp.sum().backward()
    return x, seq_logp, emb.weight.grad, out.bias.grad


def test_greedy_decoding_with_early_stop_mask():
    (x, seq_logp, emb_grad, bias_grad), _ = run_both(greedy_early_stop)
    assert (seq_logp <= 0).all() and x.shape[1] <= 9
    for row in x:
        ends = np.flatnonzero(row[1:] == 0)
        if len(ends):
            assert (row[1 + ends[0] + 1:] == 4).all()  # padded after EOS
    # d(sum of chosen log-probs)/d(bias) = (#times chosen) - (sum of softmaxes): the entries sum to 0
    np.testing.assert_allclose(bias_grad.sum(), 0.0, atol=1e-5)


def label_smoothing(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(6)
    logits = torch.randn(3, 5, 7, requires_grad=True)
    tgt = torch.randint(0, 7, (3, 5))
    tgt[0, 3:] = -100
    tgt[2, 1] = -100
    l_seq = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, label_smoothing=0.1)
    l_none = F.cross_entropy(logits.view(-1, 7), tgt.view(-1), label_smoothing=0.1, reduction="none")
    w = torch.rand(7)
    l_weighted = F.cross_entropy(logits.view(-1, 7), tgt.view(-1), weight=w, label_smoothing=0.15)
    tgt_pad = tgt.clone()
    tgt_pad[tgt_pad == -100] = 0
    l_pad = nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)(logits.reshape(-1, 7), tgt_pad.reshape(-1))

    class LabelSmoothing(nn.Module):  # the Annotated Transformer's
        def __init__(self, size, padding_idx, smoothing=0.0):
            super(LabelSmoothing, self).__init__()
            self.criterion = nn.KLDivLoss(reduction="sum")
            self.padding_idx = padding_idx
            self.confidence = 1.0 - smoothing
            self.smoothing = smoothing
            self.size = size
            self.true_dist = None

        def forward(self, x, target):
            assert x.size(1) == self.size
            true_dist = x.data.clone()
            true_dist.fill_(self.smoothing / (self.size - 2))
            true_dist.scatter_(1, target.data.unsqueeze(1), self.confidence)
            true_dist[:, self.padding_idx] = 0
            mask = torch.nonzero(target.data == self.padding_idx)
            if mask.dim() > 0:
                true_dist.index_fill_(0, mask.squeeze(), 0.0)
            self.true_dist = true_dist
            return self.criterion(x, true_dist.clone().detach())

    crit = LabelSmoothing(7, 0, 0.1)
    l_kl = crit(logits.view(-1, 7).log_softmax(-1), tgt_pad.view(-1))
    (l_seq + l_none.sum() + l_weighted + l_pad + l_kl).backward()
    return logits, tgt, w, l_seq, l_none, l_weighted, l_pad, l_kl, logits.grad, crit.true_dist


def test_label_smoothing_with_ignore_index():
    (logits, tgt, w, l_seq, l_none, l_weighted, l_pad, l_kl, grad, true_dist), _ = run_both(label_smoothing)
    lp = _log_softmax(logits.reshape(-1, 7))
    t = tgt.reshape(-1)
    kept = t != -100
    nll = np.where(kept, -lp[np.arange(15), np.where(kept, t, 0)], 0)
    smooth = np.where(kept, -lp.mean(1), 0)
    np.testing.assert_allclose(l_none, 0.9 * nll + 0.1 * smooth, rtol=1e-5)
    np.testing.assert_allclose(l_seq, l_none.sum() / kept.sum(), rtol=1e-5)
    # with weights: PyTorch's smoothing term weighs each class by its own weight, and the mean divides by the
    # targets' weights
    tw = np.where(kept, w[np.where(kept, t, 0)], 0)
    weighted = 0.85 * tw * nll + 0.15 * np.where(kept, -(lp * w).sum(1) / 7, 0)
    np.testing.assert_allclose(l_weighted, weighted.sum() / tw.sum(), rtol=1e-5)
    assert (true_dist[t <= 0] == 0).all() and np.allclose(true_dist[t > 0].sum(1), 0.9 + 5 * 0.1 / 5)
    assert np.isfinite(grad).all() and float(l_pad) > 0 and float(l_kl) > 0


# ----------------------------------------------------------------------------------------------
# CTC training and greedy decoding; an RNN-T joint network with its forward-variable lattice
# ----------------------------------------------------------------------------------------------


def ctc_training(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    T, N, C = 12, 3, 6
    lstm = nn.LSTM(4, 8, bidirectional=True)
    fc = nn.Linear(16, C)
    x = torch.randn(T, N, 4)
    out, _ = lstm(x)
    log_probs = fc(out).log_softmax(2)
    input_lengths = torch.tensor([12, 10, 7], dtype=torch.int32)
    target_lengths = torch.tensor([4, 3, 0], dtype=torch.int32)
    targets = torch.randint(1, C, (7,), dtype=torch.int32)
    l_concat = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
                          zero_infinity=True)
    padded_targets = torch.zeros(N, 4, dtype=torch.long)
    padded_targets[0, :4] = targets[:4]
    padded_targets[1, :3] = targets[4:7]
    l_sum = nn.CTCLoss(blank=0, reduction="sum")(log_probs, padded_targets, input_lengths.long(),
                                                 target_lengths.long())
    l_none = F.ctc_loss(log_probs, padded_targets, input_lengths.tolist(), target_lengths.tolist(),
                        reduction="none")
    (l_concat + l_sum + l_none.sum()).backward()
    grads = [p.grad for p in fc.parameters()] + [p.grad for p in lstm.parameters()]
    best = log_probs.argmax(-1).transpose(0, 1)
    decoded = []
    for b in range(N):
        seq = torch.unique_consecutive(best[b, : input_lengths[b]])
        decoded.append(seq[seq != 0].tolist())
    u, inv, cnt = torch.unique_consecutive(best[0], return_inverse=True, return_counts=True)
    return log_probs, targets, l_concat, l_sum, l_none, grads, best, decoded, u, inv, cnt


def _ctc_brute_force(log_probs, target, frames):
    """-log Σ over every frame labelling that collapses to ``target`` (3^frames paths at most)."""
    total = -np.inf
    for path in itertools.product(range(log_probs.shape[1]), repeat=frames):
        collapsed = [c for c, _ in itertools.groupby(path) if c != 0]
        if collapsed == list(target):
            total = np.logaddexp(total, sum(log_probs[t, c] for t, c in enumerate(path)))
    return -total


def test_ctc_training_and_greedy_decoding():
    (log_probs, targets, l_concat, l_sum, l_none, grads, best, decoded, u, inv, cnt), _ = run_both(
        ctc_training, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(l_none[2], -log_probs[:7, 2, 0].sum(), rtol=1e-5)  # the empty target: all blanks
    np.testing.assert_allclose(l_sum, l_none.sum(), rtol=1e-6)
    np.testing.assert_allclose(l_concat, (l_none / np.maximum([4, 3, 0], 1)).mean(), rtol=1e-6)
    for b, n in enumerate([12, 10, 7]):
        labels = [c for c, _ in itertools.groupby(best[b, :n]) if c != 0]
        assert decoded[b] == labels
    np.testing.assert_array_equal(u[inv], best[0])
    assert cnt.sum() == 12 and (np.diff(u) != 0).all()
    assert all(np.isfinite(g).all() for g in grads)


def ctc_short(m):
    torch, F = m.torch, m.F
    torch.manual_seed(1)
    lp = torch.randn(5, 2, 3, dtype=torch.float64).log_softmax(-1).requires_grad_()
    loss = F.ctc_loss(lp, torch.tensor([[1, 1], [2, 1]]), (5, 4), (2, 2), reduction="none")
    loss.sum().backward()
    return lp, loss


def test_ctc_loss_is_the_brute_force_sum_over_alignments():
    (lp, loss), _ = run_both(ctc_short, compare=True)
    np.testing.assert_allclose(loss[0], _ctc_brute_force(lp[:, 0], [1, 1], 5), rtol=1e-10)
    np.testing.assert_allclose(loss[1], _ctc_brute_force(lp[:4, 1], [2, 1], 4), rtol=1e-10)


def rnnt(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(3)
    B, T, U, H, V = 2, 4, 2, 6, 4
    blank = 0

    class Joint(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(H, H)
            self.pred = nn.Linear(H, H)
            self.out = nn.Linear(H, V)

        def forward(self, f, g):
            f = self.enc(f).unsqueeze(2)  # B T 1 H
            g = self.pred(g).unsqueeze(1)  # B 1 U+1 H
            return self.out(torch.tanh(f + g))

    enc = nn.LSTM(3, H, batch_first=True)
    pred_emb, pred_rnn = nn.Embedding(V, H), nn.LSTM(H, H, batch_first=True)
    joint = Joint()
    x = torch.randn(B, T, 3)
    y = torch.randint(1, V, (B, U))
    f, _ = enc(x)
    g, _ = pred_rnn(pred_emb(F.pad(y, (1, 0), value=blank)))
    log_probs = joint(f, g).log_softmax(dim=-1)  # B T U+1 V
    blank_lp = log_probs[..., blank]
    emit_lp = torch.gather(log_probs[:, :, :U], 3, y.unsqueeze(1).expand(B, T, U).unsqueeze(-1)).squeeze(-1)
    alpha = [[None] * (U + 1) for _ in range(T)]
    for t in range(T):
        for u in range(U + 1):
            if t == 0 and u == 0:
                alpha[t][u] = torch.zeros(B)
                continue
            terms = []
            if t > 0:
                terms.append(alpha[t - 1][u] + blank_lp[:, t - 1, u])
            if u > 0:
                terms.append(alpha[t][u - 1] + emit_lp[:, t, u - 1])
            alpha[t][u] = torch.logsumexp(torch.stack(terms), dim=0)
    ll = alpha[T - 1][U] + blank_lp[:, T - 1, U]
    loss = -ll.mean()
    loss.backward()
    return (log_probs, y, ll, [p.grad for p in joint.parameters()], [p.grad for p in enc.parameters()],
            pred_emb.weight.grad)


def test_rnnt_joint_network_lattice():
    (log_probs, y, ll, joint_grads, enc_grads, emb_grad), _ = run_both(rnnt, rtol=1e-4, atol=1e-5)
    B, T, U1, V = log_probs.shape
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    for b in range(B):  # every monotone path: T blanks and U labels in any order, the last step a blank
        total = -np.inf
        for emit_at in itertools.combinations(range(T - 1 + U1 - 1), U1 - 1):
            t = u = 0
            score = 0.0
            for step in range(T - 1 + U1 - 1):
                if step in emit_at:
                    score += log_probs[b, t, u, y[b, u]]
                    u += 1
                else:
                    score += log_probs[b, t, u, 0]
                    t += 1
            total = np.logaddexp(total, score + log_probs[b, T - 1, U1 - 1, 0])
        np.testing.assert_allclose(ll[b], total, rtol=1e-5)
    assert all(np.isfinite(g).all() for g in joint_grads + enc_grads)
    assert (emb_grad[[r for r in range(V) if r != 0 and r not in y]] == 0).all()


# ----------------------------------------------------------------------------------------------
# Scheduled sampling with gradient clipping on a two-layer LSTM decoder
# ----------------------------------------------------------------------------------------------


def scheduled_sampling(m, iterations=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    V, H, B, T = 6, 8, 3, 5

    class Dec(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, H)
            self.lstm = nn.LSTM(H, H, num_layers=2, dropout=0.3)
            self.proj = nn.Linear(H, V)

        def forward(self, tgt, eps):
            h = None
            inp = tgt[0]
            outs = []
            for t in range(1, tgt.size(0)):
                o, h = self.lstm(self.emb(inp).unsqueeze(0), h)
                logit = self.proj(o.squeeze(0))
                outs.append(logit)
                use_model = torch.rand(B) < eps
                sampled = torch.multinomial(F.softmax(logit.detach(), -1), 1).squeeze(1)
                inp = torch.where(use_model, sampled, tgt[t])
            return torch.stack(outs)

    dec = Dec()
    opt = optim.SGD(dec.parameters(), lr=0.5, momentum=0.9, nesterov=True)
    tgt = torch.randint(0, V, (T, B))
    losses, norms, clipped = [], [], []
    for it in range(iterations):
        eps = min(1.0, it * 0.3)
        opt.zero_grad()
        out = dec(tgt, eps)
        loss = F.cross_entropy(out.view(-1, V), tgt[1:].reshape(-1))
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(dec.parameters(), max_norm=0.25, norm_type=2.0))
        clipped.append(torch.stack([p.grad.norm() for p in dec.parameters()]).norm())
        opt.step()
        losses.append(loss)
    return losses, norms, clipped, [p.grad for p in dec.parameters()], [p.detach() for p in dec.parameters()]


def test_scheduled_sampling_with_clip_grad_norm():
    (losses, norms, clipped, grads, params), _ = run_both(scheduled_sampling, rtol=1e-4, atol=1e-5)
    for total, after in zip(norms, clipped):
        np.testing.assert_allclose(after, min(float(total), 0.25), rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads)), clipped[-1],
                               rtol=1e-5)
    assert all(np.isfinite(p).all() for p in params)


# ----------------------------------------------------------------------------------------------
# PyTorch's BiLSTM-CRF tutorial (per-tag loops, Viterbi with backpointers) and a batched CRF
# ----------------------------------------------------------------------------------------------


def bilstm_crf(m, epochs=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(1)
    START_TAG, STOP_TAG = "<START>", "<STOP>"

    def argmax(vec):
        _, idx = torch.max(vec, 1)
        return idx.item()

    def prepare_sequence(seq, to_ix):
        return torch.tensor([to_ix[w] for w in seq], dtype=torch.long)

    def log_sum_exp(vec):
        max_score = vec[0, argmax(vec)]
        max_score_broadcast = max_score.view(1, -1).expand(1, vec.size()[1])
        return max_score + torch.log(torch.sum(torch.exp(vec - max_score_broadcast)))

    class BiLSTM_CRF(nn.Module):
        def __init__(self, vocab_size, tag_to_ix, embedding_dim, hidden_dim):
            super(BiLSTM_CRF, self).__init__()
            self.embedding_dim = embedding_dim
            self.hidden_dim = hidden_dim
            self.tag_to_ix = tag_to_ix
            self.tagset_size = len(tag_to_ix)
            self.word_embeds = nn.Embedding(vocab_size, embedding_dim)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, num_layers=1, bidirectional=True)
            self.hidden2tag = nn.Linear(hidden_dim, self.tagset_size)
            self.transitions = nn.Parameter(torch.randn(self.tagset_size, self.tagset_size))
            self.transitions.data[tag_to_ix[START_TAG], :] = -10000
            self.transitions.data[:, tag_to_ix[STOP_TAG]] = -10000
            self.hidden = self.init_hidden()

        def init_hidden(self):
            return (torch.randn(2, 1, self.hidden_dim // 2), torch.randn(2, 1, self.hidden_dim // 2))

        def _forward_alg(self, feats):
            init_alphas = torch.full((1, self.tagset_size), -10000.)
            init_alphas[0][self.tag_to_ix[START_TAG]] = 0.
            forward_var = init_alphas
            for feat in feats:
                alphas_t = []
                for next_tag in range(self.tagset_size):
                    emit_score = feat[next_tag].view(1, -1).expand(1, self.tagset_size)
                    trans_score = self.transitions[next_tag].view(1, -1)
                    next_tag_var = forward_var + trans_score + emit_score
                    alphas_t.append(log_sum_exp(next_tag_var).view(1))
                forward_var = torch.cat(alphas_t).view(1, -1)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            return log_sum_exp(terminal_var)

        def _get_lstm_features(self, sentence):
            self.hidden = self.init_hidden()
            embeds = self.word_embeds(sentence).view(len(sentence), 1, -1)
            lstm_out, self.hidden = self.lstm(embeds, self.hidden)
            lstm_out = lstm_out.view(len(sentence), self.hidden_dim)
            return self.hidden2tag(lstm_out)

        def _score_sentence(self, feats, tags):
            score = torch.zeros(1)
            tags = torch.cat([torch.tensor([self.tag_to_ix[START_TAG]], dtype=torch.long), tags])
            for i, feat in enumerate(feats):
                score = score + self.transitions[tags[i + 1], tags[i]] + feat[tags[i + 1]]
            return score + self.transitions[self.tag_to_ix[STOP_TAG], tags[-1]]

        def _viterbi_decode(self, feats):
            backpointers = []
            init_vvars = torch.full((1, self.tagset_size), -10000.)
            init_vvars[0][self.tag_to_ix[START_TAG]] = 0
            forward_var = init_vvars
            for feat in feats:
                bptrs_t, viterbivars_t = [], []
                for next_tag in range(self.tagset_size):
                    next_tag_var = forward_var + self.transitions[next_tag]
                    best_tag_id = argmax(next_tag_var)
                    bptrs_t.append(best_tag_id)
                    viterbivars_t.append(next_tag_var[0][best_tag_id].view(1))
                forward_var = (torch.cat(viterbivars_t) + feat).view(1, -1)
                backpointers.append(bptrs_t)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            best_tag_id = argmax(terminal_var)
            path_score = terminal_var[0][best_tag_id]
            best_path = [best_tag_id]
            for bptrs_t in reversed(backpointers):
                best_tag_id = bptrs_t[best_tag_id]
                best_path.append(best_tag_id)
            start = best_path.pop()
            assert start == self.tag_to_ix[START_TAG]
            best_path.reverse()
            return path_score, best_path

        def neg_log_likelihood(self, sentence, tags):
            feats = self._get_lstm_features(sentence)
            return self._forward_alg(feats) - self._score_sentence(feats, tags)

        def forward(self, sentence):
            lstm_feats = self._get_lstm_features(sentence)
            return self._viterbi_decode(lstm_feats)

    training_data = [("the wall street journal reported today that apple corporation made money".split(),
                      "B I I I O O O B I O O".split()),
                     ("georgia tech is a university in georgia".split(), "B I O O O O B".split())]
    word_to_ix = {}
    for sentence, tags in training_data:
        for word in sentence:
            if word not in word_to_ix:
                word_to_ix[word] = len(word_to_ix)
    tag_to_ix = {"B": 0, "I": 1, "O": 2, START_TAG: 3, STOP_TAG: 4}
    model = BiLSTM_CRF(len(word_to_ix), tag_to_ix, 5, 4)
    optimizer = optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-4)
    with torch.no_grad():
        precheck_sent = prepare_sequence(training_data[0][0], word_to_ix)
        before = model(precheck_sent)
    losses = []
    for epoch in range(epochs):
        for sentence, tags in training_data:
            model.zero_grad()
            sentence_in = prepare_sequence(sentence, word_to_ix)
            targets = torch.tensor([tag_to_ix[t] for t in tags], dtype=torch.long)
            loss = model.neg_log_likelihood(sentence_in, targets)
            loss.backward()
            optimizer.step()
            losses.append(loss)
    with torch.no_grad():
        after = model(precheck_sent)
    return before, after, losses, model.transitions.grad


def test_bilstm_crf_tutorial():
    (before, after, losses, transitions_grad), _ = run_both(bilstm_crf, rtol=1e-4, atol=1e-5)
    assert all(np.ravel(loss)[0] > 0 for loss in losses)  # the partition function bounds every path's score
    assert len(before[1]) == len(after[1]) == 11 and set(after[1]) <= {0, 1, 2}
    # nothing moves into START nor out of STOP: those transitions' gradients are exactly 0 (e^-10000)
    assert (transitions_grad[3, :] == 0).all() and (transitions_grad[:, 4] == 0).all()


def batched_crf(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(2)
    T, B, K = 4, 3, 3
    emissions = torch.randn(T, B, K, requires_grad=True)
    tags = torch.randint(0, K, (T, B))
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.uint8)
    start = nn.Parameter(torch.empty(K).uniform_(-0.1, 0.1))
    end = nn.Parameter(torch.empty(K).uniform_(-0.1, 0.1))
    trans = nn.Parameter(torch.empty(K, K).uniform_(-0.1, 0.1))
    mask_f = mask.float()
    score = start[tags[0]] + emissions[0, torch.arange(B), tags[0]]
    for i in range(1, T):
        score += trans[tags[i - 1], tags[i]] * mask_f[i]
        score += emissions[i, torch.arange(B), tags[i]] * mask_f[i]
    seq_ends = mask.long().sum(dim=0) - 1
    score += end[tags[seq_ends, torch.arange(B)]]
    part = start + emissions[0]
    for i in range(1, T):
        next_score = torch.logsumexp(part.unsqueeze(2) + trans + emissions[i].unsqueeze(1), dim=1)
        part = torch.where(mask[i].unsqueeze(1).bool(), next_score, part)
    denominator = torch.logsumexp(part + end, dim=1)
    llh = score - denominator
    llh.sum().backward()
    with torch.no_grad():
        sc = start + emissions[0]
        history = []
        for i in range(1, T):
            ns, indices = (sc.unsqueeze(2) + trans + emissions[i].unsqueeze(1)).max(dim=1)
            sc = torch.where(mask[i].unsqueeze(1).bool(), ns, sc)
            history.append(indices)
        sc += end
        best = []
        for idx in range(B):
            _, best_last_tag = sc[idx].max(dim=0)
            best_tags = [best_last_tag.item()]
            for hist in reversed(history[: seq_ends[idx]]):
                best_last_tag = hist[idx][best_tags[-1]]
                best_tags.append(best_last_tag.item())
            best_tags.reverse()
            best.append(best_tags)
    return emissions, tags, start, end, trans, llh, emissions.grad, trans.grad, best


def test_batched_crf_against_enumeration():
    (emissions, tags, start, end, trans, llh, emissions_grad, trans_grad, best), _ = run_both(batched_crf)
    K = 3
    for b, n in enumerate([4, 3, 2]):
        def path_score(path):
            s = start[path[0]] + emissions[0, b, path[0]] + end[path[-1]]
            return s + sum(trans[path[i - 1], path[i]] + emissions[i, b, path[i]] for i in range(1, n))

        scores = {p: path_score(p) for p in itertools.product(range(K), repeat=n)}
        log_z = np.logaddexp.reduce(list(scores.values()))
        np.testing.assert_allclose(llh[b], path_score(tuple(tags[:n, b])) - log_z, rtol=1e-5, atol=1e-5)
        assert tuple(best[b]) == max(scores, key=scores.get)
        # d llh / d emissions = one-hot(gold) - marginals: each frame's row sums to 0; padded frames get none
        np.testing.assert_allclose(emissions_grad[:n, b].sum(-1), 0, atol=1e-6)
        assert (emissions_grad[n:, b] == 0).all()


# ----------------------------------------------------------------------------------------------
# A pointer-generator's final distribution; HuggingFace's logits processors
# ----------------------------------------------------------------------------------------------


def pointer_generator(m):
    torch, F = m.torch, m.F
    torch.manual_seed(2)
    B, S, V, OOV = 2, 5, 6, 3
    vocab_logits = torch.randn(B, V, requires_grad=True)
    attn_logits = torch.randn(B, S, requires_grad=True)
    p_gen_logit = torch.randn(B, 1, requires_grad=True)
    vocab_dist = F.softmax(vocab_logits, -1)
    enc_padding_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]).float()
    attn_dist = F.softmax(attn_logits, -1) * enc_padding_mask
    attn_dist = attn_dist / attn_dist.sum(1, keepdim=True)
    p_gen = torch.sigmoid(p_gen_logit)
    vocab_dist_ = p_gen * vocab_dist
    attn_dist_ = (1 - p_gen) * attn_dist
    extra_zeros = torch.zeros((B, OOV))
    vocab_dist_ = torch.cat([vocab_dist_, extra_zeros], 1)
    enc_batch_extend_vocab = torch.tensor([[0, 6, 3, 7, 0], [8, 8, 1, 0, 0]])
    final_dist = vocab_dist_.scatter_add(1, enc_batch_extend_vocab, attn_dist_)
    target = torch.tensor([6, 8])
    gold_probs = torch.gather(final_dist, 1, target.unsqueeze(1)).squeeze()
    loss = -torch.log(gold_probs + 1e-12).mean()
    coverage = attn_dist.detach() * 0.5
    cov_loss = torch.sum(torch.min(attn_dist, coverage), 1).mean()
    (loss + cov_loss).backward()
    return final_dist, p_gen, attn_dist, loss, cov_loss, attn_logits.grad, vocab_logits.grad, p_gen_logit.grad


def test_pointer_generator_scatter_add():
    (final, p_gen, attn, loss, cov_loss, attn_grad, vocab_grad, p_gen_grad), _ = run_both(pointer_generator)
    np.testing.assert_allclose(final.sum(1), 1.0, rtol=1e-6)
    # out-of-vocabulary word 6 is copied from source position 1 only, word 8 from positions 0 and 1
    np.testing.assert_allclose(final[0, 6], (1 - p_gen[0, 0]) * attn[0, 1], rtol=1e-6)
    np.testing.assert_allclose(final[1, 8], (1 - p_gen[1, 0]) * attn[1, :2].sum(), rtol=1e-6)
    np.testing.assert_allclose(cov_loss, 0.5, rtol=1e-6)  # min(a, a/2) summed over each distribution
    np.testing.assert_allclose(attn_grad.sum(1), 0, atol=1e-6)  # a softmax's logits: shifts change nothing
    np.testing.assert_allclose(vocab_grad.sum(1), 0, atol=1e-6)


def hf_logits_processors(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    B, V = 3, 10
    logits = torch.randn(B, V)
    input_ids = torch.randint(0, V, (B, 5))
    penalty = 1.3  # RepetitionPenaltyLogitsProcessor
    score = torch.gather(logits, 1, input_ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    scores = logits.scatter(1, input_ids, score) / 0.7  # then TemperatureLogitsWarper
    top_k = 4  # TopKLogitsWarper
    indices_to_remove = scores < torch.topk(scores, top_k)[0][..., -1, None]
    scores_k = scores.masked_fill(indices_to_remove, -float("Inf"))
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)  # TopPLogitsWarper
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_indices_to_remove = cumulative_probs <= (1 - 0.8)
    sorted_indices_to_remove[..., -1:] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    scores_p = scores.masked_fill(indices_to_remove, -float("Inf"))
    next_tokens = torch.multinomial(F.softmax(scores_p, dim=-1), num_samples=1).squeeze(1)
    eos_mask = torch.isin(torch.arange(V), torch.tensor([2, 3]))  # MinLengthLogitsProcessor
    scores_min = torch.where(eos_mask, -float("inf"), scores)
    probs_k = F.softmax(scores_k, -1)  # beam sampling: 2 of each row, ordered by probability
    nt = torch.multinomial(probs_k, num_samples=2, replacement=False)
    nt_scores, _idx = torch.sort(torch.gather(probs_k, -1, nt), descending=True, dim=1)
    nt = torch.gather(nt, -1, _idx)
    unfinished = torch.ones(B, dtype=torch.long)
    unfinished = unfinished & ~(next_tokens == 3)
    return logits, input_ids, scores, scores_k, scores_p, next_tokens, scores_min, nt, nt_scores, unfinished


def test_huggingface_logits_processors():
    (logits, input_ids, scores, scores_k, scores_p, next_tokens, scores_min, nt, nt_scores, unfinished), _ = run_both(
        hf_logits_processors)
    for b in range(3):
        seen = set(input_ids[b].tolist())
        for v in range(10):
            expected = (logits[b, v] * 1.3 if logits[b, v] < 0 else logits[b, v] / 1.3) if v in seen else logits[b, v]
            np.testing.assert_allclose(scores[b, v], expected / 0.7, rtol=1e-6)
        assert np.isfinite(scores_k[b]).sum() == 4
        kept = np.isfinite(scores_p[b])
        p = np.exp(_log_softmax(scores[b]))
        assert p[kept].sum() >= 0.8 - 1e-6 and p[kept].min() >= p[~kept].max(initial=0)
        assert kept[next_tokens[b]] and np.isfinite(scores_k[b, nt[b]]).all()
    assert np.isneginf(scores_min[:, [2, 3]]).all() and (np.diff(nt_scores, axis=1) <= 0).all()
    np.testing.assert_array_equal(unfinished, next_tokens != 3)


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
