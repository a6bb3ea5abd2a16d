"""``autograd.masked``: PyTorch's ``torch.masked`` reductions and normalizations with a ``mask=``.

``autograd.masked.sum(x, dim, mask=m)`` reduces only the elements where the boolean ``m`` (broadcastable to
``x``) is True: masked-out elements take the operation's identity (masks.py) and get a zero gradient.
PyTorch's prototype ``MaskedTensor`` (and sparse masks) are not provided.
"""

from .masks import (  # noqa: F401  (PyTorch exports these private helpers too; its tests use them)
    _canonical_dim,
    _combine_input_and_mask,
    _input_mask,
    _output_mask,
    _reduction_identity,
    _where,
)
from .moments import mean, std, var
from .normalizations import cumprod, cumsum, log_softmax, logaddexp, normalize, softmax, softmin
from .reductions import amax, amin, argmax, argmin, logsumexp, median, norm, prod, sum

__all__ = ["amax", "amin", "argmax", "argmin", "cumprod", "cumsum", "log_softmax", "logaddexp", "logsumexp", "mean",
           "median", "norm", "normalize", "prod", "softmax", "softmin", "std", "sum", "var"]
