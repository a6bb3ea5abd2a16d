"""Fake quantization (autograd/ops/quantization.py): PyTorch's values to the bit (rounding half to even of
x · (1/s), float32 arithmetic, a float zero point's double), the straight-through gradient masked where x was
clamped, the learnable (LSQ) gradients of scale and zero point, and PyTorch's refusals.

Rounding is flat, so finite differences cannot see the straight-through gradient directly; the cases check
it as the slope of the clamp to the rounding range: fake_quantize(x) + (clamp(x, lo, hi) - fake_quantize(x))
.detach() has that clamp's value and fake quantization's gradient, which must be the clamp's."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from tests.test_ops import _run, unary

SCALE, ZERO_POINT, QMIN, QMAX = 0.25, 1, -6, 5
LOW, HIGH = (QMIN - ZERO_POINT - 0.5) * SCALE, (QMAX - ZERO_POINT + 0.5) * SCALE  # where rounding leaves the range


def _as_clamp(fake_quantized, x, low, high):
    """fake_quantized's gradient on the value of x clamped to [low, high] (see the docstring)."""
    return fake_quantized + (x.clamp(low, high) - fake_quantized).detach()


def _per_tensor(x):
    return _as_clamp(autograd.fake_quantize_per_tensor_affine(x, SCALE, ZERO_POINT, QMIN, QMAX), x, LOW, HIGH)


def _per_channel(x):
    x = x.reshape(-1, 1).expand(-1, 2)  # two channels along dim 1: the second's range twice the first's
    scale = autograd.tensor([SCALE, 2 * SCALE])
    zero_point = autograd.tensor([ZERO_POINT, ZERO_POINT], dtype=autograd.int32)
    y = autograd.fake_quantize_per_channel_affine(x, scale, zero_point, 1, QMIN, QMAX)
    return _as_clamp(y, x, autograd.tensor([LOW, 2 * LOW]).double(), autograd.tensor([HIGH, 2 * HIGH]).double())


def _learnable(x):
    scale, zero_point = autograd.tensor([SCALE]), autograd.tensor([float(ZERO_POINT)])  # constants: only x's slope
    y = autograd._fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, QMIN, QMAX, 1.0)
    return _as_clamp(y, x, LOW, HIGH)


def _learnable_gradient(x):
    """dL/dscale of LSQ as a function of x (FakeQuantizeLearnableGrad's output)."""
    scale = autograd.tensor([SCALE], requires_grad=True)
    y = autograd._fake_quantize_learnable_per_tensor_affine(x, scale, autograd.tensor([1.0]), QMIN, QMAX, 1.0)
    return autograd.grad(y.sum(), scale, create_graph=True)[0]


KINKS = (LOW, HIGH, 2 * LOW, 2 * HIGH)
CASES = {  # tests/test_ops.py checks that every primitive has one
    "FakeQuantizeAffine": (unary(-3.0, 3.0, kinks=KINKS), lambda x: _per_tensor(x) * x.cos() + _per_channel(x).sum()),
    "FakeQuantizeLearnable": (unary(-3.0, 3.0, kinks=KINKS), lambda x: _learnable(x) * x.sin()),
    # (no derivative, as PyTorch's: test_learnable_gradients_have_no_derivative checks that it says so)
    "FakeQuantizeLearnableGrad": (unary(-3.0, 3.0, kinks=KINKS), _learnable_gradient),
}


def test_learnable_gradients_have_no_derivative(T):
    x = T.tensor([0.3, 1.7, -2.0], requires_grad=True)
    scale = T.tensor([0.5], requires_grad=True)
    y = T._fake_quantize_learnable_per_tensor_affine(x, scale, T.tensor([0.0]), -2, 2, 1.0)
    (d_scale,) = T.autograd.grad((y * y).sum(), scale, create_graph=True)
    assert d_scale.requires_grad  # (a gradient penalty on it must fail, not silently drop this part)
    with pytest.raises(RuntimeError, match="derivative for .*_fake_quantize_learnable_per_tensor_affine_backward"):
        d_scale.sum().backward()


