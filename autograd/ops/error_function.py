"""The error function and its complements on arrays: erf, erfc and erfcx (NumPy has none of them).

    erf(x) = 2/√π ∫_0^x e^(-t²) dt,    erfc(x) = 1 - erf(x),    erfcx(x) = e^(x²) erfc(x)

W. J. Cody's rational Chebyshev approximations ("Rational Chebyshev approximations for the error
function", Math. Comp. 23, 631-637, 1969; netlib's specfun CALERF), whose relative error is below
6e-19 in exact arithmetic and a unit or two of float64 after rounding. Three intervals of y = |x|:

    y ≤ 0.46875:      erf(x) = x · R₁(x²)                        (R₁ of degree 4/4)
    0.46875 < y ≤ 4:  erfcx(y) = R₂(y)                           (degree 8/8)
    y > 4:            erfcx(y) = (1/√π - z R₃(z)) / y,  z = 1/y²   (degree 5/5: Laplace's asymptotic series)

and erfc(y) = erfcx(y) e^(-y²), with y² split as s² + (y - s)(y + s), s = y rounded down to a
sixteenth: s² is exact, so e^(-y²) keeps its digits where y² is hundreds. Negative x use
erf(-x) = -erf(x) and erfc(-y) = 2 - erfc(y).

Each interval is evaluated only on its own elements, in float64, by Horner's rule written in
place: a few dozen passes over the array, where the tabulated series this replaces gathered
thirteen coefficients for every element (GELU over 2M floats took a second; it takes tens of
milliseconds now).
"""

import math

import numpy

from ..backend import errstate, is_dense, select, xp

# R₁: erf on [0, 0.46875], in z = x²
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
      1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
# R₂: erfcx on (0.46875, 4]
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
      8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
      2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
      3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
# R₃: erfcx on (4, ∞), in z = 1/y²
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
      6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
      2.33520497626869185e-3)

_SMALL, _LARGE = 0.46875, 4.0
_ONE_OVER_ROOT_PI = 1 / math.sqrt(math.pi)


def _ratio(t, leading, top, bottom):
    """(leading t^n + top[0] t^(n-1) + ... + top[-1]) / (t^n + bottom[0] t^(n-1) + ... + bottom[-1]),
    Cody's form of his rational functions, by Horner's rule in place."""
    numerator = t * leading
    denominator = t.copy()
    for a, b in zip(top[:-1], bottom[:-1], strict=True):
        numerator += a
        numerator *= t
        denominator += b
        denominator *= t
    numerator += top[-1]
    denominator += bottom[-1]
    numerator /= denominator
    return numerator


def _erf_small(x):
    """erf(x) for |x| ≤ 0.46875."""
    return x * _ratio(x * x, _A[4], _A[:4], _B)


def _erfcx_positive(y):
    """erfcx(y) for y > 0.46875 (NaN stays NaN; ∞ gives 0)."""
    middle = _ratio(xp.minimum(y, _LARGE), _C[8], _C[:8], _D)
    far = y > _LARGE
    if not far.any():  # (the usual case)
        return middle
    t = xp.maximum(y, _LARGE)
    with errstate(divide="ignore", invalid="ignore"):
        z = 1 / (t * t)
        z *= _ratio(z, _P[5], _P[:5], _Q)
        tail = (_ONE_OVER_ROOT_PI - z) / t
    return select(far, tail, middle)


def _falling(y):
    """e^(-y²) for y ≥ 0, with y² = s² + (y - s)(y + s) and s = y rounded down to a sixteenth (s² exact)."""
    y = xp.minimum(y, 40.0)  # (e^-1600 is 0 already; ∞ would make (y - s) NaN)
    s = xp.floor(y * 16) / 16
    with errstate(under="ignore"):
        return xp.exp(-s * s) * xp.exp(-(y - s) * (y + s))


def _erfc_positive(y):
    """erfc(y) for y > 0.46875."""
    with errstate(under="ignore"):
        return _erfcx_positive(y) * _falling(y)


def _by_magnitude(x, small, beyond):
    """small(x) where |x| ≤ 0.46875, beyond(|x|, x) elsewhere (NaN counts as beyond), on float64 x. Each is
    computed over the whole array (clamped into its interval) and the results merged by their bits (``select``):
    NumPy's boolean gathers and scatters cost more than the arithmetic, and a masked copy branches per element,
    which on normal data (a GELU's) mispredicts: erf of 524,288 float32 values took 25 ms with one, 11 with this."""
    magnitude = xp.abs(x)
    near = magnitude <= _SMALL
    if near.all():
        return small(x)
    result = beyond(xp.maximum(magnitude, _SMALL), x)
    if near.any():
        result = select(near, small(xp.minimum(xp.maximum(x, -_SMALL), _SMALL)), result)
    return result


