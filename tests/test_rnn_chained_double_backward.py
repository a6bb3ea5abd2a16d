"""Second derivatives through recurrent cells stepped more than once (a GRUCell world model, an LSTMCell policy
differentiated with create_graph=True, as in meta-gradients and gradient penalties): the fused layers' gradient
under create_graph must be their own node's only, not the total derivative through the state's history (which
came from the same weights). Each module's result is checked against the same steps through the functional
cells (torch.gru_cell, lstm_cell, rnn_tanh_cell), in chainrule and in PyTorch."""

import importlib

import numpy as np
import pytest


def nn_of(T):
    return importlib.import_module("nn") if T.__name__ == "autograd" else T.nn


def second_order(T, cell, steps, functional):
    T.manual_seed(0)
    x = T.randn(steps, 2, 3)
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    lstm = isinstance(cell, nn_of(T).LSTMCell)
    state = (T.zeros(2, 4), T.zeros(2, 4)) if lstm else T.zeros(2, 4)
    for t in range(steps):
        if functional:
            step = {True: T.lstm_cell, False: T.gru_cell if isinstance(cell, nn_of(T).GRUCell) else T.rnn_tanh_cell}
            state = step[lstm](x[t], state, *weights)
        else:
            state = cell(x[t], state)
    h = state[0] if lstm else state
    grads = T.autograd.grad(h.sin().sum(), weights, create_graph=True)
    outer = sum((g * g).sum() for g in grads)
    return [g.detach().numpy() for g in T.autograd.grad(outer, weights)]


@pytest.mark.parametrize("kind", ["GRUCell", "LSTMCell", "RNNCell"])
@pytest.mark.parametrize("steps", [1, 3])
def test_chained_cells_second_derivative_is_the_functional_cells(T, kind, steps):
    cell = getattr(nn_of(T), kind)(3, 4)
    fused = second_order(T, cell, steps, functional=False)
    composed = second_order(T, cell, steps, functional=True)
    for a, b in zip(fused, composed):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_state_made_from_the_input_second_derivative(T):
    """An LSTM whose initial state is computed from its own input: the gradient with respect to the input,
    with a graph, is the LSTM node's share only (the encoder's share arrives through h0)."""
    nn = nn_of(T)
    T.manual_seed(1)
    lstm, encoder = nn.LSTM(3, 4), nn.Linear(3, 4)
    x = T.randn(5, 2, 3, requires_grad=True)
    h0 = encoder(x[0]).tanh().unsqueeze(0)
    y, _ = lstm(x, (h0, T.zeros(1, 2, 4)))
    (gx,) = T.autograd.grad(y.sum(), x, create_graph=True)
    (gx_first,) = T.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(gx.detach().numpy(), gx_first.numpy(), rtol=1e-5, atol=1e-7)
