"""``torch.fx.Proxy``: the value a symbolic trace passes through a program in place of a tensor.

Each operation on a proxy adds a node to the graph being traced and gives back a proxy for its result: Python's
operators (``x + y`` is ``operator.add``), attribute reads (``x.shape`` is ``getattr``), method calls
(``x.view(-1)`` a ``call_method`` node) and, through ``__torch_function__``, the library's functions
(``torch.relu(x)``, ``F.linear(x, w)``). What a value would decide cannot be known: ``if x.sum() > 0:`` asks
``bool`` of a proxy, which raises PyTorch's ``TraceError``."""

import dis
import operator
import sys

from .. import dispatching
from ..overrides import register_tensor_like


class TraceError(ValueError):
    pass


class Proxy:
    """A value of the program being traced: ``node`` the graph's node computing it, ``tracer`` the tracer recording
    the operations done with it."""

    def __init__(self, node, tracer=None):
        if tracer is None:
            from .tracer import GraphAppendingTracer  # (the tracer builds on this module)

            tracer = GraphAppendingTracer(node.graph)
        self.node, self.tracer = node, tracer
        if not dispatching._installed:  # (the library's functions then ask a proxy among their arguments)
            dispatching.install()

    def __repr__(self):
        return f"Proxy({self.node.name})"

    def __getattr__(self, name):
        return Attribute(self, name)

    def __call__(self, *args, **kwargs):
        return self.tracer.create_proxy("call_method", "__call__", (self,) + args, kwargs)

    def __bool__(self):
        return self.tracer.to_bool(self)

    def __len__(self):
        raise RuntimeError("'len' is not supported in symbolic tracing by default. If you want this call to be "
                           "recorded, please call torch.fx.wrap('len') at module scope")

    def __iter__(self):
        """Unpacking (``a, b = x.chunk(2)``) gives one proxy per name, as many as the calling line unpacks;
        any other iteration is refused, as PyTorch's."""
        frame = sys._getframe(1)  # (the caller, stopped at the instruction asking for the iterator)
        for instruction in dis.get_instructions(frame.f_code):
            if instruction.offset == frame.f_lasti:
                if instruction.opname == "UNPACK_SEQUENCE":
                    return iter([self[i] for i in range(instruction.argval)])
                break
        return self.tracer.iter(self)

    def keys(self):
        return self.tracer.keys(self)

    def __deepcopy__(self, memo):
        raise TraceError("Proxy objects cannot be deep-copied in symbolic tracing")

    @classmethod
    def __torch_function__(cls, orig_method, types, args=(), kwargs=None):
        """A library function or Tensor method called on proxies: a ``call_method`` node for a method (``x.add(y)``
        called as ``Tensor.add(x, y)``), else a ``call_function`` node of the function itself."""
        from ..overrides import is_tensor_method_or_property

        kwargs = kwargs or {}
        tracers = set()

        def find(value):
            if isinstance(value, Proxy):
                tracers.add(value.tracer)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    find(item)
            elif isinstance(value, dict):
                for item in value.values():
                    find(item)

        find((args, kwargs))
        if len(tracers) > 1:
            raise RuntimeError(f"Found multiple different tracers {list(tracers)} while trying to trace operations "
                               f"{orig_method}")
        tracer = tracers.pop()
        if is_tensor_method_or_property(orig_method):
            return tracer.create_proxy("call_method", _method_name(orig_method), args, kwargs)
        return tracer.create_proxy("call_function", orig_method, args, kwargs)


def _method_name(method):
    """The name Tensor holds ``method`` under (a method defined under another name, ``Tensor.view``'s ``_view``, by
    the attribute's)."""
    from ..tensor import Tensor

    name = method.__name__
    if getattr(Tensor, name, None) == method:
        return name
    return next((attribute for attribute, value in vars(Tensor).items() if value == method), name)


class Attribute(Proxy):
    """``proxy.name``: a ``getattr`` node once its value is used, or a ``call_method`` node when it is called."""

    def __init__(self, root, attr):
        self.root, self.attr, self.tracer = root, attr, root.tracer
        self._node = None

    @property
    def node(self):
        if self._node is None:
            self._node = self.tracer.create_proxy("call_function", getattr, (self.root, self.attr), {}).node
        return self._node

    def __call__(self, *args, **kwargs):
        return self.tracer.create_proxy("call_method", self.attr, (self.root,) + args, kwargs)


def _binary(function, reflected=False):
    if reflected:
        def method(self, other):
            return self.tracer.create_proxy("call_function", function, (other, self), {})
    else:
        def method(self, other):
            return self.tracer.create_proxy("call_function", function, (self, other), {})
    return method


def _unary(function):
    def method(self):
        return self.tracer.create_proxy("call_function", function, (self,), {})
    return method


# the operators a proxy records, as PyTorch's (the reflected ones record the operation with its operands swapped)
for _name in ("add", "sub", "mul", "floordiv", "truediv", "mod", "pow", "lshift", "rshift", "and_", "or_", "xor",
              "matmul"):
    _dunder = _name.rstrip("_")
    setattr(Proxy, f"__{_dunder}__", _binary(getattr(operator, _name)))
    setattr(Proxy, f"__r{_dunder}__", _binary(getattr(operator, _name), reflected=True))
for _name in ("eq", "ne", "lt", "gt", "le", "ge", "getitem"):
    setattr(Proxy, f"__{_name}__", _binary(getattr(operator, _name)))
for _name in ("neg", "pos", "invert", "abs"):
    setattr(Proxy, f"__{_name}__", _unary(getattr(operator, _name)))
Proxy.__hash__ = object.__hash__  # (__eq__ records a node: proxies are told apart by identity)
register_tensor_like(Proxy)  # (a proxy made by hand, outside a trace, is asked by the library's functions too)


def arguments_hold_proxies(value):
    """Whether ``value`` holds a Proxy (through lists, tuples, dicts and slices)."""
    if isinstance(value, Proxy):
        return True
    if isinstance(value, (list, tuple)):
        return any(arguments_hold_proxies(item) for item in value)
    if isinstance(value, dict):
        return any(arguments_hold_proxies(item) for item in value.values())
    if isinstance(value, slice):
        return any(arguments_hold_proxies(item) for item in (value.start, value.stop, value.step))
    return False



def __getattr__(name):
    """``torch.fx.proxy.GraphAppendingTracer`` and ``TracerBase``, where PyTorch defines them (tracer.py here, which
    builds on this module)."""
    if name in ("GraphAppendingTracer", "TracerBase"):
        from . import tracer

        return getattr(tracer, "Tracer" if name == "TracerBase" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
