# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031, UP034  (the programs are kept as their authors wrote them)
"""Routing, sorting and ranking programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and data, comparing values, indices (their order among ties), dtypes and gradients, and
checked against NumPy by hand where a formula is short.

Mixture-of-experts routing:
- Shazeer et al.'s sparsely-gated MoE (noisy top-k gating with ``softplus`` noise from ``randn_like``, the
  load estimator through ``Normal.cdf``, gates put back by ``scatter``, ``cv_squared`` losses, a
  ``SparseDispatcher`` sorting ``torch.nonzero(gates)``, ``split`` by counts, ``index_add`` of ``exp``-ed
  outputs);
- Hugging Face's Switch Transformers top-1 router (jitter by ``uniform_``, ``cumsum`` priorities, capacity
  masks, boolean-mask dispatch, router z-loss and load-balancing loss);
- expert-choice routing (``topk`` along the tokens, ``bmm`` experts, combines by ``index_add_``,
  ``scatter_add_``, ``scatter_reduce`` sum/mean with ``include_self`` both ways, ``bincount``);
- dropless sorted dispatch (``sort(stable=True)``, ``bincount`` / ``histc`` counts, ``searchsorted(right=True)``
  of cumulative bins, ``index_select``, combine by ``index_add_`` or ``scatter_reduce``);
- GShard top-2 gating (Gumbel second expert from ``exponential_``, capacity by ``cumsum``, ``einsum`` of float
  gates with int64 ``one_hot`` locations: this found einsum refusing PyTorch's promoting products);
- Megatron-core's router and permutation (capacity dropped by probs or by position through
  ``topk(sorted=False)`` of a 0/1 mask, ``pad_to_capacity``, ``masked_fill_`` with ``iinfo.max``,
  ``argsort(stable=True)`` / ``index_copy_`` permute and unpermute, Sinkhorn routing, ``histc`` counts);
- V-MoE batch prioritized routing and Soft MoE; sparsemax / entmax-1.5 gates as ``autograd.Function``s
  against autograd through ``sort`` / ``cumsum`` / ``gather`` (with a Hessian-vector product).
Ranking and sorting:
- NeuralSort and SoftSort relaxed permutations learnt to sort (Gumbel perturbation, straight-through hard
  SoftSort, Spearman by ``argsort(argsort)``);
- allRank's LambdaLoss with its weighing schemes, ApproxNDCG, NeuralNDCG (Sinkhorn), NDCG@k and MRR@k on
  padded slates in float32;
- torchmetrics-style metrics with ties (average ranks, tie-averaged NDCG by ``unique(return_inverse,
  return_counts)`` and ``scatter_add_``, ROC/AUROC, AP, Kendall's tau-b);
- segment reductions by hand (``repeat_interleave`` ids, ``cumsum`` differences, ``segment_reduce``,
  ``scatter_reduce`` mean/amax from -inf, a segment softmax, ``unique_consecutive``, ``kthvalue``
  thresholds); order statistics of an ensemble (``median`` / ``sort`` / ``quantile`` / ``kthvalue`` along the
  members with tied members, majority vote by ``mode``).
Focused tests of the fixes: einsum's promotion of pairs it multiplies, searchsorted / bucketize past a NaN in
the sequence, nanmedian's index in a slice of NaN only, float16 scatters accumulated in float32, bincount of
weights that require grad recorded without a derivative.
"""

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
# Learning to sort: NeuralSort (Grover et al. 2019) and SoftSort (Prillo & Eisenschlos 2020) relaxed
# permutation matrices, trained against the true permutation from torch.sort, with Gumbel perturbation
# ----------------------------------------------------------------------------------------------


def neural_sort(m, s, tau):
    """s: (batch, n, 1) scores; the relaxed permutation matrix sorting them in decreasing order."""
    torch = m.torch
    A = s - s.permute(0, 2, 1)
    A = A.abs()
    n = s.size(1)
    one = torch.ones((n, 1), dtype=s.dtype)
    B = torch.matmul(A, torch.matmul(one, torch.transpose(one, 0, 1)))
    scaling = (n + 1 - 2 * (torch.arange(n) + 1)).type(s.dtype)
    C = torch.matmul(s, scaling.unsqueeze(0))
    P_max = (C - B).permute(0, 2, 1)
    sm = m.nn.Softmax(-1)
    P_hat = sm(P_max / tau)
    return P_hat


def soft_sort(m, scores, tau, hard=False, pow=1.0):
    torch = m.torch
    scores = scores.unsqueeze(-1)
    sorted = scores.sort(descending=True, dim=1)[0]
    pairwise_diff = (scores.transpose(1, 2) - sorted).abs().pow(pow).neg() / tau
    P_hat = pairwise_diff.softmax(-1)
    if hard:
        P = torch.zeros_like(P_hat)
        P.scatter_(-1, P_hat.topk(1, -1)[1], value=1)
        P_hat = (P - P_hat).detach() + P_hat
    return P_hat


def sample_gumbel(m, samples_shape, eps=1e-10):
    torch = m.torch
    U = torch.rand(samples_shape, dtype=torch.float64)
    return -torch.log(-torch.log(U + eps) + eps)


def make_scorer(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


def sort_data(batch=6, n=7, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n, 4))
    key = x @ np.array([1.0, -0.5, 0.25, 0.0])
    key[0, :3] = 0.0  # a tie in the true order: argsort(stable=True) decides it
    return x, key


def learn_to_sort(m, weights, method):
    torch, optim = m.torch, m.optim
    torch.manual_seed(0)
    model = load(m, make_scorer(m), weights).double()
    x, key = (torch.from_numpy(a) for a in sort_data())
    true_perm = torch.argsort(key, dim=-1, descending=True, stable=True)
    P_true = m.F.one_hot(true_perm, key.shape[1]).double()
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    history = []
    for step in range(5):
        optimizer.zero_grad()
        scores = model(x).squeeze(-1)
        perturbed = scores + 0.1 * sample_gumbel(m, scores.shape)
        if method == "neuralsort":
            P_hat = neural_sort(m, perturbed.unsqueeze(-1), tau=1.0)
        else:
            P_hat = soft_sort(m, perturbed, tau=1.0, hard=method == "softsort_hard")
        if method == "softsort_hard":  # straight through: a hard matrix's log is -inf off its ones
            loss = ((P_hat - P_true) ** 2).sum(-1).mean()
        else:
            loss = -(P_true * torch.log(P_hat + 1e-20)).sum(-1).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        scores = model(x).squeeze(-1)
        P = neural_sort(m, scores.unsqueeze(-1), tau=1e-3) if method == "neuralsort" else soft_sort(m, scores, 1e-3)
        predicted = P.argmax(-1)
        # Spearman's rank correlation through argsort(argsort)
        r_pred = scores.argsort(-1, descending=True).argsort(-1).double()
        r_true = true_perm.argsort(-1).double()
        n = key.shape[1]
        spearman = 1 - 6 * ((r_pred - r_true) ** 2).sum(-1) / (n * (n * n - 1))
    return {"history": history, "P_hat": P_hat, "predicted": predicted, "by_sort": scores.sort(-1, descending=True)[1],
            "true_perm": true_perm, "spearman": spearman, "grads": [p.grad for p in model.parameters()]}


