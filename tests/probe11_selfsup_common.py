"""What the files of session 11's self-supervised and metric-learning probe
(tests/test_programs_probe11_selfsup_*.py, one family of methods each) share: the images and the small backbones the
self-supervised methods train, and the embedder and data of the metric-learning losses.

The programs are written as their reference repositories write them (see tests/pytorch_programs.py), each trained a
few steps from the same weights on synthetic data on chainrule and on PyTorch, comparing losses, gradients,
parameters and buffers (SimCLR's NT-Xent, Khosla's SupCon and matmul batch-hard mining are in
test_programs_probe6_losses.py)."""

import numpy as np


def images(m, n=8, side=12, seed=0):
    rng = np.random.default_rng(seed)
    return m.torch.tensor(rng.standard_normal((n, 3, side, side)).astype(np.float32))


def backbone(m, num_classes=10):
    """A small ResNet-like stand-in: its pooled features feed a ``fc`` that self-supervised methods replace."""
    nn = m.nn

    class Net(nn.Module):
        def __init__(self, num_classes=num_classes):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.avgpool(x)
            x = m.torch.flatten(x, 1)
            return self.fc(x)

    return Net()


def embedder(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 16), nn.PReLU(), nn.Linear(16, 8, bias=False), nn.BatchNorm1d(8))


def face_data(m, n=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((5, 6)).astype(np.float32) * 2
    labels = np.arange(n) % 5
    x = centres[labels] + 0.7 * rng.standard_normal((n, 6)).astype(np.float32)
    return m.torch.tensor(x), m.torch.tensor(labels)
