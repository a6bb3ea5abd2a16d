"""3-d convolution, pooling and batch norm (nn/functional_3d.py): values against a direct NumPy loop and
finite differences without torch, and against PyTorch (float64, 1e-10: values, indices, every gradient,
layers' repr and state_dict) where it is installed; errors naming the shapes."""

import itertools

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from tests.torch_reference import same_as_torch, same_module_as_torch

torch_only = pytest.mark.torch


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def distinct(*shape, seed=0):
    """Values without ties (a max-pooling gradient is then unambiguous)."""
    return np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 2.0


def conv3d_loop(x, w, stride, padding, dilation):
    """The definition, one output position at a time (groups = 1)."""
    x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    kernel = w.shape[2:]
    out = [(x.shape[2 + a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1 for a in range(3)]
    y = np.zeros((x.shape[0], w.shape[0], *out))
    for t, i, j in itertools.product(*map(range, out)):
        window = x[:, :, t * stride[0]:t * stride[0] + dilation[0] * (kernel[0] - 1) + 1:dilation[0],
                   i * stride[1]:i * stride[1] + dilation[1] * (kernel[1] - 1) + 1:dilation[1],
                   j * stride[2]:j * stride[2] + dilation[2] * (kernel[2] - 1) + 1:dilation[2]]
        y[:, :, t, i, j] = np.einsum("ncdhw,ocdhw->no", window, w)
    return y


def test_conv3d_is_the_definition_and_conv_transpose3d_its_adjoint():
    x, w = randn(2, 3, 5, 6, 6), randn(4, 3, 2, 3, 2, seed=1)
    params = dict(stride=(2, 1, 2), padding=(1, 0, 2), dilation=(1, 2, 1))
    y = F.conv3d(autograd.Tensor(x), autograd.Tensor(w), **params)
    np.testing.assert_allclose(y.numpy(), conv3d_loop(x, w, **params), atol=1e-12)
    # ⟨conv_transpose3d(g, w), a⟩ = ⟨g, conv3d(a, w)⟩
    g = randn(*y.shape, seed=2)
    z = F.conv_transpose3d(autograd.Tensor(g), autograd.Tensor(w), **params, output_padding=(1, 0, 0))
    assert z.shape == x.shape
    np.testing.assert_allclose((z.numpy() * x).sum(), (g * y.numpy()).sum(), rtol=1e-12)


def test_conv3d_and_conv_transpose3d_gradients_match_finite_differences():
    x = autograd.Tensor(randn(1, 2, 3, 4, 3), requires_grad=True)
    w = autograd.Tensor(randn(4, 1, 2, 2, 3, seed=1), requires_grad=True)
    b = autograd.Tensor(randn(4, seed=2), requires_grad=True)
    assert autograd.gradcheck(lambda x, w, b: F.conv3d(x, w, b, padding=(1, 0, 1), groups=2), (x, w, b))
    wt = autograd.Tensor(randn(2, 2, 2, 2, 3, seed=3), requires_grad=True)
    assert autograd.gradcheck(
        lambda x, w, b: F.conv_transpose3d(x, w, b[:4], stride=2, padding=(0, 1, 1), output_padding=1, groups=2),
        (x, wt, b))
    assert autograd.gradgradcheck(lambda x, w: F.conv3d(x, w, stride=(1, 2, 1), groups=2), (x, w))


def test_pool3d_values_and_indices_by_definition():
    x = distinct(1, 2, 4, 4, 6)
    values, indices = F.max_pool3d(autograd.Tensor(x), 2, return_indices=True)
    blocks = x.reshape(1, 2, 2, 2, 2, 2, 3, 2).transpose(0, 1, 2, 4, 6, 3, 5, 7).reshape(1, 2, 2, 2, 3, 8)
    np.testing.assert_array_equal(values.numpy(), blocks.max(-1))
    np.testing.assert_array_equal(np.take_along_axis(x.reshape(1, 2, -1), indices.numpy().reshape(1, 2, -1), 2),
                                  values.numpy().reshape(1, 2, -1))
    np.testing.assert_allclose(F.avg_pool3d(autograd.Tensor(x), 2).numpy(), blocks.mean(-1))
    np.testing.assert_allclose(F.adaptive_avg_pool3d(autograd.Tensor(x), (2, 2, 3)).numpy(), blocks.mean(-1))
    np.testing.assert_array_equal(F.adaptive_max_pool3d(autograd.Tensor(x), (2, 2, 3)).numpy(), blocks.max(-1))
    assert F.max_pool3d(autograd.Tensor(x[0]), 2).shape == (2, 2, 2, 3)  # unbatched


def test_pool3d_gradients_match_finite_differences():
    x = autograd.Tensor(distinct(1, 2, 3, 4, 5), requires_grad=True)
    assert autograd.gradcheck(lambda x: F.max_pool3d(x, (2, 3, 2), stride=1, padding=1, ceil_mode=True), (x,))
    assert autograd.gradcheck(lambda x: F.avg_pool3d(x, 2, padding=1, count_include_pad=False), (x,))
    assert autograd.gradcheck(lambda x: F.adaptive_avg_pool3d(x, (2, 3, 2)), (x,))
    assert autograd.gradcheck(lambda x: F.adaptive_max_pool3d(x, (2, 3, 4)), (x,))


CONV3D = [
    dict(),
    dict(stride=2, padding=1),
    dict(stride=(1, 2, 3), padding=(2, 1, 0), dilation=(2, 1, 2), groups=2),
    dict(padding="same", dilation=(1, 2, 1)),
    dict(padding="valid"),
]


@torch_only
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("options", CONV3D)
def test_conv3d_matches_torch(options):
    import torch

    arrays = [randn(2, 4, 5, 6, 7), randn(6, 4 // options.get("groups", 1), 3, 2, 3, seed=1), randn(6, seed=2)]
    same_as_torch(lambda *t: F.conv3d(*t, **options), lambda *t: torch.nn.functional.conv3d(*t, **options), arrays)


CONV_TRANSPOSE3D = [
    dict(),
    dict(stride=2, padding=1),
    dict(stride=2, padding=(1, 2, 0), output_padding=1),
    dict(stride=(2, 2, 3), padding=(2, 1, 0), dilation=(2, 1, 2), groups=2, output_padding=(1, 1, 2)),
    dict(stride=(1, 2, 1), dilation=(3, 1, 1), output_padding=(2, 1, 0)),  # output_padding ≥ stride in depth
]


@torch_only
@pytest.mark.parametrize("options", CONV_TRANSPOSE3D)
def test_conv_transpose3d_matches_torch(options):
    import torch

    arrays = [randn(2, 4, 3, 4, 5), randn(4, 6 // options.get("groups", 1), 3, 2, 3, seed=1), randn(6, seed=2)]
    same_as_torch(lambda *t: F.conv_transpose3d(*t, **options),
                  lambda *t: torch.nn.functional.conv_transpose3d(*t, **options), arrays)


POOL3D = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3, 2), stride=(1, 2, 3), padding=(1, 1, 0), ceil_mode=True),
]


@torch_only
@pytest.mark.parametrize("options", POOL3D)
def test_max_and_avg_pool3d_match_torch(options):
    import torch

    x = distinct(2, 3, 5, 6, 7)
    for extra in (dict(dilation=1), dict(dilation=(2, 1, 1))):
        settings = dict(options, return_indices=True, **extra)
        ours, theirs = same_as_torch(lambda x, settings=settings: F.max_pool3d(x, **settings),
                                     lambda x, settings=settings: torch.nn.functional.max_pool3d(x, **settings), [x])
        np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
        assert ours[1].dtype == autograd.int64
    for count_include_pad, divisor_override in itertools.product((True, False), (None, 5)):
        settings = dict(options, count_include_pad=count_include_pad, divisor_override=divisor_override)
        same_as_torch(lambda x, settings=settings: F.avg_pool3d(x, **settings),
                      lambda x, settings=settings: torch.nn.functional.avg_pool3d(x, **settings), [x])


@torch_only
def test_max_pool3d_ties_nan_and_infinity_follow_torch():
    import torch

    x = np.zeros((1, 2, 4, 4, 4))
    x[0, 0, 1, 0, :3] = np.nan
    x[0, 0, 2:, 2:, 2:] = 1.0  # ties: the first in scan order wins
    x[0, 1] = -np.inf
    for options in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)):
        values, indices = F.max_pool3d(autograd.Tensor(x), return_indices=True, **options)
        t_values, t_indices = torch.nn.functional.max_pool3d(torch.tensor(x), return_indices=True, **options)
        np.testing.assert_array_equal(values.numpy(), t_values.numpy())
        np.testing.assert_array_equal(indices.numpy(), t_indices.numpy())


@torch_only
@pytest.mark.parametrize("output_size", [2, (3, None, 4), (5, 6, 7), (1, 1, 1), (4, 5, 3)])
def test_adaptive_pool3d_matches_torch(output_size):
    import torch

    x = distinct(2, 3, 5, 6, 7)
    same_as_torch(lambda x: F.adaptive_avg_pool3d(x, output_size),
                  lambda x: torch.nn.functional.adaptive_avg_pool3d(x, output_size), [x])
    ours, theirs = same_as_torch(lambda x: F.adaptive_max_pool3d(x, output_size, True),
                                 lambda x: torch.nn.functional.adaptive_max_pool3d(x, output_size, True), [x])
    np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())


