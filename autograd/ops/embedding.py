"""Embedding lookup: ``nn.functional.embedding``'s maths and PyTorch's top-level spelling
``autograd.embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False)``
(weight first, and a negative padding_idx meaning none, as PyTorch's).

An embedding maps each integer index i to row i of a weight matrix W: y = W[i], what ``C[X]``
does in Karpathy's makemore. The gradient adds each looked-up row's incoming gradient back into
its row of W; the padding row gets none, and with ``scale_grad_by_freq`` each is divided by how
often its index occurs in the batch.
"""

import itertools
import math

from .. import dual
from ..backend import float16, float32, float64, to_numpy, ufunc_at, xp
from ..graph import is_grad_enabled, no_grad
from ..index_watching import watches_arguments
from ..primitive import Primitive
from ..tensor import Tensor
from .conversion import legacy_type_name, type_name
from .names import names


class EmbeddingLookup(Primitive):
    """y = W[indices] (one row of W per index);
    dL/dW_r = Σ_{k: indices_k = r} s_k dL/dy_k, with s_k = 0 for the padding index and
    1 / (count of indices_k in the batch) with scale_grad_by_freq, 1 otherwise; the terms added in the
    order ``added_in`` (a permutation of the lookups) where given, in the lookups' order otherwise"""

    pytorch_name = "EmbeddingBackward0"
    saves_inputs = False  # backward needs W's shape only (PyTorch's node keeps the indices): W may then change in place
    saves_arguments = True  # the indices: freed after backward

    def forward(self, weight):
        return weight[self.indices]

    sparse = False

    def backward(self, grad, y, weight):
        flat = self.indices.reshape(-1)
        rows = grad.reshape(len(flat), weight.shape[1])
        if self.sparse and self.scale_grad_by_freq:
            raise RuntimeError("embedding_backward: scale_grad_by_freq not supported with sparse gradients")
        grad_weight = EmbeddingDenseBackward.apply(rows, flat=flat, num_weights=weight.shape[0],
                                                   padding_idx=self.padding_idx,
                                                   scale_grad_by_freq=self.scale_grad_by_freq,
                                                   added_in=self.added_in, scales=None)
        if self.sparse:
            grad_weight._sparse_gradient = sparse_rows(flat, rows, weight.shape, self.padding_idx)
        return (grad_weight,)

    def jvp(self, tangents, y, weight):
        """ẏ = Ẇ[indices]: the lookup is linear in W, so its tangent is the same lookup of W's tangent, the padding
        index's rows too (PyTorch's forward rule: only the gradient leaves them out)."""
        return EmbeddingLookup.apply(tangents[0], indices=self.indices, padding_idx=self.padding_idx,
                                     scale_grad_by_freq=self.scale_grad_by_freq, added_in=self.added_in,
                                     sparse=self.sparse)


class EmbeddingDenseBackward(Primitive):
    """The embedding's gradient as an op of the lookups' gradients g (n, dim), PyTorch's
    embedding_dense_backward: dW_r = Σ_{k: flat_k = r} s_k c_k g_k (s_k as in EmbeddingLookup, c_k the
    constant ``scales`` where given: an embedding bag's per-sample weights and mean), added in the order
    ``added_in`` where given; float32 terms scaled added as PyTorch's kernels add them (fused, see
    added_in_order).

    Its own backward is PyTorch's embedding_dense_double_backward: dL/dg_k = c_k dL/dW[flat_k], 0 at the
    padding index, and no frequency scale ("the first backward takes care of scaling by frequency"): a
    gradient penalty through an embedding with scale_grad_by_freq scales once, not twice."""

    saves_inputs = False  # a linear map of g: backward needs none of its values
    saves_arguments = True  # the indices: freed after backward

    def forward(self, rows):
        flat, scale = self.flat, self.scales
        if self.added_in is not None or self.padding_idx is not None:  # (else every lookup, in order: no copy)
            taken = xp.arange(len(self.flat)) if self.added_in is None else self.added_in
            if self.padding_idx is not None:  # the padding index's lookups add nothing (not even a NaN times 0)
                taken = taken[self.flat[taken] != self.padding_idx]
            flat, rows = self.flat[taken], rows[taken]
            scale = None if self.scales is None else self.scales[taken]
        if self.scale_grad_by_freq:
            counts = xp.bincount(self.flat, minlength=self.num_weights)
            scale = 1.0 / counts[flat] if scale is None else scale / counts[flat]
        if scale is not None:  # (a double in PyTorch's kernels, made the gradient's dtype)
            if rows.dtype == float32:
                return added_in_order(rows, scale.astype(float32), flat, self.num_weights)
            rows = rows * scale.astype(rows.dtype)[:, None]
        total = xp.zeros((self.num_weights, rows.shape[1]), dtype=rows.dtype)
        ufunc_at("add", total, flat, rows)
        return total

    def backward(self, grad, y, rows):
        gathered = grad[self.flat]
        if self.scales is not None:
            gathered = gathered * Tensor._make(self.scales.astype(grad.dtype)[:, None])
        if self.padding_idx is not None:
            gathered = gathered.masked_fill(Tensor._make((self.flat == self.padding_idx)[:, None]), 0.0)
        return (gathered,)


