# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Reinforcement learning programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights, on a CartPole written in NumPy, with the same actions fed to both where the
program samples (each sampling call is kept, and its shape, dtype and statistics are checked).

pytorch/examples' REINFORCE (``Categorical(probs)``, returns by a reversed loop into a ``deque``,
``torch.tensor(deque)``, normalised by ``std() + eps``, ``torch.cat`` of the per-step losses) and
actor-critic (a ``SavedAction`` named tuple, ``smooth_l1_loss(value, torch.tensor([R]))`` with R a 0-d
tensor, ``torch.stack(...).sum()``); cleanRL's PPO (orthogonal ``layer_init``, storage tensors written
by step, GAE in a reversed loop, minibatches by a shuffled index, the clipped surrogate with
``torch.max``, the clipped value loss, approx-KL and clip fractions, ``clip_grad_norm_``, a learning
rate annealed through ``param_groups``); and cleanRL's SAC (a tanh-squashed Gaussian, its log-prob
correction, twin Q networks with ``torch.min``, Polyak target updates through ``.data.copy_``, the
entropy temperature learnt as a bare leaf tensor)."""

from collections import deque, namedtuple

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of


class CartPole:
    """gym's CartPole-v1 dynamics in NumPy (Euler steps), deterministic given the start state; its
    observations are float32, as gym's."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self):
        self.state = self.rng.uniform(-0.05, 0.05, 4)
        self.steps = 0
        return np.array(self.state, dtype=np.float32)

    def step(self, action):
        x, x_dot, theta, theta_dot = self.state
        force = 10.0 if action == 1 else -10.0
        costheta, sintheta = np.cos(theta), np.sin(theta)
        temp = (force + 0.05 * theta_dot ** 2 * sintheta) / 1.1
        thetaacc = (9.8 * sintheta - costheta * temp) / (0.5 * (4.0 / 3.0 - 0.1 * costheta ** 2 / 1.1))
        xacc = temp - 0.05 * thetaacc * costheta / 1.1
        x, x_dot = x + 0.02 * x_dot, x_dot + 0.02 * xacc
        theta, theta_dot = theta + 0.02 * theta_dot, theta_dot + 0.02 * thetaacc
        self.state = np.array([x, x_dot, theta, theta_dot])
        self.steps += 1
        done = bool(abs(x) > 2.4 or abs(theta) > 12 * 2 * np.pi / 360 or self.steps >= 60)
        return np.array(self.state, dtype=np.float32), 1.0, done, {}


# ----------------------------------------------------------------------------------------------
# pytorch/examples: REINFORCE
# ----------------------------------------------------------------------------------------------


