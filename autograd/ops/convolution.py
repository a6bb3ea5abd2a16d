"""Convolution as one matrix product per layer (im2col), and its two adjoints.

A 2-d convolution of x (N, C, H, W) with w (O, C/G, kh, kw), G groups, reads
every input window once: gather the windows into columns (im2col, through a
strided view of the zero-padded input, one copy), then one GEMM per group:

    cols[c, p, q, n, i, j] = x_pad[n, c, i·s + p·d, j·s + q·d]        (K = C/G · kh · kw rows)
    y[n, o, i, j]          = Σ_{c,p,q} w[o, c, p, q] · cols[c, p, q, n, i, j]  (+ b[o])

The batch sits inside the columns, (K, N·oh·ow), so each product is a single
large GEMM rather than N small ones. Convolution is bilinear in (x, w), and its
derivatives are the other two members of a closed family of three primitives:

    Conv2d(x, w)                 y = w ⋆ x
    ConvTranspose2d(g, w)        the adjoint in x:  ⟨ConvT(g, w), a⟩ = ⟨g, Conv(a, w)⟩   (col2im of wᵀ g)
    Conv2dWeightGrad(x, g)       the adjoint in w:  ⟨WGrad(x, g), u⟩ = ⟨g, Conv(x, u)⟩   (g colsᵀ)

so that dL/dx = ConvT(dL/dy, w), dL/dw = WGrad(x, dL/dy), and each of the three
has its gradients written with the other two: derivatives of every order. col2im
loops over the kh·kw kernel offsets only, adding a strided slice each time.

``Unfold`` and ``Fold`` (PyTorch's F.unfold / F.fold) are im2col and col2im in
PyTorch's (N, C·kh·kw, L) layout; each is the other's adjoint.

Layout: the columns keep the batch innermost, (K, oh·ow·N), so the GEMM gives y
as (O, oh, ow, N), and convolutions return it as is: an (N, O, oh, ow) view
stored batch-innermost (NumPy strides, no copy). Every strided read of the
layers that follow (pooling's window slices, the next im2col, col2im's shifted
adds) then moves N neighbouring values at a time where NCHW would move one; the
ReLU between, the pooling and the backward products keep the layout, so no
layer spends a transpose on its output or on its incoming gradient. Values and
shapes are NCHW's; only the strides differ (``.contiguous()`` gives C order).
Where an input or weight is stored channels-last, the results (and the gradients
through them) are laid out N, H, W, C, as PyTorch's channels-last kernels write
them: a program that asks for that layout checks it and views its results so.
"""

from ..backend import strided_view, xp
from ..constants import channels_last
from ..factories import empty_in_format
from ..meta import MetaArray, meta_array
from ..primitive import Primitive
from . import depthwise_convolution as depthwise
from .conjugation import conj


