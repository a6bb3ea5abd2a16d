"""PyTorch's top-level spellings of functions nn.functional also has: autograd.dropout(input, p,
train) and its kin, the normalisations (batch_norm, instance_norm with every argument required,
layer_norm, group_norm, rms_norm), pixel_shuffle, pixel_unshuffle and channel_shuffle. Their
maths lives in autograd/ops (autograd never imports nn), and nn.functional calls the same code.
Values, gradients, signatures and errors against PyTorch; properties without it."""

import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
import nn
from tests.ops_reference import compare
from tests.test_ops import _run, arrays, leaf

rng = np.random.default_rng(0)
X = rng.standard_normal((4, 6, 3, 2))
W, B = rng.standard_normal(6), rng.standard_normal(6)
SHAPE_WEIGHT = rng.standard_normal((3, 2))



@st.composite
def table_and_indices(draw):
    """([W], indices): a weight table and the rows looked up (repeats included). (The padding row's
    and the frequency-scaled gradients are by design not the derivative: test_embedding_matches_torch.)"""
    rows, width = draw(st.integers(2, 5)), draw(st.integers(1, 3))
    indices = draw(hnp.arrays(np.int64, draw(hnp.array_shapes(max_dims=2, max_side=4)),
                              elements=st.integers(0, rows - 1)))
    return [leaf(draw(arrays((rows, width))))], indices


CASES = {  # (gradchecked by tests/test_ops.py, as every primitive of autograd's)
    "EmbeddingLookup": (table_and_indices(), lambda w, indices: autograd.embedding(w, autograd.tensor(indices))),
}



@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


TOP_LEVEL = ["dropout", "alpha_dropout", "feature_dropout", "feature_alpha_dropout", "batch_norm", "instance_norm",
             "layer_norm", "group_norm", "rms_norm", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
             "native_channel_shuffle", "embedding", "bilinear", "rrelu", "rrelu_", "dropout_", "alpha_dropout_",
             "feature_dropout_", "feature_alpha_dropout_", "binary_cross_entropy_with_logits",
             "hinge_embedding_loss", "kl_div", "margin_ranking_loss", "poisson_nll_loss", "cosine_embedding_loss",
             "triplet_margin_loss"]


def test_autograd_does_not_import_nn():
    import subprocess
    import sys

    code = "import sys, autograd; autograd.layer_norm; autograd.dropout; print('nn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.mark.parametrize("name", ["dropout", "alpha_dropout", "feature_dropout", "feature_alpha_dropout"])
def test_dropouts_take_train_by_position(name):
    function = getattr(autograd, name)
    assert list(inspect.signature(function).parameters) == ["input", "p", "train"]
    x = autograd.tensor(X)
    assert function(x, 0.5, False) is x and function(x, 0.0, True) is x
    with pytest.raises(TypeError):
        function(x, 0.5)  # train has no default, as in PyTorch
    with pytest.raises(RuntimeError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        function(x, 1.5, False)


def test_dropout_statistics():
    autograd.manual_seed(0)
    x = autograd.ones(200, 50, dtype=autograd.float64)
    y = autograd.dropout(x, 0.3, True).numpy()
    assert set(np.unique(y)) <= {0.0, 1 / 0.7} and abs((y == 0).mean() - 0.3) < 0.02
    channels = autograd.feature_dropout(autograd.ones(100, 20, 5), 0.5, True).numpy()
    assert (channels.min(axis=2) == channels.max(axis=2)).all()  # whole channels kept or dropped
    assert autograd.dropout(x, 1.0, True).numpy().max() == 0.0
    with pytest.raises(RuntimeError, match="Feature dropout requires at least 2 dimensions"):
        autograd.feature_dropout(autograd.ones(3), 0.5, True)
    # alpha dropout keeps a standard normal's mean and variance
    z = autograd.alpha_dropout(autograd.tensor(rng.standard_normal(200_000)), 0.2, True).numpy()
    assert abs(z.mean()) < 0.02 and abs(z.var() - 1) < 0.03


def test_dropout_gradient_is_the_mask():
    autograd.manual_seed(1)
    x = autograd.tensor(X, requires_grad=True)
    y = autograd.dropout(x, 0.4, True)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), (y.numpy() != 0) / 0.6)


def test_nn_functional_uses_the_same_code():
    from autograd.ops import dropout, normalization, pixel_shuffle

    assert nn.functional.layer_norm is normalization.layer_norm
    assert nn.functional.batch_norm is normalization.batch_norm
    assert nn.functional.pixel_shuffle is pixel_shuffle.pixel_shuffle
    autograd.manual_seed(2)
    a = nn.functional.dropout(autograd.tensor(X), 0.5, training=True).numpy()
    autograd.manual_seed(2)
    np.testing.assert_array_equal(a, autograd.dropout(autograd.tensor(X), 0.5, True).numpy())
    assert dropout.drop is not None


