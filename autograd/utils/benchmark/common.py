"""What a measurement is (``torch.utils.benchmark.utils.common``): the task timed, the times taken, and their
statistics (median, interquartile range, an estimate of the significant figures), printed as PyTorch prints
them."""

import collections
import contextlib
import dataclasses
import math
import textwrap

import numpy

_MAX_SIGNIFICANT_FIGURES = 4
_MIN_CONFIDENCE_INTERVAL = 25e-9  # 25 ns: no claim of precision below it
_IQR_WARN_THRESHOLD = 0.1
_IQR_GROSS_WARN_THRESHOLD = 0.25
_IQR_WARNINGS = ((_IQR_GROSS_WARN_THRESHOLD, "This suggests significant environmental influence."),
                 (_IQR_WARN_THRESHOLD, "This could indicate system fluctuation."))


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a Timer times (everything but its globals)."""

    stmt: str
    setup: str
    global_setup: str = ""
    label: str | None = None
    sub_label: str | None = None
    description: str | None = None
    env: str | None = None
    num_threads: int = 1

    @property
    def title(self):
        """The label (with the sub-label), else the statement."""
        suffix = f": {self.sub_label}" if self.sub_label else ""
        if self.label is not None:
            return self.label + suffix
        if "\n" not in self.stmt:
            return self.stmt + suffix
        return f"stmt:{f' ({self.sub_label})' if self.sub_label else ''}\n{textwrap.indent(self.stmt, '  ')}"

    def setup_str(self):
        if self.setup in ("pass", ""):
            return ""
        return f"setup:\n{textwrap.indent(self.setup, '  ')}" if "\n" in self.setup else f"setup: {self.setup}"

    def summarize(self):
        sections = [self.title, self.description or "", self.setup_str()]
        return "\n".join(f"{s}\n" if "\n" in s else s for s in sections if s)


_TASK_FIELDS = tuple(field.name for field in dataclasses.fields(TaskSpec))


@dataclasses.dataclass(repr=False)
class Measurement:
    """Replicates of one timed task: ``raw_times[i]`` seconds for ``number_per_run`` runs each. ``times`` are
    per run; ``median``, ``mean`` and ``iqr`` are over them. The task's fields (``label``, ``stmt``, ...) read
    through."""

    number_per_run: int
    raw_times: list
    task_spec: TaskSpec
    metadata: dict | None = None

    def __getattr__(self, name):
        if name in _TASK_FIELDS:
            return getattr(self.task_spec, name)
        raise AttributeError(f"'Measurement' object has no attribute {name!r}")

    @property
    def times(self):
        return [t / self.number_per_run for t in self.raw_times]

    @property
    def _statistics(self):
        """(sorted times, median, mean, 25th and 75th percentiles, warnings), computed once."""
        cached = self.__dict__.get("_cached")
        if cached is None or cached[0] != len(self.raw_times):
            times = numpy.sort(numpy.asarray(self.times, dtype=numpy.float64))
            p25, median, p75 = numpy.quantile(times, [0.25, 0.5, 0.75]) if len(times) else (-1.0, -1.0, -1.0)
            stats = (tuple(times), float(median), float(times.mean()) if len(times) else -1.0, float(p25), float(p75))
            relative_iqr = (stats[4] - stats[3]) / stats[1] if len(times) else 0.0
            warnings = ()
            for threshold, message in _IQR_WARNINGS:
                if len(times) and not relative_iqr < threshold:
                    warnings = (f"  WARNING: Interquartile range is {relative_iqr * 100:.1f}% of the median "
                                f"measurement.\n           {message}",)
                    break
            cached = (len(self.raw_times), stats, warnings)
            self.__dict__["_cached"] = cached
        return cached[1] + (cached[2],)

    @property
    def median(self):
        return self._statistics[1]

    @property
    def mean(self):
        return self._statistics[2]

    @property
    def iqr(self):
        return self._statistics[4] - self._statistics[3]

    @property
    def has_warnings(self):
        return bool(self._statistics[5])

    def meets_confidence(self, threshold=_IQR_WARN_THRESHOLD):
        return self.iqr / self.median < threshold

    @property
    def significant_figures(self):
        """About how many figures of the median the interquartile spread supports (1 to 4): the times inside
        the quartiles give a 90% confidence interval 1.645 σ/√n, floored at 25 ns."""
        times = self._statistics[0]
        inner = numpy.asarray(times[len(times) // 4:math.ceil(3 * len(times) / 4)])
        interval = max(1.645 * float(inner.std()) / math.sqrt(len(inner)), _MIN_CONFIDENCE_INTERVAL)
        return min(max(math.floor(math.log10(self.median / interval)), 1), _MAX_SIGNIFICANT_FIGURES)

    @property
    def title(self):
        return self.task_spec.title

    @property
    def as_row_name(self):
        return self.sub_label or self.stmt or "[Unknown]"

    def __repr__(self):
        times, median, _, p25, p75, warnings = self._statistics
        n = len(times)
        unit, scale = select_unit(median)
        lines = [object.__repr__(self), self.task_spec.summarize(),
                 f"  {'Median: ' if n > 1 else ''}{median / scale:.2f} {unit}"]
        if n >= 4:
            lines.append(f"  IQR:    {(p75 - p25) / scale:.2f} {unit} ({p25 / scale:.2f} to {p75 / scale:.2f})")
        threads = self.num_threads
        lines.append(f"  {n} measurement{'s' if n > 1 else ''}, {self.number_per_run} runs "
                     f"{'per measurement,' if n > 1 else ','} {threads} thread{'s' if threads > 1 else ''}")
        lines.extend(warnings)
        return "\n".join(lines).strip()

    @staticmethod
    def merge(measurements):
        """Replicates of one task merged into one measurement (times per run, number_per_run 1)."""
        grouped = collections.defaultdict(list)
        for m in measurements:
            grouped[m.task_spec].extend(m.times)
        return [Measurement(1, times, task_spec) for task_spec, times in grouped.items()]


def select_unit(t):
    """(unit, seconds per unit) putting ``t`` seconds in the range 1 to 1000."""
    unit = {-3: "ns", -2: "us", -1: "ms"}.get(int(math.log10(t) // 3) if t > 0 else -3, "s")
    return unit, {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1}[unit]


def unit_to_english(u):
    return {"ns": "nanosecond", "us": "microsecond", "ms": "millisecond", "s": "second"}[u]


def trim_sigfig(x, n):
    """``x`` rounded to ``n`` significant figures (3.14159, 2 -> 3.1), in float32 as PyTorch's (3.1000001...)."""
    if n != int(n):
        raise AssertionError("Number of significant figures must be an integer")
    scale = 10 ** (math.ceil(math.log10(abs(x))) - n)
    return float(numpy.round(numpy.float32(x / scale)) * numpy.float32(scale))


def ordered_unique(elements):
    return list(dict.fromkeys(elements))


@contextlib.contextmanager
def set_torch_threads(n):
    """Accepted as PyTorch's: NumPy's threads are set where it starts, not per call."""
    yield
