# ruff: noqa: B007, B023, E721, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Optimisers and learning-rate schedulers beyond the common path, as training programs use them (see
tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data, comparing
losses, parameters, ``optimizer.state_dict()`` (entries, shapes, dtypes, values) and learning rates.

- A complex-valued filter (an equaliser) fitted with every optimiser that takes complex parameters: the state
  PyTorch keeps for a complex parameter is complex (moments of the parameter's shape), the state dict round
  trips into a fresh optimiser and training continues bit for bit, also from a checkpoint PyTorch saved
  (``autograd.load``); a 0-d complex parameter; Adagrad's complex sum.
- A small CNN with BatchNorm (4-d convolution weights: Adafactor's factored moments) trained with every
  optimiser in float32 and float64 under unusual options (Tensor lr and betas, amsgrad with maximize and fused,
  NAdam/RAdam's decoupled weight decay, Rprop's etas and step sizes, Adagrad's lr_decay and initial accumulator,
  ASGD's averaging, LBFGS with and without strong Wolfe).
- Functional optimisers as torch.distributed.optim writes them (``torch.optim._functional.adam``/``sgd`` over
  state the caller keeps) and every other functional step (``torch.optim.adagrad.adagrad``, ...); an AdaBelief
  written from PyTorch's adamw.py (``_use_grad_for_differentiable``, ``_get_value``, ``_get_scalar_dtype``,
  ``_default_to_fused_or_foreach``, ``_view_as_real``, ``_to_scalar``) with a complex parameter.
- A checkpoint PyTorch saved mid-training (model, SGD, each scheduler: MultiStepLR, StepLR, OneCycleLR,
  CyclicLR, CosineAnnealingWarmRestarts, SequentialLR, ChainedScheduler, ReduceLROnPlateau with min_lr list)
  continued on chainrule, and chainrule's own checkpoint of the same run.
- A custom step that counts in ``self.state["global_step"]`` (a key that is no parameter), saved and resumed;
  unfreezing a backbone with ``add_param_group`` (options of its own) under every optimiser;
  GradualWarmupScheduler (an ``_LRScheduler`` handing over to cosine, step and plateau schedulers).
- Focused checks: the printed optimiser with two groups, load_state_dict's errors, LBFGS's cubic interpolation of
  a NaN loss, Adagrad's initial accumulator for groups, a fused optimiser's float32 step, the deprecated
  ``_cuda_graph_capture_health_check``.

A MultiStepLR checkpoint keeps its milestones as a ``collections.Counter``, which autograd.load reads as
PyTorch's weights-only load does."""

import importlib
import io
import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, pytorch, run_both, weights_of

TORCH = pytorch()

# ----------------------------------------------------------------------------------------------
# A complex-valued equaliser: y = h * x (a complex FIR filter), h learned from noisy observations
# ----------------------------------------------------------------------------------------------

COMPLEX_OPTIMIZERS = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("AdamW", dict(lr=0.05, weight_decay=0.1)),
    ("NAdam", dict(lr=0.05, decoupled_weight_decay=True, weight_decay=0.01)),
    ("RAdam", dict(lr=0.05)),
    ("Adamax", dict(lr=0.05)),
    ("Adagrad", dict(lr=0.2, initial_accumulator_value=0.1, lr_decay=0.01)),
    ("Adadelta", dict(lr=1.0)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Rprop", dict(lr=0.01)),
    ("ASGD", dict(lr=0.05, t0=3)),
]


def equaliser_data(n=64, taps=4, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, taps)) + 1j * rng.standard_normal((n, taps))) / np.sqrt(2)
    h = rng.standard_normal(taps) + 1j * rng.standard_normal(taps)
    y = x @ h + 0.05 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    return x.astype(np.complex64), y.astype(np.complex64)


