"""Fused recurrent layers: one Primitive runs one layer, in one direction, over a whole sequence.

A recurrence built from Tensor ops records a dozen nodes per time step, and the
engine's per-node cost, not the arithmetic, would then dominate. Here each layer
is one node: its forward is the loop of PyTorch's cell equations on arrays (the
input projections of all steps done by one matmul before the loop, one matmul per
step for all gates), its backward is backpropagation through time written
beside it, with the weight gradients of all steps gathered in one matmul after
the loop.

Inputs (time-major, one direction)::

    x (T, B, I), w_ih (G·H, I), w_hh (G·H, P), b_ih (G·H), b_hh (G·H), h0 (B, P)
    [, c0 (B, H) [, w_hr (P, H)]]          (LSTM only: cell state and projection)

with G gates (RNN 1, GRU 3, LSTM 4), P = H unless the LSTM projects. The output
is one flat array holding y (T, B, P), then h_n (B, P), then c_n (B, H) for the
LSTM; ``unpack`` splits it again.

Parameters of ``apply``: ``reverse`` (walk t = T-1 … 0), ``batch_sizes`` (None,
or for each step how many leading rows are active: a packed batch sorted by
decreasing length; inactive rows keep their state and output 0), and for the
plain RNN ``nonlinearity`` ('tanh' or 'relu').

Second derivatives: the first-order backward is array code, so under
``create_graph=True`` the node instead differentiates ``composite``, the same
layer written with Tensor ops (a loop of ``autograd``'s cells: ``autograd/ops/recurrent_cells.py``),
whose graph carries the higher derivatives.
"""

import autograd
from autograd import Primitive, Tensor
from autograd.backend import xp
from autograd.errors import refuse_unordered
from autograd.ops.elementwise_unary import Relu
from autograd.ops.recurrent_cells import gru_cell, lstm_step, rnn_relu_cell, rnn_tanh_cell


def _sigmoid(x, out=None):
    """σ(x) = (1 + tanh(x/2)) / 2: equal to 1/(1 + e^-x) and never overflows."""
    out = xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def _gate_activation(hidden, dtype):
    """(scale, shift) rows over an LSTM's four gates i, f, g, o such that shift + scale · tanh(scale · a) is
    [σ, σ, tanh, σ](a): σ(a) = 1/2 + tanh(a/2)/2 (scale 1/2, shift 1/2), tanh itself for g (1, 0)."""
    scale = xp.full(4 * hidden, 0.5, dtype=dtype)
    shift = xp.full(4 * hidden, 0.5, dtype=dtype)
    scale[2 * hidden:3 * hidden], shift[2 * hidden:3 * hidden] = 1, 0
    return scale, shift


def unpack(flat, steps, batch, out_size, cell_size=None):
    """Split a layer's flat output into y (T, B, P), h_n (B, P) and, for the LSTM, c_n (B, H)."""
    n_y, n_h = steps * batch * out_size, batch * out_size
    y = flat[:n_y].reshape(steps, batch, out_size)
    h_n = flat[n_y:n_y + n_h].reshape(batch, out_size)
    if cell_size is None:
        return y, h_n
    return y, h_n, flat[n_y + n_h:].reshape(batch, cell_size)


