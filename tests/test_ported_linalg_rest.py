"""The rest of PyTorch's test/test_linalg.py (TestLinalg) not ported elsewhere: inner/outer over its shape sweep,
zero-strided and strided operands of mm/bmm, the addmm family's out= dtype and input-expansion checks, beta=0
ignoring NaN, chain_matmul, renorm, geqrf/orgqr/ormqr, the legacy triangular_solve/lu_solve/cholesky_solve/svd/qr,
lu_unpack's flags, norms of degenerate shapes and of inf/NaN, einsum's sublist format and its errors, and
gradients of these in float64.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import warnings

import numpy as np
import pytest

from tests.ported import close, raises, same, values

INF, NAN = float("inf"), float("nan")
DEPRECATED = pytest.mark.filterwarnings("ignore:torch.chain_matmul is deprecated")


def _r(T, shape, seed=0, dtype="float64"):
    return T.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def test_inner_shape_sweep_and_error(T):
    for a_shape, b_shape in (((), ()), ((), (0,)), ((), (3,)), ((), (2, 3, 4)), ((0,), (0,)), ((0,), (2, 0)),
                             ((2,), (2,)), ((2,), (3, 1, 2)), ((2,), (3, 0, 2)), ((1, 2), (3, 2)),
                             ((1, 2), (3, 4, 2)), ((2, 1, 3, 2), (1, 3, 2, 2))):
        for x_shape, y_shape in ((a_shape, b_shape), (b_shape, a_shape)):
            x, y = _r(T, x_shape, 1), _r(T, y_shape, 2)
            expected = np.inner(values(x), values(y))
            close(T.inner(x, y), expected, rtol=1e-12)
            out = T.zeros(np.shape(expected), dtype=T.float64)
            T.inner(x, y, out=out)
            close(out, expected, rtol=1e-12)
    raises(RuntimeError, r"inner\(\) the last dimension must match on both input tensors but got shapes "
           r"\[2, 3\] and \[2, 2\]", T.randn(2, 3).inner, T.randn(2, 2))


def test_outer_zero_strided_and_out(T):
    a, b = _r(T, (5,), 1), _r(T, (5,), 2)
    zero_strided = _r(T, (1,), 3).expand(5)
    for x, y in ((a, b), (zero_strided, b), (a, zero_strided)):
        expected = np.outer(values(x), values(y))
        for f in (T.outer, T.ger, T.Tensor.outer, T.Tensor.ger):
            close(f(x, y), expected, rtol=1e-12)
        out = T.empty(5, 5, dtype=T.float64)
        T.outer(x, y, out=out)
        close(out, expected, rtol=1e-12)
    same(T.outer(T.tensor([True, False]), T.tensor([True, True])), [[True, True], [False, False]])


def test_products_out_must_have_the_result_dtype(T):
    """test_addmm/test_bmm/test_baddbmm: the products write into no wider dtype (outer, kron and addr do)."""
    f32 = T.ones(2, 2)
    for call in (lambda out: T.mm(f32, f32, out=out), lambda out: T.matmul(f32, f32, out=out),
                 lambda out: T.addmm(f32, f32, f32, out=out), lambda out: T.tensordot(f32, f32, dims=1, out=out)):
        raises(RuntimeError, "dtype", call, T.empty(2, 2, dtype=T.float64))
    for call in (lambda out: T.bmm(f32[None], f32[None], out=out),
                 lambda out: T.baddbmm(f32[None], f32[None], f32[None], out=out)):
        raises(RuntimeError, "dtype", call, T.empty(1, 2, 2, dtype=T.float64))
    raises(RuntimeError, "dtype", T.mv, f32, T.ones(2), out=T.empty(2, dtype=T.float64))
    raises(RuntimeError, "dtype", T.addmv, T.ones(2), f32, T.ones(2), out=T.empty(2, dtype=T.float64))
    raises(RuntimeError, "dtype", T.addbmm, f32, f32[None], f32[None], out=T.empty(2, 2, dtype=T.float64))
    raises(RuntimeError, "dtype", T.dot, T.ones(2), T.ones(2), out=T.empty((), dtype=T.float64))
    raises(RuntimeError, "dtype", T.vdot, T.ones(2), T.ones(2), out=T.empty((), dtype=T.float64))
    raises(RuntimeError, "dtype", T.linalg.vecdot, T.ones(2), T.ones(2), out=T.empty((), dtype=T.float64))
    for call, expected in ((lambda out: T.outer(T.ones(2), T.ones(2), out=out), np.ones((2, 2))),
                           (lambda out: T.kron(T.ones(2), T.ones(2), out=out), np.ones(4)),
                           (lambda out: T.addr(f32, T.ones(2), T.ones(2), out=out), np.full((2, 2), 2.0))):
        out = T.empty(expected.shape, dtype=T.float64)
        call(out)
        assert out.dtype == T.float64
        same(out, expected)
    out = T.empty(2, 2)
    same(T.mm(f32, f32, out=out), np.full((2, 2), 2.0))


def test_addmm_family_expands_input_to_the_product(T):
    """The input is expanded to the product's shape (never the result broadcast to a bigger one)."""
    raises(RuntimeError, r"The expanded size of the tensor \(1\) must match the existing size \(2\) at "
           r"non-singleton dimension 2", T.baddbmm, T.ones(1, 2), T.ones(1, 1, 2), T.ones(1, 2, 1))
    raises(RuntimeError, r"The expanded size of the tensor \(2\) must match the existing size \(3\)", T.addr,
           T.ones(3, 3), T.ones(2), T.ones(3))
    raises(RuntimeError, "expand", T.addmm, T.ones(1, 2, 2), T.ones(2, 2), T.ones(2, 2))
    raises(RuntimeError, None, T.addmv, T.ones(3), T.ones(2, 2), T.ones(2))
    raises(RuntimeError, "expand", T.addmm, T.ones(3, 3), T.ones(2, 3), T.ones(3, 3), beta=0)
    same(T.addmm(T.tensor([1.0, 2.0]), T.ones(3, 2), T.ones(2, 2)), [[3.0, 4.0]] * 3)
    same(T.baddbmm(T.tensor([1.0, 2.0]), T.ones(3, 2, 3), T.ones(3, 3, 2)), [[[4.0, 5.0]] * 2] * 3)
    x = T.tensor([1.0, 2.0], dtype=T.float64, requires_grad=True)
    T.addmm(x, T.ones(3, 2, dtype=T.float64), T.ones(2, 2, dtype=T.float64), beta=0.5).sum().backward()
    same(x.grad, [1.5, 1.5])


