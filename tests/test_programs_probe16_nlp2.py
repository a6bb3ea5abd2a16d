# ruff: noqa: B007, B023, E501, E741, E731, F841, N806, UP004, UP008  (the programs are kept as their authors wrote them)
"""Classic NLP programs (see tests/pytorch_programs.py), run on chainrule and on PyTorch from the same
weights and data, comparing losses, gradients, decoded outputs and short training trajectories.

Not already among the program tests: PyTorch's original seq2seq tutorial (one sentence at a time,
``encoder_outputs[ei] = encoder_output[0, 0]`` into a max_length buffer, attention by a Linear over
max_length slots, ``topi.squeeze().detach()``, ``decoder_attentions[di] = decoder_attention.data``);
fastai's AWD-LSTM (WeightDropout setting ``weight_hh_l0`` on nn.LSTM by setattr each forward, embedding and
locked dropout, a tied decoder, AR/TAR, hidden state carried and cut to a smaller batch) and Salesforce's
original (WeightDrop deleting from ``_parameters``, ``embedded_dropout`` by ``new().resize_``, LockedDropout,
variable-length BPTT, NT-ASGD with its ``state[prm]['ax']`` swapped in by ``prm.data =``, and the original's
TypeError after evaluating, as PyTorch's); a packed seq2seq (token ids packed unsorted and re-wrapped as
``PackedSequence(emb(packed.data), batch_sizes, sorted_indices)``, h_n split by direction, a decoder over its
own packed targets given (h0, c0), Luong 'general' attention under a length mask, the loss on packed rows);
AllenNLP's CRF (the forward algorithm with a bool mask, k-best Viterbi by ``topk`` and ``%``, marginals and
expected transition counts as gradients of log Z, checked against enumerating every path); the Annotated
Transformer on its copy task (deep-copied clones, its unbiased-std LayerNorm, KLDivLoss label smoothing by
``scatter_``/``index_fill_``, the Noam rate by LambdaLR, tied embeddings, greedy decoding); the pointer-
generator with coverage (``scatter_add`` into an extended vocabulary, a ``torch.min`` coverage loss with ties,
Adagrad); a character-CNN/highway word encoder under ELMo-style LSTMs and AllenNLP's ScalarMix; the child-sum
Tree-LSTM on sentence similarity (recursion, KLDivLoss, ``torch.randperm``, Pearson); Transformer-XL's
relative attention (``_rel_shift`` by ``view``, einsum over a tuple of operands, memory from empty 1-D tensors);
fairseq's ConvS2S (weight-normed ``conv_tbc``, GLU, GradMultiply, multi-step attention); ESIM (its own length
sorting, masked softmax both ways, ``orthogonal_`` init from the seed); the text classification tutorial with
fastText's hashed bigrams (EmbeddingBag offsets by cumsum, ``random_split``, TF-IDF ``per_sample_weights``);
the sequence utilities (``pad_sequence(padding_side='left')``, ``unpad_sequence``, ``unpack_sequence``, packed
fields, ``PackedSequence.to``); a hierarchical attention network (empty sentences kept out of the packed word
GRU, ``index_copy`` back, masked attention at both levels); batched beam search with GNMT's length penalty and back-pointers; and MAML over
an LSTM intent classifier as learn2learn writes it (``clone._parameters = clone._parameters.copy()``,
``module._parameters[key] = p + p.update``). Dropout-on variants are compared where PyTorch draws its Bernoulli
masks as chainrule does (AMD processors), and run for finite values elsewhere."""

import copy
import math
import pickle
import warnings

import numpy as np
import pytest

from .pytorch_programs import OURS, load, pytorch, run_both, same_dropout_masks, weights_of

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
# fastai's AWD-LSTM: weight-dropped hidden-to-hidden matrices set on nn.LSTM by setattr each forward,
# embedding dropout by whole rows, locked (variational) dropout, tied decoder, AR/TAR, carried state
# ----------------------------------------------------------------------------------------------


def awd_lstm(m, vocab_sz=13, emb_sz=6, n_hid=10, n_layers=2, pad_token=1, hidden_p=0.2, input_p=0.3, embed_p=0.1,
             weight_p=0.5, output_p=0.1):
    torch, nn, F = m.torch, m.nn, m.F

    def dropout_mask(x, sz, p):
        "Return a dropout mask of the same type as `x`, size `sz`, with probability `p` to cancel an element."
        return x.new_empty(*sz).bernoulli_(1 - p).div_(1 - p)

    class RNNDropout(nn.Module):
        "Dropout with probability `p` that is consistent on the seq_len dimension."
        def __init__(self, p=0.5):
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training or self.p == 0.:
                return x
            return x * dropout_mask(x.data, (x.size(0), 1, *x.shape[2:]), self.p)

    class WeightDropout(nn.Module):
        "A module that wraps another layer in which some weights will be replaced by 0 during training."
        def __init__(self, module, weight_p, layer_names='weight_hh_l0'):
            super().__init__()
            self.module, self.weight_p, self.layer_names = module, weight_p, [layer_names]
            for layer in self.layer_names:
                # Makes a copy of the weights of the selected layers.
                w = getattr(self.module, layer)
                delattr(self.module, layer)
                self.register_parameter(f'{layer}_raw', nn.Parameter(w.data))
                setattr(self.module, layer, w.clone())
                if isinstance(self.module, (nn.RNNBase, nn.modules.rnn.RNNBase)):
                    self.module.flatten_parameters = self._do_nothing

        def _setweights(self):
            "Apply dropout to the raw weights."
            for layer in self.layer_names:
                raw_w = getattr(self, f'{layer}_raw')
                if self.training:
                    w = F.dropout(raw_w, p=self.weight_p)
                else:
                    w = raw_w.clone()
                setattr(self.module, layer, w)

        def forward(self, *args):
            self._setweights()
            with warnings.catch_warnings():
                # To avoid the warning that comes because the weights aren't flattened.
                warnings.simplefilter("ignore", category=UserWarning)
                return self.module(*args)

        def reset(self):
            for layer in self.layer_names:
                raw_w = getattr(self, f'{layer}_raw')
                setattr(self.module, layer, raw_w.clone())
            if hasattr(self.module, 'reset'):
                self.module.reset()

        def _do_nothing(self):
            pass

    class EmbeddingDropout(nn.Module):
        "Apply dropout with probability `embed_p` to an embedding layer `emb`."
        def __init__(self, emb, embed_p):
            super().__init__()
            self.emb, self.embed_p = emb, embed_p

        def forward(self, words, scale=None):
            if self.training and self.embed_p != 0:
                size = (self.emb.weight.size(0), 1)
                mask = dropout_mask(self.emb.weight.data, size, self.embed_p)
                masked_embed = self.emb.weight * mask
            else:
                masked_embed = self.emb.weight
            if scale:
                masked_embed.mul_(scale)
            padding_idx = self.emb.padding_idx if self.emb.padding_idx is not None else -1
            return F.embedding(words, masked_embed, padding_idx, self.emb.max_norm,
                               self.emb.norm_type, self.emb.scale_grad_by_freq, self.emb.sparse)

    class AWD_LSTM(nn.Module):
        "AWD-LSTM inspired by https://arxiv.org/abs/1708.02182"
        initrange = 0.1

        def __init__(self, vocab_sz, emb_sz, n_hid, n_layers, pad_token=1, hidden_p=0.2, input_p=0.6,
                     embed_p=0.1, weight_p=0.5, bidir=False):
            super().__init__()
            self.emb_sz, self.n_hid, self.n_layers, self.pad_token = emb_sz, n_hid, n_layers, pad_token
            self.bs = 1
            self.n_dir = 2 if bidir else 1
            self.encoder = nn.Embedding(vocab_sz, emb_sz, padding_idx=pad_token)
            self.encoder_dp = EmbeddingDropout(self.encoder, embed_p)
            self.rnns = nn.ModuleList([self._one_rnn(emb_sz if l == 0 else n_hid,
                                                     (n_hid if l != n_layers - 1 else emb_sz) // self.n_dir,
                                                     bidir, weight_p, l) for l in range(n_layers)])
            self.encoder.weight.data.uniform_(-self.initrange, self.initrange)
            self.input_dp = RNNDropout(input_p)
            self.hidden_dps = nn.ModuleList([RNNDropout(hidden_p) for l in range(n_layers)])
            self.reset()

        def forward(self, inp, from_embeds=False):
            bs, sl = inp.shape[:2] if from_embeds else inp.shape
            if bs != self.bs:
                self._change_hidden(bs)

            output = self.input_dp(inp if from_embeds else self.encoder_dp(inp))
            new_hidden, raw_outputs, outputs = [], [], []
            for l, (rnn, hid_dp) in enumerate(zip(self.rnns, self.hidden_dps)):
                output, new_h = rnn(output, self.hidden[l])
                new_hidden.append(new_h)
                raw_outputs.append(output)
                if l != self.n_layers - 1:
                    output = hid_dp(output)
                outputs.append(output)
            self.hidden = [(h.detach(), c.detach()) for h, c in new_hidden]
            return raw_outputs, outputs

        def _change_hidden(self, bs):
            self.hidden = [self._change_one_hidden(l, bs) for l in range(self.n_layers)]
            self.bs = bs

        def _one_rnn(self, n_in, n_out, bidir, weight_p, l):
            "Return one of the inner rnn"
            rnn = nn.LSTM(n_in, n_out, 1, batch_first=True, bidirectional=bidir)
            return WeightDropout(rnn, weight_p)

        def _one_hidden(self, l):
            "Return one hidden state"
            nh = (self.n_hid if l != self.n_layers - 1 else self.emb_sz) // self.n_dir
            p = next(self.parameters())
            return (p.new_zeros(self.n_dir, self.bs, nh), p.new_zeros(self.n_dir, self.bs, nh))

        def _change_one_hidden(self, l, bs):
            "Change one hidden state to have the correct batch size `bs`"
            if self.bs < bs:
                nh = (self.n_hid if l != self.n_layers - 1 else self.emb_sz) // self.n_dir
                return tuple(torch.cat([h, h.new_zeros(self.n_dir, bs - self.bs, nh)], dim=1) for h in self.hidden[l])
            if self.bs > bs:
                return (self.hidden[l][0][:, :bs].contiguous(), self.hidden[l][1][:, :bs].contiguous())
            return self.hidden[l]

        def reset(self):
            "Reset the hidden states"
            [r.reset() for r in self.rnns if hasattr(r, 'reset')]
            self.hidden = [self._one_hidden(l) for l in range(self.n_layers)]

    class LinearDecoder(nn.Module):
        "To go on top of a RNNCore module and create a Language Model."
        initrange = 0.1

        def __init__(self, n_out, n_hid, output_p=0.1, tie_encoder=None, bias=True):
            super().__init__()
            self.decoder = nn.Linear(n_hid, n_out, bias=bias)
            self.decoder.weight.data.uniform_(-self.initrange, self.initrange)
            self.output_dp = RNNDropout(output_p)
            if bias:
                self.decoder.bias.data.zero_()
            if tie_encoder:
                self.decoder.weight = tie_encoder.weight

        def forward(self, input):
            raw_outputs, outputs = input
            dp_inp = self.output_dp(outputs[-1])
            return self.decoder(dp_inp), raw_outputs, outputs

    encoder = AWD_LSTM(vocab_sz, emb_sz, n_hid, n_layers, pad_token=pad_token, hidden_p=hidden_p, input_p=input_p,
                       embed_p=embed_p, weight_p=weight_p)
    return nn.Sequential(encoder, LinearDecoder(vocab_sz, emb_sz, output_p, tie_encoder=encoder.encoder))


def awd_lstm_training(m, weights, drop_mult=0.0, steps=4, alpha=2.0, beta=1.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    # (without dropout the weight's p is tiny, not 0: F.dropout with p=0 returns the raw Parameter itself,
    # which setattr then registers on the LSTM, and reset's plain tensor is refused there, in PyTorch too)
    model = awd_lstm(m, hidden_p=0.2 * drop_mult, input_p=0.3 * drop_mult, embed_p=0.1 * drop_mult,
                     weight_p=0.5 * drop_mult or 1e-9, output_p=0.1 * drop_mult)
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    model[0].reset()
    torch.manual_seed(5)
    rng = np.random.default_rng(3)
    stream = torch.tensor(rng.integers(2, 13, (3, steps * 5 + 1)))
    opt = optim.Adam(model.parameters(), lr=3e-3, betas=(0.7, 0.99), weight_decay=0.01)
    losses, grad_norms = [], []
    model.train()
    for i in range(steps):
        x, y = stream[:, i * 5:(i + 1) * 5], stream[:, i * 5 + 1:(i + 1) * 5 + 1]
        if i == steps - 1:
            x, y = x[:2], y[:2]  # a smaller last batch: the carried hidden state is cut to two rows
        logits, raw_outs, outs = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        # AR: activation regularisation of the last dropped output; TAR: its raw output's slowness
        loss = loss + alpha * outs[-1].float().pow(2).mean()
        h = raw_outs[-1]
        loss = loss + beta * (h[:, 1:] - h[:, :-1]).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        grad_norms.append(nn.utils.clip_grad_norm_(model.parameters(), 0.5))
        opt.step()
        losses.append(loss.item())
    model.eval()
    model[0].reset()
    with torch.no_grad():
        logits, _, _ = model(stream[:1, :7])
    tied = model[1].decoder.weight is model[0].encoder.weight
    names = sorted(n for n, _ in model.named_parameters())
    return (losses, grad_norms, logits, model[0].rnns[0].weight_hh_l0_raw, model[0].encoder.weight,
            model[0].rnns[1].module.weight_hh_l0, tied, ",".join(names), model[0].hidden[1][0])


def test_awd_lstm_weight_drop_tied_decoder_and_carried_state():
    weights = weights_of(awd_lstm)
    ours, theirs = run_both(awd_lstm_training, weights, rtol=1e-4, atol=1e-5)
    assert ours[6] is True
    assert "weight_hh_l0_raw" in ours[7] and "module.weight_hh_l0," not in ours[7] + ","


def test_awd_lstm_with_its_dropouts():
    weights = weights_of(awd_lstm)
    ours, theirs = run_both(awd_lstm_training, weights, drop_mult=1.0, compare=same_dropout_masks(), rtol=1e-4,
                            atol=1e-5)
    assert np.all(np.isfinite(ours[0]))


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
# AllenNLP's ConditionalRandomField on a packed BiLSTM: the forward algorithm in a loop over time with a
# bool mask (logsumexp by max, ``alpha * (~mask)``), the gold score by fancy indexing and ``gather``, k-best
# Viterbi by ``topk`` over flattened scores with ``% num_tags``, posterior marginals as the gradient of
# log Z (``torch.autograd.grad``), checked against enumerating every path
# ----------------------------------------------------------------------------------------------

N_TAGS, TAG_WORDS = 4, 9
CRF_SENTS = [[1, 2, 3, 4, 5], [6, 7], [8, 1, 2], [3, 3, 4, 5]]
CRF_GOLD = [[0, 1, 1, 2, 3], [0, 3], [2, 2, 1], [0, 1, 2, 2]]


def allennlp_crf(m, emb=5, hid=4):
    torch, nn = m.torch, m.nn

    def logsumexp(tensor, dim=-1, keepdim=False):
        max_score, _ = tensor.max(dim, keepdim=keepdim)
        if keepdim:
            stable_vec = tensor - max_score
        else:
            stable_vec = tensor - max_score.unsqueeze(dim)
        return max_score + (stable_vec.exp().sum(dim, keepdim=keepdim)).log()

    def viterbi_decode(tag_sequence, transition_matrix, top_k=2):
        sequence_length, num_tags = list(tag_sequence.size())
        path_scores = []
        path_indices = []
        path_scores.append(tag_sequence[0, :].unsqueeze(0))
        for timestep in range(1, sequence_length):
            # Add pairwise potentials to current scores.
            summed_potentials = path_scores[timestep - 1].unsqueeze(2) + transition_matrix
            summed_potentials = summed_potentials.view(-1, num_tags)
            # Best pairwise potential path score from the previous timestep.
            max_k = min(summed_potentials.size()[0], top_k)
            scores, paths = torch.topk(summed_potentials, k=max_k, dim=0)
            path_scores.append(tag_sequence[timestep, :] + scores)
            path_indices.append(paths.squeeze())
        # Construct the most likely sequence backwards.
        path_scores_v = path_scores[-1].view(-1)
        max_k = min(path_scores_v.size()[0], top_k)
        viterbi_scores, best_paths = torch.topk(path_scores_v, k=max_k, dim=0)
        viterbi_paths = []
        for i in range(max_k):
            viterbi_path = [best_paths[i]]
            for backward_timestep in reversed(path_indices):
                viterbi_path.append(int(backward_timestep.view(-1)[viterbi_path[-1]]))
            viterbi_path.reverse()
            viterbi_path = [int(j % num_tags) for j in viterbi_path]
            viterbi_paths.append(viterbi_path)
        return viterbi_paths, viterbi_scores

    class ConditionalRandomField(nn.Module):
        def __init__(self, num_tags, include_start_end_transitions=True):
            super().__init__()
            self.num_tags = num_tags
            self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
            self.include_start_end_transitions = include_start_end_transitions
            if include_start_end_transitions:
                self.start_transitions = nn.Parameter(torch.Tensor(num_tags))
                self.end_transitions = nn.Parameter(torch.Tensor(num_tags))
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.xavier_normal_(self.transitions)
            if self.include_start_end_transitions:
                nn.init.normal_(self.start_transitions)
                nn.init.normal_(self.end_transitions)

        def _input_likelihood(self, logits, mask):
            batch_size, sequence_length, num_tags = logits.size()
            mask = mask.transpose(0, 1).contiguous()
            logits = logits.transpose(0, 1).contiguous()
            if self.include_start_end_transitions:
                alpha = self.start_transitions.view(1, num_tags) + logits[0]
            else:
                alpha = logits[0]
            for i in range(1, sequence_length):
                emit_scores = logits[i].view(batch_size, 1, num_tags)
                transition_scores = self.transitions.view(1, num_tags, num_tags)
                broadcast_alpha = alpha.view(batch_size, num_tags, 1)
                inner = broadcast_alpha + emit_scores + transition_scores
                alpha = logsumexp(inner, 1) * mask[i].view(batch_size, 1) + alpha * (~mask[i]).view(batch_size, 1)
            if self.include_start_end_transitions:
                stops = alpha + self.end_transitions.view(1, num_tags)
            else:
                stops = alpha
            return logsumexp(stops)

        def _joint_likelihood(self, logits, tags, mask):
            batch_size, sequence_length, _ = logits.data.shape
            logits = logits.transpose(0, 1).contiguous()
            mask = mask.transpose(0, 1).contiguous()
            tags = tags.transpose(0, 1).contiguous()
            if self.include_start_end_transitions:
                score = self.start_transitions.index_select(0, tags[0])
            else:
                score = 0.0
            for i in range(sequence_length - 1):
                current_tag, next_tag = tags[i], tags[i + 1]
                transition_score = self.transitions[current_tag.view(-1), next_tag.view(-1)]
                emit_score = logits[i].gather(1, current_tag.view(batch_size, 1)).squeeze(1)
                score = score + transition_score * mask[i + 1] + emit_score * mask[i]
            last_tag_index = mask.sum(0).long() - 1
            last_tags = tags.gather(0, last_tag_index.view(1, batch_size)).squeeze(0)
            if self.include_start_end_transitions:
                last_transition_score = self.end_transitions.index_select(0, last_tags)
            else:
                last_transition_score = 0.0
            last_inputs = logits[-1]
            last_input_score = last_inputs.gather(1, last_tags.view(-1, 1))
            last_input_score = last_input_score.squeeze()
            score = score + last_transition_score + last_input_score * mask[-1]
            return score

        def forward(self, inputs, tags, mask=None):
            if mask is None:
                mask = torch.ones(*tags.size(), dtype=torch.bool, device=inputs.device)
            else:
                mask = mask.to(torch.bool)
            log_denominator = self._input_likelihood(inputs, mask)
            log_numerator = self._joint_likelihood(inputs, tags, mask)
            return torch.sum(log_numerator - log_denominator)

        def viterbi_tags(self, logits, mask, top_k=2):
            _, max_seq_length, num_tags = logits.size()
            logits, mask = logits.data, mask.data
            best_paths = []
            for prediction, prediction_mask in zip(logits, mask):
                mask_indices = prediction_mask.nonzero(as_tuple=False).squeeze()
                masked_prediction = torch.index_select(prediction, 0, mask_indices)
                tag_sequence = masked_prediction.clone()
                tag_sequence[0] += self.start_transitions
                tag_sequence[-1] += self.end_transitions
                viterbi_paths, viterbi_scores = viterbi_decode(tag_sequence, self.transitions, top_k=top_k)
                best_paths.append(list(zip(viterbi_paths, viterbi_scores.tolist())))
            return best_paths

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(TAG_WORDS, emb, padding_idx=0)
            self.lstm = nn.LSTM(emb, hid, batch_first=True, bidirectional=True)
            self.proj = nn.Linear(2 * hid, N_TAGS)
            self.crf = ConditionalRandomField(N_TAGS)

        def emissions(self, tokens, mask):
            lengths = mask.sum(-1)
            packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths, batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.size(1))
            return self.proj(out)

    return Tagger()