@pytest.mark.parametrize("method", ["neuralsort", "softsort", "softsort_hard"])
def test_learning_to_sort(method):
    weights = weights_of(make_scorer)
    ours, _ = run_both(learn_to_sort, weights, method, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["P_hat"].sum(-1), 1, rtol=1e-12)
    np.testing.assert_array_equal(ours["predicted"], ours["by_sort"])  # a cold relaxation is the sort
    x, key = sort_data()
    np.testing.assert_array_equal(ours["true_perm"][0], np.argsort(-key[0], kind="stable"))
    assert ours["history"][-1] < ours["history"][0]
    assert ours["spearman"].min() >= -1 and ours["spearman"].max() <= 1


# ----------------------------------------------------------------------------------------------
# allRank's listwise losses and metrics (float32, as allRank runs them) on padded slates: LambdaLoss with
# its weighing schemes (sort, gather, log2 discounts, masks of pairs), ApproxNDCG, NeuralNDCG (the masked
# deterministic NeuralSort made doubly stochastic by Sinkhorn scaling), NDCG@k and MRR@k
# ----------------------------------------------------------------------------------------------

PADDED_Y_VALUE = -1
DEFAULT_EPS = 1e-10


def allrank_losses(m):
    torch = m.torch
    dev = torch.device("cpu")

    def lambdaLoss(y_pred, y_true, eps=DEFAULT_EPS, padded_value_indicator=PADDED_Y_VALUE, weighing_scheme=None,
                   k=None, sigma=1., mu=10., reduction="sum", reduction_log="binary"):
        device = y_pred.device
        y_pred = y_pred.clone()
        y_true = y_true.clone()
        padded_mask = y_true == padded_value_indicator
        y_pred[padded_mask] = float("-inf")
        y_true[padded_mask] = float("-inf")
        y_pred_sorted, indices_pred = y_pred.sort(descending=True, dim=-1)
        y_true_sorted, _ = y_true.sort(descending=True, dim=-1)
        true_sorted_by_preds = torch.gather(y_true, dim=1, index=indices_pred)
        true_diffs = true_sorted_by_preds[:, :, None] - true_sorted_by_preds[:, None, :]
        padded_pairs_mask = torch.isfinite(true_diffs)
        if weighing_scheme != "ndcgLoss1_scheme":
            padded_pairs_mask = padded_pairs_mask & (true_diffs > 0)
        ndcg_at_k_mask = torch.zeros((y_pred.shape[1], y_pred.shape[1]), dtype=torch.bool, device=device)
        ndcg_at_k_mask[:k, :k] = 1
        true_sorted_by_preds.clamp_(min=0.)
        y_true_sorted.clamp_(min=0.)
        pos_idxs = torch.arange(1, y_pred.shape[1] + 1).to(device)
        D = torch.log2(1. + pos_idxs.float())[None, :]
        maxDCGs = torch.sum(((torch.pow(2, y_true_sorted) - 1) / D)[:, :k], dim=-1).clamp(min=eps)
        G = (torch.pow(2, true_sorted_by_preds) - 1) / maxDCGs[:, None]
        if weighing_scheme is None:
            weights = 1.
        else:
            weights = schemes[weighing_scheme](G, D, mu, true_sorted_by_preds)
        scores_diffs = (y_pred_sorted[:, :, None] - y_pred_sorted[:, None, :]).clamp(min=-1e8, max=1e8)
        scores_diffs.masked_fill(torch.isnan(scores_diffs), 0.)
        weighted_probas = (torch.sigmoid(sigma * scores_diffs).clamp(min=eps) ** weights).clamp(min=eps)
        if reduction_log == "natural":
            losses = torch.log(weighted_probas)
        elif reduction_log == "binary":
            losses = torch.log2(weighted_probas)
        if reduction == "sum":
            loss = -torch.sum(losses[padded_pairs_mask & ndcg_at_k_mask])
        elif reduction == "mean":
            loss = -torch.mean(losses[padded_pairs_mask & ndcg_at_k_mask])
        return loss

    def ndcgLoss1_scheme(G, D, *args):
        return (G / D)[:, :, None]

    def ndcgLoss2_scheme(G, D, *args):
        pos_idxs = torch.arange(1, G.shape[1] + 1, device=G.device)
        delta_idxs = torch.abs(pos_idxs[:, None] - pos_idxs[None, :])
        deltas = torch.abs(torch.pow(torch.abs(D[0, delta_idxs - 1]), -1.)
                           - torch.pow(torch.abs(D[0, delta_idxs]), -1.))
        deltas.diagonal().zero_()
        return deltas[None, :, :] * torch.abs(G[:, :, None] - G[:, None, :])

    def lambdaRank_scheme(G, D, *args):
        return torch.abs(torch.pow(D[:, :, None], -1.) - torch.pow(D[:, None, :], -1.)) * \
            torch.abs(G[:, :, None] - G[:, None, :])

    def ndcgLoss2PP_scheme(G, D, *args):
        return args[0] * ndcgLoss2_scheme(G, D) + lambdaRank_scheme(G, D)

    def rankNetWeightedByGTDiff_scheme(G, D, *args):
        return torch.abs(args[1][:, :, None] - args[1][:, None, :])

    schemes = {"ndcgLoss1_scheme": ndcgLoss1_scheme, "ndcgLoss2_scheme": ndcgLoss2_scheme,
               "lambdaRank_scheme": lambdaRank_scheme, "ndcgLoss2PP_scheme": ndcgLoss2PP_scheme,
               "rankNetWeightedByGTDiff_scheme": rankNetWeightedByGTDiff_scheme}

    def approxNDCGLoss(y_pred, y_true, padded_value_indicator=PADDED_Y_VALUE, alpha=1.):
        device = y_pred.device
        y_pred = y_pred.clone()
        y_true = y_true.clone()
        padded_mask = y_true == padded_value_indicator
        y_pred[padded_mask] = float("-inf")
        y_true[padded_mask] = float("-inf")
        y_pred_sorted, indices_pred = y_pred.sort(descending=True, dim=-1)
        y_true_sorted, _ = y_true.sort(descending=True, dim=-1)
        true_sorted_by_preds = torch.gather(y_true, dim=1, index=indices_pred)
        true_diffs = true_sorted_by_preds[:, :, None] - true_sorted_by_preds[:, None, :]
        padded_pairs_mask = torch.isfinite(true_diffs)
        padded_pairs_mask.diagonal(dim1=-2, dim2=-1).zero_()
        true_sorted_by_preds.clamp_(min=0.)
        y_true_sorted.clamp_(min=0.)
        pos_idxs = torch.arange(1, y_pred.shape[1] + 1).to(device)
        D = torch.log2(1. + pos_idxs.float())[None, :]
        maxDCGs = torch.sum((torch.pow(2, y_true_sorted) - 1) / D, dim=-1).clamp(min=DEFAULT_EPS)
        G = (torch.pow(2, true_sorted_by_preds) - 1) / maxDCGs[:, None]
        scores_diffs = (y_pred_sorted[:, :, None] - y_pred_sorted[:, None, :])
        scores_diffs[~padded_pairs_mask] = 0.
        approx_pos = 1. + torch.sum(padded_pairs_mask.float() * (torch.sigmoid(-alpha * scores_diffs)
                                                                 .clamp(min=DEFAULT_EPS)), dim=-1)
        approx_D = torch.log2(1. + approx_pos)
        approx_NDCG = torch.sum((G / approx_D), dim=-1)
        return -torch.mean(approx_NDCG)

    def sinkhorn_scaling(mat, mask=None, tol=1e-6, max_iter=50):
        if mask is not None:
            mat = mat.masked_fill(mask[:, None, :] | mask[:, :, None], 0.0)
            mat = mat.masked_fill(mask[:, None, :] & mask[:, :, None], 1.0)
        for _ in range(max_iter):
            mat = mat / mat.sum(dim=1, keepdim=True).clamp(min=DEFAULT_EPS)
            mat = mat / mat.sum(dim=2, keepdim=True).clamp(min=DEFAULT_EPS)
            if torch.max(torch.abs(mat.sum(dim=2) - 1.)) < tol and torch.max(torch.abs(mat.sum(dim=1) - 1.)) < tol:
                break
        if mask is not None:
            mat = mat.masked_fill(mask[:, None, :] | mask[:, :, None], 0.0)
        return mat

    def deterministic_neural_sort(s, tau, mask):
        n = s.size()[1]
        one = torch.ones((n, 1), dtype=torch.float32, device=dev)
        s = s.masked_fill(mask[:, :, None], -1e8)
        A_s = torch.abs(s - s.permute(0, 2, 1))
        A_s = A_s.masked_fill(mask[:, :, None] | mask[:, None, :], 0.0)
        B = torch.matmul(A_s, torch.matmul(one, torch.transpose(one, 0, 1)))
        temp = [n - m + 1 - 2 * (torch.arange(n - m, device=dev) + 1) for m in mask.squeeze(-1).sum(dim=1)]
        temp = [t.type(torch.float32) for t in temp]
        temp = [torch.cat((t, torch.zeros(n - len(t), device=dev))) for t in temp]
        scaling = torch.stack(temp).type(torch.float32).to(dev)
        s = s.masked_fill(mask[:, :, None], 0.0)
        C = torch.matmul(s, scaling.unsqueeze(-2))
        P_max = (C - B).permute(0, 2, 1)
        P_max = P_max.masked_fill(mask[:, :, None] | mask[:, None, :], -np.inf)
        P_max = P_max.masked_fill(mask[:, :, None] & mask[:, None, :], 1.0)
        sm = m.nn.Softmax(-1)
        P_hat = sm(P_max / tau)
        return P_hat

    def _apply_mask_and_get_true_sorted_by_preds(y_pred, y_true):
        mask = y_true == PADDED_Y_VALUE
        y_pred[mask] = float('-inf')
        y_true[mask] = 0.0
        _, indices = y_pred.sort(descending=True, dim=-1)
        return torch.gather(y_true, dim=1, index=indices)

    def dcg(y_pred, y_true, ats=None, gain_function=lambda x: torch.pow(2, x) - 1):
        y_true = y_true.clone()
        y_pred = y_pred.clone()
        actual_length = y_true.shape[1]
        if ats is None:
            ats = [actual_length]
        ats = [min(at, actual_length) for at in ats]
        true_sorted_by_preds = _apply_mask_and_get_true_sorted_by_preds(y_pred, y_true)
        discounts = (torch.tensor(1) / torch.log2(torch.arange(true_sorted_by_preds.shape[1], dtype=torch.float)
                                                  + 2.0)).to(device=dev)
        gains = gain_function(true_sorted_by_preds)
        discounted_gains = (gains * discounts)[:, :np.max(ats)]
        cum_dcg = torch.cumsum(discounted_gains, dim=1)
        ats_tensor = torch.tensor(ats, dtype=torch.long) - torch.tensor(1)
        return cum_dcg[:, ats_tensor]

    def ndcg(y_pred, y_true, ats=None, gain_function=lambda x: torch.pow(2, x) - 1):
        idcg = dcg(y_true, y_true, ats, gain_function)
        ndcg_ = dcg(y_pred, y_true, ats, gain_function) / idcg
        idcg_mask = idcg == 0
        ndcg_[idcg_mask] = 0.
        return ndcg_

    def mrr(y_pred, y_true, ats=None):
        y_true = y_true.clone()
        y_pred = y_pred.clone()
        if ats is None:
            ats = [y_true.shape[1]]
        true_sorted_by_preds = _apply_mask_and_get_true_sorted_by_preds(y_pred, y_true)
        values, indices = torch.max(true_sorted_by_preds, dim=1)
        indices = indices.type_as(values).unsqueeze(dim=0).t().expand(len(y_true), len(ats))
        ats_rep = torch.tensor(data=ats, device=dev, dtype=torch.float32).expand(len(y_true), len(ats))
        within_at_mask = (indices < ats_rep).type(torch.float32)
        result = torch.tensor(1.0) / (indices + torch.tensor(1.0))
        zero_sum_mask = torch.sum(values) == 0.0
        result[zero_sum_mask] = 0.0
        return result * within_at_mask

    def neuralNDCG(y_pred, y_true, padded_value_indicator=PADDED_Y_VALUE, temperature=1., powered_relevancies=True,
                   k=None):
        if k is None:
            k = y_true.shape[1]
        mask = (y_true == padded_value_indicator)
        P_hat = deterministic_neural_sort(y_pred.unsqueeze(-1), tau=temperature, mask=mask).unsqueeze(0)
        P_hat = sinkhorn_scaling(P_hat.view(P_hat.shape[0] * P_hat.shape[1], P_hat.shape[2], P_hat.shape[3]),
                                 mask.repeat_interleave(P_hat.shape[0], dim=0), tol=1e-6, max_iter=50)
        P_hat = P_hat.view(int(P_hat.shape[0] / y_pred.shape[0]), y_pred.shape[0], P_hat.shape[1], P_hat.shape[2])
        P_hat = P_hat.masked_fill(mask[None, :, :, None] | mask[None, :, None, :], 0.)
        y_true_masked = y_true.masked_fill(mask, 0.).unsqueeze(-1).unsqueeze(0)
        if powered_relevancies:
            y_true_masked = torch.pow(2., y_true_masked) - 1.
        ground_truth = torch.matmul(P_hat, y_true_masked).squeeze(-1)
        discounts = (torch.tensor(1.) / torch.log2(torch.arange(y_true.shape[-1], dtype=torch.float) + 2.)).to(dev)
        discounted_gains = ground_truth * discounts
        idcg = dcg(y_true, y_true, ats=[k]).permute(1, 0)
        discounted_gains = discounted_gains[:, :, :k]
        ndcg = discounted_gains.sum(dim=-1) / (idcg + DEFAULT_EPS)
        idcg_mask = idcg == 0.
        ndcg = ndcg.masked_fill(idcg_mask.repeat(ndcg.shape[0], 1), 0.)
        if idcg_mask.all():
            return torch.tensor(0.)
        mean_ndcg = ndcg.sum() / ((~idcg_mask).sum() * ndcg.shape[0])
        return -1. * mean_ndcg

    return {"lambdaLoss": lambdaLoss, "approxNDCGLoss": approxNDCGLoss, "neuralNDCG": neuralNDCG, "ndcg": ndcg,
            "mrr": mrr}


