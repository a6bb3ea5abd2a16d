"""quantile and nanquantile: values by hand, gradients by finite differences, and PyTorch's
results, shapes, gradients and errors across dims, keepdim, q lists, NaNs and interpolations."""

import itertools

import numpy as np
import pytest

import autograd
from tests.ops_reference import compare, raises_like

INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def test_values_by_hand():
    x = autograd.tensor([3.0, 1.0, 4.0, 1.5, 9.0])  # sorted: 1, 1.5, 3, 4, 9; rank of q = 0.3 is 1.2
    expected = {"linear": 1.5 + 0.2 * 1.5, "lower": 1.5, "higher": 3.0, "midpoint": 2.25, "nearest": 1.5}
    for interpolation, value in expected.items():
        assert autograd.quantile(x, 0.3, interpolation=interpolation).item() == pytest.approx(value)
    np.testing.assert_allclose(x.quantile(autograd.tensor([0.0, 0.5, 1.0])).numpy(), [1.0, 3.0, 9.0])
    rows = autograd.tensor([[1.0, 2.0, 3.0], [10.0, 30.0, 20.0]])
    assert rows.quantile(0.5, dim=1, keepdim=True).shape == (2, 1)
    np.testing.assert_array_equal(rows.quantile(0.5, dim=1).numpy(), [2.0, 20.0])
    assert autograd.quantile(rows, autograd.tensor([0.5, 1.0]), dim=0).shape == (2, 3)


def test_nan_handling():
    x = autograd.tensor([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]])
    assert np.isnan(x.quantile(0.5, dim=1).numpy()).all()  # a NaN in the slice: NaN
    np.testing.assert_array_equal(x.nanquantile(0.5, dim=1).numpy(), [2.0, np.nan])  # NaNs skipped


def test_gradient_reaches_the_elements_read():
    x = autograd.tensor([3.0, 1.0, 4.0, 1.5, 9.0], dtype=autograd.float64, requires_grad=True)
    x.quantile(0.3).backward()  # 0.8 · 1.5 + 0.2 · 3
    np.testing.assert_allclose(x.grad.numpy(), [0.2, 0.0, 0.0, 0.8, 0.0])
    values = np.random.default_rng(0).standard_normal((3, 4))
    for interpolation in INTERPOLATIONS:
        assert autograd.gradcheck(
            lambda t, how=interpolation: autograd.quantile(t, autograd.tensor([0.2, 0.75], dtype=autograd.float64),
                                                           dim=1, interpolation=how),
            (autograd.tensor(values, requires_grad=True),))


def test_errors():
    x = autograd.tensor([1.0, 2.0])
    for call, message in ((lambda: x.quantile(1.5), "range"), (lambda: autograd.tensor([1, 2]).quantile(0.5), "float"),
                          (lambda: x.quantile(0.5, interpolation="cubic"), "interpolation"),
                          (lambda: autograd.zeros(0).quantile(0.5), "non-empty"),
                          (lambda: x.quantile(autograd.tensor([[0.5]])), "1D"),
                          (lambda: x.quantile(autograd.tensor([0.5], dtype=autograd.float64)), "dtype")):
        with pytest.raises(RuntimeError, match=message):
            call()


CASES = list(itertools.product([((5,), None), ((3, 4), 1)], INTERPOLATIONS, (False, True), ("quantile", "nanquantile")))
CASES += list(itertools.product([((2, 3, 4), 0), ((2, 3, 4), None)], ("linear",), (False, True),
                                ("quantile", "nanquantile")))


@pytest.mark.torch
@pytest.mark.parametrize("shape_and_dim, interpolation, keepdim, name", CASES)
def test_matches_pytorch(shape_and_dim, interpolation, keepdim, name):
    shape, dim = shape_and_dim
    values = np.random.default_rng(1).standard_normal(shape)
    values.flat[1] = np.nan
    for q in (0.37, np.array([0.0, 0.5, 1.0])):
        compare(lambda m, x, q: getattr(m, name)(x, q, dim=dim, keepdim=keepdim, interpolation=interpolation),
                values, q, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
def test_errors_match_pytorch():
    raises_like(lambda m, x: m.quantile(x, 1.5), np.ones(3))
    raises_like(lambda m, x: m.quantile(x, 0.5), np.ones(3, dtype=np.int64))
    raises_like(lambda m, x: m.quantile(x, 0.5, interpolation="cubic"), np.ones(3))
