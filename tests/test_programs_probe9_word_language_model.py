# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""pytorch/examples' word_language_model (see tests/pytorch_programs.py), run on chainrule and on PyTorch from the
same weights: its RNNModel (an Embedding, nn.LSTM / nn.GRU / nn.RNN of two layers, a Linear decoder whose weight is
tied to the embedding's) and its TransformerModel (nn.Transformer subclassed for its encoder, PositionalEncoding as a
buffer written by strided slices, a causal mask made by torch.log(torch.tril(...))), trained as main.py trains them:
batchify by narrow/view/t/contiguous, get_batch, repackage_hidden by detach, NLLLoss of log_softmax,
clip_grad_norm_ and the hand-written update p.data.add_(p.grad, alpha=-lr). Losses and parameters are compared."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of


def models(m):
    torch, nn = m.torch, m.nn
    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.1, max_len=5000):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            pe = torch.zeros(max_len, d_model)
            position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0).transpose(0, 1)
            self.register_buffer('pe', pe)
        def forward(self, x):
            x = x + self.pe[:x.size(0), :]
            return self.dropout(x)
    class RNNModel(nn.Module):
        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
            super().__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
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
            return m.F.log_softmax(decoded, dim=1), hidden
        def init_hidden(self, bsz):
            weight = next(self.parameters())
            if self.rnn_type == 'LSTM':
                return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))
            return weight.new_zeros(self.nlayers, bsz, self.nhid)
    class TransformerModel(nn.Transformer):
        def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
            super().__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid, num_encoder_layers=nlayers,
                             dropout=dropout)
            self.model_type = 'Transformer'
            self.src_mask = None
            self.pos_encoder = PositionalEncoding(ninp, dropout)
            self.input_emb = nn.Embedding(ntoken, ninp)
            self.ninp = ninp
            self.decoder = nn.Linear(ninp, ntoken)
            self.init_weights()
        def _generate_square_subsequent_mask(self, sz):
            return torch.log(torch.tril(torch.ones(sz, sz)))
        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.input_emb.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)
        def forward(self, src, has_mask=True):
            if has_mask:
                if self.src_mask is None or self.src_mask.size(0) != len(src):
                    mask = self._generate_square_subsequent_mask(len(src))
                    self.src_mask = mask
            else:
                self.src_mask = None
            src = self.input_emb(src) * math.sqrt(self.ninp)
            src = self.pos_encoder(src)
            output = self.encoder(src, mask=self.src_mask)
            output = self.decoder(output)
            return m.F.log_softmax(output, dim=-1)
    return RNNModel, TransformerModel

def batchify(m, data, bsz):
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    data = data.view(bsz, -1).t().contiguous()
    return data

def get_batch(source, i, bptt=5):
    seq_len = min(bptt, len(source) - 1 - i)
    data = source[i:i+seq_len]
    target = source[i+1:i+1+seq_len].view(-1)
    return data, target

def repackage_hidden(m, h):
    if isinstance(h, m.torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(m, v) for v in h)

def train(m, kind, weights):
    torch, nn = m.torch, m.nn
    RNNModel, TransformerModel = models(m)
    ntokens = 20
    rng = np.random.default_rng(0)
    corpus = torch.tensor(rng.integers(0, ntokens, 200))
    train_data = batchify(m, corpus, 4)
    if kind == "Transformer":
        model = TransformerModel(ntokens, 16, 2, 32, 2, dropout=0.0)
    else:
        model = RNNModel(kind, ntokens, 16, 16, 2, dropout=0.0, tie_weights=True)
    load(m, model, weights)
    criterion = nn.NLLLoss()
    lr = 2.0
    model.train()
    losses = []
    if kind != "Transformer":
        hidden = model.init_hidden(4)
    for batch, i in enumerate(range(0, train_data.size(0) - 1, 5)):
        data, targets = get_batch(train_data, i)
        model.zero_grad()
        if kind == "Transformer":
            output = model(data)
            output = output.view(-1, ntokens)
        else:
            hidden = repackage_hidden(m, hidden)
            output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
        if batch >= 6:
            break
    return losses, [p.detach() for p in model.parameters()]


def _model(kind):
    def make(m):
        RNNModel, TransformerModel = models(m)
        if kind == "Transformer":
            return TransformerModel(20, 16, 2, 32, 2, dropout=0.0)
        return RNNModel(kind, 20, 16, 16, 2, dropout=0.0, tie_weights=True)
    return make


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN", "Transformer"])
def test_word_language_model(kind):
    (losses, parameters), theirs = run_both(train, kind, weights_of(_model(kind)), rtol=2e-4, atol=2e-5)
    assert len(losses) == 7 and all(np.isfinite(losses))
    assert losses[-1] < losses[1]  # (it learns the random corpus's unigram frequencies at least)
