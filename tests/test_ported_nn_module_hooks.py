"""Module hooks, ported from PyTorch's test/nn/test_module_hooks.py and the hook tests of test/test_nn.py:
forward pre-hooks and hooks (order, prepend, with_kwargs, always_call, replacing inputs and outputs), full
backward hooks and backward pre-hooks (grad_input / grad_output, replacing them, None for inputs that do
not require grad, the count checks), global module hooks, registration hooks and handles. Each test runs
on chainrule's `nn` and, where it is installed, on PyTorch's."""

import math
import warnings

import numpy as np

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def test_hooks(T, nn):
    module = nn.Sigmoid()
    input = T.ones(5, 5, requires_grad=True)
    counter = {"forwards": 0, "backwards": 0}

    def fw_hook(inc, h_module, input, output):
        assert isinstance(input, tuple)
        assert h_module is module
        same(input[0], np.ones((5, 5), np.float32))
        close(output, np.full((5, 5), 1 / (1 + 1 / math.e)), rtol=1e-6)
        counter["forwards"] += inc

    def bw_hook(inc, h_module, grad_input, grad_output):
        assert isinstance(grad_input, tuple) and isinstance(grad_output, tuple)
        assert h_module is module
        same(grad_output[0], np.full((5, 5), 2.0, np.float32))
        counter["backwards"] += inc

    test_fwd = module.register_forward_hook(lambda *args: fw_hook(1, *args))
    module(input)
    module(input)
    assert counter == {"forwards": 2, "backwards": 0}

    test_bwd = module.register_full_backward_hook(lambda *args: bw_hook(1, *args))
    output = module(input)
    assert counter == {"forwards": 3, "backwards": 0}
    output.backward(T.ones(5, 5) * 2, retain_graph=True)
    assert counter == {"forwards": 3, "backwards": 1}
    output.backward(T.ones(5, 5) * 2, retain_graph=True)
    assert counter == {"forwards": 3, "backwards": 2}

    test2_fwd = module.register_forward_hook(lambda *args: fw_hook(2, *args))
    module(input)
    assert counter == {"forwards": 6, "backwards": 2}
    test2_bwd = module.register_full_backward_hook(lambda *args: bw_hook(2, *args))
    module(input).backward(T.ones(5, 5) * 2)
    assert counter == {"forwards": 9, "backwards": 5}

    test2_bwd.remove()
    module(input).backward(T.ones(5, 5) * 2)
    assert counter == {"forwards": 12, "backwards": 6}
    test2_fwd.remove()
    module(input).backward(T.ones(5, 5) * 2)
    assert counter == {"forwards": 13, "backwards": 7}
    test_fwd.remove()
    test_bwd.remove()
    module(input).backward(T.ones(5, 5) * 2)
    assert counter == {"forwards": 13, "backwards": 7}


def test_forward_hooks_order_prepend_and_kwargs(T, nn):
    calls = []

    class Net(nn.Module):
        def forward(self, x, scale=1.0):
            calls.append("forward")
            return x * scale
    m = Net()
    m.register_forward_pre_hook(lambda mod, args: calls.append("pre1"))
    m.register_forward_pre_hook(lambda mod, args: calls.append("pre0"), prepend=True)
    m.register_forward_hook(lambda mod, args, out: calls.append("post1"))
    m.register_forward_hook(lambda mod, args, out: calls.append("post0"), prepend=True)

    def kw_pre(mod, args, kwargs):
        calls.append(("kwpre", dict(kwargs)))
        return args, {"scale": 3.0}
    m.register_forward_pre_hook(kw_pre, with_kwargs=True)

    def kw_post(mod, args, kwargs, out):
        calls.append(("kwpost", dict(kwargs)))
        return out + 1
    m.register_forward_hook(kw_post, with_kwargs=True)
    out = m(T.ones(2), scale=2.0)
    same(out, [4.0, 4.0])                 # x * 3 + 1
    assert calls == ["pre0", "pre1", ("kwpre", {"scale": 2.0}), "forward", "post0", "post1",
                     ("kwpost", {"scale": 3.0})]


