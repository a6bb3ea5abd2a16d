"""Whether operations are recorded: ``no_grad``, ``enable_grad``, ``set_grad_enabled``.

Each is a context manager and a decorator, as in PyTorch. Inside ``no_grad``
no graph is built, so nothing is saved for a backward pass: use it for
evaluation and for updating parameters.
"""

import contextlib


class _GradMode:
    enabled = True


def is_grad_enabled():
    """True when new operations are recorded for backpropagation."""
    return _GradMode.enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Turn recording on or off; as a function call it takes effect at once."""

    def __init__(self, mode):
        self.previous = _GradMode.enabled
        _GradMode.enabled = bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        _GradMode.enabled = self.previous
        return False


class _GradModeContext(contextlib.ContextDecorator):
    mode = True

    def __enter__(self):
        self.previous = _GradMode.enabled
        _GradMode.enabled = self.mode
        return self

    def __exit__(self, *exc_info):
        _GradMode.enabled = self.previous
        return False


class no_grad(_GradModeContext):
    """Run without recording a graph (evaluation, parameter updates)."""

    mode = False


class enable_grad(_GradModeContext):
    """Record a graph again, inside a ``no_grad`` block."""

    mode = True
