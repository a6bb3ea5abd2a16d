# ruff: noqa: B007, B008, E501, F841  (the programs are kept as their authors wrote them)
"""Continuous-control and model-based RL programs, run as tests/probe14_control_common.py says. Deterministic
actor-critics: cleanRL's TD3 (target networks by ``load_state_dict``, target policy smoothing with ``randn_like``
noise clamped, delayed actor updates, Polyak updates by ``lerp_`` under ``no_grad``) and DDPG (Polyak by
``mul_``/``add_`` on ``.data``, exploration noise by ``torch.normal``); DrQ-v2 (random-shift augmentation by
F.pad(replicate) + F.grid_sample, a TruncatedNormal subclassing Normal through _extended_shape and _standard_normal,
orthogonal init with calculate_gain, a std schedule parsed from a string)."""

import numpy as np
import pytest

from .probe14_control_common import Pendulum, params, replay
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# cleanRL TD3 and DDPG
# ----------------------------------------------------------------------------------------------


def make_td3(m):
    torch, nn, F = m.torch, m.nn, m.F

    class QNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3 + 1, 32)
            self.fc2 = nn.Linear(32, 32)
            self.fc3 = nn.Linear(32, 1)

        def forward(self, x, a):
            x = torch.cat([x, a], 1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3, 32)
            self.fc2 = nn.Linear(32, 32)
            self.fc_mu = nn.Linear(32, 1)
            self.register_buffer("action_scale", torch.tensor([2.0], dtype=torch.float32))
            self.register_buffer("action_bias", torch.tensor([0.0], dtype=torch.float32))

        def forward(self, x):
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = torch.tanh(self.fc_mu(x))
            return x * self.action_scale + self.action_bias

    return nn.ModuleDict({"actor": Actor(), "target_actor": Actor(), "qf1": QNetwork(), "qf2": QNetwork(),
                          "qf1_target": QNetwork(), "qf2_target": QNetwork()})


def td3(m, weights, updates=6, policy_frequency=2):
    torch, F, optim = m.torch, m.F, m.optim
    torch.manual_seed(3)
    nets = load(m, make_td3(m), weights)
    actor, target_actor, qf1, qf2, qf1_target, qf2_target = (
        nets[k] for k in ("actor", "target_actor", "qf1", "qf2", "qf1_target", "qf2_target"))
    target_actor.load_state_dict(actor.state_dict())
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=1e-3)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=1e-3)
    policy_noise, noise_clip, gamma, tau = 0.2, 0.5, 0.99, 0.005
    obs_, act_, rew_, next_obs_, done_ = replay(0)
    history = []
    for global_step in range(updates):
        idx = np.arange(global_step * 8, global_step * 8 + 16) % 64
        observations, actions = torch.tensor(obs_[idx]), torch.tensor(act_[idx])
        rewards, next_observations, dones = torch.tensor(rew_[idx]), torch.tensor(next_obs_[idx]), torch.tensor(done_[idx])
        with torch.no_grad():
            clipped_noise = (torch.randn_like(actions, device="cpu") * policy_noise).clamp(
                -noise_clip, noise_clip
            ) * target_actor.action_scale

            next_state_actions = (target_actor(next_observations) + clipped_noise).clamp(-2.0, 2.0)
            qf1_next_target = qf1_target(next_observations, next_state_actions)
            qf2_next_target = qf2_target(next_observations, next_state_actions)
            min_qf_next_target = torch.min(qf1_next_target, qf2_next_target)
            next_q_value = rewards.flatten() + (1 - dones.flatten()) * gamma * (min_qf_next_target).view(-1)

        qf1_a_values = qf1(observations, actions).view(-1)
        qf2_a_values = qf2(observations, actions).view(-1)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        qf_loss = qf1_loss + qf2_loss

        q_optimizer.zero_grad()
        qf_loss.backward()
        q_optimizer.step()
        actor_loss = torch.tensor(0.0)
        if global_step % policy_frequency == 0:
            actor_loss = -qf1(observations, actor(observations)).mean()
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()

            with torch.no_grad():
                for param, target_param in zip(actor.parameters(), target_actor.parameters()):
                    target_param.lerp_(param, tau)
                for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
                    target_param.lerp_(param, tau)
                for param, target_param in zip(qf2.parameters(), qf2_target.parameters()):
                    target_param.lerp_(param, tau)
        history.append((qf1_loss.item(), qf2_loss.item(), actor_loss.item(), clipped_noise.abs().max().item()))
    return {"history": history, "target_actor": params(target_actor), "qf2_target": params(qf2_target),
            "actor": params(actor), "qf1_grads": [p.grad for p in qf1.parameters()]}