def output_size(size, kernel, stride, padding, dilation):
    """The number of window positions along one axis: ⌊(size + 2p − d(k−1) − 1) / s⌋ + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def leftover(size, kernel, stride, padding, dilation, out):
    """Rows of the padded input past the last of ``out`` windows: the transposed convolution's
    output_padding that gives ``size`` back."""
    return size + 2 * padding - dilation * (kernel - 1) - 1 - (out - 1) * stride


def memory_order(x):
    """x's axes from the outermost in memory to the innermost (by decreasing stride; axes of size 1, whose
    strides say nothing, left out)."""
    return [a for a in sorted(range(x.ndim), key=lambda a: -abs(x.strides[a])) if x.shape[a] > 1]


def full_like_layout(x, shape, fill, dtype=None):
    """An array of logical shape ``shape`` (as many dims as x) filled with ``fill`` (None: left unset), laid
    out in memory as x is (its axes in the same order of strides: NCHW, batch-innermost, ...)."""
    dtype = x.dtype if dtype is None else dtype
    if fill is None:
        return xp.empty_like(x, dtype=dtype, shape=shape)
    if fill == 0:
        return xp.zeros_like(x, dtype=dtype, shape=shape)
    return xp.full_like(x, fill, dtype=dtype, shape=shape)


def in_layout_of(a, like):
    """a itself when it is laid out as ``like``, else a copy of a that is. Elementwise NumPy loops over
    operands of different layouts read one of them against its strides, several times slower: a gradient
    that arrives in another layout than the arrays it meets is worth one copy."""
    if memory_order(a) == memory_order(like):
        return a
    copy = full_like_layout(like, a.shape, None, a.dtype)
    copy[...] = a
    return copy


def pad_zeros(x, padding):
    """x (N, C, H, W) with padding[0] zero rows above and below, padding[1] zero columns each side."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    padded = full_like_layout(x, x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), 0)
    padded[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    return padded


def windows(padded, kernel, stride, dilation, out):
    """A strided view (N, C, kh, kw, oh, ow) of every window of ``padded`` (no copy)."""
    n, c, h, w = padded.strides
    return strided_view(padded, padded.shape[:2] + tuple(kernel) + tuple(out),
                        (n, c, h * dilation[0], w * dilation[1], h * stride[0], w * stride[1]), writeable=False)


def batch_last(x, padding):
    """x (N, C, H, W) zero-padded by ``padding``, as a C-contiguous (C, H', W', N) array: a view of x when x
    is already stored so and needs no padding, else one copy (which also transposes)."""
    stored = x.transpose(1, 2, 3, 0)
    ph, pw = padding
    if ph == 0 and pw == 0:
        return xp.ascontiguousarray(stored)
    c, h, w, n = stored.shape
    padded = xp.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype=x.dtype)
    padded[:, ph:ph + h, pw:pw + w] = stored
    return padded


def im2col(x, kernel, stride, padding, dilation, out=None):
    """The columns of x (N, C, H, W): a C-contiguous (C, kh, kw, oh, ow, N) array, the batch innermost (see
    the module's docstring), gathered by one copy from a strided view of the padded input. ``out`` (oh, ow)
    may stop before the last window that fits (a transposed convolution's output_padding rows are read by
    none)."""
    if out is None:
        out = tuple(output_size(x.shape[2 + a], kernel[a], stride[a], padding[a], dilation[a]) for a in (0, 1))
    if type(x) is MetaArray:  # a meta tensor's columns are one too (a strided view of it would be plain zeros)
        return meta_array((x.shape[1],) + tuple(kernel) + tuple(out) + (x.shape[0],), x.dtype)
    padded = batch_last(x, padding)
    c, h, w, n = padded.strides
    view = strided_view(padded, (padded.shape[0],) + tuple(kernel) + tuple(out) + (padded.shape[3],),
                        (c, h * dilation[0], w * dilation[1], h * stride[0], w * stride[1], n), writeable=False)
    return xp.ascontiguousarray(view)


def col2im(cols, shape, stride, padding, dilation):
    """The adjoint of im2col: cols (C, kh, kw, N, oh, ow), any strides, summed into (N, C, H, W) (returned as a
    view, laid out as the columns are: batch-innermost for a convolution's).

    One strided add per kernel offset (p, q): every window position at once."""
    c, kh, kw, n, oh, ow = cols.shape
    if type(cols) is MetaArray:  # (a meta tensor's gradient, say): a shape, nothing to add up into read-only zeros
        return meta_array((n, c, shape[2], shape[3]), cols.dtype)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    padded = full_like_layout(cols[:, 0, 0], (c, n, shape[2] + 2 * ph, shape[3] + 2 * pw), 0)
    for p in range(kh):
        rows = slice(p * dh, p * dh + (oh - 1) * sh + 1, sh)
        for q in range(kw):
            padded[:, :, rows, q * dw:q * dw + (ow - 1) * sw + 1:sw] += cols[:, p, q]
    return padded[:, :, ph:ph + shape[2], pw:pw + shape[3]].transpose(1, 0, 2, 3)


