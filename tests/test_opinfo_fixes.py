"""Disagreements with PyTorch that its OpInfo database (tests/test_opinfo.py) found, each pinned here with
PyTorch's numbers written out, so that they hold without torch installed."""

import warnings

import numpy as np
import pytest

import autograd
import nn.functional as F


def leaf(values):
    return autograd.tensor(np.array(values, dtype=np.float64), requires_grad=True)


def test_cosine_similarity_broadcasts_before_taking_the_norms():
    # x2's size-1 dim -2 stands for two copies of its vector, both in its norm (PyTorch broadcasts first)
    a, b = leaf([[[1.0, 0.0], [0.0, 1.0]]]), leaf([[[1.0, 1.0]], [[2.0, 0.0]]])
    y = F.cosine_similarity(a, b, dim=-2)
    r = 0.7071067811865475
    np.testing.assert_allclose(y.numpy(), [[r, r], [r, 0.0]], rtol=1e-12)
    y.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [[[0.0, r], [2 * r, 0.0]]], rtol=1e-12, atol=1e-12)


def test_prelu_of_a_0d_input_with_one_slope_is_0d():
    x, w = leaf(-2.0), leaf([0.5])
    y = F.prelu(x, w)
    assert y.shape == ()
    y.backward()
    assert y.item() == -1.0 and x.grad.item() == 0.5 and w.grad.tolist() == [-2.0]


