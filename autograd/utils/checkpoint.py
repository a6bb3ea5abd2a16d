"""``autograd.utils.checkpoint``: activation checkpointing, PyTorch's ``torch.utils.checkpoint``.

Backpropagation keeps every intermediate value a later derivative needs, so a deep network's
memory grows with its depth. ``checkpoint(f, x)`` trades compute for that memory: the values
f's operations save for backward are dropped as soon as they are saved, and f runs a second
time during backward to compute them again, just before its part of the chain rule:

    h = checkpoint(block, h, use_reentrant=False)    # the same values and gradients as block(h)

f's graph is recorded as usual (its nodes are small); only what its nodes save goes through
saved-tensor hooks (``autograd.autograd.graph.saved_tensors_hooks``): the pack hook keeps a
number in place of the tensor. The first unpack in backward reruns f, with the random state of
the first run so that dropout draws the same mask, packing into a list this time; the n-th
tensor saved by the rerun is the n-th one the first run dropped. Only the arguments (and f's
parameters) stay alive between the passes, so a stack of checkpointed blocks holds one block's
intermediates at a time.

Both of PyTorch's variants (``use_reentrant=True`` and ``False``) are this one mechanism, with
PyTorch's argument checks for each; unlike PyTorch's reentrant variant, f's parameters get their
gradients when no argument requires grad, and ``autograd.grad`` works through it.
"""

import contextlib
import enum
import warnings

from ..autograd.graph import saved_tensors_hooks
from ..grad_mode import enable_grad, is_grad_enabled
from ..graph import program_stacklevel
from ..random import get_rng_state, set_rng_state
from ..tensor import Tensor


class CheckpointError(RuntimeError):
    """The rerun during backward did not save what the first run saved (PyTorch's name: programs catch it)."""


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
    determinism_check: "default" compares the shapes and dtypes the rerun saves with the first
    run's, "none" does not. use_reentrant: PyTorch's choice of variant; pass it (a warning says
    so otherwise). Keyword arguments for ``function`` need use_reentrant=False, as in PyTorch.
    """
    preserve_rng_state = kwargs.pop("preserve_rng_state", True)
    if use_reentrant is None:
        warnings.warn(NOT_EXPLICIT, UserWarning, stacklevel=program_stacklevel())
        use_reentrant = True
    if use_reentrant:
        if kwargs:
            raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
        if context_fn is not None or debug:
            raise ValueError("Passing `context_fn` or `debug` is only supported when use_reentrant=False.")
    if determinism_check not in ("default", "none"):
        raise ValueError(f"determinism_check should be one of ['default', 'none'], but got {determinism_check}")
    first_run, rerun = context_fn() if context_fn is not None else (contextlib.nullcontext(), contextlib.nullcontext())
    if not is_grad_enabled():  # nothing is saved for backward anyway
        with first_run:
            return function(*args, **kwargs)
    if _early_stop_everywhere is not None:
        early_stop = _early_stop_everywhere
    frame = _Frame(function, args, kwargs, get_rng_state() if preserve_rng_state else None, rerun,
                   determinism_check == "default", early_stop and not use_reentrant)
    try:
        with saved_tensors_hooks(frame.pack, frame.unpack), first_run:
            return function(*args, **kwargs)
    finally:
        frame.first_run_saved = None  # let go of what the first run saved


class CheckpointFunction:
    """PyTorch's reentrant variant by the name of its autograd Function, which programs call directly:
    ``CheckpointFunction.apply(run_function, preserve_rng_state, *args)`` is
    ``checkpoint(run_function, *args, use_reentrant=True, preserve_rng_state=preserve_rng_state)``."""

    @staticmethod
    def apply(run_function, preserve_rng_state, *args):
        return checkpoint(run_function, *args, use_reentrant=True, preserve_rng_state=bool(preserve_rng_state))


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """Run ``functions`` (an nn.Sequential or a list of modules or functions) one after another on
    ``input``, in ``segments`` pieces: every piece but the last is checkpointed."""
    if use_reentrant is None:
        warnings.warn(NOT_EXPLICIT, UserWarning, stacklevel=program_stacklevel())
        use_reentrant = True
    preserve_rng_state = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
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
        input = checkpoint(run_piece(start, end), input, use_reentrant=use_reentrant,
                           preserve_rng_state=preserve_rng_state)
    return run_piece(end + 1, len(functions) - 1)(input)


class _StopRerun(Exception):
    """Raised by the rerun's pack hook once it has every tensor the backward needs."""