def equaliser(m, name, options, steps=8, resume_at=None, saved=None):
    """Fit the filter taps (complex64) with ``name``; with ``resume_at``, stop there, save model and
    optimizer through torch.save, load them into a fresh model and optimizer, and go on."""
    torch = m.torch
    x, y = (torch.tensor(a) for a in equaliser_data())

    class Equaliser(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.taps = m.nn.Parameter(torch.zeros(4, dtype=torch.complex64))

        def forward(self, x):
            return x @ self.taps

    model = Equaliser()
    optimizer = getattr(m.optim, name)(model.parameters(), **options)
    losses = []
    for step in range(steps):
        if step == resume_at:
            buffer = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
            buffer.seek(0)
            checkpoint = torch.load(buffer)
            model = Equaliser()
            model.load_state_dict(checkpoint["model"])
            optimizer = getattr(m.optim, name)(model.parameters(), **options)
            optimizer.load_state_dict(checkpoint["optimizer"])
        optimizer.zero_grad()
        loss = (model(x) - y).abs().pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    state = optimizer.state_dict()["state"][0]
    return {"losses": losses, "taps": model.taps.detach(),
            "state": {k: v for k, v in state.items()},
            "kinds": {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()
                      if hasattr(v, "shape") and v.dim() > 0}}


@pytest.mark.parametrize("name, options", COMPLEX_OPTIMIZERS, ids=[c[0] for c in COMPLEX_OPTIMIZERS])
def test_complex_equaliser_state_is_complex_and_resumes(name, options):
    ours, _ = run_both(equaliser, name, options, rtol=2e-5, atol=1e-6)
    # the state PyTorch keeps for a complex parameter: complex, the parameter's shape
    assert ours["kinds"] and set(ours["kinds"].values()) == {((4,), "complex64")}, ours["kinds"]
    assert ours["losses"][-1] < ours["losses"][0]
    resumed, _ = run_both(equaliser, name, options, resume_at=4, rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(resumed["taps"], ours["taps"])  # a round trip continues bit for bit
    np.testing.assert_array_equal(resumed["losses"], ours["losses"])


def test_adagrad_starts_both_parts_of_a_complex_sum_at_the_initial_accumulator():
    taps = OURS.torch.zeros(3, dtype=OURS.torch.complex128, requires_grad=True)
    optimizer = OURS.optim.Adagrad([taps], initial_accumulator_value=0.25)
    np.testing.assert_array_equal(optimizer.state[taps]["sum"].numpy(), np.full(3, 0.25 + 0.25j))
    taps.grad = OURS.torch.tensor([1 + 2j, 0j, -3j], dtype=OURS.torch.complex128)
    optimizer.step()  # the sum of each part's square: (0.25 + 1, 0.25 + 4), ...
    np.testing.assert_array_equal(optimizer.state[taps]["sum"].numpy(), [1.25 + 4.25j, 0.25 + 0.25j, 0.25 + 9.25j])


@pytest.mark.skipif(TORCH is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("name, options", COMPLEX_OPTIMIZERS[:2] + COMPLEX_OPTIMIZERS[6:7],
                         ids=["SGD", "Adam", "Adagrad"])
def test_a_pytorch_checkpoint_of_a_complex_model_continues_on_chainrule(name, options, tmp_path):
    torch = TORCH.torch
    x, y = equaliser_data()
    taps = torch.zeros(4, dtype=torch.complex64, requires_grad=True)
    optimizer = getattr(torch.optim, name)([taps], **options)

    def step(taps, optimizer, x, y):
        optimizer.zero_grad()
        loss = (x @ taps - y).abs().pow(2).mean()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step(taps, optimizer, torch.tensor(x), torch.tensor(y))
    torch.save({"taps": taps.detach(), "optimizer": optimizer.state_dict()}, tmp_path / "equaliser.pt")
    checkpoint = OURS.torch.load(tmp_path / "equaliser.pt")
    ours = checkpoint["taps"].clone().requires_grad_()
    our_optimizer = getattr(OURS.optim, name)([ours], **options)
    our_optimizer.load_state_dict(checkpoint["optimizer"])
    for _ in range(3):
        step(taps, optimizer, torch.tensor(x), torch.tensor(y))
        step(ours, our_optimizer, OURS.torch.tensor(x), OURS.torch.tensor(y))
    np.testing.assert_allclose(ours.detach().numpy(), taps.detach().numpy(), rtol=1e-5, atol=1e-6)
    for key, value in optimizer.state_dict()["state"][0].items():
        mine = our_optimizer.state_dict()["state"][0][key]
        assert str(mine.dtype) == str(value.dtype).removeprefix("torch."), key
        np.testing.assert_allclose(mine.numpy(), value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)


# ----------------------------------------------------------------------------------------------
# A small CNN with BatchNorm trained by every optimiser, float32 and float64, unusual options
# ----------------------------------------------------------------------------------------------


def cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.Flatten(), nn.Linear(64, 3))


def cnn_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


def tensors(m, value):
    """Options given as NumPy arrays become Tensors of the library (lr and betas as Tensors)."""
    if isinstance(value, np.ndarray):
        return m.torch.tensor(value)
    if isinstance(value, tuple):
        return tuple(tensors(m, v) for v in value)
    return value


def train_cnn(m, weights, name, options, dtype, steps=5):
    torch, F = m.torch, m.F
    model = load(m, cnn(m), weights).to(getattr(torch, dtype))
    images, labels = cnn_data()
    x, y = torch.tensor(images).to(getattr(torch, dtype)), torch.tensor(labels)
    optimizer = getattr(m.optim, name)(model.parameters(), **{k: tensors(m, v) for k, v in options.items()})
    losses = []
    for step in range(steps):
        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    saved = optimizer.state_dict()
    return {"losses": losses, "params": [p.detach() for p in model.parameters()], "state": saved["state"],
            "group": {k: v for k, v in saved["param_groups"][0].items() if k not in ("lr", "betas")}}


CNN_OPTIMIZERS = [
    ("Adafactor", dict(lr=0.05)),
    ("Adafactor", dict(lr=0.05, beta2_decay=-0.5, d=2.0, weight_decay=0.1, eps=(None, 1e-2))),
    ("Adafactor", dict(lr=0.05, maximize=True, foreach=True)),
    ("Adam", dict(lr=np.array(0.01), amsgrad=True, betas=(np.array(0.8), np.array(0.95)))),
    ("AdamW", dict(lr=0.01, amsgrad=True, maximize=True, fused=True)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.01, decoupled_weight_decay=True, weight_decay=0.1)),
    ("RAdam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1)),
    ("Rprop", dict(etas=(0.3, 1.5), step_sizes=(1e-4, 0.2), maximize=False)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.3)),
    ("Adadelta", dict(rho=0.8, weight_decay=0.1)),
    ("ASGD", dict(lr=0.05, lambd=0.01, alpha=0.5, t0=2)),
    ("Adamax", dict(lr=0.02, weight_decay=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("LBFGS", dict(lr=1, max_iter=4, history_size=3)),
    ("LBFGS", dict(lr=1, max_iter=4, history_size=3, line_search_fn="strong_wolfe")),
]


@pytest.mark.parametrize("name, options", CNN_OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CNN_OPTIMIZERS)])
def test_cnn_with_batchnorm_under_every_optimiser(name, options):
    weights = weights_of(cnn)
    ours, _ = run_both(train_cnn, weights, name, options, "float64", rtol=1e-9, atol=1e-11)
    assert all(np.isfinite(ours["losses"])) and ours["losses"][0] == pytest.approx(1.1866149032203428)
    if name != "LBFGS":  # (20 quasi-Newton iterations on float32 noise: the runs part in the 4th digit)
        run_both(train_cnn, weights, name, options, "float32", rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Focused checks
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", ["autograd", "torch"], indirect=True)
def test_an_optimizer_with_two_groups_prints_as_pytorchs(T):
    optim = OURS.optim if T.__name__ == "autograd" else TORCH.optim
    w, b = T.ones(2, requires_grad=True), T.ones(1, requires_grad=True)
    text = repr(optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=0.1))
    group = "    dampening: 0\n    differentiable: False\n    foreach: None\n    fused: None\n    lr: {}\n" \
            "    maximize: False\n    momentum: 0\n    nesterov: False\n    weight_decay: 0\n"
    assert text == "SGD (\nParameter Group 0\n" + group.format(0.1) + "\nParameter Group 1\n" + group.format(0.5) + ")"


def complex_gain(m, name, options, dtype):
    """One complex number (0-d) fitted: a gain and phase between two signals."""
    torch = m.torch
    x, y = (torch.tensor(a).to(getattr(torch, dtype)) for a in equaliser_data())
    gain = torch.tensor(1 + 0j, dtype=getattr(torch, dtype), requires_grad=True)
    optimizer = getattr(m.optim, name)([gain], **options)
    for _ in range(5):
        def closure():
            optimizer.zero_grad()
            loss = (gain * x[:, 0] - y).abs().pow(2).mean()
            loss.backward()
            return loss

        optimizer.step(closure)
    return gain.detach(), optimizer.state_dict()["state"][0]


@pytest.mark.parametrize("name, options", [("Adam", dict(lr=0.1)), ("SGD", dict(lr=0.1, momentum=0.9)),
                                           ("Rprop", dict(lr=0.1)), ("LBFGS", dict(max_iter=3))])
def test_a_zero_dimensional_complex_parameter(name, options):
    # (LBFGS in complex128: at the optimum its float32 gradient is rounding noise about its tolerance_grad)
    dtype = "complex128" if name == "LBFGS" else "complex64"
    (gain, state), _ = run_both(complex_gain, name, options, dtype, rtol=2e-5, atol=1e-6)
    assert gain.shape == () and gain.dtype == dtype


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
# A checkpoint PyTorch saved mid-training (model, optimizer, scheduler) continued on chainrule
# ----------------------------------------------------------------------------------------------

CHECKPOINTED_SCHEDULES = {
    "MultiStepLR": lambda S, o: S.MultiStepLR(o, milestones=[3, 6, 6, 9], gamma=0.5),
    "StepLR": lambda S, o: S.StepLR(o, step_size=3, gamma=0.5),
    "OneCycleLR": lambda S, o: S.OneCycleLR(o, max_lr=0.2, total_steps=12, three_phase=True, anneal_strategy="linear"),
    "CyclicLR": lambda S, o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=2, mode="exp_range", gamma=0.9),
    "CosineAnnealingWarmRestarts": lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=2, eta_min=1e-3),
    "SequentialLR": lambda S, o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=3),
                                                    S.PolynomialLR(o, total_iters=10, power=2.0)], milestones=[3]),
    "ChainedScheduler": lambda S, o: S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=4),
                                                         S.ExponentialLR(o, gamma=0.9)]),
    "ReduceLROnPlateau": lambda S, o: S.ReduceLROnPlateau(o, mode="min", factor=0.5, patience=0, cooldown=1,
                                                          threshold=0.05, min_lr=[1e-3, 5e-3]),
}



