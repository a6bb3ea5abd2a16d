"""Norms: vector p-norms, matrix norms, Tensor.norm, dist and cdist, as in torch.linalg.

    ‖x‖_p = (Σ |x_i|^p)^(1/p);   d‖x‖_p/dx_i = sign(x_i) |x_i|^(p-1) / ‖x‖_p^(p-1)

which is x / ‖x‖ for p = 2, sign(x) for p = 1, and, for p = ±inf, sign(x) at the elements
attaining the max (min) |x|, shared between ties. At x = 0 the gradient is 0 (PyTorch's choice
of subgradient). Matrix norms are vector norms of rows, columns or singular values.
"""

import math
import numbers

from ..backend import errstate, float16, float32, xp
from ..errors import refuse_unbroadcastable
from ..graph import is_grad_enabled, no_grad
from ..index_watching import watches_arguments
from ..primitive import Primitive, named_node, node_named
from ..tensor import Tensor
from . import extrema, shape
from .axes import dim_index, int_or_ints, normalize_dims
from .conversion import require_scalar_type, tensors_only, type_name
from .elementwise import Where, row_major
from .half_linalg import low_precision, refuses_half
from .names import names, refusing_none
from .outputs import write_out
from .reductions import spread
from .selection import zero_gradient


class VectorNorm(Primitive):
    """y = (Σ |x_i|^p)^(1/p) over axes;   dL/dx_i = dL/dy · sgn(x_i) |x_i|^(p-1) / y^(p-1)
    (sgn(x) = x / |x|, so complex x gets PyTorch's gradient too)"""

    pytorch_name = "LinalgVectorNormBackward0"
    saves_output = True
    handles_complex = True
    each_tie_whole = False  # with p = ±inf, each element attaining the norm takes the whole gradient (cdist, pdist)
    count_has_zeros = False  # with p = 0, the count's gradient is zeros (cdist, pdist), where a norm's is none
    # PyTorch's kernel for the gradient where it has no derivative of its own ('_cdist_backward', '_pdist_backward'):
    # a second derivative through it raises, as PyTorch's (a force field's loss on forces from cdist, say)
    gradient_kernel = None

    def forward(self, x):
        return row_major(self.value(x))  # (PyTorch's reductions allocate a row-major result)

    def value(self, x):
        if x.dtype == float16:  # in float32, rounded once, as PyTorch's
            return self.value(x.astype(float32)).astype(float16)
        p, axes, keep = self.ord, self.axes, self.keepdim
        magnitude = xp.abs(x)
        if p == 2:
            return xp.sqrt(xp.sum(magnitude * magnitude, axis=axes, keepdims=keep))
        if p == 1:
            return xp.sum(magnitude, axis=axes, keepdims=keep)
        if p == math.inf:
            return xp.max(magnitude, axis=axes, keepdims=keep)
        if p == -math.inf:
            return xp.min(magnitude, axis=axes, keepdims=keep)
        if p == 0:
            return xp.sum(magnitude != 0, axis=axes, keepdims=keep).astype(magnitude.dtype)  # (real, as every norm)
        with errstate(divide="ignore"):  # a zero under a negative p: its power is inf, and the norm 0, silently
            return xp.sum(magnitude**p, axis=axes, keepdims=keep) ** (1 / p)

    def backward(self, grad, y, x):
        if self.gradient_kernel is None or not is_grad_enabled():
            return self.gradient(grad, y, x)
        from .sorting import UniqueValues  # (here: sorting loads on first use, ops/deferred.py)

        with no_grad():
            (gradient,) = self.gradient(grad, y, x)
        return (UniqueValues.apply(grad, x, values=gradient._data, kernel=self.gradient_kernel),)

    def gradient(self, grad, y, x):
        p = self.ord
        grad = spread(grad, x, self.axes, self.keepdim)
        norm = spread(y, x, self.axes, self.keepdim)
        if p == 0:  # a count: no gradient at all (None, not zeros: x.grad stays None, as PyTorch's norms)
            return (zero_gradient(x, grad) if self.count_has_zeros else None,)
        if p == 1:
            return (grad * x.sgn(),)
        if math.isinf(p):  # the elements attaining the extremum share the gradient (cdist's and pdist's each take
            attains = x._data.__abs__() == norm._data  # all of it, as PyTorch's distance kernels give it)
            # (a NaN norm is attained by none: no gradient, as PyTorch's, rather than 0 / 0)
            ties = xp.maximum(attains.sum(axis=self.axes, keepdims=True), 1)
            share = attains if self.each_tie_whole else attains / ties
            return (grad * x.sgn() * Tensor._make(share.astype(x.dtype)),)
        nonzero = norm._data != 0
        zero = Tensor._make(xp.zeros((), dtype=x.dtype))
        # The 0s below replace values worked out as 0 / 0 or 0 · inf, as PyTorch's masked_fill_ does: the gradient
        # is 0 there, and its own derivative NaN (a force field's loss through ‖x_i - x_i‖ is NaN in PyTorch)
        if p == 2:  # g · (x / ‖x‖), PyTorch's order
            return (grad * Where.apply(x / norm, zero, condition=nonzero),)
        if p < 1:  # sgn(x) |x|^(p-1), 0 where x = 0, times g · ‖x‖^(1-p)
            scaled = x.sgn() * Where.apply(x.abs() ** (p - 1), zero, condition=x._data != 0)
            return (scaled * grad * norm ** (1 - p),)
        safe_norm = Where.apply(norm, Tensor._make(xp.ones((), dtype=x.dtype)), condition=nonzero)
        scaled = x.sgn() * x.abs() ** (p - 1) / safe_norm ** (p - 1)
        return (grad * Where.apply(scaled, Tensor._make(xp.zeros((), dtype=x.dtype)), condition=nonzero),)


