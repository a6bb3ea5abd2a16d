# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Classic NLP programs (see tests/pytorch_programs.py) not already among the program tests, run on chainrule and on
PyTorch from the same weights and data, comparing losses, gradients, decoded outputs and short training trajectories;
dropout-on variants are compared where PyTorch draws its Bernoulli masks as chainrule does (AMD processors), and run
for finite values elsewhere. Recurrent seq2seq: PyTorch's original seq2seq tutorial (one sentence at a time,
``encoder_outputs[ei] = encoder_output[0, 0]`` into a max_length buffer, attention by a Linear over max_length slots,
``topi.squeeze().detach()``, ``decoder_attentions[di] = decoder_attention.data``); a packed seq2seq (token ids packed
unsorted and re-wrapped as ``PackedSequence(emb(packed.data), batch_sizes, sorted_indices)``, h_n split by direction,
a decoder over its own packed targets given (h0, c0), Luong 'general' attention under a length mask, the loss on
packed rows), with its focused checks; the sequence utilities (``pad_sequence(padding_side='left')``,
``unpad_sequence``, ``unpack_sequence``, packed fields, ``PackedSequence.to``); batched beam search with GNMT's
length penalty and back-pointers."""

import numpy as np

from .pytorch_programs import load, run_both, same_dropout_masks, weights_of

# ----------------------------------------------------------------------------------------------
# PyTorch's original seq2seq tutorial (one sentence at a time, attention over max_length slots)
# ----------------------------------------------------------------------------------------------

SOS_token, EOS_token, MAX_LENGTH = 0, 1, 6
PAIRS = [([2, 3, 4], [2, 5]), ([5, 6, 3, 2], [3, 4, 6]), ([4, 4], [6, 2, 2]), ([6, 2, 5, 3, 4], [5, 5, 3])]


def old_seq2seq(m, hidden_size=8, n_words=7):
    torch, nn, F = m.torch, m.nn, m.F

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

            attn_weights = F.softmax(
                self.attn(torch.cat((embedded[0], hidden[0]), 1)), dim=1)
            attn_applied = torch.bmm(attn_weights.unsqueeze(0),
                                     encoder_outputs.unsqueeze(0))

            output = torch.cat((embedded[0], attn_applied[0]), 1)
            output = self.attn_combine(output).unsqueeze(0)

            output = F.relu(output)
            output, hidden = self.gru(output, hidden)

            output = F.log_softmax(self.out(output[0]), dim=1)
            return output, hidden, attn_weights

    return EncoderRNN(n_words, hidden_size), AttnDecoderRNN(hidden_size, n_words, dropout_p=0.1)


def old_seq2seq_training(m, weights, n_iters=8, learning_rate=0.05):
    torch, nn, optim = m.torch, m.nn, m.optim
    encoder, decoder = old_seq2seq(m)
    load(m, encoder, weights[0])
    load(m, decoder, weights[1])
    decoder.dropout.p = 0.0  # (the masks are PyTorch's own draws; the rest of the program is compared)
    teacher_forcing = [True, False, True, True, False, False, True, False]

    def tensorFromPair(pair):
        return (torch.tensor(pair[0] + [EOS_token], dtype=torch.long).view(-1, 1),
                torch.tensor(pair[1] + [EOS_token], dtype=torch.long).view(-1, 1))

    def train(input_tensor, target_tensor, encoder, decoder, encoder_optimizer, decoder_optimizer, criterion,
              use_teacher_forcing, max_length=MAX_LENGTH):
        encoder_hidden = encoder.initHidden()

        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()

        input_length = input_tensor.size(0)
        target_length = target_tensor.size(0)

        encoder_outputs = torch.zeros(max_length, encoder.hidden_size)

        loss = 0

        for ei in range(input_length):
            encoder_output, encoder_hidden = encoder(
                input_tensor[ei], encoder_hidden)
            encoder_outputs[ei] = encoder_output[0, 0]

        decoder_input = torch.tensor([[SOS_token]])

        decoder_hidden = encoder_hidden

        if use_teacher_forcing:
            # Teacher forcing: Feed the target as the next input
            for di in range(target_length):
                decoder_output, decoder_hidden, decoder_attention = decoder(
                    decoder_input, decoder_hidden, encoder_outputs)
                loss += criterion(decoder_output, target_tensor[di])
                decoder_input = target_tensor[di]  # Teacher forcing

        else:
            # Without teacher forcing: use its own predictions as the next input
            for di in range(target_length):
                decoder_output, decoder_hidden, decoder_attention = decoder(
                    decoder_input, decoder_hidden, encoder_outputs)
                topv, topi = decoder_output.topk(1)
                decoder_input = topi.squeeze().detach()  # detach from history as input

                loss += criterion(decoder_output, target_tensor[di])
                if decoder_input.item() == EOS_token:
                    break

        loss.backward()

        encoder_optimizer.step()
        decoder_optimizer.step()

        return loss.item() / target_length

    def evaluate(encoder, decoder, input_tensor, max_length=MAX_LENGTH):
        with torch.no_grad():
            input_length = input_tensor.size()[0]
            encoder_hidden = encoder.initHidden()

            encoder_outputs = torch.zeros(max_length, encoder.hidden_size)

            for ei in range(input_length):
                encoder_output, encoder_hidden = encoder(input_tensor[ei],
                                                         encoder_hidden)
                encoder_outputs[ei] += encoder_output[0, 0]

            decoder_input = torch.tensor([[SOS_token]])  # SOS

            decoder_hidden = encoder_hidden

            decoded_words = []
            decoder_attentions = torch.zeros(max_length, max_length)

            for di in range(max_length):
                decoder_output, decoder_hidden, decoder_attention = decoder(
                    decoder_input, decoder_hidden, encoder_outputs)
                decoder_attentions[di] = decoder_attention.data
                topv, topi = decoder_output.data.topk(1)
                if topi.item() == EOS_token:
                    decoded_words.append('<EOS>')
                    break
                else:
                    decoded_words.append(topi.item())

                decoder_input = topi.squeeze().detach()

            return decoded_words, decoder_attentions[:di + 1]

    encoder_optimizer = optim.SGD(encoder.parameters(), lr=learning_rate)
    decoder_optimizer = optim.SGD(decoder.parameters(), lr=learning_rate)
    training_pairs = [tensorFromPair(PAIRS[i % len(PAIRS)]) for i in range(n_iters)]
    criterion = nn.NLLLoss()

    losses = []
    for iter in range(1, n_iters + 1):
        input_tensor, target_tensor = training_pairs[iter - 1]
        losses.append(train(input_tensor, target_tensor, encoder, decoder, encoder_optimizer, decoder_optimizer,
                            criterion, teacher_forcing[iter - 1]))
    decoder.eval()
    words, attentions = evaluate(encoder, decoder, tensorFromPair(PAIRS[1])[0])
    return losses, [str(w) for w in words], attentions, dict(decoder.named_parameters()), encoder.gru.weight_hh_l0


def test_original_seq2seq_tutorial_with_max_length_attention():
    weights = (weights_of(lambda m: old_seq2seq(m)[0], seed=0), weights_of(lambda m: old_seq2seq(m)[1], seed=1))
    ours, theirs = run_both(old_seq2seq_training, weights, rtol=1e-4, atol=1e-5)
    assert all(np.isfinite(ours[0])) and ours[0][-1] < ours[0][0] + 1.0
    np.testing.assert_allclose(ours[2].sum(1), 1.0, rtol=1e-5)  # each step's attention is a distribution


# ----------------------------------------------------------------------------------------------
# a packed seq2seq: token ids packed unsorted, embedded on packed.data and rebuilt as a PackedSequence,
# a two-layer bidirectional GRU whose h_n is split by view(layers, 2, B, H), an LSTM decoder given (h0, c0)
# over its own differently sorted packed targets, Luong 'general' attention after the RNN under a length
# mask, the loss over the packed rows directly, label smoothing, clip_grad_norm_, batched greedy decoding
# ----------------------------------------------------------------------------------------------

SRC = [[3, 4, 5, 6], [7, 3], [4, 4, 8, 9, 5], [6, 7, 8]]
TGT = [[5, 6, 7], [8, 9, 4, 3, 5], [3, 4], [9, 9, 6, 5]]
PAD, BOS, EOS, VOCAB = 0, 1, 2, 10


def packed_seq2seq(m, emb=6, hid=7, layers=2, dropout=0.0):
    torch, nn, F = m.torch, m.nn, m.F
    from_packed = nn.utils.rnn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, emb, padding_idx=PAD)
            self.rnn = nn.GRU(emb, hid, num_layers=layers, bidirectional=True, dropout=dropout)
            self.bridge = nn.Linear(2 * hid, hid)

        def forward(self, src_seqs):
            packed = from_packed.pack_sequence(src_seqs, enforce_sorted=False)
            embedded = from_packed.PackedSequence(self.embedding(packed.data), packed.batch_sizes,
                                                  packed.sorted_indices)
            outputs, h_n = self.rnn(embedded)
            outputs, lengths = from_packed.pad_packed_sequence(outputs, batch_first=True,
                                                               total_length=max(len(s) for s in src_seqs))
            h_n = h_n.view(layers, 2, -1, hid)
            last = torch.cat([h_n[-1, 0], h_n[-1, 1]], dim=-1)
            return outputs, lengths, torch.tanh(self.bridge(last))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, emb, padding_idx=PAD)
            self.rnn = nn.LSTM(emb, hid, batch_first=True)
            self.W_a = nn.Linear(hid, 2 * hid, bias=False)  # 'general' score h_t^T W_a h_s
            self.W_c = nn.Linear(4 * hid, hid)
            self.out = nn.Linear(hid, VOCAB)

        def forward(self, tgt_in, tgt_lengths, state, memory, src_lengths):
            packed = from_packed.pack_padded_sequence(self.embedding(tgt_in), tgt_lengths, batch_first=True,
                                                      enforce_sorted=False)
            output, (h, c) = self.rnn(packed, state)
            output, _ = from_packed.pad_packed_sequence(output, batch_first=True, total_length=tgt_in.size(1))
            scores = torch.bmm(self.W_a(output), memory.transpose(1, 2))  # (B, T_tgt, T_src)
            src_mask = torch.arange(memory.size(1))[None, :] < src_lengths[:, None]
            scores = scores.masked_fill(~src_mask.unsqueeze(1), float("-inf"))
            align = F.softmax(scores, dim=-1)
            context = torch.bmm(align, memory)
            attentional = torch.tanh(self.W_c(torch.cat([context, output, output], dim=-1)[..., :4 * hid]))
            return self.out(attentional), (h, c), align

    return nn.ModuleDict({"encoder": Encoder(), "decoder": Decoder()})


def packed_seq2seq_training(m, weights, steps=4, dropout=0.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_packed = nn.utils.rnn
    model = load(m, packed_seq2seq(m, dropout=dropout), weights)
    encoder, decoder = model["encoder"], model["decoder"]
    torch.manual_seed(11)
    src = [torch.tensor(s) for s in SRC]
    tgt_in = from_packed.pad_sequence([torch.tensor([BOS] + t) for t in TGT], batch_first=True, padding_value=PAD)
    tgt_out = from_packed.pad_sequence([torch.tensor(t + [EOS]) for t in TGT], batch_first=True, padding_value=PAD)
    tgt_lengths = torch.tensor([len(t) + 1 for t in TGT])
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses, norms = [], []
    for step in range(steps):
        memory, src_lengths, h0 = encoder(src)
        state = (h0.unsqueeze(0), torch.zeros_like(h0).unsqueeze(0))
        logits, _, align = decoder(tgt_in, tgt_lengths, state, memory, src_lengths)
        # the loss over the real steps only: packed logits against packed targets, in the same order
        packed_logits = from_packed.pack_padded_sequence(logits, tgt_lengths, batch_first=True,
                                                         enforce_sorted=False)
        packed_targets = from_packed.pack_padded_sequence(tgt_out, tgt_lengths, batch_first=True,
                                                          enforce_sorted=False)
        loss = F.cross_entropy(packed_logits.data, packed_targets.data, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0, error_if_nonfinite=True))
        opt.step()
        losses.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}

    # batched greedy decoding, each sequence stopping at its own EOS
    model.eval()
    with torch.no_grad():
        memory, src_lengths, h0 = encoder(src)
        state = (h0.unsqueeze(0), torch.zeros_like(h0).unsqueeze(0))
        B = len(src)
        ys = torch.full((B, 1), BOS, dtype=torch.long)
        finished = torch.zeros(B, dtype=torch.bool)
        for t in range(6):
            logits, state, _ = decoder(ys[:, -1:], torch.ones(B, dtype=torch.long), state, memory, src_lengths)
            next_word = logits[:, -1].argmax(dim=-1)
            next_word = next_word.masked_fill(finished, PAD)
            ys = torch.cat([ys, next_word.unsqueeze(1)], dim=1)
            finished |= next_word == EOS
            if finished.all():
                break
    return losses, norms, grads, ys, align, src_lengths, memory


# ----------------------------------------------------------------------------------------------
# the sequence utilities around a classifier: left padding (``pad_sequence(padding_side='left')``) so the
# last step is real for every sequence, ``unpad_sequence`` back to the list, ``pack_sequence(enforce_sorted=
# False)`` through a two-layer bidirectional LSTM given (h0, c0) in the caller's order, the PackedSequence's
# fields (``sorted_indices``, ``unsorted_indices``, ``batch_sizes``), ``.to(torch.float64)`` of a packed
# batch into a double LSTM, ``unpack_sequence`` of its outputs, and the checks that h_n[-2]/h_n[-1] are the
# last real forward step and the first backward step of each sequence
# ----------------------------------------------------------------------------------------------

UTIL_SEQS = [[2, 5, 7], [3], [4, 4, 6, 1, 2], [6, 1]]


def sequence_utilities(m, steps=3):
    torch, nn, F = m.torch, m.nn, m.F
    rnn_utils = nn.utils.rnn
    torch.manual_seed(0)
    embedding = nn.Embedding(8, 4, padding_idx=0)
    lstm = nn.LSTM(4, 3, num_layers=2, bidirectional=True)
    gru = nn.GRU(4, 5, batch_first=True)
    head = nn.Linear(6 + 5, 2)
    params = list(embedding.parameters()) + list(lstm.parameters()) + list(gru.parameters()) + \
        list(head.parameters())
    opt = m.optim.RMSprop(params, lr=0.01, alpha=0.9, centered=True)
    seqs = [torch.tensor(s) for s in UTIL_SEQS]
    labels = torch.tensor([0, 1, 1, 0])
    h0 = torch.linspace(-1, 1, 2 * 2 * 4 * 3).view(4, 4, 3)
    c0 = torch.linspace(1, -1, 2 * 2 * 4 * 3).view(4, 4, 3)
    losses = []
    for step in range(steps):
        # a left-padded batch for the GRU: its last step is every sequence's last token
        left = rnn_utils.pad_sequence(seqs, batch_first=True, padding_value=0, padding_side="left")
        gru_out, gru_h = gru(embedding(left))
        # a packed batch for the LSTM, in the caller's order
        packed = rnn_utils.pack_sequence([embedding(s) for s in seqs], enforce_sorted=False)
        out, (h_n, c_n) = lstm(packed, (h0, c0))
        features = torch.cat([h_n[-2], h_n[-1], gru_out[:, -1]], dim=1)
        loss = F.cross_entropy(head(features), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    per_sequence = rnn_utils.unpack_sequence(out)
    padded, lengths = rnn_utils.pad_packed_sequence(out)
    back = rnn_utils.unpad_sequence(padded, lengths)
    double_out, _ = lstm.double()(packed.to(torch.float64))
    fields = (packed.sorted_indices, packed.unsorted_indices, packed.batch_sizes, packed.data.shape[0])
    return (losses, per_sequence, back, h_n, gru_out[:, -1], gru_h[0], double_out.data, fields, left,
            [p.grad for p in lstm.parameters()])


def test_sequence_utilities_around_a_classifier():
    ours, theirs = run_both(sequence_utilities, rtol=1e-4, atol=1e-6)
    losses, per_sequence, back, h_n, gru_last, gru_h, double_out, fields, left = ours[:9]
    assert [len(s) for s in per_sequence] == [len(s) for s in UTIL_SEQS]
    for seq, again, length in zip(per_sequence, back, [3, 1, 5, 2]):
        np.testing.assert_array_equal(seq, again)
        np.testing.assert_allclose(seq[length - 1, :3], h_n[-2][[3, 1, 5, 2].index(length)], rtol=1e-6)
        np.testing.assert_allclose(seq[0, 3:], h_n[-1][[3, 1, 5, 2].index(length)], rtol=1e-6)
    np.testing.assert_allclose(gru_last, gru_h, rtol=1e-6)
    assert fields[0].tolist() == [2, 0, 3, 1] and fields[1].tolist() == [1, 3, 0, 2]
    assert fields[2].tolist() == [4, 3, 2, 1, 1] and fields[3] == 11
    assert left[1].tolist() == [0, 0, 0, 0, 3] and double_out.dtype == np.float64


# ----------------------------------------------------------------------------------------------
# batched beam search with GNMT's length penalty over a Bahdanau-attention GRU decoder: ``repeat_interleave``
# of the encoder's states per beam, ``topk`` over flattened (beam × vocab) scores, the beam of origin by
# ``//`` and ``torch.div(rounding_mode='floor')`` and the token by ``%``/``fmod``, ``index_select`` of the
# states and histories, finished hypotheses normalised by ((5 + |y|) / 6)^α and masked to -inf, and the
# histories rebuilt from back-pointers by ``gather``
# ----------------------------------------------------------------------------------------------

BS_SRC = [[3, 4, 5, 6], [7, 8, 9, 3]]
BS_BOS, BS_EOS, BS_VOCAB = 1, 2, 10


def bahdanau_gru(m, emb=5, hid=6):
    torch, nn, F = m.torch, m.nn, m.F

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_embed = nn.Embedding(BS_VOCAB, emb)
            self.tgt_embed = nn.Embedding(BS_VOCAB, emb)
            self.encoder = nn.GRU(emb, hid, batch_first=True, bidirectional=True)
            self.bridge = nn.Linear(2 * hid, hid)
            self.W_q = nn.Linear(hid, hid, bias=False)
            self.W_k = nn.Linear(2 * hid, hid, bias=False)
            self.v = nn.Linear(hid, 1, bias=False)
            self.cell = nn.GRUCell(emb + 2 * hid, hid)
            self.out = nn.Linear(hid + 2 * hid, BS_VOCAB)

        def encode(self, src):
            memory, h_n = self.encoder(self.src_embed(src))
            return memory, torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], -1)))

        def step(self, token, h, memory):
            scores = self.v(torch.tanh(self.W_q(h).unsqueeze(1) + self.W_k(memory))).squeeze(-1)
            alpha = F.softmax(scores, dim=-1)
            context = torch.bmm(alpha.unsqueeze(1), memory).squeeze(1)
            h = self.cell(torch.cat([self.tgt_embed(token), context], -1), h)
            return F.log_softmax(self.out(torch.cat([h, context], -1)), dim=-1), h

    return Seq2Seq()


def beam_search_program(m, weights, beam_size=3, max_len=5, alpha=0.6):
    torch = m.torch
    model = load(m, bahdanau_gru(m), weights)
    model.out.bias.data[BS_EOS] += 0.5  # (a stand-in for training: EOS becomes likely within the budget)
    model.eval()
    src = torch.tensor(BS_SRC)
    B, k = src.size(0), beam_size
    with torch.no_grad():
        memory, h = model.encode(src)
        memory = memory.repeat_interleave(k, dim=0)  # (B*k, S, 2H)
        h = h.repeat_interleave(k, dim=0)
        scores = torch.full((B, k), float("-inf"))
        scores[:, 0] = 0.0  # only the first beam is alive at the start
        scores = scores.view(-1)
        alive = torch.full((B * k, 1), BS_BOS, dtype=torch.long)
        finished = [[] for _ in range(B)]
        back_pointers, step_tokens = [], []
        offsets = (torch.arange(B) * k).unsqueeze(1)
        for t in range(max_len):
            logp, h = model.step(alive[:, -1], h, memory)
            V = logp.size(-1)
            candidates = (scores.unsqueeze(1) + logp).view(B, -1)  # (B, k*V)
            top_scores, top_ids = candidates.topk(k, dim=1)
            origin = top_ids // V
            assert torch.equal(origin, torch.div(top_ids, V, rounding_mode="floor"))
            tokens = top_ids % V
            assert torch.equal(tokens, top_ids.fmod(V))
            select = (origin + offsets).view(-1)
            alive = torch.cat([alive.index_select(0, select), tokens.view(-1, 1)], dim=1)
            h = h.index_select(0, select)
            scores = top_scores.view(-1)
            back_pointers.append(origin)
            step_tokens.append(tokens)
            is_eos = tokens.view(-1).eq(BS_EOS)
            for flat in is_eos.nonzero().view(-1).tolist():
                b = flat // k
                length = alive.size(1) - 1
                penalty = ((5.0 + length) / 6.0) ** alpha
                finished[b].append((scores[flat].item() / penalty, alive[flat, 1:].tolist()))
            scores = scores.masked_fill(is_eos, float("-inf"))
        # what is still alive competes with what finished, under the same normalisation
        penalty = ((5.0 + max_len) / 6.0) ** alpha
        best = []
        for b in range(B):
            pool = finished[b] + [(scores[b * k + j].item() / penalty, alive[b * k + j, 1:].tolist())
                                  for j in range(k) if scores[b * k + j] > float("-inf")]
            best.append(max(pool, key=lambda item: item[0]))
        # the histories again, from the back-pointers: follow each final beam to its start
        beam = torch.arange(k).unsqueeze(0).expand(B, k)
        rebuilt = []
        for t in reversed(range(max_len)):
            rebuilt.append(step_tokens[t].gather(1, beam))
            beam = back_pointers[t].gather(1, beam)
        rebuilt = torch.stack(rebuilt[::-1], dim=2).view(B * k, max_len)
    return alive, rebuilt, scores, best, finished


def test_beam_search_with_length_penalty_and_back_pointers():
    weights = weights_of(bahdanau_gru)
    ours, theirs = run_both(beam_search_program, weights, rtol=1e-5, atol=1e-6)
    alive, rebuilt, scores, best, finished = ours
    np.testing.assert_array_equal(alive[:, 1:], rebuilt)
    assert sorted(len(words) for _, words in finished[1]) == [1, 2, 2, 3, 4, 5]  # finished at every step
    assert all(words[-1] == BS_EOS for f in finished for _, words in f)


def test_packed_seq2seq_with_unsorted_batches_and_packed_loss():
    weights = weights_of(packed_seq2seq)
    ours, theirs = run_both(packed_seq2seq_training, weights, rtol=1e-4, atol=1e-5)
    losses, norms, grads, ys, align = ours[:5]
    assert losses[-1] < losses[0]
    # attention never reaches past a source's length
    for b, length in enumerate(ours[5]):
        assert np.all(align[b, :, length:] == 0)
    # a padded batch's padding rows of the encoder's outputs are zeros (pad_packed_sequence's fill)
    assert np.all(ours[6][1, 2:] == 0)


def test_packed_seq2seq_with_dropout_between_gru_layers():
    weights = weights_of(packed_seq2seq)
    ours, theirs = run_both(packed_seq2seq_training, weights, dropout=0.3, compare=same_dropout_masks(), rtol=1e-4,
                            atol=1e-5)
    assert np.all(np.isfinite(ours[0]))
