"""What the files of session 11's timm probe (tests/test_programs_probe11_timm_*.py, one part of timm or the
references each) share: a small ResNet, timm's no-weight-decay parameter groups, and random data.

The programs (see tests/pytorch_programs.py) are each run unchanged but for their imports on chainrule and on PyTorch
from the same weights and data, comparing losses, gradients and parameters after a few optimizer steps."""

import numpy as np


def small_resnet(m, num_classes=4):
    nn = m.nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.act1 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.act2 = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))

        def forward(self, x):
            shortcut = x
            x = self.act1(self.bn1(self.conv1(x)))
            x = self.bn2(self.conv2(x))
            if self.downsample is not None:
                shortcut = self.downsample(shortcut)
            x += shortcut
            return self.act2(x)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.act1 = nn.ReLU(inplace=True)
            self.layer1 = BasicBlock(8, 8)
            self.layer2 = BasicBlock(8, 12, stride=2)
            self.global_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(12, num_classes)

        def forward(self, x):
            x = self.act1(self.bn1(self.conv1(x)))
            x = self.layer2(self.layer1(x))
            return self.fc(self.global_pool(x).flatten(1))

    return ResNet()


def param_groups_weight_decay(model, weight_decay=1e-5, no_weight_decay_list=()):
    no_weight_decay_list = set(no_weight_decay_list)
    decay = []
    no_decay = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name in no_weight_decay_list:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {'params': no_decay, 'weight_decay': 0.},
        {'params': decay, 'weight_decay': weight_decay}]


def data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
