# ruff: noqa: B007, B023, E731, F841  (the programs are kept as their authors wrote them)
"""Optimisers and learning-rate schedulers beyond the common path, as training programs use them (see
tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data, comparing
losses, parameters, ``optimizer.state_dict()`` (entries, shapes, dtypes, values) and learning rates.

A complex-valued filter (an equaliser) fitted with every optimiser that takes complex parameters: the state
PyTorch keeps for a complex parameter is complex (moments of the parameter's shape), the state dict round
trips into a fresh optimiser and training continues identically, also from a checkpoint PyTorch saved
(``autograd.load``); a small CNN with BatchNorm (4-d convolution weights: Adafactor's factored moments) trained
with every optimiser in float32 and float64 under unusual options (Tensor lr and betas, amsgrad with maximize
and fused, NAdam/RAdam's decoupled weight decay, Rprop's etas and step sizes, Adagrad's lr_decay and initial
accumulator, ASGD's averaging, LBFGS with and without strong Wolfe); the optimiser's printed form with two
parameter groups."""

import io

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
