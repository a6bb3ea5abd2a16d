# ruff: noqa: B007, B008, B023, E501, E702, E741, E731, F841, UP004, UP008, UP030, UP031, UP032, UP034  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs (see tests/pytorch_programs.py) beyond probe8_reinforcement and probe14_control,
each run on chainrule and on PyTorch from the same weights, seeds and synthetic replay data, comparing losses,
updated weights and gradients.

Distributional critics: sb3-contrib's QR-DQN (``quantile_huber_loss`` with pairwise deltas, ``torch.where`` Huber and
``(delta.detach() < 0).float()``, double-DQN greedy quantiles by ``gather`` on an ``expand``ed index) and TQC (sorted,
truncated quantiles of a critic ensemble); an IQN (cosine embeddings of ``torch.rand`` fractions, ``abs()`` of a
tensor, soft updates by ``.data.copy_``); a double DQN fed from a NumPy sum-tree prioritised replay with importance
weights and ``smooth_l1_loss(reduction='none')``. Offline RL from CORL: CQL (``new_empty().uniform_``, policy
samples repeated by ``repeat_interleave``, ``logsumexp`` over sampled actions, a Lagrange ``log_alpha_prime``), IQL
(expectile loss, ``MultivariateNormal(scale_tril=torch.diag(std))``, advantage-weighted regression clamped,
``CosineAnnealingLR``), TD3+BC (``lmbda = alpha / Q.abs().mean().detach()``, Polyak by ``torch._foreach_mul_`` /
``_foreach_add_``), AWAC (``clamp_max``) and EDAC (``VectorizedLinear`` ensembles, a diversity loss from
``autograd.grad(create_graph=True)`` of Q with respect to actions); a minimal Decision Transformer (timestep
embeddings, returns-to-go, interleaved tokens by ``stack``/``permute``/``reshape``, a causal mask buffer, a loss over
masked padding, AdamW with a warm-up ``LambdaLR``). MuZero (muzero-general): ``scalar_to_support`` /
``support_to_scalar`` with h(x) and its inverse, ``scatter_`` of two-hot targets with ``masked_fill_``, hidden-state
min-max normalisation with an indexed ``+=``, gradient scaling by ``register_hook`` on hidden states and losses.
IMPALA's V-trace (torchbeast, under ``@torch.no_grad()``, ``nll_loss`` of flattened logits, RMSprop); RND (a
frozen target, a random update mask by ``.type(torch.FloatTensor)``, ``torch.max`` of a 0-d and a 1-d tensor);
cleanRL's discrete SAC (automatic entropy tuning over action probabilities); sb3-contrib's MaskablePPO (a
``Categorical`` subclass resetting ``probs`` by ``logits_to_probs``, GAE, advantage normalisation, clipped value
loss, several epochs of shuffled minibatches with an approximate-KL early stop, SB3's ``polyak_update`` by
``torch.add(..., alpha=tau, out=...)``); and a batched cart-pole written in torch, differentiated through its
rollout (analytic policy gradients with ``torch.where`` resets).

Then: pymarl's QMIX (a GRUCell agent, hypernetwork mixing with ``torch.abs`` and ``bmm``, unavailable actions masked
by boolean index writes, masked TD errors, RMSprop) and MADDPG (``F.gumbel_softmax(hard=True)`` through a critic,
BatchNorm on inputs); Tianshou's FQF (a fraction proposal by ``cumsum`` of Categorical probs and ``F.pad``, numpy
index arrays into quantiles; a strict xfail where it relies on ``smooth_l1_loss`` broadcasting (B, 1, N) against
(B, N, 1), which chainrule refuses by design, and the same program with the broadcast written out) and its dual-clip
PPO with an Independent Normal; PPO-PyTorch's ``MultivariateNormal`` over a (1, A, A) covariance and
``diag_embed``; rl_games/IsaacGymEnvs idioms (a ``torch.jit.script`` reward, a RunningMeanStd module with float64
buffers, a disabled ``GradScaler``/``autocast``, ``clamp_min``/``clamp_max`` bound losses, ``sum(axis=-1)``);
R2D2 (LSTM burn-in from stored states, value rescaling h and h^-1, n-step double-Q targets over padded sequences);
NGU's episodic novelty (``cdist``, ``topk(largest=False)``); BCQ (a VAE with clamped latents, perturbation actor,
``repeat_interleave`` of next states); BEAR's MMD (in float64); PlaNet's CEM (``topk`` with flattened index
offsets, ``std(unbiased=False)``); ACKTR's K-FAC optimiser (biases split into modules, forward pre-hooks and both
kinds of backward hooks, ``unfold`` patches, ``linalg.eigh``, an ``Optimizer`` subclass with empty defaults wrapping
SGD) and ikostrikov's PPO over ``BatchSampler(SubsetRandomSampler)`` lists; alpha-zero-general (MCTS in NumPy over
a batch-norm policy/value net in eval mode under no_grad, self-play, its losses); Munchausen DQN; PopArt (a
``@torch.no_grad()`` method rescaling ``weight.data``, Parameters reassigned); DIAYN; the World Models MDN-RNN
(mixture log-likelihood by hand against ``MixtureSameFamily``); MAML-RL (functional ``F.linear`` over an
OrderedDict of adapted parameters, TRPO's Hessian-vector products through the adaptation, conjugate gradient, a
line search by ``vector_to_parameters``); GAIL's discriminator (gradient penalty by ``autograd.grad`` with
``only_inputs``); Option-Critic (Bernoulli terminations, per-option parameter tensors, ``state.data @ W``); HER with
'future' relabelling; CURL's bilinear contrastive loss with a momentum encoder; and Gumbel MuZero's root policy
improvement (Gumbel-top-k, sequential halving by ``scatter_add_``/``topk``/``gather``, completed Q-values, a KL loss)."""

import copy
import math
from collections import namedtuple

import numpy as np
import pytest

from autograd.errors import ShapeError

from .pytorch_programs import OURS, assert_same, load, run_both, weights_of


def replay_batch(seed, n=32, obs_dim=4, act_dim=None, n_actions=3):
    """A synthetic replay batch: observations, actions (continuous in [-1, 1] where act_dim, else discrete),
    rewards, next observations and dones."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, obs_dim)).astype(np.float32)
    if act_dim:
        act = rng.uniform(-0.95, 0.95, (n, act_dim)).astype(np.float32)
    else:
        act = rng.integers(0, n_actions, (n, 1))
    rew = rng.standard_normal((n, 1)).astype(np.float32)
    nxt = (obs + 0.1 * rng.standard_normal((n, obs_dim))).astype(np.float32)
    done = (rng.uniform(size=(n, 1)) < 0.1).astype(np.float32)
    return obs, act, rew, nxt, done


def mlp(nn, sizes, activation=None):
    activation = activation or nn.ReLU
    layers = []
    for j in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[j], sizes[j + 1])]
        if j < len(sizes) - 2:
            layers += [activation()]
    return nn.Sequential(*layers)


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
# Prioritised experience replay: a sum tree in NumPy, importance weights into a double DQN's loss
# ----------------------------------------------------------------------------------------------


class SumTree:
    write = 0

    def __init__(self, capacity):
        self.capacity = capacity
        self.tree = np.zeros(2 * capacity - 1)
        self.data = np.zeros(capacity, dtype=object)
        self.n_entries = 0

    def _propagate(self, idx, change):
        parent = (idx - 1) // 2
        self.tree[parent] += change
        if parent != 0:
            self._propagate(parent, change)

    def _retrieve(self, idx, s):
        left = 2 * idx + 1
        right = left + 1
        if left >= len(self.tree):
            return idx
        if s <= self.tree[left]:
            return self._retrieve(left, s)
        else:
            return self._retrieve(right, s - self.tree[left])

    def total(self):
        return self.tree[0]

    def add(self, p, data):
        idx = self.write + self.capacity - 1
        self.data[self.write] = data
        self.update(idx, p)
        self.write += 1
        if self.write >= self.capacity:
            self.write = 0
        if self.n_entries < self.capacity:
            self.n_entries += 1

    def update(self, idx, p):
        change = p - self.tree[idx]
        self.tree[idx] = p
        self._propagate(idx, change)

    def get(self, s):
        idx = self._retrieve(0, s)
        dataIdx = idx - self.capacity + 1
        return (idx, self.tree[idx], self.data[dataIdx])


class PrioritizedReplay:
    e, a, beta, beta_increment_per_sampling = 0.01, 0.6, 0.4, 0.1

    def __init__(self, capacity, seed):
        self.tree = SumTree(capacity)
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)

    def _get_priority(self, error):
        return (np.abs(error) + self.e) ** self.a

    def add(self, error, sample):
        self.tree.add(self._get_priority(error), sample)

    def sample(self, n):
        batch, idxs, priorities = [], [], []
        segment = self.tree.total() / n
        self.beta = np.min([1., self.beta + self.beta_increment_per_sampling])
        for i in range(n):
            a, b = segment * i, segment * (i + 1)
            s = self.rng.uniform(a, b)
            (idx, p, data) = self.tree.get(s)
            priorities.append(p); batch.append(data); idxs.append(idx)
        sampling_probabilities = np.array(priorities) / self.tree.total()
        is_weight = np.power(self.tree.n_entries * sampling_probabilities, -self.beta)
        is_weight /= is_weight.max()
        return batch, idxs, is_weight

    def update(self, idx, error):
        self.tree.update(idx, self._get_priority(error))


def make_dqn(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def per_double_dqn(m, weights, updates=4, gamma=0.99, batch_size=16):
    torch, F = m.torch, m.F
    q_net = load(m, make_dqn(m), weights)
    target_net = copy.deepcopy(q_net)
    optimizer = m.optim.Adam(q_net.parameters(), lr=1e-3)
    memory = PrioritizedReplay(64, seed=0)
    obs, act, rew, nxt, done = replay_batch(40, n=64)
    for i in range(64):
        memory.add(1.0 + i % 5, (obs[i], act[i, 0], rew[i, 0], nxt[i], done[i, 0]))
    history = []
    for step in range(updates):
        mini_batch, idxs, is_weights = memory.sample(batch_size)
        mini_batch = np.array(mini_batch, dtype=object).transpose()
        states = torch.from_numpy(np.vstack(mini_batch[0]))
        actions = torch.LongTensor(list(mini_batch[1]))
        rewards = torch.FloatTensor(list(mini_batch[2]))
        next_states = torch.from_numpy(np.vstack(mini_batch[3]))
        dones = torch.FloatTensor(list(mini_batch[4].astype(int)))
        pred = q_net(states).gather(1, actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_actions = q_net(next_states).argmax(dim=1, keepdim=True)
            next_q = target_net(next_states).gather(1, next_actions).squeeze(1)
            target = rewards + (1 - dones) * gamma * next_q
        errors = torch.abs(pred - target).data.numpy()
        for i in range(batch_size):
            memory.update(idxs[i], errors[i])
        loss = (torch.FloatTensor(is_weights) * F.smooth_l1_loss(pred, target, reduction="none")).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss, errors.copy(), np.array(idxs), is_weights.astype(np.float32)))
        if step % 2 == 1:
            target_net.load_state_dict(q_net.state_dict())
    return history, memory.tree.tree.copy(), q_net.state_dict()


def test_prioritized_replay_double_dqn():
    ours, _ = run_both(per_double_dqn, weights_of(make_dqn), rtol=1e-4, atol=1e-5)
    tree = ours[1]
    assert tree[0] == pytest.approx(tree[-64:].sum())  # the root holds the total priority
    for loss, errors, idxs, w in ours[0]:
        assert w.max() == pytest.approx(1.0) and np.all(w > 0)


# ----------------------------------------------------------------------------------------------
# CORL: CQL (continuous, with a Lagrange multiplier), IQL, TD3+BC, AWAC, EDAC
# ----------------------------------------------------------------------------------------------


def extend_and_repeat(tensor, dim, repeat):
    return tensor.unsqueeze(dim).repeat_interleave(repeat, dim=dim)


def make_cql(m, obs_dim=4, action_dim=2, hidden=16):
    torch, nn = m.torch, m.nn
    D = torch.distributions

    class ReparameterizedTanhGaussian(nn.Module):
        def __init__(self, log_std_min=-20.0, log_std_max=2.0, no_tanh=False):
            super().__init__()
            self.log_std_min, self.log_std_max, self.no_tanh = log_std_min, log_std_max, no_tanh

        def log_prob(self, mean, log_std, sample):
            log_std = torch.clamp(log_std, self.log_std_min, self.log_std_max)
            std = torch.exp(log_std)
            action_distribution = D.TransformedDistribution(D.Normal(mean, std), D.TanhTransform(cache_size=1))
            return torch.sum(action_distribution.log_prob(sample), dim=-1)

        def forward(self, mean, log_std, deterministic=False):
            log_std = torch.clamp(log_std, self.log_std_min, self.log_std_max)
            std = torch.exp(log_std)
            action_distribution = D.TransformedDistribution(D.Normal(mean, std), D.TanhTransform(cache_size=1))
            if deterministic:
                action_sample = torch.tanh(mean)
            else:
                action_sample = action_distribution.rsample()
            log_prob = torch.sum(action_distribution.log_prob(action_sample), dim=-1)
            return action_sample, log_prob

    class TanhGaussianPolicy(nn.Module):
        def __init__(self, max_action=1.0, log_std_multiplier=1.0, log_std_offset=-1.0):
            super().__init__()
            self.max_action = max_action
            self.base_network = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * action_dim))
            self.log_std_multiplier = Scalar(log_std_multiplier)
            self.log_std_offset = Scalar(log_std_offset)
            self.tanh_gaussian = ReparameterizedTanhGaussian()

        def log_prob(self, observations, actions):
            if actions.ndim == 3:
                observations = extend_and_repeat(observations, 1, actions.shape[1])
            base_network_output = self.base_network(observations)
            mean, log_std = torch.split(base_network_output, action_dim, dim=-1)
            log_std = self.log_std_multiplier() * log_std + self.log_std_offset()
            return self.tanh_gaussian.log_prob(mean, log_std, actions)

        def forward(self, observations, deterministic=False, repeat=None):
            if repeat is not None:
                observations = extend_and_repeat(observations, 1, repeat)
            base_network_output = self.base_network(observations)
            mean, log_std = torch.split(base_network_output, action_dim, dim=-1)
            log_std = self.log_std_multiplier() * log_std + self.log_std_offset()
            actions, log_probs = self.tanh_gaussian(mean, log_std, deterministic)
            return self.max_action * actions, log_probs

    class FullyConnectedQFunction(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = nn.Sequential(nn.Linear(obs_dim + action_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, observations, actions):
            multiple_actions = False
            batch_size = observations.shape[0]
            if actions.ndim == 3 and observations.ndim == 2:
                multiple_actions = True
                observations = extend_and_repeat(observations, 1, actions.shape[1]).reshape(-1, observations.shape[-1])
                actions = actions.reshape(-1, actions.shape[-1])
            input_tensor = torch.cat([observations, actions], dim=-1)
            q_values = torch.squeeze(self.network(input_tensor), dim=-1)
            if multiple_actions:
                q_values = q_values.reshape(batch_size, -1)
            return q_values

    class Scalar(nn.Module):
        def __init__(self, init_value):
            super().__init__()
            self.constant = nn.Parameter(torch.tensor(init_value, dtype=torch.float32))

        def forward(self):
            return self.constant

    class CQLNets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor = TanhGaussianPolicy()
            self.critic_1, self.critic_2 = FullyConnectedQFunction(), FullyConnectedQFunction()
            self.log_alpha = Scalar(0.0)
            self.log_alpha_prime = Scalar(1.0)

    return CQLNets()


def cql(m, weights, updates=3, cql_n_actions=4, discount=0.99, cql_temp=1.0, cql_alpha=5.0,
        cql_target_action_gap=-1.0, soft_target_update_rate=5e-3, target_entropy=-2.0):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    nets = load(m, make_cql(m), weights)
    actor, critic_1, critic_2 = nets.actor, nets.critic_1, nets.critic_2
    target_critic_1, target_critic_2 = copy.deepcopy(critic_1), copy.deepcopy(critic_2)
    actor_optimizer = torch.optim.Adam(actor.parameters(), 3e-4)
    critic_1_optimizer = torch.optim.Adam(list(critic_1.parameters()), 3e-4)
    critic_2_optimizer = torch.optim.Adam(list(critic_2.parameters()), 3e-4)
    alpha_optimizer = torch.optim.Adam(nets.log_alpha.parameters(), lr=3e-4)
    alpha_prime_optimizer = torch.optim.Adam(nets.log_alpha_prime.parameters(), lr=3e-4)
    log = []
    for step in range(updates):
        observations, actions, rewards, next_observations, dones = (torch.tensor(a) for a in replay_batch(50 + step, act_dim=2))
        rewards, dones = rewards.squeeze(-1), dones.squeeze(-1)
        new_actions, log_pi = actor(observations)
        log_alpha = nets.log_alpha()
        alpha_loss = -(log_alpha * (log_pi + target_entropy).detach()).mean()
        alpha = log_alpha.exp() * 1.0
        q_new_actions = torch.min(critic_1(observations, new_actions), critic_2(observations, new_actions))
        policy_loss = (alpha * log_pi - q_new_actions).mean()

        q1_predicted = critic_1(observations, actions)
        q2_predicted = critic_2(observations, actions)
        new_next_actions, next_log_pi = actor(next_observations)
        target_q_values = torch.min(target_critic_1(next_observations, new_next_actions),
                                    target_critic_2(next_observations, new_next_actions))
        target_q_values = target_q_values - alpha * next_log_pi
        target_q_values = target_q_values.unsqueeze(-1)
        td_target = rewards.unsqueeze(-1) + (1.0 - dones.unsqueeze(-1)) * discount * target_q_values.detach()
        td_target = td_target.squeeze(-1)
        qf1_loss = F.mse_loss(q1_predicted, td_target.detach())
        qf2_loss = F.mse_loss(q2_predicted, td_target.detach())

        batch_size, action_dim = actions.shape[0], actions.shape[-1]
        cql_random_actions = actions.new_empty((batch_size, cql_n_actions, action_dim), requires_grad=False).uniform_(-1, 1)
        cql_current_actions, cql_current_log_pis = actor(observations, repeat=cql_n_actions)
        cql_next_actions, cql_next_log_pis = actor(next_observations, repeat=cql_n_actions)
        cql_current_actions, cql_current_log_pis = cql_current_actions.detach(), cql_current_log_pis.detach()
        cql_next_actions, cql_next_log_pis = cql_next_actions.detach(), cql_next_log_pis.detach()
        cql_q1_rand = critic_1(observations, cql_random_actions)
        cql_q2_rand = critic_2(observations, cql_random_actions)
        cql_q1_current_actions = critic_1(observations, cql_current_actions)
        cql_q2_current_actions = critic_2(observations, cql_current_actions)
        cql_q1_next_actions = critic_1(observations, cql_next_actions)
        cql_q2_next_actions = critic_2(observations, cql_next_actions)
        random_density = np.log(0.5 ** action_dim)
        cql_cat_q1 = torch.cat([cql_q1_rand - random_density, cql_q1_next_actions - cql_next_log_pis.detach(),
                                cql_q1_current_actions - cql_current_log_pis.detach()], dim=1)
        cql_cat_q2 = torch.cat([cql_q2_rand - random_density, cql_q2_next_actions - cql_next_log_pis.detach(),
                                cql_q2_current_actions - cql_current_log_pis.detach()], dim=1)
        cql_qf1_ood = torch.logsumexp(cql_cat_q1 / cql_temp, dim=1) * cql_temp
        cql_qf2_ood = torch.logsumexp(cql_cat_q2 / cql_temp, dim=1) * cql_temp
        cql_qf1_diff = torch.clamp(cql_qf1_ood - q1_predicted, -np.inf, np.inf).mean()
        cql_qf2_diff = torch.clamp(cql_qf2_ood - q2_predicted, -np.inf, np.inf).mean()
        alpha_prime = torch.clamp(torch.exp(nets.log_alpha_prime()), min=0.0, max=1000000.0)
        cql_min_qf1_loss = alpha_prime * cql_alpha * (cql_qf1_diff - cql_target_action_gap)
        cql_min_qf2_loss = alpha_prime * cql_alpha * (cql_qf2_diff - cql_target_action_gap)
        alpha_prime_optimizer.zero_grad()
        alpha_prime_loss = (-cql_min_qf1_loss - cql_min_qf2_loss) * 0.5
        alpha_prime_loss.backward(retain_graph=True)
        alpha_prime_optimizer.step()
        qf_loss = qf1_loss + qf2_loss + cql_min_qf1_loss + cql_min_qf2_loss

        alpha_optimizer.zero_grad()
        alpha_loss.backward()
        alpha_optimizer.step()
        actor_optimizer.zero_grad()
        policy_loss.backward()
        actor_optimizer.step()
        critic_1_optimizer.zero_grad()
        critic_2_optimizer.zero_grad()
        qf_loss.backward(retain_graph=True)
        critic_1_optimizer.step()
        critic_2_optimizer.step()
        with torch.no_grad():
            for target, source in ((target_critic_1, critic_1), (target_critic_2, critic_2)):
                for target_param, source_param in zip(target.parameters(), source.parameters()):
                    target_param.data.copy_((1 - soft_target_update_rate) * target_param.data + soft_target_update_rate * source_param.data)
        log.append([policy_loss, qf1_loss, cql_qf1_ood, cql_min_qf1_loss, alpha_prime_loss, alpha_loss, cql_cat_q1])
    with torch.no_grad():
        test_actions = torch.tensor(replay_batch(60, act_dim=2)[1])
        log_prob = actor.log_prob(observations, test_actions)
        repeated = actor.log_prob(observations, test_actions[:, None, :].repeat(1, 3, 1))
    return log, nets.state_dict(), target_critic_1.state_dict(), log_prob, repeated


def test_corl_cql():
    ours, _ = run_both(cql, weights_of(make_cql), rtol=2e-4, atol=2e-5)
    log_prob, repeated = ours[3], ours[4]
    np.testing.assert_allclose(repeated, np.repeat(log_prob[:, None], 3, 1), rtol=1e-6)


def make_iql(m, state_dim=4, act_dim=2, hidden=16):
    torch, nn = m.torch, m.nn
    from_dist = torch.distributions

    class TwinQ(nn.Module):
        def __init__(self):
            super().__init__()
            self.q1 = mlp(nn, [state_dim + act_dim, hidden, hidden, 1])
            self.q2 = mlp(nn, [state_dim + act_dim, hidden, hidden, 1])

        def both(self, state, action):
            sa = torch.cat([state, action], 1)
            return self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)

        def forward(self, state, action):
            return torch.min(*self.both(state, action))

    class ValueFunction(nn.Module):
        def __init__(self):
            super().__init__()
            self.v = mlp(nn, [state_dim, hidden, hidden, 1])

        def forward(self, state):
            return self.v(state).squeeze(-1)

    class GaussianPolicy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(nn, [state_dim, hidden, act_dim])
            self.log_std = nn.Parameter(torch.zeros(act_dim, dtype=torch.float32))

        def forward(self, obs):
            mean = torch.tanh(self.net(obs))
            std = torch.exp(self.log_std.clamp(-5.0, 2.0))
            scale_tril = torch.diag(std)
            return from_dist.MultivariateNormal(mean, scale_tril=scale_tril)

    class IQLNets(nn.Module):
        def __init__(self):
            super().__init__()
            self.qf, self.vf, self.actor = TwinQ(), ValueFunction(), GaussianPolicy()

    return IQLNets()


def asymmetric_l2_loss(torch, u, tau):
    return torch.mean(torch.abs(tau - (u < 0).float()) * u ** 2)


def iql(m, weights, updates=4, iql_tau=0.7, beta=3.0, discount=0.99, tau=0.005, EXP_ADV_MAX=100.0):
    torch, F = m.torch, m.F
    nets = load(m, make_iql(m), weights)
    qf, vf, actor = nets.qf, nets.vf, nets.actor
    q_target = copy.deepcopy(qf).requires_grad_(False)
    v_optimizer = torch.optim.Adam(vf.parameters(), lr=3e-3)
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=3e-3)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=3e-3)
    actor_lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(actor_optimizer, updates)
    log = []
    for step in range(updates):
        observations, actions, rewards, next_observations, dones = (torch.tensor(a) for a in replay_batch(70 + step, act_dim=2))
        rewards, dones = rewards.squeeze(dim=-1), dones.squeeze(dim=-1)
        with torch.no_grad():
            next_v = vf(next_observations)
        # value
        with torch.no_grad():
            target_q = q_target(observations, actions)
        v = vf(observations)
        adv = target_q - v
        v_loss = asymmetric_l2_loss(torch, adv, iql_tau)
        v_optimizer.zero_grad()
        v_loss.backward()
        v_optimizer.step()
        # q
        targets = rewards + (1.0 - dones.float()) * discount * next_v.detach()
        qs = qf.both(observations, actions)
        q_loss = sum(F.mse_loss(q, targets) for q in qs) / len(qs)
        q_optimizer.zero_grad()
        q_loss.backward()
        q_optimizer.step()
        for target_param, source_param in zip(q_target.parameters(), qf.parameters()):
            target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)
        # policy
        exp_adv = torch.exp(beta * adv.detach()).clamp(max=EXP_ADV_MAX)
        policy_out = actor(observations)
        if isinstance(policy_out, torch.distributions.Distribution):
            bc_losses = -policy_out.log_prob(actions)
        elif torch.is_tensor(policy_out):
            bc_losses = torch.sum((policy_out - actions) ** 2, dim=1)
        policy_loss = torch.mean(exp_adv * bc_losses)
        actor_optimizer.zero_grad()
        policy_loss.backward()
        actor_optimizer.step()
        actor_lr_schedule.step()
        log.append([v_loss, q_loss, policy_loss, exp_adv, actor_optimizer.param_groups[0]["lr"]])
    return log, nets.state_dict(), q_target.state_dict()


def test_corl_iql():
    ours, _ = run_both(iql, weights_of(make_iql), rtol=1e-4, atol=1e-5)
    assert ours[0][-1][-1] == pytest.approx(0.0, abs=1e-12)


