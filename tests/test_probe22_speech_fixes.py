"""Focused tests of what the speech probe (tests/test_programs_probe22_speech_*.py) found in chainrule, each against
PyTorch where installed and against literals always:

- ``ctc_loss`` refuses what PyTorch's kernel refuses (log-probabilities neither float32 nor float64, negative
  lengths, targets of three dimensions), and reads a target naming the blank class as any other label;
- kernels without a loop for a dtype refuse it in PyTorch's words: ``interpolate``'s nearest modes (integers other
  than uint8, bool), ``max_pool1d`` without indices (integers, bool), reflect / replicate padding (bool),
  convolutions (bool), ``unfold`` / ``fold`` (integers), the mse, huber and smooth L1 losses (integers, bool),
  pooling (complex; an adaptive average into one bin, a mean, takes it), ``cross_entropy`` (complex);
- ``einsum``'s dtype follows PyTorch's sums: an index summed out of integers or bools accumulates in int64."""

import math

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F


def _refusal(module, functional, call):
    """The type and message of what ``call(module, functional)`` raises, or None."""
    try:
        call(module, functional)
    except Exception as error:  # noqa: BLE001 (the test compares whatever each library raises)
        return type(error), str(error)
    return None


def _both(call):
    """Our refusal and, where PyTorch is installed, PyTorch's."""
    ours = _refusal(autograd, F, call)
    try:
        import torch
    except ImportError:
        return ours, None
    return ours, _refusal(torch, torch.nn.functional, call)


@pytest.mark.parametrize("dtype", ["float16", "int64", "int32", "complex64"])
def test_ctc_loss_refuses_log_probs_that_are_not_float32_or_float64(dtype):
    def call(torch, functional):
        log_probs = torch.zeros(4, 2, 3).log_softmax(-1).to(getattr(torch, dtype))
        return functional.ctc_loss(log_probs, torch.tensor([[1, 2], [1, 1]]), [4, 4], [2, 2])

    ours, theirs = _both(call)
    assert ours is not None and ours[0] is NotImplementedError
    name = {"float16": "Half", "int64": "Long", "int32": "Int", "complex64": "ComplexFloat"}[dtype]
    assert ours[1] == f"\"ctc_loss_cpu\" not implemented for '{name}'"
    if theirs is not None:
        assert theirs == ours


@pytest.mark.parametrize("which", ["input_lengths", "target_lengths"])
def test_ctc_loss_refuses_negative_lengths(which):
    def call(torch, functional):
        lengths = {"input_lengths": [4, 4], "target_lengths": [2, 2]}
        lengths[which] = [4, -1] if which == "input_lengths" else [2, -1]
        return functional.ctc_loss(torch.zeros(4, 2, 3).log_softmax(-1), torch.tensor([[1, 2], [1, 1]]), **lengths)

    ours, theirs = _both(call)
    assert ours is not None and ours[0] is RuntimeError
    assert ours[1].startswith(f"Expected {which} to have value at least 0, but got value -1")
    if theirs is not None:
        assert theirs[0] is RuntimeError and theirs[1].startswith(ours[1])


def test_ctc_loss_refuses_targets_of_three_dimensions():
    def call(torch, functional):
        return functional.ctc_loss(torch.zeros(4, 2, 3).log_softmax(-1), torch.ones(2, 2, 1, dtype=torch.long),
                                   [4, 4], [2, 2])

    ours, theirs = _both(call)
    assert ours is not None and ours[0] is RuntimeError
    assert ours[1].startswith("Expected 1 to 2 dimensions, but got 3-dimensional tensor for argument #2 'targets'")
    if theirs is not None:
        assert theirs[0] is RuntimeError and theirs[1].startswith(ours[1])


