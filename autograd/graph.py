"""The rules of state the engine lives by, each with one owner (as PyTorch's autograd core):

- modes:    whether operations are recorded (``no_grad``, ``enable_grad``, ``set_grad_enabled``,
            ``inference_mode``) and checked (``detect_anomaly``): one re-entrant switch, per thread;
- versions: one clock that stamps every in-place write, so a node can tell whether a tensor
            it saved was changed after it was saved;
- hooks:    functions run on a gradient as it passes a tensor (the hooks on what a node saves for
            backward, ``saved_tensors_hooks``, are saved_tensor_hooks.py's; their modes are here);
- storage:  ``accumulate_grad``, the only code that writes ``.grad``: dL/dx += g;
- checks:   ``validate_gradients``, which every gradient an op returns passes through: the
            input's shape and dtype, and no NaN in anomaly mode.
"""

import functools
import inspect
import os
import sys
import threading
import warnings

from .backend import is_dense, strided_view, xp
from .sparse_layout import is_sparse

# -- modes -------------------------------------------------------------------------------


class _Modes(threading.local):
    """Per-thread flags: a ``no_grad`` block, or a backward pass, in one thread leaves the
    others recording."""

    grad_enabled = True
    inference = False
    anomaly = False
    anomaly_check_nan = True  # anomaly mode's check of values (off: it only remembers where ops were made)
    anomaly_parent = None  # anomaly mode: the node whose backward is running, parent of the ops it makes
    saved_tensor_hooks = None  # (pack, unpack) of the innermost saved_tensors_hooks block
    saved_tensor_hooks_refused = None  # the message of a disable_saved_tensors_hooks block
    backward_pass = None  # the backward pass running in this thread (engine.BackwardPass), for hooks to ask
    final_callbacks = None  # the callbacks queued for the end of the backward pass running here (a list)
    saved_mutation = None  # the allow_mutation_on_saved_tensors block open in this thread
    torch_function = True  # Tensor subclasses' __torch_function__ is asked (overrides.py): off inside the default
    # one (DisableTorchFunctionSubclass) and during a backward pass, whose ops are the engine's, not the program's
    torch_function_outside_pass = None  # during a backward pass, torch_function as the pass found it: what the
    # program's own code that the pass calls runs with (as_program_code); None outside a pass
    transforms_running = 0  # torch.func transforms (vmap, grad, vjp, ...) running their function: backward() refused
    draws_refused = 0  # vmap(randomness='error') calls running: every random op refused (random.generator)
    vmap_examples = ()  # per vmap running its function (outermost first), the ids of the tensors handed it as its
    # example: what unbatched_under_vmap reads


modes = _Modes()

# ``modes.grad_enabled`` inside inference_mode: falsy like False (nothing is recorded) and told apart
# from it by identity, so that Primitive.apply learns both whether to record and whether its output is
# an inference tensor from one read of the thread's modes (a read costs as much as a small op's check).
INFERENCE = ()


def is_grad_enabled():
    """True when new operations are recorded for backpropagation (in this thread)."""
    return bool(modes.grad_enabled)


def is_inference_mode_enabled():
    return modes.inference


def is_anomaly_enabled():
    return modes.anomaly


def unbatched_under_vmap(tensor):
    """Whether a vmap is running its function in this thread and ``tensor`` is none of the examples it was handed
    (where PyTorch's ops would see an unbatched tensor beside batched ones; ones computed from examples do not
    count): a training batch_norm's running statistics, say, which it would move once per example."""
    running = modes.vmap_examples
    return bool(running) and not any(id(tensor) in level for level in running)


