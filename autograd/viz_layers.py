"""Layers in a drawn graph (``autograd.viz``): what each call of a model's layers made (``record_layers``,
``run_layers``), so that a layer's inner plumbing is drawn as one node named by the layer, and an unrolled
recurrence as one cluster per time step."""

import collections
import contextlib

from .tensor import Tensor
from .viz_graph import Drawn, _key, _links

VIEWS = {"Reshape", "Permute", "Expand", "GetItem", "Cat"}  # how a layer unpacks its result, not what it computes


class Layer(collections.namedtuple("Layer", "label output")):
    """What one call of a layer made: (label, output), a pair as ``draw(layers=...)`` takes, and
    ``inputs``, the tensors it was called with (an attribute, so that the pair still unpacks as two)."""

    def __new__(cls, label, output, inputs=None):
        layer = super().__new__(cls, label, output)
        layer.inputs = inputs
        return layer


def _tensors(obj):
    """The tensors in a layer's output or arguments: a tensor, or tuples and lists of them, nested."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    return []


def _merge_layers(drawn, layers, named, constants):
    """(drawn, {op key: (layer label, primitive names)}): each layer's ops as one node.

    A layer that knows its inputs (``Layer``) owns every op between them and its outputs: walking
    back from the outputs, the walk stops at the inputs, at named values, at other layers' outputs
    and at values that something outside the layer uses too (so that a tensor the layer took from
    elsewhere, not as an argument, does not pull in what computed it for others). Its inner values
    are not drawn. A plain (label, output) pair owns the op that made the output."""
    producer, inputs, consumers = _links(drawn)
    entries = []
    for layer in layers:
        outputs = [key for key in dict.fromkeys(_key(t) for t in _tensors(layer[1])) if key in producer]
        if outputs:
            entries.append((layer[0], outputs, getattr(layer, "inputs", None)))
    every_output = {key for _, outputs, _ in entries for key in outputs}
    merged_into, labels, hidden, extra_values, extra_edges = {}, {}, set(), {}, []
    for label, outputs, arguments in entries:
        node = producer[outputs[0]]
        entered = {_key(t) for t in _tensors(arguments)}
        region = {producer[key] for key in outputs}
        if arguments is not None and not entered & set(outputs):  # (an in-place layer keeps to its own op)
            stop = named | (every_output - set(outputs)) | entered
            growing = True
            while growing:  # until no value left to cross: one that only this layer's ops use
                crossing = {producer[v] for op in region for v in inputs[op] if v in producer and v not in stop
                            and producer[v] not in region and producer[v] not in merged_into
                            and all(user in region for user in consumers[v])}
                region |= crossing
                growing = bool(crossing)
        for op in region:
            merged_into[op] = node
        hidden |= {key for key, op in producer.items() if op in region and key not in outputs and key not in named}
        for tensor in _tensors(arguments):  # named data the layer was given: drawn going into it
            if id(tensor) in constants:
                extra_values[_key(tensor)] = tensor
                extra_edges.append((_key(tensor), node))
        computed = collections.Counter(drawn.ops[op][0] for op in reversed(drawn.ops) if op in region)
        shown = [name for name in computed if name not in VIEWS] or list(computed)
        shown = [name + (f" ×{computed[name]}" if computed[name] > 1 else "") for name in shown]
        labels[node] = (label, ", ".join(shown[:3]) + (", ..." if len(shown) > 3 else ""))
    if not merged_into:
        return drawn, labels
    values = {key: item for key, item in drawn.values.items() if key not in hidden}
    for key, tensor in extra_values.items():
        values.setdefault(key, tensor)
    ops = {key: op for key, op in drawn.ops.items() if merged_into.get(key, key) == key}
    edges, seen = [], set()
    for tail, head in drawn.edges + extra_edges:
        if tail in hidden or head in hidden:
            continue
        tail, head = merged_into.get(tail, tail), merged_into.get(head, head)
        if (tail in labels or head in labels) and (tail, head) in seen:
            continue  # a weight used by two of the layer's ops: one edge into the layer
        seen.add((tail, head))
        edges.append((tail, head))
    return Drawn(values, ops, edges, drawn.collapsed), labels


Clusters = collections.namedtuple("Clusters", "titles of after")
"""titles: one per time step, in order; of: {key: index of the step whose box holds it}; after: [(state of
step t-1, a node of step t that nothing in step t or step t-1 leads to, such as x_t)], drawn as invisible
edges, so that x_t sits below h_{t-1} and the boxes stack in one column instead of a staircase."""


def _clusters(drawn, steps):
    """The boxes of an unrolled recurrence. Walking back from each step's state and stopping at
    the other steps' states reaches that step's ops and values; what one step alone reaches is
    drawn in its box, what several reach (the shared weights, an input computed before the loop)
    outside. Data (no gradient) used by one step only, its x_t, goes into that step's box."""
    if steps is None:
        return Clusters((), {}, [])
    items = list(steps.items()) if isinstance(steps, dict) else [(f"t={t}", s) for t, s in enumerate(steps, 1)]
    producer, inputs, consumers = _links(drawn)
    states = [{_key(t) for t in _tensors(state)} & set(drawn.values) for _, state in items]
    every_state = set().union(*states)
    reached = collections.defaultdict(set)
    for i, keys in enumerate(states):
        stack, seen = list(keys), set()
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            reached[key].add(i)
            if key in drawn.ops:
                stack.extend(v for v in inputs[key] if v in producer and v not in every_state)
            elif key in producer:
                stack.append(producer[key])
    of = {key: next(iter(owners)) for key, owners in reached.items() if len(owners) == 1}
    for key, item in drawn.values.items():
        if key not in producer and not getattr(item, "requires_grad", True):
            boxes = {of.get(op) for op in consumers[key]}
            if len(boxes) == 1 and None not in boxes:
                of[key] = boxes.pop()
    inside = collections.defaultdict(set)  # what reaches each node from its own box or the step before
    for tail, head in drawn.edges:
        box = of.get(head)
        if box is not None and (of.get(tail) == box or box and tail in states[box - 1]):
            inside[head].add(tail)
    after = [(min(states[i - 1], key=list(drawn.values).index), key) for key, i in of.items()
             if i and states[i - 1] and not inside[key]]
    return Clusters([title for title, _ in items], of, after)


