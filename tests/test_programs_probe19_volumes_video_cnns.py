# ruff: noqa: B007, E501, F841, UP008  (the programs are kept as their authors wrote them)
"""3-D volumetric programs as medical-imaging and video code writes them, run as tests/probe19_volumes_common.py
says. Video CNNs: an R(2+1)D ResNet (factorised ``(1,k,k)``/``(k,1,1)`` convolutions with torchvision's midplanes, a
``(B, T, C, H, W)`` clip permuted to channels-first), C3D with ``(1,2,2)`` pools and ``ceil_mode``, I3D weights
inflated from 2-D ones (checked on a static clip against the 2-D network) and a SlowFast-style lateral connection;
pytorch-i3d's InceptionI3d (``MaxPool3dSamePadding``, ``F.upsample`` in time)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Video: an R(2+1)D ResNet as torchvision writes it, on (B, T, C, H, W) clips
# ----------------------------------------------------------------------------------------------


def r2plus1d(m):
    nn = m.nn

    class Conv2Plus1D(nn.Sequential):
        def __init__(self, in_planes, out_planes, midplanes, stride=1, padding=1):
            super().__init__(
                nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                          padding=(0, padding, padding), bias=False),
                nn.BatchNorm3d(midplanes),
                nn.ReLU(inplace=True),
                nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1), padding=(padding, 0, 0),
                          bias=False),
            )

        @staticmethod
        def get_downsample_stride(stride):
            return stride, stride, stride

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, conv_builder, stride=1, downsample=None):
            midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
            super().__init__()
            self.conv1 = nn.Sequential(conv_builder(inplanes, planes, midplanes, stride), nn.BatchNorm3d(planes),
                                       nn.ReLU(inplace=True))
            self.conv2 = nn.Sequential(conv_builder(planes, planes, midplanes), nn.BatchNorm3d(planes))
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            residual = x
            out = self.conv1(x)
            out = self.conv2(out)
            if self.downsample is not None:
                residual = self.downsample(x)
            out += residual
            out = self.relu(out)
            return out

    class R2Plus1dStem(nn.Sequential):
        def __init__(self):
            super().__init__(
                nn.Conv3d(3, 6, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                nn.BatchNorm3d(6), nn.ReLU(inplace=True),
                nn.Conv3d(6, 8, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
                nn.BatchNorm3d(8), nn.ReLU(inplace=True))

    class VideoResNet(nn.Module):
        def __init__(self, num_classes=5):
            super().__init__()
            self.inplanes = 8
            self.stem = R2Plus1dStem()
            self.layer1 = self._make_layer(Conv2Plus1D, 8, 1, stride=1)
            self.layer2 = self._make_layer(Conv2Plus1D, 12, 1, stride=2)
            self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
            self.fc = nn.Linear(12, num_classes)
            for mod in self.modules():
                if isinstance(mod, nn.Conv3d):
                    nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(mod, nn.BatchNorm3d):
                    nn.init.constant_(mod.weight, 1)
                    nn.init.constant_(mod.bias, 0)

        def _make_layer(self, conv_builder, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                ds_stride = conv_builder.get_downsample_stride(stride)
                downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes, kernel_size=1, stride=ds_stride, bias=False),
                                           nn.BatchNorm3d(planes))
            layers = [BasicBlock(self.inplanes, planes, conv_builder, stride, downsample)]
            self.inplanes = planes
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.stem(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.avgpool(x)
            x = x.flatten(1)
            return self.fc(x)

    return VideoResNet()


def video_training(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, r2plus1d(m), weights)
    rng = np.random.default_rng(7)
    clips = torch.from_numpy(rng.standard_normal((4, 6, 3, 12, 12)).astype(np.float32))  # (B, T, C, H, W)
    labels = torch.tensor([0, 3, 1, 4])
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    history = []
    for step in range(3):
        video = clips.permute(0, 2, 1, 3, 4)  # to (B, C, T, H, W)
        output = model(video)
        loss = criterion(output, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        # clip-level predictions averaged over temporal crops, as video evaluation does
        crops = [clips[:, t:t + 4].permute(0, 2, 1, 3, 4) for t in (0, 2)]
        probs = torch.stack([model(c).softmax(1) for c in crops]).mean(0)
    return {"history": history, "probs": probs, "stem_grad": model.stem[0].weight.grad,
            "mid": model.layer2[0].conv1[0][0].weight.shape[0], "running": model.layer2[0].downsample[1].running_var}


def test_r2plus1d_video_resnet_training():
    weights = weights_of(r2plus1d)
    ours, _ = run_both(video_training, weights, rtol=1e-5, atol=1e-6)
    assert ours["mid"] == (8 * 12 * 27) // (8 * 9 + 3 * 12)  # torchvision's midplanes keep the parameter count
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# C3D, I3D inflation from a 2-D network, and a SlowFast-style lateral connection
# ----------------------------------------------------------------------------------------------


def c3d(m):
    nn = m.nn

    class C3D(nn.Module):
        def __init__(self, num_classes=4):
            super().__init__()
            self.conv1 = nn.Conv3d(3, 4, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.conv2 = nn.Conv3d(4, 8, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool2 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2))
            self.conv3 = nn.Conv3d(8, 8, kernel_size=(3, 3, 3), padding=(1, 1, 1))
            self.pool3 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 1, 1), ceil_mode=True)
            self.fc6 = nn.Linear(8 * 2 * 2 * 2, 16)
            self.fc7 = nn.Linear(16, num_classes)
            self.dropout = nn.Dropout(p=0.5)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.pool1(self.relu(self.conv1(x)))
            x = self.pool2(self.relu(self.conv2(x)))
            x = self.pool3(self.relu(self.conv3(x)))
            x = x.view(-1, 8 * 2 * 2 * 2)
            x = self.dropout(self.relu(self.fc6(x)))
            return self.fc7(x)

    return C3D()


def c3d_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, c3d(m), weights).double()
    model.dropout.p = 0.0  # the mask is drawn differently by the two libraries
    rng = np.random.default_rng(8)
    clips = torch.from_numpy(rng.standard_normal((3, 3, 8, 8, 8)))
    labels = torch.tensor([2, 0, 3])
    optimizer = optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(clips), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    feats = model.pool3(model.relu(model.conv3(model.pool2(model.relu(model.conv2(model.pool1(model.relu(model.conv1(clips)))))))))
    return {"history": history, "feats": feats, "grad": model.conv1.weight.grad}


def test_c3d_training():
    weights = weights_of(c3d)
    ours, _ = run_both(c3d_training, weights, rtol=1e-8, atol=1e-10)
    # time 8 -> 8 -> 4 -> 2; space 8 -> 4 -> 2 -> ceil((2 + 2 - 2) / 2) + 1 = 2 (a window starting in the padding is dropped)
    assert ours["feats"].shape == (3, 8, 2, 2, 2)


def image_net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def inflate(m, net2d, time_dim=3):
    """I3D: every Conv2d becomes a Conv3d whose kernel is the 2-D one repeated over time and divided by its length,
    pools and norms become their 3-D forms (the time axis untouched by the pools)."""
    nn, torch = m.nn, m.torch

    class TimePad(nn.Module):
        """Replicates the first and last frames (F.pad's 6 numbers run last dim first: W, H, then T)."""

        def forward(self, x):
            return m.F.pad(x, (0, 0, 0, 0, time_dim // 2, time_dim // 2), mode="replicate")

    layers = []
    for layer in net2d:
        if isinstance(layer, nn.Conv2d):
            layers.append(TimePad())
            conv = nn.Conv3d(layer.in_channels, layer.out_channels, (time_dim, *layer.kernel_size),
                             padding=(0, *layer.padding))
            weight_3d = layer.weight.data.unsqueeze(2).repeat(1, 1, time_dim, 1, 1) / time_dim
            conv.weight = nn.Parameter(weight_3d)
            conv.bias = nn.Parameter(layer.bias.data.clone())
            layers.append(conv)
        elif isinstance(layer, nn.BatchNorm2d):
            bn = nn.BatchNorm3d(layer.num_features)
            bn.load_state_dict(layer.state_dict())
            layers.append(bn)
        elif isinstance(layer, nn.MaxPool2d):
            layers.append(nn.MaxPool3d((1, layer.kernel_size, layer.kernel_size), (1, layer.stride, layer.stride)))
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            layers.append(nn.AdaptiveAvgPool3d(1))
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


def i3d(m, weights):
    torch, optim, F = m.torch, m.optim, m.F
    net2d = load(m, image_net(m), weights).double().eval()
    net3d = inflate(m, net2d).double().eval()
    rng = np.random.default_rng(9)
    frames = torch.from_numpy(rng.standard_normal((2, 3, 8, 8)))
    boring = frames.unsqueeze(2).expand(-1, -1, 5, -1, -1)  # a static clip of 5 frames
    with torch.no_grad():
        out2d, out3d = net2d(frames), net3d(boring)
    # fine-tune the inflated network on moving clips, temporal average pooling at the end
    net3d.train()
    clips = torch.from_numpy(rng.standard_normal((4, 3, 6, 8, 8)))
    labels = torch.tensor([0, 1, 2, 1])
    optimizer = optim.Adam(net3d.parameters(), lr=1e-3)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(net3d(clips), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"out2d": out2d, "out3d": out3d, "history": history, "w": net3d[1].weight, "bn": net3d[2].running_mean}


def test_i3d_inflated_from_2d_weights():
    weights = weights_of(image_net)
    ours, _ = run_both(i3d, weights, rtol=1e-8, atol=1e-10)
    # on a clip of one repeated frame, the inflated network answers as the 2-D one (replicate padding in time)
    np.testing.assert_allclose(ours["out3d"], ours["out2d"], rtol=1e-10, atol=1e-12)


def slowfast(m):
    nn = m.nn

    class SlowFastTiny(nn.Module):
        def __init__(self, alpha=4, beta_inv=4, num_classes=3):
            super().__init__()
            self.alpha = alpha
            self.slow_stem = nn.Conv3d(3, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
            self.fast_stem = nn.Conv3d(3, 8 // beta_inv, (5, 3, 3), stride=(1, 2, 2), padding=(2, 1, 1), bias=False)
            self.slow_bn, self.fast_bn = nn.BatchNorm3d(8), nn.BatchNorm3d(8 // beta_inv)
            # fast -> slow lateral connection: a time-strided convolution
            self.lateral = nn.Conv3d(8 // beta_inv, 2 * 8 // beta_inv, (5, 1, 1), stride=(alpha, 1, 1), padding=(2, 0, 0),
                                     bias=False)
            self.slow_res = nn.Conv3d(8 + 2 * 8 // beta_inv, 8, (1, 3, 3), padding=(0, 1, 1))
            self.fast_res = nn.Conv3d(8 // beta_inv, 8 // beta_inv, (3, 3, 3), padding=1)
            self.head = nn.Linear(8 + 8 // beta_inv, num_classes)

        def forward(self, frames):
            # the slow pathway sees every alpha-th frame, chosen with linspace as PySlowFast's pack_pathway_output
            t = frames.shape[2]
            index = m.torch.linspace(0, t - 1, t // self.alpha).long()
            slow_in = m.torch.index_select(frames, 2, index)
            slow = m.F.relu(self.slow_bn(self.slow_stem(slow_in)))
            fast = m.F.relu(self.fast_bn(self.fast_stem(frames)))
            slow = m.torch.cat([slow, self.lateral(fast)], 1)
            slow, fast = m.F.relu(self.slow_res(slow)), m.F.relu(self.fast_res(fast))
            pooled = [m.F.adaptive_avg_pool3d(slow, 1).flatten(1), m.F.adaptive_max_pool3d(fast, 1).flatten(1)]
            return self.head(m.torch.cat(pooled, 1))

    return SlowFastTiny()


def slowfast_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, slowfast(m), weights).double()
    rng = np.random.default_rng(10)
    frames = torch.from_numpy(rng.standard_normal((3, 3, 8, 8, 8)))
    labels = torch.tensor([1, 0, 2])
    optimizer = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(frames), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    index = torch.linspace(0, 7, 2).long()
    return {"history": history, "index": index, "grad": model.lateral.weight.grad, "fast": model.fast_stem.weight}


def test_slowfast_lateral_connection_training():
    weights = weights_of(slowfast)
    ours, _ = run_both(slowfast_training, weights, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(ours["index"], [0, 7])


# ----------------------------------------------------------------------------------------------
# pytorch-i3d (piergiaj): InceptionI3d's Unit3D and MaxPool3dSamePadding (TensorFlow's 'SAME' padding by F.pad,
# a subclass of MaxPool3d reading its kernel_size/stride), end points run through self._modules, and train_i3d's
# localisation + classification losses on logits upsampled in time by the deprecated F.upsample(mode='linear')
# ----------------------------------------------------------------------------------------------


def inception_i3d(m):
    nn, F, torch = m.nn, m.F, m.torch

    class MaxPool3dSamePadding(nn.MaxPool3d):
        def compute_pad(self, dim, s):
            if s % self.stride[dim] == 0:
                return max(self.kernel_size[dim] - self.stride[dim], 0)
            else:
                return max(self.kernel_size[dim] - (s % self.stride[dim]), 0)

        def forward(self, x):
            (batch, channel, t, h, w) = x.size()
            pad_t = self.compute_pad(0, t)
            pad_h = self.compute_pad(1, h)
            pad_w = self.compute_pad(2, w)
            pad_t_f = pad_t // 2
            pad_t_b = pad_t - pad_t_f
            pad_h_f = pad_h // 2
            pad_h_b = pad_h - pad_h_f
            pad_w_f = pad_w // 2
            pad_w_b = pad_w - pad_w_f
            pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
            x = F.pad(x, pad)
            return super(MaxPool3dSamePadding, self).forward(x)

    class Unit3D(nn.Module):
        def __init__(self, in_channels, output_channels, kernel_shape=(1, 1, 1), stride=(1, 1, 1), padding=0,
                     activation_fn=F.relu, use_batch_norm=True, use_bias=False, name="unit_3d"):
            super(Unit3D, self).__init__()
            self._output_channels = output_channels
            self._kernel_shape = kernel_shape
            self._stride = stride
            self._use_batch_norm = use_batch_norm
            self._activation_fn = activation_fn
            self._use_bias = use_bias
            self.name = name
            self.padding = padding
            self.conv3d = nn.Conv3d(in_channels=in_channels, out_channels=self._output_channels,
                                    kernel_size=self._kernel_shape, stride=self._stride, padding=0, bias=self._use_bias)
            if self._use_batch_norm:
                self.bn = nn.BatchNorm3d(self._output_channels, eps=0.001, momentum=0.01)

        def compute_pad(self, dim, s):
            if s % self._stride[dim] == 0:
                return max(self._kernel_shape[dim] - self._stride[dim], 0)
            else:
                return max(self._kernel_shape[dim] - (s % self._stride[dim]), 0)

        def forward(self, x):
            (batch, channel, t, h, w) = x.size()
            pad_t = self.compute_pad(0, t)
            pad_h = self.compute_pad(1, h)
            pad_w = self.compute_pad(2, w)
            pad_t_f = pad_t // 2
            pad_t_b = pad_t - pad_t_f
            pad_h_f = pad_h // 2
            pad_h_b = pad_h - pad_h_f
            pad_w_f = pad_w // 2
            pad_w_b = pad_w - pad_w_f
            pad = (pad_w_f, pad_w_b, pad_h_f, pad_h_b, pad_t_f, pad_t_b)
            x = F.pad(x, pad)
            x = self.conv3d(x)
            if self._use_batch_norm:
                x = self.bn(x)
            if self._activation_fn is not None:
                x = self._activation_fn(x)
            return x

    class InceptionModule(nn.Module):
        def __init__(self, in_channels, out_channels, name):
            super(InceptionModule, self).__init__()
            self.b0 = Unit3D(in_channels=in_channels, output_channels=out_channels[0], kernel_shape=[1, 1, 1], padding=0,
                             name=name + "/Branch_0/Conv3d_0a_1x1")
            self.b1a = Unit3D(in_channels=in_channels, output_channels=out_channels[1], kernel_shape=[1, 1, 1], padding=0,
                              name=name + "/Branch_1/Conv3d_0a_1x1")
            self.b1b = Unit3D(in_channels=out_channels[1], output_channels=out_channels[2], kernel_shape=[3, 3, 3],
                              name=name + "/Branch_1/Conv3d_0b_3x3")
            self.b2a = Unit3D(in_channels=in_channels, output_channels=out_channels[3], kernel_shape=[1, 1, 1], padding=0,
                              name=name + "/Branch_2/Conv3d_0a_1x1")
            self.b2b = Unit3D(in_channels=out_channels[3], output_channels=out_channels[4], kernel_shape=[3, 3, 3],
                              name=name + "/Branch_2/Conv3d_0b_3x3")
            self.b3a = MaxPool3dSamePadding(kernel_size=[3, 3, 3], stride=(1, 1, 1), padding=0)
            self.b3b = Unit3D(in_channels=in_channels, output_channels=out_channels[5], kernel_shape=[1, 1, 1], padding=0,
                              name=name + "/Branch_3/Conv3d_0b_1x1")
            self.name = name

        def forward(self, x):
            b0 = self.b0(x)
            b1 = self.b1b(self.b1a(x))
            b2 = self.b2b(self.b2a(x))
            b3 = self.b3b(self.b3a(x))
            return torch.cat([b0, b1, b2, b3], dim=1)

    class InceptionI3d(nn.Module):
        VALID_ENDPOINTS = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Mixed_3b", "MaxPool3d_4a_3x3", "Mixed_4b", "Logits")

        def __init__(self, num_classes=4, spatial_squeeze=True, name="inception_i3d", in_channels=3,
                     dropout_keep_prob=0.0):
            super(InceptionI3d, self).__init__()
            self._num_classes = num_classes
            self._spatial_squeeze = spatial_squeeze
            self.end_points = {}
            self.end_points["Conv3d_1a_7x7"] = Unit3D(in_channels=in_channels, output_channels=8, kernel_shape=[3, 3, 3],
                                                      stride=(2, 2, 2), padding=(3, 3, 3), name=name + "Conv3d_1a_7x7")
            self.end_points["MaxPool3d_2a_3x3"] = MaxPool3dSamePadding(kernel_size=[1, 3, 3], stride=(1, 2, 2), padding=0)
            self.end_points["Mixed_3b"] = InceptionModule(8, [4, 4, 6, 2, 4, 2], name + "Mixed_3b")
            self.end_points["MaxPool3d_4a_3x3"] = MaxPool3dSamePadding(kernel_size=[3, 3, 3], stride=(2, 2, 2), padding=0)
            self.end_points["Mixed_4b"] = InceptionModule(16, [6, 4, 6, 2, 4, 4], name + "Mixed_4b")
            self.avg_pool = nn.AvgPool3d(kernel_size=[1, 2, 2], stride=(1, 1, 1))
            self.dropout = nn.Dropout(dropout_keep_prob)
            self.logits = Unit3D(in_channels=20, output_channels=self._num_classes, kernel_shape=[1, 1, 1], padding=0,
                                 activation_fn=None, use_batch_norm=False, use_bias=True, name="logits")
            self.build()

        def build(self):
            for k in self.end_points.keys():
                self.add_module(k, self.end_points[k])

        def forward(self, x):
            for end_point in self.VALID_ENDPOINTS:
                if end_point in self.end_points:
                    x = self._modules[end_point](x)
            x = self.logits(self.dropout(self.avg_pool(x)))
            if self._spatial_squeeze:
                logits = x.squeeze(3).squeeze(3)
            else:
                return x
            return logits

    return InceptionI3d()


def i3d_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    i3d = load(m, inception_i3d(m), weights).double()
    rng = np.random.default_rng(22)
    inputs = torch.from_numpy(rng.standard_normal((2, 3, 8, 16, 16)))
    labels = torch.zeros(2, 4, 8, dtype=torch.float64)
    labels[0, 1, 2:6] = 1
    labels[1, 3, :] = 1
    t = inputs.size(2)
    optimizer = optim.SGD(i3d.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0000001)
    lr_sched = optim.lr_scheduler.MultiStepLR(optimizer, [2, 4])
    num_steps_per_update = 2
    history = []
    for step in range(4):
        per_frame_logits = i3d(inputs)
        per_frame_logits = F.upsample(per_frame_logits, t, mode="linear")
        loc_loss = F.binary_cross_entropy_with_logits(per_frame_logits, labels)
        cls_loss = F.binary_cross_entropy_with_logits(torch.max(per_frame_logits, dim=2)[0], torch.max(labels, dim=2)[0])
        loss = (0.5 * loc_loss + 0.5 * cls_loss) / num_steps_per_update
        loss.backward()
        if step % num_steps_per_update == num_steps_per_update - 1:
            optimizer.step()
            optimizer.zero_grad()
            lr_sched.step()
        history.append([loc_loss.item(), cls_loss.item()])
    shapes = {}
    x = inputs
    for end_point in i3d.VALID_ENDPOINTS:
        if end_point in i3d.end_points:
            x = i3d._modules[end_point](x)
            shapes[end_point] = tuple(x.shape)
    return {"history": history, "per_frame": per_frame_logits, "shapes": shapes,
            "bn": i3d.Mixed_4b.b1b.bn.running_mean, "w": i3d.Conv3d_1a_7x7.conv3d.weight}


@pytest.mark.filterwarnings("ignore:`nn.functional.upsample` is deprecated")
def test_pytorch_i3d_inception_with_same_padding_subclasses():
    weights = weights_of(inception_i3d)
    ours, _ = run_both(i3d_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["shapes"] == {"Conv3d_1a_7x7": (2, 8, 4, 8, 8), "MaxPool3d_2a_3x3": (2, 8, 4, 4, 4),
                              "Mixed_3b": (2, 16, 4, 4, 4), "MaxPool3d_4a_3x3": (2, 16, 2, 2, 2),
                              "Mixed_4b": (2, 20, 2, 2, 2)}
    assert ours["per_frame"].shape == (2, 4, 8)
