"""Tensors a loss or an index op is given and PyTorch's node saves (NllLossBackward0's ``_saved_target`` and
``_saved_weight``, EmbeddingBackward0's ``_saved_indices``, MaxUnpool2DBackward0's, CtcLossBackward0's targets (not
its lengths, read as numbers), the margin and Huber losses' ``_saved_self`` and ``_saved_target``): writing one in
place after the forward, even with the same values, refuses the backward. Ours read the target's or index's array,
which the tensor shares, so a write changed the gradient silently (cross_entropy's target, a 0-d nll_loss target or
embedding index, multi_margin_loss's target, max_unpool's indices), or the node never noticed.

Each case: ours raises PyTorch's RuntimeError naming the tensor; where torch is installed, PyTorch raises too, in
the same words (but for the node that made a written float input, which ours does not name). Writes PyTorch's node
does not see (cross_entropy's class-probability target once smoothed, the weights of a 'none' reduction) keep the
gradient, PyTorch's."""

import numpy as np
import pytest

import autograd
import nn.functional as F
from tests.saved_write_probe import START, Leaf, message_words, probe

SCORES = Leaf(np.arange(12.0).reshape(4, 3) / 7 - 0.5)
LABELS = np.array([2, 1, 0, 1])
CLASS_WEIGHTS = np.array([1.0, 2.0, 3.0])
PREDICTIONS = Leaf(np.array([0.2, -1.5, 0.7, 2.5]))
TARGETS = np.array([0.0, -1.0, 1.5, 0.5])
SIGNS = np.array([1.0, -1.0, -1.0, 1.0])


def _f(T):
    return T.nn.functional if T is not autograd else F


def _ctc(T, log_probs, targets, input_lengths, target_lengths):
    return _f(T).ctc_loss(log_probs.log_softmax(2), targets, input_lengths, target_lengths)


CTC = [Leaf(np.random.default_rng(0).standard_normal((5, 2, 4))), np.array([[1, 2], [3, 3]]), np.array([5, 4]),
       np.array([2, 1])]

