"""The activations PyTorch offers on tensors and at the top level (``x.hardshrink()``,
``x.prelu(w)``, ``autograd.threshold``, ``autograd.selu``, ``autograd.celu``, ``autograd.rrelu``). The
piecewise-linear ones are ``piecewise_linear.PiecewiseLinear`` (their second derivative is 0, as
PyTorch's); the others are composed of ``where``: the gradient goes to the branch each element takes.
``nn.functional`` uses these (arrows point down), and the primitives of its gated and smooth activations:
``Glu``, ``LogSigmoid`` and ``Gelu``, each beside the node of its backward."""

import math

from .. import random
from ..backend import float16, xp
from ..graph import modes
from ..primitive import Primitive, node_named
from . import piecewise_linear
from .conversion import refuse_kinds, type_name
from .elementwise import half_as_float32, row_major, where
from .elementwise_unary import sigmoid_of
from .error_function import blockwise, erf, gelu_float32, in_memory_order, normal_cdf_float32
from .joins import cat
from .names import names
from .outputs import write_out


@names("hardshrink")
def hardshrink(input, lambd=0.5, *, out=None):
    """y = x where |x| > λ, else 0;  dy/dx = 1 where |x| > λ, else 0."""
    return write_out(piecewise_linear.hardshrink(input, lambd), out)


@names("threshold", method=False)
def threshold(input, threshold, value, *, out=None):
    """y = x where x > threshold, else value;  dy/dx = 1 where x > threshold, else 0."""
    return write_out(piecewise_linear.threshold(input, threshold, value), out)


@names("threshold_", method=False)
def threshold_(input, threshold_value, value):
    """threshold written into input (recorded, as every in-place write). An expanded input is written too:
    elements sharing one memory location hold one value and so get one result (PyTorch's threshold_ alone of
    the activations skips the overlap check, its write being idempotent)."""
    return input._write((threshold_value, value), lambda old: threshold(old, threshold_value, value),
                        overlapping_ok=True)


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _exp_minus_one(x):
    """e^x - 1 for x <= 0 (larger x clamped to 0: the branch that uses this is not taken there), as expm1:
    exp(x) - 1 loses every digit for tiny x (elu(-1e-8) would be 0 in float32)."""
    return x.clamp(max=0.0).expm1()


def _negative_branch(input, curve, slope):
    """``curve`` where x < 0, and at x = 0 its tangent ``slope`` · x: the same value (0) and first
    derivative, and second derivative 0 there, as PyTorch's (its first derivative takes the negative
    branch at 0, its second only where x < 0)."""
    return where(input < 0, curve, input * slope)


def elu(input, alpha=1.0):
    """y = x for x > 0, α (e^x - 1) otherwise (Clevert et al., 2015); dy/dx at 0 is α, d²y/dx² there
    is 0 (PyTorch's conventions). (nn.functional.elu; PyTorch has no torch.elu.)"""
    refuse_kinds(input, "elu_cpu", "biu")  # (PyTorch's kernel has no integer version: no silent float result)
    return where(_positive_branch(input), input, _negative_branch(input, _exp_minus_one(input) * alpha, alpha))


def _positive_branch(input):
    """Where elu-like activations take x itself: x > 0, and NaN, whose gradient is the positive slope (1, selu's
    λ), as PyTorch's scalar kernel says (its negative branch is x <= 0, false for NaN; its vectorised kernels,
    which serve all but the tail of larger tensors, give NaN there: as piecewise_linear.py notes, a NaN's gradient
    is no contract in PyTorch, and its scalar kernel is the one followed here)."""
    return ~(input <= 0)


@names("selu", method=False)
def selu(input):
    """y = λ · elu(x, α) with λ ≈ 1.0507 and α ≈ 1.6733 (Klambauer et al., 2017): the
    constants that keep activations at zero mean and unit variance."""
    return elu(input, SELU_ALPHA) * SELU_SCALE


@names("celu", method=False)
@node_named("CeluBackward0")
def celu(input, alpha=1.0):
    """y = max(0, x) + min(0, α (e^(x/α) - 1)) (Barron, 2017)."""
    refuse_kinds(input, "elu_cpu", "biu")  # (PyTorch's celu is an elu kernel)
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: alpha cannot be 0 for CELU")
    return where(_positive_branch(input), input, _negative_branch(input, _exp_minus_one(input * (1.0 / alpha)) * alpha,
                                                                  1.0))


@names("selu_", method=False)
def selu_(input):
    """selu written into input (recorded, as every in-place write)."""
    return input._write_back(selu, (), {})


@names("celu_", method=False)
def celu_(input, alpha=1.0):
    """celu written into input."""
    return input._write_back(celu, (alpha,), {})


