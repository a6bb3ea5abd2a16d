"""Reductions and the softmax family: each forward beside its local derivative.

A reduction's backward spreads dL/dy back over the reduced axes: the
gradient of a sum is dL/dy copied to every term (``expand``).
"""

import inspect
import math
import warnings

import numpy

from ..backend import errstate, float16, float32, int64, xp
from ..errors import DtypeError
from ..graph import modes, program_stacklevel
from ..index_watching import watch_returned_indices
from ..meta import MetaArray
from ..primitive import Primitive, named_node
from ..return_types import return_type
from ..saved_tensor_views import saved_argument
from ..tensor import Tensor
from . import shape as shape_ops
from .axes import dim_index, extremum_overload, kept_shape, normalize_dims, unbiased_overload
from .conjugation import conj, refuse_unordered
from .conversion import type_name
from .elementwise import floating, row_major, selected_share, where
from .names import names
from .outputs import write_out
from .row_blocks import LARGE, blockable, by_row_blocks


def spread(grad, x, axes, keepdim, like=None):
    """dL/dy of a reduction over ``axes``, broadcast back to x's shape (laid out in memory as
    ``like``, a tiny array, when given)."""
    if not keepdim and grad.ndim:
        grad = grad.reshape(kept_shape(x.shape, axes))
    # (in a backward, where it runs: a new array, no view, so a pass that records nothing needs no node for it)
    return shape_ops.Expand.apply_in_backward(grad, shape=x.shape, like=like, written=True)


_add_reduce = numpy.add.reduce if xp is numpy else None  # (CuPy's arrays sum by their method)


def _kept_sum(x, axis):
    """Σ over ``axis``, the dim kept: NumPy's ufunc itself for a NumPy array, as Sum's (ndarray.sum's Python wrapper
    costs as much as a small array's sum: the softmaxes' backward sums twice)."""
    if type(x) is numpy.ndarray:
        return numpy.add.reduce(x, axis, None, None, True)
    return x.sum(axis=axis, keepdims=True)


class Sum(Primitive):
    """y = Σ_i x_i over axes;   dL/dx_i = dL/dy"""

    saves_inputs = False  # backward needs no input's values
    like = None  # x's memory layout, when it is not row-major
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value
    # float16 x summed otherwise than in float32 rounded once: a function of x's array (nll_loss's, which sums as
    # PyTorch's kernel does, in float16 by a cascade)
    float16_total = None
    # what PyTorch's SumBackward1 (and Mean's MeanBackward1: the sum or mean over dims) shows it saved, and both
    # forms' sizes
    _saved_dim = saved_argument(lambda node: node.axes, overload=1)
    _saved_keepdim = saved_argument(lambda node: node.keepdim, overload=1)
    _saved_self_sym_sizes = saved_argument(lambda node: tuple(node.inputs[0].shape))

    def forward(self, x):
        if x.dtype is float16:
            return self.float16_total(x) if self.float16_total else self.total(x).astype(float16)
        return self.total(x)

    def total(self, x):
        """The sum in PyTorch's dtypes: float16 accumulated in float32 (the caller rounds it once),
        small unsigned integers (and bools) summed as int64."""
        if x.ndim > 1 and not x.flags.c_contiguous or type(x) is MetaArray:  # (a convolution's batch-innermost
            # output, a transpose) its gradient in the same layout: the elementwise ops that meet it (BatchNorm's)
            # run several times slower over operands laid out differently. A meta x's is a meta array: its
            # gradient is one too (Expand's), as the seed of backward is a plain one
            self.like = xp.empty_like(x, shape=(2,) * x.ndim)
        dtype = x.dtype
        if dtype is float16:
            dtype = float32
        elif dtype.kind in "bu" and dtype.itemsize < 8:  # (NumPy's uint8 sum is uint64)
            dtype = int64
        else:
            dtype = None
        if _add_reduce is None:
            return row_major(x.sum(axis=self.axes, keepdims=self.keepdim, dtype=dtype))
        # NumPy's ufunc itself, not ndarray.sum's Python wrapper: quicker, and a warning it gives for inf - inf is
        # then this module's, which autograd's filter silences (PyTorch's sum gives NaN silently). Row-major, as
        # PyTorch's reductions allocate their result (NumPy's keeps the input's order: a sum over the batch of a
        # transpose was a transpose, and a write through a view of it went to a copy)
        return row_major(_add_reduce(x, self.axes, dtype, None, self.keepdim))

    def backward(self, grad, y, x):
        return (spread(grad, x, self.axes, self.keepdim, self.like),)


