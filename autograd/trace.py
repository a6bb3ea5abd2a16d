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
import hashlib
import html
import itertools
import sys
import types

from . import differentiate, viz, viz_graph
from .backend import xp
from .engine import backpropagate, topological_order
from .tensor import Tensor
from .value import Value

Step = collections.namedtuple("Step", "key name upstream local contributions caption grads received")
"""key: the drawn node to highlight; grads: {drawn key: gradient} known after this step (complete, or the
shares received so far for the keys in ``received``)."""

_number = viz.number
START = ("The forward pass is done: every value is known, no gradient yet. "
         "Backpropagation starts at the output {root} with d{root}/d{root} = 1.")


class BackwardTrace:
    def __init__(self, root, names=None, rankdir=None):
        # a scalar graph reads best left to right, beside the caption; a tensor graph as draw chooses
        self.root, self.names = root, names
        self.rankdir = rankdir or ("LR" if isinstance(root, Value) else None)
        self.steps = []
        self.legend = True  # the page draws its legend once, above the pictures
        self.start = {}  # the gradients known before the first step: the output's own, 1
        self.root_name = "L"

    # -- rendering -------------------------------------------------------------------

    def graph(self, i):
        """The Digraph of step i (0 is the forward graph before backward; i = 1..n after step i)."""
        if i == 0:
            return viz.draw(self.root, self.names, self.rankdir, grads=self.start, received=self.start,
                            legend=self.legend)
        step = self.steps[i - 1]
        return viz.draw(self.root, self.names, self.rankdir, highlight=step.key, grads=step.grads,
                        received=step.received, legend=self.legend)

    def captions(self):
        return [START.format(root=self.root_name)] + [s.caption for s in self.steps]

    def html(self, standalone=True):
        """The step-through as HTML: every step's SVG inline, and a few lines of script."""
        captions = self.captions()
        uid = "trace" + hashlib.sha1("\n".join(captions).encode()).hexdigest()[:10]  # stable: same trace, same page
        frames = []
        self.legend = False
        try:
            graphs = [self.graph(i) for i in range(len(captions))]
        finally:
            self.legend = True
        for i, (caption, graph) in enumerate(zip(captions, graphs)):
            key = "" if i == 0 else graph.node_ids.get(self.steps[i - 1].key, "")
            svg = viz.render_svg(graph)
            svg = svg[svg.index("<svg"):]  # drop the XML prologue: the SVG sits inside HTML
            frames.append(f'<div class="step" data-caption="{html.escape(caption)}" '
                          f'data-highlight="{key}"{" hidden" if i else ""}>{svg}</div>')
        legend = "".join(f'<span><i style="background:{colour}"></i>{html.escape(text)}</span>'
                         for colour, text in viz.STATES.values())
        body = PAGE_BODY.format(uid=uid, last=len(frames) - 1, frames="\n".join(frames), legend=legend)
        if not standalone:
            return STYLE + body
        return PAGE.format(style=STYLE, body=body)

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

    def __repr__(self):
        return f"<BackwardTrace: {len(self.steps)} steps of backpropagation from {self.root_name}>"


def trace_backward(root, names=None, rankdir=None):
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


def reading_order(root):
    """The values behind ``root`` in the order a reader meets them: inputs first, the output last."""
    return list(reversed(topological_order([root])))