def checkpointed_regression(m, name, epochs, checkpoint=None, path=None):
    """SGD with momentum on a linear regression (two groups), the schedule stepped each epoch; from
    ``checkpoint`` (a file torch.save wrote) where given; with ``path``, saved there after ``epochs``."""
    torch = m.torch
    rng = np.random.default_rng(11)
    X = torch.tensor(rng.standard_normal((40, 3)))
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.3
    model = m.nn.Linear(3, 1).double()
    optimizer = m.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.05}], lr=0.1, momentum=0.9)
    scheduler = CHECKPOINTED_SCHEDULES[name](m.optim.lr_scheduler, optimizer)
    if checkpoint is not None:
        saved = torch.load(checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    lrs = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        loss = ((model(X).squeeze(1) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step(loss.item()) if name == "ReduceLROnPlateau" else scheduler.step()
        lrs.append([float(lr) for lr in scheduler.get_last_lr()])
    if path is not None:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, path)
    return {"lrs": lrs, "weight": model.weight.detach(), "bias": model.bias.detach()}


@pytest.mark.skipif(TORCH is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("name", list(CHECKPOINTED_SCHEDULES))
def test_a_pytorch_checkpoint_with_its_scheduler_continues_on_chainrule(name, tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    checkpointed_regression(TORCH, name, 5, path=path)
    theirs = checkpointed_regression(TORCH, name, 7, checkpoint=path)
    ours = checkpointed_regression(OURS, name, 7, checkpoint=path)
    np.testing.assert_allclose(ours["lrs"], theirs["lrs"], rtol=1e-12)
    np.testing.assert_allclose(ours["weight"].numpy(), theirs["weight"].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["bias"].numpy(), theirs["bias"].numpy(), rtol=1e-10, atol=1e-12)
    # and chainrule's own checkpoint of the same run continues the same way
    our_path = str(tmp_path / "ours.pt")
    checkpointed_regression(OURS, name, 5, path=our_path)
    again = checkpointed_regression(OURS, name, 7, checkpoint=our_path)
    np.testing.assert_allclose(again["lrs"], theirs["lrs"], rtol=1e-12)


def test_lbfgs_cubic_interpolation_of_a_nan_loss_takes_the_middle_of_the_bracket_as_pytorchs():
    from optim.lbfgs import cubic_interpolate

    assert cubic_interpolate(0.0, 1.0, -1.0, 2.0, float("nan"), 3.0) == 1.0  # (it was NaN)
    assert cubic_interpolate(0.0, 1.0, -1.0, 2.0, 2.0, 3.0, bounds=(0.5, 4.0)) == pytest.approx(0.8685170918)
    if TORCH is not None:
        from torch.optim.lbfgs import _cubic_interpolate

        torch = TORCH.torch
        assert float(_cubic_interpolate(0.0, 1.0, torch.tensor(-1.0), 2.0, float("nan"), torch.tensor(3.0))) == 1.0
        assert float(_cubic_interpolate(0.0, 1.0, torch.tensor(-1.0), 2.0, 2.0, torch.tensor(3.0),
                                        bounds=(0.5, 4.0))) == pytest.approx(0.8685170918)


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
# Fine-tuning that unfreezes the backbone mid-training: add_param_group with options of its own
# ----------------------------------------------------------------------------------------------

UNFREEZE = [
    ("Adam", dict(lr=0.05), dict(lr=0.01, amsgrad=True)),
    ("SGD", dict(lr=0.1, momentum=0.9), dict(nesterov=True, lr=0.02)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.1), dict(initial_accumulator_value=0.5, lr=0.05)),
    ("RMSprop", dict(lr=0.01), dict(centered=True, momentum=0.5)),
    ("NAdam", dict(lr=0.05), dict(momentum_decay=0.01)),
    ("RAdam", dict(lr=0.05), dict(decoupled_weight_decay=True, weight_decay=0.1)),
    ("Adamax", dict(lr=0.05), dict(lr=0.01)),
    ("ASGD", dict(lr=0.05), dict(t0=1)),
    ("Rprop", dict(lr=0.01), dict(lr=0.001, etas=(0.4, 1.1))),
    ("Adadelta", dict(), dict(rho=0.5)),
    ("Adafactor", dict(lr=0.05), dict(beta2_decay=-0.5)),
    ("AdamW", dict(lr=0.05), dict(betas=(0.5, 0.6), weight_decay=0.1)),
]


def unfreeze_training(m, weights, name, options, later_options, steps=6):
    torch, nn, F = m.torch, m.nn, m.F
    # (float64: centered RMSprop's √(E[g²] - E[g]²) cancels, and would magnify float32's last bits)
    model = load(m, nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)), weights).double()
    backbone, head = model[0], model[2]
    for p in backbone.parameters():
        p.requires_grad_(False)
    optimizer = getattr(m.optim, name)(head.parameters(), **options)
    rng = np.random.default_rng(4)
    X, y = torch.tensor(rng.standard_normal((24, 4))), torch.tensor(rng.integers(0, 3, 24))
    losses = []
    for step in range(steps):
        if step == 3:  # unfreeze the backbone, with a smaller learning rate
            for p in backbone.parameters():
                p.requires_grad_(True)
            optimizer.add_param_group({"params": backbone.parameters(), **later_options})
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    saved = optimizer.state_dict()
    return {"losses": losses, "params": [p.detach() for p in model.parameters()], "state": saved["state"],
            "groups": [{k: v for k, v in g.items() if k != "params"} for g in saved["param_groups"]]}


@pytest.mark.parametrize("name, options, later_options", UNFREEZE, ids=[u[0] for u in UNFREEZE])
def test_unfreezing_the_backbone_with_add_param_group(name, options, later_options):
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.Tanh(), m.nn.Linear(8, 3)))
    ours, _ = run_both(unfreeze_training, weights, name, options, later_options, rtol=1e-9, atol=1e-11)
    assert sorted(ours["state"]) == [0, 1, 2, 3] and len(ours["groups"]) == 2


