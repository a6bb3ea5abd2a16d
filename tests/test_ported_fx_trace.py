"""``fx.symbolic_trace`` (``torch.fx``, chainrule's ``autograd.fx``), ported from PyTorch's test/test_fx.py: modules
and functions traced (``*args``/``**kwargs``, defaults, dicts and tuples), control flow, ``len`` and iteration
refused, ``concrete_args``, leaf modules and a Tracer's ``is_leaf_module``/``create_node``, ``wrap`` (by name,
directly, as a decorator, with a submodule argument, retraced, transformed), and the operators a Proxy records.

Each test runs on chainrule and, where it is installed, on PyTorch (fixture `T`); the expectations are literals or
the traced program run eagerly.
"""

import math
import operator

import numpy as np
import pytest

import autograd.fx
from tests import ported_fx, ported_nn
from tests.ported import close, raises, same, values
from tests.ported_fx import linear_relu, names, ops, simple

fx, nn = ported_fx.fx, ported_nn.nn  # the fixtures


def a_lifted_leaf(a, b):
    return a[0] + a[1] + b


def a_lifted_leaf2(a, b):
    return a[0] + a[1] + b


def wrapped_via_decorator(a):
    return a + 1


def wrapped_with_submodule(x, batchnorm1d):
    return batchnorm1d(x)


# wrap() records the calling module's globals, so it is called here, at the top level, once for each library
autograd.fx.wrap("a_lifted_leaf")
autograd.fx.wrap("a_lifted_leaf")  # twice breaks nothing
autograd.fx.wrap(a_lifted_leaf2)
autograd.fx.wrap("wrapped_with_submodule")
wrapped_via_decorator = autograd.fx.wrap(wrapped_via_decorator)
try:
    import torch.fx as torch_fx
except ImportError:
    torch_fx = None
if torch_fx is not None:
    torch_fx.wrap("a_lifted_leaf")
    torch_fx.wrap(a_lifted_leaf2)
    torch_fx.wrap("wrapped_with_submodule")
    wrapped_via_decorator = torch_fx.wrap(wrapped_via_decorator)
real_a_lifted_leaf, real_a_lifted_leaf2, real_wrapped_via_decorator = a_lifted_leaf, a_lifted_leaf2, \
    wrapped_via_decorator


# --- symbolic_trace ---------------------------------------------------------------------------------------

def test_symbolic_trace_simple(T, fx, nn):
    gm = fx.symbolic_trace(simple(T, nn))
    gm.graph.lint()
    assert ops(gm.graph) == ["placeholder", "call_function", "call_function", "output"]
    assert names(gm.graph) == ["x", "add", "relu", "output"]
    x = T.tensor([-5.0, -1.0, 2.0])
    same(gm(x), [0.0, 2.0, 5.0])


def test_trace_function(T, fx):
    def f(a, b):
        return T.sin(a) * b + 1
    gm = fx.symbolic_trace(f)
    a, b = T.tensor([0.5, 1.0]), T.tensor([2.0, 3.0])
    close(gm(a, b), np.sin([0.5, 1.0]) * [2.0, 3.0] + 1)
    assert [n.target for n in gm.graph.nodes if n.op == "placeholder"] == ["a", "b"]


def test_args_kwargs(T, fx, nn):
    class M(nn.Module):
        def forward(self, *args, **kwargs):
            return args[0] + kwargs["foo"]
    gm = fx.symbolic_trace(M())
    gm.graph.lint()
    same(gm(T.tensor([1.0]), foo=T.tensor([2.0])), [3.0])


def test_args_kwargs_placeholders(T, fx, nn):
    class M(nn.Module):
        def forward(self, x, *args, **kwargs):
            return x + args[1] * kwargs["k"]
    gm = fx.symbolic_trace(M())
    assert [(n.name, n.target) for n in gm.graph.nodes if n.op == "placeholder"] == [
        ("x", "x"), ("_args", "*args"), ("_kwargs", "**kwargs")]
    assert "def forward(self, x, *args, **kwargs):" in gm.code
    assert gm(1, 5, 2, k=10) == 21


def test_args_kwargs_no_self(T, fx, nn):
    class M(nn.Module):
        def forward(*args, **kwargs):  # noqa: N805
            return T.relu(args[1])
    raises(RuntimeError, r"cannot be part of \*args expansion", fx.symbolic_trace, M())


