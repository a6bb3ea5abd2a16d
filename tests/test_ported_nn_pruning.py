"""torch.nn.utils.prune, ported from PyTorch's test/nn/test_pruning.py (CPU): the amount checks, each method's
mask by hand, the weight_orig / weight_mask reparametrization with its gradients, PruningContainer, global and
custom pruning, remove, the rollback of a failed pruning, pickling and saving a pruned model, and pruning an
LSTM's flat weights. Each test runs on chainrule's `nn` and, where it is installed, on PyTorch's; the
expectations are literals or NumPy. (tests/test_nn_prune*.py hold the masks compared entry by entry with
PyTorch's on random weights, and the ties.)"""

import copy
import importlib
import io
import pickle
from unittest import mock

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import raises, same, values

nn = ported_nn.nn  # the fixture


def _prune(nn):
    return importlib.import_module(nn.utils.__name__ + ".prune")


def _small_modules(nn):
    return [nn.Linear(5, 7), nn.Conv3d(2, 2, 2)]


# -- the amount ----------------------------------------------------------------------------------

def test_validate_pruning_amount_init(T, nn):
    prune = _prune(nn)
    raises(TypeError, "Invalid type for amount", prune._validate_pruning_amount_init, amount="I'm a string")
    for amount in (1.1, 20.0, -10):
        raises(ValueError, r"should either be a float in the range \[0, 1\] or a non-negative integer",
               prune._validate_pruning_amount_init, amount=amount)
    for amount in (0.34, 1500, 0, 0.0, 1, 1.0):
        prune._validate_pruning_amount_init(amount=amount)


def test_validate_pruning_amount(T, nn):
    prune = _prune(nn)
    raises(ValueError, "amount=20 should be smaller than the number of parameters to prune=19",
           prune._validate_pruning_amount, amount=20, tensor_size=19)
    prune._validate_pruning_amount(amount=0.3, tensor_size=0)  # a fraction is never too large
    for amount, size in ((19, 20), (0, 0), (1, 1)):
        prune._validate_pruning_amount(amount=amount, tensor_size=size)


def test_compute_nparams_to_prune(T, nn):
    prune = _prune(nn)
    assert prune._compute_nparams_toprune(amount=0, tensor_size=15) == 0
    assert prune._compute_nparams_toprune(amount=10, tensor_size=15) == 10
    assert prune._compute_nparams_toprune(amount=1, tensor_size=15) == 1  # the int 1: one entry
    assert prune._compute_nparams_toprune(amount=1.0, tensor_size=15) == 15  # the float 1.0: all of them
    assert prune._compute_nparams_toprune(amount=0.4, tensor_size=17) == 7  # round(6.8)
    assert prune._compute_nparams_toprune(amount=16, tensor_size=15) == 16  # (checked by _validate_pruning_amount)


# -- the reparametrization -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["weight", "bias"])
def test_random_pruning_sizes_orig_and_new_weight(T, nn, name):
    prune = _prune(nn)
    for m in _small_modules(nn):
        original = getattr(m, name)
        before = values(original).copy()
        prune.random_unstructured(m, name=name, amount=0.1)
        for suffix in ("_mask", "_orig", ""):
            assert tuple(getattr(m, name + suffix).shape) == tuple(original.shape)
        assert getattr(m, name + "_orig") is original
        same(getattr(m, name + "_orig"), before)
        mask = values(getattr(m, name + "_mask"))
        assert mask.dtype == np.float32 and mask.size - mask.sum() == round(0.1 * mask.size)
        same(getattr(m, name), before * mask)


def test_identity_pruning_changes_neither_forward_nor_backward(T, nn):
    prune = _prune(nn)
    x = T.ones(1, 5)
    m = nn.Linear(5, 2)
    before = m(x)
    before.sum().backward()
    same(m.weight.grad, np.ones((2, 5), np.float32))
    same(m.bias.grad, np.ones(2, np.float32))
    m.zero_grad()
    prune.identity(m, name="weight")
    same(m.weight_mask, np.ones((2, 5), np.float32))
    after = m(x)
    same(after, values(before))
    after.sum().backward()
    same(m.weight_orig.grad, np.ones((2, 5), np.float32))
    same(m.bias.grad, np.ones(2, np.float32))
    same(m(x), values(m(x)))  # forward twice: the same output


