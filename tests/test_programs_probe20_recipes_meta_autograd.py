# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Programs from PyTorch's recipes and intermediate tutorials (see tests/pytorch_programs.py) that the other program
tests do not already hold, each run on chainrule and on PyTorch from the same weights and data, comparing values,
gradients, trajectories and printed text. Reasoning about shapes on the meta device with forward hooks printing each
layer's output shape, then ``to_empty``; changing the default device; backward on the meta device, the meta device's
strides, ``*_like``/``new_*`` devices and refusals of ``numpy()`` and ``bool()``; the autograd-mechanics notes
(``grad_fn.name()`` and ``next_functions``, saved tensors, ``retain_grad``, the in-place correctness check)."""

import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# reasoning about shapes: the meta device and forward hooks
# ----------------------------------------------------------------------------------------------

def reasoning_about_shapes(m):
    torch, nn, F = m.torch, m.nn, m.F
    printed = []
    t = torch.rand(2, 3, 10, 10, device="meta")
    conv = nn.Conv2d(3, 5, 2, device="meta")
    out = conv(t)
    printed.append(f"{out.shape}")
    printed.append(f"{out.device} {out.dtype} {out.requires_grad}")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = torch.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    def fw_hook(module, input, output):
        printed.append(f"Shape of output to {module} is {output.shape}.")

    with torch.device("meta"):
        net = Net()
        inp = torch.randn((1024, 3, 32, 32))
    for name, layer in net.named_modules():
        layer.register_forward_hook(fw_hook)
    out = net(inp)
    printed.append(f"{out.is_meta} {tuple(out.shape)}")
    net.to_empty(device="cpu")
    materialised = [(n, p.device.type, tuple(p.shape)) for n, p in net.named_parameters()]
    # chainrule names its dtypes and Size without PyTorch's module prefix (float32, Size([2, 3])): by design
    return [line.replace("torch.", "") for line in printed], materialised


def test_reasoning_about_shapes_on_meta():
    ours, _ = run_both(reasoning_about_shapes)
    printed = ours[0]
    assert printed[0] == "Size([2, 5, 9, 9])"
    assert printed[1] == "meta float32 True"
    assert "Shape of output to Linear(in_features=84, out_features=10, bias=True) is Size([1024, 10])." in printed


def default_device(m):
    torch, nn = m.torch, m.nn
    seen = [str(torch.get_default_device())]
    with torch.device("meta"):
        mod = nn.Linear(20, 30)
        seen += [str(mod.weight.device), str(torch.get_default_device()), str(torch.randn(2).device)]
    seen += [str(mod.weight.device), str(torch.get_default_device())]
    torch.set_default_device("cpu")
    seen += [str(torch.get_default_device()), str(torch.zeros(1).device)]
    torch.set_default_device(None)
    seen.append(str(torch.get_default_device()))
    return seen


def test_changing_the_default_device():
    ours, _ = run_both(default_device)
    assert ours == ["cpu", "meta", "meta", "meta", "meta", "cpu", "cpu", "cpu", "cpu"]


def meta_backward(m):
    torch, nn = m.torch, m.nn
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(8, 3, 8, 8, device="meta", requires_grad=True)
    loss = model(x).log_softmax(-1).mean()
    loss.backward()
    return [(name, p.grad.is_meta, tuple(p.grad.shape)) for name, p in model.named_parameters()] + [
        (x.grad.is_meta, tuple(x.grad.shape), loss.grad_fn.name())]


def test_backward_on_the_meta_device_gives_meta_gradients():
    ours, _ = run_both(meta_backward)
    assert ours[0] == ("0.weight", True, (4, 3, 3, 3)) and ours[-1] == (True, (8, 3, 8, 8), "MeanBackward0")


def test_meta_tensor_strides_are_contiguous():
    import autograd

    assert autograd.rand(2, 3, 10, 10, device="meta").stride() == (300, 100, 10, 1)


def test_like_and_new_factories_keep_the_meta_device():
    import autograd

    t = autograd.empty(2, 3, device="meta")
    assert [u.device.type for u in (autograd.empty_like(t), autograd.zeros_like(t), t.new_zeros(2),
                                    t.new_empty(2))] == ["meta"] * 4


def test_meta_tensors_refuse_numpy_and_bool():
    import autograd

    t = autograd.empty(3, device="meta")
    with pytest.raises(TypeError, match="can't convert meta device type tensor to numpy"):
        t.numpy()
    with pytest.raises(RuntimeError, match="cannot be called on meta tensors"):
        bool(t.sum() > 0)


# ----------------------------------------------------------------------------------------------
# autograd mechanics: grad_fn chains, saved tensors, retain_grad, the in-place check
# ----------------------------------------------------------------------------------------------

def mechanics(m):
    torch = m.torch
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    y = x.pow(2)
    z = y.exp() * x
    chain = [z.grad_fn.name().replace("Backward0", "")]
    chain += [f.name() for f, _ in z.grad_fn.next_functions if f is not None]
    saved_same = (y.grad_fn._saved_self is x, torch.equal(y.grad_fn._saved_self, x), y.grad_fn._saved_exponent)
    y.retain_grad()
    z.sum().backward()
    grads = (x.grad.clone(), y.grad.clone(), y.is_leaf, y.grad_fn is not None)

    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = a.sigmoid()
    c = b * 2
    before = b._version
    b.mul_(3)
    after = b._version
    try:
        c.sum().backward()
        inplace_error = None
    except RuntimeError as error:
        inplace_error = str(error).split(":")[0]  # (chainrule words the rest its own way)
    e = a.exp()
    e.add_(1)  # exp saves its result, but add_ bumps the version
    try:
        e.sum().backward()
        add_error = "ok"
    except RuntimeError as error:
        add_error = str(error).split(":")[0]
    return chain, saved_same, grads, before, after, inplace_error, add_error


def test_autograd_mechanics_notes():
    ours, theirs = run_both(mechanics)
    chain, saved_same, grads, before, after, inplace_error, add_error = ours
    assert chain == ["Mul", "ExpBackward0", "torch::autograd::AccumulateGrad"]
    assert saved_same[1:] == (True, 2)
    assert (before, after) == (0, 1)
    # sigmoid and exp save their outputs: writing into them is caught at backward
    assert inplace_error == add_error == ("one of the variables needed for gradient computation has been modified "
                                          "by an inplace operation")
