"""The complex-number views of a tensor, for real tensors: ``conj()``, ``resolve_conj()``,
``resolve_neg()``, ``conj_physical()``, ``.real``, ``.imag``, ``isreal()``, ``angle()``, and the
conjugate transposes ``.H`` and ``.mH``.

On a real tensor conjugation changes nothing, so these are the tensor itself (or its
transpose), as in PyTorch. A complex tensor is conjugated for real (a copy), but gets no
gradient: this engine differentiates real tensors only, so one that requires grad is refused.
"""

import math

from ..backend import get_default_dtype, xp
from ..tensor import Tensor
from .elementwise import Where
from .names import names


def _conjugated(input):
    if input.dtype.kind != "c":
        return input
    if input.requires_grad:
        raise NotImplementedError("conjugating a complex tensor that requires grad: complex gradients are not "
                                  "supported here")
    return Tensor._make(xp.conj(input._data))


@names("conj", "resolve_conj", "resolve_neg", "conj_physical")
def conj(input):
    """The complex conjugate: input itself when it is real."""
    return _conjugated(input)


@names("conj_physical_", function=False)
def conj_physical_(input):
    """Conjugated in place: nothing to do for a real tensor."""
    if input.dtype.kind == "c":
        input.copy_(_conjugated(input))
    return input


names("real", function=False)(property(lambda x: x if x.dtype.kind != "c" else Tensor._make(x._data.real)))


@names("real", method=False)
def real(input):
    """The real part: input itself when it is real."""
    return input.real


def _imaginary(input):
    if input.dtype.kind != "c":
        raise RuntimeError("imag is not implemented for tensors with non-complex dtypes.")
    return Tensor._make(input._data.imag)


names("imag", function=False)(property(_imaginary))


@names("imag", method=False)
def imag(input):
    return _imaginary(input)


@names("isreal")
def isreal(input):
    """True where the imaginary part is 0: everywhere for a real tensor."""
    return Tensor._make(xp.imag(input._data) == 0 if input.dtype.kind == "c" else xp.ones(input.shape, dtype=bool))


@names("angle")
def angle(input, *, out=None):
    """The argument of each element: π for negative reals, 0 otherwise (NaN stays NaN). Integers give the
    default dtype. Piecewise constant on the reals: the gradient is 0, as PyTorch's."""
    data = input._data
    if data.dtype.kind == "c":
        _conjugated(input)  # (refuses one that requires grad)
        return Tensor._make(xp.angle(data))
    values = xp.where(xp.isnan(data), xp.nan, xp.where(data < 0, math.pi, 0.0))
    dtype = data.dtype if data.dtype.kind == "f" else get_default_dtype()
    result = Tensor._make(values.astype(dtype))
    if input.requires_grad:  # as PyTorch: the result stays in the graph with a zero gradient
        result = Where.apply(result, input, condition=xp.ones((), dtype=bool))
    return result


def _conjugate_transpose(input, op):
    if op == "H" and input.ndim > 2:
        raise RuntimeError(f"tensor.H is only supported on matrices (2-D tensors). Got {input.ndim}-D tensor. For "
                           "batches of matrices, consider using tensor.mH")
    return _conjugated(input.mT if op == "mH" else input.T)


names("H", function=False)(property(lambda x: _conjugate_transpose(x, "H")))
names("mH", function=False)(property(lambda x: _conjugate_transpose(x, "mH")))