def make_reinforce_policy(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Policy(nn.Module):
        def __init__(self):
            super(Policy, self).__init__()
            self.affine1 = nn.Linear(4, 32)
            self.dropout = nn.Dropout(p=0.6)
            self.affine2 = nn.Linear(32, 2)

            self.saved_log_probs = []
            self.rewards = []

        def forward(self, x):
            x = self.affine1(x)
            x = self.dropout(x)
            x = F.relu(x)
            action_scores = self.affine2(x)
            return F.softmax(action_scores, dim=1)

    return Policy()


def reinforce(m, weights, episodes=3):
    torch, optim = m.torch, m.optim
    Categorical = torch.distributions.Categorical
    policy = load(m, make_reinforce_policy(m), weights)
    policy.eval()  # dropout off: both libraries see the same network
    optimizer = optim.Adam(policy.parameters(), lr=1e-2)
    eps = np.finfo(np.float32).eps.item()
    gamma = 0.99
    chooser = np.random.default_rng(5)
    sampled = []

    def select_action(state):
        state = torch.from_numpy(state).float().unsqueeze(0)
        probs = policy(state)
        m_ = Categorical(probs)
        action = m_.sample()
        sampled.append((tuple(action.shape), str(action.dtype).split(".")[-1]))
        action = torch.tensor([int(chooser.random() < probs[0, 1].item())])  # the same draw in both
        policy.saved_log_probs.append(m_.log_prob(action))
        return action.item()

    def finish_episode():
        R = 0
        policy_loss = []
        returns = deque()
        for r in policy.rewards[::-1]:
            R = r + gamma * R
            returns.appendleft(R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for log_prob, R in zip(policy.saved_log_probs, returns):
            policy_loss.append(-log_prob * R)
        optimizer.zero_grad()
        policy_loss = torch.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        del policy.rewards[:]
        del policy.saved_log_probs[:]
        return policy_loss.item(), returns

    env = CartPole(0)
    running_reward = 10
    history = []
    for i_episode in range(episodes):
        state, ep_reward = env.reset(), 0
        for t in range(1, 10000):
            action = select_action(state)
            state, reward, done, _ = env.step(action)
            policy.rewards.append(reward)
            ep_reward += reward
            if done:
                break
        running_reward = 0.05 * ep_reward + (1 - 0.05) * running_reward
        loss, returns = finish_episode()
        history.append((loss, ep_reward, running_reward))
    return {"history": history, "returns": returns, "sampled": sorted(set(sampled)),
            "params": [p.detach() for p in policy.parameters()], "grads": [p.grad for p in policy.parameters()]}


def test_reinforce():
    weights = weights_of(make_reinforce_policy)
    ours, _ = run_both(reinforce, weights, rtol=1e-5, atol=1e-5)  # (the loss is a sum that nearly cancels)
    assert ours["sampled"] == [((1,), "int64")]
    returns = ours["returns"]
    assert returns.dtype == np.float32  # a deque of Python floats becomes the default dtype
    assert abs(returns.mean()) < 1e-6 and returns.std(ddof=1) == pytest.approx(1.0, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# pytorch/examples: actor-critic
# ----------------------------------------------------------------------------------------------

SavedAction = namedtuple('SavedAction', ['log_prob', 'value'])


def make_actor_critic(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Policy(nn.Module):
        def __init__(self):
            super(Policy, self).__init__()
            self.affine1 = nn.Linear(4, 32)
            self.action_head = nn.Linear(32, 2)
            self.value_head = nn.Linear(32, 1)
            self.saved_actions = []
            self.rewards = []

        def forward(self, x):
            x = F.relu(self.affine1(x))
            action_prob = F.softmax(self.action_head(x), dim=-1)
            state_values = self.value_head(x)
            return action_prob, state_values

    return Policy()


def actor_critic(m, weights, episodes=3):
    torch, F, optim = m.torch, m.F, m.optim
    Categorical = torch.distributions.Categorical
    model = load(m, make_actor_critic(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=3e-2)
    eps = np.finfo(np.float32).eps.item()
    chooser = np.random.default_rng(6)

    def select_action(state):
        state = torch.from_numpy(state).float()
        probs, state_value = model(state)
        m_ = Categorical(probs)
        action = m_.sample()
        assert action.shape == () and action.dtype == torch.int64
        action = torch.tensor(int(chooser.random() < probs[1].item()))
        model.saved_actions.append(SavedAction(m_.log_prob(action), state_value))
        return action.item()

    def finish_episode():
        R = 0
        saved_actions = model.saved_actions
        policy_losses = []
        value_losses = []
        returns = []
        for r in model.rewards[::-1]:
            R = r + 0.99 * R
            returns.insert(0, R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for (log_prob, value), R in zip(saved_actions, returns):
            advantage = R - value.item()
            policy_losses.append(-log_prob * advantage)
            value_losses.append(F.smooth_l1_loss(value, torch.tensor([R])))
        optimizer.zero_grad()
        loss = torch.stack(policy_losses).sum() + torch.stack(value_losses).sum()
        loss.backward()
        optimizer.step()
        del model.rewards[:]
        del model.saved_actions[:]
        return loss.item(), policy_losses[0], value_losses[0]

    env = CartPole(1)
    history = []
    for i_episode in range(episodes):
        state, ep_reward = env.reset(), 0
        for t in range(1, 10000):
            action = select_action(state)
            state, reward, done, _ = env.step(action)
            model.rewards.append(reward)
            ep_reward += reward
            if done:
                break
        history.append((ep_reward,) + finish_episode())
    return {"history": history, "grads": [p.grad for p in model.parameters()],
            "params": [p.detach() for p in model.parameters()]}


def test_actor_critic():
    weights = weights_of(make_actor_critic)
    ours, _ = run_both(actor_critic, weights, rtol=1e-5, atol=1e-6)
    ep_reward, loss, policy_loss, value_loss = ours["history"][0]
    assert policy_loss.shape == () and value_loss.shape == ()


def test_tensor_of_a_list_holding_a_zero_dim_tensor():
    """actor-critic's torch.tensor([R]) with R a 0-d float32 tensor: a float32 vector of one value."""
    torch = OURS.torch
    R = torch.tensor([1.5, -0.25])[1]
    t = torch.tensor([R])
    assert t.shape == (1,) and t.dtype == torch.float32 and t.tolist() == [-0.25]
    t64 = torch.tensor([torch.tensor(2.0, dtype=torch.float64), 3])
    assert t64.dtype == torch.float64 and t64.tolist() == [2.0, 3.0]


# ----------------------------------------------------------------------------------------------
# cleanRL's ppo.py (discrete actions)
# ----------------------------------------------------------------------------------------------


def make_agent(m):
    torch, nn = m.torch, m.nn
    Categorical = torch.distributions.Categorical

    def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, bias_const)
        return layer

    class Agent(nn.Module):
        def __init__(self):
            super().__init__()
            self.critic = nn.Sequential(
                layer_init(nn.Linear(4, 32)), nn.Tanh(),
                layer_init(nn.Linear(32, 32)), nn.Tanh(),
                layer_init(nn.Linear(32, 1), std=1.0))
            self.actor = nn.Sequential(
                layer_init(nn.Linear(4, 32)), nn.Tanh(),
                layer_init(nn.Linear(32, 32)), nn.Tanh(),
                layer_init(nn.Linear(32, 2), std=0.01))

        def get_value(self, x):
            return self.critic(x)

        def get_action_and_value(self, x, action=None):
            logits = self.actor(x)
            probs = Categorical(logits=logits)
            if action is None:
                action = probs.sample()
            return action, probs.log_prob(action), probs.entropy(), self.critic(x)

    return Agent()


def ppo(m, weights, num_iterations=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    num_envs, num_steps = 4, 16
    batch_size = num_envs * num_steps
    num_minibatches, update_epochs = 4, 2
    minibatch_size = batch_size // num_minibatches
    learning_rate, gamma, gae_lambda, clip_coef = 2.5e-4 * 10, 0.99, 0.95, 0.2
    ent_coef, vf_coef, max_grad_norm = 0.01, 0.5, 0.5
    envs = [CartPole(10 + i) for i in range(num_envs)]
    chooser = np.random.default_rng(7)
    shuffler = np.random.default_rng(8)

    agent = load(m, make_agent(m), weights)
    optimizer = optim.Adam(agent.parameters(), lr=learning_rate, eps=1e-5)

    obs = torch.zeros((num_steps, num_envs) + (4,))
    actions = torch.zeros((num_steps, num_envs) + ())
    logprobs = torch.zeros((num_steps, num_envs))
    rewards = torch.zeros((num_steps, num_envs))
    dones = torch.zeros((num_steps, num_envs))
    values = torch.zeros((num_steps, num_envs))

    next_obs = torch.Tensor(np.stack([e.reset() for e in envs]))
    next_done = torch.zeros(num_envs)
    history = []
    sample_check = None
    for iteration in range(1, num_iterations + 1):
        frac = 1.0 - (iteration - 1.0) / num_iterations
        lrnow = frac * learning_rate
        optimizer.param_groups[0]["lr"] = lrnow

        for step in range(0, num_steps):
            obs[step] = next_obs
            dones[step] = next_done
            with torch.no_grad():
                if sample_check is None:
                    sampled, *_ = agent.get_action_and_value(next_obs)
                    sample_check = (tuple(sampled.shape), sampled.dtype == torch.int64)
                fed = torch.tensor((chooser.random(num_envs) < 0.5).astype(np.int64))
                action, logprob, _, value = agent.get_action_and_value(next_obs, fed)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob
            results = [e.step(a) for e, a in zip(envs, action.cpu().numpy())]
            next_obs_np = np.stack([e.reset() if r[2] else r[0] for e, r in zip(envs, results)])
            reward = np.array([r[1] for r in results])
            # cleanRL's next_done is gym's bool array, which torch.Tensor makes float32; chainrule's Tensor(array)
            # keeps an array's dtype (README), so 1.0 - next_done would be refused: floats given here
            next_done_np = np.array([r[2] for r in results], dtype=np.float32)
            rewards[step] = torch.tensor(reward).to("cpu").view(-1)
            next_obs, next_done = torch.Tensor(next_obs_np).to("cpu"), torch.Tensor(next_done_np).to("cpu")

        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards).to("cpu")
            lastgaelam = 0
            for t in reversed(range(num_steps)):
                if t == num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        b_obs = obs.reshape((-1,) + (4,))
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1,) + ())
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        b_inds = np.arange(batch_size)
        clipfracs = []
        for epoch in range(update_epochs):
            shuffler.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                end = start + minibatch_size
                mb_inds = b_inds[start:end]

                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions.long()[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                newvalue = newvalue.view(-1)
                v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -clip_coef, clip_coef)
                v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
                v_loss = 0.5 * v_loss_max.mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - ent_coef * entropy_loss + v_loss * vf_coef

                optimizer.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
                optimizer.step()
                history.append((loss.item(), pg_loss.item(), v_loss.item(), entropy_loss.item(),
                                approx_kl.item(), old_approx_kl.item(), grad_norm.item()))

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
    return {"history": history, "clipfracs": clipfracs, "explained_var": explained_var, "advantages": advantages,
            "lr": optimizer.param_groups[0]["lr"], "sample_check": sample_check,
            "params": [p.detach() for p in agent.parameters()]}


def test_cleanrl_ppo():
    weights = weights_of(make_agent)
    ours, _ = run_both(ppo, weights, rtol=1e-4, atol=1e-5)
    assert ours["sample_check"] == ((4,), True)
    assert ours["lr"] == pytest.approx(2.5e-3 / 2)
    assert ours["history"][0][4] == pytest.approx(0.0, abs=1e-6)  # first minibatch: the policy has not moved


def test_gae_by_hand():
    """The reversed GAE loop against the closed form sum_l (gamma lambda)^l delta_{t+l} with no episode end."""
    torch = OURS.torch
    rng = np.random.default_rng(0)
    r, v = rng.standard_normal(6), rng.standard_normal(7)
    gamma, lam = 0.9, 0.8
    rewards, values = torch.tensor(r), torch.tensor(v)
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(6)):
        delta = rewards[t] + gamma * values[t + 1] - values[t]
        advantages[t] = lastgaelam = delta + gamma * lam * lastgaelam
    deltas = r + gamma * v[1:] - v[:-1]
    expected = [sum((gamma * lam) ** l * deltas[t + l] for l in range(6 - t)) for t in range(6)]
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-12)
    assert advantages.dtype == torch.float64


def test_categorical_sampling_statistics():
    torch = OURS.torch
    torch.manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    d = torch.distributions.Categorical(logits=logits)
    draws = d.sample((20000,))
    assert draws.shape == (20000, 2) and draws.dtype == torch.int64
    freq = np.stack([np.bincount(draws[:, i].numpy(), minlength=3) / 20000 for i in range(2)])
    np.testing.assert_allclose(freq, d.probs.numpy(), atol=0.015)
    p = np.exp([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(d.entropy().numpy(), -(p * np.log(p)).sum(1), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# cleanRL's sac_continuous_action.py (the update, on a fixed replay batch)
# ----------------------------------------------------------------------------------------------

LOG_STD_MAX = 2
LOG_STD_MIN = -5


def make_sac(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SoftQNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3 + 1, 32)
            self.fc2 = nn.Linear(32, 32)
            self.fc3 = nn.Linear(32, 1)

        def forward(self, x, a):
            x = torch.cat([x, a], 1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3, 32)
            self.fc2 = nn.Linear(32, 32)
            self.fc_mean = nn.Linear(32, 1)
            self.fc_logstd = nn.Linear(32, 1)
            high, low = np.array([2.0]), np.array([-2.0])
            self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
            self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))
            self.noise = None

        def forward(self, x):
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            mean = self.fc_mean(x)
            log_std = self.fc_logstd(x)
            log_std = torch.tanh(log_std)
            log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
            return mean, log_std

        def get_action(self, x):
            mean, log_std = self(x)
            std = log_std.exp()
            normal = torch.distributions.Normal(mean, std)
            x_t = normal.rsample()  # for reparameterization trick (mean + std * N(0,1))
            if self.noise is not None:
                x_t = mean + std * next(self.noise)  # the same draw in both libraries
            y_t = torch.tanh(x_t)
            action = y_t * self.action_scale + self.action_bias
            log_prob = normal.log_prob(x_t)
            log_prob -= torch.log(self.action_scale * (1 - y_t.pow(2)) + 1e-6)
            log_prob = log_prob.sum(1, keepdim=True)
            mean = torch.tanh(mean) * self.action_scale + self.action_bias
            return action, log_prob, mean

    return nn.ModuleDict({"actor": Actor(), "qf1": SoftQNetwork(), "qf2": SoftQNetwork(),
                          "qf1_target": SoftQNetwork(), "qf2_target": SoftQNetwork()})


def sac(m, weights, updates=4):
    torch, F, optim = m.torch, m.F, m.optim
    nets = load(m, make_sac(m), weights)
    actor, qf1, qf2, qf1_target, qf2_target = (nets[k] for k in ("actor", "qf1", "qf2", "qf1_target", "qf2_target"))
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=1e-3)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=3e-4)
    target_entropy = -torch.prod(torch.Tensor((1,)).to("cpu")).item()
    log_alpha = torch.zeros(1, requires_grad=True, device="cpu")
    alpha = log_alpha.exp().item()
    a_optimizer = optim.Adam([log_alpha], lr=1e-3)
    gamma, tau = 0.99, 0.005
    rng = np.random.default_rng(9)
    actor.noise = iter([torch.tensor(rng.standard_normal((32, 1)).astype(np.float32)) for _ in range(3 * updates)])
    history = []
    for global_step in range(updates):
        observations = torch.tensor(rng.standard_normal((32, 3)).astype(np.float32))
        next_observations = torch.tensor(rng.standard_normal((32, 3)).astype(np.float32))
        acts = torch.tensor(rng.uniform(-2, 2, (32, 1)).astype(np.float32))
        rews = torch.tensor(rng.standard_normal((32, 1)).astype(np.float32))
        dones_ = torch.tensor((rng.random((32, 1)) < 0.1).astype(np.float32))
        with torch.no_grad():
            next_state_actions, next_state_log_pi, _ = actor.get_action(next_observations)
            qf1_next_target = qf1_target(next_observations, next_state_actions)
            qf2_next_target = qf2_target(next_observations, next_state_actions)
            min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
            next_q_value = rews.flatten() + (1 - dones_.flatten()) * gamma * (min_qf_next_target).view(-1)

        qf1_a_values = qf1(observations, acts).view(-1)
        qf2_a_values = qf2(observations, acts).view(-1)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        qf_loss = qf1_loss + qf2_loss

        q_optimizer.zero_grad()
        qf_loss.backward()
        q_optimizer.step()

        pi, log_pi, _ = actor.get_action(observations)
        qf1_pi = qf1(observations, pi)
        qf2_pi = qf2(observations, pi)
        min_qf_pi = torch.min(qf1_pi, qf2_pi)
        actor_loss = ((alpha * log_pi) - min_qf_pi).mean()

        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()

        with torch.no_grad():
            _, log_pi, _ = actor.get_action(observations)
        alpha_loss = (-log_alpha.exp() * (log_pi + target_entropy)).mean()

        a_optimizer.zero_grad()
        alpha_loss.backward()
        a_optimizer.step()
        alpha = log_alpha.exp().item()

        for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
            target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
        for param, target_param in zip(qf2.parameters(), qf2_target.parameters()):
            target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
        history.append((qf_loss.item(), actor_loss.item(), alpha_loss.item(), alpha))
    return {"history": history, "target": [p.detach() for p in qf1_target.parameters()],
            "actor_grads": [p.grad for p in actor.parameters()], "log_alpha_grad": log_alpha.grad,
            "target_entropy": target_entropy}