class _RecurrentLayer:
    """The frame shared by the three layers (a mixin, so that only they are registered as
    primitives): step order, active rows, the two backward paths.

    Complex layers (PyTorch's, of a complex dtype) are holomorphic in every input (tanh and σ are;
    the ReLU RNN refuses complex numbers), so with J what ``backward_arrays`` applies transposed,
    PyTorch's conjugate convention dL/dx = Jᴴ dL/dy is conj(Jᵀ conj(dL/dy)): the same array code
    between two conjugations."""

    handles_complex = True
    # read by op observers (the FLOP counter's PyTorch kernels): b_ih and b_hh are zeros standing for no bias (its
    # products are then mm, not addmm); the layer is one step of a cell module (PyTorch's cell ops, never oneDNN's)
    bias = True
    cell = False

    def steps(self, length):
        return range(length - 1, -1, -1) if self.reverse else range(length)

    def active(self, t, batch):
        return batch if self.batch_sizes is None else self.batch_sizes[t]

    def buffer(self, shape, dtype):
        """An array for per-step values: a packed batch leaves rows unwritten, and they must read 0."""
        return xp.empty(shape, dtype=dtype) if self.batch_sizes is None else xp.zeros(shape, dtype=dtype)

    def output(self, y_shape, dtype, *states):
        """The layer's one output [y, h_n(, c_n)], made once, with y (zeros where a packed batch leaves rows
        unwritten) and each state, starting from its initial value, as views into it that the steps write in place
        (where the three were concatenated after the loop). For the layers that do not save y for the backward:
        then no saved array is a view of what the caller holds."""
        size = y_shape[0] * y_shape[1] * y_shape[2]
        flat = self.buffer((size + sum(state.size for state in states),), dtype)
        views = [flat[:size].reshape(y_shape)]
        for state in states:
            views.append(flat[size:size + state.size].reshape(state.shape))
            views[-1][...] = state
            size += state.size
        return flat, *views

    def backward(self, grad, output, *inputs):
        if autograd.is_grad_enabled():  # create_graph=True: a gradient that has a graph of its own
            # Each input that needs a gradient enters the composite through an alias (a view) of its own, and the
            # gradient is taken at the aliases: at the inputs themselves it would be the total derivative, also
            # following an input's history into another input (a cell stepped twice: h1 was made from the same
            # weights), so the earlier steps' share would be counted here as well as at their own nodes.
            aliases = [x.view_as(x) if x.requires_grad else x for x in inputs]
            wanted = [x for x in aliases if x.requires_grad]
            grads = iter(autograd.grad(self.composite(*aliases), wanted, grad_outputs=grad,
                                       create_graph=True, allow_unused=True))
            return tuple(next(grads) if x.requires_grad else None for x in inputs)
        if grad._data.dtype.kind == "c":
            arrays = [None if a is None else xp.conj(a)
                      for a in self.backward_arrays(xp.conj(grad._data), *[x._data for x in inputs])]
        else:
            arrays = self.backward_arrays(grad._data, *[x._data for x in inputs])
        return tuple(Tensor._make(a) if x.requires_grad else None for a, x in zip(arrays, inputs))

    def composite_loop(self, x, h0, step):
        """Run ``step(x_t, state_rows) -> (new_state_rows, h_t)`` over time with Tensor ops,
        keeping inactive rows' state and giving them output 0. ``h0`` is a tuple of states."""
        length, batch = x.shape[0], x.shape[1]
        state, outputs = tuple(h0), [None] * length
        for t in self.steps(length):
            n = self.active(t, batch)
            new, h = step(x[t, :n], tuple(s[:n] for s in state))
            if n < batch:
                new = tuple(autograd.cat([a, s[n:]]) for a, s in zip(new, state))
                h = autograd.cat([h, autograd.zeros(batch - n, h.shape[1], dtype=h.dtype)])
            state, outputs[t] = new, h
        y = autograd.stack(outputs)
        return autograd.cat([y.reshape(-1)] + [s.reshape(-1) for s in state])


class RNNLayer(_RecurrentLayer, Primitive):
    """h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   act = tanh or relu;

    with a_t the pre-activation and δ_t = dL/dh_t (from y_t and from step t+1):
    dL/da_t = δ_t · act'(a_t),   dL/dh_{t-1} = dL/da_t W_hh,
    dL/dW_ih = Σ_t dL/da_tᵀ x_t,   dL/dW_hh = Σ_t dL/da_tᵀ h_{t-1},   dL/db = Σ_t dL/da_t
    """

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0):
        relu = self.nonlinearity == "relu"
        if relu:
            refuse_unordered(x, "relu")
        length, batch = x.shape[:2]
        pre = input_projection(x, w_ih)
        pre += b_ih + b_hh
        h, y, h_prev = h0.copy(), self.buffer(pre.shape, pre.dtype), self.buffer(pre.shape, pre.dtype)
        for t in self.steps(length):
            n = self.active(t, batch)
            h_prev[t, :n] = h[:n]
            a = pre[t, :n]
            a += h[:n] @ w_hh.T
            # relu is autograd's own rule, Relu's forward (its sign at -0: PyTorch's), called for its array alone
            h[:n] = y[t, :n] = Relu.bare.forward(a) if relu else xp.tanh(a, out=a)
        self.saved = h_prev, y
        return xp.concatenate([y.ravel(), h.ravel()])

    def backward_arrays(self, grad, x, w_ih, w_hh, b_ih, b_hh, h0):
        length, batch = x.shape[:2]
        gy, dh = unpack(grad, length, batch, h0.shape[1])
        h_prev, out = self.saved
        slope = 1 - out * out if self.nonlinearity == "tanh" else (out > 0).astype(out.dtype)
        dh, da = dh.copy(), self.buffer(out.shape, out.dtype)
        for t in reversed(self.steps(length)):
            n = self.active(t, batch)
            da[t, :n] = (dh[:n] + gy[t, :n]) * slope[t, :n]
            dh[:n] = da[t, :n] @ w_hh
        return _input_side_grads(da, x, w_ih, h_prev, dh)

    def composite(self, x, w_ih, w_hh, b_ih, b_hh, h0):
        cell = rnn_tanh_cell if self.nonlinearity == "tanh" else rnn_relu_cell

        def step(x_t, state):
            h = cell(x_t, state[0], w_ih, w_hh, b_ih, b_hh)
            return (h,), h

        return self.composite_loop(x, (h0,), step)


