"""Packed and padded sequences, ported from PyTorch's test/nn/test_packed_sequence.py (PackedSequenceTest):
PackedSequence's dtype casts and `to`, pad_sequence / unpad_sequence / pack_sequence / unpack_sequence with
trailing dims and shuffled lengths, pack_padded_sequence's data, batch_sizes, permutations and gradient
(sorted and unsorted, batch_first or not), pad_packed_sequence's total_length, and the errors. The basic
cases of test_nn.py are in tests/test_ported_nn_rnn.py. The sequences are drawn from a seeded NumPy
generator and the expectations computed with NumPy, so each test runs on chainrule's `nn` and, where it is
installed, on PyTorch's."""

import itertools

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

CASTS = {"double": "float64", "float": "float32", "long": "int64", "int": "int32", "short": "int16",
         "char": "int8", "byte": "uint8"}


def rnn_utils(nn):
    return nn.utils.rnn


def ordered_sequences(T, rng, dtype, batch_size=5, max_length=6):
    """Random 1-D sequences of random lengths in 1..max_length, longest first."""
    low, high = (0, 256) if dtype == "uint8" else (-128, 128)
    seqs = [rng.integers(low, high, rng.integers(1, max_length + 1)).astype(dtype) for _ in range(batch_size)]
    seqs.sort(key=len, reverse=True)
    return [T.tensor(s) for s in seqs]


def np_pad(seqs, batch_first=False, value=0):
    """NumPy's pad_sequence: (T, B, *) or (B, T, *)."""
    longest = max(len(s) for s in seqs)
    out = np.full((len(seqs), longest) + seqs[0].shape[1:], value, dtype=seqs[0].dtype)
    for b, s in enumerate(seqs):
        out[b, :len(s)] = s
    return out if batch_first else out.swapaxes(0, 1)


def square_length_sequences(T, rng, num_dim, descending=False):
    """Sequences of lengths 1, 4, ..., 81 with shape (L, 5, 4, ...), shuffled (or longest first)."""
    lengths = [i * i for i in range(1, 10)]
    if descending:
        lengths = lengths[::-1]
    else:
        rng.shuffle(lengths)
    return [rng.random((n, 5) + (4,) * num_dim).astype(np.float32) for n in lengths]


def test_type_casts(T, nn, rng):
    u = rnn_utils(nn)
    for input_dtype in CASTS.values():
        for cast, expected in CASTS.items():
            for enforce_sorted in [True, False]:
                seqs = ordered_sequences(T, rng, input_dtype)
                lengths = [len(s) for s in seqs]
                packed = u.pack_padded_sequence(u.pad_sequence(seqs), lengths, enforce_sorted=enforce_sorted)
                unpacked, lengths_out = u.pad_packed_sequence(getattr(packed, cast)())
                assert str(unpacked.dtype).endswith(expected)
                same(unpacked, np_pad([values(s) for s in seqs]).astype(expected))
                same(lengths_out, lengths, dtype="int64")


def test_wrong_order(T, nn):
    u = rnn_utils(nn)
    b_a = u.pad_sequence([T.ones(22, 300), T.ones(25, 300)])
    raises(RuntimeError, "must be sorted in decreasing order", u.pack_padded_sequence, b_a, [22, 25],
           enforce_sorted=True)


def test_pad_sequence_with_tensor_sequences(T, nn):
    u = rnn_utils(nn)
    from_tuple = u.pad_sequence((T.tensor([[7, 6]]), T.tensor([[-7, -1]])))
    from_tensor = u.pad_sequence(T.tensor([[[7, 6]], [[-7, -1]]]))
    same(from_tuple, [[[7, 6], [-7, -1]]], dtype="int64")
    same(from_tensor, values(from_tuple), dtype="int64")


def test_pad_sequence_with_non_iterable_sequences(T, nn):
    raises(RuntimeError, r"Expected iterable for input sequences, but got arg of type: <class 'int'>",
           rnn_utils(nn).pad_sequence, 5)


def test_total_length(T, nn, rng):
    u = rnn_utils(nn)
    seqs = ordered_sequences(T, rng, "float32")
    lengths = [len(s) for s in seqs]
    max_length = max(lengths)
    packed = u.pack_padded_sequence(u.pad_sequence(seqs), lengths)
    for total_length in (-1, 0, max_length - 1):
        for batch_first in (True, False):
            raises(ValueError, "Expected total_length to be at least the length of the longest sequence in input, "
                   f"but got total_length={total_length} and max sequence length being {max_length}",
                   u.pad_packed_sequence, packed, batch_first=batch_first, total_length=total_length)
    for batch_first in (True, False):
        for delta in (0, 1, 8):
            unpacked, lengths_out = u.pad_packed_sequence(packed, batch_first=batch_first,
                                                          total_length=max_length + delta)
            same(lengths_out, lengths)
            expected = np.zeros((5, max_length + delta), np.float32)
            expected[:, :max_length] = np_pad([values(s) for s in seqs], batch_first=True)
            same(unpacked, expected if batch_first else expected.T)


