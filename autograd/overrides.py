"""PyTorch's ``__torch_function__`` protocol (``torch.overrides``): a subclass of Tensor takes part in every call.

A class that subclasses Tensor is asked first by every public function and Tensor method that receives one of
its instances: the call becomes ``type(x).__torch_function__(func, types, args, kwargs)``, where ``func`` is the
function or method called (``autograd.add``, ``Tensor.add``, ``nn.functional.relu``), ``types`` the classes
that take part, subclasses before their bases. The default, ``Tensor.__torch_function__``, runs ``func`` with the
protocol switched off and gives Tensor results back as the subclass, so a subclass keeps its class through
every op (``type(x + 1) is MyTensor``); a class overriding it may log the call, unwrap its arguments, or answer
for the function itself (PyTorch's tutorials' ``LoggingTensor``, torchvision's ``tv_tensors``).

``nn.Parameter`` opts out (``__torch_function__ = _disabled_torch_function_impl``): ops on parameters give plain
tensors, and a parameter never takes part.

Cost: a program with no subclass of its own pays nothing. The public functions and methods are plain until the
first class that takes part is defined (``Tensor.__init_subclass__`` calls ``install``); from then on each is a
``Dispatching`` wrapper, which compares equal to (and hashes as) the function it wraps, so a table of functions
written before or after that moment (``func in {Tensor.clone: ...}``) finds it either way.
``uninstall`` puts the plain functions back (the test suite does, after each test). The wrappers and their
installation live in ``dispatching.py``; this module is the protocol they ask, and names them as PyTorch's
``torch.overrides`` does.

A ``TorchFunctionMode`` is asked about every call made while it is entered (``with LoggingMode():``), before any
subclass and whatever the arguments, factories included (``autograd.zeros(2)``, which no subclass is asked about):
the innermost mode's ``__torch_function__(func, types, args, kwargs)`` runs with that mode taken off this thread's
stack, so the calls it makes go to the modes outside it, then to the subclasses, then to the function itself.
Entering the first mode installs the wrappers, as the first subclass does.

Three switches, per thread, as PyTorch's: inside ``DisableTorchFunctionSubclass`` no subclass is asked but modes
are; inside ``DisableTorchFunction`` (and during a backward pass, whose ops are the engine's) neither is.

Classes that take part without subclassing Tensor (PyTorch's "tensor-like" duck types) are those registered with
``register_tensor_like`` (torch.fx's Proxy), not any class with a ``__torch_function__``, which would need every call
to look at each argument's class. Not built: properties other than the tensor-valued ones reaching a mode
(PyTorch gives it ``x.shape``'s and ``x.grad``'s getters too).
"""

import functools
import importlib
import threading
import warnings

from .graph import ModeSwitch, modes, program_stacklevel
from .tensor import SUBCLASS_WATCHERS, Tensor


def _made_by_new(self, *args, **kwargs):
    """The ``__init__`` of a class of tensors whose own ``__new__`` makes its instances: nothing, as PyTorch's
    (``object.__init__``). Tensor's would make the instance again from the constructor's arguments, wiping what
    ``__new__`` set: ``x.as_subclass(cls)``'s graph (its gradient lost), or refusing its keywords
    (``BoundingBoxes(data, format=...)``). One ``__new__`` left bare (``super().__new__(cls)``) is PyTorch's empty
    tensor."""
    if not hasattr(self, "_data"):
        Tensor.__init__(self)


def _constructed_by_new(cls):
    """A watcher of Tensor's subclasses (tensor.py's SUBCLASS_WATCHERS): a class with a ``__new__`` of its own (or
    its bases') and no ``__init__`` below Tensor's is made by that ``__new__`` alone."""
    below_tensor = cls.__mro__[:cls.__mro__.index(Tensor)]
    if any("__new__" in vars(base) for base in below_tensor) and not any(
            "__init__" in vars(base) for base in below_tensor):
        cls.__init__ = _made_by_new


def _watch_construction():
    SUBCLASS_WATCHERS.append(_constructed_by_new)
    pending = Tensor.__subclasses__()  # (those defined before this module was imported: the first, whose
    while pending:                     # __init_subclass__ imports it)
        cls = pending.pop()
        _constructed_by_new(cls)
        pending.extend(cls.__subclasses__())


