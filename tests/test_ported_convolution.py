"""Convolutions, ported from PyTorch's test/nn/test_convolution.py (the CPU parts that
tests/test_ported_nn_pooling_conv.py, tests/test_conv.py, tests/test_nn_grad.py and tests/test_nn_3d.py leave):
the exact messages for windows larger than the input, bad strides, groups, dimensions and padding modes;
'same' and 'valid' padding against explicit padding (values and gradients, 1-, 2- and 3-d, real and complex);
padding modes under 'same'; grouped and depthwise convolutions against their separate halves (with bias, 3-d);
transposed convolutions' output_size; conv_tbc; double backward (gradgradcheck) of strided, grouped and
padded convolutions; every form of `convolution` (1-3 d, transposed, dilated, strided, non-contiguous, empty
batches and channels) against a naive NumPy reference and gradcheck; zero-channel modules; non-contiguous
inputs, weights, biases and incoming gradients. Each test runs on chainrule and, where it is installed, on
PyTorch, and asserts literals or the NumPy reference."""

import itertools

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, values, xfail_ours

nn = ported_nn.nn  # the fixtures
F = ported_nn.F


# -- a naive reference: loops over the kernel's offsets, one einsum each --------------------------------------

def reference_conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """y[n, g·O/G + o, t] = b[o] + Σ_{c, k} w[g·O/G + o, c, k] · x_pad[n, g·C/G + c, t·s + k·d]."""
    dims = x.ndim - 2
    stride, padding, dilation = ([v] * dims if np.isscalar(v) else list(v) for v in (stride, padding, dilation))
    x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    n, c = x.shape[:2]
    o, kernel = w.shape[0], w.shape[2:]
    out = [(size - d * (k - 1) - 1) // s + 1 for size, k, s, d in zip(x.shape[2:], kernel, stride, dilation)]
    xg = x.reshape(n, groups, c // groups, *x.shape[2:])
    wg = w.reshape(groups, o // groups, c // groups, *kernel)
    y = np.zeros((n, groups, o // groups, *out), dtype=np.result_type(x, w))
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(k * d, k * d + s * (t - 1) + 1, s) for k, d, s, t in zip(offset, dilation, stride, out))
        y += np.einsum("ngc...,goc->ngo...", xg[(slice(None),) * 3 + window], wg[(Ellipsis,) + offset])
    y = y.reshape(n, o, *out)
    return y if b is None else y + b.reshape(-1, *[1] * dims)


def reference_conv_transpose(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The adjoint of reference_conv: each input value scatters w[c, o, k] at t·s + k·d, then `padding` is cut
    from both ends (after `output_padding` was added at the far end)."""
    dims = x.ndim - 2
    stride, padding, output_padding, dilation = ([v] * dims if np.isscalar(v) else list(v)
                                                 for v in (stride, padding, output_padding, dilation))
    n, c = x.shape[:2]
    kernel = w.shape[2:]
    o = w.shape[1] * groups
    full = [(t - 1) * s + d * (k - 1) + 1 + op for t, s, d, k, op in zip(x.shape[2:], stride, dilation, kernel,
                                                                         output_padding)]
    xg = x.reshape(n, groups, c // groups, *x.shape[2:])
    wg = w.reshape(groups, c // groups, o // groups, *kernel)
    y = np.zeros((n, groups, o // groups, *full), dtype=np.result_type(x, w))
    for offset in itertools.product(*(range(k) for k in kernel)):
        window = tuple(slice(k * d, k * d + s * (t - 1) + 1, s) for k, d, s, t in zip(offset, dilation, stride,
                                                                                         x.shape[2:]))
        y[(slice(None),) * 3 + window] += np.einsum("ngc...,gco->ngo...", xg, wg[(Ellipsis,) + offset])
    y = y.reshape(n, o, *full)
    y = y[(slice(None),) * 2 + tuple(slice(p, f - p) for p, f in zip(padding, full))]
    return y if b is None else y + b.reshape(-1, *[1] * dims)


def rand(T, *shape, dtype="float64", seed=0, requires_grad=False):
    """A tensor of `T` from NumPy's generator (the same numbers in both libraries)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if dtype.startswith("complex"):
        a = a + 1j * rng.standard_normal(shape)
    return T.tensor(a.astype(dtype), requires_grad=requires_grad)


def test_reference_conv_is_the_definition():
    """The reference itself, on a case small enough to write out: a 1-d window [1, 2] over [1, 2, 3, 4]
    with stride 2 and padding 1 reads (0, 1), (2, 3) and (4, 0)."""
    x = np.array([[[1.0, 2, 3, 4]]])
    w = np.array([[[1.0, 2]]])
    np.testing.assert_array_equal(reference_conv(x, w, stride=2, padding=1), [[[2, 8, 4]]])
    # and the transpose is its adjoint: <conv(x), y> = <x, conv_transpose(y)>
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 2))
    y = rng.standard_normal(reference_conv(x, w, stride=2, padding=1, dilation=(1, 2), groups=2).shape)
    lhs = np.sum(reference_conv(x, w, stride=2, padding=1, dilation=(1, 2), groups=2) * y)
    back = reference_conv_transpose(y, w, stride=2, padding=1, dilation=(1, 2), groups=2, output_padding=(0, 1))
    assert back.shape == x.shape
    np.testing.assert_allclose(lhs, np.sum(x * back), rtol=1e-12)


# -- errors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
def test_invalid_conv1d(T, nn, dtype):
    module = nn.Conv1d(3, 33, kernel_size=10, stride=1, bias=True).to(getattr(T, dtype))
    raises(RuntimeError, r"Calculated padded input size per channel: \(4\)\. Kernel size: \(10\)\. "
                         r"Kernel size can't be greater than actual input size",
           module, T.randn(1, 3, 4).to(getattr(T, dtype)))
    module = nn.Conv1d(3, 6, kernel_size=3, stride=-1, bias=True).to(getattr(T, dtype))
    raises(RuntimeError, "non-positive stride is not supported", module, T.randn(1, 3, 4).to(getattr(T, dtype)))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
def test_invalid_conv2d(T, nn, dtype):
    dt = getattr(T, dtype)
    module = nn.Conv2d(1, 1, kernel_size=3, dilation=2, stride=2).to(dt)
    raises(RuntimeError, "", module, T.zeros(1, 1, 4, 4).to(dt))  # the dilated window spans 5 > 4
    module = nn.Conv2d(3, 33, kernel_size=10, stride=1, bias=True)
    raises(RuntimeError, r"Calculated padded input size per channel: \(1 x 1\)\. Kernel size: \(10 x 10\)\. "
                         r"Kernel size can't be greater than actual input size", module, T.randn(1, 3, 1, 1))
    for stride in (-1, 0):
        module = nn.Conv2d(3, 6, kernel_size=4, stride=stride, bias=True).to(dt)
        raises(RuntimeError, "non-positive stride is not supported", module, T.randn(1, 3, 4, 4).to(dt))


def test_invalid_conv3d(T, nn):
    module = nn.Conv3d(1, 1, kernel_size=3, dilation=2, stride=2)
    raises(RuntimeError, "Kernel size can't be greater than actual input size", module, T.zeros(1, 1, 4, 4, 4))
    module = nn.Conv3d(1, 1, kernel_size=3, stride=-2)
    raises(RuntimeError, "non-positive stride is not supported", module, T.zeros(1, 1, 4, 4, 4))


def test_mismatch_shape_conv2d(T, F):
    for dtype in ("float32", "complex64"):
        raises(RuntimeError, r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got "
                             r"input of size: \[1, 10, 1, 28, 28\]",
               F.conv2d, rand(T, 1, 10, 1, 28, 28, dtype=dtype), rand(T, 6, 1, 5, 5, dtype=dtype))


def test_conv_invalid_groups(T, nn):
    for Conv, groups in ((nn.Conv1d, 0), (nn.Conv2d, -1), (nn.Conv3d, -2)):
        raises(ValueError, "groups must be a positive integer", Conv, 1, 1, kernel_size=3, dilation=2, stride=2,
               groups=groups)


def test_conv_padding_mode_errors(T, nn):
    raises(ValueError, "padding_mode must be one of", nn.Conv2d, 3, 3, 3, padding_mode="xyz")
    raises(ValueError, "padding_mode must be one of", nn.Conv2d, 3, 3, 3, padding_mode=3)
    raises(ValueError, 'Only "zeros" ', nn.ConvTranspose2d, 3, 3, 3, padding_mode="reflect")


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_module_same_padding_rejects_bad_strings_and_strides(T, nn, dims):
    Conv = getattr(nn, f"Conv{dims}d")
    raises(ValueError, "Invalid padding string", Conv, 3, 33, kernel_size=10, padding="foo")
    strides = [2] + [tuple(3 if i == j else 1 for i in range(dims)) for j in range(dims)]
    for stride in strides:
        raises(ValueError, "padding='same'", Conv, 3, 33, kernel_size=10, padding="same", stride=stride)


def test_Conv2d_missing_argument(T, nn):
    raises(TypeError, "", nn.Conv2d(3, 3, 3), None)


def test_Conv2d_backward_twice(T, nn):
    o1 = nn.Conv2d(3, 3, 3)(T.randn(2, 3, 5, 5))
    o1.sum().backward()
    raises(RuntimeError, "Specify retain_graph=True", o1.sum().backward)


def test_conv_modules_raise_error_on_incorrect_input_size(T, nn):
    for dtype in (T.float32, T.float64):
        modules = [nn.Conv1d(3, 8, 3), nn.ConvTranspose1d(3, 8, 3), nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(3, 8, 3),
                   nn.Conv3d(3, 8, 3), nn.ConvTranspose3d(3, 8, 3)]
        invalid_dims = [(1, 4), (1, 4), (2, 5), (2, 5), (3, 6), (3, 6)]
        for dims, module in zip(invalid_dims, modules):
            module = module.to(dtype)
            for n in dims:
                raises(RuntimeError, "", module, T.zeros((3,) * n, dtype=dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
def test_conv_shapecheck(T, nn, dtype):
    dt = getattr(T, dtype)
    cases = [(True, nn.Conv1d(1, 1, 3), (1, 2)), (True, nn.Conv1d(1, 1, 3, stride=2), (1, 2)),
             (False, nn.Conv1d(1, 1, 2), (1, 2)), (False, nn.Conv1d(1, 1, 2, stride=2), (1, 2)),
             (False, nn.Conv1d(1, 1, 3, stride=2, padding=1), (1, 2)),
             (True, nn.Conv2d(1, 1, (3, 3)), (1, 2, 2)), (False, nn.Conv2d(1, 1, (3, 3)), (1, 3, 3)),
             (False, nn.Conv2d(1, 1, (3, 3), padding=1), (1, 2, 2)),
             (True, nn.Conv3d(1, 1, (3, 3, 3)), (1, 2, 2, 2)), (False, nn.Conv3d(1, 1, (3, 3, 3)), (1, 3, 3, 3)),
             (False, nn.Conv3d(1, 1, (3, 3, 3), padding=1), (1, 2, 2, 2))]
    for should_raise, module, size in cases:
        module = module.to(dt)
        x = T.zeros(3, *size, dtype=dt)
        if should_raise:
            raises(RuntimeError, "", module, x)
        else:
            y = module(x)
            assert y.shape[0] == 3


@xfail_ours("PyTorch's 'Empty' convolution backend gives an input with no channels an output with no channels "
            "(and drops the bias); chainrule computes the sum over no channels, (N, out_channels, *out) of bias")
def test_conv_of_no_input_channels_has_no_output_channels(T, nn):
    mod = nn.Conv1d(0, 8, 2, stride=2)
    y = mod(T.randn(2, 0, 15))
    assert tuple(y.shape) == (2, 0, 7)


def test_conv_empty_channel(T, nn):
    for dtype in (T.float32, T.complex64):
        for Conv, out_channels, size, bad in ((nn.Conv1d, 8, (15,), (0,)), (nn.Conv2d, 33, (50, 100), (40, 0)),
                                              (nn.Conv3d, 33, (50, 20, 40), (50, 0, 40))):
            # (no bias: with no input channels its initial bound 1/sqrt(fan_in) is undefined, PyTorch leaves it
            # uninitialised)
            mod = Conv(0, out_channels, 2 if Conv is nn.Conv1d else 3, stride=2, bias=False, dtype=dtype)
            x = T.randn(2, 0, *size, dtype=dtype, requires_grad=True)
            y = mod(x)
            out = [(s - (2 if Conv is nn.Conv1d else 3)) // 2 + 1 for s in size]
            # (PyTorch's 'Empty' backend returns (2, 0, *out) here, chainrule the (2, out_channels, *out) that the
            # sum over no channels makes; PyTorch's own test leaves the size unchecked)
            assert y.shape[0] == 2 and tuple(y.shape[2:]) == tuple(out)
            assert not values(y).any()
            y.abs().sum().backward()
            assert tuple(x.grad.shape) == tuple(x.shape)
            assert tuple(mod.weight.grad.shape) == tuple(mod.weight.shape)
            raises(RuntimeError, "Given groups=1, weight", mod, T.randn(2, 1, *bad, dtype=dtype))


# -- 'same' and 'valid' padding -------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [1, 2, 3])
def test_module_same_padding_with_padding_modes(T, nn, F, dims):
    """padding='same' with a copying padding mode is F.pad by (d(k−1)//2, the rest) per side, then 'valid'."""
    kernel, mode, pad = {1: (10, "replicate", [4, 5]), 2: ((3, 4), "reflect", [1, 2, 1, 1]),
                         3: ((2, 3, 4), "circular", [1, 2, 1, 1, 0, 1])}[dims]
    Conv, conv = getattr(nn, f"Conv{dims}d"), getattr(F, f"conv{dims}d")
    x = rand(T, 1, 1, *{1: (20,), 2: (9, 20), 3: (4, 4, 4)}[dims], seed=dims)
    T.manual_seed(dims)
    module = Conv(1, 1, kernel_size=kernel, padding="same", padding_mode=mode, dtype=T.float64)
    expect = conv(F.pad(x, pad, mode=mode), module.weight, module.bias, padding="valid")
    close(module(x), values(expect), rtol=1e-12, atol=1e-12)
    assert tuple(expect.shape) == tuple(x.shape)
    padded = np.pad(values(x), [(0, 0), (0, 0)] + [(pad[2 * i], pad[2 * i + 1]) for i in range(dims)][::-1],
                    mode={"replicate": "edge", "reflect": "reflect", "circular": "wrap"}[mode])
    close(module(x), reference_conv(padded, values(module.weight), values(module.bias)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_conv1d_same_padding(T, F, dtype):
    for in_size, k_size, dilation in itertools.product(range(50, 55), [1, 2, 3, 8], range(1, 4)):
        z = F.conv1d(rand(T, 1, 1, in_size, dtype=dtype), rand(T, 1, 1, k_size, dtype=dtype), padding="same",
                     dilation=dilation)
        assert z.shape[2] == in_size
    x, y = rand(T, 1, 1, 12, dtype=dtype, seed=1), rand(T, 1, 1, 3, dtype=dtype, seed=2)
    close(F.conv1d(x, y, padding="same"), values(F.conv1d(x, y, padding=1)), rtol=1e-6)
    close(F.conv1d(x, y, padding="same"), reference_conv(values(x), values(y), padding=1), rtol=1e-5, atol=1e-6)
    y = rand(T, 1, 1, 4, dtype=dtype, seed=3)
    close(F.conv1d(x, y, padding="same", dilation=2), values(F.conv1d(x, y, padding=3, dilation=2)), rtol=1e-6)
    # d(k−1) = 9: four zeros before, five after
    close(F.conv1d(x, y, padding="same", dilation=3), values(F.conv1d(x, y, padding=5, dilation=3)[..., 1:]),
          rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_conv2d_and_conv3d_same_padding(T, F, dtype):
    x = rand(T, 1, 1, 10, 11, dtype=dtype)
    y = rand(T, 1, 1, 4, 5, dtype=dtype, seed=1)
    close(F.conv2d(x, y, padding="same"), values(F.conv2d(x, y, padding=(2, 2))[..., 1:, :]), rtol=1e-5, atol=1e-6)
    y = rand(T, 1, 1, 3, 4, dtype=dtype, seed=2)
    close(F.conv2d(x, y, padding="same", dilation=2), values(F.conv2d(x, y, padding=(2, 3), dilation=2)),
          rtol=1e-5, atol=1e-6)
    y = rand(T, 1, 1, 4, 4, dtype=dtype, seed=3)
    close(F.conv2d(x, y, padding="same", dilation=3), values(F.conv2d(x, y, padding=5, dilation=3)[..., 1:, 1:]),
          rtol=1e-5, atol=1e-6)

    x = rand(T, 1, 1, 10, 11, 12, dtype=dtype, seed=4)
    y = rand(T, 1, 1, 1, 2, 5, dtype=dtype, seed=5)
    close(F.conv3d(x, y, padding="same"), values(F.conv3d(x, y, padding=(0, 1, 2))[..., :, 1:, :]),
          rtol=1e-5, atol=1e-5)
    close(F.conv3d(x, y, padding="same", dilation=2), values(F.conv3d(x, y, padding=(0, 1, 4), dilation=2)),
          rtol=1e-5, atol=1e-5)
    close(F.conv3d(x, y, padding="same", dilation=2),
          reference_conv(values(x), values(y), padding=(0, 1, 4), dilation=2), rtol=1e-4, atol=1e-5)
    y = rand(T, 1, 1, 4, 4, 4, dtype=dtype, seed=6)
    close(F.conv3d(x, y, padding="same", dilation=3),
          values(F.conv3d(x, y, padding=5, dilation=3)[..., 1:, 1:, 1:]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_valid_padding_is_no_padding(T, F, dtype):
    for dims in (1, 2, 3):
        conv = getattr(F, f"conv{dims}d")
        x = rand(T, 1, 1, *[1] * (dims - 1), 10, dtype=dtype, requires_grad=True)
        y = rand(T, 1, 1, *[1] * (dims - 1), 4, dtype=dtype, seed=1, requires_grad=True)
        close(conv(x, y, padding="valid"), values(conv(x, y)), rtol=0, atol=0)
        close(conv(x, y, padding="valid"), reference_conv(values(x), values(y)), rtol=1e-5, atol=1e-6)
        conv(x, y, padding=0).sum().abs().backward()
        gx, gy = values(x.grad).copy(), values(y.grad).copy()
        x.grad, y.grad = None, None
        conv(x, y, padding="valid").sum().abs().backward()
        close(x.grad, gx, rtol=0, atol=0)
        close(y.grad, gy, rtol=0, atol=0)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_same_padding_backward(T, F, dims, dtype):
    """The gradients of 'same' are those of the explicit padding (with the odd zero's row cut off after)."""
    conv = getattr(F, f"conv{dims}d")
    size = {1: (12,), 2: (10, 11), 3: (1, 11, 12)}[dims]
    kernel = {1: (4,), 2: (4, 5), 3: (1, 2, 5)}[dims]
    symmetric = {1: 3, 2: (3, 4), 3: (0, 1, 4)}[dims]
    x = rand(T, 1, 1, *size, dtype=dtype, requires_grad=True)
    y = rand(T, 1, 1, *kernel, dtype=dtype, seed=1, requires_grad=True)

    def grads(z):
        z.sum().abs().backward()
        got = values(x.grad).copy(), values(y.grad).copy()
        x.grad, y.grad = None, None
        return got

    expect = grads(conv(x, y, padding=symmetric, dilation=2))
    actual = grads(conv(x, y, padding="same", dilation=2))
    for a, e in zip(actual, expect):
        close(a, e, rtol=1e-10, atol=1e-12)
    y = rand(T, 1, 1, *(1,) * (dims == 3), *(4,) * (dims - (dims == 3)), dtype=dtype, seed=2, requires_grad=True)
    cut = (Ellipsis,) + (slice(1, None),) * (dims - (dims == 3))
    expect = grads(conv(x, y, padding=2 if dims < 3 else (0, 2, 2))[cut])
    actual = grads(conv(x, y, padding="same"))
    for a, e in zip(actual, expect):
        close(a, e, rtol=1e-10, atol=1e-12)
    if dims == 3 and dtype == "float64":  # (time: PyTorch's complex gradgradcheck takes seconds)
        assert T.autograd.gradcheck(lambda x, y: F.conv3d(x, y, padding="same", dilation=2), (x, y))
        # (PyTorch's test checks forward-over-reverse too: on a smaller input, for time)
        small = x.detach()[..., :4, :5].requires_grad_()
        assert T.autograd.gradgradcheck(lambda x, y: F.conv3d(x, y, padding="same"), (small, y),
                                        check_fwd_over_rev=True)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("mode", ["valid", "same"])
def test_conv_vs_numpy_convolve(T, F, dims, mode):
    """A convolution is a cross-correlation with the flipped kernel: 'valid' and (for odd kernels, and even
    ones padded by k//2 each side and cut) 'same' as NumPy's (SciPy's) convolve, here by NumPy's 1-d convolve
    for 1-d and the naive reference for more."""
    size = {1: (10,), 2: (5, 10), 3: (5, 5, 10)}[dims]
    for kernel in ({1: (4,), 2: (2, 4), 3: (2, 2, 4)}[dims], {1: (5,), 2: (3, 5), 3: (2, 3, 5)}[dims]):
        t = rand(T, 1, 1, *size, dtype="float32")
        w = rand(T, 1, 1, *kernel, dtype="float32", seed=1)
        flipped = T.flip(w, tuple(range(2, 2 + dims)))
        conv = getattr(F, f"conv{dims}d")
        if mode == "valid":
            actual = conv(t, flipped, padding="valid")
        else:
            pads = [k // 2 for k in kernel]
            actual = conv(F.pad(t, [p for p in pads[::-1] for _ in (0, 1)]), flipped)
            actual = actual[(Ellipsis,) + tuple(slice(0, s) for s in size)]
        full = values(t)[0, 0]
        if dims == 1:
            expected = np.convolve(full, values(w)[0, 0], mode=mode)
        else:  # convolve's 'full' is the correlation with the flipped kernel padded by k − 1; 'same' its centre
            wf = values(w)[0, 0][(slice(None, None, -1),) * dims]
            whole = reference_conv(values(t).astype(np.float64), wf[None, None].astype(np.float64),
                                   padding=[k - 1 for k in kernel])[0, 0]
            if mode == "valid":
                expected = whole[tuple(slice(k - 1, s) for k, s in zip(kernel, size))]
            else:
                expected = whole[tuple(slice((k - 1) // 2, (k - 1) // 2 + s) for k, s in zip(kernel, size))]
        close(actual[0, 0], expected, rtol=2e-5, atol=5e-6)


# -- groups and depthwise --------------------------------------------------------------------------------------

def _as_halves(T, nn, m, x, grad_output, Conv, halves):
    """Run module `m` and its `halves` separate convolutions (weights, biases, inputs and incoming gradients cut
    along the channels); return the whole's and the halves' outputs and gradients as NumPy arrays."""
    output = m(x)
    output.backward(grad_output)
    parts = {"out": [], "x": [], "w": [], "b": []}
    cin, cout = x.shape[1] // halves, m.weight.shape[0] // halves
    for h in range(halves):
        part = Conv(cin, cout, kernel_size=m.kernel_size, bias=m.bias is not None, dtype=x.dtype)
        with T.no_grad():
            part.weight.copy_(m.weight[h * cout:(h + 1) * cout])
            if m.bias is not None:
                part.bias.copy_(m.bias[h * cout:(h + 1) * cout])
        xi = x.detach()[:, h * cin:(h + 1) * cin].contiguous().requires_grad_()
        oi = part(xi)
        oi.backward(grad_output[:, h * cout:(h + 1) * cout].contiguous())
        parts["out"].append(values(oi))
        parts["x"].append(values(xi.grad))
        parts["w"].append(values(part.weight.grad))
        if m.bias is not None:
            parts["b"].append(values(part.bias.grad))
    close(output, np.concatenate(parts["out"], 1), rtol=1e-5, atol=1e-5)
    close(x.grad, np.concatenate(parts["x"], 1), rtol=1e-5, atol=1e-5)
    close(m.weight.grad, np.concatenate(parts["w"], 0), rtol=1e-5, atol=1e-5)
    if m.bias is not None:
        close(m.bias.grad, np.concatenate(parts["b"], 0), rtol=1e-5, atol=1e-5)
    return values(output)


@pytest.mark.parametrize("dims, bias", [(2, False), (3, False), (3, True)])
def test_grouped_conv_is_its_halves(T, nn, dims, bias):
    """Conv2d_groups_nobias_v2, Conv3d_groups_nobias and _wbias: 4 → 16 channels in two groups."""
    T.manual_seed(123)
    Conv = getattr(nn, f"Conv{dims}d")
    m = Conv(4, 16, kernel_size=3, groups=2, bias=bias)
    x = T.randn(2, 4, *(6,) * dims, requires_grad=True)
    grad_output = T.randn(2, 16, *(4,) * dims)
    output = _as_halves(T, nn, m, x, grad_output, Conv, 2)
    expected = reference_conv(values(x).astype(np.float64), values(m.weight).astype(np.float64),
                              None if m.bias is None else values(m.bias).astype(np.float64), groups=2)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("depth_multiplier", [1, 2])
def test_depthwise_conv_is_per_channel(T, nn, dims, depth_multiplier):
    """Conv2d/3d_depthwise_naive_groups (there CUDA's, here the CPU's): groups = input channels, with bias."""
    T.manual_seed(depth_multiplier)
    Conv = getattr(nn, f"Conv{dims}d")
    m = Conv(2, 2 * depth_multiplier, kernel_size=3, groups=2, dtype=T.float64)
    x = (T.randn(2, 2, *(6,) * dims, dtype=T.float64) / 2).requires_grad_()
    grad_output = T.randn(2, 2 * depth_multiplier, *(4,) * dims, dtype=T.float64) / 2
    output = _as_halves(T, nn, m, x, grad_output, Conv, 2)
    np.testing.assert_allclose(output, reference_conv(values(x), values(m.weight), values(m.bias), groups=2),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("groups", [24, 23])
@pytest.mark.parametrize("dilation", [1, 2])
def test_depthwise_strided_weight_gradient(T, nn, groups, dilation):
    """Conv2d_OneDNN: depthwise, stride 2, padding 1, ones in and ones back: each weight's gradient counts the
    outputs whose window puts that tap on the input rather than on the padding."""
    op = nn.Conv2d(groups, groups, kernel_size=3, stride=2, padding=1, dilation=dilation, groups=groups, bias=False)
    with T.no_grad():
        op.weight.copy_(T.ones(groups, 1, 3, 3))
    res = op(T.ones(1, groups, 6, 6))
    res.backward(T.ones(res.shape))
    out = (6 + 2 - dilation * 2 - 1) // 2 + 1
    taps = [sum(0 <= t * 2 - 1 + k * dilation < 6 for t in range(out)) for k in range(3)]
    expected = np.broadcast_to(np.outer(taps, taps), (groups, 1, 3, 3))
    close(op.weight.grad, expected, rtol=0, atol=0)


def test_Conv2d_backward_depthwise(T, F):
    for dtype in ("float64", "complex128"):
        x = rand(T, 2, 2, 4, 20, dtype=dtype, requires_grad=True)
        weight = rand(T, 2, 1, 3, 5, dtype=dtype, seed=1, requires_grad=True)
        assert T.autograd.gradcheck(lambda x, w: F.conv2d(x, w, None, stride=(1, 10), groups=2), (x, weight))


def test_depthwise_and_grouped_conv_of_permuted_and_long_kernels(T, F):
    """Issues 120211, 120406, 120547: a channels-last view into a depthwise row filter, a depthwise 3-d kernel
    longer than wide, and a depthwise 1-d kernel as long as the padded input."""
    image = T.rand(1, 16, 17, 3).permute(0, 3, 1, 2)
    for radius in (0, 3, 7):
        kernel = T.zeros([3, 1, 1, radius * 2 + 1])
        y = F.conv2d(image, kernel, groups=3)
        assert tuple(y.shape) == (1, 3, 16, 17 - 2 * radius)
    y = F.conv3d(T.ones(2, 3, 8, 9, 26), T.ones(3, 1, 1, 1, 17), groups=3)
    close(y, np.full((2, 3, 8, 9, 10), 17.0))
    x = T.tensor(np.arange(16.0, dtype=np.float32).reshape(1, 1, 16)).transpose(1, 2)  # (1, 16, 1), strided
    y = F.conv1d(x, T.ones([16, 1, 32]), T.ones([16]), 1, 16, 1, 16)
    close(y, np.broadcast_to(np.arange(16.0)[:, None] + 1, (1, 16, 2)))


# -- transposed convolutions -----------------------------------------------------------------------------------

def test_ConvTranspose2d_output_size(T, nn):
    m = nn.ConvTranspose2d(3, 4, 3, 3, 0, 2)
    i = T.randn(2, 3, 6, 6)
    for h in range(15, 22):
        for w in range(15, 22):
            if 18 <= h <= 20 and 18 <= w <= 20:
                assert tuple(m(i, output_size=(h, w)).shape[2:]) == (h, w)
            else:
                raises(ValueError, "", m, i, (h, w))


def test_ConvTranspose3d_correct_output_size(T, nn):
    m = nn.ConvTranspose3d(2, 2, 2)
    y = m(T.rand(1, 2, 1, 1, 1), output_size=(1, 2, 2, 2, 2))
    assert tuple(y.shape) == (1, 2, 2, 2, 2)


@pytest.mark.parametrize("N", [2, 3])
def test_conv_transpose_with_output_size_and_no_batch_dim(T, nn, N):
    inp = T.randn((1, 15, 13) if N == 2 else (1, 3, 7, 6))
    output_size = (1, 240, 200) if N == 2 else (1, 48, 112, 96)
    m = getattr(nn, f"ConvTranspose{N}d")(1, 1, kernel_size=16, stride=16, padding=7, bias=False)
    output = m(inp, output_size=output_size)
    assert tuple(output.shape) == output_size
    # output_size asks for the output_padding (below the stride 16) that makes up the difference
    output_padding = [size - ((n - 1) * 16 - 2 * 7 + 16) for size, n in zip(output_size[1:], inp.shape[1:])]
    assert output_padding == ([14, 6] if N == 2 else [14, 14, 14])
    expected = reference_conv_transpose(values(inp)[None].astype(np.float64), values(m.weight).astype(np.float64),
                                        stride=16, padding=7, output_padding=output_padding)[0]
    close(output, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 4])
def test_conv_transpose_empty_batch(T, nn, groups):
    """test_convTranspose_empty and test_group_convTranspose_empty, and a grouped conv on an empty batch: an empty
    output and zero gradients for the parameters."""
    for Module in (nn.ConvTranspose2d, nn.Conv2d):
        mod = Module(4, 4, stride=2, kernel_size=3, padding=1, groups=groups)
        x = T.randn(0, 4, 4, 4, requires_grad=True)
        y = mod(x)
        assert tuple(y.shape) == ((0, 4, 7, 7) if Module is nn.ConvTranspose2d else (0, 4, 2, 2))
        y.sum().backward()
        assert tuple(x.grad.shape) == (0, 4, 4, 4)
        close(mod.weight.grad, np.zeros(tuple(mod.weight.shape)), rtol=0, atol=0)
        close(mod.bias.grad, np.zeros(4), rtol=0, atol=0)


def test_conv_tbc(T, F):
    inp = rand(T, 9, 4, 5, requires_grad=True)
    weight = rand(T, 3, 5, 6, seed=1, requires_grad=True)
    bias = rand(T, 6, seed=2, requires_grad=True)
    assert T.autograd.gradcheck(lambda i, w, b: F.conv_tbc(i, w, b, 3), (inp, weight, bias))
    y = F.conv_tbc(inp, weight, bias, 3)
    assert tuple(y.shape) == (9 + 6 - 3 + 1, 4, 6)
    # time-batch-channel: conv1d on (B, C, T) with the weight (out, in, k)
    expected = reference_conv(values(inp).transpose(1, 2, 0), values(weight).transpose(2, 1, 0), values(bias),
                              padding=3).transpose(2, 0, 1)
    close(y, expected, rtol=1e-12, atol=1e-12)


# -- double backward ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kern, stride, padding, chan_in, chan_out, batch, size, dilation, groups, bias", [
    (3, 2, 1, 2, 4, 2, 5, 1, 1, True),      # test_conv_double_backward_no_bias (its bias is on)
    (3, 1, 2, 4, 8, 1, 6, 1, 2, True),      # test_conv_double_backward_groups (one sample, not two)
    (3, 2, 0, 1, 2, 2, 5, 2, 1, True),      # test_conv_double_backward_stride
    (3, 2, 1, 1, 2, 2, 7, 1, 1, False),
    (4, 1, 2, 2, 3, 1, 9, 1, 1, True),      # test_conv_double_backward (CUDA's cases, here on the CPU)
])
def test_conv_double_backward(T, F, kern, stride, padding, chan_in, chan_out, batch, size, dilation, groups, bias):
    x = rand(T, batch, chan_in, size, size, requires_grad=True)
    weight = rand(T, chan_out, chan_in // groups, kern, kern, seed=1, requires_grad=True)
    inputs = (x, weight) + ((rand(T, chan_out, seed=2, requires_grad=True),) if bias else ())

    def func(*inputs):
        return F.conv2d(*inputs[:2], inputs[2] if bias else None, stride, padding, dilation, groups)

    grad_y = rand(T, *func(*inputs).shape, seed=3, requires_grad=True)
    assert T.autograd.gradgradcheck(func, inputs, (grad_y,))
    # in float32 (PyTorch's mkldnn case) only that the input's gradient, made with create_graph, depends on the weight
    xf, wf = x.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    g, = T.autograd.grad(F.conv2d(xf, wf, None, stride, padding, dilation, groups).sum(), xf, create_graph=True)
    assert g.requires_grad and g.dtype == T.float32


def test_Conv2d_1x1_gradcheck(T, nn, F):
    mod = nn.Conv2d(2, 2, 1, bias=False).to(dtype=T.float64)
    x = rand(T, 1, 2, 5, 5, requires_grad=True)
    assert T.autograd.gradcheck(F.conv2d, (x, mod.weight))


# -- every form through `convolution` ----------------------------------------------------------------------------

def _noncontiguous(t):
    """Every other element of `t` repeated twice along its last dim: the same values, strided."""
    if t is None:
        return None
    return T_of(t).repeat_interleave(t, 2, dim=-1)[..., ::2].detach().requires_grad_(t.requires_grad)


def T_of(t):
    import importlib

    return importlib.import_module(type(t).__module__.split(".")[0])


def _backends():
    """PyTorch's test_conv_backend's CPU cases, name: (input shape, transposed, dilated, groups); smaller (3 input
    channels, not 6, and fewer positions) for the numerical gradients' sake."""
    shapes = {1: (2, 3, 7), 2: (1, 3, 6, 5), 3: (1, 3, 5, 5, 5)}
    cases = {}
    for dims in (1, 2, 3):
        for transposed, dilated in ((False, False), (True, False), (False, True), (True, True)):
            if dims == 3 and transposed:  # (PyTorch's are commented out: CUDA runs out of memory)
                continue
            name = f"slow{dims}d" + "_dilated" * dilated + "_transposed" * transposed
            cases[name] = (shapes[dims], transposed, dilated, 3)
        for empty, shape in (("batch", (0, 3)), ("channel", (2, 0)), ("batch_channel", (0, 0))):
            cases[f"empty_{empty}{dims}d"] = (shape + shapes[dims][2:], False, False, 3)
    return cases


BACKENDS = _backends()


@pytest.mark.parametrize("name", list(BACKENDS))
@pytest.mark.parametrize("has_bias, strided, contiguous", [(False, False, True), (True, True, False)])
def test_conv_backend(T, nn, name, has_bias, strided, contiguous):  # (nn: PyTorch on one thread)
    input_shape, transposed, dilated, groups = BACKENDS[name]
    c_in, c_out, dims = input_shape[1], 6, len(input_shape) - 2
    x = rand(T, *input_shape, seed=1, requires_grad=True)
    weight = rand(T, c_in if transposed else c_out, (c_out if transposed else c_in) // groups, *(3,) * dims,
                  seed=2, requires_grad=True)
    bias = rand(T, c_out, seed=3, requires_grad=True) if has_bias else None
    if not contiguous:
        x, weight, bias = _noncontiguous(x), _noncontiguous(weight), _noncontiguous(bias)
        assert not x.is_contiguous() or x.numel() == 0
    stride, padding = (2 if strided else 1,) * dims, (0,) * dims
    dilation, output_padding = (2 if dilated else 1,) * dims, (0,) * dims
    args = (stride, padding, dilation, transposed, output_padding, groups)
    output = T.convolution(x, weight, bias, *args)

    if c_in == 0:
        # PyTorch's 'Empty' backend gives no output channels for no input channels (see test_conv_empty_channel)
        assert output.shape[0] == input_shape[0]
        return
    if transposed:
        expected = reference_conv_transpose(values(x), values(weight), None if bias is None else values(bias),
                                            stride, padding, output_padding, groups, dilation)
    else:
        expected = reference_conv(values(x), values(weight), None if bias is None else values(bias), stride,
                                  padding, dilation, groups)
    close(output, expected, rtol=1e-10, atol=1e-10)
    grad_output = rand(T, *output.shape, seed=4)
    if not contiguous:
        grad_output = _noncontiguous(grad_output)
    output.backward(grad_output)
    assert tuple(x.grad.shape) == input_shape and tuple(weight.grad.shape) == tuple(weight.shape)
    if input_shape[0] == 0:
        close(weight.grad, np.zeros(tuple(weight.shape)), rtol=0, atol=0)
        return
    inputs = (x, weight, bias) if has_bias else (x, weight)

    def conv(x, weight, bias=None):
        return T.convolution(x, weight, bias, *args)

    assert T.autograd.gradcheck(conv, inputs)
    if dims < 3:  # (time: the 3-d double backward is the 2-d one's, see autograd/ops/convolution_layers.py)
        assert T.autograd.gradgradcheck(conv, (x, weight))


# -- non-contiguous and channels-last operands ---------------------------------------------------------------------

def test_conv2d_discontiguous_weight(T, F):
    """Issue 55781: a weight that is every other column of a contiguous one."""
    for dtype in ("float32", "complex64"):
        x = T.ones(64, 16, 16, 16, dtype=getattr(T, dtype))
        weight = T.arange(0, 1.0, 1 / 2.0**10).reshape(32, 16, 1, 2).to(getattr(T, dtype))[:, :, :, ::2]
        assert not weight.is_contiguous()
        y = F.conv2d(x, weight, None)
        # on ones each output is the sum of its filter's taps, at each of the 64 · 16 · 16 places
        taps = np.arange(0, 1.0, 1 / 2.0**10).reshape(32, 16, 1, 2)[:, :, :, 0]
        assert values(y.sum()) == 4186112.0 == taps.sum() * 64 * 16 * 16


@pytest.mark.parametrize("bias", [True, False])
def test_conv_noncontig_weights_and_bias(T, nn, bias):
    """Issue 16018: a strided input, weight and bias give the contiguous ones' output."""
    T.manual_seed(0)
    conv1 = nn.Conv2d(3, 16, kernel_size=7, stride=2, padding=3, bias=bias)
    input_nc = T.randn((1, 3, 24, 24, 2))[:, :, :, :, 1]
    weight_nc = T.randn((16, 3, 7, 7, 2))[:, :, :, :, 1]
    conv1.weight = nn.Parameter(weight_nc)
    if bias:
        conv1.bias = nn.Parameter(T.randn((16, 2))[:, 1])
    out1 = conv1(input_nc)
    conv1.weight = nn.Parameter(weight_nc.contiguous())
    if bias:
        conv1.bias = nn.Parameter(conv1.bias.contiguous())
    out2 = conv1(input_nc.contiguous())
    close(out1, values(out2), rtol=1e-6, atol=1e-6)
    expected = reference_conv(values(input_nc).astype(np.float64), values(weight_nc).astype(np.float64),
                              values(conv1.bias).astype(np.float64) if bias else None, stride=2, padding=3)
    close(out1, expected, rtol=1e-4, atol=1e-4)


def test_noncontig_conv_grad(T, nn):
    """An incoming gradient that is a strided slice gives the contiguous one's input gradient."""
    T.manual_seed(0)
    module = nn.Conv2d(3, 5, kernel_size=3, padding=1, dtype=T.float64)
    x = T.randn(2, 3, 10, 10, dtype=T.float64, requires_grad=True)
    output = module(x)
    grad = T.randn(2, 2, 5, 10, 10, dtype=T.float64)[:, 1]
    assert not grad.is_contiguous()
    output.backward(grad, retain_graph=True)
    result = values(x.grad).copy()
    x.grad.zero_()
    output.backward(grad.contiguous())
    close(x.grad, result, rtol=1e-12, atol=1e-12)
    # the input's gradient is the transposed convolution of the incoming one
    close(x.grad, reference_conv_transpose(values(grad), values(module.weight), padding=1), rtol=1e-10, atol=1e-12)


def test_conv2d_no_grad(T, nn):
    """Without grad mode the result is the same (PyTorch checks its faster inference kernels)."""
    for batch in (1, 2, 3):
        for groups in (1, 2, 4):
            x = T.rand(batch, groups, 8, 8)
            m = nn.Conv2d(groups, 8, kernel_size=(3, 3), groups=groups)
            with T.no_grad():
                output_ng = m(x)
            output = m(x)
            assert output_ng.grad_fn is None and output.grad_fn is not None
            close(output_ng, values(output), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("Module, n, c, h, w, out_channels, kernel_size, dilation, groups", [
    ("Conv2d", 2, 8, 4, 4, 4, 3, 1, 1), ("Conv2d", 2, 8, 4, 4, 8, 3, 1, 8), ("Conv2d", 2, 1, 10, 10, 8, 3, 1, 1),
    ("Conv2d", 1, 16, 9, 9, 16, 1, 1, 16), ("Conv2d", 2, 8, 11, 13, 16, 3, 2, 1),
    ("Conv2d", 2, 16, 11, 13, 32, 3, 2, 16),
    ("ConvTranspose2d", 2, 8, 4, 4, 4, 3, 1, 1), ("ConvTranspose2d", 2, 8, 4, 4, 8, 3, 1, 8),
    ("ConvTranspose2d", 1, 16, 9, 9, 32, 1, 1, 16),
])
def test_conv_thnn_nhwc(T, nn, Module, n, c, h, w, out_channels, kernel_size, dilation, groups):
    """Channels-last inputs and weights give the contiguous ones' outputs and gradients, exactly on small
    integers. (PyTorch also returns its output channels-last; chainrule lays a convolution's output out with
    the batch innermost, autograd/ops/convolution.py, so only the values are compared.)"""
    T.manual_seed(0)
    Mod = getattr(nn, Module)
    for input_format, weight_format in ((T.channels_last, T.channels_last), (T.channels_last, T.contiguous_format),
                                        (T.contiguous_format, T.channels_last)):
        x = T.randint(-3, 3, (n, c, h, w), dtype=T.float64).to(memory_format=input_format).requires_grad_()
        conv = Mod(c, out_channels, kernel_size, dilation=dilation, groups=groups).to(
            dtype=T.float64, memory_format=weight_format)
        with T.no_grad():
            for p in conv.parameters():
                p.copy_(T.randint_like(p, -3, 3))
        ref_x = x.detach().clone().contiguous().requires_grad_()
        ref_conv = Mod(c, out_channels, kernel_size, dilation=dilation, groups=groups).to(T.float64)
        ref_conv.load_state_dict(conv.state_dict())
        out, ref_out = conv(x), ref_conv(ref_x)
        grad = T.randint_like(out, -3, 3)
        out.backward(grad)
        ref_out.backward(grad.detach().clone().contiguous())
        for got, want in ((out, ref_out), (conv.weight.grad, ref_conv.weight.grad),
                          (conv.bias.grad, ref_conv.bias.grad), (x.grad, ref_x.grad)):
            close(got, values(want), rtol=0, atol=0)
        if Module == "Conv2d":
            close(out, reference_conv(values(x), values(conv.weight), values(conv.bias), dilation=dilation,
                                      groups=groups), rtol=0, atol=0)
        else:
            close(out, reference_conv_transpose(values(x), values(conv.weight), values(conv.bias), groups=groups,
                                                dilation=dilation), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["slow1d", "slow2d_dilated_transposed", "slow3d"])
def test_conv_backend_forward_ad_and_forward_over_reverse(T, nn, name):
    """test_conv_backend's forward-mode smoke test, with values: the tangent of a convolution (bilinear in input
    and weight) is conv(ẋ, w) + conv(x, ẇ) + ḃ, and the tangent of its input gradient conv_transpose(g, w), with a
    dual incoming gradient, is conv_transpose(ġ, w) + conv_transpose(g, ẇ)."""
    input_shape, transposed, dilated, groups = BACKENDS[name]
    dims = len(input_shape) - 2
    fwAD = T.autograd.forward_ad
    x = rand(T, *input_shape, seed=1, requires_grad=True)
    weight = rand(T, 3 if transposed else 6, 2 if transposed else 1, *(3,) * dims, seed=2, requires_grad=True)
    bias = rand(T, 6, seed=3, requires_grad=True)
    tx, tw, tb = rand(T, *x.shape, seed=4), rand(T, *weight.shape, seed=5), rand(T, 6, seed=6)
    args = ((1,) * dims, (0,) * dims, (2 if dilated else 1,) * dims, transposed, (0,) * dims, groups)

    def conv(x, w, b=None):
        if transposed:
            return reference_conv_transpose(x, w, b, groups=groups, dilation=args[2])
        return reference_conv(x, w, b, groups=groups, dilation=args[2])

    def conv_input_gradient(g, w):  # the adjoint of conv in its input
        if transposed:
            return reference_conv(g, w, groups=groups, dilation=args[2])
        return reference_conv_transpose(g, w, groups=groups, dilation=args[2])

    with fwAD.dual_level():
        output = T.convolution(fwAD.make_dual(x, tx), fwAD.make_dual(weight, tw), fwAD.make_dual(bias, tb), *args)
        primal, tangent = fwAD.unpack_dual(output)
        xv, wv = values(x), values(weight)
        close(primal, conv(xv, wv, values(bias)), rtol=1e-10, atol=1e-10)
        close(tangent, conv(values(tx), wv) + conv(xv, values(tw)) + conv(0 * xv, 0 * wv, values(tb)),
              rtol=1e-10, atol=1e-10)
        g, tg = rand(T, *output.shape, seed=7), rand(T, *output.shape, seed=8)
        grad_x, grad_b = T.autograd.grad(output, [x, bias], fwAD.make_dual(g, tg))
        gv = values(g)
        close(fwAD.unpack_dual(grad_x).tangent,
              conv_input_gradient(values(tg), wv) + conv_input_gradient(gv, values(tw)), rtol=1e-10, atol=1e-10)
        close(fwAD.unpack_dual(grad_b).tangent, values(tg).sum(axis=(0, *range(2, 2 + dims))), rtol=1e-10,
              atol=1e-10)


def test_same_padding_with_an_even_window_warns(T, F, warn_always):
    with pytest.warns(UserWarning, match="Using padding='same' with even kernel lengths and odd dilation"):
        F.conv1d(T.ones(1, 1, 10), T.ones(1, 1, 4), padding="same")
