# ruff: noqa: B007, E501, E702, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: actor-critics: IMPALA's V-trace
(torchbeast, under ``@torch.no_grad()``, ``nll_loss`` of flattened logits, RMSprop); cleanRL's discrete SAC
(automatic entropy tuning over action probabilities); rl_games/IsaacGymEnvs idioms (a ``torch.jit.script`` reward, a
RunningMeanStd module with float64 buffers, a disabled ``GradScaler``/``autocast``, ``clamp_min``/``clamp_max`` bound
losses, ``sum(axis=-1)``)."""

from collections import namedtuple

import numpy as np
import pytest

from .probe18_rl_common import replay_batch
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# IMPALA's V-trace (facebookresearch/torchbeast)
# ----------------------------------------------------------------------------------------------


VTraceFromLogitsReturns = namedtuple("VTraceFromLogitsReturns", ["vs", "pg_advantages", "log_rhos", "behavior_action_log_probs", "target_action_log_probs"])
VTraceReturns = namedtuple("VTraceReturns", "vs pg_advantages")


def vtrace_module(torch, F):
    def action_log_probs(policy_logits, actions):
        return -F.nll_loss(
            F.log_softmax(torch.flatten(policy_logits, 0, -2), dim=-1),
            torch.flatten(actions),
            reduction="none",
        ).view_as(actions)

    def from_logits(behavior_policy_logits, target_policy_logits, actions, discounts, rewards, values, bootstrap_value,
                    clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0):
        """V-trace for softmax policies."""
        target_action_log_probs = action_log_probs(target_policy_logits, actions)
        behavior_action_log_probs = action_log_probs(behavior_policy_logits, actions)
        log_rhos = target_action_log_probs - behavior_action_log_probs
        vtrace_returns = from_importance_weights(
            log_rhos=log_rhos, discounts=discounts, rewards=rewards, values=values, bootstrap_value=bootstrap_value,
            clip_rho_threshold=clip_rho_threshold, clip_pg_rho_threshold=clip_pg_rho_threshold)
        return VTraceFromLogitsReturns(log_rhos=log_rhos, behavior_action_log_probs=behavior_action_log_probs,
                                       target_action_log_probs=target_action_log_probs, **vtrace_returns._asdict())

    @torch.no_grad()
    def from_importance_weights(log_rhos, discounts, rewards, values, bootstrap_value, clip_rho_threshold=1.0,
                                clip_pg_rho_threshold=1.0):
        """V-trace from log importance weights."""
        with torch.no_grad():
            rhos = torch.exp(log_rhos)
            if clip_rho_threshold is not None:
                clipped_rhos = torch.clamp(rhos, max=clip_rho_threshold)
            else:
                clipped_rhos = rhos
            cs = torch.clamp(rhos, max=1.0)
            # Append bootstrapped value to get [v1, ..., v_t+1]
            values_t_plus_1 = torch.cat([values[1:], torch.unsqueeze(bootstrap_value, 0)], dim=0)
            deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)
            acc = torch.zeros_like(bootstrap_value)
            result = []
            for t in range(discounts.shape[0] - 1, -1, -1):
                acc = deltas[t] + discounts[t] * cs[t] * acc
                result.append(acc)
            result.reverse()
            vs_minus_v_xs = torch.stack(result)
            # Add V(x_s) to get v_s.
            vs = torch.add(vs_minus_v_xs, values)
            # Advantage for policy gradient.
            broadcasted_bootstrap_values = torch.ones_like(vs[0]) * bootstrap_value
            vs_t_plus_1 = torch.cat([vs[1:], broadcasted_bootstrap_values.unsqueeze(0)], dim=0)
            if clip_pg_rho_threshold is not None:
                clipped_pg_rhos = torch.clamp(rhos, max=clip_pg_rho_threshold)
            else:
                clipped_pg_rhos = rhos
            pg_advantages = clipped_pg_rhos * (rewards + discounts * vs_t_plus_1 - values)
            # Make sure no gradients backpropagated through the returned values.
            return VTraceReturns(vs=vs, pg_advantages=pg_advantages)

    return from_logits, from_importance_weights


def make_impala_net(m, num_actions=4):
    nn, F, torch = m.nn, m.F, m.torch

    class AtariNet(nn.Module):
        def __init__(self):
            super(AtariNet, self).__init__()
            self.num_actions = num_actions
            self.fc = nn.Linear(6, 16)
            core_output_size = self.fc.out_features + num_actions + 1
            self.policy = nn.Linear(core_output_size, self.num_actions)
            self.baseline = nn.Linear(core_output_size, 1)

        def forward(self, inputs):
            x = inputs["frame"]  # [T, B, 6]
            T, B, *_ = x.shape
            x = torch.flatten(x, 0, 1)  # Merge time and batch.
            x = F.relu(self.fc(x))
            one_hot_last_action = F.one_hot(inputs["last_action"].view(T * B), self.num_actions).float()
            clipped_reward = torch.clamp(inputs["reward"], -1, 1).view(T * B, 1)
            core_output = torch.cat([x, clipped_reward, one_hot_last_action], dim=-1)
            policy_logits = self.policy(core_output)
            baseline = self.baseline(core_output)
            if self.training:
                action = torch.multinomial(F.softmax(policy_logits, dim=1), num_samples=1)
            else:
                action = torch.argmax(policy_logits, dim=1)
            policy_logits = policy_logits.view(T, B, self.num_actions)
            baseline = baseline.view(T, B)
            action = action.view(T, B)
            return dict(policy_logits=policy_logits, baseline=baseline, action=action)

    return AtariNet()


def impala_learn(m, weights, steps=3, T=6, B=3, discounting=0.99, baseline_cost=0.5, entropy_cost=0.01):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    from_logits, _ = vtrace_module(torch, F)
    model = load(m, make_impala_net(m), weights)

    def compute_baseline_loss(advantages):
        return 0.5 * torch.sum(advantages ** 2)

    def compute_entropy_loss(logits):
        """Return the entropy loss, i.e., the negative entropy of the policy."""
        policy = F.softmax(logits, dim=-1)
        log_policy = F.log_softmax(logits, dim=-1)
        return torch.sum(policy * log_policy)

    def compute_policy_gradient_loss(logits, actions, advantages):
        cross_entropy = F.nll_loss(F.log_softmax(torch.flatten(logits, 0, 1), dim=-1), target=torch.flatten(actions, 0, 1), reduction="none")
        cross_entropy = cross_entropy.view_as(advantages)
        return torch.sum(cross_entropy * advantages.detach())

    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01, momentum=0, eps=0.01, alpha=0.99)
    lr_lambda = lambda epoch: 1 - min(epoch * T * B, 100) / 100
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    log = []
    for step in range(steps):
        rng = np.random.default_rng(step)
        batch = {
            "frame": torch.from_numpy(rng.standard_normal((T + 1, B, 6)).astype(np.float32)),
            "last_action": torch.from_numpy(rng.integers(0, 4, (T + 1, B))),
            "reward": torch.from_numpy(rng.standard_normal((T + 1, B)).astype(np.float32) * 2),
            "done": torch.from_numpy(rng.uniform(size=(T + 1, B)) < 0.15),
            "action": torch.from_numpy(rng.integers(0, 4, (T + 1, B))),
            "policy_logits": torch.from_numpy(rng.standard_normal((T + 1, B, 4)).astype(np.float32)),
        }
        learner_outputs = model(batch)
        # Take final value function slice for bootstrapping.
        bootstrap_value = learner_outputs["baseline"][-1]
        # Move from obs[t] -> action[t] to action[t] -> obs[t].
        batch = {key: tensor[1:] for key, tensor in batch.items()}
        learner_outputs = {key: tensor[:-1] for key, tensor in learner_outputs.items()}
        rewards = batch["reward"]
        clipped_rewards = torch.clamp(rewards, -1, 1)
        discounts = (~batch["done"]).float() * discounting
        vtrace_returns = from_logits(
            behavior_policy_logits=batch["policy_logits"], target_policy_logits=learner_outputs["policy_logits"],
            actions=batch["action"], discounts=discounts, rewards=clipped_rewards,
            values=learner_outputs["baseline"], bootstrap_value=bootstrap_value)
        pg_loss = compute_policy_gradient_loss(learner_outputs["policy_logits"], batch["action"], vtrace_returns.pg_advantages)
        baseline_loss = baseline_cost * compute_baseline_loss(vtrace_returns.vs - learner_outputs["baseline"])
        entropy_loss = entropy_cost * compute_entropy_loss(learner_outputs["policy_logits"])
        total_loss = pg_loss + baseline_loss + entropy_loss
        optimizer.zero_grad()
        total_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 40.0)
        optimizer.step()
        scheduler.step()
        log.append([total_loss, pg_loss, baseline_loss, entropy_loss, vtrace_returns.vs, vtrace_returns.pg_advantages,
                    vtrace_returns.vs.requires_grad, vtrace_returns.log_rhos.requires_grad, learner_outputs["action"]])
    return log, model.state_dict()


def test_torchbeast_vtrace():
    ours, _ = run_both(impala_learn, weights_of(make_impala_net), rtol=1e-4, atol=1e-5)
    assert ours[0][0][6] is False and ours[0][0][7] is True


def test_vtrace_on_policy_is_n_step_td():
    """With behaviour = target policy (rho = 1) and no clipping binding, v_s is the discounted return bootstrapped
    at the end (Espeholt et al., remark 1)."""
    torch = OURS.torch
    _, from_importance_weights = vtrace_module(torch, OURS.F)
    rng = np.random.default_rng(0)
    rewards, values = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    bootstrap = rng.standard_normal(2)
    discounts = np.full((5, 2), 0.9)
    out = from_importance_weights(torch.zeros(5, 2, dtype=torch.float64), torch.tensor(discounts), torch.tensor(rewards),
                                  torch.tensor(values), torch.tensor(bootstrap))
    ret, expected = bootstrap.copy(), np.zeros((5, 2))
    for t in reversed(range(5)):
        ret = rewards[t] + 0.9 * ret
        expected[t] = ret
    np.testing.assert_allclose(out.vs.numpy(), expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# cleanRL's SAC for discrete actions (Christodoulou 2019)
# ----------------------------------------------------------------------------------------------


def make_discrete_sac(m, obs_dim=4, n_actions=3):
    nn, F, torch = m.nn, m.F, m.torch
    from_dist = torch.distributions

    class SoftQNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(obs_dim, 16)
            self.fc_q = nn.Linear(16, n_actions)

        def forward(self, x):
            return self.fc_q(F.relu(self.fc1(x)))

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(obs_dim, 16)
            self.fc_logits = nn.Linear(16, n_actions)

        def forward(self, x):
            return self.fc_logits(F.relu(self.fc1(x)))

        def get_action(self, x):
            logits = self(x)
            policy_dist = from_dist.Categorical(logits=logits)
            action = policy_dist.sample()
            # Action probabilities for calculating the adapted soft-Q loss
            action_probs = policy_dist.probs
            log_prob = F.log_softmax(logits, dim=1)
            return action, log_prob, action_probs

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor, self.qf1, self.qf2 = Actor(), SoftQNetwork(), SoftQNetwork()

    return Nets()


def discrete_sac(m, weights, updates=4, gamma=0.99, tau=1.0, target_entropy_scale=0.89, target_network_frequency=2):
    torch, F, optim = m.torch, m.F, m.optim
    torch.manual_seed(0)
    nets = load(m, make_discrete_sac(m), weights)
    actor, qf1, qf2 = nets.actor, nets.qf1, nets.qf2
    qf1_target, qf2_target = make_discrete_sac(m).qf1, make_discrete_sac(m).qf2
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=3e-3, eps=1e-4)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=3e-3, eps=1e-4)
    target_entropy = -target_entropy_scale * torch.log(1 / torch.tensor(3))
    log_alpha = torch.zeros(1, requires_grad=True)
    alpha = log_alpha.exp().item()
    a_optimizer = optim.Adam([log_alpha], lr=3e-3, eps=1e-4)
    log = []
    for global_step in range(updates):
        observations, actions, rewards, next_observations, dones = (torch.tensor(a) for a in replay_batch(110 + global_step))
        # CRITIC training
        with torch.no_grad():
            _, next_state_log_pi, next_state_action_probs = actor.get_action(next_observations)
            qf1_next_target = qf1_target(next_observations)
            qf2_next_target = qf2_target(next_observations)
            # we can use the action probabilities instead of MC sampling to estimate the expectation
            min_qf_next_target = next_state_action_probs * (torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi)
            # adapt Q-target for discrete Q-function
            min_qf_next_target = min_qf_next_target.sum(dim=1)
            next_q_value = rewards.flatten() + (1 - dones.flatten()) * gamma * (min_qf_next_target)
        # use Q-values only for the taken actions
        qf1_values = qf1(observations)
        qf2_values = qf2(observations)
        qf1_a_values = qf1_values.gather(1, actions.long()).view(-1)
        qf2_a_values = qf2_values.gather(1, actions.long()).view(-1)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        qf_loss = qf1_loss + qf2_loss
        q_optimizer.zero_grad()
        qf_loss.backward()
        q_optimizer.step()
        # ACTOR training
        sampled, log_pi, action_probs = actor.get_action(observations)
        with torch.no_grad():
            qf1_values = qf1(observations)
            qf2_values = qf2(observations)
            min_qf_values = torch.min(qf1_values, qf2_values)
        # no need for reparameterization, the expectation can be calculated for discrete actions
        actor_loss = (action_probs * ((alpha * log_pi) - min_qf_values)).mean()
        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()
        # re-use action probabilities for temperature loss
        alpha_loss = (action_probs.detach() * (-log_alpha.exp() * (log_pi + target_entropy).detach())).mean()
        a_optimizer.zero_grad()
        alpha_loss.backward()
        a_optimizer.step()
        alpha = log_alpha.exp().item()
        if global_step % target_network_frequency == 0:
            for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
                target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
            for param, target_param in zip(qf2.parameters(), qf2_target.parameters()):
                target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
        log.append([qf_loss, actor_loss, alpha_loss, alpha, sampled])
    return log, nets.state_dict(), qf2_target.state_dict(), target_entropy


def test_cleanrl_discrete_sac():
    ours, _ = run_both(discrete_sac, weights_of(make_discrete_sac), rtol=1e-4, atol=1e-5)
    assert ours[-1] == pytest.approx(0.89 * np.log(3), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# rl_games / IsaacGymEnvs: a torch.jit.script reward, a RunningMeanStd module with float64 buffers, a disabled
# GradScaler and autocast, neglogp by hand, the bounds loss (clamp_min / clamp_max), policy_kl
# ----------------------------------------------------------------------------------------------


def rl_games(m):
    torch, nn, F = m.torch, m.nn, m.F

    @torch.jit.script
    def compute_cartpole_reward(pole_angle, pole_vel, cart_vel, cart_pos, reset_dist, reset_buf, progress_buf, max_episode_length):
        # type: (Tensor, Tensor, Tensor, Tensor, float, Tensor, Tensor, float) -> Tuple[Tensor, Tensor]
        reward = 1.0 - pole_angle * pole_angle - 0.01 * torch.abs(cart_vel) - 0.005 * torch.abs(pole_vel)
        # adjust reward for reset agents
        reward = torch.where(torch.abs(cart_pos) > reset_dist, torch.ones_like(reward) * -2.0, reward)
        reward = torch.where(torch.abs(pole_angle) > 3.141592653589793 / 2, torch.ones_like(reward) * -2.0, reward)
        reset = torch.where(torch.abs(cart_pos) > reset_dist, torch.ones_like(reset_buf), reset_buf)
        reset = torch.where(torch.abs(pole_angle) > 3.141592653589793 / 2, torch.ones_like(reset_buf), reset)
        reset = torch.where(progress_buf >= max_episode_length - 1, torch.ones_like(reset_buf), reset)
        return reward, reset

    class RunningMeanStd(nn.Module):
        def __init__(self, insize, epsilon=1e-05, per_channel=False, norm_only=False):
            super(RunningMeanStd, self).__init__()
            self.insize = insize
            self.epsilon = epsilon
            self.norm_only = norm_only
            self.axis = [0]
            in_size = insize
            self.register_buffer("running_mean", torch.zeros(in_size, dtype=torch.float64))
            self.register_buffer("running_var", torch.ones(in_size, dtype=torch.float64))
            self.register_buffer("count", torch.ones((), dtype=torch.float64))

        def _update_mean_var_count_from_moments(self, mean, var, count, batch_mean, batch_var, batch_count):
            delta = batch_mean - mean
            tot_count = count + batch_count
            new_mean = mean + delta * batch_count / tot_count
            m_a = var * count
            m_b = batch_var * batch_count
            M2 = m_a + m_b + delta**2 * count * batch_count / tot_count
            new_var = M2 / tot_count
            new_count = tot_count
            return new_mean, new_var, new_count

        def forward(self, input, denorm=False, mask=None):
            if self.training:
                mean = input.mean(self.axis)  # along channel axis
                var = input.var(self.axis)
                self.running_mean, self.running_var, self.count = self._update_mean_var_count_from_moments(
                    self.running_mean, self.running_var, self.count, mean, var, input.size()[0])
            current_mean = self.running_mean
            current_var = self.running_var
            if denorm:
                y = torch.clamp(input, min=-5.0, max=5.0)
                y = torch.sqrt(current_var.float() + self.epsilon) * y + current_mean.float()
            else:
                if self.norm_only:
                    y = input / torch.sqrt(current_var.float() + self.epsilon)
                else:
                    y = (input - current_mean.float()) / torch.sqrt(current_var.float() + self.epsilon)
                    y = torch.clamp(y, min=-5.0, max=5.0)
            return y

    def policy_kl(p0_mu, p0_sigma, p1_mu, p1_sigma, reduce=True):
        c1 = torch.log(p1_sigma / p0_sigma + 1e-5)
        c2 = (p0_sigma**2 + (p1_mu - p0_mu)**2) / (2.0 * (p1_sigma**2 + 1e-5))
        c3 = -1.0 / 2.0
        kl = c1 + c2 + c3
        kl = kl.sum(dim=-1)  # returning mean between all steps of sum between all actions
        if reduce:
            return kl.mean()
        else:
            return kl

    def neglogp(x, mean, std, logstd):
        return 0.5 * (((x - mean) / std)**2).sum(dim=-1) + 0.5 * np.log(2.0 * np.pi) * x.size()[-1] + logstd.sum(dim=-1)

    def critic_loss(value_preds_batch, values, curr_e_clip, return_batch, clip_value):
        if clip_value:
            value_pred_clipped = value_preds_batch + (values - value_preds_batch).clamp(-curr_e_clip, curr_e_clip)
            value_losses = (values - return_batch)**2
            value_losses_clipped = (value_pred_clipped - return_batch)**2
            c_loss = torch.max(value_losses, value_losses_clipped)
        else:
            c_loss = (return_batch - values)**2
        return c_loss

    torch.manual_seed(0)
    pa = torch.tensor([0.1, 2.0, -0.3, 0.0]); pv = torch.tensor([0.5, 0.1, 0.0, 1.0])
    cv = torch.tensor([1.0, -1.0, 0.3, 0.2]); cp = torch.tensor([0.5, 3.1, 0.0, -2.5])
    reset_buf = torch.zeros(4, dtype=torch.long); progress_buf = torch.tensor([3, 5, 499, 10])
    reward, reset = compute_cartpole_reward(pa, pv, cv, cp, 3.0, reset_buf, progress_buf, 500.0)
    rms = RunningMeanStd((3,))
    obs = torch.linspace(-3, 6, 15).view(5, 3)
    y1 = rms(obs)
    y2 = rms(obs * 2)
    rms.eval()
    y3 = rms(obs, denorm=True)
    actor, critic = nn.Linear(3, 2), nn.Linear(3, 1)
    sigma = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam(list(actor.parameters()) + list(critic.parameters()) + [sigma], lr=1e-2, eps=1e-8)
    scaler = torch.cuda.amp.GradScaler(enabled=False)
    log = []
    old_mu, old_sigma, old_values, old_neglogp = None, None, None, None
    for epoch in range(3):
        with torch.cuda.amp.autocast(enabled=False):
            mu = actor(y1)
            logstd = sigma.expand_as(mu)
            std = torch.exp(logstd)
            values = critic(y1).squeeze(-1)
            act = torch.tensor([[0.1, 0.2]]).expand_as(mu)
            action_neglogp = neglogp(act, mu, std, logstd)
            if old_neglogp is None:
                old_mu, old_sigma, old_values, old_neglogp = mu.detach(), std.detach(), values.detach(), action_neglogp.detach() + 0.1
            ratio = torch.exp(old_neglogp - action_neglogp)
            advantage = torch.tensor([1.0, -1.0, 0.5, 0.2, -0.3])
            a_loss = torch.max(-advantage * ratio, -advantage * torch.clamp(ratio, 0.8, 1.2))
            c_loss = critic_loss(old_values, values, 0.2, torch.tensor([0.5, 0.1, -0.2, 0.0, 1.0]), True)
            soft_bound = 1.1
            mu_loss_high = torch.clamp_min(mu - soft_bound, 0.0)**2
            mu_loss_low = torch.clamp_max(mu + soft_bound, 0.0)**2
            b_loss = (mu_loss_low + mu_loss_high).sum(axis=-1)
            loss = a_loss.mean() + 0.5 * c_loss.mean() + 0.0001 * b_loss.mean()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            kl_dist = policy_kl(mu.detach(), std.detach(), old_mu, old_sigma)
        log.append([loss, kl_dist, action_neglogp])
    return (reward, reset, y1, y2, y3, rms.running_mean, rms.running_var, rms.count, log, actor.state_dict(),
            rms.running_mean.dtype == torch.float64)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_rl_games_idioms():
    ours, _ = run_both(rl_games, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours[1], [0, 1, 1, 0])
    np.testing.assert_allclose(ours[0][:2], [1 - 0.01 - 0.01 * 1 - 0.0025, -2.0], rtol=1e-6)
    assert ours[-1] is True and ours[7] == 11
