"""torch.cholesky (and Tensor.cholesky), torch.triangular_solve and torch.lu_solve warn that they are deprecated,
in PyTorch's words (its typos too), and still give linalg's answers."""

import pytest


@pytest.mark.parametrize("call, match, expected", [
    (lambda T, A, b: T.cholesky(A), r"(?s)torch.cholesky is deprecated in favor of torch.linalg.cholesky .*\n"
     r"U = torch.cholesky\(A, upper=True\)\nshould be replaced with\nU = torch.linalg.cholesky\(A\).mH",
     [[2.0, 0.0], [1.0, 1.0]]),
    (lambda T, A, b: A.cholesky(upper=True), "torch.cholesky is deprecated", [[2.0, 1.0], [0.0, 1.0]]),
    (lambda T, A, b: T.triangular_solve(b, T.linalg.cholesky(A), upper=False).solution,
     r"(?s)torch.triangular_solve is deprecated in favor of torch.linalg.solve_triangularand will be removed .*\n"
     r"X = torch.triangular_solve\(B, A\).solution\nshould be replaced with\nX = torch.linalg.solve_triangular\(A, B\)",
     [[1.0], [2.0]]),
    (lambda T, A, b: T.lu_solve(b, *T.linalg.lu_factor(A)),
     r"(?s)torch.lu_solve is deprecated in favor of torch.linalg.lu_solveand will be removed .*\n"
     r"Note that torch.linalg.lu_solve has its arguments reversed", [[-0.5], [2.0]]),
])
def test_deprecated_solvers_warn(T, warn_always, call, match, expected):
    A = T.tensor([[4.0, 2.0], [2.0, 2.0]])
    b = T.tensor([[2.0], [3.0]])
    with pytest.warns(UserWarning, match=match):
        result = call(T, A, b)
    assert result.tolist() == expected


def test_assert_allclose_and_typed_storage_warn_as_pytorch(T):
    with pytest.warns(FutureWarning, match="assert_allclose\\(\\)` is deprecated since 1.12"):
        T.testing.assert_allclose(T.ones(2), [1.0, 1.00001])  # float32's default tolerances: 1e-4 relative
    with pytest.warns(FutureWarning), pytest.raises(AssertionError):
        T.testing.assert_allclose(T.ones(2), [1.0, 1.01])
    with pytest.warns(FutureWarning):
        T.testing.assert_allclose(T.tensor([float("nan")]), [float("nan")])  # NaN equal to NaN by default
    with pytest.warns(UserWarning, match="TypedStorage is deprecated"):
        T.ones(2).storage()
