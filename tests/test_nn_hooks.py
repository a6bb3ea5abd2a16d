"""Module hooks and the Module API around them, each checked against what PyTorch does
with the same program: call order, replaced inputs and outputs, grad_input and
grad_output (tuples, shapes, None where PyTorch has None, replacement), handles; then
named_modules / buffers / get_submodule / registration errors / repr."""

import numpy as np
import pytest

import autograd
import nn
from autograd import Tensor

PRIMITIVES_GRADCHECKED = {"GradientGate": "test_gradients_through_hooked_modules_match_finite_differences"}

W1 = np.random.default_rng(0).standard_normal((3, 2))
W2 = np.random.default_rng(1).standard_normal((1, 3))
X = np.random.default_rng(2).standard_normal((4, 2))


def net(library):
    """The same two-layer network in chainrule (nn, autograd) or PyTorch (torch.nn, torch)."""
    nn_, lib = library
    model = nn_.Sequential(nn_.Linear(2, 3), nn_.Tanh(), nn_.Linear(3, 1))
    with lib.no_grad():
        model[0].weight.copy_(lib.tensor(W1))
        model[0].bias.zero_()
        model[2].weight.copy_(lib.tensor(W2))
        model[2].bias.zero_()
    return model.double()


def both():
    import torch

    return [(nn, autograd), (torch.nn, torch)]


def _numpy(value):
    return None if value is None else np.asarray(value.detach().numpy() if hasattr(value, "detach") else value)


def run_with_hooks(library, input_requires_grad):
    nn_, lib = library
    model = net(library)
    events = []

    def pre(module, args):
        events.append(("pre", type(module).__name__, len(args)))

    def forward(module, args, output):
        events.append(("forward", type(module).__name__, tuple(output.shape)))

    def backward(module, grad_input, grad_output):
        events.append(("backward", type(module).__name__,
                       tuple(None if g is None else tuple(g.shape) for g in grad_input),
                       tuple(None if g is None else tuple(g.shape) for g in grad_output)))
        events.append(("grad_input", [_numpy(g) for g in grad_input]))

    def backward_pre(module, grad_output):
        events.append(("backward_pre", type(module).__name__, tuple(tuple(g.shape) for g in grad_output)))

    for module in [model, model[0], model[1], model[2]]:
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(forward)
        module.register_full_backward_hook(backward)
        module.register_full_backward_pre_hook(backward_pre)
    x = lib.tensor(X, requires_grad=input_requires_grad)
    y = model(x)
    (y * y).sum().backward()
    return events, _numpy(model[0].weight.grad), _numpy(x.grad)


