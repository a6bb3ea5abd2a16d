"""Programs of torch.fx as its users write them (PyTorch's fx tutorials and docs, torchvision's feature extraction,
the FX conv/batch-norm fuser), each run on chainrule and, where PyTorch is installed, on PyTorch: the traced graph's
nodes (op, target, name), the generated module's outputs and its parameters' gradients must agree. Without PyTorch
each test still checks its values: against the module it traced, and literal node lists."""

import importlib
import operator

import numpy as np

from .pytorch_programs import OURS, error_of, run_both


def nodes_of(graph):
    """(op, target, name) of each node; a function target by its name (``operator.add`` as that, the library's
    ``relu`` as ``relu``), as both libraries agree on."""
    def target(node):
        if isinstance(node.target, str):
            return node.target
        name = node.target.__name__
        return f"operator.{name}" if getattr(operator, name, None) is node.target else name
    return [(node.op, target(node), node.name) for node in graph.nodes]


def grads_of(module):
    return {name: p.grad for name, p in module.named_parameters()}


# ---------------------------------------------------------------------------------------------------------------
# tracing an MLP, a CNN and a ResNet block; the traced module's outputs and gradients are the module's
# ---------------------------------------------------------------------------------------------------------------


def mlp(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 8)
            self.act = nn.ReLU()
            self.fc2 = nn.Linear(8, 3)

        def forward(self, x):
            h = self.act(self.fc1(x))
            return F.log_softmax(self.fc2(h) + 1, dim=-1)

    torch.manual_seed(0)
    model = MLP()
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(5, 4)
    out = gm(x)
    out.sum().backward()
    return {"nodes": nodes_of(gm.graph), "out": out, "same": model(x), "grads": grads_of(gm),
            "keys": list(gm.state_dict()), "class": type(gm).__name__, "is_module": isinstance(gm, nn.Module)}


def test_trace_mlp():
    ours, _ = run_both(mlp)
    assert ours["nodes"] == [("placeholder", "x", "x"), ("call_module", "fc1", "fc1"), ("call_module", "act", "act"),
                             ("call_module", "fc2", "fc2"), ("call_function", "operator.add", "add"),
                             ("call_function", "log_softmax", "log_softmax"), ("output", "output", "output")]
    np.testing.assert_allclose(ours["out"], ours["same"], rtol=1e-6)
    assert ours["keys"] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"] and ours["class"] == "MLP"
    assert abs(ours["grads"]["fc2.bias"].sum()) < 1e-5  # (softmax sums to 1)


def cnn(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                          nn.MaxPool2d(2))
            self.fc = nn.Linear(4 * 4 * 4, 10)

        def forward(self, x):
            x = self.features(x)
            x = torch.flatten(x, 1)
            x = F.dropout(x, 0.0, self.training)
            return self.fc(x.view(x.size(0), -1))

    torch.manual_seed(0)
    model = Net()
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 1, 8, 8)
    out = gm(x)
    out.pow(2).mean().backward()
    return {"nodes": nodes_of(gm.graph), "out": out, "same": model(x), "grads": grads_of(gm),
            "code_has": ["torch.flatten" in gm.code, ".view(" in gm.code]}


def test_trace_cnn():
    ours, _ = run_both(cnn, rtol=1e-5, atol=1e-6)
    assert [name for _, _, name in ours["nodes"]] == ["x", "features_0", "features_1", "features_2", "features_3",
                                                      "flatten", "dropout", "size", "view", "fc", "output"]
    np.testing.assert_allclose(ours["out"], ours["same"], rtol=1e-6)
    assert ours["code_has"] == [True, True]


def resnet_block(m):
    torch, nn = m.torch, m.nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    torch.manual_seed(0)
    block = BasicBlock(2, 4, 2)
    gm = torch.fx.symbolic_trace(block)
    x = torch.randn(2, 2, 6, 6)
    out = gm(x)
    out.sum().backward()
    block.eval()
    gm.eval()
    return {"nodes": nodes_of(gm.graph), "out": out, "eval": gm(x), "eval_same": block(x), "grads": grads_of(gm)}


