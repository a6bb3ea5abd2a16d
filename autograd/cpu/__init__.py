"""``autograd.cpu``, as ``torch.cpu``: ``torch.cuda``'s functions for the CPU, so that code written
for any device (``getattr(autograd, device.type).synchronize()``) runs on it.

There is one CPU device, always available and initialised; work on it is done when a call
returns, so there is nothing to synchronise or wait for. Streams and events exist as PyTorch's
CPU ones do: ``stream(s)`` makes ``s`` the current stream for a block, and an event is always
complete. ``autograd.cpu.amp`` is the older spelling of ``autograd.amp`` with ``"cpu"``.
"""

import contextlib

from .. import _lazy


def is_available():
    """True: the CPU is always there."""
    return True


def is_initialized():
    """True: the CPU needs no initialisation."""
    return True


def device_count():
    """1: one CPU device (not the number of cores)."""
    return 1


def current_device():
    """``"cpu"``, PyTorch's answer (a string, where ``autograd.cuda.current_device()`` gives an index)."""
    return "cpu"


def set_device(device):
    """Nothing to do: there is one CPU device (PyTorch ignores ``device`` too)."""


def synchronize(device=None):
    """Nothing to wait for: CPU work is done when its call returns."""


class Stream:
    """A CPU stream: work on the CPU is not queued, so there is nothing to wait for."""

    def __init__(self, priority=-1):
        self.priority = priority

    def wait_stream(self, stream):
        pass

    def record_event(self):
        pass

    def wait_event(self, event):
        pass


class Event:
    """A CPU event: always complete."""

    def query(self):
        return True

    def record(self, stream=None):
        pass

    def synchronize(self):
        pass

    def wait(self, stream=None):
        pass


_default_stream = Stream()
_current = [_default_stream]  # the current stream (one for the process, as PyTorch's)


def current_stream(device=None):
    """The stream selected by the innermost ``stream(...)`` block (the default stream outside)."""
    return _current[0]


class StreamContext(contextlib.AbstractContextManager):
    """Make ``stream`` the current stream inside the block (``None``: leave it as it is)."""

    def __init__(self, stream):
        self.stream, self.prev_stream = stream, _default_stream

    def __enter__(self):
        if self.stream is not None:
            self.prev_stream, _current[0] = _current[0], self.stream

    def __exit__(self, *exc_info):
        if self.stream is not None:
            _current[0] = self.prev_stream


def stream(stream):
    """``with autograd.cpu.stream(s):`` runs the block with ``s`` as the current stream."""
    return StreamContext(stream)


# the older spelling of mixed precision, autograd.cpu.amp, loads on first use
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"amp": ".amp"})
