"""The `chainrule demo` command: it trains, reports and writes its files; bad input
gets one line and a non-zero exit, never a traceback."""

import importlib.util
import re
import subprocess
import sys

import pytest

import autograd
from chainrule import cli


def test_demo_on_moons_trains_and_writes_everything(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--data", "moons", "--epochs", "8", "--optimizer", "nesterov", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    accuracy = float(re.search(r"validation accuracy ([\d.]+)%", printed).group(1))
    assert accuracy >= 95.0
    assert re.search(r"epoch +8/8\b.*loss", printed)
    assert (out / "model.npz").exists() and (out / "curves.csv").read_text().startswith("epoch,")
    if importlib.util.find_spec("matplotlib"):
        assert "<svg" in (out / "curves.svg").read_text()
    saved = autograd.load(out / "model.npz")
    assert saved["state_dict"]["0.weight"].shape == (32, 2) and saved["architecture"]["hidden_sizes"] == [32, 32]
    if autograd.viz.dot_available():
        assert "<svg" in (out / "graph.svg").read_text() and "0.weight" in (out / "graph.svg").read_text()
        assert (out / "backprop.html").read_text().count("<svg") > 5
    else:
        assert "digraph" in (out / "graph.dot").read_text()


@pytest.mark.parametrize("optimizer", sorted(cli.OPTIMIZERS))
def test_every_optimizer_of_the_lecture_runs(optimizer, tmp_path):
    assert cli.main(["demo", "--data", "spirals", "--epochs", "1", "--optimizer", optimizer,
                     "--out", str(tmp_path)]) == 0


@pytest.mark.parametrize("argv, message", [
    (["demo", "--epochs", "0"], "'0' must be positive"),
    (["demo", "--lr", "fast"], "'fast' is not a float"),
    (["demo", "--data", "mnist"], "invalid choice: 'mnist'"),
    (["demo", "--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    (["train"], "invalid choice: 'train'"),
])
def test_bad_arguments_get_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("chainrule: error:") and message in error


def test_digits_without_scikit_learn_names_the_extra(monkeypatch, capsys, tmp_path):
    def missing():
        raise ImportError("no sklearn")

    monkeypatch.setattr(autograd.datasets, "load_digits", missing)
    assert cli.main(["demo", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install 'chainrule[demo]'" in error


def test_python_dash_m_autograd_runs_the_same_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "autograd", "demo", "--data", "moons", "--epochs", "2",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "validation accuracy" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "autograd", "demo", "--batch-size", "-3"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_plain_progress_bar_without_tqdm(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    assert cli.main(["demo", "--data", "moons", "--epochs", "2", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(re.fullmatch(r"epoch +2/2 \[#{24}\] loss [\d.]+ +[\d.]+s", line) for line in lines)