def _prune_with_mask(T, nn, mask_values):
    """nn.Linear(5, 2) whose weight random_unstructured prunes with the mask `mask_values` (compute_mask patched,
    as PyTorch's test patches it: the amount does not count)."""
    prune = _prune(nn)
    m = nn.Linear(5, 2)
    mask = T.tensor(np.asarray(mask_values, np.float32))
    with mock.patch.object(prune.RandomUnstructured, "compute_mask", return_value=mask):
        prune.random_unstructured(m, name="weight", amount=0.9)
    return m


def test_random_pruning_0perc(T, nn):
    m = nn.Linear(5, 2)
    weight, bias = values(m.weight).copy(), values(m.bias).copy()
    pruned = _prune_with_mask(T, nn, np.ones((2, 5)))
    with T.no_grad():
        pruned.weight_orig.copy_(T.tensor(weight))
        pruned.bias.copy_(T.tensor(bias))
    y = pruned(T.ones(1, 5))
    np.testing.assert_allclose(values(y), weight.sum(1, keepdims=True).T + bias, rtol=1e-6)
    y.sum().backward()
    same(pruned.weight_orig.grad, np.ones((2, 5), np.float32))
    same(pruned.bias.grad, np.ones(2, np.float32))


def test_random_pruning_masks_the_gradient_and_the_update(T, nn):
    mask = np.ones((2, 5), np.float32)
    mask[1, 0] = mask[0, 3] = 0
    m = _prune_with_mask(T, nn, mask)
    m(T.ones(1, 5)).sum().backward()
    same(m.weight_orig.grad, mask)  # weight_orig is the parameter: it takes the (masked) gradient
    same(m.bias.grad, np.ones(2, np.float32))
    old = values(m.weight_orig).copy()
    for p in m.parameters():
        p.data.sub_(p.grad.data * 1.0)
    same(m.weight_orig, old - mask)  # the pruned entries are not updated
    assert m.weight_orig[1, 0].item() == old[1, 0] and m.weight_orig[0, 3].item() == old[0, 3]


def test_random_pruning_forward(T, nn):
    mask = np.zeros((2, 5), np.float32)
    mask[1, 0] = mask[0, 3] = 1
    m = _prune_with_mask(T, nn, mask)
    y = values(m(T.ones(1, 5)))
    w, b = values(m.weight_orig), values(m.bias)
    np.testing.assert_allclose(y, [[w[0, 3] + b[0], w[1, 0] + b[1]]], rtol=1e-6)


def test_remove_pruning_forward(T, nn):
    prune = _prune(nn)
    mask = np.ones((2, 5), np.float32)
    mask[1, 0] = mask[0, 3] = 0
    m = _prune_with_mask(T, nn, mask)
    x = T.ones(1, 5)
    pruned = values(m(x)).copy()
    prune.remove(m, "weight")
    same(m(x), pruned)
    same(m.weight, values(m.weight) * mask)


