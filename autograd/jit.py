"""``autograd.jit``: ``torch.jit`` as PyTorch runs it with TorchScript disabled (``PYTORCH_JIT=0``).

There is no TorchScript compiler here. PyTorch documents a mode without one, for debugging
scripted code as plain Python: with ``PYTORCH_JIT=0`` every ``torch.jit`` entry point hands back
what it was given and the program runs eagerly. This module is that mode, always:

    script(fn_or_module)         the object itself (also as ``@script``)
    trace(fn, example_inputs)    fn itself: nothing is run to record a trace
    trace_module(mod, inputs)    mod itself
    ignore, unused, export,      decorators that return what they decorate
    interface, script_method
    annotate(type, value)        value;  Attribute(value, type): value;  Final: typing.Final
    fork(fn, *args)              runs fn now; a done Future: ``wait(future)`` gives its result
    is_scripting(), is_tracing() False
    isinstance(obj, List[int])   whether obj is of a typing container type, its elements checked

So a program written for TorchScript gives the same numbers, and gradients, as its eager self.
What disabled TorchScript cannot give is not faked: ``save`` and ``load`` raise (there is no
TorchScript archive to write, and loading one would run the code it holds; save the weights
with ``autograd.save(model.state_dict(), path)`` instead), and ``ScriptModule`` is a type that
no module is an instance of (none is scripted here) but those written on it: TorchScript's legacy
API, ``class Cell(torch.jit.ScriptModule)``, gives an ``nn.Module``, as PyTorch's with TorchScript
disabled.

PyTorch deprecates TorchScript: ``script``, ``trace``, ``trace_module``, ``script_method``,
``interface``, ``fork`` and ``wait`` warn with a DeprecationWarning, as PyTorch's do, pointing to
``autograd.compile``.
"""

import builtins  # (this module defines its own isinstance, torch.jit.isinstance)
import collections.abc
import contextlib
import inspect
import sys
import types
import typing
import warnings
import weakref

from .futures import Future
from .graph import program_stacklevel

__all__ = ["Attribute", "Error", "Final", "Future", "ScriptFunction", "ScriptModule", "ScriptWarning",
           "TracerWarning", "annotate", "export", "fork", "fuser", "ignore", "interface", "is_scripting",
           "is_tracing", "isinstance", "load", "optimized_execution", "save", "script", "script_if_tracing",
           "script_method", "trace", "trace_module", "unused", "wait"]

Final = typing.Final


class Error(RuntimeError):
    """``torch.jit.Error``: what TorchScript raises (never raised here, caught by programs)."""


class TracerWarning(Warning):
    """What tracing warns with (never here: nothing is traced; programs filter it)."""


class ScriptWarning(Warning):
    """What scripting warns with (never here: nothing is scripted; programs filter it)."""


def _deprecated(name):
    warnings.warn(f"`autograd.jit.{name}` is deprecated. Please switch to `autograd.compile`.",
                  DeprecationWarning, stacklevel=program_stacklevel())


def script(obj, optimize=None, _frames_up=0, _rcb=None, example_inputs=None):
    """``obj`` (a function, method, class or module) itself: TorchScript is disabled."""
    _deprecated("script")
    return obj


def trace(func, example_inputs=None, optimize=None, check_trace=True, check_inputs=None, check_tolerance=1e-5,
          strict=True, _force_outplace=False, _module_class=None, _compilation_unit=None,
          example_kwarg_inputs=None, _store_inputs=True):
    """``func`` itself, without running it on ``example_inputs``: TorchScript is disabled."""
    _deprecated("trace")
    return func


def trace_module(mod, inputs, optimize=None, check_trace=True, check_inputs=None, check_tolerance=1e-5,
                 strict=True, _force_outplace=False, _module_class=None, _compilation_unit=None,
                 example_inputs_is_kwarg=False, _store_inputs=True):
    """``mod`` itself, without running its methods on ``inputs``: TorchScript is disabled."""
    _deprecated("trace_module")
    return mod


def script_method(fn):
    _deprecated("script_method")
    return fn


def script_if_tracing(fn):
    """``fn`` itself: nothing is ever traced, so it is never scripted."""
    return fn


def interface(obj):
    """The class itself (TorchScript would record its methods as an interface type)."""
    _deprecated("interface")
    if not inspect.isclass(obj):
        raise RuntimeError("interface must be applied to a class")
    return obj


def export(fn):
    """``fn`` itself (TorchScript would compile it as one more entry point of a module)."""
    return fn


def unused(fn):
    """``fn`` itself (TorchScript would replace it by a raise)."""
    return fn