class _Frame:
    """One checkpointed call: what the rerun needs, and the tensors it saves, by position.

    With ``early_stop`` (PyTorch's non-reentrant default) the rerun stops as soon as it has saved as
    many tensors as the first run, so what the function does after its last saved tensor (a forward
    hook, a print, a running statistic) happens once, as in PyTorch; the reentrant variant reruns it all.
    """

    def __init__(self, function, args, kwargs, rng_state, context, checks, early_stop):
        self.function, self.args, self.kwargs = function, args, kwargs
        self.rng_state, self.context, self.checks = rng_state, context, checks
        self.early_stop = early_stop
        # the rerun reads the arguments as they are then: one written in place since would give other values
        self.argument_versions = [(t, t._version_cell[1]) for t in (*args, *kwargs.values()) if isinstance(t, Tensor)]
        self.saved_metadata = []  # (shape, dtype) of each tensor the first run saved, in order
        self.first_run_saved = []  # what the first run saved, only while it runs (for a backward inside it)
        self.recomputed = None  # the rerun's saved tensors, each let go once unpacked

    def pack(self, tensor):
        """Keep the position of a saved tensor; the tensor itself only until the first run ends."""
        self.saved_metadata.append((tuple(tensor.shape), tensor.dtype))
        self.first_run_saved.append(tensor)
        return len(self.saved_metadata) - 1

    def unpack(self, position):
        if self.first_run_saved is not None:  # autograd.grad inside the function, during its first run
            return self.first_run_saved[position]
        if self.recomputed is None or self.recomputed[position] is None:
            self.recomputed = self._rerun()  # (a second backward, with retain_graph, reruns again)
        tensor, self.recomputed[position] = self.recomputed[position], None
        return tensor

    def _rerun(self):
        for tensor, version in self.argument_versions:
            if tensor._version_cell[1] != version:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: a tensor of shape {tuple(tensor.shape)} passed to a checkpointed function was "
                    f"changed in place after the call (it is at version {tensor._version_cell[1]}; expected version "
                    f"{version} instead), so recomputing from it would give other values. Use an out-of-place "
                    "operation (x = x + 1, not x += 1) or clone() it first."
                )
        saved = []

        def keep(tensor):
            saved.append(tensor)
            if self.early_stop and len(saved) == len(self.saved_metadata):
                raise _StopRerun
            return len(saved) - 1

        with contextlib.ExitStack() as stack:
            if self.rng_state is not None:
                stack.callback(set_rng_state, get_rng_state())  # the rerun leaves the random stream where it was
                set_rng_state(self.rng_state)
            stack.enter_context(enable_grad())
            stack.enter_context(saved_tensors_hooks(keep, saved.__getitem__))  # (read by a backward inside)
            stack.enter_context(self.context)
            with contextlib.suppress(_StopRerun):
                self.function(*self.args, **self.kwargs)
        if self.checks:
            self._check_same_saved(saved)
        return saved

    def _check_same_saved(self, saved):
        """PyTorch's determinism check: the rerun saves (at least) as many tensors, of the same shapes
        and dtypes, in the same order (more is fine: PyTorch stops a rerun once it has them all)."""
        if len(saved) < len(self.saved_metadata):
            raise CheckpointError(
                "autograd.utils.checkpoint: A different number of tensors was saved during the original forward and "
                f"recomputation.\nNumber of tensors saved during forward: {len(self.saved_metadata)}\n"
                f"Number of tensors saved during recomputation: {len(saved)}.\n"
            )
        differing = "".join(
            f"tensor at position {i}:\nsaved metadata: {{'shape': {shape}, 'dtype': {dtype}}}\n"
            f"recomputed metadata: {{'shape': {tuple(tensor.shape)}, 'dtype': {tensor.dtype}}}\n"
            for i, ((shape, dtype), tensor) in enumerate(zip(self.saved_metadata, saved))
            if (shape, dtype) != (tuple(tensor.shape), tensor.dtype))
        if differing:
            raise CheckpointError(
                "autograd.utils.checkpoint: Recomputed values for the following tensors have different metadata "
                f"than during the forward pass.\n{differing}(the checkpointed function must compute the same "
                "things again; determinism_check='none' skips this check)"
            )


def noop_context_fn():
    """The default ``context_fn``: nothing entered around either run."""
    return contextlib.nullcontext(), contextlib.nullcontext()


class CheckpointPolicy(enum.Enum):
    """What selective checkpointing does with one op's output: save it in the forward or recompute it."""

    MUST_SAVE = 0
    PREFER_SAVE = 1
    MUST_RECOMPUTE = 2
    PREFER_RECOMPUTE = 3
    MUST_CPU_OFFLOAD = 4
    PREFER_CPU_OFFLOAD = 5


class SelectiveCheckpointContext:
    """The ``ctx`` a selective-checkpointing policy function receives: which of the two runs it is."""

    def __init__(self, *, is_recompute):
        self.is_recompute = is_recompute


def create_selective_checkpoint_contexts(policy_fn_or_list, allow_cache_entry_mutation=False):
    """``context_fn`` for selective activation checkpointing: ``policy_fn(ctx, op, *args, **kwargs)``
    (or a list of ops to save) says which ops' outputs the forward keeps instead of recomputing.

    chainrule does not dispatch op by op, so every op is recomputed, as under a policy that always
    says PREFER_RECOMPUTE, and the policy is checked but not called: a policy decides only what is
    kept and what runs again, never the values or gradients, which are those of the plain call.
    """
    from ..library.namespaces import _AtenPacket
    from ..library.operators import OpOverload

    if isinstance(policy_fn_or_list, list):
        for op in policy_fn_or_list:
            if not isinstance(op, (_AtenPacket, OpOverload)):
                raise ValueError(f"Expected op in `op_list` to be an OpOverload but got: {op} of type {type(op)}. ")
    elif not callable(policy_fn_or_list):
        raise TypeError("policy_fn_or_list must be either a function or a list of ops.")
    return noop_context_fn()


_early_stop_everywhere = None  # set_checkpoint_early_stop's choice, over each call's early_stop


@contextlib.contextmanager
def set_checkpoint_early_stop(enable):
    """Whether the non-reentrant reruns inside stop once they have every saved tensor (each call's
    ``early_stop``, True by default, otherwise)."""
    global _early_stop_everywhere
    before, _early_stop_everywhere = _early_stop_everywhere, enable
    try:
        yield
    finally:
        _early_stop_everywhere = before


@contextlib.contextmanager
def set_checkpoint_debug_enabled(enabled):
    """PyTorch's switch for the debug flag of every checkpoint inside; chainrule's errors say the same
    without it."""
    yield