SAVED = {  # name: (call, spec, the written argument, the message's tensor)
    "cross_entropy's target": (lambda T, x, t: _f(T).cross_entropy(x, t), [SCORES, LABELS], "arg 1",
                               "[torch.LongTensor [4]]"),
    "cross_entropy's 0-d target": (lambda T, x, t: _f(T).cross_entropy(x, t), [Leaf(np.arange(3.0)), np.array(2)],
                                   "arg 1", "[torch.LongTensor []]"),
    "cross_entropy's weight": (lambda T, x, t, w: _f(T).cross_entropy(x, t, w), [SCORES, LABELS, CLASS_WEIGHTS],
                               "arg 2", "[torch.DoubleTensor [3]]"),
    "cross_entropy's target, 'none'": (lambda T, x, t: _f(T).cross_entropy(x, t, reduction="none"),
                                       [SCORES, LABELS], "arg 1", "[torch.LongTensor [4]]"),
    "cross_entropy's target, smoothed": (lambda T, x, t: _f(T).cross_entropy(x, t, label_smoothing=0.25),
                                         [SCORES, LABELS], "arg 1", "[torch.LongTensor [4]]"),
    "nll_loss's input": (lambda T, x, t: _f(T).nll_loss(x, t), [SCORES, LABELS], "arg 0",
                         "[torch.DoubleTensor [4, 3]]"),
    "nll_loss's target": (lambda T, x, t: _f(T).nll_loss(x, t), [SCORES, LABELS], "arg 1", "[torch.LongTensor [4]]"),
    "nll_loss's 0-d target": (lambda T, x, t: _f(T).nll_loss(x, t), [Leaf(np.arange(3.0)), np.array(2)], "arg 1",
                              "[torch.LongTensor []]"),
    "nll_loss's weight": (lambda T, x, t, w: _f(T).nll_loss(x, t, w), [SCORES, LABELS, CLASS_WEIGHTS], "arg 2",
                          "[torch.DoubleTensor [3]]"),
    "multi_margin_loss's target": (lambda T, x, t: _f(T).multi_margin_loss(x, t), [SCORES, LABELS], "arg 1",
                                   "[torch.LongTensor [4]]"),
    "multi_margin_loss's input": (lambda T, x, t: _f(T).multi_margin_loss(x, t), [SCORES, LABELS], "arg 0",
                                  "[torch.DoubleTensor [4, 3]]"),
    "multilabel_margin_loss's target": (lambda T, x, t: _f(T).multilabel_margin_loss(x, t),
                                        [SCORES, np.array([[2, -1, 0]] * 4)], "arg 1", "[torch.LongTensor [4, 3]]"),
    "huber_loss's target": (lambda T, x, t: _f(T).huber_loss(x, t), [PREDICTIONS, TARGETS], "arg 1",
                            "[torch.DoubleTensor [4]]"),
    "smooth_l1_loss's input": (lambda T, x, t: _f(T).smooth_l1_loss(x, t), [PREDICTIONS, TARGETS], "arg 0",
                               "[torch.DoubleTensor [4]]"),
    "soft_margin_loss's target": (lambda T, x, t: _f(T).soft_margin_loss(x, t), [PREDICTIONS, SIGNS], "arg 1",
                                  "[torch.DoubleTensor [4]]"),
    "embedding's indices": (lambda T, w, i: _f(T).embedding(i, w), [SCORES, np.array([3, 1])], "arg 1",
                            "[torch.LongTensor [2]]"),
    "embedding's 0-d index": (lambda T, w, i: _f(T).embedding(i, w), [SCORES, np.array(2)], "arg 1",
                              "[torch.LongTensor []]"),
    "max_unpool1d's indices": (lambda T, x, i: _f(T).max_unpool1d(x, i, 2),
                               [Leaf(np.arange(4.0).reshape(1, 1, 4)), np.array([[[1, 2, 5, 6]]])], "arg 1",
                               "[torch.LongTensor [1, 1, 4"),  # (PyTorch's: the [1, 1, 4, 1] view it unpools)
    "max_unpool2d's indices": (lambda T, x, i: _f(T).max_unpool2d(x, i, 2),
                               [Leaf(np.arange(4.0).reshape(1, 1, 2, 2)), np.array([[[[0, 3], [9, 14]]]])], "arg 1",
                               "[torch.LongTensor [1, 1, 2, 2]]"),
    "gather's input": (lambda T, x, i: T.gather(x, 1, i), [SCORES, np.array([[0], [2], [1], [1]])], "arg 0",
                       "[torch.DoubleTensor [4, 3]]"),
    "take's input": (lambda T, x, i: T.take(x, i), [SCORES, np.array([0, 5])], "arg 0", "[torch.DoubleTensor [4, 3]]"),
    "masked_select's input": (lambda T, x, m: T.masked_select(x, m), [SCORES, np.eye(4, 3, dtype=bool)], "arg 0",
                              "[torch.DoubleTensor [4, 3]]"),
    "index_add's source": (lambda T, x, i, s: T.index_add(x, 0, i, s),
                           [SCORES, np.array([3, 0]), Leaf(np.ones((2, 3)))], "arg 2", "[torch.DoubleTensor [2, 3]]"),
    "prelu's input": (lambda T, x, w: _f(T).prelu(x, w), [SCORES, Leaf(np.array([0.25]))], "arg 0",
                      "[torch.DoubleTensor [4, 3]]"),
    "cdist's x2": (lambda T, a, b: T.cdist(a, b), [SCORES, Leaf(np.ones((2, 3)))], "arg 1",
                   "[torch.DoubleTensor [2, 3]]"),
    "pad's input, reflect": (lambda T, x: _f(T).pad(x, (1, 1), mode="reflect"), [SCORES], "arg 0",
                             "[torch.DoubleTensor [4, 3]]"),
    "ctc_loss's targets": (_ctc, CTC, "arg 1", "[torch.LongTensor [2, 2]]"),
}


