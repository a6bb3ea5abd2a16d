# ruff: noqa: B007, E501, F841, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: offline RL from CORL: TD3+BC (``lmbda =
alpha / Q.abs().mean().detach()``, Polyak by ``torch._foreach_mul_`` / ``_foreach_add_``), AWAC (``clamp_max``) and
EDAC (``VectorizedLinear`` ensembles, a diversity loss from ``autograd.grad(create_graph=True)`` of Q with respect to
actions)."""

import copy
import math

import numpy as np

from .probe18_rl_common import replay_batch
from .pytorch_programs import load, run_both, weights_of


def make_td3_bc(m, state_dim=4, action_dim=2, max_action=1.0):
    torch, nn, F = m.torch, m.nn, m.F

    class Actor(nn.Module):
        def __init__(self):
            super(Actor, self).__init__()
            self.l1 = nn.Linear(state_dim, 16)
            self.l2 = nn.Linear(16, 16)
            self.l3 = nn.Linear(16, action_dim)
            self.max_action = max_action

        def forward(self, state):
            a = F.relu(self.l1(state))
            a = F.relu(self.l2(a))
            return self.max_action * torch.tanh(self.l3(a))

    class Critic(nn.Module):
        def __init__(self):
            super(Critic, self).__init__()
            self.l1 = nn.Linear(state_dim + action_dim, 16)
            self.l2 = nn.Linear(16, 1)
            self.l4 = nn.Linear(state_dim + action_dim, 16)
            self.l5 = nn.Linear(16, 1)

        def forward(self, state, action):
            sa = torch.cat([state, action], 1)
            q1 = self.l2(F.relu(self.l1(sa)))
            q2 = self.l5(F.relu(self.l4(sa)))
            return q1, q2

        def Q1(self, state, action):
            sa = torch.cat([state, action], 1)
            return self.l2(F.relu(self.l1(sa)))

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor, self.critic = Actor(), Critic()

    return Nets()


def td3_bc(m, weights, iterations=6, discount=0.99, tau=0.005, policy_noise=0.2, noise_clip=0.5, policy_freq=2,
           alpha=2.5, max_action=1.0):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    nets = load(m, make_td3_bc(m), weights)
    actor, critic = nets.actor, nets.critic
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=3e-4)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=3e-4)
    states, actions, rewards, next_states, dones = replay_batch(80, n=64, act_dim=2)
    mean, std = states.mean(0, keepdims=True), states.std(0, keepdims=True) + 1e-3
    states, next_states = (states - mean) / std, (next_states - mean) / std
    rng = np.random.default_rng(0)
    log = []
    for total_it in range(1, iterations + 1):
        ind = rng.integers(0, 64, size=16)
        state, action, next_state = torch.FloatTensor(states[ind]), torch.FloatTensor(actions[ind]), torch.FloatTensor(next_states[ind])
        reward, not_done = torch.FloatTensor(rewards[ind]), torch.FloatTensor(1. - dones[ind])
        with torch.no_grad():
            noise = (torch.randn_like(action) * policy_noise).clamp(-noise_clip, noise_clip)
            next_action = (actor_target(next_state) + noise).clamp(-max_action, max_action)
            target_Q1, target_Q2 = critic_target(next_state, next_action)
            target_Q = torch.min(target_Q1, target_Q2)
            target_Q = reward + not_done * discount * target_Q
        current_Q1, current_Q2 = critic(state, action)
        critic_loss = F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q)
        critic_optimizer.zero_grad()
        critic_loss.backward()
        critic_optimizer.step()
        log.append(critic_loss)
        if total_it % policy_freq == 0:
            pi = actor(state)
            Q = critic.Q1(state, pi)
            lmbda = alpha / Q.abs().mean().detach()
            actor_loss = -lmbda * Q.mean() + F.mse_loss(pi, action)
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()
            log.append(actor_loss)
            with torch.no_grad():
                for net, target in ((critic, critic_target), (actor, actor_target)):
                    target_params, params = list(target.parameters()), list(net.parameters())
                    torch._foreach_mul_(target_params, 1 - tau)
                    torch._foreach_add_(target_params, params, alpha=tau)
    return log, nets.state_dict(), actor_target.state_dict(), critic_target.state_dict()


def test_td3_bc():
    ours, _ = run_both(td3_bc, weights_of(make_td3_bc), rtol=1e-4, atol=1e-6)
    assert len(ours[0]) == 9


def make_awac(m, state_dim=4, action_dim=2, hidden_dim=16, min_log_std=-20.0, max_log_std=2.0, min_action=-1.0, max_action=1.0):
    torch, nn = m.torch, m.nn

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self._mlp = nn.Sequential(nn.Linear(state_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, action_dim))
            self._log_std = nn.Parameter(torch.zeros(action_dim, dtype=torch.float32))
            self._min_log_std, self._max_log_std = min_log_std, max_log_std
            self._min_action, self._max_action = min_action, max_action

        def _get_policy(self, state):
            mean = self._mlp(state)
            log_std = self._log_std.clamp(self._min_log_std, self._max_log_std)
            policy = torch.distributions.Normal(mean, log_std.exp())
            return policy

        def log_prob(self, state, action):
            policy = self._get_policy(state)
            log_prob = policy.log_prob(action).sum(-1, keepdim=True)
            return log_prob

        def forward(self, state):
            policy = self._get_policy(state)
            action = policy.rsample()
            action.clamp_(self._min_action, self._max_action)
            log_prob = policy.log_prob(action).sum(-1, keepdim=True)
            return action, log_prob

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self._mlp = nn.Sequential(nn.Linear(state_dim + action_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

        def forward(self, state, action):
            return self._mlp(torch.cat([state, action], dim=-1))

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor, self.critic_1, self.critic_2 = Actor(), Critic(), Critic()

    return Nets()


def soft_update(target, source, tau):
    for target_param, source_param in zip(target.parameters(), source.parameters()):
        target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)


def awac(m, weights, updates=3, gamma=0.99, tau=5e-3, awac_lambda=1.0, exp_adv_max=100.0):
    torch, nn = m.torch, m.nn
    torch.manual_seed(1)
    nets = load(m, make_awac(m), weights)
    _actor, _critic_1, _critic_2 = nets.actor, nets.critic_1, nets.critic_2
    _target_critic_1, _target_critic_2 = copy.deepcopy(_critic_1), copy.deepcopy(_critic_2)
    _actor_optimizer = torch.optim.Adam(_actor.parameters(), lr=3e-3)
    _critic_1_optimizer = torch.optim.Adam(_critic_1.parameters(), lr=3e-3)
    _critic_2_optimizer = torch.optim.Adam(_critic_2.parameters(), lr=3e-3)
    log = []
    for step in range(updates):
        states, actions, rewards, next_states, dones = (torch.tensor(a) for a in replay_batch(90 + step, act_dim=2))
        with torch.no_grad():
            next_actions, _ = _actor(next_states)
            q_next = torch.min(_target_critic_1(next_states, next_actions), _target_critic_2(next_states, next_actions))
            q_target = rewards + gamma * (1.0 - dones) * q_next
        q1 = _critic_1(states, actions)
        q2 = _critic_2(states, actions)
        q1_loss = nn.functional.mse_loss(q1, q_target)
        q2_loss = nn.functional.mse_loss(q2, q_target)
        critic_loss = q1_loss + q2_loss
        _critic_1_optimizer.zero_grad()
        _critic_2_optimizer.zero_grad()
        critic_loss.backward()
        _critic_1_optimizer.step()
        _critic_2_optimizer.step()
        with torch.no_grad():
            pi_action, _ = _actor(states)
            v = torch.min(_critic_1(states, pi_action), _critic_2(states, pi_action))
            q = torch.min(_critic_1(states, actions), _critic_2(states, actions))
            adv = q - v
            weights_ = torch.clamp_max(torch.exp(adv / awac_lambda), exp_adv_max)
        action_log_prob = _actor.log_prob(states, actions)
        actor_loss = (-action_log_prob * weights_).mean()
        _actor_optimizer.zero_grad()
        actor_loss.backward()
        _actor_optimizer.step()
        with torch.no_grad():
            soft_update(_target_critic_1, _critic_1, tau)
            soft_update(_target_critic_2, _critic_2, tau)
        log.append([critic_loss, actor_loss, weights_])
    return log, nets.state_dict(), _target_critic_2.state_dict()


def test_corl_awac():
    ours, _ = run_both(awac, weights_of(make_awac), rtol=1e-4, atol=1e-5)
    for critic_loss, actor_loss, weights_ in ours[0]:
        assert np.all(weights_ > 0) and np.all(weights_ <= 100.0) and np.isfinite(actor_loss)


def make_edac(m, state_dim=4, action_dim=2, hidden_dim=16, num_critics=4):
    torch, nn = m.torch, m.nn

    class VectorizedLinear(nn.Module):
        def __init__(self, in_features, out_features, ensemble_size):
            super().__init__()
            self.in_features, self.out_features, self.ensemble_size = in_features, out_features, ensemble_size
            self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
            self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
            self.reset_parameters()

        def reset_parameters(self):
            for layer in range(self.ensemble_size):
                nn.init.kaiming_uniform_(self.weight[layer], a=math.sqrt(5))
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight[0])
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

        def forward(self, x):
            # input: [ensemble_size, batch_size, input_size]
            return x @ self.weight + self.bias

    class VectorizedCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.critic = nn.Sequential(
                VectorizedLinear(state_dim + action_dim, hidden_dim, num_critics), nn.ReLU(),
                VectorizedLinear(hidden_dim, hidden_dim, num_critics), nn.ReLU(),
                VectorizedLinear(hidden_dim, 1, num_critics))
            for layer in self.critic[::2]:
                torch.nn.init.constant_(layer.bias, 0.1)
            torch.nn.init.uniform_(self.critic[-1].weight, -3e-3, 3e-3)
            torch.nn.init.uniform_(self.critic[-1].bias, -3e-3, 3e-3)
            self.num_critics = num_critics

        def forward(self, state, action):
            state_action = torch.cat([state, action], dim=-1)
            if state_action.dim() != 3:
                assert state_action.dim() == 2
                state_action = state_action.unsqueeze(0).repeat_interleave(self.num_critics, dim=0)
            assert state_action.dim() == 3
            assert state_action.shape[0] == self.num_critics
            q_values = self.critic(state_action).squeeze(-1)
            return q_values

    return VectorizedCritic()


def edac(m, weights, updates=3, eta=1.0, gamma=0.99, EPS=1e-8):
    torch, nn = m.torch, m.nn
    critic = load(m, make_edac(m), weights).double()
    target_critic = copy.deepcopy(critic)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    log = []

    def _critic_diversity_loss(state, action):
        num_critics = critic.num_critics
        state = state.unsqueeze(0).repeat_interleave(num_critics, dim=0)
        action = action.unsqueeze(0).repeat_interleave(num_critics, dim=0).requires_grad_(True)
        q_ensemble = critic(state, action)
        q_action_grad = torch.autograd.grad(q_ensemble.sum(), action, retain_graph=True, create_graph=True)[0]
        q_action_grad = q_action_grad / (torch.norm(q_action_grad, p=2, dim=2).unsqueeze(-1) + EPS)
        q_action_grad = q_action_grad.transpose(0, 1)
        masks = torch.eye(num_critics).unsqueeze(dim=0).repeat(q_action_grad.shape[0], 1, 1)
        q_action_grad = q_action_grad @ q_action_grad.permute(0, 2, 1)
        q_action_grad = (1 - masks) * q_action_grad
        grad_loss = q_action_grad.sum(dim=(1, 2)).mean()
        grad_loss = grad_loss / (num_critics - 1)
        return grad_loss

    for step in range(updates):
        state, action, reward, next_state, done = (torch.tensor(a.astype(np.float64)) for a in replay_batch(100 + step, act_dim=2))
        reward, done = reward.squeeze(-1), done.squeeze(-1)
        with torch.no_grad():
            next_action = torch.tanh(next_state[:, :2])
            q_next = target_critic(next_state, next_action).min(0).values
            q_target = reward + gamma * (1 - done) * q_next
        q_values = critic(state, action)
        critic_loss = ((q_values - q_target.view(1, -1)) ** 2).mean(dim=1).sum(dim=0)
        diversity_loss = _critic_diversity_loss(state, action)
        loss = critic_loss + eta * diversity_loss
        critic_optimizer.zero_grad()
        loss.backward()
        critic_optimizer.step()
        with torch.no_grad():
            soft_update(target_critic, critic, 5e-3)
            q_random_std = q_values.std(0).mean().item()
        log.append([critic_loss, diversity_loss, q_random_std, critic.critic[0].weight.grad.clone()])
    return log, critic.state_dict()


def test_corl_edac_diversity_loss():
    # in float64: the diversity loss normalises action gradients, whose float32 rounding the next step amplifies
    ours, _ = run_both(edac, weights_of(make_edac), rtol=1e-9, atol=1e-12)
    assert all(np.isfinite(row[1]) for row in ours[0])
