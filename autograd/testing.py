"""``autograd.testing``: PyTorch's ``torch.testing``, ``assert_close`` and ``make_tensor``.

``assert_close(actual, expected)`` passes where, elementwise,

    |actual - expected| <= atol + rtol · |expected|

with (rtol, atol) from the dtypes unless both are given: float16 (1e-3, 1e-5), float32
(1.3e-6, 1e-5), float64 (1e-7, 1e-7), complex as its parts, exact equality for integers and bools;
for two dtypes (``check_dtype=False``), the looser of the two. Shapes and dtypes must match
(and devices, strides when asked); NaNs are equal only with ``equal_nan=True`` (a complex NaN is
one with a NaN part). Sequences and mappings are compared item by item, and a failure names the
item (``item [1]``, ``item ['b']``). Python numbers compare as numbers of their type; None only
with None.

Two tensor-likes compare only when one's type is the other's or a subclass of it (with
``allow_subclasses=False``, the same type): a tensor beside a NumPy array or a number is a
TypeError, as in PyTorch. ``msg`` replaces the message, or, if callable, is given it to rewrite.

``make_tensor(*shape, dtype=, device=)`` draws a tensor uniformly from [low, high) (defaults per
dtype kind, see ``make_tensor``), optionally requiring grad, non-contiguous or without zeros.
"""

import collections.abc
import math
import warnings

import numpy

from .backend import to_numpy
from .graph import program_stacklevel
from .tensor import Tensor

_TOLERANCES = {"float16": (1e-3, 1e-5), "float32": (1.3e-6, 1e-5), "float64": (1e-7, 1e-7),
               "complex64": (1.3e-6, 1e-5), "complex128": (1e-7, 1e-7)}

_PYTHON_NUMBERS = (int, float, complex)
_NUMBERS = (bool, *_PYTHON_NUMBERS, numpy.number, numpy.bool_)


class _Mismatch(AssertionError):
    """A comparison's failure, with the item of the containers where it happened (PyTorch's trailer)."""

    def __init__(self, message, path=""):
        super().__init__(message)
        self.message, self.path = message, path


def _failure(msg, default):
    """The AssertionError to raise: msg, or msg(default) where msg is callable, or the default message."""
    return AssertionError(msg(default) if callable(msg) else msg or default)


def assert_allclose(actual, expected, rtol=None, atol=None, equal_nan=True, msg=""):
    """PyTorch's deprecated ``assert_allclose`` (it warns so): ``assert_close`` with NaN equal to NaN, dtypes
    not compared, and its own default tolerances (float16 1e-3/1e-3, float32 1e-4/1e-5, float64 1e-5/1e-8)."""
    warnings.warn("`torch.testing.assert_allclose()` is deprecated since 1.12 and will be removed in a future release. "
                  "Please use `torch.testing.assert_close()` instead. You can find detailed upgrade instructions in "
                  "https://github.com/pytorch/pytorch/issues/61844.", FutureWarning, stacklevel=program_stacklevel())
    from .factories import tensor

    actual = actual if isinstance(actual, Tensor) else tensor(actual)
    expected = expected if isinstance(expected, Tensor) else tensor(expected, dtype=actual.dtype)
    if rtol is None and atol is None:
        tolerances = {"float16": (1e-3, 1e-3), "float32": (1e-4, 1e-5), "float64": (1e-5, 1e-8)}
        rtol, atol = max((tolerances.get(t.dtype.name, (0.0, 0.0)) for t in (actual, expected)),
                         key=lambda pair: pair[0])
    assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan, check_dtype=False, msg=msg or None)


def assert_close(actual, expected, *, allow_subclasses=True, rtol=None, atol=None, equal_nan=False, check_device=True,
                 check_dtype=True, check_layout=True, check_stride=False, msg=None):
    """Raise AssertionError (naming the worst elements) unless ``actual`` is close to ``expected``."""
    if (rtol is None) != (atol is None):
        raise ValueError(f"Both 'rtol' and 'atol' must be either specified or omitted, but got no "
                         f"{'atol' if atol is None else 'rtol'}.")
    options = {"allow_subclasses": allow_subclasses, "rtol": rtol, "atol": atol, "equal_nan": equal_nan,
               "check_device": check_device, "check_dtype": check_dtype, "check_stride": check_stride}
    try:
        _compare(actual, expected, "", options)
    except _Mismatch as mismatch:
        message = mismatch.message + (f"\n\nThe failure occurred for item {mismatch.path}" if mismatch.path else "")
        raise _failure(msg, message) from None


