"""CTC loss: the exact gradient against finite differences, PyTorch's values and gradients
(padded and concatenated targets, every reduction, short inputs, empty and repeated
targets, impossible alignments with zero_infinity), and a brute-force sum over paths."""

import itertools

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd import Tensor, tensor
from tests.test_ops import leaf

# (the CTC primitives moved to autograd/ops/ctc.py: their cases are in tests/test_ops_ctc.py)
PRIMITIVES_GRADCHECKED = {}
RNG = np.random.default_rng(0)
FRAMES, BATCH, CLASSES = 6, 4, 5
LOGITS = RNG.standard_normal((FRAMES, BATCH, CLASSES))
# an ordinary target, one with a repeat (needs a blank between), an empty one, and one
# too long for its 3 frames (3 labels with a repeat need 4): impossible
TARGETS = np.array([[1, 2, 3], [2, 2, 0], [0, 0, 0], [4, 4, 1]])
TARGET_LENGTHS = np.array([3, 2, 0, 3])
INPUT_LENGTHS = np.array([6, 5, 4, 3])


def concatenated():
    return np.concatenate([row[:n] for row, n in zip(TARGETS, TARGET_LENGTHS)])


def brute_force_nll(log_probs, target, frames, blank=0):
    """-ln Σ over every frame-by-frame labelling that collapses to ``target``."""
    total = 0.0
    for path in itertools.product(range(log_probs.shape[1]), repeat=frames):
        collapsed = [c for i, c in enumerate(path) if c != blank and (i == 0 or path[i - 1] != c)]
        if collapsed == list(target):
            total += np.exp(sum(log_probs[t, c] for t, c in enumerate(path)))
    return -np.log(total)


def test_loss_is_the_sum_over_all_alignments():
    log_probs = np.log(np.exp(LOGITS[:4, :, :3]) / np.exp(LOGITS[:4, :, :3]).sum(-1, keepdims=True))
    targets = np.array([[1, 1], [1, 2], [2, 0], [0, 0]])
    lengths = np.array([2, 2, 1, 0])
    losses = F.ctc_loss(Tensor(log_probs), tensor(targets), [4, 3, 4, 2], tensor(lengths), reduction="none")
    expected = [brute_force_nll(log_probs[:, n], targets[n, :lengths[n]], frames)
                for n, frames in enumerate([4, 3, 4, 2])]
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_exact_gradient_matches_finite_differences(reduction):
    possible = np.array([0, 1, 2])  # the impossible sample has an infinite loss: leave it out

    def loss(log_probs):
        value = F.ctc_loss(log_probs, tensor(TARGETS[possible]), tensor(INPUT_LENGTHS[possible]),
                           tensor(TARGET_LENGTHS[possible]), reduction=reduction)
        return value if reduction != "none" else value * Tensor([1.0, -2.0, 0.5])

    assert autograd.gradcheck(loss, [leaf(LOGITS[:, :3] * 0.5)])


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_values_and_gradients_match_pytorch(reduction, layout):
    import torch

    targets = TARGETS if layout == "padded" else concatenated()
    for zero_infinity in (False, True):
        logits = leaf(LOGITS)
        loss = F.ctc_loss(logits.log_softmax(2), tensor(targets), tensor(INPUT_LENGTHS), tensor(TARGET_LENGTHS),
                          reduction=reduction, zero_infinity=zero_infinity)
        torch_logits = torch.tensor(LOGITS, requires_grad=True)
        expected = torch.nn.functional.ctc_loss(torch_logits.log_softmax(2), torch.tensor(targets),
                                                torch.tensor(INPUT_LENGTHS), torch.tensor(TARGET_LENGTHS),
                                                reduction=reduction, zero_infinity=zero_infinity)
        np.testing.assert_allclose(loss.numpy(), expected.detach().numpy(), rtol=1e-12)
        if not zero_infinity and reduction != "none":
            assert np.isinf(loss.item())
            continue
        weights = np.arange(1.0, 1.0 + loss.numel()).reshape(loss.shape)
        (loss * Tensor(weights)).sum().backward()
        (expected * torch.tensor(weights)).sum().backward()
        grad, expected_grad = logits.grad.numpy(), torch_logits.grad.numpy()
        # without zero_infinity the impossible sample's gradient is NaN on its frames (0 after them), as PyTorch's
        assert np.isnan(grad[:, 3]).any() != zero_infinity
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-13)  # NaN where PyTorch has NaN


