"""Making tensors: ``tensor``, ``zeros``, ``ones``, ``full``, ``rand``, ``randn``, ``randint``, ``eye``, ...
(ranges of points, ``arange``, ``linspace`` and ``logspace``, are ranges.py's)

Floating factories use the default dtype (float32) unless ``dtype`` says
otherwise; random ones draw from the default generator (``manual_seed``) or
the ``generator=`` given. Every factory takes PyTorch's keywords: ``device``
(checked: it must be the device chainrule serves, see ``autograd.device``),
``requires_grad``, and the accepted-and-ignored ``layout``, ``pin_memory``,
``memory_format``.
"""

import itertools
import math
import operator
import warnings

import numpy

from . import backend
from .backend import dense_order, is_dense, to_numpy, xp
from .device import META, resolve
from .graph import program_stacklevel
from .memory_order import fills_in_memory_order, made_like_a_view
from .meta import MetaArray, meta_array
from .operands import python_number
from .random import _LARGEST_EXACT_INTEGER, draws, random_bounds_checked
from .random import generator as _rng
from .size import sizes_argument
from .sparse_layout import is_sparse
from .tensor import Tensor, as_array, tensor_from
from .warn_once import warn_once
from .write_door import _refuse_overflow


def _shape(sizes, size=None):
    """Accept zeros(2, 3), zeros((2, 3)) and zeros(size=(2, 3)), as PyTorch does."""
    if size is not None:
        if sizes:
            raise TypeError(f"the shape was given both positionally {sizes} and as size={size}")
        sizes = (size,)
    shape = sizes_argument(sizes)
    negative = [n for n in shape if n < 0]
    if negative:
        raise RuntimeError(f"Trying to create tensor with negative dimension {negative[0]}: {list(shape)}")
    return shape


def _float(dtype):
    return backend.get_default_dtype() if dtype is None else dtype


def out_dtype(dtype, out):
    """The dtype a factory makes its result in, given ``out=``: out's own, which overrides the inferred
    one (arange(4, out=a float tensor) counts in floats); a dtype= that differs from it is PyTorch's
    RuntimeError."""
    if out is None:
        return dtype
    if dtype is not None and xp.dtype(dtype) != out.dtype:
        from .ops.conversion import type_name  # (the ops import this module: imported when needed)

        raise RuntimeError(f"dtype {type_name(xp.dtype(dtype))} does not match dtype of out parameter "
                           f"({type_name(out.dtype)})")
    return out.dtype


def _floating_only(dtype, kernel):
    """``dtype``, refused unless floating or complex: PyTorch's ``kernel`` has no other."""
    if dtype is not None and xp.dtype(dtype).kind not in "fc":
        from .ops.conversion import type_name  # (the ops import this module: imported when needed)

        raise NotImplementedError(f"\"{kernel}\" not implemented for '{type_name(xp.dtype(dtype))}'")
    return dtype


def written(result, out, points=False):
    """``result``, or, given ``out``, result written into out (resized to its shape, without the warning that
    other ops' outs get: PyTorch's factories resize theirs), and out. The points of a range (``points``: arange,
    range, linspace, logspace) fill an out of as many elements in its own shape, in order, as PyTorch's do
    (linspace(0, 3, 4, out=x[:, 1:]) fills a 2 × 2 slice)."""
    if out is None:
        return result
    if points and out.numel() == result.numel() and out.shape != result.shape:
        return out.copy_(result.reshape(out.shape))
    from .ops.outputs import write_out  # (the ops import this module: imported when needed)

    return write_out(result, out, warn_resize=False)


def _made(array, device, requires_grad):
    """A new leaf from a freshly made array, once the device is known to be served."""
    return _made_by(lambda: array, array.shape, array.dtype, device, requires_grad)


