"""Pooling over 2-d windows of (N, C, H, W) inputs, with no Python loop over positions.

Max pooling takes the maximum of each window; its gradient puts dL/dy back
where each maximum was (the window's first maximum in scan order, as PyTorch):

    y[n,c,i,j] = x[n,c, at the winner of window (i,j)],    dL/dx = Σ over windows of dL/dy there

The winners are kept as one boolean mask per kernel offset; ``MaxPoolSpread``
and ``MaxPoolSelect`` are that scatter and its adjoint gather, each the
other's gradient. ``GatherFlat`` and ``ScatterFlat`` do the same with flat
indices h·W + w (PyTorch's ``return_indices``), for adaptive max pooling.

Average pooling is a windowed sum times a fixed scale (1/divisor) per output
position; ``AvgPool2dTranspose`` is its adjoint.
Both scan the kh·kw kernel offsets, each offset one strided slice of every window.
"""

import math

from ..backend import xp
from ..graph import modes
from ..index_watching import watch_returned_indices
from ..meta import MetaArray, meta_array
from ..primitive import Primitive
from ..tensor import Tensor, tensor_from
from .convolution import full_like_layout, in_layout_of
from .depthwise_convolution import channel_blocks


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling_output_shape: ⌊ or ⌈(size + 2p − d(k−1) − 1) / s⌉ + 1, where with ceil_mode the
    last window must start inside the input or its left padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _padded(x, padding, out, kernel, stride, dilation, fill):
    """x padded by ``padding`` on each side, and on the bottom/right as far as the last window reaches."""
    n, c, h, w = x.shape
    height = max(h + 2 * padding[0], (out[0] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1)
    width = max(w + 2 * padding[1], (out[1] - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1)
    if (height, width) == (h, w):
        return x
    if fill == -xp.inf and x.dtype.kind in "iu":  # integers have no −∞: their least value stands for it
        fill = xp.iinfo(x.dtype).min
    padded = full_like_layout(x, (n, c, height, width), fill)
    padded[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w] = x
    return padded


def _offset_slices(out, kernel, stride, dilation):
    """For each kernel offset (p, q), in scan order: the index of that offset in every window at once."""
    for p in range(kernel[0]):
        rows = slice(p * dilation[0], p * dilation[0] + (out[0] - 1) * stride[0] + 1, stride[0])
        for q in range(kernel[1]):
            yield p, q, (Ellipsis, rows, slice(q * dilation[1], q * dilation[1] + (out[1] - 1) * stride[1] + 1,
                                               stride[1]))


def _first_inside(start, dilation):
    """The first position start + m·d (m ≥ 0) that is not in the left padding."""
    return xp.where(start < 0, start + (-start + dilation - 1) // dilation * dilation, start)


def overlapping(kernel, stride, dilation):
    """True when windows share input positions (a scatter must then add, not assign)."""
    return any(s < d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation))


def _window_slices(x, params, fill):
    """x padded (as far as every window reaches) and its strided slice at each kernel offset, in scan order,
    with that offset's flat position p·d·W + q·d relative to the window's origin."""
    kernel, stride, dilation, out = params["kernel_size"], params["stride"], params["dilation"], params["out"]
    padded = _padded(x, params["padding"], out, kernel, stride, dilation, fill)
    width = x.shape[3]
    return padded, [(p * dilation[0] * width + q * dilation[1], index)
                    for p, q, index in _offset_slices(out, kernel, stride, dilation)]


def _blocks(padded):
    """Slices of the channel axis: the passes over each kernel offset run block by block, each block's operands
    in cache (see channel_blocks), two to three times faster than passes over whole arrays from memory."""
    return channel_blocks(padded.shape[1], padded[:, 0].nbytes)


def max_pool_winners(x, y, params):
    """One boolean mask per kernel offset: where that offset holds its window's maximum y, the first one in
    scan order; where NaN or −∞ occur, PyTorch's scan instead (a later value wins when larger or NaN, and an
    all −∞ window keeps its first position inside the input)."""
    padded, slices = _window_slices(x, params, -xp.inf)
    if xp.isfinite(y).all():
        if len(slices) == 1:
            return [full_like_layout(y, y.shape, True, dtype=bool)]
        masks = [full_like_layout(y, y.shape, None, dtype=bool) for _ in slices]  # every mask in y's layout
        for block in _blocks(padded):
            x_block, y_block, taken = padded[:, block], y[:, block], None
            for (_, index), mask in zip(slices[:-1], masks):
                if taken is None:
                    xp.equal(x_block[index], y_block, out=mask[:, block])
                    taken = mask[:, block].copy(order="K")
                else:
                    equal = x_block[index] == y_block
                    xp.greater(equal, taken, out=mask[:, block])  # equal and not taken by an earlier offset
                    taken |= equal
            xp.logical_not(taken, out=masks[-1][:, block])
        return masks
    best = full_like_layout(y, y.shape, -xp.inf)
    chosen = full_like_layout(y, y.shape, None, dtype=xp.int64)
    chosen[...] = _first_inside_offset(x.shape, params)
    take = full_like_layout(y, y.shape, None, dtype=bool)
    for k, (_, index) in enumerate(slices):
        values = padded[index]
        xp.greater(values, best, out=take)
        take |= xp.isnan(values)
        xp.copyto(best, values, where=take)
        xp.copyto(chosen, k, where=take)
    return [chosen == k for k in range(len(slices))]


def _first_inside_offset(shape, params):
    """For each window, the kernel offset k of its first position inside the input (not in the padding)."""
    (kh, kw), stride, padding, dilation, out = (params[k] for k in ("kernel_size", "stride", "padding", "dilation",
                                                                     "out"))
    first = [(_first_inside(xp.arange(out[a]) * stride[a] - padding[a], dilation[a])
              - (xp.arange(out[a]) * stride[a] - padding[a])) // dilation[a] for a in (0, 1)]
    return first[0][:, None] * kw + first[1]


def window_winner(values):
    """The winner along the last axis as PyTorch's max-pooling loops pick it (a value wins when larger than the
    best so far, or NaN): the first maximum, or where NaN occurs the last NaN."""
    nan = xp.isnan(values)
    last_nan = values.shape[-1] - 1 - nan[..., ::-1].argmax(-1)
    return xp.where(nan.any(-1), last_nan, values.argmax(-1))


def max_pool_indices(winners, shape, params):
    """PyTorch's return_indices: the flat position h·W + w of each window's maximum in its input plane."""
    width = shape[3]
    rows = xp.arange(params["out"][0]) * params["stride"][0] - params["padding"][0]
    cols = xp.arange(params["out"][1]) * params["stride"][1] - params["padding"][1]
    _, slices = _window_slices(xp.empty((1, 1) + tuple(shape[2:])), params, 0)
    # each winner's offset in its window, summed over the masks in the narrowest integers that hold the largest
    # (int16 for a 3x3 window: a quarter of int64's memory traffic per mask), then added to the windows' origins
    largest = slices[-1][0]
    narrow = xp.int16 if largest < 1 << 15 else xp.int32 if largest < 1 << 31 else xp.int64
    offsets = full_like_layout(winners[0], winners[0].shape, 0, dtype=narrow)  # (in the layout of the values)
    for (offset, _), mask in zip(slices, winners):
        offsets += mask * narrow(offset)
    return xp.add(offsets, rows[:, None] * width + cols, dtype=xp.int64)


POOL_PARAMS = ("kernel_size", "stride", "padding", "dilation", "out")


def window_maxima(input, params, return_indices, undo):
    """max pooling's values of an (N, C, H, W) tensor over the windows ``params`` (MaxPool2d's) and, with
    return_indices, (values, the flat indices h·W + w of the maxima), each given to ``undo`` (the caller's shape)."""
    values = MaxPool2d.apply(input, **params)
    if not return_indices:
        return undo(values)
    if type(input._data) is MetaArray:  # (no maxima to find: the indices' shape is all there is)
        return watch_returned_indices(undo(values), undo(tensor_from(meta_array(values.shape, xp.int64))))
    node = values.grad_fn
    winners = (node.winners_for(input._data, values._data) if node is not None else
               max_pool_winners(input._data, values._data, params))
    return watch_returned_indices(undo(values), undo(tensor_from(max_pool_indices(winners, input.shape, params))))


def bins_as_windows(size, out):
    """Adaptive max pooling's bins of a (H, W) plane into ``out`` as max pooling's windows (params), where they tile
    it evenly (28 -> 7: bins of 4, kernel = stride = 4), else None. Pooled as windows, one pass per window offset,
    where gathering every bin's positions copied each window out first (four times slower): the same maxima and
    winners (PyTorch's rule for both, the first maximum in scan order, NaN winning), and the same gradient."""
    if any(s % o for s, o in zip(size, out)):
        return None
    kernel = tuple(s // o for s, o in zip(size, out))
    return dict(kernel_size=kernel, stride=kernel, padding=(0, 0), dilation=(1, 1), out=tuple(out))


def _masked(values, mask, finite):
    """values where mask holds, 0 elsewhere: a plain product when the values are ``finite``, else a select
    (∞ · 0 is NaN, where PyTorch's scatter and gather leave an exact 0)."""
    return values * mask if finite else xp.where(mask, values, 0)


def _layout_of(x):
    """A tiny array standing for x's memory layout (the order of its strides), so nodes need not keep x."""
    return xp.empty_like(x, shape=(2,) * x.ndim)


class MaxPool2d(Primitive):
    """y[n,c,i,j] = max over the window of x (padding never wins; NaN wins, and the first maximum in scan
    order, as PyTorch);   dL/dx = MaxPoolSpread(dL/dy): each dL/dy to its window's maximum

    The forward pass only takes maxima (one pass per kernel offset); which position won is found in
    backward, where it is needed, from x and its maxima: y itself is not kept, since a later in-place op
    may change it (nn.MaxPool2d then nn.ReLU(inplace=True)), as PyTorch allows; a copy of it is, when
    grad mode is on (one pass, where taking the maxima again in backward was one per kernel offset)."""

    pytorch_name = "MaxPool2DWithIndicesBackward0"
    winners = maxima = None

    def forward(self, x):
        if type(x) is MetaArray:  # (a meta tensor: its shape, no values to compare or pad)
            return meta_array(x.shape[:2] + tuple(self.out), x.dtype)
        padded, slices = _window_slices(x, self.__dict__, -xp.inf)
        if len(slices) == 1:
            return padded[slices[0][1]].copy(order="K")
        best = xp.empty_like(padded[slices[0][1]])  # (laid out as x is)
        for block in _blocks(padded):
            x_block, best_block = padded[:, block], best[:, block]
            xp.maximum(x_block[slices[0][1]], x_block[slices[1][1]], out=best_block)
            for _, index in slices[2:]:
                xp.maximum(best_block, x_block[index], out=best_block)
        if modes.grad_enabled:
            self.maxima = best.copy(order="K")
        return best

    def winners_for(self, x, y):
        if self.winners is None:
            self.winners = max_pool_winners(x, y, self.__dict__)
            self.maxima = None
        return self.winners

    def backward(self, grad, y, x):
        if type(x._data) is MetaArray:  # (no maxima to find: the gradient's shape is all there is)
            return (Tensor._make(meta_array(x.shape, grad.dtype)),)
        winners = self.winners if self.winners is not None else self.winners_for(
            x._data, self.maxima if self.maxima is not None else self.forward(x._data))
        return (MaxPoolSpread.apply(grad, winners=winners, shape=x.shape, like=_layout_of(x._data),
                                    **{k: getattr(self, k) for k in POOL_PARAMS}),)

    def release(self):
        super().release()
        self.winners = self.maxima = None


class MaxPoolSpread(Primitive):
    """dx = Σ_k (the window slice at kernel offset k) ← g · winners_k: g put back at each window's maximum
    (max pooling's gradient, linear in g);   dL/dg = MaxPoolSelect(dL/dx)"""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # backward uses the winners: freed after backward, as PyTorch frees it

    like = None  # an array in the memory layout to give dx (that of max pooling's input)

    def forward(self, g):
        params = dict(self.__dict__)
        padded, slices = _window_slices(xp.empty((0, 0) + tuple(self.shape[2:])), params, 0)
        g = in_layout_of(g, self.winners[0])  # read once per kernel offset: in the layout of the masks
        # windows that tile the input exactly write every position once: no need to zero it first
        tiles = all(k == s and d == 1 and p == 0 and o * s == size for k, s, d, p, o, size in
                    zip(self.kernel_size, self.stride, self.dilation, self.padding, self.out, self.shape[2:]))
        padded = full_like_layout(g if self.like is None else self.like, g.shape[:2] + padded.shape[2:],
                                  None if tiles else 0, dtype=g.dtype)
        finite = xp.isfinite(g).all()
        adds = overlapping(self.kernel_size, self.stride, self.dilation)
        for block in _blocks(padded):
            out, g_block = padded[:, block], g[:, block]
            term = xp.empty_like(g_block) if finite else None  # (one buffer for every offset's g · mask)
            for (_, index), mask in zip(slices, self.winners):
                if adds and finite:
                    xp.multiply(g_block, mask[:, block], out=term)
                    out[index] += term
                elif adds:
                    out[index] += _masked(g_block, mask[:, block], finite)
                elif finite:  # every input position in at most one window: write, do not add. (Written as 0 +
                    # g · mask, PyTorch's sum into zeros, whose zeros are +0 where a negative g times False is -0)
                    xp.multiply(g_block, mask[:, block], out=term)
                    xp.add(term, 0, out=out[index])
                else:
                    out[index] = _masked(g_block, mask[:, block], finite)
        (ph, pw), (h, w) = self.padding, self.shape[2:]
        return padded[:, :, ph:ph + h, pw:pw + w]

    def backward(self, grad, y, g):
        return (MaxPoolSelect.apply(grad, winners=self.winners, **{k: getattr(self, k) for k in POOL_PARAMS}),)


class MaxPoolSelect(Primitive):
    """y = Σ_k h_pad[window slice at offset k] · winners_k: h read at each window's maximum (MaxPoolSpread's
    adjoint);   dL/dh = MaxPoolSpread(dL/dy)"""

    def forward(self, h):
        padded, slices = _window_slices(h, self.__dict__, 0)
        y = full_like_layout(self.winners[0], self.winners[0].shape, 0, dtype=h.dtype)
        finite = xp.isfinite(h).all()
        for (_, index), mask in zip(slices, self.winners):
            y += _masked(padded[index], mask, finite)
        return y

    def backward(self, grad, y, h):
        return (MaxPoolSpread.apply(grad, winners=self.winners, shape=h.shape, like=_layout_of(h._data),
                                    **{k: getattr(self, k) for k in POOL_PARAMS}),)


class GatherFlat(Primitive):
    """y[n,c,...] = x[n,c].flatten()[indices[n,c,...]];   dL/dx = ScatterFlat(dL/dy, indices)"""

    overlapping = True  # may several outputs read one input (adaptive bins do)?

    def forward(self, x):
        n, c = x.shape[:2]  # (sizes spelled out: a -1 is ambiguous in an empty batch)
        flat = x.reshape(n, c, math.prod(x.shape[2:]))
        picks = self.indices.reshape(n, c, math.prod(self.indices.shape[2:]))
        return xp.take_along_axis(flat, picks, 2).reshape(self.indices.shape)

    def backward(self, grad, y, x):
        return (ScatterFlat.apply(grad, indices=self.indices, shape=x.shape, overlapping=self.overlapping),)


class ScatterFlat(Primitive):
    """y = zeros(shape) with x[n,c,...] added at y[n,c].flatten()[indices[n,c,...]] (GatherFlat's adjoint);
    dL/dx = GatherFlat(dL/dy, indices)"""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # backward uses the positions: freed after backward, as PyTorch frees it

    def forward(self, x):
        n, c = self.shape[:2]
        plane = 1
        for size in self.shape[2:]:
            plane *= size
        offsets = (xp.arange(n * c) * plane).reshape(n, c, *(1,) * (self.indices.ndim - 2))
        if not self.overlapping:  # each input position receives at most one value: assign
            y = xp.zeros(n * c * plane, dtype=x.dtype)
            y[(self.indices + offsets).ravel()] = x.ravel()
            return y.reshape(self.shape)
        sums = xp.bincount((self.indices + offsets).ravel(), weights=x.ravel(), minlength=n * c * plane)
        return sums.astype(x.dtype, copy=False).reshape(self.shape)

    def backward(self, grad, y, x):
        return (GatherFlat.apply(grad, indices=self.indices, overlapping=self.overlapping),)


class NoBins(Primitive):
    """y = an empty array of ``shape``: adaptive pooling to an output size with a 0. Its backward is PyTorch's
    error, whose adaptive kernels refuse an empty grad_output (``shown``: its shape as the ``kernel`` sees it)."""

    saves_inputs = False  # backward needs no input's values

    def forward(self, x):
        return xp.zeros(self.shape, dtype=x.dtype)

    def backward(self, grad, y, x):
        dim = next(d for d in range(1, len(self.shown)) if self.shown[d] == 0)
        raise RuntimeError(f"{self.kernel}_backward(): Expected grad_output to have non-zero size for non-batch "
                           f"dimensions, but grad_output has sizes {list(self.shown)} with dimension {dim} being empty")


class AvgPool2d(Primitive):
    """y[n,c,i,j] = scale[i,j] · Σ_window x_pad   (scale = 1/divisor: PyTorch's count_include_pad,
    ceil_mode and divisor_override rules, computed by the caller);   dL/dx = AvgPool2dTranspose(dL/dy)"""

    pytorch_name = "AvgPool2DBackward0"

    def forward(self, x):
        if type(x) is MetaArray:  # (a meta tensor: its shape, no values to pad or add)
            return meta_array(x.shape[:2] + tuple(self.out), x.dtype)
        kernel, stride, out = self.kernel_size, self.stride, self.out
        padded = _padded(x, self.padding, out, kernel, stride, (1, 1), 0)
        total = full_like_layout(x, x.shape[:2] + tuple(out), 0)
        slices = list(_offset_slices(out, kernel, stride, (1, 1)))
        for block in _blocks(padded):
            x_block, total_block = padded[:, block], total[:, block]
            for _, _, index in slices:
                total_block += x_block[index]
        total *= self.scale.astype(x.dtype, copy=False)
        return total

    def backward(self, grad, y, x):
        return (AvgPool2dTranspose.apply(grad, kernel_size=self.kernel_size, stride=self.stride,
                                         padding=self.padding, out=self.out, scale=self.scale, shape=x.shape,
                                         like=_layout_of(x._data)),)


class AvgPool2dTranspose(Primitive):
    """The adjoint of AvgPool2d: each g[n,c,i,j] · scale[i,j] spread over its window, cropped to ``shape``;
    dL/dg = AvgPool2d(dL/dy)"""

    saves_inputs = False  # backward needs no input's values

    like = None  # an array in the memory layout to give the result (that of average pooling's input)

    def forward(self, g):
        kernel, stride, padding, out = self.kernel_size, self.stride, self.padding, self.out
        n, c, h, w = self.shape
        if type(g) is MetaArray:  # (as AvgPool2d's)
            return meta_array(self.shape, g.dtype)
        height = max(h + 2 * padding[0], (out[0] - 1) * stride[0] + kernel[0])
        width = max(w + 2 * padding[1], (out[1] - 1) * stride[1] + kernel[1])
        layout = g if self.like is None else self.like
        padded = full_like_layout(layout, (n, c, height, width), 0, dtype=g.dtype)
        scaled = full_like_layout(layout, g.shape, None, dtype=g.dtype)  # g scaled and, if need be, relaid
        xp.multiply(g, self.scale.astype(g.dtype, copy=False), out=scaled)
        slices = list(_offset_slices(out, kernel, stride, (1, 1)))
        for block in _blocks(padded):
            padded_block, scaled_block = padded[:, block], scaled[:, block]
            for _, _, index in slices:
                padded_block[index] += scaled_block
        inside = padded[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w]
        return padded if inside.shape == padded.shape else inside.copy(order="K")  # no view on the margins

    def backward(self, grad, y, g):
        return (AvgPool2d.apply(grad, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                                out=self.out, scale=self.scale),)
