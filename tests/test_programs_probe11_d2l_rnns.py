# ruff: noqa: B007, E501, E721, F841, UP034  (the programs are kept as the book writes them)
"""d2l.ai (PyTorch edition) programs, written as the book writes them with its helpers inlined, run on chainrule and
on PyTorch (see tests/pytorch_programs.py), comparing losses, gradients and parameters. An RNN from scratch with
one-hot inputs and global-norm ``grad_clipping``; GRU and LSTM from scratch against ``nn.GRU``/``nn.LSTM`` (deep,
bidirectional); a GRU seq2seq (``_flat_weights_names`` init, ``swapaxes``) with and without a Bahdanau decoder."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# RNN from scratch: one-hot inputs, gradient clipping by the global norm, perplexity
# ----------------------------------------------------------------------------------------------


def rnn_scratch(m):
    torch, nn, F = m.torch, m.nn, m.F
    vocab_size, num_hiddens, batch_size, num_steps = 12, 16, 3, 5
    rng = np.random.default_rng(1)
    corpus = rng.integers(0, vocab_size, 200)
    torch.manual_seed(0)

    def init_rnn_params():
        sigma = 0.01
        W_xh = nn.Parameter(torch.randn(vocab_size, num_hiddens) * sigma)
        W_hh = nn.Parameter(torch.randn(num_hiddens, num_hiddens) * sigma)
        b_h = nn.Parameter(torch.zeros(num_hiddens))
        W_hq = nn.Parameter(torch.randn(num_hiddens, vocab_size) * sigma)
        b_q = nn.Parameter(torch.zeros(vocab_size))
        return [W_xh, W_hh, b_h, W_hq, b_q]

    params = init_rnn_params()
    W_xh, W_hh, b_h, W_hq, b_q = params

    def rnn(inputs, state=None):
        if state is None:
            state = torch.zeros((inputs.shape[1], num_hiddens), device=inputs.device)
        else:
            state, = state
        outputs = []
        for X in inputs:
            state = torch.tanh(torch.matmul(X, W_xh) + torch.matmul(state, W_hh) + b_h)
            outputs.append(state)
        return outputs, state

    def forward(X, state=None):
        embs = F.one_hot(X.T, vocab_size).type(torch.float32)
        rnn_outputs, _ = rnn(embs, state)
        outputs = [torch.matmul(H, W_hq) + b_q for H in rnn_outputs]
        return torch.stack(outputs, 1)

    def grad_clipping(params, theta):
        norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
        if norm > theta:
            for param in params:
                param.grad[:] *= theta / norm
        return norm

    opt = m.optim.SGD(params, lr=1.0)
    ppls, norms = [], []
    for step in range(8):
        starts = [(step * 7 + 31 * i) % (len(corpus) - num_steps - 1) for i in range(batch_size)]
        X = torch.tensor(np.stack([corpus[s:s + num_steps] for s in starts]))
        Y = torch.tensor(np.stack([corpus[s + 1:s + num_steps + 1] for s in starts]))
        Y_hat = forward(X)
        l = F.cross_entropy(Y_hat.reshape(-1, Y_hat.shape[-1]), Y.reshape(-1))
        opt.zero_grad()
        l.backward()
        norms.append(grad_clipping(params, 0.1).item())
        opt.step()
        ppls.append(math.exp(l.item()))
    # the same recurrence, concisely, from the same weights
    rnn_layer = nn.RNN(vocab_size, num_hiddens)
    with torch.no_grad():
        rnn_layer.weight_ih_l0.copy_(W_xh.T)
        rnn_layer.weight_hh_l0.copy_(W_hh.T)
        rnn_layer.bias_ih_l0.copy_(b_h)
        rnn_layer.bias_hh_l0.zero_()
    X = torch.tensor(np.stack([corpus[:num_steps], corpus[5:5 + num_steps]]))
    out, H = rnn_layer(F.one_hot(X.T, vocab_size).type(torch.float32))
    concise = torch.matmul(out, W_hq) + b_q
    scratch = forward(X).permute(1, 0, 2)
    return dict(ppls=ppls, norms=norms, params=params, diff=(concise - scratch).abs().max())


def test_rnn_scratch():
    ours, _ = run_both(rnn_scratch, rtol=1e-4, atol=1e-6)
    assert ours["diff"] < 1e-5
    assert max(ours["norms"]) > 0.1  # the clipping was exercised


# ----------------------------------------------------------------------------------------------
# GRU and LSTM from scratch against nn.GRU / nn.LSTM; deep and bidirectional RNNs
# ----------------------------------------------------------------------------------------------


def gru_lstm_scratch(m):
    torch, nn, F = m.torch, m.nn, m.F
    num_inputs, num_hiddens, T, B = 5, 6, 4, 3
    torch.manual_seed(0)
    inputs = torch.randn(T, B, num_inputs)

    def init_weight(*shape):
        return nn.Parameter(torch.randn(*shape) * 0.3)

    def triple():
        return (init_weight(num_inputs, num_hiddens), init_weight(num_hiddens, num_hiddens),
                nn.Parameter(torch.randn(num_hiddens) * 0.1))

    # GRU (d2l's GRUScratch)
    W_xz, W_hz, b_z = triple()
    W_xr, W_hr, b_r = triple()
    W_xh, W_hh, b_h = triple()

    def gru_forward(inputs, H=None):
        if H is None:
            H = torch.zeros((inputs.shape[1], num_hiddens))
        outputs = []
        for X in inputs:
            Z = torch.sigmoid(torch.matmul(X, W_xz) + torch.matmul(H, W_hz) + b_z)
            R = torch.sigmoid(torch.matmul(X, W_xr) + torch.matmul(H, W_hr) + b_r)
            H_tilde = torch.tanh(torch.matmul(X, W_xh) + torch.matmul(R * H, W_hh) + b_h)
            H = Z * H + (1 - Z) * H_tilde
            outputs.append(H)
        return outputs, H

    outs, H = gru_forward(inputs)
    gru_loss = torch.stack(outs).pow(2).sum()
    gru_loss.backward()
    gru = nn.GRU(num_inputs, num_hiddens)
    with torch.no_grad():
        # nn.GRU's gates are stacked r, z, n; its candidate applies r after W_hn, the book's before W_hh,
        # so the two agree only on the first step (from H = 0)
        gru.weight_ih_l0.copy_(torch.cat([W_xr.T, W_xz.T, W_xh.T]))
        gru.weight_hh_l0.copy_(torch.cat([W_hr.T, W_hz.T, W_hh.T]))
        gru.bias_ih_l0.copy_(torch.cat([b_r, b_z, b_h]))
        gru.bias_hh_l0.zero_()
    out, h = gru(inputs)
    out.pow(2).sum().backward()
    gru_grad_match = (gru.weight_hh_l0.grad[:num_hiddens] - W_hr.grad.T).abs().max()

    # LSTM (d2l's LSTMScratch)
    W_xi, W_hi, b_i = triple()
    W_xf, W_hf, b_f = triple()
    W_xo, W_ho, b_o = triple()
    W_xc, W_hc, b_c = triple()

    def lstm_forward(inputs, H_C=None):
        if H_C is None:
            H = torch.zeros((inputs.shape[1], num_hiddens))
            C = torch.zeros((inputs.shape[1], num_hiddens))
        else:
            H, C = H_C
        outputs = []
        for X in inputs:
            I = torch.sigmoid(torch.matmul(X, W_xi) + torch.matmul(H, W_hi) + b_i)
            Fg = torch.sigmoid(torch.matmul(X, W_xf) + torch.matmul(H, W_hf) + b_f)
            O = torch.sigmoid(torch.matmul(X, W_xo) + torch.matmul(H, W_ho) + b_o)
            C_tilde = torch.tanh(torch.matmul(X, W_xc) + torch.matmul(H, W_hc) + b_c)
            C = Fg * C + I * C_tilde
            H = O * torch.tanh(C)
            outputs.append(H)
        return outputs, (H, C)

    louts, (lH, lC) = lstm_forward(inputs)
    (torch.stack(louts).sum() + lC.pow(2).sum()).backward()
    lstm = nn.LSTM(num_inputs, num_hiddens)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.cat([W_xi.T, W_xf.T, W_xc.T, W_xo.T]))
        lstm.weight_hh_l0.copy_(torch.cat([W_hi.T, W_hf.T, W_hc.T, W_ho.T]))
        lstm.bias_ih_l0.copy_(torch.cat([b_i, b_f, b_c, b_o]))
        lstm.bias_hh_l0.zero_()
    lout, (lh, lc) = lstm(inputs)
    (lout.sum() + lc.pow(2).sum()).backward()
    lstm_grad_match = (lstm.weight_hh_l0.grad[2 * num_hiddens:3 * num_hiddens] - W_hc.grad.T).abs().max()

    # deep and bidirectional, as the book builds them concisely
    torch.manual_seed(1)
    deep = nn.GRU(num_inputs, num_hiddens, num_layers=2, dropout=0)
    birnn = nn.LSTM(num_inputs, num_hiddens, num_layers=2, bidirectional=True)
    dout, dstate = deep(inputs)
    bout, (bh, bc) = birnn(inputs, (torch.zeros(4, B, num_hiddens), torch.ones(4, B, num_hiddens) * 0.1))
    (dout.sum() + bout.pow(2).mean() + bh.sum()).backward()
    return dict(gru=torch.stack(outs), gru_nn=out, gru_match=gru_grad_match, W_hr_grad=W_hr.grad,
                lstm=torch.stack(louts), lstm_nn=lout, lc=lC, lc_nn=lc, lstm_match=lstm_grad_match,
                W_xf_grad=W_xf.grad, dout=dout, dstate=dstate, bout=bout, bh=bh, bc=bc,
                deep_grads=[p.grad for p in deep.parameters()], bi_grads=[p.grad for p in birnn.parameters()])


def test_gru_lstm_scratch():
    ours, _ = run_both(gru_lstm_scratch, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["gru"][0], ours["gru_nn"][0], rtol=1e-5, atol=1e-6)
    assert np.abs(ours["gru"][1:] - ours["gru_nn"][1:]).max() > 1e-3
    np.testing.assert_allclose(ours["lstm"], ours["lstm_nn"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["lc"], ours["lc_nn"][0], rtol=1e-5, atol=1e-6)
    assert ours["lstm_match"] < 1e-5
    assert ours["bout"].shape == (4, 3, 12) and ours["bh"].shape == (4, 3, 6)


# ----------------------------------------------------------------------------------------------
# seq2seq: GRU encoder-decoder (init by _flat_weights_names), Bahdanau attention decoder,
# padded cross-entropy, gradient clipping, greedy prediction
# ----------------------------------------------------------------------------------------------


def seq2seq(m):
    torch, nn, F = m.torch, m.nn, m.F

    def init_seq2seq(module):
        if type(module) == nn.Linear:
            nn.init.xavier_uniform_(module.weight)
        if type(module) == nn.GRU:
            for param in module._flat_weights_names:
                if "weight" in param:
                    nn.init.xavier_uniform_(module._parameters[param])

    class Seq2SeqEncoder(nn.Module):
        def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.rnn = nn.GRU(embed_size, num_hiddens, num_layers, dropout=dropout)
            self.apply(init_seq2seq)

        def forward(self, X, *args):
            embs = self.embedding(X.t().type(torch.int64))
            outputs, state = self.rnn(embs)
            return outputs, state

    class Seq2SeqDecoder(nn.Module):
        def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.rnn = nn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
            self.dense = nn.LazyLinear(vocab_size)
            self.apply(init_seq2seq)

        def init_state(self, enc_all_outputs, *args):
            return enc_all_outputs

        def forward(self, X, state):
            embs = self.embedding(X.t().type(torch.int32))
            enc_output, hidden_state = state
            context = enc_output[-1]
            context = context.repeat(embs.shape[0], 1, 1)
            embs_and_context = torch.cat((embs, context), -1)
            outputs, hidden_state = self.rnn(embs_and_context, hidden_state)
            outputs = self.dense(outputs).swapaxes(0, 1)
            return outputs, [enc_output, hidden_state]

    class AdditiveAttention(nn.Module):
        def __init__(self, num_hiddens, dropout):
            super().__init__()
            self.W_k = nn.LazyLinear(num_hiddens, bias=False)
            self.W_q = nn.LazyLinear(num_hiddens, bias=False)
            self.w_v = nn.LazyLinear(1, bias=False)
            self.dropout = nn.Dropout(dropout)

        def forward(self, queries, keys, values, valid_lens):
            queries, keys = self.W_q(queries), self.W_k(keys)
            features = torch.tanh(queries.unsqueeze(2) + keys.unsqueeze(1))
            scores = self.w_v(features).squeeze(-1)
            shape = scores.shape
            valid = torch.repeat_interleave(valid_lens, shape[1])
            flat = scores.reshape(-1, shape[-1])
            mask = torch.arange(shape[-1], dtype=torch.float32)[None, :] < valid[:, None]
            flat[~mask] = -1e6
            self.attention_weights = F.softmax(flat.reshape(shape), dim=-1)
            return torch.bmm(self.dropout(self.attention_weights), values)

    class Seq2SeqAttentionDecoder(nn.Module):
        def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
            super().__init__()
            self.attention = AdditiveAttention(num_hiddens, dropout)
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.rnn = nn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
            self.dense = nn.LazyLinear(vocab_size)
            self.apply(init_seq2seq)

        def init_state(self, enc_outputs, enc_valid_lens):
            outputs, hidden_state = enc_outputs
            return (outputs.permute(1, 0, 2), hidden_state, enc_valid_lens)

        def forward(self, X, state):
            enc_outputs, hidden_state, enc_valid_lens = state
            X = self.embedding(X).permute(1, 0, 2)
            outputs, self._attention_weights = [], []
            for x in X:
                query = torch.unsqueeze(hidden_state[-1], dim=1)
                context = self.attention(query, enc_outputs, enc_outputs, enc_valid_lens)
                x = torch.cat((context, torch.unsqueeze(x, dim=1)), dim=-1)
                out, hidden_state = self.rnn(x.permute(1, 0, 2), hidden_state)
                outputs.append(out)
                self._attention_weights.append(self.attention.attention_weights)
            outputs = self.dense(torch.cat(outputs, dim=0))
            return outputs.permute(1, 0, 2), [enc_outputs, hidden_state, enc_valid_lens]

    class EncoderDecoder(nn.Module):
        def __init__(self, encoder, decoder, tgt_pad):
            super().__init__()
            self.encoder = encoder
            self.decoder = decoder
            self.tgt_pad = tgt_pad

        def forward(self, enc_X, dec_X, *args):
            enc_all_outputs = self.encoder(enc_X, *args)
            dec_state = self.decoder.init_state(enc_all_outputs, *args)
            return self.decoder(dec_X, dec_state)[0]

        def loss(self, Y_hat, Y):
            Y_hat = Y_hat.reshape((-1, Y_hat.shape[-1]))
            Y = Y.reshape((-1,))
            l = F.cross_entropy(Y_hat, Y, reduction='none')
            mask = (Y.reshape(-1) != self.tgt_pad).type(torch.float32)
            return (l * mask).sum() / mask.sum()

        def predict_step(self, src, tgt_bos, src_valid_len, num_steps):
            enc_all_outputs = self.encoder(src, src_valid_len)
            dec_state = self.decoder.init_state(enc_all_outputs, src_valid_len)
            outputs = [tgt_bos.unsqueeze(1)]
            for _ in range(num_steps):
                Y, dec_state = self.decoder(outputs[-1], dec_state)
                outputs.append(Y.argmax(2))
            return torch.cat(outputs[1:], 1)

    def grad_clipping(model, grad_clip_val):
        params = [p for p in model.parameters() if p.requires_grad]
        norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
        if norm > grad_clip_val:
            for param in params:
                param.grad[:] *= grad_clip_val / norm

    vocab, pad, bos = 10, 0, 1
    rng = np.random.default_rng(0)
    src = rng.integers(3, vocab, (6, 5))
    src_valid_len = np.array([5, 4, 3, 5, 2, 4])
    for i, n in enumerate(src_valid_len):
        src[i, n:] = pad
    tgt = np.concatenate([np.full((6, 1), bos), src[:, ::-1]], 1)
    src, tgt, src_valid_len = torch.tensor(src), torch.tensor(tgt), torch.tensor(src_valid_len)
    out = {}
    for kind in ('plain', 'bahdanau'):
        torch.manual_seed(0)
        encoder = Seq2SeqEncoder(vocab, 8, 12, 2)
        decoder = (Seq2SeqDecoder if kind == 'plain' else Seq2SeqAttentionDecoder)(vocab, 8, 12, 2)
        model = EncoderDecoder(encoder, decoder, tgt_pad=pad)
        model(src, tgt[:, :-1], src_valid_len)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.tensor(np.random.default_rng(len(name) * 7 + p.numel()).normal(0, 0.4, tuple(p.shape)).astype(np.float32)))
        optimizer = m.optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for step in range(4):
            l = model.loss(model(src, tgt[:, :-1], src_valid_len), tgt[:, 1:])
            optimizer.zero_grad()
            with torch.no_grad():
                pass
            l.backward()
            grad_clipping(model, 1)
            optimizer.step()
            losses.append(l.item())
        preds = model.predict_step(src, tgt[:, 0], src_valid_len, 4)
        out[kind] = dict(losses=losses, preds=preds, grads={n: p.grad for n, p in model.named_parameters()},
                         attn=(torch.cat(decoder._attention_weights, 0) if kind == 'bahdanau' else None))
    return out


def test_seq2seq():
    ours, _ = run_both(seq2seq, rtol=1e-4, atol=1e-5)
    assert ours["bahdanau"]["losses"][-1] < ours["bahdanau"]["losses"][0]
    attn = ours["bahdanau"]["attn"]
    np.testing.assert_allclose(attn.sum(-1), 1, rtol=1e-5)
