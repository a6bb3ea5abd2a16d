"""``Primitive``: one differentiable operation of the Tensor graph.

Each op is a subclass that defines its forward and its backward side by side:

    class Exp(Primitive):
        '''y = e^x;   dL/dx = dL/dy · y'''
        def forward(self, x):              # arrays in, array out
            return xp.exp(x)
        saves_output = True                # backward uses y, so the node keeps it
        def backward(self, grad, y, x):    # Tensors: dL/dy, the output (None unless
            return (grad * y,)             # saved), the inputs; returns dL/dx_i each

``backward`` is written with Tensor operations. In an ordinary backward pass
it runs under ``no_grad`` and costs what the array maths costs; with
``create_graph=True`` the same code is recorded, so the gradient has a graph
of its own and can be differentiated again.

``Primitive.apply`` runs the forward and, when any input requires grad,
records the instance as the output's ``grad_fn``: the node the engine visits.
Every subclass lands in ``REGISTRY``, which the tests walk.

What a node keeps is declared by its op: the output when ``saves_output``, the
inputs when ``saves_inputs`` (the default; an op whose backward needs only the
inputs' shapes and dtypes sets it False, so an add chain keeps no intermediate
arrays alive). Only what is kept is checked for in-place changes at backward, and of
the inputs only those a gradient to be computed reads (``saved_input_readers``: a
product's factor is read only for the other factor's gradient, as PyTorch saves it).
After a backward pass a node frees what it saved (its inputs, its output, tensors among
its parameters, ``saves_arguments``); a node that saved none of them can run again.
"""

import functools
import weakref

from . import dual
from .backend import errstate, on_host
from .device import served
from .errors import ShapeError, broadcast_mismatch, modified_in_place, op_word, refuse_non_tensors
from .graph import (
    INFERENCE,
    VersionClock,
    as_program_code,
    modes,
    remember_creation,
    retain_grad_into,
    run_hooks,
    validate_gradients,
)
from .hooks import add_hook
from .saved_tensor_hooks import PackedTensor
from .saved_tensor_views import FREED_GRAPH, SavedTensorViews
from .tensor import Tensor

REGISTRY = {}

class InputInfo:
    """What a node remembers of an input it does not save: enough to shape its gradient."""

    __slots__ = ("shape", "dtype", "requires_grad")

    def __init__(self, x, requires_grad=None):
        if type(x) is Tensor:  # the hot case, without the property calls
            self.shape, self.dtype = x._data.shape, x._data.dtype
            flag = x._requires_grad
        else:
            self.shape, self.dtype, flag = x.shape, x.dtype, x.requires_grad
        self.requires_grad = flag if requires_grad is None else requires_grad

    @property
    def ndim(self):
        return len(self.shape)


def _as_constant(x):
    """x detached, a value that needs no gradient, but with its tangent in an open dual level: the gradients of
    the wanted inputs are functions of it (forward-over-reverse, as PyTorch's)."""
    constant = x.detach()
    tangent = dual.tangent_of(x)
    if tangent is not None:
        dual.set_tangent(constant, tangent)
    return constant


def no_tensor():
    """A watched entry's stand-in for the tensor whose node an in-place error names (Primitive.watch_output keeps a
    weak reference), where none made it: class indices, weights that require no grad."""
    return None