def make_slate_scorer(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1))


def slates(batch=5, length=8, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, length, 5)).astype(np.float32)
    relevance = np.clip(np.round(x[..., 0] + 0.5 * x[..., 1] + 1), 0, 4).astype(np.float32)
    lengths = [8, 6, 5, 8, 3]
    for i, n in enumerate(lengths):
        relevance[i, n:] = PADDED_Y_VALUE
    relevance[4, :3] = 0.0  # a slate with nothing relevant: its ideal DCG is 0
    return x, relevance


def allrank(m, weights, loss_name, scheme):
    torch, optim = m.torch, m.optim
    losses = allrank_losses(m)
    model = load(m, make_slate_scorer(m), weights)
    x, y_true = (torch.from_numpy(a) for a in slates())
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(4):
        optimizer.zero_grad()
        y_pred = model(x).squeeze(-1)
        if loss_name == "lambdaLoss":
            loss = losses["lambdaLoss"](y_pred, y_true, weighing_scheme=scheme, k=5)
        else:
            loss = losses[loss_name](y_pred, y_true)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        y_pred = model(x).squeeze(-1)
        metrics = {"ndcg": losses["ndcg"](y_pred, y_true, ats=[1, 3, 5]),
                   "mrr": losses["mrr"](y_pred, y_true, ats=[1, 3]),
                   # ties everywhere: every item scored the same
                   "ndcg_ties": losses["ndcg"](torch.zeros_like(y_pred), y_true, ats=[2, 8])}
    return {"history": history, "grads": [p.grad for p in model.parameters()], "metrics": metrics}