def test_to(T, nn, rng):
    u = rnn_utils(nn)
    for enforce_sorted in (True, False):
        seqs = ordered_sequences(T, rng, "int32")
        a = u.pack_padded_sequence(u.pad_sequence(seqs), [len(s) for s in seqs], enforce_sorted=enforce_sorted).cpu()
        assert a is a.to("cpu")
        assert a is a.cpu()
        assert a is a.to("cpu", dtype=T.int32)
        long, to64 = a.long(), a.to(T.int64)
        same(long.data, values(to64.data), dtype="int64")
        same(long.batch_sizes, values(to64.batch_sizes))
        if not enforce_sorted:
            same(long.sorted_indices, values(a.sorted_indices))
            same(long.unsorted_indices, values(a.unsorted_indices))


def test_pad_sequence(T, nn, rng):
    u = rnn_utils(nn)
    a, b, c = T.tensor([1, 2, 3]), T.tensor([4, 5]), T.tensor([6])
    same(u.pad_sequence([b, a, c], True), [[4, 5, 0], [1, 2, 3], [6, 0, 0]])
    same(u.pad_sequence([b, a, c]), [[4, 1, 6], [5, 2, 0], [0, 3, 0]])
    same(u.pad_sequence([b, a, c], True, 1), [[4, 5, 1], [1, 2, 3], [6, 1, 1]])       # a non-zero padding value
    same(u.pad_sequence([a, b, c], True), [[1, 2, 3], [4, 5, 0], [6, 0, 0]])
    for num_dim in (0, 1, 2, 3):
        seqs = square_length_sequences(T, rng, num_dim)
        expected = np_pad(seqs, batch_first=True)
        assert expected.shape == (9, 81, 5) + (4,) * num_dim
        same(u.pad_sequence([T.tensor(s) for s in seqs], True), expected)
        same(u.pad_sequence([T.tensor(s) for s in seqs]), expected.swapaxes(0, 1))


def test_unpad_sequence(T, nn, rng):
    u = rnn_utils(nn)
    seqs = [T.tensor([1, 2, 3]), T.tensor([4, 5]), T.tensor([6])]
    lengths = T.tensor([3, 2, 1])
    for batch_first in [True, False]:
        out = u.unpad_sequence(u.pad_sequence(seqs, batch_first=batch_first), lengths, batch_first=batch_first)
        assert len(out) == 3
        for got, want in zip(out, seqs):
            same(got, values(want), dtype="int64")
    for num_dim, batch_first in itertools.product((0, 1, 2, 3), (True, False)):
        seqs = square_length_sequences(T, rng, num_dim)
        lengths = T.tensor([len(s) for s in seqs])
        padded = u.pad_sequence([T.tensor(s) for s in seqs], batch_first=batch_first)
        out = u.unpad_sequence(padded, lengths, batch_first=batch_first)
        for got, want in zip(out, seqs):
            same(got, want)


def test_pack_sequence(T, nn, rng):
    u = rnn_utils(nn)
    a, b, c = T.tensor([1, 2, 3]), T.tensor([4, 5]), T.tensor([6])
    packed = u.pack_sequence([a, b, c], enforce_sorted=False)
    same(packed.batch_sizes, [3, 2, 1])
    same(packed.data, [1, 4, 6, 2, 5, 3])
    same(packed.sorted_indices, [0, 1, 2])
    same(packed.unsorted_indices, [0, 1, 2])
    unsorted = u.pack_sequence([b, c, a], enforce_sorted=False)
    same(unsorted.batch_sizes, [3, 2, 1])
    same(unsorted.data, [1, 4, 6, 2, 5, 3])
    same(unsorted.sorted_indices, [2, 0, 1])
    same(unsorted.unsorted_indices, [1, 2, 0])
    enforced = u.pack_sequence([a, b, c], enforce_sorted=True)
    same(enforced.batch_sizes, [3, 2, 1])
    same(enforced.data, [1, 4, 6, 2, 5, 3])
    assert enforced.sorted_indices is None and enforced.unsorted_indices is None
    raises(RuntimeError, "must be sorted in decreasing order", u.pack_sequence, [b, c, a], enforce_sorted=True)
    raises(RuntimeError, "You can pass `enforce_sorted=False`", u.pack_sequence, [b, c, a], enforce_sorted=True)


