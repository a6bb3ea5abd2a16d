# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Model compression and surgery programs, run as tests/probe19_compression_common.py says. ``torch.nn.utils.prune``
in full: iterative magnitude pruning with lottery-ticket rewinding (``global_unstructured`` rounds composed in
``PruningContainer``s, ``weight_orig`` rewound, masked gradients, ``remove``); ``ln_structured`` with n = 1, 2, inf,
-inf and 0 along each dim of a convolution, composed with ``l1_unstructured`` (L0 norms tie: the choice is topk's); a
pruned checkpoint (``weight_orig``/``weight_mask`` keys, ``torch.save``/``load``, ``strict=False``'s missing and
unexpected keys, ``prune.identity`` to load it back); global pruning by first-order Taylor importance
(``importance_scores``) and at random; ``custom_from_mask`` with float, bool and int masks and Adam through the mask;
the methods used by hand (``compute_mask``, ``prune``, ``Method.apply``); pruning's refusals."""

import copy
import io

import numpy as np
import pytest

from .probe19_compression_common import prune_of
from .pytorch_programs import load, run_both, weights_of


def mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def tabular_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 10)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    return X, y


# ----------------------------------------------------------------------------------------------
# iterative magnitude pruning with lottery-ticket rewinding (Frankle & Carbin)
# ----------------------------------------------------------------------------------------------


def lottery_ticket(m, weights, rounds=3, rate=0.2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    prune = prune_of(m)
    model = load(m, mlp(m), weights)
    initial = copy.deepcopy(model.state_dict())
    X, y = (torch.tensor(a) for a in tabular_data())
    layers = [(module, "weight") for module in model.modules() if isinstance(module, nn.Linear)]
    out = {}
    for r in range(rounds):
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step in range(5):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X), y)
            loss.backward()
            optimizer.step()
        out[f"loss{r}"] = loss.item()
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=rate)
        with torch.no_grad():  # rewind the surviving weights to their initial values
            for name, module in model.named_modules():
                if isinstance(module, nn.Linear):
                    module.weight_orig.copy_(initial[f"{name}.weight"])
                    module.bias.copy_(initial[f"{name}.bias"])
        out[f"sparsity{r}"] = [float((module.weight == 0).sum()) / module.weight.nelement() for module, _ in layers]
        out[f"masks{r}"] = [module.weight_mask.clone() for module, _ in layers]
        hooks = [next(iter(module._forward_pre_hooks.values())) for module, _ in layers]
        out[f"hooks{r}"] = [type(hook).__name__ for hook in hooks]
        if r:
            out[f"methods{r}"] = [[type(method).__name__ for method in hook] for hook in hooks]
    out["keys"] = list(model.state_dict().keys())
    optimizer.zero_grad()
    F.cross_entropy(model(X), y).backward()
    out["grads"] = [module.weight_orig.grad for module, _ in layers]
    for module, name in layers:
        prune.remove(module, name)
    out["final_keys"] = list(model.state_dict().keys())
    out["is_pruned"] = prune.is_pruned(model)
    out["nonzero"] = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    out["logits"] = model(X)
    return out


def test_lottery_ticket_rewinding():
    ours, _ = run_both(lottery_ticket, weights_of(mlp), rtol=1e-5, atol=1e-6)
    total = 10 * 16 + 16 * 16 + 16 * 3
    kept = [float(mask.sum()) for mask in ours["masks2"]]
    assert sum(kept) == round(round(round(total * 0.8) * 0.8) * 0.8)  # 20% of what is left, three times
    assert ours["hooks0"] == ["CustomFromMask"] * 3 and ours["hooks2"] == ["PruningContainer"] * 3
    assert ours["methods2"] == [["CustomFromMask"] * 3] * 3
    assert ours["keys"][:3] == ["0.bias", "0.weight_orig", "0.weight_mask"]
    for grad, mask in zip(ours["grads"], ours["masks2"]):
        assert (grad[mask == 0] == 0).all() and (grad[mask == 1] != 0).any()
    assert ours["final_keys"] == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]
    assert ours["is_pruned"] is False and ours["nonzero"] == sum(kept) + 16 + 16 + 3


# ----------------------------------------------------------------------------------------------
# structured pruning along each dim, composed with unstructured pruning
# ----------------------------------------------------------------------------------------------


def structured_pruning(m, n, dim):
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3)
    prune.ln_structured(conv, "weight", amount=0.34, n=n, dim=dim)
    prune.ln_structured(conv, "weight", amount=1, n=n, dim=dim)  # one more slice of those left
    prune.l1_unstructured(conv, "weight", amount=0.3)
    prune.ln_structured(conv, "weight", amount=0.5, n=n, dim=1 if dim == 0 else 0)
    container = next(iter(conv._forward_pre_hooks.values()))
    x = torch.ones(1, 4, 5, 5)
    return conv.weight_mask, conv.weight, [type(method).__name__ for method in container], conv(x)