class Primitive(SavedTensorViews):
    is_view = False  # the output shares memory with the first input (reshape, slicing)
    saves_output = False  # backward uses the output y (exp, tanh, softmax): keep it
    saves_inputs = True  # backward uses the inputs' values (mul, matmul); False: shapes only
    saves_arguments = False  # backward uses a tensor among its parameters (an index, a mask, a scalar operand)
    # for each input, the inputs whose gradients read its saved values (a product's factor: only the other
    # factor's, (1,) and (0,)); None: any gradient may read any input. An input changed in place after the
    # forward is refused only where a gradient to be computed reads it, as PyTorch saves only those.
    saved_input_readers = None
    frees = True  # release() has something to free: any of the three above, or its own release (set per subclass)
    hooks = None  # hooks on the output tensor, run on dL/dy
    pre_hooks = None  # hooks on the node (register_prehook), run on dL/dy after the tensor's and retain_grad
    post_hooks = None  # hooks on the node, run on (dL/dx_i, dL/dy) once it has run (register_hook)
    retained = None  # weak reference to the output tensor when it retains .grad
    where = None  # where the user created this op (anomaly mode only)
    output_data = output_version = None  # the output's array and version, when saves_output
    watched_outputs = None  # (version cell, shape, dtype) of other outputs of the call that PyTorch's node saves:
    # watch_output
    handles_complex = False  # its backward is right for complex tensors too (see complex_gradients.py)
    pytorch_name = None  # PyTorch's Node.name() where it is not op_name + "Backward0" (a class's, or a caller's)
    number_operand = False  # the op's other operand is a number (x + 1, x * 0.5): next_functions lists it as None
    # forward mode reads an op's tangent from its backward (dual.py); an op whose PyTorch forward rule differs
    # from that (at ties, at NaNs) defines jvp(self, tangents, y, *inputs) -> ẏ, written with Tensor ops
    jvp = None
    core_dims = 0  # the trailing dims of each input that are no batch dims (a matrix product's two): broadcast errors
    # how many instrumentations have replaced apply (a dual level carrying tangents, a profiler timing ops): the
    # backward's own ops then go through apply too (apply_in_backward); each counts itself in and out
    apply_replaced = 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.__name__] = cls
        cls.freed_parents = FreedGraph.of(cls)  # what release() leaves in place of the parents
        # (read by the engine, which calls release() only where it has work: an add or a sum saves nothing)
        cls.frees = bool(cls.saves_inputs or cls.saves_output or cls.saves_arguments) or cls.release is not \
            Primitive.release
        cls.bare = object.__new__(cls)  # a node with no parameters: runs the forward of a backward's own op

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad, output, *inputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on Tensors; record it when grad mode is on and some input requires grad."""
        node = object.__new__(cls)
        if params:
            node.__dict__ = params  # (a fresh dict made for this call: the node's own)
        try:
            if (arity := len(inputs)) == 1:  # the common arities spelled out: this is the hot path
                data = node.forward(inputs[0]._data)
            elif arity == 2:
                data = node.forward(inputs[0]._data, inputs[1]._data)
            else:
                data = node.forward(*[x._data for x in inputs])
        except ValueError as error:  # NumPy's shape errors, said at the user's call
            shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
            # inputs that do not broadcast: PyTorch's sentence, naming the sizes and the dim, for NumPy's
            mismatch = "broadcast" in str(error) and broadcast_mismatch(
                *(tuple(x.shape)[:max(x.ndim - cls.core_dims, 0)] for x in inputs))
            raise ShapeError(f"{cls.__name__} of shapes {shapes}: {mismatch or error}") from None
        except TypeError:  # CuPy's, for an array in host memory: a tensor moved to the CPU
            if any(on_host(x._data) for x in inputs):
                raise _devices_differ(cls) from None
            raise
        except AttributeError:  # an input without ._data: a NumPy array or a number given where a Tensor goes
            refuse_non_tensors(cls.__name__, inputs, Tensor)
            raise
        except (RuntimeWarning, FloatingPointError):
            # a warnings filter or np.seterr made NumPy's "divide by zero" an error, where PyTorch's inf and NaN come
            # silently: computed again without it (a forward makes new arrays, so running it again is safe)
            with errstate(all="ignore"):
                data = node.forward(*[x._data for x in inputs])
        out = Tensor._make(data)
        if node.is_view:
            out._adopt_view_of(inputs[0], cls, params)
        recording = modes.grad_enabled
        if recording and ((kind := data.dtype.kind) == "f" or kind == "c"):
            for x in inputs:
                if x._requires_grad:  # record: keep what backward needs, link the parents
                    if not node.handles_complex and (kind == "c" or x._data.dtype.kind == "c"):
                        raise _no_complex_gradient(cls, inputs)
                    # parents: each input's grad_fn, the leaf itself, or None (as _graph_node). An op
                    # that needs no input values keeps its inputs only as shapes (their arrays can go),
                    # but for the leaves that require grad: the user's own, alive anyway. (Loops, not
                    # comprehensions: this runs for every recorded op.)
                    parents = []
                    kept = None if node.saves_inputs else []
                    for input in inputs:
                        made_by = input.grad_fn
                        if made_by is None:
                            parents.append(input if input._requires_grad else None)
                            if kept is not None:
                                kept.append(input if input._requires_grad else InputInfo(input))
                            elif input._inference:
                                raise _inference_saved(cls, input)
                        else:
                            parents.append(made_by)
                            if kept is not None:
                                kept.append(InputInfo(input))
                    node.inputs = inputs if kept is None else tuple(kept)
                    node.parents = parents
                    node.created = VersionClock.now
                    if node.saves_output:
                        node.output_data = data
                        node.output_version = out._version_cell
                    out._requires_grad = True
                    out.grad_fn = node
                    if modes.saved_tensor_hooks is not None:
                        node._pack(out)
                    if modes.anomaly:
                        node._remember_where()
                    break
        elif recording is INFERENCE:  # made in inference_mode: an inference tensor (a view of a normal one stays so)
            out._inference = not node.is_view or inputs[0]._inference
        return out

    @classmethod
    def apply_in_backward(cls, *inputs, **params):
        """apply, for a derivative formula inside a backward (dL/dx = dL/dy · y is Mul again). Under
        create_graph it is apply: recorded, a node a second derivative goes through; so it is while apply is
        replaced (a dual level's tangents, forward-over-reverse; a profiler's timing). A pass that records
        nothing needs no node for it, only the forward on the arrays: one node per step of the user's
        graph, not two (the hot path of every backward). For ops whose forward keeps nothing on the node."""
        if modes.grad_enabled or cls.apply_replaced:  # (a dual level's tangents, a profiler's timing)
            return cls.apply(*inputs, **params)
        node = cls.bare
        if params:
            node = object.__new__(cls)
            node.__dict__ = params
        if (arity := len(inputs)) == 2:  # (the common arities spelled out)
            return Tensor._make(node.forward(inputs[0]._data, inputs[1]._data))
        if arity == 1:
            return Tensor._make(node.forward(inputs[0]._data))
        return Tensor._make(node.forward(*[x._data for x in inputs]))

    packed = False  # what it saved went through saved_tensors_hooks: unpacked at backward

    def _pack(self, out):
        """Pass what this node saves through the saved-tensor hooks (saved_tensor_hooks.saved_tensors_hooks)."""
        hooks = modes.saved_tensor_hooks
        if self.saves_inputs:  # the inputs a gradient reads, as PyTorch packs only what it saved
            inputs = self.inputs
            self.inputs = tuple(PackedTensor(x, hooks) if self._read_by_a_gradient(position, inputs) else x
                                for position, x in enumerate(inputs))
        if self.saves_output:
            self.output_data = PackedTensor(out, hooks)
            self.output_version = self.output_data._version_cell  # (the version of what the hooks keep)
        self.packed = self.saves_inputs or self.saves_output

    def watch_output(self, tensor):
        """Count ``tensor``, another output of the user's call (max pooling's indices) or an index it read
        (index_watching.py), or an input a composite's nodes do not keep (named_node's saves), as saved by this node,
        as PyTorch's node saves it: writing it in place after the forward then refuses the backward, as for y."""
        self.watched_outputs = (self.watched_outputs or ()) + ((tensor._version_cell, tuple(tensor.shape),
                                                                 tensor._data.dtype, weakref.ref(tensor)),)

    def _unpacked(self):
        """The saved inputs and output (an array), through the unpack hook."""
        inputs = tuple(x.unpacked() if type(x) is PackedTensor else x for x in self.inputs)
        output = self.output_data if self.saves_output else None  # (hooks may be on some saved tensors only)
        return inputs, output.unpacked()._data if type(output) is PackedTensor else output

    def _remember_where(self):
        """Anomaly mode: the user's line that created this op (said if its backward gives NaN)."""
        remember_creation(self)

    @property
    def op_name(self):
        """The op's name as the graph drawings and the messages say it: Mul, Exp, ..."""
        return type(self).__name__

    def name(self):
        """PyTorch's Node.name(): MulBackward0 (PyTorch numbers its built-in nodes by overload: the
        first is 0). An op made by several PyTorch functions (a reshape is a view, an unsqueeze, a
        squeeze) is named by the function that made it: ``pytorch_name``, given by the caller or
        worked out by the class."""
        return self.pytorch_name or f"{self.op_name}Backward0"

    def __repr__(self):  # (PyTorch's shows the class: CopyBackwards for the node named torch::autograd::CopyBackwards)
        return f"<{self.name().rpartition('::')[2]}>"

    def __call__(self, *grad_outputs):
        """``y.grad_fn(dL/dy)``: this node's backward alone, as PyTorch's Node call: dL/dinput for its one
        input, or a tuple of them (None for an input that needs none)."""
        if len(grad_outputs) != 1:
            raise TypeError(f"{self.name()}: expected 1 arguments, got {len(grad_outputs)} instead")
        grads = self.chain(grad_outputs[0])
        return grads[0] if len(grads) == 1 else tuple(grads)

    @property
    def metadata(self):
        """A dict the user may fill (PyTorch's Node.metadata): kept with the node, unused here."""
        return self.__dict__.setdefault("_metadata", {})

    def register_prehook(self, hook):
        """hook(grad_outputs) -> None or new grad_outputs, before the node runs (PyTorch's
        Node.register_prehook; grad_outputs is the tuple (dL/dy,)). Returns a removable handle."""
        if self.pre_hooks is None:
            self.pre_hooks = {}
        return add_hook(self.pre_hooks, _OnOneGradient(hook))

    def register_hook(self, hook):
        """hook(grad_inputs, grad_outputs) -> None or new grad_inputs, after the node has run
        (PyTorch's Node.register_hook): dL/dx_i for each input (None where none is sent) and
        (dL/dy,). Returns a removable handle."""
        if self.post_hooks is None:
            self.post_hooks = {}
        return add_hook(self.post_hooks, hook)

    def run_post_hooks(self, grad_inputs, grad_output):
        """The node hooks on what it computed; a hook's returned tuple replaces grad_inputs. A number operand is
        an input of PyTorch's node, as next_functions shows: its gradient is None there."""
        if self.number_operand:
            return run_node_hooks(self, tuple(grad_inputs) + (None,), (grad_output,))[:-1]
        return run_node_hooks(self, grad_inputs, (grad_output,))

    @property
    def next_functions(self):
        """(node, 0) for each input, as PyTorch's: its grad_fn, the ``AccumulateGrad`` of a leaf that
        requires grad, or None. Still there after a backward pass has freed what the node saved."""
        return next_functions(self)

    # -- the engine's interface (see autograd.engine) -------------------------------

    # parents, set by _record: for each input its grad_fn, the leaf itself, or None
    # where no gradient is needed. Freeing the graph replaces them by FreedGraph.

    def receive(self, grad):
        """The output's hooks, then its retained ``.grad`` (PyTorch's retain_grad is a hook too,
        so ``autograd.grad`` fills it as well), then the node's pre-hooks: PyTorch's order."""
        if self.hooks:
            grad = run_hooks(self.hooks, grad)
        if self.retained is not None:
            tensor = self.retained()
            if tensor is not None:
                retain_grad_into(tensor, grad)
        if self.pre_hooks:
            grad = run_hooks(self.pre_hooks, grad)
        return grad

    run_hooks = receive  # a non-leaf stores nothing of its own: the same with autograd.grad

    def chain(self, grad, wanted=None):
        """dL/dinput for each input. ``wanted`` (one flag per input) limits the work to the
        inputs whose gradient is asked for (``autograd.grad``)."""
        inputs = self.inputs
        if inputs is None:
            raise RuntimeError(FREED_GRAPH.format(op=self.op_name))
        output = None
        # (the many nodes that keep no values, adds, sums, reshapes, scalings, skip the checks; packed saves are saves)
        if self.saves_inputs or self.saves_output or self.watched_outputs is not None:
            if self.saves_inputs:
                created = self.created
                for x in inputs:
                    if x._version_cell[0] > created:
                        self._refuse_changed_input(x, inputs)
            if self.saves_output:
                if self.output_version[0] > self.created:
                    self._raise_modified(self.output_data.dtype, self.output_data.shape, self, self.output_version)
            if self.watched_outputs is not None:
                for version, shape, dtype, watched in self.watched_outputs:
                    if version[0] > self.created:  # (the error names the node that made the tensor now, as PyTorch's)
                        self._raise_modified(dtype, shape, getattr(watched(), "grad_fn", None), version)
            output_data = self.output_data
            if self.packed:
                inputs, output_data = self._unpacked()
            if self.saves_output:  # the output again, as a node of the graph
                output = self._output_again(output_data)
        if wanted is not None:  # unwanted inputs take part as values that need no gradient
            inputs = tuple(x if keep or not x.requires_grad else
                           (_as_constant(x) if isinstance(x, Tensor) else InputInfo(x, False))
                           for x, keep in zip(inputs, wanted))
        grads = self.backward(grad, output, *inputs)
        # the common case: every gradient already fits its input (else validate_gradients says how it does not, or
        # fits it: a gradient of a broadcast shape or another dtype); one input spelled out, as the hot path
        if len(inputs) == 1 and len(grads) == 1:
            g = grads[0]
            if g is not None:
                x = inputs[0]
                array, expected = g._data, x if type(x) is InputInfo else x._data  # (an InputInfo has both)
                if array.shape != expected.shape or (array.dtype is not expected.dtype  # (dtypes are mostly
                                                     and array.dtype != expected.dtype):  # singletons)
                    return validate_gradients(self, inputs, grads)
            return grads
        if len(grads) != len(inputs):  # (a backward that returned another count of gradients: said there)
            return validate_gradients(self, inputs, grads)
        for x, g in zip(inputs, grads):
            if g is not None:
                array, expected = g._data, x if type(x) is InputInfo else x._data
                if array.shape != expected.shape or (array.dtype is not expected.dtype
                                                     and array.dtype != expected.dtype):
                    return validate_gradients(self, inputs, grads)
        return grads

    def _output_again(self, data):
        """The saved output as a tensor again, a node of the graph (its grad_fn this node)."""
        output = Tensor._make(data)
        output._requires_grad = True
        output.grad_fn = self
        return output

    def _read_by_a_gradient(self, position, inputs):
        """Whether a gradient to be computed reads the saved input at ``position`` (saved_input_readers:
        y = x·w with x needing no gradient reads x for dL/dw, and w for nothing)."""
        readers = self.saved_input_readers
        return readers is None or any(inputs[reader].requires_grad for reader in readers[position])

    def _refuse_changed_input(self, x, inputs):
        """A saved input x was written in place after the forward: refused, unless no gradient to be
        computed reads it."""
        position = next(i for i, input in enumerate(inputs) if input is x)
        if self._read_by_a_gradient(position, inputs):
            self._raise_modified(x.dtype, x.shape, x.grad_fn, x._version_cell)

    def _raise_modified(self, dtype, shape, made_by, cell):
        """PyTorch's error for a tensor this node saved, written in place since (``cell`` its version cell; the
        version it was saved at is known where one write came after: graph.bump_version)."""
        raise modified_in_place(
            dtype, shape, made_by, cell[1], cell[1] - 1 if cell[2] <= self.created else None,
            f"(A tensor of shape {tuple(shape)} that {op_word(self)} saved for backward was changed in place after "
            "it was used, so its gradient would be wrong. Use an out-of-place operation (x = x + 1, not x += 1) or "
            "clone() it first.)")

    def release(self):
        """Free what the node saved for backward; walking it again then says the graph was freed.
        A node that saved no values (an add, a sum, a reshape) keeps only shapes and stays, so a
        second backward through such nodes alone works, as PyTorch's does: the engine calls release only
        where ``frees``."""
        self.inputs = None
        if self.saves_output:  # (no store where nothing is: the node's dict stays small)
            self.output_data = None
        self.released_parents, self.parents = self.parents, self.freed_parents  # (next_functions reads them)