def sum(x, dim=None, keepdim=False):
    if dim is None:
        return Sum.apply(x, axes=normalize_dims(dim, x.ndim), keepdim=keepdim)
    return Sum.apply(x, axes=normalize_dims(dim, x.ndim), keepdim=keepdim, pytorch_name="SumBackward1")  # (sum(dim))


class Mean(Sum):
    """y = (1/n) Σ_i x_i over axes (n terms);   dL/dx_i = dL/dy / n

    One node, as PyTorch's MeanBackward: the sum, then a division by n (PyTorch's rounding,
    not a multiplication by 1/n). The mean of nothing is NaN, as in PyTorch and NumPy: an
    empty batch must not report a zero loss."""

    _saved_self_sym_numel = saved_argument(lambda node: math.prod(node.inputs[0].shape))

    def forward(self, x):
        total = self.total(x)
        y = total / total.dtype.type(self.count) if self.count else xp.full_like(total, xp.nan)
        return y.astype(float16) if x.dtype is float16 else y  # (float16: divided before rounding)

    def backward(self, grad, y, x):
        spread_grad = spread(grad, x, self.axes, self.keepdim, self.like)
        data = spread_grad._data
        if (modes.grad_enabled or self.apply_replaced or not self.count or data.dtype.kind != "f"
                or data.dtype.itemsize < 4 or type(data) is MetaArray):
            return (spread_grad / (self.count or float("nan")),)  # (recorded; float16's division in float32)
        # a pass that records nothing: the spread gradient is a new array of its own (Expand's written=True), so
        # it is divided in place, by n in its dtype: the quotients of the division above, with no second array
        xp.divide(data, data.dtype.type(self.count), out=data)
        return (spread_grad,)

    def jvp(self, tangents, y, x):
        """ẏ = (1/n) Σ_i ẋ_i, the mean of the tangents: NaN over none, as PyTorch's forward rule (read from the
        backward it would be 0, the empty sum)."""
        return mean(tangents[0], self.axes, self.keepdim)


def mean(x, dim=None, keepdim=False):
    if x.dtype.kind not in "fc":
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a floating point "
                           f"or complex dtype. Got: {type_name(x.dtype)} (shape {tuple(x.shape)}); convert with "
                           ".float()")
    axes = normalize_dims(dim, x.ndim)
    count = 1
    for axis in axes:
        count *= x.shape[axis]
    if dim is None:
        return Mean.apply(x, axes=axes, keepdim=keepdim, count=count)
    return Mean.apply(x, axes=axes, keepdim=keepdim, count=count, pytorch_name="MeanBackward1")  # (mean(dim))


def _correction(unbiased, correction):
    if correction is not None:
        return correction
    return 0 if unbiased is False else 1


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """y = Σ |x_i - mean|² / (n - correction); correction 1 (unbiased) by default, as PyTorch.
    x.var(False) is PyTorch's var(unbiased) overload. PyTorch's node saves x (ours keep x - mean)."""
    dim, unbiased = unbiased_overload("var", dim, unbiased, keepdim, correction)
    return named_node(variance(x, dim, unbiased, keepdim, correction, "var"), None, "VarBackward0", (x,), saves=(x,))


