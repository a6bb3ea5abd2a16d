"""More programs of torch.fx (the second half of test_programs_probe29_fx.py): a custom Tracer's leaves and a pass
adding submodules, the fx docs' decomposition by proxies made by hand, and replace_pattern; each run on chainrule
and, where PyTorch is installed, on PyTorch, with literal checks always."""

import importlib

import numpy as np

from .pytorch_programs import run_both
from .test_programs_probe29_fx import nodes_of


def custom_tracer(m):
    """A Tracer subclass that keeps a program's block as a leaf, a GraphModule built from its graph, and a pass that
    swaps every nn.Linear for a submodule added with add_submodule."""
    torch, nn, F = m.torch, m.nn, m.F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return F.silu(self.fc(x)) + x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.block(x))

    class Scaled(nn.Module):
        def __init__(self, linear):
            super().__init__()
            self.linear = linear

        def forward(self, x):
            return self.linear(x) * 0.5

    class BlockTracer(torch.fx.Tracer):
        def is_leaf_module(self, m, module_qualified_name):
            return isinstance(m, Block) or super().is_leaf_module(m, module_qualified_name)

    torch.manual_seed(0)
    model = Net()
    graph = BlockTracer().trace(model)
    gm = torch.fx.GraphModule(model, graph)
    leaf_nodes = nodes_of(gm.graph)
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Linear):
            gm.add_submodule("scaled_" + node.name, Scaled(gm.get_submodule(node.target)))
            node.target = "scaled_" + node.name
    gm.recompile()
    x = torch.randn(4, 3)
    out = gm(x)
    out.sum().backward()
    return {"leaf_nodes": leaf_nodes, "out": out, "expected": model.head(model.block(x)) * 0.5,
            "keys": list(gm.state_dict()), "grad": model.head.weight.grad}


def test_custom_tracer_and_added_submodules():
    ours, _ = run_both(custom_tracer)
    assert [t for _, t, _ in ours["leaf_nodes"]] == ["x", "block", "head", "output"]
    np.testing.assert_allclose(ours["out"], ours["expected"], rtol=1e-6)
    assert ours["keys"] == ["block.fc.weight", "block.fc.bias", "head.weight", "head.bias", "scaled_head.linear.weight",
                            "scaled_head.linear.bias"]


def decomposition(m):
    """The fx docs' "Proxy/Retracing" decomposition: each F.relu and F.gelu node rewritten by running a Python
    function on proxies made by hand into a new graph (GraphAppendingTracer), outside any trace."""
    torch, nn, F = m.torch, m.nn, m.F
    fx = torch.fx
    proxy_module = importlib.import_module(torch.__name__ + ".fx.proxy")

    def relu_decomposition(x):
        return (x > 0) * x

    def gelu_decomposition(x):
        return 0.5 * x * (1 + torch.tanh(0.7978845608 * (x + 0.044715 * torch.pow(x, 3))))

    rules = {F.relu: relu_decomposition, F.gelu: gelu_decomposition}

    class Net(nn.Module):
        def forward(self, x):
            return F.gelu(F.relu(x) - 1.0) + torch.sin(x)

    graph = fx.Tracer().trace(Net())
    new_graph = fx.Graph()
    env = {}
    tracer = proxy_module.GraphAppendingTracer(new_graph)
    for node in graph.nodes:
        if node.op == "call_function" and node.target in rules:
            proxy_args = fx.node.map_arg(node.args, lambda n: fx.Proxy(env[n.name], tracer))
            env[node.name] = rules[node.target](*proxy_args).node
        else:
            env[node.name] = new_graph.node_copy(node, lambda n: env[n.name])
    gm = fx.GraphModule(Net(), new_graph)
    x = torch.linspace(-2, 2, 9)
    return {"nodes": nodes_of(gm.graph), "out": gm(x),
            "expected": gelu_decomposition(relu_decomposition(x) - 1.0) + torch.sin(x)}


def test_decomposition_with_proxies_made_by_hand():
    ours, _ = run_both(decomposition)
    np.testing.assert_allclose(ours["out"], ours["expected"], rtol=1e-6)
    assert [t for _, t, _ in ours["nodes"]] == [
        "x", "operator.gt", "operator.mul", "operator.sub", "operator.mul", "pow", "operator.mul", "operator.add",
        "operator.mul", "tanh", "operator.add", "operator.mul", "sin", "operator.add", "output"]


def rewrite_pattern(m):
    """The fx docs' replace_pattern: cat-then-sum rewritten as stack-then-sum, and x * 1 + 0 removed."""
    torch, nn = m.torch, m.nn
    fx = torch.fx

    class Net(nn.Module):
        def forward(self, x, w1, w2):
            m1 = torch.cat([w1, w2]).sum()
            m2 = torch.cat([w1, w2]).sum()
            y = (x * 1 + 0) + m1 + m2
            return torch.cat([x, w1]).sum() + y

    def pattern(w1, w2):
        return torch.cat([w1, w2]).sum()

    def replacement(w1, w2):
        return torch.stack([w1, w2]).sum() * 10

    gm = fx.symbolic_trace(Net())
    matches = fx.replace_pattern(gm, pattern, replacement)
    gm.graph.lint()
    x, w1, w2 = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 6.0])
    return {"count": len(matches), "anchors": [match.anchor.name for match in matches],
            "nodes": nodes_of(gm.graph), "out": gm(x, w1, w2)}


def test_replace_pattern():
    ours, _ = run_both(rewrite_pattern)
    assert ours["count"] == 3 and ours["anchors"] == ["sum_1", "sum_1", "sum_1"]  # (the pattern's node)
    assert [t for _, t, _ in ours["nodes"]][3:8] == ["operator.mul", "operator.add", "stack", "sum", "operator.mul"]
    np.testing.assert_allclose(ours["out"], [1 + 180 * 2 + 100, 2 + 180 * 2 + 100])  # (x + m1 + m2 + the last)
