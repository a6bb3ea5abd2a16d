"""Complex matrices in the linear-algebra decompositions and solvers: svd, lu / lu_factor / lu_solve,
lstsq, matrix_exp and solve_triangular on complex input (values against NumPy and closed forms, the
result dtypes PyTorch gives), and the complex gradients of cholesky, eigh / eigvalsh, qr, svd / svdvals,
pinv, lu and solve_triangular (PyTorch's convention: the conjugate Wirtinger derivative), checked by
gradcheck in complex128, by gradgradcheck, and against PyTorch's own gradient values. A loss that depends
on the arbitrary phases of complex singular vectors or eigenvectors has no gradient: both refuse it.

Each test that takes `T` runs on chainrule's `autograd` and on PyTorch (tests/conftest.py).
"""

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, values

try:
    import torch
except ImportError:
    torch = None

import autograd

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
REAL = {"complex64": "float32", "complex128": "float64"}
TOL = {"complex64": 1e-4, "complex128": 1e-10}


def _complex(shape, seed=0, dtype="complex128"):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _hermitian_positive(n, seed=0, dtype="complex128"):
    a = _complex((n, n), seed, dtype)
    return (a @ a.conj().T + n * np.eye(n)).astype(dtype)


def _h(a):
    return np.conj(np.swapaxes(a, -1, -2))


# ---- forward values and dtypes ----

@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 4), (2, 3, 3)])
def test_svd_of_complex_matrices(T, dtype, shape):
    a = _complex(shape, 1, dtype)
    tol = TOL[dtype]
    u, s, vh = T.linalg.svd(T.tensor(a), full_matrices=False)
    assert (dtype_name(u), dtype_name(s), dtype_name(vh)) == (dtype, REAL[dtype], dtype)
    close(s, np.linalg.svd(a, compute_uv=False), rtol=tol, atol=tol)
    u, s, vh = values(u), values(s), values(vh)
    close(u @ (s[..., None] * vh), a, atol=tol * 10)
    k = min(shape[-2:])
    close(_h(u) @ u, np.broadcast_to(np.eye(k), shape[:-2] + (k, k)), atol=tol * 10)
    close(vh @ _h(vh), np.broadcast_to(np.eye(k), shape[:-2] + (k, k)), atol=tol * 10)
    full = T.linalg.svd(T.tensor(a))  # full_matrices: square unitary U and Vh
    m, n = shape[-2:]
    assert tuple(full.U.shape[-2:]) == (m, m) and tuple(full.Vh.shape[-2:]) == (n, n)
    close(_h(values(full.U)) @ values(full.U), np.broadcast_to(np.eye(m), shape[:-2] + (m, m)), atol=tol * 10)
    close(T.linalg.svdvals(T.tensor(a)), np.linalg.svd(a, compute_uv=False), rtol=tol, atol=tol)


def test_torch_svd_returns_v_the_conjugate_transpose_of_vh(T):
    a = _complex((3, 2), 2)
    u, s, v = T.svd(T.tensor(a))
    close(values(u) @ np.diag(values(s)) @ _h(values(v)), a, atol=1e-12)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("shape", [(3, 3), (4, 3), (3, 4), (2, 3, 3)])
def test_lu_of_complex_matrices(T, dtype, shape):
    a = _complex(shape, 3, dtype)
    tol = TOL[dtype]
    P, L, U = T.linalg.lu(T.tensor(a))
    assert (dtype_name(P), dtype_name(L), dtype_name(U)) == (dtype, dtype, dtype)
    P, L, U = values(P), values(L), values(U)
    close(P @ L @ U, a, atol=tol * 10)
    k = min(shape[-2:])
    close(np.diagonal(L, 0, -2, -1), np.ones(shape[:-2] + (k,)))
    close(L, np.tril(L), atol=0)
    close(U, np.triu(U), atol=0)
    LU, pivots = T.linalg.lu_factor(T.tensor(a))
    assert dtype_name(LU) == dtype and dtype_name(pivots) == "int32"


