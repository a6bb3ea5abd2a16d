"""What probe21_render fixed: refusals in PyTorch's words where NumPy's errors leaked or named the wrong sizes.
linalg.solve's right-hand side that does not fit A (a vector of the wrong length); batch dims that do not broadcast
in linalg.solve, solve_triangular, lu_solve, cholesky_solve, lstsq, cdist and linalg.cross (the message named the
matrices' last dims, or NumPy's broadcast_shapes)."""

import numpy as np
import pytest


@pytest.mark.parametrize("a_shape, b_shape, words", [
    ((3, 3), (4,), "(3x3 and 4x1)"),
    ((2, 3, 3), (4,), "(3x3 and 4x1)"),
    ((3, 3), (0,), "(3x3 and 0x1)"),
])
def test_solve_refuses_a_vector_of_the_wrong_length(T, a_shape, b_shape, words):
    A = T.ones(*a_shape, dtype=T.float64) + T.eye(a_shape[-1], dtype=T.float64)
    with pytest.raises(RuntimeError, match=r"linalg\.solve: Incompatible shapes of A and B for the equation AX = B "
                                           + words.replace("(", r"\(").replace(")", r"\)")):
        T.linalg.solve(A, T.ones(*b_shape, dtype=T.float64))


@pytest.mark.parametrize("left", [True, False])
def test_solve_refuses_batches_that_do_not_broadcast_naming_them(T, left):
    A = T.ones(2, 3, 3, dtype=T.float64) + T.eye(3, dtype=T.float64)
    B = T.ones(5, 3, 2, dtype=T.float64) if left else T.ones(5, 2, 3, dtype=T.float64)
    with pytest.raises(RuntimeError, match=r"The size of tensor a \(5\) must match the size of tensor b \(2\) at "
                                           r"non-singleton dimension 0"):
        T.linalg.solve(A, B, left=left)


def test_solve_still_broadcasts_batches_and_solves_vectors(T):
    A = T.tensor(np.array([[[2.0, 1.0], [1.0, 3.0]]] * 4).reshape(4, 1, 2, 2))
    B = T.tensor(np.arange(12.0).reshape(3, 2, 2))
    X = T.linalg.solve(A, B)
    assert tuple(X.shape) == (4, 3, 2, 2)
    np.testing.assert_allclose((A @ X).numpy(), np.broadcast_to(B.numpy(), (4, 3, 2, 2)), rtol=1e-12)
    x = T.linalg.solve(A[0, 0], T.tensor([1.0, 2.0], dtype=T.float64))
    np.testing.assert_allclose(x.numpy(), np.linalg.solve([[2.0, 1.0], [1.0, 3.0]], [1.0, 2.0]), rtol=1e-12)


def _factor(T, *shape):
    return T.ones(*shape, dtype=T.float64) + 3 * T.eye(shape[-1], dtype=T.float64)


# (each: batch dims (2,) against (5,); PyTorch's sentence names them in its own order)
UNBROADCASTABLE = {
    "solve_triangular": (lambda T: T.linalg.solve_triangular(_factor(T, 2, 3, 3).triu(), T.ones(5, 3, 2,
                                                             dtype=T.float64), upper=True), (5, 2)),
    "solve_triangular_right": (lambda T: T.linalg.solve_triangular(_factor(T, 2, 3, 3).triu(), T.ones(5, 2, 3,
                                                                   dtype=T.float64), upper=True, left=False), (5, 2)),
    "lu_solve": (lambda T: T.linalg.lu_solve(*T.linalg.lu_factor(_factor(T, 2, 3, 3)),
                                             T.ones(5, 3, 2, dtype=T.float64)), (5, 2)),
    "cholesky_solve": (lambda T: T.cholesky_solve(T.ones(5, 3, 2, dtype=T.float64),
                                                  T.linalg.cholesky(_factor(T, 2, 3, 3))), (5, 2)),
    "lstsq": (lambda T: T.linalg.lstsq(_factor(T, 2, 3, 3), T.ones(5, 3, 2, dtype=T.float64)), (2, 5)),
    "cdist": (lambda T: T.cdist(T.ones(2, 4, 3, dtype=T.float64), T.ones(5, 4, 3, dtype=T.float64)), (2, 5)),
    "cdist_by_products": (lambda T: T.cdist(T.ones(2, 30, 3, dtype=T.float64), T.ones(5, 30, 3, dtype=T.float64)),
                          (2, 5)),
    "linalg_cross": (lambda T: T.linalg.cross(T.ones(2, 3, dtype=T.float64), T.ones(5, 3, dtype=T.float64)), (2, 5)),
}


@pytest.mark.parametrize("op", sorted(UNBROADCASTABLE))
def test_batched_solvers_and_distances_name_the_batch_sizes_that_do_not_broadcast(T, op):
    call, (a, b) = UNBROADCASTABLE[op]
    with pytest.raises(RuntimeError, match=rf"^The size of tensor a \({a}\) must match the size of tensor b \({b}\) "
                                           r"at non-singleton dimension 0$"):
        call(T)


def test_batches_that_broadcast_still_do(T):
    A = _factor(T, 2, 1, 3, 3)
    B = T.ones(4, 3, 2, dtype=T.float64)
    expected = np.linalg.solve(np.broadcast_to(A.numpy(), (2, 4, 3, 3)), np.broadcast_to(B.numpy(), (2, 4, 3, 2)))
    L = T.linalg.cholesky(A)
    for X in (T.linalg.lu_solve(*T.linalg.lu_factor(A), B), T.cholesky_solve(B, L),
              T.linalg.lstsq(A, B.expand(2, 4, 3, 2)).solution):
        np.testing.assert_allclose(X.numpy(), expected, rtol=1e-10)
    U = A.triu()
    by_numpy = np.linalg.solve(np.broadcast_to(U.numpy(), (2, 4, 3, 3)), np.broadcast_to(B.numpy(), (2, 4, 3, 2)))
    np.testing.assert_allclose(T.linalg.solve_triangular(U, B, upper=True).numpy(), by_numpy, rtol=1e-10)
    assert tuple(T.cdist(T.ones(2, 1, 4, 3), T.ones(5, 6, 3)).shape) == (2, 5, 4, 6)


# ----------------------------------------------------------------------------------------------
# Found by probe21_render, mended with its proposed diffs (autograd/errors.py, autograd/primitive.py)
# ----------------------------------------------------------------------------------------------


def test_three_shapes_that_do_not_broadcast_name_two_different_sizes():
    import autograd

    with pytest.raises(RuntimeError, match=r"The size of tensor a \(3\) must match the size of tensor b \(4\) at "
                                           r"non-singleton dimension 0"):
        autograd.where(autograd.zeros(3, 2) > 0, autograd.zeros(3, 2), autograd.zeros(4, 2))
    with pytest.raises(RuntimeError, match=r"tensor a \(3\) must match the size of tensor b \(4\)"):
        autograd.lerp(autograd.zeros(3, 2), autograd.zeros(3, 2), autograd.zeros(4, 2))


def test_matmul_names_the_batch_sizes_that_do_not_broadcast():
    import autograd

    with pytest.raises(RuntimeError, match=r"The size of tensor a \(2\) must match the size of tensor b \(5\) at "
                                           r"non-singleton dimension 0"):
        autograd.zeros(2, 3, 3) @ autograd.zeros(5, 3, 2)
