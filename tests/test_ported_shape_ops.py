"""Shape ops ported from PyTorch's test/test_shape_ops.py (TestShapeOps): unbind, tolist, movedim,
diag/diagonal/trace, clamp/clip, flip/fliplr/flipud, rot90, nonzero and unfold.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import itertools
import warnings

import numpy as np
import pytest

from tests.ported import DTYPES, dtype_name, raises, same, sample, values


def test_unbind_and_select(T):
    x = T.rand(2, 3, 4, 5)
    for dim in range(4):
        for parts in (T.unbind(x, dim), x.unbind(dim)):
            assert len(parts) == x.size(dim)
            for i, part in enumerate(parts):
                same(part, values(x.select(dim, i)))


def test_tolist(T):
    assert T.tensor([]).tolist() == []
    assert T.tensor([1.0, 2.0, 3.0]).tolist() == [1.0, 2.0, 3.0]
    assert T.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    nc = T.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]).select(1, 1)
    assert not nc.is_contiguous()
    assert nc.tolist() == [[3, 4], [7, 8]]


@pytest.mark.parametrize("fn", ["movedim", "moveaxis"])
def test_movedim_errors(T, fn):
    f = getattr(T, fn)
    x = T.randn(5, 6, 7, 8)
    raises(IndexError, "Dimension out of range", f, x, 5, 0)
    raises(IndexError, "Dimension out of range", f, x, 0, 5)
    raises(RuntimeError, "movedim: Invalid source or destination dims:", f, x, (1, 0), (0,))
    raises(RuntimeError, "movedim: repeated dim in `source`", f, x, (0, 0), (0, 1))
    raises(RuntimeError, "movedim: repeated dim in `source`", f, x, (0, 1, 0), (0, 1, 2))
    raises(RuntimeError, "movedim: repeated dim in `destination`", f, x, (0, 1), (1, 1))
    raises(RuntimeError, "movedim: repeated dim in `destination`", f, x, (0, 1, 2), (1, 0, 1))


@pytest.mark.parametrize("fn", ["movedim", "moveaxis"])
def test_movedim_against_numpy(T, fn):
    f = getattr(T, fn)
    rng = np.random.default_rng(30)
    for nd in range(5):
        data = rng.standard_normal(tuple(rng.integers(1, 4, nd)))
        x = T.tensor(data)
        for a, b in itertools.permutations(range(nd), 2):
            for sa, sb in ((a, b), (a - nd, b), (a, b - nd)):
                same(f(x, sa, sb), np.moveaxis(data, sa, sb))
        for k in range(1, nd + 1):
            for src in itertools.permutations(range(nd), k):
                dst = tuple(rng.permutation(nd)[:k])
                same(f(x, src, dst), np.moveaxis(data, src, dst))
                negative = tuple(d - nd if i == 0 else d for i, d in enumerate(src))
                same(f(x, negative, dst), np.moveaxis(data, negative, dst))
    x = T.randn(2, 3, 5, 7, 11)
    for src, dst in (((0, 1), (0, 1)), (1, 1), ((), ())):
        same(f(x, src, dst), np.moveaxis(values(x), src, dst))


@pytest.mark.parametrize("dtype", ["float32", "bool"])
def test_diag_diagonal_and_out(T, dtype):
    x = T.rand(20, 20) >= 0.5 if dtype == "bool" else T.rand(20, 20)
    res = T.diag(x)
    out = T.tensor((), dtype=getattr(T, dtype))
    T.diag(x, out=out)
    same(out, values(res), dtype)
    same(T.diagonal(x), np.diag(values(x)))
    same(T.diagonal(x, 7), values(T.diag(x, 7)))
    y = T.randn(4, 5, 6, 7)
    yn = values(y)
    for args in [(2, 2, 3), (2,), (-2, 1, 2), (0, -2, -1)]:
        same(T.diagonal(y, *args), yn.diagonal(*args))
    yp = y.permute(1, 2, 3, 0)
    same(T.diagonal(yp, 0, -2, -1), values(yp).diagonal(0, -2, -1))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float32", "float64"])
def test_trace(T, dtype):
    rng = np.random.default_rng(31)
    for shape in ([10, 1], [1, 10], [30, 30], [20, 30], [30, 20]):
        t = sample(T, shape, dtype, rng)
        summed = dtype_name(t.sum())  # (integers sum in int64)
        got = t.trace()
        assert dtype_name(got) == summed
        np.testing.assert_allclose(values(got), np.trace(values(t), dtype=summed), rtol=1e-6)


CLAMPS = ["clamp", "Tensor.clamp", "Tensor.clamp_", "clip", "Tensor.clip", "Tensor.clip_"]


def _op(T, name):
    return getattr(T.Tensor, name[7:]) if name.startswith("Tensor.") else getattr(T, name)


@pytest.mark.parametrize("dtype", ["int64", "float32"])
@pytest.mark.parametrize("name", CLAMPS)
def test_clamp_against_numpy(T, name, dtype):
    rng = np.random.default_rng(32)
    op = _op(T, name)
    data = (rng.random(100) * 50 - 25).astype(dtype)
    for low, high in ((-10, 10), (-10, None), (None, 10)):
        expected = np.clip(data, low, high)
        same(op(T.tensor(data), low, high), expected, dtype)
        if name in ("clamp", "clip"):
            out = T.empty(100, dtype=getattr(T, dtype))
            op(T.tensor(data), min=low, max=high, out=out)
            same(out, expected)


@pytest.mark.parametrize("name", CLAMPS)
def test_clamp_propagates_nans(T, name):
    rng = np.random.default_rng(33)
    op = _op(T, name)
    data = (rng.random(100) * 50 - 25).astype(np.float32)
    data[rng.random(100) < 0.5] = np.nan
    for low, high in ((-10, 10), (-10, None), (None, 10)):
        same(T.isnan(op(T.tensor(data), low, high)), np.isnan(data))
        if name in ("clamp", "clip"):
            out = T.empty(100)
            op(T.tensor(data), low, high, out=out)
            same(T.isnan(out), np.isnan(data))


def test_clamp_nan_bounds_and_errors(T):
    x = T.ones(3)
    assert bool(T.isnan(T.clamp(x, None, float("nan"))).all())
    assert bool(T.isnan(T.clamp(x, float("nan"), None)).all())
    X = T.randn(10)
    for call in (X.clamp, X.clamp_, lambda: T.clamp(X)):
        raises(RuntimeError, "At least one of 'min' or 'max' must not be None", call)


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64", "uint8"])
def test_flip(T, dtype):
    dt = getattr(T, dtype)

    def make(values_):
        return T.tensor(np.array(values_).astype(dtype))

    def check(x, dims, expected):
        same(x.flip(dims), expected, dtype)
        n = x.ndim
        if not isinstance(dims, tuple):
            same(x.flip(dims - n), expected)
        else:
            for p in itertools.permutations(dims):
                same(x.flip(p), expected)
                if p:
                    same(x.flip((p[0] - n,) + p[1:]), expected)

    data = make([1, 2, 3, 4, 5, 6, 7, 8]).view(2, 2, 2)
    cube = np.array([1, 2, 3, 4, 5, 6, 7, 8]).astype(dtype).reshape(2, 2, 2)
    noncontiguous = T.zeros(2, 2, 4, dtype=dt)[:, :, ::2]
    noncontiguous.copy_(data)
    for x in (data, noncontiguous):
        for dims in (0, 1, 2, (0, 1), (0, 1, 2)):
            check(x, dims, np.flip(cube, dims))
    expanded = make([1, 2, 3]).view(3, 1).expand(3, 2)
    check(expanded, 0, np.array([[3, 3], [2, 2], [1, 1]]).astype(dtype))
    check(expanded, 1, values(expanded))
    check(data.transpose(0, 1), (0, 1, 2), np.array([8, 7, 4, 3, 6, 5, 2, 1]).astype(dtype).reshape(2, 2, 2))
    rect = make([1, 2, 3, 4, 5, 6]).view(2, 3)
    check(rect, 0, np.array([[4, 5, 6], [1, 2, 3]]).astype(dtype))
    check(rect, 1, np.array([[3, 2, 1], [6, 5, 4]]).astype(dtype))
    rng = np.random.default_rng(34)
    image = sample(T, (2, 3, 8, 8), dtype, rng)
    for x in (image, image[..., ::2, :], image[..., ::2]):
        check(x, 3, values(x)[:, :, :, ::-1])
        check(x, 2, values(x)[:, :, ::-1, :])
    empty = T.tensor((), dtype=dt)
    check(empty, 0, np.zeros(0, dtype))
    check(empty, (), np.zeros(0, dtype))
    x = sample(T, (3, 2, 1), dtype, rng)
    check(x, (), values(x))
    x = sample(T, (3, 0, 2), dtype, rng)
    for i in range(3):
        check(x, i, values(x))
    x = sample(T, (), dtype, rng)
    check(x, 0, values(x))
    x = sample(T, (1,), dtype, rng)
    check(x, 0, values(x))
    x = sample(T, (2, 3, 4), dtype, rng)
    for dims in itertools.chain(itertools.combinations(range(3), 1), itertools.combinations(range(3), 2)):
        assert x.flip(dims).shape == (2, 3, 4)
        same(T.flip(x, dims=dims), np.flip(values(x), dims))


def test_flip_errors(T):
    data = T.randn(2, 2, 2)
    raises(RuntimeError, None, data.flip, 0, 1, 1)
    raises(TypeError, "missing 1 required positional argument", data.flip)
    same(data.flip(()), values(data))
    raises(IndexError, None, data.flip, 0, 1, 2, 3)
    raises(IndexError, None, data.flip, 3)


@pytest.mark.parametrize("dtype", ["int64", "float64", "complex128"])
def test_fliplr_flipud(T, dtype):
    rng = np.random.default_rng(35)
    for nd in range(2, 5):
        x = sample(T, tuple(rng.integers(1, 5, nd)), dtype, rng)
        same(T.fliplr(x), np.fliplr(values(x)), dtype)
    for nd in range(1, 5):
        x = sample(T, tuple(rng.integers(1, 5, nd)), dtype, rng)
        same(T.flipud(x), np.flipud(values(x)), dtype)
    raises(RuntimeError, "Input must be >= 2-d.", T.fliplr, sample(T, (42,), dtype, rng))
    raises(RuntimeError, "Input must be >= 2-d.", T.fliplr, sample(T, (), dtype, rng))
    raises(RuntimeError, "Input must be >= 1-d.", T.flipud, sample(T, (), dtype, rng))


def test_rot90(T):
    data = T.arange(1, 5).view(2, 2)
    for k, expected in ((0, [1, 2, 3, 4]), (1, [2, 4, 1, 3]), (2, [4, 3, 2, 1]), (3, [3, 1, 4, 2])):
        same(data.rot90(k, [0, 1]), np.array(expected).reshape(2, 2))
    same(data.rot90(), values(data.rot90(1, [0, 1])))
    same(data.rot90(3, [0, 1]), values(data.rot90(1, [1, 0])))
    same(data.rot90(5, [0, 1]), values(data.rot90(1, [0, 1])))
    same(data.rot90(3, [0, 1]), values(data.rot90(-1, [0, 1])))
    same(data.rot90(-5, [0, 1]), values(data.rot90(-1, [0, 1])))
    # (PyTorch's test expects RuntimeError for a dim out of range; PyTorch 2.13 raises IndexError)
    raises(IndexError, "Dimension out of range", data.rot90, 1, [0, -3])
    raises(IndexError, "Dimension out of range", data.rot90, 1, [0, 2])
    cube = T.arange(1, 9).view(2, 2, 2)
    same(cube.rot90(1, [1, 2]), np.array([2, 4, 1, 3, 6, 8, 5, 7]).reshape(2, 2, 2))
    same(cube.rot90(1, [1, -1]), values(cube.rot90(1, [1, 2])))
    raises(IndexError, "Dimension out of range", cube.rot90, 1, [0, 3])
    raises(RuntimeError, "expected rotation dims to be different", cube.rot90, 1, [1, 1])
    raises(RuntimeError, "expected total rotation dims == 2, but got dims = 3", cube.rot90, 1, [0, 1, 2])
    raises(RuntimeError, "expected total rotation dims == 2, but got dims = 1", cube.rot90, 1, [0])
    rng = np.random.default_rng(36)
    z = (rng.standard_normal((3, 4, 2)) + 1j * rng.standard_normal((3, 4, 2))).astype(np.complex64)
    for k in range(4):
        same(T.rot90(T.tensor(z), k=k, dims=[0, 1]), np.rot90(z, k=k, axes=(0, 1)))


def test_nonzero_gives_no_warning(T):
    t = T.randn(2, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        T.nonzero(t)
        t.nonzero()
    assert not caught


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int32", "int64", "float16", "float32", "float64"])
def test_nonzero(T, dtype):
    rng = np.random.default_rng(37)
    for shape in [(12,), (12, 1), (1, 12), (6, 2), (3, 2, 2), (5, 5, 5)]:
        data = rng.integers(0, 2, shape).astype(dtype)
        t = T.tensor(data)
        expected = np.stack(data.nonzero()).T
        same(T.nonzero(t, as_tuple=False), expected, "int64")
        same(t.nonzero(as_tuple=False), expected)
        out = T.empty([], dtype=T.int64)
        T.nonzero(t, out=out)
        same(out, expected)
        raises(RuntimeError, "scalar type Long", T.nonzero, t, out=T.empty([], dtype=T.float32))
        same(T.stack(T.nonzero(t, as_tuple=True)).t(), expected)
        same(T.stack(t.nonzero(as_tuple=True)).t(), expected)


def test_nonzero_out_and_layouts(T):
    t = T.randn(3, 3, 3)
    out = T.empty_like(t, dtype=T.int64)
    raises(RuntimeError, None, T.nonzero, t, as_tuple=True, out=out)
    same(T.nonzero(t, as_tuple=False, out=out), values(T.nonzero(t, out=out)))
    x = T.randint(2, (4, 4))
    nc = T.empty(4, 8)[:, ::2]
    nc.copy_(x)
    first = x.nonzero(as_tuple=False)
    same(nc.nonzero(as_tuple=False), values(first))
    out = T.empty_like(first)
    pointer = out.data_ptr()
    T.nonzero(x, out=out)
    assert out.data_ptr() == pointer  # an out of the right size is written, not replaced
    same(out, values(first))
    strided = T.empty(first.size(0), first.size(1) * 2, dtype=T.int64)[:, ::2]
    pointer, strides = strided.data_ptr(), strided.stride()
    T.nonzero(x, out=strided)
    assert strided.data_ptr() == pointer and strided.stride() == strides
    same(strided, values(first))
    assert not T.randn(10, requires_grad=True).nonzero().requires_grad


def test_sparse_and_dense_dims_of_a_dense_tensor(T):
    for shape in [(), (2,), (2, 3)]:
        x = T.rand(shape)
        assert x.sparse_dim() == 0
        assert x.dense_dim() == len(shape)


def test_unfold_shapes_scalars_and_errors(T):
    for dtype in DTYPES:
        assert T.empty((0, 1, 3, 0), dtype=getattr(T, dtype)).unfold(2, 3, 2).shape == (0, 1, 1, 0, 3)
    x = T.tensor(0.5)
    assert x.unfold(0, 0, 1).shape == (0,)
    assert x.unfold(0, 0, 2).shape == (0,)
    same(x.unfold(0, 1, 1), [0.5])
    x = T.arange(1.0, 8)
    raises(RuntimeError, "size is -1 but must be >= 0", x.unfold, 0, -1, 1)
    raises(RuntimeError, "step is -1 but must be > 0", x.unfold, 0, 1, -1)
    raises(RuntimeError, "maximum size for tensor at dimension 0 is 1 but size is 2", T.tensor(0.5).unfold, 0, 2, 1)
    same(x.unfold(0, 3, 2), [[1, 2, 3], [3, 4, 5], [5, 6, 7]])
