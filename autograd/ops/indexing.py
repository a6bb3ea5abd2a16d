"""Gathering and scattering along a dim: each forward beside its local derivative.

Gather reads x at the positions an index tensor names; its adjoint, scatter-add,
adds values at those positions. Each is the other's derivative:

    y = gather(x, dim, index)            dL/dx = scatter_add(zeros, dim, index, dL/dy)
    y = scatter_add(x, dim, index, src)  dL/dx = dL/dy,  dL/dsrc = gather(dL/dy, dim, index)

scatter writes and scatter_reduce reduces at those positions; take_along_dim is gather with
broadcasting. The same pair for one index vector shared by every slice, index_select and
index_add, is in index_vectors.py with the other ops taking vectors of positions (the masked
ops: masking.py).
"""


from ..backend import int32, int64, ufunc_at, xp
from ..errors import IndexRangeError
from ..graph import modes
from ..index_watching import watches_arguments, watches_index
from ..operands import _operand
from ..primitive import Primitive
from ..tensor import Tensor
from ..warn_once import warn_once
from ..write_door import _refuse_overflow
from . import shape
from .axes import dim_index
from .conversion import type_name
from .elementwise import Where
from .names import names
from .outputs import write_out
from .predicates import WithoutDerivative

_INT32_OR_64 = (int64, int32)  # what most index ops take; take, put, index_copy and index_fill take int64 only


def _index_array(index, refusal, dtypes=_INT32_OR_64, error=RuntimeError):
    """The integer array behind ``index`` (a Tensor, array or list), of one of ``dtypes`` (else ``error``,
    with the message ``refusal`` formats with the index's dtype, as PyTorch's op words it)."""
    array = index._data if isinstance(index, Tensor) else xp.asarray(index)
    if array.dtype not in dtypes:
        raise error(refusal.format(type_name(array.dtype)))
    return array


def _same_dtype(input, source, refusal):
    """PyTorch's refusal of a source tensor of another dtype than the input's (no promotion: the op writes
    source's values into input's memory); ``refusal`` formats with both dtypes' names."""
    if source.dtype != input.dtype:
        raise RuntimeError(refusal.format(type_name(input.dtype), type_name(source.dtype)))


def _check_bounds(index, size, dim, low=0):
    """PyTorch's error for an index outside [low, size) (``low`` -size where negative positions count from the end)."""
    if index.size == 0 or index.min() >= low and index.max() < size:  # (two reductions: no mask made)
        return index
    bad = (index < low) | (index >= size)
    raise IndexRangeError(f"index {index[bad].flat[0]} is out of bounds for dimension {dim} with size {size}")


def _check_along(x_shape, index_shape, dim, op, other="self"):
    """gather/scatter's rule: index has x's ndim and is no larger than x outside ``dim``."""
    if len(index_shape) != len(x_shape) and not (len(index_shape) <= 1 and len(x_shape) <= 1):
        named = "input" if op == "gather" else other  # (PyTorch's words: gather's self is its input)
        raise RuntimeError(f"{op}(): Index tensor must have the same number of dimensions as {named} tensor "
                           f"(index shape {tuple(index_shape)}, {other} shape {tuple(x_shape)})")
    for d, (i, n) in enumerate(zip(index_shape, x_shape)):
        if d != dim and i > n:
            raise RuntimeError(f"{op}(): Size does not match at dimension {d} expected index {list(index_shape)} "
                               f"to be no larger than {other} {list(x_shape)} apart from dimension {dim}")


def _check_src(x_shape, index_shape, src_shape, dim, op):
    """scatter's rule for its src: index has src's ndim and is no larger than src in any dimension."""
    _check_along(src_shape, index_shape, dim, op, other="src")
    # (a 0-d index or src is a vector of one element here, as in PyTorch's size check: a 0-d src fits a 0-d index)
    if any(i > n for i, n in zip(index_shape or (1,), src_shape or (1,))):
        raise RuntimeError(f"{op}(): Expected index {list(index_shape)} to be no larger than self {list(x_shape)} "
                           f"apart from dimension {dim} and to be no larger size than src {list(src_shape)}")


