"""``autograd.utils.checkpoint``: activation checkpointing, PyTorch's ``torch.utils.checkpoint``.

Backpropagation keeps every intermediate value a later derivative needs, so a deep network's
memory grows with its depth. ``checkpoint(f, x)`` trades compute for that memory: the values
computed inside f are dropped once f returns, and f runs a second time during backward to
compute them again, just before its part of the chain rule:

    h = checkpoint(block, h, use_reentrant=False)    # the same values and gradients as block(h)

Only the arguments (and f's parameters) stay alive between the passes, so a stack of n
checkpointed blocks holds one block's intermediates at a time, not n.

How: f runs once recorded, so that the leaves it reaches (a module's parameters, say) are
known; then its graph is let go and its outputs become the outputs of one node, whose inputs
are f's tensor arguments and those leaves. That node's backward reruns f on the arguments
(with the random state of the first run, so dropout draws the same mask) and takes
dL/d(argument) and dL/d(leaf) through the rerun with ``autograd.grad``. The gradients reach
the leaves through the engine as any other gradient does, so ``autograd.grad`` of a loss
through a checkpoint works too, and with ``create_graph=True`` the rerun is recorded.

Both of PyTorch's variants (``use_reentrant=True`` and ``False``) are this one mechanism, with
PyTorch's argument checks for each. One difference from PyTorch's reentrant variant: when no
argument requires grad, f's parameters still get their gradients here (PyTorch's warns that
they will be None).

A computed tensor that requires grad reaches f only as an argument: one read from outside (a
closure over another layer's output) is refused with an error that says so. (PyTorch's
non-reentrant variant keeps f's graph and recomputes only what its nodes saved, through
saved-tensor hooks, so it takes such a tensor; this one lets f's graph go as a whole.)
"""

import contextlib
import warnings

from ..engine import topological_order
from ..function import Function
from ..grad_mode import enable_grad, is_grad_enabled
from ..graph import tick
from ..random import get_rng_state, set_rng_state
from ..tensor import Tensor

NOT_EXPLICIT = (
    "autograd.utils.checkpoint: the use_reentrant parameter should be passed explicitly. "
    "use_reentrant=False is recommended, but if you need to preserve the current default behavior, you can "
    "pass use_reentrant=True."
)


def checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check="default", debug=False,
               early_stop=True, **kwargs):
    """``function(*args, **kwargs)`` without keeping what it computes inside for backward: it runs
    again during backward instead. Same values and gradients as the plain call.

    preserve_rng_state (keyword, default True): the rerun draws the same random numbers.
    context_fn: returns two context managers, entered around the first run and the rerun.
    use_reentrant: PyTorch's choice of variant; pass it (a warning says so otherwise). Keyword
    arguments for ``function`` need use_reentrant=False, as in PyTorch.
    """
    preserve_rng_state = kwargs.pop("preserve_rng_state", True)
    if use_reentrant is None:
        warnings.warn(NOT_EXPLICIT, UserWarning, stacklevel=2)
        use_reentrant = True
    if use_reentrant:
        if kwargs:
            raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
        if context_fn is not None or debug:
            raise ValueError("Passing `context_fn` or `debug` is only supported when use_reentrant=False.")
    if determinism_check not in ("default", "none"):
        raise ValueError(f"determinism_check should be one of ['default', 'none'], but got {determinism_check}")
    first_run, rerun = context_fn() if context_fn is not None else (contextlib.nullcontext(), contextlib.nullcontext())
    if not is_grad_enabled():  # nothing is kept for backward anyway
        with first_run:
            return function(*args, **kwargs)
    state = get_rng_state() if preserve_rng_state else None
    arguments = [_standing_in(x) for x in args]
    start = tick()
    with first_run:
        output = function(*arguments, **kwargs)
    outputs = [output] if isinstance(output, Tensor) else list(output) if isinstance(output, tuple) else None
    if outputs is None:
        raise TypeError(f"checkpoint: the function must return a Tensor or a tuple, got {type(output).__name__}")
    leaves = _leaves_reached(outputs, arguments, start)
    tensors = [x for x in args if isinstance(x, Tensor)]
    run = _Rerun(function, args, kwargs, state, rerun, len(tensors), len(leaves))
    results = _Checkpointed.apply(run, *tensors, *leaves, *(y.detach() if isinstance(y, Tensor) else y
                                                          for y in outputs))
    results = results if isinstance(results, tuple) else (results,)
    return results[0] if isinstance(output, Tensor) else tuple(results)


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """Run ``functions`` (an nn.Sequential or a list of modules or functions) one after another on
    ``input``, in ``segments`` pieces: every piece but the last is checkpointed."""
    if use_reentrant is None:
        warnings.warn(NOT_EXPLICIT, UserWarning, stacklevel=2)
        use_reentrant = True
    functions = list(functions.children()) if hasattr(functions, "children") else list(functions)
    size = len(functions) // segments

    def run_piece(start, end):
        def piece(x):
            for f in functions[start:end + 1]:
                x = f(x)
            return x

        return piece

    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(run_piece(start, end), input, use_reentrant=use_reentrant, **kwargs)
    return run_piece(end + 1, len(functions) - 1)(input)


