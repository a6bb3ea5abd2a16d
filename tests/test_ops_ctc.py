"""The CTC primitives of autograd/ops/ctc.py (``autograd.ctc_loss``, ``F.ctc_loss``): the exact gradient
against finite differences on drawn log-probabilities and targets, and the refused derivative of the
gradient (as PyTorch's). PyTorch's values and gradients: tests/test_ctc.py and
tests/test_torch_level_layers.py."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from tests.test_ops import _run, arrays, leaf


@st.composite
def frames_and_targets(draw):
    """([log_probs], (targets, input_lengths, target_lengths)): (T, N, C) log-probabilities and padded
    targets that each fit their frames (an alignment exists: a finite loss)."""
    frames, batch, classes = draw(st.integers(2, 5)), draw(st.integers(1, 3)), draw(st.integers(2, 4))
    logits = draw(arrays((frames, batch, classes)))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    input_lengths = [draw(st.integers(1, frames)) for _ in range(batch)]
    targets, target_lengths = np.zeros((batch, frames), dtype=np.int64), []
    for n, length in enumerate(input_lengths):
        labels = draw(st.lists(st.integers(1, classes - 1), max_size=length))
        while labels and len(labels) + sum(a == b for a, b in zip(labels, labels[1:])) > length:
            labels.pop()  # a repeat needs a blank between: drop labels until they fit
        targets[n, :len(labels)] = labels
        target_lengths.append(len(labels))
    return [leaf(log_probs)], (targets, input_lengths, target_lengths)


def _loss(log_probs, labels):
    targets, input_lengths, target_lengths = labels
    losses = autograd.ctc_loss(log_probs, autograd.tensor(targets), input_lengths, target_lengths, 0, 0)
    return losses * autograd.tensor(np.linspace(1.0, -1.0, len(target_lengths)))


def _gradient(log_probs, labels):
    (grad,) = autograd.grad(_loss(log_probs, labels).sum(), [log_probs], create_graph=True)
    return grad


CASES = {  # (checked below, as every primitive of autograd's: tests/test_ops.py)
    "CTCNegativeLogLikelihood": (frames_and_targets(), _loss),
    "CTCGradient": (frames_and_targets(), _gradient),  # its own derivative refused, as PyTorch's
}


@given(data=st.data())
def test_gradient_matches_finite_differences(data):
    tensors, fn = _run(CASES["CTCNegativeLogLikelihood"], data)
    assert autograd.gradcheck(fn, tensors)


@given(data=st.data())
def test_the_derivative_of_the_gradient_is_refused(data):
    """CTCGradient's forward is what gradcheck above checked (the first derivative); its own derivative
    is not implemented, as in PyTorch."""
    tensors, fn = _run(CASES["CTCGradient"], data)
    grad = fn(*tensors)
    assert np.isfinite(grad.numpy()).all()
    with pytest.raises(RuntimeError, match="not implemented"):
        grad.sum().backward()
