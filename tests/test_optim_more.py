"""The optimizers added in version 2 (NAdam, RAdam, Adamax, ASGD, LBFGS, Rprop) against
torch.optim in float64, the new keywords, and the rule that optimizers write
parameters and state only through the Tensor's in-place methods."""

import numpy as np
import pytest

import autograd
import optim
from autograd import Tensor

from .test_optim import rosenbrock_like, rosenbrock_like_gradient, trajectory

CONFIGS = {
    "NAdam": [dict(lr=0.01), dict(lr=0.01, betas=(0.8, 0.99), momentum_decay=0.01),
              dict(lr=0.01, weight_decay=0.1), dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
              dict(lr=0.005, maximize=True, eps=1e-6)],
    "RAdam": [dict(lr=0.01), dict(lr=0.01, betas=(0.8, 0.9)), dict(lr=0.01, weight_decay=0.1),
              dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), dict(lr=0.005, maximize=True)],
    "Adamax": [dict(lr=0.01), dict(lr=0.01, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.1),
               dict(lr=0.005, maximize=True)],
    "ASGD": [dict(lr=0.01), dict(lr=0.01, lambd=1e-2, alpha=0.5, t0=10, weight_decay=0.1),
             dict(lr=0.001, maximize=True, t0=3)],
    "Adam": [dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), dict(lr=0.01, fused=True),
             dict(lr=0.01, foreach=True)],  # (capturable=True on the CPU: test_probe33_small_fixes.py)
    "SGD": [dict(lr=0.01, momentum=0.9, fused=True)],
    "Rprop": [dict(lr=0.01), dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-4, 2.0)), dict(lr=0.01, maximize=True)],
}
CASES = [(name, config) for name, configs in CONFIGS.items() for config in configs]
IDS = [f"{name}-{i}" for name, configs in CONFIGS.items() for i in range(len(configs))]


@pytest.mark.torch
@pytest.mark.parametrize("name, config", CASES, ids=IDS)
def test_trajectory_matches_torch(name, config):
    import torch

    theirs = dict(config, foreach=False) if not config.get("fused") else config
    np.testing.assert_allclose(trajectory(None, name, config, steps=60),
                               trajectory(torch, name, theirs, steps=60), rtol=1e-10, atol=1e-10)


@pytest.mark.torch
def test_state_matches_torch_after_steps():
    """State entries have PyTorch's names, shapes and dtypes (step and mu_product in the scalar dtype)."""
    import torch

    for name, config in [("NAdam", dict(lr=0.01)), ("ASGD", dict(t0=1)), ("Adam", dict(amsgrad=True))]:
        w = Tensor(np.ones(3), requires_grad=True)
        v = torch.ones(3, dtype=torch.float64, requires_grad=True)
        ours, theirs = getattr(optim, name)([w], **config), getattr(torch.optim, name)([v], **config)
        for _ in range(3):
            w.grad, v.grad = Tensor(np.arange(3.0)), torch.arange(3.0, dtype=torch.float64)
            ours.step()
            theirs.step()
        mine, reference = ours.state[w], theirs.state[v]
        assert sorted(mine) == sorted(reference)
        for key in mine:
            assert str(mine[key].dtype) == str(reference[key].dtype).replace("torch.", ""), (name, key)
            np.testing.assert_allclose(mine[key].numpy(), reference[key].numpy(), rtol=1e-12)


def rosenbrock(x):
    """f(x, y) = (1 - x)² + 100 (y - x²)²: the classic curved valley, minimum at (1, 1)."""
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def rosenbrock_and_gradient(x):
    inner = x[1] - x[0] ** 2
    return rosenbrock(x), np.array([-2 * (1 - x[0]) - 400 * x[0] * inner, 200 * inner])


A, B = np.random.default_rng(3).standard_normal((8, 4)), np.random.default_rng(4).standard_normal(8)


def least_squares_and_gradient(x):
    residual = A @ x - B
    return residual @ residual, 2 * A.T @ residual


PROBLEMS = {"rosenbrock": (np.array([-1.5, 2.0]), rosenbrock_and_gradient),
            "least_squares": (np.zeros(4), least_squares_and_gradient)}


