# ruff: noqa: E731, UP034  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: reinforcement learning: PPO with GAE, dueling double-Q."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/rl/ppo: clipped PPO losses on advantages from GAE
# ----------------------------------------------------------------------------------------------


class GAE:
    def __init__(self, n_workers, worker_steps, gamma, lambda_):
        self.lambda_ = lambda_
        self.gamma = gamma
        self.worker_steps = worker_steps
        self.n_workers = n_workers

    def __call__(self, done, rewards, values):
        advantages = np.zeros((self.n_workers, self.worker_steps), dtype=np.float32)
        last_advantage = 0
        last_value = values[:, -1]
        for t in reversed(range(self.worker_steps)):
            mask = 1.0 - done[:, t]
            last_value = last_value * mask
            last_advantage = last_advantage * mask
            delta = rewards[:, t] + self.gamma * last_value - values[:, t]
            last_advantage = delta + self.gamma * self.lambda_ * last_advantage
            advantages[:, t] = last_advantage
            last_value = values[:, t]
        return advantages


def make_ppo(m):
    nn = m.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels=2, out_channels=8, kernel_size=3, stride=2)
            self.lin = nn.Linear(in_features=8 * 3 * 3, out_features=32)
            self.pi_logits = nn.Linear(in_features=32, out_features=4)
            self.value = nn.Linear(in_features=32, out_features=1)
            self.activation = nn.ReLU()

        def forward(self, obs):
            h = self.activation(self.conv1(obs))
            h = h.reshape((-1, 8 * 3 * 3))
            h = self.activation(self.lin(h))
            pi = m.torch.distributions.Categorical(logits=self.pi_logits(h))
            value = self.value(h).reshape(-1)
            return pi, value

    return Model()


def ppo_program(m, weights):
    torch, nn = m.torch, m.nn

    class ClippedPPOLoss(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, log_pi, sampled_log_pi, advantage, clip):
            ratio = torch.exp(log_pi - sampled_log_pi)
            clipped_ratio = ratio.clamp(min=1.0 - clip, max=1.0 + clip)
            policy_reward = torch.min(ratio * advantage, clipped_ratio * advantage)
            self.clip_fraction = (abs((ratio - 1.0)) > clip).to(torch.float).mean()
            return -policy_reward.mean()

    class ClippedValueFunctionLoss(nn.Module):
        def forward(self, value, sampled_value, sampled_return, clip):
            clipped_value = sampled_value + (value - sampled_value).clamp(min=-clip, max=clip)
            vf_loss = torch.max((value - sampled_return) ** 2, (clipped_value - sampled_return) ** 2)
            return 0.5 * vf_loss.mean()

    model = load(m, make_ppo(m), weights)
    rng = np.random.default_rng(7)
    n_workers, worker_steps = 4, 8
    obs = rng.standard_normal((n_workers, worker_steps, 2, 7, 7)).astype(np.float32)
    actions = rng.integers(0, 4, (n_workers, worker_steps))
    rewards = rng.standard_normal((n_workers, worker_steps)).astype(np.float32)
    done = rng.random((n_workers, worker_steps)) < 0.2
    with torch.no_grad():
        pi, v = model(torch.tensor(obs.reshape(-1, 2, 7, 7), dtype=torch.float32))
        log_pis = pi.log_prob(torch.tensor(actions.reshape(-1))).numpy().reshape(n_workers, worker_steps)
        values = np.concatenate([v.numpy().reshape(n_workers, worker_steps), np.zeros((n_workers, 1), np.float32)], 1)
    gae = GAE(n_workers, worker_steps, 0.99, 0.95)
    advantages = gae(done, rewards, values)
    samples = {'obs': obs, 'actions': actions, 'values': values[:, :-1], 'log_pis': log_pis, 'advantages': advantages}
    samples_flat = {}
    for k, v in samples.items():
        v = v.reshape(v.shape[0] * v.shape[1], *v.shape[2:])
        samples_flat[k] = torch.tensor(v)
    ppo_loss = ClippedPPOLoss()
    value_loss = ClippedValueFunctionLoss()
    optimizer = m.optim.Adam(model.parameters(), lr=2.5e-3)
    losses, fractions = [], []
    for _ in range(3):
        indexes = torch.tensor(np.random.default_rng(_).permutation(32))
        for start in range(0, 32, 16):
            mini_batch_indexes = indexes[start: start + 16]
            samples_mb = {k: v[mini_batch_indexes] for k, v in samples_flat.items()}
            sampled_return = samples_mb['values'] + samples_mb['advantages']
            sampled_normalized_advantage = (samples_mb['advantages'] - samples_mb['advantages'].mean()) / (
                samples_mb['advantages'].std() + 1e-8)
            pi, value = model(samples_mb['obs'])
            log_pi = pi.log_prob(samples_mb['actions'])
            policy_loss = ppo_loss(log_pi, samples_mb['log_pis'], sampled_normalized_advantage, 0.1)
            entropy_bonus = pi.entropy()
            entropy_bonus = entropy_bonus.mean()
            vf_loss = value_loss(value, samples_mb['values'], sampled_return, 0.1)
            loss = (policy_loss + 0.5 * vf_loss - 0.01 * entropy_bonus)
            for pg in optimizer.param_groups:
                pg['lr'] = 2.5e-3
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            optimizer.step()
            losses.append(loss.item())
            fractions.append(ppo_loss.clip_fraction.item())
    return {"advantages": advantages, "losses": losses, "fractions": fractions, "w": model.lin.weight,
            "values": values}


