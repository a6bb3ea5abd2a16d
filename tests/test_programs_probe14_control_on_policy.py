# ruff: noqa: B007, B008, E501, E702  (the programs are kept as their authors wrote them)
"""Continuous-control and model-based RL programs, run as tests/probe14_control_common.py says. On-policy methods:
cleanRL's PPO-continuous (a state-independent ``actor_logstd`` Parameter, ``Normal(...).log_prob(a).sum(1)``,
``entropy().sum(1)``, running mean/std observation normalisation, GAE in a reversed loop, minibatches by a seeded
``torch.randperm``); cleanRL's recurrent PPO (ppo_atari_lstm, on pendulum features: an LSTM initialised through
named_parameters, its state reset by done masks inside a per-step loop, minibatches of whole environments by flat
indices); TRPO (Fisher-vector products by double backward, conjugate gradient, a line search over flat parameters);
masked categoricals (invalid-action masking: -inf logits, and -1e8 with a masked entropy), stable-baselines3's gSDE
and its squashed Gaussian, an agent checkpoint by torch.save into BytesIO."""

import io
import math

import numpy as np
import pytest

from .probe14_control_common import Pendulum, params
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# cleanRL PPO-continuous
# ----------------------------------------------------------------------------------------------


class RunningMeanStd:
    """gym's NormalizeObservation statistics (parallel mean/var update)."""

    def __init__(self, epsilon=1e-4, shape=()):
        self.mean = np.zeros(shape, "float64")
        self.var = np.ones(shape, "float64")
        self.count = epsilon

    def update(self, x):
        batch_mean, batch_var, batch_count = np.mean(x, axis=0), np.var(x, axis=0), x.shape[0]
        delta = batch_mean - self.mean
        tot_count = self.count + batch_count
        new_mean = self.mean + delta * batch_count / tot_count
        m_a = self.var * self.count
        m_b = batch_var * batch_count
        M2 = m_a + m_b + np.square(delta) * self.count * batch_count / tot_count
        self.mean, self.var, self.count = new_mean, M2 / tot_count, tot_count

    def normalize(self, obs):
        self.update(obs[None])
        return np.clip((obs - self.mean) / np.sqrt(self.var + 1e-8), -10, 10).astype(np.float32)


def make_ppo_agent(m):
    torch, nn = m.torch, m.nn

    def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, bias_const)
        return layer

    class Agent(nn.Module):
        def __init__(self):
            super().__init__()
            self.critic = nn.Sequential(layer_init(nn.Linear(3, 32)), nn.Tanh(), layer_init(nn.Linear(32, 32)),
                                        nn.Tanh(), layer_init(nn.Linear(32, 1), std=1.0))
            self.actor_mean = nn.Sequential(layer_init(nn.Linear(3, 32)), nn.Tanh(), layer_init(nn.Linear(32, 32)),
                                            nn.Tanh(), layer_init(nn.Linear(32, 1), std=0.01))
            self.actor_logstd = nn.Parameter(torch.zeros(1, 1))

        def get_value(self, x):
            return self.critic(x)

        def get_action_and_value(self, x, action=None):
            action_mean = self.actor_mean(x)
            action_logstd = self.actor_logstd.expand_as(action_mean)
            action_std = torch.exp(action_logstd)
            probs = torch.distributions.Normal(action_mean, action_std)
            if action is None:
                action = probs.sample()
            return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)

    return Agent()


