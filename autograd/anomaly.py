"""Anomaly mode: stop at the first operation that produces NaN or inf.

Inside ``detect_anomaly()`` every operation remembers where the user created
it, checks its forward result, and in the backward pass checks the gradients
it sends on. The first non-finite value raises an error naming the op and the
line of the user's code that made it.
"""

import contextlib
import traceback

from .backend import xp


class _AnomalyMode:
    enabled = False


def is_anomaly_enabled():
    return _AnomalyMode.enabled


class detect_anomaly(contextlib.ContextDecorator):
    """Context manager and decorator that turns anomaly detection on."""

    def __enter__(self):
        self.previous = _AnomalyMode.enabled
        _AnomalyMode.enabled = True
        return self

    def __exit__(self, *exc_info):
        _AnomalyMode.enabled = self.previous
        return False


def user_frame():
    """'file:line in function' of the innermost frame outside this package."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if "/autograd/" not in frame.filename and "/nn/" not in frame.filename:
            return f"{frame.filename}:{frame.lineno} in {frame.name}\n    {frame.line}"
    return "<unknown>"


def check_finite(array, what, op_name, where):
    """Raise if ``array`` holds NaN or inf; ``what`` says which value it is."""
    if array is None or array.dtype.kind != "f" or xp.isfinite(array).all():
        return
    bad = "NaN" if xp.isnan(array).any() else "inf"
    raise FloatingPointError(
        f"anomaly: {op_name} produced {bad} in its {what} (shape {tuple(array.shape)}); "
        f"the op was created at {where}"
    )
