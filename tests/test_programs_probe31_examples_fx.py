# ruff: noqa: E501, E702  (the programs are kept as their authors write them)
"""pytorch/examples' fx/invert.py, inline_function.py, wrap_output_dynamically.py, custom_tracer.py and
module_tracer.py, programs session 9's probe (tests/test_programs_probe9_examples_*.py) left out, each kept as written
with sizes shrunk and run as tests/probe31_examples_common.py says. All agreed with PyTorch when written (session 31)
but for the arguments a trace through nn.ReLU records (a strict xfail below); tracing through every layer as
custom_tracer.py's LowerReluTracer does found that the activation and dropout layers ran their function without
dispatching (fixed: tests/test_probe31_examples_fixes.py)."""

from enum import Enum, auto

import numpy as np
import pytest

from .pytorch_programs import run_both


# ---------------------------------------------------------------- fx/invert.py, inline_function.py, wrap_output_dynamically.py,
# custom_tracer.py and module_tracer.py (a small residual network in place of torchvision's resnet18)
def invert_prog(m):
    torch = m.torch; fx = torch.fx
    invert_mapping = {}
    def add_inverse(a, b):
        invert_mapping[a] = b
        invert_mapping[b] = a
    inverses = [(torch.sin, torch.arcsin), (torch.cos, torch.arccos), (torch.tan, torch.arctan), (torch.exp, torch.log)]
    for a, b in inverses:
        add_inverse(a, b)
    def invert(model):
        fx_model = fx.symbolic_trace(model)
        new_graph = fx.Graph()
        env = {}
        for node in reversed(fx_model.graph.nodes):
            if node.op == 'call_function':
                new_node = new_graph.call_function(invert_mapping[node.target], (env[node.name],))
                env[node.args[0].name] = new_node
            elif node.op == 'output':
                new_node = new_graph.placeholder(node.name)
                env[node.args[0].name] = new_node
            elif node.op == 'placeholder':
                new_graph.output(env[node.name])
            else:
                raise RuntimeError("Not implemented")
        new_graph.lint()
        return fx.GraphModule(fx_model, new_graph)
    def f(x):
        return torch.exp(torch.tan(x))
    res = invert(f)
    return res.code.replace("autograd.", "torch."), f(res(torch.arange(5) + 1))

