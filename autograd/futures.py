"""``autograd.futures``, as ``torch.futures``: a value that some work will produce.

A ``Future`` is set once, with a result (``set_result``) or an error (``set_exception``).
``wait()`` blocks until then and gives the result (or raises the error); ``then(callback)``
is a new Future holding ``callback(this)`` once this one is done; ``add_done_callback``
runs a callback when it is done, with nothing to chain. Here nothing runs in the
background by itself: ``autograd.jit.fork`` runs its function at once and hands back a
Future that is already done, which is what PyTorch does outside TorchScript. A Future set
from another thread wakes the threads that wait on it, as PyTorch's.
"""

import threading

__all__ = ["Future", "collect_all", "wait_all"]


class Future:
    """A result to come: ``done()``, ``wait()``, ``value()``, ``then()``, ``add_done_callback()``,
    ``set_result()``, ``set_exception()``."""

    def __init__(self, *, devices=None):
        self._finished = threading.Condition()
        self._done, self._result, self._error = False, None, None
        self._callbacks = []

    def done(self):
        """True once a result or an error is set."""
        return self._done

    def wait(self):
        """The result, once it is set (blocking until then); the error set, raised."""
        with self._finished:
            self._finished.wait_for(lambda: self._done)
        return self.value()

    def value(self):
        """The result of a Future that is done (its error raised): no waiting."""
        if not self._done:
            raise RuntimeError("Future.value(): the Future is not done yet; call wait() to block until it is")
        if self._error is not None:
            raise self._error
        return self._result

    def set_result(self, result):
        """Complete the Future with ``result`` (once: a second set raises, as PyTorch's)."""
        self._complete(result, None)

    def set_exception(self, result):
        """Complete the Future with an error: ``wait()`` and ``value()`` raise it. (Something other
        than an exception is a TypeError here, where PyTorch asserts.)"""
        if not isinstance(result, BaseException):
            raise TypeError(f"set_exception expects an exception, but got {type(result).__name__}")
        self._complete(None, result)

    def _complete(self, result, error):
        with self._finished:
            if self._done:
                raise RuntimeError("Attempting to mark a completed Future as complete again. Note that a Future "
                                   "can only be marked completed once.")
            self._result, self._error, self._done = result, error, True
            callbacks, self._callbacks = self._callbacks, []
            self._finished.notify_all()
        for callback in callbacks:
            callback(self)

    def add_done_callback(self, callback):
        """Run ``callback(self)`` once the Future is done (now, if it already is)."""
        with self._finished:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback(self)

    def then(self, callback):
        """A new Future holding ``callback(self)`` once this one is done; an error that the
        callback raises goes into the new Future, as a RuntimeError that names it (PyTorch's)."""
        chained = Future()

        def run(future):
            try:
                result = callback(future)
            except Exception as error:  # the chained Future carries it, as PyTorch's does
                wrapped = RuntimeError(f"Got the following error when running the callback: "
                                       f"{type(error).__name__}: {error}")
                wrapped.__cause__ = error
                chained.set_exception(wrapped)
            else:
                chained.set_result(result)

        self.add_done_callback(run)
        return chained

    def __repr__(self):
        state = "done" if self._done else "pending"
        return f"Future({state})"


def collect_all(futures):
    """A Future, done when all of ``futures`` are, whose result is the list of them."""
    futures = list(futures)
    collected = Future()
    remaining = [len(futures)]
    lock = threading.Lock()
    if not futures:
        collected.set_result(futures)

    def one_done(_):
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            collected.set_result(futures)

    for future in futures:
        future.add_done_callback(one_done)
    return collected


def wait_all(futures):
    """The results of ``futures``, waiting for each (the first error raised)."""
    return [future.wait() for future in futures]