def input_projection(x, w_ih):
    """W_ih x_t of every step at once: (T, B, G·H) from x (T, B, I) (sizes spelt out, not -1: ambiguous in an
    empty batch)."""
    length, batch, features = x.shape
    return (x.reshape(length * batch, features) @ w_ih.T).reshape(length, batch, w_ih.shape[0])


def _input_side_grads(dpre, x, w_ih, h_prev, dh0, dpre_hh=None):
    """The gradients gathered over all steps at once, from the pre-activation gradients
    dpre (T, B, G·H) of the input side (and dpre_hh of the hidden side, for the GRU):
    dx, dW_ih, dW_hh, db_ih, db_hh, dh0."""
    flat = dpre.reshape(-1, dpre.shape[-1])
    flat_hh = flat if dpre_hh is None else dpre_hh.reshape(-1, dpre_hh.shape[-1])
    dx = (flat @ w_ih).reshape(x.shape)
    dw_ih = flat.T @ x.reshape(-1, x.shape[-1])
    dw_hh = flat_hh.T @ h_prev.reshape(-1, h_prev.shape[-1])
    db_ih, db_hh = flat.sum(0), flat_hh.sum(0)
    return dx, dw_ih, dw_hh, db_ih, db_hh, dh0


class GRULayer(_RecurrentLayer, Primitive):
    """PyTorch's GRU, gates in the order r, z, n:

        r = σ(W_ir x + b_ir + W_hr h + b_hr),   z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r · (W_hn h + b_hn)),   h' = (1 - z) · n + z · h

    Backward, δ = dL/dh':  dn = δ(1 - z)(1 - n²),  dz = δ(h - n) z(1 - z),
    dr = dn (W_hn h + b_hn) r(1 - r),  dL/dh = δ z + [dr, dz, dn·r] W_hh;
    the input side's pre-activation gradient is [dr, dz, dn].
    """

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0):
        length, batch = x.shape[:2]
        hidden = h0.shape[1]
        gi = input_projection(x, w_ih)
        gi += b_ih
        shape = (length, batch, hidden)
        flat, y, h = self.output(shape, gi.dtype, h0)
        h_prev = self.buffer(shape, gi.dtype)
        rz = self.buffer((length, batch, 2 * hidden), gi.dtype)
        candidate, gh_n = self.buffer(shape, gi.dtype), self.buffer(shape, gi.dtype)
        # the step's products written into arrays made once, h' straight into its place in y
        recurrent, update = xp.empty((batch, 3 * hidden), gi.dtype), xp.empty((batch, hidden), gi.dtype)
        for t in self.steps(length):
            n = self.active(t, batch)
            h_prev[t, :n] = h[:n]
            gh = xp.matmul(h[:n], w_hh.T, out=recurrent[:n])
            gh += b_hh
            r_z = rz[t, :n]
            _sigmoid(xp.add(gi[t, :n, :2 * hidden], gh[:, :2 * hidden], out=r_z), out=r_z)
            gh_n[t, :n] = gh[:, 2 * hidden:]
            c = candidate[t, :n]
            xp.multiply(r_z[:, :hidden], gh[:, 2 * hidden:], out=c)
            c += gi[t, :n, 2 * hidden:]
            xp.tanh(c, out=c)
            step = xp.subtract(h[:n], c, out=update[:n])
            step *= r_z[:, hidden:]
            h[:n] = xp.add(c, step, out=y[t, :n])
        self.saved = h_prev, rz, candidate, gh_n
        return flat

    def backward_arrays(self, grad, x, w_ih, w_hh, b_ih, b_hh, h0):
        length, batch = x.shape[:2]
        hidden = h0.shape[1]
        gy, dh = unpack(grad, length, batch, hidden)
        h_prev, rz, candidate, gh_n = self.saved
        r, z = rz[..., :hidden], rz[..., hidden:]
        shape = (length, batch, 3 * hidden)
        dgi, dgh = self.buffer(shape, gy.dtype), self.buffer(shape, gy.dtype)
        dh = dh.copy()
        # Each step's local derivatives (1 - z)(1 - n²), (h - n) z (1 - z) and (W_hn h + b_hn) r (1 - r) are made
        # in the step, on its rows while they are in the cache, into arrays made once (the whole sequence's, ten
        # temporaries of its size, were made before the loop), as are dL/dh + dL/dy and d W_hh
        delta_sum, through_w, to_n, to_z, to_r, complement = (xp.empty((batch, hidden), gy.dtype) for _ in range(6))
        for t in reversed(self.steps(length)):
            n = self.active(t, batch)
            z_t, r_t, n_t = z[t, :n], r[t, :n], candidate[t, :n]
            one_minus_z = xp.subtract(1, z_t, out=complement[:n])
            to_n_t = xp.multiply(n_t, n_t, out=to_n[:n])
            xp.subtract(1, to_n_t, out=to_n_t)
            to_n_t *= one_minus_z
            to_z_t = xp.subtract(h_prev[t, :n], n_t, out=to_z[:n])
            to_z_t *= z_t
            to_z_t *= one_minus_z
            to_r_t = xp.multiply(gh_n[t, :n], r_t, out=to_r[:n])
            to_r_t *= xp.subtract(1, r_t, out=complement[:n])
            delta = xp.add(dh[:n], gy[t, :n], out=delta_sum[:n])
            d_i, d_h = dgi[t, :n], dgh[t, :n]
            dn = xp.multiply(delta, to_n_t, out=d_i[:, 2 * hidden:])
            xp.multiply(delta, to_z_t, out=d_i[:, hidden:2 * hidden])
            xp.multiply(dn, to_r_t, out=d_i[:, :hidden])
            d_h[:, :2 * hidden] = d_i[:, :2 * hidden]
            xp.multiply(dn, r[t, :n], out=d_h[:, 2 * hidden:])
            delta *= z[t, :n]
            delta += xp.matmul(d_h, w_hh, out=through_w[:n])
            dh[:n] = delta
        return _input_side_grads(dgi, x, w_ih, h_prev, dh, dpre_hh=dgh)

    def composite(self, x, w_ih, w_hh, b_ih, b_hh, h0):
        def step(x_t, state):
            h = gru_cell(x_t, state[0], w_ih, w_hh, b_ih, b_hh)
            return (h,), h

        return self.composite_loop(x, (h0,), step)


