"""gather and the scatters by the elements' row-major numbers (autograd/ops/indexing.py's ``_elements``): the same
values bit for bit as the open grid of positions they replaced (``np.take_along_axis``, ``np.add.at`` and the other
``ufunc.at`` updates on a tuple of index arrays), in the same order of updates, over float16 (accumulated in float32),
float32 and float64, non-contiguous inputs, repeated positions, ±0, ±inf and NaN, every dim and empty indices; their
refusals in the same words; scatter_reduce's mean divided in float32 as through float64."""

import numpy as np
import pytest

import autograd
from autograd.ops.indexing import _elements

RNG = np.random.default_rng(35)


def _grid(index, dim):
    """The open grid of positions the ops used before: each axis's positions alone, index at dim."""
    grids = [np.arange(n).reshape((1,) * d + (n,) + (1,) * (index.ndim - d - 1)) for d, n in enumerate(index.shape)]
    grids[dim] = index
    return tuple(grids)


def _values(shape, dtype):
    x = (RNG.standard_normal(shape) * 3).astype(dtype)
    flat = x.reshape(-1)
    for special in (np.nan, np.inf, -np.inf, -0.0, 0.0) if flat.size else ():
        flat[RNG.integers(0, flat.size, max(flat.size // 40, 1))] = special
    return x


def _same(ours, expected):
    """The same values, -0.0 and its sign included; a NaN made by an invalid update (inf - inf) may differ in its sign
    bit only (NumPy's vectorised add makes x86's default NaN, its element-wise ufunc.at loop another)."""
    numbers = ~np.isnan(expected)
    return ours.dtype == expected.dtype and ours.shape == expected.shape and np.array_equal(
        np.isnan(ours), ~numbers) and ours[numbers].tobytes() == expected[numbers].tobytes()


CASES = [((6, 40), 1, (6, 90)), ((40, 7), 0, (90, 5)), ((3, 4, 30), -1, (2, 4, 50)), ((3, 30, 4), 1, (3, 60, 2)),
         ((30,), 0, (70,)), ((5, 6), 1, (0, 6))]


@pytest.mark.parametrize("shape, dim, index_shape", CASES)
def test_elements_name_what_the_open_grid_names_in_its_order(shape, dim, index_shape):
    index = RNG.integers(0, shape[dim], index_shape)
    numbers = np.arange(np.prod(shape)).reshape(shape)
    axis = dim % len(shape)
    assert np.array_equal(_elements(index, axis, shape), numbers[_grid(index, axis)].reshape(-1))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("shape, dim, index_shape", CASES)
@pytest.mark.parametrize("transposed", [False, True])
def test_gather_and_scatter_add_equal_the_open_grids_bit_for_bit(shape, dim, index_shape, dtype, transposed):
    x = _values(shape[::-1], dtype).T if transposed else _values(shape, dtype)  # (a non-contiguous x too)
    axis = dim % len(shape)
    index = RNG.integers(0, shape[axis], index_shape)  # (many repeated positions)
    src = _values(index_shape, dtype)
    gathered = autograd.tensor(x).gather(dim, autograd.tensor(index)).numpy()
    assert gathered.tobytes() == np.take_along_axis(x[tuple(slice(0, n) if d != axis else slice(None)
                                                            for d, n in enumerate(index_shape))], index,
                                                    axis=axis).tobytes()
    expected = x.astype(np.float32) if dtype == "float16" else x.copy()  # (float16 accumulated in float32)
    with np.errstate(invalid="ignore"):  # (inf - inf in the reference, as in the op)
        np.add.at(expected, _grid(index, axis), src.astype(expected.dtype))
    added = autograd.tensor(x).scatter_add(dim, autograd.tensor(index), autograd.tensor(src)).numpy()
    assert added.tobytes() == expected.astype(dtype).tobytes()
    written = x.copy()
    written[_grid(index, axis)] = src
    assert autograd.tensor(x).scatter(dim, autograd.tensor(index), autograd.tensor(src)).numpy().tobytes() == \
        written.tobytes()


@pytest.mark.parametrize("reduce", ["sum", "mean", "amax", "amin", "prod"])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_scatter_reduce_equals_the_open_grids_rule(reduce, include_self, dtype):
    x, index, src = _values((20, 30), dtype), RNG.integers(0, 30, (20, 50)), _values((20, 50), dtype)
    wide = np.float32 if dtype == "float16" else dtype
    expected = x.astype(wide)
    terms = np.zeros(x.shape, np.int64)
    np.add.at(terms, _grid(index, 1), 1)
    if not include_self:
        expected[terms > 0] = {"sum": 0, "mean": 0, "prod": 1, "amax": -np.inf, "amin": np.inf}[reduce]
    ufunc = {"sum": np.add, "mean": np.add, "prod": np.multiply, "amax": np.maximum, "amin": np.minimum}[reduce]
    with np.errstate(invalid="ignore", over="ignore"):  # (inf - inf, inf · 0 in the reference, as in the op)
        ufunc.at(expected, _grid(index, 1), src.astype(wide))
    expected = expected.astype(dtype)
    if reduce == "mean":  # (the quotient through float64, as before)
        expected = (expected / np.maximum(terms + include_self, 1)).astype(dtype)
    y = autograd.tensor(x).scatter_reduce(1, autograd.tensor(index), autograd.tensor(src), reduce,
                                          include_self=include_self)
    assert y.numpy().tobytes() == expected.tobytes()


def test_gradients_with_repeated_positions_accumulate():
    x = autograd.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    src = autograd.tensor([[10.0, 20.0, 30.0, 40.0]], requires_grad=True)
    index = autograd.tensor([[2, 0, 2, 2]])
    (grad_x,) = autograd.grad((x.gather(1, index) * autograd.tensor([[1.0, 2.0, 3.0, 4.0]])).sum(), x)
    assert grad_x.tolist() == [[2.0, 0.0, 8.0]]
    y = x.scatter_reduce(1, index, src, "mean")
    assert y.tolist()[0] == pytest.approx([(1 + 20) / 2, 2.0, (3 + 10 + 30 + 40) / 4])
    grad_x, grad_src = autograd.grad(y.sum(), (x, src))
    assert grad_x.tolist() == [[0.5, 1.0, 0.25]] and grad_src.tolist() == [[0.25, 0.5, 0.25, 0.25]]
    y = x.detach().requires_grad_().scatter_add(1, index, src)
    assert y.tolist() == [[21.0, 2.0, 83.0]]


def test_refusals_keep_their_words():
    x = autograd.zeros(3, 4)
    with pytest.raises(RuntimeError, match="index 4 is out of bounds for dimension 1 with size 4"):
        x.gather(1, autograd.tensor([[0, 4]]))
    with pytest.raises(RuntimeError, match="index -1 is out of bounds for dimension 0 with size 3"):
        x.scatter_add(0, autograd.tensor([[-1, 0]]), autograd.ones(1, 2))
    with pytest.raises(IndexError, match="index out of range in self"):
        x.index_select(0, autograd.tensor([3]))
    with pytest.raises(RuntimeError, match="index -5 is out of bounds for dimension 0 with size 3"):
        autograd.zeros(3).index_add(0, autograd.tensor([-5]), autograd.ones(1))


def test_empty_indices_and_zero_dim_inputs():
    x = autograd.arange(6.0).reshape(2, 3)
    assert x.gather(1, autograd.zeros(2, 0, dtype=autograd.int64)).shape == (2, 0)
    assert x.scatter_add(0, autograd.zeros(0, 3, dtype=autograd.int64), autograd.ones(0, 3)).tolist() == x.tolist()
    scalar = autograd.tensor(5.0)
    assert scalar.gather(0, autograd.tensor(0)).item() == 5.0
    assert scalar.scatter_reduce(0, autograd.tensor(0), autograd.tensor(3.0), "mean").item() == 4.0


@pytest.mark.parametrize("name", ["add", "maximum", "minimum", "multiply"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32"])
@pytest.mark.parametrize("repeats", [1, 3, 40])
def test_whole_rows_updated_in_rounds_as_ufunc_at_updates_them(name, dtype, repeats):
    """backend.ufunc_at's rounds (each round's rows distinct; a row's k-th update in round k): the values of NumPy's
    ufunc.at bit for bit, repeated and negative rows, NaN and ±inf and ±0 among the values, one row broadcast."""
    from autograd.backend import ufunc_at, xp

    if xp is not np:
        pytest.skip("NumPy's own ufunc.at paths: another array module runs its own")
    rows = RNG.permutation(np.repeat(np.arange(-60, 60), repeats))[:2000]  # (each row named up to `repeats` times)
    for shape, values in [((120, 128), _values((rows.size, 128), "float64")),  # (rounds from rows of 128 elements)
                          ((120, 4, 32), _values((rows.size, 4, 32), "float64")),
                          ((120, 160), _values((160,), "float64")), ((120, 32), _values((rows.size, 32), "float64"))]:
        values = values.astype(dtype) if dtype != "int32" else np.nan_to_num(values, posinf=7, neginf=-7).astype(dtype)
        array = _values(shape, "float64").astype(dtype) if dtype != "int32" else RNG.integers(-9, 9, shape, dtype)
        expected = array.copy()
        with np.errstate(all="ignore"):
            getattr(np, name).at(expected, rows, values)
            ufunc_at(name, array, (rows,), values)  # (a tuple of one index: index_add's along dim 0)
        assert _same(array, expected) if dtype != "int32" else array.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_index_add_and_accumulating_index_put_equal_ufunc_at(dtype):
    x, index = _values((500, 64), dtype), RNG.integers(-500, 500, 3000)
    source = _values((3000, 64), dtype)
    wide = np.float32 if dtype == "float16" else dtype  # (index_add of slices accumulates float16 in float32)
    expected = x.astype(wide)
    with np.errstate(invalid="ignore"):
        np.add.at(expected, index % 500, source.astype(wide))
    added = autograd.tensor(x).index_add(0, autograd.tensor(index % 500), autograd.tensor(source))
    assert _same(added.numpy(), expected.astype(dtype))
    expected = np.zeros_like(x)  # (index_put adds the values gathered in zeros to x: float16 rounding at each step)
    with np.errstate(invalid="ignore"):
        np.add.at(expected, index, source)
        expected = x + expected
    put = autograd.tensor(x).index_put((autograd.tensor(index),), autograd.tensor(source), accumulate=True)
    assert _same(put.numpy(), expected)
