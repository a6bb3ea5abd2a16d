"""RNN, LSTM, GRU and their cells, and packed sequences, ported from PyTorch's test/test_nn.py (TestNN and
TestNNDeviceType on CPU, no cudnn): pack_padded_sequence / pad_packed_sequence / pack_sequence /
pad_sequence / unpad_sequence / unpack_sequence with enforce_sorted, proj_size, batch_first,
bidirectional, initial states, argument checks and their messages. The recurrences are checked against
NumPy. Each test runs on chainrule's `nn` and, where it is installed, on PyTorch's."""

import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def rnn_utils(nn):
    return nn.utils.rnn


def _padded(T):
    """Three sequences of lengths 3, 2, 1 (features 2), as a (T, B, *) padded tensor."""
    a = T.tensor([[1.0, 1.5], [2.0, 2.5], [3.0, 3.5]])
    b = T.tensor([[4.0, 4.5], [5.0, 5.5]])
    c = T.tensor([[6.0, 6.5]])
    return a, b, c


def test_pad_sequence(T, nn):
    a, b, c = T.tensor([1, 2, 3]), T.tensor([4, 5]), T.tensor([6])
    u = rnn_utils(nn)
    same(u.pad_sequence([a, b, c], batch_first=True), [[1, 2, 3], [4, 5, 0], [6, 0, 0]])
    same(u.pad_sequence([a, b, c]), [[1, 4, 6], [2, 5, 0], [3, 0, 0]])
    same(u.pad_sequence([b, a, c], batch_first=True, padding_value=-1), [[4, 5, -1], [1, 2, 3], [6, -1, -1]])
    same(u.pad_sequence([a, b, c], batch_first=True, padding_side="left"), [[1, 2, 3], [0, 4, 5], [0, 0, 6]])
    # trailing dims are kept
    x = u.pad_sequence([T.ones(2, 3), T.ones(1, 3)], batch_first=True)
    assert tuple(x.shape) == (2, 2, 3)
    same(x[1, 1], [0.0, 0.0, 0.0])
    raises(RuntimeError, "Expected padding_side to be one of left or right, but got middle.", u.pad_sequence,
           [a], padding_side="middle")


