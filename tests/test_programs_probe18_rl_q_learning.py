# ruff: noqa: B007, E501, E702, F841, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: Q-learning: a double DQN fed from a NumPy
sum-tree prioritised replay with importance weights and ``smooth_l1_loss(reduction='none')``; Munchausen DQN; PopArt
(a ``@torch.no_grad()`` method rescaling ``weight.data``, Parameters reassigned); R2D2 (LSTM burn-in from stored
states, value rescaling h and h^-1, n-step double-Q targets over padded sequences)."""

import copy
import math

import numpy as np
import pytest

from .probe18_rl_common import replay_batch
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Prioritised experience replay: a sum tree in NumPy, importance weights into a double DQN's loss
# ----------------------------------------------------------------------------------------------


class SumTree:
    write = 0

    def __init__(self, capacity):
        self.capacity = capacity
        self.tree = np.zeros(2 * capacity - 1)
        self.data = np.zeros(capacity, dtype=object)
        self.n_entries = 0

    def _propagate(self, idx, change):
        parent = (idx - 1) // 2
        self.tree[parent] += change
        if parent != 0:
            self._propagate(parent, change)

    def _retrieve(self, idx, s):
        left = 2 * idx + 1
        right = left + 1
        if left >= len(self.tree):
            return idx
        if s <= self.tree[left]:
            return self._retrieve(left, s)
        else:
            return self._retrieve(right, s - self.tree[left])

    def total(self):
        return self.tree[0]

    def add(self, p, data):
        idx = self.write + self.capacity - 1
        self.data[self.write] = data
        self.update(idx, p)
        self.write += 1
        if self.write >= self.capacity:
            self.write = 0
        if self.n_entries < self.capacity:
            self.n_entries += 1

    def update(self, idx, p):
        change = p - self.tree[idx]
        self.tree[idx] = p
        self._propagate(idx, change)

    def get(self, s):
        idx = self._retrieve(0, s)
        dataIdx = idx - self.capacity + 1
        return (idx, self.tree[idx], self.data[dataIdx])


class PrioritizedReplay:
    e, a, beta, beta_increment_per_sampling = 0.01, 0.6, 0.4, 0.1

    def __init__(self, capacity, seed):
        self.tree = SumTree(capacity)
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)

    def _get_priority(self, error):
        return (np.abs(error) + self.e) ** self.a

    def add(self, error, sample):
        self.tree.add(self._get_priority(error), sample)

    def sample(self, n):
        batch, idxs, priorities = [], [], []
        segment = self.tree.total() / n
        self.beta = np.min([1., self.beta + self.beta_increment_per_sampling])
        for i in range(n):
            a, b = segment * i, segment * (i + 1)
            s = self.rng.uniform(a, b)
            (idx, p, data) = self.tree.get(s)
            priorities.append(p); batch.append(data); idxs.append(idx)
        sampling_probabilities = np.array(priorities) / self.tree.total()
        is_weight = np.power(self.tree.n_entries * sampling_probabilities, -self.beta)
        is_weight /= is_weight.max()
        return batch, idxs, is_weight

    def update(self, idx, error):
        self.tree.update(idx, self._get_priority(error))


def make_dqn(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def per_double_dqn(m, weights, updates=4, gamma=0.99, batch_size=16):
    torch, F = m.torch, m.F
    q_net = load(m, make_dqn(m), weights)
    target_net = copy.deepcopy(q_net)
    optimizer = m.optim.Adam(q_net.parameters(), lr=1e-3)
    memory = PrioritizedReplay(64, seed=0)
    obs, act, rew, nxt, done = replay_batch(40, n=64)
    for i in range(64):
        memory.add(1.0 + i % 5, (obs[i], act[i, 0], rew[i, 0], nxt[i], done[i, 0]))
    history = []
    for step in range(updates):
        mini_batch, idxs, is_weights = memory.sample(batch_size)
        mini_batch = np.array(mini_batch, dtype=object).transpose()
        states = torch.from_numpy(np.vstack(mini_batch[0]))
        actions = torch.LongTensor(list(mini_batch[1]))
        rewards = torch.FloatTensor(list(mini_batch[2]))
        next_states = torch.from_numpy(np.vstack(mini_batch[3]))
        dones = torch.FloatTensor(list(mini_batch[4].astype(int)))
        pred = q_net(states).gather(1, actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_actions = q_net(next_states).argmax(dim=1, keepdim=True)
            next_q = target_net(next_states).gather(1, next_actions).squeeze(1)
            target = rewards + (1 - dones) * gamma * next_q
        errors = torch.abs(pred - target).data.numpy()
        for i in range(batch_size):
            memory.update(idxs[i], errors[i])
        loss = (torch.FloatTensor(is_weights) * F.smooth_l1_loss(pred, target, reduction="none")).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss, errors.copy(), np.array(idxs), is_weights.astype(np.float32)))
        if step % 2 == 1:
            target_net.load_state_dict(q_net.state_dict())
    return history, memory.tree.tree.copy(), q_net.state_dict()


def test_prioritized_replay_double_dqn():
    ours, _ = run_both(per_double_dqn, weights_of(make_dqn), rtol=1e-4, atol=1e-5)
    tree = ours[1]
    assert tree[0] == pytest.approx(tree[-64:].sum())  # the root holds the total priority
    for loss, errors, idxs, w in ours[0]:
        assert w.max() == pytest.approx(1.0) and np.all(w > 0)


# ----------------------------------------------------------------------------------------------
# R2D2: a recurrent Q network with stored LSTM states, burn-in, value rescaling h / h^-1 and n-step
# double-Q targets over padded sequences; NGU's episodic novelty by k nearest neighbours
# ----------------------------------------------------------------------------------------------


def value_rescale(torch, x, eps=1e-3):
    return torch.sign(x) * (torch.sqrt(torch.abs(x) + 1) - 1) + eps * x


def inverse_value_rescale(torch, x, eps=1e-3):
    return torch.sign(x) * (((torch.sqrt(1 + 4 * eps * (torch.abs(x) + 1 + eps)) - 1) / (2 * eps)) ** 2 - 1)


def make_r2d2(m, obs_dim=4, hidden=16, n_actions=3):
    torch, nn = m.torch, m.nn

    class R2D2Network(nn.Module):
        def __init__(self):
            super().__init__()
            self.feature = nn.Sequential(nn.Linear(obs_dim + n_actions + 1, hidden), nn.ReLU())
            self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
            self.adv = nn.Linear(hidden, n_actions)
            self.val = nn.Linear(hidden, 1)
            self.n_actions = n_actions

        def forward(self, obs, last_action, last_reward, hidden=None):
            x = torch.cat([obs, torch.nn.functional.one_hot(last_action, self.n_actions).float(), last_reward.unsqueeze(-1)], dim=-1)
            x = self.feature(x)
            x, hidden = self.lstm(x, hidden)
            adv, val = self.adv(x), self.val(x)
            q = val + adv - adv.mean(-1, keepdim=True)
            return q, hidden

    return R2D2Network()


def r2d2(m, weights, steps=3, burn_in=3, learning=6, n_step=2, gamma=0.997, B=4):
    torch, F = m.torch, m.F
    online = load(m, make_r2d2(m), weights)
    target = copy.deepcopy(online)
    optimizer = torch.optim.Adam(online.parameters(), lr=1e-3, eps=1e-3)
    seq_len = burn_in + learning + n_step
    log = []
    for step in range(steps):
        rng = np.random.default_rng(200 + step)
        obs = torch.from_numpy(rng.standard_normal((B, seq_len, 4)).astype(np.float32))
        actions = torch.from_numpy(rng.integers(0, 3, (B, seq_len)))
        last_action = torch.cat([torch.zeros(B, 1, dtype=torch.long), actions[:, :-1]], dim=1)
        rewards = torch.from_numpy(rng.standard_normal((B, seq_len)).astype(np.float32))
        last_reward = torch.cat([torch.zeros(B, 1), rewards[:, :-1]], dim=1)
        lengths = torch.from_numpy(rng.integers(burn_in + 2, seq_len + 1, B))
        mask = (torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)).float()
        h0 = torch.from_numpy(rng.standard_normal((1, B, 16)).astype(np.float32)) * 0.1
        c0 = torch.from_numpy(rng.standard_normal((1, B, 16)).astype(np.float32)) * 0.1
        priorities_weight = torch.from_numpy(rng.uniform(0.5, 1, B).astype(np.float32))
        # burn-in: unroll from the stored state without gradients
        with torch.no_grad():
            _, online_hidden = online(obs[:, :burn_in], last_action[:, :burn_in], last_reward[:, :burn_in], (h0, c0))
            _, target_hidden = target(obs[:, :burn_in], last_action[:, :burn_in], last_reward[:, :burn_in], (h0, c0))
        q, _ = online(obs[:, burn_in:], last_action[:, burn_in:], last_reward[:, burn_in:], online_hidden)
        with torch.no_grad():
            target_q, _ = target(obs[:, burn_in:], last_action[:, burn_in:], last_reward[:, burn_in:], target_hidden)
            greedy = q.detach().argmax(-1, keepdim=True)
            double_q = target_q.gather(-1, greedy).squeeze(-1)
            # n-step returns over the learning window, bootstrapped with h^-1 / h
            r = rewards[:, burn_in:]
            discounts = gamma ** torch.arange(n_step, dtype=torch.float32)
            n_step_reward = torch.stack([(r[:, t:t + n_step] * discounts).sum(-1) for t in range(learning)], dim=1)
            bootstrap = inverse_value_rescale(torch, double_q[:, n_step:n_step + learning])
            target_value = value_rescale(torch, n_step_reward + gamma ** n_step * bootstrap)
        chosen_q = q[:, :learning].gather(-1, actions[:, burn_in:burn_in + learning].unsqueeze(-1)).squeeze(-1)
        learn_mask = mask[:, burn_in + n_step:burn_in + n_step + learning]
        td_error = (chosen_q - target_value) * learn_mask
        loss = 0.5 * (td_error.pow(2).sum(-1) / learn_mask.sum(-1).clamp(min=1) * priorities_weight).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(online.parameters(), 40.0)
        optimizer.step()
        abs_td = td_error.detach().abs()
        new_priorities = 0.9 * abs_td.max(dim=1).values + 0.1 * abs_td.sum(1) / learn_mask.sum(1).clamp(min=1)
        log.append([loss, new_priorities, online.lstm.weight_hh_l0.grad.clone()])
        if step == 1:
            target.load_state_dict(online.state_dict())
    return log, online.state_dict()


def test_r2d2_burn_in_and_value_rescaling():
    run_both(r2d2, weights_of(make_r2d2), rtol=1e-4, atol=1e-6)
    torch = OURS.torch
    x = torch.tensor([-1000.0, -3.0, -0.5, 0.0, 0.25, 7.0, 12345.0], dtype=torch.float64)
    np.testing.assert_allclose(inverse_value_rescale(torch, value_rescale(torch, x)).numpy(), x.numpy(), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# Munchausen DQN (log-policy bonus, clamped), PopArt's output-preserving rescaling of the value head, DIAYN's skill
# discriminator reward, and the World Models MDN-RNN's mixture log-likelihood
# ----------------------------------------------------------------------------------------------


def munchausen_dqn(m, weights, updates=3, gamma=0.99, entropy_tau=0.03, alpha=0.9, lo=-1.0):
    torch, F = m.torch, m.F
    qnetwork_local = load(m, make_dqn(m), weights)
    qnetwork_target = copy.deepcopy(qnetwork_local)
    optimizer = torch.optim.Adam(qnetwork_local.parameters(), lr=1e-3)
    log = []
    for step in range(updates):
        states, actions, rewards, next_states, dones = (torch.from_numpy(a) for a in replay_batch(500 + step))
        Q_targets_next = qnetwork_target(next_states).detach()
        # calculate entropy term with logsum
        logsum = torch.logsumexp((Q_targets_next - Q_targets_next.max(1)[0].unsqueeze(-1)) / entropy_tau, 1).unsqueeze(-1)
        tau_log_pi_next = Q_targets_next - Q_targets_next.max(1)[0].unsqueeze(-1) - entropy_tau * logsum
        # target policy
        pi_target = F.softmax(Q_targets_next / entropy_tau, dim=1)
        Q_target = (gamma * (pi_target * (Q_targets_next - tau_log_pi_next) * (1 - dones)).sum(1)).unsqueeze(-1)
        # calculate munchausen addon with logsum trick
        q_k_targets = qnetwork_target(states).detach()
        v_k_target = q_k_targets.max(1)[0].unsqueeze(-1)
        logsum = torch.logsumexp((q_k_targets - v_k_target) / entropy_tau, 1).unsqueeze(-1)
        log_pi = q_k_targets - v_k_target - entropy_tau * logsum
        munchausen_addon = log_pi.gather(1, actions)
        # calc munchausen reward:
        munchausen_reward = (rewards + alpha * torch.clamp(munchausen_addon, min=lo, max=0))
        # Compute Q targets for current states
        Q_targets = munchausen_reward + Q_target
        # Get expected Q values from local model
        q_k = qnetwork_local(states)
        Q_expected = q_k.gather(1, actions)
        # Compute loss
        loss = F.mse_loss(Q_expected, Q_targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(qnetwork_local.parameters(), 1)
        optimizer.step()
        for target_param, local_param in zip(qnetwork_target.parameters(), qnetwork_local.parameters()):
            target_param.data.copy_(1e-2 * local_param.data + (1.0 - 1e-2) * target_param.data)
        log.append([loss, munchausen_addon, tau_log_pi_next])
    return log, qnetwork_local.state_dict()


def test_munchausen_dqn():
    ours, _ = run_both(munchausen_dqn, weights_of(make_dqn), rtol=1e-4, atol=1e-5)
    assert np.all(ours[0][0][1] <= 1e-6)  # log-policies are at most 0


def popart(m, beta=0.3):
    torch, nn, F = m.torch, m.nn, m.F

    class PopArt(nn.Module):
        def __init__(self, input_shape, output_shape, norm_axes=1, beta=0.99999, epsilon=1e-5):
            super(PopArt, self).__init__()
            self.beta, self.epsilon, self.norm_axes = beta, epsilon, norm_axes
            self.input_shape, self.output_shape = input_shape, output_shape
            self.weight = nn.Parameter(torch.Tensor(output_shape, input_shape))
            self.bias = nn.Parameter(torch.Tensor(output_shape))
            self.stddev = nn.Parameter(torch.ones(output_shape), requires_grad=False)
            self.mean = nn.Parameter(torch.zeros(output_shape), requires_grad=False)
            self.mean_sq = nn.Parameter(torch.zeros(output_shape), requires_grad=False)
            self.debiasing_term = nn.Parameter(torch.tensor(0.0), requires_grad=False)
            self.reset_parameters()

        def reset_parameters(self):
            torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(self.weight)
                bound = 1 / math.sqrt(fan_in)
                torch.nn.init.uniform_(self.bias, -bound, bound)
            self.mean.zero_()
            self.mean_sq.zero_()
            self.debiasing_term.zero_()

        def forward(self, input_vector):
            return F.linear(input_vector, self.weight, self.bias)

        @torch.no_grad()
        def update(self, input_vector):
            old_mean, old_var = self.debiased_mean_var()
            old_stddev = torch.sqrt(old_var)
            batch_mean = input_vector.mean(dim=tuple(range(self.norm_axes)))
            batch_sq_mean = (input_vector ** 2).mean(dim=tuple(range(self.norm_axes)))
            self.mean.mul_(self.beta).add_(batch_mean * (1.0 - self.beta))
            self.mean_sq.mul_(self.beta).add_(batch_sq_mean * (1.0 - self.beta))
            self.debiasing_term.mul_(self.beta).add_(1.0 * (1.0 - self.beta))
            self.stddev = nn.Parameter((self.mean_sq - self.mean ** 2).sqrt().clamp(min=1e-4), requires_grad=False)
            new_mean, new_var = self.debiased_mean_var()
            new_stddev = torch.sqrt(new_var)
            self.weight.data = self.weight.data * old_stddev.unsqueeze(-1) / new_stddev.unsqueeze(-1)
            self.bias.data = (old_stddev * self.bias.data + old_mean - new_mean) / new_stddev

        def debiased_mean_var(self):
            debiased_mean = self.mean / self.debiasing_term.clamp(min=self.epsilon)
            debiased_mean_sq = self.mean_sq / self.debiasing_term.clamp(min=self.epsilon)
            debiased_var = (debiased_mean_sq - debiased_mean ** 2).clamp(min=1e-2)
            return debiased_mean, debiased_var

        def normalize(self, input_vector):
            mean, var = self.debiased_mean_var()
            return (input_vector - mean[(None,) * self.norm_axes]) / torch.sqrt(var)[(None,) * self.norm_axes]

        def denormalize(self, input_vector):
            mean, var = self.debiased_mean_var()
            return input_vector * torch.sqrt(var)[(None,) * self.norm_axes] + mean[(None,) * self.norm_axes]

    torch.manual_seed(0)
    head = PopArt(6, 2, beta=beta)
    optimizer = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(16, 6)
    log = []
    for step in range(4):
        returns = torch.randn(16, 2) * (10.0 * (step + 1)) + 50.0
        head.update(returns)
        # the unnormalised prediction is preserved by the update
        before = head.denormalize(head(x))
        normalized_returns = head.normalize(returns)
        value_loss = F.mse_loss(head(x), normalized_returns)
        optimizer.zero_grad()
        value_loss.backward()
        optimizer.step()
        log.append([value_loss, before, head.debiasing_term.clone(), head.stddev.clone()])
    preserved = []
    with torch.no_grad():
        before = head.denormalize(head(x))
        head.update(torch.randn(16, 2) * 100.0)
        after = head.denormalize(head(x))
    return log, before, after, head.state_dict(), len(list(head.parameters()))


def test_popart():
    ours, _ = run_both(popart, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours[2], ours[1], rtol=1e-4, atol=1e-3)  # outputs preserved across the update
    assert ours[4] == 6
