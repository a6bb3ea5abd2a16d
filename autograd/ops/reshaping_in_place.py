"""In-place shape changes: ``x.t_()``, ``x.transpose_(0, 1)``, ``x.swapaxes_``/``swapdims_``,
``x.unsqueeze_(d)``, ``x.squeeze_(d)``, ``x.resize_(*sizes)``, ``x.resize_as_(y)`` (and the
deprecated out-of-place ``x.resize``/``x.resize_as``, which only reshape), and ``x.set_(y)``, which
makes x show y's memory.

Each makes the out-of-place view of x and lets x become it (``Tensor._become``, the one place
that changes a tensor's shape in place): the memory is x's own, the history the view's, so a
recorded ``b.t_()`` differentiates as ``b = b.t()`` does. As in PyTorch, a leaf that requires
grad refuses and the version counter moves on.
"""

import warnings

from ..backend import memory_owner, strided_view, xp
from ..constants import contiguous_format
from ..graph import enable_grad, modes, program_stacklevel
from ..size import Size, refuse_negative_sizes, sizes_argument
from ..tensor import Tensor
from .axes import sizes_or_keyword
from .conversion import c_name
from .layouts import suggested_format
from .names import names
from .strided import checked_layout, reach_of, refuse_outside

# PyTorch's nodes of the in-place forms, by the out-of-place view's (its overloads are numbered after those)
IN_PLACE_NAMES = {"TBackward0": "TBackward1", "TransposeBackward0": "TransposeBackward1",
                  "UnsqueezeBackward0": "UnsqueezeBackward1", "SqueezeBackward0": "SqueezeBackward3",
                  "SqueezeBackward1": "SqueezeBackward4", "SqueezeBackward2": "SqueezeBackward5"}


def _become(x, make_view):
    with enable_grad():  # a view's chain to its base is kept in grad mode only
        view = make_view(x)
    node = view.grad_fn
    in_place_name = None if node is None else IN_PLACE_NAMES.get(node.name())
    if in_place_name is not None:
        node.pytorch_name = in_place_name
    return x._become(view)


@names("t_", function=False)
def t_(input):
    """input becomes input.t() (a matrix transposed; vectors and scalars unchanged)."""
    return _become(input, lambda x: x.t())


@names("transpose_", function=False)
def transpose_(input, dim0, dim1):
    """input becomes input.transpose(dim0, dim1)."""
    return _become(input, lambda x: x.transpose(dim0, dim1))


@names("swapaxes_", function=False)
def swapaxes_(input, axis0, axis1):
    """transpose_ under NumPy's names."""
    return _become(input, lambda x: x.swapaxes(axis0, axis1))


@names("swapdims_", function=False)
def swapdims_(input, dim0, dim1):
    """swapaxes_ with PyTorch's keywords for this alias (dim0, dim1)."""
    return swapaxes_(input, dim0, dim1)


@names("unsqueeze_", function=False)
def unsqueeze_(input, dim):
    """input becomes input.unsqueeze(dim)."""
    return _become(input, lambda x: x.unsqueeze(dim))


@names("squeeze_", function=False)
def squeeze_(input, dim=None):
    """input becomes input.squeeze(dim)."""
    return _become(input, lambda x: x.squeeze(dim))


def _sizes(sizes):
    sizes = sizes_argument(sizes)
    refuse_negative_sizes(sizes)
    return tuple(int(n) for n in sizes)


