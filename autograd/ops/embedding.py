"""Embedding lookup: ``nn.functional.embedding``'s maths and PyTorch's top-level spelling
``autograd.embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False)``
(weight first, and a negative padding_idx meaning none, as PyTorch's).

An embedding maps each integer index i to row i of a weight matrix W: y = W[i], what ``C[X]``
does in Karpathy's makemore. The gradient adds each looked-up row's incoming gradient back into
its row of W; the padding row gets none, and with ``scale_grad_by_freq`` each is divided by how
often its index occurs in the batch.
"""

import math

from ..backend import float16, float32, float64, xp
from ..graph import is_grad_enabled, no_grad
from ..primitive import Primitive
from ..tensor import Tensor
from .conversion import type_name
from .names import names
from .shape import IndexAdd


class EmbeddingLookup(Primitive):
    """y = W[indices] (one row of W per index);
    dL/dW_r = Σ_{k: indices_k = r} s_k dL/dy_k, with s_k = 0 for the padding index and
    1 / (count of indices_k in the batch) with scale_grad_by_freq, 1 otherwise"""

    pytorch_name = "EmbeddingBackward0"
    saves_inputs = False  # backward needs W's shape only (PyTorch's node keeps the indices): W may then change in place
    saves_arguments = True  # the indices: freed after backward

    def forward(self, weight):
        return weight[self.indices]

    def backward(self, grad, y, weight):
        flat = self.indices.reshape(-1)
        rows = grad.reshape(len(flat), weight.shape[1])
        scale = xp.ones(len(flat), dtype=weight.dtype)
        if self.scale_grad_by_freq:
            counts = xp.bincount(flat, minlength=weight.shape[0])
            scale = scale / counts[flat]
        if self.padding_idx is not None:
            scale = scale * (flat != self.padding_idx)
        if self.scale_grad_by_freq or self.padding_idx is not None:
            rows = rows * Tensor._make(scale[:, None])
        return (IndexAdd.apply(rows, index=flat, shape=weight.shape, basic=False),)


def _indices(input, num_embeddings):
    indices = input._data if isinstance(input, Tensor) else xp.asarray(input)
    if indices.dtype not in (xp.int64, xp.int32):  # (PyTorch's kernels read int64 or int32 indices only)
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar "
                           f"types: Long, Int; but got torch.{type_name(indices.dtype)}Tensor instead (while "
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
    rows = xp.unique(indices.reshape(-1))
    values = weight._data[rows]
    wide = values.astype(float32) if values.dtype == float16 else values
    if norm_type == math.inf:
        norms = xp.abs(wide).max(axis=1)
    elif norm_type == 2:
        norms = xp.sqrt((wide * wide).sum(axis=1))
    else:
        norms = (xp.abs(wide) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    norms = norms.astype(values.dtype).astype(float64)
    over = norms > max_norm
    if over.any():
        scale = (max_norm / (norms[over] + 1e-7)).astype(values.dtype)
        with no_grad():
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


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """Row ``input[...]`` of ``weight`` for each index: output shape input.shape + (embedding_dim,).

    padding_idx: that row gets no gradient. max_norm: rows looked up are first
    renormalised in place to norm at most max_norm. scale_grad_by_freq: each
    row's gradient is divided by how often its index occurs in ``input``.
    ``sparse`` is accepted; gradients are always dense here.
    """
    if weight.ndim != 2:
        raise RuntimeError(f"'weight' must be 2-D, got shape {weight.shape}")
    indices = _indices(input, weight.shape[0])
    padding_idx = _padding_index(padding_idx, weight.shape[0])
    if max_norm is not None:
        embedding_renorm_(weight, indices, max_norm, norm_type)
    return EmbeddingLookup.apply(weight, indices=indices, padding_idx=padding_idx,
                                 scale_grad_by_freq=scale_grad_by_freq)


@names("embedding", method=False)
def embedding_by_position(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    """PyTorch's top-level ``embedding``: weight first, padding_idx -1 (any negative) for none,
    no max_norm (``nn.functional.embedding`` has the layer's options)."""
    padding_idx = None if padding_idx < 0 else padding_idx
    return embedding(indices, weight, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
