"""Tests and counts: isnan, isinf, isfinite, any, all, comparisons and logical ops (bool
tensors), allclose, isclose, equal, count_nonzero, bincount, histc, histogram.

None of these is differentiable: they return tensors without a graph (bool or int64, or the
input's floating dtype for histograms).
"""

import builtins
import math
import numbers
import operator
import warnings

import numpy

from ..backend import errstate, float32, int64, ufunc_at, xp
from ..errors import ShapeError, broadcast_mismatch, refuse_unordered
from ..operands import _operand, left_to_python
from ..primitive import Primitive
from ..return_types import return_type
from ..sparse_layout import is_sparse
from ..tensor import Tensor
from ..write_door import _refuse_cast
from .axes import normalize_dims
from .conversion import c_name, refuse_kinds, tensor_input, tensors_only, type_name
from .elementwise import Where, row_major
from .names import names
from .outputs import write_out
from .promotion import promoted_dtype

HistogramResult = return_type("histogram", ["hist", "bin_edges"])


def _data(x):
    return x._data if isinstance(x, Tensor) else xp.asarray(x)


def _written_in_place(old, result):
    """What ``x.eq_(y)`` (and every other in-place test) writes into x: the result in x's dtype
    (True as 1). It has no gradient, but x keeps requiring grad, as in PyTorch, with a zero
    gradient through this write: a Where that picks the result everywhere records exactly that."""
    if not old.requires_grad:
        return result
    return Where.apply(result.to(old.dtype), old, condition=xp.ones((), dtype=bool))


def _in_place(op, name):
    def in_place(input, *args):
        return _written_in_place(input, op(input, *args))

    in_place.__name__ = f"{name}_"
    names(inplace=f"{name}_")(in_place)


def _truth(value):
    """A complex operand (array or number) as its truth, value != 0; any other as it is."""
    if isinstance(value, complex) or getattr(value, "dtype", None) is not None and value.dtype.kind == "c":
        return value != 0
    return value


def _test(function, name, doc, inplace=False, real=False, same_dtype=False):
    """Register the test ``function`` of an array as op ``name``. ``real``: PyTorch's isposinf, isneginf and
    signbit refuse complex inputs, and write only into a bool out=; ``same_dtype``: out= must have the result's
    dtype (bitwise_not's)."""
    def op(input, *, out=None):
        if is_sparse(input) and name in ("isnan", "isinf", "isposinf", "isneginf", "signbit"):
            return write_out(getattr(input, name)(), out)  # (false at 0: a sparse tensor's test of its values)
        if not isinstance(input, Tensor):  # (PyTorch's tests take tensors only: isfinite(1) is a TypeError)
            raise TypeError(f"{name}(): argument 'input' (position 1) must be Tensor, not {type(input).__name__}")
        x = input._data
        if real:
            if x.dtype.kind == "c":
                raise (NotImplementedError(f"{name} is not implemented for complex tensors.") if name == "signbit"
                       else RuntimeError(f"{name} does not support complex inputs."))
            if out is not None and out.dtype != xp.bool_:
                raise RuntimeError(f"{name} does not support non-boolean outputs.")
        return write_out(Tensor._make(function(x)), out, same_dtype=same_dtype)

    op.__name__ = name
    op.__doc__ = doc
    names(name)(op)
    if inplace:
        _in_place(op, name)


_test(xp.isnan, "isnan", "True where input is NaN.")
_test(xp.isinf, "isinf", "True where input is +inf or -inf.")
_test(xp.isposinf, "isposinf", "True where input is +inf.", real=True)
_test(xp.isneginf, "isneginf", "True where input is -inf.", real=True)
_test(xp.isfinite, "isfinite", "True where input is neither NaN nor infinite.")
_test(xp.signbit, "signbit", "True where input's sign bit is set (negative numbers and -0.0).", real=True)
_test(lambda x: xp.logical_not(_truth(x)), "logical_not", "True where input is zero (False).", inplace=True)


