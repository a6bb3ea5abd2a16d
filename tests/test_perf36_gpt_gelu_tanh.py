"""GELU's tanh approximation as one node (``GeluTanh``): the forward is the composite's eight ops (still written
here, as the reference), bit for bit, over NaN, ±inf, ±0, huge and tiny values, float16/32/64, contiguous or
not, 0-d and empty; the backward is PyTorch's kernel's formula in its order (checked against that formula in
NumPy, bit for bit); second derivatives, forward mode; and PyTorch's values where it is installed."""

import math

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd.ops.gelu_tanh import gelu_tanh_gradient_array

DTYPES = ["float16", "float32", "float64"]


def _composite(x):
    """The eight ops F.gelu(x, approximate='tanh') recorded before (float16 through float32, rounded once)."""
    if x.dtype == autograd.float16:
        return _composite(x.float()).half()
    inner = (x + x * x * x * 0.044715) * math.sqrt(2 / math.pi)
    return x * (inner.tanh() + 1.0) * 0.5


def _values(dtype, shape=(37, 53), seed=0, special=True):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    if special:
        x.flat[::97] = np.nan
        x.flat[5::101] = np.inf
        x.flat[7::103] = -np.inf
        x.flat[11::107] = -0.0
        x.flat[13::109] = 0.0
        x.flat[17::113] = np.finfo(dtype).max
        x.flat[19::127] = -np.finfo(dtype).max
        x.flat[23::131] = np.finfo(dtype).tiny
    return x


