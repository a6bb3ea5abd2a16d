"""Ranges of points: ``arange``, ``linspace`` and ``logspace``, computed as PyTorch's CPU kernels compute them
(where NumPy's own ranges differ from PyTorch's by an ulp, a point, or an integer rule: a network of
sin(30 x) makes such differences visible)."""

import math
import operator
import warnings

import numpy

from . import backend
from .backend import xp
from .factories import _fitted, _float, _made, out_dtype, written
from .graph import program_stacklevel
from .operands import python_number, real_part
from .random import _LARGEST_EXACT_INTEGER
from .tensor import Tensor


def _number(value):
    """A 0-d tensor bound (arange(x.size(0)), arange(n) with n a tensor) or a NumPy scalar as its Python number."""
    return value.item() if isinstance(value, Tensor) else python_number(value)


def _real_number(value):
    """An arange bound as PyTorch's kernel reads it, a double: a complex number with no imaginary part is its real
    part (a float, so arange(0, 4+0j) is float32), one with an imaginary part is refused as PyTorch refuses it."""
    value = _number(value)
    return real_part(value, "double") if isinstance(value, complex) else value


def _range_bounds(bound, start, end, step):
    """arange's (start, end, step), as PyTorch's argument parser reads its two forms: a start named without an end
    is the missing end (arange(start=1) is no arange(1)); a step beside one of start and end (arange(4, step=2),
    arange(start=1, step=2)), or a start named beside the lone bound, fits neither form: refused, not counted
    from 0."""
    if bound is not None and start is None and end is not None:
        start = bound
    elif bound is not None and start is None and step is None:
        end = bound
    elif bound is not None or (start is None) is not (end is None) and step is not None:
        given = [type(bound).__name__] if bound is not None else []
        given += [f"{name}={type(value).__name__}" for name, value in (("start", start), ("end", end), ("step", step))
                  if value is not None]
        raise TypeError(f"arange() received an invalid combination of arguments - got ({', '.join(given)}), but "
                        "expected (end) or (start, end, step=1)")
    if end is None:
        raise TypeError('arange() missing 1 required positional arguments: "end"')
    return _real_number(0 if start is None else start), _real_number(end), _real_number(1 if step is None else step)


def _steps(steps):
    """linspace's and logspace's number of points: an int, or a 0-d integer tensor holding one (PyTorch takes
    ``steps=n`` with n a 0-d tensor; one with dimensions it refuses)."""
    if isinstance(steps, Tensor):
        if steps.ndim:
            raise TypeError(f"linspace(): argument 'steps' must be int, not a Tensor of shape {tuple(steps.shape)}")
        return operator.index(steps)
    return steps


def arange(bound=None, /, end=None, step=None, *, start=None, out=None, dtype=None, layout=None, device=None,
           requires_grad=False):
    """start, start + step, ... up to (not including) end; int64 when every bound is an integer. PyTorch's two
    forms: ``arange(end)`` (also ``arange(end=n)``), and ``arange(start, end, step=1)``, whose ``start`` and ``end``
    may be named; a lone positional ``bound`` is the end, or the start when ``end`` follows."""
    dtype = out_dtype(dtype, out)
    start, end, step = _range_bounds(bound, start, end, step)
    if dtype is None and all(isinstance(v, int) for v in (start, end, step)):
        dtype = backend.int64
    dtype = xp.dtype(_float(dtype))
    if dtype.kind in "bc":  # (PyTorch's kernel has no bool or complex loop: linspace's has)
        from .ops.conversion import type_name  # (the ops import this module: imported when needed)

        raise NotImplementedError(f"\"arange_cpu\" not implemented for '{type_name(dtype)}'")
    if not all(math.isfinite(v) for v in (start, end)):
        raise RuntimeError(f"unsupported range: {start} -> {end}")
    if step == 0:
        raise RuntimeError("step must be nonzero")
    if dtype.kind in "iub" and int(step) == 0:  # PyTorch casts the step to the integer dtype
        raise ValueError(f"step must be nonzero (a step of {step} is 0 as {dtype})")
    if (end - start) * step < 0:  # NumPy would return an empty array
        raise RuntimeError("upper bound and lower bound inconsistent with step sign")
    if (float(end) - float(start)) / float(step) > 2**63 - 1:
        raise RuntimeError("invalid size, possible overflow?")
    if _exact_points(start, end, step, dtype):  # integers that the dtype holds exactly: every way of computing
        points = xp.arange(start, end, step, dtype=dtype)  # them agrees, NumPy's is the fastest (the common case)
    elif dtype.kind in "iu":
        points = _integer_range(start, end, step, dtype)
    elif dtype.kind == "f":
        points = _floating_range(start, end, step, dtype)
    else:
        points = xp.arange(start, end, step, dtype=dtype)
    if out is not None and out.numel() not in (0, len(points)):
        warnings.warn(f"The number of elements in the out tensor of shape {list(out.shape)} is {out.numel()} which "
                      f"does not match the computed number of elements {len(points)}. Note that this may occur as a "
                      f"result of rounding error. The out tensor will be resized to a tensor of shape "
                      f"({len(points)},).", UserWarning, stacklevel=program_stacklevel())
    return written(_made(xp.asarray(points), device, requires_grad), out, points=True)


