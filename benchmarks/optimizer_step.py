"""The optimizer step alone: optim.Adam (and the others) on the 784-256-128-10 MLP's
parameters, beside the hand-written NumPy Adam of the MLP benchmark (the same
update) and torch.optim.Adam when installed. Fresh state for every timed run."""

import numpy as np
from mlp_step import Adam, initial_weights
from timing import best_time_fresh, optional, table

import autograd
import optim


def gradients(weights, seed=2):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(w.shape).astype(np.float32) * 1e-2 for w in weights]


def ours(name="Adam", **options):
    def make():
        weights = initial_weights()
        params = [autograd.Tensor(w, requires_grad=True) for w in weights]
        for p, g in zip(params, gradients(weights)):
            p.grad = autograd.Tensor(g)
        return getattr(optim, name)(params, lr=1e-3, **options).step

    return make


def by_hand():
    weights = initial_weights()
    grads = gradients(weights)
    adam = Adam(weights)
    return lambda: adam.step(weights, grads)


def theirs(torch):
    def make():
        weights = initial_weights()
        params = [torch.tensor(w, requires_grad=True) for w in weights]
        for p, g in zip(params, gradients(weights)):
            p.grad = torch.tensor(g)
        return torch.optim.Adam(params, lr=1e-3, foreach=False).step

    return make


def run():
    makers = {"optim.Adam": ours(), "optim.Adam(fused=True)": ours(fused=True), "NumPy Adam by hand": by_hand,
              "optim.SGD (momentum)": ours("SGD", momentum=0.9),
              "optim.RMSprop": ours("RMSprop"), "optim.Adagrad": ours("Adagrad"), "optim.Adadelta": ours("Adadelta")}
    torch = optional("torch")
    if torch is not None:
        makers["torch.optim.Adam"] = theirs(torch)
    times = {name: float("inf") for name in makers}
    for _ in range(5):
        for name, make in makers.items():
            times[name] = min(times[name], best_time_fresh(make, steps=20, repeat=2))
    return times


def report():
    return table("(e) optimizer step, MLP 784-256-128-10 parameters (235k), float32, ms per step",
                 run(), reference="NumPy Adam by hand")


if __name__ == "__main__":
    print(report())