def make_td3_bc(m, state_dim=4, action_dim=2, max_action=1.0):
    torch, nn, F = m.torch, m.nn, m.F

    class Actor(nn.Module):
        def __init__(self):
            super(Actor, self).__init__()
            self.l1 = nn.Linear(state_dim, 16)
            self.l2 = nn.Linear(16, 16)
            self.l3 = nn.Linear(16, action_dim)
            self.max_action = max_action

        def forward(self, state):
            a = F.relu(self.l1(state))
            a = F.relu(self.l2(a))
            return self.max_action * torch.tanh(self.l3(a))

    class Critic(nn.Module):
        def __init__(self):
            super(Critic, self).__init__()
            self.l1 = nn.Linear(state_dim + action_dim, 16)
            self.l2 = nn.Linear(16, 1)
            self.l4 = nn.Linear(state_dim + action_dim, 16)
            self.l5 = nn.Linear(16, 1)

        def forward(self, state, action):
            sa = torch.cat([state, action], 1)
            q1 = self.l2(F.relu(self.l1(sa)))
            q2 = self.l5(F.relu(self.l4(sa)))
            return q1, q2

        def Q1(self, state, action):
            sa = torch.cat([state, action], 1)
            return self.l2(F.relu(self.l1(sa)))

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor, self.critic = Actor(), Critic()

    return Nets()


def td3_bc(m, weights, iterations=6, discount=0.99, tau=0.005, policy_noise=0.2, noise_clip=0.5, policy_freq=2,
           alpha=2.5, max_action=1.0):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    nets = load(m, make_td3_bc(m), weights)
    actor, critic = nets.actor, nets.critic
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=3e-4)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=3e-4)
    states, actions, rewards, next_states, dones = replay_batch(80, n=64, act_dim=2)
    mean, std = states.mean(0, keepdims=True), states.std(0, keepdims=True) + 1e-3
    states, next_states = (states - mean) / std, (next_states - mean) / std
    rng = np.random.default_rng(0)
    log = []
    for total_it in range(1, iterations + 1):
        ind = rng.integers(0, 64, size=16)
        state, action, next_state = torch.FloatTensor(states[ind]), torch.FloatTensor(actions[ind]), torch.FloatTensor(next_states[ind])
        reward, not_done = torch.FloatTensor(rewards[ind]), torch.FloatTensor(1. - dones[ind])
        with torch.no_grad():
            noise = (torch.randn_like(action) * policy_noise).clamp(-noise_clip, noise_clip)
            next_action = (actor_target(next_state) + noise).clamp(-max_action, max_action)
            target_Q1, target_Q2 = critic_target(next_state, next_action)
            target_Q = torch.min(target_Q1, target_Q2)
            target_Q = reward + not_done * discount * target_Q
        current_Q1, current_Q2 = critic(state, action)
        critic_loss = F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q)
        critic_optimizer.zero_grad()
        critic_loss.backward()
        critic_optimizer.step()
        log.append(critic_loss)
        if total_it % policy_freq == 0:
            pi = actor(state)
            Q = critic.Q1(state, pi)
            lmbda = alpha / Q.abs().mean().detach()
            actor_loss = -lmbda * Q.mean() + F.mse_loss(pi, action)
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()
            log.append(actor_loss)
            with torch.no_grad():
                for net, target in ((critic, critic_target), (actor, actor_target)):
                    target_params, params = list(target.parameters()), list(net.parameters())
                    torch._foreach_mul_(target_params, 1 - tau)
                    torch._foreach_add_(target_params, params, alpha=tau)
    return log, nets.state_dict(), actor_target.state_dict(), critic_target.state_dict()


def test_td3_bc():
    ours, _ = run_both(td3_bc, weights_of(make_td3_bc), rtol=1e-4, atol=1e-6)
    assert len(ours[0]) == 9


def make_awac(m, state_dim=4, action_dim=2, hidden_dim=16, min_log_std=-20.0, max_log_std=2.0, min_action=-1.0, max_action=1.0):
    torch, nn = m.torch, m.nn

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self._mlp = nn.Sequential(nn.Linear(state_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, action_dim))
            self._log_std = nn.Parameter(torch.zeros(action_dim, dtype=torch.float32))
            self._min_log_std, self._max_log_std = min_log_std, max_log_std
            self._min_action, self._max_action = min_action, max_action

        def _get_policy(self, state):
            mean = self._mlp(state)
            log_std = self._log_std.clamp(self._min_log_std, self._max_log_std)
            policy = torch.distributions.Normal(mean, log_std.exp())
            return policy

        def log_prob(self, state, action):
            policy = self._get_policy(state)
            log_prob = policy.log_prob(action).sum(-1, keepdim=True)
            return log_prob

        def forward(self, state):
            policy = self._get_policy(state)
            action = policy.rsample()
            action.clamp_(self._min_action, self._max_action)
            log_prob = policy.log_prob(action).sum(-1, keepdim=True)
            return action, log_prob

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self._mlp = nn.Sequential(nn.Linear(state_dim + action_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

        def forward(self, state, action):
            return self._mlp(torch.cat([state, action], dim=-1))

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor, self.critic_1, self.critic_2 = Actor(), Critic(), Critic()

    return Nets()


def soft_update(target, source, tau):
    for target_param, source_param in zip(target.parameters(), source.parameters()):
        target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)


def awac(m, weights, updates=3, gamma=0.99, tau=5e-3, awac_lambda=1.0, exp_adv_max=100.0):
    torch, nn = m.torch, m.nn
    torch.manual_seed(1)
    nets = load(m, make_awac(m), weights)
    _actor, _critic_1, _critic_2 = nets.actor, nets.critic_1, nets.critic_2
    _target_critic_1, _target_critic_2 = copy.deepcopy(_critic_1), copy.deepcopy(_critic_2)
    _actor_optimizer = torch.optim.Adam(_actor.parameters(), lr=3e-3)
    _critic_1_optimizer = torch.optim.Adam(_critic_1.parameters(), lr=3e-3)
    _critic_2_optimizer = torch.optim.Adam(_critic_2.parameters(), lr=3e-3)
    log = []
    for step in range(updates):
        states, actions, rewards, next_states, dones = (torch.tensor(a) for a in replay_batch(90 + step, act_dim=2))
        with torch.no_grad():
            next_actions, _ = _actor(next_states)
            q_next = torch.min(_target_critic_1(next_states, next_actions), _target_critic_2(next_states, next_actions))
            q_target = rewards + gamma * (1.0 - dones) * q_next
        q1 = _critic_1(states, actions)
        q2 = _critic_2(states, actions)
        q1_loss = nn.functional.mse_loss(q1, q_target)
        q2_loss = nn.functional.mse_loss(q2, q_target)
        critic_loss = q1_loss + q2_loss
        _critic_1_optimizer.zero_grad()
        _critic_2_optimizer.zero_grad()
        critic_loss.backward()
        _critic_1_optimizer.step()
        _critic_2_optimizer.step()
        with torch.no_grad():
            pi_action, _ = _actor(states)
            v = torch.min(_critic_1(states, pi_action), _critic_2(states, pi_action))
            q = torch.min(_critic_1(states, actions), _critic_2(states, actions))
            adv = q - v
            weights_ = torch.clamp_max(torch.exp(adv / awac_lambda), exp_adv_max)
        action_log_prob = _actor.log_prob(states, actions)
        actor_loss = (-action_log_prob * weights_).mean()
        _actor_optimizer.zero_grad()
        actor_loss.backward()
        _actor_optimizer.step()
        with torch.no_grad():
            soft_update(_target_critic_1, _critic_1, tau)
            soft_update(_target_critic_2, _critic_2, tau)
        log.append([critic_loss, actor_loss, weights_])
    return log, nets.state_dict(), _target_critic_2.state_dict()


def test_corl_awac():
    ours, _ = run_both(awac, weights_of(make_awac), rtol=1e-4, atol=1e-5)
    for critic_loss, actor_loss, weights_ in ours[0]:
        assert np.all(weights_ > 0) and np.all(weights_ <= 100.0) and np.isfinite(actor_loss)


def make_edac(m, state_dim=4, action_dim=2, hidden_dim=16, num_critics=4):
    torch, nn = m.torch, m.nn

    class VectorizedLinear(nn.Module):
        def __init__(self, in_features, out_features, ensemble_size):
            super().__init__()
            self.in_features, self.out_features, self.ensemble_size = in_features, out_features, ensemble_size
            self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
            self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
            self.reset_parameters()

        def reset_parameters(self):
            for layer in range(self.ensemble_size):
                nn.init.kaiming_uniform_(self.weight[layer], a=math.sqrt(5))
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight[0])
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

        def forward(self, x):
            # input: [ensemble_size, batch_size, input_size]
            return x @ self.weight + self.bias

    class VectorizedCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.critic = nn.Sequential(
                VectorizedLinear(state_dim + action_dim, hidden_dim, num_critics), nn.ReLU(),
                VectorizedLinear(hidden_dim, hidden_dim, num_critics), nn.ReLU(),
                VectorizedLinear(hidden_dim, 1, num_critics))
            for layer in self.critic[::2]:
                torch.nn.init.constant_(layer.bias, 0.1)
            torch.nn.init.uniform_(self.critic[-1].weight, -3e-3, 3e-3)
            torch.nn.init.uniform_(self.critic[-1].bias, -3e-3, 3e-3)
            self.num_critics = num_critics

        def forward(self, state, action):
            state_action = torch.cat([state, action], dim=-1)
            if state_action.dim() != 3:
                assert state_action.dim() == 2
                state_action = state_action.unsqueeze(0).repeat_interleave(self.num_critics, dim=0)
            assert state_action.dim() == 3
            assert state_action.shape[0] == self.num_critics
            q_values = self.critic(state_action).squeeze(-1)
            return q_values

    return VectorizedCritic()


def edac(m, weights, updates=3, eta=1.0, gamma=0.99, EPS=1e-8):
    torch, nn = m.torch, m.nn
    critic = load(m, make_edac(m), weights).double()
    target_critic = copy.deepcopy(critic)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    log = []

    def _critic_diversity_loss(state, action):
        num_critics = critic.num_critics
        state = state.unsqueeze(0).repeat_interleave(num_critics, dim=0)
        action = action.unsqueeze(0).repeat_interleave(num_critics, dim=0).requires_grad_(True)
        q_ensemble = critic(state, action)
        q_action_grad = torch.autograd.grad(q_ensemble.sum(), action, retain_graph=True, create_graph=True)[0]
        q_action_grad = q_action_grad / (torch.norm(q_action_grad, p=2, dim=2).unsqueeze(-1) + EPS)
        q_action_grad = q_action_grad.transpose(0, 1)
        masks = torch.eye(num_critics).unsqueeze(dim=0).repeat(q_action_grad.shape[0], 1, 1)
        q_action_grad = q_action_grad @ q_action_grad.permute(0, 2, 1)
        q_action_grad = (1 - masks) * q_action_grad
        grad_loss = q_action_grad.sum(dim=(1, 2)).mean()
        grad_loss = grad_loss / (num_critics - 1)
        return grad_loss

    for step in range(updates):
        state, action, reward, next_state, done = (torch.tensor(a.astype(np.float64)) for a in replay_batch(100 + step, act_dim=2))
        reward, done = reward.squeeze(-1), done.squeeze(-1)
        with torch.no_grad():
            next_action = torch.tanh(next_state[:, :2])
            q_next = target_critic(next_state, next_action).min(0).values
            q_target = reward + gamma * (1 - done) * q_next
        q_values = critic(state, action)
        critic_loss = ((q_values - q_target.view(1, -1)) ** 2).mean(dim=1).sum(dim=0)
        diversity_loss = _critic_diversity_loss(state, action)
        loss = critic_loss + eta * diversity_loss
        critic_optimizer.zero_grad()
        loss.backward()
        critic_optimizer.step()
        with torch.no_grad():
            soft_update(target_critic, critic, 5e-3)
            q_random_std = q_values.std(0).mean().item()
        log.append([critic_loss, diversity_loss, q_random_std, critic.critic[0].weight.grad.clone()])
    return log, critic.state_dict()


def test_corl_edac_diversity_loss():
    # in float64: the diversity loss normalises action gradients, whose float32 rounding the next step amplifies
    ours, _ = run_both(edac, weights_of(make_edac), rtol=1e-9, atol=1e-12)
    assert all(np.isfinite(row[1]) for row in ours[0])


# ----------------------------------------------------------------------------------------------
# A minimal Decision Transformer (nikhilbarhate99/min-decision-transformer)
# ----------------------------------------------------------------------------------------------


def make_decision_transformer(m, state_dim=4, act_dim=2, n_blocks=2, h_dim=16, context_len=5, n_heads=2, drop_p=0.0,
                              max_timestep=64):
    torch, nn, F = m.torch, m.nn, m.F

    class MaskedCausalAttention(nn.Module):
        def __init__(self, h_dim, max_T, n_heads, drop_p):
            super().__init__()
            self.n_heads = n_heads
            self.max_T = max_T
            self.q_net = nn.Linear(h_dim, h_dim)
            self.k_net = nn.Linear(h_dim, h_dim)
            self.v_net = nn.Linear(h_dim, h_dim)
            self.proj_net = nn.Linear(h_dim, h_dim)
            self.att_drop = nn.Dropout(drop_p)
            self.proj_drop = nn.Dropout(drop_p)
            ones = torch.ones((max_T, max_T))
            mask = torch.tril(ones).view(1, 1, max_T, max_T)
            # register buffer makes sure mask does not get updated during backpropagation
            self.register_buffer('mask', mask)

        def forward(self, x):
            B, T, C = x.shape  # batch size, seq length, h_dim * n_heads
            N, D = self.n_heads, C // self.n_heads  # N = num heads, D = attention dim
            # rearrange q, k, v as (B, N, T, D)
            q = self.q_net(x).view(B, T, N, D).transpose(1, 2)
            k = self.k_net(x).view(B, T, N, D).transpose(1, 2)
            v = self.v_net(x).view(B, T, N, D).transpose(1, 2)
            # weights (B, N, T, T)
            weights = q @ k.transpose(2, 3) / math.sqrt(D)
            # causal mask applied to weights
            weights = weights.masked_fill(self.mask[..., :T, :T] == 0, float('-inf'))
            # normalize weights, all -inf -> 0 after softmax
            normalized_weights = F.softmax(weights, dim=-1)
            # attention (B, N, T, D)
            attention = self.att_drop(normalized_weights @ v)
            # gather heads and project (B, N, T, D) -> (B, T, N*D)
            attention = attention.transpose(1, 2).contiguous().view(B, T, N * D)
            out = self.proj_drop(self.proj_net(attention))
            return out

    class Block(nn.Module):
        def __init__(self, h_dim, max_T, n_heads, drop_p):
            super().__init__()
            self.attention = MaskedCausalAttention(h_dim, max_T, n_heads, drop_p)
            self.mlp = nn.Sequential(nn.Linear(h_dim, 4 * h_dim), nn.GELU(), nn.Linear(4 * h_dim, h_dim), nn.Dropout(drop_p))
            self.ln1 = nn.LayerNorm(h_dim)
            self.ln2 = nn.LayerNorm(h_dim)

        def forward(self, x):
            # Attention -> LayerNorm -> MLP -> LayerNorm
            x = x + self.attention(x)  # residual
            x = self.ln1(x)
            x = x + self.mlp(x)  # residual
            x = self.ln2(x)
            return x

    class DecisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.state_dim, self.act_dim, self.h_dim = state_dim, act_dim, h_dim
            ### transformer blocks
            input_seq_len = 3 * context_len
            blocks = [Block(h_dim, input_seq_len, n_heads, drop_p) for _ in range(n_blocks)]
            self.transformer = nn.Sequential(*blocks)
            ### projection heads (project to embedding)
            self.embed_ln = nn.LayerNorm(h_dim)
            self.embed_timestep = nn.Embedding(max_timestep, h_dim)
            self.embed_rtg = torch.nn.Linear(1, h_dim)
            self.embed_state = torch.nn.Linear(state_dim, h_dim)
            # continuous actions
            self.embed_action = torch.nn.Linear(act_dim, h_dim)
            use_action_tanh = True  # True for continuous actions
            ### prediction heads
            self.predict_rtg = torch.nn.Linear(h_dim, 1)
            self.predict_state = torch.nn.Linear(h_dim, state_dim)
            self.predict_action = nn.Sequential(*([nn.Linear(h_dim, act_dim)] + ([nn.Tanh()] if use_action_tanh else [])))

        def forward(self, timesteps, states, actions, returns_to_go):
            B, T, _ = states.shape
            time_embeddings = self.embed_timestep(timesteps)
            # time embeddings are treated similar to positional embeddings
            state_embeddings = self.embed_state(states) + time_embeddings
            action_embeddings = self.embed_action(actions) + time_embeddings
            returns_embeddings = self.embed_rtg(returns_to_go) + time_embeddings
            # stack rtg, states and actions and reshape sequence as
            # (r_0, s_0, a_0, r_1, s_1, a_1, r_2, s_2, a_2 ...)
            h = torch.stack(
                (returns_embeddings, state_embeddings, action_embeddings), dim=1
            ).permute(0, 2, 1, 3).reshape(B, 3 * T, self.h_dim)
            h = self.embed_ln(h)
            # transformer and prediction
            h = self.transformer(h)
            # get h reshaped such that its size = (B x 3 x T x h_dim) and
            # h[:, 0, t] is conditioned on the input sequence r_0, s_0, a_0 ... r_t
            # h[:, 1, t] is conditioned on the input sequence r_0, s_0, a_0 ... r_t, s_t
            # h[:, 2, t] is conditioned on the input sequence r_0, s_0, a_0 ... r_t, s_t, a_t
            h = h.reshape(B, T, 3, self.h_dim).permute(0, 2, 1, 3)
            # get predictions
            return_preds = self.predict_rtg(h[:, 2])  # predict next rtg given r, s, a
            state_preds = self.predict_state(h[:, 2])  # predict next state given r, s, a
            action_preds = self.predict_action(h[:, 1])  # predict action given r, s
            return state_preds, action_preds, return_preds

    return DecisionTransformer()


def discount_cumsum(x, gamma):
    disc_cumsum = np.zeros_like(x)
    disc_cumsum[-1] = x[-1]
    for t in reversed(range(x.shape[0] - 1)):
        disc_cumsum[t] = x[t] + gamma * disc_cumsum[t + 1]
    return disc_cumsum


def dt_trajectories(seed=0, n=6, context_len=5):
    """Trajectories of random lengths (some shorter than the context, then padded), as the D4RL dataset class
    slices them: timesteps, states, actions, returns-to-go and the padding mask."""
    rng = np.random.default_rng(seed)
    batch = []
    for i in range(n):
        traj_len = int(rng.integers(3, 12))
        states = rng.standard_normal((traj_len, 4)).astype(np.float32)
        actions = rng.uniform(-1, 1, (traj_len, 2)).astype(np.float32)
        rewards = rng.standard_normal(traj_len).astype(np.float32)
        rtg = discount_cumsum(rewards, 1.0) / 10.0
        if traj_len > context_len:
            si = int(rng.integers(0, traj_len - context_len))
            sl = slice(si, si + context_len)
            timesteps = np.arange(si, si + context_len)
            batch.append((timesteps, states[sl], actions[sl], rtg[sl], np.ones(context_len, dtype=np.int64)))
        else:
            padding_len = context_len - traj_len
            pad = lambda a: np.concatenate([a, np.zeros((padding_len,) + a.shape[1:], dtype=a.dtype)])
            timesteps = np.arange(0, context_len)
            mask = np.concatenate([np.ones(traj_len, dtype=np.int64), np.zeros(padding_len, dtype=np.int64)])
            batch.append((timesteps, pad(states), pad(actions), pad(rtg), mask))
    return [np.stack(x) for x in zip(*batch)]


def decision_transformer(m, weights, steps=4, warmup_steps=3, context_len=5):
    torch, F = m.torch, m.F
    model = load(m, make_decision_transformer(m), weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda steps: min((steps + 1) / warmup_steps, 1))
    act_dim = 2
    log = []
    for step in range(steps):
        timesteps, states, actions, returns_to_go, traj_mask = (torch.from_numpy(a) for a in dt_trajectories(step))
        returns_to_go = returns_to_go.unsqueeze(dim=-1)  # B x T x 1
        action_target = torch.clone(actions).detach()
        state_preds, action_preds, return_preds = model.forward(timesteps=timesteps, states=states, actions=actions, returns_to_go=returns_to_go)
        # only consider non padded elements
        action_preds = action_preds.view(-1, act_dim)[traj_mask.view(-1, ) > 0]
        action_target = action_target.view(-1, act_dim)[traj_mask.view(-1, ) > 0]
        action_loss = F.mse_loss(action_preds, action_target, reduction='mean')
        optimizer.zero_grad()
        action_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        scheduler.step()
        log.append([action_loss.detach().cpu().item(), model.embed_timestep.weight.grad.clone(), scheduler.get_last_lr()[0]])
    # evaluation: the first steps of an episode, actions predicted from a zero-filled context
    model.eval()
    rng = np.random.default_rng(7)
    eval_batch_size, max_test_ep_len, state_dim = 1, 4, 4
    timesteps = torch.arange(start=0, end=max_test_ep_len, step=1)
    timesteps = timesteps.repeat(eval_batch_size, 1)
    actions = torch.zeros((eval_batch_size, max_test_ep_len, act_dim), dtype=torch.float32)
    states = torch.zeros((eval_batch_size, max_test_ep_len, state_dim), dtype=torch.float32)
    rewards_to_go = torch.zeros((eval_batch_size, max_test_ep_len, 1), dtype=torch.float32)
    running_rtg = 1.0
    taken = []
    with torch.no_grad():
        for t in range(max_test_ep_len):
            states[0, t] = torch.from_numpy(rng.standard_normal(4).astype(np.float32))
            running_rtg = running_rtg - 0.1
            rewards_to_go[0, t] = running_rtg
            _, act_preds, _ = model.forward(timesteps[:, :t + 1], states[:, :t + 1], actions[:, :t + 1], rewards_to_go[:, :t + 1])
            act = act_preds[0, -1].detach()
            actions[0, t] = act
            taken.append(act)
    # the key projections' biases get a zero gradient in exact arithmetic (softmax is unchanged by a constant added
    # to a query's scores), so AdamW steps them by the sign of rounding noise: returned apart, compared loosely
    weights = {k: v for k, v in model.state_dict().items() if "k_net.bias" not in k}
    key_biases = torch.stack([v for k, v in model.state_dict().items() if "k_net.bias" in k])
    return log, weights, torch.stack(taken), key_biases


def test_decision_transformer():
    ours, theirs = run_both(decision_transformer, weights_of(make_decision_transformer), compare=False)
    if theirs is not None:
        assert_same(ours[:3], theirs[:3], 1e-4, 1e-5)
        np.testing.assert_allclose(ours[3], theirs[3], rtol=0, atol=4e-3)  # (4 AdamW steps of 1e-3: noise's sign)
    lrs = [row[2] for row in ours[0]]
    np.testing.assert_allclose(lrs, [2e-3 / 3, 1e-3, 1e-3, 1e-3], rtol=1e-12)
    # the timestep embedding only gets gradients at the timesteps in the batch
    used = set(dt_trajectories(0)[0].ravel())
    grad = ours[0][0][1]
    assert all((np.abs(grad[t]).sum() > 0) == (t in used) for t in range(64))
    assert np.all(np.abs(ours[2]) <= 1)


# ----------------------------------------------------------------------------------------------
# MuZero (werner-duvaud/muzero-general): support transforms, unrolled dynamics, scaled gradients
# ----------------------------------------------------------------------------------------------


def support_to_scalar(torch, logits, support_size):
    """Transform a categorical representation to a scalar. See paper appendix Network Architecture"""
    # Decode to a scalar
    probabilities = torch.softmax(logits, dim=1)
    support = (
        torch.tensor([x for x in range(-support_size, support_size + 1)])
        .expand(probabilities.shape)
        .float()
        .to(device=probabilities.device)
    )
    x = torch.sum(support * probabilities, dim=1, keepdim=True)
    # Invert the scaling (defined in https://arxiv.org/abs/1805.11593)
    x = torch.sign(x) * (
        ((torch.sqrt(1 + 4 * 0.001 * (torch.abs(x) + 1 + 0.001)) - 1) / (2 * 0.001))
        ** 2
        - 1
    )
    return x


def scalar_to_support(torch, x, support_size):
    """Transform a scalar to a categorical representation with (2 * support_size + 1) categories"""
    # Reduce the scale (defined in https://arxiv.org/abs/1805.11593)
    x = torch.sign(x) * (torch.sqrt(torch.abs(x) + 1) - 1) + 0.001 * x
    # Encode on a vector
    x = torch.clamp(x, -support_size, support_size)
    floor = x.floor()
    prob = x - floor
    logits = torch.zeros(x.shape[0], x.shape[1], 2 * support_size + 1).to(x.device)
    logits.scatter_(2, (floor + support_size).long().unsqueeze(-1), (1 - prob).unsqueeze(-1))
    indexes = floor + support_size + 1
    prob = prob.masked_fill_(2 * support_size < indexes, 0.0)
    indexes = indexes.masked_fill_(2 * support_size < indexes, 0.0)
    logits.scatter_(2, indexes.long().unsqueeze(-1), prob.unsqueeze(-1))
    return logits


