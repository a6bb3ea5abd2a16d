"""Optimisers on complex parameters: each is optimised as its (real, imaginary) pairs, as PyTorch's
(Adam's g² is then the square of each part, not the complex square)."""

import numpy as np
import pytest

import autograd
import optim

try:
    import torch
except ImportError:
    torch = None

RNG = np.random.default_rng(0)
START = RNG.standard_normal(3) + 1j * RNG.standard_normal(3)
TARGET = RNG.standard_normal(3) + 1j * RNG.standard_normal(3)
OPTIMIZERS = [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.05)), ("AdamW", dict(lr=0.05, weight_decay=0.1)),
              ("RMSprop", dict(lr=0.01)), ("Adagrad", dict(lr=0.1)), ("NAdam", dict(lr=0.05)), ("RAdam", dict(lr=0.05)),
              ("Adamax", dict(lr=0.05)), ("Adadelta", dict(lr=1.0)), ("ASGD", dict(lr=0.05)), ("Rprop", dict(lr=0.05))]


def _loss(library, z):
    return ((z * z - library.tensor(TARGET)).abs() ** 2).sum()


def _trajectory(library, optimizers, name, options, steps=20):
    z = library.tensor(START, requires_grad=True)
    optimizer = getattr(optimizers, name)([z], **options)
    for _ in range(steps):
        optimizer.zero_grad()
        _loss(library, z).backward()
        optimizer.step()
    return z.detach().numpy()


@pytest.mark.parametrize("name, options", OPTIMIZERS)
def test_a_complex_parameter_is_optimised_as_its_real_pairs(name, options):
    ours = _trajectory(autograd, optim, name, options)
    # the same problem on the real pairs (a, b): the same trajectory
    pairs = autograd.tensor(np.stack([START.real, START.imag], -1), requires_grad=True)
    optimizer = getattr(optim, name)([pairs], **options)
    for _ in range(20):
        optimizer.zero_grad()
        _loss(autograd, autograd.view_as_complex(pairs)).backward()
        optimizer.step()
    np.testing.assert_allclose(ours, autograd.view_as_complex(pairs).detach().numpy(), rtol=1e-12, atol=1e-14)
    assert _loss(autograd, autograd.tensor(ours)).item() < _loss(autograd, autograd.tensor(START)).item()


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("name, options", OPTIMIZERS)
def test_against_pytorch(name, options):
    np.testing.assert_allclose(_trajectory(autograd, optim, name, options),
                               _trajectory(torch, torch.optim, name, options), rtol=1e-10, atol=1e-12)


def test_lbfgs_on_a_complex_parameter():
    def run(library, optimizers):
        z = library.tensor(START, requires_grad=True)
        optimizer = optimizers.LBFGS([z], lr=0.5)

        def closure():
            optimizer.zero_grad()
            loss = _loss(library, z)
            loss.backward()
            return loss

        for _ in range(3):
            optimizer.step(closure)
        return z.detach().numpy()

    ours = run(autograd, optim)
    assert _loss(autograd, autograd.tensor(ours)).item() < 1e-6  # z² reaches the target
    np.testing.assert_allclose(ours * ours, TARGET, atol=1e-3)
    if torch is not None:
        np.testing.assert_allclose(ours, run(torch, torch.optim), rtol=1e-8, atol=1e-10)


def test_adafactor_refuses_complex_parameters_as_pytorch():
    z = autograd.tensor(START, requires_grad=True)
    optimizer = optim.Adafactor([z], lr=0.05)
    _loss(autograd, z).backward()
    with pytest.raises(RuntimeError, match="Adafactor does not support complex parameters"):
        optimizer.step()