def test_cleanrl_td3():
    weights = weights_of(make_td3)
    ours, _ = run_both(td3, weights, rtol=2e-5, atol=1e-6)
    assert all(h[3] <= 0.5 * 2.0 + 1e-6 for h in ours["history"])  # noise clipped, then scaled


def ddpg(m, weights, updates=5):
    torch, F, optim = m.torch, m.F, m.optim
    torch.manual_seed(5)
    nets = load(m, make_td3(m), weights)
    actor, target_actor, qf1, qf1_target = (nets[k] for k in ("actor", "target_actor", "qf1", "qf1_target"))
    target_actor.load_state_dict(actor.state_dict())
    qf1_target.load_state_dict(qf1.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()), lr=1e-3)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=1e-3)
    gamma, tau, exploration_noise = 0.99, 0.005, 0.1
    env = Pendulum(7)
    obs = env.reset()
    rb = []
    for step in range(24):  # collect with exploration noise drawn by torch.normal
        with torch.no_grad():
            actions = actor(torch.Tensor(obs).unsqueeze(0))
            actions += torch.normal(0, actor.action_scale * exploration_noise)
            actions = actions.cpu().numpy().clip(-2.0, 2.0)
        next_obs, reward, done = env.step(actions[0, 0])
        rb.append((obs, actions[0], reward, next_obs, float(done)))
        obs = env.reset() if done else next_obs
    history = []
    for global_step in range(updates):
        batch = rb[global_step * 3: global_step * 3 + 12]
        observations = torch.Tensor(np.array([b[0] for b in batch]))
        actions = torch.Tensor(np.array([b[1] for b in batch]))
        rewards = torch.Tensor(np.array([b[2] for b in batch]))
        next_observations = torch.Tensor(np.array([b[3] for b in batch]))
        dones = torch.Tensor(np.array([b[4] for b in batch]))
        with torch.no_grad():
            next_state_actions = target_actor(next_observations)
            qf1_next_target = qf1_target(next_observations, next_state_actions)
            next_q_value = rewards.flatten() + (1 - dones.flatten()) * gamma * (qf1_next_target).view(-1)

        qf1_a_values = qf1(observations, actions).view(-1)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)

        q_optimizer.zero_grad()
        qf1_loss.backward()
        q_optimizer.step()

        actor_loss = -qf1(observations, actor(observations)).mean()
        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()

        for param, target_param in zip(actor.parameters(), target_actor.parameters()):
            target_param.data.mul_(1 - tau).add_(param.data, alpha=tau)
        for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
            target_param.data.mul_(1 - tau).add_(param.data, alpha=tau)
        history.append((qf1_loss.item(), actor_loss.item(), qf1_a_values.mean().item()))
    return {"history": history, "actions": np.array([b[1] for b in rb]), "target_actor": params(target_actor),
            "qf1_target": params(qf1_target)}


def test_cleanrl_ddpg():
    weights = weights_of(make_td3)
    ours, _ = run_both(ddpg, weights, rtol=2e-5, atol=1e-6)
    assert np.all(np.abs(ours["actions"]) <= 2.0)


