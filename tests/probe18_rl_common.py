# ruff: noqa: UP004  (the programs are kept as their authors wrote them)
"""What the files of session 18's reinforcement-learning probe (tests/test_programs_probe18_rl_*.py, one family of
methods each) share: a synthetic replay batch, and RND's running mean and variance, which rl_games' programs use too.

The programs go beyond probe8_reinforcement and probe14_control (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same weights, seeds and synthetic replay data, comparing losses, updated weights
and gradients."""

import numpy as np


def replay_batch(seed, n=32, obs_dim=4, act_dim=None, n_actions=3):
    """A synthetic replay batch: observations, actions (continuous in [-1, 1] where act_dim, else discrete),
    rewards, next observations and dones."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, obs_dim)).astype(np.float32)
    if act_dim:
        act = rng.uniform(-0.95, 0.95, (n, act_dim)).astype(np.float32)
    else:
        act = rng.integers(0, n_actions, (n, 1))
    rew = rng.standard_normal((n, 1)).astype(np.float32)
    nxt = (obs + 0.1 * rng.standard_normal((n, obs_dim))).astype(np.float32)
    done = (rng.uniform(size=(n, 1)) < 0.1).astype(np.float32)
    return obs, act, rew, nxt, done


class RunningMeanStd(object):
    def __init__(self, epsilon=1e-4, shape=()):
        self.mean = np.zeros(shape, 'float64')
        self.var = np.ones(shape, 'float64')
        self.count = epsilon

    def update(self, x):
        batch_mean = np.mean(x, axis=0)
        batch_var = np.var(x, axis=0)
        batch_count = x.shape[0]
        delta = batch_mean - self.mean
        tot_count = self.count + batch_count
        new_mean = self.mean + delta * batch_count / tot_count
        m_a = self.var * (self.count)
        m_b = batch_var * (batch_count)
        M2 = m_a + m_b + np.square(delta) * self.count * batch_count / (self.count + batch_count)
        self.mean, self.var, self.count = new_mean, M2 / (self.count + batch_count), batch_count + self.count
