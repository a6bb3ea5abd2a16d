"""`chainrule demo --model cnn`: a small convolutional network on the 8x8 digits, same outputs as the MLP."""

import re

import pytest

import autograd
from chainrule import cli
from chainrule.model_file import load_model


def test_cnn_demo_learns_the_digits_and_writes_everything(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "cnn"
    assert cli.main(["demo", "--model", "cnn", "--epochs", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CNN conv8-conv16-10" in printed
    accuracy = float(re.search(r"validation accuracy ([\d.]+)%", printed).group(1))
    assert accuracy >= 95.0
    state = autograd.load(out / "model.npz")["state_dict"]
    assert state["conv1.weight"].shape == (8, 1, 3, 3) and state["fc.weight"].shape == (10, 256)
    model, _ = load_model(out / "model.npz")  # the file says which class rebuilds it
    assert type(model).__name__ == "DigitsCNN"
    assert "<svg" in (out / "curves.svg").read_text()
    if autograd.viz.dot_available():
        assert "conv1.weight" in (out / "graph.svg").read_text()


def test_cnn_needs_images(capsys, tmp_path):
    assert cli.main(["demo", "--model", "cnn", "--data", "moons", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--model cnn needs images" in error


def test_mlp_stays_the_default():
    assert cli.parser().parse_args(["demo"]).model == "mlp"