def test_pad_sequence_gradient(T, nn):
    a = T.tensor([1.0, 2.0], requires_grad=True)
    b = T.tensor([3.0], requires_grad=True)
    out = rnn_utils(nn).pad_sequence([a, b], batch_first=True)
    (out * T.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    same(a.grad, [1.0, 2.0])
    same(b.grad, [3.0])


def test_pack_sequence_and_pad_packed(T, nn):
    u = rnn_utils(nn)
    a, b, c = _padded(T)
    packed = u.pack_sequence([a, b, c])
    same(packed.data, [[1.0, 1.5], [4.0, 4.5], [6.0, 6.5], [2.0, 2.5], [5.0, 5.5], [3.0, 3.5]])
    same(packed.batch_sizes, [3, 2, 1], dtype="int64")
    assert packed.sorted_indices is None and packed.unsorted_indices is None
    padded, lengths = u.pad_packed_sequence(packed, batch_first=True)
    same(lengths, [3, 2, 1], dtype="int64")
    same(padded[1], [[4.0, 4.5], [5.0, 5.5], [0.0, 0.0]])
    padded, lengths = u.pad_packed_sequence(packed, padding_value=-1.0, total_length=5)
    assert tuple(padded.shape) == (5, 3, 2)
    same(padded[:, 2, 0], [6.0, -1, -1, -1, -1])
    raises(ValueError, "Expected total_length to be at least the length of the longest sequence in input, but got "
           "total_length=2 and max sequence length being 3", u.pad_packed_sequence, packed, total_length=2)


def test_pack_sequence_enforce_sorted(T, nn):
    u = rnn_utils(nn)
    a, b, c = _padded(T)
    raises(RuntimeError, "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True",
           u.pack_sequence, [b, a, c])
    packed = u.pack_sequence([b, a, c], enforce_sorted=False)
    same(packed.sorted_indices, [1, 0, 2], dtype="int64")
    same(packed.unsorted_indices, [1, 0, 2], dtype="int64")
    same(packed.batch_sizes, [3, 2, 1])
    same(packed.data[:3], [[1.0, 1.5], [4.0, 4.5], [6.0, 6.5]])
    padded, lengths = u.pad_packed_sequence(packed, batch_first=True)
    same(lengths, [2, 3, 1])            # in the order given
    same(padded[0], [[4.0, 4.5], [5.0, 5.5], [0.0, 0.0]])
    back = u.unpack_sequence(packed)
    assert [tuple(s.shape) for s in back] == [(2, 2), (3, 2), (1, 2)]
    same(back[1], values(a))


def test_pack_padded_sequence(T, nn):
    u = rnn_utils(nn)
    x = T.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0]], dtype=T.float32)      # (B, T)
    packed = u.pack_padded_sequence(x, [3, 2, 1], batch_first=True)
    same(packed.data, [1.0, 4.0, 6.0, 2.0, 5.0, 3.0])
    same(packed.batch_sizes, [3, 2, 1])
    # lengths may be a tensor (on the CPU), unsorted with enforce_sorted=False
    x = T.tensor([[4, 5, 0], [1, 2, 3], [6, 0, 0]], dtype=T.float32)
    packed = u.pack_padded_sequence(x, T.tensor([2, 3, 1]), batch_first=True, enforce_sorted=False)
    same(packed.data, [1.0, 4.0, 6.0, 2.0, 5.0, 3.0])
    same(packed.sorted_indices, [1, 0, 2])
    padded, lengths = u.pad_packed_sequence(packed, batch_first=True)
    same(padded, values(x))
    same(lengths, [2, 3, 1])
    raises(RuntimeError, "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You "
           "can pass `enforce_sorted=False`", u.pack_padded_sequence, x, [2, 3, 1], batch_first=True)
    raises(RuntimeError, "Length of all samples has to be greater than 0, but found an element in 'lengths' that "
           "is <= 0", u.pack_padded_sequence, x, [3, 2, 0], batch_first=True)


def test_pack_padded_sequence_gradient(T, nn):
    u = rnn_utils(nn)
    x = T.arange(6.0).reshape(3, 2).requires_grad_()          # (T, B)
    packed = u.pack_padded_sequence(x, [3, 1])
    (packed.data * T.arange(1.0, 5.0)).sum().backward()
    same(x.grad, [[1.0, 2.0], [3.0, 0.0], [4.0, 0.0]])


def test_unpad_sequence(T, nn):
    u = rnn_utils(nn)
    a, b, c = _padded(T)
    padded = u.pad_sequence([a, b, c], batch_first=True)
    out = u.unpad_sequence(padded, T.tensor([3, 2, 1]), batch_first=True)
    for got, want in zip(out, (a, b, c)):
        same(got, values(want))


def test_packed_sequence_methods(T, nn):
    u = rnn_utils(nn)
    a, b, c = _padded(T)
    packed = u.pack_sequence([a, b, c])
    assert isinstance(packed, u.PackedSequence)
    data, batch_sizes, sorted_indices, unsorted_indices = packed      # a named tuple
    assert data is packed.data
    d = packed.double()
    assert str(d.data.dtype).endswith("float64") and str(d.batch_sizes.dtype).endswith("int64")
    assert str(packed.to(T.float64).data.dtype).endswith("float64")
    assert not packed.is_cuda
    assert packed.is_pinned() is False


def _rnn_np(x, h, w_ih, w_hh, b_ih, b_hh, act=np.tanh):
    out = []
    for t in range(x.shape[0]):
        h = act(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        out.append(h)
    return np.stack(out), h


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _lstm_np(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr=None):
    out = []
    for t in range(x.shape[0]):
        gates = x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = np.split(gates, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        if w_hr is not None:
            h = h @ w_hr.T
        out.append(h)
    return np.stack(out), h, c


def _gru_np(x, h, w_ih, w_hh, b_ih, b_hh):
    out = []
    for t in range(x.shape[0]):
        xr, xz, xn = np.split(x[t] @ w_ih.T + b_ih, 3, axis=-1)
        hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=-1)
        r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
        n = np.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out), h


