"""A new user's first hour with the `chainrule` command: usage with no command, --version,
help for every option, bad --out and --lr refused before training, a diverging run stopped
with one line, and a saved model that reloads to the accuracy the demo reported."""

import importlib.metadata
import importlib.util
import math
import pathlib
import re
import subprocess
import sys

import numpy
import pytest

import autograd
import chainrule
from chainrule import cli
from chainrule.curves import write_curves

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run(*argv, timeout=120):
    return subprocess.run([sys.executable, "-m", "chainrule", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=str(pathlib.Path(__file__).parent.parent))


def test_no_command_prints_usage_and_the_commands_with_status_2(capsys):
    assert cli.main([]) == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: chainrule")
    assert re.search(r"^ +demo +train", error, re.M) and re.search(r"^ +predict +reload", error, re.M)


def test_version_comes_from_the_package_metadata():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"chainrule {importlib.metadata.version('chainrule')}"
    assert autograd.__version__ == f"2.13.0+chainrule.{importlib.metadata.version('chainrule')}"


def test_every_option_has_help_text():
    top = cli.parser()
    commands = next(action for action in top._actions if action.dest == "command")
    assert set(commands.choices) >= {"demo", "predict"}
    for name, command in commands.choices.items():
        for action in command._actions:
            assert action.help, f"chainrule {name} {action.option_strings} has no help text"


@pytest.mark.parametrize("value, message", [
    ("nan", "'nan' must be a finite number"),
    ("inf", "'inf' must be a finite number"),
    ("-0.1", "'-0.1' must be positive"),
    ("0", "'0' must be positive"),
])
def test_lr_that_is_not_a_positive_number_is_refused_at_parsing(value, message, capsys):
    assert cli.main(["demo", "--lr", value]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"chainrule: error: argument --lr: {message}\n" and captured.out == ""


def test_out_that_cannot_be_a_folder_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "inside"):
        assert cli.main(["demo", "--data", "moons", "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # no training started
        assert captured.err.count("\n") == 1
        assert captured.err.startswith(f"chainrule: error: --out {out}: cannot create the folder")


def test_a_diverging_run_stops_with_one_line_exit_1_and_no_numpy_warning(tmp_path):
    result = run("demo", "--data", "moons", "--optimizer", "sgd", "--lr", "1e6", "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == "chainrule: error: loss diverged at epoch 1: try a smaller --lr\n"
    assert "Warning" not in result.stdout + result.stderr
    assert not (tmp_path / "model.npz").exists()
    assert (tmp_path / "curves.csv").read_text() == "epoch,training loss,validation loss,training accuracy," \
                                                     "validation accuracy\n"
    assert not re.search("nan|inf", result.stdout, re.I)


def test_curves_of_a_run_that_diverged_at_epoch_3_hold_only_finite_epochs(tmp_path):
    history = {"training loss": [0.9, 0.5, math.nan], "validation loss": [1.0, 0.6, math.inf],
               "training accuracy": [0.5, 0.7, 0.1], "validation accuracy": [0.5, 0.6, 0.1]}
    written = write_curves(tmp_path, history)
    rows = (tmp_path / "curves.csv").read_text().splitlines()
    assert rows == ["epoch,training loss,validation loss,training accuracy,validation accuracy",
                    "1,0.9,1.0,0.5,0.5", "2,0.5,0.6,0.7,0.6"]
    if HAS_MATPLOTLIB:
        svg = (tmp_path / "curves.svg").read_text()
        assert "<svg" in svg and not re.search(r"\bnan\b|\binf\b", svg, re.I)
        assert any(line.startswith("curves.svg") for line in written)


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the demo extra) is not installed")
def test_curves_svg_is_deterministic_with_round_ticks_and_every_epoch(tmp_path):
    history = {"training loss": [2.3, 0.9, 0.31, 0.12, 0.05], "validation loss": [2.0, 1.0, 0.4, 0.2, 0.15],
               "training accuracy": [0.2, 0.6, 0.9, 0.95, 0.97], "validation accuracy": [0.2, 0.55, 0.85, 0.9, 0.93]}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    write_curves(tmp_path / "a", history)
    write_curves(tmp_path / "b", history)
    svg = (tmp_path / "a" / "curves.svg").read_bytes()
    assert svg == (tmp_path / "b" / "curves.svg").read_bytes()
    text = svg.decode()
    labels = re.findall(r">([^<>]+)</text>", text)
    assert all(str(epoch) in labels for epoch in range(1, 6))  # every epoch ticked
    assert {"0.1", "0.2", "0.5", "1", "2"} <= set(labels)  # the log axis: round values
    assert "training" in labels and "validation" in labels


def test_without_matplotlib_the_demo_writes_csv_and_says_how_to_get_the_picture(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    written = write_curves(tmp_path, {"training loss": [1.0], "validation accuracy": [0.5]})
    assert (tmp_path / "curves.csv").exists() and not (tmp_path / "curves.svg").exists()
    assert "pip install 'chainrule[demo]'" in written[-1]


def test_predict_reloads_the_model_to_the_accuracy_the_demo_reported(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["demo", "--data", "spirals", "--epochs", "3", "--seed", "4", "--out", str(out)]) == 0
    reported = re.search(r"validation accuracy ([\d.]+%)", capsys.readouterr().out).group(1)
    saved = autograd.load(out / "model.npz")
    assert saved["data"] == "spirals" and saved["seed"] == 4

    assert cli.main(["predict", "--model", str(out)]) == 0
    assert capsys.readouterr().out == f"validation accuracy {reported} (180 samples of spirals, split by seed 4)\n"

    # the README's three lines, on the same validation split: the same accuracy, to the last bit
    model, standardize = chainrule.load_model(out / "model.npz")
    valid = cli.split("spirals", 4)[-1]
    X_valid, y_valid = valid.batch(numpy.arange(len(valid)))
    predictions = model(standardize(X_valid)).argmax(1)
    assert float((predictions.numpy() == y_valid.numpy()).mean()) == saved["validation_accuracy"]


def test_predict_on_a_folder_without_a_model_says_so_in_one_line(tmp_path, capsys):
    assert cli.main(["predict", "--model", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"chainrule: error: --model {tmp_path}: cannot read")
