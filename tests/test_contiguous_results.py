"""Results PyTorch's kernels write contiguous whatever their input's layout: softmax, log_softmax (so softmin and
Categorical's probabilities), cumsum, cumprod, cummax, masked_fill, layer_norm and logsigmoid of a transpose or
a permutation are row-major, and so are cat, stack and roll unless their inputs are laid out channels-last. So a
view of one shares its memory (a write through ``y.view(-1)`` reaches y: it went to a copy where chainrule's
result kept the transpose's layout) and draws made from one follow PyTorch's
(``Categorical(logits=scores.T).sample()``). Each test runs on chainrule and on PyTorch (the ``T`` fixture)."""

import numpy as np
import pytest

import nn  # noqa: F401  (registers autograd.nn)

OPS = {
    "softmax": lambda T, x: x.softmax(-1),
    "log_softmax": lambda T, x: T.nn.functional.log_softmax(x, dim=0),
    "softmin": lambda T, x: T.nn.functional.softmin(x, dim=1),
    "cumsum": lambda T, x: x.cumsum(0),
    "cumprod": lambda T, x: x.cumprod(-1),
    "cummax": lambda T, x: x.cummax(0).values,
    "masked_fill": lambda T, x: x.masked_fill(x > 0.3, -1.0),
    "layer_norm": lambda T, x: T.nn.functional.layer_norm(x, x.shape[-1:]),
    "logsigmoid": lambda T, x: T.nn.functional.logsigmoid(x),
    "cat": lambda T, x: T.cat([x, x], 0),
    "stack": lambda T, x: T.stack([x[0], x[-1]]),
    "roll": lambda T, x: x.roll(1, 0),
    "batch_norm": lambda T, x: T.nn.functional.batch_norm(x, None, None, training=True),
    "batch_norm_eval": lambda T, x: T.nn.functional.batch_norm(x, T.zeros(x.shape[1], dtype=x.dtype),
                                                              T.ones(x.shape[1], dtype=x.dtype)),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("layout", ["transpose", "permutation", "float16 transpose"])
def test_the_result_of_a_transpose_is_contiguous_and_a_view_of_it_writes_through(T, op, layout):
    base = T.arange(24, dtype=T.float32).reshape(2, 3, 4) / 24
    x = {"transpose": base[0].t(), "permutation": base.permute(2, 0, 1),
         "float16 transpose": base[0].half().t()}[layout]
    y = OPS[op](T, x)
    assert y.is_contiguous()
    flat = y.view(-1)
    flat[0] = 100.0
    assert y.flatten()[0].item() == 100.0


def test_categorical_probabilities_are_the_softmax_of_its_logits(T):
    scores = T.tensor([[0.3, -1.2, 2.0], [0.5, 0.5, -0.1], [1.7, 0.2, 0.9], [-2.0, 0.0, 0.4]])
    categorical = T.distributions.Categorical(logits=scores.t())
    assert T.equal(categorical.probs, categorical.logits.softmax(-1))
    assert categorical.probs.is_contiguous()


def test_categorical_samples_of_transposed_logits_are_the_row_major_draws(T):
    """Categorical samples by multinomial on its probabilities, row-major as PyTorch's softmax writes them: the same
    draws as from the logits laid out row-major."""
    scores = T.tensor([[0.3, -1.2, 2.0, 0.1], [0.5, 0.5, -0.1, 1.0], [1.7, 0.2, 0.9, -0.3]])
    T.manual_seed(0)
    transposed = T.distributions.Categorical(logits=scores.t()).sample((5,))
    T.manual_seed(0)
    row_major = T.distributions.Categorical(logits=scores.t().contiguous()).sample((5,))
    assert T.equal(transposed, row_major)


def test_cat_and_roll_of_channels_last_maps_stay_channels_last(T):
    maps = T.arange(120.0).reshape(2, 3, 4, 5).contiguous(memory_format=T.channels_last)
    assert T.cat([maps, maps], 1).is_contiguous(memory_format=T.channels_last)
    assert T.roll(maps, 1, 2).is_contiguous(memory_format=T.channels_last)
    assert T.cat([maps, maps.contiguous()], 1).is_contiguous()  # (one row-major input: row-major)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_keeps_channels_last_and_instance_norm_is_row_major(T, channels_last):
    """Batch norm writes its output in the input's suggested layout: channels-last maps stay so, any other layout
    (BatchNorm1d of a sequence model's (N, L, C) output transposed to (N, C, L)) becomes row-major; instance norm
    normalises input.contiguous(), row-major whatever the input."""
    F = T.nn.functional
    base = T.arange(120, dtype=T.float32).reshape(2, 3, 4, 5) / 120
    maps = base.contiguous(memory_format=T.channels_last) if channels_last else base.transpose(2, 3)
    sequence = T.arange(24, dtype=T.float32).reshape(2, 4, 3).transpose(1, 2) / 24
    y = F.batch_norm(maps, None, None, training=True)
    assert y.is_contiguous(memory_format=T.channels_last) == channels_last
    assert y.is_contiguous() != channels_last
    for y in (F.batch_norm(sequence, None, None, training=True), F.instance_norm(maps), F.instance_norm(sequence)):
        assert y.is_contiguous()
        y.view(-1)[0] = 100.0
        assert y.flatten()[0].item() == 100.0


def test_one_hot_of_transposed_labels_is_row_major(T):
    """F.one_hot fills a fresh zeros tensor (PyTorch's scatter_): row-major whatever the labels' layout (a batch of
    sequences stored position-major and transposed), so a view of it writes through."""
    labels = T.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 2, 2]]).t()
    y = T.nn.functional.one_hot(labels, 4)
    assert y.is_contiguous() and y.stride() == (12, 4, 1)
    y.view(-1)[1] = 7
    assert y[0, 0, 1].item() == 7


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_by_copied_values_is_laid_out_as_pytorchs(T, mode):
    """reflect and replicate keep a channels-last input's layout (circular copies slices into a fresh row-major
    tensor); any other input gives a row-major result (a conv1d's padding_mode applied to a transposed (N, L, C)
    sequence), so a view of it writes through."""
    F = T.nn.functional
    maps = (T.arange(120, dtype=T.float32).reshape(2, 3, 4, 5) / 120).contiguous(memory_format=T.channels_last)
    y = F.pad(maps, (1, 2, 2, 1), mode=mode)
    assert y.is_contiguous(memory_format=T.channels_last) == (mode != "circular")
    volumes = T.zeros(1, 2, 3, 3, 3).contiguous(memory_format=T.channels_last_3d)
    assert F.pad(volumes, (1,) * 6, mode=mode).is_contiguous(memory_format=T.channels_last_3d) == (mode != "circular")
    sequence = (T.arange(24, dtype=T.float32).reshape(2, 4, 3) / 24).transpose(1, 2)
    for x, amounts in ((sequence, (2, 1)), (maps.transpose(2, 3), (1, 1, 1, 1))):
        y = F.pad(x, amounts, mode=mode)
        assert y.is_contiguous()
        y.view(-1)[0] = 100.0
        assert y.flatten()[0].item() == 100.0


