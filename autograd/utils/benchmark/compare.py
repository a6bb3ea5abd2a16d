"""``Compare``: many measurements as one table per label, a row per sub-label (grouped by thread count and
environment) and a column per description, in PyTorch's layout."""

import collections
import enum
import math

from .common import Measurement, ordered_unique, select_unit, trim_sigfig, unit_to_english

BEST, GOOD, BAD, VERY_BAD = "\033[92m", "\033[34m", "\033[2m\033[91m", "\033[31m"
BOLD, TERMINATE = "\033[1m", "\033[0m"


class Colorize(enum.Enum):
    NONE = "none"
    COLUMNWISE = "columnwise"
    ROWWISE = "rowwise"


class Compare:
    """A table of ``results`` (Measurements): ``print()`` or ``str()``. ``trim_significant_figures()``,
    ``colorize(rowwise=False)`` and ``highlight_warnings()`` change how it is drawn."""

    def __init__(self, results):
        self._results = []
        self.extend_results(results)
        self._trim_significant_figures = False
        self._colorize = Colorize.NONE
        self._highlight_warnings = False

    def __str__(self):
        return "\n".join(self._render())

    def extend_results(self, results):
        for r in results:
            if not isinstance(r, Measurement):
                raise ValueError(f"Expected an instance of `Measurement`, got {type(r)} instead.")
        self._results.extend(results)

    def trim_significant_figures(self):
        self._trim_significant_figures = True

    def colorize(self, rowwise=False):
        self._colorize = Colorize.ROWWISE if rowwise else Colorize.COLUMNWISE

    def highlight_warnings(self):
        self._highlight_warnings = True

    def print(self):
        print(str(self))

    def _render(self):
        by_label = collections.defaultdict(list)
        for m in Measurement.merge(self._results):
            by_label[m.label].append(m)
        return [_table(group, self._colorize, self._trim_significant_figures, self._highlight_warnings)
                for group in by_label.values()]


def _row_key(m):
    return m.num_threads, m.env, m.as_row_name


def _table(results, colorize, trim, highlight):
    unit, scale = select_unit(min(m.median for m in results))
    rows = ordered_unique(_row_key(m) for m in results)
    rows.sort(key=lambda key: (key[0], key[1] or ""))  # (by threads and env, keeping the statements' order)
    columns = ordered_unique(m.description for m in results)
    grid = [[None] * len(columns) for _ in rows]
    for m in results:
        grid[rows.index(_row_key(m))][columns.index(m.description)] = m
    envs = {m.env for m in results}
    render_env = len(envs) > 1
    env_width = max(len(e or "") for e in envs) if render_env else 0
    groups, group_of, thread_row = [], [], []
    previous_threads, previous_env = None, None
    for (threads, env, _), row in zip(rows, grid):
        starts = threads != previous_threads
        if starts:
            groups.append([])
            previous_env = None
        groups[-1].append(row)
        group_of.append(len(groups) - 1)
        thread_row.append((threads if starts else None, render_env and env != previous_env))
        previous_threads, previous_env = threads, env
    formats = [_column_format(groups, j, scale, trim, highlight) for j in range(len(columns))]

    cells = [[""] + [c if c is not None else "None" for c in columns]]
    for (_, show_env), row in zip(thread_row, grid):
        present = next(m for m in row if m is not None)
        env = f"({present.env})" if show_env else ""
        line = ["  " + env.ljust(env_width + 4) + present.as_row_name]
        for m, form in zip(row, formats):
            line.append(_number(form, None if m is None else m.median / scale,
                                1 if m is None else m.significant_figures,
                                m.iqr / m.median if m is not None and m.has_warnings else None))
        cells.append(line)
    width = max(len(r) for r in cells)
    for r in cells:
        r.extend([""] * (width - len(r)))
    widths = [max(len(r[j]) for r in cells) for j in range(width)]
    lines = ["  |  ".join(c.center(w) for c, w in zip(cells[0], widths))]
    overall = len(lines[0])
    for k, ((threads, _), row, line) in enumerate(zip(thread_row, grid, cells[1:])):
        if threads is not None:
            lines.append(f"{threads} threads: ".ljust(overall, "-"))
        best = _best_values(colorize, row, groups[group_of[k]], len(columns))
        parts = [line[0].ljust(widths[0])]
        for text, w, m, b in zip(line[1:], widths[1:], row, best):
            text = text.center(w)
            if colorize is not Colorize.NONE and m is not None and b is not None:
                text = _colored(text, m.median, b)
            parts.append(text)
        lines.append("  |  ".join(parts))
    warned = highlight and any(m.has_warnings for m in results)
    note = "(! XX%) Measurement has high variance, where XX is the IQR / median * 100.\n" if warned else ""
    label = results[0].label
    return (f"[{(' ' + (label or '') + ' ').center(overall - 2, '-')}]\n" + "\n".join(lines) +
            f"\n\nTimes are in {unit_to_english(unit)}s ({unit}).\n{note}")


def _column_format(groups, j, scale, trim, highlight):
    """(the number format of column j, whether it marks spread)."""
    measured = [row[j] for group in groups for row in group if row[j] is not None]
    highlight = highlight and any(m.has_warnings for m in measured)
    leading = [math.ceil(math.log10(m.median / scale)) for m in measured]
    decimals = min(max(m.significant_figures - d, 0) for d, m in zip(leading, measured)) if trim else 1
    length = max(leading) + decimals + (1 if decimals else 0)
    return f"{{:>{length}.{decimals}f}}{{:>{7 if highlight else 0}}}", trim, highlight


def _number(form, value, figures, spread):
    template, trim, highlight = form
    if value is None:
        return " " * len(_number(form, 1, figures, None))
    if trim:
        value = trim_sigfig(value, figures)
    return template.format(value, f" (! {spread * 100:.0f}%)" if highlight and spread is not None else "")


def _best_values(colorize, row, group, count):
    if colorize is Colorize.ROWWISE:
        best = min(m.median for m in row if m is not None)
        return [best] * count
    if colorize is Colorize.COLUMNWISE:
        return [min((r[j].median for r in group if r[j] is not None), default=None) for j in range(count)]
    return [None] * count


def _colored(text, value, best):
    if value <= best * 1.01 or value <= best + 100e-9:
        return BEST + BOLD + text + TERMINATE * 2
    if value <= best * 1.1:
        return GOOD + BOLD + text + TERMINATE * 2
    if value >= best * 5:
        return VERY_BAD + BOLD + text + TERMINATE * 2
    if value >= best * 2:
        return BAD + text + TERMINATE * 2
    return text
