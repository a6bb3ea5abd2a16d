"""``backend.ufunc_at``'s path for whole rows picked by one 1-D index (an embedding's gradient, ``index_add_``): the
same updates in the same order as NumPy's ``ufunc.at`` on the rows, bit for bit, for every case it takes and every
case it hands back."""

import numpy as np
import pytest

from autograd.backend import ufunc_at, xp

pytestmark = pytest.mark.skipif(xp is not np, reason="NumPy's own ufunc.at paths: another array module runs its own")


def _both(name, array, positions, values):
    expected = array.copy()
    getattr(np, name).at(expected, positions, values)
    ufunc_at(name, array, positions, values)
    return array, expected


@pytest.mark.parametrize("name", ["add", "maximum", "minimum", "multiply"])
def test_rows_updated_as_numpy_updates_them(name):
    rng = np.random.default_rng(0)
    positions = rng.integers(-7, 7, 500)  # (repeats, and negative indices counting from the end)
    for shape, values in [((7, 5), rng.standard_normal((500, 5)).astype(np.float32)),
                          ((7, 3, 2), rng.standard_normal((500, 3, 2))),
                          ((7, 4), rng.standard_normal(4)),  # (one row for all: broadcast)
                          ((7, 4), 2.5)]:
        array = rng.standard_normal(shape).astype(np.asarray(values).dtype if np.ndim(values) else np.float64)
        result, expected = _both(name, array, positions, values)
        assert np.array_equal(result, expected)


def test_float32_sums_keep_numpys_order_of_additions():
    # sequential float32 additions, index after index: the order PyTorch's index_add_ adds in too
    rng = np.random.default_rng(1)
    positions = rng.integers(0, 3, 10_000)
    values = (rng.standard_normal((10_000, 8)) * 1e4).astype(np.float32)
    result, expected = _both("add", np.zeros((3, 8), np.float32), positions, values)
    assert np.array_equal(result, expected)
    by_loop = np.zeros((3, 8), np.float32)
    for position, row in zip(positions, values, strict=True):
        by_loop[position] += row
    assert np.array_equal(result, by_loop)


def test_other_cases_go_to_numpys_own():
    rng = np.random.default_rng(2)
    transposed = rng.standard_normal((4, 6)).T  # (not row-major)
    result, expected = _both("add", transposed, np.array([0, 5, 5]), np.ones((3, 4)))
    assert np.array_equal(result, expected)
    pairs = rng.standard_normal((3, 3))
    result, expected = _both("add", pairs, (np.array([0, 0, 2]), np.array([1, 1, 0])), np.array([1.0, 2.0, 3.0]))
    assert np.array_equal(result, expected)
    with pytest.raises(IndexError):
        ufunc_at("add", np.zeros((3, 2)), np.array([0, 3]), np.ones((2, 2)))
    with pytest.raises(IndexError):
        ufunc_at("add", np.zeros((3, 2)), np.array([-4]), np.ones((1, 2)))


@pytest.mark.parametrize("name", ["add", "maximum"])
def test_any_index_on_an_array_not_much_larger_than_its_values(name):
    # a gather's backward along a dim (slices beside an index array), boolean masks, several index arrays, a number
    # added at each position: numbered elements, indexed as the array would be, in the same order
    rng = np.random.default_rng(3)
    array = rng.standard_normal((4, 6, 5))
    cases = [((slice(None), np.array([0, 2, 2, 5, -1, 0])), rng.standard_normal((4, 6, 5))),
             ((slice(None), slice(None), rng.integers(0, 5, 9)), rng.standard_normal((4, 6, 9))),
             ((rng.integers(0, 4, 30), rng.integers(0, 6, 30)), rng.standard_normal((30, 5))),
             (rng.standard_normal((4, 6, 5)) > 0, 1.5),
             ((slice(1, 3), np.array([1, 1, 1])), rng.standard_normal((2, 3, 5)))]
    for positions, values in cases:
        result, expected = _both(name, array.copy(), positions, values)
        assert np.array_equal(result, expected)
    with pytest.raises(IndexError):
        ufunc_at(name, array.copy(), (slice(None), np.array([0, 6])), np.ones((4, 2, 5)))
