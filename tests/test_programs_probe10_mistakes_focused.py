"""A new user's first hour: short programs that each make one mistake people really make, run as
tests/probe10_mistakes_common.py says. Focused tests of what the programs found, on chainrule and PyTorch (the T, nn
and F fixtures): scores of one prediction with a label of shape 1 (weights, ignore_index) or 0-d, scores that are no
tensor, a learning rate given as a string, registering None before ``super().__init__()``, cat and stack of
non-tensors, integer or bool scores refused by the class losses, spreads of integers, ``isclose`` of two dtypes,
multi_margin_loss of one prediction, a layer, a torch function or an activation given a tuple, list or number, a GRU
given an LSTM's state tuple."""

import numpy as np
import pytest

from tests import ported_nn

nn = ported_nn.nn  # fixtures: chainrule's nn and F, then PyTorch's (for the focused tests at the end)
F = ported_nn.F


# -- focused tests of the fixes, on chainrule and PyTorch ---------------------------------------------------


@pytest.mark.parametrize("dtype", ["int64", "uint8"])
def test_scores_of_one_prediction_take_a_label_of_shape_1_with_weights_and_ignore_index(T, F, dtype):
    scores = T.tensor([0.5, -1.0, 2.0, 0.0])
    label = T.tensor(np.array([2], dtype=dtype))
    weight = T.tensor([1.0, 2.0, 3.0, 4.0])
    expected = np.log(np.exp([0.5, -1.0, 2.0, 0.0]).sum()) - 2.0
    np.testing.assert_allclose(F.cross_entropy(scores, label).item(), expected, rtol=1e-6)
    np.testing.assert_allclose(F.cross_entropy(scores, label, weight=weight, reduction="sum").item(), 3 * expected,
                               rtol=1e-6)
    np.testing.assert_allclose(F.nll_loss(scores, label, reduction="none").numpy(), -2.0)
    assert np.isnan(F.cross_entropy(scores, T.tensor([-100])).item())  # the one label ignored: a mean of nothing
    with pytest.raises(ValueError, match="For 1D input, 1D target must have size 1, but got target size: 2"):
        F.cross_entropy(scores, T.tensor([2, 1]))
    assert F.cross_entropy(scores, label).requires_grad is False  # (no hook where nothing needs a gradient)


def test_scores_of_one_prediction_with_a_0d_label_keep_their_backward(T, F):
    scores = T.tensor([0.5, -1.0, 2.0], requires_grad=True)
    F.cross_entropy(scores, T.tensor(2)).backward()
    p = np.exp([0.5, -1.0, 2.0]) / np.exp([0.5, -1.0, 2.0]).sum()
    np.testing.assert_allclose(scores.grad.numpy(), p - [0, 0, 1], rtol=1e-6)
    scores.grad = None
    with pytest.raises(RuntimeError, match=r"size mismatch \(got input: \[3\], target: \[1\]\)"):
        T.autograd.grad(F.cross_entropy(scores, T.tensor([2])), scores)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_scores_that_are_no_tensor_are_a_type_error(T, F, loss):
    with pytest.raises(TypeError, match="must be .*Tensor, not (numpy.ndarray|NoneType)"):
        getattr(F, loss)(np.zeros((2, 3), np.float32), T.tensor([0, 1]))
    with pytest.raises(TypeError, match="NoneType"):
        getattr(F, loss)(None, T.tensor([0, 1]))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_a_learning_rate_given_as_a_string_is_a_type_error(nn, name):
    optim = pytest.importorskip("torch.optim") if nn.__name__ == "torch.nn" else __import__("optim")
    with pytest.raises(TypeError):
        getattr(optim, name)(nn.Linear(2, 2).parameters(), lr="1e-3")
    assert getattr(optim, name)(nn.Linear(2, 2).parameters(), lr=1e-3).param_groups[0]["lr"] == 1e-3


