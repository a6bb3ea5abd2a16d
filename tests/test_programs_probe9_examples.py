# ruff: noqa: B007, B023, E702, E741, E731, F841, UP004, UP008, UP018, UP031, UP032  (the programs are kept as their authors wrote them)
"""Programs of the official pytorch/examples repository (see tests/pytorch_programs.py), scaled to tiny
synthetic data and run on chainrule and on PyTorch from the same weights, comparing losses, parameters and
gradients.

``regression/main.py`` (polynomial features by ``torch.cat`` of powers, ``F.smooth_l1_loss``, a hand-written
``param.data.add_(-0.1 * param.grad)`` step until the loss is small, ``'{:+.2f}'.format`` of 0-d tensors);
``time_sequence_prediction`` (two ``nn.LSTMCell`` in float64 by ``.double()``, ``input.split(1, dim=1)``,
L-BFGS with a closure, future prediction under ``no_grad``); ``word_language_model``'s ``TransformerModel``
(a subclass of ``nn.Transformer`` replacing its decoder, ``PositionalEncoding`` buffer, ``log(tril(ones))``
causal mask, truncated-BPTT batches, ``clip_grad_norm_``, a hand-written SGD step or AdamW, greedy
generation with ``model(input, False)``); ``fast_neural_style``'s ``TransformerNet`` (``ReflectionPad2d``,
``InstanceNorm2d(affine=True)``, nearest ``interpolate``, residual blocks) trained through a frozen VGG-like
feature net returning a namedtuple, gram matrices by ``bmm``, ``normalize_batch`` by ``new_tensor`` and an
in-place ``div_`` on the network's output; ``mnist_forward_forward`` (``nn.Linear`` subclass owning its
Adam, overriding ``train``, layer-local goodness losses by ``log1p(exp(...))``, ``overlay_y_on_x`` by
indexing with a ``range``); ``siamese_network`` (a ResNet cut by ``children()[:-1]``, ``apply(init_weights)``,
``BCELoss`` on a sigmoid head, Adadelta with StepLR, ``torch.where(outputs > 0.5, 1, 0)``);
``super_resolution`` (``orthogonal_`` init with ``calculate_gain``, ``PixelShuffle``, PSNR, a state_dict
checkpoint through ``torch.save``/``torch.load``); ``mnist_rnn`` (a batch-first LSTM's last step,
``BatchNorm1d``, ``Dropout2d`` on 2-D input, Adadelta, StepLR); and ``language_translation``'s
``Translator`` (a full ``nn.Transformer`` with a bool source mask, a float causal target mask, bool padding
masks, ``pad_sequence`` collation, ``CrossEntropyLoss(ignore_index=pad)``, greedy decoding with ``type_as``
and ``fill_``); ``legacy/snli`` (a ``Linear`` flattening leading dims through a cooperative mixin
``class Linear(Bottle, nn.Linear)``, a bidirectional two-layer LSTM's last states, one ReLU module listed
thrice in a Sequential); ``imagenet`` (top-k ``accuracy``, ``AverageMeter`` over tensors, SGD with momentum
and weight decay, StepLR, resuming model, optimizer and scheduler from a ``torch.save``d checkpoint: the
same numbers as not stopping); ``distributed/minGPT-ddp`` (``nn.MultiheadAttention`` given a float
``tril`` mask, which is added to the scores, weight-decay groups by module type, ``DistributedSampler``,
``set_grad_enabled`` with a disabled ``autocast``, ``@torch.no_grad()`` generation with top-k); and two
examples since removed from the repository: ``vision_transformer`` (patches by ``unfold().unfold()``,
``MultiheadAttention`` given batch-major input without ``batch_first``) and ``swin_transformer`` (window
partition, shifted windows by ``torch.roll``, ``q, k, v`` unpacked by iterating a tensor).

Printed logs are compared by their text and, to a tolerance, their numbers.

Strict expected failures, for what chainrule lacks outside the files these tests may change: ``torch.hub``
(the vision transformer's ``from torch.hub import tqdm``), ``import torch.backends.cudnn as cudnn``
(imagenet, dcgan: ``backends`` is a namespace, not a package).

Some parameters get a gradient that is zero in exact arithmetic (the key bias of attention: softmax does not
see a score shifted alike for every key; a convolution's bias before an instance norm, which subtracts the
channel mean), so what both libraries compute for them is rounding noise, which Adam then scales up to
full-size steps. Those are checked to be negligible, and left out of the comparison of parameters."""

import importlib
import io
import math
import re
import warnings
from collections import namedtuple
from dataclasses import dataclass
from enum import Enum
from math import log10
from types import SimpleNamespace

import numpy as np
import pytest

from .pytorch_programs import assert_same, load, run_both, weights_of

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


def numbers_parsed(value):
    """A program's result with each string split into its text and its numbers: printed losses are compared
    as numbers (to a tolerance), not digit for digit."""
    if isinstance(value, str):
        return NUMBER.sub("#", value), [float(x) for x in NUMBER.findall(value)]
    if isinstance(value, dict):
        return {k: numbers_parsed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [numbers_parsed(v) for v in value]
    return value


def without_key_biases(state, keys_of):
    """``state`` (a name -> array dict) less the key third of every attention's query-key-value bias
    (``in_proj_bias``, or a ``qkv`` Linear's), whose gradient is zero but for rounding (see the module
    docstring); ``keys_of`` collects those thirds."""
    kept = {}
    for name, value in state.items():
        if name.endswith(("in_proj_bias", "qkv.bias")) and value is not None:
            third = len(value) // 3
            keys_of[name] = value[third:2 * third]
            kept[name] = np.concatenate([value[:third], value[2 * third:]])
        else:
            kept[name] = value
    return kept


def assert_same_but_key_biases(ours, theirs, rtol, atol):
    """The parameters or gradients of two runs agree but for the key biases, whose gradients are negligible."""
    our_keys, their_keys = {}, {}
    assert_same(without_key_biases(ours, our_keys), without_key_biases(theirs, their_keys), rtol, atol)
    assert our_keys.keys() == their_keys.keys()


def assert_key_bias_gradients_vanish(grads):
    largest = max(float(np.abs(g).max()) for g in grads.values())
    key_grads = {}
    without_key_biases(grads, key_grads)
    assert key_grads, "no attention found"
    for name, g in key_grads.items():
        assert np.abs(g).max() < 1e-5 * largest, name


# ----------------------------------------------------------------------------------------------
# regression/main.py: fit a degree-4 polynomial with a single nn.Linear
# ----------------------------------------------------------------------------------------------


def regression(m, W_np, b_np, batches):
    torch, F = m.torch, m.F
    from itertools import count
    POLY_DEGREE = 4
    W_target = torch.from_numpy(W_np)
    b_target = torch.from_numpy(b_np)

    def make_features(x):
        """Builds features i.e. a matrix with columns [x, x^2, x^3, x^4]."""
        x = x.unsqueeze(1)
        return torch.cat([x ** i for i in range(1, POLY_DEGREE+1)], 1)

    def f(x):
        """Approximated function."""
        return x.mm(W_target) + b_target.item()

    def poly_desc(W, b):
        """Creates a string description of a polynomial."""
        result = 'y = '
        for i, w in enumerate(W):
            result += '{:+.2f} x^{} '.format(w, i + 1)
        result += '{:+.2f}'.format(b[0])
        return result

    random_batches = iter(batches)  # torch.randn(batch_size) in the original

    def get_batch(batch_size=32):
        """Builds a batch i.e. (x, f(x)) pair."""
        random = torch.from_numpy(next(random_batches))
        x = make_features(random)
        y = f(x)
        return x, y

    fc = m.nn.Linear(W_target.size(0), 1)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[0.1, -0.2, 0.3, -0.4]]))
        fc.bias.fill_(0.05)
    losses = []
    for batch_idx in count(1):
        batch_x, batch_y = get_batch()
        fc.zero_grad()
        output = F.smooth_l1_loss(fc(batch_x), batch_y)
        loss = output.item()
        output.backward()
        for param in fc.parameters():
            param.data.add_(-0.1 * param.grad)
        losses.append(loss)
        if loss < 1e-3:
            break
    return (losses, batch_idx, poly_desc(fc.weight.view(-1), fc.bias), poly_desc(W_target.view(-1), b_target),
            fc.weight, fc.bias, fc.weight.grad)


def test_polynomial_regression():
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((4, 1)) * 0.5).astype(np.float32)
    b = (rng.standard_normal(1) * 0.5).astype(np.float32)
    batches = [(rng.standard_normal(32) * 0.5).astype(np.float32) for _ in range(200)]
    ours, theirs = run_both(regression, W, b, batches, compare=False)
    if theirs is not None:
        assert_same(numbers_parsed(ours), numbers_parsed(theirs), 1e-4, 1e-6)
    losses, n, learned, actual, weight, bias, grad = ours
    assert losses[-1] < 1e-3 <= min(losses[:-1]) and n == len(losses) < 200
    assert actual == "y = " + "".join(f"{w:+.2f} x^{i + 1} " for i, w in enumerate(W[:, 0])) + f"{b[0]:+.2f}"
    assert learned == "y = " + "".join(f"{w:+.2f} x^{i + 1} " for i, w in enumerate(weight[0])) + f"{bias[0]:+.2f}"


# ----------------------------------------------------------------------------------------------
# time_sequence_prediction: two LSTMCells on sine waves, trained by L-BFGS, predicting the future
# ----------------------------------------------------------------------------------------------


