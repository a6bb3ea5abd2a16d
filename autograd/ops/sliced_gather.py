"""Gathers along dims whose positions run in a few arithmetic progressions: y[j] = x[p(j)] along a dim, as a
pad that copies (reflect, replicate, circular) or nearest upsampling reads. Each progression is one slice copy
forward and one slice addition backward, so the gather costs a pass over the array per dim, as a copy does,
where an index gather and its scatter-add cost about ten.

A plan for a dim is a list of runs (first output, output step, count, first input, input step): outputs
first, first + step, ... read inputs first, first + input step, ... (input step 0: one input read again, a
replicated edge). The backward adds each input's terms in the order of j from a zeroed gradient, as PyTorch's
kernels do, so its sums are theirs bit for bit where theirs run one dim at a time; the runs are ordered so."""

import collections

import numpy

from ..backend import to_numpy, xp
from ..meta import MetaArray, meta_array
from ..primitive import Primitive
from ..tensor import Tensor

MOST_RUNS = 16  # (beyond which slicing costs more in Python than an index gather saves)


def _progressions(j, p, most):
    """(first output, output step, count, first input, input step) runs covering outputs ``j`` (an arithmetic
    sequence) reading ``p``, each as long as the inputs keep one step; None beyond ``most`` runs."""
    runs, start, steps = [], 0, numpy.diff(p)
    out_step = int(j[1] - j[0]) if len(j) > 1 else 1
    while start < len(j):
        if len(runs) == most:
            return None
        if start + 1 < len(j):
            in_step = int(steps[start])
            changed = steps[start:] != in_step
            stop = start + 1 + (int(changed.argmax()) if changed.any() else len(changed))
        else:
            in_step, stop = 1, start + 1
        runs.append((int(j[start]), out_step, stop - start, int(p[start]), in_step if stop - start > 1 else 1))
        start = stop
    return runs


def _in_order(runs, positions):
    """The runs ordered so that every input meets its outputs in increasing order (None where none is)."""
    if len(runs) == 1:
        return runs
    label = numpy.empty(len(positions), numpy.int64)
    for k, (first, step, count, _, _) in enumerate(runs):
        label[_outputs(first, step, count)] = k
    by_input = numpy.argsort(positions, kind="stable")  # each input's outputs together, in increasing order
    same = positions[by_input[1:]] == positions[by_input[:-1]]
    pairs = numpy.unique(label[by_input[:-1]][same] * len(runs) + label[by_input[1:]][same]).tolist()
    edges = {divmod(pair, len(runs)) for pair in pairs} - {(k, k) for k in range(len(runs))}
    ordered, left = [], set(range(len(runs)))
    while left:  # (a topological order of the runs under "some input meets a before b")
        free = sorted(k for k in left if not any(a in left and b == k for a, b in edges))
        if not free:
            return None
        ordered.append(free[0])
        left.discard(free[0])
    return [runs[k] for k in ordered]


REMEMBERED_PLANS = 256
_plans = collections.OrderedDict()  # a digest of the positions -> their plan, least recently used first


def slice_plan(positions):
    """The runs of a 1-D ``positions`` array (each output's input position), in an order that adds each input's
    terms as j increases; None where no output stride up to 4 gives MOST_RUNS or fewer. Plans are remembered
    (a layer pads or upsamples the same sizes at every call) under a 16-byte digest of the positions, not the
    positions themselves: an audio pipeline's clips of many lengths would keep 1.6 MB per 200,000 samples."""
    import hashlib  # (here, not above: loading it is 4 ms of every `import autograd`, 3% of it)

    positions = to_numpy(positions).astype(numpy.int64, copy=False)
    key = hashlib.blake2b(positions.tobytes(), digest_size=16).digest()
    if key in _plans:
        _plans.move_to_end(key)
        return _plans[key]
    plan = _plan_of(positions)
    _plans[key] = plan
    if len(_plans) > REMEMBERED_PLANS:
        _plans.popitem(last=False)
    return plan


def _plan_of(positions):
    outputs = numpy.arange(len(positions))
    best = None
    for stride in range(1, 5):
        runs = []
        for residue in range(min(stride, len(positions))):
            found = _progressions(outputs[residue::stride], positions[residue::stride], MOST_RUNS - len(runs))
            if found is None:
                break
            runs += found
        else:
            if best is None or len(runs) < len(best):
                best = _in_order(runs, positions) or best
    return best