def ndcg_by_hand(scores, relevance, at):
    out = []
    for s, r in zip(scores, relevance):
        r = np.where(r == PADDED_Y_VALUE, 0.0, r)
        s = np.where(relevance[len(out)] == PADDED_Y_VALUE, -np.inf, s)
        discounts = 1 / np.log2(np.arange(len(r)) + 2)
        dcg = ((2 ** r[np.argsort(-s, kind="stable")] - 1) * discounts)[:at].sum()
        idcg = ((2 ** np.sort(r)[::-1] - 1) * discounts)[:at].sum()
        out.append(dcg / idcg if idcg > 0 else 0.0)
    return np.array(out)


@pytest.mark.parametrize("loss_name, scheme", [
    ("lambdaLoss", None), ("lambdaLoss", "ndcgLoss1_scheme"), ("lambdaLoss", "ndcgLoss2_scheme"),
    ("lambdaLoss", "lambdaRank_scheme"), ("lambdaLoss", "ndcgLoss2PP_scheme"),
    ("lambdaLoss", "rankNetWeightedByGTDiff_scheme"), ("approxNDCGLoss", None), ("neuralNDCG", None)])
def test_allrank_losses_on_padded_slates(loss_name, scheme):
    weights = weights_of(make_slate_scorer)
    ours, _ = run_both(allrank, weights, loss_name, scheme, rtol=2e-4, atol=1e-6)
    x, relevance = slates()
    np.testing.assert_allclose(ours["metrics"]["ndcg_ties"][:, 1], ndcg_by_hand(np.zeros((5, 8)), relevance, 8),
                               rtol=1e-6)
    assert ours["metrics"]["ndcg"][4].tolist() == [0, 0, 0]
    if scheme is None:  # the weighing schemes' weights change with the ranking: their losses need not fall
        assert ours["history"][-1] < ours["history"][0]


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


# ----------------------------------------------------------------------------------------------
# Ranking metrics with ties, as torchmetrics computes them: Spearman's rho from average ranks (argsort,
# rank[idx] = arange, repeated values found by sort / nonzero of the changes and averaged by masks), NDCG
# with tied predictions averaged (torch.unique(return_inverse, return_counts), scatter_add_, cumsum,
# diff), the ROC curve and AUROC (argsort descending, nonzero of the distinct thresholds, F.pad, cumsum,
# trapz), average precision, and Kendall's tau-b from pairwise signs
# ----------------------------------------------------------------------------------------------


