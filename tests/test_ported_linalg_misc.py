"""More of PyTorch's test/test_linalg.py (TestLinalg): result dtypes of float32/complex64 inputs, complex
solvers and factorisations, einsum, matrix_rank/pinv tolerances, tensorsolve/tensorinv, vander, householder
products of complex reflectors, and `_ex` info codes with check_errors.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values

REAL_OUT = {"complex64": "float32", "complex128": "float64", "float32": "float32", "float64": "float64"}


def _matrix(dtype, shape=(2, 3, 3), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if dtype.startswith("complex"):
        a = a + 1j * rng.standard_normal(shape)
    if shape[-1] == shape[-2]:
        a = a + 3 * np.eye(shape[-1])
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_result_dtypes(T, dtype):
    a = T.tensor(_matrix(dtype))
    h = a @ a.mH + T.eye(3, dtype=a.dtype)
    same_dtype = {
        "inv": T.linalg.inv(a), "det": T.linalg.det(a), "solve": T.linalg.solve(a, a),
        "cholesky": T.linalg.cholesky(h), "qr.Q": T.linalg.qr(a).Q,
        "eigh.vectors": T.linalg.eigh(h).eigenvectors,
        "matrix_power": T.linalg.matrix_power(a, 3), "pinv": T.linalg.pinv(a),
        "multi_dot": T.linalg.multi_dot([a[0], a[0], a[0]]),
        "slogdet.sign": T.linalg.slogdet(a).sign, "vecdot": T.linalg.vecdot(a, a), "cross": T.linalg.cross(a, a),
        "householder_product": T.linalg.householder_product(a, a[..., 0]),
        "cholesky_inverse": T.cholesky_inverse(T.linalg.cholesky(h)),
    }
    for name, t in same_dtype.items():
        assert dtype_name(t) == dtype, name
    real = {
        "svdvals": T.linalg.svdvals(a), "eigvalsh": T.linalg.eigvalsh(h), "slogdet.logabsdet":
        T.linalg.slogdet(a).logabsdet, "vector_norm": T.linalg.vector_norm(a), "matrix_norm":
        T.linalg.matrix_norm(a), "matrix_norm(2)": T.linalg.matrix_norm(a, 2), "nuc": T.linalg.matrix_norm(a, "nuc"),
        "cond": T.linalg.cond(a), "norm": T.linalg.norm(a),
    }
    for name, t in real.items():
        assert dtype_name(t) == REAL_OUT[dtype], name
    complex_out = "complex64" if dtype in ("float32", "complex64") else "complex128"
    assert dtype_name(T.linalg.eigvals(a)) == complex_out
    assert dtype_name(T.linalg.matrix_rank(a)) == "int64"


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_result_dtypes_of_svd_lu_lstsq_matrix_exp_solve_triangular(T, dtype):
    a = T.tensor(_matrix(dtype))
    for name, t in {"svd.U": T.linalg.svd(a).U, "lu.L": T.linalg.lu(a).L, "lstsq": T.linalg.lstsq(a, a).solution,
                    "matrix_exp": T.linalg.matrix_exp(a),
                    "solve_triangular": T.linalg.solve_triangular(a, a, upper=True)}.items():
        assert dtype_name(t) == dtype, name
    assert dtype_name(T.linalg.svd(a).S) == REAL_OUT[dtype]
    assert dtype_name(T.linalg.lu_factor(a).pivots) == "int32"
    tol = 1e-4 if dtype in ("float32", "complex64") else 1e-10
    close(T.linalg.matrix_exp(T.tensor(np.diag([1j, -1j]).astype(dtype) if dtype.startswith("complex") else
                                       np.diag([1.0, -1.0]).astype(dtype))),
          np.diag(np.exp([1j, -1j] if dtype.startswith("complex") else [1.0, -1.0])), rtol=tol)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_solvers_and_factorisations(T, dtype):
    a, b = _matrix(dtype), _matrix(dtype, (2, 3, 2), seed=1)
    tol = 1e-4 if dtype == "complex64" else 1e-10
    close(T.linalg.solve(T.tensor(a), T.tensor(b)), np.linalg.solve(a, b), rtol=tol, atol=tol)
    close(T.linalg.inv(T.tensor(a)), np.linalg.inv(a), rtol=tol, atol=tol)
    close(T.linalg.det(T.tensor(a)), np.linalg.det(a), rtol=tol)
    sign, logabs = T.linalg.slogdet(T.tensor(a))
    ns, nl = np.linalg.slogdet(a)
    close(sign, ns, rtol=tol, atol=tol)
    close(logabs, nl, rtol=tol)
    h = a @ np.conj(np.swapaxes(a, -1, -2))
    close(T.linalg.cholesky(T.tensor(h)), np.linalg.cholesky(h), rtol=tol, atol=tol)
    close(T.linalg.cholesky(T.tensor(h), upper=True), np.conj(np.swapaxes(np.linalg.cholesky(h), -1, -2)),
          rtol=tol, atol=tol)
    q, r = T.linalg.qr(T.tensor(a))
    close(q @ r, a, atol=tol)
    close(T.linalg.pinv(T.tensor(a)), np.linalg.pinv(a), rtol=tol, atol=tol)


def test_einsum(T):
    rng = np.random.default_rng(2)
    a, b, c = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal((2, 3, 4))
    for eq, ops in (("ij,jk->ik", (a, b)), ("ij->ji", (a,)), ("ii->i", (b[:, :3],)), ("ii", (b[:, :3],)),
                    ("bij,bjk->bik", (c[:, :, :3], c)), ("...j,jk", (a, b)), ("i,j->ij", (a[0], b[0])),
                    ("ij,ij->", (a, a)), ("bij->b", (c,)), ("ijk->kji", (c,)), ("i...->...", (c,)),
                    ("ij,jk,kl->il", (a, b, b.T))):
        close(T.einsum(eq, *[T.tensor(x) for x in ops]), np.einsum(eq, *ops), rtol=1e-10, atol=1e-12)
    close(T.einsum("ij,jk", [T.tensor(a), T.tensor(b)]), a @ b, rtol=1e-10)  # the operands as one list
    close(T.einsum(T.tensor(a), [0, 1], T.tensor(b), [1, 2], [0, 2]), a @ b, rtol=1e-10)  # sublist format
    raises(RuntimeError, None, T.einsum, "ij,jk->ik", T.tensor(a), T.tensor(a))
    raises(RuntimeError, None, T.einsum, "ij->ik", T.tensor(a))
    raises(RuntimeError, None, T.einsum, "ij,jk->ik", T.tensor(a))
    raises(RuntimeError, None, T.einsum, "i->i", T.tensor(a))
    same(T.einsum("ij,jk->ik", T.zeros(2, 0), T.zeros(0, 3)), np.zeros((2, 3)))


def test_einsum_gradcheck(T):
    rng = np.random.default_rng(3)
    a = T.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = T.tensor(rng.standard_normal((3, 3)), requires_grad=True)
    assert T.autograd.gradcheck(lambda x, y: T.einsum("ij,jk,kk->i", x, y, y), (a, b))
    assert T.autograd.gradcheck(lambda y: T.einsum("ii->", y), (b,))


def test_matrix_rank_tolerances(T):
    s = np.array([10.0, 1.0, 1e-3, 1e-15])
    rng = np.random.default_rng(4)
    u, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a = T.tensor(u @ np.diag(s) @ v.T)
    same(T.linalg.matrix_rank(a), 3)
    same(T.linalg.matrix_rank(a, atol=0.5), 2)
    same(T.linalg.matrix_rank(a, rtol=0.01), 2)
    same(T.linalg.matrix_rank(a, atol=0.5, rtol=0.5), 1)  # the larger of atol and rtol · σ_max
    same(T.linalg.matrix_rank(a, atol=T.tensor(0.5), rtol=T.tensor(1e-5)), 2)
    same(T.linalg.matrix_rank(a, atol=0.0, rtol=0.0), 4)
    same(T.linalg.matrix_rank(T.stack([a, 2 * a]), atol=T.tensor([5.0, 15.0])), [1, 1])
    close(T.linalg.pinv(a, atol=0.5), v @ np.diag([0.1, 1.0, 0, 0]) @ u.T, atol=1e-10)
    close(T.linalg.pinv(a, rtol=0.01), v @ np.diag([0.1, 1.0, 0, 0]) @ u.T, atol=1e-10)
    raises(RuntimeError, None, T.linalg.matrix_rank, T.tensor([[1, 0], [0, 1]]))


def test_tensorsolve_and_tensorinv(T):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 2, 3)) + np.eye(6).reshape(6, 2, 3) * 3
    b = rng.standard_normal(6)
    close(T.linalg.tensorsolve(T.tensor(a), T.tensor(b)), np.linalg.tensorsolve(a, b), rtol=1e-8)
    a2 = rng.standard_normal((2, 3, 6)) + np.eye(6).reshape(2, 3, 6) * 3
    close(T.linalg.tensorinv(T.tensor(a2), ind=2), np.linalg.tensorinv(a2, ind=2), rtol=1e-8)
    a3 = rng.standard_normal((3, 2, 6))
    b3 = rng.standard_normal((3, 2))
    close(T.linalg.tensorsolve(T.tensor(a3.transpose(2, 0, 1).copy()), T.tensor(b3.reshape(-1)[:6].reshape(6)),
                               dims=None), np.linalg.tensorsolve(a3.transpose(2, 0, 1), b3.reshape(6)), rtol=1e-8)
    raises(RuntimeError, None, T.linalg.tensorinv, T.tensor(a2), ind=0)
    raises(RuntimeError, None, T.linalg.tensorinv, T.zeros(2, 3, 5), ind=2)


def test_vander_and_diagonal(T):
    x = np.array([1.0, 2.0, 3.0])
    same(T.linalg.vander(T.tensor(x)), np.vander(x, increasing=True))
    same(T.linalg.vander(T.tensor(x), N=4), np.vander(x, 4, increasing=True))
    same(T.linalg.vander(T.tensor([1, 2])), [[1, 1], [1, 2]], "int64")
    raises(RuntimeError, None, T.linalg.vander, T.tensor(x), N=1)
    a = np.arange(24.0).reshape(2, 3, 4)
    same(T.linalg.diagonal(T.tensor(a)), np.diagonal(a, 0, -2, -1))
    same(T.linalg.diagonal(T.tensor(a), offset=1, dim1=0, dim2=2), np.diagonal(a, 1, 0, 2))


def test_householder_product_complex_and_gradcheck(T):
    rng = np.random.default_rng(6)
    v = rng.standard_normal((4, 2)) + 1j * rng.standard_normal((4, 2))
    tau = rng.standard_normal(2) + 1j * rng.standard_normal(2)
    expected = np.eye(4, dtype=complex)
    for i in range(2):
        w = np.concatenate([np.zeros(i), [1.0], v[i + 1:, i]])
        expected = expected @ (np.eye(4) - tau[i] * np.outer(w, w.conj()))
    close(T.linalg.householder_product(T.tensor(v), T.tensor(tau)), expected[:, :2], rtol=1e-10, atol=1e-12)
    vr = T.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    tr = T.tensor(rng.standard_normal((2, 2)), requires_grad=True)
    assert T.autograd.gradcheck(T.linalg.householder_product, (vr, tr))
    raises(RuntimeError, None, T.linalg.householder_product, T.tensor(v), T.tensor(tau).real)
    raises(RuntimeError, None, T.linalg.householder_product, T.zeros(4, 2), T.zeros(3))


def test_ex_variants_check_errors(T):
    a = np.stack([np.eye(2), np.zeros((2, 2))])
    raises(RuntimeError, r"\(Batch element 1\)", T.linalg.lu_factor_ex, T.tensor(a), check_errors=True)
    raises(RuntimeError, r"\(Batch element 1\)", T.linalg.solve_ex, T.tensor(a), T.ones(2, 2, 1, dtype=T.float64),
           check_errors=True)
    raises(RuntimeError, r"\(Batch element 1\)", T.linalg.cholesky_ex, T.tensor(a), check_errors=True)
    _, info = T.linalg.cholesky_ex(T.tensor(a[1]))
    same(info, 1, "int32")
    _, info = T.linalg.inv_ex(T.tensor(a[1]))
    same(info, 1, "int32")
    raises(RuntimeError, "singular", T.linalg.inv_ex, T.tensor(a[1]), check_errors=True)


def test_out_dtype_and_shape_checks(T):
    a = T.tensor(_matrix("float64"))
    out = T.empty(0, dtype=T.float64)
    T.linalg.solve(a, a, out=out)
    close(out, np.linalg.solve(values(a), values(a)), rtol=1e-10)
    raises(RuntimeError, None, T.linalg.solve, a, a, out=T.empty(0, dtype=T.int64))
    raises(RuntimeError, None, T.linalg.svdvals, a, out=T.empty(0, dtype=T.int32))
    out = T.empty(0, dtype=T.float64)
    T.linalg.matrix_norm(a, out=out)
    close(out, np.linalg.norm(values(a), axis=(-2, -1)), rtol=1e-12)
    w, v = T.empty(0, dtype=T.float64), T.empty(0, dtype=T.float64)
    T.linalg.eigh(a + a.mT, out=(w, v))
    close(w, np.linalg.eigvalsh(values(a + a.mT)), rtol=1e-10)
    sign, logabs = T.empty(0, dtype=T.float64), T.empty(0, dtype=T.float64)
    T.linalg.slogdet(a, out=(sign, logabs))
    close(logabs, np.linalg.slogdet(values(a))[1], rtol=1e-10)
    # the factorisations take no out= of another dtype (no downcast into float32)
    f32, f64, i64 = (T.empty(0, dtype=d) for d in (T.float32, T.float64, T.int64))
    h = a @ a.mT + T.eye(3, dtype=a.dtype)
    word = "(?i)double"  # (PyTorch: "Expected out tensor to have dtype double, but got float instead")
    raises(RuntimeError, word, T.linalg.cholesky, h, out=f32)
    raises(RuntimeError, word, T.linalg.matrix_power, a, 2, out=f32)
    raises(RuntimeError, word, T.linalg.eigvalsh, h, out=f32)
    raises(RuntimeError, word, T.linalg.eigh, h, out=(f32, f32))
    raises(RuntimeError, word, T.linalg.qr, a, out=(f32, f32))
    raises(RuntimeError, word, T.linalg.svd, a, out=(f32, f32, f32))
    raises(RuntimeError, word, T.linalg.lu, a, out=(f32, f32, f32))
    raises(RuntimeError, word, T.linalg.lu_solve, *T.linalg.lu_factor(a), a, out=f32)
    raises(RuntimeError, r"(?i)\bint\b.*\blong\b|\blong\b.*\bint\b", T.linalg.lu_factor, a, out=(f64, i64))
    raises(RuntimeError, None, T.linalg.solve_triangular, a, a, upper=True, out=f32)


def test_inverse_out_dtype_checks(T):
    a = T.tensor(_matrix("float64"))
    raises(RuntimeError, "Expected out tensor to have dtype double", T.linalg.det, a,
           out=T.empty(0, dtype=T.complex64))
    raises(RuntimeError, "Expected out tensor to have dtype double", T.linalg.inv, a, out=T.empty(0))


@pytest.mark.parametrize("name", ["solve", "inv", "det", "slogdet", "cholesky", "eigh", "qr", "svdvals", "pinv",
                                  "vector_norm", "matrix_norm"])
def test_complex_gradcheck(T, name):
    rng = np.random.default_rng(7)

    def leaf(*shape):
        return T.tensor(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), requires_grad=True)

    a, tall = leaf(3, 3), leaf(4, 3)
    fn, args = {
        "solve": (T.linalg.solve, (a, leaf(3, 2))), "inv": (T.linalg.inv, (a,)), "det": (T.linalg.det, (a,)),
        "slogdet": (lambda x: T.linalg.slogdet(x).logabsdet, (a,)),
        "cholesky": (lambda x: T.linalg.cholesky(x @ x.mH + T.eye(3, dtype=x.dtype)), (a,)),
        "eigh": (lambda x: T.linalg.eigvalsh(x + x.mH), (a,)), "qr": (T.linalg.qr, (tall,)),
        "svdvals": (T.linalg.svdvals, (tall,)), "pinv": (T.linalg.pinv, (tall,)),
        "vector_norm": (lambda x: T.linalg.vector_norm(x, 3), (tall,)), "matrix_norm": (T.linalg.matrix_norm, (tall,)),
    }[name]
    assert T.autograd.gradcheck(fn, args)