def ppo_continuous(m, weights, num_steps=32, num_envs=2, update_epochs=2, num_minibatches=4):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(1)
    agent = load(m, make_ppo_agent(m), weights)
    optimizer = optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
    envs = [Pendulum(20 + i) for i in range(num_envs)]
    rms = [RunningMeanStd(shape=(3,)) for _ in envs]
    gamma, gae_lambda, clip_coef, ent_coef, vf_coef = 0.99, 0.95, 0.2, 0.0, 0.5
    batch_size = num_envs * num_steps
    minibatch_size = batch_size // num_minibatches
    obs = torch.zeros((num_steps, num_envs, 3))
    actions = torch.zeros((num_steps, num_envs, 1))
    logprobs = torch.zeros((num_steps, num_envs))
    rewards = torch.zeros((num_steps, num_envs))
    dones = torch.zeros((num_steps, num_envs))
    values = torch.zeros((num_steps, num_envs))
    next_obs = torch.Tensor(np.stack([r.normalize(e.reset()) for e, r in zip(envs, rms)]))
    next_done = torch.zeros(num_envs)
    for step in range(num_steps):
        obs[step] = next_obs
        dones[step] = next_done
        with torch.no_grad():
            action, logprob, _, value = agent.get_action_and_value(next_obs)
            values[step] = value.flatten()
        actions[step] = action
        logprobs[step] = logprob
        outs = [e.step(a) for e, a in zip(envs, action.cpu().numpy()[:, 0])]
        obs_np = [r.normalize(e.reset() if d else o) for (o, _, d), e, r in zip(outs, envs, rms)]
        reward = np.array([np.clip(rw / 10.0, -10, 10) for _, rw, _ in outs])
        rewards[step] = torch.tensor(reward).view(-1)
        next_obs, next_done = torch.Tensor(np.stack(obs_np)), torch.Tensor(np.array([d for _, _, d in outs]))

    with torch.no_grad():
        next_value = agent.get_value(next_obs).reshape(1, -1)
        advantages = torch.zeros_like(rewards)
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

    b_obs = obs.reshape((-1, 3))
    b_logprobs = logprobs.reshape(-1)
    b_actions = actions.reshape((-1, 1))
    b_advantages = advantages.reshape(-1)
    b_returns = returns.reshape(-1)
    b_values = values.reshape(-1)
    history = []
    for epoch in range(update_epochs):
        b_inds = torch.randperm(batch_size)
        for start in range(0, batch_size, minibatch_size):
            end = start + minibatch_size
            mb_inds = b_inds[start:end]
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
            logratio = newlogprob - b_logprobs[mb_inds]
            ratio = logratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - logratio).mean()
                clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean().item()
            mb_advantages = b_advantages[mb_inds]
            mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            pg_loss1 = -mb_advantages * ratio
            pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
            pg_loss = torch.max(pg_loss1, pg_loss2).mean()
            newvalue = newvalue.view(-1)
            v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
            v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -clip_coef, clip_coef)
            v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
            v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
            entropy_loss = entropy.mean()
            loss = pg_loss - ent_coef * entropy_loss + v_loss * vf_coef
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
            optimizer.step()
            history.append((loss.item(), approx_kl.item(), clipfrac, entropy_loss.item()))
    return {"history": history, "advantages": advantages, "actions": actions, "logstd": agent.actor_logstd,
            "logstd_grad": agent.actor_logstd.grad, "params": params(agent)}