def test_adagrad_starts_every_sum_at_the_optimizers_initial_accumulator_value():
    """As PyTorch's: a group's own initial_accumulator_value is kept in the group and not used, in the
    constructor and in add_param_group alike."""
    torch, optim = OURS.torch, OURS.optim
    w, b, c = torch.ones(2, requires_grad=True), torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
    optimizer = optim.Adagrad([{"params": [w]}, {"params": [b], "initial_accumulator_value": 3.0}],
                              initial_accumulator_value=0.5)
    optimizer.add_param_group({"params": [c], "initial_accumulator_value": 2.0})
    c.grad = torch.tensor([1.0])
    optimizer.step()
    assert optimizer.state[b]["sum"].tolist() == [0.5] and optimizer.state[c]["sum"].tolist() == [1.5]
    assert [g["initial_accumulator_value"] for g in optimizer.param_groups] == [0.5, 3.0, 2.0]


# ----------------------------------------------------------------------------------------------
# GradualWarmupScheduler (ildoonet/pytorch-gradual-warmup-lr): an _LRScheduler that hands over to another
# ----------------------------------------------------------------------------------------------


def gradual_warmup_class(m):
    _LRScheduler = m.optim.lr_scheduler._LRScheduler
    ReduceLROnPlateau = m.optim.lr_scheduler.ReduceLROnPlateau

    class GradualWarmupScheduler(_LRScheduler):
        """ Gradually warm-up(increasing) learning rate in optimizer.
        Proposed in 'Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour'.
        """

        def __init__(self, optimizer, multiplier, total_epoch, after_scheduler=None):
            self.multiplier = multiplier
            if self.multiplier < 1.:
                raise ValueError('multiplier should be greater thant or equal to 1.')
            self.total_epoch = total_epoch
            self.after_scheduler = after_scheduler
            self.finished = False
            super(GradualWarmupScheduler, self).__init__(optimizer)

        def get_lr(self):
            if self.last_epoch > self.total_epoch:
                if self.after_scheduler:
                    if not self.finished:
                        self.after_scheduler.base_lrs = [base_lr * self.multiplier for base_lr in self.base_lrs]
                        self.finished = True
                    return self.after_scheduler.get_last_lr()
                return [base_lr * self.multiplier for base_lr in self.base_lrs]

            if self.multiplier == 1.0:
                return [base_lr * (float(self.last_epoch) / self.total_epoch) for base_lr in self.base_lrs]
            else:
                return [base_lr * ((self.multiplier - 1.) * self.last_epoch / self.total_epoch + 1.)
                        for base_lr in self.base_lrs]

        def step_ReduceLROnPlateau(self, metrics, epoch=None):
            if epoch is None:
                epoch = self.last_epoch + 1
            self.last_epoch = epoch if epoch != 0 else 1  # ReduceLROnPlateau is called at the end of epoch
            if self.last_epoch <= self.total_epoch:
                warmup_lr = [base_lr * ((self.multiplier - 1.) * self.last_epoch / self.total_epoch + 1.)
                             for base_lr in self.base_lrs]
                for param_group, lr in zip(self.optimizer.param_groups, warmup_lr):
                    param_group['lr'] = lr
            else:
                if epoch is None:
                    self.after_scheduler.step(metrics, None)
                else:
                    self.after_scheduler.step(metrics, epoch - self.total_epoch)

        def step(self, epoch=None, metrics=None):
            if type(self.after_scheduler) != ReduceLROnPlateau:
                if self.finished and self.after_scheduler:
                    if epoch is None:
                        self.after_scheduler.step(None)
                    else:
                        self.after_scheduler.step(epoch - self.total_epoch)
                    self._last_lr = self.after_scheduler.get_last_lr()
                else:
                    return super(GradualWarmupScheduler, self).step(epoch)
            else:
                self.step_ReduceLROnPlateau(metrics, epoch)

    return GradualWarmupScheduler


