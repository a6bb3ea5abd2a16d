"""Matrix multiplication, the one linear-algebra primitive (Y = W X in the lecture)."""

import math
import warnings

from ..backend import bool_
from ..errors import ShapeError
from ..graph import program_stacklevel
from ..operands import _operand, left_to_python
from ..primitive import Primitive, named_node
from ..saved_tensor_views import saved_input
from ..sparse_layout import is_sparse
from ..tensor import Tensor
from .broadcasting import unbroadcast
from .conjugation import conj
from .conversion import c_name, refuse_kinds, type_name
from .names import names


class MatMul(Primitive):
    """Y = A @ B (batched, broadcasting over leading dims);
    dL/dA = dL/dY @ Bᵀ,   dL/dB = Aᵀ @ dL/dY   (complex: B̄ᵀ and Āᵀ, the conjugate transposes)

    As in BLAS's gemm, either operand may be used transposed (``transpose_a``,
    ``transpose_b``): the backward products above are then single MatMul nodes,
    with no transpose node before them. With op(X) = X or Xᵀ, Y = op(A) op(B):
        dL/dA = dL/dY op(B)ᵀ,  or its transpose op(B) (dL/dY)ᵀ when A was used transposed
        dL/dB = op(A)ᵀ dL/dY,  or its transpose (dL/dY)ᵀ op(A) when B was used transposed
    """

    transpose_a = transpose_b = False
    # the ATen kernel PyTorch runs for this product where its shapes do not say it (None: mm for two matrices, bmm
    # for batches), read by op observers (the FLOP counter): "mv" or "dot" (a vector viewed as a column or a row),
    # "mm" or "bmm" for a matrix and a batch (matmul's folding: mixed_kernel), "addmm" or "baddbmm" (their product)
    kernel = None
    handles_complex = True
    saved_input_readers = ((1,), (0,))  # A is read only for dL/dB, B only for dL/dA
    core_dims = 2  # (a broadcast error names the batch sizes, as PyTorch's)
    pytorch_name = "MmBackward0"  # (two matrices: PyTorch's mm; matmul names a batched product as PyTorch's)
    _saved_mat2 = saved_input(1)  # (PyTorch's name for B in MmBackward0 and BmmBackward0)

    def forward(self, a, b):
        if self.transpose_a:
            a = a.swapaxes(-1, -2)
        if self.transpose_b:
            b = b.swapaxes(-1, -2)
        if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous and a.size:
            # a batch times a matrix as PyTorch's matmul runs it, the batch folded into the rows of one product (a
            # view): one BLAS call, not one per batch entry (NumPy's stacked loop), up to 1.5x faster, and more
            # often PyTorch's values, bit for bit
            return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + b.shape[1:])
        return a @ b

    def backward(self, grad, y, a, b):
        ta, tb = self.transpose_a, self.transpose_b
        by_a, by_b = (conj(a), conj(b)) if grad._data.dtype.kind == "c" else (a, b)  # (conjugation.py)
        grad_a = grad_b = None
        batched = grad._data.ndim > 2  # (two matrices never broadcast: their gradients fit as they are)
        product = MatMul.apply_in_backward
        kernel_a, kernel_b = (None, None) if self.kernel is None else self.backward_kernels(a, b)
        if a.requires_grad:
            grad_a = (product(by_b, grad, transpose_a=tb, transpose_b=True, kernel=kernel_a) if ta else
                      product(grad, by_b, transpose_b=not tb, kernel=kernel_a))
            if batched:
                grad_a = unbroadcast(grad_a, a)
        if b.requires_grad and batched and b.ndim == 2 and not ta:
            # a batch times a matrix: dL/dB as PyTorch's folded product computes it, one product over all the
            # batch's rows (A and G viewed as matrices), where one per batch entry would then be summed
            count = math.prod(grad.shape[:-1])  # (not -1: a product of no rows or no columns has 0 elements)
            rows, grad = by_a.reshape(count, a.shape[-1]), grad.reshape(count, grad.shape[-1])
            grad_b = (product(grad, rows, transpose_a=True, kernel=kernel_b) if tb else
                      product(rows, grad, transpose_a=True, kernel=kernel_b))
        elif b.requires_grad:
            grad_b = (product(grad, by_a, transpose_a=True, transpose_b=ta, kernel=kernel_b) if tb else
                      product(by_a, grad, transpose_a=not ta, kernel=kernel_b))
            if batched:
                grad_b = unbroadcast(grad_b, b)
        return grad_a, grad_b

    def backward_kernels(self, a, b):
        """The kernels of PyTorch's backward products for dL/dA and dL/dB: mv's are an outer product (of the
        matrix, the side of more dims) and an mv, dot's two products by a number, addmm's and baddbmm's plain mm
        and bmm; a folded or batched product's are its own kernel."""
        if self.kernel == "mv":
            return ("outer", "mv") if a.ndim >= b.ndim else ("mv", "outer")
        if self.kernel == "dot":
            return "mul", "mul"
        if self.kernel in ("addmm", "baddbmm"):
            return None, None
        return self.kernel, self.kernel