class ModeSwitch:
    """Set some of ``modes`` inside a ``with`` block, or for each call of a decorated function.

    Re-entrant: each entry pushes what it replaced and each exit restores it, so nested and
    recursive uses unwind correctly; a decorator enters a fresh switch per call, so threads
    and recursion never share one.
    """

    bare_decorator = False  # usable as @switch without parentheses (no_grad, enable_grad, inference_mode)

    def __new__(cls, *args, **kwargs):
        if cls.bare_decorator and len(args) == 1 and not kwargs and callable(args[0]):
            return cls()(args[0])  # @no_grad on a function: the same as @no_grad()
        return super().__new__(cls)

    def __init__(self, **settings):
        self.settings = tuple(settings.items())
        self.saved = []

    def __enter__(self):
        saved = []
        for name, value in self.settings:
            saved.append((name, getattr(modes, name)))
            setattr(modes, name, value)
        if modes.inference:  # inside inference_mode nothing is recorded, whatever no_grad/enable_grad say
            modes.grad_enabled = INFERENCE  # (PyTorch's: only inference_mode(False) leaves it)
        self.saved.append(saved)
        return self

    def __exit__(self, *exc_info):
        for name, value in self.saved.pop():
            setattr(modes, name, value)
        return False

    def __call__(self, function):
        settings = dict(self.settings)
        if inspect.isclass(function):  # (PyTorch's deprecated use: the class's construction runs in the mode)
            warnings.warn("Decorating classes is deprecated and will be disabled in future versions. You should "
                          "only decorate functions or methods. To preserve the current behavior of class "
                          "decoration, you can directly decorate the `__init__` method and nothing else.",
                          FutureWarning, stacklevel=program_stacklevel())
            cls = function

            def function(*args, **kwargs):
                return cls(*args, **kwargs)
        if inspect.isgeneratorfunction(function):
            return each_step_in(lambda: ModeSwitch(**settings), function)

        @functools.wraps(function)
        def run_with_mode(*args, **kwargs):
            with ModeSwitch(**settings):
                return function(*args, **kwargs)

        return run_with_mode


def each_step_in(context, generator_function):
    """A decorated generator function, as PyTorch wraps one: each step of the generator runs inside a fresh
    ``context()`` (``@no_grad`` on a sampler that yields tokens: each step in the mode), and the caller between
    steps outside it."""

    @functools.wraps(generator_function)
    def generator(*args, **kwargs):
        steps = generator_function(*args, **kwargs)
        sent, thrown = None, None
        while True:
            try:
                with context():
                    value = steps.send(sent) if thrown is None else steps.throw(thrown)
            except StopIteration as finished:
                return finished.value
            sent, thrown = None, None
            try:
                sent = yield value
            except GeneratorExit:
                with context():
                    steps.close()
                raise
            except BaseException as error:  # thrown in by the caller: passed on to the generator
                thrown = error

    return generator


class no_grad(ModeSwitch):
    """Run without recording a graph (evaluation, parameter updates)."""

    bare_decorator = True

    def __init__(self):
        super().__init__(grad_enabled=False)


class enable_grad(ModeSwitch):
    """Record a graph again, inside a ``no_grad`` block."""

    bare_decorator = True

    def __init__(self):
        super().__init__(grad_enabled=True)


class inference_mode(ModeSwitch):
    """``no_grad`` for inference, whose tensors are inference tensors (``is_inference()``: never saved for
    backward nor changed in place outside the mode); ``mode=False`` turns both off (recording on), as
    PyTorch's."""

    bare_decorator = True

    def __init__(self, mode=True):
        super().__init__(grad_enabled=INFERENCE if mode else True, inference=bool(mode))


class set_grad_enabled(ModeSwitch):
    """Turn recording on or off. Called as a function it takes effect at once (as PyTorch's);
    as a ``with`` block it is undone at the end; as a decorator it changes nothing until the
    decorated function runs."""

    def __init__(self, mode):
        super().__init__(grad_enabled=bool(mode))
        super().__enter__()

    def __enter__(self):
        return self  # __init__ has already switched

    def __call__(self, function):
        self.__exit__()  # a decorator: undo the switch made by __init__
        return super().__call__(function)


class detect_anomaly(ModeSwitch):
    """Stop the backward pass at the first node that returns NaN, naming it and the user's line
    that created its op, as PyTorch's (context manager and decorator). With ``check_nan=False`` the
    values are not checked; each op still remembers where it was created, as PyTorch's."""

    def __init__(self, check_nan=True):
        super().__init__(anomaly=True, anomaly_check_nan=bool(check_nan))
        warnings.warn("Anomaly Detection has been enabled. This mode will increase the runtime and should only be "
                      "enabled for debugging.", stacklevel=program_stacklevel())


class set_detect_anomaly(set_grad_enabled):
    """Turn anomaly detection on or off (at once, or for a block, as ``set_grad_enabled``)."""

    def __init__(self, mode, check_nan=True):
        ModeSwitch.__init__(self, anomaly=bool(mode), anomaly_check_nan=bool(check_nan))
        ModeSwitch.__enter__(self)


