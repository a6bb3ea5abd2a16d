# ruff: noqa: B007, E501, E702, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: PPO: sb3-contrib's MaskablePPO (a
``Categorical`` subclass resetting ``probs`` by ``logits_to_probs``, GAE, advantage normalisation, clipped value
loss, several epochs of shuffled minibatches with an approximate-KL early stop, SB3's ``polyak_update`` by
``torch.add(..., alpha=tau, out=...)``); PPO-PyTorch's ``MultivariateNormal`` over a (1, A, A) covariance and
``diag_embed``; Tianshou's dual-clip PPO with an Independent Normal; ikostrikov's PPO over
``BatchSampler(SubsetRandomSampler)`` lists."""

import copy

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# sb3-contrib's MaskablePPO: a Categorical subclass that masks logits, SB3's PPO train loop
# ----------------------------------------------------------------------------------------------


def maskable_categorical_class(th):
    from_dist = th.distributions
    logits_to_probs = from_dist.utils.logits_to_probs

    class MaskableCategorical(from_dist.Categorical):
        """Modified PyTorch Categorical distribution with support for invalid action masking."""

        def __init__(self, probs=None, logits=None, validate_args=None, masks=None):
            self.masks = None
            super().__init__(probs, logits, validate_args)
            self._original_logits = self.logits
            self.apply_masking(masks)

        def apply_masking(self, masks):
            if masks is not None:
                device = self.logits.device
                self.masks = th.as_tensor(masks, dtype=th.bool, device=device).reshape(self.logits.shape)
                HUGE_NEG = th.tensor(-1e8, dtype=self.logits.dtype, device=device)
                logits = th.where(self.masks, self._original_logits, HUGE_NEG)
            else:
                self.masks = None
                logits = self._original_logits
            # Reinitialize with updated logits
            super().__init__(logits=logits)
            # self.probs may already be cached, so we must force an update
            self.probs = logits_to_probs(self.logits)

        def entropy(self):
            if self.masks is None:
                return super().entropy()
            # Highly negative logits don't result in 0 probs, so we must replace
            # with 0s to ensure 0 contribution to the distribution's entropy, since
            # masked actions possess no invariance.
            device = self.logits.device
            p_log_p = self.logits * self.probs
            p_log_p = th.where(self.masks, p_log_p, th.tensor(0.0, device=device))
            return -p_log_p.sum(-1)

    return MaskableCategorical


def make_maskable_policy(m, obs_dim=4, n_actions=5):
    nn = m.nn

    class ActorCriticPolicy(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp_extractor = nn.Sequential(nn.Linear(obs_dim, 16), nn.Tanh())
            self.action_net = nn.Linear(16, n_actions)
            self.value_net = nn.Linear(16, 1)

        def forward(self, obs):
            latent = self.mlp_extractor(obs)
            return self.action_net(latent), self.value_net(latent)

    return ActorCriticPolicy()


def polyak_update(th, params, target_params, tau):
    """stable-baselines3's: in place, without building a graph."""
    with th.no_grad():
        for param, target_param in zip(params, target_params):
            target_param.data.mul_(1 - tau)
            th.add(target_param.data, param.data, alpha=tau, out=target_param.data)


def explained_variance(y_pred, y_true):
    var_y = np.var(y_true)
    return np.nan if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y)


