"""The addmm family: a product scaled and added to a scaled input, y = β · input + α · (a @ b), in one call
(addmm, addmv, baddbmm, addbmm, addr). Each is its product (contractions.py) and a sum, so its derivative is
theirs: dL/dinput = β · dL/dy (summed back to input's shape), dL/da = α · dL/dy @ bᵀ, dL/db = α · aᵀ @ dL/dy.
PyTorch's kernels promote nothing (the input must have its factors' dtype), accumulate float16 in float32 and
round once (but addbmm), and still read PyTorch 1's overloads with the scales first."""

import warnings

from ..backend import xp
from ..graph import program_stacklevel
from ..operands import _operand
from ..primitive import node_named
from ..tensor import Tensor
from . import shape
from .arithmetic import number_argument
from .contractions import Einsum, _check_batches, _check_matrices, mv, outer, write_product
from .conversion import c_name, refuse_kinds, type_name
from .linalg import product
from .names import names
from .outputs import write_out


def _scaled_sum(input, product, beta, alpha, refuse_float_scales=False, op=None):
    """beta · input + alpha · product; with beta = 0 input is ignored (NaN in it does not spread). With
    integer tensors a float beta or alpha is cast to the integer dtype, truncated (PyTorch's addmm, addmv,
    baddbmm, addbmm), or refused (its addr). Both are Numbers (``op``'s name for the refusal of a Tensor)."""
    beta, alpha = number_argument(op, "beta", beta), number_argument(op, "alpha", alpha)
    if input.shape != product.shape:  # PyTorch expands input to the product's shape: it never grows the result
        input = shape.expand(input, product.shape)
    if product.dtype.kind in "iub" and isinstance(input, Tensor) and input.dtype.kind in "iub":
        for name, scale in (("beta", beta), ("alpha", alpha)):
            if isinstance(scale, float) and refuse_float_scales:
                raise RuntimeError(f"For integral input tensors, argument {name} must not be a floating point "
                                   "number.")
        beta, alpha = (int(s) if isinstance(s, float) else s for s in (beta, alpha))
        if product.dtype.kind == "b" and input.dtype.kind == "b":  # logic: (beta and input) or (alpha and product)
            return (input & bool(beta)) | (product & bool(alpha))
    if alpha != 1:
        product = product * alpha
    if beta == 0:
        return product
    scaled = input if beta == 1 else input * beta
    return scaled + product


def _input(input, like):
    return input if isinstance(input, Tensor) else _operand(input, like)


def _rounded_once(product_sum, input, *factors):
    """``product_sum(input, *factors)``, float16 computed in float32 and rounded once, as PyTorch's gemm, batched
    gemm and gemv add the input into their float32 accumulator (rounding the product first put a fifth of the
    values a unit off; PyTorch's addbmm rounds it first, and so does its form here)."""
    if factors[0].dtype != xp.float16:
        return product_sum(input, *factors)
    return product_sum(input.float(), *(factor.float() for factor in factors)).half()


def _require_input_dtype(input, factors, message):
    """PyTorch's addmm family promotes nothing: a tensor input must have its factors' dtype (they are
    checked against each other by the product). ``message`` words the error from the dtypes' names."""
    if isinstance(input, Tensor) and input.dtype != factors[0].dtype:
        raise RuntimeError(message(*(x.dtype for x in (input, *factors))))


def _scaled_sum_of_product(input, a, b, beta, alpha, op):
    """beta · input + alpha · (a @ b); float16 computed in float32 and rounded once, as PyTorch's addmm and
    baddbmm kernels (rounding the product before adding the input is an ulp off in a quarter of the values)."""
    return _rounded_once(lambda input, a, b: _scaled_sum(input, product(a, b, kernel=op), beta, alpha, op=op),
                         _input(input, a), a, b)


def _scales_first(name, factors, input, first, second, rest):
    """PyTorch 1's overloads of the addmm family, with the scales first, which PyTorch still reads (with a
    warning; re-ID code of that time computes squared distances by ``dist.addmm_(1, -2, x, y.t())``):
    ``torch.addmm(beta, input, [alpha,] mat1, mat2)`` and ``input.addmm(beta, [alpha,] mat1, mat2)``.
    ``input, first, second, *rest`` are the positional arguments as the current signature received them;
    returns (input, factor1, factor2, beta, alpha)."""
    if isinstance(input, Tensor):  # the method: self, then the numbers
        target, scales_and_factors = input, (first, second, *rest)
    else:  # the function: beta, then the input
        target, scales_and_factors = first, (input, second, *rest)
    *scales, factor1, factor2 = scales_and_factors
    if len(scales) not in (1, 2) or not all(isinstance(s, (int, float)) for s in scales):
        raise TypeError(f"{name}() received an invalid combination of arguments: expected ({name}(Tensor input, "
                        f"Tensor {factors[0]}, Tensor {factors[1]}, *, Number beta=1, Number alpha=1)")
    warnings.warn(f"This overload of {name} is deprecated: beta and alpha are keywords now, as in {name}(Tensor "
                  f"input, Tensor {factors[0]}, Tensor {factors[1]}, *, Number beta=1, Number alpha=1)",
                  UserWarning, stacklevel=program_stacklevel())
    beta, alpha = scales if len(scales) == 2 else (scales[0], 1)
    return target, factor1, factor2, beta, alpha