LAYERS_3D = [
    ("Conv3d", (4, 6, 3), dict(stride=2, groups=2, bias=False)),
    ("Conv3d", (4, 6, (1, 2, 3)), dict(padding="same", padding_mode="reflect")),
    ("ConvTranspose3d", (4, 6, (1, 2, 3)), dict(padding=1, output_padding=1, stride=2)),
    ("MaxPool3d", (2,), dict(ceil_mode=True)),
    ("AvgPool3d", (3, 1, 1), dict(count_include_pad=False)),
    ("AdaptiveMaxPool3d", ((1, 2, 3),), {}),
    ("AdaptiveAvgPool3d", (2,), {}),
    ("BatchNorm3d", (4,), {}),
]


@torch_only
@pytest.mark.parametrize("name, args, kwargs", LAYERS_3D)
def test_3d_layers_match_torch(name, args, kwargs):
    import torch

    autograd.manual_seed(0)
    ours, theirs = getattr(nn, name)(*args, **kwargs).double(), getattr(torch.nn, name)(*args, **kwargs).double()
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    same_module_as_torch(ours, theirs, randn(2, 4, 5, 6, 5))
    if name == "BatchNorm3d":
        np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.detach().numpy(), rtol=1e-12)
    # a torch state_dict loads and gives the same outputs
    ours.load_state_dict({k: autograd.Tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    ours.eval(), theirs.eval()
    x = randn(1, 4, 4, 5, 6, seed=3)
    np.testing.assert_allclose(ours(autograd.Tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-10)


def test_3d_errors_name_the_shapes():
    x = autograd.Tensor(randn(1, 2, 4, 4, 4))
    with pytest.raises(RuntimeError, match="Expected 4D .unbatched. or 5D .batched. input to conv3d"):
        F.conv3d(autograd.Tensor(randn(2, 4, 4)), autograd.Tensor(randn(3, 2, 1, 1, 1)))
    with pytest.raises(RuntimeError, match=r"to have 3 channels, but got 2 channels instead"):
        F.conv3d(x, autograd.Tensor(randn(3, 3, 1, 1, 1)))
    with pytest.raises(RuntimeError, match=r"padded input size per channel: \(4 x 4 x 4\). Kernel size: \(5 x 1 x 1\)"):
        F.conv3d(x, autograd.Tensor(randn(3, 2, 5, 1, 1)))
    with pytest.raises(RuntimeError, match="output padding must be smaller than either stride or dilation"):
        F.conv_transpose3d(x, autograd.Tensor(randn(2, 2, 3, 3, 3)), stride=2, output_padding=2)
    with pytest.raises(RuntimeError, match="pad should be at most half of effective kernel size"):
        F.max_pool3d(x, 3, padding=2)
    with pytest.raises(RuntimeError, match=r"Calculated output size: \(2x0x0x0\). Output size is too small"):
        F.max_pool3d(x, 5)
    with pytest.raises(RuntimeError, match="divisor must be not zero"):
        F.avg_pool3d(x, 2, divisor_override=0)
    with pytest.raises(RuntimeError, match="output_size.size.. must be 3"):
        F.adaptive_max_pool3d(x, (1, 2))
    with pytest.raises(ValueError, match="BatchNorm3d"):
        nn.BatchNorm3d(2)(autograd.Tensor(randn(2, 2, 3, 3)))