def maskable_ppo(m, weights, n_steps=16, n_envs=2, n_epochs=4, batch_size=8, gamma=0.99, gae_lambda=0.95,
                 clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, target_kl=0.002):
    th, F = m.torch, m.F
    th.manual_seed(0)
    MaskableCategorical = maskable_categorical_class(th)
    policy = load(m, make_maskable_policy(m), weights)
    ema_policy = copy.deepcopy(policy)
    optimizer = th.optim.Adam(policy.parameters(), lr=3e-3, eps=1e-5)
    rng = np.random.default_rng(0)
    # rollout (collected under no_grad from a random "environment" whose valid actions change each step)
    observations = rng.standard_normal((n_steps, n_envs, 4)).astype(np.float32)
    action_masks = rng.uniform(size=(n_steps, n_envs, 5)) < 0.6
    action_masks[..., 0] = True
    rewards = rng.standard_normal((n_steps, n_envs)).astype(np.float32)
    episode_starts = (rng.uniform(size=(n_steps, n_envs)) < 0.1).astype(np.float32)
    actions = np.zeros((n_steps, n_envs), dtype=np.int64)
    values = np.zeros((n_steps, n_envs), dtype=np.float32)
    log_probs = np.zeros((n_steps, n_envs), dtype=np.float32)
    with th.no_grad():
        for step in range(n_steps):
            logits, value = policy(th.as_tensor(observations[step]))
            distribution = MaskableCategorical(logits=logits, masks=action_masks[step])
            action = distribution.sample()
            actions[step] = action.numpy()
            values[step] = value.flatten().numpy()
            log_probs[step] = distribution.log_prob(action).numpy()
        last_values = policy(th.as_tensor(rng.standard_normal((n_envs, 4)).astype(np.float32)))[1].flatten().numpy()
    dones = rng.uniform(size=n_envs) < 0.2
    # compute_returns_and_advantage
    advantages = np.zeros((n_steps, n_envs), dtype=np.float32)
    last_gae_lam = 0
    for step in reversed(range(n_steps)):
        if step == n_steps - 1:
            next_non_terminal = 1.0 - dones.astype(np.float32)
            next_values = last_values
        else:
            next_non_terminal = 1.0 - episode_starts[step + 1]
            next_values = values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        last_gae_lam = delta + gamma * gae_lambda * next_non_terminal * last_gae_lam
        advantages[step] = last_gae_lam
    returns = advantages + values

    def swap_and_flatten(arr):
        shape = arr.shape
        if len(shape) < 3:
            shape = (*shape, 1)
        return arr.swapaxes(0, 1).reshape(shape[0] * shape[1], *shape[2:])

    flat = {k: swap_and_flatten(v) for k, v in dict(observations=observations, actions=actions, values=values,
                                                       log_probs=log_probs, advantages=advantages, returns=returns,
                                                       action_masks=action_masks).items()}
    entropy_losses, pg_losses, value_losses, clip_fractions, approx_kls = [], [], [], [], []
    continue_training = True
    epochs_run = 0
    for epoch in range(n_epochs):
        approx_kl_divs = []
        indices = rng.permutation(n_steps * n_envs)
        for start_idx in range(0, n_steps * n_envs, batch_size):
            batch_inds = indices[start_idx:start_idx + batch_size]
            rollout_data = {k: th.as_tensor(v[batch_inds]) for k, v in flat.items()}
            actions_b = rollout_data["actions"].long().flatten()
            logits, values_pred = policy(rollout_data["observations"])
            distribution = MaskableCategorical(logits=logits, masks=rollout_data["action_masks"])
            log_prob = distribution.log_prob(actions_b)
            entropy = distribution.entropy()
            values_pred = values_pred.flatten()
            advantages_b = rollout_data["advantages"].flatten()
            advantages_b = (advantages_b - advantages_b.mean()) / (advantages_b.std() + 1e-8)
            ratio = th.exp(log_prob - rollout_data["log_probs"].flatten())
            policy_loss_1 = advantages_b * ratio
            policy_loss_2 = advantages_b * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
            policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
            pg_losses.append(policy_loss.item())
            clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
            clip_fractions.append(clip_fraction)
            old_values = rollout_data["values"].flatten()
            values_pred = old_values + th.clamp(values_pred - old_values, -clip_range_vf, clip_range_vf)
            value_loss = F.mse_loss(rollout_data["returns"].flatten(), values_pred)
            value_losses.append(value_loss.item())
            entropy_loss = -th.mean(entropy)
            entropy_losses.append(entropy_loss.item())
            loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
            with th.no_grad():
                log_ratio = log_prob - rollout_data["log_probs"].flatten()
                approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                approx_kl_divs.append(approx_kl_div)
            if target_kl is not None and approx_kl_div > 1.5 * target_kl:
                continue_training = False
                break
            optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
            optimizer.step()
            polyak_update(th, policy.parameters(), ema_policy.parameters(), 0.1)
        approx_kls.append(np.mean(approx_kl_divs))
        epochs_run += 1
        if not continue_training:
            break
    ev = explained_variance(flat["values"].flatten(), flat["returns"].flatten())
    return (actions, log_probs, entropy_losses, pg_losses, value_losses, clip_fractions, approx_kls, epochs_run, ev,
            policy.state_dict(), ema_policy.state_dict())


def test_sb3_contrib_maskable_ppo():
    ours, _ = run_both(maskable_ppo, weights_of(make_maskable_policy), rtol=1e-4, atol=1e-5)
    actions = ours[0]
    rng = np.random.default_rng(0)
    rng.standard_normal((16, 2, 4))
    action_masks = rng.uniform(size=(16, 2, 5)) < 0.6
    action_masks[..., 0] = True
    assert np.all(np.take_along_axis(action_masks, actions[..., None], -1))  # no masked action was sampled
    assert ours[7] < 4  # the approximate KL stopped the epochs early