def _along(dim, index):
    return (slice(None),) * dim + (index,)


def _outputs(first, step, count):
    return slice(first, first + step * (count - 1) + 1, step)


def _inputs(first, step, count):
    """The input slice a run reads (one position, broadcast, for step 0)."""
    if step == 0:
        return slice(first, first + 1)
    stop = first + step * count
    return slice(first, stop if stop >= 0 else None, step)


def _planned_shape(shape, lengths):
    """``shape`` with each (dim, length) of ``lengths`` made that length."""
    shape = list(shape)
    for dim, length in lengths:
        shape[dim] = length
    return tuple(shape)


def _gathered(x, dim, runs, length):
    y = xp.empty(x.shape[:dim] + (length,) + x.shape[dim + 1:], dtype=x.dtype)
    for first, step, count, source, source_step in runs:
        y[_along(dim, _outputs(first, step, count))] = x[_along(dim, _inputs(source, source_step, count))]
    return y


def _summed(grad, dim, runs, size):
    """Σ over the outputs j reading input i of grad[j], for each i, added in the order of j into zeros."""
    total = xp.zeros(grad.shape[:dim] + (size,) + grad.shape[dim + 1:], dtype=grad.dtype)
    for first, step, count, source, source_step in runs:
        target = total[_along(dim, _inputs(source, source_step, count))]
        if source_step:
            target += grad[_along(dim, _outputs(first, step, count))]
        else:  # one input read `count` times: its terms one after another
            for j in range(first, first + step * count, step):
                target += grad[_along(dim, slice(j, j + 1))]
    return total


class SlicedGather(Primitive):
    """y = x read at p_d(j) along each dim d of ``plan`` ((dim, runs, output length, input size) per dim);
    dL/dx[i] = Σ_{j: p(j) = i} dL/dy[j] along each dim, the adjoint (SlicedGatherSum)."""

    saves_inputs = False  # (the positions are all the backward needs)
    handles_complex = True  # linear: gradients are moved and added, never multiplied by a value

    def forward(self, x):
        if type(x) is MetaArray:  # (a meta tensor: the shape the plan gives, no values to move)
            return meta_array(_planned_shape(x.shape, [(dim, length) for dim, _, length, _ in self.plan]), x.dtype)
        for dim, runs, length, _ in self.plan:
            x = _gathered(x, dim, runs, length)
        return x

    def backward(self, grad, y, x):
        return (SlicedGatherSum.apply(grad, plan=self.plan),)


class SlicedGatherSum(Primitive):
    """The gradient of SlicedGather: each dim's outputs added into the inputs they read (the last dim of the
    plan first); its own adjoint is the gather again (a second derivative through a pad or an upsampling)."""

    saves_inputs = False
    handles_complex = True

    def forward(self, grad):
        if type(grad) is MetaArray:  # (as SlicedGather's)
            return meta_array(_planned_shape(grad.shape, [(dim, size) for dim, _, _, size in self.plan]), grad.dtype)
        for dim, runs, _, size in reversed(self.plan):
            grad = _summed(grad, dim, runs, size)
        return grad

    def backward(self, grad, y, x):
        return (SlicedGather.apply(grad, plan=self.plan),)


def gather_along(x, positions):
    """x[..., positions_d, ...] along each dim d of the dict ``positions`` (dim -> 1-D integer array), by slices
    where every dim's positions have a plan, else by indexing one dim after another (``x`` itself for none)."""
    plan = []
    for dim, where in sorted(positions.items()):
        runs = slice_plan(where)
        if runs is None:
            for dim, where in sorted(positions.items()):
                x = x[_along(dim, Tensor._make(xp.asarray(where)))]
            return x
        plan.append((dim, runs, len(where), x.shape[dim]))
    return gather_by_plan(x, plan)


def gather_by_plan(x, plan):
    """SlicedGather of ``x`` by a ``plan`` made by hand ((dim, runs, output length, input size) per dim, gathered in
    its order and summed in the reverse; each run's inputs read once): for a gradient whose order of sums is not
    that of the outputs (a circular pad's). ``x`` itself for no dim."""
    return SlicedGather.apply(x, plan=plan) if plan else x
