# ruff: noqa: E741, N806  (the examples keep PyTorch's documentation's names: l, A, B, ...)
"""The examples in PyTorch's own docstrings (``>>>`` blocks of torch/_torch_docs.py, _tensor_docs.py,
functional.py, nn/functional.py, nn/modules, linalg and special), run on chainrule.

A probe ran every example of PyTorch 2.13's docstrings (about 3100) on both libraries and compared
what they return and print; the examples here are those that found a difference, now fixed (einsum's
sublist form, allclose of shapes that do not broadcast, broadcast_shapes' Size, complex pinv,
matrix_rank and householder_product, hash_tensor, from_file, a layer given a non-tensor), and a
sample of those that already agreed, grouped by area. Random inputs (``torch.randn(...)`` in the
docs) are replaced by fixed values; layers with random weights get fixed ones (``fill``).

Each example is a program over the modules (``m.torch`` is ``autograd`` or ``torch``). Its result
must equal the literal expected here, so that it is tested without PyTorch, and, where PyTorch is
installed, PyTorch's result: the same dtypes, shapes and values.
"""

import math
import os

import numpy as np
import pytest

import autograd

from .pytorch_programs import OURS, pytorch

NAN, INF = math.nan, math.inf

AREAS = {}  # area -> {example name: program}


def example(area):
    def register(program):
        AREAS.setdefault(area, {})[program.__name__] = program
        return program

    return register


def snap(value):
    """A result as literals: a tensor as (dtype name, nested list of values), a Size as a list,
    a dtype as its name; tuples (named or not) and lists as lists."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        array = value.detach().numpy()
        return (str(value.dtype).removeprefix("torch."), array.tolist())
    if type(value).__name__ == "Size":
        return [int(n) for n in value]
    if type(value).__name__ == "dtype" or type(value).__name__.endswith("DType"):
        return str(value).removeprefix("torch.")
    if isinstance(value, (list, tuple)):
        return [snap(v) for v in value]
    return value


def assert_matches(got, expected, where="result", rtol=1e-5, atol=1e-6):
    """got (a snap) equals expected: tensors' dtypes and shapes exactly, their values to rtol/atol."""
    if isinstance(expected, tuple):  # a tensor: (dtype, values)
        assert isinstance(got, tuple), f"{where}: expected a tensor, got {got!r}"
        assert got[0] == expected[0], f"{where}: dtype {got[0]} != {expected[0]}"
        a, b = np.asarray(got[1]), np.asarray(expected[1])
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)
        else:
            assert a.tolist() == b.tolist(), f"{where}: {a.tolist()} != {b.tolist()}"
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), f"{where}: {got!r} != {expected!r}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_matches(g, e, f"{where}[{i}]", rtol, atol)
    elif isinstance(expected, float):
        close = math.isclose(got, expected, rel_tol=rtol, abs_tol=atol) or math.isnan(got) and math.isnan(expected)
        assert type(got) in (float, int) and close, f"{where}: {got} != {expected}"
    else:
        assert type(got) is type(expected) and got == expected, f"{where}: {got!r} != {expected!r}"


def fill(m, module):
    """Fixed weights for a layer (the docs' are random): its parameters in order, each a linspace."""
    with m.torch.no_grad():
        for k, p in enumerate(module.parameters()):
            p.copy_(m.torch.linspace(-0.5 + 0.1 * k, 0.5 - 0.05 * k, p.numel()).reshape(p.shape))
    return module


def raised(call, *args, **kwargs):
    """The class name and message of what call raises (None where it returns)."""
    try:
        call(*args, **kwargs)
    except Exception as error:  # noqa: BLE001  (the class is the result)
        return [type(error).__name__, str(error).split("\n")[0]]
    return None


def check(area, name, rtol=1e-5, atol=1e-6):
    program = AREAS[area][name]
    ours = snap(program(OURS))
    assert_matches(ours, EXPECTED[name], "chainrule", rtol, atol)
    torch_modules = pytorch()
    if torch_modules is not None:
        assert_matches(snap(program(torch_modules)), ours, "PyTorch against chainrule", rtol, atol)


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


# ----------------------------------------------------------------------------------------------
# creation (fixed: from_file, hash_tensor)
# ----------------------------------------------------------------------------------------------


@example("creation")
def from_file_reads_raw_bytes(m):
    torch = m.torch
    path = os.path.join(os.environ.get("DOCEXAMPLES_DIR", "."), f"storage-{torch.__name__}.pt")
    t = torch.tensor([[0.5, -1.25, 2.0, 3.5, 0.0], [1.0, 2.0, 4.0, 8.0, -16.0]], dtype=torch.float64)
    t.numpy().tofile(path)
    t_mapped = torch.from_file(path, shared=False, size=10, dtype=torch.float64)
    t_mapped[1] = 7.0  # a private copy: the file keeps -1.25
    # (cloned before the shared write below: PyTorch's private copy is a copy-on-write mapping of the file,
    # whose untouched pages show later writes to the file; chainrule reads the bytes at once)
    halves = torch.from_file(path, size=4, dtype=torch.float32).clone()
    try:
        torch.from_file(path, size=11, dtype=torch.float64)
        refused = False
    except RuntimeError as error:
        refused = "is smaller than the required mapping size <88>" in str(error)
    del t_mapped
    shared = torch.from_file(path, shared=True, size=12, dtype=torch.float64)  # the file, grown to 12 elements
    shared[0] = 42.0
    shared.add_(1.0)
    del shared
    written = np.fromfile(path, dtype=np.float64).tolist()
    os.remove(path)
    return halves, written, refused


@example("creation")
def hash_tensor(m):
    torch = m.torch
    a = torch.tensor([[1.1918, -1.1813, 0.3373]])
    b = torch.tensor([[0.1317, -0.5554, -1.4724, -1.1391], [0.0778, -0.6070, 0.6375, 0.1798]])
    return (torch.hash_tensor(a), torch.hash_tensor(b, 1), torch.hash_tensor(b, 0, keepdim=True),
            torch.hash_tensor(torch.tensor([1, -2, 3])), torch.hash_tensor(torch.tensor([True, False, True])))


@example("creation")
def tensor_split(m):
    torch = m.torch
    x7 = torch.arange(7)
    x = torch.arange(14).reshape(2, 7)
    return (torch.tensor_split(torch.arange(8), 3), torch.tensor_split(x7, 3), torch.tensor_split(x7, (1, 6)),
            torch.tensor_split(x, 3, dim=1), torch.tensor_split(x, (1, 6), dim=1))


@example("creation")
def linspace_logspace_range(m):
    torch = m.torch
    return (torch.linspace(3, 10, steps=5), torch.linspace(start=-10, end=10, steps=1),
            torch.logspace(start=-10, end=10, steps=5), torch.logspace(start=0.1, end=1.0, steps=5),
            torch.logspace(start=2, end=2, steps=1, base=2), torch.arange(1, 2.5, 0.5), torch.full((2, 3), 3.141592))


@example("creation")
def tril_triu_indices(m):
    torch = m.torch
    return (torch.tril_indices(3, 3), torch.tril_indices(4, 3, -1), torch.tril_indices(4, 3, 1),
            torch.triu_indices(4, 3, -1))


@example("creation")
def combinations_and_cartesian_prod(m):
    torch = m.torch
    a = torch.tensor([1, 2, 3])
    return (torch.combinations(a), torch.combinations(a, r=3), torch.combinations(a, with_replacement=True),
            torch.cartesian_prod(a, torch.tensor([4, 5])))


@example("creation")
def stacks(m):
    torch = m.torch
    a, b = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    return (torch.hstack((a, b)), torch.vstack((a, b)), torch.dstack((a, b)), torch.column_stack((a, b)),
            torch.atleast_2d(torch.tensor(1.)), torch.atleast_3d(a).shape)


# ----------------------------------------------------------------------------------------------
# pointwise maths
# ----------------------------------------------------------------------------------------------


@example("pointwise")
def frexp_ldexp(m):
    torch = m.torch
    mantissa, exponent = torch.frexp(torch.arange(9.))
    return (mantissa, exponent, torch.ldexp(mantissa, exponent),
            torch.ldexp(torch.tensor([1., 1.]), torch.tensor([1, 2])))


@example("pointwise")
def fmod_remainder_floor_divide(m):
    torch = m.torch
    return (torch.fmod(torch.tensor([-3., -2, -1, 1, 2, 3]), 2), torch.fmod(torch.tensor([1, 2, 3, 4, 5]), -1.5),
            torch.remainder(torch.tensor([-3., -2, -1, 1, 2, 3]), 2),
            torch.remainder(torch.tensor([1, 2, 3, 4, 5]), -1.5),
            torch.floor_divide(torch.tensor([4.0, 3.0]), torch.tensor([2.0, 2.0])),
            torch.div(torch.tensor([-7, 7]), 2, rounding_mode="floor"))


@example("pointwise")
def bitwise(m):
    torch = m.torch
    a, b = torch.tensor([-1, -2, 3], dtype=torch.int8), torch.tensor([1, 0, 3], dtype=torch.int8)
    return (torch.bitwise_not(a), torch.bitwise_and(a, b), torch.bitwise_or(a, b), torch.bitwise_xor(a, b),
            torch.bitwise_left_shift(a, b), torch.bitwise_right_shift(a, b),
            torch.bitwise_xor(torch.tensor([True, True, False]), torch.tensor([False, True, False])))


@example("pointwise")
def gcd_lcm_hypot_logaddexp(m):
    torch = m.torch
    a = torch.tensor([5, 10, 15])
    return (torch.gcd(a, torch.tensor([3, 4, 5])), torch.lcm(a, torch.tensor([3, 4, 5])),
            torch.hypot(torch.tensor([4.0]), torch.tensor([3.0, 4.0, 5.0])),
            torch.logaddexp(torch.tensor([-1.0]), torch.tensor([-1.0, -2, -3])),
            torch.logaddexp(torch.tensor([-100.0, -200, -300]), torch.tensor([-1.0, -2, -3])))


@example("pointwise")
def heaviside_sign_signbit(m):
    torch = m.torch
    x = torch.tensor([-1.5, 0, 2.0])
    a = torch.tensor([0.7, -1.2, 0., 2.3])
    return (torch.heaviside(x, torch.tensor([0.5])), torch.heaviside(x, torch.tensor([1.2, -2.0, 3.5])),
            torch.sign(a), torch.signbit(torch.tensor([-0.0, 0.0, -1.5])), torch.sgn(torch.tensor([3 + 4j, -2j])))


