"""Every notebook runs top to bottom without an error and in bounded time, is stored with its
outputs, stays small enough to read on a code host, and stores the same outputs every time it
is executed (no memory addresses, no timings, stable picture ids)."""

import pathlib
import re

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("[0-9]*.ipynb"))
nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed")
pytest.importorskip("nbclient", reason="the notebooks extra is not installed")

# Seconds each cell may take: ten times the CPU time the whole notebook took on a busy
# 2-core machine (measured with /usr/bin/time around notebooks/execute.py), at least a minute.
CPU_SECONDS = {"01": 2, "02": 11, "03": 17, "04": 6, "05": 10, "06": 19, "07": 2, "08": 15}
CELL_TIMEOUT = {number: max(60, 10 * seconds) for number, seconds in CPU_SECONDS.items()}

# What would make `make notebooks` leave a diff behind: object addresses, timings, graph
# node ids made from memory addresses (v140234...), matplotlib's random SVG ids.
UNSTABLE = re.compile(r"0x[0-9a-fA-F]{6,}|\b(?:v|op)\d{9,}\b|\bin \d+(?:\.\d+)? ?s\b|\d+(?:\.\d+)? ?(?:ms|µs)\b|"
                      r"Wall time|CPU times")


def _outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _texts(output):
    if output.output_type == "stream":
        yield output.text
    for kind, value in output.get("data", {}).items():
        if kind.startswith("text/") or kind == "image/svg+xml":
            yield value if isinstance(value, str) else "".join(value)


def test_all_notebooks_are_there():
    assert [path.stem[:2] for path in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08"]
    assert sorted(CPU_SECONDS) == [path.stem[:2] for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_with_outputs_and_small(path):
    assert path.stat().st_size < 1_000_000
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), "run `make notebooks` to store outputs"
    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {}) for o in outputs)
    for output in outputs:
        if "image/png" in output.get("data", {}):
            assert _png_dpi(output.data["image/png"]) >= 99.9, f"{path.name}: a figure below 100 dpi"


def _png_dpi(encoded):
    """The resolution a PNG declares (matplotlib writes its dpi into the pHYs chunk)."""
    import base64
    import struct

    data = base64.b64decode(encoded)
    at = data.find(b"pHYs")
    assert at > 0, "a PNG without its resolution"
    per_metre, _, unit = struct.unpack(">IIB", data[at + 4:at + 13])
    assert unit == 1
    return per_metre * 0.0254


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_outputs_are_reproducible(path):
    """Nothing in the stored outputs changes from one execution to the next."""
    notebook = nbformat.read(path, as_version=4)
    for output in _outputs(notebook):
        for text in _texts(output):
            found = UNSTABLE.search(text)
            assert found is None, f"{path.name} stores {found.group(0)!r}, which changes from run to run"
    assert "%time" not in "".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert not [cell for cell in notebook.cells if "execution" in cell.metadata], "per-cell timestamps are stored"
    pictures = "".join(text for output in _outputs(notebook) for text in _texts(output) if "<svg" in text)
    assert "<dc:date>" not in pictures  # matplotlib SVGs carry no timestamp


def _stream_text(notebook):
    return ["".join(o.text for o in cell.outputs if o.output_type == "stream")
            for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path):
    import sys

    sys.path.insert(0, str(path.parent))
    from execute import execute

    notebook = execute(path, timeout=CELL_TIMEOUT[path.stem[:2]])  # raises on the first failing cell
    assert not [o for o in _outputs(notebook) if o.output_type == "error"]
    if path.stem.startswith("01"):  # small and seeded: it prints exactly what is stored
        assert _stream_text(notebook) == _stream_text(nbformat.read(path, as_version=4)), \
            "the stored outputs of 01 are stale or not deterministic: run `make notebooks`"
