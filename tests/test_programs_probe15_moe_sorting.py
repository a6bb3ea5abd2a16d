# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Routing, sorting and ranking programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights and data, comparing values, indices (their order among ties), dtypes and gradients, and checked
against NumPy by hand where a formula is short. Gates, permutations and reductions by sorting: sparsemax / entmax-1.5
gates as ``autograd.Function``s against autograd through ``sort`` / ``cumsum`` / ``gather`` (with a Hessian-vector
product), V-MoE batch prioritized routing and Soft MoE; NeuralSort and SoftSort relaxed permutations learnt to sort
(Gumbel perturbation, straight-through hard SoftSort, Spearman by ``argsort(argsort)``); segment reductions by hand
(``repeat_interleave`` ids, ``cumsum`` differences, ``segment_reduce``, ``scatter_reduce`` mean/amax from -inf, a
segment softmax, ``unique_consecutive``, ``kthvalue`` thresholds), float16 scatters accumulated in float32, bincount
of weights that require grad recorded without a derivative; order statistics of an ensemble (``median`` / ``sort`` /
``quantile`` / ``kthvalue`` along the members with tied members, majority vote by ``mode``)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

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