def test_ctc_loss_reads_a_target_naming_the_blank_as_pytorch_does():
    # uniform log-probabilities over 3 classes, 4 frames, target (1, 0) with blank 0: l' = (0, 1, 0, 0, 0), and
    # PyTorch's recursion (a skip s-2 -> s at odd s where l'_s != l'_{s-2}) counts 15 alignments
    log_probs = autograd.zeros(4, 1, 3, dtype=autograd.float64).log_softmax(-1)
    loss = F.ctc_loss(log_probs, autograd.tensor([[1, 0]]), [4], [2], reduction="none")
    np.testing.assert_allclose(loss.numpy(), [4 * math.log(3) - math.log(15)], rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1, 4), (1, 2, 3, 3), (1, 1, 2, 2, 2)])
@pytest.mark.parametrize("dtype", ["int64", "int32", "int8", "bool"])
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_interpolate_nearest_refuses_integers_other_than_uint8(shape, dtype, mode):
    def call(torch, functional):
        return functional.interpolate(torch.ones(*shape, dtype=getattr(torch, dtype)), scale_factor=2, mode=mode)

    ours, theirs = _both(call)
    kernel = "upsample_nearest2d_channels_last" if len(shape) == 4 else "compute_indices_weights_nearest"
    name = {"int64": "Long", "int32": "Int", "int8": "Char", "bool": "Bool"}[dtype]
    assert ours == (NotImplementedError, f"\"{kernel}\" not implemented for '{name}'")
    if theirs is not None:
        assert theirs == ours


@pytest.mark.parametrize("shape", [(1, 1, 4), (1, 2, 3, 3), (1, 1, 2, 2, 2)])
def test_interpolate_nearest_copies_uint8_and_labels_through_float(shape):
    labels = np.arange(int(np.prod(shape))).reshape(shape) % 5
    image = F.interpolate(autograd.tensor(labels.astype(np.uint8)), scale_factor=2, mode="nearest")
    through_float = F.interpolate(autograd.tensor(labels).float(), scale_factor=2, mode="nearest").long()
    expected = labels
    for axis in range(2, len(shape)):
        expected = expected.repeat(2, axis=axis)
    assert image.dtype == autograd.uint8 and through_float.dtype == autograd.int64
    np.testing.assert_array_equal(image.numpy(), expected)
    np.testing.assert_array_equal(through_float.numpy(), expected)


@pytest.mark.parametrize("dtype", ["int64", "uint8", "bool"])
@pytest.mark.parametrize("form", ["functional", "module", "top_level", "unbatched"])
def test_max_pool1d_without_indices_refuses_integers(dtype, form):
    def call(torch, functional):
        x = (torch.arange(12).reshape(1, 2, 6) % 5).to(getattr(torch, dtype))
        if form == "module":
            return (nn if torch is autograd else torch.nn).MaxPool1d(2)(x)
        if form == "top_level":
            return torch.max_pool1d(x, 2)
        return functional.max_pool1d(x[0] if form == "unbatched" else x, 2)

    ours, theirs = _both(call)
    name = {"int64": "Long", "uint8": "Byte", "bool": "Bool"}[dtype]
    assert ours == (NotImplementedError, f"\"max_pool1d_impl\" not implemented for '{name}'")
    if theirs is not None:
        assert theirs == ours


def test_max_pool1d_with_indices_and_max_pool2d_take_integers():
    x = autograd.tensor([[[3, 1, 4, 1, 5, 9, 2, 6]]])
    values, indices = F.max_pool1d(x, 2, return_indices=True)
    np.testing.assert_array_equal(values.numpy(), [[[3, 4, 9, 6]]])
    np.testing.assert_array_equal(indices.numpy(), [[[0, 2, 5, 7]]])
    assert values.dtype == autograd.int64
    np.testing.assert_array_equal(F.max_pool2d(x[None], (1, 2)).numpy(), [[[[3, 4, 9, 6]]]])
    np.testing.assert_array_equal(F.max_pool1d(x.double(), 2).numpy(), [[[3, 4, 9, 6]]])