def _floating(x, dtype, op):
    """x, of a floating or complex dtype, cast to ``dtype`` where given: of the same kind (a complex input's
    norm is never that of its real part) and no narrower, as PyTorch's norms check it."""
    if x.dtype.kind not in "fc":
        raise RuntimeError(f"{op}: Expected a floating point or complex tensor as input. Got {type_name(x.dtype)}")
    if dtype is not None:
        wanted = xp.dtype(dtype)
        if wanted.kind not in "fc":
            raise RuntimeError(f"{op}: dtype should be floating point or complex, but got {type_name(wanted)}")
        if (x.dtype.kind == "c") != (wanted.kind == "c"):
            kind = "complex for complex" if x.dtype.kind == "c" else "real for real"
            raise RuntimeError(f"{op}: dtype should be {kind} inputs, but got {type_name(wanted)}")
        if wanted.itemsize < x.dtype.itemsize:
            raise RuntimeError(f"{op}: the dtype of the input ({type_name(x.dtype)}) should be convertible without "
                               f"narrowing to the specified dtype ({type_name(wanted)})")
        x = x.to(dtype)
    return x


def _refuse_empty_reduction(x, ord, dim):
    """PyTorch's refusal of a norm without identity over nothing: over all of an empty tensor, or along any empty
    dim named (an empty tensor reduced along its other dims gives an empty result)."""
    preamble = f"linalg.vector_norm cannot compute the {float(ord):g} norm on"
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        raise RuntimeError(f"{preamble} an empty tensor because the operation does not have an identity")
    for d in int_or_ints(dim, "dim"):
        if x.shape[dim_index(d, x.ndim)] == 0:  # (PyTorch writes no space before "because")
            raise RuntimeError(f"{preamble} the dimension {d}because this dimension is empty and the operation "
                               "does not have an identity")


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None, out=None):
    """‖x‖_ord over dim (all elements when None): ord any real number, inf or -inf."""
    x = _floating(x, dtype, "linalg.vector_norm")
    if isinstance(ord, str) or not isinstance(ord, numbers.Real):
        # (PyTorch's argument parser refuses it, with a TypeError)
        raise TypeError(f"linalg_vector_norm(): argument 'ord' (position 2) must be Number, not {type(ord).__name__}")
    axes = normalize_dims(dim, x.ndim)
    if (ord < 0 or ord == math.inf) and x.numel() == 0:  # a minimum, maximum or sum of 1/0s: none has an identity
        _refuse_empty_reduction(x, ord, dim)
    y = VectorNorm.apply(x, ord=float(ord), axes=axes, keepdim=keepdim)
    return write_out(y, out, dtype=y.dtype)  # (out must have the norm's dtype: PyTorch casts into no other)