def inline_prog(m):
    torch = m.torch
    from_fx = torch.fx
    class M(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = m.nn.ReLU()
        def forward(self, x):
            return self.relu(x) + 1.0
    mm = from_fx.symbolic_trace(M())
    tracer = torch.fx.proxy.GraphAppendingTracer(mm.graph)
    for node in mm.graph.nodes:
        if (node.op, node.target) == ("call_module", "relu"):
            with mm.graph.inserting_before(node):
                proxy_args = from_fx.node.map_arg(node.args, lambda n: from_fx.Proxy(n, tracer))
                proxy_kwargs = from_fx.node.map_arg(node.kwargs, lambda n: from_fx.Proxy(n, tracer))
                proxy_output = mm.relu(*proxy_args, **proxy_kwargs)
                node.replace_all_uses_with(proxy_output.node)
                mm.graph.erase_node(node)
    mm.recompile()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    return [n.op for n in mm.graph.nodes], mm(x)

def wrap_prog(m):
    torch = m.torch
    from_fx = torch.fx
    class M(m.nn.Module):
        def __init__(self):
            super().__init__()
        def forward(self, x, y):
            y = torch.cat([x, y])
            return y
    traced = from_fx.symbolic_trace(M())
    class ActivationFunction(Enum):
        RELU = auto(); LEAKY_RELU = auto(); PRELU = auto()
    activation_functions = {ActivationFunction.RELU: m.nn.ReLU(), ActivationFunction.LEAKY_RELU: m.nn.LeakyReLU(), ActivationFunction.PRELU: m.nn.PReLU()}
    def wrap_in_activation_function(m_, fn):
        output_node = None
        for n in reversed(m_.graph.nodes):
            if n.op == "output":
                output_node = n
                break
        assert output_node
        assert len(output_node.all_input_nodes) == 1
        wrap_node = output_node.all_input_nodes[0]
        wrap_proxy = from_fx.Proxy(wrap_node)
        fn_impl = activation_functions[fn]
        fn_impl_traced = from_fx.symbolic_trace(fn_impl)
        with traced.graph.inserting_after(wrap_node):
            fn_impl_output_node = fn_impl_traced(wrap_proxy)
            new_args = (fn_impl_output_node.node,)
            output_node.args = new_args
        m_.recompile()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    orig_output = traced(x, y)
    wrap_in_activation_function(traced, ActivationFunction.LEAKY_RELU)
    new_output = traced(x, y)
    torch.testing.assert_close(new_output, m.nn.LeakyReLU()(orig_output))
    return new_output, [n.op for n in traced.graph.nodes]


def custom_tracers(m):
    torch = m.torch; nn = m.nn
    Tracer, symbolic_trace = torch.fx.Tracer, torch.fx.symbolic_trace
    class M1(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()
        def forward(self, x):
            return self.relu(x)
    default_traced = symbolic_trace(M1())
    class LowerReluTracer(Tracer):
        def is_leaf_module(self, m_, qualname):
            if isinstance(m_, nn.ReLU):
                return False
            return super().is_leaf_module(m_, qualname)
    g = LowerReluTracer().trace(M1())
    lowered = [(n.op, n.name, getattr(n.target, "__name__", n.target), n.kwargs) for n in g.nodes]
    class M2(nn.Module):
        def forward(self, a, b):
            return a + b
    class TaggingTracer(Tracer):
        def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
            n = super().create_node(kind, target, args, kwargs, name)
            n.tag = "foo"
            return n
    g2 = TaggingTracer().trace(M2())
    tags = all(getattr(n, "tag", None) == "foo" for n in g2.nodes)
    class ModulePathTracer(torch.fx.Tracer):
        current_module_qualified_name = ''
        node_to_originating_module = {}
        def call_module(self, m_, forward, args, kwargs):
            old_qualname = self.current_module_qualified_name
            try:
                self.current_module_qualified_name = self.path_of_module(m_)
                return super().call_module(m_, forward, args, kwargs)
            finally:
                self.current_module_qualified_name = old_qualname
        def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None):
            proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr)
            self.node_to_originating_module[proxy.node] = self.current_module_qualified_name
            return proxy
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 3, 3, padding=1); self.bn1 = nn.BatchNorm2d(3); self.relu = nn.ReLU(inplace=True)
            self.downsample = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out += self.downsample(x)
            return self.relu(out)
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Sequential(Block(), Block())
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1)); self.fc = nn.Linear(3, 2)
        def forward(self, x):
            x = self.avgpool(self.layer1(x))
            x = torch.flatten(x, 1)
            return self.fc(x)
    tracer = ModulePathTracer()
    traced = tracer.trace(Net())
    paths = [(str(node), tracer.node_to_originating_module.get(node)) for node in traced.nodes]
    return [(n.op, n.name) for n in default_traced.graph.nodes], lowered, tags, paths


def test_fx_invert():
    code, values = run_both(invert_prog)[0]
    assert "torch.log(output)" in code and "torch.arctan(log)" in code
    np.testing.assert_allclose(values, [1.0, 2.0, 3.0, 4.0, 5.0], rtol=1e-5)


def test_fx_inline_function():
    ops, out = run_both(inline_prog)[0]
    assert ops == ["placeholder", "call_function", "call_function", "output"] and out.min() >= 1.0


def test_fx_wrap_output_dynamically():
    out, ops = run_both(wrap_prog)[0]
    assert out.shape == (10, 3) and ops == ["placeholder", "placeholder", "call_function", "call_function", "output"]


def test_fx_custom_tracers():
    default, lowered, tags, paths = run_both(custom_tracers, compare=False)[0]
    assert default == [("placeholder", "x"), ("call_module", "relu"), ("output", "output")] and tags
    assert [(op, name, target) for op, name, target, _ in lowered] == [
        ("placeholder", "x", "x"), ("call_function", "relu", "relu"), ("output", "output", "output")]
    assert ("add", "layer1.0") in paths and ("layer1_1_downsample_0", "layer1.1.downsample.0") in paths
    assert paths[-1] == ("output", None) and ("flatten", "") in paths


@pytest.mark.xfail(strict=True, reason=(
    "PyTorch's F functions hand __torch_function__ the tensor arguments positionally and the options as keywords "
    "(F.relu(x, False) is recorded as relu(x, inplace=False); nn.MaxPool2d's as max_pool2d(x, 2, stride=2, ...)); "
    "chainrule's dispatch records the call as made, so a trace through a layer records other args and kwargs "
    "(session 31, left open: each F function's form is PyTorch's own)"))
def test_fx_custom_tracers_record_pytorchs_keyword_arguments():
    ours, theirs = run_both(custom_tracers, compare=False)
    lowered = ours[1][1]
    assert lowered[3] == {"inplace": False}  # what PyTorch's trace holds: theirs[1][1][3]

