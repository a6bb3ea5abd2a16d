"""The library fixes the probe17 interop programs (tests/test_programs_probe17_interop_*.py) led to: arguments that
come out of NumPy (``np.argmax``'s integers, ``np.float64`` means) read as the Python numbers they hold, as PyTorch's
argument parser reads them. Each checked on chainrule and, where installed, on PyTorch (the ``T`` fixture)."""

import numpy as np
import pytest

from .pytorch_programs import OURS, pytorch


def test_where_reads_numpy_scalars_as_python_numbers(T):
    """Two NumPy scalars give the default dtype (float32), not the scalars' float64 or int32."""
    condition = T.tensor([True, False, True])
    chosen = T.where(condition, np.float64(1.5), np.float64(-0.5))
    assert chosen.dtype == T.float32
    np.testing.assert_array_equal(chosen.numpy(), [1.5, -0.5, 1.5])
    assert T.where(condition, np.int32(1), np.int32(0)).dtype == T.int64
    assert T.where(condition, np.float16(1.0), 0.0).dtype == T.float32
    halves = T.tensor([1.0, 2.0, 3.0], dtype=T.float16)
    assert T.where(condition, halves, np.float64(0.0)).dtype == T.float16  # a number keeps the tensor's dtype


def test_kthvalue_takes_a_numpy_integer_k_and_refuses_a_float(T):
    x = T.tensor([[0.5, -1.0, 2.0], [1.0, 3.0, -2.0]])
    values, indices = T.kthvalue(x, np.int64(2), np.int64(0))
    np.testing.assert_array_equal(values.numpy(), [1.0, 3.0, 2.0])
    np.testing.assert_array_equal(indices.numpy(), [1, 1, 0])
    np.testing.assert_array_equal(T.kthvalue(x, T.tensor(2)).values.numpy(), [0.5, 1.0])
    with pytest.raises(TypeError):
        T.kthvalue(x, 2.0)


def test_roll_and_movedim_take_numpy_integers(T):
    x = T.arange(6.0).view(2, 3)
    np.testing.assert_array_equal(x.roll(np.int64(1), np.int64(1)).numpy(), [[2, 0, 1], [5, 3, 4]])
    np.testing.assert_array_equal(x.roll((np.int64(1), 1), (0, np.int32(1))).numpy(), [[5, 3, 4], [2, 0, 1]])
    np.testing.assert_array_equal(x.roll(T.tensor(1), 1).numpy(), [[2, 0, 1], [5, 3, 4]])
    np.testing.assert_array_equal(x.roll(np.int64(-1)).numpy(), [[1, 2, 3], [4, 5, 0]])
    assert tuple(x.movedim(np.int64(0), np.int64(1)).shape) == (3, 2)
    t = T.ones(2, 3, 4, requires_grad=True)
    (t.roll(np.int64(2), np.int64(2)) * T.arange(4.0)).sum().backward()
    np.testing.assert_array_equal(t.grad[0, 0].numpy(), [2, 3, 0, 1])


@pytest.mark.parametrize("library", ["ours", "torch"])
def test_interpolate_takes_a_numpy_size_and_scale_factor(library):
    m = OURS if library == "ours" else pytorch()
    if m is None:
        pytest.skip("PyTorch is not installed")
    x = m.torch.arange(2.0).view(1, 1, 2)
    for kwargs in ({"size": np.int64(4)}, {"scale_factor": np.float32(2)}, {"scale_factor": np.int64(2)}):
        np.testing.assert_array_equal(m.F.interpolate(x, **kwargs).numpy(), [[[0, 0, 1, 1]]])
    up = m.nn.Upsample(scale_factor=np.float32(2), mode="linear")(x)
    np.testing.assert_allclose(up.numpy(), [[[0, 0.25, 0.75, 1]]])


def test_tensor_split_multinomial_and_histogram_take_numpy_integer_counts(T):
    x = T.arange(6.0).view(2, 3)
    pieces = x.tensor_split(np.int32(2), dim=np.int32(1))
    assert [tuple(p.shape) for p in pieces] == [(2, 2), (2, 1)]
    T.manual_seed(0)
    drawn = T.multinomial(T.tensor([0.0, 1.0]), np.int32(3), replacement=True)
    np.testing.assert_array_equal(drawn.numpy(), [1, 1, 1])
    hist = T.histogram(T.tensor([0.0, 1.0, 2.0, 2.5]), bins=np.int64(2))
    np.testing.assert_array_equal(hist.hist.numpy(), [2, 2])
    with pytest.raises(RuntimeError):
        T.multinomial(T.tensor([0.5, 0.5]), np.int64(0))