def named_node(y, op, pytorch_name, inputs=(), saves=()):
    """y, its node given PyTorch's name for it (``Node.name()``), for a function that ends in another's op where
    PyTorch's node has its own name (x.clamp_min(0) ends in Clamp, stack in Cat, mse_loss in Mean): when ``op``
    made it (None: any op), and it is not the node of one of the call's ``inputs`` (returned as it was).

    ``saves``: the tensors (None: not given) PyTorch's node saves for backward where the composite's own nodes keep
    something else (normalisation's x - mean, var's squares, a loss's 1 - y). y's node counts them as saved, so
    writing one in place after the forward refuses the backward, as PyTorch's does (a ReLU(inplace=True) on the
    convolution output a BatchNorm2d read; a target written after binary_cross_entropy_with_logits): without
    this nothing would notice, and PyTorch's error would be missed."""
    node = y.grad_fn
    if node is None:
        return y
    for x in saves:
        if isinstance(x, Tensor) and x is not y and x.grad_fn is not node:
            node.watch_output(x)
    if pytorch_name is None or (op is not None and type(node) is not op):
        return y
    for x in inputs:
        if getattr(x, "grad_fn", None) is node:
            return y
    node.pytorch_name = pytorch_name
    return y


def node_named(pytorch_name):
    """Decorator for a function built of other ops whose PyTorch node has a name of its own (conv1d's
    ConvolutionBackward0): its result, or the first tensor of a (values, indices) result, is named so."""

    def decorate(function):
        @functools.wraps(function)
        def named(*args, **kwargs):
            result = function(*args, **kwargs)
            first = result[0] if isinstance(result, tuple) else result
            if isinstance(first, Tensor):
                named_node(first, None, pytorch_name, args)
            return result

        return named

    return decorate


