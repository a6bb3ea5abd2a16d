"""A small SVG line chart, so the demo draws its curves with no plotting library."""

import html

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"]


def line_chart(panels, width=420, height=280):
    """SVG text with one panel per (title, {series name: [y values]}), side by side."""
    parts = []
    for index, (title, series) in enumerate(panels):
        parts.append(_panel(index * width, title, series, width, height))
    total = width * len(panels)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height}" '
            f'viewBox="0 0 {total} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">'
            f'<rect width="{total}" height="{height}" fill="white"/>' + "".join(parts) + "</svg>")


def _panel(left, title, series, width, height):
    margin_left, margin_right, margin_top, margin_bottom = 62, 15, 30, 40
    plot_w, plot_h = width - margin_left - margin_right, height - margin_top - margin_bottom
    values = [v for ys in series.values() for v in ys]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5, high + 0.5
    longest = max(len(ys) for ys in series.values())

    def x(i):
        return left + margin_left + (plot_w * i / max(longest - 1, 1))

    def y(v):
        return margin_top + plot_h * (1 - (v - low) / (high - low))

    out = [f'<text x="{left + width / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
           f'<rect x="{left + margin_left}" y="{margin_top}" width="{plot_w}" height="{plot_h}" '
           'fill="none" stroke="#999"/>']
    for k in range(5):  # y ticks
        v = low + (high - low) * k / 4
        out.append(f'<text x="{left + margin_left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
        out.append(f'<line x1="{left + margin_left}" x2="{left + margin_left + plot_w}" y1="{y(v):.1f}" '
                   f'y2="{y(v):.1f}" stroke="#eee"/>')
    out.append(f'<text x="{left + margin_left + plot_w / 2}" y="{height - 8}" text-anchor="middle">epoch</text>')
    for k in (0, longest - 1):
        out.append(f'<text x="{x(k):.1f}" y="{margin_top + plot_h + 16}" text-anchor="middle">{k + 1}</text>')
    for n, (name, ys) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(ys))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + margin_left + 8}" y="{margin_top + 16 + 15 * n}" fill="{colour}">'
                   f'{html.escape(name)}</text>')
    return "".join(out)