def test_beta_zero_ignores_nan_input(T):
    """test_blas_nan_out / test_blas_alpha_beta_empty: with beta=0 the input is not read."""
    same(T.addmv(T.full((2,), NAN), T.ones(2, 3), T.ones(3), beta=0), [3.0, 3.0])
    same(T.addmm(T.full((2, 2), NAN), T.ones(2, 3), T.ones(3, 2), beta=0), np.full((2, 2), 3.0))
    same(T.addr(T.full((2, 2), NAN), T.ones(2), T.ones(2), beta=0), np.ones((2, 2)))
    same(T.baddbmm(T.full((1, 2, 2), NAN), T.ones(1, 2, 3), T.ones(1, 3, 2), beta=0), np.full((1, 2, 2), 3.0))
    same(T.addmm(T.ones(2, 2), T.ones(2, 0), T.ones(0, 2), beta=2, alpha=3), np.full((2, 2), 2.0))
    same(T.addmv(T.ones(2), T.ones(2, 0), T.ones(0), beta=2), [2.0, 2.0])


def test_zero_strided_and_strided_operands(T):
    """test_1_sized_with_0_strided, test_strided_mm_bmm."""
    a, b = _r(T, (1, 3), 1), _r(T, (3, 1), 2)
    close(T.mm(a.expand(4, 3), b.expand(3, 5)), np.broadcast_to(values(a), (4, 3)) @ np.broadcast_to(values(b), (3, 5)))
    x, y = _r(T, (1, 2, 3), 3), _r(T, (4, 3, 2), 4)
    close(T.bmm(x.expand(4, 2, 3), y), np.broadcast_to(values(x), (4, 2, 3)) @ values(y), rtol=1e-12)
    m, n = T.arange(24.0).reshape(4, 6), T.arange(12.0).reshape(6, 2)
    close(T.mm(m[::2, ::3], n[::3]), values(m)[::2, ::3] @ values(n)[::3])
    close(T.bmm(m.reshape(2, 2, 6)[:, :, ::3], n.reshape(2, 3, 2)[:, ::2].mT[:, ::1].mT),
          values(m).reshape(2, 2, 6)[:, :, ::3] @ values(n).reshape(2, 3, 2)[:, ::2])


