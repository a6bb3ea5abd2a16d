"""Bags of embeddings: ``F.embedding_bag`` and PyTorch's top-level ``autograd.embedding_bag(weight, indices,
offsets, scale_grad_by_freq=False, mode=0, sparse=False, per_sample_weights=None, include_last_offset=False,
padding_idx=None)`` (weight first, mode an int: 0 sum, 1 mean, 2 max; it returns PyTorch's four tensors).

A bag is a set of indices; its embedding is the sum, the mean or the elementwise maximum of the rows
W[i] of its indices, computed without forming the (bags, length, dim) tensor of lookups:

    sum:  y_b = Σ_{i ∈ b} w_i W[i]   (w_i the per-sample weight, 1 without)
    mean: y_b = (1/|b|) Σ_{i ∈ b} W[i]        max: y_b[d] = max_{i ∈ b} W[i][d]

(padding indices left out of their bag and its count; an empty bag gives zeros). The lookups are
``embedding``'s, the sums ``IndexAdd``, the maxima a gather of the winners: gradients are theirs.
"""

from ..backend import float16, ufunc_at, xp
from ..primitive import node_named
from ..tensor import Tensor, tensor_from
from .conversion import type_name
from .elementwise import where
from .embedding import _padding_index, embedding
from .names import names
from .shape import IndexAdd


def _bags(input, offsets, include_last_offset):
    """(flat indices, the bag of each index, number of bags) for 2-D input (one bag per row)
    or 1-D input cut at ``offsets``."""
    indices = input._data if isinstance(input, Tensor) else xp.asarray(input)
    if indices.ndim == 2:
        if offsets is not None:
            raise ValueError("if input is 2D, then offsets has to be None, as input is treated is a mini-batch "
                             "of fixed length sequences.")
        bags = indices.shape[0]
        return indices.reshape(-1), xp.repeat(xp.arange(bags), indices.shape[1]), bags
    if indices.ndim != 1:
        raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension {indices.ndim}")
    if offsets is None:
        raise ValueError("offsets has to be a 1D Tensor but got None")
    starts = (offsets._data if isinstance(offsets, Tensor) else xp.asarray(offsets)).astype(xp.int64)
    if starts.ndim != 1:
        raise ValueError("offsets has to be a 1D Tensor")
    if starts.size and starts[0] != 0:
        raise RuntimeError(f"offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start from "
                           f"position 0. However, got {starts[0]}")
    if include_last_offset:
        starts = starts[:-1]
    bag_of = xp.searchsorted(starts, xp.arange(len(indices)), side="right") - 1
    return indices, bag_of, len(starts)


@node_named("EmbeddingBagBackward0")
def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False,
                  mode="mean", sparse=False, per_sample_weights=None, include_last_offset=False,
                  padding_idx=None):
    """Sum, mean or max of the embeddings of each bag of indices, without forming the
    (bags, length, dim) tensor of lookups: bags are rows of a 2-D ``input``, or the pieces
    of a 1-D ``input`` that start at ``offsets``. Indices equal to ``padding_idx`` are left
    out of their bag (and of its count, for the mean); an empty bag gives zeros.
    ``per_sample_weights`` scales each lookup (mode='sum' only)."""
    if mode not in ("sum", "mean", "max"):
        raise ValueError(f"mode has to be one of sum, mean or max, got {mode}")
    if mode == "max" and scale_grad_by_freq:  # PyTorch's kernel has no frequency scaling of the winners
        raise ValueError("max mode does not support scaling the gradient by the frequency")
    if mode == "max" and sparse:
        raise ValueError("max mode does not support sparse weights")
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError(f"embedding_bag: per_sample_weights was not None. per_sample_weights is only "
                                  f"supported for mode='sum' (got mode='{mode}'). Please open a feature request "
                                  "on GitHub.")
    if per_sample_weights is not None and tuple(per_sample_weights.shape) != tuple(input.shape):
        raise ValueError(f"embedding_bag: If per_sample_weights ({tuple(per_sample_weights.shape)}) is not None, then "
                         f"it must have the same shape as the input ({tuple(input.shape)})")
    if per_sample_weights is not None and per_sample_weights.dtype != weight.dtype:  # (PyTorch promotes neither)
        raise RuntimeError(f"Expected tensor for argument #1 'weight' to have the same type as tensor for argument "
                           f"#1 'per_sample_weights'; but type torch.{type_name(weight.dtype)}Tensor does not equal "
                           f"torch.{type_name(per_sample_weights.dtype)}Tensor (while checking arguments for "
                           "embedding_bag)")
    indices, bag_of, bags = _bags(input, offsets, include_last_offset)
    bad = (indices < 0) | (indices >= weight.shape[0])
    if bad.any():  # PyTorch's RuntimeError, naming the first index out of range
        k = int(bad.argmax())
        raise RuntimeError(f"Index {k} of input takes value {int(indices[k])} which is not in the valid range "
                           f"[0, {weight.shape[0]})")
    return _pool(indices, bag_of, bags, weight, mode, max_norm, norm_type, scale_grad_by_freq, per_sample_weights,
                 padding_idx)[0]


