"""Running sums, products and extrema along a dim, the product reduction, and diff (the
inverse of a running sum).

A running sum's derivative is the running sum taken backwards:

    y_i = Σ_{j≤i} x_j          dL/dx_k = Σ_{i≥k} dL/dy_i

Products divide by x_k in the textbook derivative (Π_{j≠k} x_j = y / x_k); where x holds
zeros the division is replaced by the exact product over the other elements.
"""


import math

from ..backend import accumulate, constant, errstate, float16, float32, float64, int64, xp
from ..graph import modes
from ..index_watching import watch_returned_indices
from ..primitive import Primitive, named_node, node_named
from ..return_types import return_type
from ..tensor import Tensor
from . import joins, shape
from .arranging import Flip
from .axes import dim_index, normalize_dims
from .conversion import refuse_kinds, type_name
from .elementwise import row_major
from .indexing import Gather
from .names import names, refusing_none
from .outputs import accumulate_dtype, check_pair_out_dtypes, write_out
from .reductions import spread
from .splitting import narrow, select


def _accumulating_dtype(x, dtype):
    """PyTorch's result dtype of a sum or product: integers and bools accumulate in int64."""
    if dtype is not None:
        return x.to(dtype) if x.dtype != dtype else x
    return x.to(int64) if x.dtype.kind in "biu" and x.dtype != int64 else x


def _along(x, dim, dtype):
    x = _accumulating_dtype(x, dtype)
    return x, dim_index(dim, x.ndim)


def _reversed(function, x, axis):
    return xp.flip(function(xp.flip(x, axis), axis=axis), axis)


WIDER = {float16: float32, float32: float64}  # what a running sum of float16 and float32 is kept in


def _from_zero(total, dtype):
    """A real running sum (or log-sum-exp) in ``dtype`` as PyTorch's kernels begin it, from +0 (or -inf): a
    leading run of -0 sums to +0 there, where NumPy's starts from the first element, -0. Adding +0 changes that
    sign and nothing else; it is the cast back from the wider dtype the sum was kept in (or in place: one pass)."""
    zero = constant(0, dtype)  # (a 0-d array: NumPy would convert a Python 0.0 again at every call)
    return xp.add(total, zero, out=total) if total.dtype == dtype else xp.add(total, zero, dtype=dtype)


class CumSum(Primitive):
    """y_i = Σ_{j≤i} x_j along dim (or Σ_{j≥i} when reverse);   dL/dx = the running sum of dL/dy the other way"""

    pytorch_name = "CumsumBackward0"
    saves_inputs = False  # backward needs no input's values
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        if x.ndim == 0:
            return x.copy()
        x = row_major(x)  # (PyTorch's result is contiguous whatever x's layout: a transpose's)

        def cumsum(a, axis):  # (NumPy's own dtype would sum int32 in int64.) float16 sums in float32 and float32 in
            # float64, as PyTorch's CPU kernel accumulates: a running sum in the input's dtype loses its terms'
            # low bits once it outgrows them (float32 over 10⁵ terms: 3e-6 off; PyTorch's 4e-8)
            total = xp.cumsum(a, axis=axis, dtype=WIDER.get(a.dtype, a.dtype))
            return _from_zero(total, a.dtype) if a.dtype.kind == "f" else total.astype(a.dtype, copy=False)

        return _reversed(cumsum, x, self.dim) if self.reverse else cumsum(x, self.dim)

    def backward(self, grad, y, x):
        return (CumSum.apply(grad, dim=self.dim, reverse=not self.reverse),)


@names("cumsum", inplace="cumsum_")
def cumsum(input, dim, *, dtype=None, out=None):
    """y_i = x_0 + ... + x_i along dim (integers and bools sum in int64, as PyTorch)."""
    x, axis = _along(input, dim, accumulate_dtype(dtype, out))
    return write_out(CumSum.apply(x, dim=axis, reverse=False), out, dtype=dtype)


