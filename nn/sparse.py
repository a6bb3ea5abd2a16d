"""Lookup tables: ``one_hot``, ``embedding`` (its maths in ``autograd.ops.embedding``) and the
``Embedding`` layer.

An embedding maps each integer index i to row i of a weight matrix W:
y = W[i]. That is what ``C[X]`` does in Karpathy's makemore; the layer adds
PyTorch's options: a padding row that stays zero and gets no gradient,
rows renormalised to a maximum norm, and gradients scaled by the inverse
frequency of each index in the batch.
"""


import autograd
from autograd import Tensor
from autograd.backend import xp
from autograd.ops.embedding import (  # noqa: F401  (F.embedding as before)
    EmbeddingLookup,
    _indices,
    _padding_index,
    embedding,
    embedding_renorm_,
)
from autograd.ops.shape import IndexAdd

from . import init
from .module import Module
from .parameter import Parameter


def one_hot(input, num_classes=-1):
    """y[..., c] = 1 where input[...] == c, else 0: an int64 tensor with one more dim."""
    labels = input._data if isinstance(input, Tensor) else xp.asarray(input)
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


class Embedding(Module):
    """A lookup table of ``num_embeddings`` vectors of size ``embedding_dim``.

    PyTorch's initialisation: W ~ N(0, 1), with the padding row set to zero.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None):
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
            self.weight = Parameter(autograd.empty(num_embeddings, embedding_dim, device=device, dtype=dtype),
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
    if include_last_offset:
        starts = starts[:-1]
    bag_of = xp.searchsorted(starts, xp.arange(len(indices)), side="right") - 1
    return indices, bag_of, len(starts)


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
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError(f"embedding_bag: per_sample_weights was not None. per_sample_weights is only "
                                  f"supported for mode='sum' (got mode='{mode}'). Please open a feature request "
                                  "on GitHub.")
    indices, bag_of, bags = _bags(input, offsets, include_last_offset)
    padding_idx = _padding_index(padding_idx, weight.shape[0])
    kept = xp.ones(len(indices), dtype=bool) if padding_idx is None else indices != padding_idx
    indices, bag_of = indices[kept], bag_of[kept]
    rows = embedding(Tensor._make(indices), weight, None, max_norm, norm_type, scale_grad_by_freq)
    shape = (bags, weight.shape[1])
    if mode == "max":
        # the winning lookup of each bag and dim, found on the arrays, then gathered
        best = xp.full(shape, -xp.inf, dtype=weight.dtype)
        xp.maximum.at(best, bag_of, rows._data)
        lookup = xp.arange(len(indices))[:, None]
        candidates = xp.where(rows._data == best[bag_of], lookup, len(indices))
        winner = xp.full(shape, len(indices), dtype=xp.int64)
        xp.minimum.at(winner, bag_of, candidates)  # the first winning lookup of each bag and dim
        empty = xp.bincount(bag_of, minlength=bags) == 0
        winner[empty] = 0
        picked = rows[winner, xp.arange(shape[1])] if len(indices) else Tensor._make(xp.zeros(shape, weight.dtype))
        return picked * Tensor._make((~empty)[:, None].astype(weight.dtype))
    if per_sample_weights is not None:
        flat_weights = per_sample_weights.reshape(-1)[Tensor._make(xp.flatnonzero(kept))]
        rows = rows * flat_weights.unsqueeze(1)
    total = IndexAdd.apply(rows, index=bag_of, shape=shape, basic=False)
    if mode == "sum":
        return total
    counts = xp.bincount(bag_of, minlength=bags).astype(weight.dtype)
    return total * Tensor._make((1.0 / xp.maximum(counts, 1))[:, None])


class EmbeddingBag(Module):
    """Embedding followed by a sum, mean or max over each bag (see ``embedding_bag``)."""

    def __init__(self, num_embeddings, embedding_dim, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                 mode="mean", sparse=False, _weight=None, include_last_offset=False, padding_idx=None,
                 device=None, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.max_norm, self.norm_type, self.scale_grad_by_freq = max_norm, norm_type, scale_grad_by_freq
        self.mode, self.sparse, self.include_last_offset = mode, sparse, include_last_offset
        self.padding_idx = None if padding_idx is None else _padding_index(padding_idx, num_embeddings)
        if _weight is None:
            self.weight = Parameter(autograd.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
            self.reset_parameters()
        else:
            self.weight = Parameter(_weight)

    reset_parameters = Embedding.reset_parameters

    def forward(self, input, offsets=None, per_sample_weights=None):
        return embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                             self.mode, self.sparse, per_sample_weights, self.include_last_offset, self.padding_idx)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.max_norm is not None:
            text += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            text += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            text += ", scale_grad_by_freq=True"
        text += f", mode={self.mode!r}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                        mode="mean", sparse=False, include_last_offset=False, padding_idx=None):
        if embeddings.ndim != 2:
            raise AssertionError("Embeddings parameter is expected to be 2-dimensional")
        bag = cls(embeddings.shape[0], embeddings.shape[1], max_norm, norm_type, scale_grad_by_freq, mode, sparse,
                  embeddings, include_last_offset, padding_idx)
        bag.weight.requires_grad_(not freeze)
        return bag
