"""The README's code runs as printed, and does what its comments say: each ```python block is
read from README.md itself (so an edit there is tested here) and run in a fresh namespace in a
temporary directory."""

import math
import pathlib
import re
import shutil

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _block(starting_with):
    """The README's python block whose code contains ``starting_with``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [code for code in blocks if starting_with in code]
    assert len(found) == 1, f"{len(found)} README blocks contain {starting_with!r}"
    return found[0]


def _run(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102  (our own README)
    return namespace


def test_value_quickstart_is_one_neuron_and_one_step_of_descent(tmp_path, monkeypatch, capsys):
    ns = _run(_block("x1, x2 = Value(2.0"), tmp_path, monkeypatch)
    z = 0.5 * 2.0 - 0.25 * -1.0 + 0.1
    y = 1 / (1 + math.exp(-z))
    dz = 2 * (y - 1) * y * (1 - y)
    loss, dw1, db = capsys.readouterr().out.split()
    assert float(loss) == pytest.approx((y - 1) ** 2) and float(dw1) == pytest.approx(dz * 2.0)
    assert float(db) == pytest.approx(dz)
    assert ns["w1"].data == pytest.approx(0.5 - 0.1 * dz * 2.0)


def test_tensor_quickstart_gives_gradients_and_a_gradient_with_a_graph(tmp_path, monkeypatch):
    ns = _run(_block("w = autograd.randn(3, 1, requires_grad=True)"), tmp_path, monkeypatch)
    w, g = ns["w"], ns["g"]
    assert w.grad.shape == (3, 1) and ns["b"].grad.shape == (1,)
    assert g.requires_grad and (g.detach() - 3 * w.detach() ** 2).abs().max().item() < 1e-6


def test_training_loop_learns_the_moons_and_saves_the_weights(tmp_path, monkeypatch, capsys):
    _run(_block("for epoch in range(30):"), tmp_path, monkeypatch)
    label, accuracy = capsys.readouterr().out.rsplit(" ", 1)
    assert label == "test accuracy" and float(accuracy) > 0.95
    assert (tmp_path / "moons.npz").exists()


def test_the_import_mapping_names_modules_that_exist(tmp_path, monkeypatch):
    ns = _run(_block("import autograd as torch"), tmp_path, monkeypatch)
    assert {"torch", "nn", "optim", "F", "DataLoader", "TensorDataset"} <= set(ns)


@pytest.mark.skipif(shutil.which("dot") is None, reason="drawing the graph needs Graphviz's dot")
def test_step_through_writes_its_page_and_the_graph(tmp_path, monkeypatch):
    ns = _run(_block("trace = trace_backward(loss)"), tmp_path, monkeypatch)
    assert "<html" in (tmp_path / "backprop.html").read_text().lower()
    assert "<svg" in (tmp_path / "graph.svg").read_text()
    assert ns["w"].grad != 0.0