def make_muzero(m, observation_size=4, action_space_size=3, encoding_size=6, support_size=5, hidden=16):
    torch, nn = m.torch, m.nn

    def mlp_(input_size, layer_sizes, output_size, output_activation=torch.nn.Identity, activation=torch.nn.ELU):
        sizes = [input_size] + layer_sizes + [output_size]
        layers = []
        for i in range(len(sizes) - 1):
            act = activation if i < len(sizes) - 2 else output_activation
            layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), act()]
        return torch.nn.Sequential(*layers)

    def normalize_encoded_state(encoded_state):
        min_encoded_state = encoded_state.min(1, keepdim=True)[0]
        max_encoded_state = encoded_state.max(1, keepdim=True)[0]
        scale_encoded_state = max_encoded_state - min_encoded_state
        scale_encoded_state[scale_encoded_state < 1e-5] += 1e-5
        encoded_state_normalized = (encoded_state - min_encoded_state) / scale_encoded_state
        return encoded_state_normalized

    class MuZeroFullyConnectedNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.action_space_size = action_space_size
            self.full_support_size = 2 * support_size + 1
            self.representation_network = mlp_(observation_size, [hidden], encoding_size)
            self.dynamics_encoded_state_network = mlp_(encoding_size + self.action_space_size, [hidden], encoding_size)
            self.dynamics_reward_network = mlp_(encoding_size, [hidden], self.full_support_size)
            self.prediction_policy_network = mlp_(encoding_size, [], self.action_space_size)
            self.prediction_value_network = mlp_(encoding_size, [], self.full_support_size)

        def prediction(self, encoded_state):
            policy_logits = self.prediction_policy_network(encoded_state)
            value = self.prediction_value_network(encoded_state)
            return policy_logits, value

        def representation(self, observation):
            encoded_state = self.representation_network(observation.view(observation.shape[0], -1))
            return normalize_encoded_state(encoded_state)

        def dynamics(self, encoded_state, action):
            # Stack encoded_state with a game specific one hot encoded action (See paper appendix Network Architecture)
            action_one_hot = torch.zeros((action.shape[0], self.action_space_size)).to(action.device).float()
            action_one_hot.scatter_(1, action.long(), 1.0)
            x = torch.cat((encoded_state, action_one_hot), dim=1)
            next_encoded_state = self.dynamics_encoded_state_network(x)
            reward = self.dynamics_reward_network(next_encoded_state)
            return normalize_encoded_state(next_encoded_state), reward

        def initial_inference(self, observation):
            encoded_state = self.representation(observation)
            policy_logits, value = self.prediction(encoded_state)
            # reward equal to 0 for consistency
            reward = torch.log(
                (torch.zeros(1, self.full_support_size)
                 .scatter(1, torch.tensor([[self.full_support_size // 2]]).long(), 1.0)
                 .repeat(len(observation), 1).to(observation.device)))
            return value, reward, policy_logits, encoded_state

        def recurrent_inference(self, encoded_state, action):
            next_encoded_state, reward = self.dynamics(encoded_state, action)
            policy_logits, value = self.prediction(next_encoded_state)
            return value, reward, policy_logits, next_encoded_state

    return MuZeroFullyConnectedNetwork()


def muzero_batch(seed, batch=8, unroll=3, actions=3):
    rng = np.random.default_rng(seed)
    observation_batch = rng.standard_normal((batch, 4)).astype(np.float32)
    action_batch = rng.integers(0, actions, (batch, unroll + 1, 1))
    target_value = (5 * rng.standard_normal((batch, unroll + 1))).astype(np.float32)
    target_reward = rng.standard_normal((batch, unroll + 1)).astype(np.float32)
    target_reward[:, 0] = 0
    target_policy = rng.dirichlet(np.ones(actions), (batch, unroll + 1)).astype(np.float32)
    weight_batch = rng.uniform(0.5, 1.0, batch).astype(np.float32)
    gradient_scale_batch = rng.integers(1, unroll + 1, (batch, unroll + 1)).astype(np.float32)
    return observation_batch, action_batch, target_value, target_reward, target_policy, weight_batch, gradient_scale_batch


def muzero_loss_function(torch, value, reward, policy_logits, target_value, target_reward, target_policy):
    # Cross-entropy seems to have a better convergence than MSE
    value_loss = (-target_value * torch.nn.LogSoftmax(dim=1)(value)).sum(1)
    reward_loss = (-target_reward * torch.nn.LogSoftmax(dim=1)(reward)).sum(1)
    policy_loss = (-target_policy * torch.nn.LogSoftmax(dim=1)(policy_logits)).sum(1)
    return value_loss, reward_loss, policy_loss


def muzero_update_weights(m, weights, steps=2, support_size=5, value_loss_weight=0.25, PER_alpha=0.5):
    torch = m.torch
    model = load(m, make_muzero(m), weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    log = []
    for step in range(steps):
        (observation_batch, action_batch, target_value, target_reward, target_policy, weight_batch,
         gradient_scale_batch) = muzero_batch(step)
        target_value_scalar = np.array(target_value, dtype="float32")
        priorities = np.zeros_like(target_value_scalar)
        weight_batch = torch.tensor(weight_batch.copy()).float()
        observation_batch = torch.tensor(np.array(observation_batch)).float()
        action_batch = torch.tensor(action_batch).long()
        target_value = torch.tensor(target_value).float()
        target_reward = torch.tensor(target_reward).float()
        target_policy = torch.tensor(target_policy).float()
        gradient_scale_batch = torch.tensor(gradient_scale_batch).float()
        target_value = scalar_to_support(torch, target_value, support_size)
        target_reward = scalar_to_support(torch, target_reward, support_size)
        ## Generate predictions
        value, reward, policy_logits, hidden_state = model.initial_inference(observation_batch)
        predictions = [(value, reward, policy_logits)]
        for i in range(1, action_batch.shape[1]):
            value, reward, policy_logits, hidden_state = model.recurrent_inference(hidden_state, action_batch[:, i])
            # Scale the gradient at the start of the dynamics function (See paper appendix Training)
            hidden_state.register_hook(lambda grad: grad * 0.5)
            predictions.append((value, reward, policy_logits))
        ## Compute losses
        value_loss, reward_loss, policy_loss = (0, 0, 0)
        value, reward, policy_logits = predictions[0]
        # Ignore reward loss for the first batch step
        current_value_loss, _, current_policy_loss = muzero_loss_function(
            torch, value.squeeze(-1), reward.squeeze(-1), policy_logits, target_value[:, 0], target_reward[:, 0], target_policy[:, 0])
        value_loss += current_value_loss
        policy_loss += current_policy_loss
        # Compute priorities for the prioritized replay (See paper appendix Training)
        pred_value_scalar = support_to_scalar(torch, value, support_size).detach().cpu().numpy().squeeze()
        priorities[:, 0] = np.abs(pred_value_scalar - target_value_scalar[:, 0]) ** PER_alpha
        for i in range(1, len(predictions)):
            value, reward, policy_logits = predictions[i]
            current_value_loss, current_reward_loss, current_policy_loss = muzero_loss_function(
                torch, value.squeeze(-1), reward.squeeze(-1), policy_logits, target_value[:, i], target_reward[:, i], target_policy[:, i])
            # Scale gradient by the number of unroll steps (See paper appendix Training)
            current_value_loss.register_hook(lambda grad: grad / gradient_scale_batch[:, i])
            current_reward_loss.register_hook(lambda grad: grad / gradient_scale_batch[:, i])
            current_policy_loss.register_hook(lambda grad: grad / gradient_scale_batch[:, i])
            value_loss += current_value_loss
            reward_loss += current_reward_loss
            policy_loss += current_policy_loss
            pred_value_scalar = support_to_scalar(torch, value, support_size).detach().cpu().numpy().squeeze()
            priorities[:, i] = np.abs(pred_value_scalar - target_value_scalar[:, i]) ** PER_alpha
        # Scale the value loss, paper recommends by 0.25 (See paper appendix Reanalyze)
        loss = value_loss * value_loss_weight + reward_loss + policy_loss
        # Correct PER bias by using importance-sampling (IS) weights
        loss *= weight_batch
        # Mean over batch dimension (pseudocode do a sum)
        loss = loss.mean()
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad.clone() for p in model.representation_network.parameters()]
        optimizer.step()
        log.append([loss, value_loss.mean(), reward_loss.mean(), policy_loss.mean(), priorities, grads])
    return log, model.state_dict()


def test_muzero_update_weights():
    ours, _ = run_both(muzero_update_weights, weights_of(make_muzero), rtol=1e-4, atol=1e-5)
    assert ours[0][0][4].shape == (8, 4) and np.all(ours[0][0][4] >= 0)


def muzero_support(m, support_size=10):
    torch = m.torch
    x = torch.tensor([[-150.0, -3.7, -0.2, 0.0], [0.5, 7.25, 99.0, 1000.0]])
    support = scalar_to_support(torch, x, support_size)
    # the two-hot encoding decodes back to the scalar (support_to_scalar takes logits: log of the probabilities)
    decoded = support_to_scalar(torch, torch.log(support.view(-1, 2 * support_size + 1) + 1e-30), support_size)
    logits = torch.randn(3, 2 * support_size + 1, generator=torch.Generator().manual_seed(0), requires_grad=True)
    value = support_to_scalar(torch, logits, support_size)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    return support, decoded.view(2, 4), value, grad


def test_muzero_support_transforms():
    support, decoded, value, grad = run_both(muzero_support, rtol=1e-5, atol=1e-5)[0]
    x = np.array([[-150.0, -3.7, -0.2, 0.0], [0.5, 7.25, 99.0, 1000.0]])
    np.testing.assert_allclose(support.sum(-1), 1.0, rtol=1e-6)
    h = np.sign(x) * (np.sqrt(np.abs(x) + 1) - 1) + 0.001 * x
    np.testing.assert_allclose((support * np.arange(-10, 11)).sum(-1), np.clip(h, -10, 10), rtol=1e-5, atol=1e-6)
    inside = np.abs(h) < 10
    np.testing.assert_allclose(decoded[inside], x[inside], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# IMPALA's V-trace (facebookresearch/torchbeast)
# ----------------------------------------------------------------------------------------------


VTraceFromLogitsReturns = namedtuple("VTraceFromLogitsReturns", ["vs", "pg_advantages", "log_rhos", "behavior_action_log_probs", "target_action_log_probs"])
VTraceReturns = namedtuple("VTraceReturns", "vs pg_advantages")


def vtrace_module(torch, F):
    def action_log_probs(policy_logits, actions):
        return -F.nll_loss(
            F.log_softmax(torch.flatten(policy_logits, 0, -2), dim=-1),
            torch.flatten(actions),
            reduction="none",
        ).view_as(actions)

    def from_logits(behavior_policy_logits, target_policy_logits, actions, discounts, rewards, values, bootstrap_value,
                    clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0):
        """V-trace for softmax policies."""
        target_action_log_probs = action_log_probs(target_policy_logits, actions)
        behavior_action_log_probs = action_log_probs(behavior_policy_logits, actions)
        log_rhos = target_action_log_probs - behavior_action_log_probs
        vtrace_returns = from_importance_weights(
            log_rhos=log_rhos, discounts=discounts, rewards=rewards, values=values, bootstrap_value=bootstrap_value,
            clip_rho_threshold=clip_rho_threshold, clip_pg_rho_threshold=clip_pg_rho_threshold)
        return VTraceFromLogitsReturns(log_rhos=log_rhos, behavior_action_log_probs=behavior_action_log_probs,
                                       target_action_log_probs=target_action_log_probs, **vtrace_returns._asdict())

    @torch.no_grad()
    def from_importance_weights(log_rhos, discounts, rewards, values, bootstrap_value, clip_rho_threshold=1.0,
                                clip_pg_rho_threshold=1.0):
        """V-trace from log importance weights."""
        with torch.no_grad():
            rhos = torch.exp(log_rhos)
            if clip_rho_threshold is not None:
                clipped_rhos = torch.clamp(rhos, max=clip_rho_threshold)
            else:
                clipped_rhos = rhos
            cs = torch.clamp(rhos, max=1.0)
            # Append bootstrapped value to get [v1, ..., v_t+1]
            values_t_plus_1 = torch.cat([values[1:], torch.unsqueeze(bootstrap_value, 0)], dim=0)
            deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)
            acc = torch.zeros_like(bootstrap_value)
            result = []
            for t in range(discounts.shape[0] - 1, -1, -1):
                acc = deltas[t] + discounts[t] * cs[t] * acc
                result.append(acc)
            result.reverse()
            vs_minus_v_xs = torch.stack(result)
            # Add V(x_s) to get v_s.
            vs = torch.add(vs_minus_v_xs, values)
            # Advantage for policy gradient.
            broadcasted_bootstrap_values = torch.ones_like(vs[0]) * bootstrap_value
            vs_t_plus_1 = torch.cat([vs[1:], broadcasted_bootstrap_values.unsqueeze(0)], dim=0)
            if clip_pg_rho_threshold is not None:
                clipped_pg_rhos = torch.clamp(rhos, max=clip_pg_rho_threshold)
            else:
                clipped_pg_rhos = rhos
            pg_advantages = clipped_pg_rhos * (rewards + discounts * vs_t_plus_1 - values)
            # Make sure no gradients backpropagated through the returned values.
            return VTraceReturns(vs=vs, pg_advantages=pg_advantages)

    return from_logits, from_importance_weights


def make_impala_net(m, num_actions=4):
    nn, F, torch = m.nn, m.F, m.torch

    class AtariNet(nn.Module):
        def __init__(self):
            super(AtariNet, self).__init__()
            self.num_actions = num_actions
            self.fc = nn.Linear(6, 16)
            core_output_size = self.fc.out_features + num_actions + 1
            self.policy = nn.Linear(core_output_size, self.num_actions)
            self.baseline = nn.Linear(core_output_size, 1)

        def forward(self, inputs):
            x = inputs["frame"]  # [T, B, 6]
            T, B, *_ = x.shape
            x = torch.flatten(x, 0, 1)  # Merge time and batch.
            x = F.relu(self.fc(x))
            one_hot_last_action = F.one_hot(inputs["last_action"].view(T * B), self.num_actions).float()
            clipped_reward = torch.clamp(inputs["reward"], -1, 1).view(T * B, 1)
            core_output = torch.cat([x, clipped_reward, one_hot_last_action], dim=-1)
            policy_logits = self.policy(core_output)
            baseline = self.baseline(core_output)
            if self.training:
                action = torch.multinomial(F.softmax(policy_logits, dim=1), num_samples=1)
            else:
                action = torch.argmax(policy_logits, dim=1)
            policy_logits = policy_logits.view(T, B, self.num_actions)
            baseline = baseline.view(T, B)
            action = action.view(T, B)
            return dict(policy_logits=policy_logits, baseline=baseline, action=action)

    return AtariNet()


def impala_learn(m, weights, steps=3, T=6, B=3, discounting=0.99, baseline_cost=0.5, entropy_cost=0.01):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    from_logits, _ = vtrace_module(torch, F)
    model = load(m, make_impala_net(m), weights)

    def compute_baseline_loss(advantages):
        return 0.5 * torch.sum(advantages ** 2)

    def compute_entropy_loss(logits):
        """Return the entropy loss, i.e., the negative entropy of the policy."""
        policy = F.softmax(logits, dim=-1)
        log_policy = F.log_softmax(logits, dim=-1)
        return torch.sum(policy * log_policy)

    def compute_policy_gradient_loss(logits, actions, advantages):
        cross_entropy = F.nll_loss(F.log_softmax(torch.flatten(logits, 0, 1), dim=-1), target=torch.flatten(actions, 0, 1), reduction="none")
        cross_entropy = cross_entropy.view_as(advantages)
        return torch.sum(cross_entropy * advantages.detach())

    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01, momentum=0, eps=0.01, alpha=0.99)
    lr_lambda = lambda epoch: 1 - min(epoch * T * B, 100) / 100
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    log = []
    for step in range(steps):
        rng = np.random.default_rng(step)
        batch = {
            "frame": torch.from_numpy(rng.standard_normal((T + 1, B, 6)).astype(np.float32)),
            "last_action": torch.from_numpy(rng.integers(0, 4, (T + 1, B))),
            "reward": torch.from_numpy(rng.standard_normal((T + 1, B)).astype(np.float32) * 2),
            "done": torch.from_numpy(rng.uniform(size=(T + 1, B)) < 0.15),
            "action": torch.from_numpy(rng.integers(0, 4, (T + 1, B))),
            "policy_logits": torch.from_numpy(rng.standard_normal((T + 1, B, 4)).astype(np.float32)),
        }
        learner_outputs = model(batch)
        # Take final value function slice for bootstrapping.
        bootstrap_value = learner_outputs["baseline"][-1]
        # Move from obs[t] -> action[t] to action[t] -> obs[t].
        batch = {key: tensor[1:] for key, tensor in batch.items()}
        learner_outputs = {key: tensor[:-1] for key, tensor in learner_outputs.items()}
        rewards = batch["reward"]
        clipped_rewards = torch.clamp(rewards, -1, 1)
        discounts = (~batch["done"]).float() * discounting
        vtrace_returns = from_logits(
            behavior_policy_logits=batch["policy_logits"], target_policy_logits=learner_outputs["policy_logits"],
            actions=batch["action"], discounts=discounts, rewards=clipped_rewards,
            values=learner_outputs["baseline"], bootstrap_value=bootstrap_value)
        pg_loss = compute_policy_gradient_loss(learner_outputs["policy_logits"], batch["action"], vtrace_returns.pg_advantages)
        baseline_loss = baseline_cost * compute_baseline_loss(vtrace_returns.vs - learner_outputs["baseline"])
        entropy_loss = entropy_cost * compute_entropy_loss(learner_outputs["policy_logits"])
        total_loss = pg_loss + baseline_loss + entropy_loss
        optimizer.zero_grad()
        total_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 40.0)
        optimizer.step()
        scheduler.step()
        log.append([total_loss, pg_loss, baseline_loss, entropy_loss, vtrace_returns.vs, vtrace_returns.pg_advantages,
                    vtrace_returns.vs.requires_grad, vtrace_returns.log_rhos.requires_grad, learner_outputs["action"]])
    return log, model.state_dict()


def test_torchbeast_vtrace():
    ours, _ = run_both(impala_learn, weights_of(make_impala_net), rtol=1e-4, atol=1e-5)
    assert ours[0][0][6] is False and ours[0][0][7] is True


def test_vtrace_on_policy_is_n_step_td():
    """With behaviour = target policy (rho = 1) and no clipping binding, v_s is the discounted return bootstrapped
    at the end (Espeholt et al., remark 1)."""
    torch = OURS.torch
    _, from_importance_weights = vtrace_module(torch, OURS.F)
    rng = np.random.default_rng(0)
    rewards, values = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    bootstrap = rng.standard_normal(2)
    discounts = np.full((5, 2), 0.9)
    out = from_importance_weights(torch.zeros(5, 2, dtype=torch.float64), torch.tensor(discounts), torch.tensor(rewards),
                                  torch.tensor(values), torch.tensor(bootstrap))
    ret, expected = bootstrap.copy(), np.zeros((5, 2))
    for t in reversed(range(5)):
        ret = rewards[t] + 0.9 * ret
        expected[t] = ret
    np.testing.assert_allclose(out.vs.numpy(), expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# RND (jcwleo/random-network-distillation-pytorch): a frozen random target, a random update mask
# ----------------------------------------------------------------------------------------------


def make_rnd(m, input_size=6, output_size=8):
    nn, torch = m.nn, m.torch

    class RNDModel(nn.Module):
        def __init__(self):
            super(RNDModel, self).__init__()
            self.predictor = nn.Sequential(nn.Linear(input_size, 16), nn.LeakyReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, output_size))
            self.target = nn.Sequential(nn.Linear(input_size, 16), nn.LeakyReLU(), nn.Linear(16, output_size))
            for p in self.modules():
                if isinstance(p, nn.Linear):
                    torch.nn.init.orthogonal_(p.weight, np.sqrt(2))
                    p.bias.data.zero_()
            for param in self.target.parameters():
                param.requires_grad = False

        def forward(self, next_obs):
            target_feature = self.target(next_obs)
            predict_feature = self.predictor(next_obs)
            return predict_feature, target_feature

    return RNDModel()


class RunningMeanStd(object):
    def __init__(self, epsilon=1e-4, shape=()):
        self.mean = np.zeros(shape, 'float64')
        self.var = np.ones(shape, 'float64')
        self.count = epsilon

    def update(self, x):
        batch_mean = np.mean(x, axis=0)
        batch_var = np.var(x, axis=0)
        batch_count = x.shape[0]
        delta = batch_mean - self.mean
        tot_count = self.count + batch_count
        new_mean = self.mean + delta * batch_count / tot_count
        m_a = self.var * (self.count)
        m_b = batch_var * (batch_count)
        M2 = m_a + m_b + np.square(delta) * self.count * batch_count / (self.count + batch_count)
        self.mean, self.var, self.count = new_mean, M2 / (self.count + batch_count), batch_count + self.count


def rnd(m, weights, steps=3, update_proportion=0.25):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    rnd_model = load(m, make_rnd(m), weights)
    optimizer = torch.optim.Adam(list(rnd_model.predictor.parameters()), lr=1e-3)
    forward_mse = nn.MSELoss(reduction='none')
    reward_rms = RunningMeanStd()
    obs_rms = RunningMeanStd(shape=(1, 6))
    log = []
    for step in range(steps):
        next_obs = np.random.default_rng(step).standard_normal((16, 6)).astype(np.float32) * 3 + 1
        obs_rms.update(next_obs)
        next_obs_batch = torch.FloatTensor(((next_obs - obs_rms.mean) / np.sqrt(obs_rms.var)).clip(-5, 5))
        # intrinsic reward
        with torch.no_grad():
            target_next_feature = rnd_model.target(next_obs_batch)
            predict_next_feature = rnd_model.predictor(next_obs_batch)
            intrinsic_reward = (target_next_feature - predict_next_feature).pow(2).sum(1) / 2
        reward_rms.update(intrinsic_reward.data.cpu().numpy())
        intrinsic_reward = intrinsic_reward / np.sqrt(reward_rms.var)
        # the predictor's loss on a random proportion of the batch
        predict_next_state_feature, target_next_state_feature = rnd_model(next_obs_batch)
        forward_loss = forward_mse(predict_next_state_feature, target_next_state_feature.detach()).mean(-1)
        mask = torch.rand(len(forward_loss))
        mask = (mask < update_proportion).type(torch.FloatTensor)
        forward_loss = (forward_loss * mask).sum() / torch.max(mask.sum(), torch.Tensor([1]))
        optimizer.zero_grad()
        forward_loss.backward()
        optimizer.step()
        log.append([intrinsic_reward, forward_loss, mask, rnd_model.target[0].weight.grad is None])
    return log, rnd_model.state_dict()


def test_rnd():
    ours, _ = run_both(rnd, weights_of(make_rnd), rtol=1e-4, atol=1e-5)
    for intrinsic_reward, forward_loss, mask, untouched in ours[0]:
        assert forward_loss.shape == (1,) and untouched is True and set(np.unique(mask)) <= {0.0, 1.0}


# ----------------------------------------------------------------------------------------------
# cleanRL's SAC for discrete actions (Christodoulou 2019)
# ----------------------------------------------------------------------------------------------


def make_discrete_sac(m, obs_dim=4, n_actions=3):
    nn, F, torch = m.nn, m.F, m.torch
    from_dist = torch.distributions

    class SoftQNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(obs_dim, 16)
            self.fc_q = nn.Linear(16, n_actions)

        def forward(self, x):
            return self.fc_q(F.relu(self.fc1(x)))

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(obs_dim, 16)
            self.fc_logits = nn.Linear(16, n_actions)

        def forward(self, x):
            return self.fc_logits(F.relu(self.fc1(x)))

        def get_action(self, x):
            logits = self(x)
            policy_dist = from_dist.Categorical(logits=logits)
            action = policy_dist.sample()
            # Action probabilities for calculating the adapted soft-Q loss
            action_probs = policy_dist.probs
            log_prob = F.log_softmax(logits, dim=1)
            return action, log_prob, action_probs

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor, self.qf1, self.qf2 = Actor(), SoftQNetwork(), SoftQNetwork()

    return Nets()


def discrete_sac(m, weights, updates=4, gamma=0.99, tau=1.0, target_entropy_scale=0.89, target_network_frequency=2):
    torch, F, optim = m.torch, m.F, m.optim
    torch.manual_seed(0)
    nets = load(m, make_discrete_sac(m), weights)
    actor, qf1, qf2 = nets.actor, nets.qf1, nets.qf2
    qf1_target, qf2_target = make_discrete_sac(m).qf1, make_discrete_sac(m).qf2
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=3e-3, eps=1e-4)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=3e-3, eps=1e-4)
    target_entropy = -target_entropy_scale * torch.log(1 / torch.tensor(3))
    log_alpha = torch.zeros(1, requires_grad=True)
    alpha = log_alpha.exp().item()
    a_optimizer = optim.Adam([log_alpha], lr=3e-3, eps=1e-4)
    log = []
    for global_step in range(updates):
        observations, actions, rewards, next_observations, dones = (torch.tensor(a) for a in replay_batch(110 + global_step))
        # CRITIC training
        with torch.no_grad():
            _, next_state_log_pi, next_state_action_probs = actor.get_action(next_observations)
            qf1_next_target = qf1_target(next_observations)
            qf2_next_target = qf2_target(next_observations)
            # we can use the action probabilities instead of MC sampling to estimate the expectation
            min_qf_next_target = next_state_action_probs * (torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi)
            # adapt Q-target for discrete Q-function
            min_qf_next_target = min_qf_next_target.sum(dim=1)
            next_q_value = rewards.flatten() + (1 - dones.flatten()) * gamma * (min_qf_next_target)
        # use Q-values only for the taken actions
        qf1_values = qf1(observations)
        qf2_values = qf2(observations)
        qf1_a_values = qf1_values.gather(1, actions.long()).view(-1)
        qf2_a_values = qf2_values.gather(1, actions.long()).view(-1)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        qf_loss = qf1_loss + qf2_loss
        q_optimizer.zero_grad()
        qf_loss.backward()
        q_optimizer.step()
        # ACTOR training
        sampled, log_pi, action_probs = actor.get_action(observations)
        with torch.no_grad():
            qf1_values = qf1(observations)
            qf2_values = qf2(observations)
            min_qf_values = torch.min(qf1_values, qf2_values)
        # no need for reparameterization, the expectation can be calculated for discrete actions
        actor_loss = (action_probs * ((alpha * log_pi) - min_qf_values)).mean()
        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()
        # re-use action probabilities for temperature loss
        alpha_loss = (action_probs.detach() * (-log_alpha.exp() * (log_pi + target_entropy).detach())).mean()
        a_optimizer.zero_grad()
        alpha_loss.backward()
        a_optimizer.step()
        alpha = log_alpha.exp().item()
        if global_step % target_network_frequency == 0:
            for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
                target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
            for param, target_param in zip(qf2.parameters(), qf2_target.parameters()):
                target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
        log.append([qf_loss, actor_loss, alpha_loss, alpha, sampled])
    return log, nets.state_dict(), qf2_target.state_dict(), target_entropy


