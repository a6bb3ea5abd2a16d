"""``autograd.autograd``: PyTorch's ``torch.autograd`` namespace.

``grad`` and ``backward`` here take PyTorch's full signatures; ``functional``
holds ``jacobian``, ``hessian``, ``vjp``, ``jvp``, ``hvp`` and ``vhp``; ``Variable`` is the
legacy wrapper (it returns a Tensor); ``grad_mode`` is the module of the grad-mode switches.
"""

import sys

from .. import _lazy, differentiate, function, grad_mode  # noqa: F401  (grad_mode: torch.autograd.grad_mode)
from ..factories import zeros_like
from ..function import Function
from ..grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from ..gradcheck import gradcheck, gradgradcheck
from ..graph import detect_anomaly, is_anomaly_enabled, set_detect_anomaly  # noqa: F401
from ..ops.joins import stack
from ..sparse_layout import is_sparse
from ..tensor import Tensor

# PyTorch's submodules of torch.autograd that programs import from (``from torch.autograd.function import
# once_differentiable``, ``from torch.autograd.gradcheck import gradgradcheck``) are the package's own modules
for _name, _module in (("function", function), ("gradcheck", sys.modules[gradcheck.__module__]),
                      ("grad_mode", grad_mode)):
    sys.modules.setdefault(f"{__name__}.{_name}", _module)


def _tensors(value, role=None):
    """A tensor or a sequence of them as a tuple; with ``role``, a GradientEdge (graph.GradientEdge) may
    stand for a tensor there ('input' or 'output' of the backward pass)."""
    if role is not None and not isinstance(value, Tensor):
        from .graph import GradientEdge, edge_as_tensor

        if isinstance(value, GradientEdge):
            value = (value,)
        return tuple(edge_as_tensor(x, role) if isinstance(x, GradientEdge) else x
                     for x in differentiate.as_tuple(value))
    return differentiate.as_tuple(value)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, only_inputs=True,
         allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """dL/dinput for each input (a tuple), with L = sum of output · grad_output; nothing is
    stored in ``.grad``. An input or output may be a ``graph.GradientEdge`` (``get_gradient_edge``)
    in place of its tensor. ``is_grads_batched``: the first dim of every grad_output indexes
    independent seeds, and each result gains that dim in front. ``materialize_grads``: zeros,
    not None, for inputs the outputs do not depend on."""
    if materialize_grads and allow_unused is False:
        raise ValueError("Expected allow_unused to be True or not passed when materialize_grads=True, "
                         "but got: allow_unused=False.")
    allow_unused = bool(allow_unused) or materialize_grads
    if materialize_grads:
        from .graph import GradientEdge

        given = (inputs,) if isinstance(inputs, (Tensor, GradientEdge)) else tuple(inputs)
        edges = [isinstance(x, GradientEdge) for x in given]  # (no tensor to take zeros like)
    outputs, inputs = _tensors(outputs, "output"), _tensors(inputs, "input")
    if grad_outputs is not None:
        grad_outputs = _tensors(grad_outputs)
    if retain_graph is None:
        retain_graph = create_graph
    if is_grads_batched:
        _check_batched(outputs, grad_outputs)
        batch = len(grad_outputs[0])
        rows = [differentiate.grad(outputs, inputs, [g[b] for g in grad_outputs],
                                   retain_graph=retain_graph or b < batch - 1, create_graph=create_graph,
                                   allow_unused=allow_unused) for b in range(batch)]
        results = tuple(None if column[0] is None else stack(list(column)) for column in zip(*rows))
    else:
        results = differentiate.grad(outputs, inputs, grad_outputs, retain_graph=retain_graph,
                                     create_graph=create_graph, allow_unused=allow_unused)
    if materialize_grads:
        if any(g is None and is_edge for g, is_edge in zip(results, edges)):
            raise RuntimeError("materialize_grads cannot be used when the given input is a GradientEdge")
        results = tuple(zeros_like(x, requires_grad=create_graph) if g is None else g for x, g in zip(inputs, results))
    return tuple(results)


def _check_batched(outputs, grad_outputs):
    """With is_grads_batched, each grad_output is a batch of seeds for its output: its shape past the
    first dim must be the output's."""
    for i, (output, g) in enumerate(zip(outputs, grad_outputs)):
        if g is not None and tuple(g.shape[1:]) != tuple(output.shape):
            raise RuntimeError(
                "If `is_grads_batched=True`, we interpret the first dimension of each grad_output as the batch "
                "dimension. The sizes of the remaining dimensions are expected to match the shape of "
                f"corresponding output, but a mismatch was detected: grad_output[{i}] has a shape of "
                f"{g[0].shape if g.dim() else g.shape} and output[{i}] has a shape of "
                f"{output.shape}. If you only "
                "want some tensors in `grad_output` to be considered batched, consider using vmap.")


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, grad_variables=None, inputs=None):
    """Accumulate dL/dleaf into ``.grad`` (L = sum of tensor · grad_tensor). With ``inputs``
    only those tensors receive a gradient (a non-leaf among them too)."""
    tensors = _tensors(tensors, "output")
    grad_tensors = grad_variables if grad_tensors is None else grad_tensors
    if grad_tensors is not None:
        grad_tensors = _tensors(grad_tensors)
    if retain_graph is None:
        retain_graph = create_graph
    differentiate.backward(list(tensors), grad_tensors, retain_graph=retain_graph, create_graph=create_graph,
                           inputs=None if inputs is None else _tensors(inputs, "input"))


class set_multithreading_enabled:
    """Whether backward may run on per-device worker threads (PyTorch's; a context manager, a call or a
    decorator). This engine always runs backward on the calling thread, which is what ``mode=False``
    asks for and what PyTorch does on the CPU either way: the switch is accepted and changes nothing."""

    def __init__(self, mode):
        self.mode = bool(mode)

    def __enter__(self):
        return None

    def __exit__(self, *exc_info):
        return False

    def __call__(self, decorated):
        return decorated

    def clone(self):
        return type(self)(self.mode)


# jacobian, hessian and the rest load on first use: autograd.autograd.functional works as before
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {"functional": ".functional",
                                                            "Variable": ".variable:Variable",
                                                            "graph": ".graph",
                                                            "forward_ad": ".forward_ad",
                                                            "profiler": ".profiler",
                                                            "anomaly_mode": ".anomaly_mode",
                                                            "variable": ".variable"})
