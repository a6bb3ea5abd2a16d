"""PyTorch's top-level spellings of the layer functions: autograd.conv2d and its kin, convolution,
conv_tbc, the pooling functions (max_pool2d without return_indices, max_pool1d_with_indices,
adaptive_max_pool1d returning (values, indices)), constant_pad_nd, ctc_loss (an int reduction),
embedding_bag (weight first, an int mode, four tensors back), grid_sampler (int mode codes),
affine_grid_generator, the recurrent cells and the native_* normalisations and dropout. Their
maths lives in autograd/ops (autograd never imports nn) and nn.functional calls the same code.

Signatures, values, gradients, dtypes and errors against PyTorch (skipped without it); values
without it; finite differences in float64 for the new compositions (the cells, native_group_norm's
differentiable statistics). The primitives moved down have their cases in tests/test_ops_*.py."""

import inspect
import subprocess
import sys

import numpy as np
import pytest

import autograd
from tests.ops_reference import compare, raises_like
from tests.test_ops import leaf

rng = np.random.default_rng(0)


def normal(*shape):
    return rng.standard_normal(shape)


NAMES = ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_tbc",
         "convolution", "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "avg_pool1d",
         "adaptive_avg_pool1d", "adaptive_max_pool1d", "constant_pad_nd", "ctc_loss", "embedding_bag", "grid_sampler",
         "grid_sampler_2d", "grid_sampler_3d", "affine_grid_generator", "rnn_tanh_cell", "rnn_relu_cell", "lstm_cell",
         "gru_cell", "native_layer_norm", "native_batch_norm", "native_group_norm", "native_dropout"]
# the modules that hold them and load on first use (import autograd stays quick)
LAZY = ["autograd.ops.convolution_layers", "autograd.ops.pooling_layers", "autograd.ops.grid_sampling",
        "autograd.ops.ctc", "autograd.ops.embedding_bags"]


# -- the names, where they live, what loads ------------------------------------------------------------


