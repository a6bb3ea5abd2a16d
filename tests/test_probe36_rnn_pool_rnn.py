"""nn.utils.rnn's check order found by session 36's differential probe of recurrences (RNN/LSTM/GRU of 1-3 layers,
bidirectional, projections, packed inputs; all else agreed): with enforce_sorted, PyTorch's kernel checks the last
length, then the order, so a 0 before a longer sequence is refused as out of order."""

import numpy as np
import pytest

import autograd
from nn.utils import rnn

ORDER = "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True"
ZERO = "Length of all samples has to be greater than 0"


@pytest.mark.parametrize("lengths,words", [([3, 0, 0, 3], ORDER), ([2, 0, 2], ORDER), ([3, 2, 0], ZERO),
                                           ([0, 1], ORDER)])
def test_pack_sequence_with_enforce_sorted_checks_the_last_length_then_the_order(lengths, words):
    sequences = [autograd.ones(n) for n in lengths]
    with pytest.raises(RuntimeError, match=words):
        rnn.pack_sequence(sequences, enforce_sorted=True)
    with pytest.raises(RuntimeError, match=ZERO):  # (sorted first: the shortest, 0, is last)
        rnn.pack_sequence(sequences, enforce_sorted=False)


def test_pack_padded_sequence_still_packs_sorted_and_unsorted_lengths():
    padded = autograd.arange(6.0).reshape(3, 2)  # (T, B)
    packed = rnn.pack_padded_sequence(padded, [3, 1])
    np.testing.assert_array_equal(packed.data.numpy(), [0, 1, 2, 4])
    np.testing.assert_array_equal(packed.batch_sizes.numpy(), [2, 1, 1])
    packed = rnn.pack_padded_sequence(padded, autograd.tensor([1, 3]), enforce_sorted=False)
    np.testing.assert_array_equal(packed.data.numpy(), [1, 0, 3, 5])
    np.testing.assert_array_equal(packed.sorted_indices.numpy(), [1, 0])
    assert packed.batch_sizes.dtype == autograd.int64


@pytest.mark.parametrize("lengths", [[3, 0, 0, 3], [2, 0, 2], [3, 2, 0], [0, 0], [0, 2]])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_pack_sequence_refusals_as_pytorch(lengths, enforce_sorted):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.utils.rnn.pack_sequence([torch.ones(n) for n in lengths], enforce_sorted=enforce_sorted)
    with pytest.raises(RuntimeError) as ours:
        rnn.pack_sequence([autograd.ones(n) for n in lengths], enforce_sorted=enforce_sorted)
    assert str(ours.value) == str(theirs.value)
