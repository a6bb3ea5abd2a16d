"""Optimizers ported from PyTorch's test/optim/test_optim.py (TestDifferentiableOptimizer,
TestSGDComplexForeach), test/test_optim.py (TestOptim's basic cases, state_dict, complex and error
checks, and what its OptimizerInfo-driven TestOptimRenewed checks, written as plain tests) and
test/optim/test_swa_utils.py.

Each test of the first part runs on chainrule's `optim` and, where it is installed, on
``torch.optim`` (fixture `T`), with literal or NumPy-computed expectations. The second part,
marked `torch`, compares every optimizer's trajectory (parameters and state, float64, 20 steps)
with torch.optim's for the flag combinations PyTorch's tests use.
"""

import copy
import functools
import importlib
import itertools
import pickle
import warnings

import numpy as np
import pytest

from tests.ported import raises, values


def optim_of(T):
    """The optimizers of the library under test: chainrule's `optim` or torch.optim."""
    return importlib.import_module("optim") if T.__name__ == "autograd" else T.optim


def nn_of(T):
    return importlib.import_module("nn") if T.__name__ == "autograd" else T.nn


@pytest.fixture
def O(T):  # noqa: E743 (the optim module of the library under test)
    return optim_of(T)


@pytest.fixture
def N(T):  # noqa: N802 (its nn)
    return nn_of(T)


# every optimizer of both libraries (but SparseAdam, which takes sparse gradients only: test_sparse_gradients.py)
# with the option sets PyTorch's tests step it with
CONFIGS = {
    "SGD": [dict(lr=1e-3), dict(lr=1e-3, momentum=0.5), dict(lr=1e-3, momentum=0.5, weight_decay=1),
            dict(lr=1e-3, momentum=0.5, weight_decay=1, nesterov=True),
            dict(lr=1e-3, momentum=0.9, dampening=0.5)],
    "Adam": [dict(lr=1e-3), dict(lr=1e-3, amsgrad=True), dict(lr=1e-3, weight_decay=0.1),
             dict(lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True)],
    "AdamW": [dict(lr=1e-3), dict(lr=1e-3, weight_decay=1), dict(lr=1e-3, weight_decay=1, amsgrad=True)],
    "Adamax": [dict(lr=1e-1), dict(lr=1e-1, weight_decay=1)],
    "Adadelta": [dict(), dict(rho=0.95), dict(weight_decay=1), dict(lr=0.5, rho=0.9, eps=1e-5)],
    "Adagrad": [dict(lr=1e-1), dict(lr=1e-1, lr_decay=1e-3), dict(lr=1e-1, weight_decay=1),
                dict(lr=1e-1, initial_accumulator_value=0.1)],
    "ASGD": [dict(lr=1e-2), dict(lr=1e-2, weight_decay=1), dict(lr=1e-2, t0=5, lambd=1e-3)],
    "NAdam": [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, momentum_decay=6e-3),
              dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)],
    "RAdam": [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1),
              dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)],
    "RMSprop": [dict(lr=1e-2), dict(lr=1e-2, centered=True), dict(lr=1e-2, momentum=0.9),
                dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=1), dict(lr=1e-2, alpha=0.9, eps=1e-6)],
    "Rprop": [dict(lr=1e-3), dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50))],
    "Adafactor": [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1), dict(lr=1e-2, beta2_decay=-0.5, d=2.0)],
}
# whether an optimizer takes maximize=, foreach=, differentiable=, fused=, capturable= (as PyTorch's do)
TAKES_MAXIMIZE = set(CONFIGS)
TAKES_FOREACH = set(CONFIGS)
TAKES_DIFFERENTIABLE = set(CONFIGS) - {"Adafactor"}
TAKES_FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}
TAKES_CAPTURABLE = {"Adam", "AdamW", "Adamax", "Adadelta", "ASGD", "NAdam", "RAdam", "RMSprop", "Rprop"}
ALL_CONFIGS = [(name, kwargs) for name, options in CONFIGS.items() for kwargs in options]


def config_id(config):
    name, kwargs = config
    return name + ("-" + ",".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else "")


def new_param(T, array, requires_grad=True):
    return T.tensor(np.asarray(array), requires_grad=requires_grad)


# ---- TestOptim's basic cases: the loss goes down (up with maximize), contiguous or not ----

def basic_case(T, make, weight, bias, x, schedulers=(), maximize=False, steps=20):
    weight, bias, x = (new_param(T, weight), new_param(T, bias), T.tensor(np.asarray(x)))
    optimizer = make([weight, bias], maximize)
    made = [schedule(optimizer) for schedule in schedulers]
    repr(optimizer)  # an optimizer prints

    def closure():
        optimizer.zero_grad()
        loss = (weight.mv(x) + bias).pow(2).sum()
        loss.backward()
        return loss

    initial = closure().item()
    for _ in range(steps):
        for scheduler in made:
            if type(scheduler).__name__ == "ReduceLROnPlateau":
                scheduler.step(closure())
            else:
                scheduler.step()
        optimizer.step(closure)
    final = closure().item()
    assert (final > initial) if maximize else (final < initial), (initial, final)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_basic_cases(T, O, config):
    """PyTorch's _test_basic_cases: (W x + b)² falls under each optimizer (rises with maximize), for
    contiguous parameters and for non-contiguous ones, with two groups of different lrs, and with
    schedulers acting on the optimizer."""
    name, kwargs = config
    cls = getattr(O, name)
    rng = np.random.default_rng(0)
    weight, bias, x = rng.standard_normal((10, 5)), rng.standard_normal(10), rng.standard_normal(5)
    for maximize in (False, True):
        basic_case(T, lambda params, m: cls(params, maximize=m, **kwargs), weight, bias, x, maximize=maximize)
    strided = rng.standard_normal((10, 5, 2)), rng.standard_normal((10, 2))
    basic_case_strided(T, lambda params, m: cls(params, **kwargs), strided, x)
    lr = kwargs.get("lr", 1.0)
    two_groups = lambda params, m: cls([{"params": [params[0]]}, {"params": [params[1]], "lr": lr * 2}],  # noqa: E731
                                       **kwargs)
    basic_case(T, two_groups, weight, bias, x, schedulers=[lambda opt: O.lr_scheduler.StepLR(opt, 10, gamma=0.9)])
    basic_case(T, lambda params, m: cls(params, **kwargs), weight, bias, x,
               schedulers=[lambda opt: O.lr_scheduler.ExponentialLR(opt, gamma=0.99),
                           lambda opt: O.lr_scheduler.ReduceLROnPlateau(opt)])


def basic_case_strided(T, make, strided, x):
    """Parameters that are non-contiguous views (every other element of a bigger leaf's last axis)."""
    weight_base, bias_base = T.tensor(strided[0]), T.tensor(strided[1])
    weight, bias = weight_base[..., 0], bias_base[..., 0]
    assert not weight.is_contiguous()
    weight.requires_grad_()
    bias.requires_grad_()
    x = T.tensor(np.asarray(x))
    optimizer = make([weight, bias], False)

    def closure():
        optimizer.zero_grad()
        loss = (weight.mv(x) + bias).pow(2).sum()
        loss.backward()
        return loss

    initial = closure().item()
    for _ in range(20):
        optimizer.step(closure)
    assert closure().item() < initial


# ---- TestOptim's _test_state_dict: resuming from a state dict gives the same trajectory ----