def test_normalisation_gradients_match_finite_differences():
    x = autograd.tensor(X[:2, :4, :2], requires_grad=True)
    weight, bias = (autograd.tensor(rng.standard_normal(4), requires_grad=True) for _ in range(2))
    assert autograd.gradcheck(lambda x, w, b: autograd.batch_norm(x, w, b, None, None, True, 0.1, 1e-5, False),
                              (x, weight, bias))
    assert autograd.gradcheck(lambda x, w, b: autograd.group_norm(x, 2, w, b), (x, weight, bias))
    assert autograd.gradcheck(lambda x: autograd.layer_norm(x, (2, 2)), (x,))


NORMS = {
    "batch_norm_train": lambda m, x, w, b: m.batch_norm(x, w, b, m.zeros(6, dtype=m.float64),
                                                       m.ones(6, dtype=m.float64), True, 0.1, 1e-5, False),
    "batch_norm_eval": lambda m, x, w, b: m.batch_norm(x, w, b, m.tensor(W) * 0.1, m.tensor(B) ** 2 + 0.5, False,
                                                      0.1, 1e-5, False),
    "instance_norm": lambda m, x, w, b: m.instance_norm(x, w, b, None, None, True, 0.1, 1e-5, False),
    "layer_norm": lambda m, x, w, b: m.layer_norm(x, (3, 2), m.tensor(SHAPE_WEIGHT), None, 1e-5, True),
    "layer_norm_defaults": lambda m, x, w, b: m.layer_norm(x, [2]),
    "group_norm": lambda m, x, w, b: m.group_norm(x, 3, w, b, 1e-5, True),
    "group_norm_defaults": lambda m, x, w, b: m.group_norm(x, 2),
    "rms_norm": lambda m, x, w, b: m.rms_norm(x, (3, 2), m.tensor(SHAPE_WEIGHT)),
    "rms_norm_eps": lambda m, x, w, b: m.rms_norm(x, [2], eps=1e-3),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(NORMS))
def test_normalisations_match_torch(name):
    compare(NORMS[name], X, W, B, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
def test_batch_norm_updates_the_running_statistics_as_torch():
    torch = pytest.importorskip("torch")
    ours = [autograd.zeros(6, dtype=autograd.float64), autograd.ones(6, dtype=autograd.float64)]
    theirs = [torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)]
    autograd.batch_norm(autograd.tensor(X), None, None, *ours, True, 0.3, 1e-5, False)
    torch.batch_norm(torch.tensor(X), None, None, *theirs, True, 0.3, 1e-5, False)
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.numpy(), reference.numpy(), rtol=1e-13)


SHUFFLES = {
    "pixel_shuffle": lambda m, x: m.pixel_shuffle(x.reshape(2, 8, 3, 3), 2),
    "pixel_unshuffle": lambda m, x: m.pixel_unshuffle(x.reshape(2, 2, 6, 6), 3),
    "channel_shuffle": lambda m, x: m.channel_shuffle(x.reshape(4, 6, 6), 3),
    "native_channel_shuffle": lambda m, x: m.native_channel_shuffle(x.reshape(4, 6, 6), 2),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(SHUFFLES))
def test_shuffles_match_torch(name):
    # (PyTorch's native_channel_shuffle has no derivative; ours is channel_shuffle's, which has)
    compare(SHUFFLES[name], X.reshape(-1)[:144], grad=name != "native_channel_shuffle")


@pytest.mark.torch
@pytest.mark.parametrize("name", TOP_LEVEL)
def test_parameter_names_are_torchs(name):
    torch = pytest.importorskip("torch")
    (schema, *_) = [s for s in torch._C._jit_get_schemas_for_operator(f"aten::{name}") if not s.overload_name]
    expected = [argument.name for argument in schema.arguments]
    expected = ["input" if n == "self" else n for n in expected]
    ours = list(inspect.signature(getattr(autograd, name)).parameters)
    assert ours == expected


EMBEDDINGS = {
    "plain": lambda m, w: m.embedding(w, m.tensor([[0, 2, 2], [4, 1, 0]])),
    "padding": lambda m, w: m.embedding(w, m.tensor([0, 2, 2, 4]), 2),
    "negative_padding_is_none": lambda m, w: m.embedding(w, m.tensor([0, 3, 3]), padding_idx=-2),
    "scaled_by_frequency": lambda m, w: m.embedding(w, m.tensor([0, 2, 2, 2, 4]), -1, True),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(EMBEDDINGS))
def test_embedding_matches_torch(name):
    compare(EMBEDDINGS[name], rng.standard_normal((5, 3)))


