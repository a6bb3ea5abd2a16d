"""The recurrent cells and instance_norm refuse a float64 input into float32 parameters (or states of
another dtype), as PyTorch's do (they promoted silently: time_sequence_prediction without its .double()
ran in float64 here and stopped in PyTorch), and give the same values where the dtypes agree."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close

nn = ported_nn.nn  # the fixture
F = ported_nn.F


@pytest.mark.parametrize("cell", ["RNNCell", "GRUCell", "LSTMCell"])
def test_a_float64_input_into_a_float32_cell_is_refused(T, nn, cell):
    with pytest.raises(RuntimeError, match="same dtype"):
        getattr(nn, cell)(1, 4)(T.zeros(3, 1, dtype=T.float64))


@pytest.mark.parametrize("cell", ["RNNCell", "GRUCell"])
def test_a_hidden_state_of_another_dtype_is_refused(T, nn, cell):
    with pytest.raises(RuntimeError, match="same dtype"):
        getattr(nn, cell)(1, 4)(T.zeros(3, 1), T.zeros(3, 4, dtype=T.float64))


def test_lstm_states_of_another_dtype_are_refused(T, nn):
    with pytest.raises(RuntimeError, match="same dtype"):
        nn.LSTMCell(1, 4).double()(T.zeros(3, 1, dtype=T.float64), (T.zeros(3, 4), T.zeros(3, 4)))


def test_a_double_lstm_cell_steps_as_by_hand(T, nn):
    rng = np.random.default_rng(0)
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    cell = nn.LSTMCell(3, 4).double()
    with T.no_grad():
        for p in cell.parameters():
            p.copy_(T.tensor(rng.standard_normal(tuple(p.shape))))
    w_ih, w_hh, b_ih, b_hh = (p.detach().numpy() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = np.split(gates, 4, axis=1)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    c_next = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h_next, c_out = cell(T.tensor(x), (T.tensor(h), T.tensor(c)))
    close(c_out, c_next, rtol=1e-12)
    close(h_next, sigmoid(o) * np.tanh(c_next), rtol=1e-12)


def test_instance_norm_refuses_affine_parameters_of_another_dtype(T, F):
    x = T.tensor(np.random.default_rng(0).standard_normal((2, 4, 3, 3)))  # float64
    with pytest.raises(RuntimeError):
        F.instance_norm(x, weight=T.ones(4), bias=T.zeros(4))


def test_instance_norm_takes_running_statistics_of_another_dtype(T, F):
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3))
    running_mean, running_var = T.zeros(4), T.ones(4)  # float32, the float64 input's statistics go in
    y = F.instance_norm(T.tensor(x), running_mean, running_var, momentum=0.5)
    close(y, (x - x.mean((2, 3), keepdims=True)) / np.sqrt(x.var((2, 3), keepdims=True) + 1e-5), rtol=1e-10)
    close(running_mean, 0.5 * x.mean((2, 3)).mean(0), rtol=1e-6)