@names("addmm", inplace="addmm_")
@node_named("AddmmBackward0")
def addmm(input, mat1, mat2, *scales_first, beta=1, alpha=1, out=None):
    """beta · input + alpha · (mat1 @ mat2) (or PyTorch 1's forms with beta and alpha first, with its warning)."""
    if scales_first:
        input, mat1, mat2, beta, alpha = _scales_first("addmm", ("mat1", "mat2"), input, mat1, mat2, scales_first)
    _check_matrices(mat1, mat2, "addmm", ("mat1", "mat2"))
    _require_input_dtype(input, (mat2,), lambda a, b: f"self and mat2 must have the same dtype, but got "
                                                      f"{type_name(a)} and {type_name(b)}")
    return write_product(_scaled_sum_of_product(input, mat1, mat2, beta, alpha, "addmm"), out)


@names("addmv", inplace="addmv_")
@node_named("AddmvBackward0")
def addmv(input, mat, vec, *scales_first, beta=1, alpha=1, out=None):
    """beta · input + alpha · (mat @ vec) (or PyTorch 1's forms with beta and alpha first, with its warning)."""
    if scales_first:
        input, mat, vec, beta, alpha = _scales_first("addmv", ("mat", "vec"), input, mat, vec, scales_first)
    _require_input_dtype(input, (mat, vec), lambda a, b, c: "addmv input tensors must have the same dtype, but "
                                                            f"got {type_name(a)}, {type_name(b)}, and {type_name(c)}")
    return write_product(_rounded_once(lambda input, mat, vec: _scaled_sum(input, mv(mat, vec), beta, alpha,
                                                                           op="addmv"), _input(input, mat), mat, vec),
                         out)


@names("baddbmm", inplace="baddbmm_")
@node_named("BaddbmmBackward0")
def baddbmm(input, batch1, batch2, *scales_first, beta=1, alpha=1, out=None):
    """beta · input + alpha · (batch1 @ batch2), batch by batch (or PyTorch 1's forms with beta and alpha first)."""
    if scales_first:
        input, batch1, batch2, beta, alpha = _scales_first("baddbmm", ("batch1", "batch2"), input, batch1, batch2,
                                                           scales_first)
    _check_batches(batch1, batch2)
    _require_input_dtype(input, (batch1, batch2), lambda a, b, c: f"Input dtypes must be the same, got: input "
                                                                  f"{c_name(a)}, batch1: {c_name(b)}, batch2: "
                                                                  f"{c_name(c)}")
    return write_product(_scaled_sum_of_product(input, batch1, batch2, beta, alpha, "baddbmm"), out)


@names("addbmm", inplace="addbmm_")
@node_named("AddbmmBackward0")
def addbmm(input, batch1, batch2, *scales_first, beta=1, alpha=1, out=None):
    """beta · input + alpha · Σ_b batch1[b] @ batch2[b] (or PyTorch 1's forms with beta and alpha first)."""
    if scales_first:
        input, batch1, batch2, beta, alpha = _scales_first("addbmm", ("batch1", "batch2"), input, batch1, batch2,
                                                           scales_first)
    _check_batches(batch1, batch2)
    _require_input_dtype(input, (batch2,), lambda a, b: f"self and mat2 must have the same dtype, but got "
                                                        f"{type_name(a)} and {type_name(b)}")
    refuse_kinds(batch1, "addmm_impl_cpu_", "b")  # (a sum of matrix products: PyTorch has no bool kernel)
    product = Einsum.apply(batch1, batch2, terms=("bij", "bjk"), output="ik", kernel="addbmm")
    result = _scaled_sum(_input(input, batch1), product, beta, alpha, op="addbmm")
    return write_out(result, out, dtype=result.dtype, warn_resize=False)  # (write_product's, but PyTorch's addbmm
    # kernel resizes out itself: no warning)


@names("addr", inplace="addr_")
@node_named("AddrBackward0")
def addr(input, vec1, vec2, *scales_first, beta=1, alpha=1, out=None):
    """beta · input + alpha · outer(vec1, vec2) (or PyTorch 1's forms with beta and alpha first, with its
    warning)."""
    if scales_first:
        input, vec1, vec2, beta, alpha = _scales_first("addr", ("vec1", "vec2"), input, vec1, vec2, scales_first)
    return write_out(_scaled_sum(_input(input, vec1), outer(vec1, vec2), beta, alpha, refuse_float_scales=True,
                                 op="addr"), out)
