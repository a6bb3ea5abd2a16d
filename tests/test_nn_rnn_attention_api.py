"""PyTorch's public helper methods of the recurrent layers (check_input, get_expected_hidden_size,
check_hidden_size, check_forward_args, permute_hidden) and MultiheadAttention.merge_masks."""

import numpy as np
import pytest

import autograd
import nn


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_checks(kind):
    layer = getattr(nn, kind)(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    x = autograd.zeros(4, 7, 3)
    assert tuple(layer.get_expected_hidden_size(x, None)) == (4, 4, 5)
    assert tuple(layer.get_expected_hidden_size(autograd.zeros(10, 3), autograd.tensor([4, 3, 2, 1]))) == (4, 4, 5)
    h = autograd.zeros(4, 4, 5)
    layer.check_forward_args(x, (h, h) if kind == "LSTM" else h, None)  # passes
    wrong = autograd.zeros(4, 3, 5)
    which = "hidden\\[0\\]" if kind == "LSTM" else "hidden"
    with pytest.raises(RuntimeError, match=rf"Expected {which} size \(4, 4, 5\), got \[4, 3, 5\]"):
        layer.check_forward_args(x, (wrong, h) if kind == "LSTM" else wrong, None)
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size. Expected 3, got 2"):
        layer.check_input(autograd.zeros(4, 7, 2), None)
    with pytest.raises(RuntimeError, match="input must have 2 dimensions, got 3"):
        layer.check_input(x, autograd.tensor([4, 3]))
    with pytest.raises(ValueError, match="does not match weight dtype"):
        layer.check_input(autograd.zeros(4, 7, 3, dtype=autograd.float64), None)
    order = autograd.tensor([3, 2, 1, 0])
    states = autograd.arange(16.0).reshape(4, 4, 1)
    permuted = layer.permute_hidden((states, states) if kind == "LSTM" else states, order)
    first = permuted[0] if kind == "LSTM" else permuted
    np.testing.assert_array_equal(first.numpy()[0, :, 0], [3, 2, 1, 0])
    assert layer.permute_hidden(h, None) is h
    # forward goes through the same checks: the message of a wrong h0 is check_hidden_size's
    with pytest.raises(RuntimeError, match=rf"Expected {which} size"):
        layer(x, (wrong, h) if kind == "LSTM" else wrong)


def test_lstm_cell_size_with_projections():
    layer = nn.LSTM(3, 6, proj_size=2)
    x = autograd.zeros(5, 4, 3)
    assert tuple(layer.get_expected_hidden_size(x, None)) == (1, 4, 2)
    assert tuple(layer.get_expected_cell_size(x, None)) == (1, 4, 6)


def _masks():
    rng = np.random.default_rng(0)
    return rng.random((4, 4)) > 0.5, rng.random((2, 4)) > 0.5


def test_merge_masks():
    attention = nn.MultiheadAttention(6, 3)
    query = autograd.zeros(2, 4, 6)
    attn_mask, padding = (autograd.tensor(m) for m in _masks())
    assert attention.merge_masks(None, None, query) == (None, None)
    merged, kind = attention.merge_masks(None, padding, query)
    assert kind == 1 and merged is padding
    merged, kind = attention.merge_masks(attn_mask, padding, query)
    assert kind == 2 and tuple(merged.shape) == (2, 3, 4, 4) and merged.dtype == autograd.bool
    expected = attn_mask.numpy()[None, None] | padding.numpy()[:, None, None, :]
    np.testing.assert_array_equal(merged.numpy(), np.broadcast_to(expected, (2, 3, 4, 4)))
    merged, kind = attention.merge_masks(autograd.zeros(6, 4, 4), None, query)
    assert kind == 2 and tuple(merged.shape) == (2, 3, 4, 4)


def test_merge_masks_against_torch():
    torch = pytest.importorskip("torch")
    attn_mask, padding = _masks()
    floats = np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32), \
        np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    for a, k in [(attn_mask, padding), (attn_mask, None), floats]:
        ours, kind = nn.MultiheadAttention(6, 3).merge_masks(
            autograd.tensor(a), None if k is None else autograd.tensor(k), autograd.zeros(2, 4, 6))
        theirs, their_kind = torch.nn.MultiheadAttention(6, 3).merge_masks(
            torch.tensor(a), None if k is None else torch.tensor(k), torch.zeros(2, 4, 6))
        assert kind == their_kind
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
