"""Focused tests of what the 3-D volumetric programs (tests/test_programs_probe19_volumes_*.py) found, each run on
chainrule and on PyTorch (the ``T`` fixture): the hooks that layers written after PyTorch's own reach for."""

import importlib

import numpy as np
import pytest


def nn_of(T):
    return importlib.import_module("nn" if T.__name__ == "autograd" else "torch.nn")


@pytest.mark.parametrize("padding, dilation, want", [
    ((1, 2, 0), 1, (0, 0, 2, 2, 1, 1)),
    (2, 1, (2, 2, 2, 2, 2, 2)),
    ("same", (1, 1, 2), (1, 1, 1, 2, 1, 1)),  # kernel (3, 4, 2): the odd one on the right
    ("valid", 1, (0, 0, 0, 0, 0, 0)),
])
def test_conv3d_reversed_padding_repeated_twice(T, padding, dilation, want):
    nn = nn_of(T)
    conv = nn.Conv3d(1, 1, (3, 4, 2), padding=padding, dilation=dilation, padding_mode="reflect")
    assert tuple(conv._reversed_padding_repeated_twice) == want
    assert tuple(nn.ConvTranspose3d(1, 1, 3, padding=(1, 2, 0))._reversed_padding_repeated_twice) == (0, 0, 2, 2, 1, 1)


def test_a_conv_forward_written_after_pytorchs_pads_with_it(T):
    """A layer that overrides _conv_forward as PyTorch's own is written (weight standardisation, quantised weights)
    pads by ``_reversed_padding_repeated_twice`` for the padding modes other than zeros."""
    nn = nn_of(T)
    F = nn.functional

    class ScaledConv3d(nn.Conv3d):
        def _conv_forward(self, input, weight, bias):
            if self.padding_mode != "zeros":
                return F.conv3d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                                2 * weight, bias, self.stride, 0, self.dilation, self.groups)
            return F.conv3d(input, 2 * weight, bias, self.stride, self.padding, self.dilation, self.groups)

    conv = ScaledConv3d(1, 1, 3, padding=(1, 0, 2), padding_mode="circular", bias=False)
    with T.no_grad():
        conv.weight.copy_(T.tensor(np.arange(27.0).reshape(1, 1, 3, 3, 3)))
    x = T.tensor(np.arange(4 * 5 * 3, dtype=np.float32).reshape(1, 1, 4, 5, 3))
    padded = np.pad(x.numpy()[0, 0], [(1, 1), (0, 0), (2, 2)], mode="wrap")
    want = np.array([[[2 * (padded[i:i + 3, j:j + 3, k:k + 3] * np.arange(27.0).reshape(3, 3, 3)).sum()
                       for k in range(5)] for j in range(3)] for i in range(4)])
    np.testing.assert_allclose(conv(x).detach().numpy()[0, 0], want, rtol=1e-6)


