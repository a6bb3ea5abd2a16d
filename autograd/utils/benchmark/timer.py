"""``Timer`` (``torch.utils.benchmark.Timer``): Python's ``timeit`` with warm-up, replicates and PyTorch's ways of
choosing how many runs to time at once."""

import enum
import textwrap
import timeit

import numpy

from .common import Measurement, TaskSpec, set_torch_threads

timer = timeit.default_timer


class Language(enum.Enum):
    PYTHON = 0
    CPP = 1


class Timer:
    """Times ``stmt`` (a string of Python) after ``setup``, with ``globals`` as its namespace (``torch`` is this
    library, as in PyTorch's, where the statement names it). ``label``, ``sub_label``, ``description`` and
    ``env`` name the measurement in ``Compare``'s table; ``num_threads`` is recorded (NumPy's threads are not
    changed per call)."""

    def __init__(self, stmt="pass", setup="pass", global_setup="", timer=timer, globals=None, label=None,  # noqa: A002
                 sub_label=None, description=None, env=None, num_threads=1, language=Language.PYTHON):
        if not isinstance(stmt, str):
            raise ValueError("Currently only a `str` stmt is supported.")
        if language in (Language.CPP, "cpp", "c++"):
            raise NotImplementedError("C++ statements need PyTorch's C++ toolchain, which chainrule has not: time "
                                      "Python statements")
        if language not in (Language.PYTHON, "py", "python"):
            raise ValueError(f"Invalid language `{language}`.")
        if global_setup:
            raise ValueError(f"global_setup is C++ only, got `{global_setup}`. Most likely this code can simply "
                             "be moved to `setup`.")
        import autograd

        self._globals = dict(globals or {})
        self._globals.setdefault("torch", autograd)
        stmt, setup = (_cleaned(text) for text in (stmt, setup))
        self._timer = timeit.Timer(stmt=stmt, setup=setup, timer=timer, globals=self._globals)
        self._task_spec = TaskSpec(stmt=stmt, setup=setup, global_setup=global_setup, label=label,
                                   sub_label=sub_label, description=description, env=env, num_threads=num_threads)

    def _timeit(self, number):
        return max(self._timer.timeit(number), 1e-9)

    def timeit(self, number=1000000):
        """One replicate of ``number`` runs (after a warm-up of number // 100), as ``timeit.Timer.timeit``."""
        with set_torch_threads(self._task_spec.num_threads):
            self._timeit(number=max(int(number // 100), 2))
            return Measurement(number, [self._timeit(number=number)], self._task_spec)

    def repeat(self, repeat=-1, number=-1):
        raise NotImplementedError("See `Timer.blocked_autorange.`")

    def autorange(self, callback=None):
        raise NotImplementedError("See `Timer.blocked_autorange.`")

    def _estimate_block_size(self, min_run_time):
        """Runs per replicate: ten times more until the timer's own cost is under 0.01% of a replicate and a
        replicate takes a thousandth of ``min_run_time`` (or all of it)."""
        overhead = float(numpy.median([self._timeit(0) for _ in range(5)]))
        number = 1
        while True:
            taken = self._timeit(number)
            if overhead / taken <= 1e-4 and taken >= min_run_time / 1000 or taken > min_run_time:
                return number
            if number * 10 > 2147483647:
                return number
            number *= 10

    def _replicates(self, number, can_stop, min_run_time, max_run_time=None, callback=None):
        total, times, stop = 0.0, [], False
        while total < min_run_time or not stop:
            spent = self._timeit(number)
            times.append(spent)
            total += spent
            if callback:
                callback(number, spent)
            stop = can_stop(times)
            if max_run_time and total > max_run_time:
                break
        return times

    def blocked_autorange(self, callback=None, min_run_time=0.2):
        """Replicates of a block of runs (its size chosen by a warm-up) until ``min_run_time`` seconds are spent."""
        with set_torch_threads(self._task_spec.num_threads):
            number = self._estimate_block_size(min_run_time)
            times = self._replicates(number, lambda times: True, min_run_time, callback=callback)
        return Measurement(number, times, self._task_spec)

    def adaptive_autorange(self, threshold=0.1, *, min_run_time=0.01, max_run_time=10.0, callback=None):
        """As ``blocked_autorange``, going on until the interquartile range is under ``threshold`` of the median
        (after at least four replicates and ``min_run_time``), or ``max_run_time`` is spent."""
        with set_torch_threads(self._task_spec.num_threads):
            number = self._estimate_block_size(min_run_time=0.05)

            def confident(times):
                return len(times) > 3 and Measurement(number, times, self._task_spec).meets_confidence(threshold)

            times = self._replicates(number, confident, min_run_time, max_run_time, callback)
        return Measurement(number, times, self._task_spec)

    def collect_callgrind(self, *args, **kwargs):
        raise NotImplementedError("collect_callgrind counts instructions with valgrind through PyTorch's C++ "
                                  "bindings, which chainrule has not")


def _cleaned(text):
    text = textwrap.dedent(text)
    return (text[1:] if text and text[0] == "\n" else text).rstrip()


__all__ = ["Language", "Timer", "timer"]
