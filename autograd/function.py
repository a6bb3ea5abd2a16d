"""``Function``: a differentiable operation written by the user, with PyTorch's protocol.

    class Exp(autograd.Function):
        @staticmethod
        def forward(ctx, x):              # runs under no_grad: nothing in it is recorded
            y = x.exp()
            ctx.save_for_backward(y)      # what backward will need
            return y

        @staticmethod
        def backward(ctx, grad_y):        # dL/dy for each output  ->  dL/dx for each input
            y, = ctx.saved_tensors
            return grad_y * y

    y = Exp.apply(x)

``apply`` runs ``forward``, then gives the outputs one graph node, an instance
of ``ExpBackward``: that node is also the ``ctx`` forward and backward see. When
the engine reaches it, it calls the user's ``backward`` with dL/dy_j for every
output j and passes dL/dx_i on to every input i. ``backward`` runs with grad
mode on exactly when the pass has ``create_graph=True``, so a backward written
with Tensor operations can be differentiated again (``gradgradcheck``).

The other style, ``forward(*args)`` without ctx plus
``setup_context(ctx, inputs, output)``, is accepted too.

The project's own ops use the leaner ``Primitive`` (arrays in, array out).
"""

import contextlib
import functools
import inspect
import warnings

from . import dual, graph
from .backend import xp
from .errors import modified_in_place
from .grad_mode import is_grad_enabled, no_grad
from .graph import as_program_code, program_stacklevel
from .hooks import add_hook
from .primitive import FreedGraph, InputInfo, Primitive, _graph_node, run_node_hooks
from .saved_tensor_hooks import PackedTensor
from .saved_tensor_views import FREED_GRAPH
from .sparse_layout import is_sparse
from .tensor import Tensor


class FunctionCtx:
    """What ``forward`` leaves for ``backward``: saved tensors, flags, and any attribute set on it."""

    def save_for_backward(self, *tensors):
        """Keep ``tensors`` (or None) for backward; ``saved_tensors`` gives them back, checked
        against in-place changes made after forward returns (forward may change them itself)."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor) and not is_sparse(t):
                raise TypeError(f"save_for_backward can only save tensors (or None), but argument {i} "
                                f"is of type {type(t).__name__}")
        self._saved_versions = _versions(tensors)
        self._saved = tensors
        # saved_tensors_hooks: the pack hook sees each tensor once forward's outputs are connected (an
        # output saved is then one with this node as its grad_fn, so a recorded backward can go through
        # it), and only when the call is recorded, as PyTorch's
        self._pack_with = graph.modes.saved_tensor_hooks

    def save_for_forward(self, *tensors):
        """Keep ``tensors`` (or None) for ``jvp`` (forward mode), which reads them as ``saved_tensors``."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_forward expects all arguments to be tensors; you should save non-tensors "
                                f"as attributes on ctx (argument {i} is of type {type(t).__name__})")
        self._saved_for_forward = tensors

    @property
    def saved_tensors(self):
        if self.__dict__.get("_in_jvp"):
            return self.__dict__.get("_saved_for_forward", ())
        saved = self.__dict__.get("_saved", ())
        if saved is None:
            raise RuntimeError(FREED_GRAPH.format(op=type(self).__name__))
        for i, (t, version) in enumerate(zip(saved, self._saved_versions)):
            if t is not None and t._version_cell[0] != version[0]:
                raise _modified_after_saving(type(self).__name__, i, t, version[1])
        if any(type(t) is PackedTensor for t in saved):
            return tuple(t.unpacked() if type(t) is PackedTensor else t for t in saved)
        return saved

    def mark_dirty(self, *tensors):
        """Say that forward changed these inputs in place (and returns them)."""
        self._dirty = {id(t) for t in tensors}

    def mark_non_differentiable(self, *tensors):
        """These outputs get no gradient (indices, masks); backward still receives zeros for them."""
        self._non_differentiable = {id(t) for t in tensors}

    def set_materialize_grads(self, value):
        """True (the default): an output that received no gradient gets zeros in backward.
        False: backward receives None for it."""
        self._materialize_grads = bool(value)


