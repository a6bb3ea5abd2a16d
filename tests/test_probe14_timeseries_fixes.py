"""Fixes found by the time-series programs (tests/test_programs_probe14_timeseries_*.py), each checked on
chainrule and, where installed, on PyTorch (the ``T`` fixture)."""

import importlib

import pytest


def test_as_strided_view_reports_its_storage_offset_and_storage(T):
    """x[2:].as_strided(...) without an offset starts at x[2:]'s own offset, and the view shares x's storage
    (its storage_offset was 0 and its data_ptr its own storage's, as if it were a copy)."""
    values = T.arange(20.0).view(10, 2)
    shifted = values[2:]
    windows = shifted.as_strided((2, 4, 2), (4, 2, 1))
    assert windows.storage_offset() == 4
    assert windows.untyped_storage().data_ptr() == values.untyped_storage().data_ptr()
    assert windows[1, 0].tolist() == [8.0, 9.0]
    explicit = values.as_strided((2, 2), (1, 2), 3)
    assert explicit.storage_offset() == 3
    assert explicit.tolist() == [[3.0, 5.0], [4.0, 6.0]]
    explicit[0, 0] = -1.0  # a view: the write shows in values
    assert values[1, 1].item() == -1.0


def test_unpad_sequence_transposes_the_callers_tensor_in_place(T):
    """PyTorch's unpad_sequence (batch_first=False) calls transpose_ on its argument: the caller's padded
    tensor is batch-first afterwards, and a leaf that requires grad is refused (it was left alone here)."""
    N = importlib.import_module("nn" if T.__name__ == "autograd" else "torch.nn")
    padded = T.arange(12.0).view(4, 3)
    sequences = N.utils.rnn.unpad_sequence(padded, T.tensor([4, 2, 1]))
    assert [s.tolist() for s in sequences] == [[0.0, 3.0, 6.0, 9.0], [1.0, 4.0], [2.0]]
    assert tuple(padded.shape) == (3, 4)
    base = T.linspace(0, 1, 12, requires_grad=True)
    T.cat(N.utils.rnn.unpad_sequence((base * 2).view(4, 3), T.tensor([4, 2, 1]))).pow(2).sum().backward()
    assert base.grad.tolist()[:2] == pytest.approx([0.0, 8 / 11], rel=1e-6)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        N.utils.rnn.unpad_sequence(T.zeros(4, 3, requires_grad=True), T.tensor([4, 2, 1]))


def test_vector_to_parameters_makes_views_of_the_vector(T):
    """PyTorch's vector_to_parameters sets ``param.data`` to a view of the vector's slice: a later write to
    the vector shows in the model, and the parameters take the vector's dtype (it copied into them here)."""
    N = importlib.import_module("nn" if T.__name__ == "autograd" else "torch.nn")
    linear = N.Linear(2, 2)
    vector = T.arange(6.0, dtype=T.float64)
    N.utils.vector_to_parameters(vector, linear.parameters())
    vector[0] = 100.0
    assert linear.weight.tolist() == [[100.0, 1.0], [2.0, 3.0]] and linear.bias.tolist() == [4.0, 5.0]
    assert linear.weight.dtype == T.float64 and isinstance(linear.weight, N.Parameter)
    assert linear.weight.requires_grad
    linear(T.ones(1, 2, dtype=T.float64)).sum().backward()
    assert linear.weight.grad.tolist() == [[1.0, 1.0], [1.0, 1.0]]