@pytest.mark.parametrize("mode,kernel", [("reflect", "reflection"), ("replicate", "replication")])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_reflect_and_replicate_padding_refuse_bool(mode, kernel, dims):
    def call(torch, functional):
        x = torch.arange(2 * 3 ** dims).reshape(1, 2, *[3] * dims) > 4
        return functional.pad(x, (1, 1) * dims, mode=mode)

    ours, theirs = _both(call)
    assert ours == (NotImplementedError, f"\"{kernel}_pad{dims}d\" not implemented for 'Bool'")
    if theirs is not None:
        assert theirs == ours


def test_circular_padding_and_integer_reflection_keep_working():
    mask = autograd.tensor([[[True, False, False]]])
    np.testing.assert_array_equal(F.pad(mask, (1, 1), mode="circular").numpy(), [[[False, True, False, False, True]]])
    labels = autograd.tensor([[[1, 2, 3]]])
    np.testing.assert_array_equal(F.pad(labels, (2, 1), mode="reflect").numpy(), [[[3, 2, 1, 2, 3, 2]]])
    np.testing.assert_array_equal(F.pad(labels, (2, 1), mode="replicate").numpy(), [[[1, 1, 1, 2, 3, 3]]])


EINSUM_CASES = [  # (equation, operand shapes, dtypes): PyTorch's dtype follows its pairwise sums and products
    ("bij->b", [(2, 3, 3)], ["bool"]), ("bij->bj", [(2, 3, 3)], ["int32"]), ("ii->", [(3, 3)], ["uint8"]),
    ("d->", [(1,)], ["int32"]), ("ii->i", [(3, 3)], ["int16"]), ("bij->bji", [(2, 3, 3)], ["bool"]),
    ("bij,bij->b", [(2, 3, 3), (2, 3, 3)], ["int32", "int32"]), ("bij,bjk->bk", [(2, 3, 3), (2, 3, 3)], ["int32"] * 2),
    ("bij,bjk->bk", [(2, 3, 3), (2, 3, 3)], ["int64"] * 2), ("bcd,dac->ca", [(1, 2, 2), (2, 1, 2)], ["int32"] * 2),
    ("bc,bd->c", [(3, 3), (3, 1)], ["int32"] * 2), ("ba,dba,adc->bac", [(1, 2), (1, 1, 2), (2, 1, 1)],
                                                     ["int16", "uint8", "int16"]),
    ("ij,jk->ik", [(2, 3), (3, 2)], ["float64", "float64"]),
]


def _einsum(torch, equation, shapes, dtypes):
    operands = [torch.tensor(np.arange(int(np.prod(s))).reshape(s) % 3).to(getattr(torch, d))
                for s, d in zip(shapes, dtypes)]
    try:
        result = torch.einsum(equation, *operands)
    except RuntimeError:
        return "RuntimeError", None
    return str(result.dtype).split(".")[-1], result.numpy().astype(np.float64)


@pytest.mark.parametrize("equation,shapes,dtypes", EINSUM_CASES)
def test_einsum_dtype_follows_pytorchs_sums(equation, shapes, dtypes):
    dtype, values = _einsum(autograd, equation, shapes, dtypes)
    expected = {"bij->b": "int64", "bij->bj": "int64", "ii->": "int64", "d->": "int64", "ii->i": "int16",
                "bij->bji": "bool", "bij,bij->b": "int32", "bcd,dac->ca": "int32", "bc,bd->c": "int32",
                "ba,dba,adc->bac": "int16", "ij,jk->ik": "float64"}.get(equation)
    if equation == "bij,bjk->bk":  # i is summed out of the first alone (int64), then bmm meets an int32 second
        expected = "RuntimeError" if dtypes[0] == "int32" else "int64"
    assert dtype == expected
    if values is not None:
        arrays = [(np.arange(int(np.prod(s))).reshape(s) % 3).astype(d).astype(int) for s, d in zip(shapes, dtypes)]
        np.testing.assert_array_equal(values, np.einsum(equation, *arrays))
    try:
        import torch
    except ImportError:
        return
    theirs = _einsum(torch, equation, shapes, dtypes)
    assert theirs[0] == dtype
    if values is not None:
        np.testing.assert_array_equal(theirs[1], values)