class LSTMLayer(_RecurrentLayer, Primitive):
    """PyTorch's LSTM, gates in the order i, f, g, o:

        [i, f, g, o] = [σ, σ, tanh, σ](W_ih x + b_ih + W_hh h + b_hh)
        c' = f · c + i · g,   h' = o · tanh(c')   (then h' = W_hr h' with a projection)

    Backward, δh = dL/dh', δc = dL/dc' + δh · o (1 - tanh²c'):
    di = δc · g,  df = δc · c,  dg = δc · i,  do = δh · tanh c',  dL/dc = δc · f,
    each taken through its activation's derivative to the pre-activation gradient
    d, and dL/dh = d W_hh.
    """

    def forward(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr=None):
        length, batch = x.shape[:2]
        hidden = c0.shape[1]
        acts = input_projection(x, w_ih)
        acts += b_ih + b_hh
        flat, y, h, c = self.output((length, batch, h0.shape[1]), acts.dtype, h0, c0)
        h_prev = self.buffer((length, batch, h0.shape[1]), acts.dtype)
        c_prev, tanh_c = self.buffer((length, batch, hidden), acts.dtype), self.buffer((length, batch, hidden),
                                                                                       acts.dtype)
        h_cell = xp.empty_like(c_prev) if w_hr is not None else None
        scale, shift = _gate_activation(hidden, acts.dtype)
        # the step's products written into arrays made once: the four gates' matmul, i · g, and o · tanh c' straight
        # into its place in y (or the projection's input), where each step allocated three new arrays and copied
        recurrent, input_gate = xp.empty((batch, 4 * hidden), acts.dtype), xp.empty((batch, hidden), acts.dtype)
        for t in self.steps(length):
            n = self.active(t, batch)
            h_prev[t, :n], c_prev[t, :n] = h[:n], c[:n]
            a = acts[t, :n]
            a += xp.matmul(h[:n], w_hh.T, out=recurrent[:n])  # the one matmul of the step, all four gates
            a *= scale  # [σ, σ, tanh, σ] of the four gates in four whole-row passes (σ(x) = (1 + tanh(x/2)) / 2)
            xp.tanh(a, out=a)
            a *= scale
            a += shift
            c_t = c[:n]
            c_t *= a[:, hidden:2 * hidden]
            c_t += xp.multiply(a[:, :hidden], a[:, 2 * hidden:3 * hidden], out=input_gate[:n])
            xp.tanh(c_t, out=tanh_c[t, :n])
            out = xp.multiply(a[:, 3 * hidden:], tanh_c[t, :n], out=y[t, :n] if w_hr is None else h_cell[t, :n])
            if w_hr is not None:
                out = y[t, :n] = out @ w_hr.T
            h[:n] = out
        self.saved = acts, h_prev, c_prev, tanh_c, h_cell
        return flat

    def backward_arrays(self, grad, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr=None):
        length, batch = x.shape[:2]
        hidden, out_size = c0.shape[1], h0.shape[1]
        gy, dh, dc = unpack(grad, length, batch, out_size, hidden)
        acts, h_prev, c_prev, tanh_c, h_cell = self.saved
        i, f, g, o = (acts[..., k * hidden:(k + 1) * hidden] for k in range(4))
        # Each step's local derivatives are made in the step, on its rows while they are in the cache (whole-sequence
        # passes went out to memory and back, fifteen of them), into arrays made once, and taken to the
        # pre-activation gradients in their place in dpre: d(pre-activation)/d(c') for i, f, g and
        # d(pre-activation of o)/dh', g·i(1 - i), c·f(1 - f), i(1 - g²), tanh c'·o(1 - o); and o (1 - tanh² c').
        dpre = self.buffer(acts.shape[:2] + (4, hidden), acts.dtype)
        dh, dc = dh.copy(), dc.copy()
        dw_hr = xp.zeros_like(w_hr) if w_hr is not None else None
        delta_sum = xp.empty((batch, out_size), gy.dtype)
        product, slope, through = (xp.empty((batch, hidden), acts.dtype) for _ in range(3))
        for t in reversed(self.steps(length)):
            n = self.active(t, batch)
            d, cell_tanh, product_n, slope_n = dpre[t, :n], tanh_c[t, :n], product[:n], slope[:n]
            for k, (gate, times) in enumerate(((i, g), (f, c_prev), (g, i), (o, tanh_c))):
                gate, times = gate[t, :n], times[t, :n]
                if k == 2:  # tanh's derivative
                    xp.multiply(gate, gate, out=slope_n)
                    xp.subtract(1, slope_n, out=slope_n)
                    xp.multiply(times, slope_n, out=d[:, k])
                else:  # σ's
                    xp.multiply(times, gate, out=product_n)
                    xp.subtract(1, gate, out=slope_n)
                    xp.multiply(product_n, slope_n, out=d[:, k])
            through_tanh = xp.multiply(cell_tanh, cell_tanh, out=through[:n])
            xp.subtract(1, through_tanh, out=through_tanh)
            through_tanh *= o[t, :n]
            delta = xp.add(dh[:n], gy[t, :n], out=delta_sum[:n])
            if w_hr is not None:
                dw_hr += delta.T @ h_cell[t, :n]
                delta = delta @ w_hr
            delta_c = dc[:n]
            through_tanh *= delta
            delta_c += through_tanh
            d[:, :3] *= delta_c[:, None, :]
            d[:, 3] *= delta
            delta_c *= f[t, :n]
            xp.matmul(d.reshape(n, 4 * hidden), w_hh, out=dh[:n])
        dpre = dpre.reshape(length, batch, 4 * hidden)
        grads = _input_side_grads(dpre, x, w_ih, h_prev, dh)
        return grads + (dc,) + ((dw_hr,) if w_hr is not None else ())

    def composite(self, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr=None):
        def step(x_t, state):
            h, c = lstm_step(x_t, *state, w_ih, w_hh, b_ih, b_hh)
            if w_hr is not None:
                h = h @ w_hr.mT
            return (h, c), h

        return self.composite_loop(x, (h0, c0), step)
