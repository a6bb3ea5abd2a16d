"""Masks: ``masked_fill``, ``masked_select``, ``masked_scatter``, and the positions a mask holds
(``nonzero``, ``argwhere``), and ``index_fill`` (a fill of whole slices, through a mask of them). Each is
built from ops with their own derivatives:

    masked_fill(x, m, v)     = where(m, v, x)                dL/dx = dL/dy where m fails, 0 where it holds
    masked_select(x, m)      = x[m] (a vector)               dL/dx = dL/dy scattered back to m's places
    masked_scatter(x, m, s)  = where(m, s's leading elements placed in order, x)

The mask must be bool, as PyTorch's (no uint8 masks), and broadcasts against the input.
"""

from ..backend import int64, xp
from ..errors import refuse_unbroadcastable
from ..index_watching import watches_arguments, watches_index
from ..primitive import named_node, node_named
from ..sparse_layout import is_sparse
from ..tensor import Tensor
from ..write_door import _refuse_overflow
from . import elementwise, shape
from .conversion import type_name
from .index_vectors import _slices_mask, _vector_index
from .indexing import _same_dtype
from .names import names
from .outputs import write_out

# the C type names masked_fill_'s refusal gives (PyTorch's words; masked_scatter_'s are type_name's)
_C_NAMES = {"uint8": "unsigned char", "int8": "signed char", "int16": "short int", "int32": "int", "int64": "long int",
            "float16": "c10::Half", "float32": "float", "float64": "double"}


def _mask_array(mask, op):
    array = mask._data if isinstance(mask, Tensor) else xp.asarray(mask)
    if array.dtype != bool:
        if op == "masked_select":
            raise RuntimeError("masked_select: expected BoolTensor for mask")
        dtype = _C_NAMES.get(array.dtype.name, array.dtype.name) if op == "masked_fill" else type_name(array.dtype)
        raise RuntimeError(f"{op}_ only supports boolean masks, but got mask with dtype {dtype}")
    return array


def _common_shape(first, second):
    """The shape two operands broadcast to, or PyTorch's error naming the first sizes that do not."""
    refuse_unbroadcastable(first, second)
    return xp.broadcast_shapes(first, second)


@names("masked_fill", inplace="masked_fill_")
@watches_index("mask", 1)
def masked_fill(input, mask, value):
    """y = value where mask holds, input elsewhere (mask broadcasts to input's shape)."""
    mask = _mask_array(mask, "masked_fill")
    _common_shape(input.shape, mask.shape)
    if isinstance(value, Tensor):
        if value.ndim:
            raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but got tensor with "
                               f"{value.ndim} dimension(s).")
        if value.dtype != input.dtype:  # its one number, checked as fill_ checks one: 300 or NaN into uint8, a
            _refuse_overflow(value.item(), input.dtype)  # complex number into reals are refused, -1 wraps to 255
            value = value.to(input.dtype)
    else:
        if type(value) is not bool:
            _refuse_overflow(value, input.dtype)  # NaN into integers, a complex number into reals: as fill_
        # (cast: -1 into uint8 wraps, as PyTorch's)
        return elementwise.MaskedFill.apply(input, mask=mask, value=xp.asarray(value).astype(input.dtype))
    # a 0-d tensor value: an input of the node (PyTorch's masked_fill.Tensor overload), after input as there
    return elementwise.Where.apply(input, value, condition=~mask, pytorch_name="MaskedFillBackward1")


@names("masked_select")
@node_named("MaskedSelectBackward0")
@watches_index("mask", 1)
@watches_arguments("input")  # (PyTorch's node saves it too: writing it refuses)
def masked_select(input, mask, *, out=None):
    """The elements of input where mask holds, as a vector (input and mask broadcast together)."""
    mask = _mask_array(mask, "masked_select")
    common = _common_shape(mask.shape, input.shape)
    return write_out(shape.GetItem.apply(shape.expand(input, common), index=xp.broadcast_to(mask, common)), out)


