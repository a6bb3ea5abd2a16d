"""The one place that names the array module.

Every op computes with ``xp``. It is NumPy unless the environment variable
``CHAINRULE_ARRAY_MODULE`` names another module with NumPy's interface
(``cupy``, say) before ``autograd`` is imported; no op needs editing for that.
"""

import contextvars
import importlib
import os
import warnings

import numpy

from .dtype_objects import torch_dtype

xp = importlib.import_module(os.environ.get("CHAINRULE_ARRAY_MODULE", "numpy"))

# Silencing floating-point warnings where an op handles inf and NaN itself: NumPy's block. CuPy
# has none (a GPU kernel warns of nothing), so there NumPy's block is kept and changes nothing.
errstate = getattr(xp, "errstate", numpy.errstate)

# Everywhere else NumPy warns where a float op meets 0/0, log 0 or an overflow ("RuntimeWarning: divide
# by zero encountered in log"), and PyTorch gives the same inf and NaN silently. A filter ignores the
# warnings raised inside chainrule's own modules (a user's NumPy code keeps its warnings); it costs
# nothing until a warning is raised. Where a warnings filter of the user's (``simplefilter("error")``,
# ``pytest -W error``) or ``np.seterr`` turns the warning into an error, an op's forward and a node's
# backward are computed again without it (primitive.py, engine.py); an in-place update, which may have
# written before NumPy raised, runs under NumPy's error mode "ignore" (write_door.py).
#
# NumPy 2 keeps that mode in a context variable: one set and one reset, cheaper than an ``errstate``
# block (but not free: a set makes NumPy look its mode up afresh, so ops and passes do without it).
try:
    from numpy._core._ufunc_config import _extobj_contextvar as float_error_mode
    with numpy.errstate(all="ignore"):
        QUIET = float_error_mode.get()
except ImportError:  # NumPy 1: the mode is per thread, not a context variable. A variable no one reads
    # keeps the write door's code the same; there the filter does the work.
    float_error_mode, QUIET = contextvars.ContextVar("float_error_mode_unused"), None

warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"(autograd|nn|optim)(\.|$)")

float32 = numpy.dtype("float32")
float64 = numpy.dtype("float64")
float16 = numpy.dtype("float16")
int64 = numpy.dtype("int64")
int32 = numpy.dtype("int32")
bool_ = numpy.dtype("bool")


class MissingDtype:
    """A dtype PyTorch has and NumPy does not: ``bfloat16``. It can be named, compared and hashed, so a program
    that only names it runs (``weight.dtype in (torch.float16, torch.bfloat16)``, a table of dtypes from which
    it picks float32); NumPy asks for its ``dtype`` to make an array of it, and that refuses, with the reason,
    wherever a tensor of it would be made (a factory, ``to``, ``astype``)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"autograd.{self.name}"

    @property
    def dtype(self):
        raise TypeError(f"{self.name} is not built here: NumPy has no {self.name} type. Use float16 or float32 "
                        f"(on a CPU, {self.name} saves memory but not time)")

    is_floating_point, is_complex, is_signed, itemsize = True, False, True, 2  # (autograd.dtype's properties)


bfloat16 = MissingDtype("bfloat16")

_default_dtype = float32


def set_default_dtype(dtype):
    """Set the floating dtype that Python floats and lists become (float32 to start)."""
    global _default_dtype
    dtype = numpy.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError("only floating-point types are supported as the default type")  # (PyTorch's words)
    _default_dtype = dtype


def get_default_dtype():
    """The floating dtype that Python floats and lists become (its dtype object: dtype_objects.py)."""
    return torch_dtype(_default_dtype)


def complex_counterpart(dtype):
    """The complex dtype of a floating dtype's precision (float64: complex128; float32 and float16:
    complex64, NumPy having no complex32)."""
    return numpy.dtype(numpy.complex128) if numpy.dtype(dtype) == float64 else numpy.dtype(numpy.complex64)


def get_default_complex_dtype():
    """The complex dtype that Python complex numbers become: the default dtype's counterpart."""
    return complex_counterpart(_default_dtype)


_constants = {}


def constant(value, dtype):
    """The number ``value`` as a read-only 0-d array of ``dtype``, made once per pair.

    NumPy 2 converts a Python number again at every call that mixes it with arrays,
    which costs about as much as the arithmetic on a 16×16 array; a 0-d array of the
    array's own dtype is used as it is. For the fixed constants of hot ops (0, 1), not for
    user values, which would grow the cache without bound."""
    key = (value, dtype)
    array = _constants.get(key)
    if array is None:
        array = _constants[key] = xp.asarray(value, dtype=dtype)
        array.flags.writeable = False
    return array


