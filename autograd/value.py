"""The scalar engine: a ``Value`` is one number that remembers how it was made.

Every operation creates a new Value holding

    data          the result y of the forward pass
    parents       the Values x_i it was computed from
    local_grads   the local derivatives dy/dx_i, one per parent, as numbers

and that is all the backward pass needs. ``backward()`` runs the shared
engine (``autograd.engine``): in topological order, each node applies the
chain rule

    dL/dx_i += dL/dy · dy/dx_i

so every Value ends with ``.grad`` = dL/d(that value). Reading an operator
below shows its forward result and its local derivatives side by side.

Unlike the Tensor engine, a Value graph is never freed by ``backward()`` (it
holds only numbers): call it again and the gradients add up, as micrograd's do.
"""

import math

from .engine import backpropagate


class Value:
    __slots__ = ("data", "grad", "label", "op", "parents", "local_grads")

    def __init__(self, data, label="", parents=(), op="", local_grads=()):
        self.data = float(data)
        self.grad = 0.0
        self.label = label
        self.op = op
        self.parents = parents
        self.local_grads = local_grads

    def __repr__(self):
        label = f"label={self.label!r}, " if self.label else ""
        return f"Value({label}data={self.data:.6g}, grad={self.grad:.6g})"

    # -- operations: y, then dy/dx for each input -------------------------------

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        # y = a + b;  dy/da = 1, dy/db = 1
        return Value(self.data + other.data, "", (self, other), "+", (1.0, 1.0))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        # y = a · b;  dy/da = b, dy/db = a
        return Value(self.data * other.data, "", (self, other), "*", (other.data, self.data))

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
        return Value(x**exponent, "", (self,), f"**{exponent:g}", (slope,))

    def exp(self):
        y = math.exp(self.data)
        # y = e^x;  dy/dx = e^x = y
        return Value(y, "", (self,), "exp", (y,))

    def log(self):
        # y = ln x;  dy/dx = 1/x
        return Value(math.log(self.data), "", (self,), "log", (1.0 / self.data,))

    def tanh(self):
        y = math.tanh(self.data)
        # y = tanh x;  dy/dx = 1 - y^2
        return Value(y, "", (self,), "tanh", (1.0 - y * y,))

    def sigmoid(self):
        x = self.data
        # written so that exp never overflows: both forms equal 1 / (1 + e^-x)
        y = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
        # y = σ(x);  dy/dx = σ(x)(1 - σ(x)) = y(1 - y)
        return Value(y, "", (self,), "sigmoid", (y * (1.0 - y),))

    def relu(self):
        positive = self.data > 0
        # y = max(0, x);  dy/dx = 1 if x > 0 else 0
        return Value(self.data if positive else 0.0, "", (self,), "relu", (1.0 if positive else 0.0,))

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

    # -- the engine's interface (see autograd.engine) ---------------------------------

    def receive(self, grad):
        self.grad += grad
        return grad

    def chain(self, grad):
        return [grad * local for local in self.local_grads]

    def release(self):
        pass  # a Value graph holds only numbers: it stays for another backward()

    def backward(self):
        """Fill ``.grad`` of this Value and of every Value it depends on: dL/dv with L = self."""
        backpropagate([self], [1.0], retain_graph=True)