def test_cov_weights():
    x = leaf([[1.0, 2.0, 4.0], [0.0, 3.0, 1.0]])
    fweights, aweights = autograd.tensor([1, 2, 0]), autograd.tensor(np.array([0.5, 1.0, 2.0]))
    np.testing.assert_allclose(autograd.cov(x, fweights=fweights).numpy(), [[1 / 3, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(autograd.cov(x, aweights=aweights).numpy(),
                               [[2.5, -0.5], [-0.5, 1.9285714285714284]], rtol=1e-12)
    np.testing.assert_allclose(autograd.cov(x, fweights=fweights, aweights=aweights, correction=0).numpy(),
                               [[0.16, 0.48], [0.48, 1.44]], rtol=1e-12)
    c = autograd.cov(x, fweights=fweights, aweights=aweights)
    np.testing.assert_allclose(c.numpy(), [[0.25, 0.75], [0.75, 2.25]], rtol=1e-12)
    c.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[-2.0, 2.0, 0.0], [-2.0, 2.0, 0.0]], atol=1e-12)


@pytest.mark.parametrize("bad, message", [
    (dict(fweights=autograd.tensor([1.0, 2.0, 3.0])), "fweights to have integral dtype"),
    (dict(fweights=autograd.tensor([-1, 2, 3])), "fweights cannot be negative"),
    (dict(fweights=autograd.tensor([[1, 2, 3]])), "fweights to have one or fewer dimensions"),
    (dict(fweights=autograd.tensor([1, 2])), "same numel as there are observations in the input but got 2 != 3"),
    (dict(aweights=autograd.tensor([1, 2, 3])), "aweights to have floating point dtype"),
    (dict(aweights=autograd.tensor([-1.0, 2.0, 3.0])), "aweights cannot be negative"),
])
def test_cov_refuses_bad_weights(bad, message):
    with pytest.raises(RuntimeError, match=message):
        autograd.cov(autograd.ones(2, 3), **bad)


def test_cov_of_one_variable_is_0d_and_no_degrees_of_freedom_divide_by_zero():
    assert autograd.cov(autograd.tensor([[1.0, 2.0]])).shape == ()
    assert autograd.corrcoef(autograd.tensor([[1.0, 2.0]])).shape == ()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = autograd.cov(autograd.tensor([[1.0, 2.0, 4.0], [0.0, 3.0, 1.0]]), correction=3)
    assert np.isinf(c.numpy()).all() and "degrees of freedom is <= 0" in str(caught[0].message)


def test_pooling_reads_a_one_element_list_as_an_int_and_an_empty_stride_as_the_kernel():
    x = autograd.arange(16.0).reshape(1, 1, 4, 4)
    y = F.avg_pool2d(x, [2, 2], [], [1])
    assert y.tolist() == [[[[0.0, 0.75, 0.75], [3.0, 7.5, 4.5], [3.0, 6.75, 3.75]]]]
    assert F.max_pool2d(x, [2], [1], [1]).shape == (1, 1, 5, 5)


def test_amax_and_aminmax_of_an_empty_tensor_without_dim_raise_runtime_error():
    x = autograd.ones(5, 0, 5)
    for call in (lambda: autograd.amax(x), lambda: autograd.amin(x), lambda: autograd.aminmax(x)):
        with pytest.raises(RuntimeError):
            call()
    with pytest.raises(IndexError, match="reduction dim 1"):
        autograd.amax(x, 1)
    assert autograd.amax(x, 0).shape == (0, 5)


def test_quantile_over_dim_0_of_a_0d_tensor():
    x = autograd.tensor(3.0)
    assert autograd.quantile(x, 0.5, dim=0).item() == 3.0
    assert autograd.quantile(x, 0.5, dim=0, keepdim=True).shape == ()
    assert autograd.nanquantile(x, autograd.tensor([0.5, 0.2]), dim=-1).shape == (2,)
    with pytest.raises(IndexError):
        autograd.quantile(x, 0.5, dim=1)


def test_orthogonal_polynomials_broadcast_x_against_a_tensor_of_degrees():
    x, n = autograd.tensor([[0.5], [0.25]]), autograd.tensor([2, 3])
    assert autograd.special.legendre_polynomial_p(x, n).tolist() == [[-0.125, -0.4375], [-0.40625, -0.3359375]]
    assert autograd.special.chebyshev_polynomial_t(x, n).tolist() == [[-0.5, -1.0], [-0.875, -0.6875]]


@pytest.mark.parametrize("driver, shapes", [
    ("gels", [(2, 1), (1,), (0,), (0,)]),
    ("gelsy", [(2, 1), (0,), (), (0,)]),
    ("gelsd", [(2, 1), (1,), (), (2,)]),
    ("gelss", [(2, 1), (1,), (), (2,)]),
])
def test_lstsq_outputs_are_those_of_pytorchs_driver(driver, shapes):
    A = leaf([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    result = autograd.linalg.lstsq(A, autograd.tensor(np.array([[1.0], [2.0], [0.0]])), driver=driver)
    assert [tuple(t.shape) for t in result] == shapes
    np.testing.assert_allclose(result.solution.numpy(), [[0.0], [1.0]], atol=1e-12)
    if driver != "gelsy":
        (result.solution.sum() + result.residuals.sum()).backward()
        np.testing.assert_allclose(result.residuals.numpy(), [3.0])
        np.testing.assert_allclose(A.grad.numpy(), [[1 / 3, -2.0], [1 / 3, -2.0], [-1 / 3, 1.0]], atol=1e-12)
    if driver in ("gelsd", "gelss"):
        np.testing.assert_allclose(result.singular_values.numpy(), [3**0.5, 1.0])
    with pytest.raises(RuntimeError, match="driver"):
        autograd.linalg.lstsq(A, A, driver="lu")


def test_p0_norms_count_the_nonzero_elements():
    x = leaf([[1.0, 0.0, 2.0]])
    y = F.normalize(x, p=0.0, dim=-1)
    assert y.tolist() == [[0.5, 0.0, 1.0]]
    y.sum().backward()
    assert x.grad.tolist() == [[0.5, 0.5, 0.5]]
    assert F.pdist(autograd.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0], [0.0, 0.0, 2.0]]), p=0.0).tolist() == [2, 1, 3]


def test_margin_ranking_loss_takes_any_real_target():
    loss = F.margin_ranking_loss(autograd.tensor([1.0, 2.0]), autograd.tensor([0.0, 3.0]),
                                 autograd.tensor([-0.5, -3.0]), margin=1.0, reduction="none")
    assert loss.tolist() == [1.5, 0.0]


ones = autograd.ones


