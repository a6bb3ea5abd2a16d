"""Fixes made while porting PyTorch's test/nn/test_convolution.py (tests/test_ported_convolution.py): a layer
given no tensor raises PyTorch's TypeError; a string where a convolution takes ints is PyTorch's TypeError;
a transposed convolution's output_size out of range, its output cut to nothing, and conv_tbc's wrong shapes
are refused in PyTorch's words. Each runs on chainrule and, where installed, on PyTorch."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import raises, values

nn = ported_nn.nn  # the fixtures
F = ported_nn.F


def test_layers_given_no_tensor_raise_type_error(T, nn, F):
    """PyTorch's argument parser refuses None with a TypeError (chainrule read None.ndim: AttributeError)."""
    raises(TypeError, "", nn.Conv2d(3, 3, 3), None)
    raises(TypeError, "", F.conv1d, None, T.ones(1, 1, 2))
    raises(TypeError, "", F.conv_transpose3d, 2.0, T.ones(1, 1, 1, 1, 1))
    raises(TypeError, "", F.max_pool2d, None, 2)
    assert tuple(F.conv2d(T.ones(1, 1, 3, 3), T.ones(1, 1, 2, 2)).shape) == (1, 1, 2, 2)


def test_a_string_for_ints_is_a_type_error(T, F):
    """'same' is a padding of conv{1,2,3}d only; a transposed convolution or a pooling takes ints
    (chainrule's int('same') raised a ValueError)."""
    raises(TypeError, "argument 'padding' must be tuple of ints, not str", F.conv_transpose2d, T.ones(1, 2, 5, 5),
           T.ones(2, 3, 3, 3), padding="same")
    raises(TypeError, "argument 'stride' must be tuple of ints, not str", F.conv_transpose1d, T.ones(1, 2, 5),
           T.ones(2, 3, 3), stride="2")
    y = F.conv2d(T.ones(1, 2, 5, 5), T.ones(3, 2, 2, 2), padding="same", dilation=(1, 2))
    assert tuple(y.shape) == (1, 3, 5, 5)
    assert y[0, 0, 2, 2].item() == 8.0 and y[0, 0, 4, 4].item() == 2.0  # (the odd zeros after)


def test_conv_transpose_output_size_out_of_range_in_pytorch_words(T, nn):
    m = nn.ConvTranspose2d(3, 4, 3, stride=2)
    raises(ValueError, r"requested an output size of \(20, 20\), but valid sizes range from \[11, 11\] to "
                       r"\[12, 12\] \(for an input of (torch\.)?Size\(\[5, 5\]\)\)", m, T.ones(1, 3, 5, 5),
           output_size=(20, 20))
    # the size as given, after the batch and channel sizes are dropped from a full shape
    raises(ValueError, r"requested an output size of \[9, 13\], but valid sizes range from \[11, 11\] to \[12, 12\]",
           m, T.ones(1, 3, 5, 5), output_size=[1, 4, 9, 13])
    assert tuple(m(T.ones(1, 3, 5, 5), output_size=[12, 11]).shape) == (1, 4, 12, 11)


@pytest.mark.parametrize("dims, x_shape, sizes", [
    (1, (1, 2, 1), r"\(1 x 1\)\. Calculated output size per channel: \(1 x -1\)"),  # 1-d: its 2-d kernel's height 1
    (1, (2, 3), r"\(1 x 3\)\. Calculated output size per channel: \(1 x -1\)"),  # unbatched
    (2, (1, 2, 3, 1), r"\(3 x 1\)\. Calculated output size per channel: \(1 x -1\)"),
    (3, (1, 2, 1, 1, 1), r"\(1 x 1 x 1\)\. Calculated output size per channel: \(-1 x -1 x -1\)"),
])
def test_transposed_output_cut_to_nothing(T, F, dims, x_shape, sizes):
    conv = getattr(F, f"conv_transpose{dims}d")
    padding = 1 if x_shape != (2, 3) else 2
    raises(RuntimeError, r"Given input size per channel: " + sizes + r"\. Output size is too small", conv,
           T.ones(*x_shape), T.ones(2, 3, *(1,) * dims), padding=padding)


@pytest.mark.parametrize("shapes, words", [
    (((9, 4), (3, 5, 6), (6,)), "Input must have 3 dims: time, batch, in_channel"),
    (((9, 4, 5), (3, 5), (6,)), "Weight tensor must have 3 dims: kernel_width, in_channels, out_channels"),
    (((9, 4, 5), (3, 5, 6), (6, 1)), "Bias must be 1-D"),
    (((9, 4, 5), (3, 6, 6), (6,)), r"Input dim 2 \(input channels\) is not == dim 1 in the weight tensor"),
    (((9, 4, 5), (3, 5, 6), (7,)), r"Bias size must equal dim 2 in the weight tensor \(output channels\)"),
])
def test_conv_tbc_refusals(T, F, shapes, words):
    raises(RuntimeError, words, F.conv_tbc, *(T.ones(*s) for s in shapes), 1)


