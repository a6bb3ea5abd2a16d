# ruff: noqa: B007, E501, UP008  (the programs are kept as their authors wrote them)
"""3-D volumetric programs as medical-imaging and video code writes them, run as tests/probe19_volumes_common.py
says. 3-D ResNets: a weight-standardised 3-D ResNet over ``Conv3d._conv_forward`` and
``_reversed_padding_repeated_twice``; MedicalNet's 3-D ResNet (type-A shortcuts by ``.data``);
``torch.cuda.FloatTensor`` checks."""

import numpy as np
import pytest

from .probe19_volumes_common import volumes
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A 3-D ResNet with weight-standardised convolutions (BiT's StdConv, written over Conv3d._conv_forward with
# _reversed_padding_repeated_twice for its reflect padding) and GroupNorm, trained with gradient accumulation
# ----------------------------------------------------------------------------------------------


def std_resnet3d(m):
    nn, F, torch = m.nn, m.F, m.torch

    class StdConv3d(nn.Conv3d):
        def _conv_forward(self, input, weight, bias):
            v, mu = torch.var_mean(weight, dim=[1, 2, 3, 4], keepdim=True, unbiased=False)
            weight = (weight - mu) / torch.sqrt(v + 1e-10)
            if self.padding_mode != "zeros":
                return F.conv3d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                                weight, bias, self.stride, (0, 0, 0), self.dilation, self.groups)
            return F.conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    class PreActBottleneck(nn.Module):
        def __init__(self, cin, cout, cmid, stride=1):
            super().__init__()
            self.gn1 = nn.GroupNorm(2, cin)
            self.conv1 = StdConv3d(cin, cmid, 1, bias=False)
            self.gn2 = nn.GroupNorm(2, cmid)
            self.conv2 = StdConv3d(cmid, cmid, 3, stride=stride, padding=1, bias=False, padding_mode="reflect")
            self.gn3 = nn.GroupNorm(2, cmid)
            self.conv3 = StdConv3d(cmid, cout, 1, bias=False)
            self.relu = nn.ReLU(inplace=True)
            if stride != 1 or cin != cout:
                self.downsample = StdConv3d(cin, cout, 1, stride=stride, bias=False)

        def forward(self, x):
            out = self.relu(self.gn1(x))
            residual = x
            if hasattr(self, "downsample"):
                residual = self.downsample(out)
            out = self.conv1(out)
            out = self.conv2(self.relu(self.gn2(out)))
            out = self.conv3(self.relu(self.gn3(out)))
            return out + residual

    class ResNetV2_3D(nn.Module):
        def __init__(self, num_classes=2):
            super().__init__()
            self.root = nn.Sequential(StdConv3d(1, 8, kernel_size=(3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2),
                                                bias=False, padding_mode="replicate"),
                                      nn.ConstantPad3d(1, 0), nn.MaxPool3d(kernel_size=3, stride=2))
            self.body = nn.Sequential(PreActBottleneck(8, 16, 4), PreActBottleneck(16, 16, 4, stride=2))
            self.head = nn.Sequential(nn.GroupNorm(2, 16), nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(output_size=1),
                                      nn.Conv3d(16, num_classes, kernel_size=1, bias=True))

        def forward(self, x):
            x = self.head(self.body(self.root(x)))
            assert x.shape[-3:] == (1, 1, 1)
            return x[..., 0, 0, 0]

    return ResNetV2_3D()


def std_resnet_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, std_resnet3d(m), weights).double()
    images, labels = volumes(n=4, classes=2, seed=20)
    x = torch.from_numpy(images)
    y = torch.tensor([0, 1, 1, 0])
    optimizer = optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    history = []
    accum = 2
    for step in range(2):
        optimizer.zero_grad()
        for micro in range(accum):
            xb, yb = x[micro * 2:(micro + 1) * 2], y[micro * 2:(micro + 1) * 2]
            loss = F.cross_entropy(model(xb), yb) / accum
            loss.backward()
            history.append(loss.item())
        optimizer.step()
    return {"history": history, "grad": model.body[1].conv2.weight.grad, "root": model.root[0].weight,
            "logits": model(x), "pad": model.body[0].conv2._reversed_padding_repeated_twice}


def test_weight_standardised_resnet3d_with_padding_modes():
    weights = weights_of(std_resnet3d)
    ours, _ = run_both(std_resnet_training, weights, rtol=1e-7, atol=1e-9)
    assert tuple(ours["pad"]) == (1, 1, 1, 1, 1, 1)