def ranking_metrics(m, preds, target, relevance):
    torch, F = m.torch, m.F

    def _find_repeats(data):
        temp = data.detach().clone()
        temp = temp.sort()[0]
        change = torch.cat([torch.tensor([True], device=temp.device), temp[1:] != temp[:-1]])
        unique = temp[change]
        change_idx = torch.cat([torch.nonzero(change), torch.tensor([[temp.numel()]], device=temp.device)]).flatten()
        freq = change_idx[1:] - change_idx[:-1]
        atleast2 = freq > 1
        return unique[atleast2]

    def _rank_data(data):
        n = data.numel()
        rank = torch.empty_like(data)
        idx = data.argsort()
        rank[idx[:n]] = torch.arange(1, n + 1, dtype=data.dtype, device=data.device)
        repeats = _find_repeats(data)
        for r in repeats:
            condition = data == r
            rank[condition] = rank[condition].mean()
        return rank

    def spearman_corrcoef(preds, target, eps=1e-6):
        preds, target = _rank_data(preds), _rank_data(target)
        preds_diff = preds - preds.mean(0)
        target_diff = target - target.mean(0)
        cov = (preds_diff * target_diff).mean(0)
        preds_std = torch.sqrt((preds_diff * preds_diff).mean(0))
        target_std = torch.sqrt((target_diff * target_diff).mean(0))
        return torch.clamp(cov / (preds_std * target_std + eps), -1.0, 1.0)

    def _tie_average_dcg(target, preds, discount_cumsum):
        _, inv, counts = torch.unique(-preds, return_inverse=True, return_counts=True)
        ranked = torch.zeros_like(counts, dtype=torch.float32)
        ranked.scatter_add_(0, inv, target.to(dtype=ranked.dtype))
        ranked = ranked / counts
        groups = counts.cumsum(dim=0) - 1
        discount_sums = torch.zeros_like(counts, dtype=torch.float32)
        discount_sums[0] = discount_cumsum[groups[0]]
        discount_sums[1:] = discount_cumsum[groups].diff()
        return (ranked * discount_sums).sum()

    def _dcg_sample_scores(target, preds, top_k, ignore_ties):
        discount = 1.0 / (torch.log2(torch.arange(target.shape[-1], device=target.device) + 2.0))
        discount[top_k:] = 0.0
        if ignore_ties:
            ranking = preds.argsort(descending=True)
            ranked = target[ranking]
            cumulative_gain = (discount * ranked).sum()
        else:
            discount_cumsum = discount.cumsum(dim=-1)
            cumulative_gain = _tie_average_dcg(target, preds, discount_cumsum)
        return cumulative_gain

    def retrieval_normalized_dcg(preds, target, top_k=None):
        top_k = preds.shape[-1] if top_k is None else top_k
        gain = _dcg_sample_scores(target, preds, top_k, ignore_ties=False)
        normalized_gain = _dcg_sample_scores(target, target, top_k, ignore_ties=True)
        all_irrelevant = normalized_gain == 0
        gain[all_irrelevant] = 0
        gain[~all_irrelevant] /= normalized_gain[~all_irrelevant]
        return gain.mean()

    def _binary_clf_curve(preds, target, sample_weights=None, pos_label=1):
        with torch.no_grad():
            if sample_weights is not None and not isinstance(sample_weights, torch.Tensor):
                sample_weights = torch.tensor(sample_weights, device=preds.device, dtype=torch.float)
            # remove class dimension if necessary
            if preds.ndim > target.ndim:
                preds = preds[:, 0]
            desc_score_indices = torch.argsort(preds, descending=True)
            preds = preds[desc_score_indices]
            target = target[desc_score_indices]
            weight = sample_weights[desc_score_indices] if sample_weights is not None else 1.0
            # pred typically has many tied values. Here we extract
            # the indices associated with the distinct values. We also
            # concatenate a value for the end of the curve.
            distinct_value_indices = torch.where(preds[1:] - preds[:-1])[0]
            threshold_idxs = F.pad(distinct_value_indices, [0, 1], value=target.size(0) - 1)
            target = (target == pos_label).to(torch.long)
            tps = torch.cumsum(target * weight, dim=0)[threshold_idxs]
            if sample_weights is not None:
                # express fps as a cumsum to ensure fps is increasing even in
                # the presence of floating point errors
                fps = torch.cumsum((1 - target) * weight, dim=0)[threshold_idxs]
            else:
                fps = 1 + threshold_idxs - tps
            return fps, tps, preds[threshold_idxs]

    def binary_roc(preds, target):
        fps, tps, thresholds = _binary_clf_curve(preds=preds, target=target)
        # Add an extra threshold position to make sure that the curve starts at (0, 0)
        tps = torch.cat([torch.zeros(1, dtype=tps.dtype, device=tps.device), tps])
        fps = torch.cat([torch.zeros(1, dtype=fps.dtype, device=fps.device), fps])
        thresholds = torch.cat([torch.ones(1, dtype=thresholds.dtype, device=thresholds.device), thresholds])
        fpr = fps / fps[-1]
        tpr = tps / tps[-1]
        return fpr, tpr, thresholds

    def binary_average_precision(preds, target):
        fps, tps, thresholds = _binary_clf_curve(preds, target)
        precision = tps / (tps + fps)
        recall = tps / tps[-1]
        # stop when full recall attained and reverse the outputs so recall is decreasing
        last_ind = torch.where(tps == tps[-1])[0][0]
        sl = slice(0, last_ind.item() + 1)
        precision = torch.cat([precision[sl].flip(0), torch.ones(1, dtype=precision.dtype)])
        recall = torch.cat([recall[sl].flip(0), torch.zeros(1, dtype=recall.dtype)])
        return -torch.sum((recall[1:] - recall[:-1]) * precision[:-1])

    def kendall_tau_b(x, y):
        sx = torch.sign(x[:, None] - x[None, :])
        sy = torch.sign(y[:, None] - y[None, :])
        i, j = torch.triu_indices(len(x), len(x), offset=1)
        concordance = (sx[i, j] * sy[i, j]).sum()
        return concordance / torch.sqrt((sx[i, j] != 0).sum() * (sy[i, j] != 0).sum())

    preds, target, relevance = (torch.from_numpy(a) for a in (preds, target, relevance))
    fpr, tpr, thresholds = binary_roc(preds, target)
    return {"spearman": spearman_corrcoef(preds, relevance), "rank": _rank_data(preds),
            "ndcg": retrieval_normalized_dcg(preds, relevance), "ndcg@3": retrieval_normalized_dcg(preds, relevance, 3),
            "fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auroc": torch.trapz(tpr, fpr),
            "ap": binary_average_precision(preds, target), "kendall": kendall_tau_b(preds, relevance)}


def tied_scores(seed=10):
    rng = np.random.default_rng(seed)
    preds = np.round(rng.uniform(0, 1, 16) * 4) / 4  # five distinct values: many ties
    relevance = np.clip(np.round(3 * preds + rng.normal(0, 0.7, 16)), 0, 3)
    target = (relevance >= 2).astype(np.int64)
    return preds.astype(np.float32), target, relevance.astype(np.float32)


def average_ranks(a):
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    for v in np.unique(a):
        ranks[a == v] = ranks[a == v].mean()
    return ranks


def test_ranking_metrics_with_ties():
    preds, target, relevance = tied_scores()
    ours, _ = run_both(ranking_metrics, preds, target, relevance, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours["rank"], average_ranks(preds))
    rho = np.corrcoef(average_ranks(preds), average_ranks(relevance))[0, 1]
    assert ours["spearman"] == pytest.approx(rho, abs=1e-5)
    # AUROC is the Mann-Whitney statistic: pairs (positive, negative) ordered, ties counting a half
    pos, neg = preds[target == 1], preds[target == 0]
    mann_whitney = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert ours["auroc"] == pytest.approx(mann_whitney, rel=1e-6)
    assert len(ours["thresholds"]) == len(np.unique(preds)) + 1
    # NDCG with tied predictions: each tie group's gain averaged over its positions' discounts
    groups = np.unique(-preds)
    discount = 1 / np.log2(np.arange(16) + 2)
    dcg, start = 0.0, 0
    for g in groups:
        members = -preds == g
        dcg += relevance[members].mean() * discount[start:start + members.sum()].sum()
        start += members.sum()
    ideal = (np.sort(relevance)[::-1] * discount).sum()
    assert ours["ndcg"] == pytest.approx(dcg / ideal, rel=1e-5)


def test_nanmedian_of_a_slice_of_nan_only_names_the_index_pytorch_names(T):
    """PyTorch's nanmedian picks by std::nth_element, to which no NaN is less than another: in a slice of NaN
    only, it names whichever its partitioning leaves in front (the third of four); here it named the first.
    The index decides where the gradient goes."""
    nan = float("nan")
    x = T.tensor([[nan, nan, 2.0, nan], [nan, nan, nan, nan], [1.0, nan, 3.0, 1.0]], requires_grad=True)
    values, indices = T.nanmedian(x, 1)
    assert indices.tolist() == [2, 2, 3]
    values.sum().backward()
    assert x.grad[1].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert T.nanmedian(T.full((3, 1, 2), nan), 0, keepdim=True).indices.tolist() == [[[0, 0]]]  # up to 3: the first
    assert [T.full((n,), nan).nanmedian(0).indices.item() for n in (4, 5, 8, 17)] == [2, 2, 6, 10]


# ----------------------------------------------------------------------------------------------
# Sparse gates by sorting: sparsemax (Martins & Astudillo 2016: sort descending, cumsum, the support size
# by a comparison with arange, the threshold gathered) and entmax-1.5 (Peters et al. 2019: sort, cumsum of
# squares, the threshold by the quadratic's root), with their closed-form backward passes written as
# autograd.Functions, against autograd through the forward; V-MoE's batch prioritized routing (tokens
# ranked by their top gate with argsort, capacity positions by cumsum in that order, unsorted by the
# inverse permutation from scatter); Soft MoE (Puigcerver et al. 2023: dispatch softmax over tokens,
# combine softmax over slots)
# ----------------------------------------------------------------------------------------------


