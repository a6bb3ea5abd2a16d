"""``fx.Graph`` and ``fx.Node`` (``torch.fx``, chainrule's ``autograd.fx``), ported from PyTorch's test/test_fx.py
and test/fx/test_dce_pass.py: graphs built by hand (the six node kinds, names numbered), copied (``graph_copy``,
``node_copy``, ``deepcopy``), edited (inserting points, ``replace_all_uses_with``, ``replace_input_with``,
``update_arg``, ``erase_node``, moving nodes), ``eliminate_dead_code``, ``lint``, users and ``meta``
(``nn_module_stack``), immutable arguments, and ``print_tabular``.

Each test runs on chainrule and, where it is installed, on PyTorch (fixture `T`); the expectations are literals or
the traced program run eagerly.
"""

import copy
import importlib
import operator
import pickle

import numpy as np
import pytest

from tests import ported_fx, ported_nn
from tests.ported import close, raises, same, values, xfail_ours
from tests.ported_fx import linear_relu, names, simple

fx, nn = ported_fx.fx, ported_nn.nn  # the fixtures


def a_non_torch_leaf(a, b):
    return a + b


# --- Graph building ------------------------------------------------------------------------------------------

def test_custom_import_graph(T, fx, nn):
    graph = fx.Graph()
    a = graph.placeholder("x")
    b = graph.placeholder("y")
    c = graph.call_function(a_non_torch_leaf, (a, b))
    d = graph.call_function(T.sin, (c,))
    graph.output(d)
    gm = fx.GraphModule(nn.Module(), graph)
    x, y = T.tensor([0.25]), T.tensor([0.5])
    close(gm(x, y), np.sin([0.75]))


def test_graph_unique_names_manual(T, fx, nn):
    graph = fx.Graph()
    a = graph.create_node("placeholder", "x")
    b = graph.create_node("call_module", "linear_mod", args=(a,), name="foo_1_1")
    c = graph.create_node("get_attr", "y_attr", name="foo_1")
    d = graph.create_node("call_function", operator.add, args=(b, c))
    graph.output(d)
    graph2 = fx.Graph()
    val_map = {}
    graph2.graph_copy(graph, val_map)
    seen = set()
    for node in graph2.nodes:
        assert node.name not in seen
        seen.add(node.name)
    assert names(graph) == ["x", "foo_1_1", "foo_1", "add", "output"]


def test_graph_names_numbered(T, fx):
    graph = fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(operator.add, (x, 1))
    b = graph.call_function(operator.add, (a, 1))
    c = graph.call_method("sum", (b,))
    d = graph.call_function(operator.add, (c, 1))
    graph.output(d)
    assert names(graph) == ["x", "add", "add_1", "sum_1", "add_2", "output"]


def test_graph_edit_with_proxy(T, fx, nn):
    class M(nn.Module):
        def forward(self, a, b):
            return a + b
    m = M()
    g = fx.symbolic_trace(m).graph
    new_g = fx.Graph()
    val_map = {}
    output_val = new_g.graph_copy(g, val_map)
    t = fx.Proxy(output_val)
    new_g.output((t + t).node)
    gm = fx.GraphModule(m, new_g)
    gm.graph.lint()
    assert gm(3, 4) == 14
    assert len(set(names(gm.graph))) == len(gm.graph.nodes)


def test_graph_copy_value_map(T, fx, nn):
    g = fx.symbolic_trace(simple(T, nn)).graph
    new_g = fx.Graph()
    val_map = {}
    out = new_g.graph_copy(g, val_map)
    assert set(val_map) == set(n for n in g.nodes if n.op != "output")
    assert all(v.graph is new_g for v in val_map.values())
    assert out is val_map[next(n for n in g.nodes if n.name == "relu")]


def test_node_copy_into_other_graph(T, fx, nn):
    g = fx.symbolic_trace(simple(T, nn)).graph
    new_g = fx.Graph()
    env = {}
    for node in g.nodes:
        env[node] = new_g.node_copy(node, lambda n: env[n])
    new_g.lint()
    gm = fx.GraphModule(nn.Module(), new_g)
    same(gm(T.tensor([-4.0, 1.0])), [0.0, 4.0])


