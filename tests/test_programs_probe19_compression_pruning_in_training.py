# ruff: noqa: E731  (the programs are kept as their authors wrote them)
"""Model compression and surgery programs, run as tests/probe19_compression_common.py says. Pruning in models and in
training: pruning an LSTM, an Embedding and a Transformer layer's attention; random pruning of a float64 model and an
automated gradual pruning schedule; random pruning chains, the pruning hook among other forward pre-hooks and through
``functional_call``, N:M sparsity masks; parameter, sparsity and size counts; movement pruning (a top-k
straight-through ``autograd.Function``); gradient masks by tensor hooks."""

import numpy as np
import pytest

from .probe19_compression_common import prune_of
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# pruning recurrent, embedding and attention layers
# ----------------------------------------------------------------------------------------------


def pruning_sequence_layers(m):
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    torch.manual_seed(4)
    lstm = nn.LSTM(3, 4, batch_first=True)
    prune.l1_unstructured(lstm, "weight_hh_l0", amount=0.5)
    out, _ = lstm(torch.randn(2, 5, 3))
    embedding = nn.Embedding(10, 4)
    prune.ln_structured(embedding, "weight", amount=0.3, n=2, dim=0)  # drop whole rows (tokens)
    vectors = embedding(torch.tensor([1, 2, 3, 9]))
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    prune.l1_unstructured(layer.self_attn, "in_proj_weight", amount=0.3)
    prune.ln_structured(layer.self_attn.out_proj, "weight", amount=0.25, n=1, dim=1)
    prune.l1_unstructured(layer.linear1, "weight", amount=0.5)
    y = layer(torch.randn(2, 5, 8))
    y.pow(2).sum().backward()
    return {"lstm": out, "lstm_weight": lstm.weight_hh_l0, "vectors": vectors, "rows": embedding.weight_mask,
            "y": y, "in_proj_grad": layer.self_attn.in_proj_weight_orig.grad,
            "out_proj_grad": layer.self_attn.out_proj.weight_orig.grad, "keys": list(layer.state_dict().keys())}


def test_pruning_sequence_layers():
    ours, _ = run_both(pruning_sequence_layers)
    assert (ours["lstm_weight"] == 0).sum() == 32 and ours["rows"].all(1).sum() == 7
    assert "self_attn.in_proj_weight_orig" in ours["keys"] and "self_attn.out_proj.weight_mask" in ours["keys"]
    assert (ours["in_proj_grad"][ours["in_proj_grad"] == 0].size >= 0.3 * 8 * 24)


# ----------------------------------------------------------------------------------------------
# random pruning of a float64 model, and an automated gradual pruning schedule (Zhu & Gupta)
# ----------------------------------------------------------------------------------------------


def random_pruning_float64(m):
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    prune.random_unstructured(model[0], "weight", amount=0.4)
    prune.random_unstructured(model[0], "weight", amount=5)
    prune.random_structured(model[2], "weight", amount=3, dim=1)
    return model[0].weight_mask, model[2].weight_mask, model(torch.randn(3, 6, dtype=torch.float64))


def test_random_pruning_of_a_float64_model():
    ours, _ = run_both(random_pruning_float64)
    assert ours[0].sum() == 48 - 19 - 5 and ours[1].any(0).sum() == 5