def _as_made(output):
    """A layer's output as the layer made it: a tensor that a later layer writes in place (an
    ``inplace=True`` activation) gets a new grad_fn, and would then be known by that layer's op."""
    if isinstance(output, Tensor) and output.grad_fn is not None:
        made = Tensor._make(output._data)
        made.grad_fn, made._requires_grad = output.grad_fn, True
        return made
    if isinstance(output, (tuple, list)):  # (an LSTM's (output, (h, c)): kept a tuple, as given)
        return type(output)(_as_made(item) for item in output) if type(output) in (tuple, list) else output
    return output


@contextlib.contextmanager
def record_layers(model):
    """``with record_layers(model) as layers:`` notes every call of the model's layers (its modules
    without children, watched through forward hooks) in ``layers``, a list of ``Layer`` (label,
    output) pairs that also know their inputs: the ``layers=`` that ``draw`` labels its ops with.
    For a loop over a cell (an unrolled RNNCell), one entry per step."""
    layers = []
    leaves = [module for module in model.modules() if not any(True for _ in module.children())]

    handles = [module.register_forward_hook(lambda module, inputs, output: layers.append(
        Layer(type(module).__name__, _as_made(output), inputs))) for module in leaves]
    try:
        yield layers
    finally:
        for handle in handles:
            handle.remove()


def run_layers(model, x):
    """Run ``model`` on ``x`` and note what each layer made: (output, layers), the ``layers=`` that
    ``draw`` labels its ops with (``record_layers``: any nn.Module works, not only a Sequential)."""
    with record_layers(model) as layers:
        return model(x), layers