@DEPRECATED
def test_chain_matmul(T):
    mats = [_r(T, s, i) for i, s in enumerate(((2, 3), (3, 4), (4, 2)))]
    close(T.chain_matmul(*mats), values(mats[0]) @ values(mats[1]) @ values(mats[2]), rtol=1e-12)
    close(T.chain_matmul(mats[0]), values(mats[0]))
    same(T.chain_matmul(T.ones(0, 3), T.ones(3, 2)), np.zeros((0, 2)))
    raises(RuntimeError, None, T.chain_matmul)
    close(T.linalg.multi_dot([T.ones(3), T.ones(3, 4), T.ones(4)]), 12.0)
    raises(RuntimeError, "at least 2 tensors", T.linalg.multi_dot, [T.ones(3)])


def _renorm_numpy(x, p, dim, maxnorm):
    moved = np.moveaxis(x, dim, 0).reshape(x.shape[dim], -1)
    norms = np.abs(moved).max(1) if p == INF else (np.abs(moved) ** p).sum(1) ** (1 / p)
    scale = np.where(norms > maxnorm, maxnorm / (norms + 1e-7), 1.0)
    shape = [1] * x.ndim
    shape[dim] = -1
    return x * scale.reshape(shape)


def test_renorm(T):
    x = np.arange(24.0).reshape(2, 3, 4) - 10
    for p in (1, 2, 3, INF):
        for dim in (0, 1, -1):
            close(T.renorm(T.tensor(x), p, dim, 5.0), _renorm_numpy(x, p, dim % 3, 5.0), rtol=1e-6)
    half = 0.5 ** 0.5  # (the second row's norm is √2: scaled down to 1)
    close(T.renorm(T.tensor([[3 + 4j, 0], [1j, 1]]), 2, 0, 1), [[0.6 + 0.8j, 0], [half * 1j, half]], rtol=1e-6)
    raises(RuntimeError, "non-positive|p", T.renorm, T.ones(3, 4), -1, 0, 5)
    raises(RuntimeError, "maxnorm", T.renorm, T.ones(3, 4), 2, 0, -5)
    raises(IndexError, None, T.renorm, T.ones(3, 4), 2, 2, 5)
    raises(RuntimeError, None, T.renorm, T.ones(3), 2, 0, 5)
    a = T.tensor([[3.0, 4.0], [0.1, 0.2]], dtype=T.float64, requires_grad=True)
    assert T.autograd.gradcheck(lambda a: T.renorm(a, 2, 0, 1.0), (a,))
    assert T.autograd.gradcheck(lambda a: T.renorm(a, INF, 1, 1.0), (a,))


def test_geqrf_orgqr_ormqr(T):
    a = _r(T, (4, 3), 5)
    qr_factors, tau = T.geqrf(a)
    q = T.linalg.householder_product(qr_factors, tau)
    close(q @ T.triu(qr_factors[:3]), a, rtol=1e-10, atol=1e-12)
    close(T.orgqr(qr_factors, tau), q, rtol=1e-12)
    c = _r(T, (4, 2), 6)
    close(T.ormqr(qr_factors, tau, c), _full_q(values(qr_factors), values(tau)) @ values(c), rtol=1e-10, atol=1e-12)
    close(T.ormqr(qr_factors, tau, c.mT.contiguous(), left=False, transpose=True),
          values(c).T @ _full_q(values(qr_factors), values(tau)).T, rtol=1e-10, atol=1e-12)
    raises(RuntimeError, None, T.geqrf, T.ones(3))


def _full_q(factors, tau):
    q = np.eye(factors.shape[0])
    for i, t in enumerate(tau):
        v = np.zeros(factors.shape[0])
        v[i], v[i + 1:] = 1.0, factors[i + 1:, i]
        q = q @ (np.eye(len(v)) - t * np.outer(v, v))
    return q


