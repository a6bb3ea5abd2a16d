"""The graph ``SummaryWriter.add_graph`` draws: what running the model records, read back through grad_fn.

PyTorch traces the model with TorchScript; here the forward pass itself is the trace, since every
operation on a tensor that requires grad leaves its node. Names are the TensorBoard ones: a scope per
node's kind and a number (``MulBackward0/3``), parameters by their ``named_parameters`` names,
``input/0``... for the inputs and ``output/0``... for the outputs.
"""

from ...engine import topological_order
from ...graph import enable_grad
from ...tensor import Tensor


def graph_nodes(model, inputs):
    """[(name, op, [input names])] for the graph of ``model(*inputs)``, inputs before what uses them."""
    if inputs is None:
        inputs = ()
    elif not isinstance(inputs, (list, tuple)):
        inputs = (inputs,)
    parameter_names = {id(p): name for name, p in model.named_parameters()}
    input_names = {id(x): f"input/{i}" for i, x in enumerate(inputs)}
    with enable_grad():
        watched = [x.detach().requires_grad_(True) if _is_floating(x) else x for x in inputs]
        for original, copy in zip(inputs, watched):
            input_names[id(copy)] = input_names[id(original)]
        outputs = model(*watched)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    roots = [y.grad_fn if y.grad_fn is not None else y for y in outputs if getattr(y, "requires_grad", False)]
    names, counts, nodes = {}, {}, []
    for node in reversed(topological_order(roots)):  # (leaves first)
        if isinstance(node, Tensor):  # a leaf: a parameter, an input
            name = parameter_names.get(id(node)) or input_names.get(id(node)) or f"tensor/{len(names)}"
            op = "Parameter" if id(node) in parameter_names else "IO Node"
            nodes.append((name, op, []))
        else:
            op = node.name()
            counts[op] = counts.get(op, -1) + 1
            name = f"{op}/{counts[op]}"
            nodes.append((name, op, [names[p] for p in _parents(node) if p in names]))
        names[node] = name
    for i, y in enumerate(outputs):
        source = y.grad_fn if getattr(y, "grad_fn", None) is not None else y
        nodes.append((f"output/{i}", "IO Node", [names[source]] if source in names else []))
    return nodes


def _parents(node):
    return [parent for parent in getattr(node, "parents", ()) if parent is not None]


def _is_floating(x):
    return hasattr(x, "is_floating_point") and x.is_floating_point()
