# ruff: noqa: B007, B023, E501, E731, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: offline RL beyond CORL: BCQ (a VAE with
clamped latents, perturbation actor, ``repeat_interleave`` of next states); BEAR's MMD (in float64); a minimal
Decision Transformer (timestep embeddings, returns-to-go, interleaved tokens by ``stack``/``permute``/``reshape``, a
causal mask buffer, a loss over masked padding, AdamW with a warm-up ``LambdaLR``)."""

import copy
import math

import numpy as np

from .probe18_rl_common import replay_batch
from .pytorch_programs import assert_same, load, run_both, weights_of

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
