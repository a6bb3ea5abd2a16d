"""Drawing the graph behind a ``Value`` or a ``Tensor`` with Graphviz.

``draw(root)`` returns a ``graphviz.Digraph``: one box per value (a Value's
label, data and grad; a Tensor's name, shape, dtype and a summary of data and
grad) and one ellipse per operation, edges in the direction data flows. Boxes are
coloured by role (data, parameter, computed value, loss) and a legend says which
is which; a large graph is laid out top to bottom. It displays inline in Jupyter;
``save_svg(graph, path)`` writes SVG. The Graphviz ``dot`` program renders it;
without it the DOT text is still in ``.source``.

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
DONE = "#b6d7a8"  # nodes whose gradient is complete
RECEIVED = "#e3eefa"  # nodes that have received part of their gradient
ROLES = {  # role: (fill colour, what the legend says)
    "data": ("#cfe2f3", "data (inputs, targets)"),
    "parameter": ("#fce5cd", "parameter (learned)"),
    "leaf": ("#fce5cd", "leaf (input or weight)"),
    "value": ("#ffffff", "computed value"),
    "op": ("#eeeeee", "operation"),
    "loss": ("#f4cccc", "loss (where backward starts)"),
}
STATES = {  # step-through fills: (colour, what the legend says)
    "current": (HIGHLIGHT, "being processed now"),
    "done": (DONE, "gradient complete"),
    "received": (RECEIVED, "gradient received so far"),
    "unknown": ("#ffffff", "gradient not known yet"),
}
LARGE = 12  # graphs with more values than this are laid out top to bottom
INSTALL_DOT = ("Graphviz's `dot` program is needed to render the graph: install it with "
               "`sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
               "`conda install graphviz`, or `make install` in chainrule's checkout. "
               "The DOT source is available as graph.source.")

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
    grad = None

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
        return [(f"op{id(node)}", f"{node.name}\n(freed)", [])]
    return [(f"op{id(node)}", node.name, _input_items(node, constants))]


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


def _html(text):
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\n", "<BR/>"))


def number(x):
    """How the pictures and the step-through captions write a number: 4 significant digits."""
    return f"{x:.4g}"


def summarize(array, small=6):
    """The numbers of a small array, else its mean, spread and range."""
    array = to_numpy(array)
    if array.size <= small:
        return numpy.array2string(array.reshape(-1) if array.ndim > 1 else array, precision=4,
                                  separator=", ", suppress_small=True)
    if array.dtype.kind not in "fc":
        return f"{array.size} values in [{array.min()}, {array.max()}]" if array.dtype.kind in "iub" else "values"
    return f"mean {array.mean():.3g} sd {array.std():.3g}\nrange [{array.min():.3g}, {array.max():.3g}]"


def _value_rows(item, name, show_data, show_grad, grad):
    """The lines of a value's box: name, (shape and dtype), data, grad."""
    if isinstance(item, Value):
        rows = [name or item.label or ""]  # an unnamed value: no empty title line
        if show_data:
            rows.append(f"data {number(item.data)}")
        if show_grad:
            rows.append("grad ?" if grad is _UNKNOWN else f"grad {number(item.grad if grad is None else grad)}")
        return rows
    rows = [name or ("leaf" if item.grad_fn is None else ""), f"{tuple(item.shape)} {item.dtype}"]
    if show_data:
        rows.append("data (not kept)" if item._data is None else "data " + summarize(item._data))
    if show_grad and item.requires_grad:
        if grad is _UNKNOWN:
            rows.append("grad ?")
        else:
            known = item.grad if grad is None else grad
            if known is not None:
                rows.append("grad " + summarize(known._data if isinstance(known, Tensor) else known))
    return rows


def _box(rows, fill, border="black", penwidth=1):
    """An HTML-like table: the same shape whichever way the graph runs (records turn sideways).
    The first row is the name, in bold (left out when empty)."""
    cells = "".join(f"<TR><TD>{'<B>' + _html(row) + '</B>' if i == 0 else _html(row)}</TD></TR>"
                    for i, row in enumerate(rows) if row)
    return (f'<<TABLE BORDER="{penwidth}" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2" COLOR="{border}" '
            f'BGCOLOR="{fill}">{cells}</TABLE>>')


def _role(item, key, root_key, constants):
    if key == root_key:
        return "loss"
    if isinstance(item, Value):
        return "leaf" if not item.op else "value"
    if id(item) in constants or not item.requires_grad:
        return "data"
    return "parameter" if item.grad_fn is None else "value"


_UNKNOWN = object()


