"""Sorting and selection ported from PyTorch's test/test_sort_and_select.py (TestSortAndSelect, without
the CUDA-only tests): sort (stable, descending, NaN, out=), argsort, msort, topk (largest, sorted, NaN,
k=0), kthvalue, unique and unique_consecutive (return_inverse, return_counts, dim), isin; with
searchsorted/bucketize from test/test_reductions.py (test_bucketization) and the running reductions
cumsum/cumprod/cummax/cummin/logcumsumexp.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import itertools
import math

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values

nan, inf = math.nan, math.inf


def _assert_is_ordered(order, x, values_, indices):
    """Every row of values_ is ordered (NaN last ascending, first descending) and values_ = x gathered at
    indices, a permutation of each row."""
    v = values(values_)
    a, b = v[:, :-1], v[:, 1:]
    if order == "descending":
        assert ((a != a) | (a >= b)).all()
    else:
        assert ((b != b) | (a <= b)).all()
    xs, ix = values(x), values(indices)
    np.testing.assert_array_equal(np.take_along_axis(xs, ix, 1), v)
    for row in ix:
        assert sorted(row.tolist()) == list(range(xs.shape[1]))


@pytest.mark.parametrize("size", [4, 257])
def test_sort(T, size):
    x = T.rand(4, size)
    res1val, res1ind = T.sort(x)
    res2val, res2ind = T.tensor(()), T.tensor((), dtype=T.long)
    T.sort(x, out=(res2val, res2ind))
    same(res2val, values(res1val))
    same(res2ind, values(res1ind))
    same(T.argsort(x), values(res1ind))
    same(x.argsort(), values(res1ind))
    _assert_is_ordered("ascending", x, res2val, res2ind)
    same(T.sort(T.tensor((50, 40, 30, 20, 10)))[0], [10, 20, 30, 40, 50])
    x = T.floor(T.rand(4, size) * 10)
    T.sort(x, out=(res2val, res2ind))
    _assert_is_ordered("ascending", x, res2val, res2ind)
    x = T.rand(4, size)
    res1val, res1ind = T.sort(x, x.dim() - 1, True)
    T.sort(x, x.dim() - 1, True, out=(res2val, res2ind))
    same(res2val, values(res1val))
    same(res2ind, values(res1ind))
    same(T.argsort(x, x.dim() - 1, True), values(res1ind))
    same(x.argsort(x.dim() - 1, True), values(res1ind))
    _assert_is_ordered("descending", x, res2val, res2ind)
    same(T.sort(T.tensor((10, 20, 30, 40, 50)), 0, True)[0], [50, 40, 30, 20, 10])
    x = T.rand(4, size)
    x[1][2] = nan
    x[3][0] = nan
    T.sort(x, out=(res2val, res2ind))
    _assert_is_ordered("ascending", x, res2val, res2ind)
    T.sort(x, out=(res2val, res2ind), descending=True)
    _assert_is_ordered("descending", x, res2val, res2ind)


def test_sort_nan_order_and_result_names(T):
    x = T.tensor([3.0, nan, -inf, 1.0, nan, inf])
    r = T.sort(x)
    same(r.values, [-inf, 1.0, 3.0, inf, nan, nan])
    same(r.indices, [2, 3, 0, 5, 1, 4], "int64")
    r = x.sort(descending=True, stable=True)
    same(r.values, [nan, nan, inf, 3.0, 1.0, -inf])
    same(r.indices, [1, 4, 5, 0, 3, 2])
    same(x.argsort(stable=True), [2, 3, 0, 5, 1, 4])
    same(T.argsort(x, descending=True, stable=True), [1, 4, 5, 0, 3, 2])


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"])
def test_stable_sort(T, dtype):
    for ncopies in (100, 1000):
        x = T.tensor([0, 1] * ncopies, dtype=getattr(T, dtype))
        _, idx = x.sort(stable=True)
        same(idx[:ncopies], np.arange(0, 2 * ncopies, 2))
        same(idx[ncopies:], np.arange(1, 2 * ncopies, 2))
        _, idx = x.sort(stable=True, descending=True)
        same(idx[:ncopies], np.arange(1, 2 * ncopies, 2))
        same(idx[ncopies:], np.arange(0, 2 * ncopies, 2))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
                                   "bool"])
def test_stable_sort_against_numpy(T, dtype):
    rng = np.random.default_rng(60)
    if dtype.startswith("float"):
        big, small, missing = inf, -inf, nan
    elif dtype == "bool":
        big, small, missing = True, False, True
    else:
        info = np.iinfo(dtype)
        big, small, missing = info.max, info.min, info.max
    samples = [(np.array([0, 1] * 1025).astype(dtype), 0), (np.array([0, 1] * 100).astype(dtype), 0)]
    for sizes in [(1, 10), (10, 1), (10, 10), (10, 10, 10)]:
        size = min(sizes)
        x = (rng.standard_normal(sizes) * size).astype(dtype) if dtype != "bool" else rng.random(sizes) > 0.5
        samples.append((x, 0))
        for dim in range(len(sizes)):
            for fill in itertools.chain.from_iterable(itertools.combinations((big, small, missing), r)
                                                       for r in range(1, 4)):
                y = x.copy()
                for value in fill:
                    idx = rng.integers(0, size, max(size // 10, 1))
                    index = [slice(None)] * len(sizes)
                    index[dim] = idx
                    y[tuple(index)] = value
                samples.append((y, dim))
    for data, dim in samples:
        _, idx = T.tensor(data).sort(dim=dim, stable=True)
        same(idx, np.argsort(data, axis=dim, kind="stable"))


def test_sort_expanded_and_discontiguous(T):
    data = T.scalar_tensor(True, dtype=T.float32).expand([1, 1, 1])
    out = T.sort(data, stable=True, dim=1, descending=True)
    same(out.values, [[[1.0]]])
    same(out.indices, [[[0]]])
    data = T.randn(4, 1, 10).expand([4, 8, 10])
    out = T.sort(data, stable=True, dim=1, descending=True)
    expected = T.sort(data.contiguous(), stable=True, dim=1, descending=True)
    same(out.values, values(expected.values))
    same(out.indices, values(expected.indices))
    same(out.indices[0, :, 0], np.arange(8))
    for shape in itertools.permutations((5, 7, 9)):
        for perm in itertools.permutations((0, 1, 2)):
            t = T.randn(shape).permute(perm)
            for dim in range(3):
                r1, r2 = t.sort(dim=dim), t.contiguous().sort(dim=dim)
                same(r1.values, values(r2.values))
                same(r1.indices, values(r2.indices))
                same(r1.values, np.sort(values(t), axis=dim))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float32", "float64"])
def test_msort(T, dtype):
    rng = np.random.default_rng(61)
    for shape in ([], [0], [20], [1, 20], [30, 30], [10, 20, 30]):
        data = rng.integers(0 if dtype == "uint8" else -9, 9, shape).astype(dtype)
        t = T.tensor(data)
        expected = np.sort(data, axis=0) if data.ndim else data
        same(T.msort(t), expected, dtype)
        same(t.msort(), expected)
        out = T.empty_like(t)
        T.msort(t, out=out)
        same(out, expected)


def test_topk(T):
    rng = np.random.default_rng(62)

    def compare(t, k, dim, largest):
        top_val, top_ind = t.topk(k, dim, largest, True)
        sort_val, sort_ind = t.sort(dim, largest)
        same(top_val, values(sort_val.narrow(dim, 0, k)))
        same(t.gather(dim, top_ind), values(top_val))

    t = T.rand(*rng.integers(1, 30, 3).tolist())
    for _ in range(3):
        for transpose, largest in itertools.product((True, False), (True, False)):
            test_tensor = t
            if transpose:
                d1, d2 = rng.choice(3, 2, replace=False).tolist()
                test_tensor = t.transpose(d1, d2)
            dim = int(rng.integers(0, 3))
            k = int(rng.integers(1, test_tensor.size(dim) + 1))
            compare(test_tensor, k, dim, largest)
    t = T.randn((2, 10000))
    compare(t, 2000, 1, True)
    compare(t, 2000, 1, False)


def test_topk_arguments(T):
    q = T.randn(10, 2, 10)
    raises(TypeError, "", lambda: q.topk(4, True))
    raises(RuntimeError, "selected index k out of range", q.topk, 11)
    raises(RuntimeError, "selected index k out of range", q.topk, -1)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64", "float16", "float32", "float64"])
def test_topk_dtypes(T, dtype):
    rng = np.random.default_rng(63)
    for size in (10, 4096):
        if dtype.startswith("float"):
            data = rng.standard_normal(size).astype(dtype)
        else:
            info = np.iinfo(dtype)
            data = rng.integers(info.min, info.max, size, dtype=dtype)
        a = T.tensor(data)
        expected = np.sort(data)[-(size // 2):][::-1]
        top = a.topk(size // 2)
        same(top[0], expected, dtype)
        same(a[top[1]], expected)
        assert dtype_name(top.indices) == "int64"


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_topk_nonfinite(T, dtype):
    x = T.tensor([nan, inf, 1e4, 0, -1e4, -inf], dtype=getattr(T, dtype))
    val, idx = x.topk(4)
    same(val, np.array([nan, inf, 1e4, 0], dtype=dtype))
    same(idx, [0, 1, 2, 3])
    val, idx = x.topk(4, largest=False)
    same(val, np.array([-inf, -1e4, 0, 1e4], dtype=dtype))
    same(idx, [5, 4, 3, 2])


def test_topk_4d_and_zero(T):
    for size in (128, 1024):
        x = T.ones(2, size, 2, 2)
        x[:, 1, :, :] *= 2.0
        x[:, 10, :, :] *= 1.5
        val, ind = T.topk(x, k=2, dim=1)
        expected_ind = np.ones((2, 2, 2, 2), dtype=np.int64)
        expected_ind[:, 1] = 10
        expected_val = np.ones((2, 2, 2, 2), dtype=np.float32)
        expected_val[:, 0] *= 2.0
        expected_val[:, 1] *= 1.5
        same(val, expected_val)
        same(ind, expected_ind)
    for dtype in ("uint8", "int32", "int64", "float32", "float64"):
        t = T.rand(2, 2).to(getattr(T, dtype))
        val, idx = T.topk(t, k=0, largest=False)
        assert tuple(val.shape) == (2, 0) and tuple(idx.shape) == (2, 0)


def test_topk_unsorted_and_gradient(T):
    x = T.tensor([[1.0, 5.0, 3.0, 4.0], [8.0, 6.0, 7.0, 2.0]], requires_grad=True)
    v, i = x.topk(2, dim=1, sorted=True)
    same(v, [[5.0, 4.0], [8.0, 7.0]])
    same(i, [[1, 3], [0, 2]])
    v, i = x.topk(2, dim=1, sorted=False)
    same(np.sort(values(v), 1), [[4.0, 5.0], [7.0, 8.0]])
    same(x.gather(1, i), values(v))
    (v * T.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    expected = np.zeros((2, 4), dtype=np.float32)
    for r in range(2):
        for c in range(2):
            expected[r, values(i)[r, c]] = [[1.0, 2.0], [3.0, 4.0]][r][c]
    same(x.grad, expected)


def test_kthvalue(T):
    rng = np.random.default_rng(64)
    n = 20
    x = T.rand(n, n, n, dtype=T.float64)
    x0 = x.clone()
    k = int(rng.integers(1, n + 1))
    res1val, res1ind = T.kthvalue(x, k, keepdim=False)
    res2val, res2ind = T.sort(x)
    same(res1val, values(res2val[:, :, k - 1]))
    same(res1ind, values(res2ind[:, :, k - 1]))
    res1val, res1ind = T.tensor([], dtype=T.float64), T.tensor([], dtype=T.long)
    T.kthvalue(x, k, keepdim=False, out=(res1val, res1ind))
    same(res1val, values(res2val[:, :, k - 1]))
    same(res1ind, values(res2ind[:, :, k - 1]))
    res1val, res1ind = T.kthvalue(x, k, 0, keepdim=False)
    res2val, res2ind = T.sort(x, 0)
    same(res1val, values(res2val[k - 1]))
    same(res1ind, values(res2ind[k - 1]))
    y = x.narrow(1, 0, 1)
    a, b = T.kthvalue(y, k), T.kthvalue(y.contiguous(), k)
    same(a[0], values(b[0]))
    same(a[1], values(b[1]))
    non_contig = T.tensor([0, -1, 1, -2, 2], dtype=T.float64)[::2]
    v, i = non_contig.kthvalue(2)
    same(v, 1.0)
    same(i, 1)
    same(x, values(x0))
    y = T.tensor((3.0, 5, 4, 1, 1, 5), dtype=T.float64)
    assert T.kthvalue(y, 3)[0].item() == 3 and T.kthvalue(y, 2)[0].item() == 1
    x = T.rand(n, n, n, dtype=T.float64)
    x[T.arange(n), :, T.randint(n, (n,))] = nan
    res2val, res2ind = T.sort(x)
    for k in (int(rng.integers(1, n + 1)), 1, n, n - 1):
        res1val, res1ind = T.kthvalue(x, k, keepdim=False)
        same(res1val, values(res2val[:, :, k - 1]))
        same(res1ind, values(res2ind[:, :, k - 1]))


def test_kthvalue_scalar(T):
    res = T.tensor(2.0).kthvalue(1)
    ref = T.tensor([2.0]).kthvalue(1)
    same(res[0], values(ref[0].squeeze()))
    same(res[1], values(ref[1].squeeze()))


X_DIM = [[[1.0, 1.0], [0.0, 1.0], [2.0, 1.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 1.0], [2.0, 1.0], [0.0, 1.0]]]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8", "bool"])
def test_unique_dim(T, dtype):
    assert not hasattr(T, "unique_dim")
    dt = getattr(T, dtype)
    x = T.tensor(X_DIM, dtype=dt)
    is_bool = dtype == "bool"

    def cast(a):
        return np.array(a).astype(dtype)

    expected = {
        0: (cast(X_DIM[:1]), [0, 0], [2]),
        1: (cast([[[False, True], [True, True]]] * 2) if is_bool else cast([[[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]] * 2),
            [1, 0, 1, 0] if is_bool else [1, 0, 2, 0], [2, 2] if is_bool else [2, 1, 1]),
        2: (cast(X_DIM), [0, 1], [1, 1]),
    }
    for dim, (eu, ei, ec) in expected.items():
        same(T.unique(x, dim=dim), eu, dtype)
        u, i = T.unique(x, return_inverse=True, dim=dim)
        same(u, eu)
        same(i, ei, "int64")
        u, c = T.unique(x, return_inverse=False, return_counts=True, dim=dim)
        same(u, eu)
        same(c, ec, "int64")
        u, i, c = T.unique(x, return_inverse=True, return_counts=True, dim=dim)
        same(u, eu)
        same(i, ei)
        same(c, ec)
    u, i, c = T.unique(T.empty(5, 0, dtype=dt), return_inverse=True, return_counts=True, dim=1)
    same(u, np.empty((5, 0)), dtype)
    same(i, np.empty(0), "int64")
    same(c, np.empty(0), "int64")
    raises(RuntimeError, "", T.unique, T.empty(5, 0, 0, dtype=dt), return_inverse=True, return_counts=True, dim=1)
    raises(RuntimeError, "", T.unique, T.empty(5, 0, 5, dtype=dt), return_inverse=True, return_counts=True, dim=2)
    y = T.tensor([[0, 1], [0, 1], [0, 1], [1, 2], [1, 2], [3, 4], [0, 1], [0, 1], [3, 4], [1, 2]], dtype=dt)
    _, yi, yc = T.unique_consecutive(y, return_inverse=True, return_counts=True, dim=0)
    if is_bool:
        same(yi, [0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
        same(yc, [3, 3, 2, 2])
    else:
        same(yi, [0, 0, 0, 1, 1, 2, 3, 3, 4, 5])
        same(yc, [3, 2, 1, 2, 1, 1])
    if dtype.startswith("float"):
        u, i, c = T.unique_consecutive(T.tensor([nan, 0, 0, nan, nan, 1], dtype=dt), return_inverse=True,
                                       return_counts=True, dim=0)
        same(u, [nan, 0, nan, nan, 1])
        same(i, [0, 1, 1, 2, 3, 4])
        same(c, [1, 2, 1, 1, 1])
    data = np.array([[[[1, 0, 1, 0, 1, 1], [0, 1, 1, 0, 1, 1]], [[0, 1, 1, 0, 0, 1], [0, 0, 0, 1, 0, 0]]],
                     [[[0, 1, 0, 1, 1, 1], [0, 1, 1, 0, 1, 1]], [[0, 0, 1, 1, 0, 1], [1, 1, 0, 0, 0, 0]]]])
    data = data.astype(dtype)
    for d in range(4):
        same(T.unique(T.tensor(data), dim=d), np.unique(data, axis=d))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unique_dim_nan(T, dtype):
    x_nan = T.tensor([nan, 0, 0, nan, nan, 1], dtype=getattr(T, dtype))
    u, i, c = T.unique(x_nan, return_inverse=True, return_counts=True, dim=0)
    same(u, [nan, 0, nan, nan, 1])
    same(i, [0, 1, 1, 2, 3, 4])
    same(c, [1, 2, 1, 1, 1])


def _check_unique_scalar_empty(T, dtype, f):
    x = T.tensor(0, dtype=dtype)
    u, i, c = f(x, return_inverse=True, return_counts=True)
    same(u, [0])
    same(i, 0, "int64")
    same(c, [1], "int64")
    x = T.zeros((0, 0, 3), dtype=dtype)
    u, i, c = f(x, return_inverse=True, return_counts=True)
    same(u, np.empty(0))
    assert u.dtype == dtype
    same(i, np.empty((0, 0, 3)), "int64")
    same(c, np.empty(0), "int64")


def _check_unique_with_expects(T, f, x, eu, ei, ec, additional_shape):
    for return_inverse, return_counts in itertools.product((True, False), repeat=2):
        ret = f(x, return_inverse=return_inverse, return_counts=return_counts)
        ret = (ret,) if not isinstance(ret, tuple) else ret
        assert len(ret) == 1 + int(return_inverse) + int(return_counts)
        same(ret[0], eu)
        if return_inverse:
            same(ret[1], ei)
        if return_counts:
            same(ret[1 + int(return_inverse)], ec)
        u, i, c = f(x.view(additional_shape), return_inverse=True, return_counts=True)
        same(u, eu)
        same(i, np.asarray(ei).reshape(additional_shape))
        same(c, ec)


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32",
                                   "float64"])
def test_unique(T, dtype):
    dt = getattr(T, dtype)
    if dtype == "bool":
        x = T.tensor([True, False, False, False, True, False, True, False])
        eu, ei, ec = [False, True], [1, 0, 0, 0, 1, 0, 1, 0], [5, 3]
    else:
        x = T.tensor([1, 2, 3, 2, 8, 5, 2, 3], dtype=dt)
        eu, ei, ec = np.array([1, 2, 3, 5, 8]).astype(dtype), [0, 1, 2, 1, 4, 3, 1, 2], [1, 3, 2, 1, 1]
    x_sliced = T.empty(x.size(0) * 2, dtype=dt)[::2].copy_(x)
    sorted_fs = (lambda x, **kw: T.unique(x, sorted=True, **kw), lambda x, **kw: x.unique(sorted=True, **kw))
    for f, xx in itertools.product(sorted_fs, (x, x_sliced)):
        _check_unique_with_expects(T, f, xx, eu, ei, ec, (2, 2, 2))
        _check_unique_scalar_empty(T, dt, f)
    unsorted_fs = (lambda x, **kw: T.unique(x, sorted=False, **kw), lambda x, **kw: x.unique(sorted=False, **kw))
    for f, xx in itertools.product(unsorted_fs, (x, x_sliced)):
        _check_unique_scalar_empty(T, dt, f)
        for return_inverse, return_counts in itertools.product((True, False), repeat=2):
            ret = f(xx, return_inverse=return_inverse, return_counts=return_counts)
            ret = (ret,) if not isinstance(ret, tuple) else ret
            x_list, u_list = xx.tolist(), ret[0].tolist()
            assert sorted(u_list) == list(np.asarray(eu).tolist())
            if return_inverse:
                for i, j in enumerate(ret[1].tolist()):
                    assert x_list[i] == u_list[j]
            if return_counts:
                for value, count in zip(u_list, ret[1 + int(return_inverse)].tolist()):
                    assert count == x_list.count(value)


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32",
                                   "float64"])
def test_unique_consecutive(T, dtype):
    dt = getattr(T, dtype)
    if dtype == "bool":
        x = T.tensor([True, False, False, False, True, True, False, False, False])
        eu, ei, ec = [True, False, True, False], [0, 1, 1, 1, 2, 2, 3, 3, 3], [1, 3, 2, 3]
    else:
        x = T.tensor([1, 2, 2, 2, 5, 5, 2, 2, 3], dtype=dt)
        eu, ei, ec = np.array([1, 2, 5, 2, 3]).astype(dtype), [0, 1, 1, 1, 2, 2, 3, 3, 4], [1, 3, 2, 2, 1]
    for f in (T.unique_consecutive, lambda x, **kw: x.unique_consecutive(**kw)):
        _check_unique_with_expects(T, f, x, eu, ei, ec, (3, 3))
        _check_unique_scalar_empty(T, dt, f)


def test_unique_float_nan_and_sorted_default(T):
    x = T.tensor([2.0, nan, 1.0, nan, 2.0])
    u, i, c = T.unique(x, return_inverse=True, return_counts=True)
    same(u, [1.0, 2.0, nan, nan])
    same(i, [1, 2, 0, 3, 1])
    same(c, [1, 2, 1, 1])


def test_isin(T):
    for dtype in ("uint8", "int8", "int16", "int32", "int64", "float32", "float64"):
        dt = getattr(T, dtype)

        def check(a, b):
            an = values(a) if hasattr(a, "dtype") else np.array(a)
            bn = values(b) if hasattr(b, "dtype") else np.array(b)
            same(T.isin(a, b), np.isin(an, bn), "bool")

        a = T.arange(24, dtype=dt).reshape([2, 3, 4])
        b = T.tensor([[10, 20, 30], [0, 1, 3], [11, 22, 33]], dtype=dt)
        check(a, b)
        zero_d = T.tensor(3, dtype=dt)
        check(zero_d, b)
        check(a, zero_d)
        check(zero_d, zero_d)
        empty = T.tensor([], dtype=dt)
        check(empty, b)
        check(a, empty)
        check(empty, empty)
        check(a, 6)
        check(5, b)
        for mult, invert in itertools.product((1, 10), (False, True)):
            def expect(lst, invert=invert):
                return np.logical_not(lst) if invert else np.array(lst)

            a = T.tensor([5, 7, 1, 2], dtype=dt)
            b = T.tensor([2, 4, 3, 1, 5] * mult, dtype=dt)
            same(T.isin(a, b, assume_unique=True, invert=invert), expect([True, False, True, True]))
            a[0] = 8
            same(T.isin(a, b, assume_unique=True, invert=invert), expect([False, False, True, True]))
            a[0], a[3] = 4, 8
            same(T.isin(a, b, assume_unique=True, invert=invert), expect([True, False, True, False]))
            a = T.tensor([5, 4, 5, 3, 4, 4, 3, 4, 3, 5, 2, 1, 5, 5], dtype=dt)
            b = T.tensor([2, 3, 4] * mult, dtype=dt)
            same(T.isin(a, b, invert=invert), expect([False, True, False, True, True, True, True, True, True,
                                                      False, True, False, False, False]))
            b = T.tensor([2, 3, 4] * mult + [5, 5, 4] * mult, dtype=dt)
            same(T.isin(a, b, invert=invert), expect([True] * 11 + [False, True, True]))
            a = T.tensor([5, 5], dtype=dt)
            b = T.tensor([2, 2] * mult, dtype=dt)
            same(T.isin(a, b, invert=invert), expect([False, False]))
            for assume_unique in (False, True):
                a = T.arange(6, dtype=dt).reshape([2, 3])
                b = T.arange(3, 30, dtype=dt)
                same(T.isin(a, b, invert=invert, assume_unique=assume_unique),
                     expect([[False, False, False], [True, True, True]]))


def test_isin_different_dtypes(T):
    kinds = ("uint8", "int8", "int16", "int32", "int64", "float32", "float64")
    for mult, assume_unique in itertools.product((1, 10), (False, True)):
        for d1, d2 in itertools.product(kinds, kinds):
            a = T.tensor([1, 2, 3], dtype=getattr(T, d1))
            b = T.tensor([3, 4, 5] * mult, dtype=getattr(T, d2))
            same(T.isin(a, b, assume_unique=assume_unique), [False, False, True])


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64"])
def test_sort_overflow(T, dtype):
    low = 0 if dtype == "uint8" else -1
    x = T.full((32768,), low, dtype=getattr(T, dtype))
    x[:100] = np.iinfo(dtype).max
    assert x.sort().values.unique().size(0) == 2


def test_bucketization(T):
    values_1d = T.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9])
    values_3d = T.tensor([[[1, 3, 5], [2, 4, 6]], [[1, 2, 3], [4, 5, 6]]])
    boundaries = T.tensor([1, 2, 3, 4, 5, 6])
    expected = [[[0, 2, 4], [1, 3, 5]], [[0, 1, 2], [3, 4, 5]]]
    output = T.empty(2, 2, 3, dtype=T.int64)
    same(T.bucketize(values_3d, boundaries), expected, "int64")
    same(T.bucketize(values_3d, boundaries, out=output), expected)
    same(output, expected)
    expected = [[[1, 3, 5], [2, 4, 6]], [[1, 2, 3], [4, 5, 6]]]
    same(T.bucketize(values_3d, boundaries, right=True), expected)
    same(T.bucketize(values_3d, boundaries, out=output, right=True), expected)
    for dtype in (T.float32, T.float16):
        values_1d_float = values_1d.to(dtype)
        boundaries = T.tensor([0.9, 1, 2, 2, 3, 3, 4, 4.1, 9, 9], dtype=dtype)
        expected = [1, 2, 4, 6, 8, 8, 8, 8, 8]
        same(T.searchsorted(boundaries, values_1d_float, out_int32=True), expected, "int32")
        same(T.bucketize(values_1d_float, boundaries, out_int32=True), expected, "int32")
    boundaries = T.tensor([1, 2, 3, 4, 5, 6], dtype=T.int64)
    values_0_el = T.tensor([[[]]], dtype=T.int64)
    same(T.searchsorted(boundaries, values_0_el), np.empty((1, 1, 0)), "int64")
    same(T.bucketize(values_0_el, boundaries), np.empty((1, 1, 0)), "int64")
    values_nan = T.tensor([1.0, nan, 2.0, nan], dtype=T.float64)
    boundaries = T.tensor([0.0, 1.0, 2.0, 3.0], dtype=T.float64)
    same(T.searchsorted(boundaries, values_nan), [1, 4, 2, 4])
    same(T.searchsorted(boundaries, values_nan, right=True), [2, 4, 3, 4])
    same(T.searchsorted(boundaries, values_nan, side="right"), [2, 4, 3, 4])
    values_3d_permute = values_3d.permute(2, 1, 0).to(T.int32)
    boundaries_permute = values_3d.permute(2, 1, 0).to(T.float64)
    same(T.searchsorted(boundaries_permute, values_3d_permute),
         [[[0, 0], [0, 1]], [[2, 0], [0, 1]], [[2, 0], [0, 0]]])
    boundaries = T.tensor([1.5, 2.5, 3.5])
    same(T.searchsorted(boundaries, 2), 1, "int64")
    same(T.bucketize(T.tensor(2), boundaries), 1)
    same(T.searchsorted(boundaries, T.tensor(nan)), 3)
    same(T.bucketize(nan, boundaries, right=True), 3)
    boundaries = T.tensor([[1, 2, 3], [4, 5, 6]])
    raises(RuntimeError, "first N-1 dimensions of boundaries tensor and input value tensor must match",
           T.searchsorted, boundaries, values_3d)
    raises(RuntimeError, "boundaries tensor must be 1 dimension", T.bucketize, values_3d, boundaries)
    raises(RuntimeError, "only when boundaries tensor dimension is 1", T.searchsorted, boundaries, 1)
    for dtype, is_int32 in ((T.float32, False), (T.int32, False), (T.int64, True)):
        raises(RuntimeError, "output tensor's dtype is wrong", T.searchsorted, values_1d, values_1d,
               out=values_1d.to(dtype), out_int32=is_int32)
    raises(RuntimeError, "side can only be 'left' or 'right'", T.searchsorted, values_1d, values_1d, side="bad")
    sequence = T.rand_like(values_1d, dtype=T.float)
    _, sorted_idx = T.sort(sequence)
    raises(RuntimeError, "boundary and sorter must have the same size", T.searchsorted, sequence, values_1d,
           sorter=sorted_idx[:-1])
    raises(RuntimeError, "sorter must be a tensor of long dtype", T.searchsorted, sequence, values_1d,
           sorter=sorted_idx.to(T.float32))
    raises(RuntimeError, "sorter index out of range", T.searchsorted, T.tensor([1, 2, 3]), 2.5,
           sorter=T.tensor([0, 1, 3]))
    raises(RuntimeError, "sorter index out of range", T.searchsorted, T.tensor([1, 2, 3]), 2.5,
           sorter=T.tensor([-1, 1, 2]))


def test_searchsorted_sorter_and_side(T):
    seq = T.tensor([3.0, 1.0, 2.0, 5.0, 4.0])
    sorter = T.argsort(seq)
    v = T.tensor([0.5, 2.0, 4.5, 9.0])
    same(T.searchsorted(seq, v, sorter=sorter), [0, 1, 4, 5])
    same(T.searchsorted(seq, v, sorter=sorter, side="right"), [0, 2, 4, 5])
    same(T.searchsorted(seq, v, sorter=sorter, right=True), [0, 2, 4, 5])
    rows = T.tensor([[1, 3, 5, 7, 9], [2, 4, 6, 8, 10]])
    same(T.searchsorted(rows, T.tensor([[3, 6, 9], [3, 6, 9]])), [[1, 3, 4], [1, 2, 4]])
    same(T.searchsorted(rows, T.tensor([[3, 6, 9], [3, 6, 9]]), right=True), [[2, 3, 5], [1, 3, 4]])
    raises(RuntimeError, "side and right can't be set to opposites", T.searchsorted, rows[0], 3, right=True,
           side="left")


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool", "float32", "float64"])
def test_cumsum_cumprod_values_and_dtypes(T, dtype):
    data = np.array([[1, 2, 0, 3], [2, 1, 1, 2]]).astype(dtype)
    x = T.tensor(data)
    acc = "int64" if dtype in ("int32", "uint8", "bool", "int64") else dtype
    for dim in (0, 1, -1):
        same(T.cumsum(x, dim), np.cumsum(data.astype(acc), axis=dim), acc)
        same(x.cumprod(dim), np.cumprod(data.astype(acc), axis=dim), acc)
    same(T.cumsum(x, 1, dtype=T.float64), np.cumsum(data, axis=1, dtype=np.float64), "float64")
    same(T.cumsum(T.tensor(3, dtype=getattr(T, dtype)), 0), np.asarray(3).astype(dtype).astype(acc))
    same(T.cumsum(T.zeros(0, 3, dtype=getattr(T, dtype)), 0), np.zeros((0, 3)), acc)
    y = x.clone() if dtype == acc else x.to(getattr(T, acc))
    y.cumsum_(1)
    same(y, np.cumsum(data.astype(acc), axis=1))


def test_cummax_cummin(T):
    x = T.tensor([[1.0, 3.0, 2.0, 3.0, nan, 0.0], [-1.0, -2.0, -2.0, 5.0, 4.0, 5.0]])
    v, i = T.cummax(x, 1)
    same(v, [[1.0, 3.0, 3.0, 3.0, nan, nan], [-1.0, -1.0, -1.0, 5.0, 5.0, 5.0]])
    same(i, [[0, 1, 1, 3, 4, 4], [0, 0, 0, 3, 3, 5]], "int64")
    v, i = x.cummin(1)
    same(v, [[1.0, 1.0, 1.0, 1.0, nan, nan], [-1.0, -2.0, -2.0, -2.0, -2.0, -2.0]])
    same(i, [[0, 0, 0, 0, 4, 4], [0, 1, 2, 2, 2, 2]])
    r = T.cummax(T.tensor([2, 1, 2, 0]), 0)
    same(r.values, [2, 2, 2, 2], "int64")
    same(r.indices, [0, 0, 2, 2])
    v, i = T.cummax(T.tensor(5.0), 0)
    same(v, 5.0)
    same(i, 0)
    e = T.cummin(T.zeros(0, 2), 0)
    assert tuple(e.values.shape) == (0, 2) and tuple(e.indices.shape) == (0, 2)
    g = T.tensor([1.0, 3.0, 2.0, 4.0], requires_grad=True)
    T.cummax(g, 0).values.sum().backward()
    same(g.grad, [1.0, 2.0, 0.0, 1.0])


def test_logcumsumexp(T):
    rng = np.random.default_rng(65)
    data = rng.standard_normal((4, 5))
    data[1, :2] = -inf
    x = T.tensor(data)
    for dim in (0, 1, -1):
        with np.errstate(divide="ignore"):
            expected = np.log(np.cumsum(np.exp(data), axis=dim))
        close(T.logcumsumexp(x, dim), expected, rtol=1e-12, atol=1e-12)
    big = T.tensor([1000.0, 1000.0, -1000.0], dtype=T.float64)
    close(big.logcumsumexp(0), [1000.0, 1000.0 + math.log(2), 1000.0 + math.log(2)], rtol=1e-12)
    assert dtype_name(T.logcumsumexp(T.tensor([1.0, 2.0]), 0)) == "float32"
    raises(RuntimeError, "logcumsumexp", T.logcumsumexp, T.tensor([1, 2]), 0)
    g = T.tensor([0.0, 1.0, 2.0], dtype=T.float64, requires_grad=True)
    T.logcumsumexp(g, 0)[-1].backward()
    close(g.grad, np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum(), rtol=1e-12)


def test_unique_refuses_complex(T):
    x = T.tensor([1 + 1j, 2, 1 + 1j])
    raises(NotImplementedError, "\"unique\" not implemented for 'ComplexFloat'", x.unique)
    raises(NotImplementedError, "\"unique\" not implemented for 'ComplexFloat'", x.unique, sorted=False)
    raises(NotImplementedError, "\"unique\" not implemented for 'ComplexFloat'", x.unique_consecutive)
    raises(NotImplementedError, "\"unique_dim\" not implemented for 'ComplexFloat'", T.unique, x[None], dim=0)