def ignore(drop=False, **kwargs):
    """``@ignore`` or ``@ignore(drop=...)``: what it decorates, itself (TorchScript would leave it as
    a Python call). ``drop=True`` and ``drop_on_export=`` warn as PyTorch's deprecations do."""
    if callable(drop):  # @ignore, without arguments
        return drop
    if not builtins.isinstance(drop, bool):
        raise RuntimeError(f"Argument to @torch.jit.ignore must be a bool or a function but got {drop}")
    if kwargs.pop("drop_on_export", None):
        warnings.warn("ignore(drop_on_export=True) has been deprecated. TorchScript will now drop the function "
                      "call on compilation. Use torch.jit.unused now. {}", category=FutureWarning,
                      stacklevel=program_stacklevel())
    elif drop:
        warnings.warn("ignore(True) has been deprecated. TorchScript will now drop the function call on "
                      "compilation. Use torch.jit.unused now. {}", category=FutureWarning,
                      stacklevel=program_stacklevel())
    return lambda fn: fn


def is_scripting():
    """False: code never runs as TorchScript here."""
    return False


def is_tracing():
    """False: code is never traced here."""
    return False


def annotate(the_type, the_value):
    """``the_value``: the type is a hint for the TorchScript compiler only."""
    return the_value


def Attribute(value, type):  # noqa: A002 (PyTorch's parameter name)
    """``value``: what ``torch.jit.Attribute`` is with TorchScript disabled."""
    return value


def fork(func, *args, **kwargs):
    """``func(*args, **kwargs)`` run now (outside TorchScript, PyTorch's fork does not run in
    parallel either), as a done Future: ``wait(future)`` or ``future.wait()`` gives the result.
    An error that ``func`` raises is raised here, as PyTorch's."""
    _deprecated("fork")
    future = Future()
    future.set_result(func(*args, **kwargs))
    return future


def wait(future):
    """The result of a Future from ``fork``."""
    _deprecated("wait")
    return future.wait()


class _BuiltOnModule(type):
    """ScriptModule's type. PyTorch's ScriptModule is an ``nn.Module`` (with TorchScript disabled, nothing
    more), but autograd does not import nn: a class written on ScriptModule is built on the nn.Module of
    the program (which imported nn to write it) in ScriptModule's place. ``isinstance(x, ScriptModule)``
    holds for the instances of those classes (and of their subclasses) only."""

    written_on_it = weakref.WeakSet()  # the classes built in ScriptModule's place

    def __new__(mcs, name, bases, namespace, **kwargs):
        if not any(builtins.isinstance(base, mcs) for base in bases):  # ScriptModule itself
            return super().__new__(mcs, name, bases, namespace, **kwargs)
        nn_module = sys.modules.get("nn.module")
        if nn_module is None:
            raise TypeError(f"class {name}: a ScriptModule is an nn.Module; import nn before writing one")
        bases = tuple(nn_module.Module if builtins.isinstance(base, mcs) else base for base in bases)
        cls = type(nn_module.Module)(name, bases, namespace, **kwargs)
        mcs.written_on_it.add(cls)
        return cls

    def __instancecheck__(cls, instance):
        return cls.__subclasscheck__(type(instance))

    def __subclasscheck__(cls, subclass):
        return subclass is cls or any(issubclass(subclass, written) for written in cls.written_on_it)


class ScriptModule(metaclass=_BuiltOnModule):
    """The type of scripted modules. No module is scripted here, so ``isinstance(model, ScriptModule)`` is
    False for an ``nn.Module`` as in PyTorch for a module that was not scripted.

    TorchScript's legacy module API, a class written on ``torch.jit.ScriptModule`` with ``@script_method``
    methods (PyTorch's custom_lstms.py, the chatbot tutorial's GreedySearchDecoder), gives an ``nn.Module``
    whose methods run eagerly, as PyTorch's with TorchScript disabled; its instances are ScriptModules."""

    def __new__(cls, *args, **kwargs):
        raise TypeError("autograd.jit.ScriptModule cannot be created: there is no TorchScript here; use "
                        "nn.Module")


class ScriptFunction:
    """The type of scripted functions: nothing is one here (``script(fn)`` is ``fn``)."""

    def __new__(cls, *args, **kwargs):
        raise TypeError("autograd.jit.ScriptFunction: No constructor defined (no function is scripted here)")


_NO_ARCHIVE = ("there is no TorchScript here, so no TorchScript archive (and loading one would run the code "
               "it holds, which chainrule never does on load). Save and load the weights instead: "
               "autograd.save(model.state_dict(), path), then model.load_state_dict(autograd.load(path))")


def save(m, f, _extra_files=None):
    raise NotImplementedError(f"autograd.jit.save: {_NO_ARCHIVE}")