def sequence_model(m, hidden=12):
    torch, nn = m.torch, m.nn

    class Sequence(nn.Module):
        def __init__(self):
            super(Sequence, self).__init__()
            self.lstm1 = nn.LSTMCell(1, hidden)
            self.lstm2 = nn.LSTMCell(hidden, hidden)
            self.linear = nn.Linear(hidden, 1)

        def forward(self, input, future = 0):
            outputs = []
            h_t = torch.zeros(input.size(0), hidden, dtype=torch.double)
            c_t = torch.zeros(input.size(0), hidden, dtype=torch.double)
            h_t2 = torch.zeros(input.size(0), hidden, dtype=torch.double)
            c_t2 = torch.zeros(input.size(0), hidden, dtype=torch.double)

            for input_t in input.split(1, dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            for i in range(future):# if we should predict the future
                h_t, c_t = self.lstm1(output, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            outputs = torch.cat(outputs, dim=1)
            return outputs

    return Sequence()


def sine_waves(T=5, L=40, N=8):
    """generate_sine_wave.py, smaller."""
    np.random.seed(2)
    x = np.empty((N, L), 'int64')
    x[:] = np.array(range(L)) + np.random.randint(-4 * T, 4 * T, N).reshape(N, 1)
    return np.sin(x / 1.0 / T).astype('float64')


def time_sequence_prediction(m, weights, data, steps=2, future=20):
    torch, nn, optim = m.torch, m.nn, m.optim
    input = torch.from_numpy(data[3:, :-1])
    target = torch.from_numpy(data[3:, 1:])
    test_input = torch.from_numpy(data[:3, :-1])
    test_target = torch.from_numpy(data[:3, 1:])
    seq = sequence_model(m)
    seq.double()
    load(m, seq, weights)
    criterion = nn.MSELoss()
    optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
    log = []
    for i in range(steps):
        losses = []

        def closure():
            optimizer.zero_grad()
            out = seq(input)
            loss = criterion(out, target)
            losses.append(loss.item())
            loss.backward()
            return loss
        optimizer.step(closure)
        with torch.no_grad():
            pred = seq(test_input, future=future)
            loss = criterion(pred[:, :-future], test_target)
            y = pred.detach().numpy()
        log.append((losses, loss.item(), y))
    return (log, [p.detach() for p in seq.parameters()], [p.grad for p in seq.parameters()],
            optimizer.state_dict()['state'][0]['n_iter'], seq.lstm1.weight_ih.dtype == torch.float64,
            pred.requires_grad)


def test_time_sequence_prediction():
    weights = {k: v.astype(np.float64) for k, v in weights_of(sequence_model).items()}
    data = sine_waves()
    # float64 throughout; L-BFGS's 20 inner iterations a step grow rounding differences about 100-fold a step
    (log, params, grads, n_iter, double, tracked), _ = run_both(time_sequence_prediction, weights, data,
                                                               rtol=1e-7, atol=1e-9)
    assert n_iter == 40 and double and not tracked
    (losses1, test1, y1), (losses2, test2, y2) = log
    assert len(losses1) == len(losses2) == 20 and losses2[-1] < losses1[-1] < losses1[0] / 5
    assert y2.shape == (3, 39 + 20) and test2 < test1
    np.testing.assert_allclose(((y2[:, :39] - data[:3, 1:]) ** 2).mean(), test2, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# word_language_model's TransformerModel (the RNN models are in test_programs_probe6_nlp.py)
# ----------------------------------------------------------------------------------------------

CORPUS = ("the cat sat on the mat . the dog sat on the log . a cat and a dog sat on a mat . "
          "the cat saw the dog . the dog saw a cat on the log .").split()


def transformer_lm(m):
    torch, nn, F = m.torch, m.nn, m.F

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.1, max_len=5000):
            super(PositionalEncoding, self).__init__()
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

    class TransformerModel(nn.Transformer):
        """Container module with an encoder, a recurrent or transformer module, and a decoder."""

        def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
            super(TransformerModel, self).__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid,
                                                   num_encoder_layers=nlayers)
            self.model_type = 'Transformer'
            self.src_mask = None
            self.pos_encoder = PositionalEncoding(ninp, dropout)

            self.input_emb = nn.Embedding(ntoken, ninp)
            self.ninp = ninp
            self.decoder = nn.Linear(ninp, ntoken)

            self.init_weights()

        def _generate_square_subsequent_mask(self, sz):
            return torch.log(torch.tril(torch.ones(sz,sz)))

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.input_emb.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, src, has_mask=True):
            if has_mask:
                device = src.device
                if self.src_mask is None or self.src_mask.size(0) != len(src):
                    mask = self._generate_square_subsequent_mask(len(src)).to(device)
                    self.src_mask = mask
            else:
                self.src_mask = None

            src = self.input_emb(src) * math.sqrt(self.ninp)
            src = self.pos_encoder(src)
            output = self.encoder(src, mask=self.src_mask)
            output = self.decoder(output)
            return F.log_softmax(output, dim=-1)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        model = TransformerModel(len(set(CORPUS)), 8, 2, 16, 2, dropout=0.0)
    # nn.Transformer's own dropout (0.1) is no argument of TransformerModel; off here, as the two libraries
    # draw different masks
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0
    return model


def word_language_model_transformer(m, weights, use_optimizer, epochs=3, bptt=5, clip=0.25):
    torch, nn = m.torch, m.nn
    words = sorted(set(CORPUS))
    ids = torch.tensor([words.index(w) for w in CORPUS], dtype=torch.int64)
    ntokens = len(words)

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        data = data.view(bsz, -1).t().contiguous()
        return data

    def get_batch(source, i):
        seq_len = min(bptt, len(source) - 1 - i)
        data = source[i:i+seq_len]
        target = source[i+1:i+1+seq_len].view(-1)
        return data, target

    train_data = batchify(ids, 4)
    val_data = batchify(ids[:24], 2)
    model = load(m, transformer_lm(m), weights)
    criterion = nn.NLLLoss()
    lr = 0.01 if use_optimizer else 5.0
    if use_optimizer:
        optimizer = m.optim.AdamW(model.parameters(), lr=lr)

    def evaluate(data_source):
        model.eval()
        total_loss = 0.
        with torch.no_grad():
            for i in range(0, data_source.size(0) - 1, bptt):
                data, targets = get_batch(data_source, i)
                output = model(data)
                output = output.view(-1, ntokens)
                total_loss += len(data) * criterion(output, targets).item()
        return total_loss / (len(data_source) - 1)

    log, best_val_loss = [], None
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss = 0.
        for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
            data, targets = get_batch(train_data, i)
            if use_optimizer:
                optimizer.zero_grad()
            else:
                model.zero_grad()
            output = model(data)
            output = output.view(-1, ntokens)
            loss = criterion(output, targets)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)  # torch.nn.utils in the original
            if use_optimizer:
                optimizer.step()
            else:
                for p in model.parameters():
                    p.data.add_(p.grad, alpha=-lr)
            total_loss += loss.item()
        val_loss = evaluate(val_data)
        if not best_val_loss or val_loss < best_val_loss:
            best_val_loss = val_loss
        else:
            lr /= 4.0
        log.append((total_loss, val_loss, math.exp(val_loss), lr))

    # generate.py, greedy where it draws by torch.multinomial (the two libraries draw differently)
    model.eval()
    input = torch.tensor([[words.index("the")]], dtype=torch.long)
    generated = []
    with torch.no_grad():
        for i in range(6):
            output = model(input, False)
            word_weights = output[-1].squeeze().div(0.8).exp().cpu()
            word_idx = torch.argmax(word_weights)
            word_tensor = torch.Tensor([[word_idx]]).long()
            input = torch.cat([input, word_tensor], 0)
            generated.append(words[word_idx])
    state = {k: v for k, v in model.state_dict().items() if k != "pos_encoder.pe"}
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, state, grads, generated, word_weights, input, model.src_mask is None, len(state)


@pytest.mark.parametrize("use_optimizer", [False, True], ids=["sgd_by_hand", "adamw"])
def test_word_language_model_transformer(use_optimizer):
    weights = weights_of(transformer_lm)
    ours, theirs = run_both(word_language_model_transformer, weights, use_optimizer, compare=False)
    log, state, grads, generated, word_weights, input, unmasked, n_state = ours
    assert n_state == 2 * 12 + 2 + 2 + 1  # two encoder layers, the encoder's norm, decoder Linear, embedding
    assert unmasked and input.shape == (7, 1) and len(generated) == 6
    np.testing.assert_allclose((word_weights ** 0.8).sum(), 1.0, rtol=1e-5)  # exp(log_softmax / 0.8) ** 0.8: a softmax
    assert log[-1][1] < log[0][1]  # the validation loss
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(ours[0], theirs[0], 1e-4, 1e-5)
        assert_same(ours[3:], theirs[3:], 1e-4, 1e-5)
        assert_same_but_key_biases(state, theirs[1], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[2], 1e-4, 1e-5)


# ----------------------------------------------------------------------------------------------
# fast_neural_style: TransformerNet trained with content and style (gram matrix) losses
# ----------------------------------------------------------------------------------------------


def transformer_net(m):
    torch, nn = m.torch, m.nn

    class ConvLayer(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride):
            super(ConvLayer, self).__init__()
            reflection_padding = kernel_size // 2
            self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            out = self.reflection_pad(x)
            out = self.conv2d(out)
            return out

    class ResidualBlock(nn.Module):
        """ResidualBlock
        introduced in: https://arxiv.org/abs/1512.03385
        """

        def __init__(self, channels):
            super(ResidualBlock, self).__init__()
            self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in1 = nn.InstanceNorm2d(channels, affine=True)
            self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in2 = nn.InstanceNorm2d(channels, affine=True)
            self.relu = nn.ReLU()

        def forward(self, x):
            residual = x
            out = self.relu(self.in1(self.conv1(x)))
            out = self.in2(self.conv2(out))
            out = out + residual
            return out

    class UpsampleConvLayer(nn.Module):
        """Upsamples the input and then does a convolution."""

        def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
            super(UpsampleConvLayer, self).__init__()
            self.upsample = upsample
            reflection_padding = kernel_size // 2
            self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            x_in = x
            if self.upsample:
                x_in = m.F.interpolate(x_in, mode='nearest', scale_factor=self.upsample)
            out = self.reflection_pad(x_in)
            out = self.conv2d(out)
            return out

    class TransformerNet(nn.Module):  # 32/64/128 channels and five residual blocks in the original
        def __init__(self):
            super(TransformerNet, self).__init__()
            self.conv1 = ConvLayer(3, 4, kernel_size=9, stride=1)
            self.in1 = nn.InstanceNorm2d(4, affine=True)
            self.conv2 = ConvLayer(4, 6, kernel_size=3, stride=2)
            self.in2 = nn.InstanceNorm2d(6, affine=True)
            self.conv3 = ConvLayer(6, 8, kernel_size=3, stride=2)
            self.in3 = nn.InstanceNorm2d(8, affine=True)
            self.res1 = ResidualBlock(8)
            self.res2 = ResidualBlock(8)
            self.deconv1 = UpsampleConvLayer(8, 6, kernel_size=3, stride=1, upsample=2)
            self.in4 = nn.InstanceNorm2d(6, affine=True)
            self.deconv2 = UpsampleConvLayer(6, 4, kernel_size=3, stride=1, upsample=2)
            self.in5 = nn.InstanceNorm2d(4, affine=True)
            self.deconv3 = ConvLayer(4, 3, kernel_size=9, stride=1)
            self.relu = nn.ReLU()

        def forward(self, X):
            y = self.relu(self.in1(self.conv1(X)))
            y = self.relu(self.in2(self.conv2(y)))
            y = self.relu(self.in3(self.conv3(y)))
            y = self.res1(y)
            y = self.res2(y)
            y = self.relu(self.in4(self.deconv1(y)))
            y = self.relu(self.in5(self.deconv2(y)))
            y = self.deconv3(y)
            return y

    return TransformerNet()


def small_vgg(m):
    """A stand-in for the pretrained VGG16 cut into slices, frozen as Vgg16(requires_grad=False) is."""
    nn = m.nn

    class Vgg(nn.Module):
        def __init__(self, requires_grad=False):
            super(Vgg, self).__init__()
            features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.MaxPool2d(kernel_size=2, stride=2),
                                     nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True))
            self.slice1 = nn.Sequential()
            self.slice2 = nn.Sequential()
            for x in range(4):
                self.slice1.add_module(str(x), features[x])
            for x in range(4, 7):
                self.slice2.add_module(str(x), features[x])
            if not requires_grad:
                for param in self.parameters():
                    param.requires_grad = False

        def forward(self, X):
            h = self.slice1(X)
            h_relu1_2 = h
            h = self.slice2(h)
            h_relu2_2 = h
            vgg_outputs = namedtuple("VggOutputs", ['relu1_2', 'relu2_2'])
            out = vgg_outputs(h_relu1_2, h_relu2_2)
            return out

    return Vgg()