def allennlp_crf_program(m, weights, steps=3):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, allennlp_crf(m), weights)
    tokens = nn.utils.rnn.pad_sequence([torch.tensor(s) for s in CRF_SENTS], batch_first=True)
    tags = nn.utils.rnn.pad_sequence([torch.tensor(t) for t in CRF_GOLD], batch_first=True)
    mask = tokens != 0
    opt = optim.Adam(model.parameters(), lr=0.05)
    nlls = []
    for step in range(steps):
        logits = model.emissions(tokens, mask)
        loss = -model.crf(logits, tags, mask) / tokens.size(0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        nlls.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    # posterior marginals: d log Z / d emissions
    logits = model.emissions(tokens, mask).detach().requires_grad_()
    log_Z = model.crf._input_likelihood(logits, mask)
    # and the expected transition counts: d log Z / d transitions
    marginals, trans_counts = torch.autograd.grad(log_Z.sum(), [logits, model.crf.transitions])
    best = model.crf.viterbi_tags(logits, mask, top_k=2)
    params = {k: v.detach() for k, v in model.crf.named_parameters()}
    return nlls, grads, logits, log_Z, marginals, trans_counts, best, params


def enumerate_crf(emissions, transitions, start, end):
    """log Z, the marginals and the expected transition counts of one sentence, by every path."""
    L, K = emissions.shape
    paths = np.array(np.meshgrid(*[np.arange(K)] * L, indexing="ij")).reshape(L, -1).T
    scores = (start[paths[:, 0]] + end[paths[:, -1]] + emissions[np.arange(L), paths].sum(1)
              + transitions[paths[:, :-1], paths[:, 1:]].sum(1))
    log_Z = np.logaddexp.reduce(scores)
    p = np.exp(scores - log_Z)
    marginals = np.zeros((L, K))
    counts = np.zeros((K, K))
    for path, weight in zip(paths, p):
        marginals[np.arange(L), path] += weight
        np.add.at(counts, (path[:-1], path[1:]), weight)
    best = paths[np.argsort(-scores)[:2]]
    return log_Z, marginals, counts, best, np.sort(scores)[::-1][:2]


def test_allennlp_crf_forward_algorithm_viterbi_and_marginals():
    weights = weights_of(allennlp_crf)
    ours, theirs = run_both(allennlp_crf_program, weights, rtol=1e-4, atol=1e-5)
    nlls, grads, logits, log_Z, marginals, trans_counts, best, params = ours
    assert nlls[-1] < nlls[0]
    p = {k: v.astype(np.float64) for k, v in params.items()}
    counts = np.zeros((N_TAGS, N_TAGS))
    for b, sent in enumerate(CRF_SENTS):
        L = len(sent)
        want_Z, want_marg, want_counts, want_best, want_scores = enumerate_crf(
            logits[b, :L].astype(np.float64), p["transitions"], p["start_transitions"], p["end_transitions"])
        np.testing.assert_allclose(log_Z[b], want_Z, rtol=1e-5)
        np.testing.assert_allclose(marginals[b, :L], want_marg, atol=1e-5)
        assert np.all(marginals[b, L:] == 0)  # the padding steps do not touch log Z
        counts += want_counts
        assert [path for path, _ in best[b]] == want_best.tolist()
        np.testing.assert_allclose([score for _, score in best[b]], want_scores, rtol=1e-5)
    np.testing.assert_allclose(trans_counts, counts, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Harvard NLP's Annotated Transformer on its copy task: clones by copy.deepcopy, its own LayerNorm (the
# unbiased std), masks by ``torch.triu(...).type(torch.uint8) == 0`` and ``&``, masked_fill(mask == 0, -1e9),
# label smoothing by KLDivLoss(reduction="sum") over a ``scatter_``/``index_fill_`` target, the Noam rate
# through LambdaLR, shared embeddings tied to the generator, and greedy decoding by ``torch.max``
# ----------------------------------------------------------------------------------------------


def annotated_transformer(m, V=11, N=2, d_model=16, d_ff=32, h=4, dropout=0.0, tie=True):
    torch, nn, F = m.torch, m.nn, m.F

    class EncoderDecoder(nn.Module):
        def __init__(self, encoder, decoder, src_embed, tgt_embed, generator):
            super(EncoderDecoder, self).__init__()
            self.encoder = encoder
            self.decoder = decoder
            self.src_embed = src_embed
            self.tgt_embed = tgt_embed
            self.generator = generator

        def forward(self, src, tgt, src_mask, tgt_mask):
            return self.decode(self.encode(src, src_mask), src_mask, tgt, tgt_mask)

        def encode(self, src, src_mask):
            return self.encoder(self.src_embed(src), src_mask)

        def decode(self, memory, src_mask, tgt, tgt_mask):
            return self.decoder(self.tgt_embed(tgt), memory, src_mask, tgt_mask)

    class Generator(nn.Module):
        def __init__(self, d_model, vocab):
            super(Generator, self).__init__()
            self.proj = nn.Linear(d_model, vocab)

        def forward(self, x):
            return F.log_softmax(self.proj(x), dim=-1)

    def clones(module, N):
        return nn.ModuleList([copy.deepcopy(module) for _ in range(N)])

    class LayerNorm(nn.Module):
        def __init__(self, features, eps=1e-6):
            super(LayerNorm, self).__init__()
            self.a_2 = nn.Parameter(torch.ones(features))
            self.b_2 = nn.Parameter(torch.zeros(features))
            self.eps = eps

        def forward(self, x):
            mean = x.mean(-1, keepdim=True)
            std = x.std(-1, keepdim=True)
            return self.a_2 * (x - mean) / (std + self.eps) + self.b_2

    class Encoder(nn.Module):
        def __init__(self, layer, N):
            super(Encoder, self).__init__()
            self.layers = clones(layer, N)
            self.norm = LayerNorm(layer.size)

        def forward(self, x, mask):
            for layer in self.layers:
                x = layer(x, mask)
            return self.norm(x)

    class SublayerConnection(nn.Module):
        def __init__(self, size, dropout):
            super(SublayerConnection, self).__init__()
            self.norm = LayerNorm(size)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x, sublayer):
            return x + self.dropout(sublayer(self.norm(x)))

    class EncoderLayer(nn.Module):
        def __init__(self, size, self_attn, feed_forward, dropout):
            super(EncoderLayer, self).__init__()
            self.self_attn = self_attn
            self.feed_forward = feed_forward
            self.sublayer = clones(SublayerConnection(size, dropout), 2)
            self.size = size

        def forward(self, x, mask):
            x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, mask))
            return self.sublayer[1](x, self.feed_forward)

    class Decoder(nn.Module):
        def __init__(self, layer, N):
            super(Decoder, self).__init__()
            self.layers = clones(layer, N)
            self.norm = LayerNorm(layer.size)

        def forward(self, x, memory, src_mask, tgt_mask):
            for layer in self.layers:
                x = layer(x, memory, src_mask, tgt_mask)
            return self.norm(x)

    class DecoderLayer(nn.Module):
        def __init__(self, size, self_attn, src_attn, feed_forward, dropout):
            super(DecoderLayer, self).__init__()
            self.size = size
            self.self_attn = self_attn
            self.src_attn = src_attn
            self.feed_forward = feed_forward
            self.sublayer = clones(SublayerConnection(size, dropout), 3)

        def forward(self, x, memory, src_mask, tgt_mask):
            m = memory
            x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, tgt_mask))
            x = self.sublayer[1](x, lambda x: self.src_attn(x, m, m, src_mask))
            return self.sublayer[2](x, self.feed_forward)

    def attention(query, key, value, mask=None, dropout=None):
        d_k = query.size(-1)
        scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e9)
        p_attn = scores.softmax(dim=-1)
        if dropout is not None:
            p_attn = dropout(p_attn)
        return torch.matmul(p_attn, value), p_attn

    class MultiHeadedAttention(nn.Module):
        def __init__(self, h, d_model, dropout=0.1):
            super(MultiHeadedAttention, self).__init__()
            assert d_model % h == 0
            self.d_k = d_model // h
            self.h = h
            self.linears = clones(nn.Linear(d_model, d_model), 4)
            self.attn = None
            self.dropout = nn.Dropout(p=dropout)

        def forward(self, query, key, value, mask=None):
            if mask is not None:
                # Same mask applied to all h heads.
                mask = mask.unsqueeze(1)
            nbatches = query.size(0)
            query, key, value = [
                lin(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)
                for lin, x in zip(self.linears, (query, key, value))
            ]
            x, self.attn = attention(query, key, value, mask=mask, dropout=self.dropout)
            x = (x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k))
            del query
            del key
            del value
            return self.linears[-1](x)

    class PositionwiseFeedForward(nn.Module):
        def __init__(self, d_model, d_ff, dropout=0.1):
            super(PositionwiseFeedForward, self).__init__()
            self.w_1 = nn.Linear(d_model, d_ff)
            self.w_2 = nn.Linear(d_ff, d_model)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            return self.w_2(self.dropout(self.w_1(x).relu()))

    class Embeddings(nn.Module):
        def __init__(self, d_model, vocab):
            super(Embeddings, self).__init__()
            self.lut = nn.Embedding(vocab, d_model)
            self.d_model = d_model

        def forward(self, x):
            return self.lut(x) * math.sqrt(self.d_model)

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout, max_len=5000):
            super(PositionalEncoding, self).__init__()
            self.dropout = nn.Dropout(p=dropout)
            pe = torch.zeros(max_len, d_model)
            position = torch.arange(0, max_len).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, d_model, 2) * -(math.log(10000.0) / d_model))
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0)
            self.register_buffer("pe", pe)

        def forward(self, x):
            x = x + self.pe[:, : x.size(1)].requires_grad_(False)
            return self.dropout(x)

    c = copy.deepcopy
    attn = MultiHeadedAttention(h, d_model, dropout)
    ff = PositionwiseFeedForward(d_model, d_ff, dropout)
    position = PositionalEncoding(d_model, dropout, max_len=64)
    model = EncoderDecoder(
        Encoder(EncoderLayer(d_model, c(attn), c(ff), dropout), N),
        Decoder(DecoderLayer(d_model, c(attn), c(attn), c(ff), dropout), N),
        nn.Sequential(Embeddings(d_model, V), c(position)),
        nn.Sequential(Embeddings(d_model, V), c(position)),
        Generator(d_model, V),
    )
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    if tie:  # one vocabulary: the two embeddings and the pre-softmax projection share a matrix
        model.src_embed[0].lut.weight = model.tgt_embed[0].lut.weight
        model.generator.proj.weight = model.tgt_embed[0].lut.weight
    return model


