"""Products and solvers ported from PyTorch's test/test_linalg.py (TestLinalg): matmul/mm/bmm/addmm/addmv/addr,
dot/vdot/inner/outer/kron/tensordot/multi_dot/matrix_power, solve/inv/det, cholesky_ex/inv_ex info codes,
matrix_rank/pinv, cross/vecdot, their shape and dtype errors, empty matrices and float64 gradients.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np

from tests.ported import close, dtype_name, raises, same, values


def _rand(T, rng, *shape, dtype="float64"):
    return T.tensor(rng.standard_normal(shape).astype(dtype))


def _spd(T, rng, n, batch=()):
    a = rng.standard_normal(batch + (n, n))
    return T.tensor(a @ np.swapaxes(a, -1, -2) + n * np.eye(n))


def test_matmul_shapes_match_numpy(T):
    rng = np.random.default_rng(0)
    for a, b in (((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)), ((5, 2, 3), (3,)),
                 ((3,), (5, 3, 4)), ((5, 2, 3), (3, 4)), ((1, 2, 3), (5, 3, 4)), ((2, 1, 2, 3), (5, 3, 4))):
        x, y = rng.standard_normal(a), rng.standard_normal(b)
        close(T.matmul(T.tensor(x), T.tensor(y)), np.matmul(x, y), rtol=1e-10)
    raises(RuntimeError, None, T.matmul, T.zeros(2, 3), T.zeros(2, 3))
    raises(RuntimeError, None, T.matmul, T.zeros(()), T.zeros(3))


def test_matmul_empty_and_dtype_mismatch(T):
    same(T.matmul(T.zeros(3, 0), T.zeros(0, 4)), np.zeros((3, 4)))
    same(T.mm(T.zeros(0, 2), T.zeros(2, 5)), np.zeros((0, 5)))
    same(T.bmm(T.zeros(2, 3, 0), T.zeros(2, 0, 4)), np.zeros((2, 3, 4)))
    raises(RuntimeError, None, T.mm, T.zeros(2, 2), T.zeros(2, 2, dtype=T.float64))
    raises(RuntimeError, None, T.mm, T.zeros(2, 2, 2), T.zeros(2, 2))
    raises(RuntimeError, None, T.bmm, T.zeros(2, 2), T.zeros(2, 2))
    raises(RuntimeError, None, T.bmm, T.zeros(2, 2, 3), T.zeros(3, 3, 2))


def test_integer_matmul_is_exact(T):
    a = T.tensor([[2**40, 1], [3, 4]])
    same(T.matmul(a, a), np.array([[2**40, 1], [3, 4]], dtype=np.int64) @ np.array([[2**40, 1], [3, 4]]), "int64")


def test_addmm_addmv_addr_beta_alpha(T):
    rng = np.random.default_rng(1)
    m, a, b = rng.standard_normal((2, 4)), rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    v, w = rng.standard_normal(3), rng.standard_normal(2)
    close(T.addmm(T.tensor(m), T.tensor(a), T.tensor(b), beta=0.5, alpha=2), 0.5 * m + 2 * a @ b, rtol=1e-10)
    close(T.addmv(T.tensor(w), T.tensor(a), T.tensor(v), beta=3, alpha=-1), 3 * w - a @ v, rtol=1e-10)
    close(T.addr(T.tensor(a), T.tensor(w), T.tensor(v), beta=2, alpha=0.5), 2 * a + 0.5 * np.outer(w, v),
          rtol=1e-10)
    # beta=0 ignores NaN and inf in the input (PyTorch's test_addmm_... "nan propagation")
    nan = np.full((2, 4), np.nan)
    close(T.addmm(T.tensor(nan), T.tensor(a), T.tensor(b), beta=0), a @ b, rtol=1e-10)
    close(T.addmv(T.tensor(np.full(2, np.inf)), T.tensor(a), T.tensor(v), beta=0), a @ v, rtol=1e-10)
    close(T.addr(T.tensor(np.full((2, 3), np.nan)), T.tensor(w), T.tensor(v), beta=0), np.outer(w, v), rtol=1e-10)


def test_addr_bool_and_integer_alpha_checks(T):
    a = T.tensor([[True, False], [False, False]])
    x = T.tensor([True, False])
    same(T.addr(a, x, x, beta=False, alpha=True), [[True, False], [False, False]])
    raises(RuntimeError, "beta must not be a floating point", T.addr, a, x, x, beta=1.5)
    raises(RuntimeError, None, T.addr, T.zeros(2, 2, dtype=T.int64), T.ones(2, dtype=T.int64),
           T.ones(2, dtype=T.int64), alpha=0.5)


def test_addmm_family_refuses_an_input_of_another_dtype(T):
    f32, f64 = T.ones(2, 2), T.ones(2, 2, dtype=T.float64)
    raises(RuntimeError, "self and mat2 must have the same dtype, but got Double and Float", T.addmm, f64, f32, f32)
    raises(RuntimeError, "same dtype, but got Long and Float", T.addmm, T.ones(2, 2, dtype=T.int64), f32, f32)
    raises(RuntimeError, "same dtype, but got Double and Float", T.addmm, T.tensor(1.0, dtype=T.float64), f32, f32)
    raises(RuntimeError, "addmv input tensors must have the same dtype, but got Double, Float, and Float", T.addmv,
           f64[0], f32, f32[0])
    raises(RuntimeError, "Input dtypes must be the same, got: input double, batch1: float, batch2: float", T.baddbmm,
           f64[None], f32[None], f32[None])
    raises(RuntimeError, "self and mat2 must have the same dtype, but got Double and Float", T.addbmm, f64,
           f32[None], f32[None])
    # addr alone promotes
    assert dtype_name(T.addr(f64, f32[0], f32[0])) == "float64"
    assert dtype_name(T.addr(T.ones(2, 2, dtype=T.int64), f32[0], f32[0])) == "float32"


def test_baddbmm_addbmm(T):
    rng = np.random.default_rng(2)
    m, a, b = rng.standard_normal((4, 2, 5)), rng.standard_normal((4, 2, 3)), rng.standard_normal((4, 3, 5))
    close(T.baddbmm(T.tensor(m), T.tensor(a), T.tensor(b), beta=0.5, alpha=2), 0.5 * m + 2 * a @ b, rtol=1e-10)
    close(T.addbmm(T.tensor(m[0]), T.tensor(a), T.tensor(b), alpha=-1), m[0] - (a @ b).sum(0), rtol=1e-10)
    close(T.baddbmm(T.tensor(np.full((4, 2, 5), np.nan)), T.tensor(a), T.tensor(b), beta=0), a @ b, rtol=1e-10)


def test_dot_vdot_inner_outer(T):
    x = np.array([1 + 2j, 3 - 1j])
    y = np.array([2 - 1j, -1 + 4j])
    same(T.dot(T.tensor(x), T.tensor(y)), np.dot(x, y))
    same(T.vdot(T.tensor(x), T.tensor(y)), np.vdot(x, y))
    raises(RuntimeError, None, T.dot, T.zeros(2), T.zeros(3))
    raises(RuntimeError, None, T.dot, T.zeros(2, 2), T.zeros(2, 2))
    raises(RuntimeError, None, T.dot, T.zeros(2), T.zeros(2, dtype=T.float64))
    same(T.dot(T.zeros(0), T.zeros(0)), 0.0)
    a, b = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(4, 3)
    same(T.inner(T.tensor(a), T.tensor(b)), np.inner(a, b))
    same(T.inner(T.tensor(2.0), T.tensor(a)), 2 * a)
    same(T.outer(T.tensor([1, 2]), T.tensor([3.0, 4, 5])), np.outer([1, 2], [3, 4, 5]), "float32")


def test_kron_shapes(T):
    rng = np.random.default_rng(3)
    for a, b in (((2,), (3,)), ((2, 3), (4, 1)), ((2, 1, 3), (4, 2)), ((3,), (2, 2, 2)), ((), (2, 3))):
        x, y = rng.standard_normal(a), rng.standard_normal(b)
        close(T.kron(T.tensor(x), T.tensor(y)), np.kron(x, y), rtol=1e-12)
    same(T.kron(T.zeros(0, 2), T.ones(3, 3)), np.zeros((0, 6)))


def test_tensordot(T):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((4, 3, 2))
    close(T.tensordot(T.tensor(a), T.tensor(b), dims=([1, 0], [0, 1])), np.tensordot(a, b, ([1, 0], [0, 1])),
          rtol=1e-10)
    c = rng.standard_normal((5, 4))
    close(T.tensordot(T.tensor(a), T.tensor(c), dims=1), np.tensordot(a, c, 1), rtol=1e-10)
    close(T.tensordot(T.tensor(a), T.tensor(a), dims=0), np.tensordot(a, a, 0), rtol=1e-10)
    raises(RuntimeError, None, T.tensordot, T.tensor(a), T.tensor(b), dims=-1)


def test_multi_dot(T):
    rng = np.random.default_rng(5)
    for shapes in (((2,), (2,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4), (4, 5)),
                   ((3,), (3, 4), (4, 2), (2,)), ((2, 0), (0, 3)), ((0, 2), (2, 3))):
        mats = [rng.standard_normal(s) for s in shapes]
        close(T.linalg.multi_dot([T.tensor(m) for m in mats]), np.linalg.multi_dot(mats), rtol=1e-10)
    raises(RuntimeError, "at least", T.linalg.multi_dot, [])
    raises(RuntimeError, None, T.linalg.multi_dot, [T.zeros(2, 3), T.zeros(2, 3)])
    raises(RuntimeError, None, T.linalg.multi_dot, [T.zeros(2, 2), T.zeros(2, 2, dtype=T.float64)])


def test_multi_dot_refuses_batches(T):
    raises(RuntimeError, "must be (1D or )?2D", T.linalg.multi_dot, [T.zeros(2, 2, 2), T.zeros(2, 2)])
    raises(RuntimeError, "must be (1D or )?2D", T.linalg.multi_dot, [T.zeros(2, 2), T.zeros(2, 2, 2), T.zeros(2, 2)])


def test_matrix_power(T):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((2, 3, 3))
    for n in (0, 1, 2, 5, -1, -3):
        close(T.linalg.matrix_power(T.tensor(a), n), np.linalg.matrix_power(a, n), rtol=1e-8, atol=1e-10)
    same(T.linalg.matrix_power(T.zeros(0, 2, 2), 3), np.zeros((0, 2, 2)))
    same(T.linalg.matrix_power(T.tensor([[2, 0], [0, 3]]), 3), [[8, 0], [0, 27]], "int64")
    raises(RuntimeError, None, T.linalg.matrix_power, T.zeros(2, 3), 2)
    raises(RuntimeError, None, T.linalg.matrix_power, T.tensor([[1, 0], [0, 1]]), -1)


def test_solve_inv_det_values_and_broadcasting(T):
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((2, 1, 3, 3)), rng.standard_normal((4, 3, 2))
    close(T.linalg.solve(T.tensor(a), T.tensor(b)), np.linalg.solve(a, b), rtol=1e-8)
    v = rng.standard_normal(3)
    close(T.linalg.solve(T.tensor(a[0, 0]), T.tensor(v)), np.linalg.solve(a[0, 0], v), rtol=1e-8)
    close(T.linalg.solve(T.tensor(a[0, 0]), T.tensor(b[0].T), left=False),
          np.linalg.solve(a[0, 0].T, b[0]).T, rtol=1e-8)
    close(T.linalg.inv(T.tensor(a)), np.linalg.inv(a), rtol=1e-8)
    close(T.linalg.det(T.tensor(a)), np.linalg.det(a), rtol=1e-8)
    sign, logabs = T.linalg.slogdet(T.tensor(a))
    ns, nl = np.linalg.slogdet(a)
    close(sign, ns)
    close(logabs, nl, rtol=1e-8)
    same(T.linalg.det(T.zeros(0, 0)), 1.0)
    same(T.linalg.inv(T.zeros(2, 0, 0)), np.zeros((2, 0, 0)))
    same(T.linalg.det(T.zeros(3, 3, dtype=T.float64)), 0.0)


def test_solve_inv_errors(T):
    raises(RuntimeError, "square", T.linalg.inv, T.zeros(2, 3))
    raises(RuntimeError, None, T.linalg.inv, T.zeros(3))
    raises(RuntimeError, "singular", T.linalg.inv, T.zeros(2, 2))
    raises(RuntimeError, "singular", T.linalg.solve, T.zeros(2, 2), T.ones(2))
    raises(RuntimeError, None, T.linalg.solve, T.eye(2), T.ones(3))
    raises(RuntimeError, None, T.linalg.solve, T.eye(2), T.ones(2, dtype=T.float64))
    raises(RuntimeError, None, T.linalg.inv, T.tensor([[1, 0], [0, 1]]))
    raises(RuntimeError, None, T.linalg.det, T.zeros(2, 3))


def test_inv_ex_and_solve_ex_info(T):
    a = np.stack([np.eye(3), np.diag([1.0, 0.0, 1.0]), 2 * np.eye(3)])
    inv, info = T.linalg.inv_ex(T.tensor(a))
    same(info, [0, 2, 0], "int32")
    close(inv[0], np.eye(3))
    raises(RuntimeError, r"\(Batch element 1\).*singular", T.linalg.inv_ex, T.tensor(a), check_errors=True)
    _, info = T.linalg.solve_ex(T.tensor(a), T.ones(3, 3, 1, dtype=T.float64))
    same(info, [0, 2, 0], "int32")


def test_cholesky_ex_info_and_errors(T):
    a = np.stack([np.eye(3), np.diag([1.0, -1.0, 1.0])])
    L, info = T.linalg.cholesky_ex(T.tensor(a))
    same(info, [0, 2], "int32")
    close(L[0], np.eye(3))
    raises(RuntimeError, r"\(Batch element 1\).*not positive-definite \(the leading minor of order 2",
           T.linalg.cholesky, T.tensor(a))
    raises(RuntimeError, "positive-definite", T.linalg.cholesky, T.tensor(np.diag([1.0, -1.0])))
    raises(RuntimeError, None, T.linalg.cholesky, T.zeros(2, 3))
    raises(RuntimeError, None, T.linalg.cholesky, T.tensor([[1, 0], [0, 1]]))
    same(T.linalg.cholesky(T.zeros(0, 0)), np.zeros((0, 0)))


def test_cholesky_upper_and_inverse_solve(T):
    rng = np.random.default_rng(8)
    a = values(_spd(T, rng, 4, (2,)))
    L = np.linalg.cholesky(a)
    close(T.linalg.cholesky(T.tensor(a)), L, rtol=1e-10)
    close(T.linalg.cholesky(T.tensor(a), upper=True), np.swapaxes(L, -1, -2), rtol=1e-10)
    b = rng.standard_normal((2, 4, 3))
    close(T.cholesky_solve(T.tensor(b), T.tensor(L)), np.linalg.solve(a, b), rtol=1e-8)
    close(T.cholesky_solve(T.tensor(b), T.tensor(np.swapaxes(L, -1, -2)), upper=True), np.linalg.solve(a, b),
          rtol=1e-8)
    close(T.cholesky_inverse(T.tensor(L[0])), np.linalg.inv(a[0]), rtol=1e-8)
    close(T.cholesky_inverse(T.tensor(L)), np.linalg.inv(a), rtol=1e-8)


def test_matrix_rank_and_pinv(T):
    rng = np.random.default_rng(9)
    u = rng.standard_normal((3, 5, 2))
    a = u @ np.swapaxes(u, -1, -2)  # rank 2, symmetric
    same(T.linalg.matrix_rank(T.tensor(a)), [2, 2, 2], "int64")
    same(T.linalg.matrix_rank(T.tensor(a), hermitian=True), [2, 2, 2])
    same(T.linalg.matrix_rank(T.tensor(a), atol=1e30), [0, 0, 0])
    same(T.linalg.matrix_rank(T.zeros(0, 3)), 0)
    b = rng.standard_normal((2, 4, 3))
    close(T.linalg.pinv(T.tensor(b)), np.linalg.pinv(b), rtol=1e-8, atol=1e-10)
    close(T.linalg.pinv(T.tensor(a), hermitian=True), np.linalg.pinv(a, hermitian=True), rtol=1e-6, atol=1e-8)
    same(T.linalg.pinv(T.zeros(3, 0)), np.zeros((0, 3)))
    raises(RuntimeError, None, T.linalg.pinv, T.zeros(3))


def test_cross_and_vecdot(T):
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((1, 2, 3)), rng.standard_normal((4, 1, 3))
    close(T.linalg.cross(T.tensor(x), T.tensor(y)), np.cross(x, y), rtol=1e-12)
    x2 = rng.standard_normal((3, 4))
    close(T.linalg.cross(T.tensor(x2), T.tensor(x2[::-1].copy()), dim=0), np.cross(x2, x2[::-1], axis=0),
          rtol=1e-12)
    raises(RuntimeError, None, T.linalg.cross, T.zeros(2, 4), T.zeros(2, 4))
    raises(RuntimeError, None, T.linalg.cross, T.zeros(2, 3), T.zeros(3, 3))
    raises(RuntimeError, "same number of dimensions", T.linalg.cross, T.zeros(2, 3), T.zeros(4, 1, 3))
    a = np.array([[1 + 1j, 2 - 1j], [0.5j, 3]])
    b = np.array([2 - 2j, 1 + 1j])
    same(T.linalg.vecdot(T.tensor(a), T.tensor(b)), (a.conj() * b).sum(-1))
    same(T.linalg.vecdot(T.tensor(a), T.tensor(a), dim=0), (a.conj() * a).sum(0))
    raises(RuntimeError, "same dtype", T.linalg.vecdot, T.zeros(2), T.zeros(2, dtype=T.float64))


def test_householder_product(T):
    rng = np.random.default_rng(11)
    a = rng.standard_normal((5, 3))
    geqrf, tau = T.geqrf(T.tensor(a))
    q = T.linalg.householder_product(geqrf, tau)
    close(q, np.linalg.qr(a)[0] * np.sign(np.diag(np.linalg.qr(a)[1])) * np.sign(np.diag(values(geqrf))),
          rtol=1e-8, atol=1e-10)
    raises(RuntimeError, None, T.linalg.householder_product, T.zeros(3, 2), T.zeros(3))
    raises(RuntimeError, None, T.linalg.householder_product, T.zeros(2, 3), T.zeros(2))


def test_out_checks(T):
    a = T.tensor([[2.0, 0.0], [0.0, 4.0]])
    out = T.empty(0)
    T.linalg.inv(a, out=out)
    same(out, [[0.5, 0.0], [0.0, 0.25]])
    raises(RuntimeError, None, T.linalg.inv, a, out=T.empty(0, dtype=T.int64))
    out = T.empty(2, 2)
    T.matmul(a, a, out=out)
    same(out, [[4.0, 0.0], [0.0, 16.0]])
    out = T.empty(0)
    T.linalg.det(a, out=out)
    same(out, 8.0)
    L, info = T.empty(0), T.empty(0, dtype=T.int32)
    T.linalg.cholesky_ex(a, out=(L, info))
    close(L, [[2 ** 0.5, 0], [0, 2]])
    same(info, 0)


def test_gradcheck_float64(T):
    rng = np.random.default_rng(12)
    gc = T.autograd.gradcheck

    def leaf(x):
        return T.tensor(x, requires_grad=True)

    a, b = leaf(rng.standard_normal((2, 3, 3)) + 3 * np.eye(3)), leaf(rng.standard_normal((2, 3, 2)))
    spd = values(_spd(T, rng, 3))
    assert gc(T.linalg.solve, (a, b))
    assert gc(T.linalg.inv, (a,))
    assert gc(T.linalg.det, (a,))
    assert gc(lambda x: T.linalg.slogdet(x)[1], (a,))
    assert gc(lambda x: T.linalg.cholesky((x + x.mT) / 2), (leaf(spd),))
    assert gc(lambda x: T.linalg.matrix_power(x, -2), (a,))
    mats = [leaf(rng.standard_normal(s)) for s in ((2, 3), (3, 4), (4, 2))]
    assert gc(lambda *ms: T.linalg.multi_dot(ms), mats)
    assert gc(T.kron, (leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal((2, 2)))))
    assert gc(T.linalg.pinv, (leaf(rng.standard_normal((4, 3))),))
    assert gc(T.linalg.cross, (leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal((2, 3)))))
    assert gc(T.linalg.vecdot, (leaf(rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))),
                                leaf(rng.standard_normal(3) + 1j)))
    assert gc(T.addr, (leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal(2)),
                       leaf(rng.standard_normal(3))))
    assert gc(lambda m, x, y: T.baddbmm(m, x, y, beta=0.5, alpha=2),
              (leaf(rng.standard_normal((2, 2, 2))), leaf(rng.standard_normal((2, 2, 3))),
               leaf(rng.standard_normal((2, 3, 2)))))
    assert gc(lambda f: T.cholesky_inverse(f.tril()), (leaf(np.linalg.cholesky(spd)),))
