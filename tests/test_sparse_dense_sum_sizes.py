"""Dense-sparse sums as PyTorch's: dense + sparse (and -) is dense, of the sparse tensor's size only (PyTorch's
dense-sparse addition does not broadcast: a number or a row is refused), and sparse + a number is refused both
ways round (add(sparse, dense))."""

import numpy as np
import pytest

BROADCAST = r"add: expected 'self' and 'other' to have same size, but self has size \[{}\] while other has size " \
            r"\[2, 2\] \(FYI: dense-sparse addition does not currently support broadcasting\)"
SPARSE_FIRST = r"add\(sparse, dense\) is not supported. Use add\(dense, sparse\) instead."


def _sparse(T):
    return T.sparse_coo_tensor(T.tensor([[0, 1], [1, 0]]), T.tensor([1.0, 2.0]), (2, 2))


REFUSED = {
    "row + S": (lambda T, S: T.ones(2) + S, BROADCAST.format("2")),
    "row - S": (lambda T, S: T.ones(2) - S, BROADCAST.format("2")),
    "number - S": (lambda T, S: 1 - S, BROADCAST.format("")),
    "number + S": (lambda T, S: 1 + S, SPARSE_FIRST),
    "S + number": (lambda T, S: S + 1, SPARSE_FIRST),
    "add_ of a row": (lambda T, S: T.ones(1, 2).add_(S), BROADCAST.format("1, 2")),
    "sub of a row": (lambda T, S: T.ones(2).sub(S), BROADCAST.format("2")),
    "add with alpha of a row": (lambda T, S: T.add(T.ones(2), S, alpha=2), BROADCAST.format("2")),
}

COMPUTED = {
    "dense + S": (lambda T, S: T.ones(2, 2) + S, [[1, 2], [3, 1]]),
    "dense - S": (lambda T, S: T.ones(2, 2) - S, [[1, 0], [-1, 1]]),
    "dense.add_(S)": (lambda T, S: T.ones(2, 2).add_(S), [[1, 2], [3, 1]]),
    "add with alpha": (lambda T, S: T.add(T.ones(2, 2), S, alpha=2), [[1, 3], [5, 1]]),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_as_pytorch(T, case):
    f, message = REFUSED[case]
    with pytest.raises(RuntimeError, match=message):
        f(T, _sparse(T))


@pytest.mark.parametrize("case", COMPUTED)
def test_computed_dense_as_pytorch(T, case):
    f, expected = COMPUTED[case]
    result = f(T, _sparse(T))
    assert not result.is_sparse
    np.testing.assert_array_equal(result.numpy(), expected)