def draw(root, names=None, rankdir=None, show_data=True, show_grad=True, max_nodes=150,
         highlight=None, grads=None, layers=None, received=(), legend=True):
    """A ``graphviz.Digraph`` of the graph that computed ``root`` (a Value or a Tensor).

    names:     {name: tensor} to label values, e.g. dict(model.named_parameters()); a named tensor
               that needs no gradient (an input batch, the targets) is drawn as data.
    rankdir:   'LR' (left to right) or 'TB' (top down); by default LR for small graphs and TB
               for graphs of more than 12 values (a long row does not fit a window).
    show_data, show_grad: include values and gradients in the boxes.
    max_nodes: draw at most this many values; a note says how many were left out.
    highlight: the key of one node to colour (used by the step-through).
    grads:     {key: gradient} to show instead of ``.grad``; values missing from it
               show 'grad ?' (the step-through's not-yet-computed gradients).
    received:  keys in ``grads`` whose gradient is still partial (step-through).
    layers:    [(label, tensor)]: the op that computed each tensor is labelled with the user's
               name for it (``Linear``, ``ReLU``, ``CrossEntropyLoss``), the primitive in small
               type; ``run_layers(model, x)`` makes these for a Sequential model.
    legend:    draw a legend of the colours.
    """
    if not isinstance(root, (Value, Tensor)):
        raise TypeError(f"draw expects a Value or a Tensor, got {type(root).__name__}")
    if rankdir not in (None, "LR", "TB", "RL", "BT"):
        raise ValueError(f"rankdir must be 'LR' or 'TB', got {rankdir!r}")
    names = dict(names or {})
    labels = {_key(tensor): name for name, tensor in names.items()}
    constants = {id(t) for t in names.values() if isinstance(t, Tensor) and not t.requires_grad}
    op_labels = {f"op{id(t.grad_fn)}": label for label, t in (layers.items() if isinstance(layers, dict) else
                                                              layers or ()) if getattr(t, "grad_fn", None)}
    drawn = walk(root, max_nodes, constants)
    _attach_constants(drawn, [t for t in names.values() if isinstance(t, Tensor) and id(t) in constants])
    if rankdir is None:
        rankdir = "TB" if len(drawn.values) > LARGE else "LR"
    root_key = _key(root)
    if root_key not in labels and isinstance(root, Tensor) and root.numel() == 1:
        labels[root_key] = "loss"
    graph = graphviz.Digraph(format="svg", graph_attr={"rankdir": rankdir, "fontname": "Helvetica",
                                                       "nodesep": "0.25", "ranksep": "0.3"},
                             node_attr={"fontname": "Helvetica", "fontsize": "11"},
                             edge_attr={"arrowsize": "0.7"})
    stepping = grads is not None
    used = set()
    ids = graph.node_ids = stable_ids(drawn)
    for key, item in drawn.values.items():
        grad = None if grads is None else grads.get(key, _UNKNOWN)
        role = _role(item, key, root_key, constants)
        rows = _value_rows(item, labels.get(key), show_data, show_grad, grad)
        if stepping:
            state = ("current" if key == highlight else "received" if key in received else
                     "done" if key in grads else "unknown")
            used.add(state)
            fill, border, width = STATES[state][0], ROLES[role][0] if role != "value" else "black", 3
            if role == "value":
                width = 1
        else:
            used.add(role)
            fill, border, width = ROLES[role][0], "black", 1
        graph.node(ids[key], _box(rows, fill, border, width), shape="plain")
    for key, (label, _, _) in drawn.ops.items():
        fill = HIGHLIGHT if key == highlight else ROLES["op"][0]
        if key in op_labels:
            label = (f'<<B>{_html(op_labels[key])}</B><BR/><FONT POINT-SIZE="10">{_html(label)}</FONT>>')
        used.add("current" if key == highlight else "op")
        graph.node(ids[key], label, shape="ellipse", style="filled", fillcolor=fill,
                   width="0", height="0", margin="0.08,0.03")  # as small as its text: narrower rows
    for tail, head in drawn.edges:
        graph.edge(ids[tail], ids[head])
    if drawn.collapsed:
        graph.node("collapsed", f"{drawn.collapsed} more nodes not drawn (max_nodes={max_nodes})",
                   shape="note", style="dashed")
    if legend:
        _legend(graph, [k for k in (*ROLES, *STATES) if k in used and not (stepping and k in ROLES
                                                                             and k != "op")],
                across=rankdir in ("LR", "RL"))
    return graph


def _legend(graph, keys, across):
    """A swatch and a few words per colour in use, as the graph's label under the picture (a node
    would take a place in the layout and widen it): in one row under a wide graph (``across``),
    else in one column."""
    cells = [f'<TD BGCOLOR="{colour}" BORDER="1" WIDTH="14"> </TD><TD ALIGN="LEFT">{_html(text)}</TD>'
             for colour, text in ({**ROLES, **STATES}[key] for key in keys)]
    rows = f"<TR>{''.join(cells)}</TR>" if across else "".join(f"<TR>{cell}</TR>" for cell in cells)
    graph.attr(label=f'<<TABLE BORDER="0" CELLSPACING="3" CELLPADDING="1">{rows}</TABLE>>', labelloc="b",
               labeljust="l", fontsize="10")


def stable_ids(drawn):
    """{key: id} with ids that depend only on the graph's shape (v1, v2, ... and op1, op2, ... in the
    order of the walk), so that the same computation draws the same SVG every time."""
    ids = {key: f"v{i}" for i, key in enumerate(drawn.values, 1)}
    ids.update({key: f"op{i}" for i, key in enumerate(drawn.ops, 1)})
    return ids


def _attach_constants(drawn, tensors):
    """Named data that entered an op as a parameter rather than an input (the targets of a loss):
    drawn beside the op that holds an equal array."""
    for tensor in tensors:
        key = _key(tensor)
        if key in drawn.values:
            continue
        array = to_numpy(tensor._data)
        for op_key in list(drawn.ops):
            node = drawn.ops[op_key][2] if len(drawn.ops[op_key]) > 2 else None
            if node is None:
                continue
            if any(isinstance(v, numpy.ndarray) and v.shape == array.shape and numpy.array_equal(v, array)
                   for v in vars(node).values()):
                drawn.values[key] = tensor
                drawn.edges.append((key, op_key))
                break


def run_layers(model, x):
    """Run ``model`` on ``x`` and note what each layer made: (output, [(layer class name, its output)]),
    the ``layers=`` that ``draw`` labels its ops with. The layers are the model's modules without
    children, watched through forward hooks (so any nn.Module works, not only a Sequential)."""
    layers = []
    leaves = [module for module in model.modules() if not any(True for _ in module.children())]
    handles = [module.register_forward_hook(lambda module, inputs, output: layers.append(
        (type(module).__name__, output))) for module in leaves]
    try:
        return model(x), layers
    finally:
        for handle in handles:
            handle.remove()


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