def fast_neural_style(m, tnet_weights, vgg_weights, images, style_image, content_weight=1e5, style_weight=1e10):
    torch = m.torch

    def gram_matrix(y):
        (b, ch, h, w) = y.size()
        features = y.view(b, ch, w * h)
        features_t = features.transpose(1, 2)
        gram = features.bmm(features_t) / (ch * h * w)
        return gram

    def normalize_batch(batch):
        # normalize using imagenet mean and std
        mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
        std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
        batch = batch.div_(255.0)
        return (batch - mean) / std

    transformer = load(m, transformer_net(m), tnet_weights)
    optimizer = m.optim.Adam(transformer.parameters(), 1e-3)
    mse_loss = m.nn.MSELoss()
    vgg = load(m, small_vgg(m), vgg_weights)
    batch_size = 2
    style = torch.from_numpy(style_image).mul(255)  # style_transform: ToTensor, then x.mul(255)
    style = style.repeat(batch_size, 1, 1, 1)
    features_style = vgg(normalize_batch(style))
    gram_style = [gram_matrix(y) for y in features_style]

    log = []
    transformer.train()
    for batch_id in range(len(images) // batch_size):
        x = torch.from_numpy(images[batch_id * batch_size:(batch_id + 1) * batch_size]).mul(255)
        n_batch = len(x)
        optimizer.zero_grad()

        y = transformer(x)

        y = normalize_batch(y)
        x = normalize_batch(x)

        features_y = vgg(y)
        features_x = vgg(x)

        content_loss = content_weight * mse_loss(features_y.relu2_2, features_x.relu2_2)

        style_loss = 0.
        for ft_y, gm_s in zip(features_y, gram_style):
            gm_y = gram_matrix(ft_y)
            style_loss += mse_loss(gm_y, gm_s[:n_batch, :, :])
        style_loss *= style_weight

        total_loss = content_loss + style_loss
        total_loss.backward()
        optimizer.step()
        log.append((content_loss.item(), style_loss.item()))
        if batch_id == 0:
            first_grads = {n: p.grad.clone() for n, p in transformer.named_parameters()}

    transformer.eval()  # stylize()
    with torch.no_grad():
        output = transformer(torch.from_numpy(images[:1]).mul(255)).cpu()
    img = output[0].clone().clamp(0, 255).numpy()  # save_image
    img = img.transpose(1, 2, 0).astype("uint8")
    frozen = all(not p.requires_grad and p.grad is None for p in vgg.parameters())
    return log, dict(transformer.state_dict()), first_grads, output, img, frozen, gram_style


# the parameters that only shift a channel an instance norm then centres: their gradient is rounding noise
STYLE_NULL = {f"{name}.conv2d.bias" for name in ("conv1", "conv2", "conv3", "res1.conv1", "res1.conv2", "res2.conv1",
                                                 "res2.conv2", "deconv1", "deconv2")}
STYLE_NULL |= {"res1.in2.bias", "res2.in2.bias"}  # a residual block's output shift: centred by the next norm


def test_fast_neural_style():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 3, 12, 12)).astype(np.float32)
    style_image = rng.uniform(0, 1, (1, 3, 12, 12)).astype(np.float32)
    ours, theirs = run_both(fast_neural_style, weights_of(transformer_net), weights_of(small_vgg), images, style_image,
                            compare=False)
    log, state, grads, output, img, frozen, gram_style = ours
    assert frozen and img.shape == (12, 12, 3) and img.dtype == np.uint8 and output.shape == (1, 3, 12, 12)
    assert [g.shape for g in gram_style] == [(2, 4, 4), (2, 6, 6)]
    np.testing.assert_allclose(gram_style[0][0], gram_style[0][0].T, rtol=1e-6)
    largest = max(np.abs(g).max() for g in grads.values())
    assert {n for n, g in grads.items() if np.abs(g).max() < 1e-6 * largest} == STYLE_NULL
    if theirs is not None:
        kept = lambda params: {n: v for n, v in params.items() if n not in STYLE_NULL}
        assert_same(log, theirs[0], 1e-5, 0)
        assert_same(kept(state), kept(theirs[1]), 1e-4, 1e-5)
        # float32 gradients of up to 1e5 (a style weight of 1e10), summed from terms larger still
        assert_same(kept(grads), kept(theirs[2]), 1e-4, 1e-5 * largest)
        assert_same(ours[3:], theirs[3:], 1e-4, 1e-3)


# ----------------------------------------------------------------------------------------------
# mnist_forward_forward: Hinton's forward-forward algorithm, each layer trained by its own goodness
# ----------------------------------------------------------------------------------------------


class FFArgs:
    lr = 0.03
    threshold = 2.0
    epochs = 15
    log_interval = 5


def ff_net(m, dims, args=FFArgs):
    torch, nn = m.torch, m.nn
    Adam = m.optim.Adam
    device = torch.device("cpu")

    def overlay_y_on_x(x, y, classes=10):
        x_ = x.clone()
        x_[:, :classes] *= 0.0
        x_[range(x.shape[0]), y] = x.max()
        return x_

    class Net(nn.Module):
        def __init__(self, dims):

            super().__init__()
            self.layers = []
            for d in range(len(dims) - 1):
                self.layers = self.layers + [Layer(dims[d], dims[d + 1]).to(device)]

        def predict(self, x):
            goodness_per_label = []
            for label in range(10):
                h = overlay_y_on_x(x, label)
                goodness = []
                for layer in self.layers:
                    h = layer(h)
                    goodness = goodness + [h.pow(2).mean(1)]
                goodness_per_label += [sum(goodness).unsqueeze(1)]
            goodness_per_label = torch.cat(goodness_per_label, 1)
            return goodness_per_label.argmax(1)

        def train(self, x_pos, x_neg):
            h_pos, h_neg = x_pos, x_neg
            for i, layer in enumerate(self.layers):
                h_pos, h_neg = layer.train(h_pos, h_neg)

    class Layer(nn.Linear):
        def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
            super().__init__(in_features, out_features, bias, device, dtype)
            self.relu = nn.ReLU()
            self.opt = Adam(self.parameters(), lr=args.lr)
            self.threshold = args.threshold
            self.num_epochs = args.epochs
            self.losses = []  # printed every log_interval epochs in the original

        def forward(self, x):
            x_direction = x / (x.norm(2, 1, keepdim=True) + 1e-4)
            return self.relu(torch.mm(x_direction, self.weight.T) + self.bias.unsqueeze(0))

        def train(self, x_pos, x_neg):
            for i in range(self.num_epochs):
                g_pos = self.forward(x_pos).pow(2).mean(1)
                g_neg = self.forward(x_neg).pow(2).mean(1)
                loss = torch.log1p(
                    torch.exp(
                        torch.cat([-g_pos + self.threshold, g_neg - self.threshold])
                    )
                ).mean()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.losses.append(loss.item())
            return self.forward(x_pos).detach(), self.forward(x_neg).detach()

    return Net(dims), overlay_y_on_x


def forward_forward(m, weights, x_np, y_np, y_neg_np):
    torch = m.torch
    net, overlay_y_on_x = ff_net(m, [20, 16, 16])
    with torch.no_grad():
        for layer, (w, b) in zip(net.layers, weights):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    x_pos = overlay_y_on_x(x, y)
    y_neg = torch.from_numpy(y_neg_np)  # get_y_neg draws a wrong label for each by torch.randint
    x_neg = overlay_y_on_x(x, y_neg)
    net.train(x_pos, x_neg)
    train_error = 1.0 - net.predict(x).eq(y).float().mean().item()
    return ([layer.losses for layer in net.layers], train_error, net.predict(x), x_pos, x_neg,
            [(layer.weight.detach(), layer.bias.detach(), layer.weight.grad) for layer in net.layers],
            len(list(net.parameters())), [layer.training for layer in net.layers])


def test_mnist_forward_forward():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((10, 20)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    x = prototypes[y] + 0.3 * rng.standard_normal((40, 20)).astype(np.float32)
    y_neg = (y + rng.integers(1, 10, 40)) % 10
    weights = [(rng.uniform(-0.2, 0.2, (16, 20)).astype(np.float32), rng.uniform(-0.2, 0.2, 16).astype(np.float32)),
               (rng.uniform(-0.25, 0.25, (16, 16)).astype(np.float32), rng.uniform(-0.25, 0.25, 16).astype(np.float32))]
    ours, _ = run_both(forward_forward, weights, x, y, y_neg, rtol=1e-4, atol=1e-5)
    losses, train_error, predicted, x_pos, x_neg, layers, n_registered, training = ours
    assert all(len(l) == 15 and l[-1] < l[0] for l in losses)
    assert n_registered == 0 and training == [True, True]  # a plain list registers nothing; train() is overridden
    expected_pos = x.copy()
    expected_pos[:, :10] = 0.0
    expected_pos[np.arange(40), y] = x.max()
    np.testing.assert_array_equal(x_pos, expected_pos)
    np.testing.assert_allclose(train_error, 1.0 - (predicted == y).mean(), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# siamese_network: a ResNet feature extractor shared by two images, a BCE-trained similarity head
# ----------------------------------------------------------------------------------------------


def tiny_resnet(m, num_classes=10):
    """torchvision's resnet18 with its module names, cut to one BasicBlock in each of two stages."""
    torch, nn = m.torch, m.nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            out = self.relu(out)
            return out

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(4)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = nn.Sequential(BasicBlock(4, 4))
            self.layer2 = nn.Sequential(BasicBlock(4, 8, 2, nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False),
                                                                          nn.BatchNorm2d(8))))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer2(self.layer1(x))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    return ResNet()