class SingularValues(Primitive):
    """σ = the singular values of A (descending);   dL/dA = U diag(dL/dσ) Vᴴ  (A = U diag(σ) Vᴴ)

    A first derivative takes U and V as the forward found them; a recorded one (create_graph, forward
    mode) takes them from ``linalg.svd`` of A, so that a second derivative sees them turn with A (it
    needs distinct σ, as svd's gradient does).
    """

    pytorch_name = "LinalgSvdBackward0"  # (PyTorch's node for it)
    saves_arguments = True  # backward uses the singular vectors: freed after backward, as PyTorch frees it
    handles_complex = True  # (real σ of a complex A: U diag(dL/dσ) Vᴴ is PyTorch's complex gradient too)

    def forward(self, a):
        from .inverses import converging  # (here: the linear algebra's ops load on first use, ops/deferred.py)

        with converging(a, "linalg.svd", "singular values"):
            self.u, sigma, self.vh = xp.linalg.svd(a, full_matrices=False)
        return sigma

    def backward(self, grad, y, a):
        if is_grad_enabled():
            from .svd import svd

            u, _, vh = svd(a, full_matrices=False)
        else:
            u, vh = Tensor._make(self.u), Tensor._make(self.vh)
        return (u * shape.unsqueeze(grad, -2) @ vh,)


def refuse_cpu_svd_driver(A, driver):
    """PyTorch's ``driver=`` of linalg.svd/svdvals picks a cuSOLVER routine: given for a CPU tensor it is an
    error there (LAPACK has the one), and on a CUDA tensor it is accepted (our backend has one routine)."""
    if driver is not None and A.device.type != "cuda":
        raise RuntimeError("torch.linalg.svd: keyword argument `driver=` is only supported on CUDA inputs with "
                           "cuSOLVER backend.")


@refuses_half("linalg_svd_cpu")
def svdvals(A, *, driver=None, out=None):
    """The singular values of each matrix, largest first (``driver``: see refuse_cpu_svd_driver)."""
    refuse_cpu_svd_driver(A, driver)
    sigma = SingularValues.apply(_floating(A, None, "linalg.svdvals"))
    return write_out(sigma, out, dtype=sigma.dtype)


