# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Optimisers and learning-rate schedulers beyond the common path, as training programs use them, run as
tests/probe13_optim_common.py says. Every optimiser: a complex-valued filter (an equaliser) fitted with every
optimiser that takes complex parameters: the state PyTorch keeps for a complex parameter is complex (moments of the
parameter's shape), the state dict round trips into a fresh optimiser and training continues bit for bit, also from a
checkpoint PyTorch saved (``autograd.load``); a 0-d complex parameter; Adagrad's complex sum. A small CNN with
BatchNorm (4-d convolution weights: Adafactor's factored moments) trained with every optimiser in float32 and float64
under unusual options (Tensor lr and betas, amsgrad with maximize and fused, NAdam/RAdam's decoupled weight decay,
Rprop's etas and step sizes, Adagrad's lr_decay and initial accumulator, ASGD's averaging, LBFGS with and without
strong Wolfe). Unfreezing a backbone with ``add_param_group`` (options of its own) under every optimiser. Focused
checks: the printed optimiser with two groups, Adagrad's initial accumulator for groups, a fused optimiser's float32
step, pair options given as lists."""

import io

import numpy as np
import pytest

from .probe13_optim_common import TORCH
from .pytorch_programs import OURS, load, run_both, weights_of

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