def _compared(comparison, x, y):
    """A comparison's bool tensor; shapes that do not broadcast raise PyTorch's RuntimeError (a ShapeError)
    naming the sizes, not NumPy's ValueError."""
    try:
        return Tensor._make(comparison(x, y))
    except ValueError:
        raise ShapeError(broadcast_mismatch(numpy.shape(x), numpy.shape(y))) from None


def ordered(name, x, y):
    """(x, y), two arrays or numbers to compare by order: complex numbers have none, so they are
    refused, as PyTorch refuses them (NumPy would compare them part by part)."""
    refuse_unordered(x, name)
    refuse_unordered(y, name)
    return x, y


def _compare(function, name, aliases=(), by_order=False, operator=None, tensors=False):
    def op(input, other, *, out=None):
        if tensors:  # (logical_and's schema takes tensors only; eq's takes a number as other)
            tensors_only(name, input, other)
        elif input.__class__ is not Tensor:  # (a number first: no call on the usual path)
            tensor_input(name, input)
        # a number beside a tensor takes the tensor's dtype first, as in PyTorch and in the operators (x < y):
        # float32 x.eq(0.1) compares with float32 0.1, uint8 x.lt(300) with 300 cast to uint8 (44)
        x = _data(input)
        y = _operand(other, input)._data if isinstance(input, Tensor) and not isinstance(other, Tensor) \
            else _data(other)
        if x.dtype != y.dtype:  # both in PyTorch's common dtype: a 0-d float64 tensor leaves float32 x float32
            common = promoted_dtype(x, y)
            x, y = x.astype(common, copy=False), y.astype(common, copy=False)
        if by_order:
            x, y = ordered(name, x, y)
        return write_out(_compared(function, x, y), out)  # (shapes that do not broadcast: PyTorch's error)

    op.__name__ = name
    op.__doc__ = f"Elementwise {name} (broadcasting), without gradient."
    names(name, *aliases)(op)
    for alias in (name, *aliases):
        _in_place(op, alias)
    if operator is not None:
        names(operator, function=False)(_operator(op, operator))


def _operator(op, dunder):
    """``x < y`` and the other comparison operators: ``op`` (the same dtypes as ``x.lt(y)``) for a tensor or a
    number; anything else is Python's to answer, as PyTorch leaves it (``x == [1, 2]`` is False, ``x == None``
    False, ``x != None`` True, ``x < "a"`` a TypeError); a NumPy array is read as a tensor, as PyTorch reads it."""
    def compare(self, other):
        if isinstance(other, (Tensor, numbers.Number, numpy.generic, numpy.ndarray)):
            return op(self, other)
        return NotImplemented

    compare.__name__ = dunder
    return compare


def _logical(function):
    """A logical ufunc that takes complex operands: CuPy's take none (NumPy's do, with the same answer)."""
    def logical(x, y):
        return function(_truth(x), _truth(y))
    return logical


_compare(xp.equal, "eq", operator="__eq__")
_compare(xp.not_equal, "ne", ("not_equal",), operator="__ne__")
for _function, _names in ((_logical(xp.logical_and), ("logical_and",)), (_logical(xp.logical_or), ("logical_or",)),
                          (_logical(xp.logical_xor), ("logical_xor",))):
    _compare(_function, _names[0], _names[1:], tensors=True)
for _function, _names, _operator_name in ((xp.less, ("lt", "less"), "__lt__"),
                                          (xp.less_equal, ("le", "less_equal"), "__le__"),
                                          (xp.greater, ("gt", "greater"), "__gt__"),
                                          (xp.greater_equal, ("ge", "greater_equal"), "__ge__")):
    _compare(_function, _names[0], _names[1:], by_order=True, operator=_operator_name)