def variance(x, dim, unbiased, keepdim, correction, name):
    """var's computation, for var, std, var_mean and std_mean (``name``: the one called, which PyTorch's
    warning names). With no degrees of freedom left (n <= correction) it warns, as PyTorch, and divides by
    0: ∞, or NaN where every term is equal (one sample). float16 is computed in float32 and rounded once, as
    PyTorch's accumulates it."""
    if x._data.dtype.kind not in "fc":  # (PyTorch's words, before the mean's own refusal of integers would speak)
        raise RuntimeError(f"{'std and var' if name in ('std', 'var') else name} only support floating point and "
                           f"complex dtypes (got {x._data.dtype} of shape {tuple(x.shape)}; convert with .float())")
    if x._data.dtype == float16:
        return variance(x.float(), dim, unbiased, keepdim, correction, name).half()
    axes = normalize_dims(dim, x.ndim)
    count = 1
    for axis in axes:
        count *= x.shape[axis]
    centred = x - mean(x, axes, keepdim=True)
    if centred._data.dtype.kind == "c":  # |x_i - mean|², real, as PyTorch's variance of complex numbers
        squares = centred.real * centred.real + centred.imag * centred.imag
    else:
        squares = centred * centred
    degrees_of_freedom = count - _correction(unbiased, correction)
    if degrees_of_freedom <= 0:
        warnings.warn(f"{name}(): degrees of freedom is <= 0. Correction should be strictly less than the reduction "
                      "factor (input numel divided by output numel).", UserWarning, stacklevel=program_stacklevel())
    if degrees_of_freedom > 0:
        return sum(squares, axes, keepdim) * (1.0 / degrees_of_freedom)
    with errstate(invalid="ignore"):  # (0 · ∞: NaN, which the warning above explains; NumPy's own warning is noise)
        return sum(squares, axes, keepdim) * math.inf


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """y = √var; where var is 0 (equal values) the gradient is 0, as PyTorch's, not 0 · ∞ = NaN.
    x.std(False) is PyTorch's std(unbiased) overload."""
    dim, unbiased = unbiased_overload("std", dim, unbiased, keepdim, correction)
    return named_node(standard_deviation(x, dim, unbiased, keepdim, correction, "std"), None, "StdBackward0", (x,),
                      saves=(x,))


def standard_deviation(x, dim, unbiased, keepdim, correction, name):
    """std's computation, for std and std_mean (``name``: the one called). float16's √ is taken in float32 too,
    and rounded once, as PyTorch's: a variance past float16's range (65504) can have a std well inside it."""
    if x._data.dtype == float16:
        return standard_deviation(x.float(), dim, unbiased, keepdim, correction, name).half()
    v = variance(x, dim, unbiased, keepdim, correction, name)
    zero = v._data == 0
    if not zero.any():
        return v.sqrt()
    return where(zero, 0.0, where(zero, 1.0, v).sqrt())  # (√ of a safe 1 there: no ∞ to select away)


class Extremum(Primitive):
    """y = max (or min) over axes;   dL/dx_i = dL/dy at the chosen element(s), 0 elsewhere.

    Over one dim the gradient goes to the returned index; over all elements it
    is shared evenly between ties, as PyTorch does.
    """

    @property
    def saves_inputs(self):
        """Over all elements the ties are found in x; over one dim the indices are all backward needs (PyTorch's
        MaxBackward0 keeps them, not x, so x may be written in place afterwards)."""
        return self.axis is None

    @property
    def saves_output(self):
        """Over all elements PyTorch's MaxBackward1 (MedianBackward0, ...) keeps the result too, the value the ties
        are found by: writing it in place refuses the backward. Over one dim it keeps the indices alone."""
        return self.axis is None

    def forward(self, x):
        if x.dtype.kind == "c":  # (checked here, not in a call: this is a hot path)
            refuse_unordered(x, "max/min")
        if self.axis is None:
            return self.find(x)
        self.indices = self.arg(x, axis=self.axis, keepdims=True)
        y = xp.take_along_axis(x, self.indices, axis=self.axis)
        return y if self.keepdim else xp.squeeze(y, axis=self.axis)

    def backward(self, grad, y, x):
        if self.axis is None:  # ties share: mask / count (built only when a gradient is wanted)
            found = y._data
            # a NaN is the max (and min), as PyTorch: its gradient goes to the NaN(s)
            ties = xp.isnan(x._data) if xp.isnan(found) else x._data == found
            return (grad * Tensor._make((ties / ties.sum()).astype(x.dtype)),)
        chosen = xp.zeros(x.shape, dtype=x.dtype)
        xp.put_along_axis(chosen, self.indices, 1, axis=self.axis)
        # (selected: none to the others even where dL/dy is infinite, as PyTorch's scatter of it)
        return (selected_share(spread(grad, x, (self.axis,), self.keepdim), Tensor._make(chosen)),)

    def name(self):  # (PyTorch's max() is MaxBackward1, max(dim) MaxBackward0; median's is its own)
        which = "Max" if self.find is xp.max else "Min" if self.find is xp.min else None
        if self.pytorch_name or which is None:
            return super().name()
        return f"{which}Backward{1 if self.axis is None else 0}"


