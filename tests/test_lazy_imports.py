"""`import autograd, nn, optim` loads no teaching tool: graphviz, the trace, viz, the
datasets and transforms load on first use, and then work as before; so does data-parallel
training (nn.parallel, nn.SyncBatchNorm, autograd.distributed)."""

import subprocess
import sys

import pytest

LAZY = ["graphviz", "html", "autograd.viz", "autograd.trace", "autograd.datasets", "autograd.transforms",
        "autograd.distributed", "nn.parallel", "numpy.polynomial"]


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
    ("import nn; nn.SyncBatchNorm", ["autograd.distributed"]),
    ("from nn.parallel import DistributedDataParallel", ["autograd.distributed", "nn.parallel"]),
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


def test_lazy_nn_names():
    import nn
    from nn.parallel import DistributedDataParallel
    from nn.sync_batchnorm import SyncBatchNorm

    assert nn.SyncBatchNorm is SyncBatchNorm
    assert nn.parallel.DistributedDataParallel is DistributedDataParallel
    assert {"SyncBatchNorm", "parallel"} <= set(dir(nn))
    with pytest.raises(AttributeError, match="no_such_layer"):
        nn.no_such_layer  # noqa: B018


def test_erf_fitted_on_first_use_is_right():
    import math

    import numpy as np

    import autograd

    x = np.linspace(-7, 7, 57)
    expected = [math.erf(v) for v in x]
    np.testing.assert_allclose(autograd.erf(autograd.tensor(x)).numpy(), expected, rtol=1e-14, atol=1e-15)
    assert loaded_after("import autograd; autograd.erf(autograd.ones(2))") == ["numpy.polynomial"]


def test_save_and_load_after_lazy_json(tmp_path):
    import autograd

    path = tmp_path / "t.pt"
    autograd.save({"w": autograd.arange(3.0)}, path)
    assert autograd.load(path)["w"].tolist() == [0.0, 1.0, 2.0]
