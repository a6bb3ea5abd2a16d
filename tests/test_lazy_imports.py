"""`import autograd, nn, optim` loads no teaching tool: graphviz, the trace, viz, the
datasets and transforms load on first use, and then work as before."""

import subprocess
import sys

import pytest

LAZY = ["graphviz", "html", "autograd.viz", "autograd.trace", "autograd.datasets", "autograd.transforms"]


def loaded_after(code):
    """The LAZY modules in sys.modules after running ``code`` in a fresh interpreter."""
    script = f"import sys\n{code}\nprint(' '.join(m for m in {LAZY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_import_loads_no_teaching_tool():
    assert loaded_after("import autograd, nn, optim") == []


@pytest.mark.parametrize("code, expected", [
    ("import autograd; autograd.viz", ["graphviz", "autograd.viz"]),
    ("from autograd import viz", ["graphviz", "autograd.viz"]),
    ("import autograd.trace", ["graphviz", "html", "autograd.viz", "autograd.trace"]),
    ("import autograd; autograd.datasets", ["autograd.datasets"]),
    ("from autograd import transforms", ["autograd.transforms"]),
])
def test_first_use_loads_the_tool(code, expected):
    assert loaded_after(code) == expected


def test_lazy_names_are_the_modules():
    import importlib

    import autograd

    for name in ("viz", "trace", "datasets", "transforms", "utils", "data"):
        assert getattr(autograd, name) is importlib.import_module(f"autograd.{name}")
        assert name in dir(autograd)
    assert autograd.utils.data.DataLoader.__name__ == "DataLoader"


def test_unknown_name_is_an_attribute_error():
    import autograd

    with pytest.raises(AttributeError, match="no_such_thing"):
        autograd.no_such_thing  # noqa: B018