def _elements(index, dim, shape):
    """The row-major numbers of the elements ``index`` names along ``dim`` in an array of ``shape`` (x's, which
    ``index`` fits outside ``dim``), in index's order: index · stride(dim) plus each other axis's position times
    its stride. One flat number per element, for ``take`` and a one-dimensional ``ufunc.at`` on the raveled
    array: the same elements in the same order as the open grid of positions they replace, whose broadcast
    index arrays cost NumPy several times more (along dim 1 of (4096, 512) float32 by a (4096, 64) index: the
    numbers and ``take`` 0.7 ms against take_along_axis's 1.2; a one-dimensional np.add.at 0.8 ms against 5.8)."""
    if index.ndim == 0:  # a 0-d index names one element, as a 1-d index of length 1 (PyTorch)
        index = index.reshape(1)
    strides = [1] * len(shape)
    for d in range(len(shape) - 1, 0, -1):
        strides[d - 1] = strides[d] * shape[d]
    offsets = 0  # the other axes' part: an open grid, as small as their positions
    for d, n in enumerate(index.shape):
        if d != dim and n > 1:
            offsets = offsets + (xp.arange(n, dtype=xp.intp) * strides[d]).reshape((n,) + (1,) * (index.ndim - d - 1))
    numbers = index.astype(xp.intp, copy=False)
    if strides[dim] != 1:
        numbers = numbers * strides[dim]
    return (numbers + offsets).reshape(-1)


def _corner(src, like_shape):
    """src's leading corner of ``like_shape`` (a source may be larger than the index in every dim); an array
    or a Tensor."""
    if src.shape == tuple(like_shape):
        return src
    if not src.ndim:  # a 0-d src, for an index of one element (1-d here)
        return src.reshape(like_shape)
    return src[tuple(slice(0, n) for n in like_shape)]


def _cut(x, like_shape, dim):
    """x cut to ``like_shape`` outside ``dim`` (an index may be smaller than x there)."""
    if all(n == m for d, (n, m) in enumerate(zip(x.shape, like_shape)) if d != dim):
        return x
    return x[tuple(slice(None) if d == dim else slice(0, n) for d, n in enumerate(like_shape))]


def _taken(x, index, dim):
    """``take_along_axis(x, index, dim)`` (x cut to index's shape outside dim): by the elements' row-major numbers
    where x is row-major, and so a view of its raveled memory."""
    if not x.flags.c_contiguous:
        return xp.take_along_axis(_cut(x, index.shape, dim), index, axis=dim)
    return x.reshape(-1).take(_elements(index, dim, x.shape)).reshape(index.shape)


def _accumulated_along(name, y, index, dim, values, widen=True):
    """_accumulated at the elements ``index`` names along ``dim`` of a new (row-major) y, by their row-major
    numbers in its raveled memory: the same updates in the same order as by an open grid of positions."""
    flat = _accumulated(name, y.reshape(-1), _elements(index, dim, y.shape), values.reshape(-1), widen)
    return flat.reshape(y.shape)


def _accumulated(name, y, positions, values, widen=True):
    """``ufunc_at(name, y, positions, values)``, returning y. A float16 y is accumulated in float32 and rounded
    once where ``widen``, as PyTorch's CPU scatter kernels accumulate a reduced float (NumPy rounds each step
    to float16: 1000 + 5 · 0.4 gave 1002.5, PyTorch's scatter_add 1002); its sequential kernels (index_add of
    a vector or with alpha, index_put, index_reduce) round each step, as NumPy does."""
    if widen and y.dtype == xp.float16:
        wide = y.astype(xp.float32)
        ufunc_at(name, wide, positions, values.astype(xp.float32))
        return wide.astype(xp.float16)
    ufunc_at(name, y, positions, values)
    return y


class Gather(Primitive):
    """y[i][j][k] = x[i][index[i][j][k]][k]  (for dim 1);   dL/dx = scatter_add(0, dim, index, dL/dy)"""

    saves_inputs = False  # backward needs x's shape only (sort, topk, cummax: PyTorch's nodes keep the indices)
    saves_arguments = True  # backward uses the index: freed after backward
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        if x.ndim == 0:  # every index is 0 (checked): the scalar, in index's shape
            return xp.broadcast_to(x, self.index.shape).copy()
        return _taken(x, self.index, self.dim)

    def backward(self, grad, y, x):
        zeros = Tensor._make(xp.zeros(x.shape, dtype=grad.dtype))
        return (ScatterAdd.apply(zeros, grad, dim=self.dim, index=self.index, fresh=True),)