def test_get_attr_and_call_method_nodes(T, fx, nn):
    root = nn.Module()
    root.register_buffer("w", T.tensor([1.0, 2.0]))
    graph = fx.Graph()
    x = graph.placeholder("x")
    w = graph.get_attr("w")
    s = graph.call_method("add", (x, w), {"alpha": 2})
    graph.output(s)
    gm = fx.GraphModule(root, graph)
    same(gm(T.tensor([1.0, 1.0])), [3.0, 5.0])
    assert "x.add(w, alpha = 2)" in gm.code


def test_call_module_node_and_kwargs(T, fx, nn):
    root = nn.Module()
    root.act = nn.LeakyReLU(0.5)
    graph = fx.Graph()
    x = graph.placeholder("x")
    y = graph.call_module("act", (x,))
    z = graph.call_function(T.clamp, (y,), {"min": -1.0})
    graph.output(z)
    gm = fx.GraphModule(root, graph)
    same(gm(T.tensor([-4.0, 2.0])), [-1.0, 2.0])
    assert z.kwargs == {"min": -1.0}
    assert z.args == (y,)


def test_output_of_tuple_and_dict(T, fx, nn):
    graph = fx.Graph()
    x = graph.placeholder("x")
    y = graph.call_function(operator.mul, (x, 2))
    graph.output({"a": (x, y), "b": [y]})
    gm = fx.GraphModule(nn.Module(), graph)
    out = gm(3)
    assert out == {"a": (3, 6), "b": [6]}


def test_nodes_order_and_prev_next(T, fx, nn):
    g = fx.symbolic_trace(simple(T, nn)).graph
    nodes = list(g.nodes)
    assert len(g.nodes) == 4
    assert [n.next for n in nodes[:-1]] == nodes[1:]
    assert [n.prev for n in nodes[1:]] == nodes[:-1]
    assert list(reversed(g.nodes)) == nodes[::-1]


def test_users_and_all_input_nodes(T, fx):
    def f(x, y):
        a = x + y
        return a * x, a - 1
    g = fx.symbolic_trace(f).graph
    x, y, add, mul, sub, out = list(g.nodes)
    assert set(x.users) == {add, mul}
    assert list(y.users) == [add]
    assert set(add.users) == {mul, sub}
    assert mul.all_input_nodes == [add, x]
    assert list(mul.users) == [out] and list(out.users) == []


def test_args_are_immutable(T, fx):
    g = fx.symbolic_trace(lambda x: T.clamp(T.cat([x, x]) + 1, min=0.0)).graph
    cat, add, clamp = [n for n in g.nodes if n.op == "call_function"]
    raises(TypeError, "", operator.setitem, add.args, 0, 3)
    raises(TypeError, "'immutable_list' object does not support mutation", cat.args[0].append, 2)
    raises(TypeError, "'immutable_dict' object does not support mutation", operator.setitem, clamp.kwargs, "min", 1.0)
    raises(TypeError, "does not support mutation", clamp.kwargs.update, {"max": 1.0})
    add.args = (add.args[0], 5)
    assert add.args[1] == 5
    clamp.kwargs = {**clamp.kwargs, "max": 2.0}
    assert clamp.kwargs == {"min": 0.0, "max": 2.0}


def test_copy_immutable_collections(T, fx):
    # test_fx.py's test_copy_it (and PyTorch's pickling of them)
    immutable_collections = importlib.import_module(T.__name__ + ".fx.immutable_collections")
    d = immutable_collections.immutable_dict([(3, 4), (5, 6)])
    lst = immutable_collections.immutable_list([(3, 4), (5, 6)])
    assert d == copy.deepcopy(d) and type(copy.deepcopy(d)) is type(d)
    assert lst == copy.deepcopy(lst) and type(copy.deepcopy(lst)) is type(lst)
    assert pickle.loads(pickle.dumps(lst)) == lst and pickle.loads(pickle.dumps(d)) == d
    assert hash(lst) == hash(((3, 4), (5, 6)))


def test_empty_graph_is_true(T, fx):
    # a Graph has no length: an empty one is still a graph (``if graph:``)
    assert bool(fx.Graph()) is True
    raises(TypeError, "has no len", len, fx.Graph())


def test_update_arg_and_kwarg(T, fx, nn):
    gm = fx.symbolic_trace(lambda x: T.clamp(x + 1, min=0.0))
    add = next(n for n in gm.graph.nodes if n.target == operator.add)
    clamp = next(n for n in gm.graph.nodes if n.name == "clamp")
    add.update_arg(1, 10)
    clamp.update_kwarg("min", 12.0)
    gm.recompile()
    same(gm(T.tensor([1.0, 5.0])), [12.0, 15.0])