def _same_events(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        if a[0] == "grad_input":
            assert len(a[1]) == len(b[1])
            for g, h in zip(a[1], b[1]):
                assert (g is None) == (h is None)
                if g is not None:
                    np.testing.assert_allclose(g, h, rtol=1e-12)
        else:
            assert a == b


@pytest.mark.torch
@pytest.mark.parametrize("input_requires_grad", [True, False])
def test_hook_order_shapes_and_gradients_are_pytorchs(input_requires_grad):
    (ours, ours_grad, ours_x), (theirs, theirs_grad, theirs_x) = [run_with_hooks(lib, input_requires_grad)
                                                                  for lib in both()]
    _same_events(ours, theirs)
    np.testing.assert_allclose(ours_grad, theirs_grad, rtol=1e-12)
    if input_requires_grad:
        np.testing.assert_allclose(ours_x, theirs_x, rtol=1e-12)


@pytest.mark.torch
def test_hooks_replace_inputs_outputs_and_gradients_as_in_pytorch():
    results = []
    for nn_, lib in both():
        model = net((nn_, lib))
        handles = [
            model[0].register_forward_pre_hook(lambda m, args: args[0] * 2),  # one value: wrapped in a tuple
            model[1].register_forward_hook(lambda m, args, out: out + 1),
            model[2].register_full_backward_hook(lambda m, gi, go: (gi[0] * 3,)),
            model[1].register_full_backward_pre_hook(lambda m, go: (go[0] * -1,)),
            model[0].register_forward_pre_hook(lambda m, args, kwargs: ((args[0] + 0.5,), kwargs), with_kwargs=True,
                                               prepend=True),
        ]
        x = lib.tensor(X, requires_grad=True)
        y = model(x)
        y.sum().backward()
        results.append((_numpy(y), _numpy(x.grad), _numpy(model[0].weight.grad)))
        for handle in handles:
            handle.remove()
        model.zero_grad()
        x.grad = None
        y = model(x)
        y.sum().backward()
        results.append((_numpy(y), _numpy(x.grad), _numpy(model[0].weight.grad)))
    for ours, theirs in zip(results[:2], results[2:]):
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.torch
def test_forward_hook_with_kwargs_and_always_call():
    seen = []
    for nn_, lib in both():
        class Scale(nn_.Module):
            def forward(self, x, factor=1.0):
                if factor < 0:
                    raise ValueError("negative")
                return x * factor

        layer = Scale()
        layer.register_forward_hook(lambda m, args, kwargs, out: seen.append(sorted(kwargs)) or out * 10,
                                    with_kwargs=True)
        layer.register_forward_hook(lambda m, args, out: seen.append("always"), always_call=True)
        seen.append(_numpy(layer(lib.ones(2, dtype=lib.float64), factor=3.0)))
        with pytest.raises(ValueError, match="negative"):
            layer(lib.ones(2), factor=-1.0)
    half = len(seen) // 2
    assert [s for s in seen[:half] if not isinstance(s, np.ndarray)] == \
        [s for s in seen[half:] if not isinstance(s, np.ndarray)]
    np.testing.assert_array_equal(seen[2], seen[half + 2])


@pytest.mark.torch
def test_backward_hook_with_several_inputs_and_outputs_and_a_non_tensor_argument():
    records = []
    for nn_, lib in both():
        class Pair(nn_.Module):
            def forward(self, a, b, scale):
                return a * b * scale, a + b, "label"

        module = Pair()
        module.register_full_backward_hook(
            lambda m, gi, go: records.append(([None if g is None else _numpy(g) for g in gi],
                                              [None if g is None else _numpy(g) for g in go])))
        a = lib.tensor(X[:, 0], requires_grad=True)
        b = lib.tensor(X[:, 1])
        product, total, _ = module(a, b, 2.0)
        (product * 3 + total).sum().backward()
    (ours_in, ours_out), (theirs_in, theirs_out) = records
    for ours, theirs in [(ours_in, theirs_in), (ours_out, theirs_out)]:
        assert [g is None for g in ours] == [g is None for g in theirs]
        for g, h in zip(ours, theirs):
            if g is not None:
                np.testing.assert_allclose(g, h, rtol=1e-12)


def test_removing_a_handle_and_the_handle_as_context_manager():
    calls = []
    layer = nn.Linear(2, 2)
    handle = layer.register_forward_hook(lambda m, a, o: calls.append(1))
    layer(autograd.ones(1, 2))
    handle.remove()
    handle.remove()  # twice is fine
    layer(autograd.ones(1, 2))
    with layer.register_forward_pre_hook(lambda m, a: calls.append(2)):
        layer(autograd.ones(1, 2))
    layer(autograd.ones(1, 2))
    assert calls == [1, 2]


@pytest.mark.torch
def test_named_modules_buffers_children_and_lookups_match_pytorch():
    import torch

    def build(nn_):
        shared = nn_.Linear(2, 2)
        model = nn_.Sequential(shared, nn_.BatchNorm1d(2), nn_.Sequential(shared, nn_.ReLU()))
        return model

    ours, theirs = build(nn), build(torch.nn)
    for kwargs in [{}, {"prefix": "net"}, {"remove_duplicate": False}]:
        assert [n for n, _ in ours.named_modules(**kwargs)] == [n for n, _ in theirs.named_modules(**kwargs)]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_buffers(prefix="m", recurse=False)] == []
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [n for n, _ in ours.named_parameters(remove_duplicate=False)] == \
        [n for n, _ in theirs.named_parameters(remove_duplicate=False)]
    assert ours.get_submodule("2.1").__class__.__name__ == "ReLU"
    assert ours.get_parameter("2.0.bias") is ours[0].bias
    assert ours.get_buffer("1.running_mean") is ours[1].running_mean
    for bad, message in [("3", "has no attribute `3`"), ("0.weight", "`weight` is not an nn.Module")]:
        with pytest.raises(AttributeError, match=message):
            ours.get_submodule(bad)
        with pytest.raises(AttributeError, match=message):
            theirs.get_submodule(bad)
    with pytest.raises(AttributeError, match="is not an nn.Parameter"):
        ours.get_parameter("1.running_mean")
    assert ours.requires_grad_(False) is ours and not any(p.requires_grad for p in ours.parameters())


