"""Triangular solves: X = T⁻¹ B for a (batch of) triangular T, by substitution, as
torch.linalg.solve_triangular and the older torch.triangular_solve.

Only one triangle of A is read (the lower, or the upper with upper=True; with unitriangular its
diagonal is taken to be 1 and not read either), so only that triangle receives a gradient:

    X = T⁻¹ B:   dL/dB = T⁻ᴴ (dL/dX),   dL/dA = tri(-(dL/dB) Xᴴ)

(tri keeps the triangle that was read; ᴴ is ᵀ for real matrices, and the complex gradient is
PyTorch's.) Tᴴ is triangular the other way up, so the backward is one more triangular solve,
itself differentiable.

A zero on the diagonal is not an error, as in LAPACK's trtrs/trsm which PyTorch calls: the
division gives inf or nan in the solution.
"""


import warnings

from ..backend import errstate, xp
from ..errors import refuse_unbroadcastable
from ..graph import program_stacklevel
from ..primitive import Primitive, named_node
from ..return_types import return_type
from .broadcasting import unbroadcast
from .conversion import require_same_dtype
from .half_linalg import refuses_half
from .inverses import _square
from .names import names
from .outputs import write_out

TriangularSolveResult = return_type("triangular_solve", ["solution", "cloned_coefficient"])


def substitute(a, b, upper, unitriangular):
    """T⁻¹ B by forward (lower) or back (upper) substitution, on arrays of matching batch shape:
    x_i = (b_i - Σ_{j before i} t_ij x_j) / t_ii, one row of X at a time (vectorised over the
    batch and B's columns)."""
    batch = xp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = xp.broadcast_to(a, batch + a.shape[-2:])
    x = xp.array(xp.broadcast_to(b, batch + b.shape[-2:]), dtype=xp.result_type(a, b))
    n = a.shape[-1]
    order = range(n - 1, -1, -1) if upper else range(n)
    with errstate(divide="ignore", invalid="ignore"):  # a zero pivot gives inf/nan, as LAPACK
        for i in order:
            done = slice(i + 1, n) if upper else slice(0, i)
            if done.start != done.stop:
                x[..., i:i + 1, :] -= a[..., i:i + 1, done] @ x[..., done, :]
            if not unitriangular:
                x[..., i, :] /= a[..., i, i:i + 1]
    return x


class SolveTriangular(Primitive):
    """X = T⁻¹ B, T the lower (upper) triangle of A;
    dL/dB = T⁻ᴴ (dL/dX),   dL/dA = tri(-(dL/dB) Xᴴ)"""

    saves_output = True
    saved_input_readers = ((0, 1), ())  # A for both gradients; B for none (dL/dA reads X), as PyTorch's node saves
    handles_complex = True  # (written with ᴴ)

    def forward(self, a, b):
        return substitute(a, b, self.upper, self.unitriangular)

    def backward(self, grad, x, a, b):
        grad_b = SolveTriangular.apply(a.mH, grad, upper=not self.upper, unitriangular=self.unitriangular)
        grad_a = None
        if a.requires_grad:
            full = -(grad_b @ x.mH)
            offset = 1 if self.unitriangular else 0  # the diagonal of a unit triangle is not read
            grad_a = unbroadcast(full.triu(offset) if self.upper else full.tril(-offset), a)
        return grad_a, unbroadcast(grad_b, b) if b.requires_grad else None


def _in_dtype_of_A(A, B, op):
    """A, and B in A's dtype: PyTorch writes the solution into a tensor of A's dtype and copies B there
    first, so a wider B is narrowed (float32 A, float64 B: a float32 X), an integer B made floating, and
    a complex B beside a real A loses its imaginary part (with the copy's warning). A must be floating."""
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"{op}: Expected a floating point or complex tensor as input, got {A.dtype}")
    return A, (B if B.dtype == A.dtype else B.to(A.dtype))


@refuses_half("triangular_solve_cpu")
def solve_triangular(input, B, *, upper, left=True, unitriangular=False, out=None):
    """X with A X = B (or X A = B when left is False) for triangular A: its lower triangle, or the
    upper with upper=True; unitriangular takes its diagonal to be ones. Batch dims broadcast."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    _square(A, "solve_triangular")
    if B.ndim < 2:
        raise RuntimeError("linalg.solve_triangular: The input tensor B must have at least 2 dimensions.")
    inner = B.shape[-2] if left else B.shape[-1]
    if inner != A.shape[-1]:
        equation = "AX = B" if left else "XA = B"
        raise RuntimeError(f"linalg.solve_triangular: Incompatible shapes of A and B for the equation {equation} "
                           f"({A.shape[-2]}x{A.shape[-1]} and {B.shape[-2]}x{B.shape[-1]})")
    refuse_unbroadcastable(B.shape[:-2], A.shape[:-2])  # (the batch dims, in PyTorch's order: B's, then A's)
    A, B = _in_dtype_of_A(A, B, "linalg.solve_triangular")
    if left:
        X = SolveTriangular.apply(A, B, upper=bool(upper), unitriangular=bool(unitriangular))
    else:  # X A = B  ⇔  Aᵀ Xᵀ = Bᵀ, and Aᵀ is triangular the other way up
        X = SolveTriangular.apply(A.mT, B.mT, upper=not upper, unitriangular=bool(unitriangular)).mT
    return write_out(named_node(X, None, "LinalgSolveTriangularBackward0", (A, B)), out, same_dtype=True)


@names("triangular_solve")
@refuses_half("triangular_solve_cpu")
def triangular_solve(input, A, upper=True, transpose=False, unitriangular=False, *, out=None):
    """torch.triangular_solve(b, A): (X, a copy of A) with A X = b (Aᵀ X = b with transpose).
    Deprecated in PyTorch in favour of linalg.solve_triangular, which takes A first (and, unlike
    this one, promotes operands of different dtypes), with this warning."""
    # (PyTorch's words, "solve_triangularand" too)
    warnings.warn("torch.triangular_solve is deprecated in favor of torch.linalg.solve_triangularand will be removed "
                  "in a future PyTorch release.\ntorch.linalg.solve_triangular has its arguments reversed and does not "
                  "return a copy of one of the inputs.\nX = torch.triangular_solve(B, A).solution\nshould be replaced "
                  "with\nX = torch.linalg.solve_triangular(A, B).", UserWarning, stacklevel=program_stacklevel())
    require_same_dtype(input, A, ("b", "A"))
    coefficient = A.mT if transpose else A
    solution = solve_triangular(coefficient, input, upper=upper != bool(transpose), unitriangular=unitriangular)
    # (PyTorch's node saves b, which solve_triangular's does not: writing it after the forward refuses the backward)
    result = TriangularSolveResult(named_node(solution, None, "TriangularSolveBackward0", (input, A), saves=(input,)),
                                   A.clone())
    return write_out(result, out)
