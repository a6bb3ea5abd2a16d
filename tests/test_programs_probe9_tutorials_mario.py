# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""PyTorch's official tutorials (pytorch/tutorials: beginner_source, intermediate_source, advanced_source), each run
on chainrule and on PyTorch from the same weights and data, comparing losses, parameters and gradients. The Mario
double-DQN tutorial (a class built by subclassing itself five times, an online network and its ``copy.deepcopy``
target with ``requires_grad = False``, LazyFrames-style states by ``__array__``, a ``deque`` replay memory turned
into batches by ``map(torch.stack, zip(*batch))``, ``Q[np.arange(batch_size), action]`` indexing by a NumPy array and
a tensor, ``torch.argmax(..., axis=1)``, ``@torch.no_grad()`` on a method, ``(1 - done.float())``, SmoothL1Loss, Adam
over frozen and trained parameters, the target synced by ``load_state_dict`` and a checkpoint dict saved and loaded)."""

import copy
import random
from collections import deque

import numpy as np
import pytest

from .pytorch_programs import OURS, assert_same, plain, pytorch, weights_of

# ----------------------------------------------------------------------------------------------
# Train a Mario-playing RL agent (intermediate_source/mario_rl_tutorial.py)
# ----------------------------------------------------------------------------------------------


class LazyFrames:
    """gym's LazyFrames: stacked frames handed over by ``__array__``."""

    def __init__(self, frames):
        self._frames = frames

    def __array__(self, dtype=None, copy=None):
        out = np.stack(self._frames, axis=0)
        return out if dtype is None else out.astype(dtype)