# ----------------------------------------------------------------------------------------------
# DrQ-v2 (facebookresearch/drqv2): random-shift augmentation by F.pad(replicate) + F.grid_sample, a
# TruncatedNormal subclassing Normal through _extended_shape and _standard_normal, orthogonal init with
# calculate_gain, a std schedule parsed from a string
# ----------------------------------------------------------------------------------------------


def make_drq(m):
    torch, nn, F = m.torch, m.nn, m.F

    def weight_init(m_):
        if isinstance(m_, nn.Linear):
            nn.init.orthogonal_(m_.weight.data)
            if hasattr(m_.bias, "data"):
                m_.bias.data.fill_(0.0)
        elif isinstance(m_, nn.Conv2d) or isinstance(m_, nn.ConvTranspose2d):
            gain = nn.init.calculate_gain("relu")
            nn.init.orthogonal_(m_.weight.data, gain)
            if hasattr(m_.bias, "data"):
                m_.bias.data.fill_(0.0)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.repr_dim = 8 * 4 * 4
            self.convnet = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=1),
                                         nn.ReLU())
            self.apply(weight_init)

        def forward(self, obs):
            obs = obs / 255.0 - 0.5
            h = self.convnet(obs)
            h = h.view(h.shape[0], -1)
            return h

    class Actor(nn.Module):
        def __init__(self, repr_dim=128, feature_dim=16, hidden_dim=32):
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
            self.policy = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True),
                                        nn.Linear(hidden_dim, 2))
            self.apply(weight_init)

        def forward(self, obs, std):
            h = self.trunk(obs)
            mu = self.policy(h)
            mu = torch.tanh(mu)
            std = torch.ones_like(mu) * std
            return mu, std

    class Critic(nn.Module):
        def __init__(self, repr_dim=128, feature_dim=16, hidden_dim=32):
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
            self.Q1 = nn.Sequential(nn.Linear(feature_dim + 2, hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, 1))
            self.Q2 = nn.Sequential(nn.Linear(feature_dim + 2, hidden_dim), nn.ReLU(inplace=True),
                                    nn.Linear(hidden_dim, 1))
            self.apply(weight_init)

        def forward(self, obs, action):
            h = self.trunk(obs)
            h_action = torch.cat([h, action], dim=-1)
            return self.Q1(h_action), self.Q2(h_action)

    return nn.ModuleDict({"encoder": Encoder(), "actor": Actor(), "critic": Critic(), "critic_target": Critic()})


def drq_utils(m):
    """The distributions helpers of drqv2/utils.py, written against m."""
    import re
    torch = m.torch
    pyd = torch.distributions
    _standard_normal = torch.distributions.utils._standard_normal

    class TruncatedNormal(pyd.Normal):
        def __init__(self, loc, scale, low=-1.0, high=1.0, eps=1e-6):
            super().__init__(loc, scale, validate_args=False)
            self.low = low
            self.high = high
            self.eps = eps

        def _clamp(self, x):
            clamped_x = torch.clamp(x, self.low + self.eps, self.high - self.eps)
            x = x - x.detach() + clamped_x.detach()
            return x

        def sample(self, clip=None, sample_shape=torch.Size()):
            shape = self._extended_shape(sample_shape)
            eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
            eps *= self.scale
            if clip is not None:
                eps = torch.clamp(eps, -clip, clip)
            x = self.loc + eps
            return self._clamp(x)

    def schedule(schdl, step):
        try:
            return float(schdl)
        except ValueError:
            match = re.match(r"linear\((.+),(.+),(.+)\)", schdl)
            if match:
                init, final, duration = [float(g) for g in match.groups()]
                mix = np.clip(step / duration, 0.0, 1.0)
                return (1.0 - mix) * init + mix * final
        raise NotImplementedError(schdl)

    class RandomShiftsAug(m.nn.Module):
        def __init__(self, pad):
            super().__init__()
            self.pad = pad

        def forward(self, x):
            n, c, h, w = x.size()
            assert h == w
            padding = tuple([self.pad] * 4)
            x = m.F.pad(x, padding, "replicate")
            eps = 1.0 / (h + 2 * self.pad)
            arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * self.pad, device=x.device, dtype=x.dtype)[:h]
            arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
            base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2)
            base_grid = base_grid.unsqueeze(0).repeat(n, 1, 1, 1)
            shift = torch.randint(0, 2 * self.pad + 1, size=(n, 1, 1, 2), device=x.device, dtype=x.dtype)
            shift *= 2.0 / (h + 2 * self.pad)
            grid = base_grid + shift
            return m.F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)

    return TruncatedNormal, schedule, RandomShiftsAug


