"""The examples in PyTorch's own docstrings (``>>>`` blocks of torch/_torch_docs.py, _tensor_docs.py, functional.py,
nn/functional.py, nn/modules, linalg and special), run on chainrule, as tests/docexamples_common.py says: each a
program over the modules whose result must equal the literal expected in tests/docexamples_expected.py and, where
PyTorch is installed, PyTorch's result. einsum, broadcasting and closeness (fixed: the sublist form, allclose's
error, broadcast_shapes' Size) and linear algebra (fixed: complex pinv, matrix_rank and householder_product; complex
pinv's gradient)."""

import numpy as np
import pytest

import autograd

from .docexamples_common import AREAS, check, example, raised

# ----------------------------------------------------------------------------------------------
# einsum, broadcasting and closeness (fixed: the sublist form, allclose's error, broadcast_shapes' Size)
# ----------------------------------------------------------------------------------------------

As = [[[0.1, -0.2, 0.3, 0.4, -0.5], [1.0, 0.5, -1.5, 2.0, 0.25]],
      [[-0.3, 0.7, 0.2, -0.1, 0.6], [0.9, -0.4, 0.8, 0.3, -0.2]],
      [[0.5, 0.5, -0.5, -0.5, 1.0], [0.2, 0.4, 0.6, 0.8, 1.0]]]
Bs = [[[0.5, -1.0, 0.25, 2.0], [1.0, 0.0, -0.5, 0.3], [0.2, 0.4, 0.6, 0.8], [-0.7, 0.1, 0.9, -0.3],
       [0.0, 1.0, 0.0, 1.0]],
      [[0.3, 0.3, -0.3, 0.3], [0.1, -0.2, 0.3, -0.4], [1.5, 0.5, -0.5, 0.0], [0.2, 0.2, 0.2, 0.2],
       [-1.0, 0.4, 0.8, 0.6]],
      [[0.9, 0.8, 0.7, 0.6], [-0.1, -0.2, -0.3, -0.4], [0.4, -0.4, 0.4, -0.4], [1.0, 2.0, 3.0, 4.0],
       [0.5, 0.0, -0.5, 0.0]]]


@example("einsum")
def einsum_sublist_batched_matmul(m):
    torch = m.torch
    A, B = torch.tensor(As), torch.tensor(Bs)
    return (torch.einsum(A, [..., 0, 1], B, [..., 1, 2], [..., 0, 2]),
            torch.einsum("bij,bjk->bik", A, B))


@example("einsum")
def einsum_sublist_implicit_output(m):
    torch = m.torch
    A, B = torch.tensor(As[0]), torch.tensor(Bs[0])
    # letters sort as the ints do: 27 ('b') after 2 ('C'), so the output is [2, 27]
    return torch.einsum(A, [27, 1], B, [1, 2]), torch.einsum(torch.tensor([1.0, 2.0, 3.0]), [0], [])


@example("einsum")
def einsum_sublist_out_of_range(m):
    try:
        m.torch.einsum(m.torch.tensor([1.0, 2.0]), [52])
    except ValueError as error:
        return "valid range [0, 52)" in str(error)
    return "no error"


@example("einsum")
def einsum_equations(m):
    torch = m.torch
    A = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    x, y = torch.tensor([1.0, -1.0, 2.0]), torch.tensor([0.5, 3.0])
    l, r = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.5], [2.0, -1.0]])
    Abn = torch.arange(12.0).reshape(2, 3, 2)
    return (torch.einsum("ii", A), torch.einsum("ii->i", A), torch.einsum("i,j->ij", x, y),
            torch.einsum("...ij->...ji", Abn).shape, torch.einsum("bn,anm,bm->ba", l, Abn, r))


@example("broadcasting")
def broadcast_shapes_is_a_size(m):
    shape = m.torch.broadcast_shapes((2,), (3, 1), (1, 1, 1))
    return shape, type(shape).__name__


@example("broadcasting")
def broadcast_tensors_and_to(m):
    torch = m.torch
    x = torch.arange(3).view(1, 3)
    y = torch.arange(2).view(2, 1)
    a, b = torch.broadcast_tensors(x, y)
    return a, b, torch.broadcast_to(torch.tensor([1, 2, 3]), (3, 3))


@example("broadcasting")
def allclose_of_shapes_that_do_not_broadcast(m):
    """torch.qr's example: q of a (3, 4, 5) batch with some=False is (3, 4, 4), not comparable with eye(5)."""
    torch = m.torch
    q = torch.eye(4).expand(3, 4, 4)
    raised = []
    for op in (torch.allclose, torch.isclose):
        try:
            op(torch.matmul(q.mT, q), torch.eye(5))
        except RuntimeError as error:
            raised.append("must match the size of tensor b (5) at non-singleton dimension 2" in str(error))
    return raised


