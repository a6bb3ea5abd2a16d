# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Language-model building blocks as they are written today, run as tests/probe13_llm_common.py says.
Mixture-of-experts routing beyond Mixtral's: DeepSeek-V3's group-limited sigmoid gate (a bias correcting the choice
only, top-k by ``scatter_`` and ``masked_fill_``) with its sequence-wise balance loss, the aux-loss-free bias update
and ``y[idx] +=`` dispatch with a shared expert; Switch capacity (``cumsum`` of ``one_hot``) and expert-choice
routing on experts stacked in one Parameter."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Mixture-of-experts routing beyond Mixtral's: DeepSeek-V3's gate (sigmoid scores, a bias correcting the
# choice only, group-limited top-k by scatter_ and masked_fill_), ``y[idx] += ...`` dispatch with a shared
# expert, its sequence-wise balance loss by scatter_add_, and the aux-loss-free bias update; Switch's top-1 with
# an expert capacity by cumsum; expert-choice routing (top-k over the tokens); experts as one stacked Parameter
# indexed by the router's choice
# ----------------------------------------------------------------------------------------------

M_D, M_FF, M_E, M_GROUPS, M_TOPK, M_V = 8, 12, 8, 4, 2, 11


def make_deepseek_moe(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.topk, self.n_groups, self.topk_groups, self.route_scale = M_TOPK, M_GROUPS, 2, 2.5
            self.weight = nn.Parameter(torch.randn(M_E, M_D) * M_D ** -0.5)
            self.register_buffer("bias", torch.zeros(M_E))  # e_score_correction_bias: learnt by counting, not SGD

        def forward(self, x):
            scores = F.linear(x, self.weight)
            scores = scores.sigmoid()
            original_scores = scores
            scores = scores + self.bias
            scores = scores.view(x.size(0), self.n_groups, -1)
            group_scores = scores.topk(2, dim=-1)[0].sum(dim=-1)
            indices = group_scores.topk(self.topk_groups, dim=-1)[1]
            mask = scores.new_ones(x.size(0), self.n_groups, dtype=bool).scatter_(1, indices, False)
            scores = scores.masked_fill_(mask.unsqueeze(-1), float("-inf")).flatten(1)
            indices = torch.topk(scores, self.topk, dim=-1)[1]
            weights = original_scores.gather(1, indices)
            weights /= weights.sum(dim=-1, keepdim=True)
            weights *= self.route_scale
            return weights.type_as(x), indices, original_scores

    class Expert(nn.Module):
        def __init__(self, dim, inter_dim):
            super().__init__()
            self.w1 = nn.Linear(dim, inter_dim, bias=False)
            self.w2 = nn.Linear(inter_dim, dim, bias=False)
            self.w3 = nn.Linear(dim, inter_dim, bias=False)

        def forward(self, x):
            return self.w2(F.silu(self.w1(x)) * self.w3(x))

    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = Gate()
            self.experts = nn.ModuleList([Expert(M_D, M_FF) for _ in range(M_E)])
            self.shared_experts = Expert(M_D, 2 * M_FF)

        def forward(self, x):
            shape = x.size()
            x = x.view(-1, M_D)
            weights, indices, scores = self.gate(x)
            y = torch.zeros_like(x)
            counts = torch.bincount(indices.flatten(), minlength=M_E).tolist()
            for i in range(M_E):
                if counts[i] == 0:
                    continue
                expert = self.experts[i]
                idx, top = torch.where(indices == i)
                y[idx] += expert(x[idx]) * weights[idx, top, None]
            z = self.shared_experts(x)
            return (y + z).view(shape), indices, scores

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(M_V, M_D)
            self.norm = nn.RMSNorm(M_D)
            self.moe = MoE()
            self.head = nn.Linear(M_D, M_V, bias=False)

        def forward(self, ids):
            h = self.embed(ids)
            out, indices, scores = self.moe(self.norm(h))
            return self.head(h + out), indices, scores

    return Model()


def seq_balance_loss(m, scores, topk_idx, bsz, seq_len, alpha=0.01):
    """DeepSeek-V2/V3's sequence-wise auxiliary loss (modeling_deepseek.py's MoEGate, seq_aux=True)."""
    torch = m.torch
    scores_for_seq_aux = scores.view(bsz, seq_len, -1)
    topk_idx_for_aux_loss = topk_idx.view(bsz, -1)
    ce = torch.zeros(bsz, M_E)
    ce.scatter_add_(1, topk_idx_for_aux_loss, torch.ones(bsz, seq_len * M_TOPK)).div_(seq_len * M_TOPK / M_E)
    scores_for_seq_aux = scores_for_seq_aux / scores_for_seq_aux.sum(dim=-1, keepdim=True)
    return (ce * scores_for_seq_aux.mean(dim=1)).sum(dim=1).mean() * alpha


def deepseek_moe_program(m, weights, steps=4, bias_update_speed=0.01):
    torch, F = m.torch, m.F
    model = load(m, make_deepseek_moe(m), weights)
    ids = torch.tensor(np.random.default_rng(4).integers(0, M_V, (3, 7)))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    log, routes, biases = [], [], []
    for step in range(steps):
        logits, indices, scores = model(ids[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, M_V), ids[:, 1:].reshape(-1))
        aux = seq_balance_loss(m, scores, indices, 3, 6)
        loss = ce + aux
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # auxiliary-loss-free balancing: raise the bias of underloaded experts
            load_ = torch.bincount(indices.flatten(), minlength=M_E).float()
            model.moe.gate.bias += bias_update_speed * torch.sign(load_.mean() - load_)
        log.append([ce.item(), aux.item()])
        routes.append(indices)
        biases.append(model.moe.gate.bias.clone())
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, routes, biases, grads


def test_deepseek_v3_gate_group_limited_routing_and_bias_balancing():
    weights = weights_of(make_deepseek_moe)
    (log, routes, biases, grads), _ = run_both(deepseek_moe_program, weights, rtol=1e-4, atol=1e-6)
    for indices in routes:
        # group-limited: each token's experts lie in at most topk_groups (2) of the 4 groups, and differ
        assert (np.array([len(set(row // (M_E // M_GROUPS))) for row in indices]) <= 2).all()
        assert (indices[:, 0] != indices[:, 1]).all()
    counts = np.bincount(routes[0].ravel(), minlength=M_E)
    np.testing.assert_allclose(biases[0], 0.01 * np.sign(counts.mean() - counts))
    assert grads["moe.gate.weight"] is not None and np.abs(grads["moe.gate.weight"]).sum() > 0
    assert "moe.gate.bias" not in grads


def make_stacked_moe(m, routing):
    torch, nn, F = m.torch, m.nn, m.F

    class StackedExperts(nn.Module):
        """Every expert's weights in one Parameter (torchtitan's GroupedExperts, looped)."""
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.empty(M_E, M_D, M_FF))
            self.w2 = nn.Parameter(torch.empty(M_E, M_FF, M_D))
            self.w3 = nn.Parameter(torch.empty(M_E, M_D, M_FF))
            for w in (self.w1, self.w2, self.w3):
                nn.init.trunc_normal_(w, mean=0.0, std=0.02 * 10)

        def forward(self, x, expert_index):
            # each token's own expert weights, gathered from the stack: (tokens, D, FF)
            w1, w2, w3 = self.w1[expert_index], self.w2[expert_index], self.w3[expert_index]
            h = F.silu(torch.einsum("td,tdf->tf", x, w1)) * torch.einsum("td,tdf->tf", x, w3)
            return torch.einsum("tf,tfd->td", h, w2)

    class SwitchMoE(nn.Module):
        def __init__(self, capacity_factor=1.0):
            super().__init__()
            self.router = nn.Linear(M_D, M_E, bias=False)
            self.experts = StackedExperts()
            self.capacity_factor = capacity_factor

        def forward(self, x):
            tokens = x.shape[0]
            router_probs = F.softmax(self.router(x), dim=-1)
            if routing == "switch":
                expert_index = torch.argmax(router_probs, dim=-1)
                expert_mask = F.one_hot(expert_index, num_classes=M_E)
                capacity = int(self.capacity_factor * tokens / M_E)
                # the position of each token in its expert's queue; tokens past the capacity are dropped
                token_priority = torch.cumsum(expert_mask, dim=-2)
                expert_capacity_mask = token_priority <= capacity
                expert_mask = expert_mask * expert_capacity_mask
                kept = expert_mask.sum(-1).bool()
                gate = torch.max(router_probs, dim=-1).values
                out = torch.zeros_like(x)
                out[kept] = self.experts(x[kept], expert_index[kept]) * gate[kept].unsqueeze(-1)
                # Switch's load-balancing loss on the router's whole choice
                tokens_per_expert = torch.mean(F.one_hot(expert_index, M_E).float(), dim=0)
                aux = M_E * torch.sum(tokens_per_expert * router_probs.mean(0))
                return x + out, aux, kept
            # expert choice: each expert takes its top-capacity tokens (Zhou et al., 2022)
            capacity = int(self.capacity_factor * tokens * 2 / M_E)
            gates, token_index = torch.topk(router_probs.t(), capacity, dim=-1)  # (E, capacity)
            dispatch = F.one_hot(token_index, num_classes=tokens).to(x.dtype)  # (E, capacity, tokens)
            expert_inputs = torch.einsum("ect,td->ecd", dispatch, x)
            expert_ids = torch.arange(M_E).repeat_interleave(capacity)
            expert_outputs = self.experts(expert_inputs.reshape(-1, M_D), expert_ids).view(M_E, capacity, M_D)
            out = torch.einsum("ect,ec,ecd->td", dispatch, gates, expert_outputs)
            chosen = torch.zeros(tokens, dtype=torch.long).index_add_(0, token_index.flatten(),
                                                                     torch.ones(M_E * capacity, dtype=torch.long))
            return x + out, torch.zeros(()), chosen

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(M_V, M_D)
            self.pos = nn.Embedding(8, M_D)  # (equal tokens tie in the expert-choice top-k without it)
            self.moe = SwitchMoE(capacity_factor=1.25)
            self.head = nn.Linear(M_D, M_V)

        def forward(self, ids):
            h = self.embed(ids) + self.pos(torch.arange(ids.shape[1]))
            h, aux, kept = self.moe(h.view(-1, M_D))
            return self.head(h).view(*ids.shape, M_V), aux, kept

    return Model()


def stacked_moe_program(m, weights, routing, steps=3):
    torch, F = m.torch, m.F
    model = load(m, make_stacked_moe(m, routing), weights)
    # no token repeats at one position across the batch: equal hidden states would tie in the top-k, and NumPy's
    # BLAS rounds equal rows of a product differently by where they lie, so the ties would break differently
    rng = np.random.default_rng(6)
    ids = torch.tensor(np.stack([rng.choice(M_V, 4, replace=False) for _ in range(6)], 1))
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    log, kepts = [], []
    for step in range(steps):
        logits, aux, kept = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, M_V), ids[:, 1:].reshape(-1)) + 0.01 * aux
        optimizer.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        log.append(loss.item())
        kepts.append(kept)
    return log, kepts, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("routing", ["switch", "expert_choice"])
def test_switch_capacity_and_expert_choice_on_stacked_experts(routing):
    weights = weights_of(lambda m: make_stacked_moe(m, routing))
    (log, kepts, grads), _ = run_both(stacked_moe_program, weights, routing, rtol=1e-4, atol=1e-6)
    tokens, capacity = 20, int(1.25 * 20 / M_E)
    if routing == "switch":
        assert all(k.sum() <= M_E * capacity for k in kepts) and not kepts[0].all()
    else:
        assert all(k.sum() == M_E * int(1.25 * 20 * 2 / M_E) for k in kepts)
    per_expert = np.abs(grads["moe.experts.w1"]).sum(axis=(1, 2))
    if routing == "expert_choice":
        assert (per_expert > 0).all()  # every expert takes its tokens, so each slice of the stack learns
    else:
        assert (per_expert > 0).sum() <= len(np.unique(np.flatnonzero(kepts[-1])))  # only the experts that kept tokens
    assert np.isfinite(log).all()
