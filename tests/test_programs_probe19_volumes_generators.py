# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""3-D volumetric programs as medical-imaging and video code writes them, run as tests/probe19_volumes_common.py
says. 3-D upsampling and generation: 3-D sub-pixel upsampling by reshape/permute with ICNR initialisation; a
weight-standardised ``ConvTranspose3d`` calling PyTorch's ``_output_padding``; a voxel WGAN-GP (second order through
``Conv3d`` and ``InstanceNorm3d``)."""

import numpy as np

from .probe19_volumes_common import volumes
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# 3-D sub-pixel convolution (pixel shuffle by reshape/permute) with ICNR initialisation
# ----------------------------------------------------------------------------------------------


def pixel_shuffle_3d(m, x, r):
    b, c, d, h, w = x.shape
    oc = c // r ** 3
    x = x.contiguous().view(b, oc, r, r, r, d, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).contiguous()
    return x.view(b, oc, d * r, h * r, w * r)


def icnr_(m, weight, r):
    """ICNR: a kernel for r^3 sub-pixels made of one random kernel repeated, so that the shuffle starts as a
    nearest-neighbour upsampling (no checkerboard)."""
    out_channels = weight.shape[0] // r ** 3
    base = m.torch.empty(out_channels, *weight.shape[1:])
    m.nn.init.kaiming_normal_(base)
    base = base.transpose(0, 1).contiguous().view(weight.shape[1], out_channels, -1)
    k = base.repeat_interleave(r ** 3, dim=1)
    k = k.contiguous().view(weight.shape[1], weight.shape[0], *weight.shape[2:]).transpose(0, 1)
    with m.torch.no_grad():
        weight.copy_(k)
    return weight


def subpixel(m):
    nn = m.nn

    class SubPixelSR(nn.Module):
        def __init__(self, r=2):
            super().__init__()
            self.r = r
            self.body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1, padding_mode="replicate"), nn.ReLU())
            self.up = nn.Conv3d(4, 2 * r ** 3, 3, padding=1, padding_mode="replicate")
            self.tail = nn.Conv3d(2, 1, 1)

        def forward(self, x):
            return self.tail(pixel_shuffle_3d(m, self.up(self.body(x)), self.r)) + m.F.interpolate(x, scale_factor=self.r, mode="trilinear")

    return SubPixelSR()


def subpixel_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, subpixel(m), weights).double()
    rng = np.random.default_rng(12)
    hr = torch.from_numpy(rng.standard_normal((2, 1, 8, 8, 8)))
    lr = F.avg_pool3d(hr, 2)
    optimizer = optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.99))
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.l1_loss(model(lr), hr)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "sr": model(lr), "grad": model.up.weight.grad}


def test_subpixel_3d_super_resolution():
    weights = weights_of(subpixel)
    ours, _ = run_both(subpixel_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["sr"].shape == (2, 1, 8, 8, 8)


def test_icnr_shuffle_starts_as_nearest_upsampling_by_hand():
    torch, nn, F = OURS.torch, OURS.nn, OURS.F
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 2 * 8, 3, padding=1).double()
    icnr_(OURS, conv.weight, 2)
    conv.bias.data.zero_()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 3, 4, 2)))
    shuffled = pixel_shuffle_3d(OURS, conv(x), 2)
    base = F.conv3d(x, conv.weight[::8], padding=1)
    np.testing.assert_allclose(shuffled.detach().numpy(), F.interpolate(base, scale_factor=2, mode="nearest").detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    # the reshape/permute shuffle is PixelShuffle's rule in 3-D: channel c*r^3 + (i*r + j)*r + k goes to (r*d+i, r*h+j, r*w+k)
    y = torch.arange(2 * 8 * 2 * 3 * 1.0).view(1, 16, 2, 3, 1)
    s = pixel_shuffle_3d(OURS, y, 2).numpy()
    assert s[0, 1, 2 * 1 + 1, 2 * 2 + 0, 1] == y.numpy()[0, 8 + (1 * 2 + 0) * 2 + 1, 1, 2, 0]


# ----------------------------------------------------------------------------------------------
# A 3-D autoencoder whose decoder's transposed convolutions are weight-standardised (NF-Net's scaled WS), their
# forward copied from ConvTranspose3d's: _output_padding(input, output_size, stride, padding, kernel_size,
# num_spatial_dims, dilation) for odd-sized volumes restored by output_size
# ----------------------------------------------------------------------------------------------


def ws_autoencoder(m):
    nn, F, torch = m.nn, m.F, m.torch

    class ScaledWSConvTranspose3d(nn.ConvTranspose3d):
        def __init__(self, *args, gain=True, eps=1e-4, **kwargs):
            super().__init__(*args, **kwargs)
            self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1, 1)) if gain else None
            self.eps = eps

        def get_weight(self):
            # the fan-in of a transposed convolution's output channel: dims (0, 2, 3, 4)
            fan_in = np.prod(self.weight.shape[2:]) * self.weight.shape[0]
            mean = torch.mean(self.weight, dim=(0, 2, 3, 4), keepdim=True)
            var = torch.var(self.weight, dim=(0, 2, 3, 4), keepdim=True, unbiased=False)
            weight = (self.weight - mean) / (var * fan_in + self.eps) ** 0.5
            if self.gain is not None:
                weight = weight * self.gain.transpose(0, 1)
            return weight

        def forward(self, input, output_size=None):
            num_spatial_dims = 3
            output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                                  num_spatial_dims, self.dilation)
            return F.conv_transpose3d(input, self.get_weight(), self.bias, self.stride, self.padding, output_padding,
                                      self.groups, self.dilation)

    class AE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Conv3d(1, 4, 3, stride=2, padding=1)
            self.enc2 = nn.Conv3d(4, 8, 3, stride=2, padding=1)
            self.dec2 = ScaledWSConvTranspose3d(8, 4, 3, stride=2, padding=1)
            self.dec1 = ScaledWSConvTranspose3d(4, 1, 3, stride=2, padding=1)

        def forward(self, x):
            h1 = F.gelu(self.enc1(x))
            h2 = F.gelu(self.enc2(h1))
            d2 = F.gelu(self.dec2(h2, output_size=h1.shape))
            return self.dec1(d2 + h1, output_size=x.size()[2:])

    return AE()


def ws_autoencoder_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, ws_autoencoder(m), weights).double()
    rng = np.random.default_rng(21)
    x = torch.from_numpy(rng.standard_normal((2, 1, 7, 9, 6)))
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.smooth_l1_loss(model(x + 0.1 * torch.from_numpy(rng.standard_normal(x.shape))), x, beta=0.5)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "out": model(x), "gain_grad": model.dec1.gain.grad, "w_grad": model.dec2.weight.grad}


def test_weight_standardised_transposed_conv_autoencoder_with_output_size():
    weights = weights_of(ws_autoencoder)
    ours, _ = run_both(ws_autoencoder_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["out"].shape == (2, 1, 7, 9, 6)


# ----------------------------------------------------------------------------------------------
# A voxel WGAN-GP (3D-GAN's generator of ConvTranspose3d + BatchNorm3d, a critic of Conv3d + InstanceNorm3d(affine)
# + LeakyReLU): the gradient penalty differentiates the critic's input gradient (create_graph=True) through
# 3-D convolutions and instance norm; Adam with betas (0.5, 0.9), n_critic steps per generator step
# ----------------------------------------------------------------------------------------------


def voxel_gan(m):
    nn = m.nn

    class Generator(nn.Module):
        def __init__(self, z_dim=8):
            super().__init__()
            self.net = nn.Sequential(
                nn.ConvTranspose3d(z_dim, 8, 4, 1, 0, bias=False), nn.BatchNorm3d(8), nn.ReLU(True),
                nn.ConvTranspose3d(8, 4, 4, 2, 1, bias=False), nn.BatchNorm3d(4), nn.ReLU(True),
                nn.ConvTranspose3d(4, 1, 3, 1, 1), nn.Sigmoid())

        def forward(self, z):
            return self.net(z.view(-1, z.size(1), 1, 1, 1))

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv3d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv3d(4, 8, 4, 2, 1, bias=False), nn.InstanceNorm3d(8, affine=True), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv3d(8, 1, 2, 1, 0))

        def forward(self, x):
            return self.net(x).view(-1)

    return nn.ModuleDict({"G": Generator(), "D": Critic()})


def gan_training(m, weights):
    torch, optim = m.torch, m.optim
    models = load(m, voxel_gan(m), weights).double()
    G, D = models["G"], models["D"]
    rng = np.random.default_rng(26)
    _, labels = volumes(n=4, classes=2, seed=27)
    real = torch.from_numpy((labels[:, None] > 0).astype(np.float64))
    opt_g = optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.9))
    opt_d = optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.9))
    lambda_gp, n_critic = 10.0, 2
    history = []
    for it in range(2):
        for _ in range(n_critic):
            z = torch.from_numpy(rng.standard_normal((4, 8)))
            fake = G(z).detach()
            alpha = torch.from_numpy(rng.uniform(size=(4, 1, 1, 1, 1)))
            interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            d_interpolates = D(interpolates)
            gradients = torch.autograd.grad(outputs=d_interpolates, inputs=interpolates,
                                            grad_outputs=torch.ones_like(d_interpolates), create_graph=True,
                                            retain_graph=True, only_inputs=True)[0]
            gradients = gradients.view(gradients.size(0), -1)
            gradient_penalty = ((gradients.norm(2, dim=1) - 1) ** 2).mean()
            d_loss = -D(real).mean() + D(fake).mean() + lambda_gp * gradient_penalty
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        z = torch.from_numpy(rng.standard_normal((4, 8)))
        g_loss = -D(G(z)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        history.append([d_loss.item(), gradient_penalty.item(), g_loss.item()])
    return {"history": history, "d_grad": D.net[2].weight.grad, "in_grad": D.net[3].weight.grad,
            "g_grad": G.net[0].weight.grad, "sample": G(torch.from_numpy(rng.standard_normal((1, 8))))}


def test_voxel_wgan_gp_second_order_through_conv3d_and_instance_norm():
    weights = weights_of(voxel_gan)
    ours, _ = run_both(gan_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["sample"].shape == (1, 1, 8, 8, 8)