_BLOCK = 16384  # elements: a block's float64 temporaries stay in the CPU's cache through the dozens of passes


def in_memory_order(x, *others):
    """x's elements as a 1-d array in x's memory order, ``others`` (of x's shape) flattened in the same order, and
    a function laying a 1-d result out as x. A dense input in another layout (channels_last, a transpose) is read in
    its memory order, and the result is laid out as it, as PyTorch's unary kernels lay theirs out (a reshape would
    copy it row-major); an array in another layout than x's is copied into x's order."""
    x = xp.asarray(x)
    if x.ndim > 1 and not x.flags.c_contiguous and is_dense(x):
        order = sorted(range(x.ndim), key=lambda dim: -x.strides[dim])  # (the outermost first)
        in_memory = x.transpose(order)
        if in_memory.flags.c_contiguous:
            inverse = numpy.argsort(order)
            return ((in_memory.reshape(-1),) + tuple(xp.asarray(a).transpose(order).reshape(-1) for a in others)
                    + (lambda flat: flat.reshape(in_memory.shape).transpose(inverse),))
    # (1-d: NumPy's arithmetic on a 0-d array gives scalars, which copyto cannot write)
    return (x.reshape(-1),) + tuple(xp.asarray(a).reshape(-1) for a in others) + (lambda flat: flat.reshape(x.shape),)


def _in_blocks(evaluate, x, dtype):
    """evaluate(float64 block) over x, block by block (``blockwise``), into an array of ``dtype`` laid out as x. A
    block at a time is over three times quicker on large arrays than whole-array passes, each of which would go
    out to memory and back."""
    flat, laid_out = in_memory_order(x)

    def kernel(block, out):
        out[...] = evaluate(block.astype(numpy.float64))  # (rounded into dtype as astype rounds)

    out, = blockwise(kernel, (flat,), (xp.empty(flat.shape, dtype),), ())
    return laid_out(out)


def blockwise(kernel, inputs, outputs, scratch):
    """kernel(*input_blocks, *output_blocks, *scratch_blocks) over 1-d arrays of one size, block by block, each
    output block written in place: every pass of a block's evaluation stays in the CPU's cache, and the
    ``scratch`` dtypes' buffers are allocated once, where whole-array passes would each go out to memory and
    back, into a new array whose pages the system maps afresh. (A GPU's block is the whole array.)"""
    size = inputs[0].size
    step = max(1, size if xp is not numpy else min(size, _BLOCK))
    buffers = [xp.empty(step, dtype) for dtype in scratch]
    for start in range(0, size, step):
        stop = min(start + step, size)
        kernel(*(a[start:stop] for a in inputs), *(a[start:stop] for a in outputs),
               *(b[:stop - start] for b in buffers))
    return outputs


def _erf_beyond(magnitude, x):
    """erf(x) = ±(1 - erfcx(y) e^(-y²)) for y = |x| > 0.46875. Here e^(-y²) needs no split of y²: its rounding,
    y² · 2^-53 relative, is negligible beside 1 at every y where erfc(y) is not."""
    with errstate(under="ignore"):
        complement = _erfcx_positive(magnitude)
        complement *= xp.exp(-magnitude * magnitude)
    return xp.copysign(1 - complement, x)


def _erf(x):
    return _by_magnitude(x, _erf_small, _erf_beyond)


def erf(x):
    """erf of an array, in x's dtype where it is floating (float64 otherwise). erf(-0.0) is -0.0, as PyTorch's."""
    return _in_blocks(_erf, x, x.dtype if x.dtype.kind == "f" else numpy.float64)


def _erfc_beyond(magnitude, x):
    upper = _erfc_positive(magnitude)
    return xp.where(x < 0, 2 - upper, upper)


def _erfc(x):
    return _by_magnitude(x, lambda x: 1 - _erf_small(x), _erfc_beyond)


def erfc(x):
    """erfc of an array (float64), without the cancellation of 1 - erf(x): erfc(10) is 2.09e-45, not 0."""
    return _in_blocks(_erfc, x, numpy.float64)


def _erfcx(y):
    return _by_magnitude(y, lambda y: xp.exp(y * y) * (1 - _erf_small(y)), lambda magnitude, y: _erfcx_positive(y))


def erfcx_nonnegative(y):
    """erfcx(y) for y ≥ 0 (float64): below 0.46875 as e^(y²) (1 - erf(y)), where erf is below a half."""
    return _in_blocks(_erfcx, y, numpy.float64)