@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
@pytest.mark.parametrize("maximize", [False, True])
def test_state_dict(T, O, config, maximize):
    name, kwargs = config
    cls = getattr(O, name)
    rng = np.random.default_rng(1)
    start_w, start_b, x = rng.standard_normal((10, 5)), rng.standard_normal(10), T.tensor(rng.standard_normal(5))

    def problem(start_weight, start_bias):
        weight, bias = new_param(T, start_weight), new_param(T, start_bias)
        optimizer = cls([weight, bias], maximize=maximize, **kwargs)

        def closure():
            optimizer.zero_grad()
            loss = (weight.mv(x) + bias).pow(2).sum()
            loss.backward()
            return loss

        return weight, bias, optimizer, closure

    weight, bias, optimizer, closure = problem(start_w, start_b)
    for _ in range(10):  # (PyTorch's test: 20 and 20)
        optimizer.step(closure)
    weight_c, bias_c, optimizer_c, closure_c = problem(values(weight), values(bias))
    optimizer_c.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for _ in range(10):
        optimizer.step(closure)
        optimizer_c.step(closure_c)
        np.testing.assert_allclose(values(weight), values(weight_c), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(values(bias), values(bias_c), rtol=1e-9, atol=1e-12)
    # (NAdam's mu_product and ASGD's eta and mu, made in float32, load in the parameters' float64, PyTorch's
    # rule: the resumed run may differ from the first in the last bit. PyTorch's own test also checks that
    # loading leaves state_dict_c as it was: PyTorch 2.13 keeps the loaded step Tensors, which then count on.)
    assert same_state(optimizer.state_dict(), optimizer_c.state_dict(), exact=False), \
        "equal optimizers, different state dicts"
    optimizer_c.param_groups.extend(optimizer_c.param_groups)  # a repeated group is described the same way
    assert same_state(optimizer.state_dict()["param_groups"][-1], optimizer_c.state_dict()["param_groups"][-1])

    # state dicts from before maximize and foreach existed still load, and the optimizer steps
    for option in ("maximize", "foreach"):
        if name == "Adafactor" and option == "maximize":  # (its __setstate__ fills foreach only, as PyTorch's:
            continue  # a group loaded without maximize has none, and its step raises KeyError)
        state_dict = optimizer.state_dict()
        if option in state_dict["param_groups"][0]:
            for group in state_dict["param_groups"]:
                del group[option]
            optimizer.load_state_dict(state_dict)
            assert optimizer.param_groups[0][option] in (False, None)
            optimizer.step(closure)
    # and one whose step is a number, not a Tensor
    state_dict = optimizer.state_dict()
    if hasattr(state_dict["state"].get(0, {}).get("step"), "item"):
        for state in state_dict["state"].values():
            state["step"] = state["step"].item()
        optimizer.load_state_dict(state_dict)
        optimizer.step(closure)

    public = {k for k in vars(optimizer) if not k.startswith("_")}
    assert public == {k for k in vars(copy.deepcopy(optimizer)) if not k.startswith("_")}


def same_state(a, b, exact=True):
    """Equal state dicts: Tensors by value and dtype (exact), or to 1e-9 whatever their float dtype."""
    if hasattr(a, "detach"):
        if not hasattr(b, "detach"):
            return False
        if exact:
            return str(a.dtype) == str(b.dtype) and np.array_equal(values(a), values(b))
        return np.allclose(values(a), values(b), rtol=1e-9, atol=1e-12)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k], exact) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y, exact) for x, y in zip(a, b))
    return a == b


def test_state_dict_layout(T, O):
    """{'state': {index: ...}, 'param_groups': [{options..., 'params': [indices]}]}, parameters numbered
    across groups, state tensors copies of the optimizer's."""
    w, b = new_param(T, np.ones((2, 2))), new_param(T, np.zeros(2))
    optimizer = O.SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    (w.sum() + b.sum()).backward()
    optimizer.step()
    state_dict = optimizer.state_dict()
    assert [g["params"] for g in state_dict["param_groups"]] == [[0], [1]]
    assert [g["lr"] for g in state_dict["param_groups"]] == [0.1, 0.5]
    assert set(state_dict["state"]) == {0, 1}
    np.testing.assert_array_equal(values(state_dict["state"][0]["momentum_buffer"]), np.ones((2, 2)))


def test_load_state_dict_errors(T, O):
    w, b = new_param(T, np.ones(2)), new_param(T, np.ones(3))
    two_groups = O.SGD([{"params": [w]}, {"params": [b]}], lr=0.1)
    raises(ValueError, "loaded state dict has a different number of parameter groups|2 parameter groups",
           O.SGD([w, b], lr=0.1).load_state_dict, two_groups.state_dict())
    raises(ValueError, "loaded state dict contains a parameter group that doesn't match the size of optimizer's "
                       "group", O.SGD([{"params": [w, b]}, {"params": []}], lr=0.1).load_state_dict,
           two_groups.state_dict())


@pytest.mark.parametrize("weights_only", [True, False])
def test_save_load_equality_with_weights_only(T, O, tmp_path, weights_only):
    w = new_param(T, np.arange(4.0))
    optimizer = O.Adam([w], lr=0.1)
    for _ in range(3):
        w.grad = T.ones(4, dtype=T.float64)
        optimizer.step()
    path = tmp_path / "optimizer.pt"
    T.save(optimizer.state_dict(), path)
    loaded = T.load(path, weights_only=weights_only)
    assert same_state(loaded, optimizer.state_dict())
    fresh = O.Adam([new_param(T, values(w))], lr=0.1)
    fresh.load_state_dict(loaded)
    assert same_state(fresh.state_dict(), optimizer.state_dict())


def test_load_nontensor_step(T, O):
    w = new_param(T, np.arange(3.0))
    optimizer = O.Adam([w], lr=0.1)
    w.grad = T.ones(3, dtype=T.float64)
    optimizer.step()
    state_dict = optimizer.state_dict()
    state_dict["state"][0]["step"] = 1.0
    optimizer.load_state_dict(state_dict)
    optimizer.step()
    assert float(optimizer.state[w]["step"]) == 2.0


# ---- complex parameters: updated as their (real, imaginary) pairs ----

COMPLEX_CONFIGS = [("SGD", dict(lr=1e-3)), ("SGD", dict(lr=1e-3, momentum=1)),
                   ("SGD", dict(lr=1e-3, momentum=1, weight_decay=1)),
                   ("SGD", dict(lr=1e-3, nesterov=True, momentum=1, weight_decay=1)),
                   ("SGD", dict(lr=1e-3, momentum=1, dampening=0.5, weight_decay=1)),
                   ("Adam", dict(lr=1e-2)), ("Adam", dict(lr=1e-2, amsgrad=True)), ("AdamW", dict(lr=1e-2)),
                   ("Adamax", dict(lr=1e-2)), ("Adadelta", dict()), ("Adagrad", dict(lr=1e-1)),
                   ("ASGD", dict(lr=1e-2)), ("NAdam", dict(lr=1e-2)), ("RAdam", dict(lr=1e-2)),
                   ("RMSprop", dict(lr=1e-2, centered=True, momentum=0.9)), ("Rprop", dict(lr=1e-2))]


@pytest.mark.parametrize("config", COMPLEX_CONFIGS, ids=config_id)
def test_complex_optimizer(T, O, config):
    """PyTorch's _test_complex_optimizer: a complex parameter moves as view_as_real of it would."""
    name, kwargs = config
    rng = np.random.default_rng(2)
    start = (rng.standard_normal((5, 5)) + 1j * rng.standard_normal((5, 5))).astype(np.complex128)
    complex_param = T.tensor(start, requires_grad=True)
    real_param = T.tensor(np.stack([start.real, start.imag], -1), requires_grad=True)
    complex_opt, real_opt = getattr(O, name)([complex_param], **kwargs), getattr(O, name)([real_param], **kwargs)
    for _ in range(3):
        grad = rng.standard_normal((5, 5)) + 1j * rng.standard_normal((5, 5))
        complex_param.grad = T.tensor(grad)
        real_param.grad = T.tensor(np.stack([grad.real, grad.imag], -1))
        complex_opt.step()
        real_opt.step()
        got = values(complex_param)
        np.testing.assert_allclose(np.stack([got.real, got.imag], -1), values(real_param), rtol=1e-12, atol=1e-14)


def rosenbrock(t):
    x, y = t[0], t[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


@pytest.mark.parametrize("name, kwargs", [("SGD", dict(lr=1e-3)), ("Adam", dict(lr=1e-2)),
                                          ("AdamW", dict(lr=1e-2)), ("RMSprop", dict(lr=1e-3)),
                                          ("Adagrad", dict(lr=1e-2))])
def test_complex_2d(T, O, name, kwargs):
    """PyTorch's _test_complex_2d: Rosenbrock of a complex vector a, against the same on (Re a, Im a)."""
    rng = np.random.default_rng(3)
    start = rng.standard_normal(2) + 1j * rng.standard_normal(2)
    a1 = T.tensor(start, requires_grad=True)
    a1_real, a1_imag = T.tensor(start.real, requires_grad=True), T.tensor(start.imag, requires_grad=True)
    opt1, opt2 = getattr(O, name)([a1], **kwargs), getattr(O, name)([a1_real, a1_imag], **kwargs)
    for _ in range(10):
        opt1.zero_grad()
        opt2.zero_grad()
        rosenbrock(a1).abs().backward()
        rosenbrock(T.complex(a1_real, a1_imag)).abs().backward()
        np.testing.assert_allclose(values(a1.grad).real, values(a1_real.grad), rtol=1e-10)
        np.testing.assert_allclose(values(a1.grad).imag, values(a1_imag.grad), rtol=1e-10)
        opt1.step()
        opt2.step()
        np.testing.assert_allclose(values(a1).real, values(a1_real), rtol=1e-10)
        np.testing.assert_allclose(values(a1).imag, values(a1_imag), rtol=1e-10)


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True},
                                    {"weight_decay": 0.1}, {"maximize": True}])