def drqv2(m, weights, updates=3):
    torch, F, optim = m.torch, m.F, m.optim
    torch.manual_seed(21)
    TruncatedNormal, schedule, RandomShiftsAug = drq_utils(m)
    nets = load(m, make_drq(m), weights)
    encoder, actor, critic, critic_target = (nets[k] for k in ("encoder", "actor", "critic", "critic_target"))
    critic_target.load_state_dict(critic.state_dict())
    encoder_opt = optim.Adam(encoder.parameters(), lr=1e-3)
    actor_opt = optim.Adam(actor.parameters(), lr=1e-3)
    critic_opt = optim.Adam(critic.parameters(), lr=1e-3)
    aug = RandomShiftsAug(pad=2)
    rng = np.random.default_rng(22)
    history = []
    for step in range(updates):
        obs = torch.as_tensor(rng.integers(0, 256, (6, 3, 13, 13)).astype(np.float32))
        next_obs = torch.as_tensor(rng.integers(0, 256, (6, 3, 13, 13)).astype(np.float32))
        action = torch.as_tensor(rng.uniform(-1, 1, (6, 2)).astype(np.float32))
        reward = torch.as_tensor(rng.standard_normal((6, 1)).astype(np.float32))
        discount = torch.full((6, 1), 0.99)
        obs = aug(obs.float())
        next_obs = aug(next_obs.float())
        obs = encoder(obs)
        with torch.no_grad():
            next_obs = encoder(next_obs)
        stddev = schedule("linear(1.0,0.1,10)", step)
        with torch.no_grad():
            mu, std = actor(next_obs, stddev)
            dist = TruncatedNormal(mu, std)
            next_action = dist.sample(clip=0.3)
            target_Q1, target_Q2 = critic_target(next_obs, next_action)
            target_V = torch.min(target_Q1, target_Q2)
            target_Q = reward + (discount * target_V)
        Q1, Q2 = critic(obs, action)
        critic_loss = F.mse_loss(Q1, target_Q) + F.mse_loss(Q2, target_Q)
        encoder_opt.zero_grad(set_to_none=True)
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        encoder_opt.step()

        obs = obs.detach()
        mu, std = actor(obs, stddev)
        dist = TruncatedNormal(mu, std)
        action = dist.sample(clip=0.3)
        log_prob = dist.log_prob(action).sum(-1, keepdim=True)
        Q1, Q2 = critic(obs, action)
        Q = torch.min(Q1, Q2)
        actor_loss = -Q.mean()
        actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        actor_opt.step()
        with torch.no_grad():
            for param, target_param in zip(critic.parameters(), critic_target.parameters()):
                target_param.data.copy_(0.01 * param.data + (1 - 0.01) * target_param.data)
        history.append((critic_loss.item(), actor_loss.item(), log_prob.mean().item(), stddev,
                        action.abs().max().item()))
    return {"history": history, "encoder": params(encoder), "actor": params(actor),
            "critic_target": params(critic_target)}


def test_drqv2_update():
    weights = weights_of(make_drq)
    ours, _ = run_both(drqv2, weights, rtol=1e-4, atol=2e-6)
    assert [h[3] for h in ours["history"]] == pytest.approx([1.0, 0.91, 0.82])
    assert all(h[4] < 1 for h in ours["history"])
