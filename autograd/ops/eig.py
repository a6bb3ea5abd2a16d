"""The eigendecomposition of a general square matrix, torch.linalg.eig and eigvals: A V = V
diag(λ), with complex λ and V even for a real A (conjugate pairs), as PyTorch returns them.

The derivative (PyTorch's linalg_eig_backward), for G_λ = dL/dλ and G_V = dL/dV:

    dL/dA = V⁻ᴴ (diag(G_λ) + (Vᴴ G_V - Vᴴ V diag(Re diag(Vᴴ G_V))) / Ē) Vᴴ,   E_ij = λ_j - λ_i

off the diagonal; the Re diag term removes the part of G_V that only turns each unit eigenvector's
free phase. For a real A the gradient is its real part. Like PyTorch's, it assumes distinct
eigenvalues, and a loss that depends on the eigenvectors' phases (Im diag(Vᴴ G_V) ≠ 0) is not well
defined: refused, as PyTorch's.
"""


from ..backend import xp
from ..graph import is_grad_enabled
from ..primitive import Primitive
from ..return_types import return_type
from ..tensor import Tensor
from .conversion import type_name
from .decompositions import _require_phase_free
from .half_linalg import refuses_half
from .inverses import Solve, _square
from .outputs import write_out

EigResult = return_type("linalg_eig", ["eigenvalues", "eigenvectors"])


class Eig(Primitive):
    """λ, V of square A, returned stacked as one complex array [λ; V] of shape (..., n + 1, n); the
    derivative is the module docstring's."""

    saves_inputs = False  # backward needs no input's values
    saves_output = True
    handles_complex = True  # written with conjugates, as conjugation.py's rules ask

    def forward(self, a):
        self.real_input = a.dtype.kind == "f"
        values, vectors = xp.linalg.eig(a)
        return xp.concatenate([values[..., None, :], vectors], axis=-2).astype(_complex_dtype(a.dtype))

    def backward(self, grad, y, a):
        values, vectors = y[..., 0, :], y[..., 1:, :]
        grad_values, grad_vectors = grad[..., 0, :], grad[..., 1:, :]
        n = values.shape[-1]
        eye = Tensor._make(xp.eye(n, dtype=y.dtype))
        vh = vectors.mH
        if not (grad.requires_grad or xp.any(grad_vectors._data)):  # only λ was used (eigvals): V⁻ᴴ diag(dL/dλ) Vᴴ,
            # as PyTorch's, whose dL/dV is then undefined; the gaps' 0 / 0 of repeated eigenvalues (an identity's)
            # would make it NaN. (Zeros that are a function of something keep the whole formula, as svd's.)
            grad_a = Solve.apply(vh, grad_values.unsqueeze(-1) * vh)
            return (grad_a.real if self.real_input else grad_a,)
        inner = vh @ grad_vectors
        _require_phase_free(inner, "linalg_eig_backward: The eigenvectors in the complex case are specified up to "
                            "multiplication by e^{i phi}. The specified loss function depends on this quantity, so "
                            "it is ill-defined.")
        phase = inner.diagonal(0, -2, -1).real  # Re diag(Vᴴ G_V): turns of each vector's phase
        inner = inner - vh @ (vectors * phase.unsqueeze(-2))
        gaps = (values.unsqueeze(-2) - values.unsqueeze(-1)).conj() + eye  # Ē_ij = conj(λ_j - λ_i), 1 on the diagonal
        middle = inner / gaps * (1 - eye) + grad_values.unsqueeze(-1) * eye
        grad_a = Solve.apply(vh, middle @ vh)
        return (grad_a.real if self.real_input else grad_a,)


def _complex_dtype(dtype):
    return xp.complex128 if dtype in (xp.float64, xp.complex128) else xp.complex64


def _decompose(A, op, vectors):
    _square(A, op)
    if A.dtype.kind not in "fc":
        raise RuntimeError(f"linalg.{op}: Expected a floating point or complex tensor as input. Got "
                           f"{type_name(A.dtype)}")
    differentiated = A.requires_grad and is_grad_enabled()
    if not xp.isfinite(A._data).all():  # (NumPy refuses any with a ValueError)
        if vectors or differentiated:  # (PyTorch's eig checks; its eigvals, without a graph, lets LAPACK give NaN)
            raise RuntimeError("torch.linalg.eig: input tensor should not contain infs or NaNs.")
        return Tensor._make(xp.full(A.shape[:-1], xp.nan, dtype=_complex_dtype(A.dtype)))
    if differentiated:
        stacked = Eig.apply(A)
        return (stacked[..., 0, :], stacked[..., 1:, :]) if vectors else stacked[..., 0, :]
    complex_dtype = _complex_dtype(A.dtype)
    data = A._data
    if vectors:
        values, vecs = xp.linalg.eig(data)
        return Tensor._make(values.astype(complex_dtype)), Tensor._make(vecs.astype(complex_dtype))
    return Tensor._make(xp.linalg.eigvals(data).astype(complex_dtype))


@refuses_half("linalg_eig_out_cpu")
def eig(input, *, out=None):
    """(eigenvalues, eigenvectors) of square A, both complex; each eigenvector has unit norm
    (LAPACK's geev, as PyTorch)."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    return write_out(EigResult(*_decompose(A, "eig", True)), out)


@refuses_half("linalg_eig_out_cpu")
def eigvals(input, *, out=None):
    """The (complex) eigenvalues of square A."""
    A = input  # (PyTorch's keyword is input=, though its docs write A)
    return write_out(_decompose(A, "eigvals", False), out)
