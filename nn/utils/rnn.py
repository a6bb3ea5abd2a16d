"""``nn.utils.rnn``: batches of sequences of different lengths, padded or packed (PyTorch's).

A padded batch is one tensor (T, B, *) with the short sequences filled up. A
packed batch keeps only the real steps, time-major: ``data`` holds, for t = 0,
1, ..., the t-th step of every sequence still running, longest sequences first,
and ``batch_sizes[t]`` says how many there are. The recurrent layers read a
``PackedSequence`` directly: at step t they update only the first
``batch_sizes[t]`` rows, so each sequence's final state is taken at its own
last step.
"""

from collections.abc import Iterable
from typing import NamedTuple

import autograd
from autograd import Tensor
from autograd.backend import xp
from autograd.device import served
from autograd.tensor import tensor_from
from autograd.write_door import _refuse_overflow


class _PackedSequenceFields(NamedTuple):
    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor
    unsorted_indices: Tensor


class PackedSequence(_PackedSequenceFields):
    """data (Σ lengths, *), batch_sizes (T,) int64, and the permutation that sorted the
    batch by decreasing length (None when it came sorted) with its inverse."""

    __slots__ = ()

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        # Programs rebuild a packed batch around new data with only the sorted order,
        # ``PackedSequence(embedding(packed.data), packed.batch_sizes, packed.sorted_indices)``:
        # the inverse is derived then, as PyTorch's, or padding it back would leave the batch sorted.
        if unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices)
        if batch_sizes is None:  # PackedSequence((data, batch_sizes), sorted_indices=...), PyTorch's older form
            if not (isinstance(data, (list, tuple)) and len(data) == 2):
                raise AssertionError("Expected data to be a list or tuple of length 2")
            data, batch_sizes = data
        elif batch_sizes.device.type != "cpu" and batch_sizes.device != served():  # (under CuPy: the GPU's)
            raise ValueError("batch_sizes should always be on CPU. Instances of PackedSequence should never be "
                             "created manually. They should be instantiated by functions like pack_sequence and "
                             "pack_padded_sequences in nn.utils.rnn.")
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    # -- moving and converting, as a tensor does (a training loop calls packed.to(device)) ------

    def to(self, *args, **kwargs):
        """``data.to(...)``, the permutations following data's device; ``batch_sizes`` stays where it is
        (PyTorch keeps it on the CPU). ``self`` when data does not change, as PyTorch's."""
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        sorted_indices, unsorted_indices = (None if t is None else t.to(data.device)
                                            for t in (self.sorted_indices, self.unsorted_indices))
        return type(self)(data, self.batch_sizes, sorted_indices, unsorted_indices)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def pin_memory(self):
        return type(self)(self.data.pin_memory(), self.batch_sizes, self.sorted_indices, self.unsorted_indices)

    def is_pinned(self):
        return self.data.is_pinned()

    @property
    def is_cuda(self):
        return self.data.is_cuda

    def double(self):
        return self.to(dtype=autograd.float64)

    def float(self):
        return self.to(dtype=autograd.float32)

    def half(self):
        return self.to(dtype=autograd.float16)

    def long(self):
        return self.to(dtype=autograd.int64)

    def int(self):
        return self.to(dtype=autograd.int32)

    def short(self):
        return self.to(dtype=autograd.int16)

    def char(self):
        return self.to(dtype=autograd.int8)

    def byte(self):
        return self.to(dtype=autograd.uint8)


def _as_ints(values):
    values = values._data if isinstance(values, Tensor) else values
    return xp.asarray(values, dtype=xp.int64).reshape(-1)


def padded_positions(batch_sizes):
    """For each row of packed data, its (t, b) position in the padded (T, B) layout."""
    batch_sizes = _as_ints(batch_sizes)
    steps = xp.repeat(xp.arange(len(batch_sizes)), batch_sizes)
    starts = xp.concatenate([xp.zeros(1, dtype=batch_sizes.dtype), xp.cumsum(batch_sizes)[:-1]])
    return steps, xp.arange(int(batch_sizes.sum())) - starts[steps]


def packed_to_padded(data, batch_sizes, padding_value=0.0):
    """The packed rows of ``data`` laid out as (T, B, *), ``padding_value`` where no step is."""
    batch_sizes = _as_ints(batch_sizes)
    steps, rows = padded_positions(batch_sizes)
    index = xp.full((len(batch_sizes), int(batch_sizes[0])), len(steps), dtype=xp.int64)
    index[steps, rows] = xp.arange(len(steps))
    filler = autograd.full((1,) + tuple(data.shape[1:]), padding_value, dtype=data.dtype)
    return autograd.cat([data, filler])[index]


def padded_to_packed(padded, batch_sizes):
    """The inverse: the real steps of a (T, B, *) batch (sorted by length) as packed rows."""
    steps, rows = padded_positions(batch_sizes)
    return padded[steps, rows]


def _lengths_from(batch_sizes):
    batch_sizes = _as_ints(batch_sizes)
    return (batch_sizes[None, :] > xp.arange(int(batch_sizes[0]))[:, None]).sum(1)


