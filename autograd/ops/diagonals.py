"""Triangles and diagonals of matrices (the last two dims, or the dims named): tril, triu,
diag, diagonal, diag_embed, diagflat, trace.

Taking a triangle keeps some elements and zeros the others, so dL/dx is dL/dy with the same
elements kept. A diagonal is a view (a write through it changes the matrix, as in PyTorch), and placing a vector
on a diagonal its adjoint.
"""


from ..backend import xp
from ..primitive import Primitive, named_node, node_named
from ..tensor import Tensor
from . import elementwise, shape
from .arranging import movedim
from .axes import dim_index, int_argument
from .conversion import refuse_kinds
from .names import names
from .outputs import write_out


def _triangle(input, keep, op):
    if input.ndim < 2:
        raise RuntimeError(f"{op}: input tensor must have at least 2 dimensions")
    nothing = Tensor._make(xp.zeros((), dtype=input.dtype))
    return elementwise.Where.apply(input, nothing, condition=keep)


def _offset(diagonal, op, name="diagonal", position=1):
    """A diagonal's offset as an int (a 0-d integer tensor will do; a float or a bool is refused, as PyTorch)."""
    return int_argument(diagonal, op, name, position)


@names("tril", inplace="tril_")
def tril(input, diagonal=0, *, out=None):
    """The lower triangle of each matrix: elements on or below the ``diagonal``-th diagonal; 0 elsewhere."""
    rows, columns = input.shape[-2:] if input.ndim >= 2 else (0, 0)
    lower = _triangle(input, xp.tri(rows, columns, _offset(diagonal, "tril"), dtype=bool), "tril")
    return write_out(named_node(lower, None, "TrilBackward0", (input,)), out)


@names("triu", inplace="triu_")
def triu(input, diagonal=0, *, out=None):
    """The upper triangle of each matrix: elements on or above the ``diagonal``-th diagonal; 0 elsewhere."""
    rows, columns = input.shape[-2:] if input.ndim >= 2 else (0, 0)
    upper = _triangle(input, ~xp.tri(rows, columns, _offset(diagonal, "triu") - 1, dtype=bool), "triu")
    return write_out(named_node(upper, None, "TriuBackward0", (input,)), out)


def _diagonal_positions(rows, columns, offset):
    """(row indices, column indices) of the ``offset``-th diagonal of a rows × columns matrix."""
    start_row, start_column = max(-offset, 0), max(offset, 0)
    length = max(min(rows - start_row, columns - start_column), 0)
    steps = xp.arange(length)
    return steps + start_row, steps + start_column


class Diagonal(Primitive):
    """y = the ``offset``-th diagonal of the matrices in dims (dim1, dim2), as a new last dim: a view,
    so ``x.diagonal().fill_(0)`` changes x;   dL/dx = dL/dy placed on that diagonal, 0 elsewhere"""

    saves_inputs = False  # backward needs no input's values
    is_view = True
    handles_complex = True  # linear: the gradient is moved, never multiplied by a value

    def forward(self, x):
        y = xp.diagonal(x, self.offset, self.dim1, self.dim2)
        if not getattr(y.flags, "writeable", True) and x.flags.writeable:
            y.flags.writeable = True  # NumPy hands out its diagonal view read-only; the memory is x's
        return y

    def backward(self, grad, y, x):
        rows, columns = _diagonal_positions(x.shape[self.dim1], x.shape[self.dim2], self.offset)
        others = [n for d, n in enumerate(x.shape) if d not in (self.dim1, self.dim2)]
        placed = shape.IndexAdd.apply(grad, index=(Ellipsis, rows, columns), basic=False,
                                      shape=(*others, x.shape[self.dim1], x.shape[self.dim2]))
        return (movedim(placed, (-2, -1), (self.dim1, self.dim2)),)


@names("diagonal")
def diagonal(input, offset=0, dim1=0, dim2=1):
    """The ``offset``-th diagonal of the matrices spanned by dim1 and dim2, as a new last dim (a view)."""
    a, b = dim_index(dim1, input.ndim), dim_index(dim2, input.ndim)
    if a == b:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    return Diagonal.apply(input, offset=offset, dim1=a, dim2=b)


@names("fill_diagonal_", function=False)
def fill_diagonal_(input, fill_value, wrap=False):
    """Write ``fill_value`` on the main diagonal (x[i, i, ..., i]) in place; with ``wrap``, a tall
    matrix's diagonal starts again below each square block (PyTorch's wrap=True)."""
    if input.ndim < 2:
        raise RuntimeError("fill_diagonal_: dimensions must larger than 1")
    if input.ndim > 2 and len(set(input.shape)) != 1:
        raise RuntimeError("fill_diagonal_: all dimensions of input must be of equal length")
    rows, columns = input.shape[:2]
    if input.ndim == 2 and wrap and rows > columns + 1:
        for start in range(0, rows, columns + 1):  # each (columns + 1)-row block holds one diagonal
            input[start:start + columns].diagonal().fill_(fill_value)
        return input
    diagonal = input
    while diagonal.ndim > 1:  # x[i, i, ..., i]: the first two dims' diagonal, until one dim is left
        diagonal = diagonal.diagonal(0, 0, -1) if diagonal.ndim > 2 else diagonal.diagonal()
    diagonal.fill_(fill_value)
    return input


@names("diag_embed")
def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """Matrices whose ``offset``-th diagonal (in dims dim1, dim2 of the result) holds input's last dim."""
    offset = _offset(offset, "diag_embed", "offset")
    if input.ndim == 0:
        raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got -2)")
    n = input.shape[-1] + abs(offset)
    ndim = input.ndim + 1
    a, b = dim_index(dim1, ndim), dim_index(dim2, ndim)
    if a == b:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    rows, columns = _diagonal_positions(n, n, offset)
    placed = shape.IndexAdd.apply(input, index=(Ellipsis, rows, columns), shape=(*input.shape[:-1], n, n),
                                  basic=False)
    return movedim(placed, (-2, -1), (a, b))


@names("diag")
def diag(input, diagonal=0, *, out=None):
    """For a vector, the square matrix with it on the ``diagonal``-th diagonal; for a matrix, that diagonal."""
    diagonal = _offset(diagonal, "diag", position=2)
    if input.ndim == 1:
        return write_out(diag_embed(input, diagonal), out)
    if input.ndim == 2:
        rows, columns = _diagonal_positions(*input.shape, diagonal)
        return write_out(shape.GetItem.apply(input, index=(rows, columns)), out)
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {input.ndim}D")


@names("diagflat")
def diagflat(input, offset=0):
    """The square matrix with input's elements (flattened) on the ``offset``-th diagonal."""
    return diag_embed(shape.reshape(input, (-1,)), _offset(offset, "diagflat", "offset", 2))


@names("trace", function=False)
@node_named("TraceBackward0")
def trace(input):
    """The sum of a matrix's main diagonal."""
    if input.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {input.ndim}")
    refuse_kinds(input, "trace", "b")
    return diag(input).sum()