def test_maskable_categorical_by_hand():
    th = OURS.torch
    MaskableCategorical = maskable_categorical_class(th)
    logits = th.tensor([[0.5, 1.0, -0.3, 2.0]], requires_grad=True)
    masks = np.array([[True, False, True, False]])
    dist = MaskableCategorical(logits=logits, masks=masks)
    p = np.exp([0.5, -0.3]) / np.exp([0.5, -0.3]).sum()
    np.testing.assert_allclose(dist.probs.detach().numpy()[0], [p[0], 0, p[1], 0], atol=1e-7, rtol=1e-6)
    entropy = dist.entropy()
    assert entropy.item() == pytest.approx(-(p * np.log(p)).sum(), rel=1e-6)
    entropy.backward()
    # the masked logits reach the entropy only through the first normalisation (logits - logsumexp), whose
    # gradient there is analytically zero: rounding is all that is left
    assert abs(logits.grad[0, 1].item()) < 1e-6 and abs(logits.grad[0, 3].item()) < 1e-6
    dist.apply_masking(None)
    assert dist.masks is None and dist.probs[0, 3].item() == pytest.approx(np.exp(2) / np.exp([0.5, 1, -0.3, 2]).sum(), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# nikhilbarhate99/PPO-PyTorch: a MultivariateNormal with a (1, A, A) covariance over a batch of means;
# Tianshou's PPO with dual clip and an Independent Normal whose sigma is a broadcast Parameter
# ----------------------------------------------------------------------------------------------


def make_ppo_mvn(m, state_dim=4, action_dim=2):
    nn = m.nn

    class ActorCritic(nn.Module):
        def __init__(self):
            super(ActorCritic, self).__init__()
            self.actor = nn.Sequential(nn.Linear(state_dim, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, action_dim), nn.Tanh())
            self.critic = nn.Sequential(nn.Linear(state_dim, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))

    return ActorCritic()


def ppo_mvn(m, weights, K_epochs=4, eps_clip=0.2, gamma=0.99, action_std_init=0.6, action_dim=2):
    torch, nn = m.torch, m.nn
    MultivariateNormal = torch.distributions.MultivariateNormal
    torch.manual_seed(0)
    policy = load(m, make_ppo_mvn(m), weights)
    policy_old = make_ppo_mvn(m)
    policy_old.load_state_dict(policy.state_dict())
    optimizer = torch.optim.Adam([{'params': policy.actor.parameters(), 'lr': 3e-4}, {'params': policy.critic.parameters(), 'lr': 1e-3}])
    MseLoss = nn.MSELoss()
    action_var = torch.full((action_dim,), action_std_init * action_std_init)

    def act(model, state):
        action_mean = model.actor(state)
        cov_mat = torch.diag(action_var).unsqueeze(dim=0)
        dist = MultivariateNormal(action_mean, cov_mat)
        action = dist.sample()
        action_logprob = dist.log_prob(action)
        state_val = model.critic(state)
        return action.detach(), action_logprob.detach(), state_val.detach()

    def evaluate(model, state, action):
        action_mean = model.actor(state)
        action_var_ = action_var.expand_as(action_mean)
        cov_mat = torch.diag_embed(action_var_)
        dist = MultivariateNormal(action_mean, cov_mat)
        action_logprobs = dist.log_prob(action)
        dist_entropy = dist.entropy()
        state_values = model.critic(state)
        return action_logprobs, state_values, dist_entropy

    rng = np.random.default_rng(0)
    states, actions, logprobs, state_values, rewards, is_terminals = [], [], [], [], [], []
    with torch.no_grad():
        for t in range(12):
            state = torch.FloatTensor(rng.standard_normal(4).astype(np.float32))
            action, action_logprob, state_val = act(policy_old, state)
            states.append(state); actions.append(action); logprobs.append(action_logprob); state_values.append(state_val)
            rewards.append(float(-np.sum(action.numpy() ** 2)))
            is_terminals.append(t % 5 == 4)
    # Monte Carlo estimate of returns
    returns = []
    discounted_reward = 0
    for reward, is_terminal in zip(reversed(rewards), reversed(is_terminals)):
        if is_terminal:
            discounted_reward = 0
        discounted_reward = reward + (gamma * discounted_reward)
        returns.insert(0, discounted_reward)
    # Normalizing the rewards
    returns = torch.tensor(returns, dtype=torch.float32)
    returns = (returns - returns.mean()) / (returns.std() + 1e-7)
    # convert list to tensor
    old_states = torch.squeeze(torch.stack(states, dim=0)).detach()
    old_actions = torch.squeeze(torch.stack(actions, dim=0)).detach()
    old_logprobs = torch.squeeze(torch.stack(logprobs, dim=0)).detach()
    old_state_values = torch.squeeze(torch.stack(state_values, dim=0)).detach()
    advantages = returns.detach() - old_state_values.detach()
    losses = []
    for _ in range(K_epochs):
        logprobs_, state_values_, dist_entropy = evaluate(policy, old_states, old_actions)
        state_values_ = torch.squeeze(state_values_)
        ratios = torch.exp(logprobs_ - old_logprobs.detach())
        surr1 = ratios * advantages
        surr2 = torch.clamp(ratios, 1 - eps_clip, 1 + eps_clip) * advantages
        loss = -torch.min(surr1, surr2) + 0.5 * MseLoss(state_values_, returns) - 0.01 * dist_entropy
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
        losses.append(loss)
    policy_old.load_state_dict(policy.state_dict())
    # decay the action std
    action_var = torch.full((action_dim,), 0.5 * 0.5)
    _, _, entropy_after = evaluate(policy, old_states, old_actions)
    return old_actions, old_logprobs, returns, losses, policy.state_dict(), entropy_after


def test_ppo_pytorch_multivariate_normal():
    ours, _ = run_both(ppo_mvn, weights_of(make_ppo_mvn), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours[5], 0.5 * 2 * (1 + np.log(2 * np.pi)) + 0.5 * np.log(0.25 ** 2), rtol=1e-5)


def make_tianshou_actor_critic(m, state_dim=4, action_dim=2):
    torch, nn = m.torch, m.nn

    class ActorProb(nn.Module):
        def __init__(self):
            super().__init__()
            self.preprocess = nn.Sequential(nn.Linear(state_dim, 16), nn.Tanh())
            self.mu = nn.Linear(16, action_dim)
            self.sigma_param = nn.Parameter(torch.zeros(action_dim, 1))
            self._max = 1.0

        def forward(self, obs, state=None):
            logits = self.preprocess(obs)
            mu = self.mu(logits)
            mu = self._max * torch.tanh(mu)
            shape = [1] * len(mu.shape)
            shape[1] = -1
            sigma = (self.sigma_param.view(shape) + torch.zeros_like(mu)).exp()
            return (mu, sigma), state

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(state_dim, 16), nn.Tanh(), nn.Linear(16, 1))

        def forward(self, obs):
            return self.net(obs)

    class ActorCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor, self.critic = ActorProb(), Critic()

    return ActorCritic()