@names("prelu")
@node_named("PreluKernelBackward0")
def prelu(input, weight):
    """y = x for x > 0, a·x otherwise, with a learned ``weight`` a: one slope, or one per
    channel (dim 1 of the input; an input of fewer than 2 dims has one channel, as in PyTorch, so a
    1-D input takes one slope only)."""
    refuse_kinds(input, "prelu_cpu", "biu")  # PyTorch's kernel is floating only
    if weight.dtype != input.dtype:  # nor does it promote (a float64 input to a float32 PReLU layer)
        raise RuntimeError(f"prelu: Type promoting not supported. Got {type_name(input.dtype)} and "
                           f"{type_name(weight.dtype)}")
    if weight.numel() != 1:  # (PyTorch's checks, in its order)
        if input.ndim == 0:
            raise RuntimeError("Not allow zero-dim input tensor.")
        channels = input.shape[1] if input.ndim >= 2 else 1
        if weight.numel() != channels:
            raise RuntimeError(f"Mismatch of parameter numbers and input channel size. Found parameter "
                               f"numbers = {weight.numel()} and channel size = {channels}.")
    if weight.ndim > 1:
        raise RuntimeError(f"prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = {weight.ndim}")
    if weight.numel() == 1:
        slopes = weight.reshape(())  # one slope keeps a 0-d input 0-d
    else:  # one per channel, along dim 1 (the checks above leave only inputs of 2 dims or more here)
        slopes = weight.reshape((1, channels) + (1,) * (input.ndim - 2))
    return where(input > 0, input, input * slopes)


@names("rrelu", method=False)
def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, generator=None):
    """Randomized leaky ReLU (Xu et al., 2015): y = x for x > 0, a·x otherwise, where in training each
    element draws its own slope a ~ U(lower, upper) (from ``generator``, or autograd's), and in eval a is
    the mean slope (lower + upper) / 2. dy/dx = a at 0, as PyTorch."""
    if lower > upper:
        raise RuntimeError("Lower bound should be less than or equal to the upper bound")
    if not training:
        return piecewise_linear.leaky_relu(input, (lower + upper) / 2, name="RreluWithNoise")
    slopes = xp.asarray(random.generator(generator).uniform(lower, upper, input.shape), dtype=input.dtype)
    return piecewise_linear.leaky_relu_with_slopes(input, slopes)


@names("rrelu_", method=False)
def rrelu_(input, lower=1.0 / 8, upper=1.0 / 3, training=False, generator=None):
    """rrelu written into input (recorded, as every in-place write)."""
    return input._write_back(rrelu, (lower, upper, training, generator), {})


class Glu(Primitive):
    """y = a σ(b), a and b the halves of x along ``dim`` (the gated linear unit, Dauphin et al., 2017);
    dL/da = σ(b) · g,   dL/db = (1 - σ(b)) · σ(b) · a · g   (g = dL/dy), in the order PyTorch's kernels
    compute them. float16 is computed in float32 and rounded once, as there (a σ(b) with σ(b) rounded to
    float16 first was a unit off in a fifth of the values), but for σ(b) in the backward, which PyTorch's
    backward kernel rounds to float16 first: its gradients are those bits too. (nn.functional.glu.)"""

    def forward(self, x):
        a, b = xp.split(half_as_float32(x), 2, axis=self.dim)
        return (a * sigmoid_of(b)).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        a, b = x.chunk(2, self.dim)
        s = b.sigmoid()
        if x.dtype == float16:
            s, a, grad = s.float(), a.float(), grad.float()
        grad_x = cat([s * grad, (1.0 - s) * s * a * grad], self.dim)
        return (grad_x.to(x.dtype),)


class LogSigmoid(Primitive):
    """y = ln σ(x) = min(x, 0) - ln(1 + e^-|x|), stable for large |x|;   dL/dx = dL/dy · σ(-x), as
    LogSigmoidGrad computes it. float16 is computed in float32 and rounded once, as PyTorch's kernel.
    (nn.functional.logsigmoid.)"""

    def forward(self, x):
        wide = row_major(half_as_float32(x))  # (contiguous whatever x's layout, as PyTorch's kernel writes it)
        return (xp.minimum(wide, 0) - xp.log1p(xp.exp(-xp.abs(wide)))).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        return (LogSigmoidGrad.apply(grad, x),)