def test_replace_input_with(T, fx):
    gm = fx.symbolic_trace(lambda x, y: x - y)
    x, y, sub, out = list(gm.graph.nodes)
    sub.replace_input_with(y, x)
    assert sub.args == (x, x) and list(y.users) == []
    gm.recompile()
    same(gm(T.tensor([5.0]), T.tensor([2.0])), [0.0])


# --- Graph editing -------------------------------------------------------------------------------------------

def test_inserting_after_replace_all_uses_with(T, fx):
    gm = fx.symbolic_trace(lambda x: T.relu(x) + 1)
    relu = next(n for n in gm.graph.nodes if n.name == "relu")
    with gm.graph.inserting_after(relu):
        neg = gm.graph.call_function(T.neg, (relu,))
    relu.replace_all_uses_with(neg)
    neg.args = (relu,)  # (replace_all_uses_with changed neg's own use too)
    gm.graph.lint()
    gm.recompile()
    same(gm(T.tensor([-1.0, 2.0])), [1.0, -1.0])
    assert names(gm.graph) == ["x", "relu", "neg", "add", "output"]


def test_replace_all_uses_with_delete_user_cb(T, fx):
    gm = fx.symbolic_trace(lambda x: (T.relu(x) + 1, T.relu(x) * 0 + T.relu(x)))
    relu = next(n for n in gm.graph.nodes if n.name == "relu")
    x = next(iter(gm.graph.nodes))
    add = next(n for n in gm.graph.nodes if n.name == "add")
    changed = relu.replace_all_uses_with(x, delete_user_cb=lambda user: user is add)
    assert changed == [add]
    assert list(relu.users) == []


def test_replace_all_uses_returns_users(T, fx):
    gm = fx.symbolic_trace(lambda x: T.neg(x) * T.neg(x).exp())
    g = gm.graph
    negs = [n for n in g.nodes if n.target is T.neg or n.name.startswith("neg")]
    users = negs[1].replace_all_uses_with(negs[0])
    assert [u.name for u in users] == ["exp"]
    g.erase_node(negs[1])
    g.lint()
    gm.recompile()
    close(gm(T.tensor([1.0])), [-np.exp(-1.0)])


def test_inserting_before(T, fx):
    gm = fx.symbolic_trace(lambda x: x * 3)
    mul = next(n for n in gm.graph.nodes if n.op == "call_function")
    x = mul.args[0]
    with gm.graph.inserting_before(mul):
        add = gm.graph.call_function(operator.add, (x, 1))
    mul.replace_input_with(x, add)
    gm.graph.lint()
    gm.recompile()
    same(gm(T.tensor([1.0])), [6.0])
    assert names(gm.graph) == ["x", "add", "mul", "output"]


def test_inserting_before_none_is_start(T, fx):
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(x)
    with g.inserting_before(None):
        y = g.placeholder("y")
    assert names(g) == ["y", "x", "output"]
    assert y.next is x


def test_prepend_and_append_move_a_node(T, fx):
    g = fx.symbolic_trace(lambda x: (x + 1, x * 2)).graph
    x, add, mul, out = list(g.nodes)
    add.prepend(mul)
    assert names(g) == ["x", "mul", "add", "output"]
    add.append(mul)
    assert names(g) == ["x", "add", "mul", "output"]


def test_erase_node_with_users_refused(T, fx):
    g = fx.symbolic_trace(lambda x: T.relu(x) + 1).graph
    relu = next(n for n in g.nodes if n.name == "relu")
    raises(RuntimeError, "Tried to erase Node relu but it still had 1 users in the graph", g.erase_node, relu)


def test_erase_node(T, fx):
    gm = fx.symbolic_trace(lambda x: (T.relu(x), x + 1))
    g = gm.graph
    relu = next(n for n in g.nodes if n.name == "relu")
    out = next(n for n in g.nodes if n.op == "output")
    out.args = (out.args[0][1],)
    g.erase_node(relu)
    g.lint()
    gm.recompile()
    assert names(g) == ["x", "add", "output"]
    same(gm(T.tensor([1.0])), [2.0])