def test_trace_resnet_block():
    ours, _ = run_both(resnet_block, rtol=1e-5, atol=1e-5)
    assert ours["nodes"][1:4] == [("call_module", "downsample.0", "downsample_0"),
                                  ("call_module", "downsample.1", "downsample_1"), ("call_module", "conv1", "conv1")]
    assert ("call_function", "operator.add", "add") in ours["nodes"] and ours["nodes"][-2][2] == "relu_1"
    np.testing.assert_allclose(ours["eval"], ours["eval_same"], rtol=1e-6)


def traced_function(m):
    torch = m.torch

    def f(x, y, scale=2.0):
        z = torch.sin(x) + y.cos() * scale
        return z.sum(dim=0), -z[0, 1:]

    gm = torch.fx.symbolic_trace(f)
    x, y = torch.arange(6.0).reshape(2, 3), torch.ones(2, 3)
    return {"nodes": nodes_of(gm.graph), "out": gm(x, y), "default": gm(x, y, 3.0), "same": f(x, y, 3.0)}


def test_trace_a_function():
    ours, _ = run_both(traced_function)
    assert ours["nodes"][:3] == [("placeholder", "x", "x"), ("placeholder", "y", "y"),
                                 ("placeholder", "scale", "scale")]
    assert [op for op, _, _ in ours["nodes"]].count("call_method") == 2  # (y.cos(), z.sum(dim=0))
    np.testing.assert_allclose(ours["default"][0], ours["same"][0], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# graph rewriting: ReLU to GELU, conv + batch norm fused, a node inserted, intermediate outputs returned
# ---------------------------------------------------------------------------------------------------------------


def relu_to_gelu(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.act = nn.ReLU()

        def forward(self, x):
            return torch.relu(self.act(self.fc(x)) - 0.5).relu() + F.relu(x)

    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(Net())
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in (torch.relu, F.relu):
            node.target, node.kwargs = F.gelu, {}  # (PyTorch's F.relu records its inplace=False)
        elif node.op == "call_method" and node.target == "relu":
            with gm.graph.inserting_after(node):
                gelu = gm.graph.call_function(F.gelu, (node.args[0],))
            node.replace_all_uses_with(gelu)
            gm.graph.erase_node(node)
        elif node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.ReLU):
            setattr(gm, node.target, nn.GELU())
    gm.graph.lint()
    gm.recompile()
    x = torch.randn(4, 3)
    out = gm(x)
    fc = gm.fc
    expected = F.gelu(F.gelu(F.gelu(fc(x)) - 0.5)) + F.gelu(x)
    return {"nodes": nodes_of(gm.graph), "out": out, "expected": expected, "code_runs_gelu": "gelu" in gm.code}


def test_swap_relu_for_gelu():
    ours, _ = run_both(relu_to_gelu)
    np.testing.assert_allclose(ours["out"], ours["expected"], rtol=1e-6)
    assert ours["nodes"][2:8] == [("call_module", "act", "act"), ("call_function", "operator.sub", "sub"),
                                  ("call_function", "gelu", "relu"), ("call_function", "gelu", "gelu"),
                                  ("call_function", "gelu", "relu_2"), ("call_function", "operator.add", "add")]


def conv_bn_fuse(m):
    torch, nn = m.torch, m.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)
            self.head = nn.Conv2d(3, 1, 1)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.conv(x))))

    torch.manual_seed(0)
    model = Net()
    model(torch.randn(4, 2, 5, 5) * 3 + 1)  # (running statistics that are not the initial ones)
    model.eval()
    gm = torch.fx.symbolic_trace(model)
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d):
            conv_node = node.args[0]
            conv, bn = modules[conv_node.target], modules[node.target]
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
                conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
            node.replace_all_uses_with(conv_node)
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    x = torch.randn(2, 2, 5, 5)
    return {"fused": gm(x), "reference": model(x), "nodes": nodes_of(gm.graph), "keys": list(gm.state_dict())}