def sparse_rows(flat, rows, shape, padding_idx):
    """PyTorch's sparse gradient of an embedding (``sparse=True``): row ``rows[k]`` at index ``flat[k]``, one entry
    per lookup in order (uncoalesced), the padding index's left out. The engine stores it as the weight's .grad
    (autograd.graph.accumulate_grad); the dense gradient beside it serves every other use."""
    from ..sparse.coo import SparseTensor  # (the sparse type, built on the ops, is loaded when first asked for)

    kept = xp.flatnonzero(flat != padding_idx) if padding_idx is not None else None
    if kept is not None:
        flat, rows = flat[kept], rows[Tensor._make(kept)]
    if rows.numel() == 0:  # (no entry at all, as PyTorch's, where rows have no elements: an embedding of dim 0)
        flat, rows = flat[:0], rows[:0]
    return SparseTensor(Tensor._make(flat.astype(xp.int64).reshape(1, -1)), rows, shape)


def added_in_order(terms, scales, rows, num_rows):
    """Σ_j scales_j · terms_j into row rows_j of a (num_rows, dim) float32 matrix, as PyTorch's CPU kernels add
    scaled rows: one term after another, each a fused multiply-add (the product exact, one rounding per
    addition). Without scales (all 1) NumPy's unbuffered add does it; with, rows are added to side by side,
    the k-th terms of all rows at once (as many passes as the most terms a row has)."""
    if scales is None:
        total = xp.zeros((num_rows, terms.shape[1]), dtype=float32)
        ufunc_at("add", total, rows, terms)
        return total
    grouped = xp.argsort(rows, kind="stable")  # each row's terms together, in order
    rows = rows[grouped]
    rank = xp.arange(len(rows)) - xp.searchsorted(rows, rows, side="left")  # the k-th term of its row
    by_rank = xp.argsort(rank, kind="stable")
    # each rank's first and last position, as Python ints (slicing by arrays of the array module costs a copy back)
    bounds = [0, *itertools.accumulate(to_numpy(xp.bincount(rank)).tolist())] if len(rank) else [0]
    products = terms[grouped][by_rank].astype(float64) * scales[grouped][by_rank, None].astype(float64)
    rows = rows[by_rank]
    total = xp.zeros((num_rows, terms.shape[1]), dtype=float32)
    for start, end in zip(bounds[:-1], bounds[1:]):
        at = rows[start:end]  # (no row twice)
        total[at] = (total[at].astype(float64) + products[start:end]).astype(float32)
    return total


def _indices(input, num_embeddings):
    indices = input._data if isinstance(input, Tensor) else xp.asarray(input)
    if indices.dtype not in (xp.int64, xp.int32):  # (PyTorch's kernels read int64 or int32 indices only)
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar "
                           f"types: Long, Int; but got {legacy_type_name(indices.dtype)} instead (while "
                           "checking arguments for embedding)")
    if indices.size and (indices.min() < 0 or indices.max() >= num_embeddings):
        raise IndexError("index out of range in self")
    return indices


def _padding_index(padding_idx, num_embeddings):
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise AssertionError("Padding_idx must be within num_embeddings")
    return padding_idx % num_embeddings