def _batch_inside(y, groups):
    """(N, G·m, oh, ow) → (G, m, oh·ow·N): the layout of one GEMM per group (free when y is batch-innermost)."""
    n, channels, oh, ow = y.shape
    return xp.ascontiguousarray(y.transpose(1, 2, 3, 0)).reshape(groups, channels // groups, oh * ow * n)


def _batch_outside(y, n, out, bias):
    """(G, m, oh·ow·N) → (N, G·m, oh, ow), batch-innermost (a view, no copy), the bias added in place."""
    channels = y.shape[0] * y.shape[1]
    y = y.reshape(channels, y.shape[2])  # (not -1: an empty batch leaves nothing to divide)
    if bias is not None:
        y += bias[:, None]
    return y.reshape(channels, *out, n).transpose(3, 0, 1, 2)


def _group_matmul(a, b):
    """a @ b for stacks of G matrices; with one group, a plain 2-d GEMM (no batch loop). A product over one term
    (a depthwise convolution's input gradient: one channel per group) is an outer product, the same numbers as a
    broadcast multiplication, which NumPy does five times quicker than its batched matmul with an inner size of 1."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    if a.shape[2] == 1:
        return a * b
    return a @ b


def one_channel_per_group(channels, out_channels, groups, x):
    """Whether a convolution is depthwise (every group one input and one output channel): computed then block by
    block over the channels (depthwise_convolution.py), not through one im2col of the whole input; the same values.
    float16 arrays keep this file's path (dL/dw's sums by sample; Conv2d's forward, in float32, takes the blocks), a
    meta tensor im2col's."""
    return groups > 1 and channels == groups and out_channels == groups and x.dtype != xp.float16 \
        and type(x) is not MetaArray


def in_channels_last(y):
    """y (N, C, H, W) copied into N, H, W, C order, with the strides of PyTorch's channels-last kernels' result (a
    size-1 dim's too: NumPy's ascontiguousarray would keep a (C, 1, 1, 1) weight's as they are)."""
    if type(y) is MetaArray:
        return y
    copy = empty_in_format(y.shape, y.dtype, channels_last)
    copy[...] = y
    return copy


class _ConvParams:
    """Shared by the convolution family: stride, padding, dilation, groups (pairs, except groups), and
    ``channels_last``: an input or weight is stored N, H, W, C, so PyTorch's channels-last kernels serve and lay
    out their results so (the batch-innermost layout of the module's docstring otherwise).

    ``grad_inside``: the caller may pass the (N, C, h, w) operand already in the (G, C/G, N·h·w) layout
    (Conv2d's backward makes it once for its two products); it is used once, then dropped."""

    grad_inside = None
    channels_last = False

    def inside(self, g):
        ready, self.grad_inside = self.grad_inside, None
        return _batch_inside(g, self.groups) if ready is None else ready

    def params(self, **extra):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    channels_last=self.channels_last, **extra)

    def output_padding_for(self, shape, kernel, out):
        return tuple(leftover(shape[2 + a], kernel[a], self.stride[a], self.padding[a], self.dilation[a], out[a])
                     for a in (0, 1))


def _bias_grad(grad, bias):
    return grad.sum((0, 2, 3)) if bias is not None and bias.requires_grad else None


# what a convolution's node counts as saved: its two operands, whichever gradient is wanted (PyTorch's
# ConvolutionBackward0 keeps both: writing either after the forward refuses the backward), and not the bias, whose
# gradient reads its shape alone (so a bias updated in place between the forward and the backward is allowed, as
# PyTorch allows it). Readers by position: -1 is the bias where one is given, else the weight again.
_OPERANDS_SAVED = ((0, 1, -1), (0, 1, -1), ())