def lbfgs_path(module, problem, steps, engine_gradient=False, **config):
    """x after each LBFGS step, the losses, and the counts of evaluations and iterations.
    The closure gives the loss and gradient in closed form (NumPy), so that both
    libraries see bit-identical values: the engines' own last-bit differences would
    otherwise grow over dozens of iterations on Rosenbrock's valley. With
    engine_gradient, the closure backpropagates through the engine as users write it."""
    make = autograd.tensor if module is None else module.tensor
    if problem == "two_parameters":  # test_optim's loss over a (2, 3) weight and a (3,) bias
        rng = np.random.default_rng(0)
        params = [make(rng.standard_normal((2, 3)) * 0.5, requires_grad=True),
                  make(rng.standard_normal(3), requires_grad=True)]
    else:
        params = [make(PROBLEMS[problem][0].copy(), requires_grad=True)]
    optimizer = (optim if module is None else module.optim).LBFGS(params, **config)

    def closure():
        optimizer.zero_grad()
        if engine_gradient:
            loss = rosenbrock(params[0])
            loss.backward()
            return loss
        values = [p.detach().numpy() for p in params]
        if problem == "two_parameters":
            loss, grads = float(rosenbrock_like([Tensor(v) for v in values])), rosenbrock_like_gradient(*values)
        else:
            loss, grad = PROBLEMS[problem][1](values[0])
            grads = [grad]
        for p, g in zip(params, grads):
            p.grad = make(g)
        return make(loss)

    path, losses = [], []
    for _ in range(steps):
        losses.append(float(optimizer.step(closure).detach()))
        path.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
    state = optimizer.state[params[0]]
    return np.array(path), np.array(losses), state["func_evals"], state["n_iter"]


# (problem, options, steps). LBFGS on Rosenbrock's valley, without a line search above all, amplifies
# last-bit differences about tenfold every few iterations, and PyTorch's add_(x, alpha=a) rounds once
# (a fused multiply-add) where NumPy rounds twice: so the Rosenbrock cases compare as many iterations
# as stay within 1e-10 (40 at lr=1: 2 steps of 20), while the convex least squares runs for 6 steps.
LBFGS_CASES = [("rosenbrock", dict(), 2), ("rosenbrock", dict(line_search_fn="strong_wolfe"), 6),
               ("rosenbrock", dict(lr=0.5, history_size=3, max_iter=7), 5),
               ("rosenbrock", dict(line_search_fn="strong_wolfe", history_size=2, max_iter=10, max_eval=12), 2),
               ("rosenbrock", dict(line_search_fn="strong_wolfe", tolerance_change=1e-3), 3),
               ("least_squares", dict(), 6), ("least_squares", dict(line_search_fn="strong_wolfe", lr=0.8), 6),
               ("least_squares", dict(history_size=1, max_iter=4), 6),
               ("two_parameters", dict(max_iter=10), 2),
               ("two_parameters", dict(line_search_fn="strong_wolfe", history_size=5), 2)]


@pytest.mark.torch
@pytest.mark.parametrize("problem, config, steps", LBFGS_CASES,
                         ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(LBFGS_CASES)])
def test_lbfgs_matches_torch(problem, config, steps):
    import torch

    ours = lbfgs_path(None, problem, steps, **config)
    theirs = lbfgs_path(torch, problem, steps, **config)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10, atol=1e-10)
    assert ours[2:] == theirs[2:]  # the same number of evaluations and iterations


def test_lbfgs_with_strong_wolfe_solves_rosenbrock():
    path, losses, _, _ = lbfgs_path(None, "rosenbrock", 10, engine_gradient=True, line_search_fn="strong_wolfe")
    np.testing.assert_allclose(path[-1], [1.0, 1.0], atol=1e-4)
    assert losses[-1] < 1e-9 and losses[0] > 1


def test_lbfgs_errors():
    x = Tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="doesn't support per-parameter options"):
        optim.LBFGS([{"params": [x]}, {"params": [Tensor([2.0], requires_grad=True)]}])
    optimizer = optim.LBFGS([x], line_search_fn="backtracking")

    def closure():
        optimizer.zero_grad()
        loss = (x * x).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        optimizer.step(closure)