def test_fuse_conv_and_batchnorm_by_editing_the_graph():
    ours, _ = run_both(conv_bn_fuse, rtol=1e-5, atol=1e-5)
    assert [t for _, t, _ in ours["nodes"]] == ["x", "conv", "relu", "head", "output"]
    assert ours["keys"] == ["conv.weight", "conv.bias", "head.weight", "head.bias"]


def double_after_linear(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    gm = torch.fx.symbolic_trace(model)
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Linear):
            with gm.graph.inserting_after(node):
                doubled = gm.graph.call_function(torch.mul, (node, 2))
            node.replace_all_uses_with(doubled)
            doubled.update_arg(0, node)  # (it was replaced in the doubling node too)
    gm.recompile()
    x = torch.randn(5, 3)
    out = gm(x)
    out.sum().backward()
    return {"nodes": nodes_of(gm.graph), "out": out, "expected": model[2](model[1](model[0](x) * 2)) * 2,
            "grads": grads_of(gm), "users": [len(n.users) for n in gm.graph.nodes]}


def test_insert_a_node_after_each_linear():
    ours, _ = run_both(double_after_linear)
    np.testing.assert_allclose(ours["out"], ours["expected"], rtol=1e-6)
    assert [name for _, _, name in ours["nodes"]] == ["input_1", "_0", "mul", "_1", "_2", "mul_1", "output"]
    assert ours["users"] == [1, 1, 1, 1, 1, 1, 0]


def feature_extraction(m):
    torch, nn = m.torch, m.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 2, 3)
            self.layer1 = nn.Sequential(nn.ReLU(), nn.Conv2d(2, 2, 3))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2, 3)

        def forward(self, x):
            x = self.layer1(self.stem(x))
            return self.fc(self.pool(x).flatten(1))

    torch.manual_seed(0)
    model = Net()
    gm = torch.fx.symbolic_trace(model)
    wanted = {"stem": "stem", "layer1_1": "layer1", "flatten": "pooled"}
    graph = gm.graph
    found = {wanted[node.name]: node for node in graph.nodes if node.name in wanted}
    output = next(node for node in graph.nodes if node.op == "output")
    output.args = ({**found, "logits": output.args[0]},)
    graph.eliminate_dead_code()
    gm.recompile()
    x = torch.randn(2, 1, 7, 7)
    features = gm(x)
    features["pooled"].sum().backward()
    return {"keys": sorted(features), "features": features, "logits": model(x), "grads": grads_of(gm)}


def test_feature_extraction_by_editing_the_output_node():
    ours, _ = run_both(feature_extraction)
    assert ours["keys"] == ["layer1", "logits", "pooled", "stem"]
    assert ours["features"]["stem"].shape == (2, 2, 5, 5) and ours["features"]["pooled"].shape == (2, 2)
    np.testing.assert_allclose(ours["features"]["logits"], ours["logits"], rtol=1e-6)
    assert ours["grads"]["fc.weight"] is None


# ---------------------------------------------------------------------------------------------------------------
# Interpreter and Transformer
# ---------------------------------------------------------------------------------------------------------------