_watch_construction()


def _disabled_torch_function_impl(func, types, args=(), kwargs=None):
    """The ``__torch_function__`` of a class that does not take part (nn.Parameter's): ``func`` as it is."""
    return func(*args, **(kwargs or {}))


class _FunctionDispatch(threading.local):
    """This thread's state of the protocol, beside ``modes.torch_function`` (graph.py: off inside
    ``DisableTorchFunction`` and a backward pass, where neither modes nor subclasses are asked)."""

    mode_stack = ()  # the entered TorchFunctionModes, innermost last (a tuple: each push or pop makes a new one)
    subclasses = True  # subclasses are asked (off inside DisableTorchFunctionSubclass, modes still are)


_dispatch = _FunctionDispatch()


class DisableTorchFunctionSubclass:
    """Inside, calls do not go through subclasses' ``__torch_function__`` (what the default one runs ``func``
    under, so that the ops inside it see plain calls); modes are still asked. Per thread, as PyTorch's."""

    def __init__(self):
        self.saved = []  # (re-entrant: each entry pushes the state it replaced)

    def __enter__(self):
        self.saved.append(_dispatch.subclasses)
        _dispatch.subclasses = False
        return self

    def __exit__(self, *exc_info):
        _dispatch.subclasses = self.saved.pop()
        return False


class DisableTorchFunction(ModeSwitch):
    """Inside, calls go through neither modes nor subclasses: every function is the plain one."""

    def __init__(self):
        super().__init__(torch_function=False)


class _EnableTorchFunction:
    """PyTorch's guard ``torch._C._EnableTorchFunction()``: modes and subclasses asked again from its making until
    it is deleted, which puts back the switches it found."""

    def __init__(self):
        self.found = modes.torch_function, _dispatch.subclasses
        modes.torch_function = _dispatch.subclasses = True

    def __del__(self):
        modes.torch_function, _dispatch.subclasses = self.found


def is_torch_function_enabled():
    """Whether subclasses are asked (PyTorch's ``torch._C._is_torch_function_enabled``)."""
    return modes.torch_function and _dispatch.subclasses


def _is_torch_function_mode_enabled():
    """Whether a mode would be asked about a call now."""
    return modes.torch_function and bool(_dispatch.mode_stack)


def _is_torch_function_all_disabled():
    return not modes.torch_function


def _switched_off(cls):
    """Whether ``cls`` has no ``__torch_function__``, or the one that does not take part (nn.Parameter's)."""
    method = getattr(cls, "__torch_function__", None)
    return method is None or getattr(method, "__func__", method) is _disabled_torch_function_impl


def _takes_part(cls):
    """Whether instances of ``cls`` take part in calls: a class with a ``__torch_function__`` of its own kind,
    not plain Tensor's and not the disabled one."""
    return cls is not Tensor and not _switched_off(cls)


def _overloaded_args(relevant, into_sequences=False):
    """The arguments whose classes take part, one per class, each subclass before its bases (then left to right);
    ``into_sequences``: looking one level into lists and tuples, as a dispatching function reads its arguments
    (``autograd.cat([a, b])``). A program's ``relevant_args`` are taken as they are, as PyTorch's."""
    found = []
    for arg in relevant:
        if into_sequences and isinstance(arg, (list, tuple)):
            for item in arg:
                _consider(item, found)
        else:
            _consider(arg, found)
    return found


def _consider(arg, found):
    # (another library's tensor: not ours to ask)
    if isinstance(arg, Tensor) and _takes_part(type(arg)) or isinstance(arg, TENSOR_LIKE[0]):
        _place(arg, found)


# the classes that take part without subclassing Tensor (register_tensor_like): torch.fx's Proxy. (Not any class
# with a __torch_function__, as PyTorch's: each call would have to look at every argument's class.)
TENSOR_LIKE = [()]


def register_tensor_like(cls):
    """Instances of ``cls`` (not a Tensor) take part in calls, asked through its ``__torch_function__`` as a
    subclass's is, once the wrappers are installed (``dispatching.install``: the class's first instance calls it)."""
    from . import dispatching  # (the wrappers build on this module: imported when needed)

    TENSOR_LIKE[0] += (cls,)
    dispatching.LOOKED_INTO[0] += (cls,)


