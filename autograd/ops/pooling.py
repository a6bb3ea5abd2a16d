"""Pooling over 2-d windows of (N, C, H, W) inputs, with no Python loop over positions.

Max pooling keeps, for each window, the flat index h·W + w of its maximum
(PyTorch's ``return_indices``); its gradient puts dL/dy back at those indices:

    y[n,c,i,j] = x[n,c, idx[n,c,i,j]],      dL/dx[n,c,k] = Σ_{(i,j): idx = k} dL/dy[n,c,i,j]

``GatherFlat`` and ``ScatterFlat`` are that gather and its adjoint scatter,
each the other's gradient. Average pooling is a windowed sum times a fixed
scale (1/divisor) per output position; ``AvgPool2dTranspose`` is its adjoint.
Both scan the kh·kw kernel offsets, each offset one strided slice of every window.
"""

from ..backend import xp
from ..primitive import Primitive


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
    padded = xp.full((n, c, height, width), fill, dtype=x.dtype)
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


class MaxPool2d(Primitive):
    """y[n,c,i,j] = max over the window of x (NaN wins, first maximum in scan order, as PyTorch);
    dL/dx = ScatterFlat(dL/dy) at the kept flat indices ``self.indices``"""

    def forward(self, x):
        kernel, stride, padding, dilation, out = self.kernel_size, self.stride, self.padding, self.dilation, self.out
        width = x.shape[3]
        rows = xp.arange(out[0]) * stride[0] - padding[0]
        cols = xp.arange(out[1]) * stride[1] - padding[1]
        padded = _padded(x, padding, out, kernel, stride, dilation, -xp.inf)
        slices = [(p * dilation[0] * width + q * dilation[1], padded[index])
                  for p, q, index in _offset_slices(out, kernel, stride, dilation)]
        best = slices[0][1].copy()
        for _, values in slices[1:]:
            xp.maximum(best, values, out=best)
        if xp.isfinite(best).all():
            # the first offset equal to the maximum, as a flat offset: for offsets 0, 1, ..., K-1 with flat
            # offsets f_k, it is  m_0 (f_1 − f_0 + m_1 (f_2 − f_1 + m_2 (...))) + f_0,  m_k = [x_k ≠ max]
            chosen = xp.zeros(best.shape, dtype=xp.int64)
            for (before, values), (after, _) in zip(slices[-2::-1], slices[:0:-1]):
                chosen += after - before
                chosen *= values != best
            chosen += slices[0][0]
        else:
            chosen = self._scan(slices, x.dtype, best.shape, rows, cols, dilation, width)
        chosen += rows[:, None] * width + cols
        self.indices = chosen
        return best

    @staticmethod
    def _scan(slices, dtype, shape, rows, cols, dilation, width):
        """PyTorch's scan where NaN or −∞ occur: a later value wins when it is larger or NaN, and a window
        of −∞ keeps its first position inside the input (flat offsets relative to the window's origin)."""
        best = xp.full(shape, -xp.inf, dtype=dtype)
        first = _first_inside(rows, dilation[0]) - rows
        chosen = xp.empty(shape, dtype=xp.int64)
        chosen[...] = first[:, None] * width + (_first_inside(cols, dilation[1]) - cols)
        take = xp.empty(shape, dtype=bool)
        for offset, values in slices:
            xp.greater(values, best, out=take)
            take |= xp.isnan(values)
            xp.copyto(best, values, where=take)
            xp.copyto(chosen, offset, where=take)
        return chosen

    def backward(self, grad, y, x):
        return (ScatterFlat.apply(grad, indices=self.indices, shape=x.shape,
                                  overlapping=overlapping(self.kernel_size, self.stride, self.dilation)),)


class GatherFlat(Primitive):
    """y[n,c,...] = x[n,c].flatten()[indices[n,c,...]];   dL/dx = ScatterFlat(dL/dy, indices)"""

    overlapping = True  # may several outputs read one input (adaptive bins do)?

    def forward(self, x):
        n, c = x.shape[:2]
        flat = x.reshape(n, c, -1)
        return xp.take_along_axis(flat, self.indices.reshape(n, c, -1), 2).reshape(self.indices.shape)

    def backward(self, grad, y, x):
        return (ScatterFlat.apply(grad, indices=self.indices, shape=x.shape, overlapping=self.overlapping),)


class ScatterFlat(Primitive):
    """y = zeros(shape) with x[n,c,...] added at y[n,c].flatten()[indices[n,c,...]] (GatherFlat's adjoint);
    dL/dx = GatherFlat(dL/dy, indices)"""

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


class AvgPool2d(Primitive):
    """y[n,c,i,j] = scale[i,j] · Σ_window x_pad   (scale = 1/divisor: PyTorch's count_include_pad,
    ceil_mode and divisor_override rules, computed by the caller);   dL/dx = AvgPool2dTranspose(dL/dy)"""

    def forward(self, x):
        kernel, stride, out = self.kernel_size, self.stride, self.out
        padded = _padded(x, self.padding, out, kernel, stride, (1, 1), 0)
        total = xp.zeros(x.shape[:2] + tuple(out), dtype=x.dtype)
        for _, _, index in _offset_slices(out, kernel, stride, (1, 1)):
            total += padded[index]
        total *= self.scale.astype(x.dtype, copy=False)
        return total

    def backward(self, grad, y, x):
        return (AvgPool2dTranspose.apply(grad, kernel_size=self.kernel_size, stride=self.stride,
                                         padding=self.padding, out=self.out, scale=self.scale, shape=x.shape),)


class AvgPool2dTranspose(Primitive):
    """The adjoint of AvgPool2d: each g[n,c,i,j] · scale[i,j] spread over its window, cropped to ``shape``;
    dL/dg = AvgPool2d(dL/dy)"""

    def forward(self, g):
        kernel, stride, padding, out = self.kernel_size, self.stride, self.padding, self.out
        n, c, h, w = self.shape
        height = max(h + 2 * padding[0], (out[0] - 1) * stride[0] + kernel[0])
        width = max(w + 2 * padding[1], (out[1] - 1) * stride[1] + kernel[1])
        padded = xp.zeros((n, c, height, width), dtype=g.dtype)
        scaled = g * self.scale.astype(g.dtype, copy=False)
        for _, _, index in _offset_slices(out, kernel, stride, (1, 1)):
            padded[index] += scaled
        return xp.ascontiguousarray(padded[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w])

    def backward(self, grad, y, g):
        return (AvgPool2d.apply(grad, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                                out=self.out, scale=self.scale),)