@pytest.mark.parametrize("num_dim", [0, 1, 2, 3])
def test_pack_sequence_agrees_with_padding(T, nn, rng, num_dim):
    u = rnn_utils(nn)
    descending = square_length_sequences(T, rng, num_dim, descending=True)
    shuffled = [descending[i] for i in rng.permutation(9)]

    def compatible(seqs, batch_first, enforce_sorted=False):
        tensors = [T.tensor(s) for s in seqs]
        lengths = [len(s) for s in seqs]
        padded = u.pad_sequence(tensors, batch_first)
        packed = u.pack_sequence(tensors, enforce_sorted)
        same(u.pad_packed_sequence(packed, batch_first)[0], values(padded))
        pack_padded = u.pack_padded_sequence(padded, lengths, batch_first, enforce_sorted)
        for got, want in zip(packed, pack_padded):
            assert (got is None) == (want is None)
            if got is not None:
                same(got, values(want))
        # the packed rows: step by step, the sequences still running, longest first
        order = sorted(range(len(seqs)), key=lambda k: -lengths[k])
        rows = [seqs[k][t] for t in range(max(lengths)) for k in order if lengths[k] > t]
        same(packed.data, np.stack(rows))

    for batch_first in (True, False):
        for enforce_sorted in (True, False):
            compatible(descending, batch_first, enforce_sorted)
        compatible(shuffled, batch_first)


def test_unpack_sequence(T, nn, rng):
    u = rnn_utils(nn)
    seqs = [T.tensor([1, 2, 3]), T.tensor([4, 5]), T.tensor([6])]
    out = u.unpack_sequence(u.pack_sequence(seqs, enforce_sorted=False))
    for got, want in zip(out, seqs):
        same(got, values(want), dtype="int64")
    for num_dim in (0, 1, 2, 3):
        seqs = square_length_sequences(T, rng, num_dim)
        out = u.unpack_sequence(u.pack_sequence([T.tensor(s) for s in seqs], enforce_sorted=False))
        assert len(out) == 9
        for got, want in zip(out, seqs):
            same(got, want)


@pytest.mark.parametrize("sorted_lengths, shuffle", [([10, 8, 4, 2, 2, 2, 1], False),
                                                      ([11, 10, 8, 6, 4, 3, 1], False),
                                                      ([11, 10, 8, 6, 4, 3, 1], True)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_pack_padded_sequence(T, nn, rng, sorted_lengths, shuffle, batch_first):
    u = rnn_utils(nn)
    max_length = sorted_lengths[0]
    batch_sizes = [sum(n >= t for n in sorted_lengths) for t in range(1, max_length + 1)]
    # sequence i (from 1) holds i*100 + 1, 2, ..., 5·length in rows of 5: step n of it is i*100 + 5n + (1..5)
    padded = np.zeros((max_length, len(sorted_lengths), 5))
    for i, n in enumerate(sorted_lengths, 1):
        padded[:n, i - 1] = i * 100 + np.arange(1.0, 5 * n + 1).reshape(n, 5)
    expected_data = np.stack([np.arange(1.0, 6) + (i + 1) * 100 + 5 * n
                              for n, size in enumerate(batch_sizes) for i in range(size)])
    lengths = list(sorted_lengths)
    unsorted_indices = None
    if shuffle:
        permutation = rng.permutation(len(sorted_lengths))
        unsorted_indices = np.argsort(permutation)     # the inverse permutation
        padded = padded[:, unsorted_indices]
        lengths = [sorted_lengths[k] for k in unsorted_indices]
    x = T.tensor(padded.astype(np.float32), requires_grad=True)
    src = x.transpose(0, 1) if batch_first else x
    packed = u.pack_padded_sequence(src, lengths, batch_first=batch_first, enforce_sorted=not shuffle)
    same(packed.data, expected_data.astype(np.float32))
    same(packed.batch_sizes, batch_sizes, dtype="int64")
    if shuffle:
        same(packed.unsorted_indices, unsorted_indices)
    else:
        assert packed.unsorted_indices is None
    # the inverse
    unpacked, unpacked_len = u.pad_packed_sequence(packed, batch_first=batch_first)
    same(unpacked, values(src))
    same(unpacked_len, lengths)
    # the gradient reaches the real steps only
    grad_output = rng.standard_normal(tuple(unpacked.shape)).astype(np.float32)
    unpacked.backward(T.tensor(grad_output))
    if batch_first:
        grad_output = grad_output.swapaxes(0, 1)
    expected_grad = np.zeros_like(grad_output)
    for b, n in enumerate(lengths):
        expected_grad[:n, b] = grad_output[:n, b]
    same(x.grad, expected_grad)


def test_pack_padded_sequence_errors(T, nn):
    u = rnn_utils(nn)
    raises(RuntimeError, "You can pass `enforce_sorted=False`", u.pack_padded_sequence, T.randn(3, 3), [1, 3, 2])
    raises(RuntimeError, "Cannot pack empty tensors", u.pack_padded_sequence, T.randn(0, 0), [])
    raises(RuntimeError, "Cannot pack empty tensors", u.pack_padded_sequence, T.randn(0, 1, 10),
           T.randn(11, 14, 14, 2), True)
    raises(RuntimeError, r"Expected `len\(lengths\)` to be equal to batch_size, but got 3 \(batch_size=2\)",
           u.pack_padded_sequence, T.ones(3, 2), [3, 2, 1])
