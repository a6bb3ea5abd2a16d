"""The indices a selection returns are saved by PyTorch's node (SortBackward0's ``_saved_indices``, MaxBackward0's,
CummaxBackward0's, MaxPool2DWithIndicesBackward0's...), and so is max()'s result over all elements (MaxBackward1's
``_saved_result``): writing one in place after the forward, even with the same values (add_(0) bumps the version),
refuses the backward. Ours gathered by the same array the indices tensor holds, so a write moved the gradient
silently (sort: [[2, 0], [2, 0]] for x.sort(1) with its indices zeroed) or out of bounds (max: an IndexError).

Each case: ours raises PyTorch's RuntimeError, its message naming the tensor as PyTorch's does ("[torch.LongTensor
[2, 2]] is at version 1; expected version 0 instead"); where torch is installed, the same words up to there. Writes
the node does not see (the sorted input, which SortBackward0 does not save) leave the gradients PyTorch gives."""


import numpy as np
import pytest

import autograd
import autograd.special  # noqa: F401  (T.special below)
import nn.functional as F
from tests.saved_write_probe import START, Leaf, message_words, probe

X = Leaf(np.array([[1.0, 5.0, 4.0], [3.0, 2.0, 6.0]]))
IMAGE = Leaf(np.arange(32.0).reshape(1, 2, 4, 4) % 7)


def _functional(T):
    return T.nn.functional if T is not autograd else F


SELECTIONS = {  # name: (call, spec, the written output, the message's tensor)
    "sort": (lambda T, x: x.sort(1), [X], "out 1", "[torch.LongTensor [2, 3]]"),
    "sort stable": (lambda T, x: T.sort(x, dim=1, stable=True), [X], "out 1", "[torch.LongTensor [2, 3]]"),
    "topk": (lambda T, x: x.topk(2, 1), [X], "out 1", "[torch.LongTensor [2, 2]]"),
    "kthvalue": (lambda T, x: x.kthvalue(2, 1), [X], "out 1", "[torch.LongTensor [2]]"),
    "kthvalue keepdim": (lambda T, x: x.kthvalue(2, 1, keepdim=True), [X], "out 1", "[torch.LongTensor [2, 1]]"),
    "max(dim)": (lambda T, x: x.max(1), [X], "out 1", "[torch.LongTensor [2]]"),
    "min(dim)": (lambda T, x: x.min(0, keepdim=True), [X], "out 1", "[torch.LongTensor [1, 3]]"),
    "max of 0-d": (lambda T, x: x.max(0), [Leaf(np.array(2.0))], "out 1", "[torch.LongTensor []]"),
    "median(dim)": (lambda T, x: x.median(1), [X], "out 1", "[torch.LongTensor [2]]"),
    "nanmedian(dim)": (lambda T, x: x.nanmedian(0), [X], "out 1", "[torch.LongTensor [3]]"),
    "mode": (lambda T, x: x.mode(1), [X], "out 1", "[torch.LongTensor [2]]"),
    "cummax": (lambda T, x: x.cummax(1), [X], "out 1", "[torch.LongTensor [2, 3]]"),
    "cummin": (lambda T, x: T.cummin(x, 0), [X], "out 1", "[torch.LongTensor [2, 3]]"),
    "frexp's exponent": (lambda T, x: T.frexp(x), [X], "out 1", "[torch.IntTensor [2, 3]]"),
    "max_pool2d's indices": (lambda T, x: _functional(T).max_pool2d(x, 2, return_indices=True), [IMAGE], "out 1",
                             "[torch.LongTensor [1, 2, 2, 2]]"),
    "adaptive_max_pool2d's indices": (lambda T, x: _functional(T).adaptive_max_pool2d(x, 2, return_indices=True),
                                      [IMAGE], "out 1", "[torch.LongTensor [1, 2, 2, 2]]"),
    "cummax's input": (lambda T, x: T.cummax(x, 1), [X], "arg 0", "[torch.DoubleTensor [2, 3]]"),
    "cummin's input": (lambda T, x: T.cummin(x, 1), [X], "arg 0", "[torch.DoubleTensor [2, 3]]"),
    "max_pool2d's input": (lambda T, x: _functional(T).max_pool2d(x, 2, return_indices=True), [IMAGE], "arg 0",
                           "[torch.DoubleTensor [1, 2, 4, 4]]"),
    "special.i1e's result": (lambda T, x: T.special.i1e(x), [X], "out 0",
                             "[torch.DoubleTensor [2, 3]], which is output 0 of SpecialI1E,"),
    "special.erfcx's result": (lambda T, x: T.special.erfcx(x), [X], "out 0",
                               "[torch.DoubleTensor [2, 3]], which is output 0 of SpecialErfcx,"),
    "max()'s result": (lambda T, x: x.max(), [X], "out 0", "[torch.DoubleTensor []], which is output 0 of Max1,"),
    "min()'s result": (lambda T, x: x.min(), [X], "out 0", "[torch.DoubleTensor []], which is output 0 of Min1,"),
    "median()'s result": (lambda T, x: x.median(), [X], "out 0",
                          "[torch.DoubleTensor []], which is output 0 of Median,"),
    "nanmedian()'s result": (lambda T, x: x.nanmedian(), [X], "out 0",
                             "[torch.DoubleTensor []], which is output 0 of Nanmedian,"),
}


