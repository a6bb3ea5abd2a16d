"""``autograd.testing.assert_close``: PyTorch's comparison for tests, with its default tolerances.

    |actual - expected| <= atol + rtol · |expected|,   elementwise

with (rtol, atol) from the dtype unless both are given: float16 (1e-3, 1e-5), float32
(1.3e-6, 1e-5), float64 (1e-7, 1e-7), and exact equality for integers and bools. Shapes
and dtypes must match (``check_dtype=False`` compares values of different dtypes); NaNs
are equal only with ``equal_nan=True``. Sequences and mappings are compared item by item.

Two tensor-likes compare only when one's type is the other's or a subclass of it (with
``allow_subclasses=False``, the same type): a tensor beside a NumPy array or a number is a
TypeError, as in PyTorch. ``msg`` replaces the message, or, if callable, is given it to rewrite.
"""

import numpy

from .backend import to_numpy
from .tensor import Tensor

_TOLERANCES = {"float16": (1e-3, 1e-5), "float32": (1.3e-6, 1e-5), "float64": (1e-7, 1e-7),
               "complex64": (1.3e-6, 1e-5), "complex128": (1e-7, 1e-7)}


_NUMBERS = (bool, int, float, complex, numpy.number, numpy.bool_)


def _failure(msg, default):
    """The AssertionError to raise: msg, or msg(default) where msg is callable, or the default message."""
    return AssertionError(msg(default) if callable(msg) else msg or default)


def _comparable(actual, expected, allow_subclasses):
    """Refuse what PyTorch has no comparison for: tensor-likes of unrelated types (TypeError)."""
    if isinstance(actual, _NUMBERS) and isinstance(expected, _NUMBERS):
        return
    related = isinstance(actual, type(expected)) or isinstance(expected, type(actual))
    if not related or (not allow_subclasses and type(actual) is not type(expected)):
        raise TypeError(f"No comparison pair was able to handle inputs of type {type(actual)} and {type(expected)}.")


def assert_close(actual, expected, *, allow_subclasses=True, rtol=None, atol=None, equal_nan=False, check_dtype=True,
                 msg=None, **_):
    """Raise AssertionError (naming the worst element) unless ``actual`` is close to ``expected``."""
    if (rtol is None) != (atol is None):
        raise ValueError(f"Both 'rtol' and 'atol' must be either specified or omitted, but got no "
                         f"{'atol' if atol is None else 'rtol'}.")
    if isinstance(expected, (list, tuple)) and not isinstance(actual, Tensor):
        if len(actual) != len(expected):
            raise _failure(msg, f"The length of the sequences mismatch: {len(actual)} != {len(expected)}")
        for a, e in zip(actual, expected):
            assert_close(a, e, allow_subclasses=allow_subclasses, rtol=rtol, atol=atol, equal_nan=equal_nan,
                         check_dtype=check_dtype, msg=msg)
        return
    if isinstance(expected, dict):
        if set(actual) != set(expected):
            raise _failure(msg, f"The keys of the mappings do not match: {sorted(actual)} != {sorted(expected)}")
        for key in expected:
            assert_close(actual[key], expected[key], allow_subclasses=allow_subclasses, rtol=rtol, atol=atol,
                         equal_nan=equal_nan, check_dtype=check_dtype, msg=msg)
        return
    _comparable(actual, expected, allow_subclasses)
    a, e = _array(actual), _array(expected)
    if a.shape != e.shape:
        raise _failure(msg, f"The values for attribute 'shape' do not match: {a.shape} != {e.shape}.")
    if check_dtype and a.dtype != e.dtype:
        raise _failure(msg, f"The values for attribute 'dtype' do not match: {a.dtype} != {e.dtype}.")
    if rtol is None:
        rtol, atol = _TOLERANCES.get(str(numpy.promote_types(a.dtype, e.dtype)), (0.0, 0.0))
    close = numpy.isclose(a, e, rtol=rtol, atol=atol, equal_nan=equal_nan)
    if close.all():
        return
    with numpy.errstate(all="ignore"):
        difference = numpy.abs(a.astype(numpy.float64) - e.astype(numpy.float64)) if a.dtype.kind != "c" \
            else numpy.abs(a - e)
        relative = difference / numpy.abs(e)
    worst = tuple(int(i) for i in numpy.unravel_index(
        numpy.argmax(numpy.where(close, -1, numpy.nan_to_num(difference, nan=numpy.inf))), a.shape))
    kind = "close" if rtol or atol else "equal"
    raise _failure(msg, (
        f"Tensor-likes are not {kind}!\n\nMismatched elements: {int((~close).sum())} / {close.size} "
        f"({100 * (~close).sum() / close.size:.1f}%)\n"
        f"Greatest absolute difference: {difference[worst]} at index {worst} (up to {atol} allowed)\n"
        f"Greatest relative difference: {relative[worst]} at index {worst} (up to {rtol} allowed)"))


def _array(value):
    return to_numpy(value._data if isinstance(value, Tensor) else value)