MaxResult = return_type("max", ["values", "indices"])
MinResult = return_type("min", ["values", "indices"])


def _extremum(x, dim, keepdim, find, arg, result):
    if dim is None:
        if x._data.size == 0:
            raise RuntimeError(f"{result.__name__}(): Expected reduction dim to be specified for input.numel() == 0. "
                               "Specify the reduction dim with the 'dim' argument.")
        return Extremum.apply(x, axis=None, find=find, arg=arg)
    if x.ndim == 0:  # a scalar along its only "dim": itself, at index 0
        normalize_dims(dim, 0)
        return result(*watch_returned_indices(Extremum.apply(x, axis=None, find=find, arg=arg),
                                              Tensor._make(xp.zeros((), dtype=xp.int64))))
    axis = dim_index(dim, x.ndim)  # (one dim: a tuple is refused, as PyTorch's, not read as its first dim)
    if x.shape[axis] == 0:
        raise IndexError(f"{result.__name__}(): Expected reduction dim {axis} to have non-zero size.")
    values = Extremum.apply(x, axis=axis, keepdim=keepdim, find=find, arg=arg)
    indices = values.grad_fn.indices if values.grad_fn is not None else arg(x._data, axis=axis, keepdims=True)
    if not keepdim:
        indices = xp.squeeze(indices, axis=axis)
    return result(*watch_returned_indices(values, Tensor._make(indices)))


def max(x, *args, **kwargs):
    """The largest element, or (values, indices) along ``dim`` as PyTorch returns them; given a
    tensor alone in dim's place (or other=), the elementwise maximum: PyTorch's x.max(other)."""
    dim, keepdim, other = extremum_overload("max", args, kwargs)
    if other is not None:
        return x.maximum(other)
    return _extremum(x, dim, keepdim, xp.max, xp.argmax, MaxResult)


def min(x, *args, **kwargs):
    """The smallest element, or (values, indices) along ``dim`` as PyTorch returns them; given a
    tensor alone in dim's place (or other=), the elementwise minimum: PyTorch's x.min(other)."""
    dim, keepdim, other = extremum_overload("min", args, kwargs)
    if other is not None:
        return x.minimum(other)
    return _extremum(x, dim, keepdim, xp.min, xp.argmin, MinResult)


# (PyTorch's parser tells the overloads apart by how dim came, by position or keyword, which a Python signature
# cannot say: the signature shown is the one PyTorch documents)
max.__signature__ = min.__signature__ = inspect.signature(lambda self, dim=None, keepdim=False, *, other=None: None)


def _arg_extremum(name, find, x, dim, keepdim):
    """The index of the extremum (``find``: argmax or argmin), flat when dim is None."""
    refuse_unordered(x._data, name)
    if x._data.dtype.kind == "b":
        raise DtypeError(f"{name}(): does not support bool input")
    if dim is None:  # keepdim keeps every dim, as size 1
        if x._data.size == 0:
            raise IndexError(f"{name}(): Expected reduction dim to be specified for input.numel() == 0.")
        index = find(x._data)
        return Tensor._make(index.reshape((1,) * x.ndim) if keepdim else index)
    dim = dim_index(dim, x.ndim)  # (PyTorch's IndexError for a dim out of range, where the shape lookup failed)
    if x.ndim and x.shape[dim] == 0:
        raise IndexError(f"{name}(): Expected reduction dim {dim} to have non-zero size.")
    if not x.ndim and dim in (0, -1):  # (NumPy takes axis 0 of a 0-d array, CuPy does not: its one element)
        return Tensor._make(find(x._data.reshape(1), axis=0))
    return Tensor._make(find(x._data, axis=dim, keepdims=keepdim))


def argmax(x, dim=None, keepdim=False):
    return _arg_extremum("argmax", xp.argmax, x, dim, keepdim)


def argmin(x, dim=None, keepdim=False):
    return _arg_extremum("argmin", xp.argmin, x, dim, keepdim)


