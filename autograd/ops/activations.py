"""The activations PyTorch offers on tensors and at the top level (``x.hardshrink()``,
``x.prelu(w)``, ``autograd.threshold``, ``autograd.selu``, ``autograd.celu``, ``autograd.rrelu``). The
piecewise-linear ones are ``piecewise_linear.PiecewiseLinear`` (their second derivative is 0, as
PyTorch's); the others are composed of ``where``: the gradient goes to the branch each element takes.
``nn.functional`` uses these (arrows point down), and the primitives of its gated and smooth activations:
``Elu`` (elu, selu, celu), ``ScaledSoftplus``, ``Silu``, ``Glu``, ``LogSigmoid`` and ``Gelu``, each beside the node
of its backward."""

import math

import numpy

from .. import random
from ..backend import float16, select, xp
from ..graph import modes
from ..index_watching import watches_arguments
from ..primitive import Primitive, node_named
from ..tensor import Tensor
from . import piecewise_linear
from .broadcasting import unbroadcast
from .conversion import refuse_kinds, type_name
from .elementwise import half_as_float32, row_major, where
from .elementwise_unary import SigmoidGrad, sigmoid_of
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


class Elu(Primitive):
    """y = s x for x >= 0 (and NaN), α s (e^(c x) - 1) for x < 0, with scale s and input scale c: elu (s = c = 1,
    Clevert et al., 2015), selu (s = λ, α of Klambauer et al., 2017) and celu (c = 1/α, Barron, 2017), as PyTorch's
    one kernel computes them: (e^(c x) - 1) by expm1 (exp(x) - 1 would lose every digit of elu(-1e-8)), times α s
    rounded once in x's dtype;   dL/dx = EluGrad's. float16 is computed in float32 and rounded once, as there. One
    node, as PyTorch's EluBackward0 (it was seven: a clamp, expm1, products and two selections)."""

    pytorch_name = "EluBackward0"  # (celu's is CeluBackward0: its caller names it)

    def forward(self, x):
        wide = half_as_float32(x)
        number = wide.dtype.type
        curve = xp.expm1(wide * number(self.input_scale) if self.input_scale != 1 else wide)
        curve *= number(self.alpha) * number(self.scale)  # (α s rounded once, as PyTorch's negcoef)
        straight = wide * number(self.scale) if self.scale != 1 else wide
        # (chosen over the curve's array where it is row-major: a new array cost about as much as a product)
        return select(wide < 0, curve, straight, over_x=True).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        return (EluGrad.apply(grad, x, alpha=self.alpha, scale=self.scale, input_scale=self.grad_input_scale),)


class EluGrad(Primitive):
    """Elu's backward as PyTorch's elu_backward computes it: z = g · c · α s · e^(c x) (multiplied in that order) where
    x <= 0, g · s elsewhere (NaN too, as its scalar kernel), float16 in float32 and rounded once. So the slope at 0 is
    α s c (α for elu, PyTorch's convention). dL/dg = the same map of u (= dL/dz);   dL/dx = EluGrad(u · g · c) where
    x < 0, 0 elsewhere (so 0 at x = 0), PyTorch's elu_double_backward."""

    def forward(self, g, x):
        wide, wide_g = half_as_float32(x), half_as_float32(g)
        number = wide.dtype.type
        coefficient = number(self.alpha) * number(self.scale)  # (α s rounded once, as PyTorch's negcoef)
        if self.input_scale != 1:
            slope = wide_g * number(self.input_scale)
            slope *= coefficient
        else:
            slope = wide_g * coefficient
        slope *= xp.exp(wide * number(self.input_scale) if self.input_scale != 1 else wide)
        straight = wide_g * number(self.scale) if self.scale != 1 else wide_g
        return select(wide <= 0, slope, straight, over_x=True).astype(g.dtype, copy=False)  # (as Elu's)

    def backward(self, u, z, g, x):
        params = dict(alpha=self.alpha, scale=self.scale, input_scale=self.input_scale)
        grad_g = EluGrad.apply(u, x, **params) if g.requires_grad else None
        grad_x = None
        if x.requires_grad:
            negative = Tensor._make((x._data < 0).astype(x.dtype))
            grad_x = EluGrad.apply(u * g * self.input_scale, x, **params) * negative
        return grad_g, grad_x