def annotated_transformer_program(m, epochs=2, batches=3, V=11, dropout=0.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def subsequent_mask(size):
        "Mask out subsequent positions."
        attn_shape = (1, size, size)
        subsequent_mask = torch.triu(torch.ones(attn_shape), diagonal=1).type(torch.uint8)
        return subsequent_mask == 0

    class Batch:
        """Object for holding a batch of data with mask during training."""

        def __init__(self, src, tgt=None, pad=2):  # 2 = <blank>
            self.src = src
            self.src_mask = (src != pad).unsqueeze(-2)
            if tgt is not None:
                self.tgt = tgt[:, :-1]
                self.tgt_y = tgt[:, 1:]
                self.tgt_mask = self.make_std_mask(self.tgt, pad)
                self.ntokens = (self.tgt_y != pad).data.sum()

        @staticmethod
        def make_std_mask(tgt, pad):
            "Create a mask to hide padding and future words."
            tgt_mask = (tgt != pad).unsqueeze(-2)
            tgt_mask = tgt_mask & subsequent_mask(tgt.size(-1)).type_as(tgt_mask.data)
            return tgt_mask

    class LabelSmoothing(nn.Module):
        "Implement label smoothing."

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

    class SimpleLossCompute:
        "A simple loss compute and train function."

        def __init__(self, generator, criterion):
            self.generator = generator
            self.criterion = criterion

        def __call__(self, x, y, norm):
            x = self.generator(x)
            sloss = (self.criterion(x.contiguous().view(-1, x.size(-1)), y.contiguous().view(-1)) / norm)
            return sloss.data * norm, sloss

    def rate(step, model_size, factor, warmup):
        if step == 0:
            step = 1
        return factor * (model_size ** (-0.5) * min(step ** (-0.5), step * warmup ** (-1.5)))

    def data_gen(V, batch_size, nbatches):
        "Generate random data for a src-tgt copy task."
        for i in range(nbatches):
            data = torch.randint(1, V, size=(batch_size, 7))
            data[:, 0] = 1
            data[-1, 5:] = 2  # the last copy is shorter: padded with the blank
            src = data.requires_grad_(False).clone().detach()
            tgt = data.requires_grad_(False).clone().detach()
            yield Batch(src, tgt, 2)

    def greedy_decode(model, src, src_mask, max_len, start_symbol):
        memory = model.encode(src, src_mask)
        ys = torch.zeros(1, 1).fill_(start_symbol).type_as(src.data)
        for i in range(max_len - 1):
            out = model.decode(memory, src_mask, ys, subsequent_mask(ys.size(1)).type_as(src.data))
            prob = model.generator(out[:, -1])
            _, next_word = torch.max(prob, dim=1)
            next_word = next_word.data[0]
            ys = torch.cat([ys, torch.zeros(1, 1).type_as(src.data).fill_(next_word)], dim=1)
        return ys

    torch.manual_seed(0)
    criterion = LabelSmoothing(size=V, padding_idx=2, smoothing=0.1)
    model = annotated_transformer(m, V, dropout=dropout)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = optim.Adam(model.parameters(), lr=0.5, betas=(0.9, 0.98), eps=1e-9)
    lr_scheduler = optim.lr_scheduler.LambdaLR(
        optimizer=optimizer, lr_lambda=lambda step: rate(step, model_size=model.src_embed[0].d_model, factor=1.0,
                                                         warmup=4))
    losses, lrs = [], []
    for epoch in range(epochs):
        model.train()
        for i, batch in enumerate(data_gen(V, 5, batches)):
            out = model.forward(batch.src, batch.tgt, batch.src_mask, batch.tgt_mask)
            loss, loss_node = SimpleLossCompute(model.generator, criterion)(out, batch.tgt_y, batch.ntokens)
            loss_node.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr_scheduler.step()
            losses.append(loss / batch.ntokens)
            lrs.append(optimizer.param_groups[0]["lr"])
    model.eval()
    src = torch.LongTensor([[1, 3, 4, 5, 6, 7, 8]])
    src_mask = torch.ones(1, 1, 7)
    decoded = greedy_decode(model, src, src_mask, max_len=7, start_symbol=1)
    attn = model.decoder.layers[-1].src_attn.attn
    tied = model.generator.proj.weight is model.src_embed[0].lut.weight
    n_params = sum(p.numel() for p in model.parameters())
    # (a key projection's bias adds the same amount to every score of a query: its gradient is zero but for
    # rounding, which Adam scales up to full steps; it never reaches an output, so it is left out)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("linears.1.bias")}
    return initial, losses, lrs, decoded, attn, criterion.true_dist, state, tied, n_params


def test_annotated_transformer_copy_task():
    ours, theirs = run_both(annotated_transformer_program, rtol=2e-4, atol=2e-5)
    initial, losses, lrs, decoded, attn, true_dist, state, tied, n_params = ours
    assert tied is True
    assert "generator.proj.weight" in state and n_params == sum(v.size for k, v in initial.items() if not k.endswith(".pe")) - 2 * 11 * 16
    # each real target's smoothed distribution: 0.9 on it, 0.1 spread over the V - 2 others but the blank
    rows = true_dist.sum(1)
    np.testing.assert_allclose(rows[rows > 0], 1.0, rtol=1e-5)
    assert np.all(true_dist[:, 2] == 0) and (rows == 0).sum() >= 2  # at least the last copy's two blanks
    assert decoded.dtype == np.int64 and decoded[0, 0] == 1


def test_annotated_transformer_copy_task_with_dropout():
    ours, theirs = run_both(annotated_transformer_program, dropout=0.1, compare=same_dropout_masks(), rtol=2e-4, atol=2e-5)
    assert np.all(np.isfinite(ours[1]))


# ----------------------------------------------------------------------------------------------
# the pointer-generator network with coverage (See et al. 2017, as atulkum/pointer_summarizer writes it):
# a sorted packed BiLSTM encoder, ReduceState, additive attention with a coverage feature renormalised
# under the padding mask, p_gen by sigmoid, the copy distribution by ``scatter_add`` into an extended
# vocabulary with ``extra_zeros``, the gold probability by ``gather``, the coverage loss by ``torch.min``
# (ties at the padding split the gradient), Adagrad with an initial accumulator and clipping per module
# ----------------------------------------------------------------------------------------------


class PGConfig:
    hidden_dim, emb_dim, vocab_size = 5, 4, 9
    rand_unif_init_mag, trunc_norm_init_std = 0.02, 1e-1
    pointer_gen, is_coverage, cov_loss_wt, eps = True, True, 1.0, 1e-12
    max_grad_norm, lr, adagrad_init_acc, max_dec_steps = 2.0, 0.15, 0.1, 6


def pointer_generator(m):
    torch, nn, F = m.torch, m.nn, m.F
    config = PGConfig
    from_packed = nn.utils.rnn

    def init_lstm_wt(lstm):
        for names in lstm._all_weights:
            for name in names:
                if name.startswith('weight_'):
                    wt = getattr(lstm, name)
                    wt.data.uniform_(-config.rand_unif_init_mag, config.rand_unif_init_mag)
                elif name.startswith('bias_'):
                    # set forget bias to 1
                    bias = getattr(lstm, name)
                    n = bias.size(0)
                    start, end = n // 4, n // 2
                    bias.data.fill_(0.)
                    bias.data[start:end].fill_(1.)

    def init_linear_wt(linear):
        linear.weight.data.normal_(std=config.trunc_norm_init_std)
        if linear.bias is not None:
            linear.bias.data.normal_(std=config.trunc_norm_init_std)

    def init_wt_normal(wt):
        wt.data.normal_(std=config.trunc_norm_init_std)

    class Encoder(nn.Module):
        def __init__(self):
            super(Encoder, self).__init__()
            self.embedding = nn.Embedding(config.vocab_size, config.emb_dim)
            init_wt_normal(self.embedding.weight)
            self.lstm = nn.LSTM(config.emb_dim, config.hidden_dim, num_layers=1, batch_first=True, bidirectional=True)
            init_lstm_wt(self.lstm)
            self.W_h = nn.Linear(config.hidden_dim * 2, config.hidden_dim * 2, bias=False)

        # seq_lens should be in descending order
        def forward(self, input, seq_lens):
            embedded = self.embedding(input)
            packed = from_packed.pack_padded_sequence(embedded, seq_lens, batch_first=True)
            output, hidden = self.lstm(packed)
            encoder_outputs, _ = from_packed.pad_packed_sequence(output, batch_first=True)  # h dim = B x t_k x n
            encoder_outputs = encoder_outputs.contiguous()
            encoder_feature = encoder_outputs.view(-1, 2 * config.hidden_dim)  # B * t_k x 2*hidden_dim
            encoder_feature = self.W_h(encoder_feature)
            return encoder_outputs, encoder_feature, hidden

    class ReduceState(nn.Module):
        def __init__(self):
            super(ReduceState, self).__init__()
            self.reduce_h = nn.Linear(config.hidden_dim * 2, config.hidden_dim)
            init_linear_wt(self.reduce_h)
            self.reduce_c = nn.Linear(config.hidden_dim * 2, config.hidden_dim)
            init_linear_wt(self.reduce_c)

        def forward(self, hidden):
            h, c = hidden  # h, c dim = 2 x b x hidden_dim
            h_in = h.transpose(0, 1).contiguous().view(-1, config.hidden_dim * 2)
            hidden_reduced_h = F.relu(self.reduce_h(h_in))
            c_in = c.transpose(0, 1).contiguous().view(-1, config.hidden_dim * 2)
            hidden_reduced_c = F.relu(self.reduce_c(c_in))
            return (hidden_reduced_h.unsqueeze(0), hidden_reduced_c.unsqueeze(0))  # h, c dim = 1 x b x hidden_dim

    class Attention(nn.Module):
        def __init__(self):
            super(Attention, self).__init__()
            # attention
            if config.is_coverage:
                self.W_c = nn.Linear(1, config.hidden_dim * 2, bias=False)
            self.decode_proj = nn.Linear(config.hidden_dim * 2, config.hidden_dim * 2)
            self.v = nn.Linear(config.hidden_dim * 2, 1, bias=False)

        def forward(self, s_t_hat, encoder_outputs, encoder_feature, enc_padding_mask, coverage):
            b, t_k, n = list(encoder_outputs.size())

            dec_fea = self.decode_proj(s_t_hat)  # B x 2*hidden_dim
            dec_fea_expanded = dec_fea.unsqueeze(1).expand(b, t_k, n).contiguous()  # B x t_k x 2*hidden_dim
            dec_fea_expanded = dec_fea_expanded.view(-1, n)  # B * t_k x 2*hidden_dim

            att_features = encoder_feature + dec_fea_expanded  # B * t_k x 2*hidden_dim
            if config.is_coverage:
                coverage_input = coverage.view(-1, 1)  # B * t_k x 1
                coverage_feature = self.W_c(coverage_input)  # B * t_k x 2*hidden_dim
                att_features = att_features + coverage_feature

            e = torch.tanh(att_features)  # B * t_k x 2*hidden_dim
            scores = self.v(e)  # B * t_k x 1
            scores = scores.view(-1, t_k)  # B x t_k

            attn_dist_ = F.softmax(scores, dim=1) * enc_padding_mask  # B x t_k
            normalization_factor = attn_dist_.sum(1, keepdim=True)
            attn_dist = attn_dist_ / normalization_factor

            attn_dist = attn_dist.unsqueeze(1)  # B x 1 x t_k
            c_t = torch.bmm(attn_dist, encoder_outputs)  # B x 1 x n
            c_t = c_t.view(-1, config.hidden_dim * 2)  # B x 2*hidden_dim

            attn_dist = attn_dist.view(-1, t_k)  # B x t_k

            if config.is_coverage:
                coverage = coverage.view(-1, t_k)
                coverage = coverage + attn_dist

            return c_t, attn_dist, coverage

    class Decoder(nn.Module):
        def __init__(self):
            super(Decoder, self).__init__()
            self.attention_network = Attention()
            # decoder
            self.embedding = nn.Embedding(config.vocab_size, config.emb_dim)
            init_wt_normal(self.embedding.weight)

            self.x_context = nn.Linear(config.hidden_dim * 2 + config.emb_dim, config.emb_dim)

            self.lstm = nn.LSTM(config.emb_dim, config.hidden_dim, num_layers=1, batch_first=True, bidirectional=False)
            init_lstm_wt(self.lstm)

            if config.pointer_gen:
                self.p_gen_linear = nn.Linear(config.hidden_dim * 4 + config.emb_dim, 1)

            # p_vocab
            self.out1 = nn.Linear(config.hidden_dim * 3, config.hidden_dim)
            self.out2 = nn.Linear(config.hidden_dim, config.vocab_size)
            init_linear_wt(self.out2)

        def forward(self, y_t_1, s_t_1, encoder_outputs, encoder_feature, enc_padding_mask,
                    c_t_1, extra_zeros, enc_batch_extend_vocab, coverage, step):

            if not self.training and step == 0:
                h_decoder, c_decoder = s_t_1
                s_t_hat = torch.cat((h_decoder.view(-1, config.hidden_dim),
                                     c_decoder.view(-1, config.hidden_dim)), 1)  # B x 2*hidden_dim
                c_t, _, coverage_next = self.attention_network(s_t_hat, encoder_outputs, encoder_feature,
                                                               enc_padding_mask, coverage)
                coverage = coverage_next

            y_t_1_embd = self.embedding(y_t_1)
            x = self.x_context(torch.cat((c_t_1, y_t_1_embd), 1))
            lstm_out, s_t = self.lstm(x.unsqueeze(1), s_t_1)

            h_decoder, c_decoder = s_t
            s_t_hat = torch.cat((h_decoder.view(-1, config.hidden_dim),
                                 c_decoder.view(-1, config.hidden_dim)), 1)  # B x 2*hidden_dim
            c_t, attn_dist, coverage_next = self.attention_network(s_t_hat, encoder_outputs, encoder_feature,
                                                                   enc_padding_mask, coverage)

            if self.training or step > 0:
                coverage = coverage_next

            p_gen = None
            if config.pointer_gen:
                p_gen_input = torch.cat((c_t, s_t_hat, x), 1)  # B x (2*2*hidden_dim + emb_dim)
                p_gen = self.p_gen_linear(p_gen_input)
                p_gen = torch.sigmoid(p_gen)

            output = torch.cat((lstm_out.view(-1, config.hidden_dim), c_t), 1)  # B x hidden_dim * 3
            output = self.out1(output)  # B x hidden_dim

            output = self.out2(output)  # B x vocab_size
            vocab_dist = F.softmax(output, dim=1)

            if config.pointer_gen:
                vocab_dist_ = p_gen * vocab_dist
                attn_dist_ = (1 - p_gen) * attn_dist

                if extra_zeros is not None:
                    vocab_dist_ = torch.cat([vocab_dist_, extra_zeros], 1)

                final_dist = vocab_dist_.scatter_add(1, enc_batch_extend_vocab, attn_dist_)
            else:
                final_dist = vocab_dist

            return final_dist, s_t, c_t, attn_dist, p_gen, coverage

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.decoder = Decoder()
            self.reduce_state = ReduceState()
            # shared the embedding between encoder and decoder
            self.decoder.embedding.weight = self.encoder.embedding.weight

    return Model()


# source words as ids of the extended vocabulary: 9 and 10 are this batch's out-of-vocabulary words
PG_SRC_EXT = [[3, 9, 4, 5, 10, 6], [7, 3, 9, 8, 0, 0], [5, 10, 4, 0, 0, 0]]
PG_TGT_EXT = [[9, 4, 10, 2], [3, 9, 2, 0], [10, 5, 2, 0]]
PG_START, PG_STOP, PG_UNK = 1, 2, 0


def pointer_generator_training(m, weights, steps=3):
    torch, nn, optim = m.torch, m.nn, m.optim
    from_packed = nn.utils.rnn
    config = PGConfig
    model = load(m, pointer_generator(m), weights)
    enc_batch_extend_vocab = torch.tensor(PG_SRC_EXT)
    enc_lens = [6, 4, 3]
    enc_batch = enc_batch_extend_vocab.masked_fill(enc_batch_extend_vocab >= config.vocab_size, PG_UNK)
    enc_padding_mask = (torch.arange(6)[None, :] < torch.tensor(enc_lens)[:, None]).float()
    extra_zeros = torch.zeros((3, 2))
    target_batch = torch.tensor(PG_TGT_EXT)
    dec_batch = torch.cat([torch.full((3, 1), PG_START), target_batch[:, :-1]], 1)
    dec_batch = dec_batch.masked_fill(dec_batch >= config.vocab_size, PG_UNK)
    dec_lens = [4, 3, 3]
    dec_padding_mask = (torch.arange(4)[None, :] < torch.tensor(dec_lens)[:, None]).float()
    dec_lens_var = torch.tensor(dec_lens, dtype=torch.float)
    max_dec_len = 4

    # (the original lists the three modules' parameters, the shared embedding twice: PyTorch warns and steps it
    # twice, chainrule refuses a parameter listed twice in one group by design (README); listed once here)
    params = list(model.parameters())
    optimizer = optim.Adagrad(params, lr=config.lr, initial_accumulator_value=config.adagrad_init_acc)
    losses, norms, p_gens = [], [], []
    for it in range(steps):
        optimizer.zero_grad()
        encoder_outputs, encoder_feature, encoder_hidden = model.encoder(enc_batch, enc_lens)
        s_t_1 = model.reduce_state(encoder_hidden)
        c_t_1 = torch.zeros((3, 2 * config.hidden_dim))
        coverage = torch.zeros(enc_batch.size())

        step_losses = []
        for di in range(min(max_dec_len, config.max_dec_steps)):
            y_t_1 = dec_batch[:, di]  # Teacher forcing
            final_dist, s_t_1, c_t_1, attn_dist, p_gen, next_coverage = model.decoder(
                y_t_1, s_t_1, encoder_outputs, encoder_feature, enc_padding_mask, c_t_1, extra_zeros,
                enc_batch_extend_vocab, coverage, di)
            target = target_batch[:, di]
            gold_probs = torch.gather(final_dist, 1, target.unsqueeze(1)).squeeze()
            step_loss = -torch.log(gold_probs + config.eps)
            if config.is_coverage:
                step_coverage_loss = torch.sum(torch.min(attn_dist, coverage), 1)
                step_loss = step_loss + config.cov_loss_wt * step_coverage_loss
                coverage = next_coverage

            step_mask = dec_padding_mask[:, di]
            step_loss = step_loss * step_mask
            step_losses.append(step_loss)
            p_gens.append(p_gen.detach())

        sum_losses = torch.sum(torch.stack(step_losses, 1), 1)
        batch_avg_loss = sum_losses / dec_lens_var
        loss = torch.mean(batch_avg_loss)

        loss.backward()

        norms.append(nn.utils.clip_grad_norm_(model.encoder.parameters(), config.max_grad_norm))
        nn.utils.clip_grad_norm_(model.decoder.parameters(), config.max_grad_norm)
        nn.utils.clip_grad_norm_(model.reduce_state.parameters(), config.max_grad_norm)

        optimizer.step()
        losses.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    return losses, norms, p_gens, final_dist, coverage, grads, optimizer.state_dict()["state"][0]["sum"]


def test_pointer_generator_with_coverage():
    weights = weights_of(pointer_generator)
    ours, theirs = run_both(pointer_generator_training, weights, rtol=1e-4, atol=1e-6)
    losses, norms, p_gens, final_dist, coverage = ours[:5]
    assert losses[-1] < losses[0]
    # the final distribution over the extended vocabulary sums to one; padding never gets attention
    np.testing.assert_allclose(final_dist.sum(1), 1.0, rtol=1e-5)
    assert coverage[1, 4:].max() == 0 and coverage[2, 3:].max() == 0
    np.testing.assert_allclose(coverage.sum(1), 4.0, rtol=1e-5)  # one unit of attention per decoded step


# ----------------------------------------------------------------------------------------------
# a character-aware word encoder (Kim et al. 2016): characters embedded with a padding row, Conv1d filters
# of several widths, max-over-time pooling two ways (``torch.max(dim=2)[0]`` and ``F.max_pool1d`` over the
# whole length), a highway network; ELMo-style forward and backward LSTMs (the backward one over
# ``flip``ped sequences) and AllenNLP's ScalarMix with its masked layer norm, ``ParameterList``,
# ``torch.FloatTensor([x])``, ``torch.split`` of the softmaxed weights and Python's ``sum`` of tensors
# ----------------------------------------------------------------------------------------------

CHAR_WORDS = [[[3, 4, 5, 0, 0], [6, 7, 0, 0, 0], [8, 9, 10, 11, 12], [0, 0, 0, 0, 0]],
              [[5, 5, 0, 0, 0], [3, 0, 0, 0, 0], [4, 6, 8, 0, 0], [9, 3, 3, 7, 0]]]
CHAR_TAGS = [[0, 1, 2, 0], [1, 1, 0, 2]]


def char_cnn_elmo(m, n_chars=13, char_emb=4, filters=((1, 3), (2, 4), (3, 5)), hid=6, n_tags=3):
    torch, nn, F = m.torch, m.nn, m.F

    class Highway(nn.Module):
        def __init__(self, size, num_layers, f):
            super(Highway, self).__init__()
            self.num_layers = num_layers
            self.nonlinear = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.linear = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.gate = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.f = f

        def forward(self, x):
            for layer in range(self.num_layers):
                gate = torch.sigmoid(self.gate[layer](x))
                nonlinear = self.f(self.nonlinear[layer](x))
                linear = self.linear[layer](x)
                x = gate * nonlinear + (1 - gate) * linear
            return x

    class CharCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.char_embedding = nn.Embedding(n_chars, char_emb, padding_idx=0)
            self.convs = nn.ModuleList([nn.Conv1d(char_emb, n, kernel_size=w) for w, n in filters])
            self.n_filters = sum(n for _, n in filters)
            self.highway = Highway(self.n_filters, 2, F.relu)

        def forward(self, chars):
            batch_size, seq_len, max_word_len = chars.size()
            x = self.char_embedding(chars.view(-1, max_word_len)).transpose(1, 2)  # (B*T, E, W)
            pooled = []
            for i, conv in enumerate(self.convs):
                c = torch.tanh(conv(x))
                if i % 2 == 0:
                    c, _ = torch.max(c, dim=2)  # max over time
                else:
                    c = F.max_pool1d(c, c.size(2)).squeeze(2)
                pooled.append(c)
            words = self.highway(torch.cat(pooled, 1))
            return words.view(batch_size, seq_len, -1)

    class ScalarMix(nn.Module):
        def __init__(self, mixture_size, do_layer_norm=False, initial_scalar_parameters=None, trainable=True):
            super().__init__()
            self.mixture_size = mixture_size
            self.do_layer_norm = do_layer_norm
            if initial_scalar_parameters is None:
                initial_scalar_parameters = [0.0] * mixture_size
            self.scalar_parameters = nn.ParameterList(
                [nn.Parameter(torch.FloatTensor([initial_scalar_parameters[i]]), requires_grad=trainable)
                 for i in range(mixture_size)])
            self.gamma = nn.Parameter(torch.FloatTensor([1.0]), requires_grad=trainable)

        def forward(self, tensors, mask=None):
            def _do_layer_norm(tensor, broadcast_mask, num_elements_not_masked):
                tensor_masked = tensor * broadcast_mask
                mean = torch.sum(tensor_masked) / num_elements_not_masked
                variance = torch.sum(((tensor_masked - mean) * broadcast_mask) ** 2) / num_elements_not_masked
                return (tensor - mean) / torch.sqrt(variance + 1e-13)

            normed_weights = F.softmax(torch.cat([parameter for parameter in self.scalar_parameters]), dim=0)
            normed_weights = torch.split(normed_weights, split_size_or_sections=1)

            if not self.do_layer_norm:
                pieces = []
                for weight, tensor in zip(normed_weights, tensors):
                    pieces.append(weight * tensor)
                return self.gamma * sum(pieces)
            else:
                assert mask is not None
                broadcast_mask = mask.unsqueeze(-1)
                input_dim = tensors[0].size(-1)
                num_elements_not_masked = torch.sum(mask) * input_dim
                pieces = []
                for weight, tensor in zip(normed_weights, tensors):
                    pieces.append(weight * _do_layer_norm(tensor, broadcast_mask, num_elements_not_masked))
                return self.gamma * sum(pieces)

    class ELMoTagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.chars = CharCNN()
            self.project = nn.Linear(self.chars.n_filters, hid)
            self.forward_layers = nn.ModuleList([nn.LSTM(hid, hid, batch_first=True) for _ in range(2)])
            self.backward_layers = nn.ModuleList([nn.LSTM(hid, hid, batch_first=True) for _ in range(2)])
            self.mix = ScalarMix(3, do_layer_norm=True, initial_scalar_parameters=[0.1, -0.2, 0.3])
            self.plain_mix = ScalarMix(3)
            self.out = nn.Linear(2 * hid, n_tags)

        def forward(self, chars):
            mask = (chars > 0).any(-1).float()
            token = self.project(self.chars(chars))
            layers = [torch.cat([token, token], -1)]
            fwd, bwd = token, token.flip(1)
            for f_lstm, b_lstm in zip(self.forward_layers, self.backward_layers):
                f_out, _ = f_lstm(fwd)
                b_out, _ = b_lstm(bwd)
                fwd, bwd = f_out + fwd, b_out + bwd  # residual, as ELMo's between layers
                layers.append(torch.cat([fwd, bwd.flip(1)], -1))
            mixed = self.mix(layers, mask) + self.plain_mix(layers)
            return self.out(mixed), mask

    return ELMoTagger()


def char_cnn_elmo_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, char_cnn_elmo(m), weights)
    chars = torch.tensor(CHAR_WORDS)
    tags = torch.tensor(CHAR_TAGS)
    opt = optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True)
    losses = []
    for step in range(steps):
        logits, mask = model(chars)
        loss = (F.cross_entropy(logits.transpose(1, 2), tags, reduction="none") * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    weights_now = [p.detach().clone() for p in model.mix.scalar_parameters]
    return losses, grads, weights_now, model.mix.gamma, logits


def test_char_cnn_highway_elmo_scalar_mix():
    weights = weights_of(char_cnn_elmo)
    ours, theirs = run_both(char_cnn_elmo_training, weights, rtol=1e-4, atol=1e-6)
    losses, grads = ours[:2]
    assert losses[-1] < losses[0]
    # the all-padding word of the first sentence: its character embedding row (0) gets no gradient
    assert np.all(grads["chars.char_embedding.weight"][0] == 0)
    assert set(k for k in grads if k.startswith("mix.")) == {"mix.scalar_parameters.0", "mix.scalar_parameters.1",
                                                             "mix.scalar_parameters.2", "mix.gamma"}


# ----------------------------------------------------------------------------------------------
# the child-sum Tree-LSTM on sentence similarity (Tai et al. 2015, as dasguptar/treelstm.pytorch writes it):
# recursion over trees read from parent pointers, leaves' zero states by ``detach().new(1, d).fill_(0.)
# .requires_grad_()``, ``zip(*map(...))`` of the children's states, ``repeat``, a similarity head over
# |l - r| by ``torch.add(l, -r)``, KLDivLoss against a two-hot target, gradients summed over a batch of
# trees before an Adagrad step, ``torch.randperm`` order, and Pearson/MSE metrics
# ----------------------------------------------------------------------------------------------

TREE_PAIRS = [  # (left parents, left words, right parents, right words, similarity in [1, 5])
    ([2, 0, 2], [3, 4, 5], [2, 0], [3, 6], 3.6),
    ([0, 1, 1, 3], [7, 8, 4, 5], [3, 3, 0, 3], [8, 7, 4, 6], 4.2),
    ([2, 3, 0], [6, 5, 3], [0, 1, 2, 2], [5, 6, 3, 9], 1.7),
    ([0], [9], [2, 0], [9, 8], 2.0),
    ([3, 3, 0, 3, 4], [3, 4, 5, 6, 7], [2, 0, 2], [4, 5, 7], 4.9),
]


def tree_lstm(m, vocab_size=10, in_dim=5, mem_dim=6, hidden_dim=4, num_classes=5):
    torch, nn, F = m.torch, m.nn, m.F

    class ChildSumTreeLSTM(nn.Module):
        def __init__(self, in_dim, mem_dim):
            super(ChildSumTreeLSTM, self).__init__()
            self.in_dim = in_dim
            self.mem_dim = mem_dim
            self.ioux = nn.Linear(self.in_dim, 3 * self.mem_dim)
            self.iouh = nn.Linear(self.mem_dim, 3 * self.mem_dim)
            self.fx = nn.Linear(self.in_dim, self.mem_dim)
            self.fh = nn.Linear(self.mem_dim, self.mem_dim)

        def node_forward(self, inputs, child_c, child_h):
            child_h_sum = torch.sum(child_h, dim=0, keepdim=True)

            iou = self.ioux(inputs) + self.iouh(child_h_sum)
            i, o, u = torch.split(iou, iou.size(1) // 3, dim=1)
            i, o, u = torch.sigmoid(i), torch.sigmoid(o), torch.tanh(u)

            f = torch.sigmoid(
                self.fh(child_h) +
                self.fx(inputs).repeat(len(child_h), 1)
            )
            fc = torch.mul(f, child_c)

            c = torch.mul(i, u) + torch.sum(fc, dim=0, keepdim=True)
            h = torch.mul(o, torch.tanh(c))
            return c, h

        def forward(self, tree, inputs):
            for idx in range(tree.num_children):
                self.forward(tree.children[idx], inputs)

            if tree.num_children == 0:
                child_c = inputs[0].detach().new(1, self.mem_dim).fill_(0.).requires_grad_()
                child_h = inputs[0].detach().new(1, self.mem_dim).fill_(0.).requires_grad_()
            else:
                child_c, child_h = zip(* map(lambda x: x.state, tree.children))
                child_c, child_h = torch.cat(child_c, dim=0), torch.cat(child_h, dim=0)

            tree.state = self.node_forward(inputs[tree.idx], child_c, child_h)
            return tree.state

    class Similarity(nn.Module):
        def __init__(self, mem_dim, hidden_dim, num_classes):
            super(Similarity, self).__init__()
            self.mem_dim = mem_dim
            self.hidden_dim = hidden_dim
            self.num_classes = num_classes
            self.wh = nn.Linear(2 * self.mem_dim, self.hidden_dim)
            self.wp = nn.Linear(self.hidden_dim, self.num_classes)

        def forward(self, lvec, rvec):
            mult_dist = torch.mul(lvec, rvec)
            abs_dist = torch.abs(torch.add(lvec, -rvec))
            vec_dist = torch.cat((mult_dist, abs_dist), 1)

            out = torch.sigmoid(self.wh(vec_dist))
            out = F.log_softmax(self.wp(out), dim=1)
            return out

    class SimilarityTreeLSTM(nn.Module):
        def __init__(self, vocab_size, in_dim, mem_dim, hidden_dim, num_classes, sparsity, freeze):
            super(SimilarityTreeLSTM, self).__init__()
            self.emb = nn.Embedding(vocab_size, in_dim, padding_idx=0, sparse=sparsity)
            if freeze:
                self.emb.weight.requires_grad = False
            self.childsumtreelstm = ChildSumTreeLSTM(in_dim, mem_dim)
            self.similarity = Similarity(mem_dim, hidden_dim, num_classes)

        def forward(self, ltree, linputs, rtree, rinputs):
            linputs = self.emb(linputs)
            rinputs = self.emb(rinputs)
            lstate, lhidden = self.childsumtreelstm(ltree, linputs)
            rstate, rhidden = self.childsumtreelstm(rtree, rinputs)
            output = self.similarity(lstate, rstate)
            return output

    return SimilarityTreeLSTM(vocab_size, in_dim, mem_dim, hidden_dim, num_classes, False, False)


class Tree(object):
    def __init__(self):
        self.parent = None
        self.num_children = 0
        self.children = list()

    def add_child(self, child):
        child.parent = self
        self.num_children += 1
        self.children.append(child)


def read_tree(parents):
    """A tree from 1-based parent pointers (0 marks the root), as treelstm.pytorch's dataset reads them."""
    trees = dict()
    root = None
    for i in range(1, len(parents) + 1):
        if i - 1 not in trees.keys() and parents[i - 1] != -1:
            idx = i
            prev = None
            while True:
                parent = parents[idx - 1]
                if parent == -1:
                    break
                tree = Tree()
                if prev is not None:
                    tree.add_child(prev)
                trees[idx - 1] = tree
                tree.idx = idx - 1
                if parent - 1 in trees.keys():
                    trees[parent - 1].add_child(tree)
                    break
                elif parent == 0:
                    root = tree
                    break
                else:
                    prev = tree
                    idx = parent
    return root


def tree_lstm_training(m, weights, epochs=2, batchsize=2, num_classes=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, tree_lstm(m), weights)
    criterion = nn.KLDivLoss(reduction="batchmean")
    optimizer = optim.Adagrad(filter(lambda p: p.requires_grad, model.parameters()), lr=0.05, weight_decay=1e-4)

    def map_label_to_target(label, num_classes):
        target = torch.zeros(1, num_classes, dtype=torch.float, device='cpu')
        ceil = int(math.ceil(label))
        floor = int(math.floor(label))
        if ceil == floor:
            target[0, floor - 1] = 1
        else:
            target[0, floor - 1] = ceil - label
            target[0, ceil - 1] = label - floor
        return target

    dataset = [(read_tree(lp), torch.tensor(lw), read_tree(rp), torch.tensor(rw), label)
               for lp, lw, rp, rw, label in TREE_PAIRS]
    torch.manual_seed(123)
    epoch_losses = []
    for epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        total_loss = 0.0
        indices = torch.randperm(len(dataset), dtype=torch.long, device='cpu')
        for idx in range(len(dataset)):
            ltree, linput, rtree, rinput, label = dataset[indices[idx]]
            target = map_label_to_target(label, num_classes)
            output = model(ltree, linput, rtree, rinput)
            loss = criterion(output, target)
            total_loss += loss.item()
            loss.backward()
            if idx % batchsize == 0 and idx > 0:
                optimizer.step()
                optimizer.zero_grad()
        epoch_losses.append(total_loss / len(dataset))

    model.eval()
    with torch.no_grad():
        predictions = torch.zeros(len(dataset), dtype=torch.float, device='cpu')
        indices = torch.arange(1, num_classes + 1, dtype=torch.float, device='cpu')
        for idx in range(len(dataset)):
            ltree, linput, rtree, rinput, label = dataset[idx]
            output = model(ltree, linput, rtree, rinput)
            output = output.squeeze().to('cpu')
            predictions[idx] = torch.dot(indices, torch.exp(output))
    labels = torch.tensor([pair[-1] for pair in TREE_PAIRS])

    def pearson(predictions, labels):
        x = copy.deepcopy(predictions)
        y = copy.deepcopy(labels)
        x = (x - x.mean()) / x.std()
        y = (y - y.mean()) / y.std()
        return torch.mean(torch.mul(x, y))

    root = dataset[4][0]
    return (epoch_losses, predictions, pearson(predictions, labels), F.mse_loss(predictions, labels),
            [p.grad for p in model.parameters()], root.state, [root.num_children, root.children[2].num_children])


def test_child_sum_tree_lstm_similarity():
    weights = weights_of(tree_lstm)
    ours, theirs = run_both(tree_lstm_training, weights, rtol=1e-4, atol=1e-6)
    epoch_losses, predictions = ours[:2]
    assert np.all((predictions > 1) & (predictions < 5))
    assert ours[-1] == [3, 1]  # the fifth left tree: a root of three children, the third of them with one


# ----------------------------------------------------------------------------------------------
# Transformer-XL (kimiyoung/transformer-xl, NVIDIA's edition of the masks): relative positional attention
# with the ``_rel_shift`` trick (a zero column, ``view`` to (k+1, q), drop a row, ``view_as``), einsum with
# its operands as a tuple, ``torch.ger`` sinusoids, learnt r_w/r_r biases, a causal mask by
# ``torch.triu(new_ones, diagonal=1 + mlen)``, recurrence memory that starts as empty 1-D tensors joined by
# ``torch.cat`` and is kept under ``no_grad``, ``attn_score.mul_``, warmup then CosineAnnealingLR by hand
# ----------------------------------------------------------------------------------------------


def transformer_xl(m, n_token=12, n_layer=2, n_head=2, d_model=8, d_head=4, d_inner=16, mem_len=4):
    torch, nn, F = m.torch, m.nn, m.F

    class PositionalEmbedding(nn.Module):
        def __init__(self, demb):
            super(PositionalEmbedding, self).__init__()
            self.demb = demb
            inv_freq = 1 / (10000 ** (torch.arange(0.0, demb, 2.0) / demb))
            self.register_buffer('inv_freq', inv_freq)

        def forward(self, pos_seq, bsz=None):
            sinusoid_inp = torch.ger(pos_seq, self.inv_freq)
            pos_emb = torch.cat([sinusoid_inp.sin(), sinusoid_inp.cos()], dim=-1)
            if bsz is not None:
                return pos_emb[:, None, :].expand(-1, bsz, -1)
            else:
                return pos_emb[:, None, :]

    class PositionwiseFF(nn.Module):
        def __init__(self, d_model, d_inner, dropout, pre_lnorm=False):
            super(PositionwiseFF, self).__init__()
            self.CoreNet = nn.Sequential(
                nn.Linear(d_model, d_inner), nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(d_inner, d_model),
                nn.Dropout(dropout),
            )
            self.layer_norm = nn.LayerNorm(d_model)
            self.pre_lnorm = pre_lnorm

        def forward(self, inp):
            if self.pre_lnorm:
                core_out = self.CoreNet(self.layer_norm(inp))
                output = core_out + inp
            else:
                core_out = self.CoreNet(inp)
                output = self.layer_norm(inp + core_out)
            return output

    class RelPartialLearnableMultiHeadAttn(nn.Module):
        def __init__(self, n_head, d_model, d_head, dropout, dropatt=0, pre_lnorm=False):
            super(RelPartialLearnableMultiHeadAttn, self).__init__()
            self.n_head = n_head
            self.d_model = d_model
            self.d_head = d_head
            self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head, bias=False)
            self.drop = nn.Dropout(dropout)
            self.dropatt = nn.Dropout(dropatt)
            self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
            self.layer_norm = nn.LayerNorm(d_model)
            self.scale = 1 / (d_head ** 0.5)
            self.pre_lnorm = pre_lnorm
            self.r_net = nn.Linear(self.d_model, self.n_head * self.d_head, bias=False)

        def _rel_shift(self, x, zero_triu=False):
            zero_pad = torch.zeros((x.size(0), 1, *x.size()[2:]), device=x.device, dtype=x.dtype)
            x_padded = torch.cat([zero_pad, x], dim=1)
            x_padded = x_padded.view(x.size(1) + 1, x.size(0), *x.size()[2:])
            x = x_padded[1:].view_as(x)
            if zero_triu:
                ones = torch.ones((x.size(0), x.size(1)))
                x = x * torch.tril(ones, x.size(1) - x.size(0))[:, :, None, None]
            return x

        def forward(self, w, r, r_w_bias, r_r_bias, attn_mask=None, mems=None):
            qlen, rlen, bsz = w.size(0), r.size(0), w.size(1)
            if mems is not None:
                cat = torch.cat([mems, w], 0)
                if self.pre_lnorm:
                    w_heads = self.qkv_net(self.layer_norm(cat))
                else:
                    w_heads = self.qkv_net(cat)
                r_head_k = self.r_net(r)
                w_head_q, w_head_k, w_head_v = torch.chunk(w_heads, 3, dim=-1)
                w_head_q = w_head_q[-qlen:]
            else:
                if self.pre_lnorm:
                    w_heads = self.qkv_net(self.layer_norm(w))
                else:
                    w_heads = self.qkv_net(w)
                r_head_k = self.r_net(r)
                w_head_q, w_head_k, w_head_v = torch.chunk(w_heads, 3, dim=-1)

            klen = w_head_k.size(0)
            w_head_q = w_head_q.view(qlen, bsz, self.n_head, self.d_head)  # qlen x bsz x n_head x d_head
            w_head_k = w_head_k.view(klen, bsz, self.n_head, self.d_head)  # qlen x bsz x n_head x d_head
            w_head_v = w_head_v.view(klen, bsz, self.n_head, self.d_head)  # qlen x bsz x n_head x d_head
            r_head_k = r_head_k.view(rlen, self.n_head, self.d_head)  # qlen x n_head x d_head

            # compute attention score
            rw_head_q = w_head_q + r_w_bias  # qlen x bsz x n_head x d_head
            AC = torch.einsum('ibnd,jbnd->ijbn', (rw_head_q, w_head_k))  # qlen x klen x bsz x n_head
            rr_head_q = w_head_q + r_r_bias
            BD = torch.einsum('ibnd,jnd->ijbn', (rr_head_q, r_head_k))  # qlen x klen x bsz x n_head
            BD = self._rel_shift(BD)

            # [qlen x klen x bsz x n_head]
            attn_score = AC + BD
            attn_score.mul_(self.scale)

            # compute attention probability
            if attn_mask is not None and attn_mask.any().item():
                if attn_mask.dim() == 2:
                    attn_score = attn_score.float().masked_fill(
                        attn_mask[None, :, :, None], -float('inf')).type_as(attn_score)
                elif attn_mask.dim() == 3:
                    attn_score = attn_score.float().masked_fill(
                        attn_mask[:, :, :, None], -float('inf')).type_as(attn_score)

            # [qlen x klen x bsz x n_head]
            attn_prob = F.softmax(attn_score, dim=1)
            attn_prob = self.dropatt(attn_prob)

            # compute attention vector
            attn_vec = torch.einsum('ijbn,jbnd->ibnd', (attn_prob, w_head_v))

            # [qlen x bsz x n_head x d_head]
            attn_vec = attn_vec.contiguous().view(attn_vec.size(0), attn_vec.size(1), self.n_head * self.d_head)

            # linear projection
            attn_out = self.o_net(attn_vec)
            attn_out = self.drop(attn_out)

            if self.pre_lnorm:
                output = w + attn_out
            else:
                output = self.layer_norm(w + attn_out)
            return output

    class RelPartialLearnableDecoderLayer(nn.Module):
        def __init__(self, n_head, d_model, d_head, d_inner, dropout, **kwargs):
            super(RelPartialLearnableDecoderLayer, self).__init__()
            self.dec_attn = RelPartialLearnableMultiHeadAttn(n_head, d_model, d_head, dropout, **kwargs)
            self.pos_ff = PositionwiseFF(d_model, d_inner, dropout, pre_lnorm=kwargs.get('pre_lnorm'))

        def forward(self, dec_inp, r, r_w_bias, r_r_bias, dec_attn_mask=None, mems=None):
            output = self.dec_attn(dec_inp, r, r_w_bias, r_r_bias, attn_mask=dec_attn_mask, mems=mems)
            output = self.pos_ff(output)
            return output

    class MemTransformerLM(nn.Module):
        def __init__(self, n_token, n_layer, n_head, d_model, d_head, d_inner, dropout, dropatt, tgt_len=None,
                     ext_len=0, mem_len=0, clamp_len=-1, pre_lnorm=False):
            super(MemTransformerLM, self).__init__()
            self.n_token = n_token
            self.d_model = d_model
            self.n_head = n_head
            self.d_head = d_head
            self.word_emb = nn.Embedding(n_token, d_model)
            self.drop = nn.Dropout(dropout)
            self.n_layer = n_layer
            self.tgt_len = tgt_len
            self.mem_len = mem_len
            self.ext_len = ext_len
            self.clamp_len = clamp_len
            self.layers = nn.ModuleList()
            for i in range(n_layer):
                self.layers.append(RelPartialLearnableDecoderLayer(
                    n_head, d_model, d_head, d_inner, dropout, dropatt=dropatt, pre_lnorm=pre_lnorm))
            self.out_layer = nn.Linear(d_model, n_token)
            self.out_layer.weight = self.word_emb.weight  # tie_weight
            self.pos_emb = PositionalEmbedding(self.d_model)
            self.r_w_bias = nn.Parameter(torch.Tensor(self.n_head, self.d_head))
            self.r_r_bias = nn.Parameter(torch.Tensor(self.n_head, self.d_head))
            nn.init.normal_(self.r_w_bias, 0.0, 0.02)
            nn.init.normal_(self.r_r_bias, 0.0, 0.02)

        def init_mems(self):
            if self.mem_len > 0:
                mems = []
                param = next(self.parameters())
                for i in range(self.n_layer + 1):
                    empty = torch.empty(0, dtype=param.dtype, device=param.device)
                    mems.append(empty)
                return mems
            else:
                return None

        def _update_mems(self, hids, mems, qlen, mlen):
            # does not deal with None
            if mems is None:
                return None
            # mems is not None
            assert len(hids) == len(mems), 'len(hids) != len(mems)'
            # There are `mlen + qlen` steps that can be cached into mems
            with torch.no_grad():
                new_mems = []
                end_idx = mlen + max(0, qlen - 0 - self.ext_len)
                beg_idx = max(0, end_idx - self.mem_len)
                for i in range(len(hids)):
                    cat = torch.cat([mems[i], hids[i]], dim=0)
                    new_mems.append(cat[beg_idx:end_idx].detach())
            return new_mems

        def _forward(self, dec_inp, mems=None):
            qlen, bsz = dec_inp.size()
            word_emb = self.word_emb(dec_inp)
            mlen = mems[0].size(0) if mems is not None else 0
            klen = mlen + qlen
            dec_attn_mask = torch.triu(word_emb.new_ones(qlen, klen), diagonal=1 + mlen).bool()[:, :, None]
            hids = []
            pos_seq = torch.arange(klen - 1, -1, -1.0, device=word_emb.device, dtype=word_emb.dtype)
            if self.clamp_len > 0:
                pos_seq.clamp_(max=self.clamp_len)
            pos_emb = self.pos_emb(pos_seq)
            core_out = self.drop(word_emb)
            pos_emb = self.drop(pos_emb)
            hids.append(core_out)
            for i, layer in enumerate(self.layers):
                mems_i = None if mems is None else mems[i]
                core_out = layer(core_out, pos_emb, self.r_w_bias, self.r_r_bias, dec_attn_mask=dec_attn_mask,
                                 mems=mems_i)
                hids.append(core_out)
            core_out = self.drop(core_out)
            new_mems = self._update_mems(hids, mems, mlen, qlen)
            return core_out, new_mems

        def forward(self, data, target, *mems):
            if not mems:
                mems = self.init_mems()
            tgt_len = target.size(0)
            hidden, new_mems = self._forward(data, mems=mems)
            pred_hid = hidden[-tgt_len:]
            logit = self.out_layer(pred_hid.view(-1, pred_hid.size(-1)))
            loss = -F.log_softmax(logit, dim=-1).gather(1, target.reshape(-1).unsqueeze(1)).squeeze(1)
            loss = loss.view(tgt_len, -1)
            if new_mems is None:
                return [loss]
            else:
                return [loss] + new_mems

    return MemTransformerLM(n_token, n_layer, n_head, d_model, d_head, d_inner, dropout=0.0, dropatt=0.0,
                            tgt_len=3, mem_len=mem_len, clamp_len=5, pre_lnorm=False)


def transformer_xl_training(m, weights, n_segments=4, tgt_len=3, warmup_step=2, max_step=6):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, transformer_xl(m), weights)
    rng = np.random.default_rng(4)
    stream = torch.tensor(rng.integers(0, 12, (n_segments * tgt_len + 1, 2)))  # (T, bsz), time first
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, max_step, eta_min=0.0)
    train_step, mems, losses, lrs, mem_lens = 0, tuple(), [], [], []
    model.train()
    for batch in range(n_segments):
        data = stream[batch * tgt_len:(batch + 1) * tgt_len]
        target = stream[batch * tgt_len + 1:(batch + 1) * tgt_len + 1]
        ret = model(data, target, *mems)
        loss, mems = ret[0], ret[1:]
        loss = loss.float().mean().type_as(loss)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        optimizer.zero_grad()
        train_step += 1
        if train_step < warmup_step:
            curr_lr = 0.01 * train_step / warmup_step
            optimizer.param_groups[0]['lr'] = curr_lr
        else:
            scheduler.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]['lr'])
        mem_lens.append([m_.size(0) for m_ in mems])
    # evaluation with the memory carried over, under no_grad
    model.eval()
    with torch.no_grad():
        ret = model(stream[:tgt_len], stream[1:tgt_len + 1], *mems)
    return losses, lrs, mem_lens, ret[0], [m_ for m_ in mems], model.r_w_bias, model.word_emb.weight


