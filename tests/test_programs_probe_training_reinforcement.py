# ruff: noqa: B007, UP004, UP008  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is a function of
the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``), run on chainrule and, where PyTorch is
installed, on PyTorch, comparing the numbers. Small versions of well-known training programs: REINFORCE
(pytorch/examples' reinforce.py) on a three-armed bandit, and the DQN tutorial (replay memory, target network soft
updates) on a five-cell corridor."""

import math
from collections import deque, namedtuple

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# REINFORCE (pytorch/examples reinforcement_learning/reinforce.py) on a three-armed bandit
# ----------------------------------------------------------------------------------------------


def reinforce(m, weights, episodes=60, own_sampler=True):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Categorical = torch.distributions.Categorical
    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.affine1 = nn.Linear(4, 16)
            self.dropout = nn.Dropout(p=0.0)
            self.affine2 = nn.Linear(16, 3)
            self.saved_log_probs = []
            self.rewards = []
        def forward(self, x):
            x = self.affine1(x)
            x = self.dropout(x)
            x = F.relu(x)
            action_scores = self.affine2(x)
            return F.softmax(action_scores, dim=1)
    policy = Policy()
    if weights is None:
        return policy
    load(m, policy, weights)
    torch.manual_seed(543)
    optimizer = optim.Adam(policy.parameters(), lr=3e-2)
    eps = np.finfo(np.float32).eps.item()
    rng = np.random.default_rng(0)
    means = np.array([0.1, 0.9, 0.4])
    gamma = 0.9
    def select_action(state):
        state = torch.from_numpy(state).float().unsqueeze(0)
        probs = policy(state)
        mm = Categorical(probs)
        if own_sampler:
            u = rng.random()
            action = torch.tensor([int(np.searchsorted(np.cumsum(probs.detach().numpy()[0]), u))]).clamp(max=2)
        else:
            action = mm.sample()
        policy.saved_log_probs.append(mm.log_prob(action))
        return action.item(), mm.entropy()
    history, entropies = [], []
    for ep in range(episodes // 4):
        for t in range(4):
            state = rng.standard_normal(4)
            action, ent = select_action(state)
            reward = float(rng.random() < means[action])
            policy.rewards.append(reward)
            entropies.append(ent.item())
        R = 0
        policy_loss = []
        returns = []
        for r in policy.rewards[::-1]:
            R = r + gamma * R
            returns.insert(0, R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for log_prob, R in zip(policy.saved_log_probs, returns):
            policy_loss.append(-log_prob * R)
        optimizer.zero_grad()
        policy_loss = torch.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        history.append(policy_loss.item())
        del policy.rewards[:]
        del policy.saved_log_probs[:]
    with torch.no_grad():
        final = policy(torch.tensor(rng.standard_normal((64, 4)).astype(np.float32))).mean(0)
    return history, entropies, final


def test_reinforce_bandit():
    weights = weights_of(lambda m: reinforce(m, None))
    # actions drawn from the policy's probabilities by one NumPy generator: the same episodes on both
    (history, entropies, final), _ = run_both(reinforce, weights, rtol=1e-4, atol=1e-5)
    assert len(history) == 15 and len(entropies) == 60
    assert all(0 < e <= np.log(3) + 1e-6 for e in entropies)
    np.testing.assert_allclose(final.sum(), 1.0, rtol=1e-5)
    # Categorical.sample(): the generators differ, so only what learning should do is checked
    (history, entropies, final), _ = run_both(reinforce, weights, own_sampler=False, episodes=200,
                                              compare=False)
    assert final[1] > 0.5  # the best arm (mean reward 0.9) becomes the most likely


# ----------------------------------------------------------------------------------------------
# Deep Q-learning (PyTorch's DQN tutorial) on a five-cell corridor
# ----------------------------------------------------------------------------------------------


Transition = namedtuple('Transition', ('state', 'action', 'next_state', 'reward'))


class ReplayMemory(object):
    def __init__(self, capacity):
        self.memory = deque([], maxlen=capacity)

    def push(self, *args):
        self.memory.append(Transition(*args))

    def sample(self, batch_size, rng):
        return [self.memory[i] for i in rng.choice(len(self.memory), batch_size, replace=False)]

    def __len__(self):
        return len(self.memory)


def dqn(m, weights, episodes=6):
    """PyTorch's DQN tutorial on a 1-D corridor: reach the right end (reward 1) in few steps."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class DQN(nn.Module):
        def __init__(self, n_observations, n_actions):
            super(DQN, self).__init__()
            self.layer1 = nn.Linear(n_observations, 32)
            self.layer2 = nn.Linear(32, 32)
            self.layer3 = nn.Linear(32, n_actions)

        def forward(self, x):
            x = F.relu(self.layer1(x))
            x = F.relu(self.layer2(x))
            return self.layer3(x)

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = DQN(5, 2)

    both = Both()
    if weights is None:
        return both
    load(m, both, weights)
    BATCH_SIZE, GAMMA, EPS_START, EPS_END, EPS_DECAY, TAU, LR = 16, 0.9, 0.9, 0.05, 50, 0.05, 1e-3
    policy_net = both.policy
    target_net = DQN(5, 2)
    target_net.load_state_dict(policy_net.state_dict())
    optimizer = optim.AdamW(policy_net.parameters(), lr=LR, amsgrad=True)
    memory = ReplayMemory(1000)
    rng = np.random.default_rng(0)
    steps_done = 0

    def observe(pos):
        return torch.tensor(np.eye(5, dtype=np.float32)[pos]).unsqueeze(0)

    def select_action(state):
        nonlocal steps_done
        sample = rng.random()
        eps_threshold = EPS_END + (EPS_START - EPS_END) * math.exp(-1. * steps_done / EPS_DECAY)
        steps_done += 1
        if sample > eps_threshold:
            with torch.no_grad():
                return policy_net(state).max(1).indices.view(1, 1)
        return torch.tensor([[int(rng.integers(2))]], dtype=torch.long)

    losses = []

    def optimize_model():
        if len(memory) < BATCH_SIZE:
            return
        transitions = memory.sample(BATCH_SIZE, rng)
        batch = Transition(*zip(*transitions))
        non_final_mask = torch.tensor(tuple(map(lambda s: s is not None, batch.next_state)), dtype=torch.bool)
        non_final_next_states = torch.cat([s for s in batch.next_state if s is not None])
        state_batch = torch.cat(batch.state)
        action_batch = torch.cat(batch.action)
        reward_batch = torch.cat(batch.reward)
        state_action_values = policy_net(state_batch).gather(1, action_batch)
        next_state_values = torch.zeros(BATCH_SIZE)
        with torch.no_grad():
            next_state_values[non_final_mask] = target_net(non_final_next_states).max(1).values
        expected_state_action_values = (next_state_values * GAMMA) + reward_batch
        criterion = nn.SmoothL1Loss()
        loss = criterion(state_action_values, expected_state_action_values.unsqueeze(1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_value_(policy_net.parameters(), 100)  # torch.nn.utils in the tutorial
        optimizer.step()
        losses.append(loss.item())

    lengths = []
    for i_episode in range(episodes):
        pos = 0
        state = observe(pos)
        for t in range(30):
            action = select_action(state)
            pos = max(0, pos + (1 if action.item() == 1 else -1))
            terminated = pos == 4
            reward = torch.tensor([1.0 if terminated else -0.05])
            next_state = None if terminated else observe(pos)
            memory.push(state, action, next_state, reward)
            state = next_state
            optimize_model()
            target_net_state_dict = target_net.state_dict()
            policy_net_state_dict = policy_net.state_dict()
            for key in policy_net_state_dict:
                target_net_state_dict[key] = policy_net_state_dict[key] * TAU + target_net_state_dict[key] * (1 - TAU)
            target_net.load_state_dict(target_net_state_dict)
            if terminated:
                break
        lengths.append(t + 1)
    with torch.no_grad():
        q = policy_net(torch.eye(5))
    return lengths, losses, q, target_net.state_dict()


def test_dqn_corridor():
    weights = weights_of(lambda m: dqn(m, None))
    (lengths, losses, q, target_state), _ = run_both(dqn, weights, rtol=1e-4, atol=1e-5)
    # the episodes' lengths from PyTorch's initial weights for seed 0 and its draws (PyTorch's too)
    assert lengths == [30, 18, 4, 12, 4, 4] and len(losses) == sum(lengths) - 15  # learning starts at 16
    assert all(np.isfinite(losses))  # (a TD loss moves with the targets: no trend over 57 steps to assert)
    assert (q[:4, 1] > q[:4, 0]).all()  # moving right (towards the reward) is valued higher everywhere
