"""Losses: gradcheck in float64, closed forms, stability at the extremes, errors, and PyTorch."""

import math

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd import Tensor
from tests.test_ops import leaf

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3))
Y = RNG.standard_normal((4, 3))
P = 1 / (1 + np.exp(-X))
B = (RNG.random((4, 3)) > 0.5).astype(float)
LABELS = np.array([0, 2, 1, 2])
SIGNS = np.array([1.0, -1.0, -1.0, 1.0])
CLASS_WEIGHTS = np.array([1.0, 2.0, 0.5])  # (float64, the inputs' dtype: a class weight of another is refused)

# name: (function of float64 leaves, the leaves' values)
LOSSES = {
    "mse": (lambda x, y: F.mse_loss(x, y), (X, Y)),
    "mse_sum": (lambda x, y: F.mse_loss(x, y, reduction="sum"), (X, Y)),
    "mse_none": (lambda x, y: (F.mse_loss(x, y, reduction="none") * Tensor(SIGNS)[:, None]).sum(), (X, Y)),
    "l1": (lambda x, y: F.l1_loss(x, y, reduction="sum"), (X, Y + 3)),
    "huber": (lambda x, y: F.huber_loss(x, y, delta=0.7), (X, Y + 0.05)),
    "bce": (lambda p: F.binary_cross_entropy(p, Tensor(B)), (P,)),
    "bce_target": (lambda p, t: F.binary_cross_entropy(p, t), (P, P[::-1])),
    "bce_logits": (lambda x: F.binary_cross_entropy_with_logits(x, Tensor(B), pos_weight=Tensor(CLASS_WEIGHTS)),
                   (X,)),
    "cross_entropy": (lambda x: F.cross_entropy(x, autograd.tensor(LABELS)), (X,)),
    "cross_entropy_options": (lambda x: F.cross_entropy(x, autograd.tensor(LABELS), weight=Tensor(CLASS_WEIGHTS),
                                                        label_smoothing=0.2, ignore_index=1), (X,)),
    "cross_entropy_probs": (lambda x: F.cross_entropy(x, Tensor(P / P.sum(1, keepdims=True)),
                                                      label_smoothing=0.1), (X,)),
    "cross_entropy_spatial": (lambda x: F.cross_entropy(x.reshape(2, 3, 2), autograd.tensor([[0, 2], [1, 1]])), (X,)),
    "cross_entropy_none": (lambda x: (F.cross_entropy(x, autograd.tensor(LABELS), reduction="none", weight=Tensor(
        CLASS_WEIGHTS)) * Tensor([1.0, -2.0, 3.0, 0.5])).sum(), (X,)),
    # the fused backward node, as a function of the logits and of dL/dloss (one number; one per row)
    "cross_entropy_backward": (lambda x, g: autograd.grad(F.cross_entropy(
        x, autograd.tensor(LABELS), weight=Tensor(CLASS_WEIGHTS), ignore_index=1), x, g, create_graph=True)[0],
        (X, np.array(0.7))),
    "cross_entropy_backward_none": (lambda x, g: autograd.grad(F.cross_entropy(
        x, autograd.tensor(LABELS), weight=Tensor(CLASS_WEIGHTS), reduction="none"), x, g, create_graph=True)[0],
        (X, SIGNS + 0.3)),
    "nll": (lambda x: F.nll_loss(x.log_softmax(1), autograd.tensor(LABELS), reduction="sum"), (X,)),
    "hinge": (lambda x: F.hinge_loss(x[:, 0], Tensor(SIGNS)), (X * 0.3,)),
    "multi_margin": (lambda x: F.multi_margin_loss(x, autograd.tensor(LABELS), p=2, margin=1.5), (X,)),
    "triplet": (lambda a, p, n: F.triplet_margin_loss(a, p, n, margin=3.0, swap=True), (X, Y, X[::-1] * 2)),
    "cosine_embedding": (lambda a, b: F.cosine_embedding_loss(a, b, Tensor(SIGNS), margin=-0.5), (X, Y)),
    "margin_ranking": (lambda a, b: F.margin_ranking_loss(a[:, 0], b[:, 0], Tensor(SIGNS), margin=0.3),
                       (X, Y)),
    "contrastive": (lambda a, b: F.contrastive_loss(a, b, Tensor([1, 0, 0, 1]), margin=3.0), (X, Y)),
}