@pytest.mark.parametrize("library", ["ours", "torch"])
def test_pooling_padding_and_layer_norm_take_numpy_integers(library):
    """A NumPy integer stride once reached ``stride == []``, which NumPy answers with an empty array (a
    ValueError); a NumPy integer padding or normalized_shape was iterated as a sequence."""
    m = OURS if library == "ours" else pytorch()
    if m is None:
        pytest.skip("PyTorch is not installed")
    image = m.torch.arange(16.0).view(1, 1, 4, 4)
    np.testing.assert_array_equal(m.F.max_pool2d(image, np.int32(2), np.int32(2)).numpy(), [[[[5, 7], [13, 15]]]])
    np.testing.assert_array_equal(m.nn.MaxPool2d(np.int64(2))(image).numpy(), [[[[5, 7], [13, 15]]]])
    averaged = m.F.avg_pool2d(image, (np.int32(2), np.int32(2)), stride=np.int32(2))
    np.testing.assert_array_equal(averaged.numpy(), [[[[2.5, 4.5], [10.5, 12.5]]]])
    assert tuple(m.nn.ZeroPad2d(np.int32(1))(image).shape) == (1, 1, 6, 6)
    np.testing.assert_array_equal(m.nn.ConstantPad1d(np.int64(1), 2.0)(m.torch.zeros(1, 1)).numpy(), [[2, 0, 2]])
    assert tuple(m.nn.ReflectionPad2d(np.int32(1))(image).shape) == (1, 1, 6, 6)
    norm = m.nn.LayerNorm(np.int64(3))
    assert tuple(norm.normalized_shape) == (3,)
    np.testing.assert_allclose(norm(m.torch.tensor([[1.0, 2.0, 3.0]])).detach().numpy(),
                               [[-1.2247356, 0.0, 1.2247356]], rtol=1e-5)


def test_distribution_parameters_given_as_numpy_floats_take_the_default_dtype(T):
    """np.float64(2.0) is a Python float to PyTorch's broadcast_all: float32 parameters and samples (float64 ones
    drew other Bernoulli outcomes from the same seed)."""
    D = T.distributions
    normal = D.Normal(np.float64(0.0), np.float64(2.0))
    assert normal.loc.dtype == T.float32 and normal.log_prob(T.tensor(1.0)).dtype == T.float32
    T.manual_seed(0)
    coin = D.Bernoulli(probs=np.float64(0.3)).sample((4,))
    assert coin.dtype == T.float32
    T.manual_seed(0)
    np.testing.assert_array_equal(coin.numpy(), D.Bernoulli(probs=0.3).sample((4,)).numpy())
    assert D.kl_divergence(D.Normal(np.float64(0.0), 1.0), D.Normal(1.0, np.float64(2.0))).dtype == T.float32


def test_normal_cdf_of_a_float64_value_with_float32_parameters(T):
    """√2 divides the float64 standardised value (PyTorch's order), not the float32 scale: Φ(0.9) to 1e-15."""
    value = T.tensor(0.9, dtype=T.float64)
    cdf = T.distributions.Normal(0.0, 1.0).cdf(value)
    assert cdf.dtype == T.float64
    assert abs(cdf.item() - 0.8159398746532405) < 1e-15


@pytest.mark.parametrize("number", [10, 10.0, np.int64(10), np.float32(10.0), np.float64(2.5)])
def test_a_number_over_a_tensor_is_its_reciprocal_times_the_number(T, number):
    """PyTorch's Tensor.__rtruediv__ is x.reciprocal() * c, two roundings, for any number c and any tensor x: an
    integer tensor (class weights len(y) / counts) and a NumPy number gave the exactly rounded quotient instead."""
    for values, dtype in (([3, 7, 12], T.int64), ([3, 7, 12], T.uint8), ([3.0, 7.0, 1.5], T.float32)):
        quotient = number / T.tensor(values, dtype=dtype)
        assert quotient.dtype == T.float32
        reciprocal = (np.float32(1) / np.array(values, dtype=np.float32)).astype(np.float32)
        np.testing.assert_array_equal(quotient.numpy(), (reciprocal * np.float32(number)).astype(np.float32))
    x = T.tensor([3.0, 7.0], requires_grad=True)
    (number / x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), -float(number) / np.array([9.0, 49.0]), rtol=1e-6)
