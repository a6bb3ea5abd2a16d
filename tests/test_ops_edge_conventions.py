"""Gradients at the points where PyTorch has a convention of its own (ties, NaNs, crossed bounds, zeros),
found by comparing edge points with PyTorch (tests/test_programs_probe13_edgegrad_*.py holds the programs). Each
test asserts the values on its own; the ``torch`` ones also compare with PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn
from tests.ops_reference import compare
from tests.test_ops import _run, broadcast_pair, leaf, unary

nan = float("nan")


def F(m):
    """nn.functional of the library compare() passes (autograd or torch)."""
    return nn.functional if m is autograd else m.nn.functional

CASES = {
    "ClampByTensors": (broadcast_pair(distinct=True),
                       lambda x, y: autograd.clamp(x, min=y) * 2 + autograd.clamp(x, max=y) + x.clamp(y, y + 0.05)),
    "WithoutNan": (unary(), lambda x: autograd.nansum(x * x, 0) if x.ndim else autograd.nansum(x * x)),
    "Copysign": (broadcast_pair(kinks=(0.0,)), lambda x, y: autograd.copysign(y.exp(), x)),  # (x, the sign, off 0)
    "Fmax": (broadcast_pair(distinct=True), lambda x, y: autograd.fmax(x, y) * 2 + autograd.fmax(y, x).exp()),  # (x, y
    # kept apart: fmax(y, x.exp()) met its kink at y = 1, x = 0, which some unseeded draws reached)
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


# -- clamp with tensor bounds: PyTorch's clamp_backward and clamp_backward_min_max --

X = np.array([1.0, 2.0, 3.0, nan, 0.0, 5.0, -1.0, 2.0])
LOW = np.array([1.0, 0.0, 4.0, 1.0, nan, 6.0, 0.0, 2.0])
HIGH = np.array([1.0, 2.0, 4.0, 3.0, 1.0, 5.0, -2.0, 2.0])


def test_a_clamp_by_tensors_gives_nan_and_meeting_bounds_no_gradient():
    x, low, high = leaf(X), leaf(LOW), leaf(HIGH)
    y = autograd.clamp(x, low, high)
    np.testing.assert_array_equal(y.numpy(), [1, 2, 4, nan, nan, 5, -2, 2])
    y.backward(autograd.tensor(np.arange(1.0, 9.0)))
    # x on both bounds keeps it (1, 8); x below bounds that meet (3) gives it to nobody; NaN to nobody (4, 5);
    # crossed bounds (6, 7: low > high) give it all to high
    np.testing.assert_array_equal(x.grad.numpy(), [1, 2, 0, 0, 0, 0, 0, 8])
    np.testing.assert_array_equal(low.grad.numpy(), [0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(high.grad.numpy(), [0, 0, 0, 0, 0, 6, 7, 0])


def test_a_one_sided_clamp_by_a_tensor_gives_a_nan_input_no_gradient():
    x, low = leaf([nan, 1.0, 0.0]), leaf([0.0, 1.0, nan])
    y = x.clamp_min(low)
    assert np.isnan(y.numpy()[[0, 2]]).all() and y.grad_fn.name() == "ClampMinBackward1"
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 0])
    np.testing.assert_array_equal(low.grad.numpy(), [0, 0, 0])


CLAMP_CASES = {
    "both": lambda m, x, lo, hi: m.clamp(x, lo, hi),
    "min": lambda m, x, lo, hi: m.clamp(x, min=lo),
    "max": lambda m, x, lo, hi: x.clamp(max=hi),
    "clamp_min": lambda m, x, lo, hi: x.clamp_min(lo),
    "clamp_max": lambda m, x, lo, hi: m.clamp_max(x, hi),
    "clip_meeting": lambda m, x, lo, hi: x.clip(lo, lo),
    "broadcast": lambda m, x, lo, hi: m.clamp(x.reshape(2, 4), lo[:4], hi[None, 4:]),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(CLAMP_CASES))
def test_clamp_by_tensors_matches_torch(name):
    compare(CLAMP_CASES[name], X, LOW, HIGH)


# -- maximum / minimum: each input loses only what it lost --

def test_maximum_and_minimum_give_both_inputs_the_gradient_where_either_is_nan():
    for op, y_grad in ((autograd.maximum, [0.5, 0, 3, 4]), (autograd.minimum, [0.5, 2, 0, 4])):
        x, y = leaf([1.0, 2.0, 0.0, nan]), leaf([1.0, 0.0, 2.0, 1.0])
        op(x, y).backward(autograd.tensor([1.0, 2.0, 3.0, 4.0]))
        np.testing.assert_array_equal(y.grad.numpy(), y_grad)
        np.testing.assert_array_equal(x.grad.numpy() + y.grad.numpy(), [1, 2, 3, 8])


@pytest.mark.torch
@pytest.mark.parametrize("op", ["maximum", "minimum", "max", "min"])
def test_maximum_and_minimum_at_ties_and_nans_match_torch(op):
    compare(lambda m, x, y: getattr(m, op)(x, y), np.array([1.0, 2.0, 3.0, nan, 0.0, nan]),
            np.array([1.0, 2.0, 4.0, 1.0, -0.0, nan]))


# -- norms below p = 1 at zero elements, in the distances built on them --

def test_pairwise_distance_and_normalize_below_p_1_give_zero_elements_a_finite_gradient():
    x, y = leaf([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), leaf([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    nn.functional.pairwise_distance(x, y, p=0.5, eps=0.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1, 0, 0], [0, 0, 0]])  # (one nonzero difference: |d|)
    np.testing.assert_allclose(y.grad.numpy(), [[-1, 0, 0], [0, 0, 0]])
    z = leaf([[4.0, 0.0], [0.0, 0.0]])
    nn.functional.normalize(z, p=0.5, dim=1).sum().backward()
    # row 1: x / ‖x‖ with ‖x‖ = |x_0| moves only through x_0, which it cancels; the zero row is x / eps
    np.testing.assert_allclose(z.grad.numpy(), [[0, 0.25], [1e12, 1e12]])


@pytest.mark.torch
@pytest.mark.parametrize("p", [0.5, 0.25, 1.0, 2.0])
def test_distances_at_zero_differences_match_torch(p):
    x, y = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, -1.0]]), np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0],
                                                                                    [3.0, 0.0, -1.0]])
    compare(lambda m, a, b: F(m).pairwise_distance(a, b, p=p, eps=0.0), x, y)
    compare(lambda m, a, b: F(m).normalize(a - b, p=p, dim=1), x, y, rtol=1e-10)
    compare(lambda m, a, b: m.cdist(a, b, p=p), x, y)


def test_cdist_refuses_a_negative_p():
    x = autograd.ones(2, 3)
    for p in (-1.0, -float("inf")):
        with pytest.raises(RuntimeError, match="cdist only supports non-negative p values"):
            autograd.cdist(x, x, p=p)


# -- cosine_embedding_loss's epsilon is PyTorch's float 1e-12 --

def test_cosine_embedding_loss_at_a_zero_vector_takes_epsilon_as_a_float():
    x1, x2 = leaf([[0.0, 0.0, 0.0]]), autograd.tensor([[3.0, 0.0, -1.0]], dtype=autograd.float64)
    nn.functional.cosine_embedding_loss(x1, x2, autograd.tensor([1.0])).backward()
    epsilon = float(np.float32(1e-12))
    np.testing.assert_allclose(x1.grad.numpy(), -x2.numpy() / np.sqrt(epsilon * (10 + epsilon)), rtol=1e-14)


@pytest.mark.torch
def test_cosine_embedding_loss_at_a_zero_vector_matches_torch():
    compare(lambda m, a, b: F(m).cosine_embedding_loss(a, b, m.tensor([1.0, -1.0])),
            np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), np.array([[3.0, 0.0, -1.0], [0.0, 0.0, 0.0]]), rtol=1e-14)


# -- copysign: PyTorch's z / x, and an output that depends on the sign's tensor --

def test_copysign_gives_the_sign_a_zero_gradient_and_an_infinite_input_nan():
    x, y = leaf([float("inf"), 0.0, -0.0, nan, 2.0]), leaf([-1.0, -1.0, 1.0, -1.0, -0.0])
    z = autograd.copysign(x, y)
    np.testing.assert_array_equal(z.numpy(), [-float("inf"), -0.0, 0.0, nan, -2.0])
    assert np.signbit(z.numpy()).tolist() == [True, True, False, True, True]
    z.backward(autograd.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [nan, 0, 0, nan, -5])
    np.testing.assert_array_equal(y.grad.numpy(), [0, 0, 0, 0, 0])
    sign = autograd.copysign(autograd.ones(3), leaf([-2.0, 0.0, 3.0]))
    assert sign.requires_grad and sign.grad_fn.name() == "CopysignBackward0"


@pytest.mark.torch
def test_copysign_matches_torch():
    x, y = np.array([[float("inf"), 0.0, -0.0, nan, 2.0, -3.0]]), np.array([[-1.0], [2.0]])
    compare(lambda m, a, b: m.copysign(a, b), x, y)
    compare(lambda m, a, b: m.copysign(a, -2.0), x, y)
    compare(lambda m, a, b: m.copysign(m.ones(2, 1), b) * 3, x, y)


# -- binary_cross_entropy at p = 0 and 1: logs floored at -100 in the loss, not in the target's gradient --

def test_binary_cross_entropy_at_certain_probabilities():
    p, y = leaf([0.0, 1.0, 0.0, 1.0, 0.5]), leaf([0.0, 1.0, 1.0, 0.0, 0.5])
    loss = nn.functional.binary_cross_entropy(p, y, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0, 0, 100, 100, np.log(2)])
    loss.backward(autograd.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    epsilon = float(np.float32(1e-12))  # PyTorch's float EPSILON
    np.testing.assert_allclose(p.grad.numpy(), [0, 0, -3 / epsilon, 4 / epsilon, 0], rtol=1e-15)
    np.testing.assert_array_equal(y.grad.numpy(), [np.inf, -np.inf, np.inf, -np.inf, 0])  # -logit(p), unfloored


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_binary_cross_entropy_at_certain_probabilities_matches_torch(reduction):
    compare(lambda m, p, y: F(m).binary_cross_entropy(p, y, reduction=reduction),
            np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30, 1 - 1e-8]), np.array([0.0, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]),
            rtol=1e-14)


# -- nansum / nanmean multiply the gradient by the mask of numbers, as PyTorch's nansum_backward --

def test_nanmean_of_an_all_nan_row_has_a_nan_gradient():
    x = leaf([[1.0, nan, 3.0], [nan, nan, nan]])
    mean = x.nanmean(1)
    np.testing.assert_array_equal(mean.numpy(), [2, nan])
    autograd.nan_to_num(mean).sum().backward()  # (the usual guard keeps the value finite, not the gradient)
    np.testing.assert_array_equal(x.grad.numpy(), [[0.5, 0, 0.5], [nan, nan, nan]])
    y = leaf([1.0, nan])
    autograd.nansum(y).backward(autograd.tensor(float("inf")))
    np.testing.assert_array_equal(y.grad.numpy(), [np.inf, nan])


@pytest.mark.torch
def test_nansum_and_nanmean_of_nan_rows_match_torch():
    x = np.array([[1.0, nan, 3.0], [nan, nan, nan], [2.0, 0.0, -1.0]])
    compare(lambda m, a: m.nan_to_num(a.nanmean(1)), x)
    compare(lambda m, a: m.nanmean(a, 0, keepdim=True), x)
    compare(lambda m, a: m.nansum(a, 1) * m.tensor([float("inf"), 1.0, 1.0]), x)


# -- x ** -0.5 is PyTorch's 1 / sqrt(x), in the value and in the derivative of x ** 0.5 --

def test_powers_of_one_half_at_negative_zero_and_infinity():
    x = leaf([0.0, -0.0, -np.inf, np.inf, 4.0])
    np.testing.assert_array_equal((x ** -0.5).numpy(), [np.inf, -np.inf, nan, 0, 0.5])
    (gradient,) = autograd.autograd.grad((x ** 0.5).sum(), x)
    np.testing.assert_array_equal(gradient.numpy(), [np.inf, -np.inf, nan, 0, 0.25])


@pytest.mark.torch
@pytest.mark.parametrize("exponent", [0.5, -0.5, 1.5, -1.5, 2.0, -1.0, 3.0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_powers_at_zeros_and_infinities_match_torch(exponent, dtype):
    x = np.array([0.0, -0.0, -np.inf, np.inf, 4.0, -1.0, 0.3], dtype=dtype)
    compare(lambda m, a: a ** exponent, x, rtol=1e-6 if dtype == "float32" else 1e-12)
    compare(lambda m, a: m.pow(a, exponent), x, rtol=1e-6 if dtype == "float32" else 1e-12)


# -- huber / smooth L1 far out: the unused square does not turn an infinite difference's slope into NaN --

def test_huber_and_smooth_l1_of_an_infinite_difference_have_their_far_slope():
    # huber's slope far out is delta (0.5), smooth L1's 1; both are d / beta (0.25 / 0.5) inside
    for name, far in (("huber_loss", 0.5), ("smooth_l1_loss", 1.0)):
        d = leaf([np.inf, -np.inf, 0.5, 0.25])
        key = "delta" if name == "huber_loss" else "beta"
        getattr(nn.functional, name)(d, autograd.zeros(4, dtype=d.dtype), reduction="sum", **{key: 0.5}).backward()
        np.testing.assert_allclose(d.grad.numpy(), [far, -far, far, 0.25 * far / 0.5])


@pytest.mark.torch
@pytest.mark.parametrize("name", ["huber_loss", "smooth_l1_loss"])
@pytest.mark.parametrize("cutoff", [0.5, 1.0, 2.0])
def test_huber_and_smooth_l1_at_the_cutoff_and_infinity_match_torch(name, cutoff):
    key = "delta" if name == "huber_loss" else "beta"
    d = np.array([np.inf, -np.inf, cutoff, -cutoff, 0.0, 3.0, 0.1])
    compare(lambda m, a, b: getattr(F(m), name)(a, b, reduction="none", **{key: cutoff}), d, np.zeros(7))


# -- clamp by numbers keeps x on a bound: a -0 clamped below at 0 stays -0 --

def test_clamp_keeps_the_sign_of_a_zero_on_its_bound():
    x = leaf([-0.0, 0.0, -1.0])
    y = x.clamp(min=0.0)
    assert np.signbit(y.numpy()).tolist() == [True, False, False]
    y.sqrt().backward(autograd.tensor([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [-np.inf, np.inf, 0])
    assert np.isnan(autograd.tensor([1.0, -2.0]).clamp(min=nan).numpy()).all()


@pytest.mark.torch
def test_clamp_of_signed_zeros_matches_torch():
    compare(lambda m, a: a.clamp(min=0.0).sqrt() + a.clamp(-1.0, 0.0).neg().sqrt(), np.array([-0.0, 0.0, -1.0, 2.0]))


def test_huber_and_smooth_l1_second_derivative_at_a_zero_difference_is_one_over_the_cutoff():
    for name, key, expected in (("huber_loss", "delta", 1.0), ("smooth_l1_loss", "beta", 1 / 0.5)):
        d = leaf([0.0, -0.0, 0.25, 2.0])
        loss = getattr(nn.functional, name)(d, autograd.zeros(4, dtype=d.dtype), reduction="sum", **{key: 0.5})
        (slope,) = autograd.autograd.grad(loss, d, create_graph=True)
        (curvature,) = autograd.autograd.grad(slope.sum(), d)
        np.testing.assert_allclose(curvature.numpy(), [expected, expected, expected, 0])


@pytest.mark.torch
@pytest.mark.parametrize("name", ["huber_loss", "smooth_l1_loss"])
def test_huber_and_smooth_l1_curvature_matches_torch(name):
    def curvature(m, d, w):
        loss = getattr(F(m), name)(d, m.zeros(5, dtype=d.dtype), reduction="mean")
        (slope,) = m.autograd.grad(loss, d, create_graph=True)
        return (slope * w).sum()

    compare(curvature, np.array([0.0, -0.0, 0.5, 1.0, 3.0]), np.array([1.0, -2.0, 0.5, 1.5, 2.0]))


# -- spectra with repeated values: eigvalsh's gradient has no gaps to divide by; matrix norms share ties --

def test_eigvalsh_of_repeated_eigenvalues_has_a_finite_gradient():
    a = leaf(np.eye(3))
    (autograd.linalg.eigvalsh(a) * autograd.tensor([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.diag([1.0, 2.0, 3.0]), atol=1e-15)


def test_matrix_norms_share_the_gradient_between_tied_extremes():
    for ord, expected in ((2, np.eye(3) / 3), (-2, np.eye(3) / 3), ("nuc", np.eye(3))):
        a = leaf(np.eye(3))
        autograd.linalg.matrix_norm(a, ord).backward()
        np.testing.assert_allclose(a.grad.numpy(), expected, atol=1e-15)
    for ord in (1, np.inf, -1, -np.inf):  # both column (row) sums are 3
        a = leaf([[1.0, -2.0], [2.0, 1.0]])
        autograd.linalg.matrix_norm(a, ord).backward()
        np.testing.assert_allclose(a.grad.numpy(), 0.5 * np.sign(a.numpy()))


@pytest.mark.torch
@pytest.mark.parametrize("ord", [2, -2, 1, -1, np.inf, -np.inf, "nuc", "fro"])
def test_matrix_norms_at_ties_match_torch(ord):
    compare(lambda m, a: m.linalg.matrix_norm(a, ord), np.array([[[1.0, -2.0], [2.0, 1.0]], [[3.0, 0.0], [0.0, 3.0]]]))
    compare(lambda m, a: m.linalg.norm(a, ord), np.eye(3))


@pytest.mark.torch
def test_eigvalsh_of_repeated_eigenvalues_matches_torch():
    compare(lambda m, a: m.linalg.eigvalsh(a), np.stack([np.eye(3), np.diag([1.0, 2.0, 2.0])]))


def test_huber_and_smooth_l1_of_a_nan_difference_have_a_nan_gradient():
    for name in ("huber_loss", "smooth_l1_loss"):
        x, y = leaf([nan, 2.0, 0.5]), autograd.tensor([1.0, 0.0, nan], dtype=autograd.float64)
        loss = getattr(nn.functional, name)(x, y, reduction="none")
        loss.backward(autograd.ones(3, dtype=autograd.float64))
        np.testing.assert_array_equal(loss.numpy(), [nan, 1.5, nan])
        np.testing.assert_array_equal(x.grad.numpy(), [nan, 1, nan])  # (l1_loss gives 0 there: sign(NaN) = 0)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["huber_loss", "smooth_l1_loss", "l1_loss", "mse_loss"])
def test_regression_losses_of_nan_differences_match_torch(name):
    compare(lambda m, a, b: getattr(F(m), name)(a, b, reduction="sum"), np.array([nan, 2.0, 0.5, 1.0]),
            np.array([1.0, 0.0, nan, 1.0]))


# -- NaN inputs where PyTorch's kernels compare: elu's branch, the inf-norm's ties, margins, embedding_bag's max --

def test_nan_inputs_take_pytorchs_branches():
    x = leaf([nan, -1.0])
    nn.functional.selu(x).sum().backward()
    assert x.grad.numpy()[0] == pytest.approx(1.0507009873554805)  # the positive slope λ (x <= 0 is false)
    v = leaf([[nan, 1.0, -2.0]])
    v.norm(p=float("inf"), dim=1).sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [[0, 0, 0]])  # no element attains a NaN norm
    s = leaf([[0.25, nan, 1.25, 0.125], [0.5, 0.0, 1.0, 0.25]])
    loss = nn.functional.multi_margin_loss(s, autograd.tensor([2, 2]), reduction="none")
    np.testing.assert_array_equal(loss.numpy(), [0, (0.5 + 0.0 + 0.25) / 4])  # the NaN margin adds 0
    w = leaf([[nan, 1.0], [-1.0, 0.0], [5.0, nan]])
    bags = nn.functional.embedding_bag(autograd.tensor([0, 1, 1, 2, 0]), w, autograd.tensor([0, 2, 4]), mode="max")
    np.testing.assert_array_equal(bags.numpy(), [[nan, 1], [5, 0], [nan, 1]])  # a NaN wins only as a bag's first


@pytest.mark.torch
def test_nan_inputs_match_torch():
    x = np.array([nan, 1.0, -1.0, 0.0, 3.0, -3.0, 7.0, nan])
    # (elu's NaN: PyTorch's scalar kernel, which serves tensors shorter than its vectors, as these three)
    compare(lambda m, a: F(m).selu(a) + F(m).elu(a, 0.5) + F(m).celu(a, 2.0), x[[0, 2, 4]])
    compare(lambda m, a: m.linalg.vector_norm(a.reshape(2, 4), float("inf"), dim=1), x)
    compare(lambda m, a: F(m).multi_margin_loss(a.reshape(2, 4), m.tensor([1, 2]), p=2, margin=0.5), x)
    compare(lambda m, a: F(m).multilabel_margin_loss(a.reshape(2, 4), m.tensor([[0, -1, 0, 0], [1, 2, -1, 0]])), x)
    compare(lambda m, a: F(m).embedding_bag(m.tensor([0, 1, 2, 3, 1, 0]), a.reshape(4, 2), m.tensor([0, 2, 4]),
                                            mode="max"), x)
