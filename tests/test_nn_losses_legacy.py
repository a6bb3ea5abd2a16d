"""The losses' PyTorch signatures in full: the deprecated ``size_average``/``reduce`` flags (in
PyTorch's positions, with its warning), the elementwise ``weight`` of mse_loss, l1_loss and
huber_loss, and the refusals of complex numbers where a loss or a comparison needs an order."""

import functools
import warnings

import numpy as np
import pytest

import autograd
import nn.functional as F

RNG = np.random.default_rng(3)
X = RNG.standard_normal((4, 3))
Y = RNG.standard_normal((4, 3))
W = RNG.random((4, 3)) + 0.1
PROBS = np.exp(Y) / np.exp(Y).sum(1, keepdims=True)
SIGNS = np.where(RNG.random(4) > 0.5, 1.0, -1.0)
LABELS = np.array([0, 2, 1, 2])

# name: the loss called on two float tensors x, y, with the legacy flags or reduction given by keyword;
# T is the library (autograd or torch) and F its nn.functional
LEGACY = {
    "mse_loss": lambda T, F, x, y, **k: F.mse_loss(x, y, **k),
    "l1_loss": lambda T, F, x, y, **k: F.l1_loss(x, y, **k),
    "smooth_l1_loss": lambda T, F, x, y, **k: F.smooth_l1_loss(x, y, **k),
    "soft_margin_loss": lambda T, F, x, y, **k: F.soft_margin_loss(x, y.sign(), **k),
    "binary_cross_entropy": lambda T, F, x, y, **k: F.binary_cross_entropy(x.sigmoid(), y.sigmoid(), **k),
    "binary_cross_entropy_with_logits": lambda T, F, x, y, **k: F.binary_cross_entropy_with_logits(x, y.sigmoid(),
                                                                                                    **k),
    "kl_div": lambda T, F, x, y, **k: F.kl_div(x.log_softmax(1), y.softmax(1), **k),
    "nll_loss": lambda T, F, x, y, **k: F.nll_loss(x.log_softmax(1), T.tensor(LABELS), **k),
    "cross_entropy": lambda T, F, x, y, **k: F.cross_entropy(x, T.tensor(LABELS), **k),
    "multi_margin_loss": lambda T, F, x, y, **k: F.multi_margin_loss(x, T.tensor(LABELS), **k),
    "multilabel_soft_margin_loss": lambda T, F, x, y, **k: F.multilabel_soft_margin_loss(x, (y > 0).double(), **k),
    "multilabel_margin_loss": lambda T, F, x, y, **k: F.multilabel_margin_loss(x, T.tensor([[0, -1, 1]] * 4), **k),
    "hinge_embedding_loss": lambda T, F, x, y, **k: F.hinge_embedding_loss(x, y.sign(), **k),
    "poisson_nll_loss": lambda T, F, x, y, **k: F.poisson_nll_loss(x, y.abs(), **k),
    "margin_ranking_loss": lambda T, F, x, y, **k: F.margin_ranking_loss(x[:, 0], y[:, 0], T.tensor(SIGNS), **k),
    "cosine_embedding_loss": lambda T, F, x, y, **k: F.cosine_embedding_loss(x, y, T.tensor(SIGNS), **k),
    "triplet_margin_loss": lambda T, F, x, y, **k: F.triplet_margin_loss(x, y, x.flip(0), **k),
}


def _inputs():
    return autograd.tensor(X), autograd.tensor(Y)


@pytest.mark.parametrize("name", sorted(LEGACY))
@pytest.mark.parametrize(("flags", "reduction"), [({"size_average": False}, "sum"), ({"reduce": False}, "none"),
                                                  ({"size_average": True, "reduce": True}, "mean"),
                                                  ({"size_average": False, "reduce": False}, "none")])
