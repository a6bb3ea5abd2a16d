"""Execute the notebooks with nbclient: `make notebooks` stores their outputs in place;
the tests run copies. Usage: python notebooks/execute.py [--in-place] [NOTEBOOK ...]"""

import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def _kernel_sees_this_checkout():
    """The kernel imports autograd, nn and optim from this checkout, not from whichever
    checkout an editable install points at (the kernel starts in notebooks/)."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in paths if p])


def execute(path, timeout=300):
    """The executed notebook (raises CellExecutionError on the first failing cell)."""
    _kernel_sees_this_checkout()
    notebook = nbformat.read(path, as_version=4)
    # The same notebook stores the same bytes every time: no timestamps per cell (record_timing),
    # one stream output per cell however the kernel happened to flush its prints (coalesce_streams).
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", coalesce_streams=True, record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    return notebook


def main(argv):
    in_place = "--in-place" in argv
    paths = [pathlib.Path(a) for a in argv if a != "--in-place"] or sorted(HERE.glob("[0-9]*.ipynb"))
    for path in paths:
        start = time.perf_counter()
        notebook = execute(path)
        if in_place:
            nbformat.write(notebook, path)
        print(f"{path.name}: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
