"""Adam's step decides once per group what is the same for the group's parameters (``Adam._step_group``) and
takes the one-call step for the plain ones: every parameter's numbers stay those of the step through the Tensor
methods, to the last bit (``Stepped``, a Tensor subclass with its own ``addcdiv_``, always steps through them),
and PyTorch's (``torch.optim.Adam(foreach=False)``, float64): a group whose lr changes between steps (by hand and
by a scheduler), groups with their own options, a parameter without a gradient in the middle, a Stepped parameter
or a complex one among plain ones, a group added later, a Tensor lr beside plain numbers, and a subclass of Adam
with its own ``update``."""

import numpy as np
import pytest

import autograd
import optim

SHAPES = ((5, 3), (3,), (), (4,))
GROUP_OPTIONS = [dict(), dict(weight_decay=0.1, amsgrad=True), dict(maximize=True, betas=(0.8, 0.9), eps=1e-6),
                 dict(weight_decay=0.2, decoupled_weight_decay=True), dict(lr=0.02, amsgrad=True, maximize=True)]


class Stepped(autograd.Tensor):
    """A Tensor subclass with its own addcdiv_ (counting its calls): Adam steps it through its methods."""

    calls = 0

    def addcdiv_(self, *args, **kwargs):
        Stepped.calls += 1
        return super().addcdiv_(*args, **kwargs)


def run(lib, groups, steps=6, kinds=None, without_grad=(), between_steps=None, gamma=None, name="Adam"):
    """The parameters' values after ``steps`` steps of ``lib``'s Adam over ``groups`` (option dicts, each
    optionally with ``shapes``), and the optimizer. Gradients are drawn in order; ``kinds``: the class of each
    parameter (ours); ``without_grad``: indices of parameters never given one; ``between_steps(lib, optimizer,
    step)`` runs after each step, and with ``gamma`` an ExponentialLR scheduler steps there too."""
    rng = np.random.default_rng(0)
    params, param_groups = [], []
    for options in groups:
        options = dict(options)
        group_params = []
        for shape in options.pop("shapes", SHAPES):
            kind = kinds[len(params) + len(group_params)] if kinds else lib.tensor
            group_params.append(kind(rng.standard_normal(shape), requires_grad=True))
        params += group_params
        param_groups.append({"params": group_params, **options})
    optimizer = getattr(lib.optim, name)(param_groups, lr=0.05, **({} if lib is autograd else dict(foreach=False)))
    scheduler = None if gamma is None else lib.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    for step in range(steps):
        for i, p in enumerate(params):
            values = rng.standard_normal(tuple(p.shape)) * (step + 1)
            if i not in without_grad:
                p.grad = lib.tensor(values)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if between_steps is not None:
            between_steps(lib, optimizer, step)
    return [p.detach().numpy().copy() for p in params], optimizer


def halve_lr(lib, optimizer, step):
    for group in optimizer.param_groups:
        group["lr"] *= 0.5


def add_a_group_after_the_third_step(lib, optimizer, step):
    if step == 2:
        p = lib.tensor(np.linspace(-1.0, 1.0, 6).reshape(2, 3), requires_grad=True)
        p.grad = lib.tensor(np.full((2, 3), 0.5))  # (kept: steps 4 to 6 use it)
        optimizer.add_param_group({"params": [p], "lr": 0.2, "amsgrad": True})


def tensor_lr(lib):
    return [dict(lr=lib.tensor(0.03, dtype=lib.float64), weight_decay=0.1), dict(amsgrad=True)]


# name -> (groups, options of run): each runs through ours, the methods (Stepped) and PyTorch's
SCENARIOS = {
    **{f"one group {i}": ([options], {}) for i, options in enumerate(GROUP_OPTIONS)},
    "groups with their own options": (GROUP_OPTIONS, {}),
    "lr halved between steps": ([dict(), dict(amsgrad=True, lr=0.1)], dict(between_steps=halve_lr)),
    "lr from a scheduler": ([dict(), dict(weight_decay=0.1)], dict(gamma=0.7)),
    "a parameter without a gradient in the middle": ([dict(amsgrad=True)], dict(without_grad={1})),
    "a group added later": ([dict()], dict(between_steps=add_a_group_after_the_third_step)),
}


