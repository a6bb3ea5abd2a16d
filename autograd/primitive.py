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
"""

from . import anomaly
from .grad_mode import _GradMode
from .tensor import Tensor, _VersionClock, run_hooks

REGISTRY = {}

FREED_GRAPH = (
    "Trying to backward through the graph a second time (or to use what it saved after "
    "it was freed): the first backward() freed the graph behind {op}. Pass "
    "retain_graph=True to the first backward() or autograd.grad() if you need a second one."
)


class Primitive:
    is_view = False  # the output shares memory with the first input (reshape, slicing)
    saves_output = False  # backward uses the output y (exp, tanh, softmax): keep it
    hooks = None  # hooks on the output tensor, run on dL/dy
    retained = None  # weak reference to the output tensor when it retains .grad
    where = None  # where the user created this op (anomaly mode only)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.__name__] = cls

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad, output, *inputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on Tensors; record it when some input requires grad."""
        node = object.__new__(cls)
        if params:
            node.__dict__.update(params)
        try:
            if len(inputs) == 1:  # the common arities spelled out: this is the hot path
                data = node.forward(inputs[0]._data)
            elif len(inputs) == 2:
                data = node.forward(inputs[0]._data, inputs[1]._data)
            else:
                data = node.forward(*[x._data for x in inputs])
        except ValueError as error:  # NumPy's shape errors, said at the user's call
            shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
            raise ValueError(f"{cls.__name__} of shapes {shapes}: {error}") from None
        out = Tensor._make(data)
        if node.is_view:
            out._version = inputs[0]._version  # a view and its base change together
        if _GradMode.enabled and data.dtype.kind == "f":
            for x in inputs:
                if x.requires_grad:
                    node.inputs = inputs
                    node.output_data = data if cls.saves_output else None
                    node.created = _VersionClock.now
                    node.output_version = out._version
                    node.parents = [_graph_node(x) for x in inputs] if len(inputs) > 2 else (
                        [_graph_node(inputs[0])] if len(inputs) == 1 else
                        [_graph_node(inputs[0]), _graph_node(inputs[1])])
                    out.requires_grad = True
                    out.grad_fn = node
                    if anomaly._AnomalyMode.enabled:
                        node.where = anomaly.user_frame()
                        anomaly.check_finite(data, "forward output", node.name, node.where)
                    break
        return out

    @property
    def name(self):
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name}Backward>"

    # -- the engine's interface (see autograd.engine) -------------------------------

    # parents, set by apply: for each input its grad_fn, the leaf itself, or None
    # where no gradient is needed. Freeing the graph replaces them by FreedGraph.

    def receive(self, grad):
        if self.hooks:
            grad = run_hooks(self.hooks, grad)
        if self.retained is not None:
            tensor = self.retained()
            if tensor is not None:
                tensor.grad = grad if grad.requires_grad else grad.detach()
        return grad

    def chain(self, grad):
        inputs = self.inputs
        if inputs is None:
            raise RuntimeError(FREED_GRAPH.format(op=self.name))
        created = self.created
        for x in inputs:
            if x._version[0] > created:
                self._raise_modified(x.shape)
        output = None
        if self.saves_output:
            if self.output_version[0] > created:
                self._raise_modified(self.output_data.shape)
            output = Tensor._make(self.output_data)  # the output again, as a node of the graph
            output.requires_grad = True
            output.grad_fn = self
        grads = self.backward(grad, output, *inputs)
        if self.where is not None:
            for g in grads:
                if g is not None:
                    anomaly.check_finite(g._data, "gradient", self.name + "Backward", self.where)
        return grads

    def _raise_modified(self, shape):
        raise RuntimeError(
            f"a tensor of shape {tuple(shape)} that {self.name} saved for backward was changed "
            "in place after it was used, so its gradient would be wrong. Use an out-of-place "
            "operation (x = x + 1, not x += 1) or clone() it first."
        )

    def release(self):
        self.inputs = None
        self.output_data = None
        self.parents = FreedGraph.of(type(self))


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
