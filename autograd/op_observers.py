"""Observers of every primitive op the library runs, forward and backward: the one hook that counters (the FLOP
counter of ``autograd.utils.flop_counter``) are built on.

    with observing(lambda call: print(call.op.__name__, call.shapes, call.in_backward)):
        (x @ w).sum().backward()

An observer is called after each ``Primitive.apply`` with an ``OpCall``: the op's class, its input tensors, its
parameters (the keywords its caller gave: stride, transposes, ...), its output, and whether a backward pass is
running. The ops of a backward pass come through apply too while an observer is registered (``apply_replaced``:
their ``apply_in_backward`` then takes apply), so a backward's products are seen as the forward's are.

How: while some observer is registered ``Primitive.apply`` is replaced by a version that tells the observers
(the profiler's and the dual level's way), and the plain one is put back when the last one leaves: a program
that observes nothing runs exactly the code it ran before, with no check on its hot path. Observers nest; they
are to be left in the reverse order of entering, as the profiler and the dual level are.
"""

import contextlib
import threading

from .graph import modes
from .primitive import Primitive

_lock = threading.Lock()
_observers = []  # the observers registered now (any thread's: each is told of the ops of every thread)
_replaced = []  # the apply that the observing version replaced, while one is in place


class OpCall:
    """One primitive op's call, as an observer sees it."""

    __slots__ = ("op", "inputs", "params", "output", "in_backward")

    def __init__(self, op, inputs, params, output, in_backward):
        self.op, self.inputs, self.params, self.output, self.in_backward = op, inputs, params, output, in_backward

    @property
    def shapes(self):
        """The inputs' shapes, tuples."""
        return [tuple(x.shape) for x in self.inputs]


def _observed_apply(cls, *inputs, **params):
    output = _replaced[-1].__func__(cls, *inputs, **params)
    # a backward pass running in this thread keeps its final callbacks in modes (None outside one)
    call = OpCall(cls, inputs, params, output, modes.final_callbacks is not None)
    for observer in tuple(_observers):
        observer(call)
    return output


@contextlib.contextmanager
def observing(observer):
    """``observer(OpCall)`` is called after each primitive op inside the block (in any thread)."""
    with _lock:
        if not _observers:
            _replaced.append(Primitive.__dict__["apply"])
            Primitive.apply = classmethod(_observed_apply)
            Primitive.apply_replaced += 1  # (a backward's own ops go through apply, observed: apply_in_backward)
        _observers.append(observer)
    try:
        yield observer
    finally:
        with _lock:
            _observers.remove(observer)
            if not _observers:
                Primitive.apply = _replaced.pop()
                Primitive.apply_replaced -= 1


def is_observing():
    """Whether some observer is registered now."""
    return bool(_observers)