def test_sgd_complex_foreach_matches_single(T, O, kwargs):
    """TestSGDComplexForeach: foreach=True and foreach=False take the same complex steps."""
    def run(foreach):
        rng = np.random.default_rng(0)
        param = T.tensor(rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2)), requires_grad=True)
        opt = O.SGD([param], lr=0.1, foreach=foreach, dampening=0.0, **kwargs)
        for _ in range(4):
            param.grad = T.tensor(rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2)))
            opt.step()
        return values(param)

    np.testing.assert_array_equal(run(True), run(False))


# ---- errors: PyTorch's messages for bad options and bad parameters ----

ERRORS = [
    ("SGD", dict(lr=-1e-2), "Invalid learning rate: -0.01"),
    ("SGD", dict(lr=1e-2, momentum=-0.5), "Invalid momentum value: -0.5"),
    ("SGD", dict(lr=1e-2, weight_decay=-1), "Invalid weight_decay value: -1"),
    ("SGD", dict(lr=1e-2, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", dict(lr=1e-2, nesterov=True, momentum=0.9, dampening=0.1),
     "Nesterov momentum requires a momentum and zero dampening"),
    ("Adam", dict(lr=1e-2, betas=(1.0, 0.0)), r"Invalid beta parameter at index 0: 1.0"),
    ("Adam", dict(lr=1e-2, betas=(0.0, 1.0)), r"Invalid beta parameter at index 1: 1.0"),
    ("Adam", dict(lr=1e-2, weight_decay=-1), "Invalid weight_decay value: -1"),
    ("Adam", dict(lr=1e-2, eps=-1), "Invalid epsilon value: -1"),
    ("Adam", dict(lr=-1e-2), "Invalid learning rate: -0.01"),
    ("AdamW", dict(lr=1e-2, weight_decay=-1), "Invalid weight_decay value: -1"),
    ("AdamW", dict(lr=1e-2, betas=(1.0, 0.0)), "Invalid beta parameter at index 0: 1.0"),
    ("Adamax", dict(lr=1e-2, betas=(0.0, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    ("Adamax", dict(lr=1e-2, weight_decay=-1), "Invalid weight_decay value: -1"),
    ("Adadelta", dict(lr=1e-2, rho=1.1), "Invalid rho value: 1.1"),
    ("Adadelta", dict(lr=-1e-2), "Invalid learning rate: -0.01"),
    ("Adadelta", dict(lr=1e-2, eps=-1), "Invalid epsilon value: -1"),
    ("Adagrad", dict(lr=1e-2, lr_decay=-0.5), "Invalid lr_decay value: -0.5"),
    ("Adagrad", dict(lr=1e-2, initial_accumulator_value=-1), "Invalid initial_accumulator_value value: -1"),
    ("Adagrad", dict(lr=1e-2, weight_decay=-1), "Invalid weight_decay value: -1"),
    ("ASGD", dict(lr=1e-2, weight_decay=-0.5), "Invalid weight_decay value: -0.5"),
    ("NAdam", dict(lr=1e-2, betas=(1.0, 0.0)), "Invalid beta parameter at index 0: 1.0"),
    ("NAdam", dict(lr=1e-2, momentum_decay=-0.2), "Invalid momentum_decay value: -0.2"),
    ("RAdam", dict(lr=1e-2, betas=(1.0, 0.0)), "Invalid beta parameter at index 0: 1.0"),
    ("RAdam", dict(lr=1e-2, weight_decay=-1), "Invalid weight_decay value: -1"),
    ("RMSprop", dict(lr=1e-2, momentum=-1.0), "Invalid momentum value: -1.0"),
    ("RMSprop", dict(lr=1e-2, alpha=-1.0), "Invalid alpha value: -1.0"),
    ("RMSprop", dict(lr=1e-2, eps=-1.0), "Invalid epsilon value: -1.0"),
    ("Rprop", dict(lr=1e-2, etas=(1.0, 0.5)), r"Invalid eta values: 1.0, 0.5"),
    ("Rprop", dict(lr=-1e-2), "Invalid learning rate: -0.01"),
    ("LBFGS", dict(lr=-1e-2), "Invalid learning rate: -0.01"),
    ("Adam", dict(lr=1e-2, fused=True, foreach=True), "`fused` and `foreach` cannot be `True` together."),
    ("Adam", dict(lr=1e-2, fused=True, differentiable=True), "`fused` does not support `differentiable`"),
]


@pytest.mark.parametrize("name, kwargs, words", ERRORS, ids=[f"{n}-{w[:30]}" for n, _, w in ERRORS])
def test_errors(T, O, name, kwargs, words):
    error = RuntimeError if "fused" in kwargs else ValueError
    raises(error, words, getattr(O, name), [new_param(T, np.ones(2))], **kwargs)


def test_tensor_lr_errors(T, O):
    raises(ValueError, "Tensor lr must be 1-element", O.SGD, [new_param(T, np.ones(2))], lr=T.tensor([0.1, 0.2]))
    raises(ValueError, "betas must be either both floats or both Tensors", O.Adam, [new_param(T, np.ones(2))],
           betas=(T.tensor(0.9), 0.99))


def test_param_errors(T, O):
    w = new_param(T, np.ones(2))
    raises(TypeError, "params argument given to the optimizer should be an iterable of Tensors or dicts, but got",
           O.SGD, w, lr=0.1)
    raises(ValueError, "optimizer got an empty parameter list", O.SGD, [], lr=0.1)
    raises(ValueError, "can't optimize a non-leaf Tensor", O.SGD, [w * 2], lr=0.1)
    raises(TypeError, "optimizer can only optimize Tensors", O.SGD, [w, 3.0], lr=0.1)
    raises(TypeError, "optimizer parameters need to be organized in ordered collections",
           O.SGD, [{"params": {w}}], lr=0.1)


def test_add_param_group(T, O):
    w, b, c = new_param(T, np.ones(2)), new_param(T, np.ones(3)), new_param(T, np.ones(1))
    optimizer = O.SGD([w], lr=0.1, momentum=0.5)
    optimizer.add_param_group({"params": b, "lr": 0.2})  # one Tensor as params is allowed in a group
    assert len(optimizer.param_groups) == 2
    group = optimizer.param_groups[1]
    assert group["lr"] == 0.2 and group["momentum"] == 0.5 and group["params"][0] is b  # defaults fill the rest
    raises(ValueError, "some parameters appear in more than one parameter group", optimizer.add_param_group,
           {"params": [w]})
    raises(TypeError, "param_group must be a dict, but got", optimizer.add_param_group, [c])
    raises(TypeError, "optimizer parameters need to be organized in ordered collections",
           optimizer.add_param_group, {"params": {c}})
    assert len(optimizer.param_groups) == 2


def xfail_on_chainrule(request, T, reason):
    """Mark the chainrule half of a test as an expected failure (strict: it must fail)."""
    if T.__name__ == "autograd":
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


def test_duplicate_params_in_one_group_warn(T, O, request):
    xfail_on_chainrule(request, T, "PyTorch only warns of a parameter listed twice in one group (and keeps it); "
                                   "chainrule refuses it with ValueError, as PyTorch's warning says it will")
    w = new_param(T, np.ones(2))
    with pytest.warns(UserWarning, match="optimizer contains a parameter group with duplicate parameters"):
        O.SGD([w, w], lr=0.1)


def test_named_parameters(T, O, N):
    model = N.Linear(3, 2)
    optimizer = O.SGD(model.named_parameters(), lr=0.1)
    assert optimizer.param_groups[0]["param_names"] == ["weight", "bias"]
    assert optimizer.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]


# ---- zero_grad, no-op steps, closures, maximize, weight decay, flags ----

def test_zero_grad(T, O):
    w = new_param(T, np.ones(3))
    optimizer = O.SGD([w], lr=0.1)
    w.sum().backward()
    optimizer.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(values(w.grad), np.zeros(3))
    optimizer.zero_grad()  # set_to_none=True is the default
    assert w.grad is None
    w.sum().backward()
    optimizer.zero_grad(set_to_none=True)
    assert w.grad is None


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_step_is_noop_when_params_have_no_grad(T, O, config):
    name, kwargs = config
    params = [new_param(T, np.arange(4.0).reshape(2, 2)), new_param(T, np.ones(3))]
    optimizer = getattr(O, name)(params, **kwargs)
    for _ in range(3):
        optimizer.step()
    np.testing.assert_array_equal(values(params[0]), np.arange(4.0).reshape(2, 2))
    np.testing.assert_array_equal(values(params[1]), np.ones(3))
    if name != "Adagrad":  # (Adagrad makes its state in its constructor)
        assert len(optimizer.state) == 0


@pytest.mark.parametrize("config", [c for c in ALL_CONFIGS if not c[1].get("weight_decay")
                                    and c[0] not in ("Rprop", "Adafactor", "AdamW", "ASGD")], ids=config_id)
def test_step_is_noop_for_zero_grads(T, O, config):
    """A zero gradient (and no weight decay) leaves the parameters where they are (not AdamW's and ASGD's,
    which decay by default, nor Rprop's sign steps and Adafactor's relative steps)."""
    name, kwargs = config
    w = new_param(T, np.arange(1.0, 5.0))
    optimizer = getattr(O, name)([w], **kwargs)
    for _ in range(3):
        w.grad = T.zeros(4, dtype=T.float64)
        optimizer.step()
    np.testing.assert_array_equal(values(w), np.arange(1.0, 5.0))


@pytest.mark.parametrize("name", sorted(CONFIGS) + ["LBFGS"])
def test_step_with_closure_returns_its_loss(T, O, name):
    w = new_param(T, np.array([1.0, -2.0]))
    optimizer = getattr(O, name)([w], **({"lr": 0.1} if name != "Adadelta" else {}))
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        calls.append(1)
        return loss

    loss = optimizer.step(closure)
    assert float(loss) == 5.0 and calls


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_maximize_is_minimizing_the_negation(T, O, config):
    """maximize=True on f follows exactly the steps of minimizing -f."""
    name, kwargs = config
    start = np.array([[0.5, -1.5], [2.0, 0.25]])

    def run(maximize):
        w = new_param(T, start)
        optimizer = getattr(O, name)([w], maximize=maximize, **kwargs)
        for _ in range(5):
            optimizer.zero_grad()
            f = (w.sin() * w).sum()
            (f if maximize else -f).backward()
            optimizer.step()
        return values(w)

    np.testing.assert_allclose(run(True), run(False), rtol=1e-12, atol=1e-15)


def sgd_reference(start, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    """torch.optim.SGD's update in NumPy."""
    w, buf = start.copy(), None
    for g in grads:
        g = -g if maximize else g
        g = g + weight_decay * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
    return w


def adam_reference(start, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                   decoupled=False, maximize=False):
    """torch.optim.Adam's (and AdamW's) update in NumPy."""
    w, m, v, v_max = start.copy(), np.zeros_like(start), np.zeros_like(start), np.zeros_like(start)
    for t, g in enumerate(grads, 1):
        g = -g if maximize else g
        if decoupled:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
        m = m + (1 - betas[0]) * (g - m)
        v = betas[1] * v + (1 - betas[1]) * g * g
        v_max = np.maximum(v_max, v) if amsgrad else v
        denominator = np.sqrt(v_max) / np.sqrt(1 - betas[1] ** t) + eps
        w = w - lr / (1 - betas[0] ** t) * m / denominator
    return w


REFERENCE_CASES = [
    ("SGD", dict(lr=0.1), sgd_reference),
    ("SGD", dict(lr=0.1, momentum=0.9), sgd_reference),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3), sgd_reference),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1), sgd_reference),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True), sgd_reference),
    ("Adam", dict(lr=0.1), adam_reference),
    ("Adam", dict(lr=0.1, amsgrad=True, weight_decay=0.1), adam_reference),
    ("Adam", dict(lr=0.1, maximize=True, betas=(0.8, 0.9)), adam_reference),
    ("AdamW", dict(lr=0.1, weight_decay=0.1), functools.partial(adam_reference, decoupled=True)),
    ("AdamW", dict(lr=0.1, weight_decay=0.1, amsgrad=True), functools.partial(adam_reference, decoupled=True)),
]