def invert_permutation(permutation):
    """The permutation that undoes ``permutation`` (a 1-D tensor of indices): ``inverse[permutation[i]] = i``
    (a PackedSequence's ``unsorted_indices`` from its ``sorted_indices``); None stays None."""
    if permutation is None:
        return None
    return tensor_from(xp.argsort(permutation._data, kind="stable"))


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack sequences of shapes (L_k, *) into (T, B, *) (or (B, T, *)), T = max L_k,
    filling with ``padding_value`` on the right (or the left). The result has the first sequence's dtype, the
    others cast to it (PyTorch copies each into a tensor made like the first: no promotion)."""
    if padding_side not in ("left", "right"):
        raise RuntimeError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    if not isinstance(sequences, (Tensor, Iterable)):
        raise RuntimeError(f"pad_sequence: Expected iterable for input sequences, but got arg of type: "
                           f"{type(sequences)}")
    sequences = [s if isinstance(s, Tensor) else tensor_from(s) for s in sequences]
    if not sequences:
        raise RuntimeError("received an empty list of sequences")
    longest = max(s.shape[0] for s in sequences)
    # (padding_value is a float, as PyTorch's: -1 does not wrap into uint8, NaN fits no integer)
    _refuse_overflow(float(padding_value), sequences[0].dtype)
    padded = []
    for s in sequences:
        s = s.to(sequences[0].dtype)
        if s.shape[0] < longest:
            filler = autograd.full((longest - s.shape[0],) + tuple(s.shape[1:]), padding_value, dtype=s.dtype)
            s = autograd.cat([s, filler] if padding_side == "right" else [filler, s])
        padded.append(s)
    return autograd.stack(padded, dim=0 if batch_first else 1)


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (T, B, *) (or (B, T, *)) of sequences with the given lengths.

    With ``enforce_sorted`` the lengths must already decrease; otherwise the batch is
    sorted here and the permutation kept, so outputs come back in the caller's order.
    """
    if input.numel() == 0:
        raise RuntimeError("Cannot pack empty tensors.")
    if isinstance(lengths, Tensor) and lengths.dim() != 1:  # (flattened, a (1, B) lengths would pack silently)
        kind = lengths.type().rpartition(".")[2].removesuffix("Tensor")  # Long, as 'torch.LongTensor'
        raise RuntimeError(f"'lengths' argument should be a 1D CPU int64 tensor, but got {lengths.dim()}D cpu {kind} "
                           "tensor")
    lengths = _as_ints(lengths)
    batch_dim = 0 if batch_first else 1
    if len(lengths) != input.shape[batch_dim]:
        raise RuntimeError(f"Expected `len(lengths)` to be equal to batch_size, but got {len(lengths)} "
                           f"(batch_size={input.shape[batch_dim]})")
    # PyTorch's kernel checks the last length, then the order: a 0 before a longer one breaks the order first
    if lengths[-1] <= 0 if enforce_sorted else (lengths <= 0).any():
        raise RuntimeError("Length of all samples has to be greater than 0, but found an element in 'lengths' "
                           "that is <= 0")
    if enforce_sorted:
        if (xp.diff(lengths) > 0).any():
            raise RuntimeError("`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. "
                               "You can pass `enforce_sorted=False` to pack_padded_sequence and/or pack_sequence "
                               "to sidestep this requirement if you do not need ONNX exportability.")
        sorted_indices = unsorted_indices = None
    else:
        # PyTorch's torch.sort(lengths, descending=True): equal lengths in its sort's order, not the batch's
        order = autograd.sort(tensor_from(lengths), descending=True).indices._data
        lengths = lengths[order]
        input = input[order] if batch_first else input[:, order]
        sorted_indices = tensor_from(order)
        unsorted_indices = invert_permutation(sorted_indices)
    if batch_first:
        input = input.transpose(0, 1)
    if lengths[0] > input.shape[0]:
        raise RuntimeError(f"the longest length {int(lengths[0])} exceeds the {input.shape[0]} steps of the input")
    batch_sizes = (lengths[None, :] > xp.arange(int(lengths[0]))[:, None]).sum(1)
    return PackedSequence(padded_to_packed(input, batch_sizes), tensor_from(batch_sizes), sorted_indices,
                          unsorted_indices)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Unpack to a padded batch (T, B, *) (or (B, T, *)) in the caller's order, and the
    lengths as an int64 tensor."""
    data, batch_sizes, _, unsorted_indices = sequence
    padded = packed_to_padded(data, batch_sizes, padding_value)
    if total_length is not None:
        if total_length < padded.shape[0]:
            raise ValueError("Expected total_length to be at least the length of the longest sequence in input, "
                             f"but got total_length={total_length} and max sequence length being {padded.shape[0]}")
        if total_length > padded.shape[0]:
            filler = autograd.full((total_length - padded.shape[0],) + tuple(padded.shape[1:]), padding_value,
                                   dtype=padded.dtype)
            padded = autograd.cat([padded, filler])
    lengths = _lengths_from(batch_sizes)
    if unsorted_indices is not None:
        order = _as_ints(unsorted_indices)
        padded, lengths = padded[:, order], lengths[order]
    if batch_first:
        padded = padded.transpose(0, 1)
    return padded, tensor_from(lengths)


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of sequences (L_k, *) directly."""
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The list of sequences of a padded batch, each cut to its length: copies, as PyTorch's (it picks each
    sequence's steps by a boolean mask), so writing to one leaves the batch alone."""
    if not batch_first:  # in place, as PyTorch's: the caller's tensor is left batch-first
        padded_sequences.transpose_(0, 1)
    steps = autograd.arange(padded_sequences.shape[1])
    return [sequence[steps < length] for sequence, length in zip(padded_sequences, _as_ints(lengths))]


def unpack_sequence(packed_sequences):
    """The list of sequences of a packed batch, in the caller's order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)
