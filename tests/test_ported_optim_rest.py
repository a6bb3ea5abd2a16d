"""The rest of PyTorch's test/optim/ (test_optim.py, test_lrscheduler.py, test_swa_utils.py) not yet ported in
tests/test_ported_optim.py, test_ported_lr_scheduler.py, test_ported_swa_utils.py or tests/test_optimdb.py:
OneCycleLR loaded from a checkpoint of PyTorch before 2.2 (its ``anneal_func`` instead of ``_anneal_func_type``),
an optimizer's pickling and deepcopy keeping only its defaults, state and groups (test_deepcopy_copies_all_public_
attrs: hooks and other attributes stay behind, so an optimizer with a lambda hook pickles; LBFGS's copy still
steps, where PyTorch's lacks ``_params``), the defaults gaining ``differentiable`` once loaded, and eleven
optimizers over two parameter groups under a StepLR (test_param_group_with_lrscheduler_goes_right_direction).
The rest of those files that applies to the CPU is ported in the files above.

Each test runs on chainrule and, where it is installed, on PyTorch (fixture `T`); the expectations are literals
or computed by hand.
"""

import copy
import importlib
import math
import pickle

import pytest

from tests import ported_nn
from tests.ported import close, values

nn = ported_nn.nn  # the fixture


@pytest.fixture
def optim(T):
    return importlib.import_module({"autograd": "optim", "torch": "torch.optim"}[T.__name__])


def installed_torch():
    """PyTorch where it is installed, else None (the chainrule half of a test still runs)."""
    try:
        return importlib.import_module("torch")
    except ModuleNotFoundError:
        return None


def annealing_cos(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


# -- test_lrscheduler.py ------------------------------------------------------------------------------------------

def test_onecycle_lr_legacy_state_dict(T, nn, optim):
    """A OneCycleLR state dict of PyTorch before 2.2 holds the annealing function itself, ``anneal_func``."""
    opt = optim.SGD([nn.Parameter(T.zeros(2)), nn.Parameter(T.zeros(3))], lr=0.1, momentum=0.9)
    scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22,
                                              total_steps=10, anneal_strategy="cos")
    delattr(scheduler, "_anneal_func_type")
    state = scheduler.state_dict()
    assert "anneal_func_type" not in state and "_anneal_func_type" not in state
    state["anneal_func"] = optim.lr_scheduler.OneCycleLR._annealing_cos
    scheduler.load_state_dict(state)
    lr_target = [1, 13, 25] + [annealing_cos(25, 0.5, i / 7.0) for i in range(1, 7)] + [0.5]
    momentum_target = [22, 11.5, 1] + [annealing_cos(1, 22, i / 7.0) for i in range(1, 7)] + [22]
    for lr, momentum in zip(lr_target, momentum_target):
        for group in opt.param_groups:
            assert group["lr"] == pytest.approx(lr, abs=1e-5)
            assert group["momentum"] == pytest.approx(momentum, abs=1e-5)
        opt.step()
        scheduler.step()


def test_onecycle_lr_unknown_anneal_func_type(T, nn, optim):
    opt = optim.SGD([nn.Parameter(T.zeros(2))], lr=0.1)
    scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    scheduler._anneal_func_type = "exp"
    with pytest.raises(ValueError, match="Unknown _anneal_func_type: exp"):
        scheduler.step()


# -- test_optim.py ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["SGD", "Adam", "LBFGS"])
def test_deepcopy_copies_all_public_attrs_and_no_hooks(T, nn, optim, name):
    """A copy (deepcopy or pickle) holds the defaults, state and groups; hooks and other attributes stay behind,
    so an optimizer with a lambda hook pickles, as PyTorch's."""
    param = nn.Parameter(T.tensor([1.0, -2.0]))
    opt = getattr(optim, name)([param], lr=0.1)
    opt.register_step_post_hook(lambda *args: None)
    opt.register_state_dict_pre_hook(lambda optimizer: None)
    opt.extra = lambda: 1
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert sorted(k for k in vars(twin) if not k.startswith("_")) == ["defaults", "param_groups", "state"]
        assert not twin._optimizer_step_post_hooks and not twin._optimizer_state_dict_pre_hooks
        assert twin.defaults == {**opt.defaults, "differentiable": False}  # (LBFGS's gain it, as PyTorch's)
        assert twin.param_groups[0]["params"][0] is not param
        close(twin.param_groups[0]["params"][0], [1.0, -2.0])
    assert len(opt._optimizer_step_post_hooks) == 1 and hasattr(opt, "extra")  # the original keeps them