def flop_counter(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = F.relu(self.conv(x))
            x = x.flatten(1) * 2
            return self.fc(x) + 1

    class FlopCounter(torch.fx.Interpreter):
        def __init__(self, module):
            super().__init__(module)
            self.flops = {}

        def run_node(self, n):
            result = super().run_node(n)
            if n.op == "call_module":
                layer = self.fetch_attr(n.target)
                if isinstance(layer, nn.Linear):
                    self.flops[n.name] = 2 * result.numel() * layer.in_features
                elif isinstance(layer, nn.Conv2d):
                    self.flops[n.name] = 2 * result.numel() * layer.weight[0].numel()
            elif n.op in ("call_function", "call_method") and hasattr(result, "numel"):
                self.flops[n.name] = result.numel()
            return result

    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(Net())
    counter = FlopCounter(gm)
    x = torch.randn(1, 1, 4, 4)
    out = counter.run(x)
    return {"flops": counter.flops, "out": out, "same": gm(x)}


def test_count_flops_with_an_interpreter():
    ours, _ = run_both(flop_counter)
    assert ours["flops"] == {"conv": 2 * 8 * 9, "relu": 8, "flatten": 8, "mul": 8, "fc": 2 * 4 * 8, "add": 4}
    np.testing.assert_allclose(ours["out"], ours["same"])


def add_to_mul(m):
    torch, nn = m.torch, m.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return torch.add(self.fc(x), x) + torch.add(x, 1)

    class AddToMul(torch.fx.Transformer):
        def call_function(self, target, args, kwargs):
            if target == torch.add:
                target = torch.mul
            return super().call_function(target, args, kwargs)

    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(Net())
    transformed = AddToMul(gm).transform()
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    out = transformed(x)
    out.sum().backward()
    return {"nodes": nodes_of(transformed.graph), "out": out, "expected": gm.fc(x) * x + x * 1, "grad": x.grad,
            "keys": list(transformed.state_dict())}


def test_transformer_replaces_add_with_mul():
    ours, _ = run_both(add_to_mul)
    assert ours["nodes"] == [("placeholder", "x", "x"), ("call_module", "fc", "fc"), ("call_function", "mul", "mul"),
                             ("call_function", "mul", "mul_1"), ("call_function", "operator.add", "add"),
                             ("output", "output", "output")]
    np.testing.assert_allclose(ours["out"], ours["expected"], rtol=1e-6)
    assert ours["keys"] == ["fc.weight", "fc.bias"]


def shape_propagation(m):
    torch, nn = m.torch, m.nn
    shape_prop = importlib.import_module(torch.__name__ + ".fx.passes.shape_prop")
    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3)))
    shape_prop.ShapeProp(gm).propagate(torch.randn(5, 1, 4, 4))
    found = [(node.name, node.meta["tensor_meta"]) for node in gm.graph.nodes if "tensor_meta" in node.meta]
    return [(name, tuple(meta.shape), str(meta.dtype).replace("torch.", "")) for name, meta in found]


def test_shape_prop():
    ours, _ = run_both(shape_propagation)
    assert ours == [("input_1", (5, 1, 4, 4), "float32"), ("_0", (5, 2, 2, 2), "float32"),
                    ("_1", (5, 8), "float32"), ("_2", (5, 3), "float32"), ("output", (5, 3), "float32")]


# ---------------------------------------------------------------------------------------------------------------
# what tracing refuses, and concrete_args
# ---------------------------------------------------------------------------------------------------------------


def control_flow(m):
    torch, nn = m.torch, m.nn

    class Gate(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    def loops(x):
        return [t for t in x]

    def length(x):
        return x * len(x)

    fx = torch.fx
    return {"if": error_of(lambda: fx.symbolic_trace(Gate())), "len": error_of(lambda: fx.symbolic_trace(length)),
            "iter": error_of(lambda: fx.symbolic_trace(loops))[0]}


def test_control_flow_is_refused():
    ours, _ = run_both(control_flow)
    assert ours["if"] == ("TraceError", "symbolically traced variables cannot be used as inputs to control flow")
    assert ours["len"][0] == "RuntimeError" and "'len' is not supported" in ours["len"][1]
    assert ours["iter"] == "TraceError"


def concrete_arguments(m):
    torch, nn = m.torch, m.nn

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x, flag, mask=None):
            y = self.fc(x)
            if flag:
                y = y * 2
            if mask is not None:
                y = y * mask
            return y

    torch.manual_seed(0)
    model = Gate()
    gm = torch.fx.symbolic_trace(model, concrete_args={"flag": True, "mask": None})
    x = torch.randn(3, 2)
    return {"nodes": nodes_of(gm.graph), "out": gm(x, True), "same": model(x, True),
            "refused": error_of(lambda: gm(x, False))}


def test_concrete_args():
    ours, _ = run_both(concrete_arguments)
    assert [name for _, _, name in ours["nodes"]] == ["x", "flag_1", "eq", "_assert", "mask_1", "_assert_is_none",
                                                      "fc", "mul", "output"]
    np.testing.assert_allclose(ours["out"], ours["same"])
    assert ours["refused"] == ("AssertionError", "flag has been specialized to have value True but got another value")