class BackwardFunction(FunctionCtx):
    """The graph node of one ``Function.apply`` call (``FBackward`` for a Function ``F``).

    Engine interface (see autograd.engine): ``parents`` holds one entry per
    positional input of forward (None where no gradient flows), so the
    gradients backward returns line up with them one to one.
    """

    _forward_cls = None  # the Function this class is the backward of (set per subclass)
    frees = True  # (the engine's: release() has work)
    _inputs = ()
    _saved_versions = ()  # (nothing saved: saved_tensors is empty)
    _dirty = frozenset()
    _non_differentiable = frozenset()
    _materialize_grads = True
    _materialize_non_diff_grads = True  # (PyTorch's private switch: False gives backward None for those outputs)
    needs_input_grad = ()
    hooks = None  # as Primitive's: hooks and retain_grad of the output, node hooks, metadata
    pre_hooks = None
    post_hooks = None
    retained = None
    where = None
    receive = Primitive.receive
    run_hooks = Primitive.run_hooks
    register_hook, metadata = Primitive.register_hook, Primitive.metadata
    next_functions = Primitive.next_functions

    # ``op_name`` and ``inputs`` serve the graph drawings; a user's forward may set ctx attributes
    # ``name`` and ``inputs`` (PyTorch allows it), which then win

    @property
    def op_name(self):
        return self.__dict__.get("name", type(self).__name__)

    def name(self):
        """PyTorch's Node.name(): the Function's name and Backward (MyFunctionBackward)."""
        return type(self).__name__

    # Node hooks see the gradients of all the outputs, grad_outputs = (dL/dy_1, ...) with None where
    # none arrived (the node receives them together: _OutputGrads when there are several)

    def register_prehook(self, hook):
        """hook(grad_outputs) -> None or new grad_outputs, before backward runs (Node.register_prehook)."""
        if self.pre_hooks is None:
            self.pre_hooks = {}
        return add_hook(self.pre_hooks, _OnOutputGradients(hook))

    def run_post_hooks(self, grad_inputs, grad):
        """The hooks of Node.register_hook on (grad_inputs, grad_outputs); a returned tuple replaces
        grad_inputs."""
        return run_node_hooks(self, grad_inputs, tuple(grad.grads) if isinstance(grad, _OutputGrads) else (grad,))

    @property
    def inputs(self):
        """The Tensor inputs of forward (None once a backward pass freed the graph)."""
        if "_user_inputs" in self.__dict__:
            return self._user_inputs
        if self._inputs is None:
            return None
        return [x for x in self._inputs if isinstance(x, Tensor)]

    @inputs.setter
    def inputs(self, value):
        self._user_inputs = value

    def __repr__(self):
        return f"<{type(self).__name__}>"

    def _connect(self, args, output):
        """Make forward's ``output`` (a tensor or a tuple) the outputs of this node."""
        single = not isinstance(output, tuple)
        outputs = [output] if single else list(output)
        input_ids = {id(x) for x in args if isinstance(x, Tensor)}
        if not self._dirty <= {id(y) for y in outputs}:  # PyTorch's check, in any grad mode
            raise RuntimeError("Some elements marked as dirty during the forward method were not returned as output. "
                               "The inputs that are modified inplace must all be outputs of the Function.")
        recording = is_grad_enabled() and any(self.needs_input_grad)
        returned_inputs = set()
        for j, y in enumerate(outputs):
            if isinstance(y, Tensor) and id(y) in input_ids and (id(y) not in self._dirty
                                                                  or (not recording and y.requires_grad)):
                # an input returned unchanged, or changed in place while nothing is recorded (no_grad): a new
                # tensor on the same memory, so the output does not carry the input's history
                outputs[j] = _alias(y)
                returned_inputs.add(j)
        for x in args:
            if isinstance(x, Tensor) and id(x) in self._dirty:
                # forward may have written it in ways no version counter saw (x.data, NumPy): what an
                # earlier op saved of it is stale now, whatever forward did (PyTorch bumps it too)
                graph.bump_version(x)
        saved = self.__dict__.get("_saved")
        if saved:  # what forward saved is checked against changes made after it returns (as PyTorch's,
            # which saves at that point): forward's own in-place work on a tensor it saves is no change
            self._saved_versions = _versions(saved)
        if recording:
            self._record(args, outputs, returned_inputs)
        return outputs[0] if single else tuple(outputs)

    def _record(self, args, outputs, returned_inputs=()):
        self._inputs = args
        self.parents = [_graph_node(x) if needed else None for x, needed in zip(args, self.needs_input_grad)]
        # (what backward gets for an output no gradient reached: zeros of this shape and dtype, or None)
        self._output_meta = [(y.shape, y.dtype) if isinstance(y, Tensor) and (
            self._materialize_non_diff_grads or id(y) not in self._non_differentiable) else None for y in outputs]
        for y in outputs:
            if isinstance(y, Tensor) and id(y) in self._dirty:
                base = y._base
                if y.is_leaf and y.requires_grad:
                    raise RuntimeError(
                        f"a leaf Variable that requires grad (shape {tuple(y.shape)}) is being used in an "
                        f"in-place operation: {self._forward_cls.__name__}.forward marked it dirty"
                    )
                if base is not None and base.is_leaf and base.requires_grad:
                    raise RuntimeError(
                        f"a view of a leaf Variable that requires grad is being used in an in-place operation: "
                        f"{self._forward_cls.__name__}.forward marked dirty a view of shape {tuple(y.shape)} of a "
                        f"leaf of shape {tuple(base.shape)}"
                    )
                if base is not None and sum(isinstance(t, Tensor) for t in outputs) > 1:
                    # (the view's base would have to take the history of one output among several)
                    raise RuntimeError(
                        "If your Function modifies inplace an input that is a view of another Tensor, your Function "
                        "cannot return more than one Tensor. This is not supported by the current autograd engine. "
                        "You should either make sure the input is not a view (using .clone() for example) or make "
                        "your Function only return one Tensor (potentially splitting it into two Functions: one "
                        "doing the inplace that returns a single Tensor and a second one that does the other "
                        "operations)."
                    )
        differentiable = [j for j, y in enumerate(outputs) if isinstance(y, Tensor)
                          and y.dtype.kind in "fc" and id(y) not in self._non_differentiable]
        input_arrays = {id(x._version_cell): x._data for x in args if isinstance(x, Tensor)}
        several = len(differentiable) > 1
        for j in differentiable:
            y = outputs[j]
            y._requires_grad = True
            y.grad_fn = self if len(outputs) == 1 else _OutputSlot(self, j, len(outputs))
            shown = input_arrays.get(id(y._version_cell))  # (the memory of the input y shares a version with)
            if j in returned_inputs or (shown is not None and y._data is not shown and id(y) not in self._dirty):
                # an input returned as it is, or a view of one (not its detach(), the same array: PyTorch's is no
                # view): PyTorch's view made in a custom Function, whose in-place writes it refuses
                y._made_by_function, y._made_in_no_grad = (j, self._forward_cls.__name__, several), False
            if id(y) in self._dirty and y._base is not None:
                # forward wrote a view in place: its base's history takes the write, as an in-place op's does
                # (PyTorch's CopySlices), or a gradient through the base would miss this Function
                written = _alias(y)
                written._requires_grad, written.grad_fn = True, y.grad_fn
                y._rebase_view(written)
        if graph.is_anomaly_enabled():
            graph.remember_creation(self)
        hooks = self.__dict__.pop("_pack_with", None)
        if hooks is not None and self.__dict__.get("_saved"):
            with no_grad():  # (the pack hook runs without recording, as in PyTorch)
                self._saved = tuple(None if t is None else PackedTensor(t, hooks) for t in self._saved)

    # -- the engine's interface ----------------------------------------------------------------

    def chain(self, grad, wanted=None):
        if self._inputs is None and "_input_infos" not in self.__dict__:
            raise RuntimeError(FREED_GRAPH.format(op=type(self).__name__))
        grads = list(grad.grads) if isinstance(grad, _OutputGrads) else [grad]
        if self._materialize_grads:
            grads = [Tensor._make(xp.zeros(meta[0], dtype=meta[1])) if g is None and meta is not None else g
                     for g, meta in zip(grads, self._output_meta)]
        forward_cls = self._forward_cls
        user_backward = forward_cls.backward
        if forward_cls.vjp is not Function.vjp:
            if user_backward is not Function.backward:
                raise RuntimeError("Implementing both 'backward' and 'vjp' for a custom Function is not "
                                   "allowed. You should only implement one of them.")
            user_backward = forward_cls.vjp
        return self._checked(as_program_code(user_backward, self, *grads))

    def _checked(self, result):
        """PyTorch's rules for what backward returns: one gradient per forward input, None for
        non-tensor inputs, each of its input's shape (or broadcastable to it) and dtype."""
        grads = result if isinstance(result, tuple) else (result,)
        name = type(self).__name__
        inputs = self._inputs if self._inputs is not None else self._input_infos  # (after release: their InputInfo)
        if len(grads) > len(inputs) and all(g is None for g in grads[len(inputs):]):
            grads = grads[:len(inputs)]  # extra trailing Nones are allowed, as in PyTorch
        if len(grads) != len(inputs):
            raise RuntimeError(f"function {name} returned an incorrect number of gradients "
                               f"(expected {len(inputs)}, got {len(grads)})")
        checked = []
        for i, (g, x, needed) in enumerate(zip(grads, inputs, self.needs_input_grad)):
            if not isinstance(x, (Tensor, InputInfo)):
                if g is not None:
                    raise RuntimeError(f"function {name} returned a gradient different than None at "
                                       f"position {i + 1}, but the corresponding forward input was not a "
                                       f"Variable (it is a {type(x).__name__})")
                checked.append(None)
                continue
            if g is None or not needed:
                checked.append(None)
                continue
            if not isinstance(g, Tensor):  # (a RuntimeError, as PyTorch's "expected Variable or None")
                raise RuntimeError(f"function {name} returned a gradient of type {type(g).__name__} at "
                                   f"index {i}; expected a Tensor or None")
            fitted = graph.conformed(x, g)
            if fitted is None:
                raise RuntimeError(f"Function {name} returned an invalid gradient at index {i} - "
                                   f"got {list(g.shape)} but expected shape compatible with "
                                   f"{list(x.shape)}")
            g = fitted
            checked.append(g)
        return checked

    def release(self):
        """Free what forward saved; walking the node again then says the graph was freed. A Function that saved
        nothing keeps only its inputs' shapes and dtypes (to check what backward returns) and its place in the
        graph, so a second backward through it works, as PyTorch's."""
        if not self.__dict__.get("_saved") and self._inputs is not None:
            self._input_infos = tuple(InputInfo(x) if isinstance(x, Tensor) else x for x in self._inputs)
            self._inputs = None
            return
        self._inputs = None
        if self.__dict__.get("_saved"):
            self._saved = None
        self.released_parents, self.parents = self.parents, FreedGraph.of(type(self))


