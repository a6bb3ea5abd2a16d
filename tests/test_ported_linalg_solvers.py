"""Inverses, determinants and solvers ported from PyTorch's test/test_linalg.py (TestLinalg): inv/inv_ex,
det/slogdet/logdet, solve/solve_ex (left=, broadcasting, a vector right-hand side), solve_triangular,
cholesky_solve/cholesky_inverse, tensorsolve/tensorinv, and their errors: non-square or mismatched shapes,
mixed dtypes, integer inputs, singular matrices (check_errors and the _ex info codes), empty batches and out=.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same


def _r(T, shape, seed=0, dtype="float64"):
    return T.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def _wellcond(T, shape, seed=0, dtype="float64"):
    a = np.random.default_rng(seed).standard_normal(shape)
    return T.tensor((a + 3 * np.eye(shape[-1])).astype(dtype))


def _spd(T, shape, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape)
    return T.tensor(a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1]))


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (2, 1, 3, 3), (0, 2, 2), (2, 0, 0)])
def test_inv(T, shape):
    a = _wellcond(T, shape)
    close(T.linalg.inv(a), np.linalg.inv(a.numpy()) if a.numel() else np.zeros(shape), rtol=1e-10, atol=1e-12)
    inv, info = T.linalg.inv_ex(a)
    close(inv, T.linalg.inv(a).numpy())
    same(info, np.zeros(shape[:-2], dtype=np.int32), dtype="int32")
    close(T.inverse(a), T.linalg.inv(a).numpy())


def test_inv_errors_and_singular(T):
    raises(RuntimeError, "square", T.linalg.inv, _r(T, (2, 3)))
    raises(RuntimeError, "", T.linalg.inv, _r(T, 3))
    raises(RuntimeError, "", T.linalg.inv, T.tensor([[1, 2], [3, 4]]))
    sing = T.tensor([[[1.0, 2.0], [2.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=T.float64)
    raises(T.linalg.LinAlgError, "singular", T.linalg.inv, sing)
    _, info = T.linalg.inv_ex(sing)
    same(info, [2, 0], dtype="int32")
    raises(T.linalg.LinAlgError, r"\(Batch element 0\)", T.linalg.inv_ex, sing, check_errors=True)
    out = T.empty(0, dtype=T.float64)
    T.linalg.inv(_wellcond(T, (2, 2)), out=out)
    close(out, np.linalg.inv(_wellcond(T, (2, 2)).numpy()))


def test_inv_out_of_another_dtype_is_refused(T):
    raises(RuntimeError, "dtype", T.linalg.inv, _wellcond(T, (2, 2)), out=T.empty(0, dtype=T.float32))


def test_inv_grad_and_complex(T):
    x = _wellcond(T, (2, 3, 3)).requires_grad_()
    assert T.autograd.gradcheck(T.linalg.inv, (x,))
    z = T.tensor(np.array([[2 + 1j, 1], [0.5j, 3 - 1j]]))
    close(T.linalg.inv(z), np.linalg.inv(z.numpy()))
    assert dtype_name(T.linalg.inv(_wellcond(T, (2, 2), dtype="float32"))) == "float32"


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (0, 3, 3), (2, 0, 0)])
def test_det_slogdet_logdet(T, shape):
    a = _wellcond(T, shape)
    na = a.numpy()
    close(T.linalg.det(a), np.linalg.det(na), rtol=1e-10)
    sign, logabs = T.linalg.slogdet(a)
    esign, elog = np.linalg.slogdet(na)
    close(sign, esign)
    close(logabs, elog, rtol=1e-10, atol=1e-12)
    close(T.det(a), np.linalg.det(na), rtol=1e-10)
    spd = _spd(T, shape) if a.numel() else a
    close(T.logdet(spd), np.linalg.slogdet(spd.numpy())[1], rtol=1e-10, atol=1e-12)


def test_det_special_values(T):
    sing = T.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=T.float64)
    same(T.linalg.det(sing), 0.0)
    sign, logabs = T.linalg.slogdet(sing)
    same(sign, 0.0)
    same(logabs, -np.inf)
    neg = T.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=T.float64)
    close(T.linalg.slogdet(neg).sign, -1.0)
    assert np.isnan(T.logdet(neg).item())
    assert T.logdet(sing).item() == -np.inf
    z = T.tensor(np.array([[1j, 0], [0, 2.0]]))
    sign, logabs = T.linalg.slogdet(z)
    close(sign, 1j)
    close(logabs, np.log(2.0))
    assert dtype_name(logabs) == "float64"
    raises(RuntimeError, "", T.linalg.det, _r(T, (2, 3)))
    raises(RuntimeError, "", T.linalg.det, T.tensor([[1, 2], [3, 4]]))


def test_det_grads(T):
    x = _wellcond(T, (2, 3, 3)).requires_grad_()
    assert T.autograd.gradcheck(T.linalg.det, (x,))
    assert T.autograd.gradcheck(lambda m: T.linalg.slogdet(m).logabsdet, (x,))
    # (at an exactly singular matrix PyTorch 2.13's det gradient is 0, not the cofactor matrix; not compared)


@pytest.mark.parametrize("a_shape,b_shape", [((3, 3), (3,)), ((3, 3), (3, 2)), ((2, 3, 3), (2, 3, 4)),
                                             ((2, 3, 3), (3, 4)), ((3, 3), (2, 3, 1)), ((2, 1, 3, 3), (4, 3, 2)),
                                             ((2, 3, 3), (2, 3)), ((0, 3, 3), (0, 3, 1))])
def test_solve(T, a_shape, b_shape):
    a, b = _wellcond(T, a_shape), _r(T, b_shape, 1)
    x = T.linalg.solve(a, b)
    na, nb = a.numpy(), b.numpy()
    vector = nb.ndim == 1 or (nb.ndim == na.ndim - 1 and nb.shape == na.shape[:-1])
    if vector:
        expect = np.linalg.solve(na, nb[..., None])[..., 0]
    else:
        expect = np.linalg.solve(na, nb)
    close(x, expect, rtol=1e-10, atol=1e-12)
    x2, info = T.linalg.solve_ex(a, b)
    close(x2, expect, rtol=1e-10, atol=1e-12)
    assert dtype_name(info) == "int32"


def test_solve_left_false_and_grad(T):
    a, b = _wellcond(T, (3, 3)), _r(T, (2, 3), 1)
    close(T.linalg.solve(a, b, left=False), b.numpy() @ np.linalg.inv(a.numpy()), rtol=1e-10)
    aa, bb = _wellcond(T, (2, 3, 3)).requires_grad_(), _r(T, (2, 3, 2), 1).requires_grad_()
    assert T.autograd.gradcheck(T.linalg.solve, (aa, bb))
    assert T.autograd.gradcheck(lambda m, v: T.linalg.solve(m, v, left=False), (aa, bb.mT.detach().requires_grad_()))


def test_solve_errors(T):
    a = _wellcond(T, (3, 3))
    raises(RuntimeError, "", T.linalg.solve, _r(T, (3, 2)), _r(T, (3, 1)))
    raises(RuntimeError, "", T.linalg.solve, a, _r(T, (4, 1)))
    raises(RuntimeError, "", T.linalg.solve, a, _r(T, (3, 1), dtype="float32"))
    raises(RuntimeError, "", T.linalg.solve, T.tensor([[1, 0], [0, 1]]), T.tensor([1, 1]))
    raises(RuntimeError, "", T.linalg.solve, _wellcond(T, (2, 3, 3)), _r(T, (3, 3, 1)))
    sing = T.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=T.float64)
    raises(T.linalg.LinAlgError, "singular", T.linalg.solve, sing, T.ones(2, dtype=T.float64))
    _, info = T.linalg.solve_ex(sing, T.ones(2, dtype=T.float64))
    same(info, 2, dtype="int32")


def test_solve_triangular(T):
    rng = np.random.default_rng(3)
    u = np.triu(rng.standard_normal((2, 3, 3))) + 3 * np.eye(3)
    b = rng.standard_normal((2, 3, 2))
    U, B = T.tensor(u), T.tensor(b)
    close(T.linalg.solve_triangular(U, B, upper=True), np.linalg.solve(u, b), rtol=1e-10)
    lo = np.swapaxes(u, -1, -2)
    close(T.linalg.solve_triangular(T.tensor(lo), B, upper=False), np.linalg.solve(lo, b), rtol=1e-10)
    # only the named triangle is read
    close(T.linalg.solve_triangular(T.tensor(u + np.tril(np.ones(3), -1) * 7), B, upper=True),
          np.linalg.solve(u, b), rtol=1e-10)
    unit = np.triu(u, 1) + np.eye(3)
    close(T.linalg.solve_triangular(U, B, upper=True, unitriangular=True), np.linalg.solve(unit, b), rtol=1e-10)
    bt = np.swapaxes(b, -1, -2)
    close(T.linalg.solve_triangular(U, T.tensor(bt), upper=True, left=False), bt @ np.linalg.inv(u), rtol=1e-10)
    raises(TypeError, "", T.linalg.solve_triangular, U, B)
    assert dtype_name(T.linalg.solve_triangular(U, T.tensor(b, dtype=T.float32), upper=True)) == "float64"
    raises(RuntimeError, "", T.linalg.solve_triangular, U, T.tensor(rng.standard_normal((2, 4, 2))), upper=True)
    x = U.clone().requires_grad_()
    y = B.clone().requires_grad_()
    assert T.autograd.gradcheck(lambda m, v: T.linalg.solve_triangular(m, v, upper=True), (x, y))
    old = T.triangular_solve(B, U, upper=True)
    close(old.solution, np.linalg.solve(u, b), rtol=1e-10)
    close(old.cloned_coefficient, u)


def test_cholesky_solve_and_inverse(T):
    a = _spd(T, (2, 3, 3))
    L = T.linalg.cholesky(a)
    b = _r(T, (2, 3, 2), 1)
    close(T.cholesky_solve(b, L), np.linalg.solve(a.numpy(), b.numpy()), rtol=1e-10)
    close(T.cholesky_solve(b, L.mT, upper=True), np.linalg.solve(a.numpy(), b.numpy()), rtol=1e-10)
    close(T.cholesky_inverse(L[0]), np.linalg.inv(a.numpy()[0]), rtol=1e-10)
    close(T.cholesky_inverse(L[0].mT, upper=True), np.linalg.inv(a.numpy()[0]), rtol=1e-10)
    raises(RuntimeError, "", T.cholesky_solve, b, L.float())
    Lg = L.clone().requires_grad_()
    bg = b.clone().requires_grad_()
    assert T.autograd.gradcheck(lambda v, m: T.cholesky_solve(v, m.tril()), (bg, Lg))


def test_tensorsolve_and_tensorinv(T):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 2, 3)) + 0
    a = (a.reshape(6, 6) + 4 * np.eye(6)).reshape(6, 2, 3)
    b = rng.standard_normal(6)
    close(T.linalg.tensorsolve(T.tensor(a), T.tensor(b)), np.linalg.tensorsolve(a, b), rtol=1e-10)
    a2 = np.moveaxis(a, 0, 2)  # (2, 3, 6)
    close(T.linalg.tensorsolve(T.tensor(a2), T.tensor(b), dims=(0, 1)), np.linalg.tensorsolve(a2, b, axes=(0, 1)),
          rtol=1e-10)
    sq = (rng.standard_normal((6, 6)) + 4 * np.eye(6)).reshape(2, 3, 6)
    close(T.linalg.tensorinv(T.tensor(sq), ind=2), np.linalg.tensorinv(sq, ind=2), rtol=1e-10)
    raises(RuntimeError, "", T.linalg.tensorinv, T.tensor(sq), ind=0)
    raises(RuntimeError, "", T.linalg.tensorinv, T.tensor(rng.standard_normal((2, 3, 5))), ind=2)
    raises(RuntimeError, "", T.linalg.tensorsolve, T.tensor(a), T.tensor(rng.standard_normal(5)))


def test_logdet_of_complex_matrices(T):
    for z in (np.array([[1j, 0], [0, 1.0]]), np.array([[-1 + 1j, 0], [0, 1.0]])):
        out = T.logdet(T.tensor(z))
        assert dtype_name(out) == "complex128"
        close(out, np.log(np.linalg.det(z)), rtol=1e-12)


def test_complex_logdet_and_slogdet_sign_gradients(T):
    """The sign of a complex determinant, e^(i arg det A), depends on A: its gradient i Im(s̄ dL/ds) A⁻ᴴ is part
    of logdet's (PyTorch's slogdet backward). Expectations: L = 0.7 Re ln det A + 0.3 Im ln det A, whose gradient
    is (0.7 + 0.3i) A⁻ᴴ; and L = Im s, whose is i Im(s̄ i) A⁻ᴴ = i Re(s) A⁻ᴴ."""
    z = np.array([[-1 + 1j, 0.5], [0.2, 1.0]])
    inverse_h = np.linalg.inv(z).conj().T
    a = T.tensor(z, requires_grad=True)
    y = T.logdet(a)
    (y.real * 0.7 + y.imag * 0.3).backward()
    close(a.grad, (0.7 + 0.3j) * inverse_h, rtol=1e-12)
    b = T.tensor(z, requires_grad=True)
    sign = T.linalg.slogdet(b).sign
    assert sign.requires_grad
    sign.imag.backward()
    s = np.linalg.det(z) / abs(np.linalg.det(z))
    close(b.grad, 1j * s.real * inverse_h, rtol=1e-12)