class ToyMarioEnv:
    """Four stacked 84x84 grey frames of a bright block that moves right when the action is 1."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def frame(self):
        f = 0.1 * self.rng.random((84, 84)).astype(np.float32)
        f[30:50, self.x:self.x + 10] += 1.0
        return f

    def reset(self):
        self.x, self.t = 5, 0
        self.frames = deque([self.frame() for _ in range(4)], maxlen=4)
        return LazyFrames(list(self.frames))

    def step(self, action):
        self.x = min(self.x + (4 if action == 1 else -2 if action == 0 else 0), 70)
        self.x = max(self.x, 0)
        self.t += 1
        self.frames.append(self.frame())
        reward = float(action == 1) - 0.1
        done = self.t >= 9
        return LazyFrames(list(self.frames)), reward, done, {"flag_get": self.x >= 70}


def mario(m, weights, tmp_path):
    torch, nn = m.torch, m.nn
    np.random.seed(0)
    random.seed(0)

    class MarioNet(nn.Module):
        """mini cnn structure
      input -> (conv2d + relu) x 3 -> flatten -> (dense + relu) x 2 -> output
      """

        def __init__(self, input_dim, output_dim):
            super().__init__()
            c, h, w = input_dim
            if h != 84:
                raise ValueError(f"Expecting input height: 84, got: {h}")
            if w != 84:
                raise ValueError(f"Expecting input width: 84, got: {w}")
            self.online = nn.Sequential(
                nn.Conv2d(in_channels=c, out_channels=8, kernel_size=8, stride=4),
                nn.ReLU(),
                nn.Conv2d(in_channels=8, out_channels=8, kernel_size=4, stride=2),
                nn.ReLU(),
                nn.Conv2d(in_channels=8, out_channels=8, kernel_size=3, stride=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(392, 32),
                nn.ReLU(),
                nn.Linear(32, output_dim),
            )
            self.target = copy.deepcopy(self.online)
            for p in self.target.parameters():
                p.requires_grad = False

        def forward(self, input, model):
            if model == "online":
                return self.online(input)
            elif model == "target":
                return self.target(input)

    if weights is None:
        return MarioNet((4, 84, 84), 3)

    class Mario:
        def __init__(self, state_dim, action_dim, save_dir):
            self.state_dim = state_dim
            self.action_dim = action_dim
            self.save_dir = save_dir
            self.use_cuda = torch.cuda.is_available()
            self.net = MarioNet(self.state_dim, self.action_dim).float()
            self.net.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
            if self.use_cuda:
                self.net = self.net.to(device="cuda")
            self.exploration_rate = 1
            self.exploration_rate_decay = 0.8
            self.exploration_rate_min = 0.1
            self.curr_step = 0
            self.save_every = 12

        def act(self, state):
            if np.random.rand() < self.exploration_rate:
                action_idx = np.random.randint(self.action_dim)
            else:
                state = state.__array__()
                if self.use_cuda:
                    state = torch.tensor(state).cuda()
                else:
                    state = torch.tensor(state)
                state = state.unsqueeze(0)
                action_values = self.net(state, model="online")
                action_idx = torch.argmax(action_values, axis=1).item()
            self.exploration_rate *= self.exploration_rate_decay
            self.exploration_rate = max(self.exploration_rate_min, self.exploration_rate)
            self.curr_step += 1
            return action_idx

    class Mario(Mario):  # subclassing for continuity
        def __init__(self, state_dim, action_dim, save_dir):
            super().__init__(state_dim, action_dim, save_dir)
            self.memory = deque(maxlen=100000)
            self.batch_size = 6

        def cache(self, state, next_state, action, reward, done):
            state = state.__array__()
            next_state = next_state.__array__()
            state = torch.tensor(state)
            next_state = torch.tensor(next_state)
            action = torch.tensor([action])
            reward = torch.tensor([reward])
            done = torch.tensor([done])
            self.memory.append((state, next_state, action, reward, done,))

        def recall(self):
            batch = random.sample(self.memory, self.batch_size)
            state, next_state, action, reward, done = map(torch.stack, zip(*batch))
            return state, next_state, action.squeeze(), reward.squeeze(), done.squeeze()

    class Mario(Mario):
        def __init__(self, state_dim, action_dim, save_dir):
            super().__init__(state_dim, action_dim, save_dir)
            self.gamma = 0.9

        def td_estimate(self, state, action):
            current_Q = self.net(state, model="online")[
                np.arange(0, self.batch_size), action
            ]  # Q_online(s,a)
            return current_Q

        @torch.no_grad()
        def td_target(self, reward, next_state, done):
            next_state_Q = self.net(next_state, model="online")
            best_action = torch.argmax(next_state_Q, axis=1)
            next_Q = self.net(next_state, model="target")[
                np.arange(0, self.batch_size), best_action
            ]
            return (reward + (1 - done.float()) * self.gamma * next_Q).float()

    class Mario(Mario):
        def __init__(self, state_dim, action_dim, save_dir):
            super().__init__(state_dim, action_dim, save_dir)
            self.optimizer = m.optim.Adam(self.net.parameters(), lr=0.001)  # torch.optim: see test_torch_dot_nn_spelling
            self.loss_fn = nn.SmoothL1Loss()  # torch.nn.SmoothL1Loss in the tutorial

        def update_Q_online(self, td_estimate, td_target):
            loss = self.loss_fn(td_estimate, td_target)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return loss.item()

        def sync_Q_target(self):
            self.net.target.load_state_dict(self.net.online.state_dict())

    class Mario(Mario):
        def save(self):
            save_path = (
                self.save_dir / f"mario_net_{int(self.curr_step // self.save_every)}.chkpt"
            )
            torch.save(
                dict(model=self.net.state_dict(), exploration_rate=self.exploration_rate),
                save_path,
            )
            self.saved.append(save_path.name)

    class Mario(Mario):
        def __init__(self, state_dim, action_dim, save_dir):
            super().__init__(state_dim, action_dim, save_dir)
            self.burnin = 8
            self.learn_every = 3
            self.sync_every = 6
            self.saved = []

        def learn(self):
            if self.curr_step % self.sync_every == 0:
                self.sync_Q_target()
            if self.curr_step % self.save_every == 0:
                self.save()
            if self.curr_step < self.burnin:
                return None, None
            if self.curr_step % self.learn_every != 0:
                return None, None
            state, next_state, action, reward, done = self.recall()
            td_est = self.td_estimate(state, action)
            td_tgt = self.td_target(reward, next_state, done)
            loss = self.update_Q_online(td_est, td_tgt)
            return (td_est.mean().item(), loss)

    env = ToyMarioEnv(seed=0)
    mario = Mario(state_dim=(4, 84, 84), action_dim=3, save_dir=tmp_path)
    log = []
    for e in range(3):
        state = env.reset()
        while True:
            action = mario.act(state)
            next_state, reward, done, info = env.step(action)
            mario.cache(state, next_state, action, reward, done)
            q, loss = mario.learn()
            log.append((action, q, loss))
            state = next_state
            if done or info["flag_get"]:
                break
    checkpoint = torch.load(tmp_path / mario.saved[-1])
    restored = MarioNet((4, 84, 84), 3)
    restored.load_state_dict(checkpoint["model"])
    frozen = [p.requires_grad for p in mario.net.target.parameters()]
    return {"log": log, "saved": mario.saved, "exploration_rate": checkpoint["exploration_rate"],
            "params": dict(mario.net.state_dict()), "restored": dict(restored.state_dict()), "frozen": frozen,
            "target_grads": [p.grad is None for p in mario.net.target.parameters()]}


def test_mario_double_dqn(tmp_path):
    weights = weights_of(lambda m: mario(m, None, None))
    (tmp_path / "ours").mkdir()
    (tmp_path / "torch").mkdir()
    ours = mario(OURS, weights, tmp_path / "ours")
    torch_modules = pytorch()
    if torch_modules is not None:
        assert_same(plain(ours), plain(mario(torch_modules, weights, tmp_path / "torch")), rtol=2e-4, atol=2e-5)
    ours = plain(ours)
    losses = [loss for _, _, loss in ours["log"] if loss is not None]
    assert len(losses) >= 4 and all(np.isfinite(losses))
    assert ours["frozen"] == [False] * 10 and ours["target_grads"] == [True] * 10
    assert ours["saved"] == ["mario_net_1.chkpt", "mario_net_2.chkpt"]
    assert ours["exploration_rate"] == pytest.approx(max(0.1, 0.8 ** 24))
