"""Programs that seed PyTorch's generator and draw everything from it (their data, their layers' initial
weights, their shuffles and their dropout masks), run unchanged on chainrule and on PyTorch: with the same
random numbers, the same training (see autograd/mersenne.py). No weights are carried from one library to
the other. Where PyTorch is not installed, each is checked against values PyTorch gave."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both, same_dropout_masks


def mlp_classifier(m, dropout):
    """The usual first program: seed, random data, an MLP with dropout, a shuffled loader, SGD with momentum."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    x = torch.randn(96, 10)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    loader = m.data.DataLoader(m.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 3))
    optimizer = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(3):
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    return {"losses": losses, "accuracy": accuracy, "weight": model[0].weight}


def test_mlp_without_dropout():
    ours, _ = run_both(mlp_classifier, 0.0, rtol=1e-4, atol=1e-5)
    assert len(ours["losses"]) == 18 and ours["losses"][-1] < ours["losses"][0]
    # PyTorch 2.13's first loss from these seeded weights, data and order
    assert ours["losses"][0] == pytest.approx(1.17618, abs=1e-4) and ours["accuracy"] > 0.8


@pytest.mark.skipif(not same_dropout_masks(), reason="PyTorch's dropout masks are not chainrule's here")
def test_mlp_with_dropout():
    ours, _ = run_both(mlp_classifier, 0.3, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]


def small_cnn(m):
    """A seeded CNN: convolutions, batch norm and Adam, its images drawn by rand."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    images = torch.rand(24, 1, 8, 8)
    labels = torch.randint(0, 4, (24,))
    # (no bias before the batch norm, as usual: it would learn only the rounding noise Adam amplifies)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(6 * 4 * 4, 4))
    optimizer = m.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "conv": model[0].weight, "running_mean": model[1].running_mean}


def test_small_cnn():
    ours, _ = run_both(small_cnn, rtol=1e-4, atol=1e-5)
    assert ours["losses"][0] == pytest.approx(1.41335, abs=1e-4)  # PyTorch 2.13's, from the same draws
    assert all(math.isfinite(v) for v in ours["losses"]) and ours["losses"][-1] < ours["losses"][0]
    assert np.abs(ours["running_mean"]).max() > 0