def _pool(indices, bag_of, bags, weight, mode, max_norm, norm_type, scale_grad_by_freq, per_sample_weights,
          padding_idx):
    """(the bags' sums, means or maxima, the number of indices in each bag, padding left out, and for
    mode='max' the row of W that gives each maximum, 0 in an empty bag)."""
    padding_idx = _padding_index(padding_idx, weight.shape[0])
    kept = xp.ones(len(indices), dtype=bool) if padding_idx is None else indices != padding_idx
    indices, bag_of = indices[kept], bag_of[kept]
    rows = embedding(Tensor._make(indices), weight, None, max_norm, norm_type, scale_grad_by_freq)
    shape = (bags, weight.shape[1])
    counts = xp.bincount(bag_of, minlength=bags)
    if mode == "max":
        # the winning lookup of each bag and dim, found on the arrays, then gathered. PyTorch's kernel scans each
        # bag keeping its first value until a strictly greater one comes: a NaN wins only as the bag's first (no
        # value is greater), and is passed over anywhere else (it is greater than none)
        if not len(indices):
            return Tensor._make(xp.zeros(shape, weight.dtype)), counts, xp.zeros(shape, dtype=xp.int64)
        best = xp.full(shape, -xp.inf, dtype=weight.dtype)
        ufunc_at("fmax", best, bag_of, rows._data)
        lookup = xp.arange(len(indices))[:, None]
        candidates = xp.where(rows._data == best[bag_of], lookup, len(indices))
        winner = xp.full(shape, len(indices), dtype=xp.int64)
        ufunc_at("minimum", winner, bag_of, candidates)  # the first winning lookup of each bag and dim
        first = xp.full(bags, len(indices), dtype=xp.int64)
        ufunc_at("minimum", first, bag_of, xp.arange(len(indices)))
        empty = counts == 0
        first[empty] = 0
        winner = xp.where(xp.isnan(rows._data[first]), first[:, None], winner)
        winner[empty] = 0
        picked = rows[winner, xp.arange(shape[1])]
        winning_rows = xp.where(empty[:, None], 0, indices[winner])
        # (an empty bag is 0, selected: its stand-in row 0 may hold a NaN, which a product would keep)
        return where(Tensor._make(xp.broadcast_to(empty[:, None], shape)), 0.0, picked), counts, winning_rows
    half = weight.dtype == float16  # PyTorch's kernel sums float16 bags in float32 and rounds each sum once
    if half:
        rows = rows.float()
    if per_sample_weights is not None:
        flat_weights = per_sample_weights.reshape(-1)[Tensor._make(xp.flatnonzero(kept))]
        rows = rows * (flat_weights.float() if half else flat_weights).unsqueeze(1)
    total = IndexAdd.apply(rows, index=bag_of, shape=shape, basic=False)
    if half:
        total = total.half()
    if mode == "sum":
        return total, counts, None
    # divided by the bag's size, as PyTorch's kernel (a product with the reciprocal is a unit off in places)
    return total / Tensor._make(xp.maximum(counts, 1).astype(weight.dtype)[:, None]), counts, None


_MODES = ("sum", "mean", "max")  # PyTorch's codes of mode, 0, 1, 2


@names("embedding_bag", method=False)
def embedding_bag_by_position(weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False,
                              per_sample_weights=None, include_last_offset=False, padding_idx=None):
    """PyTorch's top-level ``embedding_bag``: weight first, 1-D ``indices`` cut at ``offsets``, mode an int
    (0 sum, 1 mean, 2 max), and four tensors back, as PyTorch's CPU kernel gives them:

    - the bags' embeddings (bags, dim);
    - offset2bag, the bag of each index (PyTorch's float32 kernel of mode sum without a padding_idx
      leaves it empty, its float64 kernel does not: here it is always there);
    - bag_size, the number of indices of each bag, padding left out (zeros for mode sum);
    - max_indices, the row of W that gives each maximum (bags, dim) for mode max, bag_size again for
      mode mean, zeros for mode sum.

    ``sparse`` changes nothing here (gradients are dense)."""
    if isinstance(mode, bool) or mode not in (0, 1, 2):
        raise RuntimeError("`mode` must be sum, mean, or max.")
    if per_sample_weights is not None and mode != 0:
        raise RuntimeError("embedding_bag: per_sample_weights only supported with mode='sum'")
    if indices.ndim != 1:
        raise RuntimeError(f"embedding_bag: expected 1-D indices (cut into bags at offsets), got indices of size "
                           f"{list(indices.shape)}")
    flat, bag_of, bags = _bags(indices, offsets, include_last_offset)
    output, counts, winners = _pool(flat, bag_of, bags, weight, _MODES[mode], None, 2, scale_grad_by_freq,
                                    per_sample_weights, padding_idx)
    zeros = xp.zeros(bags, dtype=xp.int64)
    offset2bag = bag_of.astype(xp.int64)
    bag_size = zeros if mode == 0 else counts.astype(xp.int64)
    max_indices = (zeros, bag_size, winners)[mode]
    return output, tensor_from(offset2bag), tensor_from(bag_size), tensor_from(xp.array(max_indices, dtype=xp.int64))