def _fresh(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_import_loads_none_of_the_layer_modules_and_autograd_never_imports_nn():
    code = (f"import sys, autograd\nprint(*[m in sys.modules for m in {LAZY!r}])\n"
            f"[getattr(autograd, name) for name in {NAMES!r}]\nprint('nn' in sys.modules, *[m in sys.modules for m in "
            f"{LAZY!r}])")
    before, after = _fresh(code)[:len(LAZY)], _fresh(code)[len(LAZY):]
    assert before == ["False"] * len(LAZY)
    assert after == ["False"] + ["True"] * len(LAZY)


def test_every_name_is_there_and_nn_functional_calls_the_same_code():
    import nn.functional as F
    from autograd.ops import convolution_layers, ctc, embedding_bags, grid_sampling, pooling_layers

    def code(function):  # (autograd.<name> wraps the function to refuse a NumPy array as input)
        return getattr(function, "__wrapped__", function)

    for name in NAMES:
        assert callable(getattr(autograd, name)) and name in dir(autograd)
    assert F.conv2d is code(autograd.conv2d) is convolution_layers.conv2d
    assert F.conv_transpose3d is code(autograd.conv_transpose3d) and F.conv_tbc is code(autograd.conv_tbc)
    assert F.avg_pool1d is code(autograd.avg_pool1d) is pooling_layers.avg_pool1d
    assert F.max_pool2d is pooling_layers.max_pool2d and F.ctc_loss is ctc.ctc_loss
    assert F.grid_sample is grid_sampling.grid_sample and F.embedding_bag is embedding_bags.embedding_bag


def _schema_parameters(name):
    """(name, optional) of each argument of PyTorch's operator, as torch.<name> takes it (self is input):
    the overload with the most arguments, an argument optional where any overload gives it a default
    or lacks it."""
    import torch

    schemas = [s for s in torch._C._jit_get_schemas_for_operator(f"aten::{name}")
               if not s.overload_name.endswith("out")]
    longest = max(schemas, key=lambda s: len(s.arguments))
    optional = set()
    for argument in longest.arguments:
        for schema in schemas:
            match = [a for a in schema.arguments if a.name == argument.name]
            if not match or match[0].default_value is not None or match[0].has_default_value():
                optional.add(argument.name)
    return [("input" if a.name == "self" else a.name, a.name in optional) for a in longest.arguments]


@pytest.mark.torch
@pytest.mark.parametrize("name", NAMES)
def test_signature_is_pytorchs(name):
    ours = [(p.name, p.default is not inspect.Parameter.empty)
            for p in inspect.signature(getattr(autograd, name)).parameters.values()]
    assert ours == _schema_parameters(name)


# -- against PyTorch: values, dtypes, gradients ---------------------------------------------------------

X1, W1 = normal(2, 4, 7), normal(3, 4, 3)
X2, W2, B6 = normal(2, 4, 6, 7), normal(6, 2, 3, 2), normal(6)
X3, W3 = normal(1, 2, 4, 5, 4), normal(3, 2, 2, 3, 2)
LOGITS = normal(6, 2, 5)
TARGETS = np.array([[1, 2, 2], [3, 4, 0]])
TABLE, BAG_INDICES = normal(6, 3), np.array([1, 2, 4, 5, 4, 3, 2, 0])
BAG_OFFSETS, LAST_OFFSET = np.array([0, 2, 2, 5]), np.array([0, 2, 2, 5, 8])
IMAGE, GRID = normal(2, 3, 4, 5), rng.uniform(-1.2, 1.2, (2, 3, 4, 2))
VOLUME, VOLUME_GRID = normal(1, 2, 3, 4, 3), rng.uniform(-1.1, 1.1, (1, 2, 2, 3, 3))
CELL_X, CELL_H, CELL_C = normal(3, 4), normal(3, 5), normal(3, 5)


def _cell_weights(gates):
    return normal(gates * 5, 4), normal(gates * 5, 5), normal(gates * 5), normal(gates * 5)


RNN_W, LSTM_W, GRU_W = _cell_weights(1), _cell_weights(4), _cell_weights(3)
NORM_X = normal(3, 4, 2)
RUNNING = normal(4), rng.uniform(0.5, 2, 4)

CASES = {
    "conv1d": (lambda m, x, w: m.conv1d(x, w, None, 2, 1, 1, 1), X1, W1),
    "conv1d_same_positional": (lambda m, x, w: m.conv1d(x, w, None, 1, "same"), X1, W1),
    "conv2d": (lambda m, x, w, b: m.conv2d(x, w, b, (2, 1), (1, 0), (1, 2), 2), X2, W2, B6),
    "conv2d_valid": (lambda m, x, w: m.conv2d(x, w, None, 1, "valid", 1, 2), X2, W2),
    "conv3d": (lambda m, x, w, b: m.conv3d(x, w, b, 1, (1, 0, 1)), X3, W3, B6[:3]),
    "conv_transpose1d": (lambda m, x, w, b: m.conv_transpose1d(x, w, b, 2, 1, 1), normal(2, 4, 5), normal(4, 3, 3),
                         B6[:3]),
    "conv_transpose2d": (lambda m, x, w, b: m.conv_transpose2d(x, w, b, 2, 1, (1, 0), 2, 1), normal(1, 4, 4, 3),
                         normal(4, 2, 3, 3), B6[:4]),
    "conv_transpose3d": (lambda m, x, w: m.conv_transpose3d(x, w, None, (2, 1, 1), 0, (1, 0, 0)),
                         normal(1, 2, 3, 3, 2), normal(2, 3, 2, 2, 2)),
    "conv_tbc": (lambda m, x, w, b: m.conv_tbc(x, w, b, 1), normal(5, 2, 3), normal(3, 3, 4), B6[:4]),
    "convolution_2d": (lambda m, x, w, b: m.convolution(x, w, b, [1, 1], [1, 1], [1, 1], False, [0, 0], 2),
                       X2, W2, B6),
    "convolution_transposed_1d": (lambda m, x, w: m.convolution(x, w, None, [2], [0], [1], True, [1], 1),
                                  normal(2, 4, 5), normal(4, 3, 3)),
    "convolution_3d": (lambda m, x, w: m.convolution(x, w, None, [1, 2, 1], [0, 1, 0], [1, 1, 1], False, [0, 0, 0],
                                                     1), X3, W3),
    "max_pool1d": (lambda m, x: m.max_pool1d(x, 3, 2, 1), X1),
    "max_pool2d": (lambda m, x: m.max_pool2d(x, (3, 2), (), (1, 0), 1, True), X2),
    "max_pool2d_dilated": (lambda m, x: m.max_pool2d(x, 2, 1, 0, 2), X2),
    "max_pool3d": (lambda m, x: m.max_pool3d(x, 2), X3),
    "max_pool1d_with_indices": (lambda m, x: m.max_pool1d_with_indices(x, 3, 2, 1, 1, True), X1),
    "max_pool1d_with_indices_unbatched": (lambda m, x: m.max_pool1d_with_indices(x, 2), X1[0]),
    "avg_pool1d": (lambda m, x: m.avg_pool1d(x, 3, 2, 1, True, False), X1),
    "adaptive_avg_pool1d": (lambda m, x: m.adaptive_avg_pool1d(x, 4), X1),
    "adaptive_max_pool1d": (lambda m, x: m.adaptive_max_pool1d(x, [3]), X1),
    "constant_pad_nd": (lambda m, x: m.constant_pad_nd(x, [1, 2, -1, 0], 0.5), X1),
    "ctc_loss_default": (lambda m, x, t: m.ctc_loss(x.log_softmax(2), t, [6, 5], [3, 2]), LOGITS, TARGETS),
    "ctc_loss_mean": (lambda m, x, t: m.ctc_loss(x.log_softmax(2), t, [6, 5], [3, 2], 0, 1), LOGITS, TARGETS),
    "ctc_loss_none": (lambda m, x, t: m.ctc_loss(x.log_softmax(2), t, [6, 4], [3, 2], 0, 0), LOGITS, TARGETS),
    "ctc_loss_sum_tensors": (lambda m, x, t: m.ctc_loss(x.log_softmax(2), t, m.tensor([6, 6]), m.tensor([2, 2]), 0,
                                                        2, True), LOGITS, TARGETS),
    "embedding_bag_sum": (lambda m, w, i, o: m.embedding_bag(w, i, o), TABLE, BAG_INDICES, BAG_OFFSETS),
    "embedding_bag_sum_weighted": (lambda m, w, i, o, s: m.embedding_bag(w, i, o, False, 0, False, s, False, 2),
                                   TABLE, BAG_INDICES, BAG_OFFSETS, normal(8)),
    "embedding_bag_mean": (lambda m, w, i, o: m.embedding_bag(w, i, o, False, 1, False, None, True),
                           TABLE, BAG_INDICES, LAST_OFFSET),
    "embedding_bag_mean_padding": (lambda m, w, i, o: m.embedding_bag(w, i, o, False, 1, False, None, False, -4),
                                   TABLE, BAG_INDICES, BAG_OFFSETS),
    "embedding_bag_max": (lambda m, w, i, o: m.embedding_bag(w, i, o, False, 2), TABLE, BAG_INDICES, BAG_OFFSETS),
    "embedding_bag_max_padding": (lambda m, w, i, o: m.embedding_bag(w, i, o, False, 2, False, None, True, 2),
                                  TABLE, BAG_INDICES, LAST_OFFSET),
    "grid_sampler_bilinear_zeros": (lambda m, x, g: m.grid_sampler(x, g, 0, 0, True), IMAGE, GRID),
    "grid_sampler_nearest_reflection": (lambda m, x, g: m.grid_sampler(x, g, 1, 2, False), IMAGE, GRID),
    "grid_sampler_2d_bicubic_border": (lambda m, x, g: m.grid_sampler_2d(x, g, 2, 1, False), IMAGE, GRID),
    "grid_sampler_3d": (lambda m, x, g: m.grid_sampler_3d(x, g, 0, 2, True), VOLUME, VOLUME_GRID),
    "affine_grid_generator": (lambda m, t: m.affine_grid_generator(t, [2, 3, 4, 5], False), normal(2, 2, 3)),
    "affine_grid_generator_3d": (lambda m, t: m.affine_grid_generator(t, (1, 1, 2, 3, 4), True), normal(1, 3, 4)),
    "rnn_tanh_cell": (lambda m, x, h, *w: m.rnn_tanh_cell(x, h, *w), CELL_X, CELL_H, *RNN_W),
    "rnn_relu_cell": (lambda m, x, h, wi, wh: m.rnn_relu_cell(x, h, wi, wh), CELL_X, CELL_H, *RNN_W[:2]),
    "lstm_cell": (lambda m, x, h, c, *w: m.lstm_cell(x, (h, c), *w), CELL_X, CELL_H, CELL_C, *LSTM_W),
    "lstm_cell_list_no_bias": (lambda m, x, h, c, wi, wh: m.lstm_cell(x, [h, c], wi, wh), CELL_X, CELL_H, CELL_C,
                               *LSTM_W[:2]),
    "gru_cell": (lambda m, x, h, *w: m.gru_cell(x, h, *w), CELL_X, CELL_H, *GRU_W),
    "gru_cell_input_bias_only": (lambda m, x, h, wi, wh, bi: m.gru_cell(x, h, wi, wh, bi), CELL_X, CELL_H,
                                 *GRU_W[:3]),
    "native_layer_norm": (lambda m, x, w, b: m.native_layer_norm(x, [4, 2], w, b, 1e-5), NORM_X, normal(4, 2),
                          normal(4, 2)),
    "native_layer_norm_plain": (lambda m, x: m.native_layer_norm(x, (2,), None, None, 1e-3), NORM_X),
    "native_batch_norm_train": (lambda m, x, w, b: m.native_batch_norm(x, w, b, None, None, True, 0.1, 1e-5), NORM_X,
                                normal(4), normal(4)),
    "native_batch_norm_eval": (lambda m, x, w: m.native_batch_norm(x, w, None, m.tensor(RUNNING[0]),
                                                                    m.tensor(RUNNING[1]), False, 0.1, 1e-5),
                               NORM_X, normal(4)),
    "native_group_norm": (lambda m, x, w, b: m.native_group_norm(x, w, b, 3, 4, 2, 2, 1e-5), NORM_X, normal(4),
                          normal(4)),
    "native_group_norm_plain": (lambda m, x: m.native_group_norm(x.reshape(3, 4, 1, 2), None, None, 3, 4, 2, 4, 1e-5),
                                NORM_X),
    "native_dropout_eval": (lambda m, x: m.native_dropout(x, 0.5, False), NORM_X),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(CASES))
def test_values_gradients_and_dtypes_match_pytorch(name):
    fn, *arrays = CASES[name]
    compare(fn, *arrays, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["conv2d", "max_pool2d", "native_layer_norm", "rnn_tanh_cell", "constant_pad_nd"])
def test_float32_stays_float32(name):
    import torch

    fn, *arrays = CASES[name]
    arrays = [a.astype(np.float32) for a in arrays]
    ours, theirs = fn(autograd, *map(autograd.tensor, arrays)), fn(torch, *map(torch.tensor, arrays))
    for mine, reference in zip(*(r if isinstance(r, tuple) else (r,) for r in (ours, theirs))):
        assert str(mine.dtype) == str(reference.dtype).replace("torch.", "")
        np.testing.assert_allclose(mine.numpy(), reference.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.torch
def test_native_batch_norm_moves_the_running_statistics_as_pytorch():
    import torch

    results = []
    for m in (autograd, torch):
        mean, var = m.zeros(4, dtype=m.float64), m.ones(4, dtype=m.float64)
        y, *_ = m.native_batch_norm(m.tensor(NORM_X), None, None, mean, var, True, 0.3, 1e-5)
        results.append([y.numpy(), mean.numpy(), var.numpy()])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


ERRORS = {
    "conv2d_channels": (lambda m, x, w: m.conv2d(x, w), X2, normal(3, 3, 2, 2)),
    "conv2d_padding_string": (lambda m, x, w: m.conv2d(x, w, None, 1, "full"), X2, normal(3, 4, 2, 2)),
    "max_pool2d_padding": (lambda m, x: m.max_pool2d(x, 2, 2, 2), X2),
    "constant_pad_nd_odd": (lambda m, x: m.constant_pad_nd(x, [1]), X1),
    "lstm_cell_one_state": (lambda m, x, h, wi, wh: m.lstm_cell(x, (h,), wi, wh), CELL_X, CELL_H, *LSTM_W[:2]),
    "lstm_cell_not_a_tuple": (lambda m, x, h, wi, wh: m.lstm_cell(x, h, wi, wh), CELL_X, CELL_H, *LSTM_W[:2]),
    "rnn_tanh_cell_weight_hh": (lambda m, x, h, wi: m.rnn_tanh_cell(x, h, wi, m.zeros(6, 5, dtype=m.float64)),
                                CELL_X, CELL_H, RNN_W[0]),
    "gru_cell_batch": (lambda m, x, h, wi, wh: m.gru_cell(x, h[:2], wi, wh), CELL_X, CELL_H, *GRU_W[:2]),
    "native_group_norm_groups": (lambda m, x: m.native_group_norm(x, None, None, 3, 4, 2, 3, 1e-5), NORM_X),
    "native_layer_norm_shape": (lambda m, x: m.native_layer_norm(x, [3], None, None, 1e-5), NORM_X),
    "embedding_bag_mode": (lambda m, w, i, o: m.embedding_bag(w, i, o, False, 3), TABLE, BAG_INDICES, BAG_OFFSETS),
    "embedding_bag_weights_not_sum": (lambda m, w, i, o, s: m.embedding_bag(w, i, o, False, 1, False, s), TABLE,
                                      BAG_INDICES, BAG_OFFSETS, normal(8)),
    "grid_sampler_3d_of_images": (lambda m, x, g: m.grid_sampler_3d(x, g, 0, 0, False), IMAGE, GRID),
    "grid_sampler_align_corners": (lambda m, x, g: m.grid_sampler(x, g, 0, 0, None), IMAGE, GRID),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_are_pytorchs(name):
    fn, *arrays = ERRORS[name]
    raises_like(fn, *arrays)


@pytest.mark.torch
def test_error_messages():
    x = autograd.tensor(NORM_X)
    with pytest.raises(RuntimeError, match=r"Given normalized_shape=\[3\], expected input with shape \[\*, 3\]"):
        autograd.native_layer_norm(x, [3], None, None, 1e-5)
    with pytest.raises(RuntimeError, match="lstm_cell expects two hidden states"):
        autograd.lstm_cell(autograd.tensor(CELL_X), (autograd.tensor(CELL_H),), *map(autograd.tensor, LSTM_W[:2]))
    with pytest.raises(RuntimeError, match="`mode` must be sum, mean, or max."):
        autograd.embedding_bag(autograd.tensor(TABLE), autograd.tensor(BAG_INDICES), autograd.tensor(BAG_OFFSETS),
                               False, 3)
    with pytest.raises(RuntimeError, match="expected interpolation_mode to be one of 0 \\(bilinear\\)"):
        autograd.grid_sampler(autograd.tensor(IMAGE), autograd.tensor(GRID), 3, 0, False)


# -- without PyTorch: values ----------------------------------------------------------------------------


def test_conv2d_of_a_known_kernel():
    x = autograd.arange(16.0).reshape(1, 1, 4, 4)
    sums = autograd.conv2d(x, autograd.ones(1, 1, 2, 2))
    assert sums.tolist() == [[[[10.0, 14.0, 18.0], [26.0, 30.0, 34.0], [42.0, 46.0, 50.0]]]]
    same = autograd.conv2d(x, autograd.ones(1, 1, 2, 2), None, 1, "same")  # the odd zero right and below
    assert same.shape == (1, 1, 4, 4) and same[0, 0, 3].tolist() == [25.0, 27.0, 29.0, 15.0]
    strided = autograd.conv2d(x, autograd.ones(1, 1, 2, 2), autograd.tensor([1.0]), 2)
    assert strided.tolist() == [[[[11.0, 19.0], [43.0, 51.0]]]]


def test_conv_transpose_spreads_the_kernel_and_convolution_dispatches():
    delta = autograd.tensor([[[0.0, 1.0, 0.0]]])
    kernel = autograd.tensor([[[1.0, 2.0, 3.0]]])
    assert autograd.conv_transpose1d(delta, kernel).tolist() == [[[0.0, 1.0, 2.0, 3.0, 0.0]]]
    assert autograd.convolution(delta, kernel, None, [1], [0], [1], True, [0], 1).tolist() == \
        [[[0.0, 1.0, 2.0, 3.0, 0.0]]]
    x, w = autograd.tensor(X2), autograd.tensor(W2)
    np.testing.assert_array_equal(autograd.convolution(x, w, None, [2, 1], [1, 0], [1, 1], False, [0, 0], 2).numpy(),
                                  autograd.conv2d(x, w, None, (2, 1), (1, 0), 1, 2).numpy())
    with pytest.raises(RuntimeError, match="expected a weight of 3, 4 or 5 dimensions"):
        autograd.convolution(x, autograd.ones(2, 2), None, [1], [0], [1], False, [0], 1)


def test_conv_tbc_is_conv1d_in_time_batch_channel_layout():
    x, w, b = normal(5, 2, 3), normal(3, 3, 4), normal(4)
    expected = autograd.conv1d(autograd.tensor(x.transpose(1, 2, 0)), autograd.tensor(w.transpose(2, 1, 0)),
                               autograd.tensor(b), padding=1).numpy().transpose(2, 0, 1)
    np.testing.assert_allclose(autograd.conv_tbc(*map(autograd.tensor, (x, w, b)), 1).numpy(), expected, rtol=1e-14)


def test_pooling_values():
    x = autograd.tensor([[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]], dtype=autograd.float64)
    assert autograd.max_pool1d(x, 2).tolist() == [[3.0, 4.0, 9.0]]
    values, indices = autograd.max_pool1d_with_indices(x, 3, 2, 1)
    assert values.tolist() == [[3.0, 4.0, 9.0, 9.0]] and indices.tolist() == [[0, 2, 5, 5]]
    assert indices.dtype == autograd.int64
    assert autograd.avg_pool1d(x, 2).tolist() == [[2.0, 2.5, 7.0]]
    assert autograd.adaptive_avg_pool1d(x, 1).tolist() == [[pytest.approx(25.0 / 7, rel=1e-15)]]
    values, indices = autograd.adaptive_max_pool1d(x, 2)  # bins [0, 4) and [3, 7)
    assert values.tolist() == [[4.0, 9.0]] and indices.tolist() == [[2, 5]]
    assert autograd.max_pool2d(x.reshape(1, 1, 7), (1, 3)).tolist() == [[[4.0, 9.0]]]
    assert autograd.max_pool3d(autograd.arange(8.0).reshape(1, 2, 2, 2), 2).tolist() == [[[[7.0]]]]
    with pytest.raises(TypeError):
        autograd.max_pool2d(x.reshape(1, 1, 7), 2, 2, 0, 1, False, True)  # no return_indices at the top level


def test_ctc_loss_takes_an_integer_reduction():
    import nn.functional as F

    log_probs = autograd.tensor(LOGITS).log_softmax(2)
    targets = autograd.tensor(TARGETS)
    for code, name in ((0, "none"), (1, "mean"), (2, "sum")):
        np.testing.assert_array_equal(autograd.ctc_loss(log_probs, targets, [6, 5], [3, 2], 0, code).numpy(),
                                      F.ctc_loss(log_probs, targets, [6, 5], [3, 2], reduction=name).numpy())
    with pytest.raises(ValueError, match="3 is not a valid value for reduction"):
        autograd.ctc_loss(log_probs, targets, [6, 5], [3, 2], 0, 3)


def test_embedding_bag_returns_the_bags_and_their_bookkeeping():
    table = autograd.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, -30.0]], dtype=autograd.float64)
    indices, offsets = autograd.tensor([0, 1, 2, 2, 1]), autograd.tensor([0, 2, 2])
    output, offset2bag, bag_size, max_indices = autograd.embedding_bag(table, indices, offsets, False, 1)
    np.testing.assert_allclose(output.numpy(), [[1.5, 15.0], [0.0, 0.0], [8.0 / 3, -40.0 / 3]], rtol=1e-15)
    assert offset2bag.tolist() == [0, 0, 2, 2, 2] and bag_size.tolist() == [2, 0, 3]
    assert max_indices.tolist() == [2, 0, 3]
    output, _, bag_size, max_indices = autograd.embedding_bag(table, indices, offsets, False, 2)
    assert output.tolist() == [[2.0, 20.0], [0.0, 0.0], [3.0, 20.0]]
    assert max_indices.tolist() == [[1, 1], [0, 0], [2, 1]]
    output, _, bag_size, max_indices = autograd.embedding_bag(table, indices, offsets)  # sum
    assert output.tolist() == [[3.0, 30.0], [0.0, 0.0], [8.0, -40.0]]
    assert bag_size.tolist() == max_indices.tolist() == [0, 0, 0]
    output, *_ = autograd.embedding_bag(table, indices.reshape(5, 1), offsets)  # 2-D: one row, as PyTorch's
    assert output.tolist() == [[3.0, 30.0], [0.0, 0.0], [8.0, -40.0]]
    with pytest.raises(RuntimeError, match="offsets\\[-1\\] can not be greater than input's length 1"):
        autograd.embedding_bag(table, indices.reshape(1, 5), offsets)  # PyTorch's check reads size(0)
    with pytest.raises(RuntimeError, match="input has to be a 1D or 2D Tensor"):
        autograd.embedding_bag(table, indices.reshape(1, 1, 5), offsets)


