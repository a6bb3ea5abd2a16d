"""The dispatching wrappers of ``__torch_function__`` (overrides.py) and their installation.

Once a class that takes part is defined (``Tensor.__init_subclass__``) or a mode is entered, ``install`` replaces
every public function and Tensor method by a ``Dispatching`` wrapper that asks the entered modes, then the
subclasses among its arguments (overrides.py's protocol), before running the function; ``uninstall`` puts the
plain ones back. Until then nothing is wrapped, so a program with no subclass pays nothing. A namespace built
above autograd (``nn.functional``, a layer's own functions) registers itself with ``dispatch_namespace``.
"""

import importlib
import inspect
import os
import types

from . import _lazy
from .graph import modes
from .overrides import _answered, _asking_the_mode_first, _dispatch, _overloaded_args
from .tensor import Tensor

_PACKAGE = os.path.dirname(os.path.abspath(__file__))  # autograd's folder
_NAMESPACES = _lazy.DISPATCHING  # (namespace, which of its functions) that dispatch once installed: autograd's,
# F's (registered through _lazy.dispatch_namespace before this module is loaded)
_installed = False
LOOKED_INTO = [(Tensor, list, tuple)]  # what a call's arguments are looked into for (and overrides.TENSOR_LIKE)


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
                if type(arg) is not Tensor and isinstance(arg, LOOKED_INTO[0]):
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
# protocols and the attribute machinery; and iteration, as PyTorch's __iter__ skips the protocol (gh-54457): its
# rows come from x.unbind(0), which dispatches
_NOT_DISPATCHED = {
    "__init__", "__new__", "__init_subclass__", "__getstate__", "__setstate__", "__reduce__", "__reduce_ex__",
    "__deepcopy__", "__copy__", "__hash__", "__torch_function__", "__array__", "__array_ufunc__",
    "__array_function__", "__array_wrap__", "__array_priority__", "__dlpack__", "__dlpack_device__",
    "__class_getitem__", "__getattr__", "__getattribute__", "__setattr__", "__delattr__", "__dir__", "__sizeof__",
    "__subclasshook__", "__weakref__", "__dict__", "__slots__", "__module__", "__doc__", "__class__",
    "as_subclass", "__iter__",
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
NOT_OVERRIDABLE = _FACTORIES_MODES_SEE | {
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
    if name in NOT_OVERRIDABLE or name in _SEEN_ONLY_BY_MODES:
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

    from .ops import load_every_deferred

    load_every_deferred()  # (their Tensor methods, stand-ins until then, dispatch as the others)

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
