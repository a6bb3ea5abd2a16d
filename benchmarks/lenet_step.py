"""(f) One SGD training step of a small LeNet on 1x28x28 images, float32:

    conv 1→8 3x3 pad 1, ReLU, max-pool 2, conv 8→16 3x3 pad 1, ReLU, max-pool 2, linear 784→10, cross-entropy

written with chainrule's nn modules and optim.SGD, beside the same step written by hand in NumPy (im2col,
one GEMM per layer, activations kept channel-first (C, N, H, W) so no layer transposes its output) and,
when installed, PyTorch on the CPU with two threads. Ratios are medians over interleaved rounds.

On a busy machine, run it with OPENBLAS_NUM_THREADS=1: BLAS threads that wait for a core cost far more
than they give on these small products, and they make the timings noise.
"""

import statistics
import time

import numpy as np
from numpy.lib.stride_tricks import as_strided
from timing import best_time_fresh, grouped_table, optional

import autograd

LR = 0.01
SHAPES = {"conv1.weight": (8, 1, 3, 3), "conv1.bias": (8,), "conv2.weight": (16, 8, 3, 3), "conv2.bias": (16,),
          "fc.weight": (10, 784), "fc.bias": (10,)}


def initial_weights(seed=0):
    """PyTorch's default bounds, 1/√fan_in, for every weight and bias."""
    rng = np.random.default_rng(seed)
    fan_in = {"conv1": 9, "conv2": 72, "fc": 784}
    return {name: rng.uniform(-1, 1, shape).astype(np.float32) / np.float32(np.sqrt(fan_in[name.split(".")[0]]))
            for name, shape in SHAPES.items()}