@pytest.mark.parametrize("equation, shapes, strides", [
    ("bik,bjk->bij", ((2, 3, 4), (2, 5, 4)), (15, 5, 1)),  # attention scores: row-major
    ("bhij,bjhd->bihd", ((2, 2, 3, 4), (2, 4, 2, 5)), (30, 5, 15, 1)),  # b, h, i, d in memory
    ("bsic,bsjd->bijcd", ((2, 3, 4, 2), (2, 3, 4, 5)), (160, 40, 5, 20, 1)),  # outer-product mean: b, i, c, j, d
    ("ik,kj->ji", ((3, 2), (2, 4)), (3, 1)),  # the operands swapped: row-major
    ("bi,bj->bij", ((2, 3), (2, 4)), (12, 4, 1)),  # nothing summed: an elementwise product, row-major
])
def test_einsum_of_two_operands_is_laid_out_as_pytorchs(T, equation, shapes, strides):
    """einsum contracts a pair by bmm of the operands laid out [shared, own, summed] and views the product back
    (PyTorch's sumproduct_pair), so 'bik,bjk->bij' is row-major and a view of it writes through (NumPy's einsum
    laid it out b, j, i: a write through ``scores.view(...)`` went to a copy)."""
    operands = [T.arange(float(np.prod(s))).reshape(s) for s in shapes]
    y = T.einsum(equation, *operands)
    assert y.stride() == strides
    np.testing.assert_allclose(y.numpy(), np.einsum(equation, *(x.numpy() for x in operands)))
    if y.is_contiguous():
        y.view(-1)[1] = -1.0
        assert y.flatten()[1].item() == -1.0


REDUCTIONS = {
    "sum": lambda T, x: x.sum(0),
    "mean": lambda T, x: x.mean(1),
    "std": lambda T, x: x.std(0),
    "amax": lambda T, x: x.amax(0),
    "logsumexp": lambda T, x: x.logsumexp(1),
    "prod": lambda T, x: x.prod(0),
    "vector_norm": lambda T, x: T.linalg.vector_norm(x, dim=0),
    "any": lambda T, x: (x > 0.5).any(0),
    "count_nonzero": lambda T, x: T.count_nonzero(x, dim=1),
}


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
def test_a_reduction_of_a_permutation_is_row_major(T, op):
    """PyTorch's reductions allocate their result row-major; NumPy's keep the input's order of axes (the sum over
    the batch of a permuted (N, C, L) map came out L-major), so a write through a view of one went to a copy."""
    x = (T.arange(60, dtype=T.float32).reshape(3, 5, 4) / 60).permute(0, 2, 1)  # (3, 4, 5), L-major in memory
    y = REDUCTIONS[op](T, x)
    assert y.is_contiguous()
    flat = y.view(-1)
    flat[1] = 0
    assert y.flatten()[1].item() == 0


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic", "area", "nearest-exact"])
def test_interpolate_keeps_channels_last_and_is_row_major_otherwise(T, mode):
    """interpolate writes in its input's suggested layout (PyTorch's upsampling kernels): a channels-last map stays
    channels-last (it came back batch- or channels-innermost), a transposed one becomes row-major, and so does a
    (N, C, L) sequence transposed from (N, L, C), so a view of the result writes through."""
    F = T.nn.functional
    maps = (T.arange(120, dtype=T.float32).reshape(2, 3, 4, 5) / 120).contiguous(memory_format=T.channels_last)
    size = (2, 3) if mode == "area" else (7, 9)
    assert F.interpolate(maps, size=size, mode=mode).is_contiguous(memory_format=T.channels_last)
    sequence = (T.arange(24, dtype=T.float32).reshape(2, 4, 3) / 24).transpose(1, 2)
    resized = [F.interpolate(maps.transpose(2, 3), size=size, mode=mode)]
    if mode != "area":  # (PyTorch's 1-d area is a 2-d pool of the unsqueezed sequence, which reads as channels-last)
        one_d = {"bilinear": "linear", "bicubic": "linear"}.get(mode, mode)
        resized.append(F.interpolate(sequence, size=6, mode=one_d))
    for y in resized:
        assert y.is_contiguous()
        y.view(-1)[0] = 100.0
        assert y.flatten()[0].item() == 100.0