@example("pointwise")
def nan_to_num_and_friends(m):
    torch = m.torch
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.14])
    return (torch.nan_to_num(x), torch.nan_to_num(x, nan=2.0), torch.nan_to_num(x, nan=2.0, posinf=1.0),
            torch.isinf(x), torch.isposinf(x), torch.isneginf(x), torch.isfinite(x), torch.isnan(x),
            torch.nansum(torch.tensor([1., float("nan")])))


@example("pointwise")
def complex_numbers(m):
    torch = m.torch
    real, imag = torch.tensor([1, 2], dtype=torch.float32), torch.tensor([3, 4], dtype=torch.float32)
    abs_, angle = torch.tensor([1, 2], dtype=torch.float64), torch.tensor([np.pi / 2, 5 * np.pi / 4],
                                                                          dtype=torch.float64)
    return (torch.complex(real, imag), torch.polar(abs_, angle),
            torch.angle(torch.tensor([-1 + 1j, -2 + 2j, 3 - 3j])) * 180 / 3.14159,
            torch.vdot(torch.tensor([2 + 3j, 3 + 4j]), torch.tensor([1 + 2j, 2 + 3j])),
            torch.isreal(torch.tensor([1, 1 + 1j, 2 + 0j])))


@example("pointwise")
def rounding_and_degrees(m):
    torch = m.torch
    return (torch.round(torch.tensor((4.7, -2.3, 9.1, -7.7))), torch.round(torch.tensor([-0.5, 0.5, 1.5, 2.5])),
            torch.round(torch.tensor([0.1234567]), decimals=3), torch.round(torch.tensor([1200.1234567]), decimals=-3),
            torch.frac(torch.tensor([1, 2.5, -3.2])), torch.rad2deg(torch.tensor([[3.142, -3.142], [6.283, -6.283]])),
            torch.deg2rad(torch.tensor([[180.0, -180.0], [360.0, -360.0], [90.0, -90.0]])))


@example("pointwise")
def comparisons(m):
    torch = m.torch
    a, b = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 1], [4, 4]])
    return (torch.eq(a, b), torch.ge(a, b), torch.gt(a, b), torch.le(a, b), torch.lt(a, b), torch.ne(a, b),
            torch.equal(torch.tensor([1, 2]), torch.tensor([1, 2])),
            torch.maximum(torch.tensor((1, 2, -1)), torch.tensor((3, 0, 4))),
            torch.fmax(torch.tensor([9.7, float("nan"), 3.1, float("nan")]),
                       torch.tensor([-2.2, 0.5, float("nan"), float("nan")])))


@example("pointwise")
def isin_and_nextafter(m):
    torch = m.torch
    eps = torch.finfo(torch.float32).eps
    return (torch.isin(torch.tensor([[1, 2], [3, 4]]), torch.tensor([2, 3])),
            torch.nextafter(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])) == torch.tensor([eps + 1, 2 - eps]))


@example("pointwise")
def type_promotion(m):
    torch = m.torch
    return (torch.promote_types(torch.int32, torch.float32), torch.promote_types(torch.uint8, torch.long),
            torch.result_type(torch.tensor([1, 2], dtype=torch.int), 1.0),
            torch.result_type(torch.tensor([1, 2], dtype=torch.uint8), torch.tensor(1)),
            torch.can_cast(torch.double, torch.float), torch.can_cast(torch.float, torch.int))


# ----------------------------------------------------------------------------------------------
# special functions
# ----------------------------------------------------------------------------------------------


@example("special")
def polygamma_digamma_lgamma(m):
    torch = m.torch
    a = torch.tensor([1, 0.5])
    return (torch.special.polygamma(1, a), torch.special.polygamma(2, a), torch.special.polygamma(4, a),
            torch.special.digamma(torch.tensor([1, 0.5])), torch.lgamma(torch.arange(0.5, 2, 0.5)),
            torch.special.gammaln(torch.arange(0.5, 2, 0.5)))


@example("special")
def error_functions(m):
    torch = m.torch
    return (torch.special.erf(torch.tensor([0, -1., 10.])), torch.special.erfc(torch.tensor([0, -1., 10.])),
            torch.special.erfcx(torch.tensor([0, -1., 10.])), torch.special.erfinv(torch.tensor([0, 0.5, -1.])),
            torch.special.ndtr(torch.tensor([-3., -2, -1, 0, 1, 2, 3])),
            torch.special.ndtri(torch.tensor([0, 0.25, 0.5, 0.75, 1])),
            torch.special.log_ndtr(torch.tensor([-3., -2, -1, 0, 1, 2, 3])))


@example("special")
def bessel_zeta_gammainc(m):
    torch = m.torch
    x = torch.tensor([2., 4.])
    a1, a2 = torch.tensor([4.0]), torch.tensor([3.0, 4.0, 5.0])
    return (torch.i0(torch.arange(5, dtype=torch.float32)), torch.special.i0e(torch.arange(5, dtype=torch.float32)),
            torch.special.i1(torch.arange(5, dtype=torch.float32)),
            torch.special.i1e(torch.arange(5, dtype=torch.float32)),
            torch.special.zeta(x, 1), torch.special.zeta(x, torch.tensor([1., 2.])),
            torch.special.gammaincc(a1, a2), torch.special.gammainc(a1, a2) + torch.special.gammaincc(a1, a2))


@example("special")
def xlogy_entr_softmax(m):
    torch = m.torch
    x = torch.zeros(5,)
    y = torch.tensor([-1, 0, 1, float("inf"), float("nan")])
    t = torch.ones(2, 2)
    return (torch.special.xlogy(x, y), torch.special.xlogy(torch.tensor([1, 2, 3]), torch.tensor([3, 2, 1])),
            torch.special.xlog1py(torch.tensor([1, 2, 3]), torch.tensor([3, 2, 1])),
            torch.special.entr(torch.arange(-0.5, 1, 0.5)), torch.special.softmax(t, 0),
            torch.special.log_softmax(t, 0), torch.special.expm1(torch.tensor([0, math.log(2.)])),
            torch.special.exp2(torch.tensor([0, math.log2(2.), 3, 4])))


# ----------------------------------------------------------------------------------------------
# reductions, sorting and searching
# ----------------------------------------------------------------------------------------------

VM = [[0.2035, 1.2959, 1.8101, -0.4644], [1.5027, -0.3270, 0.5905, 0.6538],
      [-1.5745, 1.3330, -0.5596, -0.6548], [0.1264, -0.5080, 1.6420, 0.1992]]


@example("reductions")
def var_std_mean(m):
    torch = m.torch
    a = torch.tensor(VM)
    return (torch.var_mean(a, dim=0, keepdim=True), torch.std_mean(a, dim=0, keepdim=True),
            torch.var(a, dim=1, keepdim=True), torch.std(a, dim=1, correction=0))


@example("reductions")
def aminmax_kthvalue_mode(m):
    torch = m.torch
    b = torch.tensor([[0, 0, 0, 2, 0, 0, 2], [0, 3, 0, 0, 2, 0, 1], [2, 2, 2, 0, 0, 0, 3],
                      [2, 2, 3, 0, 1, 1, 0], [1, 1, 0, 0, 2, 0, 2]])
    x = torch.arange(1., 7.).resize_(2, 3)
    return (torch.aminmax(torch.tensor([1, -3, 5])), torch.aminmax(torch.tensor([1, -3, 5, torch.nan])),
            torch.arange(10).view(2, 5).aminmax(dim=0, keepdim=True), torch.kthvalue(torch.arange(1., 6.), 4),
            torch.kthvalue(x, 2, 0, True), torch.mode(b, 0))


@example("reductions")
def topk_argsort_take_along_dim(m):
    torch = m.torch
    t = torch.tensor([[10, 30, 20], [60, 40, 50]])
    return (torch.topk(torch.arange(1., 6.), 3), torch.take_along_dim(t, torch.argmax(t)),
            torch.take_along_dim(t, torch.argsort(t, dim=1), dim=1), torch.take(t, torch.tensor([0, 2, 5])))


@example("reductions")
def searchsorted_bucketize(m):
    torch = m.torch
    sorted_sequence = torch.tensor([[1, 3, 5, 7, 9], [2, 4, 6, 8, 10]])
    values = torch.tensor([[3, 6, 9], [3, 6, 9]])
    boundaries = torch.tensor([1, 3, 5, 7, 9])
    return (torch.searchsorted(sorted_sequence, values), torch.searchsorted(sorted_sequence, values, side="right"),
            torch.searchsorted(boundaries, values), torch.bucketize(values, boundaries),
            torch.bucketize(values, boundaries, right=True))


@example("reductions")
def unique_and_unique_consecutive(m):
    torch = m.torch
    x = torch.tensor([[1, 3, 2, 3], [1, 2, 1, 2]], dtype=torch.long)
    y = torch.tensor([1, 1, 2, 2, 3, 1, 1, 2])
    return (torch.unique(torch.tensor([1, 3, 2, 3], dtype=torch.long), sorted=True, return_inverse=True),
            torch.unique(torch.tensor([[1, 3], [2, 3]], dtype=torch.long), sorted=True, return_inverse=True),
            torch.unique(x, dim=0), torch.unique(x, dim=1), torch.unique_consecutive(y, return_inverse=True),
            torch.unique_consecutive(y, return_counts=True))


@example("reductions")
def cumulative_and_trapezoid(m):
    torch = m.torch
    y = torch.tensor([1, 5, 10])
    return (torch.cumulative_trapezoid(y), torch.cumulative_trapezoid(y, dx=2),
            torch.cumulative_trapezoid(y, torch.tensor([1, 3, 6])),
            torch.cumulative_trapezoid(torch.arange(9).reshape(3, 3), dim=0),
            torch.cumulative_trapezoid(torch.ones(3, 3), torch.tensor([[1, 2, 3], [1, 3, 5], [1, 4, 7]])),
            torch.trapezoid(torch.tensor([1, 5, 10]), torch.tensor([1, 3, 6])))