@pytest.mark.parametrize("call, error, message", [
    (lambda: autograd.isclose(ones(2), ones(2), rtol=-0.4), RuntimeError, "rtol must be greater than or equal to zero"),
    (lambda: autograd.isclose(ones(2), ones(2), atol=-0.4), RuntimeError, "atol must be greater than or equal to zero"),
    (lambda: autograd.diff(ones(1, 3), -1), RuntimeError, "order must be non-negative but got -1"),
    (lambda: F.huber_loss(ones(2), ones(2), delta=0), RuntimeError, "non-positive values for delta"),
    (lambda: F.triplet_margin_loss(ones(3, 4), ones(3, 4), ones(3, 4), margin=-1.0), ValueError,
     "margin must be greater than 0"),
    (lambda: autograd.linalg.cross(ones(5, 5, 3), ones(5, 3)), RuntimeError, "same number of dimensions"),
    (lambda: F.gelu(ones(1), approximate="asdf"), RuntimeError, "approximate argument must be either none or tanh"),
    (lambda: F.group_norm(ones(1), 1), RuntimeError, "Expected at least 2 dimensions for input tensor"),
    (lambda: autograd.narrow(autograd.tensor(1.0), 0, 0, 1), RuntimeError, "cannot be applied to a 0-dim tensor"),
    (lambda: autograd.roll(ones(5), []), RuntimeError, "`shifts` required"),
    (lambda: autograd.roll(autograd.tensor(1.0), 0, 0), IndexError, "Dimension specified as 0"),
    (lambda: autograd.rot90(ones(5)), RuntimeError, "expected total dims >= 2"),
    (lambda: autograd.hsplit(ones(5, 5, 5), 0), RuntimeError, "not divisible by the split_size 0"),
    (lambda: autograd.hstack([]), RuntimeError, "hstack expects a non-empty TensorList"),
    (lambda: autograd.dstack([]), RuntimeError, "dstack expects a non-empty TensorList"),
    (lambda: autograd.arange(0, float("inf"), 2), RuntimeError, "unsupported range: 0 -> inf"),
    (lambda: autograd.logspace(0, 3, -1), RuntimeError, "number of steps must be non-negative"),
    (lambda: autograd.logspace(autograd.tensor([0, 1]), autograd.tensor([1, 2]), 3), RuntimeError,
     "only supports 0-dimensional start and end tensors"),
    (lambda: F.layer_norm(ones(1, 2, 3), []), RuntimeError, "normalized_shape to be at least 1-dimensional"),
    (lambda: F.rms_norm(ones(1, 2, 3), []), RuntimeError, "normalized_shape to be at least 1-dimensional"),
    (lambda: F.max_pool1d(ones(0, 10), 1), RuntimeError, "with optional 0 dim batch size"),
    (lambda: F.max_pool1d(autograd.tensor(1.0), 1), RuntimeError, "Expected 2D \\(unbatched\\) or 3D"),
    (lambda: F.adaptive_avg_pool2d(ones(2, 2), [2, 2]), ValueError, "Expected 3D \\(unbatched\\) or 4D"),
    (lambda: F.adaptive_max_pool1d(ones(1, 2, 3), []), RuntimeError, "output_size must be an int or a tuple of 1"),
    (lambda: autograd.amax(ones(5, 0, 5)), RuntimeError, "Specify the reduction dim"),
    (lambda: autograd.aminmax(ones(5, 0, 5)), RuntimeError, "no identity"),
])
def test_pytorchs_error_classes(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_empty_and_zero_sized_arguments_that_pytorch_accepts():
    assert autograd.logspace(autograd.tensor(0), autograd.tensor(2), 3).tolist() == [1.0, 10.0, 100.0]
    assert F.max_pool1d(ones(0, 2, 10), 1).shape == (0, 2, 10)
    assert autograd.roll(autograd.tensor(1.0), 1).item() == 1.0


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.multi_margin_loss(ones(5, 4), autograd.tensor([0, 1, 2, 3, 0]), reduction="abc"), ValueError,
     "abc is not a valid value for reduction"),
    (lambda: F.multi_margin_loss(ones(5, 4), autograd.tensor([0, 1, 2, 3, 0]), weight=ones(5, 4)), ValueError,
     "weight must be one-dimensional"),
    (lambda: F.multilabel_margin_loss(ones(5, 0), ones(5, 4)), RuntimeError, "Expected non-empty vector or matrix"),
    (lambda: F.multilabel_margin_loss(ones(5, 4), ones(5, 4).long(), reduction="abc"), ValueError,
     "abc is not a valid value for reduction"),
    (lambda: autograd.neg(autograd.tensor([True])), RuntimeError, "Negation, the `-` operator, on a bool tensor"),
])
def test_pytorchs_error_classes_in_losses_and_neg(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("pool, size, expected", [
    (lambda x: F.avg_pool3d(x, [2, 3, 1], stride=[2, 1, 2]), (0, 1, 4, 5, 4), (0, 1, 2, 3, 2)),
    (lambda x: F.max_pool3d(x, 2), (0, 1, 4, 5, 4), (0, 1, 2, 2, 2)),
    (lambda x: F.adaptive_avg_pool3d(x, [5, 7, 4]), (0, 8, 8, 8, 8), (0, 8, 5, 7, 4)),
    (lambda x: F.adaptive_max_pool3d(x, [5, 7, 4]), (0, 8, 8, 8, 8), (0, 8, 5, 7, 4)),
    (lambda x: F.adaptive_max_pool2d(x, [5, 7]), (0, 8, 8, 8), (0, 8, 5, 7)),
    (lambda x: F.unfold(x, 2), (0, 1, 5, 5), (0, 4, 16)),
])
def test_pooling_and_unfold_of_an_empty_batch(pool, size, expected):
    x = autograd.ones(*size, dtype=autograd.float64, requires_grad=True)
    y = pool(x)
    assert y.shape == expected
    y.sum().backward()
    assert x.grad.shape == size


def test_triangle_indices_take_device_and_vander_reads_a_number_as_a_vector():
    assert autograd.triu_indices(2, 2, device="cpu").tolist() == [[0, 0, 1], [0, 1, 1]]
    assert autograd.tril_indices(2, 2, dtype=autograd.int32, device="cpu").dtype == autograd.int32
    assert autograd.linalg.vander(autograd.tensor(3.0), N=2).tolist() == [[1.0, 3.0]]


def test_replicate_padding_reads_pytorchs_clamped_positions_even_past_a_crop_of_the_whole_dim():
    x = autograd.arange(16.0).reshape(1, 1, 4, 4)
    assert F.pad(x, [-1, 2, 0, 0], "replicate")[0, 0, 0].tolist() == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert F.pad(x, [-4, 5, 0, 0], "replicate")[0, 0, 1].tolist() == [7.0] * 5
    assert F.pad(x, [0, 0, 5, -4], "replicate")[0, 0, :, 2].tolist() == [2.0] * 5


def test_nextafter_passes_the_gradient_of_input_as_pytorch():
    x, other = leaf([1.0, 2.0]), leaf([[3.0], [0.0]])
    y = autograd.nextafter(x, other)
    assert y[0].tolist() == [np.nextafter(1.0, 3.0), np.nextafter(2.0, 3.0)]
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0] and other.grad.tolist() == [[0.0], [0.0]]
    assert autograd.gradcheck(lambda a: autograd.nextafter(a, autograd.tensor(5.0, dtype=autograd.float64)),
                              (leaf([0.5, -1.5]),))


