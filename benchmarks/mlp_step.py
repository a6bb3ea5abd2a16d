"""(b) One training step of an MLP 784-256-128-10 (ReLU, log-softmax cross-entropy,
Adam written by hand on ._data), float32, built from raw Tensor ops, beside the same
step written with nn modules (nn.Linear, nn.ReLU, nn.CrossEntropyLoss), by hand in
NumPy, and, when installed, in PyTorch (same thread count)."""

import numpy as np
from timing import batch_table, best_time_fresh, optional

import autograd

SIZES = (784, 256, 128, 10)
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8


def initial_weights(seed=0):
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        bound = 1 / np.sqrt(fan_in)
        weights.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32))
        weights.append(rng.uniform(-bound, bound, fan_out).astype(np.float32))
    return weights


def batch(size, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((size, SIZES[0])).astype(np.float32), rng.integers(0, 10, size)


class Adam:
    """Adam on plain arrays, shared by the chainrule and NumPy steps (the same update)."""

    def __init__(self, params):
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        b1, b2 = BETAS
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (LR / c1) * m / (np.sqrt(v / c2) + EPS)


def chainrule_step(weights, x, y):
    params = [autograd.Tensor(w.copy(), requires_grad=True) for w in weights]
    adam = Adam([p._data for p in params])
    inputs, rows = autograd.Tensor(x), np.arange(len(y))

    def step():
        w1, b1, w2, b2, w3, b3 = params
        h1 = (inputs @ w1 + b1).relu()
        h2 = (h1 @ w2 + b2).relu()
        logits = h2 @ w3 + b3
        loss = -logits.log_softmax(1)[rows, y].mean()
        for p in params:
            p.grad = None
        loss.backward()
        adam.step([p._data for p in params], [p.grad._data for p in params])
        return loss

    return step


def nn_step(weights, x, y):
    """The same step written with nn modules: nn.Linear holds W as (out, in)."""
    import nn

    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    linears = [model[0], model[2], model[4]]
    with autograd.no_grad():
        for layer, w, b in zip(linears, weights[0::2], weights[1::2]):
            layer.weight.copy_(w.T)
            layer.bias.copy_(b)
    params = list(model.parameters())
    adam = Adam([p._data for p in params])
    inputs, targets, criterion = autograd.Tensor(x), autograd.Tensor(y), nn.CrossEntropyLoss()

    def step():
        loss = criterion(model(inputs), targets)
        model.zero_grad()
        loss.backward()
        adam.step([p._data for p in params], [p.grad._data for p in params])
        return loss

    return step


def numpy_step(weights, x, y):
    params = [w.copy() for w in weights]
    adam = Adam(params)
    rows = np.arange(len(y))

    def step():
        w1, b1, w2, b2, w3, b3 = params
        z1 = x @ w1 + b1
        h1 = np.maximum(z1, 0)
        z2 = h1 @ w2 + b2
        h2 = np.maximum(z2, 0)
        logits = h2 @ w3 + b3
        shifted = logits - logits.max(1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        loss = -log_probs[rows, y].mean()
        d_logits = np.exp(log_probs)
        d_logits[rows, y] -= 1
        d_logits /= len(y)
        d_h2 = d_logits @ w3.T
        d_z2 = d_h2 * (z2 > 0)
        d_h1 = d_z2 @ w2.T
        d_z1 = d_h1 * (z1 > 0)
        grads = [x.T @ d_z1, d_z1.sum(0), h1.T @ d_z2, d_z2.sum(0), h2.T @ d_logits, d_logits.sum(0)]
        adam.step(params, grads)
        return loss

    return step


def torch_step(torch, weights, x, y):
    params = [torch.tensor(w.copy(), requires_grad=True) for w in weights]
    optimizer = torch.optim.Adam(params, lr=LR, betas=BETAS, eps=EPS, foreach=False)
    inputs, targets = torch.tensor(x), torch.tensor(y)

    def step():
        w1, b1, w2, b2, w3, b3 = params
        h1 = (inputs @ w1 + b1).relu()
        h2 = (h1 @ w2 + b2).relu()
        logits = h2 @ w3 + b3
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def run(batch_sizes=(32, 128, 512)):
    weights = initial_weights()
    torch = optional("torch")
    results = {}
    for size in batch_sizes:
        x, y = batch(size)
        makers = {"chainrule": lambda x=x, y=y: chainrule_step(weights, x, y),
                  "chainrule nn": lambda x=x, y=y: nn_step(weights, x, y),
                  "NumPy by hand": lambda x=x, y=y: numpy_step(weights, x, y)}
        if torch is not None:
            makers["PyTorch"] = lambda x=x, y=y: torch_step(torch, weights, x, y)
        times = {name: float("inf") for name in makers}
        for _ in range(10):  # interleaved rounds: a noisy moment hits everyone alike
            for name, make in makers.items():
                times[name] = min(times[name], best_time_fresh(make, steps=20, repeat=3))
        results[size] = {name: seconds * 1e3 for name, seconds in times.items()}
    return results


def check_same_loss(size=64, steps=3):
    """The chainrule and NumPy steps compute the same thing: equal losses step by step."""
    weights = initial_weights()
    x, y = batch(size)
    ours, modules, reference = chainrule_step(weights, x, y), nn_step(weights, x, y), numpy_step(weights, x, y)
    for _ in range(steps):
        expected = float(reference())
        np.testing.assert_allclose(float(ours().item()), expected, rtol=1e-4)
        np.testing.assert_allclose(float(modules().item()), expected, rtol=1e-4)


def report():
    check_same_loss()
    return batch_table("(b) MLP 784-256-128-10 training step (Adam), float32, milliseconds per step",
                       run(), "    (Nx) = chainrule time / that time")


if __name__ == "__main__":
    print(report())