class ScatterAdd(Primitive):
    """y = x, then y[i][index[i][j][k]][k] += src[i][j][k]  (for dim 1);
    dL/dx = dL/dy,   dL/dsrc = gather(dL/dy, dim, index)"""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # backward uses the index: freed after backward, as PyTorch frees it

    fresh = False  # x is a temporary the op may write into (gather's backward): no copy
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x, src):
        y = x if self.fresh else x.copy()
        if x.ndim == 0:
            y[()] += _corner(src, self.index.shape).sum()
            return y
        return _accumulated_along("add", y, self.index, self.dim, _corner(src, self.index.shape))

    def backward(self, grad, y, x, src):
        grad_src = None
        if src.requires_grad:
            grad_src = Gather.apply(grad, dim=self.dim, index=self.index)
            if grad_src.shape != src.shape:  # src larger than index: the rest was not used
                grad_src = _pad_to(grad_src, src.shape)
        return (grad if x.requires_grad else None), grad_src


class Scatter(Primitive):
    """y = x, then y[i][index[i][j][k]][k] = src[i][j][k]  (for dim 1);
    dL/dx = dL/dy where nothing was written, 0 elsewhere;   dL/dsrc = gather(dL/dy, dim, index)"""

    saves_inputs = False  # backward needs no input's values
    saves_arguments = True  # backward uses the index: freed after backward, as PyTorch frees it
    handles_complex = True  # (the gradient is moved, never multiplied by a value)

    def forward(self, x, src):
        y = x.copy()
        if x.ndim == 0:
            if self.index.size:
                y[()] = _corner(src, self.index.shape).reshape(-1)[-1]
            return y
        y.reshape(-1)[_elements(self.index, self.dim, y.shape)] = _corner(src, self.index.shape).reshape(-1)
        return y

    def backward(self, grad, y, x, src):
        grad_x = grad_src = None
        if x.requires_grad:
            kept = xp.ones(x.shape, dtype=grad.dtype)
            if x.ndim:
                kept.reshape(-1)[_elements(self.index, self.dim, x.shape)] = 0
            else:
                kept[()] = 0
            grad_x = grad * Tensor._make(kept)
        if src.requires_grad:
            grad_src = Gather.apply(grad, dim=self.dim, index=self.index)
            if grad_src.shape != src.shape:
                grad_src = _pad_to(grad_src, src.shape)
        return grad_x, grad_src


def _pad_to(grad, like_shape):
    """``grad`` placed in the leading corner of zeros of ``like_shape`` (a larger src's unused rest gets 0); a 0-d
    src's gradient, of the one element its index names, takes its shape."""
    if not like_shape:
        return shape.reshape(grad, like_shape)
    corner = tuple(slice(0, n) for n in grad.shape)
    return shape.IndexAdd.apply(grad, index=corner, shape=like_shape, basic=True)


def _along_args(x, dim, index, op, src=None):
    """(axis, index as int64) for gather and the scatters, after PyTorch's checks in its order: dim, src's
    dtype (given a ``src`` tensor), index's dtype, index's shape against x's and src's, index's values. An
    empty index names nothing, so PyTorch checks no shape for it: it becomes an empty index of x's ndim,
    which every op takes."""
    axis = dim_index(dim, x.ndim)
    if isinstance(index, (int, float, complex)):  # (scatter_(0, label, 1) for a one-hot of an int label: NumPy would
        raise TypeError(f"{op}(): argument 'index' (position 2) must be Tensor, not {type(index).__name__}")  # read
    if src is not None:  # it as a 0-d index; PyTorch refuses it, asking for torch.tensor(label))
        _same_dtype(x, src, "scatter(): Expected self.dtype to be equal to src.dtype")
    index = _index_array(index, f"{op}(): Expected dtype int32/int64 for index")
    if index.ndim == 0 and x.ndim == 1:  # PyTorch counts a 0-d index as 1-d (its ensure_nonempty_dim)
        index = index.reshape(1)
    if index.size == 0:
        return axis, xp.zeros((0,) * max(x.ndim, 1), dtype=int64)
    _check_along(x.shape, index.shape, axis, op)
    if src is not None:
        _check_src(x.shape, index.shape, src.shape, axis, op)
    size = x.shape[axis] if x.ndim else 1
    return axis, _check_bounds(index, size, axis).astype(int64, copy=False)