def test_legacy_solvers_and_factorisations(T):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        upper = T.tensor([[2.0, 1.0], [0.0, 4.0]], dtype=T.float64)
        b = T.ones(3, 2, 1, dtype=T.float64)
        close(T.triangular_solve(b, upper).solution, np.linalg.solve(values(upper), np.ones((3, 2, 1))))
        close(T.triangular_solve(b, upper.mT, upper=False, transpose=True).solution,
              np.linalg.solve(values(upper), np.ones((3, 2, 1))))
        close(T.triangular_solve(b, upper, unitriangular=True)[0], np.broadcast_to([[0.0], [1.0]], (3, 2, 1)))
        a = T.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=T.float64)
        close(T.lu_solve(T.ones(2, 1, dtype=T.float64), *T.linalg.lu_factor(a)), [[0.4], [0.2]], rtol=1e-12)
        factor = T.linalg.cholesky(a)
        close(T.cholesky_solve(b, factor), np.linalg.solve(values(a), np.ones((3, 2, 1))), rtol=1e-12)
        close(T.cholesky_solve(b, factor.mT, upper=True), np.linalg.solve(values(a), np.ones((3, 2, 1))))
        close(T.cholesky_inverse(factor.mT, upper=True), np.linalg.inv(values(a)), rtol=1e-12)
        close(T.cholesky(a, upper=True), values(factor).T, rtol=1e-12)
        raises(RuntimeError, "square", T.cholesky_inverse, T.ones(2, 3))
        u, s, v = T.svd(_r(T, (4, 2)), some=False)
        assert (tuple(u.shape), tuple(s.shape), tuple(v.shape)) == ((4, 4), (2,), (2, 2))
        u, s, v = T.svd(_r(T, (4, 2)), compute_uv=False)
        close(s, np.linalg.svd(values(_r(T, (4, 2))), compute_uv=False), rtol=1e-12)
        same(u, np.zeros((4, 4)))
        same(v, np.zeros((2, 2)))
        q, r = T.qr(_r(T, (4, 2)), some=False)
        assert (tuple(q.shape), tuple(r.shape)) == ((4, 4), (4, 2))


def test_lu_unpack_flags(T):
    lu, pivots = T.linalg.lu_factor(T.tensor([[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]], dtype=T.float64))
    p, l, u = T.lu_unpack(lu, pivots)
    close(p @ l @ u, [[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]], rtol=1e-12)
    assert (tuple(p.shape), tuple(l.shape), tuple(u.shape)) == ((2, 2), (2, 2), (2, 3))
    p, l, u = T.lu_unpack(lu, pivots, unpack_data=False)
    assert l.numel() == u.numel() == 0 and tuple(p.shape) == (2, 2)
    p, l, u = T.lu_unpack(lu, pivots, unpack_pivots=False)
    assert p.numel() == 0 and tuple(l.shape) == (2, 2)


@pytest.mark.parametrize("ord", [0, 1, 2, INF, -INF, 3, -1, 0.5])
def test_vector_norm_degenerate_shapes(T, ord):
    for shape in ((0,), (2, 0), (0, 3)):
        x = T.ones(shape)
        if ord < 0 or ord == INF:
            raises((RuntimeError, IndexError), None, T.linalg.vector_norm, x, ord)
        else:
            same(T.linalg.vector_norm(x, ord), 0.0)
        if shape[-1] == 0 and (ord < 0 or ord == INF):
            raises((RuntimeError, IndexError), None, T.linalg.vector_norm, x, ord, dim=-1)
        else:
            same(T.linalg.vector_norm(x, ord, dim=-1), np.linalg.norm(np.ones(shape), ord, axis=-1))


@pytest.mark.parametrize("ord", [0, 1, 2, INF, -INF, -1, 3])
def test_vector_norm_extreme_values(T, ord):
    for v in ([INF, NAN, 1.0], [INF, -INF, 0.0], [NAN, 0.0]):
        x = np.array(v)
        with np.errstate(divide="ignore"):
            expected = np.linalg.norm(x, ord) if ord != 0 else np.count_nonzero(x)
        if np.isnan(x).any() and ord != 0:  # (NaN is a nonzero: counted by ord 0)
            expected = NAN
        same(T.linalg.vector_norm(T.tensor(x), ord), expected)


def test_matrix_norm_degenerate_shapes(T):
    """A max over nothing is 0 here (the norms are >= 0), a min over nothing (the negative ords) an error."""
    for shape in ((0, 0), (2, 0), (0, 3), (1, 0, 3), (3, 0, 2)):
        for ord in ("fro", "nuc", 2, -2, 1, -1, INF, -INF):
            minimised = {-1: shape[-1], -INF: shape[-2], -2: min(shape[-2:])}.get(ord)
            if minimised == 0:
                raises(IndexError, "non-zero size", T.linalg.matrix_norm, T.ones(shape), ord)
            else:
                same(T.linalg.matrix_norm(T.ones(shape), ord), np.zeros(shape[:-2]))


