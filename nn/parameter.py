"""``Parameter``: a tensor that a Module trains (it requires grad, and a Module
that holds it as an attribute lists it in ``parameters()``). ``Buffer``: a tensor
that a Module holding it as an attribute lists in ``buffers()`` (and saves)."""

from autograd import Tensor
from autograd.tensor import tensor_from


class Parameter(Tensor):
    _prints_as_tensor = True  # its body prints as tensor(...), not Parameter(...), as in PyTorch

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = []
        if not isinstance(data, Tensor):
            super().__init__(data, requires_grad=requires_grad)
            return
        super().__init__(data._data, False, data._data.dtype)  # (the dtype given: integers stay integers)
        if data._inference:  # an inference tensor stays one, and refuses to require grad
            self._inference = True
        self.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __format__(self, format_spec):
        """PyTorch's rule: only a plain 0-d Tensor formats as its number, so f"{p}" of a 0-d parameter (a learnt
        temperature) is its text, "Parameter containing:\ntensor(0.5000, requires_grad=True)", and a format spec
        (f"{p:.2f}") is refused, as object.__format__ refuses one: write p.item()."""
        return object.__format__(self, format_spec)

    def __deepcopy__(self, memo):
        """PyTorch's: a new parameter of this class holding a clone of the values, with the same requires_grad,
        and nothing else: not its .grad, nor attributes set on it (a target network deep-copied from a trained
        one starts with no gradients)."""
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(self.data.clone(), self.requires_grad)
        memo[id(self)] = result
        return result


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
