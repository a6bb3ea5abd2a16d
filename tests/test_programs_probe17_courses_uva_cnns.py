# ruff: noqa: B006, B007  (the programs are kept as their authors wrote them)
"""Course and book programs, run as tests/probe17_courses_common.py says. UvA deep learning tutorials: tutorial 9's
autoencoder (``ConvTranspose2d(output_padding=1)``, ``ReduceLROnPlateau``, retrieval by ``cdist``/``topk``); DL2's P4
group convolutions (filter banks by ``rot90`` and ``roll``, ``AdaptiveAvgPool3d``), their equivariance checked;
tutorial 5's GoogleNet/pre-activation ResNet/DenseNet with ``_init_params`` by activation name (and calculate_gain's
refusal of 'leakyrelu')."""

import math

import numpy as np

from .probe17_courses_common import shapes_images
from .pytorch_programs import assert_same, one_blas_thread, run_both


def uva_autoencoder(m):
    """Tutorial 9: a convolutional autoencoder (strided convolutions down, ``ConvTranspose2d`` with
    ``output_padding=1`` up, Tanh out), the per-image summed MSE, Adam under ``ReduceLROnPlateau`` stepped with a
    validation loss, and image retrieval by ``torch.cdist`` of the codes and ``topk(largest=False)``."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Encoder(nn.Module):
        def __init__(self, num_input_channels, base_channel_size, latent_dim, act_fn=nn.GELU):
            super().__init__()
            c_hid = base_channel_size
            self.net = nn.Sequential(
                nn.Conv2d(num_input_channels, c_hid, kernel_size=3, padding=1, stride=2),  # 16x16 => 8x8
                act_fn(),
                nn.Conv2d(c_hid, c_hid, kernel_size=3, padding=1),
                act_fn(),
                nn.Conv2d(c_hid, 2 * c_hid, kernel_size=3, padding=1, stride=2),  # 8x8 => 4x4
                act_fn(),
                nn.Flatten(),
                nn.Linear(2 * 16 * c_hid, latent_dim),
            )

        def forward(self, x):
            return self.net(x)

    class Decoder(nn.Module):
        def __init__(self, num_input_channels, base_channel_size, latent_dim, act_fn=nn.GELU):
            super().__init__()
            c_hid = base_channel_size
            self.linear = nn.Sequential(nn.Linear(latent_dim, 2 * 16 * c_hid), act_fn())
            self.net = nn.Sequential(
                nn.ConvTranspose2d(2 * c_hid, c_hid, kernel_size=3, output_padding=1, padding=1, stride=2),  # 4 => 8
                act_fn(),
                nn.Conv2d(c_hid, c_hid, kernel_size=3, padding=1),
                act_fn(),
                nn.ConvTranspose2d(c_hid, num_input_channels, kernel_size=3, output_padding=1, padding=1, stride=2),
                nn.Tanh(),
            )

        def forward(self, x):
            x = self.linear(x)
            x = x.reshape(x.shape[0], -1, 4, 4)
            x = self.net(x)
            return x

    class Autoencoder(nn.Module):
        def __init__(self, base_channel_size, latent_dim, num_input_channels=3):
            super().__init__()
            self.encoder = Encoder(num_input_channels, base_channel_size, latent_dim)
            self.decoder = Decoder(num_input_channels, base_channel_size, latent_dim)

        def forward(self, x):
            z = self.encoder(x)
            x_hat = self.decoder(z)
            return x_hat

        def _get_reconstruction_loss(self, x):
            x_hat = self.forward(x)
            loss = F.mse_loss(x, x_hat, reduction="none")
            loss = loss.sum(dim=[1, 2, 3]).mean(dim=[0])
            return loss

    images, _ = shapes_images(n=24)
    imgs = torch.from_numpy(np.tanh(images))
    torch.manual_seed(42)
    model = Autoencoder(base_channel_size=4, latent_dim=8)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, patience=1, min_lr=5e-5)
    losses, lrs = [], []
    for epoch in range(4):
        model.train()
        for start in range(0, 16, 8):
            loss = model._get_reconstruction_loss(imgs[start:start + 8])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            val_loss = model._get_reconstruction_loss(imgs[16:])
        scheduler.step(val_loss if epoch < 2 else val_loss + 100 * epoch)  # (a plateau forced after two epochs)
        lrs.append(optimizer.param_groups[0]["lr"])
    with torch.no_grad():
        z = model.encoder(imgs)
    dist = torch.cdist(z[None, :4], z[None, 4:])[0]
    dist_vals, indices = torch.topk(dist, k=3, largest=False)
    return {"losses": losses, "lrs": lrs, "dist": dist, "nearest": dist_vals, "indices": indices,
            "decoder": model.decoder.net[0].weight}


def test_uva_autoencoder():
    ours, _ = run_both(uva_autoencoder, rtol=2e-4, atol=2e-5)
    assert ours["lrs"][-1] < ours["lrs"][0]
    assert np.all(np.diff(ours["nearest"], axis=1) >= 0)


def uva_p4_group_convolution(m):
    """UvA DL2's regular group convolutions, for the rotations by 90 degrees: a lifting convolution whose filter bank
    is its kernel under ``torch.rot90``, a group convolution that also rolls the group axis (``torch.roll``), max
    pooled over the group, trained; its equivariance checked by rotating the input."""
    torch, nn, F = m.torch, m.nn, m.F

    class LiftingConvolution(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size):
            super().__init__()
            self.out_channels = out_channels
            self.kernel = nn.Parameter(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
            self.bias = nn.Parameter(torch.zeros(out_channels))
            nn.init.kaiming_uniform_(self.kernel, a=math.sqrt(5))

        def forward(self, x):
            weight = torch.stack([torch.rot90(self.kernel, k=r, dims=[-2, -1]) for r in range(4)], dim=1)
            weight = weight.reshape(self.out_channels * 4, *self.kernel.shape[1:])
            x = F.conv2d(x, weight, bias=self.bias.repeat_interleave(4), padding=self.kernel.shape[-1] // 2)
            return x.view(x.shape[0], self.out_channels, 4, x.shape[-2], x.shape[-1])

    class GroupConvolution(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size):
            super().__init__()
            self.in_channels, self.out_channels = in_channels, out_channels
            self.kernel = nn.Parameter(torch.zeros(out_channels, in_channels, 4, kernel_size, kernel_size))
            self.bias = nn.Parameter(torch.zeros(out_channels))
            nn.init.kaiming_uniform_(self.kernel.data.view(out_channels, -1), a=math.sqrt(5))

        def forward(self, x):
            weight = torch.stack([torch.roll(torch.rot90(self.kernel, k=r, dims=[-2, -1]), shifts=r, dims=2)
                                  for r in range(4)], dim=1)
            weight = weight.reshape(self.out_channels * 4, self.in_channels * 4, *self.kernel.shape[-2:])
            x = x.reshape(x.shape[0], self.in_channels * 4, x.shape[-2], x.shape[-1])
            x = F.conv2d(x, weight, bias=self.bias.repeat_interleave(4), padding=self.kernel.shape[-1] // 2)
            return x.view(x.shape[0], self.out_channels, 4, x.shape[-2], x.shape[-1])

    class GroupEquivariantCNN(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, num_hidden, hidden_channels):
            super().__init__()
            self.lifting_conv = LiftingConvolution(in_channels, hidden_channels, kernel_size)
            self.gconvs = nn.ModuleList(GroupConvolution(hidden_channels, hidden_channels, kernel_size)
                                        for _ in range(num_hidden))
            self.projection_layer = nn.AdaptiveAvgPool3d(1)
            self.final_linear = nn.Linear(hidden_channels, out_channels)

        def forward(self, x):
            x = self.lifting_conv(x)
            x = F.layer_norm(x, x.shape[-4:])
            x = F.relu(x)
            for gconv in self.gconvs:
                x = gconv(x)
                x = F.layer_norm(x, x.shape[-4:])
                x = F.relu(x)
            features = x
            x = self.projection_layer(x).squeeze()
            x = self.final_linear(x)
            return x, features

    images, labels = shapes_images(n=16)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    torch.manual_seed(0)
    model = GroupEquivariantCNN(in_channels=3, out_channels=4, kernel_size=3, num_hidden=2, hidden_channels=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(4):
        logits, _ = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        logits, features = model(x)
        logits_rot, features_rot = model(torch.rot90(x, k=1, dims=[-2, -1]))
        # rotating the input rotates the feature maps and shifts the group axis by one
        expected = torch.roll(torch.rot90(features, k=1, dims=[-2, -1]), shifts=1, dims=2)
    return {"losses": losses, "logits": logits, "logits_rot": logits_rot, "features_rot": features_rot,
            "expected": expected, "kernel": model.gconvs[0].kernel}


def test_uva_p4_group_convolution():
    ours, _ = run_both(uva_p4_group_convolution, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(ours["logits_rot"], ours["logits"], rtol=1e-4, atol=1e-5)  # invariant logits
    np.testing.assert_allclose(ours["features_rot"], ours["expected"], rtol=1e-4, atol=1e-5)


def uva_modern_cnns(m):
    """Tutorial 5: GoogleNet's InceptionBlock (dicts of reduced and output channels, a max-pool branch), ResNet
    with pre-activation blocks and a strided 1x1 downsample, DenseNet's dense layers concatenated in a DenseBlock
    with a TransitionLayer, each with the tutorial's ``_init_params`` (``kaiming_normal_`` by activation name,
    ``mode='fan_out'`` for ResNet) and trained a few Adam steps."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    act_fn_by_name = {"tanh": nn.Tanh, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "gelu": nn.GELU}

    class InceptionBlock(nn.Module):
        def __init__(self, c_in, c_red: dict, c_out: dict, act_fn):
            super().__init__()
            self.conv_1x1 = nn.Sequential(nn.Conv2d(c_in, c_out["1x1"], kernel_size=1), nn.BatchNorm2d(c_out["1x1"]),
                                          act_fn())
            self.conv_3x3 = nn.Sequential(
                nn.Conv2d(c_in, c_red["3x3"], kernel_size=1), nn.BatchNorm2d(c_red["3x3"]), act_fn(),
                nn.Conv2d(c_red["3x3"], c_out["3x3"], kernel_size=3, padding=1), nn.BatchNorm2d(c_out["3x3"]), act_fn())
            self.conv_5x5 = nn.Sequential(
                nn.Conv2d(c_in, c_red["5x5"], kernel_size=1), nn.BatchNorm2d(c_red["5x5"]), act_fn(),
                nn.Conv2d(c_red["5x5"], c_out["5x5"], kernel_size=5, padding=2), nn.BatchNorm2d(c_out["5x5"]), act_fn())
            self.max_pool = nn.Sequential(
                nn.MaxPool2d(kernel_size=3, padding=1, stride=1),
                nn.Conv2d(c_in, c_out["max"], kernel_size=1), nn.BatchNorm2d(c_out["max"]), act_fn())

        def forward(self, x):
            x_1x1 = self.conv_1x1(x)
            x_3x3 = self.conv_3x3(x)
            x_5x5 = self.conv_5x5(x)
            x_max = self.max_pool(x)
            x_out = torch.cat([x_1x1, x_3x3, x_5x5, x_max], dim=1)
            return x_out

    class GoogleNet(nn.Module):
        def __init__(self, num_classes=4, act_fn_name="relu"):
            super().__init__()
            self.act_fn_name = act_fn_name
            act_fn = act_fn_by_name[act_fn_name]
            self.input_net = nn.Sequential(nn.Conv2d(3, 8, kernel_size=3, padding=1), nn.BatchNorm2d(8), act_fn())
            self.inception_blocks = nn.Sequential(
                InceptionBlock(8, c_red={"3x3": 4, "5x5": 2}, c_out={"1x1": 2, "3x3": 4, "5x5": 2, "max": 2},
                               act_fn=act_fn),
                nn.MaxPool2d(3, stride=2, padding=1),
                InceptionBlock(10, c_red={"3x3": 4, "5x5": 2}, c_out={"1x1": 4, "3x3": 4, "5x5": 2, "max": 2},
                               act_fn=act_fn))
            self.output_net = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(12, num_classes))
            self._init_params()

        def _init_params(self):
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity=self.act_fn_name)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            x = self.input_net(x)
            x = self.inception_blocks(x)
            x = self.output_net(x)
            return x

    class PreActResNetBlock(nn.Module):
        def __init__(self, c_in, act_fn, subsample=False, c_out=-1):
            super().__init__()
            if not subsample:
                c_out = c_in
            self.net = nn.Sequential(
                nn.BatchNorm2d(c_in), act_fn(),
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=1 if not subsample else 2, bias=False),
                nn.BatchNorm2d(c_out), act_fn(),
                nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False))
            self.downsample = nn.Sequential(nn.BatchNorm2d(c_in), act_fn(),
                                            nn.Conv2d(c_in, c_out, kernel_size=1, stride=2, bias=False)) \
                if subsample else None

        def forward(self, x):
            z = self.net(x)
            if self.downsample is not None:
                x = self.downsample(x)
            out = z + x
            return out

    class ResNet(nn.Module):
        def __init__(self, num_classes=4, num_blocks=[1, 1], c_hidden=[4, 8], act_fn_name="relu"):
            super().__init__()
            self.act_fn_name = act_fn_name
            self.input_net = nn.Sequential(nn.Conv2d(3, c_hidden[0], kernel_size=3, padding=1, bias=False))
            blocks = []
            for block_idx, block_count in enumerate(num_blocks):
                for bc in range(block_count):
                    subsample = (bc == 0 and block_idx > 0)
                    blocks.append(PreActResNetBlock(c_in=c_hidden[block_idx if not subsample else (block_idx - 1)],
                                                    act_fn=act_fn_by_name[act_fn_name], subsample=subsample,
                                                    c_out=c_hidden[block_idx]))
            self.blocks = nn.Sequential(*blocks)
            self.output_net = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                                            nn.Linear(c_hidden[-1], num_classes))
            self._init_params()

        def _init_params(self):
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=self.act_fn_name)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            return self.output_net(self.blocks(self.input_net(x)))

    class DenseLayer(nn.Module):
        def __init__(self, c_in, bn_size, growth_rate, act_fn):
            super().__init__()
            self.net = nn.Sequential(
                nn.BatchNorm2d(c_in), act_fn(),
                nn.Conv2d(c_in, bn_size * growth_rate, kernel_size=1, bias=False),
                nn.BatchNorm2d(bn_size * growth_rate), act_fn(),
                nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False))

        def forward(self, x):
            out = self.net(x)
            out = torch.cat([out, x], dim=1)
            return out

    class DenseBlock(nn.Module):
        def __init__(self, c_in, num_layers, bn_size, growth_rate, act_fn):
            super().__init__()
            layers = []
            for layer_idx in range(num_layers):
                layers.append(DenseLayer(c_in=c_in + layer_idx * growth_rate, bn_size=bn_size,
                                         growth_rate=growth_rate, act_fn=act_fn))
            self.block = nn.Sequential(*layers)

        def forward(self, x):
            return self.block(x)

    class TransitionLayer(nn.Module):
        def __init__(self, c_in, c_out, act_fn):
            super().__init__()
            self.transition = nn.Sequential(nn.BatchNorm2d(c_in), act_fn(),
                                            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
                                            nn.AvgPool2d(kernel_size=2, stride=2))

        def forward(self, x):
            return self.transition(x)

    class DenseNet(nn.Module):
        def __init__(self, num_classes=4, num_layers=[2, 2], bn_size=2, growth_rate=4, act_fn_name="relu"):
            super().__init__()
            self.act_fn_name = act_fn_name
            act_fn = act_fn_by_name[act_fn_name]
            c_hidden = growth_rate * bn_size
            self.input_net = nn.Sequential(nn.Conv2d(3, c_hidden, kernel_size=3, padding=1))
            blocks = []
            for block_idx, n_layers in enumerate(num_layers):
                blocks.append(DenseBlock(c_in=c_hidden, num_layers=n_layers, bn_size=bn_size, growth_rate=growth_rate,
                                         act_fn=act_fn))
                c_hidden = c_hidden + n_layers * growth_rate
                if block_idx < len(num_layers) - 1:
                    blocks.append(TransitionLayer(c_in=c_hidden, c_out=c_hidden // 2, act_fn=act_fn))
                    c_hidden = c_hidden // 2
            self.blocks = nn.Sequential(*blocks)
            self.output_net = nn.Sequential(nn.BatchNorm2d(c_hidden), act_fn(), nn.AdaptiveAvgPool2d((1, 1)),
                                            nn.Flatten(), nn.Linear(c_hidden, num_classes))
            self._init_params()

        def _init_params(self):
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity=self.act_fn_name)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            return self.output_net(self.blocks(self.input_net(x)))

    images, labels = shapes_images(n=16)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    results = {}
    for name, make in [("googlenet", GoogleNet), ("resnet", ResNet), ("densenet", DenseNet),
                       ("resnet_tanh", lambda: ResNet(act_fn_name="tanh"))]:
        torch.manual_seed(42)
        model = make()
        optimizer = optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for step in range(3):
            preds = model(x)
            loss = F.cross_entropy(preds, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            acc = (model(x).argmax(dim=-1) == y).float().mean()
        results[name] = {"losses": losses, "acc": acc, "n_params": sum(np.prod(p.shape) for p in model.parameters()),
                         "first": next(model.parameters())}
    try:
        ResNet(act_fn_name="leakyrelu")
        refused = None
    except ValueError as e:
        refused = str(e)
    return results, refused


def test_uva_modern_cnns():
    with one_blas_thread():
        (results, refused), theirs = run_both(uva_modern_cnns, compare=False)
    if theirs is not None:
        # DenseNet's first weights after three Adam steps (lr 1e-2) are compared loosely: some of their gradients
        # are rounding noise, which Adam's first steps scale to full size, so a float32 convolution that adds in
        # another order (oneDNN's AVX-512 kernels) moves them by up to 3e-3; the losses agree to 1e-6
        loose = {"densenet": results["densenet"].pop("first")}
        assert_same(loose, {"densenet": theirs[0]["densenet"].pop("first")}, rtol=2e-2, atol=5e-3)
        assert_same((results, refused), theirs, rtol=2e-4, atol=2e-5)
    assert refused == "Unsupported nonlinearity leakyrelu"  # the tutorial's names meet calculate_gain's
    assert all(r["losses"][-1] < r["losses"][0] for r in results.values())
