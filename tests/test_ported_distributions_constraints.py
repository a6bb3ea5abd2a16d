"""PyTorch's test/distributions/test_constraints.py: which matrices are symmetric, positive
semidefinite and positive definite, and that biject_to / transform_to of each constraint map
onto it, with an inverse (a pseudo-inverse for transform_to) and a log-determinant of the right shape.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

EXAMPLES = [
    ("symmetric", False, [[2., 0], [2., 2]]),
    ("positive_semidefinite", False, [[2., 0], [2., 2]]),
    ("positive_definite", False, [[2., 0], [2., 2]]),
    ("symmetric", True, [[3., -5], [-5., 3]]),
    ("positive_semidefinite", False, [[3., -5], [-5., 3]]),
    ("positive_definite", False, [[3., -5], [-5., 3]]),
    ("symmetric", True, [[1., 2], [2., 4]]),
    ("positive_semidefinite", True, [[1., 2], [2., 4]]),
    ("positive_definite", False, [[1., 2], [2., 4]]),
    ("symmetric", True, [[[1., -2], [-2., 1]], [[2., 3], [3., 2]]]),
    ("positive_semidefinite", False, [[[1., -2], [-2., 1]], [[2., 3], [3., 2]]]),
    ("positive_definite", False, [[[1., -2], [-2., 1]], [[2., 3], [3., 2]]]),
    ("symmetric", True, [[[1., -2], [-2., 4]], [[1., -1], [-1., 1]]]),
    ("positive_semidefinite", True, [[[1., -2], [-2., 4]], [[1., -1], [-1., 1]]]),
    ("positive_definite", False, [[[1., -2], [-2., 4]], [[1., -1], [-1., 1]]]),
    ("symmetric", True, [[[4., 2], [2., 4]], [[3., -1], [-1., 3]]]),
    ("positive_semidefinite", True, [[[4., 2], [2., 4]], [[3., -1], [-1., 3]]]),
    ("positive_definite", True, [[[4., 2], [2., 4]], [[3., -1], [-1., 3]]]),
]

CONSTRAINTS = [
    ("real",), ("real_vector",), ("positive",),
    ("greater_than", [-10., -2, 0, 2, 10]), ("greater_than", 0), ("greater_than", 2), ("greater_than", -2),
    ("greater_than_eq", 0), ("greater_than_eq", 2), ("greater_than_eq", -2),
    ("less_than", [-10., -2, 0, 2, 10]), ("less_than", 0), ("less_than", 2), ("less_than", -2),
    ("unit_interval",),
    ("interval", [-4., -2, 0, 2, 4], [-3., 3, 1, 5, 5]), ("interval", -2, -1), ("interval", 1, 2),
    ("half_open_interval", [-4., -2, 0, 2, 4], [-3., 3, 1, 5, 5]), ("half_open_interval", -2, -1),
    ("half_open_interval", 1, 2),
    ("simplex",), ("corr_cholesky",), ("lower_cholesky",), ("positive_definite",),
]


def build_constraint(T, name, args):
    constraint = getattr(T.distributions.constraints, name)
    if not args:
        return constraint
    return constraint(*(T.tensor(x, dtype=T.float64) if isinstance(x, list) else x for x in args))


def argument(T, name):
    """x ~ N(0, 1) of shape (5, 5), or (6, 6) for corr_cholesky (6 = D(D - 1)/2 entries, D = 4)."""
    n = 6 if name == "corr_cholesky" else 5
    return T.tensor(np.random.default_rng(0).standard_normal((n, n)))


@pytest.mark.parametrize("name, result, value", EXAMPLES)
def test_constraint(T, name, result, value):
    assert bool(getattr(T.distributions.constraints, name).check(T.tensor(value, dtype=T.float64)).all()) == result


@pytest.mark.parametrize("name, args", [(c[0], c[1:]) for c in CONSTRAINTS])
def test_biject_to(T, name, args):
    constraint = build_constraint(T, name, args)
    try:
        t = T.distributions.biject_to(constraint)
    except NotImplementedError:
        pytest.skip("`biject_to` not implemented.")
    assert t.bijective, f"biject_to({constraint}) is not bijective"
    x = argument(T, name)
    y = t(x)
    assert bool(constraint.check(y).all()), f"Failed to biject_to({constraint})"
    assert T.allclose(x, t.inv(y)), f"Error in biject_to({constraint}) inverse"
    j = t.log_abs_det_jacobian(x, y)
    assert tuple(j.shape) == tuple(x.shape[:x.dim() - t.domain.event_dim])


@pytest.mark.parametrize("name, args", [(c[0], c[1:]) for c in CONSTRAINTS])
def test_transform_to(T, name, args):
    constraint = build_constraint(T, name, args)
    t = T.distributions.transform_to(constraint)
    x = argument(T, name)
    y = t(x)
    assert bool(constraint.check(y).all()), f"Failed to transform_to({constraint})"
    assert T.allclose(y, t(t.inv(y))), f"Error in transform_to({constraint}) pseudoinverse"