def tianshou_ppo(m, weights, repeat=3, batch_size=8, eps_clip=0.2, dual_clip=3.0, vf_coef=0.5, ent_coef=0.01, max_grad_norm=0.5):
    torch, nn = m.torch, m.nn
    from_dist = torch.distributions
    torch.manual_seed(0)
    ac = load(m, make_tianshou_actor_critic(m), weights)
    actor, critic = ac.actor, ac.critic
    optim = torch.optim.Adam(ac.parameters(), lr=3e-3)

    def dist_fn(*logits):
        return from_dist.Independent(from_dist.Normal(*logits), 1)

    rng = np.random.default_rng(0)
    obs = torch.as_tensor(rng.standard_normal((24, 4)).astype(np.float32))
    with torch.no_grad():
        (mu, sigma), _ = actor(obs)
        dist = dist_fn(mu, sigma)
        act = dist.sample()
        logp_old = dist.log_prob(act)
        v_s = critic(obs).flatten()
    returns = v_s + torch.as_tensor(rng.standard_normal(24).astype(np.float32))
    adv = torch.as_tensor(rng.standard_normal(24).astype(np.float32))
    adv = (adv - adv.mean()) / adv.std()
    log = []
    for step in range(repeat):
        for idx in np.array_split(rng.permutation(24), 24 // batch_size):
            (mu, sigma), _ = actor(obs[idx])
            dist = dist_fn(mu, sigma)
            value = critic(obs[idx]).flatten()
            ratio = (dist.log_prob(act[idx]) - logp_old[idx]).exp().float()
            ratio = ratio.reshape(ratio.size(0), -1).transpose(0, 1)
            surr1 = ratio * adv[idx]
            surr2 = ratio.clamp(1.0 - eps_clip, 1.0 + eps_clip) * adv[idx]
            clip1 = torch.min(surr1, surr2)
            clip2 = torch.max(clip1, dual_clip * adv[idx])
            clip_loss = -torch.where(adv[idx] < 0, clip2, clip1).mean()
            v_clip = v_s[idx] + (value - v_s[idx]).clamp(-eps_clip, eps_clip)
            vf1 = (returns[idx] - value).pow(2)
            vf2 = (returns[idx] - v_clip).pow(2)
            vf_loss = torch.max(vf1, vf2).mean()
            ent_loss = dist.entropy().mean()
            loss = clip_loss + vf_coef * vf_loss - ent_coef * ent_loss
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(ac.parameters(), max_norm=max_grad_norm)
            optim.step()
            log.append([clip_loss.item(), vf_loss.item(), ent_loss.item()])
    return act, logp_old, log, ac.state_dict()


def test_tianshou_ppo_dual_clip():
    ours, _ = run_both(tianshou_ppo, weights_of(make_tianshou_actor_critic), rtol=1e-4, atol=1e-5)
    # the first minibatch sees sigma = exp(0) = 1: the entropy of a 2-d standard normal
    assert ours[2][0][2] == pytest.approx(1 + np.log(2 * np.pi), rel=1e-6)


def make_ikostrikov_policy(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3 + 1))


