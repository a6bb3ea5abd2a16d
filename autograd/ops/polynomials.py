"""The classical orthogonal polynomials of ``special`` (PyTorch's ``special.*_polynomial_*``):
Chebyshev T, U, V, W and their shifted forms (x → 2x - 1), physicists' and probabilists'
Hermite H and He, Laguerre L, Legendre P, each of a degree n given per element.

All follow three-term recurrences,

    T, U, V, W:  p_{k+1} = 2x p_k - p_{k-1}      (p_1 = x, 2x, 2x - 1, 2x + 1)
    H:  H_{k+1} = 2x H_k - 2k H_{k-1}            He:  He_{k+1} = x He_k - k He_{k-1}
    L:  (k+1) L_{k+1} = (2k + 1 - x) L_k - k L_{k-1}      P:  (k+1) P_{k+1} = (2k+1) x P_k - k P_{k-1}

with p_0 = 1. For |x| < 1 and high degree the Chebyshev families use their trigonometric forms
(T_n(cos θ) = cos nθ, U_n = sin (n+1)θ / sin θ, V_n = cos (n+½)θ / cos (θ/2),
W_n = sin (n+½)θ / sin (θ/2)), and x = ±1 their closed values, element by element as PyTorch
chooses. The degree is truncated to an integer; a negative one gives 0, and H, He above degree
512 give NaN (PyTorch's limits). As in PyTorch these have no gradient: the result never requires grad.
"""

from ..backend import errstate, xp
from ..operands import _operand
from ..tensor import Tensor
from .conversion import refuse_half_and_complex
from .elementwise import floating, promote
from .outputs import write_out


def _operands(name, input, n):
    if not isinstance(input, Tensor) and not isinstance(n, Tensor):
        raise TypeError(f"special_{name}() received an invalid combination of arguments - got "
                        f"({type(input).__name__}, {type(n).__name__}): one of x and n must be a Tensor")
    x, n = (input, _operand(n, input)) if isinstance(input, Tensor) else (_operand(input, n), n)
    x, n = promote(x, n)
    x, n = floating(x.detach()), n.detach()
    refuse_half_and_complex(x, f"{name}_cpu")
    shape = xp.broadcast_shapes(x.shape, n.shape)
    values = xp.broadcast_to(x._data, shape).astype(x.dtype)
    degrees = xp.broadcast_to(n._data, shape)
    if degrees.dtype.kind == "f":  # (NaN, ±∞ and degrees past int64: -1, as PyTorch's cast leaves them)
        finite = xp.isfinite(degrees) & (xp.abs(degrees) < 2.0**63)
        degrees = xp.where(finite, degrees, -1).astype(xp.int64)
    return values, degrees.astype(xp.int64), x.dtype


def _recurrence(x, n, first, step, needed=None, saturates=False):
    """p_n(x) per element from p_0 = 1, p_1 = first, p_{k+1} = step(k, p_k, p_{k-1}), climbed only where
    ``needed`` (all elements if None). ``saturates``: the step is 2x p_k - p_{k-1} (Chebyshev's), whose value
    once two in a row are infinite is NaN for good, so that an element stops climbing there (T_n(2) for
    n = 10^18 would take 10^18 steps)."""
    shape = x.shape  # (the elements still climbing are tracked by flat index)
    x, n, first = x.reshape(-1), n.reshape(-1), xp.broadcast_to(first, shape).reshape(-1)
    before, last = xp.ones_like(x), first.copy()
    result = xp.where(n == 0, 1.0, first)
    climbing = n >= 2
    active = xp.flatnonzero(climbing if needed is None else climbing & needed.reshape(-1))
    top = int(n[active].max()) if active.size else 0
    for k in range(1, top):
        if not active.size:
            break
        with errstate(over="ignore", invalid="ignore"):  # (past float64's range: ±∞ or NaN, as PyTorch)
            after = step(k, x[active], last[active], before[active])
        before[active], last[active] = last[active], after
        done = n[active] == k + 1
        result[active[done]] = after[done]
        if saturates:
            lost = ~done & ~xp.isfinite(after) & ~xp.isfinite(before[active])
            result[active[lost]] = xp.nan
            done |= lost
        active = active[~done]
    return result.reshape(shape)


def _finish(result, n, dtype, out):
    return write_out(Tensor._make(xp.where(n < 0, 0.0, result).astype(dtype)), out)