def _alias(x):
    """A new tensor on x's memory and version counter (what PyTorch's view_as(x) gives)."""
    y = Tensor._make(x._data)
    y._version_cell = x._version_cell
    return y


class _OnOutputGradients:
    """A Function node's pre-hook, hook(grad_outputs) -> new grad_outputs, on what the node receives:
    one gradient, or those of its several outputs together (_OutputGrads)."""

    def __init__(self, hook):
        self.hook = hook

    def __call__(self, grad):
        several = isinstance(grad, _OutputGrads)
        replaced = self.hook(tuple(grad.grads) if several else (grad,))
        if replaced is None:
            return None
        return _OutputGrads(list(replaced)) if several else replaced[0]


class _OutputGrads:
    """dL/doutput_j for every output of one Function call, None where none has arrived yet.
    The engine sums the shares a node receives; summing these fills the slots."""

    def __init__(self, grads):
        self.grads = grads

    def __add__(self, other):
        return _OutputGrads([a if b is None else b if a is None else a + b
                             for a, b in zip(self.grads, other.grads)])


def _versions(tensors):
    """Each saved tensor's clock time, which a later write moves on (compared at backward), and its version,
    PyTorch's count of its writes (named when it differs); None for a None."""
    return tuple(None if t is None else (t._version_cell[0], t._version_cell[1]) for t in tensors)


