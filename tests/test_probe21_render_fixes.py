"""What probe21_render fixed: linalg.solve's refusals of a right-hand side that does not fit A (a vector of the
wrong length, batch dims that do not broadcast) in PyTorch's words, where NumPy's gufunc and broadcasting errors
leaked through naming the wrong sizes."""

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