def test_cleanrl_discrete_sac():
    ours, _ = run_both(discrete_sac, weights_of(make_discrete_sac), rtol=1e-4, atol=1e-5)
    assert ours[-1] == pytest.approx(0.89 * np.log(3), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# sb3-contrib's MaskablePPO: a Categorical subclass that masks logits, SB3's PPO train loop
# ----------------------------------------------------------------------------------------------


def maskable_categorical_class(th):
    from_dist = th.distributions
    logits_to_probs = from_dist.utils.logits_to_probs

    class MaskableCategorical(from_dist.Categorical):
        """Modified PyTorch Categorical distribution with support for invalid action masking."""

        def __init__(self, probs=None, logits=None, validate_args=None, masks=None):
            self.masks = None
            super().__init__(probs, logits, validate_args)
            self._original_logits = self.logits
            self.apply_masking(masks)

        def apply_masking(self, masks):
            if masks is not None:
                device = self.logits.device
                self.masks = th.as_tensor(masks, dtype=th.bool, device=device).reshape(self.logits.shape)
                HUGE_NEG = th.tensor(-1e8, dtype=self.logits.dtype, device=device)
                logits = th.where(self.masks, self._original_logits, HUGE_NEG)
            else:
                self.masks = None
                logits = self._original_logits
            # Reinitialize with updated logits
            super().__init__(logits=logits)
            # self.probs may already be cached, so we must force an update
            self.probs = logits_to_probs(self.logits)

        def entropy(self):
            if self.masks is None:
                return super().entropy()
            # Highly negative logits don't result in 0 probs, so we must replace
            # with 0s to ensure 0 contribution to the distribution's entropy, since
            # masked actions possess no invariance.
            device = self.logits.device
            p_log_p = self.logits * self.probs
            p_log_p = th.where(self.masks, p_log_p, th.tensor(0.0, device=device))
            return -p_log_p.sum(-1)

    return MaskableCategorical


def make_maskable_policy(m, obs_dim=4, n_actions=5):
    nn = m.nn

    class ActorCriticPolicy(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp_extractor = nn.Sequential(nn.Linear(obs_dim, 16), nn.Tanh())
            self.action_net = nn.Linear(16, n_actions)
            self.value_net = nn.Linear(16, 1)

        def forward(self, obs):
            latent = self.mlp_extractor(obs)
            return self.action_net(latent), self.value_net(latent)

    return ActorCriticPolicy()


def polyak_update(th, params, target_params, tau):
    """stable-baselines3's: in place, without building a graph."""
    with th.no_grad():
        for param, target_param in zip(params, target_params):
            target_param.data.mul_(1 - tau)
            th.add(target_param.data, param.data, alpha=tau, out=target_param.data)


def explained_variance(y_pred, y_true):
    var_y = np.var(y_true)
    return np.nan if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y)


def maskable_ppo(m, weights, n_steps=16, n_envs=2, n_epochs=4, batch_size=8, gamma=0.99, gae_lambda=0.95,
                 clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, target_kl=0.002):
    th, F = m.torch, m.F
    th.manual_seed(0)
    MaskableCategorical = maskable_categorical_class(th)
    policy = load(m, make_maskable_policy(m), weights)
    ema_policy = copy.deepcopy(policy)
    optimizer = th.optim.Adam(policy.parameters(), lr=3e-3, eps=1e-5)
    rng = np.random.default_rng(0)
    # rollout (collected under no_grad from a random "environment" whose valid actions change each step)
    observations = rng.standard_normal((n_steps, n_envs, 4)).astype(np.float32)
    action_masks = rng.uniform(size=(n_steps, n_envs, 5)) < 0.6
    action_masks[..., 0] = True
    rewards = rng.standard_normal((n_steps, n_envs)).astype(np.float32)
    episode_starts = (rng.uniform(size=(n_steps, n_envs)) < 0.1).astype(np.float32)
    actions = np.zeros((n_steps, n_envs), dtype=np.int64)
    values = np.zeros((n_steps, n_envs), dtype=np.float32)
    log_probs = np.zeros((n_steps, n_envs), dtype=np.float32)
    with th.no_grad():
        for step in range(n_steps):
            logits, value = policy(th.as_tensor(observations[step]))
            distribution = MaskableCategorical(logits=logits, masks=action_masks[step])
            action = distribution.sample()
            actions[step] = action.numpy()
            values[step] = value.flatten().numpy()
            log_probs[step] = distribution.log_prob(action).numpy()
        last_values = policy(th.as_tensor(rng.standard_normal((n_envs, 4)).astype(np.float32)))[1].flatten().numpy()
    dones = rng.uniform(size=n_envs) < 0.2
    # compute_returns_and_advantage
    advantages = np.zeros((n_steps, n_envs), dtype=np.float32)
    last_gae_lam = 0
    for step in reversed(range(n_steps)):
        if step == n_steps - 1:
            next_non_terminal = 1.0 - dones.astype(np.float32)
            next_values = last_values
        else:
            next_non_terminal = 1.0 - episode_starts[step + 1]
            next_values = values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        last_gae_lam = delta + gamma * gae_lambda * next_non_terminal * last_gae_lam
        advantages[step] = last_gae_lam
    returns = advantages + values

    def swap_and_flatten(arr):
        shape = arr.shape
        if len(shape) < 3:
            shape = (*shape, 1)
        return arr.swapaxes(0, 1).reshape(shape[0] * shape[1], *shape[2:])

    flat = {k: swap_and_flatten(v) for k, v in dict(observations=observations, actions=actions, values=values,
                                                       log_probs=log_probs, advantages=advantages, returns=returns,
                                                       action_masks=action_masks).items()}
    entropy_losses, pg_losses, value_losses, clip_fractions, approx_kls = [], [], [], [], []
    continue_training = True
    epochs_run = 0
    for epoch in range(n_epochs):
        approx_kl_divs = []
        indices = rng.permutation(n_steps * n_envs)
        for start_idx in range(0, n_steps * n_envs, batch_size):
            batch_inds = indices[start_idx:start_idx + batch_size]
            rollout_data = {k: th.as_tensor(v[batch_inds]) for k, v in flat.items()}
            actions_b = rollout_data["actions"].long().flatten()
            logits, values_pred = policy(rollout_data["observations"])
            distribution = MaskableCategorical(logits=logits, masks=rollout_data["action_masks"])
            log_prob = distribution.log_prob(actions_b)
            entropy = distribution.entropy()
            values_pred = values_pred.flatten()
            advantages_b = rollout_data["advantages"].flatten()
            advantages_b = (advantages_b - advantages_b.mean()) / (advantages_b.std() + 1e-8)
            ratio = th.exp(log_prob - rollout_data["log_probs"].flatten())
            policy_loss_1 = advantages_b * ratio
            policy_loss_2 = advantages_b * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
            policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
            pg_losses.append(policy_loss.item())
            clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
            clip_fractions.append(clip_fraction)
            old_values = rollout_data["values"].flatten()
            values_pred = old_values + th.clamp(values_pred - old_values, -clip_range_vf, clip_range_vf)
            value_loss = F.mse_loss(rollout_data["returns"].flatten(), values_pred)
            value_losses.append(value_loss.item())
            entropy_loss = -th.mean(entropy)
            entropy_losses.append(entropy_loss.item())
            loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
            with th.no_grad():
                log_ratio = log_prob - rollout_data["log_probs"].flatten()
                approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                approx_kl_divs.append(approx_kl_div)
            if target_kl is not None and approx_kl_div > 1.5 * target_kl:
                continue_training = False
                break
            optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
            optimizer.step()
            polyak_update(th, policy.parameters(), ema_policy.parameters(), 0.1)
        approx_kls.append(np.mean(approx_kl_divs))
        epochs_run += 1
        if not continue_training:
            break
    ev = explained_variance(flat["values"].flatten(), flat["returns"].flatten())
    return (actions, log_probs, entropy_losses, pg_losses, value_losses, clip_fractions, approx_kls, epochs_run, ev,
            policy.state_dict(), ema_policy.state_dict())


def test_sb3_contrib_maskable_ppo():
    ours, _ = run_both(maskable_ppo, weights_of(make_maskable_policy), rtol=1e-4, atol=1e-5)
    actions = ours[0]
    rng = np.random.default_rng(0)
    rng.standard_normal((16, 2, 4))
    action_masks = rng.uniform(size=(16, 2, 5)) < 0.6
    action_masks[..., 0] = True
    assert np.all(np.take_along_axis(action_masks, actions[..., None], -1))  # no masked action was sampled
    assert ours[7] < 4  # the approximate KL stopped the epochs early


def test_maskable_categorical_by_hand():
    th = OURS.torch
    MaskableCategorical = maskable_categorical_class(th)
    logits = th.tensor([[0.5, 1.0, -0.3, 2.0]], requires_grad=True)
    masks = np.array([[True, False, True, False]])
    dist = MaskableCategorical(logits=logits, masks=masks)
    p = np.exp([0.5, -0.3]) / np.exp([0.5, -0.3]).sum()
    np.testing.assert_allclose(dist.probs.detach().numpy()[0], [p[0], 0, p[1], 0], atol=1e-7, rtol=1e-6)
    entropy = dist.entropy()
    assert entropy.item() == pytest.approx(-(p * np.log(p)).sum(), rel=1e-6)
    entropy.backward()
    # the masked logits reach the entropy only through the first normalisation (logits - logsumexp), whose
    # gradient there is analytically zero: rounding is all that is left
    assert abs(logits.grad[0, 1].item()) < 1e-6 and abs(logits.grad[0, 3].item()) < 1e-6
    dist.apply_masking(None)
    assert dist.masks is None and dist.probs[0, 3].item() == pytest.approx(np.exp(2) / np.exp([0.5, 1, -0.3, 2]).sum(), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# A batched cart-pole in torch (Brax / Isaac Gym style), differentiated through the rollout
# ----------------------------------------------------------------------------------------------


class TorchCartPole:
    """gym's CartPole dynamics on a batch of environments held as one tensor, auto-resetting done ones."""

    def __init__(self, torch, num_envs, generator):
        self.torch, self.num_envs, self.generator = torch, num_envs, generator
        self.gravity, self.masscart, self.masspole, self.length, self.tau = 9.8, 1.0, 0.1, 0.5, 0.02
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length
        self.theta_threshold_radians = 12 * 2 * math.pi / 360
        self.x_threshold = 2.4

    def reset(self):
        self.state = (torch_uniform := self.torch.rand(self.num_envs, 4, generator=self.generator)) * 0.1 - 0.05
        self.steps = self.torch.zeros(self.num_envs, dtype=self.torch.long)
        return self.state

    def step(self, force):
        torch = self.torch
        x, x_dot, theta, theta_dot = self.state.unbind(dim=1)
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot ** 2 * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta ** 2 / self.total_mass))
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        next_state = torch.stack([x, x_dot, theta, theta_dot], dim=1)
        self.steps += 1
        terminated = (x.abs() > self.x_threshold) | (theta.abs() > self.theta_threshold_radians)
        truncated = self.steps >= 25
        done = terminated | truncated
        reward = torch.ones_like(x) - 10 * theta ** 2 - x ** 2
        reward = torch.where(terminated, torch.zeros_like(reward), reward)
        fresh = torch.rand(self.num_envs, 4, generator=self.generator) * 0.1 - 0.05
        self.state = torch.where(done.unsqueeze(1), fresh, next_state)
        self.steps = torch.where(done, torch.zeros_like(self.steps), self.steps)
        return self.state, reward, done


def make_apg_policy(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1), nn.Tanh())


def analytic_policy_gradient(m, weights, iterations=3, horizon=40, num_envs=8, gamma=0.99):
    torch = m.torch
    generator = torch.Generator().manual_seed(3)
    policy = load(m, make_apg_policy(m), weights)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    env = TorchCartPole(torch, num_envs, generator)
    obs = env.reset()
    log = []
    for it in range(iterations):
        total, discount, dones = 0.0, 1.0, 0
        for t in range(horizon):
            force = 10.0 * policy(obs).squeeze(-1)
            obs, reward, done = env.step(force)
            total = total + discount * reward
            discount *= gamma
            dones += int(done.sum())
        loss = -total.mean() / horizon
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        obs = obs.detach()  # truncate the gradient between iterations
        env.state = env.state.detach()
        log.append([loss, grad_norm, dones, obs])
    return log, policy.state_dict()


def test_batched_torch_cartpole_analytic_policy_gradient():
    ours, _ = run_both(analytic_policy_gradient, weights_of(make_apg_policy), rtol=1e-4, atol=1e-5)
    assert sum(row[2] for row in ours[0]) > 0  # some environments were reset inside the differentiated rollout


# ----------------------------------------------------------------------------------------------
# Multi-agent: QMIX (oxwhirl/pymarl) with hypernetwork mixing and masked TD errors; MADDPG with gumbel_softmax
# ----------------------------------------------------------------------------------------------


def make_qmix(m, n_agents=3, state_dim=5, obs_dim=4, n_actions=4, embed_dim=8, hypernet_embed=16, rnn_hidden_dim=8):
    nn, F, th = m.nn, m.F, m.torch

    class RNNAgent(nn.Module):
        def __init__(self):
            super(RNNAgent, self).__init__()
            self.fc1 = nn.Linear(obs_dim + n_agents, rnn_hidden_dim)
            self.rnn = nn.GRUCell(rnn_hidden_dim, rnn_hidden_dim)
            self.fc2 = nn.Linear(rnn_hidden_dim, n_actions)

        def init_hidden(self):
            # make hidden states on same device as model
            return self.fc1.weight.new(1, rnn_hidden_dim).zero_()

        def forward(self, inputs, hidden_state):
            x = F.relu(self.fc1(inputs))
            h_in = hidden_state.reshape(-1, rnn_hidden_dim)
            h = self.rnn(x, h_in)
            q = self.fc2(h)
            return q, h

    class QMixer(nn.Module):
        def __init__(self):
            super(QMixer, self).__init__()
            self.n_agents, self.state_dim, self.embed_dim = n_agents, state_dim, embed_dim
            self.hyper_w_1 = nn.Sequential(nn.Linear(self.state_dim, hypernet_embed), nn.ReLU(),
                                           nn.Linear(hypernet_embed, self.embed_dim * self.n_agents))
            self.hyper_w_final = nn.Sequential(nn.Linear(self.state_dim, hypernet_embed), nn.ReLU(),
                                               nn.Linear(hypernet_embed, self.embed_dim))
            # State dependent bias for hidden layer
            self.hyper_b_1 = nn.Linear(self.state_dim, self.embed_dim)
            # V(s) instead of a bias for the last layers
            self.V = nn.Sequential(nn.Linear(self.state_dim, self.embed_dim), nn.ReLU(), nn.Linear(self.embed_dim, 1))

        def forward(self, agent_qs, states):
            bs = agent_qs.size(0)
            states = states.reshape(-1, self.state_dim)
            agent_qs = agent_qs.view(-1, 1, self.n_agents)
            # First layer
            w1 = th.abs(self.hyper_w_1(states))
            b1 = self.hyper_b_1(states)
            w1 = w1.view(-1, self.n_agents, self.embed_dim)
            b1 = b1.view(-1, 1, self.embed_dim)
            hidden = F.elu(th.bmm(agent_qs, w1) + b1)
            # Second layer
            w_final = th.abs(self.hyper_w_final(states))
            w_final = w_final.view(-1, self.embed_dim, 1)
            # State-dependent bias
            v = self.V(states).view(-1, 1, 1)
            # Compute final output
            y = th.bmm(hidden, w_final) + v
            # Reshape and return
            q_tot = y.view(bs, -1, 1)
            return q_tot

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.agent, self.mixer = RNNAgent(), QMixer()

    return Nets()


def qmix_batch(seed, bs=4, T=6, n_agents=3, n_actions=4):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((bs, T + 1, n_agents, 4)).astype(np.float32)
    state = rng.standard_normal((bs, T + 1, 5)).astype(np.float32)
    avail_actions = rng.uniform(size=(bs, T + 1, n_agents, n_actions)) < 0.7
    avail_actions[..., 0] = True
    actions = np.zeros((bs, T + 1, n_agents, 1), dtype=np.int64)
    for idx in np.ndindex(bs, T + 1, n_agents):
        actions[idx] = rng.choice(np.flatnonzero(avail_actions[idx]))
    reward = rng.standard_normal((bs, T + 1, 1)).astype(np.float32)
    lengths = rng.integers(3, T + 1, bs)
    filled = (np.arange(T + 1)[None, :] < lengths[:, None]).astype(np.float32)[..., None]
    terminated = np.zeros((bs, T + 1, 1), dtype=np.float32)
    terminated[np.arange(bs), lengths - 1] = 1
    return obs, state, avail_actions.astype(np.int64), actions, reward, filled, terminated


def qmix(m, weights, steps=3, gamma=0.99, n_agents=3, n_actions=4, grad_norm_clip=10):
    th = m.torch
    nets = load(m, make_qmix(m), weights)
    mac, mixer = nets.agent, nets.mixer
    target_mac, target_mixer = copy.deepcopy(mac), copy.deepcopy(mixer)
    params = list(mac.parameters()) + list(mixer.parameters())
    optimiser = th.optim.RMSprop(params=params, lr=5e-3, alpha=0.99, eps=1e-5)
    log = []
    for step in range(steps):
        obs, state, avail_actions, actions, reward, filled, terminated = (th.from_numpy(a) for a in qmix_batch(step))
        bs, max_seq_length = obs.shape[0], obs.shape[1]
        rewards = reward[:, :-1]
        actions = actions[:, :-1]
        terminated = terminated[:, :-1].float()
        mask = filled[:, :-1].float()
        mask[:, 1:] = mask[:, 1:] * (1 - terminated[:, :-1])

        def run(agent):
            hidden_states = agent.init_hidden().unsqueeze(0).expand(bs, n_agents, -1)
            outs = []
            for t in range(max_seq_length):
                agent_id = th.eye(n_agents).unsqueeze(0).expand(bs, -1, -1)
                inputs = th.cat([x.reshape(bs * n_agents, -1) for x in (obs[:, t], agent_id)], dim=1)
                agent_outs, hidden_states = agent(inputs, hidden_states)
                outs.append(agent_outs.view(bs, n_agents, -1))
            return th.stack(outs, dim=1)  # Concat over time

        mac_out = run(mac)
        # Pick the Q-Values for the actions taken by each agent
        chosen_action_qvals = th.gather(mac_out[:, :-1], dim=3, index=actions).squeeze(3)  # Remove the last dim
        with th.no_grad():
            target_mac_out = run(target_mac)[:, 1:]
        # Mask out unavailable actions
        target_mac_out[avail_actions[:, 1:] == 0] = -9999999
        # double Q: the greedy actions of the live network
        mac_out_detach = mac_out.clone().detach()
        mac_out_detach[avail_actions == 0] = -9999999
        cur_max_actions = mac_out_detach[:, 1:].max(dim=3, keepdim=True)[1]
        target_max_qvals = th.gather(target_mac_out, 3, cur_max_actions).squeeze(3)
        # Mix
        chosen_action_qvals = mixer(chosen_action_qvals, state[:, :-1])
        target_max_qvals = target_mixer(target_max_qvals, state[:, 1:])
        # Calculate 1-step Q-Learning targets
        targets = rewards + gamma * (1 - terminated) * target_max_qvals
        # Td-error
        td_error = (chosen_action_qvals - targets.detach())
        mask = mask.expand_as(td_error)
        # 0-out the targets that came from padded data
        masked_td_error = td_error * mask
        # Normal L2 loss, take mean over actual data
        loss = (masked_td_error ** 2).sum() / mask.sum()
        optimiser.zero_grad()
        loss.backward()
        grad_norm = th.nn.utils.clip_grad_norm_(params, grad_norm_clip)
        optimiser.step()
        mask_elems = mask.sum().item()
        log.append([loss, grad_norm, masked_td_error.abs().sum().item() / mask_elems,
                    (chosen_action_qvals * mask).sum().item() / (mask_elems * n_agents), cur_max_actions])
        if step == 1:
            target_mac.load_state_dict(mac.state_dict())
            target_mixer.load_state_dict(mixer.state_dict())
    return log, nets.state_dict()


def test_pymarl_qmix():
    ours, _ = run_both(qmix, weights_of(make_qmix), rtol=1e-4, atol=1e-5)
    avail = qmix_batch(0)[2]
    chosen = np.take_along_axis(avail[:, 1:], ours[0][0][4], axis=3)
    assert np.all(chosen == 1)  # greedy actions only among the available ones


def make_maddpg(m, n_agents=2, obs_dim=4, n_actions=3):
    nn, F, torch = m.nn, m.F, m.torch

    class MLPNetwork(nn.Module):
        def __init__(self, input_dim, out_dim, hidden_dim=16, nonlin=F.relu):
            super(MLPNetwork, self).__init__()
            self.in_fn = nn.BatchNorm1d(input_dim)
            self.in_fn.weight.data.fill_(1)
            self.in_fn.bias.data.fill_(0)
            self.fc1 = nn.Linear(input_dim, hidden_dim)
            self.fc2 = nn.Linear(hidden_dim, hidden_dim)
            self.fc3 = nn.Linear(hidden_dim, out_dim)
            self.nonlin = nonlin

        def forward(self, X):
            h1 = self.nonlin(self.fc1(self.in_fn(X)))
            h2 = self.nonlin(self.fc2(h1))
            return self.fc3(h2)

    class Agents(nn.Module):
        def __init__(self):
            super().__init__()
            self.policies = nn.ModuleList([MLPNetwork(obs_dim, n_actions) for _ in range(n_agents)])
            self.critics = nn.ModuleList([MLPNetwork(n_agents * (obs_dim + n_actions), 1) for _ in range(n_agents)])

    return Agents()


def maddpg(m, weights, gamma=0.95, tau=0.01, n_agents=2):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    agents = load(m, make_maddpg(m), weights)
    target = copy.deepcopy(agents)
    policy_optimizers = [torch.optim.Adam(p.parameters(), lr=1e-2) for p in agents.policies]
    critic_optimizers = [torch.optim.Adam(c.parameters(), lr=1e-2) for c in agents.critics]
    MSELoss = torch.nn.MSELoss()

    def onehot_from_logits(logits, eps=0.0):
        """Given batch of logits, return one-hot sample using epsilon greedy strategy (based on given epsilon)"""
        argmax_acs = (logits == logits.max(1, keepdim=True)[0]).float()
        return argmax_acs

    rng = np.random.default_rng(0)
    obs = [torch.from_numpy(rng.standard_normal((16, 4)).astype(np.float32)) for _ in range(n_agents)]
    next_obs = [torch.from_numpy(rng.standard_normal((16, 4)).astype(np.float32)) for _ in range(n_agents)]
    acs = [F.one_hot(torch.from_numpy(rng.integers(0, 3, 16)), 3).float() for _ in range(n_agents)]
    rews = [torch.from_numpy(rng.standard_normal(16).astype(np.float32)) for _ in range(n_agents)]
    dones = [torch.from_numpy((rng.uniform(size=16) < 0.1).astype(np.float32)) for _ in range(n_agents)]
    log = []
    for agent_i in range(n_agents):
        curr_agent_critic, curr_agent_policy = agents.critics[agent_i], agents.policies[agent_i]
        critic_optimizers[agent_i].zero_grad()
        all_trgt_acs = [onehot_from_logits(pi(nobs)) for pi, nobs in zip(target.policies, next_obs)]
        trgt_vf_in = torch.cat((*next_obs, *all_trgt_acs), dim=1)
        target_value = (rews[agent_i].view(-1, 1) + gamma * target.critics[agent_i](trgt_vf_in) * (1 - dones[agent_i].view(-1, 1)))
        vf_in = torch.cat((*obs, *acs), dim=1)
        actual_value = curr_agent_critic(vf_in)
        vf_loss = MSELoss(actual_value, target_value.detach())
        vf_loss.backward()
        torch.nn.utils.clip_grad_norm_(curr_agent_critic.parameters(), 0.5)
        critic_optimizers[agent_i].step()

        policy_optimizers[agent_i].zero_grad()
        curr_pol_out = curr_agent_policy(obs[agent_i])
        # Forward pass as if onehot (hard=True) but backprop through a differentiable
        # Gumbel-Softmax sample. The MADDPG paper uses the Gumbel-Softmax trick to backprop
        # through discrete categorical samples, but I'm not sure if that is
        # correct since it removes the assumption of a deterministic policy for
        # DDPG. Regardless, discrete policies don't seem to learn properly without it.
        curr_pol_vf_in = F.gumbel_softmax(curr_pol_out, hard=True)
        all_pol_acs = []
        for i, pi, ob in zip(range(n_agents), agents.policies, obs):
            if i == agent_i:
                all_pol_acs.append(curr_pol_vf_in)
            else:
                all_pol_acs.append(onehot_from_logits(pi(ob)))
        vf_in = torch.cat((*obs, *all_pol_acs), dim=1)
        pol_loss = -curr_agent_critic(vf_in).mean()
        pol_loss += (curr_pol_out ** 2).mean() * 1e-3
        pol_loss.backward()
        torch.nn.utils.clip_grad_norm_(curr_agent_policy.parameters(), 0.5)
        policy_optimizers[agent_i].step()
        log.append([vf_loss, pol_loss, curr_pol_vf_in, curr_agent_policy.fc1.weight.grad.clone()])
    for target_param, param in zip(target.parameters(), agents.parameters()):
        target_param.data.copy_(target_param.data * (1.0 - tau) + param.data * tau)
    return log, agents.state_dict(), target.state_dict()


def test_maddpg_gumbel_softmax():
    ours, _ = run_both(maddpg, weights_of(make_maddpg), rtol=1e-4, atol=1e-5)
    for row in ours[0]:
        assert np.all(row[2].sum(1) == 1) and set(np.unique(row[2])) == {0.0, 1.0}


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


# ----------------------------------------------------------------------------------------------
# nikhilbarhate99/PPO-PyTorch: a MultivariateNormal with a (1, A, A) covariance over a batch of means;
# Tianshou's PPO with dual clip and an Independent Normal whose sigma is a broadcast Parameter
# ----------------------------------------------------------------------------------------------


def make_ppo_mvn(m, state_dim=4, action_dim=2):
    nn = m.nn

    class ActorCritic(nn.Module):
        def __init__(self):
            super(ActorCritic, self).__init__()
            self.actor = nn.Sequential(nn.Linear(state_dim, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, action_dim), nn.Tanh())
            self.critic = nn.Sequential(nn.Linear(state_dim, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))

    return ActorCritic()