def test_einsum_counts_a_bool_mask():
    mask = autograd.tensor([[[True, True, False], [False, True, False]]])
    counts = autograd.einsum("bij->b", mask)
    assert counts.dtype == autograd.int64 and counts.tolist() == [3]


@pytest.mark.parametrize("op,kernel", [("conv1d", "slow_conv2d_cpu"), ("conv2d", "slow_conv2d_cpu"),
                                       ("conv3d", "slow_conv3d_cpu"),
                                       ("conv_transpose1d", "slow_conv_transpose2d_out_cpu"),
                                       ("conv_transpose3d", "slow_conv_transpose3d_out_cpu")])
def test_convolutions_refuse_bool(op, kernel):
    def call(torch, functional):
        spatial = int(op[-2])
        x = torch.ones(1, 2, *[3] * spatial, dtype=torch.bool)
        weight = torch.ones(*((2, 1) if "transpose" in op else (1, 2)), *[1] * spatial, dtype=torch.bool)
        return getattr(functional, op)(x, weight)

    ours, theirs = _both(call)
    assert ours == (NotImplementedError, f"\"{kernel}\" not implemented for 'Bool'")
    if theirs is not None:
        assert theirs == ours


def test_integer_convolution_still_computes():
    x = autograd.tensor([[[1, 2, 3, 4]]])
    y = F.conv1d(x, autograd.tensor([[[1, -1]]]))
    assert y.dtype == autograd.int64 and y.tolist() == [[[-1, -1, -1]]]


@pytest.mark.parametrize("dtype,name", [("int64", "Long"), ("uint8", "Byte"), ("int32", "Int")])
@pytest.mark.parametrize("op", ["unfold", "fold", "unbatched_unfold"])
def test_unfold_and_fold_refuse_integers(dtype, name, op):
    def call(torch, functional):
        x = torch.ones(1, 2, 3, 3).to(getattr(torch, dtype))
        if op == "fold":
            return functional.fold(torch.ones(1, 8, 4).to(getattr(torch, dtype)), (3, 3), 2)
        return functional.unfold(x[0] if op == "unbatched_unfold" else x, 2)

    ours, theirs = _both(call)
    kernel = "col2im_out_cpu" if op == "fold" else "im2col_out_cpu"
    assert ours == (NotImplementedError, f"\"{kernel}\" not implemented for '{name}'")
    if theirs is not None:
        assert theirs == ours


def test_unfold_and_fold_take_bool_and_floats():
    mask = autograd.tensor([[[[True, False], [False, True]]]])
    columns = F.unfold(mask, 1)
    assert columns.dtype == autograd.bool and columns.tolist() == [[[True, False, False, True]]]
    blocks = F.unfold(autograd.arange(9.0).reshape(1, 1, 3, 3), 2)
    np.testing.assert_array_equal(F.fold(blocks, (3, 3), 2).numpy()[0, 0], [[0, 2, 2], [6, 16, 10], [6, 14, 8]])


@pytest.mark.parametrize("loss,kernel", [("mse_loss", "mse"), ("huber_loss", "huber"), ("smooth_l1_loss", "smooth_l1")])
@pytest.mark.parametrize("dtype,name", [("int64", "Long"), ("bool", "Bool"), ("int32", "Int")])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_squared_difference_losses_refuse_integers_and_bools(loss, kernel, dtype, name, reduction):
    def call(torch, functional):
        values = torch.ones(3).to(getattr(torch, dtype))
        return getattr(functional, loss)(values, values, reduction=reduction)

    ours, theirs = _both(call)
    assert ours == (NotImplementedError, f"\"{kernel}_cpu\" not implemented for '{name}'")
    if theirs is not None:
        assert theirs == ours


