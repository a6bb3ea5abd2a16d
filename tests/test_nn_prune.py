"""nn.utils.prune: the weight_orig / weight_mask reparametrization with its forward pre-hook,
each method's mask (the deterministic ones equal to PyTorch's on the same weights, the random
ones by their counts), repeated pruning through PruningContainer, global pruning, remove and
is_pruned; state dict keys as PyTorch's."""

import numpy as np
import pytest

import autograd
import nn
from nn.utils import prune

RNG = np.random.default_rng(0)


def _linear(seed=0):
    autograd.manual_seed(seed)
    return nn.Linear(6, 5)


def _conv():
    autograd.manual_seed(1)
    return nn.Conv2d(3, 4, 3)


def test_reparametrization_and_hook():
    m = _linear()
    weight = m.weight
    prune.l1_unstructured(m, "weight", amount=0.4)
    assert list(m.state_dict()) == ["bias", "weight_orig", "weight_mask"]
    assert m.weight_orig is weight and "weight" not in dict(m.named_parameters())
    assert [name for name, _ in m.named_buffers()] == ["weight_mask"]
    mask = m.weight_mask.numpy()
    assert mask.sum() == 30 - 12 and set(np.unique(mask)) == {0.0, 1.0}
    np.testing.assert_array_equal(m.weight.numpy(), weight.detach().numpy() * mask)
    # the 12 smallest |w| are the ones gone
    magnitudes = np.abs(weight.detach().numpy())
    assert magnitudes[mask == 0].max() <= magnitudes[mask == 1].min()
    # the hook recomputes weight before each call; the gradient reaches weight_orig through the mask
    original = weight.detach().numpy().copy()
    with autograd.no_grad():
        m.weight_orig.mul_(2.0)
    x = autograd.tensor(RNG.standard_normal((2, 6)).astype(np.float32))
    m(x).sum().backward()
    np.testing.assert_allclose(m.weight.detach().numpy(), 2 * original * mask, rtol=1e-6)
    np.testing.assert_allclose(m.weight_orig.grad.numpy(), np.tile(x.numpy().sum(0), (5, 1)) * mask, rtol=1e-5)


def test_repeated_pruning_uses_a_container_and_prunes_what_is_left():
    m = _linear()
    prune.random_unstructured(m, "weight", amount=0.5)
    prune.random_unstructured(m, "weight", amount=0.5)
    hooks = [hook for hook in m._forward_pre_hooks.values() if isinstance(hook, prune.BasePruningMethod)]
    assert len(hooks) == 1 and isinstance(hooks[0], prune.PruningContainer) and len(hooks[0]) == 2
    assert m.weight_mask.numpy().sum() == 15 - round(0.5 * 15)  # half of the 15 left
    prune.ln_structured(m, "weight", amount=1, n=2, dim=0)
    rows = m.weight_mask.numpy().sum(axis=1)
    assert (rows == 0).sum() >= 1


def test_structured_methods_drop_whole_slices():
    m = _conv()
    prune.random_structured(m, "weight", amount=2, dim=0)
    filters = m.weight_mask.numpy().reshape(4, -1)
    assert sorted(filters.min(axis=1) == filters.max(axis=1)) == [True] * 4 and (filters.sum(axis=1) == 0).sum() == 2
    with pytest.raises(ValueError, match="Structured pruning can only be applied to multidimensional tensors"):
        prune.random_structured(nn.Linear(2, 2), "bias", amount=1, dim=0)


def test_remove_makes_it_permanent():
    m = _linear()
    weight = m.weight
    prune.l1_unstructured(m, "weight", amount=3)
    pruned = m.weight.numpy()
    assert prune.remove(m, "weight") is m
    assert m.weight is weight and isinstance(m.weight, nn.Parameter)
    np.testing.assert_array_equal(m.weight.detach().numpy(), pruned)
    assert list(m.state_dict()) == ["bias", "weight"] and not prune.is_pruned(m)
    with pytest.raises(ValueError, match="has to be pruned before pruning can be removed"):
        prune.remove(m, "weight")


def test_is_pruned_looks_into_submodules():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    assert not prune.is_pruned(model)
    prune.identity(model[2], "bias")
    assert prune.is_pruned(model)
    assert model[2].bias_mask.numpy().tolist() == [1.0, 1.0]


def test_amount_is_checked():
    with pytest.raises(TypeError, match="Invalid type for amount"):
        prune.L1Unstructured("half")
    with pytest.raises(ValueError, match="should either be a float in the range \\[0, 1\\] or a non-negative"):
        prune.L1Unstructured(1.5)
    with pytest.raises(ValueError, match="should be smaller than the number of parameters to prune=30"):
        prune.l1_unstructured(_linear(), "weight", amount=31)
    m = _linear()
    with pytest.raises(ValueError):
        prune.l1_unstructured(m, "weight", amount=31)
    # a failed pruning puts the parameter back (at the end, as PyTorch's does), with no mask or hook
    assert list(m.state_dict()) == ["bias", "weight"] and not prune.is_pruned(m)