def _made_by(make, shape, dtype, device, requires_grad):
    """A new leaf of the array ``make()`` gives (of ``shape``), in ``dtype``, once the device is known to be served;
    on the meta device (meta.py) its shape and dtype only, and ``make`` is not called: a random factory draws
    nothing, so the generator's state stays where PyTorch's does. (Python data keeps tensor()'s dtypes.)"""
    if resolve(device) is META:
        return tensor_from(meta_array(shape, dtype), requires_grad=requires_grad)
    return tensor_from(xp.asarray(make().astype(dtype, copy=False)), requires_grad=requires_grad)


COPY_CONSTRUCT = ("To copy construct from a tensor, it is recommended to use sourceTensor.detach().clone() or "
                  "sourceTensor.detach().clone().requires_grad_(True), rather than {call}.")


def tensor(data, *, dtype=None, device=None, requires_grad=False, pin_memory=False):
    """A new leaf tensor holding a copy of ``data`` (a tensor given is copied, with PyTorch's warning
    that ``detach().clone()`` says so)."""
    data = copied_data(data)
    if type(data) is numpy.ndarray and not data.dtype.isnative:
        _refuse_foreign_byte_order()
    return _made(_array(data, dtype, copy=True), device, requires_grad)


def copied_data(data, call="torch.tensor(sourceTensor)"):
    """What a copy is made of: a tensor's array, with PyTorch's warning (pointing at the program's line)
    that ``detach().clone()`` is the way to copy a tensor, rather than ``call``."""
    if isinstance(data, Tensor):
        warnings.warn(COPY_CONSTRUCT.format(call=call), UserWarning, stacklevel=program_stacklevel())
        return data._data
    if hasattr(data, "__dlpack__") and not hasattr(data, "__array__"):  # (an array of another library, or any
        # object that hands its memory over DLPack: read through it, as PyTorch does, not element by element)
        return xp.from_dlpack(data)
    return data


def _refuse_foreign_byte_order():
    raise ValueError("given numpy array has byte order different from the native byte order. Conversion between "
                     "byte orders is currently not supported.")


def as_tensor(data, dtype=None, device=None):
    """``data`` as a tensor, sharing memory where it can (a tensor of the same dtype is returned itself; a NumPy
    array passes from_numpy's checks first, as PyTorch's: no negative strides, a dtype a tensor has)."""
    resolve(device)
    if isinstance(data, Tensor):
        return data if dtype is None else data.to(dtype)
    if type(data) is numpy.ndarray:
        data = _shareable(data)
    return tensor_from(_array(data, dtype, copy=False))


def _shareable(ndarray):
    """``ndarray`` as a tensor's memory, with PyTorch's checks (from_numpy's and asarray's): a dtype it has, native
    byte order, strides of whole elements and none negative (a PyTorch tensor has no such strides), and a warning
    for a read-only array."""
    _refuse_array_of_no_tensor_dtype(ndarray)
    if not ndarray.dtype.isnative:
        _refuse_foreign_byte_order()
    if any(stride % ndarray.itemsize for stride in ndarray.strides):
        raise ValueError("given numpy array strides not a multiple of the element byte size. Copy the numpy array "
                         "to reallocate the memory.")
    if ndarray.size and any(stride < 0 for stride in ndarray.strides):
        raise ValueError("At least one stride in the given numpy array is negative, and tensors with negative "
                         "strides are not currently supported. (You can probably work around this by making a copy "
                         "of your array  with array.copy().) ")
    if not getattr(ndarray.flags, "writeable", True):
        warn_once("not writable", "The given NumPy array is not writable, and PyTorch does not support "
                  "non-writable tensors. This means writing to this tensor will result in undefined behavior. You may "
                  "want to copy the array to protect its data or make it writable before converting it to a tensor.")
    return xp.asarray(ndarray)


_NUMBER_DTYPES = ("float64", "float32", "float16", "complex64", "complex128", "int64", "int32", "int16", "int8",
                  "uint64", "uint32", "uint16", "uint8", "bool")