def test_average_pooling_of_integers_divides_as_integers_towards_zero():
    x = autograd.tensor([[[0, 2, 4, 1, 3, 0, 2, 4, 1]]])
    assert F.avg_pool1d(x, 3).tolist() == [[[2, 1, 2]]] and F.avg_pool1d(-x, 3).tolist() == [[[-2, -1, -2]]]
    y = F.avg_pool2d(x.reshape(1, 1, 3, 3) + 10, 2, 1, 1, True, False, -2)
    assert y.dtype == autograd.int64
    assert y.tolist() == [[[[-5, -11, -13, -7], [-10, -23, -24, -12], [-11, -25, -24, -10], [-6, -13, -12, -5]]]]
    cube = autograd.arange(-13, 14).reshape(1, 1, 3, 3, 3)
    assert F.avg_pool3d(cube, 2).tolist() == [[[[[-6]]]]]  # (the sum -52 over 8: -6.5, towards zero)
    with pytest.raises(NotImplementedError, match="Bool"):
        F.avg_pool1d(autograd.tensor([[[True, False, True]]]), 3)


def test_linspace_is_pytorchs_two_sided_formula_and_casts_integers_as_pytorch():
    assert autograd.linspace(-2.0, -3, 5, dtype=autograd.int64).tolist() == [-2, -2, -2, -2, -3]
    assert autograd.linspace(-1.3, 7.7, 4, dtype=autograd.int64).tolist() == [-1, 1, 4, 7]
    assert autograd.linspace(0, 1, 5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_cov_of_integers_is_in_the_default_dtype():
    assert autograd.cov(autograd.tensor([[1, 2, 4], [0, 3, 1]])).dtype == autograd.float32
    assert autograd.corrcoef(autograd.tensor([1, 2])).dtype == autograd.float32


def test_integer_addmm_truncates_float_scales_and_addr_refuses_them():
    a = autograd.tensor([[1, 2], [3, 4]])
    assert autograd.addmm(a, a, a, beta=0.5, alpha=1.7).tolist() == [[7, 10], [15, 22]]
    assert autograd.addmv(autograd.tensor([1, 2]), a, autograd.tensor([1, 1]), beta=0.2, alpha=0.6).tolist() == [0, 0]
    with pytest.raises(RuntimeError, match="argument beta must not be a floating point number"):
        autograd.addr(a, autograd.tensor([1, 2]), autograd.tensor([3, 4]), beta=0.5)


def test_boolean_addr_is_logic_and_sum_to_size_of_nothing_sums_everything():
    i = autograd.tensor([[True, False], [False, False]])
    a, b = autograd.tensor([True, False]), autograd.tensor([True, True])
    assert autograd.addr(i, a, b, beta=3, alpha=2).tolist() == [[True, True], [False, False]]
    assert autograd.addr(i, a, b, beta=1, alpha=0).tolist() == [[True, False], [False, False]]
    assert autograd.ones((), dtype=autograd.bool).sum_to_size([]).dtype == autograd.int64
    assert autograd.ones(2, 3).sum_to_size([]).item() == 6.0


def test_nextafter_has_no_gradient_where_input_equals_other():
    x = leaf([1.0, 2.0])
    autograd.nextafter(x, autograd.tensor([1.0, 3.0], dtype=autograd.float64)).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0]