def _is_sequence(value):
    return isinstance(value, collections.abc.Sequence) and not isinstance(value, str)


def _compare(actual, expected, path, options):
    """Compare two inputs, recursing into sequences and mappings; ``path`` names the item reached."""
    if _is_sequence(actual) and _is_sequence(expected):
        if len(actual) != len(expected):
            raise _Mismatch(f"The length of the sequences mismatch: {len(actual)} != {len(expected)}", path)
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, f"{path}[{i}]", options)
        return
    if isinstance(actual, collections.abc.Mapping) and isinstance(expected, collections.abc.Mapping):
        if set(actual) != set(expected):
            raise _Mismatch(f"The keys of the mappings do not match:\n"
                            f"Missing keys in the actual mapping: {sorted(set(expected) - set(actual))}\n"
                            f"Additional keys in the actual mapping: {sorted(set(actual) - set(expected))}", path)
        for key in expected:
            _compare(actual[key], expected[key], f"{path}[{key!r}]", options)
        return
    if actual is None or expected is None:
        if actual is not expected:
            raise _Mismatch(f"None mismatch: {actual} is not None" if expected is None else
                            f"None mismatch: None is not {expected}", path)
        return
    if isinstance(actual, _NUMBERS) and isinstance(expected, _NUMBERS):
        _compare_numbers(actual, expected, path, options)
        return
    _comparable(actual, expected, options["allow_subclasses"])
    _compare_tensor_likes(actual, expected, path, options)


def _comparable(actual, expected, allow_subclasses):
    """Refuse what PyTorch has no comparison for (TypeError): tensor-likes of unrelated types, and inputs
    that are no tensor-like at all (strings, ...)."""
    related = isinstance(actual, type(expected)) or isinstance(expected, type(actual))
    tensor_like = isinstance(actual, (Tensor, numpy.ndarray)) and isinstance(expected, (Tensor, numpy.ndarray))
    if not tensor_like or not related or (not allow_subclasses and type(actual) is not type(expected)):
        raise TypeError(f"No comparison pair was able to handle inputs of type {type(actual)} and {type(expected)}.")


def _compare_numbers(actual, expected, path, options):
    """Python (and NumPy) numbers: of one type when check_dtype, compared as Python numbers (a NumPy one
    as its Python value, as PyTorch's) at the tolerances of their dtypes; booleans only by equality."""
    if isinstance(actual, (bool, numpy.bool_)) and isinstance(expected, (bool, numpy.bool_)):
        if bool(actual) is not bool(expected):
            raise _Mismatch(f"Booleans mismatch: {actual} is not {expected}", path)
        return
    if options["check_dtype"] and type(actual) is not type(expected):
        raise _Mismatch(f"The (d)types do not match: {type(actual)} != {type(expected)}.", path)
    actual, expected = (x.item() if isinstance(x, numpy.generic) else x for x in (actual, expected))
    a, e = numpy.asarray(actual), numpy.asarray(expected)
    rtol, atol = _tolerances(a, e, options)
    common = numpy.promote_types(a.dtype, e.dtype)
    a, e = a.astype(common), e.astype(common)
    if bool(_matches(a, e, rtol, atol, options["equal_nan"])):
        return
    absolute = abs(actual - expected)
    relative = float("inf") if expected == 0 else absolute / abs(expected)
    raise _Mismatch(_mismatch_message("Scalars", rtol, atol, f"Expected {expected} but got {actual}.",
                                      ("absolute", absolute, None), ("relative", relative, None)), path)