def test_eliminate_dead_code(T, fx, nn):
    # test/fx/test_dce_pass.py: an unused add is removed, the graph reports a change
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.attr_1 = nn.Parameter(T.tensor([-0.9]))

        def forward(self, x):
            a = x + 1  # noqa: F841
            return x + self.attr_1
    gm = fx.symbolic_trace(M())
    assert gm.graph.eliminate_dead_code() is True
    gm.recompile()
    assert names(gm.graph) == ["x", "attr_1", "add_1", "output"]
    close(gm(T.tensor([1.0])), [0.1])
    assert gm.graph.eliminate_dead_code() is False


def test_dce_keeps_placeholders(T, fx, nn):
    class M(nn.Module):
        def forward(self, a, b):
            a.neg()  # unused: removed
            return a * 2
    gm = fx.symbolic_trace(M())
    assert gm.graph.eliminate_dead_code() is True
    assert names(gm.graph) == ["a", "b", "mul", "output"]


@xfail_ours("chainrule's eliminate_dead_code keeps an in-place method call (b.add_(1)), which changes the program's "
            "inputs; PyTorch's Node.is_impure counts no call_method impure and removes it")
def test_dce_removes_unused_inplace_method(T, fx, nn):
    class M(nn.Module):
        def forward(self, a, b):
            b.add_(1)
            return a * 2
    gm = fx.symbolic_trace(M())
    assert gm.graph.eliminate_dead_code() is True
    assert names(gm.graph) == ["a", "b", "mul", "output"]