def run_node_hooks(node, grad_inputs, grad_outputs):
    """Each hook of ``node.register_hook`` on (grad_inputs, grad_outputs), in order; a returned tuple
    replaces grad_inputs (one gradient per input, or the hook is refused)."""
    grad_inputs = tuple(grad_inputs)
    for hook in list(node.post_hooks.values()):
        replaced = as_program_code(hook, grad_inputs, grad_outputs)
        if replaced is not None:
            if len(replaced) != len(grad_inputs):
                raise RuntimeError(f"hook of {node.name()} returned {len(replaced)} gradients, expected "
                                   f"{len(grad_inputs)}")
            if any(old is None and new is not None for old, new in zip(grad_inputs, replaced)):
                raise RuntimeError("can't replace a None gradient with a non-None value")  # (PyTorch's words: that
                # input takes no gradient, and the pass would drop it)
            grad_inputs = tuple(replaced)
    return grad_inputs


def _devices_differ(op):
    return RuntimeError(
        f"{op.__name__}: Expected all tensors to be on the same device, but found at least two devices, "
        f"{served()} and cpu! Under CuPy the ops run on the GPU; a tensor moved to the CPU (x.cpu()) is there to "
        "be read (numpy(), tolist(), saving): move it back with x.cuda() to compute with it."
    )