# -- versions -----------------------------------------------------------------------------


class VersionClock:
    """Counts in-place writes. A node remembers the time it was created; a saved tensor whose
    version is newer was changed after it was saved. Views share their base's version."""

    now = 0


def bump_version(tensor):
    """Stamp a write: the clock's time (what saved-tensor checks compare), the count (PyTorch's
    ``x._version``) and the time of the write before, in the cell a tensor shares with its views
    ([last write's time, writes so far, the time of the one before]: a saved tensor's error then says
    which version it was saved at, where one write came after, without the node keeping a count:
    errors.modified_in_place)."""
    VersionClock.now += 1
    cell = tensor._version_cell
    cell[2] = cell[0]
    cell[0] = VersionClock.now
    cell[1] += 1


# -- hooks --------------------------------------------------------------------------------


def as_program_code(function, *args):
    """``function(*args)``, the program's own code called by a backward pass (a custom Function's backward, a hook),
    with ``__torch_function__`` asked as the program had it when the pass began: the pass's own formulas ask no
    subclass and no mode, as PyTorch's C++ ones, but a saved subclass tensor the program's backward multiplies is
    asked, and an autocast block (a mode, autocast_cpu.py) opened there casts, as PyTorch's. (Modes entered before
    the pass are off the stack there already: backward() went through them, each asked with itself popped.)"""
    outside = modes.torch_function_outside_pass
    inside = modes.torch_function
    if outside is None or outside is inside:  # (no pass running; or nothing to switch)
        return function(*args)
    modes.torch_function = outside
    try:
        return function(*args)
    finally:
        modes.torch_function = inside


def run_hooks(hooks, grad):
    """Call each hook of the registry ``hooks`` ({handle id: hook}, autograd.hooks) on the gradient
    in turn; a hook that returns a tensor replaces it. The user may keep what a hook was given, so
    it counts as shared from then on."""
    for hook in list(hooks.values()):
        grad._shared = True
        replaced = as_program_code(hook, grad)
        if replaced is not None:
            if getattr(grad, "shape", None) is not None:  # (a node's pre-hooks may see several gradients together)
                refuse_changed_gradient(hook, replaced, grad)
            grad = replaced
    return grad


def run_hooks_on_leaf_gradient(hooks, grad):
    """A leaf's tensor hooks on dL/dleaf. An embedding's sparse=True gradient is given to them in its sparse
    form, the one .grad will hold, as PyTorch's; a sparse result is carried on to accumulate_grad as such
    (on its dense form: the engine adds dense gradients); a dense one is refused, as PyTorch refuses it."""
    sparse = grad._sparse_gradient
    if sparse is None:
        return run_hooks(hooks, grad)
    for hook in list(hooks.values()):
        replaced = run_hooks({0: hook}, sparse)
        if not is_sparse(replaced):
            raise RuntimeError(f"hook '{_hook_name(hook)}' has changed the type of value (was a sparse COO gradient "
                               f"of shape {tuple(sparse.shape)}, got a dense {type(replaced).__name__}): return a "
                               "sparse tensor, or None")
        sparse = replaced
    if sparse is grad._sparse_gradient:
        return grad
    carrier = sparse.to_dense()
    carrier._sparse_gradient = sparse
    return carrier


def refuse_changed_gradient(hook, replaced, given):
    """PyTorch's refusals of a gradient a hook returned in place of the one it was ``given``: no tensor, or one of
    another type or size (a tensor hook's, a module's full backward hook's each)."""
    if not (hasattr(replaced, "grad_fn") or is_sparse(replaced)):  # (a tensor: graph.py is below tensor.py)
        raise TypeError(f"expected Variable, but hook returned '{type(replaced).__name__}'")  # (PyTorch's words)
    name = _hook_name(hook)
    if getattr(replaced, "dtype", given.dtype) != given.dtype:
        raise RuntimeError(f"hook '{name}' has changed the type of value (was {_type_name(given)} got "
                           f"{_type_name(replaced)})")
    if getattr(replaced, "shape", given.shape) != given.shape:
        raise RuntimeError(f"hook '{name}' has changed the size of value: it returned a gradient of shape "
                           f"{tuple(replaced.shape)} for one of shape {tuple(given.shape)}")