def test_pruning_keeps_the_parameter_object(T, nn):
    """Pruning and removing keep the very Parameter (an optimizer built before still holds it)."""
    prune = _prune(nn)
    m = nn.Linear(5, 2, bias=False)
    first = next(iter(m.parameters()))
    prune.random_unstructured(m, name="weight", amount=0.9)
    assert next(iter(m.parameters())) is first
    prune.remove(m, "weight")
    assert next(iter(m.parameters())) is first


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_random_pruning_pickle(T, nn, name):
    prune = _prune(nn)
    for m in _small_modules(nn):
        prune.random_unstructured(m, name=name, amount=0.1)
        back = pickle.loads(pickle.dumps(m))
        assert isinstance(back, type(m))
        assert list(back.state_dict()) == list(m.state_dict())
        same(getattr(back, name + "_mask"), values(getattr(m, name + "_mask")))
        same(getattr(back, name), values(getattr(m, name)))
        hooks = [h for h in back._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        assert [type(h) for h in hooks] == [prune.RandomUnstructured] and hooks[0]._tensor_name == name


def test_deepcopy_of_a_pruned_module(T, nn):
    """Pruned, `weight` is the product weight_orig * weight_mask (not a leaf), which deepcopy refuses, as
    PyTorch's; without grad when pruned (or after remove) the copy works."""
    prune = _prune(nn)
    m = nn.Linear(3, 2)
    prune.l1_unstructured(m, "weight", amount=2)
    raises(RuntimeError, "Only Tensors created explicitly by the user", copy.deepcopy, m)
    prune.remove(m, "weight")
    twin = copy.deepcopy(m)
    same(twin.weight, values(m.weight))
    assert twin.weight is not m.weight
    with T.no_grad():
        prune.l1_unstructured(m, "bias", amount=1)
    twin = copy.deepcopy(m)
    same(twin.bias, values(m.bias))
    assert values(twin.bias_mask).sum() == 1


# -- PruningContainer ----------------------------------------------------------------------------

def test_multiple_pruning_calls(T, nn):
    prune = _prune(nn)
    m = nn.Conv3d(2, 2, 2)
    prune.l1_unstructured(m, name="weight", amount=0.1)
    first_mask = m.weight_mask
    prune.ln_structured(m, name="weight", amount=0.3, n=2, dim=0)
    hook = next(iter(m._forward_pre_hooks.values()))
    assert isinstance(hook, prune.PruningContainer) and hook._tensor_name == "weight" and len(hook) == 2
    assert isinstance(hook[0], prune.L1Unstructured) and isinstance(hook[1], prune.LnStructured)
    assert bool(T.all(m.weight_mask[first_mask == 0] == 0))  # what the first pruned stays pruned
    # round(0.3 * 2) = 1 of the two output channels goes entirely
    filters = values(m.weight_mask).reshape(2, -1)
    assert sorted(filters.sum(1) == 0) == [False, True]
    prune.ln_structured(m, name="weight", amount=0.1, n=float("inf"), dim=1)
    hook = next(iter(m._forward_pre_hooks.values()))
    assert hook._tensor_name == "weight" and len(hook) == 3


def test_pruning_container(T, nn):
    prune = _prune(nn)
    container = prune.PruningContainer()
    container._tensor_name = "test"
    assert len(container) == 0
    p = prune.L1Unstructured(amount=2)
    p._tensor_name = "test"
    container.add_pruning_method(p)
    assert len(container) == 1 and container[0] is p
    q = prune.L1Unstructured(amount=2)
    q._tensor_name = "another_test"
    raises(ValueError, "Can only add pruning methods acting on the parameter named 'test' to PruningContainer.* "
           "Found 'another_test'", container.add_pruning_method, q)
    raises(TypeError, "is not a BasePruningMethod subclass", container.add_pruning_method, 10)
    raises(TypeError, "is not a BasePruningMethod subclass", container.add_pruning_method, "ugh")
    assert len(container) == 1


def test_pruning_container_compute_mask(T, nn):
    """Only the last method computes, on what the mask so far keeps: the entries left (unstructured), the
    slices not wholly zero (structured, along its dim)."""
    prune = _prune(nn)
    container = prune.PruningContainer()
    container._tensor_name = "test"
    t = T.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]).to(dtype=T.float32)
    default_mask = T.tensor([[1, 1, 1, 0], [1, 1, 0, 1]])
    steps = [(prune.L1Unstructured(amount=2), [[0, 0, 1, 0], [1, 1, 0, 1]]),
             (prune.LnStructured(amount=1, n=2, dim=0), [[0, 0, 0, 0], [1, 1, 0, 1]]),
             (prune.LnStructured(amount=1, n=2, dim=1), [[0, 1, 1, 0], [0, 1, 0, 1]])]
    for method, expected in steps:
        method._tensor_name = "test"
        container.add_pruning_method(method)
        same(container.compute_mask(t, default_mask), np.array(expected, np.float32), dtype="float32")