def _place(arg, found, type_of=type):
    """``arg`` put among ``found``: one per class, a subclass before its bases (asked first), else last."""
    cls = type_of(arg)
    if any(type_of(other) is cls for other in found):
        return
    position = next((i for i, other in enumerate(found) if issubclass(cls, type_of(other))), len(found))
    found.insert(position, arg)


def has_torch_function(relevant_args):
    """Whether the call with ``relevant_args`` must go through the protocol: a mode is entered (and there is some
    argument, as PyTorch's), or some argument takes part while subclasses are asked."""
    if not modes.torch_function or not relevant_args:
        return False
    return bool(_dispatch.mode_stack) or _dispatch.subclasses and bool(_overloaded_args(relevant_args))


def has_torch_function_unary(arg):
    return has_torch_function((arg,))


def has_torch_function_variadic(*args):
    return has_torch_function(args)


def handle_torch_function(public_api, relevant_args, *args, **kwargs):
    """``public_api(*args, **kwargs)`` answered by the innermost mode, then by the ``__torch_function__`` of the
    arguments that take part, in order, until one answers (not ``NotImplemented``)."""
    overloaded = _overloaded_args(relevant_args) if _dispatch.subclasses else []
    if modes.torch_function and _dispatch.mode_stack:
        return _asking_the_mode_first(public_api, overloaded, args, kwargs)
    return _answered(public_api, overloaded, args, kwargs)


def _warn_of_a_plain_method(public_api):
    """A class's ``__torch_function__`` that is a plain method, not a classmethod: deprecated, as PyTorch warns
    about a function's call (a DeprecationWarning from its functions written in Python, nn.functional's and a
    program's own; a UserWarning from the others), not a Tensor method's."""
    if getattr(public_api, "tensor_method", False):
        return
    from .dispatching import Dispatching  # (the wrappers build on this module: imported when needed)

    python_side = not isinstance(public_api, Dispatching) or public_api.__module__ == "nn.functional"
    warnings.warn("Defining your `__torch_function__` as a plain method is deprecated and will be an error in "
                  "future, please define it as a classmethod.", DeprecationWarning if python_side else UserWarning,
                  stacklevel=program_stacklevel())


def _asking_the_mode_first(public_api, overloaded, args, kwargs):
    """The innermost mode's answer, asked with it off the stack (the calls it makes go to the modes outside it and
    to the subclasses); where it gives NotImplemented, the subclasses' (with the mode back on the stack)."""
    stack = _dispatch.mode_stack
    mode = stack[-1]
    handler = mode.__torch_function__
    if getattr(handler, "__self__", None) is type(mode):
        raise RuntimeError(f"{type(mode).__name__}.__torch_function__ is a classmethod: a TorchFunctionMode's "
                           "classmethod is not supported, please make it a plain method")
    _dispatch.mode_stack = stack[:-1]
    try:
        result = handler(public_api, tuple(type(arg) for arg in overloaded), args, kwargs)
    finally:
        _dispatch.mode_stack += (mode,)
    if result is not NotImplemented:
        return result
    return _answered(public_api, overloaded, args, kwargs, mode)


def _answered(public_api, overloaded, args, kwargs, mode=None):
    types = tuple(type(arg) for arg in overloaded)
    for arg in overloaded:
        handler = arg.__torch_function__  # (bound: a classmethod to the class, a plain method to the tensor)
        if getattr(handler, "__self__", None) is arg:
            _warn_of_a_plain_method(public_api)
        result = handler(public_api, types, args, kwargs)
        if result is not NotImplemented:
            return result
    name = getattr(public_api, "__qualname__", None) or getattr(public_api, "__name__", repr(public_api))
    handlers = (f"\n  - mode object {mode!r}" if mode is not None else "") + "".join(
        f"\n  - tensor subclass {type(arg)}" for arg in overloaded)
    raise TypeError(f"Multiple dispatch failed for '{getattr(public_api, '__module__', None)}.{name}'; all "
                    f"__torch_function__ handlers returned NotImplemented:\n{handlers}")