def ppo_mvn(m, weights, K_epochs=4, eps_clip=0.2, gamma=0.99, action_std_init=0.6, action_dim=2):
    torch, nn = m.torch, m.nn
    MultivariateNormal = torch.distributions.MultivariateNormal
    torch.manual_seed(0)
    policy = load(m, make_ppo_mvn(m), weights)
    policy_old = make_ppo_mvn(m)
    policy_old.load_state_dict(policy.state_dict())
    optimizer = torch.optim.Adam([{'params': policy.actor.parameters(), 'lr': 3e-4}, {'params': policy.critic.parameters(), 'lr': 1e-3}])
    MseLoss = nn.MSELoss()
    action_var = torch.full((action_dim,), action_std_init * action_std_init)

    def act(model, state):
        action_mean = model.actor(state)
        cov_mat = torch.diag(action_var).unsqueeze(dim=0)
        dist = MultivariateNormal(action_mean, cov_mat)
        action = dist.sample()
        action_logprob = dist.log_prob(action)
        state_val = model.critic(state)
        return action.detach(), action_logprob.detach(), state_val.detach()

    def evaluate(model, state, action):
        action_mean = model.actor(state)
        action_var_ = action_var.expand_as(action_mean)
        cov_mat = torch.diag_embed(action_var_)
        dist = MultivariateNormal(action_mean, cov_mat)
        action_logprobs = dist.log_prob(action)
        dist_entropy = dist.entropy()
        state_values = model.critic(state)
        return action_logprobs, state_values, dist_entropy

    rng = np.random.default_rng(0)
    states, actions, logprobs, state_values, rewards, is_terminals = [], [], [], [], [], []
    with torch.no_grad():
        for t in range(12):
            state = torch.FloatTensor(rng.standard_normal(4).astype(np.float32))
            action, action_logprob, state_val = act(policy_old, state)
            states.append(state); actions.append(action); logprobs.append(action_logprob); state_values.append(state_val)
            rewards.append(float(-np.sum(action.numpy() ** 2)))
            is_terminals.append(t % 5 == 4)
    # Monte Carlo estimate of returns
    returns = []
    discounted_reward = 0
    for reward, is_terminal in zip(reversed(rewards), reversed(is_terminals)):
        if is_terminal:
            discounted_reward = 0
        discounted_reward = reward + (gamma * discounted_reward)
        returns.insert(0, discounted_reward)
    # Normalizing the rewards
    returns = torch.tensor(returns, dtype=torch.float32)
    returns = (returns - returns.mean()) / (returns.std() + 1e-7)
    # convert list to tensor
    old_states = torch.squeeze(torch.stack(states, dim=0)).detach()
    old_actions = torch.squeeze(torch.stack(actions, dim=0)).detach()
    old_logprobs = torch.squeeze(torch.stack(logprobs, dim=0)).detach()
    old_state_values = torch.squeeze(torch.stack(state_values, dim=0)).detach()
    advantages = returns.detach() - old_state_values.detach()
    losses = []
    for _ in range(K_epochs):
        logprobs_, state_values_, dist_entropy = evaluate(policy, old_states, old_actions)
        state_values_ = torch.squeeze(state_values_)
        ratios = torch.exp(logprobs_ - old_logprobs.detach())
        surr1 = ratios * advantages
        surr2 = torch.clamp(ratios, 1 - eps_clip, 1 + eps_clip) * advantages
        loss = -torch.min(surr1, surr2) + 0.5 * MseLoss(state_values_, returns) - 0.01 * dist_entropy
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
        losses.append(loss)
    policy_old.load_state_dict(policy.state_dict())
    # decay the action std
    action_var = torch.full((action_dim,), 0.5 * 0.5)
    _, _, entropy_after = evaluate(policy, old_states, old_actions)
    return old_actions, old_logprobs, returns, losses, policy.state_dict(), entropy_after


def test_ppo_pytorch_multivariate_normal():
    ours, _ = run_both(ppo_mvn, weights_of(make_ppo_mvn), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours[5], 0.5 * 2 * (1 + np.log(2 * np.pi)) + 0.5 * np.log(0.25 ** 2), rtol=1e-5)


def make_tianshou_actor_critic(m, state_dim=4, action_dim=2):
    torch, nn = m.torch, m.nn

    class ActorProb(nn.Module):
        def __init__(self):
            super().__init__()
            self.preprocess = nn.Sequential(nn.Linear(state_dim, 16), nn.Tanh())
            self.mu = nn.Linear(16, action_dim)
            self.sigma_param = nn.Parameter(torch.zeros(action_dim, 1))
            self._max = 1.0

        def forward(self, obs, state=None):
            logits = self.preprocess(obs)
            mu = self.mu(logits)
            mu = self._max * torch.tanh(mu)
            shape = [1] * len(mu.shape)
            shape[1] = -1
            sigma = (self.sigma_param.view(shape) + torch.zeros_like(mu)).exp()
            return (mu, sigma), state

    class Critic(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(state_dim, 16), nn.Tanh(), nn.Linear(16, 1))

        def forward(self, obs):
            return self.net(obs)

    class ActorCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor, self.critic = ActorProb(), Critic()

    return ActorCritic()


def tianshou_ppo(m, weights, repeat=3, batch_size=8, eps_clip=0.2, dual_clip=3.0, vf_coef=0.5, ent_coef=0.01, max_grad_norm=0.5):
    torch, nn = m.torch, m.nn
    from_dist = torch.distributions
    torch.manual_seed(0)
    ac = load(m, make_tianshou_actor_critic(m), weights)
    actor, critic = ac.actor, ac.critic
    optim = torch.optim.Adam(ac.parameters(), lr=3e-3)

    def dist_fn(*logits):
        return from_dist.Independent(from_dist.Normal(*logits), 1)

    rng = np.random.default_rng(0)
    obs = torch.as_tensor(rng.standard_normal((24, 4)).astype(np.float32))
    with torch.no_grad():
        (mu, sigma), _ = actor(obs)
        dist = dist_fn(mu, sigma)
        act = dist.sample()
        logp_old = dist.log_prob(act)
        v_s = critic(obs).flatten()
    returns = v_s + torch.as_tensor(rng.standard_normal(24).astype(np.float32))
    adv = torch.as_tensor(rng.standard_normal(24).astype(np.float32))
    adv = (adv - adv.mean()) / adv.std()
    log = []
    for step in range(repeat):
        for idx in np.array_split(rng.permutation(24), 24 // batch_size):
            (mu, sigma), _ = actor(obs[idx])
            dist = dist_fn(mu, sigma)
            value = critic(obs[idx]).flatten()
            ratio = (dist.log_prob(act[idx]) - logp_old[idx]).exp().float()
            ratio = ratio.reshape(ratio.size(0), -1).transpose(0, 1)
            surr1 = ratio * adv[idx]
            surr2 = ratio.clamp(1.0 - eps_clip, 1.0 + eps_clip) * adv[idx]
            clip1 = torch.min(surr1, surr2)
            clip2 = torch.max(clip1, dual_clip * adv[idx])
            clip_loss = -torch.where(adv[idx] < 0, clip2, clip1).mean()
            v_clip = v_s[idx] + (value - v_s[idx]).clamp(-eps_clip, eps_clip)
            vf1 = (returns[idx] - value).pow(2)
            vf2 = (returns[idx] - v_clip).pow(2)
            vf_loss = torch.max(vf1, vf2).mean()
            ent_loss = dist.entropy().mean()
            loss = clip_loss + vf_coef * vf_loss - ent_coef * ent_loss
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(ac.parameters(), max_norm=max_grad_norm)
            optim.step()
            log.append([clip_loss.item(), vf_loss.item(), ent_loss.item()])
    return act, logp_old, log, ac.state_dict()


def test_tianshou_ppo_dual_clip():
    ours, _ = run_both(tianshou_ppo, weights_of(make_tianshou_actor_critic), rtol=1e-4, atol=1e-5)
    # the first minibatch sees sigma = exp(0) = 1: the entropy of a 2-d standard normal
    assert ours[2][0][2] == pytest.approx(1 + np.log(2 * np.pi), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# rl_games / IsaacGymEnvs: a torch.jit.script reward, a RunningMeanStd module with float64 buffers, a disabled
# GradScaler and autocast, neglogp by hand, the bounds loss (clamp_min / clamp_max), policy_kl
# ----------------------------------------------------------------------------------------------


def rl_games(m):
    torch, nn, F = m.torch, m.nn, m.F

    @torch.jit.script
    def compute_cartpole_reward(pole_angle, pole_vel, cart_vel, cart_pos, reset_dist, reset_buf, progress_buf, max_episode_length):
        # type: (Tensor, Tensor, Tensor, Tensor, float, Tensor, Tensor, float) -> Tuple[Tensor, Tensor]
        reward = 1.0 - pole_angle * pole_angle - 0.01 * torch.abs(cart_vel) - 0.005 * torch.abs(pole_vel)
        # adjust reward for reset agents
        reward = torch.where(torch.abs(cart_pos) > reset_dist, torch.ones_like(reward) * -2.0, reward)
        reward = torch.where(torch.abs(pole_angle) > 3.141592653589793 / 2, torch.ones_like(reward) * -2.0, reward)
        reset = torch.where(torch.abs(cart_pos) > reset_dist, torch.ones_like(reset_buf), reset_buf)
        reset = torch.where(torch.abs(pole_angle) > 3.141592653589793 / 2, torch.ones_like(reset_buf), reset)
        reset = torch.where(progress_buf >= max_episode_length - 1, torch.ones_like(reset_buf), reset)
        return reward, reset

    class RunningMeanStd(nn.Module):
        def __init__(self, insize, epsilon=1e-05, per_channel=False, norm_only=False):
            super(RunningMeanStd, self).__init__()
            self.insize = insize
            self.epsilon = epsilon
            self.norm_only = norm_only
            self.axis = [0]
            in_size = insize
            self.register_buffer("running_mean", torch.zeros(in_size, dtype=torch.float64))
            self.register_buffer("running_var", torch.ones(in_size, dtype=torch.float64))
            self.register_buffer("count", torch.ones((), dtype=torch.float64))

        def _update_mean_var_count_from_moments(self, mean, var, count, batch_mean, batch_var, batch_count):
            delta = batch_mean - mean
            tot_count = count + batch_count
            new_mean = mean + delta * batch_count / tot_count
            m_a = var * count
            m_b = batch_var * batch_count
            M2 = m_a + m_b + delta**2 * count * batch_count / tot_count
            new_var = M2 / tot_count
            new_count = tot_count
            return new_mean, new_var, new_count

        def forward(self, input, denorm=False, mask=None):
            if self.training:
                mean = input.mean(self.axis)  # along channel axis
                var = input.var(self.axis)
                self.running_mean, self.running_var, self.count = self._update_mean_var_count_from_moments(
                    self.running_mean, self.running_var, self.count, mean, var, input.size()[0])
            current_mean = self.running_mean
            current_var = self.running_var
            if denorm:
                y = torch.clamp(input, min=-5.0, max=5.0)
                y = torch.sqrt(current_var.float() + self.epsilon) * y + current_mean.float()
            else:
                if self.norm_only:
                    y = input / torch.sqrt(current_var.float() + self.epsilon)
                else:
                    y = (input - current_mean.float()) / torch.sqrt(current_var.float() + self.epsilon)
                    y = torch.clamp(y, min=-5.0, max=5.0)
            return y

    def policy_kl(p0_mu, p0_sigma, p1_mu, p1_sigma, reduce=True):
        c1 = torch.log(p1_sigma / p0_sigma + 1e-5)
        c2 = (p0_sigma**2 + (p1_mu - p0_mu)**2) / (2.0 * (p1_sigma**2 + 1e-5))
        c3 = -1.0 / 2.0
        kl = c1 + c2 + c3
        kl = kl.sum(dim=-1)  # returning mean between all steps of sum between all actions
        if reduce:
            return kl.mean()
        else:
            return kl

    def neglogp(x, mean, std, logstd):
        return 0.5 * (((x - mean) / std)**2).sum(dim=-1) + 0.5 * np.log(2.0 * np.pi) * x.size()[-1] + logstd.sum(dim=-1)

    def critic_loss(value_preds_batch, values, curr_e_clip, return_batch, clip_value):
        if clip_value:
            value_pred_clipped = value_preds_batch + (values - value_preds_batch).clamp(-curr_e_clip, curr_e_clip)
            value_losses = (values - return_batch)**2
            value_losses_clipped = (value_pred_clipped - return_batch)**2
            c_loss = torch.max(value_losses, value_losses_clipped)
        else:
            c_loss = (return_batch - values)**2
        return c_loss

    torch.manual_seed(0)
    pa = torch.tensor([0.1, 2.0, -0.3, 0.0]); pv = torch.tensor([0.5, 0.1, 0.0, 1.0])
    cv = torch.tensor([1.0, -1.0, 0.3, 0.2]); cp = torch.tensor([0.5, 3.1, 0.0, -2.5])
    reset_buf = torch.zeros(4, dtype=torch.long); progress_buf = torch.tensor([3, 5, 499, 10])
    reward, reset = compute_cartpole_reward(pa, pv, cv, cp, 3.0, reset_buf, progress_buf, 500.0)
    rms = RunningMeanStd((3,))
    obs = torch.linspace(-3, 6, 15).view(5, 3)
    y1 = rms(obs)
    y2 = rms(obs * 2)
    rms.eval()
    y3 = rms(obs, denorm=True)
    actor, critic = nn.Linear(3, 2), nn.Linear(3, 1)
    sigma = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam(list(actor.parameters()) + list(critic.parameters()) + [sigma], lr=1e-2, eps=1e-8)
    scaler = torch.cuda.amp.GradScaler(enabled=False)
    log = []
    old_mu, old_sigma, old_values, old_neglogp = None, None, None, None
    for epoch in range(3):
        with torch.cuda.amp.autocast(enabled=False):
            mu = actor(y1)
            logstd = sigma.expand_as(mu)
            std = torch.exp(logstd)
            values = critic(y1).squeeze(-1)
            act = torch.tensor([[0.1, 0.2]]).expand_as(mu)
            action_neglogp = neglogp(act, mu, std, logstd)
            if old_neglogp is None:
                old_mu, old_sigma, old_values, old_neglogp = mu.detach(), std.detach(), values.detach(), action_neglogp.detach() + 0.1
            ratio = torch.exp(old_neglogp - action_neglogp)
            advantage = torch.tensor([1.0, -1.0, 0.5, 0.2, -0.3])
            a_loss = torch.max(-advantage * ratio, -advantage * torch.clamp(ratio, 0.8, 1.2))
            c_loss = critic_loss(old_values, values, 0.2, torch.tensor([0.5, 0.1, -0.2, 0.0, 1.0]), True)
            soft_bound = 1.1
            mu_loss_high = torch.clamp_min(mu - soft_bound, 0.0)**2
            mu_loss_low = torch.clamp_max(mu + soft_bound, 0.0)**2
            b_loss = (mu_loss_low + mu_loss_high).sum(axis=-1)
            loss = a_loss.mean() + 0.5 * c_loss.mean() + 0.0001 * b_loss.mean()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            kl_dist = policy_kl(mu.detach(), std.detach(), old_mu, old_sigma)
        log.append([loss, kl_dist, action_neglogp])
    return (reward, reset, y1, y2, y3, rms.running_mean, rms.running_var, rms.count, log, actor.state_dict(),
            rms.running_mean.dtype == torch.float64)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_rl_games_idioms():
    ours, _ = run_both(rl_games, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours[1], [0, 1, 1, 0])
    np.testing.assert_allclose(ours[0][:2], [1 - 0.01 - 0.01 * 1 - 0.0025, -2.0], rtol=1e-6)
    assert ours[-1] is True and ours[7] == 11


# ----------------------------------------------------------------------------------------------
# R2D2: a recurrent Q network with stored LSTM states, burn-in, value rescaling h / h^-1 and n-step
# double-Q targets over padded sequences; NGU's episodic novelty by k nearest neighbours
# ----------------------------------------------------------------------------------------------


def value_rescale(torch, x, eps=1e-3):
    return torch.sign(x) * (torch.sqrt(torch.abs(x) + 1) - 1) + eps * x


def inverse_value_rescale(torch, x, eps=1e-3):
    return torch.sign(x) * (((torch.sqrt(1 + 4 * eps * (torch.abs(x) + 1 + eps)) - 1) / (2 * eps)) ** 2 - 1)


def make_r2d2(m, obs_dim=4, hidden=16, n_actions=3):
    torch, nn = m.torch, m.nn

    class R2D2Network(nn.Module):
        def __init__(self):
            super().__init__()
            self.feature = nn.Sequential(nn.Linear(obs_dim + n_actions + 1, hidden), nn.ReLU())
            self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
            self.adv = nn.Linear(hidden, n_actions)
            self.val = nn.Linear(hidden, 1)
            self.n_actions = n_actions

        def forward(self, obs, last_action, last_reward, hidden=None):
            x = torch.cat([obs, torch.nn.functional.one_hot(last_action, self.n_actions).float(), last_reward.unsqueeze(-1)], dim=-1)
            x = self.feature(x)
            x, hidden = self.lstm(x, hidden)
            adv, val = self.adv(x), self.val(x)
            q = val + adv - adv.mean(-1, keepdim=True)
            return q, hidden

    return R2D2Network()


def r2d2(m, weights, steps=3, burn_in=3, learning=6, n_step=2, gamma=0.997, B=4):
    torch, F = m.torch, m.F
    online = load(m, make_r2d2(m), weights)
    target = copy.deepcopy(online)
    optimizer = torch.optim.Adam(online.parameters(), lr=1e-3, eps=1e-3)
    seq_len = burn_in + learning + n_step
    log = []
    for step in range(steps):
        rng = np.random.default_rng(200 + step)
        obs = torch.from_numpy(rng.standard_normal((B, seq_len, 4)).astype(np.float32))
        actions = torch.from_numpy(rng.integers(0, 3, (B, seq_len)))
        last_action = torch.cat([torch.zeros(B, 1, dtype=torch.long), actions[:, :-1]], dim=1)
        rewards = torch.from_numpy(rng.standard_normal((B, seq_len)).astype(np.float32))
        last_reward = torch.cat([torch.zeros(B, 1), rewards[:, :-1]], dim=1)
        lengths = torch.from_numpy(rng.integers(burn_in + 2, seq_len + 1, B))
        mask = (torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)).float()
        h0 = torch.from_numpy(rng.standard_normal((1, B, 16)).astype(np.float32)) * 0.1
        c0 = torch.from_numpy(rng.standard_normal((1, B, 16)).astype(np.float32)) * 0.1
        priorities_weight = torch.from_numpy(rng.uniform(0.5, 1, B).astype(np.float32))
        # burn-in: unroll from the stored state without gradients
        with torch.no_grad():
            _, online_hidden = online(obs[:, :burn_in], last_action[:, :burn_in], last_reward[:, :burn_in], (h0, c0))
            _, target_hidden = target(obs[:, :burn_in], last_action[:, :burn_in], last_reward[:, :burn_in], (h0, c0))
        q, _ = online(obs[:, burn_in:], last_action[:, burn_in:], last_reward[:, burn_in:], online_hidden)
        with torch.no_grad():
            target_q, _ = target(obs[:, burn_in:], last_action[:, burn_in:], last_reward[:, burn_in:], target_hidden)
            greedy = q.detach().argmax(-1, keepdim=True)
            double_q = target_q.gather(-1, greedy).squeeze(-1)
            # n-step returns over the learning window, bootstrapped with h^-1 / h
            r = rewards[:, burn_in:]
            discounts = gamma ** torch.arange(n_step, dtype=torch.float32)
            n_step_reward = torch.stack([(r[:, t:t + n_step] * discounts).sum(-1) for t in range(learning)], dim=1)
            bootstrap = inverse_value_rescale(torch, double_q[:, n_step:n_step + learning])
            target_value = value_rescale(torch, n_step_reward + gamma ** n_step * bootstrap)
        chosen_q = q[:, :learning].gather(-1, actions[:, burn_in:burn_in + learning].unsqueeze(-1)).squeeze(-1)
        learn_mask = mask[:, burn_in + n_step:burn_in + n_step + learning]
        td_error = (chosen_q - target_value) * learn_mask
        loss = 0.5 * (td_error.pow(2).sum(-1) / learn_mask.sum(-1).clamp(min=1) * priorities_weight).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(online.parameters(), 40.0)
        optimizer.step()
        abs_td = td_error.detach().abs()
        new_priorities = 0.9 * abs_td.max(dim=1).values + 0.1 * abs_td.sum(1) / learn_mask.sum(1).clamp(min=1)
        log.append([loss, new_priorities, online.lstm.weight_hh_l0.grad.clone()])
        if step == 1:
            target.load_state_dict(online.state_dict())
    return log, online.state_dict()


def test_r2d2_burn_in_and_value_rescaling():
    run_both(r2d2, weights_of(make_r2d2), rtol=1e-4, atol=1e-6)
    torch = OURS.torch
    x = torch.tensor([-1000.0, -3.0, -0.5, 0.0, 0.25, 7.0, 12345.0], dtype=torch.float64)
    np.testing.assert_allclose(inverse_value_rescale(torch, value_rescale(torch, x)).numpy(), x.numpy(), rtol=1e-9, atol=1e-9)


def make_ngu_embedding(m):
    nn = m.nn

    class EmbeddingNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))
            self.inverse = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

        def forward(self, obs, next_obs):
            e, e_next = self.embed(obs), self.embed(next_obs)
            return self.inverse(torch_cat(e, e_next))

    torch_cat = lambda a, b: m.torch.cat([a, b], dim=-1)
    return EmbeddingNet()


def ngu_episodic(m, weights, k=5, kernel_epsilon=1e-4, cluster_distance=8e-3, c=1e-3, sm=8.0):
    torch, F = m.torch, m.F
    net = load(m, make_ngu_embedding(m), weights)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)
    rng = np.random.default_rng(0)
    obs = torch.from_numpy(rng.standard_normal((33, 4)).astype(np.float32))
    actions = torch.from_numpy(rng.integers(0, 3, 32))
    # the inverse-dynamics loss that trains the embedding
    logits = net(obs[:-1], obs[1:])
    loss = F.cross_entropy(logits, actions)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    # episodic memory: intrinsic reward from the k nearest embeddings seen so far this episode
    with torch.no_grad():
        embeddings = net.embed(obs)
    memory, rewards, running_mean = [], [], 0.0
    for t in range(len(embeddings)):
        controllable_state = embeddings[t]
        if len(memory) < k:
            rewards.append(torch.tensor(0.0))
            memory.append(controllable_state)
            continue
        mem = torch.stack(memory)
        dist = torch.cdist(controllable_state.unsqueeze(0), mem).squeeze(0) ** 2
        dist_k, idx = torch.topk(dist, k, largest=False)
        running_mean = running_mean + (dist_k.mean().item() - running_mean) / (t + 1)
        dist_k = dist_k / (running_mean + 1e-8)
        dist_k = torch.clamp(dist_k - cluster_distance, min=0.0)
        kernel = kernel_epsilon / (dist_k + kernel_epsilon)
        s = torch.sqrt(kernel.sum()) + c
        reward = torch.where(s > sm, torch.tensor(0.0), 1.0 / s)
        rewards.append(reward)
        memory.append(controllable_state)
    return loss, torch.stack(rewards), net.state_dict()


def test_ngu_episodic_novelty():
    ours, _ = run_both(ngu_episodic, weights_of(make_ngu_embedding), rtol=1e-4, atol=1e-6)
    rewards = ours[1]
    assert np.all(rewards[:5] == 0) and np.all(rewards[5:] > 0)


# ----------------------------------------------------------------------------------------------
# Offline RL from d3rlpy / the authors' code: BCQ's conditional VAE and perturbation actor, BEAR's MMD with a
# Lagrange multiplier; PlaNet's cross-entropy method over a learnt model (topk of returns)
# ----------------------------------------------------------------------------------------------


def make_bcq(m, state_dim=4, action_dim=2, latent_dim=4, max_action=1.0, phi=0.05):
    torch, nn, F = m.torch, m.nn, m.F

    class Actor(nn.Module):
        def __init__(self):
            super(Actor, self).__init__()
            self.l1 = nn.Linear(state_dim + action_dim, 16)
            self.l2 = nn.Linear(16, 16)
            self.l3 = nn.Linear(16, action_dim)
            self.max_action, self.phi = max_action, phi

        def forward(self, state, action):
            a = F.relu(self.l1(torch.cat([state, action], 1)))
            a = F.relu(self.l2(a))
            a = self.phi * self.max_action * torch.tanh(self.l3(a))
            return (a + action).clamp(-self.max_action, self.max_action)

    class VAE(nn.Module):
        def __init__(self):
            super(VAE, self).__init__()
            self.e1 = nn.Linear(state_dim + action_dim, 16)
            self.e2 = nn.Linear(16, 16)
            self.mean = nn.Linear(16, latent_dim)
            self.log_std = nn.Linear(16, latent_dim)
            self.d1 = nn.Linear(state_dim + latent_dim, 16)
            self.d2 = nn.Linear(16, 16)
            self.d3 = nn.Linear(16, action_dim)
            self.max_action, self.latent_dim = max_action, latent_dim

        def forward(self, state, action):
            z = F.relu(self.e1(torch.cat([state, action], 1)))
            z = F.relu(self.e2(z))
            mean = self.mean(z)
            # Clamped for numerical stability
            log_std = self.log_std(z).clamp(-4, 15)
            std = torch.exp(log_std)
            z = mean + std * torch.randn_like(std)
            u = self.decode(state, z)
            return u, mean, std

        def decode(self, state, z=None):
            # When sampling from the VAE, the latent vector is clipped to [-0.5, 0.5]
            if z is None:
                z = torch.randn((state.shape[0], self.latent_dim)).clamp(-0.5, 0.5)
            a = F.relu(self.d1(torch.cat([state, z], 1)))
            a = F.relu(self.d2(a))
            return self.max_action * torch.tanh(self.d3(a))

    class Critic(nn.Module):
        def __init__(self):
            super(Critic, self).__init__()
            self.l1 = nn.Linear(state_dim + action_dim, 16)
            self.l2 = nn.Linear(16, 1)
            self.l4 = nn.Linear(state_dim + action_dim, 16)
            self.l5 = nn.Linear(16, 1)

        def forward(self, state, action):
            q1 = self.l2(F.relu(self.l1(torch.cat([state, action], 1))))
            q2 = self.l5(F.relu(self.l4(torch.cat([state, action], 1))))
            return q1, q2

        def q1(self, state, action):
            return self.l2(F.relu(self.l1(torch.cat([state, action], 1))))

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor, self.vae, self.critic = Actor(), VAE(), Critic()

    return Nets()


