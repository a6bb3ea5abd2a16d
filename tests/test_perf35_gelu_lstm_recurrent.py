"""nn.LSTM's fused layer with its step products written into arrays made once and its local derivatives made in
the backward's steps (session 35) gives the values of the previous whole-sequence evaluation bit for bit: a NumPy
reference of that evaluation, operation by operation, over directions, projections and packed batches; and
PyTorch's within the existing tests' tolerance over layers, directions, batch_first, proj_size and dropout in eval."""

import numpy
import pytest

import autograd
import nn
from nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def _reference(x, w_ih, w_hh, bias, h0, c0, w_hr, reverse, sizes, gy, dh_n, dc_n):
    """The previous LSTMLayer: outputs, h_n, c_n, then dL/dx, dW_ih, dW_hh, db, dh0, dc0 (and dW_hr)."""
    length, batch = x.shape[:2]
    hidden = c0.shape[1]
    acts = (x.reshape(length * batch, -1) @ w_ih.T).reshape(length, batch, 4 * hidden) + bias
    scale = numpy.repeat(numpy.array([0.5, 0.5, 1, 0.5], x.dtype), hidden)
    shift = numpy.repeat(numpy.array([0.5, 0.5, 0, 0.5], x.dtype), hidden)
    h, c = h0.copy(), c0.copy()
    y = numpy.zeros((length, batch, h0.shape[1]), x.dtype)
    h_prev = numpy.zeros_like(y)
    c_prev, tanh_c, h_cell = (numpy.zeros((length, batch, hidden), x.dtype) for _ in range(3))
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        n = sizes[t]
        h_prev[t, :n], c_prev[t, :n] = h[:n], c[:n]
        a = acts[t, :n]
        a += h[:n] @ w_hh.T
        a[:] = numpy.tanh(a * scale) * scale + shift
        c[:n] = c[:n] * a[:, hidden:2 * hidden] + a[:, :hidden] * a[:, 2 * hidden:3 * hidden]
        tanh_c[t, :n] = numpy.tanh(c[:n])
        out = a[:, 3 * hidden:] * tanh_c[t, :n]
        if w_hr is not None:
            h_cell[t, :n] = out
            out = out @ w_hr.T
        h[:n] = y[t, :n] = out
    i, f, g, o = (acts[..., k * hidden:(k + 1) * hidden] for k in range(4))
    local = [g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)]
    through_tanh = (1 - tanh_c * tanh_c) * o
    dpre = numpy.zeros((length, batch, 4, hidden), x.dtype)
    dh, dc = dh_n.copy(), dc_n.copy()
    dw_hr = numpy.zeros_like(w_hr) if w_hr is not None else None
    for t in reversed(steps):
        n = sizes[t]
        delta = dh[:n] + gy[t, :n]
        if w_hr is not None:
            dw_hr += delta.T @ h_cell[t, :n]
            delta = delta @ w_hr
        dc[:n] += delta * through_tanh[t, :n]
        for k in range(3):
            dpre[t, :n, k] = local[k][t, :n] * dc[:n]
        dpre[t, :n, 3] = local[3][t, :n] * delta
        dc[:n] *= f[t, :n]
        dh[:n] = dpre[t, :n].reshape(n, 4 * hidden) @ w_hh
    flat = dpre.reshape(length * batch, 4 * hidden)
    grads = (y, h, c, (flat @ w_ih).reshape(x.shape), flat.T @ x.reshape(length * batch, -1),
             flat.T @ h_prev.reshape(length * batch, -1), flat.sum(0), dh, dc)
    return grads + ((dw_hr,) if w_hr is not None else ())


