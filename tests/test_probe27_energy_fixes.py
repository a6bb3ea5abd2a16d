"""Fixes found by the energy-based-model probe (tests/test_programs_probe27_energy_*.py), each against PyTorch where
installed and against literals always."""

import collections
import io
import pickle

import numpy as np
import pytest

import autograd

REMOVED = ["solve", "lstsq", "eig", "symeig", "matrix_rank"]


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("name", REMOVED)
def test_removed_linalg_functions_raise_runtime_error(name):
    """torch.symeig & co. were removed in PyTorch 1.9 but stay names that raise a RuntimeError saying what replaces
    them (old HMC code calls torch.symeig for a metric): not an AttributeError."""
    A = autograd.eye(2)
    assert hasattr(autograd, name)
    with pytest.raises(RuntimeError, match="deprecated since version 1.9 and is now removed") as ours:
        getattr(autograd, name)(A, A)
    assert ("linalg." + ("eigh" if name == "symeig" else "eigvals" if name == "eig" else name)) in str(ours.value)


@pytest.mark.parametrize("name", REMOVED)
def test_removed_linalg_messages_are_pytorchs(name):
    torch = _torch()
    with pytest.raises(RuntimeError) as theirs:
        getattr(torch, name)(torch.eye(2), torch.eye(2))
    with pytest.raises(RuntimeError) as ours:
        getattr(autograd, name)(autograd.eye(2), autograd.eye(2))
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("name", REMOVED)
def test_removed_linalg_methods(name):
    """Tensor.solve, .lstsq, .eig and .symeig raise the same way; Tensor has no matrix_rank method (nor PyTorch's)."""
    A = autograd.eye(2)
    if name == "matrix_rank":
        assert not hasattr(A, name)
        return
    with pytest.raises(RuntimeError, match="is now removed"):
        getattr(A, name)(A)


# ----------------------------------------------------------------------------------------------
# save/load of a replay buffer kept in a collections.deque, and of a Counter
# ----------------------------------------------------------------------------------------------


def _round_trip(lib, obj, **load_kwargs):
    f = io.BytesIO()
    lib.save(obj, f)
    f.seek(0)
    return lib.load(f, **load_kwargs)


def test_deque_round_trips_with_weights_only_false():
    buffer = collections.deque(maxlen=3)
    for i in range(5):
        buffer.append(autograd.full((2,), float(i)))
    loaded = _round_trip(autograd, {"buffer": buffer, "step": 5}, weights_only=False)["buffer"]
    assert isinstance(loaded, collections.deque) and loaded.maxlen == 3
    np.testing.assert_array_equal(autograd.stack(list(loaded)).numpy(), [[2, 2], [3, 3], [4, 4]])


def test_deque_refused_by_weights_only_load_unless_allowed():
    """PyTorch's weights-only load (the default) refuses a deque: it is no allowed global."""
    with pytest.raises(pickle.UnpicklingError, match="collections.deque"):
        _round_trip(autograd, {"buffer": collections.deque([1, 2])})
    with autograd.serialization.safe_globals([collections.deque]):
        assert _round_trip(autograd, collections.deque([1, 2], maxlen=4)) == collections.deque([1, 2], maxlen=4)


def test_counter_comes_back_a_counter():
    counts = collections.Counter("abracadabra")
    loaded = _round_trip(autograd, {"vocab": counts})["vocab"]
    assert type(loaded) is collections.Counter and loaded == counts


def test_deque_and_counter_as_pytorch_loads_them():
    torch = _torch()
    obj = {"c": collections.Counter("abca"), "d": collections.deque([3, 4.5], maxlen=5)}
    ours, theirs = _round_trip(autograd, obj, weights_only=False), _round_trip(torch, obj, weights_only=False)
    assert ours == theirs and type(ours["c"]) is type(theirs["c"]) and ours["d"].maxlen == theirs["d"].maxlen
    assert type(_round_trip(torch, {"c": obj["c"]})["c"]) is collections.Counter
    with pytest.raises(pickle.UnpicklingError):
        _round_trip(torch, {"d": obj["d"]})


def test_pytorchs_file_with_a_deque_loads_with_weights_only_false():
    torch = _torch()
    f = io.BytesIO()
    torch.save({"buffer": collections.deque([torch.ones(2), 7], maxlen=3)}, f)
    f.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="collections.deque"):
        autograd.load(f)
    f.seek(0)
    buffer = autograd.load(f, weights_only=False)["buffer"]
    assert isinstance(buffer, collections.deque) and buffer.maxlen == 3 and buffer[1] == 7
    np.testing.assert_array_equal(buffer[0].numpy(), [1.0, 1.0])


def test_defaultdict_keeps_its_factory():
    """A run's histories (defaultdict(list)) came back a plain dict: a new key then raised KeyError."""
    history = collections.defaultdict(list)
    history["loss"].append(autograd.tensor(0.5))
    loaded = _round_trip(autograd, {"history": history}, weights_only=False)["history"]
    assert type(loaded) is collections.defaultdict and loaded.default_factory is list
    assert loaded["accuracy"] == [] and float(loaded["loss"][0]) == 0.5
    assert _round_trip(autograd, collections.defaultdict(None, a=1), weights_only=False).default_factory is None
    with pytest.raises(pickle.UnpicklingError, match="collections.defaultdict"):
        _round_trip(autograd, {"history": history})


def test_defaultdict_as_pytorch_saves_and_loads_it():
    torch = _torch()
    history = collections.defaultdict(int, steps=3)
    theirs = _round_trip(torch, {"h": history}, weights_only=False)["h"]
    ours = _round_trip(autograd, {"h": history}, weights_only=False)["h"]
    assert ours == theirs and ours.default_factory is theirs.default_factory is int
    with pytest.raises(pickle.UnpicklingError):
        _round_trip(torch, {"h": history})
    f = io.BytesIO()  # PyTorch's own file, read by ours
    torch.save({"h": collections.defaultdict(list, a=[torch.ones(1)])}, f)
    f.seek(0)
    loaded = autograd.load(f, weights_only=False)["h"]
    assert loaded.default_factory is list and loaded["b"] == [] and loaded["a"][0].numpy().tolist() == [1.0]
