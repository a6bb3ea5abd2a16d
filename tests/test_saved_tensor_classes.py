"""A saved tensor's class and attributes (autograd/tensor_classes.py): nn.Parameter, a program's subclass and the
attributes set on a tensor come back from load as they were saved, as PyTorch's pickle gives them, and a class a
program did not allow is refused under weights_only=True, as PyTorch refuses it."""

import io
import pickle
import subprocess
import sys

import numpy as np
import pytest

import autograd
import nn


class Labelled(autograd.Tensor):
    """A program's own tensor class, defined at a module's top level (a file names it tests.<module>.Labelled)."""


class Restoring(autograd.Tensor):
    """A class with its own __setstate__, which load calls with the saved attributes, as pickle would."""

    def __setstate__(self, state):
        self.restored = dict(state, through="setstate")


def roundtrip(obj, **load_kwargs):
    buffer = io.BytesIO()
    autograd.save(obj, buffer)
    buffer.seek(0)
    return autograd.load(buffer, **load_kwargs)


def test_a_parameter_comes_back_a_parameter_sharing_as_saved():
    p = nn.Parameter(autograd.tensor([1.0, 2.0]))
    frozen = nn.Parameter(autograd.tensor([3.0]), requires_grad=False)
    loaded = roundtrip({"p": p, "again": p, "frozen": frozen, "view": p[1:]})
    assert type(loaded["p"]) is nn.Parameter and loaded["p"].requires_grad
    assert type(loaded["frozen"]) is nn.Parameter and not loaded["frozen"].requires_grad
    assert loaded["again"] is loaded["p"]
    np.testing.assert_array_equal(loaded["p"].detach().numpy(), [1.0, 2.0])
    with autograd.no_grad():
        loaded["p"][1] = 7.0  # (the view saved beside it shares its memory again)
    assert loaded["view"].tolist() == [7.0]


def test_a_parameter_saved_alone_can_be_assigned_to_a_module():
    weight = roundtrip(nn.Embedding(4, 2).weight)
    fresh = nn.Embedding(4, 2)
    fresh.weight = weight  # (a plain tensor is refused here: it must be a Parameter)
    assert fresh.weight is weight and [name for name, _ in fresh.named_parameters()] == ["weight"]


def test_attributes_set_on_a_tensor_come_back_but_not_the_engines_own():
    t = autograd.tensor([1.0, 2.0], requires_grad=True)
    t.label, t.scale = "cat", 0.5
    (t * 2).sum().backward()  # (t now holds a .grad: the engine's state, not saved)
    loaded = roundtrip(t)
    assert (loaded.label, loaded.scale) == ("cat", 0.5)
    assert loaded.grad is None and loaded.requires_grad and type(loaded) is autograd.Tensor


def test_a_program_class_is_refused_unless_allowed_as_pytorch_refuses_it():
    x = autograd.tensor([1.0, 2.0]).as_subclass(Labelled)
    x.label = "dog"
    buffer = io.BytesIO()
    autograd.save(x, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match=f"Unsupported global: GLOBAL {__name__}.Labelled"):
        autograd.load(buffer)
    buffer.seek(0)
    assert autograd.serialization.get_unsafe_globals_in_checkpoint(buffer) == [f"{__name__}.Labelled"]
    buffer.seek(0)
    with autograd.serialization.safe_globals([Labelled]):
        allowed = autograd.load(buffer)
    buffer.seek(0)
    trusted = autograd.load(buffer, weights_only=False)  # (found where the program defined it; nothing imported)
    for loaded in (allowed, trusted):
        assert type(loaded) is Labelled and loaded.label == "dog"
        np.testing.assert_array_equal(loaded.numpy(), [1.0, 2.0])


def test_a_class_defined_inside_a_function_cannot_be_found():
    class Local(autograd.Tensor):
        pass

    buffer = io.BytesIO()
    autograd.save(autograd.tensor([1.0]).as_subclass(Local), buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="Local"):
        autograd.load(buffer, weights_only=False)


def test_a_class_of_its_own_setstate_gets_the_attributes_through_it():
    x = autograd.tensor([1.0]).as_subclass(Restoring)
    x.label = "bird"
    with autograd.serialization.safe_globals([Restoring]):
        loaded = roundtrip(x)
    assert type(loaded) is Restoring and loaded.restored == {"label": "bird", "through": "setstate"}


def test_a_parameter_loads_as_a_plain_tensor_where_nn_is_not_imported(tmp_path):
    path = tmp_path / "p.pt"
    autograd.save({"w": nn.Parameter(autograd.tensor([1.0, 2.0]))}, path)
    program = (f"import sys, autograd; w = autograd.load({str(path)!r})['w']; "
               "print(type(w).__name__, w.requires_grad, w.tolist(), 'nn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["Tensor", "True", "[1.0,", "2.0]", "False"]


# --- files written by torch.save ---

def _torch_file(obj, torch):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_pytorch_parameters_and_attributes_load_as_they_were_saved():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    frozen = torch.nn.Parameter(torch.tensor([3.0]), requires_grad=False)
    frozen.tag = "frozen"
    t = torch.tensor([4.0])
    t.label = "cat"
    loaded = autograd.load(_torch_file({"p": p, "frozen": frozen, "t": t}, torch))
    reference = torch.load(_torch_file({"p": p, "frozen": frozen, "t": t}, torch))
    for key in ("p", "frozen", "t"):
        assert type(loaded[key]).__name__ == type(reference[key]).__name__
        assert loaded[key].requires_grad == reference[key].requires_grad
        np.testing.assert_array_equal(loaded[key].detach().numpy(), reference[key].detach().numpy())
    assert loaded["frozen"].tag == reference["frozen"].tag == "frozen"
    assert loaded["t"].label == reference["t"].label == "cat"
    assert type(loaded["p"]) is nn.Parameter


def test_a_pytorch_subclass_loads_as_the_program_class_of_its_name(monkeypatch):
    torch = pytest.importorskip("torch")

    class TorchLabelled(torch.Tensor):
        pass

    TorchLabelled.__module__, TorchLabelled.__qualname__ = __name__, "Labelled"  # (the file names ours)
    x = torch.tensor([1.0, 2.0]).as_subclass(TorchLabelled)
    x.label = "dog"
    with monkeypatch.context() as patch:
        patch.setitem(globals(), "Labelled", TorchLabelled)  # (pickle finds the class it saves under its name)
        written = _torch_file(x, torch).getvalue()
    with pytest.raises(pickle.UnpicklingError):
        autograd.load(io.BytesIO(written))
    loaded = autograd.load(io.BytesIO(written), weights_only=False)
    assert type(loaded) is Labelled and loaded.label == "dog" and loaded.tolist() == [1.0, 2.0]