def siamese_net(m):
    torch, nn = m.torch, m.nn

    class SiameseNetwork(nn.Module):
        def __init__(self):
            super(SiameseNetwork, self).__init__()
            # get resnet model
            self.resnet = tiny_resnet(m)
            # over-write the first conv layer to be able to read MNIST images
            self.resnet.conv1 = nn.Conv2d(1, 4, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)
            self.fc_in_features = self.resnet.fc.in_features
            # remove the last layer of resnet18 (linear layer which is before avgpool layer)
            self.resnet = nn.Sequential(*(list(self.resnet.children())[:-1]))
            # add linear layers to compare between the features of the two images
            self.fc = nn.Sequential(
                nn.Linear(self.fc_in_features * 2, 16),
                nn.ReLU(inplace=True),
                nn.Linear(16, 1),
            )
            self.sigmoid = nn.Sigmoid()
            # initialize the weights
            self.resnet.apply(self.init_weights)
            self.fc.apply(self.init_weights)

        def init_weights(self, m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                m.bias.data.fill_(0.01)

        def forward_once(self, x):
            output = self.resnet(x)
            output = output.view(output.size()[0], -1)
            return output

        def forward(self, input1, input2):
            output1 = self.forward_once(input1)
            output2 = self.forward_once(input2)
            output = torch.cat((output1, output2), 1)
            output = self.fc(output)
            output = self.sigmoid(output)
            return output

    return SiameseNetwork()


def siamese_pairs(m, n=12):
    """APP_MATCHER: even indices a pair of one class (target 1), odd ones of two classes (target 0)."""
    torch = m.torch
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((3, 1, 12, 12)).astype(np.float32)
    pairs = []
    for index in range(n):
        c1 = index % 3
        c2 = c1 if index % 2 == 0 else (c1 + 1) % 3
        image_1 = prototypes[c1] + 0.3 * rng.standard_normal((1, 12, 12)).astype(np.float32)
        image_2 = prototypes[c2] + 0.3 * rng.standard_normal((1, 12, 12)).astype(np.float32)
        target = torch.tensor(1 if c1 == c2 else 0, dtype=torch.float)
        pairs.append((torch.from_numpy(image_1), torch.from_numpy(image_2), target))
    return pairs


def siamese_network(m, weights, epochs=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    train_loader = torch.utils.data.DataLoader(siamese_pairs(m), batch_size=4)
    model = load(m, siamese_net(m), weights)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    log, lrs = [], []
    for epoch in range(1, epochs + 1):
        model.train()
        criterion = nn.BCELoss()
        for batch_idx, (images_1, images_2, targets) in enumerate(train_loader):
            optimizer.zero_grad()
            outputs = model(images_1, images_2).squeeze()
            loss = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            log.append(loss.item())
        model.eval()  # test()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for (images_1, images_2, targets) in train_loader:
                outputs = model(images_1, images_2).squeeze()
                test_loss += criterion(outputs, targets).sum().item()  # sum up batch loss
                pred = torch.where(outputs > 0.5, 1, 0)
                correct += pred.eq(targets.view_as(pred)).sum().item()
        log.append((test_loss / len(train_loader.dataset), correct))
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, lrs, dict(model.state_dict()), grads, pred, pred.dtype == torch.int64, outputs


def test_siamese_network():
    weights = weights_of(siamese_net)
    assert "resnet.5.0.conv1.weight" in weights and not any(k.startswith("resnet.7") for k in weights)  # fc cut off
    ours, _ = run_both(siamese_network, weights, rtol=1e-4, atol=1e-5)
    log, lrs, state, grads, pred, is_long, outputs = ours
    assert lrs == pytest.approx([0.7, 0.49]) and is_long
    np.testing.assert_array_equal(pred, (outputs > 0.5).astype(np.int64))
    assert len(log) == 8 and all(0 <= correct <= 12 for _, correct in (log[3], log[7]))
    assert state["resnet.1.num_batches_tracked"] == 2 * 3 * 2  # both images of 3 batches for 2 epochs


# ----------------------------------------------------------------------------------------------
# super_resolution: an ESPCN-style sub-pixel network
# ----------------------------------------------------------------------------------------------


def sr_net(m, upscale_factor=2):
    nn = m.nn
    init = nn.init

    class Net(nn.Module):  # 64/64/32 channels in the original
        def __init__(self, upscale_factor):
            super(Net, self).__init__()

            self.relu = nn.ReLU()
            self.conv1 = nn.Conv2d(1, 16, (5, 5), (1, 1), (2, 2))
            self.conv2 = nn.Conv2d(16, 16, (3, 3), (1, 1), (1, 1))
            self.conv3 = nn.Conv2d(16, 8, (3, 3), (1, 1), (1, 1))
            self.conv4 = nn.Conv2d(8, upscale_factor ** 2, (3, 3), (1, 1), (1, 1))
            self.pixel_shuffle = nn.PixelShuffle(upscale_factor)

            self._initialize_weights()

        def forward(self, x):
            x = self.relu(self.conv1(x))
            x = self.relu(self.conv2(x))
            x = self.relu(self.conv3(x))
            x = self.pixel_shuffle(self.conv4(x))
            return x

        def _initialize_weights(self):
            init.orthogonal_(self.conv1.weight, init.calculate_gain('relu'))
            init.orthogonal_(self.conv2.weight, init.calculate_gain('relu'))
            init.orthogonal_(self.conv3.weight, init.calculate_gain('relu'))
            init.orthogonal_(self.conv4.weight)

    return Net(upscale_factor)


def super_resolution(m, weights, hr_images, upscale_factor=2, epochs=2):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    DataLoader, TensorDataset = torch.utils.data.DataLoader, torch.utils.data.TensorDataset
    target = torch.from_numpy(hr_images)
    input = F.avg_pool2d(target, upscale_factor)  # for PIL's bicubic Resize(crop_size // upscale_factor)
    train_set = TensorDataset(input[:6], target[:6])
    test_set = TensorDataset(input[6:], target[6:])
    training_data_loader = DataLoader(dataset=train_set, batch_size=3, shuffle=False)
    testing_data_loader = DataLoader(dataset=test_set, batch_size=2, shuffle=False)
    model = load(m, sr_net(m, upscale_factor), weights)
    criterion = nn.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    log = []
    for epoch in range(1, epochs + 1):
        epoch_loss = 0
        for iteration, batch in enumerate(training_data_loader, 1):
            input, target = batch[0], batch[1]
            optimizer.zero_grad()
            loss = criterion(model(input), target)
            epoch_loss += loss.item()
            loss.backward()
            optimizer.step()
        avg_psnr = 0
        with torch.no_grad():
            for batch in testing_data_loader:
                input, target = batch[0], batch[1]
                prediction = model(input)
                mse = criterion(prediction, target)
                psnr = 10 * log10(1 / mse.item())
                avg_psnr += psnr
        log.append((epoch_loss / len(training_data_loader), avg_psnr / len(testing_data_loader)))
    buffer = io.BytesIO()  # checkpoint(): through a file and back, a state_dict (not the pickled module)
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = sr_net(m, upscale_factor)
    restored.load_state_dict(torch.load(buffer))
    # super_resolve.py on one 16x16 luminance image
    input = torch.from_numpy(hr_images[0, 0]).view(1, -1, 16, 16)
    out = restored(input)
    out_img_y = out[0].detach().numpy()
    out_img_y *= 255.0
    out_img_y = out_img_y.clip(0, 255)
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, dict(model.state_dict()), grads, np.uint8(out_img_y[0]), out


def orthogonal_weights(m):
    """Net._initialize_weights: each weight, flattened to (out, in*kh*kw), has orthonormal rows times the gain."""
    m.torch.manual_seed(0)
    net = sr_net(m, 2)
    grams = []
    relu = math.sqrt(2)
    for conv, gain in ((net.conv1, relu), (net.conv2, relu), (net.conv3, relu), (net.conv4, 1.0)):
        w = conv.weight.detach().reshape(conv.weight.shape[0], -1)
        grams.append((w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w) / gain ** 2)
    init = m.nn.init
    return grams, init.calculate_gain('relu'), init.calculate_gain('leaky_relu', 0.2), init.calculate_gain('tanh')


def test_super_resolution():
    rng = np.random.default_rng(0)
    rows, cols = np.meshgrid(np.linspace(0, 1, 16), np.linspace(0, 1, 16), indexing="ij")
    frequencies = rng.uniform(2, 6, 8)
    hr = np.stack([0.5 + 0.4 * np.sin(f * 6 * rows) * np.cos(5 * cols) for f in frequencies])[:, None]
    hr = np.clip(hr + 0.05 * rng.standard_normal(hr.shape), 0, 1).astype(np.float32)
    ours, _ = run_both(super_resolution, weights_of(sr_net), hr, rtol=1e-4, atol=1e-4)
    log, state, grads, img, out = ours
    np.testing.assert_array_equal(img, np.uint8(out[0, 0].clip(0, 255)))  # .numpy() shared out's memory: *= 255
    assert out.shape == (1, 1, 32, 32) and img.shape == (32, 32) and log[1][0] < log[0][0]
    (grams, relu, leaky, tanh), _ = run_both(orthogonal_weights, compare=False)
    for gram in grams:
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)
    assert (relu, leaky, tanh) == pytest.approx((math.sqrt(2), math.sqrt(2 / 1.04), 5 / 3))


# ----------------------------------------------------------------------------------------------
# mnist_rnn: an LSTM reading an image row by row
# ----------------------------------------------------------------------------------------------


def rnn_net(m, side=8):
    nn, F = m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.rnn = nn.LSTM(input_size=side, hidden_size=12, batch_first=True)
            self.batchnorm = nn.BatchNorm1d(12)
            self.dropout1 = nn.Dropout2d(0.25)
            self.dropout2 = nn.Dropout2d(0.5)
            self.fc1 = nn.Linear(12, 10)
            self.fc2 = nn.Linear(10, 4)

        def forward(self, input):
            # Shape of input is (batch_size,1, side, side); (batch_size, side, side) for a batch-first RNN
            input = input.reshape(-1, side, side)
            output, hidden = self.rnn(input)

            # Get last output of RNN
            output = output[:, -1, :]
            output = self.batchnorm(output)
            output = self.dropout1(output)
            output = self.fc1(output)
            output = F.relu(output)
            output = self.dropout2(output)
            output = self.fc2(output)
            output = F.log_softmax(output, dim=1)
            return output

    return Net()


def mnist_rnn(m, weights, images, labels, epochs=2, dropout=False):
    torch, F, optim = m.torch, m.F, m.optim
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=8)
    test_loader = torch.utils.data.DataLoader(dataset, batch_size=16)
    model = load(m, rnn_net(m), weights)
    if not dropout:  # the two libraries draw different masks
        model.dropout1.p = model.dropout2.p = 0.0
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    log = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(1, epochs + 1):
            model.train()
            for batch_idx, (data, target) in enumerate(train_loader):
                optimizer.zero_grad()
                output = model(data)
                loss = F.nll_loss(output, target)
                loss.backward()
                optimizer.step()
                log.append(loss.item())
            model.eval()
            test_loss = 0
            correct = 0
            with torch.no_grad():
                for data, target in test_loader:
                    output = model(data)
                    test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
                    pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
                    correct += pred.eq(target.view_as(pred)).sum().item()
            log.append((test_loss / len(test_loader.dataset), correct))
            scheduler.step()
    dropout2d_warned = any("Received a 2-D input to dropout2d" in str(w.message) for w in caught)
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, dict(model.state_dict()), grads, dropout2d_warned


def dropout2d_on_rows(m):
    """Dropout2d given (N, features), as mnist_rnn does: PyTorch warns, and drops single elements (no channels)."""
    torch = m.torch
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = m.nn.Dropout2d(0.5)(torch.ones(64, 32))
    return y


def test_mnist_rnn():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 32)
    images = prototypes[labels] + 0.5 * rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    weights = weights_of(rnn_net)
    (log, state, grads, warned), _ = run_both(mnist_rnn, weights, images, labels, rtol=1e-4, atol=1e-5)
    assert warned and log[-1][0] < log[4][0] and state["batchnorm.num_batches_tracked"] == 8
    (log, *_), _ = run_both(mnist_rnn, weights, images, labels, dropout=True, compare=False)
    assert len(log) == 10 and all(np.isfinite(v) for v in log[:4])
    y, _ = run_both(dropout2d_on_rows, compare=False)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert not (y == 0).all(axis=1).any()  # no row dropped whole (by chance: 2^-32 each)
    assert 0.4 < (y == 0).mean() < 0.6


# ----------------------------------------------------------------------------------------------
# language_translation: a sequence-to-sequence nn.Transformer with padding masks and greedy decoding
# ----------------------------------------------------------------------------------------------

PAD, BOS, EOS = 1, 2, 3
SRC_VOCAB, TGT_VOCAB = 9, 10


def translator(m, dropout=0.0):
    torch, nn = m.torch, m.nn

    class PositionalEncoding(nn.Module):
        def __init__(
            self,
            emb_size,
            dropout,
            maxlen=5000
        ):
            super(PositionalEncoding, self).__init__()
            den = torch.exp(- torch.arange(0, emb_size, 2)* math.log(10000) / emb_size)
            pos = torch.arange(0, maxlen).reshape(maxlen, 1)
            pos_embedding = torch.zeros((maxlen, emb_size))
            pos_embedding[:, 0::2] = torch.sin(pos * den)
            pos_embedding[:, 1::2] = torch.cos(pos * den)
            pos_embedding = pos_embedding.unsqueeze(-2)

            self.dropout = nn.Dropout(dropout)
            self.register_buffer('pos_embedding', pos_embedding)

        def forward(self, token_embedding):
            return self.dropout(token_embedding + self.pos_embedding[:token_embedding.size(0), :])

    class Translator(nn.Module):
        def __init__(
                self,
                num_encoder_layers,
                num_decoder_layers,
                embed_size,
                num_heads,
                src_vocab_size,
                tgt_vocab_size,
                dim_feedforward,
                dropout
            ):
            super(Translator, self).__init__()

            # Output of embedding must be equal (embed_size)
            self.src_embedding = nn.Embedding(src_vocab_size, embed_size)
            self.tgt_embedding = nn.Embedding(tgt_vocab_size, embed_size)

            self.pos_enc = PositionalEncoding(embed_size, dropout)

            self.transformer = nn.Transformer(
                d_model=embed_size,
                nhead=num_heads,
                num_encoder_layers=num_encoder_layers,
                num_decoder_layers=num_decoder_layers,
                dim_feedforward=dim_feedforward,
                dropout=dropout
            )

            self.ff = nn.Linear(embed_size, tgt_vocab_size)

            self._init_weights()

        def _init_weights(self):
            for p in self.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

        def forward(self, src, trg, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask, memory_key_padding_mask):

            src_emb = self.pos_enc(self.src_embedding(src))
            tgt_emb = self.pos_enc(self.tgt_embedding(trg))

            outs = self.transformer(
                src_emb,
                tgt_emb,
                src_mask,
                tgt_mask,
                None,
                src_padding_mask,
                tgt_padding_mask,
                memory_key_padding_mask
            )

            return self.ff(outs)

        def encode(self, src, src_mask):
            embed = self.src_embedding(src)
            pos_enc = self.pos_enc(embed)
            return self.transformer.encoder(pos_enc, src_mask)

        def decode(self, tgt, memory, tgt_mask):
            embed = self.tgt_embedding(tgt)
            pos_enc = self.pos_enc(embed)
            return self.transformer.decoder(pos_enc, memory, tgt_mask)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        return Translator(2, 2, 8, 2, SRC_VOCAB, TGT_VOCAB, 16, dropout)  # 5, 5, 512, 8, ..., 512, 0.1 by default