class CumProd(Primitive):
    """y_i = Π_{j≤i} x_j along dim;   dL/dx_k = Σ_{i≥k} dL/dy_i · Π_{j≤i, j≠k} x_j

    Without zeros, Π_{j≤i, j≠k} x_j = y_i / x_k. Where x holds zeros or small values, see _product_gradient.
    Complex x takes the products' conjugates (PyTorch's convention for a holomorphic y).
    """

    pytorch_name = "CumprodBackward0"
    saves_output = True
    handles_complex = True

    def forward(self, x):
        if x.ndim == 0:
            return x.copy()
        # float16 multiplied in float32 and float32 in float64, as PyTorch's CPU kernel accumulates (cumsum's
        # rule): a float32 running product of a diffusion schedule's 1000 alphas drifted from PyTorch's by 1e-6;
        # contiguous whatever x's layout, as PyTorch's
        return xp.cumprod(row_major(x), axis=self.dim, dtype=WIDER.get(x.dtype, x.dtype)).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        if x.ndim == 0 or x.shape[self.dim] == 1:  # (y = x: dL/dy itself, its zeros' signs kept, as PyTorch's)
            return (grad,)
        # y_i / x_k unless some x_k is small (or 0): as Prod's, the second derivative of the division
        # subtracts two terms of size 1/x_k that cancel badly (x = 1e-92 gave 3.6e75 for 0)
        division_is_exact = x._data.size == 0 or xp.abs(x._data).min() >= xp.sqrt(xp.finfo(x.dtype).eps) and (
            y._data != 0).all()
        if x.is_complex():
            x, y = x.conj(), y.conj()
        if division_is_exact:
            return (CumSum.apply(grad * y, dim=self.dim, reverse=True) / x,)
        if not (modes.grad_enabled or self.apply_replaced) and (x._data == 0).any():  # (no create_graph)
            return (_gradient_at_zeros(grad, x, y, self.dim),)
        return (_product_gradient(grad, x, self.dim),)


def _gradient_at_zeros(grad, x, y, d):
    """CumProd's first derivative where x holds zeros, as PyTorch's cumprod_backward takes it (its masks, in one
    pass), so the signs of its zeros are PyTorch's too. With z the first zero along d:

        k < z:  dL/dx_k = Σ_{k≤i<z} y_i dL/dy_i / x_k
        k = z:  dL/dx_z = y_{z-1} Σ_{z≤i<z'} dL/dy_i Π_{z<j≤i} x_j    (z' the next zero; y_{-1} = 1)
        k > z:  dL/dx_k = +0: every y_i after k holds x_z, so Π_{j≤i, j≠k} x_j is 0

    Not differentiable again (create_graph takes _product_gradient, as PyTorch takes another formula there)."""
    g, values, outputs = grad._data, x._data, y._data
    zeros = values == 0
    count = xp.cumsum(zeros, axis=d)  # the zeros up to each element
    before, between = count == 0, count == 1
    first = zeros & between
    running = CumSum.apply(Tensor._make(xp.where(before, outputs * g, 0)), dim=d, reverse=True)._data
    with errstate(divide="ignore", invalid="ignore"):
        result = xp.where(before, running / xp.where(before, values, 1), 0).astype(g.dtype, copy=False)
    after_first = CumProd.apply(Tensor._make(xp.where(between & ~first, values, 1)), dim=d)._data
    total = (after_first * xp.where(between, g, 0)).sum(axis=d, keepdims=True)
    z = xp.argmax(zeros, axis=d, keepdims=True)
    prior = xp.where(z == 0, 1, xp.take_along_axis(outputs, xp.maximum(z - 1, 0), axis=d))
    return Tensor._make(xp.where(first, total * prior, result).astype(g.dtype, copy=False))


