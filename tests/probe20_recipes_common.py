"""What the files of session 20's probe of PyTorch's recipes (tests/test_programs_probe20_recipes_*.py: saving and
loading, the meta device and autograd mechanics, training recipes, the profiler and the tuning guide) share:
``make_net``, the recipes' small conv net, and ``net_data``, its seeded images and labels."""

import numpy as np


def make_net(m):
    nn, F = m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.pool = nn.MaxPool2d(2, 2)
            self.fc1 = nn.Linear(4 * 3 * 3, 16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = x.flatten(1)
            x = F.relu(self.fc1(x))
            return self.fc2(x)

    return Net()


def net_data():
    rng = np.random.default_rng(1)
    return rng.standard_normal((12, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 12)
