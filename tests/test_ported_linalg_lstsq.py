"""Least squares, pseudo-inverse, rank and Householder products ported from PyTorch's test/test_linalg.py
(TestLinalg): lstsq (drivers, batching and broadcasting, rcond, its residuals/rank/singular_values fields),
pinv (rtol/atol/hermitian=), matrix_rank (tol, hermitian=), householder_product/orgqr/ormqr, and their errors.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same


def _r(T, shape, seed=0, dtype="float64"):
    return T.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("driver", [None, "gelsy", "gelsd", "gelss", "gels"])
@pytest.mark.parametrize("a_shape,b_shape", [((5, 3), (5, 2)), ((2, 5, 3), (2, 5, 1)), ((2, 5, 3), (2, 5)),
                                             ((1, 5, 3), (3, 5, 2)), ((2, 4, 4), (2, 4, 3))])
def test_lstsq(T, driver, a_shape, b_shape):
    a, b = _r(T, a_shape), _r(T, b_shape, 1)
    res = T.linalg.lstsq(a, b, driver=driver)
    if len(b_shape) == len(a_shape) - 1:  # a batch of vectors
        expect = (np.linalg.pinv(a.numpy()) @ b.numpy()[..., None])[..., 0]
    else:
        expect = np.linalg.pinv(a.numpy()) @ b.numpy()  # (batches broadcast)
    close(res.solution, expect, rtol=1e-8, atol=1e-10)


def test_lstsq_fields(T):
    a, b = _r(T, (6, 3)), _r(T, (6, 2), 1)
    res = T.linalg.lstsq(a, b, driver="gelsd")
    _, eres, erank, esv = np.linalg.lstsq(a.numpy(), b.numpy(), rcond=None)
    close(res.residuals, eres, rtol=1e-8)
    same(res.rank, erank)
    close(res.singular_values, esv, rtol=1e-10)
    assert dtype_name(res.rank) == "int64"
    # gelsy fills rank, not singular values; gels neither
    r2 = T.linalg.lstsq(a, b, driver="gelsy")
    same(r2.rank, 3)
    assert r2.singular_values.numel() == 0
    r3 = T.linalg.lstsq(a, b, driver="gels")
    assert r3.rank.numel() == 0 and r3.singular_values.numel() == 0
    # square A: no residuals
    sq = T.linalg.lstsq(_r(T, (3, 3)), _r(T, (3, 1)), driver="gelsd")
    assert sq.residuals.numel() == 0


def test_lstsq_rank_deficient_and_rcond(T):
    a = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    b = np.array([[1.0], [2.0], [3.1]])
    res = T.linalg.lstsq(T.tensor(a), T.tensor(b), driver="gelsd")
    same(res.rank, 1)
    close(res.solution, np.linalg.pinv(a) @ b, rtol=1e-10)
    almost = np.diag([1.0, 1e-8])
    loose = T.linalg.lstsq(T.tensor(almost), T.tensor(np.ones((2, 1))), rcond=1e-6, driver="gelsd")
    same(loose.rank, 1)
    close(loose.solution, [[1.0], [0.0]])


def test_lstsq_errors_and_grad(T):
    raises(RuntimeError, "", T.linalg.lstsq, _r(T, 3), _r(T, 3))
    raises(RuntimeError, "", T.linalg.lstsq, _r(T, (4, 3)), _r(T, (5, 1)))
    raises(RuntimeError, "", T.linalg.lstsq, _r(T, (4, 3)), _r(T, (4, 1), dtype="float32"))
    raises(RuntimeError, "", T.linalg.lstsq, _r(T, (4, 3)), _r(T, (4, 1)), driver="bad")
    a, b = _r(T, (5, 3)).requires_grad_(), _r(T, (5, 2), 1).requires_grad_()
    assert T.autograd.gradcheck(lambda m, v: T.linalg.lstsq(m, v).solution, (a, b))


@pytest.mark.parametrize("shape", [(4, 3), (3, 4), (2, 3, 3), (0, 2, 3), (3, 0)])
def test_pinv(T, shape):
    a = _r(T, shape)
    close(T.linalg.pinv(a), np.linalg.pinv(a.numpy()), rtol=1e-9, atol=1e-12)
    close(T.pinverse(a), np.linalg.pinv(a.numpy()), rtol=1e-9, atol=1e-12)


def test_pinv_tolerances_hermitian_and_grad(T):
    a = np.diag([4.0, 1.0, 1e-3])
    close(T.linalg.pinv(T.tensor(a), atol=1e-2), np.diag([0.25, 1.0, 0.0]))
    close(T.linalg.pinv(T.tensor(a), rtol=0.3), np.diag([0.25, 0.0, 0.0]))
    close(T.linalg.pinv(T.tensor(a), atol=0.1, rtol=0.5), np.diag([0.25, 0.0, 0.0]))
    s = np.random.default_rng(1).standard_normal((3, 3))
    h = s + s.T
    close(T.linalg.pinv(T.tensor(h), hermitian=True), np.linalg.pinv(h), rtol=1e-9)
    close(T.linalg.pinv(T.tensor(np.diag([-4.0, 1e-3])), hermitian=True, atol=1e-2), np.diag([-0.25, 0.0]))
    batch = T.tensor(np.stack([np.diag([4.0, 0.5]), np.diag([0.05, 0.2])]))
    close(T.linalg.pinv(batch, atol=0.1), np.stack([np.diag([0.25, 2.0]), np.diag([0.0, 5.0])]))
    same(T.linalg.pinv(T.zeros(2, 2, dtype=T.float64), atol=0.1), np.zeros((2, 2)))
    z = np.array([[1 + 1j, 2], [0, 1j], [1, 1]])
    close(T.linalg.pinv(T.tensor(z)), np.linalg.pinv(z), rtol=1e-9)
    raises(RuntimeError, "", T.linalg.pinv, _r(T, 3))
    raises(RuntimeError, "", T.linalg.pinv, T.tensor([[1, 2], [3, 4]]))
    x = _r(T, (4, 3)).requires_grad_()
    assert T.autograd.gradcheck(T.linalg.pinv, (x,))


def test_matrix_rank(T):
    rng = np.random.default_rng(2)
    low = rng.standard_normal((2, 5, 2)) @ rng.standard_normal((2, 2, 4))
    same(T.linalg.matrix_rank(T.tensor(low)), [2, 2], dtype="int64")
    same(T.linalg.matrix_rank(T.eye(3)), 3)
    same(T.linalg.matrix_rank(T.zeros(3, 3)), 0)
    same(T.linalg.matrix_rank(T.zeros(2, 0, 3)), [0, 0])
    d = T.tensor(np.diag([1.0, 1e-3, 1e-9]))
    same(T.linalg.matrix_rank(d), 3)  # (the default rtol is eps · n)
    same(T.linalg.matrix_rank(d, atol=1e-2), 1)
    same(T.linalg.matrix_rank(d, rtol=1e-4), 2)
    same(T.linalg.matrix_rank(d, tol=0.5), 1)
    sym = low[0] @ low[0].T
    same(T.linalg.matrix_rank(T.tensor(sym), hermitian=True), 2)
    raises(RuntimeError, "", T.linalg.matrix_rank, _r(T, 3))
    raises(RuntimeError, "", T.linalg.matrix_rank, T.tensor([[1, 2], [3, 4]]))


def _householder_expect(v, tau):
    m, n = v.shape
    q = np.eye(m, dtype=v.dtype)
    for i in range(len(tau)):
        h = np.zeros(m, dtype=v.dtype)
        h[i] = 1
        h[i + 1:] = v[i + 1:, i]
        q = q @ (np.eye(m) - tau[i] * np.outer(h, h.conj()))
    return q[:, :n]


def test_householder_product(T):
    rng = np.random.default_rng(4)
    v, tau = rng.standard_normal((5, 3)), rng.standard_normal(2)
    close(T.linalg.householder_product(T.tensor(v), T.tensor(tau)), _householder_expect(v, tau), rtol=1e-10)
    close(T.orgqr(T.tensor(v), T.tensor(tau)), _householder_expect(v, tau), rtol=1e-10)
    vb, taub = rng.standard_normal((2, 4, 4)), rng.standard_normal((2, 3))
    close(T.linalg.householder_product(T.tensor(vb), T.tensor(taub)),
          np.stack([_householder_expect(x, t) for x, t in zip(vb, taub)]), rtol=1e-10)
    # from geqrf: Q of the QR factorisation
    a = rng.standard_normal((5, 3))
    qr_a, tau_a = T.geqrf(T.tensor(a))
    q = T.linalg.householder_product(qr_a, tau_a).numpy()
    close(q @ np.triu(qr_a.numpy()[:3]), a, rtol=1e-10, atol=1e-12)
    x, t = T.tensor(v).requires_grad_(), T.tensor(tau).requires_grad_()
    assert T.autograd.gradcheck(T.linalg.householder_product, (x, t))


def test_householder_product_errors(T):
    raises(RuntimeError, "", T.linalg.householder_product, _r(T, 3), _r(T, 1))
    raises(RuntimeError, "", T.linalg.householder_product, _r(T, (3, 4)), _r(T, 2))
    raises(RuntimeError, "", T.linalg.householder_product, _r(T, (4, 3)), _r(T, 4))
    raises(RuntimeError, "", T.linalg.householder_product, _r(T, (4, 3)), _r(T, 2, dtype="float32"))
    raises(RuntimeError, "", T.linalg.householder_product, _r(T, (2, 4, 3)), _r(T, (3, 2)))