def test_lu_pivots_on_the_largest_abs_real_plus_abs_imaginary(T):
    """LAPACK's complex getrf picks the pivot with the largest |Re| + |Im| (izamax), not the largest
    modulus: here 2 + 2i (|Re| + |Im| = 4, |z| = 2.83) beats 3."""
    a = np.array([[3.0, 1.0], [2 + 2j, 1j]])
    LU, pivots = T.linalg.lu_factor(T.tensor(a))
    assert values(pivots).tolist() == [2, 2]
    P, L, U = T.linalg.lu(T.tensor(a))
    close(values(P), [[0, 1], [1, 0]], atol=0)
    close(values(P) @ values(L) @ values(U), a, atol=1e-14)


@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("adjoint", [False, True])
def test_lu_solve_of_complex_systems(T, left, adjoint):
    a, b = _complex((2, 3, 3), 4) + 3 * np.eye(3), _complex((2, 3, 2) if left else (2, 2, 3), 5)
    coefficient = _h(a) if adjoint else a
    expected = np.linalg.solve(coefficient, b) if left else _h(np.linalg.solve(_h(coefficient), _h(b)))
    LU, pivots = T.linalg.lu_factor(T.tensor(a))
    close(T.linalg.lu_solve(LU, pivots, T.tensor(b), left=left, adjoint=adjoint), expected, atol=1e-12)


@pytest.mark.parametrize("driver", [None, "gelsd"])
def test_lstsq_of_complex_systems(T, driver):
    a, b = _complex((5, 3), 6), _complex((5, 2), 7)
    solution, residuals, rank, singular_values = T.linalg.lstsq(T.tensor(a), T.tensor(b), driver=driver)
    x, expected_residuals, expected_rank, expected_s = np.linalg.lstsq(a, b, rcond=None)
    assert dtype_name(solution) == "complex128"
    close(solution, x, atol=1e-12)
    if driver == "gelsd":
        assert dtype_name(residuals) == "float64" and dtype_name(singular_values) == "float64"
        close(residuals, expected_residuals, rtol=1e-10)
        close(singular_values, expected_s, rtol=1e-10)
        assert int(values(rank)) == expected_rank


def test_lstsq_refuses_operands_of_different_dtypes(T):
    a = T.tensor(_complex((4, 3), 45))
    raises(RuntimeError, r"torch\.linalg\.lstsq: Expected input and other to have the same dtype, but got input's "
                         r"dtype ComplexDouble and other's dtype Double", T.linalg.lstsq, a,
           T.ones(4, 2, dtype=T.float64))


