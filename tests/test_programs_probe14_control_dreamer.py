# ruff: noqa: B007, E501, E702, E731, F841  (the programs are kept as their authors wrote them)
"""Continuous-control and model-based RL programs, run as tests/probe14_control_common.py says. Dreamer: a world
model (an RSSM with a ``GRUCell``, a Gaussian latent with ``kl_divergence`` between ``Independent(Normal)``s with
free bits by ``torch.max``/``clamp``, and a DreamerV2 discrete latent by ``OneHotCategoricalStraightThrough`` with KL
balancing through ``detach``), trained with Adam after ``clip_grad_norm_``; imagination: an actor-critic trained in a
frozen world model's latent space (dynamics backprop), lambda-returns in a reversed loop, discount weights by
cumprod, rl_games' RunningMeanStd module whose buffers are reassigned, a Beta policy head; dreamerv3-torch pieces (a
OneHotDist subclassing OneHotCategorical, its layer-normed GRUCell, the two-hot symlog target, ReturnEMA's quantiles,
seeded inits)."""

import numpy as np

from .probe14_control_common import Pendulum, params
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A Dreamer-style world model (RSSM): GRUCell, Gaussian and straight-through categorical latents
# ----------------------------------------------------------------------------------------------


def make_world_model(m, stoch=4, classes=3, deter=16, hidden=16):
    torch, nn, F = m.torch, m.nn, m.F

    class RSSM(nn.Module):
        def __init__(self):
            super().__init__()
            self.img_in = nn.Linear(stoch * classes + 1, hidden)
            self.cell = nn.GRUCell(hidden, deter)
            self.prior_head = nn.Sequential(nn.Linear(deter, hidden), nn.ELU(), nn.Linear(hidden, 2 * 2))
            self.post_head = nn.Sequential(nn.Linear(deter + 3, hidden), nn.ELU(), nn.Linear(hidden, 2 * 2))
            self.prior_logits = nn.Linear(deter, stoch * classes)
            self.post_logits = nn.Linear(deter + 3, stoch * classes)
            self.decoder = nn.Sequential(nn.Linear(deter + stoch * classes + 2, hidden), nn.ELU(), nn.Linear(hidden, 3))
            self.reward = nn.Linear(deter + stoch * classes + 2, 1)

        def gaussian(self, stats):
            mean, std = stats.chunk(2, -1)
            std = F.softplus(std) + 0.1
            return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)

        def categorical(self, logits):
            logits = logits.reshape(*logits.shape[:-1], stoch, classes)
            return torch.distributions.Independent(
                torch.distributions.OneHotCategoricalStraightThrough(logits=logits), 1)

        def forward(self, obs, actions):
            B, T = obs.shape[:2]
            h = torch.zeros(B, deter)
            z = torch.zeros(B, stoch * classes)
            kl_cont, kl_disc, feats = [], [], []
            for t in range(T):
                x = F.elu(self.img_in(torch.cat([z, actions[:, t]], -1)))
                h = self.cell(x, h)
                prior_g = self.gaussian(self.prior_head(h))
                post_g = self.gaussian(self.post_head(torch.cat([h, obs[:, t]], -1)))
                prior_c = self.categorical(self.prior_logits(h))
                post_c = self.categorical(self.post_logits(torch.cat([h, obs[:, t]], -1)))
                z = post_c.rsample().flatten(1)
                g = post_g.rsample()
                kl_cont.append(torch.distributions.kl_divergence(post_g, prior_g))
                # DreamerV2 KL balancing: train the prior toward the posterior harder than the reverse
                post_sg = self.categorical(post_c.base_dist.logits.detach().flatten(-2))
                prior_sg = self.categorical(prior_c.base_dist.logits.detach().flatten(-2))
                kl_lhs = torch.distributions.kl_divergence(post_sg, prior_c)
                kl_rhs = torch.distributions.kl_divergence(post_c, prior_sg)
                kl_disc.append(0.8 * kl_lhs + 0.2 * kl_rhs)
                feats.append(torch.cat([h, z, g], -1))
            return torch.stack(kl_cont, 1), torch.stack(kl_disc, 1), torch.stack(feats, 1)

    return RSSM()