def _chebyshev(x, n, kind, trig_above):
    """T, U, V or W of degree n at x (float64 arrays); the trigonometric form for |x| < 1 and
    n > ``trig_above``."""
    odd = n % 2 == 1
    first = {"t": x, "u": 2 * x, "v": 2 * x - 1, "w": 2 * x + 1}[kind]
    climbed = ~(((n > trig_above) & (xp.abs(x) < 1)) | (xp.abs(x) == 1))  # (the others have closed forms)
    result = _recurrence(x, n, first, lambda k, x, last, before: 2 * x * last - before, climbed, saturates=True)
    with errstate(divide="ignore", invalid="ignore"):
        theta = xp.arccos(xp.clip(x, -1, 1))
        inside = xp.abs(x) < 1
        if kind == "t":
            result = xp.where((n > trig_above) & inside, xp.cos(n * theta), result)
            edge = xp.where((x > 0) | ~odd, 1.0, -1.0)
        elif kind == "u":
            trig = xp.where(xp.sin(theta) != 0, xp.sin((n + 1) * theta) / xp.sin(theta),
                            (n + 1) * xp.cos((n + 1) * theta) / x)
            result = xp.where((n > trig_above) & inside, trig, result)
            edge = xp.where((x > 0) | ~odd, n + 1.0, -(n + 1.0))
        elif kind == "v":
            at_edge = xp.where(odd, -(2 * n + 1.0), 2 * n + 1.0)
            trig = xp.where(xp.sin(theta / 2) != 1, xp.cos((n + 0.5) * theta) / xp.cos(theta / 2), at_edge)
            result = xp.where((n > trig_above) & inside, trig, result)
            edge = xp.where(x > 0, 1.0, at_edge)
        else:
            at_edge = xp.where(x > 0, 2 * n + 1.0, xp.where(odd, -1.0, 1.0))
            trig = xp.where(xp.cos(theta / 2) != 1, xp.sin((n + 0.5) * theta) / xp.sin(theta / 2), at_edge)
            result = xp.where((n > trig_above) & inside, trig, result)
            edge = at_edge
    return xp.where(xp.abs(x) == 1, edge, result)


def _chebyshev_function(kind, shifted):
    name = f"{'shifted_' if shifted else ''}chebyshev_polynomial_{kind}"

    def polynomial(x, n, *, out=None):
        x, degrees, dtype = _operands(name, x, n)
        x = x.astype(xp.float64)
        # (the degree past which PyTorch switches to the trigonometric form: its choice, kept, since
        # the two differ in the last bits)
        trig_above = (4 if kind == "w" else 6) if shifted else (6 if kind == "t" else 8)
        return _finish(_chebyshev(2 * x - 1 if shifted else x, degrees, kind, trig_above), degrees, dtype, out)

    polynomial.__name__ = polynomial.__qualname__ = name
    ordinal = dict(t="first", u="second", v="third", w="fourth")[kind]
    formula = f"{kind.upper()}*_n(x) = {kind.upper()}_n(2x - 1)" if shifted else f"{kind.upper()}_n(x)"
    polynomial.__doc__ = (f"The {'shifted ' if shifted else ''}Chebyshev polynomial of the {ordinal} kind, "
                          f"{formula} (no gradient).")
    return polynomial


chebyshev_polynomial_t, chebyshev_polynomial_u, chebyshev_polynomial_v, chebyshev_polynomial_w = (
    _chebyshev_function(kind, False) for kind in "tuvw")
(shifted_chebyshev_polynomial_t, shifted_chebyshev_polynomial_u, shifted_chebyshev_polynomial_v,
 shifted_chebyshev_polynomial_w) = (_chebyshev_function(kind, True) for kind in "tuvw")

_HERMITE_LIMIT = 512  # PyTorch's: NaN above this degree


def hermite_polynomial_h(x, n, *, out=None):
    """The physicists' Hermite polynomial H_n(x) (no gradient)."""
    x, degrees, dtype = _operands("hermite_polynomial_h", x, n)
    x = x.astype(xp.float64)
    result = _recurrence(x, xp.minimum(degrees, _HERMITE_LIMIT), 2 * x,
                         lambda k, x, last, before: 2 * x * last - 2 * k * before)
    return _finish(xp.where(degrees > _HERMITE_LIMIT, xp.nan, result), degrees, dtype, out)


def hermite_polynomial_he(x, n, *, out=None):
    """The probabilists' Hermite polynomial He_n(x) (no gradient)."""
    x, degrees, dtype = _operands("hermite_polynomial_he", x, n)
    x = x.astype(xp.float64)
    result = _recurrence(x, xp.minimum(degrees, _HERMITE_LIMIT), x.copy(),
                         lambda k, x, last, before: x * last - k * before)
    return _finish(xp.where(degrees > _HERMITE_LIMIT, xp.nan, result), degrees, dtype, out)


def laguerre_polynomial_l(x, n, *, out=None):
    """The Laguerre polynomial L_n(x) (no gradient; 1 at x = 0)."""
    x, degrees, dtype = _operands("laguerre_polynomial_l", x, n)
    x = x.astype(xp.float64)
    result = _recurrence(x, degrees, 1 - x, lambda k, x, last, before: ((2 * k + 1 - x) * last - k * before) / (k + 1))
    return _finish(xp.where(x == 0, 1.0, result), degrees, dtype, out)


def legendre_polynomial_p(x, n, *, out=None):
    """The Legendre polynomial P_n(x) (no gradient)."""
    x, degrees, dtype = _operands("legendre_polynomial_p", x, n)
    x = x.astype(xp.float64)
    result = _recurrence(x, degrees, x.copy(),
                         lambda k, x, last, before: ((2 * k + 1) * x * last - k * before) / (k + 1))
    edge = xp.where((x > 0) | (degrees % 2 == 0), 1.0, -1.0)
    return _finish(xp.where(xp.abs(x) == 1, edge, result), degrees, dtype, out)
