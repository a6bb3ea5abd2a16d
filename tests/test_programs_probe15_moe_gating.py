# ruff: noqa: B007, F841, UP004, UP008, UP034  (the programs are kept as their authors wrote them)
"""Routing, sorting and ranking programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights and data, comparing values, indices (their order among ties), dtypes and gradients, and checked
against NumPy by hand where a formula is short. Mixture-of-experts gating with capacity: Shazeer et al.'s
sparsely-gated MoE (noisy top-k gating with ``softplus`` noise from ``randn_like``, the load estimator through
``Normal.cdf``, gates put back by ``scatter``, ``cv_squared`` losses, a ``SparseDispatcher`` sorting
``torch.nonzero(gates)``, ``split`` by counts, ``index_add`` of ``exp``-ed outputs); Hugging Face's Switch
Transformers top-1 router (jitter by ``uniform_``, ``cumsum`` priorities, capacity masks, boolean-mask dispatch,
router z-loss and load-balancing loss); GShard top-2 gating (Gumbel second expert from ``exponential_``, capacity by
``cumsum``, ``einsum`` of float gates with int64 ``one_hot`` locations: this found einsum refusing PyTorch's
promoting products, and its focused test)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of


def params_and_grads(model):
    return [p.detach().clone() for p in model.parameters()], [p.grad.clone() for p in model.parameters()]


# ----------------------------------------------------------------------------------------------
# Sparsely-gated mixture of experts (Shazeer et al. 2017, as davidmrau/mixture-of-experts writes it)
# ----------------------------------------------------------------------------------------------

D_IN, D_OUT, N_EXPERTS, HIDDEN, TOP_K = 6, 3, 5, 8, 2


def make_noisy_moe(m):
    torch, nn = m.torch, m.nn
    from_normal = m.torch.distributions.normal.Normal

    class SparseDispatcher(object):
        def __init__(self, num_experts, gates):
            self._gates = gates
            self._num_experts = num_experts
            # sort experts
            sorted_experts, index_sorted_experts = torch.nonzero(gates).sort(0)
            # drop indices
            _, self._expert_index = sorted_experts.split(1, dim=1)
            # get according batch index for each expert
            self._batch_index = torch.nonzero(gates)[index_sorted_experts[:, 1], 0]
            # calculate num samples that each expert gets
            self._part_sizes = (gates > 0).sum(0).tolist()
            # expand gates to match with self._batch_index
            gates_exp = gates[self._batch_index.flatten()]
            self._nonzero_gates = torch.gather(gates_exp, 1, self._expert_index)

        def dispatch(self, inp):
            inp_exp = inp[self._batch_index].squeeze(1)
            return torch.split(inp_exp, self._part_sizes, dim=0)

        def combine(self, expert_out, multiply_by_gates=True):
            # apply exp to expert outputs, so we are not longer in log space
            stitched = torch.cat(expert_out, 0).exp()
            if multiply_by_gates:
                stitched = stitched.mul(self._nonzero_gates)
            zeros = torch.zeros(self._gates.size(0), expert_out[-1].size(1), requires_grad=True,
                                device=stitched.device, dtype=stitched.dtype)
            # combine samples that have been processed by the same k experts
            combined = zeros.index_add(0, self._batch_index, stitched.float() if stitched.dtype == torch.float32
                                       else stitched)
            # add eps to all zero values in order to avoid nans when going back to log space
            combined[combined == 0] = np.finfo(float).eps
            # back to log space
            return combined.log()

        def expert_to_gates(self):
            return torch.split(self._nonzero_gates, self._part_sizes, dim=0)

    class MLP(nn.Module):
        def __init__(self, input_size, output_size, hidden_size):
            super(MLP, self).__init__()
            self.fc1 = nn.Linear(input_size, hidden_size)
            self.fc2 = nn.Linear(hidden_size, output_size)
            self.relu = nn.ReLU()
            self.soft = nn.Softmax(1)

        def forward(self, x):
            out = self.fc1(x)
            out = self.relu(out)
            out = self.fc2(out)
            out = self.soft(out)
            return out

    class MoE(nn.Module):
        def __init__(self, input_size, output_size, num_experts, hidden_size, noisy_gating=True, k=4):
            super(MoE, self).__init__()
            self.noisy_gating = noisy_gating
            self.num_experts = num_experts
            self.output_size = output_size
            self.input_size = input_size
            self.hidden_size = hidden_size
            self.k = k
            self.experts = nn.ModuleList([MLP(self.input_size, self.output_size, self.hidden_size)
                                          for i in range(self.num_experts)])
            self.w_gate = nn.Parameter(torch.zeros(input_size, num_experts), requires_grad=True)
            self.w_noise = nn.Parameter(torch.zeros(input_size, num_experts), requires_grad=True)
            self.softplus = nn.Softplus()
            self.softmax = nn.Softmax(1)
            self.register_buffer("mean", torch.tensor([0.0]))
            self.register_buffer("std", torch.tensor([1.0]))
            assert (self.k <= self.num_experts)

        def cv_squared(self, x):
            eps = 1e-10
            # if only num_experts = 1
            if x.shape[0] == 1:
                return torch.tensor([0], device=x.device, dtype=x.dtype)
            return x.float().var() / (x.float().mean() ** 2 + eps)

        def _gates_to_load(self, gates):
            return (gates > 0).sum(0)

        def _prob_in_top_k(self, clean_values, noisy_values, noise_stddev, noisy_top_values):
            batch = clean_values.size(0)
            m = noisy_top_values.size(1)
            top_values_flat = noisy_top_values.flatten()
            threshold_positions_if_in = torch.arange(batch, device=clean_values.device) * m + self.k
            threshold_if_in = torch.unsqueeze(torch.gather(top_values_flat, 0, threshold_positions_if_in), 1)
            is_in = torch.gt(noisy_values, threshold_if_in)
            threshold_positions_if_out = threshold_positions_if_in - 1
            threshold_if_out = torch.unsqueeze(torch.gather(top_values_flat, 0, threshold_positions_if_out), 1)
            # is each value currently in the top k.
            normal = from_normal(self.mean, self.std)
            prob_if_in = normal.cdf((clean_values - threshold_if_in) / noise_stddev)
            prob_if_out = normal.cdf((clean_values - threshold_if_out) / noise_stddev)
            prob = torch.where(is_in, prob_if_in, prob_if_out)
            return prob

        def noisy_top_k_gating(self, x, train, noise_epsilon=1e-2):
            clean_logits = x @ self.w_gate
            if self.noisy_gating and train:
                raw_noise_stddev = x @ self.w_noise
                noise_stddev = ((self.softplus(raw_noise_stddev) + noise_epsilon))
                noisy_logits = clean_logits + (torch.randn_like(clean_logits) * noise_stddev)
                logits = noisy_logits
            else:
                logits = clean_logits
            # calculate topk + 1 that will be needed for the noisy gates
            logits = self.softmax(logits)
            top_logits, top_indices = logits.topk(min(self.k + 1, self.num_experts), dim=1)
            top_k_logits = top_logits[:, :self.k]
            top_k_indices = top_indices[:, :self.k]
            top_k_gates = top_k_logits / (top_k_logits.sum(1, keepdim=True) + 1e-6)  # normalization
            zeros = torch.zeros_like(logits, requires_grad=True)
            gates = zeros.scatter(1, top_k_indices, top_k_gates)
            if self.noisy_gating and self.k < self.num_experts and train:
                load = (self._prob_in_top_k(clean_logits, noisy_logits, noise_stddev, top_logits)).sum(0)
            else:
                load = self._gates_to_load(gates)
            return gates, load

        def forward(self, x, loss_coef=1e-2):
            gates, load = self.noisy_top_k_gating(x, self.training)
            # calculate importance loss
            importance = gates.sum(0)
            loss = self.cv_squared(importance) + self.cv_squared(load)
            loss *= loss_coef
            dispatcher = SparseDispatcher(self.num_experts, gates)
            expert_inputs = dispatcher.dispatch(x)
            gates = dispatcher.expert_to_gates()
            expert_outputs = [self.experts[i](expert_inputs[i]) for i in range(self.num_experts)]
            y = dispatcher.combine(expert_outputs)
            return y, loss

    return MoE(D_IN, D_OUT, N_EXPERTS, HIDDEN, noisy_gating=True, k=TOP_K)


def moe_data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D_IN))
    y = (x[:, :3] @ rng.standard_normal((3, D_OUT))).argmax(1)
    return x, y


def noisy_moe(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(0)
    model = load(m, make_noisy_moe(m), weights)
    # the gate starts at zeros in the original, so that every expert ties: give it the weights instead
    with torch.no_grad():
        model.w_gate.copy_(torch.linspace(-1, 1, D_IN * N_EXPERTS).reshape(D_IN, N_EXPERTS).sin())
        model.w_noise.copy_(torch.linspace(-0.5, 0.5, D_IN * N_EXPERTS).reshape(D_IN, N_EXPERTS).cos())
    x, y = (torch.from_numpy(a) for a in moe_data())
    x = x.float()
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    losses, aux = [], []
    for step in range(4):
        model.train()
        optimizer.zero_grad()
        log_probs, aux_loss = model(x)
        loss = nn.NLLLoss()(log_probs, y) + aux_loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        aux.append(aux_loss.item())
    model.eval()
    with torch.no_grad():
        gates, expert_load = model.noisy_top_k_gating(x, False)
        log_probs, _ = model(x)
    return {"losses": losses, "aux": aux, "gates": gates, "load": expert_load, "log_probs": log_probs,
            "w_gate": model.w_gate, "w_noise_grad": model.w_noise.grad, "fc1_grad": model.experts[0].fc1.weight.grad}


def test_noisy_top_k_mixture_of_experts():
    weights = weights_of(make_noisy_moe)
    ours, _ = run_both(noisy_moe, weights, rtol=2e-4, atol=2e-6)
    gates = ours["gates"]
    assert ((gates > 0).sum(1) == TOP_K).all()
    np.testing.assert_allclose(gates.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(ours["load"], (gates > 0).sum(0))
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# Switch Transformer routing (top-1, expert capacity, as Hugging Face's SwitchTransformersTop1Router)
# ----------------------------------------------------------------------------------------------

S_BATCH, S_SEQ, S_D, S_FF, S_EXPERTS = 2, 10, 8, 12, 4


def router_z_loss_func(m, router_logits):
    torch = m.torch
    num_groups, tokens_per_group, _ = router_logits.shape
    log_z = torch.logsumexp(router_logits, dim=-1)
    z_loss = log_z ** 2
    return torch.sum(z_loss) / (num_groups * tokens_per_group)


def load_balancing_loss_func(m, router_probs, expert_indices):
    torch = m.torch
    num_experts = router_probs.shape[-1]
    # cast the expert indices to int64, otherwise one-hot encoding will fail
    if expert_indices.dtype != torch.int64:
        expert_indices = expert_indices.to(torch.int64)
    if len(expert_indices.shape) == 2:
        expert_indices = expert_indices.unsqueeze(2)
    expert_mask = m.F.one_hot(expert_indices, num_experts)
    # For a given token, determine if it was routed to a given expert.
    expert_mask = torch.max(expert_mask, axis=-2).values
    # cast to float32 otherwise mean will fail
    expert_mask = expert_mask.to(torch.float32)
    tokens_per_group_and_expert = torch.mean(expert_mask, axis=-2)
    router_prob_per_group_and_expert = torch.mean(router_probs, axis=-2)
    return torch.mean(tokens_per_group_and_expert * router_prob_per_group_and_expert) * (num_experts ** 2)


def make_switch(m, capacity_factor=1.0):
    torch, nn = m.torch, m.nn

    class Top1Router(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_experts = S_EXPERTS
            self.expert_capacity = int(capacity_factor * S_SEQ / S_EXPERTS)
            self.classifier = nn.Linear(S_D, self.num_experts, bias=False)
            self.jitter_noise = 0.1
            self.ignore_padding_tokens = False
            self.dtype = torch.float32

        def _compute_router_probabilities(self, hidden_states):
            self.input_dtype = hidden_states.dtype
            hidden_states = hidden_states.to(self.dtype)
            if self.training and self.jitter_noise > 0:
                # Multiply the token inputs by the uniform distribution - adding some noise
                hidden_states *= torch.empty_like(hidden_states).uniform_(1.0 - self.jitter_noise,
                                                                          1.0 + self.jitter_noise)
            router_logits = self.classifier(hidden_states)
            # Apply Softmax and cast back to the original `dtype`
            router_probabilities = nn.functional.softmax(router_logits, dim=-1, dtype=self.dtype).to(self.input_dtype)
            return router_probabilities, router_logits

        def forward(self, hidden_states):
            router_probs, router_logits = self._compute_router_probabilities(hidden_states)
            expert_index = torch.argmax(router_probs, dim=-1)
            expert_index = nn.functional.one_hot(expert_index, num_classes=self.num_experts)
            # Mask tokens outside expert capacity. Sum over each sequence
            token_priority = torch.cumsum(expert_index, dim=-2)
            # mask if the token routed to to the expert will overflow
            expert_capacity_mask = token_priority <= self.expert_capacity
            expert_index = expert_index * expert_capacity_mask
            router_probs = torch.max(router_probs, dim=-1).values.unsqueeze(-1)
            return expert_index, router_probs, router_logits

    class DenseActDense(nn.Module):
        def __init__(self):
            super().__init__()
            self.wi = nn.Linear(S_D, S_FF, bias=False)
            self.wo = nn.Linear(S_FF, S_D, bias=False)
            self.act = nn.ReLU()

        def forward(self, hidden_states):
            return self.wo(self.act(self.wi(hidden_states)))

    class SparseMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.router = Top1Router()
            self.experts = nn.ModuleDict()
            for idx in range(S_EXPERTS):
                self.experts[f"expert_{idx}"] = DenseActDense()

        def forward(self, hidden_states):
            router_mask, router_probs, router_logits = self.router(hidden_states)
            expert_index = torch.argmax(router_mask, dim=-1)
            # The routers introduced might not always map all the tokens, to a router, which means that some hidden
            # states can be unchanged from one layer to another. That is why the hidden states are cloned before
            # updating only the seleced ones.
            next_states = hidden_states.clone()
            router_mask = router_mask.bool()
            batch_size, seq_len, num_experts = router_mask.shape
            idx_mask = router_mask.reshape(batch_size * seq_len, num_experts).sum(dim=0)
            idx_mask = torch.nonzero(idx_mask, as_tuple=True)[0].tolist()  # length: number of "activated" expert
            for idx in idx_mask:
                next_states[router_mask[:, :, idx]] = getattr(self.experts, f"expert_{idx}")(
                    hidden_states[router_mask[:, :, idx]]
                )
            hidden_states = router_probs * next_states
            return hidden_states, (router_logits, expert_index)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(S_D)
            self.mlp = SparseMLP()
            self.head = nn.Linear(S_D, 3)

        def forward(self, x):
            h, (router_logits, expert_index) = self.mlp(self.norm(x))
            return self.head(x + h), router_logits, expert_index

    return Block()


def switch_data(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((S_BATCH, S_SEQ, S_D)).astype(np.float32)
    y = rng.integers(0, 3, (S_BATCH, S_SEQ))
    return x, y


def switch(m, weights, capacity_factor):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    model = load(m, make_switch(m, capacity_factor), weights)
    x, y = (torch.from_numpy(a) for a in switch_data())
    optimizer = optim.AdamW(model.parameters(), lr=3e-3)
    history, masks = [], []
    for step in range(3):
        optimizer.zero_grad()
        logits, router_logits, expert_index = model(x)
        router_probs = F.softmax(router_logits, dim=-1)
        z_loss = router_z_loss_func(m, router_logits)
        aux_loss = load_balancing_loss_func(m, router_probs, expert_index)
        loss = F.cross_entropy(logits.reshape(-1, 3), y.reshape(-1)) + 1e-3 * z_loss + 1e-2 * aux_loss
        loss.backward()
        history.append([loss.item(), z_loss.item(), aux_loss.item()])
        optimizer.step()
    model.eval()
    with torch.no_grad():
        router_mask, probs, _ = model.mlp.router(model.norm(x))
    grads = {k: v.grad for k, v in model.named_parameters()}
    return {"history": history, "router_mask": router_mask, "mask_dtype": str(router_mask.dtype).split(".")[-1],
            "probs": probs, "grads": grads}


@pytest.mark.parametrize("capacity_factor", [1.0, 2.0])
def test_switch_transformer_top1_router_with_capacity(capacity_factor):
    weights = weights_of(lambda m: make_switch(m, capacity_factor))
    ours, _ = run_both(switch, weights, capacity_factor, rtol=1e-4, atol=1e-6)
    mask = ours["router_mask"]
    capacity = int(capacity_factor * S_SEQ / S_EXPERTS)
    assert ours["mask_dtype"] == "int64"
    assert (mask.sum(1) <= capacity).all() and (mask.sum(-1) <= 1).all()
    if capacity_factor == 1.0:
        assert (mask.sum(-1) == 0).any()  # some tokens overflowed and were dropped


# ----------------------------------------------------------------------------------------------
# GShard's top-2 gating (Lepikhin et al. 2020, as fairseq / DeepSpeed write it): the second expert drawn
# through Gumbel noise from exponential_(), positions in each expert's buffer by cumsum, dropping past
# capacity, combine weights and dispatch mask by einsum of float gates with int64 one_hot locations
# ----------------------------------------------------------------------------------------------


def top2gating(m, logits, capacity_factor=1.0):
    torch, F = m.torch, m.F
    gates = F.softmax(logits, dim=1)
    num_tokens, num_experts = gates.shape
    capacity = 2 * math.ceil(num_tokens / num_experts * capacity_factor)
    indices1_s = torch.argmax(gates, dim=1)
    mask1 = F.one_hot(indices1_s, num_classes=num_experts)
    # Create a mask for 2nd's expert per token using Gumbel-max trick
    logits_w_noise = logits + (-torch.empty_like(logits).exponential_().log())
    logits_except1 = logits_w_noise.masked_fill(mask1.bool(), float("-inf"))
    indices2_s = torch.argmax(logits_except1, dim=1)
    mask2 = F.one_hot(indices2_s, num_classes=num_experts)
    locations1 = torch.cumsum(mask1, dim=0) - 1
    locations2 = torch.cumsum(mask2, dim=0) - 1
    locations2 += torch.sum(mask1, dim=0, keepdim=True)
    me = torch.mean(gates, dim=0)
    ce = torch.mean(mask1.float(), dim=0)
    l_aux = torch.mean(me * ce) * num_experts * num_experts
    mask1 = mask1 * torch.lt(locations1, capacity)
    mask2 = mask2 * torch.lt(locations2, capacity)
    locations1_s = torch.sum(locations1 * mask1, dim=1)
    locations2_s = torch.sum(locations2 * mask2, dim=1)
    mask1_float = mask1.float()
    mask2_float = mask2.float()
    gates1_s = torch.einsum("se,se->s", gates, mask1_float)
    gates2_s = torch.einsum("se,se->s", gates, mask2_float)
    denom_s = gates1_s + gates2_s
    denom_s = torch.clamp(denom_s, min=torch.finfo(denom_s.dtype).eps)
    gates1_s /= denom_s
    gates2_s /= denom_s
    gates1 = torch.einsum("s,se->se", gates1_s, mask1_float)
    gates2 = torch.einsum("s,se->se", gates2_s, mask2_float)
    locations1_sc = F.one_hot(locations1_s, num_classes=capacity)  # int64: einsum's product promotes
    locations2_sc = F.one_hot(locations2_s, num_classes=capacity)
    combine1_sec = torch.einsum("se,sc->sec", gates1, locations1_sc)
    combine2_sec = torch.einsum("se,sc->sec", gates2, locations2_sc)
    combine_weights = combine1_sec + combine2_sec
    dispatch_mask = combine_weights.bool()
    return l_aux, combine_weights, dispatch_mask


def make_gshard(m):
    nn = m.nn

    class MOELayer(nn.Module):
        def __init__(self, d=6, ff=10, experts=4):
            super().__init__()
            self.wg = nn.Linear(d, experts, bias=False)
            self.w1 = nn.Parameter(m.torch.randn(experts, d, ff) * 0.3)
            self.w2 = nn.Parameter(m.torch.randn(experts, ff, d) * 0.3)

        def forward(self, x):
            reshaped = x.reshape(-1, x.shape[-1])
            l_aux, combine_weights, dispatch_mask = top2gating(m, self.wg(reshaped))
            dispatched = m.torch.einsum("sec,sm->ecm", dispatch_mask.to(x.dtype), reshaped)
            h = m.torch.einsum("ecm,emf->ecf", dispatched, self.w1).relu()
            expert_output = m.torch.einsum("ecf,efm->ecm", h, self.w2)
            combined = m.torch.einsum("sec,ecm->sm", combine_weights, expert_output)
            return combined.reshape(x.shape), l_aux, dispatch_mask

    return MOELayer()


def gshard(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    torch.manual_seed(0)
    model = load(m, make_gshard(m), weights)
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.standard_normal((2, 7, 6)).astype(np.float32))
    target = torch.from_numpy(rng.standard_normal((2, 7, 6)).astype(np.float32))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history, masks = [], []
    for step in range(3):
        optimizer.zero_grad()
        out, l_aux, dispatch_mask = model(x)
        loss = F.mse_loss(out + x, target) + 0.01 * l_aux
        loss.backward()
        optimizer.step()
        history.append([loss.item(), l_aux.item()])
        masks.append(dispatch_mask)
    return {"history": history, "masks": masks, "grads": [p.grad for p in model.parameters()]}


def test_gshard_top2_gating_with_capacity():
    weights = weights_of(make_gshard)
    ours, _ = run_both(gshard, weights, rtol=2e-4, atol=1e-6)
    for mask in ours["masks"]:
        tokens_per_slot = mask.sum(0)
        assert tokens_per_slot.max() <= 1  # each (expert, slot) holds one token at most
        assert (mask.sum((1, 2)) <= 2).all() and (mask.sum((1, 2)) >= 1).all()


def test_einsum_multiplies_pairs_without_a_contraction_as_products_which_promote(T):
    """PyTorch's einsum contracts pairwise left to right: a pair with an index summed there goes through bmm
    (one dtype, no bool), any other pair is an elementwise product, which promotes; here every einsum of
    mixed dtypes was refused."""
    gates = T.tensor([[0.25, 0.75], [1.0, 0.0]], requires_grad=True)
    locations = T.tensor([[0, 1, 0], [1, 0, 0]])  # an int64 one_hot
    combine = T.einsum("se,sc->sec", gates, locations)
    assert combine.dtype == T.float32
    assert combine.tolist() == [[[0.0, 0.25, 0.0], [0.0, 0.75, 0.0]], [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]
    combine.backward(T.ones(2, 2, 3))
    assert gates.grad.dtype == T.float32 and gates.grad.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    wide = T.tensor([2.0, 3.0], dtype=T.float64, requires_grad=True)
    outer = T.einsum("se,s->se", gates, wide)  # no index summed: a product, float64
    assert outer.dtype == T.float64 and outer.tolist() == [[0.5, 1.5], [3.0, 0.0]]
    outer.sum().backward()
    assert wide.grad.dtype == T.float64 and wide.grad.tolist() == [1.0, 1.0]
    assert T.einsum("ij,->ij", T.ones(1, 2), T.tensor(2.0, dtype=T.float64)).dtype == T.float64  # 0-d too
    assert T.einsum("i,j->ij", T.tensor([True, False]), T.tensor([True])).tolist() == [[True], [False]]
    assert T.einsum("se,sc,s->sec", gates, locations, wide).dtype == T.float64
    # a summed index: bmm's refusals, naming the dtypes of the pair as far as the left has been taken
    with pytest.raises(RuntimeError, match="expected scalar type Float but found Long"):
        T.einsum("se,sc->ec", gates, locations)
    with pytest.raises(RuntimeError, match="expected scalar type Double but found Long"):
        T.einsum("se,s,sc->ec", gates, wide, locations)
    with pytest.raises(RuntimeError, match="\"bmm\" not implemented for 'Bool'"):
        T.einsum("ij,ij->i", T.ones(2, 2, dtype=T.bool), T.ones(2, 2, dtype=T.bool))
    # an empty operand: zeros of the promoted dtype, nothing contracted
    assert T.einsum("ij,ij->", T.ones(0, 3), T.ones(0, 3, dtype=T.float64)).dtype == T.float64
