"""Focused tests for what the finance programs (tests/test_programs_probe19_finance_*.py) found, on chainrule
(`T` = autograd) and on PyTorch where installed."""

import numpy as np
import pytest

from tests.ported import raises


@pytest.mark.parametrize("a_shape, b_shape, which", [((4, 2), (3,), -1), ((4, 2), (3, 2), -2),
                                                      ((2, 4, 2), (2, 3), -2), ((2, 4, 2), (2, 3, 1), -2),
                                                      ((2, 4, 2), (2, 3, 3), -2)])
def test_lstsq_names_the_rows_that_do_not_match(T, a_shape, b_shape, which):
    # a regression of returns on factors with one return too many: PyTorch's own words, not a product's
    a, b = T.ones(a_shape, dtype=T.float64), T.ones(b_shape, dtype=T.float64)
    words = rf"torch\.linalg\.lstsq: input\.size\(-2\) should match other\.size\({which}\)"
    raises(RuntimeError, words, T.linalg.lstsq, a, b)


def test_lstsq_of_a_batch_of_regressions(T):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3, 10, 2)), rng.standard_normal((3, 10))
    solution = T.linalg.lstsq(T.tensor(X), T.tensor(y)).solution
    assert tuple(solution.shape) == (3, 2)
    expected = np.stack([np.linalg.lstsq(X[i], y[i], rcond=None)[0] for i in range(3)])
    np.testing.assert_allclose(solution.numpy(), expected, rtol=1e-10)
