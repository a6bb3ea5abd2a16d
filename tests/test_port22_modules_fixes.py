"""Focused tests of the library fixes made while porting PyTorch's test/test_modules.py (tests/test_ported_modules.py).
Each runs on chainrule and, where it is installed, on PyTorch (fixture `T`)."""

import io

import pytest

from tests import ported_nn
from tests.ported import raises, same, values

nn, F = ported_nn.nn, ported_nn.F  # the fixtures


def test_a_lazy_module_drops_its_hook_handles_when_it_becomes_its_plain_class(T, nn):
    module = nn.LazyLinear(2)
    assert hasattr(module, "_initialize_hook") and hasattr(module, "_load_hook")
    x = T.tensor([[1.0, 2.0, 3.0]])
    module(x)
    assert type(module) is nn.Linear
    assert not hasattr(module, "_initialize_hook") and not hasattr(module, "_load_hook")
    # so a checkpoint of the whole module holds no handle: load rebuilds it from the allowed class alone
    buffer = io.BytesIO()
    T.save(module, buffer)
    buffer.seek(0)
    with T.serialization.safe_globals([nn.Linear]):
        loaded = T.load(buffer, weights_only=False)
    same(loaded(x), values(module(x)))
    assert tuple(loaded.weight.shape) == (2, 3)


def test_cross_entropy_refuses_an_integer_target_of_the_inputs_shape_as_pytorch_does(T, F):
    one_hot = T.zeros(4, 3, dtype=T.int64)  # (class probabilities must be floats)
    raises(RuntimeError, "^Expected floating point type for target with class probabilities, got Long",
           F.cross_entropy, T.ones(4, 3), one_hot)
    raises(RuntimeError, "^Expected floating point type for target with class probabilities, got Long",
           F.cross_entropy, T.ones(3), T.zeros(3, dtype=T.int64))  # (one prediction's scores: not "size 1")


def test_cross_entropy_float_class_indices_and_batch_sizes_say_pytorchs_words(T, F):
    raises(RuntimeError, "^expected target dtype to be Long or Byte, but got Double", F.cross_entropy,
           T.ones(2, 3, dtype=T.float64), T.zeros(2, dtype=T.float64))
    raises(ValueError, r"^Expected input batch_size \(4\) to match target batch_size \(5\)\.", F.cross_entropy,
           T.ones(4, 2), T.ones(5, 2) / 2)


def test_a_class_weight_of_another_length_says_pytorchs_words(T, F):
    for loss, scores in ((F.cross_entropy, T.ones(2, 3)), (F.nll_loss, T.ones(2, 3))):
        raises(RuntimeError, r"^weight tensor should be defined either for all 3 classes or no classes but got weight "
               r"tensor of shape: \[2\]", loss, scores, T.tensor([0, 1]), weight=T.ones(2))


def test_multi_margin_loss_needs_one_label_per_row(T, F):
    words = (r"^multi_margin_loss: target tensor should be 1-D with size equal to the number of input samples "
             r"\(batch size\)\. Expected target size \[{}\], but got \[{}\]\. Input has shape \[{}\]\.")
    raises(RuntimeError, words.format(5, 3, "5, 10"), F.multi_margin_loss, T.ones(5, 10), T.tensor([0, 1, 2]))
    raises(RuntimeError, words.format(5, "5, 1", "5, 10"), F.multi_margin_loss, T.ones(5, 10),
           T.zeros(5, 1, dtype=T.int64))
    raises(RuntimeError, words.format(1, 3, "10"), F.multi_margin_loss, T.ones(10), T.tensor([0, 1, 2]))
    same(F.multi_margin_loss(T.tensor([[0.0, 1.0]]), T.tensor([1])), 0.0)


@pytest.mark.parametrize("call, words", [
    (lambda T, F: F.max_pool1d(T.ones(4), 2),
     r"max_pool1d: Expected 2D or 3D \(batch mode\) tensor with optional 0 dim batch size for input, but got:\[4\]"),
    (lambda T, F: F.max_pool2d(T.ones(3, 4), 2), r"non-empty 3D or 4D \(batch mode\) tensor expected for input"),
    (lambda T, F: F.max_pool3d(T.ones(2, 2, 2, 2, 2, 2), 2),
     r"non-empty 4D or 5D \(batch mode\) tensor expected for input"),
    (lambda T, F: F.avg_pool1d(T.ones(1, 1, 1, 4), 2),
     r"Expected 2 to 3 dimensions, but got 4-dimensional tensor for argument #1 'self' \(while checking arguments "
     r"for avg_pool1d\)"),
    (lambda T, F: F.avg_pool2d(T.ones(1, 1, 1, 4, 4), 2),
     r"Expected 3D or 4D \(batch mode\) tensor with optional 0 dim batch size for input, but got:\[1, 1, 1, 4, 4\]"),
    (lambda T, F: F.adaptive_avg_pool2d(T.ones(4, 4), 2), r"adaptive_avg_pool2d\(\): Expected 3D or 4D tensor, but got "
     r"\[4, 4\]"),
    (lambda T, F: F.adaptive_max_pool3d(T.ones(4, 4, 4), 2), r"adaptive_max_pool3d\(\): Expected 4D or 5D tensor, but "
     r"got: \[4, 4, 4\]"),
    (lambda T, F: F.lp_pool2d(T.ones(1, 1, 1, 4, 4), 2, 2), r"Expected 3D or 4D \(batch mode\) tensor"),
])
def test_pooling_an_input_of_another_rank_says_pytorchs_words(T, F, call, words):
    raises(RuntimeError, "^" + words, call, T, F)
