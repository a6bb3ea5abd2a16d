"""Timing helpers: the best of several repeats, so that a noisy shared machine
disturbs the ratios as little as possible; peak memory and import time measured in
a fresh subprocess; and RESULTS, every table printed so far, for benchmarks/run.py's
JSON."""

import contextlib
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # measure the checkout these files are in, whatever is installed
    sys.path.insert(1, ROOT)
RESULTS = []  # {"title", "unit", "reference", "rows": {name: figure in unit}}, one per table


def best_time(fn, repeat=7, number=None, budget=0.2):
    """Seconds per call of ``fn``: the fastest of ``repeat`` runs of ``number`` calls
    (``number`` chosen so one run takes about ``budget`` seconds)."""
    fn()  # warm up
    if number is None:
        number, elapsed = 1, 0.0
        while True:
            start = time.perf_counter()
            for _ in range(number):
                fn()
            elapsed = time.perf_counter() - start
            if elapsed > budget / 4 or number >= 1 << 20:
                break
            number *= 2
        number = max(1, int(number * budget / max(elapsed, 1e-9)))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def best_time_fresh(make, steps=20, repeat=9):
    """Seconds per call for ``steps`` calls of a function made fresh by ``make()`` for
    each of ``repeat`` runs, fastest run kept. For training steps: every run starts
    from the same state, so no run drifts into slow numbers (Adam's moments decay
    into float32 denormals after hundreds of steps on dead units)."""
    best = float("inf")
    for _ in range(repeat):
        fn = make()
        fn()  # warm up
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def table(title, rows, reference, unit="ms", scale=1e3):
    """A report: one line per row (name: seconds), each with its time and its ratio
    to the reference row's time ('2.00x' = twice the reference's time). Recorded in RESULTS."""
    RESULTS.append({"title": title, "unit": unit, "reference": reference,
                    "rows": {name: seconds * scale for name, seconds in rows.items()}})
    width = max(len(name) for name in rows)
    lines = [title]
    for name, seconds in rows.items():
        ratio = seconds / rows[reference]
        lines.append(f"    {name:{width}s} {seconds * scale:9.3f} {unit}   {ratio:5.2f}x {reference}")
    return "\n".join(lines)


def grouped_table(title, groups, reference, label="batch {}", unit="ms", scale=1e3):
    """A report with one line per group (a batch size, an op): groups = {key: {name: seconds}},
    each cell with its ratio to the reference's time in that group ('2.00x' = twice the
    reference's time), as in ``table``. Recorded in RESULTS, one entry per group."""
    lines = [title]
    for key, row in groups.items():
        name = label.format(key)
        RESULTS.append({"title": f"{title}: {name}", "unit": unit, "reference": reference,
                        "rows": {n: seconds * scale for n, seconds in row.items()}})
        cells = "   ".join(f"{n} {seconds * scale:8.3f} {unit} ({seconds / row[reference]:4.2f}x)"
                           for n, seconds in row.items())
        lines.append(f"    {name:>12s}:  {cells}")
    lines.append(f"    (Nx) = its figure / {reference}'s")
    return "\n".join(lines)


def in_subprocess(code, path=(), **environ):
    """Run ``code`` in a fresh interpreter (the benchmarks and the checkout importable) and
    return what it printed last, as JSON (a number, a dict): each child reports its own figures.
    ``path``: folders put before the checkout on the child's sys.path; ``environ``: variables
    set in the child's environment (None removes one)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, ROOT, HERE, os.environ.get("PYTHONPATH", "")]))
    for name, value in environ.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=HERE)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{code}\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


# Linux: VmHWM, this process's own peak (ru_maxrss would also count the parent's peak
# before exec); elsewhere ru_maxrss (bytes on macOS)
PEAK_RSS = """
import os, resource, sys
if os.path.exists("/proc/self/status"):
    with open("/proc/self/status") as status:
        print(next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")))
else:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024))
"""


def peak_rss(code):
    """Peak resident memory, in bytes, of a fresh interpreter that runs ``code``."""
    return in_subprocess(code + PEAK_RSS)


def import_seconds(modules, path=(), **environ):
    """Seconds to ``import modules`` in a fresh interpreter (the interpreter's own start not
    counted); ``path`` and ``environ`` as for ``in_subprocess``."""
    timed = f"import time\nstart = time.perf_counter()\nimport {modules}\nprint(time.perf_counter() - start)"
    return in_subprocess(timed, path, **environ)


@contextlib.contextmanager
def one_thread(torch):
    """PyTorch (when installed) and NumPy's BLAS (when threadpoolctl is) held to one thread inside the block, as
    Python runs our ops; yields the note the table prints under itself on how NumPy's BLAS ran."""
    threads = torch.get_num_threads() if torch is not None else None
    threadpoolctl = optional("threadpoolctl")
    blas = threadpoolctl.threadpool_limits(1) if threadpoolctl is not None else contextlib.nullcontext()
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with blas:
            yield ("    (PyTorch with 1 thread; " if torch is not None else "    (") + "NumPy's BLAS " + (
                "with 1 thread)" if threadpoolctl is not None else "with its own thread count)")
    finally:
        if torch is not None:
            torch.set_num_threads(threads)


def load():
    """The machine's load averages over 1, 5 and 15 minutes (the figures' context)."""
    return os.getloadavg()


def optional(module_name):
    """The module if it is installed, else None (PyTorch and micrograd are optional)."""
    try:
        return __import__(module_name)
    except ImportError:
        return None
