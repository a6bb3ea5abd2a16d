"""Tests, comparisons and counts: bool and integer results without gradient, compared with
PyTorch (values, dtypes, shapes, errors)."""

import numpy as np
import pytest

import autograd
from tests.ops_reference import compare, raises_like

rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4))
INTS = rng.integers(-5, 6, (3, 4))
OTHER = rng.integers(-3, 4, 4)
SPECIAL = np.array([0.0, -1.0, 1.0, -0.0, np.inf, -np.inf, np.nan])
COUNTS = rng.integers(0, 6, 10)

TESTS = ["isnan", "isinf", "isposinf", "isneginf", "isfinite", "signbit", "logical_not"]
COMPARISONS = ["eq", "ne", "lt", "le", "gt", "ge", "greater", "less", "greater_equal", "less_equal", "not_equal",
               "logical_and", "logical_or", "logical_xor"]

TORCH_CASES = {
    **{f"{name}": (lambda m, x, name=name: getattr(m, name)(x), SPECIAL) for name in TESTS},
    **{f"{name}_method": (lambda m, x, name=name: getattr(x, name)(), SPECIAL) for name in TESTS},
    **{f"{name}": (lambda m, x, y, name=name: getattr(m, name)(x, y), INTS, OTHER) for name in COMPARISONS},
    **{f"{name}_method": (lambda m, x, y, name=name: getattr(x, name)(y), X, X[0]) for name in COMPARISONS},
    "eq_number": (lambda m, x: m.eq(x, 2), INTS),
    "any": (lambda m, x: m.any(x > 3), INTS),
    "any_dim": (lambda m, x: m.any(x > 3, 1), INTS),
    "all_dim_keepdim": (lambda m, x: m.all(x > -5, dim=0, keepdim=True), INTS),
    "all_ints": (lambda m, x: m.all(x), INTS),
    "count_nonzero": (lambda m, x: m.count_nonzero(x), INTS),
    "count_nonzero_dim": (lambda m, x: m.count_nonzero(x, dim=1), INTS),
    "count_nonzero_dims": (lambda m, x: x.count_nonzero(dim=(0, 1)), INTS),
    "isclose": (lambda m, x: m.isclose(x, x + 1e-9), X),
    "isclose_tolerances": (lambda m, x: m.isclose(x, x * 1.01, rtol=0.02, atol=0), X),
    "isclose_nan": (lambda m, x: m.isclose(x, x, equal_nan=True), SPECIAL),
    "allclose": (lambda m, x: m.allclose(x, x + 1e-9), X),
    "allclose_method_false": (lambda m, x: x.allclose(x + 1e-3), X),
    "equal": (lambda m, x: m.equal(x, x), X),
    "equal_false": (lambda m, x: m.equal(x, x[:2]), X),
    "bincount": (lambda m, c: m.bincount(c), COUNTS),
    "bincount_minlength": (lambda m, c: c.bincount(minlength=20), COUNTS),
    "bincount_weights": (lambda m, c, w: m.bincount(c, w), COUNTS, rng.standard_normal(10)),
    "bincount_float32_weights": (lambda m, c, w: m.bincount(c, w), COUNTS, rng.standard_normal(10).astype(np.float32)),
    "histc": (lambda m, x: m.histc(x, 5), X),
    "histc_range": (lambda m, x: x.histc(4, -1, 1), X),
    "histogram": (lambda m, x: m.histogram(x, 4), X),
    "histogram_range_density": (lambda m, x: m.histogram(x, 3, range=(-1.0, 1.0), density=True), X),
    "histogram_edges": (lambda m, x, e: m.histogram(x, e), X, np.array([-3.0, -1.0, 0.0, 2.0])),
    "is_floating_point": (lambda m, x: m.is_floating_point(x), X),
    "is_floating_point_ints": (lambda m, x: x.is_floating_point(), INTS),
    "is_nonzero": (lambda m, x: m.is_nonzero(x[0, 0]), X),
    "isin": (lambda m, a, b: m.isin(a, b), INTS, np.array([1, 3])),
    "isin_invert": (lambda m, a: m.isin(a, m.tensor([2, 5]), invert=True), INTS),
    "bitwise_and": (lambda m, a: m.bitwise_and(a, 3), INTS),
    "bitwise_or": (lambda m, a: a.bitwise_or(a * 2), INTS),
    "bitwise_xor_bools": (lambda m, a: m.bitwise_xor(a > 2, a > 4), INTS),
    "bitwise_not": (lambda m, a: m.bitwise_not(a), INTS),
    "bitwise_not_bools": (lambda m, a: (a > 3).bitwise_not(), INTS),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    compare(fn, *inputs, grad=False)


@pytest.mark.torch
def test_comparisons_of_tensors_that_require_grad_have_no_graph():
    x = autograd.tensor(X, requires_grad=True)
    for result in (autograd.isnan(x), autograd.eq(x, 0), autograd.any(x > 0, 0), autograd.isclose(x, x)):
        assert not result.requires_grad and result.dtype == np.bool_


ERRORS = {
    "bincount_negative": (lambda m, x: m.bincount(x[0]), "bincount"),
    "bincount_2d": (lambda m, x: m.bincount(x), "1-d"),
    "is_nonzero_many": (lambda m, x: m.is_nonzero(x), "ambiguous"),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_match_torch(name):
    fn, message = ERRORS[name]
    assert message in str(raises_like(fn, INTS))


def test_comparison_functions_cast_a_number_to_the_tensors_dtype(T):
    # as the operators do and PyTorch does: float32 0.1, and an integer wrapped into uint8 (300 is 44, -1 is 255)
    x = T.tensor([0.1, 0.2], dtype=T.float32)
    assert T.eq(x, 0.1).tolist() == [True, False] and x.le(0.1).tolist() == [True, False]
    assert x.ge(0.2).tolist() == [False, True] and x.ne(0.2).tolist() == [True, False]
    u = T.tensor([0, 44, 255], dtype=T.uint8)
    assert u.ne(-1).tolist() == [True, True, False] and T.gt(u, 300).tolist() == [False, False, True]
    # a 0-d tensor of a wider dtype of the same kind leaves the dtype alone (PyTorch's promotion), as a number does
    assert T.eq(x, T.tensor(0.1, dtype=T.float64)).tolist() == [True, False]
    assert T.eq(u, T.tensor(300)).tolist() == [False, True, False]
    # isin too, with the number on either side
    assert T.isin(x, 0.1).tolist() == [True, False] and T.isin(0.2, x).item() and T.isin(u, 300).tolist()[1]


@pytest.mark.parametrize("case", ["int out of range", "0-d float64"])
def test_comparison_operators_compare_in_pytorchs_common_dtype(case):
    if case == "int out of range":
        u = autograd.tensor([0, 44, 255], dtype=autograd.uint8)
        assert (u != -1).tolist() == [True, True, False] and (u > 300).tolist() == [False, False, True]
    else:
        x = autograd.tensor([0.1, 0.2], dtype=autograd.float32)
        assert (x == autograd.tensor(0.1, dtype=autograd.float64)).tolist() == [True, False]


def test_comparison_operators_leave_other_objects_to_python(T):
    """As PyTorch's: ``x == [1, 2]`` and ``x == "text"`` are False (not elementwise), ``x != None`` True,
    ``x < "a"`` a TypeError; a NumPy array is read as a tensor."""
    import numpy as np

    x = T.tensor([1.0, 2.0])
    assert (x == [1, 2]) is False and (x == (1, 2)) is False and (x == "text") is False
    assert (x == None) is False and (x != None) is True  # noqa: E711  (the comparison itself is tested)
    with pytest.raises(TypeError):
        x < "a"  # noqa: B015  (the TypeError is the point)
    assert (x == np.array([1.0, 3.0])).tolist() == [True, False]
    assert (3 < x).tolist() == [False, False] and (x >= np.float64(2.0)).tolist() == [False, True]
