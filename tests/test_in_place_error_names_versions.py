"""The error for a tensor saved for backward and written in place since names it as PyTorch's does: its type and
sizes, the op that made it ("which is output 0 of Exp", none for a leaf), the version it is at and the one it was
saved at ("is at version 1; expected version 0 instead"). Where more than one write came after, the saved version
is not known here (a version cell keeps the time of its last two writes: graph.bump_version), and the message says
an earlier one.

Each case runs on ours, and on PyTorch where it is installed, but the last.
"""

import pytest

import autograd

START = "one of the variables needed for gradient computation has been modified by an inplace operation: "


def _saved_output_of_exp(T):
    y = T.ones(3, requires_grad=True).exp()
    y.mul_(2)
    return y.sum()


def _saved_input_written_by_add(T):
    a = T.ones(3, requires_grad=True) * 1
    y = a * a
    a.add_(1)
    return y.sum()


def _saved_leaf_without_grad(T):
    x = T.ones(2, 3, dtype=T.float64)
    y = T.ones(2, 3, dtype=T.float64, requires_grad=True) * x
    x.add_(1)
    return y.sum()


def _saved_output_of_sigmoid_written_twice(T):
    y = T.ones(4, requires_grad=True).sigmoid()
    z = y * 1
    y.add_(1)
    y.add_(1)
    return z.sum() + y.sum()


def _base_written_through_a_slice(T):
    y = T.ones(3, requires_grad=True).exp()
    with T.no_grad():
        y[0:2].add_(1)
    return y.sum()


def _saved_by_a_matrix_product(T):
    a = T.ones(2, 2, requires_grad=True) * 1
    y = a @ a
    a.add_(1)
    return y.sum()


CASES = {
    "a saved output": (_saved_output_of_exp, r"\[torch.FloatTensor \[3\]\], which is output 0 of Exp, is at version 1; "
                       "expected version 0 instead"),
    "a saved input": (_saved_input_written_by_add, r"\[torch.FloatTensor \[3\]\], which is output 0 of Add, is at "
                      "version 1; expected version 0 instead"),
    "a leaf": (_saved_leaf_without_grad, r"\[torch.DoubleTensor \[2, 3\]\] is at version 1; expected version 0 "
               "instead"),
    "through a view": (_base_written_through_a_slice, r"\[torch.FloatTensor \[3\]\], which is output 0 of Exp, is at "
                       "version 1; expected version 0 instead"),
    "a matrix product's": (_saved_by_a_matrix_product, r"\[torch.FloatTensor \[2, 2\]\], which is output 0 of Add, is "
                           "at version 1; expected version 0 instead"),
}


@pytest.mark.parametrize("make, named", CASES.values(), ids=CASES.keys())
def test_the_error_names_the_tensor_and_its_versions(T, make, named):
    loss = make(T)
    with pytest.raises(RuntimeError, match=START.replace("(", r"\(") + named):
        loss.backward()


def test_after_two_writes_the_saved_version_is_said_to_be_earlier():
    loss = _saved_output_of_sigmoid_written_twice(autograd)
    with pytest.raises(RuntimeError, match=r"\[torch.FloatTensor \[4\]\], which is output 0 of Sigmoid, is at "
                                           r"version 2; expected an earlier version instead \(it was written more "
                                           r"than once since it was saved\)"):
        loss.backward()


def test_versions_count_every_write():
    x = autograd.ones(3)
    assert x._version == 0
    for written in range(1, 4):
        x.add_(1)
        assert x._version == written
        assert x[1:]._version == written  # (a view shares the count)