def accumulate(ufunc, array, axis):
    """``ufunc.accumulate(array, axis=axis)``: the running ufunc along an axis (running maximum,
    log-sum-exp). CuPy has it for add and multiply only; for the others, a scan of ⌈log₂ n⌉
    passes (Hillis and Steele): after the pass with shift s, each element holds the ufunc of the
    2s elements ending at it. Right for any associative ufunc."""
    try:
        return ufunc.accumulate(array, axis=axis)
    except NotImplementedError:
        pass
    result = xp.array(array, copy=True)
    along = xp.moveaxis(result, axis, 0)  # (a view: writes reach result)
    shift = 1
    while shift < along.shape[0]:
        along[shift:] = ufunc(along[shift:], along[:-shift])  # (a new array: the pass reads the last one)
        shift *= 2
    return result


_SIGNED = {1: numpy.int8, 2: numpy.int16, 4: numpy.int32, 8: numpy.int64}


def select(condition, x, y, over_x=False):
    """``where(condition, x, y)`` for x and y of one dtype. On large NumPy arrays it works on their bits:
    y ^ ((x ^ y) & m), with m all ones where the condition holds. That is the same elements, NaN payloads and
    -0.0 included, without a branch per element. NumPy's ``where`` branches, and on a random mask (a ReLU's, an
    ELU's, a loss's) mispredicts: 0.47 ms for 131,072 float32 values against 0.05 ms here (NumPy's 0.09 ms on a mask
    mostly of one value). The mask is the condition's bytes negated (-1 where it holds), which NumPy widens with
    their sign as it goes: one array of the result's size is made, as ``where`` makes one (a second cost more in
    fresh pages than all the arithmetic); none with ``over_x``, where x is an array of the result's shape, row-major,
    that the caller made and no longer needs: the result is then written over it (and returned)."""
    signed = _SIGNED.get(x.dtype.itemsize)
    if xp is numpy and signed is not None and x.dtype == y.dtype and max(condition.size, x.size, y.size) >= 8192:
        mask = numpy.negative(condition.view(numpy.int8))  # (True: 1 -> -1, all ones)
        shape = numpy.broadcast_shapes(condition.shape, x.shape, y.shape)
        chosen = x.view(signed) if over_x and x.shape == shape and x.flags.c_contiguous else numpy.empty(shape, signed)
        numpy.bitwise_xor(x.view(signed), y.view(signed), out=chosen)
        chosen &= mask
        chosen ^= y.view(signed)
        return chosen.view(x.dtype)
    return xp.where(condition, x, y)


def ufunc_at(name, array, positions, values):
    """``numpy.<name>.at(array, positions, values)``: ``array`` updated in place, unbuffered (a position
    named twice is updated twice: scatter-add, scatter-max). CuPy has ``add``/``maximum``/``minimum.at``
    for some dtypes only (no bool, complex, int8/16 or uint8, no ``multiply.at``): there the update runs on
    a copy in host memory, which is copied back. Right for every dtype; slow only where CuPy has no kernel."""
    if xp is numpy:
        _numpy_at(getattr(numpy, name), array, positions, values)
        return
    if getattr(values, "dtype", array.dtype) != array.dtype:
        values = values.astype(array.dtype)  # (CuPy's .at reads bool values as if they had the array's dtype)
    # CuPy's maximum/minimum.at on floats are wrong for PyTorch's amax/amin: on an H200 with CuPy 14.2 a NaN
    # did not propagate (float16 and float32: the largest number won), and on an H100 float64 values seemed
    # rounded to float32 (gradcheck's finite differences of 1.0133 = 17 float32 steps over 2e-6): floats go
    # through host memory for those two
    if name not in ("maximum", "minimum") or array.dtype.kind not in "fc":
        try:
            getattr(xp, name).at(array, positions, values)
            return
        except (NotImplementedError, TypeError):
            pass  # no kernel for this ufunc or dtype
    host = array.get()
    getattr(numpy, name).at(host, _host(positions), _host(values))
    array[...] = xp.asarray(host)


