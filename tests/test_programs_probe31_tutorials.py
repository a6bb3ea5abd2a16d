# ruff: noqa: E501, E701, E702, E731, E741, B007, B023, F841, UP008  (the programs are kept as the tutorials write them)
"""Programs from the official PyTorch tutorials (pytorch/tutorials) that earlier probes did not run as written,
each run on chainrule and, where installed, on PyTorch under the same seeds, comparing values and gradients.

custom_function_double_backward (``Exp`` saving its output, ``Cube`` with a differentiable backward,
``gradcheck``/``gradgradcheck``); recipes: warmstarting a model from another (``load_state_dict(strict=False)``
of a partial state dict), "what is a state_dict" (the optimizer's ``state_dict`` after SGD with momentum),
zeroing gradients (``zero_grad()`` leaving ``None``); the tuning guide's ``zero_grad(set_to_none=True)`` with
``torch.no_grad`` inference. All agreed with PyTorch when written (session 31): no fix was needed."""

import numpy as np

from .pytorch_programs import run_both


def double_backward(m):
    torch = m.torch
    torch.manual_seed(0)
    class Exp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            result = torch.exp(x)
            ctx.save_for_backward(result)
            return result
        @staticmethod
        def backward(ctx, grad_out):
            result, = ctx.saved_tensors
            return grad_out * result
    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3
        @staticmethod
        def backward(ctx, grad_out):
            x, = ctx.saved_tensors
            return grad_out * 3 * x ** 2
    x = torch.tensor(0.5, requires_grad=True, dtype=torch.double)
    ok = torch.autograd.gradcheck(Exp.apply, x) and torch.autograd.gradgradcheck(Exp.apply, x)
    ok2 = torch.autograd.gradcheck(Cube.apply, x) and torch.autograd.gradgradcheck(Cube.apply, x)
    y = Cube.apply(x)
    g, = torch.autograd.grad(y, x, create_graph=True)
    gg, = torch.autograd.grad(g, x)
    return ok, ok2, y, g, gg


def warmstart(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.torch.optim
    torch.manual_seed(0)
    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)
        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(-1, 16 * 5 * 5)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x
    netA = Net()
    netB = Net()
    partial = {k: v for k, v in netA.state_dict().items() if not k.startswith("fc3")}
    result = netB.load_state_dict(partial, strict=False)
    missing = sorted(result.missing_keys)
    same = torch.equal(netA.conv1.weight, netB.conv1.weight)
    optimizer = optim.SGD(netB.parameters(), lr=0.001, momentum=0.9)
    x = torch.randn(4, 3, 32, 32); y = torch.tensor([0, 3, 1, 9])
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.CrossEntropyLoss()(netB(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    sd = optimizer.state_dict()
    groups = [(g["lr"], g["momentum"], g["params"]) for g in sd["param_groups"]]
    momentum0 = sd["state"][0]["momentum_buffer"]
    netB.zero_grad()
    nones = all(p.grad is None for p in netB.parameters())
    with torch.no_grad():
        out = netB(x)
    return missing, losses, groups, momentum0, same, nones, out.requires_grad, out


def test_custom_function_double_backward():
    ok, ok2, y, g, gg = run_both(double_backward)[0]
    assert ok and ok2
    np.testing.assert_allclose([y, g, gg], [0.125, 0.75, 3.0])


def test_warmstarting_and_state_dict_recipes():
    missing, losses, groups, momentum0, same, nones, requires_grad, out = run_both(warmstart, rtol=1e-4, atol=1e-5)[0]
    assert missing == ["fc3.bias", "fc3.weight"] and same and nones and not requires_grad
    assert groups[0][:2] == (0.001, 0.9) and groups[0][2] == list(range(10)) and momentum0.shape == (6, 3, 5, 5)
    assert out.shape == (4, 10) and losses[-1] < losses[0]
