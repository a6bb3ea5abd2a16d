"""``torch.sparse``: products, sums and softmaxes of sparse COO tensors (see ``autograd.sparse.coo``), and the
legacy constructors ``FloatTensor(indices, values, size)`` and kin that older programs (pygcn) build
adjacency matrices with."""

from .. import backend
from . import reshaping  # noqa: F401  (binds narrow_copy, unsqueeze, permute, t_ to SparseTensor)
from .coo import SparseTensor, sparse_coo_tensor
from .making import check_sparse_tensor_invariants, legacy_constructor, spdiags
from .products import addmm, hspmm, mm, smm
from .reductions import log_softmax, softmax, sum  # noqa: A004

FloatTensor = legacy_constructor(backend.float32)
DoubleTensor = legacy_constructor(backend.float64)
HalfTensor = legacy_constructor(backend.float16)
LongTensor = legacy_constructor(backend.int64)
IntTensor = legacy_constructor(backend.int32)

__all__ = ["DoubleTensor", "FloatTensor", "HalfTensor", "IntTensor", "LongTensor", "SparseTensor", "addmm",
           "check_sparse_tensor_invariants", "log_softmax", "mm", "softmax", "sparse_coo_tensor", "spdiags", "sum"]


def __getattr__(name):
    """``torch.sparse.torch``: PyTorch's module imports torch, so programs reach torch through it (capsule networks'
    ``torch.sparse.torch.eye(n).index_select(0, labels)``); here it is autograd."""
    if name == "torch":
        import autograd

        return autograd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
