"""Fixes to nn.utils.prune found porting PyTorch's test/nn/test_pruning.py, each checked on chainrule and, where it
is installed, on PyTorch: ``remove`` gives the parameter the pruned values as a new ``.data`` (it wrote them into
the old storage in place, bumping its version: a graph that had saved ``weight_orig`` failed at backward, and a
tensor sharing it saw the zeros); ``global_unstructured`` flattens through ``parameters_to_vector`` (an empty list
raised a TypeError of its own, PyTorch's cat raises a ValueError); ``prune`` checks the shape of
``importance_scores``; PyTorch's amount helpers (``_validate_pruning_amount_init``, ``_validate_pruning_amount``,
``_compute_nparams_toprune``), which custom pruning methods call, exist under their names."""

import importlib

import numpy as np

from tests.ported import raises, same, values


def _modules(T):
    nn = importlib.import_module("nn") if T.__name__ == "autograd" else T.nn
    return nn, importlib.import_module(nn.__name__ + ".utils.prune")


def _pruned_linear(T, nn, prune):
    m = nn.Linear(3, 2)
    with T.no_grad():
        m.weight.copy_(T.tensor([[0.5, -2.0, 0.1], [3.0, -0.2, 1.0]]))
    prune.l1_unstructured(m, "weight", amount=2)
    return m


def test_remove_does_not_write_into_the_old_storage(T):
    nn, prune = _modules(T)
    m = _pruned_linear(T, nn, prune)
    parameter = m.weight_orig
    alias = parameter.detach()  # shares the unpruned values
    penalty = (parameter ** 2).sum()  # saves weight_orig for its backward
    version = parameter._version
    prune.remove(m, "weight")
    assert m.weight is parameter and parameter._version == version
    same(m.weight, np.array([[0.5, -2.0, 0.0], [3.0, 0.0, 1.0]], np.float32))
    same(alias, np.array([[0.5, -2.0, 0.1], [3.0, -0.2, 1.0]], np.float32))
    penalty.backward()  # (the saved leaf is the parameter itself: it reads its new data)
    np.testing.assert_allclose(values(parameter.grad), 2 * np.array([[0.5, -2.0, 0.0], [3.0, 0.0, 1.0]]), rtol=1e-6)


def test_global_unstructured_argument_errors(T):
    nn, prune = _modules(T)
    raises(TypeError, "global_unstructured\\(\\): parameters is not an Iterable", prune.global_unstructured, 5,
           pruning_method=prune.L1Unstructured, amount=1)
    raises(ValueError, "expected a non-empty list of Tensors", prune.global_unstructured, [],
           pruning_method=prune.L1Unstructured, amount=1)
    m = nn.Linear(2, 2)
    raises(TypeError, 'Only "unstructured" PRUNING_TYPE supported', prune.global_unstructured, [(m, "weight")],
           pruning_method=prune.LnStructured, amount=1, n=2, dim=0)
    assert not prune.is_pruned(m)


def test_global_unstructured_gives_each_tensor_its_part_of_the_mask(T):
    nn, prune = _modules(T)
    a, b = nn.Linear(2, 2, bias=False), nn.Linear(3, 1)
    with T.no_grad():
        a.weight.copy_(T.tensor([[0.3, -1.0], [2.0, 0.05]]))
        b.weight.copy_(T.tensor([[-0.1, 4.0, 0.2]]))
        b.bias.fill_(0.01)
    prune.global_unstructured([(a, "weight"), (b, "weight"), (b, "bias")], prune.L1Unstructured, amount=0.5)
    # the 4 smallest of 0.3, 1, 2, 0.05 | 0.1, 4, 0.2 | 0.01
    same(a.weight_mask, np.array([[1, 1], [1, 0]], np.float32))
    same(b.weight_mask, np.array([[0, 1, 0]], np.float32))
    same(b.bias_mask, np.array([0], np.float32))
    same(b(T.ones(1, 3)), np.array([[4.0]], np.float32))


