"""Making tensors: ``tensor``, ``zeros``, ``ones``, ``full``, ``rand``, ``randn``, ``randint``, ``eye``, ...
(ranges of points, ``arange``, ``linspace`` and ``logspace``, are ranges.py's)

Floating factories use the default dtype (float32) unless ``dtype`` says
otherwise; random ones draw from the default generator (``manual_seed``) or
the ``generator=`` given. Every factory takes PyTorch's keywords: ``device``
(checked: it must be the device chainrule serves, see ``autograd.device``),
``requires_grad``, and the accepted-and-ignored ``layout``, ``pin_memory``,
``memory_format``.
"""

import math
import operator
import warnings

import numpy

from . import backend
from .backend import dense_order, is_dense, xp
from .device import META, resolve
from .graph import program_stacklevel
from .memory_order import fills_in_memory_order, made_like_a_view
from .meta import MetaArray, meta_array
from .operands import is_no_number, python_number
from .random import _LARGEST_EXACT_INTEGER, draws, random_bounds_checked
from .random import generator as _rng
from .reading_data import integers_cast, read_array, refuse_foreign_byte_order, shareable
from .size import refuse_negative_sizes, sizes_argument
from .sparse_layout import is_sparse
from .tensor import Tensor, tensor_from
from .write_door import _refuse_overflow


def _shape(sizes, size=None, call=None):
    """Accept zeros(2, 3), zeros((2, 3)) and zeros(size=(2, 3)), as PyTorch does. Named by its ``call``, a factory
    whose size is required refuses none at all (zeros(), zeros(*()) of a 0-d shape): PyTorch's TypeError; a 0-d
    tensor is asked for as zeros(())."""
    if call is not None and not sizes and size is None:
        raise TypeError(f'{call}() missing 1 required positional arguments: "size"')
    if call is not None and sizes and sizes[0].__class__ in (Tensor, numpy.ndarray) and len(sizes) == 1 and \
            math.prod(sizes[0].shape) > 1:  # (checked by class, not isinstance: no call for zeros(2, 3))
        # (a tensor of several sizes is no size to PyTorch's factories, where view and reshape take one: one of a
        # single element is read as its integer)
        kind = "Tensor" if isinstance(sizes[0], Tensor) else "numpy.ndarray"
        raise TypeError(f"{call}(): argument 'size' (position 1) must be tuple of ints, not {kind}")
    if size is not None:
        if sizes:
            raise TypeError(f"the shape was given both positionally {sizes} and as size={size}")
        sizes = (size,)
    shape = sizes_argument(sizes)
    refuse_negative_sizes(shape)
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
        refuse_foreign_byte_order()
    return _made(read_array(data, dtype, copy=True), device, requires_grad)


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


def as_tensor(data, dtype=None, device=None):
    """``data`` as a tensor, sharing memory where it can (a tensor of the same dtype is returned itself; a NumPy
    array passes from_numpy's checks first, as PyTorch's: no negative strides, a dtype a tensor has)."""
    resolve(device)
    if isinstance(data, Tensor):
        return data if dtype is None else data.to(dtype)
    if type(data) is numpy.ndarray:
        data = shareable(data)
    return tensor_from(read_array(data, dtype, copy=False))


def zeros(*sizes, out=None, size=None, dtype=None, layout=None, device=None, requires_grad=False):
    if _is_sparse_coo(layout):
        _refuse_sparse_into(out)
        return _empty_sparse(_shape(sizes, size, "zeros"), dtype=dtype, requires_grad=requires_grad)
    dtype = out_dtype(dtype, out)
    return written(_made(xp.zeros(_shape(sizes, size, "zeros"), dtype=_float(dtype)), device, requires_grad), out)


def ones(*sizes, out=None, size=None, dtype=None, layout=None, device=None, requires_grad=False):
    dtype = out_dtype(dtype, out)
    return written(_made(xp.ones(_shape(sizes, size, "ones"), dtype=_float(dtype)), device, requires_grad), out)