def _inference_saved(op, input):
    return RuntimeError(
        f"Inference tensors cannot be saved for backward: {op.__name__} needs the values of a tensor of shape "
        f"{tuple(input.shape)} made in inference_mode. Please do not use Tensors created in inference mode in "
        "computation tracked by autograd; to work around, make a clone to get a normal tensor and use it in autograd."
    )


def _no_complex_gradient(op, inputs):
    dtypes = ", ".join(f"{x._data.dtype} {tuple(x.shape)}" for x in inputs)
    return NotImplementedError(
        f"{op.__name__} does not support automatic differentiation of complex tensors (inputs: {dtypes}): "
        "its derivative is written for real numbers. Detach the complex input, or compute with real and "
        "imaginary parts (autograd.view_as_real)."
    )


class _OnOneGradient:
    """A node pre-hook, hook(grad_outputs) -> new grad_outputs, as a hook on the node's one gradient."""

    def __init__(self, hook):
        self.hook = hook

    def __call__(self, grad):
        replaced = self.hook((grad,))
        return None if replaced is None else replaced[0]


def next_functions(node):
    """PyTorch's ``next_functions`` of a node whose ``parents`` the engine walks: (grad_fn, 0), or
    (AccumulateGrad of the leaf, 0), or (None, 0), one per input, before and after the graph is freed."""
    parents = node.parents
    if type(parents) is FreedGraph:
        parents = node.released_parents
    edges = tuple((AccumulateGrad.of(parent) if isinstance(parent, Tensor) else parent, 0) for parent in parents)
    # (a number operand is a constant of the op here; PyTorch's node has an input for it, with no edge)
    return edges + ((None, 0),) if getattr(node, "number_operand", False) else edges