def elu(input, alpha=1.0):
    """y = x for x >= 0, α (e^x - 1) otherwise (Clevert et al., 2015); dy/dx at 0 is α, d²y/dx² there
    is 0 (PyTorch's conventions). (nn.functional.elu; PyTorch has no torch.elu.)"""
    refuse_kinds(input, "elu_cpu", "biuc")  # (PyTorch has no integer or complex kernel: no silent result)
    return Elu.apply(input, alpha=alpha, scale=1.0, input_scale=1.0, grad_input_scale=1.0)


@names("selu", method=False)
def selu(input):
    """y = λ · elu(x, α) with λ ≈ 1.0507 and α ≈ 1.6733 (Klambauer et al., 2017): the
    constants that keep activations at zero mean and unit variance."""
    refuse_kinds(input, "elu_cpu", "biuc")
    return Elu.apply(input, alpha=SELU_ALPHA, scale=SELU_SCALE, input_scale=1.0, grad_input_scale=1.0)


@names("celu", method=False)
@node_named("CeluBackward0")
def celu(input, alpha=1.0):
    """y = max(0, x) + min(0, α (e^(x/α) - 1)) (Barron, 2017): elu with input scale 1/α. (PyTorch's backward takes
    1/α of α rounded to float32 first, its forward of α itself: so here.)"""
    refuse_kinds(input, "elu_cpu", "biuc")  # (PyTorch's celu is an elu kernel)
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: alpha cannot be 0 for CELU")
    return Elu.apply(input, alpha=alpha, scale=1.0, input_scale=1.0 / alpha,
                     grad_input_scale=1.0 / float(xp.float32(alpha)))


@names("selu_", method=False)
def selu_(input):
    """selu written into input (recorded, as every in-place write)."""
    return input._write_back(selu, (), {})


@names("celu_", method=False)
def celu_(input, alpha=1.0):
    """celu written into input."""
    return input._write_back(celu, (alpha,), {})


class Prelu(Primitive):
    """y = x for x > 0, a x otherwise (NaN: a x), with slopes a broadcast against x (the weight reshaped by prelu);
        dL/dx = g for x > 0, a g otherwise,   dL/da = Σ (0 for x > 0, x g otherwise)
    (the sum over the axes a is broadcast along), as PyTorch's kernel and its backward (_prelu_kernel,
    _prelu_kernel_backward) compute them. One node, PyTorch's PreluKernelBackward0, saving x and the slopes, as
    it saves self and weight: it was three (a comparison, a product and a selection) and three passes over
    arrays of x's size; the same values bit for bit, picked by bits (backend.select: NumPy's where branches on
    each element). dL/da sums the same products over the same axes as the composite's product's gradient did;
    dL/dx is PyTorch's selection where the composite added its two branches' gradients (0 + a g: +0 where a g is
    -0; g + 0 · a: NaN where a is infinite). Under create_graph (and in forward mode) the gradients are the same
    selections in Tensor ops, so that they have a graph of their own (second derivatives, double backward): the
    derivatives of the selections computed, where PyTorch's PreluKernelBackwardBackward0 selects by x >= 0 (its
    backward by x > 0), so at x = 0 exactly (a kink) its second derivatives are the x > 0 side's and these the
    other side's."""

    pytorch_name = "PreluKernelBackward0"

    @property
    def _saved_weight(self):  # (PyTorch's name for what it saved of the weight; _saved_other here too)
        return self._saved(1)

    def forward(self, x, slopes):
        product = x * slopes
        extremum = _extremum_selecting(slopes) if product.ndim else None
        if extremum is not None:
            return extremum(product, x, out=product)
        # (NaN: not x > 0, so a x, as PyTorch's and the composite's selection; written over the product's array)
        return select(~(x > 0), product, x, over_x=True)

    def backward(self, grad, y, x, slopes):
        if modes.grad_enabled:  # (create_graph, forward mode: the gradients functions of g, x and a)
            positive = x > 0
            grad_x = where(positive, grad, grad * slopes) if x.requires_grad else None
            grad_slopes = (unbroadcast(where(positive, 0.0, x * grad), slopes) if slopes.requires_grad else None)
            return grad_x, grad_slopes
        data, g = x._data, grad._data
        negative = ~(data > 0)
        grad_x = grad_slopes = None
        if x.requires_grad:
            grad_x = Tensor._make(select(negative, g * slopes._data, g, over_x=True))
        if slopes.requires_grad:
            zero = xp.zeros((), data.dtype)
            grad_slopes = unbroadcast(Tensor._make(select(negative, data * g, zero, over_x=True)), slopes)
        return grad_x, grad_slopes