def translation_pairs():
    """A made-up language pair: the target is the source reversed, each token shifted by one."""
    rng = np.random.default_rng(1)
    pairs = []
    for n in (3, 5, 4, 2, 5, 3):
        src = [int(t) for t in rng.integers(4, SRC_VOCAB, n)]
        pairs.append((src, [t + 1 for t in reversed(src)]))
    return pairs


def language_translation(m, weights, pairs, epochs=3):
    torch, nn = m.torch, m.nn
    DEVICE = torch.device("cpu")

    def generate_square_subsequent_mask(size, device):
        mask = (torch.triu(torch.ones((size, size), device=device)) == 1).transpose(0, 1)
        mask = mask.float().masked_fill(mask == 0, float('-inf')).masked_fill(mask == 1, float(0.0))
        return mask

    def create_mask(src, tgt, pad_idx, device):
        src_seq_len = src.shape[0]
        tgt_seq_len = tgt.shape[0]
        tgt_mask = generate_square_subsequent_mask(tgt_seq_len, device)
        src_mask = torch.zeros((src_seq_len, src_seq_len),device=device).type(torch.bool)
        src_padding_mask = (src == pad_idx).transpose(0, 1)
        tgt_padding_mask = (tgt == pad_idx).transpose(0, 1)
        return src_mask, tgt_mask, src_padding_mask, tgt_padding_mask

    def collate_fn(batch):  # data.py: <bos> tokens <eos>, padded by pad_sequence
        src_batch, tgt_batch = [], []
        for src_sample, tgt_sample in batch:
            src_batch.append(torch.cat([torch.tensor([BOS]), torch.tensor(src_sample), torch.tensor([EOS])]))
            tgt_batch.append(torch.cat([torch.tensor([BOS]), torch.tensor(tgt_sample), torch.tensor([EOS])]))
        src_batch = nn.utils.rnn.pad_sequence(src_batch, padding_value=PAD)
        tgt_batch = nn.utils.rnn.pad_sequence(tgt_batch, padding_value=PAD)
        return src_batch, tgt_batch

    train_dl = torch.utils.data.DataLoader(pairs, batch_size=3, collate_fn=collate_fn)
    model = load(m, translator(m), weights).to(DEVICE)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD)
    optim = m.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.98), eps=1e-9)  # lr=1e-4 in the original

    def train(model, train_dl, loss_fn, optim):
        losses = 0
        model.train()
        for src, tgt in train_dl:
            src = src.to(DEVICE)
            tgt = tgt.to(DEVICE)
            tgt_input = tgt[:-1, :]
            src_mask, tgt_mask, src_padding_mask, tgt_padding_mask = create_mask(src, tgt_input, PAD, DEVICE)
            logits = model(src, tgt_input, src_mask, tgt_mask,src_padding_mask, tgt_padding_mask, src_padding_mask)
            optim.zero_grad()
            tgt_out = tgt[1:, :]
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
            loss.backward()
            optim.step()
            losses += loss.item()
        return losses / len(list(train_dl))

    def validate(model, valid_dl, loss_fn):
        losses = 0
        model.eval()
        for src, tgt in valid_dl:
            tgt_input = tgt[:-1, :]
            src_mask, tgt_mask, src_padding_mask, tgt_padding_mask = create_mask(src, tgt_input, PAD, DEVICE)
            logits = model(src, tgt_input, src_mask, tgt_mask,src_padding_mask, tgt_padding_mask, src_padding_mask)
            tgt_out = tgt[1:, :]
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
            losses += loss.item()
        return losses / len(list(valid_dl))

    def greedy_decode(model, src, src_mask, max_len, start_symbol, end_symbol):
        src = src.to(DEVICE)
        src_mask = src_mask.to(DEVICE)
        memory = model.encode(src, src_mask)
        ys = torch.ones(1, 1).fill_(start_symbol).type(torch.long).to(DEVICE)
        for _ in range(max_len-1):
            memory = memory.to(DEVICE)
            tgt_mask = (generate_square_subsequent_mask(ys.size(0), DEVICE).type(torch.bool)).to(DEVICE)
            out = model.decode(ys, memory, tgt_mask)
            out = out.transpose(0, 1)
            prob = model.ff(out[:, -1])
            _, next_word = torch.max(prob, dim=1)
            next_word = next_word.item()
            ys = torch.cat([ys, torch.ones(1, 1).type_as(src.data).fill_(next_word)], dim=0)
            if next_word == end_symbol:
                break
        return ys

    log = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a float target mask with a bool padding mask: PyTorch's deprecation
        for epoch in range(1, epochs + 1):
            train_loss = train(model, train_dl, loss_fn, optim)
            grads = {n: p.grad for n, p in model.named_parameters()}
            log.append((train_loss, validate(model, train_dl, loss_fn)))
        model.eval()  # inference()
        src = torch.cat([torch.tensor([BOS]), torch.tensor(pairs[0][0]), torch.tensor([EOS])]).view(-1, 1)
        num_tokens = src.shape[0]
        src_mask = (torch.zeros(num_tokens, num_tokens)).type(torch.bool)
        tgt_tokens = greedy_decode(
            model, src, src_mask, max_len=num_tokens+5, start_symbol=BOS, end_symbol=EOS
        ).flatten()
    state = {k: v for k, v in model.state_dict().items() if k != "pos_enc.pos_embedding"}
    return log, state, grads, [int(t) for t in tgt_tokens.cpu().numpy()], tgt_tokens.dtype == torch.int64


def test_language_translation():
    ours, theirs = run_both(language_translation, weights_of(translator), translation_pairs(), compare=False)
    log, state, grads, tokens, is_long = ours
    assert log[-1][0] < log[0][0] and log[-1][1] < log[0][1]
    assert is_long and tokens[0] == BOS and 1 < len(tokens) <= 5 + 2 + 5 - 1 + 1
    assert EOS not in tokens[:-1] and all(0 <= t < TGT_VOCAB for t in tokens)
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(ours[0], theirs[0], 1e-5, 1e-6)
        assert_same(ours[3:], theirs[3:], 0, 0)
        assert_same_but_key_biases(state, theirs[1], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[2], 1e-4, 1e-5)


# ----------------------------------------------------------------------------------------------
# legacy/snli: premise and hypothesis through one bidirectional 2-layer LSTM encoder; a Linear that
# flattens its leading dims by a cooperative-inheritance mixin (class Linear(Bottle, nn.Linear))
# ----------------------------------------------------------------------------------------------

SNLI = SimpleNamespace(n_embed=12, d_embed=6, d_proj=5, projection=True, d_hidden=4, n_layers=2, dp_ratio=0.0,
                       birnn=True, d_out=3, fix_emb=False)
SNLI.n_cells = SNLI.n_layers * 2

def snli_classifier(m, config=SNLI):
    torch, nn = m.torch, m.nn

    class Bottle(nn.Module):

        def forward(self, input):
            if len(input.size()) <= 2:
                return super(Bottle, self).forward(input)
            size = input.size()[:2]
            out = super(Bottle, self).forward(input.view(size[0]*size[1], -1))
            return out.view(size[0], size[1], -1)

    class Linear(Bottle, nn.Linear):
        pass

    class Encoder(nn.Module):

        def __init__(self, config):
            super(Encoder, self).__init__()
            self.config = config
            input_size = config.d_proj if config.projection else config.d_embed
            dropout = 0 if config.n_layers == 1 else config.dp_ratio
            self.rnn = nn.LSTM(input_size=input_size, hidden_size=config.d_hidden,
                            num_layers=config.n_layers, dropout=dropout,
                            bidirectional=config.birnn)

        def forward(self, inputs):
            batch_size = inputs.size()[1]
            state_shape = self.config.n_cells, batch_size, self.config.d_hidden
            h0 = c0 = inputs.new_zeros(state_shape)
            outputs, (ht, ct) = self.rnn(inputs, (h0, c0))
            return ht[-1] if not self.config.birnn else ht[-2:].transpose(0, 1).contiguous().view(batch_size, -1)

    class SNLIClassifier(nn.Module):

        def __init__(self, config):
            super(SNLIClassifier, self).__init__()
            self.config = config
            self.embed = nn.Embedding(config.n_embed, config.d_embed)
            self.projection = Linear(config.d_embed, config.d_proj)
            self.encoder = Encoder(config)
            self.dropout = nn.Dropout(p=config.dp_ratio)
            self.relu = nn.ReLU()
            seq_in_size = 2*config.d_hidden
            if self.config.birnn:
                seq_in_size *= 2
            lin_config = [seq_in_size]*2
            self.out = nn.Sequential(
                Linear(*lin_config),
                self.relu,
                self.dropout,
                Linear(*lin_config),
                self.relu,
                self.dropout,
                Linear(*lin_config),
                self.relu,
                self.dropout,
                Linear(seq_in_size, config.d_out))

        def forward(self, batch):
            prem_embed = self.embed(batch.premise)
            hypo_embed = self.embed(batch.hypothesis)
            if self.config.fix_emb:
                prem_embed = prem_embed.detach()
                hypo_embed = hypo_embed.detach()
            if self.config.projection:
                prem_embed = self.relu(self.projection(prem_embed))
                hypo_embed = self.relu(self.projection(hypo_embed))
            premise = self.encoder(prem_embed)
            hypothesis = self.encoder(hypo_embed)
            scores = self.out(torch.cat([premise, hypothesis], 1))
            return scores

    return SNLIClassifier(config)


def snli_batches(n_batches=4, batch_size=5):
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(n_batches):
        length = int(rng.integers(3, 7))
        premise = rng.integers(0, SNLI.n_embed, (length, batch_size))
        hypothesis = premise.copy()
        label = rng.integers(0, 3, batch_size)
        # entailment: the same sentence; contradiction: reversed; neutral: other words
        hypothesis[:, label == 1] = premise[::-1, label == 1]
        hypothesis[:, label == 2] = rng.integers(0, SNLI.n_embed, (length, int((label == 2).sum())))
        batches.append((premise, hypothesis, label))
    return batches


def snli(m, weights, batches, epochs=3):
    torch, nn = m.torch, m.nn
    model = load(m, snli_classifier(m), weights)
    criterion = nn.CrossEntropyLoss()
    opt = m.optim.Adam(model.parameters(), lr=0.01)
    log_template = ' '.join('{:>5.0f},{:>9.0f},{:>8.6f},{:12.4f}'.split(','))
    log = []
    iterations = 0
    for epoch in range(epochs):
        n_correct, n_total = 0, 0
        for batch_idx, (p, h, l) in enumerate(batches):
            batch = SimpleNamespace(premise=torch.from_numpy(p), hypothesis=torch.from_numpy(h),
                                    label=torch.from_numpy(l), batch_size=len(l))
            model.train(); opt.zero_grad()
            iterations += 1
            answer = model(batch)
            n_correct += (torch.max(answer, 1)[1].view(batch.label.size()) == batch.label).sum().item()
            n_total += batch.batch_size
            train_acc = 100. * n_correct/n_total
            loss = criterion(answer, batch.label)
            loss.backward(); opt.step()
        log.append(log_template.format(epoch, iterations, loss.item(), train_acc))
    n_modules = len(list(model.out.modules()))
    return log, dict(model.state_dict()), {n: p.grad for n, p in model.named_parameters()}, n_modules, answer