def _numpy_at(ufunc, array, positions, values):
    """``ufunc.at(array, positions, values)`` on a row-major array, through NumPy's one-dimensional ``ufunc.at``
    over the flattened elements where that is cheap: the same updates in the same order (the order of the
    elements ``array[positions]`` names), which NumPy runs five to twenty times quicker on that path. An
    embedding's backward of 8,192 rows of 128 took 6.6 ms, 1.1 ms now; a bilinear upsampling's backward (a
    gather's along a dim), 12 ms a gather, about 1 ms now.

    - One 1-D integer index picking whole rows (an embedding's gradient, ``index_add_``, ``x.index_put_((i,), v,
      accumulate=True)``): in rounds where the rows are wide (128 elements or more) and few repeat often, the k-th
      time each row is named in the k-th round, whose rows are distinct, so that one buffered ``ufunc`` over them
      updates each row once (``index_add`` of 2,048 rows of 512 float32 into 4,096: 7.7 -> 2 ms); else each row's
      elements numbered directly, at a cost proportional to the values.
    - Any other index (slices beside an index array: a gather's along a dim) where the array is not much larger
      than the values: every element numbered once, and the numbers indexed as the array would be."""
    if type(positions) is tuple and len(positions) == 1 and type(positions[0]) is numpy.ndarray:
        positions = positions[0]  # (x[(i,)] is x[i]: index_add along dim 0 names its rows so)
    count = numpy.size(values)
    if count == 1 and type(positions) is numpy.ndarray:  # (a number added at each position: counting)
        count = positions.size
    if array.flags.c_contiguous and array.ndim and count >= 64 and not (
            array.ndim == 1 and type(positions) is numpy.ndarray):  # (NumPy's own 1-D path already)
        rows = array.shape[0]
        lowest = (positions.min() if type(positions) is numpy.ndarray and positions.ndim == 1
                  and positions.dtype.kind in "iu" and positions.size and rows else None)
        if array.ndim > 1 and lowest is not None and -rows <= lowest and positions.max() < rows:
            width = array[0].size
            starts = positions.astype(numpy.intp, copy=False)
            if lowest < 0:
                starts = starts % rows  # (negative indices count from the end)
            values = numpy.broadcast_to(values, (positions.size, *array.shape[1:]))
            # (rows narrower than 128 elements: numbering the elements is quicker than rounds, whose calls per round
            # cost more than such rows' updates: 8,192 updates of rows of 64 float32, 1.9 ms in rounds, 1.3 ms so;
            # of 16, 1.2 and 0.3 ms; of 128, 3.2 and 4.8 ms)
            if width >= 128 and values.dtype == array.dtype and _update_in_rounds(ufunc, array, starts, values):
                return
            elements = (starts[:, None] * width + numpy.arange(width, dtype=numpy.intp)).reshape(-1)
            ufunc.at(array.reshape(-1), elements, values.reshape(-1))
            return
        if array.size <= 4 * count:
            try:
                elements = numpy.arange(array.size, dtype=numpy.intp).reshape(array.shape)[positions]
            except IndexError:
                elements = None  # (ufunc.at below raises it, in its words)
            if elements is not None:
                values = numpy.broadcast_to(values, elements.shape)
                ufunc.at(array.reshape(-1), elements.reshape(-1), values.reshape(-1))
                return
    ufunc.at(array, positions, values)


def _update_in_rounds(ufunc, array, rows, values):
    """``ufunc.at(array, rows, values)`` for distinct rows at a time, if that takes few rounds (a buffered update per
    round: each row's k-th value is applied in round k, so every element sees its updates in their order, and
    the values are those of ``ufunc.at`` bit for bit); False, with nothing done, where rows repeat too often."""
    order = numpy.argsort(rows, kind="stable")  # each row's positions together, in their order
    ordered = rows[order]
    first = numpy.empty(ordered.size, dtype=bool)
    first[:1] = True
    numpy.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = numpy.flatnonzero(first)
    ranks = numpy.arange(ordered.size) - numpy.repeat(starts, numpy.diff(numpy.append(starts, ordered.size)))
    rounds = int(ranks.max()) + 1 if ranks.size else 0
    if rounds * 4096 > values.size:  # (a round costs some microseconds of calls: many rounds of few rows cost more
        return False  # than numbering the elements)
    if rounds == 1:
        array[rows] = ufunc(array[rows], values)
        return True
    by_round = order[numpy.argsort(ranks, kind="stable")]  # positions of round 0, then of round 1, ...
    ends = numpy.cumsum(numpy.bincount(ranks))
    for start, end in zip((0, *ends[:-1]), ends):
        taken = by_round[start:end]
        chosen = rows[taken]
        array[chosen] = ufunc(array[chosen], values[taken])
    return True


def ufunc_reduce(name, array, axis, keepdims=False):
    """``numpy.<name>.reduce(array, axis=axis, keepdims=keepdims)``; where CuPy has no such reduction
    (``bitwise_xor``'s), on a copy in host memory."""
    try:
        return getattr(xp, name).reduce(array, axis=axis, keepdims=keepdims)
    except NotImplementedError:
        if xp is numpy:
            raise
    return xp.asarray(getattr(numpy, name).reduce(array.get(), axis=axis, keepdims=keepdims))


def _host(value):
    """A value for a NumPy call: arrays of the array module (in a tuple of indices too) in host memory."""
    if isinstance(value, tuple):
        return tuple(_host(item) for item in value)
    return to_numpy(value) if isinstance(value, xp.ndarray) else value


