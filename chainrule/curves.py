"""The demo's learning curves: ``curves.csv`` always (no dependency), ``curves.svg`` drawn with
matplotlib where the ``demo`` extra is installed.

The SVG is byte-for-byte the same for the same numbers (fixed ``svg.hashsalt``, no date), so
a run can be compared with the last. Only finite values are written: a diverged run's curves
end where its loss stopped being a number.
"""

import csv
import math
import os

DEMO_EXTRA = "pip install 'chainrule[demo]'"


def write_curves(folder, history):
    """Write ``history`` ({"training loss": [...], "validation accuracy": [...], ...}, one value
    per epoch) into ``folder``; return one line per file written, saying what it holds."""
    epochs = min(len(values) for values in history.values())
    epochs = next((epoch for epoch in range(epochs)  # the epochs before the first nan or inf, if any
                   if not all(math.isfinite(values[epoch]) for values in history.values())), epochs)
    with open(os.path.join(folder, "curves.csv"), "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", *history])
        for epoch in range(epochs):
            writer.writerow([epoch + 1, *(repr(values[epoch]) for values in history.values())])
    written = ["curves.csv (loss and accuracy per epoch)"]
    try:
        import matplotlib  # noqa: F401  (the demo extra)
    except ImportError:
        return written + [f"no curves.svg: the picture needs matplotlib, in the demo extra: {DEMO_EXTRA}"]
    if epochs:
        draw_svg(os.path.join(folder, "curves.svg"), {name: values[:epochs] for name, values in history.items()})
        written.append("curves.svg (loss on a log scale and accuracy, per epoch, training and validation)")
    return written


def draw_svg(path, history):
    """Two panels side by side: the losses on a log axis, the accuracies in percent."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, MultipleLocator, NullFormatter

    epochs = range(1, len(next(iter(history.values()))) + 1)
    with matplotlib.rc_context({"svg.hashsalt": "chainrule", "svg.fonttype": "none", "font.size": 9}):
        figure = Figure(figsize=(9, 3.4), layout="constrained")
        loss_axes, accuracy_axes = figure.subplots(1, 2)
        for axes, kind in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            for name, values in history.items():
                if name.endswith(kind):
                    style = "-" if name.startswith("training") else "--"
                    axes.plot(epochs, values, style, marker="o" if len(epochs) <= 30 else None, markersize=3,
                              label=name.split()[0])
            axes.set_title(kind)
            axes.set_xlabel("epoch")
            axes.set_xlim(0.5, len(epochs) + 0.5)
            # every epoch up to 20 of them, else about ten ticks a round step apart (5, 10, 20, ...)
            axes.xaxis.set_major_locator(MultipleLocator(1) if len(epochs) <= 20 else
                                         MaxNLocator(nbins=10, integer=True, steps=[1, 2, 5, 10]))
            axes.grid(alpha=0.3)
            axes.legend()
        if all(value > 0 for name, values in history.items() if name.endswith("loss") for value in values):
            loss_axes.set_yscale("log")
            loss_axes.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 0.1, 0.2, 0.5, 1, 2, ...
            loss_axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            loss_axes.yaxis.set_minor_formatter(NullFormatter())
        accuracy_axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{100 * value:.4g}%"))  # 92%, 97.5%
        figure.savefig(path, format="svg", metadata={"Date": None})