def _hook_name(hook):
    return getattr(hook, "__name__", type(hook).__name__)  # (a lambda's '<lambda>', a callable object's class)


def _type_name(gradient):
    """PyTorch's name of a gradient's tensor type (torch.FloatTensor), or its dtype where it has none."""
    return gradient.type() if hasattr(gradient, "type") else str(gradient.dtype)


# -- gradient storage -----------------------------------------------------------------------


def zero_grad(tensor, set_to_none=True):
    """PyTorch's zero_grad for one tensor: ``.grad = None``, or (``set_to_none=False``) its gradient
    zeroed in place, cut first from the graph a ``create_graph`` backward gave it (zeroing it in
    place would change that graph's values under it)."""
    if set_to_none:
        tensor.grad = None
    elif tensor.grad is not None:
        if tensor.grad.grad_fn is not None:
            tensor.grad.detach_()  # (the same tensor, cut from its graph, as PyTorch's)
        tensor.grad.requires_grad_(False)
        tensor.grad.zero_()


def accumulate_grad(tensor, grad):
    """``tensor.grad += grad``: the only place ``.grad`` is written by the engine.

    - the first gradient is stored as it is unless its buffer may be shared (a hook saw it,
      another tensor stores it, it is a view): then a copy is stored; and, as PyTorch's, laid out in
      memory as the tensor is where the tensor fills its memory densely (a channels_last weight's
      gradient is channels_last, so a step's in-place update walks both in the same order);
    - a later one is added in place (a write: its version moves on, as PyTorch's ``+=``), even into a .grad an
      earlier create_graph pass left with a graph, as PyTorch's; out of place where grad mode is on (a
      create_graph=True pass, as PyTorch's: .grad is then a new tensor, recorded) or the new gradient has a graph;
    - ``grad`` already has the tensor's dtype and shape (``validate_gradients``).
    """
    stored = tensor._grad  # (the checks of the .grad setter hold already: validate_gradients)
    if stored is None:
        if grad._sparse_gradient is not None:  # an embedding's sparse=True: .grad is the gradient's sparse form
            tensor._grad = grad._sparse_gradient
            return
        if grad._requires_grad:  # (a create_graph pass: the gradient is part of a graph)
            grad = _recorded_copy(grad, tensor._data)
        else:
            alike = _laid_out_alike(grad._data, tensor._data)
            if grad._shared or grad._data.base is not None or not alike:
                # a copy, as PyTorch's AccumulateGrad clones: in the tensor's strides where it is dense (row-major
                # otherwise), even a dim of one element's; but a view the engine made that keeps the layout contract
                # has its own strides, as PyTorch stores (steals) it: a channels-last kernel's (C, 1, C, C) for a
                # row-major (O, C, 1, 1) weight
                like = grad._data if alike and not grad._shared else tensor._data
                grad = type(grad)._make(_copied_as_laid_out(grad._data, like))  # (arrays the engine makes are
                # writeable)
        grad._shared = True
        tensor._grad = grad
    elif type(stored) is not type(grad) and stored.is_sparse:  # sparse so far: sparse again, or dense (PyTorch's)
        tensor._grad = _summed(stored, grad)
    elif grad._requires_grad or modes.grad_enabled:
        tensor._grad = stored + grad
        tensor._grad._shared = True
    else:
        add_into(stored._data, grad._data)
        bump_version(stored)


def retain_grad_into(tensor, grad):
    """A non-leaf's ``.grad`` after ``retain_grad()``, as PyTorch's retain-grad hook keeps it: the first gradient a
    row-major clone (recorded in a create_graph pass: CloneBackward0), each later one added out of place, so a
    ``.grad`` read after an earlier pass keeps its values (a leaf's is added to in place: accumulate_grad)."""
    stored = tensor._grad
    if stored is None:
        if grad._sparse_gradient is not None:
            tensor._grad = grad._sparse_gradient.clone()
            return
        from .constants import contiguous_format  # (constants is above this module)

        tensor._grad = grad.clone(memory_format=contiguous_format)
    else:
        tensor._grad = _summed(stored, grad)
    tensor._grad._shared = True