# -- each method's mask by hand ------------------------------------------------------------------

def _linear_4_2(T, nn):
    m = nn.Linear(4, 2)
    m.weight = nn.Parameter(T.tensor([[1, 2, 3, 4], [-4, -3, -2, -1]], dtype=T.float32))
    return m


def test_l1_unstructured_pruning(T, nn):
    prune = _prune(nn)
    m = _linear_4_2(T, nn)
    prune.l1_unstructured(m, "weight", amount=2)
    same(m.weight, np.array([[0, 2, 3, 4], [-4, -3, -2, 0]], np.float32))
    prune.l1_unstructured(m, "weight", amount=2)  # the next two smallest of those left
    same(m.weight, np.array([[0, 0, 3, 4], [-4, -3, 0, 0]], np.float32))


def test_l1_unstructured_pruning_with_importance_scores(T, nn):
    prune = _prune(nn)
    m = _linear_4_2(T, nn)
    scores = T.tensor([[4, 2, 1, 3], [-3, -1, -2, -4]], dtype=T.float32)
    prune.l1_unstructured(m, "weight", amount=2, importance_scores=scores)
    same(m.weight, np.array([[1, 2, 0, 4], [-4, 0, -2, -1]], np.float32))
    prune.l1_unstructured(m, "weight", amount=2, importance_scores=scores)
    same(m.weight, np.array([[1, 0, 0, 4], [-4, 0, 0, -1]], np.float32))
    raises(AssertionError, "importance_scores should have the same shape as parameter weight",
           prune.l1_unstructured, m, "weight", amount=1, importance_scores=T.ones(3))


def test_unstructured_pruning_same_magnitude(T, nn):
    """Ties: exactly the count asked for goes (not every entry at the threshold), on an integer tensor too."""
    prune = _prune(nn)
    T.manual_seed(0)
    t = 2 * T.randint(low=-1, high=2, size=(10, 7))
    mask = prune.L1Unstructured(amount=0.2).compute_mask(t, default_mask=T.ones_like(t))
    assert str(mask.dtype).endswith("int64")
    assert T.sum(mask == 0).item() == prune._compute_nparams_toprune(0.2, t.nelement()) == 14


def test_random_structured_pruning_amount(T, nn):
    prune = _prune(nn)
    T.manual_seed(0)
    t = 2 * T.randint(low=-1, high=2, size=(5, 4, 2)).to(dtype=T.float32)
    mask = prune.RandomStructured(amount=0.6, dim=2).compute_mask(t, default_mask=T.ones_like(t))
    per_column = sorted(T.sum(mask == 0, axis=[0, 1]))  # round(0.6 * 2) = 1 of the 2 columns, all 20 entries
    assert per_column == [0, 20]


def _conv_3_1_2(T, nn):
    m = nn.Conv2d(3, 1, 2)
    m.weight.data = T.tensor([[[[1.0, 2.0], [1.0, 2.5]], [[0.5, 1.0], [0.1, 0.1]], [[-3.0, -5.0], [0.1, -1.0]]]])
    return m


@pytest.mark.parametrize("scored", [False, True])
def test_ln_structured_pruning(T, nn, scored):
    prune = _prune(nn)
    m = _conv_3_1_2(T, nn)
    scores = (T.tensor([[[[10.0, 1.0], [10.0, 1.0]], [[30.0, 3.0], [30.0, 3.0]], [[-20.0, -2.0], [-20.0, -2.0]]]])
              if scored else None)
    # the channel of least L2 norm (of the weights: the 2nd; of the scores: the 1st)
    expected = np.ones((1, 3, 2, 2), np.float32)
    expected[:, 0 if scored else 1] = 0
    prune.ln_structured(m, "weight", amount=1, n=2, dim=1, importance_scores=scores)
    same(m.weight_mask, expected)
    # then the column of least L1 norm along the last axis, among what is left
    expected[:, :, :, 1 if scored else 0] = 0
    prune.ln_structured(m, "weight", amount=1, n=1, dim=-1, importance_scores=scores)
    same(m.weight_mask, expected)
    same(m.weight, values(m.weight_orig) * expected)


