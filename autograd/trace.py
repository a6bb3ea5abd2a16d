"""Backpropagation, one chain-rule step at a time.

``trace_backward(root)`` runs root's ordinary backward pass and records each
step in the order the engine applies the chain rule: the node, the upstream
gradient dL/dY, the local derivative dY/dX, and what it sends to each parent
(shares add up where a node is reused). The trace only watches, through the
engine's ``on_step`` callback: the gradients are the engine's own.

Each step renders as the graph with that node highlighted and the gradients
known so far filled in; ``save_html(path)`` writes one self-contained page
(inline SVG, no network, no external scripts) that steps with buttons, a
slider or the arrow keys; in Jupyter the trace shows itself the same way.
"""

import collections
import html
import itertools

from . import differentiate, viz
from .engine import backpropagate, topological_order
from .tensor import Tensor
from .value import Value

Step = collections.namedtuple("Step", "key name upstream local contributions caption grads")
"""key: the drawn node to highlight; grads: {drawn key: gradient} known after this step."""


def _number(x):
    return f"{x:.4g}"


class BackwardTrace:
    def __init__(self, root, names=None, rankdir="LR"):
        self.root, self.names, self.rankdir = root, names, rankdir
        self.steps = []

    # -- rendering -------------------------------------------------------------------

    def graph(self, i):
        """The Digraph of step i (0 is the forward graph before backward; i = 1..n after step i)."""
        if i == 0:
            return viz.draw(self.root, self.names, self.rankdir, grads={})
        step = self.steps[i - 1]
        return viz.draw(self.root, self.names, self.rankdir, highlight=step.key, grads=step.grads)

    def captions(self):
        return ["The forward pass is done: every value is known, no gradient yet. "
                "Backpropagation starts at the output with dL/dL = 1."] + [s.caption for s in self.steps]

    def html(self, standalone=True):
        """The step-through as HTML: every step's SVG inline, and a few lines of script."""
        uid = f"trace{id(self)}"
        frames = []
        for i, caption in enumerate(self.captions()):
            key = "" if i == 0 else self.steps[i - 1].key
            svg = viz.render_svg(self.graph(i))
            svg = svg[svg.index("<svg"):]  # drop the XML prologue: the SVG sits inside HTML
            frames.append(f'<div class="step" data-caption="{html.escape(caption)}" '
                          f'data-highlight="{key}" style="display:none">{svg}</div>')
        body = PAGE_BODY.format(uid=uid, last=len(frames) - 1, frames="\n".join(frames))
        if not standalone:
            return body
        return PAGE.format(body=body)

    def save_html(self, path):
        """Write the step-through as one self-contained HTML file."""
        with open(path, "w", encoding="utf-8") as file:
            file.write(self.html())
        return path

    def _repr_html_(self):
        return self.html(standalone=False)

    def show(self):
        """In Jupyter: a slider over the steps (ipywidgets), else the HTML page inline."""
        from IPython.display import HTML, SVG, display

        try:
            import ipywidgets
        except ImportError:
            return display(HTML(self.html(standalone=False)))
        captions = self.captions()

        def view(step):
            print(captions[step])
            display(SVG(viz.render_svg(self.graph(step))))

        return ipywidgets.interact(view, step=ipywidgets.IntSlider(0, 0, len(self.steps), 1))

    def __len__(self):
        return len(self.steps)


def trace_backward(root, names=None, rankdir="LR"):
    """Run ``root``'s backward pass (a Value, or a one-element Tensor) and record it.

    For a Tensor the graph is kept (retain_graph=True) so that it can still be drawn.
    Returns a ``BackwardTrace``; ``root``'s leaves get their ``.grad`` as usual.
    """
    trace = BackwardTrace(root, names, rankdir)
    if isinstance(root, Value):
        _trace_values(trace, root)
    elif isinstance(root, Tensor):
        _trace_tensors(trace, root, names or {})
    else:
        raise TypeError(f"trace_backward expects a Value or a Tensor, got {type(root).__name__}")
    return trace


def _trace_values(trace, root):
    # unlabelled values are called v1, v2, ... from the output down, in captions and pictures alike
    counter = itertools.count(1)
    names = {id(v): v.label or f"v{next(counter)}" for v in topological_order([root])}
    trace.names = {names[id(v)]: v for v in topological_order([root])}

    def name(value):
        return names[id(value)]

    known, shares = {}, collections.Counter()

    def on_step(node, grad, parent_grads):
        known[viz._key(node)] = node.grad
        y = name(node)
        summed = f" (the sum of {shares[id(node)]} shares)" if shares[id(node)] > 1 else ""
        if not node.parents:
            caption = f"{y} is a leaf: dL/d{y} = {_number(node.grad)}{summed}, its final gradient."
            local, contributions = (), ()
        else:
            local = tuple(node.local_grads)
            contributions = tuple((name(p), g) for p, g in zip(node.parents, parent_grads))
            for p in node.parents:
                shares[id(p)] += 1
            inputs = _expression(node.op, [name(p) for p in node.parents])
            terms = "; ".join(f"dL/d{name(p)} += dL/d{y} · d{y}/d{name(p)} = {_number(grad)} × {_number(d)} = "
                              f"{_number(g)}" for p, d, g in zip(node.parents, local, parent_grads))
            caption = f"{y} = {inputs}, dL/d{y} = {_number(grad)}{summed}. Chain rule: {terms}"
        trace.steps.append(Step(viz._key(node), y, grad, local, contributions, caption, dict(known)))

    backpropagate([root], [1.0], retain_graph=True, on_step=on_step)