def unpack_and_constants(m):
    torch, nn = m.torch, m.nn

    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor([2.0, 3.0]))
            self.register_buffer("shift", torch.tensor([1.0, -1.0]))

        def forward(self, x):
            a, b = x.chunk(2, dim=1)
            offset = torch.tensor([0.5, 0.25, 0.0, 0.0])
            return torch.cat([a * self.scale, b + self.shift], dim=1) + offset, self.scale * 2

    gm = torch.fx.symbolic_trace(Split())
    x = torch.arange(8.0).reshape(2, 4)
    return {"nodes": nodes_of(gm.graph), "out": gm(x), "keys": sorted(gm.state_dict())}


def test_unpacking_parameters_and_constants():
    ours, _ = run_both(unpack_and_constants)
    assert [name for _, _, name in ours["nodes"]] == ["x", "chunk", "getitem", "getitem_1", "scale", "mul", "shift",
                                                      "add", "cat", "_tensor_constant0", "add_1", "mul_1", "output"]
    np.testing.assert_allclose(ours["out"][0], [[0.5, 3.25, 3, 2], [8.5, 15.25, 7, 6]])
    assert ours["keys"] == ["_tensor_constant0", "scale", "shift"]


def graph_printing(m):
    torch, nn = m.torch, m.nn
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    return {"code": gm.code, "graph": str(gm.graph)}


def test_code_and_graph_text(capsys):
    ours, _ = run_both(graph_printing)
    assert ours["code"] == ('\n\n\ndef forward(self, input):\n    input_1 = input\n'
                            '    _0 = getattr(self, "0")(input_1);  input_1 = None\n'
                            '    _1 = getattr(self, "1")(_0);  _0 = None\n    return _1\n    ')
    assert ours["graph"].splitlines() == [
        "graph():", "    %input_1 : [num_users=1] = placeholder[target=input]",
        "    %_0 : [num_users=1] = call_module[target=0](args = (%input_1,), kwargs = {})",
        "    %_1 : [num_users=1] = call_module[target=1](args = (%_0,), kwargs = {})", "    return _1"]
    torch = OURS.torch
    torch.fx.symbolic_trace(OURS.nn.Linear(2, 2)).graph.print_tabular()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["opcode", "name", "target", "args", "kwargs"] and len(printed) == 7
    assert printed[5].split()[:3] == ["call_function", "linear", "torch.nn.functional.linear"]


def attention_block(m):
    """A GPT-style attention block (minGPT's shape juggling: unpacking x.shape, split, view, transpose, a causal
    mask buffer) with nn.MultiheadAttention as a leaf, traced."""
    torch, nn, F = m.torch, m.nn, m.F

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj, self.ln = nn.Linear(8, 24), nn.Linear(8, 8), nn.LayerNorm(8)
            self.register_buffer("mask", torch.tril(torch.ones(4, 4)).view(1, 1, 4, 4))
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(self.ln(x)).split(8, dim=2)
            q, k, v = (t.view(B, T, 2, C // 2).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / (k.size(-1) ** 0.5))
            att = F.softmax(att.masked_fill(self.mask[:, :, :4, :4] == 0, float("-inf")), dim=-1)
            y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
            z, _ = self.mha(x, x, x, need_weights=False)
            w = torch.zeros_like(x) + x.new_ones(1)
            return torch.cat([x + self.proj(y) + z + w, torch.zeros(2, 1, C)], dim=1).mean(dim=(1,))

    torch.manual_seed(0)
    model = Attention()
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 4, 8)
    out = gm(x)
    out.pow(2).sum().backward()
    return {"nodes": nodes_of(gm.graph), "out": out, "same": model(x), "grads": grads_of(gm)}


def test_trace_an_attention_block():
    ours, _ = run_both(attention_block, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["out"], ours["same"], rtol=1e-6)
    assert len(ours["nodes"]) == 47 and ours["nodes"][1:3] == [("call_function", "getattr", "getattr_1"),
                                                               ("call_function", "operator.getitem", "getitem")]
    assert ("get_attr", "_tensor_constant0", "_tensor_constant0") in ours["nodes"]  # (the mask, sliced at trace)