def test_conv_tbc_values(T, F):
    """Time-batch-channel: y[t, b, o] = bias[o] + Σ_{k, c} x_pad[t + k, b, c] · w[k, c, o]; ones everywhere
    with pad 1 and a width-3 kernel count the taps on the input (2 at the ends, 3 inside) times 5 channels."""
    y = F.conv_tbc(T.ones(4, 2, 5), T.ones(3, 5, 6), T.zeros(6), 1)
    assert tuple(y.shape) == (4, 2, 6)
    assert y[:, 0, 0].tolist() == [10.0, 15.0, 15.0, 10.0]


def test_forward_over_reverse_carries_a_dual_grad_outputs_tangent(T):
    """autograd.grad with a dual incoming gradient: d/dt of (ġ_t · ∂y/∂x) is ġ's tangent through the backward
    (chainrule re-wrapped the grad_output and dropped its tangent: None where PyTorch gives 2ṫ)."""
    fwAD = T.autograd.forward_ad
    x = T.tensor([1.0, 2.0, 3.0], dtype=T.float64, requires_grad=True)
    with fwAD.dual_level():
        y = x * 2.0
        g = fwAD.make_dual(T.ones(3, dtype=T.float64), T.tensor([1.0, 10.0, 100.0], dtype=T.float64))
        grad_x, = T.autograd.grad(y, [x], g)
        assert fwAD.unpack_dual(grad_x).tangent.tolist() == [2.0, 20.0, 200.0]
        # sin: ∂y/∂x = cos x, so the gradient's tangent is ṫ · cos x
        grad_x, = T.autograd.grad(x.sin(), [x], g)
        np.testing.assert_allclose(values(fwAD.unpack_dual(grad_x).tangent), [1.0, 10.0, 100.0] * np.cos([1, 2, 3]),
                                   rtol=1e-12)


def test_forward_over_reverse_keeps_the_tangent_of_an_input_not_asked_for(T, F):
    """The gradient of x · w in x is w: with w dual and only x asked for, its tangent is ẇ (chainrule detached
    the unwanted w, tangent and all: None where PyTorch gives ẇ)."""
    fwAD = T.autograd.forward_ad
    x = T.tensor([1.0, 2.0, 3.0], dtype=T.float64, requires_grad=True)
    w = T.tensor([4.0, 5.0, 6.0], dtype=T.float64, requires_grad=True)
    with fwAD.dual_level():
        y = x * fwAD.make_dual(w, T.tensor([0.5, 0.25, 0.125], dtype=T.float64))
        grad_x, = T.autograd.grad(y.sum(), [x])
        assert values(grad_x).tolist() == [4.0, 5.0, 6.0]
        assert fwAD.unpack_dual(grad_x).tangent.tolist() == [0.5, 0.25, 0.125]
        # a convolution: the input's gradient conv_transpose(g, w) has the tangent conv_transpose(g, ẇ)
        xs = T.ones(1, 1, 4, dtype=T.float64, requires_grad=True)
        kernel = T.tensor([[[1.0, 2.0]]], dtype=T.float64, requires_grad=True)
        out = F.conv1d(xs, fwAD.make_dual(kernel, T.tensor([[[1.0, -1.0]]], dtype=T.float64)))
        grad_x, = T.autograd.grad(out, [xs], T.ones(1, 1, 3, dtype=T.float64))
        assert values(grad_x).tolist() == [[[1.0, 3.0, 3.0, 2.0]]]
        assert fwAD.unpack_dual(grad_x).tangent.tolist() == [[[1.0, 0.0, 0.0, -1.0]]]


def test_same_padding_warns_once_a_process_for_an_even_window_only(monkeypatch):
    """PyTorch's TORCH_WARN_ONCE for 'same' padding that needs one more zero on one side (an even d(k-1)): once a
    process, every time under set_warn_always; an odd window needs no copy and never warns."""
    import warnings

    import autograd
    import autograd.warn_once as once
    import nn.functional as functional

    monkeypatch.setattr(once, "_warned_once", set())
    x = autograd.arange(10.0).reshape(1, 1, 10)
    with pytest.warns(UserWarning, match="Using padding='same' with even kernel lengths and odd dilation") as said:
        y = functional.conv1d(x, autograd.ones(1, 1, 4), padding="same")
    assert len(said) == 1 and said[0].filename == __file__  # (at the user's line)
    np.testing.assert_array_equal(y.numpy(), [[[3, 6, 10, 14, 18, 22, 26, 30, 24, 17]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        functional.conv1d(x, autograd.ones(1, 1, 4), padding="same")  # once only
        functional.conv2d(x.reshape(1, 1, 2, 5), autograd.ones(1, 1, 3, 3), padding="same")  # an odd window
    autograd.set_warn_always(True)
    try:
        for _ in range(2):
            with pytest.warns(UserWarning, match="even kernel lengths"):
                functional.conv2d(x.reshape(1, 1, 2, 5), autograd.ones(1, 1, 2, 3), padding="same")
    finally:
        autograd.set_warn_always(False)
