"""Focused tests of ``autograd.fx`` (symbolic tracing, Graph, Node, GraphModule, Interpreter) and of the fixes made
with it: each against PyTorch where installed, and against literals always."""

import copy
import io
import json
import operator
import pickle
import subprocess
import sys

import numpy as np
import pytest

import autograd
import nn

from .pytorch_programs import error_of, run_both


def helper_kept_whole(x, k):
    """A function fx.wrap marks: one call_function node when traced, its body not traced through."""
    if k > 1:  # (control flow on a plain number: fine inside a wrapped function)
        return x * k
    return x


autograd.fx.wrap("helper_kept_whole")
try:
    import torch.fx

    torch.fx.wrap("helper_kept_whole")
except ImportError:
    pass


def names(graph):
    return [node.name for node in graph.nodes]


def test_import_autograd_loads_no_fx():
    # (nor does importing it, as timm does, install the dispatching wrappers: each call would pay for them)
    code = ("import sys, json, autograd, nn\nbefore = 'autograd.fx' in sys.modules\nautograd.fx.symbolic_trace\n"
            "mid = 'autograd.fx.graph_module' in sys.modules\nautograd.fx.GraphModule\n"
            "from autograd import dispatching\n"
            "print(json.dumps([before, mid, 'autograd.fx.graph_module' in sys.modules, dispatching._installed]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == [False, False, True, False]


def sequential_input_name(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    x = torch.ones(1, 2)
    gm = torch.fx.symbolic_trace(model)
    return {"by_keyword": model(input=x), "placeholder": [n.target for n in gm.graph.nodes if n.op == "placeholder"],
            "names": names(gm.graph)}


def test_sequential_forward_takes_input():
    # (chainrule's Sequential.forward took x: model(input=x) refused, its traced placeholder named x, not input_1)
    ours, _ = run_both(sequential_input_name)
    assert ours["placeholder"] == ["input"] and ours["names"] == ["input_1", "_0", "_1", "output"]


def naming(m):
    torch, F = m.torch, m.F

    def f(x, input, sum):
        a = x + input
        b = a + 1
        c = torch.sum(b) + b.sum() + sum
        return F.relu(c).abs() - torch.relu(c) - c.relu()

    gm = torch.fx.symbolic_trace(f)
    return {"names": names(gm.graph), "out": gm(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5]), 1.0)}


def test_node_names_as_pytorch_numbers_them():
    ours, _ = run_both(naming)
    assert ours["names"] == ["x", "input_1", "sum_1", "add", "add_1", "sum_2", "sum_3", "add_2", "add_3", "relu",
                             "abs_1", "relu_1", "sub", "relu_2", "sub_1", "output"]


def graph_editing(m):
    torch = m.torch
    fx = torch.fx

    def f(x):
        y = torch.neg(x)
        unused = torch.exp(x)  # noqa: F841  (dead code for eliminate_dead_code)
        return y * 3

    gm = fx.symbolic_trace(f)
    graph = gm.graph
    x, neg, exp, mul, output = graph.nodes
    refused = error_of(lambda: graph.erase_node(neg))
    facts = {"users": [len(n.users) for n in graph.nodes], "inputs": [n.name for n in mul.all_input_nodes],
             "refused": refused, "dead": graph.eliminate_dead_code(), "left": names(graph)}
    with graph.inserting_before(mul):
        tanh = graph.call_function(torch.tanh, (neg,))
    changed = neg.replace_all_uses_with(tanh, delete_user_cb=lambda user: user is not tanh)
    facts["changed"] = [n.name for n in changed]
    mul.meta["note"] = "kept"
    graph.lint()
    gm.recompile()
    facts["out"] = gm(torch.tensor([0.5, -1.0]))
    facts["names"] = names(graph)
    facts["note"] = mul.meta["note"]
    return facts


