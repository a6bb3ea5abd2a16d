"""(b) One training step of an MLP 784-256-128-10 (ReLU, log-softmax cross-entropy, Adam),
float32, at batch 32, 128 and 512:

- "chainrule": raw Tensor ops, Adam written by hand on ._data (the same update as NumPy's);
- "chainrule nn+Adam": nn.Sequential of nn.Linear and nn.ReLU, nn.CrossEntropyLoss, optim.Adam;
- "chainrule nn+Adam(fused)": the same with optim.Adam(fused=True), PyTorch's option for the one-call update;
- "NumPy by hand": forward, backward and Adam written by hand (the floor);
- "PyTorch" when installed, raw ops and torch.optim.Adam, its own thread count.

Then the compute-bound cases, where the matrix products dominate and the engine's cost
should vanish: MLP 784-2048-2048-10 at batch 512 and 784-256-128-10 at batch 2048. And
the peak resident memory of 20 steps at batch 512, each step kind in its own process.
"""

import statistics

import numpy as np
from timing import best_time_fresh, grouped_table, optional, peak_rss

SIZES = (784, 256, 128, 10)
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8


def initial_weights(sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(fan_in)
        weights.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32))
        weights.append(rng.uniform(-bound, bound, fan_out).astype(np.float32))
    return weights


def batch(size, sizes=SIZES, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((size, sizes[0])).astype(np.float32), rng.integers(0, sizes[-1], size)


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
    import autograd  # (here, not at the top: the NumPy and PyTorch rows' peak memory leaves autograd out)

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


def nn_step(weights, x, y, fused=None):
    """The same step written as a PyTorch user would: nn.Sequential, nn.CrossEntropyLoss, optim.Adam.
    nn.Linear holds W as (out, in)."""
    import autograd
    import nn
    import optim

    shapes = [w.shape for w in weights[0::2]]
    layers = []
    for fan_in, fan_out in shapes:
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    with autograd.no_grad():
        for layer, w, b in zip(model[0::2], weights[0::2], weights[1::2]):
            layer.weight.copy_(w.T)
            layer.bias.copy_(b)
    optimizer = optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS, fused=fused)
    inputs, targets, criterion = autograd.Tensor(x), autograd.as_tensor(y), nn.CrossEntropyLoss()

    def step():
        loss = criterion(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
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


STEPS = {"chainrule": chainrule_step, "chainrule nn+Adam": nn_step,
         "chainrule nn+Adam(fused)": lambda *args: nn_step(*args, fused=True), "NumPy by hand": numpy_step}


def makers(sizes, batch_size, torch):
    """{name: a function making a fresh step} for each step kind, on the same weights and batch."""
    weights = initial_weights(sizes)
    x, y = batch(batch_size, sizes)
    kinds = dict(STEPS)
    if torch is not None:
        kinds["PyTorch"] = lambda *args: torch_step(torch, *args)
    return {name: lambda kind=kind: kind(weights, x, y) for name, kind in kinds.items()}


def run(batch_sizes=(32, 128, 512), sizes=SIZES, rounds=7, steps=10, repeat=2):
    """{batch size: {name: seconds per step}}: medians over interleaved rounds, each the best
    of ``repeat`` runs of ``steps`` steps from a fresh start."""
    torch = optional("torch")
    results = {}
    for size in batch_sizes:
        steps_by_name = makers(sizes, size, torch)
        times = {name: [] for name in steps_by_name}
        for _ in range(rounds):  # interleaved rounds: a noisy moment hits everyone alike
            for name, make in steps_by_name.items():
                times[name].append(best_time_fresh(make, steps=steps, repeat=repeat))
        results[size] = {name: statistics.median(seconds) for name, seconds in times.items()}
    return results


def peak_memory(batch_size=512, steps=20):
    """{name: peak resident bytes} of a fresh process running ``steps`` steps of each kind."""
    names = list(STEPS) + (["PyTorch"] if optional("torch") is not None else [])
    # (PyTorch is imported only in its own process: loaded beside the others, its 200 MB would be counted in each)
    code = ("import mlp_step\nfrom timing import optional\n"
            "step = mlp_step.makers(mlp_step.SIZES, {batch}, optional('torch') if {name!r} == 'PyTorch' else None)"
            "[{name!r}]()\n"
            "for _ in range({steps}):\n    step()")
    return {name: peak_rss(code.format(batch=batch_size, name=name, steps=steps)) for name in names}


def check_same_loss(size=64, steps=3):
    """The chainrule and NumPy steps compute the same thing: equal losses step by step."""
    built = makers(SIZES, size, None)
    reference, *ours = (built[name]() for name in reversed(STEPS))
    for _ in range(steps):
        expected = float(reference())
        for step in ours:
            np.testing.assert_allclose(float(step().item()), expected, rtol=1e-4)


def report():
    check_same_loss()
    lines = [grouped_table("(b) MLP 784-256-128-10 training step (Adam), float32, ms per step", run(),
                           reference="NumPy by hand"),
             grouped_table("(b) compute-bound: MLP 784-2048-2048-10, ms per step",
                           run((512,), (784, 2048, 2048, 10), rounds=3, steps=2, repeat=1), reference="NumPy by hand"),
             grouped_table("(b) compute-bound: MLP 784-256-128-10, ms per step",
                           run((2048,), rounds=3, steps=3, repeat=1), reference="NumPy by hand")]
    memory = {"peak RSS": peak_memory()}
    lines.append(grouped_table("(b) MLP 784-256-128-10, 20 steps at batch 512, peak resident memory of the process, MB",
                               memory, reference="NumPy by hand", label="{}", unit="MB", scale=1e-6))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