def _extremum_selecting(slopes):
    """The ufunc f for which f(a x, x) is PyTorch's selection (x for x > 0, a x otherwise) of every x, bit for bit,
    by the slopes a alone, or None: one pass over x where the selection took five (a comparison, its negation and
    three bitwise passes; 524,288 float32 values 1.5 -> 0.4 ms with the product). NumPy's maximum for 0 < a <= 1
    (a x >= x for x <= 0, a x <= x for x > 0; ±∞ and NaN kept, both operands NaN where x is) and minimum for
    finite a > 1. Never for a <= 0: the selection gives a x = -0 at x = +0 where maximum's SIMD loop returned its
    second operand, +0 (nor for a = 0: 0 · ∞ is NaN where x = ∞ selects x), nor for infinite or NaN slopes."""
    data = slopes._data if isinstance(slopes, Tensor) else slopes
    if xp is not numpy or data.dtype.kind != "f":
        return None
    if ((data > 0) & (data <= 1)).all():
        return numpy.maximum
    if ((data > 1) & (data < numpy.inf)).all():
        return numpy.minimum
    return None


@names("prelu")
@watches_arguments("input")  # (PyTorch's node saves them: writing one refuses)
def prelu(input, weight):
    """y = x for x > 0, a·x otherwise, with a learned ``weight`` a: one slope, or one per
    channel (dim 1 of the input; an input of fewer than 2 dims has one channel, as in PyTorch, so a
    1-D input takes one slope only). One node, ``Prelu``, over the weight reshaped to broadcast (a view, as
    PyTorch's prelu reshapes it before its kernel)."""
    refuse_kinds(input, "prelu_cpu", "biuc")  # PyTorch's kernel is real floating only
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
    return Prelu.apply(input, slopes)


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


class ScaledSoftplus(Primitive):
    """y = ln(1 + e^(βx)) / β, and x where βx > threshold (PyTorch's linear regime), as PyTorch's kernel computes it:
    log1p(exp(βx)) / β (β = 0: ln 2 / 0 = inf, as there);   dL/dx = ScaledSoftplusGrad's. float16 is computed in
    float32 and rounded once, as there. One node, as PyTorch's SoftplusBackward0 (it was up to five: a scale, the
    stable softplus, its product by 1/β, a comparison and a selection). (nn.functional.softplus; x.softplus() without
    β or threshold is special.py's Softplus.)"""

    pytorch_name = "SoftplusBackward0"

    def forward(self, x):
        wide = half_as_float32(x)
        number = wide.dtype.type
        scaled = wide * number(self.beta) if self.beta != 1 else wide
        # ln(1 + e^(βx)) as max(βx, 0) + log1p(e^-|βx|) (x.softplus()'s, special.py): PyTorch's log1p(exp(βx))
        # overflows past βx ≈ 88 in float32 where a threshold above that lets it through, and NumPy's float32 exp
        # and log1p in that order were a unit off PyTorch's more often (229,273 of 800,000 values, against 215,289;
        # softplus(2) among them); float64 is nearer still (130,510) but four times slower
        if scaled.ndim:  # (the steps written into one array)
            smooth = xp.abs(scaled)
            xp.negative(smooth, out=smooth)
            xp.exp(smooth, out=smooth)
            xp.log1p(smooth, out=smooth)
        else:  # (a 0-d array's arithmetic gives NumPy scalars, which take no out=)
            smooth = xp.log1p(xp.exp(-xp.abs(scaled)))
        smooth += xp.maximum(scaled, 0)
        if self.beta != 1:
            smooth /= number(self.beta)
        # (chosen over smooth's array where it is row-major, not a new one: not βx > threshold, so NaN keeps smooth)
        return select(~(scaled > number(self.threshold)), smooth, wide, over_x=True).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        return (ScaledSoftplusGrad.apply(grad, x, beta=self.beta, threshold=self.threshold),)


