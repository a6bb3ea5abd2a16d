# ruff: noqa: B007, E501, UP008, UP032  (the programs are kept as their authors wrote them)
"""3-D volumetric programs as medical-imaging and video code writes them, run as tests/probe19_volumes_common.py
says. Segmentation networks as their repositories write them: V-Net's ``ContBatchNorm3d`` (a ``_BatchNorm``
subclass); pytorch-3dunet's UNet3D with GeneralizedDiceLoss."""

import numpy as np

from .probe19_volumes_common import volumes
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# V-Net (Milletari et al., as vnet.pytorch writes it): ContBatchNorm3d, a _BatchNorm subclass with its own
# _check_input_dim that always normalises by the batch; 5x5x5 convolutions, ELU, strided down / transposed up
# convolutions, Dropout3d, and a softmax over voxels flattened to (N*D*H*W, 2)
# ----------------------------------------------------------------------------------------------


def vnet(m):
    nn, F, torch = m.nn, m.F, m.torch

    class ContBatchNorm3d(nn.modules.batchnorm._BatchNorm):
        def _check_input_dim(self, input):
            if input.dim() != 5:
                raise ValueError("expected 5D input (got {}D input)".format(input.dim()))

        def forward(self, input):
            self._check_input_dim(input)
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, True, self.momentum,
                                self.eps)

    def ELUCons(elu, nchan):
        return nn.ELU(inplace=True) if elu else nn.PReLU(nchan)

    class LUConv(nn.Module):
        def __init__(self, nchan, elu):
            super().__init__()
            self.relu1 = ELUCons(elu, nchan)
            self.conv1 = nn.Conv3d(nchan, nchan, kernel_size=5, padding=2)
            self.bn1 = ContBatchNorm3d(nchan)

        def forward(self, x):
            return self.relu1(self.bn1(self.conv1(x)))

    def _make_nConv(nchan, depth, elu):
        return nn.Sequential(*[LUConv(nchan, elu) for _ in range(depth)])

    class InputTransition(nn.Module):
        def __init__(self, outChans, elu):
            super().__init__()
            self.conv1 = nn.Conv3d(1, 4, kernel_size=5, padding=2)
            self.bn1 = ContBatchNorm3d(4)
            self.relu1 = ELUCons(elu, 4)

        def forward(self, x):
            out = self.bn1(self.conv1(x))
            x4 = torch.cat((x, x, x, x), 1)
            return self.relu1(torch.add(out, x4))

    class DownTransition(nn.Module):
        def __init__(self, inChans, nConvs, elu, dropout=False):
            super().__init__()
            outChans = 2 * inChans
            self.down_conv = nn.Conv3d(inChans, outChans, kernel_size=2, stride=2)
            self.bn1 = ContBatchNorm3d(outChans)
            self.do1 = nn.Identity()
            self.relu1 = ELUCons(elu, outChans)
            self.relu2 = ELUCons(elu, outChans)
            if dropout:
                self.do1 = nn.Dropout3d()
            self.ops = _make_nConv(outChans, nConvs, elu)

        def forward(self, x):
            down = self.relu1(self.bn1(self.down_conv(x)))
            out = self.do1(down)
            out = self.ops(out)
            return self.relu2(torch.add(out, down))

    class UpTransition(nn.Module):
        def __init__(self, inChans, outChans, nConvs, elu):
            super().__init__()
            self.up_conv = nn.ConvTranspose3d(inChans, outChans // 2, kernel_size=2, stride=2)
            self.bn1 = ContBatchNorm3d(outChans // 2)
            self.relu1 = ELUCons(elu, outChans // 2)
            self.relu2 = ELUCons(elu, outChans)
            self.ops = _make_nConv(outChans, nConvs, elu)

        def forward(self, x, skipx):
            out = self.relu1(self.bn1(self.up_conv(x)))
            xcat = torch.cat((out, skipx), 1)
            out = self.ops(xcat)
            return self.relu2(torch.add(out, xcat))

    class OutputTransition(nn.Module):
        def __init__(self, inChans, elu, nll):
            super().__init__()
            self.conv1 = nn.Conv3d(inChans, 2, kernel_size=5, padding=2)
            self.bn1 = ContBatchNorm3d(2)
            self.conv2 = nn.Conv3d(2, 2, kernel_size=1)
            self.relu1 = ELUCons(elu, 2)
            self.softmax = F.log_softmax if nll else F.softmax

        def forward(self, x):
            out = self.relu1(self.bn1(self.conv1(x)))
            out = self.conv2(out)
            out = out.permute(0, 2, 3, 4, 1).contiguous()
            out = out.view(out.numel() // 2, 2)
            return self.softmax(out, dim=1)

    class VNet(nn.Module):
        def __init__(self, elu=True, nll=False):
            super().__init__()
            self.in_tr = InputTransition(4, elu)
            self.down_tr32 = DownTransition(4, 1, elu)
            self.down_tr64 = DownTransition(8, 1, elu)
            self.up_tr64 = UpTransition(16, 16, 1, elu)
            self.up_tr32 = UpTransition(16, 8, 1, elu)
            self.out_tr = OutputTransition(8, elu, nll)

        def forward(self, x):
            out16 = self.in_tr(x)
            out32 = self.down_tr32(out16)
            out64 = self.down_tr64(out32)
            out = self.up_tr64(out64, out32)
            out = self.up_tr32(out, out16)
            return self.out_tr(out)

    return VNet(elu=False, nll=True)


def vnet_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, vnet(m), weights).double()
    images, labels = volumes(n=2, classes=2, seed=19)
    data, target = torch.from_numpy(images), torch.from_numpy(labels)
    bg_weight = (target == 0).double().mean()
    weights_ = torch.stack([1 - bg_weight, bg_weight])
    optimizer = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-8)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        output = model(data)
        target_flat = target.view(target.numel())
        loss = F.nll_loss(output, target_flat, weight=weights_)
        loss.backward()
        optimizer.step()
        pred = output.data.max(1)[1]
        incorrect = pred.ne(target_flat).sum()
        history.append((loss.item(), incorrect.item()))
    return {"history": history, "output": output, "prelu": model.up_tr32.relu2.weight,
            "running": model.down_tr64.bn1.running_var}


def test_vnet_with_cont_batch_norm_subclass():
    weights = weights_of(vnet)
    ours, _ = run_both(vnet_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["output"].shape == (2 * 512, 2)
    np.testing.assert_allclose(np.exp(ours["output"]).sum(1), 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# pytorch-3dunet (wolny): UNet3D built from an order string ('gcr': GroupNorm, Conv3d, ReLU), interpolation
# upsampling by functools.partial(F.interpolate), summation or concatenation joining, the final activation only in
# eval; GeneralizedDiceLoss over channels flattened by permute, expand_as_one_hot with an ignore_index (scatter_ and
# boolean assignment), _MaskingLossWrapper's mask with requires_grad set False
# ----------------------------------------------------------------------------------------------


def wolny_unet3d(m):
    nn, F, torch = m.nn, m.F, m.torch
    from functools import partial

    def create_conv(in_channels, out_channels, kernel_size, order, num_groups, padding):
        modules = []
        for i, char in enumerate(order):
            if char == "r":
                modules.append(("ReLU", nn.ReLU(inplace=True)))
            elif char == "e":
                modules.append(("ELU", nn.ELU(inplace=True)))
            elif char == "c":
                bias = not ("g" in order or "b" in order)
                modules.append(("conv", nn.Conv3d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)))
            elif char == "g":
                is_before_conv = i < order.index("c")
                num_channels = in_channels if is_before_conv else out_channels
                if num_channels < num_groups:
                    num_groups = 1
                assert num_channels % num_groups == 0
                modules.append(("groupnorm", nn.GroupNorm(num_groups=num_groups, num_channels=num_channels)))
        return modules

    class SingleConv(nn.Sequential):
        def __init__(self, in_channels, out_channels, kernel_size=3, order="gcr", num_groups=8, padding=1):
            super(SingleConv, self).__init__()
            for name, module in create_conv(in_channels, out_channels, kernel_size, order, num_groups, padding=padding):
                self.add_module(name, module)

    class DoubleConv(nn.Sequential):
        def __init__(self, in_channels, out_channels, encoder, kernel_size=3, order="gcr", num_groups=8, padding=1):
            super(DoubleConv, self).__init__()
            if encoder:
                conv1_in_channels = in_channels
                conv1_out_channels = out_channels // 2
                if conv1_out_channels < in_channels:
                    conv1_out_channels = in_channels
                conv2_in_channels, conv2_out_channels = conv1_out_channels, out_channels
            else:
                conv1_in_channels, conv1_out_channels = in_channels, out_channels
                conv2_in_channels, conv2_out_channels = out_channels, out_channels
            self.add_module("SingleConv1", SingleConv(conv1_in_channels, conv1_out_channels, kernel_size, order, num_groups,
                                                      padding=padding))
            self.add_module("SingleConv2", SingleConv(conv2_in_channels, conv2_out_channels, kernel_size, order, num_groups,
                                                      padding=padding))

    class Encoder(nn.Module):
        def __init__(self, in_channels, out_channels, apply_pooling=True, pool_kernel_size=2, pool_type="max",
                     conv_layer_order="gcr", num_groups=8):
            super(Encoder, self).__init__()
            assert pool_type in ["max", "avg"]
            if apply_pooling:
                self.pooling = nn.MaxPool3d(kernel_size=pool_kernel_size) if pool_type == "max" else \
                    nn.AvgPool3d(kernel_size=pool_kernel_size)
            else:
                self.pooling = None
            self.basic_module = DoubleConv(in_channels, out_channels, encoder=True, order=conv_layer_order,
                                           num_groups=num_groups)

        def forward(self, x):
            if self.pooling is not None:
                x = self.pooling(x)
            return self.basic_module(x)

    class InterpolateUpsampling(nn.Module):
        def __init__(self, mode="nearest"):
            super().__init__()
            self.upsample = partial(self._interpolate, mode=mode)

        @staticmethod
        def _interpolate(x, size, mode):
            return F.interpolate(x, size=size, mode=mode)

        def forward(self, encoder_features, x):
            output_size = encoder_features.size()[2:]
            return self.upsample(x, output_size)

    class Decoder(nn.Module):
        def __init__(self, in_channels, out_channels, conv_layer_order="gcr", num_groups=8, mode="nearest", concat=True):
            super(Decoder, self).__init__()
            self.upsampling = InterpolateUpsampling(mode=mode)
            self.joining = partial(self._joining, concat=concat)
            self.basic_module = DoubleConv(in_channels, out_channels, encoder=False, order=conv_layer_order,
                                           num_groups=num_groups)

        def forward(self, encoder_features, x):
            x = self.upsampling(encoder_features=encoder_features, x=x)
            x = self.joining(encoder_features, x)
            return self.basic_module(x)

        @staticmethod
        def _joining(encoder_features, x, concat):
            if concat:
                return torch.cat((encoder_features, x), dim=1)
            else:
                return encoder_features + x

    class UNet3D(nn.Module):
        def __init__(self, in_channels=1, out_channels=3, f_maps=(4, 8, 16), layer_order="gcr", num_groups=4,
                     is_segmentation=True):
            super().__init__()
            self.encoders = nn.ModuleList([Encoder(in_channels if i == 0 else f_maps[i - 1], f, apply_pooling=i > 0,
                                                   conv_layer_order=layer_order, num_groups=num_groups)
                                           for i, f in enumerate(f_maps)])
            reversed_f_maps = list(reversed(f_maps))
            self.decoders = nn.ModuleList([Decoder(reversed_f_maps[i] + reversed_f_maps[i + 1], reversed_f_maps[i + 1],
                                                   conv_layer_order=layer_order, num_groups=num_groups,
                                                   mode="trilinear" if i == 0 else "nearest")
                                           for i in range(len(reversed_f_maps) - 1)])
            self.final_conv = nn.Conv3d(f_maps[0], out_channels, 1)
            self.final_activation = nn.Softmax(dim=1) if is_segmentation else nn.Sigmoid()

        def forward(self, x):
            encoders_features = []
            for encoder in self.encoders:
                x = encoder(x)
                encoders_features.insert(0, x)
            encoders_features = encoders_features[1:]
            for decoder, encoder_features in zip(self.decoders, encoders_features):
                x = decoder(encoder_features, x)
            x = self.final_conv(x)
            if not self.training and self.final_activation is not None:
                x = self.final_activation(x)
            return x

    return UNet3D()


def wolny_training(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim

    def expand_as_one_hot(input, C, ignore_index=None):
        assert input.dim() == 4
        input = input.unsqueeze(1)
        shape = list(input.size())
        shape[1] = C
        if ignore_index is not None:
            mask = input.expand(shape) == ignore_index
            input = input.clone()
            input[input == ignore_index] = 0
            result = torch.zeros(shape).to(input.device).scatter_(1, input, 1)
            result[mask] = ignore_index
            return result
        else:
            return torch.zeros(shape).to(input.device).scatter_(1, input, 1)

    def flatten(tensor):
        C = tensor.size(1)
        axis_order = (1, 0) + tuple(range(2, tensor.dim()))
        transposed = tensor.permute(axis_order)
        return transposed.contiguous().view(C, -1)

    class GeneralizedDiceLoss(nn.Module):
        def __init__(self, normalization="softmax", epsilon=1e-6):
            super().__init__()
            self.epsilon = epsilon
            self.normalization = nn.Softmax(dim=1) if normalization == "softmax" else nn.Sigmoid()

        def forward(self, input, target):
            input = self.normalization(input)
            input = flatten(input)
            target = flatten(target).float().to(input.dtype)
            w_l = target.sum(-1)
            w_l = 1 / (w_l * w_l).clamp(min=self.epsilon)
            w_l.requires_grad = False
            intersect = (input * target).sum(-1)
            intersect = intersect * w_l
            denominator = (input + target).sum(-1)
            denominator = (denominator * w_l).clamp(min=self.epsilon)
            return 1 - 2 * (intersect.sum() / denominator.sum())

    class _MaskingLossWrapper(nn.Module):
        def __init__(self, loss, ignore_index):
            super(_MaskingLossWrapper, self).__init__()
            self.loss = loss
            self.ignore_index = ignore_index

        def forward(self, input, target):
            mask = target.clone().ne_(self.ignore_index)
            mask.requires_grad = False
            input = input * mask
            target = target * mask
            return self.loss(input, target)

    model = load(m, wolny_unet3d(m), weights).double()
    images, labels = volumes(n=2, seed=28)
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)
    y[:, :, :, :1] = -1  # an unlabelled border
    target = expand_as_one_hot(y, 3, ignore_index=-1)
    loss_criterion = _MaskingLossWrapper(GeneralizedDiceLoss(), ignore_index=-1)
    optimizer = optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-5)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    history = []
    for step in range(3):
        model.train()
        optimizer.zero_grad()
        output = model(x)
        loss = loss_criterion(output, target)
        loss.backward()
        optimizer.step()
        scheduler.step(loss.item() + 1.0 * (step == 1))
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        probs = model(x)
    return {"history": history, "target": target, "probs": probs, "lr": optimizer.param_groups[0]["lr"],
            "grad": model.decoders[0].basic_module.SingleConv1.conv.weight.grad,
            "groups": [mod.num_groups for mod in model.modules() if isinstance(mod, nn.GroupNorm)]}


def test_pytorch_3dunet_generalized_dice_with_ignore_index():
    weights = weights_of(wolny_unet3d)
    ours, _ = run_both(wolny_training, weights, rtol=1e-6, atol=1e-8)
    t = ours["target"]
    assert t.shape == (2, 3, 8, 8, 8) and (t[:, :, :, :, :1] == -1).all() and set(np.unique(t)) == {-1.0, 0.0, 1.0}
    np.testing.assert_allclose(ours["probs"].sum(1), 1.0, rtol=1e-12)
    assert ours["groups"][0] == 1  # 1 channel in, fewer than 4 groups
