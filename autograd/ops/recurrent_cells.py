"""One step of a recurrence: ``autograd.rnn_tanh_cell``, ``rnn_relu_cell``, ``lstm_cell`` and ``gru_cell``,
PyTorch's top-level cells, ``(input, hx, w_ih, w_hh, b_ih=None, b_hh=None)``, with its gate orders:

    RNN:   h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh),  act = tanh or relu
    LSTM:  i, f, g, o = σ, σ, tanh, σ of the four quarters of x W_ihᵀ + b_ih + h W_hhᵀ + b_hh
           c' = f c + i g,   h' = o tanh(c')                      (hx = (h, c); returns (h', c'))
    GRU:   r, z = σ of the first two thirds of (x W_ihᵀ + b_ih) + (h W_hhᵀ + b_hh)
           n = tanh(x W_ih,nᵀ + b_ih,n + r (h W_hh,nᵀ + b_hh,n)),   h' = (1 - z) n + z h

input (batch, input_size), h and c (batch, hidden_size), w_ih (G·hidden, input_size), w_hh
(G·hidden, hidden_size). Composed of differentiable ops, so gradients of every order are theirs.
``nn``'s recurrent layers run their fused kernels forward and these steps for a gradient with a
graph of its own (create_graph=True).
"""

from ..errors import check_same_dtype
from .names import names


def _check(name, input, states, w_ih, w_hh, gates):
    """PyTorch's checks of a cell's shapes (its messages)."""
    check_same_dtype(name, input, hx=states[0], w_ih=w_ih, w_hh=w_hh)
    for label, tensor in (("input", input),) + tuple((f"hx[{k}]", s) for k, s in enumerate(states)):
        if tensor.ndim != 2:
            raise IndexError(f"{name}: expected {label} to be 2-D (batch, features), got {label} of size "
                             f"{list(tensor.shape)}")
    hidden = w_hh.shape[1]
    if input.shape[1] != w_ih.shape[1]:
        raise RuntimeError(f"input has inconsistent input_size: got {input.shape[1]} expected {w_ih.shape[1]}")
    for label, weight in (("weight_ih", w_ih), ("weight_hh", w_hh)):
        if weight.shape[0] != gates * hidden:
            raise RuntimeError(f"{label} first dim must be {gates} * hidden_size = {gates * hidden}, but got "
                               f"{weight.shape[0]}")
    for k, state in enumerate(states):
        if state.shape[0] != input.shape[0]:
            raise RuntimeError(f"Input batch size {input.shape[0]} doesn't match hidden{k} batch size "
                               f"{state.shape[0]}")
        if state.shape[1] != hidden:
            raise RuntimeError(f"hidden{k} has inconsistent hidden_size: got {state.shape[1]}, expected {hidden}")


def _affine(x, weight, bias):
    """x Wᵀ + b (b may be None)."""
    y = x @ weight.mT
    return y if bias is None else y + bias


@names("rnn_tanh_cell", method=False)
def rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)."""
    _check("rnn_tanh_cell", input, (hx,), w_ih, w_hh, 1)
    return (_affine(input, w_ih, b_ih) + _affine(hx, w_hh, b_hh)).tanh()


@names("rnn_relu_cell", method=False)
def rnn_relu_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """h' = relu(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)."""
    _check("rnn_relu_cell", input, (hx,), w_ih, w_hh, 1)
    return (_affine(input, w_ih, b_ih) + _affine(hx, w_hh, b_hh)).relu()


@names("lstm_cell", method=False)
def lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """(h', c') from hx = (h, c): gates i, f, g, o; c' = f c + i g, h' = o tanh(c')."""
    if not isinstance(hx, (tuple, list)):
        raise TypeError(f"lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not {type(hx).__name__}")
    if len(hx) != 2:
        raise RuntimeError("lstm_cell expects two hidden states")
    _check("lstm_cell", input, tuple(hx), w_ih, w_hh, 4)
    return lstm_step(input, *hx, w_ih, w_hh, b_ih, b_hh)


def lstm_step(input, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """``lstm_cell`` without its checks, for a cell whose h is projected to fewer features than c
    (``nn.LSTM(proj_size=P)``: w_hh (4·hidden, P), h (batch, P), c (batch, hidden))."""
    hidden = c.shape[1]
    a = _affine(input, w_ih, b_ih) + _affine(h, w_hh, b_hh)
    i, f = a[:, :hidden].sigmoid(), a[:, hidden:2 * hidden].sigmoid()
    g, o = a[:, 2 * hidden:3 * hidden].tanh(), a[:, 3 * hidden:].sigmoid()
    c = f * c + i * g
    return o * c.tanh(), c


@names("gru_cell", method=False)
def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """h' = (1 - z) n + z h with gates r, z and the candidate n = tanh(x_n + r h_n)."""
    _check("gru_cell", input, (hx,), w_ih, w_hh, 3)
    hidden = hx.shape[1]
    gi, gh = _affine(input, w_ih, b_ih), _affine(hx, w_hh, b_hh)
    r = (gi[:, :hidden] + gh[:, :hidden]).sigmoid()
    z = (gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden]).sigmoid()
    n = (gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:]).tanh()
    return (1 - z) * n + z * hx