def bcq(m, weights, iterations=3, discount=0.99, tau=0.005, lmbda=0.75):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    nets = load(m, make_bcq(m), weights)
    actor, vae, critic = nets.actor, nets.vae, nets.critic
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=1e-3)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    vae_optimizer = torch.optim.Adam(vae.parameters())
    log = []
    for it in range(iterations):
        state, action, reward, next_state, done = (torch.FloatTensor(a) for a in replay_batch(300 + it, n=8, act_dim=2))
        not_done = 1 - done
        # Variational Auto-Encoder Training
        recon, mean, std = vae(state, action)
        recon_loss = F.mse_loss(recon, action)
        KL_loss = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
        vae_loss = recon_loss + 0.5 * KL_loss
        vae_optimizer.zero_grad()
        vae_loss.backward()
        vae_optimizer.step()
        # Critic Training
        with torch.no_grad():
            # Duplicate next state 10 times
            next_state = torch.repeat_interleave(next_state, 10, 0)
            # Compute value of perturbed actions sampled from the VAE
            target_Q1, target_Q2 = critic_target(next_state, actor_target(next_state, vae.decode(next_state)))
            # Soft Clipped Double Q-learning
            target_Q = lmbda * torch.min(target_Q1, target_Q2) + (1. - lmbda) * torch.max(target_Q1, target_Q2)
            # Take max over each action sampled from the VAE
            target_Q = target_Q.reshape(8, -1).max(1)[0].reshape(-1, 1)
            target_Q = reward + not_done * discount * target_Q
        current_Q1, current_Q2 = critic(state, action)
        critic_loss = F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q)
        critic_optimizer.zero_grad()
        critic_loss.backward()
        critic_optimizer.step()
        # Pertubation Model / Action Training
        sampled_actions = vae.decode(state)
        perturbed_actions = actor(state, sampled_actions)
        # Update through DPG
        actor_loss = -critic.q1(state, perturbed_actions).mean()
        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()
        # Update Target Networks
        for param, target_param in zip(critic.parameters(), critic_target.parameters()):
            target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
        for param, target_param in zip(actor.parameters(), actor_target.parameters()):
            target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
        log.append([vae_loss, critic_loss, actor_loss])
    # select_action: the best of 100 perturbed VAE samples
    with torch.no_grad():
        state = torch.FloatTensor(replay_batch(310, n=1, act_dim=2)[0].reshape(1, -1)).repeat(100, 1)
        action = actor(state, vae.decode(state))
        q1 = critic.q1(state, action)
        ind = q1.argmax(0)
        selected = action[ind].cpu().data.numpy().flatten()
    return log, nets.state_dict(), selected


def test_bcq():
    ours, _ = run_both(bcq, weights_of(make_bcq), rtol=1e-4, atol=1e-5)
    assert ours[2].shape == (2,) and np.all(np.abs(ours[2]) <= 1)


def bear_mmd(m):
    torch = m.torch
    torch.manual_seed(0)

    def mmd_loss_laplacian(samples1, samples2, sigma=0.2):
        """MMD constraint with Laplacian kernel for support matching"""
        # sigma is set to 10.0 for hopper, cheetah and 20 for walker/ant
        diff_x_x = samples1.unsqueeze(2) - samples1.unsqueeze(1)  # B x N x N x d
        diff_x_x = torch.mean((-(diff_x_x.abs()).sum(-1) / (2.0 * sigma)).exp(), dim=(1, 2))
        diff_x_y = samples1.unsqueeze(2) - samples2.unsqueeze(1)
        diff_x_y = torch.mean((-(diff_x_y.abs()).sum(-1) / (2.0 * sigma)).exp(), dim=(1, 2))
        diff_y_y = samples2.unsqueeze(2) - samples2.unsqueeze(1)  # B x N x N x d
        diff_y_y = torch.mean((-(diff_y_y.abs()).sum(-1) / (2.0 * sigma)).exp(), dim=(1, 2))
        overall_loss = (diff_x_x + diff_y_y - 2.0 * diff_x_y + 1e-6).sqrt()
        return overall_loss

    def mmd_loss_gaussian(samples1, samples2, sigma=0.2):
        """MMD constraint with Gaussian Kernel support matching"""
        diff_x_x = samples1.unsqueeze(2) - samples1.unsqueeze(1)  # B x N x N x d
        diff_x_x = torch.mean((-(diff_x_x.pow(2)).sum(-1) / (2.0 * sigma)).exp(), dim=(1, 2))
        diff_x_y = samples1.unsqueeze(2) - samples2.unsqueeze(1)
        diff_x_y = torch.mean((-(diff_x_y.pow(2)).sum(-1) / (2.0 * sigma)).exp(), dim=(1, 2))
        diff_y_y = samples2.unsqueeze(2) - samples2.unsqueeze(1)  # B x N x N x d
        diff_y_y = torch.mean((-(diff_y_y.pow(2)).sum(-1) / (2.0 * sigma)).exp(), dim=(1, 2))
        overall_loss = (diff_x_x + diff_y_y - 2.0 * diff_x_y + 1e-6).sqrt()
        return overall_loss

    # in float64: the MMD is a small difference of kernel means near 1, whose float32 rounding it magnifies
    raw_actions = torch.randn(6, 5, 2, dtype=torch.float64, requires_grad=True)
    sampled_actions = torch.tanh(raw_actions)
    vae_actions = torch.rand(6, 5, 2, dtype=torch.float64) * 2 - 1
    log_lagrange2 = torch.randn((), dtype=torch.float64, requires_grad=True)
    lagrange2_opt = torch.optim.Adam([log_lagrange2], lr=1e-3)
    mmd_laplace = mmd_loss_laplacian(vae_actions, sampled_actions, sigma=20.0)
    mmd_gauss = mmd_loss_gaussian(vae_actions, sampled_actions, sigma=20.0)
    thresh = 0.05
    actor_loss = (-torch.tensor([1.0, 0.5, -0.2, 0.3, 0.0, 0.1]) + log_lagrange2.exp() * mmd_laplace).mean()
    actor_loss.backward(retain_graph=True)
    grad = raw_actions.grad.clone()
    lagrange_loss = (-(-torch.tensor([1.0]) + log_lagrange2.exp() * (mmd_laplace - thresh))).mean()
    lagrange2_opt.zero_grad()
    lagrange_loss.backward()
    lagrange2_opt.step()
    log_lagrange2.data.clamp_(min=-5.0, max=10.0)
    return mmd_laplace, mmd_gauss, grad, log_lagrange2


def test_bear_mmd():
    ours, _ = run_both(bear_mmd, rtol=1e-10, atol=1e-12)
    assert np.all(ours[0] > 0) and ours[0].dtype == np.float64


def make_planet_model(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4 + 2, 16), nn.Tanh(), nn.Linear(16, 4 + 1))


def planet_cem(m, weights, horizon=5, optimisation_iters=4, candidates=32, top_candidates=6, action_size=2, min_action=-1.0, max_action=1.0):
    torch = m.torch
    torch.manual_seed(0)
    model = load(m, make_planet_model(m), weights)
    state = torch.tensor([[0.1, -0.2, 0.3, 0.05], [0.0, 0.5, -0.5, 0.2]])
    B, H, Z = state.size(0), 4, horizon
    state = state.unsqueeze(dim=1).expand(B, candidates, H).reshape(-1, H)
    # Initialize factorized belief over action sequences q(a_t:t+H) ~ N(0, I)
    action_mean, action_std_dev = torch.zeros(horizon, B, 1, action_size), torch.ones(horizon, B, 1, action_size)
    returns_log = []
    for _ in range(optimisation_iters):
        # Evaluate J action sequences from the current belief (over entire sequence at once, batched over particles)
        actions = (action_mean + action_std_dev * torch.randn(horizon, B, candidates, action_size)).view(horizon, B * candidates, action_size)
        actions.clamp_(min=min_action, max=max_action)
        # Sample next states
        s, returns = state, torch.zeros(B * candidates)
        with torch.no_grad():
            for t in range(horizon):
                out = model(torch.cat([s, actions[t]], dim=1))
                s, r = s + 0.1 * out[:, :H], out[:, H]
                returns = returns + r
        # Re-fit belief to the K best action sequences
        _, topk = returns.reshape(B, candidates).topk(top_candidates, dim=1, largest=True, sorted=False)
        topk += candidates * torch.arange(0, B, dtype=torch.int64).unsqueeze(dim=1)  # Fix indices for unrolled actions
        best_actions = actions[:, topk.view(-1)].reshape(horizon, B, top_candidates, action_size)
        # Update belief with new means and standard deviations
        action_mean, action_std_dev = best_actions.mean(dim=2, keepdim=True), best_actions.std(dim=2, unbiased=False, keepdim=True)
        returns_log.append(returns.reshape(B, candidates).topk(top_candidates, dim=1).values)
    # Return first action mean µ_t
    return action_mean[0].squeeze(dim=1), action_std_dev, returns_log


def test_planet_cem():
    ours, _ = run_both(planet_cem, weights_of(make_planet_model), rtol=1e-4, atol=1e-6)
    assert ours[0].shape == (2, 2) and np.all(np.abs(ours[0]) <= 1)


# ----------------------------------------------------------------------------------------------
# ikostrikov/pytorch-a2c-ppo-acktr-gail: ACKTR's K-FAC optimiser (biases split into AddBias modules, forward
# pre-hooks and backward hooks collecting Kronecker factors, eigendecompositions, a KL-clipped SGD step), and
# PPO's minibatches from BatchSampler(SubsetRandomSampler)
# ----------------------------------------------------------------------------------------------


def kfac_module(torch, nn, optim, F, legacy_hooks=False):
    class AddBias(nn.Module):
        def __init__(self, bias):
            super(AddBias, self).__init__()
            self._bias = nn.Parameter(bias.unsqueeze(1))

        def forward(self, x):
            if x.dim() == 2:
                bias = self._bias.t().view(1, -1)
            else:
                bias = self._bias.t().view(1, -1, 1, 1)
            return x + bias

    def _extract_patches(x, kernel_size, stride, padding):
        if padding[0] + padding[1] > 0:
            x = F.pad(x, (padding[1], padding[1], padding[0], padding[0])).data  # Actually check dims
        x = x.unfold(2, kernel_size[0], stride[0])
        x = x.unfold(3, kernel_size[1], stride[1])
        x = x.transpose_(1, 2).transpose_(2, 3).contiguous()
        x = x.view(x.size(0), x.size(1), x.size(2), x.size(3) * x.size(4) * x.size(5))
        return x

    def compute_cov_a(a, classname, layer_info, fast_cnn):
        batch_size = a.size(0)
        if classname == 'Conv2d':
            if fast_cnn:
                a = _extract_patches(a, *layer_info)
                a = a.view(a.size(0), -1, a.size(-1))
                a = a.mean(1)
            else:
                a = _extract_patches(a, *layer_info)
                a = a.view(-1, a.size(-1)).div_(a.size(1)).div_(a.size(2))
        elif classname == 'AddBias':
            is_cuda = a.is_cuda
            a = torch.ones(a.size(0), 1)
            if is_cuda:
                a = a.cuda()
        return a.t() @ (a / batch_size)

    def compute_cov_g(g, classname, layer_info, fast_cnn):
        batch_size = g.size(0)
        if classname == 'Conv2d':
            if fast_cnn:
                g = g.view(g.size(0), g.size(1), -1)
                g = g.sum(-1)
            else:
                g = g.transpose(1, 2).transpose(2, 3).contiguous()
                g = g.view(-1, g.size(-1)).mul_(g.size(1)).mul_(g.size(2))
        elif classname == 'AddBias':
            g = g.view(g.size(0), g.size(1), -1)
            g = g.sum(-1)
        g_ = g * batch_size
        return g_.t() @ (g_ / g.size(0))

    def update_running_stat(aa, m_aa, momentum):
        # Do the trick to keep aa unchanged and not create any additional tensors
        m_aa *= momentum / (1 - momentum)
        m_aa += aa
        m_aa *= (1 - momentum)

    class SplitBias(nn.Module):
        def __init__(self, module):
            super(SplitBias, self).__init__()
            self.module = module
            self.add_bias = AddBias(module.bias.data)
            self.module.bias = None

        def forward(self, input):
            x = self.module(input)
            x = self.add_bias(x)
            return x

    class KFACOptimizer(optim.Optimizer):
        def __init__(self, model, lr=0.25, momentum=0.9, stat_decay=0.99, kl_clip=0.001, damping=1e-2,
                     weight_decay=0, fast_cnn=False, Ts=1, Tf=10):
            defaults = dict()

            def split_bias(module):
                for mname, child in module.named_children():
                    if hasattr(child, 'bias') and child.bias is not None:
                        module._modules[mname] = SplitBias(child)
                    else:
                        split_bias(child)

            split_bias(model)
            super(KFACOptimizer, self).__init__(model.parameters(), defaults)
            self.known_modules = {'Linear', 'Conv2d', 'AddBias'}
            self.modules = []
            self.grad_outputs = {}
            self.model = model
            self._prepare_model()
            self.steps = 0
            self.m_aa, self.m_gg = {}, {}
            self.Q_a, self.Q_g = {}, {}
            self.d_a, self.d_g = {}, {}
            self.momentum = momentum
            self.stat_decay = stat_decay
            self.lr = lr
            self.kl_clip = kl_clip
            self.damping = damping
            self.weight_decay = weight_decay
            self.fast_cnn = fast_cnn
            self.Ts = Ts
            self.Tf = Tf
            self.optim = optim.SGD(model.parameters(), lr=self.lr * (1 - self.momentum), momentum=self.momentum)

        def _save_input(self, module, input):
            if torch.is_grad_enabled() and self.steps % self.Ts == 0:
                classname = module.__class__.__name__
                layer_info = None
                if classname == 'Conv2d':
                    layer_info = (module.kernel_size, module.stride, module.padding)
                aa = compute_cov_a(input[0].data, classname, layer_info, self.fast_cnn)
                # Initialize buffers
                if self.steps == 0:
                    self.m_aa[module] = aa.clone()
                update_running_stat(aa, self.m_aa[module], self.stat_decay)

        def _save_grad_output(self, module, grad_input, grad_output):
            # Accumulate statistics for Fisher matrices
            if self.acc_stats:
                classname = module.__class__.__name__
                layer_info = None
                if classname == 'Conv2d':
                    layer_info = (module.kernel_size, module.stride, module.padding)
                gg = compute_cov_g(grad_output[0].data, classname, layer_info, self.fast_cnn)
                # Initialize buffers
                if self.steps == 0:
                    self.m_gg[module] = gg.clone()
                update_running_stat(gg, self.m_gg[module], self.stat_decay)

        def _prepare_model(self):
            for module in self.model.modules():
                classname = module.__class__.__name__
                if classname in self.known_modules:
                    assert not ((classname in ['Linear', 'Conv2d']) and module.bias is not None), \
                        "You must have a bias as a separate layer"
                    self.modules.append(module)
                    module.register_forward_pre_hook(self._save_input)
                    if legacy_hooks:  # the repository's own call (deprecated since)
                        module.register_backward_hook(self._save_grad_output)
                    else:
                        module.register_full_backward_hook(self._save_grad_output)

        def step(self):
            updates = {}
            for i, m in enumerate(self.modules):
                assert len(list(m.parameters())) == 1, "Can handle only one parameter at the moment"
                classname = m.__class__.__name__
                p = next(m.parameters())
                la = self.damping + self.weight_decay
                if self.steps % self.Tf == 0:
                    self.d_a[m], self.Q_a[m] = torch.linalg.eigh(self.m_aa[m], UPLO='U')
                    self.d_g[m], self.Q_g[m] = torch.linalg.eigh(self.m_gg[m], UPLO='U')
                    self.d_a[m].mul_((self.d_a[m] > 1e-6).float())
                    self.d_g[m].mul_((self.d_g[m] > 1e-6).float())
                if classname == 'Conv2d':
                    p_grad_mat = p.grad.data.view(p.grad.data.size(0), -1)
                else:
                    p_grad_mat = p.grad.data
                v1 = self.Q_g[m].t() @ p_grad_mat @ self.Q_a[m]
                v2 = v1 / (self.d_g[m].unsqueeze(1) * self.d_a[m].unsqueeze(0) + la)
                v = self.Q_g[m] @ v2 @ self.Q_a[m].t()
                v = v.view(p.grad.data.size())
                updates[p] = v
            vg_sum = 0
            for p in self.model.parameters():
                v = updates[p]
                vg_sum += (v * p.grad.data * self.lr * self.lr).sum()
            nu = min(1, math.sqrt(self.kl_clip / vg_sum))
            for p in self.model.parameters():
                v = updates[p]
                p.grad.data.copy_(v)
                p.grad.data.mul_(nu)
            self.optim.step()
            self.steps += 1

    return KFACOptimizer


def make_acktr_policy(m):
    nn = m.nn

    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU())
            self.fc = nn.Sequential(nn.Linear(4 * 3 * 3, 16), nn.Tanh())
            self.critic_linear = nn.Linear(16, 1)
            self.dist_linear = nn.Linear(16, 3)

        def forward(self, x):
            x = self.conv(x).flatten(1)
            x = self.fc(x)
            return self.critic_linear(x), self.dist_linear(x)

    return Policy()


def acktr(m, weights, updates=3, value_loss_coef=0.5, entropy_coef=0.01, fast_cnn=False, legacy_hooks=False):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    KFACOptimizer = kfac_module(torch, nn, m.optim, F, legacy_hooks)
    actor_critic = load(m, make_acktr_policy(m), weights)
    optimizer = KFACOptimizer(actor_critic, fast_cnn=fast_cnn, Tf=2)
    log = []
    for step in range(updates):
        rng = np.random.default_rng(400 + step)
        obs = torch.from_numpy(rng.standard_normal((10, 2, 6, 6)).astype(np.float32))
        actions = torch.from_numpy(rng.integers(0, 3, (10, 1)))
        returns = torch.from_numpy(rng.standard_normal((10, 1)).astype(np.float32))
        values, logits = actor_critic(obs)
        dist = torch.distributions.Categorical(logits=logits)
        action_log_probs = dist.log_prob(actions.squeeze(-1)).unsqueeze(-1)
        dist_entropy = dist.entropy().mean()
        advantages = returns - values
        value_loss = advantages.pow(2).mean()
        action_loss = -(advantages.detach() * action_log_probs).mean()
        if optimizer.steps % optimizer.Ts == 0:
            # Compute fisher, see Martens 2014
            actor_critic.zero_grad()
            pg_fisher_loss = -action_log_probs.mean()
            value_noise = torch.randn(values.size())
            sample_values = values + value_noise
            vf_fisher_loss = -(values - sample_values.detach()).pow(2).mean()
            fisher_loss = pg_fisher_loss + vf_fisher_loss
            optimizer.acc_stats = True
            fisher_loss.backward(retain_graph=True)
            optimizer.acc_stats = False
        optimizer.zero_grad()
        (value_loss * value_loss_coef + action_loss - dist_entropy * entropy_coef).backward()
        optimizer.step()
        log.append([value_loss, action_loss, dist_entropy])
    factors = [(optimizer.m_aa[mod], optimizer.m_gg[mod]) for mod in optimizer.modules]
    return log, factors, actor_critic.state_dict()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing", "ignore:Using a non-full backward hook", "ignore:register_backward_hook is deprecated")
@pytest.mark.parametrize("fast_cnn, legacy_hooks", [(False, False), (True, False), (False, True)])
def test_acktr_kfac(fast_cnn, legacy_hooks):
    ours, _ = run_both(acktr, weights_of(make_acktr_policy), rtol=1e-4, atol=1e-6, fast_cnn=fast_cnn,
                       legacy_hooks=legacy_hooks)
    assert len(ours[1]) == 8  # conv, its bias, fc, its bias, and both heads with theirs
    keys = set(ours[2])
    assert "conv.0.add_bias._bias" in keys and "conv.0.module.weight" in keys


def make_ikostrikov_policy(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3 + 1))


def ikostrikov_ppo(m, weights, num_steps=8, num_processes=3, ppo_epoch=3, num_mini_batch=4, clip_param=0.2):
    torch = m.torch
    BatchSampler, SubsetRandomSampler = m.data.BatchSampler, m.data.SubsetRandomSampler
    torch.manual_seed(0)
    actor_critic = load(m, make_ikostrikov_policy(m), weights)
    optimizer = torch.optim.Adam(actor_critic.parameters(), lr=7e-4, eps=1e-5)
    rng = np.random.default_rng(0)
    obs = torch.from_numpy(rng.standard_normal((num_steps + 1, num_processes, 4)).astype(np.float32))
    actions = torch.from_numpy(rng.integers(0, 3, (num_steps, num_processes, 1)))
    with torch.no_grad():
        out = actor_critic(obs[:-1].view(-1, 4))
        old_action_log_probs = torch.log_softmax(out[:, :3], -1).gather(1, actions.view(-1, 1)).view(num_steps, num_processes, 1)
        value_preds = out[:, 3:].view(num_steps, num_processes, 1)
    returns = value_preds + torch.from_numpy(rng.standard_normal((num_steps, num_processes, 1)).astype(np.float32))
    advantages = returns - value_preds
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-5)
    batch_size = num_processes * num_steps
    mini_batch_size = batch_size // num_mini_batch
    log = []
    for e in range(ppo_epoch):
        sampler = BatchSampler(SubsetRandomSampler(range(batch_size)), mini_batch_size, drop_last=True)
        for indices in sampler:
            obs_batch = obs[:-1].view(-1, *obs.size()[2:])[indices]
            actions_batch = actions.view(-1, actions.size(-1))[indices]
            value_preds_batch = value_preds.view(-1, 1)[indices]
            return_batch = returns.view(-1, 1)[indices]
            old_action_log_probs_batch = old_action_log_probs.view(-1, 1)[indices]
            adv_targ = advantages.view(-1, 1)[indices]
            out = actor_critic(obs_batch)
            dist = torch.distributions.Categorical(logits=out[:, :3])
            action_log_probs = dist.log_prob(actions_batch.squeeze(-1)).view(-1, 1)
            values = out[:, 3:]
            ratio = torch.exp(action_log_probs - old_action_log_probs_batch)
            surr1 = ratio * adv_targ
            surr2 = torch.clamp(ratio, 1.0 - clip_param, 1.0 + clip_param) * adv_targ
            action_loss = -torch.min(surr1, surr2).mean()
            value_pred_clipped = value_preds_batch + (values - value_preds_batch).clamp(-clip_param, clip_param)
            value_losses = (values - return_batch).pow(2)
            value_losses_clipped = (value_pred_clipped - return_batch).pow(2)
            value_loss = 0.5 * torch.max(value_losses, value_losses_clipped).mean()
            optimizer.zero_grad()
            (value_loss * 0.5 + action_loss - dist.entropy().mean() * 0.01).backward()
            torch.nn.utils.clip_grad_norm_(actor_critic.parameters(), 0.5)
            optimizer.step()
            log.append([list(indices), value_loss.item(), action_loss.item()])
    return log, actor_critic.state_dict()


def test_ikostrikov_ppo_batch_sampler():
    ours, _ = run_both(ikostrikov_ppo, weights_of(make_ikostrikov_policy), rtol=1e-4, atol=1e-6)
    for e in range(3):
        assert sorted(i for row in ours[0][4 * e:4 * e + 4] for i in row[0]) == list(range(24))


# ----------------------------------------------------------------------------------------------
# suragnair/alpha-zero-general: a convolutional policy/value net with batch norm, MCTS in NumPy querying it under
# no_grad in eval mode, self-play examples, and its training losses
# ----------------------------------------------------------------------------------------------


