"""Reductions ported from PyTorch's test/test_reductions.py (TestReductions, the tests that are not
OpInfo-generated and not CUDA-only): sum/mean/prod/amax/amin/max/min over dims, keepdim, dim tuples and
negative dims; empty tensors (identities, NaN, errors); dtype= and integer/bool promotion; nansum/nanmean;
std/var(correction=) and std_mean/var_mean; logsumexp; argmax/argmin ties and NaN; all/any;
count_nonzero; median/nanmedian/mode/kthvalue; quantile/nanquantile; bincount; histc/histogram; and the
gradients of the reductions that take dtype=.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import itertools
import math
import warnings

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values, xfail_on_chainrule

inf, nan = math.inf, math.nan

# the shapes the dim-op sweeps reduce (PyTorch's _test_dim_ops, smaller)
DIM_CASES = [((3, 5, 7), 0), ((3, 5, 7), 1), ((3, 5, 7), 2), ((60,), -1), ((6, 5, 4), (1, 2)),
             ((6, 5, 4), (1, -1)), ((6, 5, 4), (0, 2)), ((6, 5, 4), (0, 2, 1))]


def _dim_inputs(T, shape, dtypes, rng):
    """A contiguous and a non-contiguous tensor of each dtype, with values in [-100, 100]."""
    out = []
    for dtype in dtypes:
        if dtype.startswith("complex"):
            data = (rng.uniform(-100, 100, shape) + 1j * rng.uniform(-100, 100, shape)).astype(dtype)
        elif dtype.startswith("float"):
            data = rng.uniform(-100, 100, shape).astype(dtype)
        else:
            data = rng.integers(-100, 101, shape).astype(dtype)
        out.append(T.tensor(data))
        big = T.zeros(*shape, 2, dtype=getattr(T, dtype))
        noncontiguous = big[..., 1]
        noncontiguous.copy_(T.tensor(data))
        assert not noncontiguous.is_contiguous()
        out.append(noncontiguous)
    return out


def _check_dim_op(T, op, np_op, dtypes):
    rng = np.random.default_rng(40)
    for shape, dim in DIM_CASES:
        for t in _dim_inputs(T, shape, dtypes, rng):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = np_op(values(t), dim)
            got = op(t, dim)
            if t.dtype in (T.float32, T.complex64):
                close(got, expected, rtol=1e-3, atol=1e-5)
            else:
                close(got, expected, rtol=1e-9, atol=1e-9)


def test_sum_dim(T):
    _check_dim_op(T, lambda t, d: t.sum(d), lambda n, d: n.sum(d),
                  ["float64", "float32", "int64", "int32", "int16", "complex64", "complex128"])


def test_mean_dim(T):
    _check_dim_op(T, lambda t, d: t.mean(d), lambda n, d: n.mean(d),
                  ["float64", "float32", "complex64", "complex128"])


@pytest.mark.parametrize("unbiased", [False, True])
def test_std_var_dim(T, unbiased):
    _check_dim_op(T, lambda t, d: t.std(d, unbiased=unbiased), lambda n, d: n.std(d, ddof=int(unbiased)),
                  ["float64", "float32"])
    _check_dim_op(T, lambda t, d: t.var(d, unbiased=unbiased), lambda n, d: n.var(d, ddof=int(unbiased)),
                  ["float64", "float32"])


def _np_logsumexp(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def test_logsumexp_dim(T):
    _check_dim_op(T, lambda t, d: t.logsumexp(d), _np_logsumexp, ["float64", "float32"])


def test_var_unbiased_and_stability(T):
    x = T.randn(100)
    same(x.var(0), values(x.var(0, unbiased=True)))
    same(x.var(), values(x.var(unbiased=True)))
    same(x.var(unbiased=False), values(x.var(0, unbiased=False)))
    same(x.std(0), values(x.std(0, unbiased=True)))
    assert T.tensor([1.0, 2.0]).var(unbiased=True).item() == 0.5
    assert T.tensor([1.0, 2.0]).var(unbiased=False).item() == 0.25
    assert T.tensor([1.0, 2.0, 3.0]).var(unbiased=True).item() == 1.0
    close(T.tensor([1.0, 2.0, 3.0]).var(unbiased=False), 2.0 / 3.0)
    t = T.tensor([2281.5, 2281.25])
    assert t.var(dim=0).item() == 0.03125
    assert t.var().item() == 0.03125
    same(t.unsqueeze(1).var(0), [0.03125])


def test_sum_dim_reduction_uint8_overflow(T):
    x = T.tensor(np.array([[-1, 2, 1], [5, 3, 6]]).astype(np.uint8))
    assert x.sum(dtype=T.uint8).item() == 16
    same(x.sum(0, dtype=T.uint8), [4, 5, 7], "uint8")
    same(x.sum(1, dtype=T.uint8), [2, 14], "uint8")
    y = T.zeros(3, dtype=T.uint8)
    T.sum(x, 0, out=y)
    same(y, [4, 5, 263 % 256])


@pytest.mark.parametrize("op", ["mean", "sum", "nansum", "std", "var", "logsumexp", "amax", "amin"])
def test_repeated_dim(T, op):
    x = T.randn(3, 3, 3, 3)
    for dim in [(0, 0), (0, -4)]:
        raises(RuntimeError, "appears multiple times in the list of dims", getattr(T, op), x, dim=dim)


def test_numpy_named_args(T):
    x = T.randn(10, 10, 10)
    same(x.sum(axis=(0, 2), keepdims=True), values(x.sum(dim=(0, 2), keepdim=True)))


def test_all_any(T):
    for size in ((10,), (5, 5)):
        x = T.ones(*size).byte()
        assert x.all() and x.any()
        x[3] = 0
        assert not x.all() and x.any()
        x.zero_()
        assert not x.all() and not x.any()
        x.fill_(2)
        assert x.all() and x.any()
        x = T.ones(*size).bool()
        assert x.all() and x.any()
        x[3] = False
        assert not x.all() and x.any()


def test_all_any_with_dim(T):
    x = T.tensor(np.array([[0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.uint8))
    same(x.all(dim=0), [0, 0, 0], "uint8")
    same(x.any(dim=1, keepdim=True), [[0], [1], [1], [1]], "uint8")
    same(x.bool().all(0), [False, False, False], "bool")


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int32", "int64", "float16", "float32",
                                   "float64", "complex64"])
def test_all_any_vs_numpy(T, dtype):
    rng = np.random.default_rng(41)
    out_dtype = "uint8" if dtype == "uint8" else "bool"
    for ndim in range(4):
        shape = tuple(rng.integers(1, 5, ndim))
        data = rng.integers(0, 3, shape) * (rng.random(shape) > 0.5)
        if dtype.startswith("float"):
            data = np.where(rng.random(shape) > 0.7, np.nan, data)
        arr = data.astype(dtype) if dtype != "bool" else data > 0
        for a in (arr, np.zeros_like(arr), np.ones_like(arr)):
            t = T.tensor(a)
            same(T.all(t), np.all(a), out_dtype)
            same(T.any(t), np.any(a), out_dtype)
            for dim in range(ndim):
                same(T.all(t, dim=dim), np.all(a, axis=dim), out_dtype)
                same(T.any(t, dim=dim), np.any(a, axis=dim), out_dtype)
                same(T.all(t, dim=dim, keepdim=True), np.all(a, axis=dim, keepdims=True))
                same(T.any(t, dim=dim, keepdim=True), np.any(a, axis=dim, keepdims=True))
        if ndim:
            out = T.empty(0, dtype=getattr(T, dtype))
            if dtype in ("bool", "uint8"):
                T.all(t, 0, out=out)
                same(out, np.all(a, axis=0))
            else:
                raises(RuntimeError, "all only supports bool tensor for result, got", T.all, t, 0, out=out)
                raises(RuntimeError, "any only supports bool tensor for result, got", T.any, t, 0, out=out)


def test_all_any_empty(T):
    for dtype in ("uint8", "bool"):
        x = T.tensor([], dtype=getattr(T, dtype))
        assert x.all() and not x.any()
    x = T.randn(2, 0, 4)
    for dtype in ("bool", "uint8", "int64", "float32", "complex64"):
        out_dtype = "uint8" if dtype == "uint8" else "bool"
        xb = x.to(getattr(T, dtype))
        assert tuple(xb.any(2).shape) == (2, 0)
        assert tuple(xb.all(2, keepdim=True).shape) == (2, 0, 1)
        same(xb.any(1), np.zeros((2, 4)), out_dtype)
        same(xb.all(1, keepdim=True), np.ones((2, 1, 4)), out_dtype)
        same(xb.any(), False, out_dtype)
        same(xb.all(), True, out_dtype)


def test_all_uint8_any_value_is_true(T):
    a = T.tensor(np.random.default_rng(42).integers(0, 255, (7, 5, 3)).astype(np.uint8))
    same(T.all(a, dim=0).bool(), values(a.to(T.bool).all(dim=0)))


def test_accreal_type(T):
    x = T.ones(2, 3, 4)
    assert isinstance(x.double().sum().item(), float)
    assert isinstance(x.float().sum().item(), float)
    for convert in ("long", "int", "short", "char", "byte"):
        assert isinstance(getattr(x, convert)().sum().item(), int)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "float32", "float64"])
def test_dim_reduction(T, dtype):
    x = T.tensor(np.array([[-1, 2, 1], [5, 3, 6]]).astype(dtype))
    summed = "int64" if dtype.startswith("int") else dtype
    assert x.sum().item() == 16
    same(x.sum(0), [4, 5, 7], summed)
    same(x.sum(1), [2, 14], summed)
    y = T.zeros(3, dtype=getattr(T, summed))
    T.sum(x, 0, out=y)
    same(y, [4, 5, 7])
    if dtype.startswith("float"):
        close(x.mean(), 16.0 / 6)
        close(x.mean(0), [2.0, 2.5, 3.5])
        close(x.mean(1), [2.0 / 3, 14.0 / 3])
        same(x.mean(), values(x.mean((0, 1))))
    assert x.prod().item() == -180
    same(x.prod(0), [-5, 6, 6], summed)
    same(x.prod(1), [-2, 90], summed)
    assert x.min().item() == -1 and x.argmin().item() == 0 and x.argmin(dim=None).item() == 0
    v, i = x.min(0)
    same(v, [-1, 2, 1], dtype)
    same(i, [0, 0, 0], "int64")
    same(x.amin(0), [-1, 2, 1], dtype)
    same(x.argmin(0), [0, 0, 0], "int64")
    v, i = x.min(dim=0, keepdim=True)
    same(v, [[-1, 2, 1]])
    same(i, [[0, 0, 0]])
    same(x.amin(dim=0, keepdim=True), [[-1, 2, 1]])
    same(x.argmin(dim=0, keepdim=True), [[0, 0, 0]])
    v, i = x.min(1)
    same(v, [-1, 3])
    same(i, [0, 1])
    same(x.amin(1, keepdim=True), [[-1], [3]])
    same(x.argmin(dim=1, keepdim=True), [[0], [1]])
    assert x[:, :2].min().item() == -1 and x[:, :2].amin().item() == -1 and x[:, :2].argmin().item() == 0
    assert x.max().item() == 6 and x.amax().item() == 6 and x.argmax().item() == 5
    v, i = x.max(0)
    same(v, [5, 3, 6], dtype)
    same(i, [1, 1, 1], "int64")
    same(x.amax(0), [5, 3, 6])
    same(x.argmax(dim=0), [1, 1, 1])
    r = x.max(dim=0, keepdim=True)
    same(r.values, [[5, 3, 6]])
    same(r.indices, [[1, 1, 1]])
    v, i = x.max(1)
    same(v, [2, 6])
    same(i, [1, 2])
    same(x.amax(1, keepdim=True), [[2], [6]])
    same(x.argmax(dim=1, keepdim=True), [[1], [2]])
    assert x[:, :2].max().item() == 5 and x[:, :2].amax().item() == 5 and x[:, :2].argmax().item() == 2


@pytest.mark.parametrize("dtype", ["int32", "int64", "float32", "float64"])
def test_dim_arg_reduction_scalar(T, dtype):
    x = T.tensor(4, dtype=getattr(T, dtype))
    for fn in ("argmax", "argmin"):
        f = getattr(x, fn)
        assert f().item() == 0 and f(dim=None).item() == 0 and f(dim=0).item() == 0
        same(f(dim=0, keepdim=True), 0, "int64")


@pytest.mark.parametrize("fn_name", ["mean", "median", "nanmedian", "mode", "norm", "prod", "std", "sum",
                                     "var", "max", "min", "amax", "amin"])
def test_dim_reduction_fns(T, fn_name):
    def fn(x, dim, keepdim=False, out=None):
        if fn_name == "norm":
            return T.norm(x, 2, dim, keepdim, out=out)
        ans = getattr(T, fn_name)(x, dim, keepdim=keepdim, out=out)
        return ans[0] if isinstance(ans, tuple) else ans

    x = T.randn(3, 4, 5)
    for dim in range(3):
        same(fn(x, dim).unsqueeze(dim), values(fn(x, dim, keepdim=True)))
        assert fn(x, dim).ndim == 2 and fn(x, dim, keepdim=True).ndim == 3
    x = T.randn(1)
    assert tuple(fn(x, 0).shape) == () and tuple(fn(x, 0, keepdim=True).shape) == (1,)
    x = T.randn(3, 1, 5)
    same(fn(x, 1).unsqueeze(1), values(fn(x, 1, keepdim=True)))
    y = T.randn(5, 3)
    if fn_name in ("median", "nanmedian", "mode", "max", "min"):
        vals = T.randn(5, 3)
        idx = T.zeros(5, 3).long() - 1
        getattr(T, fn_name)(y, 1, keepdim=False, out=(vals[:, 1], idx[:, 1]))
        ev, ei = getattr(T, fn_name)(y, 1, keepdim=False)
        same(vals[:, 1], values(ev))
        same(idx[:, 1], values(ei))
        return
    x = T.randn(5, 3)
    fn(y, 1, keepdim=False, out=x[:, 1])
    same(x[:, 1], values(fn(y, 1)))


def test_dim_reduction_less_than_64(T, request):
    xfail_on_chainrule(T, request, "NumPy arrays have at most 64 dims: a 65-d tensor cannot be made")
    x = T.randn(*([1] * 65))
    for op in (T.mean, T.sum, T.nansum, T.std, T.logsumexp, T.var):
        for dim in (64, -1):
            raises(RuntimeError, "only tensors with up to 64 dims are supported", op, x, dim=dim)


@pytest.mark.parametrize("dtype", ["int64", "int32", "int16", "uint8", "bool", "float32", "float64",
                                   "complex64", "complex128"])
@pytest.mark.parametrize("op", ["sum", "prod", "cumsum", "cumprod"])
def test_reduce_integer_upcast(T, op, dtype):
    f = getattr(T, op)

    def fn(x, **kw):
        return f(x, **kw) if op in ("sum", "prod") else f(x, 0, **kw)

    x = T.ones(3, 4, 5, dtype=getattr(T, dtype))
    floating = dtype.startswith(("float", "complex"))
    expected = dtype if floating else "int64"
    assert dtype_name(fn(x)) == expected
    same(fn(x), values(fn(x.to(getattr(T, expected)))))
    if dtype.startswith("float"):
        others = ["float32" if dtype == "float64" else "float64", "int32", "complex64"]
    elif dtype.startswith("complex"):
        others = ["complex64" if dtype == "complex128" else "complex128", "int32", "float32"]
    else:
        others = ["int32" if dtype != "int32" else "int16", "float32", "complex64"]
    for other in others:
        got = fn(x, dtype=getattr(T, other))
        assert dtype_name(got) == other
        same(got, values(fn(x.to(getattr(T, other)))))
    if op != "sum" and op != "prod":
        return
    out = T.ones(4, 5, dtype=getattr(T, others[0]))
    result = f(x, 0, out=out)
    assert dtype_name(result) == others[0]
    same(result, values(f(x.to(getattr(T, others[0])), 0)))
    raises(RuntimeError, "", lambda: f(x, 0, out=out, dtype=getattr(T, others[1])))


def test_sum_of_bool_and_mean_of_int(T):
    b = T.tensor([True, False, True])
    same(b.sum(), 2, "int64")
    same(T.tensor([1, 2, 3], dtype=T.int8).sum(), 6, "int64")
    raises(RuntimeError, r"mean\(\): could not infer output dtype. Input dtype must be either a floating "
           r"point or complex dtype. Got: Long", T.tensor([1, 2, 3]).mean)
    raises(RuntimeError, "Got: Bool", b.mean)
    same(T.tensor([1, 2, 3]).mean(dtype=T.float64), 2.0, "float64")
    a = T.randint(-5, 5, (3, 4, 5))
    close(a.mean(dtype=T.float32), values(a.to(T.float32).mean()))


def test_mean_out(T):
    a = T.tensor([[[1.0, 1.0, 1.0, 1.0]], [[2.0, 2.0, 2.0, 2.0]], [[3.0, 3.0, 3.0, 3.0]]])
    out = T.empty((1, 1, 4))
    returned = T.mean(a, dim=0, keepdim=True, out=out)
    assert returned is out
    same(out, [[[2.0, 2.0, 2.0, 2.0]]])


def test_mode(T):
    n = 10
    x = T.arange(1.0, n * n + 1).reshape(n, n).clone()
    x[:2] = 1
    x[:, :2] = 1
    x0 = x.clone()
    expected_indices = np.ones(n, dtype=np.int64)
    expected_indices[:2] = n - 1  # the position of the last appearance of the mode
    v, i = T.mode(x, keepdim=False)
    same(v, np.ones(n))
    same(i, expected_indices, "int64")
    rv, ri = T.tensor(()), T.tensor((), dtype=T.long)
    T.mode(x, keepdim=False, out=(rv, ri))
    same(rv, np.ones(n))
    same(ri, expected_indices)
    v, i = T.mode(x, 0, False)
    same(v, np.ones(n))
    same(i, expected_indices)
    same(x, values(x0))


def test_mode_boolean(T):
    for shape in ((10, 10), (4, 2048), (1, 4096)):
        a = T.zeros(shape, dtype=T.bool)
        a[:, (shape[1] - 1) // 2:] = True
        v, i = a.mode(-1)
        same(v, np.ones(shape[0], dtype=bool))
        same(a.gather(1, i.unsqueeze(1)).squeeze(1), values(v))
        a.fill_(False)
        a[:, shape[1] // 2 + 1:] = True
        v, i = a.mode(-1)
        same(v, np.zeros(shape[0], dtype=bool))
        same(a.gather(1, i.unsqueeze(1)).squeeze(1), values(v))


def test_mode_out_wrong_dtype(T):
    for x_ty, v_ty, i_ty, which in [("uint8", "int8", "int64", "values"), ("float32", "float64", "int64", "values"),
                                    ("uint8", "uint8", "int8", "indices"),
                                    ("float32", "float32", "float64", "indices")]:
        x = T.ones(10, dtype=getattr(T, x_ty))
        v = T.ones(10, dtype=getattr(T, v_ty))
        i = T.ones(10, dtype=getattr(T, i_ty))
        raises(RuntimeError, "expected scalar type .* but got .* for " + which, T.mode, x, -1, True, out=(v, i))


def test_minmax_out_illegal_dtype(T):
    x = T.randn(5, 5)
    vv, vi = T.empty(5), T.empty(5, dtype=T.long)
    bv, bi = T.empty(5, dtype=T.int32), T.empty(5, dtype=T.float64)
    for fn in (T.max, T.min):
        fn(x, dim=0, out=(vv, vi))
        same(vv, values(fn(x, 0).values))
        same(vi, values(fn(x, 0).indices))
        for out in ((bv, vi), (vv, bi), (bv, bi)):
            raises(RuntimeError, "scalar type|dtype", fn, x, dim=0, out=out)
    T.amax(x, dim=0, out=vv)
    same(vv, values(x).max(0))
    T.amin(x, dim=0, out=vv)
    same(vv, values(x).min(0))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_max_min_with_inf(T, dtype):
    a = T.tensor([[-inf, -inf, inf, 3], [inf, inf, -inf, -1]], dtype=getattr(T, dtype))
    assert bool(T.all(T.max(a, dim=1).values == inf)) and bool(T.all(T.amax(a, dim=1) == inf))
    assert T.max(a).item() == inf and T.amax(a).item() == inf
    assert bool(T.all(T.min(a, dim=1).values == -inf)) and bool(T.all(T.amin(a, dim=1) == -inf))
    assert T.min(a).item() == -inf and T.amin(a).item() == -inf


def _aminmax_min(T):
    return lambda x, dim=None, keepdim=False: T.aminmax(x, dim=dim, keepdim=keepdim)[0]


def _aminmax_max(T):
    return lambda x, dim=None, keepdim=False: T.aminmax(x, dim=dim, keepdim=keepdim)[1]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "bool"])
@pytest.mark.parametrize("name", ["max", "min", "amax", "amin", "aminmax_min", "aminmax_max"])
def test_minmax_against_numpy(T, name, dtype):
    fn = {"aminmax_min": _aminmax_min(T), "aminmax_max": _aminmax_max(T)}.get(name) or getattr(T, name)
    ref = np.amax if name.endswith("max") else np.amin
    if name.startswith("aminmax") and dtype == "bool":
        pytest.skip("aminmax rejects bool")
    rng = np.random.default_rng(43)

    def make(shape):
        if dtype.startswith("float"):
            return rng.standard_normal(shape).astype(dtype)
        if dtype == "bool":
            return rng.integers(0, 2, shape).astype(bool)
        return rng.integers(-1000, 1000, shape).astype(dtype)

    for data in (make((100, 100)), make((10, 10, 10))[:, 4]):
        same(fn(T.tensor(data)), ref(data))
    x = T.tensor(make((5, 5)))
    for xin, d in itertools.product((x, x.t()), (0, 1)):
        result = fn(xin, d, False) if not name.startswith("aminmax") else fn(xin, dim=d)
        v = result[0] if isinstance(result, tuple) else result
        same(v, ref(values(xin), d))
        if isinstance(result, tuple):
            i = result[1]
            rows = T.arange(5)
            same(xin[rows, i] if d == 1 else xin[i, rows], values(v))
    if dtype.startswith("float"):
        for index in (0, 4, 99):
            data = make(100)
            data[index] = nan
            x = T.tensor(data)
            if name in ("max", "min"):
                v, i = fn(x, 0)
                assert math.isnan(v.item()) and i.item() == index
            assert math.isnan(fn(x).item())


def test_invalid_0dim_aminmax(T):
    raises(RuntimeError, "not implemented", lambda: T.aminmax(T.tensor(1.0, dtype=T.complex64), dim=0))


def test_amin_amax_some_dims(T):
    x = T.rand(4, 6, 7, 5, 3)
    for n in range(2, 5):
        for dim in itertools.combinations(range(5), n):
            for keepdim in (False, True):
                amin2, amax2 = x, x
                for i, d in enumerate(dim):
                    d = d if keepdim else d - i
                    amin2 = T.amin(amin2, dim=d, keepdim=keepdim)
                    amax2 = T.amax(amax2, dim=d, keepdim=keepdim)
                same(T.amin(x, dim=dim, keepdim=keepdim), values(amin2))
                same(T.amax(x, dim=dim, keepdim=keepdim), values(amax2))


@pytest.mark.parametrize("dtype", ["int16", "int32", "int64", "float16", "float32", "float64"])
def test_argminmax_multiple(T, dtype):
    rng = np.random.default_rng(44)
    t = np.ones((3, 3), dtype=dtype)
    for data in [t]:
        same(T.argmax(T.tensor(data)), np.argmax(data))
        same(T.argmin(T.tensor(data)), np.argmin(data))
    if dtype.startswith("float"):
        t[2, 2] = nan
        same(T.argmax(T.tensor(t)), np.argmax(t))
        same(T.argmin(T.tensor(t)), np.argmin(t))
    for ndims in range(1, 5):
        shape = tuple(rng.integers(5, 10, ndims))
        for extremal in (False, True):
            if dtype.startswith("float"):
                data = (rng.standard_normal(shape) * 50).astype(dtype)
                if extremal:
                    data[rng.standard_normal(shape) > 0.5] = nan
                    data[rng.standard_normal(shape) > 0.5] = inf
                    data[rng.standard_normal(shape) > 0.5] = -inf
            else:
                data = rng.integers(15, 100, shape).astype(dtype)
            numbers = data[~np.isnan(data)] if data.dtype.kind == "f" else data
            hi, lo = (numbers.max(), numbers.min()) if numbers.size else (0, 0)
            data[rng.standard_normal(shape) > 0.5] = hi + 1 if np.isfinite(hi) else hi
            data[rng.standard_normal(shape) > 0.5] = lo - 1 if np.isfinite(lo) else lo
            for arr in (data, data.T):
                x = T.tensor(np.ascontiguousarray(arr)) if arr is data else T.tensor(data).T
                same(T.argmax(x), np.argmax(arr))
                same(T.argmin(x), np.argmin(arr))
                d = int(rng.integers(0, ndims))
                same(T.max(x, dim=d)[1], np.argmax(arr, axis=d))
                same(T.min(x, dim=d)[1], np.argmin(arr, axis=d))
    for data in ([[1, 5], [2, 10], [3, 3]], [[1, 5], [2, 10], [0, 0]]):
        arr = np.array(data, dtype=dtype)
        for a, x in ((arr, T.tensor(arr)), (arr.T, T.tensor(arr).T)):
            same(T.argmax(x, dim=1), np.argmax(a, axis=1))
            same(T.argmin(x, dim=1), np.argmin(a, axis=1))
            same(T.max(x, dim=1)[1], np.argmax(a, axis=1))
            same(T.min(x, dim=1)[1], np.argmin(a, axis=1))


def test_argminmax_axis_with_dim_one(T):
    n = 32768
    x = T.zeros(1, n)
    for fn in ("argmax", "argmin"):
        f = getattr(x, fn)
        same(f(dim=0), np.zeros(n, dtype=np.int64), "int64")
        same(f(dim=-2), np.zeros(n))
        same(f(dim=0, keepdim=True), np.zeros((1, n)))
        same(f(dim=-2, keepdim=True), np.zeros((1, n)))


def test_argmax_ties_take_first_and_nan_wins(T):
    x = T.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 1.0, 1.0]])
    same(x.argmax(1), [1, 0])
    same(x.argmin(1), [3, 2])
    same(x.max(1).indices, [1, 0])
    same(x.min(1).indices, [3, 2])
    y = T.tensor([1.0, nan, 5.0, nan])
    assert y.argmax().item() == 1 and y.argmin().item() == 1
    assert math.isnan(y.max().item()) and math.isnan(y.amin().item())


def test_nansum(T):
    rng = np.random.default_rng(45)
    for dtype in ("float32", "float64", "int64", "int32", "uint8"):
        for noncontiguous, dim in itertools.product((True, False), (0, 1, None)):
            data = rng.uniform(-50, 50, (17, 34)).astype(dtype) if dtype.startswith("float") else \
                rng.integers(0, 50, (17, 34)).astype(dtype)
            if dtype.startswith("float"):
                data[data < 10] = nan
            x = T.tensor(data)
            if noncontiguous:
                x, data = x[:, ::2], data[:, ::2]
            kw = {} if dim is None else {"dim": dim}
            close(T.nansum(x, **kw), np.nansum(data, axis=dim), rtol=1e-5)
            summed = dtype_name(T.sum(x))
            assert dtype_name(T.nansum(x, **kw)) == summed


def test_nansum_out_dtype_and_complex(T):
    x = T.tensor([1.0, nan, 2.0])
    same(T.nansum(x, dtype=T.float64), 3.0, "float64")
    same(T.nansum(T.tensor([1, 2, 3]), dtype=T.int32), 6, "int32")
    raises(RuntimeError, "nansum does not support complex inputs|nansum on CPU does not support complex",
           T.nansum, T.randn(3, 3, dtype=T.complex64))


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64"])
def test_nanmean_integral_types(T, dtype):
    for shape in ((), (0,), (1,), (3, 4, 5), (2, 0, 3)):
        t = T.zeros(shape, dtype=getattr(T, dtype))
        raises(RuntimeError, r"nanmean\(\): expected input to have floating point or complex dtype but got \w+",
               T.nanmean, t)


def test_nanmean(T):
    data = np.array([[1.0, nan, 3.0], [nan, nan, nan], [4.0, 5.0, 6.0]])
    x = T.tensor(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dim in (None, 0, 1, -1):
            kw = {} if dim is None else {"dim": dim}
            close(T.nanmean(x, **kw), np.nanmean(data, axis=dim))
            close(x.nanmean(**kw), np.nanmean(data, axis=dim))
        close(T.nanmean(x, 1, keepdim=True), np.nanmean(data, axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int16", "int64", "float16", "float32", "float64",
                                   "complex64"])
def test_count_nonzero(T, dtype):
    rng = np.random.default_rng(46)
    for ndims in range(4):
        shape = tuple(rng.integers(2, 5, ndims))
        data = rng.integers(0, 3, shape) * (rng.random(shape) > 0.5)
        if dtype.startswith("float"):
            data = np.where(rng.random(shape) > 0.8, nan, data)
        a = data.astype(dtype) if dtype != "bool" else data > 0
        x = T.tensor(a)
        same(T.count_nonzero(x), np.count_nonzero(a), "int64")
        for n in range(1, ndims + 1):
            for dims in itertools.permutations(range(ndims), n):
                same(T.count_nonzero(x, dim=dims), np.count_nonzero(a, axis=dims), "int64")
        if ndims:
            same(x.count_nonzero(dim=-1), np.count_nonzero(a, axis=-1))


def test_prod_bool(T):
    for val in ([True, True], [True, False], [False, False], [], [False] * 256):
        t = T.tensor(val, dtype=T.bool)
        assert T.prod(t, dtype=T.bool).item() == bool(np.prod(np.array(val), dtype=bool))
        got = T.prod(t)
        assert got.item() == int(np.prod(np.array(val, dtype=bool)))
        assert dtype_name(got) == "int64"


def test_prod_out_and_values(T):
    x = T.rand(20, 20, dtype=T.float64)
    res2 = T.tensor((), dtype=T.float64)
    T.prod(x, 1, out=res2)
    close(res2, np.prod(values(x), 1), rtol=1e-12)
    x = T.tensor([[2.0, 0.0, 3.0], [1.0, -2.0, 4.0]])
    same(x.prod(), 0.0)
    same(x.prod(0), [2.0, -0.0, 12.0])
    same(x.prod(1, keepdim=True), [[0.0], [-8.0]])


def test_sum_out(T):
    x = T.rand(100, 100, dtype=T.float64)
    res2 = T.tensor((), dtype=T.float64)
    T.sum(x, 1, out=res2)
    same(res2, values(T.sum(x, 1)))
    x = T.rand(10, 10, 10, dtype=T.float64)
    res2 = T.tensor((), dtype=T.float64)
    T.sum(x, (2, 1), out=res2)
    close(res2, values(x.sum(2).sum(1)), rtol=1e-12)


def test_sum_all(T):
    for t in (T.tensor([1, 2, 3, 4, 5], dtype=T.float64), T.randn(2000, dtype=T.float64),
              T.randn(2000, 2, dtype=T.float64)[:, 0]):
        close(t.sum(), math.fsum(t.reshape(-1).tolist()), rtol=1e-12, atol=1e-12)
    same(T.tensor([True, False, True]).sum(), 2)


def test_var_mean_and_std_mean(T):
    x = T.rand(4, 6, 7, 5, 3)
    for dim in [0, 2, (0, 1), (1, 3, 4), (4, 2)]:
        for unbiased, keepdim in itertools.product((False, True), (False, True)):
            var1, mean1 = T.var_mean(x, dim=dim, unbiased=unbiased, keepdim=keepdim)
            std1, mean2 = T.std_mean(x, dim=dim, unbiased=unbiased, keepdim=keepdim)
            close(var1, values(x.var(dim=dim, unbiased=unbiased, keepdim=keepdim)))
            close(std1, values(x.std(dim=dim, unbiased=unbiased, keepdim=keepdim)))
            close(mean1, values(x.mean(dim=dim, keepdim=keepdim)))
            close(mean2, values(x.mean(dim=dim, keepdim=keepdim)))
    for unbiased in (False, True):
        var1, mean1 = T.var_mean(x, unbiased=unbiased)
        close(var1, values(x.var(unbiased=unbiased)))
        close(mean1, values(x.mean()))


CORRECTION_ARGS = [*itertools.product((None, 0, 1), (None, 0, 10, 30), (False, True)), (None, -100, True)]


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_std_var_correction_vs_numpy(T, dtype):
    rng = np.random.default_rng(47)
    data = rng.uniform(-9, 9, (20, 20))
    if dtype.startswith("complex"):
        data = data + 1j * rng.uniform(-9, 9, (20, 20))
    data = data.astype(dtype)
    x = T.tensor(data)
    rtol = 1e-4 if dtype in ("float32", "complex64") else 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dim, correction, keepdim in CORRECTION_ARGS:
            ddof = 1 if correction is None else correction
            for name in ("var", "std"):
                expected = np.asarray(getattr(np, name)(data, axis=dim, ddof=ddof, keepdims=keepdim))
                got = values(getattr(T, name)(x, dim=dim, correction=correction, keepdim=keepdim)).copy()
                expected[np.isinf(expected)] = nan
                got[np.isinf(got)] = nan
                np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-6)
                assert dtype_name(getattr(T, name)(x, dim=dim, correction=correction)) == \
                    dtype.replace("complex64", "float32").replace("complex128", "float64")
            kw = dict(dim=dim, correction=correction, keepdim=keepdim)
            mean = T.mean(x, dim=dim, keepdim=keepdim) if dim is not None else T.mean(x)
            if dim is None and keepdim:
                mean = mean.reshape((1, 1))
            v2, m2 = T.var_mean(x, **kw)
            close(v2, values(T.var(x, **kw)), rtol=rtol)
            close(m2, values(mean), rtol=rtol)
            s2, m3 = T.std_mean(x, **kw)
            close(s2, values(T.std(x, **kw)), rtol=rtol)
            close(m3, values(mean), rtol=rtol)


def test_warn_invalid_degrees_of_freedom(T):
    x = T.randn(10, 20)
    for f in (T.std, T.var, T.var_mean, T.std_mean):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            f(x, dim=-1, correction=20)
        assert any("degrees of freedom is <= 0" in str(m.message) for m in w), f


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_logsumexp(T, dtype):
    rng = np.random.default_rng(48)
    data = rng.standard_normal((5, 4))
    if dtype.startswith("complex"):
        data = data + 1j * rng.standard_normal((5, 4))
    data = data.astype(dtype)
    data[1, :] = -inf
    a = T.tensor(data)
    if dtype.startswith("complex"):
        m = np.max(data.real, axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        with np.errstate(divide="ignore"):
            expected = np.log(np.sum(np.exp(data - m), axis=1)) + m[:, 0]
    else:
        expected = _np_logsumexp(data, 1)
    got = a.logsumexp(1)
    assert tuple(got.shape) == (5,)
    close(got, expected, rtol=1e-5)
    b = T.zeros(5, 2, dtype=getattr(T, dtype))
    c = b[:, 0]
    T.logsumexp(a, 1, out=c)
    close(b[:, 0], expected, rtol=1e-5)


def test_logsumexp_integral_promotion(T):
    data = np.random.default_rng(49).integers(-100, 100, (5, 4))
    got = T.tensor(data).logsumexp(1)
    assert dtype_name(got) == "float32"
    close(got.to(T.float64), _np_logsumexp(data.astype(np.float64), 1), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logsumexp_all_dims_and_edges(T, dtype):
    dt = getattr(T, dtype)
    data = np.random.default_rng(50).standard_normal((3, 4, 5)).astype(dtype)
    data[1] = -inf
    a = T.tensor(data)
    expected = _np_logsumexp(data.ravel())
    for got in (a.logsumexp([0, 1, 2]), T.logsumexp(a, (0, 1, 2)), a.logsumexp((-1, 0, 1))):
        assert tuple(got.shape) == ()
        close(got, expected, rtol=1e-5)
    assert tuple(T.logsumexp(a, (0, 1, 2), keepdim=True).shape) == (1, 1, 1)
    assert tuple(T.logsumexp(a[0], dim=0, keepdim=True).shape) == (1, 5)
    assert T.logsumexp(T.empty(0, dtype=dt), 0).item() == -inf
    assert T.logsumexp(T.tensor([5.0], dtype=dt), 0).item() == 5.0
    assert T.logsumexp(T.full((2, 3), -inf, dtype=dt), (0, 1)).item() == -inf
    assert T.logsumexp(T.full((2, 3), inf, dtype=dt), (0, 1)).item() == inf


def test_logsumexp_backward_all_dims(T):
    x = T.randn(3, 4, dtype=T.float64, requires_grad=True)
    T.logsumexp(x, dim=(0, 1)).backward()
    assert tuple(x.grad.shape) == (3, 4)
    close(x.grad.sum(), 1.0)
    d = values(x)
    close(x.grad, np.exp(d - _np_logsumexp(d.ravel())))
    x2 = x.detach().clone().requires_grad_(True)
    seen = []
    x2.register_hook(lambda g: seen.append(tuple(g.shape)))
    T.logsumexp(x2, dim=(0, 1), keepdim=True).backward()
    assert seen == [(3, 4)]
    same(x2.grad, values(x.grad))


def test_reduce_dtype_gradients(T):
    for op, has_no_dim, takes_dtype in ((T.sum, True, True), (T.prod, True, True), (T.cumsum, False, True),
                                        (T.cumprod, False, True), (T.logcumsumexp, False, False)):
        x = T.randn(3, 3, requires_grad=True)
        if has_no_dim:
            g1, = T.autograd.grad([op(x)], [x])
            g2, = T.autograd.grad([op(x, dtype=T.double)], [x])
            close(g1, values(g2), rtol=1e-5)
            assert dtype_name(g2) == "float32"
        gi = T.randn(op(x, dim=0).shape)
        g1, = T.autograd.grad([op(x, dim=0)], [x], gi)
        if takes_dtype:
            g2, = T.autograd.grad([op(x, dim=0, dtype=T.double)], [x], gi.double())
        else:
            g2, = T.autograd.grad([op(x.double(), dim=0)], [x], gi.double())
        close(g1, values(g2), rtol=1e-5, atol=1e-5)
        assert dtype_name(g2) == "float32"


def test_median_real_values(T):
    rng = np.random.default_rng(51)
    for dtype in ("int32", "int64", "float32", "float64"):
        for ndim in range(4):
            shape = tuple(rng.choice(np.arange(1, 12), ndim, replace=False))
            data = (rng.standard_normal(shape) * 10).astype(dtype)
            t = T.tensor(data)
            res = t.median()
            same(res, values(t.nanmedian()))
            k = (t.numel() - 1) // 2
            same(res, np.sort(data.ravel())[k])
            if t.numel() % 2 == 1:
                same(res, np.median(data).astype(dtype))
            for dim in range(ndim):
                v, i = t.median(dim, True)
                nv, ni = t.nanmedian(dim, True)
                same(nv, values(v))
                size = shape[dim]
                same(v, np.take(np.sort(data, dim), [(size - 1) // 2], axis=dim))
                same(t.gather(dim, i), values(v))


def test_median_nan_values(T):
    rng = np.random.default_rng(52)
    for ndim in range(4):
        shape = tuple(rng.choice(np.arange(1, 12), ndim, replace=False))
        data = rng.random(shape)
        data[data < 0.1] = nan
        t = T.tensor(data)
        for op, np_op in ((T.median, np.median), (T.nanmedian, np.nanmedian)):
            res = op(t)
            num_nan = int(np.isnan(data).sum())
            k = data.size - 1 if op is T.median and num_nan else (data.size - num_nan - 1) // 2
            same(res, np.sort(data.ravel())[k])
            if (data.size - num_nan) % 2 == 1:
                same(res, np_op(data))
            for dim in range(ndim):
                v, i = op(t, dim, True)
                size = shape[dim]
                nans = np.isnan(data).sum(dim, keepdims=True)
                if op is T.median:
                    kk = np.where(nans > 0, size - 1, (size - 1) // 2)
                else:
                    kk = (size - nans - 1) // 2
                same(v, np.take_along_axis(np.sort(data, dim), kk, dim))
                same(t.gather(dim, i), values(v))


def test_median_corner_cases(T):
    def check(op, a, args, key):
        res = op(T.tensor(a), *args)
        if not args:
            same(res, key)
        elif len(key) == 1:
            same(res[0], key[0])
        else:
            same(res[0], key[0])
            same(res[1], key[1])

    check(T.median, nan, [], nan)
    check(T.median, [], [], nan)
    check(T.nanmedian, nan, [], nan)
    check(T.median, nan, [0], [nan, 0])
    check(T.nanmedian, nan, [0], [nan, 0])
    check(T.median, [nan], [0, True], [[nan], [0]])
    check(T.nanmedian, [nan], [0, True], [[nan], [0]])
    check(T.median, [[nan, nan], [1, 2]], [0], [[nan, nan]])
    check(T.nanmedian, [[nan, nan], [1, 2]], [0], [[1, 2.0]])
    check(T.median, [[nan, nan], [1, 2]], [1], [[nan, 1]])
    check(T.nanmedian, [[nan, nan], [1, 2]], [1], [[nan, 1.0]])
    a = T.arange(12)
    same(a[::2].median(), 4)
    same(a[::2].nanmedian(), 4)
    a = a.reshape(3, 4)
    same(a.T.median(), 5)
    same(a[::2, ::2].median(-1)[0], [0, 8])
    same(a[::2, ::2].nanmedian(-1)[0], [0, 8])
    a = T.arange(12).reshape(2, 3, 2)
    same(a.T.median(), 5)
    same(a[:, ::2, :].median(-1)[0], [[0, 4], [6, 10]])


def test_kthvalue(T):
    rng = np.random.default_rng(53)
    data = rng.standard_normal((4, 6, 5))
    x = T.tensor(data)
    for k in (1, 3, 6):
        v, i = T.kthvalue(x, k, 1)
        same(v, np.sort(data, 1)[:, k - 1])
        same(x.gather(1, i.unsqueeze(1)).squeeze(1), values(v))
    v, i = x.kthvalue(2, keepdim=True)
    same(v, np.sort(data, -1)[..., 1:2])
    raises(RuntimeError, r"selected number k out of range", T.kthvalue, x, 7, 1)
    raises(RuntimeError, r"selected number k out of range", T.kthvalue, x, 0, 1)
    s = T.tensor([3.0, 1.0, nan, 2.0])
    v, i = s.kthvalue(4)
    assert math.isnan(v.item()) and i.item() == 2
    same(s.kthvalue(1).values, 1.0)
    same(T.tensor(5.0).kthvalue(1).values, 5.0)


def test_tensor_compare_ops_empty(T):
    x = T.randn(2, 0, 4)
    fns = {"amax": T.amax, "amin": T.amin, "max": lambda *a, **k: T.max(*a, **k).values,
           "min": lambda *a, **k: T.min(*a, **k).values, "median": lambda *a, **k: T.median(*a, **k).values,
           "argmax": T.argmax, "argmin": T.argmin,
           "kthvalue": lambda *a, **k: T.kthvalue(*a, 1, **k).values}
    for name, fn in fns.items():
        for dim in (2, -1):
            assert tuple(fn(x, dim=dim).shape) == (2, 0)
            assert tuple(fn(x, dim=dim, keepdim=True).shape) == (2, 0, 1)
        assert dtype_name(fn(x, dim=2)) == ("int64" if name.startswith("arg") else "float32")
        raises(IndexError, "Expected reduction dim", fn, x, dim=1)
        if name in ("argmax", "argmin"):
            raises(IndexError, "Expected reduction dim", fn, x)


def test_empty_reduction_errors(T):
    e = T.tensor([])
    for name in ("max", "min", "amax", "amin"):
        raises(RuntimeError, rf"{name}\(\): Expected reduction dim to be specified for input.numel\(\) == 0. "
               "Specify the reduction dim with the 'dim' argument.", getattr(e, name))
    for name in ("argmax", "argmin"):
        raises(IndexError, rf"{name}\(\): Expected reduction dim to be specified for input.numel\(\) == 0.",
               getattr(e, name))
    raises(RuntimeError, r"aminmax\(\): cannot compute aminmax over an empty dimension as the operation has no "
           "identity", T.aminmax, e)
    for name in ("max", "amax", "argmax", "min"):
        raises(IndexError, rf"{name}\(\): Expected reduction dim 0 to have non-zero size", getattr(e, name), 0)
    raises(IndexError, r"max\(\): Expected reduction dim 1 to have non-zero size", T.zeros(2, 0).max, 1)
    same(T.zeros(2, 0).amax(0), np.zeros(0, dtype=np.float32), "float32")


@pytest.mark.parametrize("name, identity", [("prod", 1.0), ("sum", 0.0), ("norm", 0.0), ("mean", nan),
                                            ("var", nan), ("std", nan), ("logsumexp", -inf), ("nansum", 0.0)])
def test_tensor_reduce_ops_empty(T, name, identity):
    fn = getattr(T, name)
    x = T.randn(2, 0, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dim in (2, -1):
            assert tuple(fn(x, dim=dim).shape) == (2, 0)
            assert tuple(fn(x, dim=dim, keepdim=True).shape) == (2, 0, 1)
        for dim in (1, -2):
            same(fn(x, dim=dim), np.full((2, 4), identity, dtype=np.float32), "float32")
            same(fn(x, dim=dim, keepdim=True), np.full((2, 1, 4), identity, dtype=np.float32))
        same(fn(x) if name != "logsumexp" else fn(x, (0, 1, 2)), np.float32(identity))
        if name in ("prod", "sum"):
            same(fn(T.zeros(0, 3, dtype=T.int32), 0), np.full(3, identity), "int64")


def test_quantile(T):
    rng = np.random.default_rng(54)
    inputs = [rng.standard_normal(tuple(rng.integers(2, 6, i))) for i in range(1, 4)]
    for a in inputs:
        a[rng.integers(0, 20, a.shape) == 0] = nan
    inputs += [np.array(0.75), np.ones(1), np.ones((1, 2, 1)), np.array([nan]),
               np.array([[nan, nan], [1, 2]]), np.array([[nan, nan], [nan, 2]])]
    quantiles = [rng.random(i) for i in range(0, 4)] + [np.array(0.5), np.array([0.0, 1.0])]
    for op in ("quantile", "nanquantile"):
        for data, q, keepdim in itertools.product(inputs, quantiles, (True, False)):
            a, qt = T.tensor(data), T.tensor(q)
            for interpolation in ("linear", "lower", "higher", "midpoint", "nearest"):
                for dim in [None] + list(range(data.ndim)):
                    got = getattr(T, op)(a, qt, dim=dim, keepdim=keepdim, interpolation=interpolation)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        expected = getattr(np, op)(data, q, axis=dim, method=interpolation, keepdims=keepdim)
                    close(got, np.asarray(expected), rtol=1e-10, atol=1e-10)
    out = T.empty(2)
    T.quantile(T.tensor([1.0, 2.0, 3.0, 4.0]), T.tensor([0.25, 0.5]), out=out)
    same(out, [1.75, 2.5])


def test_quantile_backward(T):
    def check(a, q, dim, expected_grad, ops=("quantile", "nanquantile")):
        for op in ops:
            t = T.tensor(a, requires_grad=True)
            getattr(T, op)(t, T.tensor(q), dim).sum().backward()
            close(t.grad, expected_grad)

    check([1.0, 2, 3], 0.5, 0, [0, 1, 0])
    check([1.0, 2, 3, 4], 0.5, 0, [0, 0.5, 0.5, 0])
    check([3.0, 1, 4, 2], 0.5, 0, [0.5, 0, 0, 0.5])
    check([1.0, 2, 3, 4], [0.25, 0.5, 0.75], 0, [0.25, 1.25, 1.25, 0.25])
    check([[1.0, 2], [2, 1]], 0.0, 0, [[1, 0], [0, 1]])
    check([[1.0, 2], [4, 3]], 1.0, 1, [[0, 1], [1, 0]])
    check([1, nan, 2], 0.5, 0, [0, 1, 0], ["quantile"])
    check([1, nan, 2], 0.5, 0, [0.5, 0, 0.5], ["nanquantile"])


def test_quantile_error(T):
    def check(a, q, args, kwargs, message):
        at = T.tensor(a)
        qt = T.tensor(q) if isinstance(q, list) else q
        raises(RuntimeError, r"quantile\(\) " + message, lambda: T.quantile(at, qt, *args, **kwargs))

    check([], 0.5, [], {}, r"input tensor must be non-empty")
    check([1.0], [[1.0]], [], {}, r"q must be a scalar or 1D tensor")
    check([1], 0.5, [], {}, r"input tensor must be either float or double dtype")
    check([1.0], [1], [], {}, r"q tensor must be same dtype as the input tensor")
    check([1.0], -1.0, [], {}, r"q must be in the range \[0, 1\] but got -1")
    check([1.0], 1.1, [], {}, r"q must be in the range \[0, 1\] but got 1.1")
    check([1.0], 0.5, [], {"out": T.empty([], dtype=T.int32)}, r"out tensor must be same dtype as the input tensor")
    check([1.0], [1.0], [None, False], {"interpolation": "random_mode"},
          r"interpolation must be one of linear, lower, higher, midpoint or nearest, but got random_mode")
    check([1.0], [0.5, 1.1, -1], [], {}, r"q values must be in the range \[0, 1\]")


def test_bincount(T):
    raises(RuntimeError, "1-d non-negative integral", T.bincount, T.tensor([1, -1]))
    raises(RuntimeError, "1-d non-negative integral", T.bincount, T.tensor([[1, 2], [3, 4]]))
    raises(RuntimeError, "not implemented", T.bincount, T.tensor([1.0, 0.3]))
    raises(RuntimeError, "minlength should be >= 0", T.bincount, T.tensor([1, 3]), T.tensor([0.2, 0.2]),
           minlength=-1)
    raises(RuntimeError, "1-d", T.bincount, T.tensor([1, 0]), T.tensor([[1.0, 0.3], [1.0, 0.3]]))
    raises(RuntimeError, "same length", T.bincount, T.tensor([1, 0]), T.tensor([1.0, 0.3, 0.5]))
    same(T.bincount(T.tensor([], dtype=T.long)), np.zeros(0), "int64")
    same(T.bincount(T.tensor([], dtype=T.long), minlength=10), np.zeros(10), "int64")
    same(T.tensor([0, 3, 2, 1, 3], dtype=T.uint8).bincount(), [1, 1, 1, 2], "int64")
    same(T.tensor([0, 1, 2, 3, 255], dtype=T.uint8).bincount(),
         values(T.tensor([0, 1, 2, 3, 255], dtype=T.int16).bincount()))
    same(T.bincount(T.tensor([1, 1, 1, 1]), minlength=5), [0, 4, 0, 0, 0], "int64")
    got = T.bincount(T.tensor([0, 1, 1, 1, 4]), T.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))
    close(got, [0.1, 0.9, 0, 0, 0.5])
    assert dtype_name(got) == "float32"
    same(T.bincount(T.tensor([0, 1, 1, 1, 4]), T.tensor([1, 2, 3, 4, 5], dtype=T.int8)), [1, 9, 0, 0, 5], "float64")
    inputs = T.tensor([[0, 0], [3, 1], [2, 1], [1, 1], [3, 4]])
    weights = T.tensor([[0.1, 1], [0.2, 2], [0.3, 3], [0.4, 4], [0.5, 5]])
    same(inputs[:, 0].bincount(), [1, 1, 1, 2])
    same(inputs[:, 1].bincount(weights[:, 1]), [1, 9, 0, 0, 5], "float32")
    same(inputs[:, 1].contiguous().bincount(weights[:, 1]), [1, 9, 0, 0, 5])
    same(T.zeros((32, 2), dtype=T.int64)[:, 0].bincount(), [32])
    same(T.ones((32, 2), dtype=T.int64)[:, 0].bincount(), [0, 32])
    same(T.ones(100000, dtype=T.int8).bincount(), [0, 100000])


def test_histc(T):
    f32 = T.float32
    raises(RuntimeError, "bins must be > 0", T.histc, T.tensor([1], dtype=f32), bins=-1)
    same(T.histc(T.tensor([]), min=0, max=3), np.zeros(100), "float32")
    expected = np.zeros(100)
    expected[[0, 99]] = 1
    same(T.histc(T.tensor([2, 5], dtype=f32)), expected)
    same(T.histc(T.ones(5), bins=5), [0, 0, 5, 0, 0])
    same(T.histc(T.ones(5), bins=5, min=2, max=3), [0, 0, 0, 0, 0])
    same(T.histc(T.tensor([2, 4, 2, 2, 5, 4], dtype=f32), bins=5, min=1, max=5), [0, 3, 0, 2, 1])
    same(T.histc(T.tensor([1, 2, 1], dtype=f32), bins=4, min=0, max=3), [0, 2, 1, 0])
    same(T.histc(T.tensor([1, 2, 1], dtype=T.float64), bins=4, min=0, max=3), [0, 2, 1, 0], "float64")
    same(T.histc(T.tensor(0, dtype=f32), bins=1, min=0, max=3), [1])
    for data in ([inf], [-inf], [-inf, inf], [1.0, 2.0, inf]):
        raises(RuntimeError, r"range of \[[\w,+\-\.\ ]+\] is not finite", T.histc, T.tensor(data))
    same(T.histc(T.tensor([inf]), bins=1, min=0, max=3), [0])
    same(T.histc(T.tensor([1.0, 2.0, inf]), bins=4, max=3), [0, 1, 1, 0])
    raises(RuntimeError, r"range of \[nan, nan\] is not finite", T.histc, T.tensor([nan]))
    same(T.histc(T.tensor([1.0, 2.0, nan]), bins=4, max=3), [0, 1, 1, 0])
    raises(RuntimeError, "max must be larger than min", T.histc, T.tensor([1.0, 2.0, 3.0]), bins=4, min=5, max=1)
    same(T.histc(T.tensor([1.0, 2, 1]), bins=4, min=5, max=5), [2, 0, 0, 1])
    for dt in ("float32", "float64"):
        fmin, fmax = np.finfo(dt).min, np.finfo(dt).max
        assert T.histc(T.tensor([fmin] * 3, dtype=getattr(T, dt)), bins=4).sum().item() == 3.0
        assert T.histc(T.tensor([fmax] * 3, dtype=getattr(T, dt)), bins=4).sum().item() == 3.0

    rng = np.random.default_rng(55)

    def against_np(data, bins=100, lo=0, hi=0):
        if lo == 0 and hi == 0:
            lo, hi = float(data.min()), float(data.max())
        got = T.histc(T.tensor(data), bins=bins, min=lo, max=hi)
        same(got, np.histogram(data, bins=bins, range=(lo, hi))[0].astype(np.float32))

    against_np(np.array([1.0, 2, 1], dtype=np.float32))
    against_np(rng.standard_normal(5000).astype(np.float32))
    against_np(rng.standard_normal(301).astype(np.float32), bins=10)
    against_np(rng.standard_normal(201).astype(np.float32), lo=0.1, hi=1)
    against_np(rng.standard_normal((3, 5, 7, 2)).astype(np.float32))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "int64", "float32", "float64"])
def test_histc_min_max_errors(T, dtype):
    raises(RuntimeError, "max must be larger than min", T.histc, T.tensor([1, 2, 3], dtype=getattr(T, dtype)),
           bins=4, min=5, max=1)


def test_histogram(T):
    rng = np.random.default_rng(56)
    for shape in ((), (0,), (1,), (1, 5), (3, 5), (2, 3, 5)):
        for bin_ct, weighted, density in itertools.product((1, 4, 9), (True, False), (True, False)):
            data = rng.uniform(-9, 9, shape).astype(np.float32)
            w = rng.uniform(0, 9, shape).astype(np.float32) if weighted else None
            x, wt = T.tensor(data), (T.tensor(w) if weighted else None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hist, edges = T.histogram(x, bin_ct, weight=wt, density=density)
                exp_hist, _ = np.histogram(data, values(edges), weights=w, density=density)
                close(hist, exp_hist.astype(np.float32), rtol=1e-5, atol=1e-6)
                close(edges, np.histogram_bin_edges(data, bin_ct), rtol=1e-5, atol=1e-5)
                rng_ = tuple(sorted(rng.uniform(-9, 9, 2)))
                hist, edges = T.histogram(x, bin_ct, range=rng_, weight=wt, density=density)
                close(edges, np.histogram_bin_edges(data, bin_ct, range=rng_), rtol=1e-5, atol=1e-5)
                exp_hist, _ = np.histogram(data, values(edges), weights=w, density=density)
                close(hist, exp_hist.astype(np.float32), rtol=1e-5, atol=1e-6)
                bins = np.sort(rng.uniform(-9, 9, bin_ct + 1)).astype(np.float32)
                hist, edges = T.histogram(x, T.tensor(bins), weight=wt, density=density)
                same(edges, bins)
                exp_hist, _ = np.histogram(data, bins, weights=w, density=density)
                close(hist, exp_hist.astype(np.float32), rtol=1e-5, atol=1e-6)
    values_ = T.tensor([1.0, 2.0, 1.0])
    a = T.histogram(values_, 3)
    b = T.histogram(values_, 3, range=None, weight=None, density=False)
    same(a.hist, values(b.hist))
    same(a.bin_edges, values(b.bin_edges))


def test_histogram_error_handling(T):
    f32, f64 = T.float32, T.float64
    raises(RuntimeError, "not implemented for", T.histogram, T.tensor(1, dtype=T.int32), 1)
    raises(RuntimeError, "input tensor and bins tensors should have the same dtype", T.histogram,
           T.tensor(1.0, dtype=f32), T.tensor([0.0, 1.0], dtype=f64))
    raises(RuntimeError, "input tensor and weight tensor should have the same dtype",
           lambda: T.histogram(T.tensor(1.0), 1, weight=T.tensor(1.0, dtype=f64)))
    raises(RuntimeError, "bins tensor should have one dimension", T.histogram, T.ones(2, 2), T.ones(2, 2))
    raises(RuntimeError, "bins tensor should have at least 1 element", T.histogram, T.ones(0), T.ones(0))
    raises(RuntimeError, "bins must be > 0", T.histogram, T.tensor(1.0), -1)
    raises(RuntimeError, "if weight tensor is provided it should have the same shape as the input tensor "
           "excluding its innermost dimension", lambda: T.histogram(T.ones(2, 2), 1, weight=T.ones(1)))
    raises(RuntimeError, "min should not exceed max", lambda: T.histogram(T.tensor(1.0), 2, range=(1, 0)))
    raises(RuntimeError, r"range \[nan, nan\] is not finite", T.histogram, T.tensor([nan]), 2)


REDUCTIONS = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "amax": np.amax, "amin": np.amin,
              "nansum": np.nansum, "logsumexp": _np_logsumexp}


@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction_dims_vs_numpy(T, name):
    """Every way of naming the dims (one, negative, a tuple, a list, unsorted, keepdim) against NumPy."""
    rng = np.random.default_rng(57)
    data = rng.uniform(0.5, 1.5, (2, 3, 4))
    x = T.tensor(data)
    fn, ref = getattr(T, name), REDUCTIONS[name]
    dims = (0, -1, 2, (0, 2), (-1, 0), [1, 2], (2, 0, 1), (-3, -2))
    if name == "prod":  # (one dim only: PyTorch's prod takes no tuple)
        dims = dims[:3]
        for dim in ((0, 2), [1]):
            raises(TypeError, "prod", fn, x, dim)
            raises(TypeError, "prod", lambda dim=dim: x.prod(dim=dim))
    for dim in dims:
        for keepdim in (False, True):
            axis = tuple(dim) if isinstance(dim, list) else dim
            close(fn(x, dim, keepdim=keepdim), ref(data, axis=axis, keepdims=keepdim), rtol=1e-12)
            close(getattr(x, name)(dim=dim, keepdim=keepdim), ref(data, axis=axis, keepdims=keepdim), rtol=1e-12)
    raises(IndexError, "Dimension out of range", fn, x, 3)
    if name != "prod":
        raises(IndexError, "Dimension out of range", fn, x, (0, -4))


def test_reduction_dim_empty_tuple(T):
    x = T.tensor([[1.0, 2.0], [3.0, 4.0]])
    same(x.sum(dim=()), 10.0)
    same(x.mean(dim=[]), 2.5)
    same(x.amax(dim=()), 4.0)
    same(T.amin(x, ()), 1.0)
    same(x.any(dim=()), [[True, True], [True, True]])


def test_reduction_gradients(T):
    x = T.tensor([[1.0, 3.0, 3.0], [2.0, 0.0, 5.0]], dtype=T.float64, requires_grad=True)
    g = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    checks = [
        (lambda: x.sum(1), [[1.0] * 3, [1.0] * 3]),
        (lambda: x.mean(0), [[0.5] * 3, [0.5] * 3]),
        (lambda: x.prod(1), [[9.0, 3.0, 3.0], [0.0, 10.0, 0.0]]),
        (lambda: x.amax(1), [[0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]),  # ties share the gradient
        (lambda: x.max(1).values, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),  # max(dim): to the index it returns
        (lambda: x.max(), [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
        (lambda: x.min(), [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        (lambda: x.median(1).values, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
        (lambda: x.cumsum(1)[:, -1], [[1.0] * 3, [1.0] * 3]),
        (lambda: x.var(1), values(x - x.mean(1, keepdim=True)) * 2 / 2),
    ]
    for make, expected in checks:
        x.grad = None
        make().sum().backward()
        close(x.grad, np.asarray(expected, dtype=np.float64), rtol=1e-12, atol=1e-12)
    x.grad = None
    (x.sum(1) * T.tensor([1.0, 2.0], dtype=T.float64)).sum().backward()
    same(x.grad, [[1.0] * 3, [2.0] * 3])
    x.grad = None
    T.nansum(T.where(x > 2.5, x, T.tensor(math.nan, dtype=T.float64))).backward()
    same(x.grad, [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    y = T.tensor(g, dtype=T.float64, requires_grad=True)
    y.logsumexp(1).sum().backward()
    e = np.exp(np.array(g))
    close(y.grad, e / e.sum(1, keepdims=True), rtol=1e-12)


def test_sum_mean_dtype_argument_and_bool(T):
    b = T.tensor([[True, False], [True, True]])
    same(b.sum(), 3, "int64")
    same(b.sum(0), [2, 1], "int64")
    same(b.sum(dtype=T.float32), 3.0, "float32")
    same(b.float().mean(), 0.75, "float32")
    same(T.tensor([100, 100], dtype=T.int8).sum(), 200, "int64")
    same(T.tensor([100, 100], dtype=T.int8).sum(dtype=T.int8), -56, "int8")
    same(T.tensor([1.5, 2.5], dtype=T.float16).sum(), 4.0, "float16")
    same(T.tensor([1.5, 2.5]).sum(dtype=T.float64), 4.0, "float64")
    same(T.tensor([1, 2], dtype=T.int32).mean(dtype=T.float64), 1.5, "float64")
    same(T.tensor([1, 2, 3]).prod(dtype=T.float32), 6.0, "float32")
    same(T.sum(T.tensor([1, 2], dtype=T.int32), dtype=T.int32), 3, "int32")
    same(T.mean(T.tensor([1.0, 2.0]), dtype=T.float64), 1.5, "float64")


# result dtype of each reduction for each input dtype (PyTorch's test_result_dtype): "same" keeps the input's,
# "int64" promotes integers and bools, "float" promotes them to the default dtype, "real" takes a complex
# input's real dtype, "error" is refused
RESULT_DTYPES = {
    "sum": ("int64", "same"), "prod": ("int64", "same"), "nansum": ("int64", "same"),
    "amax": ("same", "same"), "amin": ("same", "same"), "argmax": ("index", "index"),
    "argmin": ("index", "index"), "count_nonzero": ("index", "index"), "logsumexp": ("float", "same"),
    "median": ("same", "same"), "nanmedian": ("same", "same"), "mean": ("error", "same"),
    "nanmean": ("error", "same"), "std": ("error", "real"), "var": ("error", "real"),
}


@pytest.mark.parametrize("name", list(RESULT_DTYPES))
@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32",
                                   "float64"])
def test_result_dtype(T, name, dtype):
    integral, floating = RESULT_DTYPES[name]
    rule = integral if dtype in ("bool", "uint8", "int8", "int16", "int32", "int64") else floating
    t = T.tensor(np.array([1, 0, 3, 2, 1]).astype(dtype))
    if dtype == "bool" and name in ("argmax", "argmin", "median", "nanmedian", "logsumexp"):
        return  # (PyTorch's kernels for these take no bools, each in its own words)
    fn = getattr(T, name)
    call = (lambda: fn(t, 0)) if name == "logsumexp" else (lambda: fn(t))
    if rule == "error":
        raises(RuntimeError, "", call)
        return
    expected = {"same": dtype, "int64": "int64", "index": "int64", "float": "float32", "real": dtype}[rule]
    assert dtype_name(call()) == expected


@pytest.mark.parametrize("name", ["sum", "prod", "mean", "amax", "amin", "std", "var", "logsumexp", "nansum",
                                  "argmax", "median"])
def test_noncontiguous(T, name):
    """A reduction of a non-contiguous tensor (a slice, a transpose, an expanded one) equals that of its
    contiguous copy (PyTorch's test_noncontiguous_*)."""
    rng = np.random.default_rng(58)
    fn = getattr(T, name)
    cases = [(T.tensor(rng.uniform(-1, 1, (10, 10)))[:, ::2], 1), (T.tensor(rng.uniform(-1, 1, (10, 10)))[::2, :], 0),
             (T.tensor(rng.uniform(-1, 1, (5, 5, 5)))[::2, ::3, 1:-1:2], None),
             (T.tensor(rng.uniform(-1, 1, (5, 5))).T, None),
             (T.tensor(rng.uniform(-1, 1, (2, 3))).unsqueeze(1).expand(-1, 5, -1), None)]
    for i, t_dim in enumerate(cases):
        t, dim = t_dim
        assert i == 4 or not t.is_contiguous()  # (chainrule's expand reports contiguous strides: see the report)
        if dim is None and name == "logsumexp":
            dim = tuple(range(t.ndim))
        args = () if dim is None else (dim,)
        got, expected = fn(t, *args), fn(t.contiguous(), *args)
        got = got[0] if isinstance(got, tuple) else got
        expected = expected[0] if isinstance(expected, tuple) else expected
        close(got, values(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, identity", [("sum", 0), ("prod", 1), ("amax", -math.inf), ("amin", math.inf),
                                            ("nansum", 0), ("logsumexp", -math.inf), ("all", True), ("any", False)])
def test_identity(T, name, identity):
    """Padding with the identity changes nothing (PyTorch's test_identity)."""
    t = T.tensor(np.random.default_rng(59).uniform(-3, 3, 10))
    if name in ("all", "any"):
        t = t > 0
    t[1::2] = identity
    fn = getattr(T, name)
    args = (0,) if name == "logsumexp" else ()
    close(fn(t, *args), values(fn(t[::2], *args)), rtol=1e-12)


@pytest.mark.parametrize("name, propagates", [("sum", True), ("mean", True), ("prod", True), ("amax", True),
                                              ("amin", True), ("std", True), ("var", True), ("logsumexp", True),
                                              ("median", True), ("nansum", False), ("nanmean", False),
                                              ("nanmedian", False)])
def test_nan_policy(T, name, propagates):
    fn = getattr(T, name)
    args = (0,) if name == "logsumexp" else ()
    t = T.tensor([1.0, 2.0, math.nan, 4.0, 5.0])
    if propagates:
        assert math.isnan(fn(t, *args).item())
    else:
        u = T.tensor(np.random.default_rng(60).uniform(-3, 3, 10))
        u[1::2] = math.nan
        close(fn(u, *args), values(fn(u[::2], *args)), rtol=1e-12)


def test_no_numpy_warnings_for_edge_reductions(T):
    """-inf rows in logsumexp and one sample in var/std give -inf and NaN quietly (PyTorch's only warning is
    its own degrees-of-freedom one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        close(T.tensor([[-math.inf, -math.inf], [0.0, 0.0]]).logsumexp(1), [-math.inf, math.log(2)])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            assert math.isnan(T.tensor([3.0]).std().item())
            assert math.isnan(T.tensor([[3.0], [4.0]]).var(1)[0].item())
        assert all("degrees of freedom" in str(w.message) for w in caught)
