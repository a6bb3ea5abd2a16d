# ruff: noqa: E501, F841  (the programs are kept as their authors wrote them)
"""Continuous-control and model-based RL programs, run as tests/probe14_control_common.py says. SAC: a policy that is
a ``TransformedDistribution(Independent(Normal), [TanhTransform(cache_size=1), AffineTransform])`` sampled by
``rsample``, with ``log_alpha`` an ``nn.Parameter`` of its own optimiser, ``clip_grad_norm_`` on both networks and
the entropy of the base distribution; pytorch_sac (denisyarats): a SquashedNormal built on a user-written Transform
subclass; targets by deepcopy; stable-baselines3's polyak_update through torch.add(..., out=)."""

import math

import numpy as np

from .probe14_control_common import params, replay
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# SAC with a TransformedDistribution policy and a learnt temperature as an nn.Parameter
# ----------------------------------------------------------------------------------------------


def make_sac(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.q1 = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
            self.q2 = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))

        def forward(self, obs, action):
            x = torch.cat([obs, action], dim=-1)
            return self.q1(x), self.q2(x)

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(3, 32), nn.ELU(), nn.Linear(32, 32), nn.ELU(), nn.Linear(32, 2))

        def forward(self, obs):
            mu, log_std = self.trunk(obs).chunk(2, dim=-1)
            log_std = torch.tanh(log_std)
            log_std = -5 + 0.5 * (2 - -5) * (log_std + 1)
            D = torch.distributions
            base = D.Independent(D.Normal(mu, log_std.exp()), 1)
            dist = D.TransformedDistribution(base, [D.TanhTransform(cache_size=1),
                                                    D.AffineTransform(loc=0.0, scale=2.0)])
            return dist, base

    class Agent(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor = Actor()
            self.critic = Critic()
            self.critic_target = Critic()
            self.log_alpha = nn.Parameter(torch.tensor(np.log(0.1), dtype=torch.float32))

    return Agent()


def sac(m, weights, updates=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(11)
    agent = load(m, make_sac(m), weights)
    agent.critic_target.load_state_dict(agent.critic.state_dict())
    actor_opt = optim.Adam(agent.actor.parameters(), lr=3e-4)
    critic_opt = optim.Adam(agent.critic.parameters(), lr=3e-4)
    log_alpha_opt = optim.Adam([agent.log_alpha], lr=3e-4, betas=(0.5, 0.999))
    target_entropy = -1.0
    obs_, act_, rew_, next_obs_, done_ = replay(4)
    history, tau, discount = [], 0.01, 0.99
    for step in range(updates):
        idx = np.arange(step * 10, step * 10 + 20) % 64
        obs, action, reward = torch.as_tensor(obs_[idx]), torch.as_tensor(act_[idx]), torch.as_tensor(rew_[idx])[:, None]
        next_obs, not_done = torch.as_tensor(next_obs_[idx]), 1.0 - torch.as_tensor(done_[idx])[:, None]
        alpha = agent.log_alpha.exp()

        # critic
        dist, _ = agent.actor(next_obs)
        next_action = dist.rsample()
        log_prob = dist.log_prob(next_action).unsqueeze(-1)
        target_Q1, target_Q2 = agent.critic_target(next_obs, next_action)
        target_V = torch.min(target_Q1, target_Q2) - alpha.detach() * log_prob
        target_Q = (reward + (not_done * discount * target_V)).detach()
        current_Q1, current_Q2 = agent.critic(obs, action)
        critic_loss = F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q)
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_norm = nn.utils.clip_grad_norm_(agent.critic.parameters(), 1.0)
        critic_opt.step()

        # actor and temperature
        dist, base = agent.actor(obs)
        action = dist.rsample()
        log_prob = dist.log_prob(action).unsqueeze(-1)
        actor_Q1, actor_Q2 = agent.critic(obs, action)
        actor_Q = torch.min(actor_Q1, actor_Q2)
        actor_loss = (alpha.detach() * log_prob - actor_Q).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_norm = nn.utils.clip_grad_norm_(agent.actor.parameters(), 0.5, norm_type=2.0)
        actor_opt.step()

        log_alpha_opt.zero_grad()
        alpha_loss = (alpha * (-log_prob - target_entropy).detach()).mean()
        alpha_loss.backward()
        log_alpha_opt.step()

        with torch.no_grad():
            for p, tp in zip(agent.critic.parameters(), agent.critic_target.parameters()):
                tp.data.lerp_(p.data, tau)
        history.append((critic_loss.item(), actor_loss.item(), alpha_loss.item(), float(critic_norm),
                        float(actor_norm), base.entropy().mean().item(), action.abs().max().item()))
    return {"history": history, "log_alpha": agent.log_alpha.detach().clone(),
            "log_alpha_grad": agent.log_alpha.grad, "actor": params(agent.actor),
            "critic_target": params(agent.critic_target)}


def test_sac_transformed_distribution_policy():
    weights = weights_of(make_sac)
    ours, _ = run_both(sac, weights, rtol=5e-5, atol=2e-6)
    assert ours["log_alpha_grad"].shape == ()
    assert all(h[6] <= 2.0 for h in ours["history"])


def test_tanh_transform_log_prob_by_hand():
    """log p(2 tanh(u)) = sum[log N(u) - log(1 - tanh(u)^2) - log 2], PyTorch's TanhTransform using the stable
    2 (log 2 - u - softplus(-2u)), from the cached pre-image of an rsample."""
    torch = OURS.torch
    D = torch.distributions
    torch.manual_seed(0)
    mu = torch.tensor([[0.3, -1.0], [2.0, 0.5]], requires_grad=True)
    sigma = torch.tensor([[0.5, 1.5], [0.2, 3.0]])
    dist = D.TransformedDistribution(D.Independent(D.Normal(mu, sigma), 1),
                                     [D.TanhTransform(cache_size=1), D.AffineTransform(0.0, 2.0)])
    a = dist.rsample()
    lp = dist.log_prob(a)
    u = np.arctanh(a.detach().numpy().astype(np.float64) / 2)
    m, s = mu.detach().numpy(), sigma.numpy()
    expected = (-0.5 * ((u - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
                - np.log(1 - np.tanh(u) ** 2) - np.log(2)).sum(-1)
    np.testing.assert_allclose(lp.detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    assert lp.shape == (2,)


# ----------------------------------------------------------------------------------------------
# pytorch_sac (denisyarats): a SquashedNormal built on a user-written Transform subclass; targets by deepcopy;
# stable-baselines3's polyak_update through torch.add(..., out=)
# ----------------------------------------------------------------------------------------------


def make_squashed_actor(m):
    torch, nn, F = m.torch, m.nn, m.F
    pyd = torch.distributions

    class TanhTransform(pyd.transforms.Transform):
        domain = pyd.constraints.real
        codomain = pyd.constraints.interval(-1.0, 1.0)
        bijective = True
        sign = +1

        def __init__(self, cache_size=1):
            super().__init__(cache_size=cache_size)

        @staticmethod
        def atanh(x):
            return 0.5 * (x.log1p() - (-x).log1p())

        def __eq__(self, other):
            return isinstance(other, TanhTransform)

        def _call(self, x):
            return x.tanh()

        def _inverse(self, y):
            return self.atanh(y)

        def log_abs_det_jacobian(self, x, y):
            return 2. * (math.log(2.) - x - F.softplus(-2. * x))

    class SquashedNormal(pyd.transformed_distribution.TransformedDistribution):
        def __init__(self, loc, scale):
            self.loc = loc
            self.scale = scale
            self.base_dist = pyd.Normal(loc, scale)
            transforms = [TanhTransform()]
            super().__init__(self.base_dist, transforms)

        @property
        def mean(self):
            mu = self.loc
            for tr in self.transforms:
                mu = tr(mu)
            return mu

    class DiagGaussianActor(nn.Module):
        def __init__(self, log_std_bounds=(-5, 2)):
            super().__init__()
            self.log_std_bounds = log_std_bounds
            self.trunk = nn.Sequential(nn.Linear(3, 32), nn.ReLU(inplace=True), nn.Linear(32, 2))

        def forward(self, obs):
            mu, log_std = self.trunk(obs).chunk(2, dim=-1)
            log_std = torch.tanh(log_std)
            log_std_min, log_std_max = self.log_std_bounds
            log_std = log_std_min + 0.5 * (log_std_max - log_std_min) * (log_std + 1)
            std = log_std.exp()
            return SquashedNormal(mu, std)

    class DoubleQCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.Q1 = nn.Sequential(nn.Linear(4, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))
            self.Q2 = nn.Sequential(nn.Linear(4, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))

        def forward(self, obs, action):
            obs_action = torch.cat([obs, action], dim=-1)
            return self.Q1(obs_action), self.Q2(obs_action)

    return nn.ModuleDict({"actor": DiagGaussianActor(), "critic": DoubleQCritic()})


def polyak_update(torch, params, target_params, tau):
    with torch.no_grad():
        for param, target_param in zip(params, target_params):
            target_param.data.mul_(1 - tau)
            torch.add(target_param.data, param.data, alpha=tau, out=target_param.data)


def pytorch_sac(m, weights, updates=4):
    import copy
    torch, F, optim = m.torch, m.F, m.optim
    torch.manual_seed(17)
    nets = load(m, make_squashed_actor(m), weights)
    actor, critic = nets["actor"], nets["critic"]
    critic_target = copy.deepcopy(critic)
    critic_target.requires_grad_(False)
    log_alpha = torch.tensor(np.log(0.1)).to("cpu")
    log_alpha.requires_grad = True
    target_entropy = -1
    actor_optimizer = optim.Adam(actor.parameters(), lr=1e-3, betas=[0.9, 0.999])
    critic_optimizer = optim.Adam(critic.parameters(), lr=1e-3, betas=[0.9, 0.999])
    log_alpha_optimizer = optim.Adam([log_alpha], lr=1e-3, betas=[0.9, 0.999])
    obs_, act_, rew_, next_obs_, done_ = replay(8)
    history = []
    for step in range(updates):
        idx = np.arange(step * 12, step * 12 + 16) % 64
        obs, action = torch.as_tensor(obs_[idx]), torch.as_tensor(act_[idx]) / 2
        reward, next_obs = torch.as_tensor(rew_[idx]).unsqueeze(1) / 10, torch.as_tensor(next_obs_[idx])
        not_done = 1 - torch.as_tensor(done_[idx]).unsqueeze(1)
        alpha = log_alpha.exp()
        dist = actor(next_obs)
        next_action = dist.rsample()
        log_prob = dist.log_prob(next_action).sum(-1, keepdim=True)
        target_Q1, target_Q2 = critic_target(next_obs, next_action)
        target_V = torch.min(target_Q1, target_Q2) - alpha.detach() * log_prob
        target_Q = reward + (not_done * 0.99 * target_V)
        target_Q = target_Q.detach()
        current_Q1, current_Q2 = critic(obs, action)
        critic_loss = F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q)
        critic_optimizer.zero_grad()
        critic_loss.backward()
        critic_optimizer.step()

        dist = actor(obs)
        action = dist.rsample()
        log_prob = dist.log_prob(action).sum(-1, keepdim=True)
        actor_Q1, actor_Q2 = critic(obs, action)
        actor_Q = torch.min(actor_Q1, actor_Q2)
        actor_loss = (alpha.detach() * log_prob - actor_Q).mean()
        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()
        log_alpha_optimizer.zero_grad()
        alpha_loss = (alpha * (-log_prob - target_entropy).detach()).mean()
        alpha_loss.backward()
        log_alpha_optimizer.step()
        polyak_update(torch, critic.parameters(), critic_target.parameters(), 0.05)
        history.append((critic_loss.item(), actor_loss.item(), alpha_loss.item(), -log_prob.mean().item(),
                        dist.mean.abs().max().item()))
    return {"history": history, "log_alpha": log_alpha.detach(), "target": params(critic_target),
            "target_requires_grad": [p.requires_grad for p in critic_target.parameters()],
            "actor": params(actor)}


def test_pytorch_sac_squashed_normal():
    weights = weights_of(make_squashed_actor)
    ours, _ = run_both(pytorch_sac, weights, rtol=5e-5, atol=2e-6)
    assert not any(ours["target_requires_grad"])
    assert all(h[4] < 1 for h in ours["history"])
