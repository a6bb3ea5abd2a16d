# ruff: noqa: B007, UP008  (the programs are kept as their authors write them)
"""pytorch/examples' reinforcement_learning/reinforce.py and actor_critic.py, two of the programs session 9's probe
(tests/test_programs_probe9_examples_*.py) left out, each kept as written with sizes shrunk and run as
tests/probe31_examples_common.py says, on a tiny pure-Python environment in place of gym's CartPole (``Categorical``
sampling, ``torch.tensor`` of a deque and of a list holding a 0-d tensor, ``smooth_l1_loss``). Both agreed with PyTorch
when written (session 31)."""

from collections import deque, namedtuple
from types import SimpleNamespace

import numpy as np

from .probe31_examples_common import SAME_DROPOUT
from .pytorch_programs import run_both


# ---------------------------------------------------------------- reinforcement_learning, on a tiny environment
class TinyCartPole:
    """A pure-Python stand-in for gym's CartPole-v1: a 4-number state drifting with the chosen push; the episode
    ends once the first coordinate leaves [-1, 1] or after 12 steps. Seeded, deterministic."""

    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)

    def reset(self, seed=None):
        self.t = 0
        self.state = self.rng.uniform(-0.05, 0.05, size=4)
        return self.state.copy(), {}

    def step(self, action):
        self.t += 1
        push = 0.1 if action == 1 else -0.1
        x, v, th, w = self.state
        w = w + 0.3 * th + push
        th = th + 0.1 * w
        v = v + push
        x = x + 0.1 * v + 0.2 * th
        self.state = np.array([x, v, th, w])
        terminated = abs(x) > 1.0
        return self.state.copy(), 1.0, terminated, self.t >= 12, {}


def reinforce(m, episodes=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Categorical = torch.distributions.Categorical
    args = SimpleNamespace(gamma=0.99, seed=543)
    env = TinyCartPole(args.seed)
    env.reset(seed=args.seed)
    torch.manual_seed(args.seed)

    class Policy(nn.Module):
        def __init__(self):
            super(Policy, self).__init__()
            self.affine1 = nn.Linear(4, 128)
            self.dropout = nn.Dropout(p=0.6)
            self.affine2 = nn.Linear(128, 2)
            self.saved_log_probs = []
            self.rewards = []

        def forward(self, x):
            x = self.affine1(x)
            x = self.dropout(x)
            x = F.relu(x)
            action_scores = self.affine2(x)
            return F.softmax(action_scores, dim=1)

    policy = Policy()
    optimizer = optim.Adam(policy.parameters(), lr=1e-2)
    eps = np.finfo(np.float32).eps.item()

    def select_action(state):
        state = torch.from_numpy(state).float().unsqueeze(0)
        probs = policy(state)
        m = Categorical(probs)
        action = m.sample()
        policy.saved_log_probs.append(m.log_prob(action))
        return action.item()

    losses = []

    def finish_episode():
        R = 0
        policy_loss = []
        returns = deque()
        for r in policy.rewards[::-1]:
            R = r + args.gamma * R
            returns.appendleft(R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for log_prob, R in zip(policy.saved_log_probs, returns):
            policy_loss.append(-log_prob * R)
        optimizer.zero_grad()
        policy_loss = torch.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        losses.append((returns.dtype == torch.float32, policy_loss.item()))
        del policy.rewards[:]
        del policy.saved_log_probs[:]

    running_reward = 10
    rewards = []
    for i_episode in range(1, episodes + 1):
        state, _ = env.reset()
        ep_reward = 0
        for t in range(1, 10000):
            action = select_action(state)
            state, reward, terminated, truncated, _ = env.step(action)
            policy.rewards.append(reward)
            ep_reward += reward
            if terminated or truncated:
                break
        running_reward = 0.05 * ep_reward + (1 - 0.05) * running_reward
        rewards.append(ep_reward)
        finish_episode()
    return rewards, losses, running_reward, policy.affine2.weight


def test_reinforce():
    rewards, losses, running_reward, weight = run_both(reinforce, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert len(rewards) == 4 and all(float32 for float32, _ in losses) and weight.shape == (2, 128)


def actor_critic(m, episodes=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Categorical = torch.distributions.Categorical
    args = SimpleNamespace(gamma=0.99, seed=543)
    env = TinyCartPole(args.seed)
    env.reset(seed=args.seed)
    torch.manual_seed(args.seed)
    SavedAction = namedtuple('SavedAction', ['log_prob', 'value'])

    class Policy(nn.Module):
        """
        implements both actor and critic in one model
        """
        def __init__(self):
            super(Policy, self).__init__()
            self.affine1 = nn.Linear(4, 128)
            self.action_head = nn.Linear(128, 2)
            self.value_head = nn.Linear(128, 1)
            self.saved_actions = []
            self.rewards = []

        def forward(self, x):
            x = F.relu(self.affine1(x))
            action_prob = F.softmax(self.action_head(x), dim=-1)
            state_values = self.value_head(x)
            return action_prob, state_values

    model = Policy()
    optimizer = optim.Adam(model.parameters(), lr=3e-2)
    eps = np.finfo(np.float32).eps.item()

    def select_action(state):
        state = torch.from_numpy(state).float()
        probs, state_value = model(state)
        m = Categorical(probs)
        action = m.sample()
        model.saved_actions.append(SavedAction(m.log_prob(action), state_value))
        return action.item()

    losses = []

    def finish_episode():
        R = 0
        saved_actions = model.saved_actions
        policy_losses = []
        value_losses = []
        returns = []
        for r in model.rewards[::-1]:
            R = r + args.gamma * R
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
        losses.append(loss.item())
        del model.rewards[:]
        del model.saved_actions[:]

    running_reward = 10
    rewards = []
    for i_episode in range(1, episodes + 1):
        state, _ = env.reset()
        ep_reward = 0
        for t in range(1, 10000):
            action = select_action(state)
            state, reward, terminated, truncated, _ = env.step(action)
            model.rewards.append(reward)
            ep_reward += reward
            if terminated or truncated:
                break
        running_reward = 0.05 * ep_reward + (1 - 0.05) * running_reward
        rewards.append(ep_reward)
        finish_episode()
    return rewards, losses, running_reward, model.value_head.weight


def test_actor_critic():
    rewards, losses, running_reward, weight = run_both(actor_critic, rtol=1e-4, atol=1e-5)[0]
    assert len(rewards) == 4 and np.isfinite(losses).all() and weight.shape == (1, 128)