def _modified_after_saving(function, position, tensor, version):
    """PyTorch's error for a saved tensor changed in place since (errors.modified_in_place), then what happened."""
    return modified_in_place(
        tensor.dtype, tensor.shape, tensor.grad_fn, tensor._version_cell[1], version,
        f"({function} saved it with save_for_backward, argument {position}, and it was changed in place after it "
        "was saved, so its gradient would be wrong. Use an out-of-place operation (x = x + 1, not x += 1) or "
        "clone() it first.)")


class _OutputSlot:
    """The grad_fn of output j of a Function with several outputs. It passes dL/doutput_j
    to the shared node in slot j, so that node's backward runs once with all of them."""

    hooks = None
    pre_hooks = None
    post_hooks = None
    retained = None
    where = None
    receive = Primitive.receive
    run_hooks = Primitive.run_hooks

    def __init__(self, node, index, count):
        self.node, self.index, self.count = node, index, count
        self.parents = [node]

    @property
    def output_nr(self):  # (Tensor.output_nr: which output of the node)
        return self.index

    @property
    def op_name(self):
        return self.node.op_name

    def name(self):
        return self.node.name()

    # the node's own hooks and metadata are the shared node's (PyTorch has one node for all the outputs)

    def register_hook(self, hook):
        return self.node.register_hook(hook)

    def register_prehook(self, hook):
        return self.node.register_prehook(hook)

    @property
    def metadata(self):
        return self.node.metadata

    @property
    def inputs(self):
        return self.node.inputs

    def __repr__(self):
        return f"<{type(self.node).__name__}>"

    @property
    def next_functions(self):
        return self.node.next_functions  # (PyTorch has one node for all the outputs)

    def __getattr__(self, name):
        """What the shared node has (the ctx: saved_tensors, needs_input_grad, what forward set on it)."""
        if name == "node":  # (not set yet: a copy being made)
            raise AttributeError(name)
        return getattr(self.node, name)

    _OWN = frozenset({"node", "index", "count", "parents", "hooks", "pre_hooks", "post_hooks", "retained", "where"})

    def __setattr__(self, name, value):
        """What a program sets on ``y.grad_fn`` is set on the shared node, so backward finds it on its ctx (as
        PyTorch's, whose grad_fn is the ctx); the slot keeps only what is its own output's (its hooks)."""
        if name in _OutputSlot._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.node, name, value)

    def chain(self, grad, wanted=None):
        grads = [None] * self.count
        grads[self.index] = grad
        return (_OutputGrads(grads),)

    frees = False  # (the engine's: release() has no work)

    def release(self):
        pass  # the shared node frees what was saved; walking it again says so


