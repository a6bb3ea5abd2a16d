# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Game-AI and unusual-architecture programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and data, and checked against NumPy by hand where PyTorch is missing. Gumbel-softmax actions
whose straight-through gradient (``hard=True``) must equal the soft sample's; REINFORCE with a learnt baseline over
episodes of a hand-written grid world (``Categorical`` sampling, discounted returns, entropy bonus,
``clip_grad_norm_``); independent learners keeping their action scores action-major (one column per agent):
``Categorical(logits=scores.T)``, the Gumbel-max trick by ``empty_like(scores.T).exponential_()`` and
``F.gumbel_softmax`` of the transpose draw as PyTorch's; and the section of tests that were strict expected failures
(a capsule's one-hot by ``torch.sparse.torch.eye``, random tensors like a transpose or a slice of one, a legacy
constructor sharing an array of its dtype)."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Gumbel-softmax actions: the straight-through estimator's gradient is the soft sample's
# ----------------------------------------------------------------------------------------------


def make_gumbel_policy(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 16), nn.ELU(), nn.Linear(16, 5))


def gumbel_policy(m, weights, tau=0.7, steps=5):
    torch, F, optim = m.torch, m.F, m.optim
    policy = load(m, make_gumbel_policy(m), weights)
    rng = np.random.default_rng(2)
    states = torch.tensor(rng.standard_normal((12, 6)).astype(np.float32))
    payoff = torch.tensor(rng.standard_normal((12, 5)).astype(np.float32))  # reward of each discrete action

    def grads_of(hard, dim=-1):
        torch.manual_seed(7)
        logits = policy(states)
        actions = F.gumbel_softmax(logits if dim == -1 else logits.T, tau=tau, hard=hard, dim=dim)
        actions = actions if dim == -1 else actions.T
        reward = (actions * payoff).sum(1).mean()
        return actions, torch.autograd.grad(reward, list(policy.parameters()))

    hard_actions, hard_grads = grads_of(True)
    soft_actions, soft_grads = grads_of(False)
    hard_actions_dim0, _ = grads_of(True, dim=0)
    optimizer = optim.SGD(policy.parameters(), lr=0.5)
    history = []
    for step in range(steps):
        actions = F.gumbel_softmax(policy(states), tau=tau, hard=True)
        reward = (actions * payoff).sum(1).mean()
        optimizer.zero_grad()
        (-reward).backward()
        optimizer.step()
        history.append(reward.item())
    return {"hard": hard_actions, "soft": soft_actions, "hard_grads": hard_grads, "soft_grads": soft_grads,
            "hard_dim0": hard_actions_dim0, "history": history}


def test_gumbel_softmax_straight_through():
    ours, _ = run_both(gumbel_policy, weights_of(make_gumbel_policy), rtol=1e-4, atol=1e-6)
    hard, soft = ours["hard"], ours["soft"]
    assert set(np.unique(hard)) == {0.0, 1.0} and np.all(hard.sum(1) == 1)
    np.testing.assert_array_equal(hard.argmax(1), soft.argmax(1))  # the same noise: hard is soft's argmax
    np.testing.assert_allclose(soft.sum(1), 1, rtol=1e-6)
    for h, s in zip(ours["hard_grads"], ours["soft_grads"]):  # y_hard - y_soft.detach() + y_soft
        np.testing.assert_allclose(h, s, rtol=1e-5, atol=1e-7)
    assert np.all(ours["hard_dim0"].sum(1) == 1)  # one-hot along dim 0 of the transpose: each row here


# ----------------------------------------------------------------------------------------------
# REINFORCE with a learnt baseline on a hand-written grid world
# ----------------------------------------------------------------------------------------------


class GridWorld:
    """A 4x4 grid: start top-left, goal bottom-right (+1), a pit (-1); each step costs 0.04."""

    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]

    def __init__(self, size=4, pit=(1, 2)):
        self.size, self.pit = size, pit

    def reset(self):
        self.pos = (0, 0)
        return self.pos

    def step(self, action):
        dy, dx = self.moves[action]
        y = min(max(self.pos[0] + dy, 0), self.size - 1)
        x = min(max(self.pos[1] + dx, 0), self.size - 1)
        self.pos = (y, x)
        if self.pos == (self.size - 1, self.size - 1):
            return self.pos, 1.0, True
        if self.pos == self.pit:
            return self.pos, -1.0, True
        return self.pos, -0.04, False


def make_reinforce(m):
    nn = m.nn

    class ActorCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(16, 32), nn.Tanh())
            self.policy = nn.Linear(32, 4)
            self.value = nn.Linear(32, 1)

        def forward(self, x):
            h = self.body(x)
            return self.policy(h), self.value(h).squeeze(-1)

    return ActorCritic()


