# ruff: noqa: B007, B008, F841, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement learning programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the
same weights, with the same actions fed to both where the program samples (each sampling call is kept, and its shape,
dtype and statistics are checked). On a CartPole written in NumPy: pytorch/examples' REINFORCE
(``Categorical(probs)``, returns by a reversed loop into a ``deque``, ``torch.tensor(deque)``, normalised by ``std()
+ eps``, ``torch.cat`` of the per-step losses) and actor-critic (a ``SavedAction`` named tuple,
``smooth_l1_loss(value, torch.tensor([R]))`` with R a 0-d tensor, ``torch.stack(...).sum()``); cleanRL's PPO
(orthogonal ``layer_init``, storage tensors written by step, GAE in a reversed loop, checked by hand, minibatches by
a shuffled index, the clipped surrogate with ``torch.max``, the clipped value loss, approx-KL and clip fractions,
``clip_grad_norm_``, a learning rate annealed through ``param_groups``) and Categorical sampling's statistics."""

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