@pytest.mark.torch
def test_registration_errors_are_pytorchs():
    import torch

    for nn_, lib in both():
        layer = nn_.Linear(2, 2)
        with pytest.raises(TypeError, match=r"cannot assign '.*Tensor' as parameter 'weight' "
                                            r"\(torch.nn.Parameter or None expected\)"):
            layer.weight = lib.zeros(2, 2)
        layer.bias = None  # None is allowed, and the name stays a parameter
        assert "bias" in layer._parameters and layer.bias is None
        with pytest.raises(TypeError, match="is not a Module subclass"):
            nn_.Sequential(nn_.Linear(2, 2), lambda x: x)
        with pytest.raises(KeyError, match="contain"):
            layer.add_module("a.b", nn_.ReLU())
        with pytest.raises(KeyError, match="already exists"):
            layer.register_parameter("forward", nn_.Parameter(lib.zeros(1)))
        layer.register_module("act", nn_.ReLU())
        assert [n for n, _ in layer.named_children()] == ["act"]
        with pytest.raises(TypeError, match="as child module 'act'"):
            layer.act = 3
        layer.register_parameter("extra", None)
        assert "extra" in layer._parameters and layer.extra is None
    assert torch.typename(torch.zeros(1)) == "torch.FloatTensor"  # PyTorch's name; ours says 'Tensor'


@pytest.mark.torch
def test_zero_grad_half_and_repr():
    import torch

    layer = nn.Linear(2, 3)
    layer(autograd.ones(1, 2)).sum().backward()
    layer.zero_grad(set_to_none=False)
    assert layer.weight.grad is not None and not layer.weight.grad.numpy().any()
    layer.zero_grad()
    assert layer.weight.grad is None
    assert layer.half().weight.dtype == np.float16
    for build in [lambda nn_: nn_.Sequential(nn_.Linear(2, 3), nn_.ReLU(), nn_.Sequential(nn_.Dropout(0.1))),
                  lambda nn_: nn_.Embedding(10, 3, padding_idx=0),
                  lambda nn_: nn_.Unflatten(1, (2, 5)), lambda nn_: nn_.Bilinear(2, 3, 4),
                  lambda nn_: nn_.ReflectionPad2d((1, 0, 2, 1)), lambda nn_: nn_.ZeroPad2d(2),
                  lambda nn_: nn_.ConstantPad1d(3, 1.5), lambda nn_: nn_.Upsample(scale_factor=2.0)]:
        assert repr(build(nn)) == repr(build(torch.nn))
    parameters = nn.ParameterList([nn.Parameter(autograd.zeros(2, 3)), autograd.ones(2)])
    assert repr(parameters) == ("ParameterList(\n    (0): Parameter containing: [autograd.float32 of size 2x3]\n"
                                "    (1): Parameter containing: [autograd.float32 of size 2]\n)")


def test_gradients_through_hooked_modules_match_finite_differences():
    seen = []
    model = net((nn, autograd))
    for module in model:
        module.register_full_backward_hook(lambda m, gi, go: seen.append(type(m).__name__))
        module.register_full_backward_pre_hook(lambda m, go: None)
    x = Tensor(X, requires_grad=True)
    assert autograd.gradcheck(lambda t: model(t * 2.0).tanh(), [x])
    assert {"Linear", "Tanh"} <= set(seen)