# -- found by test_opinfo in the indexing, shape and elementwise ops --------------------------------

def test_cat_skips_a_legacy_empty_vector():
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    y = autograd.cat([autograd.tensor([]), x])  # (float32 and float64: float64)
    assert y.dtype == autograd.float64 and y.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    y.sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert autograd.cat([autograd.tensor([]), autograd.tensor([])]).shape == (0,)


def test_scatter_refuses_a_src_of_another_dtype():
    for call in (lambda s: autograd.scatter(autograd.zeros(3, dtype=autograd.float64), 0, autograd.tensor([0]), s),
                 lambda s: autograd.scatter_add(autograd.zeros(3, dtype=autograd.float64), 0, autograd.tensor([0]), s)):
        with pytest.raises(RuntimeError, match="Expected self.dtype to be equal to src.dtype"):
            call(autograd.ones(1, dtype=autograd.float32))


def test_take_along_dim_counts_negative_indices_from_the_end():
    x = autograd.arange(6.0).reshape(2, 3)
    assert autograd.take_along_dim(x, autograd.tensor([[-3], [-1]]), 1).tolist() == [[0.0], [5.0]]


def test_masked_scatter_broadcasts_input_and_mask():
    mask = autograd.tensor([[True, False, True], [False, True, False]])
    y = autograd.masked_scatter(autograd.arange(3.0), mask, autograd.arange(10.0, 16.0))
    assert y.tolist() == [[10.0, 1.0, 11.0], [0.0, 12.0, 2.0]]