def test_forward_pre_hook_replaces_input_and_hook_replaces_output(T, nn):
    m = nn.Linear(2, 2, bias=False)
    with T.no_grad():
        m.weight.copy_(T.eye(2))
    m.register_forward_pre_hook(lambda mod, args: (args[0] * 10,))
    h = m.register_forward_pre_hook(lambda mod, args: args[0] + 1)       # a single value is wrapped
    same(m(T.ones(1, 2)), [[11.0, 11.0]])       # in registration order: x * 10, then + 1
    h.remove()
    m.register_forward_hook(lambda mod, args, out: out.neg())
    same(m(T.ones(1, 2)), [[-10.0, -10.0]])


def test_forward_hook_always_call(T, nn):
    seen = []

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")
    m = Boom()
    m.register_forward_hook(lambda mod, args, out: seen.append(("always", out)), always_call=True)
    m.register_forward_hook(lambda mod, args, out: seen.append(("normal", out)))
    raises(RuntimeError, "boom", m, T.ones(1))
    assert seen == [("always", None)]


def test_hook_handle_context_and_ids(T, nn):
    m = nn.ReLU()
    calls = []
    with m.register_forward_hook(lambda *a: calls.append(1)):
        m(T.ones(1))
    m(T.ones(1))
    assert calls == [1]
    h1 = m.register_forward_hook(lambda *a: None)
    h2 = m.register_forward_hook(lambda *a: None)
    assert h1.id != h2.id
    assert len(m._forward_hooks) == 2
    h1.remove()
    h1.remove()                            # removing twice is fine
    assert list(m._forward_hooks) == [h2.id]


def test_full_backward_hook_grads(T, nn):
    m = nn.Linear(3, 2)
    seen = {}

    def hook(module, grad_input, grad_output):
        seen["in"] = [None if g is None else values(g).copy() for g in grad_input]
        seen["out"] = [values(g).copy() for g in grad_output]
    m.register_full_backward_hook(hook)
    x = T.randn(4, 3, requires_grad=True)
    m(x).sum().backward()
    same(seen["out"][0], np.ones((4, 2), np.float32))
    close(seen["in"][0], np.ones((4, 2)) @ values(m.weight), rtol=1e-6)
    close(x.grad, seen["in"][0], rtol=1e-6)


def test_hook_no_requires_grad(T, nn):
    m = nn.Linear(3, 2)
    seen = []
    m.register_full_backward_hook(lambda mod, gi, go: seen.append((gi, go)))
    m(T.randn(4, 3)).sum().backward()           # the input does not require grad
    assert len(seen) == 1
    assert seen[0][0] == (None,)
    same(seen[0][1][0], np.ones((4, 2), np.float32))


def test_hook_extra_input(T, nn):
    class MyModule(nn.Module):
        def forward(self, non_tensor, tensor):
            return tensor.clone(), non_tensor

    inp = T.rand(2, requires_grad=True)
    mod = MyModule()
    seen = []
    mod.register_full_backward_hook(lambda m, gi, go: seen.append((gi, go)))
    out, _ = mod(None, inp)
    out.sum().backward()
    gi, go = seen[0]
    assert len(gi) == 2 and gi[0] is None
    same(gi[1], np.ones(2, np.float32))
    same(go[0], np.ones(2, np.float32))


def test_full_backward_hook_replaces_grad_input(T, nn):
    module = nn.Linear(5, 5)
    input = T.randn(5, 5, requires_grad=True)

    def bw_hook(module, grad_input, grad_output):
        return tuple(gi * 2 for gi in grad_input)
    module.register_full_backward_hook(bw_hook)
    module(input).backward(T.ones(5, 5))
    expected_grad = values(T.ones(5, 5).mm(module.weight.data) * 2)
    close(input.grad, expected_grad, rtol=1e-6)


def test_backward_pre_hook_replaces_grad_output(T, nn):
    m = nn.Linear(2, 1, bias=False)
    with T.no_grad():
        m.weight.copy_(T.tensor([[1.0, 2.0]]))
    calls = []

    def pre(module, grad_output):
        calls.append("pre")
        return (grad_output[0] * 3,)
    m.register_full_backward_pre_hook(pre)
    m.register_full_backward_hook(lambda mod, gi, go: calls.append(("post", values(go[0]).tolist())))
    x = T.ones(1, 2, requires_grad=True)
    m(x).sum().backward()
    same(x.grad, [[3.0, 6.0]])
    assert calls == ["pre", ("post", [[3.0]])]