def test_transformer_xl_relative_attention_with_memory():
    weights = weights_of(transformer_xl)
    ours, theirs = run_both(transformer_xl_training, weights, rtol=1e-4, atol=1e-6)
    losses, lrs, mem_lens = ours[:3]
    assert mem_lens == [[3] * 3, [4] * 3, [4] * 3, [4] * 3]  # the memory grows to mem_len, then slides
    assert all(np.isfinite(losses))


# ----------------------------------------------------------------------------------------------
# fairseq's convolutional seq2seq (ConvS2S, Gehring et al. 2017; fairseq/models/fconv.py): weight-normed
# Linear and ConvTBC layers (``torch.conv_tbc``, ``nn.utils.weight_norm(m, dim=2)``), learnt positions by
# ``make_positions`` (cumsum of the non-padding mask), GLU over channels, residuals scaled by sqrt(0.5),
# GradMultiply (a custom Function that returns ``x.new(x)``), multi-step attention with the padding
# excluded from its length scaling (``s * s.rsqrt()``), linearised causal convolutions in the decoder,
# fairseq's label-smoothed NLL, Nesterov SGD, gradient clipping, and greedy decoding
# ----------------------------------------------------------------------------------------------

FC_PAD, FC_EOS, FC_VOCAB = 1, 2, 11
FC_SRC = [[4, 5, 6, 7, 2], [8, 9, 10, 2, 1], [5, 5, 2, 1, 1]]
FC_TGT = [[6, 7, 4, 2], [10, 8, 2, 1], [9, 2, 1, 1]]


