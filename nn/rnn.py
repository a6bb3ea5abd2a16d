"""Recurrent layers with PyTorch's names, parameter layouts and gate orders: ``RNN``, ``LSTM``,
``GRU`` and their one-step cells ``RNNCell``, ``LSTMCell``, ``GRUCell``.

Parameters of layer k (``_reverse`` appended for the backward direction):
``weight_ih_l{k}`` (G·H, in), ``weight_hh_l{k}`` (G·H, P), ``bias_ih_l{k}``, ``bias_hh_l{k}``
(G·H) and, for an LSTM with ``proj_size`` P, ``weight_hr_l{k}`` (P, H); the gates are
stacked in PyTorch's order: LSTM i, f, g, o; GRU r, z, n. So a PyTorch ``state_dict``
loads as it is. All start as U(-1/√H, 1/√H).

Each layer and direction is one fused node (``nn.recurrent_layers``); layers are
stacked, directions joined along features, and dropout applied between layers
when training, as PyTorch does.
"""

import math
import sys
import warnings

import autograd
from autograd import Tensor, _lazy
from autograd.graph import program_stacklevel
from autograd.ops.conversion import type_name
from autograd.ops.splitting import not_views

from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter
from .recurrent_layers import GRULayer, LSTMLayer, RNNLayer, unpack
from .utils.rnn import PackedSequence, packed_to_padded, padded_to_packed

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _run_layer(mode, x, weights, states, reverse=False, batch_sizes=None, bias=True, cell=False):
    """One layer in one direction over time-major x (T, B, I): y (T, B, P), h_n and, for the LSTM, c_n; each a
    tensor of its own, not a view of the layer's flat output (so ``h.detach_()`` between truncated steps works).
    ``bias``: False where b_ih and b_hh are zeros standing for none; ``cell``: one step of a cell module."""
    w_ih, w_hh, b_ih, b_hh, *projection = weights
    steps, batch = x.shape[0], x.shape[1]
    options = {"reverse": reverse, "batch_sizes": batch_sizes, "bias": bias, "cell": cell}
    if mode == "LSTM":
        flat = LSTMLayer.apply(x, w_ih, w_hh, b_ih, b_hh, *states, *projection, **options)
        return not_views(unpack(flat, steps, batch, states[0].shape[-1], states[1].shape[-1]))
    if mode == "GRU":
        flat = GRULayer.apply(x, w_ih, w_hh, b_ih, b_hh, *states, **options)
    else:
        flat = RNNLayer.apply(x, w_ih, w_hh, b_ih, b_hh, *states, nonlinearity=mode[4:].lower(), **options)
    return not_views(unpack(flat, steps, batch, states[0].shape[-1]))