@example("reductions")
def gradient_diff_histogram(m):
    torch = m.torch
    t = torch.tensor([[1, 2, 4, 8], [10, 20, 40, 80]])
    a = torch.tensor([1, 3, 2])
    return (torch.gradient(torch.tensor([4., 1., 1., 16.]), spacing=(torch.tensor([-2., -1., 1., 4.]),)),
            torch.gradient(t), torch.gradient(t, spacing=2.0), torch.gradient(t, spacing=[3., 2.]),
            torch.gradient(t, spacing=(torch.tensor([0, 2]), torch.tensor([0, 3, 6, 9]))),
            torch.diff(a), torch.diff(a, append=torch.tensor([4, 5])),
            torch.diff(torch.tensor([[1, 2, 3], [3, 4, 5]]), dim=0),
            torch.histogram(torch.tensor([1., 2, 1]), bins=4, range=(0., 3.), weight=torch.tensor([1., 2., 4.]),
                            density=True),
            torch.histc(torch.tensor([1., 2, 1]), bins=4, min=0, max=3))


# ----------------------------------------------------------------------------------------------
# shapes and indexing
# ----------------------------------------------------------------------------------------------


@example("shapes")
def gather_roll_flip_rot90(m):
    torch = m.torch
    x = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]).view(4, 2)
    return (torch.gather(torch.tensor([[1, 2], [3, 4]]), 1, torch.tensor([[0, 0], [1, 0]])), torch.roll(x, 1),
            torch.roll(x, -1, 0), torch.roll(x, shifts=(2, 1), dims=(0, 1)),
            torch.flip(torch.arange(8).view(2, 2, 2), [0, 1]), torch.rot90(torch.arange(4).view(2, 2), 1, [0, 1]),
            torch.fliplr(torch.arange(4).view(2, 2)))


@example("shapes")
def repeat_interleave_and_tile(m):
    torch = m.torch
    y = torch.tensor([[1, 2], [3, 4]])
    return (torch.tensor([1, 2, 3]).repeat_interleave(2), torch.repeat_interleave(y, 3, dim=1),
            torch.repeat_interleave(y, torch.tensor([1, 2]), dim=0, output_size=3),
            torch.repeat_interleave(torch.tensor([1, 2, 3])), torch.tile(torch.tensor([1, 2, 3]), (2,)),
            torch.tile(y, (2, 2)))


@example("shapes")
def unravel_index_nonzero_argwhere(m):
    torch = m.torch
    return (torch.unravel_index(torch.tensor(4), (3, 2)),
            torch.unravel_index(torch.tensor([1234, 5678]), (10, 10, 10, 10)),
            torch.nonzero(torch.tensor([[0.6, 0.0, 0.0, 0.0], [0.0, 0.4, 0.0, 0.0], [0.0, 0.0, 1.2, 0.0],
                                        [0.0, 0.0, 0.0, -0.4]])),
            torch.nonzero(torch.tensor([1, 1, 1, 0, 1]), as_tuple=True),
            torch.argwhere(torch.tensor([[1, 0, 1], [0, 1, 1]])))


@example("shapes")
def movedim_narrow_unflatten(m):
    torch = m.torch
    t = torch.arange(24).reshape(2, 3, 4)
    return (torch.movedim(t, 1, 0).shape, torch.moveaxis(t, (1, 2), (0, 1)).shape,
            torch.narrow(torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), 1, 1, 2),
            torch.unflatten(torch.arange(12).reshape(3, 4), 1, (2, 2)).shape, torch.swapaxes(t, 0, 2).shape,
            torch.diagonal_scatter(torch.zeros(3, 3), torch.ones(2), 1))


# ----------------------------------------------------------------------------------------------
# nn: functions, layers (fixed: a non-tensor given to a layer is a TypeError), losses
# ----------------------------------------------------------------------------------------------


@example("nn")
def pooling_a_non_tensor_is_a_type_error(m):
    pool = m.nn.MaxPool2d(2, stride=2, return_indices=True)
    try:
        pool(input)  # the nn.MaxUnpool2d example's `input` where its line is missing: the built-in
    except TypeError as error:
        return "must be" in str(error) and "Tensor" in str(error)
    return "no error"


@example("nn")
def max_pool_and_unpool(m):
    torch, nn = m.torch, m.nn
    pool, unpool = nn.MaxPool1d(2, stride=2, return_indices=True), nn.MaxUnpool1d(2, stride=2)
    x = torch.tensor([[[1., 2, 3, 4, 5, 6, 7, 8, 9]]])
    output, indices = pool(x)
    pool2, unpool2 = nn.MaxPool2d(2, stride=2, return_indices=True), nn.MaxUnpool2d(2, stride=2)
    x2 = torch.tensor([[[[1., 2., 3., 4.], [5., 6., 7., 8.], [9., 10., 11., 12.], [13., 14., 15., 16.]]]])
    output2, indices2 = pool2(x2)
    return unpool(output, indices, output_size=x.size()), unpool(output, indices), unpool2(output2, indices2)


@example("nn")
def avg_pool_and_upsampling(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.arange(1, 5, dtype=torch.float32).view(1, 1, 2, 2)
    return (F.avg_pool1d(torch.tensor([[[1, 2, 3, 4, 5, 6, 7]]], dtype=torch.float32), kernel_size=3, stride=2),
            nn.AvgPool1d(3, stride=2)(torch.tensor([[[1., 2, 3, 4, 5, 6, 7]]])),
            nn.UpsamplingBilinear2d(scale_factor=2)(x), nn.UpsamplingNearest2d(scale_factor=2)(x),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)(x))


@example("nn")
def padding_layers(m):
    torch, nn = m.torch, m.nn
    x = torch.arange(9, dtype=torch.float).reshape(1, 1, 3, 3)
    return (nn.CircularPad2d((1, 1, 2, 0))(x), nn.ReflectionPad2d((1, 1, 2, 0))(x),
            nn.ReplicationPad2d((1, 1, 2, 0))(x),
            nn.ReflectionPad1d((3, 1))(torch.arange(8, dtype=torch.float).reshape(1, 2, 4)),
            nn.ZeroPad2d((1, 1, 2, 0))(x), nn.ConstantPad1d((3, 1), 3.5)(torch.arange(4.0).reshape(1, 1, 4)))


@example("nn")
def one_hot_channel_shuffle_threshold(m):
    torch, nn, F = m.torch, m.nn, m.F
    return (F.one_hot(torch.arange(0, 5) % 3, num_classes=5), F.one_hot(torch.arange(0, 6).view(3, 2) % 3),
            nn.ChannelShuffle(2)(torch.arange(1, 17, dtype=torch.float32).view(1, 4, 2, 2)),
            nn.Threshold(0, 0.5)(torch.arange(-3, 3)), nn.Threshold(0.1, 20)(torch.tensor([0.05, 0.5, -1.0])))


@example("nn")
def embeddings(m):
    torch, nn = m.torch, m.nn
    embedding = nn.Embedding.from_pretrained(torch.FloatTensor([[1, 2.3, 3], [4, 5.1, 6.3]]))
    bag = nn.EmbeddingBag.from_pretrained(torch.FloatTensor([[1, 2.3, 3], [4, 5.1, 6.3]]), mode="max")
    padded = nn.Embedding(3, 3, padding_idx=0)
    with torch.no_grad():
        padded.weight[0] = torch.ones(3)
    return (embedding(torch.LongTensor([1])), bag(torch.LongTensor([[0, 1]])), padded.weight[0],
            fill(m, nn.Embedding(10, 3))(torch.LongTensor([[1, 2, 4, 5], [4, 3, 2, 9]])))


@example("nn")
def linear_conv_layers(m):
    torch, nn = m.torch, m.nn
    x = torch.linspace(-1, 1, 2 * 4 * 6).reshape(2, 4, 6)
    return (fill(m, nn.Linear(6, 3))(x), fill(m, nn.Conv1d(4, 2, 3, stride=2))(x),
            fill(m, nn.ConvTranspose1d(4, 2, 3, stride=2, padding=1))(x),
            fill(m, nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)))(x.reshape(1, 2, 4, 6)),
            fill(m, nn.Bilinear(6, 6, 2))(x[0], x[1]))


@example("nn")
def recurrent_layers(m):
    torch, nn = m.torch, m.nn
    x = torch.linspace(-1, 1, 5 * 3 * 4).reshape(5, 3, 4)
    h0, c0 = torch.full((2, 3, 3), 0.1), torch.full((2, 3, 3), -0.2)
    output, (hn, cn) = fill(m, nn.LSTM(4, 3, 2))(x, (h0, c0))
    gru_output, gru_hn = fill(m, nn.GRU(4, 3, 2))(x, h0)
    rnn_output, rnn_hn = fill(m, nn.RNN(4, 3, 2))(x, h0)
    hx = fill(m, nn.GRUCell(4, 3))(x[0], h0[0])
    return output, hn, cn, gru_output, gru_hn, rnn_hn, hx


@example("nn")
def normalization_layers(m):
    torch, nn = m.torch, m.nn
    x = torch.linspace(-2, 3, 4 * 6 * 2).reshape(4, 6, 2)
    bn = fill(m, nn.BatchNorm1d(6))
    out = bn(x)
    return (out, bn.running_mean, bn.running_var, fill(m, nn.LayerNorm([6, 2]))(x), fill(m, nn.GroupNorm(3, 6))(x),
            nn.InstanceNorm1d(6)(x), fill(m, nn.RMSNorm([2]))(x), nn.LocalResponseNorm(2)(x))


@example("nn")
def attention(m):
    torch, nn, F = m.torch, m.nn, m.F
    q = torch.linspace(-1, 1, 2 * 3 * 4).reshape(2, 3, 4)
    k = torch.linspace(1, -0.5, 2 * 5 * 4).reshape(2, 5, 4)
    v = torch.linspace(0, 2, 2 * 5 * 4).reshape(2, 5, 4)
    attn = fill(m, nn.MultiheadAttention(4, 2, batch_first=True))
    attn_output, attn_output_weights = attn(q, k, v)
    return (attn_output, attn_output_weights, F.scaled_dot_product_attention(q, k, v),
            F.scaled_dot_product_attention(q, q, q, is_causal=True))