def _expression(op, operands):
    """'a * b' for a binary operator, 'a**2' for a power, 'tanh(a)' for a function."""
    if op.startswith("**"):
        return f"{operands[0]}{op}"
    if len(operands) == 2:
        return f"{operands[0]} {op} {operands[1]}"
    return f"{op}({', '.join(operands)})"


def _rule(node):
    """The first paragraph of an op's docstring: its forward and local derivative."""
    doc = (type(node).__doc__ or node.name).strip().split("\n\n")[0]
    return " ".join(line.strip() for line in doc.splitlines())


def _trace_tensors(trace, root, names):
    drawn = viz.walk(root, max_nodes=10**9)
    output_of = {key: output for key, (_, output) in drawn.ops.items()}
    labels = {id(t): n for n, t in names.items()}
    known = {}

    def label(tensor):
        if id(tensor) in labels:
            return f"{labels[id(tensor)]} {tuple(tensor.shape)}"
        made_by = "input" if getattr(tensor, "grad_fn", None) is None else f"({tensor.grad_fn.name} output)"
        return f"{made_by} {tuple(tensor.shape)}"

    def on_step(node, grad, parent_grads):
        if isinstance(node, Tensor):  # a leaf: its gradient is complete
            key = viz._key(node)
            known[key] = grad
            caption = (f"leaf {label(node)}: dL/d{labels.get(id(node), 'x')} {tuple(grad.shape)} is complete "
                       "and accumulates into .grad")
            trace.steps.append(Step(key, label(node), grad, None, (), caption, dict(known)))
            return
        key = f"op{id(node)}"
        known[output_of[key]] = grad
        rule = _rule(node)
        inputs = [x if isinstance(x, Tensor) or parent is None else
                  parent if isinstance(parent, Tensor) else viz._Unkept(parent, x)
                  for x, parent in zip(node.inputs, node.parents)]
        sent = ", ".join(f"dL/d{label(x)}" for x, g in zip(inputs, parent_grads) if g is not None)
        caption = f"{node.name}: {rule}. Upstream dL/dY {tuple(grad.shape)} → {sent or 'nothing to send'}"
        contributions = tuple((label(x), None if g is None else tuple(g.shape))
                              for x, g in zip(inputs, parent_grads))
        trace.steps.append(Step(key, node.name, tuple(grad.shape), rule, contributions, caption, dict(known)))

    differentiate.backward([root], retain_graph=True, on_step=on_step)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backpropagation, step by step</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 1.5em; }}
.trace-controls button {{ font-size: 1em; padding: 0.3em 0.8em; }}
.trace-caption {{ font-size: 1.05em; min-height: 2.6em; max-width: 70em; }}
.step svg {{ max-width: 100%; height: auto; }}
</style></head>
<body>
<h1>Backpropagation, step by step</h1>
<p>Press <b>next</b> (or the right arrow key) to apply the chain rule one node at a time.
The highlighted node is the one being processed; green boxes already know their gradient.</p>
{body}
</body></html>
"""

PAGE_BODY = """<div class="trace" id="{uid}">
<div class="trace-controls">
<button class="trace-prev" type="button">&#9664; previous</button>
<span class="trace-counter"></span>
<button class="trace-next" type="button">next &#9654;</button>
<input class="trace-slider" type="range" min="0" max="{last}" value="0">
</div>
<p class="trace-caption"></p>
{frames}
<script>
(function () {{
  var root = document.getElementById("{uid}");
  var steps = root.querySelectorAll(".step"), current = 0;
  var caption = root.querySelector(".trace-caption"), counter = root.querySelector(".trace-counter");
  var slider = root.querySelector(".trace-slider");
  function show(i) {{
    current = Math.max(0, Math.min(steps.length - 1, i));
    for (var k = 0; k < steps.length; k++) steps[k].style.display = k === current ? "block" : "none";
    caption.textContent = steps[current].getAttribute("data-caption");
    counter.textContent = "step " + current + " of " + (steps.length - 1);
    slider.value = current;
    root.setAttribute("data-highlight", steps[current].getAttribute("data-highlight"));
  }}
  root.querySelector(".trace-next").addEventListener("click", function () {{ show(current + 1); }});
  root.querySelector(".trace-prev").addEventListener("click", function () {{ show(current - 1); }});
  slider.addEventListener("input", function () {{ show(parseInt(slider.value, 10)); }});
  document.addEventListener("keydown", function (event) {{
    if (event.key === "ArrowRight") show(current + 1);
    if (event.key === "ArrowLeft") show(current - 1);
  }});
  show(0);
}})();
</script>
</div>"""