def test_einsum_sublist_format_and_errors(T):
    a, b = _r(T, (2, 3), 1), _r(T, (3, 4), 2)
    close(T.einsum(a, [0, 1], b, [1, 2], [0, 2]), values(a) @ values(b), rtol=1e-12)
    c = _r(T, (5, 2, 3), 3)
    close(T.einsum(c, [Ellipsis, 0, 1], b, [1, 2], [Ellipsis, 0, 2]), values(c) @ values(b), rtol=1e-12)
    close(T.einsum(c, [0, 1, 2]), values(c))
    close(T.einsum("ii->", T.arange(9.0).reshape(3, 3)), 12.0)
    close(T.einsum("...", _r(T, (2, 3))), values(_r(T, (2, 3))))
    close(T.einsum("...ij,...jk->...ik", T.ones(1, 2, 3), T.ones(4, 3, 2)), np.full((4, 2, 2), 3.0))
    raises(RuntimeError, "fewer operands", T.einsum, "ij,jk", T.ones(2, 2))
    raises(RuntimeError, None, T.einsum, "i", T.ones(2, 2))
    raises(RuntimeError, "subscript i", T.einsum, "ii", T.ones(2, 3))
    raises(RuntimeError, None, T.einsum, "i->j", T.ones(2))
    raises(RuntimeError, "more than once", T.einsum, "i->ii", T.ones(2))
    raises(RuntimeError, "invalid subscript", T.einsum, "i#", T.ones(2, 3))


def test_empty_matrices(T):
    same(T.linalg.det(T.ones(2, 0, 0)), [1.0, 1.0])
    same(T.linalg.det(T.ones(0, 3, 3)), np.zeros(0))
    sign, logabsdet = T.linalg.slogdet(T.ones(0, 0))
    same(sign, 1.0)
    same(logabsdet, 0.0)
    assert tuple(T.linalg.inv(T.ones(2, 0, 0)).shape) == (2, 0, 0)
    assert tuple(T.linalg.cholesky(T.ones(3, 0, 0)).shape) == (3, 0, 0)
    assert tuple(T.linalg.eig(T.ones(2, 0, 0))[1].shape) == (2, 0, 0)
    assert [tuple(x.shape) for x in T.linalg.svd(T.ones(2, 0, 3))] == [(2, 0, 0), (2, 0), (2, 3, 3)]
    assert [tuple(x.shape) for x in T.linalg.svd(T.ones(2, 0, 3), full_matrices=False)] == [(2, 0, 0), (2, 0),
                                                                                          (2, 0, 3)]
    same(T.linalg.pinv(T.ones(2, 0, 3)), np.zeros((2, 3, 0)))
    same(T.linalg.matrix_rank(T.ones(2, 0, 3)), [0, 0])
    same(T.linalg.lstsq(T.ones(2, 3, 0), T.ones(2, 3, 2))[0], np.zeros((2, 0, 2)))
    same(T.linalg.matrix_exp(T.ones(0, 2, 2)), np.zeros((0, 2, 2)))


def test_matrix_power_negative_and_matrix_exp(T):
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    close(T.linalg.matrix_power(T.tensor(a), -2), np.linalg.matrix_power(a, -2), rtol=1e-12)
    close(T.matrix_power(T.tensor(np.stack([2 * np.eye(2), 4 * np.eye(2)])), -1), [np.eye(2) / 2, np.eye(2) / 4])
    same(T.linalg.matrix_power(T.ones(2, 3, 3, dtype=T.int64), 0), np.broadcast_to(np.eye(3, dtype=np.int64),
                                                                                  (2, 3, 3)))
    raises(RuntimeError, "floating point", T.linalg.matrix_power, T.tensor([[2, 1], [1, 3]]), -1)
    raises(RuntimeError, "square", T.linalg.matrix_power, T.ones(2, 3), 2)
    rotation = T.linalg.matrix_exp(T.tensor([[0.0, 30.0], [-30.0, 0.0]], dtype=T.float64))
    close(rotation, [[np.cos(30), np.sin(30)], [-np.sin(30), np.cos(30)]], rtol=1e-10, atol=1e-12)


