"""``autograd.<name>(input, ...)`` for the ops whose arithmetic lives in a Tensor method
(exp, sum, softmax, reshape, ...), with PyTorch's keyword names (``input=``, ``dim=``,
``keepdim=``, ``dtype=``, ``out=``), so ``autograd.exp(input=x, out=y)`` works as
``torch.exp(input=x, out=y)``. They register functions only: the methods exist already.
"""

import inspect

from ..backend import int64
from ..tensor import Tensor
from .axes import extremum_overload, unbiased_overload
from .names import names
from .outputs import accumulate_dtype, refuse_out_overlap, write_out


def _unary(name, inplace=None):
    keeps_dtype = name == "abs"  # (|x| of real x has x's dtype, and PyTorch writes it into an out of no other)

    def function(input, *, out=None):
        same_dtype = keeps_dtype and isinstance(input, Tensor) and input.dtype.kind != "c"
        return write_out(getattr(input, name)(), out, same_dtype=same_dtype)

    function.__name__ = name
    function.__doc__ = f"autograd.{name}(input) is input.{name}() (PyTorch's torch.{name})."
    names(name, method=False, inplace=inplace)(function)


for _name in ("abs", "exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "relu"):
    _unary(_name)
_unary("square", inplace="square_")  # (x.square_(): the method square is elementwise.py's, x · x)


def _in_place_function(name):
    def function(input, *args, **kwargs):
        return getattr(input, name)(*args, **kwargs)

    function.__name__ = name
    function.__doc__ = f"autograd.{name}(input, ...) is input.{name}(...): it changes input and returns it."
    names(name, method=False)(function)


# the in-place methods PyTorch also offers as functions (torch.exp_(x), torch.zero_(x), ...)
IN_PLACE_FUNCTIONS = (
    "abs_", "acos_", "acosh_", "addmv_", "arccos_", "arccosh_", "arcsin_", "arcsinh_", "arctan_", "arctanh_",
    "as_strided_", "asin_", "asinh_", "atan_", "atanh_", "ceil_", "clamp_", "clamp_max_", "clamp_min_", "clip_",
    "conj_physical_", "cos_", "cosh_", "deg2rad_", "detach_", "erf_", "erfc_", "exp2_", "exp_", "expm1_", "fill_",
    "fix_", "floor_", "frac_", "gcd_",
    "i0_", "index_put_", "lcm_", "ldexp_", "log10_", "log1p_", "log2_", "log_", "logit_", "nan_to_num_", "neg_",
    "negative_", "rad2deg_", "reciprocal_", "relu_", "resize_as_", "round_", "rsqrt_", "sigmoid_", "sin_", "sinc_",
    "sinh_", "sqrt_", "square_", "tan_", "tanh_", "trunc_", "xlogy_", "zero_",
)
for _name in IN_PLACE_FUNCTIONS:
    _in_place_function(_name)


def _cast(input, dtype):
    return input if dtype is None else input.to(dtype)


@names("sum", method=False)
def sum(input, dim=None, keepdim=False, *, dtype=None, out=None):
    """Σ of input's elements (over dim)."""
    return write_out(input.sum(dim, keepdim, dtype=accumulate_dtype(dtype, out)), out, dtype=dtype)


@names("mean", method=False)
def mean(input, dim=None, keepdim=False, *, dtype=None, out=None):
    """The mean of input's elements (over dim)."""
    return write_out(input.mean(dim, keepdim, dtype=dtype), out, dtype=dtype)


@names("var", method=False)
def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None, out=None):
    """Σ |x - mean|² / (n - correction); var(input, False) is PyTorch's unbiased overload."""
    dim, unbiased = unbiased_overload("var", dim, unbiased, keepdim, correction)
    return write_out(input.var(dim, unbiased, keepdim, correction=correction), out)


@names("std", method=False)
def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None, out=None):
    """√var; std(input, False) is PyTorch's unbiased overload."""
    dim, unbiased = unbiased_overload("std", dim, unbiased, keepdim, correction)
    return write_out(input.std(dim, unbiased, keepdim, correction=correction), out)


