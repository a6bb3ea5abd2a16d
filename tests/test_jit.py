"""autograd.jit is torch.jit with TorchScript disabled (PYTORCH_JIT=0): every entry point hands back
what it was given, fork runs at once, save/load refuse. autograd.futures.Future is torch.futures.Future."""

import inspect
import threading
import typing
import warnings

import numpy as np
import pytest

import autograd
import nn
from autograd import jit
from autograd.futures import Future, collect_all, wait_all


def double(x):
    return x * 2


def test_script_and_trace_return_what_they_are_given():
    model = nn.Linear(3, 2)
    x = autograd.randn(4, 3)
    with pytest.warns(DeprecationWarning, match="autograd.jit.script"):
        assert jit.script(double) is double
    with pytest.warns(DeprecationWarning):
        assert jit.script(model, optimize=None, _frames_up=1, example_inputs=[(x,)]) is model
    with pytest.warns(DeprecationWarning, match="autograd.jit.trace"):
        assert jit.trace(model, (x,), check_trace=False) is model
    with pytest.warns(DeprecationWarning):
        assert jit.trace_module(model, {"forward": x}) is model


def test_script_as_a_decorator_and_gradients_flow():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)

        @jit.script
        def f(x):
            return (x.tanh() * 3).sum()

    x = autograd.tensor([0.5, -1.0], dtype=autograd.float64, requires_grad=True)
    f(x).backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * (1 - np.tanh([0.5, -1.0]) ** 2))


def test_trace_runs_nothing():
    calls = []

    def f(x):
        calls.append(x)
        return x

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert jit.trace(f, (autograd.ones(2),)) is f
    assert calls == []


def test_fork_and_wait_warn_as_deprecated():
    with pytest.warns(DeprecationWarning, match="autograd.jit.fork"):
        future = jit.fork(double, 2)
    with pytest.warns(DeprecationWarning, match="autograd.jit.wait"):
        assert jit.wait(future) == 4


def test_decorators_are_identity():
    assert jit.ignore(double) is double
    assert jit.ignore(drop=False)(double) is double
    with pytest.warns(FutureWarning, match="ignore\\(True\\) has been deprecated"):
        assert jit.ignore(True)(double) is double
    with pytest.raises(RuntimeError, match="must be a bool or a function"):
        jit.ignore("yes")
    assert jit.unused(double) is double
    assert jit.export(double) is double
    assert jit.script_if_tracing(double) is double
    with pytest.warns(DeprecationWarning):
        assert jit.script_method(double) is double

    class Shape:
        def area(self) -> float: ...

    with pytest.warns(DeprecationWarning):
        assert jit.interface(Shape) is Shape
    with pytest.warns(DeprecationWarning), pytest.raises(RuntimeError, match="interface must be applied to a class"):
        jit.interface(double)