def test_hook_invalid_outputs(T, nn):
    module = nn.Sigmoid()
    input = T.randn(5, 5, requires_grad=True)

    def bw_fail1(self, grad_input, grad_output):
        return grad_input[:-1]

    def bw_fail2(self, grad_input, grad_output):
        return grad_input + (T.randn(2, 2),)

    with module.register_full_backward_hook(bw_fail1):
        raises(RuntimeError, "got 0, but expected 1", lambda: module(input).sum().backward())
    with module.register_full_backward_hook(bw_fail2):
        raises(RuntimeError, "got 2, but expected 1", lambda: module(input).sum().backward())

    def bw_pre_fail1(self, grad_output):
        return ()

    def bw_pre_fail2(self, grad_output):
        return grad_output + (T.randn(2, 2),)
    with module.register_full_backward_pre_hook(bw_pre_fail1):
        raises(RuntimeError, "got 0, but expected 1", lambda: module(input).sum().backward())
    with module.register_full_backward_pre_hook(bw_pre_fail2):
        raises(RuntimeError, "got 2, but expected 1", lambda: module(input).sum().backward())


def test_mixing_deprecated_and_full_backward_hooks_is_refused(T, nn):
    m = nn.Linear(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.register_backward_hook(lambda *a: None)
    raises(RuntimeError, "Cannot use both regular backward hooks and full backward hooks on a single Module. Please "
           "use only one of them.", m.register_full_backward_hook, lambda *a: None)


def test_backward_hooks_on_a_module_with_tuple_output(T, nn):
    class Split(nn.Module):
        def forward(self, x):
            return x * 2, x * 3
    m = Split()
    seen = []
    m.register_full_backward_hook(lambda mod, gi, go: seen.append((values(gi[0]).copy(),
                                                                  [None if g is None else values(g).copy()
                                                                   for g in go])))
    x = T.ones(2, requires_grad=True)
    a, b = m(x)
    (a.sum() + 2 * b.sum()).backward()
    same(x.grad, [8.0, 8.0])
    same(seen[0][0], [8.0, 8.0])
    same(seen[0][1][0], [1.0, 1.0])
    same(seen[0][1][1], [2.0, 2.0])


def _global_hooks(nn):
    import importlib
    return importlib.import_module(nn.Module.__module__)


def test_global_module_hooks(T, nn):
    mod = _global_hooks(nn)
    calls = []
    h1 = mod.register_module_forward_pre_hook(lambda m, args: calls.append(("pre", type(m).__name__)))
    h2 = mod.register_module_forward_hook(lambda m, args, out: calls.append(("post", type(m).__name__)))
    h3 = mod.register_module_full_backward_hook(lambda m, gi, go: calls.append(("bwd", type(m).__name__)))
    try:
        net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        out = net(T.ones(1, 2, requires_grad=True))
        out.sum().backward()
    finally:
        h1.remove()
        h2.remove()
        h3.remove()
    assert calls[:6] == [("pre", "Sequential"), ("pre", "Linear"), ("post", "Linear"), ("pre", "ReLU"),
                         ("post", "ReLU"), ("post", "Sequential")]
    assert sorted(c for c in calls[6:]) == [("bwd", "Linear"), ("bwd", "ReLU"), ("bwd", "Sequential")]
    calls.clear()
    net(T.ones(1, 2))
    assert calls == []


def test_registration_hooks(T, nn):
    mod = _global_hooks(nn)
    seen = []

    def param_hook(module, name, param):
        seen.append(("param", name))

    def buffer_hook(module, name, buffer):
        seen.append(("buffer", name))
        return buffer * 2 if buffer is not None else None

    def module_hook(module, name, submodule):
        seen.append(("module", name))
    handles = [mod.register_module_parameter_registration_hook(param_hook),
               mod.register_module_buffer_registration_hook(buffer_hook),
               mod.register_module_module_registration_hook(module_hook)]
    try:
        m = nn.Module()
        m.w = nn.Parameter(T.ones(1))
        m.register_buffer("b", T.ones(2))
        m.sub = nn.Identity()
    finally:
        for h in handles:
            h.remove()
    assert seen == [("param", "w"), ("buffer", "b"), ("module", "sub")]
    same(m.b, [2.0, 2.0])                      # a registration hook may replace the value


def test_state_dict_pre_and_load_hooks_with_module(T, nn):
    m = nn.Linear(2, 2)
    seen = []

    def pre(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        seen.append((module is m, prefix, sorted(state_dict)))
        state_dict[prefix + "bias"] = T.zeros(2)      # a pre hook may rewrite the checkpoint
    m.register_load_state_dict_pre_hook(pre)
    nn.Sequential(m).load_state_dict({"0.weight": T.ones(2, 2), "0.bias": T.ones(2)})
    assert seen == [(True, "0.", ["0.bias", "0.weight"])]
    same(m.bias, [0.0, 0.0])
    same(m.weight, np.ones((2, 2), np.float32))


def test_bw_hook_warning_for_non_tensor_or_tuple(T, nn):
    # Test to verify that backward hook raises warning
    # if result is not a Tensor or tuple of Tensors.
    counter = {"forward": 0, "backward": 0}

    def fw_pre_hook(module, input):
        counter["forward"] += 1

    def bw_hook(module, grad_input, grad_output):
        counter["backward"] += 1

    class M(nn.Module):
        def forward(self, x):
            return {"a": x}
    m = M()
    m.register_forward_pre_hook(fw_pre_hook)
    m.register_full_backward_hook(bw_hook)
    t = T.randn(1, 2, requires_grad=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = m(t)
    assert any("For backward hooks to be called, module output should be a Tensor or a tuple of Tensors" in
               str(x.message) for x in w)
    out["a"].sum().backward()
    assert counter == {"forward": 1, "backward": 0}


def test_global_and_local_hook_order(T, nn):
    mod = _global_hooks(nn)
    calls = []
    m = nn.ReLU()
    m.register_forward_pre_hook(lambda *a: calls.append("local pre"))
    m.register_forward_hook(lambda *a: calls.append("local post"))
    m.register_full_backward_hook(lambda *a: calls.append("local bwd"))
    m.register_full_backward_pre_hook(lambda *a: calls.append("local bwd pre"))
    handles = [mod.register_module_forward_pre_hook(lambda *a: calls.append("global pre")),
               mod.register_module_forward_hook(lambda *a: calls.append("global post")),
               mod.register_module_full_backward_hook(lambda *a: calls.append("global bwd")),
               mod.register_module_full_backward_pre_hook(lambda *a: calls.append("global bwd pre"))]
    try:
        m(T.ones(2, requires_grad=True)).sum().backward()
    finally:
        for h in handles:
            h.remove()
    assert calls == ["global pre", "local pre", "global post", "local post", "global bwd pre", "local bwd pre",
                     "global bwd", "local bwd"]


def test_backward_pre_hook_prepend(T, nn):
    m = nn.Identity()
    calls = []
    m.register_full_backward_pre_hook(lambda *a: calls.append(1))
    m.register_full_backward_pre_hook(lambda *a: calls.append(0), prepend=True)
    m.register_full_backward_hook(lambda *a: calls.append(3))
    m.register_full_backward_hook(lambda *a: calls.append(2), prepend=True)
    m(T.ones(1, requires_grad=True)).sum().backward()
    assert calls == [0, 1, 2, 3]


def test_registration_hooks_may_replace(T, nn):
    mod = _global_hooks(nn)
    replacement = nn.Tanh()

    def module_hook(module, name, submodule):
        return replacement if name == "act" else None

    def param_hook(module, name, param):
        return nn.Parameter(param.detach() * 0) if name == "w" else None
    handles = [mod.register_module_module_registration_hook(module_hook),
               mod.register_module_parameter_registration_hook(param_hook)]
    try:
        m = nn.Module()
        m.act = nn.ReLU()
        m.w = nn.Parameter(T.ones(2))
    finally:
        for h in handles:
            h.remove()
    assert m.act is replacement
    same(m.w, [0.0, 0.0])
    assert isinstance(m.w, nn.Parameter)


def test_state_dict_post_hook(T, nn):
    m = nn.Linear(2, 2)
    seen = []

    def post(module, state_dict, prefix, local_metadata):
        seen.append((module is m, prefix))
        state_dict[prefix + "tag"] = T.tensor(7)
    m.register_state_dict_post_hook(post)
    sd = nn.Sequential(m).state_dict()
    assert seen == [(True, "0.")]
    same(sd["0.tag"], 7)