@pytest.mark.torch
def test_unbatched_blank_elsewhere_float32_and_the_module_match_pytorch():
    import torch

    logits = LOGITS[:, 0]
    ours = nn.CTCLoss(blank=4)(leaf(logits).log_softmax(1), tensor(np.array([1, 2, 2])), [6], [3])
    theirs = torch.nn.CTCLoss(blank=4)(torch.tensor(logits).log_softmax(1), torch.tensor([1, 2, 2]),
                                       torch.tensor([6]), torch.tensor([3]))
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-12)
    single = Tensor(LOGITS[:, :3].astype(np.float32)).log_softmax(2)
    loss = F.ctc_loss(single, tensor(TARGETS[:3]), tensor(INPUT_LENGTHS[:3]), tensor(TARGET_LENGTHS[:3]))
    expected = torch.nn.functional.ctc_loss(torch.tensor(LOGITS.astype(np.float32)).log_softmax(2)[:, :3],
                                            torch.tensor(TARGETS[:3]), torch.tensor(INPUT_LENGTHS[:3]),
                                            torch.tensor(TARGET_LENGTHS[:3]))
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-5)


def test_gradient_of_the_gradient_is_refused_as_in_pytorch():
    log_probs = leaf(LOGITS[:, :1]).log_softmax(2)
    loss = F.ctc_loss(log_probs, tensor(TARGETS[:1]), [6], [3])
    (grad,) = autograd.grad(loss, [log_probs], create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        grad.sum().backward()


def test_bad_arguments_raise():
    log_probs = Tensor(LOGITS).log_softmax(2)
    with pytest.raises(RuntimeError, match="input_lengths"):
        F.ctc_loss(log_probs, tensor(TARGETS), tensor([7, 1, 1, 1]), tensor(TARGET_LENGTHS))
    with pytest.raises(RuntimeError, match="blank"):
        F.ctc_loss(log_probs, tensor(TARGETS), tensor(INPUT_LENGTHS), tensor(TARGET_LENGTHS), blank=9)
    with pytest.raises(RuntimeError, match="targets must be classes in"):
        F.ctc_loss(log_probs, tensor(TARGETS + 10), tensor(INPUT_LENGTHS), tensor(TARGET_LENGTHS))


def test_impossible_sample_has_a_nan_gradient_on_its_frames_even_where_its_loss_is_unused(T):
    # PyTorch's backward gives e^(-inf + inf) there: NaN on the sample's input frames, 0 after them, however the
    # losses are reduced or selected (zero_infinity is what makes it 0)
    functional = F if T is autograd else T.nn.functional
    logits = T.tensor(LOGITS, requires_grad=True)
    losses = functional.ctc_loss(logits.log_softmax(2), T.tensor(TARGETS), T.tensor(INPUT_LENGTHS),
                                 T.tensor(TARGET_LENGTHS), reduction="none")
    assert np.isinf(losses[3].item())
    losses[:3].sum().backward()
    grad = logits.grad.numpy()
    assert np.isnan(grad[:3, 3]).all() and (grad[3:, 3] == 0).all() and np.isfinite(grad[:, :3]).all()


def test_a_sample_without_frames_spells_only_the_empty_target(T):
    # an utterance subsampled to no frames: PyTorch gives a loss of 0 for an empty target, inf for any other, and
    # no gradient (there are no frames for a NaN to land on)
    functional = F if T is autograd else T.nn.functional
    logits = T.tensor(LOGITS[:, :3], requires_grad=True)
    losses = functional.ctc_loss(logits.log_softmax(2), T.tensor(TARGETS[:3]), T.tensor([6, 0, 0]),
                                 T.tensor([3, 2, 0]), reduction="none")
    assert losses[1].item() == np.inf and losses[2].item() == 0.0 and np.isfinite(losses[0].item())
    losses[0].backward()
    grad = logits.grad.numpy()
    assert np.isfinite(grad).all() and (grad[:, 1:] == 0).all()
    mean = functional.ctc_loss(logits.log_softmax(2), T.tensor(TARGETS[:3]), T.tensor([6, 0, 0]),
                               T.tensor([3, 2, 0]), zero_infinity=True)
    np.testing.assert_allclose(mean.item(), losses[0].item() / 3 / 3, rtol=1e-12)


def test_concatenated_targets_must_be_exactly_the_target_lengths(T):
    functional = F if T is autograd else T.nn.functional
    log_probs = T.tensor(LOGITS).log_softmax(2)
    with pytest.raises(RuntimeError, match="size 8 at dimension 0"):  # 3 + 2 + 0 + 3 = 8 labels, 8 + 2 given
        functional.ctc_loss(log_probs, T.tensor(np.r_[concatenated(), 1, 2]), T.tensor(INPUT_LENGTHS),
                            T.tensor(TARGET_LENGTHS))
    with pytest.raises(RuntimeError, match="size 2 at dimension 0"):  # an unbatched target is concatenated too
        functional.ctc_loss(log_probs[:, 0], T.tensor([1, 2, 3]), T.tensor(6), T.tensor(2))
