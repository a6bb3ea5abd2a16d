"""Sequential/ModuleList ``+``, ``+=``, ``extend`` and Sequential ``*`` (the same module objects, so
shared weights), ReduceLROnPlateau's ``in_cooldown``, GradScaler's factor accessors and the norm
layers' ``affine``/``elementwise_affine`` flags, against PyTorch where it is installed."""

import numpy as np
import pytest

import autograd
import nn
import optim

from .pytorch_programs import run_both


def containers(m):
    nn = m.nn
    m.torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    b = nn.Sequential(nn.Linear(2, 2))
    both = a + b
    repeated = b * 3
    also = 2 * b
    a += b
    a *= 2
    grown = nn.Sequential(nn.Tanh()).extend([nn.ReLU(), nn.Sigmoid()])
    ml = nn.ModuleList([nn.ReLU()]) + [nn.Tanh()]
    ml += nn.ModuleList([nn.Sigmoid()])
    x = m.torch.ones(1, 2)
    shared = repeated[0] is repeated[2] and repeated[0] is b[0]
    errors = []
    for bad in (lambda: a + ml, lambda: b * 0, lambda: b * 1.5):
        try:
            bad()
        except (ValueError, TypeError) as e:
            errors.append(type(e).__name__)
    return ([type(x).__name__ for x in both], len(repeated), len(also), [type(x).__name__ for x in a],
            [type(x).__name__ for x in grown], [type(x).__name__ for x in ml], type(ml).__name__, shared,
            list(repeated.state_dict()), len(list(repeated.parameters())), errors,
            (repeated(x) - b(b(b(x)))).abs().max().item())


def test_container_arithmetic():
    ours, _ = run_both(containers)
    assert ours[0] == ["Linear", "ReLU", "Linear"] and ours[1] == 3 and ours[2] == 2
    assert ours[3] == ["Linear", "ReLU", "Linear"] * 2 and ours[4] == ["Tanh", "ReLU", "Sigmoid"]
    assert ours[5] == ["ReLU", "Tanh", "Sigmoid"] and ours[6] == "ModuleList" and ours[7]
    assert ours[8] == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"] and ours[9] == 2
    assert ours[10] == ["ValueError", "ValueError", "TypeError"] and ours[11] == 0.0


def cooldown(m):
    p = m.nn.Parameter(m.torch.ones(1))
    opt = m.optim.SGD([p], lr=1.0)
    sched = m.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, cooldown=2)
    out = []
    for loss in [1.0, 2.0, 2.0, 2.0, 2.0, 2.0]:
        sched.step(loss)
        out.append((sched.in_cooldown, opt.param_groups[0]["lr"]))
    return out


def test_reduce_on_plateau_in_cooldown():
    ours, _ = run_both(cooldown)
    assert [c for c, _ in ours] == [False, True, True, False, True, True]


def test_grad_scaler_accessors():
    scaler = autograd.amp.GradScaler("cpu", growth_factor=3.0, backoff_factor=0.25, growth_interval=7)
    assert (scaler.get_growth_factor(), scaler.get_backoff_factor(), scaler.get_growth_interval()) == (3.0, 0.25, 7)
    scaler.set_growth_factor(4.0)
    scaler.set_backoff_factor(0.5)
    scaler.set_growth_interval(2)
    state = scaler.state_dict()
    assert (state["growth_factor"], state["backoff_factor"], state["growth_interval"]) == (4.0, 0.5, 2)
    torch = pytest.importorskip("torch")
    theirs = torch.amp.GradScaler("cpu", growth_factor=3.0, backoff_factor=0.25, growth_interval=7)
    assert (theirs.get_growth_factor(), theirs.get_backoff_factor(), theirs.get_growth_interval()) == (3.0, 0.25, 7)


def test_extend_and_add_keep_the_parameters_trainable():
    net = nn.Sequential(nn.Linear(2, 3)) + nn.Sequential(nn.Tanh(), nn.Linear(3, 1))
    opt = optim.SGD(net.parameters(), lr=0.1)
    loss = net(autograd.ones(4, 2)).pow(2).sum()
    loss.backward()
    before = net[2].weight.detach().numpy().copy()
    opt.step()
    assert not np.array_equal(before, net[2].weight.detach().numpy())


def test_norm_layers_say_whether_they_are_affine():
    assert nn.GroupNorm(1, 3).affine and not nn.GroupNorm(1, 3, affine=False).affine
    assert nn.LayerNorm(3).elementwise_affine and not nn.LayerNorm(3, elementwise_affine=False).elementwise_affine
    torch = pytest.importorskip("torch")
    assert torch.nn.GroupNorm(1, 3, affine=False).affine == nn.GroupNorm(1, 3, affine=False).affine
    assert torch.nn.LayerNorm(3).elementwise_affine == nn.LayerNorm(3).elementwise_affine