def _p(m, name):
    return values(getattr(m, name)).astype(np.float64)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_matches_numpy(T, nn, nonlinearity):
    T.manual_seed(0)
    m = nn.RNN(3, 4, num_layers=2, nonlinearity=nonlinearity, dtype=T.float64)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out, h = m(T.tensor(x))
    act = np.tanh if nonlinearity == "tanh" else (lambda z: np.maximum(z, 0))
    o0, h0 = _rnn_np(x, np.zeros((2, 4)), *(_p(m, n + "_l0") for n in ("weight_ih", "weight_hh", "bias_ih",
                                                                          "bias_hh")), act=act)
    o1, h1 = _rnn_np(o0, np.zeros((2, 4)), *(_p(m, n + "_l1") for n in ("weight_ih", "weight_hh", "bias_ih",
                                                                          "bias_hh")), act=act)
    close(out, o1, rtol=1e-10, atol=1e-12)
    close(h, np.stack([h0, h1]), rtol=1e-10, atol=1e-12)


def test_lstm_bidirectional_batch_first_matches_numpy(T, nn):
    T.manual_seed(1)
    m = nn.LSTM(3, 4, bidirectional=True, batch_first=True, dtype=T.float64)
    assert [n for n, _ in m.named_parameters()] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse"]
    x = np.random.default_rng(1).standard_normal((2, 5, 3))        # (B, T, H_in)
    h0 = np.random.default_rng(2).standard_normal((2, 2, 4))
    c0 = np.random.default_rng(3).standard_normal((2, 2, 4))
    out, (h, c) = m(T.tensor(x), (T.tensor(h0), T.tensor(c0)))
    xt = x.transpose(1, 0, 2)
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    of, hf, cf = _lstm_np(xt, h0[0], c0[0], *(_p(m, n) for n in names))
    ob, hb, cb = _lstm_np(xt[::-1], h0[1], c0[1], *(_p(m, n + "_reverse") for n in names))
    expected = np.concatenate([of, ob[::-1]], -1).transpose(1, 0, 2)
    close(out, expected, rtol=1e-10, atol=1e-12)
    close(h, np.stack([hf, hb]), rtol=1e-10, atol=1e-12)       # h and c are not batch_first
    close(c, np.stack([cf, cb]), rtol=1e-10, atol=1e-12)


def test_lstm_proj_size_matches_numpy(T, nn):
    T.manual_seed(2)
    m = nn.LSTM(3, 5, proj_size=2, dtype=T.float64)
    assert tuple(m.weight_hr_l0.shape) == (2, 5)
    assert tuple(m.weight_hh_l0.shape) == (20, 2)
    x = np.random.default_rng(4).standard_normal((4, 2, 3))
    out, (h, c) = m(T.tensor(x))
    assert tuple(out.shape) == (4, 2, 2) and tuple(h.shape) == (1, 2, 2) and tuple(c.shape) == (1, 2, 5)
    o, hn, cn = _lstm_np(x, np.zeros((2, 2)), np.zeros((2, 5)),
                         *(_p(m, n) for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                                               "weight_hr_l0")))
    close(out, o, rtol=1e-10, atol=1e-12)
    close(c, cn[None], rtol=1e-10, atol=1e-12)