def test_every_primitive_of_nn_is_gradchecked_here_or_in_the_layer_tests():
    import nn
    from autograd import REGISTRY

    for name in nn.__all__:  # the layers that load on first use register their primitives then: load them all
        getattr(nn, name)

    from . import test_ctc, test_nn_functional_more, test_nn_hooks
    from .test_nn_modules import LAYERS
    from .test_rnn import CONFIGS as RECURRENT

    primitives = {name for name, op in REGISTRY.items() if op.__module__.startswith("nn.")}
    # each primitive, and the case that runs it through gradcheck
    covered = {"AffineMap": "linear" in LAYERS and "linear_3d" in LAYERS,
               "BinaryCrossEntropy": "bce" in LOSSES and "bce_target" in LOSSES,
               "MseLoss": "mse" in LOSSES and "mse_sum" in LOSSES and "mse_none" in LOSSES,
               "CrossEntropy": "cross_entropy" in LOSSES and "cross_entropy_options" in LOSSES,
               "CrossEntropyGrad": "cross_entropy_backward" in LOSSES and "cross_entropy_backward_none" in LOSSES,
               # tests/test_distributed.py::test_sync_batchnorm_normalisation_gradient_matches_finite_differences
               "SyncBatchNormalize": True,
               "RNNLayer": "rnn_relu_2layers_states" in RECURRENT and "rnn_packed" in RECURRENT,
               "GRULayer": "gru" in RECURRENT and "gru_packed_batch_first" in RECURRENT,
               "LSTMLayer": "lstm_bidirectional_proj" in RECURRENT and "lstm_packed_proj" in RECURRENT}
    for module in (test_ctc, test_nn_functional_more, test_nn_hooks):  # each lists its primitives' tests
        covered.update({name: hasattr(module, test) for name, test in module.PRIMITIVES_GRADCHECKED.items()})
    assert primitives == set(covered) and all(covered.values())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_gradients_match_finite_differences(name):
    fn, values = LOSSES[name]
    assert autograd.gradcheck(fn, [leaf(v) for v in values])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_cross_entropy_second_derivatives(reduction):
    weights = Tensor(CLASS_WEIGHTS)
    assert autograd.gradgradcheck(
        lambda x: F.cross_entropy(x, autograd.tensor(LABELS), weight=weights, ignore_index=1, reduction=reduction),
        [leaf(X)])


def test_binary_cross_entropy_second_derivatives():
    """BCE's backward is made of Tensor ops of p and y, so its own derivatives are exact: d²ℓ/dp² =
    (p² - 2py + y) / (p (1 - p))² (its factor 1 / (p (1 - p)) was once a constant, which left out the rest)."""
    assert autograd.gradgradcheck(lambda p, y: F.binary_cross_entropy(p, y, reduction="sum"),
                                  [leaf(P), leaf(P[::-1].copy())])
    p, y = leaf(np.array([0.2, 0.7])), Tensor(np.array([0.3, 1.0]))
    (grad,) = autograd.grad(F.binary_cross_entropy(p, y, reduction="sum"), p, create_graph=True)
    np.testing.assert_allclose(autograd.grad(grad.sum(), p)[0].numpy(), [0.22 / 0.16**2, 0.09 / 0.21**2])


def test_cross_entropy_over_only_ignored_targets_is_nan():
    assert np.isnan(F.cross_entropy(Tensor(X), autograd.tensor([-100, -100, -100, -100])).item())