def test_graph_editing():
    ours, _ = run_both(graph_editing)
    assert ours["users"] == [2, 1, 0, 1, 0] and ours["inputs"] == ["neg"]
    assert ours["refused"][0] == "RuntimeError" and "still had 1 users" in ours["refused"][1]
    assert ours["dead"] is True and ours["left"] == ["x", "neg", "mul", "output"]
    assert ours["changed"] == ["mul"] and ours["names"] == ["x", "neg", "tanh", "mul", "output"]
    np.testing.assert_allclose(ours["out"], np.tanh([-0.5, 1.0]) * 3, rtol=1e-6)


def test_lint_refuses_a_node_used_before_it_is_made():
    graph = autograd.fx.Graph()
    x = graph.placeholder("x")
    with graph.inserting_before(x):
        early = graph.call_function(operator.neg, (x,))
    graph.output(early)
    with pytest.raises(RuntimeError, match="used before it has been defined"):
        graph.lint()


def wrapped_helper(m):
    torch, nn = m.torch, m.nn

    class Net(nn.Module):
        def forward(self, x):
            return helper_kept_whole(x, 3) + 1

    gm = torch.fx.symbolic_trace(Net())
    node = list(gm.graph.nodes)[1]
    return {"op": node.op, "target": node.target.__name__, "out": gm(torch.ones(2))}


def test_wrap_makes_one_node():
    ours, _ = run_both(wrapped_helper)
    assert ours["op"] == "call_function" and ours["target"] == "helper_kept_whole"
    np.testing.assert_allclose(ours["out"], [4.0, 4.0])


def test_a_graph_written_by_hand_runs_as_a_module():
    graph = autograd.fx.Graph()
    x = graph.placeholder("x")
    weight = graph.get_attr("lin.weight")
    product = graph.call_function(autograd.matmul, (x, graph.call_method("t", (weight,))))
    graph.output(graph.call_function(operator.add, (product, 1.0)))
    lin = nn.Linear(2, 3)
    gm = autograd.fx.GraphModule({"lin.weight": lin.weight}, graph)
    x_value = autograd.ones(4, 2)
    np.testing.assert_allclose(gm(x_value).detach().numpy(), (x_value @ lin.weight.t() + 1).detach().numpy())
    assert list(gm.state_dict()) == ["lin.weight"] and "torch.matmul(x, t)" in gm.code
    copied = copy.deepcopy(gm)
    assert copied.lin.weight is not gm.lin.weight and type(copied) is not type(gm)
    np.testing.assert_allclose(copied(x_value).detach().numpy(), gm(x_value).detach().numpy())
    assert "def forward(self, x):" in str(gm)


def test_proxy_answers_torch_function_and_tensors_are_no_proxies():
    fx = autograd.fx
    graph = fx.Graph()
    proxy = fx.Proxy(graph.placeholder("x"))
    result = fx.Proxy.__torch_function__(autograd.sin, (), (proxy,), {})
    method = fx.Proxy.__torch_function__(autograd.Tensor.view, (), (proxy, -1), {})
    assert isinstance(result, fx.Proxy) and result.node.op == "call_function" and result.node.target is autograd.sin
    assert method.node.op == "call_method" and method.node.target == "view"
    assert not isinstance(autograd.ones(1), fx.Proxy)
    with pytest.raises(fx.TraceError, match="control flow"):
        bool(result)


def test_tracing_leaves_the_functions_plain():
    # (entering the tracing mode installs the dispatching wrappers: taken off again, the targets the plain functions)
    from autograd import dispatching

    nn_functional = __import__("nn.functional", fromlist=["relu"])
    assert not dispatching._installed
    gm = autograd.fx.symbolic_trace(lambda x: nn_functional.relu(autograd.relu(x)).sum())
    targets = [node.target for node in gm.graph.nodes if node.op == "call_function"]
    assert targets[0] is autograd.relu and targets[1] is nn_functional.relu and not dispatching._installed
    assert gm.graph.nodes[-2].op == "call_method"