@names("gather")
@watches_index("index", 2)
@watches_arguments("input")  # (PyTorch's node saves it too: writing it refuses)
def gather(input, dim, index, *, sparse_grad=False, out=None):
    """y[i][j][k] = input[i][index[i][j][k]][k] for dim 1 (and likewise for any dim)."""
    index_shape = tuple(getattr(index, "shape", xp.shape(index)))
    axis, index = _along_args(input, dim, index, "gather")
    gathered = Gather.apply(input, dim=axis, index=index)
    if gathered.shape != index_shape:  # an empty index, of another shape than the one gathered with
        gathered = shape.reshape(gathered, index_shape)
    return write_out(gathered, out, dtype=input.dtype)  # (PyTorch writes gather into no other dtype)


def _source(src, value, like, op):
    if src is None and value is None:
        raise TypeError(f"{op}() needs a src tensor or a value")
    source = src if src is not None else value
    if isinstance(source, Tensor):
        _same_dtype(like, source, f"{op}(): Expected self.dtype to be equal to src.dtype")
        return source
    _refuse_overflow(source, like._data.dtype)  # (a number the tensor's dtype cannot hold: PyTorch's refusal)
    return _operand(source, like).to(like.dtype)


@names("scatter", inplace="scatter_")
@watches_index("index", 2)
def scatter(input, dim, index, src=None, *, value=None, reduce=None, out=None):
    """y = input with src (or the number ``value``) written at the positions index names along dim.
    reduce='add' adds instead (as scatter_add); 'multiply' multiplies (as scatter_reduce's 'prod')."""
    axis, index = _along_args(input, dim, index, "scatter", src if isinstance(src, Tensor) else None)
    source = _source(src, value, input, "scatter")
    if not isinstance(src, Tensor):  # a number: written at every position index names
        source = shape.expand(source, index.shape)
    if reduce is None:
        return write_out(Scatter.apply(input, source, dim=axis, index=index), out, dtype=input.dtype)
    if reduce not in ("add", "multiply"):
        raise RuntimeError(f"scatter(): reduce argument must be either add or multiply, got {reduce!r}")
    if isinstance(src, Tensor):  # PyTorch's deprecation, said once in a process
        warn_once("scatter reduce", "The reduce argument of torch.scatter with Tensor src is deprecated and will be "
                  "removed in a future PyTorch release. Use torch.scatter_reduce instead for more reduction options.")
    # the values of scatter_add, or of scatter_reduce's prod with self included; but PyTorch has no derivative for
    # scatter with reduce: recorded as such, so that a backward pass through it raises, as PyTorch's
    fresh, new = input.detach(), source.detach()
    values = (ScatterAdd.apply(fresh, new, dim=axis, index=index) if reduce == "add"
              else _scatter_reduce(fresh, new, axis, index, "prod", True))
    return write_out(WithoutDerivative.apply(input, source, values=values._data, kernel="scatter"), out,
                     dtype=input.dtype)


@names("scatter_add", inplace="scatter_add_")
@watches_index("index", 2)
def scatter_add(input, dim, index, src, *, out=None):
    """y = input, then y[index[i][j][k]][j][k] += src[i][j][k] for dim 0 (repeated positions add up)."""
    _refuse_non_tensor(src, "scatter_add")
    axis, index = _along_args(input, dim, index, "scatter", src)
    return write_out(ScatterAdd.apply(input, src, dim=axis, index=index), out, dtype=input.dtype)


def _extreme(dtype, lowest):
    """The least (``lowest``) or greatest value of ``dtype``: ∓inf for a float, False/True for bool."""
    if dtype.kind == "b":
        return not lowest
    if dtype.kind == "f":
        return -xp.inf if lowest else xp.inf
    info = xp.iinfo(dtype)
    return info.min if lowest else info.max