def fconv(m, embed_dim=8, enc_convs=((8, 3),) * 2 + ((6, 2),), dec_convs=((8, 3), (8, 3)), out_embed_dim=6,
          dropout=0.0):
    torch, nn, F = m.torch, m.nn, m.F
    import importlib
    _single = importlib.import_module(nn.__name__ + ".modules.utils")._single

    class GradMultiply(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale):
            ctx.scale = scale
            res = x.new(x)
            return res

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.scale, None

    def make_positions(tensor, padding_idx: int):
        mask = tensor.ne(padding_idx).int()
        return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx

    class LearnedPositionalEmbedding(nn.Embedding):
        def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int):
            super().__init__(num_embeddings, embedding_dim, padding_idx)

        def forward(self, input):
            positions = make_positions(input, self.padding_idx)
            return F.embedding(positions, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                               self.scale_grad_by_freq, self.sparse)

    def Embedding(num_embeddings, embedding_dim, padding_idx):
        m = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        nn.init.normal_(m.weight, 0, 0.1)
        nn.init.constant_(m.weight[padding_idx], 0)
        return m

    def PositionalEmbedding(num_embeddings, embedding_dim, padding_idx):
        m = LearnedPositionalEmbedding(num_embeddings + padding_idx + 1, embedding_dim, padding_idx)
        nn.init.normal_(m.weight, 0, 0.1)
        nn.init.constant_(m.weight[padding_idx], 0)
        return m

    def Linear(in_features, out_features, dropout=0.0):
        """Weight-normalized Linear layer (input: N x T x C)"""
        m = nn.Linear(in_features, out_features)
        nn.init.normal_(m.weight, mean=0, std=math.sqrt((1 - dropout) / in_features))
        nn.init.constant_(m.bias, 0)
        return nn.utils.weight_norm(m)

    class ConvTBC(nn.Module):
        """1D convolution over an input of shape (time x batch x channel)"""

        def __init__(self, in_channels, out_channels, kernel_size, padding=0):
            super(ConvTBC, self).__init__()
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.kernel_size = _single(kernel_size)
            self.padding = _single(padding)
            self.weight = nn.Parameter(torch.Tensor(self.kernel_size[0], in_channels, out_channels))
            self.bias = nn.Parameter(torch.Tensor(out_channels))
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.xavier_normal_(self.weight)
            nn.init.zeros_(self.bias)

        def conv_tbc(self, input):
            return torch.conv_tbc(input.contiguous(), self.weight, self.bias, self.padding[0])

        def forward(self, input):
            return self.conv_tbc(input)

    class LinearizedConvolution(ConvTBC):
        """An optimized version of nn.Conv1d; at training time only the past is seen."""

        def forward(self, input, incremental_state=None):
            output = self.conv_tbc(input)
            if self.kernel_size[0] > 1 and self.padding[0] > 0:
                # remove future timesteps added by padding
                output = output[: -self.padding[0], :, :]
            return output

    def ConvTBCLayer(in_channels, out_channels, kernel_size, dropout=0.0, **kwargs):
        """Weight-normalized Conv1d layer"""
        m = ConvTBC(in_channels, out_channels, kernel_size, **kwargs)
        std = math.sqrt((4 * (1.0 - dropout)) / (m.kernel_size[0] * in_channels))
        nn.init.normal_(m.weight, mean=0, std=std)
        nn.init.constant_(m.bias, 0)
        return nn.utils.weight_norm(m, dim=2)

    def LinearizedConv1d(in_channels, out_channels, kernel_size, dropout=0.0, **kwargs):
        """Weight-normalized Conv1d layer optimized for decoding"""
        m = LinearizedConvolution(in_channels, out_channels, kernel_size, **kwargs)
        std = math.sqrt((4 * (1.0 - dropout)) / (m.kernel_size[0] * in_channels))
        nn.init.normal_(m.weight, mean=0, std=std)
        nn.init.constant_(m.bias, 0)
        return nn.utils.weight_norm(m, dim=2)

    def extend_conv_spec(convolutions):
        extended = []
        for spec in convolutions:
            if len(spec) == 3:
                extended.append(spec)
            elif len(spec) == 2:
                extended.append(spec + (1,))
        return tuple(extended)

    class FConvEncoder(nn.Module):
        def __init__(self, num_embeddings, embed_dim, max_positions, convolutions, dropout):
            super().__init__()
            self.dropout_module = nn.Dropout(dropout)
            self.num_attention_layers = None
            self.padding_idx = FC_PAD
            self.embed_tokens = Embedding(num_embeddings, embed_dim, self.padding_idx)
            self.embed_positions = PositionalEmbedding(max_positions, embed_dim, self.padding_idx)
            convolutions = extend_conv_spec(convolutions)
            in_channels = convolutions[0][0]
            self.fc1 = Linear(embed_dim, in_channels, dropout=dropout)
            self.projections = nn.ModuleList()
            self.convolutions = nn.ModuleList()
            self.residuals = []
            layer_in_channels = [in_channels]
            for _, (out_channels, kernel_size, residual) in enumerate(convolutions):
                if residual == 0:
                    residual_dim = out_channels
                else:
                    residual_dim = layer_in_channels[-residual]
                self.projections.append(Linear(residual_dim, out_channels)
                                        if residual_dim != out_channels else None)
                if kernel_size % 2 == 1:
                    padding = kernel_size // 2
                else:
                    padding = 0
                self.convolutions.append(ConvTBCLayer(in_channels, out_channels * 2, kernel_size, dropout=dropout,
                                                      padding=padding))
                self.residuals.append(residual)
                in_channels = out_channels
                layer_in_channels.append(out_channels)
            self.fc2 = Linear(in_channels, embed_dim)

        def forward(self, src_tokens, src_lengths):
            x = self.embed_tokens(src_tokens) + self.embed_positions(src_tokens)
            x = self.dropout_module(x)
            input_embedding = x
            x = self.fc1(x)
            encoder_padding_mask = src_tokens.eq(self.padding_idx).t()  # -> T x B
            if not encoder_padding_mask.any():
                encoder_padding_mask = None
            x = x.transpose(0, 1)
            residuals = [x]
            for proj, conv, res_layer in zip(self.projections, self.convolutions, self.residuals):
                if res_layer > 0:
                    residual = residuals[-res_layer]
                    residual = residual if proj is None else proj(residual)
                else:
                    residual = None
                if encoder_padding_mask is not None:
                    x = x.masked_fill(encoder_padding_mask.unsqueeze(-1), 0)
                x = self.dropout_module(x)
                if conv.kernel_size[0] % 2 == 1:
                    # padding is implicit in the conv
                    x = conv(x)
                else:
                    padding_l = (conv.kernel_size[0] - 1) // 2
                    padding_r = conv.kernel_size[0] // 2
                    x = F.pad(x, (0, 0, 0, 0, padding_l, padding_r))
                    x = conv(x)
                x = F.glu(x, dim=2)
                if residual is not None:
                    x = (x + residual) * math.sqrt(0.5)
                residuals.append(x)
            x = x.transpose(1, 0)
            x = self.fc2(x)
            if encoder_padding_mask is not None:
                encoder_padding_mask = encoder_padding_mask.t()  # -> B x T
                x = x.masked_fill(encoder_padding_mask.unsqueeze(-1), 0)
            # scale gradients (this only affects backward, not forward)
            x = GradMultiply.apply(x, 1.0 / (2.0 * self.num_attention_layers))
            # add output to input embedding for attention
            y = (x + input_embedding) * math.sqrt(0.5)
            return {"encoder_out": (x, y), "encoder_padding_mask": encoder_padding_mask}

    class AttentionLayer(nn.Module):
        def __init__(self, conv_channels, embed_dim, bmm=None):
            super().__init__()
            self.in_projection = Linear(conv_channels, embed_dim)
            self.out_projection = Linear(embed_dim, conv_channels)
            self.bmm = bmm if bmm is not None else torch.bmm

        def forward(self, x, target_embedding, encoder_out, encoder_padding_mask):
            residual = x
            x = (self.in_projection(x) + target_embedding) * math.sqrt(0.5)
            x = self.bmm(x, encoder_out[0])
            if encoder_padding_mask is not None:
                x = x.float().masked_fill(encoder_padding_mask.unsqueeze(1), float("-inf")).type_as(x)
            sz = x.size()
            x = F.softmax(x.view(sz[0] * sz[1], sz[2]), dim=1)
            x = x.view(sz)
            attn_scores = x
            x = self.bmm(x, encoder_out[1])
            s = encoder_out[1].size(1)
            if encoder_padding_mask is None:
                x = x * (s * math.sqrt(1.0 / s))
            else:
                s = s - encoder_padding_mask.type_as(x).sum(dim=1, keepdim=True)  # exclude padding
                s = s.unsqueeze(-1)
                x = x * (s * s.rsqrt())
            x = (self.out_projection(x) + residual) * math.sqrt(0.5)
            return x, attn_scores

    class FConvDecoder(nn.Module):
        def __init__(self, num_embeddings, embed_dim, out_embed_dim, max_positions, convolutions, dropout):
            super().__init__()
            self.dropout_module = nn.Dropout(dropout)
            self.need_attn = True
            convolutions = extend_conv_spec(convolutions)
            in_channels = convolutions[0][0]
            attention = [True] * len(convolutions)
            padding_idx = FC_PAD
            self.embed_tokens = Embedding(num_embeddings, embed_dim, padding_idx)
            self.embed_positions = PositionalEmbedding(max_positions, embed_dim, padding_idx)
            self.fc1 = Linear(embed_dim, in_channels, dropout=dropout)
            self.projections = nn.ModuleList()
            self.convolutions = nn.ModuleList()
            self.attention = nn.ModuleList()
            self.residuals = []
            layer_in_channels = [in_channels]
            for i, (out_channels, kernel_size, residual) in enumerate(convolutions):
                if residual == 0:
                    residual_dim = out_channels
                else:
                    residual_dim = layer_in_channels[-residual]
                self.projections.append(Linear(residual_dim, out_channels)
                                        if residual_dim != out_channels else None)
                self.convolutions.append(LinearizedConv1d(in_channels, out_channels * 2, kernel_size,
                                                          padding=(kernel_size - 1), dropout=dropout))
                self.attention.append(AttentionLayer(out_channels, embed_dim) if attention[i] else None)
                self.residuals.append(residual)
                in_channels = out_channels
                layer_in_channels.append(out_channels)
            self.fc2 = Linear(in_channels, out_embed_dim)
            self.fc3 = Linear(out_embed_dim, num_embeddings, dropout=dropout)

        def forward(self, prev_output_tokens, encoder_out):
            encoder_padding_mask = encoder_out["encoder_padding_mask"]
            encoder_a, encoder_b = encoder_out["encoder_out"]
            encoder_a = encoder_a.transpose(1, 2).contiguous()
            pos_embed = self.embed_positions(prev_output_tokens)
            x = self.embed_tokens(prev_output_tokens)
            x += pos_embed
            x = self.dropout_module(x)
            target_embedding = x
            x = self.fc1(x)
            x = x.transpose(0, 1)  # B x T x C -> T x B x C
            avg_attn_scores = None
            num_attn_layers = len(self.attention)
            residuals = [x]
            for proj, conv, attention, res_layer in zip(self.projections, self.convolutions, self.attention,
                                                        self.residuals):
                if res_layer > 0:
                    residual = residuals[-res_layer]
                    residual = residual if proj is None else proj(residual)
                else:
                    residual = None
                x = self.dropout_module(x)
                x = conv(x)
                x = F.glu(x, dim=2)
                if attention is not None:
                    x = x.transpose(0, 1)
                    x, attn_scores = attention(x, target_embedding, (encoder_a, encoder_b), encoder_padding_mask)
                    if not self.training and self.need_attn:
                        attn_scores = attn_scores / num_attn_layers
                        if avg_attn_scores is None:
                            avg_attn_scores = attn_scores
                        else:
                            avg_attn_scores.add_(attn_scores)
                    x = x.transpose(0, 1)
                if residual is not None:
                    x = (x + residual) * math.sqrt(0.5)
                residuals.append(x)
            x = x.transpose(0, 1)
            x = self.fc2(x)
            x = self.dropout_module(x)
            x = self.fc3(x)
            return x, avg_attn_scores

    class FConvModel(nn.Module):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder
            self.encoder.num_attention_layers = sum(layer is not None for layer in decoder.attention)

        def forward(self, src_tokens, src_lengths, prev_output_tokens):
            encoder_out = self.encoder(src_tokens, src_lengths=src_lengths)
            return self.decoder(prev_output_tokens, encoder_out=encoder_out)

    return FConvModel(FConvEncoder(FC_VOCAB, embed_dim, 16, enc_convs, dropout),
                      FConvDecoder(FC_VOCAB, embed_dim, out_embed_dim, 16, dec_convs, dropout))