def test_hermitian_pinv_and_eigh_of_the_upper_triangle(T):
    h = _hermitian_positive(3, 46) - 4 * np.eye(3)  # (indefinite, so pinv's hermitian path sees negative λ)
    close(T.linalg.pinv(T.tensor(h), hermitian=True), np.linalg.pinv(h), atol=1e-12)
    messy = np.triu(h) + np.tril(_complex((3, 3), 47), -1)  # only the upper triangle holds h
    w, v = T.linalg.eigh(T.tensor(messy), UPLO="U")
    assert dtype_name(w) == "float64" and dtype_name(v) == "complex128"
    close(w, np.linalg.eigvalsh(h), atol=1e-12)
    close(values(v) @ np.diag(values(w)) @ _h(values(v)), h, atol=1e-12)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_matrix_exp_of_complex_matrices_in_closed_form(T, dtype):
    theta = 0.7
    x = np.array([[0, 1], [1, 0]])
    # exp(iθX) = cos θ I + i sin θ X, X² = I
    close(T.linalg.matrix_exp(T.tensor((1j * theta * x).astype(dtype))),
          np.cos(theta) * np.eye(2) + 1j * np.sin(theta) * x, atol=TOL[dtype])
    # a Jordan block: exp([[λ, 1], [0, λ]]) = e^λ [[1, 1], [0, 1]]
    lam = 0.3 + 1.1j
    close(T.linalg.matrix_exp(T.tensor(np.array([[lam, 1], [0, lam]], dtype=dtype))),
          np.exp(lam) * np.array([[1, 1], [0, 1]]), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("upper", [True, False])
@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("unitriangular", [False, True])
def test_solve_triangular_of_complex_systems(T, upper, left, unitriangular):
    a = _complex((2, 3, 3), 8) + 3 * np.eye(3)
    b = _complex((2, 3, 4) if left else (2, 4, 3), 9)
    t = np.triu(a) if upper else np.tril(a)
    if unitriangular:  # (its diagonal is not read: ones)
        t = np.where(np.eye(3, dtype=bool), 1, t)
    expected = np.linalg.solve(t, b) if left else np.swapaxes(np.linalg.solve(np.swapaxes(t, -1, -2),
                                                                              np.swapaxes(b, -1, -2)), -1, -2)
    x = T.linalg.solve_triangular(T.tensor(a), T.tensor(b), upper=upper, left=left, unitriangular=unitriangular)
    assert dtype_name(x) == "complex128"
    close(x, expected, atol=1e-12)


def test_solve_triangular_promotes_a_real_right_side_to_complex(T):
    a, b = np.triu(_complex((3, 3), 10)) + 3 * np.eye(3), np.arange(6.0).reshape(3, 2)
    x = T.linalg.solve_triangular(T.tensor(a), T.tensor(b), upper=True)
    assert dtype_name(x) == "complex128"
    close(x, np.linalg.solve(a, b), atol=1e-12)


# ---- gradients ----

def _leaf(T, a):
    return T.tensor(a, requires_grad=True)


def _gauge_free_vectors(v):
    """|v|²: unchanged by each column's phase."""
    return (v * v.conj()).real


GRADIENT_CASES = {
    # name: (function of the leaves, input arrays); every function is free of the vectors' phases
    "cholesky": (lambda T, x: T.linalg.cholesky(x @ x.mH + T.eye(3, dtype=x.dtype)), [_complex((3, 3), 11)]),
    "cholesky_upper": (lambda T, x: T.linalg.cholesky(x @ x.mH + T.eye(3, dtype=x.dtype), upper=True),
                       [_complex((2, 3, 3), 12)]),
    "eigh": (lambda T, x: (lambda r: (r.eigenvalues, _gauge_free_vectors(r.eigenvectors),
                                      r.eigenvectors @ T.diag_embed(r.eigenvalues.to(x.dtype)) @ r.eigenvectors.mH))(
        T.linalg.eigh(x + x.mH)), [_complex((3, 3), 13)]),
    "eigvalsh": (lambda T, x: T.linalg.eigvalsh(x + x.mH), [_complex((2, 3, 3), 14)]),
    "qr_tall": (lambda T, x: T.linalg.qr(x), [_complex((4, 3), 15)]),
    "qr_wide": (lambda T, x: T.linalg.qr(x), [_complex((2, 4), 16)]),
    "svd": (lambda T, x: (lambda r: (r.S, _gauge_free_vectors(r.U), _gauge_free_vectors(r.Vh),
                                     r.U[..., :1] * r.S[..., None, :1] @ r.Vh[..., :1, :]))(
        T.linalg.svd(x, full_matrices=False)), [_complex((4, 3), 17)]),
    "svd_wide": (lambda T, x: (lambda r: (r.S, _gauge_free_vectors(r.Vh), r.U[..., :, :2] @ r.Vh[..., :2, :]))(
        T.linalg.svd(x, full_matrices=False)), [_complex((2, 3, 4), 18)]),
    "svdvals": (lambda T, x: T.linalg.svdvals(x), [_complex((4, 3), 19)]),
    "matrix_norm_2": (lambda T, x: T.linalg.matrix_norm(x, 2), [_complex((3, 4), 20)]),
    "pinv": (lambda T, x: T.linalg.pinv(x), [_complex((4, 3), 21)]),
    "pinv_wide": (lambda T, x: T.linalg.pinv(x), [_complex((2, 4), 22)]),
    "lu": (lambda T, x: T.linalg.lu(x)[1:], [_complex((3, 3), 23)]),
    "lu_tall": (lambda T, x: T.linalg.lu(x)[1:], [_complex((4, 3), 24)]),
    "lu_wide": (lambda T, x: T.linalg.lu(x)[1:], [_complex((3, 4), 25)]),
    "lu_factor_solve": (lambda T, x, b: T.linalg.lu_solve(*T.linalg.lu_factor(x), b, adjoint=True),
                        [_complex((3, 3), 26) + 3 * np.eye(3), _complex((3, 2), 27)]),
    "lstsq": (lambda T, a, b: T.linalg.lstsq(a, b).solution, [_complex((4, 3), 28), _complex((4, 2), 29)]),
    "matrix_exp": (lambda T, x: T.linalg.matrix_exp(x), [_complex((3, 3), 30) * 0.5]),
    "solve_triangular": (lambda T, a, b: T.linalg.solve_triangular(a, b, upper=True),
                         [_complex((3, 3), 31) + 3 * np.eye(3), _complex((3, 2), 32)]),
    "solve_triangular_right_unit": (lambda T, a, b: T.linalg.solve_triangular(a, b, upper=False, left=False,
                                                                              unitriangular=True),
                                    [_complex((3, 3), 33), _complex((2, 3), 34)]),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_complex_gradcheck(T, name):
    fn, arrays = GRADIENT_CASES[name]
    assert T.autograd.gradcheck(lambda *xs: fn(T, *xs), [_leaf(T, a) for a in arrays])


@pytest.mark.parametrize("name", ["cholesky", "cholesky_upper", "eigh", "eigvalsh", "qr_tall", "qr_wide", "svd",
                                  "svd_wide", "pinv", "lu", "lu_wide", "matrix_exp", "solve_triangular", "lstsq"])
def test_complex_gradgradcheck(T, name):
    fn, arrays = GRADIENT_CASES[name]
    assert T.autograd.gradgradcheck(lambda *xs: fn(T, *xs), [_leaf(T, a) for a in arrays])


def _weighted_sum(T, outputs, seed):
    """Σ Re(w ∘ y) over every output y, with fixed complex weights w: a real loss touching all of them."""
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    total = 0
    for i, y in enumerate(outputs):
        w = _complex(tuple(y.shape), seed + i)
        total = total + (y * T.tensor(w if dtype_name(y).startswith("complex") else w.real)).real.sum()
    return total


TORCH_VALUE_CASES = dict(GRADIENT_CASES, cholesky_raw=(
    # not Hermitian: only the lower triangle is read, and the diagonal's imaginary part term is PyTorch's
    lambda T, x: T.linalg.cholesky(x), [_hermitian_positive(3, 35) + np.triu(_complex((3, 3), 36), 1)
                                        + 0.3j * np.diag(_complex(3, 37).real)]))


@needs_torch
@pytest.mark.parametrize("name", sorted(TORCH_VALUE_CASES))
def test_complex_gradients_are_pytorchs(name):
    fn, arrays = TORCH_VALUE_CASES[name]
    grads = []
    for T in (autograd, torch):
        leaves = [_leaf(T, a) for a in arrays]
        _weighted_sum(T, fn(T, *leaves), 40).backward()
        grads.append([values(x.grad) for x in leaves])
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)


# ---- losses that depend on the vectors' phases ----

def test_a_loss_of_the_singular_vectors_phases_is_refused(T):
    u, s, vh = T.linalg.svd(_leaf(T, _complex((3, 3), 41)))
    raises(RuntimeError, r"svd_backward: The singular vectors in the complex case are specified up to multiplication "
                         r"by e\^\{i phi\}\. The specified loss function depends on this phase term, making it "
                         r"ill-defined\.", u.sum().abs().backward)


def test_a_loss_of_the_eigenvectors_phases_is_refused(T):
    x = _leaf(T, _complex((3, 3), 42))
    w, v = T.linalg.eigh(x + x.mH)
    raises(RuntimeError, r"linalg_eigh_backward: The eigenvectors in the complex case are specified up to "
                         r"multiplication by e\^\{i phi\}\. The specified loss function depends on this quantity, so "
                         r"it is ill-defined\.", v.sum().abs().backward)


def test_a_phase_free_loss_of_complex_vectors_has_the_gradient_of_its_closed_form(T):
    """U diag(S) Vh is A itself, whatever the phases: the gradient of Re Σ w ∘ (U diag(S) Vh) is conj(w)."""
    a = _complex((3, 2), 43)
    w = _complex((3, 2), 44)
    x = _leaf(T, a)
    u, s, vh = T.linalg.svd(x, full_matrices=False)
    ((u * s.unsqueeze(-2)) @ vh * T.tensor(w)).sum().real.backward()
    close(x.grad, np.conj(w), atol=1e-12)  # d Re(Σ w a)/d conj(a), PyTorch's convention: conj(w)