@pytest.mark.parametrize("kind", ["value", "same"])
@pytest.mark.parametrize("name", SAVED)
def test_writing_a_saved_argument_refuses_the_backward(name, kind):
    call, spec, target, tensor = SAVED[name]
    outcome, error = probe(autograd, call, spec, target, kind)
    assert outcome == "raised" and type(error) is RuntimeError, (outcome, error)
    assert str(error).startswith(START + tensor), str(error)
    assert "is at version 1; expected version 0 instead" in str(error)


@pytest.mark.parametrize("kind", ["value", "same"])
@pytest.mark.parametrize("name", SAVED)
def test_the_refusal_is_pytorchs(name, kind):
    torch = pytest.importorskip("torch")
    call, spec, target, _ = SAVED[name]
    (ours, our_error), (theirs, their_error) = (probe(T, call, spec, target, kind) for T in (autograd, torch))
    assert ours == theirs == "raised"
    if not name.startswith("max_unpool1d"):  # (PyTorch's names the view it made, [1, 1, 4, 1]; ours the indices)
        assert message_words(our_error, target) == message_words(their_error, target)


def test_a_zeroed_cross_entropy_target_no_longer_moves_the_gradient():
    """Zeroing the target after the forward gave the gradient of class 0's loss, silently."""
    x = autograd.tensor([[0.5, 1.5, -1.0], [2.0, 0.0, 1.0]], requires_grad=True)
    target = autograd.tensor([2, 1])
    loss = F.cross_entropy(x, target)
    target.zero_()
    with pytest.raises(RuntimeError, match=r"\[torch.LongTensor \[2\]\] is at version 1; expected version 0"):
        loss.backward()


def test_an_unwritten_target_keeps_cross_entropys_gradient():
    """The watch refuses only a write: the gradient without one is softmax - one_hot, over the batch."""
    rows = np.array([[0.5, 1.5, -1.0], [2.0, 0.0, 1.0]])
    x = autograd.tensor(rows, requires_grad=True)
    F.cross_entropy(x, autograd.tensor([2, 1])).backward()
    softmax = np.exp(rows) / np.exp(rows).sum(1, keepdims=True)
    np.testing.assert_allclose(x.grad.numpy(), (softmax - np.eye(3)[[2, 1]]) / 2, rtol=1e-12)


UNSAVED = {  # writes PyTorch's nodes do not see: they keep the gradient
    "cross_entropy's probabilities, smoothed": (
        lambda T, x, t: _f(T).cross_entropy(x, t, label_smoothing=0.25),
        [SCORES, np.full((4, 3), 1 / 3)], "arg 1"),
    "embedding's weight": (lambda T, w, i: _f(T).embedding(i, w), [SCORES, np.array([3, 1])], "arg 0"),
    "ctc_loss's input_lengths": (_ctc, CTC, "arg 2"),
    "ctc_loss's target_lengths": (_ctc, CTC, "arg 3"),
    "pad's input, circular": (lambda T, x: _f(T).pad(x, (1, 1), mode="circular"), [SCORES], "arg 0"),
    "max_unpool1d's input": (lambda T, x, i: _f(T).max_unpool1d(x, i, 2),
                             [Leaf(np.arange(4.0).reshape(1, 1, 4)), np.array([[[1, 2, 5, 6]]])], "arg 0"),
}


@pytest.mark.parametrize("name", UNSAVED)
def test_writing_what_the_node_did_not_save_keeps_the_gradient(name):
    call, spec, target = UNSAVED[name]
    before, after = probe(autograd, call, spec), probe(autograd, call, spec, target, "value")
    assert before[0] == after[0] == "grads", after
    for a, b in zip(before[1], after[1]):
        np.testing.assert_array_equal(a, b)
    assert np.abs(before[1][0]).sum() > 0


@pytest.mark.parametrize("name", UNSAVED)
def test_writing_what_the_node_did_not_save_agrees_with_pytorch(name):
    torch = pytest.importorskip("torch")
    call, spec, target = UNSAVED[name]
    (ours, our_grads), (theirs, their_grads) = (probe(T, call, spec, target, "value") for T in (autograd, torch))
    assert ours == theirs == "grads"
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