@DEPRECATED
@pytest.mark.filterwarnings("ignore:torch.triangular_solve is deprecated")
def test_gradcheck_float64(T):
    def leaf(x):
        return T.tensor(x, dtype=T.float64, requires_grad=True)

    checks = [
        (lambda a: T.linalg.matrix_power(a, -2), [[2.0, 1.0], [1.0, 3.0]]),
        (lambda a: T.chain_matmul(a, a.mT), [[1.0, 2.0], [3.0, 5.0]]),
        (lambda b, a: T.triangular_solve(b, a, upper=False)[0], [[1.0], [2.0]], [[2.0, 0.0], [1.0, 3.0]]),
        (lambda a, b: T.linalg.lu_solve(*T.linalg.lu_factor(a), b, adjoint=True), [[2.0, 1.0], [1.0, 3.0]],
         [[1.0], [2.0]]),
        (lambda a: T.cholesky_inverse(T.triu(a), upper=True), [[2.0, 1.0], [0.0, 3.0]]),
        (lambda a: T.linalg.svdvals(a), [[2.0, 1.0], [1.0, 3.0], [0.0, 1.0]]),
        (lambda a: T.linalg.matrix_norm(a, -2), [[2.0, 1.0], [1.0, 3.0], [0.0, 1.0]]),
        (lambda a: T.linalg.matrix_exp(a), [[0.0, 1.0], [2.0, 0.5]]),
        (lambda m, a, b: T.addr(m, a, b, beta=0.5, alpha=2), [[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0], [3.0, 4.0]),
        (lambda m, a, b: T.baddbmm(m, a, b, beta=0.5, alpha=2), [[1.0]], [[[1.0, 2.0]]], [[[3.0], [4.0]]]),
        (lambda a: T.linalg.vander(a), [1.0, 2.0, 3.0]),
        (lambda a: T.lu_unpack(*T.linalg.lu_factor(a))[1], [[1.0, 2.0], [3.0, 4.0]]),
    ]
    for fn, *inputs in checks:
        assert T.autograd.gradcheck(fn, tuple(leaf(x) for x in inputs))


def test_svd_driver_is_for_cuda_only(T):
    """test_svd_errors_and_warnings: driver= picks a cuSOLVER routine; on the CPU it is refused."""
    for fn in (T.linalg.svd, T.linalg.svdvals):
        raises(RuntimeError, "driver=` is only supported on CUDA", fn, T.eye(2), driver="gesvd")
    same(T.linalg.svd(T.eye(2), driver=None).S, [1.0, 1.0])
    same(T.linalg.svdvals(T.eye(2), driver=None), [1.0, 1.0])


def test_ldl_factor_and_solve_of_complex_matrices(T, request):
    """test_ldl_factor / test_ldl_solve sweep complex dtypes: complex symmetric (sytrf) and Hermitian (hetrf)."""
    hermitian = np.array([[4.0, 1j], [-1j, 3.0]])
    for a, is_hermitian in ((hermitian, True), (np.array([[4.0, 1j], [1j, 3.0]]), False)):
        A = T.tensor(a)
        x = T.linalg.ldl_solve(*T.linalg.ldl_factor(A, hermitian=is_hermitian), T.ones(2, 1, dtype=A.dtype),
                               hermitian=is_hermitian)
        close(x, np.linalg.solve(a, np.ones((2, 1))), rtol=1e-10)


def test_norm_dtype_must_keep_the_kind(T):
    """test_norm_fused_type_promotion / test_vector_norm dtype checks: dtype= widens within the input's kind only
    (a complex input's norm in a real dtype would be its real part's: refused)."""
    for norm, x in ((T.linalg.vector_norm, T.ones(3, dtype=T.complex64)),
                    (T.linalg.matrix_norm, T.ones(3, 3, dtype=T.complex64))):
        raises(RuntimeError, "dtype should be complex for complex inputs, but got Double", norm, x, dtype=T.float64)
        same(norm(x, dtype=T.complex128), 3.0 if x.ndim == 2 else 3 ** 0.5, "float64")
    raises(RuntimeError, "dtype should be real for real inputs, but got ComplexFloat", T.linalg.vector_norm,
           T.ones(3), dtype=T.complex64)
    raises(RuntimeError, "dtype should be floating point or complex, but got Long", T.linalg.vector_norm, T.ones(3),
           dtype=T.int64)
    raises(RuntimeError, "Expected a floating point or complex tensor as input. Got Long", T.linalg.vector_norm,
           T.ones(3, dtype=T.int64), dtype=T.float32)
    raises(RuntimeError, r"input \(Double\) should be convertible without narrowing to the specified dtype \(Float\)",
           T.linalg.vector_norm, T.ones(3, dtype=T.float64), dtype=T.float32)
    same(T.linalg.vector_norm(T.tensor([3.0, 4.0], dtype=T.float16), dtype=T.float32), 5.0, "float32")