def test_squared_difference_losses_promote_integer_targets():
    prediction, labels = autograd.tensor([0.5, 2.0]), autograd.tensor([1, 2])
    assert F.mse_loss(prediction, labels).item() == pytest.approx(0.125)
    assert F.smooth_l1_loss(prediction, labels > 1).item() == pytest.approx((0.5 * 0.25 + 0.5) / 2)


COMPLEX_POOLS = [  # (call, PyTorch's kernel in its refusal, or None where it pools)
    (lambda F, x: F.avg_pool1d(x[0], 2), "avg_pool2d"), (lambda F, x: F.avg_pool2d(x, 2), "avg_pool2d"),
    (lambda F, x: F.avg_pool3d(x[None], 1), "avg_pool3d_out_frame"),
    (lambda F, x: F.adaptive_avg_pool1d(x[0], 2), "adaptive_avg_pool2d"),
    (lambda F, x: F.adaptive_avg_pool2d(x, 2), "adaptive_avg_pool2d"),
    (lambda F, x: F.adaptive_avg_pool3d(x[None], 2), "adaptive_avg_pool3d_cpu"),
    (lambda F, x: F.adaptive_max_pool1d(x[0], 2), "adaptive_max_pool2d"),
    (lambda F, x: F.adaptive_max_pool2d(x, 2), "adaptive_max_pool2d"),
    (lambda F, x: F.adaptive_max_pool3d(x[None], 1), "adaptive_max_pool3d_cpu"),
    (lambda F, x: F.max_pool1d(x[0], 2), "max_pool1d_impl"),
    (lambda F, x: F.max_pool1d(x[0], 2, return_indices=True), "max_pool2d"),
    (lambda F, x: F.max_pool2d(x, 2), "max_pool2d"), (lambda F, x: F.max_pool3d(x[None], 1), "max_pool3d"),
    (lambda F, x: F.adaptive_avg_pool1d(x[0], 1), None), (lambda F, x: F.adaptive_avg_pool2d(x, 1), None),
    (lambda F, x: F.adaptive_avg_pool3d(x[None], 1), None),
]


@pytest.mark.parametrize("case", range(len(COMPLEX_POOLS)))
def test_pooling_refuses_complex_numbers(case):
    pool, kernel = COMPLEX_POOLS[case]

    def call(torch, functional):
        return pool(functional, torch.ones(1, 2, 4, 4, dtype=torch.complex64))

    ours, theirs = _both(call)
    assert ours == (None if kernel is None else (NotImplementedError,
                                                  f"\"{kernel}\" not implemented for 'ComplexFloat'"))
    if theirs is not None:
        assert theirs == ours
    if kernel is None:
        spectrum = autograd.tensor([[[1 + 2j, 3 - 1j]]])
        assert F.adaptive_avg_pool1d(spectrum, 1).tolist() == [[[2 + 0.5j]]]


@pytest.mark.parametrize("loss,dims,dtype,kernel", [
    ("cross_entropy", 2, "complex64", "log_softmax_lastdim_kernel_impl"),
    ("cross_entropy", 3, "complex64", "log_softmax_kernel_impl"),
    ("cross_entropy", 3, "int64", "log_softmax_kernel_impl"),
    ("nll_loss", 2, "complex64", "nll_loss_out_frame"), ("nll_loss", 3, "complex64", "nll_loss2d_forward_out_frame"),
])
def test_classification_losses_refuse_complex_scores(loss, dims, dtype, kernel):
    def call(torch, functional):
        scores = torch.ones(2, 3, *[4] * (dims - 2)).to(getattr(torch, dtype))
        return getattr(functional, loss)(scores, torch.zeros(2, *[4] * (dims - 2), dtype=torch.long))

    ours, theirs = _both(call)
    name = {"complex64": "ComplexFloat", "int64": "Long"}[dtype]
    assert ours == (NotImplementedError, f"\"{kernel}\" not implemented for '{name}'")
    if theirs is not None:
        assert theirs == ours