class Function:
    """Base class of custom differentiable operations: subclass it with static ``forward``
    and ``backward`` and call ``YourFunction.apply(...)`` (see this module's docstring)."""

    _backward_cls = BackwardFunction

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # the node class carries the Function's docstring: the step-through trace shows its maths
        cls._backward_cls = type(f"{cls.__name__}Backward", (BackwardFunction,),
                                 {"_forward_cls": cls, "__doc__": cls.__doc__})

    def __init__(self, *args, **kwargs):
        warnings.warn(f"{type(self)} should not be instantiated. Methods on autograd functions are all static, so "
                      "you should invoke them on the class itself. Instantiating an autograd function will raise "
                      "an error in a future version of PyTorch.", DeprecationWarning, stacklevel=program_stacklevel())

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            "Legacy autograd function with non-static forward method is deprecated. Please use new-style "
            "autograd function with static forward method: class F(Function) with @staticmethod forward(ctx, "
            "...) and backward(ctx, ...), called as F.apply(...)"
        )

    @staticmethod
    def forward(*args, **kwargs):
        raise NotImplementedError("You must implement the forward function for custom autograd.Function.")

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError("setup_context is not implemented.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("You must implement either the backward or vjp method for your custom "
                                  "autograd.Function to use it with backward mode AD.")

    vjp = backward

    # vmap: ``autograd.func.vmap`` calls forward once per example, which is what PyTorch's
    # generate_vmap_rule=True gives, so a Function works under vmap as it is; a ``vmap`` staticmethod
    # (PyTorch's batched rule) is not needed here and not called
    generate_vmap_rule = False

    @staticmethod
    def vmap(info, in_dims, *args):
        raise NotImplementedError("To use autograd.Function with vmap, you must either override the vmap "
                                  "staticmethod or set generate_vmap_rule=True.")

    @staticmethod
    def jvp(ctx, *grad_inputs):
        """Forward-mode derivative (PyTorch's): the outputs' tangents from the inputs'
        (``autograd.autograd.forward_ad``; ``ctx.saved_tensors`` gives what forward kept with
        ``ctx.save_for_forward``). Not written: refused."""
        raise NotImplementedError("You must implement the jvp function for custom autograd.Function to use it "
                                  "with forward mode AD.")

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run forward on ``args`` without recording it and connect the outputs to a new node."""
        separate_setup = cls.setup_context is not Function.setup_context
        if separate_setup:  # forward(*args) has no ctx; setup_context sees every argument, defaults bound
            bound = inspect.signature(cls.forward).bind(*args, **kwargs)
            bound.apply_defaults()
            args, kwargs = bound.args, {}
        ctx = cls._backward_cls()
        ctx.needs_input_grad = tuple(isinstance(x, Tensor) and x.requires_grad for x in args)
        # forward mode: the inputs' tangents are read first, and forward runs without carrying them (its jvp gives
        # the outputs' tangents; an in-place op in forward would otherwise move a tangent twice), as PyTorch's
        tangents = None if dual.LEVEL is None else [dual.tangent_of(x) if isinstance(x, Tensor) else None
                                                    for x in args]
        with no_grad(), (contextlib.nullcontext() if tangents is None else dual.paused()):
            if separate_setup:
                output = cls.forward(*args)
                cls.setup_context(ctx, args, output)
            else:
                output = cls.forward(ctx, *args, **kwargs)
        result = ctx._connect(args, output)
        if tangents is not None and any(t is not None for t in tangents):
            cls._carry_tangents(ctx, args, tangents, output, result)
        return result

    @classmethod
    def _carry_tangents(cls, ctx, args, tangents, output, result):
        """Forward mode through the Function: its ``jvp(ctx, *input_tangents)`` gives the outputs' tangents
        (zeros for a floating tensor input without one, None for an integer one or an argument that is no tensor),
        as PyTorch's."""
        if cls.jvp is Function.jvp:
            cls.jvp(ctx)  # (raises PyTorch's NotImplementedError: no forward-mode rule to use)
        tangents = [x.detach() * 0 if t is None and isinstance(x, Tensor) and x.dtype.kind in "fc" else t
                    for x, t in zip(args, tangents)]
        ctx._in_jvp = True
        try:
            with no_grad(), dual.paused():  # (jvp's own arithmetic carries no tangents)
                outputs_tangents = cls.jvp(ctx, *tangents)
        finally:
            ctx._in_jvp = False
        outputs = result if isinstance(result, tuple) else (result,)
        outputs_tangents = outputs_tangents if isinstance(outputs_tangents, tuple) else (outputs_tangents,)
        if len(outputs_tangents) != len(outputs):
            raise RuntimeError(f"{cls.__name__}.jvp returned {len(outputs_tangents)} tangents for {len(outputs)} "
                               "outputs: it must return one per output of forward")
        returned = output if isinstance(output, tuple) else (output,)
        for i, (y, t) in enumerate(zip(outputs, outputs_tangents)):
            if t is not None and i < len(returned) and id(returned[i]) in ctx._non_differentiable:
                raise RuntimeError(f"{cls.__name__}.jvp returned a tangent for output {i}, which forward marked "
                                   "non-differentiable. You should return None at that position instead.")
            if isinstance(y, Tensor) and isinstance(t, Tensor):
                if t.shape != y.shape:
                    raise RuntimeError(f"{cls.__name__}.jvp returned a tangent of shape {tuple(t.shape)} for an "
                                       f"output of shape {tuple(y.shape)}")
                dual.set_tangent(y, t)