@pytest.mark.parametrize("name, kwargs, reference", REFERENCE_CASES,
                         ids=[config_id((n, k)) for n, k, _ in REFERENCE_CASES])
def test_update_matches_numpy(T, O, name, kwargs, reference):
    """SGD (momentum, dampening, nesterov, weight_decay, maximize), Adam and AdamW (amsgrad, weight_decay
    coupled and decoupled) against their update rule written in NumPy, six steps."""
    rng = np.random.default_rng(4)
    start, grads = rng.standard_normal((3, 2)), [rng.standard_normal((3, 2)) for _ in range(6)]
    w = new_param(T, start)
    optimizer = getattr(O, name)([w], **kwargs)
    for g in grads:
        w.grad = T.tensor(g)
        optimizer.step()
    np.testing.assert_allclose(values(w), reference(start, grads, **kwargs), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(TAKES_DIFFERENTIABLE))
def test_differentiable_false_records_nothing(T, O, name):
    w = new_param(T, np.array([1.0, 2.0]))
    optimizer = getattr(O, name)([w], differentiable=False)
    (w**2).sum().backward()
    optimizer.step()
    assert w.grad_fn is None and w.requires_grad and w.is_leaf
    assert all(not v.requires_grad for v in optimizer.state[w].values() if hasattr(v, "requires_grad"))


@pytest.mark.parametrize("name, flag", [(n, f) for n in sorted(CONFIGS) for f in ("foreach", "fused", "capturable")
                                        if n in {"foreach": TAKES_FOREACH, "fused": TAKES_FUSED,
                                                 "capturable": TAKES_CAPTURABLE}[f]])
def test_flags_accepted(T, O, name, flag):
    """foreach, fused and capturable are options of the optimizers that take them in PyTorch: kept in the
    groups and the state dict. (A step with capturable=True needs an accelerator in PyTorch; chainrule,
    on the CPU only, accepts it and steps as without.)"""
    w = new_param(T, np.array([1.0, 2.0]))
    optimizer = getattr(O, name)([w], **{flag: True})
    assert optimizer.param_groups[0][flag] is True
    assert optimizer.state_dict()["param_groups"][0][flag] is True


@pytest.mark.parametrize("name, flag", [("SGD", "capturable"), ("Adagrad", "capturable"), ("Adamax", "fused"),
                                        ("RMSprop", "fused"), ("Adafactor", "differentiable")])
def test_flags_refused_where_pytorch_has_none(T, O, name, flag):
    raises(TypeError, f"unexpected keyword argument '{flag}'", getattr(O, name), [new_param(T, np.ones(2))],
           **{flag: True})


@pytest.mark.parametrize("name, flags", [("SGD", dict(foreach=True)), ("SGD", dict(fused=True)),
                                         ("Adam", dict(foreach=True)), ("Adam", dict(fused=True)),
                                         ("AdamW", dict(fused=True, amsgrad=True)), ("Adagrad", dict(fused=True)),
                                         ("RMSprop", dict(foreach=True, centered=True)),
                                         ("NAdam", dict(foreach=True)), ("Rprop", dict(foreach=False))])
def test_flags_take_the_same_steps(T, O, name, flags):
    """foreach and fused are faster ways to the same numbers (PyTorch's tests compare them to the
    for-loop to a few ulps; here float64)."""
    def run(**extra):
        rng = np.random.default_rng(5)
        w = new_param(T, rng.standard_normal((3, 4)))
        optimizer = getattr(O, name)([w], lr=0.01, **extra)
        for _ in range(10):
            w.grad = T.tensor(rng.standard_normal((3, 4)))
            optimizer.step()
        return values(w)

    plain = {k: v for k, v in flags.items() if k not in ("foreach", "fused")}
    np.testing.assert_allclose(run(**flags), run(**plain), rtol=1e-12, atol=1e-14)


def test_tensor_lr(T, O):
    """A Tensor lr steps as the same number, and a scheduler changing it in place changes the steps."""
    def run(lr):
        w = new_param(T, np.array([1.0, -1.0]))
        optimizer = O.Adam([w], lr=lr)
        scheduler = O.lr_scheduler.StepLR(optimizer, 2, gamma=0.5)
        for _ in range(5):
            w.grad = T.tensor([0.3, -0.7], dtype=T.float64)
            optimizer.step()
            scheduler.step()
        return values(w)

    np.testing.assert_allclose(run(T.tensor(0.1, dtype=T.float64)), run(0.1), rtol=1e-12)


@pytest.mark.parametrize("config", [c for c in ALL_CONFIGS if "lr" in c[1]], ids=config_id)
def test_tensor_lr_every_optimizer(T, O, config):
    """TestOptimRenewed.test_tensor_lr: a 0-d Tensor lr steps exactly as the same float."""
    name, kwargs = config

    def run(lr):
        rng = np.random.default_rng(8)
        w = new_param(T, rng.standard_normal((3, 2)))
        optimizer = getattr(O, name)([w], **{**kwargs, "lr": lr})
        for _ in range(5):
            w.grad = T.tensor(rng.standard_normal((3, 2)))
            optimizer.step()
        return values(w)

    np.testing.assert_allclose(run(T.tensor(kwargs["lr"], dtype=T.float64)), run(kwargs["lr"]), rtol=1e-12,
                               atol=1e-15)