def batch(size, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((size, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, size)


def chainrule_step(weights, x, y):
    import nn
    import optim

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
            self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(784, 10)

        def forward(self, x):
            x = self.pool(self.conv1(x).relu())
            x = self.pool(self.conv2(x).relu())
            return self.fc(x.flatten(1))

    model = LeNet()
    model.load_state_dict({name: autograd.Tensor(w.copy()) for name, w in weights.items()})
    optimizer = optim.SGD(model.parameters(), lr=LR)
    inputs, targets, criterion = autograd.Tensor(x), autograd.as_tensor(y), nn.CrossEntropyLoss()

    def step():
        loss = criterion(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


# -- the same step by hand in NumPy -------------------------------------------------------------------


def columns(x):
    """im2col of x (C, N, H, W) for a 3x3 kernel, stride 1, padding 1: (C·9, N·H·W), one copy."""
    c, n, h, w = x.shape
    padded = np.zeros((c, n, h + 2, w + 2), dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    sc, sn, sh, sw = padded.strides
    view = as_strided(padded, (c, 3, 3, n, h, w), (sc, sh, sw, sn, sh, sw))
    return view.reshape(c * 9, n * h * w)


def add_columns(cols, shape):
    """col2im, the adjoint of columns(): (C·9, N·H·W) summed back into (C, N, H, W), one add per offset."""
    c, n, h, w = shape
    padded = np.zeros((c, n, h + 2, w + 2), dtype=cols.dtype)
    cols = cols.reshape(c, 3, 3, n, h, w)
    for p in range(3):
        for q in range(3):
            padded[:, :, p:p + h, q:q + w] += cols[:, p, q]
    return padded[:, :, 1:-1, 1:-1]


def relu_pool(z):
    """ReLU then 2x2 max-pool of (C, N, H, W), as the maximum of the four strided corners of each block."""
    corners = [z[:, :, p::2, q::2] for p in (0, 1) for q in (0, 1)]
    pooled = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
    np.maximum(pooled, 0, out=pooled)
    return pooled


def unpool(grad, z, pooled):
    """The gradient of relu_pool: to the corner equal to the (positive) maximum. After ReLU a tie is a zero,
    whose gradient is zero anyway; ties of positive floats are left aside."""
    dz = np.empty_like(z)
    live = grad * (pooled > 0)
    for p in (0, 1):
        for q in (0, 1):
            np.multiply(live, z[:, :, p::2, q::2] == pooled, out=dz[:, :, p::2, q::2])
    return dz


def numpy_step(weights, x, y):
    params = {name: w.copy() for name, w in weights.items()}
    rows = np.arange(len(y))
    images = np.ascontiguousarray(x.transpose(1, 0, 2, 3))  # (C, N, H, W) throughout

    def step():
        w1, b1 = params["conv1.weight"].reshape(8, 9), params["conv1.bias"]
        w2, b2 = params["conv2.weight"].reshape(16, 72), params["conv2.bias"]
        wf, bf = params["fc.weight"], params["fc.bias"]
        n = images.shape[1]
        cols1 = columns(images)
        z1 = (w1 @ cols1 + b1[:, None]).reshape(8, n, 28, 28)
        h1 = relu_pool(z1)
        cols2 = columns(h1)
        z2 = (w2 @ cols2 + b2[:, None]).reshape(16, n, 14, 14)
        h2 = relu_pool(z2)
        flat = h2.transpose(1, 0, 2, 3).reshape(n, 784)
        logits = flat @ wf.T + bf
        shifted = logits - logits.max(1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        loss = -log_probs[rows, y].mean()
        d_logits = np.exp(log_probs)
        d_logits[rows, y] -= 1
        d_logits /= n
        d_flat = d_logits @ wf
        d_z2 = unpool(d_flat.reshape(n, 16, 7, 7).transpose(1, 0, 2, 3), z2, h2).reshape(16, -1)
        d_h1 = add_columns(w2.T @ d_z2, h1.shape)
        d_z1 = unpool(d_h1, z1, h1).reshape(8, -1)
        grads = {"conv1.weight": d_z1 @ cols1.T, "conv1.bias": d_z1.sum(1), "conv2.weight": d_z2 @ cols2.T,
                 "conv2.bias": d_z2.sum(1), "fc.weight": d_logits.T @ flat, "fc.bias": d_logits.sum(0)}
        for name, p in params.items():
            p -= LR * grads[name].reshape(p.shape)
        return loss

    return step


def torch_step(torch, weights, x, y):
    class LeNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Conv2d(8, 16, 3, padding=1)
            self.pool, self.fc = torch.nn.MaxPool2d(2), torch.nn.Linear(784, 10)

        def forward(self, x):
            x = self.pool(self.conv1(x).relu())
            x = self.pool(self.conv2(x).relu())
            return self.fc(x.flatten(1))

    model = LeNet()
    model.load_state_dict({name: torch.tensor(w) for name, w in weights.items()})
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, foreach=False)
    inputs, targets = torch.tensor(x), torch.tensor(y)

    def step():
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def run(batch_sizes=(32, 128), rounds=7):
    weights = initial_weights()
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(2)
    results = {}
    for size in batch_sizes:
        x, y = batch(size)
        makers = {"chainrule": lambda x=x, y=y: chainrule_step(weights, x, y),
                  "NumPy by hand": lambda x=x, y=y: numpy_step(weights, x, y)}
        if torch is not None:
            makers["PyTorch"] = lambda x=x, y=y: torch_step(torch, weights, x, y)
        times = {name: [] for name in makers}
        names = list(makers)
        for round_ in range(rounds):  # interleaved rounds: a noisy moment hits everyone alike
            # The order turns each round, and each run is followed by a pause: PyTorch's OpenMP threads
            # spin for a while after a step, and must not slow whichever step comes next.
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                times[name].append(best_time_fresh(makers[name], steps=10, repeat=1))
                time.sleep(0.3)
        results[size] = {name: statistics.median(seconds) for name, seconds in times.items()}
    return results


def check_same_loss(size=16, steps=3):
    """The chainrule, NumPy (and PyTorch) steps compute the same thing: equal losses step by step."""
    weights = initial_weights()
    x, y = batch(size)
    steps_to_check = [chainrule_step(weights, x, y), numpy_step(weights, x, y)]
    torch = optional("torch")
    if torch is not None:
        steps_to_check.append(torch_step(torch, weights, x, y))
    for _ in range(steps):
        losses = [float(step().item()) for step in steps_to_check]
        np.testing.assert_allclose(losses, losses[1], rtol=1e-4)


def report():
    check_same_loss()
    return grouped_table("(f) LeNet training step (conv-pool-conv-pool-linear, SGD), float32, ms per step "
                         "(medians of interleaved rounds)", run(), reference="NumPy by hand")


if __name__ == "__main__":
    print(report())