def world_model(m, weights, updates=3, free_nats=1.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(2)
    model = load(m, make_world_model(m), weights)
    opt = optim.Adam(model.parameters(), lr=1e-3, eps=1e-5)
    env, rng = Pendulum(30), np.random.default_rng(31)
    B, T = 3, 5
    obs = np.zeros((B, T, 3), np.float32)
    acts = rng.uniform(-2, 2, (B, T, 1)).astype(np.float32)
    rews = np.zeros((B, T, 1), np.float32)
    for b in range(B):
        env.reset()
        for t in range(T):
            o, r, _ = env.step(acts[b, t, 0])
            obs[b, t], rews[b, t, 0] = o, r / 10
    obs, acts, rews = torch.tensor(obs), torch.tensor(acts), torch.tensor(rews)
    history = []
    for step in range(updates):
        kl_cont, kl_disc, feat = model(obs, acts)
        recon = model.decoder(feat)
        obs_dist = torch.distributions.Independent(torch.distributions.Normal(recon, 1.0), 1)
        rec_loss = -obs_dist.log_prob(obs).mean()
        reward_loss = F.mse_loss(model.reward(feat), rews)
        kl_free = torch.max(kl_cont.mean(), torch.tensor(free_nats))  # DreamerV1: free nats on the mean
        kl_disc_free = kl_disc.clamp(min=free_nats / 4).mean()  # per-step free bits
        loss = rec_loss + reward_loss + kl_free + 0.1 * kl_disc_free
        opt.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        history.append((loss.item(), rec_loss.item(), kl_cont.mean().item(), kl_disc.mean().item(), float(norm)))
    return {"history": history, "kl_cont": kl_cont, "kl_disc": kl_disc, "feat": feat,
            "cell_grads": [p.grad for p in model.cell.parameters()],
            "logit_grads": [p.grad for p in model.post_logits.parameters()], "params": params(model)}


def test_dreamer_world_model():
    weights = weights_of(make_world_model)
    ours, _ = run_both(world_model, weights, rtol=5e-5, atol=2e-6)
    z = ours["feat"][..., 16:28].reshape(3, 5, 4, 3)
    assert np.all(z.sum(-1) == 1) and set(np.unique(z)) <= {0.0, 1.0}  # straight-through samples are one-hot
    assert np.all(ours["kl_cont"] >= -1e-6) and np.all(ours["kl_disc"] >= -1e-6)


# ----------------------------------------------------------------------------------------------
# Dreamer imagination: an actor-critic trained in a frozen world model's latent space (dynamics backprop),
# lambda-returns in a reversed loop, discount weights by cumprod, rl_games' RunningMeanStd module whose
# buffers are reassigned, a Beta policy head
# ----------------------------------------------------------------------------------------------


def make_imagination(m, deter=12, act=2):
    torch, nn, F = m.torch, m.nn, m.F

    class RunningMeanStd(nn.Module):
        def __init__(self, insize, epsilon=1e-05):
            super().__init__()
            self.epsilon = epsilon
            self.register_buffer("running_mean", torch.zeros(insize, dtype=torch.float64))
            self.register_buffer("running_var", torch.ones(insize, dtype=torch.float64))
            self.register_buffer("count", torch.ones((), dtype=torch.float64))

        def _update_mean_var_count_from_moments(self, mean, var, count, batch_mean, batch_var, batch_count):
            delta = batch_mean - mean
            tot_count = count + batch_count
            new_mean = mean + delta * batch_count / tot_count
            m_a = var * count
            m_b = batch_var * batch_count
            M2 = m_a + m_b + delta ** 2 * count * batch_count / tot_count
            new_var = M2 / tot_count
            new_count = tot_count
            return new_mean, new_var, new_count

        def forward(self, input, denorm=False):
            if self.training:
                mean = input.mean(0)
                var = input.var(0)
                self.running_mean, self.running_var, self.count = self._update_mean_var_count_from_moments(
                    self.running_mean, self.running_var, self.count, mean, var, input.size()[0])
            current_mean = self.running_mean
            current_var = self.running_var
            if denorm:
                y = torch.clamp(input, min=-5.0, max=5.0)
                y = torch.sqrt(current_var.float() + self.epsilon) * y + current_mean.float()
            else:
                y = (input - current_mean.float()) / torch.sqrt(current_var.float() + self.epsilon)
                y = torch.clamp(y, min=-5.0, max=5.0)
            return y

    class WorldModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.dynamics = nn.GRUCell(deter + act, deter)
            self.reward = nn.Sequential(nn.Linear(deter, 16), nn.ELU(), nn.Linear(16, 1))
            self.cont = nn.Linear(deter, 1)

    class ActorCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = RunningMeanStd(deter)
            self.actor = nn.Sequential(nn.Linear(deter, 16), nn.ELU(), nn.Linear(16, 2 * act))
            self.critic = nn.Sequential(nn.Linear(deter, 16), nn.ELU(), nn.Linear(16, 1))
            self.slow_critic = nn.Sequential(nn.Linear(deter, 16), nn.ELU(), nn.Linear(16, 1))

        def policy(self, feat):
            alpha, beta = self.actor(self.norm(feat)).chunk(2, -1)
            alpha, beta = F.softplus(alpha) + 1.0, F.softplus(beta) + 1.0
            return torch.distributions.Independent(torch.distributions.Beta(alpha, beta), 1)

    return nn.ModuleDict({"wm": WorldModel(), "ac": ActorCritic()})


def lambda_return(reward, value, pcont, bootstrap, lambda_, axis=0):
    # DreamerV1's tools.lambda_return, with the scan written as the loop it unrolls to
    returns, last = [], bootstrap
    for t in reversed(range(len(reward))):
        nxt = value[t + 1] if t + 1 < len(value) else bootstrap
        inputs = reward[t] + pcont[t] * nxt * (1 - lambda_)
        last = inputs + pcont[t] * lambda_ * last
        returns.append(last)
    return returns[::-1]


def imagination(m, weights, updates=3, horizon=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(33)
    nets = load(m, make_imagination(m), weights)
    wm, ac = nets["wm"], nets["ac"]
    ac.slow_critic.load_state_dict(ac.critic.state_dict())
    actor_opt = optim.Adam(ac.actor.parameters(), lr=1e-3, eps=1e-5)
    critic_opt = optim.Adam(ac.critic.parameters(), lr=1e-3, eps=1e-5)
    rng = np.random.default_rng(34)
    history = []
    for step in range(updates):
        start = torch.as_tensor(rng.standard_normal((8, 12)).astype(np.float32))
        wm.requires_grad_(False)  # tools.RequiresGrad / FreezeParameters: the world model is not trained here
        feat, feats, actions, entropies, log_probs = start, [start], [], [], []
        for _ in range(horizon):
            dist = ac.policy(feat.detach())
            action = dist.rsample() * 2 - 1
            entropies.append(dist.entropy())
            log_probs.append(dist.log_prob((action.detach() + 1) / 2))
            feat = wm.dynamics(torch.cat([feat, action], -1), feat)
            feats.append(feat)
            actions.append(action)
        feats = torch.stack(feats)
        reward = wm.reward(feats[1:]).squeeze(-1)
        pcont = 0.99 * torch.sigmoid(wm.cont(feats[1:])).squeeze(-1)
        value = ac.slow_critic(feats).squeeze(-1)
        returns = torch.stack(lambda_return(list(reward), list(value[1:-1]) + [value[-1]], list(pcont),
                                            value[-1], 0.95))
        discount = torch.cumprod(torch.cat([torch.ones_like(pcont[:1]), pcont[:-1]], 0), 0).detach()
        entropy = torch.stack(entropies)
        actor_loss = -(discount * (returns + 3e-4 * entropy)).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_norm = nn.utils.clip_grad_norm_(ac.actor.parameters(), 100.0)
        actor_opt.step()
        wm.requires_grad_(True)

        value_pred = ac.critic(feats[:-1].detach()).squeeze(-1)
        critic_loss = (discount * 0.5 * (value_pred - returns.detach()) ** 2).mean()
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        with torch.no_grad():
            for s, d in zip(ac.slow_critic.parameters(), ac.critic.parameters()):
                s.mul_(0.98).add_(0.02 * d)
        history.append((actor_loss.item(), critic_loss.item(), float(actor_norm), entropy.mean().item(),
                        torch.stack(log_probs).mean().item()))
    return {"history": history, "returns": returns, "discount": discount, "actor": params(ac.actor),
            "wm_grads": [p.grad for p in wm.parameters()], "norm": dict(ac.norm.state_dict()),
            "norm_buffers": sorted(k for k, _ in ac.norm.named_buffers())}


def test_dreamer_imagination_actor_critic():
    weights = weights_of(make_imagination)
    ours, _ = run_both(imagination, weights, rtol=1e-4, atol=2e-6)
    assert all(g is None for g in ours["wm_grads"])  # frozen while the actor backpropagated through it
    assert ours["norm_buffers"] == ["count", "running_mean", "running_var"]
    assert ours["norm"]["count"] == 1 + 3 * 5 * 8 and ours["norm"]["running_mean"].dtype == np.float64


# ----------------------------------------------------------------------------------------------
# dreamerv3-torch pieces: a OneHotDist subclassing OneHotCategorical (unimix, straight-through sample, a mode
# method) under Independent with kl_divergence found through the subclass and free bits by clip; its
# layer-normed GRUCell scanned over time by permute; the two-hot symlog target of DiscDist; ReturnEMA's
# torch.quantile(input=, q=); init by trunc_normal_ and uniform_, cleanRL RPO's FloatTensor(size).uniform_
# ----------------------------------------------------------------------------------------------


def onehot_dist(m):
    torch=m.torch; F=m.F; torchd=torch.distributions
    class OneHotDist(torchd.one_hot_categorical.OneHotCategorical):
        def __init__(self, logits=None, probs=None, unimix_ratio=0.0):
            if logits is not None and unimix_ratio > 0.0:
                probs = F.softmax(logits, dim=-1)
                probs = probs * (1.0 - unimix_ratio) + unimix_ratio / probs.shape[-1]
                logits = torch.log(probs)
                super().__init__(logits=logits, probs=None)
            else:
                super().__init__(logits=logits, probs=probs)
        def mode(self):  # noqa: D102 (dreamerv3-torch overrides the property with a method)
            _mode = F.one_hot(torch.argmax(super().logits, axis=-1), super().logits.shape[-1])
            return _mode.detach() + super().logits - super().logits.detach()
        def sample(self, sample_shape=(), seed=None):
            if seed is not None:
                raise ValueError("need to check")
            sample = super().sample(sample_shape).detach()
            probs = super().probs
            while len(probs.shape) < len(sample.shape):
                probs = probs[None]
            sample += probs - probs.detach()
            return sample
    torch.manual_seed(0)
    logits = torch.randn(2,3,4, requires_grad=True)
    post = torchd.independent.Independent(OneHotDist(logits, unimix_ratio=0.01), 1)
    prior = torchd.independent.Independent(OneHotDist(logits.detach()*0.5, unimix_ratio=0.01), 1)
    s = post.sample()
    kl = torchd.kl.kl_divergence(post, prior)
    dyn = torch.clip(kl, min=1.0)
    loss = (s * torch.arange(4.)).sum() + dyn.mean() + post.base_dist.mode().sum()
    loss.backward()
    return s, kl, dyn, logits.grad, post.entropy()


def test_onehot_dist():
    (s, kl, dyn, grad, entropy), _ = run_both(onehot_dist)
    assert np.all(s.sum(-1) == 1) and set(np.unique(s)) <= {0.0, 1.0}
    assert np.all(kl >= 0) and np.all(dyn >= 1.0) and grad.shape == (2, 3, 4)


def layer_norm_gru(m):
    torch=m.torch; F=m.F; nn=m.nn
    class GRUCell(nn.Module):
        def __init__(self, inp_size, size, norm=True, act=torch.tanh, update_bias=-1):
            super().__init__()
            self._inp_size = inp_size; self._size = size; self._act = act; self._update_bias = update_bias
            self.layers = nn.Sequential()
            self.layers.add_module("GRU_linear", nn.Linear(inp_size + size, 3 * size, bias=False))
            if norm:
                self.layers.add_module("GRU_norm", nn.LayerNorm(3 * size, eps=1e-03))
        @property
        def state_size(self):
            return self._size
        def forward(self, inputs, state):
            state = state[0]
            parts = self.layers(torch.cat([inputs, state], -1))
            reset, cand, update = torch.split(parts, [self._size] * 3, -1)
            reset = torch.sigmoid(reset)
            cand = self._act(reset * cand)
            update = torch.sigmoid(update + self._update_bias)
            output = update * cand + (1 - update) * state
            return output, [output]
    torch.manual_seed(0)
    cell = GRUCell(3, 5)
    x = torch.randn(4, 6, 3)
    swap = lambda x: x.permute([1, 0] + list(range(2, len(x.shape))))
    h = [torch.zeros(4, 5)]
    outs = []
    for t in swap(x):
        o, h = cell(t, h); outs.append(o)
    out = swap(torch.stack(outs))
    out.pow(2).sum().backward()
    return out, [p.grad for p in cell.parameters()]


def test_layer_norm_gru():
    (out, grads), _ = run_both(layer_norm_gru)
    assert out.shape == (4, 6, 5) and np.abs(out).max() < 1  # mixtures of tanh candidates and a zero start


def two_hot(m):
    torch=m.torch; F=m.F; torchd=torch.distributions
    # DiscDist (twohot) and Bernoulli wrapper, symlog
    logits = torch.linspace(-1, 1, 3*255).reshape(3,255).requires_grad_(True)
    buckets = torch.linspace(-20.0, 20.0, steps=255)
    probs = torch.softmax(logits, -1)
    mean = torch.sum(probs * buckets, -1, keepdim=True)
    x = torch.tensor([[0.5],[3.0],[-7.0]])
    symlog = lambda x: torch.sign(x) * torch.log(torch.abs(x) + 1.0)
    x = symlog(x)
    below = torch.sum((buckets <= x[..., None]).to(torch.int32), dim=-1) - 1
    above = len(buckets) - torch.sum((buckets > x[..., None]).to(torch.int32), dim=-1)
    below = torch.clip(below, 0, len(buckets) - 1)
    above = torch.clip(above, 0, len(buckets) - 1)
    equal = below == above
    dist_to_below = torch.where(equal, 1, torch.abs(buckets[below] - x))
    dist_to_above = torch.where(equal, 1, torch.abs(buckets[above] - x))
    total = dist_to_below + dist_to_above
    weight_below = dist_to_above / total
    weight_above = dist_to_below / total
    target = (F.one_hot(below, num_classes=len(buckets)) * weight_below[..., None]
              + F.one_hot(above, num_classes=len(buckets)) * weight_above[..., None])
    log_pred = logits - torch.logsumexp(logits, -1, keepdim=True)
    target = target.squeeze(-2)
    lp = (target * log_pred).sum(-1)
    lp.sum().backward()
    b = torchd.independent.Independent(torchd.bernoulli.Bernoulli(logits=torch.tensor([[0.3],[-1.]])), 1)
    _mode = torch.round(b.mean)
    return mean, target, lp, logits.grad.sum(0), _mode.detach() + b.mean - b.mean.detach(), b.log_prob(torch.tensor([[1.],[0.]]))


def test_two_hot():
    mean, target, lp, grad, mode, blp = run_both(two_hot)[0]
    buckets = np.linspace(-20.0, 20.0, 255)
    np.testing.assert_allclose(target.sum(-1), 1, rtol=1e-6)
    x = np.array([0.5, 3.0, -7.0])
    np.testing.assert_allclose(target @ buckets, np.sign(x) * np.log1p(np.abs(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mode.ravel(), [1.0, 0.0])


def return_ema_quantile(m):
    torch=m.torch
    torch.manual_seed(0)
    x = torch.randn(40)
    rng = torch.tensor([0.05, 0.95])
    q = torch.quantile(input=x, q=rng)
    q2 = torch.quantile(x.detach(), q=rng)
    return q, q2


def test_return_ema_quantile():
    (q, q2), _ = run_both(return_ema_quantile)
    np.testing.assert_array_equal(q, q2)
    assert q[0] < q[1]


def seeded_inits(m):
    torch=m.torch
    torch.manual_seed(0)
    z = torch.FloatTensor(torch.Size([3,2])).uniform_(-0.5, 0.5)
    w = torch.empty(4,3)
    m.nn.init.trunc_normal_(w, mean=0.0, std=0.3, a=-0.6, b=0.6)
    u = torch.empty(4,3); m.nn.init.uniform_(u, a=-0.1, b=0.1)
    n = torch.empty(3).normal_(0, 2)
    return z, w, u, n


def test_seeded_inits():
    (z, w, u, n), _ = run_both(seeded_inits)
    assert np.abs(z).max() <= 0.5 and np.abs(w).max() <= 0.6 and np.abs(u).max() <= 0.1 and n.shape == (3,)