def _trace_values(trace, root):
    # unlabelled values are called v1, v2, ... in reading order (inputs first), in captions and pictures
    counter = itertools.count(1)
    order = reading_order(root)
    names = {id(v): v.label or f"v{next(counter)}" for v in order}
    trace.names = {names[id(v)]: v for v in order}
    trace.root_name = L = names[id(root)]
    consumers = collections.Counter(id(p) for v in order for p in v.parents)

    def name(value):
        return names[id(value)]

    received = {viz_graph._key(root): 1.0}  # every value's gradient so far: the sum of the shares it received
    done, shares = set(), collections.Counter()
    trace.start = dict(received)

    def on_step(node, grad, parent_grads):
        key = viz_graph._key(node)
        done.add(key)
        y = name(node)
        summed = f", the sum of {shares[id(node)]} shares" if shares[id(node)] > 1 else ""
        if not node.parents:
            caption = f"{y} is a leaf: dL/d{y} = {_number(grad)}{summed}, its final gradient.".replace("dL/", f"d{L}/")
            local, contributions = (), ()
        else:
            local = tuple(node.local_grads)
            contributions = tuple((name(p), g) for p, g in zip(node.parents, parent_grads))
            operands = [name(p) for p in node.parents]
            expression = _expression(node.op, operands)
            terms = []
            for i, (p, d, g) in enumerate(zip(node.parents, local, parent_grads)):
                shares[id(p)] += 1
                received[viz_graph._key(p)] = received.get(viz_graph._key(p), 0.0) + g
                formula = _local_formula(node.op, operands, i)
                value = "" if formula == _number(d) else f" = {_number(grad)} × {_number(d)}"
                adds = "+=" if consumers[id(p)] > 1 else "="
                terms.append(f"dL/d{name(p)} {adds} dL/d{y} · d({expression})/d{name(p)} = {_number(grad)} × "
                             f"{formula}{value} = {_number(g)}")
            terms = "; ".join(terms)
            caption = (f"{y} = {expression}, dL/d{y} = {_number(grad)}{summed} (complete). "
                       f"Chain rule: {terms}").replace("dL/", f"d{L}/")
        received[key] = grad
        partial = frozenset(k for k in received if k not in done)
        trace.steps.append(Step(key, y, grad, local, contributions, caption, dict(received), partial))

    backpropagate([root], [1.0], retain_graph=True, on_step=on_step)


def _power(op):
    exponent = op[2:]
    return {"2": "²", "3": "³"}.get(exponent, f"^{exponent}")


def _expression(op, operands):
    """'a * b' for a binary operator, 'a²' for a power, 'tanh(a)' for a function."""
    if op.startswith("**"):
        return f"{operands[0]}{_power(op)}"
    if len(operands) == 2:
        return f"{operands[0]} {'·' if op == '*' else op} {operands[1]}"
    return f"{op}({', '.join(operands)})"


def _local_formula(op, operands, i):
    """The local derivative d(op(operands))/d(operands[i]) as the lecture writes it."""
    a = operands[0]
    if op == "+":
        return "1"
    if op == "*":
        return operands[1 - i]
    if op.startswith("**"):
        k = float(op[2:])
        lower = f"{k - 1:g}"
        return f"{k:g}·{a}" if lower == "1" else f"{k:g}" if lower == "0" else f"{k:g}·{a}{_power('**' + lower)}"
    return {"tanh": f"1 - tanh²({a})", "sigmoid": f"σ({a})(1 - σ({a}))", "exp": f"exp({a})",
            "log": f"1/{a}", "relu": f"[{a} > 0]"}.get(op, f"∂{op}/∂{a}")


def _rule(node):
    """The first paragraph of an op's docstring: its forward and local derivative."""
    doc = (type(node).__doc__ or node.op_name).strip().split("\n\n")[0]
    return " ".join(line.strip() for line in doc.splitlines())


def _trace_tensors(trace, root, names):
    drawn = viz_graph.walk(root, max_nodes=10**9)
    output_of = {key: output for key, (_, output, _) in drawn.ops.items()}
    labels = {id(t): n for n, t in names.items()}
    trace.root_name = "L"
    received = {viz_graph._key(root): None}
    trace.start = {viz_graph._key(root): xp.ones(root.shape)}  # dL/dL = 1, drawn before the first step
    done = set()

    def label(tensor):
        if id(tensor) in labels:
            return f"{labels[id(tensor)]} {tuple(tensor.shape)}"
        made_by = "input" if getattr(tensor, "grad_fn", None) is None else f"({tensor.grad_fn.op_name} output)"
        return f"{made_by} {tuple(tensor.shape)}"

    def on_step(node, grad, parent_grads):
        if isinstance(node, Tensor):  # a leaf: its gradient is complete
            key = viz_graph._key(node)
            received[key] = grad
            done.add(key)
            caption = (f"leaf {label(node)}: dL/d{labels.get(id(node), 'x')} {tuple(grad.shape)} is complete "
                       "and accumulates into .grad")
            partial = frozenset(k for k in received if k not in done)
            trace.steps.append(Step(key, label(node), grad, None, (), caption, dict(received), partial))
            return
        key = f"op{id(node)}"
        received[output_of[key]] = grad
        done.add(output_of[key])
        rule = _rule(node)
        inputs = [x if isinstance(x, Tensor) or parent is None else
                  parent if isinstance(parent, Tensor) else viz_graph._Unkept(parent, x)
                  for x, parent in zip(node.inputs, node.parents)]
        for x, g in zip(inputs, parent_grads):
            if g is not None:
                k = viz_graph._key(x)
                received[k] = g if received.get(k) is None else received[k] + g
        sent = ", ".join(f"dL/d{label(x)}" for x, g in zip(inputs, parent_grads) if g is not None)
        caption = f"{node.op_name}: {rule}. Upstream dL/dY {tuple(grad.shape)} → {sent or 'nothing to send'}"
        contributions = tuple((label(x), None if g is None else tuple(g.shape))
                              for x, g in zip(inputs, parent_grads))
        partial = frozenset(k for k in received if k not in done)
        trace.steps.append(Step(key, node.op_name, tuple(grad.shape), rule, contributions, caption,
                                {k: v for k, v in received.items() if v is not None}, partial))

    differentiate.backward([root], retain_graph=True, on_step=on_step)


