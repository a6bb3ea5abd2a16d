"""Checkpoints holding the program's own objects (a config dataclass, an enum, a named tuple, a class):
saved by their state, rebuilt by load only for what the program allows with add_safe_globals or
safe_globals, as torch.load(weights_only=True); never by importing or running what the file names."""

import collections
import dataclasses
import enum
import io
import pickle

import numpy as np
import pytest

import autograd
import nn
from autograd import serialization


@dataclasses.dataclass
class TrainConfig:
    lr: float
    layers: list
    note: str = "baseline"


class Phase(enum.Enum):
    WARMUP = "warmup"
    MAIN = "main"


Point = collections.namedtuple("Point", "x y")


class Tracked:
    """A class with its own __setstate__, which load calls (pickle's rule) for an allowed class."""

    def __init__(self, value):
        self.value = value

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.restored = True


@pytest.fixture(autouse=True)
def no_globals_allowed():
    serialization.clear_safe_globals()
    yield
    serialization.clear_safe_globals()


def checkpoint():
    model = nn.Linear(2, 1)
    return {"model": model.state_dict(), "config": TrainConfig(0.1, [64, 32]), "phase": Phase.MAIN,
            "best": Point(3, autograd.tensor([1.0, 2.0])), "activation": nn.ReLU, "tracked": Tracked(7)}


def test_objects_are_rebuilt_for_the_classes_the_program_allows(tmp_path):
    path = tmp_path / "run.pt"
    saved = checkpoint()
    autograd.save(saved, path)
    serialization.add_safe_globals([TrainConfig, Phase, Point, nn.ReLU, Tracked])
    loaded = autograd.load(path)
    assert loaded["config"] == TrainConfig(0.1, [64, 32]) and type(loaded["config"]) is TrainConfig
    assert loaded["phase"] is Phase.MAIN
    assert type(loaded["best"]) is Point and loaded["best"].x == 3 and loaded["best"].y.tolist() == [1.0, 2.0]
    assert loaded["activation"] is nn.ReLU
    assert loaded["tracked"].value == 7 and loaded["tracked"].restored
    np.testing.assert_array_equal(loaded["model"]["weight"].numpy(), saved["model"]["weight"].numpy())
    assert serialization.get_unsafe_globals_in_checkpoint(path) == []


def test_a_class_not_allowed_is_refused_naming_it(tmp_path):
    path = tmp_path / "run.pt"
    autograd.save({"config": TrainConfig(0.1, [])}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"GLOBAL test_safe_globals\.TrainConfig|TrainConfig was not an "
                                                      r"allowed global"):
        autograd.load(path)
    with pytest.raises(pickle.UnpicklingError, match="add_safe_globals"):
        autograd.load(path, weights_only=False)  # (still: load never runs what a file names by itself)
    assert serialization.get_unsafe_globals_in_checkpoint(path) == [f"{__name__}.TrainConfig"]
    with serialization.safe_globals([TrainConfig]):
        assert autograd.load(path)["config"].lr == 0.1
    assert serialization.get_safe_globals() == []  # (the context manager's allowance ends with it)


def test_a_name_given_with_the_class(tmp_path):
    path = tmp_path / "run.pt"
    autograd.save({"phase": Phase.WARMUP}, path)
    serialization.add_safe_globals([(Phase, f"{__name__}.Phase")])
    assert autograd.load(path)["phase"] is Phase.WARMUP
    assert serialization.get_safe_globals() == [Phase]


def test_objects_the_file_cannot_describe_are_refused_at_save():
    with pytest.raises(TypeError, match="cannot store an object of type"):
        autograd.save({"handle": object()}, io.BytesIO())
    with pytest.raises(TypeError):
        autograd.save({"f": lambda x: x}, io.BytesIO())


def test_a_pytorch_checkpoint_with_a_dataclass(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "torch.pt"
    torch.save({"weight": torch.ones(2), "config": TrainConfig(0.5, [8])}, path)
    with pytest.raises(pickle.UnpicklingError, match="TrainConfig"):
        autograd.load(path)
    assert serialization.get_unsafe_globals_in_checkpoint(path) == [f"{__name__}.TrainConfig"]
    torch.serialization.add_safe_globals([TrainConfig])
    try:
        theirs = torch.load(path)  # (PyTorch's own weights_only load asks for the same allowance)
    finally:
        torch.serialization.clear_safe_globals()
    serialization.add_safe_globals([TrainConfig])
    ours = autograd.load(path)
    assert ours["config"] == theirs["config"] == TrainConfig(0.5, [8])
    assert ours["weight"].tolist() == [1.0, 1.0]


def test_devices_and_complex_numbers_round_trip_without_any_allowance():
    """What torch.load(weights_only=True) reads without being asked: a device a checkpoint records, a complex."""
    buffer = io.BytesIO()
    autograd.save({"device": autograd.device("cpu"), "other": autograd.device("cuda", 1), "z": 1 - 2.5j}, buffer)
    buffer.seek(0)
    loaded = autograd.load(buffer)
    assert loaded["device"] == autograd.device("cpu") and loaded["other"] == autograd.device("cuda", 1)
    assert loaded["z"] == complex(1, -2.5)