def _shift(x, axes):
    """max over axes (kept): what softmax subtracts first so that no e^x overflows. A slice holding +inf (or
    only -inf) then gets inf - inf = NaN throughout, as PyTorch's softmax and log_softmax give. (Array
    methods rather than xp.max: NumPy's function wrappers cost more than a small array's arithmetic.)"""
    if x.size == 0:  # no maximum to shift by: softmax of nothing is empty, logsumexp of nothing -inf
        return xp.zeros_like(x.sum(axis=axes, keepdims=True))
    if type(x) is numpy.ndarray and x.dtype.kind != "c":  # (NumPy's ufunc, without ndarray.max's Python wrapper)
        if x.size <= 1024:  # (a small array: maximum's one reduction costs less than fmax's and its check)
            return numpy.maximum.reduce(x, axes, None, None, True)
        # fmax's reduction, a third of maximum's time over short rows (attention's 64 keys), is the same shift but
        # where a slice holds NaN (maximum's is NaN, fmax's the largest number: either way a NaN among the terms
        # makes the slice's results NaN, as its sum is) and where the maximum is 0, whose sign the order of the
        # comparisons picks (x - m is then ±0, and log_softmax's x - m - 0 keeps that sign): taken again there
        shift = numpy.fmax.reduce(x, axes, None, None, True)
        # (all: logical_and's reduction, without ndarray.all's Python wrapper)
        return shift if numpy.logical_and.reduce(shift, None) else numpy.maximum.reduce(x, axes, None, None, True)
    return (x.real if x.dtype.kind == "c" else x).max(axis=axes, keepdims=True)  # (complex: a real shift)


def _stable_max(x, axes):
    """The shift, with infinite maxima replaced by 0 so x - m stays finite: logsumexp's, which is inf where
    a slice holds +inf and -inf where it holds only -inf. (Whether any maximum needs replacing is asked by
    isfinite, not by one sum of the maxima: rows masked with finfo.min, as Hugging Face's models mask,
    overflow that sum, and NumPy warned of it from its own module, where the library's filter does not reach.)"""
    m = _shift(x, axes)
    finite = xp.isfinite(m)
    return m if finite.all() else xp.where(finite, m, 0)


class LogSumExp(Primitive):
    """y = ln Σ_i e^(x_i);   dL/dx_i = dL/dy · e^(x_i - y)  (the softmax; complex: conjugated)"""

    pytorch_name = "LogsumexpBackward0"
    saves_output = True
    handles_complex = True

    def forward(self, x):
        m = _stable_max(x, self.axes)
        with errstate(divide="ignore"):  # (a slice of only -inf sums to 0: its log is -inf, as PyTorch's, unwarned)
            y = xp.log(xp.sum(xp.exp(x - m), axis=self.axes, keepdims=True)) + m
        return row_major(y if self.keepdim else xp.squeeze(y, axis=self.axes))  # (PyTorch's reductions: row-major)

    def backward(self, grad, y, x):
        return (spread(grad, x, self.axes, self.keepdim) * conj((x - spread(y, x, self.axes, self.keepdim)).exp()),)


def logsumexp(input, dim, keepdim=False, *, out=None):
    if dim is None:  # (a dim is required: None is not every dim here, as PyTorch's parser says)
        raise TypeError("logsumexp(): argument 'dim' must be tuple of ints, not NoneType")
    x = floating(input)  # integers and bools: the default dtype (PyTorch's), not NumPy's float64
    return write_out(LogSumExp.apply(x, axes=normalize_dims(dim, x.ndim), keepdim=keepdim), out)


def softmax_axis(x, dim):
    """The axis softmax normalises over (None for a 0-d tensor, whose softmax is 1)."""
    ndim = x._data.ndim
    if type(dim) is int and -ndim <= dim < ndim:  # (the common case, without normalize_dims' others)
        return dim % ndim
    axes = normalize_dims(dim, ndim)
    if len(axes) > 1:
        raise TypeError(f"softmax: dim must be one int, got {dim}")
    return axes[0] if axes else None