def test_custom_from_mask_pruning(T, nn):
    prune = _prune(nn)
    mask = T.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    default_mask = T.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])
    t = T.rand_like(mask.to(dtype=T.float32))  # not used
    computed = prune.CustomFromMask(mask=mask).compute_mask(t, default_mask)
    same(computed, np.array([[0, 0, 0, 0], [0, 0, 1, 1]]), dtype="int64")


def test_prune(T, nn):
    prune = _prune(nn)
    p = prune.L1Unstructured(amount=2)
    t = T.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]).to(dtype=T.float32)
    default_mask = T.tensor([[1, 1, 1, 0], [1, 1, 0, 1]])
    # the two of least magnitude go, whatever the mask so far
    same(p.prune(t, default_mask), np.array([[0, 0, 3, 0], [5, 6, 0, 8]], np.float32))
    same(p.prune(t, default_mask, importance_scores=t), np.array([[0, 0, 3, 0], [5, 6, 0, 8]], np.float32))
    scores = T.tensor([[1, 2, 3, 4], [1.5, 1.6, 1.7, 1.8]])
    same(p.prune(t, default_mask, importance_scores=scores), np.array([[0, 2, 3, 0], [0, 6, 0, 8]], np.float32))
    same(p.prune(t), np.array([[0, 0, 3, 4], [5, 6, 7, 8]], np.float32))  # no mask: all ones
    raises(AssertionError, "importance_scores should have the same shape as tensor t", p.prune, t, default_mask,
           importance_scores=T.ones(8))


# -- remove, global pruning ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["weight", "bias"])
def test_remove_pruning(T, nn, name):
    prune = _prune(nn)
    for m in _small_modules(nn):
        assert not prune.is_pruned(m)
        raises(ValueError, f"Parameter '{name}' of module .* has to be pruned before pruning can be removed",
               prune.remove, m, name)
        prune.random_unstructured(m, name, amount=0.5)
        assert name + "_orig" in dict(m.named_parameters()) and name + "_mask" in dict(m.named_buffers())
        assert name not in dict(m.named_parameters()) and hasattr(m, name) and prune.is_pruned(m)
        pruned = values(getattr(m, name)).copy()
        prune.remove(m, name)
        assert name in dict(m.named_parameters()) and isinstance(getattr(m, name), nn.Parameter)
        assert name + "_orig" not in dict(m.named_parameters()) and name + "_mask" not in dict(m.named_buffers())
        same(getattr(m, name), pruned)
        assert not prune.is_pruned(m) and len(m._forward_pre_hooks) == 0


@pytest.mark.parametrize("scored", [False, True])
def test_global_pruning(T, nn, scored):
    prune = _prune(nn)
    m, n = _linear_4_2(T, nn), nn.Linear(3, 1)
    n.weight = nn.Parameter(T.tensor([[0, 0.1, -2]]).to(dtype=T.float32))
    scores = None
    if scored:
        scores = {(m, "weight"): T.tensor([[4, 2, 1, 3], [-3, -1, -2, -4]], dtype=T.float32),
                  (n, "weight"): T.tensor([[0, 10.0, -0.2]])}
    # the 4 smallest of the 11 entries of both, together
    prune.global_unstructured(((m, "weight"), (n, "weight")), pruning_method=prune.L1Unstructured, amount=4,
                              importance_scores=scores)
    if scored:
        same(m.weight, np.array([[1, 2, 0, 4], [-4, 0, -2, -1]], np.float32))
        same(n.weight, np.array([[0, 0.1, 0]], np.float32))
    else:
        same(m.weight, np.array([[0, 2, 3, 4], [-4, -3, -2, 0]], np.float32))
        same(n.weight, np.array([[0, 0, -2]], np.float32))
    assert isinstance(next(iter(m._forward_pre_hooks.values())), prune.CustomFromMask)
    # again: the 4 smallest of the 7 left (of the weights) go, on top of the masks
    prune.global_unstructured([(m, "weight"), (n, "weight")], pruning_method=prune.L1Unstructured, amount=0.5)
    assert values(m.weight_mask).sum() + values(n.weight_mask).sum() == 7 - round(0.5 * 7)
    raises(TypeError, "importance_scores must be of type dict", prune.global_unstructured, [(m, "weight")],
           pruning_method=prune.L1Unstructured, importance_scores=[1], amount=1)