def stepped(T, O, name, kwargs, steps=3):
    rng = np.random.default_rng(9)
    w = new_param(T, rng.standard_normal((2, 3)))
    optimizer = getattr(O, name)([w], **kwargs)
    for _ in range(steps):
        w.grad = T.tensor(rng.standard_normal((2, 3)))
        optimizer.step()
    return w, optimizer


@pytest.mark.parametrize("config", [(n, CONFIGS[n][0]) for n in CONFIGS], ids=config_id)
def test_can_load_older_state_dict(T, O, config):
    """A state dict saved before the flags existed (no foreach, fused, capturable, differentiable, maximize,
    decoupled_weight_decay in its groups) loads, and the optimizer steps on."""
    name, kwargs = config
    w, optimizer = stepped(T, O, name, kwargs)
    state_dict = copy.deepcopy(optimizer.state_dict())
    for group in state_dict["param_groups"]:
        for flag in ("foreach", "fused", "capturable", "differentiable", "decoupled_weight_decay"):
            group.pop(flag, None)
        if not (T.__name__ == "torch" and name == "Adafactor"):  # (PyTorch's Adafactor needs maximize saved)
            group.pop("maximize", None)
    fresh = getattr(O, name)([new_param(T, values(w))], **kwargs)
    fresh.load_state_dict(state_dict)
    fresh.param_groups[0]["params"][0].grad = T.ones(2, 3, dtype=T.float64)
    fresh.step()
    group = fresh.param_groups[0]
    assert group.get("foreach") in (None, False) and group.get("differentiable") in (None, False)


@pytest.mark.parametrize("config", [(n, CONFIGS[n][0]) for n in CONFIGS], ids=config_id)
def test_save_load_every_optimizer(T, O, config, tmp_path):
    """The state dict survives save and load (weights_only), loads into a new optimizer, and both go on
    alike; a state dict whose step is a number, not a Tensor, loads too."""
    name, kwargs = config
    w, optimizer = stepped(T, O, name, kwargs)
    path = tmp_path / "optimizer.pt"
    T.save(optimizer.state_dict(), path)
    loaded = T.load(path, weights_only=True)
    assert same_state(loaded, optimizer.state_dict())
    w2 = new_param(T, values(w))
    fresh = getattr(O, name)([w2], **kwargs)
    fresh.load_state_dict(loaded)
    for _ in range(2):
        w.grad = w2.grad = T.tensor(np.full((2, 3), 0.5))
        optimizer.step()
        fresh.step()
    np.testing.assert_allclose(values(w2), values(w), rtol=1e-9, atol=1e-12)
    state_dict = optimizer.state_dict()
    if hasattr(state_dict["state"].get(0, {}).get("step"), "item"):
        state_dict["state"][0]["step"] = state_dict["state"][0]["step"].item()
        optimizer.load_state_dict(state_dict)
        w.grad = T.ones(2, 3, dtype=T.float64)
        optimizer.step()


@pytest.mark.parametrize("config", [(n, CONFIGS[n][0]) for n in CONFIGS if n != "SGD"], ids=config_id)
def test_non_empty_state(T, O, config):
    """After a step every parameter with a gradient has state (SGD without momentum keeps none)."""
    name, kwargs = config
    params = [new_param(T, np.ones((2, 2))), new_param(T, np.ones(3))]
    optimizer = getattr(O, name)(params, **kwargs)
    for p in params:
        p.grad = T.ones_like(p)
    optimizer.step()
    assert all(len(optimizer.state[p]) > 0 for p in params)


@pytest.mark.parametrize("default", ["float32", "float64"])
@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adamax", "Adadelta", "Adagrad", "NAdam", "RAdam", "RMSprop",
                                  "Rprop", "ASGD"])
def test_step_dtype_follows_default_dtype(T, O, name, default):
    """The ``step`` count is a Tensor of the default float dtype (float32 or float64) whatever the
    parameter's (TestOptimRenewed.test_set_default_dtype_works_with_foreach)."""
    previous = T.get_default_dtype()
    T.set_default_dtype(getattr(T, default))
    try:
        w = new_param(T, np.ones(3))
        optimizer = getattr(O, name)([w])
        w.grad = T.ones(3, dtype=T.float64)
        optimizer.step()
        assert str(optimizer.state[w]["step"].dtype).split(".")[-1] == default
        assert float(optimizer.state[w]["step"]) == 1.0
    finally:
        T.set_default_dtype(previous)


def test_param_groups_weight_decay_and_lr(T, O):
    """Each group steps with its own options: SGD, W ← W - lr (g + λ W)."""
    a, b = new_param(T, np.ones(2)), new_param(T, np.ones(2))
    optimizer = O.SGD([{"params": [a], "weight_decay": 0.5}, {"params": [b], "lr": 0.2}], lr=0.1)
    a.grad, b.grad = T.ones(2, dtype=T.float64), T.ones(2, dtype=T.float64)
    optimizer.step()
    np.testing.assert_allclose(values(a), 1 - 0.1 * 1.5)
    np.testing.assert_allclose(values(b), 1 - 0.2)


def test_optimizer_can_be_printed(T, O):
    optimizer = O.SGD([new_param(T, np.ones(2))], lr=0.1)
    text = repr(optimizer)
    assert text.startswith("SGD (") and "Parameter Group 0" in text and "lr: 0.1" in text


def test_deepcopy_keeps_the_parameters_mapping(T, O):
    w = new_param(T, np.ones(2))
    optimizer = O.Adam([w], lr=0.1)
    w.grad = T.ones(2, dtype=T.float64)
    optimizer.step()
    copied = copy.deepcopy(optimizer)
    p = copied.param_groups[0]["params"][0]
    assert p is not w and set(copied.state) == {p}
    np.testing.assert_array_equal(values(copied.state[p]["exp_avg"]), values(optimizer.state[w]["exp_avg"]))


def test_optimizer_pickles(T, O):
    w = new_param(T, np.ones(2))
    optimizer = O.SGD([w], lr=0.1, momentum=0.9)
    w.grad = T.ones(2, dtype=T.float64)
    optimizer.step()
    again = pickle.loads(pickle.dumps(optimizer))
    assert again.param_groups[0]["momentum"] == 0.9 and len(again.state) == 1


# ---- LBFGS ----

def test_lbfgs_strong_wolfe_rosenbrock(T, O):
    """LBFGS with the strong-Wolfe line search reaches Rosenbrock's minimum (1, 1) in a few steps."""
    x = new_param(T, np.array([-1.5, 2.0]))
    optimizer = O.LBFGS([x], lr=1, max_iter=20, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = rosenbrock(x)
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(closure)
    np.testing.assert_allclose(values(x), [1.0, 1.0], atol=1e-4)  # (it stops at tolerance_change 1e-9)


def test_lbfgs_errors(T, O):
    x = new_param(T, np.ones(2))
    optimizer = O.LBFGS([x], line_search_fn="armijo")

    def closure():
        optimizer.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    raises(RuntimeError, "only 'strong_wolfe' is supported", optimizer.step, closure)
    raises(ValueError, "LBFGS doesn't support per-parameter options", O.LBFGS,
           [{"params": [x]}, {"params": [new_param(T, np.ones(2))]}])


def test_lbfgs_needs_a_closure(T, O):
    x = new_param(T, np.ones(2))
    with pytest.raises(TypeError):
        O.LBFGS([x]).step()


def test_sparse_adam_refuses_dense(T, O):
    w = new_param(T, np.ones(3))
    optimizer = O.SparseAdam([w], lr=0.1)
    w.grad = T.ones(3, dtype=T.float64)
    raises(RuntimeError, "SparseAdam does not support dense gradients, please consider Adam instead",
           optimizer.step)
    raises(ValueError, "Invalid beta parameter at index 0: 1.0", O.SparseAdam, [w], lr=1e-2, betas=(1.0, 0.0))


# ---- hooks ----

def test_step_pre_and_post_hooks(T, O):
    w = new_param(T, np.ones(2))
    optimizer = O.SGD([w], lr=0.1)
    seen = []
    pre = optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(("pre", opt is optimizer)))
    post = optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(("post", opt is optimizer)))
    w.grad = T.ones(2, dtype=T.float64)
    optimizer.step()
    assert seen == [("pre", True), ("post", True)]
    pre.remove()
    post.remove()
    optimizer.step()
    assert len(seen) == 2


def test_step_pre_hook_may_replace_the_arguments(T, O):
    w = new_param(T, np.ones(2))
    optimizer = O.SGD([w], lr=0.1)

    def closure():
        return T.tensor(7.0)

    optimizer.register_step_pre_hook(lambda opt, args, kwargs: (args, {"closure": closure}))
    w.grad = T.ones(2, dtype=T.float64)
    assert float(optimizer.step()) == 7.0