def test_grid_sampler_of_the_identity_grid_is_the_input():
    image = autograd.tensor(IMAGE)
    theta = autograd.tensor(np.tile(np.eye(2, 3), (2, 1, 1)))
    for align_corners in (True, False):
        grid = autograd.affine_grid_generator(theta, [2, 3, 4, 5], align_corners)
        for mode in (0, 1, 2):
            np.testing.assert_allclose(autograd.grid_sampler(image, grid, mode, 0, align_corners).numpy(), IMAGE,
                                       atol=1e-12)
    volume = autograd.tensor(VOLUME)
    grid = autograd.affine_grid_generator(autograd.tensor(np.eye(3, 4)[None]), [1, 2, 3, 4, 3], True)
    np.testing.assert_allclose(autograd.grid_sampler_3d(volume, grid, 0, 1, True).numpy(), VOLUME, atol=1e-12)


def test_cells_of_zero_weights():
    x, h, c = autograd.tensor(CELL_X), autograd.tensor(CELL_H), autograd.tensor(CELL_C)
    b = autograd.tensor(np.linspace(-1, 1, 5))

    def zeros(gates, columns):
        return autograd.zeros(gates * 5, columns, dtype=autograd.float64)

    np.testing.assert_allclose(autograd.rnn_tanh_cell(x, h, zeros(1, 4), zeros(1, 5), b, b).numpy(),
                               np.tanh(2 * np.linspace(-1, 1, 5)) * np.ones((3, 1)))
    assert autograd.rnn_relu_cell(x, h, zeros(1, 4), zeros(1, 5), b).numpy().min() == 0.0
    new_h, new_c = autograd.lstm_cell(x, (h, c), zeros(4, 4), zeros(4, 5))  # every gate σ(0) = ½, g = tanh(0) = 0
    np.testing.assert_allclose(new_c.numpy(), CELL_C / 2)
    np.testing.assert_allclose(new_h.numpy(), np.tanh(CELL_C / 2) / 2)
    np.testing.assert_allclose(autograd.gru_cell(x, h, zeros(3, 4), zeros(3, 5)).numpy(), CELL_H / 2)  # n = 0