class LogSigmoidGrad(Primitive):
    """LogSigmoid's backward as PyTorch's kernel computes it: with b = e^-|x| in x's dtype (its forward's
    buffer: float16 rounds it), z = (1 - b / (1 + b)) · g where x < 0, b / (1 + b) · g elsewhere, float16 in
    float32 and rounded once (σ(-x) · g unrounded was a unit off in an eighth of the float16 values).
    dL/dg = the same map of u (= dL/dz);   dL/dx = u · g · (σ(x) - 1) · σ(x), PyTorch's double backward."""

    def forward(self, g, x):
        b = half_as_float32(xp.exp(-xp.abs(half_as_float32(x))).astype(x.dtype, copy=False))
        q = b / (1 + b)
        return (xp.where(x < 0, 1 - q, q) * half_as_float32(g)).astype(g.dtype, copy=False)

    def backward(self, u, z, g, x):
        s = x.sigmoid()
        return (LogSigmoidGrad.apply(u, x) if g.requires_grad else None,
                u * g * ((s - 1.0) * s) if x.requires_grad else None)


_SQRT_HALF = math.sqrt(0.5)
_NORMAL_DENSITY = 1 / math.sqrt(2 * math.pi)  # φ(0): PyTorch's kBeta, 2/√π · 1/√2 · 1/2


def _normal_cdf(x):
    """Φ(x) = (1 + erf(x/√2)) / 2 of an array, in its dtype (float32's erf within a unit of the correctly rounded
    one, by ``erf_float32``'s one polynomial: GELU over 524,288 float32 values 12.8 -> 4.6 ms)."""
    if x.dtype == xp.float32:
        return normal_cdf_float32(x)
    cdf = erf(x * x.dtype.type(_SQRT_HALF))
    cdf += 1
    cdf *= 0.5
    return cdf


def _gelu_grad_block(g, x, cdf, out):
    """g (Φ(x) + x φ(x)) of one block into ``out``, in the order of PyTorch's kernel's operations."""
    xp.multiply(x, x, out=out)
    out *= -0.5
    xp.exp(out, out=out)
    out *= _NORMAL_DENSITY
    out *= x
    out += cdf
    out *= g


class Gelu(Primitive):
    """y = x Φ(x) = x (1 + erf(x/√2)) / 2 (Hendrycks and Gimpel, 2016);   dL/dx = g (Φ(x) + x φ(x)),
    φ(x) = e^(-x²/2) / √(2π), as GeluGrad computes it. One node, as PyTorch's GeluBackward0 (it was five: a
    scale, erf, a shift and two products). float16 is computed in float32 and rounded once, as PyTorch's
    kernel (in float16, gelu(-3.672) would be -0.0, not -4.4e-4). (nn.functional.gelu, approximate='none'.)

    Φ(x) is kept on the node for the backward: erf is the costly part here (NumPy has none), where PyTorch's
    kernel computes it again. Not under saved-tensor hooks, which decide where saved values live (offloaded,
    or recomputed by checkpointing): the backward then computes it again too."""

    pytorch_name = "GeluBackward0"
    cdf = None

    def forward(self, x):
        wide = half_as_float32(x)
        if wide.dtype == xp.float32:  # (Φ and x Φ in one pass of cache-sized blocks)
            gelu, cdf = gelu_float32(wide)
        else:
            cdf = _normal_cdf(wide)
            gelu = cdf * wide
        if modes.saved_tensor_hooks is None:
            self.cdf = cdf  # (never written: the products here and in GeluGrad are new arrays)
        return gelu.astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        return (GeluGrad.apply(grad, x, cdf=self.cdf),)

    def release(self):
        super().release()
        self.cdf = None


class GeluGrad(Primitive):
    """Gelu's backward as PyTorch's kernel computes it: z = g (Φ(x) + x φ(x)), float16 in float32 and rounded once
    (Φ(x) given by Gelu's forward when it kept it). dL/dg = the same map of u (= dL/dz);
    dL/dx = u g (2φ(x) - x² φ(x)), since (Φ + xφ)' = 2φ + x φ' and φ'(x) = -x φ(x) (PyTorch's double backward)."""

    cdf = None

    def forward(self, g, x):
        wide = half_as_float32(x)
        cdf = _normal_cdf(wide) if self.cdf is None else self.cdf  # (Gelu's Φ only read)
        # g (Φ(x) + x φ(x)) in cache-sized blocks: its seven passes stay in the cache and write one new array
        flat_x, flat_g, flat_cdf, laid_out = in_memory_order(wide, g, cdf)
        density, = blockwise(_gelu_grad_block, (flat_g, flat_x, flat_cdf), (xp.empty(flat_x.shape, wide.dtype),), ())
        return laid_out(density).astype(g.dtype, copy=False)

    def backward(self, u, z, g, x):
        if not x.requires_grad:
            return GeluGrad.apply(u, x, cdf=self.cdf) if g.requires_grad else None, None
        square = x * x
        density = (square * -0.5).exp() * _NORMAL_DENSITY
        return (GeluGrad.apply(u, x, cdf=self.cdf) if g.requires_grad else None,
                u * g * (density * 2.0 - square * density))