def all_params(optimizer):
    return [p.detach().numpy() for group in optimizer.param_groups for p in group["params"]]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_parameter_takes_the_numbers_of_the_step_through_the_methods(scenario):
    groups, options = SCENARIOS[scenario]
    calls = Stepped.calls
    _, ours = run(autograd, groups, **options)
    _, reference = run(autograd, groups, kinds=[Stepped] * 20, **options)
    assert Stepped.calls > calls  # (the reference stepped through the methods)
    for a, b in zip(all_params(ours), all_params(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    for p, p_reference in zip(*([p for g in o.param_groups for p in g["params"]] for o in (ours, reference))):
        assert sorted(ours.state[p]) == sorted(reference.state[p_reference])
        for key, value in reference.state[p_reference].items():
            np.testing.assert_array_equal(ours.state[p][key].numpy(), value.numpy())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_parameter_takes_pytorchs_numbers(scenario):
    torch = pytest.importorskip("torch")
    groups, options = SCENARIOS[scenario]
    _, ours = run(autograd, groups, **options)
    _, theirs = run(torch, groups, **options)
    for a, b in zip(all_params(ours), all_params(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_the_lr_is_read_again_at_each_step():
    groups = [dict(), dict(amsgrad=True, lr=0.1)]
    halved, optimizer = run(autograd, groups, between_steps=halve_lr)
    assert optimizer.param_groups[1]["lr"] == 0.1 / 2**6
    scheduled, optimizer = run(autograd, groups, gamma=0.5)
    assert optimizer.param_groups[1]["lr"] == 0.1 / 2**6
    unchanged, _ = run(autograd, groups)
    for a, b, c in zip(halved, scheduled, unchanged):
        np.testing.assert_array_equal(a, b)  # halving by hand and by the scheduler: the same lr at every step
        assert not np.array_equal(a, c)


def test_a_parameter_without_a_gradient_keeps_no_state_and_its_values():
    ours, optimizer = run(autograd, [dict(amsgrad=True)], without_grad={1})
    assert optimizer.param_groups[0]["params"][1] not in optimizer.state  # no entry: it never stepped
    np.testing.assert_array_equal(ours[1], run(autograd, [dict()], steps=0)[0][1])


def test_a_subclass_among_plain_parameters_steps_through_its_methods():
    calls = Stepped.calls
    kinds = [autograd.tensor, Stepped, autograd.tensor, autograd.tensor]
    ours, _ = run(autograd, [dict(weight_decay=0.1)], kinds=kinds)
    assert Stepped.calls - calls == 6  # its six steps, each through its addcdiv_; the others took the one call
    for a, b in zip(ours, run(autograd, [dict(weight_decay=0.1)], kinds=[Stepped] * 4)[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_moment_of_a_subclass_makes_its_parameter_step_through_the_methods():
    class Moment(autograd.Tensor):
        lerps = 0

        def lerp_(self, *args, **kwargs):
            Moment.lerps += 1
            return super().lerp_(*args, **kwargs)

    def moment_of_a_subclass(lib, optimizer, step):
        if step == 0:
            state = optimizer.state[optimizer.param_groups[0]["params"][2]]
            state["exp_avg"] = Moment(state["exp_avg"].numpy())

    ours, _ = run(autograd, [dict()], between_steps=moment_of_a_subclass)
    assert Moment.lerps == 5  # steps 2 to 6 of that parameter, through its moment's lerp_
    for a, b in zip(ours, run(autograd, [dict()], kinds=[Stepped] * 4)[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_tensor_lr_in_one_group_beside_plain_numbers_in_another():
    ours, _ = run(autograd, tensor_lr(autograd))
    plain, _ = run(autograd, [dict(lr=0.03, weight_decay=0.1), dict(amsgrad=True)])
    for a, b in zip(ours[:4], plain[:4]):  # through the methods, the Tensor lr an operand of their arithmetic
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-16)
    for a, b in zip(ours[4:], plain[4:]):
        np.testing.assert_array_equal(a, b)
    torch = pytest.importorskip("torch")
    for a, b in zip(ours, run(torch, tensor_lr(torch))[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def complex_in_the_middle(lib):
    """Three parameters, the middle one complex, five Adam steps with amsgrad: their values and the optimizer."""
    rng = np.random.default_rng(5)
    w = lib.tensor(rng.standard_normal((2, 2)) + 1j * rng.standard_normal((2, 2)), requires_grad=True)
    params = [lib.tensor(np.linspace(-1, 1, 3), requires_grad=True), w,
              lib.tensor(np.linspace(2, 3, 3), requires_grad=True)]
    optimizer = lib.optim.Adam(params, lr=0.05, amsgrad=True, **({} if lib is autograd else dict(foreach=False)))
    for _ in range(5):
        for p in params:
            shape = tuple(p.shape)
            p.grad = lib.tensor(rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if p is w else 0))
        optimizer.step()
    return [p.detach().numpy().copy() for p in params], optimizer


def test_a_complex_parameter_among_real_ones_steps_as_its_pairs():
    ours, optimizer = complex_in_the_middle(autograd)
    state = optimizer.state[optimizer.param_groups[0]["params"][1]]
    assert state["exp_avg"].dtype == state["max_exp_avg_sq"].dtype == autograd.complex128
    assert optimizer.state[optimizer.param_groups[0]["params"][0]]["exp_avg"].dtype == autograd.float64
    torch = pytest.importorskip("torch")
    for a, b in zip(ours, complex_in_the_middle(torch)[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


class Counted(optim.Adam):
    """An Adam with its own update (counting its calls): its step calls it for every parameter."""

    calls = 0

    def update(self, param, grad, state, group):
        Counted.calls += 1
        super().update(param, grad, state, group)


def test_a_subclass_of_adam_with_its_own_update_is_called_for_every_parameter():
    optim.Counted = Counted
    try:
        ours, _ = run(autograd, [dict(amsgrad=True)], without_grad={2}, name="Counted")
    finally:
        del optim.Counted
    assert Counted.calls == 6 * 3
    for a, b in zip(ours, run(autograd, [dict(amsgrad=True)], without_grad={2})[0], strict=True):
        np.testing.assert_array_equal(a, b)


def step_with_a_float32_gradient(lib):
    w = lib.tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    optimizer = lib.optim.Adam([w], lr=0.1, **({} if lib is autograd else dict(foreach=False)))
    w.grad = lib.tensor(np.array([0.5, -1.0], dtype=np.float32))
    w.data = w.data.double()  # the parameter becomes float64; its gradient stays float32
    with pytest.raises(RuntimeError, match="expected dtype double for `end` but got dtype float"):
        optimizer.step()
    np.testing.assert_array_equal(w.detach().numpy(), [1.0, 2.0])


def test_a_gradient_of_another_dtype_is_refused_as_pytorch_refuses_it():
    step_with_a_float32_gradient(autograd)
    step_with_a_float32_gradient(pytest.importorskip("torch"))


@pytest.mark.parametrize("fused_kinds", [False, True])
def test_float16_steps_through_the_methods_as_pytorch_does(fused_kinds):
    """float16's Tensor methods each round to float16, as PyTorch's single-tensor step does: the one call (NumPy's
    roundings) is not taken for it, so a plain float16 parameter moves as a Stepped one, and as PyTorch's."""
    values = np.linspace(-1, 1, 600)
    grads = np.random.default_rng(1).standard_normal((4, 600))
    kinds = (Stepped, autograd.Tensor) if fused_kinds else (autograd.Tensor, Stepped)
    params = [autograd.tensor(values, dtype=autograd.float16).as_subclass(kind).requires_grad_() for kind in kinds]
    optimizer = optim.Adam(params, lr=0.01)
    for grad in grads:
        for p in params:
            p.grad = autograd.tensor(grad, dtype=autograd.float16)
        optimizer.step()
    assert params[0].detach().numpy().tobytes() == params[1].detach().numpy().tobytes()
    torch = pytest.importorskip("torch")
    theirs = torch.tensor(values, dtype=torch.float16, requires_grad=True)
    their_optimizer = torch.optim.Adam([theirs], lr=0.01, foreach=False)
    for grad in grads:
        theirs.grad = torch.tensor(grad, dtype=torch.float16)
        their_optimizer.step()
    assert params[0].detach().numpy().tobytes() == theirs.detach().numpy().tobytes()