class Conv2d(_ConvParams, Primitive):
    """y[n,o,i,j] = Σ_{c,p,q} w[o,c,p,q] x_pad[n, g(o)·C/G + c, i·s+p·d, j·s+q·d] + b[o];
    dL/dx = ConvTranspose2d(dL/dy, w),   dL/dw = Conv2dWeightGrad(x, dL/dy),   dL/db = Σ_{n,i,j} dL/dy

    The columns of x are kept for dL/dw (they are what dL/dw multiplies) until the first backward uses them.
    ``out``, when given, is the output size (fewer positions than fit: the gradient of a transposed convolution
    with output_padding)."""

    pytorch_name = "ConvolutionBackward0"
    cols = out = None
    saved_input_readers = _OPERANDS_SAVED
    handles_complex = True  # (bilinear: each operand's gradient takes the other's conjugate, as PyTorch's)

    def forward(self, x, weight, bias=None):
        if x.dtype == xp.float16:  # in float32, the bias added before rounding once, as PyTorch's kernel
            wide = (a.astype(xp.float32) for a in (x, weight) + (() if bias is None else (bias,)))
            y = self.forward(*wide)
            if self.cols is not None:  # (a depthwise convolution's make none)
                self.cols = self.cols.astype(xp.float16)  # (for dL/dw, in the dtype of the gradient it meets)
            return y.astype(xp.float16)
        kernel = weight.shape[2:]
        if one_channel_per_group(x.shape[1], weight.shape[0], self.groups, x):
            out = self.out or tuple(output_size(x.shape[2 + a], kernel[a], self.stride[a], self.padding[a],
                                                self.dilation[a]) for a in (0, 1))
            y = depthwise.correlate(batch_last(x, self.padding), weight.reshape(self.groups, *kernel), self.stride,
                                    self.dilation, out)  # (C, oh, ow, N), as the GEMM's
            y = _batch_outside(y.reshape(self.groups, 1, -1), x.shape[0], out, bias)
            return in_channels_last(y) if self.channels_last else y
        cols = im2col(x, kernel, self.stride, self.padding, self.dilation, self.out)
        n, out = x.shape[0], cols.shape[3:5]
        cols = cols.reshape(self.groups, x.shape[1] // self.groups * kernel[0] * kernel[1], out[0] * out[1] * n)
        self.cols = cols
        y = _group_matmul(weight.reshape(self.groups, weight.shape[0] // self.groups, -1), cols)
        y = _batch_outside(y, n, out, bias)
        return in_channels_last(y) if self.channels_last else y

    def backward(self, grad, y, x, weight, bias=None):
        grad_x = grad_weight = None
        want_x, want_weight = x.requires_grad, weight.requires_grad
        grad_inside = _batch_inside(grad._data, self.groups) if want_x or want_weight else None  # (both read it)
        cols = self.cols
        if x.is_complex() or weight.is_complex():
            x, weight = conj(x), conj(weight)
            cols = None if cols is None else xp.conj(cols)
        if want_weight:  # first, so that the saved columns are gone before dL/dx's (as large) come
            grad_weight = Conv2dWeightGrad.apply(
                x, grad, **self.params(kernel=weight.shape[2:], cols=cols, grad_inside=grad_inside))
        self.cols = None  # they serve one backward; another one (retain_graph) makes them again
        if want_x:
            extra = self.output_padding_for(x.shape, weight.shape[2:], grad.shape[2:])
            grad_x = ConvTranspose2d.apply(grad, weight, **self.params(output_padding=extra, grad_inside=grad_inside))
        return grad_x, grad_weight, _bias_grad(grad, bias)

    def release(self):
        super().release()
        self.cols = None


class ConvTranspose2d(_ConvParams, Primitive):
    """z = col2im(wᵀ g) + b, the adjoint of Conv2d in x (PyTorch's conv_transpose2d, w of shape
    (C_in, C_out/G, kh, kw)), cropped by ``padding`` and lengthened by ``output_padding``;
    dL/dg = Conv2d(dL/dz, w),   dL/dw = Conv2dWeightGrad(dL/dz, g),   dL/db = Σ_{n,i,j} dL/dz"""

    pytorch_name = "ConvolutionBackward0"
    handles_complex = True  # (bilinear: the other operand's conjugate, as Conv2d)
    saved_input_readers = _OPERANDS_SAVED

    def forward(self, g, weight, bias=None):
        n, channels, h, w = g.shape
        kernel = weight.shape[2:]
        shape = (n, weight.shape[1] * self.groups) + tuple(
            (size - 1) * s - 2 * p + d * (k - 1) + 1 + extra
            for size, k, s, p, d, extra in zip((h, w), kernel, self.stride, self.padding, self.dilation,
                                               self.output_padding))
        if one_channel_per_group(channels, shape[1], self.groups, g):
            (ph, pw), inside = self.padding, self.inside(g).reshape(channels, h, w, n)
            z = depthwise.spread(inside, weight.reshape(channels, *kernel), (channels, shape[2] + 2 * ph,
                                 shape[3] + 2 * pw, n), self.stride, self.dilation)
            z = z[:, ph:ph + shape[2], pw:pw + shape[3]].transpose(3, 0, 1, 2)  # batch-innermost, as col2im's
            z = z if bias is None else z + bias.reshape(-1, 1, 1)
            return in_channels_last(z) if self.channels_last else z
        columns = _group_matmul(weight.reshape(self.groups, channels // self.groups, -1).swapaxes(1, 2),
                                self.inside(g))  # (G, C_out/G · kh · kw, h·w·N)
        columns = columns.reshape(shape[1], *kernel, h, w, n).transpose(0, 1, 2, 5, 3, 4)
        z = col2im(columns, shape, self.stride, self.padding, self.dilation)
        z = z if bias is None else z + bias.reshape(-1, 1, 1)
        return in_channels_last(z) if self.channels_last else z

    def backward(self, grad, z, g, weight, bias=None):
        grad_g = grad_weight = None
        want_g, want_weight = g.requires_grad, weight.requires_grad
        if g.is_complex() or weight.is_complex():
            g, weight = conj(g), conj(weight)
        if want_g:
            grad_g = Conv2d.apply(grad, weight, **self.params(out=g.shape[2:]))
        if want_weight:
            grad_weight = Conv2dWeightGrad.apply(grad, g, **self.params(kernel=weight.shape[2:]))
        return grad_g, grad_weight, _bias_grad(grad, bias)


class Conv2dWeightGrad(_ConvParams, Primitive):
    """v[o,c,p,q] = Σ_{n,i,j} g[n,o,i,j] x_pad[n, g(o)·C/G + c, i·s+p·d, j·s+q·d]: the adjoint of Conv2d
    in w (dL/dw of a convolution);   dL/dx = ConvTranspose2d(g, dL/dv),   dL/dg = Conv2d(x, dL/dv)"""

    cols = None  # the columns of x when the convolution that needs this already made them
    handles_complex = True  # (bilinear: the other operand's conjugate, as Conv2d)

    def forward(self, x, g):
        if one_channel_per_group(x.shape[1], g.shape[1], self.groups, g):
            self.cols = None
            n, channels, oh, ow = g.shape
            v = depthwise.weight_grad(batch_last(x, self.padding), self.inside(g).reshape(channels, oh, ow, n),
                                      self.kernel, self.stride, self.dilation)[:, None]
            return in_channels_last(v) if self.channels_last else v
        cols = self.cols
        if cols is None:
            cols = im2col(x, self.kernel, self.stride, self.padding, self.dilation, g.shape[2:])
            c, kh, kw, oh, ow, n = cols.shape  # (rows spelt out, not -1: ambiguous in an empty batch)
            cols = cols.reshape(self.groups, c // self.groups * kh * kw, oh * ow * n)
        self.cols = None  # used once: a second backward recomputes them
        g = self.inside(g)
        # v = g colsᵀ, (G, O/G, C/G · kh · kw): a product over the long axis of positions with a small result.
        # OpenBLAS makes it up to twice as fast with the factor of more rows first, so v may come as (colsᵀ g)ᵀ
        if g.dtype == xp.float16:
            v = self._summed_by_sample(x.shape[0], g, cols)
        elif cols.shape[1] > g.shape[1]:
            v = _group_matmul(cols, g.swapaxes(1, 2)).swapaxes(1, 2)
        else:
            v = _group_matmul(g, cols.swapaxes(1, 2))
        v = v.reshape(g.shape[0] * g.shape[1], -1, *self.kernel)
        return in_channels_last(v) if self.channels_last else v

    def _summed_by_sample(self, n, g, cols):
        """float16's v as PyTorch's kernel sums it: each sample's product in float32, added into a float16
        buffer one sample after another (rounded at each: the sum rounded once was a unit off in 40% of v)."""
        by_sample = g.reshape(*g.shape[:2], -1, n), cols.reshape(*cols.shape[:2], -1, n)  # (the batch innermost)
        v = xp.zeros((g.shape[0], g.shape[1], cols.shape[1]), dtype=xp.float16)
        for i in range(n):
            product = _group_matmul(by_sample[0][..., i].astype(xp.float32),
                                    by_sample[1][..., i].astype(xp.float32).swapaxes(1, 2))
            v = (v.astype(xp.float32) + product).astype(xp.float16)
        return v

    def backward(self, grad, v, x, g):
        grad_x = grad_g = None
        want_x, want_g = x.requires_grad, g.requires_grad
        if x.is_complex() or g.is_complex():
            x, g = conj(x), conj(g)
        if want_x:
            grad_x = ConvTranspose2d.apply(
                g, grad, **self.params(output_padding=self.output_padding_for(x.shape, self.kernel, g.shape[2:])))
        if want_g:
            grad_g = Conv2d.apply(x, grad, **self.params(out=g.shape[2:]))
        return grad_x, grad_g


class Unfold(Primitive):
    """PyTorch's F.unfold: y[n, (c,p,q), (i,j)] = x_pad[n, c, i·s+p·d, j·s+q·d], shape (N, C·kh·kw, L);
    dL/dx = Fold(dL/dy)"""

    pytorch_name = "Im2ColBackward0"

    saves_inputs = False  # backward needs no input's values
    handles_complex = True  # (a rearrangement: the gradient is moved, never multiplied by a value)

    def forward(self, x):
        out = tuple(output_size(x.shape[2 + a], self.kernel_size[a], self.stride[a], self.padding[a],
                                self.dilation[a]) for a in (0, 1))
        rows = x.shape[1] * self.kernel_size[0] * self.kernel_size[1]  # (not -1: ambiguous in an empty batch)
        if type(x) is MetaArray:  # (as im2col's)
            return meta_array((x.shape[0], rows, out[0] * out[1]), x.dtype)
        view = windows(pad_zeros(x, self.padding), self.kernel_size, self.stride, self.dilation, out)
        # a copy always (as PyTorch's): a 1 x 1 window without padding is x's own memory, read-only in the view
        return view.copy(order="C").reshape(x.shape[0], rows, out[0] * out[1])

    def backward(self, grad, y, x):
        return (Fold.apply(grad, output_size=x.shape[2:], kernel_size=self.kernel_size, stride=self.stride,
                           padding=self.padding, dilation=self.dilation),)


class Fold(Primitive):
    """PyTorch's F.fold, Unfold's adjoint: blocks (N, C·kh·kw, L) summed into (N, C, *output_size)
    where they overlap;   dL/dx = Unfold(dL/dy)"""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True  # (sums of moved values: linear)

    def forward(self, x):
        kh, kw = self.kernel_size
        out = tuple(output_size(self.output_size[a], self.kernel_size[a], self.stride[a], self.padding[a],
                                self.dilation[a]) for a in (0, 1))
        n = x.shape[0]
        cols = x.reshape(n, x.shape[1] // (kh * kw), kh, kw, *out).transpose(1, 2, 3, 0, 4, 5)
        shape = (n, cols.shape[0]) + tuple(self.output_size)
        if type(x) is MetaArray:  # (as im2col's)
            return meta_array(shape, x.dtype)
        return xp.ascontiguousarray(col2im(cols, shape, self.stride, self.padding, self.dilation))

    def backward(self, grad, y, x):
        return (Unfold.apply(grad, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                             dilation=self.dilation),)

