"""The lecture's networks: ``Neuron``, ``Perceptron`` and ``MLP``.

A neuron computes a weighted sum and an activation, y = φ(w·x + b). A
perceptron is the historical neuron with a hard threshold, trained by its own
rule instead of gradients. An MLP stacks layers of neurons:
Y₁ = W X₁, Y₂ = φ(X₂ = Y₁), ... as in the lecture's (X, Y) blocks.
"""

import math

import autograd

from . import init
from .activation import ReLU, Sigmoid, Tanh
from .container import Sequential
from .linear import Linear
from .module import Module
from .parameter import Parameter

ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def _activation(activation):
    """An activation module from a class (nn.ReLU), a name ('relu'), an instance or None."""
    if activation is None:
        return None
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[activation]()
    return activation() if isinstance(activation, type) else activation


class Neuron(Module):
    """y = φ(w·x + b): one weighted sum and one activation (sigmoid by default)."""

    def __init__(self, in_features, activation=Sigmoid):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = init.uniform_(Parameter(autograd.empty(in_features)), -bound, bound)
        self.bias = init.zeros_(Parameter(autograd.zeros(())))
        self.activation = _activation(activation)

    def forward(self, x):
        z = x @ self.weight + self.bias
        return z if self.activation is None else self.activation(z)

    def extra_repr(self):
        return f"in_features={self.weight.shape[0]}"


class Perceptron(Module):
    """Rosenblatt's perceptron: ŷ = 1 if w·x + b > 0 else 0.

    The step function has zero derivative almost everywhere, so it is not
    trained by backpropagation but by the perceptron rule, ``update``:
        w ← w + η (y - ŷ) x,   b ← b + η (y - ŷ)
    which converges when the two classes are linearly separable.
    """

    def __init__(self, in_features):
        super().__init__()
        self.weight = Parameter(autograd.zeros(in_features), requires_grad=False)
        self.bias = Parameter(autograd.zeros(()), requires_grad=False)

    def forward(self, x):
        return ((x @ self.weight + self.bias) > 0).to(self.weight.dtype)

    def update(self, x, y, lr=1.0):
        """One pass of the perceptron rule over the rows of x (labels y in {0, 1});
        returns the number of mistakes made during the pass."""
        mistakes = 0
        with autograd.no_grad():
            rows = x.reshape(len(x), -1).to(self.weight.dtype)
            for row, label in zip(rows.numpy(), autograd.tensor(y).reshape(-1).numpy()):
                predicted = float(row @ self.weight.numpy() + self.bias.item() > 0)
                error = float(label) - predicted
                if error:
                    mistakes += 1
                    self.weight.add_(autograd.from_numpy(row), alpha=lr * error)
                    self.bias.add_(lr * error)
        return mistakes


class MLP(Sequential):
    """A multi-layer perceptron: Linear, activation, ..., Linear (no activation at the end,
    so it outputs logits or regression values).

    MLP(2, [16, 16], 1, activation=nn.ReLU) is Linear(2,16) ReLU Linear(16,16) ReLU Linear(16,1).
    """

    def __init__(self, in_features, hidden_sizes, out_features, activation=ReLU):
        sizes = [in_features, *hidden_sizes, out_features]
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(_activation(activation))
        super().__init__(*layers)
