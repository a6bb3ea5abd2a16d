"""Depthwise convolution (groups = in channels = out channels: one filter per channel, as MobileNet's and
ConvNeXt's) computed block by block over the channels, each block's work in cache.

With one channel per group, im2col's columns are kh·kw times the input for a product of only kh·kw terms per
output: gathering all of them, then multiplying, moves the columns through memory twice and costs far more than
the arithmetic. Here every kernel offset (p, q) is one strided slice of the padded input (all windows at once),
and the three members of the convolution family (see ``convolution.py``) run over blocks of channels small
enough for a core's cache:

    y[c, i, j, n]  = Σ_{p,q} w[c, p, q] · x_pad[c, i·s + p·d, j·s + q·d, n]             (correlate)
    z_pad[c, i·s + p·d, j·s + q·d, n] += w[c, p, q] · g[c, i, j, n]   for every (p, q)   (spread: the adjoint in x)
    v[c, p, q]     = Σ_{i,j,n} g[c, i, j, n] · x_pad[c, i·s + p·d, j·s + q·d, n]        (weight_grad: in w)

correlate and weight_grad gather a block's columns and multiply them as the GEMM path does (one product per
channel), spread adds each offset's product in scan order as col2im does: the values are the GEMM path's, bit for
bit. Arrays are batch-innermost, (C, H, W, N), the layout of ``convolution.py``'s columns.
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


BLOCK_BYTES = 1 << 19  # a block of channels whose working arrays (columns, products) fit in a core's L2 cache (1 MiB;
# measured over 16 KiB to 1 GiB on pooling and depthwise convolutions of 1-14 MB: 512 KiB was at or near the best)


def channel_blocks(channels, channel_bytes):
    """Slices of the channel axis, each about BLOCK_BYTES of an array of ``channel_bytes`` per channel: every pass
    over a block then finds its operands in cache (twice as fast as passes over the whole array, from memory)."""
    step = max(1, BLOCK_BYTES // max(channel_bytes, 1))
    return [slice(start, start + step) for start in range(0, channels, step)]


def _columns(x_block, slices, out):
    """A block's im2col: (C_block, kh·kw, oh·ow·N), the slice of x_block (C_block, H', W', N) at each offset."""
    cols = xp.empty((x_block.shape[0], len(slices)) + tuple(out), dtype=x_block.dtype)
    for k, (_, _, index) in enumerate(slices):
        cols[:, k] = x_block[index]
    return cols.reshape(*cols.shape[:2], -1)


def correlate(padded, weight, stride, dilation, out):
    """y (C, oh, ow, N) = Σ_{p,q} w[:, p, q] · (padded at offset (p, q)), padded (C, H', W', N), weight (C, kh, kw)."""
    channels, slices = padded.shape[0], offset_slices(weight.shape[1:], stride, dilation, out)
    y = xp.empty((channels,) + tuple(out) + (padded.shape[3],), dtype=xp.result_type(padded, weight))
    rows = weight.reshape(channels, 1, len(slices))
    for block in channel_blocks(channels, y[0].nbytes * len(slices)):
        y[block] = (rows[block] @ _columns(padded[block], slices, y.shape[1:])).reshape(y[block].shape)
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
    channels, slices = g.shape[0], offset_slices(kernel, stride, dilation, g.shape[1:3])
    v = xp.empty((channels, len(slices)), dtype=xp.result_type(padded, g))
    for block in channel_blocks(channels, g[0].nbytes * len(slices)):
        g_block = g[block]
        columns = _columns(padded[block], slices, g.shape[1:])
        v[block] = (columns @ g_block.reshape(g_block.shape[0], -1, 1))[..., 0]
    return v.reshape(channels, *kernel)