def test_default_argument_becomes_placeholder_default(T, fx, nn):
    class M(nn.Module):
        def forward(self, x, y=2):
            return x * y
    gm = fx.symbolic_trace(M())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    assert [n.target for n in placeholders] == ["x", "y"]
    assert placeholders[1].args == (2,)
    same(gm(T.tensor([3.0])), [6.0])
    same(gm(T.tensor([3.0]), 5), [15.0])


def test_fx_shifts_and_bitwise(T, fx, nn):
    class M(nn.Module):
        def forward(self, x):
            return x << 3, x >> 3, x & x, x | x, x ^ x
    gm = fx.symbolic_trace(M())
    x = T.tensor([1, 8, 100])
    out = gm(x)
    same(out[0], [8, 64, 800])
    same(out[1], [0, 1, 12])
    same(out[2], [1, 8, 100])
    same(out[3], [1, 8, 100])
    same(out[4], [0, 0, 0])


def test_matmul_tracing(T, fx):
    const = T.tensor([1.0, 2.0, 3.0])
    gm = fx.symbolic_trace(lambda x: x @ const)
    same(gm(T.tensor([1.0, 1.0, 1.0])), 6.0)
    gm = fx.symbolic_trace(lambda x: const @ x)
    same(gm(T.tensor([2.0, 0.0, 1.0])), 5.0)


def test_dict_input_and_output(T, fx, nn):
    class M(nn.Module):
        def forward(self, d):
            return d["3"].relu(), {"4": d["3"].neg()}
    gm = fx.symbolic_trace(M())
    out = gm({"3": T.tensor([-1.0, 2.0])})
    same(out[0], [0.0, 2.0])
    same(out[1]["4"], [1.0, -2.0])


def test_tuple_output_and_getitem(T, fx):
    def f(x):
        m, idx = T.max(x, 0)
        return m + 1, idx + 1
    gm = fx.symbolic_trace(f)
    assert operator.getitem in [n.target for n in gm.graph.nodes]
    m, idx = gm(T.tensor([1.0, 5.0, 2.0]))
    same(m, 6.0)
    same(idx, 2)