def _run_layer(reverse, proj_size, sizes, seed, batch=6, length=7, features=5, hidden=12):
    """A one-layer nn.LSTM direction through the fused layer (``reverse``: the reverse direction of a bidirectional
    one) against the reference, all outputs and gradients bit for bit."""
    rng = numpy.random.default_rng(seed)
    autograd.manual_seed(seed)
    module = nn.LSTM(features, hidden, bidirectional=reverse, proj_size=proj_size)
    suffix = "_reverse" if reverse else ""
    param = {name[:-len(suffix)] if reverse else name: p for name, p in module.named_parameters()
             if name.endswith(suffix) and (reverse or not name.endswith("_reverse"))}
    x = rng.standard_normal((length, batch, features)).astype(numpy.float32)
    out_size = proj_size or hidden
    directions = 2 if reverse else 1
    h0 = rng.standard_normal((directions, batch, out_size)).astype(numpy.float32)
    c0 = rng.standard_normal((directions, batch, hidden)).astype(numpy.float32)
    gy = rng.standard_normal((length, batch, directions * out_size)).astype(numpy.float32)
    gh, gc = rng.standard_normal(h0.shape).astype(numpy.float32), rng.standard_normal(c0.shape).astype(numpy.float32)
    inputs = [autograd.tensor(a, requires_grad=True) for a in (x, h0, c0)]
    packed = sizes is not None
    if packed:
        lengths = [sum(1 for n in sizes if n > b) for b in range(batch)]
        y, (h_n, c_n) = module(pack_padded_sequence(inputs[0], lengths), (inputs[1], inputs[2]))
        y = pad_packed_sequence(y, total_length=length)[0]
        gy = gy * (numpy.arange(batch)[None, :, None] < numpy.array(sizes)[:, None, None])  # (padding's: none)
    else:
        y, (h_n, c_n) = module(inputs[0], (inputs[1], inputs[2]))
    ((y * autograd.tensor(gy)).sum() + (h_n * autograd.tensor(gh)).sum() + (c_n * autograd.tensor(gc)).sum()).backward()
    k = 1 if reverse else 0
    w_hr = param["weight_hr_l0"].detach().numpy() if proj_size else None
    expected = _reference(x, param["weight_ih_l0"].detach().numpy(), param["weight_hh_l0"].detach().numpy(),
                          (param["bias_ih_l0"] + param["bias_hh_l0"]).detach().numpy(), h0[k], c0[k], w_hr, reverse,
                          sizes or [batch] * length, numpy.ascontiguousarray(gy[..., k * out_size:(k + 1) * out_size]),
                          gh[k], gc[k])
    ours = [y.detach().numpy()[..., k * out_size:(k + 1) * out_size], h_n.detach().numpy()[k],
            c_n.detach().numpy()[k], None, param["weight_ih_l0"].grad.numpy(), param["weight_hh_l0"].grad.numpy(),
            param["bias_hh_l0"].grad.numpy(), inputs[1].grad.numpy()[k], inputs[2].grad.numpy()[k]]
    if proj_size:
        ours.append(param["weight_hr_l0"].grad.numpy())
    for got, want in zip(ours, expected, strict=True):
        if got is not None:
            numpy.testing.assert_array_equal(got, want)
    if not reverse:  # (the bidirectional input's gradient is both directions')
        numpy.testing.assert_array_equal(inputs[0].grad.numpy(), expected[3])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 5])
def test_lstm_layer_equals_the_previous_evaluation(reverse, proj_size):
    _run_layer(reverse, proj_size, None, seed=proj_size + reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 4])
def test_lstm_layer_of_a_packed_batch_equals_the_previous_evaluation(reverse, proj_size):
    _run_layer(reverse, proj_size, [6, 5, 5, 3, 2, 2, 1], seed=10 + proj_size + reverse)


def test_lstm_layer_past_one_batch_row_and_one_step():
    _run_layer(False, 0, None, seed=20, batch=1, length=1)
    _run_layer(True, 3, [1], seed=21, batch=1, length=1)


@pytest.mark.parametrize("config", [dict(num_layers=2), dict(bidirectional=True), dict(batch_first=True),
                                    dict(proj_size=7), dict(num_layers=2, dropout=0.5, bidirectional=True),
                                    dict(num_layers=2, bidirectional=True, proj_size=6, bias=False)])
@pytest.mark.parametrize("packed", [False, True])
def test_lstm_matches_pytorch(config, packed):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(5, 16, **config).eval()
    ours = nn.LSTM(5, 16, **config).eval()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    first = config.get("batch_first", False)
    x = numpy.random.default_rng(1).standard_normal((4, 9, 5) if first else (9, 4, 5)).astype(numpy.float32)
    lengths = [9, 8, 4, 1]
    results = []
    for lib, rnn_utils, module in ((autograd, nn.utils.rnn, ours), (torch, torch.nn.utils.rnn, theirs)):
        inputs = lib.tensor(x, requires_grad=True)
        if packed:
            y, (h_n, c_n) = module(rnn_utils.pack_padded_sequence(inputs, lengths, batch_first=first))
            y = rnn_utils.pad_packed_sequence(y, batch_first=first)[0]
        else:
            y, (h_n, c_n) = module(inputs)
        (y.sum() + (h_n * 2).sum() + (c_n * 3).sum()).backward()
        results.append([a.detach().numpy() for a in (y, h_n, c_n, inputs.grad)]
                       + [p.grad.numpy() for p in module.parameters()])
    for got, want in zip(*results, strict=True):
        numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lstm_float64_and_complex_follow_the_same_steps():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    theirs = torch.nn.LSTM(3, 8, dtype=torch.float64)
    ours = nn.LSTM(3, 8, dtype=autograd.float64)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = numpy.random.default_rng(2).standard_normal((6, 2, 3))
    a, b = autograd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ours(a)[0].sum().backward()
    theirs(b)[0].sum().backward()
    numpy.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-12, atol=1e-12)
