"""Piecewise-linear activations: leaky ReLU, hardtanh (and relu6), threshold, hard and soft shrinkage,
randomized leaky ReLU. Each is

    y = a(x) · x + b(x),   the slope a and the offset b constant on each piece of the real line,

so that

    dy/dx = a(x)   and   d²y/dx² = 0   (at a kink: the slope of the piece that holds it, as PyTorch).

One primitive serves them all. An activation states its pieces as PyTorch's kernel tests its input:
a chain of tests ``(comparison, bound, line)``, where x takes the line of the first test it passes
and the ``otherwise`` line where it passes none. NaN passes no comparison, so it takes ``otherwise``
(hardtanh(NaN) is NaN with a gradient of 1, as PyTorch's scalar kernel says; its vectorised kernels,
which serve tensors of 16 float32 elements or more, give hardtanh and the shrinkages a gradient of 0
there: a NaN's gradient is no contract in PyTorch). An activation may also give a ``formula`` for its
values that NumPy computes faster than the chain (np.clip for hardtanh).

The backward, z = g ⊙ a(x), is a node of its own that depends on x, as PyTorch's
``leaky_relu_backward`` and the like are: with ``create_graph=True`` the first derivative has a
graph, and the second derivative exists and is zero (``ReluGrad`` in elementwise_unary.py is the same
pattern for relu alone).
"""

import math
import operator
from typing import NamedTuple

import numpy

from ..backend import errstate, float16, float32, xp
from ..primitive import Primitive
from ..tensor import Tensor
from .conjugation import refuse_unordered
from .conversion import type_name
from .elementwise import half_as_float32
from .selection import selected

COMPARISONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class Line(NamedTuple):
    """y = slope · x + offset on one piece (slope a number, or an array of x's shape: rrelu's
    random slopes). ``slope=None`` is a flat piece, y = offset whatever x is: hardtanh(inf) is
    max_val, where 0 · inf would be NaN."""

    slope: object = 1.0
    offset: float = 0.0

    def at(self, x):
        """The line's values at the array x (its trivial parts skipped: x · 1, + 0)."""
        slope, offset = self.slope, self.offset
        if slope is None:
            return xp.asarray(offset, dtype=x.dtype)
        y = x if _is_number(slope) and slope == 1 else x * slope
        return y if offset == 0 else y + offset


IDENTITY = Line()


def flat(value):
    """The piece y = value (dy/dx = 0)."""
    return Line(None, value)


def _is_number(slope):
    return isinstance(slope, (int, float))


class Pieces:
    """A piecewise-linear map of x, as a chain of tests: ``tests`` holds ``(comparison, bound,
    line)``, comparison one of < <= > >=; x takes the line of the first test it passes, the
    ``otherwise`` line where it passes none. ``name`` is PyTorch's for the op (its grad_fn
    prints as <{name}Backward0>). ``formula``, where given, computes the same values faster
    (np.clip for hardtanh: NumPy's ``where`` costs ten times its arithmetic on random signs); a
    test holds it to the chain."""

    __slots__ = ("name", "tests", "otherwise", "formula")

    def __init__(self, name, tests, otherwise, formula=None):
        self.name, self.tests, self.otherwise, self.formula = name, tuple(tests), otherwise, formula

    def values(self, x):
        """y = a(x) · x + b(x) for the array x. float16 is computed in float32 and rounded once, as PyTorch's
        kernels (x · 0.01 in float16 rounds the slope first: leaky_relu was a unit off in a fifth of the
        negative values), x compared with the bounds in float32 too (threshold(x, 0.3, v) keeps a float16 0.3,
        0.30005); the shrinkages hold their bounds in x's dtype, as their kernels do."""
        if self.formula is not None:
            return self.formula(half_as_float32(x)).astype(x.dtype, copy=False)
        return self.chain_values(x)

    def chain_values(self, x):
        """The values as the chain says them: each test's line where x passes it, the tests applied
        last to first, so that the first one x passes is the one that decides."""
        wide = half_as_float32(x)
        with errstate(invalid="ignore"):  # a line at an x it is not taken for (0 · inf): not the answer
            y = self.otherwise.at(wide)
            for comparison, bound, line in reversed(self.tests):
                y = xp.where(COMPARISONS[comparison](wide, bound), line.at(wide), y)
        return y.astype(x.dtype, copy=False)

    def slopes(self, x, dtype=None):
        """a(x), as an array of ``dtype`` (x's by default): Σ_k [x takes piece k] · a_k. One term of the sum
        is a_k, the others are exactly 0, so the sum is a_k exactly (and faster than ``where``)."""
        dtype = x.dtype if dtype is None else dtype
        taken = total = None  # where x passed an earlier test; the sum so far
        for comparison, bound, line in self.tests + ((None, None, self.otherwise),):
            passes = COMPARISONS[comparison](x, bound) if comparison is not None else None
            slope = line.slope
            if slope is not None and not (_is_number(slope) and slope == 0):
                if passes is None:  # the otherwise line: where x passed no test
                    on_piece = ~taken
                elif taken is None:  # the first test
                    on_piece = passes
                else:
                    on_piece = passes & ~taken
                term = on_piece.astype(dtype)
                if not (_is_number(slope) and slope == 1):
                    term *= slope
                total = term if total is None else total + term
            if passes is not None:
                taken = passes if taken is None else taken | passes
        return xp.zeros(x.shape, dtype) if total is None else total

    def gradient(self, g, x):
        """dL/dx = dL/dy · a(x) for the arrays g (dL/dy) and x, and 0 on a flat piece even where dL/dy
        is infinite (PyTorch's backward selects: selection.py); float16 in float32, rounded once (as y)."""
        if g.dtype == float16:
            return selected(g.astype(float32), self.slopes(half_as_float32(x), float32)).astype(float16)
        return selected(g, self.slopes(x))


