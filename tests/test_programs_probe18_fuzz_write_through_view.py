"""Differential fuzzing of the state around the ops rather than their maths (op values and gradients are fuzzed in
tests/test_ops*.py and tests/test_fuzz*.py): the SAME small random program is built on chainrule and on PyTorch, and
the values, gradients, dtypes and shapes (and the class of any error) must agree (how: tests/probe18_fuzz_common.py).
A write through ``x.view(...)`` of a result chainrule lays out otherwise than PyTorch (a convolution's
batch-innermost output, the outputs of 17 layers, a softmax or ``cat`` of a transpose) must reach x, as PyTorch's
view shares x's memory (it was lost: NumPy's reshape copied); a write to the tensor shows in its view and gradient,
and a write through a view of an aliased result reaches the alias."""

import numpy as np
import pytest

import autograd
import nn  # noqa: F401  (registers autograd.nn)

from .probe18_fuzz_common import agree, values

# -- a write through view(): PyTorch's view shares a contiguous result's memory ----------------------------

def _conv_result(T, requires_grad):
    rng = np.random.default_rng(0)
    x = T.tensor(values(rng, (2, 3, 6, 6)), requires_grad=requires_grad)
    w = T.tensor(values(rng, (4, 3, 3, 3)), requires_grad=requires_grad)
    return x, w, T.nn.functional.conv2d(x, w)


WRITTEN_THROUGH_VIEW = {
    "conv2d": lambda T, x, w, y: y,
    "relu_conv2d": lambda T, x, w, y: y.relu(),
    "conv1d": lambda T, x, w, y: T.nn.functional.conv1d(x[:, :, 0], w[:, :, 0]),
    "interpolate": lambda T, x, w, y: T.nn.functional.interpolate(y, scale_factor=2),
    "softmax_of_transpose": lambda T, x, w, y: y.transpose(1, 3).softmax(-1),
    "cat_of_transposes": lambda T, x, w, y: T.cat([y.transpose(2, 3), y.transpose(2, 3)], 1),
    "cumsum_of_transpose": lambda T, x, w, y: y.transpose(0, 1).cumsum(1),
    "einsum": lambda T, x, w, y: T.einsum("nchw,ochw->on", x[:, :, :3, :3], w),
}


# chainrule's layouts that are not PyTorch's (a convolution's batch-innermost output and what is computed from it
# elementwise, which PyTorch makes contiguous): view() there copies, a
# documented difference (README, "view where the strides allow no view"), so a write through the view does not
# reach the tensor. (Laying the tensor out row-major in view() where no other holder sees its memory was tried, by
# reference counts; it was left out: those counts are no contract, and a wrong one would split shared memory.)
VIEW_COPIES = pytest.mark.xfail(strict=True, reason="view() of a result chainrule lays out otherwise than PyTorch "
                                "(batch-innermost convolution output, an op of a transpose) copies (README): the "
                                "write through the view does not reach the tensor")
# (Batch norm, group norm, interpolation and reductions lay out their results as PyTorch's now: a view of one of
# them, taken from a convolution's output, shares its memory.)
COPIED_VIEWS = {"conv2d", "relu_conv2d", "conv1d", "conv_transpose", "max_pool_of_conv", "residual_sum",
                "max_pool1d_of_conv1d"}


def _marked(names):
    return [pytest.param(name, marks=VIEW_COPIES) if name in COPIED_VIEWS else name for name in names]


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("make", _marked(sorted(WRITTEN_THROUGH_VIEW)))
def test_a_write_through_view_reaches_the_tensor(make, requires_grad):
    """Centring the rows of a feature map in place through a view of it (``f = y.view(-1, w); f.sub_(mean)``),
    then reading y: PyTorch's result is contiguous, so the view shares its memory. (chainrule's convolution
    keeps the batch innermost: a view that merges the batch dim with others was a copy.)"""
    def program(T, backward=requires_grad):
        x, w, y = _conv_result(T, requires_grad)
        y = WRITTEN_THROUGH_VIEW[make](T, x, w, y)
        flat = y.view(-1, y.shape[-1]) if y.dim() > 2 else y.view(-1)
        flat.sub_(flat.mean(-1, keepdim=True))
        out = (y, flat)
        if backward:
            out += tuple(T.autograd.grad((y ** 2).sum() + flat.sum(), [x, w]))
        return out

    result = agree(program, refused=RuntimeError)
    if result is None:  # both refuse the backward: the write changed a value the graph saved (relu's, softmax's)
        assert make in ("relu_conv2d", "softmax_of_transpose")
        result = agree(lambda T: program(T, backward=False))
    y, flat = result[:2]
    centred = y[3].reshape(flat[3].shape)
    np.testing.assert_allclose(centred, flat[3])  # y shows what was written through its view
    np.testing.assert_allclose(centred.mean(-1), 0, atol=1e-12)