def _refuse_array_of_no_tensor_dtype(ndarray):
    """PyTorch's TypeError for an array of objects, strings, dates or long doubles (no tensor dtype holds them: a
    pandas column of mixed values comes as objects), from ``tensor``, ``as_tensor`` and ``from_numpy`` alike."""
    if ndarray.dtype.name not in _NUMBER_DTYPES:
        raise TypeError(f"can't convert np.ndarray of type numpy.{ndarray.dtype.type.__name__}. The only supported "
                        f"types are: {', '.join(_NUMBER_DTYPES[:-1])}, and {_NUMBER_DTYPES[-1]}. (This project "
                        f"cannot make a tensor of {ndarray.dtype} values: convert the array to numbers first, "
                        "e.g. array.astype(numpy.float32).)")


def _array(data, dtype, copy):
    """``data`` as an array (of ``dtype``, or as_array's inference), with PyTorch's refusals of what
    NumPy would read: a string, whatever the dtype (NumPy reads 'abc' as True in a bool tensor), and
    a Python integer past int64's range (NumPy makes uint64) unless a floating or bool dtype is asked
    for. An integer out of an integer dtype's range is cast as PyTorch casts it (``_integers_cast``)."""
    if isinstance(data, (str, bytes)) or dtype is not None and xp.dtype(dtype).kind == "b" and _holds_strings(data):
        as_array(data)  # (raises its TypeError: strings are no numbers)
    if isinstance(data, numpy.ndarray):
        _refuse_array_of_no_tensor_dtype(data)
    if type(data) is list and data and type(data[0]) is numpy.ndarray:  # (PyTorch's advice, once, where it says it)
        warn_once("list of ndarrays", "Creating a tensor from a list of numpy.ndarrays is extremely slow. Please "
                  "consider converting the list to a single numpy.ndarray with numpy.array() before converting to a "
                  "tensor.")
    if _is_sequence(data) and not isinstance(data, (list, tuple, range)):
        try:  # a sequence NumPy cannot read as one (its __getitem__ fails): PyTorch's ValueError
            len(data) and data[0]
        except Exception:
            raise ValueError(f"could not determine the shape of object type '{type(data).__name__}'") from None
    if dtype is None:
        listed = _listed_dtype(data) if isinstance(data, (list, tuple)) else None
        if listed is not None:
            values = _arrays_for_tensors(data)
            try:
                return xp.asarray(values, dtype=listed)
            except ValueError:  # a ragged list: as_array's error names it
                as_array(values)
                raise
        try:
            array = as_array(_copy(data) if copy else data)
        except TypeError:
            if isinstance(data, (list, tuple)) and _holds_strings(data):
                raise _string_in_list(data) from None
            if _python_numbers(data) and _holds(data, int):  # an int past int64's range (NumPy's object array)
                if not _holds(data, float):
                    raise ValueError("Overflow when unpacking long long") from None
                return as_array(_as_floats(data))  # (among floats it is read as one, as PyTorch reads it)
            raise
        if array.dtype == numpy.uint64 and isinstance(data, (int, list, tuple)):
            raise ValueError("Overflow when unpacking long long")
        return array
    try:
        return xp.array(data, dtype=dtype, copy=True) if copy else as_array(data, dtype)
    except OverflowError:  # (NumPy's: an integer out of dtype's range)
        return _integers_cast(data, dtype)
    except ValueError:  # (NumPy's, for strings into numbers: as_array's TypeError)
        values = as_array(data)
        if xp.dtype(dtype).kind in "iu" and values.dtype.kind == "f":  # a NaN into integers: PyTorch's overflow
            raise RuntimeError(f"value cannot be converted to type {xp.dtype(dtype)} without overflow") from None
        raise


_PYTHON_NUMBERS = {int, float, bool, complex}
_HOLDERS = (Tensor, xp.ndarray, numpy.ndarray, numpy.generic)  # what carries a dtype of its own