def _summed(stored, grad):
    """stored + grad, a new tensor: a sparse .grad plus a gradient with a sparse form stays sparse, plus a dense one
    is dense (dense + sparse, as PyTorch adds them)."""
    if grad._sparse_gradient is not None:
        return stored + grad._sparse_gradient
    return grad + stored if type(stored) is not type(grad) and stored.is_sparse else stored + grad


def _laid_out_alike(array, like):
    """Whether ``array`` steps through memory as ``like`` does (dims of one element aside); where ``like`` is not
    dense, whether ``array`` is row-major (PyTorch's layout for such a tensor's gradient)."""
    if array.flags.c_contiguous and like.flags.c_contiguous:  # (the common case, first: every step's parameters)
        return True
    if array.shape != like.shape:  # (a GradientEdge's stand-in: no tensor of the gradient's shape to follow)
        return True
    if not is_dense(like):
        return array.flags.c_contiguous
    return [s for s, n in zip(array.strides, array.shape) if n > 1] == [s for s, n in zip(like.strides, like.shape)
                                                                        if n > 1]


def _copied_as_laid_out(array, like):
    """A copy of ``array`` with ``like``'s strides where ``like`` is dense (row-major otherwise): PyTorch's
    new_empty_strided, which keeps even a size-1 dim's stride (a channels-last (O, C, 1, 1) weight's gradient
    reports (C, 1, C, C), as the weight does)."""
    if array.shape != like.shape or like.size == 0:
        return array.copy()
    if (like.flags.c_contiguous and 1 not in like.shape) or not is_dense(like):  # (the first: the common case,
        return array.copy()  # row-major with no dim of one element, whose strides a copy has, without the walk)
    copy = _empty_laid_out_as(like)
    copy[...] = array
    return copy


def _empty_laid_out_as(like):
    """An uninitialised array of ``like``'s shape, dtype and strides (PyTorch's new_empty_strided)."""
    return strided_view(xp.empty(like.size, like.dtype), like.shape, like.strides)


def _recorded_copy(grad, like):
    """A create_graph pass's first gradient of a leaf, as PyTorch's AccumulateGrad stores it with grad mode on: a
    copy, recorded (.grad's grad_fn is CopyBackwards, the gradient's own graph below it), laid out as the leaf where
    the leaf is dense (else a row-major clone). Never the pass's own tensor, which another leaf may be handed too."""
    if grad._data.shape != like.shape or not is_dense(like) or like.size == 0:
        from .constants import contiguous_format  # (constants is above this module)

        return grad.clone(memory_format=contiguous_format)
    return type(grad)._make(_empty_laid_out_as(like)).copy_(grad)


def add_into(total, share):
    """total += share, arrays, in place. inf - inf is NaN silently, as PyTorch's: where a warnings filter makes
    NumPy's warning an error, NumPy raises it once the sum is written, so the sum is done (backend.py)."""
    try:
        total += share
    except (RuntimeWarning, FloatingPointError):
        pass


def add_share(total, share, sums):
    """dL/dnode so far plus one more consumer's share, during a backward pass.

    A share is what some node returned and may be another node's share too (Add hands its
    gradient to both inputs unchanged), so the first sum is a new buffer; later shares are
    added into it in place (a weight used by 200 time steps costs one buffer, not 200). The
    pass keeps its own buffers in ``sums``. With create_graph a sum is an op of the graph,
    always out of place. (The scalar Value engine's shares are floats: plain sums.)
    """
    sparse = getattr(total, "_sparse_gradient", None)
    if sparse is not None:  # two sparse shares (an embedding looked up twice) sum to a sparse gradient
        sparse = None if share._sparse_gradient is None else share._sparse_gradient + sparse
    if total in sums and not getattr(share, "requires_grad", False):  # (a share with a graph keeps it)
        add_into(total._data, share._data)  # a buffer this pass made and nobody else has seen
        if sparse is not None or total._sparse_gradient is not None:  # (no store on a dense sum's own dict)
            total._sparse_gradient = sparse
        return total
    total = total + share
    if sparse is not None:
        total._sparse_gradient = sparse
    if getattr(total, "requires_grad", True) is False:
        sums.add(total)
    return total


# -- checks ---------------------------------------------------------------------------------


