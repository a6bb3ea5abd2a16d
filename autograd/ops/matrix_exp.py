"""The matrix exponential e^A = Σ_k A^k / k! (torch.linalg.matrix_exp, x.matrix_exp()).

Forward: scaling and squaring. Each A is divided by 2^s so that its 1-norm is at most 1/2, the
Taylor series of the scaled matrix is summed to degree 18 (the remainder is below 1e-22 of
the sum), and the result is squared s times: e^A = (e^(A/2^s))^(2^s). Single precision is computed in
double and rounded once. One exception, for PyTorch's numbers: a lone matrix (no batch, or a batch of one)
whose 1-norm lies in PyTorch's degree-8 band, (0.0512, 0.580] in single precision and (3.40e-4, 0.0499] in
double, gets PyTorch's degree-8 approximant there (Bader, Blanes and Casas 2019), with its own error: up to
1e-5 from e^A in single precision, 5e-11 in double (PyTorch takes that band's approximant for one matrix
only; a batch gets its scaled degree-18 one, which is e^A to rounding, as ours).

Backward (the Fréchet derivative's adjoint, Mathias 1996): for G = dL/de^A,

    dL/dA = the top-right n × n block of exp([[Aᴴ, G], [0, Aᴴ]])   (Aᴴ = Aᵀ for a real A)

computed with this same op, so gradients of gradients work.
"""


from ..backend import errstate, xp
from ..primitive import Primitive
from .joins import cat
from .names import names

_DEGREE = 18

# PyTorch's 1-norm band for its degree-8 approximant of a lone matrix, by precision: (θ₄, θ₈]
_DEGREE_8_BAND = {4: (5.116619363445086e-02, 5.800524627688768e-01), 8: (3.397168839976962e-04, 4.991228871115323e-02)}


def _pytorch_degree_8(a):
    """PyTorch's degree-8 approximant of e^A (Bader, Blanes and Casas 2019), in A's precision:
    A₄ = A²(x₁A + x₂A²),  A₈ = (x₃A² + A₄)(x₄I + x₅A + x₆A² + x₇A₄),  T₈ = I + A + y₂A² + A₈."""
    root = 13.30413469565007072504  # √177
    x3 = 2.0 / 3.0
    x1, x2 = x3 * (1.0 + root) / 88.0, x3 * (1.0 + root) / 352.0
    x4, x5 = (-271.0 + 29.0 * root) / (315.0 * x3), (-11.0 + 11.0 * root) / (1260.0 * x3)
    x6, x7 = (-99.0 + 11.0 * root) / (5040.0 * x3), (89.0 - root) / (5040.0 * x3)
    y2 = (857.0 - 58.0 * root) / 630.0
    real = xp.float32 if a.dtype in (xp.float32, xp.complex64) else xp.float64  # (PyTorch's constants round to it)
    x1, x2, x3, x4, x5, x6, x7, y2 = (real(c) for c in (x1, x2, x3, x4, x5, x6, x7, y2))
    eye = xp.broadcast_to(xp.eye(a.shape[-1], dtype=a.dtype), a.shape)
    a2 = a @ a
    a4 = a2 @ (x1 * a + x2 * a2)
    a8 = (x3 * a2 + a4) @ (x4 * eye + x5 * a + x6 * a2 + x7 * a4)
    return eye + a + y2 * a2 + a8


def _in_pytorch_degree_8_band(a):
    """Whether PyTorch computes e^A by its degree-8 approximant: a lone matrix with its 1-norm in the band."""
    band = _DEGREE_8_BAND.get(xp.finfo(a.dtype).bits // 8)  # (a complex's finfo is its parts')
    if band is None or a.size == 0 or a.size != a.shape[-1] * a.shape[-2]:
        return False
    low, high = band
    return bool(low < xp.abs(a).sum(-2).max() <= high)


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
        return _pytorch_degree_8(a) if _in_pytorch_degree_8_band(a) else _expm(a)

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