@names("resize_", function=False)
def resize_(input, *sizes, size=None, memory_format=None):
    """input takes the shape ``sizes``, row-major over its memory: the first elements in memory
    order are kept; when it grows, the elements past the old ones are new (zeros here, where
    PyTorch leaves them uninitialised). The same shape changes nothing.

    A tensor that requires grad refuses (PyTorch: "cannot resize variables that require grad").
    Growing gives the tensor new memory, which views made earlier no longer share (PyTorch grows
    the storage they share); a tensor whose elements are not one dense block of memory (a strided
    slice) refuses a new shape, rather than guess what PyTorch's storage would hold.

    ``memory_format`` lays those elements out anew, shape changed or not (PyTorch's restride):
    channels_last (channels_last_3d) reads them as N, H, W, C (N, D, H, W, C), contiguous_format
    row-major; the elements stay where they are in memory."""
    shape = _sizes(sizes_or_keyword(sizes, "size", size))
    if input.requires_grad:
        raise RuntimeError("cannot resize variables that require grad")
    order = _memory_order(memory_format, len(shape))
    if shape == tuple(input.shape) and order is None:
        return input
    array = input._data
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        raise RuntimeError(f"resize_ of a tensor of shape {tuple(input.shape)} with strides "
                           f"{input.stride()}: its elements are not one dense block of memory; "
                           "use x.contiguous() first")
    count = 1
    for n in shape:
        count *= n
    if count >= 2**63:  # (PyTorch counts in int64)
        raise RuntimeError("numel: integer multiplication overflow")
    if count * array.itemsize >= 2**63:
        raise RuntimeError(f"Storage size calculation overflowed with sizes={list(shape)}")
    flat = _storage_from(input) if array.flags.c_contiguous else array.ravel(order="K")  # (a view: dense)
    if count > flat.size:
        grown = xp.zeros(count, dtype=array.dtype)
        grown[:flat.size] = flat
        flat = grown
    if order is None:
        return input._become(Tensor._make(flat[:count].reshape(shape)))
    laid_out = flat[:count].reshape(tuple(shape[dim] for dim in order))  # (dims in memory order, outermost first)
    return input._become(Tensor._make(laid_out.transpose(tuple(int(d) for d in xp.argsort(xp.asarray(order))))))


def _memory_order(memory_format, ndim):
    """The dims from the outermost in memory that ``memory_format`` lays a tensor of ``ndim`` dims out in (None
    where none is asked for), refused as PyTorch's resize_ refuses preserve_format and a format of another rank."""
    if memory_format is None:
        return None
    if memory_format.name == "preserve_format":
        raise RuntimeError("Unsupported memory formatPreserve")
    order = memory_format.order or tuple(range(ndim))  # (contiguous_format: row-major)
    if len(order) != ndim:
        raise RuntimeError(f"required rank {len(order)} tensor to use {memory_format.name} format")
    return order


def _storage_from(input):
    """The memory from input's first element to the end of the array it lives in, in order (PyTorch's
    storage from the storage offset): a shrunk tensor resized back shows its old elements again."""
    root = memory_owner(input._data)
    if not root.flags.c_contiguous:
        return input._data.reshape(-1)
    return root.reshape(-1)[input.storage_offset():]


@names("resize_as_", function=False)
def resize_as_(input, the_template, *, memory_format=None):
    """input.resize_(the_template.shape, memory_format=...) (PyTorch's keyword names the tensor the_template);
    preserve_format lays input out in the template's suggested memory format (channels-last where it is stored so,
    row-major otherwise)."""
    if memory_format is not None and memory_format.name == "preserve_format":
        memory_format = suggested_format(the_template._data) or contiguous_format
    return resize_(input, Size(the_template.shape), memory_format=memory_format)


@names("resize", function=False)
def resize(input, *sizes):
    """PyTorch's deprecated out-of-place resize: ``input`` reshaped to ``sizes``, which must hold as
    many elements (it warns, as PyTorch's does; ``resize_`` is the one that changes the size)."""
    warnings.warn("non-inplace resize is deprecated", stacklevel=program_stacklevel())
    shape = _sizes(sizes)
    count = 1
    for n in shape:
        count *= n
    if count != input.numel():
        raise RuntimeError(f"requested resize to {'x'.join(map(str, shape))} ({count} elements in total), but the "
                           f"given tensor has a size of {'x'.join(map(str, input.shape))} ({input.numel()} "
                           "elements). autograd's resize can only change the shape of a given tensor, while "
                           "preserving the number of elements. ")
    return input.reshape(shape)