def gradual_warmup_training(m, after):
    torch = m.torch
    GradualWarmupScheduler = gradual_warmup_class(m)
    w = m.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    optimizer = m.optim.SGD([w], lr=0.01, momentum=0.9)
    if after == "cosine":
        after_scheduler = m.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10, eta_min=1e-4)
    elif after == "step":
        after_scheduler = m.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    else:
        after_scheduler = m.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=1)
    scheduler = GradualWarmupScheduler(optimizer, multiplier=8, total_epoch=5, after_scheduler=after_scheduler)
    lrs, ws = [], []
    for epoch in range(1, 16):
        optimizer.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        optimizer.step()
        if after == "plateau":
            scheduler.step(epoch, metrics=1.0)  # a validation loss that has stopped improving
        else:
            scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        ws.append(w.detach().clone())
    return lrs, ws


@pytest.mark.filterwarnings("ignore:The epoch parameter in `scheduler.step\\(\\)` was not necessary")  # (the author's)
@pytest.mark.parametrize("after", ["cosine", "step", "plateau"])
def test_gradual_warmup_hands_over_to_the_after_scheduler(after):
    (lrs, _), _ = run_both(gradual_warmup_training, after, rtol=1e-12, atol=1e-15)
    assert lrs[3] == pytest.approx(0.01 * (7 * 4 / 5 + 1))  # warming up towards 8 × 0.01


