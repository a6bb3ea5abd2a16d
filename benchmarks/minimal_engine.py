"""A minimal reverse-mode engine on NumPy, for benchmarks/floor.py's floor (b): the least Python any graph costs.

Each op computes its array and, when an input needs a gradient, appends a closure to one global tape; ``backward``
runs the tape reversed, summing each value's shares in a dict (the first kept, the second summed into a new buffer,
the rest in place into it, as chainrule's engine), and leaves the leaves' gradients in ``.grad``. Each op makes the
same NumPy calls as chainrule's op for the same arguments (floor.py's (a) lists them), so the distance from (a) is
the graph's Python alone. Nothing else: no grad modes, version counters, hooks, views, checks or freeing; only the
ops floor.py's rows use. Not a usable engine (one tape for the whole process, one backward per forward).
"""

import gc

import numpy as np

F32 = np.float32
ZERO, ONE = np.zeros((), F32), np.ones((), F32)  # the cached 0-d constants chainrule's relu and tanh use



class Mini:
    """A value of the minimal engine: its array, whether it needs a gradient, and its gradient."""

    __slots__ = ("data", "requires_grad", "grad")

    def __init__(self, data, requires_grad=False):
        self.data, self.requires_grad, self.grad = data, requires_grad, None


TAPE = []  # closures (grads) -> None, in the order the ops ran


def _share(grads, owned, x, g):
    """Add one consumer's share g to dL/dx: the first kept as it is, the second summed into a new buffer, the
    rest in place into that buffer (chainrule's add_share)."""
    total = grads.get(x)
    if total is None:
        grads[x] = g
    elif id(total) in owned:
        total += g
    else:
        total = total + g
        owned[id(total)] = total  # (held, so that no other array takes its id during the pass)
        grads[x] = total


def _op(data, inputs, backward):
    """The op's result; when an input needs a gradient, its closure on the tape: backward(g) -> shares."""
    for x in inputs:
        if x.requires_grad:
            break
    else:
        return Mini(data)
    out = Mini(data, True)

    def run(grads, owned):
        g = grads.pop(out, None)
        if g is not None:
            for x, share in zip(inputs, backward(g)):
                if share is not None:
                    _share(grads, owned, x, share)

    TAPE.append(run)
    return out


def backward(loss, seed):
    grads, owned = {loss: seed}, {}
    gc.disable()  # as chainrule's pass: it frees nothing cyclic, a collection would only rescan the graph
    try:
        for run in reversed(TAPE):
            run(grads, owned)
    finally:
        gc.enable()
    TAPE.clear()
    for x, g in grads.items():  # what is left is the leaves' gradients
        x.grad = g if x.grad is None else x.grad + g


def mul(a, b):
    x, y = a.data, b.data
    return _op(x * y, (a, b), lambda g: (g * y if a.requires_grad else None, g * x if b.requires_grad else None))


def scale(a, c):  # c: a 0-d array of a's dtype
    return _op(a.data * c, (a,), lambda g: (g * c,))


def add(a, b):
    x, y = a.data, b.data
    if x.shape == y.shape:
        return _op(x + y, (a, b), lambda g: (g, g))
    axes = tuple(range(x.ndim - y.ndim))  # a bias: summed over the leading axes
    return _op(x + y, (a, b), lambda g: (g, np.add.reduce(g, axes, None, None, False)))


def matmul(a, b):
    x, y = a.data, b.data
    return _op(x @ y, (a, b), lambda g: (g @ y.swapaxes(-1, -2) if a.requires_grad else None,
                                         x.swapaxes(-1, -2) @ g if b.requires_grad else None))


def relu(a):
    y = np.maximum(ZERO, a.data)
    return _op(y, (a,), lambda g: (np.where(y <= 0, np.zeros((), g.dtype), g),))


def relu_large(a):  # chainrule's relu backward past 1024 elements: a product, checked for inf and NaN in one pass
    y = np.maximum(ZERO, a.data)

    def back(g):
        product = g * (y > 0)
        if np.isfinite(np.vdot(product.ravel("K"), y.ravel("K"))):
            return (product,)
        return (np.where(y <= 0, np.zeros((), g.dtype), g),)

    return _op(y, (a,), back)


def pick(a, rows, columns):  # a[rows, columns]: the gradient scattered into zeros
    x = a.data

    def back(g):
        spread = np.zeros(x.shape, dtype=x.dtype)
        np.size(g)
        np.add.at(spread, (rows, columns), g)
        return (spread,)

    return _op(x[rows, columns], (a,), back)


def neg(a):
    return _op(-a.data, (a,), lambda g: (-g,))


def tanh(a):
    y = np.tanh(a.data)

    def back(g):
        z = ONE - y * y
        z *= g
        return (z,)

    return _op(y, (a,), back)


def total(a):
    x = a.data
    axes = tuple(range(x.ndim))
    y = np.add.reduce(x, axes, None, None, False)

    def back(g):
        spread = np.empty(x.shape, dtype=x.dtype)
        spread[...] = g
        return (spread,)

    return _op(y, (a,), back)


def mean(a):
    x = a.data
    axes, count = tuple(range(x.ndim)), F32(x.size)
    y = np.add.reduce(x, axes, None, None, False) / count

    def back(g):
        spread = np.empty(x.shape, dtype=x.dtype)
        spread[...] = g
        np.divide(spread, count, out=spread)
        return (spread,)

    return _op(y, (a,), back)


def softmax(a, axis):
    x = a.data
    e = x - np.maximum.reduce(x, axis, None, None, True)
    np.exp(e, out=e)
    e /= np.add.reduce(e, axis, None, None, True)

    def back(g):
        z = g * e
        z -= e * np.add.reduce(z, axis, None, None, True)
        return (z,)

    return _op(e, (a,), back)


def log_softmax(a, axis):
    x = a.data
    y = x - np.maximum.reduce(x, axis, None, None, True)
    y -= np.log(np.add.reduce(np.exp(y), axis, None, None, True))

    def back(g):
        z = np.exp(y)
        z *= np.add.reduce(g, axis, None, None, True)
        return (np.subtract(g, z, out=z),)

    return _op(y, (a,), back)