def test_step_pre_hook_bad_return(T, O):
    w = new_param(T, np.ones(2))
    optimizer = O.SGD([w], lr=0.1)
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: 3)
    raises(RuntimeError, "must return None or a tuple of \\(new_args, new_kwargs\\)", optimizer.step)


def test_global_step_hooks(T, O):
    w = new_param(T, np.ones(2))
    optimizer = O.Adam([w], lr=0.1)
    seen = []
    module = importlib.import_module(O.__name__ + ".optimizer")
    handles = [module.register_optimizer_step_pre_hook(lambda *a: seen.append("global pre")),
               optimizer.register_step_pre_hook(lambda *a: seen.append("pre")),
               optimizer.register_step_post_hook(lambda *a: seen.append("post")),
               module.register_optimizer_step_post_hook(lambda *a: seen.append("global post"))]
    try:
        w.grad = T.ones(2, dtype=T.float64)
        optimizer.step()
    finally:
        for handle in handles:
            handle.remove()
    assert seen == ["global pre", "pre", "post", "global post"]


def test_state_dict_hooks(T, O):
    w = new_param(T, np.ones(2))
    optimizer = O.SGD([w], lr=0.1, momentum=0.9)
    w.grad = T.ones(2, dtype=T.float64)
    optimizer.step()
    seen = []
    optimizer.register_state_dict_pre_hook(lambda opt: seen.append("pre"))

    def post(opt, state_dict):
        seen.append("post")
        state_dict["extra"] = 1
        return state_dict

    optimizer.register_state_dict_post_hook(post)
    optimizer.register_state_dict_pre_hook(lambda opt: seen.append("first pre"), prepend=True)
    state_dict = optimizer.state_dict()
    assert seen == ["first pre", "pre", "post"] and state_dict["extra"] == 1


def test_load_state_dict_hooks(T, O):
    w = new_param(T, np.ones(2))
    optimizer = O.SGD([w], lr=0.1, momentum=0.9)
    w.grad = T.ones(2, dtype=T.float64)
    optimizer.step()
    state_dict = optimizer.state_dict()
    fresh = O.SGD([new_param(T, np.ones(2))], lr=0.5, momentum=0.9)
    seen = []

    def pre(opt, loaded):
        seen.append("pre")
        loaded = copy.deepcopy(loaded)
        loaded["param_groups"][0]["lr"] = 0.25
        return loaded

    fresh.register_load_state_dict_pre_hook(pre)
    fresh.register_load_state_dict_pre_hook(lambda opt, loaded: seen.append("first pre"), prepend=True)
    fresh.register_load_state_dict_post_hook(lambda opt: seen.append(("post", opt.param_groups[0]["lr"])))
    fresh.load_state_dict(state_dict)
    assert seen == ["first pre", "pre", ("post", 0.25)]
    assert state_dict["param_groups"][0]["lr"] == 0.1  # the caller's dict is untouched


# ---- TestDifferentiableOptimizer: gradcheck through a step with differentiable=True ----

def diff_fn(T, p, grad, state, opt_class, kwargs, *ignored):
    """One step of opt_class on (a clone of) p with the given gradient and state: the new p and the
    new state tensors that require grad, as functions of the inputs."""
    p = p.clone()
    p.grad = grad
    state = {k: v.clone() if hasattr(v, "clone") else v for k, v in state.items()}
    opt = opt_class([p], **kwargs)
    opt.state[p].update(state)
    opt.step()
    return (p,) + tuple(v for v in opt.state[p].values() if hasattr(v, "requires_grad") and v.requires_grad)


def rand(T, *shape, requires_grad=True):
    return T.rand(*shape, requires_grad=requires_grad, dtype=T.float64)


