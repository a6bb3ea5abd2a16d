"""A descending sort orders the extremes as PyTorch: every NaN before +inf whatever their input order (sorting.py's
key negated the values, so +inf and NaN both keyed -inf and kept input order), and an integer type's minimum last
(its negation overflowed back to the minimum, which sorted it first), in sort, argsort and topk, stable or not;
the gradient of the sorted values goes back to the elements sorted there."""

import math

import numpy as np
import pytest

nan, inf = math.nan, math.inf


@pytest.mark.parametrize("stable", [False, True])
def test_descending_sort_puts_nan_before_inf(T, stable):
    x = T.tensor([inf, nan, 1.0, -0.0, inf, nan, -inf, 0.0], requires_grad=True)
    values, indices = T.sort(x, descending=True, stable=stable)
    assert indices.tolist() == [1, 5, 0, 4, 2, 3, 7, 6]
    np.testing.assert_array_equal(values.detach().numpy(), [nan, nan, inf, inf, 1.0, -0.0, 0.0, -inf])
    assert T.argsort(x, descending=True, stable=stable).tolist() == [1, 5, 0, 4, 2, 3, 7, 6]
    (values * T.arange(8.0)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 0.0, 4.0, 5.0, 3.0, 1.0, 7.0, 6.0])


def test_descending_sort_of_rows_with_and_without_nan(T):
    x = T.tensor([[inf, nan, 2.0, inf], [3.0, inf, 1.0, 2.0], [nan, inf, nan, -inf]], dtype=T.float32)
    assert x.sort(dim=1, descending=True, stable=True).indices.tolist() == [[1, 0, 3, 2], [1, 0, 3, 2],
                                                                           [0, 2, 1, 3]]
    assert x.t().sort(dim=0, descending=True, stable=True).indices.t().tolist() == [[1, 0, 3, 2], [1, 0, 3, 2],
                                                                                  [0, 2, 1, 3]]
    assert x.topk(2, dim=1).indices.tolist() == [[1, 3], [1, 0], [0, 2]]  # (of tied infs, nth_element's)


def test_descending_sort_of_more_than_16_with_nan_and_inf(T):
    x = T.tensor([inf, nan, 1.0] * 7)
    values, indices = x.sort(descending=True)
    assert math.isnan(values[6].item()) and values[7].item() == inf
    assert sorted(indices[:7].tolist()) == list(range(1, 21, 3))
    assert x.sort(descending=True, stable=True).indices.tolist() == (list(range(1, 21, 3)) + list(range(0, 21, 3))
                                                                      + list(range(2, 21, 3)))


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
def test_descending_sort_puts_the_integer_minimum_last(T, dtype):
    info = T.iinfo(getattr(T, dtype))
    x = T.tensor([3, info.min, 0, info.max, info.min + 1], dtype=getattr(T, dtype))
    assert x.sort(descending=True).indices.tolist() == [3, 0, 2, 4, 1]
    assert x.argsort(descending=True, stable=True).tolist() == [3, 0, 2, 4, 1]
    assert x.topk(5).indices.tolist() == [3, 0, 2, 4, 1]
    assert x.topk(2).indices.tolist() == [3, 0]