def test_cubic_interpolation_finds_a_cubics_minimum():
    from optim.lbfgs import cubic_interpolate

    # f(x) = x³ - 3x has its local minimum at x = 1; f' = 3x² - 3
    f, df = (lambda x: x**3 - 3 * x), (lambda x: 3 * x**2 - 3)
    assert cubic_interpolate(0.0, f(0.0), df(0.0), 2.0, f(2.0), df(2.0)) == pytest.approx(1.0)
    assert cubic_interpolate(2.0, f(2.0), df(2.0), 0.0, f(0.0), df(0.0)) == pytest.approx(1.0)
    assert cubic_interpolate(0.0, f(0.0), df(0.0), 2.0, f(2.0), df(2.0), bounds=(1.5, 3.0)) == 1.5


@pytest.mark.parametrize("name", ["NAdam", "RAdam", "Adamax", "ASGD", "LBFGS", "Rprop"])
def test_resuming_from_a_state_dict_gives_the_same_trajectory(name, tmp_path):
    config = CONFIGS.get(name, [dict(line_search_fn="strong_wolfe", history_size=3)])[-1]

    def run(split):
        rng = np.random.default_rng(0)
        params = [Tensor(rng.standard_normal((2, 3)), requires_grad=True),
                  Tensor(rng.standard_normal(3), requires_grad=True)]
        optimizer = getattr(optim, name)(params, **config)

        def closure():
            optimizer.zero_grad()
            loss = rosenbrock_like(params)
            loss.backward()
            return loss

        for step in range(8):
            if step == split:
                path = tmp_path / "optimizer.npz"
                autograd.save(optimizer.state_dict(), path)
                optimizer = getattr(optim, name)(params)
                optimizer.load_state_dict(autograd.load(path))
            optimizer.step(closure)
        return np.concatenate([p.numpy().ravel() for p in params])

    if name == "NAdam":  # its float32 mu_product comes back in the parameter's dtype, as PyTorch's does
        np.testing.assert_allclose(run(split=None), run(split=3), rtol=1e-6)
    else:
        np.testing.assert_array_equal(run(split=None), run(split=3))


def test_state_dict_is_a_snapshot_and_keeps_scalar_state_dtypes():
    w = Tensor(np.ones(2), requires_grad=True)
    optimizer = optim.NAdam([w], lr=0.1)
    w.grad = Tensor(np.ones(2))
    optimizer.step()
    saved = optimizer.state_dict()
    optimizer.step()
    assert saved["state"][0]["step"].item() == 1.0 and optimizer.state[w]["step"].item() == 2.0
    optimizer.load_state_dict(saved)
    assert optimizer.state[w]["step"].dtype == np.float32  # PyTorch's scalar dtype, not the parameter's
    assert optimizer.state[w]["mu_product"].dtype == np.float64  # loaded in the parameter's, as PyTorch's
    assert optimizer.state[w]["exp_avg"].dtype == np.float64


class WatchedTensor(Tensor):
    """A Tensor that records every in-place method called on it."""

    __slots__ = ()
    calls = []


def watch(name):
    original = getattr(Tensor, name)

    def method(self, *args, **kwargs):
        WatchedTensor.calls.append(name)
        return original(self, *args, **kwargs)

    return method


INPLACE = ["add_", "sub_", "mul_", "div_", "addcmul_", "addcdiv_", "lerp_", "sqrt_", "copy_", "clamp_", "neg_",
           "zero_", "fill_"]
for _name in INPLACE:
    setattr(WatchedTensor, _name, watch(_name))


@pytest.mark.parametrize("name, config", [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
                                          ("Adam", dict(amsgrad=True)), ("AdamW", {}),
                                          ("RMSprop", dict(centered=True, momentum=0.5)),
                                          ("Adagrad", {}), ("Adadelta", {}), ("NAdam", {}), ("RAdam", {}),
                                          ("Adamax", {}), ("ASGD", {})])
