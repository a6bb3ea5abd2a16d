# ruff: noqa: B007, E501, E731, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: exploration, skills and goals: RND (a
frozen target, a random update mask by ``.type(torch.FloatTensor)``, ``torch.max`` of a 0-d and a 1-d tensor); NGU's
episodic novelty (``cdist``, ``topk(largest=False)``); DIAYN; Option-Critic (Bernoulli terminations, per-option
parameter tensors, ``state.data @ W``); HER with 'future' relabelling."""

import copy

import numpy as np

from .probe18_rl_common import RunningMeanStd
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# RND (jcwleo/random-network-distillation-pytorch): a frozen random target, a random update mask
# ----------------------------------------------------------------------------------------------


def make_rnd(m, input_size=6, output_size=8):
    nn, torch = m.nn, m.torch

    class RNDModel(nn.Module):
        def __init__(self):
            super(RNDModel, self).__init__()
            self.predictor = nn.Sequential(nn.Linear(input_size, 16), nn.LeakyReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, output_size))
            self.target = nn.Sequential(nn.Linear(input_size, 16), nn.LeakyReLU(), nn.Linear(16, output_size))
            for p in self.modules():
                if isinstance(p, nn.Linear):
                    torch.nn.init.orthogonal_(p.weight, np.sqrt(2))
                    p.bias.data.zero_()
            for param in self.target.parameters():
                param.requires_grad = False

        def forward(self, next_obs):
            target_feature = self.target(next_obs)
            predict_feature = self.predictor(next_obs)
            return predict_feature, target_feature

    return RNDModel()


def rnd(m, weights, steps=3, update_proportion=0.25):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    rnd_model = load(m, make_rnd(m), weights)
    optimizer = torch.optim.Adam(list(rnd_model.predictor.parameters()), lr=1e-3)
    forward_mse = nn.MSELoss(reduction='none')
    reward_rms = RunningMeanStd()
    obs_rms = RunningMeanStd(shape=(1, 6))
    log = []
    for step in range(steps):
        next_obs = np.random.default_rng(step).standard_normal((16, 6)).astype(np.float32) * 3 + 1
        obs_rms.update(next_obs)
        next_obs_batch = torch.FloatTensor(((next_obs - obs_rms.mean) / np.sqrt(obs_rms.var)).clip(-5, 5))
        # intrinsic reward
        with torch.no_grad():
            target_next_feature = rnd_model.target(next_obs_batch)
            predict_next_feature = rnd_model.predictor(next_obs_batch)
            intrinsic_reward = (target_next_feature - predict_next_feature).pow(2).sum(1) / 2
        reward_rms.update(intrinsic_reward.data.cpu().numpy())
        intrinsic_reward = intrinsic_reward / np.sqrt(reward_rms.var)
        # the predictor's loss on a random proportion of the batch
        predict_next_state_feature, target_next_state_feature = rnd_model(next_obs_batch)
        forward_loss = forward_mse(predict_next_state_feature, target_next_state_feature.detach()).mean(-1)
        mask = torch.rand(len(forward_loss))
        mask = (mask < update_proportion).type(torch.FloatTensor)
        forward_loss = (forward_loss * mask).sum() / torch.max(mask.sum(), torch.Tensor([1]))
        optimizer.zero_grad()
        forward_loss.backward()
        optimizer.step()
        log.append([intrinsic_reward, forward_loss, mask, rnd_model.target[0].weight.grad is None])
    return log, rnd_model.state_dict()


def test_rnd():
    ours, _ = run_both(rnd, weights_of(make_rnd), rtol=1e-4, atol=1e-5)
    for intrinsic_reward, forward_loss, mask, untouched in ours[0]:
        assert forward_loss.shape == (1,) and untouched is True and set(np.unique(mask)) <= {0.0, 1.0}


def make_ngu_embedding(m):
    nn = m.nn

    class EmbeddingNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))
            self.inverse = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

        def forward(self, obs, next_obs):
            e, e_next = self.embed(obs), self.embed(next_obs)
            return self.inverse(torch_cat(e, e_next))

    torch_cat = lambda a, b: m.torch.cat([a, b], dim=-1)
    return EmbeddingNet()


def ngu_episodic(m, weights, k=5, kernel_epsilon=1e-4, cluster_distance=8e-3, c=1e-3, sm=8.0):
    torch, F = m.torch, m.F
    net = load(m, make_ngu_embedding(m), weights)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)
    rng = np.random.default_rng(0)
    obs = torch.from_numpy(rng.standard_normal((33, 4)).astype(np.float32))
    actions = torch.from_numpy(rng.integers(0, 3, 32))
    # the inverse-dynamics loss that trains the embedding
    logits = net(obs[:-1], obs[1:])
    loss = F.cross_entropy(logits, actions)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    # episodic memory: intrinsic reward from the k nearest embeddings seen so far this episode
    with torch.no_grad():
        embeddings = net.embed(obs)
    memory, rewards, running_mean = [], [], 0.0
    for t in range(len(embeddings)):
        controllable_state = embeddings[t]
        if len(memory) < k:
            rewards.append(torch.tensor(0.0))
            memory.append(controllable_state)
            continue
        mem = torch.stack(memory)
        dist = torch.cdist(controllable_state.unsqueeze(0), mem).squeeze(0) ** 2
        dist_k, idx = torch.topk(dist, k, largest=False)
        running_mean = running_mean + (dist_k.mean().item() - running_mean) / (t + 1)
        dist_k = dist_k / (running_mean + 1e-8)
        dist_k = torch.clamp(dist_k - cluster_distance, min=0.0)
        kernel = kernel_epsilon / (dist_k + kernel_epsilon)
        s = torch.sqrt(kernel.sum()) + c
        reward = torch.where(s > sm, torch.tensor(0.0), 1.0 / s)
        rewards.append(reward)
        memory.append(controllable_state)
    return loss, torch.stack(rewards), net.state_dict()


def test_ngu_episodic_novelty():
    ours, _ = run_both(ngu_episodic, weights_of(make_ngu_embedding), rtol=1e-4, atol=1e-6)
    rewards = ours[1]
    assert np.all(rewards[:5] == 0) and np.all(rewards[5:] > 0)


def make_diayn(m, obs_dim=4, num_skills=5):
    nn = m.nn
    return nn.Sequential(nn.Linear(obs_dim, 16), nn.ReLU(), nn.Linear(16, num_skills))


def diayn(m, weights, num_skills=5, steps=3):
    torch, F = m.torch, m.F
    discriminator = load(m, make_diayn(m), weights)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=3e-3)
    p_z = np.full(num_skills, 1.0 / num_skills)
    log = []
    for step in range(steps):
        rng = np.random.default_rng(600 + step)
        next_states = torch.from_numpy(rng.standard_normal((12, 4)).astype(np.float32))
        zs = torch.from_numpy(rng.integers(0, num_skills, 12))
        logits = discriminator(next_states)
        p_z_ = torch.from_numpy(p_z).gather(-1, zs)
        logq_z_ns = F.log_softmax(logits, dim=-1)
        rewards = logq_z_ns.gather(-1, zs.unsqueeze(-1)).detach() - torch.log(p_z_ + 1e-6).unsqueeze(-1)
        discriminator_loss = F.cross_entropy(logits, zs)
        optimizer.zero_grad()
        discriminator_loss.backward()
        optimizer.step()
        log.append([rewards, discriminator_loss, rewards.dtype == torch.float64])
    return log, discriminator.state_dict()


def test_diayn():
    ours, _ = run_both(diayn, weights_of(make_diayn), rtol=1e-5, atol=1e-6)
    assert ours[0][0][2] is True  # float32 log-probabilities minus a float64 prior's log: float64, as PyTorch


# ----------------------------------------------------------------------------------------------
# lweitkamp/option-critic-pytorch: option-value, termination (Bernoulli of sigmoids) and intra-option policies
# over parameter tensors indexed by option, sampled episodes, the critic and actor losses
# ----------------------------------------------------------------------------------------------


def make_option_critic(m, in_features=4, num_actions=2, num_options=3, features=16):
    torch, nn = m.torch, m.nn
    Bernoulli, Categorical = torch.distributions.Bernoulli, torch.distributions.Categorical

    class OptionCriticFeatures(nn.Module):
        def __init__(self, temperature=1.0, eps_start=1.0, eps_min=0.1, eps_decay=int(1e6), eps_test=0.05):
            super(OptionCriticFeatures, self).__init__()
            self.in_features, self.num_actions, self.num_options = in_features, num_actions, num_options
            self.magic_number = features
            self.temperature = temperature
            self.eps_min, self.eps_start, self.eps_decay, self.eps_test = eps_min, eps_start, eps_decay, eps_test
            self.num_steps = 0
            self.features = nn.Sequential(nn.Linear(in_features, 16), nn.ReLU(), nn.Linear(16, features), nn.ReLU())
            self.Q = nn.Linear(features, num_options)  # Policy-Over-Options
            self.terminations = nn.Linear(features, num_options)  # Option-Termination
            self.options_W = nn.Parameter(torch.zeros(num_options, features, num_actions))
            self.options_b = nn.Parameter(torch.zeros(num_options, num_actions))

        def get_state(self, obs):
            if obs.ndim < 4 and obs.ndim > 1:
                pass
            elif obs.ndim == 1:
                obs = obs.unsqueeze(0)
            state = self.features(obs)
            return state

        def get_Q(self, state):
            return self.Q(state)

        def predict_option_termination(self, state, current_option):
            termination = self.terminations(state)[:, current_option].sigmoid()
            option_termination = Bernoulli(termination).sample()
            Q = self.get_Q(state)
            next_option = Q.argmax(dim=-1)
            return bool(option_termination.item()), next_option.item()

        def get_terminations(self, state):
            return self.terminations(state).sigmoid()

        def get_action(self, state, option):
            logits = state.data @ self.options_W[option] + self.options_b[option]
            action_dist = (logits / self.temperature).softmax(dim=-1)
            action_dist = Categorical(action_dist)
            action = action_dist.sample()
            logp = action_dist.log_prob(action)
            entropy = action_dist.entropy()
            return action.item(), logp, entropy

    return OptionCriticFeatures()


def option_critic(m, weights, steps=24, gamma=0.99, termination_reg=0.01, entropy_reg=0.01, batch_size=8):
    torch = m.torch
    torch.manual_seed(0)
    option_critic = load(m, make_option_critic(m), weights)
    with torch.no_grad():
        option_critic.options_W.normal_(0, 0.3)  # (the repository leaves them zero: every option starts uniform)
    option_critic_prime = copy.deepcopy(option_critic)
    optim = torch.optim.RMSprop(option_critic.parameters(), lr=1e-3)

    def to_tensor(obs):
        obs = np.asarray(obs)
        obs = torch.from_numpy(obs).float()
        return obs

    def critic_loss(model, model_prime, data_batch):
        obs, options, rewards, next_obs, dones = data_batch
        batch_idx = torch.arange(len(options)).long()
        options = torch.LongTensor(options)
        rewards = torch.FloatTensor(rewards)
        masks = 1 - torch.FloatTensor(dones)
        states = model.get_state(to_tensor(obs)).squeeze(0)
        Q = model.get_Q(states)
        next_states_prime = model_prime.get_state(to_tensor(next_obs)).squeeze(0)
        next_Q_prime = model_prime.get_Q(next_states_prime)  # detach?
        next_states = model.get_state(to_tensor(next_obs)).squeeze(0)
        next_termination_probs = model.get_terminations(next_states).detach()
        next_options_term_prob = next_termination_probs[batch_idx, options]
        gt = rewards + masks * gamma * ((1 - next_options_term_prob) * next_Q_prime[batch_idx, options] + next_options_term_prob * next_Q_prime.max(dim=-1)[0])
        td_err = (Q[batch_idx, options] - gt.detach()).pow(2).mul(0.5).mean()
        return td_err

    def actor_loss_fn(obs, option, logp, entropy, reward, done, next_obs, model, model_prime):
        state = model.get_state(to_tensor(obs))
        next_state = model.get_state(to_tensor(next_obs))
        next_state_prime = model_prime.get_state(to_tensor(next_obs))
        option_term_prob = model.get_terminations(state)[:, option]
        next_option_term_prob = model.get_terminations(next_state)[:, option].detach()
        Q = model.get_Q(state).detach().squeeze()
        next_Q_prime = model_prime.get_Q(next_state_prime).detach().squeeze()
        gt = reward + (1 - done) * gamma * ((1 - next_option_term_prob) * next_Q_prime[option] + next_option_term_prob * next_Q_prime.max(dim=-1)[0])
        termination_loss = option_term_prob * (Q[option].detach() - Q.max(dim=-1)[0].detach() + termination_reg) * (1 - done)
        policy_loss = -logp * (gt.detach() - Q[option]) - entropy_reg * entropy
        actor_loss = termination_loss + policy_loss
        return actor_loss

    rng = np.random.default_rng(0)
    env = CartPoleNumpy(rng)
    obs = env.reset()
    state = option_critic.get_state(to_tensor(obs))
    greedy_option = option_critic.get_Q(state).argmax(dim=-1).item()
    current_option, option_termination = 0, True
    buffer, log, trajectory = [], [], []
    for step in range(steps):
        epsilon = 0.1
        if option_termination:
            current_option = int(rng.integers(3)) if rng.uniform() < epsilon else greedy_option
        action, logp, entropy = option_critic.get_action(state, current_option)
        next_obs, reward, done = env.step(action)
        buffer.append((obs, current_option, reward, next_obs, done))
        trajectory.append((current_option, action))
        actor_loss, critic_loss_ = 0.0, 0.0
        if len(buffer) > batch_size:
            actor_loss = actor_loss_fn(obs, current_option, logp, entropy, reward, done, next_obs, option_critic, option_critic_prime)
            loss = actor_loss
            if step % 2 == 0:
                batch = [buffer[i] for i in rng.integers(len(buffer), size=batch_size)]
                data_batch = [list(x) for x in zip(*batch)]
                critic_loss_ = critic_loss(option_critic, option_critic_prime, data_batch)
                loss += critic_loss_
            optim.zero_grad()
            loss.backward()
            optim.step()
            log.append([actor_loss, critic_loss_])
            if step % 6 == 0:
                option_critic_prime.load_state_dict(option_critic.state_dict())
        state = option_critic.get_state(to_tensor(next_obs))
        option_termination, greedy_option = option_critic.predict_option_termination(state, current_option)
        obs = next_obs
        if done:
            obs = env.reset()
            state = option_critic.get_state(to_tensor(obs))
            option_termination = True
    return trajectory, log, option_critic.state_dict()


class CartPoleNumpy:
    """A cart-pole with gym's dynamics whose start states come from a given NumPy generator."""

    def __init__(self, rng):
        self.rng = rng

    def reset(self):
        self.state = self.rng.uniform(-0.05, 0.05, 4)
        self.steps = 0
        return self.state.astype(np.float32)

    def step(self, action):
        x, x_dot, theta, theta_dot = self.state
        force = 10.0 if action == 1 else -10.0
        costheta, sintheta = np.cos(theta), np.sin(theta)
        temp = (force + 0.05 * theta_dot ** 2 * sintheta) / 1.1
        thetaacc = (9.8 * sintheta - costheta * temp) / (0.5 * (4.0 / 3.0 - 0.1 * costheta ** 2 / 1.1))
        xacc = temp - 0.05 * thetaacc * costheta / 1.1
        self.state = np.array([x + 0.02 * x_dot, x_dot + 0.02 * xacc, theta + 0.02 * theta_dot, theta_dot + 0.02 * thetaacc])
        self.steps += 1
        done = bool(abs(self.state[0]) > 2.4 or abs(self.state[2]) > 0.2095 or self.steps >= 10)
        return self.state.astype(np.float32), 1.0, done


