# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Routing, sorting and ranking programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights and data, comparing values, indices (their order among ties), dtypes and gradients, and checked
against NumPy by hand where a formula is short. Mixture-of-experts dispatch: expert-choice routing (``topk`` along
the tokens, ``bmm`` experts, combines by ``index_add_``, ``scatter_add_``, ``scatter_reduce`` sum/mean with
``include_self`` both ways, ``bincount``); dropless sorted dispatch (``sort(stable=True)``, ``bincount`` / ``histc``
counts, ``searchsorted(right=True)`` of cumulative bins, ``index_select``, combine by ``index_add_`` or
``scatter_reduce``); Megatron-core's router and permutation (capacity dropped by probs or by position through
``topk(sorted=False)`` of a 0/1 mask, ``pad_to_capacity``, ``masked_fill_`` with ``iinfo.max``,
``argsort(stable=True)`` / ``index_copy_`` permute and unpermute, Sinkhorn routing, ``histc`` counts), with
searchsorted / bucketize past a NaN in the sequence."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Expert-choice routing (Zhou et al. 2022): each expert takes its top-c tokens (topk along the tokens)
# ----------------------------------------------------------------------------------------------

E_D, E_FF, E_EXPERTS, E_TOKENS = 6, 10, 4, 16


def make_expert_choice(m):
    torch, nn = m.torch, m.nn

    class ExpertChoiceMoE(nn.Module):
        def __init__(self, d_model, d_ff, num_experts, capacity_factor=1.0):
            super().__init__()
            self.num_experts = num_experts
            self.capacity_factor = capacity_factor
            self.gate = nn.Linear(d_model, num_experts, bias=False)
            # the experts' weights stacked, applied by one bmm
            self.w1 = nn.Parameter(torch.randn(num_experts, d_model, d_ff) / math.sqrt(d_model))
            self.w2 = nn.Parameter(torch.randn(num_experts, d_ff, d_model) / math.sqrt(d_ff))

        def forward(self, x):
            b, s, d = x.shape
            tokens = x.reshape(-1, d)
            n = tokens.shape[0]
            capacity = int(n * self.capacity_factor / self.num_experts)
            scores = self.gate(tokens).softmax(dim=-1)                      # (n, e)
            gating, index = torch.topk(scores.t(), capacity, dim=-1)        # (e, c): experts choose tokens
            expert_in = tokens[index]                                       # (e, c, d)
            h = torch.bmm(expert_in, self.w1).relu()
            expert_out = torch.bmm(h, self.w2) * gating.unsqueeze(-1)       # (e, c, d)
            out = torch.zeros_like(tokens)
            out.index_add_(0, index.reshape(-1), expert_out.reshape(-1, d))
            # how many experts took each token (some none, some several)
            taken = torch.bincount(index.flatten(), minlength=n)
            return out.reshape(b, s, d), taken, index

    return ExpertChoiceMoE(E_D, E_FF, E_EXPERTS, capacity_factor=1.5)