def test_pruning_rollback(T, nn):
    """A method that fails while computing its mask leaves the module as it was."""
    prune = _prune(nn)
    for m in _small_modules(nn):
        for name in ("weight", "bias"):
            with mock.patch.object(prune.L1Unstructured, "compute_mask", side_effect=Exception("HA!")):
                raises(Exception, "HA!", prune.l1_unstructured, m, name=name, amount=0.9)
            assert name in dict(m.named_parameters())
            assert name + "_mask" not in dict(m.named_buffers()) and name + "_orig" not in dict(m.named_parameters())
            assert not prune.is_pruned(m)


# -- serialization -------------------------------------------------------------------------------

def _model(nn):
    return nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 1))


def test_pruning_serialization_model(T, nn):
    prune = _prune(nn)
    model = _model(nn)
    assert "0.weight" in model.state_dict() and "0.weight_orig" not in model.state_dict()
    prune.l1_unstructured(module=model[0], name="weight", amount=0.9)
    assert list(model.state_dict()) == ["0.bias", "0.weight_orig", "0.weight_mask", "2.weight", "2.bias"]
    assert values(model[0].weight_mask).sum() == 10
    pruned = values(model[0].weight).copy()
    buffer = io.BytesIO()
    T.save(model, buffer)
    buffer.seek(0)
    # (chainrule's load builds only the classes it is told it may: PyTorch's weights_only=False builds any)
    classes = [type(model), nn.Linear, nn.ReLU, prune.L1Unstructured]
    with T.serialization.safe_globals(classes):
        loaded = T.load(buffer, weights_only=False)
    assert list(loaded.state_dict()) == list(model.state_dict())
    same(loaded[0].weight, pruned)
    x = T.ones(2, 10)
    same(loaded(x), values(model(x)))
    assert prune.is_pruned(loaded)