def fconv_training(m, weights, steps=4, epsilon=0.1):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, fconv(m), weights)

    def label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=None, reduce=True):
        if target.dim() == lprobs.dim() - 1:
            target = target.unsqueeze(-1)
        nll_loss = -lprobs.gather(dim=-1, index=target)
        smooth_loss = -lprobs.sum(dim=-1, keepdim=True)
        if ignore_index is not None:
            pad_mask = target.eq(ignore_index)
            nll_loss.masked_fill_(pad_mask, 0.0)
            smooth_loss.masked_fill_(pad_mask, 0.0)
        else:
            nll_loss = nll_loss.squeeze(-1)
            smooth_loss = smooth_loss.squeeze(-1)
        if reduce:
            nll_loss = nll_loss.sum()
            smooth_loss = smooth_loss.sum()
        eps_i = epsilon / (lprobs.size(-1) - 1)
        loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
        return loss, nll_loss

    src_tokens = torch.tensor(FC_SRC)
    src_lengths = src_tokens.ne(FC_PAD).sum(1)
    target = torch.tensor(FC_TGT)
    prev_output_tokens = torch.cat([torch.full((3, 1), FC_EOS), target[:, :-1]], 1)
    prev_output_tokens = prev_output_tokens.masked_fill(prev_output_tokens == FC_EOS, FC_EOS)
    opt = optim.SGD(model.parameters(), lr=0.25, momentum=0.99, nesterov=True)
    losses, nlls, norms = [], [], []
    for step in range(steps):
        model.train()
        net_output, _ = model(src_tokens, src_lengths, prev_output_tokens)
        lprobs = F.log_softmax(net_output, dim=-1, dtype=torch.float32)
        loss, nll_loss = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.view(-1), epsilon,
                                                 ignore_index=FC_PAD)
        sample_size = target.ne(FC_PAD).sum()
        opt.zero_grad()
        (loss / sample_size).backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), 0.1))
        opt.step()
        losses.append((loss / sample_size).item())
        nlls.append((nll_loss / sample_size / math.log(2)).item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        encoder_out = model.encoder(src_tokens, src_lengths=src_lengths)
        tokens = torch.full((3, 1), FC_EOS)
        for step in range(4):
            logits, attn = model.decoder(tokens, encoder_out)
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return losses, nlls, norms, grads, tokens, attn


@pytest.mark.filterwarnings("ignore:.*weight_norm.* is deprecated:FutureWarning")
def test_fairseq_convs2s_with_weight_norm_conv_tbc_and_grad_multiply():
    weights = weights_of(fconv)
    ours, theirs = run_both(fconv_training, weights, rtol=1e-4, atol=1e-6)
    attn = ours[5]
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)  # averaged over the attention layers
    assert np.all(attn[1, :, 4:] == 0) and np.all(attn[2, :, 3:] == 0)  # the source padding


# ----------------------------------------------------------------------------------------------
# ESIM for natural-language inference (Chen et al. 2017, as coetaur0/ESIM writes it): its own
# sort_by_seq_lens (``new_tensor(torch.arange(...))``, the restoration index by sorting the sort),
# ``torch.ones(batch, max_length)`` and ``[:, :max_length]`` with a 0-d tensor, masked softmax both ways,
# weighted sums, ``replace_masked`` max pooling, variational RNNDropout, the LSTMs' init by ``apply`` with
# ``orthogonal_`` and the forget-gate bias, ``nn.Embedding(_weight=None)``, trained from the seed's own init
# ----------------------------------------------------------------------------------------------

NLI_PREMISES = [[3, 4, 5, 6, 0, 0, 0], [7, 8, 0, 0, 0, 0, 0], [9, 3, 4, 0, 0, 0, 0]]
NLI_HYPOTHESES = [[5, 6, 0, 0, 0, 0, 0], [8, 9, 3, 4, 7, 0, 0], [4, 0, 0, 0, 0, 0, 0]]
NLI_LABELS = [0, 2, 1]