def test_size_average_and_reduce_read_as_pytorch_reads_them(name, flags, reduction):
    loss = functools.partial(LEGACY[name], autograd, F)
    with pytest.warns(UserWarning, match=f"size_average and reduce args will be deprecated.*reduction='{reduction}'"):
        legacy = loss(*_inputs(), **flags)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (kl_div's 'mean' warns of its own)
        modern = loss(*_inputs(), reduction=reduction)
    np.testing.assert_allclose(legacy.numpy(), modern.numpy(), rtol=1e-12)


def test_the_legacy_flags_sit_where_pytorch_puts_them():
    x, y = _inputs()
    labels = autograd.tensor(LABELS)
    # cross_entropy(input, target, weight, size_average, ignore_index, ...): ignore_index is fifth
    np.testing.assert_allclose(F.cross_entropy(x, labels, None, None, 2).item(),
                               F.cross_entropy(x, labels, ignore_index=2).item(), rtol=1e-12)
    with pytest.warns(UserWarning, match="reduction='sum'"):  # mse_loss(input, target, size_average, ...)
        np.testing.assert_allclose(F.mse_loss(x, y, False).item(), ((X - Y) ** 2).sum(), rtol=1e-12)


def test_weighted_mse_and_l1_divide_by_the_weights_and_huber_by_the_count():
    x, y, w = autograd.tensor(X, requires_grad=True), autograd.tensor(Y), autograd.tensor(W)
    d = X - Y
    np.testing.assert_allclose(F.mse_loss(x, y, weight=w).item(), (W * d * d).sum() / W.sum(), rtol=1e-12)
    np.testing.assert_allclose(F.l1_loss(x, y, weight=w, reduction="sum").item(), (W * abs(d)).sum(), rtol=1e-12)
    np.testing.assert_allclose(F.l1_loss(x, y, weight=w, reduction="none").numpy(), W * abs(d), rtol=1e-12)
    huber = np.where(abs(d) < 0.5, 0.5 * d * d, 0.5 * (abs(d) - 0.25))
    np.testing.assert_allclose(F.huber_loss(x, y, delta=0.5, weight=w).item(), (W * huber).mean(), rtol=1e-12)
    F.mse_loss(x, y, weight=w).backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * W * d / W.sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="Weights and input must have the same size"):
        F.mse_loss(x, y, weight=w[0])


def test_complex_numbers_have_no_order():
    z, w = autograd.tensor([1 + 1j, 2.0]), autograd.tensor([2 + 0j, 1.0])
    for compare in (lambda: z < w, lambda: z >= w, lambda: autograd.gt(z, w), lambda: z.le(w),
                    lambda: autograd.tensor([1.0]) < 1j):
        with pytest.raises(NotImplementedError, match="does not support complex inputs: complex numbers have no order"):
            compare()
    assert (z == w).tolist() == [False, False] and (z != w).tolist() == [True, True]
    for loss, kernel in ((F.smooth_l1_loss, "smooth_l1"), (F.huber_loss, "huber"), (F.mse_loss, "mse")):
        with pytest.raises(NotImplementedError, match=f'"{kernel}_cpu" not implemented'):
            loss(z, w)
    assert F.l1_loss(z, w).item() == pytest.approx((abs(1 + 1j - 2) + 1) / 2)  # |d| is real: PyTorch allows it


@pytest.mark.torch
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_weighted_losses_match_torch(name, reduction):
    import torch

    ours_x, theirs_x = autograd.tensor(X, requires_grad=True), torch.tensor(X, requires_grad=True)
    ours = getattr(F, name)(ours_x, autograd.tensor(Y), reduction=reduction, weight=autograd.tensor(W))
    theirs = getattr(torch.nn.functional, name)(theirs_x, torch.tensor(Y), reduction=reduction, weight=torch.tensor(W))
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12)
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(LEGACY))
@pytest.mark.parametrize("flags", [{"size_average": False}, {"reduce": False}])
def test_legacy_flags_match_torch(name, flags):
    import torch

    def run(T):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return LEGACY[name](T, T.nn.functional if T is torch else F, T.tensor(X), T.tensor(Y), **flags).numpy()

    np.testing.assert_allclose(run(autograd), run(torch), rtol=1e-12)
