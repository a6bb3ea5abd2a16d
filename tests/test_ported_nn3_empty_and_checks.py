"""Empty inputs and argument checks, ported from PyTorch's test/test_nn.py (TestNNDeviceType on CPU) where the
tests/test_ported_nn_*.py files do not reach: the reflection pads, LocalResponseNorm, Unfold, BatchNorm2d, Linear
and the margin losses on an empty batch (their outputs, gradients and running statistics) and their rank errors,
one_hot's classes, the activations and losses keeping a 0-d input 0-d, every loss refusing a bogus reduction,
nll_loss's target checks (rank, batch, class weights) in PyTorch's words, nll_loss on empty spatial dimensions, and
ctc_loss refusing empty log-probabilities. Each test runs on chainrule's `nn` and, where it is installed, on
PyTorch's; the expectations are literals or NumPy."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

REDUCTIONS = ("none", "mean", "sum")


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_reflection_pad_of_an_empty_batch_and_its_rank_errors(T, nn, dtype):
    for pad, shape, padded in ((nn.ReflectionPad1d(2), (0, 3, 10), (0, 3, 14)),
                               (nn.ReflectionPad2d(2), (0, 3, 10, 10), (0, 3, 14, 14)),
                               (nn.ReflectionPad3d(3), (0, 3, 10, 10, 10), (0, 3, 16, 16, 16))):
        out = pad(T.zeros(shape, dtype=getattr(T, dtype)))
        assert tuple(out.shape) == padded and str(out.dtype).endswith(dtype)
    # an empty channel dimension is refused: only the batch may be empty
    raises(RuntimeError, "2D or 3D", nn.ReflectionPad1d(2), T.randn(3, 0, 10))
    raises(RuntimeError, "3D or 4D", nn.ReflectionPad2d(2), T.randn(3, 0, 10, 10))
    raises(RuntimeError, "4D or 5D", nn.ReflectionPad3d(3), T.randn(3, 0, 10, 10, 10))
    # one dimension too many for the module: F.pad's words (PyTorch 2.13's; older ones said "Only 2D, 3D, 4D, 5D")
    for pad, shape in ((nn.ReflectionPad1d(2), (3, 3, 10, 10)), (nn.ReflectionPad2d(2), (3, 3, 10, 10, 10)),
                       (nn.ReflectionPad3d(3), (3, 3, 10, 10, 10, 10))):
        raises(RuntimeError, f"Padding size {pad.padding.__len__()} is not supported for {len(shape)}D input", pad,
               T.randn(shape))


def test_local_response_norm_and_unfold_of_an_empty_batch(T, nn):
    assert tuple(nn.LocalResponseNorm(2)(T.ones(0, 5, 24, 24)).shape) == (0, 5, 24, 24)
    x = T.randn(0, 3, 3, 4, requires_grad=True)
    cols = nn.Unfold(kernel_size=(2, 3))(x)
    assert tuple(cols.shape) == (0, 3 * 2 * 3, 2 * 2)
    cols.sum().backward()
    assert tuple(x.grad.shape) == (0, 3, 3, 4)
    # no channels, or no rows, is refused (unbatched too): only the batch may be empty
    for shape in ((3, 0, 3, 4), (1, 3, 0, 4), (0, 3, 4)):
        raises(RuntimeError, "Expected 3D or 4D \\(batch mode\\) tensor with possibly 0 batch size and other "
               "non-zero dimensions for input", nn.Unfold(kernel_size=(1, 1)), T.randn(shape))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_margin_losses_of_an_empty_batch(T, nn, dtype):
    d = getattr(T, dtype)
    for loss, target, targets_of_ten in ((nn.MultiMarginLoss, T.ones(0, dtype=T.long), T.ones(10, dtype=T.long)),
                                         (nn.MultiLabelMarginLoss, T.ones(0, 10, dtype=T.long),
                                          T.ones(10, 0, dtype=T.long))):
        x = T.zeros(0, 10, dtype=d, requires_grad=True)
        out = loss()(x, target)
        out.sum().backward()
        same(x.grad, np.zeros((0, 10), dtype))
        assert tuple(out.shape) == () and tuple(loss(reduction="none")(x, target).shape) == (0,)
        if T.__name__ == "autograd":
            # no rows: the sum is 0, and so is the mean (PyTorch's kernels divide only a batch that has rows, and
            # leave their empty output unwritten: any value there)
            assert values(out) == 0 and values(loss(reduction="sum")(x, target)) == 0
        # no classes: refused, batched or not
        raises(RuntimeError, "Expected non-empty vector or matrix with optional 0-dim batch size, but got: \\[0\\]",
               loss(), T.randn(0, dtype=d), T.ones(10, dtype=T.long))
        raises(RuntimeError, "Expected non-empty vector or matrix with optional 0-dim batch size, but got: "
               "\\[10, 0\\]", loss(), T.randn(10, 0, dtype=d), targets_of_ten)
    # one row of scores still works, as the reference: Σ_{i≠y} max(0, 1 - x_y + x_i) / C
    x = np.array([0.1, 0.2, 0.4, 0.8], dtype)
    close(nn.MultiMarginLoss()(T.tensor(x), T.tensor(3)), np.maximum(0, 1 - x[3] + x[:3]).sum() / 4, rtol=1e-6)


def test_batch_norm_and_linear_of_an_empty_batch(T, nn):
    bn = nn.BatchNorm2d(3).double()
    x = T.randn(0, 3, 2, 2, dtype=T.float64, requires_grad=True)
    y = bn(x)
    y.sum().backward()
    assert tuple(y.shape) == (0, 3, 2, 2) and tuple(x.grad.shape) == (0, 3, 2, 2)
    # the running statistics are left alone, and the affine parameters get zero gradients
    same(bn.running_mean, [0.0, 0.0, 0.0])
    same(bn.running_var, [1.0, 1.0, 1.0])
    same(bn.weight.grad, [0.0, 0.0, 0.0])
    same(bn.bias.grad, [0.0, 0.0, 0.0])
    linear = nn.Linear(7, 7)
    x = T.randn(0, 7, requires_grad=True)
    linear(x).sum().backward()
    same(linear.weight.grad, np.zeros((7, 7), np.float32))
    same(linear.bias.grad, np.zeros(7, np.float32))


def test_one_hot_classes(T, F):
    labels = T.tensor([3, 4, 1, 0])
    eye5 = np.eye(5, dtype=np.int64)
    same(F.one_hot(labels), eye5[[3, 4, 1, 0]], dtype="int64")
    same(F.one_hot(labels, -1), eye5[[3, 4, 1, 0]])  # -1: the largest label + 1
    same(F.one_hot(labels, 6), np.eye(6, dtype=np.int64)[[3, 4, 1, 0]])
    same(F.one_hot(T.tensor([[3, 4], [1, 0]])), eye5[[[3, 4], [1, 0]]])
    same(F.one_hot(T.tensor(4)), eye5[4])
    same(F.one_hot(T.zeros(4, 0, dtype=T.long), 100), np.zeros((4, 0, 100), np.int64))
    # the errors: a negative label, a label past num_classes, no labels to count classes from, num_classes < -1
    raises(RuntimeError, "", F.one_hot, T.tensor([3, 4, -1, 0]), -1)
    raises(RuntimeError, "", F.one_hot, labels, 3)
    raises(RuntimeError, "", F.one_hot, T.zeros(4, 0, dtype=T.long))
    raises(RuntimeError, "", F.one_hot, labels, -2)


ACTIVATIONS = ("ELU", "Hardtanh", "LeakyReLU", "LogSigmoid", "RReLU", "Softshrink", "Softplus", "Sigmoid", "Tanh")


def test_activations_keep_empty_and_0d_shapes(T, nn):
    for name in ACTIVATIONS:
        for shape in ((0,), (0, 2), (), (5, 6)):
            x = T.randn(shape, requires_grad=True)
            y = getattr(nn, name)()(x)
            y.sum().backward()
            assert tuple(y.shape) == shape and tuple(x.grad.shape) == shape, name
    # their values at 0 and 1, by hand: ELU and the rest
    x = T.tensor([0.0, 1.0, -1.0])
    close(nn.ELU()(x), [0.0, 1.0, np.expm1(-1.0)], rtol=1e-6)
    close(nn.LogSigmoid()(x), -np.log1p(np.exp(-np.array([0.0, 1.0, -1.0]))), rtol=1e-6)
    close(nn.Softplus()(x), np.log1p(np.exp([0.0, 1.0, -1.0])), rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_of_0d_inputs_are_0d(T, nn, reduction):
    for name in ("BCELoss", "L1Loss", "MSELoss", "SmoothL1Loss", "SoftMarginLoss"):
        for shape in ((5, 6), ()):
            x = T.randn(shape, requires_grad=True)
            target = T.empty(shape).random_(2)
            out = getattr(nn, name)(reduction=reduction)(T.sigmoid(x), target)
            out.sum().backward()
            expected = () if reduction != "none" else shape
            assert tuple(out.shape) == expected and tuple(x.grad.shape) == shape, name
    # a 0-d MSE by hand: (σ(0) - 1)² = 1/4, whatever the reduction
    close(nn.MSELoss(reduction=reduction)(T.sigmoid(T.tensor(0.0)), T.tensor(1.0)), 0.25)


def test_every_loss_refuses_a_bogus_reduction(T, F):
    x = T.randn(3, 5, requires_grad=True)
    cx = T.randn(3, 5, dtype=T.complex64)
    target = T.tensor([1, 0, 4])
    var = T.ones(3, 5)
    log_probs = T.randn(50, 16, 20).log_softmax(2)
    ctc_args = (log_probs, T.randint(1, 20, (16, 30)), T.full((16,), 50, dtype=T.long),
                T.randint(10, 30, (16,)))
    calls = {
        "nll_loss": lambda r: F.nll_loss(x, target, reduction=r),
        "cross_entropy": lambda r: F.cross_entropy(x, target, reduction=r),
        "kl_div": lambda r: F.kl_div(x, x, reduction=r),
        "huber_loss": lambda r: F.huber_loss(x, x, reduction=r),
        "smooth_l1_loss": lambda r: F.smooth_l1_loss(x, x, reduction=r),
        "l1_loss": lambda r: F.l1_loss(x, x, reduction=r),
        "complex l1_loss": lambda r: F.l1_loss(cx, cx, reduction=r),
        "mse_loss": lambda r: F.mse_loss(x, x, reduction=r),
        "hinge_embedding_loss": lambda r: F.hinge_embedding_loss(x, x, reduction=r),
        "poisson_nll_loss": lambda r: F.poisson_nll_loss(x, x, reduction=r),
        "gaussian_nll_loss": lambda r: F.gaussian_nll_loss(x, x, var, reduction=r),
        "binary_cross_entropy": lambda r: F.binary_cross_entropy(T.sigmoid(x), x.gt(0).float(), reduction=r),
        "binary_cross_entropy_with_logits": lambda r: F.binary_cross_entropy_with_logits(x, x, reduction=r),
        "multilabel_soft_margin_loss": lambda r: F.multilabel_soft_margin_loss(x, T.zeros(3, 5, dtype=T.long),
                                                                               reduction=r),
        "triplet_margin_loss": lambda r: F.triplet_margin_loss(x, x, x, reduction=r),
        "triplet_margin_with_distance_loss": lambda r: F.triplet_margin_with_distance_loss(x, x, x, reduction=r),
        "margin_ranking_loss": lambda r: F.margin_ranking_loss(x, x, x.sign(), reduction=r),
        "cosine_embedding_loss": lambda r: F.cosine_embedding_loss(x, x, x[:, 0].sign(), reduction=r),
        "ctc_loss": lambda r: F.ctc_loss(*ctc_args, reduction=r),
        "soft_margin_loss": lambda r: F.soft_margin_loss(x, x.sign().detach(), reduction=r),
    }
    for name, call in calls.items():
        assert call("none") is not None, name
        with pytest.raises(ValueError):
            call("invalid")
    # 'none' keeps one loss per row where the loss reduces the features, one per element otherwise
    assert tuple(calls["nll_loss"]("none").shape) == (3,)
    assert tuple(calls["mse_loss"]("none").shape) == (3, 5)
    same(calls["mse_loss"]("none"), np.zeros((3, 5), np.float32))


def test_nll_loss_target_checks_in_pytorchs_words(T, F):
    x = T.randn(10, 3)
    for target_shape in ((3,), (3, 2)):  # (the batch is checked before the target's rank)
        raises(ValueError, "Expected input batch_size \\(10\\) to match target batch_size \\(3\\)", F.nll_loss, x,
               T.zeros(target_shape, dtype=T.long))
    for target_shape in ((10, 2), (10, 1), (10, 2, 2)):
        raises(RuntimeError, "0D or 1D target tensor expected, multi-target not supported", F.nll_loss, x,
               T.zeros(target_shape, dtype=T.long))
    raises(RuntimeError, "0D or 1D target tensor expected, multi-target not supported", F.nll_loss, T.randn(3),
           T.zeros(1, 2, dtype=T.long))
    # a spatial input: the target's spatial size is checked
    for target_shape in ((10,), (10, 4, 1)):
        raises(RuntimeError, "Expected target size \\[10, 4\\], got " + str(list(target_shape)).replace("[", "\\["),
               F.nll_loss, T.randn(10, 3, 4), T.zeros(target_shape, dtype=T.long))
    for weight in (T.randn(4), T.randn(1, 3)):
        raises(RuntimeError, "weight tensor should be defined either for all 3 classes or no classes", F.nll_loss,
               x, T.zeros(10, dtype=T.long), weight=weight)
    # an ignored label may lie outside the classes: its row adds nothing, the rest average
    logp = T.randn(6, 3, requires_grad=True)
    labels = [0, 1, 255, 0, 1, 2]
    loss = F.nll_loss(logp, T.tensor(labels), ignore_index=255)
    loss.backward()
    kept = [0, 1, 3, 4, 5]
    close(loss, -values(logp)[kept, [labels[i] for i in kept]].mean(), rtol=1e-6)
    grad = np.zeros((6, 3), np.float32)
    grad[kept, [labels[i] for i in kept]] = -1 / 5
    close(logp.grad, grad)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 5, 7), (2, 3, 0, 7), (2, 3, 5, 0), (2, 3, 5, 7, 0)])
def test_nll_loss_of_empty_tensors(T, F, shape):
    target_shape = (shape[0],) + shape[2:]
    for reduction in REDUCTIONS:
        x = T.rand(shape, requires_grad=True)
        out = F.nll_loss(x, T.randint(3, target_shape), reduction=reduction)
        out.sum().backward()
        assert tuple(x.grad.shape) == shape
        if reduction == "none":
            assert tuple(out.shape) == target_shape
        elif reduction == "mean":  # 0 / 0
            assert np.isnan(values(out))
        else:
            assert values(out) == 0


def test_ctc_loss_refuses_empty_log_probs(T, F):
    for shape in ((0, 0, 4), (5, 0, 4), (0, 3, 4), (0, 4)):
        batch = shape[1] if len(shape) == 3 else ()
        raises(RuntimeError, "log_probs tensor must not be empty", F.ctc_loss, T.rand(shape).log_softmax(-1),
               T.tensor([], dtype=T.long), T.zeros(batch, dtype=T.long), T.zeros(batch, dtype=T.long),
               reduction="none")