def _listed_dtype(data):
    """PyTorch's dtype for a (nested) list that holds tensors, arrays or NumPy scalars: the promotion of
    its items' dtypes, a Python bool counting as bool, an int as int64, a float as the default dtype and
    a complex as the default complex dtype (``tensor([R])`` with R a float64 0-d tensor is float64,
    ``tensor([1, h])`` with h float16 is float16). NumPy reads a 0-d tensor through ``float()`` and
    promotes otherwise (a Python float is float64 to it), so it is asked for the values only. None for
    a list of Python numbers alone, which NumPy reads as PyTorch does once as_array has cast its float64
    to the default dtype, and for a list holding anything else (as_array's errors then speak)."""
    python = {bool: numpy.dtype(bool), int: numpy.dtype(numpy.int64), float: backend.get_default_dtype(),
              complex: backend.get_default_complex_dtype()}
    dtypes, found, path = set(), [], set()

    def visit(items):
        kinds = set(map(type, items))
        dtypes.update(numpy.dtype(python[kind]) for kind in kinds & _PYTHON_NUMBERS)
        if kinds <= _PYTHON_NUMBERS:
            return True
        path.add(id(items))  # (the lists being visited: one holding itself would be visited forever)
        for item in items:
            if isinstance(item, (list, tuple)):
                if id(item) in path:
                    raise TypeError("self-referential lists are incompatible")
                if not visit(item):
                    return False
            elif isinstance(item, _HOLDERS):
                dtypes.add(numpy.dtype(item.dtype))
                found.append(True)
            elif type(item) not in _PYTHON_NUMBERS:
                return False
        path.discard(id(items))
        return True

    level = data
    while True:  # level by level, at C speed, while the lists hold lists or Python numbers only
        kinds = set(map(type, level))
        if kinds <= _PYTHON_NUMBERS:
            return None
        if not kinds <= {list, tuple}:
            break
        level = list(itertools.chain.from_iterable(level))
    if not visit(data) or not found:
        return None
    from .ops.promotion import common_dtype  # (here: importing the ops while this module loads is circular)

    return common_dtype(dtypes)


def _arrays_for_tensors(data):
    """A nested list with each tensor in it replaced by its array, in host memory: the array module reads
    the list through NumPy (CuPy refuses to convert its own arrays implicitly there)."""
    if isinstance(data, Tensor):  # (in a list: read as a number, as PyTorch reads it)
        if data._data.size != 1:
            raise ValueError(f"only one element tensors can be converted to Python scalars (a tensor of shape "
                             f"{tuple(data.shape)} in the list: join tensors with autograd.stack)")
        if data.requires_grad:
            warnings.warn("Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior.\n"
                          "Consider using tensor.detach() first.", UserWarning, stacklevel=program_stacklevel())
        data = data._data.reshape(())  # (a number, whatever its one element's shape: [ones(1)] is of shape (1,))
    if isinstance(data, (list, tuple)):
        return [_arrays_for_tensors(item) for item in data]
    return to_numpy(data) if isinstance(data, xp.ndarray) else data


def _is_sequence(data):
    """A Python sequence (not an array, a tensor or a number): something with a length and items."""
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, _HOLDERS + (str, bytes,
                                                                                                          dict))


def _holds_strings(data):
    if isinstance(data, (list, tuple)):
        return any(_holds_strings(item) for item in data)
    return isinstance(data, (str, bytes))


def _string_in_list(data):
    """PyTorch's error for a string in a list (labels read from a CSV, say). It reads the shape down the first
    elements, where a str is one more sequence: "too many dimensions 'str'" (ValueError); a string met later,
    where a number belongs, is a type it cannot store (TypeError, naming str or bytes)."""
    first = data
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    if isinstance(first, str):
        return ValueError("too many dimensions 'str'")
    kind = next(type(item).__name__ for item in _leaves(data) if isinstance(item, (str, bytes)))
    return TypeError(f"new(): invalid data type '{kind}'")


