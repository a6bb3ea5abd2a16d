"""A NumPy scalar beside a tensor is read as the Python number it holds, as PyTorch reads it: it never raises
the tensor's dtype (NumPy 2 would keep the scalar's own dtype: float32 ** numpy.float64(0.5) is float64 there)."""

import numpy as np
import pytest

import autograd

CASES = {
    "pow": lambda M, x, c: x ** c,
    "pow_method": lambda M, x, c: x.pow(c),
    "rpow": lambda M, x, c: c ** x,
    "clamp_min": lambda M, x, c: x.clamp(c),
    "clamp_max": lambda M, x, c: x.clamp(max=c),
    "clamp_both": lambda M, x, c: M.clamp(x, c, 2 * c),
    "clamp_min_method": lambda M, x, c: x.clamp_min(c),
    "logit_eps": lambda M, x, c: (x / 4).logit(c / 4),
    "mul": lambda M, x, c: x * c,
    "rsub": lambda M, x, c: c - x,
    "div": lambda M, x, c: x / c,
    "add_alpha": lambda M, x, c: x.add(x, alpha=c),
    "where": lambda M, x, c: M.where(x > 1, x, c),
    "masked_fill": lambda M, x, c: x.masked_fill(x > 1, c),
}
# (tensor dtype, scalar): the tensor's dtype is the result's
PAIRS = [("float32", np.float64(0.5)), ("float64", np.float32(0.5)), ("float16", np.float64(0.25)),
         ("float32", np.int64(2))]


def _input(M, dtype):
    return M.tensor([0.5, 1.0, 1.5, 3.0], dtype=getattr(M, dtype))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype, scalar", PAIRS)
def test_a_numpy_scalar_keeps_the_tensors_dtype(name, dtype, scalar):
    """The tensor's dtype, and the values the Python number gives in float64."""
    x = _input(autograd, dtype)
    result = CASES[name](autograd, x, scalar)
    expected = CASES[name](autograd, _input(autograd, "float64"), scalar.item()).numpy()  # (a Python number)
    assert result.dtype == getattr(autograd, dtype)
    np.testing.assert_allclose(result.numpy().astype(np.float64), expected, rtol=1e-3 if dtype == "float16" else 1e-6)


def test_the_gradient_through_a_numpy_scalar_power_keeps_the_dtype():
    x = autograd.tensor([1.0, 4.0], requires_grad=True)
    (x ** np.float64(0.5)).sum().backward()
    assert x.grad.dtype == autograd.float32
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 0.25])


def test_integer_tensors_with_numpy_integers():
    x = autograd.tensor([1, 5, 9], dtype=autograd.int32)
    assert (x ** np.int64(2)).dtype == autograd.int32 and (x ** np.int64(2)).tolist() == [1, 25, 81]
    assert x.clamp(np.int64(2), np.int64(6)).dtype == autograd.int32
    assert x.clamp(np.int64(2), np.int64(6)).tolist() == [2, 5, 6]
    assert x.clamp(np.float64(1.5)).dtype == autograd.float32  # a float bound: the default float, as PyTorch


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype, scalar", PAIRS)
def test_numpy_scalars_as_pytorch(name, dtype, scalar):
    torch = pytest.importorskip("torch")
    ours = CASES[name](autograd, _input(autograd, dtype), scalar)
    theirs = CASES[name](torch, _input(torch, dtype), scalar)
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_allclose(ours.numpy().astype(np.float64), theirs.numpy().astype(np.float64), rtol=1e-6)


SIZE_CALLS = {
    "zeros": lambda M, n: M.zeros(n), "ones_two": lambda M, n: M.ones(n, 3), "empty": lambda M, n: M.empty(n),
    "rand": lambda M, n: M.rand(n), "randn": lambda M, n: M.randn(n), "full": lambda M, n: M.full((n,), 1.0),
    "new_zeros": lambda M, n: M.ones(1).new_zeros(n), "view": lambda M, n: M.ones(6).view(n, 3),
    "reshape": lambda M, n: M.ones(6).reshape(n, -1), "expand": lambda M, n: M.ones(1).expand(n),
    "repeat": lambda M, n: M.ones(1).repeat(n), "resize_": lambda M, n: M.ones(1).resize_(n),
}


@pytest.mark.parametrize("name", sorted(SIZE_CALLS))
@pytest.mark.parametrize("size", [np.int64(2), np.int32(2), "tensor"])
def test_a_lone_size_may_be_a_numpy_integer_or_a_0d_tensor(name, size):
    """zeros(numpy.int64(2)) and zeros(n) for a 0-d tensor n are one size, as PyTorch reads them (not a sequence)."""
    size = autograd.tensor(2) if isinstance(size, str) else size
    assert SIZE_CALLS[name](autograd, size).shape[0] == 2


def test_numpy_numbers_in_factories_infer_as_python_numbers():
    assert autograd.arange(np.int64(3)).dtype == autograd.int64 and autograd.arange(np.int64(3)).tolist() == [0, 1, 2]
    assert autograd.full((2,), np.int64(2)).dtype == autograd.int64
    assert autograd.full((2,), np.float64(0.5)).dtype == autograd.float32
    assert autograd.arange(np.float64(2.5)).dtype == autograd.float32
    with pytest.raises(TypeError):
        autograd.zeros(2.0)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(SIZE_CALLS))
def test_sizes_as_pytorch(name):
    torch = pytest.importorskip("torch")
    for size in (np.int64(2), "tensor"):
        ours = SIZE_CALLS[name](autograd, autograd.tensor(2) if isinstance(size, str) else size)
        theirs = SIZE_CALLS[name](torch, torch.tensor(2) if isinstance(size, str) else size)
        assert tuple(ours.shape) == tuple(theirs.shape)