class PiecewiseLinear(Primitive):
    """y = a(x) · x + b(x)  (``pieces`` says a and b);   dL/dx = dL/dy · a(x), as a node of its own
    (PiecewiseLinearGrad) that depends on x, so that d²y/dx² exists and is 0."""

    def forward(self, x):
        return self.pieces.values(x)

    def backward(self, grad, y, x):
        return (PiecewiseLinearGrad.apply(grad, x, pieces=self.pieces),)

    @property
    def op_name(self):
        return self.pieces.name


class PiecewiseLinearGrad(Primitive):
    """The backward as one node: z = g ⊙ a(x)  (g = dL/dy);
    dL/dg = u ⊙ a(x) (the same map, u = dL/dz),   dL/dx = 0 (a is flat between the kinks: a zero
    gradient, not none, so that x still has a second derivative, as in PyTorch)."""

    def forward(self, g, x):
        return self.pieces.gradient(g, x)

    def backward(self, u, z, g, x):
        return (PiecewiseLinearGrad.apply(u, x, pieces=self.pieces) if g.requires_grad else None,
                Tensor._make(xp.zeros_like(x._data)) if x.requires_grad else None)  # (zeros, as PyTorch's)

    @property
    def op_name(self):
        return f"{self.pieces.name}Backward"


def piecewise_linear(input, pieces, kernel, integers=False):
    """y = the map ``pieces`` of the tensor ``input``. ``kernel`` names PyTorch's kernel in the errors;
    ``integers``: whether it takes integer tensors (hardtanh and threshold do; the bounds and values
    were made the integer dtype's by the caller)."""
    refuse_unless_real(input, kernel, integers)
    return PiecewiseLinear.apply(input, pieces=pieces)


def refuse_unless_real(x, kernel, integers=False):
    """PyTorch's refusals of an activation's kernel for x (a tensor or an array): complex numbers have no
    order, and bools (integers too, unless ``integers``) are not implemented."""
    kind = x.dtype.kind
    if kind == "c":
        refuse_unordered(x, kernel)
    if kind != "f" and not (integers and kind in "iu"):
        raise NotImplementedError(f"\"{kernel}_cpu\" not implemented for '{type_name(x.dtype)}'")


def _number_of(value, input):
    """A bound, slope or value as a Python number of the input's kind, which NumPy computes with in
    the input's dtype (a NumPy float64 would raise float32 to float64). An integer tensor takes it
    truncated toward zero, as PyTorch casts a Scalar to an integer dtype (hardtanh(x, -1.5, 1.5)
    clamps to [-1, 1])."""
    return int(value) if input.dtype.kind in "iu" else float(value)


def leaky_relu(input, negative_slope=0.01, name="LeakyRelu"):
    """y = x for x > 0, a·x otherwise (a = negative_slope);  dy/dx = 1 for x > 0, a otherwise (a at 0).
    (``name``: rrelu in eval is this map under PyTorch's name RreluWithNoise.)"""
    a = _number_of(negative_slope, input)
    return piecewise_linear(input, Pieces(name, ((">", 0.0, IDENTITY),), Line(a), _leaky_formula(a)), "leaky_relu")


def _leaky_formula(a):
    """Leaky ReLU's values without a where: max(x, a·x) for 0 < a <= 1, min(x, a·x) for a > 1. (None
    otherwise: the chain computes them; for a = 0, max(inf, 0 · inf) would be NaN.)"""
    if 0 < a <= 1:
        return lambda x: xp.maximum(x, x * a)
    if a > 1:
        return lambda x: xp.minimum(x, x * a)
    return None