def _compare_tensor_likes(actual, expected, path, options):
    """Tensors (or NumPy arrays): their attributes, then their values."""
    a, e = _array(actual), _array(expected)
    if a.shape != e.shape:
        raise _Mismatch(f"The values for attribute 'shape' do not match: {_shape(actual)} != {_shape(expected)}.",
                        path)
    if options["check_device"] and isinstance(actual, Tensor) and actual.device != expected.device:
        raise _Mismatch(f"The values for attribute 'device' do not match: {actual.device} != {expected.device}.",
                        path)
    if options["check_dtype"] and a.dtype != e.dtype:
        raise _Mismatch(f"The values for attribute 'dtype' do not match: {_dtype(actual)} != {_dtype(expected)}.",
                        path)
    if options["check_stride"] and isinstance(actual, Tensor) and actual.stride() != expected.stride():
        raise _Mismatch(f"The values for attribute 'stride()' do not match: {actual.stride()} != "
                        f"{expected.stride()}.", path)
    rtol, atol = _tolerances(a, e, options)
    if a.dtype != e.dtype:  # (check_dtype=False: the values compare in their common dtype)
        common = numpy.promote_types(a.dtype, e.dtype)
        a, e = a.astype(common), e.astype(common)
    matches = _matches(a, e, rtol, atol, options["equal_nan"])
    if matches.all():
        return
    if a.shape == ():  # a 0-d tensor reads as a scalar, as in PyTorch
        absolute = abs(a.item() - e.item()) if a.dtype.kind not in "biu" else abs(int(a) - int(e))
        relative = float("inf") if e.item() == 0 else absolute / abs(e.item())
        raise _Mismatch(_mismatch_message("Scalars", rtol, atol, f"Expected {e.item()} but got {a.item()}.",
                                          ("absolute", absolute, None), ("relative", relative, None)), path)
    mismatched = int((~matches).sum())
    extra = f"Mismatched elements: {mismatched} / {matches.size} ({mismatched / matches.size:.1%})"
    if a.dtype.kind in "biu":  # (integers differ in int64, as PyTorch's: no wrap-around of unsigned ones)
        absolute = numpy.abs(a.astype(numpy.int64) - e.astype(numpy.int64))
        magnitude = numpy.abs(e.astype(numpy.int64)).astype(numpy.float32)
    else:
        absolute, magnitude = numpy.abs(a - e), numpy.abs(e)
    with numpy.errstate(all="ignore"):
        relative = absolute / magnitude
    absolute, relative = numpy.where(matches, 0, absolute), numpy.where(matches, 0, relative)
    raise _Mismatch(_mismatch_message("Tensor-likes", rtol, atol, extra, _greatest("absolute", absolute),
                                      _greatest("relative", relative)), path)


def _greatest(kind, differences):
    """(kind, the greatest difference, its index): a NaN is the greatest, as torch.max has it."""
    flat = differences.reshape(-1)
    nans = numpy.flatnonzero(numpy.isnan(flat)) if flat.dtype.kind in "fc" else ()
    position = int(nans[0]) if len(nans) else int(numpy.argmax(flat))
    return kind, flat[position].item(), tuple(int(i) for i in numpy.unravel_index(position, differences.shape))


def _mismatch_message(identifier, rtol, atol, extra, *differences):
    """PyTorch's message: '<identifier> are not close!', the extra lines, then the greatest differences
    (with what was allowed, unless the comparison is for equality)."""
    equality = rtol == 0 and atol == 0
    lines = [f"{identifier} are not {'equal' if equality else 'close'}!", "", extra]
    for (kind, difference, index), tolerance in zip(differences, (atol, rtol)):
        line = (f"{kind.title()} difference: {difference}" if index is None else
                f"Greatest {kind} difference: {difference} at index {index}")
        lines.append(line + ("" if equality else f" (up to {tolerance} allowed)"))
    return "\n".join(lines)


def _tolerances(a, e, options):
    """The given (rtol, atol), or the looser of the two dtypes' defaults (PyTorch takes the looser, not the
    promoted dtype's: float16 beside float64 is compared at float16's tolerances)."""
    if options["rtol"] is not None:
        return options["rtol"], options["atol"]
    rtols, atols = zip(*(_TOLERANCES.get(str(d), (0.0, 0.0)) for d in (a.dtype, e.dtype)))
    return max(rtols), max(atols)


def _matches(a, e, rtol, atol, equal_nan):
    """Elementwise closeness; with equal_nan, complex numbers with a NaN part all match one another."""
    if a.dtype.kind == "b":
        return a == e
    if a.dtype.kind in "iu":  # exactly, in the integers themselves (no rounding through float64 beyond 2**53)
        exact = a.astype(numpy.int64) == e.astype(numpy.int64) if a.dtype != numpy.uint64 else a == e
        if rtol == 0 and atol == 0:
            return exact
        return exact | numpy.isclose(a, e, rtol=rtol, atol=atol)
    close = numpy.isclose(a, e, rtol=rtol, atol=atol, equal_nan=False)
    if equal_nan:
        close |= numpy.isnan(a) & numpy.isnan(e)  # (for complex numbers: a NaN in either part)
    return close


def _array(value):
    return numpy.asarray(to_numpy(value._data) if isinstance(value, Tensor) else value)


def _shape(value):
    return value.shape if isinstance(value, Tensor) else tuple(numpy.shape(value))


def _dtype(value):
    return value.dtype if isinstance(value, Tensor) else numpy.asarray(value).dtype