def test_lbfgs_defaults_gain_differentiable_once_loaded(T, nn, optim):
    opt = optim.LBFGS([nn.Parameter(T.ones(2))])
    assert "differentiable" not in opt.defaults
    opt.load_state_dict(opt.state_dict())
    assert opt.defaults["differentiable"] is False


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_copied_optimizer_steps_as_the_original(T, nn, optim, name):
    param = nn.Parameter(T.tensor([1.0, -2.0]))
    opt = getattr(optim, name)([param], lr=0.1)
    param.grad = T.tensor([0.5, 0.25])
    opt.step()
    twin = pickle.loads(pickle.dumps(opt))
    twin_param = twin.param_groups[0]["params"][0]
    twin_param.grad = T.tensor([0.5, 0.25])
    opt.step()
    twin.step()
    close(twin_param, values(param))
    expected = {"SGD": [0.9, -2.05], "Adam": [0.8, -2.2]}[name]
    close(param, expected, atol=1e-6)


def test_copied_lbfgs_steps(T, nn, optim):
    """PyTorch's copied LBFGS lacks ``_params`` and cannot step; ours steps as the original."""
    param = nn.Parameter(T.tensor([1.0, -2.0]))
    opt = optim.LBFGS([param], lr=0.5, max_iter=3)
    twin = copy.deepcopy(opt)
    twin_param = twin.param_groups[0]["params"][0]

    def loss_of(p, o):
        def closure():
            o.zero_grad()
            loss = (p ** 2).sum()
            loss.backward()
            return loss
        return closure

    opt.step(loss_of(param, opt))
    close(param, [5 / 12, -10 / 12], atol=1e-6)  # PyTorch's numbers: the first step is lr/|g|₁ along -g
    if T.__name__ == "torch":
        with pytest.raises(AttributeError, match="_params"):
            twin.step(loss_of(twin_param, twin))
        return
    twin.step(loss_of(twin_param, twin))
    close(twin_param, values(param))


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(momentum=0.9)), ("Adam", {}), ("AdamW", {}), ("NAdam", {}), ("RAdam", {}), ("Adamax", {}),
    ("Adagrad", {}), ("Adadelta", dict(lr=1.0)), ("RMSprop", {}), ("Rprop", {}), ("ASGD", {})])
def test_param_group_with_lrscheduler_goes_right_direction(T, nn, optim, name, kwargs):
    """Two groups (the bias at its own lr) under a StepLR: five steps lower the loss, and the steps are
    PyTorch's (the torch run's final weights equal chainrule's, checked where it is installed)."""
    T.manual_seed(0)
    weight, bias = nn.Parameter(T.randn(5, 3)), nn.Parameter(T.randn(5))
    kwargs = {"lr": 0.01, **kwargs}
    opt = getattr(optim, name)([{"params": [weight]}, {"params": [bias], "lr": 5 * kwargs["lr"]}], **kwargs)
    scheduler = optim.lr_scheduler.StepLR(opt, gamma=0.9, step_size=2)
    x = T.arange(3.0)

    def loss_now():
        return (weight @ x + bias).pow(2).sum()

    initial = loss_now().item()
    for _ in range(5):
        opt.zero_grad()
        loss_now().backward()
        opt.step()
        scheduler.step()
    assert loss_now().item() < initial
    assert opt.param_groups[1]["lr"] == pytest.approx(5 * kwargs["lr"] * 0.81)
    torch = installed_torch()
    if T.__name__ == "autograd" and torch:
        torch.manual_seed(0)
        weight_t, bias_t = torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(5))
        opt_t = getattr(torch.optim, name)([{"params": [weight_t]}, {"params": [bias_t], "lr": 5 * kwargs["lr"]}],
                                           **kwargs)
        scheduler_t = torch.optim.lr_scheduler.StepLR(opt_t, gamma=0.9, step_size=2)
        for _ in range(5):
            opt_t.zero_grad()
            (weight_t @ torch.arange(3.0) + bias_t).pow(2).sum().backward()
            opt_t.step()
            scheduler_t.step()
        close(weight, weight_t.detach().numpy(), atol=1e-5)
        close(bias, bias_t.detach().numpy(), atol=1e-5)