def test_pruning_serialization_state_dict(T, nn):
    prune = _prune(nn)
    model = _model(nn)
    prune.l1_unstructured(module=model[0], name="weight", amount=0.9)
    pruned = values(model[0].weight).copy()
    prune.remove(module=model[0], name="weight")
    keys = ["0.bias", "0.weight", "2.weight", "2.bias"]  # the weight is registered again, after the bias
    assert list(model.state_dict()) == keys
    buffer = io.BytesIO()
    T.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = _model(nn)
    fresh.load_state_dict(T.load(buffer))
    assert list(fresh.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"] and not prune.is_pruned(fresh)
    same(fresh[0].weight, pruned)
    assert (values(fresh[0].weight) == 0).sum() == 90


def test_pruned_state_dict_loads_into_a_pruned_model(T, nn):
    """A pruned model's state dict (weight_orig, weight_mask) loads into a model pruned the same way; the hook
    recomputes weight from them at the next call."""
    prune = _prune(nn)
    source, target = nn.Linear(4, 3), nn.Linear(4, 3)
    prune.l1_unstructured(source, "weight", amount=5)
    prune.identity(target, "weight")
    target.load_state_dict(source.state_dict())
    same(target.weight_mask, values(source.weight_mask))
    x = T.ones(1, 4)
    same(target(x), values(source(x)))
    same(target.weight, values(source.weight))
    raises(RuntimeError, 'Missing key\\(s\\) in state_dict: "weight_orig", "weight_mask"', target.load_state_dict,
           nn.Linear(4, 3).state_dict())


# -- recurrent layers ----------------------------------------------------------------------------

def test_rnn_pruning(T, nn):
    prune = _prune(nn)
    lstm = nn.LSTM(32, 32)
    prune.l1_unstructured(lstm, "weight_ih_l0", 0.5)
    # the pruned weight is a plain tensor among the flat weights the layer computes with
    assert sum(isinstance(p, nn.Parameter) for p in lstm._flat_weights) == 3
    assert values(lstm.weight_ih_l0_mask).sum() == 128 * 32 / 2
    x = T.ones(2, 1, 32)
    out, _ = lstm(x)
    reference = nn.LSTM(32, 32)
    with T.no_grad():
        for name, _ in reference.named_parameters():
            getattr(reference, name).copy_(getattr(lstm, name).detach())
    np.testing.assert_allclose(values(out), values(reference(x)[0]), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert (values(lstm.weight_ih_l0_orig.grad)[values(lstm.weight_ih_l0_mask) == 0] == 0).all()
    prune.remove(lstm, "weight_ih_l0")
    assert sum(isinstance(p, nn.Parameter) for p in lstm._flat_weights) == 4
    assert lstm._parameters["weight_ih_l0"] is not None and "weight_ih_l0_orig" not in lstm._parameters
    named = dict(lstm.named_parameters())
    assert named["weight_ih_l0"] is not None and "weight_ih_l0_orig" not in named


def test_gru_pruning_across_layers_and_pickle(T, nn):
    """Structured pruning of a second layer's recurrent weight: the layer computes with the pruned weight, and a
    pickled copy keeps the hook, which recomputes from the copy's own weight_orig."""
    prune = _prune(nn)
    T.manual_seed(0)
    gru = nn.GRU(3, 4, num_layers=2)
    prune.ln_structured(gru, "weight_hh_l1", amount=3, n=2, dim=0)
    assert sum(isinstance(p, nn.Parameter) for p in gru._flat_weights) == 7
    assert (values(gru.weight_hh_l1_mask).sum(1) == 0).sum() == 3
    x = T.ones(2, 1, 3)
    out = values(gru(x)[0])
    twin = pickle.loads(pickle.dumps(gru))
    same(twin(x)[0], out)
    with T.no_grad():
        twin.weight_hh_l1_orig.zero_()
        gru.weight_hh_l1_orig.zero_()
    changed = values(twin(x)[0])
    assert np.abs(changed - out).max() > 0
    same(gru(x)[0], changed)


# -- a program: iterative magnitude pruning with rewinding (the lottery-ticket recipe) --------------

def test_iterative_magnitude_pruning_with_rewinding(T, nn):
    prune = _prune(nn)
    F = nn.functional
    optim = importlib.import_module("optim") if T.__name__ == "autograd" else T.optim
    T.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    x, y = T.randn(8, 1, 8, 8), T.randint(0, 10, (8,))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train(steps=3):
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        return loss.item()

    losses = [train()]
    pruned = [(model[0], "weight"), (model[3], "weight")]
    kept = []
    for _ in range(2):
        prune.global_unstructured(pruned, pruning_method=prune.L1Unstructured, amount=0.3)
        with T.no_grad():  # rewind what survives to its starting values (the optimizer holds weight_orig)
            for index in (0, 3):
                model[index].weight_orig.copy_(start[f"{index}.weight"])
        losses.append(train())
        kept.append(int(sum(values(m.weight_mask).sum() for m, _ in pruned)))
    total = 36 + 1440
    assert kept == [total - round(0.3 * total), total - round(0.3 * total) - round(0.3 * (total - round(0.3 * total)))]
    hook = next(iter(model[3]._forward_pre_hooks.values()))
    assert [type(h).__name__ for h in hook] == ["CustomFromMask", "CustomFromMask"]
    for m, name in pruned:
        weight = values(getattr(m, name + "_orig")) * values(getattr(m, name + "_mask"))  # (m.weight: the last call's)
        prune.remove(m, name)
        same(getattr(m, name), weight)
    assert (values(model[3].weight) == 0).sum() + (values(model[0].weight) == 0).sum() == total - kept[-1]
    np.testing.assert_allclose(losses, LOTTERY_LOSSES, rtol=1e-4)


LOTTERY_LOSSES = [1.2806185, 0.41093004, 0.1355599]  # the same on PyTorch (the same draws from the seed)
