"""GELU's tanh approximation (nn.functional.gelu(x, approximate='tanh'), GPT-2's) as one node, PyTorch's
GeluBackward0:

    y = x (1 + tanh(u)) / 2,   u = β (x + κ x³),   β = √(2/π),  κ = 0.044715,
    dL/dx = g ((1 + tanh u) / 2 + (x / 2) (1 - tanh² u) β (1 + 3κ x²))

The forward takes the steps the composite of eight ops took, in its order (the same values, bit for bit); the
backward is PyTorch's kernel's formula, in its order (where the composite's chain of eight backward products
rounded otherwise: a quarter of float32 gradients were PyTorch's bit for bit, half are now; the rest differ by
the tanh, NumPy's against PyTorch's own). float16 is computed in float32 and rounded once, both ways, as
PyTorch's kernels. Under create_graph (and in forward mode) the gradient is the same formula in Tensor ops, so
that it has a graph of its own (second derivatives)."""

import math

from ..backend import errstate, float16, xp
from ..graph import modes
from ..primitive import Primitive
from ..tensor import Tensor
from .elementwise import half_as_float32
from .error_function import blockwise, in_memory_order

_BETA = math.sqrt(2 / math.pi)  # (PyTorch's kBeta, M_SQRT2 · M_2_SQRTPI · 0.5: the same double)
_KAPPA = 0.044715


def _three_kappa(dtype):
    """3κ as PyTorch's vector kernel forms it: 3 times κ in the computing dtype, rounded there."""
    return dtype.type(3) * dtype.type(_KAPPA)


def _tanh_of_inner(x, square, out):
    """tanh(β (x + κ x³)) of an array into ``out``, x³ as (x x) x; ``square`` (x x) given."""
    xp.multiply(square, x, out=out)
    out *= _KAPPA
    out += x
    out *= _BETA
    return xp.tanh(out, out=out)


def gelu_tanh_array(x):
    """x (1 + tanh(β (x + κ x³))) / 2 of a float32 or float64 array, the composite's steps in its order."""
    with errstate(over="ignore", invalid="ignore"):  # (x³ past the largest float is ∞; ∞ · 0 is NaN, as PyTorch's)
        y = _tanh_of_inner(x, xp.multiply(x, x, out=xp.empty_like(x)), xp.empty_like(x))
        y += 1
        y *= x
        y *= 0.5
    return y


def _gradient_block(g, x, out, square, slope, right):
    """One block of ``gelu_tanh_gradient_array`` into ``out``, with scratch ``square``, ``slope`` and ``right``."""
    xp.multiply(x, x, out=square)
    tanh = _tanh_of_inner(x, square, out)
    xp.multiply(tanh, tanh, out=slope)
    xp.subtract(1, slope, out=slope)  # 1 - tanh² u
    xp.multiply(x, 0.5, out=right)
    right *= slope
    square *= _three_kappa(x.dtype)
    square += 1
    square *= _BETA  # du/dx = β (1 + 3κ x²)
    right *= square
    tanh += 1
    tanh *= 0.5
    tanh += right
    tanh *= g


def gelu_tanh_gradient_array(g, x):
    """g ((1 + tanh u) / 2 + (x / 2) (1 - tanh² u) β (1 + 3κ x²)) of float32 or float64 arrays, laid out as x: the
    products and sums of PyTorch's kernel (GeluBackwardKernelImpl) in its order, in cache-sized blocks (their
    fourteen passes stay in the cache: 524,288 float32 values 4.6 -> 2.7 ms)."""
    flat_x, flat_g, laid_out = in_memory_order(x, g)
    with errstate(over="ignore", invalid="ignore"):
        out, = blockwise(_gradient_block, (flat_g, flat_x), (xp.empty(flat_x.shape, x.dtype),), (x.dtype,) * 3)
    return laid_out(out)


def _recorded_gradient(g, x):
    """The backward's formula in Tensor ops (recorded: create_graph, forward mode), float16 in float32."""
    half = x.dtype == float16
    if half:
        g, x = g.float(), x.float()
    square = x * x
    tanh = ((square * x * _KAPPA + x) * _BETA).tanh()
    inner_slope = (square * float(_three_kappa(x._data.dtype)) + 1.0) * _BETA
    result = g * ((tanh + 1.0) * 0.5 + x * 0.5 * (1.0 - tanh * tanh) * inner_slope)
    return result.half() if half else result


class GeluTanh(Primitive):
    """y = x (1 + tanh(β (x + κ x³))) / 2;   dL/dx = g ((1 + tanh u) / 2 + (x / 2)(1 - tanh² u) β (1 + 3κ x²)).
    The module's docstring has the rest."""

    pytorch_name = "GeluBackward0"

    def forward(self, x):
        return gelu_tanh_array(half_as_float32(x)).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        if modes.grad_enabled:  # (create_graph, forward mode: the gradient a function of g and x)
            return (_recorded_gradient(grad, x),)
        wide = half_as_float32(x._data)
        return (Tensor._make(gelu_tanh_gradient_array(half_as_float32(grad._data), wide).astype(x._data.dtype,
                                                                                                 copy=False)),)
