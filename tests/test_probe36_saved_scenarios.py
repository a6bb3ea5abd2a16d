"""The ways a saved index can be written, as PyTorch counts them: under no_grad (still a write: refused), through a
view of it, through the base of a view that was saved, through detach() (which shares the version counter: refused),
after a first backward that kept the graph (retain_graph: the second is refused); and through ``.data``, which
PyTorch does not count (no version bump, no error: the gradient reads the new values, the user's own doing).

Each runs on ours, and on PyTorch where it is installed, with the same outcome."""

import numpy as np
import pytest

import autograd

WEIGHTS = [[1.0, 2.0], [3.0, 4.0]]


def _sorted_then(T, write):
    x = T.tensor([[1.0, 5.0], [3.0, 2.0]], requires_grad=True)
    values, indices = x.sort(1)
    write(T, values, indices)
    (values * T.tensor(WEIGHTS)).sum().backward()
    return x.grad


def _under_no_grad(T, values, indices):
    with T.no_grad():
        indices.zero_()


def _through_a_row(T, values, indices):
    indices[0].zero_()


def _through_a_column_with_the_same_values(T, values, indices):
    indices[:, 0].add_(0)


def _through_detach(T, values, indices):
    indices.detach().zero_()


def _after_a_kept_backward(T, values, indices):
    (values * T.tensor(WEIGHTS)).sum().backward(retain_graph=True)
    indices.add_(0)


REFUSED = {
    "under no_grad": _under_no_grad,
    "through a view": _through_a_row,
    "through a view, the same values": _through_a_column_with_the_same_values,
    "through detach()": _through_detach,
    "after a backward with retain_graph": _after_a_kept_backward,
}


@pytest.mark.parametrize("name", REFUSED)
def test_a_write_to_the_saved_indices_is_refused(name):
    with pytest.raises(RuntimeError, match=r"^one of the variables needed for gradient computation has been "
                                           r"modified by an inplace operation: \[torch.LongTensor \[2, 2\]\] is at "
                                           r"version 1; expected version 0 instead"):
        _sorted_then(autograd, REFUSED[name])


@pytest.mark.parametrize("name", REFUSED)
def test_pytorch_refuses_it_too(name):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match=r"\[torch.LongTensor \[2, 2\]\] is at version 1; expected version 0"):
        _sorted_then(torch, REFUSED[name])


def _gather_by_a_view_then_write_its_base(T):
    x = T.tensor([1.0, 5.0, 3.0, 2.0], requires_grad=True)
    base = T.tensor([3, 0, 1, 2])
    y = x.gather(0, base[:2])
    base.add_(0)
    (y * T.tensor([1.0, 2.0])).sum().backward()


def test_writing_the_base_of_a_saved_view_is_refused():
    with pytest.raises(RuntimeError, match=r"\[torch.LongTensor \[2\]\] is at version 1; expected version 0"):
        _gather_by_a_view_then_write_its_base(autograd)


def test_pytorch_refuses_the_base_too():
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match=r"\[torch.LongTensor \[2\]\] is at version 1; expected version 0"):
        _gather_by_a_view_then_write_its_base(torch)


def test_a_data_write_is_not_counted():
    """x.data shares the values, not the version: no refusal. The gradient then reads the moved indices, as
    PyTorch's does (which of the duplicates' contributions it keeps is each library's scatter's: not compared)."""
    x = autograd.tensor([[1.0, 5.0], [3.0, 2.0]], requires_grad=True)
    values, indices = x.sort(1)
    indices.data.zero_()
    assert indices._version == 0
    (values * autograd.tensor(WEIGHTS)).sum().backward()
    assert x.grad.numpy()[:, 1].tolist() == [0.0, 0.0]  # (everything went to column 0)


def test_a_backward_with_retain_graph_then_another_without_a_write():
    """retain_graph keeps the watch and the indices: a second backward gives the same gradient again."""
    x = autograd.tensor([[1.0, 5.0], [3.0, 2.0]], requires_grad=True)
    values, indices = x.sort(1)
    loss = (values * autograd.tensor(WEIGHTS)).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2 * 1.0, 2 * 2.0], [2 * 4.0, 2 * 3.0]])


def test_the_indices_written_after_the_backward_are_no_ones_business():
    """Once the graph is freed the indices are the user's: a write after the backward raises nothing."""
    x = autograd.tensor([[1.0, 5.0], [3.0, 2.0]], requires_grad=True)
    values, indices = x.sort(1)
    (values * autograd.tensor(WEIGHTS)).sum().backward()
    indices.zero_()
    assert indices.tolist() == [[0, 0], [0, 0]]
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 2.0], [4.0, 3.0]])