def reinforce(m, weights, episodes=8, gamma=0.95, max_steps=12):
    torch, F, optim = m.torch, m.F, m.optim
    torch.manual_seed(3)
    model = load(m, make_reinforce(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=3e-2)
    env = GridWorld()
    log = []
    for episode in range(episodes):
        pos = env.reset()
        log_probs, values, rewards, entropies, actions = [], [], [], [], []
        for t in range(max_steps):
            state = F.one_hot(torch.tensor(pos[0] * 4 + pos[1]), 16).float()
            logits, value = model(state)
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            pos, reward, done = env.step(action.item())
            log_probs.append(dist.log_prob(action))
            entropies.append(dist.entropy())
            values.append(value)
            rewards.append(reward)
            actions.append(action.item())
            if done:
                break
        returns, R = [], 0.0
        for r in reversed(rewards):
            R = r + gamma * R
            returns.insert(0, R)
        returns = torch.tensor(returns)
        values = torch.stack(values)
        advantage = returns - values.detach()
        policy_loss = -(torch.stack(log_probs) * advantage).sum()
        value_loss = F.smooth_l1_loss(values, returns, reduction="sum")
        loss = policy_loss + 0.5 * value_loss - 0.01 * torch.stack(entropies).sum()
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        log.append({"rewards": rewards, "returns": returns, "actions": actions, "loss": loss, "norm": norm,
                    "log_probs": torch.stack(log_probs).detach(), "entropies": torch.stack(entropies).detach()})
    return log


def test_reinforce_with_baseline():
    ours, _ = run_both(reinforce, weights_of(make_reinforce), rtol=1e-5, atol=1e-6)
    for episode in ours:
        rewards = np.array(episode["rewards"])
        by_hand = [sum(0.95 ** k * r for k, r in enumerate(rewards[i:])) for i in range(len(rewards))]
        np.testing.assert_allclose(episode["returns"], by_hand, rtol=1e-6)
        assert np.all(episode["log_probs"] < 0) and np.all(episode["entropies"] <= np.log(4) + 1e-6)
        assert episode["norm"] >= 0 and set(episode["actions"]) <= {0, 1, 2, 3}


# ----------------------------------------------------------------------------------------------
# Independent learners in a shared grid: one column of action scores per agent (action-major)
# ----------------------------------------------------------------------------------------------


def make_column_policy(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 5))


def column_agents(m, weights, agents=6, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    policy = load(m, make_column_policy(m), weights)
    optimizer = optim.Adam(policy.parameters(), lr=1e-2)
    rng = np.random.default_rng(4)
    positions = torch.tensor(rng.integers(0, 5, (agents, 2)).astype(np.float32))
    torch.manual_seed(0)
    log = []
    for step in range(steps):
        obs = torch.cat([positions / 4, (positions - positions.mean(0)) / 4], 1)
        scores = policy(obs).T  # (actions, agents), as the mixer consumes them
        dist = torch.distributions.Categorical(logits=scores.T)
        actions = dist.sample()
        # the Gumbel-max trick on the same layout, and a relaxed one-hot for a differentiable critic
        gumbel_max = (scores.T - torch.empty_like(scores.T).exponential_().log()).argmax(1)
        relaxed = F.gumbel_softmax(scores.T, tau=0.5, hard=True)
        moves = torch.tensor([[0, 1], [1, 0], [0, -1], [-1, 0], [0, 0]], dtype=torch.float32)
        positions = (positions + moves[actions]).clamp(0, 4)
        reward = -(positions - 2).abs().sum(1)
        loss = -(dist.log_prob(actions) * (reward - reward.mean())).mean() - (relaxed * scores.T).sum(1).mean() * 0.01
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append({"actions": actions, "gumbel_max": gumbel_max, "relaxed": relaxed, "probs": dist.probs,
                    "loss": loss, "positions": positions.clone()})
    return log


def test_column_agents():
    ours, _ = run_both(column_agents, weights_of(make_column_policy), rtol=1e-5, atol=1e-6)
    for step in ours:
        np.testing.assert_allclose(step["probs"].sum(1), 1, rtol=1e-6)
        assert set(np.unique(step["relaxed"])) <= {0.0, 1.0} and np.all(step["relaxed"].sum(1) == 1)
        assert step["actions"].shape == (6,) and step["gumbel_max"].shape == (6,)
        assert np.all((step["positions"] >= 0) & (step["positions"] <= 4))


# ----------------------------------------------------------------------------------------------
# Strict expected failures (the fixes belong to files outside this task's)
# ----------------------------------------------------------------------------------------------


def test_capsule_one_hot_by_sparse_torch_eye():
    def program(m):
        torch = m.torch
        labels = torch.tensor([2, 0, 3])
        return torch.sparse.torch.eye(4).index_select(dim=0, index=labels)

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours, np.eye(4, dtype=np.float32)[[2, 0, 3]])


def test_random_like_a_slice_of_a_transpose():
    def program(m):
        torch = m.torch
        torch.manual_seed(0)
        scores = torch.zeros(6, 8).t()[1:3]
        noise = torch.rand_like(scores)
        torch.manual_seed(0)
        return torch.empty_like(scores).stride(), noise, torch.rand(6, 2).t()

    ours, _ = run_both(program)
    assert ours[0] == (1, 2)  # PyTorch's empty_like strides here
    np.testing.assert_array_equal(ours[1], ours[2])


def test_random_integers_like_a_transpose():
    def program(m):
        torch = m.torch
        torch.manual_seed(0)
        drawn = torch.randint_like(torch.zeros(3, 4).t(), 10)
        torch.manual_seed(0)
        return drawn, torch.randint(0, 10, (3, 4)).t()

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours[0], ours[1])


def test_a_legacy_constructor_shares_an_array_of_its_dtype():
    def program(m):
        torch = m.torch
        observation = np.zeros(4, dtype=np.float32)  # a gym-style buffer the environment writes in place
        state = torch.FloatTensor(observation)
        observation[:] = [1.0, 2.0, 3.0, 4.0]  # the next step
        weights = torch.FloatTensor(torch.ones(2))
        weights.add_(1.0)
        return state, weights

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours[0], [1.0, 2.0, 3.0, 4.0])
