"""Drawing the graph behind a ``Value`` or a ``Tensor`` with Graphviz.

``draw(root)`` returns a ``graphviz.Digraph``: one box per value (a Value's
label, data and grad; a Tensor's name, shape, dtype and a summary of data and
grad) and one ellipse per operation, edges in the direction data flows. Boxes are
coloured by role (data, parameter, computed value, loss) and a legend says which
is which; a large graph is laid out top to bottom. Ops can be labelled with the layers
that made them (``run_layers``, ``record_layers``: a layer's inner plumbing becomes one
node), and an unrolled recurrence drawn one box per time step (``steps=``). It displays inline in Jupyter;
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
from .viz_graph import Drawn, _count, _key, _links, _producers, walk  # noqa: F401  (autograd.viz.walk, as before)
from .viz_layers import Layer, _clusters, _merge_layers, record_layers, run_layers  # noqa: F401  (viz.run_layers)

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
WIDE = 1400  # px: and a row laid out wider than this
LONG = 9  # or, where the row cannot be measured, with a longer chain of boxes and ops than this
INSTALL_DOT = ("Graphviz's `dot` program is needed to render the graph: install it with "
               "`sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
               "`conda install graphviz`, or `make install` in chainrule's checkout. "
               "The DOT source is available as graph.source.")

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
        return numpy.array2string(array.reshape(-1) if array.ndim > 1 else array, precision=4, separator=", ",
                                  suppress_small=True, max_line_width=30)  # wrapped: as narrow as a summary
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
            known = item._grad if grad is None else grad  # (not .grad: a non-leaf would warn)
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
         highlight=None, grads=None, layers=None, received=(), legend=True, steps=None):
    """A ``graphviz.Digraph`` of the graph that computed ``root`` (a Value or a Tensor).

    names:     {name: tensor} to label values, e.g. dict(model.named_parameters()); a named tensor
               that needs no gradient (an input batch, the targets) is drawn as data.
    rankdir:   'LR' (left to right) or 'TB' (top down); by default LR where the row fits a window
               1400 px wide (measured with dot; without it, and in a step-through, where no chain
               has more than 9 boxes and ops) and TB for graphs of more than 12 values.
    show_data, show_grad: include values and gradients in the boxes.
    max_nodes: draw at most this many values; a note says how many were left out.
    highlight: the key of one node to colour (used by the step-through).
    grads:     {key: gradient} to show instead of ``.grad``; values missing from it
               show 'grad ?' (the step-through's not-yet-computed gradients).
    received:  keys in ``grads`` whose gradient is still partial (step-through).
    layers:    [(label, output)]: the op that computed each output (a tensor, or a tuple of them
               as an LSTM returns) is labelled with the user's name for it (``Linear``, ``ReLU``,
               ``CrossEntropyLoss``), its primitive in small type. ``run_layers(model, x)`` and
               ``record_layers(model)`` make these, and note each layer's inputs too: everything the
               layer computed between its inputs and its outputs is then one node (an ``LSTM`` is
               one ``LSTM`` node, ``LSTMLayer`` in small type, not the reshapes that unpack it), and
               named data that entered the layer is drawn going into it.
    steps:     [h_1, ..., h_T]: the state after each time step of an unrolled recurrence (a tensor,
               or a tuple such as an LSTMCell's (h, c)); or {title: state}. Each step's ops and
               values are drawn in one box titled t=1, ..., t=T (or the dict's titles), in order;
               what several steps share (the weights) is drawn once, outside, with an edge into
               every step that uses it.
    legend:    draw a legend of the colours.
    """
    if not isinstance(root, (Value, Tensor)):
        raise TypeError(f"draw expects a Value or a Tensor, got {type(root).__name__}")
    if rankdir not in (None, "LR", "TB", "RL", "BT"):
        raise ValueError(f"rankdir must be 'LR' or 'TB', got {rankdir!r}")
    names = dict(names or {})
    labels = {_key(tensor): name for name, tensor in names.items()}
    constants = {id(t) for t in names.values() if isinstance(t, Tensor) and not t.requires_grad}
    drawn = walk(root, max_nodes, constants)
    _attach_constants(drawn, [t for t in names.values() if isinstance(t, Tensor) and id(t) in constants])
    drawn, op_labels = _merge_layers(drawn, layers.items() if isinstance(layers, dict) else layers or (),
                                     set(labels) | {_key(root)}, constants)
    clusters = _clusters(drawn, steps)
    root_key = _key(root)
    if root_key not in labels and isinstance(root, Tensor) and root.numel() == 1:
        labels[root_key] = "loss"
    stepping = grads is not None
    spine = set(_spine(drawn, root_key))

    def build(rankdir):
        graph = graphviz.Digraph(format="svg", graph_attr={"rankdir": rankdir, "fontname": "Helvetica",
                                                           "nodesep": "0.25", "ranksep": "0.3", "newrank": "true"},
                                 node_attr={"fontname": "Helvetica", "fontsize": "11"},
                                 edge_attr={"arrowsize": "0.7"})
        boxes = {None: graph}
        for i, title in enumerate(clusters.titles):  # one box per time step, in order
            boxes[i] = graphviz.Digraph(name=f"cluster_step{i + 1}", graph_attr={
                "label": title, "labeljust": "l", "fontsize": "12", "style": "rounded,dashed", "color": "#999999"})
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
            boxes[clusters.of.get(key)].node(ids[key], _box(rows, fill, border, width), shape="plain",
                                             **({"group": "spine"} if key in spine else {}))
        for key, (label, _, _) in drawn.ops.items():
            fill = HIGHLIGHT if key == highlight else ROLES["op"][0]
            if key in op_labels:
                layer, primitives = op_labels[key]
                small = f'<BR/><FONT POINT-SIZE="10">{_html(primitives)}</FONT>' if primitives != layer else ""
                label = f"<<B>{_html(layer)}</B>{small}>"
            used.add("current" if key == highlight else "op")
            boxes[clusters.of.get(key)].node(ids[key], label, shape="ellipse", style="filled", fillcolor=fill,
                                             width="0", height="0", margin="0.08,0.03",  # as small as its text
                                             **({"group": "spine"} if key in spine else {}))
        for i in range(len(clusters.titles)):
            graph.subgraph(boxes[i])
        for tail, head in drawn.edges:
            graph.edge(ids[tail], ids[head], **({"weight": "8"} if tail in spine and head in spine else {}))
        for tail, head in clusters.after + _two_abreast(drawn, spine):
            graph.edge(ids[tail], ids[head], style="invis")
        if drawn.collapsed:
            graph.node("collapsed", f"{drawn.collapsed} more nodes not drawn (max_nodes={max_nodes})",
                       shape="note", style="dashed")
        if legend:
            _legend(graph, [k for k in (*ROLES, *STATES) if k in used and not (stepping and k in ROLES
                                                                                 and k != "op")],
                    across=rankdir in ("LR", "RL"))
        return graph

    if rankdir is not None:
        return build(rankdir)
    if len(drawn.values) > LARGE:
        return build("TB")
    graph = build("LR")
    width = None if stepping else _width_px(graph)  # a step-through keeps one direction whatever its text
    if (_longest_chain(drawn) > LONG) if width is None else width > WIDE:
        graph = build("TB")
    return graph


def _spine(drawn, root_key):
    """The main line of the computation, back from the root: each op's first computed input (else its
    first input of data, else its first input). Drawn in one Graphviz group, in a straight line, so
    that the picture does not drift sideways as parameters join it."""
    producer, inputs, _ = _links(drawn)
    line, key = [], root_key
    while key is not None and key not in line:
        line.append(key)
        op = producer.get(key)
        if op is None:
            break
        line.append(op)
        candidates = inputs[op]
        key = next((v for v in candidates if v in producer), None) or next(
            (v for v in candidates if not getattr(drawn.values[v], "requires_grad", True)), None) or next(
            iter(candidates), None)
    return line


def _two_abreast(drawn, spine):
    """Invisible edges that lay an op's parameters out two to a row (an LSTM's four weights in a
    row beside its input would be wider than a window): [(parameter, the one two places after it)]."""
    producer, inputs, _ = _links(drawn)
    placed, edges = set(), []
    for op in drawn.ops:
        weights = [v for v in dict.fromkeys(inputs[op]) if v not in producer and v not in spine and v not in placed
                   and getattr(drawn.values[v], "requires_grad", False)]
        placed.update(weights)
        edges += zip(weights, weights[2:])
    return edges


def _width_px(graph):
    """How wide Graphviz lays the graph out, in CSS px (None without the dot program)."""
    try:
        return float(graph.pipe(format="plain").split()[2]) * 96  # "graph scale width height", inches
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError):
        return None


def _longest_chain(drawn):
    """How many nodes the longest path through the drawn graph passes (its ranks, laid out in a row)."""
    heads = collections.defaultdict(list)
    for tail, head in drawn.edges:
        heads[tail].append(head)
    length = {}
    for start in list(heads):
        stack = [(start, False)]
        while stack:
            key, expanded = stack.pop()
            if key in length:
                continue
            if expanded:
                length[key] = 1 + max((length[head] for head in heads[key]), default=0)
            else:
                stack.append((key, True))
                stack.extend((head, False) for head in heads[key] if head not in length)
    return max(length.values(), default=1)


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