@pytest.mark.parametrize("n", [1, 2, float("inf"), float("-inf"), 0])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_structured_pruning_along_each_dim(n, dim):
    ours, _ = run_both(structured_pruning, n, dim)
    mask, weight, methods, _ = ours
    assert methods == ["LnStructured", "LnStructured", "L1Unstructured", "LnStructured"]
    others = tuple(d for d in range(4) if d != dim % 4)
    assert (mask.any(axis=others)).sum() == mask.shape[dim] - round(0.34 * mask.shape[dim]) - 1
    assert ((weight == 0) >= (mask == 0)).all()


# ----------------------------------------------------------------------------------------------
# a pruned checkpoint: its keys, saved and loaded back (into a pruned model and into a plain one)
# ----------------------------------------------------------------------------------------------


def small_convnet(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def pruned_checkpoint(m, weights):
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    model = load(m, small_convnet(m), weights)
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    prune.ln_structured(model[3], "weight", amount=0.25, n=2, dim=0)
    prune.l1_unstructured(model[3], "bias", amount=1)
    torch.manual_seed(0)
    prune.random_unstructured(model[3], "weight", amount=0.1)
    state = model.state_dict()
    out = {"keys": list(state.keys()), "buffers": [name for name, _ in model.named_buffers()],
           "params": [name for name, _ in model.named_parameters()]}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    plain = small_convnet(m)
    result = plain.load_state_dict(loaded, strict=False)
    out["missing"], out["unexpected"] = sorted(result.missing_keys), sorted(result.unexpected_keys)
    restored = small_convnet(m)
    for module, name in [(restored[0], "weight"), (restored[3], "weight"), (restored[3], "bias")]:
        prune.identity(module, name)
    restored.load_state_dict(loaded)
    x = torch.randn(2, 1, 6, 6)
    out["original"], out["restored"] = model(x), restored(x)
    out["restored_mask"] = restored[3].weight_mask
    return out


def test_pruned_checkpoint_round_trip():
    ours, _ = run_both(pruned_checkpoint, weights_of(small_convnet))
    assert ours["keys"] == ["0.bias", "0.weight_orig", "0.weight_mask", "3.weight_orig", "3.bias_orig",
                            "3.weight_mask", "3.bias_mask"]
    assert ours["buffers"] == ["0.weight_mask", "3.weight_mask", "3.bias_mask"]
    assert ours["missing"] == ["0.weight", "3.bias", "3.weight"]
    assert ours["unexpected"] == ["0.weight_mask", "0.weight_orig", "3.bias_mask", "3.bias_orig", "3.weight_mask",
                                  "3.weight_orig"]
    np.testing.assert_array_equal(ours["original"], ours["restored"])
    assert ours["restored_mask"].reshape(3, -1).any(1).sum() == 2


# ----------------------------------------------------------------------------------------------
# global pruning by importance scores (first-order Taylor), then at random, then of a subset
# ----------------------------------------------------------------------------------------------


def global_pruning(m):
    torch, nn, F = m.torch, m.nn, m.F
    prune = prune_of(m)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(16, 6), torch.randn(16, 2)
    F.mse_loss(net(x), y).backward()
    parameters = [(net[0], "weight"), (net[2], "weight"), (net[4], "weight"), (net[4], "bias")]
    scores = {(module, name): (getattr(module, name) * getattr(module, name).grad).abs()
              for module, name in parameters}
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, importance_scores=scores, amount=20)
    prune.global_unstructured(parameters, pruning_method=prune.RandomUnstructured, amount=0.1)
    kept = [float(getattr(module, name + "_mask").sum()) for module, name in parameters]
    prune.global_unstructured(parameters[:2], pruning_method=prune.L1Unstructured, amount=0.3)
    masks = [getattr(module, name + "_mask") for module, name in parameters]
    zeros = float(sum(torch.sum(getattr(module, name) == 0) for module, name in parameters))
    sparsity = 100.0 * zeros / float(sum(getattr(module, name).nelement() for module, name in parameters))
    return kept, masks, sparsity, net(x)


def test_global_pruning_by_importance_scores():
    ours, _ = run_both(global_pruning)
    kept, masks, sparsity, _ = ours
    total = 48 + 32 + 8 + 2
    assert sum(kept) == total - 20 - round(0.1 * (total - 20))
    assert [float(mask.sum()) for mask in masks[2:]] == kept[2:]  # the third round prunes only the first two
    assert sum(float(mask.sum()) for mask in masks[:2]) == sum(kept[:2]) - round(0.3 * sum(kept[:2]))
    assert sparsity == pytest.approx(100 * (total - sum(float(mask.sum()) for mask in masks)) / total)


# ----------------------------------------------------------------------------------------------
# custom masks, trained through with Adam, then made permanent
# ----------------------------------------------------------------------------------------------