def _formula(g, x):
    """PyTorch's GeluBackwardKernelImpl (tanh), step by step in NumPy, in x's dtype (float16: float32)."""
    wide = np.float32 if x.dtype == np.float16 else x.dtype.type
    x, g = x.astype(wide), g.astype(wide)
    beta, kappa = wide(math.sqrt(2) * (2 / math.sqrt(math.pi)) * 0.5), wide(0.044715)
    with np.errstate(over="ignore", invalid="ignore"):
        x_sq = x * x
        x_cube = x * x_sq
        inner = beta * (x + kappa * x_cube)
        tanh_inner = np.tanh(inner)
        left, right = wide(0.5) * x, wide(1) + tanh_inner
        left_derivative = wide(0.5) * right
        tanh_derivative = wide(1) - tanh_inner * tanh_inner
        inner_derivative = beta * (wide(1) + wide(3) * kappa * x_sq)
        right_derivative = left * tanh_derivative * inner_derivative
        return g * (left_derivative + right_derivative)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_forward_is_the_composites(dtype, layout):
    x = autograd.tensor(_values(dtype))
    x = {"contiguous": x, "transposed": x.t(), "sliced": x[::2, 1::3]}[layout]
    y = F.gelu(x, approximate="tanh")
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y.numpy(), _composite(x).numpy())
    assert np.array_equal(np.signbit(y.numpy()), np.signbit(_composite(x).numpy()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_dimensional_and_empty(dtype):
    for value in (0.5, -3.0, -0.0, float("nan")):
        x = autograd.tensor(value, dtype=getattr(autograd, dtype), requires_grad=True)
        y = F.gelu(x, approximate="tanh")
        assert y.shape == ()
        np.testing.assert_array_equal(y.detach().numpy(), _composite(x.detach()).numpy())
        y.backward()
        expected = _formula(np.ones((), dtype), np.array(value, dtype)).astype(dtype)
        np.testing.assert_array_equal(x.grad.numpy(), expected)
    x = autograd.ones(0, 3, dtype=getattr(autograd, dtype), requires_grad=True)
    F.gelu(x, approximate="tanh").sum().backward()
    assert x.grad.shape == (0, 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_backward_is_pytorchs_formula(dtype, layout):
    x_array, g_array = _values(dtype), _values(dtype, seed=1, special=False)
    x = autograd.tensor(x_array, requires_grad=True)
    g = autograd.tensor(g_array)
    if layout == "transposed":
        F.gelu(x.t(), approximate="tanh").backward(g.t())
    else:
        F.gelu(x, approximate="tanh").backward(g)
    assert x.grad.dtype == x.dtype
    np.testing.assert_array_equal(x.grad.numpy(), _formula(g_array, x_array).astype(dtype))


def test_the_gradient_array_in_its_own_dtype():
    x, g = _values("float32"), _values("float32", seed=1)
    np.testing.assert_array_equal(gelu_tanh_gradient_array(g, x), _formula(g, x))


def test_the_node_and_the_module():
    x = autograd.tensor(_values("float32", special=False), requires_grad=True)
    y = nn.GELU(approximate="tanh")(x)
    assert y.grad_fn.name() == "GeluBackward0"
    np.testing.assert_array_equal(y.detach().numpy(), _composite(x.detach()).numpy())
    out = autograd.empty(x.shape)
    F.gelu(x.detach(), approximate="tanh", out=out)
    np.testing.assert_array_equal(out.numpy(), y.detach().numpy())


def test_second_derivatives_match_finite_differences():
    x = autograd.tensor(np.linspace(-4, 4, 9), dtype=autograd.float64, requires_grad=True)
    assert autograd.autograd.gradcheck(lambda x: F.gelu(x, approximate="tanh"), (x,))
    assert autograd.autograd.gradgradcheck(lambda x: F.gelu(x, approximate="tanh"), (x,))


def test_the_recorded_gradient_equals_the_arrays():
    """Under create_graph the gradient is the same formula in Tensor ops: the same values as without."""
    for dtype in DTYPES:
        x_array, g_array = _values(dtype, special=False), _values(dtype, seed=1, special=False)
        x = autograd.tensor(x_array, requires_grad=True)
        (gx,) = autograd.grad(F.gelu(x, approximate="tanh"), x, autograd.tensor(g_array), create_graph=True)
        assert gx.requires_grad and gx.dtype == x.dtype
        np.testing.assert_allclose(gx.detach().numpy().astype(np.float64),
                                   _formula(g_array, x_array).astype(dtype).astype(np.float64),
                                   rtol={"float16": 1e-3, "float32": 1e-6, "float64": 1e-14}[dtype], atol=1e-7)




@pytest.mark.parametrize("dtype", DTYPES)
def test_values_and_gradients_are_pytorchs(dtype):
    torch = pytest.importorskip("torch")
    x_array, g_array = _values(dtype, (64, 128), special=False), _values(dtype, (64, 128), seed=1, special=False)
    x, tx = autograd.tensor(x_array, requires_grad=True), torch.tensor(x_array, requires_grad=True)
    F.gelu(x, approximate="tanh").backward(autograd.tensor(g_array))
    ty = torch.nn.functional.gelu(tx, approximate="tanh")
    ty.backward(torch.tensor(g_array))
    # (NumPy's tanh and PyTorch's differ by an ulp; near x = -4 and below, 1 + tanh u cancels it into the result's
    # leading digits: the absolute tolerance is a few ulps of 1)
    rtol, atol = {"float16": (1e-3, 1e-3), "float32": (2e-6, 3e-5), "float64": (1e-14, 1e-13)}[dtype]
    np.testing.assert_allclose(F.gelu(x.detach(), approximate="tanh").numpy(), ty.detach().numpy(), rtol=rtol,
                               atol=atol)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=atol)


def test_double_backward_is_pytorchs():
    torch = pytest.importorskip("torch")
    x_array = _values("float64", (8, 9), special=False)
    results = []
    for lib, gelu in ((autograd, F.gelu), (torch, torch.nn.functional.gelu)):
        x = lib.tensor(x_array, requires_grad=True)
        (gx,) = lib.autograd.grad((gelu(x, approximate="tanh") * x.cos()).sum(), x, create_graph=True)
        (gx.square().sum()).backward()
        results.append((gx.detach().numpy(), x.grad.numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_forward_mode_is_pytorchs():
    torch = pytest.importorskip("torch")
    x_array, v_array = _values("float64", (5, 6), special=False), _values("float64", (5, 6), seed=1, special=False)
    ours = autograd.autograd.functional.jvp(lambda x: F.gelu(x, approximate="tanh"), autograd.tensor(x_array),
                                            autograd.tensor(v_array))
    theirs = torch.autograd.functional.jvp(lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
                                           torch.tensor(x_array), torch.tensor(v_array))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-13, atol=1e-13)
