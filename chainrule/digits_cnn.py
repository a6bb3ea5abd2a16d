"""The demo's convolutional network for the 8x8 digits (``chainrule demo --model cnn``)."""

import nn


class DigitsCNN(nn.Module):
    """conv 1→8 3x3, ReLU, max-pool 2, conv 8→16 3x3, ReLU, linear 256→classes, on 8x8 images.
    (Small on purpose: its matrix products stay below the size where BLAS starts threads, which on a
    busy two-core machine cost more than they give.)"""

    def __init__(self, classes):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(16 * 4 * 4, classes)  # 8x8 pooled to 4x4

    def forward(self, x):
        x = self.pool(self.conv1(x.reshape(-1, 1, 8, 8)).relu())
        return self.fc(self.conv2(x).relu().flatten(1))
