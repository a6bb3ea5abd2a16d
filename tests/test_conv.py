"""Convolution layers and functions against PyTorch (float64, 1e-10: values, input and parameter gradients),
over strides, paddings ('same', 'valid', padding modes), dilations, groups and output_padding; PyTorch's
weight layouts and default initialisation; errors naming the shapes."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn
import nn.functional as F
from tests.test_ops_convolution import conv_setting
from tests.torch_reference import same_as_torch, same_module_as_torch

torch_only = pytest.mark.torch


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


CONV2D = [
    dict(),
    dict(stride=2),
    dict(stride=(2, 1), padding=(1, 2)),
    dict(padding=1, dilation=2),
    dict(padding="same"),
    dict(padding="same", dilation=(2, 1)),
    dict(padding="valid", stride=(1, 3)),
    dict(groups=2, padding=1),
    dict(groups=4, stride=2, padding=1),  # depthwise
]


@torch_only
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("options", CONV2D)
def test_conv2d_matches_torch(options, bias):
    import torch

    groups = options.get("groups", 1)
    arrays = [randn(2, 4, 7, 6), randn(6 if groups != 4 else 8, 4 // groups, 3, 2, seed=1)]
    if bias:
        arrays.append(randn(arrays[1].shape[0], seed=2))
    same_as_torch(lambda *t: F.conv2d(*t, **options), lambda *t: torch.nn.functional.conv2d(*t, **options), arrays)


@torch_only
@given(setting=conv_setting(), bias=st.booleans())
def test_conv2d_matches_torch_on_drawn_settings(setting, bias):
    import torch

    s = setting
    arrays = [randn(s["n"], s["in_channels"], *s["size"], seed=s["seed"]),
              randn(s["out_channels"], s["in_channels"] // s["params"]["groups"], *s["kernel"], seed=s["seed"] + 1)]
    if bias:
        arrays.append(randn(s["out_channels"], seed=s["seed"] + 2))
    p = s["params"]
    same_as_torch(lambda *t: F.conv2d(*t, **p), lambda *t: torch.nn.functional.conv2d(*t, **p), arrays)


@torch_only
@pytest.mark.parametrize("options", [dict(), dict(stride=2, padding=1), dict(dilation=2, padding="same"),
                                     dict(groups=3, padding="valid"), dict(padding="same")])
def test_conv1d_matches_torch(options):
    import torch

    groups = options.get("groups", 1)
    arrays = [randn(2, 3, 9), randn(6, 3 // groups, 4, seed=1), randn(6, seed=2)]
    same_as_torch(lambda *t: F.conv1d(*t, **options), lambda *t: torch.nn.functional.conv1d(*t, **options), arrays)


@torch_only
def test_unbatched_input_matches_torch():
    import torch

    same_as_torch(lambda x, w: F.conv2d(x, w, padding=1), lambda x, w: torch.nn.functional.conv2d(x, w, padding=1),
                  [randn(3, 5, 5), randn(2, 3, 3, 3, seed=1)])
    same_as_torch(F.conv1d, torch.nn.functional.conv1d, [randn(3, 5), randn(2, 3, 3, seed=1)])


TRANSPOSED = [
    dict(),
    dict(stride=2),
    dict(stride=2, padding=1, output_padding=1),
    dict(stride=(3, 2), padding=(1, 0), output_padding=(2, 1)),
    dict(dilation=2, padding=1),
    dict(dilation=2, output_padding=1),  # output_padding below the dilation, not the stride
    dict(groups=2, stride=2, output_padding=1),
]


@torch_only
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("options", TRANSPOSED)
def test_conv_transpose2d_matches_torch(options, bias):
    import torch

    groups = options.get("groups", 1)
    arrays = [randn(2, 4, 5, 4), randn(4, 6 // groups, 3, 2, seed=1)]
    if bias:
        arrays.append(randn(6, seed=2))
    same_as_torch(lambda *t: F.conv_transpose2d(*t, **options),
                  lambda *t: torch.nn.functional.conv_transpose2d(*t, **options), arrays)


@torch_only
def test_conv_transpose1d_matches_torch():
    import torch

    options = dict(stride=2, padding=1, output_padding=1)
    same_as_torch(lambda *t: F.conv_transpose1d(*t, **options),
                  lambda *t: torch.nn.functional.conv_transpose1d(*t, **options),
                  [randn(2, 3, 6), randn(3, 2, 3, seed=1), randn(2, seed=2)])


@torch_only
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_conv2d_module_padding_modes_match_torch(mode, padding):
    import torch

    options = dict(padding=padding, padding_mode=mode, bias=True)
    kernel = (4, 3) if padding == "same" else 3  # an even kernel: 'same' pads one more on the right
    ours = nn.Conv2d(4, 6, kernel, groups=2, **options).double()
    theirs = torch.nn.Conv2d(4, 6, kernel, groups=2, **options).double()
    same_module_as_torch(ours, theirs, randn(2, 4, 6, 5))


@torch_only
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv1d_module_matches_torch(mode):
    import torch

    ours = nn.Conv1d(2, 4, 3, stride=2, padding=2, dilation=1, padding_mode=mode).double()
    theirs = torch.nn.Conv1d(2, 4, 3, stride=2, padding=2, padding_mode=mode).double()
    same_module_as_torch(ours, theirs, randn(3, 2, 8))


@torch_only
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_unbatched_conv2d_module_padding_modes_match_torch(mode):
    import torch

    ours = nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode).double()
    theirs = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode).double()
    same_module_as_torch(ours, theirs, randn(2, 4, 5))


@torch_only
def test_conv_transpose2d_module_matches_torch():
    import torch

    ours = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    theirs = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    same_module_as_torch(ours, theirs, randn(2, 4, 5, 5))


def test_weight_layouts_and_default_initialisation():
    autograd.manual_seed(0)
    conv = nn.Conv2d(6, 32, (3, 5), groups=2)
    assert conv.weight.shape == (32, 3, 3, 5) and conv.bias.shape == (32,)
    transposed = nn.ConvTranspose2d(6, 32, 3, groups=2)
    assert transposed.weight.shape == (6, 16, 3, 3) and transposed.bias.shape == (32,)
    assert nn.Conv1d(4, 8, 5).weight.shape == (8, 4, 5)
    assert nn.Conv2d(3, 4, 3, bias=False).bias is None
    # kaiming_uniform_(a=√5): U(−1/√fan_in, 1/√fan_in) for the weight and the bias alike
    for layer, fan_in in ((conv, 3 * 15), (transposed, 16 * 9)):
        bound = 1 / math.sqrt(fan_in)
        for p in (layer.weight, layer.bias):
            values = p.numpy()
            assert np.abs(values).max() <= bound
        assert np.abs(layer.weight.numpy()).max() > 0.95 * bound
        np.testing.assert_allclose(layer.weight.numpy().std(), bound / math.sqrt(3), rtol=0.15)


def test_modules_repr_and_state_dict_names():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="reflect")
    assert repr(conv) == "Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), padding_mode=reflect)"
    assert sorted(conv.state_dict()) == ["bias", "weight"]


@torch_only
def test_unfold_and_fold_match_torch():
    import torch

    options = dict(kernel_size=(2, 3), dilation=(1, 2), padding=1, stride=(2, 1))
    (cols, _) = same_as_torch(lambda x: F.unfold(x, **options), lambda x: torch.nn.functional.unfold(x, **options),
                              [randn(2, 3, 6, 7)])
    same_as_torch(lambda c: F.fold(c, (6, 7), **options), lambda c: torch.nn.functional.fold(c, (6, 7), **options),
                  [randn(*cols.shape, seed=3)])
    same_as_torch(lambda c: nn.Fold((4, 5), 2)(c), lambda c: torch.nn.Fold((4, 5), 2)(c), [randn(8, 12)])
    same_as_torch(lambda x: nn.Unfold(2, stride=2)(x), lambda x: torch.nn.Unfold(2, stride=2)(x),
                  [randn(1, 2, 4, 6)])


def test_conv_is_one_gemm_of_unfolded_input():
    x, w = autograd.Tensor(randn(2, 3, 5, 5)), autograd.Tensor(randn(4, 3, 3, 3, seed=1))
    expected = (w.reshape(4, -1) @ F.unfold(x, 3)).reshape(2, 4, 3, 3)
    np.testing.assert_allclose(F.conv2d(x, w).numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


def test_float32_stays_float32():
    conv = nn.Conv2d(1, 2, 3)
    x = autograd.Tensor(randn(1, 1, 5, 5).astype(np.float32), requires_grad=True)
    y = conv(x)
    y.sum().backward()
    assert y.dtype == autograd.float32 and x.grad.dtype == autograd.float32
    assert conv.weight.grad.dtype == autograd.float32


@torch_only
def test_errors_match_torch_types_and_name_the_shapes():
    import torch

    cases = [
        (lambda m: m.conv2d(m_tensor(m, 1, 4, 5, 5), m_tensor(m, 8, 3, 3, 3)),
         "expected input[1, 4, 5, 5] to have 3 channels, but got 4 channels instead"),
        (lambda m: m.conv2d(m_tensor(m, 5, 5), m_tensor(m, 8, 3, 3, 3)), "Expected 3D (unbatched) or 4D (batched)"),
        (lambda m: m.conv2d(m_tensor(m, 1, 3, 2, 2), m_tensor(m, 8, 3, 3, 3)), "Kernel size can't be greater"),
        (lambda m: m.conv2d(m_tensor(m, 1, 4, 5, 5), m_tensor(m, 7, 2, 3, 3), groups=2), "divisible by 2"),
        (lambda m: m.conv2d(m_tensor(m, 1, 4, 5, 5), m_tensor(m, 8, 4, 3, 3), stride=2, padding="same"),
         "not supported for strided convolutions"),
        (lambda m: m.conv_transpose2d(m_tensor(m, 1, 4, 5, 5), m_tensor(m, 4, 2, 3, 3), output_padding=1),
         "output padding must be smaller than either stride or dilation"),
        (lambda m: m.conv_transpose2d(m_tensor(m, 1, 4, 5, 5), m_tensor(m, 3, 2, 3, 3)), "got 4"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError) as theirs:
            call(torch.nn.functional)
        with pytest.raises(type(theirs.value), match=_escaped(message)) as ours:
            call(F)
        if "channels" in message:
            assert "[1, 4, 5, 5]" in str(ours.value)


def m_tensor(module, *shape):
    """A float64 tensor of ``shape`` from the library that ``module`` (F or torch.nn.functional) belongs to."""
    if module is F:
        return autograd.Tensor(randn(*shape))
    import torch

    return torch.tensor(randn(*shape))


def _escaped(message):
    import re

    return re.escape(message)


def test_module_argument_errors():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        nn.Conv2d(4, 5, 3, groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        nn.Conv2d(3, 4, 3, padding="full")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(RuntimeError, match=r"padding \(3, 3\) at dimension 3 of input \[1, 3, 2, 2\]"):
        nn.Conv2d(3, 4, 3, padding=3, padding_mode="reflect")(autograd.Tensor(randn(1, 3, 2, 2)))
    with pytest.raises(RuntimeError, match="Expected size of input's dimension 1 to be divisible"):
        F.fold(autograd.Tensor(randn(1, 5, 4)), (3, 3), 2)
    with pytest.raises(RuntimeError, match="calculated number of sliding blocks 2 \\* 2 = 4"):
        F.fold(autograd.Tensor(randn(1, 4, 5)), (3, 3), 2)


@given(mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]), padding=st.integers(0, 2),
       stride=st.integers(1, 2), groups=st.sampled_from([1, 2]), seed=st.integers(0, 99))
def test_conv2d_module_gradients_match_finite_differences(mode, padding, stride, groups, seed):
    """Input, weight and bias of nn.Conv2d under every padding mode (the copying modes pad by a gather)."""
    autograd.manual_seed(seed)
    layer = nn.Conv2d(2, 4, (3, 2), stride=stride, padding=padding, groups=groups, padding_mode=mode).double()
    x = autograd.Tensor(randn(1, 2, 4, 3, seed=seed), requires_grad=True)

    def fn(x, weight, bias):  # the layer's own padding, with these tensors as its parameters
        padded, padding = layer._padded_input(x)
        return F.conv2d(padded, weight, bias, layer.stride, padding, layer.dilation, layer.groups)

    weight = autograd.Tensor(layer.weight.numpy(), requires_grad=True)
    bias = autograd.Tensor(layer.bias.numpy(), requires_grad=True)
    assert autograd.gradcheck(fn, (x, weight, bias))


@pytest.mark.parametrize("name", ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                                  "conv_transpose3d"])
def test_convolutions_refuse_mixed_dtypes_as_pytorch(name):
    """A float64 batch (NumPy's default) into a float32 layer: PyTorch refuses instead of promoting,
    as linear here always did."""
    spatial = int(name[-2])
    x = autograd.ones(1, 2, *(4,) * spatial, dtype=autograd.float64)
    w = autograd.ones(2, 2, *(2,) * spatial)
    f = getattr(F, name)
    with pytest.raises(RuntimeError, match=f"{name}: the weight is float32 but the input is float64"):
        f(x, w)
    with pytest.raises(RuntimeError, match=f"{name}: the bias is float64 but the input is float32"):
        f(x.float(), w, autograd.ones(2, dtype=autograd.float64))
    assert f(x, w.double()).dtype == autograd.float64
    torch = pytest.importorskip("torch")
    tf = getattr(torch.nn.functional, name)
    with pytest.raises(RuntimeError):
        tf(torch.ones(1, 2, *(4,) * spatial, dtype=torch.float64), torch.ones(2, 2, *(2,) * spatial))
