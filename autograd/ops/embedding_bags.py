"""Bags of embeddings: ``F.embedding_bag`` and PyTorch's top-level ``autograd.embedding_bag(weight, indices,
offsets, scale_grad_by_freq=False, mode=0, sparse=False, per_sample_weights=None, include_last_offset=False,
padding_idx=None)`` (weight first, mode an int: 0 sum, 1 mean, 2 max; it returns PyTorch's four tensors).

A bag is a set of indices; its embedding is the sum, the mean or the elementwise maximum of the rows
W[i] of its indices, computed without forming the (bags, length, dim) tensor of lookups:

    sum:  y_b = Σ_{i ∈ b} w_i W[i]   (w_i the per-sample weight, 1 without)
    mean: y_b = (1/|b|) Σ_{i ∈ b} W[i]        max: y_b[d] = max_{i ∈ b} W[i][d]

(padding indices left out of their bag and its count; an empty bag gives zeros). Sums and means are one op,
``EmbeddingBagSum``, whose float32 sums are PyTorch's kernels' to the bit; the maxima are ``embedding``'s
lookups and a gather of the winners, whose gradients are theirs.
"""

import warnings

from ..backend import float16, float32, float64, ufunc_at, xp
from ..graph import program_stacklevel
from ..index_watching import watches_arguments
from ..primitive import Primitive, node_named
from ..tensor import Tensor, tensor_from
from .conversion import legacy_type_name, type_name
from .elementwise import where
from .embedding import (
    EmbeddingDenseBackward,
    EmbeddingLookup,
    _padding_index,
    added_in_order,
    embedding_renorm_,
    sparse_rows,
)
from .names import names
from .promotion import promote_types
from .sorting import _sort_order


def _bags(input, offsets, include_last_offset, length=None):
    """(flat indices, the bag of each index, number of bags) for 2-D input (one bag per row)
    or 1-D input cut at ``offsets``, whose last may not pass ``length`` (the input's length unless given)."""
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
    starts = offsets._data if isinstance(offsets, Tensor) else xp.asarray(offsets)
    # PyTorch reads the indices and the offsets in their common dtype (uint8 indices beside int64 offsets as
    # int64) before it takes int64 or int32 indices only
    indices = indices.astype(promote_types(indices.dtype, starts.dtype), copy=False)
    starts = starts.astype(xp.int64)
    if starts.ndim != 1:
        raise ValueError("offsets has to be a 1D Tensor")
    if starts.size and starts[0] != 0:
        raise RuntimeError(f"offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start from "
                           f"position 0. However, got {starts[0]}")
    length = len(indices) if length is None else length
    if starts.size and starts[-1] > length:
        raise RuntimeError(f"offsets[-1] can not be greater than input's length {length} but got "
                           f"offsets[-1] of {starts[-1]}")
    steps_back = xp.flatnonzero(starts[1:] < starts[:-1])
    if steps_back.size:  # (PyTorch's float32 sums and means fail an internal check; its other kernels give bags
        # that overlap and negative counts)
        k = int(steps_back[0]) + 1
        raise RuntimeError(f"offsets has to be non-decreasing, but got offsets[{k}] = {starts[k]} after "
                           f"offsets[{k - 1}] = {starts[k - 1]}")
    if include_last_offset:
        starts = starts[:-1]
    bag_of = xp.searchsorted(starts, xp.arange(len(indices)), side="right") - 1
    return indices, bag_of, len(starts)


@node_named("EmbeddingBagBackward0")
@watches_arguments("input", "weight", "offsets", "per_sample_weights")  # (PyTorch's node saves them)
def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False,
                  mode="mean", sparse=False, per_sample_weights=None, include_last_offset=False,
                  padding_idx=None):
    """Sum, mean or max of the embeddings of each bag of indices, without forming the
    (bags, length, dim) tensor of lookups: bags are rows of a 2-D ``input``, or the pieces
    of a 1-D ``input`` that start at ``offsets``. Indices equal to ``padding_idx`` are left
    out of their bag (and of its count, for the mean); an empty bag gives zeros.
    ``per_sample_weights`` scales each lookup (mode='sum' only)."""
    if weight.dtype == xp.int64 and input.is_floating_point():  # (the order of old PyTorch: swapped, with its warning)
        warnings.warn("Argument order of nn.functional.embedding_bag was changed. Usage `embedding_bag(weight, "
                      "input, ...)` is deprecated, and should now be `embedding_bag(input, weight, ...)`.",
                      stacklevel=program_stacklevel())
        weight, input = input, weight
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
    if weight.ndim != 2:
        raise ValueError(f"weight has to be a 2D Tensor, but got Tensor of dimension {weight.ndim}")
    rows = weight.shape[0]
    if padding_idx is not None and not -rows <= padding_idx < rows:
        raise RuntimeError(f"padding_idx must be within the number of embeddings, {-rows} through {rows - 1}, but "
                           f"got {padding_idx}")
    indices, bag_of, bags = _bags(input, offsets, include_last_offset)
    return _pool(indices, bag_of, bags, weight, mode, max_norm, norm_type, scale_grad_by_freq, per_sample_weights,
                 padding_idx, sparse)[0]


