"""Fixes found by the meta-learning probe (27): a recurrent layer's outputs are tensors of their own (not views of
the layer's flat output), detach_() refuses every view as PyTorch's, and Module.double()/to() move no version on."""

import numpy as np
import pytest

import autograd
import nn


def modules():
    """Ours, and PyTorch's where installed."""
    found = [(autograd, nn)]
    try:
        import torch
    except ImportError:
        return found
    return found + [(torch, torch.nn)]


@pytest.mark.parametrize("T, N", modules(), ids=lambda v: getattr(v, "__name__", "")[:8])
def test_recurrent_outputs_are_not_views(T, N):
    T.manual_seed(0)
    for cell in (N.GRUCell(2, 3), N.LSTMCell(2, 3), N.RNNCell(2, 3)):
        out = cell(T.ones(4, 2))
        for h in out if isinstance(out, tuple) else (out,):
            assert not h._is_view() and h._base is None
    for layer in (N.GRU(2, 3), N.LSTM(2, 3), N.RNN(2, 3)):
        y, finals = layer(T.ones(5, 4, 2))
        for t in (y, *(finals if isinstance(finals, tuple) else (finals,))):
            assert not t._is_view()
    h = N.GRUCell(2, 3)(T.ones(2))  # unbatched: squeezed, a view as PyTorch's
    assert h._is_view()


@pytest.mark.parametrize("T, N", modules(), ids=lambda v: getattr(v, "__name__", "")[:8])
def test_detach_in_place_between_truncated_steps(T, N):
    """A learned optimizer's truncated backpropagation: h.detach_() on a GRUCell's state, then the next window's
    gradient reaches the cell's weights only through the steps after it."""
    T.manual_seed(1)
    cell = N.GRUCell(1, 2).double()
    h = T.zeros(3, 2, dtype=T.float64)
    x = T.tensor(np.array([[0.5], [-1.0], [2.0]]))
    h = cell(x, h)
    h.detach_()
    assert h.grad_fn is None and not h.requires_grad
    h2 = cell(x, h)
    (g,) = T.autograd.grad(h2.sum(), cell.weight_hh)
    # by hand: only the last step depends on weight_hh, through W_hh h with h fixed
    (expected,) = T.autograd.grad(cell(x, h.clone()).sum(), cell.weight_hh)
    np.testing.assert_allclose(g.numpy(), expected.numpy(), rtol=1e-12)


@pytest.mark.parametrize("T, N", modules(), ids=lambda v: getattr(v, "__name__", "")[:8])
def test_in_place_write_to_final_state_leaves_output_version(T, N):
    T.manual_seed(2)
    lstm = N.LSTM(2, 3)
    y, (h, c) = lstm(T.ones(4, 1, 2))
    before = y._version
    with T.no_grad():
        c.zero_()
        h.mul_(0.5)
    assert y._version == before and c._version == 1


@pytest.mark.parametrize("T, N", modules(), ids=lambda v: getattr(v, "__name__", "")[:8])
def test_detach_in_place_refuses_every_view(T, N):
    for make in (lambda: T.ones(4, 3)[0], lambda: (T.ones(4, 3, requires_grad=True) * 2)[0],
                 lambda: T.ones(4, 3).view(12)):
        with pytest.raises(RuntimeError, match="Can't detach views in-place. Use detach\\(\\) instead"):
            make().detach_()
    x = T.ones(3, requires_grad=True) * 2
    assert x.detach_() is x and x.grad_fn is None


def test_module_cast_moves_the_version_on_so_a_saved_graph_refuses_backward():
    """Module.double()/float()/to(dtype) give each parameter new memory and move its version on by one (chainrule's
    deliberate difference: PyTorch's param.data = fn(param) keeps the version, and a graph recorded before the cast
    then runs backward on values that mix old and new). Its gradient, if any, is cast too, its version kept."""
    import autograd as T
    import nn as N

    T.manual_seed(3)
    lin = N.Linear(2, 2)
    assert lin.weight._version == 1
    loss = lin(T.ones(1, 2, requires_grad=True)).pow(2).sum()
    lin.weight.grad = T.ones(2, 2)
    lin.double()
    assert lin.weight._version == 2 and lin.weight.dtype == T.float64 and lin.weight.grad.dtype == T.float64
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    lin.float()
    assert lin.weight._version == 3 and lin.weight.dtype == T.float32
    lin.float()  # (already float32: the same memory, no move)
    assert lin.weight._version == 3
    with T.no_grad():
        lin.weight.sub_(1.0)
    assert lin.weight._version == 4