def _kept(grad, takes_part):
    """grad where x takes part in the reduction, else 0: selected, not multiplied by the mask, so that an
    infinite or NaN gradient where x is left out gives 0 (PyTorch's masked_fill), not NaN. (``takes_part`` None:
    every element of x takes part, include_self's case, and grad is kept whole.)"""
    if takes_part is None:
        return grad
    return Where.apply(grad, Tensor._make(xp.zeros((), dtype=grad.dtype)), condition=takes_part)


class ScatterReduce(Primitive):
    """y = x with src reduced into the positions index names along dim: reduce is sum, prod, mean,
    amax or amin (or max or min: the same, without a derivative), and with include_self False x's own value at a
    written position takes no part.

        sum:         dL/dx = dL/dy where x takes part,   dL/dsrc = gather(dL/dy)
        mean:        the same, each divided by the number of terms at that position
        amax, amin:  dL/dy shared evenly by the terms equal to y (x's and src's)
        prod:        dL/dx = dL/dy · y / x,   dL/dsrc = gather(dL/dy · y) / src  (zeros: see _prod_backward)

    With include_self False and x's own value equal to the max (or min) taken from src, PyTorch still
    counts x among the ties, giving it no share, so src's shares add up to less than dL/dy (and
    differ from those of include_self True's). Here x takes no part: its value is not a tie.
    """

    saves_output = True
    widens_half = True  # float16 accumulated in float32, as scatter_reduce's kernel (index_reduce's is sequential)
    caller = "scatter_reduce"  # or index_reduce, which PyTorch's refusals name with its argument 'source'
    _START = {"sum": 0, "mean": 0, "prod": 1}

    def forward(self, x, src):
        values = _corner(src, self.index.shape)
        self.terms = self.written = None  # (what the mean and include_self=False need, and only they)
        if self.reduce == "mean" or not self.include_self:
            # how many src values each position receives (a count: bincount's float64 sums of ones are exact)
            self.terms = xp.bincount(_elements(self.index, self.dim, x.shape), minlength=x.size).reshape(x.shape)
            self.written = self.terms > 0
        y = x.copy()
        if not self.include_self:
            start = self._START.get(self.reduce)
            if start is None:  # amax/amin start from the dtype's most extreme value: -inf for a float
                start = _extreme(x.dtype, lowest=self.reduce in ("amax", "max"))  # (a src of only -inf gives -inf)
            y[self.written] = start
        ufunc = {"sum": "add", "mean": "add", "prod": "multiply", "amax": "maximum", "amin": "minimum",
                 "max": "maximum", "min": "minimum"}
        y = _accumulated_along(ufunc[self.reduce], y, self.index, self.dim, values, widen=self.widens_half)
        if self.reduce == "mean":
            if y.dtype.kind in "iu":  # (NumPy's y // count would be int64)
                return xp.floor_divide(y, self._term_count(int64)).astype(y.dtype)
            # a float quotient correctly rounded in float32 (float16's too) or float64 is the float64 quotient
            # rounded (53 >= 2·24 + 2 bits), as NumPy's y / count (int64) gave: the same values, without float64
            # arrays (scatter_reduce's mean of 262,144 float32 values into 2,097,152: 37 -> 17 ms)
            count = self._term_count(xp.float32 if y.dtype in (xp.float16, xp.float32) else xp.float64)
            return (y / count).astype(y.dtype, copy=False)
        return y

    def _term_count(self, dtype):
        """How many terms each position's mean divides by, in ``dtype``: the src values it receives, and x's own
        where include_self; at least 1 (a position nothing reaches keeps x's value)."""
        count = self.terms.astype(dtype)
        if self.include_self:
            count += 1
        else:
            xp.maximum(count, 1, out=count)
        return count

    def backward(self, grad, y, x, src):
        if self.reduce in ("max", "min"):  # (old names PyTorch's kernel takes for amax and amin; its derivative not)
            raise RuntimeError("Expected 'reduce' to be one of 'sum', 'prod', 'mean', 'amax', 'amin' but got "
                               f"{self.reduce}.")
        takes_part = None if self.include_self else ~self.written  # (None: every element of x)
        if self.reduce in ("sum", "mean"):
            if self.reduce == "mean":
                count = self._term_count(xp.float32 if grad.dtype == xp.float16 else grad.dtype)  # (exact counts)
                grad = grad / Tensor._make(count.astype(grad.dtype, copy=False))
            grad_x, grad_src = _kept(grad, takes_part), Gather.apply(grad, dim=self.dim, index=self.index)
        elif self.reduce in ("amax", "amin"):
            y_at_src = _taken(y._data, self.index, self.dim)
            src_ties = _corner(src._data, self.index.shape) == y_at_src
            ties = x._data == y._data if takes_part is None else (x._data == y._data) & takes_part
            count = ties.astype(int64)
            count += xp.bincount(_elements(self.index, self.dim, x.shape), src_ties.reshape(-1),
                                 minlength=x.numel()).astype(int64).reshape(x.shape)
            # a NaN result ties with no term: its terms' shares are 0 · (dL/dy / 0) = NaN, as PyTorch's (and amax's)
            share = grad / Tensor._make(count.astype(grad.dtype))
            grad_x = _kept(share * Tensor._make(ties.astype(grad.dtype)), takes_part)
            grad_src = Gather.apply(share, dim=self.dim, index=self.index) * Tensor._make(src_ties.astype(grad.dtype))
        else:
            grad_x, grad_src = self._prod_backward(grad, y, x, src, takes_part)
        if src.requires_grad and grad_src.shape != src.shape:
            grad_src = _pad_to(grad_src, src.shape)
        return (grad_x if x.requires_grad else None), (grad_src if src.requires_grad else None)


    def _prod_backward(self, grad, y, x, src, takes_part):
        """Each term's gradient is dL/dy times the product of the other terms at its position, exact
        where terms are 0 (a zero makes y / term 0 / 0):

            x:    y' / x'   with x' = x, its zeros replaced by 1, and y' the product taken with x'
            src:  y / src   where src is nonzero (0 if the position holds a zero: the zero is another term),
                  the product taken again with the zero replaced by 1 where it is its position's only zero

        (PyTorch's first-order values; at a position with two zeros every term gets 0, and its second
        derivatives there are not the product of the remaining terms: as PyTorch, differentiating src's gradient
        again is refused.)"""
        arguments = dict(dim=self.dim, index=self.index, reduce="prod", include_self=self.include_self)
        grad_x = None
        if x.requires_grad:
            x_safe = x + Tensor._make((x._data == 0).astype(x.dtype))  # 0 becomes 1, other values unchanged
            grad_x = _kept(grad * ScatterReduce.apply(x_safe, src, **arguments) / x_safe, takes_part)
        corner = _corner(src, self.index.shape)  # (a Tensor here: sliced, so the gradient flows)
        zero = corner._data == 0
        # how many zero src terms each position receives
        zeros_at = xp.bincount(_elements(self.index, self.dim, x.shape), zero.reshape(-1),
                               minlength=x.numel()).astype(int64).reshape(x.shape)
        lone_zero = zero & (_taken(zeros_at, self.index, self.dim) == 1)
        grad_src = Gather.apply(grad * y, dim=self.dim, index=self.index) / (corner + Tensor._make(
            zero.astype(corner.dtype)))
        if lone_zero.any():
            ones = Tensor._make(xp.ones(corner.shape, dtype=corner.dtype))  # a constant: no derivative in it
            others = ScatterReduce.apply(x, Where.apply(ones, corner, condition=lone_zero), **arguments)
            grad_src = Where.apply(Gather.apply(grad * others, dim=self.dim, index=self.index), grad_src,
                                   condition=lone_zero)
        if modes.grad_enabled and src.requires_grad and (zeros_at > 1).any():  # (create_graph=True)
            from ..function import _DelayedError  # (here: only such a second backward needs it)

            source = "src" if self.caller == "scatter_reduce" else "source"
            (grad_src,) = _DelayedError.apply(
                f"{self.caller}(): Double backward is unsupported for {source} when >1 zeros in {source} are "
                "scattered to the same position in self", 1, grad_src)
        return grad_x, grad_src