def test_modes_hints_and_attributes():
    assert jit.is_scripting() is False and jit.is_tracing() is False
    d = {}
    assert jit.annotate(dict[str, int], d) is d
    assert jit.Attribute(3, int) == 3
    assert jit.Final is typing.Final
    with jit.optimized_execution(False), jit.fuser("fuser1"):
        pass
    with pytest.raises(Exception, match="unrecognized fuser option"), jit.fuser("fuser9"):
        pass
    assert issubclass(jit.Error, RuntimeError) and issubclass(jit.TracerWarning, Warning)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_runs_now_and_wait_gives_the_result():
    x = autograd.tensor([1.0, 2.0])
    future = jit.fork(lambda a, b=1: a + b, x, b=3)
    assert isinstance(future, jit.Future) and future.done()
    np.testing.assert_array_equal(jit.wait(future).numpy(), [4.0, 5.0])
    assert future.wait() is future.value()
    with pytest.raises(ValueError, match="boom"):  # raised at fork, as PyTorch's eager fork
        jit.fork(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_script_module_and_function_are_types_nothing_is_an_instance_of():
    model = nn.Linear(2, 2)
    assert not isinstance(model, jit.ScriptModule)
    assert not isinstance(double, jit.ScriptFunction)
    class Old(jit.ScriptModule):  # TorchScript's legacy API gives an nn.Module (tests/test_probe27_sequence_fixes.py)
        pass
    assert isinstance(Old(), nn.Module) and isinstance(Old(), jit.ScriptModule)
    with pytest.raises(TypeError):
        jit.ScriptModule()
    with pytest.raises(TypeError, match="No constructor defined"):
        jit.ScriptFunction()


def test_save_and_load_refuse_and_point_to_state_dict(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(NotImplementedError, match=r"autograd.save\(model.state_dict\(\), path\)"):
        jit.save(model, tmp_path / "m.pt")
    with pytest.raises(NotImplementedError, match="run the code"):
        jit.load(tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_future_set_wait_then_and_callbacks():
    future = Future()
    assert not future.done()
    with pytest.raises(RuntimeError, match="not done"):
        future.value()
    seen = []
    future.add_done_callback(lambda f: seen.append(f.value()))
    chained = future.then(lambda f: f.value() * 10)
    failing = future.then(lambda f: 1 / 0)
    future.set_result(4)
    assert seen == [4] and chained.wait() == 40
    with pytest.raises(RuntimeError, match="error when running the callback: ZeroDivisionError"):
        failing.wait()
    with pytest.raises(RuntimeError, match="only be marked completed once"):
        future.set_result(5)
    late = []
    future.add_done_callback(lambda f: late.append(f.wait()))  # already done: runs now
    assert late == [4]

    broken = Future()
    broken.set_exception(ValueError("bad"))
    with pytest.raises(ValueError, match="bad"):
        broken.wait()
    with pytest.raises(TypeError):
        Future().set_exception("not an exception")


def test_future_set_from_another_thread_wakes_the_waiter():
    future = Future()
    threading.Timer(0.01, future.set_result, args=("done",)).start()
    assert future.wait() == "done"


def test_collect_all_and_wait_all():
    a, b = Future(), Future()
    both = collect_all([a, b])
    a.set_result(1)
    assert not both.done()
    b.set_result(2)
    assert both.done() and [f.value() for f in both.wait()] == [1, 2]
    assert wait_all([a, b]) == [1, 2]
    assert collect_all([]).wait() == []


def test_jit_and_futures_load_on_first_use():
    assert "jit" in dir(autograd) and autograd.jit is jit
    assert autograd.futures.Future is jit.Future


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_signatures_and_behaviour_match_torch():
    torch = pytest.importorskip("torch")
    for name in ("script", "trace", "trace_module", "fork", "wait", "save", "load", "annotate", "ignore",
                 "unused", "export", "interface"):
        ours, theirs = inspect.signature(getattr(jit, name)), inspect.signature(getattr(torch.jit, name))
        assert list(ours.parameters) == list(theirs.parameters), name
        assert [p.default for p in ours.parameters.values() if p.name != "_compilation_unit"] == \
            [p.default for p in theirs.parameters.values() if p.name != "_compilation_unit"], name
    assert torch.jit.is_scripting() is jit.is_scripting() and torch.jit.is_tracing() is jit.is_tracing()
    assert torch.jit.annotate(int, 3) == jit.annotate(int, 3)
    assert torch.jit.Final is jit.Final
    assert not isinstance(torch.nn.Linear(2, 2), torch.jit.ScriptModule)  # as ours, for an nn.Module
    theirs = torch.jit.fork(lambda t: t + 1, torch.tensor([1.0]))
    assert torch.jit.wait(theirs).item() == jit.wait(jit.fork(lambda t: t + 1, autograd.tensor([1.0]))).item()
    future = torch.futures.Future()
    future.set_result(1)
    with pytest.raises(RuntimeError) as theirs_error:
        future.set_result(2)
    ours = Future()
    ours.set_result(1)
    with pytest.raises(RuntimeError) as ours_error:
        ours.set_result(2)
    assert str(ours_error.value) == str(theirs_error.value)