def test_masked_fill_refuses_a_complex_value_for_a_real_tensor():
    with pytest.raises(RuntimeError, match="value cannot be converted to type"):
        autograd.ones(2).masked_fill(autograd.tensor(True), 1j)


def test_integer_tensor_powers_with_negative_exponents_are_pytorchs():
    base, exponent = autograd.tensor([2, 1, -1, -1, 0, 3, -2]), autograd.tensor([-1, -2, -3, -2, -1, 0, -1])
    assert (base**exponent).tolist() == [0, 1, -1, 1, 0, 1, 0]
    assert (2 ** autograd.tensor([-1, 2])).tolist() == [0, 4]
    with pytest.raises(RuntimeError, match="Integers to negative integer powers are not allowed"):
        autograd.tensor([2]) ** -1


# -- found by running test_opinfo's comparison over PyTorch's reference_inputs ---------------------

def test_a_tensor_bound_clamp_keeps_a_nan_input_nan():
    nan, inf = float("nan"), float("inf")
    x = leaf([nan, nan, 1.0, 1.0, 5.0])
    low, high = autograd.tensor([0.0, -inf, nan, 0.0, 0.0]), autograd.tensor([inf, -inf, 2.0, nan, 2.0])
    assert np.isnan(autograd.clamp_max(x, high).numpy()[[0, 1, 3]]).all()
    assert np.isnan(autograd.clamp_min(x, low).numpy()[[0, 1, 2]]).all()
    y = autograd.clamp(x, low, high)
    assert np.isnan(y.numpy()[:4]).all() and y[4].item() == 2.0
    y[4].backward()
    assert x.grad.tolist()[4] == 0.0


def test_div_of_two_numbers_is_a_0d_tensor():
    assert autograd.div(3.0, 2.0).item() == 1.5 and autograd.div(3.0, 2.0).ndim == 0
    assert autograd.true_divide(3, 2).item() == 1.5
    assert autograd.div(7, 2, rounding_mode="floor").item() == 3


def test_integer_conv3d_and_conv_transpose3d_compute_as_pytorch():
    # PyTorch's 3-d convolutions have integer loops (its unfold and fold alone refuse integers): here they run
    # through unfold's and fold's planes, which must not refuse them either
    x = autograd.arange(2 * 3 * 3 * 3, dtype=autograd.int64).reshape(1, 2, 3, 3, 3)
    w = autograd.ones(1, 2, 2, 2, 2, dtype=autograd.int64)
    y = F.conv3d(x, w)
    assert y.dtype == autograd.int64 and y.shape == (1, 1, 2, 2, 2)
    windows = np.lib.stride_tricks.sliding_window_view(x.numpy()[0], (2, 2, 2), axis=(1, 2, 3))
    np.testing.assert_array_equal(y.numpy()[0, 0], windows.sum(axis=(0, 4, 5, 6)))
    t = F.conv_transpose3d(autograd.ones(1, 1, 2, 2, 2, dtype=autograd.int64), w)
    assert t.dtype == autograd.int64 and t.shape == (1, 2, 3, 3, 3)
    np.testing.assert_array_equal(t.numpy()[0, 0, :, 0, 0], [1, 2, 1])  # (overlaps counted: a corner, an edge)
    with pytest.raises(NotImplementedError, match="im2col_out_cpu"):
        F.unfold(x[0, :, 0].unsqueeze(0), 2)


def test_multi_margin_loss_takes_int64_labels_only():
    x = autograd.randn(5, 4)
    for dtype, name in ((autograd.float32, "Float"), (autograd.int32, "Int"), (autograd.uint8, "Byte")):
        with pytest.raises(RuntimeError, match=f"expected scalar type Long but found {name}"):
            F.multi_margin_loss(x, autograd.tensor([0, 1, 2, 3, 0], dtype=dtype))
    assert F.multi_margin_loss(x, autograd.tensor([0, 1, 2, 3, 0])).dtype == autograd.float32