class AccumulateGrad:
    """What PyTorch's ``next_functions`` shows for a leaf that requires grad: the node that adds
    dL/dleaf into ``leaf.grad`` (here the leaf's own ``receive`` does that). ``variable`` is the
    leaf; a leaf has one such node for as long as something holds it, as in PyTorch."""

    next_functions = ()
    metadata = Primitive.metadata

    def __init__(self, variable):
        self.variable = variable

    @classmethod
    def of(cls, leaf):
        found = leaf.__dict__.get("_accumulator")
        node = found() if found is not None else None
        if node is None:
            node = cls(leaf)
            leaf._accumulator = weakref.ref(node)  # (weak: the node holds the leaf, not the other way)
        return node

    def name(self):
        return "torch::autograd::AccumulateGrad"

    def register_prehook(self, hook):
        """hook((dL/dleaf,)) before it is stored, after the leaf's own hooks (PyTorch's AccumulateGrad
        prehook)."""
        return self.variable._register_accumulate_prehook(_OnOneGradient(hook))

    def register_hook(self, hook):
        """hook(grad_inputs=(), grad_outputs=(dL/dleaf,)) after it is stored and the leaf's post-accumulate-grad
        hooks ran (PyTorch's AccumulateGrad hook); not run by autograd.grad, which stores nothing."""
        return self.variable._register_accumulate_posthook(hook)

    def __repr__(self):
        return "<AccumulateGrad>"


def _graph_node(x):
    """The node behind an input: its grad_fn, the leaf itself, or None (no gradient needed)."""
    return x.grad_fn if x.grad_fn is not None else (x if x.requires_grad else None)


class FreedGraph:
    """The parents of a node whose graph was freed: walking them says what happened."""

    _by_op = {}

    def __init__(self, op):
        self.op = op

    @classmethod
    def of(cls, op_class):
        """One shared instance per kind of op (freeing happens once per node: keep it cheap)."""
        if op_class not in cls._by_op:
            cls._by_op[op_class] = cls(op_class.__name__)
        return cls._by_op[op_class]

    def __iter__(self):
        raise RuntimeError(FREED_GRAPH.format(op=self.op))