# -- make_tensor -----------------------------------------------------------------------------------------

def make_tensor(*shape, dtype, device, low=None, high=None, requires_grad=False, noncontiguous=False,
                exclude_zero=False, memory_format=None):
    """A tensor of ``shape`` (sizes, or one sequence of them) drawn uniformly from [low, high), as
    PyTorch's ``torch.testing.make_tensor``. Defaults: bool [0, 2), unsigned [0, 10), signed integers
    [-9, 10), floating and complex [-9, 9) (both parts); a bound outside the dtype's range is clamped to
    it, and integer bounds are rounded up. ``noncontiguous``: every other element of a tensor twice as
    long in its last dim (for two or more elements). ``exclude_zero``: zeros become 1 (bool, integers) or
    the dtype's smallest normal number. ``requires_grad`` is for floating and complex dtypes only."""
    from . import factories

    if len(shape) == 1 and isinstance(shape[0], collections.abc.Sequence):
        shape = shape[0]
    shape = tuple(shape)
    kind = numpy.dtype(dtype).kind
    if noncontiguous and memory_format is not None:
        raise ValueError(f"The parameters `noncontiguous` and `memory_format` are mutually exclusive, but got "
                         f"noncontiguous={noncontiguous} and memory_format={memory_format}")
    if requires_grad and kind in "biu":
        raise ValueError(f"`requires_grad=True` is not supported for boolean and integral dtypes, but got "
                         f"dtype={dtype}")
    noncontiguous = noncontiguous and math.prod(shape) > 1
    if noncontiguous:  # (twice as long, so that the elements kept are not one value repeated)
        shape = (*shape[:-1], 2 * shape[-1])
    if kind == "b":
        low, high = _low_high(low, high, dtype, 0, 2, 0, 2, integral=True)
        result = factories.randint(low, high, shape, dtype=dtype, device=device)
    elif kind in "iu":
        info = numpy.iinfo(dtype)
        # (the highest int64 cannot be drawn: randint's exclusive bound would overflow)
        low, high = _low_high(low, high, dtype, int(info.min), int(info.max) + (kind != "i" or info.bits < 64), -9,
                              10, integral=True)
        result = factories.randint(low, high, shape, dtype=dtype, device=device)
    elif kind in "fc":
        info = numpy.finfo(dtype)
        low, high = _low_high(low, high, dtype, float(info.min), float(info.max), -9, 9, integral=False)
        result = factories.empty(shape, dtype=dtype, device=device)
        if high - low >= float(info.max):  # (uniform_ needs high - low finite: draw half the range, doubled)
            result.uniform_(low / 2, high / 2).mul_(2)
        else:
            result.uniform_(low, high)  # (a complex tensor: each part)
    else:
        raise TypeError(f"The requested dtype '{dtype}' is not supported by torch.testing.make_tensor(). To request "
                        "support, file an issue at: https://github.com/pytorch/pytorch/issues")
    if noncontiguous:
        result = result[..., 1::2]  # (offset by one, to also catch offsetting issues)
    elif memory_format is not None:
        result = result.clone(memory_format=memory_format)
    if exclude_zero:
        result[result == 0] = 1 if kind in "biu" else float(numpy.finfo(dtype).tiny)
    if kind in "fc":
        result.requires_grad_(requires_grad)
    return result


def _low_high(low, high, dtype, lowest, highest, default_low, default_high, integral):
    """make_tensor's [low, high): the defaults where None, checked, clamped to [lowest, highest), and for
    integral dtypes rounded up (randint's high is exclusive)."""
    low = default_low if low is None else low
    high = default_high if high is None else high
    if any(isinstance(value, float) and math.isnan(value) for value in (low, high)):
        raise ValueError(f"`low` and `high` cannot be NaN, but got low={low} and high={high}")
    if low == high and not integral:
        warnings.warn("Passing `low==high` to `torch.testing.make_tensor` for floating or complex types is deprecated "
                      "since 2.1 and will be removed in 2.3. Use `torch.full(...)` instead.", FutureWarning,
                      stacklevel=program_stacklevel())
    elif low >= high:
        raise ValueError(f"`low` must be less than `high`, but got {low} >= {high}")
    elif high < lowest or low >= highest:
        raise ValueError(f"The value interval specified by `low` and `high` is [{low}, {high}), but {dtype} only "
                         f"supports [{lowest}, {highest})")
    low, high = min(max(low, lowest), highest), min(max(high, lowest), highest)
    return (math.ceil(low), math.ceil(high)) if integral else (low, high)