@example("nn")
def losses(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.tensor([[0.1, 0.2, 0.4, 0.8], [0.9, -0.3, 0.0, 0.5]])
    target = torch.tensor([3, 0])
    return (nn.MultiMarginLoss()(x[:1], torch.tensor([3])),
            nn.MultiLabelMarginLoss()(torch.FloatTensor([[0.1, 0.2, 0.4, 0.8]]), torch.LongTensor([[3, 0, -1, 1]])),
            F.cross_entropy(x, target, label_smoothing=0.1), F.nll_loss(F.log_softmax(x, 1), target, reduction="none"),
            F.kl_div(F.log_softmax(x, 1), F.softmax(x.flip(1), 1), reduction="batchmean"),
            F.poisson_nll_loss(x, x.abs() + 0.5), F.gaussian_nll_loss(x, x.flip(0), torch.full((2, 4), 0.5)),
            F.huber_loss(x, x.flip(1), delta=0.3), F.smooth_l1_loss(x, x.flip(1), beta=0.3),
            F.soft_margin_loss(x, torch.sign(x.flip(1))), F.multilabel_soft_margin_loss(x, (x > 0.3).float()),
            F.triplet_margin_loss(x, x.flip(0), x.flip(1)),
            F.cosine_embedding_loss(x, x.flip(1), torch.tensor([1, -1])))


@example("nn")
def loss_backward(m):
    """The losses' examples call backward: the gradients of their inputs."""
    torch, nn = m.torch, m.nn
    input = torch.tensor([[0.3, -1.2, 0.5], [1.1, 0.4, -0.6]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 0.5]))(input, target).backward()
    first = input.grad.clone()
    input.grad = None
    nn.CrossEntropyLoss()(input, torch.tensor([1, 0])).backward()
    return first, input.grad


@example("nn")
def fold_unfold(m):
    torch, nn = m.torch, m.nn
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    unfold = nn.Unfold(kernel_size=(2, 3))
    fold = nn.Fold(output_size=(4, 4), kernel_size=(2, 3))
    patches = unfold(x)
    return patches.shape, patches[0, :4, :3], fold(patches)[0, 0], nn.PixelShuffle(2)(x[:, :, :2, :2].repeat(1, 4, 1, 1)
                                                                                       )[0, 0]


# ----------------------------------------------------------------------------------------------
# tensor attributes, torch.testing, parametrizations (fixed: dim_order's ambiguity_check, assert_close's
# types and callable msg, assigning through a parametrization without right_inverse)
# ----------------------------------------------------------------------------------------------


@example("attributes")
def dim_order(m):
    torch = m.torch
    x = torch.empty((1, 2, 3, 4))
    return (torch.empty((2, 3, 5, 7)).dim_order(), torch.empty((2, 3, 5, 7)).transpose(1, 2).dim_order(),
            torch.empty((2, 3, 5, 7)).permute(0, 2, 3, 1).dim_order(), x.dim_order(),
            raised(x.dim_order, ambiguity_check=True),
            x.dim_order(ambiguity_check=[torch.contiguous_format, torch.channels_last]),
            raised(x.dim_order, ambiguity_check="ILLEGAL"),
            torch.empty((2, 3, 5, 7)).transpose(1, 2).dim_order(ambiguity_check=True))


@example("attributes")
def assert_close(m):
    torch = m.torch
    expected = torch.tensor([1.0, 2.0, 3.0])
    actual = expected.clone()
    torch.testing.assert_close(m.nn.Parameter(actual), expected)
    torch.testing.assert_close([torch.tensor([1.0]), 2.0, np.array(3.0)], (torch.tensor([1.0]), 2.0, np.array(3.0)))
    torch.testing.assert_close(1.0, 1, check_dtype=False)
    different = torch.tensor([1.0, 4.0, 5.0])
    return (raised(torch.testing.assert_close, m.nn.Parameter(actual), expected, allow_subclasses=False)[0],
            raised(torch.testing.assert_close, actual.numpy(), expected)[0],
            raised(torch.testing.assert_close, torch.tensor(float("nan")), torch.tensor(float("nan")))[0],
            raised(torch.testing.assert_close, different, expected, msg="Argh, the tensors are not close!"),
            raised(torch.testing.assert_close, different, expected, msg=lambda msg: f"Header\n\n{msg}\n\nFooter"),
            raised(torch.testing.assert_close, 1e-9, 1e-10, rtol=0, atol=0)[0])


@example("attributes")
def parametrization_assignment(m):
    torch, nn = m.torch, m.nn
    P = nn.utils.parametrize

    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).T  # Return a symmetric matrix

    class SymmetricWithInverse(Symmetric):
        def right_inverse(self, A):
            return A.triu()

    A = torch.arange(25.0).reshape(5, 5)
    A = A + A.T  # A is now symmetric
    plain = fill(m, nn.Linear(5, 5))
    P.register_parametrization(plain, "weight", Symmetric())
    refused = raised(setattr, plain, "weight", A)
    invertible = nn.Linear(5, 5)
    P.register_parametrization(invertible, "weight", SymmetricWithInverse())
    invertible.weight = A
    return plain.weight, refused, torch.allclose(invertible.weight, A), torch.allclose(plain.weight, plain.weight.T)


def test_the_areas_cover_about_sixty_to_a_hundred_examples():
    assert 30 <= sum(len(programs) for programs in AREAS.values()) and set(EXPECTED) == {
        name for programs in AREAS.values() for name in programs}


@pytest.fixture(autouse=True)
def _scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCEXAMPLES_DIR", str(tmp_path))


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


@pytest.mark.parametrize("name", list(AREAS["creation"]))
def test_creation(name):
    check("creation", name)


@pytest.mark.parametrize("name", list(AREAS["pointwise"]))
def test_pointwise(name):
    check("pointwise", name)


@pytest.mark.parametrize("name", list(AREAS["special"]))
def test_special(name):
    check("special", name, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(AREAS["reductions"]))
def test_reductions_sorting_searching(name):
    check("reductions", name)


@pytest.mark.parametrize("name", list(AREAS["shapes"]))
def test_shapes_and_indexing(name):
    check("shapes", name)


@pytest.mark.parametrize("name", list(AREAS["nn"]))
def test_nn(name):
    check("nn", name, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(AREAS["attributes"]))
def test_attributes_testing_parametrizations(name):
    check("attributes", name)


def test_hash_tensor_has_no_gradient_and_refuses_what_pytorch_refuses():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    assert not x.hash_tensor().requires_grad
    with pytest.raises(RuntimeError, match="Unknown hash_tensor mode: 1"):
        autograd.hash_tensor(x, mode=1)
    with pytest.raises(RuntimeError, match="Expected reduction dim to be specified"):
        autograd.hash_tensor(autograd.zeros(0))
    with pytest.raises(IndexError, match="Expected reduction dim 0 to have non-zero size"):
        autograd.hash_tensor(autograd.zeros(0, 3), 0)
    with pytest.raises(NotImplementedError, match="xor_sum_cpu"):
        autograd.hash_tensor(autograd.tensor([1 + 2j]))


def test_complex_pinv_has_a_gradient():
    """(It refused one before pinv's backward was written with ᴴ: tests/test_linalg_complex.py checks the values.)"""
    A = autograd.tensor(np.array(C3), requires_grad=True)
    assert autograd.autograd.gradcheck(autograd.linalg.pinv, (A,))