def _check_size(name, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero")


class RNNBase(Module):
    """The multi-layer, optionally bidirectional recurrence shared by RNN, LSTM and GRU."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        if mode not in _GATES:
            raise ValueError("Unrecognized RNN mode: " + mode)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=program_stacklevel())
        for name, flag in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(flag).__name__}")
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bidirectional, proj_size
        gate_size, real_hidden = _GATES[mode] * hidden_size, proj_size or hidden_size
        directions = 2 if bidirectional else 1
        self._all_weights = []  # PyTorch's: the parameter names of each layer and direction, in order
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = {"weight_ih": (gate_size, layer_input), "weight_hh": (gate_size, real_hidden)}
                if bias:
                    shapes.update(bias_ih=(gate_size,), bias_hh=(gate_size,))
                if proj_size:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                for name, shape in shapes.items():
                    setattr(self, name + suffix, Parameter(autograd.empty(shape, device=device, dtype=dtype)))
                self._all_weights.append([name + suffix for name in shapes])
        self._flat_weights_names = [name for names in self._all_weights for name in names]
        self.reset_parameters()

    def reset_parameters(self):
        """Every weight and bias ~ U(-1/√H, 1/√H), H = hidden_size (PyTorch's)."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -bound, bound)

    def flatten_parameters(self):
        """PyTorch packs the weights into one buffer for cuDNN; here they are used as they are (a no-op)."""

    @property
    def _flat_weights(self):
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self):
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def _weights(self, layer, direction, given):
        """(w_ih, w_hh, b_ih, b_hh[, w_hr]) of one layer and direction, from ``given`` (the weights the core was
        handed, by name); zero biases without bias."""
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        w_ih, w_hh = given["weight_ih" + suffix], given["weight_hh" + suffix]
        if self.bias:
            b_ih, b_hh = given["bias_ih" + suffix], given["bias_hh" + suffix]
        else:
            b_ih = b_hh = autograd.zeros(w_ih.shape[0], dtype=w_ih.dtype)
        return (w_ih, w_hh, b_ih, b_hh) + ((given["weight_hr" + suffix],) if self.proj_size else ())

    def _state_shapes(self, batch):
        layers = self.num_layers * (2 if self.bidirectional else 1)
        shapes = [(layers, batch, self.proj_size or self.hidden_size)]
        return shapes + [(layers, batch, self.hidden_size)] if self.mode == "LSTM" else shapes

    def forward(self, input, hx=None):
        """The recurrent core, torch.lstm's (gru's, rnn_tanh's, rnn_relu's) place: a subclass of Tensor input
        is asked there, as PyTorch's, and its default gives the outputs and final states back as the subclass."""
        # (read when called: the dispatching one, installed; the weights go along, as to PyTorch's _VF.rnn_tanh, so
        # CPU autocast casts them with the input: autograd/autocast_cpu.py)
        return globals()[self.mode.lower()](input, hx, self, self._flat_weights)

    def _forward(self, input, hx, flat_weights):
        name = {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(self.mode, self.mode)
        is_lstm = self.mode == "LSTM"
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            batch_sizes = tuple(int(b) for b in batch_sizes._data)
            self.check_input(data, input.batch_sizes)
            x, batch, is_batched = packed_to_padded(data, batch_sizes), batch_sizes[0], True
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            if input.ndim not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D"
                                 + (" tensor instead" if name == "RNN" else " instead"))
            is_batched = input.ndim == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            self.check_input(input, None)
            x = input.transpose(0, 1) if self.batch_first else input
            batch = x.shape[1]
            if x.shape[0] == 0:  # (an empty batch runs; no steps is refused, as PyTorch's kernel refuses it)
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        _same_dtype_as_weight(x, flat_weights[0])  # (inside autocast, where check_input lets it through)
        states = self._initial_states(hx, is_batched, batch, x.dtype, name, flat_weights[0])
        if sorted_indices is not None:  # the caller's states follow the caller's order of sequences
            order = sorted_indices._data
            states = [s[:, order] for s in states]

        directions = 2 if self.bidirectional else 1
        given = dict(zip(self._flat_weights_names, flat_weights))  # (by name, once for every layer)
        finals = [[] for _ in states]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                weights = self._weights(layer, direction, given)
                y, *final = _run_layer(self.mode, x, weights, [s[k] for s in states], reverse=bool(direction),
                                       batch_sizes=batch_sizes, bias=self.bias)
                outputs.append(y)
                for store, value in zip(finals, final):
                    store.append(value)
            x = outputs[0] if directions == 1 else autograd.cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                if packed:  # PyTorch drops the packed rows: one draw per real step, in packed order
                    x = packed_to_padded(F.dropout(padded_to_packed(x, batch_sizes), self.dropout, training=True),
                                         batch_sizes)
                else:
                    x = F.dropout(x, self.dropout, training=True)
        finals = [autograd.stack(store) for store in finals]

        if packed:
            if unsorted_indices is not None:
                order = unsorted_indices._data
                finals = [s[:, order] for s in finals]
            output = PackedSequence(padded_to_packed(x, batch_sizes), input.batch_sizes, sorted_indices,
                                    unsorted_indices)
        else:
            output = x.transpose(0, 1) if self.batch_first else x
            if not is_batched:
                output = output.squeeze(batch_dim)
                finals = [s.squeeze(1) for s in finals]
        return output, (tuple(finals) if is_lstm else finals[0])

    # PyTorch's checks, public for subclasses that call or override them

    def check_input(self, input, batch_sizes):
        """The input's dtype (the weights'), rank (2 for a packed sequence's data, else 3) and last size."""
        weight = getattr(self, self._flat_weights_names[0])
        ndim = 2 if batch_sizes is not None else 3
        if input.dtype != weight.dtype and not autograd.amp.is_any_autocast_enabled():  # (autocast casts both)
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
                             f"Convert input: input.to({weight.dtype}), or convert model: model.to({input.dtype})")
        if input.ndim != ndim:
            raise RuntimeError(f"input must have {ndim} dimensions, got {input.ndim}")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.shape[-1]}")

    def get_expected_hidden_size(self, input, batch_sizes):
        """(layers · directions, batch, proj_size or hidden_size): the shape h0 must have."""
        return self._state_shapes(self._batch_of(input, batch_sizes))[0]

    def _batch_of(self, input, batch_sizes):
        if batch_sizes is not None:
            return int(batch_sizes[0])
        return input.shape[0] if self.batch_first else input.shape[1]

    def check_hidden_size(self, hx, expected_hidden_size, msg="Expected hidden size {}, got {}"):
        if tuple(hx.shape) != tuple(expected_hidden_size):
            raise RuntimeError(msg.format(expected_hidden_size, list(hx.shape)))

    def check_forward_args(self, input, hidden, batch_sizes):
        """check_input, then the shape of h0 (and c0: the LSTM's ``hidden`` is the pair)."""
        self.check_input(input, batch_sizes)
        if self.mode == "LSTM":
            self.check_hidden_size(hidden[0], self.get_expected_hidden_size(input, batch_sizes),
                                   "Expected hidden[0] size {}, got {}")
            self.check_hidden_size(hidden[1], self.get_expected_cell_size(input, batch_sizes),
                                   "Expected hidden[1] size {}, got {}")
        else:
            self.check_hidden_size(hidden, self.get_expected_hidden_size(input, batch_sizes))

    def permute_hidden(self, hx, permutation):
        """The states' batch dim (1) reordered by ``permutation`` (None: as they are): a pair for the LSTM."""
        if permutation is None:
            return hx
        if self.mode == "LSTM":
            return hx[0].index_select(1, permutation), hx[1].index_select(1, permutation)
        return hx.index_select(1, permutation)

    def _initial_states(self, hx, is_batched, batch, dtype, name, weight):
        """h0 (and c0 for the LSTM) as a list of (layers·directions, B, ·) tensors, checked (of ``weight``'s
        dtype)."""
        shapes = self._state_shapes(batch)
        if hx is None:
            return [autograd.zeros(shape, dtype=dtype) for shape in shapes]
        states = list(hx) if self.mode == "LSTM" else [hx]
        ndims = [s.ndim for s in states]
        wanted = 3 if is_batched else 2
        if any(d != wanted for d in ndims):
            kind = "batched 3-D" if is_batched else "unbatched 2-D"
            if self.mode == "LSTM":
                raise RuntimeError(f"For {kind} input, hx and cx should also be {wanted}-D but got "
                                   f"({ndims[0]}-D, {ndims[1]}-D) tensors")
            raise RuntimeError(f"For {kind} input, hx should also be {wanted}-D but got {ndims[0]}-D tensor")
        if not is_batched:
            states = [s.unsqueeze(1) for s in states]
        for k, (state, shape) in enumerate(zip(states, shapes)):
            which = f"hidden[{k}]" if self.mode == "LSTM" else "hidden"
            self.check_hidden_size(state, shape, f"Expected {which} size {{}}, got {{}}")
            _same_dtype_as_weight(state, weight)
        return states

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text