def sparse_gate_functions(m):
    torch = m.torch

    def _make_ix_like(X, dim):
        d = X.size(dim)
        rho = torch.arange(1, d + 1, device=X.device, dtype=X.dtype)
        view = [1] * X.dim()
        view[0] = -1
        return rho.view(view).transpose(0, dim)

    def _roll_last(X, dim):
        if dim == -1:
            return X
        elif dim < 0:
            dim = X.dim() - dim
        perm = [i for i in range(X.dim()) if i != dim] + [dim]
        return X.permute(perm)

    def _sparsemax_threshold_and_support(X, dim=-1, k=None):
        if k is None or k >= X.shape[dim]:  # do full sort
            topk, _ = torch.sort(X, dim=dim, descending=True)
        else:
            topk, _ = torch.topk(X, k=k, dim=dim)
        topk_cumsum = topk.cumsum(dim) - 1
        rhos = _make_ix_like(topk, dim)
        support = rhos * topk > topk_cumsum
        support_size = support.sum(dim=dim).unsqueeze(dim)
        tau = topk_cumsum.gather(dim, support_size - 1)
        tau /= support_size.to(X.dtype)
        return tau, support_size

    def _entmax_threshold_and_support(X, dim=-1, k=None):
        if k is None or k >= X.shape[dim]:  # do full sort
            Xsrt, _ = torch.sort(X, dim=dim, descending=True)
        else:
            Xsrt, _ = torch.topk(X, k=k, dim=dim)
        rho = _make_ix_like(Xsrt, dim)
        mean = Xsrt.cumsum(dim) / rho
        mean_sq = (Xsrt ** 2).cumsum(dim) / rho
        ss = rho * (mean_sq - mean ** 2)
        delta = (1 - ss) / rho
        delta_nz = torch.clamp(delta, 0)
        tau = mean - torch.sqrt(delta_nz)
        support_size = (tau <= Xsrt).sum(dim).unsqueeze(dim)
        tau_star = tau.gather(dim, support_size - 1)
        return tau_star, support_size

    class SparsemaxFunction(torch.autograd.Function):
        @classmethod
        def forward(cls, ctx, X, dim=-1, k=None):
            ctx.dim = dim
            max_val, _ = X.max(dim=dim, keepdim=True)
            X = X - max_val  # same numerical stability trick as softmax
            tau, supp_size = _sparsemax_threshold_and_support(X, dim=dim, k=k)
            output = torch.clamp(X - tau, min=0)
            ctx.save_for_backward(supp_size, output)
            return output

        @classmethod
        def backward(cls, ctx, grad_output):
            supp_size, output = ctx.saved_tensors
            dim = ctx.dim
            grad_input = grad_output.clone()
            grad_input[output == 0] = 0
            v_hat = grad_input.sum(dim=dim) / supp_size.to(output.dtype).squeeze(dim)
            v_hat = v_hat.unsqueeze(dim)
            grad_input = torch.where(output != 0, grad_input - v_hat, grad_input)
            return grad_input, None, None

    class Entmax15Function(torch.autograd.Function):
        @classmethod
        def forward(cls, ctx, X, dim=0, k=None):
            ctx.dim = dim
            max_val, _ = X.max(dim=dim, keepdim=True)
            X = X - max_val  # same numerical stability trick as for softmax
            X = X / 2  # divide by 2 to solve actual Entmax
            tau_star, _ = _entmax_threshold_and_support(X, dim=dim, k=k)
            Y = torch.clamp(X - tau_star, min=0) ** 2
            ctx.save_for_backward(Y)
            return Y

        @classmethod
        def backward(cls, ctx, dY):
            Y, = ctx.saved_tensors
            gppr = Y.sqrt()  # = 1 / g'' (Y)
            dX = dY * gppr
            q = dX.sum(ctx.dim) / gppr.sum(ctx.dim)
            q = q.unsqueeze(ctx.dim)
            dX -= q * gppr
            return dX, None, None

    def sparsemax_by_autograd(X, dim=-1):
        X = X - X.max(dim=dim, keepdim=True)[0]
        tau, _ = _sparsemax_threshold_and_support(X, dim=dim)
        return torch.clamp(X - tau, min=0)

    return SparsemaxFunction, Entmax15Function, sparsemax_by_autograd


def sparse_gates(m, k):
    torch = m.torch
    SparsemaxFunction, Entmax15Function, sparsemax_by_autograd = sparse_gate_functions(m)
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((6, 7)) * 2
    logits[0, :3] = 1.5  # ties at the top
    logits[1] = 0.25  # all tied: a uniform gate
    w = torch.from_numpy(rng.standard_normal((6, 7)))
    out = {}
    for name, fn in (("sparsemax", lambda x: SparsemaxFunction.apply(x, -1, k)),
                     ("entmax15", lambda x: Entmax15Function.apply(x, -1, k)),
                     ("sparsemax_autograd", lambda x: sparsemax_by_autograd(x))):
        x = torch.tensor(logits, requires_grad=True)
        p = fn(x)
        (p * w).sum().backward()
        out[name] = p
        out[name + "_grad"] = x.grad
    # the Hessian-vector product of the autograd version (through sort, cumsum, gather, clamp)
    x = torch.tensor(logits, requires_grad=True)
    g, = torch.autograd.grad((sparsemax_by_autograd(x) * w).sum() ** 2, x, create_graph=True)
    hv, = torch.autograd.grad((g * w).sum(), x)
    out["hvp"] = hv
    return out


def sparsemax_by_hand(z):
    out = []
    for row in z:
        s = np.sort(row)[::-1]
        cumsum = np.cumsum(s)
        k = np.arange(1, len(row) + 1)
        support = k[1 + k * s > cumsum].max()
        tau = (cumsum[support - 1] - 1) / support
        out.append(np.maximum(row - tau, 0))
    return np.array(out)


