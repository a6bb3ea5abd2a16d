# ruff: noqa: B007, E501, F841, UP008  (the programs are kept as the book writes them)
"""d2l.ai (PyTorch edition) programs, written as the book writes them with its helpers inlined, run on chainrule and
on PyTorch (see tests/pytorch_programs.py), comparing losses, gradients and parameters. Attention (masked softmax,
additive and scaled dot-product scoring, multi-head attention with ``transpose_qkv`` and ``repeat_interleave``,
positional encoding, a transformer encoder block) trained with the seq2seq ``MaskedSoftmaxCELoss``; the transformer
decoder with 2-D causal valid_lens and its cache."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# attention: masked softmax, additive / dot-product scoring, multi-head, positional encoding,
# a transformer encoder block trained by the seq2seq masked loss
# ----------------------------------------------------------------------------------------------


def attention(m):
    torch, nn, F = m.torch, m.nn, m.F

    def sequence_mask(X, valid_len, value=0):
        maxlen = X.size(1)
        mask = torch.arange((maxlen), dtype=torch.float32, device=X.device)[None, :] < valid_len[:, None]
        X[~mask] = value
        return X

    def masked_softmax(X, valid_lens):
        def _sequence_mask(X, valid_len, value=0):
            maxlen = X.size(1)
            mask = torch.arange((maxlen), dtype=torch.float32, device=X.device)[None, :] < valid_len[:, None]
            X[~mask] = value
            return X

        if valid_lens is None:
            return nn.functional.softmax(X, dim=-1)
        else:
            shape = X.shape
            if valid_lens.dim() == 1:
                valid_lens = torch.repeat_interleave(valid_lens, shape[1])
            else:
                valid_lens = valid_lens.reshape(-1)
            X = _sequence_mask(X.reshape(-1, shape[-1]), valid_lens, value=-1e6)
            return nn.functional.softmax(X.reshape(shape), dim=-1)

    class AdditiveAttention(nn.Module):
        def __init__(self, num_hiddens, dropout, **kwargs):
            super(AdditiveAttention, self).__init__(**kwargs)
            self.W_k = nn.LazyLinear(num_hiddens, bias=False)
            self.W_q = nn.LazyLinear(num_hiddens, bias=False)
            self.w_v = nn.LazyLinear(1, bias=False)
            self.dropout = nn.Dropout(dropout)

        def forward(self, queries, keys, values, valid_lens):
            queries, keys = self.W_q(queries), self.W_k(keys)
            features = queries.unsqueeze(2) + keys.unsqueeze(1)
            features = torch.tanh(features)
            scores = self.w_v(features).squeeze(-1)
            self.attention_weights = masked_softmax(scores, valid_lens)
            return torch.bmm(self.dropout(self.attention_weights), values)

    class DotProductAttention(nn.Module):
        def __init__(self, dropout):
            super().__init__()
            self.dropout = nn.Dropout(dropout)

        def forward(self, queries, keys, values, valid_lens=None):
            d = queries.shape[-1]
            scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
            self.attention_weights = masked_softmax(scores, valid_lens)
            return torch.bmm(self.dropout(self.attention_weights), values)

    def transpose_qkv(X, num_heads):
        X = X.reshape(X.shape[0], X.shape[1], num_heads, -1)
        X = X.permute(0, 2, 1, 3)
        return X.reshape(-1, X.shape[2], X.shape[3])

    def transpose_output(X, num_heads):
        X = X.reshape(-1, num_heads, X.shape[1], X.shape[2])
        X = X.permute(0, 2, 1, 3)
        return X.reshape(X.shape[0], X.shape[1], -1)

    class MultiHeadAttention(nn.Module):
        def __init__(self, num_hiddens, num_heads, dropout, bias=False, **kwargs):
            super().__init__()
            self.num_heads = num_heads
            self.attention = DotProductAttention(dropout)
            self.W_q = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_k = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_v = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_o = nn.LazyLinear(num_hiddens, bias=bias)

        def forward(self, queries, keys, values, valid_lens):
            queries = transpose_qkv(self.W_q(queries), self.num_heads)
            keys = transpose_qkv(self.W_k(keys), self.num_heads)
            values = transpose_qkv(self.W_v(values), self.num_heads)
            if valid_lens is not None:
                valid_lens = torch.repeat_interleave(valid_lens, repeats=self.num_heads, dim=0)
            output = self.attention(queries, keys, values, valid_lens)
            output_concat = transpose_output(output, self.num_heads)
            return self.W_o(output_concat)

    class PositionalEncoding(nn.Module):
        def __init__(self, num_hiddens, dropout, max_len=1000):
            super().__init__()
            self.dropout = nn.Dropout(dropout)
            self.P = torch.zeros((1, max_len, num_hiddens))
            X = torch.arange(max_len, dtype=torch.float32).reshape(-1, 1) / torch.pow(
                10000, torch.arange(0, num_hiddens, 2, dtype=torch.float32) / num_hiddens)
            self.P[:, :, 0::2] = torch.sin(X)
            self.P[:, :, 1::2] = torch.cos(X)

        def forward(self, X):
            X = X + self.P[:, :X.shape[1], :].to(X.device)
            return self.dropout(X)

    class PositionWiseFFN(nn.Module):
        def __init__(self, ffn_num_hiddens, ffn_num_outputs):
            super().__init__()
            self.dense1 = nn.LazyLinear(ffn_num_hiddens)
            self.relu = nn.ReLU()
            self.dense2 = nn.LazyLinear(ffn_num_outputs)

        def forward(self, X):
            return self.dense2(self.relu(self.dense1(X)))

    class AddNorm(nn.Module):
        def __init__(self, norm_shape, dropout):
            super().__init__()
            self.dropout = nn.Dropout(dropout)
            self.ln = nn.LayerNorm(norm_shape)

        def forward(self, X, Y):
            return self.ln(self.dropout(Y) + X)

    class TransformerEncoderBlock(nn.Module):
        def __init__(self, num_hiddens, ffn_num_hiddens, num_heads, dropout, use_bias=False):
            super().__init__()
            self.attention = MultiHeadAttention(num_hiddens, num_heads, dropout, use_bias)
            self.addnorm1 = AddNorm(num_hiddens, dropout)
            self.ffn = PositionWiseFFN(ffn_num_hiddens, num_hiddens)
            self.addnorm2 = AddNorm(num_hiddens, dropout)

        def forward(self, X, valid_lens):
            Y = self.addnorm1(X, self.attention(X, X, X, valid_lens))
            return self.addnorm2(Y, self.ffn(Y))

    class MaskedSoftmaxCELoss(nn.CrossEntropyLoss):
        def forward(self, pred, label, valid_len):
            weights = torch.ones_like(label)
            weights = sequence_mask(weights, valid_len)
            self.reduction = 'none'
            unweighted_loss = super(MaskedSoftmaxCELoss, self).forward(pred.permute(0, 2, 1), label)
            weighted_loss = (unweighted_loss * weights).mean(dim=1)
            return weighted_loss

    class TinyEncoder(nn.Module):
        def __init__(self, vocab_size, num_hiddens):
            super().__init__()
            self.num_hiddens = num_hiddens
            self.embedding = nn.Embedding(vocab_size, num_hiddens)
            self.pos_encoding = PositionalEncoding(num_hiddens, 0.0)
            self.blk = TransformerEncoderBlock(num_hiddens, 32, 4, 0.0)
            self.additive = AdditiveAttention(8, 0.0)
            self.dense = nn.LazyLinear(vocab_size)

        def forward(self, X, valid_lens):
            X = self.pos_encoding(self.embedding(X) * math.sqrt(self.num_hiddens))
            X = self.blk(X, valid_lens)
            X = X + self.additive(X, X, X, valid_lens)
            return self.dense(X)

    # the book's masked-softmax examples
    torch.manual_seed(0)
    ms1 = masked_softmax(torch.rand(2, 2, 4), torch.tensor([2, 3]))
    ms2 = masked_softmax(torch.rand(2, 2, 4), torch.tensor([[1, 3], [2, 4]]))
    seqm = sequence_mask(torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([1, 2]))
    lossfn = MaskedSoftmaxCELoss()
    masked_loss = lossfn(torch.ones(3, 4, 10), torch.ones((3, 4), dtype=torch.long), torch.tensor([4, 2, 0]))

    vocab_size, num_hiddens = 11, 16
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.integers(0, vocab_size, (4, 7)))
    Y = torch.flip(X, dims=[1])
    valid_len = torch.tensor([7, 5, 3, 6])
    torch.manual_seed(0)
    net = TinyEncoder(vocab_size, num_hiddens)
    net(X, valid_len)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.tensor(np.random.default_rng(len(name) + p.numel()).normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    opt = m.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for step in range(5):
        opt.zero_grad()
        l = lossfn(net(X, valid_len), Y, valid_len)
        l.sum().backward()
        opt.step()
        losses.append(l.sum().item())
    grads = {name: p.grad for name, p in net.named_parameters()}
    return dict(ms1=ms1, ms2=ms2, seqm=seqm, masked_loss=masked_loss, losses=losses, grads=grads,
                P=net.pos_encoding.P[0, :6], weights=net.additive.attention_weights)


def test_attention():
    ours, _ = run_both(attention, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["masked_loss"], [2.3026, 1.1513, 0], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(ours["seqm"], [[1, 0, 0], [4, 5, 0]])
    assert np.all(ours["ms1"][0, :, 2:] < 1e-6)
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# the transformer decoder: 2-D causal valid_lens in training, a growing key-value cache in prediction
# ----------------------------------------------------------------------------------------------


def transformer_decoder(m):
    torch, nn, F = m.torch, m.nn, m.F

    def masked_softmax(X, valid_lens):
        def _sequence_mask(X, valid_len, value=0):
            maxlen = X.size(1)
            mask = torch.arange((maxlen), dtype=torch.float32, device=X.device)[None, :] < valid_len[:, None]
            X[~mask] = value
            return X

        if valid_lens is None:
            return nn.functional.softmax(X, dim=-1)
        shape = X.shape
        if valid_lens.dim() == 1:
            valid_lens = torch.repeat_interleave(valid_lens, shape[1])
        else:
            valid_lens = valid_lens.reshape(-1)
        X = _sequence_mask(X.reshape(-1, shape[-1]), valid_lens, value=-1e6)
        return nn.functional.softmax(X.reshape(shape), dim=-1)

    class DotProductAttention(nn.Module):
        def __init__(self, dropout):
            super().__init__()
            self.dropout = nn.Dropout(dropout)

        def forward(self, queries, keys, values, valid_lens=None):
            d = queries.shape[-1]
            scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
            self.attention_weights = masked_softmax(scores, valid_lens)
            return torch.bmm(self.dropout(self.attention_weights), values)

    class MultiHeadAttention(nn.Module):
        def __init__(self, num_hiddens, num_heads, dropout, bias=False):
            super().__init__()
            self.num_heads = num_heads
            self.attention = DotProductAttention(dropout)
            self.W_q = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_k = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_v = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_o = nn.LazyLinear(num_hiddens, bias=bias)

        def transpose_qkv(self, X):
            X = X.reshape(X.shape[0], X.shape[1], self.num_heads, -1)
            X = X.permute(0, 2, 1, 3)
            return X.reshape(-1, X.shape[2], X.shape[3])

        def transpose_output(self, X):
            X = X.reshape(-1, self.num_heads, X.shape[1], X.shape[2])
            X = X.permute(0, 2, 1, 3)
            return X.reshape(X.shape[0], X.shape[1], -1)

        def forward(self, queries, keys, values, valid_lens):
            queries = self.transpose_qkv(self.W_q(queries))
            keys = self.transpose_qkv(self.W_k(keys))
            values = self.transpose_qkv(self.W_v(values))
            if valid_lens is not None:
                valid_lens = torch.repeat_interleave(valid_lens, repeats=self.num_heads, dim=0)
            output = self.attention(queries, keys, values, valid_lens)
            return self.W_o(self.transpose_output(output))

    class AddNorm(nn.Module):
        def __init__(self, norm_shape, dropout):
            super().__init__()
            self.dropout = nn.Dropout(dropout)
            self.ln = nn.LayerNorm(norm_shape)

        def forward(self, X, Y):
            return self.ln(self.dropout(Y) + X)

    class TransformerDecoderBlock(nn.Module):
        def __init__(self, num_hiddens, ffn_num_hiddens, num_heads, dropout, i):
            super().__init__()
            self.i = i
            self.attention1 = MultiHeadAttention(num_hiddens, num_heads, dropout)
            self.addnorm1 = AddNorm(num_hiddens, dropout)
            self.attention2 = MultiHeadAttention(num_hiddens, num_heads, dropout)
            self.addnorm2 = AddNorm(num_hiddens, dropout)
            self.ffn = nn.Sequential(nn.LazyLinear(ffn_num_hiddens), nn.ReLU(), nn.LazyLinear(num_hiddens))
            self.addnorm3 = AddNorm(num_hiddens, dropout)

        def forward(self, X, state):
            enc_outputs, enc_valid_lens = state[0], state[1]
            if state[2][self.i] is None:
                key_values = X
            else:
                key_values = torch.cat((state[2][self.i], X), dim=1)
            state[2][self.i] = key_values
            if self.training:
                batch_size, num_steps, _ = X.shape
                dec_valid_lens = torch.arange(1, num_steps + 1, device=X.device).repeat(batch_size, 1)
            else:
                dec_valid_lens = None
            X2 = self.attention1(X, key_values, key_values, dec_valid_lens)
            Y = self.addnorm1(X, X2)
            Y2 = self.attention2(Y, enc_outputs, enc_outputs, enc_valid_lens)
            Z = self.addnorm2(Y, Y2)
            return self.addnorm3(Z, self.ffn(Z)), state

    class Decoder(nn.Module):
        def __init__(self, vocab_size, num_hiddens, num_blks):
            super().__init__()
            self.num_hiddens, self.num_blks = num_hiddens, num_blks
            self.embedding = nn.Embedding(vocab_size, num_hiddens)
            self.blks = nn.Sequential()
            for i in range(num_blks):
                self.blks.add_module("block" + str(i), TransformerDecoderBlock(num_hiddens, 16, 2, 0.0, i))
            self.dense = nn.LazyLinear(vocab_size)

        def init_state(self, enc_outputs, enc_valid_lens):
            return [enc_outputs, enc_valid_lens, [None] * self.num_blks]

        def forward(self, X, state):
            X = self.embedding(X) * math.sqrt(self.num_hiddens)
            for blk in self.blks:
                X, state = blk(X, state)
            return self.dense(X), state

    vocab, num_hiddens = 9, 8
    rng = np.random.default_rng(0)
    enc_outputs = torch.tensor(rng.standard_normal((2, 5, num_hiddens)).astype(np.float32))
    enc_valid_lens = torch.tensor([3, 5])
    tgt = torch.tensor(rng.integers(0, vocab, (2, 6)))
    torch.manual_seed(0)
    dec = Decoder(vocab, num_hiddens, 2)
    dec(tgt[:, :-1], dec.init_state(enc_outputs, enc_valid_lens))
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.tensor(np.random.default_rng(p.numel() + 2).normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    opt = m.optim.Adam(dec.parameters(), lr=0.01)
    losses = []
    for step in range(3):
        Y_hat, _ = dec(tgt[:, :-1], dec.init_state(enc_outputs, enc_valid_lens))
        l = F.cross_entropy(Y_hat.reshape(-1, vocab), tgt[:, 1:].reshape(-1))
        opt.zero_grad()
        l.backward()
        opt.step()
        losses.append(l.item())
    dec.eval()
    with torch.no_grad():
        full, _ = dec(tgt[:, :-1], dec.init_state(enc_outputs, enc_valid_lens))
        state = dec.init_state(enc_outputs, enc_valid_lens)
        steps = []
        for t in range(5):
            Y, state = dec(tgt[:, t:t + 1], state)
            steps.append(Y)
        incremental = torch.cat(steps, 1)
    return dict(losses=losses, full=full, incremental=incremental, cache=state[2][1].shape[1],
                weights=dec.blks[0].attention1.attention.attention_weights)


def test_transformer_decoder():
    ours, _ = run_both(transformer_decoder, rtol=1e-4, atol=1e-5)
    assert ours["cache"] == 5
    # the last prediction step attends over all 5 cached keys, per head (the cache holds each block's inputs
    # computed from the prefix, so it is not the unmasked full pass: both libraries are compared above)
    np.testing.assert_allclose(ours["weights"].shape, (4, 1, 5))
    assert ours["losses"][-1] < ours["losses"][0]