def test_custom_from_mask_of_another_shape_is_refused(T):
    nn, prune = _modules(T)
    m = nn.Linear(2, 2)
    raises(AssertionError, r"default_mask shape .*\[2, 2\]\) must match self.mask shape .*\[2\]\)",
           prune.custom_from_mask, m, "weight", T.tensor([1.0, 0.0]))
    # put back as it was (registered again, after the bias), with no mask or hook
    assert list(m.state_dict()) == ["bias", "weight"] and not prune.is_pruned(m)


def test_prune_checks_the_importance_scores_shape(T):
    nn, prune = _modules(T)
    t = T.tensor([[1.0, -3.0], [0.5, 2.0]])
    raises(AssertionError, "importance_scores should have the same shape as tensor t",
           prune.L1Unstructured(amount=1).prune, t, importance_scores=T.ones(4))
    same(prune.L1Unstructured(amount=1).prune(t), np.array([[1.0, -3.0], [0.0, 2.0]], np.float32))


def test_a_custom_method_can_use_the_amount_helpers(T):
    """A pruning method written outside the library (as in PyTorch's tutorial on extending prune), counting with
    PyTorch's helpers."""
    nn, prune = _modules(T)

    class EveryOther(prune.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def __init__(self, amount):
            prune._validate_pruning_amount_init(amount)
            self.amount = amount

        def compute_mask(self, t, default_mask):
            count = prune._compute_nparams_toprune(self.amount, t.nelement())
            prune._validate_pruning_amount(count, t.nelement())
            mask = default_mask.clone()
            mask.view(-1)[: 2 * count : 2] = 0
            return mask

    m = nn.Linear(4, 2)
    EveryOther.apply(m, "weight", amount=0.5)
    same(m.weight_mask, np.array([[0, 1, 0, 1], [0, 1, 0, 1]], np.float32))
    EveryOther.apply(m, "weight", amount=1)  # on the 4 left: the first of them
    same(m.weight_mask, np.array([[0, 0, 0, 1], [0, 1, 0, 1]], np.float32))
    raises(ValueError, "should either be a float in the range", EveryOther, amount=-1)
    raises(ValueError, "amount=9 should be smaller than the number of parameters to prune=8", EveryOther.apply,
           nn.Linear(4, 2), "weight", amount=9)


def test_vector_to_parameters_names_the_type_as_torch_typename(T):
    nn, _ = _modules(T)
    raises(TypeError, "expected torch.Tensor, but got: numpy.ndarray$", nn.utils.vector_to_parameters, np.ones(3),
           [nn.Parameter(T.ones(3))])
    raises(TypeError, "expected torch.Tensor, but got: tuple$", nn.utils.vector_to_parameters, (1.0,),
           [nn.Parameter(T.ones(1))])


def test_parameters_to_vector_of_a_pruned_model(T):
    """A pruned model's parameters are weight_orig (unpruned) and the bias; vector_to_parameters writes
    weight_orig, and the hook masks it at the next call."""
    nn, prune = _modules(T)
    m = _pruned_linear(T, nn, prune)
    vector = nn.utils.parameters_to_vector(m.parameters())
    assert [name for name, _ in m.named_parameters()] == ["bias", "weight_orig"]
    same(vector[2:], np.array([0.5, -2.0, 0.1, 3.0, -0.2, 1.0], np.float32))
    nn.utils.vector_to_parameters(T.arange(8.0), m.parameters())
    same(m(T.ones(1, 3)), np.array([[0.0 + 2 + 3, 1.0 + 5 + 7]], np.float32))
    same(m.weight, np.array([[2, 3, 0], [5, 0, 7]], np.float32))


def test_structured_errors_print_the_shape_as_a_size(T):
    nn, prune = _modules(T)
    m = nn.Linear(4, 3)
    raises(ValueError, r"Found tensor of shape (torch\.)?Size\(\[3\]\) with 1 dims", prune.random_structured, m, "bias",
           amount=1, dim=0)
    raises(IndexError, r"Invalid index 2 for tensor of size (torch\.)?Size\(\[3, 4\]\)$", prune.ln_structured, m,
           "weight", amount=1, n=1, dim=2)
    assert not prune.is_pruned(m)
