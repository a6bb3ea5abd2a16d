"""Matrix multiplication, the one linear-algebra primitive (Y = W X in the lecture)."""

from ..function import Function
from .elementwise import unbroadcast


class MatMul(Function):
    """Y = A @ B (batched, broadcasting over leading dims);
    dL/dA = dL/dY @ Bᵀ,   dL/dB = Aᵀ @ dL/dY"""

    def forward(self, a, b):
        return a @ b

    def backward(self, grad, y, a, b):
        return (unbroadcast(grad @ b.mT, a) if a.requires_grad else None,
                unbroadcast(a.mT @ grad, b) if b.requires_grad else None)


def matmul(a, b):
    """A @ B with NumPy's rules: 1-D operands are a row (left) or a column (right)."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}; use * to multiply by a scalar")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != inner_b:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied: the first has "
            f"{a.shape[-1]} columns but the second has {inner_b} rows"
        )
    if a.ndim >= 2 and b.ndim >= 2:
        return MatMul.apply(a, b)
    y = MatMul.apply(a.unsqueeze(0) if a.ndim == 1 else a, b.unsqueeze(-1) if b.ndim == 1 else b)
    if b.ndim == 1:
        y = y.squeeze(-1)
    if a.ndim == 1:
        y = y.squeeze(-2 if b.ndim > 1 else -1)
    return y