def gradual_pruning(m):
    torch, nn, F = m.torch, m.nn, m.F
    prune = prune_of(m)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    s_i, s_f, n, dt = 0.0, 0.8, 4, 2
    current = 0.0
    history = []
    for t in range(10):
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        if t % dt == 0 and t // dt < n:
            target = s_f + (s_i - s_f) * (1 - (t // dt + 1) / n) ** 3
            amount = (target - current) / (1 - current)  # of what is left
            for module in [net[0], net[2]]:
                prune.l1_unstructured(module, "weight", amount=amount)
            current = target
            history.append([float((module.weight == 0).sum()) / module.weight.numel() for module in [net[0], net[2]]])
    return history, net(x), [module.weight_mask for module in [net[0], net[2]]]


def test_gradual_pruning_schedule():
    ours, _ = run_both(gradual_pruning)
    history = np.array(ours[0])
    assert history.shape == (4, 2) and (np.diff(history, axis=0) > 0).all()
    np.testing.assert_allclose(history[-1], 0.8, atol=0.02)


def pruning_chain(m, seed):
    """A random chain of pruning methods on a random tensor (sometimes with tied values), each combined with
    the mask so far; a method's refusal is part of the result."""
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    shape = [int(size) for size in rng.integers(2, 6, size=rng.integers(2, 5))]
    module = nn.Module()
    weight = torch.randn(*shape)
    if rng.random() < 0.3:
        weight = (weight * 2).round() / 2  # many equal magnitudes
    module.weight = nn.Parameter(weight)
    steps = []
    for _ in range(rng.integers(1, 5)):
        kind = ["l1", "random", "ln", "random_structured", "custom"][rng.integers(5)]
        amount = [0.0, 0.2, 0.5, 1, 2, 0.9][rng.integers(6)]
        dim = int(rng.integers(-len(shape), len(shape)))
        n = [1, 2, float("inf"), 0, -1][rng.integers(5)]
        try:
            if kind == "l1":
                prune.l1_unstructured(module, "weight", amount=amount)
            elif kind == "random":
                prune.random_unstructured(module, "weight", amount=amount)
            elif kind == "ln":
                prune.ln_structured(module, "weight", amount=amount, n=n, dim=dim)
            elif kind == "random_structured":
                prune.random_structured(module, "weight", amount=amount, dim=dim)
            else:
                prune.custom_from_mask(module, "weight", mask=torch.rand(*shape) > 0.3)
            steps.append(kind)
        except (ValueError, IndexError) as error:
            steps.append(type(error).__name__)
    return steps, getattr(module, "weight_mask", None)


def test_random_pruning_chains():
    for seed in range(60):
        ours, _ = run_both(pruning_chain, seed)
        steps, mask = ours
        assert mask is None or set(np.unique(mask)) <= {0.0, 1.0}


def pruning_and_hooks(m):
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    seen = []
    user = layer.register_forward_pre_hook(lambda module, inputs: seen.append(("user", module.weight.sum().item())))
    prune.l1_unstructured(layer, "weight", amount=3)
    layer.register_forward_pre_hook(lambda module, inputs: seen.append(("first", module.weight.sum().item())),
                                    prepend=True)

    def doubled(module, args, kwargs):
        seen.append(("kwargs", len(args), sorted(kwargs)))
        return (args[0] * 2,), kwargs

    layer.register_forward_pre_hook(doubled, with_kwargs=True)
    with torch.no_grad():
        layer.weight_orig.add_(1.0)
    y = layer(torch.ones(1, 3))
    kinds = lambda: [type(hook).__name__ if hasattr(hook, "compute_mask") else "function"
                     for hook in layer._forward_pre_hooks.values()]
    order = kinds()
    prune.l1_unstructured(layer, "weight", amount=1)  # the container takes the end of the hooks
    order_again = kinds()
    user.remove()
    y_again = layer(torch.ones(1, 3))
    prune.remove(layer, "weight")
    return seen, y, y_again, order, order_again, kinds()


def test_pruning_hook_among_other_forward_pre_hooks():
    ours, _ = run_both(pruning_and_hooks)
    seen, y, y_again, order, order_again, final = ours
    assert order == ["function", "function", "L1Unstructured", "function"]
    assert order_again == ["function", "function", "function", "PruningContainer"] and final == ["function"] * 2
    assert seen[0][0] == "first" and seen[1][0] == "user" and seen[2] == ("kwargs", 1, [])
    assert seen[1][1] == seen[0][1]  # both ran before pruning's hook: the weight of the last call, before add_


def pruned_functional_call(m):
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    params = {k: v.detach() * 2 for k, v in model.named_parameters()}
    x = torch.randn(3, 4)
    y = torch.func.functional_call(model, {**params, **dict(model.named_buffers())}, (x,))
    y_model = model(x)  # the module's own tensors are back
    y_unmasked = torch.func.functional_call(model, {"0.weight_mask": torch.ones(5, 4)}, (x,))
    loss = lambda p: torch.func.functional_call(model, p, (x,)).sum()
    grads = torch.func.grad(loss)(dict(model.named_parameters()))
    return y, y_model, y_unmasked, grads, model[0].weight_mask


def test_functional_call_through_the_pruning_hook():
    ours, _ = run_both(pruned_functional_call)
    y, y_model, y_unmasked, grads, mask = ours
    assert not np.allclose(y_unmasked, y_model) and (grads["0.weight_orig"][mask == 0] == 0).all()


def n_m_sparsity(m, N=2, M=4):
    """2:4 semi-structured masks by hand (topk in each group of 4, and by sort, argsort and kthvalue), and a
    straight-through sparse product."""
    torch = m.torch
    torch.manual_seed(0)
    w = ((torch.randn(8, 16) * 2).round() / 2).requires_grad_()  # tied magnitudes in the groups
    group = w.detach().abs().view(-1, M)
    mask = torch.zeros_like(group).scatter_(1, group.topk(N, dim=1).indices, 1.0).view_as(w)
    mask_argsort = torch.ones_like(group).scatter_(1, torch.argsort(group, dim=1)[:, :M - N], 0).view_as(w)
    _, order = torch.sort(group, dim=1, descending=True)
    mask_sort = torch.zeros_like(group).scatter(1, order[:, :N], 1.0).view_as(w)
    mask_kth = (group > group.kthvalue(M - N, dim=1, keepdim=True).values).float().view_as(w)

    class SparseWeight(torch.autograd.Function):
        @staticmethod
        def forward(ctx, weight, mask):
            ctx.save_for_backward(mask)
            return weight * mask

        @staticmethod
        def backward(ctx, grad):
            (mask,) = ctx.saved_tensors
            return grad * mask, None

    SparseWeight.apply(w, mask).pow(2).sum().backward()
    median = group.median(dim=1)
    quantiles = (torch.quantile(w.detach().abs(), 0.5, dim=1, interpolation="nearest"),
                 torch.quantile(w.detach().abs(), 0.3, dim=1, interpolation="lower"))
    return mask, mask_argsort, mask_sort, mask_kth, w.grad, median, quantiles


def test_n_m_sparsity_masks():
    ours, _ = run_both(n_m_sparsity)
    mask, mask_argsort, mask_sort = ours[:3]
    assert (mask.reshape(-1, 4).sum(1) == 2).all() and (mask_argsort.reshape(-1, 4).sum(1) == 2).all()
    assert (mask_sort.reshape(-1, 4).sum(1) == 2).all() and (ours[4][mask == 0] == 0).all()


# ----------------------------------------------------------------------------------------------
# counting: parameters, pruned zeros, buffers, bytes
# ----------------------------------------------------------------------------------------------


def counting(m):
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    total = sum(p.numel() for p in model.parameters())
    model[1].weight.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            prune.l1_unstructured(module, "weight", amount=0.6)
    zeros = sum(int((module.weight == 0).sum()) for module in model.modules() if hasattr(module, "weight_mask"))
    nonzero_masks = sum(int(torch.count_nonzero(b)) for n, b in model.named_buffers() if n.endswith("_mask"))
    per_layer = {name: float(torch.sum(module.weight == 0)) / module.weight.nelement()
                 for name, module in model.named_modules() if hasattr(module, "weight_mask")}
    size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1024 ** 2
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    model = model.double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    y = model(x)
    dtypes = [model[0].weight_mask.dtype == torch.float64, model[0].weight.dtype == torch.float64]
    model.half()
    half = [value.dtype == torch.float16 for key, value in model.state_dict().items() if "num_batches" not in key]
    half_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"total": total, "trainable": trainable, "zeros": zeros, "nonzero_masks": nonzero_masks,
            "per_layer": per_layer, "size_mb": size_mb, "buffer_bytes": buffer_bytes, "y": y, "dtypes": dtypes,
            "half": half, "half_bytes": half_bytes}


def test_counting_parameters_and_sparsity():
    ours, _ = run_both(counting)
    assert ours["total"] == 8 * 27 + 8 + 16 + 128 * 10 + 10 and ours["trainable"] == ours["total"] - 8
    assert ours["zeros"] == round(0.6 * 216) + round(0.6 * 1280)
    assert ours["nonzero_masks"] == 216 + 1280 - ours["zeros"]
    assert ours["buffer_bytes"] == 8 * 4 * 2 + 8 + 216 * 4 + 1280 * 4 and ours["dtypes"] == [True, True]
    assert all(ours["half"]) and ours["half_bytes"] == ours["total"] * 2


# ----------------------------------------------------------------------------------------------
# movement pruning (Sanh et al.): scores learnt through a top-k straight-through estimator
# ----------------------------------------------------------------------------------------------


def movement_pruning(m):
    torch, nn, F = m.torch, m.nn, m.F

    class TopKBinarizer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inputs, threshold):
            mask = inputs.clone()
            _, idx = inputs.flatten().sort(descending=True)
            j = int(threshold * inputs.numel())
            flat_out = mask.flatten()
            flat_out[idx[j:]] = 0
            flat_out[idx[:j]] = 1
            return mask

        @staticmethod
        def backward(ctx, gradOutput):
            return gradOutput, None

    class MaskedLinear(nn.Linear):
        def __init__(self, in_features, out_features):
            super().__init__(in_features, out_features)
            self.mask_scores = nn.Parameter(torch.empty(out_features, in_features))
            nn.init.constant_(self.mask_scores, 0.0)
            with torch.no_grad():
                self.mask_scores.add_(torch.randn(out_features, in_features) * 0.01)

        def forward(self, x, threshold):
            mask = TopKBinarizer.apply(self.mask_scores, threshold)
            return F.linear(x, self.weight * mask, self.bias)

    torch.manual_seed(0)
    l1, l2 = MaskedLinear(6, 10), MaskedLinear(10, 3)
    named = list(l1.named_parameters()) + list(l2.named_parameters())
    optimizer = torch.optim.Adam([p for n, p in named if "mask" not in n], lr=1e-2)
    mask_optimizer = torch.optim.SGD([l1.mask_scores, l2.mask_scores], lr=1.0)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    losses = []
    for step in range(6):
        threshold = 1.0 - 0.5 * step / 5
        loss = F.cross_entropy(l2(F.relu(l1(x, threshold)), threshold), y)
        optimizer.zero_grad()
        mask_optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mask_optimizer.step()
        losses.append(loss.item())
    return losses, l1.mask_scores, l2.mask_scores.grad, TopKBinarizer.apply(l1.mask_scores, 0.5)