def saved_and_loaded(m, by):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    if by == "pickle":
        loaded = pickle.loads(pickle.dumps(gm))
    else:
        buffer = io.BytesIO()
        torch.save(gm, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
    x = torch.ones(1, 2)
    return {"out": loaded(x), "same": gm(x), "names": names(loaded.graph), "keys": list(loaded.state_dict()),
            "owned": loaded.graph.owning_module is loaded, "code": loaded.code == gm.code}


def test_a_graph_module_pickles():
    ours, _ = run_both(saved_and_loaded, "pickle")
    np.testing.assert_allclose(ours["out"], ours["same"])
    assert ours["names"] == ["input_1", "_0", "_1", "output"] and ours["keys"] == ["0.weight", "0.bias"]
    assert ours["owned"] is True and ours["code"] is True


@pytest.mark.xfail(strict=True, raises=RecursionError,
                   reason="torch.save of a whole module is not built (README: loading never runs code): "
                          "autograd.serialization writes objects by their __dict__, with no __reduce__ and no "
                          "cycles, and a Graph's nodes form a ring; pickle.dumps(gm) works")
def test_a_graph_module_saves_and_loads():
    ours, _ = run_both(saved_and_loaded, "save")
    np.testing.assert_allclose(ours["out"], ours["same"])


def test_a_proxy_made_by_hand_is_asked_by_the_library():
    # (overrides.register_tensor_like: a class taking part without subclassing Tensor)
    fx = autograd.fx
    graph = fx.Graph()
    x = fx.Proxy(graph.placeholder("x"))
    y = autograd.tanh(autograd.cat([x, x * 2], dim=0)).sum()
    graph.output(y.node)
    assert [(n.op, n.name) for n in graph.nodes] == [
        ("placeholder", "x"), ("call_function", "mul"), ("call_function", "cat"), ("call_function", "tanh"),
        ("call_method", "sum_1"), ("output", "output")]
    gm = fx.GraphModule(nn.Module(), graph)
    np.testing.assert_allclose(gm(autograd.tensor([0.5])).item(), np.tanh(0.5) + np.tanh(1.0), rtol=1e-6)


def module_list(m):
    torch, nn = m.torch, m.nn

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
            self.norms = nn.ModuleDict({"out": nn.LayerNorm(2)})

        def forward(self, x):
            for i, layer in enumerate(self.layers):
                x = layer(x) if i % 2 == 0 else torch.tanh(layer(x))
            return self.norms["out"](x)

    torch.manual_seed(0)
    model = Stack()
    gm = torch.fx.symbolic_trace(model)
    x = torch.ones(1, 2)
    return {"names": names(gm.graph), "out": gm(x), "same": model(x)}


def test_module_lists_and_dicts_are_traced_through():
    ours, _ = run_both(module_list)
    assert ours["names"] == ["x", "layers_0", "layers_1", "tanh", "layers_2", "norms_out", "output"]
    np.testing.assert_allclose(ours["out"], ours["same"])


def lint_of_a_missing_submodule(m):
    torch, nn = m.torch, m.nn
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2)))
    next(node for node in gm.graph.nodes if node.op == "call_module").target = "missing.layer"
    return error_of(gm.graph.lint)


def test_lint_refuses_a_target_the_module_lacks():
    ours, _ = run_both(lint_of_a_missing_submodule)
    assert ours == ("RuntimeError", "Node _0 target missing.layer references nonexistent attribute missing of ")


def test_a_failed_trace_puts_everything_back():
    from autograd import dispatching

    class Gate(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    call = nn.Module.__call__
    with pytest.raises(autograd.fx.TraceError):
        autograd.fx.symbolic_trace(Gate())
    assert "__getattribute__" not in vars(nn.Module) and nn.Module.__call__ is call
    assert not dispatching._installed and not dispatching._dispatch.mode_stack