class TicTacToe:
    n = 3

    def getInitBoard(self):
        return np.zeros((3, 3), dtype=np.int64)

    def getActionSize(self):
        return 10  # nine squares and a pass

    def getNextState(self, board, player, action):
        if action == 9:
            return board, -player
        b = board.copy()
        b[action // 3, action % 3] = player
        return b, -player

    def getValidMoves(self, board, player):
        valids = np.zeros(10, dtype=np.int64)
        empty = (board.reshape(-1) == 0)
        valids[:9] = empty
        if not empty.any():
            valids[9] = 1
        return valids

    def getGameEnded(self, board, player):
        lines = list(board) + list(board.T) + [board.diagonal(), np.fliplr(board).diagonal()]
        for line in lines:
            if abs(line.sum()) == 3:
                return player * np.sign(line.sum())
        if not (board == 0).any():
            return 1e-4
        return 0

    def getCanonicalForm(self, board, player):
        return player * board

    def stringRepresentation(self, board):
        return board.tobytes()


def make_othello_nnet(m, board_x=3, board_y=3, action_size=10, num_channels=8, dropout=0.0):
    torch, nn, F = m.torch, m.nn, m.F

    class OthelloNNet(nn.Module):
        def __init__(self):
            self.board_x, self.board_y = board_x, board_y
            self.action_size = action_size
            super(OthelloNNet, self).__init__()
            self.conv1 = nn.Conv2d(1, num_channels, 3, stride=1, padding=1)
            self.conv2 = nn.Conv2d(num_channels, num_channels, 3, stride=1, padding=1)
            self.conv3 = nn.Conv2d(num_channels, num_channels, 3, stride=1, padding=1)
            self.bn1 = nn.BatchNorm2d(num_channels)
            self.bn2 = nn.BatchNorm2d(num_channels)
            self.bn3 = nn.BatchNorm2d(num_channels)
            self.fc1 = nn.Linear(num_channels * self.board_x * self.board_y, 32)
            self.fc_bn1 = nn.BatchNorm1d(32)
            self.fc3 = nn.Linear(32, self.action_size)
            self.fc4 = nn.Linear(32, 1)
            self.dropout = dropout

        def forward(self, s):
            s = s.view(-1, 1, self.board_x, self.board_y)  # batch_size x 1 x board_x x board_y
            s = F.relu(self.bn1(self.conv1(s)))  # batch_size x num_channels x board_x x board_y
            s = F.relu(self.bn2(self.conv2(s)))
            s = F.relu(self.bn3(self.conv3(s)))
            s = s.view(-1, num_channels * self.board_x * self.board_y)
            s = F.dropout(F.relu(self.fc_bn1(self.fc1(s))), p=self.dropout, training=self.training)
            pi = self.fc3(s)
            v = self.fc4(s)
            return F.log_softmax(pi, dim=1), torch.tanh(v)

    return OthelloNNet()


class MCTS:
    def __init__(self, game, predict, numMCTSSims=12, cpuct=1.0):
        self.game, self.predict = game, predict
        self.numMCTSSims, self.cpuct = numMCTSSims, cpuct
        self.Qsa, self.Nsa, self.Ns, self.Ps, self.Es, self.Vs = {}, {}, {}, {}, {}, {}

    def getActionProb(self, canonicalBoard, temp=1):
        for i in range(self.numMCTSSims):
            self.search(canonicalBoard)
        s = self.game.stringRepresentation(canonicalBoard)
        counts = [self.Nsa[(s, a)] if (s, a) in self.Nsa else 0 for a in range(self.game.getActionSize())]
        if temp == 0:
            bestAs = np.array(np.argwhere(counts == np.max(counts))).flatten()
            probs = [0] * len(counts)
            probs[bestAs[0]] = 1
            return probs
        counts = [x ** (1. / temp) for x in counts]
        counts_sum = float(sum(counts))
        return [x / counts_sum for x in counts]

    def search(self, canonicalBoard):
        s = self.game.stringRepresentation(canonicalBoard)
        if s not in self.Es:
            self.Es[s] = self.game.getGameEnded(canonicalBoard, 1)
        if self.Es[s] != 0:
            return -self.Es[s]
        if s not in self.Ps:
            self.Ps[s], v = self.predict(canonicalBoard)
            valids = self.game.getValidMoves(canonicalBoard, 1)
            self.Ps[s] = self.Ps[s] * valids  # masking invalid moves
            sum_Ps_s = np.sum(self.Ps[s])
            self.Ps[s] /= sum_Ps_s  # renormalize
            self.Vs[s] = valids
            self.Ns[s] = 0
            return -v
        valids = self.Vs[s]
        cur_best = -float('inf')
        best_act = -1
        for a in range(self.game.getActionSize()):
            if valids[a]:
                if (s, a) in self.Qsa:
                    u = self.Qsa[(s, a)] + self.cpuct * self.Ps[s][a] * math.sqrt(self.Ns[s]) / (1 + self.Nsa[(s, a)])
                else:
                    u = self.cpuct * self.Ps[s][a] * math.sqrt(self.Ns[s] + 1e-8)  # Q = 0 ?
                if u > cur_best:
                    cur_best = u
                    best_act = a
        a = best_act
        next_s, next_player = self.game.getNextState(canonicalBoard, 1, a)
        next_s = self.game.getCanonicalForm(next_s, next_player)
        v = self.search(next_s)
        if (s, a) in self.Qsa:
            self.Qsa[(s, a)] = (self.Nsa[(s, a)] * self.Qsa[(s, a)] + v) / (self.Nsa[(s, a)] + 1)
            self.Nsa[(s, a)] += 1
        else:
            self.Qsa[(s, a)] = v
            self.Nsa[(s, a)] = 1
        self.Ns[s] += 1
        return -v


def alpha_zero(m, weights, episodes=2, epochs=2, batch_size=8):
    torch = m.torch
    nnet = load(m, make_othello_nnet(m), weights)
    game = TicTacToe()

    def predict(board):
        board = torch.FloatTensor(board.astype(np.float64))
        board = board.view(1, 3, 3)
        nnet.eval()
        with torch.no_grad():
            pi, v = nnet(board)
        return torch.exp(pi).data.cpu().numpy()[0], v.data.cpu().numpy()[0][0]

    rng = np.random.default_rng(0)
    trainExamples = []
    for ep in range(episodes):
        mcts = MCTS(game, predict)
        episode = []
        board, curPlayer = game.getInitBoard(), 1
        while True:
            canonicalBoard = game.getCanonicalForm(board, curPlayer)
            pi = mcts.getActionProb(canonicalBoard, temp=1)
            episode.append([canonicalBoard, curPlayer, pi, None])
            action = rng.choice(len(pi), p=pi)
            board, curPlayer = game.getNextState(board, curPlayer, action)
            r = game.getGameEnded(board, curPlayer)
            if r != 0:
                trainExamples += [(x[0], x[2], r * ((-1) ** (x[1] != curPlayer))) for x in episode]
                break
    optimizer = torch.optim.Adam(nnet.parameters(), lr=1e-2)
    log = []
    for epoch in range(epochs):
        nnet.train()
        batch_count = int(len(trainExamples) / batch_size)
        for _ in range(batch_count):
            sample_ids = rng.integers(len(trainExamples), size=batch_size)
            boards, pis, vs = list(zip(*[trainExamples[i] for i in sample_ids]))
            boards = torch.FloatTensor(np.array(boards).astype(np.float64))
            target_pis = torch.FloatTensor(np.array(pis))
            target_vs = torch.FloatTensor(np.array(vs).astype(np.float64))
            out_pi, out_v = nnet(boards)
            l_pi = -torch.sum(target_pis * out_pi) / target_pis.size()[0]
            l_v = torch.sum((target_vs - out_v.view(-1)) ** 2) / target_vs.size()[0]
            total_loss = l_pi + l_v
            optimizer.zero_grad()
            total_loss.backward()
            optimizer.step()
            log.append([l_pi.item(), l_v.item(), max(getattr(nnet, name).bias.grad.abs().max().item() for name in ("conv1", "conv2", "conv3", "fc1"))])
    # a layer's bias right before batch norm gets only rounding for a gradient, which Adam's normalised steps
    # turn into lr-sized moves in either library's own direction (and the running means follow them): compared
    # are the weights that matter, with the bias gradients checked to be rounding
    state = {k: v for k, v in nnet.state_dict().items() if k not in ("conv1.bias", "conv2.bias", "conv3.bias", "fc1.bias") and "running_mean" not in k}
    return [(b, np.asarray(p, dtype=np.float64), float(v)) for b, p, v in trainExamples], [row[:2] for row in log], state, max(row[2] for row in log)


def test_alpha_zero_general():
    ours, _ = run_both(alpha_zero, weights_of(make_othello_nnet), rtol=1e-4, atol=1e-6)
    examples = ours[0]
    assert len(examples) >= 10 and all(abs(sum(p) - 1) < 1e-9 for _, p, _ in examples)
    assert "bn1.num_batches_tracked" in ours[2] and ours[2]["bn1.num_batches_tracked"] == len(ours[1])
    assert ours[3] < 1e-6


# ----------------------------------------------------------------------------------------------
# Munchausen DQN (log-policy bonus, clamped), PopArt's output-preserving rescaling of the value head, DIAYN's skill
# discriminator reward, and the World Models MDN-RNN's mixture log-likelihood
# ----------------------------------------------------------------------------------------------


def munchausen_dqn(m, weights, updates=3, gamma=0.99, entropy_tau=0.03, alpha=0.9, lo=-1.0):
    torch, F = m.torch, m.F
    qnetwork_local = load(m, make_dqn(m), weights)
    qnetwork_target = copy.deepcopy(qnetwork_local)
    optimizer = torch.optim.Adam(qnetwork_local.parameters(), lr=1e-3)
    log = []
    for step in range(updates):
        states, actions, rewards, next_states, dones = (torch.from_numpy(a) for a in replay_batch(500 + step))
        Q_targets_next = qnetwork_target(next_states).detach()
        # calculate entropy term with logsum
        logsum = torch.logsumexp((Q_targets_next - Q_targets_next.max(1)[0].unsqueeze(-1)) / entropy_tau, 1).unsqueeze(-1)
        tau_log_pi_next = Q_targets_next - Q_targets_next.max(1)[0].unsqueeze(-1) - entropy_tau * logsum
        # target policy
        pi_target = F.softmax(Q_targets_next / entropy_tau, dim=1)
        Q_target = (gamma * (pi_target * (Q_targets_next - tau_log_pi_next) * (1 - dones)).sum(1)).unsqueeze(-1)
        # calculate munchausen addon with logsum trick
        q_k_targets = qnetwork_target(states).detach()
        v_k_target = q_k_targets.max(1)[0].unsqueeze(-1)
        logsum = torch.logsumexp((q_k_targets - v_k_target) / entropy_tau, 1).unsqueeze(-1)
        log_pi = q_k_targets - v_k_target - entropy_tau * logsum
        munchausen_addon = log_pi.gather(1, actions)
        # calc munchausen reward:
        munchausen_reward = (rewards + alpha * torch.clamp(munchausen_addon, min=lo, max=0))
        # Compute Q targets for current states
        Q_targets = munchausen_reward + Q_target
        # Get expected Q values from local model
        q_k = qnetwork_local(states)
        Q_expected = q_k.gather(1, actions)
        # Compute loss
        loss = F.mse_loss(Q_expected, Q_targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(qnetwork_local.parameters(), 1)
        optimizer.step()
        for target_param, local_param in zip(qnetwork_target.parameters(), qnetwork_local.parameters()):
            target_param.data.copy_(1e-2 * local_param.data + (1.0 - 1e-2) * target_param.data)
        log.append([loss, munchausen_addon, tau_log_pi_next])
    return log, qnetwork_local.state_dict()


def test_munchausen_dqn():
    ours, _ = run_both(munchausen_dqn, weights_of(make_dqn), rtol=1e-4, atol=1e-5)
    assert np.all(ours[0][0][1] <= 1e-6)  # log-policies are at most 0


def popart(m, beta=0.3):
    torch, nn, F = m.torch, m.nn, m.F

    class PopArt(nn.Module):
        def __init__(self, input_shape, output_shape, norm_axes=1, beta=0.99999, epsilon=1e-5):
            super(PopArt, self).__init__()
            self.beta, self.epsilon, self.norm_axes = beta, epsilon, norm_axes
            self.input_shape, self.output_shape = input_shape, output_shape
            self.weight = nn.Parameter(torch.Tensor(output_shape, input_shape))
            self.bias = nn.Parameter(torch.Tensor(output_shape))
            self.stddev = nn.Parameter(torch.ones(output_shape), requires_grad=False)
            self.mean = nn.Parameter(torch.zeros(output_shape), requires_grad=False)
            self.mean_sq = nn.Parameter(torch.zeros(output_shape), requires_grad=False)
            self.debiasing_term = nn.Parameter(torch.tensor(0.0), requires_grad=False)
            self.reset_parameters()

        def reset_parameters(self):
            torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(self.weight)
                bound = 1 / math.sqrt(fan_in)
                torch.nn.init.uniform_(self.bias, -bound, bound)
            self.mean.zero_()
            self.mean_sq.zero_()
            self.debiasing_term.zero_()

        def forward(self, input_vector):
            return F.linear(input_vector, self.weight, self.bias)

        @torch.no_grad()
        def update(self, input_vector):
            old_mean, old_var = self.debiased_mean_var()
            old_stddev = torch.sqrt(old_var)
            batch_mean = input_vector.mean(dim=tuple(range(self.norm_axes)))
            batch_sq_mean = (input_vector ** 2).mean(dim=tuple(range(self.norm_axes)))
            self.mean.mul_(self.beta).add_(batch_mean * (1.0 - self.beta))
            self.mean_sq.mul_(self.beta).add_(batch_sq_mean * (1.0 - self.beta))
            self.debiasing_term.mul_(self.beta).add_(1.0 * (1.0 - self.beta))
            self.stddev = nn.Parameter((self.mean_sq - self.mean ** 2).sqrt().clamp(min=1e-4), requires_grad=False)
            new_mean, new_var = self.debiased_mean_var()
            new_stddev = torch.sqrt(new_var)
            self.weight.data = self.weight.data * old_stddev.unsqueeze(-1) / new_stddev.unsqueeze(-1)
            self.bias.data = (old_stddev * self.bias.data + old_mean - new_mean) / new_stddev

        def debiased_mean_var(self):
            debiased_mean = self.mean / self.debiasing_term.clamp(min=self.epsilon)
            debiased_mean_sq = self.mean_sq / self.debiasing_term.clamp(min=self.epsilon)
            debiased_var = (debiased_mean_sq - debiased_mean ** 2).clamp(min=1e-2)
            return debiased_mean, debiased_var

        def normalize(self, input_vector):
            mean, var = self.debiased_mean_var()
            return (input_vector - mean[(None,) * self.norm_axes]) / torch.sqrt(var)[(None,) * self.norm_axes]

        def denormalize(self, input_vector):
            mean, var = self.debiased_mean_var()
            return input_vector * torch.sqrt(var)[(None,) * self.norm_axes] + mean[(None,) * self.norm_axes]

    torch.manual_seed(0)
    head = PopArt(6, 2, beta=beta)
    optimizer = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(16, 6)
    log = []
    for step in range(4):
        returns = torch.randn(16, 2) * (10.0 * (step + 1)) + 50.0
        head.update(returns)
        # the unnormalised prediction is preserved by the update
        before = head.denormalize(head(x))
        normalized_returns = head.normalize(returns)
        value_loss = F.mse_loss(head(x), normalized_returns)
        optimizer.zero_grad()
        value_loss.backward()
        optimizer.step()
        log.append([value_loss, before, head.debiasing_term.clone(), head.stddev.clone()])
    preserved = []
    with torch.no_grad():
        before = head.denormalize(head(x))
        head.update(torch.randn(16, 2) * 100.0)
        after = head.denormalize(head(x))
    return log, before, after, head.state_dict(), len(list(head.parameters()))


def test_popart():
    ours, _ = run_both(popart, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours[2], ours[1], rtol=1e-4, atol=1e-3)  # outputs preserved across the update
    assert ours[4] == 6


def make_diayn(m, obs_dim=4, num_skills=5):
    nn = m.nn
    return nn.Sequential(nn.Linear(obs_dim, 16), nn.ReLU(), nn.Linear(16, num_skills))


def diayn(m, weights, num_skills=5, steps=3):
    torch, F = m.torch, m.F
    discriminator = load(m, make_diayn(m), weights)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=3e-3)
    p_z = np.full(num_skills, 1.0 / num_skills)
    log = []
    for step in range(steps):
        rng = np.random.default_rng(600 + step)
        next_states = torch.from_numpy(rng.standard_normal((12, 4)).astype(np.float32))
        zs = torch.from_numpy(rng.integers(0, num_skills, 12))
        logits = discriminator(next_states)
        p_z_ = torch.from_numpy(p_z).gather(-1, zs)
        logq_z_ns = F.log_softmax(logits, dim=-1)
        rewards = logq_z_ns.gather(-1, zs.unsqueeze(-1)).detach() - torch.log(p_z_ + 1e-6).unsqueeze(-1)
        discriminator_loss = F.cross_entropy(logits, zs)
        optimizer.zero_grad()
        discriminator_loss.backward()
        optimizer.step()
        log.append([rewards, discriminator_loss, rewards.dtype == torch.float64])
    return log, discriminator.state_dict()


def test_diayn():
    ours, _ = run_both(diayn, weights_of(make_diayn), rtol=1e-5, atol=1e-6)
    assert ours[0][0][2] is True  # float32 log-probabilities minus a float64 prior's log: float64, as PyTorch


def make_mdnrnn(m, latents=4, actions=2, hiddens=16, gaussians=3):
    nn = m.nn

    class MDRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.latents, self.actions, self.hiddens, self.gaussians = latents, actions, hiddens, gaussians
            self.gmm_linear = nn.Linear(hiddens, (2 * latents + 1) * gaussians + 2)
            self.rnn = nn.LSTM(latents + actions, hiddens)

        def forward(self, actions, latents):
            seq_len, bs = actions.size(0), actions.size(1)
            ins = m.torch.cat([actions, latents], dim=-1)
            outs, _ = self.rnn(ins)
            gmm_outs = self.gmm_linear(outs)
            stride = self.gaussians * self.latents
            mus = gmm_outs[:, :, :stride]
            mus = mus.view(seq_len, bs, self.gaussians, self.latents)
            sigmas = gmm_outs[:, :, stride:2 * stride]
            sigmas = sigmas.view(seq_len, bs, self.gaussians, self.latents)
            sigmas = m.torch.exp(sigmas)
            pi = gmm_outs[:, :, 2 * stride: 2 * stride + self.gaussians]
            pi = pi.view(seq_len, bs, self.gaussians)
            logpi = m.F.log_softmax(pi, dim=-1)
            rs = gmm_outs[:, :, -2]
            ds = gmm_outs[:, :, -1]
            return mus, sigmas, logpi, rs, ds

    return MDRNN()


def mdnrnn(m, weights, steps=3):
    torch, F = m.torch, m.F
    Normal = torch.distributions.Normal

    def gmm_loss(batch, mus, sigmas, logpi, reduce=True):
        batch = batch.unsqueeze(-2)
        normal_dist = Normal(mus, sigmas)
        g_log_probs = normal_dist.log_prob(batch)
        g_log_probs = logpi + torch.sum(g_log_probs, dim=-1)
        max_log_probs = torch.max(g_log_probs, dim=-1, keepdim=True)[0]
        g_log_probs = g_log_probs - max_log_probs
        g_probs = torch.exp(g_log_probs)
        probs = torch.sum(g_probs, dim=-1)
        log_prob = max_log_probs.squeeze() + torch.log(probs)
        if reduce:
            return - torch.mean(log_prob)
        return - log_prob

    mdrnn = load(m, make_mdnrnn(m), weights)
    optimizer = torch.optim.RMSprop(mdrnn.parameters(), lr=1e-3, alpha=.9)
    log = []
    for step in range(steps):
        rng = np.random.default_rng(700 + step)
        latent_obs = torch.from_numpy(rng.standard_normal((5, 3, 4)).astype(np.float32))
        action = torch.from_numpy(rng.uniform(-1, 1, (5, 3, 2)).astype(np.float32))
        reward = torch.from_numpy(rng.standard_normal((5, 3)).astype(np.float32))
        terminal = torch.from_numpy((rng.uniform(size=(5, 3)) < 0.2).astype(np.float32))
        latent_next_obs = torch.from_numpy(rng.standard_normal((5, 3, 4)).astype(np.float32))
        mus, sigmas, logpi, rs, ds = mdrnn(action, latent_obs)
        gmm = gmm_loss(latent_next_obs, mus, sigmas, logpi)
        bce = F.binary_cross_entropy_with_logits(ds, terminal)
        mse = F.mse_loss(rs, reward)
        scale = 4 + 2
        loss = (gmm + bce + mse) / scale
        # the same mixture likelihood by MixtureSameFamily
        mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logpi),
                                                   torch.distributions.Independent(Normal(mus, sigmas), 1))
        by_mixture = -mix.log_prob(latent_next_obs).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append([gmm, by_mixture, bce, mse])
    return log, mdrnn.state_dict()


def test_world_models_mdnrnn():
    ours, _ = run_both(mdnrnn, weights_of(make_mdnrnn), rtol=1e-4, atol=1e-5)
    for gmm, by_mixture, *_ in ours[0]:
        assert gmm == pytest.approx(by_mixture, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# tristandeleu/pytorch-maml-rl: a normal MLP policy called with an OrderedDict of adapted parameters, the inner
# update by autograd.grad(create_graph=True), and the outer TRPO step (Hessian-vector products of the KL through
# the adaptation, conjugate gradient, a backtracking line search by vector_to_parameters)
# ----------------------------------------------------------------------------------------------


def make_maml_policy(m, input_size=4, output_size=2, hidden_sizes=(16,), min_log_std=1e-6):
    torch, nn, F = m.torch, m.nn, m.F
    from collections import OrderedDict
    Independent, Normal = torch.distributions.Independent, torch.distributions.Normal

    class NormalMLPPolicy(nn.Module):
        def __init__(self):
            super(NormalMLPPolicy, self).__init__()
            self.input_size, self.output_size = input_size, output_size
            self.hidden_sizes = hidden_sizes
            self.nonlinearity = torch.tanh
            self.min_log_std = math.log(min_log_std)
            self.num_layers = len(hidden_sizes) + 1
            layer_sizes = (input_size,) + hidden_sizes
            for i in range(1, self.num_layers):
                self.add_module('layer{0}'.format(i), nn.Linear(layer_sizes[i - 1], layer_sizes[i]))
            self.mu = nn.Linear(layer_sizes[-1], output_size)
            self.sigma = nn.Parameter(torch.Tensor(output_size))
            self.sigma.data.fill_(math.log(1.0))

        def update_params(self, loss, params=None, step_size=0.5, first_order=False):
            if params is None:
                params = OrderedDict(self.named_parameters())
            grads = torch.autograd.grad(loss, params.values(), create_graph=not first_order)
            updated_params = OrderedDict()
            for (name, param), grad in zip(params.items(), grads):
                updated_params[name] = param - step_size * grad
            return updated_params

        def forward(self, input, params=None):
            if params is None:
                params = OrderedDict(self.named_parameters())
            output = input
            for i in range(1, self.num_layers):
                output = F.linear(output, weight=params['layer{0}.weight'.format(i)], bias=params['layer{0}.bias'.format(i)])
                output = self.nonlinearity(output)
            mu = F.linear(output, weight=params['mu.weight'], bias=params['mu.bias'])
            scale = torch.exp(torch.clamp(params['sigma'], min=self.min_log_std))
            return Independent(Normal(loc=mu, scale=scale), 1)

    return NormalMLPPolicy()


def maml_trpo(m, weights, num_tasks=2, max_kl=1e-2, cg_iters=5, cg_damping=1e-2, ls_max_steps=5, ls_backtrack_ratio=0.5):
    torch = m.torch
    parameters_to_vector, vector_to_parameters = torch.nn.utils.parameters_to_vector, torch.nn.utils.vector_to_parameters
    kl_divergence = torch.distributions.kl.kl_divergence
    Independent, Normal = torch.distributions.Independent, torch.distributions.Normal
    policy = load(m, make_maml_policy(m), weights)

    def weighted_mean(tensor, lengths=None):
        if lengths is None:
            return torch.mean(tensor)
        for i, length in enumerate(lengths):
            tensor[length:, i].fill_(0.)
        extra_dims = (1,) * (tensor.dim() - 2)
        lengths = torch.as_tensor(lengths, dtype=torch.float32)
        out = torch.sum(tensor, dim=0)
        out.div_(lengths.view(-1, *extra_dims))
        return out

    def detach_distribution(pi):
        if isinstance(pi, Independent):
            distribution = Independent(detach_distribution(pi.base_dist), pi.reinterpreted_batch_ndims)
        elif isinstance(pi, Normal):
            distribution = Normal(loc=pi.loc.detach(), scale=pi.scale.detach())
        else:
            raise NotImplementedError('Only `Categorical`, `Independent` and `Normal` policies are valid policies.')
        return distribution

    def conjugate_gradient(f_Ax, b, cg_iters=10, residual_tol=1e-10):
        p = b.clone().detach()
        r = b.clone().detach()
        x = torch.zeros_like(b).float()
        rdotr = torch.dot(r, r)
        for i in range(cg_iters):
            z = f_Ax(p).detach()
            v = rdotr / torch.dot(p, z)
            x += v * p
            r -= v * z
            newrdotr = torch.dot(r, r)
            mu = newrdotr / rdotr
            p = r + mu * p
            rdotr = newrdotr
            if rdotr.item() < residual_tol:
                break
        return x.detach()

    def episodes(task, kind):
        rng = np.random.default_rng(1000 + 10 * task + kind)
        T, B = 6, 3
        observations = torch.from_numpy(rng.standard_normal((T, B, 4)).astype(np.float32))
        actions = torch.from_numpy(rng.standard_normal((T, B, 2)).astype(np.float32))
        advantages = torch.from_numpy(rng.standard_normal((T, B)).astype(np.float32))
        lengths = [6, 4, 5]
        return observations, actions, advantages, lengths

    def reinforce_loss(params, obs, act, adv, lengths):
        pi = policy(obs.view((-1, *obs.shape[2:])), params=params)
        log_probs = pi.log_prob(act.view((-1, *act.shape[2:])))
        log_probs = log_probs.view(len(obs), obs.shape[1])
        losses = -weighted_mean(log_probs * adv, lengths=lengths)
        return losses.mean()

    def adapt(task):
        params = None
        inner_loss = reinforce_loss(params, *episodes(task, 0))
        params = policy.update_params(inner_loss, params=params, step_size=0.1, first_order=False)
        return params

    def surrogate_loss(task, params, old_pi=None):
        obs, act, adv, lengths = episodes(task, 1)
        pi = policy(obs, params=params)
        if old_pi is None:
            old_pi = detach_distribution(pi)
        log_ratio = pi.log_prob(act) - old_pi.log_prob(act)
        ratio = torch.exp(log_ratio)
        losses = -weighted_mean(ratio * adv, lengths=lengths)
        mask = torch.as_tensor(np.array([[t < l for l in lengths] for t in range(6)]), dtype=torch.float32)
        kls = (kl_divergence(pi, old_pi) * mask).sum(0) / mask.sum(0)
        return losses.mean(), kls.mean(), old_pi

    def hessian_vector_product(kl, damping=1e-2):
        grads = torch.autograd.grad(kl, policy.parameters(), create_graph=True)
        flat_grad_kl = parameters_to_vector(grads)

        def _product(vector, retain_graph=True):
            grad_kl_v = torch.dot(flat_grad_kl, vector)
            grad2s = torch.autograd.grad(grad_kl_v, policy.parameters(), retain_graph=retain_graph)
            flat_grad2_kl = parameters_to_vector(grad2s)
            return flat_grad2_kl + damping * vector
        return _product

    adapted = [adapt(task) for task in range(num_tasks)]
    results = [surrogate_loss(task, params) for task, params in enumerate(adapted)]
    old_losses = [r[0] for r in results]
    old_kls = [r[1] for r in results]
    old_pis = [r[2] for r in results]
    old_loss = sum(old_losses) / num_tasks
    grads = torch.autograd.grad(old_loss, policy.parameters(), retain_graph=True)
    grads = parameters_to_vector(grads)
    old_kl = sum(old_kls) / num_tasks
    hessian_vector_product_ = hessian_vector_product(old_kl, damping=cg_damping)
    stepdir = conjugate_gradient(hessian_vector_product_, grads, cg_iters=cg_iters)
    shs = 0.5 * torch.dot(stepdir, hessian_vector_product_(stepdir, retain_graph=False))
    lagrange_multiplier = torch.sqrt(shs / max_kl)
    step = stepdir / lagrange_multiplier
    old_params = parameters_to_vector(policy.parameters())
    step_size = 1.0
    accepted = None
    for s in range(ls_max_steps):
        vector_to_parameters(old_params - step_size * step, policy.parameters())
        new = [surrogate_loss(task, adapt(task), old_pi=old_pis[task]) for task in range(num_tasks)]
        improve = (sum(r[0] for r in new) / num_tasks) - old_loss
        kl = sum(r[1] for r in new) / num_tasks
        if (improve.item() < 0.0) and (kl.item() < max_kl):
            accepted = s
            break
        step_size *= ls_backtrack_ratio
    else:
        vector_to_parameters(old_params, policy.parameters())
    return old_loss, grads, stepdir, shs, accepted, policy.state_dict()


def test_maml_rl_trpo():
    ours, _ = run_both(maml_trpo, weights_of(make_maml_policy), rtol=1e-3, atol=1e-5)
    assert ours[4] is not None


# ----------------------------------------------------------------------------------------------
# ikostrikov's GAIL discriminator: a gradient penalty on expert/policy mixtures, BCE with logits, rewards from
# sigmoid logits normalised by a running return variance
# ----------------------------------------------------------------------------------------------


def make_gail_discriminator(m, input_dim=6, hidden_dim=16):
    nn = m.nn
    return nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))


