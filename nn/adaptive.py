"""``AdaptiveLogSoftmaxWithLoss`` (Grave et al., 2016, "Efficient softmax approximation for GPUs").

The classes, sorted by frequency, are split at the cutoffs into a shortlist [0, c₀) and clusters
[c₀, c₁), [c₁, c₂), …. The head scores the shortlist's classes and one entry per cluster; cluster i has a
tail of two bias-free linear maps, through in_features / div_valueⁱ⁺¹ hidden units (rarer classes get
smaller ones). A class's log-probability is the head's, for a shortlist class, or

    log p(y) = log p_head(cluster of y) + log p_cluster(y | cluster)

otherwise: most tokens only pay for the small head. Layers, names and numbers as PyTorch's, so a
state_dict loads both ways.
"""

import collections

import autograd
from autograd import Tensor
from autograd.backend import xp
from autograd.tensor import tensor_from

from . import functional as F
from .container import ModuleList, Sequential
from .linear import Linear
from .module import Module

_ASMoutput = collections.namedtuple("_ASMoutput", ["output", "loss"])


class AdaptiveLogSoftmaxWithLoss(Module):
    def __init__(self, in_features, n_classes, cutoffs, div_value=4.0, head_bias=False, device=None, dtype=None):
        super().__init__()
        cutoffs = list(cutoffs)
        if len(cutoffs) == 0:
            raise ValueError("cutoffs should be a sequence of length larger than 0")
        if (cutoffs != sorted(cutoffs) or min(cutoffs) <= 0 or max(cutoffs) > n_classes - 1
                or len(set(cutoffs)) != len(cutoffs) or any(int(c) != c for c in cutoffs)):
            raise ValueError("cutoffs should be a sequence of unique, positive integers sorted in an increasing "
                             "order, where each value is between 1 and n_classes-1")
        self.in_features, self.n_classes = in_features, n_classes
        self.cutoffs = cutoffs + [n_classes]
        self.div_value, self.head_bias = div_value, head_bias
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        self.head = Linear(in_features, self.head_size, bias=head_bias, dtype=dtype)
        self.tail = ModuleList(
            Sequential(Linear(in_features, int(in_features // (div_value ** (i + 1))), bias=False, dtype=dtype),
                       Linear(int(in_features // (div_value ** (i + 1))), self.cutoffs[i + 1] - self.cutoffs[i],
                              bias=False, dtype=dtype))
            for i in range(self.n_clusters))

    def reset_parameters(self):
        self.head.reset_parameters()
        for hidden, output in self.tail:
            hidden.reset_parameters()
            output.reset_parameters()

    def forward(self, input, target):
        """(output, loss): output[n] = log p(target[n] | input[n]), loss = −mean(output)."""
        target = target if isinstance(target, Tensor) else tensor_from(target)
        if target.ndim == 1:
            if input.shape[0] != target.shape[0]:
                raise RuntimeError("Input and target should have the same size in the batch dimension.")
            if input.ndim != 2:
                raise RuntimeError(f"1D target tensor expects 2D input tensors, but found inputs with size "
                                   f"{list(input.shape)}")
        elif target.ndim == 0:
            if input.ndim != 1:
                raise RuntimeError(f"0D target tensor expects 1D input tensors, but found inputs with size "
                                   f"{list(input.shape)}")
        else:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        batched = target.ndim > 0
        input = input if batched else input.unsqueeze(0)
        labels = xp.atleast_1d(target._data).astype(xp.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise RuntimeError(f"Target values should be in [0, {self.n_classes - 1}], but values in range "
                               f"[{labels.min()}, {labels.max()}] were found. ")
        # which head entry each row reads: its class in the shortlist, else its cluster's entry
        cluster = xp.searchsorted(xp.asarray(self.cutoffs), labels, side="right")  # 0: the shortlist
        head_entry = xp.where(cluster == 0, labels, self.shortlist_size + cluster - 1)
        head_logprob = F.log_softmax(self.head(input), dim=1)
        output = head_logprob.gather(1, tensor_from(head_entry[:, None])).squeeze(1)
        # + log p(y | cluster) for the rows of each cluster, put back in row order
        parts, rows = [Tensor._make(xp.zeros(int((cluster == 0).sum()), dtype=head_logprob.dtype))], \
            [xp.flatnonzero(cluster == 0)]
        for i in range(1, self.n_clusters + 1):
            members = xp.flatnonzero(cluster == i)
            if members.size == 0:
                continue
            cluster_logprob = F.log_softmax(self.tail[i - 1](input[members]), dim=1)
            relative = labels[members] - self.cutoffs[i - 1]
            parts.append(cluster_logprob[xp.arange(members.size), relative])
            rows.append(members)
        within = autograd.cat(parts)[xp.argsort(xp.concatenate(rows), kind="stable")]
        output = within + output
        loss = (-output).mean()
        return _ASMoutput(output if batched else output.squeeze(0), loss)

    def _full_log_prob(self, input, head_output):
        head_logprob = F.log_softmax(head_output, dim=1)
        columns = [head_logprob[:, :self.shortlist_size]]
        for i in range(self.n_clusters):
            cluster_logprob = F.log_softmax(self.tail[i](input), dim=1)
            columns.append(cluster_logprob + head_logprob[:, self.shortlist_size + i].unsqueeze(1))
        return autograd.cat(columns, dim=1)

    def log_prob(self, input):
        """log p(c | input) for every class c: (N, n_classes)."""
        return self._full_log_prob(input, self.head(input))

    def predict(self, input):
        """The most probable class of each row (the head's argmax when that is a shortlist class: no cluster
        can then beat it)."""
        head_output = self.head(input)
        output = head_output._data.argmax(1)
        outside = output >= self.shortlist_size
        if outside.any():
            full = self._full_log_prob(input[outside], head_output[outside])
            output[outside] = full._data.argmax(1)
        return tensor_from(output.astype(xp.int64))
