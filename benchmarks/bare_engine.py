"""A reference for the per-op benchmark: the least a Python autograd on NumPy can do per op.

micrograd's design on arrays: each op returns a node holding its array, its inputs and
a closure for its local derivatives; backward orders the nodes by chainrule's own
depth-first walk and sums the shares. Nothing else: no version checks for in-place writes, no gradient
shape or dtype validation, no hooks or retain_grad, no grad modes, no freeing of what
was saved, no views, no second derivatives. chainrule does all of those (the semantics
issue asks for each); the distance between this floor and chainrule is what they cost,
and the distance between NumPy by hand and this floor is what a Python graph costs at all.

Four ops only (mul, add, relu, sum): what the 4-op chain needs. Not a usable engine.
"""

import numpy as np

from autograd.engine import topological_order  # the same walk as chainrule's: only the per-node work differs


class BareTensor:
    __slots__ = ("data", "grad", "parents", "derivatives")

    def __init__(self, data, parents=(), derivatives=None):
        self.data, self.grad, self.parents, self.derivatives = data, None, parents, derivatives

    def __mul__(self, other):
        a, b = self.data, other.data
        return BareTensor(a * b, (self, other), lambda g: (g * b, g * a))

    def __add__(self, other):
        return BareTensor(self.data + other.data, (self, other), lambda g: (g, g))

    def relu(self):
        y = np.maximum(self.data, 0)
        return BareTensor(y, (self,), lambda g: (g * (y > 0),))

    def sum(self):
        shape = self.data.shape
        return BareTensor(self.data.sum(), (self,), lambda g: (np.broadcast_to(g, shape),))

    def backward(self):
        pending = {self: np.ones((), self.data.dtype)}
        for node in topological_order([self]):  # every node before the nodes it was computed from
            g = pending.pop(node)
            if node.derivatives is None:  # a leaf
                node.grad = g if node.grad is None else node.grad + g
                continue
            for x, share in zip(node.parents, node.derivatives(g)):
                pending[x] = pending[x] + share if x in pending else share
