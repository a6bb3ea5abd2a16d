"""The kernels made faster in session 34 give the values they gave before: dropout's masks (the same draws of
PyTorch's stream, compared on the uniforms' integers), rand's float64 uniforms (without the long double pass), and
PyTorch's where it is installed."""

import numpy
import pytest

import autograd
import nn.functional as F
from autograd import random
from autograd.mersenne import TorchStream

SHAPES = [(7,), (3, 5, 2), (16, 64, 512)]  # (the last past any size threshold)


def _twin_streams(seed):
    return TorchStream(seed), TorchStream(seed)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("probability", [0.0, 2.0**-53, 0.1, 0.5, 0.9, 1 - 2.0**-53, 1.0, 0.3333333333333333])
def test_bernoulli_is_the_uniform_below_p(shape, probability):
    fast, slow = _twin_streams(1234)
    # the rule it replaced: a float64 uniform k · 2^-53 below p
    units = (slow.words64(int(numpy.prod(shape))) & numpy.uint64(2**53 - 1)).astype(numpy.float64) * 2.0**-53
    expected = (units < probability).reshape(shape)
    drawn = fast.bernoulli(shape, probability)
    assert drawn.dtype == bool and drawn.shape == shape
    numpy.testing.assert_array_equal(drawn, expected)
    assert fast.position() == slow.position()  # (the same words drawn: the stream goes on alike)


def test_bernoulli_at_the_integer_boundary():
    """u < p compared exactly where u equals p: k = p · 2^53 is not below, k - 1 is."""
    stream = TorchStream(0)
    words = stream.words64(4096) & numpy.uint64(2**53 - 1)
    k = int(words[0])
    stream = TorchStream(0)
    probability = k * 2.0**-53  # (exact: k < 2^53)
    drawn = stream.bernoulli((4096,), probability)
    assert not drawn[0]
    numpy.testing.assert_array_equal(drawn, words.astype(numpy.float64) * 2.0**-53 < probability)


@pytest.mark.parametrize("dtype", [numpy.float16, numpy.float32, numpy.float64])
def test_rand_is_the_units_unchanged(dtype):
    fast, slow = _twin_streams(99)
    count = 70000
    units = slow.units(count, dtype)
    expected = (units.astype(numpy.float64) * 1.0 + 0.0).astype(dtype)  # (the fused x · 1 + 0 it skipped)
    drawn = fast.random((count,), dtype=dtype)
    assert drawn.dtype == dtype
    numpy.testing.assert_array_equal(drawn.view(numpy.uint8), expected.view(numpy.uint8))
    assert (drawn >= 0).all() and (drawn <= 1).all()  # (float16 rounds the top uniforms up to 1, as PyTorch)


def _expected_dropout(x, p, seed, keep_like=None):
    """x · (keep / (1 - p)) in x's dtype, keep drawn as u < 1 - p from the seeded stream (row-major)."""
    stream = TorchStream(seed)
    shape = x.shape
    units = (stream.words64(x.size) & numpy.uint64(2**53 - 1)).astype(numpy.float64) * 2.0**-53
    keep = (units < 1 - p).reshape(shape)
    mask = keep.astype(x.dtype) / x.dtype.type(1 - p)
    return x * mask, keep


@pytest.mark.parametrize("dtype", [numpy.float16, numpy.float32, numpy.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.75])
def test_dropout_values_with_nan_inf_and_signed_zero(dtype, p):
    rng = numpy.random.default_rng(5)
    x = rng.standard_normal((16, 64, 512)).astype(dtype)
    x.reshape(-1)[:8] = [numpy.nan, numpy.inf, -numpy.inf, -0.0, 0.0, -1.0, 65504.0 if dtype == numpy.float16 else 1e30,
                         numpy.nan]
    expected, keep = _expected_dropout(x, p, 42)
    autograd.manual_seed(42)
    y = F.dropout(autograd.tensor(x), p)
    assert y.dtype == autograd.tensor(x).dtype
    numpy.testing.assert_array_equal(y.numpy().view(numpy.uint8), expected.view(numpy.uint8))


def test_dropout_backward_is_the_mask():
    x = numpy.random.default_rng(1).standard_normal((64, 300)).astype(numpy.float32)
    expected, keep = _expected_dropout(x, 0.2, 7)
    autograd.manual_seed(7)
    t = autograd.tensor(x, requires_grad=True)
    F.dropout(t, 0.2).sum().backward()
    numpy.testing.assert_array_equal(t.grad.numpy(), keep.astype(numpy.float32) / numpy.float32(0.8))


def test_dropout_of_a_transpose_draws_in_its_memory_order():
    """A transposed input's mask is drawn down its columns (PyTorch's empty_like keeps the layout)."""
    x = numpy.random.default_rng(2).standard_normal((300, 200)).astype(numpy.float32)
    expected_t, _ = _expected_dropout(numpy.ascontiguousarray(x), 0.3, 11)  # draws in x's memory order
    autograd.manual_seed(11)
    y = F.dropout(autograd.tensor(x).t(), 0.3)
    numpy.testing.assert_array_equal(y.numpy(), expected_t.T)


def test_native_dropout_and_bernoulli_of_a_number():
    x = numpy.random.default_rng(3).standard_normal((40, 50))
    expected, keep = _expected_dropout(x, 0.4, 3)
    autograd.manual_seed(3)
    y, mask = autograd.native_dropout(autograd.tensor(x), 0.4, True)
    numpy.testing.assert_array_equal(mask.numpy(), keep)
    numpy.testing.assert_array_equal(y.numpy(), expected)
    stream = TorchStream(8)
    units = (stream.words64(2000) & numpy.uint64(2**53 - 1)).astype(numpy.float64) * 2.0**-53
    autograd.manual_seed(8)
    drawn = autograd.bernoulli(autograd.zeros(2000, dtype=autograd.float64), 0.3)
    numpy.testing.assert_array_equal(drawn.numpy(), (units < 0.3).astype(numpy.float64))
    assert random.generator() is not None


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dropout_and_rand_match_pytorch(dtype):
    torch = pytest.importorskip("torch")
    x = numpy.random.default_rng(4).standard_normal((16, 64, 512)).astype(dtype)
    torch.manual_seed(21)
    autograd.manual_seed(21)
    expected = torch.nn.functional.dropout(torch.tensor(x), 0.1)
    ours = F.dropout(autograd.tensor(x), 0.1)
    numpy.testing.assert_array_equal(ours.numpy(), expected.numpy())
    numpy.testing.assert_array_equal(autograd.rand(1000, dtype=getattr(autograd, dtype)).numpy(),
                                     torch.rand(1000, dtype=getattr(torch, dtype)).numpy())