def test_registering_none_before_super_init_is_refused_too(nn):
    class Net(nn.Module):
        def __init__(self):
            self.register_parameter("bias", None)
            super().__init__()

    with pytest.raises(AttributeError, match="cannot assign parameter before Module.__init__\\(\\) call"):
        Net()


@pytest.mark.parametrize("join", ["cat", "stack"])
def test_cat_and_stack_join_tensors_only(T, join):
    for other, kind in ((np.ones(2, np.float32), "numpy.ndarray"), ([1.0, 2.0], "list"), (3.0, "float")):
        with pytest.raises(TypeError, match=f"expected Tensor as element 1 in argument 0, but got {kind}"):
            getattr(T, join)([T.ones(2), other])
    np.testing.assert_array_equal(getattr(T, join)([T.ones(2), T.tensor(np.zeros(2, np.float32))]).numpy(),
                                  [1, 1, 0, 0] if join == "cat" else [[1, 1], [0, 0]])


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_integer_or_bool_scores_are_refused_by_the_class_losses(T, F, dtype):
    scores = T.tensor(np.array([[1, 0, 1]]).astype(dtype))
    for loss in (F.cross_entropy, F.nll_loss):
        with pytest.raises(NotImplementedError, match="not implemented for '(Long|Bool)'"):
            loss(scores, T.tensor([0]))



@pytest.mark.parametrize("name", ["var", "std", "var_mean", "std_mean"])
def test_spreads_of_integers_are_refused_in_pytorchs_words(T, name):
    words = "std and var" if name in ("var", "std") else name
    with pytest.raises(RuntimeError, match=f"^{words} only support floating point and complex dtypes"):
        getattr(T, name)(T.tensor([1, 2, 4]))
    assert getattr(T, name)(T.tensor([1.0, 2.0, 4.0])) is not None


def test_isclose_names_the_two_dtypes_that_differ(T):
    with pytest.raises(RuntimeError, match="^Long did not match Float"):
        T.isclose(T.tensor([1, 2]), T.tensor([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="^Float did not match Double"):
        T.allclose(T.tensor([1.0]), T.tensor([1.0], dtype=T.float64))


@pytest.mark.parametrize("label_shape", [(), (1,)])
def test_multi_margin_loss_of_one_prediction_has_its_labels_shape(T, F, label_shape):
    loss = F.multi_margin_loss(T.tensor([0.2, 0.8, 0.1]), T.tensor(np.ones(label_shape, np.int64)), reduction="none")
    assert tuple(loss.shape) == label_shape
    np.testing.assert_allclose(loss.numpy(), np.full(label_shape, (0.4 + 0.3) / 3), rtol=1e-6)



@pytest.mark.parametrize("value", [(1.0, 2.0), [1.0, 2.0], 3.0])
def test_a_layer_given_a_tuple_list_or_number_is_a_type_error(nn, value):
    with pytest.raises(TypeError, match="must be .*Tensor, not (tuple|list|float)"):
        nn.Linear(2, 2)(value)


def test_a_gru_given_an_lstms_state_tuple_keeps_pytorchs_attribute_error(T, nn):
    with pytest.raises(AttributeError, match="'tuple' object has no attribute"):
        nn.GRU(3, 4)(T.ones(5, 2, 3), (T.zeros(1, 2, 4), T.zeros(1, 2, 4)))


@pytest.mark.parametrize(("name", "value"), [("exp", 1.0), ("sigmoid", [1.0, 2.0]), ("sum", [1.0, 2.0]),
                                             ("relu", (1.0,)), ("argmax", [1, 2])])
def test_a_torch_function_given_a_tuple_list_or_number_is_a_type_error(T, name, value):
    with pytest.raises(TypeError, match=f"must be .*Tensor, not {type(value).__name__}"):
        getattr(T, name)(value)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "hardtanh", "dropout"])
def test_an_activation_given_a_tuple_is_a_type_error(F, name):
    with pytest.raises(TypeError, match="must be .*Tensor, not tuple"):
        getattr(F, name)((np.ones(2, np.float32),))
