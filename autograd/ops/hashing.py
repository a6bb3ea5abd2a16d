"""torch.hash_tensor: a cheap fingerprint of a tensor's values, for telling tensors apart (not
a cryptographic hash).

Mode 0, the only one PyTorch has, is an exclusive-or reduction of the elements' bits: each
element is widened to its 64-bit kind (a float to float64, an integer or bool to int64), its 8
bytes read as one uint64, and the words combined with xor over the reduced dims,

    hash(x) = bits(x_1) ⊕ bits(x_2) ⊕ ... ⊕ bits(x_n)

so the hash does not depend on the order of the elements, and two equal elements cancel. The
result is uint64 and has no gradient.
"""

from ..backend import ufunc_reduce, xp
from ..tensor import Tensor
from .axes import normalize_dims
from .conversion import refuse_kinds
from .names import names
from .outputs import write_out


@names("hash_tensor")
def hash_tensor(input, dim=None, *, keepdim=False, mode=0, out=None):
    """The xor of the elements' 64-bit patterns over ``dim`` (every dim by default), as uint64."""
    if mode != 0:
        raise RuntimeError(f"Unknown hash_tensor mode: {mode}")
    data = input._data
    refuse_kinds(data, "xor_sum_cpu", "c")
    axes = normalize_dims(dim, data.ndim)
    if data.size == 0:
        if dim is None:
            raise RuntimeError("hash_tensor: Expected reduction dim to be specified for input.numel() == 0. "
                               "Specify the reduction dim with the 'dim' argument.")
        empty = next((axis for axis in axes if data.shape[axis] == 0), None)
        if empty is not None:
            raise IndexError(f"hash_tensor: Expected reduction dim {empty} to have non-zero size.")
    wide = data.astype(xp.float64 if data.dtype.kind == "f" else xp.int64)
    words = wide.view(xp.uint64)
    hashed = ufunc_reduce("bitwise_xor", words, axes, keepdim) if axes else words.copy()
    return write_out(Tensor._make(xp.asarray(hashed, dtype=xp.uint64)), out)