def test_option_critic():
    ours, _ = run_both(option_critic, weights_of(make_option_critic), rtol=1e-4, atol=1e-5)
    assert len(ours[1]) > 0 and len({o for o, a in ours[0]}) >= 1


# ----------------------------------------------------------------------------------------------
# Hindsight experience replay (TianhongDai/hindsight-experience-replay): goal-conditioned DDPG with 'future'
# relabelling, o/g normalisers, target clipping to [-1/(1-gamma), 0] and an action L2 penalty; CURL's contrastive
# loss (a bilinear W, logits shifted by their row maximum, a momentum key encoder)
# ----------------------------------------------------------------------------------------------


def make_her(m, obs=4, goal=2, action=2, hidden=16, max_action=1.0):
    torch, nn, F = m.torch, m.nn, m.F

    class actor(nn.Module):
        def __init__(self):
            super(actor, self).__init__()
            self.max_action = max_action
            self.fc1 = nn.Linear(obs + goal, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.action_out = nn.Linear(hidden, action)

        def forward(self, x):
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            actions = self.max_action * torch.tanh(self.action_out(x))
            return actions

    class critic(nn.Module):
        def __init__(self):
            super(critic, self).__init__()
            self.max_action = max_action
            self.fc1 = nn.Linear(obs + goal + action, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.q_out = nn.Linear(hidden, 1)

        def forward(self, x, actions):
            x = torch.cat([x, actions / self.max_action], dim=1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            q_value = self.q_out(x)
            return q_value

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor_network, self.critic_network = actor(), critic()

    return Nets()


def her(m, weights, n_batches=3, batch_size=16, gamma=0.98, replay_k=4, clip_obs=200, clip_range=5, action_l2=1.0, polyak=0.95):
    torch = m.torch
    nets = load(m, make_her(m), weights)
    actor_network, critic_network = nets.actor_network, nets.critic_network
    actor_target_network, critic_target_network = copy.deepcopy(actor_network), copy.deepcopy(critic_network)
    actor_optim = torch.optim.Adam(actor_network.parameters(), lr=1e-3)
    critic_optim = torch.optim.Adam(critic_network.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    T, n_episodes = 6, 5
    buffers = {'obs': rng.standard_normal((n_episodes, T + 1, 4)), 'ag': rng.standard_normal((n_episodes, T + 1, 2)),
               'g': rng.standard_normal((n_episodes, T, 2)), 'actions': rng.uniform(-1, 1, (n_episodes, T, 2))}
    o_mean, o_std = buffers['obs'].mean(axis=(0, 1)), buffers['obs'].std(axis=(0, 1)) + 1e-2
    g_mean, g_std = buffers['g'].mean(axis=(0, 1)), buffers['g'].std(axis=(0, 1)) + 1e-2
    future_p = 1 - (1. / (1 + replay_k))

    def compute_reward(achieved_goal, goal):
        d = np.linalg.norm(achieved_goal - goal, axis=-1)
        return -(d > 0.5).astype(np.float32)

    def sample_her_transitions(episode_batch, batch_size_in_transitions):
        rollout_batch_size = episode_batch['actions'].shape[0]
        batch_size = batch_size_in_transitions
        episode_idxs = rng.integers(0, rollout_batch_size, batch_size)
        t_samples = rng.integers(T, size=batch_size)
        transitions = {key: episode_batch[key][episode_idxs, t_samples].copy() for key in episode_batch.keys()}
        transitions['obs_next'] = episode_batch['obs'][episode_idxs, t_samples + 1]
        transitions['ag_next'] = episode_batch['ag'][episode_idxs, t_samples + 1]
        her_indexes = np.where(rng.uniform(size=batch_size) < future_p)
        future_offset = rng.uniform(size=batch_size) * (T - t_samples)
        future_offset = future_offset.astype(int)
        future_t = (t_samples + 1 + future_offset)[her_indexes]
        future_ag = episode_batch['ag'][episode_idxs[her_indexes], future_t]
        transitions['g'][her_indexes] = future_ag
        transitions['r'] = np.expand_dims(compute_reward(transitions['ag_next'], transitions['g']), 1)
        return transitions

    def _preproc_og(o, g):
        o = np.clip(o, -clip_obs, clip_obs)
        g = np.clip(g, -clip_obs, clip_obs)
        return o, g

    def _preproc_inputs(o, g):
        o_norm = np.clip((o - o_mean) / o_std, -clip_range, clip_range)
        g_norm = np.clip((g - g_mean) / g_std, -clip_range, clip_range)
        return np.concatenate([o_norm, g_norm], axis=-1)

    log = []
    for _ in range(n_batches):
        transitions = sample_her_transitions(buffers, batch_size)
        o, o_next, g = transitions['obs'], transitions['obs_next'], transitions['g']
        transitions['obs'], transitions['g'] = _preproc_og(o, g)
        transitions['obs_next'], transitions['g_next'] = _preproc_og(o_next, g)
        inputs_norm = _preproc_inputs(transitions['obs'], transitions['g'])
        inputs_next_norm = _preproc_inputs(transitions['obs_next'], transitions['g_next'])
        inputs_norm_tensor = torch.tensor(inputs_norm, dtype=torch.float32)
        inputs_next_norm_tensor = torch.tensor(inputs_next_norm, dtype=torch.float32)
        actions_tensor = torch.tensor(transitions['actions'], dtype=torch.float32)
        r_tensor = torch.tensor(transitions['r'], dtype=torch.float32)
        with torch.no_grad():
            actions_next = actor_target_network(inputs_next_norm_tensor)
            q_next_value = critic_target_network(inputs_next_norm_tensor, actions_next)
            q_next_value = q_next_value.detach()
            target_q_value = r_tensor + gamma * q_next_value
            target_q_value = target_q_value.detach()
            # clip the q value
            clip_return = 1 / (1 - gamma)
            target_q_value = torch.clamp(target_q_value, -clip_return, 0)
        real_q_value = critic_network(inputs_norm_tensor, actions_tensor)
        critic_loss = (target_q_value - real_q_value).pow(2).mean()
        actions_real = actor_network(inputs_norm_tensor)
        actor_loss = -critic_network(inputs_norm_tensor, actions_real).mean()
        actor_loss += action_l2 * (actions_real / 1.0).pow(2).mean()
        actor_optim.zero_grad()
        actor_loss.backward()
        actor_optim.step()
        critic_optim.zero_grad()
        critic_loss.backward()
        critic_optim.step()
        for target_param, param in zip(actor_target_network.parameters(), actor_network.parameters()):
            target_param.data.copy_((1 - polyak) * param.data + polyak * target_param.data)
        for target_param, param in zip(critic_target_network.parameters(), critic_network.parameters()):
            target_param.data.copy_((1 - polyak) * param.data + polyak * target_param.data)
        log.append([actor_loss, critic_loss, r_tensor])
    return log, nets.state_dict(), critic_target_network.state_dict()


def test_hindsight_experience_replay():
    ours, _ = run_both(her, weights_of(make_her), rtol=1e-4, atol=1e-5)
    for actor_loss, critic_loss, r in ours[0]:
        assert set(np.unique(r)) <= {-1.0, 0.0} and critic_loss >= 0
