"""``autograd.fft``: torch.fft's discrete Fourier transforms, differentiable (the maths and the
gradients are in ops/fourier.py), and the helpers fftfreq, rfftfreq, fftshift and ifftshift.

Each transform takes PyTorch's arguments: ``n`` (or ``s`` for several dims) crops or pads the
input with zeros to that many points (-1 in ``s`` keeps a dim's length), ``dim`` says which dims,
and ``norm`` is "backward" (the default: 1/n on the inverse), "forward" (1/n on the forward) or
"ortho" (1/√n on both). Integer inputs are transformed in the default floating dtype; float32
gives complex64 and float64 complex128.
"""

import operator
import warnings

from .backend import errstate, get_default_dtype, xp
from .graph import program_stacklevel
from .ops.axes import int_argument
from .ops.conjugation import conj
from .ops.conversion import type_name
from .ops.fourier import FFT, OTHER_NORM, InverseRealFFT, RealFFT
from .ops.names import taking_numpy_keywords
from .ops.outputs import write_out
from .size import refuse_negative_sizes
from .tensor import Tensor, tensor_from

__all__ = ["fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2", "rfftn", "irfftn",
           "hfft", "ihfft", "hfft2", "ihfft2", "hfftn", "ihfftn", "fftfreq", "rfftfreq", "fftshift", "ifftshift"]


def _norm(norm):
    if norm is None:
        return "backward"
    if norm not in OTHER_NORM:
        raise RuntimeError(f'Invalid normalization mode: "{norm}"')
    return norm


def _argument(input, op):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(input).__name__}")
    return input


def _transformable(input, op, real=False):
    """input in a dtype the transforms take: integers in the default floating dtype."""
    if real:
        _refuse_complex(input, op)
    if input.dtype.itemsize == 2 and input.dtype.kind == "f":
        raise RuntimeError("Unsupported dtype Half")
    return input if input.dtype.kind in "fc" else input.to(get_default_dtype())


def _refuse_complex(input, op):
    if input.dtype.kind == "c":
        found = {"complex64": "ComplexFloat", "complex128": "ComplexDouble"}[input.dtype.name]
        if op in ("ihfft2", "ihfftn"):
            raise RuntimeError(f"Only supports floating-point dtypes, but found: {found}")
        raise RuntimeError(f"{op} expects a real{'-valued' if op == 'rfftn' else ''} input tensor, but got {found}")


def _listed(dim):
    """One dim or several as a tuple of ints (a NumPy integer is an int, as PyTorch reads it)."""
    return (operator.index(dim),) if hasattr(dim, "__index__") else tuple(operator.index(d) for d in dim)


def _dim(dim, ndim):
    if ndim == 0:
        raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"Dimension out of range (expected to be in range of [{-max(ndim, 1)}, {max(ndim, 1) - 1}], "
                         f"but got {dim})")
    return dim % max(ndim, 1)


def _plan(input, s, dim, every_dim, last_is_half=False):
    """(dims, sizes): the dims to transform, non-negative, and the number of points along each.
    ``every_dim``: the default dims when neither s nor dim is given (all, or the last two)."""
    if s is not None:  # (one int is a one-dim s, as PyTorch's parser reads int[1]: fftn(x, s=8, dim=0))
        s = _listed(s)
    if dim is None:
        if s is not None:
            if len(s) > input.ndim:
                raise RuntimeError(f"Got shape with {len(s)} values but input tensor only has {input.ndim} dimensions.")
            dims = tuple(range(input.ndim - len(s), input.ndim))
        else:
            dims = tuple(range(input.ndim)) if every_dim is None else every_dim
    else:
        dims = _listed(dim)
        if s is not None and len(s) != len(dims):
            raise RuntimeError("When given, dim and shape arguments must have the same length")
    dims = tuple(_dim(d, input.ndim) for d in dims)
    if len(set(dims)) != len(dims):
        raise RuntimeError("FFT dims must be unique")
    if s is None:
        sizes = [input.shape[d] for d in dims]
        if last_is_half and dims:  # a half spectrum of m terms comes from 2(m - 1) points
            sizes[-1] = 2 * (input.shape[dims[-1]] - 1)
    else:
        sizes = [input.shape[d] if n == -1 else n for d, n in zip(dims, s)]
        if last_is_half and dims and s[-1] == -1:
            sizes[-1] = 2 * (input.shape[dims[-1]] - 1)
    for n in sizes:
        if n < 1:
            raise RuntimeError(f"Invalid number of data points ({n}) specified")
    return dims, tuple(sizes)


