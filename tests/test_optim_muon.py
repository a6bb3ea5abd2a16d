"""optim.Muon: PyTorch's update rule (its Newton–Schulz iteration run in the parameter's dtype,
where PyTorch runs it in bfloat16), checked by hand in NumPy and against torch.optim.Muon."""

import math

import numpy as np
import pytest

import autograd
import optim
from optim.muon import zeropower_via_newtonschulz

A, B, C = 3.4445, -4.7750, 2.0315


def newton_schulz_by_hand(m, steps=5, eps=1e-7):
    x = m.T if m.shape[0] > m.shape[1] else m
    x = x / max(np.linalg.norm(x), eps)
    for _ in range(steps):
        gram = x @ x.T
        x = A * x + (B * gram + C * gram @ gram) @ x
    return x.T if m.shape[0] > m.shape[1] else x


def muon_by_hand(w, grads, lr, weight_decay=0.1, momentum=0.95, nesterov=True, adjust="original"):
    buffer = np.zeros_like(w)
    for g in grads:
        buffer = buffer + (1 - momentum) * (g - buffer)
        direction = g + momentum * (buffer - g) if nesterov else buffer
        rows, columns = w.shape
        scale = math.sqrt(max(1, rows / columns)) if adjust == "original" else 0.2 * math.sqrt(max(rows, columns))
        w = w * (1 - lr * weight_decay) - lr * scale * newton_schulz_by_hand(direction)
    return w


def test_newton_schulz_pushes_the_singular_values_towards_one():
    m = np.random.default_rng(0).standard_normal((6, 4)) @ np.diag([10.0, 1.0, 0.1, 0.01])
    out = zeropower_via_newtonschulz(autograd.tensor(m), (A, B, C), 5, 1e-7)
    np.testing.assert_allclose(out.numpy(), newton_schulz_by_hand(m), rtol=1e-12, atol=1e-14)
    singular = np.linalg.svd(out.numpy(), compute_uv=False)
    assert singular.max() < 1.5 and singular[:3].min() > 0.5  # not exactly 1: the quintic's overshoot
    with pytest.raises(ValueError, match="less than 100"):
        zeropower_via_newtonschulz(autograd.tensor(m), (A, B, C), 100, 1e-7)
    with pytest.raises(ValueError, match="exactly 3 values"):
        zeropower_via_newtonschulz(autograd.tensor(m), (A, B), 5, 1e-7)


@pytest.mark.parametrize("shape, options", [
    ((5, 3), {}),
    ((3, 5), {"nesterov": False, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.01}),
    ((4, 4), {"momentum": 0.9, "adjust_lr_fn": "original"}),
])
def test_steps_follow_the_rule_by_hand(shape, options):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(4)]
    w = autograd.tensor(w0, requires_grad=True)
    optimizer = optim.Muon([w], lr=0.02, **options)
    for g in grads:
        w.grad = autograd.tensor(g)
        optimizer.step()
    expected = muon_by_hand(w0, grads, 0.02, adjust=options.get("adjust_lr_fn") or "original",
                            **{k: v for k, v in options.items() if k != "adjust_lr_fn"})
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12, atol=1e-13)
    assert list(optimizer.state[w]) == ["momentum_buffer"]


def test_refusals():
    w = autograd.zeros(3, 2, requires_grad=True)
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        optim.Muon([w, autograd.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="Learning rate should be >= 0 but is: -1"):
        optim.Muon([w], lr=-1)
    with pytest.raises(ValueError, match="momentum should be >= 0"):
        optim.Muon([w], momentum=-0.5)
    with pytest.raises(ValueError, match="weight decay should be >= 0"):
        optim.Muon([w], weight_decay=-0.1)
    with pytest.raises(ValueError, match="Adjust learning rate function rms is not supported"):
        optim.Muon([w], adjust_lr_fn="rms")
    z = autograd.zeros(2, 2, dtype=autograd.complex64, requires_grad=True)
    optimizer = optim.Muon([z])
    z.grad = autograd.ones(2, 2, dtype=autograd.complex64)
    with pytest.raises(RuntimeError, match="Muon does not support complex parameters"):
        optimizer.step()


def test_state_dict_round_trip():
    rng = np.random.default_rng(2)
    w = autograd.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    optimizer = optim.Muon([w], lr=0.05)
    w.grad = autograd.tensor(rng.standard_normal((3, 4)))
    optimizer.step()
    copy = autograd.tensor(w.detach().numpy(), requires_grad=True)
    resumed = optim.Muon([copy], lr=0.05)
    resumed.load_state_dict(optimizer.state_dict())
    g = rng.standard_normal((3, 4))
    w.grad, copy.grad = autograd.tensor(g), autograd.tensor(g)
    optimizer.step()
    resumed.step()
    np.testing.assert_array_equal(copy.detach().numpy(), w.detach().numpy())


@pytest.mark.torch
@pytest.mark.parametrize("options", [{}, {"nesterov": False, "adjust_lr_fn": "match_rms_adamw"}])
def test_against_torch(options, monkeypatch):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((6, 3))
    grads = [rng.standard_normal((6, 3)) for _ in range(3)]

    def run(lib, optimizer_class):
        w = lib.tensor(w0, requires_grad=True)
        optimizer = optimizer_class([w], lr=0.02, **options)
        for g in grads:
            w.grad = lib.tensor(g)
            optimizer.step()
        return w.detach().numpy()

    ours = run(autograd, optim.Muon)
    theirs = run(torch, torch.optim.Muon)  # its Newton–Schulz in bfloat16: about 1e-2 of the change
    np.testing.assert_allclose(ours - w0, theirs - w0, rtol=0.1, atol=2e-3)
    # PyTorch's own algorithm with the bfloat16 cast taken out is ours to the last bits
    monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self, *args, **kwargs: self.clone())
    np.testing.assert_allclose(ours, run(torch, torch.optim.Muon), rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError) as theirs_error:
        torch.optim.Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError) as ours_error:
        optim.Muon([autograd.zeros(3, requires_grad=True)])
    assert str(ours_error.value).split(":")[0] == str(theirs_error.value).split(":")[0]