def test_gru_matches_numpy_and_unbatched(T, nn):
    T.manual_seed(3)
    m = nn.GRU(3, 4, dtype=T.float64)
    x = np.random.default_rng(5).standard_normal((5, 3))            # unbatched: (T, H_in)
    h0 = np.random.default_rng(6).standard_normal((1, 4))
    out, h = m(T.tensor(x), T.tensor(h0))
    o, hn = _gru_np(x[:, None], h0[:, None][0], *(_p(m, n) for n in ("weight_ih_l0", "weight_hh_l0",
                                                                       "bias_ih_l0", "bias_hh_l0")))
    assert tuple(out.shape) == (5, 4) and tuple(h.shape) == (1, 4)
    close(out, o[:, 0], rtol=1e-10, atol=1e-12)
    close(h, hn, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_rnn_initial_hidden_state(T, nn, kind):
    rnn = getattr(nn, kind)(10, 20, num_layers=2)
    input = T.randn(5, 3, 10)
    hidden = T.zeros(2, 3, 20)
    if kind == "LSTM":
        hidden = (hidden, hidden)
    output1, hidden1 = rnn(input, hidden)
    output2, hidden2 = rnn(input)
    same(output1, values(output2))
    if kind == "LSTM":
        same(hidden1[0], values(hidden2[0]))
        same(hidden1[1], values(hidden2[1]))
    else:
        same(hidden1, values(hidden2))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_rnn_packed_matches_padded(T, nn, kind):
    u = rnn_utils(nn)
    T.manual_seed(4)
    rnn = getattr(nn, kind)(2, 3, batch_first=True, dtype=T.float64)
    seqs = [T.randn(4, 2, dtype=T.float64), T.randn(2, 2, dtype=T.float64), T.randn(3, 2, dtype=T.float64)]
    packed = u.pack_sequence(seqs, enforce_sorted=False)
    out_packed, h_packed = rnn(packed)
    assert isinstance(out_packed, u.PackedSequence)
    padded, lengths = u.pad_packed_sequence(out_packed, batch_first=True)
    same(lengths, [4, 2, 3])
    h_packed = h_packed[0] if kind == "LSTM" else h_packed
    for i, s in enumerate(seqs):
        out, h = rnn(s[None])
        h = h[0] if kind == "LSTM" else h
        n = s.shape[0]
        close(padded[i, :n], values(out[0]), rtol=1e-10, atol=1e-12)
        same(padded[i, n:], np.zeros((4 - n, 3)))
        close(h_packed[:, i], values(h[:, 0]), rtol=1e-10, atol=1e-12)   # the state at each sequence's end


def test_rnn_args_check(T, nn):
    input_size, hidden_size, num_layers, batch_size, seq_len = 3, 5, 2, 3, 7
    for kind in ("RNN", "GRU"):
        m = getattr(nn, kind)(input_size, hidden_size, num_layers)
        raises(RuntimeError, "input.size\\(-1\\) must be equal to input_size. Expected 3, got 4", m,
               T.randn(seq_len, batch_size, 4))
        raises(RuntimeError, r"Expected hidden size \(2, 3, 5\), got \[2, 3, 6\]", m,
               T.randn(seq_len, batch_size, input_size), T.randn(num_layers, batch_size, 6))
        raises(RuntimeError, r"Expected hidden size \(2, 3, 5\), got \[1, 3, 5\]", m,
               T.randn(seq_len, batch_size, input_size), T.randn(1, batch_size, hidden_size))
    m = nn.LSTM(input_size, hidden_size, num_layers)
    h = T.randn(num_layers, batch_size, hidden_size)
    raises(RuntimeError, r"Expected hidden\[0\] size \(2, 3, 5\), got \[2, 4, 5\]", m,
           T.randn(seq_len, batch_size, input_size), (T.randn(num_layers, 4, hidden_size), h))
    raises(RuntimeError, r"Expected hidden\[1\] size \(2, 3, 5\), got \[2, 3, 4\]", m,
           T.randn(seq_len, batch_size, input_size), (h, T.randn(num_layers, batch_size, 4)))
    raises(ValueError, "LSTM: Expected input to be 2D or 3D, got 4D instead", m, T.randn(1, 2, 3, 3))


def test_rnn_unbatched_hidden_mismatch(T, nn):
    m = nn.GRU(3, 4)
    raises(RuntimeError, "For unbatched 2-D input, hx should also be 2-D but got 3-D tensor", m, T.randn(5, 3),
           T.randn(1, 1, 4))
    raises(RuntimeError, "For batched 3-D input, hx should also be 3-D but got 2-D tensor", m, T.randn(5, 2, 3),
           T.randn(1, 4))


def test_projections_lstm_args_check(T, nn):
    raises(ValueError, "proj_size has to be smaller than hidden_size", nn.LSTM, 3, 5, proj_size=5)
    raises(ValueError, "proj_size should be a positive integer or zero to disable projections", nn.LSTM, 3, 5,
           proj_size=-1)
    raises(ValueError, "proj_size argument is only supported for LSTM, not RNN or GRU", nn.GRU, 3, 5, proj_size=2)
    m = nn.LSTM(3, 5, num_layers=2, proj_size=2)
    x = T.randn(7, 3, 3)
    raises(RuntimeError, r"Expected hidden\[0\] size \(2, 3, 2\), got \[2, 3, 5\]", m, x,
           (T.randn(2, 3, 5), T.randn(2, 3, 5)))
    out, (h, c) = m(x, (T.randn(2, 3, 2), T.randn(2, 3, 5)))
    assert tuple(out.shape) == (7, 3, 2) and tuple(h.shape) == (2, 3, 2) and tuple(c.shape) == (2, 3, 5)
    assert tuple(m.weight_ih_l1.shape) == (20, 2)


def test_rnn_constructor_errors_and_warnings(T, nn):
    raises(ValueError, "Unknown nonlinearity 'garbage'. Select from 'tanh' or 'relu'.", nn.RNN, 10, 10,
           nonlinearity="garbage")
    raises(ValueError, "dropout should be a number in range \\[0, 1\\] representing the probability of an element "
           "being zeroed", nn.LSTM, 3, 4, dropout=1.5)
    raises(ValueError, "hidden_size must be greater than zero", nn.GRU, 3, 0)
    raises(ValueError, "num_layers must be greater than zero", nn.GRU, 3, 4, num_layers=0)
    raises(TypeError, "hidden_size should be of type int, got: float", nn.GRU, 3, 4.0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        nn.LSTM(3, 4, dropout=0.2)
    assert any("non-zero dropout expects num_layers greater than 1, but got dropout=0.2 and num_layers=1" in
               str(x.message) for x in w)


def test_rnn_no_bias_and_repr(T, nn):
    m = nn.GRU(3, 4, num_layers=2, bias=False, batch_first=True, bidirectional=True)
    assert all("bias" not in n for n, _ in m.named_parameters())
    assert len(list(m.parameters())) == 8
    assert repr(m) == "GRU(3, 4, num_layers=2, bias=False, batch_first=True, bidirectional=True)"
    assert repr(nn.LSTM(3, 4, proj_size=2)) == "LSTM(3, 4, proj_size=2)"
    assert repr(nn.RNN(3, 4, nonlinearity="relu")) == "RNN(3, 4)"     # PyTorch does not show it
    m.flatten_parameters()          # a no-op on the CPU
    out, h = m(T.randn(2, 5, 3))
    assert tuple(out.shape) == (2, 5, 8) and tuple(h.shape) == (4, 2, 4)


def test_rnn_gradient_flows_to_weights_and_input(T, nn):
    m = nn.LSTM(2, 3)
    x = T.randn(4, 1, 2, requires_grad=True)
    out, (h, c) = m(x)
    (out.sum() + c.sum()).backward()
    assert x.grad is not None and tuple(x.grad.shape) == (4, 1, 2)
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_rnn_cells(T, nn, kind):
    T.manual_seed(5)
    cell = getattr(nn, kind)(3, 4, dtype=T.float64)
    x = np.random.default_rng(7).standard_normal((2, 3))
    h = np.random.default_rng(8).standard_normal((2, 4))
    c = np.random.default_rng(9).standard_normal((2, 4))
    weights = [_p(cell, n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    if kind == "LSTMCell":
        hn, cn = cell(T.tensor(x), (T.tensor(h), T.tensor(c)))
        _, eh, ec = _lstm_np(x[None], h, c, *weights)
        close(hn, eh, rtol=1e-10, atol=1e-12)
        close(cn, ec, rtol=1e-10, atol=1e-12)
        hn, cn = cell(T.tensor(x[0]))                   # unbatched, zero state
        _, eh, ec = _lstm_np(x[None, :1], np.zeros((1, 4)), np.zeros((1, 4)), *weights)
        close(hn, eh[0], rtol=1e-10, atol=1e-12)
        return
    hn = cell(T.tensor(x), T.tensor(h))
    _, eh = (_rnn_np(x[None], h, *weights) if kind == "RNNCell" else _gru_np(x[None], h, *weights))
    close(hn, eh, rtol=1e-10, atol=1e-12)
    assert tuple(cell(T.tensor(x)).shape) == (2, 4)


def test_rnn_cell_errors(T, nn):
    cell = nn.RNNCell(3, 4)
    raises(RuntimeError, "input has inconsistent input_size: got 5 expected 3", cell, T.randn(2, 5))
    raises(RuntimeError, "Input batch size 2 doesn't match hidden0 batch size 3", cell, T.randn(2, 3),
           T.randn(3, 4))
    raises(RuntimeError, "hidden0 has inconsistent hidden_size: got 5, expected 4", cell, T.randn(2, 3),
           T.randn(2, 5))
    raises(ValueError, "RNNCell: Expected input to be 1D or 2D, got 3D instead", cell, T.randn(1, 2, 3))
    # PyTorch finds an unknown nonlinearity at the first call (RuntimeError), chainrule at construction
    raises((ValueError, RuntimeError), "Unknown nonlinearity: garbage",
           lambda: nn.RNNCell(3, 4, nonlinearity="garbage")(T.randn(2, 3)))


@pytest.mark.parametrize("p, train, expected", [(0.0, True, 1000.0), (1.0, True, 0.0), (1.0, False, 1000.0)])
def test_RNN_dropout(T, nn, p, train, expected):
    # dropout goes between the layers: the first layer's state is never dropped
    rnn = nn.RNN(10, 100, 2, bias=False, dropout=p, nonlinearity="relu")
    rnn.train(train)
    with T.no_grad():
        for w in (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.weight_ih_l1, rnn.weight_hh_l1):
            w.fill_(1)
    output, hy = rnn(T.ones(1, 1, 10), T.zeros(2, 1, 100))
    same(output, np.full((1, 1, 100), expected, np.float32))
    same(hy[0], np.full((1, 100), 10.0, np.float32))
    same(hy[1], np.full((1, 100), expected, np.float32))


def test_rnn_weight_norm_and_spectral_norm(T, nn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = nn.utils.weight_norm(nn.LSTM(3, 4), name="weight_hh_l0")
    assert [n for n, _ in m.named_parameters()] == ["weight_ih_l0", "bias_ih_l0", "bias_hh_l0", "weight_hh_l0_g",
                                                    "weight_hh_l0_v"]
    out, (h, c) = m(T.randn(2, 1, 3))
    assert tuple(out.shape) == (2, 1, 4)
    m = nn.utils.spectral_norm(nn.GRU(3, 4), name="weight_hh_l0")
    assert "weight_hh_l0_orig" in dict(m.named_parameters())
    assert tuple(m(T.randn(2, 1, 3))[0].shape) == (2, 1, 4)


def test_rnn_all_weights_and_pickle(T, nn):
    import pickle
    m = nn.LSTM(3, 4, 2)
    assert [tuple(w.shape) for layer in m.all_weights for w in layer] == [(16, 3), (16, 4), (16,), (16,), (16, 4),
                                                                          (16, 4), (16,), (16,)]
    x = T.randn(2, 1, 3)
    m2 = pickle.loads(pickle.dumps(m))
    same(m2(x)[0], values(m(x)[0]))
    raises(ValueError, "input_size must be greater than zero", nn.RNN, 0, 3)


def test_lstm_cell_hx_must_be_a_tuple(T, nn):
    raises(TypeError, "lstm_cell\\(\\): argument 'hx' \\(position 2\\) must be tuple of Tensors, not Tensor",
           nn.LSTMCell(3, 4), T.randn(2, 3), T.randn(2, 4))