# ----------------------------------------------------------------------------------------------
# A fused optimizer's step counter is float32, also under a float64 default dtype and after loading
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def float64_default(T):
    T.set_default_dtype(T.float64)
    yield
    T.set_default_dtype(T.float32)


@pytest.mark.parametrize("T", ["autograd", "torch"], indirect=True)
def test_a_fused_adagrads_step_is_float32_under_a_float64_default(T, float64_default):
    optim = OURS.optim if T.__name__ == "autograd" else TORCH.optim
    w = T.ones(2, dtype=T.float32, requires_grad=True)
    fused, plain = optim.Adagrad([w], lr=0.1, fused=True), optim.Adagrad([w], lr=0.1)
    assert fused.state[w]["step"].dtype == T.float32 and plain.state[w]["step"].dtype == T.float64
    # a state dict of a fused (or capturable) group loads its step as float32; another group's keeps its dtype
    saved = plain.state_dict()
    saved["param_groups"][0]["fused"] = True
    fused.load_state_dict(saved)
    assert fused.state[w]["step"].dtype == T.float32
    plain.load_state_dict(plain.state_dict())
    assert plain.state[w]["step"].dtype == T.float64


def test_a_fused_adams_step_is_float32_under_a_float64_default():
    torch, optim = OURS.torch, OURS.optim
    torch.set_default_dtype(torch.float64)
    try:
        w = torch.ones(2, dtype=torch.float32, requires_grad=True)
        optimizer = optim.Adam([w], lr=0.1, fused=True)
        w.grad = torch.ones(2, dtype=torch.float32)
        optimizer.step()
    finally:
        torch.set_default_dtype(torch.float32)
    assert optimizer.state[w]["step"].dtype == torch.float32


@pytest.mark.parametrize("T", ["autograd", "torch"], indirect=True)
def test_pair_options_given_as_lists_stay_lists_as_pytorchs(T):
    """(A YAML config gives betas as a list.) Adam and AdamW make a tuple of them; NAdam, RAdam, Adamax,
    Adafactor's eps and Rprop's etas and step sizes keep what they were given, as PyTorch's (its repr, its state
    dict, and a comparison with a tuple show it) and step the same."""
    optim = OURS.optim if T.__name__ == "autograd" else TORCH.optim
    kinds = {}
    for name, options in [("Adam", dict(betas=[0.8, 0.9])), ("NAdam", dict(betas=[0.8, 0.9])),
                          ("RAdam", dict(betas=[0.8, 0.9])), ("Adamax", dict(betas=[0.8, 0.9])),
                          ("Adafactor", dict(eps=[None, 1e-3])),
                          ("Rprop", dict(etas=[0.4, 1.1], step_sizes=[1e-5, 1]))]:
        w = T.tensor([1.0, -2.0], requires_grad=True)
        optimizer = getattr(optim, name)([w], **options)
        w.grad = T.tensor([0.5, 0.5])
        optimizer.step()
        group = optimizer.state_dict()["param_groups"][0]
        kinds[name] = [type(group[key]).__name__ for key in options]
        assert f"{next(iter(options))}: {group[next(iter(options))]}" in repr(optimizer)
    assert kinds == {"Adam": ["tuple"], "NAdam": ["list"], "RAdam": ["list"], "Adamax": ["list"],
                     "Adafactor": ["list"], "Rprop": ["list", "list"]}