def _product_gradient(grad, x, d):
    """CumProd's gradient by products alone, no division, so exact where x holds zeros, and so is
    every derivative of it (a gradient that is 0 after a zero still changes with that zero):

        dL/dx_k = (Π_{j<k} x_j) · S_k,   S_k = Σ_{i≥k} dL/dy_i Π_{k<j≤i} x_j = dL/dy_k + x_{k+1} S_{k+1}

    The recurrence takes one step per element along dim: only where x holds a zero."""
    n = x.shape[d]
    one = Tensor._make(xp.ones(x.shape[:d] + (1,) + x.shape[d + 1:], dtype=x.dtype))
    before = CumProd.apply(joins.cat([one, narrow(x, d, 0, n - 1)], d), dim=d)
    s = [select(grad, d, n - 1)]
    for k in range(n - 2, -1, -1):
        s.append(select(grad, d, k) + select(x, d, k + 1) * s[-1])
    return before * joins.stack(s[::-1], d)


@names("cumprod", inplace="cumprod_")
def cumprod(input, dim, *, dtype=None, out=None):
    """y_i = x_0 · ... · x_i along dim; its gradient is exact where x holds zeros."""
    x, axis = _along(input, dim, accumulate_dtype(dtype, out))
    return write_out(CumProd.apply(x, dim=axis), out, dtype=dtype)


def _product_of_others(x, axes):
    """Π_{j≠k} x_j over axes, for every k: the product before k times the product after it
    (running products, so exact with zeros, and differentiable again)."""
    kept = [d for d in range(x.ndim) if d not in axes]
    moved = shape.permute(x, kept + list(axes))
    flat = shape.reshape(moved, (*moved.shape[:len(kept)], -1))
    one = Tensor._make(xp.ones((*flat.shape[:-1], 1), dtype=x.dtype))
    before = CumProd.apply(joins.cat([one, flat[..., :-1]], -1), dim=flat.ndim - 1)
    after = Flip.apply(CumProd.apply(Flip.apply(joins.cat([flat[..., 1:], one], -1), dims=(flat.ndim - 1,)),
                                     dim=flat.ndim - 1), dims=(flat.ndim - 1,))
    others = shape.reshape(before * after, moved.shape)
    order = kept + list(axes)
    return shape.permute(others, [order.index(d) for d in range(x.ndim)])


class Prod(Primitive):
    """y = Π_i x_i over axes;   dL/dx_k = dL/dy · Π_{i≠k} x_i

    That is y / x_k without zeros; where x holds zeros, the product of the others is formed
    from running products before and after k instead. Complex x takes the conjugates, as CumProd.
    """

    saves_output = True
    handles_complex = True
    every_element = False  # prod() (PyTorch's ProdBackward0), not prod(dim)

    def forward(self, x):
        # (NumPy's: int32 to int64; row-major, as PyTorch's reductions allocate their result)
        return row_major(xp.prod(x, axis=self.axes, keepdims=self.keepdim, dtype=x.dtype))

    def backward(self, grad, y, x):
        grad = spread(grad, x, self.axes, self.keepdim)
        if x.ndim == 0:
            return (grad,)
        if x._data.size == 0:
            return (Tensor._make(xp.zeros(x.shape, dtype=grad.dtype)),)
        # y / x_k is the product of the others unless y underflows or x_k is small (or 0): then
        # the running products are exact where the division is not. (Small, not only tiny: the
        # second derivative of y / x_k subtracts two terms of size 1/x_k, which cancel badly.)
        division_is_exact = xp.abs(x._data).min() >= xp.sqrt(xp.finfo(x.dtype).eps) and (y._data != 0).all()
        if x.is_complex():
            x, y = x.conj(), y.conj()
        if division_is_exact:  # (dL/dy · (y / x), in PyTorch's order: its roundings)
            return (grad * (spread(y, x, self.axes, self.keepdim) / x),)
        if self.every_element and not (modes.grad_enabled or self.apply_replaced) and (x._data == 0).sum() > 1:
            # two zeros leave every product of the others 0: PyTorch's first derivative is +0 throughout (whatever
            # dL/dy), not the signed zeros of the products (create_graph keeps them: their derivatives are not 0)
            return (Tensor._make(xp.zeros(x.shape, dtype=grad.dtype)),)
        return (grad * _product_of_others(x, self.axes),)


