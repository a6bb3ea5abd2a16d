# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``, ``data``),
run on chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

Karpathy's micrograd: the README's checks and a training loop with p.data updates."""


import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# micrograd: the README's comparisons with PyTorch, and a training loop with p.data updates
# ----------------------------------------------------------------------------------------------

def micrograd_sanity(m):
    torch = m.torch
    x = torch.Tensor([-4.0]).double()
    x.requires_grad = True
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    xpt, ypt = x, y
    return ypt.data.item(), xpt.grad.item()


def micrograd_more_ops(m):
    torch = m.torch
    a = torch.Tensor([-4.0]).double()
    b = torch.Tensor([2.0]).double()
    a.requires_grad = True
    b.requires_grad = True
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + (b + a).relu()
    d = d + 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g = g + 10.0 / f
    g.backward()
    return g.data.item(), a.grad.item(), b.grad.item()


def test_micrograd_readme():
    ours, _ = run_both(micrograd_sanity, rtol=0, atol=0)
    assert ours == (-20.0, 46.0)
    ours, _ = run_both(micrograd_more_ops, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours, (24.70408163265306, 138.83381924198252, 645.5772594752186), rtol=1e-12)


def micrograd_training(m, weights):
    """The micrograd demo's loop on the two-moons-like data, written in PyTorch: max-margin loss + L2."""
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 2)).astype(np.float32)
    y = np.where(X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.3, 1.0, -1.0).astype(np.float32)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    load(m, model, weights)
    Xb, yb = torch.tensor(X), torch.tensor(y)
    history = []
    for k in range(100):
        scores = model(Xb).squeeze(1)
        losses = (1 + -yb * scores).relu()
        data_loss = losses.mean()
        alpha = 1e-4
        reg_loss = alpha * sum((p * p).sum() for p in model.parameters())
        total_loss = data_loss + reg_loss
        accuracy = ((yb > 0) == (scores > 0)).float().mean()
        model.zero_grad()
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            if k % 2:
                p.data -= learning_rate * 0.1 * p.grad
            else:
                p.data += -learning_rate * 0.1 * p.grad
        history.append((total_loss.item(), accuracy.item()))
    return history


def test_micrograd_training():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(2, 16), m.nn.ReLU(), m.nn.Linear(16, 16),
                                                   m.nn.ReLU(), m.nn.Linear(16, 1)))
    ours, _ = run_both(micrograd_training, weights, rtol=1e-3, atol=1e-4)
    assert ours[-1][0] < ours[0][0] / 2 and ours[-1][1] > 0.85