def test_ppo_with_gae():
    weights = weights_of(make_ppo)
    ours, _ = run_both(ppo_program, weights, rtol=1e-5, atol=1e-6)
    assert max(ours["fractions"]) > 0  # some ratios left the clip range
    # GAE by its definition: sum_l (gamma lambda)^l delta_{t+l}, cut at episode ends
    rng = np.random.default_rng(7)
    rng.standard_normal((4, 8, 2, 7, 7)), rng.integers(0, 4, (4, 8))
    rewards = rng.standard_normal((4, 8)).astype(np.float32)
    done = rng.random((4, 8)) < 0.2
    values = ours["values"].astype(np.float64)
    for w in range(4):
        for t in range(8):
            total, discount = 0.0, 1.0
            for s in range(t, 8):
                nxt = 0.0 if done[w, s] else values[w, s + 1]
                total += discount * (rewards[w, s] + 0.99 * nxt - values[w, s])
                if done[w, s]:
                    break
                discount *= 0.99 * 0.95
            assert ours["advantages"][w, t] == pytest.approx(total, rel=1e-4, abs=1e-5)


# ----------------------------------------------------------------------------------------------
# labml_nn/rl/dqn: a dueling double-Q network with prioritised replay's importance weights
# ----------------------------------------------------------------------------------------------


def make_dqn(m):
    nn = m.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(in_channels=4, out_channels=8, kernel_size=4, stride=2), nn.ReLU(),
                nn.Conv2d(in_channels=8, out_channels=8, kernel_size=3, stride=1), nn.ReLU(),
            )
            self.lin = nn.Linear(in_features=2 * 2 * 8, out_features=32)
            self.activation = nn.ReLU()
            self.state_value = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1))
            self.action_value = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))

        def forward(self, obs):
            h = self.conv(obs)
            h = h.reshape((-1, 2 * 2 * 8))
            h = self.activation(self.lin(h))
            action_value = self.action_value(h)
            state_value = self.state_value(h)
            action_score_centered = action_value - action_value.mean(dim=-1, keepdim=True)
            q = state_value + action_score_centered
            return q

    return Model()


def dqn_program(m, weights):
    torch, nn = m.torch, m.nn

    class QFuncLoss(nn.Module):
        def __init__(self, gamma):
            super().__init__()
            self.gamma = gamma
            self.huber_loss = nn.SmoothL1Loss(reduction='none')

        def forward(self, q, action, double_q, target_q, done, reward, weights):
            q_sampled_action = q.gather(-1, action.to(torch.long).unsqueeze(-1)).squeeze(-1)
            with torch.no_grad():
                best_next_action = torch.argmax(double_q, -1)
                best_next_q_value = target_q.gather(-1, best_next_action.unsqueeze(-1)).squeeze(-1)
                q_update = reward + self.gamma * best_next_q_value * (1 - done)
                td_error = q_sampled_action - q_update
            losses = self.huber_loss(q_sampled_action, q_update)
            loss = torch.mean(weights * losses)
            return td_error, loss

    model = load(m, make_dqn(m), weights)
    target_model = load(m, make_dqn(m), weights)
    rng = np.random.default_rng(20)
    obs = rng.integers(0, 255, (16, 4, 10, 10)).astype(np.uint8)
    next_obs = rng.integers(0, 255, (16, 4, 10, 10)).astype(np.uint8)
    samples = {'obs': obs, 'next_obs': next_obs, 'action': rng.integers(0, 4, 16).astype(np.int32),
               'reward': rng.standard_normal(16).astype(np.float32), 'done': rng.random(16) < 0.3,
               'weights': rng.uniform(0.3, 1, 16).astype(np.float32)}
    loss_func = QFuncLoss(0.99)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = {"td": [], "losses": []}
    obs_to_torch = lambda o: torch.tensor(o, dtype=torch.float32) / 255.
    for step in range(4):
        with torch.no_grad():
            double_q = model(obs_to_torch(samples['next_obs']))
            target_q = target_model(obs_to_torch(samples['next_obs']))
        q = model(obs_to_torch(samples['obs']))
        td_errors, loss = loss_func(q, torch.tensor(samples['action'], dtype=torch.int32), double_q, target_q,
                                    torch.tensor(samples['done'], dtype=torch.float32),
                                    torch.tensor(samples['reward']), torch.tensor(samples['weights']))
        new_priorities = np.abs(td_errors.cpu().numpy()) + 1e-6
        for pg in optimizer.param_groups:
            pg['lr'] = 1e-3
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
        optimizer.step()
        if step == 1:
            target_model.load_state_dict(model.state_dict())
        out["td"].append(new_priorities)
        out["losses"].append(loss.item())
    out["q"] = model(obs_to_torch(obs))
    return out


def test_dqn_double_q():
    weights = weights_of(make_dqn)
    ours, _ = run_both(dqn_program, weights, rtol=1e-5, atol=1e-6)
    assert ours["losses"][-1] < ours["losses"][0]
    assert all(np.all(td > 0) for td in ours["td"])
