"""``torch.sym_int``, ``sym_max``, ...: the arithmetic of symbolic sizes, which code written for ``torch.compile``
calls on sizes (a model's ``sym_max(seq_len, block_size)``). Nothing here traces, so every size is a plain number
and these are Python's arithmetic, with PyTorch's result types (``sym_max(3, 2.5)`` is 3.0)."""

import math
import numbers

__all__ = ["sym_float", "sym_int", "sym_ite", "sym_max", "sym_min", "sym_not", "sym_sqrt", "sym_sum"]


def _refuse_non_numbers(*values):
    for value in values:
        if not isinstance(value, numbers.Number) or isinstance(value, complex):
            raise AssertionError(f"expected (int, float), got {type(value)}")


def sym_int(a):
    """int(a), toward zero."""
    return math.trunc(a) if isinstance(a, float) else int(a)


def sym_float(a):
    return float(a)


def sym_max(a, b):
    """The larger; a float if either is one (PyTorch's)."""
    _refuse_non_numbers(a, b)
    larger = max(a, b)
    return float(larger) if isinstance(a, float) or isinstance(b, float) else larger


def sym_min(a, b):
    _refuse_non_numbers(a, b)
    smaller = min(a, b)
    return float(smaller) if isinstance(a, float) or isinstance(b, float) else smaller


def sym_not(a):
    return not a


def sym_ite(b, t, f):
    """t if b else f."""
    return t if b else f


def sym_sqrt(a):
    return math.sqrt(a)


def sym_sum(*args):
    """The sum of a sequence (or of the arguments)."""
    values = args[0] if len(args) == 1 and not isinstance(args[0], numbers.Number) else args
    return sum(values)
