"""``autograd.jit``'s eager markers (``Final``, ``ignore``, ``unused``, ``export``, ``annotate``,
``is_scripting``) and ``autograd.compiler``'s ``is_compiling``/``disable``: what scriptable model code
reads while it runs eagerly, the identity here as in PyTorch (``script``/``trace``: tests/test_jit.py)."""

import typing

import pytest

import autograd
import nn


class Scriptable(nn.Module):
    fused: autograd.jit.Final[bool]

    def __init__(self):
        super().__init__()
        self.fused = True
        self.lin = nn.Linear(2, 2)

    @autograd.jit.ignore
    def no_weight_decay(self):
        return {"lin.bias"}

    @autograd.jit.ignore(drop=True)
    def debug(self):
        return "debug"

    @autograd.jit.unused
    def unused(self):
        return "unused"

    @autograd.jit.export
    def exported(self):
        return "exported"

    @autograd.compiler.disable
    def not_compiled(self, x):
        return x

    @autograd.compiler.disable(recursive=False)
    def not_compiled_either(self, x):
        return x

    def forward(self, x):
        if autograd.jit.is_scripting() or autograd.jit.is_tracing() or autograd.compiler.is_compiling():
            raise AssertionError("never compiling here")
        y: autograd.Tensor = autograd.jit.annotate(autograd.Tensor, self.lin(x))
        return self.not_compiled(self.not_compiled_either(y))


def test_markers_change_nothing():
    model = Scriptable()
    assert model(autograd.ones(1, 2)).shape == (1, 2)
    assert model.no_weight_decay() == {"lin.bias"} and model.debug() == "debug"
    assert model.unused() == "unused" and model.exported() == "exported"
    assert autograd.jit.Final is typing.Final
    assert autograd.compiler.is_dynamo_compiling() is False
    assert autograd.jit.annotate(list, [1]) == [1]


def test_as_pytorch():
    torch = pytest.importorskip("torch")
    assert torch.jit.is_scripting() is autograd.jit.is_scripting() is False
    assert torch.jit.is_tracing() is autograd.jit.is_tracing() is False
    assert torch.compiler.is_compiling() is autograd.compiler.is_compiling() is False
    assert torch.jit.Final is autograd.jit.Final
    for name in ("ignore", "unused", "export", "annotate", "is_scripting", "is_tracing"):
        assert callable(getattr(torch.jit, name)) and callable(getattr(autograd.jit, name))
