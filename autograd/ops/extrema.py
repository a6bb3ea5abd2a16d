"""Largest and smallest elements over several dims (amax, amin, aminmax), and reductions that skip
NaN (nansum, nanmean).

    y = max_i x_i over dims;   dL/dx_i = dL/dy / k at the k elements equal to y, 0 elsewhere

Unlike max(dim), which sends the gradient to the one index it returns, amax shares it
evenly between ties, as PyTorch's.
"""


from ..backend import errstate, xp
from ..primitive import Primitive, named_node, node_named
from ..return_types import return_type
from ..tensor import Tensor
from .axes import normalize_dims
from .conjugation import refuse_unordered
from .conversion import type_name
from .elementwise import row_major
from .names import names
from .outputs import write_out
from .reductions import spread

AminmaxResult = return_type("aminmax", ["min", "max"])


class ExtremumOverDims(Primitive):
    """y = max (or min) of x over axes;   dL/dx_i = dL/dy · [x_i = y] / #{j: x_j = y}"""

    saves_output = True

    def forward(self, x):
        refuse_unordered(x, "amax/amin")
        return row_major(self.find(x, axis=self.axes, keepdims=self.keepdim))  # (PyTorch's reductions: row-major)

    def name(self):  # (PyTorch's AmaxBackward0 and AminBackward0; aminmax names its own)
        return self.pytorch_name or ("AmaxBackward0" if self.find is xp.max else "AminBackward0")

    def backward(self, grad, y, x):
        attains = x._data == spread(y, x, self.axes, self.keepdim)._data
        share = attains / attains.sum(axis=self.axes, keepdims=True)
        return (spread(grad, x, self.axes, self.keepdim) * Tensor._make(share.astype(grad.dtype)),)


def _over(input, dim, keepdim, find, op, out=None):
    if out is not None and out.dtype != input.dtype:  # (PyTorch casts amax/amin into no other dtype)
        raise RuntimeError(f"Expected the dtype for input and out to match, but got {type_name(input.dtype)} for "
                           f"input's dtype and {type_name(out.dtype)} for out's dtype.")
    everything = dim is None or (isinstance(dim, (tuple, list)) and not dim)  # dim=() reduces every dim
    axes = normalize_dims(None if everything else dim, input.ndim)
    if everything and input.numel() == 0:  # PyTorch's RuntimeError: no dim to name
        raise RuntimeError(f"{op}(): Expected reduction dim to be specified for input.numel() == 0. Specify the "
                           "reduction dim with the 'dim' argument.")
    for axis in axes:
        if input.shape[axis] == 0:
            raise IndexError(f"{op}(): Expected reduction dim {axis} to have non-zero size.")
    return ExtremumOverDims.apply(input, axes=axes, keepdim=keepdim, find=find)


@names("amax")
def amax(input, dim=(), keepdim=False, *, out=None):
    """The largest element over dim (all dims when empty); ties share the gradient."""
    return write_out(_over(input, dim, keepdim, xp.max, "amax", out), out)


@names("amin")
def amin(input, dim=(), keepdim=False, *, out=None):
    """The smallest element over dim (all dims when empty); ties share the gradient."""
    return write_out(_over(input, dim, keepdim, xp.min, "amin", out), out)


@names("aminmax")
@node_named("AminmaxBackward0")
def aminmax(input, *, dim=None, keepdim=False, out=None):
    """(min, max) of the elements (over dim)."""
    if input.dtype.kind == "c":  # (PyTorch's two messages: its dim and all-elements kernels)
        if dim is not None:
            raise RuntimeError(f"aminmax not implemented for {type_name(input.dtype)}")
        raise NotImplementedError(f"\"aminmax_cpu\" not implemented for '{type_name(input.dtype)}'")
    if dim is None and input.numel() == 0:
        raise RuntimeError("aminmax(): cannot compute aminmax over an empty dimension as the operation has no "
                           "identity.")
    dims = () if dim is None else dim
    return write_out(AminmaxResult(amin(input, dims, keepdim), amax(input, dims, keepdim)), out)


class WithoutNan(Primitive):
    """y = 0 where x is NaN, else x;   dL/dx = dL/dy · [x is not NaN]

    The gradient is multiplied by the mask, not selected, as PyTorch's nansum_backward: an infinite or NaN
    dL/dy gives the NaNs NaN (nanmean of an all-NaN row divides by a count of 0, so its whole row gets NaN)."""

    def forward(self, x):
        return xp.where(xp.isnan(x), xp.zeros((), dtype=x.dtype), x)

    def backward(self, grad, y, x):
        with errstate(invalid="ignore"):
            return (grad * Tensor._make((~xp.isnan(x._data)).astype(grad.dtype)),)


def _without_nan(input):
    return input if input.dtype.kind != "f" else WithoutNan.apply(input)


@names("nansum")
def nansum(input, dim=None, keepdim=False, *, dtype=None, out=None):
    """Σ of the elements that are not NaN (their gradient is 0)."""
    if input.dtype.kind == "c":
        raise RuntimeError("nansum on CPU does not support complex inputs")
    x = _without_nan(input)  # (before dtype=: a NaN cast to an integer dtype would be a garbage term, not 0)
    total = (x if dtype is None else x.to(dtype)).sum(dim, keepdim)  # (int32's sum is int64, as NumPy's: back)
    return write_out(named_node(total if dtype is None else total.to(dtype), None, "NansumBackward0", (input,)), out)


@names("nanmean")
def nanmean(input, dim=None, keepdim=False, *, dtype=None, out=None):
    """The mean of the elements that are not NaN (NaN where all are)."""
    if input.dtype.kind not in "fc":  # (even with a floating dtype=, as PyTorch)
        raise RuntimeError("nanmean(): expected input to have floating point or complex dtype but got "
                           f"{type_name(input.dtype)}")
    if input.dtype.kind == "c":  # (PyTorch's nanmean is its nansum's, which refuses complex numbers)
        raise RuntimeError("nansum on CPU does not support complex inputs")
    x = input if dtype is None else input.to(dtype)
    count = Tensor._make((~xp.isnan(x._data)).sum(axis=normalize_dims(dim, x.ndim), keepdims=keepdim)
                         .astype(x.dtype))
    with errstate(invalid="ignore", divide="ignore"):
        return write_out(_without_nan(x).sum(dim, keepdim) / count, out)
