"""Depthwise convolution (groups = in channels = out channels: one filter per channel, as MobileNet's and
ConvNeXt's) computed directly, one multiply-add per kernel offset, without im2col.

With one channel per group the im2col GEMM is a product over only kh·kw terms per output, while the columns it
multiplies are kh·kw times the input: gathering them costs far more than the arithmetic. Here every kernel offset
(p, q) is one strided slice of the padded input, all windows at once, and the three members of the convolution
family (see ``convolution.py``) are kh·kw passes over arrays of the output's size:

    y[c, i, j, n]  = Σ_{p,q} w[c, p, q] · x_pad[c, i·s + p·d, j·s + q·d, n]            (correlate)
    z_pad[c, i·s + p·d, j·s + q·d, n] += w[c, p, q] · g[c, i, j, n]   for every (p, q)   (spread: the adjoint in x)
    v[c, p, q]     = Σ_{i,j,n} g[c, i, j, n] · x_pad[c, i·s + p·d, j·s + q·d, n]       (weight_grad: in w)

Arrays are batch-innermost, (C, H, W, N), the layout of ``convolution.py``'s columns, so each slice moves N
neighbouring values at a time. The sums run over the offsets in scan order; the values differ from the GEMM's
only by the rounding of another order of the same kh·kw products.
"""

from ..backend import xp


def offset_slices(kernel, stride, dilation, out):
    """For each kernel offset (p, q) in scan order, (p, q, the slice of a (C, H, W, N) array that offset reads in
    every window at once: out[0] rows, out[1] columns)."""
    (sh, sw), (dh, dw) = stride, dilation
    slices = []
    for p in range(kernel[0]):
        rows = slice(p * dh, p * dh + (out[0] - 1) * sh + 1, sh)
        for q in range(kernel[1]):
            slices.append((p, q, (slice(None), rows, slice(q * dw, q * dw + (out[1] - 1) * sw + 1, sw))))
    return slices


BLOCK_BYTES = 1 << 17  # a block of channels whose result and product fit in a core's L2 cache together


def channel_blocks(channels, channel_bytes):
    """Slices of the channel axis, each about BLOCK_BYTES of an array of ``channel_bytes`` per channel: every pass
    over a block then finds its operands in cache (twice as fast as passes over the whole array, from memory)."""
    step = max(1, BLOCK_BYTES // max(channel_bytes, 1))
    return [slice(start, start + step) for start in range(0, channels, step)]


def correlate(padded, weight, stride, dilation, out):
    """y (C, oh, ow, N) = Σ_{p,q} w[:, p, q] · (padded at offset (p, q)), padded (C, H', W', N), weight (C, kh, kw)."""
    y = xp.empty((padded.shape[0],) + tuple(out) + (padded.shape[3],), dtype=xp.result_type(padded, weight))
    slices = offset_slices(weight.shape[1:], stride, dilation, out)
    for block in channel_blocks(y.shape[0], y[0].nbytes):
        y_block, x_block, w_block = y[block], padded[block], weight[block]
        product = xp.empty_like(y_block)
        for p, q, index in slices:
            if p == 0 and q == 0:
                xp.multiply(x_block[index], w_block[:, p, q, None, None, None], out=y_block)
            else:
                xp.multiply(x_block[index], w_block[:, p, q, None, None, None], out=product)
                y_block += product
    return y


def spread(g, weight, padded_shape, stride, dilation):
    """z_pad (C, H', W', N) of ``padded_shape``: each g[c, i, j, n] · w[c, p, q] added at (i·s + p·d, j·s + q·d);
    g (C, oh, ow, N), weight (C, kh, kw)."""
    z = xp.zeros(padded_shape, dtype=xp.result_type(g, weight))
    slices = offset_slices(weight.shape[1:], stride, dilation, g.shape[1:3])
    for block in channel_blocks(z.shape[0], z[0].nbytes):
        z_block, g_block, w_block = z[block], g[block], weight[block]
        product = xp.empty(g_block.shape, dtype=z.dtype)
        for p, q, index in slices:
            xp.multiply(g_block, w_block[:, p, q, None, None, None], out=product)
            z_block[index] += product
    return z


def weight_grad(padded, g, kernel, stride, dilation):
    """v (C, kh, kw) = Σ_{i,j,n} g · (padded at offset (p, q)); padded (C, H', W', N), g (C, oh, ow, N)."""
    channels = g.shape[0]
    v = xp.empty((channels,) + tuple(kernel), dtype=xp.result_type(padded, g))
    slices = offset_slices(kernel, stride, dilation, g.shape[1:3])
    for block in channel_blocks(channels, g[0].nbytes):
        g_block, x_block = g[block], padded[block]
        product = xp.empty(g_block.shape, dtype=v.dtype)
        for p, q, index in slices:
            xp.multiply(x_block[index], g_block, out=product)
            v[block, p, q] = product.reshape(product.shape[0], -1).sum(1)
    return v