def matrix_norm(input, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None, out=None):
    """‖A‖ over the two dims: 'fro', 'nuc' (Σσ), 2 / -2 (largest / smallest σ), 1 / -1 (max / min
    column sum of |a|), inf / -inf (max / min row sum)."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    A = _floating(A, dtype, "linalg.matrix_norm")
    if A.ndim < 2:
        raise RuntimeError(f"linalg.matrix_norm: The input tensor A must have at least 2 dimensions, got {A.ndim}")
    if len(dim) != 2:
        raise RuntimeError(f"linalg.matrix_norm: dim must be a 2-tuple. Got {' '.join(map(str, dim))}")
    rows, columns = (dim_index(d, A.ndim) for d in dim)
    if rows == columns:
        raise RuntimeError(f"linalg.matrix_norm: dims must be different. Got ({dim[0]}, {dim[1]})")
    _require_norm_dtype(out, A.dtype, "linalg.matrix_norm")
    if ord == "fro":
        return write_out(VectorNorm.apply(A, ord=2.0, axes=tuple(sorted((rows, columns))), keepdim=keepdim), out)
    if ord in ("nuc", 2, -2):
        if A.dtype == float16:  # (no float16 SVD: PyTorch refuses these orders, and only these)
            raise RuntimeError(low_precision("linalg.matrix_norm"))
        matrices = shape.permute(A, [d for d in range(A.ndim) if d not in (rows, columns)] + [rows, columns])
        sigma = SingularValues.apply(matrices)
        if ord == -2 and sigma.shape[-1] == 0:
            raise IndexError("amin(): Expected reduction dim -1 to have non-zero size.")
        # (an empty matrix has no σ: its 2-norm is 0, the maximum's identity among norms, as PyTorch's; repeated
        # extreme σ share the gradient, as PyTorch's amax / amin of svdvals give it: an orthogonal matrix's 2-norm
        # moves along U Vᴴ / n, not along one singular pair)
        y = sigma.sum(-1) if ord == "nuc" or sigma.shape[-1] == 0 else (extrema.amax(sigma, -1) if ord == 2 else
                                                                        extrema.amin(sigma, -1))
        if keepdim:
            for d in sorted((rows, columns)):
                y = shape.unsqueeze(y, d)
        return write_out(y, out)
    if ord in (1, -1, math.inf, -math.inf):
        summed, over = (rows, columns) if ord in (1, -1) else (columns, rows)
        sums = VectorNorm.apply(A, ord=1.0, axes=(summed,), keepdim=True)
        if ord > 0 and sums.shape[over] == 0:  # the largest of no sums: 0, as PyTorch's (its smallest is an error)
            y = sums.sum(over, keepdim=True)
        else:  # (tied column or row sums share the gradient, as PyTorch's amax / amin)
            y = (extrema.amax if ord > 0 else extrema.amin)(sums, over, keepdim=True)
        return write_out(y if keepdim else shape.squeeze(y, tuple(sorted((rows, columns)))), out)
    raise RuntimeError(f"linalg.matrix_norm: Order {ord} not supported.")


def _require_norm_dtype(out, dtype, op):
    """PyTorch's refusal of an out= whose dtype is not the norm's, of a ``dtype`` matrix (real: a complex
    matrix's norm is real)."""
    expected = xp.empty((), dtype=dtype).real.dtype
    if isinstance(out, Tensor) and out.dtype != expected:
        raise RuntimeError(f"{op} expected out tensor dtype {type_name(expected)} but got: {type_name(out.dtype)}")


def linalg_norm(input, ord=None, dim=None, keepdim=False, *, dtype=None, out=None):
    """torch.linalg.norm: a vector norm over one dim (or all, flattened, when ord and dim are None),
    a matrix norm over two dims (or a 2-D input with ord given)."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    if A.dtype.kind in "fc":
        _require_norm_dtype(out, A.dtype if dtype is None else xp.dtype(dtype), "linalg.norm")
    if isinstance(dim, int):
        dim = (dim,)
    if dim is not None and len(dim) not in (1, 2):
        raise RuntimeError(f"linalg.norm: If dim is specified, it must be of length 1 or 2. Got {list(dim)}")
    if dim is None and ord is not None:
        if A.ndim not in (1, 2):
            raise RuntimeError(f"linalg.norm: If dim is not specified but ord is, the input must be 1D or 2D. "
                               f"Got {A.ndim}D.")
        dim = (0, 1) if A.ndim == 2 else None  # (a vector: all of it, as PyTorch passes it on)
    if dim is not None and len(dim) == 2:
        return matrix_norm(A, "fro" if ord is None else ord, dim, keepdim, dtype=dtype, out=out)
    if isinstance(ord, str):
        raise RuntimeError(f"linalg.norm: ord {ord!r} is a matrix norm, but dim names {len(dim or ())} dims")
    return vector_norm(A, 2 if ord is None else ord, dim, keepdim, dtype=dtype, out=out)


@names("norm", method=False)
def norm(input, p="fro", dim=None, keepdim=False, out=None, dtype=None):
    """Tensor.norm / torch.norm: 'fro' (the 2-norm of the elements over dim), 'nuc', or a number p
    (a vector p-norm over dim, or over all elements)."""
    if isinstance(dim, int):
        dim = (dim,)
    if p is None or (p == "fro" and (dim is None or len(dim) <= 2)):
        p = 2
    if isinstance(p, str):  # 'nuc', or 'fro' over more than two dims: a matrix norm (which wants two dims)
        dims = tuple(range(input.ndim)) if dim is None else dim
        return matrix_norm(input, p, dims, keepdim, dtype=dtype, out=out)
    return vector_norm(input, p, dim, keepdim, dtype=dtype, out=out)


@names("norm", function=False)
def norm_method(input, p="fro", dim=None, keepdim=False, dtype=None):
    """x.norm(p, dim, keepdim, dtype): torch.norm's method, whose fifth parameter is dtype (the
    function's is out)."""
    return norm(input, p, dim, keepdim, dtype=dtype)


@names("norm_except_dim", method=False)
def norm_except_dim(v, pow=2, dim=0):
    """‖v‖_pow over every axis but ``dim``, that axis kept and the others kept as size 1 (weight
    normalization's ‖v‖ per output unit); over all of v, a 0-d norm, when dim is -1 (PyTorch's sentinel, not
    the last axis)."""
    if dim == -1:
        return vector_norm(v, pow)
    kept = dim_index(dim, v.ndim)
    others = tuple(a for a in range(v.ndim) if a != kept)
    if not others:  # a vector's norm per element, |v_i| (an empty dim would mean all of them)
        return vector_norm(shape.unsqueeze(v, -1), pow, -1)
    return vector_norm(v, pow, others, keepdim=True)


@names(functions=("_weight_norm",), method=False)
def weight_norm(v, g, dim=0):
    """w = g · v / ‖v‖, the norm over every axis but ``dim`` (all of them for -1): Salimans & Kingma's weight
    normalization, torch._weight_norm. Its node is PyTorch's WeightNormInterfaceBackward0 where PyTorch's fused
    kernel serves (dim the first or last axis), a product (MulBackward0) elsewhere, as there."""
    w = v * (g / norm_except_dim(v, 2, dim))
    fused = dim in (0, v.ndim - 1)
    return named_node(w, None, "WeightNormInterfaceBackward0", (v, g)) if fused else w


@names("frobenius_norm", method=False)
def frobenius_norm(input, dim, keepdim=False, *, out=None):
    """√(Σ x²) over one or two dims (torch.frobenius_norm, deprecated in PyTorch for
    linalg.vector_norm)."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if len(dims) > 2:
        raise RuntimeError(f"Expected at most 2 dimensions, but got {len(dims)} dimensions instead.")
    return vector_norm(input, 2, dims, keepdim, out=out)


@names("nuclear_norm", method=False)
@refusing_none("dim")
def nuclear_norm(input, dim=None, keepdim=False, *, out=None):
    """Σσ, the sum of the singular values, of each matrix over ``dim`` (the last two by default;
    torch.nuclear_norm, deprecated in PyTorch for linalg.matrix_norm). As PyTorch's overloads,
    nuclear_norm(A, True) means keepdim."""
    if isinstance(dim, bool):
        dim, keepdim = None, dim
    return matrix_norm(input, "nuc", (-2, -1) if dim is None else tuple(dim), keepdim, out=out)


@names("cdist", method=False)
@node_named("CdistBackward0")
@watches_arguments("x1", "x2")  # (PyTorch's node saves them: writing one refuses)
def cdist(x1, x2, p=2.0, compute_mode=None):
    """The p-norm distance between every row of x1 and every row of x2 (batched): (..., P, R)."""
    for name, x in (("X1", x1), ("X2", x2)):  # (PyTorch's checks name the first that fails)
        if x.ndim < 2:
            raise RuntimeError(f"cdist only supports at least 2D tensors, {name} got: {x.ndim}D")
    if x1.shape[-1] != x2.shape[-1]:
        raise RuntimeError(f"X1 and X2 must have the same number of columns. X1: {x1.shape[-1]} X2: {x2.shape[-1]}")
    refuse_unbroadcastable(x1.shape[:-2], x2.shape[:-2])  # (the batch dims: the rows' differences would name others)
    for name, x in (("X1", x1), ("X2", x2)):
        if x.dtype.kind != "f":
            raise RuntimeError(f"cdist only supports floating-point dtypes, {name} got: {type_name(x.dtype)}")
    require_scalar_type((x1, x2))
    if not p >= 0:  # (-inf and NaN too: PyTorch's cdist has no -inf "distance")
        raise RuntimeError("cdist only supports non-negative p values")
    if x1.dtype == xp.float16:  # (PyTorch's kernel has no half version)
        raise NotImplementedError("\"cdist\" not implemented for 'Half'")
    if compute_mode not in _CDIST_MODES:
        raise ValueError(f"{compute_mode} is not a valid value for compute_mode")
    use_mm = _CDIST_MODES[compute_mode]
    if p == 2 and x1.numel() and x2.numel() and (use_mm or (use_mm is None and max(x1.shape[-2], x2.shape[-2]) > 25)):
        batch = tuple(xp.broadcast_shapes(tuple(x1.shape[:-2]), tuple(x2.shape[:-2])))
        return EuclideanDistance.apply(x1.expand(*batch, *x1.shape[-2:]), x2.expand(*batch, *x2.shape[-2:]))
    differences = shape.unsqueeze(x1, -2) - shape.unsqueeze(x2, -3)
    return distance_norm(differences, p, -1, "_cdist_backward")


# compute_mode: whether p = 2 goes through a matrix product (None: where either side has more than 25 rows)
_CDIST_MODES = {None: None, "use_mm_for_euclid_dist_if_necessary": None, "use_mm_for_euclid_dist": True,
                "donot_use_mm_for_euclid_dist": False}


class EuclideanDistance(Primitive):
    """PyTorch's matrix-product Euclidean distance (cdist's p = 2 path): d_ij = √max(0, ‖x_i‖² + ‖y_j‖² − 2 x_i·y_j),
    the three terms one product of [−2x, ‖x‖², 1] and [y, 1, ‖y‖²]. Faster than the differences and less exact:
    identical points come out √(rounding) apart (1e-3 in float32), as PyTorch's do. The gradient is PyTorch's
    _euclidean_dist_backward, with r = dL/dd / d (0 where d = 0):
        dL/dx_i = x_i Σ_j r_ij − Σ_j r_ij y_j,   dL/dy_j = y_j Σ_i r_ij − Σ_i r_ij x_i"""

    pytorch_name = "EuclideanDistBackward0"
    saves_output = True

    def forward(self, x1, x2):
        x1_norm = (x1 * x1).sum(-1, keepdims=True)
        x2_norm = (x2 * x2).sum(-1, keepdims=True)
        x1_ = xp.concatenate([x1 * -2, x1_norm, xp.ones_like(x1_norm)], -1)
        x2_ = xp.concatenate([x2, xp.ones_like(x2_norm), x2_norm], -1)
        return xp.sqrt(xp.maximum(x1_ @ xp.swapaxes(x2_, -1, -2), 0))

    def backward(self, grad, distance, x1, x2):
        at_zero = distance._data == 0
        one, zero = (Tensor._make(xp.full((), value, dtype=grad.dtype)) for value in (1, 0))
        ratio = Where.apply(zero, grad / Where.apply(one, distance, condition=at_zero), condition=at_zero)
        return (x1 * ratio.sum(-1, keepdim=True) - ratio @ x2,
                x2 * shape.unsqueeze(ratio.sum(-2), -1) - ratio.mT @ x1)


def distance_norm(differences, p, dim, gradient_kernel):
    """‖differences‖_p over ``dim`` as PyTorch's cdist and pdist take it: with p = inf every tied largest
    |difference| takes the whole gradient (a norm shares it among them); with p = 0 the gradient is zeros (a
    norm gives none); and the gradient has no derivative (``gradient_kernel`` names PyTorch's)."""
    differences = _floating(differences, None, "cdist")
    return VectorNorm.apply(differences, ord=float(p), axes=normalize_dims(dim, differences.ndim), keepdim=False,
                            each_tie_whole=True, count_has_zeros=True, gradient_kernel=gradient_kernel)


@names("dist")
@node_named("DistBackward0")
@watches_arguments("input", "other")  # (PyTorch's node saves them: writing one refuses)
def dist(input, other, p=2):
    """‖input - other‖_p over all elements (the two broadcast)."""
    tensors_only("dist", input, other)
    return vector_norm(input - other, p)


@names("renorm", inplace="renorm_")
@node_named("RenormBackward0")
def renorm(input, p, dim, maxnorm, *, out=None):
    """Each sub-tensor input.select(dim, i) whose p-norm exceeds maxnorm, scaled down to norm maxnorm:
        y_i = x_i · maxnorm / (‖x_i‖_p + 1e-7)   where ‖x_i‖_p > maxnorm,   x_i elsewhere
    (PyTorch's 1e-7 included). Differentiable through the norm, as PyTorch's."""
    if input.ndim < 2:
        raise RuntimeError(f"renorm: input needs at least 2 dimensions, got {input.ndim} dimensions")
    if not p > 0:  # (a NaN p or maxnorm too, as PyTorch's checks)
        raise RuntimeError("renorm: non-positive-norm not supported")
    if not maxnorm >= 0:
        raise RuntimeError(f"renorm: expected maxnorm to be >= 0 but got {maxnorm}")
    dim = dim_index(dim, input.ndim)
    others = tuple(d for d in range(input.ndim) if d != dim)
    norms = vector_norm(input, p, others, keepdim=True)
    too_long = norms._data > maxnorm
    scale = Where.apply(maxnorm / (norms + 1e-7), Tensor._make(xp.ones((), dtype=input.dtype)), condition=too_long)
    return write_out(input * scale, out)