def test_movement_pruning():
    ours, _ = run_both(movement_pruning)
    assert ours[3].sum() == 30 and set(np.unique(ours[3])) == {0.0, 1.0}


def gradient_mask_hooks(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    masks = {}
    for name, p in net.named_parameters():
        if p.dim() > 1:
            threshold = p.detach().abs().flatten().kthvalue(int(0.5 * p.numel())).values
            masks[name] = (p.detach().abs() > threshold).float()
            with torch.no_grad():
                p.mul_(masks[name])
            p.register_hook(lambda grad, mask=masks[name]: grad * mask)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y = torch.randn(20, 5), torch.randn(20, 2)
    for _ in range(4):
        optimizer.zero_grad()
        F.smooth_l1_loss(net(x), y, beta=0.5).backward()
        optimizer.step()
    quantiles = torch.quantile(net[0].weight.detach().abs().flatten(), torch.tensor([0.25, 0.5, 0.9]))
    return list(net.parameters()), masks, quantiles, [float((p == 0).float().mean()) for p in net.parameters()]


def test_gradient_mask_hooks_keep_pruned_weights_at_zero():
    ours, _ = run_both(gradient_mask_hooks)
    params, masks, _, zeros = ours
    assert (params[0][masks["0.weight"] == 0] == 0).all() and zeros[0] == pytest.approx(1 - 18 / 35)