def _pool(indices, bag_of, bags, weight, mode, max_norm, norm_type, scale_grad_by_freq, per_sample_weights,
          padding_idx, sparse=False):
    """(the bags' sums, means or maxima, the number of indices in each bag, padding left out, and for
    mode='max' the row of W that gives each maximum, 0 in an empty bag)."""
    if indices.dtype not in (xp.int64, xp.int32):  # (PyTorch's kernels read int64 or int32 indices only)
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar types: "
                           f"Long, Int; but got {legacy_type_name(indices.dtype)} instead (while checking "
                           "arguments for embedding_bag)")
    if weight.dtype not in (float16, float32, float64):  # (nor other tables than floating ones)
        raise RuntimeError("Expected tensor for argument #1 'weight' to have one of the following scalar types: "
                           f"Half, BFloat16, Float, Double; but got {legacy_type_name(weight.dtype)} instead (while "
                           "checking arguments for embedding_bag)")
    bad = (indices < 0) | (indices >= weight.shape[0])
    padding_idx = _padding_index(padding_idx, weight.shape[0])
    if bad.any():  # PyTorch's RuntimeError, naming the first index out of range in the words of the kernel that
        # meets it: the fast one (float32 and float16 sums and means without padding) or the generic one
        k = int(bad.argmax())
        if mode != "max" and padding_idx is None and weight.dtype in (float32, float16):
            raise RuntimeError(f"Index {k} of input takes value {int(indices[k])} which is not in the valid range "
                               f"[0, {weight.shape[0]})")
        raise RuntimeError("embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be "
                           f"{int(indices[k])}")
    if max_norm is not None:  # every index's row, the padding row too, as F.embedding_bag renormalises its input
        embedding_renorm_(weight, indices, max_norm, norm_type)
    kept = xp.ones(len(indices), dtype=bool) if padding_idx is None else indices != padding_idx
    all_indices, indices, bag_of = indices, indices[kept], bag_of[kept]
    shape = (bags, weight.shape[1])
    counts = xp.bincount(bag_of, minlength=bags)
    if mode == "max":
        # the winning lookup of each bag and dim, found on the arrays, then gathered. PyTorch's kernel scans each
        # bag keeping its first value until a strictly greater one comes: a NaN wins only as the bag's first (no
        # value is greater), and is passed over anywhere else (it is greater than none)
        if not len(indices):  # zeros, on the graph as PyTorch's (a gradient of zeros for W)
            return weight.new_zeros(shape) + weight[:0].sum(0), counts, xp.zeros(shape, dtype=xp.int64)
        rows = EmbeddingLookup.apply(weight, indices=indices, padding_idx=None,
                                     scale_grad_by_freq=scale_grad_by_freq, added_in=None, sparse=bool(sparse))
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
    inputs = (weight,)
    if per_sample_weights is not None:
        inputs += (per_sample_weights.reshape(-1)[Tensor._make(xp.flatnonzero(kept))],)
    total = EmbeddingBagSum.apply(*inputs, indices=indices, bag_of=bag_of, counts=counts, mean=mode == "mean",
                                  fused=padding_idx is None and weight.stride(1) == 1,
                                  scale_grad_by_freq=scale_grad_by_freq,
                                  all_indices=all_indices, kept=kept,
                                  sparse=bool(sparse))
    return total, counts, None


