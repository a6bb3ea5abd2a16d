# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Reinforcement learning programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the
same weights, with the same actions fed to both where the program samples (each sampling call is kept, and its shape,
dtype and statistics are checked). cleanRL's SAC update on a fixed replay batch (a tanh-squashed Gaussian, its
log-prob correction, twin Q networks with ``torch.min``, Polyak target updates through ``.data.copy_``, the entropy
temperature learnt as a bare leaf tensor); Rainbow (Kaixhin/Rainbow: NoisyLinear, a dueling distributional head, the
C51 projection by ``index_add_``, checked by hand)."""

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# cleanRL's sac_continuous_action.py (the update, on a fixed replay batch)
# ----------------------------------------------------------------------------------------------

LOG_STD_MAX = 2
LOG_STD_MIN = -5


def make_sac(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SoftQNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3 + 1, 32)
            self.fc2 = nn.Linear(32, 32)
            self.fc3 = nn.Linear(32, 1)

        def forward(self, x, a):
            x = torch.cat([x, a], 1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3, 32)
            self.fc2 = nn.Linear(32, 32)
            self.fc_mean = nn.Linear(32, 1)
            self.fc_logstd = nn.Linear(32, 1)
            high, low = np.array([2.0]), np.array([-2.0])
            self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
            self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))
            self.noise = None

        def forward(self, x):
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            mean = self.fc_mean(x)
            log_std = self.fc_logstd(x)
            log_std = torch.tanh(log_std)
            log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
            return mean, log_std

        def get_action(self, x):
            mean, log_std = self(x)
            std = log_std.exp()
            normal = torch.distributions.Normal(mean, std)
            x_t = normal.rsample()  # for reparameterization trick (mean + std * N(0,1))
            if self.noise is not None:
                x_t = mean + std * next(self.noise)  # the same draw in both libraries
            y_t = torch.tanh(x_t)
            action = y_t * self.action_scale + self.action_bias
            log_prob = normal.log_prob(x_t)
            log_prob -= torch.log(self.action_scale * (1 - y_t.pow(2)) + 1e-6)
            log_prob = log_prob.sum(1, keepdim=True)
            mean = torch.tanh(mean) * self.action_scale + self.action_bias
            return action, log_prob, mean

    return nn.ModuleDict({"actor": Actor(), "qf1": SoftQNetwork(), "qf2": SoftQNetwork(),
                          "qf1_target": SoftQNetwork(), "qf2_target": SoftQNetwork()})


def sac(m, weights, updates=4):
    torch, F, optim = m.torch, m.F, m.optim
    nets = load(m, make_sac(m), weights)
    actor, qf1, qf2, qf1_target, qf2_target = (nets[k] for k in ("actor", "qf1", "qf2", "qf1_target", "qf2_target"))
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=1e-3)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=3e-4)
    target_entropy = -torch.prod(torch.Tensor((1,)).to("cpu")).item()
    log_alpha = torch.zeros(1, requires_grad=True, device="cpu")
    alpha = log_alpha.exp().item()
    a_optimizer = optim.Adam([log_alpha], lr=1e-3)
    gamma, tau = 0.99, 0.005
    rng = np.random.default_rng(9)
    actor.noise = iter([torch.tensor(rng.standard_normal((32, 1)).astype(np.float32)) for _ in range(3 * updates)])
    history = []
    for global_step in range(updates):
        observations = torch.tensor(rng.standard_normal((32, 3)).astype(np.float32))
        next_observations = torch.tensor(rng.standard_normal((32, 3)).astype(np.float32))
        acts = torch.tensor(rng.uniform(-2, 2, (32, 1)).astype(np.float32))
        rews = torch.tensor(rng.standard_normal((32, 1)).astype(np.float32))
        dones_ = torch.tensor((rng.random((32, 1)) < 0.1).astype(np.float32))
        with torch.no_grad():
            next_state_actions, next_state_log_pi, _ = actor.get_action(next_observations)
            qf1_next_target = qf1_target(next_observations, next_state_actions)
            qf2_next_target = qf2_target(next_observations, next_state_actions)
            min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
            next_q_value = rews.flatten() + (1 - dones_.flatten()) * gamma * (min_qf_next_target).view(-1)

        qf1_a_values = qf1(observations, acts).view(-1)
        qf2_a_values = qf2(observations, acts).view(-1)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        qf_loss = qf1_loss + qf2_loss

        q_optimizer.zero_grad()
        qf_loss.backward()
        q_optimizer.step()

        pi, log_pi, _ = actor.get_action(observations)
        qf1_pi = qf1(observations, pi)
        qf2_pi = qf2(observations, pi)
        min_qf_pi = torch.min(qf1_pi, qf2_pi)
        actor_loss = ((alpha * log_pi) - min_qf_pi).mean()

        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()

        with torch.no_grad():
            _, log_pi, _ = actor.get_action(observations)
        alpha_loss = (-log_alpha.exp() * (log_pi + target_entropy)).mean()

        a_optimizer.zero_grad()
        alpha_loss.backward()
        a_optimizer.step()
        alpha = log_alpha.exp().item()

        for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
            target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
        for param, target_param in zip(qf2.parameters(), qf2_target.parameters()):
            target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
        history.append((qf_loss.item(), actor_loss.item(), alpha_loss.item(), alpha))
    return {"history": history, "target": [p.detach() for p in qf1_target.parameters()],
            "actor_grads": [p.grad for p in actor.parameters()], "log_alpha_grad": log_alpha.grad,
            "target_entropy": target_entropy}


def test_cleanrl_sac_update():
    weights = weights_of(make_sac)
    ours, _ = run_both(sac, weights, rtol=1e-5, atol=1e-6)
    assert ours["target_entropy"] == -1.0 and ours["log_alpha_grad"].shape == (1,)
    assert all(0 < h[3] < 1.01 for h in ours["history"])


def test_tanh_squashed_gaussian_log_prob():
    """SAC's log-prob of a = tanh(u): log N(u; mu, sigma) - log(1 - tanh(u)^2), against NumPy, and
    rsample's gradient: d a / d mu = 1 - tanh(u)^2."""
    torch = OURS.torch
    mu = torch.tensor([[0.3], [-1.2]], requires_grad=True)
    sigma = torch.tensor([[0.5], [2.0]])
    normal = torch.distributions.Normal(mu, sigma)
    u = normal.rsample()
    a = torch.tanh(u)
    log_prob = (normal.log_prob(u) - torch.log(1 - a.pow(2) + 1e-6)).sum(1)
    un, mun, sn = u.detach().numpy().astype(np.float64), np.array([[0.3], [-1.2]]), np.array([[0.5], [2.0]])
    expected = (-0.5 * ((un - mun) / sn) ** 2 - np.log(sn) - 0.5 * np.log(2 * np.pi)
                - np.log(1 - np.tanh(un) ** 2 + 1e-6)).sum(1)
    np.testing.assert_allclose(log_prob.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    a.sum().backward()
    np.testing.assert_allclose(mu.grad.numpy(), 1 - np.tanh(un) ** 2, rtol=1e-5, atol=1e-7)  # (float32 1 - tanh²)


# ----------------------------------------------------------------------------------------------
# Rainbow (Kaixhin/Rainbow): NoisyLinear, a dueling distributional head, the C51 projection by index_add_
# ----------------------------------------------------------------------------------------------


def make_rainbow(m):
    torch, nn, F = m.torch, m.nn, m.F
    import math

    class NoisyLinear(nn.Module):
        def __init__(self, in_features, out_features, std_init=0.5):
            super(NoisyLinear, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.std_init = std_init
            self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
            self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
            self.register_buffer('weight_epsilon', torch.empty(out_features, in_features))
            self.bias_mu = nn.Parameter(torch.empty(out_features))
            self.bias_sigma = nn.Parameter(torch.empty(out_features))
            self.register_buffer('bias_epsilon', torch.empty(out_features))
            self.reset_parameters()
            self.noise = None  # the test's draws, the same in both libraries
            self.reset_noise()

        def reset_parameters(self):
            mu_range = 1 / math.sqrt(self.in_features)
            self.weight_mu.data.uniform_(-mu_range, mu_range)
            self.weight_sigma.data.fill_(self.std_init / math.sqrt(self.in_features))
            self.bias_mu.data.uniform_(-mu_range, mu_range)
            self.bias_sigma.data.fill_(self.std_init / math.sqrt(self.out_features))

        def _scale_noise(self, size):
            x = torch.randn(size, device=self.weight_mu.device) if self.noise is None else next(self.noise)[:size]
            return x.sign().mul_(x.abs().sqrt_())

        def reset_noise(self):
            epsilon_in = self._scale_noise(self.in_features)
            epsilon_out = self._scale_noise(self.out_features)
            self.weight_epsilon.copy_(epsilon_out.ger(epsilon_in))
            self.bias_epsilon.copy_(epsilon_out)

        def forward(self, input):
            if self.training:
                return F.linear(input, self.weight_mu + self.weight_sigma * self.weight_epsilon,
                                self.bias_mu + self.bias_sigma * self.bias_epsilon)
            else:
                return F.linear(input, self.weight_mu, self.bias_mu)

    class DQN(nn.Module):
        def __init__(self, action_space=3, atoms=11, hidden_size=16, noisy_std=0.1):
            super(DQN, self).__init__()
            self.atoms = atoms
            self.action_space = action_space
            self.convs = nn.Sequential(nn.Conv2d(2, 4, 3, stride=1, padding=0), nn.ReLU())
            self.conv_output_size = 4 * 4 * 4
            self.fc_h_v = NoisyLinear(self.conv_output_size, hidden_size, std_init=noisy_std)
            self.fc_h_a = NoisyLinear(self.conv_output_size, hidden_size, std_init=noisy_std)
            self.fc_z_v = NoisyLinear(hidden_size, self.atoms, std_init=noisy_std)
            self.fc_z_a = NoisyLinear(hidden_size, action_space * self.atoms, std_init=noisy_std)

        def forward(self, x, log=False):
            x = self.convs(x)
            x = x.view(-1, self.conv_output_size)
            v = self.fc_z_v(F.relu(self.fc_h_v(x)))  # Value stream
            a = self.fc_z_a(F.relu(self.fc_h_a(x)))  # Advantage stream
            v, a = v.view(-1, 1, self.atoms), a.view(-1, self.action_space, self.atoms)
            q = v + a - a.mean(1, keepdim=True)  # Combine streams
            if log:  # Use log softmax for numerical stability
                q = F.log_softmax(q, dim=2)  # Log probabilities with action over second dimension
            else:
                q = F.softmax(q, dim=2)  # Probabilities with action over second dimension
            return q

        def reset_noise(self):
            for name, module in self.named_children():
                if 'fc' in name:
                    module.reset_noise()

    return DQN()


def rainbow(m, weights, updates=3):
    torch, optim = m.torch, m.optim
    atoms, Vmin, Vmax, batch_size, n, discount = 11, -5.0, 5.0, 8, 3, 0.99
    online_net = load(m, make_rainbow(m), weights)
    target_net = load(m, make_rainbow(m), weights)
    rng = np.random.default_rng(12)
    noise = [torch.tensor(rng.standard_normal(64).astype(np.float32)) for _ in range(200)]
    for net in (online_net, target_net):
        for module in net.children():
            module.noise = iter(noise)
        net.reset_noise()
    target_net.train()
    for param in target_net.parameters():
        param.requires_grad = False
    support = torch.linspace(Vmin, Vmax, atoms)
    delta_z = (Vmax - Vmin) / (atoms - 1)
    optimiser = optim.Adam(online_net.parameters(), lr=1e-3, eps=1.5e-4)
    history = []
    for update in range(updates):
        states = torch.tensor(rng.standard_normal((batch_size, 2, 6, 6)).astype(np.float32))
        next_states = torch.tensor(rng.standard_normal((batch_size, 2, 6, 6)).astype(np.float32))
        actions = torch.tensor(rng.integers(0, 3, batch_size))
        returns = torch.tensor(rng.choice([-1.0, 0.0, 1.0, 8.0], batch_size).astype(np.float32))
        nonterminals = torch.tensor((rng.random((batch_size, 1)) < 0.8).astype(np.float32))
        weights_ = torch.tensor(rng.uniform(0.5, 1.0, batch_size).astype(np.float32))

        log_ps = online_net(states, log=True)
        log_ps_a = log_ps[range(batch_size), actions]

        with torch.no_grad():
            pns = online_net(next_states)
            dns = support.expand_as(pns) * pns
            argmax_indices_ns = dns.sum(2).argmax(1)
            target_net.reset_noise()
            pns = target_net(next_states)
            pns_a = pns[range(batch_size), argmax_indices_ns]

            Tz = returns.unsqueeze(1) + nonterminals * (discount ** n) * support.unsqueeze(0)
            Tz = Tz.clamp(min=Vmin, max=Vmax)
            b = (Tz - Vmin) / delta_z
            l, u = b.floor().to(torch.int64), b.ceil().to(torch.int64)
            l[(u > 0) * (l == u)] -= 1
            u[(l < (atoms - 1)) * (l == u)] += 1

            m_ = states.new_zeros(batch_size, atoms)
            offset = torch.linspace(0, ((batch_size - 1) * atoms), batch_size).unsqueeze(1).expand(
                batch_size, atoms).to(actions)
            m_.view(-1).index_add_(0, (l + offset).view(-1), (pns_a * (u.float() - b)).view(-1))
            m_.view(-1).index_add_(0, (u + offset).view(-1), (pns_a * (b - l.float())).view(-1))

        loss = -torch.sum(m_ * log_ps_a, 1)
        online_net.zero_grad()
        (weights_ * loss).mean().backward()
        m.nn.utils.clip_grad_norm_(online_net.parameters(), 10)
        optimiser.step()
        online_net.reset_noise()
        history.append(((weights_ * loss).mean().item(), loss.detach(), m_))
    return {"history": history, "grads": [p.grad for p in online_net.parameters()],
            "epsilon": online_net.fc_h_v.weight_epsilon}


def test_rainbow_distributional_projection():
    weights = weights_of(make_rainbow)
    ours, _ = run_both(rainbow, weights, rtol=2e-5, atol=2e-6)
    for _, loss, projected in ours["history"]:
        np.testing.assert_allclose(projected.sum(1), 1.0, rtol=1e-5)  # the projection keeps the mass
        assert (projected >= 0).all() and loss.shape == (8,)


def test_c51_projection_by_hand():
    """The projection of a distribution shifted by r + gamma z onto the support, against NumPy."""
    torch = OURS.torch
    atoms, Vmin, Vmax = 5, -2.0, 2.0
    support = torch.linspace(Vmin, Vmax, atoms, dtype=torch.float64)
    p = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2], [0.0, 0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    Tz = (torch.tensor([[0.5], [1.0]], dtype=torch.float64) + 0.9 * support.unsqueeze(0)).clamp(Vmin, Vmax)
    b = (Tz - Vmin) / 1.0
    l, u = b.floor().to(torch.int64), b.ceil().to(torch.int64)
    l[(u > 0) * (l == u)] -= 1
    u[(l < (atoms - 1)) * (l == u)] += 1
    m_ = torch.zeros(2, atoms, dtype=torch.float64)
    offset = torch.tensor([[0], [atoms]]).expand(2, atoms)
    m_.view(-1).index_add_(0, (l + offset).view(-1), (p * (u.double() - b)).view(-1))
    m_.view(-1).index_add_(0, (u + offset).view(-1), (p * (b - l.double())).view(-1))
    expected = np.zeros((2, atoms))
    z = np.linspace(Vmin, Vmax, atoms)
    for i, (r, probs) in enumerate(zip([0.5, 1.0], p.numpy())):
        for j, pj in enumerate(probs):
            tz = min(max(r + 0.9 * z[j], Vmin), Vmax)
            pos = tz - Vmin
            lo = int(np.floor(pos))
            frac = pos - lo
            if frac == 0:
                expected[i, lo] += pj
            else:
                expected[i, lo] += pj * (1 - frac)
                expected[i, lo + 1] += pj * frac
    np.testing.assert_allclose(m_.numpy(), expected, atol=1e-12)
