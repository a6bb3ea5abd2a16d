# ruff: noqa: E501, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: losses from a second network: GAIL's
discriminator (gradient penalty by ``autograd.grad`` with ``only_inputs``); CURL's bilinear contrastive loss with a
momentum encoder."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

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