def validate_gradients(node, inputs, grads):
    """Each gradient an op returns, checked against its input (PyTorch's ``validate_outputs``):
    the count, the shape (a broadcast gradient is summed back; anything else is an error),
    the dtype (cast to the input's). (NaN, in anomaly mode: the engine's refuse_nan_gradients.)"""
    if len(grads) != len(inputs):
        if len(grads) > len(inputs) and all(g is None for g in grads[len(inputs):]):
            grads = grads[:len(inputs)]  # trailing Nones for optional inputs not given (a bias)
        else:
            raise RuntimeError(f"{node.op_name}Backward returned {len(grads)} gradients for {len(inputs)} inputs")
    checked = None
    for i, (x, g) in enumerate(zip(inputs, grads)):
        if g is None:
            continue
        array = g._data
        if array.shape != x.shape or array.dtype != x.dtype:
            if checked is None:
                checked = list(grads)
            checked[i] = g = _conform(node, i, x, g)
    return grads if checked is None else checked


def _conform(node, i, x, g):
    fitted = conformed(x, g)
    if fitted is None:
        raise RuntimeError(
            f"{node.op_name}Backward returned an invalid gradient at index {i}: got shape "
            f"{tuple(g.shape)} but expected shape compatible with {tuple(x.shape)}"
        )
    return fitted


def conformed(x, g):
    """The gradient ``g`` fitted to its input ``x``: a broadcast gradient summed back to x's shape,
    cast to x's dtype; None when g's shape cannot come from broadcasting x's (the caller says so)."""
    if g.shape != x.shape:
        try:
            broadcast = xp.broadcast_shapes(x.shape, g.shape) == tuple(g.shape)
        except ValueError:
            broadcast = False
        if not broadcast:
            return None
        from .ops.broadcasting import unbroadcast  # the ops build on this module

        g = unbroadcast(g, x)
    if g.dtype != x.dtype:
        if g.dtype.kind == "c" and x.dtype.kind != "c":
            g = g.real  # a real input of a complex computation: its gradient is the real part
        g = g.to(x.dtype)
    return g


# -- anomaly mode ----------------------------------------------------------------------------


# the library's own folders (autograd, and the nn and optim built beside it): a frame outside them is the program's
_LIBRARY = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), package) + os.sep
                 for package in ("autograd", "nn", "optim"))


def user_frame():
    """'file:line in function' of the innermost frame outside this library."""
    import traceback  # here, not at import: anomaly mode only

    for frame in reversed(traceback.extract_stack()[:-1]):
        if not frame.filename.startswith(_LIBRARY):
            return f"{frame.filename}:{frame.lineno} in {frame.name}\n    {frame.line}"
    return "<unknown>"


def remember_creation(node):
    """Anomaly mode's note on a node as its op is created: the user's line that made it and, for an op made by a
    backward (create_graph=True), the node whose backward made it (PyTorch's anomaly parent), so that an error in a
    second backward also says which forward call led to it."""
    node.where = user_frame()
    if modes.anomaly_parent is not None:
        node.anomaly_parent = modes.anomaly_parent


def program_stacklevel():
    """warnings.warn's stacklevel, from its caller's frame, of the first frame outside this library: the
    program's line (a function, a method and an in-place method reach an op through different wrappers)."""
    frame, level = sys._getframe(2), 2  # (level 1: the function that warns, whose caller is frame 2)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY):
        frame, level = frame.f_back, level + 1
    return level


def refuse_nan_gradients(node, grads):
    """Anomaly mode's check of the gradients a node computed, run by the engine when anomaly mode is on
    during the backward pass (as PyTorch's: where the op was created does not matter). NaN is refused, naming
    the node and, if the op was created in anomaly mode, the user's line that did (unless anomaly mode was
    entered with check_nan=False). An infinite gradient passes, as there: it is the right answer where the
    derivative is infinite (√x at 0), and so does anything in the forward pass (a mask of -inf is how
    attention is written)."""
    if not modes.anomaly_check_nan:
        return
    for index, grad in enumerate(grads):
        array = None if grad is None else grad._data
        if array is None or array.dtype.kind not in "fc" or not xp.isnan(array).any():
            continue
        where = node.where
        created = f"its op was created at {where}" if where is not None else \
            "its op was created outside anomaly mode, so where is not known"
        raise RuntimeError(f"Function '{node.name()}' returned nan values in its {index}th output "
                           f"(shape {tuple(array.shape)}). Anomaly mode: {created}")
