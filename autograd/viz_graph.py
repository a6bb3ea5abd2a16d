"""The graph behind a ``Value`` or a ``Tensor`` as ``autograd.viz`` draws it: the values and operations a walk back
from the root finds (``walk``), each known by a key, and who made and uses what (``_links``)."""

import collections

from .tensor import Tensor
from .value import Value

Drawn = collections.namedtuple("Drawn", "values ops edges collapsed")
"""values: {key: object}; ops: {key: (label, output key, Tensor node or None)}; edges: [(from, to)];
collapsed: how many nodes the limit left out."""


def walk(root, max_nodes=150, constants=()):
    """The nodes and edges to draw, breadth first from the root, at most max_nodes values.
    ``constants``: ids of tensors that need no gradient but are drawn all the same (the data)."""
    values, ops, edges = {}, {}, []
    queue = collections.deque([root])
    values[_key(root)] = root
    reachable = _count(root)
    while queue:
        item = queue.popleft()
        for op_key, op_label, parents in _producers(item, constants):
            ops[op_key] = (op_label, _key(item), getattr(item, "grad_fn", None))
            edges.append((op_key, _key(item)))
            for parent in parents:
                if _key(parent) not in values:
                    if len(values) >= max_nodes:
                        continue
                    values[_key(parent)] = parent
                    queue.append(parent)
                edges.append((_key(parent), op_key))
    return Drawn(values, ops, edges, max(reachable - len(values), 0))


def _key(item):
    """One key per value: a computed tensor is known by the node that made it (an op that did
    not keep its input meets it only through that node)."""
    node = getattr(item, "grad_fn", None)
    return f"v{id(node)}" if node is not None else f"v{id(item)}"


class _Unkept:
    """A computed value that no node kept (the ops that used it needed only its shape): drawn
    from its producer, with its data when the producer saved its output."""

    requires_grad = True
    _grad = None

    def __init__(self, node, info):
        self.grad_fn, self.shape, self.dtype = node, info.shape, info.dtype
        self._data = node.output_data if node.saves_output else None


def _input_items(node, constants=()):
    """The values in the graph that ``node`` was computed from (and the drawn constants)."""
    items = []
    for x, parent in zip(node.inputs, node.parents):
        if parent is None:
            if isinstance(x, Tensor) and id(x) in constants:
                items.append(x)  # data: no gradient flows to it, drawn to show where it enters
            continue
        items.append(x if isinstance(x, Tensor) else parent if isinstance(parent, Tensor) else _Unkept(parent, x))
    return items


def _producers(item, constants=()):
    """[(op key, op label, parents)] for the op that made ``item`` (none for a leaf)."""
    if isinstance(item, Value):
        return [(f"op{id(item)}", item.op, item.parents)] if item.op else []
    node = item.grad_fn
    if node is None:
        return []
    if node.inputs is None:  # freed by a backward pass
        return [(f"op{id(node)}", f"{node.op_name}\n(freed)", [])]
    return [(f"op{id(node)}", node.op_name, _input_items(node, constants))]


def _count(root):
    """How many values are reachable (to say how many the node limit collapsed)."""
    seen, stack = {_key(root)}, [root]
    while stack:
        for _, _, parents in _producers(stack.pop()):
            for parent in parents:
                if _key(parent) not in seen:  # by key: an unkept value is met through fresh stand-ins
                    seen.add(_key(parent))
                    stack.append(parent)
    return len(seen)


def _links(drawn):
    """{value: the op that made it}, {op: its input values}, {value: the ops that use it}."""
    producer, inputs, consumers = {}, collections.defaultdict(list), collections.defaultdict(list)
    for tail, head in drawn.edges:
        if tail in drawn.ops:
            producer[head] = tail
        else:
            inputs[head].append(tail)
            consumers[tail].append(head)
    return producer, inputs, consumers