def _standing_in(x):
    """A tensor argument as a fresh leaf on its memory: f's graph then ends at it."""
    return x.detach().requires_grad_(x.requires_grad) if isinstance(x, Tensor) else x


def _leaves_reached(outputs, arguments, start):
    """The leaves that require grad, other than the arguments, that f's outputs were computed from
    (f's nodes were all recorded at clock time ``start`` or later)."""
    roots = [y.grad_fn for y in outputs if isinstance(y, Tensor) and y.grad_fn is not None]
    stand_ins = {id(x) for x in arguments if isinstance(x, Tensor)}
    leaves = []
    for node in topological_order(roots):
        if isinstance(node, Tensor):
            if id(node) not in stand_ins:
                leaves.append(node)
        elif getattr(node, "created", start) < start:
            raise RuntimeError(f"checkpoint: the function reads a tensor computed outside it (by {node.name}) that "
                               "requires grad; pass that tensor as an argument of checkpoint")
    return leaves


class _Rerun:
    """What the backward needs to run f again as it ran the first time."""

    def __init__(self, function, args, kwargs, rng_state, context, tensor_count, leaf_count):
        self.function, self.args, self.kwargs = function, args, kwargs
        self.rng_state, self.context = rng_state, context
        self.tensor_count, self.leaf_count = tensor_count, leaf_count

    def __call__(self, tensors):
        """f's outputs (a list) from the tensor arguments given, the others as saved."""
        given = iter(tensors)
        args = [next(given) if isinstance(x, Tensor) else x for x in self.args]
        with contextlib.ExitStack() as stack:
            if self.rng_state is not None:
                outer = get_rng_state()
                stack.callback(set_rng_state, outer)  # the rerun leaves the random stream where it was
                set_rng_state(self.rng_state)
            stack.enter_context(enable_grad())
            stack.enter_context(self.context)
            output = self.function(*args, **self.kwargs)
        return [output] if isinstance(output, Tensor) else list(output)


class _Checkpointed(Function):
    """y = f(x, θ) as one node: forward hands on the outputs of f's first run; backward reruns f
    and returns dL/dx and dL/dθ through the rerun."""

    @staticmethod
    def forward(ctx, run, *tensors_leaves_outputs):
        ctx.run = run
        arguments, after = tensors_leaves_outputs[:run.tensor_count], run.tensor_count + run.leaf_count
        ctx.save_for_backward(*arguments)  # an argument changed in place before backward is refused
        ctx.leaves = tensors_leaves_outputs[run.tensor_count:after]
        outputs = tensors_leaves_outputs[after:]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        arguments = ctx.saved_tensors
        if not is_grad_enabled():  # (with create_graph the rerun must hang on the arguments' own graph)
            arguments = [_standing_in(x) for x in arguments]
        outputs = ctx.run(arguments)
        wanted = [x for x in arguments if x.requires_grad] + list(ctx.leaves)
        pairs = [(y, g) for y, g in zip(outputs, grads)
                 if isinstance(y, Tensor) and y.requires_grad and g is not None]
        found = iter(())
        if pairs and wanted:
            from ..differentiate import grad

            # (retain_graph: a computed tensor f read from outside leads into the graph it came from,
            # which the pass that called this backward has yet to run through)
            found = iter(grad([y for y, _ in pairs], wanted, [g for _, g in pairs], retain_graph=True,
                              create_graph=is_grad_enabled(), allow_unused=True))
        argument_grads = [next(found) if x.requires_grad else None for x in arguments]
        leaf_grads = [next(found, None) for _ in ctx.leaves]
        return (None, *argument_grads, *leaf_grads) + (None,) * (len(grads))