def test_parameters_change_through_in_place_methods_and_their_version_moves(name, config):
    w = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    w.__class__ = WatchedTensor
    optimizer = getattr(optim, name)([w], **config)
    for _ in range(2):
        WatchedTensor.calls.clear()
        version = w._version
        w.grad = Tensor(np.array([0.5, 0.25]))
        before = w.numpy().copy()
        optimizer.step()
        assert WatchedTensor.calls, f"{name} changed its parameter without an in-place method"
        assert w._version > version
        assert not np.array_equal(before, w.numpy())
        assert all(isinstance(v, Tensor) for v in optimizer.state[w].values())


def test_a_graph_that_saved_a_parameter_refuses_backward_after_a_step():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    optimizer = optim.Adam([w])
    loss = (w * w).sum()  # saves w
    w.grad = Tensor(np.ones(2))
    optimizer.step()
    with pytest.raises(RuntimeError):
        loss.backward()


@pytest.mark.parametrize("make, error, message", [
    (lambda p: optim.NAdam(p, momentum_decay=-1), ValueError, "Invalid momentum_decay value: -1"),
    (lambda p: optim.NAdam(p, betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1: 1.0"),
    (lambda p: optim.RAdam(p, eps=-1), ValueError, "Invalid epsilon value: -1"),
    (lambda p: optim.Adamax(p, weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    (lambda p: optim.ASGD(p, lr=-1), ValueError, "Invalid learning rate: -1"),
    (lambda p: optim.Adam(p, fused=True, foreach=True), RuntimeError, "`fused` and `foreach` cannot be `True`"),
])
def test_bad_arguments_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make([Tensor([1.0], requires_grad=True)])


@pytest.mark.torch
@pytest.mark.parametrize("make", [lambda m, p: m.NAdam(p, momentum_decay=-1), lambda m, p: m.RAdam(p, eps=-1),
                                  lambda m, p: m.Adamax(p, betas=(1.5, 0.9)), lambda m, p: m.ASGD(p, lr=-1)])
def test_errors_are_torchs(make):
    import torch

    with pytest.raises(ValueError) as ours:
        make(optim, [Tensor([1.0], requires_grad=True)])
    with pytest.raises(ValueError) as theirs:
        make(torch.optim, [torch.ones(1, requires_grad=True)])
    assert str(ours.value).startswith(str(theirs.value))


def test_zero_grad_without_none_zeroes_the_same_tensor():
    w = Tensor(np.ones(3), requires_grad=True)
    optimizer = optim.RAdam([w])
    w.grad = Tensor(np.arange(3.0))
    grad = w.grad
    optimizer.zero_grad(set_to_none=False)
    assert w.grad is grad and not w.grad.numpy().any()
    optimizer.zero_grad()
    assert w.grad is None


def test_a_custom_optimizer_written_for_pytorch_runs():
    """The pattern of PyTorch's tutorials: subclass Optimizer, write step() under no_grad with state[p]."""

    class SignSGD(optim.Optimizer):
        def __init__(self, params, step_size=0.1):
            super().__init__(params, dict(step_size=step_size))

        @autograd.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if len(state) == 0:
                        state["calls"] = 0
                    state["calls"] += 1
                    p.add_(p.grad.sign(), alpha=-group["step_size"])

    w = Tensor(np.array([1.0, -1.0]), requires_grad=True)
    optimizer = SignSGD([w], step_size=0.25)
    (w * w).sum().backward()
    optimizer.step()
    np.testing.assert_allclose(w.numpy(), [0.75, -0.75])
    assert optimizer.state[w]["calls"] == 1


def test_rprop_by_hand():
    # f(w) = w² from w = 1: the gradient keeps its sign, so the step grows by η+ each time
    # (0.1, 0.12, 0.144); then a step that crosses the minimum flips it: the step shrinks by η-
    # and that step is skipped
    w = Tensor(np.array([1.0]), requires_grad=True)
    optimizer = optim.Rprop([w], lr=0.1, etas=(0.5, 1.2))
    seen = []
    for _ in range(3):
        optimizer.zero_grad()
        (w * w).sum().backward()
        optimizer.step()
        seen.append(float(w.item()))
    np.testing.assert_allclose(seen, [0.9, 0.78, 0.636])
    np.testing.assert_allclose(optimizer.state[w]["step_size"].numpy(), [0.144])
    with pytest.raises(ValueError, match="eta"):
        optim.Rprop([w], etas=(1.5, 1.2))