@names("prod")
@refusing_none("dim")
def prod(input, dim=None, keepdim=False, *, dtype=None, out=None):
    """y = the product of input's elements (over dim); exact gradient where input holds zeros."""
    if isinstance(dim, (tuple, list)):  # (PyTorch's prod takes one dim, unlike sum)
        raise TypeError(f"prod() received an invalid combination of arguments - got (Tensor, {type(dim).__name__}), "
                        "but expected one of: (Tensor input, *, torch.dtype dtype = None) or (Tensor input, int dim, "
                        "bool keepdim = False, *, torch.dtype dtype = None, Tensor out = None)")
    x = _accumulating_dtype(input, accumulate_dtype(dtype, out))
    axes = normalize_dims(dim, x.ndim)
    if dim is None:
        return write_out(Prod.apply(x, axes=axes, keepdim=False, every_element=True), out, dtype=dtype)
    return write_out(Prod.apply(x, axes=axes, keepdim=keepdim, pytorch_name="ProdBackward1"), out, dtype=dtype)


CumMaxResult = return_type("cummax", ["values", "indices"])
CumMinResult = return_type("cummin", ["values", "indices"])


def _running_extremum(x, dim, running, result):
    """(values, indices) of the running max/min; the index is the latest position holding the
    running extremum (as PyTorch's), and the values are x gathered there (so gradients flow)."""
    axis = dim_index(dim, x.ndim)
    if x.ndim == 0:
        return result(*watch_returned_indices(x.clone(), Tensor._make(xp.zeros((), dtype=int64))))
    data = row_major(x._data)  # (the indices, so the values gathered by them: contiguous, as PyTorch's)
    extremum = accumulate(running, data, axis)
    positions = xp.arange(data.shape[axis]).reshape((-1,) + (1,) * (data.ndim - axis - 1))
    attained = (data == extremum) | (xp.isnan(data) if data.dtype.kind == "f" else False)
    indices = accumulate(xp.maximum, xp.where(attained, positions, 0), axis).astype(int64)
    # (PyTorch's CummaxBackward0 saves the input too: writing it refuses the backward)
    values = named_node(Gather.apply(x, dim=axis, index=indices), None, None, saves=(x,))
    return result(*watch_returned_indices(values, Tensor._make(indices)))


def _check_extremum_out(input, out):
    """PyTorch's cummax and cummin write into out tensors of the input's dtype and int64 only."""
    check_pair_out_dtypes(input, out, lambda which, expected, got: f"expected scalar_type {type_name(expected)} but "
                                                                    f"found {type_name(got)}")


@names("cummax")
@node_named("CummaxBackward0")
def cummax(input, dim, *, out=None):
    """(values, indices): the largest element so far along dim, and where it is."""
    refuse_kinds(input, "cummax_cpu", "c")
    _check_extremum_out(input, out)
    return write_out(_running_extremum(input, dim, xp.maximum, CumMaxResult), out)


@names("cummin")
def cummin(input, dim, *, out=None):
    """(values, indices): the smallest element so far along dim, and where it is."""
    refuse_kinds(input, "cummin_cpu", "c")
    _check_extremum_out(input, out)
    return write_out(_running_extremum(input, dim, xp.minimum, CumMinResult), out)


def _running_logaddexp(x, axis):
    """ln Σ_{j≤i} e^(x_j) along axis, kept in the wider dtype as PyTorch's CPU kernel keeps it (float16 in
    float32, float32 in float64: a float32 running value drifted 2.6e-6 from it over 500 terms) and rounded
    at each output."""
    if x.dtype.kind == "c":
        return _running_complex_logaddexp(x, axis)
    return _from_zero(accumulate(xp.logaddexp, x.astype(WIDER.get(x.dtype, x.dtype), copy=False), axis), x.dtype)