# S(y) = ln(erfc(y)) / y on [0, 4], in u = y/2 - 1: a polynomial of degree 13 (a Chebyshev fit, reweighted towards
# the least largest relative error: 4.2e-10, against float32's half unit of 3e-8 at the least)
_LOG_ERFC_OVER_Y = (-2.682470632831819, -1.7356901606080521, -0.11181145186344482, 0.04595064171930092,
                    -0.017385989932266206, 0.00567007178794021, -0.0013304048211411784, -1.9541385872292325e-06,
                    0.00022012477872357204, -0.0001597804999321918, 0.00012379868361106502, -6.581711689900962e-05,
                    -7.315393005567342e-06, 1.4294098057656198e-05)


def _erf_for_float32(x, erf, magnitude, u):
    """erf(x) = sign(x) (1 - erfc(y)) = -sign(x) expm1(y S(y)), y = |x| up to 4, in float64: one polynomial over
    the whole range (no intervals to merge) good to 4.2e-10 relative, expm1 keeping it near 0 (erf(y) ≈ 2y/√π).
    Written into ``erf`` (float64, x's size) without its sign, which ``_rounded_with_sign`` gives it in float32 (a
    third of the time of a float64 copysign reading float32 x; rounding is the same either side of 0), with
    ``magnitude`` and ``u`` float64 scratch of its size."""
    xp.abs(x, out=magnitude)
    xp.minimum(magnitude, 4.0, out=magnitude)  # (erf(4) rounds to float32's 1; NaN stays NaN)
    xp.multiply(magnitude, 0.5, out=u)
    u -= 1
    xp.multiply(u, _LOG_ERFC_OVER_Y[-1], out=erf)
    for coefficient in _LOG_ERFC_OVER_Y[-2:0:-1]:
        erf += coefficient
        erf *= u
    erf += _LOG_ERFC_OVER_Y[0]
    erf *= magnitude
    return xp.expm1(erf, out=erf)


def _rounded_with_sign(erf, x, out):
    """The float64 ``erf`` of ``_erf_for_float32`` rounded into float32 ``out`` with x's sign: |expm1(y S(y))| =
    1 - erfc(y) (erf(-0.0) is -0.0)."""
    xp.copyto(out, erf, casting="same_kind")
    xp.copysign(out, x, out=out)


def _erf_float32_block(x, out, erf, magnitude, u):
    _rounded_with_sign(_erf_for_float32(x, erf, magnitude, u), x, out)


def erf_float32(x):
    """erf of a float32 array, in float32, within one unit in the last place of the correctly rounded erf (checked
    over every float32): a third of the passes of ``erf``'s float64 evaluation, which GELU's costs were."""
    flat, laid_out = in_memory_order(x)
    out, = blockwise(_erf_float32_block, (flat,), (xp.empty(flat.shape, numpy.float32),), (numpy.float64,) * 3)
    return laid_out(out)


_SQRT_HALF = numpy.float32(math.sqrt(0.5))


def _normal_cdf_float32_block(x, cdf, scaled, erf, magnitude, u):
    xp.multiply(x, _SQRT_HALF, out=scaled)
    _rounded_with_sign(_erf_for_float32(scaled, erf, magnitude, u), scaled, cdf)
    cdf += 1  # (erf rounded to float32, then 1 + erf and its half in float32)
    cdf *= 0.5


def _gelu_float32_block(x, gelu, cdf, scaled, erf, magnitude, u):
    _normal_cdf_float32_block(x, cdf, scaled, erf, magnitude, u)
    xp.multiply(cdf, x, out=gelu)


_CDF_SCRATCH = (numpy.float32,) + (numpy.float64,) * 3


def normal_cdf_float32(x):
    """Φ(x) = (1 + erf(x/√2)) / 2 of a float32 array, laid out as x: x/√2 and 1 + erf then its half in float32,
    erf by ``erf_float32``'s polynomial, all in one pass of blocks."""
    flat, laid_out = in_memory_order(x)
    cdf, = blockwise(_normal_cdf_float32_block, (flat,), (xp.empty(flat.shape, numpy.float32),), _CDF_SCRATCH)
    return laid_out(cdf)


def gelu_float32(x):
    """(x Φ(x), Φ(x)) of a float32 array, laid out as x, Φ as ``normal_cdf_float32`` and the product in the same
    blocks: GELU's forward, 524,288 values in one pass of 32 blocks."""
    flat, laid_out = in_memory_order(x)
    gelu, cdf = blockwise(_gelu_float32_block, (flat,), (xp.empty(flat.shape, numpy.float32),
                                                          xp.empty(flat.shape, numpy.float32)), _CDF_SCRATCH)
    return laid_out(gelu), laid_out(cdf)