class EmbeddingBagSum(Primitive):
    """y_b = Σ_{k ∈ b} w_k W[indices_k] (w_k the per-sample weight, 1 without), divided by |b| for the mean
    (an empty bag 0);   dL/dW_r = Σ_{k: indices_k = r} s_k dL/dy_{bag_k} with s_k = w_k (/ |bag_k| for the
    mean, / the count of r with scale_grad_by_freq), added in the order PyTorch's (unstable) sort of all the
    indices (``all_indices``, padding too) leaves them, the padding index's skipped (``kept`` the others);
    dL/dw_k = dL/dy_{bag_k} · W[indices_k], the row the forward looked up.

    The sums as PyTorch's CPU kernels make them: float32 ones fused (``fused``: fbgemm's w_k · row + sum
    forward, which PyTorch takes only without a padding index and for W's rows contiguous; its backward's axpy
    of s_k in the order of its sort of the indices); float16 bags summed in float32 and rounded once. Its
    backward is linear in dL/dy (which a second backward differentiates); the per-sample weights and the rows
    enter it as the forward's values (PyTorch has no second derivative here at all)."""

    pytorch_name = "EmbeddingBagBackward0"
    saves_inputs = False  # (the rows looked up are kept, not W, which a later lookup with max_norm may change)
    saves_arguments = True

    def forward(self, weight, per_sample_weights=None):
        rows = weight[self.indices]
        self.rows = rows if per_sample_weights is not None else None  # for the per-sample weights' gradient
        self.weights = per_sample_weights
        shape = (len(self.counts), weight.shape[1])
        if weight.dtype == float32 and self.fused:
            total = added_in_order(rows, per_sample_weights, self.bag_of, shape[0])
        else:
            wide = weight.dtype == float16  # PyTorch's kernel sums float16 bags in float32 and rounds each sum once
            terms = rows.astype(float32) if wide else rows
            if per_sample_weights is not None:
                terms = terms * (per_sample_weights.astype(float32) if wide else per_sample_weights)[:, None]
            total = xp.zeros(shape, dtype=terms.dtype)
            ufunc_at("add", total, self.bag_of, terms)
            total = total.astype(weight.dtype, copy=False)
        if self.mean:  # divided by the bag's size, as PyTorch's kernel (a product with the reciprocal is a unit off)
            total = total / xp.maximum(self.counts, 1).astype(weight.dtype)[:, None]
        return total

    def backward(self, grad, y, weight, per_sample_weights=None):
        lookups = grad[self.bag_of]
        grad_weight = grad_weights = None
        if weight.requires_grad:
            in_sort = _sort_order(Tensor._make(self.all_indices), 0, descending=False, stable=False)
            added_in = (xp.cumsum(self.kept) - 1)[in_sort[self.kept[in_sort]]]  # (among the kept lookups)
            scales = None if self.weights is None else self.weights.astype(float64)
            if self.mean:
                sizes = self.counts[self.bag_of].astype(float64)
                scales = 1.0 / sizes if scales is None else scales / sizes
            if self.sparse and self.scale_grad_by_freq:
                raise RuntimeError("embedding_backward: scale_grad_by_freq not supported with sparse gradients")
            grad_weight = EmbeddingDenseBackward.apply(lookups, flat=self.indices, num_weights=weight.shape[0],
                                                       padding_idx=None, scale_grad_by_freq=self.scale_grad_by_freq,
                                                       added_in=added_in, scales=scales)
            if self.sparse:  # PyTorch's sparse gradient: each lookup's share (divided by its bag's size, times
                shares = lookups  # its weight), in the lookups' order
                if self.mean:
                    shares = shares / Tensor._make(self.counts[self.bag_of].astype(grad.dtype)[:, None])
                if self.weights is not None:
                    shares = shares * Tensor._make(self.weights[:, None])
                grad_weight._sparse_gradient = sparse_rows(self.indices, shares, weight.shape, None)
        if per_sample_weights is not None and per_sample_weights.requires_grad:
            wide = self.rows.dtype == float16
            products = (lookups.float() if wide else lookups) * Tensor._make(self.rows.astype(float32) if wide
                                                                              else self.rows)
            grad_weights = products.sum(1).to(per_sample_weights.dtype)
        return grad_weight, grad_weights


_MODES = ("sum", "mean", "max")  # PyTorch's codes of mode, 0, 1, 2


@names("embedding_bag", method=False)
def embedding_bag_by_position(weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False,
                              per_sample_weights=None, include_last_offset=False, padding_idx=None):
    """PyTorch's top-level ``embedding_bag``: weight first, 1-D ``indices`` cut at ``offsets`` (2-D ones read as
    one row), mode an int
    (0 sum, 1 mean, 2 max), and four tensors back, as PyTorch's CPU kernel gives them:

    - the bags' embeddings (bags, dim);
    - offset2bag, the bag of each index (PyTorch's float32 kernel of mode sum without a padding_idx
      leaves it empty, its float64 kernel does not: here it is always there);
    - bag_size, the number of indices of each bag, padding left out (zeros for mode sum);
    - max_indices, the row of W that gives each maximum (bags, dim) for mode max, bag_size again for
      mode mean, zeros for mode sum.

    ``sparse``: the weight's .grad is sparse, as ``embedding``'s."""
    if isinstance(mode, bool) or mode not in (0, 1, 2):
        raise RuntimeError("`mode` must be sum, mean, or max.")
    if per_sample_weights is not None and mode != 0:
        raise RuntimeError("embedding_bag: per_sample_weights only supported with mode='sum'")
    # PyTorch's checks of the kernel, in its order; 2-D indices are read as one row cut at offsets (whose last
    # may not pass the number of rows there, as PyTorch's check reads size(0))
    if indices.ndim not in (1, 2):
        raise RuntimeError(f"input has to be a 1D or 2D Tensor, but got Tensor of dimension {indices.ndim}")
    if indices.ndim == 1 and offsets.ndim != 1:
        raise RuntimeError(f"offsets has to be a 1D Tensor, but got Tensor of dimension {offsets.ndim}")
    if weight.ndim != 2:
        raise RuntimeError(f"weight has to be a 2D Tensor, but got Tensor of dimension {weight.ndim}")
    flat, bag_of, bags = _bags(indices.reshape(-1), offsets, include_last_offset, length=indices.shape[0])
    output, counts, winners = _pool(flat, bag_of, bags, weight, _MODES[mode], None, 2, scale_grad_by_freq,
                                    per_sample_weights, padding_idx, sparse and mode != 2)
    zeros = xp.zeros(bags, dtype=xp.int64)
    offset2bag = bag_of.astype(xp.int64)
    bag_size = zeros if mode == 0 else counts.astype(xp.int64)
    max_indices = (zeros, bag_size, winners)[mode]
    return output, tensor_from(offset2bag), tensor_from(bag_size), tensor_from(xp.array(max_indices, dtype=xp.int64))