def _complex_logaddexp(a, b):
    """ln(e^a + e^b) for complex a, the running value, and b, as PyTorch's CPU kernel takes it: the larger real
    part m plus log1p(e^(smaller - m)); where both real parts are -inf, a, the running -inf + 0i (an angle is
    moot), both +inf, the plain formula; a NaN in either, NaN. (No angle is wrapped into (-π, π]: the sum's
    imaginary parts accumulate.)"""
    smaller_first = a.real < b.real
    low, high = xp.where(smaller_first, a, b), xp.where(smaller_first, b, a)
    with errstate(invalid="ignore", over="ignore"):
        result = xp.log1p(xp.exp(low - high)) + high
        infinite = ~xp.isfinite(low.real) & (low.real == high.real)
        result = xp.where(infinite & (low.real < 0), a, result)
        result = xp.where(infinite & (low.real > 0), xp.log(xp.exp(low) + xp.exp(high)), result)
    nan = xp.isnan(a) | xp.isnan(b)
    return xp.where(nan, xp.asarray(complex(math.nan, math.nan), dtype=result.dtype), result)


def _running_complex_logaddexp(x, axis):
    """The running complex log-add-exp along axis, one step per element (NumPy's logaddexp is real only), from
    PyTorch's start, -inf + 0i: a first element of real part -inf is that start whatever its angle."""
    result = xp.array(x, copy=True)
    along = xp.moveaxis(result, axis, 0)  # (a view: writes reach result)
    if along.shape[0]:
        along[0] = xp.where(xp.isneginf(along[0].real), xp.asarray(complex(-math.inf, 0), along.dtype), along[0])
    for i in range(1, along.shape[0]):
        along[i] = _complex_logaddexp(along[i - 1], along[i])
    return result


class LogCumSumExp(Primitive):
    """y_i = ln Σ_{j≤i} e^(x_j) along dim (Σ_{j≥i} when reverse);
    dL/dx_k = Σ_{i≥k} dL/dy_i · e^(x_k - y_i), an ExpWeightedRunningSum of dL/dy (so differentiable again, to
    any order)."""

    pytorch_name = "LogcumsumexpBackward0"
    saves_output = True
    handles_complex = True  # (holomorphic: dL/dx_k = Σ_{i≥k} dL/dy_i · conj(e^(x_k - y_i)), PyTorch's convention)

    def forward(self, x):
        if x.ndim == 0:
            return x.copy()
        if self.reverse:
            return _reversed(_running_logaddexp, x, self.dim)
        return _running_logaddexp(x, axis=self.dim)

    def backward(self, grad, y, x):
        if x.ndim == 0:
            return (grad,)
        if x.is_complex():
            x, y = x.conj(), y.conj()
        return (ExpWeightedRunningSum.apply(grad, x, y, dim=self.dim, reverse=not self.reverse),)


