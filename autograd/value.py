"""The scalar engine: a ``Value`` is one number that remembers how it was made.

Every operation creates a new Value holding

    data          the result y of the forward pass
    a, b          the Values it was computed from, its parents (b is None for
                  a one-input operation; both are None for a leaf)
    dy_da, dy_db  the local derivatives of y with respect to each, as numbers

(``parents`` and ``local_grads`` give them as tuples), and that is all the
backward pass needs: in topological order (every node after all the nodes that
used it), each node applies the chain rule

    dL/dx += dL/dy · dy/dx     for x = a, b

so every Value ends with ``.grad`` = dL/d(that value). Reading an operator
below shows its forward result and its local derivatives side by side.

``backward()`` is that loop written out for Values: a million nodes in about a
second. (The parents sit in slots rather than in tuples because every object
that holds others is one more for Python's garbage collector to scan while a
graph is built: that halves the time to build one.) The shared engine
(``autograd.engine``) runs the same graph through the node interface at the
bottom of the class, one method call per node, for the step-by-step trace
(``autograd.trace``) and the pictures.

Unlike the Tensor engine, a Value graph is never freed by ``backward()`` (it
holds only numbers): call it again and the gradients add up, as micrograd's do.
"""


import gc
import math


class Value:
    __slots__ = ("data", "grad", "label", "op", "a", "dy_da", "b", "dy_db")
    post_hooks = None  # (the engine's interface: a Value has no node hooks)

    def __init__(self, data, label="", parents=(), op="", local_grads=()):
        if len(parents) > 2 or len(local_grads) != len(parents):
            raise ValueError(f"a Value has at most two parents, each with its local derivative: got "
                             f"{len(parents)} parents and {len(local_grads)} local derivatives")
        self.data = float(data)
        self.grad = 0.0
        self.label = label
        self.op = op
        self.a, self.dy_da = (parents[0], local_grads[0]) if parents else (None, 0.0)
        self.b, self.dy_db = (parents[1], local_grads[1]) if len(parents) == 2 else (None, 0.0)

    @property
    def parents(self):
        """The Values this one was computed from: (), (a,) or (a, b)."""
        return () if self.a is None else (self.a,) if self.b is None else (self.a, self.b)

    @property
    def local_grads(self):
        """dy/d(each parent), in the order of ``parents``."""
        return () if self.a is None else (self.dy_da,) if self.b is None else (self.dy_da, self.dy_db)

    def __repr__(self):
        label = f"label={self.label!r}, " if self.label else ""
        return f"Value({label}data={self.data:.6g}, grad={self.grad:.6g})"

    # -- operations: y, then each input with dy/d(that input) -------------------------

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        # y = a + b;  dy/da = 1, dy/db = 1
        return _result(self.data + other.data, "+", self, 1.0, other, 1.0)

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        # y = a · b;  dy/da = b, dy/db = a
        return _result(self.data * other.data, "*", self, other.data, other, self.data)

    def __pow__(self, exponent):
        if not isinstance(exponent, (int, float)):
            raise TypeError(f"Value ** supports a number exponent, got {type(exponent).__name__}")
        x = self.data
        if x < 0 and not float(exponent).is_integer():
            raise ValueError(f"Value({x}) ** {exponent}: a negative base to a fractional power is not a real number")
        # y = x^n;  dy/dx = n · x^(n-1): 0 for n = 0, and infinite at x = 0 for 0 < n < 1 (√x)
        if exponent == 0:
            slope = 0.0
        elif x == 0 and exponent < 1:
            slope = math.inf
        else:
            slope = exponent * x ** (exponent - 1)
        return _result(float(x**exponent), f"**{exponent:g}", self, slope)

    def exp(self):
        y = math.exp(self.data)
        # y = e^x;  dy/dx = e^x = y
        return _result(y, "exp", self, y)

    def log(self):
        # y = ln x;  dy/dx = 1/x
        return _result(math.log(self.data), "log", self, 1.0 / self.data)

    def tanh(self):
        y = math.tanh(self.data)
        # y = tanh x;  dy/dx = 1 - y^2
        return _result(y, "tanh", self, 1.0 - y * y)

    def sigmoid(self):
        x = self.data
        # written so that exp never overflows: both forms equal 1 / (1 + e^-x)
        y = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
        # y = σ(x);  dy/dx = σ(x)(1 - σ(x)) = y(1 - y)
        return _result(y, "sigmoid", self, y * (1.0 - y))

    def relu(self):
        # y = max(0, x);  dy/dx = 1 if x > 0 else 0
        if self.data > 0:
            return _result(self.data, "relu", self, 1.0)
        return _result(0.0, "relu", self, 0.0)

    # -- the rest are compositions of the above -------------------------------------

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other**-1.0

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return Value(other) - self

    def __rtruediv__(self, other):
        return Value(other) / self

    # -- backward: the chain rule over the whole graph --------------------------------

    def backward(self):
        """Fill ``.grad`` of this Value and of every Value it depends on: dL/dv with L = self.

        Each node's share dL/dy is complete before it is sent on, and it is this pass's
        share alone (a second ``backward()`` adds the same gradients again, everywhere).
        So, for the pass, every inner node's ``.grad`` starts at 0 and what it held
        before is added back at the end; leaves just accumulate.
        """
        gc_was_enabled = gc.isenabled()
        gc.disable()  # the pass makes no reference cycles: a collection would rescan the graph for nothing
        try:
            order, held_before = _inner_nodes_consumers_first(self)
            self.grad += 1.0  # dL/dL (for a leaf, the whole story)
            for node in order:
                grad = node.grad
                node.a.grad += grad * node.dy_da  # dL/da += dL/dy · dy/da
                if node.b is not None:
                    node.b.grad += grad * node.dy_db  # dL/db += dL/dy · dy/db
            for node, grad in held_before:
                node.grad += grad
        finally:
            if gc_was_enabled:
                gc.enable()

    # -- the shared engine's node interface (autograd.engine: the trace, viz) ----------

    def receive(self, grad):
        self.grad += grad
        return grad

    def chain(self, grad):
        return [grad * local for local in self.local_grads]

    frees = False  # (the engine's: release() has no work)

    def release(self):
        pass  # a Value graph holds only numbers: it stays for another backward()