def esim_program(m, steps=3, dropout=0.0):
    torch, nn, optim = m.torch, m.nn, m.optim

    def sort_by_seq_lens(batch, sequences_lengths, descending=True):
        sorted_seq_lens, sorting_index = sequences_lengths.sort(0, descending=descending)
        sorted_batch = batch.index_select(0, sorting_index)
        idx_range = sequences_lengths.new_tensor(torch.arange(0, len(sequences_lengths)))
        _, reverse_mapping = sorting_index.sort(0, descending=False)
        restoration_index = idx_range.index_select(0, reverse_mapping)
        return sorted_batch, sorted_seq_lens, sorting_index, restoration_index

    def get_mask(sequences_batch, sequences_lengths):
        batch_size = sequences_batch.size()[0]
        max_length = torch.max(sequences_lengths)
        mask = torch.ones(batch_size, max_length, dtype=torch.float)
        mask[sequences_batch[:, :max_length] == 0] = 0.0
        return mask

    def masked_softmax(tensor, mask):
        tensor_shape = tensor.size()
        reshaped_tensor = tensor.view(-1, tensor_shape[-1])
        # Reshape the mask so it matches the size of the input tensor.
        while mask.dim() < tensor.dim():
            mask = mask.unsqueeze(1)
        mask = mask.expand_as(tensor).contiguous().float()
        reshaped_mask = mask.view(-1, mask.size()[-1])
        result = nn.functional.softmax(reshaped_tensor * reshaped_mask, dim=-1)
        result = result * reshaped_mask
        # 1e-13 is added to avoid divisions by zero.
        result = result / (result.sum(dim=-1, keepdim=True) + 1e-13)
        return result.view(*tensor_shape)

    def weighted_sum(tensor, weights, mask):
        weighted_sum = weights.bmm(tensor)
        while mask.dim() < weighted_sum.dim():
            mask = mask.unsqueeze(1)
        mask = mask.transpose(-1, -2)
        mask = mask.expand_as(weighted_sum).contiguous().float()
        return weighted_sum * mask

    def replace_masked(tensor, mask, value):
        mask = mask.unsqueeze(1).transpose(2, 1)
        reverse_mask = 1.0 - mask
        values_to_add = value * reverse_mask
        return tensor * mask + values_to_add

    class RNNDropout(nn.Dropout):
        def forward(self, sequences_batch):
            ones = sequences_batch.data.new_ones(sequences_batch.shape[0], sequences_batch.shape[-1])
            dropout_mask = nn.functional.dropout(ones, self.p, self.training, inplace=False)
            return dropout_mask.unsqueeze(1) * sequences_batch

    class Seq2SeqEncoder(nn.Module):
        def __init__(self, rnn_type, input_size, hidden_size, num_layers=1, bias=True, dropout=0.0,
                     bidirectional=False):
            assert issubclass(rnn_type, nn.RNNBase), "rnn_type must be a class inheriting from torch.nn.RNNBase"
            super(Seq2SeqEncoder, self).__init__()
            self.rnn_type = rnn_type
            self._encoder = rnn_type(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=True,
                                     dropout=dropout, bidirectional=bidirectional)

        def forward(self, sequences_batch, sequences_lengths):
            sorted_batch, sorted_lengths, _, restoration_idx = sort_by_seq_lens(sequences_batch, sequences_lengths)
            packed_batch = nn.utils.rnn.pack_padded_sequence(sorted_batch, sorted_lengths, batch_first=True)
            outputs, _ = self._encoder(packed_batch, None)
            outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True)
            reordered_outputs = outputs.index_select(0, restoration_idx)
            return reordered_outputs

    class SoftmaxAttention(nn.Module):
        def forward(self, premise_batch, premise_mask, hypothesis_batch, hypothesis_mask):
            similarity_matrix = premise_batch.bmm(hypothesis_batch.transpose(2, 1).contiguous())
            prem_hyp_attn = masked_softmax(similarity_matrix, hypothesis_mask)
            hyp_prem_attn = masked_softmax(similarity_matrix.transpose(1, 2).contiguous(), premise_mask)
            attended_premises = weighted_sum(hypothesis_batch, prem_hyp_attn, premise_mask)
            attended_hypotheses = weighted_sum(premise_batch, hyp_prem_attn, hypothesis_mask)
            return attended_premises, attended_hypotheses

    def _init_esim_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight.data)
            nn.init.constant_(module.bias.data, 0.0)
        elif isinstance(module, nn.LSTM):
            nn.init.xavier_uniform_(module.weight_ih_l0.data)
            nn.init.orthogonal_(module.weight_hh_l0.data)
            nn.init.constant_(module.bias_ih_l0.data, 0.0)
            nn.init.constant_(module.bias_hh_l0.data, 0.0)
            hidden_size = module.bias_hh_l0.data.shape[0] // 4
            module.bias_hh_l0.data[hidden_size:(2 * hidden_size)] = 1.0
            if (module.bidirectional):
                nn.init.xavier_uniform_(module.weight_ih_l0_reverse.data)
                nn.init.orthogonal_(module.weight_hh_l0_reverse.data)
                nn.init.constant_(module.bias_ih_l0_reverse.data, 0.0)
                nn.init.constant_(module.bias_hh_l0_reverse.data, 0.0)
                module.bias_hh_l0_reverse.data[hidden_size:(2 * hidden_size)] = 1.0

    class ESIM(nn.Module):
        def __init__(self, vocab_size, embedding_dim, hidden_size, embeddings=None, padding_idx=0, dropout=0.5,
                     num_classes=3, device="cpu"):
            super(ESIM, self).__init__()
            self.vocab_size = vocab_size
            self.embedding_dim = embedding_dim
            self.hidden_size = hidden_size
            self.num_classes = num_classes
            self.dropout = dropout
            self.device = device
            self._word_embedding = nn.Embedding(self.vocab_size, self.embedding_dim, padding_idx=padding_idx,
                                                _weight=embeddings)
            if self.dropout:
                self._rnn_dropout = RNNDropout(p=self.dropout)
            self._encoding = Seq2SeqEncoder(nn.LSTM, self.embedding_dim, self.hidden_size, bidirectional=True)
            self._attention = SoftmaxAttention()
            self._projection = nn.Sequential(nn.Linear(4 * 2 * self.hidden_size, self.hidden_size), nn.ReLU())
            self._composition = Seq2SeqEncoder(nn.LSTM, self.hidden_size, self.hidden_size, bidirectional=True)
            self._classification = nn.Sequential(nn.Dropout(p=self.dropout),
                                                 nn.Linear(2 * 4 * self.hidden_size, self.hidden_size),
                                                 nn.Tanh(),
                                                 nn.Dropout(p=self.dropout),
                                                 nn.Linear(self.hidden_size, self.num_classes))
            # Initialize all weights and biases in the model.
            self.apply(_init_esim_weights)

        def forward(self, premises, premises_lengths, hypotheses, hypotheses_lengths):
            premises_mask = get_mask(premises, premises_lengths).to(self.device)
            hypotheses_mask = get_mask(hypotheses, hypotheses_lengths).to(self.device)
            embedded_premises = self._word_embedding(premises)
            embedded_hypotheses = self._word_embedding(hypotheses)
            if self.dropout:
                embedded_premises = self._rnn_dropout(embedded_premises)
                embedded_hypotheses = self._rnn_dropout(embedded_hypotheses)
            encoded_premises = self._encoding(embedded_premises, premises_lengths)
            encoded_hypotheses = self._encoding(embedded_hypotheses, hypotheses_lengths)
            attended_premises, attended_hypotheses = self._attention(encoded_premises, premises_mask,
                                                                     encoded_hypotheses, hypotheses_mask)
            enhanced_premises = torch.cat([encoded_premises, attended_premises,
                                           encoded_premises - attended_premises,
                                           encoded_premises * attended_premises], dim=-1)
            enhanced_hypotheses = torch.cat([encoded_hypotheses, attended_hypotheses,
                                             encoded_hypotheses - attended_hypotheses,
                                             encoded_hypotheses * attended_hypotheses], dim=-1)
            projected_premises = self._projection(enhanced_premises)
            projected_hypotheses = self._projection(enhanced_hypotheses)
            if self.dropout:
                projected_premises = self._rnn_dropout(projected_premises)
                projected_hypotheses = self._rnn_dropout(projected_hypotheses)
            v_ai = self._composition(projected_premises, premises_lengths)
            v_bj = self._composition(projected_hypotheses, hypotheses_lengths)
            v_a_avg = torch.sum(v_ai * premises_mask.unsqueeze(1).transpose(2, 1), dim=1) \
                / torch.sum(premises_mask, dim=1, keepdim=True)
            v_b_avg = torch.sum(v_bj * hypotheses_mask.unsqueeze(1).transpose(2, 1), dim=1) \
                / torch.sum(hypotheses_mask, dim=1, keepdim=True)
            v_a_max, _ = replace_masked(v_ai, premises_mask, -1e7).max(dim=1)
            v_b_max, _ = replace_masked(v_bj, hypotheses_mask, -1e7).max(dim=1)
            v = torch.cat([v_a_avg, v_a_max, v_b_avg, v_b_max], dim=1)
            logits = self._classification(v)
            probabilities = nn.functional.softmax(logits, dim=-1)
            return logits, probabilities

    torch.manual_seed(0)
    model = ESIM(10, 5, 4, dropout=dropout)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    premises, hypotheses = torch.tensor(NLI_PREMISES), torch.tensor(NLI_HYPOTHESES)
    premises_lengths = (premises != 0).sum(1)
    hypotheses_lengths = (hypotheses != 0).sum(1)
    labels = torch.tensor(NLI_LABELS)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=4e-4)
    losses, accs = [], []
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        logits, probs = model(premises, premises_lengths, hypotheses, hypotheses_lengths)
        loss = criterion(logits, labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        losses.append(loss.item())
        _, out_classes = probs.max(dim=1)
        accs.append((out_classes == labels).sum().item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    return initial, losses, accs, grads, probs


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")
def test_esim_natural_language_inference():
    ours, theirs = run_both(esim_program, rtol=1e-4, atol=1e-6)
    initial = ours[0]
    w_hh = initial["_encoding._encoder.weight_hh_l0"]
    np.testing.assert_allclose(w_hh.T @ w_hh, np.eye(4), atol=1e-5)  # orthogonal_ of a (16, 4) matrix
    assert np.all(initial["_encoding._encoder.bias_hh_l0"][4:8] == 1)
    np.testing.assert_allclose(ours[4].sum(1), 1.0, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")
def test_esim_with_variational_dropout():
    ours, theirs = run_both(esim_program, dropout=0.5, compare=same_dropout_masks(), rtol=1e-4, atol=1e-6)
    assert np.all(np.isfinite(ours[1]))


# ----------------------------------------------------------------------------------------------
# PyTorch's text classification tutorial with fastText's hashed bigrams: a vocabulary by Counter, bigram ids
# hashed into buckets with int64 arithmetic, ``collate_batch`` building EmbeddingBag offsets by
# ``torch.tensor(offsets[:-1]).cumsum(dim=0)``, ``random_split`` and a shuffling DataLoader from the seed,
# SGD with clip_grad_norm_(0.1) and StepLR stepped only when validation accuracy drops, and a TF-IDF
# variant weighting each token through ``per_sample_weights``
# ----------------------------------------------------------------------------------------------

NEWS = [(1, "stocks rally as markets close higher"), (2, "team wins the final match"),
        (3, "new phone chip is faster"), (1, "markets fall on rate fears"), (2, "striker scores twice in final"),
        (3, "chip maker unveils faster phone"), (1, "rate cut lifts stocks"), (2, "coach praises team after match"),
        (3, "software update makes phone faster"), (1, "bond markets rally"), (2, "the match ends in a draw"),
        (3, "new software for chip design"), (1, "stocks close lower"), (2, "team loses final"),
        (3, "phone maker cuts price"), (1, "fears of rate rise hit markets")]


def text_classification(m, emb_dim=6, buckets=17, epochs=3, tfidf=False):
    torch, nn, data = m.torch, m.nn, m.data
    from collections import Counter

    def tokenizer(line):
        return line.lower().split()

    counter = Counter()
    for _, line in NEWS:
        counter.update(tokenizer(line))
    itos = ["<unk>"] + sorted(counter, key=lambda w: (-counter[w], w))
    stoi = {w: i for i, w in enumerate(itos)}
    document_frequency = Counter(w for _, line in NEWS for w in set(tokenizer(line)))

    def text_pipeline(x):
        ids = [stoi.get(token, 0) for token in tokenizer(x)]
        unigrams = torch.tensor(ids, dtype=torch.int64)
        # fastText's bigrams, hashed into a few extra buckets after the vocabulary
        bigrams = (unigrams[:-1] * 116049371 + unigrams[1:]) % buckets + len(itos)
        return torch.cat([unigrams, bigrams])

    def idf_pipeline(x):
        tokens = tokenizer(x)
        weights = [math.log(len(NEWS) / document_frequency[t]) + 1.0 for t in tokens]
        return torch.tensor(weights + [1.0] * (len(tokens) - 1))

    def label_pipeline(x):
        return int(x) - 1

    def collate_batch(batch):
        label_list, text_list, weight_list, offsets = [], [], [], [0]
        for (_label, _text) in batch:
            label_list.append(label_pipeline(_label))
            processed_text = text_pipeline(_text)
            text_list.append(processed_text)
            weight_list.append(idf_pipeline(_text))
            offsets.append(processed_text.size(0))
        label_list = torch.tensor(label_list, dtype=torch.int64)
        offsets = torch.tensor(offsets[:-1]).cumsum(dim=0)
        text_list = torch.cat(text_list)
        return label_list, text_list, offsets, torch.cat(weight_list)

    class TextClassificationModel(nn.Module):
        def __init__(self, vocab_size, embed_dim, num_class):
            super(TextClassificationModel, self).__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="sum" if tfidf else "mean", sparse=False)
            self.fc = nn.Linear(embed_dim, num_class)
            self.init_weights()

        def init_weights(self):
            initrange = 0.5
            self.embedding.weight.data.uniform_(-initrange, initrange)
            self.fc.weight.data.uniform_(-initrange, initrange)
            self.fc.bias.data.zero_()

        def forward(self, text, offsets, weights=None):
            embedded = self.embedding(text, offsets, per_sample_weights=weights if tfidf else None)
            return self.fc(embedded)

    torch.manual_seed(0)
    model = TextClassificationModel(len(itos) + buckets, emb_dim, 3)

    def train(dataloader):
        model.train()
        total_acc, total_count = 0, 0
        for idx, (label, text, offsets, weights) in enumerate(dataloader):
            optimizer.zero_grad()
            predicted_label = model(text, offsets, weights)
            loss = criterion(predicted_label, label)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            total_acc += (predicted_label.argmax(1) == label).sum().item()
            total_count += label.size(0)
            losses.append(loss.item())

    def evaluate(dataloader):
        model.eval()
        total_acc, total_count = 0, 0
        with torch.no_grad():
            for idx, (label, text, offsets, weights) in enumerate(dataloader):
                predicted_label = model(text, offsets, weights)
                total_acc += (predicted_label.argmax(1) == label).sum().item()
                total_count += label.size(0)
        return total_acc / total_count

    criterion = nn.CrossEntropyLoss()
    optimizer = m.optim.SGD(model.parameters(), lr=5.0)
    scheduler = m.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.1)
    total_accu = None
    num_train = int(len(NEWS) * 0.75)
    split_train_, split_valid_ = data.random_split(NEWS, [num_train, len(NEWS) - num_train])
    train_dataloader = data.DataLoader(split_train_, batch_size=4, shuffle=True, collate_fn=collate_batch)
    valid_dataloader = data.DataLoader(split_valid_, batch_size=4, shuffle=True, collate_fn=collate_batch)
    losses, accuracies, lrs = [], [], []
    for epoch in range(1, epochs + 1):
        train(train_dataloader)
        accu_val = evaluate(valid_dataloader)
        if total_accu is not None and total_accu > accu_val:
            scheduler.step()
        else:
            total_accu = accu_val
        accuracies.append(accu_val)
        lrs.append(optimizer.param_groups[0]["lr"])
    label, text, offsets, weights = collate_batch(NEWS[:3])
    return (losses, accuracies, lrs, list(split_valid_.indices), text, offsets, model.embedding.weight,
            model.fc.weight, model.embedding.weight.grad, len(itos))


@pytest.mark.parametrize("tfidf", [False, True])
def test_text_classification_tutorial_with_hashed_bigrams(tfidf):
    ours, theirs = run_both(text_classification, tfidf=tfidf, rtol=1e-4, atol=1e-6)
    losses, accuracies, lrs, valid, text, offsets = ours[:6]
    assert offsets.tolist() == [0, 11, 20]  # six words and five bigrams, then five and four
    n_vocab = ours[-1]
    unigrams, bigrams = text[:6].astype(np.int64), text[6:11]
    np.testing.assert_array_equal(bigrams, (unigrams[:-1] * 116049371 + unigrams[1:]) % 17 + n_vocab)
    assert len(valid) == 4 and lrs[0] == 5.0


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


# ----------------------------------------------------------------------------------------------
# Salesforce's original AWD-LSTM (salesforce/awd-lstm-lm): WeightDrop deleting ``weight_hh_l0`` straight
# from the LSTM's ``_parameters`` and registering ``weight_hh_l0_raw`` in its place, DropConnect (plain or
# variational, by ``Variable(torch.ones(...))``), ``embedded_dropout`` (``weight.data.new().resize_(...)
# .bernoulli_``), LockedDropout, ``init_hidden`` by ``weight.new(...).zero_()``, ``repackage_hidden``,
# variable-length BPTT scaling the learning rate in ``param_groups``, AR/TAR, and the switch to ASGD whose
# averaged weights (``optimizer.state[prm]['ax']``) are swapped in by ``prm.data = ...`` for evaluation
# ----------------------------------------------------------------------------------------------


def salesforce_awd_lstm(m, ntoken=12, ninp=6, nhid=8, nlayers=2, dropout=0.0, dropouth=0.0, dropouti=0.0,
                        dropoute=0.0, wdrop=1e-9, variational=False, as_written=False):
    torch, nn, F = m.torch, m.nn, m.F
    Parameter, Variable = nn.Parameter, torch.autograd.Variable

    class WeightDrop(nn.Module):
        def __init__(self, module, weights, dropout=0, variational=False):
            super(WeightDrop, self).__init__()
            self.module = module
            self.weights = weights
            self.dropout = dropout
            self.variational = variational
            self._setup()

        def widget_demagnetizer_y2k_edition(*args, **kwargs):
            # We need to replace flatten_parameters with a nothing function
            return

        def _setup(self):
            # Terrible temporary solution to an issue regarding compacting weights re: CUDNN RNN
            if issubclass(type(self.module), nn.RNNBase):
                self.module.flatten_parameters = self.widget_demagnetizer_y2k_edition

            for name_w in self.weights:
                w = getattr(self.module, name_w)
                del self.module._parameters[name_w]
                self.module.register_parameter(name_w + '_raw', Parameter(w.data))

        def _setweights(self):
            for name_w in self.weights:
                raw_w = getattr(self.module, name_w + '_raw')
                w = None
                if self.variational:
                    mask = torch.autograd.Variable(torch.ones(raw_w.size(0), 1))
                    if raw_w.is_cuda:
                        mask = mask.cuda()
                    mask = F.dropout(mask, p=self.dropout, training=True)
                    w = mask.expand_as(raw_w) * raw_w
                elif self.training or as_written:
                    w = F.dropout(raw_w, p=self.dropout, training=self.training)
                else:
                    # (the usual repair: evaluating, F.dropout hands back the raw Parameter itself, which
                    # setattr registers on the LSTM, and the next training step's tensor is then refused)
                    w = raw_w.clone()
                setattr(self.module, name_w, w)

        def forward(self, *args):
            self._setweights()
            return self.module.forward(*args)

    def embedded_dropout(embed, words, dropout=0.1, scale=None):
        if dropout:
            mask = embed.weight.data.new().resize_((embed.weight.size(0), 1)).bernoulli_(1 - dropout) \
                .expand_as(embed.weight) / (1 - dropout)
            masked_embed_weight = mask * embed.weight
        else:
            masked_embed_weight = embed.weight
        if scale:
            masked_embed_weight = scale.expand_as(masked_embed_weight) * masked_embed_weight
        padding_idx = embed.padding_idx
        if padding_idx is None:
            padding_idx = -1
        X = F.embedding(words, masked_embed_weight, padding_idx, embed.max_norm, embed.norm_type,
                                          embed.scale_grad_by_freq, embed.sparse)
        return X

    class LockedDropout(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, x, dropout=0.5):
            if not self.training or not dropout:
                return x
            m = x.data.new(1, x.size(1), x.size(2)).bernoulli_(1 - dropout)
            mask = Variable(m, requires_grad=False) / (1 - dropout)
            mask = mask.expand_as(x)
            return mask * x

    class RNNModel(nn.Module):
        """Container module with an encoder, a recurrent module, and a decoder."""

        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, dropouth=0.5, dropouti=0.5,
                     dropoute=0.1, wdrop=0, tie_weights=False):
            super(RNNModel, self).__init__()
            self.lockdrop = LockedDropout()
            self.idrop = nn.Dropout(dropouti)
            self.hdrop = nn.Dropout(dropouth)
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            assert rnn_type in ['LSTM'], 'RNN type is not supported'
            self.rnns = [nn.LSTM(ninp if l == 0 else nhid, nhid if l != nlayers - 1 else
                                       (ninp if tie_weights else nhid), 1, dropout=0) for l in range(nlayers)]
            if wdrop:
                self.rnns = [WeightDrop(rnn, ['weight_hh_l0'], dropout=wdrop, variational=variational)
                             for rnn in self.rnns]
            self.rnns = nn.ModuleList(self.rnns)
            self.decoder = nn.Linear(nhid, ntoken)
            if tie_weights:
                self.decoder.weight = self.encoder.weight
            self.init_weights()
            self.rnn_type = rnn_type
            self.ninp = ninp
            self.nhid = nhid
            self.nlayers = nlayers
            self.dropout = dropout
            self.dropouti = dropouti
            self.dropouth = dropouth
            self.dropoute = dropoute
            self.tie_weights = tie_weights

        def init_weights(self):
            initrange = 0.1
            self.encoder.weight.data.uniform_(-initrange, initrange)
            self.decoder.bias.data.fill_(0)
            self.decoder.weight.data.uniform_(-initrange, initrange)

        def forward(self, input, hidden, return_h=False):
            emb = embedded_dropout(self.encoder, input, dropout=self.dropoute if self.training else 0)
            emb = self.lockdrop(emb, self.dropouti)
            raw_output = emb
            new_hidden = []
            raw_outputs = []
            outputs = []
            for l, rnn in enumerate(self.rnns):
                current_input = raw_output
                raw_output, new_h = rnn(raw_output, hidden[l])
                new_hidden.append(new_h)
                raw_outputs.append(raw_output)
                if l != self.nlayers - 1:
                    raw_output = self.lockdrop(raw_output, self.dropouth)
                    outputs.append(raw_output)
            hidden = new_hidden
            output = self.lockdrop(raw_output, self.dropout)
            outputs.append(output)
            result = output.view(output.size(0) * output.size(1), output.size(2))
            if return_h:
                return result, hidden, raw_outputs, outputs
            return result, hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters()).data
            return [(Variable(weight.new(1, bsz, self.nhid if l != self.nlayers - 1 else
                                         (self.ninp if self.tie_weights else self.nhid)).zero_()),
                     Variable(weight.new(1, bsz, self.nhid if l != self.nlayers - 1 else
                                         (self.ninp if self.tie_weights else self.nhid)).zero_()))
                    for l in range(self.nlayers)]

    return RNNModel('LSTM', ntoken, ninp, nhid, nlayers, dropout, dropouth, dropouti, dropoute, wdrop,
                    tie_weights=True)


def salesforce_awd_lstm_training(m, weights, epochs=2, bptt=4, variational=False, drop=0.0, as_written=False):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = salesforce_awd_lstm(m, dropout=0.4 * drop, dropouth=0.25 * drop, dropouti=0.4 * drop,
                                dropoute=0.1 * drop, wdrop=0.5 * drop or 1e-9, variational=variational,
                                as_written=as_written)
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.RandomState(141)
    torch.manual_seed(141)
    stream = torch.tensor(np.random.default_rng(9).integers(0, 12, (26, 2)))  # batchified: (T, bsz)
    criterion = nn.CrossEntropyLoss()

    def repackage_hidden(h):
        """Wraps hidden states in new Tensors, to detach them from their history."""
        if isinstance(h, torch.Tensor):
            return h.detach()
        else:
            return tuple(repackage_hidden(v) for v in h)

    def get_batch(source, i, args_bptt, seq_len=None):
        seq_len = min(seq_len if seq_len else args_bptt, len(source) - 1 - i)
        data = source[i:i + seq_len]
        target = source[i + 1:i + 1 + seq_len].view(-1)
        return data, target

    def evaluate(data_source, batch_size=2):
        model.eval()
        total_loss = 0
        hidden = model.init_hidden(batch_size)
        for i in range(0, data_source.size(0) - 1, bptt):
            data, targets = get_batch(data_source, i, bptt)
            output, hidden = model(data, hidden)
            total_loss += len(data) * criterion(model.decoder(output), targets).data
            hidden = repackage_hidden(hidden)
        return total_loss.item() / len(data_source)

    params = list(model.parameters())
    optimizer = optim.SGD(params, lr=2.0, weight_decay=1.2e-6)
    losses, lrs, val_losses = [], [], []
    for epoch in range(epochs):
        if epoch == 1:
            optimizer = optim.ASGD(model.parameters(), lr=2.0, t0=0, lambd=0., weight_decay=1.2e-6)
        model.train()
        hidden = model.init_hidden(2)
        batch, i = 0, 0
        while i < stream.size(0) - 1 - 1:
            bptt_ = bptt if rng.random_sample() < 0.95 else bptt / 2.
            # Prevent excessively small or negative sequence lengths
            seq_len = max(2, int(rng.normal(bptt_, 1)))
            lr2 = optimizer.param_groups[0]['lr']
            optimizer.param_groups[0]['lr'] = lr2 * seq_len / bptt
            model.train()
            data, targets = get_batch(stream, i, bptt, seq_len=seq_len)
            hidden = repackage_hidden(hidden)
            optimizer.zero_grad()
            output, hidden, rnn_hs, dropped_rnn_hs = model(data, hidden, return_h=True)
            raw_loss = criterion(model.decoder(output), targets)
            loss = raw_loss
            # Activiation Regularization
            loss = loss + sum(2.0 * dropped_rnn_h.pow(2).mean() for dropped_rnn_h in dropped_rnn_hs[-1:])
            # Temporal Activation Regularization (slowness)
            loss = loss + sum(1.0 * (rnn_h[1:] - rnn_h[:-1]).pow(2).mean() for rnn_h in rnn_hs[-1:])
            loss.backward()
            nn.utils.clip_grad_norm_(params, 0.25)
            optimizer.step()
            optimizer.param_groups[0]['lr'] = lr2
            losses.append(raw_loss.item())
            lrs.append(lr2 * seq_len / bptt)
            batch += 1
            i += seq_len
        if 't0' in optimizer.param_groups[0]:
            tmp = {}
            for prm in model.parameters():
                tmp[prm] = prm.data.clone()
                prm.data = optimizer.state[prm]['ax'].clone()
            val_losses.append(evaluate(stream))
            for prm in model.parameters():
                prm.data = tmp[prm].clone()
        else:
            val_losses.append(evaluate(stream))
    names = sorted(n for n, _ in model.named_parameters())
    return (losses, lrs, val_losses, names, model.rnns[0].module.weight_hh_l0_raw,
            model.rnns[1].module.weight_hh_l0, model.decoder.weight)


