# ruff: noqa: E501, F841, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: distributional critics: sb3-contrib's
QR-DQN (``quantile_huber_loss`` with pairwise deltas, ``torch.where`` Huber and ``(delta.detach() < 0).float()``,
double-DQN greedy quantiles by ``gather`` on an ``expand``ed index) and TQC (sorted, truncated quantiles of a critic
ensemble); an IQN (cosine embeddings of ``torch.rand`` fractions, ``abs()`` of a tensor, soft updates by
``.data.copy_``); Tianshou's FQF (a fraction proposal by ``cumsum`` of Categorical probs and ``F.pad``, numpy index
arrays into quantiles; a strict xfail where it relies on ``smooth_l1_loss`` broadcasting (B, 1, N) against (B, N, 1),
which chainrule refuses by design, and the same program with the broadcast written out)."""

import copy

import numpy as np
import pytest

from autograd.errors import ShapeError

from .probe18_rl_common import replay_batch
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# sb3-contrib: QR-DQN and TQC's quantile Huber loss
# ----------------------------------------------------------------------------------------------


def quantile_huber_loss(th, current_quantiles, target_quantiles, cum_prob=None, sum_over_quantiles=True):
    n_quantiles = current_quantiles.shape[-1]
    if cum_prob is None:
        cum_prob = (th.arange(n_quantiles, device=current_quantiles.device, dtype=th.float) + 0.5) / n_quantiles
        if current_quantiles.ndim == 2:
            cum_prob = cum_prob.view(1, -1, 1)
        elif current_quantiles.ndim == 3:
            cum_prob = cum_prob.view(1, 1, -1, 1)
    pairwise_delta = target_quantiles.unsqueeze(-2) - current_quantiles.unsqueeze(-1)
    abs_pairwise_delta = th.abs(pairwise_delta)
    huber_loss = th.where(abs_pairwise_delta > 1, abs_pairwise_delta - 0.5, pairwise_delta**2 * 0.5)
    loss = th.abs(cum_prob - (pairwise_delta.detach() < 0).float()) * huber_loss
    if sum_over_quantiles:
        loss = loss.sum(dim=-2).mean()
    else:
        loss = loss.mean()
    return loss


def make_quantile_net(m, n_quantiles=8, n_actions=3):
    nn = m.nn

    class QuantileNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_quantiles, self.action_dim = n_quantiles, n_actions
            self.quantile_net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, n_actions * n_quantiles))

        def forward(self, obs):
            quantiles = self.quantile_net(obs)
            return quantiles.view(-1, self.n_quantiles, int(self.action_dim))

    return QuantileNetwork()


def qrdqn(m, weights, updates=3, gamma=0.99):
    th, F = m.torch, m.F
    quantile_net = load(m, make_quantile_net(m), weights)
    quantile_net_target = make_quantile_net(m)
    quantile_net_target.load_state_dict(quantile_net.state_dict())
    optimizer = m.optim.Adam(quantile_net.parameters(), lr=5e-3, eps=0.01 / 32)
    losses, grads = [], []
    for step in range(updates):
        obs, act, rew, nxt, done = (th.as_tensor(a) for a in replay_batch(step))
        batch_size = obs.shape[0]
        n_quantiles = quantile_net.n_quantiles
        with th.no_grad():
            next_quantiles = quantile_net_target(nxt)
            next_greedy_actions = next_quantiles.mean(dim=1, keepdim=True).argmax(dim=2, keepdim=True)
            next_greedy_actions = next_greedy_actions.expand(batch_size, n_quantiles, 1)
            next_quantiles = next_quantiles.gather(dim=2, index=next_greedy_actions).squeeze(dim=2)
            target_quantiles = rew + (1 - done) * gamma * next_quantiles
        current_quantiles = quantile_net(obs)
        actions = act[..., None].long().expand(batch_size, n_quantiles, 1)
        current_quantiles = th.gather(current_quantiles, dim=2, index=actions).squeeze(dim=2)
        loss = quantile_huber_loss(th, current_quantiles, target_quantiles, sum_over_quantiles=True)
        optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(quantile_net.parameters(), 10)
        grads.append(quantile_net.quantile_net[0].weight.grad.clone())
        optimizer.step()
        losses.append(loss.item())
    with th.no_grad():
        q_values = quantile_net(th.as_tensor(replay_batch(9)[0])).mean(dim=1)
        action = q_values.argmax(dim=1).reshape(-1)
    return losses, grads, q_values, action, quantile_net.state_dict()


def test_sb3_contrib_qrdqn():
    ours, _ = run_both(qrdqn, weights_of(make_quantile_net), rtol=1e-4, atol=1e-5)
    assert ours[0][0] > 0 and ours[3].dtype == np.int64


def test_quantile_huber_loss_by_hand():
    rng = np.random.default_rng(3)
    current, target = rng.standard_normal((5, 4)).astype(np.float32), 2 * rng.standard_normal((5, 6)).astype(np.float32)
    current_t = OURS.torch.tensor(current, requires_grad=True)
    loss = quantile_huber_loss(OURS.torch, current_t, OURS.torch.tensor(target))
    loss.backward()
    tau = (np.arange(4) + 0.5) / 4
    delta = target[:, None, :] - current[:, :, None]
    huber = np.where(np.abs(delta) > 1, np.abs(delta) - 0.5, 0.5 * delta ** 2)
    expected = (np.abs(tau[None, :, None] - (delta < 0)) * huber).sum(1).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    dhuber = np.where(np.abs(delta) > 1, np.sign(delta), delta)
    dcurrent = -(np.abs(tau[None, :, None] - (delta < 0)) * dhuber).sum(-1) / (5 * 6)
    np.testing.assert_allclose(current_t.grad.numpy(), dcurrent, rtol=1e-5, atol=1e-7)


def make_tqc_critic(m, n_critics=3, n_quantiles=5):
    th, nn = m.torch, m.nn

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_networks = nn.ModuleList()
            self.n_critics, self.n_quantiles = n_critics, n_quantiles
            self.quantiles_total = n_quantiles * n_critics
            for i in range(n_critics):
                qf_net = nn.Sequential(nn.Linear(4 + 2, 16), nn.ReLU(), nn.Linear(16, n_quantiles))
                self.add_module(f"qf{i}", qf_net)
                self.q_networks.append(qf_net)

        def forward(self, obs, action):
            qvalue_input = th.cat([obs, action], dim=1)
            quantiles = th.stack(tuple(qf(qvalue_input) for qf in self.q_networks), dim=1)
            return quantiles

    return Critic()


def tqc_critic_update(m, weights, top_quantiles_to_drop_per_net=2, gamma=0.99, ent_coef=0.1):
    th = m.torch
    critic = load(m, make_tqc_critic(m), weights)
    critic_target = make_tqc_critic(m)
    critic_target.load_state_dict(critic.state_dict())
    optimizer = m.optim.Adam(critic.parameters(), lr=3e-3)
    out = []
    for step in range(3):
        obs, act, rew, nxt, done = (th.as_tensor(a) for a in replay_batch(10 + step, act_dim=2))
        batch_size = obs.shape[0]
        next_actions = th.tanh(nxt[:, :2] * 0.5)
        next_log_prob = -(next_actions ** 2).sum(1)
        with th.no_grad():
            next_quantiles = critic_target(nxt, next_actions)
            next_quantiles, _ = th.sort(next_quantiles.reshape(batch_size, -1))
            n_target_quantiles = critic.quantiles_total - top_quantiles_to_drop_per_net * critic.n_critics
            next_quantiles = next_quantiles[:, :n_target_quantiles]
            target_quantiles = next_quantiles - ent_coef * next_log_prob.reshape(-1, 1)
            target_quantiles = rew + (1 - done) * gamma * target_quantiles
            target_quantiles.unsqueeze_(dim=1)
        current_quantiles = critic(obs, act)
        critic_loss = quantile_huber_loss(th, current_quantiles, target_quantiles, sum_over_quantiles=True)
        optimizer.zero_grad()
        critic_loss.backward()
        optimizer.step()
        out.append(critic_loss)
        # the actor's loss: the mean over every critic's quantiles
        qf_pi = critic(obs, th.tanh(obs[:, :2])).mean(dim=2).mean(dim=1, keepdim=True)
        out.append(qf_pi.mean())
    return out, critic.state_dict()


def test_sb3_contrib_tqc_critic():
    ours, _ = run_both(tqc_critic_update, weights_of(make_tqc_critic), rtol=1e-4, atol=1e-5)
    critic_losses = ours[0][::2]
    assert all(np.isfinite(l) and l > 0 for l in critic_losses)


# ----------------------------------------------------------------------------------------------
# IQN (BY571/IQN-and-Extensions): cosine embeddings of sampled quantile fractions
# ----------------------------------------------------------------------------------------------


def make_iqn(m, layer_size=16, n_cos=8, action_size=3):
    torch, nn = m.torch, m.nn

    class IQN(nn.Module):
        def __init__(self):
            super(IQN, self).__init__()
            self.n_cos, self.layer_size, self.action_size = n_cos, layer_size, action_size
            self.pis = torch.FloatTensor([np.pi * i for i in range(1, self.n_cos + 1)]).view(1, 1, self.n_cos)
            self.head = nn.Linear(4, layer_size)
            self.cos_embedding = nn.Linear(self.n_cos, layer_size)
            self.ff_1 = nn.Linear(layer_size, layer_size)
            self.ff_2 = nn.Linear(layer_size, action_size)

        def calc_cos(self, batch_size, n_tau=8):
            taus = torch.rand(batch_size, n_tau).unsqueeze(-1)
            cos = torch.cos(taus * self.pis)
            assert cos.shape == (batch_size, n_tau, self.n_cos), "cos shape is incorrect"
            return cos, taus

        def forward(self, input, num_tau=8):
            batch_size = input.shape[0]
            x = torch.relu(self.head(input))
            cos, taus = self.calc_cos(batch_size, num_tau)
            cos = cos.view(batch_size * num_tau, self.n_cos)
            cos_x = torch.relu(self.cos_embedding(cos)).view(batch_size, num_tau, self.layer_size)
            x = (x.unsqueeze(1) * cos_x).view(batch_size * num_tau, self.layer_size)
            x = torch.relu(self.ff_1(x))
            out = self.ff_2(x)
            return out.view(batch_size, num_tau, self.action_size), taus

        def get_qvalues(self, inputs):
            quantiles, _ = self.forward(inputs, 32)
            actions = quantiles.mean(dim=1)
            return actions

    return IQN()


def calculate_huber_loss(torch, td_errors, k=1.0):
    loss = torch.where(td_errors.abs() <= k, 0.5 * td_errors.pow(2), k * (td_errors.abs() - 0.5 * k))
    assert loss.shape == (td_errors.shape[0], 8, 8), "huber loss has wrong shape"
    return loss


def iqn(m, weights, updates=3, GAMMA=0.99, n_step=1, TAU=1e-1):
    torch = m.torch
    torch.manual_seed(0)
    qnetwork_local = load(m, make_iqn(m), weights)
    qnetwork_target = load(m, make_iqn(m), weights)
    optimizer = m.optim.Adam(qnetwork_local.parameters(), lr=1e-3)
    losses = []
    for step in range(updates):
        states, actions, rewards, next_states, dones = (torch.from_numpy(a) for a in replay_batch(20 + step))
        BATCH_SIZE = states.shape[0]
        optimizer.zero_grad()
        Q_targets_next, _ = qnetwork_target(next_states)
        Q_targets_next = Q_targets_next.detach().max(2)[0].unsqueeze(1)  # (batch_size, 1, N)
        Q_targets = rewards.unsqueeze(-1) + (GAMMA ** n_step * Q_targets_next * (1. - dones.unsqueeze(-1)))
        Q_expected, taus = qnetwork_local(states)
        Q_expected = Q_expected.gather(2, actions.unsqueeze(-1).expand(BATCH_SIZE, 8, 1))
        td_error = Q_targets - Q_expected
        assert td_error.shape == (BATCH_SIZE, 8, 8), "wrong td error shape"
        huber_l = calculate_huber_loss(torch, td_error, 1.0)
        quantil_l = abs(taus - (td_error.detach() < 0).float()) * huber_l / 1.0
        loss = quantil_l.sum(dim=1).mean(dim=1)
        loss = loss.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(qnetwork_local.parameters(), 1)
        optimizer.step()
        for target_param, local_param in zip(qnetwork_target.parameters(), qnetwork_local.parameters()):
            target_param.data.copy_(TAU * local_param.data + (1.0 - TAU) * target_param.data)
        losses.append(loss.detach())
    with torch.no_grad():
        q = qnetwork_local.get_qvalues(torch.from_numpy(replay_batch(30)[0]))
    return losses, q, qnetwork_target.state_dict(), taus.squeeze(-1)


def test_iqn():
    ours, _ = run_both(iqn, weights_of(make_iqn), rtol=1e-4, atol=1e-5)
    taus = ours[3]
    assert taus.shape == (32, 8) and taus.min() >= 0 and taus.max() < 1


# ----------------------------------------------------------------------------------------------
# Tianshou's FQF: a fraction proposal network (cumsum of Categorical probs, F.pad), full quantile function
# ----------------------------------------------------------------------------------------------


def make_fqf(m, obs_dim=4, hidden=16, n_actions=3, num_cosines=8, num_fractions=6):
    torch, nn, F = m.torch, m.nn, m.F

    class CosineEmbeddingNetwork(nn.Module):
        def __init__(self, num_cosines, embedding_dim):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(num_cosines, embedding_dim), nn.ReLU())
            self.num_cosines = num_cosines
            self.embedding_dim = embedding_dim

        def forward(self, taus):
            batch_size = taus.shape[0]
            N = taus.shape[1]
            # Calculate i * \pi (i=1,...,N).
            i_pi = np.pi * torch.arange(start=1, end=self.num_cosines + 1, dtype=taus.dtype, device=taus.device).view(1, 1, self.num_cosines)
            # Calculate cos(i * \pi * \tau).
            cosines = torch.cos(taus.view(batch_size, N, 1) * i_pi).view(batch_size * N, self.num_cosines)
            # Calculate embeddings of taus.
            tau_embeddings = self.net(cosines).view(batch_size, N, self.embedding_dim)
            return tau_embeddings

    class FractionProposalNetwork(nn.Module):
        def __init__(self, num_fractions, embedding_dim):
            super().__init__()
            self.net = nn.Linear(embedding_dim, num_fractions)
            torch.nn.init.xavier_uniform_(self.net.weight, gain=0.01)
            torch.nn.init.constant_(self.net.bias, 0)
            self.num_fractions = num_fractions
            self.embedding_dim = embedding_dim

        def forward(self, obs_embeddings):
            # Calculate (log of) probabilities q_i in the paper.
            dist = torch.distributions.Categorical(logits=self.net(obs_embeddings))
            taus_1_N = torch.cumsum(dist.probs, dim=1)
            # Calculate \tau_i (i=0,...,N).
            taus = F.pad(taus_1_N, (1, 0))
            # Calculate \hat \tau_i (i=0,...,N-1).
            tau_hats = (taus[:, :-1] + taus[:, 1:]).detach() / 2.0
            # Calculate entropies of value distributions.
            entropies = dist.entropy()
            return taus, tau_hats, entropies

    class FullQuantileFunction(nn.Module):
        def __init__(self):
            super().__init__()
            self.preprocess = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU())
            self.embed_model = CosineEmbeddingNetwork(num_cosines, hidden)
            self.last = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_actions))

        def _compute_quantiles(self, obs, taus):
            batch_size, sample_size = taus.shape
            embedding = (obs.unsqueeze(1) * self.embed_model(taus)).view(batch_size * sample_size, -1)
            quantiles = self.last(embedding).view(batch_size, sample_size, -1).transpose(1, 2)
            return quantiles

        def forward(self, obs, propose_model, fractions=None):
            logits = self.preprocess(obs)
            # Propose fractions
            if fractions is None:
                taus, tau_hats, entropies = propose_model(logits.detach())
                fractions = dict(taus=taus, tau_hats=tau_hats, entropies=entropies)
            else:
                taus, tau_hats = fractions["taus"], fractions["tau_hats"]
            quantiles = self._compute_quantiles(logits, tau_hats)
            # Calculate quantiles_tau for computing fraction grad
            quantiles_tau = None
            if self.training:
                with torch.no_grad():
                    quantiles_tau = self._compute_quantiles(logits, taus[:, 1:-1])
            return quantiles, fractions, quantiles_tau

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.fraction_model = FullQuantileFunction(), FractionProposalNetwork(num_fractions, hidden)

    return Nets()


def fqf(m, weights, steps=3, ent_coef=0.01, gamma=0.99, broadcast_by_hand=False):
    torch, F = m.torch, m.F
    nets = load(m, make_fqf(m), weights)
    model, fraction_model = nets.model, nets.fraction_model
    model_old = copy.deepcopy(model)
    model_old.eval()
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    fraction_optim = torch.optim.RMSprop(fraction_model.parameters(), lr=2.5e-5)
    log = []
    for step in range(steps):
        obs, act, rew, obs_next, done = replay_batch(120 + step)
        act = act[:, 0]
        weight = torch.tensor(np.random.default_rng(step).uniform(0.5, 1.0, len(act)).astype(np.float32))
        # the n-step target from the old model's quantiles at the greedy action (fractions re-proposed for obs_next)
        with torch.no_grad():
            next_quantiles, fractions_next, _ = model_old(torch.tensor(obs_next), fraction_model)
            taus_next = fractions_next["taus"]
            q = ((taus_next[:, 1:] - taus_next[:, :-1]).unsqueeze(1) * next_quantiles).sum(2)
            next_act = q.argmax(dim=1).numpy()
            target_q = next_quantiles[np.arange(len(next_act)), next_act, :]
            returns = torch.tensor(rew) + gamma * torch.tensor(1 - done) * target_q
        quantiles, fractions, quantiles_tau = model(torch.tensor(obs), fraction_model)
        curr_dist_orig = quantiles
        taus, tau_hats = fractions["taus"], fractions["tau_hats"]
        curr_dist = curr_dist_orig[np.arange(len(act)), act, :].unsqueeze(2)
        target_dist = returns.unsqueeze(1)
        # calculate each element's difference between curr_dist and target_dist
        if broadcast_by_hand:  # what PyTorch's smooth_l1_loss does (with a warning) for differing shapes
            dist_diff = F.smooth_l1_loss(*torch.broadcast_tensors(target_dist, curr_dist), reduction="none")
        else:
            dist_diff = F.smooth_l1_loss(target_dist, curr_dist, reduction="none")
        huber_loss = (dist_diff * (tau_hats.unsqueeze(2) - (target_dist - curr_dist).detach().le(0.).float()).abs()).sum(-1).mean(1)
        quantile_loss = (huber_loss * weight).mean()
        new_weight = dist_diff.detach().abs().sum(-1).mean(1)  # prio-buffer
        # calculate fraction loss
        with torch.no_grad():
            sa_quantile_hats = curr_dist_orig[np.arange(len(act)), act, :]
            sa_quantiles = quantiles_tau[np.arange(len(act)), act, :]
            values_1 = sa_quantiles - sa_quantile_hats[:, :-1]
            signs_1 = sa_quantiles > torch.cat([sa_quantile_hats[:, :1], sa_quantiles[:, :-1]], dim=1)
            values_2 = sa_quantiles - sa_quantile_hats[:, 1:]
            signs_2 = sa_quantiles < torch.cat([sa_quantiles[:, 1:], sa_quantile_hats[:, -1:]], dim=1)
            gradient_of_taus = (torch.where(signs_1, values_1, -values_1) + torch.where(signs_2, values_2, -values_2))
        fraction_loss = (gradient_of_taus * taus[:, 1:-1]).sum(1).mean()
        # calculate entropy loss
        entropy_loss = fractions["entropies"].mean()
        fraction_entropy_loss = fraction_loss - ent_coef * entropy_loss
        fraction_optim.zero_grad()
        fraction_entropy_loss.backward(retain_graph=True)
        fraction_optim.step()
        optim.zero_grad()
        quantile_loss.backward()
        optim.step()
        log.append([quantile_loss, fraction_loss, entropy_loss, new_weight, taus, fraction_model.net.weight.grad.clone()])
    return log, nets.state_dict()


@pytest.mark.filterwarnings("ignore:Using a target size")
@pytest.mark.parametrize("broadcast_by_hand", [
    pytest.param(False, marks=pytest.mark.xfail(strict=True, raises=ShapeError, reason=(
        "README's contract: mismatched shapes in losses raise (ShapeError) where PyTorch warns and broadcasts; "
        "Tianshou's FQF, IQN and QR-DQN call F.smooth_l1_loss on (B, 1, N) targets and (B, N, 1) quantiles on "
        "purpose, relying on that broadcast"))),
    True])
def test_tianshou_fqf(broadcast_by_hand):
    ours, _ = run_both(fqf, weights_of(make_fqf), rtol=1e-4, atol=1e-6, broadcast_by_hand=broadcast_by_hand)
    taus = ours[0][0][4]
    assert np.all(taus[:, 0] == 0) and np.allclose(taus[:, -1], 1, atol=1e-6) and np.all(np.diff(taus, axis=1) > 0)