def test_a_batch_norm_subclass_checks_its_own_input_dims(T):
    """V-Net's ContBatchNorm3d subclasses _BatchNorm with only a _check_input_dim of its own: forward calls it
    (a 5-D input passes, a 4-D one gets its message), and _BatchNorm alone has none (NotImplementedError)."""
    nn = nn_of(T)
    _BatchNorm = nn.modules.batchnorm._BatchNorm

    class ContBatchNorm3d(_BatchNorm):
        def _check_input_dim(self, input):
            if input.dim() != 5:
                raise ValueError(f"expected 5D input (got {input.dim()}D input)")

    bn = ContBatchNorm3d(2)
    x = T.tensor(np.arange(2 * 2 * 8, dtype=np.float32).reshape(2, 2, 2, 2, 2))
    y = bn(x).detach().numpy()
    xs = x.numpy()
    mean, var = xs.mean((0, 2, 3, 4), keepdims=True), xs.var((0, 2, 3, 4), keepdims=True)
    np.testing.assert_allclose(y, (xs - mean) / np.sqrt(var + 1e-5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean.ravel(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected 5D input \(got 4D input\)"):
        bn(x[0])
    with pytest.raises(NotImplementedError):
        _BatchNorm(2)(x)
    with pytest.raises(ValueError, match="expects input of 5 dims|expected 5D input"):
        nn.BatchNorm3d(2)(x[0])


def test_a_transposed_conv_forward_written_after_pytorchs_asks_for_its_output_padding(T):
    """PyTorch's _output_padding(input, output_size, stride, padding, kernel_size, num_spatial_dims, dilation), as
    the forward of a layer copied from ConvTranspose3d's calls it (here with the weight standardised)."""
    nn = nn_of(T)
    F = nn.functional

    class WSConvTranspose3d(nn.ConvTranspose3d):
        def forward(self, input, output_size=None):
            num_spatial_dims = 3
            output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                                  num_spatial_dims, self.dilation)
            w = self.weight - self.weight.mean(dim=[1, 2, 3, 4], keepdim=True)
            return F.conv_transpose3d(input, w, self.bias, self.stride, self.padding, output_padding, self.groups,
                                      self.dilation)

    up = WSConvTranspose3d(2, 1, 3, stride=(2, 3, 2), padding=1, dilation=(1, 1, 2))
    x = T.ones(1, 2, 3, 2, 4)
    assert tuple(up(x, output_size=(6, 5, 10)).shape) == (1, 1, 6, 5, 10)
    assert tuple(up(x, output_size=[1, 1, 5, 4, 9]).shape) == (1, 1, 5, 4, 9)
    assert tuple(up(x[0], output_size=(1, 6, 6, 10)).shape) == (1, 6, 6, 10)  # unbatched: (C, *spatial) may lead
    assert tuple(up._output_padding(x, (6, 5, 8), (2, 3, 2), (1, 1, 1), (3, 3, 3), 3)) == (1, 1, 1)  # dilation 1
    with pytest.raises(ValueError, match="requested an output size of"):
        up(x, output_size=(7, 5, 10))
    with pytest.raises(ValueError, match="output_size must have 3 or 5 elements"):
        up(x, output_size=(6, 5))


def test_an_instance_norm_subclass_names_its_own_dims(T):
    """A subclass of _InstanceNorm (as PyTorch's InstanceNorm3d is written) gives _get_no_batch_dim and
    _check_input_dim; forward asks both: here volumes of 3 spatial dims only, batched."""
    nn = nn_of(T)

    class VolumeInstanceNorm(nn.modules.instancenorm._InstanceNorm):
        def _get_no_batch_dim(self):
            return 4

        def _check_input_dim(self, input):
            if input.dim() != 5:
                raise ValueError(f"expected 5D input (got {input.dim()}D input)")

    norm = VolumeInstanceNorm(2, affine=True)
    x = T.tensor(np.random.default_rng(0).standard_normal((2, 2, 3, 3, 3)), dtype=T.float32)
    xs = x.numpy()
    want = (xs - xs.mean((2, 3, 4), keepdims=True)) / np.sqrt(xs.var((2, 3, 4), keepdims=True) + 1e-5)
    np.testing.assert_allclose(norm(x).detach().numpy(), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected 5D input \(got 4D input\)"):
        norm(x[0])
    with pytest.raises(ValueError, match=r"expected 4D or 5D input \(got 3D input\)"):
        nn.InstanceNorm3d(2)(x[0, 0])
    with pytest.raises(NotImplementedError):
        nn.modules.instancenorm._InstanceNorm(2)(x)


def test_a_layer_subclassing_convnd_calls_pytorchs_constructor(T):
    """_ConvNd(in, out, kernel_size, stride, padding, dilation, transposed, output_padding, groups, bias,
    padding_mode), tuples given, as layers that subclass it directly (CondConv, Bayesian convolutions) call it."""
    nn = nn_of(T)
    _ConvNd, _triple = nn.modules.conv._ConvNd, nn.modules.utils._triple

    class TimesTwoConv3d(_ConvNd):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
            super().__init__(in_channels, out_channels, _triple(kernel_size), _triple(stride), _triple(padding),
                             _triple(1), False, _triple(0), 1, True, "replicate")

        def forward(self, x):
            x = nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return nn.functional.conv3d(x, 2 * self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    conv = TimesTwoConv3d(2, 3, (1, 3, 3), padding=(0, 1, 1))
    assert tuple(conv.weight.shape) == (3, 2, 1, 3, 3) and tuple(conv.bias.shape) == (3,)
    assert conv.transposed is False and tuple(conv.output_padding) == (0, 0, 0) and conv.padding_mode == "replicate"
    x = T.ones(1, 2, 2, 4, 4)
    want = 2 * conv.weight.detach().numpy().sum((1, 2, 3, 4)) + conv.bias.detach().numpy()
    want = np.broadcast_to(want[None, :, None, None, None], (1, 3, 2, 4, 4))  # replicate padding of ones: all ones
    np.testing.assert_allclose(conv(x).detach().numpy(), want, rtol=1e-5)

    class Up(nn.modules.conv._ConvTransposeNd):
        def __init__(self):
            super().__init__(2, 1, _triple(2), _triple(2), _triple(0), _triple(1), True, _triple(1), 1, False, "zeros")

    up = Up()
    assert up.transposed is True and tuple(up.weight.shape) == (2, 1, 2, 2, 2) and tuple(up.output_padding) == (1, 1, 1)


def test_fuse_modules_folds_3d_and_1d_convolutions_and_transposed_ones(T):
    """fuse_modules knows PyTorch's 1-d and 3-d patterns (Conv3d + BatchNorm3d (+ ReLU), Conv3d + ReLU,
    ConvTranspose3d + BatchNorm3d, BatchNorm3d + ReLU, Conv1d + BatchNorm1d), as well as the 2-d ones."""
    nn = nn_of(T)
    q = T.ao.quantization
    T.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                          nn.ConvTranspose3d(4, 3, 2, stride=2), nn.BatchNorm3d(3), nn.Conv3d(3, 3, 1), nn.ReLU(),
                          nn.BatchNorm3d(3), nn.ReLU())
    with T.no_grad():
        for i in (1, 4, 7):
            model[i].running_mean.uniform_(-0.5, 0.5)
            model[i].running_var.uniform_(0.5, 2.0)
            model[i].weight.uniform_(0.5, 1.5)
    model.eval()
    fused = q.fuse_modules(model, [["0", "1", "2"], ["3", "4"], ["5", "6"], ["7", "8"]])
    assert [type(m).__name__ for m in fused] == ["ConvReLU3d", "Identity", "Identity", "ConvTranspose3d", "Identity",
                                                 "ConvReLU3d", "Identity", "BNReLU3d", "Identity"]
    x = T.tensor(np.random.default_rng(0).standard_normal((2, 2, 3, 4, 2)), dtype=T.float32)
    np.testing.assert_allclose(fused(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    line = nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3)).eval()
    assert type(q.fuse_modules(line, ["0", "1"])[0]).__name__ == "Conv1d"
    assert [type(m).__name__ for m in T.ao.nn.intrinsic.ConvBnReLU3d(*model[:3])] == ["Conv3d", "BatchNorm3d", "ReLU"]
    with pytest.raises(Exception, match="ConvTranspose\\+BatchNorm not yet supported in QAT"):
        q.fuse_modules_qat(nn.Sequential(nn.ConvTranspose3d(2, 4, 2), nn.BatchNorm3d(4)), [["0", "1"]])


def test_fusing_a_3d_convolution_for_qat_is_refused_here():
    """PyTorch swaps a ConvBnReLU3d for its nn.intrinsic.qat form in prepare_qat; chainrule has none, so it refuses
    the fusing rather than leave the layer to train unquantized."""
    import autograd
    import nn

    model = nn.Sequential(nn.Conv3d(2, 4, 3), nn.BatchNorm3d(4), nn.ReLU())
    with pytest.raises(NotImplementedError, match="ConvBnReLU3d"):
        autograd.ao.quantization.fuse_modules_qat(model, [["0", "1", "2"]])
    with pytest.raises(NotImplementedError, match="ConvReLU3d"):
        autograd.ao.quantization.fuse_modules_qat(nn.Sequential(nn.Conv3d(2, 4, 3), nn.ReLU()), [["0", "1"]])
    fused = autograd.ao.quantization.fuse_modules_qat(nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU()), [["0", "1"]])
    assert type(fused[0]).__name__ == "ConvReLU2d"


def test_pooling_bases_take_no_arguments_as_pytorchs(T):
    """_AvgPoolNd and _MaxUnpoolNd (nn.modules.pooling) take no arguments in PyTorch: a layer subclassing them calls
    super().__init__() and sets its own sizes."""
    nn = nn_of(T)
    F = nn.functional

    class TemporalAvgPool(nn.modules.pooling._AvgPoolNd):
        def __init__(self, frames):
            super().__init__()
            self.kernel_size, self.stride, self.padding = (frames, 1, 1), (frames, 1, 1), 0

        def forward(self, x):
            return F.avg_pool3d(x, self.kernel_size, self.stride, self.padding)

    x = T.tensor(np.arange(2 * 4 * 2 * 2, dtype=np.float32).reshape(1, 2, 4, 2, 2))
    np.testing.assert_allclose(TemporalAvgPool(4)(x).numpy()[:, :, 0], x.numpy().mean(2))

    class Unpool(nn.modules.pooling._MaxUnpoolNd):
        def __init__(self):
            super().__init__()
            self.kernel_size, self.stride, self.padding = (2, 2, 2), (2, 2, 2), (0, 0, 0)

        def forward(self, x, indices):
            return F.max_unpool3d(x, indices, self.kernel_size, self.stride, self.padding)

    pooled, indices = F.max_pool3d(x, 2, return_indices=True)
    assert repr(Unpool()) == "Unpool(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 0, 0))"
    assert tuple(Unpool()(pooled, indices).shape) == (1, 2, 4, 2, 2)


@pytest.mark.parametrize("layer, base", [
    ("ReflectionPad3d", "_ReflectionPadNd"), ("ReplicationPad3d", "_ReplicationPadNd"),
    ("ConstantPad3d", "_ConstantPadNd"), ("ZeroPad3d", "_ConstantPadNd"), ("CircularPad3d", "_CircularPadNd")])
def test_padding_layers_have_pytorchs_bases(T, layer, base):
    nn = nn_of(T)
    assert issubclass(getattr(nn, layer), getattr(nn.modules.padding, base))
    assert issubclass(nn.LPPool3d, nn.modules.pooling._LPPoolNd)