def mixed_kernel(a, b, vector):
    """The kernel PyTorch's matmul runs for a batch and a matrix (or a vector: ``vector``, the other operand viewed
    as one): the batch folded into the rows of one mm (mv) when the smaller operand requires grad, or when the batch
    (a, the left operand) is contiguous but for its last dim (a view, no copy); else the smaller one expanded to a
    bmm. A matrix (or vector) times a batch folds only when it requires grad."""
    if a.ndim > b.ndim:  # the batch (or matrix, times a vector) on the left
        folds = b.requires_grad or a.ndim == 2 or a.numel() == 0 or _rows_contiguous(a)
    else:
        folds = a.requires_grad
    return ("mv" if vector else "mm") if folds else "bmm"


def _rows_contiguous(x):
    """x's dims but the last lie as one run of rows (x.view(-1, x.size(-1)) would copy nothing; a dim of size 1
    steps anywhere: skipped, as view's check skips it)."""
    rows = [(n, step) for n, step in zip(x.shape[:-1], x.stride()[:-1]) if n != 1]
    return all(rows[i][1] == rows[i + 1][1] * rows[i + 1][0] for i in range(len(rows) - 1))


def matmul_dtype_words(A, B):
    """PyTorch's words for a product of arrays of two dtypes: those of the kernel its matmul takes for their
    dims (dot, addmv, mm with a batch folded into the rows, bmm)."""
    if A.ndim == 1 and B.ndim == 1:
        return f"dot : expected both vectors to have same dtype, but found {type_name(A.dtype)} and " \
               f"{type_name(B.dtype)}"
    if B.ndim == 1:  # (its result takes the vector's dtype, named first)
        return f"addmv input tensors must have the same dtype, but got {type_name(B.dtype)}, {type_name(A.dtype)}, " \
               f"and {type_name(B.dtype)}"
    if B.ndim == 2:
        return f"expected m1 and m2 to have the same dtype, but got: {c_name(A.dtype)} != {c_name(B.dtype)}"
    return f"expected scalar type {type_name(A.dtype)} but found {type_name(B.dtype)}"


@names("matmul")
def matmul(input, other, *, out=None):
    """A @ B with NumPy's rules: 1-D operands are a row (left) or a column (right)."""
    if out is not None:
        from .outputs import write_out  # out= is rare; the @ operator never passes it

        result = matmul(input, other)
        return write_out(result, out, dtype=result.dtype)  # (PyTorch's products cast into no other dtype)
    result = product(input, other)
    if result is NotImplemented:  # (the operator's answer for an operand that is none)
        raise TypeError(f"matmul(): argument 'other' (position 2) must be Tensor, not {type(other).__name__}")
    return result


