# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Optimisers and learning-rate schedulers beyond the common path, as training programs use them, run as
tests/probe13_optim_common.py says. Optimisers written as code: functional optimisers as torch.distributed.optim
writes them (``torch.optim._functional.adam``/``sgd`` over state the caller keeps) and every other functional step
(``torch.optim.adagrad.adagrad``, ...); an AdaBelief written from PyTorch's adamw.py
(``_use_grad_for_differentiable``, ``_get_value``, ``_get_scalar_dtype``, ``_default_to_fused_or_foreach``,
``_view_as_real``, ``_to_scalar``) with a complex parameter, and the deprecated ``_cuda_graph_capture_health_check``;
a custom step that counts in ``self.state["global_step"]`` (a key that is no parameter), saved and resumed, and
load_state_dict's errors; steepest descent with PyTorch's strong-Wolfe line search imported from torch.optim.lbfgs."""

import importlib
import math

import numpy as np
import pytest

from .probe13_optim_common import TORCH
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Functional optimizer steps: torch.optim.sgd.sgd, torch.optim._functional.adam, ... with state kept by the caller
# ----------------------------------------------------------------------------------------------


def functional_optimizers(m):
    """A functional optimizer as torch.distributed.optim writes them (_FunctionalAdam, _FunctionalSGD): the
    state in a dict of its own, each step a call of the functional form on lists."""
    torch = m.torch
    F = m.optim._functional

    class FunctionalAdam:
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                     maximize=False):
            self.defaults = {"lr": lr, "eps": eps, "beta1": betas[0], "beta2": betas[1],
                             "weight_decay": weight_decay}
            self.amsgrad, self.maximize = amsgrad, maximize
            self.state = torch.jit.annotate(dict[torch.Tensor, dict[str, torch.Tensor]], {})
            self.param_group = {"params": list(params)}

        def step(self, gradients):
            params = self.param_group["params"]
            params_with_grad, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps = [], [], [], [], [], []
            for param, gradient in zip(self.param_group["params"], gradients):
                if gradient is not None:
                    params_with_grad.append(param)
                    grads.append(gradient)
                    if param not in self.state:
                        self.state[param] = {}
                        state = self.state[param]
                        state["step"] = torch.tensor(0.0)
                        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                        if self.amsgrad:
                            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state = self.state[param]
                    exp_avgs.append(state["exp_avg"])
                    exp_avg_sqs.append(state["exp_avg_sq"])
                    if self.amsgrad:
                        max_exp_avg_sqs.append(state["max_exp_avg_sq"])
                    state_steps.append(state["step"])
            with torch.no_grad():
                F.adam(params_with_grad, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                       amsgrad=self.amsgrad, maximize=self.maximize, beta1=self.defaults["beta1"],
                       beta2=self.defaults["beta2"], lr=self.defaults["lr"], weight_decay=self.defaults["weight_decay"],
                       eps=self.defaults["eps"], foreach=False, fused=False, grad_scale=None, found_inf=None,
                       has_complex=False)

    class FunctionalSGD:
        def __init__(self, params, lr=1e-2, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
            self.defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay}
            self.nesterov = nesterov
            self.state = {}
            self.param_group = {"params": list(params)}

        def step(self, gradients):
            params = self.param_group["params"]
            params_with_grad, grads, momentum_buffer_list = [], [], []
            for param, gradient in zip(params, gradients):
                if gradient is not None:
                    params_with_grad.append(param)
                    grads.append(gradient)
                    momentum_buffer_list.append(self.state[param]["momentum_buffer"] if param in self.state
                                                else None)
            with torch.no_grad():
                F.sgd(params_with_grad, grads, momentum_buffer_list, weight_decay=self.defaults["weight_decay"],
                      momentum=self.defaults["momentum"], lr=self.defaults["lr"],
                      dampening=self.defaults["dampening"], nesterov=self.nesterov, maximize=False,
                      foreach=False, fused=False, grad_scale=None, found_inf=None)
            # update momentum_buffers in state
            for i, p in enumerate(params_with_grad):
                state = self.state.setdefault(p, {})
                momentum_buffer = momentum_buffer_list[i]
                if momentum_buffer is not None:
                    state["momentum_buffer"] = momentum_buffer

    return FunctionalAdam, FunctionalSGD


def functional_training(m, weights):
    torch = m.torch
    FunctionalAdam, FunctionalSGD = functional_optimizers(m)
    rng = np.random.default_rng(3)
    X = torch.tensor(rng.standard_normal((32, 4)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 3, 32))
    results = {}
    for name, make in [("adam", lambda p: FunctionalAdam(p, lr=0.01, amsgrad=True, weight_decay=0.01)),
                       ("sgd", lambda p: FunctionalSGD(p, lr=0.1, momentum=0.9, nesterov=True))]:
        model = load(m, m.nn.Sequential(m.nn.Linear(4, 8), m.nn.Tanh(), m.nn.Linear(8, 3)), weights)
        optimizer = make(model.parameters())
        losses = []
        for step in range(6):
            loss = m.F.cross_entropy(model(X), y)
            grads = torch.autograd.grad(loss, list(model.parameters()))
            if step % 2:  # (the last bias without a gradient now and then)
                grads = list(grads[:-1]) + [None]
            optimizer.step(grads)
            losses.append(loss.item())
        results[name] = {"losses": losses, "params": [p.detach() for p in model.parameters()],
                         "state": [{k: v for k, v in optimizer.state[p].items()} for p in model.parameters()]}
    # the functional forms of the other optimizers, one step each on one weight, their state from the caller
    w0 = np.linspace(-1, 1, 6).reshape(2, 3)
    g0 = np.cos(3 * w0)
    for name, state, options in [
        ("adagrad", ["state_sums", "state_steps"], dict(lr=0.1, weight_decay=0.1, lr_decay=0.01, eps=1e-10,
                                                               maximize=False)),
        ("adadelta", ["square_avgs", "acc_deltas", "state_steps"], dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0,
                                                                           maximize=True)),
        ("adamax", ["exp_avgs", "exp_infs", "state_steps"], dict(eps=1e-8, beta1=0.9, beta2=0.999, lr=0.01,
                                                                 weight_decay=0.0)),
        ("asgd", ["axs", "mus", "etas", "state_steps"], dict(lambd=1e-4, lr=0.01, t0=1.0, alpha=0.75,
                                                              weight_decay=0.0)),
        ("nadam", ["exp_avgs", "exp_avg_sqs", "mu_products", "state_steps"],
         dict(beta1=0.9, beta2=0.999, lr=0.01, weight_decay=0.1, momentum_decay=4e-3, eps=1e-8)),
        ("radam", ["exp_avgs", "exp_avg_sqs", "state_steps"], dict(beta1=0.9, beta2=0.999, lr=0.01,
                                                                   weight_decay=0.0, eps=1e-8)),
        ("rmsprop", ["square_avgs", "grad_avgs", "momentum_buffer_list", "state_steps"],
         dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.5, centered=True)),
        ("rprop", ["prevs", "step_sizes", "state_steps"], dict(step_size_min=1e-6, step_size_max=50.0,
                                                               etaminus=0.5, etaplus=1.2)),
        ("adamw", ["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps"],
         dict(amsgrad=False, beta1=0.9, beta2=0.999, lr=0.01, weight_decay=0.01, eps=1e-8, maximize=False)),
    ]:
        w = torch.tensor(w0)
        lists = {}
        for key in state:
            if key == "state_steps":
                lists[key] = [torch.tensor(0.0)]
            elif key in ("mus", "mu_products"):
                lists[key] = [torch.tensor(1.0)]
            elif key == "etas":
                lists[key] = [torch.tensor(options["lr"])]
            elif key == "step_sizes":
                lists[key] = [torch.full_like(w, 0.01)]
            else:
                lists[key] = [torch.zeros_like(w)]
        function = getattr(importlib.import_module(f"{m.optim.__name__}.{name}"), name)  # optim.adagrad.adagrad
        for step in range(3):
            function([w], [torch.tensor(g0 * (1 - step))], *lists.values(), **options)
        results[name] = {"w": w, **{key: values[0] for key, values in lists.items()}}
    return results


def test_functional_optimizers_as_torch_distributed_writes_them():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.Tanh(), m.nn.Linear(8, 3)))
    ours, _ = run_both(functional_training, weights, rtol=1e-5, atol=1e-6)
    assert ours["adam"]["losses"][-1] < ours["adam"]["losses"][0]
    assert ours["adam"]["state"][0]["step"] == 6 and ours["adam"]["state"][-1]["step"] == 3
    assert sorted(ours["sgd"]["state"][0]) == ["momentum_buffer"]
    assert ours["adagrad"]["state_steps"] == 3 and ours["rprop"]["state_steps"] == 3


def test_functional_sgd_puts_the_momentum_buffer_it_makes_in_the_list():
    torch, optim = OURS.torch, OURS.optim
    w = torch.tensor([1.0, -2.0])
    buffers = [None]
    optim.sgd.sgd([w], [torch.tensor([0.5, 0.5])], buffers, weight_decay=0.0, momentum=0.9, lr=0.1, dampening=0.0,
                  nesterov=False, maximize=False)
    np.testing.assert_allclose(buffers[0].numpy(), [0.5, 0.5])  # the first buffer is the gradient
    optim.sgd.sgd([w], [torch.tensor([0.5, 0.5])], buffers, weight_decay=0.0, momentum=0.9, lr=0.1, dampening=0.0,
                  nesterov=False, maximize=False)
    np.testing.assert_allclose(buffers[0].numpy(), [0.95, 0.95])
    np.testing.assert_allclose(w.numpy(), [1.0 - 0.05 - 0.095, -2.0 - 0.05 - 0.095])
    with pytest.raises(RuntimeError, match="state_steps"):
        optim._functional.adam([w], [w], [w], [w], [], [0.0], amsgrad=False, beta1=0.9, beta2=0.9, lr=0.1,
                               weight_decay=0.0, eps=1e-8, maximize=False)


# ----------------------------------------------------------------------------------------------
# An optimizer written from PyTorch's own sources (AdaBelief in the style of torch/optim/adamw.py)
# ----------------------------------------------------------------------------------------------


def adabelief_class(m):
    torch = m.torch
    optimizer_module = importlib.import_module(f"{m.optim.__name__}.optimizer")
    Optimizer = optimizer_module.Optimizer
    _use_grad_for_differentiable = optimizer_module._use_grad_for_differentiable
    _get_value = optimizer_module._get_value
    _get_scalar_dtype = optimizer_module._get_scalar_dtype
    _default_to_fused_or_foreach = optimizer_module._default_to_fused_or_foreach
    _view_as_real = optimizer_module._view_as_real
    _to_scalar = optimizer_module._to_scalar
    _stack_if_compiling = optimizer_module._stack_if_compiling

    class AdaBelief(Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=1e-2, *, maximize=False,
                     foreach=None, differentiable=False):
            if not 0.0 <= lr:
                raise ValueError(f"Invalid learning rate: {lr}")
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                            foreach=foreach, differentiable=differentiable)
            super().__init__(params, defaults)

        def __setstate__(self, state):
            super().__setstate__(state)
            for group in self.param_groups:
                group.setdefault("maximize", False)
                group.setdefault("foreach", None)
                group.setdefault("differentiable", False)
                for p in group["params"]:
                    p_state = self.state.get(p, [])
                    if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                        p_state["step"] = torch.tensor(float(p_state["step"]), dtype=_get_scalar_dtype())

        def _init_group(self, group, params_with_grad, grads, exp_avgs, exp_vars, state_steps):
            has_complex = False
            for p in group["params"]:
                if p.grad is None:
                    continue
                has_complex |= torch.is_complex(p)
                params_with_grad.append(p)
                grads.append(p.grad)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avgs.append(state["exp_avg"])
                exp_vars.append(state["exp_var"])
                state_steps.append(state["step"])
            return has_complex

        @_use_grad_for_differentiable
        def step(self, closure=None):
            self._accelerator_graph_capture_health_check()
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                params_with_grad, grads, exp_avgs, exp_vars, state_steps = [], [], [], [], []
                beta1, beta2 = group["betas"]
                has_complex = self._init_group(group, params_with_grad, grads, exp_avgs, exp_vars, state_steps)
                _, foreach = _default_to_fused_or_foreach(params_with_grad, group["differentiable"], use_fused=False)
                assert not foreach  # (on the CPU: the single-tensor loop)
                if has_complex:
                    _view_as_real(params_with_grad, grads, exp_avgs, exp_vars)
                for i, param in enumerate(params_with_grad):
                    grad = grads[i] if not group["maximize"] else -grads[i]
                    exp_avg, exp_var, step_t = exp_avgs[i], exp_vars[i], state_steps[i]
                    step_t += 1
                    param.mul_(1 - _to_scalar(group["lr"]) * group["weight_decay"])
                    exp_avg.lerp_(grad, 1 - beta1)
                    diff = grad - exp_avg
                    exp_var.mul_(beta2).addcmul_(diff, diff, value=1 - beta2).add_(group["eps"])
                    step = _get_value(step_t)
                    bias_correction1 = 1 - beta1 ** step
                    bias_correction2 = 1 - beta2 ** step
                    step_size = group["lr"] / bias_correction1
                    denom = (exp_var.sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])
                    param.addcdiv_(exp_avg, denom, value=-step_size)
                _stack_if_compiling(state_steps)
            return loss

    return AdaBelief


def adabelief_training(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    AdaBelief = adabelief_class(m)
    rng = np.random.default_rng(5)
    X = torch.tensor(rng.standard_normal((32, 4)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 3, 32))
    model = load(m, nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3)), weights)
    rotation = torch.zeros(3, dtype=torch.complex64, requires_grad=True)  # a complex parameter too
    optimizer = AdaBelief([{"params": model.parameters()}, {"params": [rotation], "weight_decay": 0.0}], lr=0.01)
    scheduler = m.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6)
    losses = []
    for step in range(6):
        optimizer.zero_grad()
        logits = model(X) + (rotation * torch.exp(1j * X[:, :3])).real
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    saved = optimizer.state_dict()
    resumed = AdaBelief([{"params": model.parameters()}, {"params": [rotation], "weight_decay": 0.0}], lr=0.01)
    resumed.load_state_dict(saved)
    return {"losses": losses, "params": [p.detach() for p in model.parameters()], "rotation": rotation.detach(),
            "state": saved["state"], "lr": scheduler.get_last_lr(),
            "resumed": [sorted(s) for s in resumed.state.values()],
            "steps": [s["step"] for s in resumed.state.values()]}


def test_an_optimizer_written_from_pytorchs_sources():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.GELU(), m.nn.Linear(8, 3)))
    ours, _ = run_both(adabelief_training, weights, rtol=1e-5, atol=1e-6)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["state"][4]["exp_avg"].dtype == np.complex64  # the complex parameter's state, complex
    assert ours["resumed"][0] == ["exp_avg", "exp_var", "step"]


@pytest.mark.parametrize("T", ["autograd", "torch"], indirect=True)
def test_the_cuda_graph_health_check_is_deprecated_as_pytorchs(T):
    optim = OURS.optim if T.__name__ == "autograd" else TORCH.optim
    optimizer = optim.SGD([T.ones(1, requires_grad=True)], lr=0.1)
    optimizer._accelerator_graph_capture_health_check()
    with pytest.warns(DeprecationWarning, match="Use _accelerator_graph_capture_health_check instead"):
        optimizer._cuda_graph_capture_health_check()


def test_the_functional_adam_from_its_own_module():
    torch, optim = OURS.torch, OURS.optim
    w = torch.tensor([1.0, -2.0])
    importlib.import_module(f"{optim.__name__}.adam").adam(
        [w], [torch.tensor([0.5, 0.5])], [torch.zeros(2)], [torch.zeros(2)], [], [torch.tensor(0.0)], amsgrad=False,
        beta1=0.9, beta2=0.999, lr=0.1, weight_decay=0.0, eps=1e-8, maximize=False)
    np.testing.assert_allclose(w.numpy(), [0.9, -2.1], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# A custom step that counts in self.state under a key of its own, saved and resumed
# ----------------------------------------------------------------------------------------------


def counted_sgd(m, weights, resume_at=None):
    """An SGD whose step keeps a global step count in ``self.state["global_step"]`` (and warms its lr up by
    it), as some authors write theirs: the count is in the state dict and comes back on loading."""
    torch = m.torch

    class WarmSGD(m.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            self.state["global_step"] = self.state.get("global_step", 0) + 1
            for group in self.param_groups:
                group["lr"] = group["initial_lr"] * min(1.0, self.state["global_step"] / 4)
            return super().step(closure)

    model = load(m, m.nn.Sequential(m.nn.Linear(4, 8), m.nn.Tanh(), m.nn.Linear(8, 3)), weights)
    make = lambda: WarmSGD([{"params": model.parameters(), "initial_lr": 0.2}], lr=0.2, momentum=0.9)
    optimizer = make()
    rng = np.random.default_rng(2)
    X, y = torch.tensor(rng.standard_normal((16, 4)).astype(np.float32)), torch.tensor(rng.integers(0, 3, 16))
    losses, lrs = [], []
    for step in range(8):
        if step == resume_at:
            saved = optimizer.state_dict()
            optimizer = make()
            optimizer.load_state_dict(saved)
        optimizer.zero_grad()
        loss = m.F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]["lr"])
    saved = optimizer.state_dict()
    return {"losses": losses, "lrs": lrs, "params": [p.detach() for p in model.parameters()],
            "keys": sorted(map(str, saved["state"])), "global_step": saved["state"]["global_step"]}


def test_a_state_entry_under_a_key_of_its_own_is_saved_and_restored():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.Tanh(), m.nn.Linear(8, 3)))
    straight, _ = run_both(counted_sgd, weights, rtol=1e-5, atol=1e-6)
    resumed, _ = run_both(counted_sgd, weights, resume_at=5, rtol=1e-5, atol=1e-6)
    assert straight["keys"] == ["0", "1", "2", "3", "global_step"] and straight["global_step"] == 8
    assert resumed["global_step"] == 8 and resumed["lrs"] == straight["lrs"]  # (the warm-up did not start again)
    np.testing.assert_array_equal(resumed["losses"], straight["losses"])


@pytest.mark.parametrize("T", ["autograd", "torch"], indirect=True)
def test_loading_a_state_dict_of_another_grouping_fails_in_pytorchs_words(T):
    optim = OURS.optim if T.__name__ == "autograd" else TORCH.optim
    w, b = T.ones(2, requires_grad=True), T.ones(1, requires_grad=True)
    one_group, two_groups = optim.SGD([w, b], lr=0.1), optim.SGD([{"params": [w]}, {"params": [b]}], lr=0.1)
    with pytest.raises(ValueError, match="loaded state dict has a different number of parameter groups"):
        one_group.load_state_dict(two_groups.state_dict())
    with pytest.raises(ValueError, match="loaded state dict contains a parameter group that doesn't match the size"):
        optim.SGD([w], lr=0.1).load_state_dict(one_group.state_dict())


# ----------------------------------------------------------------------------------------------
# Steepest descent with PyTorch's strong-Wolfe line search, imported from torch.optim.lbfgs
# ----------------------------------------------------------------------------------------------


def wolfe_descent(m):
    """Gradient descent on Rosenbrock's function whose step lengths come from LBFGS's line search
    (``torch.optim.lbfgs._strong_wolfe``), with ``LBFGS._numel()`` sizing the flat vector."""
    torch = m.torch
    lbfgs = importlib.import_module(f"{m.optim.__name__}.lbfgs")
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    helper = m.optim.LBFGS([x])  # (for its flat-vector helpers)
    n = helper._numel()

    def f_and_g(point):
        with torch.enable_grad():
            point = point.detach().requires_grad_(True)
            value = (1 - point[0]) ** 2 + 100 * (point[1] - point[0] ** 2) ** 2
            (grad,) = torch.autograd.grad(value, point)
        return float(value), grad

    def obj_func(x0, t, d):
        return f_and_g(x0 + t * d)

    with torch.no_grad():
        point = x.detach().clone()
        values, steps = [], []
        for _ in range(25):
            f, g = f_and_g(point)
            d = -g
            gtd = g.dot(d)
            f_new, g_new, t, evals = lbfgs._strong_wolfe(obj_func, point, 1.0, d, f, g, gtd)
            point = point + t * d
            values.append(f_new)
            steps.append(float(t))
    return {"n": n, "values": values, "steps": steps, "point": point,
            "cubic": lbfgs._cubic_interpolate(0.0, 1.0, torch.tensor(-2.0, dtype=torch.float64), 1.0, 0.5,
                                              torch.tensor(1.0, dtype=torch.float64))}


def test_steepest_descent_with_lbfgs_line_search():
    ours, _ = run_both(wolfe_descent, rtol=1e-9, atol=1e-12)
    assert ours["n"] == 2 and ours["values"][-1] < ours["values"][0]
