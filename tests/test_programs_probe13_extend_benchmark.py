"""Extending PyTorch as tutorials and libraries do (see tests/pytorch_programs.py), each program run on chainrule and
on PyTorch and compared: values, gradients, printed text and errors. Benchmarks (``torch.utils.benchmark``), after
the "PyTorch Benchmark" recipe, with fixed times (Measurements built from given raw times, so the text is
deterministic): ``Compare`` over labels, sub-labels, descriptions and thread counts (``trim_significant_figures``,
``colorize``, ``highlight_warnings``, ``extend_results``, ``print``), ``Measurement`` text and statistics,
``Measurement.merge``; ``Timer`` with stmt/setup/globals (what it records, not its times)."""

import contextlib
import io

from .probe13_extend_common import sub
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# torch.utils.benchmark with fixed times
# ----------------------------------------------------------------------------------------------


def measurement(B, stmt, label, sub_label, description, threads, times, number=100, env=None):
    spec = B.TaskSpec(stmt=stmt, setup="pass", label=label, sub_label=sub_label, description=description,
                      num_threads=threads, env=env)
    return B.Measurement(number, times, spec)


def without_address(text):
    return text.split("\n", 1)[1]


def compare_tables(m):
    B = sub(m, "utils.benchmark")
    results = []
    for i, size in enumerate(["[1, 1]", "[64, 64]", "[1024, 10000]"]):
        for j, description in enumerate(["mul/sum", "dot", "bmm"]):
            for threads in (1, 4):
                base = (1 + i) * 10 ** (i * 2) * (1 + j * 0.37) / threads * 1e-6
                results.append(measurement(B, "batched_dot(x, x)", "Batched dot", size, description, threads,
                                           [base, base * 1.02, base * 0.98, base * 1.5]))
    out = []
    compare = B.Compare(results)
    out.append(str(compare))
    compare.trim_significant_figures()
    out.append(str(compare))
    compare.colorize()
    out.append(str(compare))
    rowwise = B.Compare(results[:6])
    rowwise.colorize(rowwise=True)
    out.append(str(rowwise))
    warned = B.Compare(results[:4])
    warned.highlight_warnings()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        warned.print()
    out.append(printed.getvalue())
    mixed = B.Compare([measurement(B, "a", "Tab1", None, "d1", 1, [0.5, 0.52]),
                       measurement(B, "a", "Tab1", None, "d2", 1, [1.5]),
                       measurement(B, "b", "Tab2", "x", "q", 1, [2e-9, 3e-9]),
                       measurement(B, "c2", "Tab1", "z", "d1", 16, [0.001234]),
                       measurement(B, "f()", "Tab3", "s", "d", 1, [1e-3], env="A"),
                       measurement(B, "f()", "Tab3", "s", "d", 1, [2e-3], env="B")])
    mixed.extend_results([measurement(B, "a", "Tab1", "new", "d3", 1, [123.456])])
    out.append(str(mixed))
    return out


def test_compare_tables_with_fixed_times():
    ours, _ = run_both(compare_tables)
    assert ours[0].splitlines()[0].startswith("[") and "Batched dot" in ours[0]
    assert ours[0].endswith("Times are in nanoseconds (ns).\n")


def measurements(m):
    B = sub(m, "utils.benchmark")
    one = measurement(B, "x * y", "lab", "sub", "desc", 1, [1.234e-5, 1.3e-5, 1.25e-5])
    noisy = measurement(B, "x * y", None, None, None, 1, [1e-3, 2e-3, 5e-3, 1e-3])
    merged = B.Measurement.merge([measurement(B, "f()", "L", "s", "d", 2, [1e-6, 2e-6]),
                                  measurement(B, "f()", "L", "s", "d", 2, [3e-6]),
                                  measurement(B, "g()", "L", "s", "d", 2, [3e-6])])
    out = [without_address(repr(one)), without_address(repr(noisy)), noisy.has_warnings, len(merged),
           without_address(repr(merged[0])), merged[0].times]
    out += [(name, getattr(one, name)) for name in ("median", "mean", "iqr", "times", "number_per_run", "title",
                                                    "has_warnings", "significant_figures", "env", "num_threads")]
    for value in [1.0, 12.3, 0.00012, 5e-8]:
        out.append(without_address(repr(measurement(B, "s", None, None, None, 1, [value, value * 1.01], number=1))))
    out += [B.select_unit(3e-5), B.trim_sigfig(123456.0, 2), B.unit_to_english("us")]
    return out


def test_measurements_text_and_statistics():
    ours, _ = run_both(measurements)
    assert ours[0].splitlines()[:3] == ["lab: sub", "desc", "  Median: 125.00 ns"]
    assert ours[2] is True and ours[3] == 2


def timers(m):
    torch = m.torch
    B = sub(m, "utils.benchmark")
    x = torch.ones(3)
    t = B.Timer(stmt="for _ in range(3):\n    y = x * 2", setup="x = torch.ones(3)", globals={"torch": torch},
                label="loop", sub_label="three", description="mul", num_threads=1)
    r = t.timeit(5)
    r2 = B.Timer(stmt="f(a)", globals={"f": lambda v: v, "a": 3}).blocked_autorange(min_run_time=0.01)
    r3 = B.Timer("x.sum()", globals={"x": x}, description="sum").adaptive_autorange(min_run_time=0.01,
                                                                                    max_run_time=0.05)
    return [(type(r).__name__, r.number_per_run, r.stmt, r.title, r.label, r.sub_label, r.description,
             r.task_spec.setup, len(r.times), r.num_threads),
            (r2.stmt, r2.title, r2.label, r2.task_spec.num_threads, without_address(repr(r2)).splitlines()[0]),
            (r3.description, type(r3).__name__, r3.median > 0)]


def test_timers_record_their_task():
    ours, _ = run_both(timers)
    assert ours[0] == ("Measurement", 5, "for _ in range(3):\n    y = x * 2", "loop: three", "loop", "three", "mul",
                       "x = torch.ones(3)", 1, 1)