@pytest.mark.parametrize("kind", ["value", "same"])
@pytest.mark.parametrize("name", SELECTIONS)
def test_writing_a_saved_index_or_result_refuses_the_backward(name, kind):
    call, spec, target, tensor = SELECTIONS[name]
    outcome, error = probe(autograd, call, spec, target, kind)
    assert outcome == "raised" and type(error) is RuntimeError, (outcome, error)
    assert str(error).startswith(START + tensor), str(error)
    assert "is at version 1; expected version 0 instead" in str(error)


@pytest.mark.parametrize("kind", ["value", "same"])
@pytest.mark.parametrize("name", SELECTIONS)
def test_the_refusal_is_pytorchs(name, kind):
    torch = pytest.importorskip("torch")
    call, spec, target, _ = SELECTIONS[name]
    (ours, our_error), (theirs, their_error) = (probe(T, call, spec, target, kind) for T in (autograd, torch))
    assert ours == theirs == "raised"
    assert message_words(our_error, target) == message_words(their_error, target)


def test_sort_with_its_indices_zeroed_no_longer_gives_a_wrong_gradient():
    """The lead's case: x.sort(1), the indices zeroed, then v.sum().backward() gave x.grad [[2, 0], [2, 0]]."""
    x = autograd.tensor([[1.0, 5.0], [3.0, 2.0]], requires_grad=True)
    values, indices = x.sort(1)
    indices.zero_()
    with pytest.raises(RuntimeError, match=r"\[torch.LongTensor \[2, 2\]\] is at version 1; expected version 0"):
        values.sum().backward()
    assert x.grad is None


def test_max_with_its_indices_moved_raises_pytorchs_error_not_an_index_error():
    x = autograd.tensor([[1.0, 5.0], [3.0, 2.0]], requires_grad=True)
    values, indices = x.max(1)
    indices.add_(1)
    with pytest.raises(RuntimeError, match=r"\[torch.LongTensor \[2\]\] is at version 1; expected version 0"):
        values.sum().backward()


UNSAVED = {  # writes PyTorch's node does not see: the input of a selection (it saves the indices only)
    "sort's input": (lambda T, x: x.sort(1), [X], "arg 0"),
    "topk's input": (lambda T, x: x.topk(2, 1), [X], "arg 0"),
    "max(dim)'s input": (lambda T, x: x.max(1), [X], "arg 0"),
}



@pytest.mark.parametrize("name", UNSAVED)
def test_writing_what_the_node_did_not_save_keeps_the_gradient(name):
    """The gradient is the one of the forward that ran: the write changes nothing the backward reads."""
    call, spec, target = UNSAVED[name]
    before, after = probe(autograd, call, spec), probe(autograd, call, spec, target, "value")
    assert before[0] == after[0] == "grads"
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
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_max_over_all_elements_still_shares_the_gradient_between_ties():
    """max() now reads its saved result for the ties (MaxBackward1's): the same gradient as before."""
    x = autograd.tensor([[1.0, 5.0], [5.0, 2.0]], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 0.5], [0.5, 0.0]])
    x.grad = None
    x.median().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 0.0], [0.0, 1.0]])
    y = autograd.tensor([1.0, float("nan"), float("nan")], requires_grad=True)
    y.max().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [0.0, 0.5, 0.5])