class ExpWeightedRunningSum(Primitive):
    """z_k = Σ_{i≥k} a_i e^(p_k - q_i) along dim (Σ_{i≤k} when not reverse): logcumsumexp's derivative, with a
    its dL/dy, p its input and q its output (where each exponent is ≤ 0). Its own derivatives are sums of the
    same kind, so logcumsumexp differentiates to any order:
        dL/da_i = Σ_{k≤i} dL/dz_k e^(p_k - q_i)   (the sum the other way, of dL/dz, with -q and -p)
        dL/dp_k = dL/dz_k z_k        dL/dq_i = -a_i dL/da_i
    Computed in log space, split by the sign of a: e^(p_k + ln Σ_{i≥k} e^(ln a⁺_i - q_i)) - (the same for a⁻),
    so nothing overflows however far apart p and q are (a factor e^(p - c) e^(c - q) would, for any one c);
    the terms where a part is 0 are -inf, the empty sum. Complex a, p, q take one sum of e^(ln a_i - q_i), the
    complex log carrying the sign, and the derivatives their conjugates (PyTorch's convention for holomorphic z)."""

    saves_output = True
    handles_complex = True

    def forward(self, a, p, q):
        if xp.result_type(a, p, q).kind == "c":
            return self._complex_forward(a, p, q)
        with errstate(divide="ignore", invalid="ignore"):
            log_magnitude = xp.log(xp.abs(a))
            z = xp.zeros(xp.broadcast_shapes(a.shape, p.shape, q.shape), dtype=a.dtype)
            for sign, part in ((1, a > 0), (-1, a < 0)):
                terms = xp.where(part, log_magnitude - q, -xp.inf).astype(a.dtype, copy=False)
                tail = _reversed(_running_logaddexp, terms, self.dim) if self.reverse else _running_logaddexp(
                    terms, axis=self.dim)
                z += sign * xp.exp(p + tail)
        return z

    def _complex_forward(self, a, p, q):
        dtype = xp.result_type(a, p, q)
        with errstate(divide="ignore", invalid="ignore"):
            terms = xp.where(a != 0, xp.log(a.astype(dtype)) - q, complex(-math.inf, 0)).astype(dtype, copy=False)
            tail = _reversed(_running_logaddexp, terms, self.dim) if self.reverse else _running_logaddexp(
                terms, axis=self.dim)
            return xp.exp(p + tail)

    def backward(self, grad, z, a, p, q):
        if z.is_complex():
            a, p, q, z = a.conj(), p.conj(), q.conj(), z.conj()
        grad_a = ExpWeightedRunningSum.apply(grad, -q, -p, dim=self.dim, reverse=not self.reverse)
        return grad_a, grad * z, -a * grad_a


@names("logcumsumexp")
def logcumsumexp(input, dim, *, out=None):
    """y_i = ln(e^(x_0) + ... + e^(x_i)) along dim, without overflow."""
    axis = dim_index(dim, input.ndim)
    refuse_kinds(input, "logcumsumexp_out_cpu", "biu")
    return write_out(LogCumSumExp.apply(input, dim=axis, reverse=False), out)



@names("diff")
def diff(input, n=1, dim=-1, prepend=None, append=None, *, out=None):
    """The n-th forward difference along dim: x[i+1] - x[i], n times (prepend/append joined first)."""
    if n < 0:
        raise RuntimeError(f"order must be non-negative but got {n}")
    if input.ndim == 0:
        raise RuntimeError("diff expects input to be at least one-dimensional")
    axis = dim_index(dim, input.ndim)
    x = input
    if prepend is not None or append is not None:
        # PyTorch takes tensors of the input's rank only: no Python numbers (NumPy's diff takes them) and no
        # 0-d tensor broadcast along dim
        for name, joined in (("prepend", prepend), ("append", append)):
            if joined is not None and not isinstance(joined, Tensor):
                raise TypeError(f"diff(): argument '{name}' must be Tensor, not {type(joined).__name__}")
        parts = [p for p in (prepend, input, append) if p is not None]
        if any(p.ndim != input.ndim for p in parts):
            raise RuntimeError("diff expects prepend or append to be the same dimension as input")
        x = joins.cat(parts, axis)
    before = (slice(None),) * axis
    for _ in range(n):
        if x.dtype == bool:
            x = Tensor._make(x._data[before + (slice(1, None),)] ^ x._data[before + (slice(None, -1),)])
        else:
            x = x[before + (slice(1, None),)] - x[before + (slice(None, -1),)]
    if x is input:  # n = 0: a new tensor, as PyTorch's (writing the result in place leaves the input alone)
        x = input.clone()
    return write_out(x, out)
