"""Drawing the graph behind a ``Value`` or a ``Tensor`` with Graphviz.

``draw(root)`` returns a ``graphviz.Digraph``: one box per value (a Value's
label, data and grad; a Tensor's name, shape, dtype and a summary of data and
grad) and one ellipse per operation, edges in the direction data flows. It
displays inline in Jupyter; ``save_svg(graph, path)`` writes SVG. The Graphviz
``dot`` program renders it; without it the DOT text is still in ``.source``.

A Tensor graph is drawn from what backward has not yet freed: draw before
``backward()``, or pass ``retain_graph=True`` to it.
"""

import collections

import graphviz
import numpy

from .backend import to_numpy
from .tensor import Tensor
from .value import Value

HIGHLIGHT = "#ffd966"  # the node being processed in a step-through
DONE = "#d9ead3"  # nodes whose gradient is known
INSTALL_DOT = ("Graphviz's `dot` program is needed to render the graph: install it with "
               "`sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
               "`conda install graphviz`, or `make install` in chainrule's checkout. "
               "The DOT source is available as graph.source.")

Drawn = collections.namedtuple("Drawn", "values ops edges collapsed")
"""values: {id: (object, name)}; ops: {id: (label, output id)}; edges: [(from, to)];
collapsed: how many nodes the limit left out."""


def walk(root, max_nodes=150):
    """The nodes and edges to draw, breadth first from the root, at most max_nodes values."""
    values, ops, edges = {}, {}, []
    queue = collections.deque([root])
    values[_key(root)] = root
    reachable = _count(root)
    while queue:
        item = queue.popleft()
        for op_key, op_label, parents in _producers(item):
            ops[op_key] = (op_label, _key(item))
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
    grad = None

    def __init__(self, node, info):
        self.grad_fn, self.shape, self.dtype = node, info.shape, info.dtype
        self._data = node.output_data if node.saves_output else None


def _input_items(node):
    """The values in the graph that ``node`` was computed from."""
    items = []
    for x, parent in zip(node.inputs, node.parents):
        if parent is None:
            continue  # a constant: no gradient flows to it
        items.append(x if isinstance(x, Tensor) else parent if isinstance(parent, Tensor) else _Unkept(parent, x))
    return items


def _producers(item):
    """[(op key, op label, parents)] for the op that made ``item`` (none for a leaf)."""
    if isinstance(item, Value):
        return [(f"op{id(item)}", item.op, item.parents)] if item.op else []
    node = item.grad_fn
    if node is None:
        return []
    if node.inputs is None:  # freed by a backward pass
        return [(f"op{id(node)}", f"{node.name}\n(freed)", [])]
    return [(f"op{id(node)}", node.name, _input_items(node))]


def _count(root):
    """How many values are reachable (to say how many the node limit collapsed)."""
    seen, stack = {id(root)}, [root]
    while stack:
        for _, _, parents in _producers(stack.pop()):
            for parent in parents:
                if id(parent) not in seen:
                    seen.add(id(parent))
                    stack.append(parent)
    return len(seen)


def _escape(text):
    for char in "\\{}|<>\"":
        text = text.replace(char, "\\" + char)
    return text.replace("\n", "\\n")


def summarize(array, small=6):
    """The numbers of a small array, else its mean, spread and range."""
    array = to_numpy(array)
    if array.size <= small:
        return numpy.array2string(array.reshape(-1) if array.ndim > 1 else array, precision=4,
                                  separator=", ", suppress_small=True)
    if array.dtype.kind not in "fc":
        return f"{array.dtype} values"
    return (f"mean {array.mean():.4g} sd {array.std():.3g} "
            f"[{array.min():.3g}, {array.max():.3g}]")


def _value_label(item, name, show_data, show_grad, grad):
    if isinstance(item, Value):
        fields = [name or item.label or " "]
        if show_data:
            fields.append(f"data {item.data:.4f}")
        if show_grad:
            fields.append("grad ?" if grad is _UNKNOWN else f"grad {item.grad if grad is None else grad:.4f}")
        return "{ " + " | ".join(_escape(f) for f in fields) + " }"
    fields = [name or ("leaf" if item.grad_fn is None else " "), f"{tuple(item.shape)} {item.dtype}"]
    if show_data:
        fields.append("data (not kept)" if item._data is None else "data " + summarize(item._data))
    if show_grad:
        if grad is _UNKNOWN:
            fields.append("grad ?")
        else:
            known = item.grad if grad is None else grad
            if known is not None:
                fields.append("grad " + summarize(known._data if isinstance(known, Tensor) else known))
    return "{ " + " | ".join(_escape(f) for f in fields) + " }"


_UNKNOWN = object()


def draw(root, names=None, rankdir="LR", show_data=True, show_grad=True, max_nodes=150,
         highlight=None, grads=None):
    """A ``graphviz.Digraph`` of the graph that computed ``root`` (a Value or a Tensor).

    names:     {name: tensor} to label parameters, e.g. dict(model.named_parameters()).
    rankdir:   'LR' (left to right) or 'TB' (top down).
    show_data, show_grad: include values and gradients in the boxes.
    max_nodes: draw at most this many values; a note says how many were left out.
    highlight: the key of one node to colour (used by the step-through).
    grads:     {key: gradient} to show instead of ``.grad``; values missing from it
               show 'grad ?' (the step-through's not-yet-computed gradients).
    """
    if not isinstance(root, (Value, Tensor)):
        raise TypeError(f"draw expects a Value or a Tensor, got {type(root).__name__}")
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise ValueError(f"rankdir must be 'LR' or 'TB', got {rankdir!r}")
    labels = {id(tensor): name for name, tensor in (names or {}).items()}
    drawn = walk(root, max_nodes)
    graph = graphviz.Digraph(format="svg", graph_attr={"rankdir": rankdir, "fontname": "Helvetica"},
                             node_attr={"fontname": "Helvetica", "fontsize": "11"})
    for key, item in drawn.values.items():
        grad = None if grads is None else grads.get(key, _UNKNOWN)
        style = {"style": "filled", "fillcolor": HIGHLIGHT if key == highlight else
                 (DONE if grads is not None and key in grads else "white")}
        graph.node(key, _value_label(item, labels.get(id(item)), show_data, show_grad, grad),
                   shape="record", **style)
    for key, (label, _) in drawn.ops.items():
        fill = HIGHLIGHT if key == highlight else "#eeeeee"
        graph.node(key, label, shape="ellipse", style="filled", fillcolor=fill)
    for tail, head in drawn.edges:
        graph.edge(tail, head)
    if drawn.collapsed:
        graph.node("collapsed", f"{drawn.collapsed} more nodes not drawn (max_nodes={max_nodes})",
                   shape="note", style="dashed")
    return graph


def render_svg(graph):
    """The SVG text of a Digraph, or an error naming how to install Graphviz."""
    try:
        return graph.pipe(format="svg").decode()
    except graphviz.ExecutableNotFound:
        raise RuntimeError(INSTALL_DOT) from None


def save_svg(graph, path):
    """Write a Digraph (from ``draw``) to ``path`` as SVG."""
    svg = render_svg(graph)
    with open(path, "w", encoding="utf-8") as file:
        file.write(svg)
    return path


def dot_available():
    try:
        graphviz.version()
        return True
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError):
        return False