def _exact_points(start, end, step, dtype):
    """Whether start, end and step are integers and every point of the range is one that ``dtype`` holds
    exactly (int64, or a floating dtype below 2^(mantissa bits + 1))."""
    if not all(type(v) is int or (type(v) is float and v.is_integer()) for v in (start, end, step)):
        return False
    if dtype == numpy.int64:
        return True
    return max(abs(start), abs(end)) <= _LARGEST_EXACT_INTEGER.get(dtype.name, -1)


def _integer_range(start, end, step, dtype):
    """arange in an integer dtype as PyTorch computes it: start and step truncated to integers, start +
    i·step; the number of points from the bounds truncated too for int64, from the bounds as given
    (ceil((end - start) / step), in float64) for the other integer dtypes."""
    first, stride = int(start), int(step)
    if dtype == numpy.int64:
        last, sign = int(end), (stride > 0) - (stride < 0)
        span = last - first + stride - sign
        size = max(abs(span) // abs(stride) if (span >= 0) == (stride > 0) else 0, 0)  # (C's division)
    else:
        size = max(math.ceil((float(end) - float(start)) / float(step)), 0)
    return numpy.arange(first, first + stride * size, stride, dtype=numpy.int64)[:size].astype(dtype, copy=False)


def _floating_range(start, end, step, dtype, vector_bytes=32):
    """arange in a floating dtype as PyTorch's CPU kernel computes it: ceil((end - start) / step) points
    (in float64), each start + i·step in float64 (float32 for float16) as one fused multiply-add, then
    rounded to the dtype. Its vectorised loop fills pairs of 256-bit vectors (8 float32 points each:
    x86's AVX2 width, which PyTorch keeps for this kernel under AVX-512 too) from each vector's first
    point, rounded to the dtype, plus j·step; that is done here too, so the points are PyTorch's to the
    bit on x86 (on other CPUs they may differ by an ulp past the first 2 × 8 float32 points)."""
    size = max(math.ceil((float(end) - float(start)) / float(step)), 0)
    accumulate = numpy.dtype(numpy.float32 if dtype == numpy.float16 else numpy.float64)
    wide = numpy.float64 if accumulate == numpy.float32 else numpy.longdouble  # (for the fused multiply-add)
    stride = wide(accumulate.type(step))

    def fused(base, count):  # base + count·step, rounded once to the accumulate type, then to the dtype
        return (base + stride * count.astype(wide)).astype(accumulate).astype(dtype)

    lanes = vector_bytes // dtype.itemsize
    vectorised = size // (2 * lanes) * (2 * lanes)
    first = wide(accumulate.type(start))
    bases = fused(first, numpy.arange(0, vectorised, lanes)).astype(wide)  # each vector's first point
    blocks = fused(bases[:, None], numpy.arange(lanes)[None, :]).reshape(-1)
    return numpy.concatenate([blocks, fused(first, numpy.arange(vectorised, size))])


def _spaced_bounds(op, start, end, steps, dtype):
    """start and end as numbers (0-d tensors taken, larger ones refused) and steps checked, as PyTorch's
    linspace and logspace check them (complex bounds want a complex dtype)."""
    if steps < 0:
        raise RuntimeError("number of steps must be non-negative")
    dims = [v.ndim if isinstance(v, Tensor) else 0 for v in (start, end)]
    if any(dims):
        raise RuntimeError(f"{op} only supports 0-dimensional start and end tensors, but got start with "
                           f"{dims[0]} dimension(s) and end with {dims[1]} dimension(s).")
    start, end = _number(start), _number(end)
    if dtype is not None and xp.dtype(dtype).kind != "c" and (isinstance(start, complex) or isinstance(end, complex)):
        from .ops.conversion import c_name, type_name  # (the ops import this module: imported when needed)

        raise RuntimeError(f"torch.{op}(): inferred dtype {c_name(xp.dtype(backend.get_default_complex_dtype()))} "
                           f"can't be safely cast to passed dtype {type_name(xp.dtype(dtype))}")
    if dtype is not None and xp.dtype(dtype).kind == "b" and steps > 1:  # (0 or 1 points need no arithmetic)
        raise NotImplementedError(f"\"{op}_cpu\" not implemented for 'Bool'")
    if dtype is not None and xp.dtype(dtype).kind in "iuf":
        # PyTorch casts the bounds to the dtype first, checked (a negative int wraps into an unsigned one)
        start, end = (_number(_fitted(bound, xp.dtype(dtype))) for bound in (start, end))
    return start, end


def _spaced_dtype(start, end, dtype):
    """linspace's and logspace's dtype: the given one, else the default complex dtype for a complex bound,
    else the default dtype."""
    if dtype is None and (isinstance(start, complex) or isinstance(end, complex)):
        return backend.get_default_complex_dtype()
    return _float(dtype)


# PyTorch's wheels are compiled to fuse start + step·i into one multiply-add (a single rounding), except
# for float16, whose operations each round: a wider dtype does the fused ones exactly, or all but never
# (in NumPy, on the host: CuPy has no long double)
_FUSED = {"float32": numpy.float64, "float64": numpy.longdouble, "complex64": numpy.complex128,
          "complex128": numpy.clongdouble}


def _spaced_points(start, end, steps, dtype):
    """linspace's points as PyTorch computes them: start and end cast to the dtype, step = (end - start)
    / (steps - 1) in it, then start + i·step for the first half of the points and end - (steps - 1 - i)·step
    for the second, each rounded once to the dtype (for an integer dtype, in float64 and then truncated
    towards 0). NumPy's linspace works from the start alone, in float64, and floors integers: an ulp
    or so away from PyTorch's points, which a network of sin(30 x) (SIREN) makes visible."""
    dtype = numpy.dtype(dtype)
    work = numpy.dtype(numpy.float64) if dtype.kind in "iu" else dtype
    if dtype.kind in "iu":
        start, end = int(start), int(end)
    start, end = work.type(start), work.type(end)
    if steps <= 1:
        return xp.full(steps, start, dtype=dtype)
    step = (end - start) / work.type(steps - 1)
    points = _from_both_ends(start, end, step, steps, _FUSED.get(work.name, work.type))
    return xp.asarray(points.astype(work).astype(dtype))


def _from_both_ends(start, end, step, steps, wide):
    """start + i·step for the first half of ``steps`` points and end - (steps - 1 - i)·step for the second,
    computed in ``wide``: PyTorch's linspace and logspace walk in from both ends."""
    i = numpy.arange(steps)
    half = steps // 2
    return numpy.concatenate([wide(start) + wide(step) * i[:half].astype(wide),
                              wide(end) - wide(step) * (steps - 1 - i[half:]).astype(wide)])


def linspace(start, end, steps, *, out=None, dtype=None, layout=None, device=None, requires_grad=False):
    dtype, steps = out_dtype(dtype, out), _steps(steps)
    start, end = _spaced_bounds("linspace", start, end, steps, dtype)
    return written(_made(_spaced_points(start, end, steps, xp.dtype(_spaced_dtype(start, end, dtype))), device,
                         requires_grad), out, points=True)


def logspace(start, end, steps, base=10.0, *, out=None, dtype=None, layout=None, device=None, requires_grad=False):
    """base ** e for steps exponents e spaced evenly from start to end, as PyTorch computes them: start
    and end cast to the dtype, the exponents in float64 from either end (as linspace's points, but each
    operation rounded), the powers in float64, cast to the dtype (complex ones as NumPy's logspace
    gives them)."""
    dtype, steps = out_dtype(dtype, out), _steps(steps)
    start, end = _spaced_bounds("logspace", start, end, steps, dtype)
    dtype = numpy.dtype(_spaced_dtype(start, end, dtype))
    if dtype.kind == "c":
        return written(_made(xp.asarray(numpy.logspace(start, end, steps, base=base).astype(dtype)), device,
                             requires_grad), out, points=True)
    if steps <= 1:  # (PyTorch raises base to start itself here, not to start cast to the dtype)
        exponents = numpy.array([float(start)])[:steps]
    else:
        start, end = (int(start), int(end)) if dtype.kind in "iu" else (dtype.type(start), dtype.type(end))
        step = float(end - start) / (steps - 1)
        exponents = _from_both_ends(float(start), float(end), step, steps, numpy.float64)
    with numpy.errstate(over="ignore", invalid="ignore"):
        points = numpy.array([_c_pow(float(base), e) for e in exponents.tolist()]).astype(dtype)
    return written(_made(xp.asarray(points), device, requires_grad), out, points=True)


def _c_pow(base, exponent):
    """C's pow, as PyTorch calls it (math.pow is it, but raises where C returns inf or NaN; NumPy's
    vectorised power is an ulp off it at times)."""
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf if base > 0 or exponent % 2 != 1 else -math.inf
    except ValueError:  # 0 to a negative power, or a negative base to a fractional one
        return math.inf if base == 0 else math.nan
