# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: models of the environment: a batched
cart-pole written in torch, differentiated through its rollout (analytic policy gradients with ``torch.where``
resets); the World Models MDN-RNN (mixture log-likelihood by hand against ``MixtureSameFamily``); PlaNet's CEM
(``topk`` with flattened index offsets, ``std(unbiased=False)``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A batched cart-pole in torch (Brax / Isaac Gym style), differentiated through the rollout
# ----------------------------------------------------------------------------------------------


class TorchCartPole:
    """gym's CartPole dynamics on a batch of environments held as one tensor, auto-resetting done ones."""

    def __init__(self, torch, num_envs, generator):
        self.torch, self.num_envs, self.generator = torch, num_envs, generator
        self.gravity, self.masscart, self.masspole, self.length, self.tau = 9.8, 1.0, 0.1, 0.5, 0.02
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length
        self.theta_threshold_radians = 12 * 2 * math.pi / 360
        self.x_threshold = 2.4

    def reset(self):
        self.state = (torch_uniform := self.torch.rand(self.num_envs, 4, generator=self.generator)) * 0.1 - 0.05
        self.steps = self.torch.zeros(self.num_envs, dtype=self.torch.long)
        return self.state

    def step(self, force):
        torch = self.torch
        x, x_dot, theta, theta_dot = self.state.unbind(dim=1)
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot ** 2 * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta ** 2 / self.total_mass))
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        next_state = torch.stack([x, x_dot, theta, theta_dot], dim=1)
        self.steps += 1
        terminated = (x.abs() > self.x_threshold) | (theta.abs() > self.theta_threshold_radians)
        truncated = self.steps >= 25
        done = terminated | truncated
        reward = torch.ones_like(x) - 10 * theta ** 2 - x ** 2
        reward = torch.where(terminated, torch.zeros_like(reward), reward)
        fresh = torch.rand(self.num_envs, 4, generator=self.generator) * 0.1 - 0.05
        self.state = torch.where(done.unsqueeze(1), fresh, next_state)
        self.steps = torch.where(done, torch.zeros_like(self.steps), self.steps)
        return self.state, reward, done


def make_apg_policy(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1), nn.Tanh())


def analytic_policy_gradient(m, weights, iterations=3, horizon=40, num_envs=8, gamma=0.99):
    torch = m.torch
    generator = torch.Generator().manual_seed(3)
    policy = load(m, make_apg_policy(m), weights)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    env = TorchCartPole(torch, num_envs, generator)
    obs = env.reset()
    log = []
    for it in range(iterations):
        total, discount, dones = 0.0, 1.0, 0
        for t in range(horizon):
            force = 10.0 * policy(obs).squeeze(-1)
            obs, reward, done = env.step(force)
            total = total + discount * reward
            discount *= gamma
            dones += int(done.sum())
        loss = -total.mean() / horizon
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        obs = obs.detach()  # truncate the gradient between iterations
        env.state = env.state.detach()
        log.append([loss, grad_norm, dones, obs])
    return log, policy.state_dict()


def test_batched_torch_cartpole_analytic_policy_gradient():
    ours, _ = run_both(analytic_policy_gradient, weights_of(make_apg_policy), rtol=1e-4, atol=1e-5)
    assert sum(row[2] for row in ours[0]) > 0  # some environments were reset inside the differentiated rollout


def make_planet_model(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4 + 2, 16), nn.Tanh(), nn.Linear(16, 4 + 1))


def planet_cem(m, weights, horizon=5, optimisation_iters=4, candidates=32, top_candidates=6, action_size=2, min_action=-1.0, max_action=1.0):
    torch = m.torch
    torch.manual_seed(0)
    model = load(m, make_planet_model(m), weights)
    state = torch.tensor([[0.1, -0.2, 0.3, 0.05], [0.0, 0.5, -0.5, 0.2]])
    B, H, Z = state.size(0), 4, horizon
    state = state.unsqueeze(dim=1).expand(B, candidates, H).reshape(-1, H)
    # Initialize factorized belief over action sequences q(a_t:t+H) ~ N(0, I)
    action_mean, action_std_dev = torch.zeros(horizon, B, 1, action_size), torch.ones(horizon, B, 1, action_size)
    returns_log = []
    for _ in range(optimisation_iters):
        # Evaluate J action sequences from the current belief (over entire sequence at once, batched over particles)
        actions = (action_mean + action_std_dev * torch.randn(horizon, B, candidates, action_size)).view(horizon, B * candidates, action_size)
        actions.clamp_(min=min_action, max=max_action)
        # Sample next states
        s, returns = state, torch.zeros(B * candidates)
        with torch.no_grad():
            for t in range(horizon):
                out = model(torch.cat([s, actions[t]], dim=1))
                s, r = s + 0.1 * out[:, :H], out[:, H]
                returns = returns + r
        # Re-fit belief to the K best action sequences
        _, topk = returns.reshape(B, candidates).topk(top_candidates, dim=1, largest=True, sorted=False)
        topk += candidates * torch.arange(0, B, dtype=torch.int64).unsqueeze(dim=1)  # Fix indices for unrolled actions
        best_actions = actions[:, topk.view(-1)].reshape(horizon, B, top_candidates, action_size)
        # Update belief with new means and standard deviations
        action_mean, action_std_dev = best_actions.mean(dim=2, keepdim=True), best_actions.std(dim=2, unbiased=False, keepdim=True)
        returns_log.append(returns.reshape(B, candidates).topk(top_candidates, dim=1).values)
    # Return first action mean µ_t
    return action_mean[0].squeeze(dim=1), action_std_dev, returns_log


