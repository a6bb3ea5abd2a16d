"""The demo's convolutional network for the 8x8 digits (``chainrule demo --model cnn``)."""

import nn


class DigitsCNN(nn.Module):
    """conv 1→16 3x3, ReLU, max-pool 2, conv 16→32 3x3, ReLU, max-pool 2, linear 128→classes, on 8x8 images."""

    def __init__(self, classes):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(32 * 2 * 2, classes)

    def forward(self, x):
        x = self.pool(self.conv1(x.reshape(-1, 1, 8, 8)).relu())
        x = self.pool(self.conv2(x).relu())
        return self.fc(x.flatten(1))
