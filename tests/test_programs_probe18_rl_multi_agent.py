# ruff: noqa: B023, E501, F841, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: multi-agent: pymarl's QMIX (a GRUCell
agent, hypernetwork mixing with ``torch.abs`` and ``bmm``, unavailable actions masked by boolean index writes, masked
TD errors, RMSprop) and MADDPG (``F.gumbel_softmax(hard=True)`` through a critic, BatchNorm on inputs)."""

import copy

import numpy as np

from .pytorch_programs import load, run_both, weights_of

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