DIFFERENTIABLE = {
    "SGD": (dict(lr=0.9), ["momentum_buffer"]),
    "Adam": (dict(lr=0.9, amsgrad=True), ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    "AdamW": (dict(lr=0.9, amsgrad=True), ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
    "RMSprop": (dict(lr=0.9, maximize=True, momentum=0.9, centered=True, weight_decay=0.1),
                ["step", "square_avg", "momentum_buffer", "grad_avg"]),
    "Adadelta": (dict(lr=0.9, weight_decay=0.1), ["step", "square_avg", "acc_delta"]),
    "Adagrad": (dict(lr=0.9, weight_decay=0.1), ["step", "sum"]),
    "Adamax": (dict(lr=0.9, weight_decay=0.1), ["step", "exp_avg", "exp_inf"]),
    "ASGD": (dict(lr=0.9), ["step", "eta", "mu", "ax"]),
    "Rprop": (dict(lr=0.9), ["step", "prev", "step_size"]),
    "NAdam": (dict(lr=0.9), ["step", "exp_avg", "exp_avg_sq", "mu_product"]),
    "NAdam-decoupled": (dict(lr=0.9, decoupled_weight_decay=True), ["step", "exp_avg", "exp_avg_sq", "mu_product"]),
    "RAdam": (dict(lr=0.9), ["step", "exp_avg", "exp_avg_sq"]),
    "RAdam-decoupled": (dict(lr=0.9, weight_decay=0.1, decoupled_weight_decay=True), ["step", "exp_avg", "exp_avg_sq"]),
}


def differentiable_state(T, keys, size=10):
    """PyTorch's states: step (and ASGD's eta, mu) a number that needs no gradient, the rest random."""
    state = {}
    for key in keys:
        if key == "step":
            state[key] = T.tensor(10.0, dtype=T.float64)
        elif key == "eta":
            state[key] = T.tensor(0.9, dtype=T.float64)
        elif key == "mu":
            state[key] = T.tensor(1.0, dtype=T.float64)
        elif key == "mu_product":
            state[key] = T.tensor(1.0, requires_grad=True, dtype=T.float64)
        elif key == "grad_avg":
            state[key] = (1e-2 * rand(T, size)).detach().requires_grad_()
        else:
            state[key] = rand(T, size)
    return state


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_differentiable_optimizer(T, O, name):
    T.manual_seed(0)
    kwargs, keys = DIFFERENTIABLE[name]
    p, grad = rand(T, 10), rand(T, 10)
    state = differentiable_state(T, keys)
    cls = getattr(O, name.split("-")[0])
    assert T.autograd.gradcheck(functools.partial(diff_fn, T),
                                (p, grad, state, cls, {**kwargs, "differentiable": True}, *state.values()))


def multistep_hyperparams_fn(T, params, grad, state, opt_class, kwargs, *ignored):
    """Two steps on ½(x Σ params - y)², then the loss as a function of the Tensor hyperparameters."""
    params = params.clone()
    params.grad = grad
    state = {k: v.clone() if hasattr(v, "clone") else v for k, v in state.items()}
    kwargs = dict(kwargs)
    if "beta1" in kwargs:
        kwargs["betas"] = (kwargs.pop("beta1"), kwargs.pop("beta2"))
    kwargs = {k: v.clone() if hasattr(v, "clone") else v for k, v in kwargs.items()}
    hyper = [v for v in kwargs.values() if hasattr(v, "requires_grad") and v.requires_grad] + \
        list(kwargs.get("betas", ()))
    optimizer = opt_class([params], **kwargs)
    optimizer.state[params].update(state)
    x, y = T.tensor([1.0], dtype=T.float64), T.tensor([2.0], dtype=T.float64)
    for _ in range(2):
        loss = ((x * params.sum() - y) ** 2).mean()
        loss.backward(inputs=(params,), create_graph=True)
        optimizer.step()
        optimizer.zero_grad()
    loss.backward(inputs=tuple(hyper), create_graph=True)
    assert all(h.grad is not None for h in hyper)
    return (loss,) + tuple(v for v in optimizer.state[params].values()
                           if hasattr(v, "requires_grad") and v.requires_grad) + tuple(hyper)


HYPER = [("Adam", ["lr"]), ("Adam", ["weight_decay"]), ("Adam", ["beta1", "beta2", "lr"]),
         ("Adam", ["lr", "weight_decay", "beta1", "beta2"]), ("AdamW", ["lr"]), ("AdamW", ["weight_decay"]),
         ("AdamW", ["beta1", "beta2"]), ("AdamW", ["lr", "weight_decay", "beta1", "beta2"]),
         ("SGD", ["lr"]), ("SGD", ["weight_decay"]), ("SGD", ["weight_decay", "lr"])]


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize("name, hyper", HYPER, ids=[f"{n}-{'+'.join(h)}" for n, h in HYPER])
def test_differentiable_hyperparameters(T, O, name, hyper):
    """Gradients of the loss after two steps with respect to lr, weight_decay and betas given as Tensors
    (on 5 numbers a tensor, where PyTorch's test takes 10: the finite differences cost one step each)."""
    T.manual_seed(0)
    values_of = {"lr": 0.001, "weight_decay": 0.999 if name != "SGD" else 0.9, "beta1": 0.9, "beta2": 0.999}
    kwargs = {k: T.tensor(values_of[k], requires_grad=True, dtype=T.float64) for k in hyper}
    kwargs["differentiable"] = True
    params, grad = rand(T, 5), rand(T, 5)
    keys = ["momentum_buffer"] if name == "SGD" else ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    state = differentiable_state(T, keys, size=5)
    assert T.autograd.gradcheck(functools.partial(multistep_hyperparams_fn, T),
                                (params, grad, state, getattr(O, name), kwargs, *state.values(),
                                 *kwargs.values()))


# ---- swa_utils (PyTorch's test/optim/test_swa_utils.py) ----

def small_net(N):
    return N.Sequential(N.Conv2d(1, 5, kernel_size=3), N.ReLU(), N.MaxPool2d(kernel_size=2),
                        N.BatchNorm2d(5, momentum=0.3), N.Conv2d(5, 2, kernel_size=3), N.ReLU(),
                        N.Linear(5, 5), N.ReLU(), N.Linear(5, 10))


@pytest.mark.parametrize("ema", [True, False])
def test_averaged_model(T, O, N, ema):
    T.manual_seed(0)
    swa = O.swa_utils
    dnn = small_net(N)
    decay = 0.999
    averaged_dnn = swa.AveragedModel(dnn, multi_avg_fn=swa.get_ema_multi_avg_fn(decay) if ema
                                     else swa.get_swa_multi_avg_fn())
    expected = [np.zeros(tuple(p.shape)) for p in dnn.parameters()]
    n_updates = 10
    for i in range(n_updates):
        for p, p_avg in zip(dnn.parameters(), expected):
            p.detach().add_(T.randn_like(p))
            if ema:
                p_avg += values(p) * decay ** (n_updates - i - 1) * ((1 - decay) if i > 0 else 1.0)
            else:
                p_avg += values(p) / n_updates
        averaged_dnn.update_parameters(dnn)
    for p_avg, p_swa in zip(expected, averaged_dnn.parameters()):
        np.testing.assert_allclose(values(p_swa), p_avg, rtol=1e-4, atol=1e-5)
    assert int(averaged_dnn.n_averaged) == n_updates


def test_averaged_model_state_dict(T, O, N):
    T.manual_seed(0)
    dnn = N.Sequential(N.Conv2d(1, 5, kernel_size=3), N.Linear(5, 10))
    averaged, averaged2 = O.swa_utils.AveragedModel(dnn), O.swa_utils.AveragedModel(dnn)
    for _ in range(10):
        for p in dnn.parameters():
            p.detach().add_(T.randn_like(p))
        averaged.update_parameters(dnn)
    averaged2.load_state_dict(averaged.state_dict())
    for p, p2 in zip(averaged.parameters(), averaged2.parameters()):
        np.testing.assert_array_equal(values(p), values(p2))
    assert int(averaged.n_averaged) == int(averaged2.n_averaged) == 10


def test_averaged_model_default_avg_fn_picklable(T, O, N):
    dnn = N.Sequential(N.Conv2d(1, 5, kernel_size=3), N.BatchNorm2d(5), N.Linear(5, 5))
    pickle.dumps(O.swa_utils.AveragedModel(dnn))


@pytest.mark.parametrize("use_multi_avg_fn", [True, False])
@pytest.mark.parametrize("use_buffers", [True, False])
def test_averaged_model_exponential(T, O, N, use_multi_avg_fn, use_buffers):
    T.manual_seed(0)
    dnn = N.Sequential(N.Conv2d(1, 5, kernel_size=3), N.BatchNorm2d(5, momentum=0.3), N.Linear(5, 10))
    decay = 0.9
    if use_multi_avg_fn:
        averaged = O.swa_utils.AveragedModel(dnn, multi_avg_fn=O.swa_utils.get_ema_multi_avg_fn(decay),
                                             use_buffers=use_buffers)
    else:
        averaged = O.swa_utils.AveragedModel(dnn, avg_fn=lambda p_avg, p, n: decay * p_avg + (1 - decay) * p,
                                             use_buffers=use_buffers)
    watched = list(itertools.chain(dnn.parameters(), dnn.buffers())) if use_buffers else list(dnn.parameters())
    watched = [p for p in watched if p.dim() > 0]
    expected = None
    for i in range(10):
        for p in watched:
            p.detach().add_(T.randn_like(p))
        now = [values(p).astype(np.float64) for p in watched]
        expected = now if i == 0 else [e * decay + n * (1 - decay) for e, n in zip(expected, now)]
        averaged.update_parameters(dnn)
    if use_buffers:
        got = [p for p in itertools.chain(averaged.module.parameters(), averaged.module.buffers()) if p.dim() > 0]
    else:
        got = list(averaged.parameters())
        for b, b_swa in zip(dnn.buffers(), averaged.module.buffers()):
            np.testing.assert_array_equal(values(b), values(b_swa))
    for e, g in zip(expected, got):
        np.testing.assert_allclose(values(g), e, rtol=1e-5, atol=1e-5)


class SWATestDNN:
    @staticmethod
    def make(N, input_features):
        class Net(N.Module):
            def __init__(self):
                super().__init__()
                self.n_features = 100
                self.fc1 = N.Linear(input_features, self.n_features)
                self.bn = N.BatchNorm1d(self.n_features)

            def compute_preactivation(self, x):
                return self.fc1(x)

            def forward(self, x):
                return self.bn(self.fc1(x))

        return Net()


class SWATestCNN:
    @staticmethod
    def make(N, input_channels):
        class Net(N.Module):
            def __init__(self):
                super().__init__()
                self.n_features = 10
                self.conv1 = N.Conv2d(input_channels, self.n_features, kernel_size=3, padding=1)
                self.bn = N.BatchNorm2d(self.n_features, momentum=0.3)

            def compute_preactivation(self, x):
                return self.conv1(x)

            def forward(self, x):
                return self.bn(self.conv1(x))

        return Net()


def check_update_bn(T, O, net, dl_x, dl_xy):
    total, sums, squares = 0, np.zeros(net.n_features), np.zeros(net.n_features)
    with T.no_grad():
        for (x,) in dl_x:
            pre = values(net.compute_preactivation(x)).astype(np.float64)
            if pre.ndim == 4:
                pre = pre.transpose(0, 2, 3, 1)
            pre = pre.reshape(-1, net.n_features)
            total += pre.shape[0]
            sums += pre.sum(0)
            squares += (pre**2).sum(0)
    mean, var = sums / total, squares / total - (sums / total) ** 2

    def reset(module):
        if hasattr(module, "running_mean") and module.running_mean is not None:
            module.running_mean = T.zeros_like(module.running_mean)
            module.running_var = T.ones_like(module.running_var)

    for loader in (dl_xy, dl_x):
        net.apply(reset)
        O.swa_utils.update_bn(loader, net)
        np.testing.assert_allclose(values(net.bn.running_mean), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(values(net.bn.running_var), var, rtol=0, atol=1e-1)


@pytest.mark.parametrize("kind", ["dnn", "cnn"])
def test_update_bn(T, O, N, kind):
    T.manual_seed(0)
    data = T.utils.data
    if kind == "dnn":  # (50 samples, where PyTorch's test takes 100)
        x = T.rand(50, 5)
        net = SWATestDNN.make(N, 5)
    else:
        x = T.rand(50, 3, 5, 5)
        net = SWATestCNN.make(N, 3)
    y = T.rand(50)
    dl_x = data.DataLoader(data.TensorDataset(x), batch_size=5, shuffle=True)
    dl_xy = data.DataLoader(data.TensorDataset(x, y), batch_size=5, shuffle=True)
    net.train()
    check_update_bn(T, O, net, dl_x, dl_xy)
    assert net.training


def test_update_bn_keeps_eval_mode_and_momentum(T, O, N):
    T.manual_seed(0)
    data = T.utils.data
    net = SWATestCNN.make(N, 3)
    net.eval()
    O.swa_utils.update_bn(data.DataLoader(data.TensorDataset(T.rand(20, 3, 5, 5)), batch_size=5), net)
    assert not net.training
    assert net.bn.momentum == 0.3


def test_swalr_trains_with_averaged_model(T, O, N):
    """The usual SWA loop: SWALR anneals to swa_lr, AveragedModel averages, update_bn refreshes."""
    T.manual_seed(0)
    model = N.Sequential(N.Linear(3, 4), N.BatchNorm1d(4), N.Linear(4, 1))
    optimizer = O.SGD(model.parameters(), lr=0.1)
    swa_model = O.swa_utils.AveragedModel(model)
    swa_scheduler = O.swa_utils.SWALR(optimizer, swa_lr=0.05, anneal_epochs=2, anneal_strategy="linear")
    x, y = T.randn(16, 3), T.randn(16, 1)
    lrs = []
    for _ in range(4):
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
        swa_model.update_parameters(model)
        swa_scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [0.075, 0.05, 0.05, 0.05], rtol=1e-12)
    data = T.utils.data
    O.swa_utils.update_bn(data.DataLoader(data.TensorDataset(x), batch_size=8), swa_model)
    assert int(swa_model.n_averaged) == 4


# ---- trajectories against torch.optim (float64, 20 steps): every optimizer, the flags above ----

TRAJECTORY_CONFIGS = (
    ALL_CONFIGS
    + [(n, {**k, "maximize": True}) for n, k in ALL_CONFIGS if n in TAKES_MAXIMIZE and not k.get("maximize")][:13]
    + [("SGD", dict(lr=1e-2, momentum=0.9, foreach=True)), ("SGD", dict(lr=1e-2, fused=True)),
       ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True, differentiable=False)),
       ("Adam", dict(lr=1e-2, foreach=True)), ("Adam", dict(lr=1e-2, fused=True, amsgrad=True)),
       ("Adam", dict(lr=1e-2, fused=True, weight_decay=0.1)),
       ("AdamW", dict(lr=1e-2, fused=True)), ("AdamW", dict(lr=1e-2, foreach=True, amsgrad=True, maximize=True)),
       ("Adagrad", dict(lr=1e-1, fused=True)), ("Adagrad", dict(lr=1e-1, foreach=True, lr_decay=1e-2)),
       ("RMSprop", dict(lr=1e-2, foreach=True, centered=True, momentum=0.5)),
       ("NAdam", dict(lr=1e-2, foreach=True, decoupled_weight_decay=True, weight_decay=0.1)),
       ("RAdam", dict(lr=1e-2, foreach=True)), ("ASGD", dict(lr=1e-2, foreach=True, t0=3)),
       ("Adadelta", dict(foreach=True, weight_decay=0.1)), ("Adamax", dict(lr=1e-2, foreach=True, maximize=True)),
       ("Rprop", dict(lr=1e-2, foreach=True, maximize=True)), ("Adafactor", dict(lr=1e-2, foreach=False)),
       ("Adam", dict(lr="tensor")), ("SGD", dict(lr="tensor", momentum=0.9)),
       ("Muon", dict(lr=1e-2)), ("Muon", dict(lr=1e-2, nesterov=False, weight_decay=0.1)),
       ("LBFGS", dict(lr=1)), ("LBFGS", dict(lr=1, history_size=3, max_iter=4)),
       ("LBFGS", dict(lr=1, line_search_fn="strong_wolfe")),
       ("LBFGS", dict(lr=1, line_search_fn="strong_wolfe", history_size=5, max_iter=10, tolerance_grad=1e-9))])


