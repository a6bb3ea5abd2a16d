"""The primitive ops, grouped by kind. Importing the package binds the names each
op declares (``autograd.ops.names``) as Tensor methods; the modules deferred.py lists load
on the first use of one of their names."""

import importlib

from ..tensor import Tensor
from . import (  # noqa: F401  (each declares its names)
    arithmetic,
    broadcasting,
    clamping,
    conjugation,
    conversion,
    deferred,
    dropout,
    elementwise,
    elementwise_unary,
    functions,
    in_place_arithmetic,
    index_errors,
    linalg,
    losses,
    operators,
    pointwise,
    pointwise_pairs,
    predicates,
    promotion,
    reductions,
    rounding,
    shape,
    special,
    subscripts,
)
from .names import FUNCTIONS, INPLACE, METHODS


def _in_place(name, function):
    def method(self, *args, **kwargs):
        return self._write_back(function, args, kwargs, name)

    method.__name__ = name
    method.__doc__ = f"x.{name}(...) writes x.{name[:-1]}(...) into x (recorded, as PyTorch's)."
    return method


def bind_tensor_methods():
    """Attach every declared method to Tensor. A name tensor.py defines itself (the write
    door's fast in-place methods) is not replaced; a deferred module's stand-in is."""
    for name, function in METHODS.items():
        if _unbound(name):
            setattr(Tensor, name, function)
    for name, function in INPLACE.items():
        if _unbound(name):
            setattr(Tensor, name, _in_place(name, function))


def _unbound(name):
    """Absent from Tensor, or a deferred module's stand-in."""
    held = Tensor.__dict__.get(name)
    return held is None or type(held) is _DeclaredLater


class _DeclaredLater:
    """``Tensor.<name>`` where a deferred module (deferred.py) declares the method, until the module is loaded:
    reading it (``x.svd``, ``Tensor.svd``, ``hasattr``) loads the module, whose methods replace every stand-in."""

    __slots__ = ("module", "name")

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __get__(self, instance, owner=None):
        load_deferred(self.module)
        if Tensor.__dict__.get(self.name) is self:  # (deferred.py names a method its module does not declare)
            raise AttributeError(f"autograd.ops.{self.module} does not declare Tensor.{self.name}")
        return getattr(Tensor if instance is None else instance, self.name)


def load_deferred(module):
    """Import the deferred module ``module`` (``"svd"``) and bind the Tensor methods it declared (and those of the
    deferred modules it imports). Returns the module."""
    loaded = importlib.import_module(f".{module}", __name__)
    bind_tensor_methods()
    return loaded


def load_every_deferred():
    """Every deferred module loaded (dispatching.install wraps each Tensor method as it is then)."""
    for module in deferred.MODULES:
        load_deferred(module)


bind_tensor_methods()
for _table in (deferred.METHODS, deferred.INPLACE):
    for _name, _module in _table.items():
        if _unbound(_name):
            setattr(Tensor, _name, _DeclaredLater(_module, _name))


def __getattr__(name):
    """``autograd.ops.<namespace>``, PyTorch's ``torch.ops``: the operators ``autograd.library.custom_op`` made in
    that namespace, and ``aten``'s (the library's functions by their ATen names). Other names raise AttributeError,
    so ``from . import submodule`` still imports the submodule."""
    if name in deferred.MODULES:  # (autograd.ops.svd, not yet imported: the module, as for the others)
        return load_deferred(name)
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..library import op_namespace  # (loaded on first use)

    return op_namespace(name)
