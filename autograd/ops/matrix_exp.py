"""The matrix exponential e^A = Σ_k A^k / k! (torch.linalg.matrix_exp, x.matrix_exp()).

Forward: scaling and squaring. A is divided by 2^s so that its 1-norm is at most 1/2, the
Taylor series of the scaled matrix is summed to degree 18 (the remainder is below 1e-22 of
the sum), and the result is squared s times: e^A = (e^(A/2^s))^(2^s).

Backward (the Fréchet derivative's adjoint, Mathias 1996): for G = dL/de^A,

    dL/dA = the top-right n × n block of exp([[Aᴴ, G], [0, Aᴴ]])   (Aᴴ = Aᵀ for a real A)

computed with this same op, so gradients of gradients work.
"""

import math

from ..backend import xp
from ..primitive import Primitive
from .joins import cat
from .names import names

_DEGREE = 18


def _expm(a):
    n = a.shape[-1]
    norm = float(xp.abs(a).sum(-2).max()) if a.size else 0.0
    squarings = max(0, math.ceil(math.log2(norm)) + 1) if norm > 0 else 0
    scaled = a / 2.0**squarings
    term = xp.broadcast_to(xp.eye(n, dtype=a.dtype), a.shape).copy()
    total = term.copy()
    for k in range(1, _DEGREE + 1):
        term = term @ scaled / k
        total += term
    for _ in range(squarings):
        total = total @ total
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