def softmax_array(x, axis):
    """e^(x_i) / Σ_j e^(x_j) along ``axis`` of an array, shifted by the maximum so nothing overflows (float16 in
    float32, rounded once, as PyTorch's)."""
    if x.dtype == float16:
        return softmax_array(x.astype(float32), axis).astype(float16)
    if x.dtype.kind == "c":
        refuse_unordered(x, "softmax")
    x = row_major(x)  # (PyTorch's result is contiguous whatever x's layout: a transpose's)
    if x.size > LARGE and blockable(axis, x):
        return by_row_blocks(_softmax_block, (x,), axis)
    e = x - _shift(x, axis)
    e = xp.exp(e, out=e) if e.ndim else xp.exp(e)  # (a 0-d difference is a NumPy scalar)
    e /= _kept_sum(e, axis)
    return e


def _softmax_block(x, e):
    """softmax_array's passes over a block of slices (axis 1), into e."""
    numpy.subtract(x, _shift(x, 1), out=e)
    numpy.exp(e, out=e)
    e /= _kept_sum(e, 1)


class Softmax(Primitive):
    """y_i = e^(x_i) / Σ_j e^(x_j);   dL/dx_i = y_i (dL/dy_i - Σ_j dL/dy_j · y_j)"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True

    def forward(self, x):
        return softmax_array(x, self.dim)

    def backward(self, grad, y, x):
        return (SoftmaxGrad.apply_in_backward(grad, y, dim=self.dim),)


class SoftmaxGrad(Primitive):
    """Softmax's backward as one node: z = y ⊙ (g - Σ_j g_j y_j)  (g = dL/dy, y = the softmax);
    dL/dg = y ⊙ (u - Σ_j u_j y_j) (the same map, u = dL/dz),
    dL/dy = u ⊙ (g - Σ_j g_j y_j) - g · Σ_j u_j y_j.
    Two array passes instead of four ops; still differentiable for second derivatives."""

    def forward(self, g, y):
        if g.dtype == float16:  # in float32, rounded once, as PyTorch's
            return self.forward(g.astype(float32), y.astype(float32)).astype(float16)
        if g.size > LARGE and blockable(self.dim, g, y):
            return by_row_blocks(_softmax_grad_block, (g, y), self.dim, scratch=1)
        z = g * y
        z -= y * _kept_sum(z, self.dim)
        return z

    def backward(self, u, z, g, y):
        grad_g = SoftmaxGrad.apply(u, y, dim=self.dim) if g.requires_grad else None
        grad_y = None
        if y.requires_grad:
            grad_y = u * (g - (g * y).sum(self.dim, keepdim=True)) - g * (u * y).sum(self.dim, keepdim=True)
        return grad_g, grad_y


def _softmax_grad_block(g, y, z, product):
    """SoftmaxGrad's passes over a block of slices (axis 1), into z (product: scratch for y Σ_j g_j y_j)."""
    numpy.multiply(g, y, out=z)
    z -= numpy.multiply(y, _kept_sum(z, 1), out=product)


def log_softmax_array(x, axis):
    """x_i - ln Σ_j e^(x_j) along ``axis`` of an array, shifted by the maximum (float16: see _log_softmax_half)."""
    x = row_major(x)  # (PyTorch's result is contiguous whatever x's layout: a transpose's)
    if x.dtype == float16:
        return _log_softmax_half(x, axis)
    if x.size > LARGE and blockable(axis, x):
        return by_row_blocks(_log_softmax_block, (x,), axis, scratch=1)
    shifted = x - _shift(x, axis)
    shifted -= xp.log(_kept_sum(xp.exp(shifted), axis))
    return shifted


def _log_softmax_block(x, shifted, e):
    """log_softmax_array's passes over a block of slices (axis 1), into shifted (e: scratch for e^shifted)."""
    numpy.subtract(x, _shift(x, 1), out=shifted)
    shifted -= numpy.log(_kept_sum(numpy.exp(shifted, out=e), 1))


def _log_softmax_half(x, axis):
    """float16 in float32, rounded once at the end, as PyTorch's kernels; its kernel for the last dim holds
    Σ e^(x - max) and then its log in float16 (rounded there: a fifth of the values came out a unit off
    without them)."""
    if axis is None or axis != x.ndim - 1:
        return log_softmax_array(x.astype(float32), axis).astype(float16)
    wide = x.astype(float32)
    shifted = wide - _shift(wide, axis)
    total = xp.exp(shifted).sum(axis=axis, keepdims=True).astype(float16).astype(float32)
    shifted -= xp.log(total).astype(float16).astype(float32)
    return shifted.astype(float16)


