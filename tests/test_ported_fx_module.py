"""``fx.GraphModule``, ``fx.Interpreter`` and ``fx.Transformer`` (``torch.fx``, chainrule's ``autograd.fx``),
ported from PyTorch's test/test_fx.py: the code written and ``recompile``, state dicts and submodules
(``add_submodule``, ``delete_submodule``, ``delete_all_unused_submodules``), copies and pickling, then interpreting
a graph node by node (``run_node`` overrides, ``fetch_attr``, ``initial_env``) and transforming it.

Each test runs on chainrule and, where it is installed, on PyTorch (fixture `T`); the expectations are literals or
the traced program run eagerly.
"""

import math
import operator
import pickle

import numpy as np

from tests import ported_fx, ported_nn
from tests.ported import close, raises, same, values, xfail_ours
from tests.ported_fx import linear_relu, names, ops

fx, nn = ported_fx.fx, ported_nn.nn  # the fixtures


# --- GraphModule -----------------------------------------------------------------------------------------------

def test_graph_module_code_text(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    assert gm.code.strip().splitlines() == [
        "def forward(self, x):",
        "    linear = self.linear(x);  x = None",
        "    relu = self.relu(linear);  linear = None",
        "    return relu"]


def test_graph_str(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    assert str(gm.graph).strip().splitlines() == [
        "graph():",
        "    %x : [num_users=1] = placeholder[target=x]",
        "    %linear : [num_users=1] = call_module[target=linear](args = (%x,), kwargs = {})",
        "    %relu : [num_users=1] = call_module[target=relu](args = (%linear,), kwargs = {})",
        "    return relu"]


def test_graph_str_get_attr_and_function(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(T.ones(2))

        def forward(self, x):
            return (x + self.p).sum(dim=-1)
    text = str(fx.symbolic_trace(M()).graph).strip().splitlines()
    assert text[2] == "    %p : [num_users=1] = get_attr[target=p]"
    assert text[3] == "    %add : [num_users=1] = call_function[target=operator.add](args = (%x, %p), kwargs = {})"
    assert text[4] == "    %sum_1 : [num_users=1] = call_method[target=sum](args = (%add,), kwargs = {dim: -1})"


def test_recompile_after_edit(T, fx):
    gm = fx.symbolic_trace(lambda x: x + 1)
    add = next(n for n in gm.graph.nodes if n.op == "call_function")
    add.target = operator.mul
    assert "+" in gm.code
    gm.recompile()
    assert "x * 1" in gm.code
    add.args = (add.args[0], 7)
    gm.recompile()
    same(gm(T.tensor([2.0])), [14.0])


def test_assigning_graph_recompiles(T, fx, nn):
    gm = fx.symbolic_trace(lambda x: x + 1)
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(operator.sub, (x, 1)))
    gm.graph = g
    assert gm(5) == 4


def test_graph_module_from_dict_root(T, fx, nn):
    g = fx.Graph()
    x = g.placeholder("x")
    w = g.get_attr("w")
    y = g.call_module("lin", (x,))
    g.output(g.call_function(operator.add, (y, w)))
    lin = nn.Linear(2, 1)
    gm = fx.GraphModule({"lin": lin, "w": T.tensor([100.0])}, g)
    assert gm.lin is lin
    x = T.ones(1, 2)
    close(gm(x), values(lin(x) + 100))


def test_graph_module_keeps_only_used_attributes(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.unused = nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)
    gm = fx.symbolic_trace(M())
    assert hasattr(gm, "used") and not hasattr(gm, "unused")
    assert sorted(gm.state_dict()) == ["used.bias", "used.weight"]


def test_state_dict_and_parameters(T, fx, nn):
    m = linear_relu(T, nn)
    gm = fx.symbolic_trace(m)
    assert list(gm.state_dict()) == ["linear.weight", "linear.bias"]
    assert len(list(gm.parameters())) == 2
    gm.load_state_dict({"linear.weight": T.zeros(3, 4), "linear.bias": T.ones(3)})
    same(gm(T.ones(1, 4)), [[1.0, 1.0, 1.0]])


def test_submodules_at_their_paths(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Linear(2, 2), nn.Tanh())

        def forward(self, x):
            return self.a(x)
    gm = fx.symbolic_trace(M())
    assert [name for name, _ in gm.named_modules()] == ["", "a", "a.0", "a.1"]
    assert isinstance(gm.get_submodule("a.1"), nn.Tanh)


def test_add_submodule_and_call_it(T, fx, nn):
    gm = fx.symbolic_trace(lambda x: x + 1)
    assert gm.add_submodule("foo.bar", nn.ReLU()) is True
    add = next(n for n in gm.graph.nodes if n.op == "call_function")
    with gm.graph.inserting_after(add):
        r = gm.graph.call_module("foo.bar", (add,))
    add.replace_all_uses_with(r)
    r.args = (add,)
    gm.recompile()
    same(gm(T.tensor([-3.0, 1.0])), [0.0, 2.0])
    assert isinstance(gm.foo.bar, nn.ReLU)


def test_delete_submodule(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    assert gm.delete_submodule("relu") is True
    assert not hasattr(gm, "relu")
    assert gm.delete_submodule("relu") is False
    assert gm.delete_submodule("nothing.here") is False


def test_delete_all_unused_submodules(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = nn.Sequential(nn.ReLU(), nn.Tanh())

        def forward(self, x):
            return self.b(self.a(x))
    gm = fx.symbolic_trace(M())
    a = next(n for n in gm.graph.nodes if n.target == "a")
    b0 = next(n for n in gm.graph.nodes if n.target == "b.0")
    b0.replace_all_uses_with(a)
    gm.graph.erase_node(b0)
    gm.recompile()
    gm.delete_all_unused_submodules()
    assert [name for name, _ in gm.named_modules()] == ["", "a", "b", "b.1"]


def test_pickle_graph_module(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    loaded = pickle.loads(pickle.dumps(gm))
    x = T.ones(2, 4)
    close(loaded(x), values(gm(x)))
    assert loaded.code == gm.code
    assert names(loaded.graph) == names(gm.graph)


def test_pickle_graph_module_of_function(T, fx):
    gm = fx.symbolic_trace(lambda x: T.sigmoid(x) * 2)
    loaded = pickle.loads(pickle.dumps(gm))
    close(loaded(T.tensor([0.0])), [1.0])


def test_graph_module_init_again(T, fx):
    # PyTorch issue 63883: __init__ on a new instance of a GraphModule's class
    gm = fx.symbolic_trace(lambda x: T.relu(x))
    new_instance = gm.__new__(type(gm))
    new_instance.__init__(gm, gm.graph)
    same(new_instance(T.tensor([-1.0, 1.0])), [0.0, 1.0])


def test_each_graph_module_has_own_class(T, fx):
    gm1 = fx.symbolic_trace(lambda x: x + 1)
    gm2 = fx.symbolic_trace(lambda x: x * 10)
    assert type(gm1) is not type(gm2)
    assert gm1(1) == 2 and gm2(1) == 10


def test_graph_module_backward(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    x = T.ones(2, 4)
    gm(x).sum().backward()
    assert gm.linear.weight.grad is not None
    assert tuple(gm.linear.weight.grad.shape) == (3, 4)


def test_training_mode_flows(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(x)
    gm = fx.symbolic_trace(M())
    gm.eval()
    assert gm.drop.training is False
    same(gm(T.ones(4)), [1.0, 1.0, 1.0, 1.0])


def test_print_readable(T, fx, nn, capsys):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    text = gm.print_readable(print_output=False)
    assert text.startswith("class M(torch.nn.Module):\n    def forward(self, x):\n")
    assert "linear = self.linear(x)" in text
    assert capsys.readouterr().out == ""


# --- Interpreter and Transformer -----------------------------------------------------------------------------

def test_interpreter_runs_graph(T, fx, nn):
    m = linear_relu(T, nn)
    gm = fx.symbolic_trace(m)
    x = T.ones(2, 4)
    close(fx.Interpreter(gm).run(x), values(m(x)))


def test_interpreter_run_node_override(T, fx, nn):
    class NegSigmSwapInterpreter(fx.Interpreter):
        def call_function(self, target, args, kwargs):
            if target == T.sigmoid:
                return T.neg(*args, **kwargs)
            return super().call_function(target, args, kwargs)

        def call_method(self, target, args, kwargs):
            if target == "neg":
                call_self, *args_tail = args
                return call_self.sigmoid(*args_tail, **kwargs)
            return super().call_method(target, args, kwargs)

    def fn(x):
        return T.sigmoid(x).neg()
    gm = fx.symbolic_trace(fn)
    x = T.tensor([0.0, 1.0])
    result = NegSigmSwapInterpreter(gm).run(x)
    close(result, 1 / (1 + np.exp([0.0, 1.0])))


def test_interpreter_fetch_attr(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            return self.lin.weight @ x
    gm = fx.symbolic_trace(M())
    interp = fx.Interpreter(gm)
    assert interp.fetch_attr("lin.weight") is gm.lin.weight
    raises(RuntimeError, "Node referenced nonexistent target lin.nothing", interp.fetch_attr, "lin.nothing")


def test_interpreter_env_and_garbage_collection(T, fx, nn):
    seen = []

    class Recording(fx.Interpreter):
        def run_node(self, n):
            seen.append((n.name, len(self.env)))
            return super().run_node(n)
    gm = fx.symbolic_trace(lambda x: T.relu(x + 1) * 2)
    out = Recording(gm).run(T.tensor([1.0]))
    same(out, [4.0])
    assert [name for name, _ in seen] == ["x", "add", "relu", "mul", "output"]


def test_interpreter_initial_env(T, fx):
    gm = fx.symbolic_trace(lambda x: T.relu(x) + 1)
    relu = next(n for n in gm.graph.nodes if n.name == "relu")
    out = fx.Interpreter(gm).run(T.tensor([-5.0]), initial_env={relu: T.tensor([10.0])})
    same(out, [11.0])


def test_interpreter_not_enough_args(T, fx):
    gm = fx.symbolic_trace(lambda x, y: x + y)
    raises(RuntimeError, "Expected positional argument for parameter y, but one was not passed in",
           fx.Interpreter(gm).run, T.tensor([1.0]))


def test_interpreter_over_a_plain_graph_module(T, fx, nn):
    g = fx.Graph()
    x = g.placeholder("x")
    g.output(g.call_function(T.exp, (x,)))
    gm = fx.GraphModule(nn.Module(), g)
    close(fx.Interpreter(gm).run(T.tensor([0.0])), [1.0])


def test_transformer_noop(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    new_gm = fx.Transformer(gm).transform()
    x = T.ones(1, 4)
    close(new_gm(x), values(gm(x)))
    assert ops(new_gm.graph) == ops(gm.graph)
    assert new_gm.linear is gm.linear


def test_transformer_op_swap(T, fx):
    def fn(x):
        return T.sigmoid(x).neg()

    class NegSigmSwapXformer(fx.Transformer):
        def call_function(self, target, args, kwargs):
            if target == T.sigmoid:
                return T.neg(*args, **kwargs)
            return super().call_function(target, args, kwargs)

        def call_method(self, target, args, kwargs):
            if target == "neg":
                call_self, *args_tail = args
                return call_self.sigmoid(*args_tail, **kwargs)
            return super().call_method(target, args, kwargs)
    transformed = NegSigmSwapXformer(fx.symbolic_trace(fn)).transform()
    x = T.tensor([0.0, 2.0])
    close(transformed(x), 1 / (1 + np.exp([0.0, 2.0])))


@xfail_ours("inside a Transformer's methods chainrule's library functions are the dispatching wrappers that record "
            "calls on proxies, equal (==) to the functions a node targets but not the same objects")
def test_transformer_target_is_the_function(T, fx):
    class Check(fx.Transformer):
        def call_function(self, target, args, kwargs):
            assert target is T.sigmoid
            return super().call_function(target, args, kwargs)
    gm = Check(fx.symbolic_trace(lambda x: T.sigmoid(x))).transform()
    close(gm(T.tensor([0.0])), [0.5])


def test_transformer_multi_outputs(T, fx, nn):
    class MyModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.param = nn.Parameter(T.tensor([[1.0, 2.0], [3.0, 4.0]]))
            self.linear = nn.Linear(2, 2)

        def forward(self, x):
            x = x + self.param
            out = self.linear(x)
            return x, out
    m = MyModule()
    gm = fx.symbolic_trace(m)
    new_gm = fx.Transformer(gm).transform()
    x = T.ones(2, 2)
    a, b = new_gm(x)
    ra, rb = m(x)
    same(a, ra.detach().numpy())
    close(b, rb.detach().numpy())


def test_transformer_proxies_return_values(T, fx):
    class AddToMul(fx.Transformer):
        def call_function(self, target, args, kwargs):
            result = super().call_function(operator.mul if target is operator.add else target, args, kwargs)
            assert isinstance(result, fx.Proxy)
            return result
    gm = AddToMul(fx.symbolic_trace(lambda x: x + 3)).transform()
    assert gm(4) == 12


def test_pickle_keeps_wrapped_and_math_functions_whole(T, fx):
    gm = fx.symbolic_trace(lambda x: x * math.sqrt(x.shape[0]))
    loaded = pickle.loads(pickle.dumps(gm))
    same(loaded(T.ones(4)), [2.0, 2.0, 2.0, 2.0])
    retraced = fx.symbolic_trace(loaded)
    assert math.sqrt in [n.target for n in retraced.graph.nodes]