@names("scatter_reduce", inplace="scatter_reduce_")
@watches_index("index", 2)
def scatter_reduce(input, dim, index, src, reduce, *, include_self=True, out=None):
    """y = input with src reduced ('sum', 'prod', 'mean', 'amax', 'amin') into the positions index
    names along dim; include_self=False leaves input's own values at those positions out. 'max' and 'min' are
    amax and amin without a derivative, as PyTorch's."""
    if reduce not in ("sum", "prod", "mean", "amax", "amin", "max", "min"):
        raise RuntimeError(f"reduce argument must be either sum, prod, mean, amax or amin, got {reduce}")
    _refuse_non_tensor(src, "scatter_reduce")
    _refuse_unordered(input, reduce, "scatter_gather_tensor_cpu_reduce_" + reduce)
    axis, index = _along_args(input, dim, index, "scatter", src)
    return write_out(_scatter_reduce(input, src, axis, index, reduce, include_self), out, dtype=input.dtype)


def _refuse_non_tensor(src, op):
    """PyTorch's TypeError for a src that is no tensor (a number, a list): only scatter takes a number."""
    if not isinstance(src, Tensor):
        raise TypeError(f"{op}(): argument 'src' (position 3) must be Tensor, not {type(src).__name__}")


def _refuse_unordered(input, reduce, kernel):
    """amax/amin of complex numbers, which have no order (NumPy's maximum would compare them
    lexicographically), and the mean of bools: refused in PyTorch's words, naming its ``kernel``."""
    if reduce in ("amax", "amin") and input.dtype.kind == "c" or reduce == "mean" and input.dtype.kind == "b":
        raise NotImplementedError(f'"{kernel}" not implemented for \'{type_name(input.dtype)}\'')