# ----------------------------------------------------------------------------------------------
# A ReduceLROnPlateau subclass that logs its reductions (overriding PyTorch's _reduce_lr) and compares its own way
# ----------------------------------------------------------------------------------------------


def logged_plateau(m):
    torch = m.torch

    class LoggedPlateau(m.optim.lr_scheduler.ReduceLROnPlateau):
        def __init__(self, *args, **kwargs):
            self.log = []
            super().__init__(*args, **kwargs)

        def _reduce_lr(self, epoch):
            before = [group["lr"] for group in self.optimizer.param_groups]
            super()._reduce_lr(epoch)
            self.log.append((epoch, before, [group["lr"] for group in self.optimizer.param_groups]))

        def _is_better(self, a, best):  # better only by a margin that grows with the epochs
            return a < best - 0.01 * self.last_epoch

    w = torch.tensor([2.0, -1.0], dtype=torch.float64, requires_grad=True)
    optimizer = m.optim.SGD([{"params": [w]}], lr=0.5)
    scheduler = LoggedPlateau(optimizer, patience=1, factor=0.5, cooldown=1, min_lr=0.05)
    lrs = []
    for epoch in range(12):
        optimizer.zero_grad()
        loss = (w ** 2).sum() + 0.1 * torch.cos(7 * w).sum()
        loss.backward()
        optimizer.step()
        scheduler.step(loss.item())
        lrs.append(scheduler.get_last_lr()[0])
    saved = scheduler.state_dict()
    fresh = LoggedPlateau(optimizer)
    fresh.load_state_dict(saved)
    return {"lrs": lrs, "log": scheduler.log, "w": w.detach(), "best": scheduler.best,
            "fresh": [fresh.mode, fresh.mode_worse, fresh.patience, fresh.best]}


def test_a_plateau_subclass_overriding_pytorchs_private_steps():
    ours, _ = run_both(logged_plateau, rtol=1e-12, atol=1e-14)
    assert ours["log"] and all(after[0] < before[0] for _, before, after in ours["log"])


@pytest.mark.parametrize("T", ["autograd", "torch"], indirect=True)
def test_plateau_step_with_an_epoch_warns_as_pytorchs(T):
    optim = OURS.optim if T.__name__ == "autograd" else TORCH.optim
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optim.SGD([T.ones(1, requires_grad=True)], lr=0.1))
    with pytest.warns(UserWarning, match="The epoch parameter in `scheduler.step\\(\\)` was not necessary"):
        scheduler.step(1.0, 3)
    assert scheduler.last_epoch == 3