def test_closed_forms():
    x, y = Tensor(X), Tensor(Y)
    np.testing.assert_allclose(F.mse_loss(x, y).item(), ((X - Y) ** 2).mean())
    np.testing.assert_allclose(F.l1_loss(x, y, reduction="sum").item(), np.abs(X - Y).sum())
    np.testing.assert_allclose(F.mse_loss(x, y, reduction="none").numpy(), (X - Y) ** 2)
    expected = -(B * np.log(P) + (1 - B) * np.log(1 - P)).mean()
    np.testing.assert_allclose(F.binary_cross_entropy(Tensor(P), Tensor(B)).item(), expected)
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(x, Tensor(B)).item(), expected)
    log_p = X - np.log(np.exp(X).sum(1, keepdims=True))
    np.testing.assert_allclose(F.cross_entropy(x, autograd.tensor(LABELS)).item(), -log_p[range(4), LABELS].mean())
    np.testing.assert_allclose(F.hinge_loss(x[:, 0], Tensor(SIGNS)).item(),
                               np.maximum(0, 1 - SIGNS * X[:, 0]).mean())
    d = np.sqrt(((X - Y + 1e-6) ** 2).sum(1))
    t = np.array([1, 0, 0, 1])
    np.testing.assert_allclose(F.contrastive_loss(x, y, Tensor(t), margin=3.0).item(),
                               (t * d**2 + (1 - t) * np.maximum(0, 3.0 - d) ** 2).mean())


def test_losses_are_finite_at_the_extremes():
    logits = Tensor([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 0.0]], requires_grad=True)
    loss = F.cross_entropy(logits, autograd.tensor([1, 1]))
    loss.backward()
    assert loss.item() == pytest.approx(1000.0) and np.isfinite(logits.grad.numpy()).all()
    z = Tensor([1000.0, -1000.0, 0.0], requires_grad=True)
    bce = F.binary_cross_entropy_with_logits(z, Tensor([0.0, 1.0, 1.0]))
    bce.backward()
    assert np.isfinite(bce.item()) and np.isfinite(z.grad.numpy()).all()
    assert bce.item() == pytest.approx((1000 + 1000 + math.log(2)) / 3)
    p = Tensor([0.0, 1.0, 1.0, 0.0], requires_grad=True)
    clamped = F.binary_cross_entropy(p, Tensor([1.0, 0.0, 1.0, 0.0]))
    clamped.backward()
    assert clamped.item() == pytest.approx(50.0)  # two logs of 0 floored at -100, averaged over 4
    assert np.isfinite(p.grad.numpy()).all()


def test_error_for_float_targets_given_to_class_index_losses():
    with pytest.raises(TypeError, match=r"class indices must be integers"):
        F.cross_entropy(Tensor(X), Tensor(LABELS.astype(float)))


def test_error_for_labels_out_of_range():
    with pytest.raises(IndexError, match=r"Target 3 is out of bounds\. \(cross_entropy: 3 classes"):
        F.cross_entropy(Tensor(X), autograd.tensor([0, 1, 3, 0]))


def test_error_for_wrong_target_shapes():
    with pytest.raises(ValueError, match=r"input of shape \(4, 3\) needs a target of shape \(4,\), got \(4, 1\)"):
        F.cross_entropy(Tensor(X), autograd.tensor(LABELS.reshape(4, 1)))
    with pytest.raises(ValueError, match=r"input of shape \(4, 1\) and target of shape \(4,\) differ"):
        nn.MSELoss()(Tensor(X[:, :1]), Tensor(Y[:, 0]))


def test_bce_input_outside_probabilities_is_an_error():
    with pytest.raises(RuntimeError, match="between 0 and 1"):  # PyTorch's type
        F.binary_cross_entropy(Tensor([1.5]), Tensor([1.0]))


def test_bad_reduction_is_an_error():
    with pytest.raises(ValueError, match="reduction"):
        nn.L1Loss(reduction="avg")