def test_global_unstructured_ranks_across_tensors():
    """The method is passed as pruning_method=, PyTorch's keyword (the pruning tutorial's spelling)."""
    a, b = _linear(0), _linear(1)
    with autograd.no_grad():
        b.weight.mul_(10.0)  # b's weights are all larger: a loses more
    prune.global_unstructured([(a, "weight"), (b, "weight")], pruning_method=prune.L1Unstructured, amount=20)
    lost_a, lost_b = 30 - a.weight_mask.numpy().sum(), 30 - b.weight_mask.numpy().sum()
    assert lost_a + lost_b == 20 and lost_a > lost_b
    with pytest.raises(TypeError, match='Only "unstructured" PRUNING_TYPE'):
        prune.global_unstructured([(a, "bias")], pruning_method=prune.RandomStructured, amount=1)


# -- against PyTorch: the same weights give the same masks --------------------------------------------

def _pair(layer, torch_layer):
    """Our layer and PyTorch's with the same parameters."""
    import torch

    ours = layer()
    theirs = torch_layer()
    with torch.no_grad():
        for name, value in ours.named_parameters():
            getattr(theirs, name).copy_(torch.tensor(value.detach().numpy()))
    return ours, theirs


def _linear_pair():
    import torch

    return _pair(_linear, lambda: torch.nn.Linear(6, 5))


def _conv_pair():
    import torch

    return _pair(_conv, lambda: torch.nn.Conv2d(3, 4, 3))


def _same(ours, theirs, name="weight"):
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key in (name + "_mask", name + "_orig", name):
        np.testing.assert_array_equal(getattr(ours, key).detach().numpy(), getattr(theirs, key).detach().numpy())


STEPS = {
    "l1": [("l1_unstructured", dict(amount=0.3))],
    "l1_count": [("l1_unstructured", dict(amount=7))],
    "l1_twice": [("l1_unstructured", dict(amount=0.3)), ("l1_unstructured", dict(amount=0.5))],
    "ln_rows": [("ln_structured", dict(amount=2, n=2, dim=0))],
    "ln_columns_l1": [("ln_structured", dict(amount=0.5, n=1, dim=-1))],
    "ln_inf_after_l1": [("l1_unstructured", dict(amount=0.2)), ("ln_structured", dict(amount=1, n=float("inf"),
                                                                                       dim=0))],
    "l1_after_ln": [("ln_structured", dict(amount=1, n=2, dim=1)), ("l1_unstructured", dict(amount=4))],
    "identity": [("identity", {})],
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(STEPS))
@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_masks_match_torch(name, layer):
    torch = pytest.importorskip("torch")
    import torch.nn.utils.prune as torch_prune

    ours, theirs = _linear_pair() if layer == "linear" else _conv_pair()
    for function, options in STEPS[name]:
        getattr(prune, function)(ours, "weight", **options)
        getattr(torch_prune, function)(theirs, "weight", **options)
        _same(ours, theirs)
    x = RNG.standard_normal((2, 6) if layer == "linear" else (1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(ours(autograd.tensor(x)).detach().numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    prune.remove(ours, "weight")
    torch_prune.remove(theirs, "weight")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    np.testing.assert_array_equal(ours.weight.detach().numpy(), theirs.weight.detach().numpy())


@pytest.mark.torch
def test_importance_scores_custom_masks_and_global_pruning_match_torch():
    torch = pytest.importorskip("torch")
    import torch.nn.utils.prune as torch_prune

    scores = RNG.standard_normal((5, 6)).astype(np.float32)
    ours, theirs = _linear_pair()
    prune.l1_unstructured(ours, "weight", amount=9, importance_scores=autograd.tensor(scores))
    torch_prune.l1_unstructured(theirs, "weight", amount=9, importance_scores=torch.tensor(scores))
    _same(ours, theirs)
    mask = (RNG.random(5) > 0.5).astype(np.float32)
    prune.custom_from_mask(ours, "bias", autograd.tensor(mask))
    torch_prune.custom_from_mask(theirs, "bias", torch.tensor(mask))
    _same(ours, theirs, "bias")
    pairs = [_linear_pair(), _conv_pair()]
    prune.global_unstructured([(pairs[0][0], "weight"), (pairs[1][0], "weight")], prune.L1Unstructured, amount=0.4)
    torch_prune.global_unstructured([(pairs[0][1], "weight"), (pairs[1][1], "weight")], torch_prune.L1Unstructured,
                                    amount=0.4)
    for ours, theirs in pairs:
        _same(ours, theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