def _leaves(data):
    if isinstance(data, (list, tuple)):
        for item in data:
            yield from _leaves(item)
    else:
        yield data


def _python_numbers(data):
    """Whether ``data`` is a Python number or a (nested) list or tuple of them only."""
    if isinstance(data, (list, tuple)):
        return all(_python_numbers(item) for item in data)
    return type(data) in _PYTHON_NUMBERS


def _holds(data, kind):
    """Whether a Python number of exactly type ``kind`` is in the (nested) list ``data``, or is ``data``."""
    if isinstance(data, (list, tuple)):
        return any(_holds(item, kind) for item in data)
    return type(data) is kind


def _as_floats(data):
    if isinstance(data, (list, tuple)):
        return [_as_floats(item) for item in data]
    return float(data) if type(data) is int else data


def _integers_cast(data, dtype):
    """Python integers out of an integer ``dtype``'s range, as PyTorch casts them: an unsigned dtype
    takes negative values down to -max, wrapped (tensor([-1], dtype=uint8) is 255); others refuse,
    and an integer past int64's range is refused whatever the integer dtype."""
    dtype = xp.dtype(dtype)
    values = numpy.asarray(data)
    if values.dtype.kind in "uO":
        raise ValueError("Overflow when unpacking long long")
    if dtype.kind == "u" and values.dtype.kind == "i" and values.min() >= -numpy.iinfo(dtype).max \
            and values.max() <= numpy.iinfo(dtype).max:
        return xp.asarray(values.astype(dtype))
    raise RuntimeError(f"value cannot be converted to type {dtype} without overflow")


def _copy(data):
    return data.copy() if isinstance(data, xp.ndarray) else data


def zeros(*sizes, out=None, size=None, dtype=None, layout=None, device=None, requires_grad=False):
    if _is_sparse_coo(layout):
        _refuse_sparse_into(out)
        return _empty_sparse(_shape(sizes, size), dtype=dtype, requires_grad=requires_grad)
    dtype = out_dtype(dtype, out)
    return written(_made(xp.zeros(_shape(sizes, size), dtype=_float(dtype)), device, requires_grad), out)


def ones(*sizes, out=None, size=None, dtype=None, layout=None, device=None, requires_grad=False):
    dtype = out_dtype(dtype, out)
    return written(_made(xp.ones(_shape(sizes, size), dtype=_float(dtype)), device, requires_grad), out)


def empty(*sizes, out=None, size=None, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False,
          memory_format=None):
    if _is_sparse_coo(layout):  # (a sparse tensor has no uninitialised memory to show: empty is zeros)
        _refuse_sparse_into(out)
        return _empty_sparse(_shape(sizes, size), dtype=dtype, requires_grad=requires_grad)
    dtype = out_dtype(dtype, out)
    return written(_made(empty_in_format(_shape(sizes, size), _float(dtype), memory_format), device, requires_grad),
                   out)


def empty_in_format(shape, dtype, memory_format):
    """An uninitialised array of ``shape``, laid out as ``memory_format`` asks (channels_last: its dims in memory
    N, H, W, C, with that format's own strides, a size-1 dim's too), row-major otherwise."""
    order = getattr(memory_format, "order", None)
    # (NumPy's ValueError there: "array is too big"; a size may be a 0-d tensor or a NumPy integer: its int)
    if math.prod(map(operator.index, shape)) * xp.dtype(dtype).itemsize >= 2**63:
        raise RuntimeError(f"Storage size calculation overflowed with sizes={list(shape)}")
    if order is None:
        return xp.empty(shape, dtype=dtype)
    if len(shape) != len(order):
        raise RuntimeError(f"required rank {len(order)} tensor to use {memory_format.name} format")
    return xp.empty(tuple(shape[dim] for dim in order), dtype=dtype).transpose(tuple(numpy.argsort(order)))