def _scatter_reduce(input, src, axis, index, reduce, include_self, caller="scatter_reduce"):
    """ScatterReduce, which works on positions along an axis: a 0-d input (and its one index, 0) is reduced
    as a 1-element vector. ``caller``: scatter_reduce (float16 accumulated in float32, as its kernel) or
    index_reduce (whose kernel rounds each step)."""
    params = dict(reduce=reduce, include_self=include_self, widens_half=caller == "scatter_reduce", caller=caller)
    if input.ndim:
        return ScatterReduce.apply(input, src, dim=axis, index=index, **params)
    vector = ScatterReduce.apply(shape.reshape(input, (1,)), shape.reshape(src, (-1,)), dim=0,
                                 index=index.reshape(-1), **params)
    return shape.reshape(vector, ())


@names("take_along_dim")
def take_along_dim(input, indices, dim=None, *, out=None):
    """gather with broadcasting: input and indices broadcast against each other outside dim;
    with dim None both are flattened first."""
    if dim is None:  # PyTorch flattens both and gathers: gather's dtypes (int32 too) and words; a view of indices
        # is what its gather saves (written in place, the backward is refused), where the dim's gather saves a copy
        flat_index = shape.reshape(indices, (-1,)) if isinstance(indices, Tensor) else xp.asarray(indices).reshape(-1)
        return write_out(gather(shape.reshape(input, (-1,)), 0, flat_index), out)
    index = _take_along_dim_index(indices)
    axis = dim_index(dim, input.ndim)
    if input.ndim:  # (negative positions count from the end here, as PyTorch's; gather's do not)
        index = xp.where(index < 0, index + input.shape[axis], index)
    if index.ndim != input.ndim:
        raise RuntimeError(f"take_along_dim(): input and indices should have the same number of dimensions, "
                           f"but got {input.ndim} dimensions for input, and {index.ndim} dimensions for indices")
    outer = [a if d != axis else 1 for d, a in enumerate(input.shape)]
    index_outer = [a if d != axis else 1 for d, a in enumerate(index.shape)]
    try:
        common = xp.broadcast_shapes(tuple(outer), tuple(index_outer))
    except ValueError:
        raise RuntimeError(f"take_along_dim(): shapes {tuple(input.shape)} and {tuple(index.shape)} do not "
                           f"broadcast outside dim {axis}") from None
    x_shape = tuple(input.shape[d] if d == axis else n for d, n in enumerate(common))
    i_shape = tuple(index.shape[d] if d == axis else n for d, n in enumerate(common))
    return write_out(gather(shape.expand(input, x_shape), axis, xp.broadcast_to(index, i_shape)), out)


def _take_along_dim_index(indices):
    return _index_array(indices, "torch.take_along_dim(): dtype of indices should be Long but got {}", (int64,))