def test_control_flow_on_proxy_raises_trace_error(T, fx, nn):
    class M(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x
    raises(fx.proxy.TraceError, "symbolically traced variables cannot be used as inputs to control flow",
           fx.symbolic_trace, M())


def test_bool_of_proxy_raises(T, fx):
    def f(x):
        return bool(x)
    raises(fx.proxy.TraceError, "control flow", fx.symbolic_trace, f)


def test_len_of_proxy_refused(T, fx):
    def f(x):
        return len(x)
    raises(RuntimeError, "'len' is not supported in symbolic tracing by default", fx.symbolic_trace, f)


def test_iterating_a_proxy_refused(T, fx):
    def f(x):
        return [y for y in x]
    raises(fx.proxy.TraceError, "Proxy object cannot be iterated", fx.symbolic_trace, f)


def test_unpacking_a_proxy_of_known_length(T, fx):
    # a tuple unpacked by an assignment of known length is read item by item (getitem)
    def f(x):
        a, b = x.split(1)
        return a + b
    gm = fx.symbolic_trace(f)
    assert [n.target for n in gm.graph.nodes].count(operator.getitem) == 2
    same(gm(T.tensor([1.0, 2.0])), [3.0])


def test_concrete_args_removes_control_flow(T, fx, nn):
    class M(nn.Module):
        def forward(self, x, flag):
            if flag:
                return x * 2
            return x - 1
    # (the concrete argument stays a parameter of forward, as in test_fx.py's test_partial_trace)
    gm = fx.symbolic_trace(M(), concrete_args={"flag": True})
    assert "mul" in names(gm.graph) and "sub" not in names(gm.graph)
    same(gm(T.tensor([3.0]), True), [6.0])
    gm = fx.symbolic_trace(M(), concrete_args={"flag": False})
    same(gm(T.tensor([3.0]), False), [2.0])


def test_concrete_args_none(T, fx):
    def f(x, y=None):
        if y is None:
            return x + 1
        return x + y
    gm = fx.symbolic_trace(f, concrete_args={"y": None})
    same(gm(T.tensor([1.0])), [2.0])


def test_leaf_module_is_call_module(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    assert [(n.op, n.target) for n in gm.graph.nodes] == [
        ("placeholder", "x"), ("call_module", "linear"), ("call_module", "relu"), ("output", "output")]
    x = T.ones(2, 4)
    close(gm(x), values(linear_relu(T, nn)(x)))


def test_tracer_without_leaf_modules(T, fx, nn):
    class NoLeafModulesTracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return False

    class MyReluMod(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x)
    graph = NoLeafModulesTracer().trace(MyReluMod())
    graph.lint()
    assert all(node.op != "call_module" for node in graph.nodes)
    assert "call_function" in ops(graph)


def test_custom_leaf_module(T, fx, nn):
    class Inner(nn.Module):
        def forward(self, x):
            return x * 2 + 1

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, x):
            return self.inner(x) - 1

    class InnerIsLeaf(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, Inner) or super().is_leaf_module(m, qualname)
    traced = fx.symbolic_trace(Outer())
    assert "call_module" not in ops(traced.graph)
    graph = InnerIsLeaf().trace(Outer())
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["inner"]
    gm = fx.GraphModule(Outer(), graph)
    same(gm(T.tensor([1.0])), [2.0])


def test_nested_submodule_path_names(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU())

        def forward(self, x):
            return self.seq(x)
    gm = fx.symbolic_trace(M())
    assert [(n.name, n.target) for n in gm.graph.nodes if n.op == "call_module"] == [
        ("seq_0", "seq.0"), ("seq_1", "seq.1")]


def test_parameter_read_is_get_attr(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(T.tensor([2.0, 3.0]))
            self.register_buffer("b", T.tensor([1.0, 1.0]))

        def forward(self, x):
            return x * self.w + self.b
    gm = fx.symbolic_trace(M())
    assert [(n.op, n.target) for n in gm.graph.nodes if n.op == "get_attr"] == [("get_attr", "w"), ("get_attr", "b")]
    same(gm(T.tensor([1.0, 2.0])), [3.0, 7.0])


def test_tensor_constant_is_get_attr(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = T.tensor([10.0])

        def forward(self, x):
            return x + self.c
    gm = fx.symbolic_trace(M())
    attrs = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    assert len(attrs) == 1
    same(getattr(gm, attrs[0]), [10.0])
    same(gm(T.tensor([1.0])), [11.0])


def test_retrace_graph_module(T, fx, nn):
    gm = fx.symbolic_trace(linear_relu(T, nn))
    again = fx.symbolic_trace(gm)
    assert ops(again.graph) == ops(gm.graph)
    x = T.ones(1, 4)
    close(again(x), values(gm(x)))


def test_tracer_trace_returns_graph(T, fx, nn):
    graph = fx.Tracer().trace(simple(T, nn))
    assert isinstance(graph, fx.Graph)
    assert names(graph) == ["x", "add", "relu", "output"]


def test_disallow_inplace_by_create_node_override(T, fx, nn):
    class NoMutableCallTracer(fx.Tracer):
        def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
            name = target if isinstance(target, str) else getattr(target, "__name__", "")
            if name[-1] == "_":
                raise RuntimeError("In-place operations are not supported")
            return super().create_node(kind, target, args, kwargs, name)

    class MyInplaceMod(nn.Module):
        def forward(self, x):
            x.add_(3.0)
            return x
    raises(RuntimeError, "In-place operations", NoMutableCallTracer().trace, MyInplaceMod())


# --- wrap ---------------------------------------------------------------------------------------------------

def test_wrap(T, fx):
    assert a_lifted_leaf((3, 4), 5) == 12

    def to_trace(y):
        return a_lifted_leaf((4, y), 3) + a_lifted_leaf((3, 4), 5) + a_lifted_leaf((y, y), y)
    m = fx.symbolic_trace(to_trace)
    assert "a_lifted_leaf" in m.code
    assert m(2) == 27
    assert a_lifted_leaf is real_a_lifted_leaf


def test_wrap_fn_directly(T, fx):
    def to_trace(y):
        return a_lifted_leaf2((4, y), 3) + a_lifted_leaf2((3, 4), 5) + a_lifted_leaf2((y, y), y)
    m = fx.symbolic_trace(to_trace)
    assert "a_lifted_leaf2" in m.code
    assert m(2) == 27
    assert a_lifted_leaf2 is real_a_lifted_leaf2


def test_wrapped_via_decorator(T, fx):
    assert wrapped_via_decorator(0) == 1
    m = fx.symbolic_trace(lambda y: wrapped_via_decorator(y))
    assert "wrapped_via_decorator" in m.code
    assert m(0) == 1
    assert wrapped_via_decorator is real_wrapped_via_decorator
    assert not hasattr(wrapped_via_decorator, "__fx_already_patched")


def test_wrapped_via_decorator_and_transformed(T, fx):
    m = fx.symbolic_trace(lambda y: wrapped_via_decorator(y))
    transformed = fx.Transformer(m).transform()
    assert "wrapped_via_decorator" in transformed.code
    assert transformed(0) == 1
    assert wrapped_via_decorator is real_wrapped_via_decorator


def test_wrapped_retrace(T, fx):
    m = fx.symbolic_trace(lambda y: wrapped_via_decorator(y))
    retraced = fx.symbolic_trace(m)
    assert "wrapped_via_decorator" in retraced.code
    assert retraced(0) == 1


def test_wrap_with_submodule(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.batchnorm1d = nn.BatchNorm1d(2, affine=False)

        def forward(self, x):
            return wrapped_with_submodule(x, self.batchnorm1d)
    m = fx.symbolic_trace(M())
    assert "wrapped_with_submodule" in m.code
    x = T.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    close(m(x), nn.BatchNorm1d(2, affine=False)(x))


# --- Proxy operators -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "lt", "le", "gt",
                                "ge", "eq", "ne"])
def test_proxy_binary_operators(T, fx, op):
    fn = getattr(operator, op)
    gm = fx.symbolic_trace(lambda x, y: fn(x, y))
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [fn]
    x, y = T.tensor([7.0, 2.0, 5.0]), T.tensor([2.0, 2.0, 3.0])
    same(gm(x, y), fn(x, y).numpy())


@pytest.mark.parametrize("op", ["add", "sub", "mul", "truediv", "pow"])
def test_proxy_reflected_operators(T, fx, op):
    fn = getattr(operator, op)
    gm = fx.symbolic_trace(lambda x: fn(2.0, x))
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    assert node.target is fn and node.args[0] == 2.0
    x = T.tensor([1.0, 4.0])
    same(gm(x), fn(2.0, x).numpy())


@pytest.mark.parametrize("op", ["neg", "pos", "invert", "abs"])
def test_proxy_unary_operators(T, fx, op):
    fn = getattr(operator, op)
    gm = fx.symbolic_trace(lambda x: fn(x))
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [fn]
    x = T.tensor([1, -4])
    same(gm(x), fn(x).numpy())


def test_proxy_getitem_slices(T, fx):
    gm = fx.symbolic_trace(lambda x: x[1:, None, ..., 0])
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    assert node.target is operator.getitem
    assert node.args[1] == (slice(1, None, None), None, Ellipsis, 0)
    x = T.arange(6.0).reshape(3, 2)
    same(gm(x), [[2.0], [4.0]])


def test_proxy_method_calls_and_attribute(T, fx):
    def f(x):
        return x.view(-1).float().transpose(0, 0).size(0) * x.shape[0]
    gm = fx.symbolic_trace(f)
    methods = [n.target for n in gm.graph.nodes if n.op == "call_method"]
    assert methods == ["view", "float", "transpose", "size"]
    getattrs = [n.args for n in gm.graph.nodes if n.target is getattr]
    assert getattrs[0][1] == "shape"
    assert gm(T.ones(2, 3)) == 12


def test_proxy_torch_function_with_kwargs(T, fx):
    gm = fx.symbolic_trace(lambda x: T.sum(x, dim=1, keepdim=True))
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    assert node.target is T.sum and node.kwargs == {"dim": 1, "keepdim": True}
    same(gm(T.ones(2, 3)), [[3.0], [3.0]])


def test_proxy_repr_and_node(T, fx):
    captured = {}

    def f(x):
        captured["proxy"] = x
        return x
    fx.symbolic_trace(f)
    proxy = captured["proxy"]
    assert repr(proxy) == "Proxy(x)"
    assert proxy.node.op == "placeholder"


def test_functional_through_proxy(T, fx, nn):
    F = nn.functional

    def f(x):
        return F.gelu(x) + F.softmax(x, dim=-1)
    gm = fx.symbolic_trace(f)
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"][:2] == [F.gelu, F.softmax]
    x = T.tensor([[0.0, 1.0]])
    close(gm(x), f(x).detach().numpy())


def test_new_tensor_with_proxy_size(T, fx):
    gm = fx.symbolic_trace(lambda x: x.new_zeros(x.shape[0], 2) + x.sum())
    assert [n.target for n in gm.graph.nodes if n.op == "call_method"] == ["new_zeros", "sum"]
    same(gm(T.ones(3)), np.full((3, 2), 3.0))


def test_constant_float_and_int_folded_into_args(T, fx):
    gm = fx.symbolic_trace(lambda x: x * 2 + 0.5)
    assert [n.args[1] for n in gm.graph.nodes if n.op == "call_function"] == [2, 0.5]


# --- more of test_fx.py ----------------------------------------------------------------------------------------

def fx_int(x):
    return int(x)


def fx_int_x2(x):
    return int(x) * 2


def test_autowrap_functions(T, fx, nn):
    class AutowrapFnTest(nn.Module):
        def forward(self, x):
            return fx_int(x.shape[0] / 2)

    class AutowrapFnTest2(nn.Module):
        def forward(self, x):
            return fx_int(x.shape[0] / 2) + fx_int_x2(x.shape[0] / 2)
    tracer = fx.Tracer(autowrap_functions=(fx_int,))
    graph = tracer.trace(AutowrapFnTest())
    traced = fx.GraphModule(tracer.root, graph, "test")
    assert [n.target for n in graph.nodes if n.op == "call_function"][-1] is fx_int
    tracer_2 = fx.Tracer(autowrap_functions=(fx_int, fx_int_x2))
    graph_2 = tracer_2.trace(AutowrapFnTest2())
    traced_2 = fx.GraphModule(tracer_2.root, graph_2, "test")
    assert traced(T.ones(4)) == 2
    assert traced_2(T.ones(4)) == 6


def test_autowrap_math_module(T, fx):
    # math's functions are recorded whole by default (autowrap_modules=(math,))
    def f(x):
        return x * math.sqrt(x.shape[0])
    gm = fx.symbolic_trace(f)
    assert math.sqrt in [n.target for n in gm.graph.nodes]
    same(gm(T.ones(4)), [2.0, 2.0, 2.0, 2.0])


def test_node_tagging(T, fx, nn):
    class TaggingTracer(fx.Tracer):
        def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
            n = super().create_node(kind, target, args, kwargs, name)
            n.tag = "foo"
            return n

    class M(nn.Module):
        def forward(self, a, b):
            return a + b
    g = TaggingTracer().trace(M())
    g.lint()
    assert [n.tag for n in g.nodes] == ["foo"] * 4


def test_snake_case_module_names(T, fx, nn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.activations = nn.ModuleDict([["snake_case", nn.ReLU()], ["PascalCase", nn.LeakyReLU()],
                                              ["ALL_CAPS", nn.PReLU()]])

        def forward(self, x):
            a = self.activations["snake_case"](x)
            b = self.activations["PascalCase"](x)
            c = self.activations["ALL_CAPS"](x)
            return a, b, c
    gm = fx.symbolic_trace(M())
    assert [n.name for n in gm.graph.nodes if n.op == "call_module"] == [
        "activations_snake_case", "activations_pascal_case", "activations_all_caps"]


def test_symbolic_trace_sequential(T, fx, nn):
    T.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    gm = fx.symbolic_trace(seq)
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["0", "1", "2"]
    x = T.ones(2, 3)
    close(gm(x), values(seq(x)))
    assert "getattr(self, \"0\")(input_1)" in gm.code.replace("'", '"')


def test_multiple_default_args(T, fx, nn):
    class M(nn.Module):
        def forward(self, x, y=1, z=2):
            return x + y + z
    gm = fx.symbolic_trace(M())
    assert [n.args for n in gm.graph.nodes if n.op == "placeholder"] == [(), (1,), (2,)]
    assert gm(10) == 13 and gm(10, 0) == 12 and gm(10, z=0) == 11


def test_interpreter_star_args(T, fx):
    def with_star_args(x, *args):
        return x + args[0]
    gm = fx.symbolic_trace(with_star_args)
    result = fx.Interpreter(gm).run(T.tensor([1.0]), T.tensor([2.0]), T.tensor([5.0]))
    same(result, [3.0])
    same(gm(T.tensor([1.0]), T.tensor([4.0])), [5.0])