def _layer_output(T, name):
    T.manual_seed(0)
    nn_ = T.nn
    rng = np.random.default_rng(0)
    images = T.tensor(rng.standard_normal((2, 3, 6, 6)), dtype=T.float32)
    sequence = T.tensor(rng.standard_normal((5, 2, 4)), dtype=T.float32)
    conv = nn_.Conv2d(3, 4, 3, padding=1)
    signals = sequence.permute(1, 2, 0)
    return {
        "conv_transpose": lambda: nn_.ConvTranspose2d(3, 2, 2, stride=2)(images),
        "upsample": lambda: nn_.Upsample(scale_factor=2)(images),
        "cat_of_convs": lambda: T.cat([conv(images), conv(images)], 1),
        "batch_norm_of_conv": lambda: nn_.BatchNorm2d(4)(conv(images)),
        "relu_of_batch_norm_of_conv": lambda: nn_.ReLU()(nn_.BatchNorm2d(4)(conv(images))),
        "max_pool_of_conv": lambda: nn_.MaxPool2d(2)(conv(images)),
        "adaptive_avg_pool_of_conv": lambda: nn_.AdaptiveAvgPool2d(1)(conv(images)),
        "residual_sum": lambda: conv(images) + images[:, :1],
        "conv1d": lambda: nn_.Conv1d(4, 3, 2)(signals),
        "max_pool1d_of_conv1d": lambda: nn_.MaxPool1d(2)(nn_.Conv1d(4, 3, 2)(signals)),
        "group_norm_of_conv": lambda: nn_.GroupNorm(2, 4)(conv(images)),
        "layer_norm_of_channels_last": lambda: nn_.LayerNorm(4)(conv(images).permute(0, 2, 3, 1)),
        "bilinear_upsampling_of_conv": lambda: nn_.functional.interpolate(conv(images), scale_factor=2,
                                                                          mode="bilinear"),
        "softmax_over_channels": lambda: conv(images).softmax(1),
        "mean_over_space": lambda: conv(images).mean((2, 3)),
        "lstm": lambda: nn_.LSTM(4, 3)(sequence)[0],
        "transformer_encoder_layer": lambda: nn_.TransformerEncoderLayer(4, 2, 8, dropout=0.0)(sequence),
    }[name]()


LAYER_OUTPUTS = ["conv_transpose", "upsample", "cat_of_convs", "batch_norm_of_conv", "relu_of_batch_norm_of_conv",
                 "max_pool_of_conv", "adaptive_avg_pool_of_conv", "residual_sum", "conv1d", "max_pool1d_of_conv1d",
                 "group_norm_of_conv", "layer_norm_of_channels_last", "bilinear_upsampling_of_conv",
                 "softmax_over_channels", "mean_over_space", "lstm", "transformer_encoder_layer"]


@pytest.mark.parametrize("recorded", [False, True])
@pytest.mark.parametrize("name", _marked(LAYER_OUTPUTS))
def test_a_write_through_a_flat_view_of_a_layers_output_reaches_it(name, recorded):
    """``y.view(-1)[0] = 100`` on the output of a layer (a view merging its batch dim): PyTorch's output is
    contiguous, so y shows the write (19 such outputs of chainrule's did not)."""
    def program(T):
        if recorded:
            y = _layer_output(T, name)
        else:
            with T.no_grad():
                y = _layer_output(T, name)
        flat = y.view(-1)
        flat[0] = 100.0
        return y.reshape(-1)[:3], flat[:3]

    y, flat = agree(program, tolerance=1e-5)
    assert y[3][0] == 100.0 and flat[3][0] == 100.0


@VIEW_COPIES
def test_a_write_to_the_tensor_shows_in_its_view_and_gradient():
    def program(T):
        x, w, y = _conv_result(T, True)
        before = y.detach().clone()
        flat = y.view(-1)
        y.mul_(2).add_(0.5)  # after the view was taken
        return before, flat, T.autograd.grad((flat ** 2).sum(), [x, w])

    before, flat, grads = agree(program)
    np.testing.assert_allclose(flat[3], 2 * before[3].reshape(-1) + 0.5)


@VIEW_COPIES
def test_a_write_through_view_of_an_aliased_result_reaches_the_alias():
    _, _, y = _conv_result(autograd, False)
    alias = y.detach()
    y.view(-1)[0] = 100.0
    assert alias[0, 0, 0, 0].item() == 100.0