def expert_choice(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_expert_choice(m), weights).double()
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((2, E_TOKENS // 2, E_D)))
    target = torch.from_numpy(rng.standard_normal((2, E_TOKENS // 2, E_D)))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        out, taken, index = model(x)
        loss = F.mse_loss(out + x, target)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    grads = [p.grad for p in model.parameters()]
    # the same combination by scatter_add_ on an expanded index, and by scatter_reduce (sum, include_self=False)
    with torch.no_grad():
        tokens = x.reshape(-1, E_D)
        scores = model.gate(tokens).softmax(-1)
        gating, index = torch.topk(scores.t(), index.shape[1], dim=-1)
        h = torch.bmm(tokens[index], model.w1).relu()
        expert_out = (torch.bmm(h, model.w2) * gating.unsqueeze(-1)).reshape(-1, E_D)
        flat = index.reshape(-1, 1).expand(-1, E_D)
        by_scatter_add = torch.zeros_like(tokens).scatter_add_(0, flat, expert_out)
        by_scatter_reduce = tokens.scatter_reduce(0, flat, expert_out, reduce="sum", include_self=False)
        by_mean = tokens.scatter_reduce(0, flat, expert_out, reduce="mean", include_self=True)
        by_index_add = torch.zeros_like(tokens).index_add(0, index.reshape(-1), expert_out)
    return {"history": history, "grads": grads, "taken": taken, "index": index, "by_scatter_add": by_scatter_add,
            "by_scatter_reduce": by_scatter_reduce, "by_mean": by_mean, "by_index_add": by_index_add,
            "tokens": tokens}


def test_expert_choice_routing():
    weights = weights_of(make_expert_choice)
    ours, _ = run_both(expert_choice, weights, rtol=1e-10, atol=1e-12)
    assert ours["taken"].sum() == E_EXPERTS * int(E_TOKENS * 1.5 / E_EXPERTS)
    np.testing.assert_allclose(ours["by_scatter_add"], ours["by_index_add"], rtol=1e-12, atol=1e-14)
    untouched = np.bincount(ours["index"].ravel(), minlength=E_TOKENS) == 0
    np.testing.assert_array_equal(ours["by_scatter_reduce"][untouched], ours["tokens"][untouched])
    np.testing.assert_allclose(ours["by_scatter_reduce"][~untouched], ours["by_index_add"][~untouched], rtol=1e-12)
    counts = np.bincount(ours["index"].ravel(), minlength=E_TOKENS)[:, None] + 1
    np.testing.assert_allclose(ours["by_mean"], (ours["tokens"] + ours["by_index_add"]) / counts, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Token-choice top-2 with dropless, sorted dispatch (as MegaBlocks / "grouped GEMM" code writes it):
# argsort(stable=True) of the flat expert ids, bincount / histc counts, cumsum bins, searchsorted of the
# sorted positions into the bins, per-expert slices, a combine by index_add_ and by scatter_reduce
# ----------------------------------------------------------------------------------------------

T_D, T_FF, T_EXPERTS, T_K = 6, 8, 5, 2


def make_sorted_moe(m):
    torch, nn = m.torch, m.nn

    class Expert(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(T_D, T_FF)
            self.w2 = nn.Linear(T_FF, T_D)

        def forward(self, x):
            return self.w2(nn.functional.gelu(self.w1(x), approximate="tanh"))

    class DroplessMoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.router = nn.Linear(T_D, T_EXPERTS, bias=False)
            self.experts = nn.ModuleList(Expert() for _ in range(T_EXPERTS))

        def route(self, x):
            logits = self.router(x)
            # softmax over the chosen logits only (Mixtral-style renormalisation done the other way round)
            top_logits, top_experts = logits.topk(T_K, dim=-1)
            weights = top_logits.softmax(dim=-1)
            return logits, weights, top_experts

        def forward(self, x, combine="index_add"):
            logits, weights, top_experts = self.route(x)
            flat_experts = top_experts.flatten()
            bin_ids, indices = torch.sort(flat_experts, stable=True)
            tokens_per_expert = torch.bincount(flat_experts, minlength=T_EXPERTS)
            hist = torch.histc(flat_experts.float(), bins=T_EXPERTS, min=0, max=T_EXPERTS - 1)
            bins = torch.cumsum(tokens_per_expert, 0)
            # the expert of each sorted slot, found again from the bins
            slot_expert = torch.searchsorted(bins, torch.arange(flat_experts.numel()), right=True)
            token_of_slot = indices // T_K
            gathered = x.index_select(0, token_of_slot)
            outputs = []
            start = 0
            for e, end in enumerate(bins.tolist()):
                outputs.append(self.experts[e](gathered[start:end]))
                start = end
            expert_out = torch.cat(outputs) * weights.flatten()[indices].unsqueeze(-1)
            if combine == "index_add":
                out = torch.zeros_like(x).index_add_(0, token_of_slot, expert_out)
            else:
                out = torch.zeros_like(x).scatter_reduce(0, token_of_slot.unsqueeze(-1).expand_as(expert_out),
                                                         expert_out, reduce="sum", include_self=True)
            return out, logits, {"bin_ids": bin_ids, "indices": indices, "tokens_per_expert": tokens_per_expert,
                                 "hist": hist, "slot_expert": slot_expert, "top_experts": top_experts,
                                 "weights": weights}

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(11, T_D)
            self.moe = DroplessMoE()
            self.head = nn.Linear(T_D, 11)

        def forward(self, ids, combine):
            h = self.embed(ids)
            out, logits, info = self.moe(h, combine)
            return self.head(h + out), logits, info

    return Model()


def sorted_moe(m, weights, combine):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_sorted_moe(m), weights).double()
    rng = np.random.default_rng(3)
    ids = torch.from_numpy(rng.integers(0, 11, 20))
    targets = torch.roll(ids, -1)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history, infos = [], []
    for step in range(3):
        optimizer.zero_grad()
        logits, router_logits, info = model(ids, combine)
        probs = router_logits.softmax(-1)
        # Switch-style balance over the top-k choices and the z-loss
        f = info["tokens_per_expert"].to(probs.dtype) / (ids.numel() * T_K)
        balance = T_EXPERTS * (f * probs.mean(0)).sum()
        z_loss = torch.logsumexp(router_logits, dim=-1).square().mean()
        loss = F.cross_entropy(logits, targets) + 0.01 * balance + 0.001 * z_loss
        loss.backward()
        optimizer.step()
        history.append([loss.item(), balance.item(), z_loss.item()])
        infos.append(info)
    grads = {k: v.grad for k, v in model.named_parameters() if v.grad is not None}
    hist_dtype = str(infos[0]["hist"].dtype).split(".")[-1]
    return {"history": history, "infos": infos, "grads": grads, "hist_dtype": hist_dtype}


@pytest.mark.parametrize("combine", ["index_add", "scatter_reduce"])
def test_dropless_sorted_dispatch(combine):
    weights = weights_of(make_sorted_moe)
    ours, _ = run_both(sorted_moe, weights, combine, rtol=1e-9, atol=1e-12)
    assert ours["hist_dtype"] == "float32"
    for info in ours["infos"]:
        flat = info["top_experts"].ravel()
        order = np.argsort(flat, kind="stable")
        np.testing.assert_array_equal(info["indices"], order)
        np.testing.assert_array_equal(info["bin_ids"], flat[order])
        np.testing.assert_array_equal(info["slot_expert"], flat[order])
        np.testing.assert_array_equal(info["hist"], np.bincount(flat, minlength=T_EXPERTS))
        np.testing.assert_allclose(info["weights"].sum(-1), 1, rtol=1e-12)
    assert len(ours["grads"]) == 4 + 4 * T_EXPERTS  # every expert was chosen and learns


# ----------------------------------------------------------------------------------------------
# Megatron-core's MoE router and token permutation (as moe_utils.py writes them): top-k softmax with an
# expert capacity whose overflow is dropped by probability or by position (topk(sorted=False) along the
# tokens of a 0/1 mask: which tied token it names matters), pad_to_capacity, final indices masked to
# iinfo(long).max and pushed to the end by argsort(stable=True), permute by index_select and unpermute by
# index_copy_, Sinkhorn routing, the aux loss from histc counts and the z-loss
# ----------------------------------------------------------------------------------------------

M_D, M_FF, M_EXPERTS, M_K = 6, 8, 4, 2


def megatron_utils(m):
    torch = m.torch

    def get_capacity(num_tokens, num_experts, capacity_factor, min_capacity=None):
        capacity = math.ceil((num_tokens / num_experts) * capacity_factor)
        if min_capacity is not None and capacity < min_capacity:
            capacity = min_capacity
        return capacity

    def sinkhorn(cost, tol=0.0001):
        cost = torch.exp(cost)
        d0 = torch.ones(cost.size(0), device=cost.device, dtype=cost.dtype)
        d1 = torch.ones(cost.size(1), device=cost.device, dtype=cost.dtype)
        eps = 0.00000001
        error = 1e9
        d1_old = d1
        while error > tol:
            d0 = (1 / d0.size(0)) * 1 / (torch.sum(d1 * cost, 1) + eps)
            d1 = (1 / d1.size(0)) * 1 / (torch.sum(d0.unsqueeze(1) * cost, 0) + eps)
            error = torch.mean(torch.abs(d1_old - d1))
            d1_old = d1
        return d1 * cost * d0.unsqueeze(1)

    def switch_load_balancing_loss_func(probs, tokens_per_expert, topk, moe_aux_loss_coeff):
        num_tokens = probs.shape[0] * topk
        num_experts = probs.shape[1]
        probs_mean_per_expert = probs.mean(dim=0)
        aux_loss = torch.sum(probs_mean_per_expert * tokens_per_expert) * (
            num_experts / num_tokens * moe_aux_loss_coeff)
        return aux_loss

    def z_loss_func(logits, z_loss_coeff):
        z_loss = torch.mean(torch.square(torch.logsumexp(logits, dim=-1))) * z_loss_coeff
        return z_loss

    def topk_softmax_with_capacity(logits, topk, capacity_factor=None, pad_to_capacity=False, drop_policy="probs",
                                   use_pre_softmax=False):
        assert logits.dim() == 2, f"Expected 2D logits [num_tokens, num_experts], got {logits.dim()}."
        num_tokens = logits.shape[0]
        num_experts = logits.shape[1]
        if use_pre_softmax:
            # Pre softmax
            scores = torch.softmax(logits, dim=-1, dtype=torch.float32).type_as(logits)
            probs, top_indices = torch.topk(scores, k=topk, dim=1)
        else:
            # Post softmax
            scores, top_indices = torch.topk(logits, k=topk, dim=1)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).type_as(logits)
        if capacity_factor is None:
            # TopK without capacity
            tokens_per_expert = torch.bincount(top_indices.view(-1), minlength=num_experts)
            return probs, top_indices, tokens_per_expert
        else:
            # TopK with capacity
            expert_capacity = get_capacity(num_tokens=num_tokens * topk, num_experts=num_experts,
                                           capacity_factor=capacity_factor)
            # TopK selection, Maskout unused experts
            topk_masked_gates = torch.zeros_like(logits).scatter(1, top_indices, probs)
            topk_mask = torch.zeros_like(logits).scatter(1, top_indices, 1)
            # Maskout exceeded tokens
            if drop_policy == "probs":
                capacity_probs, capacity_indices = torch.topk(topk_masked_gates, k=expert_capacity, dim=0,
                                                              sorted=False)
                capacity_mask = torch.zeros_like(logits).scatter(0, capacity_indices, 1)
            elif drop_policy == "position":
                _, capacity_indices = torch.topk(topk_mask, k=expert_capacity, dim=0, sorted=False)
                capacity_mask = torch.zeros_like(logits).scatter(0, capacity_indices, 1)
                capacity_probs = torch.gather(topk_masked_gates, 0, capacity_indices)
            else:
                raise ValueError(f"Invalid drop_policy: {drop_policy}")
            if pad_to_capacity:
                final_probs, final_indices = (capacity_probs.T.contiguous(), capacity_indices.T.contiguous())
                tokens_per_expert_before_capacity = topk_mask.sum(dim=0)
            else:
                # Get exceed mask and maskout exceeded probs and indices
                final_mask = torch.logical_and(topk_mask, capacity_mask)
                drop_mask = torch.logical_not(final_mask)
                exceed_mask = torch.gather(drop_mask, 1, top_indices)
                final_probs = probs * torch.logical_not(exceed_mask)
                final_indices = top_indices.clone().masked_fill_(exceed_mask, torch.iinfo(torch.long).max)
                tokens_per_expert_before_capacity = topk_mask.sum(dim=0)
            return final_probs, final_indices, tokens_per_expert_before_capacity

    def permute(tokens, indices, num_out_tokens=None):
        if indices.dim() == 1:
            topk = 1
        else:
            topk = indices.size(1)
        flatten_indices = indices.view(-1)
        sorted_indices = torch.argsort(flatten_indices, stable=True)
        if num_out_tokens is not None:
            sorted_indices = sorted_indices[:num_out_tokens]
        permuted_tokens = tokens.index_select(0, sorted_indices // topk)
        return permuted_tokens, sorted_indices

    def unpermute(permuted_tokens, sorted_indices, probs=None):
        if probs is not None:
            assert sorted_indices.numel() <= probs.numel()
            num_unpermuted_tokens = probs.numel()
            topk = probs.size(1)
        else:
            num_unpermuted_tokens = permuted_tokens.size(0)
            topk = 1
        unpermuted_tokens = torch.zeros([num_unpermuted_tokens, permuted_tokens.shape[-1]],
                                        dtype=permuted_tokens.dtype, device=permuted_tokens.device)
        unpermuted_tokens.index_copy_(0, sorted_indices, permuted_tokens)
        unpermuted_tokens = unpermuted_tokens.reshape(-1, topk, permuted_tokens.size(-1))
        if probs is not None:
            unpermuted_tokens = unpermuted_tokens * probs.unsqueeze(-1)
        unpermuted_tokens = unpermuted_tokens.sum(dim=1)
        return unpermuted_tokens

    return dict(sinkhorn=sinkhorn, switch_load_balancing_loss_func=switch_load_balancing_loss_func,
                z_loss_func=z_loss_func, topk_softmax_with_capacity=topk_softmax_with_capacity, permute=permute,
                unpermute=unpermute)


def make_megatron_moe(m):
    nn = m.nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear_fc1 = nn.Linear(M_D, 2 * M_FF, bias=False)
            self.linear_fc2 = nn.Linear(M_FF, M_D, bias=False)

        def forward(self, x):
            a, b = self.linear_fc1(x).chunk(2, dim=-1)
            return self.linear_fc2(nn.functional.silu(a) * b)  # SwiGLU

    class MoELayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.router = nn.Linear(M_D, M_EXPERTS, bias=False)
            self.local_experts = nn.ModuleList(MLP() for _ in range(M_EXPERTS))

    return MoELayer()


def megatron_moe(m, weights, routing, drop_policy, pad_to_capacity):
    torch, F, optim = m.torch, m.F, m.optim
    u = megatron_utils(m)
    layer = load(m, make_megatron_moe(m), weights)
    rng = np.random.default_rng(9)
    hidden = torch.from_numpy(rng.standard_normal((14, M_D)).astype(np.float32))
    target = torch.from_numpy(rng.standard_normal((14, M_D)).astype(np.float32))
    optimizer = optim.SGD(layer.parameters(), lr=0.1)
    history, routed = [], []
    for step in range(3):
        optimizer.zero_grad()
        logits = layer.router(hidden)
        z_loss = u["z_loss_func"](logits, 1e-3)
        if routing == "sinkhorn":
            with torch.no_grad():
                norm_logits = u["sinkhorn"](logits.to(dtype=torch.float32))
                _, indices = torch.topk(norm_logits, k=M_K, dim=1)
            logits = torch.sigmoid(logits)
            scores = torch.gather(logits, 1, indices)
            probs, top_indices, aux_loss = scores, indices, z_loss * 0
            num_out_tokens = None
        else:
            probs, top_indices, tokens_per_expert = u["topk_softmax_with_capacity"](
                logits, M_K, capacity_factor=1.0 if drop_policy else None, pad_to_capacity=pad_to_capacity,
                drop_policy=drop_policy or "probs")
            scores = torch.softmax(logits, dim=-1, dtype=torch.float32)
            aux_loss = u["switch_load_balancing_loss_func"](scores, tokens_per_expert, M_K, 1e-2)
            num_out_tokens = int((top_indices != torch.iinfo(torch.long).max).sum())
        if pad_to_capacity:
            # indices are (experts, capacity) token ids: each expert runs on its whole buffer
            out = torch.zeros_like(hidden)
            for e in range(M_EXPERTS):
                expert_out = layer.local_experts[e](hidden[top_indices[e]]) * probs[e].unsqueeze(-1)
                out = out.index_add(0, top_indices[e], expert_out)
            counts = torch.full((M_EXPERTS,), top_indices.shape[1])
        else:
            permuted, sorted_indices = u["permute"](hidden, top_indices, num_out_tokens=num_out_tokens)
            flat = top_indices.view(-1)[sorted_indices]
            counts = torch.histc(flat.float(), bins=M_EXPERTS, min=0, max=M_EXPERTS - 1).long()
            outputs = [layer.local_experts[e](chunk) for e, chunk in enumerate(torch.split(permuted, counts.tolist()))]
            padded = torch.cat(outputs)
            if num_out_tokens is not None and num_out_tokens < top_indices.numel():  # dropped slots stay zero
                padded = torch.cat([padded, padded.new_zeros(top_indices.numel() - num_out_tokens, M_D)])
                sorted_indices = torch.argsort(top_indices.view(-1), stable=True)
            out = u["unpermute"](padded, sorted_indices, probs=probs)
        loss = F.mse_loss(out + hidden, target) + aux_loss + z_loss
        loss.backward()
        optimizer.step()
        history.append([loss.item(), aux_loss.item(), z_loss.item()])
        routed.append({"indices": top_indices, "probs": probs, "counts": counts})
    return {"history": history, "routed": routed, "grads": [p.grad for p in layer.parameters()]}


@pytest.mark.parametrize("routing, drop_policy, pad_to_capacity", [
    ("topk", None, False), ("topk", "probs", False), ("topk", "position", False), ("topk", "probs", True),
    ("topk", "position", True), ("sinkhorn", None, False)])
def test_megatron_router_and_token_permutation(routing, drop_policy, pad_to_capacity):
    weights = weights_of(make_megatron_moe)
    ours, _ = run_both(megatron_moe, weights, routing, drop_policy, pad_to_capacity, rtol=1e-4, atol=1e-6)
    capacity = math.ceil(14 * M_K / M_EXPERTS)
    for r in ours["routed"]:
        if pad_to_capacity:
            assert r["indices"].shape == (M_EXPERTS, capacity)
        elif drop_policy is not None:
            kept = r["indices"] != np.iinfo(np.int64).max
            assert kept.sum() < r["indices"].size  # something overflowed and was dropped
            assert (r["probs"][~kept] == 0).all()
            assert max(np.bincount(r["indices"][kept], minlength=M_EXPERTS)) <= capacity
        else:
            assert r["counts"].sum() == 14 * M_K


def test_searchsorted_and_bucketize_search_past_a_nan_in_the_sequence_as_pytorch(T):
    """PyTorch's binary search asks only whether sequence[mid] >= value (> with right=True), which is False for
    NaN: a NaN in the sequence sends the search right of it. NumPy's search orders NaN last, as a sort does,
    and gave other places (0.5 at 1 in [0, 1, NaN, 2, 3], where PyTorch says 3)."""
    nan = float("nan")
    sequence = T.tensor([0.0, 1.0, nan, 2.0, 3.0])
    values = T.tensor([nan, 0.5, 1.5, 2.5, 5.0])
    assert T.searchsorted(sequence, values).tolist() == [5, 3, 3, 4, 5]
    assert T.searchsorted(sequence, values, right=True).tolist() == [5, 3, 3, 4, 5]
    assert T.bucketize(values, T.tensor([nan, 1.0, 2.0])).tolist() == [3, 1, 2, 3, 3]
    rows = T.tensor([[0.0, 1.0, nan], [1.0, 2.0, 3.0]])
    assert T.searchsorted(rows, T.tensor([[0.5, 2.0], [nan, 2.5]])).tolist() == [[1, 3], [3, 2]]
    assert T.searchsorted(T.tensor([3.0, nan, 1.0, 2.0]), T.tensor([2.0, 0.0, 3.5]),
                          sorter=T.tensor([2, 3, 0, 1])).tolist() == [1, 0, 4]
    assert T.searchsorted(T.tensor([1.0, 2.0, 3.0]), T.tensor([nan, 2.0])).tolist() == [3, 1]  # NaN values: the end