def gail(m, weights, lambda_=10, gamma=0.99, epochs=2):
    torch, F = m.torch, m.F
    autograd_ = torch.autograd
    trunk = load(m, make_gail_discriminator(m), weights)
    optimizer = torch.optim.Adam(trunk.parameters())
    torch.manual_seed(0)

    def compute_grad_pen(expert_state, expert_action, policy_state, policy_action, lambda_=10):
        alpha = torch.rand(expert_state.size(0), 1)
        expert_data = torch.cat([expert_state, expert_action], dim=1)
        policy_data = torch.cat([policy_state, policy_action], dim=1)
        alpha = alpha.expand_as(expert_data).to(expert_data.device)
        mixup_data = alpha * expert_data + (1 - alpha) * policy_data
        mixup_data.requires_grad = True
        disc = trunk(mixup_data)
        ones = torch.ones(disc.size()).to(disc.device)
        grad = autograd_.grad(outputs=disc, inputs=mixup_data, grad_outputs=ones, create_graph=True, retain_graph=True, only_inputs=True)[0]
        grad_pen = lambda_ * (grad.norm(2, dim=1) - 1).pow(2).mean()
        return grad_pen

    log = []
    ret_rms_var, returns = 1.0, None
    for epoch in range(epochs):
        rng = np.random.default_rng(800 + epoch)
        policy_state = torch.from_numpy(rng.standard_normal((16, 4)).astype(np.float32))
        policy_action = torch.from_numpy(rng.uniform(-1, 1, (16, 2)).astype(np.float32))
        expert_state = torch.from_numpy((rng.standard_normal((16, 4)) + 0.5).astype(np.float32))
        expert_action = torch.from_numpy(rng.uniform(-0.5, 1, (16, 2)).astype(np.float32))
        policy_d = trunk(torch.cat([policy_state, policy_action], dim=1))
        expert_d = trunk(torch.cat([expert_state, expert_action], dim=1))
        expert_loss = F.binary_cross_entropy_with_logits(expert_d, torch.ones(expert_d.size()))
        policy_loss = F.binary_cross_entropy_with_logits(policy_d, torch.zeros(policy_d.size()))
        gail_loss = expert_loss + policy_loss
        grad_pen = compute_grad_pen(expert_state, expert_action, policy_state, policy_action, lambda_)
        optimizer.zero_grad()
        (gail_loss + grad_pen).backward()
        optimizer.step()
        # predict_reward
        with torch.no_grad():
            trunk.eval()
            d = trunk(torch.cat([policy_state, policy_action], dim=1))
            s = torch.sigmoid(d)
            reward = s.log() - (1 - s).log()
            masks = torch.ones(16, 1)
            if returns is None:
                returns = reward.clone()
            returns = returns * masks * gamma + reward
            ret_rms_var = 0.9 * ret_rms_var + 0.1 * returns.var().item()
            trunk.train()
        log.append([gail_loss, grad_pen, reward / np.sqrt(ret_rms_var + 1e-8)])
    return log, trunk.state_dict()


def test_gail_discriminator():
    ours, _ = run_both(gail, weights_of(make_gail_discriminator), rtol=1e-4, atol=1e-5)
    for gail_loss, grad_pen, reward in ours[0]:
        assert grad_pen >= 0 and gail_loss > 0 and np.all(np.isfinite(reward))


# ----------------------------------------------------------------------------------------------
# lweitkamp/option-critic-pytorch: option-value, termination (Bernoulli of sigmoids) and intra-option policies
# over parameter tensors indexed by option, sampled episodes, the critic and actor losses
# ----------------------------------------------------------------------------------------------


def make_option_critic(m, in_features=4, num_actions=2, num_options=3, features=16):
    torch, nn = m.torch, m.nn
    Bernoulli, Categorical = torch.distributions.Bernoulli, torch.distributions.Categorical

    class OptionCriticFeatures(nn.Module):
        def __init__(self, temperature=1.0, eps_start=1.0, eps_min=0.1, eps_decay=int(1e6), eps_test=0.05):
            super(OptionCriticFeatures, self).__init__()
            self.in_features, self.num_actions, self.num_options = in_features, num_actions, num_options
            self.magic_number = features
            self.temperature = temperature
            self.eps_min, self.eps_start, self.eps_decay, self.eps_test = eps_min, eps_start, eps_decay, eps_test
            self.num_steps = 0
            self.features = nn.Sequential(nn.Linear(in_features, 16), nn.ReLU(), nn.Linear(16, features), nn.ReLU())
            self.Q = nn.Linear(features, num_options)  # Policy-Over-Options
            self.terminations = nn.Linear(features, num_options)  # Option-Termination
            self.options_W = nn.Parameter(torch.zeros(num_options, features, num_actions))
            self.options_b = nn.Parameter(torch.zeros(num_options, num_actions))

        def get_state(self, obs):
            if obs.ndim < 4 and obs.ndim > 1:
                pass
            elif obs.ndim == 1:
                obs = obs.unsqueeze(0)
            state = self.features(obs)
            return state

        def get_Q(self, state):
            return self.Q(state)

        def predict_option_termination(self, state, current_option):
            termination = self.terminations(state)[:, current_option].sigmoid()
            option_termination = Bernoulli(termination).sample()
            Q = self.get_Q(state)
            next_option = Q.argmax(dim=-1)
            return bool(option_termination.item()), next_option.item()

        def get_terminations(self, state):
            return self.terminations(state).sigmoid()

        def get_action(self, state, option):
            logits = state.data @ self.options_W[option] + self.options_b[option]
            action_dist = (logits / self.temperature).softmax(dim=-1)
            action_dist = Categorical(action_dist)
            action = action_dist.sample()
            logp = action_dist.log_prob(action)
            entropy = action_dist.entropy()
            return action.item(), logp, entropy

    return OptionCriticFeatures()


def option_critic(m, weights, steps=24, gamma=0.99, termination_reg=0.01, entropy_reg=0.01, batch_size=8):
    torch = m.torch
    torch.manual_seed(0)
    option_critic = load(m, make_option_critic(m), weights)
    with torch.no_grad():
        option_critic.options_W.normal_(0, 0.3)  # (the repository leaves them zero: every option starts uniform)
    option_critic_prime = copy.deepcopy(option_critic)
    optim = torch.optim.RMSprop(option_critic.parameters(), lr=1e-3)

    def to_tensor(obs):
        obs = np.asarray(obs)
        obs = torch.from_numpy(obs).float()
        return obs

    def critic_loss(model, model_prime, data_batch):
        obs, options, rewards, next_obs, dones = data_batch
        batch_idx = torch.arange(len(options)).long()
        options = torch.LongTensor(options)
        rewards = torch.FloatTensor(rewards)
        masks = 1 - torch.FloatTensor(dones)
        states = model.get_state(to_tensor(obs)).squeeze(0)
        Q = model.get_Q(states)
        next_states_prime = model_prime.get_state(to_tensor(next_obs)).squeeze(0)
        next_Q_prime = model_prime.get_Q(next_states_prime)  # detach?
        next_states = model.get_state(to_tensor(next_obs)).squeeze(0)
        next_termination_probs = model.get_terminations(next_states).detach()
        next_options_term_prob = next_termination_probs[batch_idx, options]
        gt = rewards + masks * gamma * ((1 - next_options_term_prob) * next_Q_prime[batch_idx, options] + next_options_term_prob * next_Q_prime.max(dim=-1)[0])
        td_err = (Q[batch_idx, options] - gt.detach()).pow(2).mul(0.5).mean()
        return td_err

    def actor_loss_fn(obs, option, logp, entropy, reward, done, next_obs, model, model_prime):
        state = model.get_state(to_tensor(obs))
        next_state = model.get_state(to_tensor(next_obs))
        next_state_prime = model_prime.get_state(to_tensor(next_obs))
        option_term_prob = model.get_terminations(state)[:, option]
        next_option_term_prob = model.get_terminations(next_state)[:, option].detach()
        Q = model.get_Q(state).detach().squeeze()
        next_Q_prime = model_prime.get_Q(next_state_prime).detach().squeeze()
        gt = reward + (1 - done) * gamma * ((1 - next_option_term_prob) * next_Q_prime[option] + next_option_term_prob * next_Q_prime.max(dim=-1)[0])
        termination_loss = option_term_prob * (Q[option].detach() - Q.max(dim=-1)[0].detach() + termination_reg) * (1 - done)
        policy_loss = -logp * (gt.detach() - Q[option]) - entropy_reg * entropy
        actor_loss = termination_loss + policy_loss
        return actor_loss

    rng = np.random.default_rng(0)
    env = CartPoleNumpy(rng)
    obs = env.reset()
    state = option_critic.get_state(to_tensor(obs))
    greedy_option = option_critic.get_Q(state).argmax(dim=-1).item()
    current_option, option_termination = 0, True
    buffer, log, trajectory = [], [], []
    for step in range(steps):
        epsilon = 0.1
        if option_termination:
            current_option = int(rng.integers(3)) if rng.uniform() < epsilon else greedy_option
        action, logp, entropy = option_critic.get_action(state, current_option)
        next_obs, reward, done = env.step(action)
        buffer.append((obs, current_option, reward, next_obs, done))
        trajectory.append((current_option, action))
        actor_loss, critic_loss_ = 0.0, 0.0
        if len(buffer) > batch_size:
            actor_loss = actor_loss_fn(obs, current_option, logp, entropy, reward, done, next_obs, option_critic, option_critic_prime)
            loss = actor_loss
            if step % 2 == 0:
                batch = [buffer[i] for i in rng.integers(len(buffer), size=batch_size)]
                data_batch = [list(x) for x in zip(*batch)]
                critic_loss_ = critic_loss(option_critic, option_critic_prime, data_batch)
                loss += critic_loss_
            optim.zero_grad()
            loss.backward()
            optim.step()
            log.append([actor_loss, critic_loss_])
            if step % 6 == 0:
                option_critic_prime.load_state_dict(option_critic.state_dict())
        state = option_critic.get_state(to_tensor(next_obs))
        option_termination, greedy_option = option_critic.predict_option_termination(state, current_option)
        obs = next_obs
        if done:
            obs = env.reset()
            state = option_critic.get_state(to_tensor(obs))
            option_termination = True
    return trajectory, log, option_critic.state_dict()


class CartPoleNumpy:
    """A cart-pole with gym's dynamics whose start states come from a given NumPy generator."""

    def __init__(self, rng):
        self.rng = rng

    def reset(self):
        self.state = self.rng.uniform(-0.05, 0.05, 4)
        self.steps = 0
        return self.state.astype(np.float32)

    def step(self, action):
        x, x_dot, theta, theta_dot = self.state
        force = 10.0 if action == 1 else -10.0
        costheta, sintheta = np.cos(theta), np.sin(theta)
        temp = (force + 0.05 * theta_dot ** 2 * sintheta) / 1.1
        thetaacc = (9.8 * sintheta - costheta * temp) / (0.5 * (4.0 / 3.0 - 0.1 * costheta ** 2 / 1.1))
        xacc = temp - 0.05 * thetaacc * costheta / 1.1
        self.state = np.array([x + 0.02 * x_dot, x_dot + 0.02 * xacc, theta + 0.02 * theta_dot, theta_dot + 0.02 * thetaacc])
        self.steps += 1
        done = bool(abs(self.state[0]) > 2.4 or abs(self.state[2]) > 0.2095 or self.steps >= 10)
        return self.state.astype(np.float32), 1.0, done


def test_option_critic():
    ours, _ = run_both(option_critic, weights_of(make_option_critic), rtol=1e-4, atol=1e-5)
    assert len(ours[1]) > 0 and len({o for o, a in ours[0]}) >= 1


# ----------------------------------------------------------------------------------------------
# Hindsight experience replay (TianhongDai/hindsight-experience-replay): goal-conditioned DDPG with 'future'
# relabelling, o/g normalisers, target clipping to [-1/(1-gamma), 0] and an action L2 penalty; CURL's contrastive
# loss (a bilinear W, logits shifted by their row maximum, a momentum key encoder)
# ----------------------------------------------------------------------------------------------


def make_her(m, obs=4, goal=2, action=2, hidden=16, max_action=1.0):
    torch, nn, F = m.torch, m.nn, m.F

    class actor(nn.Module):
        def __init__(self):
            super(actor, self).__init__()
            self.max_action = max_action
            self.fc1 = nn.Linear(obs + goal, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.action_out = nn.Linear(hidden, action)

        def forward(self, x):
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            actions = self.max_action * torch.tanh(self.action_out(x))
            return actions

    class critic(nn.Module):
        def __init__(self):
            super(critic, self).__init__()
            self.max_action = max_action
            self.fc1 = nn.Linear(obs + goal + action, hidden)
            self.fc2 = nn.Linear(hidden, hidden)
            self.q_out = nn.Linear(hidden, 1)

        def forward(self, x, actions):
            x = torch.cat([x, actions / self.max_action], dim=1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            q_value = self.q_out(x)
            return q_value

    class Nets(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor_network, self.critic_network = actor(), critic()

    return Nets()


def her(m, weights, n_batches=3, batch_size=16, gamma=0.98, replay_k=4, clip_obs=200, clip_range=5, action_l2=1.0, polyak=0.95):
    torch = m.torch
    nets = load(m, make_her(m), weights)
    actor_network, critic_network = nets.actor_network, nets.critic_network
    actor_target_network, critic_target_network = copy.deepcopy(actor_network), copy.deepcopy(critic_network)
    actor_optim = torch.optim.Adam(actor_network.parameters(), lr=1e-3)
    critic_optim = torch.optim.Adam(critic_network.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    T, n_episodes = 6, 5
    buffers = {'obs': rng.standard_normal((n_episodes, T + 1, 4)), 'ag': rng.standard_normal((n_episodes, T + 1, 2)),
               'g': rng.standard_normal((n_episodes, T, 2)), 'actions': rng.uniform(-1, 1, (n_episodes, T, 2))}
    o_mean, o_std = buffers['obs'].mean(axis=(0, 1)), buffers['obs'].std(axis=(0, 1)) + 1e-2
    g_mean, g_std = buffers['g'].mean(axis=(0, 1)), buffers['g'].std(axis=(0, 1)) + 1e-2
    future_p = 1 - (1. / (1 + replay_k))

    def compute_reward(achieved_goal, goal):
        d = np.linalg.norm(achieved_goal - goal, axis=-1)
        return -(d > 0.5).astype(np.float32)

    def sample_her_transitions(episode_batch, batch_size_in_transitions):
        rollout_batch_size = episode_batch['actions'].shape[0]
        batch_size = batch_size_in_transitions
        episode_idxs = rng.integers(0, rollout_batch_size, batch_size)
        t_samples = rng.integers(T, size=batch_size)
        transitions = {key: episode_batch[key][episode_idxs, t_samples].copy() for key in episode_batch.keys()}
        transitions['obs_next'] = episode_batch['obs'][episode_idxs, t_samples + 1]
        transitions['ag_next'] = episode_batch['ag'][episode_idxs, t_samples + 1]
        her_indexes = np.where(rng.uniform(size=batch_size) < future_p)
        future_offset = rng.uniform(size=batch_size) * (T - t_samples)
        future_offset = future_offset.astype(int)
        future_t = (t_samples + 1 + future_offset)[her_indexes]
        future_ag = episode_batch['ag'][episode_idxs[her_indexes], future_t]
        transitions['g'][her_indexes] = future_ag
        transitions['r'] = np.expand_dims(compute_reward(transitions['ag_next'], transitions['g']), 1)
        return transitions

    def _preproc_og(o, g):
        o = np.clip(o, -clip_obs, clip_obs)
        g = np.clip(g, -clip_obs, clip_obs)
        return o, g

    def _preproc_inputs(o, g):
        o_norm = np.clip((o - o_mean) / o_std, -clip_range, clip_range)
        g_norm = np.clip((g - g_mean) / g_std, -clip_range, clip_range)
        return np.concatenate([o_norm, g_norm], axis=-1)

    log = []
    for _ in range(n_batches):
        transitions = sample_her_transitions(buffers, batch_size)
        o, o_next, g = transitions['obs'], transitions['obs_next'], transitions['g']
        transitions['obs'], transitions['g'] = _preproc_og(o, g)
        transitions['obs_next'], transitions['g_next'] = _preproc_og(o_next, g)
        inputs_norm = _preproc_inputs(transitions['obs'], transitions['g'])
        inputs_next_norm = _preproc_inputs(transitions['obs_next'], transitions['g_next'])
        inputs_norm_tensor = torch.tensor(inputs_norm, dtype=torch.float32)
        inputs_next_norm_tensor = torch.tensor(inputs_next_norm, dtype=torch.float32)
        actions_tensor = torch.tensor(transitions['actions'], dtype=torch.float32)
        r_tensor = torch.tensor(transitions['r'], dtype=torch.float32)
        with torch.no_grad():
            actions_next = actor_target_network(inputs_next_norm_tensor)
            q_next_value = critic_target_network(inputs_next_norm_tensor, actions_next)
            q_next_value = q_next_value.detach()
            target_q_value = r_tensor + gamma * q_next_value
            target_q_value = target_q_value.detach()
            # clip the q value
            clip_return = 1 / (1 - gamma)
            target_q_value = torch.clamp(target_q_value, -clip_return, 0)
        real_q_value = critic_network(inputs_norm_tensor, actions_tensor)
        critic_loss = (target_q_value - real_q_value).pow(2).mean()
        actions_real = actor_network(inputs_norm_tensor)
        actor_loss = -critic_network(inputs_norm_tensor, actions_real).mean()
        actor_loss += action_l2 * (actions_real / 1.0).pow(2).mean()
        actor_optim.zero_grad()
        actor_loss.backward()
        actor_optim.step()
        critic_optim.zero_grad()
        critic_loss.backward()
        critic_optim.step()
        for target_param, param in zip(actor_target_network.parameters(), actor_network.parameters()):
            target_param.data.copy_((1 - polyak) * param.data + polyak * target_param.data)
        for target_param, param in zip(critic_target_network.parameters(), critic_network.parameters()):
            target_param.data.copy_((1 - polyak) * param.data + polyak * target_param.data)
        log.append([actor_loss, critic_loss, r_tensor])
    return log, nets.state_dict(), critic_target_network.state_dict()


def test_hindsight_experience_replay():
    ours, _ = run_both(her, weights_of(make_her), rtol=1e-4, atol=1e-5)
    for actor_loss, critic_loss, r in ours[0]:
        assert set(np.unique(r)) <= {-1.0, 0.0} and critic_loss >= 0


def make_curl(m, obs_dim=12, z_dim=8):
    torch, nn = m.torch, m.nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(obs_dim, z_dim)
            self.ln = nn.LayerNorm(z_dim)

        def forward(self, obs, detach=False):
            h = self.fc(obs)
            if detach:
                h = h.detach()
            return torch.tanh(self.ln(h))

    class CURL(nn.Module):
        def __init__(self):
            super(CURL, self).__init__()
            self.encoder = Encoder()
            self.encoder_target = Encoder()
            self.W = nn.Parameter(torch.rand(z_dim, z_dim))

        def encode(self, x, detach=False, ema=False):
            if ema:
                with torch.no_grad():
                    z_out = self.encoder_target(x)
            else:
                z_out = self.encoder(x)
            if detach:
                z_out = z_out.detach()
            return z_out

        def compute_logits(self, z_a, z_pos):
            Wz = torch.matmul(self.W, z_pos.T)  # (z_dim,B)
            logits = torch.matmul(z_a, Wz)  # (B,B)
            logits = logits - torch.max(logits, 1)[0][:, None]
            return logits

    return CURL()


def curl(m, weights, steps=3, encoder_tau=0.05):
    torch, nn = m.torch, m.nn
    CURL = load(m, make_curl(m), weights)
    CURL.encoder_target.load_state_dict(CURL.encoder.state_dict())
    encoder_optimizer = torch.optim.Adam(CURL.encoder.parameters(), lr=1e-3)
    cpc_optimizer = torch.optim.Adam(CURL.parameters(), lr=1e-3)
    cross_entropy_loss = nn.CrossEntropyLoss()
    log = []
    for step in range(steps):
        rng = np.random.default_rng(900 + step)
        base = rng.standard_normal((10, 12)).astype(np.float32)
        obs_anchor = torch.as_tensor(base + 0.1 * rng.standard_normal((10, 12)).astype(np.float32))
        obs_pos = torch.as_tensor(base + 0.1 * rng.standard_normal((10, 12)).astype(np.float32))
        z_a = CURL.encode(obs_anchor)
        z_pos = CURL.encode(obs_pos, ema=True)
        logits = CURL.compute_logits(z_a, z_pos)
        labels = torch.arange(logits.shape[0]).long()
        loss = cross_entropy_loss(logits, labels)
        encoder_optimizer.zero_grad()
        cpc_optimizer.zero_grad()
        loss.backward()
        encoder_optimizer.step()
        cpc_optimizer.step()
        for param, target_param in zip(CURL.encoder.parameters(), CURL.encoder_target.parameters()):
            target_param.data.copy_(encoder_tau * param.data + (1 - encoder_tau) * target_param.data)
        log.append([loss, logits, CURL.W.grad.clone()])
    return log, CURL.state_dict()


def test_curl_contrastive():
    ours, _ = run_both(curl, weights_of(make_curl), rtol=1e-4, atol=1e-5)
    for loss, logits, _ in ours[0]:
        assert np.allclose(logits.max(1), 0) and loss > 0


# ----------------------------------------------------------------------------------------------
# Gumbel MuZero's root policy improvement (mctx's, in torch): Gumbel-top-k action selection, sequential halving over
# a learnt model's values, completed Q-values with the mixed value, sigma(q), and the improved-policy KL loss
# ----------------------------------------------------------------------------------------------


def make_gumbel_muzero(m, obs_dim=4, num_actions=6):
    nn = m.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.torso = nn.Sequential(nn.Linear(obs_dim, 16), nn.ReLU())
            self.policy = nn.Linear(16, num_actions)
            self.value = nn.Linear(16, 1)
            self.q = nn.Linear(16, num_actions)

        def forward(self, obs):
            h = self.torso(obs)
            return self.policy(h), self.value(h).squeeze(-1), self.q(h)

    return Net()


def gumbel_muzero(m, weights, max_num_considered_actions=4, num_simulations=8, value_scale=0.1, maxvisit_init=50.0, steps=3):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    net = load(m, make_gumbel_muzero(m), weights)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)

    def qtransform_completed_by_mix_value(prior_logits, raw_value, qvalues, visit_counts, epsilon=1e-8):
        probs = torch.softmax(prior_logits, dim=-1)
        sum_visit_counts = visit_counts.sum(-1, keepdim=True)
        weighted_q = (torch.where(visit_counts > 0, probs, torch.zeros_like(probs)) * qvalues).sum(-1, keepdim=True)
        sum_probs = torch.where(visit_counts > 0, probs, torch.zeros_like(probs)).sum(-1, keepdim=True).clamp(min=torch.finfo(probs.dtype).tiny)
        mixed_value = (raw_value.unsqueeze(-1) + sum_visit_counts * weighted_q / sum_probs) / (sum_visit_counts + 1)
        completed = torch.where(visit_counts > 0, qvalues, mixed_value)
        min_value = completed.min(-1, keepdim=True).values
        max_value = completed.max(-1, keepdim=True).values
        completed = (completed - min_value) / torch.clamp(max_value - min_value, min=epsilon)
        max_visit = visit_counts.max(-1, keepdim=True).values
        visit_scale = maxvisit_init + max_visit
        return visit_scale * value_scale * completed

    log = []
    for step in range(steps):
        obs = torch.from_numpy(np.random.default_rng(1100 + step).standard_normal((5, 4)).astype(np.float32))
        prior_logits, raw_value, model_q = net(obs)
        with torch.no_grad():
            B, A = prior_logits.shape
            gumbel = -torch.log(-torch.log(torch.rand(B, A)))
            # Gumbel-top-k: the considered actions
            _, considered = torch.topk(gumbel + prior_logits, max_num_considered_actions, dim=-1)
            visit_counts = torch.zeros(B, A)
            remaining = considered
            sims_per_round = num_simulations // 2
            while remaining.shape[1] > 1:
                visit_counts.scatter_add_(1, remaining, torch.full(remaining.shape, float(sims_per_round // remaining.shape[1] or 1)))
                sigma = qtransform_completed_by_mix_value(prior_logits, raw_value, model_q, visit_counts)
                scores = (gumbel + prior_logits + sigma).gather(1, remaining)
                keep = scores.topk(remaining.shape[1] // 2, dim=-1).indices
                remaining = remaining.gather(1, keep)
            action = remaining.squeeze(-1)
            completed_q = qtransform_completed_by_mix_value(prior_logits, raw_value, model_q, visit_counts)
            improved_policy = torch.softmax(prior_logits + completed_q, dim=-1)
        policy_loss = F.kl_div(F.log_softmax(prior_logits, dim=-1), improved_policy, reduction='batchmean')
        value_target = (improved_policy * model_q).sum(-1).detach()
        value_loss = F.mse_loss(raw_value, value_target)
        loss = policy_loss + 0.25 * value_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append([loss, action, visit_counts, improved_policy])
    return log, net.state_dict()


def test_gumbel_muzero_policy_improvement():
    ours, _ = run_both(gumbel_muzero, weights_of(make_gumbel_muzero), rtol=1e-4, atol=1e-6)
    for loss, action, visit_counts, improved_policy in ours[0]:
        np.testing.assert_allclose(improved_policy.sum(-1), 1, rtol=1e-6)
        assert np.all(visit_counts[np.arange(5), action] > 0)  # the chosen action was among those simulated