@names("__matmul__")  # (the @ operator: the product at once, no out= to read)
def product(a, b, kernel=None):
    """matmul's A @ B, its operands checked; ``kernel``: PyTorch's for it where not its matmul's (MatMul.kernel:
    addmm's product)."""
    if type(a) is not Tensor or type(b) is not Tensor:  # (a number, a subclass: the rare case, tested once)
        if is_sparse(a):  # a sparse factor (autograd.sparse) has its own product
            return a.__matmul__(b)
        if is_sparse(b):
            return b.__rmatmul__(a)
        if left_to_python(b):  # (x @ None, an object with its own __rmatmul__: Python's turn, as PyTorch's operator)
            return NotImplemented
        a, b = a if isinstance(a, Tensor) else _operand(a, b), b if isinstance(b, Tensor) else _operand(b, a)
    A, B = a._data, b._data  # (the checks read the arrays: they run before every product)
    if A.dtype is not B.dtype and A.dtype != B.dtype:
        raise RuntimeError(f"{matmul_dtype_words(A, B)} (matmul of {a.dtype} and {b.dtype}, shapes "
                           f"{tuple(a.shape)} and {tuple(b.shape)}: convert one with .to())")
    if A.ndim == 0 or B.ndim == 0 or A.dtype is bool_:  # (one test on the hot path for both refusals)
        _refuse_matmul(a, b)
    inner_b = B.shape[0] if B.ndim == 1 else B.shape[-2]
    if A.shape[-1] != inner_b:
        pytorchs = (f"mat1 and mat2 shapes cannot be multiplied ({A.shape[0]}x{A.shape[1]} and {B.shape[0]}x"
                    f"{B.shape[1]}): " if A.ndim == 2 and B.ndim == 2 else "")  # (PyTorch's words for two matrices)
        raise ShapeError(
            f"{pytorchs}matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied: the first has "
            f"{a.shape[-1]} columns but the second has {inner_b} rows"
        )
    if A.ndim == 2 and B.ndim == 2:
        return MatMul.apply(a, b) if kernel is None else MatMul.apply(a, b, kernel=kernel)
    # PyTorch's kernel for the other shapes is worked out only while an op observer (the FLOP counter) watches
    observed = kernel is None and MatMul.apply_replaced
    if A.ndim >= 2 and B.ndim >= 2:  # (PyTorch folds the batch into one bmm and views it back: _unsafe_view)
        if observed and (A.ndim == 2 or B.ndim == 2):
            kernel = mixed_kernel(a, b, vector=False)
        return MatMul.apply(a, b, pytorch_name="UnsafeViewBackward0", kernel=kernel)
    if observed and B.ndim == 1:
        kernel = "dot" if A.ndim == 1 else mixed_kernel(a, b, vector=True)
    elif observed and B.ndim > 2:  # (a vector times a matrix is mm)
        kernel = mixed_kernel(a, b, vector=True)
    rows, columns = a.unsqueeze(0) if a.ndim == 1 else a, b.unsqueeze(-1) if b.ndim == 1 else b
    y = MatMul.apply(rows, columns) if kernel is None else MatMul.apply(rows, columns, kernel=kernel)
    if b.ndim == 1:
        y = y.squeeze(-1)
    if a.ndim == 1:
        y = y.squeeze(-2 if b.ndim > 1 else -1)
    # PyTorch's node: dot, mv, the squeeze of a vector times a matrix, or _unsafe_view
    return named_node(y, None, {(1, 1): "DotBackward0", (2, 1): "MvBackward0",
                                (1, 2): "SqueezeBackward4"}.get((A.ndim, B.ndim), "UnsafeViewBackward0"), (a, b))


def _refuse_matmul(a, b):
    """A scalar operand, or bools (NumPy multiplies them; PyTorch's kernels have no bool version: the error names
    the kernel its shapes reach)."""
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: both operands need at least one dimension, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}; use * to multiply by a scalar")
    kernel = {(1, 1): "dot", (2, 1): "addmv_impl_cpu", (1, 2): "addmm_impl_cpu_", (2, 2): "addmm_impl_cpu_"}.get(
        (a.ndim, b.ndim), "bmm")
    refuse_kinds(a, kernel, "b")


@names("__rmatmul__")
def _reflected_matmul(b, a):
    if left_to_python(a):
        return NotImplemented
    return matmul(_operand(a, b), b)


def multi_dot(tensors, *, out=None):
    """A product of matrices A @ B @ C ... (the first may be a row vector, the last a column)."""
    tensors = list(tensors)
    if len(tensors) < 2:
        raise RuntimeError(f"multi_dot(): expected at least 2 tensors but got {len(tensors)}")
    for i, t in enumerate(tensors):  # (matmul would broadcast a batch: multi_dot multiplies matrices only)
        if i in (0, len(tensors) - 1) and t.ndim not in (1, 2):
            raise RuntimeError(f"multi_dot(): the {'first' if i == 0 else 'last'} tensor must be 1D or 2D but "
                               f"got {t.ndim}D")
        if 0 < i < len(tensors) - 1 and t.ndim != 2:
            raise RuntimeError(f"multi_dot(): tensor {i} must be 2D but got {t.ndim}D")
    for i, t in enumerate(tensors[1:], 1):
        if t.dtype != tensors[0].dtype:
            raise RuntimeError(f"multi_dot(): all tensors must have be the same dtype but tensor 0 is "
                               f"{c_name(tensors[0].dtype)} and tensor {i} {c_name(t.dtype)}")
        if tensors[i - 1].shape[-1] != t.shape[0]:
            raise RuntimeError(f"multi_dot(): tensors {i - 1} and {i} with shapes {list(tensors[i - 1].shape)} and "
                               f"{list(t.shape)} cannot be multiplied")
    result = tensors[0]
    for t in tensors[1:]:
        result = matmul(result, t)
    if out is not None:
        from .outputs import write_out

        if isinstance(out, Tensor) and out.dtype != result.dtype:
            raise RuntimeError(f"multi_dot(): expected out tensor to have dtype {c_name(result.dtype)} but got "
                               f"{c_name(out.dtype)}")
        return write_out(result, out)
    return result


