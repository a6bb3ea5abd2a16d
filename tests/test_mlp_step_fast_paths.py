"""The MLP step's fast paths give the numbers of the general ones: cross_entropy's backward from the row sums its
forward kept (a second backward, a transposed input and the recomputed softmax agree to the bit), relu's backward
masked by y > 0 or, on a small array, selected (PyTorch's select at inf and NaN, either way), and Adam's one-call
step counting as add_(1) does (float32 stops at 2^24)."""

import numpy as np
import pytest

import autograd
import nn.functional as F
import optim


def _logits_and_labels(rows=16, classes=7, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, classes)) * 10).astype(np.float32), rng.integers(0, classes, rows)


def test_cross_entropy_backward_from_kept_sums_is_the_softmax():
    x, y = _logits_and_labels()
    logits = autograd.tensor(x, requires_grad=True)
    loss = F.cross_entropy(logits, autograd.tensor(y))
    (first,) = autograd.grad(loss, logits, retain_graph=True)  # from the forward's row sums
    (second,) = autograd.grad(loss, logits)  # computed again: the sums were taken by the first
    shifted = x - x.max(1, keepdims=True)
    softmax = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    expected = softmax.copy()
    expected[np.arange(len(y)), y] -= 1
    expected *= np.float32(1 / len(y))
    assert first.numpy().tobytes() == second.numpy().tobytes()
    np.testing.assert_allclose(first.numpy(), expected, rtol=1e-6, atol=1e-8)


def test_cross_entropy_of_a_transposed_input_recomputes_the_same_gradient():
    x, y = _logits_and_labels()
    row_major = autograd.tensor(x, requires_grad=True)
    transposed = autograd.tensor(np.ascontiguousarray(x.T), requires_grad=True)
    for logits in (row_major, transposed.t()):
        F.cross_entropy(logits, autograd.tensor(y), reduction="sum").backward()
    assert row_major.grad.numpy().tobytes() == np.ascontiguousarray(transposed.grad.numpy().T).tobytes()


def test_cross_entropy_gradient_matches_pytorch():
    torch = pytest.importorskip("torch")
    x, y = _logits_and_labels(rows=33, classes=10, seed=3)
    for reduction in ("mean", "sum", "none"):
        ours, theirs = autograd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        loss = F.cross_entropy(ours, autograd.tensor(y), reduction=reduction)
        expected = torch.nn.functional.cross_entropy(theirs, torch.tensor(y), reduction=reduction)
        (loss.sum() if reduction == "none" else loss).backward()
        (expected.sum() if reduction == "none" else expected).backward()
        np.testing.assert_allclose(loss.detach().numpy(), expected.detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("copies", [1, 400])  # 6 elements (NumPy's where itself), 2,400 (the product and its check)
def test_relu_backward_selects_at_inf_and_nan(copies):
    x = autograd.tensor(np.tile([[np.nan, 1.0, -1.0], [0.0, 2.0, -3.0]], copies), requires_grad=True)
    grad = autograd.tensor(np.tile([[0.5, np.inf, np.inf], [np.nan, -2.0, 1.0]], copies))
    autograd.relu(x).backward(grad)
    # where(y <= 0, 0, g): g itself at the NaN input, 0 where relu was off even for inf and NaN
    assert x.grad.tolist() == np.tile([[0.5, np.inf, 0.0], [0.0, -2.0, 0.0]], copies).tolist()
    x.grad = None
    autograd.relu(x).backward(autograd.tensor(np.tile([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], copies)))
    assert x.grad.tolist() == np.tile([[1.0, -2.0, 0.0], [0.0, 5.0, 0.0]], copies).tolist()  # finite: g or 0


@pytest.mark.parametrize("fused", [None, True])
def test_adam_step_count_rounds_as_float32(fused):
    weight = autograd.tensor([1.0, -2.0], requires_grad=True)
    optimizer = optim.Adam([weight], lr=0.1, fused=fused)
    weight.grad = autograd.tensor([0.5, 0.25])
    optimizer.step()
    assert optimizer.state[weight]["step"].item() == 1.0
    optimizer.state[weight]["step"].fill_(2.0**24 - 1)
    optimizer.step()
    optimizer.step()  # 2^24 + 1 is not a float32: the count stays, as PyTorch's add_(1) on its float32 step
    assert optimizer.state[weight]["step"].item() == 2.0**24
    assert optimizer.state[weight]["step"].dtype == autograd.float32