@names("resize_as", function=False)
def resize_as(input, tensor):
    """input.resize(tensor.shape), deprecated as PyTorch's."""
    warnings.warn("non-inplace resize_as is deprecated", stacklevel=program_stacklevel())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return resize(input, *tensor.shape)


@names("as_strided_", function=False)
def as_strided_(input, size, stride, storage_offset=None):
    """input becomes input.as_strided(size, stride, storage_offset): the same memory, read with
    new steps. A non-contiguous input refuses (its as_strided is a copy here, not a view)."""
    if not input.is_contiguous():
        raise RuntimeError(f"as_strided_ of a non-contiguous tensor of shape {tuple(input.shape)}: call "
                           ".contiguous() first (as_strided of it is a copy here, not a view)")
    return _become(input, lambda x: x.as_strided(size, stride, storage_offset))


@names("set_", function=False)
def set_(input, source=None, storage_offset=None, size=None, stride=None):
    """input shows ``source``'s memory from now on, with no copy (PyTorch's ``x.set_(y)``: a write through
    either is seen by both): y's shape and strides, or, given ``storage_offset`` and ``size`` (and ``stride``,
    row-major by default), that window of y's memory, in elements of input's dtype. ``source`` may be a tensor
    of input's dtype or a storage (``y.untyped_storage()``, read as input's dtype); ``x.set_()`` empties x.
    Views of x made before keep the memory they showed. Not differentiable, as in PyTorch: under grad mode a
    leaf that requires grad refuses, and a result that requires grad has a history whose backward raises."""
    from ..tensor_info import UntypedStorage
    from .predicates import WithoutDerivative

    dtype = input._data.dtype
    if source is None:
        array = xp.empty(0, dtype=dtype)
    elif isinstance(source, Tensor):
        if source._data.dtype != dtype:
            raise RuntimeError(f"Could not set tensor of type {c_name(source._data.dtype)} to a tensor of type "
                               f"{c_name(dtype)}")
        array = source._data if size is None else _window(memory_owner(source._data), dtype, storage_offset, size,
                                                          stride)
    elif isinstance(source, UntypedStorage):
        array = _window(source._memory, dtype, storage_offset or 0, size, stride)
    else:
        raise TypeError(f"set_() received an invalid combination of arguments - got ({type(source).__name__}), but "
                        "expected one of: (), (Tensor source), (Storage source), (Tensor or Storage source, int "
                        "storage_offset, tuple of ints size, tuple of ints stride = None)")
    sources = [x for x in (input, source) if isinstance(x, Tensor)]
    if modes.grad_enabled and any(x.requires_grad for x in sources):
        new = WithoutDerivative.apply(*sources, values=array, kernel="set_")
    else:
        new = Tensor._make(array)
    return input._become(new, new_memory=True)


def _window(memory, dtype, storage_offset, size, stride):
    """``size`` elements of ``dtype`` in ``memory`` (the array a storage is), ``stride`` apart (row-major by
    default), from ``storage_offset``; the whole memory as one row when no size is given. Refused, as
    PyTorch refuses, where it reaches past the memory (PyTorch would grow a storage; NumPy's cannot)."""
    memory = memory.reshape(-1)
    if memory.dtype != dtype:  # (a storage is bytes: read as input's dtype)
        memory = memory.view(xp.uint8)[: memory.nbytes // dtype.itemsize * dtype.itemsize].view(dtype)
    if size is None:
        return memory[storage_offset:]
    size = tuple(int(n) for n in size)
    if stride is None:
        stride = tuple(int(xp.prod(size[d + 1:], dtype=xp.int64)) for d in range(len(size)))
    size, stride = checked_layout(size, stride)
    start = int(storage_offset)
    refuse_outside(size, stride, start, reach_of(size, stride), dtype.itemsize, memory.size)
    return strided_view(memory[start:], size, tuple(s * dtype.itemsize for s in stride))