def test_planet_cem():
    ours, _ = run_both(planet_cem, weights_of(make_planet_model), rtol=1e-4, atol=1e-6)
    assert ours[0].shape == (2, 2) and np.all(np.abs(ours[0]) <= 1)


def make_mdnrnn(m, latents=4, actions=2, hiddens=16, gaussians=3):
    nn = m.nn

    class MDRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.latents, self.actions, self.hiddens, self.gaussians = latents, actions, hiddens, gaussians
            self.gmm_linear = nn.Linear(hiddens, (2 * latents + 1) * gaussians + 2)
            self.rnn = nn.LSTM(latents + actions, hiddens)

        def forward(self, actions, latents):
            seq_len, bs = actions.size(0), actions.size(1)
            ins = m.torch.cat([actions, latents], dim=-1)
            outs, _ = self.rnn(ins)
            gmm_outs = self.gmm_linear(outs)
            stride = self.gaussians * self.latents
            mus = gmm_outs[:, :, :stride]
            mus = mus.view(seq_len, bs, self.gaussians, self.latents)
            sigmas = gmm_outs[:, :, stride:2 * stride]
            sigmas = sigmas.view(seq_len, bs, self.gaussians, self.latents)
            sigmas = m.torch.exp(sigmas)
            pi = gmm_outs[:, :, 2 * stride: 2 * stride + self.gaussians]
            pi = pi.view(seq_len, bs, self.gaussians)
            logpi = m.F.log_softmax(pi, dim=-1)
            rs = gmm_outs[:, :, -2]
            ds = gmm_outs[:, :, -1]
            return mus, sigmas, logpi, rs, ds

    return MDRNN()


def mdnrnn(m, weights, steps=3):
    torch, F = m.torch, m.F
    Normal = torch.distributions.Normal

    def gmm_loss(batch, mus, sigmas, logpi, reduce=True):
        batch = batch.unsqueeze(-2)
        normal_dist = Normal(mus, sigmas)
        g_log_probs = normal_dist.log_prob(batch)
        g_log_probs = logpi + torch.sum(g_log_probs, dim=-1)
        max_log_probs = torch.max(g_log_probs, dim=-1, keepdim=True)[0]
        g_log_probs = g_log_probs - max_log_probs
        g_probs = torch.exp(g_log_probs)
        probs = torch.sum(g_probs, dim=-1)
        log_prob = max_log_probs.squeeze() + torch.log(probs)
        if reduce:
            return - torch.mean(log_prob)
        return - log_prob

    mdrnn = load(m, make_mdnrnn(m), weights)
    optimizer = torch.optim.RMSprop(mdrnn.parameters(), lr=1e-3, alpha=.9)
    log = []
    for step in range(steps):
        rng = np.random.default_rng(700 + step)
        latent_obs = torch.from_numpy(rng.standard_normal((5, 3, 4)).astype(np.float32))
        action = torch.from_numpy(rng.uniform(-1, 1, (5, 3, 2)).astype(np.float32))
        reward = torch.from_numpy(rng.standard_normal((5, 3)).astype(np.float32))
        terminal = torch.from_numpy((rng.uniform(size=(5, 3)) < 0.2).astype(np.float32))
        latent_next_obs = torch.from_numpy(rng.standard_normal((5, 3, 4)).astype(np.float32))
        mus, sigmas, logpi, rs, ds = mdrnn(action, latent_obs)
        gmm = gmm_loss(latent_next_obs, mus, sigmas, logpi)
        bce = F.binary_cross_entropy_with_logits(ds, terminal)
        mse = F.mse_loss(rs, reward)
        scale = 4 + 2
        loss = (gmm + bce + mse) / scale
        # the same mixture likelihood by MixtureSameFamily
        mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logpi),
                                                   torch.distributions.Independent(Normal(mus, sigmas), 1))
        by_mixture = -mix.log_prob(latent_next_obs).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append([gmm, by_mixture, bce, mse])
    return log, mdrnn.state_dict()


def test_world_models_mdnrnn():
    ours, _ = run_both(mdnrnn, weights_of(make_mdnrnn), rtol=1e-4, atol=1e-5)
    for gmm, by_mixture, *_ in ours[0]:
        assert gmm == pytest.approx(by_mixture, rel=1e-5)
