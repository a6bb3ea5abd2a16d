# ruff: noqa: F841, UP008, UP032  (the programs are kept as their authors write them)
"""pytorch/examples' mnist/main.py and mnist_hogwild/train.py, two of the programs session 9's probe
(tests/test_programs_probe9_examples_*.py) left out, each kept as written with sizes shrunk and run as
tests/probe31_examples_common.py says: mnist (Net with dropout, ``nll_loss``, Adadelta, StepLR, the test loop's
``argmax``/``eq``/``view_as``); mnist_hogwild's train/test epochs single-process after ``share_memory()``. Both agreed
with PyTorch when written (session 31)."""

from types import SimpleNamespace

import numpy as np
import pytest

from .probe31_examples_common import SAME_DROPOUT
from .pytorch_programs import run_both


# ---------------------------------------------------------------- mnist/main.py
def mnist(m, epochs=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    StepLR = optim.lr_scheduler.StepLR
    torch.manual_seed(1)

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.conv2 = nn.Conv2d(4, 8, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(72, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    log, losses = [], []

    def train(args, model, device, train_loader, optimizer, epoch):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                log.append('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                    epoch, batch_idx * len(data), len(train_loader.dataset),
                    100. * batch_idx / len(train_loader), loss.item()))
                losses.append(loss.item())  # the printed loss, unrounded, for comparison

    def test(model, device, test_loader):
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
                pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
                correct += pred.eq(target.view_as(pred)).sum().item()
        test_loss /= len(test_loader.dataset)
        return test_loss, correct

    g = torch.Generator().manual_seed(0)
    images = torch.rand(48, 1, 10, 10, generator=g)
    labels = torch.randint(0, 10, (48,), generator=g)
    dataset = m.data.TensorDataset(images, labels)
    train_loader = m.data.DataLoader(dataset, batch_size=16, shuffle=False)
    test_loader = m.data.DataLoader(dataset, batch_size=32)
    args = SimpleNamespace(log_interval=1, lr=1.0, gamma=0.7)
    device = torch.device("cpu")
    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    results = []
    for epoch in range(1, epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        results.append(test(model, device, test_loader))
        scheduler.step()
    return [line.rsplit(" ", 1)[0] for line in log], losses, results, optimizer.param_groups[0]["lr"], model.fc2.weight


def test_mnist():
    log, losses, results, lr, weight = run_both(mnist, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert len(log) == 6 and log[1] == "Train Epoch: 1 [16/48 (33%)]\tLoss:" and len(losses) == 6
    assert lr == pytest.approx(0.49) and all(0 <= c <= 48 for _, c in results) and weight.shape == (10, 16)


# ---------------------------------------------------------------- mnist_hogwild/train.py (one process)
def hogwild(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(1)

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, kernel_size=3)
            self.conv2 = nn.Conv2d(4, 6, kernel_size=3)
            self.conv2_drop = nn.Dropout2d()
            self.fc1 = nn.Linear(6, 12)
            self.fc2 = nn.Linear(12, 10)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = x.view(-1, 6)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, training=self.training)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)

    losses = []

    def train_epoch(epoch, args, model, device, data_loader, optimizer):
        model.train()
        pid = 0
        for batch_idx, (data, target) in enumerate(data_loader):
            optimizer.zero_grad()
            output = model(data.to(device))
            loss = F.nll_loss(output.to(device), target.to(device))
            loss.backward()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                losses.append(loss.item())

    def test_epoch(model, device, data_loader):
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in data_loader:
                output = model(data.to(device))
                test_loss += F.nll_loss(output, target.to(device), reduction='sum').item()  # sum up batch loss
                pred = output.max(1)[1]  # get the index of the max log-probability
                correct += pred.eq(target.to(device)).sum().item()
        test_loss /= len(data_loader.dataset)
        return test_loss, correct

    model = Net()
    model.share_memory()  # gradients are allocated lazily, so they are not shared here
    g = torch.Generator().manual_seed(3)
    dataset = m.data.TensorDataset(torch.randn(40, 1, 10, 10, generator=g), torch.randint(0, 10, (40,), generator=g))
    args = SimpleNamespace(seed=1, log_interval=1, lr=0.01, momentum=0.5, epochs=2)
    torch.manual_seed(args.seed + 0)
    train_loader = m.data.DataLoader(dataset, batch_size=8, shuffle=True)
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    for epoch in range(1, args.epochs + 1):
        train_epoch(epoch, args, model, "cpu", train_loader, optimizer)
    return losses, test_epoch(model, "cpu", m.data.DataLoader(dataset, batch_size=10))


def test_mnist_hogwild_one_process():
    losses, (test_loss, correct) = run_both(hogwild, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert len(losses) == 10 and np.isfinite(losses).all() and test_loss > 0 and 0 <= correct <= 40

