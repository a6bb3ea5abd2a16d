"""Lookup tables: ``one_hot``, ``embedding`` and the ``Embedding`` layer.

An embedding maps each integer index i to row i of a weight matrix W:
y = W[i]. That is what ``C[X]`` does in Karpathy's makemore; the layer adds
PyTorch's options: a padding row that stays zero and gets no gradient,
rows renormalised to a maximum norm, and gradients scaled by the inverse
frequency of each index in the batch.
"""

import math

import autograd
from autograd import Primitive, Tensor
from autograd.backend import xp
from autograd.ops.shape import IndexAdd

from . import init
from .module import Module
from .parameter import Parameter


def one_hot(tensor, num_classes=-1):
    """y[..., c] = 1 where tensor[...] == c, else 0: an int64 tensor with one more dim."""
    labels = tensor._data if isinstance(tensor, Tensor) else xp.asarray(tensor)
    if labels.dtype != xp.int64:
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    if num_classes == -1:
        if labels.size == 0:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = int(labels.max()) + 1
    if labels.size and labels.min() < 0:
        raise RuntimeError("Class values must be non-negative.")
    if labels.size and labels.max() >= num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    return Tensor._make((labels[..., None] == xp.arange(num_classes)).astype(xp.int64))


class EmbeddingLookup(Primitive):
    """y = W[indices] (one row of W per index);
    dL/dW_r = Σ_{k: indices_k = r} s_k dL/dy_k, with s_k = 0 for the padding index and
    1 / (count of indices_k in the batch) with scale_grad_by_freq, 1 otherwise"""

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
    if indices.dtype.kind not in "iu":
        raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar "
                           f"types: Long, Int; but got {indices.dtype} instead (while checking arguments "
                           "for embedding)")
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
    ``max_norm`` to norm max_norm (times max_norm / (norm + 1e-7), as PyTorch)."""
    rows = xp.unique(indices.reshape(-1))
    values = weight._data[rows]
    if norm_type == math.inf:
        norms = xp.abs(values).max(axis=1)
    else:
        norms = (xp.abs(values) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    over = norms > max_norm
    if over.any():
        scale = (max_norm / (norms[over] + 1e-7)).astype(weight.dtype)
        with autograd.no_grad():
            weight[rows[over]] = values[over] * scale[:, None]
    return weight


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


class Embedding(Module):
    """A lookup table of ``num_embeddings`` vectors of size ``embedding_dim``.

    PyTorch's initialisation: W ~ N(0, 1), with the padding row set to zero.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if padding_idx is not None:
            if padding_idx > 0 and padding_idx >= num_embeddings:
                raise AssertionError("Padding_idx must be within num_embeddings")
            if padding_idx < 0 and padding_idx < -num_embeddings:
                raise AssertionError("Padding_idx must be within num_embeddings")
            padding_idx %= num_embeddings
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            self.weight = Parameter(autograd.empty(num_embeddings, embedding_dim, dtype=dtype),
                                    requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise AssertionError("Shape of weight does not match num_embeddings and embedding_dim")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with autograd.no_grad():
                self.weight[self.padding_idx] = 0

    def forward(self, input):
        return embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                         self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            text += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            text += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            text += ", scale_grad_by_freq=True"
        if self.sparse:
            text += ", sparse=True"
        return text

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """An Embedding whose weight is ``embeddings`` (2-D, shared), frozen unless freeze=False."""
        if embeddings.ndim != 2:
            raise AssertionError("Embeddings parameter is expected to be 2-dimensional")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=embeddings, _freeze=freeze)
