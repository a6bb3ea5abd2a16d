"""Optimizers and schedulers: hand-computed steps from the published rules, PyTorch's
trajectories in float64, resuming from a state dict, errors."""

import math

import numpy as np
import pytest

import autograd
import nn
import optim
from autograd import Tensor

CONFIGS = {
    "SGD": [dict(lr=0.01), dict(lr=0.01, momentum=0.9), dict(lr=0.01, momentum=0.9, nesterov=True),
            dict(lr=0.01, momentum=0.5, dampening=0.3, weight_decay=0.1), dict(lr=0.001, maximize=True)],
    "Adam": [dict(lr=0.01), dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1), dict(lr=0.01, amsgrad=True),
             dict(lr=0.01, maximize=True, eps=1e-6)],
    "AdamW": [dict(lr=0.01), dict(lr=0.01, weight_decay=0.3, amsgrad=True)],
    # centered with α = 0.9 takes steps of about lr per weight, and at lr = 0.01 this stiff surface makes
    # the iteration itself unstable: any last-bit difference grows ~3x a step. At lr = 0.003 it is stable.
    "RMSprop": [dict(lr=0.01), dict(lr=0.003, alpha=0.9, centered=True), dict(lr=0.01, momentum=0.9),
                dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1, eps=1e-4)],
    "Adagrad": [dict(lr=0.1), dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.5, weight_decay=0.1)],
    "Adadelta": [dict(), dict(lr=0.5, rho=0.95, eps=1e-5, weight_decay=0.1)],
}
CASES = [(name, config) for name, configs in CONFIGS.items() for config in configs]


def rosenbrock_like(w):
    """A small non-convex loss over a (2, 3) weight and a (3,) bias."""
    a, b = w
    return (((a[0] - 1) ** 2 + 10 * (a[1] - a[0] ** 2) ** 2).sum() + (b.tanh() * a[0]).sum() + (b**2).sum())


def rosenbrock_like_gradient(a, b):
    """Its gradient in closed form, so both optimizers under test get bit-identical
    gradients for identical parameters (centered RMSprop, dividing by √(s - ḡ²),
    would otherwise amplify the engines' last-bit differences over 50 steps)."""
    inner = a[1] - a[0] ** 2
    grad_a = np.stack([2 * (a[0] - 1) - 40 * a[0] * inner + np.tanh(b), 20 * inner])
    return grad_a, (1 - np.tanh(b) ** 2) * a[0] + 2 * b


def trajectory(module, name, config, steps=50):
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((2, 3)) * 0.5, rng.standard_normal(3)]
    make = Tensor if module is None else module.tensor
    params = [make(v.copy(), requires_grad=True) for v in start]
    optimizer = getattr(optim if module is None else module.optim, name)(params, **config)
    path = []
    for _ in range(steps):
        grads = rosenbrock_like_gradient(*[p.detach().numpy() for p in params])
        for p, g in zip(params, grads):
            p.grad = make(g.copy())
        optimizer.step()
        path.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
    return np.array(path)


def test_closed_form_gradient_is_the_engines():
    rng = np.random.default_rng(1)
    params = [Tensor(rng.standard_normal((2, 3)), requires_grad=True), Tensor(rng.standard_normal(3),
                                                                              requires_grad=True)]
    rosenbrock_like(params).backward()
    for p, g in zip(params, rosenbrock_like_gradient(*[p.numpy() for p in params])):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("name, config", CASES, ids=[f"{n}-{i}" for n, c in CONFIGS.items() for i in range(len(c))])
def test_trajectory_matches_torch(name, config):
    import torch

    torch_config = dict(config, foreach=False)
    np.testing.assert_allclose(trajectory(None, name, config), trajectory(torch, name, torch_config),
                               rtol=1e-10, atol=1e-10)


def one_weight(value, grad, optimizer_class, **config):
    w = Tensor([value], dtype=np.float64, requires_grad=True)
    optimizer = optimizer_class([w], **config)

    def step(g):
        w.grad = Tensor([g], dtype=np.float64)
        optimizer.step()
        return w.item()

    return step


def test_sgd_momentum_by_hand():
    step = one_weight(1.0, None, optim.SGD, lr=0.1, momentum=0.9)
    assert step(2.0) == pytest.approx(1.0 - 0.1 * 2.0)              # v = g
    assert step(1.0) == pytest.approx(0.8 - 0.1 * (0.9 * 2.0 + 1.0))  # v = μv + g
    nesterov = one_weight(1.0, None, optim.SGD, lr=0.1, momentum=0.9, nesterov=True)
    assert nesterov(2.0) == pytest.approx(1.0 - 0.1 * (2.0 + 0.9 * 2.0))