def _reduce_bool(function, input, dim, keepdim, out=None):
    """any/all: bool, except that a uint8 input gives uint8 (PyTorch keeps that legacy rule). An out=
    tensor must be bool or uint8: PyTorch casts its result into no other dtype."""
    data = _data(input)
    if out is not None and out.dtype.kind != "b" and out.dtype != xp.uint8:
        name = function.__name__
        raise RuntimeError(f"{name} only supports bool tensor for result, got: {type_name(out.dtype)}")
    if dim is None:  # every dim (kept as 1s with keepdim, as PyTorch's any/all, unlike its sum/mean)
        result = xp.asarray(function(data, keepdims=keepdim))
    else:
        result = function(data, axis=normalize_dims(dim, data.ndim, empty_is_every=False), keepdims=keepdim)
    result = row_major(result)  # (PyTorch's reductions allocate a row-major result)
    return Tensor._make(result.astype(data.dtype) if data.dtype == xp.uint8 else result)


@names("any")
def any(input, dim=None, keepdim=False, *, out=None):
    """True where some element (along dim) is nonzero."""
    if is_sparse(input) and dim is None:  # a sparse tensor: some value of it, as stored
        return write_out(any(input._values_tensor), out)  # (PyTorch's: 1 and -1 at one index are two values)
    return write_out(_reduce_bool(xp.any, input, dim, keepdim, out), out)


@names("all")
def all(input, dim=None, keepdim=False, *, out=None):
    """True where every element (along dim) is nonzero."""
    return write_out(_reduce_bool(xp.all, input, dim, keepdim, out), out)


@names("count_nonzero")
def count_nonzero(input, dim=None):
    """How many elements (along dim) are nonzero, as int64."""
    data = _data(input)
    axes = None if dim is None else normalize_dims(dim, data.ndim)
    return Tensor._make(row_major(xp.asarray(xp.count_nonzero(data, axis=axes), dtype=int64)))


def _promoted(input, other):
    a, b = _data(input), _data(other)
    if a.dtype != b.dtype and not (isinstance(other, (int, float))):
        raise RuntimeError(f"{type_name(a.dtype)} did not match {type_name(b.dtype)}: isclose/allclose need equal "
                           f"dtypes, got {a.dtype} and {b.dtype}")
    mismatch = broadcast_mismatch(xp.shape(a), xp.shape(b))
    if mismatch:  # (NumPy's ValueError, where PyTorch raises a RuntimeError naming the sizes)
        raise ShapeError(f"isclose/allclose of shapes {tuple(a.shape)} and {tuple(b.shape)}: {mismatch}")
    return a, b


