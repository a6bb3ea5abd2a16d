"""``Variable``: PyTorch's pre-0.4 wrapper, kept for old code. ``Variable(t)`` is a Tensor sharing
``t``'s data, detached from its graph, requiring grad if asked; every Tensor is a Variable
(``isinstance(t, Variable)`` holds), as in PyTorch since Variables and Tensors merged."""

import warnings

from .. import engine
from ..graph import program_stacklevel
from ..tensor import Tensor, tensor_from


class _VariableMeta(type):
    def __instancecheck__(cls, other):
        return isinstance(other, Tensor)


class _ExecutionEngine:
    """``Variable._execution_engine``: the backward engine's interface PyTorch's programs reach for."""

    @staticmethod
    def queue_callback(callback):
        engine.queue_callback(callback)


class Variable(metaclass=_VariableMeta):
    _execution_engine = _ExecutionEngine()

    def __new__(cls, data=None, requires_grad=False, volatile=False):
        if volatile:
            warnings.warn("volatile was removed and now has no effect. Use `with torch.no_grad():` instead.",
                          UserWarning, stacklevel=program_stacklevel())
        if data is None:
            return tensor_from([])
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
        return data.detach().requires_grad_(requires_grad)