# ----------------------------------------------------------------------------------------------
# MedicalNet (Med3D, Tencent): a 3-D ResNet with shortcut type 'A' (avg_pool3d of stride, zero channels from the
# legacy torch.Tensor(sizes).zero_(), torch.cat of .data: no gradient through the shortcut), dilated layers 3 and 4,
# a transposed-convolution segmentation head, pretrained weights merged by dict update, the head's parameters at
# 100 times the learning rate, ExponentialLR
# ----------------------------------------------------------------------------------------------


def medicalnet(m):
    torch, nn, F = m.torch, m.nn, m.F
    from functools import partial

    Variable = m.torch.autograd.Variable

    def conv3x3x3(in_planes, out_planes, stride=1, dilation=1):
        return nn.Conv3d(in_planes, out_planes, kernel_size=3, dilation=dilation, stride=stride, padding=dilation,
                         bias=False)

    def downsample_basic_block(x, planes, stride, no_cuda=False):
        out = F.avg_pool3d(x, kernel_size=1, stride=stride)
        zero_pads = torch.Tensor(out.size(0), planes - out.size(1), out.size(2), out.size(3), out.size(4)).zero_()
        if not no_cuda:
            if isinstance(out.data, torch.cuda.FloatTensor):
                zero_pads = zero_pads.cuda()
        out = Variable(torch.cat([out.data, zero_pads.to(out.dtype)], dim=1))
        return out

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
            super(BasicBlock, self).__init__()
            self.conv1 = conv3x3x3(inplanes, planes, stride=stride, dilation=dilation)
            self.bn1 = nn.BatchNorm3d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv3x3x3(planes, planes, dilation=dilation)
            self.bn2 = nn.BatchNorm3d(planes)
            self.downsample = downsample
            self.stride = stride
            self.dilation = dilation

        def forward(self, x):
            residual = x
            out = self.conv1(x)
            out = self.bn1(out)
            out = self.relu(out)
            out = self.conv2(out)
            out = self.bn2(out)
            if self.downsample is not None:
                residual = self.downsample(x)
            out += residual
            out = self.relu(out)
            return out

    class ResNet(nn.Module):
        def __init__(self, block, layers, num_seg_classes, shortcut_type="A", no_cuda=True):
            self.inplanes = 4
            self.no_cuda = no_cuda
            super(ResNet, self).__init__()
            self.conv1 = nn.Conv3d(1, 4, kernel_size=7, stride=(2, 2, 2), padding=(3, 3, 3), bias=False)
            self.bn1 = nn.BatchNorm3d(4)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool3d(kernel_size=(3, 3, 3), stride=2, padding=1)
            self.layer1 = self._make_layer(block, 4, layers[0], shortcut_type)
            self.layer2 = self._make_layer(block, 8, layers[1], shortcut_type, stride=2)
            self.layer3 = self._make_layer(block, 8, layers[2], shortcut_type, stride=1, dilation=2)
            self.layer4 = self._make_layer(block, 12, layers[3], shortcut_type, stride=1, dilation=4)
            self.conv_seg = nn.Sequential(
                nn.ConvTranspose3d(12 * block.expansion, 6, 2, stride=2), nn.BatchNorm3d(6), nn.ReLU(inplace=True),
                nn.Conv3d(6, 6, kernel_size=3, stride=(1, 1, 1), padding=(1, 1, 1), bias=False), nn.BatchNorm3d(6),
                nn.ReLU(inplace=True), nn.Conv3d(6, num_seg_classes, kernel_size=1, stride=(1, 1, 1), bias=False))
            for mod in self.modules():
                if isinstance(mod, nn.Conv3d):
                    mod.weight = nn.init.kaiming_normal(mod.weight, mode="fan_out")
                elif isinstance(mod, nn.BatchNorm3d):
                    mod.weight.data.fill_(1)
                    mod.bias.data.zero_()

        def _make_layer(self, block, planes, blocks, shortcut_type, stride=1, dilation=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                if shortcut_type == "A":
                    downsample = partial(downsample_basic_block, planes=planes * block.expansion, stride=stride,
                                         no_cuda=self.no_cuda)
                else:
                    downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes * block.expansion, kernel_size=1,
                                                         stride=stride, bias=False), nn.BatchNorm3d(planes * block.expansion))
            layers = [block(self.inplanes, planes, stride=stride, dilation=dilation, downsample=downsample)]
            self.inplanes = planes * block.expansion
            for i in range(1, blocks):
                layers.append(block(self.inplanes, planes, dilation=dilation))
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.conv1(x)
            x = self.bn1(x)
            x = self.relu(x)
            x = self.maxpool(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
            x = self.conv_seg(x)
            return x

    return ResNet(BasicBlock, [1, 1, 1, 1], num_seg_classes=2)


def medicalnet_training(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = medicalnet(m).double()
    # "pretrained" weights (a checkpoint with a classifier this model lacks), merged as MedicalNet does
    net_dict = model.state_dict()
    pretrain = {"state_dict": {**{k: torch.tensor(v) for k, v in weights.items()}, "fc.weight": torch.zeros(3, 12)}}
    pretrain_dict = {k: v for k, v in pretrain["state_dict"].items() if k in net_dict.keys()}
    net_dict.update(pretrain_dict)
    model.load_state_dict(net_dict)
    new_layer_names = ["conv_seg"]
    new_parameters = []
    for pname, p in model.named_parameters():
        for layer_name in new_layer_names:
            if pname.find(layer_name) >= 0:
                new_parameters.append(p)
                break
    new_parameters_id = list(map(id, new_parameters))
    base_parameters = list(filter(lambda p: id(p) not in new_parameters_id, model.parameters()))
    params = [{"params": base_parameters, "lr": 1e-4}, {"params": new_parameters, "lr": 1e-4 * 100}]
    optimizer = optim.SGD(params, momentum=0.9, weight_decay=1e-3)
    scheduler = optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99)
    loss_seg = nn.CrossEntropyLoss(ignore_index=-1)
    images, labels = volumes(n=2, classes=2, side=16, seed=24)
    volumes_ = torch.from_numpy(images)
    label_masks = torch.from_numpy(labels)
    label_masks[:, :2] = -1  # slices without annotation
    history = []
    for step in range(3):
        optimizer.zero_grad()
        out_masks = model(volumes_)
        [n, _, d, h, w] = out_masks.shape
        new_label_masks = F.interpolate(label_masks[:, None].double(), size=(d, h, w), mode="nearest")[:, 0].long()
        loss_value_seg = loss_seg(out_masks, new_label_masks)
        loss = loss_value_seg
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    # the shortcut's zero channels carry no gradient, and .data cuts the graph there
    x = torch.ones(1, 4, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    shortcut = model.layer2[0].downsample(x)
    return {"history": history, "out": out_masks, "seg_grad": model.conv_seg[0].weight.grad,
            "base_grad": model.layer3[0].conv1.weight.grad, "shortcut": shortcut,
            "shortcut_requires_grad": shortcut.requires_grad, "lrs": [g["lr"] for g in optimizer.param_groups]}


@pytest.mark.filterwarnings("ignore:`nn.init.kaiming_normal` is now deprecated")
def test_medicalnet_resnet3d_with_type_a_shortcuts():
    weights = weights_of(medicalnet)
    ours, _ = run_both(medicalnet_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["out"].shape == (2, 2, 4, 4, 4)  # 16 -> 8 (conv1) -> 4 (maxpool) -> 2 (layer2) -> 4 (head)
    assert ours["shortcut"].shape == (1, 8, 2, 2, 2) and (ours["shortcut"][:, 4:] == 0).all()
    assert ours["shortcut_requires_grad"] is False
    np.testing.assert_allclose(ours["lrs"], [1e-4 * 0.99 ** 3, 1e-2 * 0.99 ** 3], rtol=1e-12)


def test_isinstance_of_a_cuda_legacy_type_is_false_on_the_cpu():
    """MedicalNet's downsample_basic_block asks isinstance(x, torch.cuda.FloatTensor) (autograd.cuda's legacy typed
    constructors): False on the CPU, and making one refuses, as PyTorch's without CUDA."""
    torch = OURS.torch
    assert not isinstance(torch.ones(2).data, torch.cuda.FloatTensor) and isinstance(torch.ones(2), torch.FloatTensor)
    assert repr(torch.cuda.LongTensor) == "<class 'torch.cuda.LongTensor'>"
    with pytest.raises(TypeError, match="not available"):
        torch.cuda.FloatTensor(2)