def embedding_renorm_(weight, indices, max_norm, norm_type=2.0):
    """Rescale, in place, each row of W named in ``indices`` whose p-norm exceeds
    ``max_norm`` to norm max_norm (times max_norm / (norm + 1e-7), as PyTorch).

    PyTorch's rounding: the norm in the weight's dtype (float16 accumulated in float32), read as a
    double; the scale computed in double (in float32, + 1e-7 would vanish below the norm's unit), then
    rounded to the weight's dtype for the product."""
    if weight.dtype.kind not in "fc":  # PyTorch's renorm takes the rows' norm, which integers have not
        raise RuntimeError(f"norm(): input dtype should be either floating point or complex. Got "
                           f"{type_name(weight.dtype)} instead.")
    rows = xp.unique(indices.reshape(-1))
    values = weight._data[rows]
    wide = values.astype(float32) if values.dtype == float16 else values
    if norm_type == math.inf:
        norms = xp.abs(wide).max(axis=1)
    elif norm_type == 0:  # (the number of nonzero entries, as PyTorch's 0-norm)
        norms = (wide != 0).sum(axis=1).astype(float64)
    elif norm_type == 2:
        norms = xp.sqrt((wide * wide).sum(axis=1))
    else:
        norms = (xp.abs(wide) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    norms = norms.astype(values.dtype).astype(float64)
    over = norms > max_norm
    if over.any():
        scale = (max_norm / (norms[over] + 1e-7)).astype(values.dtype)
        with no_grad(), dual.paused():  # (the rows' values: their tangents stay, as PyTorch's renorm leaves them)
            weight[rows[over]] = values[over] * scale[:, None]
    return weight


@names("embedding_renorm_", method=False)
def embedding_renorm_checked(input, indices, max_norm, norm_type):
    """PyTorch's top-level ``embedding_renorm_(input, indices, max_norm, norm_type)``: the rows of the
    matrix ``input`` that ``indices`` names, rescaled in place to p-norm at most max_norm. Not
    differentiable (as PyTorch's): a matrix that requires grad is refused while grad mode is on."""
    if input.ndim != 2:
        raise RuntimeError(f"Expected 2-dimensional tensor, but got {input.ndim}-dimensional tensor for argument #1 "
                           "'self' (while checking arguments for embedding_renorm_)")
    rows = indices._data if isinstance(indices, Tensor) else xp.asarray(indices)
    if rows.dtype.kind not in "iu":
        raise RuntimeError("Expected tensor for argument #2 'indices' to have one of the following scalar types: "
                           f"Long, Int; but got {rows.dtype} instead (while checking arguments for embedding_renorm_)")
    if rows.size and (rows.min() < -input.shape[0] or rows.max() >= input.shape[0]):
        raise IndexError(f"index out of range for tensor of size {list(input.shape)} at dimension 0")
    if input.requires_grad and is_grad_enabled():
        if input.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        raise NotImplementedError("the derivative for 'embedding_renorm' is not implemented.")
    return embedding_renorm_(input, rows % input.shape[0], max_norm, norm_type)


@watches_arguments("input")  # (EmbeddingBackward0 saves the indices, a 0-d one too)
def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """Row ``input[...]`` of ``weight`` for each index: output shape input.shape + (embedding_dim,).

    padding_idx: that row gets no gradient. max_norm: rows looked up are first
    renormalised in place to norm at most max_norm. scale_grad_by_freq: each
    row's gradient is divided by how often its index occurs in ``input``.
    ``sparse``: the weight's .grad is PyTorch's sparse gradient (autograd.sparse), one entry per lookup.
    """
    if weight.ndim != 2:
        raise RuntimeError(f"'weight' must be 2-D, got shape {tuple(weight.shape)}")
    indices = _indices(input, weight.shape[0])
    padding_idx = _padding_index(padding_idx, weight.shape[0])
    if max_norm is not None:
        embedding_renorm_(weight, indices, max_norm, norm_type)
    return EmbeddingLookup.apply(weight, indices=indices, padding_idx=padding_idx,
                                 scale_grad_by_freq=scale_grad_by_freq, added_in=None, sparse=bool(sparse))


@names("embedding", method=False)
def embedding_by_position(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """PyTorch's top-level ``embedding``: weight first, padding_idx -1 (any negative) for none,
    no max_norm (``nn.functional.embedding`` has the layer's options)."""
    padding_idx = None if padding_idx < 0 else padding_idx
    return embedding(indices, weight, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