def test_cleanrl_ppo_continuous():
    weights = weights_of(make_ppo_agent)
    ours, _ = run_both(ppo_continuous, weights, rtol=5e-5, atol=2e-6)
    assert ours["logstd_grad"].shape == (1, 1)
    # entropy of N(., exp(logstd)) is 0.5 + 0.5 log(2 pi) + logstd, read back from the program's own numbers
    np.testing.assert_allclose(ours["history"][0][3], 0.5 + 0.5 * np.log(2 * np.pi) + 0.0, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# TRPO (ikostrikov/pytorch-trpo): Fisher-vector products by double backward, conjugate gradient, a line search
# over flat parameters
# ----------------------------------------------------------------------------------------------


def make_trpo_policy(m):
    torch, nn = m.torch, m.nn

    class Policy(nn.Module):
        def __init__(self, num_inputs=3, num_outputs=1):
            super().__init__()
            self.affine1 = nn.Linear(num_inputs, 32)
            self.affine2 = nn.Linear(32, 32)
            self.action_mean = nn.Linear(32, num_outputs)
            self.action_mean.weight.data.mul_(0.1)
            self.action_mean.bias.data.mul_(0.0)
            self.action_log_std = nn.Parameter(torch.zeros(1, num_outputs))

        def forward(self, x):
            x = torch.tanh(self.affine1(x))
            x = torch.tanh(self.affine2(x))
            action_mean = self.action_mean(x)
            action_log_std = self.action_log_std.expand_as(action_mean)
            action_std = torch.exp(action_log_std)
            return action_mean, action_log_std, action_std

    return Policy()


def trpo(m, weights, max_kl=1e-2, damping=1e-1):
    torch = m.torch
    policy_net = load(m, make_trpo_policy(m), weights)

    def normal_log_density(x, mean, log_std, std):
        var = std.pow(2)
        log_density = -(x - mean).pow(2) / (2 * var) - 0.5 * math.log(2 * math.pi) - log_std
        return log_density.sum(1, keepdim=True)

    def get_flat_params_from(model):
        return torch.cat([param.data.view(-1) for param in model.parameters()])

    def set_flat_params_to(model, flat_params):
        prev_ind = 0
        for param in model.parameters():
            flat_size = int(np.prod(list(param.size())))
            param.data.copy_(flat_params[prev_ind:prev_ind + flat_size].view(param.size()))
            prev_ind += flat_size

    def conjugate_gradients(Avp, b, nsteps, residual_tol=1e-10):
        x = torch.zeros(b.size())
        r = b.clone()
        p = b.clone()
        rdotr = torch.dot(r, r)
        for i in range(nsteps):
            _Avp = Avp(p)
            alpha = rdotr / torch.dot(p, _Avp)
            x += alpha * p
            r -= alpha * _Avp
            new_rdotr = torch.dot(r, r)
            betta = new_rdotr / rdotr
            p = r + betta * p
            rdotr = new_rdotr
            if rdotr < residual_tol:
                break
        return x

    def linesearch(model, f, x, fullstep, expected_improve_rate, max_backtracks=10, accept_ratio=.1):
        fval = f(True).data
        for (_n_backtracks, stepfrac) in enumerate(.5 ** np.arange(max_backtracks)):
            xnew = x + stepfrac * fullstep
            set_flat_params_to(model, xnew)
            newfval = f(True).data
            actual_improve = fval - newfval
            expected_improve = expected_improve_rate * stepfrac
            ratio = actual_improve / expected_improve
            if ratio.item() > accept_ratio and actual_improve.item() > 0:
                return True, xnew, int(_n_backtracks)
        return False, x, -1

    rng = np.random.default_rng(40)
    states = torch.Tensor(rng.standard_normal((48, 3)).astype(np.float32))
    actions = torch.Tensor(rng.standard_normal((48, 1)).astype(np.float32))
    advantages = torch.Tensor(rng.standard_normal(48).astype(np.float32))
    advantages = (advantages - advantages.mean()) / advantages.std()

    action_means, action_log_stds, action_stds = policy_net(states)
    fixed_log_prob = normal_log_density(actions, action_means, action_log_stds, action_stds).data.clone()

    def get_loss(volatile=False):
        if volatile:
            with torch.no_grad():
                action_means, action_log_stds, action_stds = policy_net(states)
        else:
            action_means, action_log_stds, action_stds = policy_net(states)
        log_prob = normal_log_density(actions, action_means, action_log_stds, action_stds)
        action_loss = -advantages.unsqueeze(1) * torch.exp(log_prob - fixed_log_prob)
        return action_loss.mean()

    def get_kl():
        mean1, log_std1, std1 = policy_net(states)
        mean0, log_std0, std0 = mean1.detach(), log_std1.detach(), std1.detach()
        kl = log_std1 - log_std0 + (std0.pow(2) + (mean0 - mean1).pow(2)) / (2.0 * std1.pow(2)) - 0.5
        return kl.sum(1, keepdim=True)

    def Fvp(v):
        kl = get_kl()
        kl = kl.mean()
        grads = torch.autograd.grad(kl, policy_net.parameters(), create_graph=True)
        flat_grad_kl = torch.cat([grad.view(-1) for grad in grads])
        kl_v = (flat_grad_kl * v).sum()
        grads = torch.autograd.grad(kl_v, policy_net.parameters())
        flat_grad_grad_kl = torch.cat([grad.contiguous().view(-1) for grad in grads]).data
        return flat_grad_grad_kl + v * damping

    loss = get_loss()
    grads = torch.autograd.grad(loss, policy_net.parameters())
    loss_grad = torch.cat([grad.view(-1) for grad in grads]).data
    stepdir = conjugate_gradients(Fvp, -loss_grad, 10)
    shs = 0.5 * (stepdir * Fvp(stepdir)).sum(0, keepdim=True)
    lm = torch.sqrt(shs / max_kl)
    fullstep = stepdir / lm[0]
    neggdotstepdir = (-loss_grad * stepdir).sum(0, keepdim=True)
    prev_params = get_flat_params_from(policy_net)
    success, new_params, backtracks = linesearch(policy_net, get_loss, prev_params, fullstep, neggdotstepdir / lm[0])
    set_flat_params_to(policy_net, new_params)
    probe = torch.Tensor(rng.standard_normal(get_flat_params_from(policy_net).numel()).astype(np.float32))
    return {"loss": loss, "loss_grad": loss_grad, "stepdir": stepdir, "fvp": Fvp(probe), "shs": shs,
            "success": success, "backtracks": backtracks, "params": get_flat_params_from(policy_net),
            "after": get_loss(True)}


def test_trpo_fisher_vector_products():
    weights = weights_of(make_trpo_policy)
    ours, _ = run_both(trpo, weights, rtol=2e-4, atol=2e-6)
    assert ours["success"] and ours["after"] < ours["loss"]


# ----------------------------------------------------------------------------------------------
# Masked categoricals (invalid-action masking: -inf logits, and -1e8 with a masked entropy); stable-baselines3's
# gSDE (state-dependent exploration: a Normal over exploration matrices, rsample with a sample shape, mm/bmm) and
# its squashed Gaussian (atanh by log1p, clamped by finfo.eps); an agent checkpoint by torch.save into BytesIO
# ----------------------------------------------------------------------------------------------


def masked_categorical(m):
    torch=m.torch; D=torch.distributions
    logits = torch.tensor([[1.0, -float("inf"), 0.5], [0.2, 0.1, -float("inf")]], requires_grad=True)
    c = D.Categorical(logits=logits)
    e = c.entropy(); lp = c.log_prob(torch.tensor([0, 1]))
    e.sum().backward()
    masks = torch.tensor([[True, False, True], [True, True, False]])
    l2 = torch.where(masks, torch.tensor([[1.0, 3.0, 0.5], [0.2, 0.1, 2.0]]), torch.tensor(-1e8))
    c2 = D.Categorical(logits=l2)
    p_log_p = c2.logits * c2.probs
    p_log_p = torch.where(masks, p_log_p, torch.tensor(0.0))
    return e, lp, logits.grad, c.probs, c.logits, -p_log_p.sum(-1), c2.entropy()


def test_masked_categorical():
    e, lp, grad, probs, logits, masked_entropy, entropy = run_both(masked_categorical)[0]
    assert probs[0, 1] == 0 and probs[1, 2] == 0 and np.all(np.isfinite(lp)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(masked_entropy, entropy, rtol=1e-5)


def gsde_squashed_gaussian(m):
    torch=m.torch; D=torch.distributions
    torch.manual_seed(0)
    latent_sde = torch.randn(4, 5)
    log_std = torch.full((5, 2), -1.0, requires_grad=True)
    std = torch.where(log_std <= 0, torch.exp(log_std), torch.log1p(log_std) + 1.0)
    weights_dist = D.Normal(torch.zeros_like(std), std)
    exploration_mat = weights_dist.rsample()
    exploration_matrices = weights_dist.rsample((4,))
    noise = torch.mm(latent_sde, exploration_mat)
    noises = torch.bmm(latent_sde.unsqueeze(dim=1), exploration_matrices).squeeze(dim=1)
    mean_actions = torch.randn(4, 2, requires_grad=True)
    variance = torch.mm(latent_sde ** 2, std ** 2)
    dist = D.Normal(mean_actions, torch.sqrt(variance + 1e-6))
    actions = dist.rsample()
    eps = torch.finfo(actions.dtype).eps
    y = torch.tanh(actions).clamp(min=-1.0 + eps, max=1.0 - eps)
    gaussian_actions = 0.5 * (y.log1p() - (-y).log1p())
    log_prob = dist.log_prob(gaussian_actions).sum(dim=1)
    log_prob -= torch.sum(torch.log(1 - y ** 2 + 1e-6), dim=1)
    (log_prob.sum() + noises.sum() + noise.sum()).backward()
    return noise, noises, log_prob, log_std.grad, mean_actions.grad, eps


def test_gsde_squashed_gaussian():
    ours, _ = run_both(gsde_squashed_gaussian)
    assert ours[5] == np.finfo(np.float32).eps and ours[1].shape == (4, 2)


def agent_checkpoint(m):
    torch=m.torch; nn=m.nn; optim=m.optim
    torch.manual_seed(0)
    net = nn.Linear(3, 2); opt = optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward(); opt.step()
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "optim": opt.state_dict(), "step": 3}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    net2 = nn.Linear(3, 2); opt2 = optim.Adam(net2.parameters(), lr=0.5)
    net2.load_state_dict(ck["model"]); opt2.load_state_dict(ck["optim"])
    for o, n in ((opt, net), (opt2, net2)):
        o.zero_grad(); n(torch.ones(1, 3)).sum().backward(); o.step()
    return [p.detach() for p in net.parameters()], [p.detach() for p in net2.parameters()], ck["step"], opt2.param_groups[0]["lr"]


def test_agent_checkpoint():
    (first, resumed, step, lr), _ = run_both(agent_checkpoint)
    for a, b in zip(first, resumed):  # the resumed optimiser took the saved lr and moments
        np.testing.assert_array_equal(a, b)
    assert step == 3 and lr == 0.1


# ----------------------------------------------------------------------------------------------
# cleanRL's recurrent PPO (ppo_atari_lstm, on pendulum features): an LSTM initialised through named_parameters,
# its state reset by done masks inside a per-step loop, minibatches of whole environments by flat indices
# ----------------------------------------------------------------------------------------------


def make_lstm_agent(m):
    torch, nn = m.torch, m.nn

    def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, bias_const)
        return layer

    class Agent(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = nn.Sequential(layer_init(nn.Linear(3, 16)), nn.ReLU())
            self.lstm = nn.LSTM(16, 8)
            for name, param in self.lstm.named_parameters():
                if "bias" in name:
                    nn.init.constant_(param, 0)
                elif "weight" in name:
                    nn.init.orthogonal_(param, 1.0)
            self.actor = layer_init(nn.Linear(8, 3), std=0.01)
            self.critic = layer_init(nn.Linear(8, 1), std=1)

        def get_states(self, x, lstm_state, done):
            hidden = self.network(x)
            batch_size = lstm_state[0].shape[1]
            hidden = hidden.reshape((-1, batch_size, self.lstm.input_size))
            done = done.reshape((-1, batch_size))
            new_hidden = []
            for h, d in zip(hidden, done):
                h, lstm_state = self.lstm(
                    h.unsqueeze(0),
                    ((1.0 - d).view(1, -1, 1) * lstm_state[0], (1.0 - d).view(1, -1, 1) * lstm_state[1]),
                )
                new_hidden += [h]
            new_hidden = torch.flatten(torch.cat(new_hidden), 0, 1)
            return new_hidden, lstm_state

        def get_value(self, x, lstm_state, done):
            hidden, _ = self.get_states(x, lstm_state, done)
            return self.critic(hidden)

        def get_action_and_value(self, x, lstm_state, done, action=None):
            hidden, lstm_state = self.get_states(x, lstm_state, done)
            logits = self.actor(hidden)
            probs = torch.distributions.Categorical(logits=logits)
            if action is None:
                action = probs.sample()
            return action, probs.log_prob(action), probs.entropy(), self.critic(hidden), lstm_state

    return Agent()


def recurrent_ppo(m, weights, num_steps=12, num_envs=4, num_minibatches=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(4)
    agent = load(m, make_lstm_agent(m), weights)
    optimizer = optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)
    envs = [Pendulum(50 + i) for i in range(num_envs)]
    obs = torch.zeros((num_steps, num_envs, 3))
    actions = torch.zeros((num_steps, num_envs))
    logprobs = torch.zeros((num_steps, num_envs))
    rewards = torch.zeros((num_steps, num_envs))
    dones = torch.zeros((num_steps, num_envs))
    values = torch.zeros((num_steps, num_envs))
    next_obs = torch.Tensor(np.stack([e.reset() for e in envs]))
    next_done = torch.zeros(num_envs)
    next_lstm_state = (torch.zeros(agent.lstm.num_layers, num_envs, agent.lstm.hidden_size),
                       torch.zeros(agent.lstm.num_layers, num_envs, agent.lstm.hidden_size))
    initial_lstm_state = (next_lstm_state[0].clone(), next_lstm_state[1].clone())
    for step in range(num_steps):
        obs[step] = next_obs
        dones[step] = next_done
        with torch.no_grad():
            action, logprob, _, value, next_lstm_state = agent.get_action_and_value(next_obs, next_lstm_state, next_done)
            values[step] = value.flatten()
        actions[step] = action
        logprobs[step] = logprob
        outs = [e.step(float(a) - 1.0) for e, a in zip(envs, action.cpu().numpy())]
        rewards[step] = torch.tensor(np.array([r / 10 for _, r, _ in outs])).view(-1)
        next_obs = torch.Tensor(np.stack([e.reset() if d else o for (o, _, d), e in zip(outs, envs)]))
        next_done = torch.Tensor(np.array([d or step % 5 == 4 for (_, _, d) in outs]))  # a bool array, as gym's
    with torch.no_grad():
        next_value = agent.get_value(next_obs, next_lstm_state, next_done).reshape(1, -1)
        advantages = torch.zeros_like(rewards)
        lastgaelam = 0
        for t in reversed(range(num_steps)):
            if t == num_steps - 1:
                nextnonterminal = 1.0 - next_done
                nextvalues = next_value
            else:
                nextnonterminal = 1.0 - dones[t + 1]
                nextvalues = values[t + 1]
            delta = rewards[t] + 0.99 * nextvalues * nextnonterminal - values[t]
            advantages[t] = lastgaelam = delta + 0.99 * 0.95 * nextnonterminal * lastgaelam
        returns = advantages + values
    b_obs = obs.reshape((-1, 3))
    b_logprobs = logprobs.reshape(-1)
    b_actions = actions.reshape(-1)
    b_dones = dones.reshape(-1)
    b_advantages = advantages.reshape(-1)
    b_returns = returns.reshape(-1)
    envsperbatch = num_envs // num_minibatches
    envinds = np.arange(num_envs)
    flatinds = np.arange(num_steps * num_envs).reshape(num_steps, num_envs)
    rng = np.random.default_rng(5)
    history = []
    for epoch in range(2):
        rng.shuffle(envinds)
        for start in range(0, num_envs, envsperbatch):
            end = start + envsperbatch
            mbenvinds = envinds[start:end]
            mb_inds = flatinds[:, mbenvinds].ravel()
            _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(
                b_obs[mb_inds],
                (initial_lstm_state[0][:, mbenvinds], initial_lstm_state[1][:, mbenvinds]),
                b_dones[mb_inds],
                b_actions.long()[mb_inds],
            )
            logratio = newlogprob - b_logprobs[mb_inds]
            ratio = logratio.exp()
            mb_advantages = b_advantages[mb_inds]
            mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            pg_loss = torch.max(-mb_advantages * ratio, -mb_advantages * torch.clamp(ratio, 0.9, 1.1)).mean()
            v_loss = 0.5 * ((newvalue.view(-1) - b_returns[mb_inds]) ** 2).mean()
            loss = pg_loss - 0.01 * entropy.mean() + v_loss * 0.5
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
            optimizer.step()
            history.append((loss.item(), ratio.mean().item(), entropy.mean().item()))
    return {"history": history, "actions": actions, "advantages": advantages, "lstm": params(agent.lstm),
            "lstm_grads": [p.grad for p in agent.lstm.parameters()]}


def test_cleanrl_recurrent_ppo():
    weights = weights_of(make_lstm_agent)
    ours, _ = run_both(recurrent_ppo, weights, rtol=5e-5, atol=2e-6)
    assert ours["history"][0][1] == pytest.approx(1.0, abs=1e-6)  # the first minibatch replays the rollout