# what chainrule gives (and PyTorch 2.13 too, checked above where it is installed), 7 significant digits
EXPECTED = {'einsum_sublist_batched_matmul': [('float32',
                                    [[[-0.37, -0.44, 0.665, -0.24], [-0.7, -1.15, 0.8999999, 0.6]],
                                     [[-0.34, 0.09000002, 0.66, -0.02999999], [1.69, 0.73, -0.89, 0.37]],
                                     [[0.2, -0.5, -2.0, -1.7], [1.68, 1.44, 2.16, 2.92]]]),
                                   ('float32',
                                    [[[-0.37, -0.44, 0.665, -0.24], [-0.7, -1.15, 0.8999999, 0.6]],
                                     [[-0.34, 0.09000002, 0.66, -0.02999999], [1.69, 0.73, -0.89, 0.37]],
                                     [[0.2, -0.5, -2.0, -1.7], [1.68, 1.44, 2.16, 2.92]]])],
 'einsum_sublist_implicit_output': [('float32',
                                     [[-0.37, -0.7], [-0.44, -1.15], [0.665, 0.8999999], [-0.24, 0.6]]),
                                    ('float32', 6.0)],
 'einsum_sublist_out_of_range': True,
 'einsum_equations': [('float32', 15.0), ('float32', [1.0, 5.0, 9.0]),
                      ('float32', [[0.5, 3.0], [-0.5, -3.0], [1.0, 6.0]]), [2, 2, 3],
                      ('float32', [[27.0, 81.0], [1.0, 7.0]])],
 'broadcast_shapes_is_a_size': [[1, 3, 2], 'Size'],
 'broadcast_tensors_and_to': [('int64', [[0, 1, 2], [0, 1, 2]]), ('int64', [[0, 0, 0], [1, 1, 1]]),
                              ('int64', [[1, 2, 3], [1, 2, 3], [1, 2, 3]])],
 'allclose_of_shapes_that_do_not_broadcast': [True, True],
 'allclose_and_isclose': [False, True, True, ('bool', [True, False, False]), ('bool', [True, True])],
 'householder_product_of_complex_reflections': ('complex64',
                                                [[[(0.1-0.2j), (-0.55-0.5j)], [(-0.71+0.22j), (0.415-0.13j)]],
                                                 [[(-0.3+0.4j), (-0.125+0.75j)],
                                                  [(-0.525-0.55j), (0.59375+0.125j)]],
                                                 [[(0.4-0.5j), (0.26+0.42j)], [(0.46+0.18j), (0.76-0.2j)]]]),
 'householder_product_is_qr_q': [('float64', [[-0.8944272, -0.4472136], [-0.4472136, 0.8944272]]),
                                 ('bool', True)],
 'ormqr_complex_conjugate_transposed': [('complex64',
                                         [[[(-0.562+0.2410001j), (-1.79+0.22j), (0.633-0.01900002j)],
                                           [(-0.88885-0.1641999j), (0.523-0.5065j), (-0.20735+0.21555j)]],
                                          [[(0.2350001-0.8325j), (-0.15+1.675j), (0.03249997-0.6025j)],
                                           [(1.823125-0.6656249j), (1.60625-0.23125j), (-0.57875-0.04750001j)]],
                                          [[(-0.398+1.274j), (0.2900001-0.8700001j), (-0.04800001+0.3340001j)],
                                           [(-0.1384001-0.02560002j), (-0.1800001+0.001999987j),
                                            (0.05980003+0.009000003j)]]]),
                                        ('complex64',
                                         [[[(-0.4475+0.5140001j), (-0.1688499-1.5992j)],
                                           [(-0.3549999+0.9399999j), (1.0255-0.434j)],
                                           [(0.1595-0.2925j), (-0.45135+0.12905j)]],
                                          [[(0.5875-1.3075j), (-1.376875-0.440625j)],
                                           [(-0.375-1.525j), (1.21875-1.16875j)],
                                           [(0.04500002+0.49j), (-0.47875+0.46j)]],
                                          [[(-0.6146001+1.3142j), (0.7916+0.7244j)],
                                           [(-0.46+0.06j), (-0.312+0.356j)],
                                           [(0.2256+0.0328j), (0.1612-0.1548j)]]])],
 'pinv_of_a_complex_hermitian_matrix': [('complex64',
                                         [[(0.5471111+0j), (0.01648201-0.04898818j), (-0.09065105-0.06913288j)],
                                          [(0.016482+0.04898818j), (0.2559289-8.066576e-10j),
                                           (-0.01327717-0.001831337j)],
                                          [(-0.09065104+0.06913286j), (-0.01327717+0.001831332j),
                                           (0.3584837+8.12161e-09j)]]),
                                        ('bool', True),
                                        ('complex64',
                                         [[(0.5471111-8.513674e-18j), (0.01648201-0.04898818j),
                                           (-0.09065105-0.06913288j)],
                                          [(0.016482+0.04898818j), (0.2559289-8.066576e-10j),
                                           (-0.01327717-0.001831337j)],
                                          [(-0.09065104+0.06913286j), (-0.01327717+0.001831332j),
                                           (0.3584837+8.12161e-09j)]])],
 'matrix_rank_of_complex_matrices': [('int64', [3, 2]), ('int64', [3, 3]), ('int64', [3, 1]),
                                     ('int64', [2, 2])],
 'matrix_rank_hermitian_reads_the_lower_triangle': [('int64', 3), ('int64', 1), ('int64', 1), ('int64', 10)],
 'cholesky_solve': [('float32', [[0.2401769, -0.4625569], [0.2332499, -0.01106091], [1.570474, 0.5194026]]),
                    ('float32', [[0.2401768, -0.4625568], [0.2332499, -0.01106091], [1.570474, 0.5194026]]),
                    ('complex64',
                     [[(0.1519223+0.1601841j)], [(0.0311421+0.07708823j)], [(-0.008261807-0.2005277j)]]),
                    ('bool', True),
                    ['RuntimeError',
                     'Expected b and A to have the same dtype, but found b of type ComplexFloat and A of type '
                     'ComplexDouble instead.']],
 'solvers_refuse_operands_of_different_dtypes': [['RuntimeError',
                                                  'Expected b and A to have the same dtype, but found b of '
                                                  'type Float and A of type Double instead.'],
                                                 ['RuntimeError',
                                                  'linalg.solve: Expected A and B to have the same dtype, but '
                                                  'found A of type Double and B of type Float instead'],
                                                 ['RuntimeError',
                                                  'linalg.solve: Expected A and B to have the same dtype, but '
                                                  'found A of type Double and B of type Float instead'],
                                                 ['RuntimeError',
                                                  'Expected b and A to have the same dtype, but found b of '
                                                  'type Float and A of type Double instead.'],
                                                 ['RuntimeError',
                                                  'linalg.lu_solve: Expected LU and B to have the same dtype, '
                                                  'but found LU of type Double and B of type Float instead'],
                                                 ['RuntimeError',
                                                  'Expected b and A to have the same dtype, but found b of '
                                                  'type Float and A of type Double instead.'],
                                                 ('float64', [[0.5], [0.452267]])],
 'det_logdet_slogdet': [('float32', [6.22, -1.96]), ('float32', [1.82777, NAN]),
                        [('float32', [1.0, -1.0]), ('float32', [1.82777, 0.6729445])],
                        ('float32',
                         [[[-0.08038586, 0.477492, 0.2508039], [-0.01607717, -0.1045016, 0.4501608],
                           [0.7234727, -0.2974277, -0.2572347]],
                          [[-0.0, 0.0, 0.0], [0.0, -0.0, 0.0], [0.0, 0.0, 0.0]]])],
 'norms': [('float32', 7.745967), ('float32', 7.745967), ('float32', 7.745967), ('float32', 4.0),
           ('float32', 9.0), ('float32', 0.0), ('float32', 7.0), ('float32', 0.0), ('float32', 7.348469),
           ('float64', 3.757577e-16), ('float32', 5.848036), ('float32', [1.414214, 2.236068, 5.0]),
           ('float32', [6.0, 6.0]), ('float32', 5.434488), ('float32', [3.741657, 11.22497])],
 'multi_dot_and_vander': [('int64', 8), ('int64', [[8]]), ('int64', [[26, 49], [80, 148]]),
                          ('int64', [[1, 1, 1], [1, 2, 4], [1, 3, 9], [1, 5, 25]]),
                          ('int64', [[1, 1, 1], [1, 2, 4], [1, 3, 9], [1, 5, 25]])],
 'qr_of_the_documented_matrix': [('float32',
                                  [[-0.8571429, 0.3942857, 0.3314286], [-0.4285714, -0.9028571, -0.03428571],
                                   [0.2857143, -0.1714286, 0.9428571]]),
                                 ('float32', [[-14.0, -21.0, 14.0], [0.0, -175.0, 70.0], [0.0, 0.0, -35.0]]),
                                 ('float32', [[12.0, -51.0, 4.0], [6.0, 167.0, -68.0], [-4.0, 24.0, -41.0]]),
                                 ('float32', [[1.0, 0.0, 0.0], [0.0, 1.0, -0.0], [0.0, -0.0, 1.0]])],
 'cdist_trace_and_kron': [('float32', [[3.11927, 2.095893], [2.713841, 3.832172], [2.28301, 0.3791012]]),
                          ('float32', 15.0),
                          ('float32',
                           [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0],
                            [0.0, 0.0, 1.0, 1.0]]),
                          ('int64',
                           [[0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 7, 0, 0, 0], [0, 0, 0, 1, 2, 3]])],
 'from_file_reads_raw_bytes': [('float32', [0.0, 1.75, 0.0, -1.90625]),
                               [43.0, -0.25, 3.0, 4.5, 1.0, 2.0, 3.0, 5.0, 9.0, -15.0, 1.0, 1.0], True],
 'hash_tensor': [('uint64', 13822780172933267456), ('uint64', [9233691427001597952, 9255992285550608384]),
                 ('uint64', [[32423742130880512, 749166850473984, 9228975788596920320, 9238354459573092352]]),
                 ('uint64', 18446744073709551612), ('uint64', 0)],
 'tensor_split': [[('int64', [0, 1, 2]), ('int64', [3, 4, 5]), ('int64', [6, 7])],
                  [('int64', [0, 1, 2]), ('int64', [3, 4]), ('int64', [5, 6])],
                  [('int64', [0]), ('int64', [1, 2, 3, 4, 5]), ('int64', [6])],
                  [('int64', [[0, 1, 2], [7, 8, 9]]), ('int64', [[3, 4], [10, 11]]),
                   ('int64', [[5, 6], [12, 13]])],
                  [('int64', [[0], [7]]), ('int64', [[1, 2, 3, 4, 5], [8, 9, 10, 11, 12]]),
                   ('int64', [[6], [13]])]],
 'linspace_logspace_range': [('float32', [3.0, 4.75, 6.5, 8.25, 10.0]), ('float32', [-10.0]),
                             ('float32', [1e-10, 1e-05, 1.0, 100000.0, 10000000000.0]),
                             ('float32', [1.258925, 2.113489, 3.548134, 5.956622, 10.0]), ('float32', [4.0]),
                             ('float32', [1.0, 1.5, 2.0]),
                             ('float32', [[3.141592, 3.141592, 3.141592], [3.141592, 3.141592, 3.141592]])],
 'tril_triu_indices': [('int64', [[0, 1, 1, 2, 2, 2], [0, 0, 1, 0, 1, 2]]),
                       ('int64', [[1, 2, 2, 3, 3, 3], [0, 0, 1, 0, 1, 2]]),
                       ('int64', [[0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3], [0, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2]]),
                       ('int64', [[0, 0, 0, 1, 1, 1, 2, 2, 3], [0, 1, 2, 0, 1, 2, 1, 2, 2]])],
 'combinations_and_cartesian_prod': [('int64', [[1, 2], [1, 3], [2, 3]]), ('int64', [[1, 2, 3]]),
                                     ('int64', [[1, 1], [1, 2], [1, 3], [2, 2], [2, 3], [3, 3]]),
                                     ('int64', [[1, 4], [1, 5], [2, 4], [2, 5], [3, 4], [3, 5]])],
 'stacks': [('int64', [1, 2, 3, 4, 5, 6]), ('int64', [[1, 2, 3], [4, 5, 6]]),
            ('int64', [[[1, 4], [2, 5], [3, 6]]]), ('int64', [[1, 4], [2, 5], [3, 6]]), ('float32', [[1.0]]),
            [1, 3, 1]],
 'frexp_ldexp': [('float32', [0.0, 0.5, 0.5, 0.75, 0.5, 0.625, 0.75, 0.875, 0.5]),
                 ('int32', [0, 1, 2, 2, 3, 3, 3, 3, 4]),
                 ('float32', [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]), ('float32', [2.0, 4.0])],
 'fmod_remainder_floor_divide': [('float32', [-1.0, -0.0, -1.0, 1.0, 0.0, 1.0]),
                                 ('float32', [1.0, 0.5, 0.0, 1.0, 0.5]),
                                 ('float32', [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]),
                                 ('float32', [-0.5, -1.0, -0.0, -0.5, -1.0]), ('float32', [2.0, 1.0]),
                                 ('int64', [-4, 3])],
 'bitwise': [('int8', [0, 1, -4]), ('int8', [1, 0, 3]), ('int8', [-1, -2, 3]), ('int8', [-2, -2, 0]),
             ('int8', [-2, -2, 24]), ('int8', [-1, -2, 0]), ('bool', [True, False, False])],
 'gcd_lcm_hypot_logaddexp': [('int64', [1, 2, 5]), ('int64', [15, 20, 15]),
                             ('float32', [5.0, 5.656854, 6.403124]),
                             ('float32', [-0.3068528, -0.6867383, -0.873072]),
                             ('float32', [-1.0, -2.0, -3.0])],
 'heaviside_sign_signbit': [('float32', [0.0, 0.5, 1.0]), ('float32', [0.0, -2.0, 1.0]),
                            ('float32', [1.0, -1.0, 0.0, 1.0]), ('bool', [True, False, True]),
                            ('complex64', [(0.6+0.8j), -1j])],
 'nan_to_num_and_friends': [('float32', [0.0, 3.402823e+38, -3.402823e+38, 3.14]),
                            ('float32', [2.0, 3.402823e+38, -3.402823e+38, 3.14]),
                            ('float32', [2.0, 1.0, -3.402823e+38, 3.14]), ('bool', [False, True, True, False]),
                            ('bool', [False, True, False, False]), ('bool', [False, False, True, False]),
                            ('bool', [False, False, False, True]), ('bool', [True, False, False, False]),
                            ('float32', 1.0)],
 'complex_numbers': [('complex64', [(1+3j), (2+4j)]),
                     ('complex128', [(6.123234e-17+1j), (-1.414214-1.414214j)]),
                     ('float32', [135.0001, 135.0001, -45.00003]), ('complex64', (26+2j)),
                     ('bool', [True, False, True])],
 'rounding_and_degrees': [('float32', [5.0, -2.0, 9.0, -8.0]), ('float32', [-0.0, 0.0, 2.0, 2.0]),
                          ('float32', [0.123]), ('float32', [1000.0]), ('float32', [0.0, 0.5, -0.2]),
                          ('float32', [[180.0233, -180.0233], [359.9894, -359.9894]]),
                          ('float32', [[3.141593, -3.141593], [6.283185, -6.283185], [1.570796, -1.570796]])],
 'comparisons': [('bool', [[True, False], [False, True]]), ('bool', [[True, True], [False, True]]),
                 ('bool', [[False, True], [False, False]]), ('bool', [[True, False], [True, True]]),
                 ('bool', [[False, False], [True, False]]), ('bool', [[False, True], [True, False]]), True,
                 ('int64', [3, 2, 4]), ('float32', [9.7, 0.5, 3.1, NAN])],
 'isin_and_nextafter': [('bool', [[False, True], [True, False]]), ('bool', [True, True])],
 'type_promotion': ['float32', 'int64', 'float32', 'uint8', True, False],
 'polygamma_digamma_lgamma': [('float32', [1.644934, 4.934802]), ('float32', [-2.404114, -16.8288]),
                              ('float32', [-24.88627, -771.4742]), ('float32', [-0.5772157, -1.96351]),
                              ('float32', [0.5723649, -8.881784e-16, -0.1207822]),
                              ('float32', [0.5723649, -8.881784e-16, -0.1207822])],
 'error_functions': [('float32', [0.0, -0.8427008, 1.0]), ('float32', [1.0, 1.842701, 1.401298e-45]),
                     ('float32', [1.0, 5.00898, 0.05614099]), ('float32', [0.0, 0.4769363, -INF]),
                     ('float32', [0.001349896, 0.02275014, 0.1586553, 0.5, 0.8413447, 0.9772499, 0.9986501]),
                     ('float32', [-INF, -0.6744897, 0.0, 0.6744897, INF]),
                     ('float32',
                      [-6.607726, -3.783184, -1.841022, -0.6931472, -0.1727538, -0.02301291, -0.00135081])],
 'bessel_zeta_gammainc': [('float32', [0.9999999, 1.266066, 2.279585, 4.880793, 11.30192]),
                          ('float32', [1.0, 0.4657596, 0.3085083, 0.2430004, 0.2070019]),
                          ('float32', [0.0, 0.5651591, 1.590637, 3.95337, 9.759465]),
                          ('float32', [0.0, 0.2079104, 0.2152693, 0.1968267, 0.1787508]),
                          ('float32', [1.644934, 1.082323]), ('float32', [1.644934, 0.08232323]),
                          ('float32', [0.6472319, 0.4334701, 0.2650259]), ('float32', [1.0, 1.0, 1.0])],
 'xlogy_entr_softmax': [('float32', [0.0, 0.0, 0.0, 0.0, NAN]), ('float32', [1.098612, 1.386294, 0.0]),
                        ('float32', [1.386294, 2.197225, 2.079442]), ('float32', [-INF, 0.0, 0.3465736]),
                        ('float32', [[0.5, 0.5], [0.5, 0.5]]),
                        ('float32', [[-0.6931472, -0.6931472], [-0.6931472, -0.6931472]]),
                        ('float32', [0.0, 1.0]), ('float32', [1.0, 2.0, 8.0, 16.0])],
 'var_std_mean': [[('float32', [[1.592631, 1.005573, 1.200549, 0.3646166]]),
                   ('float32', [[0.06452501, 0.448475, 0.87075, -0.06654999]])],
                  [('float32', [[1.261995, 1.002783, 1.095695, 0.6038349]]),
                   ('float32', [[0.06452501, 0.448475, 0.87075, -0.06654999]])],
                  ('float32', [[1.063083], [0.559027], [1.489314], [0.8257592]]),
                  ('float32', [0.8929235, 0.6475108, 1.056875, 0.7869685])],
 'aminmax_kthvalue_mode': [[('int64', -3), ('int64', 5)], [('float32', NAN), ('float32', NAN)],
                           [('int64', [[0, 1, 2, 3, 4]]), ('int64', [[5, 6, 7, 8, 9]])],
                           [('float32', 4.0), ('int64', 3)],
                           [('float32', [[4.0, 5.0, 6.0]]), ('int64', [[1, 1, 1]])],
                           [('int64', [0, 2, 0, 0, 0, 0, 2]), ('int64', [1, 3, 4, 4, 2, 4, 4])]],
 'topk_argsort_take_along_dim': [[('float32', [5.0, 4.0, 3.0]), ('int64', [4, 3, 2])], ('int64', [60]),
                                 ('int64', [[10, 20, 30], [40, 50, 60]]), ('int64', [10, 20, 50])],
 'searchsorted_bucketize': [('int64', [[1, 3, 4], [1, 2, 4]]), ('int64', [[2, 3, 5], [1, 3, 4]]),
                            ('int64', [[1, 3, 4], [1, 3, 4]]), ('int64', [[1, 3, 4], [1, 3, 4]]),
                            ('int64', [[2, 3, 5], [2, 3, 5]])],
 'unique_and_unique_consecutive': [[('int64', [1, 2, 3]), ('int64', [0, 2, 1, 2])],
                                   [('int64', [1, 2, 3]), ('int64', [[0, 2], [1, 2]])],
                                   ('int64', [[1, 2, 1, 2], [1, 3, 2, 3]]), ('int64', [[1, 2, 3], [1, 1, 2]]),
                                   [('int64', [1, 2, 3, 1, 2]), ('int64', [0, 0, 1, 1, 2, 3, 3, 4])],
                                   [('int64', [1, 2, 3, 1, 2]), ('int64', [2, 2, 1, 2, 1])]],
 'cumulative_and_trapezoid': [('float32', [3.0, 10.5]), ('float32', [6.0, 21.0]), ('float32', [6.0, 28.5]),
                              ('float32', [[1.5, 2.5, 3.5], [6.0, 8.0, 10.0]]),
                              ('float32', [[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]), ('float32', 28.5)],
 'gradient_diff_histogram': [[('float32', [-3.0, -2.0, 2.0, 5.0])],
                             [('float32', [[9.0, 18.0, 36.0, 72.0], [9.0, 18.0, 36.0, 72.0]]),
                              ('float32', [[1.0, 1.5, 3.0, 4.0], [10.0, 15.0, 30.0, 40.0]])],
                             [('float32', [[4.5, 9.0, 18.0, 36.0], [4.5, 9.0, 18.0, 36.0]]),
                              ('float32', [[0.5, 0.75, 1.5, 2.0], [5.0, 7.5, 15.0, 20.0]])],
                             [('float32', [[3.0, 6.0, 12.0, 24.0], [3.0, 6.0, 12.0, 24.0]]),
                              ('float32', [[0.5, 0.75, 1.5, 2.0], [5.0, 7.5, 15.0, 20.0]])],
                             [('float32', [[4.5, 9.0, 18.0, 36.0], [4.5, 9.0, 18.0, 36.0]]),
                              ('float32', [[0.3333333, 0.5, 1.0, 1.333333], [3.333333, 5.0, 10.0, 13.33333]])],
                             ('int64', [2, -1]), ('int64', [2, -1, 2, 1]), ('int64', [[2, 2, 2]]),
                             [('float32', [0.0, 0.952381, 0.3809524, 0.0]),
                              ('float32', [0.0, 0.75, 1.5, 2.25, 3.0])],
                             ('float32', [0.0, 2.0, 1.0, 0.0])],
 'gather_roll_flip_rot90': [('int64', [[1, 1], [4, 3]]), ('int64', [[8, 1], [2, 3], [4, 5], [6, 7]]),
                            ('int64', [[3, 4], [5, 6], [7, 8], [1, 2]]),
                            ('int64', [[6, 5], [8, 7], [2, 1], [4, 3]]),
                            ('int64', [[[6, 7], [4, 5]], [[2, 3], [0, 1]]]), ('int64', [[1, 3], [0, 2]]),
                            ('int64', [[1, 0], [3, 2]])],
 'repeat_interleave_and_tile': [('int64', [1, 1, 2, 2, 3, 3]),
                                ('int64', [[1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4]]),
                                ('int64', [[1, 2], [3, 4], [3, 4]]), ('int64', [0, 1, 1, 2, 2, 2]),
                                ('int64', [1, 2, 3, 1, 2, 3]),
                                ('int64', [[1, 2, 1, 2], [3, 4, 3, 4], [1, 2, 1, 2], [3, 4, 3, 4]])],
 'unravel_index_nonzero_argwhere': [[('int64', 2), ('int64', 0)],
                                    [('int64', [1, 5]), ('int64', [2, 6]), ('int64', [3, 7]),
                                     ('int64', [4, 8])],
                                    ('int64', [[0, 0], [1, 1], [2, 2], [3, 3]]), [('int64', [0, 1, 2, 4])],
                                    ('int64', [[0, 0], [0, 2], [1, 1], [1, 2]])],
 'movedim_narrow_unflatten': [[3, 2, 4], [3, 4, 2], ('int64', [[2, 3], [5, 6], [8, 9]]), [3, 2, 2], [4, 3, 2],
                              ('float32', [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])],
 'pooling_a_non_tensor_is_a_type_error': True,
 'max_pool_and_unpool': [('float32', [[[0.0, 2.0, 0.0, 4.0, 0.0, 6.0, 0.0, 8.0, 0.0]]]),
                         ('float32', [[[0.0, 2.0, 0.0, 4.0, 0.0, 6.0, 0.0, 8.0]]]),
                         ('float32',
                          [[[[0.0, 0.0, 0.0, 0.0], [0.0, 6.0, 0.0, 8.0], [0.0, 0.0, 0.0, 0.0],
                             [0.0, 14.0, 0.0, 16.0]]]])],
 'avg_pool_and_upsampling': [('float32', [[[2.0, 4.0, 6.0]]]), ('float32', [[[2.0, 4.0, 6.0]]]),
                             ('float32',
                              [[[[1.0, 1.333333, 1.666667, 2.0], [1.666667, 2.0, 2.333333, 2.666667],
                                 [2.333333, 2.666667, 3.0, 3.333333], [3.0, 3.333333, 3.666667, 4.0]]]]),
                             ('float32',
                              [[[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [3.0, 3.0, 4.0, 4.0],
                                 [3.0, 3.0, 4.0, 4.0]]]]),
                             ('float32',
                              [[[[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5],
                                 [3.0, 3.25, 3.75, 4.0]]]])],
 'padding_layers': [('float32',
                     [[[[5.0, 3.0, 4.0, 5.0, 3.0], [8.0, 6.0, 7.0, 8.0, 6.0], [2.0, 0.0, 1.0, 2.0, 0.0],
                        [5.0, 3.0, 4.0, 5.0, 3.0], [8.0, 6.0, 7.0, 8.0, 6.0]]]]),
                    ('float32',
                     [[[[7.0, 6.0, 7.0, 8.0, 7.0], [4.0, 3.0, 4.0, 5.0, 4.0], [1.0, 0.0, 1.0, 2.0, 1.0],
                        [4.0, 3.0, 4.0, 5.0, 4.0], [7.0, 6.0, 7.0, 8.0, 7.0]]]]),
                    ('float32',
                     [[[[0.0, 0.0, 1.0, 2.0, 2.0], [0.0, 0.0, 1.0, 2.0, 2.0], [0.0, 0.0, 1.0, 2.0, 2.0],
                        [3.0, 3.0, 4.0, 5.0, 5.0], [6.0, 6.0, 7.0, 8.0, 8.0]]]]),
                    ('float32',
                     [[[3.0, 2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0], [7.0, 6.0, 5.0, 4.0, 5.0, 6.0, 7.0, 6.0]]]),
                    ('float32',
                     [[[[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0, 0.0],
                        [0.0, 3.0, 4.0, 5.0, 0.0], [0.0, 6.0, 7.0, 8.0, 0.0]]]]),
                    ('float32', [[[3.5, 3.5, 3.5, 0.0, 1.0, 2.0, 3.0, 3.5]]])],
 'one_hot_channel_shuffle_threshold': [('int64',
                                        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [1, 0, 0, 0, 0],
                                         [0, 1, 0, 0, 0]]),
                                       ('int64',
                                        [[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 0, 0]],
                                         [[0, 1, 0], [0, 0, 1]]]),
                                       ('float32',
                                        [[[[1.0, 2.0], [3.0, 4.0]], [[9.0, 10.0], [11.0, 12.0]],
                                          [[5.0, 6.0], [7.0, 8.0]], [[13.0, 14.0], [15.0, 16.0]]]]),
                                       ('int64', [0, 0, 0, 0, 1, 2]), ('float32', [20.0, 0.5, 20.0])],
 'embeddings': [('float32', [[4.0, 5.1, 6.3]]), ('float32', [[4.0, 5.1, 6.3]]), ('float32', [1.0, 1.0, 1.0]),
                ('float32',
                 [[[-0.3965517, -0.362069, -0.3275862], [-0.2931035, -0.2586207, -0.2241379],
                   [-0.0862069, -0.05172414, -0.01724138], [0.01724138, 0.05172414, 0.0862069]],
                  [[-0.0862069, -0.05172414, -0.01724138], [-0.1896552, -0.1551724, -0.1206897],
                   [-0.2931035, -0.2586207, -0.2241379], [0.4310345, 0.4655173, 0.5]]])],
 'linear_conv_layers': [('float32',
                         [[[1.53617, 0.06880474, -1.398561], [0.9954942, 0.06880476, -0.8578848],
                           [0.4548185, 0.06880476, -0.317209], [-0.08585733, 0.06880476, 0.2234668]],
                          [[-0.6265332, 0.06880476, 0.7641427], [-1.167209, 0.06880476, 1.304819],
                           [-1.707885, 0.06880477, 1.845495], [-2.248561, 0.06880476, 2.38617]]]),
                        ('float32',
                         [[[1.912673, 1.646253], [-0.8339964, -0.5675763]],
                          [[-1.284366, -1.550786], [2.363044, 2.629463]]]),
                        ('float32',
                         [[[0.09398705, 0.5694727, 0.08288619, 0.547271, 0.07178539, 0.5250694, 0.06068456,
                            0.5028677, 0.0495837, 0.480666, 0.03848293],
                           [0.6220629, 0.7978261, 0.6331637, 0.8200277, 0.6442646, 0.8422295, 0.6553654,
                            0.8644311, 0.6664662, 0.8866327, 0.6775671]],
                          [[-0.1724329, 0.03663278, -0.1835338, 0.01443109, -0.1946346, -0.007770598,
                            -0.2057354, -0.02997226, -0.2168363, -0.05217391, -0.2279371],
                           [0.8884829, 1.330666, 0.8995837, 1.352868, 0.9106846, 1.375069, 0.9217854, 1.397271,
                            0.9328862, 1.419473, 0.943987]]]),
                        ('float32',
                         [[[[0.7866262, 0.6796352, 0.5726444, 0.4656535],
                            [-0.01337388, -0.1884499, -0.3635258, -0.5386018]],
                           [[0.3362462, 0.3459727, 0.3556991, 0.3654256],
                            [0.6742401, 0.6742402, 0.6742401, 0.6742401]],
                           [[-0.1141338, 0.01231006, 0.1387538, 0.2651975],
                            [1.361854, 1.53693, 1.712006, 1.887082]]]]),
                        ('float32',
                         [[0.6331359, -0.5992034], [1.935516, -1.67664], [2.047988, -1.564167],
                          [0.970552, -0.2617872]])],
 'recurrent_layers': [('float32',
                       [[[0.04409028, 0.04545956, 0.04683345], [0.04489753, 0.04653416, 0.04817725],
                         [0.04609714, 0.04812626, 0.05016509]],
                        [[0.1293379, 0.1309033, 0.1324714], [0.1334062, 0.1362425, 0.1390889],
                         [0.1382411, 0.142586, 0.1469539]],
                        [[0.2003522, 0.2075015, 0.2146843], [0.2085806, 0.2182814, 0.2280342],
                         [0.2166528, 0.2288464, 0.2411084]],
                        [[0.2626334, 0.2787326, 0.2948543], [0.2715449, 0.2903242, 0.309107],
                         [0.2789589, 0.2999208, 0.3208603]],
                        [[0.3109802, 0.3351521, 0.3591574], [0.3171978, 0.3430879, 0.3687547],
                         [0.3216751, 0.3487349, 0.375526]]]),
                      ('float32',
                       [[[0.05509973, 0.13922, 0.2515683], [0.04881668, 0.1388986, 0.2671336],
                         [0.04189444, 0.1322691, 0.2711523]],
                        [[0.3109802, 0.3351521, 0.3591574], [0.3171978, 0.3430879, 0.3687547],
                         [0.3216751, 0.3487349, 0.375526]]]),
                      ('float32',
                       [[[0.06843689, 0.1638091, 0.2882362], [0.05863219, 0.1584422, 0.2987618],
                         [0.04895213, 0.1471831, 0.2973927]],
                        [[0.5232018, 0.563723, 0.6046425], [0.5336752, 0.5777012, 0.6222473],
                         [0.541889, 0.5885163, 0.6357797]]]),
                      ('float32',
                       [[[0.1269899, 0.1192646, 0.111328], [0.1393287, 0.1348952, 0.1303844],
                         [0.1537451, 0.1529346, 0.1521216]],
                        [[0.129687, 0.1135813, 0.09702719], [0.1667859, 0.1605497, 0.1542329],
                         [0.2065294, 0.2097989, 0.2129873]],
                        [[0.1766979, 0.1677312, 0.1584821], [0.2380165, 0.2428459, 0.2470385],
                         [0.2941414, 0.3095952, 0.3233508]],
                        [[0.275535, 0.2833624, 0.2890481], [0.3403124, 0.3592232, 0.3744726],
                         [0.395181, 0.4218503, 0.4430776]],
                        [[0.3858719, 0.4073495, 0.4225366], [0.4414527, 0.4703986, 0.4912987],
                         [0.4872809, 0.5214226, 0.5457968]]]),
                      ('float32',
                       [[[0.522135, 0.5370132, 0.4608961], [0.6113183, 0.628162, 0.5441807],
                         [0.6855245, 0.7016364, 0.6133692]],
                        [[0.3858719, 0.4073495, 0.4225366], [0.4414527, 0.4703986, 0.4912987],
                         [0.4872809, 0.5214226, 0.5457968]]]),
                      ('float32',
                       [[[-0.8894488, 0.308911, 0.9679018], [-0.92222, 0.3209156, 0.9788373],
                         [-0.9457582, 0.3288981, 0.9858814]],
                        [[0.4094878, 0.5874504, 0.7223455], [0.4125484, 0.5906438, 0.7252486],
                         [0.4146865, 0.5926256, 0.7269123]]]),
                      ('float32',
                       [[-0.1035908, -0.2332159, -0.3590829], [-0.07067943, -0.1785565, -0.2872882],
                        [-0.03260209, -0.1142224, -0.1990363]])],
 'normalization_layers': [('float32',
                           [[[0.2889743, 0.2517324], [0.1833846, 0.1610395], [0.07779486, 0.07034649],
                             [-0.02779485, -0.02034649], [-0.1333846, -0.1110395], [-0.2389743, -0.2017325]],
                            [[-0.157928, -0.1951698], [-0.08475678, -0.1071019], [-0.01158559, -0.01903395],
                             [0.06158559, 0.06903396], [0.1347567, 0.1571019], [0.2079279, 0.2451698]],
                            [[-0.6048302, -0.6420721], [-0.3528981, -0.3752432], [-0.100966, -0.1084144],
                             [0.150966, 0.1584144], [0.4028981, 0.4252432], [0.6548302, 0.6920721]],
                            [[-1.051732, -1.088974], [-0.6210395, -0.6433846], [-0.1903465, -0.1977949],
                             [0.2403465, 0.2477949], [0.6710395, 0.6933846], [1.101732, 1.138974]]]),
                          ('float32', [-0.003191489, 0.01808511, 0.03936171, 0.0606383, 0.0819149, 0.1031915]),
                          ('float32', [1.133137, 1.133137, 1.133137, 1.133137, 1.133137, 1.133137]),
                          ('float32',
                           [[[0.3965981, 0.2105327], [0.07713482, -0.003595367], [-0.03165794, -0.007052903],
                             [0.07021981, 0.2001601], [0.3827681, 0.6180437], [0.905987, 1.246598]],
                            [[0.396598, 0.2105325], [0.07713473, -0.003595427], [-0.031658, -0.007052906],
                             [0.07021981, 0.2001602], [0.3827682, 0.6180438], [0.905987, 1.246598]],
                            [[0.396598, 0.2105325], [0.07713473, -0.003595442], [-0.03165799, -0.007052903],
                             [0.07021981, 0.2001601], [0.3827681, 0.6180438], [0.905987, 1.246598]],
                            [[0.396598, 0.2105325], [0.07713473, -0.003595516], [-0.03165799, -0.007052917],
                             [0.07021981, 0.2001602], [0.3827681, 0.6180438], [0.905987, 1.246598]]]),
                          ('float32',
                           [[[0.2705837, -0.1764719], [-0.3641165, -0.6323499], [0.07411669, -0.0152945],
                             [0.1547056, 0.2441167], [-0.1223502, 0.1458832], [0.6735275, 1.120583]],
                            [[0.2705834, -0.1764722], [-0.3641167, -0.6323501], [0.07411669, -0.01529443],
                             [0.1547056, 0.2441167], [-0.1223502, 0.1458832], [0.6735277, 1.120583]],
                            [[0.2705833, -0.1764722], [-0.3641168, -0.6323501], [0.07411663, -0.01529448],
                             [0.1547056, 0.2441168], [-0.1223501, 0.1458835], [0.673528, 1.120584]],
                            [[0.2705835, -0.176472], [-0.3641165, -0.6323501], [0.07411671, -0.01529449],
                             [0.1547055, 0.2441167], [-0.1223502, 0.1458835], [0.6735275, 1.120584]]]),
                          ('float32',
                           [[[-0.9982364, 0.9982386], [-0.9982364, 0.9982386], [-0.9982375, 0.9982375],
                             [-0.9982386, 0.9982364], [-0.9982386, 0.9982364], [-0.9982375, 0.9982375]],
                            [[-0.9982375, 0.9982375], [-0.9982375, 0.9982375], [-0.9982375, 0.9982375],
                             [-0.9982374, 0.9982375], [-0.9982376, 0.9982373], [-0.9982377, 0.9982372]],
                            [[-0.9982375, 0.9982375], [-0.9982375, 0.9982375], [-0.9982386, 0.9982364],
                             [-0.9982386, 0.9982364], [-0.9982375, 0.9982375], [-0.9982364, 0.9982386]],
                            [[-0.9982364, 0.9982386], [-0.9982352, 0.9982397], [-0.9982397, 0.9982352],
                             [-0.9982352, 0.9982397], [-0.9982397, 0.9982352], [-0.9982352, 0.9982397]]]),
                          ('float32',
                           [[[0.5134696, -0.4861574], [0.5150951, -0.4844347], [0.5171665, -0.4822228],
                             [0.5198958, -0.479279], [0.5236552, -0.4751686], [0.5291612, -0.4690292]],
                            [[0.5379907, -0.4588745], [0.554404, -0.4389032], [0.5948025, -0.382373],
                             [0.6859838, 0.1714959], [-0.338599, 0.6207649], [-0.4285371, 0.562455]],
                            [[-0.4543954, 0.5417792], [-0.4665498, 0.5313484], [-0.473598, 0.5250761],
                             [-0.478196, 0.5208921], [-0.4814312, 0.5179034], [-0.4838311, 0.5156621]],
                            [[-0.485682, 0.5139193], [-0.4871528, 0.5125253], [-0.4883496, 0.511385],
                             [-0.4893426, 0.5104349], [-0.4901796, 0.5096312], [-0.4908947, 0.5089424]]]),
                          ('float32',
                           [[[-1.9997, -1.893362], [-1.786752, -1.680447], [-1.574133, -1.467811],
                             [-1.361481, -1.255143], [-1.148799, -1.042449], [-0.9360931, -0.8297319]],
                            [[-0.7233901, -0.6170124], [-0.5106233, -0.4042471], [-0.2978684, -0.1914879],
                             [-0.08510607, 0.02127657], [0.1276595, 0.2340421], [0.3404239, 0.4468043]],
                            [[0.5531852, 0.6595638], [0.7659319, 0.8723013], [0.9786667, 1.085027],
                             [1.191383, 1.297733], [1.404077, 1.510414], [1.616743, 1.723065]],
                            [[1.829558, 1.935898], [2.041977, 2.148262], [2.254536, 2.3608],
                             [2.467051, 2.573291], [2.679517, 2.78573], [2.89193, 2.998115]]])],
 'attention': [('float32',
                [[[-1.07404, -0.1404537, 0.7931329, 1.726719], [-1.069661, -0.1369594, 0.7957427, 1.728445],
                  [-1.065239, -0.1334483, 0.7983427, 1.730134]],
                 [[-2.264241, -0.2905502, 1.683141, 3.656832], [-2.259878, -0.2870612, 1.685756, 3.658572],
                  [-2.255615, -0.2836105, 1.688394, 3.660399]]]),
               ('float32',
                [[[0.1929218, 0.1955036, 0.1990154, 0.2035106, 0.2090486],
                  [0.1965133, 0.1980343, 0.1997748, 0.2017404, 0.2039372],
                  [0.2006713, 0.2003335, 0.1999979, 0.1996644, 0.199333]],
                 [[0.2053654, 0.2023583, 0.1996813, 0.1973229, 0.195272],
                  [0.2105584, 0.2040692, 0.1988301, 0.1947591, 0.1917832],
                  [0.2162068, 0.2054309, 0.1974571, 0.1920176, 0.1888877]]]),
               ('float32',
                [[[0.516758, 0.56804, 0.6193221, 0.6706041], [0.4753926, 0.5266747, 0.5779567, 0.6292388],
                  [0.4321828, 0.4834648, 0.5347469, 0.5860289]],
                 [[1.413971, 1.465253, 1.516535, 1.567817], [1.370761, 1.422043, 1.473325, 1.524607],
                  [1.329396, 1.380678, 1.43196, 1.483242]]]),
               ('float32',
                [[[-1.0, -0.9130435, -0.8260869, -0.7391304], [-0.8573058, -0.7703493, -0.6833927, -0.5964362],
                  [-0.6801597, -0.5932032, -0.5062467, -0.4192902]],
                 [[0.04347826, 0.1304348, 0.2173913, 0.3043478], [0.2486101, 0.3355666, 0.4225231, 0.5094797],
                  [0.5236464, 0.6106029, 0.6975595, 0.784516]]])],
 'losses': [('float32', 0.325), ('float32', 0.85), ('float32', 0.9851755), ('float32', [0.999056, 0.8662951]),
            ('float32', 0.1037271), ('float32', 1.096635), ('float32', -0.06157361), ('float32', 0.07624999),
            ('float32', 0.2541667), ('float32', 0.5410221), ('float32', 0.5611731), ('float32', 1.199373),
            ('float32', 0.7030691)],
 'loss_backward': [('float32', [[0.09574042, -0.256175, -0.03146172], [-0.04162331, 0.09978128, 0.05905729]]),
                   ('float32', [[0.204538, -0.4543614, 0.2498233], [-0.2022513, 0.1478576, 0.05439377]])],
 'fold_unfold': [[2, 18, 6], ('float32', [[0.0, 1.0, 4.0], [1.0, 2.0, 5.0], [2.0, 3.0, 6.0], [4.0, 5.0, 8.0]]),
                 ('float32',
                  [[0.0, 2.0, 4.0, 3.0], [8.0, 20.0, 24.0, 14.0], [16.0, 36.0, 40.0, 22.0],
                   [12.0, 26.0, 28.0, 15.0]]),
                 ('float32',
                  [[0.0, 16.0, 1.0, 17.0], [32.0, 0.0, 33.0, 1.0], [4.0, 20.0, 5.0, 21.0],
                   [36.0, 4.0, 37.0, 5.0]])],
 'dim_order': [[0, 1, 2, 3], [0, 2, 1, 3], [0, 3, 1, 2], [0, 1, 2, 3],
               ['RuntimeError',
                'The tensor does not have unique dim order, or cannot map to exact one of the given memory '
                'formats.'],
               [0, 1, 2, 3],
               ['TypeError', 'The ambiguity_check argument must be a bool or a list of memory formats.'],
               [0, 2, 1, 3]],
 'assert_close': ['TypeError', 'TypeError', 'AssertionError',
                  ['AssertionError', 'Argh, the tensors are not close!'], ['AssertionError', 'Header'],
                  'AssertionError'],
 'parametrization_assignment': [('float32',
                                 [[-0.5, -0.4583333, -0.4166667, -0.375, -0.3333333],
                                  [-0.4583333, -0.25, -0.2083333, -0.1666667, -0.125],
                                  [-0.4166667, -0.2083333, 0.0, 0.04166667, 0.08333334],
                                  [-0.375, -0.1666667, 0.04166667, 0.25, 0.2916667],
                                  [-0.3333333, -0.125, 0.08333334, 0.2916667, 0.5]]),
                                ['RuntimeError', 'parametrization Symmetric does not implement right_inverse.'],
                                True, True]}
