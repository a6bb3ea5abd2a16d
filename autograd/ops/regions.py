"""Copies of a tensor with one region replaced: ``slice_scatter``, ``select_scatter``,
``diagonal_scatter`` (the out-of-place twins of writing through a slice, a select or a
diagonal), and ``narrow_copy``.

Each is the write it stands for, made on a clone: ``out = input.clone(); out[region] = src``.
The write door records it (``IndexPut`` or a write through a view), so the gradient is exact:
dL/dinput is dL/dout with the region zeroed, dL/dsrc the region of dL/dout.
"""

from ..errors import ShapeError
from ..sparse_layout import is_sparse
from .axes import dim_index
from .names import names
from .outputs import write_out


def _check_src(region_shape, src):
    if tuple(src.shape) != tuple(region_shape):
        raise ShapeError(f"expected src to have a size equal to the slice of self. src size = {list(src.shape)}, "
                         f"slice size = {list(region_shape)}")


def _written(input, index, src):
    out = input.clone()
    _check_src(out[index].shape, src)
    out[index] = src
    return out


@names("slice_scatter")
def slice_scatter(input, src, dim=0, start=None, end=None, step=1, *, out=None):
    """input with input[..., start:end:step, ...] (along dim) replaced by src."""
    dim = dim_index(dim, input.ndim)
    return write_out(_written(input, (slice(None),) * dim + (slice(start, end, step),), src), out)


@names("select_scatter")
def select_scatter(input, src, dim, index):
    """input with input.select(dim, index) replaced by src."""
    dim = dim_index(dim, input.ndim)
    if not -input.shape[dim] <= index < input.shape[dim]:
        raise IndexError(f"select(): index {index} out of range for tensor of size {list(input.shape)} at "
                         f"dimension {dim}")
    return _written(input, (slice(None),) * dim + (index,), src)


@names("diagonal_scatter")
def diagonal_scatter(input, src, offset=0, dim1=0, dim2=1):
    """input with input.diagonal(offset, dim1, dim2) replaced by src (written through the diagonal view)."""
    out = input.clone()
    diagonal = out.diagonal(offset, dim1, dim2)
    _check_src(diagonal.shape, src)
    diagonal.copy_(src)
    return out


@names("narrow_copy")
def narrow_copy(input, dim, start, length, *, out=None):
    """input.narrow(dim, start, length) as a new tensor (not a view). An out of another shape is resized without
    PyTorch's warning, as its narrow_copy kernel resizes out itself."""
    if is_sparse(input):  # (a sparse tensor has no narrow view, only its own copy)
        return write_out(input.narrow_copy(dim, start, length), out)
    return write_out(input.narrow(dim, start, length).clone(), out, warn_resize=False)