def test_non_finite_gradient_stays_where_clamped(T):
    x = T.tensor([0.3, 5.0, -2.0], requires_grad=True)
    T.fake_quantize_per_tensor_affine(x, 0.5, 0, -2, 2).backward(T.tensor([1.0, float("inf"), float("nan")]))
    assert x.grad[0] == 1 and x.grad[1:].isnan().all()  # dL/dy times the mask, as PyTorch's: inf · 0 is NaN


@pytest.mark.parametrize("name", sorted(set(CASES) - {"FakeQuantizeLearnableGrad"}))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors, eps=1e-3)


def _numpy_fake_quantize(x, scale, zero_point, qmin, qmax):
    """PyTorch's kernel in NumPy: x · (1/s) in float32, rounded half to even, clamped, (q - z) · s in float32."""
    levels = np.rint(x * (np.float32(1) / np.float32(scale))) + zero_point
    inside = (levels >= qmin) & (levels <= qmax)
    return (np.clip(levels, qmin, qmax) - zero_point).astype(np.float32) * np.float32(scale), inside


def test_per_tensor_values_ties_and_mask(T):
    x = T.tensor([-1.0, -0.25, 0.125, 0.375, 0.625, 2.0, 10.0], requires_grad=True)  # ties at 0.5, 1.5, 2.5
    y = T.fake_quantize_per_tensor_affine(x, 0.25, 3, 0, 15)
    y.backward(T.arange(1.0, 8.0))
    assert y.tolist() == [-0.75, -0.25, 0.0, 0.5, 0.5, 2.0, 3.0]  # half to even: 0.5 → 0, 1.5 → 2, 2.5 → 2
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0]  # nothing where clamped
    assert y.grad_fn.name() == "FakeQuantizePerTensorAffineCachemaskBackward0"


def test_per_tensor_matches_numpy_and_float64_keeps_float32_grid(T):
    x = np.random.default_rng(0).standard_normal(500).astype(np.float32) * 3
    expected, inside = _numpy_fake_quantize(x, 0.1, 3, -8, 7)
    xt = T.tensor(x, requires_grad=True)
    y = T.fake_quantize_per_tensor_affine(xt, T.tensor(0.1), T.tensor(3, dtype=T.int32), -8, 7)
    y.sum().backward()
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    np.testing.assert_array_equal(xt.grad.numpy(), inside.astype(np.float32))
    double = T.fake_quantize_per_tensor_affine(T.tensor([0.1, -0.9], dtype=T.float64), 0.1, 0, -128, 127)
    step = np.float32(0.1)  # the float32 nearest 0.1, times a whole number in float32
    assert double.dtype == T.float64 and double.tolist() == [float(step), float(np.float32(-9) * step)]


def test_per_channel_integer_and_float_zero_points(T):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((4, 6, 3)) * 2).astype(np.float32)
    scale = np.array([0.1, 0.2, 0.07, 0.3], np.float32)
    zero_point = np.array([0, 1, -2, 3], np.int32)
    wt = T.tensor(w, requires_grad=True)
    y = T.fake_quantize_per_channel_affine(wt, T.tensor(scale), T.tensor(zero_point), 0, -8, 7)
    y.sum().backward()
    expected, inside = _numpy_fake_quantize(w, scale[:, None, None], zero_point[:, None, None], -8, 7)
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    np.testing.assert_array_equal(wt.grad.numpy(), inside.astype(np.float32))
    # a float zero point is added before rounding, and (q - z) · s formed in double
    z = zero_point.astype(np.float32)[:, None, None] + np.float32(0.3)
    y = T.fake_quantize_per_channel_affine(T.tensor(w), T.tensor(scale), T.tensor(z.ravel()), 0, -8, 7)
    s = scale[:, None, None]
    levels = np.clip(np.rint(z + w * (np.float32(1) / s)), -8, 7)
    np.testing.assert_array_equal(y.numpy(), ((levels.astype(np.float64) - z) * s).astype(np.float32))