def test_adam_by_hand():
    step = one_weight(1.0, None, optim.Adam, lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    m, v = 0.1 * 3.0, 0.001 * 9.0
    expected = 1.0 - 0.1 * (m / 0.1) / (math.sqrt(v / 0.001) + 1e-8)  # = 1 - 0.1 on the first step
    assert step(3.0) == pytest.approx(expected) and expected == pytest.approx(0.9)
    m, v = 0.9 * m + 0.1 * 1.0, 0.999 * v + 0.001 * 1.0
    expected -= 0.1 * (m / (1 - 0.9**2)) / (math.sqrt(v / (1 - 0.999**2)) + 1e-8)
    assert step(1.0) == pytest.approx(expected)


def test_adamw_decays_weights_directly():
    step = one_weight(2.0, None, optim.AdamW, lr=0.1, weight_decay=0.5)
    assert step(3.0) == pytest.approx(2.0 * (1 - 0.05) - 0.1)


def test_rmsprop_adagrad_adadelta_by_hand():
    rmsprop = one_weight(1.0, None, optim.RMSprop, lr=0.01, alpha=0.99, eps=1e-8)
    assert rmsprop(2.0) == pytest.approx(1.0 - 0.01 * 2.0 / (math.sqrt(0.01 * 4.0) + 1e-8))
    adagrad = one_weight(1.0, None, optim.Adagrad, lr=0.1, lr_decay=0.5)
    after_one = 1.0 - 0.1 * 2.0 / (2.0 + 1e-10)
    assert adagrad(2.0) == pytest.approx(after_one)
    assert adagrad(1.0) == pytest.approx(after_one - 0.1 / 1.5 * 1.0 / (math.sqrt(5.0) + 1e-10))
    adadelta = one_weight(1.0, None, optim.Adadelta, lr=1.0, rho=0.9, eps=1e-6)
    delta = math.sqrt(1e-6) / math.sqrt(0.1 * 4.0 + 1e-6) * 2.0
    assert adadelta(2.0) == pytest.approx(1.0 - delta)


def _adagrad_state_program(torch, nn, optim):
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.zeros(3))
    opt = optim.Adagrad([a, b], lr=0.1, initial_accumulator_value=0.5)
    fresh = {k: {name: v.tolist() for name, v in s.items()} for k, s in opt.state_dict()["state"].items()}
    a.grad = torch.ones(2)
    opt.step()  # b has no gradient: its state stays as it was made
    later = {k: {name: v.tolist() for name, v in s.items()} for k, s in opt.state_dict()["state"].items()}
    c = nn.Parameter(torch.ones(1))
    opt.add_param_group({"params": [c]})
    c.grad = torch.ones(1)
    opt.step()
    opt.share_memory()
    return fresh, later, opt.state[c]["sum"].tolist(), opt.state[c]["step"].item()


def test_adagrad_makes_its_state_at_construction():
    """PyTorch's Adagrad fills each parameter's step and sum in __init__ (a state_dict saved before
    the first step, or after steps that skipped a parameter, holds them); later groups on first use."""
    ours = _adagrad_state_program(autograd, nn, optim)
    assert ours[0] == {0: {"step": 0.0, "sum": [0.5, 0.5]}, 1: {"step": 0.0, "sum": [0.5, 0.5, 0.5]}}
    assert ours[1][1] == ours[0][1] and ours[1][0]["step"] == 1.0
    assert ours[2:] == ([1.5], 1.0)
    torch = pytest.importorskip("torch")
    assert _adagrad_state_program(torch, torch.nn, torch.optim) == ours


def test_lecture_lines_run_as_written():
    model = nn.MLP(2, [4], 1)
    optim.SGD(model.parameters(), lr=0.01, momentum=0)
    optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    optim.RMSprop(model.parameters(), lr=0.01, alpha=0.99)
    optim.Adagrad(model.parameters(), lr=0.01)
    optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.999))
    optim.Adadelta(model.parameters(), lr=0.01, rho=0.9)


def test_parameter_groups_have_their_own_options():
    a = Tensor([1.0], requires_grad=True)
    b = Tensor([1.0], requires_grad=True)
    optimizer = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad, b.grad = Tensor([1.0]), Tensor([1.0])
    optimizer.step()
    assert a.item() == pytest.approx(0.9) and b.item() == pytest.approx(0.0)
    c = Tensor([1.0], requires_grad=True)
    optimizer.add_param_group({"params": c, "momentum": 0.5})
    assert optimizer.param_groups[2]["lr"] == 0.1 and optimizer.param_groups[2]["momentum"] == 0.5


def test_step_with_closure_returns_its_loss():
    w = Tensor([3.0], requires_grad=True)
    optimizer = optim.SGD([w], lr=0.25)

    def closure():
        optimizer.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 9.0
    assert w.item() == pytest.approx(1.5)


