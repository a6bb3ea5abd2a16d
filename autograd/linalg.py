"""``autograd.linalg``: torch.linalg's names (norms, inverses, solves, determinants, products)."""

from .backend import int64 as autograd_int64
from .ops.checked import cholesky_ex, inv_ex, solve_ex
from .ops.condition import cond
from .ops.contractions import linalg_cross as cross
from .ops.conversion import require_same_dtype, type_name
from .ops.decompositions import cholesky, eigh, eigvalsh, matrix_power, qr
from .ops.diagonals import diagonal as _diagonal
from .ops.eig import eig, eigvals
from .ops.householder import householder_product
from .ops.inverses import LinAlgError, det, inv, slogdet, solve
from .ops.ldl import ldl_factor, ldl_factor_ex, ldl_solve
from .ops.linalg import matmul, multi_dot
from .ops.lu import lu, lu_factor, lu_factor_ex, lu_solve
from .ops.matrix_exp import matrix_exp
from .ops.names import taking_numpy_keywords
from .ops.norms import linalg_norm as norm
from .ops.norms import matrix_norm, svdvals, vector_norm
from .ops.outputs import write_out
from .ops.series import running_powers
from .ops.svd import lstsq, matrix_rank, pinv, svd
from .ops.tensor_solve import tensorinv, tensorsolve
from .ops.triangular import solve_triangular

__all__ = ["LinAlgError", "cholesky", "cholesky_ex", "cond", "cross", "det", "diagonal", "eig", "eigh", "eigvals",
           "eigvalsh", "householder_product", "inv", "inv_ex", "ldl_factor", "ldl_factor_ex",
           "ldl_solve", "lstsq", "lu", "lu_factor", "lu_factor_ex",
           "lu_solve", "matmul", "matrix_exp", "matrix_norm", "matrix_power", "matrix_rank", "multi_dot", "norm",
           "pinv", "qr", "slogdet", "solve", "solve_ex", "solve_triangular", "svd", "svdvals", "tensorinv",
           "tensorsolve", "vander", "vecdot", "vector_norm"]


def diagonal(A, *, offset=0, dim1=-2, dim2=-1):
    """The ``offset``-th diagonal of each matrix (torch.linalg's defaults: the last two dims)."""
    return _diagonal(A, offset, dim1, dim2)


def vander(x, *, N=None):
    """The Vandermonde matrix of each vector along x's last dim, increasing powers: column j is x^j,
    j < N (N = x.shape[-1] by default). Integers become int64. A running product of x, so the
    powers' gradients are products too (no x⁻¹ at x = 0)."""
    if x.ndim == 0:  # one number: the vector of it, as PyTorch reads it
        x = x.reshape(1)
    N = x.shape[-1] if N is None else N
    if N <= 1:
        raise RuntimeError("N must be greater than 1.")
    if x.dtype.kind == "b" or x.dtype.kind == "f" and x.dtype.itemsize == 2:  # (torch.vander takes both)
        raise RuntimeError(f"linalg.vander supports floating point, complex, and integer tensors, but got "
                           f"{type_name(x.dtype)}")
    return running_powers(x.to(autograd_int64) if x.dtype.kind in "iu" else x, N)


def vecdot(x, y, *, dim=-1, out=None):
    """Σ_i conj(x_i) y_i along dim (the two broadcast): the inner product, x conjugated where complex."""
    require_same_dtype(x, y, ("x", "y"), "linalg.vecdot")  # (PyTorch promotes neither)
    if x.dtype.kind in "biu":
        raise RuntimeError(f"linalg.vecdot: Expected a floating point or complex tensor as input. Got "
                           f"{type_name(x.dtype)}")
    result = (x.conj() * y).sum(dim)
    return write_out(result, out, dtype=result.dtype)  # (PyTorch casts into no other dtype)


taking_numpy_keywords(globals(), __all__)  # (axis= for dim=, keepdims= for keepdim=)