def trajectory(lib, optim_module, name, kwargs, steps=20):
    """Parameters and state after `steps` steps on a fixed smooth problem, float64 throughout."""
    rng = np.random.default_rng(6)
    starts = [rng.standard_normal((4, 3)), rng.standard_normal((3, 2))] if name == "Muon" else \
        [rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal(())]
    params = [lib.tensor(s, requires_grad=True) for s in starts]
    kwargs = dict(kwargs)
    if kwargs.get("lr") == "tensor":
        kwargs["lr"] = lib.tensor(0.01, dtype=lib.float64)
    optimizer = getattr(optim_module, name)(params, **kwargs)
    targets = [lib.tensor(rng.standard_normal(np.shape(s))) for s in starts]

    def closure():
        optimizer.zero_grad()
        loss = sum(((p - t) ** 2 * 0.5 + 0.1 * (3 * p).cos()).sum() for p, t in zip(params, targets))
        loss.backward()
        return loss

    losses = []
    for _ in range(steps):
        if name == "LBFGS":
            losses.append(float(optimizer.step(closure)))
        else:
            losses.append(float(closure()))
            optimizer.step()
    state = {i: {k: (values(v) if hasattr(v, "detach") else v) for k, v in s.items()}
             for i, s in optimizer.state_dict()["state"].items()}
    return [values(p) for p in params], state, losses


@pytest.mark.torch
@pytest.mark.parametrize("config", TRAJECTORY_CONFIGS, ids=config_id)
def test_trajectory_matches_torch(config, monkeypatch):
    torch = pytest.importorskip("torch")
    import autograd
    import optim

    name, kwargs = config
    if name == "Muon":  # PyTorch's Newton–Schulz runs in bfloat16, ours in the gradient's dtype (muon.py): compare
        # with PyTorch's algorithm with that cast taken out (tests/test_optim_muon.py checks the bfloat16 one)
        monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self, *args, **kwargs: self.clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = trajectory(autograd, optim, name, kwargs)
        theirs = trajectory(torch, torch.optim, name, kwargs)
    for got, expected in zip(ours[0], theirs[0]):
        np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-7, atol=1e-9)
    assert ours[1].keys() == theirs[1].keys()
    for i in ours[1]:
        assert ours[1][i].keys() == theirs[1][i].keys(), (ours[1][i].keys(), theirs[1][i].keys())
        for key in ours[1][i]:
            got, expected = ours[1][i][key], theirs[1][i][key]
            if isinstance(expected, (list, tuple)):  # LBFGS's histories
                assert len(got) == len(expected), key
                for a, b in zip(got, expected):
                    if b is None:
                        assert a is None, key
                    else:
                        np.testing.assert_allclose(values(a), values(b), rtol=1e-6, atol=1e-9, err_msg=key)
            elif expected is None or isinstance(expected, str):
                assert got == expected, key
            else:
                np.testing.assert_allclose(np.asarray(values(got), dtype=float), np.asarray(values(expected),
                                           dtype=float), rtol=1e-6, atol=1e-9, err_msg=key)


def test_user_optimizer_subclass(T, O):
    """An optimizer of one's own: defaults, param_groups, state per parameter, a step under no_grad with a
    closure, hooks and the state dict, all from the base class."""
    class SignSGD(O.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, dict(lr=lr))

        @T.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with T.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    self.state[p]["steps"] = self.state[p].get("steps", 0) + 1
                    p.add_(p.grad.sign(), alpha=-group["lr"])
            return loss

    w = new_param(T, np.array([1.0, -2.0, 0.5]))
    optimizer = SignSGD([w], lr=0.25)
    seen = []
    optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append("post"))

    def closure():
        optimizer.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert float(optimizer.step(closure)) == 5.25
    np.testing.assert_allclose(values(w), [0.75, -1.75, 0.25])
    assert seen == ["post"] and optimizer.state[w]["steps"] == 1
    assert optimizer.state_dict()["state"] == {0: {"steps": 1}}
    assert optimizer.defaults == {"lr": 0.25}


def test_load_state_dict_clones_tensor_state(T, O, N, request):
    """test_optimizer_state_isolation.py: a loaded optimizer's state is its own, not the saver's."""
    if T.__name__ == "torch":
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "PyTorch 2.13 (installed here) loads a state Tensor of the right dtype as it is, so two optimizers "
            "share one momentum buffer; later PyTorch copies it, as chainrule does")))
    p1, p2 = N.Parameter(T.ones(2)), N.Parameter(T.ones(2))
    opt1, opt2 = O.SGD([p1], lr=0.1, momentum=0.9), O.SGD([p2], lr=0.1, momentum=0.9)
    p1.grad = T.ones_like(p1)
    opt1.step()
    opt2.load_state_dict(opt1.state_dict())
    state1, state2 = opt1.state[p1]["momentum_buffer"], opt2.state[p2]["momentum_buffer"]
    assert state1.data_ptr() != state2.data_ptr()
    before = values(state1).copy()
    p2.grad = T.full_like(p2, 2.0)
    opt2.step()
    np.testing.assert_array_equal(values(state1), before)


def test_state_dict_preserves_alias_structure_without_sharing_storage(T, O, N):
    """test_optimizer_state_copy_aliasing.py: two state entries that are one Tensor are one Tensor in the
    state dict, a copy (chainrule's state dict is a snapshot; PyTorch 2.13's hands out the state Tensors
    themselves, later PyTorch copies them as here)."""
    p = N.Parameter(T.tensor(1.0))
    optimizer = O.SGD([p], lr=0.1, momentum=0.9)
    p.grad = T.tensor(1.0)
    optimizer.step()
    state = optimizer.state[p]
    state["alias"] = state["momentum_buffer"]
    exported = optimizer.state_dict()["state"][0]
    assert exported["momentum_buffer"].data_ptr() == exported["alias"].data_ptr()
    if T.__name__ == "autograd":
        assert exported["momentum_buffer"].data_ptr() != state["momentum_buffer"].data_ptr()