@names("masked_scatter", inplace="masked_scatter_")
@node_named("MaskedScatterBackward0")
@watches_index("mask", 1)
def masked_scatter(input, mask, source):
    """y = input with source's leading elements written, in order, where mask holds (input and mask
    broadcast together)."""
    mask = _mask_array(mask, "masked_scatter")
    common = _common_shape(input.shape, mask.shape)
    input, mask = shape.expand(input, common), xp.broadcast_to(mask, common)
    # (PyTorch's words, "gotFloat" without its space: programs match them)
    _same_dtype(input, source, "masked_scatter: expected self and source to have same dtypes but got{} and {}")
    count = int(mask.sum())
    if source.numel() < count:
        raise RuntimeError(f"Number of elements of source < number of ones in mask ({source.numel()} < {count})")
    flat = xp.flatnonzero(mask)
    taken = shape.reshape(source, (-1,))[:count]
    placed = shape.IndexAdd.apply(taken, index=flat, shape=(input.numel(),), basic=False)
    return elementwise.Where.apply(shape.reshape(placed, input.shape), input, condition=mask)


@names("nonzero")
def nonzero(input, *, out=None, as_tuple=False):
    """The indices of the nonzero elements: an (n, ndim) int64 tensor, or one vector per dim."""
    data = input._data
    if out is not None and as_tuple:
        raise RuntimeError("nonzero does not support the out kwarg when as_tuple is True")
    if out is not None and out.dtype != int64:
        raise RuntimeError(f"nonzero: Expected out tensor to have scalar type Long but got scalar type "
                           f"{type_name(out.dtype)}")
    if as_tuple:
        return tuple(Tensor._make(i.astype(int64)) for i in xp.nonzero(data if data.ndim else data.reshape(1)))
    return write_out(Tensor._make(xp.argwhere(data).astype(int64)), out)


@names("nonzero_static")
def nonzero_static(input, *, size, fill_value=-1, out=None):
    """nonzero's (n, ndim) indices cut or padded with ``fill_value`` rows to exactly ``size`` rows (a shape
    known before the values are: what compilers need; the same answer here)."""
    found = xp.argwhere(input._data).astype(int64)
    rows = xp.full((size, found.shape[1]), fill_value, dtype=int64)
    rows[:min(size, len(found))] = found[:size]
    return write_out(Tensor._make(rows), out)


@names("argwhere")
def argwhere(input):
    return nonzero(input)


@names("index_fill", inplace="index_fill_")
@watches_index("index", 2)
def index_fill(input, dim, index, value):
    """input with the slices index[0], index[1], ... along dim set to value."""
    if isinstance(value, Tensor) and value.ndim:  # (checked first, as PyTorch's)
        raise RuntimeError(f"index_fill_ only supports a 0-dimensional value tensor, but got tensor with "
                           f"{value.ndim} dimension(s).")
    complex_value = value.dtype.kind == "c" if isinstance(value, Tensor) else isinstance(value, complex)
    if complex_value and input.dtype.kind != "c":  # (even 1+0j: PyTorch looks at the scalar's type, not its value)
        raise RuntimeError("index_fill_(): Converting complex Scalar to non-complex type is not supported")
    axis, index = _vector_index(input, dim, index, "index_fill", "index_fill_(): Expected dtype int64 for index.",
                                (int64,), IndexError, wraps=True)
    mask = _slices_mask(input, axis, index)
    return masked_fill(input, mask, value)


@names("sparse_mask", function=False)
def sparse_mask(x, mask):
    """x at the positions a sparse tensor has (autograd.sparse: its indices, its coalesced or not), as a sparse
    tensor: dL/dx is dL/dvalues scattered back to those positions."""
    if not is_sparse(mask):
        raise NotImplementedError("Could not run 'aten::sparse_mask' with arguments from the 'CPU' backend: the mask "
                                  f"must be a sparse tensor (layout torch.sparse_coo), got a dense one of shape "
                                  f"{tuple(mask.shape)}")
    if tuple(x.shape) != tuple(mask.shape):
        raise RuntimeError(f"sparse_mask(): operands have incompatible sizes; self has size {list(x.shape)} but mask "
                           f"has size {list(mask.shape)}")
    return mask._with_values(named_node(x[mask._positions()], None, "SparseMaskBackward0"))
