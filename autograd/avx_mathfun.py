"""float32 logarithm, sine and cosine as PyTorch's vectorised CPU kernels compute them: the Cephes polynomials of
the ``avx_mathfun.h`` header PyTorch vendors (``log256_ps``, ``sincos256_ps``), the arithmetic an AVX2 kernel does,
step for step, in float32. Its compiler fuses a product into the following sum or difference (one fused
multiply-add, rounded once) where the header writes them apart; the places it fuses are the ones that give
PyTorch's numbers, which ``randn``'s Box-Muller transform reads (its blocks of 16 float32 values: mersenne.py).

NumPy's float32 ``log``, ``sin`` and ``cos`` are other approximations: one draw of ``randn`` in seven was an ulp
off PyTorch's through them; through these, none in 160,000.

A fused multiply-add is computed a precision up: float32's product is exact in float64 and the sum is rounded to
float64, then to float32 (the second rounding differs from a single one only at float32 ties, about once in 2^29).
"""

import numpy

_FLOAT32 = numpy.float32

# log: the exponent and mantissa split, then Cephes' rational approximation on [sqrt(1/2), sqrt(2))
_SQRT_HALF = _FLOAT32(0.707106781186547524)
_LOG_P = tuple(_FLOAT32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                                    1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                                    3.3333331174e-1))
_LOG_Q1, _LOG_Q2 = _FLOAT32(-2.12194440e-4), _FLOAT32(0.693359375)  # ln 2 = Q2 - Q1, split for exactness
_MIN_NORMAL = numpy.array(0x00800000, numpy.uint32).view(_FLOAT32)  # (subnormal inputs are raised to it)

# sin and cos: reduction by multiples of pi/4 (pi/4 = DP1 + DP2 + DP3), then one polynomial of each
_FOUR_OVER_PI = _FLOAT32(1.27323954473516)
_MINUS_DP = tuple(_FLOAT32(-c) for c in (0.78515625, 2.4187564849853515625e-4, 3.77489497744594108e-8))
_SIN_P = tuple(_FLOAT32(c) for c in (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1))
_COS_P = tuple(_FLOAT32(c) for c in (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2))
_SIGN_BIT = numpy.uint32(0x80000000)


def _fused(a, b, c):
    """a · b + c for float32 operands, rounded once (through float64, where the product is exact)."""
    return (numpy.multiply(a, b, dtype=numpy.float64) + c).astype(_FLOAT32)


def _horner(coefficients, x):
    """c0 · x^(n-1) + ... + c(n-1), each step one fused multiply-add."""
    y = numpy.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        y = _fused(y, x, c)
    return y


def log(x):
    """ln x of a float32 array as PyTorch's ``log256_ps``: NaN for x <= 0 (-inf is not given for 0)."""
    x = numpy.asarray(x, _FLOAT32)
    invalid = x <= 0
    bits = numpy.maximum(x, _MIN_NORMAL).view(numpy.uint32)
    e = ((bits >> 23).astype(numpy.int32) - 0x7F).astype(_FLOAT32) + _FLOAT32(1)
    m = ((bits & numpy.uint32(0x807FFFFF)) | numpy.uint32(0x3F000000)).view(_FLOAT32)  # the mantissa in [1/2, 1)
    below = m < _SQRT_HALF  # m and e rescaled so that m lies in [sqrt(1/2), sqrt(2)): m - 1 near 0
    e = e - below.astype(_FLOAT32)
    m = (m - _FLOAT32(1)) + numpy.where(below, m, _FLOAT32(0))
    z = m * m
    y = _horner(_LOG_P, m) * m
    y = _fused(y, z, e * _LOG_Q1)  # (the compiler fuses y · z into the sum, e · Q1 rounded first)
    y = _fused(-z, _FLOAT32(0.5), y)
    y = _fused(e, _LOG_Q2, m + y)
    return numpy.where(invalid, _FLOAT32(numpy.nan), y)


def sincos(x):
    """(sin x, cos x) of a float32 array as PyTorch's ``sincos256_ps``."""
    x = numpy.asarray(x, _FLOAT32)
    sign_of_sin = x.view(numpy.uint32) & _SIGN_BIT
    x = numpy.abs(x)
    octant = ((x * _FOUR_OVER_PI).astype(numpy.int32) + 1) & ~1  # (truncated, rounded up to even: Cephes' j)
    y = octant.astype(_FLOAT32)
    for dp in _MINUS_DP:  # x - j · pi/4 in three parts ("extended precision modular arithmetic")
        x = _fused(y, dp, x)
    sign_of_sin = sign_of_sin ^ ((octant & 4) << 29).astype(numpy.uint32)
    sign_of_cos = ((~(octant - 2) & 4) << 29).astype(numpy.uint32)
    z = x * x
    near_cos = _horner(_COS_P, z) * z
    near_cos = _fused(near_cos, z, -(z * _FLOAT32(0.5))) + _FLOAT32(1)  # (y · z fused, z / 2 rounded first)
    near_sin = _fused(_horner(_SIN_P, z) * z, x, x)
    swapped = (octant & 2) != 0  # octants where sin takes the cosine's polynomial and cos the sine's
    sin = numpy.where(swapped, near_cos, near_sin).view(numpy.uint32) ^ sign_of_sin
    cos = numpy.where(swapped, near_sin, near_cos).view(numpy.uint32) ^ sign_of_cos
    return sin.view(_FLOAT32), cos.view(_FLOAT32)