@pytest.mark.parametrize("k", [None, 4])
def test_sparsemax_and_entmax_gates(k):
    ours, _ = run_both(sparse_gates, k, rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((6, 7)) * 2
    logits[0, :3] = 1.5
    logits[1] = 0.25
    if k is None:
        np.testing.assert_allclose(ours["sparsemax"], sparsemax_by_hand(logits), atol=1e-12)
        np.testing.assert_allclose(ours["sparsemax"].sum(-1), 1, rtol=1e-12)
        np.testing.assert_allclose(ours["entmax15"].sum(-1), 1, rtol=1e-10)
        np.testing.assert_allclose(ours["sparsemax"][1], 1 / 7, rtol=1e-12)
    else:  # the top k only: right where the support is smaller than k (the entmax package then sorts it all)
        np.testing.assert_allclose(ours["sparsemax"][0], sparsemax_by_hand(logits)[0], atol=1e-12)
        np.testing.assert_allclose(ours["sparsemax"][1], 1 / 4, rtol=1e-12)
    # the closed-form backward is the Jacobian autograd finds through the (fully sorted) forward
    rows = slice(None) if k is None else [0, 2, 3, 4, 5]
    np.testing.assert_allclose(ours["sparsemax_grad"][rows], ours["sparsemax_autograd_grad"][rows], rtol=1e-10,
                               atol=1e-12)


def make_bpr_and_soft_moe(m):
    torch, nn, F = m.torch, m.nn, m.F

    class BPRMoE(nn.Module):
        """V-MoE's top-1 routing with batch prioritized routing: the tokens with the largest gate claim the
        buffers first."""

        def __init__(self, d=5, experts=3, capacity=3):
            super().__init__()
            self.gate = nn.Linear(d, experts, bias=False)
            self.experts = nn.ModuleList(nn.Linear(d, d) for _ in range(experts))
            self.capacity = capacity

        def forward(self, x):
            probs = F.softmax(self.gate(x), dim=-1)
            top_prob, expert = probs.max(dim=-1)
            priority = torch.argsort(top_prob, descending=True)
            inverse = torch.empty_like(priority).scatter_(0, priority, torch.arange(len(priority)))
            mask = F.one_hot(expert[priority], probs.shape[-1])
            position = (torch.cumsum(mask, dim=0) - 1) * mask
            kept = ((position < self.capacity) & mask.bool()).any(-1)[inverse]
            out = torch.zeros_like(x)
            for e, layer in enumerate(self.experts):
                chosen = torch.nonzero((expert == e) & kept).squeeze(-1)
                out = out.index_add(0, chosen, layer(x[chosen]) * top_prob[chosen, None])
            return x + out, kept, priority, inverse

    class SoftMoE(nn.Module):
        def __init__(self, d=5, experts=3, slots=2):
            super().__init__()
            self.phi = nn.Parameter(torch.randn(d, experts, slots) * 0.5)
            self.scale = nn.Parameter(torch.ones(1))
            self.experts = nn.ModuleList(nn.Linear(d, d) for _ in range(experts))

        def forward(self, x):  # x: (batch, tokens, d)
            x_n = F.normalize(x, dim=-1)
            phi = self.scale * F.normalize(self.phi, dim=0)
            logits = torch.einsum("bmd,dnp->bmnp", x_n, phi)
            dispatch = logits.softmax(dim=1)                                   # over the tokens
            combine = logits.flatten(2).softmax(dim=-1).view_as(logits)        # over all slots
            slots = torch.einsum("bmd,bmnp->bnpd", x, dispatch)
            outs = torch.stack([f(slots[:, i]) for i, f in enumerate(self.experts)], dim=1)
            return torch.einsum("bnpd,bmnp->bmd", outs, combine)

    return nn.ModuleDict({"bpr": BPRMoE(), "soft": SoftMoE()})


def bpr_and_soft_moe(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_bpr_and_soft_moe(m), weights).double()
    rng = np.random.default_rng(12)
    x = torch.from_numpy(rng.standard_normal((2, 6, 5)))
    target = torch.from_numpy(rng.standard_normal((2, 6, 5)))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history, routed = [], []
    for step in range(3):
        optimizer.zero_grad()
        h, kept, priority, inverse = model["bpr"](x.reshape(-1, 5))
        y = model["soft"](h.reshape(2, 6, 5))
        loss = F.mse_loss(y, target)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        routed.append([kept, priority, inverse])
    return {"history": history, "routed": routed, "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_batch_prioritized_routing_and_soft_moe():
    weights = weights_of(make_bpr_and_soft_moe)
    ours, _ = run_both(bpr_and_soft_moe, weights, rtol=1e-9, atol=1e-12)
    for kept, priority, inverse in ours["routed"]:
        np.testing.assert_array_equal(priority[inverse], np.arange(12))
        assert kept.sum() <= 9 and not kept.all()  # three experts of capacity 3 for 12 tokens
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Segment reductions by hand (a graph readout over a packed batch of ragged sets, as code without
# torch_scatter writes it): segment ids by repeat_interleave of the sizes, offsets by cumsum, sums by
# cumsum differences at the offsets, by index_add_ and by segment_reduce; means by scatter_reduce;
# maxima by scatter_reduce(amax, include_self=False) from -inf; a segment softmax (attention pooling);
# segment ids found again by searchsorted(right=True) of the offsets and by unique_consecutive; the
# per-set top-2 by a sort on (segment, -score) keys; kthvalue thresholds for expert-choice capacity
# ----------------------------------------------------------------------------------------------


def make_readout(m):
    nn = m.nn

    class AttentionReadout(nn.Module):
        def __init__(self, d=4):
            super().__init__()
            self.encode = nn.Sequential(nn.Linear(3, d), nn.Tanh())
            self.score = nn.Linear(d, 1)
            self.head = nn.Linear(3 * d, 2)

    return AttentionReadout()


def segment_readout(m, weights):
    torch, F = m.torch, m.F
    model = load(m, make_readout(m), weights).double()
    rng = np.random.default_rng(13)
    sizes = torch.tensor([3, 1, 5, 2, 4])
    x = torch.from_numpy(rng.standard_normal((int(sizes.sum()), 3)))
    x[6] = x[5]  # two equal members in one set: tied maxima
    y = torch.tensor([0, 1, 1, 0, 1])
    n_sets = len(sizes)
    h = model.encode(x)
    d = h.shape[1]
    batch = torch.repeat_interleave(torch.arange(n_sets), sizes)
    offsets = torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])
    # sums three ways
    csum = torch.cat([h.new_zeros(1, d), h.cumsum(0)])
    sum_by_cumsum = csum[offsets[1:]] - csum[offsets[:-1]]
    sum_by_index_add = torch.zeros(n_sets, d, dtype=h.dtype).index_add_(0, batch, h)
    sum_by_segment = torch.segment_reduce(h, "sum", lengths=sizes)
    mean = torch.zeros(n_sets, d, dtype=h.dtype).scatter_reduce(0, batch[:, None].expand(-1, d), h, "mean",
                                                                 include_self=False)
    maximum = torch.full((n_sets, d), float("-inf"), dtype=h.dtype).scatter_reduce(
        0, batch[:, None].expand(-1, d), h, "amax", include_self=False)
    # attention pooling: a softmax within each set
    s = model.score(h).squeeze(-1)
    s_max = torch.full((n_sets,), float("-inf"), dtype=s.dtype).scatter_reduce(0, batch, s, "amax",
                                                                                include_self=False)
    e = (s - s_max[batch]).exp()
    alpha = e / torch.zeros(n_sets, dtype=s.dtype).scatter_add(0, batch, e)[batch]
    attended = torch.zeros(n_sets, d, dtype=h.dtype).index_add(0, batch, alpha[:, None] * h)
    logits = model.head(torch.cat([mean, maximum, attended], -1))
    loss = F.cross_entropy(logits, y)
    loss.backward()
    with torch.no_grad():
        positions = torch.arange(len(batch))
        batch_by_search = torch.searchsorted(offsets[1:], positions, right=True)
        _, run_counts = torch.unique_consecutive(batch, return_counts=True)
        # the two best-scored members of every set: one sort on a combined key, ties by position
        key = batch.double() * 1e3 - s
        order = torch.sort(key, stable=True).indices
        rank_in_set = positions - offsets[batch[order]]
        top2 = order[rank_in_set < 2]
        # expert-choice capacity: each expert keeps tokens above its (n - c + 1)-th smallest score
        scores = torch.from_numpy(np.round(rng.uniform(0, 1, (len(batch), 3)) * 4) / 4)  # many ties
        c = 5
        threshold = torch.kthvalue(scores, len(batch) - c + 1, dim=0).values
        chosen = scores >= threshold
    return {"loss": loss, "sums": [sum_by_cumsum, sum_by_index_add, sum_by_segment], "mean": mean, "max": maximum,
            "alpha": alpha, "grads": [p.grad for p in model.parameters()], "batch": batch,
            "batch_by_search": batch_by_search, "run_counts": run_counts, "top2": top2, "threshold": threshold,
            "chosen": chosen}


def test_segment_reductions_by_hand():
    weights = weights_of(make_readout)
    ours, _ = run_both(segment_readout, weights, rtol=1e-10, atol=1e-12)
    a, b, c = ours["sums"]
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b, c, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ours["batch_by_search"], ours["batch"])
    assert ours["run_counts"].tolist() == [3, 1, 5, 2, 4]
    np.testing.assert_allclose(np.bincount(ours["batch"], weights=ours["alpha"]), 1, rtol=1e-12)
    assert len(ours["top2"]) == 2 + 1 + 2 + 2 + 2
    assert (ours["chosen"].sum(0) >= 5).all()