def full(size, fill_value, *, out=None, dtype=None, layout=None, device=None, requires_grad=False):
    """A tensor of ``size`` filled with ``fill_value``: of its kind without dtype= (a bool fills bool, an int
    int64, a float the default dtype, a complex the default complex dtype; a 0-d tensor counts as its number)."""
    fill_value = _fill_number(fill_value, "full")
    dtype = out_dtype(dtype, out)
    if dtype is None:
        dtype = xp.asarray(fill_value).dtype if isinstance(fill_value, (bool, int)) else \
            backend.get_default_complex_dtype() if isinstance(fill_value, complex) else _float(None)
    else:
        fill_value = _fitted(fill_value, dtype)
    return written(_made(xp.full(_shape(tuple(size)), fill_value, dtype=dtype), device, requires_grad), out)


def _fill_number(fill_value, name):
    """``fill_value`` as the Python number PyTorch reads as a Scalar: a 0-d tensor's (its ``item()``; an array
    module other than NumPy takes no tensor), a NumPy scalar's (numpy.int64(2) fills int64, as PyTorch reads it)."""
    if isinstance(fill_value, Tensor):
        if fill_value.ndim:
            raise TypeError(f"{name}(): argument 'fill_value' (position 2) must be Number, not Tensor")
        fill_value = fill_value.item()
    return python_number(fill_value)


def _fitted(fill_value, dtype):
    """``fill_value`` for a tensor of ``dtype``: a number the dtype cannot hold is refused, as by fill_ (NaN into
    int32 was INT_MIN), and a negative int wraps into an unsigned dtype."""
    if type(fill_value) in (int, float, complex):
        dtype = xp.dtype(dtype)
        _refuse_overflow(fill_value, dtype)
        if type(fill_value) is int and dtype.kind == "u" and fill_value < 0:
            return _integers_cast(fill_value, dtype)
    return fill_value


def device_of(input, device):
    """The device a ``*_like`` or ``new_*`` factory makes on: the one given, else input's own where that is the meta
    device, as PyTorch's (the CPU and the GPU are the device in use anyway: see device.py)."""
    return META if device is None and type(input._data) is MetaArray else device


def _refuse_sparse_into(out):
    """PyTorch's refusal of a sparse layout= with a (strided) out= tensor."""
    if out is not None:
        raise RuntimeError("layout Sparse does not match layout of out parameter (Strided)")


def _is_sparse_coo(layout):
    from .constants import sparse_coo  # (constants imports this module)

    return layout is sparse_coo


def _empty_sparse(size, sparse_dim=None, dtype=None, requires_grad=False):
    from .sparse.coo import empty_sparse

    return empty_sparse(size, sparse_dim, dtype=dtype, requires_grad=requires_grad)


def zeros_like(input, *, dtype=None, layout=None, device=None, requires_grad=False, memory_format=None,  # noqa: A002
               pin_memory=False):
    """Zeros of input's shape; a sparse input (or ``layout=sparse_coo``) gives the sparse tensor with no entries,
    with input's sparse dims."""
    if _is_sparse_coo(layout) or (layout is None and is_sparse(input)):
        return _empty_sparse(input.shape, input.sparse_dim() if input.is_sparse else None, dtype or input.dtype,
                             requires_grad)
    return _filled_like(input, 0, dtype, device, requires_grad, memory_format)


def ones_like(input, *, dtype=None, layout=None, device=None, requires_grad=False, memory_format=None,  # noqa: A002
              pin_memory=False):
    return _filled_like(input, 1, dtype, device, requires_grad, memory_format)


def _filled_like(input, value, dtype, device, requires_grad, memory_format):
    """PyTorch's empty_like(input, memory_format=...).fill_(value): laid out as empty_like lays it out."""
    made = empty_like(input, dtype=dtype, device=device, requires_grad=requires_grad, memory_format=memory_format)
    if type(made._data) is not MetaArray:
        made._data.fill(value)
    return made