def hardtanh(input, min_val=-1.0, max_val=1.0):
    """y = clamp(x, min_val, max_val);  dy/dx = 1 strictly inside (min_val, max_val), 0 elsewhere
    (0 at the bounds, unlike clamp's: PyTorch's hardtanh_backward)."""
    if input.dtype.kind == "b":
        raise RuntimeError("Bool inputs not supported for hardtanh")
    low, high = _number_of(min_val, input), _number_of(max_val, input)
    if input.dtype == xp.uint8 and (low < 0 or high < 0):  # (the defaults too: -1 would wrap to 255)
        raise RuntimeError("cannot do hardtanh on an unsigned type with negative limits")
    pieces = Pieces("Hardtanh", (("<=", low, flat(low)), (">=", high, flat(high))), IDENTITY,
                    lambda x: xp.clip(x, low, high))
    return piecewise_linear(input, pieces, "hardtanh", integers=True)


_ONE_SIXTH_FLOAT32 = float(numpy.float32(1 / 6))  # (PyTorch's backward kernels write it as 1.0f / 6.0f)


def _hardsigmoid_values(x):
    wide = x.astype(numpy.float32) if x.dtype == numpy.float16 else x  # (float16 in float32, rounded once)
    return (xp.clip(wide + 3.0, 0.0, 6.0) / 6.0).astype(x.dtype, copy=False)


def hardsigmoid(input):
    """y = relu6(x + 3) / 6: 0 up to -3, 1 from 3, x/6 + 1/2 between;  dy/dx = 1/6 strictly inside
    (-3, 3), 0 elsewhere, NaN included (PyTorch's hardsigmoid_backward tests -3 < x < 3: a NaN passes
    no test, so it takes the last line, of slope 0 and value NaN). Rounded as PyTorch's kernels round:
    min(max(x + 3, 0), 6) / 6, and a slope of 1/6 as a float32 constant in every dtype."""
    pieces = Pieces("Hardsigmoid", (("<=", -3.0, flat(0.0)), (">=", 3.0, flat(1.0)),
                                    ("<", 3.0, Line(_ONE_SIXTH_FLOAT32, 0.5))),
                    Line(0.0, math.nan), _hardsigmoid_values)
    return piecewise_linear(input, pieces, "hardsigmoid")


def threshold(input, threshold, value):
    """y = x where x > threshold, else value;  dy/dx = 1 where x > threshold, else 0."""
    bound, value = _number_of(threshold, input), _number_of(value, input)
    return piecewise_linear(input, Pieces("Threshold", (("<=", bound, flat(value)),), IDENTITY), "threshold",
                            integers=True)


def hardshrink(input, lambd=0.5):
    """y = x where |x| > λ, else 0;  dy/dx = 1 where |x| > λ, else 0 (0 at ±λ)."""
    lambd = _held_in(_number_of(lambd, input), input)  # (compared in x's dtype, as PyTorch's kernel)
    pieces = Pieces("Hardshrink", (("<", -lambd, IDENTITY), ("<=", lambd, flat(0.0))), IDENTITY,
                    # (NaN kept; + 0: -0.0 becomes 0, as PyTorch's; a select: 0 · ∞ would be NaN at λ = ∞)
                    lambda x: xp.where(xp.abs(x) <= lambd, xp.zeros((), x.dtype), x) + 0.0)
    return piecewise_linear(input, pieces, "hardshrink")


def softshrink(input, lambd=0.5):
    """y = x - λ above λ, x + λ below -λ, 0 between;  dy/dx = 1 where |x| > λ, else 0 (0 at ±λ).
    (PyTorch's kernel gives -0.0 between for negative x, 0 · x: the sign of zero is not kept here.)"""
    # (PyTorch's range: up to the dtype's largest finite value, both printed as C++'s streams print, %g)
    largest = float(numpy.finfo(input.dtype).max) if input.dtype.kind in "fc" else math.inf
    if not 0 <= lambd <= largest:
        raise RuntimeError(f"lambda must be in range [0, {largest:g}] for input dtype {type_name(input.dtype)}, "
                           f"but found {lambd:g}")
    lambd = _number_of(lambd, input)
    held = _held_in(lambd, input)  # PyTorch's backward compares in x's dtype, its forward in float32 for float16
    pieces = Pieces("Softshrink", (("<", -held, Line(1.0, lambd)), ("<=", held, flat(0.0))), Line(1.0, -lambd),
                    lambda x: x - xp.clip(x, -lambd, lambd))
    return piecewise_linear(input, pieces, "softshrink")


def _held_in(bound, input):
    """A bound as x's floating dtype holds it (a float16 0.3 is 0.30005), for a kernel that compares in that
    dtype where float16 values are otherwise compared in float32 here."""
    return float(xp.asarray(bound, dtype=input.dtype)) if input.dtype.kind == "f" else bound


def leaky_relu_with_slopes(input, slopes):
    """y = x for x > 0, r·x otherwise, with one slope r per element (the array ``slopes``: rrelu in
    training); dy/dx = 1 for x > 0, r otherwise. (PyTorch's kernel tests x <= 0, so NaN takes slope 1.)"""
    return piecewise_linear(input, Pieces("RreluWithNoise", (("<=", 0.0, Line(slopes)),), IDENTITY), "leaky_relu")