def test_snli_classifier():
    weights = weights_of(snli_classifier)
    assert "encoder.rnn.weight_hh_l1_reverse" in weights and "out.9.weight" in weights
    ours, theirs = run_both(snli, weights, snli_batches(), compare=False)
    if theirs is not None:
        assert_same(numbers_parsed(ours), numbers_parsed(theirs), 1e-4, 1e-5)
    log, state, grads, n_modules, answer = ours
    assert n_modules == 1 + 4 + 2  # Sequential, 4 Linears, the ReLU and the Dropout (each listed once)
    assert answer.shape == (5, 3) and len(log) == 3
    losses = [float(line.split()[2]) for line in log]
    assert losses[-1] < losses[0] and all(len(line) == 5 + 1 + 9 + 1 + 8 + 1 + 12 for line in log)


# ----------------------------------------------------------------------------------------------
# imagenet/main.py: top-k accuracy, AverageMeter over tensors, SGD with momentum and weight decay,
# StepLR, and resuming from a checkpoint of model, optimizer and scheduler state
# ----------------------------------------------------------------------------------------------

class Summary(Enum):
    NONE = 0
    AVERAGE = 1
    SUM = 2
    COUNT = 3

class AverageMeter(object):
    """Computes and stores the average and current value"""
    def __init__(self, name, fmt=':f', summary_type=Summary.AVERAGE):
        self.name = name
        self.fmt = fmt
        self.summary_type = summary_type
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count

    def __str__(self):
        fmtstr = '{name} {val' + self.fmt + '} ({avg' + self.fmt + '})'
        return fmtstr.format(**self.__dict__)

def imagenet(m, weights, images, labels, resume_at=None, epochs=3):
    torch, nn = m.torch, m.nn
    StepLR = m.optim.lr_scheduler.StepLR

    def accuracy(output, target, topk=(1,)):
        """Computes the accuracy over the k top predictions for the specified values of k"""
        with torch.no_grad():
            maxk = max(topk)
            batch_size = target.size(0)

            _, pred = output.topk(maxk, 1, True, True)
            pred = pred.t()
            correct = pred.eq(target.view(1, -1).expand_as(pred))

            res = []
            for k in topk:
                correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
                res.append(correct_k.mul_(100.0 / batch_size))
            return res

    def make():
        model = load(m, tiny_resnet(m), weights)
        criterion = nn.CrossEntropyLoss()
        optimizer = m.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
        scheduler = StepLR(optimizer, step_size=2, gamma=0.1)
        return model, criterion, optimizer, scheduler

    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)
    val_loader = torch.utils.data.DataLoader(dataset, batch_size=12, shuffle=False)

    def train(train_loader, model, criterion, optimizer, epoch):
        losses = AverageMeter('Loss', ':.4e', Summary.NONE)
        top1 = AverageMeter('Acc@1', ':6.2f', Summary.NONE)
        top5 = AverageMeter('Acc@5', ':6.2f', Summary.NONE)
        model.train()
        for i, (images, target) in enumerate(train_loader):
            output = model(images)
            loss = criterion(output, target)
            acc1, acc5 = accuracy(output, target, topk=(1, 5))
            losses.update(loss.item(), images.size(0))
            top1.update(acc1[0], images.size(0))
            top5.update(acc5[0], images.size(0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return str(losses), top1.avg, top5.avg

    def validate(val_loader, model, criterion):
        top1 = AverageMeter('Acc@1', ':6.2f', Summary.AVERAGE)
        losses = AverageMeter('Loss', ':.4e', Summary.NONE)
        model.eval()
        with torch.no_grad():
            for i, (images, target) in enumerate(val_loader):
                output = model(images)
                loss = criterion(output, target)
                acc1, acc5 = accuracy(output, target, topk=(1, 5))
                losses.update(loss.item(), images.size(0))
                top1.update(acc1[0], images.size(0))
        return top1.avg

    model, criterion, optimizer, scheduler = make()
    best_acc1 = 0
    buffer = None
    log = []
    start_epoch = 0
    for epoch in range(start_epoch, epochs):
        if epoch == resume_at:  # args.resume: everything from the checkpoint into fresh objects
            buffer.seek(0)
            checkpoint = torch.load(buffer)
            model, criterion, optimizer, scheduler = make()
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
            start_epoch = checkpoint['epoch']
            best_acc1 = checkpoint['best_acc1']
            model.load_state_dict(checkpoint['state_dict'])
            optimizer.load_state_dict(checkpoint['optimizer'])
            scheduler.load_state_dict(checkpoint['scheduler'])
            assert start_epoch == epoch
        log.append(train(train_loader, model, criterion, optimizer, epoch))
        acc1 = validate(val_loader, model, criterion)
        scheduler.step()
        is_best = acc1 > best_acc1
        best_acc1 = max(acc1, best_acc1)
        log.append((acc1, bool(is_best), scheduler.get_last_lr()))
        buffer = io.BytesIO()  # save_checkpoint
        torch.save({
            'epoch': epoch + 1,
            'arch': 'resnet',
            'state_dict': model.state_dict(),
            'best_acc1': best_acc1,
            'optimizer' : optimizer.state_dict(),
            'scheduler' : scheduler.state_dict()
        }, buffer)
    return log, dict(model.state_dict()), optimizer.state_dict()['state'][0]['momentum_buffer']


def test_imagenet_training_and_resume():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((10, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 24)
    images = prototypes[labels] + 0.5 * rng.standard_normal((24, 3, 16, 16)).astype(np.float32)
    weights = weights_of(tiny_resnet)
    straight, theirs = run_both(imagenet, weights, images, labels, compare=False)
    if theirs is not None:
        assert_same(numbers_parsed(straight), numbers_parsed(theirs), 1e-4, 1e-5)
    log, state, momentum = straight
    assert log[0][0].startswith("Loss ") and log[1][1] is True  # the first epoch is the best so far
    assert [lr for _, _, (lr,) in log[1::2]] == pytest.approx([0.1, 0.01, 0.01])
    assert all(0 <= float(acc) <= 100 for _, acc, _ in log[1::2])
    resumed, _ = run_both(imagenet, weights, images, labels, resume_at=2, compare=False)
    assert_same(resumed, straight, 1e-6, 1e-7)  # resuming changes nothing


def imagenet_seeded(m, weights, images, labels, seed=0):
    """main_worker's start: `import torch.backends.cudnn as cudnn` (imagenet/main.py and dcgan/main.py),
    then deterministic kernels where a seed is given."""
    import random
    cudnn = importlib.import_module(m.torch.__name__ + ".backends.cudnn")
    if seed is not None:
        random.seed(seed)
        m.torch.manual_seed(seed)
        cudnn.deterministic = True
        cudnn.benchmark = False
    return imagenet(m, weights, images, labels, epochs=1)


def test_imagenet_imports_backends_cudnn():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    run_both(imagenet_seeded, weights_of(tiny_resnet), images, labels, compare=False)


# ----------------------------------------------------------------------------------------------
# distributed/minGPT-ddp: GPT on nn.MultiheadAttention with a float tril "mask" (added to the scores,
# as PyTorch reads a float mask), weight-decay groups chosen by module type, a DistributedSampler,
# set_grad_enabled with a disabled autocast, generate() under @torch.no_grad() with top-k
# ----------------------------------------------------------------------------------------------

TEXT = "first citizen: before we proceed any further, hear me speak. all: speak, speak. "

@dataclass
class GPTConfig:
    model_type: str = 'gpt2'
    n_layer: int = None
    n_head: int = None
    n_embd: int =  None
    vocab_size: int = 50257
    block_size: int = 1024
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1

@dataclass
class OptimizerConfig:
    learning_rate: float = 3e-4
    weight_decay: float = 0.1

def mingpt(m, config=None):
    torch, nn, F = m.torch, m.nn, m.F
    config = config or GPTConfig(model_type=None, n_layer=2, n_head=2, n_embd=8, vocab_size=len(set(TEXT)),
                                 block_size=8, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)

    class MultiheadAttentionLayer(nn.Module):
        def __init__(self, config, device="cpu", dtype=torch.float32):
            super().__init__()
            assert config.n_embd % config.n_head == 0
            self.resid_drop = nn.Dropout(config.resid_pdrop)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd, device=device, dtype=dtype)
            self.register_buffer("mask", torch.tril(torch.ones(config.block_size, config.block_size))
                                 .view(1, 1, config.block_size, config.block_size))
            self.attn = nn.MultiheadAttention(
                embed_dim=config.n_embd,
                num_heads=config.n_head,
                dropout=config.attn_pdrop,
                batch_first=True,
                device=device,
                dtype=dtype
            )

        def forward(self, x):
            _, seq_size, _ = x.size()
            y = self.attn(x, x, x, attn_mask=self.mask[0, 0, :seq_size, :seq_size])[0]
            y = self.resid_drop(self.c_proj(y))
            return y

    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.ln1 = nn.LayerNorm(config.n_embd)
            self.ln2 = nn.LayerNorm(config.n_embd)
            self.attn = MultiheadAttentionLayer(config)
            self.mlp = nn.Sequential(
                nn.Linear(config.n_embd, 4 * config.n_embd),
                nn.GELU(),
                nn.Linear(4 * config.n_embd, config.n_embd),
                nn.Dropout(config.resid_pdrop),
            )

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            x = x + self.mlp(self.ln2(x))
            return x

    class EmbeddingStem(nn.Module):
        def __init__(self, config, device="cpu", dtype=torch.float32):
            super().__init__()
            self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd, device=device, dtype=dtype)
            self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd, device=device, dtype=dtype))
            self.drop = nn.Dropout(config.embd_pdrop)
            self.block_size = config.block_size

        def reset_parameters(self):
            self.tok_emb.reset_parameters()

        def forward(self, idx):
            b, t = idx.size()
            assert t <= self.block_size, f"Cannot forward sequence of length {t}, block size is only {self.block_size}"
            token_embeddings = self.tok_emb(idx)
            position_embeddings = self.pos_emb[:, :t, :]
            return self.drop(token_embeddings + position_embeddings)

    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.block_size = config.block_size
            self.emb_stem = EmbeddingStem(config)
            self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
            self.ln_f = nn.LayerNorm(config.n_embd)
            self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith('c_proj.weight'):
                    p.data.normal_(mean=0.0, std=0.02/math.sqrt(2 * config.n_layer))
            self.n_params = sum(p.numel() for p in self.blocks.parameters())

        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)

        def forward(self, idx, targets=None):
            x = self.emb_stem(idx)
            x = self.blocks(x)
            x = self.ln_f(x)
            logits = self.head(x)
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss

        @torch.no_grad()
        def generate(self, idx, max_new_tokens, temperature=1.0, do_sample=False, top_k=None):
            for _ in range(max_new_tokens):
                idx_cond = idx if idx.size(1) <= self.block_size else idx[:, -self.block_size:]
                logits, _ = self(idx_cond)
                logits = logits[:, -1, :] / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, top_k)
                    logits[logits < v[:, [-1]]] = -float('Inf')
                probs = F.softmax(logits, dim=-1)
                if do_sample:
                    idx_next = torch.multinomial(probs, num_samples=1)
                else:
                    _, idx_next = torch.topk(probs, k=1, dim=-1)
                idx = torch.cat((idx, idx_next), dim=1)
            return idx

    return GPT(config)


