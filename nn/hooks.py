"""Module hooks: the graph nodes behind full backward hooks (the handles are autograd.hooks').

A full backward hook needs, at once, the gradients with respect to all of a
module's tensor inputs (grad_input) and outputs (grad_output). A Primitive
here has one output, so the module's tensors are passed through a *gate*: one
node that packs them into a single flat tensor, from which each tensor is cut
back out. The gate's backward receives every gradient together (the engine
sums the slices first), so it can show them to the hooks as one tuple, let
them replace it, and send the result on:

    outputs → gate (backward: grad_output, pre-hooks may replace it)
    inputs  → gate (backward: grad_input; hook(module, grad_input, grad_output))

The deprecated ``register_backward_hook`` is PyTorch's: a hook on the node of forward's last operation
(``hook_last_node``), which wraps nothing, so an in-place op after the module (a ``ReLU(inplace=True)``)
changes what forward hooks kept of the output, as there.
"""

import functools
import warnings

import numpy

from autograd import Primitive, Tensor
from autograd.backend import xp
from autograd.graph import program_stacklevel, refuse_changed_gradient
from autograd.hooks import RemovableHandle, add_hook  # noqa: F401  (nn.hooks' names, as before)


class GradientGate(Primitive):
    """y = the tensors x_1 .. x_k flattened and joined (identity in value);
    dL/dx_i = the slice of dL/dy for x_i, after ``on_gradients`` has seen (and may have
    replaced) the tuple of all of them (the identity's gradient, complex ones included; a real
    x_i joined with complex ones takes its slice's real part)"""

    handles_complex = True

    def forward(self, *xs):
        dtype = numpy.result_type(*xs)
        return xp.concatenate([x.reshape(-1).astype(dtype, copy=False) for x in xs])

    def backward(self, grad, y, *xs):
        grads, start = [], 0
        for x in xs:
            grads.append(_as_dtype_of(grad[start:start + x._data.size].reshape(x.shape), x))
            start += x._data.size
        replaced = self.on_gradients(tuple(grads))
        return tuple(g if x.requires_grad else None for g, x in zip(replaced, xs))


def _as_dtype_of(piece, tensor):
    """A piece cut from the gate in ``tensor``'s dtype: a real tensor's piece of a complex join is its real
    part (its imaginary part is 0, and casting would warn that it is discarded)."""
    if piece.dtype.kind == "c" and tensor.dtype.kind != "c":
        piece = piece.real
    return piece if piece.dtype == tensor.dtype else piece.to(tensor.dtype)


def through_gate(values, on_gradients):
    """``values`` (a tuple) with its tensors that require grad passed through one GradientGate.
    Returns the new tuple and the positions of the gated tensors (None when none was).
    A recorded in-place write to a gated tensor is refused, as PyTorch refuses one to the outputs of its
    BackwardHookFunction (its inputs returned as they are): the write's history would go around the hook."""
    positions = [i for i, v in enumerate(values) if isinstance(v, Tensor) and v.requires_grad]
    if not positions:
        return values, None
    tensors = [values[i] for i in positions]
    joined = GradientGate.apply(*tensors, on_gradients=on_gradients)
    out, start = list(values), 0
    for i, tensor in zip(positions, tensors):
        piece = joined[start:start + tensor.numel()].reshape(tensor.shape)
        out[i] = _as_dtype_of(piece, tensor)
        if out[i].requires_grad:  # (PyTorch's output index counts every tensor passed)
            index = sum(isinstance(v, Tensor) for v in values[:i])
            out[i]._made_by_function = (index, "BackwardHookFunction", len(positions) > 1)
        start += tensor.numel()
    return tuple(out), positions


def _check_replacement(hook, replaced, given):
    """PyTorch's checks on what a full hook returns in place of the gradients it was ``given``: each tensor
    keeps its gradient's size and type (None is allowed: no gradient flows there)."""
    for new, old in zip(replaced, given):
        if new is not None and isinstance(old, Tensor):
            refuse_changed_gradient(hook, new, old)
    return replaced