def empty(*sizes, out=None, size=None, dtype=None, layout=None, device=None, requires_grad=False, pin_memory=False,
          memory_format=None):
    if _is_sparse_coo(layout):  # (a sparse tensor has no uninitialised memory to show: empty is zeros)
        _refuse_sparse_into(out)
        return _empty_sparse(_shape(sizes, size, "empty"), dtype=dtype, requires_grad=requires_grad)
    dtype = out_dtype(dtype, out)
    shape = _shape(sizes, size, "empty")
    return written(_made(empty_in_format(shape, _float(dtype), memory_format), device, requires_grad), out)


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
    if dtype is None:  # (an int past int64's range is refused as PyTorch refuses it, not made uint64 or object)
        dtype = xp.dtype(bool) if isinstance(fill_value, bool) else backend.int64 if isinstance(fill_value, int) else \
            backend.get_default_complex_dtype() if isinstance(fill_value, complex) else _float(None)
    fill_value = _fitted(fill_value, dtype)
    return written(_made(xp.full(_shape(tuple(size)), fill_value, dtype=dtype), device, requires_grad), out)


def _fill_number(fill_value, name):
    """``fill_value`` as the Python number PyTorch reads as a Scalar: a 0-d tensor's (its ``item()``; an array
    module other than NumPy takes no tensor), a NumPy scalar's (numpy.int64(2) fills int64, as PyTorch reads it)."""
    if isinstance(fill_value, Tensor):
        if fill_value.ndim:
            raise TypeError(f"{name}(): argument 'fill_value' (position 2) must be Number, not Tensor")
        fill_value = fill_value.item()
    if is_no_number(fill_value):
        raise TypeError(f"{name}(): argument 'fill_value' (position 2) must be Number, not {type(fill_value).__name__}")
    return python_number(fill_value)


def _fitted(fill_value, dtype):
    """``fill_value`` for a tensor of ``dtype``: a number the dtype cannot hold is refused, as by fill_ (NaN into
    int32 was INT_MIN), and a negative int wraps into an unsigned dtype."""
    if type(fill_value) in (int, float, complex):
        dtype = xp.dtype(dtype)
        _refuse_overflow(fill_value, dtype)
        if type(fill_value) is int and dtype.kind == "u" and fill_value < 0:
            return integers_cast(fill_value, dtype)
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
    shape = _shape(sizes, size, "rand")

    def values():
        stream = _rng(generator)
        return draws(lambda shape, part: stream.random(shape, dtype=part), shape, dtype)

    return written(_made_by(values, shape, dtype, device, requires_grad), out)


def randn(*sizes, out=None, size=None, generator=None, dtype=None, layout=None, device=None, requires_grad=False,
          pin_memory=False):
    """Standard normal (for a complex dtype, E|z|² = 1: each part has variance 1/2, as PyTorch's)."""
    dtype = xp.dtype(_float(_floating_only(out_dtype(dtype, out), "normal_kernel_cpu")))
    shape = _shape(sizes, size, "randn")

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
    for name, bound in (("low", low), ("high", high)):
        if isinstance(bound, (bool, float, numpy.bool_, numpy.floating)):  # (truncated, 2.5 would silently be 2)
            raise TypeError(f"randint(): argument '{name}' must be int, not {type(bound).__name__}")
    if dtype is not None and xp.dtype(dtype).kind == "c":
        raise RuntimeError("check_random_bounds handles only integral, floating-point and boolean types")
    if high is None or size is None:
        raise TypeError("randint() needs high and size: randint(high, size) or randint(low, high, size)")
    if low >= high:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    if dtype is not None:
        low, high = random_bounds_checked(low, high, xp.dtype(dtype))
    size = _shape((), size)  # (a negative size refused in PyTorch's words, not NumPy's ValueError)
    return written(_made_by(lambda: _rng(generator).integers(low, high, size=size), size,
                           xp.dtype(out_dtype(dtype, out) or backend.int64), device, requires_grad), out)


def randperm(n, *, out=None, generator=None, dtype=None, layout=None, device=None, requires_grad=False,
             pin_memory=False):
    """A random permutation of 0..n-1 (in a dtype that holds every one of them exactly)."""
    from .ops.axes import int_argument  # (here: importing the ops while this module loads is circular)
    from .ops.conversion import type_name

    n = int_argument(n, "randperm", "n", 1)  # (an integer tensor of one element too: random_split's summed lengths)
    refuse_negative_sizes((n,))
    dtype = xp.dtype(out_dtype(dtype, out) or backend.int64)
    if dtype.kind in "bc":  # (PyTorch's kernel has no bool or complex loop: a bool "permutation" is none)
        raise NotImplementedError(f"\"randperm\" not implemented for '{type_name(dtype)}'")
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