def strided_view(array, shape, strides, dtype=None, writeable=True):
    """The view of ``array``'s memory with ``shape`` and ``strides`` (bytes) from its first element, read as
    ``dtype`` (array's by default); writeable where array is, unless ``writeable`` is False (CuPy's views
    take no flag). Made on the buffer of array, else of the array that owns its memory (several times
    quicker than NumPy's as_strided), so that the view's ``base`` leads there as any NumPy view's does
    (data_ptr, storage_offset, saving shared storage). None where no view of another dtype can be made."""
    dtype = array.dtype if dtype is None else dtype
    if xp is not numpy:
        return xp.lib.stride_tricks.as_strided(array, shape, strides) if dtype == array.dtype else None
    try:
        view = numpy.ndarray(shape, dtype, array, 0, strides)  # array exports its buffer when it is contiguous
    except (TypeError, ValueError, BufferError):
        owner = memory_owner(array)
        try:
            view = view_at(owner, address(array) - address(owner), shape, dtype, strides)
        except (TypeError, ValueError, BufferError):  # (an owner that exports no buffer)
            if dtype != array.dtype:
                return None
            view = numpy.lib.stride_tricks.as_strided(array, shape, strides)
    if not (writeable and array.flags.writeable):
        view.flags.writeable = False
    return view


def view_at(owner, offset, shape, dtype, strides):
    """The view of ``owner``'s memory, ``offset`` bytes in, with ``shape``, ``dtype`` and ``strides`` (bytes)."""
    if xp is numpy:
        return numpy.ndarray(shape, dtype, owner, offset, strides)
    return xp.ndarray(shape, dtype, owner.data + offset, strides)


def memory_owner(array):
    """The array that owns the memory ``array`` shows: itself, or the array its views' bases lead back to (of
    NumPy's or the array module's kind, as ``array`` is)."""
    kind = numpy.ndarray if isinstance(array, numpy.ndarray) else xp.ndarray
    while isinstance(array.base, kind):
        array = array.base
    return array


def is_dense(array):
    """Whether an array's elements fill a block of memory without gaps or repeats, in some order of its dims
    (row-major, a transpose, a permutation): PyTorch's is_non_overlapping_and_dense."""
    expected = array.itemsize
    for step, n in sorted((step, n) for step, n in zip(array.strides, array.shape) if n > 1):
        if step != expected:
            return False
        expected *= n
    return True


def dense_strides(shape, strides):
    """The strides (in elements) of a dense tensor laid out in the order of ``strides``' dims: PyTorch's
    infer_dense_strides, which empty_like gives a tensor that does not fill its memory densely. Its dims are
    sorted innermost first by stride, stably (TensorIterator's insertion sort): a zero stride (an expanded dim)
    compares as neither, so keeps its row-major place, and of equal strides the smaller size goes inner."""
    ndim = len(shape)

    def should_swap(dim0, dim1):  # 1: dim0 goes outside dim1; -1: it stays inside; 0: either
        if strides[dim0] == 0 or strides[dim1] == 0:
            return 0
        if strides[dim0] != strides[dim1]:
            return 1 if strides[dim0] > strides[dim1] else -1
        return 1 if shape[dim0] > shape[dim1] else 0

    innermost_first = list(range(ndim - 1, -1, -1))
    for i in range(1, ndim):
        dim1 = i
        for dim0 in range(i - 1, -1, -1):
            comparison = should_swap(innermost_first[dim0], innermost_first[dim1])
            if comparison > 0:
                innermost_first[dim0], innermost_first[dim1] = innermost_first[dim1], innermost_first[dim0]
                dim1 = dim0
            elif comparison < 0:
                break
    dense, step = [0] * ndim, 1
    for dim in innermost_first:
        dense[dim] = step
        step *= max(shape[dim], 1)
    return dense


def dense_order(shape, strides):
    """The dims from the outermost in memory of the dense tensor laid out in the order of ``strides``' dims
    (``dense_strides``, whose ties it keeps: of equal steps, a size-1 dim inside)."""
    dense = dense_strides(shape, strides)
    return sorted(range(len(shape)), key=lambda dim: (-dense[dim], -shape[dim]))


def address(array):
    """Where an array's first element lies: in host memory (NumPy), or on the GPU (CuPy)."""
    interface = getattr(array, "__array_interface__", None) or array.__cuda_array_interface__
    return interface["data"][0]


def on_host(array):
    """True for a NumPy array while the array module is another (CuPy): a tensor moved to the CPU
    (``x.cpu()``), which keeps its values in host memory until it is moved back."""
    return xp is not numpy and isinstance(array, numpy.ndarray)


def to_numpy(array):
    """A NumPy copy of an array of the array module (itself when it is NumPy's)."""
    return array.get() if hasattr(array, "get") else numpy.asarray(array)