def _spread(values, positions, grads):
    """One entry per value, as PyTorch lays out grad_input / grad_output: the gradients at
    ``positions``, zeros for the other tensors (they need none), None for non-tensors."""
    out = [Tensor._make(xp.zeros(v.shape, dtype=v.dtype)) if isinstance(v, Tensor) else None for v in values]
    for i, g in zip(positions or (), grads):
        out[i] = g
    if positions is None:  # no tensor needed a gradient: PyTorch shows None throughout
        out = [None] * len(values)
    return tuple(out)


class BackwardHook:
    """One forward call's full backward hooks: gates on its inputs and outputs."""

    def __init__(self, module, hooks, pre_hooks):
        self.module, self.hooks, self.pre_hooks = module, hooks, pre_hooks
        self.grad_outputs = None
        self.inputs, self.input_positions = (), None

    def _check(self, result, count, what):
        """A hook's replacement as a tuple of ``count``. A full hook's may be any sequence, as PyTorch takes
        it (a list; a tensor then counts as the sequence of its rows, which the checks that follow refuse)."""
        if isinstance(result, (list, Tensor)):
            result = tuple(result)
        if not isinstance(result, tuple):
            result = (result,)
        if len(result) != count:
            kind = "Backward pre hook" if what == "output" else "Backward hook"
            raise RuntimeError(f"{kind} returned an invalid number of grad_{what}, got {len(result)}, "
                               f"but expected {count}")
        return result

    def setup_input_hook(self, args):
        self.inputs = args
        args, self.input_positions = through_gate(args, self._on_input_gradients)
        return args

    def setup_output_hook(self, result):
        is_tuple = isinstance(result, tuple)
        self.outputs = result if is_tuple else (result,)
        values, self.output_positions = through_gate(self.outputs, self._on_output_gradients)
        # an output no gradient reaches shows None in grad_output, as PyTorch's (the gate itself sees
        # zeros there): a hook on each output notes the ones reached
        self.outputs_reached = set()
        for i in self.output_positions or ():
            values[i].register_hook(lambda grad, i=i: self.outputs_reached.add(i))
        return values if is_tuple else values[0]

    def _on_output_gradients(self, grads):
        # an output that needs no gradient, or that none reached, shows None, as PyTorch's (unlike grad_input,
        # where an input that needs none shows zeros)
        grad_outputs = _spread(self.outputs, self.output_positions, grads)
        grad_outputs = tuple(None if i not in self.outputs_reached else g for i, g in enumerate(grad_outputs))
        self.outputs_reached = set()  # the next backward through this graph (retain_graph) notes its own
        for hook in list(self.pre_hooks.values()):
            replaced = hook(self.module, grad_outputs)
            if replaced is not None:
                replaced = self._check(replaced, len(self.outputs), "output")
                grad_outputs = _check_replacement(hook, replaced, grad_outputs)
        self.grad_outputs = grad_outputs
        if self.input_positions is None:  # no input needs a gradient: the hooks run now
            warnings.warn("Full backward hook is firing when gradients are computed with respect to module outputs "
                          "since no inputs require gradients. See https://docs.pytorch.org/docs/main/generated/"
                          "torch.nn.Module.html#torch.nn.Module.register_full_backward_hook for more details.",
                          stacklevel=program_stacklevel())
            for hook in list(self.hooks.values()):
                replaced = hook(self.module, (None,) * len(self.inputs), grad_outputs)
                if replaced is not None and any(r is not None for r in self._check(replaced, len(self.inputs),
                                                                                  "input")):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should "
                                       "always return None or None for all gradients.")
        # None, where no gradient reached an output or a pre-hook returned None for it: nothing flows into the
        # module there (zeros: its input hooks still run, and its inputs get zeros, as PyTorch's; its
        # parameters get zeros where PyTorch leaves their .grad None)
        return tuple(grad_outputs[i] if grad_outputs[i] is not None else Tensor._make(xp.zeros(g.shape, dtype=g.dtype))
                     for i, g in zip(self.output_positions, grads))

    def _on_input_gradients(self, grads):
        if self.grad_outputs is None:  # the gradient came around the outputs (double backward): no hooks, as PyTorch
            return grads
        grad_inputs = _spread(self.inputs, self.input_positions, grads)
        for hook in list(self.hooks.values()):
            replaced = hook(self.module, grad_inputs, self.grad_outputs)
            if replaced is not None:
                replaced = self._check(replaced, len(self.inputs), "input")
                grad_inputs = _check_replacement(hook, replaced, grad_inputs)
        self.grad_outputs = None  # the next backward through the outputs sets its own
        return tuple(grad_inputs[i] for i in self.input_positions)


