# ruff: noqa: B007, E501, UP008  (the programs are kept as their authors wrote them)
"""3-D volumetric programs as medical-imaging and video code writes them, run as tests/probe19_volumes_common.py
says. 3-D layers and their options: a PSP-style pyramid pooling head (``AdaptiveAvgPool3d`` bins, trilinear
``align_corners=True``) with ``AvgPool3d(ceil_mode, count_include_pad, divisor_override)`` and
``AdaptiveMaxPool3d(return_indices=True)``; Gaussian smoothing and edge losses with 6-element ``F.pad`` in reflect /
replicate / circular modes and ``Conv3d(padding_mode=...)``; CondConv3D subclassing ``_ConvNd`` with PyTorch's
constructor."""

import numpy as np

from .probe19_volumes_common import gaussian_kernel_1d, volumes
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Pyramid pooling (PSPNet-3D) with AvgPool3d's options and AdaptiveMaxPool3d's indices
# ----------------------------------------------------------------------------------------------


def psp3d(m):
    nn, F, torch = m.nn, m.F, m.torch

    class PyramidPooling(nn.Module):
        def __init__(self, in_channels, bins=(1, 2, 3)):
            super().__init__()
            self.stages = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool3d(b), nn.Conv3d(in_channels, 2, 1, bias=False),
                                                       nn.GroupNorm(1, 2), nn.ReLU()) for b in bins])

        def forward(self, x):
            size = x.shape[2:]
            outs = [x] + [F.interpolate(stage(x), size=size, mode="trilinear", align_corners=True) for stage in self.stages]
            return torch.cat(outs, 1)

    class PSP3D(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(),
                                      nn.AvgPool3d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False))
            self.ppm = PyramidPooling(4)
            self.smooth = nn.AvgPool3d((3, 3, 1), stride=1, padding=(1, 1, 0), divisor_override=6)
            self.cls = nn.Conv3d(10, 2, 1)
            self.amax = nn.AdaptiveMaxPool3d((2, 3, 2), return_indices=True)

        def forward(self, x):
            f = self.stem(x)
            f = self.smooth(self.ppm(f))
            logits = F.interpolate(self.cls(f), size=x.shape[2:], mode="trilinear", align_corners=False)
            peaks, where = self.amax(f)
            return logits, peaks, where

    return PSP3D()


def psp_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, psp3d(m), weights).double()
    images, labels = volumes(n=2, side=9, classes=2, seed=11)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    optimizer = optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.5)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        logits, peaks, where = model(x)
        loss = F.cross_entropy(logits, y) + 0.01 * peaks.mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "logits": logits, "peaks": peaks, "where": where,
            "grad": model.ppm.stages[2][1].weight.grad, "stem_shape": tuple(model.stem(x).shape)}


def test_pyramid_pooling_with_avgpool_options_and_adaptive_max_indices():
    weights = weights_of(psp3d)
    ours, _ = run_both(psp_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["stem_shape"] == (2, 4, 5, 5, 5)
    assert ours["where"].dtype == np.int64 and ours["where"].max() < 125


# ----------------------------------------------------------------------------------------------
# Gaussian smoothing and edge losses with 6-number F.pad in reflect / replicate / circular modes
# ----------------------------------------------------------------------------------------------


def gaussian_filter(m, x, sigma, mode):
    """Separable smoothing as MONAI's GaussianFilter: one 1-D depthwise conv3d per spatial dim."""
    F = m.F
    channels = x.shape[1]
    for d in range(3):
        k = gaussian_kernel_1d(m, sigma[d])
        r = k.numel() // 2
        shape = [1, 1, 1]
        shape[d] = k.numel()
        weight = k.view(1, 1, *shape).repeat(channels, 1, 1, 1, 1)
        pad = [0] * 6
        pad[2 * (2 - d)] = pad[2 * (2 - d) + 1] = r
        x = F.conv3d(F.pad(x, pad, mode=mode), weight, groups=channels)
    return x


def laplacian_edges(m, x):
    """A 3-D Sobel magnitude with replicate padding, and a Laplacian with the periodic (circular) boundary."""
    torch, F = m.torch, m.F
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype)
    kernels = []
    for axis in range(3):
        parts = [diff if a == axis else smooth for a in range(3)]
        kernels.append(torch.einsum("i,j,k->ijk", *parts))
    sobel = torch.stack(kernels).unsqueeze(1)  # (3, 1, 3, 3, 3)
    padded = F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate")
    grads = F.conv3d(padded, sobel)
    magnitude = grads.pow(2).sum(1, keepdim=True).add(1e-8).sqrt()
    lap = torch.zeros(1, 1, 3, 3, 3, dtype=x.dtype)
    lap[0, 0, 1, 1, 1] = -6
    for i in range(3):
        idx = [1, 1, 1]
        for v in (0, 2):
            idx[i] = v
            lap[(0, 0, *idx)] = 1
    laplace = F.conv3d(F.pad(x, (1,) * 6, mode="circular"), lap)
    return magnitude, laplace


def denoiser(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1, padding_mode="reflect"), nn.InstanceNorm3d(4), nn.SiLU(),
                         nn.Conv3d(4, 4, 3, padding=2, dilation=2, padding_mode="circular"), nn.SiLU(),
                         nn.Conv3d(4, 1, 3, padding=1, padding_mode="replicate"))