def load(f, map_location=None, _extra_files=None, _restore_shapes=False):
    raise NotImplementedError(f"autograd.jit.load: {_NO_ARCHIVE}")


@contextlib.contextmanager
def optimized_execution(should_optimize):
    """A block in which TorchScript would (not) optimise: nothing to change here."""
    yield


_FUSERS = ("fuser0", "fuser1", "fuser2", "fuser3", "none")


@contextlib.contextmanager
def fuser(name):
    """A block with TorchScript's fuser ``name`` (one of PyTorch's names): nothing to change here."""
    if name not in _FUSERS:
        raise Exception(f"unrecognized fuser option (name: {name})")  # PyTorch's type and message
    yield


# ``torch.jit.annotations``: the typing names TorchScript code imports from there (timm's densenet:
# ``from torch.jit.annotations import List``), as a module of this one's
annotations = types.ModuleType(f"{__name__}.annotations", "typing's names, as torch.jit.annotations gives them")
for _name in ("Any", "Dict", "List", "Optional", "Tuple", "Union"):
    setattr(annotations, _name, getattr(typing, _name))
sys.modules[annotations.__name__] = annotations


_BARE_CONTAINERS = {dict: "dict", list: "list", tuple: "tuple", typing.Dict: "Dict", typing.List: "List",  # noqa: UP006
                    typing.Optional: "Optional", typing.Tuple: "Tuple"}  # noqa: UP006


def _refuse_bare_container(target_type):
    """A container type without its element types, which TorchScript cannot refine to (PyTorch's words)."""
    name = _BARE_CONTAINERS.get(target_type)
    if name is not None and name.endswith("ict"):
        raise RuntimeError(f"Attempted to use {name} without contained types. Please add contained type, e.g. "
                           f"{name}[int, int]")
    if name is not None:
        raise RuntimeError(f"Attempted to use {name} without a contained type. Please add a contained type, e.g. "
                           f"{name}[int]")


def _warn_if_empty(obj):
    if obj == [] or obj == {} or obj == ():
        warnings.warn("The inner type of a container is lost when calling torch.jit.isinstance in eager mode. For "
                      "example, List[int] would become list and therefore falsely return True for List[float] or "
                      "List[str].", stacklevel=3)


def _element_of(obj, target_type):
    """obj of ``target_type``, a container type checked element by element or a plain type."""
    return _of_container(obj, target_type) if typing.get_origin(target_type) else builtins.isinstance(obj, target_type)


def _of_container(obj, target_type):
    """PyTorch's eager check of List[T], Dict[K, V], Tuple[T1, ..., Tn] and Optional/Union (its first container
    member decides, as PyTorch's check returns at the first)."""
    origin, args = typing.get_origin(target_type), typing.get_args(target_type)
    _refuse_bare_container(target_type)
    if origin is list:
        _warn_if_empty(obj)
        return builtins.isinstance(obj, list) and all(_element_of(item, args[0]) for item in obj)
    if origin is dict:
        _warn_if_empty(obj)
        return builtins.isinstance(obj, dict) and all(
            builtins.isinstance(key, args[0]) and _element_of(value, args[1]) for key, value in obj.items())
    if origin is tuple:
        _warn_if_empty(obj)
        return (builtins.isinstance(obj, tuple) and len(obj) == len(args)
                and all(_element_of(item, arg) for item, arg in zip(obj, args)))
    if origin is typing.Union or origin is types.UnionType:  # Optional[T] too
        if obj is None:
            return True
        for arg in args:
            if typing.get_origin(arg):
                return _of_container(obj, arg)
            if builtins.isinstance(obj, arg):
                return True
    return False


def isinstance(obj, target_type):  # noqa: A001 (PyTorch's name: torch.jit.isinstance)
    """Whether ``obj`` is of ``target_type``, which may be a typing container: ``List[str]``,
    ``Dict[str, List[Tensor]]``, ``Optional[Tuple[int, str]]`` (TorchScript refines ``obj`` to it; in eager mode,
    as here, each element is checked, and an empty container matches any element type, with a warning), a
    plain type, or a tuple of types (any of them)."""
    if builtins.isinstance(target_type, tuple):
        return any(isinstance(obj, one) for one in target_type)
    if builtins.isinstance(target_type, collections.abc.Container):  # a list of types, a string: refused
        raise RuntimeError("The second argument to `torch.jit.isinstance` must be a type or a tuple of types")
    if typing.get_origin(target_type):
        return _of_container(obj, target_type)
    _refuse_bare_container(target_type)
    return builtins.isinstance(obj, target_type)