def test_parameters_without_grad_are_skipped_and_zero_grad_sets_none():
    a, b = Tensor([1.0], requires_grad=True), Tensor([1.0], requires_grad=True)
    optimizer = optim.Adam([a, b])
    a.grad = Tensor([1.0])
    optimizer.step()
    assert b.item() == 1.0 and b not in optimizer.state
    optimizer.zero_grad()
    assert a.grad is None


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resuming_from_a_state_dict_gives_the_same_trajectory(name, tmp_path):
    config = CONFIGS[name][-1]

    def run(split):
        rng = np.random.default_rng(0)
        params = [Tensor(rng.standard_normal((2, 3)), requires_grad=True), Tensor(rng.standard_normal(3),
                                                                                  requires_grad=True)]
        optimizer = getattr(optim, name)(params, **config)
        for step in range(10):
            if step == split:
                path = tmp_path / "optimizer.npz"
                autograd.save(optimizer.state_dict(), path)
                optimizer = getattr(optim, name)(params, **CONFIGS[name][0])
                optimizer.load_state_dict(autograd.load(path))
            optimizer.zero_grad()
            rosenbrock_like(params).backward()
            optimizer.step()
        return np.concatenate([p.numpy().ravel() for p in params])

    np.testing.assert_array_equal(run(split=None), run(split=4))


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-0.1), "Invalid learning rate: -0.1"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), "Invalid beta parameter at index 1"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "Nesterov momentum requires a momentum"),
    (lambda p: optim.RMSprop(p, alpha=-1), "Invalid alpha value"),
    (lambda p: optim.Adadelta(p, rho=1.5), "Invalid rho value"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), "Invalid lr_decay value"),
    (lambda p: optim.SGD(p + p, lr=0.1), "listed twice"),
    (lambda p: optim.SGD([p[0] * 2], lr=0.1), "non-leaf"),
    (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make([Tensor([1.0], requires_grad=True)])


def test_a_parameter_in_two_groups_is_refused():
    p = Tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def lrs(make_scheduler, epochs=12, lr=1.0, module=None):
    """The learning rate of each epoch, with our optim or (module=torch) PyTorch's."""
    if module is None:
        optimizer = optim.SGD([Tensor([1.0], requires_grad=True)], lr=lr)
    else:
        optimizer = module.optim.SGD([module.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(optimizer)
    values = []
    for _ in range(epochs):
        values.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return values


SCHEDULERS = {
    "StepLR": lambda o, m: m.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda o, m: m.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.5),
    "ExponentialLR": lambda o, m: m.ExponentialLR(o, gamma=0.8),
    "CosineAnnealingLR": lambda o, m: m.CosineAnnealingLR(o, T_max=5, eta_min=0.1),
    "LambdaLR": lambda o, m: m.LambdaLR(o, lambda epoch: 1 / (1 + epoch)),
    "LinearLR": lambda o, m: m.LinearLR(o, start_factor=0.25, total_iters=4),
}


def test_schedules_by_hand():
    assert lrs(lambda o: SCHEDULERS["StepLR"](o, optim.lr_scheduler), 7) == [1, 1, 1, .5, .5, .5, .25]
    assert lrs(lambda o: SCHEDULERS["MultiStepLR"](o, optim.lr_scheduler), 7) == [1, 1, .5, .5, .5, .125, .125]
    np.testing.assert_allclose(lrs(lambda o: SCHEDULERS["ExponentialLR"](o, optim.lr_scheduler), 4),
                               [1, .8, .64, .512])
    cosine = lrs(lambda o: SCHEDULERS["CosineAnnealingLR"](o, optim.lr_scheduler), 6)
    np.testing.assert_allclose(cosine, [0.1 + 0.9 * (1 + math.cos(math.pi * t / 5)) / 2 for t in range(6)])
    np.testing.assert_allclose(lrs(lambda o: SCHEDULERS["LinearLR"](o, optim.lr_scheduler), 6),
                               [0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0])


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedules_match_torch(name):
    import torch

    ours = lrs(lambda o: SCHEDULERS[name](o, optim.lr_scheduler), 14)
    theirs = lrs(lambda o: SCHEDULERS[name](o, torch.optim.lr_scheduler), 14, module=torch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@pytest.mark.torch
def test_reduce_on_plateau_matches_torch():
    import torch

    metrics = [1.0, 0.9, 0.91, 0.92, 0.93, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 0.4]

    def run(module, parameter):
        optimizer = module.SGD([parameter], lr=1.0)
        scheduler = module.lr_scheduler.ReduceLROnPlateau(optimizer, patience=2, factor=0.5, cooldown=1,
                                                          min_lr=0.1)
        values = []
        for metric in metrics:
            scheduler.step(metric)
            values.append(scheduler.get_last_lr()[0])
        return values

    assert run(optim, Tensor([1.0], requires_grad=True)) == run(torch.optim, torch.zeros(1, requires_grad=True))


def test_reduce_on_plateau_by_hand():
    optimizer = optim.SGD([Tensor([1.0], requires_grad=True)], lr=1.0)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=1, factor=0.1)
    seen = []
    for accuracy in [0.5, 0.6, 0.6, 0.6, 0.6, 0.6]:
        scheduler.step(accuracy)
        seen.append(scheduler.get_last_lr()[0])
    np.testing.assert_allclose(seen, [1.0, 1.0, 1.0, 0.1, 0.1, 0.01])