# -- the deprecated backward hook (Module.register_backward_hook) ------------------------------------


def hook_last_node(module, hooks, args, result):
    """PyTorch's deprecated backward hooks: each hook(module, grad_input, grad_output) registered on the node of
    forward's last operation, the grad_fn of its first tensor output (a dict's first tensor value, a tuple's first
    item), so grad_input is about that node's inputs (the module's only where forward is one op) and a returned
    tuple replaces them (``Node.register_hook``). Then PyTorch's warnings of what such a hook will miss."""
    first = result
    while first is not None and not isinstance(first, Tensor):
        if isinstance(first, dict):
            first = next((v for v in first.values() if isinstance(v, Tensor)), None)
        else:
            first = first[0] if isinstance(first, (tuple, list)) and first else None
    node = first.grad_fn if first is not None else None
    if node is None:
        return
    for hook in hooks:
        node.register_hook(functools.partial(_module_hook_on_node, hook, module))
    _warn_of_what_is_missed(args, result, node)


def _module_hook_on_node(hook, module, grad_inputs, grad_outputs):
    return hook(module, grad_inputs, grad_outputs)


def _warn_of_what_is_missed(inputs, result, node):
    """PyTorch's _maybe_warn_non_full_backward_hook, in its words."""
    result = (result,) if isinstance(result, Tensor) else result
    if not (isinstance(result, tuple) and all(isinstance(r, Tensor) for r in result)):
        return _deprecated("Using non-full backward hooks on a Module that does not return a single Tensor or a "
                           "tuple of Tensors is deprecated and will be removed in future versions. This hook will be "
                           "missing some of the grad_output. Please use register_full_backward_hook to get the "
                           "documented behavior.")
    inputs = (inputs,) if isinstance(inputs, Tensor) else inputs
    if not (isinstance(inputs, tuple) and all(isinstance(i, Tensor) for i in inputs)):
        return _deprecated("Using non-full backward hooks on a Module that does not take as input a single Tensor "
                           "or a tuple of Tensors is deprecated and will be removed in future versions. This hook "
                           "will be missing some of the grad_input. Please use register_full_backward_hook to get "
                           "the documented behavior.")
    output_nodes = {r.grad_fn for r in result if r.grad_fn is not None}
    if not output_nodes or (len(output_nodes) == 1 and node not in output_nodes):
        return _deprecated("Using a non-full backward hook when outputs are nested in python data structure is "
                           "deprecated and will be removed in future versions. This hook will be missing some "
                           "grad_output.")
    if len(output_nodes) > 1:
        return _deprecated("Using a non-full backward hook when outputs are generated by different autograd Nodes "
                           "is deprecated and will be removed in future versions. This hook will be missing some "
                           "grad_output. Please use register_full_backward_hook to get the documented behavior.")
    input_nodes = {i.grad_fn for i in inputs if i.grad_fn is not None}
    if input_nodes != {edge[0] for edge in node.next_functions}:
        _deprecated("Using a non-full backward hook when the forward contains multiple autograd Nodes is deprecated "
                    "and will be removed in future versions. This hook will be missing some grad_input. Please use "
                    "register_full_backward_hook to get the documented behavior.")


def _deprecated(message):
    warnings.warn(message, FutureWarning, stacklevel=program_stacklevel())