def test_learnable_per_tensor_gradients(T):
    # forward rounds z = 1.5 half to even (2); backward takes PyTorch's floor(z + 0.5) = 2 and rounds z + x/s
    x = T.tensor([-1.0, -0.25, 0.125, 0.5, 0.375, 2.0, 10.0], requires_grad=True)
    scale = T.tensor([0.2], requires_grad=True)
    zero_point = T.tensor([1.3], requires_grad=True)
    y = T._fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, 0, 15, 0.5)
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), [-0.2, -0.2, 0.2, 0.4, 0.4, 2.0, 2.8], rtol=1e-6)
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # inside: (y_b - x)/s with y_b = (round(z_b + x/s) - z_b)·s; clamped: qmin - z_b = -1 and qmax - z_b = 14
    inside = np.array([-0.25, 0.125, 0.5, 0.375, 2.0])
    levels = np.rint(1 + inside / 0.2)
    expected_scale = (((levels - 1) * 0.2 - inside) / 0.2).sum() - 1 + 14
    np.testing.assert_allclose(scale.grad.numpy(), [0.5 * expected_scale], rtol=1e-5)
    np.testing.assert_allclose(zero_point.grad.numpy(), [0.5 * 2 * -0.2], rtol=1e-6)
    assert y.grad_fn.name() == "FakeQuantizeLearnablePerTensorAffineBackward0"


def test_learnable_per_channel_sums_over_the_other_dims(T):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3, 5)) * 2).astype(np.float32)
    wt = T.tensor(w, requires_grad=True)
    scale = T.tensor([0.2, 0.3, 0.1], requires_grad=True)
    zero_point = T.tensor([1.5, 2.5, -0.7], requires_grad=True)
    g = rng.standard_normal((3, 5)).astype(np.float32)
    T._fake_quantize_learnable_per_channel_affine(wt, scale, zero_point, 0, -4, 4, 0.5).backward(T.tensor(g))
    s, z = scale.detach().numpy()[:, None], np.clip(np.rint(zero_point.detach().numpy()), -4, 4)[:, None]
    levels = np.rint(z + w * (np.float32(1) / s))
    inside = (levels >= -4) & (levels <= 4)
    d_scale = np.where(inside, g * ((np.clip(levels, -4, 4) - z) * s - w) / s, g * np.where(levels < -4, -4 - z,
                                                                                             4 - z)) * 0.5
    np.testing.assert_allclose(scale.grad.numpy(), d_scale.sum(1), rtol=1e-5)
    np.testing.assert_allclose(zero_point.grad.numpy(), np.where(inside, 0, -g * s * 0.5).sum(1), rtol=1e-5)
    np.testing.assert_array_equal(wt.grad.numpy(), g * inside)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda T, x: T.fake_quantize_per_tensor_affine(x, 0.25, 3, 15, 0), RuntimeError, "less than or"),
    (lambda T, x: T.fake_quantize_per_tensor_affine(x, 0.25, 20, 0, 15), RuntimeError, "`zero_point` must be"),
    (lambda T, x: T.fake_quantize_per_channel_affine(x, T.tensor([0.1, 0.2]), T.tensor([0, 1], dtype=T.int32), 0,
                                                     0, 15), RuntimeError, "not consistent"),
    (lambda T, x: T.fake_quantize_per_channel_affine(x, T.tensor([0.1], dtype=T.float64),
                                                     T.tensor([0], dtype=T.int32), 0, 0, 15), RuntimeError,
     "Scale must be Float"),
    (lambda T, x: T.fake_quantize_per_channel_affine(x, T.tensor([0.1]), T.tensor([0]), 0, 0, 15), RuntimeError,
     "Zero-point must be Int32, Float or Half, found Long"),
    (lambda T, x: T.fake_quantize_per_channel_affine(x, T.full((3,), 0.1), T.zeros(3, dtype=T.int32), -1, 0, 15),
     RuntimeError, "`axis` must be between 0 and number of dimensions of input"),
    (lambda T, x: T.fake_quantize_per_channel_affine(x, T.tensor([0.1]), T.tensor([0], dtype=T.int32), 2, 0, 15),
     IndexError, "Dimension out of range"),
])
def test_refusals(T, call, error, message):
    with pytest.raises(error, match=message):
        call(T, T.ones(1, 3))