def max(input, *args, out=None, **kwargs):
    """The largest element; with dim, (values, indices); with a tensor alone in dim's place (or
    other=, PyTorch's keyword), the elementwise maximum."""
    dim, keepdim, other = extremum_overload("max", args, kwargs)
    if other is not None:
        return write_out(input.maximum(other), out)
    refuse_out_overlap(input, out)
    return write_out(input.max() if dim is None else input.max(dim, keepdim), out, same_dtype=True)


def min(input, *args, out=None, **kwargs):
    """The smallest element; with dim, (values, indices); with a tensor alone in dim's place (or
    other=), the elementwise minimum."""
    dim, keepdim, other = extremum_overload("min", args, kwargs)
    if other is not None:
        return write_out(input.minimum(other), out)
    refuse_out_overlap(input, out)
    return write_out(input.min() if dim is None else input.min(dim, keepdim), out, same_dtype=True)


# (the overloads are told apart by how dim came, which a Python signature cannot say: PyTorch's documented one,
# given before they are declared, so that names() reads dim and keepdim there and takes NumPy's axis and keepdims)
max.__signature__ = min.__signature__ = inspect.signature(
    lambda input, dim=None, keepdim=False, *, other=None, out=None: None)
names("max", method=False)(max)
names("min", method=False)(min)


@names("maximum", method=False)
def maximum(input, other, *, out=None):
    return write_out(input.maximum(other), out)


@names("minimum", method=False)
def minimum(input, other, *, out=None):
    return write_out(input.minimum(other), out)


@names("argmax", method=False)
def argmax(input, dim=None, keepdim=False, *, out=None):
    return write_out(input.argmax(dim, keepdim), out, dtype=int64)  # (indices: out must be int64, as PyTorch's)


@names("argmin", method=False)
def argmin(input, dim=None, keepdim=False, *, out=None):
    return write_out(input.argmin(dim, keepdim), out, dtype=int64)  # (indices: out must be int64, as PyTorch's)


@names("softmax", method=False)
def softmax(input, dim, dtype=None, *, out=None):
    return write_out(_cast(input, dtype).softmax(dim), out)


@names("log_softmax", method=False)
def log_softmax(input, dim, dtype=None, *, out=None):
    return write_out(_cast(input, dtype).log_softmax(dim), out)


@names("reshape", method=False)
def reshape(input, shape):
    return input.reshape(shape)


@names("flatten", method=False)
def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)


@names("transpose", method=False)
def transpose(input, dim0, dim1):
    return input.transpose(dim0, dim1)


@names("permute", method=False)
def permute(input, dims):
    return input.permute(*dims)


@names("unsqueeze", method=False)
def unsqueeze(input, dim):
    return input.unsqueeze(dim)


@names("squeeze", method=False)
def squeeze(input, dim=None):
    return input.squeeze(dim)


@names("t", method=False)
def t(input):
    """The transpose of a matrix (vectors and scalars unchanged)."""
    return input.t()


@names("clone", method=False)
def clone(input, *, memory_format=None):
    """A recorded copy, laid out as ``memory_format`` asks (constants.memory_format)."""
    return input.clone(memory_format=memory_format)


@names("detach", method=False)
def detach(input):
    return input.detach()


@names("fill", method=False)
def fill(input, value, *, out=None):
    """A new tensor of input's shape and dtype holding ``value`` everywhere (x.clone().fill_(value)):
    dL/dinput = 0, dL/dvalue = Σ dL/dy for a 0-d tensor value."""
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with {value.ndim} "
                           "dimensions.")
    return write_out(input.clone().fill_(value), out)


@names("get_device", method=False)
def get_device(input):
    """input's GPU index, or -1 on the CPU (x.get_device())."""
    if not isinstance(input, Tensor):
        raise TypeError(f"get_device(): argument 'input' (position 1) must be Tensor, not {type(input).__name__}")
    return input.get_device()
