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

The deprecated ``register_backward_hook`` (with no pre-hooks) leaves the outputs themselves in
place, as PyTorch's hooks their grad_fn and wraps nothing: an in-place op after the module
(a ``ReLU(inplace=True)``) then changes what forward hooks kept of the output, as there. A
hook on each output notes its gradient instead of the output gate.
"""

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


def through_gate(values, on_gradients, refuse_writes=True):
    """``values`` (a tuple) with its tensors that require grad passed through one GradientGate.
    Returns the new tuple and the positions of the gated tensors (None when none was).
    Where ``refuse_writes`` (a full hook's gate), a recorded in-place write to a gated tensor is refused, as PyTorch
    refuses one to the outputs of its BackwardHookFunction (its inputs returned as they are): the write's history
    would go around the hook."""
    positions = [i for i, v in enumerate(values) if isinstance(v, Tensor) and v.requires_grad]
    if not positions:
        return values, None
    tensors = [values[i] for i in positions]
    joined = GradientGate.apply(*tensors, on_gradients=on_gradients)
    out, start = list(values), 0
    for i, tensor in zip(positions, tensors):
        piece = joined[start:start + tensor.numel()].reshape(tensor.shape)
        out[i] = _as_dtype_of(piece, tensor)
        if refuse_writes and out[i].requires_grad:  # (PyTorch's output index counts every tensor passed)
            index = sum(isinstance(v, Tensor) for v in values[:i])
            out[i]._made_by_function = (index, "BackwardHookFunction", len(positions) > 1)
        start += tensor.numel()
    return tuple(out), positions


def _check_replacement(hook, replaced, given):
    """PyTorch's checks on what a full hook returns in place of the gradients it was ``given``: each tensor
    keeps its gradient's size and type (None is allowed: no gradient flows there)."""
    for new, old in zip(replaced, given):
        if isinstance(new, Tensor) and isinstance(old, Tensor):
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

    def __init__(self, module, hooks, pre_hooks, deprecated=False):
        self.module, self.hooks, self.pre_hooks = module, hooks, pre_hooks
        self.deprecated = deprecated and not pre_hooks  # (pre-hooks may replace grad_output: they need the gate)
        self.grad_outputs = None
        self.inputs, self.input_positions = (), None

    def _check(self, result, count, what):
        """A hook's replacement as a tuple of ``count``. A full hook's may be any sequence, as PyTorch takes
        it (a list; a tensor then counts as the sequence of its rows, which the checks that follow refuse)."""
        if not self.deprecated and isinstance(result, (list, Tensor)):
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
        args, self.input_positions = through_gate(args, self._on_input_gradients, refuse_writes=not self.deprecated)
        return args

    def setup_output_hook(self, result):
        is_tuple = isinstance(result, tuple)
        self.outputs = result if is_tuple else (result,)
        if (self.deprecated and (self.input_positions is not None or not is_tuple)
                and all(v.grad_fn is not None for v in self.outputs if isinstance(v, Tensor) and v.requires_grad)):
            return self._watch_outputs(result)  # (a leaf returned as it is would keep a hook per call: gated)
        values, self.output_positions = through_gate(self.outputs, self._on_output_gradients,
                                                     refuse_writes=not self.deprecated)
        # an output no gradient reaches shows None in grad_output, as PyTorch's (the gate itself sees
        # zeros there): a hook on each output notes the ones reached
        self.outputs_reached = set()
        for i in self.output_positions or ():
            values[i].register_hook(lambda grad, i=i: self.outputs_reached.add(i))
        return values if is_tuple else values[0]

    def _watch_outputs(self, result):
        """The deprecated hook's outputs, returned as they are, each with a hook noting its gradient:
        the input gate then shows them as grad_output (or, where no input needs a gradient, the
        one output's hook runs the module's hooks itself)."""
        self.output_positions = [i for i, v in enumerate(self.outputs) if isinstance(v, Tensor) and v.requires_grad]
        if not self.output_positions:
            self.output_positions = None
        self.noted = {}
        for i in self.output_positions or ():
            self.outputs[i].register_hook(lambda grad, i=i: self._note_output_gradient(i, grad))
        return result

    def _note_output_gradient(self, i, grad):
        self.noted[i] = grad
        self.grad_outputs = tuple(self.noted.get(j) if isinstance(v, Tensor) else None
                                  for j, v in enumerate(self.outputs))
        if self.input_positions is None:  # no input needs a gradient: the hooks run now (one output)
            for hook in list(self.hooks.values()):
                replaced = hook(self.module, (None,) * len(self.inputs), self.grad_outputs)
                if replaced is not None and any(r is not None for r in self._check(replaced, len(self.inputs),
                                                                                  "input")):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should "
                                       "always return None or None for all gradients.")
            self.noted, self.grad_outputs = {}, None

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
        self.noted = {}
        return tuple(grad_inputs[i] for i in self.input_positions)
