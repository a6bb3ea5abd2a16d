"""``torch._higher_order_ops`` as programs import from it (the PyTorch tutorials' ``scan``): the control-flow
operators of ``autograd.control_flow``, run eagerly. As in PyTorch, the package's ``scan`` is the function (bound
over its module ``scan``, which ``from autograd._higher_order_ops.scan import scan`` still reads)."""

from ..control_flow import cond, while_loop
from .scan import scan

__all__ = ["cond", "scan", "while_loop"]