ONCE_DIFFERENTIABLE = "trying to differentiate twice a function that was marked with @once_differentiable"


class _DelayedError(Function):
    """Stands between a @once_differentiable backward's results and its inputs: differentiating
    through it raises."""

    @staticmethod
    def forward(ctx, message, count, *grads_then_sources):
        ctx.message = message
        # the results, as new tensors; the sources (the incoming gradients) only link the node
        # into the graph, so that differentiating a result reaches it and raises
        return tuple(g.detach() * 1 if isinstance(g, Tensor) else g for g in grads_then_sources[:count])

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(ctx.message)


def once_differentiable(backward):
    """Decorate a ``backward`` that cannot be differentiated again (written with NumPy, say):
    it runs under no_grad, and differentiating its result raises a clear error."""

    @functools.wraps(backward)
    def wrapper(ctx, *args):
        with no_grad():
            outputs = backward(ctx, *args)
        if not is_grad_enabled() or not any(isinstance(a, Tensor) and a.requires_grad for a in args):
            return outputs
        single = not isinstance(outputs, tuple)
        outputs = (outputs,) if single else outputs
        sources = [a for a in args if isinstance(a, Tensor) and a.requires_grad]
        wrapped = _DelayedError.apply(ONCE_DIFFERENTIABLE, len(outputs), *outputs, *sources)
        return wrapped[0] if single else wrapped

    return wrapper