def custom_masks(m):
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    torch.manual_seed(2)
    layer = nn.Linear(5, 4)
    prune.custom_from_mask(layer, name="weight", mask=torch.tril(torch.ones(4, 5)))
    prune.custom_from_mask(layer, name="weight", mask=torch.rand(4, 5) > 0.3)  # a bool mask
    prune.custom_from_mask(layer, name="bias", mask=torch.tensor([1, 0, 1, 1]))  # an int one
    out = {"mask": layer.weight_mask, "bias_mask": layer.bias_mask,
           "mask_dtypes": [layer.weight_mask.dtype == torch.float32, layer.bias_mask.dtype == torch.float32]}
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    x = torch.randn(8, 5)
    for _ in range(3):
        optimizer.zero_grad()
        layer(x).pow(2).sum().backward()
        optimizer.step()
    out.update(weight=layer.weight, orig=layer.weight_orig, grad=layer.weight_orig.grad, bias_grad=layer.bias_orig.grad)
    prune.remove(layer, "weight")
    out["params"] = [name for name, _ in layer.named_parameters()]
    out["still_pruned"] = prune.is_pruned(layer)
    prune.remove(layer, "bias")
    out["pruned_after"] = prune.is_pruned(layer)
    out["final"] = layer.weight
    out["optimizer_holds_it"] = any(p is layer.weight for group in optimizer.param_groups for p in group["params"])
    return out


def test_custom_masks_and_remove():
    ours, _ = run_both(custom_masks)
    assert ours["mask_dtypes"] == [True, True]
    assert (ours["mask"] <= np.tril(np.ones((4, 5)))).all() and (ours["bias_grad"][1] == 0)
    assert (ours["grad"][ours["mask"] == 0] == 0).all()
    assert ours["params"] == ["bias_orig", "weight"] and ours["still_pruned"] and not ours["pruned_after"]
    assert ours["optimizer_holds_it"] and (ours["final"][ours["mask"] == 0] == 0).all()


# ----------------------------------------------------------------------------------------------
# the pruning methods by hand, and their refusals
# ----------------------------------------------------------------------------------------------


def methods_by_hand(m):
    torch, nn = m.torch, m.nn
    prune = prune_of(m)
    torch.manual_seed(3)
    conv = nn.Conv1d(3, 6, 2)
    method = prune.L1Unstructured(amount=0.2)
    t = conv.weight.detach()
    mask = method.compute_mask(t, default_mask=torch.ones_like(t))
    pruned = method.prune(t)
    structured = prune.LnStructured(amount=2, n=1, dim=0).compute_mask(t, default_mask=mask)
    first = prune.RandomStructured.apply(conv, "weight", amount=0.5, dim=1)
    second = prune.L1Unstructured.apply(conv, "weight", amount=3)
    return {"mask": mask, "pruned": pruned, "structured": structured, "first": type(first).__name__,
            "second": type(second).__name__, "len": len(second), "final": conv.weight_mask,
            "names": [hook._tensor_name for hook in conv._forward_pre_hooks.values()]}


def test_pruning_methods_by_hand():
    ours, _ = run_both(methods_by_hand)
    assert ours["first"] == "RandomStructured" and ours["second"] == "PruningContainer" and ours["len"] == 2
    assert ours["mask"].sum() == 36 - 7 and (ours["pruned"][ours["mask"] == 0] == 0).all()
    assert ours["final"].sum() == 6 * 1 * 2 - 3 and ours["names"] == ["weight"]


def pruning_refusals(m):
    nn = m.nn
    prune = prune_of(m)
    attempts = [lambda: prune.l1_unstructured(nn.Linear(2, 2), "weight", amount=5),
                lambda: prune.l1_unstructured(nn.Linear(2, 2), "weight", amount=1.5),
                lambda: prune.l1_unstructured(nn.Linear(2, 2), "weight", amount=-1),
                lambda: prune.ln_structured(nn.Linear(2, 2), "bias", amount=1, n=2, dim=0),
                lambda: prune.ln_structured(nn.Linear(2, 2), "weight", amount=1, n=2, dim=2),
                lambda: prune.ln_structured(nn.Conv2d(2, 2, 3), "weight", amount=1, n="fro", dim=0),
                lambda: prune.remove(nn.Linear(2, 2), "weight"),
                lambda: prune.l1_unstructured(nn.Linear(2, 2), "nope", amount=1),
                lambda: prune.global_unstructured([(nn.Linear(2, 2), "weight")], pruning_method=prune.LnStructured,
                                                  amount=1, n=2, dim=0),
                lambda: prune.l1_unstructured(nn.Linear(2, 2), "weight", amount=1,
                                              importance_scores=m.torch.ones(3))]
    refusals = []
    for attempt in attempts:
        try:
            attempt()
            refusals.append(None)
        except Exception as error:
            refusals.append(type(error).__name__)
    return refusals


def test_pruning_refusals():
    ours, _ = run_both(pruning_refusals)
    assert ours == ["ValueError", "ValueError", "ValueError", "ValueError", "IndexError", "RuntimeError",
                    "ValueError", "AttributeError", "TypeError", "AssertionError"]
