"""PyTorch's warnings given once a process (its TORCH_WARN_ONCE), and ``set_warn_always``, which makes them
given every time while it is on. Every warning here is a Python warning, shown as Python's filters say: "once"
is this module's rule, on top of theirs. The ops warn through ``warn_once`` (``x.T`` of other than 2 dims,
scatter's ``reduce=`` with a tensor src, ``float()`` of a tensor that requires grad, 'same' padding with an
even window, ``backward(create_graph=True)``, ``index_reduce``, a tensor over a read-only NumPy array or buffer, a
tensor from a list of arrays), so one set of keys, here, says what a process has been told."""

import warnings

from .graph import program_stacklevel

_warn_always = [False]  # set_warn_always's setting, for the whole process as PyTorch's
_warned_once = set()  # the keys said in this process


def warn_once(key, message, category=UserWarning):
    """``message`` the first time ``key`` is met in a process, and every time while ``set_warn_always(True)``,
    at the user's line."""
    if not _warn_always[0]:
        if key in _warned_once:
            return
        _warned_once.add(key)  # (only here: a warning given under set_warn_always still comes once after, as c10's)
    warnings.warn(message, category, stacklevel=program_stacklevel())


def set_warn_always(b):
    _warn_always[0] = bool(b)


def is_warn_always_enabled():
    return _warn_always[0]