def test_cleanrl_sac_update():
    weights = weights_of(make_sac)
    ours, _ = run_both(sac, weights, rtol=1e-5, atol=1e-6)
    assert ours["target_entropy"] == -1.0 and ours["log_alpha_grad"].shape == (1,)
    assert all(0 < h[3] < 1.01 for h in ours["history"])


def test_tanh_squashed_gaussian_log_prob():
    """SAC's log-prob of a = tanh(u): log N(u; mu, sigma) - log(1 - tanh(u)^2), against NumPy, and
    rsample's gradient: d a / d mu = 1 - tanh(u)^2."""
    torch = OURS.torch
    mu = torch.tensor([[0.3], [-1.2]], requires_grad=True)
    sigma = torch.tensor([[0.5], [2.0]])
    normal = torch.distributions.Normal(mu, sigma)
    u = normal.rsample()
    a = torch.tanh(u)
    log_prob = (normal.log_prob(u) - torch.log(1 - a.pow(2) + 1e-6)).sum(1)
    un, mun, sn = u.detach().numpy().astype(np.float64), np.array([[0.3], [-1.2]]), np.array([[0.5], [2.0]])
    expected = (-0.5 * ((un - mun) / sn) ** 2 - np.log(sn) - 0.5 * np.log(2 * np.pi)
                - np.log(1 - np.tanh(un) ** 2 + 1e-6)).sum(1)
    np.testing.assert_allclose(log_prob.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    a.sum().backward()
    np.testing.assert_allclose(mu.grad.numpy(), 1 - np.tanh(un) ** 2, rtol=1e-5, atol=1e-7)  # (float32 1 - tanh²)


# ----------------------------------------------------------------------------------------------
# Rainbow (Kaixhin/Rainbow): NoisyLinear, a dueling distributional head, the C51 projection by index_add_
# ----------------------------------------------------------------------------------------------


def make_rainbow(m):
    torch, nn, F = m.torch, m.nn, m.F
    import math

    class NoisyLinear(nn.Module):
        def __init__(self, in_features, out_features, std_init=0.5):
            super(NoisyLinear, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.std_init = std_init
            self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
            self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
            self.register_buffer('weight_epsilon', torch.empty(out_features, in_features))
            self.bias_mu = nn.Parameter(torch.empty(out_features))
            self.bias_sigma = nn.Parameter(torch.empty(out_features))
            self.register_buffer('bias_epsilon', torch.empty(out_features))
            self.reset_parameters()
            self.noise = None  # the test's draws, the same in both libraries
            self.reset_noise()

        def reset_parameters(self):
            mu_range = 1 / math.sqrt(self.in_features)
            self.weight_mu.data.uniform_(-mu_range, mu_range)
            self.weight_sigma.data.fill_(self.std_init / math.sqrt(self.in_features))
            self.bias_mu.data.uniform_(-mu_range, mu_range)
            self.bias_sigma.data.fill_(self.std_init / math.sqrt(self.out_features))

        def _scale_noise(self, size):
            x = torch.randn(size, device=self.weight_mu.device) if self.noise is None else next(self.noise)[:size]
            return x.sign().mul_(x.abs().sqrt_())

        def reset_noise(self):
            epsilon_in = self._scale_noise(self.in_features)
            epsilon_out = self._scale_noise(self.out_features)
            self.weight_epsilon.copy_(epsilon_out.ger(epsilon_in))
            self.bias_epsilon.copy_(epsilon_out)

        def forward(self, input):
            if self.training:
                return F.linear(input, self.weight_mu + self.weight_sigma * self.weight_epsilon,
                                self.bias_mu + self.bias_sigma * self.bias_epsilon)
            else:
                return F.linear(input, self.weight_mu, self.bias_mu)

    class DQN(nn.Module):
        def __init__(self, action_space=3, atoms=11, hidden_size=16, noisy_std=0.1):
            super(DQN, self).__init__()
            self.atoms = atoms
            self.action_space = action_space
            self.convs = nn.Sequential(nn.Conv2d(2, 4, 3, stride=1, padding=0), nn.ReLU())
            self.conv_output_size = 4 * 4 * 4
            self.fc_h_v = NoisyLinear(self.conv_output_size, hidden_size, std_init=noisy_std)
            self.fc_h_a = NoisyLinear(self.conv_output_size, hidden_size, std_init=noisy_std)
            self.fc_z_v = NoisyLinear(hidden_size, self.atoms, std_init=noisy_std)
            self.fc_z_a = NoisyLinear(hidden_size, action_space * self.atoms, std_init=noisy_std)

        def forward(self, x, log=False):
            x = self.convs(x)
            x = x.view(-1, self.conv_output_size)
            v = self.fc_z_v(F.relu(self.fc_h_v(x)))  # Value stream
            a = self.fc_z_a(F.relu(self.fc_h_a(x)))  # Advantage stream
            v, a = v.view(-1, 1, self.atoms), a.view(-1, self.action_space, self.atoms)
            q = v + a - a.mean(1, keepdim=True)  # Combine streams
            if log:  # Use log softmax for numerical stability
                q = F.log_softmax(q, dim=2)  # Log probabilities with action over second dimension
            else:
                q = F.softmax(q, dim=2)  # Probabilities with action over second dimension
            return q

        def reset_noise(self):
            for name, module in self.named_children():
                if 'fc' in name:
                    module.reset_noise()

    return DQN()


def rainbow(m, weights, updates=3):
    torch, optim = m.torch, m.optim
    atoms, Vmin, Vmax, batch_size, n, discount = 11, -5.0, 5.0, 8, 3, 0.99
    online_net = load(m, make_rainbow(m), weights)
    target_net = load(m, make_rainbow(m), weights)
    rng = np.random.default_rng(12)
    noise = [torch.tensor(rng.standard_normal(64).astype(np.float32)) for _ in range(200)]
    for net in (online_net, target_net):
        for module in net.children():
            module.noise = iter(noise)
        net.reset_noise()
    target_net.train()
    for param in target_net.parameters():
        param.requires_grad = False
    support = torch.linspace(Vmin, Vmax, atoms)
    delta_z = (Vmax - Vmin) / (atoms - 1)
    optimiser = optim.Adam(online_net.parameters(), lr=1e-3, eps=1.5e-4)
    history = []
    for update in range(updates):
        states = torch.tensor(rng.standard_normal((batch_size, 2, 6, 6)).astype(np.float32))
        next_states = torch.tensor(rng.standard_normal((batch_size, 2, 6, 6)).astype(np.float32))
        actions = torch.tensor(rng.integers(0, 3, batch_size))
        returns = torch.tensor(rng.choice([-1.0, 0.0, 1.0, 8.0], batch_size).astype(np.float32))
        nonterminals = torch.tensor((rng.random((batch_size, 1)) < 0.8).astype(np.float32))
        weights_ = torch.tensor(rng.uniform(0.5, 1.0, batch_size).astype(np.float32))

        log_ps = online_net(states, log=True)
        log_ps_a = log_ps[range(batch_size), actions]

        with torch.no_grad():
            pns = online_net(next_states)
            dns = support.expand_as(pns) * pns
            argmax_indices_ns = dns.sum(2).argmax(1)
            target_net.reset_noise()
            pns = target_net(next_states)
            pns_a = pns[range(batch_size), argmax_indices_ns]

            Tz = returns.unsqueeze(1) + nonterminals * (discount ** n) * support.unsqueeze(0)
            Tz = Tz.clamp(min=Vmin, max=Vmax)
            b = (Tz - Vmin) / delta_z
            l, u = b.floor().to(torch.int64), b.ceil().to(torch.int64)
            l[(u > 0) * (l == u)] -= 1
            u[(l < (atoms - 1)) * (l == u)] += 1

            m_ = states.new_zeros(batch_size, atoms)
            offset = torch.linspace(0, ((batch_size - 1) * atoms), batch_size).unsqueeze(1).expand(
                batch_size, atoms).to(actions)
            m_.view(-1).index_add_(0, (l + offset).view(-1), (pns_a * (u.float() - b)).view(-1))
            m_.view(-1).index_add_(0, (u + offset).view(-1), (pns_a * (b - l.float())).view(-1))

        loss = -torch.sum(m_ * log_ps_a, 1)
        online_net.zero_grad()
        (weights_ * loss).mean().backward()
        m.nn.utils.clip_grad_norm_(online_net.parameters(), 10)
        optimiser.step()
        online_net.reset_noise()
        history.append(((weights_ * loss).mean().item(), loss.detach(), m_))
    return {"history": history, "grads": [p.grad for p in online_net.parameters()],
            "epsilon": online_net.fc_h_v.weight_epsilon}


def test_rainbow_distributional_projection():
    weights = weights_of(make_rainbow)
    ours, _ = run_both(rainbow, weights, rtol=2e-5, atol=2e-6)
    for _, loss, projected in ours["history"]:
        np.testing.assert_allclose(projected.sum(1), 1.0, rtol=1e-5)  # the projection keeps the mass
        assert (projected >= 0).all() and loss.shape == (8,)


def test_c51_projection_by_hand():
    """The projection of a distribution shifted by r + gamma z onto the support, against NumPy."""
    torch = OURS.torch
    atoms, Vmin, Vmax = 5, -2.0, 2.0
    support = torch.linspace(Vmin, Vmax, atoms, dtype=torch.float64)
    p = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2], [0.0, 0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    Tz = (torch.tensor([[0.5], [1.0]], dtype=torch.float64) + 0.9 * support.unsqueeze(0)).clamp(Vmin, Vmax)
    b = (Tz - Vmin) / 1.0
    l, u = b.floor().to(torch.int64), b.ceil().to(torch.int64)
    l[(u > 0) * (l == u)] -= 1
    u[(l < (atoms - 1)) * (l == u)] += 1
    m_ = torch.zeros(2, atoms, dtype=torch.float64)
    offset = torch.tensor([[0], [atoms]]).expand(2, atoms)
    m_.view(-1).index_add_(0, (l + offset).view(-1), (p * (u.double() - b)).view(-1))
    m_.view(-1).index_add_(0, (u + offset).view(-1), (p * (b - l.double())).view(-1))
    expected = np.zeros((2, atoms))
    z = np.linspace(Vmin, Vmax, atoms)
    for i, (r, probs) in enumerate(zip([0.5, 1.0], p.numpy())):
        for j, pj in enumerate(probs):
            tz = min(max(r + 0.9 * z[j], Vmin), Vmax)
            pos = tz - Vmin
            lo = int(np.floor(pos))
            frac = pos - lo
            if frac == 0:
                expected[i, lo] += pj
            else:
                expected[i, lo] += pj * (1 - frac)
                expected[i, lo + 1] += pj * frac
    np.testing.assert_allclose(m_.numpy(), expected, atol=1e-12)