def test_float16_scatters_accumulate_in_float32_where_pytorchs_kernels_do(T):
    """PyTorch's CPU scatter kernels (scatter_add, scatter_reduce, index_add of slices by alpha 1, and so the
    backward passes of gather and index_select) accumulate float16 in float32 and round once; its sequential
    ones (index_add of a vector or with another alpha, index_put, index_reduce) round every step. Here every
    one rounded every step: 1000 + 5 · 0.4 gave 1002.5 where PyTorch's scatter_add gives 1002."""
    values = T.tensor([1000.0, 0.4, 0.4, 0.4, 0.4, 0.4], dtype=T.float16)
    zeros = T.zeros(6, dtype=T.int64)
    pair = T.stack([values, values], 1)
    assert T.zeros(1, dtype=T.float16).scatter_add(0, zeros, values).item() == 1002.0
    assert T.zeros(1, dtype=T.float16).scatter_reduce(0, zeros, values, "sum", include_self=False).item() == 1002.0
    assert T.zeros(1, dtype=T.float16).scatter_reduce(0, zeros, values, "mean").item() == 143.125  # 1002 / 7
    assert T.zeros(1, 2, dtype=T.float16).index_add(0, zeros, pair).tolist() == [[1002.0, 1002.0]]
    assert T.zeros(1, dtype=T.float16).index_add(0, zeros, values).item() == 1002.5  # a vector: step by step
    assert T.zeros(1, 2, dtype=T.float16).index_add(0, zeros, pair, alpha=2).tolist() == [[2005.0, 2005.0]]
    assert T.zeros(1, dtype=T.float16).index_put((zeros,), values, accumulate=True).item() == 1002.5
    weights = T.zeros(1, 2, dtype=T.float16, requires_grad=True)
    weights.index_select(0, zeros).backward(pair)
    assert weights.grad.tolist() == [[1002.0, 1002.0]]


def test_bincount_of_weights_that_require_grad_is_in_the_graph_without_a_derivative(T):
    """A load-balancing term written with bincount(expert_ids, weights=probs) has no gradient in PyTorch: the
    counts require grad and a backward pass through them raises. Here they were detached, and the loss's
    gradient silently lacked that term."""
    probs = T.tensor([0.5, 0.25, 0.75], requires_grad=True)
    load = T.bincount(T.tensor([0, 2, 2]), weights=probs, minlength=4)
    assert load.tolist() == [0.5, 0.0, 1.0, 0.0] and load.requires_grad
    with pytest.raises(RuntimeError, match="derivative for aten::bincount is not implemented"):
        (load * load).sum().backward()
    assert not T.bincount(T.tensor([0, 2, 2]), weights=probs.detach()).requires_grad


# ----------------------------------------------------------------------------------------------
# Order statistics of experts' outputs: a robust ensemble combining its members by median (torch.median along
# the members, ties among them), a trimmed mean by sort, quantile-regression heads trained by the pinball
# loss with torch.quantile targets, majority vote by torch.mode, and a kthvalue margin between the two best
# members' scores
# ----------------------------------------------------------------------------------------------


def make_ensemble(m):
    nn = m.nn

    class Ensemble(nn.Module):
        def __init__(self, members=5):
            super().__init__()
            self.members = nn.ModuleList(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
                                         for _ in range(members))

        def forward(self, x):
            return m.torch.stack([f(x) for f in self.members], dim=0)  # (members, batch, 4)

    return Ensemble()


def ensemble(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_ensemble(m), weights).double()
    with torch.no_grad():  # two members start equal: ties among the members' outputs
        for a, b in zip(model.members[3].parameters(), model.members[1].parameters()):
            a.copy_(b)
    rng = np.random.default_rng(14)
    x = torch.from_numpy(rng.standard_normal((10, 3)))
    y = torch.from_numpy(rng.integers(0, 4, 10))
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        outs = model(x)
        median, which = outs.median(dim=0)
        trimmed = outs.sort(dim=0).values[1:-1].mean(0)
        q = torch.tensor([0.1, 0.5, 0.9], dtype=outs.dtype)
        quantiles = torch.quantile(outs, q, dim=0)  # (3, batch, 4)
        target = outs.detach().mean(0)
        err = target.unsqueeze(0) - quantiles
        pinball = torch.max(q.view(-1, 1, 1) * err, (q.view(-1, 1, 1) - 1) * err).mean()
        top2 = outs.max(-1).values.kthvalue(outs.shape[0] - 1, dim=0).values  # the second-best member's score
        margin = F.relu(1 - (outs.max(-1).values.max(0).values - top2)).mean()
        loss = F.cross_entropy(median, y) + F.cross_entropy(trimmed, y) + pinball + 0.1 * margin
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        votes = model(x).argmax(-1)
        majority, where = torch.mode(votes, dim=0)
    return {"history": history, "median_index": which, "votes": votes, "majority": majority, "where": where,
            "grads": [p.grad for p in model.parameters()]}


def test_order_statistics_of_an_ensemble():
    weights = weights_of(make_ensemble)
    ours, _ = run_both(ensemble, weights, rtol=1e-10, atol=1e-12)
    votes = ours["votes"]
    for j in range(votes.shape[1]):
        counts = np.bincount(votes[:, j], minlength=4)
        assert ours["majority"][j] == np.flatnonzero(counts == counts.max())[0]  # the smallest of the most frequent
        assert votes[ours["where"][j], j] == ours["majority"][j]
    assert ours["history"][-1] < ours["history"][0]