def test_dce_removes_unused_get_attr(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.attr_1 = nn.Parameter(T.tensor([-0.9]))

        def forward(self, x):
            a = x + self.attr_1  # noqa: F841
            return x
    gm = fx.symbolic_trace(M())
    assert gm.graph.eliminate_dead_code() is True
    assert names(gm.graph) == ["x", "output"]


def test_lint_catches_use_before_definition(T, fx):
    g = fx.symbolic_trace(lambda x: T.relu(x) + 1).graph
    relu = next(n for n in g.nodes if n.name == "relu")
    add = next(n for n in g.nodes if n.name == "add")
    relu.prepend(add)  # add now before the relu it reads
    raises(RuntimeError, "used before it has been defined", g.lint)


def test_lint_checks_targets_on_owning_module(T, fx, nn):
    g = fx.Graph()
    x = g.placeholder("x")
    y = g.call_module("missing", (x,))
    g.output(y)
    raises(AttributeError, "has no attribute 'missing'", fx.GraphModule, nn.Module(), g)


def test_graph_deepcopy_and_copy(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    g2 = copy.deepcopy(gm.graph)
    assert names(g2) == names(gm.graph)
    assert all(a is not b for a, b in zip(g2.nodes, gm.graph.nodes))
    g2.lint()
    gm2 = copy.deepcopy(gm)
    x = T.ones(1, 4)
    close(gm2(x), values(gm(x)))
    assert gm2.linear.weight is not gm.linear.weight
    assert gm2.code == gm.code


def test_graph_module_copy_shares_parameters(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    gm2 = copy.copy(gm)
    assert gm2.linear.weight is gm.linear.weight


def test_find_nodes(T, fx):
    g = fx.symbolic_trace(lambda x, y: T.relu(x) + y).graph
    assert [n.name for n in g.find_nodes(op="placeholder")] == ["x", "y"]
    assert [n.name for n in g.find_nodes(op="call_function", target=operator.add)] == ["add"]


def test_node_meta_kept_and_writable(T, fx, nn):
    gm = fx.symbolic_trace(simple(T, nn))
    assert [n.stack_trace for n in gm.graph.nodes] == [None] * 4  # (not recorded by default)
    relu = next(n for n in gm.graph.nodes if n.name == "relu")
    relu.stack_trace = "File here"
    assert relu.meta["stack_trace"] == "File here"
    for node in gm.graph.nodes:
        assert isinstance(node.meta, dict)
        node.meta["name"] = node.name
    assert [n.meta["name"] for n in gm.graph.nodes] == names(gm.graph)


# --- print_tabular -------------------------------------------------------------------------------------------

def test_print_tabular(T, fx, nn, capsys):
    pytest.importorskip("tabulate") if T.__name__ == "torch" else None
    gm = fx.symbolic_trace(linear_relu(T, nn))
    gm.graph.print_tabular()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["opcode", "name", "target", "args", "kwargs"]
    assert lines[2].split() == ["placeholder", "x", "x", "()", "{}"]
    assert lines[3].split() == ["call_module", "linear", "linear", "(x,)", "{}"]
    assert lines[5].split() == ["output", "output", "output", "(relu,)", "{}"]


# --- more of test_fx.py ----------------------------------------------------------------------------------------

def test_find_uses(T, fx):
    graph = fx.Graph()
    x = fx.Proxy(graph.placeholder("x"))
    y = T.relu(x)
    z = x + x
    u = T.neg(x)
    graph.output((y + z + u).node)
    graph.lint()
    users_of_x = x.node.users
    assert len(users_of_x) == 3
    assert sorted(user.name for user in users_of_x) == ["add", "neg", "relu"]


def test_remove_uses(T, fx):
    g = fx.Graph()
    x = g.placeholder("x")
    relu = g.call_function(T.relu, (x,))
    neg = g.call_function(T.neg, (relu,))
    g.output(neg)
    neg.replace_all_uses_with(relu)
    g.erase_node(neg)
    assert neg not in relu.users
    assert names(g) == ["x", "relu", "output"]


def test_reassign_args_kwargs_uses(T, fx):
    graph = fx.Graph()
    x, y = fx.Proxy(graph.placeholder("x")), fx.Proxy(graph.placeholder("y"))
    z = x + y
    zed = z + z + z
    graph.output(zed.node)
    graph.lint()
    # zed = z + z + z -> zed = z + z + x
    zed.node.args = (zed.node.args[0], x.node)
    assert list(x.node.users) == [z.node, zed.node]
    # z = x + y -> z = y + y
    z.node.args = (y.node, y.node)
    assert list(x.node.users) == [zed.node]


def test_wrong_target_type(T, fx):
    graph = fx.Graph()
    with pytest.raises(ValueError):
        fx.Node(graph=graph, name="foo", op="call_function", target="foo", args=(), kwargs={})


def test_empty_graph_codegen(T, fx, nn):
    graph = fx.Graph()
    gm = fx.GraphModule(nn.Module(), graph)
    assert gm() is None


def test_prepend_self_is_noop(T, fx):
    g = fx.symbolic_trace(lambda x: T.relu(x) + 1).graph
    relu = next(n for n in g.nodes if n.name == "relu")
    relu.prepend(relu)
    relu.append(relu)
    assert names(g) == ["x", "relu", "add", "output"]


def test_inserting_after_none_is_end(T, fx):
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(x)
    with g.inserting_after(None):
        g.call_function(operator.neg, (x,))
    assert names(g) == ["x", "output", "neg"]


def test_create_node_illegal_op(T, fx):
    raises(AssertionError, "op 'foo' is not in _legal_ops", fx.Graph().create_node, "foo", "x")


def test_erase_node_of_another_graph(T, fx):
    g, other = fx.Graph(), fx.Graph()
    z = other.placeholder("z")
    raises(RuntimeError, "Attempting to remove z from wrong graph!", g.erase_node, z)


def test_code_writes_dtypes_and_devices(T, fx):
    gm = fx.symbolic_trace(lambda x: x.to(T.device("cpu"), dtype=T.int32).new_ones(2, dtype=T.float64))
    assert "x.to(device(type='cpu'), dtype = torch.int32)" in gm.code
    assert "new_ones(2, dtype = torch.float64)" in gm.code
    out = gm(T.tensor([1.5]))
    same(out, [1.0, 1.0], dtype="float64")



def test_nn_module_stack_meta(T, fx, nn):
    class Sub(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x).relu()

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.sub = Sub()

        def forward(self, x):
            return self.sub(self.sub(x)) + 1
    gm = fx.symbolic_trace(M())
    stacks = {n.name: [(key, path, cls.__name__) for key, (path, cls) in n.meta["nn_module_stack"].items()]
              for n in gm.graph.nodes if "nn_module_stack" in n.meta}
    assert stacks == {"sub_lin": [("sub", "sub", "Sub"), ("sub.lin", "sub.lin", "Linear")],
                      "relu": [("sub", "sub", "Sub")],
                      "sub_lin_1": [("sub@1", "sub", "Sub"), ("sub.lin@1", "sub.lin", "Linear")],
                      "relu_1": [("sub@1", "sub", "Sub")]}