def create_optimizer(m, model, opt_config):
    torch, nn = m.torch, m.nn
    decay = set()
    no_decay = set()
    whitelist_weight_modules = (nn.Linear, )
    blacklist_weight_modules = (nn.LayerNorm, nn.Embedding)
    for mn, m_ in model.named_modules():
        for pn, p in m_.named_parameters():
            fpn = '%s.%s' % (mn, pn) if mn else pn # full param name
            if pn.endswith('bias'):
                no_decay.add(fpn)
            elif pn.endswith('weight') and isinstance(m_, whitelist_weight_modules):
                decay.add(fpn)
            elif pn.endswith('in_proj_weight'):
                decay.add(fpn)
            elif pn.endswith('weight') and isinstance(m_, blacklist_weight_modules):
                no_decay.add(fpn)
            elif pn.endswith('pos_emb'):
                no_decay.add(fpn)
    param_dict = {pn: p for pn, p in model.named_parameters()}
    inter_params = decay & no_decay
    union_params = decay | no_decay
    assert len(inter_params) == 0, "parameters %s made it into both decay/no_decay sets!" % (str(inter_params), )
    assert len(param_dict.keys() - union_params) == 0, \
        "parameters %s were not separated into either decay/no_decay set!" % (str(param_dict.keys() - union_params), )
    optim_groups = [
        {"params": [param_dict[pn] for pn in sorted(list(decay))], "weight_decay": opt_config.weight_decay},
        {"params": [param_dict[pn] for pn in sorted(list(no_decay))], "weight_decay": 0.0},
    ]
    optimizer = m.optim.AdamW(optim_groups, lr=opt_config.learning_rate, betas=(0.9, 0.95))
    return optimizer, sorted(decay), sorted(no_decay)


def mingpt_ddp(m, weights, epochs=2):
    torch = m.torch
    Dataset, DataLoader = torch.utils.data.Dataset, torch.utils.data.DataLoader
    DistributedSampler = torch.utils.data.distributed.DistributedSampler

    class CharDataset(Dataset):
        def __init__(self, data, block_size):
            chars = sorted(list(set(data)))
            self.stoi = {ch: i for i, ch in enumerate(chars)}
            self.itos = {i: ch for i, ch in enumerate(chars)}
            self.block_size = block_size
            self.vocab_size = len(chars)
            self.data = data

        def __len__(self):
            return len(self.data) - self.block_size

        def __getitem__(self, idx):
            chunk = self.data[idx:idx + self.block_size + 1]
            dix = [self.stoi[s] for s in chunk]
            x = torch.tensor(dix[:-1], dtype=torch.long)
            y = torch.tensor(dix[1:], dtype=torch.long)
            return x, y

    dataset = CharDataset(TEXT, 8)
    model = load(m, mingpt(m), weights)
    optimizer, decay, no_decay = create_optimizer(m, model, OptimizerConfig(learning_rate=3e-3))
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False)
    dataloader = DataLoader(dataset, batch_size=16, pin_memory=True, shuffle=False, sampler=sampler)
    log = []

    def _run_batch(source, targets, train=True):
        with torch.set_grad_enabled(train), torch.amp.autocast(device_type="cpu", dtype=torch.float16, enabled=False):
            _, loss = model(source, targets)
        if train:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return loss.item(), loss.requires_grad

    for epoch in range(epochs):
        dataloader.sampler.set_epoch(epoch)
        for iter, (source, targets) in enumerate(dataloader):
            log.append(_run_batch(source, targets, True))
        log.append(_run_batch(source, targets, False))
    model.eval()
    prompt = torch.tensor([[dataset.stoi[c] for c in "speak"]], dtype=torch.long)
    greedy = model.generate(prompt, 6)
    top_k = model.generate(prompt, 6, temperature=0.5, top_k=3)
    text = "".join(dataset.itos[int(i)] for i in greedy[0])
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, dict(model.state_dict()), grads, greedy, top_k, text, decay, no_decay, model.n_params


def test_mingpt_ddp():
    ours, theirs = run_both(mingpt_ddp, weights_of(mingpt), compare=False)
    log, state, grads, greedy, top_k, text, decay, no_decay, n_params = ours
    assert [tracked for _, tracked in log] == [True] * 5 + [False] + [True] * 5 + [False]
    # two norms, the MHA's in and out projections, c_proj, the MLP
    per_block = 2 * 2 * 8 + (3 * 8 * 8 + 3 * 8) + 2 * (8 * 8 + 8) + (8 * 32 + 32) + (32 * 8 + 8)
    assert log[-1][0] < log[0][0] and n_params == 2 * per_block
    assert "blocks.0.attn.attn.out_proj.weight" in decay and "emb_stem.pos_emb" in no_decay
    assert greedy.shape == top_k.shape == (1, 11) and text.startswith("speak") and len(text) == 11
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(ours[0], theirs[0], 1e-4, 1e-5)
        assert_same(ours[3:], theirs[3:], 1e-4, 1e-5)
        assert_same_but_key_biases(state, theirs[1], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[2], 1e-4, 1e-5)


# ----------------------------------------------------------------------------------------------
# vision_transformer (removed from pytorch/examples in 2024): patches by unfold().unfold().permute(),
# a class token and position embedding per batch row, nn.MultiheadAttention fed (batch, seq, emb)
# without batch_first, one LayerNorm used twice, an in-place += on a cat
# ----------------------------------------------------------------------------------------------

VIT = SimpleNamespace(patch_size=4, n_channels=3, latent_size=8, batch_size=4, no_cuda=True, num_heads=2, dropout=0.0,
                      num_encoders=2, num_classes=3, epochs=2, dry_run=False)

def vit(m, args=VIT):
    torch, nn = m.torch, m.nn

    class PatchExtractor(nn.Module):
        def __init__(self, patch_size=16):
            super().__init__()
            self.patch_size = patch_size

        def forward(self, input_data):
            batch_size, channels, height, width = input_data.size()
            assert height % self.patch_size == 0 and width % self.patch_size == 0, \
                f"Input height ({height}) and width ({width}) must be divisible by patch size ({self.patch_size})"

            num_patches_h = height // self.patch_size
            num_patches_w = width // self.patch_size
            num_patches = num_patches_h * num_patches_w

            patches = input_data.unfold(2, self.patch_size, self.patch_size). \
                unfold(3, self.patch_size, self.patch_size). \
                permute(0, 2, 3, 1, 4, 5). \
                contiguous(). \
                view(batch_size, num_patches, -1)
            return patches

    class InputEmbedding(nn.Module):
        def __init__(self, args):
            super(InputEmbedding, self).__init__()
            self.patch_size = args.patch_size
            self.n_channels = args.n_channels
            self.latent_size = args.latent_size
            use_cuda = not args.no_cuda and torch.cuda.is_available()
            self.device = torch.device("cuda" if use_cuda else "cpu")
            self.batch_size = args.batch_size
            self.input_size = self.patch_size * self.patch_size * self.n_channels
            self.LinearProjection = nn.Linear(self.input_size, self.latent_size)
            self.class_token = nn.Parameter(torch.randn(self.batch_size, 1, self.latent_size).to(self.device))
            self.pos_embedding = nn.Parameter(torch.randn(self.batch_size, 1, self.latent_size).to(self.device))

        def forward(self, input_data):
            input_data = input_data.to(self.device)
            patchify = PatchExtractor(patch_size=self.patch_size)
            patches = patchify(input_data)
            linear_projection = self.LinearProjection(patches).to(self.device)
            b, n, _ = linear_projection.shape
            linear_projection = torch.cat((self.class_token, linear_projection), dim=1)
            pos_embed = self.pos_embedding[:, :n + 1, :]
            linear_projection += pos_embed
            return linear_projection

    class EncoderBlock(nn.Module):
        def __init__(self, args):
            super(EncoderBlock, self).__init__()
            self.latent_size = args.latent_size
            self.num_heads = args.num_heads
            self.dropout = args.dropout
            self.norm = nn.LayerNorm(self.latent_size)
            self.attention = nn.MultiheadAttention(self.latent_size, self.num_heads, dropout=self.dropout)
            self.enc_MLP = nn.Sequential(
                nn.Linear(self.latent_size, self.latent_size * 4),
                nn.GELU(),
                nn.Dropout(self.dropout),
                nn.Linear(self.latent_size * 4, self.latent_size),
                nn.Dropout(self.dropout)
            )

        def forward(self, emb_patches):
            first_norm = self.norm(emb_patches)
            attention_out = self.attention(first_norm, first_norm, first_norm)[0]
            first_added = attention_out + emb_patches
            second_norm = self.norm(first_added)
            mlp_out = self.enc_MLP(second_norm)
            output = mlp_out + first_added
            return output

    class ViT(nn.Module):
        def __init__(self, args):
            super(ViT, self).__init__()
            self.num_encoders = args.num_encoders
            self.latent_size = args.latent_size
            self.num_classes = args.num_classes
            self.dropout = args.dropout
            self.embedding = InputEmbedding(args)
            self.encoders = nn.ModuleList([EncoderBlock(args) for _ in range(self.num_encoders)])
            self.MLPHead = nn.Sequential(
                nn.LayerNorm(self.latent_size),
                nn.Linear(self.latent_size, self.latent_size),
                nn.Linear(self.latent_size, self.num_classes),
            )

        def forward(self, test_input):
            enc_output = self.embedding(test_input)
            for enc_layer in self.encoders:
                enc_output = enc_layer(enc_output)
            class_token_embed = enc_output[:, 0]
            return self.MLPHead(class_token_embed)

    return ViT(args)


class PlainProgress:
    """What the tests use in place of a tqdm progress bar: the iterable, and set_postfix remembered."""

    def __init__(self, iterable, desc=None, file=None):
        self.iterable, self.desc, self.postfixes = iterable, desc, []

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, postfix):
        self.postfixes.append(postfix)


def vision_transformer(m, weights, images, labels, args=VIT, progress_bar=False):
    if progress_bar:  # from torch.hub import tqdm
        tqdm = importlib.import_module(m.torch.__name__ + ".hub").tqdm
    else:
        tqdm = PlainProgress
    torch, nn, optim = m.torch, m.nn, m.optim
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    train_dataloader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False, drop_last=True)
    val_dataloader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False, drop_last=True)
    device = torch.device("cpu")
    model = load(m, vit(m), weights).to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    criterion = nn.CrossEntropyLoss()

    class TrainEval:
        def __init__(self, args, model, train_dataloader, val_dataloader, optimizer, criterion, device):
            self.model = model
            self.train_dataloader = train_dataloader
            self.val_dataloader = val_dataloader
            self.optimizer = optimizer
            self.criterion = criterion
            self.epoch = args.epochs
            self.device = device
            self.args = args
            self.log = []

        def train_fn(self, current_epoch):
            self.model.train()
            total_loss = 0.0
            tk = tqdm(self.train_dataloader, desc="EPOCH" + "[TRAIN]" + str(current_epoch + 1) + "/" + str(self.epoch),
                      file=io.StringIO())  # (the original draws on stderr)

            for t, data in enumerate(tk):
                images, labels = data
                images, labels = images.to(self.device), labels.to(self.device)
                self.optimizer.zero_grad()
                logits = self.model(images)
                loss = self.criterion(logits, labels)
                loss.backward()
                self.optimizer.step()

                total_loss += loss.item()
                tk.set_postfix({"Loss": "%6f" % float(total_loss / (t + 1))})
                self.log.append({"Loss": "%6f" % float(total_loss / (t + 1))})
            return total_loss / len(self.train_dataloader)

        def eval_fn(self, current_epoch):
            self.model.eval()
            total_loss = 0.0
            for t, data in enumerate(self.val_dataloader):
                images, labels = data
                logits = self.model(images)
                loss = self.criterion(logits, labels)
                total_loss += loss.item()
            return total_loss / len(self.val_dataloader)

        def train(self):
            best_valid_loss = np.inf
            best_train_loss = np.inf
            for i in range(self.epoch):
                train_loss = self.train_fn(i)
                val_loss = self.eval_fn(i)
                if val_loss < best_valid_loss:
                    best_valid_loss = val_loss
                    best_train_loss = train_loss
            return best_train_loss, best_valid_loss

    trainer = TrainEval(args, model, train_dataloader, val_dataloader, optimizer, criterion, device)
    best = trainer.train()
    return trainer.log, best, dict(model.state_dict()), {n: p.grad for n, p in model.named_parameters()}


