# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""What the files of session 14's continuous-control probe (tests/test_programs_probe14_control_*.py, one family of
methods each) share: a pendulum written in NumPy (no gym), a replay of its transitions, and the parameters' values.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and the
same seeds (both libraries draw the same numbers from ``manual_seed``), on that pendulum."""

import numpy as np


class Pendulum:
    """gym's Pendulum-v1 dynamics in NumPy: observation (cos, sin, thetadot), one action in [-2, 2]."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self):
        self.th, self.thdot = self.rng.uniform(-np.pi, np.pi), self.rng.uniform(-1, 1)
        self.steps = 0
        return self.obs()

    def obs(self):
        return np.array([np.cos(self.th), np.sin(self.th), self.thdot], dtype=np.float32)

    def step(self, u):
        u = float(np.clip(u, -2.0, 2.0))
        th_norm = ((self.th + np.pi) % (2 * np.pi)) - np.pi
        cost = th_norm ** 2 + 0.1 * self.thdot ** 2 + 0.001 * u ** 2
        self.thdot = np.clip(self.thdot + (3 * 10.0 / 2 * np.sin(self.th) + 3.0 * u) * 0.05, -8, 8)
        self.th = self.th + self.thdot * 0.05
        self.steps += 1
        return self.obs(), -cost, self.steps >= 20


def replay(seed, n=64):
    """A replay buffer of pendulum transitions under random actions."""
    env, rng = Pendulum(seed), np.random.default_rng(seed + 1)
    obs, o = [], env.reset()
    rows = []
    for _ in range(n):
        a = rng.uniform(-2, 2, 1).astype(np.float32)
        o2, r, done = env.step(a[0])
        rows.append((o, a, np.float32(r), o2, np.float32(done)))
        o = env.reset() if done else o2
    return [np.stack(col).astype(np.float32) for col in zip(*rows)]


def params(module):
    return [p.detach().clone() for p in module.parameters()]
