"""Timing helpers: the best of several repeats, so that a noisy shared machine
disturbs the ratios as little as possible."""

import time


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
    to the reference row's time ('2.00x' = twice the reference's time)."""
    width = max(len(name) for name in rows)
    lines = [title]
    for name, seconds in rows.items():
        ratio = seconds / rows[reference]
        lines.append(f"    {name:{width}s} {seconds * scale:9.3f} {unit}   {ratio:5.2f}x {reference}")
    return "\n".join(lines)


def batch_table(title, results, footnote):
    """A report of milliseconds per step, one line per batch size ({size: {name: ms}}), each
    time with chainrule's time over it ('(2.00x)' = chainrule takes twice that time)."""
    lines = [title]
    for size, row in results.items():
        ours = row["chainrule"]
        cells = "   ".join(f"{name} {ms:7.3f} ms ({ours / ms:4.2f}x)" for name, ms in row.items())
        lines.append(f"    batch {size:4d}:  {cells}")
    lines.append(footnote)
    return "\n".join(lines)


def optional(module_name):
    """The module if it is installed, else None (PyTorch and micrograd are optional)."""
    try:
        return __import__(module_name)
    except ImportError:
        return None
