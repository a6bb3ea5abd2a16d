"""(c) The scalar Value engine on micrograd's own demo workload: an MLP 2-16-16-1 on
100 two-moons points, max-margin loss plus 1e-4 L2, full batch, one training step
(forward, backward, update). The model code is written once and run with either
engine's Value class, so only the engines differ."""

import random

import numpy as np
from timing import best_time, in_subprocess, optional, table

from autograd import Value


def two_moons(n=100, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    half = n // 2
    angles = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(angles[:half]), np.sin(angles[:half])], 1)
    lower = np.stack([1 - np.cos(angles[half:]), 0.5 - np.sin(angles[half:])], 1)
    X = np.concatenate([upper, lower]) + rng.normal(0, noise, (n, 2))
    y = np.concatenate([np.ones(half), -np.ones(n - half)])
    return X, y


def make_model(value, sizes=(2, 16, 16, 1), seed=1):
    """micrograd's MLP (nn.py), for any Value class: a list of layers of (weights, bias)."""
    rnd = random.Random(seed)
    return [[([value(rnd.uniform(-1, 1)) for _ in range(fan_in)], value(0.0)) for _ in range(fan_out)]
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]


def forward(model, x):
    for i, layer in enumerate(model):
        last = i == len(model) - 1
        x = [sum((wi * xi for wi, xi in zip(w, x)), b) for w, b in layer]
        x = x if last else [a.relu() for a in x]
    return x[0]


def parameters(model):
    return [p for layer in model for w, b in layer for p in w + [b]]


def training_step(value, model, X, y):
    """micrograd's demo.ipynb loss and SGD step, word for word."""
    inputs = [list(map(value, row)) for row in X]
    scores = [forward(model, x) for x in inputs]
    losses = [(1 + -yi * si).relu() for yi, si in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = 1e-4 * sum(p * p for p in parameters(model))
    total = data_loss + reg_loss
    for p in parameters(model):
        p.grad = 0.0
    total.backward()
    for p in parameters(model):
        p.data -= 0.1 * p.grad
    return total.data


def run(rounds=4):
    X, y = two_moons()
    X, y = X.tolist(), y.tolist()
    engines = {"chainrule Value": Value}
    micrograd = optional("micrograd.engine")
    if micrograd is not None:
        engines["micrograd Value"] = micrograd.engine.Value
    models = {name: make_model(value) for name, value in engines.items()}
    seconds = {name: float("inf") for name in engines}
    for _ in range(rounds):  # interleaved rounds: a noisy moment hits both engines alike
        for name, value in engines.items():
            step = lambda v=value, m=models[name]: training_step(v, m, X, y)  # noqa: E731
            seconds[name] = min(seconds[name], best_time(step, repeat=1, number=3))
    return seconds


def check_same_loss():
    """Both engines compute the same loss, step after step."""
    micrograd = optional("micrograd.engine")
    if micrograd is None:
        return
    X, y = two_moons()
    ours, theirs = make_model(Value), make_model(micrograd.engine.Value)
    for _ in range(2):
        a = training_step(Value, ours, X.tolist(), y.tolist())
        b = training_step(micrograd.engine.Value, theirs, X.tolist(), y.tolist())
        assert abs(a - b) < 1e-9 * max(1.0, abs(b)), (a, b)


def report():
    """Measured in a fresh process, as micrograd's demo runs: in a process that holds PyTorch and the other
    benchmarks' objects, Python's garbage collector (which runs while a graph is built) costs both engines more."""
    check_same_loss()
    seconds = in_subprocess("import json, value_engine\nprint(json.dumps(value_engine.run()))")
    return table("(c) Value engine, micrograd's demo step (MLP 2-16-16-1, 100 points), ms per step, in a fresh process",
                 seconds, reference="chainrule Value")


if __name__ == "__main__":
    print(report())