def test_native_normalisations_return_their_statistics():
    x = autograd.tensor(NORM_X)
    y, mean, rstd = autograd.native_layer_norm(x, [4, 2], None, None, 1e-5)
    np.testing.assert_allclose(mean.numpy(), NORM_X.mean((1, 2), keepdims=True))
    np.testing.assert_allclose(rstd.numpy(), 1 / np.sqrt(NORM_X.var((1, 2), keepdims=True) + 1e-5))
    np.testing.assert_allclose(y.numpy(), (NORM_X - mean.numpy()) * rstd.numpy(), atol=1e-14)
    y, mean, invstd = autograd.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    np.testing.assert_allclose(mean.numpy(), NORM_X.mean((0, 2)))
    np.testing.assert_allclose(invstd.numpy(), 1 / np.sqrt(NORM_X.var((0, 2)) + 1e-5))
    running_mean, running_var = autograd.zeros(4, dtype=autograd.float64), autograd.ones(4, dtype=autograd.float64)
    autograd.native_batch_norm(x, None, None, running_mean, running_var, True, 0.5, 1e-5)
    np.testing.assert_allclose(running_mean.numpy(), NORM_X.mean((0, 2)) / 2)
    np.testing.assert_allclose(running_var.numpy(), 0.5 + NORM_X.var((0, 2), ddof=1) / 2)
    _, empty_mean, empty_invstd = autograd.native_batch_norm(x, None, None, running_mean, running_var, False, 0.1, 1e-5)
    assert empty_mean.shape == empty_invstd.shape == (0,)
    with pytest.raises(RuntimeError, match="running_mean and running_var must be given"):
        autograd.native_batch_norm(x, None, None, None, None, False, 0.1, 1e-5)
    y, mean, rstd = autograd.native_group_norm(x, None, None, 3, 4, 2, 2, 1e-5)
    grouped = NORM_X.reshape(3, 2, 4)
    np.testing.assert_allclose(mean.numpy(), grouped.mean(2))
    np.testing.assert_allclose(rstd.numpy(), 1 / np.sqrt(grouped.var(2) + 1e-5))
    with pytest.raises(RuntimeError, match="expected an input of N=3 samples of C=4 channels of HxW=3"):
        autograd.native_group_norm(x, None, None, 3, 4, 3, 2, 1e-5)