def smoothing_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(14)
    clean = gaussian_filter(m, torch.from_numpy(rng.standard_normal((2, 1, 8, 8, 8))), (1.0, 0.8, 1.2), "reflect")
    noisy = clean + 0.2 * torch.from_numpy(rng.standard_normal((2, 1, 8, 8, 8)))
    model = load(m, denoiser(m), weights).double()
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        out = noisy - model(noisy)
        edge_out, lap_out = laplacian_edges(m, out)
        edge_clean, _ = laplacian_edges(m, clean)
        loss = F.mse_loss(out, clean) + 0.01 * F.l1_loss(edge_out, edge_clean) + 1e-3 * lap_out.pow(2).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    blurred = {mode: gaussian_filter(m, noisy, (0.7, 0.7, 0.7), mode) for mode in ("constant", "reflect", "replicate", "circular")}
    return {"history": history, "blurred": blurred, "grad": model[3].weight.grad, "clean": clean}


def test_gaussian_smoothing_and_edge_losses_with_padding_modes():
    weights = weights_of(denoiser)
    ours, _ = run_both(smoothing_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]


def test_gaussian_filter_and_laplacian_by_hand():
    """Circular padding makes the Laplacian of a periodic wave exact: -(kx^2 + ...) in the discrete sense; the
    reflect-padded Gaussian keeps a constant volume constant."""
    torch = OURS.torch
    g = np.stack(np.meshgrid(*[np.arange(8.0)] * 3, indexing="ij"))
    wave = np.sin(2 * np.pi * g[0] / 8) + np.cos(2 * np.pi * 2 * g[2] / 8)
    _, lap = laplacian_edges(OURS, torch.from_numpy(wave[None, None]))
    eig0, eig2 = 2 * np.cos(2 * np.pi / 8) - 2, 2 * np.cos(4 * np.pi / 8) - 2
    want = eig0 * np.sin(2 * np.pi * g[0] / 8) + eig2 * np.cos(2 * np.pi * 2 * g[2] / 8)
    np.testing.assert_allclose(lap.numpy()[0, 0], want, atol=1e-12)
    const = torch.full((1, 2, 5, 6, 7), 3.0, dtype=torch.float64)
    for mode in ("reflect", "replicate", "circular"):
        np.testing.assert_allclose(gaussian_filter(OURS, const, (1.0, 1.0, 1.0), mode).numpy(), 3.0, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# CondConv in 3-D: a layer subclassing _ConvNd itself with PyTorch's constructor (transposed, output_padding),
# a weight of several experts mixed per sample by a routing function, reflect padding through
# _reversed_padding_repeated_twice; the legacy torch.Tensor(sizes) constructor and reset_parameters
# ----------------------------------------------------------------------------------------------


def condconv_net(m):
    torch, nn, F = m.torch, m.nn, m.F
    from functools import partial

    _ConvNd = nn.modules.conv._ConvNd
    _triple = nn.modules.utils._triple

    class _routing(nn.Module):
        def __init__(self, in_channels, num_experts, dropout_rate):
            super(_routing, self).__init__()
            self.dropout = nn.Dropout(dropout_rate)
            self.fc = nn.Linear(in_channels, num_experts)

        def forward(self, x):
            x = torch.flatten(x)
            x = self.dropout(x)
            x = self.fc(x)
            return torch.sigmoid(x)

    class CondConv3D(_ConvNd):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                     padding_mode="zeros", num_experts=3, dropout_rate=0.0):
            kernel_size = _triple(kernel_size)
            stride = _triple(stride)
            padding = _triple(padding)
            dilation = _triple(dilation)
            super(CondConv3D, self).__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, False,
                                             _triple(0), groups, bias, padding_mode)
            self._avg_pooling = partial(F.adaptive_avg_pool3d, output_size=(1, 1, 1))
            self._routing_fn = _routing(in_channels, num_experts, dropout_rate)
            self.weight = nn.Parameter(torch.Tensor(num_experts, out_channels, in_channels // groups, *kernel_size))
            self.reset_parameters()

        def _conv_forward(self, input, weight):
            if self.padding_mode != "zeros":
                return F.conv3d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), weight,
                                self.bias, self.stride, _triple(0), self.dilation, self.groups)
            return F.conv3d(input, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

        def forward(self, inputs):
            b, _, _, _, _ = inputs.size()
            res = []
            for input in inputs:
                input = input.unsqueeze(0)
                pooled_inputs = self._avg_pooling(input)
                routing_weights = self._routing_fn(pooled_inputs)
                kernels = torch.sum(routing_weights[:, None, None, None, None, None] * self.weight, 0)
                out = self._conv_forward(input, kernels)
                res.append(out)
            return torch.cat(res, dim=0)

    return nn.Sequential(CondConv3D(1, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm3d(4), nn.ReLU(),
                         CondConv3D(4, 4, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), groups=2), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))


def condconv_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, condconv_net(m), weights).double()
    images, labels = volumes(n=3, classes=2, seed=23)
    x = torch.from_numpy(images)
    y = torch.tensor([0, 1, 1])
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "experts_grad": model[0].weight.grad, "route_grad": model[3]._routing_fn.fc.weight.grad,
            "shapes": [tuple(model[0].weight.shape), tuple(model[3].weight.shape)],
            "attrs": [model[0].transposed, tuple(model[0].output_padding), tuple(model[0]._reversed_padding_repeated_twice)]}


def test_condconv3d_subclassing_convnd_with_pytorchs_constructor():
    weights = weights_of(condconv_net)
    ours, _ = run_both(condconv_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["shapes"] == [(3, 4, 1, 3, 3, 3), (3, 4, 2, 1, 3, 3)]
    assert ours["attrs"] == [False, (0, 0, 0), (1, 1, 1, 1, 1, 1)]