def _checked(input, s, dim, every_dim, op, real=False, last_is_half=False):
    """(input in a dtype the transforms take, dims, sizes), checked in PyTorch's order: the 1-D transforms
    check the dtype first, the others the dims (rfftn refuses a complex input first)."""
    if op in ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft"):
        input = _transformable(_argument(input, op), op, real)
        return (input, *_plan(input, s, dim, every_dim, last_is_half))
    if op == "rfftn":
        _refuse_complex(_argument(input, op), op)
    dims, sizes = _plan(_argument(input, op), s, dim, every_dim, last_is_half)
    if real or last_is_half:  # (the real transforms halve their last dim: they need one)
        _refuse_no_dims(dims, op)
    return _transformable(input, op, real), dims, sizes


def _complex_transform(input, s, dim, norm, out, inverse, op, every_dim=None):
    input, dims, sizes = _checked(input, s, dim, every_dim, op)
    return _written(FFT.apply(input, dims=dims, sizes=sizes, norm=_norm(norm), inverse=inverse), out, op)


def _nd_name(op):
    """The 2-D transforms are named as the n-D ones in PyTorch's messages."""
    return op[:-1] + "n" if op.endswith("2") else op


def _refuse_no_dims(dims, op):
    if not dims:
        raise RuntimeError(f"{_nd_name(op)} must transform at least one axis")


def _real_transform(input, s, dim, norm, out, op, every_dim=None):
    input, dims, sizes = _checked(input, s, dim, every_dim, op, real=True)
    return _written(RealFFT.apply(input, dims=dims, sizes=sizes, norm=_norm(norm)), out, op)


def _inverse_real_transform(input, s, dim, norm, out, op, every_dim=None):
    input, dims, sizes = _checked(input, s, dim, every_dim, op, last_is_half=True)
    return _written(InverseRealFFT.apply(input, dims=dims, sizes=sizes, norm=_norm(norm)), out, op)


def _written(result, out, op):
    """result, or result written into out= with PyTorch's checks: a complex spectrum goes into a complex tensor,
    a real signal into a floating one (of any precision, but for ifft's and ihfft's, which must match)."""
    op = _nd_name(op)
    if isinstance(out, Tensor):
        wanted, kind = ("complex", "c") if result.dtype.kind == "c" else ("floating point", "f")
        if out.dtype.kind != kind:
            raise RuntimeError(f"{op} expects a {wanted} output tensor, but got {type_name(out.dtype)}")
    return write_out(result, out, same_dtype=op in ("ifft", "ihfft"))


def _one(n, dim, op):
    """A one-dim transform's ``n`` and ``dim`` as the n-dim plan takes them: ints only, as PyTorch's parser
    reads them (a tuple dim is fftn's, refused here with "fft_fft(): argument 'dim' must be int, not tuple")."""
    if n is not None:
        n = int_argument(n, f"fft_{op}", "n")
        if n < 1:  # (-1 keeps a dim's length in fftn's s, never in n)
            raise RuntimeError(f"Invalid number of data points ({n}) specified")
        n = (n,)
    return n, int_argument(dim, f"fft_{op}", "dim", arrays=False)


def fft(input, n=None, dim=-1, norm=None, *, out=None):
    """y_k = Σ_t x_t e^(-2πi kt/n) along ``dim``."""
    return _complex_transform(input, *_one(n, dim, "fft"), norm, out, False, "fft")


def ifft(input, n=None, dim=-1, norm=None, *, out=None):
    """x_t = (1/n) Σ_k y_k e^(2πi kt/n) along ``dim``."""
    return _complex_transform(input, *_one(n, dim, "ifft"), norm, out, True, "ifft")


def fft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    return fftn(input, s, dim, norm, out=out)


def ifft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    return ifftn(input, s, dim, norm, out=out)


def fftn(input, s=None, dim=None, norm=None, *, out=None):
    """The transform over several dims (all of them by default), one after the other."""
    return _complex_transform(input, s, dim, norm, out, False, "fftn")


def ifftn(input, s=None, dim=None, norm=None, *, out=None):
    return _complex_transform(input, s, dim, norm, out, True, "ifftn")


def rfft(input, n=None, dim=-1, norm=None, *, out=None):
    """The first n//2 + 1 terms of fft of a real input (the rest are their conjugate mirror)."""
    return _real_transform(input, *_one(n, dim, "rfft"), norm, out, "rfft")


def irfft(input, n=None, dim=-1, norm=None, *, out=None):
    """The real n-point signal (n = 2(m - 1) by default) whose rfft is the m-term half spectrum input."""
    return _inverse_real_transform(input, *_one(n, dim, "irfft"), norm, out, "irfft")


def rfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    return rfftn(input, s, dim, norm, out=out)


def irfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    return irfftn(input, s, dim, norm, out=out)


def rfftn(input, s=None, dim=None, norm=None, *, out=None):
    """fftn of a real input with the last dim halved (rfft along it)."""
    return _real_transform(input, s, dim, norm, out, "rfftn")


def irfftn(input, s=None, dim=None, norm=None, *, out=None):
    return _inverse_real_transform(input, s, dim, norm, out, "irfftn")


