"""The one global random generator: ``manual_seed(s)`` makes every random op repeatable
(initialisation, dropout, shuffling, ``rand``/``randn``)."""

import numpy


class _Generator:
    current = numpy.random.default_rng()


def manual_seed(seed):
    """Reset the global generator to ``seed``; returns it."""
    _Generator.current = numpy.random.default_rng(seed)
    return _Generator.current


def generator():
    """The global NumPy ``Generator`` that every random op draws from."""
    return _Generator.current