@example("broadcasting")
def allclose_and_isclose(m):
    torch = m.torch
    return (torch.allclose(torch.tensor([10000., 1e-07]), torch.tensor([10000.1, 1e-08])),
            torch.allclose(torch.tensor([10000., 1e-08]), torch.tensor([10000.1, 1e-09])),
            torch.allclose(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")]), equal_nan=True),
            torch.isclose(torch.tensor((1., 2, 3)), torch.tensor((1 + 1e-10, 3, 4))),
            torch.isclose(torch.tensor((float("inf"), 4)), torch.tensor((float("inf"), 6)), rtol=.5))


# ----------------------------------------------------------------------------------------------
# linear algebra (fixed: complex pinv, matrix_rank and householder_product)
# ----------------------------------------------------------------------------------------------

H = [[[0.5 + 0.1j, -0.3 + 0.2j], [0.7 - 0.4j, 0.2 + 0.9j]],
     [[-1.1 + 0.3j, 0.4 - 0.6j], [0.25 + 0.5j, -0.8 - 0.1j]],
     [[0.3 - 0.3j, 1.2 + 0.4j], [-0.6 + 0.2j, 0.1 - 0.7j]]]
TAU = [[0.9 + 0.2j], [1.3 - 0.4j], [0.6 + 0.5j]]
C3 = [[1.0 + 2.0j, -0.5 + 0.5j, 0.3 - 0.2j], [0.4 + 0.1j, 2.0 - 1.0j, -0.7 + 0.3j],
      [0.2 - 0.6j, 0.9 + 0.4j, 1.5 + 0.0j]]


@example("linalg")
def householder_product_of_complex_reflections(m):
    torch = m.torch
    return torch.linalg.householder_product(torch.tensor(H), torch.tensor(TAU))


@example("linalg")
def householder_product_is_qr_q(m):
    torch = m.torch
    A = torch.tensor([[2.0, -1.0], [1.0, 3.0]], dtype=torch.float64)
    h, tau = torch.geqrf(A)
    Q = torch.linalg.householder_product(h, tau)
    return Q, torch.dist(Q, torch.linalg.qr(A).Q) < 1e-12


@example("linalg")
def ormqr_complex_conjugate_transposed(m):
    torch = m.torch
    h, tau = torch.tensor(H), torch.tensor([[0.9 + 0.2j, 0.4 - 0.1j], [1.3 - 0.4j, 0.2j], [0.6 + 0.5j, 1.1 + 0.0j]])
    C = torch.tensor(C3)[:2, :].expand(3, 2, 3)
    return (torch.ormqr(h, tau, C, left=True, transpose=True),
            torch.ormqr(h, tau, C.mT, left=False, transpose=True))


@example("linalg")
def pinv_of_a_complex_hermitian_matrix(m):
    torch = m.torch
    A = torch.tensor(C3, dtype=torch.complex64)
    A = A + A.T.conj()  # creates a Hermitian matrix
    Apinv = torch.linalg.pinv(A, hermitian=True)
    return Apinv, torch.dist(Apinv @ A, torch.eye(3, dtype=torch.complex64)) < 1e-5, torch.linalg.pinv(A)


@example("linalg")
def matrix_rank_of_complex_matrices(m):
    torch = m.torch
    A = torch.tensor([C3, [[1.0, 2.0j, 0.0], [2.0j, -4.0, 0.0], [0.0, 0.0, 0.1]]], dtype=torch.complex64)
    return (torch.linalg.matrix_rank(A), torch.linalg.matrix_rank(A, hermitian=True),
            torch.linalg.matrix_rank(A, atol=1.0, rtol=0.0),
            torch.linalg.matrix_rank(A, atol=1.0, rtol=0.0, hermitian=True))


@example("linalg")
def matrix_rank_hermitian_reads_the_lower_triangle(m):
    torch = m.torch
    # not symmetric: with hermitian=True only the lower triangle counts, as LAPACK's eigvalsh reads it
    A = torch.tensor([[1.0, 5.0, 7.0], [1.0, 1.0, -2.0], [1.0, 1.0, 1.0]])
    return (torch.linalg.matrix_rank(A), torch.linalg.matrix_rank(A, hermitian=True),
            torch.linalg.matrix_rank(A, hermitian=True, rtol=0.4), torch.linalg.matrix_rank(torch.eye(10)))


@example("linalg")
def cholesky_solve(m):
    torch = m.torch
    A = torch.tensor([[2.0, -0.5, 0.3], [0.4, 1.5, -1.0], [0.0, 0.7, 1.2]])
    A = A @ A.T + torch.eye(3) * 1e-3  # Creates a symmetric positive-definite matrix
    L = torch.linalg.cholesky(A)  # Extract Cholesky decomposition
    B = torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    Ac = torch.tensor(C3, dtype=torch.complex64)
    Ac = Ac @ Ac.mH + torch.eye(3) * 1e-3  # Hermitian positive-definite
    Bc = torch.tensor([[1.0 + 1.0j], [0.0], [-1.0j]], dtype=torch.complex64)
    X = torch.cholesky_solve(Bc, torch.linalg.cholesky(Ac))
    return (torch.cholesky_solve(B, L), A.inverse() @ B, X, torch.dist(X, Ac.inverse() @ Bc) < 1e-4,
            raised(torch.cholesky_solve, Bc, torch.linalg.cholesky(Ac.to(torch.complex128))))


@example("linalg")
def solvers_refuse_operands_of_different_dtypes(m):
    """The docs' examples under set_default_dtype(float64) mixed complex64 and complex128: PyTorch's
    solvers promote neither operand (solve_triangular alone does)."""
    torch = m.torch
    A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    L = torch.linalg.cholesky(A)
    b = torch.ones(2, 1)
    return (raised(torch.cholesky_solve, b, L), raised(torch.linalg.solve, A, b),
            raised(torch.linalg.solve_ex, A, b), raised(torch.triangular_solve, b, L, upper=False),
            raised(torch.linalg.lu_solve, *torch.linalg.lu_factor(A), b),
            raised(torch.linalg.ldl_solve, *torch.linalg.ldl_factor(A), b),
            torch.linalg.solve_triangular(L, b, upper=False))


@example("linalg")
def det_logdet_slogdet(m):
    """torch.logdet's example; its A (random there) has a negative determinant here: logdet is NaN,
    and nothing flows back from it (PyTorch's zero gradient, not log|det A|'s A⁻ᵀ)."""
    torch = m.torch
    A = torch.tensor([[[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [1.5, 0.2, 0.1]],
                      [[0.2, 1.0, 0.0], [1.0, 0.1, 0.0], [0.0, 0.0, 2.0]]], requires_grad=True)
    logdet = torch.logdet(A)
    grad, = torch.autograd.grad(logdet.nan_to_num(0.0).sum(), A)
    return torch.linalg.det(A), logdet, torch.linalg.slogdet(A), grad


@example("linalg")
def norms(m):
    torch = m.torch
    LA = torch.linalg
    a = torch.arange(9, dtype=torch.float) - 4
    B = a.reshape((3, 3))
    c = torch.tensor([[1., 2., 3.], [-1, 1, 4]])
    return (LA.norm(a), LA.norm(B), LA.norm(B, "fro"), LA.norm(a, float("inf")), LA.norm(B, float("inf")),
            LA.norm(a, -float("inf")), LA.norm(B, 1), LA.norm(a, -1), LA.norm(B, 2), LA.norm(B.double(), -2),
            LA.norm(a, 3), LA.norm(c, dim=0), LA.norm(c, ord=1, dim=1), LA.vector_norm(B, ord=3.5),
            torch.norm(torch.arange(8, dtype=torch.float).reshape(2, 2, 2), dim=(1, 2)))


@example("linalg")
def multi_dot_and_vander(m):
    torch = m.torch
    A, B, C = torch.arange(2 * 3).view(2, 3), torch.arange(3 * 2).view(3, 2), torch.arange(2 * 2).view(2, 2)
    x = torch.tensor([1, 2, 3, 5])
    return (torch.linalg.multi_dot([torch.tensor([1, 2]), torch.tensor([2, 3])]),
            torch.linalg.multi_dot([torch.tensor([[1, 2]]), torch.tensor([[2], [3]])]),
            torch.linalg.multi_dot((A, B, C)), torch.linalg.vander(x, N=3), torch.vander(x, N=3, increasing=True))


@example("linalg")
def qr_of_the_documented_matrix(m):  # (PyTorch warns that torch.qr is deprecated)
    torch = m.torch
    a = torch.tensor([[12., -51, 4], [6, 167, -68], [-4, 24, -41]])
    q, r = torch.qr(a)
    return q, r, torch.mm(q, r).round(), torch.mm(q.t(), q).round()


@example("linalg")
def cdist_trace_and_kron(m):
    torch = m.torch
    a = torch.tensor([[0.9041, 0.0196], [-0.3108, -2.4423], [-0.4821, 1.059]])
    b = torch.tensor([[-2.1763, -0.4713], [-0.6986, 1.3702]])
    mat1 = torch.eye(2)
    mat2 = torch.ones(2, 2)
    return (torch.cdist(a, b, p=2), torch.trace(torch.arange(1., 10.).view(3, 3)), torch.kron(mat1, mat2),
            torch.block_diag(torch.tensor([[0, 1], [1, 0]]), torch.tensor(7), torch.tensor([1, 2, 3])))


@pytest.mark.parametrize("name", list(AREAS["einsum"]))
def test_einsum(name):
    check("einsum", name)


@pytest.mark.parametrize("name", list(AREAS["broadcasting"]))
def test_broadcasting_and_closeness(name):
    check("broadcasting", name)


@pytest.mark.filterwarnings("ignore:torch.qr is deprecated")
@pytest.mark.parametrize("name", list(AREAS["linalg"]))
def test_linalg(name):
    check("linalg", name, rtol=1e-4, atol=1e-5)


def test_complex_pinv_has_a_gradient():
    """(It refused one before pinv's backward was written with ᴴ: tests/test_linalg_complex.py checks the values.)"""
    A = autograd.tensor(np.array(C3), requires_grad=True)
    assert autograd.autograd.gradcheck(autograd.linalg.pinv, (A,))
