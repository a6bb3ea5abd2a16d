"""The ``*_copy`` twins of the view ops (``autograd.t_copy(x)``, ``autograd.split_copy(x, 2)``, ...):
the view, then a copy, so the result owns its memory and a write to it never reaches ``x``.

Each is ``view(x).clone()``, two recorded ops, so the gradient is the view's:
dL/dx = the view's backward applied to dL/dy (the clone passes dL/dy through unchanged).
Every one takes ``out=`` as PyTorch's does; the ones that give several tensors (split, unbind)
take a list of them and return None, as PyTorch's.

``detach_copy`` does better than PyTorch: PyTorch's result claims to require grad and raises
"derivative for aten::detach_copy is not implemented" at backward; here it is a detached copy,
which is what the name says.
"""

import numpy

from ..backend import xp
from ..dtype_objects import DTYPE_TYPES
from ..graph import no_grad
from ..tensor import Tensor
from .axes import dim_index
from .conjugation import view_as_complex, view_as_real
from .names import names
from .outputs import write_out


def _copied(view, out):
    return write_out(view.clone(), out)


def _pieces_copied(pieces, out):
    """Copies of several views; with ``out`` (a list of tensors, one per piece) written there."""
    if out is None:
        return tuple(piece.clone() for piece in pieces)
    if len(out) != len(pieces):
        raise RuntimeError(f"expected out to hold {len(pieces)} tensors, got {len(out)}")
    for piece, target in zip(pieces, out):
        write_out(piece.clone(), target)
    return None


@names("alias_copy", method=False)
def alias_copy(input, *, out=None):
    """A copy of input (torch.alias is input itself as a new view)."""
    return _copied(input, out)


@names("as_strided_copy", method=False)
def as_strided_copy(input, size, stride, storage_offset=None, *, out=None):
    return _copied(input.as_strided(size, stride, storage_offset), out)


@names("detach_copy", method=False)
def detach_copy(input, *, out=None):
    """A copy of input that does not require grad (see the module's docstring)."""
    with no_grad():
        return _copied(input.detach(), out)


@names("diagonal_copy", method=False)
def diagonal_copy(input, offset=0, dim1=0, dim2=1, *, out=None):
    return _copied(input.diagonal(offset, dim1, dim2), out)


@names("expand_copy", method=False)
def expand_copy(input, size, *, implicit=False, out=None):
    """input.expand(size) as a new tensor (``implicit`` is accepted, as PyTorch's, and changes nothing)."""
    return _copied(input.expand(*size), out)


@names("permute_copy", method=False)
def permute_copy(input, dims, *, out=None):
    return _copied(input.permute(*dims), out)


@names("select_copy", method=False)
def select_copy(input, dim, index, *, out=None):
    return _copied(input.select(dim, index), out)


@names("slice_copy", method=False)
def slice_copy(input, dim=0, start=None, end=None, step=1, *, out=None):
    """input[..., start:end:step, ...] along dim, as a new tensor (bounds clipped as Python's slices)."""
    if step <= 0:
        raise RuntimeError("slice step must be positive")
    axis = dim_index(dim, input.ndim)
    return _copied(input[(slice(None),) * axis + (slice(start, end, step),)], out)


@names("split_copy", method=False)
def split_copy(input, split_size, dim=0, *, out=None):
    return _pieces_copied(input.split(split_size, dim), out)


@names("split_with_sizes_copy", method=False)
def split_with_sizes_copy(input, split_sizes, dim=0, *, out=None):
    return _pieces_copied(input.split_with_sizes(split_sizes, dim), out)


@names("squeeze_copy", method=False)
def squeeze_copy(input, dim=None, *, out=None):
    return _copied(input.squeeze() if dim is None else input.squeeze(dim), out)


@names("t_copy", method=False)
def t_copy(input, *, out=None):
    return _copied(input.t(), out)


@names("transpose_copy", method=False)
def transpose_copy(input, dim0, dim1, *, out=None):
    return _copied(input.transpose(dim0, dim1), out)


@names("unbind_copy", method=False)
def unbind_copy(input, dim=0, *, out=None):
    return _pieces_copied(input.unbind(dim), out)


@names("unfold_copy", method=False)
def unfold_copy(input, dimension, size, step, *, out=None):
    return _copied(input.unfold(dimension, size, step), out)


@names("unsqueeze_copy", method=False)
def unsqueeze_copy(input, dim, *, out=None):
    return _copied(input.unsqueeze(dim), out)


@names("view_copy", method=False)
def view_copy(input, size=None, *, dtype=None, out=None):
    """input.view(size) as a new tensor. With a dtype (as ``dtype=`` or in place of ``size``),
    input's bytes read as that dtype (the last dim rescaled by the ratio of element sizes),
    without gradient, as PyTorch's."""
    if (size is None) == (dtype is None):
        raise TypeError("view_copy() takes a size or a dtype")
    if dtype is not None or isinstance(size, (*DTYPE_TYPES, type)):
        return write_out(_bytes_as(input, numpy.dtype(size if dtype is None else dtype)), out)
    return _copied(input.view(*size) if isinstance(size, (tuple, list)) else input.view(size), out)


def _bytes_as(input, dtype):
    """A copy of input's elements' bytes, read as ``dtype`` (torch's x.view(dtype), copied)."""
    array, itemsize = input._data, input._data.itemsize
    if dtype.itemsize != itemsize:
        if input.ndim == 0:
            raise RuntimeError(f"self.dim() cannot be 0 to view {input.dtype} as {dtype} (different element sizes)")
        if input.stride(-1) != 1:
            raise RuntimeError(f"self.stride(-1) must be 1 to view {input.dtype} as {dtype} (different element "
                               f"sizes), but got {input.stride(-1)}")
        if (input.shape[-1] * itemsize) % dtype.itemsize:
            raise RuntimeError(f"self.size(-1) must be divisible by {dtype.itemsize // itemsize} to view "
                               f"{input.dtype} as {dtype} (different element sizes), but got {input.shape[-1]}")
    return Tensor._make(xp.ascontiguousarray(array).view(dtype).copy())


@names("view_as_real_copy", method=False)
def view_as_real_copy(input, *, out=None):
    return _copied(view_as_real(input), out)


@names("view_as_complex_copy", method=False)
def view_as_complex_copy(input, *, out=None):
    return _copied(view_as_complex(input), out)
