# ruff: noqa: B007, B023, E741, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Mixtures (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights,
comparing losses, routing, gradients and parameters.

Hugging Face's Mixtral sparse-MoE block (``F.softmax(..., dtype=torch.float)``, ``topk``, ``routing_weights
/=`` in place on the graph, a one-hot expert mask permuted to (expert, k, token), ``hidden_states[None,
top_x]``, ``routing_weights[top_x, idx, None]``, ``index_add_``) with its load-balancing loss, and the
Switch Transformer's top-1 router (capacity by ``cumsum`` of a one-hot, a router z-loss by ``logsumexp``,
expert outputs written through a boolean mask into a clone) with ``bincount`` counts; a mixture density
network, its negative log-likelihood written by hand and by ``MixtureSameFamily(Categorical,
Independent(Normal))``; and Bayes by Backprop: a Bayesian linear layer by the reparameterisation trick
with ``softplus``/``log1p(exp(rho))`` and the closed-form ``kl_divergence`` against a Normal prior."""

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Sparse mixture of experts: Mixtral's block and the Switch Transformer's router
# ----------------------------------------------------------------------------------------------

HIDDEN, FFN, EXPERTS, TOP_K = 8, 12, 4, 2


def moe_model(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MixtralBlockSparseTop2MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(HIDDEN, FFN, bias=False)
            self.w2 = nn.Linear(FFN, HIDDEN, bias=False)
            self.w3 = nn.Linear(HIDDEN, FFN, bias=False)
            self.act_fn = nn.SiLU()

        def forward(self, hidden_states):
            current_hidden_states = self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states)
            current_hidden_states = self.w2(current_hidden_states)
            return current_hidden_states

    class MixtralSparseMoeBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden_dim = HIDDEN
            self.num_experts = EXPERTS
            self.top_k = TOP_K
            self.gate = nn.Linear(self.hidden_dim, self.num_experts, bias=False)
            self.experts = nn.ModuleList([MixtralBlockSparseTop2MLP() for _ in range(self.num_experts)])

        def forward(self, hidden_states):
            batch_size, sequence_length, hidden_dim = hidden_states.shape
            hidden_states = hidden_states.view(-1, hidden_dim)
            router_logits = self.gate(hidden_states)
            routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
            routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
            routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
            routing_weights = routing_weights.to(hidden_states.dtype)
            final_hidden_states = torch.zeros((batch_size * sequence_length, hidden_dim), dtype=hidden_states.dtype,
                                              device=hidden_states.device)
            expert_mask = F.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
            for expert_idx in range(self.num_experts):
                expert_layer = self.experts[expert_idx]
                idx, top_x = torch.where(expert_mask[expert_idx])
                current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)
                current_hidden_states = expert_layer(current_state) * routing_weights[top_x, idx, None]
                final_hidden_states.index_add_(0, top_x, current_hidden_states.to(hidden_states.dtype))
            final_hidden_states = final_hidden_states.reshape(batch_size, sequence_length, hidden_dim)
            return final_hidden_states, router_logits

    class SwitchTop1Router(nn.Module):
        def __init__(self, expert_capacity):
            super().__init__()
            self.num_experts = EXPERTS
            self.expert_capacity = expert_capacity
            self.classifier = nn.Linear(HIDDEN, self.num_experts, bias=False)

        def forward(self, hidden_states):
            router_logits = self.classifier(hidden_states)
            router_probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)
            expert_index = torch.argmax(router_probs, dim=-1)
            expert_index = F.one_hot(expert_index, num_classes=self.num_experts)
            token_priority = torch.cumsum(expert_index, dim=-2)
            expert_capacity_mask = token_priority <= self.expert_capacity
            expert_index = expert_index * expert_capacity_mask
            router_probs = torch.max(router_probs, dim=-1).values.unsqueeze(-1)
            return expert_index, router_probs, router_logits

    class SwitchSparseMLP(nn.Module):
        def __init__(self, expert_capacity=3):
            super().__init__()
            self.router = SwitchTop1Router(expert_capacity)
            self.experts = nn.ModuleDict()
            for idx in range(EXPERTS):
                self.experts[f"expert_{idx}"] = MixtralBlockSparseTop2MLP()

        def forward(self, hidden_states):
            router_mask, router_probs, router_logits = self.router(hidden_states)
            expert_index = torch.argmax(router_mask, dim=-1)
            router_mask = router_mask.bool()
            next_states = hidden_states.clone()
            for idx, expert in enumerate(self.experts.values()):
                token_indices = router_mask[:, :, idx]
                next_states[token_indices] = expert(hidden_states[token_indices]).to(next_states.dtype)
            hidden_states = router_probs * next_states
            return hidden_states, (router_logits, expert_index)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.moe = MixtralSparseMoeBlock()
            self.norm = nn.LayerNorm(HIDDEN)
            self.switch = SwitchSparseMLP()
            self.head = nn.Linear(HIDDEN, 3)

    return Model()


def load_balancing_loss_func(m, gate_logits, num_experts, top_k=2):
    torch = m.torch
    compute_device = gate_logits[0].device
    concatenated_gate_logits = torch.cat([layer_gate.to(compute_device) for layer_gate in gate_logits], dim=0)
    routing_weights = m.F.softmax(concatenated_gate_logits, dim=-1)
    _, selected_experts = torch.topk(routing_weights, top_k, dim=-1)
    expert_mask = m.F.one_hot(selected_experts, num_experts)
    tokens_per_expert = torch.mean(expert_mask.float(), dim=0)
    router_prob_per_expert = torch.mean(routing_weights, dim=0)
    overall_loss = torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0))
    return overall_loss * num_experts


def router_z_loss_func(m, router_logits):
    num_groups, tokens_per_group, _ = router_logits.shape
    log_z = m.torch.logsumexp(router_logits, dim=-1)
    z_loss = log_z ** 2
    return m.torch.sum(z_loss) / (num_groups * tokens_per_group)


def moe_training(m, weights, steps=4):
    torch, F = m.torch, m.F
    model = load(m, moe_model(m), weights)
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(11)
    x = torch.tensor(rng.standard_normal((2, 5, HIDDEN)).astype(np.float32))
    labels = torch.tensor(rng.integers(0, 3, (2, 5)))
    log = []
    for step in range(steps):
        h, router_logits = model.moe(x)
        h = model.norm(x + h)
        s, (switch_logits, expert_index) = model.switch(h)
        logits = model.head(s)
        aux = load_balancing_loss_func(m, (router_logits,), EXPERTS, TOP_K)
        z = router_z_loss_func(m, switch_logits)
        loss = F.cross_entropy(logits.view(-1, 3), labels.view(-1)) + 0.02 * aux + 0.001 * z
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        counts = torch.bincount(torch.topk(router_logits, TOP_K, dim=-1).indices.flatten(), minlength=EXPERTS)
        log.append((loss.item(), aux.item(), z.item(), counts, expert_index))
    return log, [p.grad for p in model.parameters()], [p.detach() for p in model.parameters()]


def test_mixtral_and_switch_moe():
    weights = weights_of(moe_model)
    ours, _ = run_both(moe_training, weights, rtol=1e-4, atol=1e-5)
    log, grads, params = ours
    for loss, aux, z, counts, expert_index in log:
        assert counts.sum() == 2 * 5 * TOP_K and counts.dtype == np.int64
        assert aux >= 1.0 - 1e-6  # E * sum(f_i P_i) >= 1 when the top-k fractions and probabilities agree
        assert expert_index.shape == (2, 5)
    assert log[-1][0] < log[0][0]


def test_switch_capacity_drops_the_late_tokens():
    """Without torch: with capacity 1 only the first token routed to each expert keeps its mask."""
    torch = OURS.torch
    one_hot = OURS.F.one_hot(torch.tensor([[0, 0, 1, 0, 1, 2]]), num_classes=3)
    priority = torch.cumsum(one_hot, dim=-2)
    kept = one_hot * (priority <= 1)
    assert kept.tolist() == [[[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]]]
    assert torch.bincount(torch.tensor([0, 0, 1, 0, 1, 2]), minlength=5).tolist() == [3, 2, 1, 0, 0]


# ----------------------------------------------------------------------------------------------
# A mixture density network
# ----------------------------------------------------------------------------------------------

N_GAUSSIANS = 3


def mdn_model(m):
    torch, nn = m.torch, m.nn

    class MDN(nn.Module):
        def __init__(self, n_hidden, n_gaussians):
            super(MDN, self).__init__()
            self.z_h = nn.Sequential(nn.Linear(1, n_hidden), nn.Tanh())
            self.z_pi = nn.Linear(n_hidden, n_gaussians)
            self.z_sigma = nn.Linear(n_hidden, n_gaussians)
            self.z_mu = nn.Linear(n_hidden, n_gaussians)

        def forward(self, x):
            z_h = self.z_h(x)
            pi = nn.functional.softmax(self.z_pi(z_h), -1)
            sigma = torch.exp(self.z_sigma(z_h))
            mu = self.z_mu(z_h)
            return pi, sigma, mu

    return MDN(n_hidden=20, n_gaussians=N_GAUSSIANS)


def mdn(m, weights, epochs=25, dtype="float32"):
    torch = m.torch
    D = m.torch.distributions
    dtype = getattr(torch, dtype)
    rng = np.random.default_rng(2)
    # the inverted sine: several y for one x
    y_data = rng.uniform(-10.5, 10.5, (200, 1))
    x_data = 7.0 * np.sin(0.75 * y_data) + 0.5 * y_data + rng.standard_normal((200, 1))
    x_tensor = torch.from_numpy(x_data / 10).to(dtype)
    y_tensor = torch.from_numpy(y_data / 10).to(dtype)
    network = load(m, mdn_model(m), weights).to(dtype)

    def mdn_loss_fn(pi, sigma, mu, y):
        m = torch.distributions.Normal(loc=mu, scale=sigma)
        loss = torch.exp(m.log_prob(y))
        loss = torch.sum(loss * pi, dim=1)
        loss = -torch.log(loss)
        return torch.mean(loss)

    def mixture_nll(pi, sigma, mu, y):
        mix = D.Categorical(probs=pi)
        comp = D.Independent(D.Normal(mu.unsqueeze(-1), sigma.unsqueeze(-1)), 1)
        gmm = D.MixtureSameFamily(mix, comp)
        return -gmm.log_prob(y).mean(), gmm

    optimizer = m.optim.Adam(network.parameters())
    optimizer.param_groups[0]["lr"] = 0.03
    losses = []
    for epoch in range(epochs):
        pi_variable, sigma_variable, mu_variable = network(x_tensor)
        loss = mdn_loss_fn(pi_variable, sigma_variable, mu_variable, y_tensor)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    pi, sigma, mu = network(x_tensor)
    by_hand = mdn_loss_fn(pi, sigma, mu, y_tensor)
    by_mixture, gmm = mixture_nll(pi, sigma, mu, y_tensor)
    grads = torch.autograd.grad(by_mixture, list(network.parameters()))
    with torch.no_grad():
        mean, variance = gmm.mean, gmm.variance
        sample_shape = tuple(gmm.sample((4,)).shape)
        k = torch.multinomial(pi[:3], 1).shape
        component = D.Categorical(pi).sample().shape
    return {"losses": losses, "by_hand": by_hand, "by_mixture": by_mixture, "grads": list(grads),
            "mean": mean, "variance": variance, "shapes": (sample_shape, tuple(k), tuple(component)),
            "batch": (tuple(gmm.batch_shape), tuple(gmm.event_shape))}


def test_mixture_density_network():
    weights = weights_of(mdn_model)
    ours, _ = run_both(mdn, weights, rtol=1e-4, atol=1e-4)  # float32 sums over 200 points; float64 below
    assert ours["losses"][-1] < ours["losses"][0]
    np.testing.assert_allclose(ours["by_hand"], ours["by_mixture"], rtol=1e-5)
    assert ours["shapes"] == ((4, 200, 1), (3, 1), (200,)) and ours["batch"] == ((200,), (1,))
    assert (ours["variance"] > 0).all()
    ours64, _ = run_both(mdn, weights, epochs=3, dtype="float64", rtol=1e-10, atol=1e-12)
    assert ours64["mean"].dtype == np.float64


# ----------------------------------------------------------------------------------------------
# Bayes by Backprop
# ----------------------------------------------------------------------------------------------


def bayes_model(m, draw=None):
    torch, nn, F = m.torch, m.nn, m.F
    D = torch.distributions

    class BayesianLinear(nn.Module):
        def __init__(self, in_features, out_features, prior_sigma=1.0):
            super().__init__()
            self.w_mu = nn.Parameter(torch.Tensor(out_features, in_features).uniform_(-0.2, 0.2))
            self.w_rho = nn.Parameter(torch.Tensor(out_features, in_features).uniform_(-5, -4))
            self.b_mu = nn.Parameter(torch.Tensor(out_features).uniform_(-0.2, 0.2))
            self.b_rho = nn.Parameter(torch.Tensor(out_features).uniform_(-5, -4))
            self.prior = D.Normal(0, prior_sigma)
            self.kl = 0

        def forward(self, x):
            w_sigma = torch.log1p(torch.exp(self.w_rho))
            b_sigma = F.softplus(self.b_rho)
            eps_w = torch.randn_like(w_sigma) if draw is None else draw(w_sigma.shape)
            eps_b = torch.randn_like(b_sigma) if draw is None else draw(b_sigma.shape)
            w = self.w_mu + w_sigma * eps_w
            b = self.b_mu + b_sigma * eps_b
            self.kl = (D.kl_divergence(D.Normal(self.w_mu, w_sigma), self.prior).sum()
                       + D.kl_divergence(D.Normal(self.b_mu, b_sigma), self.prior).sum())
            # the Monte Carlo estimate the paper writes: log q(w) - log p(w) at the drawn w
            self.kl_mc = (D.Normal(self.w_mu, w_sigma).log_prob(w).sum() - self.prior.log_prob(w).sum()
                          + D.Normal(self.b_mu, b_sigma).log_prob(b).sum() - self.prior.log_prob(b).sum())
            return F.linear(x, w, b)

    class BayesianNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = BayesianLinear(4, 16)
            self.l2 = BayesianLinear(16, 3)

        def forward(self, x):
            return F.log_softmax(self.l2(F.relu(self.l1(x))), dim=1)

        def kl_loss(self):
            return self.l1.kl + self.l2.kl

    return BayesianNetwork()


def bayes_by_backprop(m, weights, epochs=3, samples=2, noise=True):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(6)
    draw = (lambda shape: torch.tensor(rng.standard_normal(tuple(shape)).astype(np.float32))) if noise else None
    net = bayes_model(m, draw)
    if weights is not None:
        load(m, net, weights)
    X = rng.standard_normal((48, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    loader = m.data.DataLoader(m.data.TensorDataset(torch.tensor(X), torch.tensor(y)), batch_size=16)
    optimizer = m.optim.Adam(net.parameters(), lr=0.05)
    num_batches = len(loader)
    losses = []
    for epoch in range(epochs):
        for batch_idx, (data, target) in enumerate(loader):
            net.zero_grad()
            nll, kl = 0, 0
            for _ in range(samples):
                output = net(data)
                nll = nll + F.nll_loss(output, target, reduction="sum")
                kl = kl + net.kl_loss()
            loss = (kl / num_batches + nll) / samples
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return {"losses": losses, "kl": net.kl_loss(), "kl_mc": net.l1.kl_mc + net.l2.kl_mc,
            "grads": [p.grad for p in net.parameters()], "params": [p.detach() for p in net.parameters()]}


def test_bayes_by_backprop():
    weights = weights_of(lambda m: bayes_model(m))
    ours, _ = run_both(bayes_by_backprop, weights, rtol=1e-4, atol=1e-4)
    assert ours["losses"][-1] < ours["losses"][0] and ours["kl"] > 0
    # each library's own noise, on chainrule alone
    alone = bayes_by_backprop(OURS, weights, noise=False)
    assert np.isfinite(alone["losses"]).all() and alone["losses"][-1] < alone["losses"][0]


def test_kl_divergence_of_normals_is_the_monte_carlo_mean():
    """Without torch: KL(N(1, 0.5) || N(0, 1)) = log 2 + (0.25 + 1) / 2 - 1/2, and the mean of
    log q(w) - log p(w) over draws w ~ q tends to it."""
    torch = OURS.torch
    D = torch.distributions
    q, p = D.Normal(torch.tensor(1.0, dtype=torch.float64), 0.5), D.Normal(0.0, 1.0)
    exact = np.log(2) + 1.25 / 2 - 0.5
    assert np.isclose(D.kl_divergence(q, p).item(), exact, rtol=1e-12)
    torch.manual_seed(0)
    w = q.sample((200000,))
    assert abs((q.log_prob(w) - p.log_prob(w)).mean().item() - exact) < 0.01
