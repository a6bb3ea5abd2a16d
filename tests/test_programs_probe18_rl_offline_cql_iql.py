# ruff: noqa: E501  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: offline RL from CORL: CQL
(``new_empty().uniform_``, policy samples repeated by ``repeat_interleave``, ``logsumexp`` over sampled actions, a
Lagrange ``log_alpha_prime``), IQL (expectile loss, ``MultivariateNormal(scale_tril=torch.diag(std))``,
advantage-weighted regression clamped, ``CosineAnnealingLR``)."""

import copy

import numpy as np
import pytest

from .probe18_rl_common import replay_batch
from .pytorch_programs import load, run_both, weights_of


def mlp(nn, sizes, activation=None):
    activation = activation or nn.ReLU
    layers = []
    for j in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[j], sizes[j + 1])]
        if j < len(sizes) - 2:
            layers += [activation()]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------
# CORL: CQL (continuous, with a Lagrange multiplier), IQL, TD3+BC, AWAC, EDAC
# ----------------------------------------------------------------------------------------------


def extend_and_repeat(tensor, dim, repeat):
    return tensor.unsqueeze(dim).repeat_interleave(repeat, dim=dim)


def make_cql(m, obs_dim=4, action_dim=2, hidden=16):
    torch, nn = m.torch, m.nn
    D = torch.distributions

    class ReparameterizedTanhGaussian(nn.Module):
        def __init__(self, log_std_min=-20.0, log_std_max=2.0, no_tanh=False):
            super().__init__()
            self.log_std_min, self.log_std_max, self.no_tanh = log_std_min, log_std_max, no_tanh

        def log_prob(self, mean, log_std, sample):
            log_std = torch.clamp(log_std, self.log_std_min, self.log_std_max)
            std = torch.exp(log_std)
            action_distribution = D.TransformedDistribution(D.Normal(mean, std), D.TanhTransform(cache_size=1))
            return torch.sum(action_distribution.log_prob(sample), dim=-1)

        def forward(self, mean, log_std, deterministic=False):
            log_std = torch.clamp(log_std, self.log_std_min, self.log_std_max)
            std = torch.exp(log_std)
            action_distribution = D.TransformedDistribution(D.Normal(mean, std), D.TanhTransform(cache_size=1))
            if deterministic:
                action_sample = torch.tanh(mean)
            else:
                action_sample = action_distribution.rsample()
            log_prob = torch.sum(action_distribution.log_prob(action_sample), dim=-1)
            return action_sample, log_prob

    class TanhGaussianPolicy(nn.Module):
        def __init__(self, max_action=1.0, log_std_multiplier=1.0, log_std_offset=-1.0):
            super().__init__()
            self.max_action = max_action
            self.base_network = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * action_dim))
            self.log_std_multiplier = Scalar(log_std_multiplier)
            self.log_std_offset = Scalar(log_std_offset)
            self.tanh_gaussian = ReparameterizedTanhGaussian()

        def log_prob(self, observations, actions):
            if actions.ndim == 3:
                observations = extend_and_repeat(observations, 1, actions.shape[1])
            base_network_output = self.base_network(observations)
            mean, log_std = torch.split(base_network_output, action_dim, dim=-1)
            log_std = self.log_std_multiplier() * log_std + self.log_std_offset()
            return self.tanh_gaussian.log_prob(mean, log_std, actions)

        def forward(self, observations, deterministic=False, repeat=None):
            if repeat is not None:
                observations = extend_and_repeat(observations, 1, repeat)
            base_network_output = self.base_network(observations)
            mean, log_std = torch.split(base_network_output, action_dim, dim=-1)
            log_std = self.log_std_multiplier() * log_std + self.log_std_offset()
            actions, log_probs = self.tanh_gaussian(mean, log_std, deterministic)
            return self.max_action * actions, log_probs

    class FullyConnectedQFunction(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = nn.Sequential(nn.Linear(obs_dim + action_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, observations, actions):
            multiple_actions = False
            batch_size = observations.shape[0]
            if actions.ndim == 3 and observations.ndim == 2:
                multiple_actions = True
                observations = extend_and_repeat(observations, 1, actions.shape[1]).reshape(-1, observations.shape[-1])
                actions = actions.reshape(-1, actions.shape[-1])
            input_tensor = torch.cat([observations, actions], dim=-1)
            q_values = torch.squeeze(self.network(input_tensor), dim=-1)
            if multiple_actions:
                q_values = q_values.reshape(batch_size, -1)
            return q_values

    class Scalar(nn.Module):
        def __init__(self, init_value):
            super().__init__()
            self.constant = nn.Parameter(torch.tensor(init_value, dtype=torch.float32))

        def forward(self):
            return self.constant

    class CQLNets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor = TanhGaussianPolicy()
            self.critic_1, self.critic_2 = FullyConnectedQFunction(), FullyConnectedQFunction()
            self.log_alpha = Scalar(0.0)
            self.log_alpha_prime = Scalar(1.0)

    return CQLNets()


def cql(m, weights, updates=3, cql_n_actions=4, discount=0.99, cql_temp=1.0, cql_alpha=5.0,
        cql_target_action_gap=-1.0, soft_target_update_rate=5e-3, target_entropy=-2.0):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    nets = load(m, make_cql(m), weights)
    actor, critic_1, critic_2 = nets.actor, nets.critic_1, nets.critic_2
    target_critic_1, target_critic_2 = copy.deepcopy(critic_1), copy.deepcopy(critic_2)
    actor_optimizer = torch.optim.Adam(actor.parameters(), 3e-4)
    critic_1_optimizer = torch.optim.Adam(list(critic_1.parameters()), 3e-4)
    critic_2_optimizer = torch.optim.Adam(list(critic_2.parameters()), 3e-4)
    alpha_optimizer = torch.optim.Adam(nets.log_alpha.parameters(), lr=3e-4)
    alpha_prime_optimizer = torch.optim.Adam(nets.log_alpha_prime.parameters(), lr=3e-4)
    log = []
    for step in range(updates):
        observations, actions, rewards, next_observations, dones = (torch.tensor(a) for a in replay_batch(50 + step, act_dim=2))
        rewards, dones = rewards.squeeze(-1), dones.squeeze(-1)
        new_actions, log_pi = actor(observations)
        log_alpha = nets.log_alpha()
        alpha_loss = -(log_alpha * (log_pi + target_entropy).detach()).mean()
        alpha = log_alpha.exp() * 1.0
        q_new_actions = torch.min(critic_1(observations, new_actions), critic_2(observations, new_actions))
        policy_loss = (alpha * log_pi - q_new_actions).mean()

        q1_predicted = critic_1(observations, actions)
        q2_predicted = critic_2(observations, actions)
        new_next_actions, next_log_pi = actor(next_observations)
        target_q_values = torch.min(target_critic_1(next_observations, new_next_actions),
                                    target_critic_2(next_observations, new_next_actions))
        target_q_values = target_q_values - alpha * next_log_pi
        target_q_values = target_q_values.unsqueeze(-1)
        td_target = rewards.unsqueeze(-1) + (1.0 - dones.unsqueeze(-1)) * discount * target_q_values.detach()
        td_target = td_target.squeeze(-1)
        qf1_loss = F.mse_loss(q1_predicted, td_target.detach())
        qf2_loss = F.mse_loss(q2_predicted, td_target.detach())

        batch_size, action_dim = actions.shape[0], actions.shape[-1]
        cql_random_actions = actions.new_empty((batch_size, cql_n_actions, action_dim), requires_grad=False).uniform_(-1, 1)
        cql_current_actions, cql_current_log_pis = actor(observations, repeat=cql_n_actions)
        cql_next_actions, cql_next_log_pis = actor(next_observations, repeat=cql_n_actions)
        cql_current_actions, cql_current_log_pis = cql_current_actions.detach(), cql_current_log_pis.detach()
        cql_next_actions, cql_next_log_pis = cql_next_actions.detach(), cql_next_log_pis.detach()
        cql_q1_rand = critic_1(observations, cql_random_actions)
        cql_q2_rand = critic_2(observations, cql_random_actions)
        cql_q1_current_actions = critic_1(observations, cql_current_actions)
        cql_q2_current_actions = critic_2(observations, cql_current_actions)
        cql_q1_next_actions = critic_1(observations, cql_next_actions)
        cql_q2_next_actions = critic_2(observations, cql_next_actions)
        random_density = np.log(0.5 ** action_dim)
        cql_cat_q1 = torch.cat([cql_q1_rand - random_density, cql_q1_next_actions - cql_next_log_pis.detach(),
                                cql_q1_current_actions - cql_current_log_pis.detach()], dim=1)
        cql_cat_q2 = torch.cat([cql_q2_rand - random_density, cql_q2_next_actions - cql_next_log_pis.detach(),
                                cql_q2_current_actions - cql_current_log_pis.detach()], dim=1)
        cql_qf1_ood = torch.logsumexp(cql_cat_q1 / cql_temp, dim=1) * cql_temp
        cql_qf2_ood = torch.logsumexp(cql_cat_q2 / cql_temp, dim=1) * cql_temp
        cql_qf1_diff = torch.clamp(cql_qf1_ood - q1_predicted, -np.inf, np.inf).mean()
        cql_qf2_diff = torch.clamp(cql_qf2_ood - q2_predicted, -np.inf, np.inf).mean()
        alpha_prime = torch.clamp(torch.exp(nets.log_alpha_prime()), min=0.0, max=1000000.0)
        cql_min_qf1_loss = alpha_prime * cql_alpha * (cql_qf1_diff - cql_target_action_gap)
        cql_min_qf2_loss = alpha_prime * cql_alpha * (cql_qf2_diff - cql_target_action_gap)
        alpha_prime_optimizer.zero_grad()
        alpha_prime_loss = (-cql_min_qf1_loss - cql_min_qf2_loss) * 0.5
        alpha_prime_loss.backward(retain_graph=True)
        alpha_prime_optimizer.step()
        qf_loss = qf1_loss + qf2_loss + cql_min_qf1_loss + cql_min_qf2_loss

        alpha_optimizer.zero_grad()
        alpha_loss.backward()
        alpha_optimizer.step()
        actor_optimizer.zero_grad()
        policy_loss.backward()
        actor_optimizer.step()
        critic_1_optimizer.zero_grad()
        critic_2_optimizer.zero_grad()
        qf_loss.backward(retain_graph=True)
        critic_1_optimizer.step()
        critic_2_optimizer.step()
        with torch.no_grad():
            for target, source in ((target_critic_1, critic_1), (target_critic_2, critic_2)):
                for target_param, source_param in zip(target.parameters(), source.parameters()):
                    target_param.data.copy_((1 - soft_target_update_rate) * target_param.data + soft_target_update_rate * source_param.data)
        log.append([policy_loss, qf1_loss, cql_qf1_ood, cql_min_qf1_loss, alpha_prime_loss, alpha_loss, cql_cat_q1])
    with torch.no_grad():
        test_actions = torch.tensor(replay_batch(60, act_dim=2)[1])
        log_prob = actor.log_prob(observations, test_actions)
        repeated = actor.log_prob(observations, test_actions[:, None, :].repeat(1, 3, 1))
    return log, nets.state_dict(), target_critic_1.state_dict(), log_prob, repeated


def test_corl_cql():
    ours, _ = run_both(cql, weights_of(make_cql), rtol=2e-4, atol=2e-5)
    log_prob, repeated = ours[3], ours[4]
    np.testing.assert_allclose(repeated, np.repeat(log_prob[:, None], 3, 1), rtol=1e-6)


def make_iql(m, state_dim=4, act_dim=2, hidden=16):
    torch, nn = m.torch, m.nn
    from_dist = torch.distributions

    class TwinQ(nn.Module):
        def __init__(self):
            super().__init__()
            self.q1 = mlp(nn, [state_dim + act_dim, hidden, hidden, 1])
            self.q2 = mlp(nn, [state_dim + act_dim, hidden, hidden, 1])

        def both(self, state, action):
            sa = torch.cat([state, action], 1)
            return self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)

        def forward(self, state, action):
            return torch.min(*self.both(state, action))

    class ValueFunction(nn.Module):
        def __init__(self):
            super().__init__()
            self.v = mlp(nn, [state_dim, hidden, hidden, 1])

        def forward(self, state):
            return self.v(state).squeeze(-1)

    class GaussianPolicy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(nn, [state_dim, hidden, act_dim])
            self.log_std = nn.Parameter(torch.zeros(act_dim, dtype=torch.float32))

        def forward(self, obs):
            mean = torch.tanh(self.net(obs))
            std = torch.exp(self.log_std.clamp(-5.0, 2.0))
            scale_tril = torch.diag(std)
            return from_dist.MultivariateNormal(mean, scale_tril=scale_tril)

    class IQLNets(nn.Module):
        def __init__(self):
            super().__init__()
            self.qf, self.vf, self.actor = TwinQ(), ValueFunction(), GaussianPolicy()

    return IQLNets()


def asymmetric_l2_loss(torch, u, tau):
    return torch.mean(torch.abs(tau - (u < 0).float()) * u ** 2)


def iql(m, weights, updates=4, iql_tau=0.7, beta=3.0, discount=0.99, tau=0.005, EXP_ADV_MAX=100.0):
    torch, F = m.torch, m.F
    nets = load(m, make_iql(m), weights)
    qf, vf, actor = nets.qf, nets.vf, nets.actor
    q_target = copy.deepcopy(qf).requires_grad_(False)
    v_optimizer = torch.optim.Adam(vf.parameters(), lr=3e-3)
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=3e-3)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=3e-3)
    actor_lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(actor_optimizer, updates)
    log = []
    for step in range(updates):
        observations, actions, rewards, next_observations, dones = (torch.tensor(a) for a in replay_batch(70 + step, act_dim=2))
        rewards, dones = rewards.squeeze(dim=-1), dones.squeeze(dim=-1)
        with torch.no_grad():
            next_v = vf(next_observations)
        # value
        with torch.no_grad():
            target_q = q_target(observations, actions)
        v = vf(observations)
        adv = target_q - v
        v_loss = asymmetric_l2_loss(torch, adv, iql_tau)
        v_optimizer.zero_grad()
        v_loss.backward()
        v_optimizer.step()
        # q
        targets = rewards + (1.0 - dones.float()) * discount * next_v.detach()
        qs = qf.both(observations, actions)
        q_loss = sum(F.mse_loss(q, targets) for q in qs) / len(qs)
        q_optimizer.zero_grad()
        q_loss.backward()
        q_optimizer.step()
        for target_param, source_param in zip(q_target.parameters(), qf.parameters()):
            target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)
        # policy
        exp_adv = torch.exp(beta * adv.detach()).clamp(max=EXP_ADV_MAX)
        policy_out = actor(observations)
        if isinstance(policy_out, torch.distributions.Distribution):
            bc_losses = -policy_out.log_prob(actions)
        elif torch.is_tensor(policy_out):
            bc_losses = torch.sum((policy_out - actions) ** 2, dim=1)
        policy_loss = torch.mean(exp_adv * bc_losses)
        actor_optimizer.zero_grad()
        policy_loss.backward()
        actor_optimizer.step()
        actor_lr_schedule.step()
        log.append([v_loss, q_loss, policy_loss, exp_adv, actor_optimizer.param_groups[0]["lr"]])
    return log, nets.state_dict(), q_target.state_dict()


def test_corl_iql():
    ours, _ = run_both(iql, weights_of(make_iql), rtol=1e-4, atol=1e-5)
    assert ours[0][-1][-1] == pytest.approx(0.0, abs=1e-12)