STYLE = """<style>
.trace {{ font-family: Helvetica, Arial, sans-serif; font-size: 16px; max-width: 1300px; }}
.trace-controls {{ display: flex; gap: 0.6em; align-items: center; }}
.trace-controls button {{ font-size: 15px; padding: 0.3em 0.8em; }}
.trace-slider {{ flex: 1; max-width: 30em; }}
.trace-caption {{ font-size: 16px; line-height: 1.4; height: 4.4em; overflow-y: auto; margin: 0.6em 0;
                  padding: 0.4em 0.6em; background: #f6f6f6; border-left: 4px solid #ffd966; }}
.trace-legend {{ font-size: 14px; display: flex; gap: 1.2em; flex-wrap: wrap; }}
.trace-legend i {{ display: inline-block; width: 1em; height: 1em; border: 1px solid #444;
                   vertical-align: -0.15em; margin-right: 0.3em; }}
.trace-frames svg {{ max-width: 100%; height: auto; }}
</style>""".replace("{{", "{").replace("}}", "}")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Backpropagation, step by step</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 1.5em; font-size: 16px; }}
</style>{style}</head>
<body>
<h1>Backpropagation, step by step</h1>
<p>Press <b>next</b> (or the right arrow key) to apply the chain rule one node at a time.
The yellow node is the one being processed; green boxes know their final gradient, blue boxes
the shares received so far.</p>
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
<div class="trace-legend">{legend}</div>
<div class="trace-frames">
{frames}
</div>
<script>
(function () {{
  var root = document.getElementById("{uid}");
  var steps = root.querySelectorAll(".step"), current = 0;
  var caption = root.querySelector(".trace-caption"), counter = root.querySelector(".trace-counter");
  var slider = root.querySelector(".trace-slider");
  function show(i) {{
    current = Math.max(0, Math.min(steps.length - 1, i));
    for (var k = 0; k < steps.length; k++) {{
      steps[k].hidden = k !== current;
      steps[k].classList.toggle("shown", k === current);
    }}
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
  // the tallest picture sets the height, so that the page does not jump from step to step
  // (frames other than the first are hidden in the markup: a viewer without scripts shows one)
  var frames = root.querySelector(".trace-frames"), tallest = 0;
  for (var k = 0; k < steps.length; k++) {{
    steps[k].hidden = false;
    tallest = Math.max(tallest, steps[k].getBoundingClientRect().height);
    steps[k].hidden = true;
  }}
  frames.style.minHeight = tallest + "px";
  show(0);
}})();
</script>
</div>"""


class _TraceModule(types.ModuleType):
    """``autograd.trace`` names this module (the step-by-step backward pass) and is, as in
    PyTorch, also the function ``autograd.trace(input)``: the sum of a matrix's diagonal. A
    module named ``trace`` inside ``autograd`` would otherwise hide the function, since importing
    it binds the module over the name."""

    def __call__(self, input):
        return input.trace()


sys.modules[__name__].__class__ = _TraceModule