def empty_like(input, *, dtype=None, layout=None, device=None, requires_grad=False, memory_format=None,  # noqa: A002
               pin_memory=False):
    """A new tensor of input's shape, laid out as ``memory_format`` asks (channels_last: N, H, W, C, with that
    format's own strides; contiguous_format: row-major), else, where input is a view or a channels-last tensor, as
    PyTorch's preserve_format lays it out, which rand_like's draws follow: with input's strides where it fills its
    memory densely (a transpose, a permutation), or dense in the order of its strides where it does not (a slice of
    a transpose: infer_dense_strides); row-major otherwise (memory_order.py). A sparse input (or
    ``layout=sparse_coo``) gives the sparse tensor with no entries."""
    if _is_sparse_coo(layout) or (layout is None and is_sparse(input)):
        return zeros_like(input, dtype=dtype, layout=layout, requires_grad=requires_grad)
    dtype = dtype or input.dtype
    array, device = input._data, device_of(input, device)
    if getattr(memory_format, "order", None) is not None:
        return _made_by(lambda: empty_in_format(input.shape, dtype, memory_format), input.shape, dtype, device,
                        requires_grad)
    preserve = memory_format is None or getattr(memory_format, "name", None) == "preserve_format"
    if preserve and type(array) is not MetaArray and fills_in_memory_order(input):
        if is_dense(array):
            return made_like_a_view(_made(xp.empty_like(array, dtype=dtype), device, requires_grad))
        order = dense_order(array.shape, array.strides)
        laid_out = xp.empty(tuple(array.shape[dim] for dim in order), dtype=dtype).transpose(numpy.argsort(order))
        return made_like_a_view(_made(laid_out, device, requires_grad))
    return _made_by(lambda: xp.empty(input.shape, dtype=dtype), input.shape, dtype, device, requires_grad)


def full_like(input, fill_value, *, dtype=None, layout=None, device=None, requires_grad=False,  # noqa: A002
              memory_format=None, pin_memory=False):
    dtype = dtype or input.dtype
    value = _fitted(_fill_number(fill_value, "full_like"), dtype)
    return _filled_like(input, value, dtype, device, requires_grad, memory_format)


def rand(*sizes, out=None, size=None, generator=None, dtype=None, layout=None, device=None, requires_grad=False,
         pin_memory=False):
    """Uniform on [0, 1) (for a complex dtype, the real and the imaginary parts each)."""
    dtype = xp.dtype(_float(_floating_only(out_dtype(dtype, out), "check_uniform_bounds")))
    shape = _shape(sizes, size)

    def values():
        stream = _rng(generator)
        return draws(lambda shape, part: stream.random(shape, dtype=part), shape, dtype)

    return written(_made_by(values, shape, dtype, device, requires_grad), out)


def randn(*sizes, out=None, size=None, generator=None, dtype=None, layout=None, device=None, requires_grad=False,
          pin_memory=False):
    """Standard normal (for a complex dtype, E|z|² = 1: each part has variance 1/2, as PyTorch's)."""
    dtype = xp.dtype(_float(_floating_only(out_dtype(dtype, out), "normal_kernel_cpu")))
    shape = _shape(sizes, size)

    def values():
        stream = _rng(generator)
        # (a complex dtype's parts: N(0, 1/√2), the scale applied by the normal draw itself, as PyTorch's
        # normal_ applies std / √2: in float64 before rounding, where fewer than 16 numbers are drawn)
        scale = 1 / math.sqrt(2) if dtype.kind == "c" else 1.0
        return draws(lambda shape, part: stream.normal(0.0, scale, shape, dtype=part), shape, dtype)

    return written(_made_by(values, shape, dtype, device, requires_grad), out)


