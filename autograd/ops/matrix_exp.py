"""The matrix exponential e^A = Σ_k A^k / k! (torch.linalg.matrix_exp, x.matrix_exp()).

Forward: scaling and squaring. Each A is divided by 2^s so that its 1-norm is at most 1/2, the
Taylor series of the scaled matrix is summed to degree 18 (the remainder is below 1e-22 of
the sum), and the result is squared s times: e^A = (e^(A/2^s))^(2^s). Single precision is computed in
double and rounded once.

Backward (the Fréchet derivative's adjoint, Mathias 1996): for G = dL/de^A,

    dL/dA = the top-right n × n block of exp([[Aᴴ, G], [0, Aᴴ]])   (Aᴴ = Aᵀ for a real A)

computed with this same op, so gradients of gradients work.
"""


from ..backend import errstate, xp
from ..primitive import Primitive
from .joins import cat
from .names import names

_DEGREE = 18


def _expm(a):
    if a.dtype in (xp.float32, xp.complex64):  # in double, rounded once: each squaring would double float32's
        return _expm(a.astype(xp.promote_types(a.dtype, xp.float64))).astype(a.dtype)  # rounding (PyTorch's is ~1 ulp)
    if a.size == 0:
        return xp.zeros_like(a)
    n = a.shape[-1]
    norms = xp.abs(a).sum(-2).max(-1)  # each matrix's 1-norm: each is scaled for itself (a small matrix beside a
    with errstate(divide="ignore", invalid="ignore"):  # big one of the batch would lose digits to needless squarings)
        squarings = xp.where(xp.isfinite(norms) & (norms > 0), xp.maximum(0, xp.ceil(xp.log2(norms)) + 1), 0)
    squarings = squarings.astype(xp.int64)
    scaled = a / (2.0 ** squarings)[..., None, None]
    term = xp.broadcast_to(xp.eye(n, dtype=a.dtype), a.shape).copy()
    total = term.copy()
    for k in range(1, _DEGREE + 1):
        term = term @ scaled / k
        total += term
    for step in range(int(squarings.max())):
        total = xp.where((step < squarings)[..., None, None], total @ total, total)
    return total


class MatrixExp(Primitive):
    """y = e^A;   dL/dA = the top-right block of exp([[Aᴴ, G], [0, Aᴴ]])"""

    pytorch_name = "LinalgMatrixExpBackward0"  # (PyTorch's node for it)
    saves_output = False
    handles_complex = True  # e^A is holomorphic: its adjoint is the Fréchet derivative at Aᴴ

    def forward(self, a):
        return _expm(a)

    def backward(self, grad, y, a):
        n = a.shape[-1]
        ah = a.mH
        zeros = ah * 0.0
        block = cat([cat([ah, grad], -1), cat([zeros, ah], -1)], -2)
        return (MatrixExp.apply(block)[..., :n, n:],)


@names("matrix_exp")
def matrix_exp(input):
    """e^A of a square matrix (or a batch of them)."""
    if input.ndim < 2 or input.shape[-1] != input.shape[-2]:
        raise RuntimeError(f"linalg.matrix_exp: A must be batches of square matrices, but they are "
                           f"{input.shape[-2] if input.ndim >= 2 else 1} by {input.shape[-1] if input.ndim else 1} "
                           "matrices")
    if input.dtype.kind not in "fc":
        raise RuntimeError(f"linalg.matrix_exp: Expected a floating point or complex tensor as input, got "
                           f"{input.dtype}")
    return MatrixExp.apply(input)
