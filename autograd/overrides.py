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
``uninstall`` puts the plain functions back (the test suite does, after each test).

A ``TorchFunctionMode`` is asked about every call made while it is entered (``with LoggingMode():``), before any
subclass and whatever the arguments, factories included (``autograd.zeros(2)``, which no subclass is asked about):
the innermost mode's ``__torch_function__(func, types, args, kwargs)`` runs with that mode taken off this thread's
stack, so the calls it makes go to the modes outside it, then to the subclasses, then to the function itself.
Entering the first mode installs the wrappers, as the first subclass does.

Three switches, per thread, as PyTorch's: inside ``DisableTorchFunctionSubclass`` no subclass is asked but modes
are; inside ``DisableTorchFunction`` (and during a backward pass, whose ops are the engine's) neither is.

Not built: classes that take part without subclassing Tensor (PyTorch's "tensor-like" duck types), which would
need every call to look at its arguments, and properties other than the tensor-valued ones reaching a mode
(PyTorch gives it ``x.shape``'s and ``x.grad``'s getters too).
"""

import functools
import importlib
import inspect
import os
import threading
import types
import warnings

from .graph import ModeSwitch, modes, program_stacklevel
from .tensor import SUBCLASS_WATCHERS, Tensor

_PACKAGE = os.path.dirname(os.path.abspath(__file__))  # autograd's folder
_NAMESPACES = []  # (namespace, which of its functions) that dispatch once installed: autograd's, F's
_installed = False


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
    if isinstance(arg, Tensor) and _takes_part(type(arg)):  # (another library's tensor: not ours to ask)
        _place(arg, found)


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
    return getattr(func, "__name__", None) == "__get__" or any(
        value is func or isinstance(value, Dispatching) and value == func
        for cls in Tensor.__mro__[:-1] for value in vars(cls).values())


def get_ignored_functions():
    """autograd's public functions no subclass answers for (factories from data or sizes, questions about the
    library's state), as PyTorch's."""
    import autograd

    return {getattr(autograd, name) for name in _NOT_OVERRIDABLE if hasattr(autograd, name)}


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


class Dispatching:
    """A public function or Tensor method that first asks the entered modes, then the subclasses among its arguments
    (installed by ``install``). It stands for the function it wraps: equal to it, hashed as it, documented as it,
    and named as the attribute it is (``Tensor.sum``, not the op's own function name). ``public`` is what
    ``__torch_function__`` is given: itself, or for an operator the method PyTorch names (``x * 2`` is
    ``Tensor.mul``)."""

    tensor_method = False  # one of Tensor's methods or properties (install)

    def __init__(self, function, name=None, public=None):
        self.__wrapped__, self.public = function, public or self
        for attribute in ("__qualname__", "__doc__", "__module__"):
            setattr(self, attribute, getattr(function, attribute, None))
        self.__name__ = name or getattr(function, "__name__", None)

    def __call__(self, *args, **kwargs):
        if modes.torch_function:
            relevant = args + tuple(kwargs.values()) if kwargs else args
            if _dispatch.mode_stack:
                return _asking_the_mode_first(self.public, _subclasses_asked(relevant), args, kwargs)
            for arg in relevant:  # (plain tensors and numbers pass at once: only a subclass or a list is looked into)
                if type(arg) is not Tensor and isinstance(arg, (Tensor, list, tuple)):
                    overloaded = _subclasses_asked(relevant)
                    if overloaded:
                        return _answered(self.public, overloaded, args, kwargs)
                    break
        return self.__wrapped__(*args, **kwargs)

    def __get__(self, instance, owner=None):  # a method: bound to the tensor it is read from
        return self if instance is None else types.MethodType(self, instance)

    def __eq__(self, other):
        return other is self or other is self.__wrapped__ or (
            isinstance(other, Dispatching) and other.__wrapped__ is self.__wrapped__)

    def __hash__(self):
        return hash(self.__wrapped__)

    def __repr__(self):
        return repr(self.__wrapped__)

    def __reduce__(self):
        """Pickled (and deep-copied) as the function it wraps, by the name it is defined under: a module holding
        ``F.relu`` (nn.TransformerEncoderLayer's activation) pickles once a mode or a subclass installed the
        wrappers, where pickle's own lookup of ``nn.functional.relu`` finds this wrapper, not the function."""
        function = self.__wrapped__
        return _function_named, (function.__module__, function.__qualname__)


def _subclasses_asked(relevant):
    """The arguments (and elements of list or tuple arguments) whose classes take part, in the order they are
    asked; none inside DisableTorchFunctionSubclass."""
    return _overloaded_args(relevant, into_sequences=True) if _dispatch.subclasses else []


def _function_named(module_name, qualname):
    """What ``module_name`` holds under ``qualname`` now: the function, or its wrapper while installed."""
    found = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class DispatchingOperator(Dispatching):
    """A binary operator method (``Tensor.__add__``, ``__lt__``): a TypeError from the protocol (no class taking part
    answers) gives NotImplemented, as PyTorch's, so that Python asks the other operand's reflected method and else
    says "unsupported operand type(s)"."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except TypeError:
            if not (_dispatch.mode_stack or any(isinstance(arg, Tensor) and type(arg) is not Tensor for arg in args)):
                raise  # (no protocol was asked: the op's own error)
            return NotImplemented


class DispatchingToModes(Dispatching):
    """A factory (``autograd.zeros``, ``tensor``, ``arange``) or another function no subclass answers for
    (``get_ignored_functions``) that an entered mode is asked about nonetheless, as PyTorch's."""

    def __call__(self, *args, **kwargs):
        if modes.torch_function and _dispatch.mode_stack:
            return _asking_the_mode_first(self.public, (), args, kwargs)
        return self.__wrapped__(*args, **kwargs)


# Tensor's methods that never dispatch: construction, copying and pickling, the protocol itself, NumPy's
# protocols and the attribute machinery
_NOT_DISPATCHED = {
    "__init__", "__new__", "__init_subclass__", "__getstate__", "__setstate__", "__reduce__", "__reduce_ex__",
    "__deepcopy__", "__copy__", "__hash__", "__torch_function__", "__array__", "__array_ufunc__",
    "__array_function__", "__array_wrap__", "__array_priority__", "__dlpack__", "__dlpack_device__",
    "__class_getitem__", "__getattr__", "__getattribute__", "__setattr__", "__delattr__", "__dir__", "__sizeof__",
    "__subclasshook__", "__weakref__", "__dict__", "__slots__", "__module__", "__doc__", "__class__",
    "as_subclass",
}


# the factories (and questions about dtypes) that no subclass answers for but an entered mode is asked about, as
# PyTorch's; not its questions about the library's state, nor from_numpy or broadcast_shapes
_FACTORIES_MODES_SEE = {
    "arange", "as_strided", "as_tensor", "asarray", "can_cast", "empty", "empty_permuted", "empty_strided", "eye",
    "fill", "full", "linspace", "logspace", "normal", "ones", "promote_types", "rand", "rand_like", "randint",
    "randint_like", "randn", "randn_like", "randperm", "result_type", "scalar_tensor", "tensor", "zeros",
}
# autograd's public functions PyTorch does not let a subclass answer for (torch.overrides.get_ignored_functions):
# factories from data or sizes, and questions about the library's state
_NOT_OVERRIDABLE = _FACTORIES_MODES_SEE | {
    "broadcast_shapes", "from_file", "from_numpy", "frombuffer", "get_default_device", "get_default_dtype",
    "get_device_module", "is_anomaly_enabled", "is_grad_enabled", "is_inference_mode_enabled", "is_tensor",
    "set_default_device", "load", "save", "manual_seed", "seed", "initial_seed", "set_default_dtype", "compile",
}
# the functions that dispatch to modes only (DispatchingToModes): those factories, and sparse_coo_tensor, which
# is not an op of autograd's own namespace
_SEEN_ONLY_BY_MODES = _FACTORIES_MODES_SEE | {"sparse_coo_tensor"}
# the operators, as the methods PyTorch gives __torch_function__ for them (a reflected one where the order of
# its operands does not matter)
_OPERATOR_METHODS = {
    "__add__": "add", "__radd__": "add", "__mul__": "mul", "__rmul__": "mul", "__sub__": "sub",
    "__truediv__": "div", "__matmul__": "matmul", "__neg__": "neg", "__abs__": "abs", "__pow__": "pow",
    "__lt__": "lt", "__le__": "le", "__gt__": "gt", "__ge__": "ge", "__ne__": "ne", "__mod__": "remainder",
    "__pos__": "positive", "__rand__": "bitwise_and", "__iadd__": "add_", "__isub__": "sub_", "__imul__": "mul_",
    "__itruediv__": "div_", "__ipow__": "pow_", "__ifloordiv__": "floor_divide_", "__imod__": "remainder_",
}  # (== is Tensor.__eq__ itself, as PyTorch's)
# methods PyTorch defines under another name (Tensor.__rtruediv__ is its __rdiv__)
_PYTORCH_NAMES = {"__rtruediv__": "__rdiv__"}
# the binary operators whose TypeError is NotImplemented (not == and !=, which PyTorch answers otherwise)
_BINARY_OPERATORS = {f"__{side}{op}__" for side in ("", "r", "i") for op in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift")} | {
    "__lt__", "__le__", "__gt__", "__ge__"}
# the properties whose values are tensors made from the tensor (PyTorch's default gives them back as the subclass;
# __torch_function__ is given their getter, named __get__ as PyTorch's)
_TENSOR_PROPERTIES = ("T", "mT", "H", "mH", "real", "imag", "data")


def dispatch_namespace(namespace, wraps=None):
    """Make the public functions of ``namespace`` (a module) dispatch once a class takes part, those it loads on
    first use (_lazy) included; ``wraps(name, function)``, where given, says which (nn.functional registers itself:
    autograd does not import nn). A layer that calls its function from its own module or class (``nn.Embedding``'s
    ``embedding``, ``nn.MSELoss.function``) registers that namespace too, so the layer asks as ``F``'s function
    does (a class's function keeps its own name: ``mse_loss``, not ``function``)."""
    _NAMESPACES.append((namespace, wraps))
    if _installed:
        _wrap_namespace(namespace, wraps)


def _an_op(name, function):
    """autograd's functions that dispatch (in its namespace and linalg's, fft's, special's): the ops' own and the
    factories that follow a tensor (zeros_like); those PyTorch lets no subclass answer for only where a mode is
    asked about them; never gradcheck, vmap or compile (which take functions)."""
    if name in _NOT_OVERRIDABLE or name in _SEEN_ONLY_BY_MODES:
        return name in _SEEN_ONLY_BY_MODES  # (a DispatchingToModes: _dispatching)
    code = getattr(inspect.unwrap(function), "__code__", None)  # (where it is written: its names may be pickle's)
    where = os.path.relpath(code.co_filename, _PACKAGE) if code is not None else ""
    return name.endswith("_like") or where.startswith("ops" + os.sep) or where in ("linalg.py", "fft.py", "special.py")


def _differentiates(name, function):
    """torch.autograd's functions a subclass answers for, as PyTorch's: ``grad`` (its gradients come back as the
    subclass under the default) and ``backward``."""
    return name in ("grad", "backward")


def _on_load(module_name, name, value):
    """_lazy's after_load: a function a dispatching namespace loads on first use, as its others (its module then
    keeps the wrapper, and uninstall puts the function back)."""
    for namespace, wraps in _NAMESPACES:
        if namespace.__name__ == module_name and isinstance(value, types.FunctionType) and (
                wraps is None or wraps(name, value)):
            _REPLACED.append((namespace, name, value))
            return _dispatching(value, name)
    return value


def install():
    """From now on every public function and Tensor method dispatches (the first class that takes part is
    defined: ``Tensor.__init_subclass__``)."""
    global _installed
    if _installed:
        return
    _installed = True
    import autograd

    from . import _lazy

    _lazy.after_load = _on_load
    names = set()
    for cls in Tensor.__mro__[:-1]:  # Tensor and what it is built from (the write door), not object
        names.update(vars(cls))
    for name in sorted(names, key=lambda name: name in _OPERATOR_METHODS):  # (the named methods first)
        if name in _NOT_DISPATCHED or name.startswith("_") and not name.startswith("__"):
            continue
        attribute = inspect.getattr_static(Tensor, name)  # (the definition attribute lookup finds)
        if isinstance(attribute, types.FunctionType):
            public = Tensor.__dict__.get(_OPERATOR_METHODS.get(name))
            wrapper = DispatchingOperator if name in _BINARY_OPERATORS else Dispatching
            method = wrapper(attribute, _PYTORCH_NAMES.get(name, name),
                             public if isinstance(public, Dispatching) else None)
            method.tensor_method = True
            _replace(Tensor, name, method)
        elif isinstance(attribute, property) and name in _TENSOR_PROPERTIES:
            getter = Dispatching(attribute.fget, "__get__")
            getter.tensor_method = True
            _replace(Tensor, name, property(getter, attribute.fset, attribute.fdel, attribute.__doc__))
    for namespace in (autograd, autograd.linalg, autograd.fft, autograd.special):
        if all(registered is not namespace for registered, _ in _NAMESPACES):
            _NAMESPACES.append((namespace, _an_op))
    differentiating = importlib.import_module(".autograd", __package__)  # (torch.autograd: autograd.autograd)
    if all(registered is not differentiating for registered, _ in _NAMESPACES):
        _NAMESPACES.append((differentiating, _differentiates))
    for namespace, wraps in _NAMESPACES:  # (nn.functional's registered as nn loaded)
        _wrap_namespace(namespace, wraps)


_REPLACED = []  # (owner, name, what it held: _ABSENT where the name was inherited), for uninstall
_ABSENT = object()


def _replace(owner, name, value):
    _REPLACED.append((owner, name, vars(owner).get(name, _ABSENT)))
    setattr(owner, name, value)


def uninstall():
    """Every function and method plain again, as before ``install`` (the test suite scopes the protocol to the test
    that defined a class taking part; a program's classes keep it for the process). A class defined afterwards
    installs it again."""
    global _installed
    if not _installed:
        return
    _installed = False
    from . import _lazy

    _lazy.after_load = None
    _WRAPPERS.clear()
    while _REPLACED:
        owner, name, held = _REPLACED.pop()
        if held is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, held)


def _wrap_namespace(namespace, wraps):
    in_a_class = isinstance(namespace, type)
    for name, function in list(vars(namespace).items()):
        if in_a_class and isinstance(function, staticmethod):  # (a layer's function = staticmethod(lp_pool2d))
            function = function.__func__
        if not name.startswith("_") and isinstance(function, types.FunctionType) and (  # (not a class, a module,
                wraps is None or wraps(name, function)):                                # a wrapper already)
            _replace(namespace, name, _dispatching(function, function.__name__ if in_a_class else name))


_WRAPPERS = {}  # each function's Dispatching while installed: one, wherever the function is held (F.embedding and
# nn.Embedding's embedding give __torch_function__ the same func)


def _dispatching(function, name):
    wrapper = _WRAPPERS.get(function)
    if wrapper is None:
        kind = DispatchingToModes if name in _SEEN_ONLY_BY_MODES else Dispatching  # (autograd's factories)
        wrapper = _WRAPPERS[function] = kind(function, name)
    return wrapper


# the modes (TorchFunctionMode, its per-thread stack): function_modes.py, named here as PyTorch's torch.overrides
# names them (imported last: it reads _dispatch and install from here)
from .function_modes import (  # noqa: E402, F401  (re-exported)
    BaseTorchFunctionMode,
    TorchFunctionMode,
    _get_current_function_mode,
    _get_current_function_mode_stack,
    _get_function_stack_at,
    _len_torch_function_stack,
    _pop_mode,
    _pop_mode_temporarily,
    _pop_torch_function_stack,
    _push_mode,
    _push_on_torch_function_stack,
)
