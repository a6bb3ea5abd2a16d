# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Sequence-to-sequence training and decoding as PyTorch users write them (see tests/pytorch_programs.py), each run
on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy, brute force and
invariants; what tests/test_programs_probe4_sequence.py does not already cover. Encoder-decoders and their training
loops: PyTorch's seq2seq tutorial in both its versions (the batched EncoderRNN/AttnDecoderRNN with Bahdanau attention
and ``topk`` decoding; the older one-token-at-a-time loop with random teacher forcing, ``loss +=`` over steps and an
early break on EOS); bentrevett's packed bidirectional GRU encoder with a masked attention decoder; scheduled
sampling with ``clip_grad_norm_`` on a two-layer LSTM decoder."""

import math
import random

import numpy as np

from .pytorch_programs import run_both

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