def hfft(input, n=None, dim=-1, norm=None, *, out=None):
    """The real spectrum of a signal with Hermitian symmetry, given as its first half:
    irfft of the conjugate with the scale on the other side."""
    return _hermitian_transform(input, *_one(n, dim, "hfft"), norm, out, "hfft")


def ihfft(input, n=None, dim=-1, norm=None, *, out=None):
    """The inverse of hfft: the conjugate of rfft with the scale on the other side."""
    return _conjugated_real_transform(input, *_one(n, dim, "ihfft"), norm, out, "ihfft")


def hfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    return hfftn(input, s, dim, norm, out=out)


def ihfft2(input, s=None, dim=(-2, -1), norm=None, *, out=None):
    return _conjugated_real_transform(input, s, dim, norm, out, "ihfft2")


def hfftn(input, s=None, dim=None, norm=None, *, out=None):
    return _hermitian_transform(input, s, dim, norm, out, "hfftn")


def _hermitian_transform(input, s, dim, norm, out, op):
    return _inverse_real_transform(conj(_argument(input, op)), s, dim, OTHER_NORM[_norm(norm)], out, op)


def ihfftn(input, s=None, dim=None, norm=None, *, out=None):
    return _conjugated_real_transform(input, s, dim, norm, out, "ihfftn")


def _conjugated_real_transform(input, s, dim, norm, out, op):
    return _written(conj(_real_transform(input, s, dim, OTHER_NORM[_norm(norm)], None, op)), out, op)


def fftfreq(n, d=1.0, *, out=None, dtype=None, layout=None, device=None, requires_grad=False):
    """The frequencies of fft's n terms for sample spacing d: [0, 1, ..., n/2 - 1, -n/2, ..., -1] / (d n)."""
    refuse_negative_sizes((n,))
    counts = xp.arange(n, dtype=xp.float64)
    counts[(n + 1) // 2:] -= n
    return _frequencies("fftfreq", counts, n * d, out, dtype, requires_grad)


def rfftfreq(n, d=1.0, *, out=None, dtype=None, layout=None, device=None, requires_grad=False):
    """The frequencies of rfft's n//2 + 1 terms: [0, 1, ..., n//2] / (d n)."""
    return _frequencies("rfftfreq", xp.arange(max(n // 2 + 1, 0), dtype=xp.float64), n * d, out, dtype, requires_grad)


def _frequencies(op, counts, extent, out, dtype, requires_grad):
    """counts / extent in ``dtype`` (out's, when only out is given; else the default), as PyTorch's arange-based
    helpers make it: a spacing of 0 gives infinities (and NaN at 0), not an error."""
    if out is not None:
        if dtype is not None and xp.dtype(dtype) != out.dtype:
            raise RuntimeError(f"dtype {type_name(xp.dtype(dtype))} does not match dtype of out parameter "
                               f"({type_name(out.dtype)})")
        dtype = out.dtype
    dtype = xp.dtype(dtype or get_default_dtype())
    if dtype.kind == "c":  # (PyTorch's arange, which these are made of, has no complex kernel)
        raise NotImplementedError(f'"arange_cpu" not implemented for \'{type_name(dtype)}\'')
    if dtype.kind != "f":
        raise RuntimeError(f"{op} requires a floating point or complex dtype")
    with errstate(divide="ignore", invalid="ignore"):
        # PyTorch multiplies arange's values by 1/(n·d) in the dtype's opmath (float32 below float64), rounding twice
        opmath = xp.float64 if dtype == xp.float64 else xp.float32
        values = counts.astype(opmath) * opmath(1.0 / xp.float64(extent))
    result = tensor_from(values.astype(dtype), requires_grad=requires_grad)
    if out is not None and out.numel() != result.numel():  # (PyTorch's arange warns, then resizes out)
        warnings.warn(f"The number of elements in the out tensor of shape {list(out.shape)} is {out.numel()} which "
                      f"does not match the computed number of elements {result.numel()}. Note that this may occur "
                      f"as a result of rounding error. The out tensor will be resized to a tensor of shape "
                      f"({result.numel()},).", UserWarning, stacklevel=program_stacklevel())
        out.resize_(result.shape)
    return write_out(result, out)


def fftshift(input, dim=None):
    """The zero frequency moved to the middle: a roll by n//2 along each dim (all by default)."""
    return _shift(input, dim, lambda n: n // 2)


def ifftshift(input, dim=None):
    """The inverse of fftshift: a roll by -(n//2)."""
    return _shift(input, dim, lambda n: -(n // 2))


def _shift(input, dim, by):
    dims = tuple(range(input.ndim)) if dim is None else _listed(dim)
    if not dims:  # (a roll by no shifts, as PyTorch's)
        raise RuntimeError("`shifts` required")
    dims = tuple(_dim(d, input.ndim) for d in dims)
    return input.roll(tuple(by(input.shape[d]) for d in dims), dims)


taking_numpy_keywords(globals(), __all__)  # (axis= for dim=, keepdims= for keepdim=)
