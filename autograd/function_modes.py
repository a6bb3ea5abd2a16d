"""``TorchFunctionMode``: a context that is asked about every call made while it is entered (overrides.py's
``Dispatching`` wrappers consult the innermost mode first), and this thread's stack of them, with PyTorch's
private functions over it (``torch._C._len_torch_function_stack`` and the others). Entering the first mode installs
the wrappers, as the first subclass taking part does."""

import contextlib
import warnings

from .overrides import _dispatch


class TorchFunctionMode:
    """Overrides every function and Tensor method called while it is entered (``with MyMode():``), factories
    included: its ``__torch_function__(func, types, args=(), kwargs=None)`` is given the call, ``types`` the
    classes of the arguments that take part. Modes nest: inside the handler this mode is off the stack, so the
    calls it makes (``func(*args, **kwargs)``) go to the mode outside it; ``with self:`` inside makes them come
    back to it. Returning NotImplemented passes the call on to the subclasses among its arguments."""

    def __init__(self):
        pass

    def __torch_function__(self, func, types, args=(), kwargs=None):
        raise NotImplementedError

    def __enter__(self):
        _push_mode(self)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        _pop_mode()

    @classmethod
    def push(cls, *args, **kwargs):
        warnings.warn("`Mode.push()` is no longer necessary and can be replaced with just `with Mode()`",
                      stacklevel=2)
        return cls(*args, **kwargs)


class BaseTorchFunctionMode(TorchFunctionMode):
    """A mode that runs each call as it is: a base for modes that override a few functions."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _len_torch_function_stack():
    return len(_dispatch.mode_stack)


def _get_function_stack_at(level):
    return _dispatch.mode_stack[level]


def _push_on_torch_function_stack(mode):
    """``mode`` becomes this thread's innermost; the functions dispatch from now on (install: a program that
    enters no mode and defines no subclass never pays for it)."""
    from .dispatching import install  # (dispatching.py builds on overrides.py, which imports this module)

    install()
    _dispatch.mode_stack += (mode,)


def _pop_torch_function_stack():
    stack = _dispatch.mode_stack
    if not stack:
        raise RuntimeError("trying to pop from empty mode stack")
    _dispatch.mode_stack = stack[:-1]
    return stack[-1]


def _get_current_function_mode():
    """The innermost mode entered in this thread, or None."""
    stack = _dispatch.mode_stack
    return stack[-1] if stack else None


def _get_current_function_mode_stack():
    """This thread's modes, outermost first."""
    return list(_dispatch.mode_stack)


_push_mode, _pop_mode = _push_on_torch_function_stack, _pop_torch_function_stack


@contextlib.contextmanager
def _pop_mode_temporarily():
    """The innermost mode off the stack inside the block (given to it), back on after."""
    mode = _pop_mode()
    try:
        yield mode
    finally:
        _push_mode(mode)