@pytest.mark.torch
def test_bilinear_matches_torch():
    compare(lambda m, x1, x2, w, b: m.bilinear(x1, x2, w, b), rng.standard_normal((2, 3, 4)),
            rng.standard_normal((2, 3, 5)), rng.standard_normal((6, 4, 5)), rng.standard_normal(6))
    compare(lambda m, x1, x2, w: m.bilinear(x1, x2, w), rng.standard_normal((3, 4)), rng.standard_normal((3, 5)),
            rng.standard_normal((2, 4, 5)))


@pytest.mark.torch
def test_rrelu_in_eval_matches_torch():
    compare(lambda m, x: m.rrelu(x), X)
    compare(lambda m, x: m.rrelu(x, 0.1, 0.3, False), X)
    compare(lambda m, x: m.rrelu_(x * 1.0, 0.2, 0.4), X)


def test_rrelu_in_training_draws_slopes_from_the_generator():
    x = autograd.tensor(-np.ones(10_000))
    y = autograd.rrelu(x, 0.1, 0.3, True, generator=autograd.Generator().manual_seed(0)).numpy()
    assert -0.3 <= y.min() and y.max() <= -0.1 and abs(y.mean() + 0.2) < 0.005
    again = autograd.rrelu(x, 0.1, 0.3, True, generator=autograd.Generator().manual_seed(0)).numpy()
    np.testing.assert_array_equal(y, again)
    z = autograd.tensor([-1.0, 2.0])
    assert autograd.rrelu_(z, training=True) is z and z.numpy()[1] == 2.0


def test_in_place_dropouts_write_into_their_input():
    autograd.manual_seed(3)
    x = autograd.ones(50, 4, dtype=autograd.float64)
    assert autograd.dropout_(x, 0.5, True) is x
    assert set(np.unique(x.numpy())) <= {0.0, 2.0} and (x.numpy() == 0).any()
    y = autograd.tensor(X)
    assert autograd.feature_alpha_dropout_(y, 0.5, False) is y
    np.testing.assert_array_equal(y.numpy(), X)
    leaf = autograd.tensor(X, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        autograd.alpha_dropout_(leaf, 0.5, True)


A, P_, N_ = (rng.standard_normal((5, 4)) for _ in range(3))
SIGNS = np.array([1.0, -1.0, -1.0, 1.0, 1.0])
PROBABILITIES = np.abs(rng.standard_normal((5, 4))) / 4
LOSSES = {
    "bce_with_logits": lambda m, x, y: m.binary_cross_entropy_with_logits(x, m.tensor((A > 0) * 1.0)),
    "bce_with_logits_weights": lambda m, x, y: m.binary_cross_entropy_with_logits(
        x, m.tensor((A > 0) * 1.0), m.tensor(np.abs(P_)), m.tensor(np.abs(N_[0])), 2),
    "bce_with_logits_none": lambda m, x, y: m.binary_cross_entropy_with_logits(x, m.tensor((A > 0) * 1.0),
                                                                              reduction=0),
    "hinge_embedding": lambda m, x, y: m.hinge_embedding_loss(x, m.tensor(np.sign(A))),
    "hinge_embedding_margin_sum": lambda m, x, y: m.hinge_embedding_loss(x, m.tensor(np.sign(A)), 0.5, 2),
    "kl_div": lambda m, x, y: m.kl_div(x, m.tensor(PROBABILITIES)),
    "kl_div_log_target": lambda m, x, y: m.kl_div(x, y, 0, log_target=True),
    "margin_ranking": lambda m, x, y: m.margin_ranking_loss(x[:, 0], y[:, 0], m.tensor(SIGNS), 0.1),
    "poisson_nll": lambda m, x, y: m.poisson_nll_loss(x, m.tensor(np.abs(P_) * 3), True, True, 1e-8, 1),
    "poisson_nll_rates": lambda m, x, y: m.poisson_nll_loss(x.abs(), m.tensor(np.abs(P_)), False, False, 1e-8, 0),
    "cosine_embedding": lambda m, x, y: m.cosine_embedding_loss(x, y, m.tensor(SIGNS), 0.2),
    "triplet_margin": lambda m, x, y: m.triplet_margin_loss(x, y, m.tensor(N_)),
    "triplet_margin_swap": lambda m, x, y: m.triplet_margin_loss(x, y, m.tensor(N_), 0.5, 1.0, 1e-6, True, 2),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_match_torch(name):
    compare(LOSSES[name], A, P_, rtol=1e-11, atol=1e-12)


def test_losses_take_int_reductions():
    x = autograd.tensor(A)
    total = autograd.margin_ranking_loss(x[:, 0], x[:, 1], autograd.tensor(SIGNS), 0.0, 2)
    assert total.item() == nn.functional.margin_ranking_loss(x[:, 0], x[:, 1], autograd.tensor(SIGNS),
                                                             reduction="sum").item()
    with pytest.raises(ValueError, match="3 is not a valid value for reduction"):
        autograd.kl_div(x, x, 3)