@names("chain_matmul", method=False)
def chain_matmul(*matrices, out=None):
    """The product of two-dimensional matrices, left to right (torch.chain_matmul, deprecated in
    PyTorch for linalg.multi_dot)."""
    warnings.warn("torch.chain_matmul is deprecated and will be removed in a future PyTorch release. Use "
                  "torch.linalg.multi_dot instead, which accepts a list of two or more tensors rather than multiple "
                  "parameters.", UserWarning, stacklevel=program_stacklevel())
    if not matrices:
        raise RuntimeError("chain_matmul(): Expected one or more matrices")
    for m in matrices:
        if m.ndim != 2:
            raise RuntimeError(f"Tensor dimension is {m.ndim}, expected 2 instead.")
    return multi_dot(matrices, out=out) if len(matrices) > 1 else matrices[0].clone()


_REMOVED_IN_1_9 = {  # name -> the rest of PyTorch's message: what to use instead
    "solve": " `torch.solve` is deprecated in favor of `torch.linalg.solve`. `torch.linalg.solve` has its arguments "
             "reversed and does not return the LU factorization.\n\nTo get the LU factorization see `torch.lu`, "
             "which can be used with `torch.lu_solve` or `torch.lu_unpack`.\nX = torch.solve(B, A).solution should "
             "be replaced with:\nX = torch.linalg.solve(A, B)",
    "lstsq": " `torch.lstsq` is deprecated in favor of `torch.linalg.lstsq`.\n`torch.linalg.lstsq` has reversed "
             "arguments and does not return the QR decomposition in the returned tuple (although it returns other "
             "information about the problem).\n\nTo get the QR decomposition consider using `torch.linalg.qr`.\n\n"
             "The returned solution in `torch.lstsq` stored the residuals of the solution in the last m - n columns "
             "of the returned value whenever m > n. In torch.linalg.lstsq, the residuals are in the field "
             "'residuals' of the returned named tuple.\n\nThe unpacking of the solution, as in\n"
             "X, _ = torch.lstsq(B, A).solution[:A.size(1)]\nshould be replaced with:\n"
             "X = torch.linalg.lstsq(A, B).solution",
    "eig": " `torch.linalg.eig` returns complex tensors of dtype `cfloat` or `cdouble` rather than real tensors "
           "mimicking complex tensors.\n\nL, _ = torch.eig(A) should be replaced with:\n"
           "L_complex = torch.linalg.eigvals(A)\n\nand\n\nL, V = torch.eig(A, eigenvectors=True) should be "
           "replaced with:\nL_complex, V_complex = torch.linalg.eig(A)",
    "symeig": " The default behavior has changed from using the upper triangular portion of the matrix by default to "
              "using the lower triangular portion.\n\nL, _ = torch.symeig(A, upper=upper) should be replaced with:\n"
              "L = torch.linalg.eigvalsh(A, UPLO='U' if upper else 'L')\n\nand\n\nL, V = torch.symeig(A, "
              "eigenvectors=True) should be replaced with:\nL, V = torch.linalg.eigh(A, UPLO='U' if upper else 'L')",
    "matrix_rank": "\nPlease use the `torch.linalg.matrix_rank` function instead. The parameter 'symmetric' was "
                   "renamed in `torch.linalg.matrix_rank()` to 'hermitian'.",
}


def _removed_in_1_9(name):
    """``torch.<name>``, removed in PyTorch 1.9 but still a name there, so that old code (``torch.symeig`` in an
    HMC metric, ``A.solve(B)``) fails with a RuntimeError that says what replaces it, not an AttributeError."""

    def removed(*args, **kwargs):
        raise RuntimeError(f"This function was deprecated since version 1.9 and is now removed.{_REMOVED_IN_1_9[name]}")

    removed.__name__ = removed.__qualname__ = name
    return names(name, method=name != "matrix_rank")(removed)  # PyTorch's Tensor has no matrix_rank method


for _name in _REMOVED_IN_1_9:
    _removed_in_1_9(_name)
