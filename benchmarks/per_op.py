"""(a) Per-op overhead on 16x16 float32, forward and backward, against PyTorch with one thread:

- one op at a time (add, mul, matmul, relu, sum, exp, softmax, log_softmax): y = op(a[, b]),
  then y.backward(ones) (sum: y.backward()), microseconds per op, beside the same forward and
  backward in NumPy by hand (the floor of any engine built on NumPy) and MyGrad (when installed);
- a 4-op chain ((a*b + c).relu()).sum() and backward, microseconds per op, beside NumPy by
  hand (the forward alone, and forward and backward) and a bare closure engine with none of
  chainrule's checks (bare_engine.py): the floor of a Python graph on NumPy.

At this size the arithmetic is nothing: these measure what each op costs the engine.
"""

import numpy as np
from bare_engine import BareTensor
from timing import best_time, grouped_table, optional, table

import autograd

OPS = 4  # the chain's ops: mul, add, relu, sum
SINGLE = {  # name: the op, for any library whose tensors have these methods
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "matmul": lambda a, b: a @ b,
    "relu": lambda a, b: a.relu(),
    "sum": lambda a, b: a.sum(),
    "exp": lambda a, b: a.exp(),
    "softmax": lambda a, b: a.softmax(1),
    "log_softmax": lambda a, b: a.log_softmax(1),
}


def _softmax_by_hand(a, b, g):
    y = np.exp(a - a.max(1, keepdims=True))
    y /= y.sum(1, keepdims=True)
    return y, y * (g - (g * y).sum(1, keepdims=True))  # dL/dx = y (g - sum_j g_j y_j)


def _log_softmax_by_hand(a, b, g):
    shifted = a - a.max(1, keepdims=True)
    y = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return y, g - np.exp(y) * g.sum(1, keepdims=True)  # dL/dx = g - softmax · sum_j g_j


NUMPY_BY_HAND = {  # name: (a, b, dL/dy) -> (y, the gradients): the floor of any engine on NumPy
    "add": lambda a, b, g: (a + b, g, g),
    "mul": lambda a, b, g: (a * b, g * b, g * a),
    "matmul": lambda a, b, g: (a @ b, g @ b.T, a.T @ g),
    "relu": lambda a, b, g: (np.maximum(a, 0), g * (a > 0)),
    "sum": lambda a, b, g: (a.sum(), np.ones_like(a)),
    "exp": lambda a, b, g: (y := np.exp(a), g * y),
    "softmax": _softmax_by_hand,
    "log_softmax": _log_softmax_by_hand,
}


def mygrad_ops(mygrad):
    """The same ops in MyGrad (a NumPy autograd too), which spells relu and the softmaxes as functions."""
    from mygrad.nnet.activations import logsoftmax, relu, softmax

    return {**SINGLE, "relu": lambda a, b: relu(a), "exp": lambda a, b: mygrad.exp(a),
            "softmax": lambda a, b: softmax(a, axis=1), "log_softmax": lambda a, b: logsoftmax(a, axis=1)}


def _forget_grads(*tensors):
    for t in tensors:
        try:
            t.grad = None
        except AttributeError:  # MyGrad's .grad is read-only: it clears its gradients itself
            pass


def arrays(count=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((16, 16)).astype(np.float32) for _ in range(count)]


def one_op(op, a, b, ones):
    """op(a, b) forward and backward, the upstream gradient all ones."""

    def run():
        _forget_grads(a, b)
        y = op(a, b)
        y.backward() if y.ndim == 0 else y.backward(ones)

    return run


def interleaved(candidates, rounds=5):
    """Seconds per call of each candidate: the best over interleaved rounds (a noisy moment hits all alike)."""
    seconds = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            seconds[name] = min(seconds[name], best_time(fn, repeat=3, budget=0.05))
    return seconds


def run_single(torch, mygrad):
    """{op: {library: seconds}} for one op forward and backward."""
    x, y = arrays(2)
    ours = [autograd.tensor(v, requires_grad=True) for v in (x, y)] + [autograd.ones(16, 16)]
    candidates = {f"{name} chainrule": one_op(op, *ours) for name, op in SINGLE.items()}
    ones = np.ones((16, 16), np.float32)
    candidates.update({f"{name} NumPy by hand": (lambda by_hand=by_hand: by_hand(x, y, ones))
                       for name, by_hand in NUMPY_BY_HAND.items()})
    if mygrad is not None:
        theirs = [mygrad.tensor(v) for v in (x, y)] + [np.ones((16, 16), np.float32)]
        candidates.update({f"{name} MyGrad": one_op(op, *theirs) for name, op in mygrad_ops(mygrad).items()})
    if torch is not None:
        theirs = [torch.tensor(v, requires_grad=True) for v in (x, y)] + [torch.ones(16, 16)]
        candidates.update({f"{name} PyTorch": one_op(op, *theirs) for name, op in SINGLE.items()})
    return interleaved(candidates, rounds=3)


def run_chain(torch, mygrad):
    x, y, z = arrays()
    a, b, c = (autograd.Tensor(v, requires_grad=True) for v in (x, y, z))

    def ours():
        a.grad = b.grad = c.grad = None
        ((a * b + c).relu()).sum().backward()

    def numpy_forward():
        np.maximum(x * y + z, 0).sum()

    def numpy_both():
        s = x * y + z
        r = np.maximum(s, 0)
        r.sum()
        g = np.broadcast_to(np.ones((), np.float32), r.shape) * (r > 0)  # dL/ds
        return g * y, g * x, g  # dL/da, dL/db, dL/dc

    bare = [BareTensor(v) for v in (x, y, z)]

    def bare_engine():
        ba, bb, bc = bare
        ba.grad = bb.grad = bc.grad = None
        ((ba * bb + bc).relu()).sum().backward()

    candidates = {"chainrule (forward + backward)": ours, "NumPy (forward only)": numpy_forward,
                  "NumPy by hand (forward + backward)": numpy_both,
                  "bare closure engine, no checks (forward + backward)": bare_engine}
    if torch is not None:
        ta, tb, tc = (torch.tensor(v, requires_grad=True) for v in (x, y, z))

        def theirs():
            ta.grad = tb.grad = tc.grad = None
            ((ta * tb + tc).relu()).sum().backward()

        candidates["PyTorch, 1 thread (forward + backward)"] = theirs
    if mygrad is not None:
        from mygrad.nnet.activations import relu

        ma, mb, mc = (mygrad.tensor(v) for v in (x, y, z))

        def mygrads():
            relu(ma * mb + mc).sum().backward()

        candidates["MyGrad (forward + backward)"] = mygrads
    return {name: seconds / OPS for name, seconds in interleaved(candidates).items()}


def report():
    torch, mygrad = optional("torch"), optional("mygrad")
    if torch is not None:
        torch.set_num_threads(1)  # Python runs our ops on one thread
    lines = []
    single = run_single(torch, mygrad)
    present = {"chainrule": True, "NumPy by hand": True, "MyGrad": mygrad is not None, "PyTorch": torch is not None}
    libraries = tuple(name for name, here in present.items() if here)
    groups = {name: {library: single[f"{name} {library}"] for library in libraries} for name in SINGLE}
    lines.append(grouped_table("(a) one op on 16x16 float32, forward + backward (PyTorch with 1 thread), us",
                               groups, reference=libraries[-1], label="{}", unit="us", scale=1e6))
    lines.append(table("(a) ((a*b + c).relu()).sum() + backward, 16x16 float32, us per op", run_chain(torch, mygrad),
                       reference="chainrule (forward + backward)", unit="us", scale=1e6))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