def test_vision_transformer():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 12)
    images = prototypes[labels] + 0.5 * rng.standard_normal((12, 3, 8, 8)).astype(np.float32)
    ours, theirs = run_both(vision_transformer, weights_of(vit), images, labels, compare=False)
    log, (best_train, best_valid), state, grads = ours
    assert len(log) == 6 and best_valid < 1.0986  # better than chance among 3 classes (ln 3)
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(numbers_parsed(ours[:2]), numbers_parsed(theirs[:2]), 1e-4, 1e-5)
        assert_same_but_key_biases(state, theirs[2], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[3], 1e-4, 1e-5)


def test_vision_transformer_with_torch_hub_progress_bar():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 8)
    ours, _ = run_both(vision_transformer, weights_of(vit), images, labels, progress_bar=True, compare=False)
    assert len(ours[0]) == 4


# ----------------------------------------------------------------------------------------------
# swin_transformer (removed from pytorch/examples in 2025): window partition by view/permute, shifted
# windows by torch.roll, q, k, v unpacked by iterating a permuted tensor
# ----------------------------------------------------------------------------------------------

def swin_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class PatchEmbed(nn.Module):
        def __init__(self, img_size=32, patch_size=4, in_chans=3, embed_dim=48):
            super().__init__()
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            self.norm = nn.LayerNorm(embed_dim)

        def forward(self, x):
            x = self.proj(x)
            x = x.flatten(2).transpose(1, 2)
            x = self.norm(x)
            return x

    def window_partition(x, window_size):
        B, H, W, C = x.shape
        x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
        windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)
        return windows

    def window_reverse(windows, window_size, H, W):
        B = int(windows.shape[0] / (H * W / window_size / window_size))
        x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
        x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)
        return x

    class WindowAttention(nn.Module):
        def __init__(self, dim, window_size, num_heads):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            out = (attn @ v).transpose(1, 2).reshape(B_, N, C)
            return self.proj(out)

    class SwinTransformerBlock(nn.Module):
        def __init__(self, dim, input_resolution, num_heads, window_size=4, shift_size=0):
            super().__init__()
            self.dim = dim
            self.input_resolution = input_resolution
            self.window_size = window_size
            self.shift_size = shift_size
            self.norm1 = nn.LayerNorm(dim)
            self.attn = WindowAttention(dim, window_size, num_heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(
                nn.Linear(dim, dim * 4),
                nn.GELU(),
                nn.Linear(dim * 4, dim)
            )

        def forward(self, x):
            H, W = self.input_resolution
            B, L, C = x.shape
            x = x.view(B, H, W, C)
            if self.shift_size > 0:
                shifted_x = torch.roll(x, (-self.shift_size, -self.shift_size), (1, 2))
            else:
                shifted_x = x
            windows = window_partition(shifted_x, self.window_size)
            windows = windows.view(-1, self.window_size * self.window_size, C)
            attn_windows = self.attn(self.norm1(windows))
            attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
            shifted_x = window_reverse(attn_windows, self.window_size, H, W)
            if self.shift_size > 0:
                x = torch.roll(shifted_x, (self.shift_size, self.shift_size), (1, 2))
            else:
                x = shifted_x
            x = x.view(B, H * W, C)
            x = x + self.mlp(self.norm2(x))
            return x

    class SwinTinyNet(nn.Module):  # 32x32 images, 48 channels in the original
        def __init__(self, num_classes=4):
            super(SwinTinyNet, self).__init__()
            self.patch_embed = PatchEmbed(img_size=16, patch_size=2, in_chans=3, embed_dim=12)
            self.block1 = SwinTransformerBlock(dim=12, input_resolution=(8, 8), num_heads=3, window_size=4,
                                               shift_size=0)
            self.block2 = SwinTransformerBlock(dim=12, input_resolution=(8, 8), num_heads=3, window_size=4,
                                               shift_size=2)
            self.norm = nn.LayerNorm(12)
            self.fc = nn.Linear(12, num_classes)

        def forward(self, x):
            x = self.patch_embed(x)
            x = self.block1(x)
            x = self.block2(x)
            x = self.norm(x)
            x = x.mean(dim=1)
            x = self.fc(x)
            return F.log_softmax(x, dim=1)

    return SwinTinyNet()


def swin_transformer(m, weights, images, labels, epochs=2):
    torch, F, optim = m.torch, m.F, m.optim
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False)
    test_loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)
    model = load(m, swin_net(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    log = []
    for epoch in range(1, epochs + 1):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            log.append('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction='sum').item()
                pred = output.argmax(dim=1, keepdim=True)
                correct += pred.eq(target.view_as(pred)).sum().item()
        test_loss /= len(test_loader.dataset)
        log.append((test_loss, correct))
        scheduler.step()
    return log, dict(model.state_dict()), {n: p.grad for n, p in model.named_parameters()}


def test_swin_transformer():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 4, 16)
    images = prototypes[labels] + 0.5 * rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    ours, theirs = run_both(swin_transformer, weights_of(swin_net), images, labels, compare=False)
    log, state, grads = ours
    assert log[0].startswith("Train Epoch: 1 [0/16 (0%)]\tLoss: ") and log[9][0] < log[4][0]
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(numbers_parsed(log), numbers_parsed(theirs[0]), 1e-4, 1e-5)
        assert_same_but_key_biases(state, theirs[1], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[2], 1e-4, 1e-5)


# ----------------------------------------------------------------------------------------------
# gcn/main.py: Kipf and Welling's GCN on a Cora-like graph, loaded as the example loads it
# ----------------------------------------------------------------------------------------------


def cora_like(n_nodes=12, n_features=6, seed=0):
    """What np.genfromtxt gives for cora.content (id, binary features, label: all strings) and cora.cites."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(100, 100 + 3 * n_nodes))[:n_nodes]
    labels = np.array(["Neural_Networks", "Theory", "Genetic_Algorithms"])[np.arange(n_nodes) % 3]
    features = (rng.random((n_nodes, n_features)) < 0.4).astype(np.int32)
    features[3] = 0  # a paper without words: its scale 1/0 is set to 0
    content = np.column_stack([ids.astype(str), features.astype(str), labels])
    cites = np.array([[ids[i], ids[(i + k) % n_nodes]] for i in range(n_nodes) for k in (1, 3)], dtype=np.int32)
    return content, cites


def gcn_net(m, input_dim=6, hidden_dim=8, output_dim=3):
    torch, nn, F = m.torch, m.nn, m.F

    class GraphConv(nn.Module):
        def __init__(self, input_dim, output_dim, use_bias=False):
            super(GraphConv, self).__init__()
            self.kernel = nn.Parameter(torch.Tensor(input_dim, output_dim))
            nn.init.xavier_normal_(self.kernel) # Initialize the weights using Xavier initialization
            self.bias = None
            if use_bias:
                self.bias = nn.Parameter(torch.Tensor(output_dim))
                nn.init.zeros_(self.bias) # Initialize the bias to zeros

        def forward(self, input_tensor, adj_mat):
            support = torch.mm(input_tensor, self.kernel) # Matrix multiplication between input and weight matrix
            output = torch.spmm(adj_mat, support) # Sparse matrix multiplication between adjacency matrix and support
            if self.bias is not None:
                output = output + self.bias
            return output

    class GCN(nn.Module):
        def __init__(self, input_dim, hidden_dim, output_dim, use_bias=True, dropout_p=0.1):
            super(GCN, self).__init__()
            self.gc1 = GraphConv(input_dim, hidden_dim, use_bias=use_bias)
            self.gc2 = GraphConv(hidden_dim, output_dim, use_bias=use_bias)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, input_tensor, adj_mat):
            x = self.gc1(input_tensor, adj_mat)
            x = F.relu(x) # Apply ReLU activation function
            x = self.dropout(x) # Apply dropout regularization
            x = self.gc2(x, adj_mat)
            return F.log_softmax(x, dim=1)

    return GCN(input_dim, hidden_dim, output_dim, dropout_p=0.0)  # dropout 0.5 in the original: masks differ


def gcn(m, weights, epochs=5):
    torch, nn = m.torch, m.nn

    def load_cora(device='cpu'):
        content_tensor, cites_tensor = cora_like()  # np.genfromtxt of the two files
        features = torch.FloatTensor(content_tensor[:, 1:-1].astype(np.int32)) # Extract feature values
        scale_vector = torch.sum(features, dim=1) # Compute sum of features for each node
        scale_vector = 1 / scale_vector # Compute reciprocal of the sums
        scale_vector[scale_vector == float('inf')] = 0 # Handle division by zero cases
        scale_vector = torch.diag(scale_vector).to_sparse() # Convert the scale vector to a sparse diagonal matrix
        features = scale_vector @ features # Scale the features using the scale vector
        classes, labels = np.unique(content_tensor[:, -1], return_inverse=True)
        labels = torch.LongTensor(labels) # Convert labels to a tensor
        idx = content_tensor[:, 0].astype(np.int32) # Extract node indices
        idx_map = {id: pos for pos, id in enumerate(idx)} # Create a dictionary to map indices to positions
        edges = np.array(
            list(map(lambda edge: [idx_map[edge[0]], idx_map[edge[1]]],
                cites_tensor)), dtype=np.int32)
        V = len(idx) # Number of nodes
        E = edges.shape[0] # Number of edges
        adj_mat = torch.sparse_coo_tensor(edges.T, torch.ones(E), (V, V), dtype=torch.int64)
        adj_mat = torch.eye(V) + adj_mat # Add self-loops to the adjacency matrix
        degree_mat = torch.sum(adj_mat, dim=1) # Compute the sum of each row in the adjacency matrix (degree matrix)
        degree_mat = torch.sqrt(1 / degree_mat) # Compute the reciprocal square root of the degrees
        degree_mat[degree_mat == float('inf')] = 0 # Handle division by zero cases
        degree_mat = torch.diag(degree_mat).to_sparse() # Convert the degree matrix to a sparse diagonal matrix
        adj_mat = degree_mat @ adj_mat @ degree_mat # Apply the renormalization trick
        return features.to_sparse().to(device), labels.to(device), adj_mat.to_sparse().to(device)

    def test(model, criterion, input, target, mask):
        model.eval()
        with torch.no_grad():
            output = model(*input)
            output, target = output[mask], target[mask]
            loss = criterion(output, target)
            acc = (output.argmax(dim=1) == target).float().sum() / len(target)
        return loss.item(), acc.item()

    features, labels, adj_mat = load_cora()
    idx = torch.arange(len(labels))  # torch.randperm in the original
    idx_test, idx_val, idx_train = idx[:3], idx[3:6], idx[6:]
    model = load(m, gcn_net(m), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    criterion = nn.NLLLoss()
    log = []
    for epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        output = model(features, adj_mat)
        loss = criterion(output[idx_train], labels[idx_train]) # Compute the loss using the training mask
        loss.backward()
        optimizer.step()
        log.append((test(model, criterion, (features, adj_mat), labels, idx_train),
                    test(model, criterion, (features, adj_mat), labels, idx_val)))
    return log, adj_mat.to_dense(), features.to_dense(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled:UserWarning")
def test_gcn_on_a_cora_like_graph():
    ours, _ = run_both(gcn, weights_of(gcn_net), rtol=1e-5, atol=1e-6)
    log, adj_mat, features, grads = ours
    content, cites = cora_like()
    position = {int(i): k for k, i in enumerate(content[:, 0])}
    A = np.eye(len(content))
    for source, target in cites:
        A[position[source], position[target]] += 1
    d = 1 / np.sqrt(A.sum(1))
    np.testing.assert_allclose(adj_mat, d[:, None] * A * d[None, :], rtol=1e-6)  # the renormalisation trick
    words = content[:, 1:-1].astype(np.float64)
    np.testing.assert_allclose(features, words / np.maximum(words.sum(1, keepdims=True), 1), rtol=1e-6)
    assert log[-1][0][0] < log[0][0][0]