def test_loss_modules_match_their_functions():
    x, y = Tensor(X), Tensor(Y)
    assert nn.HuberLoss(delta=0.5)(x, y).item() == F.huber_loss(x, y, delta=0.5).item()
    assert nn.CrossEntropyLoss(label_smoothing=0.1)(x, autograd.tensor(LABELS)).item() == \
        F.cross_entropy(x, autograd.tensor(LABELS), label_smoothing=0.1).item()
    assert "margin=2.0" in repr(nn.ContrastiveLoss(margin=2.0))


@pytest.mark.torch
@pytest.mark.parametrize("name", ["mse", "l1", "huber", "bce", "bce_logits", "cross_entropy",
                                  "cross_entropy_options", "cross_entropy_probs", "cross_entropy_spatial",
                                  "cross_entropy_none",
                                  "nll", "multi_margin", "triplet", "cosine_embedding", "margin_ranking"])
def test_losses_match_torch(name):
    import torch
    import torch.nn.functional as TF

    t = torch.tensor
    torch_losses = {
        "mse": lambda x, y: TF.mse_loss(x, y),
        "l1": lambda x, y: TF.l1_loss(x, y, reduction="sum"),
        "huber": lambda x, y: TF.huber_loss(x, y, delta=0.7),
        "bce": lambda p: TF.binary_cross_entropy(p, t(B)),
        "bce_logits": lambda x: TF.binary_cross_entropy_with_logits(x, t(B), pos_weight=t([1.0, 2.0, 0.5],
                                                                                          dtype=torch.float64)),
        "cross_entropy": lambda x: TF.cross_entropy(x, t(LABELS)),
        "cross_entropy_options": lambda x: TF.cross_entropy(x, t(LABELS), weight=t([1.0, 2.0, 0.5],
                                                                                   dtype=torch.float64),
                                                            label_smoothing=0.2, ignore_index=1),
        "cross_entropy_probs": lambda x: TF.cross_entropy(x, t(P / P.sum(1, keepdims=True)), label_smoothing=0.1),
        "cross_entropy_spatial": lambda x: TF.cross_entropy(x.reshape(2, 3, 2), t([[0, 2], [1, 1]])),
        "cross_entropy_none": lambda x: (TF.cross_entropy(x, t(LABELS), reduction="none", weight=t(
            [1.0, 2.0, 0.5], dtype=torch.float64)) * t([1.0, -2.0, 3.0, 0.5], dtype=torch.float64)).sum(),
        "nll": lambda x: TF.nll_loss(x.log_softmax(1), t(LABELS), reduction="sum"),
        "multi_margin": lambda x: TF.multi_margin_loss(x, t(LABELS), p=2, margin=1.5),
        "triplet": lambda a, p, n: TF.triplet_margin_loss(a, p, n, margin=3.0, swap=True),
        "cosine_embedding": lambda a, b: TF.cosine_embedding_loss(a, b, t(SIGNS), margin=-0.5),
        "margin_ranking": lambda a, b: TF.margin_ranking_loss(a[:, 0], b[:, 0], t(SIGNS), margin=0.3),
    }
    fn, values = LOSSES[name]
    ours = [leaf(v) for v in values]
    theirs = [torch.tensor(np.array(v), requires_grad=True) for v in values]
    a, b = fn(*ours), torch_losses[name](*theirs)
    a.backward()
    b.backward()
    np.testing.assert_allclose(a.item(), b.item(), rtol=1e-10)
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.grad.numpy(), reference.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.torch
def test_saturated_losses_match_torch():
    import torch
    import torch.nn.functional as TF

    p = np.array([0.0, 1.0, 1.0, 0.0, 1e-20])
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    ours, theirs = leaf(p), torch.tensor(p, requires_grad=True)
    a, b = F.binary_cross_entropy(ours, Tensor(y)), TF.binary_cross_entropy(theirs, torch.tensor(y))
    a.backward()
    b.backward()
    np.testing.assert_allclose(a.item(), b.item())
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy())