class RNN(RNNBase):
    """Elman RNN: h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh), act = tanh or relu.

    Returns (output, h_n): output (T, B, D·H) (batch first if asked) holds the last
    layer's h_t; h_n (layers·D, B, H) each layer's final state.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, proj_size=0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        # proj_size only to refuse it as PyTorch does (a ValueError: only LSTM projects)
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity  # (not in the repr: PyTorch's RNN prints only RNNBase's options)


class LSTM(RNNBase):
    """Long short-term memory (Hochreiter & Schmidhuber, 1997), PyTorch's equations:

        i, f, o = σ(·), g = tanh(·)   of  x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh  (gates i, f, g, o)
        c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)   (h_t = W_hr h_t with proj_size > 0)

    Returns (output, (h_n, c_n)).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device=device, dtype=dtype)

    def get_expected_cell_size(self, input, batch_sizes):
        """(layers · directions, batch, hidden_size): the shape c0 must have."""
        return self._state_shapes(self._batch_of(input, batch_sizes))[-1]


class GRU(RNNBase):
    """Gated recurrent unit (Cho et al., 2014), PyTorch's equations (gates r, z, n):

        r = σ(W_ir x + b_ir + W_hr h + b_hr),   z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),   h' = (1 - z) ⊙ n + z ⊙ h

    Returns (output, h_n).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, *, proj_size=0):
        # proj_size only to refuse it as PyTorch does (a ValueError: only LSTM projects)
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device=device, dtype=dtype)


def lstm(input, hx, module, flat_weights):
    return module._forward(input, hx, flat_weights)


def gru(input, hx, module, flat_weights):
    return module._forward(input, hx, flat_weights)


def rnn_tanh(input, hx, module, flat_weights):
    return module._forward(input, hx, flat_weights)


def rnn_relu(input, hx, module, flat_weights):
    return module._forward(input, hx, flat_weights)


def lstm_cell(input, states, module, weights):
    return module._step(input, states, weights)


def gru_cell(input, states, module, weights):
    return module._step(input, states, weights)


def rnn_tanh_cell(input, states, module, weights):
    return module._step(input, states, weights)


def rnn_relu_cell(input, states, module, weights):
    return module._step(input, states, weights)


_CORES = ("lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell")
# nn.LSTM(x) and nn.LSTMCell(x) ask a subclass of Tensor x at their recurrent core, as PyTorch's torch.lstm
_lazy.dispatch_namespace(sys.modules[__name__], lambda name, function: name in _CORES)


def _same_dtype_as_weight(operand, weight):
    """PyTorch's recurrences promote nothing: an input or state of another dtype than the weights (a
    float64 batch into a float32 cell, a float32 h0 into a .double() LSTM) fails its first product."""
    if operand.dtype != weight.dtype:
        raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got {type_name(operand.dtype)} and "
                           f"{type_name(weight.dtype)}")


class RNNCellBase(Module):
    """One step of a recurrence: parameters weight_ih (G·H, in), weight_hh (G·H, H), bias_ih, bias_hh."""

    mode = None

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        # sizes as PyTorch's cells take them: 0 makes empty weights, a negative one the RuntimeError of
        # autograd.empty (RNNBase's ValueError checks are its own)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        gate_size = _GATES[self.mode] * hidden_size
        made = {"device": device, "dtype": dtype}
        self.weight_ih = Parameter(autograd.empty(gate_size, input_size, **made))
        self.weight_hh = Parameter(autograd.empty(gate_size, hidden_size, **made))
        self.bias_ih = Parameter(autograd.empty(gate_size, **made)) if bias else None
        self.bias_hh = Parameter(autograd.empty(gate_size, **made)) if bias else None
        self.reset_parameters()

    reset_parameters = RNNBase.reset_parameters

    def _cell(self, input, states):
        """The step, torch.lstm_cell's (gru_cell's, rnn_tanh_cell's, rnn_relu_cell's) place: a subclass of Tensor
        among the input and states is asked there, as PyTorch's."""
        weights = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)  # (cast with the input by CPU
        return globals()[self.mode.lower() + "_cell"](input, states, self, weights)  # autocast, as forward's)

    def _step(self, input, states, weights):
        """The states after one step: the layer kernel run for T = 1, with ``weights`` (w_ih, w_hh, b_ih, b_hh:
        the biases None without bias)."""
        name = type(self).__name__
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        is_batched = input.ndim == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if input.shape[1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.shape[1]} expected {self.input_size}")
        batch = input.shape[0]
        given = states is not None
        if not given:
            states = [autograd.zeros(batch, self.hidden_size, dtype=input.dtype)] * (2 if self.mode == "LSTM" else 1)
        for k, state in enumerate(states):
            what = f"hx[{k}]" if self.mode == "LSTM" else "hidden"
            if state.ndim not in (1, 2):
                raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {state.ndim}D instead")
            if given and not is_batched:  # as the input (a 2-D state then fails the size checks, as PyTorch's)
                state = state.unsqueeze(0)
            if state.shape[0] != batch:
                raise RuntimeError(f"Input batch size {batch} doesn't match hidden{k} batch size {state.shape[0]}")
            if state.shape[1] != self.hidden_size:
                raise RuntimeError(f"hidden{k} has inconsistent hidden_size: got {state.shape[1]}, "
                                   f"expected {self.hidden_size}")
            states[k] = state
        w_ih = weights[0]
        for operand in (input, *states):
            _same_dtype_as_weight(operand, w_ih)
        if not self.bias:
            zero = autograd.zeros(w_ih.shape[0], dtype=w_ih.dtype)
            weights = (*weights[:2], zero, zero)
        _, *finals = _run_layer(self.mode, input.unsqueeze(0), weights, states, bias=self.bias, cell=True)
        return finals if is_batched else [s.squeeze(0) for s in finals]

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}" + (", bias=False" if not self.bias else "")
        nonlinearity = getattr(self, "nonlinearity", "tanh")  # RNNCell's (printed unquoted, as PyTorch)
        return text + (f", nonlinearity={nonlinearity}" if nonlinearity != "tanh" else "")


class RNNCell(RNNCellBase):
    """h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh), act = tanh or relu."""

    mode = "RNN_TANH"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.mode, self.nonlinearity = "RNN_" + nonlinearity.upper(), nonlinearity

    def forward(self, input, hx=None):
        return self._cell(input, None if hx is None else [hx])[0]


class LSTMCell(RNNCellBase):
    """One LSTM step (gates i, f, g, o): returns (h', c')."""

    mode = "LSTM"

    def forward(self, input, hx=None):
        if isinstance(hx, Tensor):  # one tensor would be unpacked row by row into (h, c): PyTorch refuses it
            raise TypeError("lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not Tensor")
        if hx is not None and len(hx) != 2:
            raise RuntimeError("lstm_cell expects two hidden states")
        return tuple(self._cell(input, None if hx is None else list(hx)))


class GRUCell(RNNCellBase):
    """One GRU step (gates r, z, n): returns h'."""

    mode = "GRU"

    def forward(self, input, hx=None):
        return self._cell(input, None if hx is None else [hx])[0]