_new = object.__new__


def _result(data, op, a, dy_da, b=None, dy_db=0.0):
    """A Value computed by an operator from a (and b): ``Value(data, "", (a, b), op, (dy_da, dy_db))``
    without the call through ``__init__`` and ``float()`` (a quarter less time per node)."""
    value = _new(Value)
    value.data = data
    value.grad = 0.0
    value.label = ""
    value.op = op
    value.a = a
    value.dy_da = dy_da
    value.b = b
    value.dy_db = dy_db
    return value


def _inner_nodes_consumers_first(root):
    """The Values with parents below ``root`` (``root`` included), each before every node it
    was computed from, with their ``.grad`` set to 0 for the pass; and [(node, its .grad
    before)] for those whose gradient was not 0.

    One iterative depth-first walk: a node is expanded once (pushed back under a ``None``
    mark, its parents above), and emitted when the mark comes off again, after all its
    parents' walks; the reversed emission order puts every consumer first. Leaves are not
    listed: they send nothing on.
    """
    order, held_before = [], []
    if root.a is None:
        return order, held_before
    expanded = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None:
            order.append(stack.pop())
        elif node not in expanded:
            expanded.add(node)
            if node.grad:
                held_before.append((node, node.grad))
                node.grad = 0.0
            stack.append(node)
            stack.append(None)
            for parent in (node.a, node.b):
                if parent is not None and parent.a is not None and parent not in expanded:  # not a leaf
                    stack.append(parent)
    order.reverse()
    return order, held_before