class ScaledSoftplusGrad(Primitive):
    """ScaledSoftplus's backward as PyTorch's softplus_backward computes it: with z = e^(βx), g · z / (z + 1)
    (= g σ(βx)) where βx <= threshold, g itself above; float16 in float32 and rounded once. dL/dg = the same map of
    u (= dL/dz);   dL/dx = β · σ'(βx) · u g where βx < threshold, 0 elsewhere (PyTorch's softplus_double_backward:
    σ' as its sigmoid_backward, (1 - σ) σ)."""

    def forward(self, g, x):
        wide, wide_g = half_as_float32(x), half_as_float32(g)
        number = wide.dtype.type
        scaled = wide * number(self.beta) if self.beta != 1 else wide
        exponential = xp.exp(scaled)
        slope = wide_g * exponential
        exponential += 1
        slope /= exponential
        return select(~(scaled > number(self.threshold)), slope, wide_g, over_x=True).astype(g.dtype, copy=False)

    def backward(self, u, z, g, x):
        grad_g = ScaledSoftplusGrad.apply(u, x, beta=self.beta, threshold=self.threshold) if g.requires_grad else None
        grad_x = None
        if x.requires_grad:
            scaled = x * self.beta
            below = Tensor._make((scaled._data < self.threshold).astype(x.dtype))
            grad_x = SigmoidGrad.apply(u * g, scaled.sigmoid()) * below * self.beta
        return grad_g, grad_x


class Silu(Primitive):
    """y = x σ(x) = x / (1 + e^-x) (swish; Elfwing et al., 2017), divided once as PyTorch's kernel (x · σ(x) rounds
    twice);   dL/dx = SiluGrad's. float16 is computed in float32 and rounded once, as there. One node, as PyTorch's
    SiluBackward0 (it was two, a sigmoid and a product, and two more conversions for float16)."""

    def forward(self, x):
        wide = half_as_float32(x)
        if not wide.ndim:  # (a 0-d array's arithmetic gives NumPy scalars, which take no out=)
            return (wide / (xp.exp(-wide) + 1)).astype(x.dtype, copy=False)
        y = xp.negative(wide)  # (the steps written into one array)
        xp.exp(y, out=y)  # (overflowing to inf below about -88 in float32: y is then -0.0, as there)
        y += 1
        xp.divide(wide, y, out=y)
        return y.astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        return (SiluGrad.apply(grad, x),)


class SiluGrad(Primitive):
    """Silu's backward as PyTorch's silu_backward computes it: z = g σ (1 + x (1 - σ)), σ = 1 / (1 + e^-x), multiplied
    in that order; float16 in float32 and rounded once. dL/dg = the same map of u (= dL/dz);
    dL/dx = u g σ (1 - σ) (2 + x (1 - 2σ)), the derivative of σ (1 + x (1 - σ))."""

    def forward(self, g, x):
        wide = half_as_float32(x)
        one = wide.dtype.type(1)
        # each step written over the array the step before made (of x's layout), as far as the product with g, which
        # takes it only where g is laid out as the new product would be (row-major): two new arrays, where there were
        # five, each about as costly to make as a product. (A 0-d array's arithmetic gives scalars, which take no out=)
        sigmoid = xp.negative(wide)
        out = sigmoid if wide.ndim else None
        sigmoid = xp.exp(sigmoid, out=out)
        sigmoid += one
        sigmoid = xp.divide(one, sigmoid, out=out)
        factor = one - sigmoid  # 1 + x (1 - σ)
        factor *= wide
        factor += one
        if out is not None and out.flags.c_contiguous and g.flags.c_contiguous and g.dtype == x.dtype:
            slope = xp.multiply(half_as_float32(g), sigmoid, out=out)
        else:  # (NumPy writes this product over float16 g's float32 copy, a temporary, in that copy's layout)
            slope = half_as_float32(g) * sigmoid
        slope *= factor
        return slope.astype(g.dtype, copy=False)

    def backward(self, u, z, g, x):
        grad_g = SiluGrad.apply(u, x) if g.requires_grad else None
        grad_x = None
        if x.requires_grad:
            s = x.sigmoid()
            grad_x = u * g * (s * (1.0 - s)) * (2.0 + x * (1.0 - s * 2.0))
        return grad_g, grad_x


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
        chosen = select(x < 0, 1 - q, q)  # (by bits: NumPy's where branches on each element's random sign)
        chosen *= half_as_float32(g)
        return chosen.astype(g.dtype, copy=False)

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