def randint(*args, out=None, size=None, generator=None, dtype=None, layout=None, device=None,
            requires_grad=False, low=None, high=None):
    """Integers in [low, high): ``randint(high, size)`` or ``randint(low, high, size)``, int64."""
    args = list(args)
    if size is None and args and not isinstance(args[-1], int):
        size = args.pop()
    if len(args) == 2:
        low, high = args
    elif len(args) == 1:
        low, high = (args[0], high) if high is not None else (low or 0, args[0])
    elif args:
        raise TypeError(f"randint(low=0, high, size): too many positional arguments {args}")
    low = 0 if low is None else low
    if dtype is not None and xp.dtype(dtype).kind == "c":
        raise RuntimeError("check_random_bounds handles only integral, floating-point and boolean types")
    if high is None or size is None:
        raise TypeError("randint() needs high and size: randint(high, size) or randint(low, high, size)")
    if low >= high:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    if dtype is not None:
        low, high = random_bounds_checked(low, high, xp.dtype(dtype))
    return written(_made_by(lambda: _rng(generator).integers(low, high, size=tuple(size)), tuple(size),
                           xp.dtype(out_dtype(dtype, out) or backend.int64), device, requires_grad), out)


def randperm(n, *, out=None, generator=None, dtype=None, layout=None, device=None, requires_grad=False,
             pin_memory=False):
    """A random permutation of 0..n-1 (in a dtype that holds every one of them exactly)."""
    from .ops.conversion import int_argument  # (here: importing the ops while this module loads is circular)

    n = int_argument(n, "randperm", "n", 1)  # (an integer tensor of one element too: random_split's summed lengths)
    if n < 0:
        raise RuntimeError(f"Trying to create tensor with negative dimension {n}: [{n}]")
    dtype = xp.dtype(out_dtype(dtype, out) or backend.int64)
    largest = numpy.iinfo(dtype).max if dtype.kind in "iu" else _LARGEST_EXACT_INTEGER.get(dtype.name, math.inf)
    if n - 1 > largest:
        raise RuntimeError(f"n must be at most {largest + 1} for a randperm in {dtype}, got {n}")
    return written(_made_by(lambda: _rng(generator).permutation(n), (n,), dtype, device, requires_grad), out)


def rand_like(input, *, dtype=None, layout=None, device=None, requires_grad=False, memory_format=None,  # noqa: A002
              generator=None):
    """PyTorch's empty_like(input).uniform_(): drawn through input's layout (a permuted input's draws go down
    its memory)."""
    return empty_like(input, dtype=dtype, device=device).uniform_(generator=generator).requires_grad_(requires_grad)


def randn_like(input, *, dtype=None, layout=None, device=None, requires_grad=False, memory_format=None,  # noqa: A002
               generator=None):
    """PyTorch's empty_like(input).normal_(), as rand_like."""
    return empty_like(input, dtype=dtype, device=device).normal_(generator=generator).requires_grad_(requires_grad)


def randint_like(input, low=0, high=None, *, dtype=None, layout=None, device=None, requires_grad=False,  # noqa: A002
                 memory_format=None, generator=None):
    """``randint_like(x, high)`` or ``randint_like(x, low, high)``, in x's dtype."""
    if high is None:
        low, high = 0, low
    # (PyTorch's is empty_like(input).random_(low, high): drawn through the input's memory order, as rand_like)
    drawn = empty_like(input, dtype=dtype, device=device).random_(low, high, generator=generator)
    return drawn.requires_grad_(requires_grad) if requires_grad else drawn


def eye(n, m=None, *, out=None, dtype=None, layout=None, device=None, requires_grad=False):
    for name, size in (("n", n), ("m", m)):
        if size is not None and size < 0:
            raise RuntimeError(f"{name} must be greater or equal to 0, got {size}")
    dtype = out_dtype(dtype, out)
    return written(_made(xp.eye(n, m, dtype=_float(dtype)), device, requires_grad), out)