def test_native_dropout_returns_its_mask():
    autograd.manual_seed(0)
    x = autograd.ones(200, 50, dtype=autograd.float64, requires_grad=True)
    y, mask = autograd.native_dropout(x, 0.3, True)
    assert mask.dtype == autograd.bool and not mask.requires_grad
    np.testing.assert_array_equal(y.detach().numpy(), mask.numpy() / 0.7)
    assert abs(mask.numpy().mean() - 0.7) < 0.02
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), mask.numpy() / 0.7)
    y, mask = autograd.native_dropout(x, 0.3, None)  # train None: dropout, as PyTorch's
    assert not mask.numpy().all()
    y, mask = autograd.native_dropout(x, 0.3, False)
    assert y is not x and mask.numpy().all() and (y.detach().numpy() == 1).all()
    y, mask = autograd.native_dropout(x, 1.0, True)
    assert not y.detach().numpy().any() and not mask.numpy().any()
    with pytest.raises(RuntimeError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        autograd.native_dropout(x, 1.5, True)
    with pytest.raises(RuntimeError, match="expected a floating point input"):
        autograd.native_dropout(autograd.ones(3, dtype=autograd.int64), 0.5, True)


# -- the new compositions against finite differences (float64) -------------------------------------------


def _leaves(*arrays):
    return [leaf(a) for a in arrays]


@pytest.mark.parametrize("name, fn, arrays", [
    ("rnn_tanh_cell", lambda x, h, *w: autograd.rnn_tanh_cell(x, h, *w), (CELL_X, CELL_H, *RNN_W)),
    ("rnn_relu_cell", lambda x, h, *w: autograd.rnn_relu_cell(x, h, *w), (CELL_X, CELL_H, *RNN_W)),
    ("lstm_cell", lambda x, h, c, *w: autograd.cat(autograd.lstm_cell(x, (h, c), *w)),
     (CELL_X, CELL_H, CELL_C, *LSTM_W)),
    ("gru_cell", lambda x, h, *w: autograd.gru_cell(x, h, *w), (CELL_X, CELL_H, *GRU_W)),
    ("native_group_norm", lambda x, w, b: autograd.cat([t.reshape(-1) for t in autograd.native_group_norm(
        x, w, b, 3, 4, 2, 2, 1e-5)]), (NORM_X, normal(4), normal(4))),
    ("native_layer_norm", lambda x, w: autograd.native_layer_norm(x, [2], w, None, 1e-5)[0], (NORM_X, normal(2))),
])
def test_gradients_match_finite_differences(name, fn, arrays):
    assert autograd.gradcheck(fn, _leaves(*[a * 0.5 for a in arrays]))


def test_cell_second_derivatives_match_finite_differences():
    x, h, c, *w = _leaves(*(a * 0.5 for a in (CELL_X[:2], CELL_H[:2], CELL_C[:2], *LSTM_W)))
    assert autograd.gradgradcheck(lambda x, h, c, wi: autograd.lstm_cell(x, (h, c), wi, w[1])[1], [x, h, c, w[0]])