def is_tensor_like(obj):
    """A Tensor, or an object whose class has a ``__torch_function__``."""
    return isinstance(obj, Tensor) or hasattr(type(obj), "__torch_function__")


def _get_overloaded_args(relevant_args, get_type_fn=None):
    """PyTorch's: the arguments among ``relevant_args`` whose types have a ``__torch_function__`` that is not
    switched off, plain Tensors included (unlike ``has_torch_function``), one per type, subclasses first."""
    type_of = get_type_fn or type
    found = []
    for arg in relevant_args:
        if not _switched_off(type_of(arg)):
            _place(arg, found, type_of)
    return found


def wrap_torch_function(dispatcher):
    """A decorator: the function takes part in the protocol, ``dispatcher(*args, **kwargs)`` naming its relevant
    arguments (PyTorch's ``torch.overrides.wrap_torch_function``)."""

    def inner(func):
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            relevant_args = dispatcher(*args, **kwargs)
            if has_torch_function(relevant_args):
                return handle_torch_function(wrapped, relevant_args, *args, **kwargs)
            return func(*args, **kwargs)

        return wrapped

    return inner


def is_tensor_method_or_property(func):
    """Whether ``func`` is one of Tensor's methods or a property's getter (what ``__torch_function__`` is given for
    ``x.sum()`` rather than ``autograd.sum(x)``)."""
    from .dispatching import Dispatching  # (the wrappers build on this module: imported when needed)

    return getattr(func, "__name__", None) == "__get__" or any(
        value is func or isinstance(value, Dispatching) and value == func
        for cls in Tensor.__mro__[:-1] for value in vars(cls).values())


def get_ignored_functions():
    """autograd's public functions no subclass answers for (factories from data or sizes, questions about the
    library's state), as PyTorch's."""
    import autograd

    from .dispatching import NOT_OVERRIDABLE  # (the installation's table: imported when needed)

    return {getattr(autograd, name) for name in NOT_OVERRIDABLE if hasattr(autograd, name)}


def get_default_nowrap_functions():
    """The functions whose results the default ``__torch_function__`` gives back as they are: the getters of a
    tensor's ``.grad`` (a parameter's gradient stays a Tensor), as PyTorch's (which adds ``._base``'s)."""
    return {Tensor.grad.__get__}


def convert(result, cls):
    """The default ``__torch_function__``'s results as ``cls``: each Tensor that is not one already (through
    lists and tuples, named ones included), by ``as_subclass`` (the same memory, in the same graph)."""
    if cls is Tensor:
        return result
    if isinstance(result, Tensor) and not isinstance(result, cls):
        return result.as_subclass(cls)
    if isinstance(result, (tuple, list)):
        items = [convert(item, cls) for item in result]
        make = getattr(type(result), "_make", None)  # (a named tuple: autograd.return_types)
        return make(items) if make is not None else type(result)(items)
    return result


# names PyTorch's torch.overrides holds, kept where they are built: the wrappers and their installation
# (dispatching.py) and the modes with their per-thread stack (function_modes.py), which build on this module
_BUILT_ON_THIS = {**dict.fromkeys(("Dispatching", "DispatchingOperator", "DispatchingToModes", "dispatch_namespace",
                                   "install", "uninstall", "_installed"), "dispatching"),
                  **dict.fromkeys(("BaseTorchFunctionMode", "TorchFunctionMode", "_get_current_function_mode",
                                   "_get_current_function_mode_stack", "_get_function_stack_at",
                                   "_len_torch_function_stack", "_pop_mode", "_pop_mode_temporarily",
                                   "_pop_torch_function_stack", "_push_mode", "_push_on_torch_function_stack"),
                                  "function_modes")}


def __getattr__(name):
    """The names of ``_BUILT_ON_THIS``, reached here as PyTorch's torch.overrides and the library reach them
    (``overrides.install()``, ``overrides.TorchFunctionMode``), read live (``_installed``)."""
    if name in _BUILT_ON_THIS:
        return getattr(importlib.import_module(f".{_BUILT_ON_THIS[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_BUILT_ON_THIS))
