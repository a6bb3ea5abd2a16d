# ruff: noqa: B007, UP008  (the programs are kept as their authors write them)
"""pytorch/examples' word_language_model (model.py, main.py, generate.py), one of the programs session 9's probe
(tests/test_programs_probe9_examples_*.py) left out, each kept as written with sizes shrunk and run as
tests/probe31_examples_common.py says: its RNNModel as LSTM with tied weights, GRU and RNN_TANH (``batchify``,
``get_batch``, ``repackage_hidden``, ``clip_grad_norm_``, the hand-written SGD ``p.data.add_(p.grad, alpha=-lr)``, a
checkpoint through ``torch.save``/``torch.load``, generate.py's ``multinomial`` sampling with ``input.fill_``). It
agreed with PyTorch when written (session 31)."""

import io
from types import SimpleNamespace

import numpy as np
import pytest

from .probe31_examples_common import SAME_DROPOUT
from .pytorch_programs import OURS, run_both


# ---------------------------------------------------------------- word_language_model/model.py and main.py
def word_language_model(m, rnn_type, tied, epochs=2):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1111)

    class RNNModel(nn.Module):
        """Container module with an encoder, a recurrent module, and a decoder."""

        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
            super(RNNModel, self).__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            if rnn_type in ['LSTM', 'GRU']:
                self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
            else:
                try:
                    nonlinearity = {'RNN_TANH': 'tanh', 'RNN_RELU': 'relu'}[rnn_type]
                except KeyError as e:
                    raise ValueError( """An invalid option for `--model` was supplied,
                                     options are ['LSTM', 'GRU', 'RNN_TANH' or 'RNN_RELU']""") from e
                self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            if tie_weights:
                if nhid != ninp:
                    raise ValueError('When using the tied flag, nhid must be equal to emsize')
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
                return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                        weight.new_zeros(self.nlayers, bsz, self.nhid))
            else:
                return weight.new_zeros(self.nlayers, bsz, self.nhid)

    args = SimpleNamespace(batch_size=4, bptt=5, clip=0.25, log_interval=2, lr=20.0)
    device = torch.device("cpu")
    ntokens = 17
    g = torch.Generator().manual_seed(5)
    corpus_train = torch.randint(0, ntokens, (83,), generator=g)
    corpus_valid = torch.randint(0, ntokens, (41,), generator=g)

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        data = data.view(bsz, -1).t().contiguous()
        return data.to(device)

    eval_batch_size = 10
    train_data = batchify(corpus_train, args.batch_size)
    val_data = batchify(corpus_valid, eval_batch_size)
    model = RNNModel(rnn_type, ntokens, 8, 8, 2, 0.2, tied).to(device)
    criterion = nn.NLLLoss()

    def repackage_hidden(h):
        """Wraps hidden states in new Tensors, to detach them from their history."""
        if isinstance(h, torch.Tensor):
            return h.detach()
        else:
            return tuple(repackage_hidden(v) for v in h)

    def get_batch(source, i):
        seq_len = min(args.bptt, len(source) - 1 - i)
        data = source[i:i+seq_len]
        target = source[i+1:i+1+seq_len].view(-1)
        return data, target

    def evaluate(data_source):
        model.eval()
        total_loss = 0.
        hidden = model.init_hidden(eval_batch_size)
        with torch.no_grad():
            for i in range(0, data_source.size(0) - 1, args.bptt):
                data, targets = get_batch(data_source, i)
                output, hidden = model(data, hidden)
                hidden = repackage_hidden(hidden)
                total_loss += len(data) * criterion(output, targets).item()
        return total_loss / (len(data_source) - 1)

    log, norms = [], []

    def train():
        model.train()
        total_loss = 0.
        hidden = model.init_hidden(args.batch_size)
        for batch, i in enumerate(range(0, train_data.size(0) - 1, args.bptt)):
            data, targets = get_batch(train_data, i)
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            total_loss += loss.item()
            if batch % args.log_interval == 0 and batch > 0:
                cur_loss = total_loss / args.log_interval
                log.append((epoch, batch, len(train_data) // args.bptt, lr, cur_loss, math.exp(cur_loss)))
                total_loss = 0

    import math
    lr = args.lr
    best_val_loss = None
    val_losses = []
    for epoch in range(1, epochs + 1):
        train()
        val_loss = evaluate(val_data)
        val_losses.append(val_loss)
        if not best_val_loss or val_loss < best_val_loss:
            best_val_loss = val_loss
        else:
            lr /= 4.0
    tied_now = model.decoder.weight is model.encoder.weight
    # main.py's checkpoint, here in memory, and generate.py's sampling loop
    buffer = io.BytesIO()
    with buffer as f:
        torch.save(model.state_dict(), f)
        f.seek(0)
        model = RNNModel(rnn_type, ntokens, 8, 8, 2, 0.2, tied)
        model.load_state_dict(torch.load(f))
    model.rnn.flatten_parameters()
    model.eval()
    hidden = model.init_hidden(1)
    input = torch.randint(ntokens, (1, 1), dtype=torch.long)
    words, temperature = [], 1.0
    with torch.no_grad():  # no tracking history
        for i in range(12):
            output, hidden = model(input, hidden)
            word_weights = output.squeeze().div(temperature).exp().cpu()
            word_idx = torch.multinomial(word_weights, 1)[0]
            input.fill_(word_idx)
            words.append(int(word_idx))
        word_tensor = torch.Tensor([[word_idx]]).long()
    return (log, norms, val_losses, lr, tied_now, len(list(model.parameters())), model.encoder.weight,
            words, word_tensor)


@pytest.mark.parametrize("rnn_type, tied", [("LSTM", True), ("GRU", False), ("RNN_TANH", True)])
def test_word_language_model(rnn_type, tied):
    # SGD at lr 20 through a tanh RNN amplifies float32 rounding: the eighth step's gradient norm 1e-5 apart,
    # the embedding 3e-5; in float64 the two libraries agree to 4e-14 (session 31)
    rtol, atol = (1e-3, 1e-4) if rnn_type == "RNN_TANH" else (1e-4, 1e-5)
    log, norms, val_losses, lr, tied_now, n_params, embedding, words, word_tensor = run_both(
        word_language_model, rnn_type, tied, compare=SAME_DROPOUT, rtol=rtol, atol=atol)[0]
    assert len(words) == 12 and all(0 <= w < 17 for w in words) and word_tensor.dtype == np.int64
    assert word_tensor.shape == (1, 1) and word_tensor[0, 0] == words[-1]
    assert tied_now is tied and len(log) == 2 and len(norms) == 8 and np.isfinite(val_losses).all()
    # nn.Module.parameters() yields a shared (tied) parameter once
    assert n_params == {"LSTM": 10, "GRU": 11, "RNN_TANH": 10}[rnn_type] and embedding.shape == (17, 8)


def test_word_language_model_rejects_an_unknown_model():
    with pytest.raises(ValueError, match="An invalid option for `--model`"):
        word_language_model(OURS, "RNN_SIGMOID", False)