@names("isclose")
def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|input - other| <= atol + rtol · |other|, elementwise (as PyTorch and NumPy)."""
    for name, tolerance in (("rtol", rtol), ("atol", atol)):
        if tolerance < 0:
            raise RuntimeError(f"{name} must be greater than or equal to zero, but got {tolerance}")
    tensors_only("isclose", input, other)
    a, b = _promoted(input, other)
    return Tensor._make(xp.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


@names("allclose")
def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """True when isclose holds everywhere (a Python bool)."""
    tensors_only("allclose", input, other)
    a, b = _promoted(input, other)
    return builtins.bool(xp.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


@names("equal")
def equal(input, other):
    """True when both have the same shape and elements (a Python bool)."""
    tensors_only("equal", input, other)
    a, b = _data(input), _data(other)
    return a.shape == b.shape and builtins.bool((a == b).all())


@names("bincount")
def bincount(input, weights=None, minlength=0):
    """How often each value 0, 1, ..., max occurs in a vector of non-negative ints (weights summed
    instead of counts when given)."""
    data = _data(input)
    if data.dtype.kind not in "iu":  # (PyTorch's kernel has no float or bool version)
        raise NotImplementedError(f"\"bincount_cpu\" not implemented for '{type_name(data.dtype)}'")
    if data.ndim != 1:
        raise RuntimeError(f"bincount only supports 1-d non-negative integral inputs (got {data.ndim}-d {data.dtype})")
    if minlength < 0:
        raise RuntimeError("minlength should be >= 0")
    if data.size and data.min() < 0:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if weights is None:
        return Tensor._make(xp.bincount(data, minlength=minlength).astype(int64))
    w = _data(weights)
    if w.ndim != 1 or w.shape[0] != data.shape[0]:
        raise RuntimeError("weights should be 1-d and have the same length as input")
    if w.dtype == float32:  # PyTorch's kernel adds float32 weights in float32, one after another
        counts = xp.zeros(max(minlength, int(data.max()) + 1 if data.size else 0), dtype=float32)
        ufunc_at("add", counts, data, w)
    else:  # every other dtype of weights (float16 and integers too) summed in float64, as PyTorch's
        counts = xp.bincount(data, weights=w.astype(xp.float64), minlength=minlength)
    if isinstance(weights, Tensor) and weights.requires_grad:
        return WithoutDerivative.apply(weights, values=counts, kernel="bincount")
    return Tensor._make(counts)


class WithoutDerivative(Primitive):
    """y = a result worked out by the caller (``values``) that PyTorch records in the graph with no derivative
    (bincount of weights that require grad, x.set_(y)): the result requires grad, and a backward pass through it
    raises in PyTorch's words, where a detached one would leave the inputs' share of the gradient out unsaid."""

    pytorch_name = "torch::autograd::NotImplemented"
    saves_inputs = False

    def forward(self, *inputs):
        return self.values

    def backward(self, grad, y, *inputs):
        raise RuntimeError(f"derivative for aten::{self.kernel} is not implemented")


@names("histc")
def histc(input, bins=100, min=0, max=0, *, out=None):
    """Counts of input's elements in ``bins`` equal bins over [min, max] (the data's range when
    min = max); elements outside are ignored. The result has input's dtype."""
    data = _data(input)
    _positive_bins(bins)
    low, high = float(min), float(max)
    if low > high:  # (checked before the dtype, as PyTorch)
        raise RuntimeError("torch.histc: max must be larger than min")
    if data.dtype.kind != "f":
        raise NotImplementedError(f"\"histogram_cpu\" not implemented for '{type_name(data.dtype)}'")
    if low == high and data.size:
        low, high = float(data.min()), float(data.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise RuntimeError(f"torch.histc: range of [{low:g}, {high:g}] is not finite")
    if low == high:
        low, high = low - 1, high + 1
    if data.dtype.type(low) == data.dtype.type(high):  # too large to widen by 1 in input's dtype: every element
        counts = xp.zeros(bins, dtype=data.dtype)      # in range sits at its centre
        counts[bins // 2] = (data == data.dtype.type(low)).sum()
        return write_out(Tensor._make(counts), out)
    with warnings.catch_warnings():  # (NumPy warns of the NaNs it leaves out, as PyTorch leaves them out)
        warnings.simplefilter("ignore", RuntimeWarning)
        counts, _ = xp.histogram(data, bins=bins, range=(low, high))
    return write_out(Tensor._make(counts.astype(data.dtype)), out)


@names("histogram")
def histogram(input, bins=100, *, range=None, weight=None, density=False, out=None):
    """(hist, bin_edges): NumPy's histogram, in input's dtype; ``bins`` a count or the edges."""
    data = _data(input)
    if data.dtype.kind != "f" or data.dtype == xp.float16:
        raise NotImplementedError(f"\"histogramdd\" not implemented for '{type_name(data.dtype)}'")
    edges = _data(bins) if isinstance(bins, (Tensor, list, tuple)) else operator.index(bins)  # (a NumPy int too)
    _check_histogram(data, edges, range, weight)
    with errstate(invalid="ignore", divide="ignore"):  # (the density of nothing is 0/0: NaN, silently as PyTorch's)
        hist, bin_edges = xp.histogram(data, bins=edges, range=range,
                                       weights=None if weight is None else _data(weight), density=density)
    operands = (input, weight)
    return write_out(HistogramResult(_undifferentiated(hist.astype(data.dtype), operands, "histogram"),
                                     _undifferentiated(bin_edges.astype(data.dtype), operands, "histogram")), out)


def _undifferentiated(values, operands, kernel):
    """The array ``values``, a result of the tensors among ``operands`` that PyTorch records without derivative
    (the histograms of data that requires grad): the result requires grad there, and a backward pass through it
    raises, naming ``kernel``."""
    return WithoutDerivative.apply(*(x for x in operands if isinstance(x, Tensor)), values=values, kernel=kernel)


def _positive_bins(bins):
    if isinstance(bins, int) and bins <= 0:
        raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension 0")


def _check_histogram(data, edges, range, weight):
    """PyTorch's checks of histogram's arguments (its messages are histogramdd's, which it calls)."""
    if isinstance(edges, int):
        _positive_bins(edges)
    else:
        if edges.dtype != data.dtype:
            raise RuntimeError(f"torch.histogramdd: input tensor and bins tensors should have the same dtype, but got "
                               f"input with dtype {c_name(data.dtype)} and bins for dimension 0 with dtype "
                               f"{c_name(edges.dtype)}")
        if edges.ndim != 1:
            raise RuntimeError(f"torch.histogramdd: bins tensor should have one dimension, but got {edges.ndim} "
                               "dimensions in the bins tensor for dimension 0")
        if edges.size == 0:
            raise RuntimeError("torch.histogramdd: bins tensor should have at least 1 element, but got 0 elements "
                               "in the bins tensor for dimension 0")
    if weight is not None:
        w = _data(weight)
        if w.dtype != data.dtype:
            raise RuntimeError("torch.histogramdd: if weight tensor is provided, input tensor and weight tensor should "
                               f"have the same dtype, but got input({c_name(data.dtype)}), and "
                               f"weight({c_name(w.dtype)})")
        if w.shape != data.shape:
            raise RuntimeError("torch.histogramdd: if weight tensor is provided it should have the same shape as the "
                               "input tensor excluding its innermost dimension, but got input with shape "
                               f"{[data.size, 1]} and weight with shape {list(w.shape)}")
    if range is not None:
        low, high = (float(v) for v in range)
    elif isinstance(edges, int) and data.size:
        low, high = float(data.min()), float(data.max())
    else:
        return
    if low > high:
        raise RuntimeError(f"torch.histogramdd: min should not exceed max, but got min {low:g} max {high:g} for "
                           "dimension 0")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise RuntimeError(f"torch.histogramdd: dimension 0's range [{low:g}, {high:g}] is not finite")


HistogramddResult = return_type("histogramdd", ["hist", "bin_edges"], has_out=False)


@names("histogramdd", method=False)
def histogramdd(input, bins, range=None, weight=None, density=False):
    """(hist, bin_edges): the points input[..., :] (the last dim holds each point's N coordinates)
    counted (or their ``weight`` summed) in an N-d grid of bins, NumPy's histogramdd in input's
    dtype. ``bins``: a count, one count per dim, or one tensor of edges per dim; ``range``:
    [min_0, max_0, min_1, max_1, ...] (the data's own span by default)."""
    data = _data(input)
    if data.dtype.kind != "f" or data.dtype == xp.float16:  # (as histogram's: float32 and float64 loops only)
        raise NotImplementedError(f"\"histogramdd\" not implemented for '{type_name(data.dtype)}'")
    if data.ndim < 2:
        raise RuntimeError("torch.histogramdd: input tensor should have at least 2 dimensions")
    n = data.shape[-1]
    if n == 0:  # points of no coordinates: a 0-d histogram holding nothing (NaN once normalised), and no edges
        return HistogramddResult(Tensor._make(xp.asarray(xp.nan if density else 0.0, data.dtype)), ())
    points = data.reshape(-1, n)
    if isinstance(bins, (list, tuple)):
        if len(bins) != n:
            raise RuntimeError("histogramdd: The size of bins must be equal to the innermost dimension of the input.")
        bins = [_data(b) if isinstance(b, Tensor) else int(b) for b in bins]
    if range is not None:
        if len(range) != 2 * n:
            raise RuntimeError(f"torch.histogramdd: for a {n}-dimensional histogram range should have {2 * n} "
                               f"elements, but got {len(range)}")
        range = [(float(range[2 * d]), float(range[2 * d + 1])) for d in builtins.range(n)]
    elif not points.size:  # no points to span: PyTorch's bins then cover [0, 1] (NumPy's, [-0.5, 0.5])
        range = [(0.0, 1.0)] * n
    weights = None
    if weight is not None:
        weights = _data(weight)
        if weights.dtype != data.dtype:
            raise RuntimeError("torch.histogramdd: if weight tensor is provided, input tensor and weight tensor "
                               f"should have the same dtype, but got input({data.dtype}), and weight({weights.dtype})")
        weights = weights.reshape(-1)
    with errstate(invalid="ignore", divide="ignore"):  # (the density of nothing is 0/0: NaN, silently as PyTorch's)
        hist, edges = xp.histogramdd(points, bins=bins, range=range, weights=weights, density=density)
    operands = (input, weight)
    if isinstance(bins, list) and not isinstance(bins[0], int):  # the edges given: returned as they are, unrecorded
        return HistogramddResult(_undifferentiated(hist.astype(data.dtype), operands, "_histogramdd_from_bin_tensors"),
                                 tuple(Tensor._make(e.astype(data.dtype)) for e in edges))
    return HistogramddResult(_undifferentiated(hist.astype(data.dtype), operands, "_histogramdd_from_bin_cts"),
                             tuple(_undifferentiated(e.astype(data.dtype), operands, "_histogramdd_bin_edges")
                                   for e in edges))


@names("is_floating_point")
def is_floating_point(input):
    return input.dtype.kind == "f"


@names("is_complex")
def is_complex(input):
    return input.dtype.kind == "c"


@names("is_signed")
def is_signed(input):
    """True for dtypes that hold negative numbers (not bool, not unsigned integers)."""
    return input.dtype.kind in "ifc"


@names("is_same_size")
def is_same_size(input, other):
    return input.shape == other.shape


@names("is_neg")
def is_neg(input):
    """False: this engine never keeps a lazy negation bit (PyTorch's for conj views)."""
    return False


@names("is_conj")
def is_conj(input):
    """False: this engine never keeps a lazy conjugation bit."""
    return False


@names("is_inference")
def is_inference(input):
    """Whether the tensor was made in ``inference_mode`` (by an op, a factory or a constructor; a view
    of a normal tensor stays normal): it cannot be saved for backward nor changed in place outside it."""
    return input._inference


@names("is_nonzero")
def is_nonzero(input):
    if input.numel() != 1:
        raise RuntimeError(f"Boolean value of Tensor with {'no values' if not input.numel() else 'more than one value'}"
                           " is ambiguous")
    return builtins.bool(input.item())


@names("isin", method=False)
def isin(elements, test_elements, *, assume_unique=False, invert=False, out=None):
    """True where an element of ``elements`` occurs in ``test_elements`` (False with invert). A number on
    either side takes the other side's dtype first, as in PyTorch (float32 x and 0.1: float32's 0.1)."""
    if not isinstance(elements, Tensor) and not isinstance(test_elements, Tensor):  # (PyTorch's overloads need one)
        raise TypeError(f"isin() received an invalid combination of arguments - got ({type(elements).__name__}, "
                        f"{type(test_elements).__name__}), but expected a Tensor for elements or test_elements")
    if isinstance(elements, Tensor) and not isinstance(test_elements, Tensor):
        test_elements = _operand(test_elements, elements)
    elif isinstance(test_elements, Tensor) and not isinstance(elements, Tensor):
        elements = _operand(elements, test_elements)
    for side in (elements, test_elements):  # (PyTorch's isin sorts or compares by an order: none for these)
        if side.dtype.kind in "bc":
            raise RuntimeError(f"Unsupported input type encountered for isin(): {type_name(side.dtype)}")
    found = xp.isin(_data(elements), _data(test_elements), assume_unique=assume_unique, invert=invert)
    return write_out(Tensor._make(found), out, dtype=found.dtype)


def on_integers(function, x, y, name, kinds="biu", error=NotImplementedError):
    """``function`` of two tensors' arrays in their common dtype (PyTorch's promotion), as a tensor
    without gradient; any dtype whose kind is not in ``kinds`` gets PyTorch's error (a
    NotImplementedError, which is a RuntimeError, naming the dtype as PyTorch's C++ does: 'Float')."""
    dtype = promoted_dtype(x, y)
    if dtype.kind not in kinds:
        raise error(f"\"{name}_cpu\" not implemented for '{type_name(dtype)}'")
    return Tensor._make(function(x._data.astype(dtype, copy=False), y._data.astype(dtype, copy=False)))


def _bitwise(function, name, aliases=(), reflected=False, kernel=None, kinds="biu"):
    """An integer/bool op of two operands, with PyTorch's type promotion (a 0-d int64 tensor
    does not widen an int32 one; NumPy's promotion would). ``kernel``: the name PyTorch's error
    gives the op (its own name if None); ``kinds``: the dtype kinds it takes (shifts refuse bools)."""

    def op(input, other, *, out=None):
        if reflected:
            input, other = other, input
        x, y = _operand(input, other), _operand(other, input)
        return write_out(on_integers(function, x, y, kernel or name, kinds), out)

    def in_place(input, other):
        # the write's cast is refused before the kernel's dtype (int64.bitwise_and_(2.5): Float can't be cast to
        # Long, as PyTorch says, not that bitwise_and has no kernel for Float)
        _refuse_cast(promoted_dtype(input, _operand(other, input)), input.dtype, input.shape)
        return _written_in_place(input, op(input, other))

    def operator(input, other):
        # (Python's x & y, x << y: an operand that is no number and no array is left to Python, as PyTorch's)
        return NotImplemented if left_to_python(other) else op(input, other)

    op.__name__ = name
    op.__doc__ = f"Elementwise {name} of integers or bools (broadcasting), without gradient."
    in_place.__name__ = f"{name}_"
    operator.__name__, operator.__doc__ = (aliases or (name,))[0], op.__doc__
    if name.startswith("__"):
        names(name)(operator)
    else:
        names(name)(op)
        if aliases:
            names(*aliases)(operator)
    if not name.startswith("_"):
        names(inplace=f"{name}_")(in_place)


for _function, _name, _operator, _kernel, _kinds in (
        (xp.bitwise_and, "bitwise_and", "and", "bitwise_and", "biu"),
        (xp.bitwise_or, "bitwise_or", "or", "bitwise_or", "biu"),
        (xp.bitwise_xor, "bitwise_xor", "xor", "bitwise_xor", "biu"),
        (xp.left_shift, "bitwise_left_shift", "lshift", "lshift", "iu"),  # (PyTorch has no shift of bools)
        (xp.right_shift, "bitwise_right_shift", "rshift", "rshift", "iu")):
    # (tensor.py's own __and__, __or__, __xor__ stand first)
    _bitwise(_function, _name, (f"__{_operator}__",), kernel=_kernel, kinds=_kinds)
    _bitwise(_function, f"__r{_operator}__", reflected=True, kernel=_kernel, kinds=_kinds)
def _bitwise_not(x):
    refuse_kinds(x, "bitwise_not_cpu", "fc")  # (NumPy's TypeError: PyTorch's NotImplementedError, a RuntimeError)
    return xp.bitwise_not(x)


_test(_bitwise_not, "bitwise_not", "~input: each bit flipped (logical not for bools).", inplace=True,
      same_dtype=True)
