"""F.linear_cross_entropy and nn.LinearCrossEntropyLoss: values by hand (NumPy), gradients by finite differences,
PyTorch's argument checks; against PyTorch where it is installed (its module_db samples are in test_moduledb)."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F

RNG = np.random.default_rng(0)
X, W, B = RNG.standard_normal((5, 3)), RNG.standard_normal((4, 2, 3)), RNG.standard_normal((4, 2))
LABELS = RNG.integers(0, 4, (5, 2))


def _by_hand(x, w, b, labels):
    """Mean over (n, k) of -log softmax_c(x_n · w_ck + b_ck)[label_nk]."""
    logits = np.einsum("ni,cki->nck", x, w) + b
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[:, None, :], 1).mean()


def test_k_dimensional_loss_by_hand():
    loss = F.linear_cross_entropy(autograd.tensor(X), autograd.tensor(W), autograd.tensor(LABELS),
                                  linear_bias=autograd.tensor(B))
    np.testing.assert_allclose(loss.item(), _by_hand(X, W, B, LABELS), rtol=1e-12)


def test_gradients_match_finite_differences():
    target = autograd.tensor(LABELS)
    assert autograd.gradcheck(lambda x, w, b: F.linear_cross_entropy(x, w, target, linear_bias=b, label_smoothing=0.1),
                              [autograd.tensor(a, requires_grad=True) for a in (X, W, B)])


def test_module_stores_the_weight_flat_and_matches_the_functional_form():
    loss = nn.LinearCrossEntropyLoss(3, 4, out_features=(2,), bias=True, dtype=autograd.float64)
    assert tuple(loss.linear.weight.shape) == (8, 3) and tuple(loss.linear.bias.shape) == (8,)
    with autograd.no_grad():
        loss.linear.weight.copy_(autograd.tensor(W.reshape(8, 3)))
        loss.linear.bias.copy_(autograd.tensor(B.reshape(8)))
    np.testing.assert_allclose(loss(autograd.tensor(X), autograd.tensor(LABELS)).item(), _by_hand(X, W, B, LABELS),
                               rtol=1e-12)


def test_pytorchs_argument_checks():
    x, w = autograd.tensor(X), autograd.tensor(W[:, 0])
    with pytest.raises(RuntimeError, match="in_features"):
        F.linear_cross_entropy(autograd.tensor(X[:, :2]), w, autograd.tensor(LABELS[:, 0]))
    with pytest.raises(RuntimeError, match="ignore_index cannot be specified"):
        F.linear_cross_entropy(x, w, autograd.rand(5, 4, dtype=autograd.float64), ignore_index=0)
    with pytest.raises(RuntimeError, match="requires batched input"):
        F.linear_cross_entropy(autograd.tensor(X[0]), autograd.tensor(W), autograd.tensor(LABELS[0]))
    with pytest.raises(RuntimeError, match="expected weight shape"):
        nn.LinearCrossEntropyLoss(3, 4, weight=autograd.ones(3))
    with pytest.raises(RuntimeError, match="label_smoothing"):
        nn.LinearCrossEntropyLoss(3, 4, label_smoothing=2.0)
    with pytest.raises(NotImplementedError, match="chunked"):
        nn.LinearCrossEntropyLoss(3, 4, options=object())


@pytest.mark.parametrize("probabilities", [False, True])
def test_agrees_with_pytorch(probabilities):
    torch = pytest.importorskip("torch")
    if not hasattr(torch.nn.functional, "linear_cross_entropy"):
        pytest.skip("PyTorch before 2.13 has no linear_cross_entropy")
    target = RNG.random((5, 4, 2)) if probabilities else LABELS
    kwargs = dict(reduction="none", label_smoothing=0.2, weight=np.array([1.0, 2.0, 0.5, 1.5]))
    if not probabilities:
        kwargs["ignore_index"] = 2
    upstream = np.linspace(-1.0, 2.0, 10).reshape(5, 2)  # dL/dloss, one per (n, k)
    results = []
    for library, functional in ((autograd, F), (torch, torch.nn.functional)):
        x, w, b = (library.tensor(a, requires_grad=True) for a in (X, W, B))
        options = {k: library.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        loss = functional.linear_cross_entropy(x, w, library.tensor(target), linear_bias=b, **options)
        grads = (torch.autograd.grad if library is torch else autograd.grad)(
            (loss * library.tensor(upstream)).sum(), (x, w, b))
        results.append([loss.detach().numpy()] + [g.numpy() for g in grads])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