def test_salesforce_awd_lstm_weight_drop_and_asgd():
    weights = weights_of(salesforce_awd_lstm)
    ours, theirs = run_both(salesforce_awd_lstm_training, weights, rtol=1e-4, atol=1e-6)
    names = ours[3]
    # the raw weight is the parameter; the dropped one the LSTM computes with is not
    assert "rnns.0.module.weight_hh_l0_raw" in names and "rnns.0.module.weight_hh_l0" not in names
    assert all(np.isfinite(ours[0]))


def test_salesforce_weight_drop_as_written_fails_after_evaluating_as_pytorch():
    # with PyTorch >= 0.4 the original WeightDrop registers the raw Parameter as 'weight_hh_l0' when evaluating,
    # and the next training step's dropped tensor is refused: the same TypeError, in the same words
    weights = weights_of(salesforce_awd_lstm)
    for modules in (OURS, pytorch()) if pytorch() is not None else (OURS,):
        with pytest.raises(TypeError, match=r"cannot assign 'torch.FloatTensor' as parameter 'weight_hh_l0' "
                                            r"\(torch.nn.Parameter or None expected\)"):
            salesforce_awd_lstm_training(modules, weights, as_written=True)


@pytest.mark.parametrize("variational", [False, True])
def test_salesforce_awd_lstm_with_its_dropouts(variational):
    weights = weights_of(salesforce_awd_lstm)
    ours, theirs = run_both(salesforce_awd_lstm_training, weights, variational=variational, drop=1.0,
                            compare=same_dropout_masks(), rtol=1e-4, atol=1e-6)
    assert all(np.isfinite(ours[0]))


# ----------------------------------------------------------------------------------------------
# MAML over an LSTM intent classifier as learn2learn writes it (``clone_module``: ``clone.__dict__ =
# module.__dict__.copy()``, ``clone._parameters = clone._parameters.copy()`` then cloned tensors written
# into it; ``update_module``: ``module._parameters[key] = p + p.update``, and ``module._apply(lambda x: x)``
# to rebuild an RNN's flat weights), second-order through ``autograd.grad(create_graph=True)``, tasks of
# few-shot sentence classification, Adam on the meta-parameters
# ----------------------------------------------------------------------------------------------

INTENT_TASKS = [  # (support sentences, support labels, query sentences, query labels), token ids 1..9
    ([[1, 2, 3], [4, 5, 0], [1, 3, 0], [6, 5, 4]], [0, 1, 0, 1], [[2, 1, 3], [5, 4, 6]], [0, 1]),
    ([[7, 8, 0], [9, 2, 1], [8, 7, 7], [1, 9, 0]], [1, 0, 1, 0], [[7, 7, 8], [2, 9, 0]], [1, 0]),
    ([[3, 3, 5], [6, 1, 0], [5, 3, 0], [1, 6, 6]], [0, 1, 0, 1], [[3, 5, 5], [6, 6, 1]], [0, 1]),
]


def intent_classifier(m):
    nn = m.nn

    class IntentLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4, padding_idx=0)
            self.lstm = nn.LSTM(4, 5, batch_first=True)
            self.head = nn.Linear(5, 2)

        def forward(self, tokens):
            out, (h, c) = self.lstm(self.embed(tokens))
            return self.head(h[-1])

    return IntentLSTM()


def learn2learn_maml(m, weights, meta_steps=2, adaptation_steps=2, fast_lr=0.5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def clone_module(module, memo=None):
        if memo is None:
            memo = {}
        if not isinstance(module, nn.Module):
            return module
        clone = module.__new__(type(module))
        clone.__dict__ = module.__dict__.copy()
        clone._parameters = clone._parameters.copy()
        clone._buffers = clone._buffers.copy()
        clone._modules = clone._modules.copy()
        # Second, re-write all parameters
        if hasattr(clone, '_parameters'):
            for param_key in module._parameters:
                if module._parameters[param_key] is not None:
                    param = module._parameters[param_key]
                    param_ptr = param.data_ptr
                    if param_ptr in memo:
                        clone._parameters[param_key] = memo[param_ptr]
                    else:
                        cloned = param.clone()
                        clone._parameters[param_key] = cloned
                        memo[param_ptr] = cloned
        # Third, handle the buffers if necessary
        if hasattr(clone, '_buffers'):
            for buffer_key in module._buffers:
                if clone._buffers[buffer_key] is not None and clone._buffers[buffer_key].requires_grad:
                    buff = module._buffers[buffer_key]
                    buff_ptr = buff.data_ptr
                    if buff_ptr in memo:
                        clone._buffers[buffer_key] = memo[buff_ptr]
                    else:
                        cloned = buff.clone()
                        clone._buffers[buffer_key] = cloned
                        memo[buff_ptr] = cloned
        # Then, recurse for each submodule
        if hasattr(clone, '_modules'):
            for module_key in clone._modules:
                clone._modules[module_key] = clone_module(module._modules[module_key], memo=memo)
        # Finally, rebuild the flattened parameters for RNNs
        if hasattr(clone, 'flatten_parameters'):
            clone = clone._apply(lambda x: x)
        return clone

    def update_module(module, updates=None, memo=None):
        if memo is None:
            memo = {}
        if updates is not None:
            params = list(module.parameters())
            if not len(updates) == len(list(params)):
                raise ValueError('WARNING:update_module(): Parameters and updates have different length.')
            for p, g in zip(params, updates):
                p.update = g
        # Update the params
        for param_key in module._parameters:
            p = module._parameters[param_key]
            if p in memo:
                module._parameters[param_key] = memo[p]
            else:
                if p is not None and hasattr(p, 'update') and p.update is not None:
                    updated = p + p.update
                    p.update = None
                    memo[p] = updated
                    module._parameters[param_key] = updated
        # Then, recurse for each submodule
        for module_key in module._modules:
            module._modules[module_key] = update_module(module._modules[module_key], updates=None, memo=memo)
        # Finally, rebuild the flattened parameters for RNNs
        if hasattr(module, 'flatten_parameters'):
            module._apply(lambda x: x)
        return module

    def maml_update(model, lr, grads=None):
        if grads is not None:
            params = list(model.parameters())
            updates = [None for _ in range(len(params))]
            for i, g in enumerate(grads):
                if g is not None:
                    updates[i] = -lr * g
            return update_module(model, updates=updates)
        return update_module(model)

    model = load(m, intent_classifier(m), weights)
    opt = optim.Adam(model.parameters(), lr=0.01)
    meta_losses, adapted_logits = [], []
    for iteration in range(meta_steps):
        opt.zero_grad()
        meta_loss = 0.0
        for support, support_y, query, query_y in INTENT_TASKS:
            learner = clone_module(model)
            support, support_y = torch.tensor(support), torch.tensor(support_y)
            for step in range(adaptation_steps):
                train_error = F.cross_entropy(learner(support), support_y)
                grads = torch.autograd.grad(train_error, list(learner.parameters()), retain_graph=True,
                                            create_graph=True, allow_unused=True)
                learner = maml_update(learner, fast_lr, grads)
            logits = learner(torch.tensor(query))
            adapted_logits.append(logits)
            meta_loss = meta_loss + F.cross_entropy(logits, torch.tensor(query_y))
        (meta_loss / len(INTENT_TASKS)).backward()
        opt.step()
        meta_losses.append(meta_loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    # the adapted learner's weights differ from the meta-parameters it was cloned from
    moved = (learner.head.weight - model.head.weight).abs().sum()
    return meta_losses, adapted_logits, grads, moved, isinstance(learner.head.weight, nn.Parameter)


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_learn2learn_maml_over_an_lstm_intent_classifier():
    weights = weights_of(intent_classifier)
    ours, theirs = run_both(learn2learn_maml, weights, rtol=1e-4, atol=1e-6)
    meta_losses, adapted_logits, grads, moved, still_a_parameter = ours
    assert moved > 0 and still_a_parameter is False
    # second order: the LSTM's recurrent weights get a meta-gradient through the adaptation steps
    assert np.abs(grads["lstm.weight_hh_l0"]).sum() > 0


# ----------------------------------------------------------------------------------------------
# a hierarchical attention network (Yang et al. 2016) as the popular PyTorch ports write it: documents of
# sentences flattened to (docs × sentences, words), the empty padding sentences kept out of the word-level
# GRU by packing only the non-empty ones (``lengths > 0`` selection, ``pack_padded_sequence(enforce_sorted=
# False)``, ``index_copy`` back into a zero tensor), attention against learnt context vectors with masks at
# both levels, and the attention weights returned for inspection
# ----------------------------------------------------------------------------------------------

HAN_DOCS = [[[3, 4, 5], [6, 2, 0], [0, 0, 0]],
            [[7, 8, 9], [2, 3, 0], [4, 0, 0]],
            [[5, 5, 0], [0, 0, 0], [0, 0, 0]]]
HAN_LABELS = [0, 1, 0]


def han(m, emb=5, word_hid=4, sent_hid=3, n_classes=2):
    torch, nn, F = m.torch, m.nn, m.F

    class AttentionPool(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.proj = nn.Linear(dim, dim)
            self.context = nn.Parameter(torch.empty(dim).uniform_(-0.1, 0.1))

        def forward(self, h, mask):
            u = torch.tanh(self.proj(h))
            scores = (u @ self.context).masked_fill(~mask, float("-inf"))
            alpha = torch.softmax(scores, dim=-1)
            alpha = torch.nan_to_num(alpha)  # a row with nothing to attend to (an empty sentence) stays zero
            return (alpha.unsqueeze(-1) * h).sum(dim=-2), alpha

    class HAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(10, emb, padding_idx=0)
            self.word_rnn = nn.GRU(emb, word_hid, batch_first=True, bidirectional=True)
            self.word_attn = AttentionPool(2 * word_hid)
            self.sent_rnn = nn.GRU(2 * word_hid, sent_hid, batch_first=True, bidirectional=True)
            self.sent_attn = AttentionPool(2 * sent_hid)
            self.fc = nn.Linear(2 * sent_hid, n_classes)

        def forward(self, docs):
            n_docs, n_sents, n_words = docs.shape
            words = docs.view(-1, n_words)
            word_lengths = (words != 0).sum(-1)
            nonempty = (word_lengths > 0).nonzero(as_tuple=True)[0]
            packed = nn.utils.rnn.pack_padded_sequence(self.embedding(words[nonempty]), word_lengths[nonempty],
                                                       batch_first=True, enforce_sorted=False)
            out, _ = self.word_rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=n_words)
            hidden = torch.zeros(words.size(0), n_words, out.size(-1)).index_copy(0, nonempty, out)
            sentences, word_alpha = self.word_attn(hidden, words != 0)
            sentences = sentences.view(n_docs, n_sents, -1)
            sent_lengths = (word_lengths.view(n_docs, n_sents) > 0).sum(-1)
            packed = nn.utils.rnn.pack_padded_sequence(sentences, sent_lengths, batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.sent_rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=n_sents)
            sent_mask = torch.arange(n_sents)[None, :] < sent_lengths[:, None]
            doc, sent_alpha = self.sent_attn(out, sent_mask)
            return self.fc(doc), word_alpha.view(n_docs, n_sents, n_words), sent_alpha

    return HAN()


def han_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, han(m), weights)
    docs, labels = torch.tensor(HAN_DOCS), torch.tensor(HAN_LABELS)
    opt = optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for step in range(steps):
        logits, word_alpha, sent_alpha = model(docs)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    return losses, grads, word_alpha, sent_alpha, logits


def test_hierarchical_attention_network_with_empty_sentences():
    weights = weights_of(han)
    ours, theirs = run_both(han_training, weights, rtol=1e-4, atol=1e-6)
    losses, grads, word_alpha, sent_alpha = ours[:4]
    docs = np.array(HAN_DOCS)
    np.testing.assert_allclose(word_alpha.sum(-1), (docs != 0).any(-1).astype(np.float32), rtol=1e-5)
    np.testing.assert_allclose(sent_alpha.sum(-1), 1.0, rtol=1e-5)
    assert np.all(sent_alpha[2, 1:] == 0) and np.all(word_alpha[docs == 0] == 0)


# ----------------------------------------------------------------------------------------------
# focused checks of the fixes the programs above found
# ----------------------------------------------------------------------------------------------


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


def nn_of(T):
    return OURS.nn if T.__name__ == "autograd" else T.nn


def test_packed_sequence_built_from_its_sorted_indices_derives_the_inverse(T):
    # PackedSequence(embedding(packed.data), packed.batch_sizes, packed.sorted_indices): padding it back must
    # restore the caller's order (it came back sorted by length when the inverse stayed None)
    rnn_utils = nn_of(T).utils.rnn
    packed = rnn_utils.pack_sequence([T.tensor([3, 1, 2]), T.tensor([4]), T.tensor([5, 6])], enforce_sorted=False)
    rebuilt = rnn_utils.PackedSequence(packed.data * 10, packed.batch_sizes, packed.sorted_indices)
    assert rebuilt.unsorted_indices.tolist() == [0, 2, 1]
    padded, lengths = rnn_utils.pad_packed_sequence(rebuilt, batch_first=True)
    assert padded.tolist() == [[30, 10, 20], [40, 0, 0], [50, 60, 0]] and lengths.tolist() == [3, 1, 2]
    # the older form, a (data, batch_sizes) pair, and no permutation at all
    pair = rnn_utils.PackedSequence((packed.data, packed.batch_sizes), sorted_indices=packed.sorted_indices)
    assert pair.batch_sizes.tolist() == [3, 2, 1] and pair.unsorted_indices.tolist() == [0, 2, 1]
    bare = rnn_utils.PackedSequence(packed.data, packed.batch_sizes)
    assert bare.sorted_indices is None and bare.unsorted_indices is None
    assert type(bare._replace(data=bare.data + 1)) is rnn_utils.PackedSequence


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
def test_dropout_between_layers_of_a_packed_rnn_draws_over_the_packed_rows(T, mode):
    # PyTorch drops the packed data (one draw per real step, in packed order), not a padded (T, B, H) layout:
    # the same seed gives the same masks as dropping the first layer's packed output by hand
    nn = nn_of(T)
    T.manual_seed(0)
    two = getattr(nn, mode)(3, 4, num_layers=2, dropout=0.5)
    first, second = getattr(nn, mode)(3, 4), getattr(nn, mode)(4, 4)
    with T.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(first, name + "_l0").copy_(getattr(two, name + "_l0"))
            getattr(second, name + "_l0").copy_(getattr(two, name + "_l1"))
    x = T.tensor(np.random.default_rng(0).standard_normal((5, 3, 3)).astype(np.float32))
    packed = nn.utils.rnn.pack_padded_sequence(x, [2, 5, 3], enforce_sorted=False)
    T.manual_seed(7)
    output = two(packed)[0]
    hidden = first(packed)[0]
    T.manual_seed(7)
    dropped = hidden._replace(data=nn.functional.dropout(hidden.data, 0.5))
    np.testing.assert_allclose(output.data.detach().numpy(), second(dropped)[0].data.detach().numpy(), rtol=1e-6,
                               atol=1e-6)


def test_legacy_new_of_a_tensor_is_an_alias(T):
    # fairseq's GradMultiply returns ``x.new(x)``: PyTorch's legacy constructor given a tensor aliases it (the
    # same storage, and in the graph as an alias), it does not copy
    x = T.ones(2, 3, requires_grad=True) * 2
    y = x.new(x)
    y.detach()[0, 0] = 5.0
    assert x[0, 0].item() == 5.0
    assert y.requires_grad and y.grad_fn is not None


def test_writes_into_a_modules_registries_are_what_it_computes_with(T):
    # learn2learn and higher write module._parameters directly; AWD-LSTM deletes from it; ModuleDict's del
    nn = nn_of(T)
    linear = nn.Linear(2, 1)
    with T.no_grad():
        linear.weight.fill_(1.0)
        linear.bias.fill_(0.0)
    linear._parameters["weight"] = linear.weight * 3
    assert linear(T.ones(1, 2)).item() == 6.0 and linear.weight.grad_fn is not None
    lstm = nn.LSTM(2, 3)
    del lstm._parameters["weight_hh_l0"]
    assert not hasattr(lstm, "weight_hh_l0")
    modules = nn.ModuleDict({"a": nn.ReLU(), "b": nn.Tanh()})
    del modules["a"]
    assert not hasattr(modules, "a")
    norm = nn.BatchNorm1d(2)
    norm._buffers["extra"] = T.ones(1)
    assert "extra" in norm.state_dict() and norm.extra.tolist() == [1.0]
    norm._buffers.pop("extra")
    assert "extra" not in norm.state_dict() and not hasattr(norm, "extra")
    # a registry replaced by a copy (learn2learn's clone_module) still decides what the module computes with
    clone = linear.__new__(type(linear))
    clone.__dict__ = linear.__dict__.copy()
    clone._parameters = clone._parameters.copy()
    clone._parameters["bias"] = T.full((1,), 10.0)
    assert clone(T.ones(1, 2)).item() == 16.0 and linear(T.ones(1, 2)).item() == 6.0
    # and so does one that came through pickling and deepcopy
    again = copy.deepcopy(nn.Linear(2, 1))
    again._parameters["weight"] = nn.Parameter(T.ones(1, 2))
    again._parameters["bias"] = nn.Parameter(T.full((1,), -2.0))
    assert again(T.ones(1, 2)).item() == 0.0
    restored = pickle.loads(pickle.dumps(nn.Linear(2, 1)))
    restored._parameters["weight"] = nn.Parameter(T.zeros(1, 2))
    restored._parameters["bias"] = nn.Parameter(T.ones(1))
    assert restored(T.ones(1, 2)).item() == 1.0


def test_copying_a_tensor_by_a_constructor_warns_in_pytorchs_words(T):
    """torch.tensor(t) and t.new_tensor(t) each name themselves in the advice to use detach().clone()."""
    import warnings

    for make, call in ((lambda t: T.tensor(t), "torch.tensor(sourceTensor)"),
                       (lambda t: t.new_tensor(t), "tensor.new_tensor(sourceTensor)")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            copy = make(T.ones(2))
        assert [str(w.message).endswith(f"rather than {call}.") for w in caught] == [True]
        assert copy.tolist() == [1.0, 1.0]
