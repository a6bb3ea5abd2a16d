"""``Parameter``: a tensor that a Module trains (it requires grad, and a Module
that holds it as an attribute lists it in ``parameters()``). ``Buffer``: a tensor
that a Module holding it as an attribute lists in ``buffers()`` (and saves)."""

from autograd import Tensor, tensor_classes
from autograd.errors import NotATensorDataError
from autograd.overrides import _disabled_torch_function_impl
from autograd.tensor import tensor_from


class _ParameterMeta(type(Tensor)):
    def __instancecheck__(cls, instance):
        """A tensor of another class made a parameter (``nn.Parameter(MyTensor(...))``: see ``Parameter.__new__``)
        is a Parameter too, as in PyTorch."""
        if cls is Parameter and isinstance(instance, Tensor) and getattr(instance, "_is_param", False):
            return True
        return super().__instancecheck__(instance)


class Parameter(Tensor, metaclass=_ParameterMeta):
    _prints_as_tensor = True  # its body prints as tensor(...), not Parameter(...), as in PyTorch
    _is_param = True  # (what printing.py reads: a subclass of Parameter prints as Parameter(MyParameter(...)))
    __torch_function__ = _disabled_torch_function_impl  # ops on parameters give plain tensors, as PyTorch's

    def __new__(cls, data=None, requires_grad=True):
        """Made by ``__new__``, as PyTorch's (its ``__init__`` is object's, taking anything): a subclass that
        calls ``super().__new__(cls, data, requires_grad)`` and sets its own attributes, or takes keywords of its
        own, is made as in PyTorch.

        ``data`` of a class other than Tensor and Parameter (a subclass of Tensor) stays of its class, as in PyTorch:
        the parameter is ``data.detach()`` (a subclass's own ``__torch_function__`` keeps its class and its
        attributes) requiring grad as asked, marked ``_is_param`` (which Parameter's ``isinstance`` reads)."""
        if isinstance(data, Tensor) and type(data) is not Tensor and type(data) is not Parameter:
            return _subclass_parameter(data, requires_grad)
        if data is not None and not isinstance(data, Tensor):
            raise _not_a_tensor(data)
        parameter = Tensor.__new__(cls)
        parameter._fill(data, requires_grad)
        return parameter

    def __init__(self, *args, **kwargs):  # (everything was done by __new__)
        pass

    def _fill(self, data, requires_grad):
        if not isinstance(data, Tensor):  # None (PyTorch's empty parameter), or UninitializedParameter's array
            Tensor.__init__(self, [] if data is None else data, requires_grad=requires_grad)
            return
        Tensor.__init__(self, data._data, False, data._data.dtype)  # (the dtype given: integers stay integers)
        if data._inference:  # an inference tensor stays one, and refuses to require grad
            self._inference = True
        self.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        """PyTorch's: a new parameter of this class holding a clone of the values, with the same requires_grad,
        and nothing else: not its .grad, nor attributes set on it (a target network deep-copied from a trained
        one starts with no gradients)."""
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(self.data.clone(), self.requires_grad)
        memo[id(self)] = result
        return result


def _not_a_tensor(data):
    """PyTorch's Parameter takes a Tensor (or None) and nothing else: a list or an array fails there on
    ``data.detach()`` with AttributeError. Ours is that class too (and a TypeError), naming what to do."""
    kind = f"{type(data).__module__}.{type(data).__name__}".removeprefix("builtins.")
    shape = getattr(data, "shape", None)
    described = kind if shape is None else f"{kind} of shape {tuple(shape)}"
    return NotATensorDataError(f"'{kind}' object has no attribute 'detach': nn.Parameter takes a "
                               f"Tensor (or None), not a {described}; write nn.Parameter(autograd.tensor(data))")


def _subclass_parameter(data, requires_grad):
    parameter = data.detach().requires_grad_(requires_grad)
    if type(parameter) is not type(data):
        raise RuntimeError(
            f"Creating a Parameter from an instance of type {type(data).__name__} requires that detach() returns an "
            f"instance of the same type, but return type {type(parameter).__name__} was found instead. To use the "
            "type as a Parameter, please correct the detach() semantics defined by its __torch_dispatch__() "
            "implementation.")
    parameter._is_param = True
    return parameter


tensor_classes.register(Parameter, "torch.nn.parameter.Parameter")  # (saved and loaded as a Parameter; PyTorch's
# files name it so)


class _BufferMeta(type):
    def __instancecheck__(cls, instance):  # nn.Buffer(t) is a plain Tensor, marked
        return isinstance(instance, Tensor) and getattr(instance, "_is_buffer", False)


class Buffer(metaclass=_BufferMeta):
    """``module.name = nn.Buffer(t, persistent=...)`` registers t as a buffer, as
    ``module.register_buffer(name, t, persistent)``: PyTorch's newer spelling. The result is
    a Tensor (t detached, keeping requires_grad) marked as a buffer."""

    def __new__(cls, data=None, *, persistent=True):
        if data is None:
            data = tensor_from([])
        tensor = data.detach().requires_grad_(data.requires_grad)
        tensor.persistent = persistent
        tensor._is_buffer = True
        return tensor


def __getattr__(name):
    """PyTorch's torch.nn.parameter also holds the lazy modules' UninitializedParameter and
    UninitializedBuffer (defined with them, in nn/lazy.py, which imports this module)."""
    if name in ("UninitializedParameter", "UninitializedBuffer"):
        from . import lazy
        return getattr(lazy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