def ikostrikov_ppo(m, weights, num_steps=8, num_processes=3, ppo_epoch=3, num_mini_batch=4, clip_param=0.2):
    torch = m.torch
    BatchSampler, SubsetRandomSampler = m.data.BatchSampler, m.data.SubsetRandomSampler
    torch.manual_seed(0)
    actor_critic = load(m, make_ikostrikov_policy(m), weights)
    optimizer = torch.optim.Adam(actor_critic.parameters(), lr=7e-4, eps=1e-5)
    rng = np.random.default_rng(0)
    obs = torch.from_numpy(rng.standard_normal((num_steps + 1, num_processes, 4)).astype(np.float32))
    actions = torch.from_numpy(rng.integers(0, 3, (num_steps, num_processes, 1)))
    with torch.no_grad():
        out = actor_critic(obs[:-1].view(-1, 4))
        old_action_log_probs = torch.log_softmax(out[:, :3], -1).gather(1, actions.view(-1, 1)).view(num_steps, num_processes, 1)
        value_preds = out[:, 3:].view(num_steps, num_processes, 1)
    returns = value_preds + torch.from_numpy(rng.standard_normal((num_steps, num_processes, 1)).astype(np.float32))
    advantages = returns - value_preds
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-5)
    batch_size = num_processes * num_steps
    mini_batch_size = batch_size // num_mini_batch
    log = []
    for e in range(ppo_epoch):
        sampler = BatchSampler(SubsetRandomSampler(range(batch_size)), mini_batch_size, drop_last=True)
        for indices in sampler:
            obs_batch = obs[:-1].view(-1, *obs.size()[2:])[indices]
            actions_batch = actions.view(-1, actions.size(-1))[indices]
            value_preds_batch = value_preds.view(-1, 1)[indices]
            return_batch = returns.view(-1, 1)[indices]
            old_action_log_probs_batch = old_action_log_probs.view(-1, 1)[indices]
            adv_targ = advantages.view(-1, 1)[indices]
            out = actor_critic(obs_batch)
            dist = torch.distributions.Categorical(logits=out[:, :3])
            action_log_probs = dist.log_prob(actions_batch.squeeze(-1)).view(-1, 1)
            values = out[:, 3:]
            ratio = torch.exp(action_log_probs - old_action_log_probs_batch)
            surr1 = ratio * adv_targ
            surr2 = torch.clamp(ratio, 1.0 - clip_param, 1.0 + clip_param) * adv_targ
            action_loss = -torch.min(surr1, surr2).mean()
            value_pred_clipped = value_preds_batch + (values - value_preds_batch).clamp(-clip_param, clip_param)
            value_losses = (values - return_batch).pow(2)
            value_losses_clipped = (value_pred_clipped - return_batch).pow(2)
            value_loss = 0.5 * torch.max(value_losses, value_losses_clipped).mean()
            optimizer.zero_grad()
            (value_loss * 0.5 + action_loss - dist.entropy().mean() * 0.01).backward()
            torch.nn.utils.clip_grad_norm_(actor_critic.parameters(), 0.5)
            optimizer.step()
            log.append([list(indices), value_loss.item(), action_loss.item()])
    return log, actor_critic.state_dict()


def test_ikostrikov_ppo_batch_sampler():
    ours, _ = run_both(ikostrikov_ppo, weights_of(make_ikostrikov_policy), rtol=1e-4, atol=1e-6)
    for e in range(3):
        assert sorted(i for row in ours[0][4 * e:4 * e + 4] for i in row[0]) == list(range(24))
