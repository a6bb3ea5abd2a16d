"""Focused tests of the library fixes made while porting test_expanded_weights.py and
test_namedtuple_return_api.py (each on chainrule, and on PyTorch where installed, through ``T``):

- call_for_per_sample_grads over a module with dropout raised vmap's randomness error; it draws the numbers the
  module draws on the whole batch, as PyTorch's (whose Expanded Weights runs the batch at once).
- an RNN's h_n (and LSTM's c_n) is (layers, batch, hidden) whatever its batch_first; under
  call_for_per_sample_grads with batch_first=True it came out (batch, layers, hidden).
- a batch_size that is not the input's went unnoticed (each sample saw the whole input, giving a (3, 4, 2)
  output for 4 samples); PyTorch refuses it.
- torch.qr / x.qr() returned return_types.linalg_qr (PyTorch: return_types.qr) and refused out=.
- an op given out= returned its plain type; PyTorch returns the ``<name>_out`` type (return_types.max_out).
"""

import importlib

import numpy as np
import pytest


def _nn(T):
    return importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")


def _per_sample(T):
    return importlib.import_module(f"{_nn(T).__name__}.utils._per_sample_grad").call_for_per_sample_grads


def _dropout_net(T):
    nn = _nn(T)
    T.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 2)).double()
    return model, T.randn(5, 4, dtype=T.float64)


def test_dropout_under_per_sample_grads_draws_the_batch_mask(T):
    model, x = _dropout_net(T)
    T.manual_seed(1)
    out = _per_sample(T)(model)(x)
    T.manual_seed(1)
    plain = model(x)  # the same seed: the same mask as the whole batch's
    np.testing.assert_allclose(out.detach().numpy(), plain.detach().numpy(), rtol=1e-12, atol=1e-15)
    out.sum().backward()
    plain_grads = [g.numpy() for g in T.autograd.grad(plain.sum(), list(model.parameters()))]
    for p, g in zip(model.parameters(), plain_grads):
        np.testing.assert_allclose(p.grad_sample.numpy().sum(0), g, rtol=1e-12, atol=1e-15)
    # a dropped hidden unit has no gradient in that sample's first-layer bias
    dropped = plain_grads[1] == 0
    assert dropped.any() and not dropped.all()


def test_dropout_values_are_pytorchs():
    torch = pytest.importorskip("torch")
    import autograd

    results = []
    for T in (autograd, torch):
        model, x = _dropout_net(T)
        T.manual_seed(1)
        out = _per_sample(T)(model)(x)
        out.sum().backward()
        results.append((out.detach().numpy(), [p.grad_sample.numpy() for p in model.parameters()]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    for ours, theirs in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("layers", [1, 2])
def test_rnn_hidden_state_keeps_its_batch_in_dim_1(T, layers):
    nn = _nn(T)
    T.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=layers, batch_first=True).double()
    x = T.randn(5, 6, 3, dtype=T.float64)
    out, (h, c) = _per_sample(T)(lstm)(x)
    plain_out, (plain_h, plain_c) = lstm(x)
    assert out.shape == (5, 6, 4) and h.shape == (layers, 5, 4) and c.shape == (layers, 5, 4)
    for ours, plain in ((out, plain_out), (h, plain_h), (c, plain_c)):
        np.testing.assert_allclose(ours.detach().numpy(), plain.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(h[-1].detach().numpy(), out[:, -1].detach().numpy(), rtol=1e-12)
    h[-1].sum().backward()  # per-sample grads through the hidden state
    assert lstm.weight_ih_l0.grad_sample.shape == (5, 16, 3)


def test_batch_size_that_is_not_the_inputs_is_refused(T):
    nn = _nn(T)
    with pytest.raises(RuntimeError, match="Expected ExpandedWeights to have batch size matching input but got "
                                           "input batch size of 4 with ExpandedWeight of batch size 3"):
        _per_sample(T)(nn.Linear(3, 2), batch_size=3)(T.randn(4, 3))


def test_qr_returns_its_own_type_and_takes_out(T, warn_always):
    a = T.tensor([[2.0, 1.0], [1.0, 3.0]])
    with pytest.warns(UserWarning, match="torch.qr is deprecated"):
        result = T.qr(a)
    assert type(result) is T.return_types.qr and type(a.qr()) is T.return_types.qr
    q, r = result
    np.testing.assert_allclose((q @ r).numpy(), a.numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.abs(r.numpy()), np.abs(np.linalg.qr(a.numpy())[1]), rtol=1e-6)
    outs = (T.empty(2, 2), T.empty(2, 2))
    with pytest.warns(UserWarning):
        with_out = T.qr(a, out=outs)
    assert type(with_out) is T.return_types.qr_out and with_out[0] is outs[0] and with_out.R is outs[1]
    np.testing.assert_array_equal(outs[1].numpy(), r.numpy())


def test_out_returns_the_out_type(T):
    x = T.tensor([[1.0, 5.0], [3.0, 2.0]])
    outs = (T.empty(2), T.empty(2, dtype=T.long))
    result = T.sort(x, 1, out=outs)
    assert type(result) is T.return_types.sort_out and result.values is outs[0] and result.indices is outs[1]
    assert type(result).__name__ == "sort_out" and type(T.sort(x, 1)) is T.return_types.sort
    np.testing.assert_array_equal(outs[1].numpy(), [[0, 1], [1, 0]])


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence_input(T, batch_first, enforce_sorted):
    """An LSTM over a PackedSequence: each sample runs packed alone (it saw the whole packed data before, and
    then the batch-size check refused it); the output is packed as the input, and grad_sample is a loop's."""
    nn = _nn(T)
    rnn_utils = importlib.import_module(f"{nn.__name__}.utils.rnn")
    T.manual_seed(0)
    lstm = nn.LSTM(3, 4, batch_first=batch_first).double()
    lengths = [5, 3, 2] if enforce_sorted else [3, 5, 2]
    x = T.randn(3, 5, 3, dtype=T.float64)
    padded = x if batch_first else x.transpose(0, 1)
    packed = rnn_utils.pack_padded_sequence(padded, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    out, (h, c) = _per_sample(T)(lstm, batch_size=3, batch_first=batch_first)(packed)  # (PyTorch needs it)
    plain_out, (plain_h, _) = lstm(packed)
    assert isinstance(out, rnn_utils.PackedSequence) and out.batch_sizes.tolist() == [3, 3, 2, 1, 1]
    np.testing.assert_allclose(out.data.detach().numpy(), plain_out.data.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(h.detach().numpy(), plain_h.detach().numpy(), rtol=1e-12)
    (out.data.sum() + h.sum()).backward()
    got = [p.grad_sample.numpy() for p in lstm.parameters()]
    if T.__name__ == "torch" and not enforce_sorted:  # PyTorch's rows come in the packed (sorted) order: row j is
        # sample sorted_indices[j]; chainrule's row i is sample i, as every other output's
        got = [g[packed.unsorted_indices.numpy()] for g in got]
    for i, length in enumerate(lengths):
        one = x[i:i + 1, :length] if batch_first else x[i:i + 1, :length].transpose(0, 1)
        one_out, (one_h, _) = lstm(rnn_utils.pack_padded_sequence(one, [length], batch_first=batch_first))
        grads = T.autograd.grad(one_out.data.sum() + one_h.sum(), list(lstm.parameters()))
        for g, e in zip(got, grads):
            np.testing.assert_allclose(g[i], e.numpy(), rtol=1e-9, atol=1e-12)
