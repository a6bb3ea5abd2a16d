"""Decompositions, norms and least squares ported from PyTorch's test/test_linalg.py (TestLinalg): qr, eigh,
eig, svd, lu, matrix_exp, solve_triangular, vector/matrix norms, cond, lstsq; their shapes, modes, empty
matrices, dtype errors and float64 gradients.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values


def _leaf(T, x):
    return T.tensor(x, requires_grad=True)


@pytest.mark.parametrize("mode", ["reduced", "complete", "r"])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (2, 4, 4), (0, 3), (3, 0)])
def test_qr_modes(T, mode, shape):
    a = np.random.default_rng(0).standard_normal(shape)
    q, r = T.linalg.qr(T.tensor(a), mode=mode)
    m, n = shape[-2:]
    k = m if mode == "complete" else min(m, n)
    assert tuple(r.shape) == shape[:-2] + (k, n)
    assert np.allclose(np.tril(values(r), -1), 0)
    if mode == "r":
        assert tuple(q.shape) == (0,)
        return
    assert tuple(q.shape) == shape[:-2] + (m, k)
    close(q @ r, a, atol=1e-10)
    close(q.mT @ q, np.broadcast_to(np.eye(k), shape[:-2] + (k, k)), atol=1e-10)


def test_qr_errors(T):
    raises(RuntimeError, None, T.linalg.qr, T.zeros(3))
    raises(RuntimeError, "mode", T.linalg.qr, T.zeros(3, 3), mode="bogus")


def test_qr_backward_refusals(T):
    a = _leaf(T, np.random.default_rng(1).standard_normal((5, 3)))
    q, r = T.linalg.qr(a, mode="complete")
    raises(RuntimeError, "not differentiable", lambda: (q.sum() + r.sum()).backward())
    q, r = T.linalg.qr(_leaf(T, np.random.default_rng(1).standard_normal((3, 3))), mode="r")
    raises(RuntimeError, None, lambda: r.sum().backward())


@pytest.mark.parametrize("uplo", ["L", "U"])
def test_eigh_reads_one_triangle(T, uplo):
    a = np.random.default_rng(2).standard_normal((2, 4, 4))
    sym = np.tril(a) + np.swapaxes(np.tril(a, -1), -1, -2) if uplo == "L" else \
        np.triu(a) + np.swapaxes(np.triu(a, 1), -1, -2)
    w, v = T.linalg.eigh(T.tensor(a), UPLO=uplo)
    close(w, np.linalg.eigvalsh(sym), rtol=1e-10, atol=1e-12)
    close(T.linalg.eigvalsh(T.tensor(a), UPLO=uplo), np.linalg.eigvalsh(sym), rtol=1e-10, atol=1e-12)
    close(v @ T.diag_embed(w) @ v.mT, sym, atol=1e-10)
    raises(RuntimeError, None, T.linalg.eigh, T.tensor(a), UPLO="X")


def test_eigh_complex_and_empty(T):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3))
    h = a + a.conj().T
    w, v = T.linalg.eigh(T.tensor(h))
    assert dtype_name(w) == "float64" and dtype_name(v) == "complex128"
    close(w, np.linalg.eigvalsh(h), rtol=1e-10)
    w, v = T.linalg.eigh(T.zeros(2, 0, 0))
    assert tuple(w.shape) == (2, 0) and tuple(v.shape) == (2, 0, 0)
    raises(RuntimeError, None, T.linalg.eigh, T.zeros(2, 3))


def test_eig_values_and_vectors(T):
    a = np.random.default_rng(4).standard_normal((2, 4, 4))
    w, v = T.linalg.eig(T.tensor(a))
    assert dtype_name(w) == "complex128" and dtype_name(v) == "complex128"
    close(T.tensor(a).to(T.complex128) @ v, v * w.unsqueeze(-2), atol=1e-10)
    close(T.linalg.eigvals(T.tensor(a)).abs().sort().values, np.sort(np.abs(np.linalg.eigvals(a))), rtol=1e-10)
    w32, _ = T.linalg.eig(T.tensor(a.astype(np.float32)))
    assert dtype_name(w32) == "complex64"
    raises(RuntimeError, None, T.linalg.eig, T.zeros(2, 3))


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (2, 4, 4), (0, 3), (2, 3, 0)])
def test_svd_shapes_and_reconstruction(T, full, shape):
    a = np.random.default_rng(5).standard_normal(shape)
    u, s, vh = T.linalg.svd(T.tensor(a), full_matrices=full)
    m, n = shape[-2:]
    k = min(m, n)
    assert tuple(u.shape) == shape[:-2] + ((m, m) if full else (m, k))
    assert tuple(s.shape) == shape[:-2] + (k,)
    assert tuple(vh.shape) == shape[:-2] + ((n, n) if full else (k, n))
    close(s, np.linalg.svd(a, compute_uv=False), rtol=1e-10, atol=1e-12)
    close(T.linalg.svdvals(T.tensor(a)), np.linalg.svd(a, compute_uv=False), rtol=1e-10, atol=1e-12)
    close(u[..., :, :k] @ T.diag_embed(s) @ vh[..., :k, :], a, atol=1e-10)


def test_lu_factor_solve_and_unpack(T):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 4, 4)), rng.standard_normal((2, 4, 3))
    p, lo, up = T.linalg.lu(T.tensor(a))
    close(p @ lo @ up, a, atol=1e-10)
    assert np.allclose(np.triu(values(lo), 1), 0) and np.allclose(np.diagonal(values(lo), 0, -2, -1), 1)
    lu, piv = T.linalg.lu_factor(T.tensor(a))
    assert dtype_name(piv) == "int32"
    close(T.linalg.lu_solve(lu, piv, T.tensor(b)), np.linalg.solve(a, b), rtol=1e-8)
    close(T.linalg.lu_solve(lu, piv, T.tensor(b), adjoint=True), np.linalg.solve(np.swapaxes(a, -1, -2), b),
          rtol=1e-8)
    close(T.linalg.lu_solve(lu, piv, T.tensor(b).mT, left=False), np.swapaxes(np.linalg.solve(
        np.swapaxes(a, -1, -2), b), -1, -2), rtol=1e-8)
    P, L, U = T.lu_unpack(lu, piv)
    close(P @ L @ U, a, atol=1e-10)
    # a rectangular lu: P (m, m), L (m, k), U (k, n)
    p, lo, up = T.linalg.lu(T.tensor(rng.standard_normal((5, 3))))
    assert (tuple(p.shape), tuple(lo.shape), tuple(up.shape)) == ((5, 5), (5, 3), (3, 3))


def test_lu_factor_ex_info(T):
    a = np.stack([np.eye(3), np.diag([1.0, 0.0, 2.0])])
    _, _, info = T.linalg.lu_factor_ex(T.tensor(a))
    same(info, [0, 2], "int32")
    raises(RuntimeError, None, T.linalg.lu_factor, T.tensor(a))
    raises(RuntimeError, None, T.linalg.lu_factor, T.zeros(3))


def test_matrix_exp(T):
    a = np.array([[0.0, 1.0], [-1.0, 0.0]])
    close(T.linalg.matrix_exp(T.tensor(a)), [[np.cos(1), np.sin(1)], [-np.sin(1), np.cos(1)]], rtol=1e-12)
    d = np.diag([1.0, 2.0, -3.0])
    close(T.linalg.matrix_exp(T.tensor(np.stack([d, 2 * d]))), np.stack([np.diag(np.exp(np.diag(d))),
                                                                        np.diag(np.exp(2 * np.diag(d)))]),
          rtol=1e-12)
    n = np.array([[0.0, 1.0, 2.0], [0, 0, 3.0], [0, 0, 0]])
    close(T.linalg.matrix_exp(T.tensor(n)), np.eye(3) + n + n @ n / 2, rtol=1e-12, atol=1e-14)
    same(T.linalg.matrix_exp(T.zeros(0, 0)), np.zeros((0, 0)))
    raises(RuntimeError, None, T.linalg.matrix_exp, T.zeros(2, 3))


def test_solve_triangular(T):
    rng = np.random.default_rng(7)
    a = np.triu(rng.standard_normal((2, 3, 3))) + 3 * np.eye(3)
    b = rng.standard_normal((2, 3, 4))
    close(T.linalg.solve_triangular(T.tensor(a), T.tensor(b), upper=True), np.linalg.solve(a, b), rtol=1e-10)
    unit = np.triu(a, 1) + np.eye(3)
    close(T.linalg.solve_triangular(T.tensor(a), T.tensor(b), upper=True, unitriangular=True),
          np.linalg.solve(unit, b), rtol=1e-10)
    bt = np.swapaxes(b, -1, -2)
    close(T.linalg.solve_triangular(T.tensor(a), T.tensor(bt), upper=True, left=False),
          bt @ np.linalg.inv(a), rtol=1e-10)
    lower = np.swapaxes(a, -1, -2)
    close(T.linalg.solve_triangular(T.tensor(lower + np.triu(np.ones((3, 3)), 1)), T.tensor(b), upper=False),
          np.linalg.solve(lower, b), rtol=1e-10)
    # (PyTorch promotes a float32 right-hand side here, unlike linalg.solve)
    mixed = T.linalg.solve_triangular(T.tensor(a), T.tensor(b).float(), upper=True)
    assert dtype_name(mixed) == "float64"
    close(mixed, np.linalg.solve(a, b.astype(np.float32)), rtol=1e-6)
    raises(TypeError, None, T.linalg.solve_triangular, T.tensor(a), T.tensor(b))


@pytest.mark.parametrize("ord", [None, 0, 1, 2, 3.5, float("inf"), -float("inf"), -1, -2])
def test_vector_norm(T, ord):
    x = np.random.default_rng(8).standard_normal((3, 4))
    kw = {} if ord is None else {"ord": ord}
    expected = np.linalg.norm(x.reshape(-1), ord=ord) if ord not in (None, 3.5, -1, -2) or True else None
    if ord is None:
        expected = np.sqrt((x ** 2).sum())
    elif ord == 0:
        expected = np.count_nonzero(x)
    elif np.isinf(ord):
        expected = np.abs(x).max() if ord > 0 else np.abs(x).min()
    else:
        expected = (np.abs(x) ** ord).sum() ** (1 / ord)
    close(T.linalg.vector_norm(T.tensor(x), **kw), expected, rtol=1e-10)
    along = T.linalg.vector_norm(T.tensor(x), dim=1, keepdim=True, **kw)
    assert tuple(along.shape) == (3, 1)


def test_vector_norm_dtype_and_empty(T):
    x = T.tensor([3.0, 4.0])
    out = T.linalg.vector_norm(x, dtype=T.float64)
    same(out, 5.0, "float64")
    same(T.linalg.vector_norm(T.tensor([3 + 4j, 0j])), 5.0, "float32")
    same(T.linalg.vector_norm(T.zeros(0)), 0.0)
    same(T.linalg.vector_norm(T.zeros(0), ord=0), 0.0)
    raises(RuntimeError, None, T.linalg.vector_norm, T.zeros(0), ord=float("inf"))
    raises(RuntimeError, None, T.linalg.vector_norm, T.zeros(0), ord=-1)
    raises(RuntimeError, None, T.linalg.vector_norm, T.tensor([1, 2]))
    raises(RuntimeError, None, T.linalg.vector_norm, x, dtype=T.int64)


@pytest.mark.parametrize("ord", ["fro", "nuc", 1, -1, 2, -2, float("inf"), -float("inf")])
def test_matrix_norm(T, ord):
    a = np.random.default_rng(9).standard_normal((2, 3, 4))
    close(T.linalg.matrix_norm(T.tensor(a), ord=ord), np.linalg.norm(a, ord=ord, axis=(-2, -1)), rtol=1e-10)
    close(T.linalg.matrix_norm(T.tensor(a), ord=ord, dim=(0, 2)), np.linalg.norm(a, ord=ord, axis=(0, 2)),
          rtol=1e-10)
    assert tuple(T.linalg.matrix_norm(T.tensor(a), ord=ord, keepdim=True).shape) == (2, 1, 1)


def test_matrix_and_linalg_norm_errors(T):
    raises(RuntimeError, None, T.linalg.matrix_norm, T.zeros(3))
    raises(RuntimeError, None, T.linalg.matrix_norm, T.zeros(3, 3), ord=3)
    raises(RuntimeError, None, T.linalg.matrix_norm, T.zeros(3, 3), dim=(0, 0))
    raises(RuntimeError, None, T.linalg.norm, T.zeros(2, 2, 2), ord="fro")
    x = np.arange(6.0).reshape(2, 3)
    close(T.linalg.norm(T.tensor(x)), np.linalg.norm(x), rtol=1e-12)
    close(T.linalg.norm(T.tensor(x), ord=1), np.linalg.norm(x, 1), rtol=1e-12)
    close(T.linalg.norm(T.tensor(x), ord=3, dim=1), (x ** 3).sum(1) ** (1 / 3), rtol=1e-12)


def test_cond(T):
    a = np.random.default_rng(10).standard_normal((2, 3, 3))
    for p in (None, "fro", "nuc", 1, -1, 2, -2, float("inf"), -float("inf")):
        close(T.linalg.cond(T.tensor(a), p), np.linalg.cond(a, p), rtol=1e-8)
    close(T.linalg.cond(T.tensor(np.random.default_rng(11).standard_normal((3, 5)))),
          np.linalg.cond(np.random.default_rng(11).standard_normal((3, 5))), rtol=1e-8)
    raises(RuntimeError, None, T.linalg.cond, T.zeros(3, 5), "fro")


@pytest.mark.parametrize("driver", [None, "gelsy", "gelsd", "gelss"])
def test_lstsq(T, driver):
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2))
    res = T.linalg.lstsq(T.tensor(a), T.tensor(b), driver=driver)
    expected = np.stack([np.linalg.lstsq(a[i], b[i], rcond=None)[0] for i in range(2)])
    close(res.solution, expected, rtol=1e-8)
    if driver in ("gelsd", "gelss"):
        close(res.singular_values, np.linalg.svd(a, compute_uv=False), rtol=1e-10)
        same(res.rank, [3, 3])


@pytest.mark.parametrize("driver", ["gels", "gelsy", "gelsd", "gelss"])
def test_lstsq_outputs_per_driver(T, driver):
    rng = np.random.default_rng(16)
    a, b = rng.standard_normal((4, 2)), rng.standard_normal((4, 1))
    res = T.linalg.lstsq(T.tensor(a), T.tensor(b), driver=driver)
    x = np.linalg.lstsq(a, b, rcond=None)[0]
    close(res.solution, x, rtol=1e-10)
    if driver == "gelsy":  # (gelsy gives no residuals)
        assert tuple(res.residuals.shape) == (0,)
    else:
        close(res.residuals, ((a @ x - b) ** 2).sum(0), rtol=1e-10)
    if driver == "gels":  # (gels assumes full rank: no rank)
        assert tuple(res.rank.shape) == (0,)
    else:
        same(res.rank, 2)
    assert tuple(res.singular_values.shape) == ((2,) if driver in ("gelsd", "gelss") else (0,))
    rank_deficient = T.linalg.lstsq(T.ones(4, 2, dtype=T.float64), T.tensor(b), driver="gelsd")
    close(rank_deficient.solution, np.linalg.pinv(np.ones((4, 2))) @ b, rtol=1e-10)
    assert tuple(rank_deficient.residuals.shape) == (0,)  # (none for a rank-deficient A)


def test_lstsq_broadcast_and_errors(T):
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal((1, 5, 3)), rng.standard_normal((4, 5, 2))
    res = T.linalg.lstsq(T.tensor(a), T.tensor(b))
    close(res.solution, np.linalg.pinv(a) @ b, rtol=1e-8)
    raises(RuntimeError, None, T.linalg.lstsq, T.tensor(a), T.tensor(b).float())
    raises(RuntimeError, None, T.linalg.lstsq, T.zeros(5, 3), T.zeros(4, 2))
    raises(RuntimeError, r"input.dim\(\) must be greater or equal to other.dim\(\)", T.linalg.lstsq, T.zeros(5, 3),
           T.zeros(4, 5, 2))
    raises(RuntimeError, None, T.linalg.lstsq, T.zeros(3), T.zeros(3))
    raises(RuntimeError, None, T.linalg.lstsq, T.zeros(5, 3), T.zeros(5, 2), driver="bogus")


def test_gradcheck_float64(T):
    rng = np.random.default_rng(14)
    gc = T.autograd.gradcheck
    a = _leaf(T, rng.standard_normal((4, 3)))
    sq = _leaf(T, rng.standard_normal((3, 3)))
    assert gc(lambda x: T.linalg.qr(x), (a,))
    assert gc(lambda x: T.linalg.eigh(x + x.mT), (sq,))
    assert gc(lambda x: T.linalg.eigvalsh(x + x.mT), (sq,))
    assert gc(lambda x: T.linalg.svdvals(x), (a,))
    # singular vectors only up to sign: a function of them invariant to it
    assert gc(lambda x: (lambda u, s, vh: (u @ vh, s))(*T.linalg.svd(x, full_matrices=False)), (a,))
    assert gc(lambda x: T.linalg.lu_factor(x).LU, (sq,))
    assert gc(lambda x: T.linalg.matrix_exp(x), (sq,))
    assert gc(lambda x, b: T.linalg.solve_triangular(x.triu() + 3 * T.eye(3, dtype=x.dtype), b, upper=True),
              (sq, _leaf(T, rng.standard_normal((3, 2)))))
    assert gc(lambda x: T.linalg.vector_norm(x, ord=3.0), (a,))
    assert gc(lambda x: T.linalg.matrix_norm(x, ord="nuc"), (a,))
    assert gc(lambda x: T.linalg.matrix_norm(x, ord=2), (a,))
    assert gc(lambda x, b: T.linalg.lstsq(x, b).solution, (a, _leaf(T, rng.standard_normal((4, 2)))))


def test_eig_gradcheck_float64(T):
    rng = np.random.default_rng(15)
    sq = _leaf(T, rng.standard_normal((3, 3)))
    assert T.autograd.gradcheck(lambda x: T.linalg.eigvals(x), (sq,))
