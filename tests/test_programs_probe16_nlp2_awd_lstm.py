# ruff: noqa: F841, UP008  (the programs are kept as their authors wrote them)
"""Classic NLP programs (see tests/pytorch_programs.py) not already among the program tests, run on chainrule and on
PyTorch from the same weights and data, comparing losses, gradients, decoded outputs and short training trajectories;
dropout-on variants are compared where PyTorch draws its Bernoulli masks as chainrule does (AMD processors), and run
for finite values elsewhere. fastai's AWD-LSTM (WeightDropout setting ``weight_hh_l0`` on nn.LSTM by setattr each
forward, embedding and locked dropout, a tied decoder, AR/TAR, hidden state carried and cut to a smaller batch) and
Salesforce's original (WeightDrop deleting from ``_parameters``, ``embedded_dropout`` by ``new().resize_``,
LockedDropout, variable-length BPTT, NT-ASGD with its ``state[prm]['ax']`` swapped in by ``prm.data =``, and the
original's TypeError after evaluating, as PyTorch's)."""

import warnings

import numpy as np
import pytest

from .pytorch_programs import OURS, pytorch, run_both, same_dropout_masks, weights_of

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