class LogSoftmax(Primitive):
    """y_i = x_i - ln Σ_j e^(x_j);   dL/dx_i = dL/dy_i - e^(y_i) Σ_j dL/dy_j"""

    saves_inputs = False  # backward needs no input's values
    saves_output = True

    def forward(self, x):
        if x.dtype.kind == "c":  # (checked here, not in a call: this is a hot path)
            refuse_unordered(x, "log_softmax")
        return log_softmax_array(x, self.dim)

    def backward(self, grad, y, x):
        return (LogSoftmaxGrad.apply_in_backward(grad, y, dim=self.dim),)


class LogSoftmaxGrad(Primitive):
    """Log-softmax's backward as one node: z = g - e^y · Σ_j g_j  (g = dL/dy, y = the log-softmax);
    dL/dg = u - Σ_j u_j e^(y_j),   dL/dy = -u ⊙ e^y · Σ_j g_j   (u = dL/dz)."""

    def forward(self, g, y):
        if g.dtype == float16:  # in float32, rounded once, as PyTorch's
            return self.forward(g.astype(float32), y.astype(float32)).astype(float16)
        if g.size > LARGE and blockable(self.dim, g, y):
            return by_row_blocks(_log_softmax_grad_block, (g, y), self.dim)
        z = xp.exp(y)
        z *= _kept_sum(g, self.dim)
        return xp.subtract(g, z, out=z) if z.ndim else g - z  # (in place, no negated sum; a 0-d z is a NumPy scalar)

    def backward(self, u, z, g, y):
        grad_g = grad_y = None
        if g.requires_grad:
            grad_g = u - (u * y.exp()).sum(self.dim, keepdim=True)
        if y.requires_grad:
            grad_y = -u * y.exp() * g.sum(self.dim, keepdim=True)
        return grad_g, grad_y


def _log_softmax_grad_block(g, y, z):
    """LogSoftmaxGrad's passes over a block of slices (axis 1), into z."""
    numpy.exp(y, out=z)
    z *= _kept_sum(g, 1)
    numpy.subtract(g, z, out=z)


# -- the names these ops go by ------------------------------------------------------------------
# dim/keepdim are PyTorch's; axis/keepdims (NumPy's) are accepted too


@names("sum", function=False)  # autograd.sum: ops/functions.py
def _sum(input, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None):
    x = input if dtype is None else input.to(dtype)
    total = sum(x, axis if dim is None else dim, keepdim if keepdims is None else keepdims)
    return total if dtype is None or total.dtype == dtype else total.to(dtype)  # (int32 stays int32 when asked)


@names("mean", function=False)
def _mean(input, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None):
    x = input if dtype is None else input.to(dtype)
    return mean(x, axis if dim is None else dim, keepdim if keepdims is None else keepdims)


names("var", function=False)(var)
names("std", function=False)(std)
names("max", function=False)(max)
names("min", function=False)(min)
names("logsumexp")(logsumexp)
names("argmax", function=False)(argmax)
names("argmin", function=False)(argmin)


def _refuse_integers(x, kernel):
    """PyTorch has no integer softmax (NumPy would fail casting e^x back into the integer array)."""
    from .conversion import type_name

    raise NotImplementedError(f"\"{kernel}_lastdim_kernel_impl\" not implemented for '{type_name(x.dtype)}'")


@names("softmax", function=False)
def softmax(input, dim, dtype=None):
    x = input if dtype is None else input.to(dtype)
    if x._data.dtype.kind in "biu":
        _refuse_integers(x, "softmax")
    return Softmax.apply(x, dim=softmax_axis(x, dim))


@names("log_softmax", function=False)
def log_softmax(input, dim, dtype=None):
    x = input if dtype is None else input.to(dtype)
    if x._data.dtype.kind in "biu":
        _refuse_integers(x, "log_softmax")
    return LogSoftmax.apply(x, dim=softmax_axis(x, dim))