def schedules_through_pytorchs_helpers(m):
    """Schedulers subclassed where PyTorch's helpers are methods: a OneCycleLR whose cosine annealing is
    squared, a CyclicLR whose triangular2 halving is a third; and the helpers called on the classes."""
    S = m.optim.lr_scheduler

    class SharpOneCycle(S.OneCycleLR):
        @staticmethod
        def _annealing_cos(start, end, pct):
            return end + (start - end) * ((math.cos(math.pi * pct) + 1) / 2) ** 2

    class ThirdCyclic(S.CyclicLR):
        @staticmethod
        def _triangular2_scale_fn(x):
            return 1 / (3.0 ** (x - 1))

    w = m.torch.zeros(1, requires_grad=True)
    one_cycle = m.optim.SGD([w], lr=0.1, momentum=0.9)
    sharp = SharpOneCycle(one_cycle, max_lr=1.0, total_steps=12)
    cyclic = m.optim.SGD([m.torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    third = ThirdCyclic(cyclic, base_lr=0.01, max_lr=0.1, step_size_up=2, mode="triangular2")
    rows = []
    for _ in range(10):
        one_cycle.step()
        cyclic.step()
        sharp.step()
        third.step()
        rows.append(sharp.get_last_lr() + [one_cycle.param_groups[0]["momentum"]] + third.get_last_lr())
    helpers = [S.OneCycleLR._annealing_cos(1.0, 0.0, 0.25), S.OneCycleLR._annealing_linear(1.0, 0.0, 0.25),
               S.CyclicLR._triangular2_scale_fn(3), S.CyclicLR._exp_range_scale_fn(0.9, 2)]
    return rows, helpers


def test_schedulers_through_pytorchs_helper_methods():
    (rows, helpers), _ = run_both(schedules_through_pytorchs_helpers, rtol=1e-12, atol=1e-15)
    assert helpers == pytest.approx([(math.cos(math.pi / 4) + 1) / 2, 0.75, 0.25, 0.81])
    assert rows[5][2] == pytest.approx(0.01 + 0.09 / 3)  # (the second cycle's peak: a third of the first's)


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


# ----------------------------------------------------------------------------------------------
# A scheduler copied from PyTorch's sources: its own step() through lr_scheduler's private helpers
# ----------------------------------------------------------------------------------------------


def copied_scheduler(m, tensor_lr):
    torch = m.torch
    lr_scheduler = m.optim.lr_scheduler
    _enable_get_lr_call = lr_scheduler._enable_get_lr_call
    _format_param = lr_scheduler._format_param
    _param_groups_val_list = lr_scheduler._param_groups_val_list
    _update_param_group_val = lr_scheduler._update_param_group_val

    class WarmupPoly(lr_scheduler.LRScheduler):
        def __init__(self, optimizer, warmup, total, floor_lr=0.0, last_epoch=-1):
            self.warmup, self.total = warmup, total
            self.floor_lrs = _format_param("floor_lr", optimizer, floor_lr)
            super().__init__(optimizer, last_epoch)

        def get_lr(self):
            lr_scheduler._warn_get_lr_called_within_step(self)
            t = self.last_epoch
            if t < self.warmup:
                return [base * (t + 1) / self.warmup for base in self.base_lrs]
            frac = min(1.0, (t - self.warmup) / (self.total - self.warmup))
            return [floor + (base - floor) * (1 - frac) ** 2 for base, floor in zip(self.base_lrs, self.floor_lrs)]

        def step(self, epoch=None):
            self._step_count += 1
            with _enable_get_lr_call(self):
                if epoch is None:
                    self.last_epoch += 1
                else:
                    self.last_epoch = epoch
                values = self.get_lr()
            for param_group, lr in zip(self.optimizer.param_groups, values):
                _update_param_group_val(param_group, "lr", lr)
            self._last_lr = _param_groups_val_list(self.optimizer, "lr")

    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    lr = torch.tensor(0.2, dtype=torch.float64) if tensor_lr else 0.2
    optimizer = m.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.1}], lr=lr, momentum=0.9)
    scheduler = WarmupPoly(optimizer, warmup=3, total=10, floor_lr=[0.01, 0.005])
    lrs = []
    for step in range(12):
        optimizer.zero_grad()
        loss = ((w - torch.tensor([1.0, -2.0], dtype=torch.float64)) ** 2).sum() + (b - 0.5).pow(2).sum()
        loss.backward()
        optimizer.step()
        scheduler.step()
        lrs.append([float(v) for v in scheduler.get_last_lr()])
    return {"lrs": lrs, "w": w.detach(), "b": b.detach(), "lr_kind": type(optimizer.param_groups[0]["lr"]).__name__}


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_a_scheduler_copied_from_pytorchs_sources(tensor_lr):
    ours, _ = run_both(copied_scheduler, tensor_lr, rtol=1e-12, atol=1e-15)
    assert ours["lrs"][0] == pytest.approx([0.2 * 2 / 3, 0.1 * 2 / 3])
    assert ours["lr_kind"] == ("Tensor" if tensor_lr else "float")


@pytest.mark.parametrize("T", ["autograd", "torch"], indirect=True)
def test_the_optimizer_helpers_copied_code_calls_as_pytorchs(T):
    helpers = importlib.import_module(f"{'optim' if T.__name__ == 'autograd' else 'torch.optim'}.optimizer")
    a, b, c = T.ones(1), T.ones(2, dtype=T.float64), T.ones(3)
    for with_indices, indices in ((False, [[], []]), (True, [[0, 2], [1]])):
        groups = helpers.Optimizer._group_tensors_by_device_and_dtype([[a, b, c], [c, b, a], []], with_indices)
        assert sorted(([len(v) for v in lists], found) for lists, found in groups.values()) == \
            sorted(zip([[2, 2, 0], [1, 1, 0]], indices))
    assert helpers._get_value(T.tensor(3.0)) == 3.0 and helpers._get_value(2) == 2
    assert helpers._to_scalar(T.tensor([0.5])).dim() == 0 and helpers._to_scalar(0.5) == 0.5
    assert helpers._get_scalar_dtype() == T.float32 and helpers._get_scalar_dtype(is_fused=True) == T.float32
    assert helpers._default_to_fused_or_foreach([a, c], differentiable=False) == (False, False)  # (on the CPU)
    assert helpers._default_to_fused_or_foreach([a, c], differentiable=False, use_fused=True) == (True, False)
    assert helpers._default_to_fused_or_foreach([a], differentiable=True, use_fused=True) == (False, False)
    z = T.tensor([1 + 2j])
    params, grads = [z, a], [T.tensor([3 + 4j]), a]
    helpers._view_as_real(params, grads)
    assert tuple(params[0].shape) == (1, 2) and grads[0].tolist() == [[3.0, 4.0]] and params[1] is a


def test_zero_grad_without_none_keeps_a_graph_gradient_tensor_as_pytorchs():
    torch, optim = OURS.torch, OURS.optim
    w = torch.ones(2, requires_grad=True)
    optimizer = optim.SGD([w], lr=0.1)
    (w ** 3).sum().backward(create_graph=True)
    grad = w.grad
    optimizer.zero_grad(set_to_none=False)
    assert not w.grad.requires_grad and w.grad.grad_fn is None and w.grad.tolist() == [0.0, 0.0]
    assert w.grad is grad
