"""The rest of PyTorch's test/test_reductions.py that tests/test_ported_reductions.py does not cover: the
ReductionOpInfo shape rules (dim default/None/int/list/[] with keepdim, duplicate and off-bounds dims), reducing
empty slices, the NumPy-reference checks (duplicate and extremal values), out= for sum/prod/cumsum/cumprod in
another dtype, logsumexp (complex, every dim, edges, hooks) and complex logcumsumexp, aminmax, mode's out dtypes,
std/var with out= and std_mean/var_mean(correction=), histc/histogram/histogramdd corner cases, argmax/kthvalue and
any/all of empty tensors, and the gradients of cumulative reductions taking dtype=.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), against literals or
NumPy computed by hand.
"""

import itertools
import math
import warnings

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values

inf, nan = math.inf, math.nan

# PyTorch's own warnings, which its tests let pass: std/var of one element, a complex result cast into a real out
pytestmark = pytest.mark.filterwarnings("ignore:.*degrees of freedom is <= 0", "ignore:Casting complex values to real")

# (name, takes a list of dims, identity on an empty slice or None, integers become floats)
REDUCTIONS = [("sum", True, 0.0, False), ("mean", True, None, True), ("prod", False, 1.0, False),
              ("amax", True, None, False), ("amin", True, None, False), ("argmax", False, None, False),
              ("argmin", False, None, False), ("std", True, None, True), ("var", True, None, True),
              ("nansum", True, 0.0, False), ("nanmean", True, None, True), ("logsumexp", True, -inf, True),
              ("count_nonzero", True, 0, False), ("all", True, 1, False), ("any", True, 0, False)]
NAMES = [r[0] for r in REDUCTIONS]


def _reduced_shape(shape, dim, keepdim):
    if dim is None:
        return [1] * len(shape) if keepdim else []
    dims = {d % max(len(shape), 1) for d in ([dim] if isinstance(dim, int) else dim)}
    return [1 if i in dims else n for i, n in enumerate(shape) if i not in dims or keepdim]


def _call(T, name, t, **kw):
    if name == "logsumexp" and "dim" not in kw:  # (PyTorch 2.13's logsumexp takes no default dim)
        kw["dim"] = tuple(range(t.ndim))
    if name == "count_nonzero":
        kw.pop("keepdim", None)
    return getattr(T, name)(t, **kw)


@pytest.mark.parametrize("name, multi, identity, promotes", REDUCTIONS)
def test_dim_keepdim_shapes(T, name, multi, identity, promotes):
    """PyTorch's test_dim_default/none/single/multi/unsorted (and _keepdim): the reduced shape."""
    def check(ndim, **kw):
        shape = [2, 3, 4, 5][:ndim]
        t = T.ones(shape) * 0.5
        got = _call(T, name, t, **kw)
        keepdim = kw.get("keepdim", False) and name != "count_nonzero"
        dim = kw.get("dim")
        if name == "logsumexp" and "dim" not in kw:
            dim = None
        assert list(got.shape) == _reduced_shape(shape, dim, keepdim), (name, ndim, kw, got.shape)

    for ndim in range(3):
        check(ndim)
        if name not in ("count_nonzero", "logsumexp", "sum", "mean", "prod"):  # (those refuse keepdim alone)
            check(ndim, keepdim=True)
            check(ndim, dim=None, keepdim=True)
    for keepdim in (False, True):
        for ndim, dim in ((0, 0), (1, 0), (2, -1), (3, 1)):
            check(ndim, dim=dim, keepdim=keepdim)
        if multi:
            check(1, dim=[0], keepdim=keepdim)
            check(3, dim=[0, 2], keepdim=keepdim)
            check(4, dim=[3, 0, 2], keepdim=keepdim)


@pytest.mark.parametrize("name, multi, identity, promotes", REDUCTIONS)
def test_dim_errors(T, name, multi, identity, promotes):
    """A repeated dim is a RuntimeError, a list of dims a TypeError where only one is taken, and an off-bounds dim
    an IndexError (PyTorch's test_dim_multi_duplicate, test_dim_multi_unsupported, test_dim_offbounds)."""
    t = T.ones(2, 3, 4)
    if multi:
        raises(RuntimeError, "appears multiple times in the list of dims", _call, T, name, t, dim=[0, 1, 1, 2])
        raises(RuntimeError, "appears multiple times", _call, T, name, t, dim=(0, -3))
    else:
        raises(TypeError, "", _call, T, name, t, dim=[0, 2])
    raises(IndexError, r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)",
           _call, T, name, T.ones(2, 3), dim=2)


@pytest.mark.parametrize("name, multi, identity, promotes", REDUCTIONS)
def test_empty_tensor_slices(T, name, multi, identity, promotes):
    """Reducing an empty slice gives the identity, else NaN where the op makes floats, else an IndexError; a
    non-empty slice of an empty tensor gives an empty result (PyTorch's test_empty_tensor_empty_slice and
    test_empty_tensor_nonempty_slice)."""
    t = T.ones(0, 2, 3)
    for dim in [0] + ([[0, 2]] if multi else []):
        shape = _reduced_shape([0, 2, 3], dim, False)
        if identity is not None:
            got = _call(T, name, t, dim=dim)
            same(got, np.full(shape, identity, dtype=values(got).dtype))
        elif promotes:
            same(_call(T, name, t, dim=dim), np.full(shape, nan, np.float32))
        else:
            raises(IndexError, "Expected reduction dim 0 to have non-zero size", _call, T, name, t, dim=dim)
    for dim in [1] + ([[1, 2]] if multi else []):
        assert list(_call(T, name, t, dim=dim).shape) == _reduced_shape([0, 2, 3], dim, False)


# the reductions with a NumPy reference (float64 in, compared without the dtype)
NUMPY_REFS = {"sum": np.sum, "prod": np.prod, "mean": np.mean, "amax": np.amax, "amin": np.amin,
              "nansum": np.nansum, "nanmean": np.nanmean, "std": lambda a, axis=None: np.std(a, axis=axis, ddof=1),
              "var": lambda a, axis=None: np.var(a, axis=axis, ddof=1), "count_nonzero": np.count_nonzero,
              "all": np.all, "any": np.any, "argmax": np.argmax, "argmin": np.argmin}


def _check_ref(T, name, a, dims):
    t = T.tensor(a)
    for dim in dims:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = NUMPY_REFS[name](a) if dim is None else NUMPY_REFS[name](a, axis=dim)
        got = _call(T, name, t) if dim is None else _call(T, name, t, dim=dim)
        np.testing.assert_allclose(values(got).astype(expected.dtype if expected.dtype != bool else bool), expected,
                                   rtol=1e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name", sorted(NUMPY_REFS))
def test_ref_small_duplicate_and_extremal_values(T, name):
    """Against NumPy: a small 4-d tensor over one dim and pairs of dims, a tensor holding duplicates, and a vector
    holding 0, 1, NaN, inf or -inf (PyTorch's test_ref_small_input, test_ref_duplicate_values,
    test_ref_extremal_values, test_ref_scalar_input)."""
    rng = np.random.default_rng(7)
    multi = name not in ("prod", "argmax", "argmin")
    a = rng.uniform(-2, 2, (5, 3, 4, 2))
    a[a == 0] = 1.0
    _check_ref(T, name, a, [None, 0, 1, 3] + ([(0, 2), (1, 3)] if multi else []))
    b = rng.uniform(-2, 2, (4, 4))
    b[::2, ::2] = b[1::2, 1::2]
    _check_ref(T, name, b, [None, 0, 1])
    _check_ref(T, name, np.array(1.25), [None])
    for extremal in (0.0, 1.0, nan, inf, -inf):
        c = rng.uniform(-1, 1, 5)
        c[2] = extremal
        _check_ref(T, name, c, [None, 0])


def test_var_unbiased_and_stability(T):
    t = T.tensor(np.random.default_rng(1).standard_normal(100))
    same(t.var(0), values(t.var(0, unbiased=True)))
    same(t.var(), values(t.var(unbiased=True)))
    same(t.var(unbiased=False), values(t.var(0, unbiased=False)))
    same(t.std(0), values(t.std(0, unbiased=True)))
    same(t.std(unbiased=False), values(t.std(0, unbiased=False)))
    close(T.tensor([1.0, 2.0]).var(unbiased=True), 0.5)
    close(T.tensor([1.0, 2.0]).var(unbiased=False), 0.25)
    close(T.tensor([1.0, 2.0, 3.0]).var(unbiased=True), 1.0)
    close(T.tensor([1.0, 2.0, 3.0]).var(unbiased=False), 2.0 / 3.0)
    t = T.tensor([2281.5, 2281.25])  # float32: a naive Σx² - n·mean² loses it all
    same(t.var(0), np.float32(0.03125))
    same(t.var(), np.float32(0.03125))
    same(t.unsqueeze(1).var(0), np.array([0.03125], np.float32))


def test_dim_reduction_lastdim(T):
    x = T.tensor(np.random.default_rng(2).standard_normal((3, 5, 40)).astype(np.float32))[:, :, 0:40:2]
    for op in (T.norm, T.argmax, T.argmin):
        close(op(x, dim=-1), values(op(x.contiguous(), dim=-1)), rtol=1e-6)
    same(T.argmax(x, dim=-1), np.argmax(values(x), -1))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_logsumexp_vs_numpy_and_out(T, dtype):
    """logsumexp of a row of -inf is -inf; out= a column of a wider tensor writes in place (PyTorch's
    test_logsumexp; complex as in PyTorch: ln Σ e^z on the principal branch)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 4))
    if dtype.startswith("complex"):
        a = a + 1j * rng.standard_normal((5, 4))
    a = a.astype(dtype)
    a[1, :] = -inf
    with np.errstate(divide="ignore"):
        expected = np.log(np.exp(a.astype(np.complex128 if dtype.startswith("complex") else np.float64)).sum(1))
    got = T.logsumexp(T.tensor(a), 1)
    assert dtype_name(got) == dtype
    tol = 1e-5 if dtype in ("float32", "complex64") else 1e-12
    close(got, expected, rtol=tol, atol=tol)
    b = T.zeros(5, 2, dtype=getattr(T, dtype))
    c = b[:, 0]
    T.logsumexp(T.tensor(a), 1, out=c)
    close(b[:, 0], expected, rtol=tol, atol=tol)
    same(b[:, 1], np.zeros(5, dtype))


def test_logsumexp_every_dim_keepdim_and_edges(T):
    a = T.tensor(np.random.default_rng(4).standard_normal((3, 4, 5)))
    expected = np.log(np.exp(values(a)).sum())
    close(a.logsumexp((0, 1, 2)), expected, rtol=1e-12)
    close(T.logsumexp(a, [2, 0, 1], keepdim=True), np.full((1, 1, 1), expected), rtol=1e-12)
    assert tuple(T.logsumexp(a, (0, 1), keepdim=True).shape) == (1, 1, 5)
    assert tuple(T.logsumexp(a, 0).shape) == (4, 5) and tuple(T.logsumexp(a, 0, keepdim=True).shape) == (1, 4, 5)
    same(T.logsumexp(T.empty(0), 0), np.float32(-inf))
    same(T.logsumexp(T.tensor([5.0]), 0), np.float32(5.0))
    same(T.logsumexp(T.full((2, 3), -inf), (0, 1)), np.float32(-inf))
    same(T.logsumexp(T.full((2, 3), inf), (0, 1)), np.float32(inf))
    same(T.logsumexp(T.tensor([inf, -inf, 1.0]), 0), np.float32(inf))
    same(T.logsumexp(T.tensor([nan, 1.0]), 0), np.float32(nan))
    same(T.logsumexp(T.tensor([5.0 + 2.0j]), 0), np.complex64(5 + 2j))
    z = T.tensor([1.0 + 1.0j, 2.0 + 2.0j])
    assert tuple(T.logsumexp(z, 0).shape) == () and tuple(T.logsumexp(z, 0, keepdim=True).shape) == (1,)
    # integers and bools become the default float
    same(T.logsumexp(T.tensor([[1, 2], [3, 4]]), 1), np.log(np.exp([[1.0, 2], [3, 4]]).sum(1)).astype(np.float32))


@pytest.mark.parametrize("keepdim", [False, True])
def test_logsumexp_backward_shapes(T, keepdim):
    """The gradient reaching x has x's shape and sums to 1 (softmax); every dim at once equals the dims in turn
    (PyTorch's test_logsumexp_backward_dim_none and _intermediate_shapes)."""
    x = T.tensor(np.random.default_rng(5).standard_normal((2, 3, 4)), requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(tuple(g.shape)))
    y = T.logsumexp(x, (0, 1, 2), keepdim=keepdim)
    assert tuple(y.shape) == ((1, 1, 1) if keepdim else ())
    y.backward(T.ones_like(y))
    assert seen == [(2, 3, 4)]
    close(x.grad.sum(), 1.0, rtol=1e-12)
    e = np.exp(values(x))
    close(x.grad, e / e.sum(), rtol=1e-12)


def test_logcumsumexp_complex(T):
    """Against the slow ln Σ_{j≤i} e^z (PyTorch's test_logcumsumexp_complex): imaginary parts compared modulo 2π,
    and where the real part is -inf, the imaginary part left out (it is moot)."""
    def standardize(z):
        z = np.array(z, dtype=np.complex128)
        z = z.real + 1j * np.mod(z.imag, 2 * np.pi)
        return np.where(np.isneginf(z.real), complex(-inf, 0), z)

    def same_parts(got, expected):
        got = values(got)  # (the expected values rounded to got's precision first, as PyTorch's test's tensor)
        got, expected = standardize(got), standardize(np.asarray(expected, got.dtype))
        np.testing.assert_allclose(got.real, expected.real, rtol=1e-5)
        np.testing.assert_allclose(got.imag, expected.imag, rtol=1e-5)

    rng = np.random.default_rng(6)
    a1 = (rng.standard_normal((5, 10)) + 1j * rng.standard_normal((5, 10))).astype(np.complex64)
    for dim in (0, 1):
        slow = np.log(np.cumsum(np.exp(a1.astype(np.complex128)), axis=dim))
        np.testing.assert_allclose(standardize(values(T.logcumsumexp(T.tensor(a1), dim))), standardize(slow),
                                   rtol=1e-5, atol=1e-5)
    a2 = T.tensor([1e3 + 0j, 1e-18 + 1e4j, 1e2 + 1e-8j])
    got = standardize(values(T.logcumsumexp(a2, 0)))
    np.testing.assert_allclose(got.real, [1e3, 1e3, 1e3], rtol=1e-6)
    a3 = T.tensor([-inf + 4j, -inf + 1j, 1.2 + 2.1j, 1e10 + 1e20j, inf + 0j, inf + 1j, inf + 3j, nan + 2j])
    expected = [complex(-inf, 0), complex(-inf, 0), 1.2 + 2.1j, 1e10 + 1e20j, complex(inf, 0),
                complex(inf, np.pi / 4), complex(inf, nan), complex(nan, nan)]
    same_parts(T.logcumsumexp(a3, 0), expected)
    a4 = T.tensor([complex(-inf, inf), complex(-inf, inf), -inf + 1j, 1.2 + 2.1j, complex(2.4, inf)])
    expected = [complex(-inf, 0), complex(-inf, 0), complex(-inf, 0), 1.2 + 2.1j, complex(nan, nan)]
    same_parts(T.logcumsumexp(a4, 0), expected)


def test_sum_of_zeros_and_ones_exact(T):
    """PyTorch's test_sum_parallel (smaller): sums of 0s and 1s are exact over every dim and all dims."""
    rng = np.random.default_rng(8)
    for size in ((2, 3, 3, 3, 2, 2, 3), (1, 32770), (4, 4, 4, 4, 4)):
        nv = np.round(rng.random(size))
        tv = T.from_numpy(nv)
        same(tv.sum(), nv.sum())
        for dim in range(len(size)):
            same(tv.sum(dim), nv.sum(dim))


def test_max_min_elementwise(T):
    a = T.tensor(np.random.default_rng(9).random((20, 20)))
    b = T.tensor(np.random.default_rng(10).random((20, 20)))
    same(T.max(a, b), np.maximum(values(a), values(b)))
    same(T.min(a, b), np.minimum(values(a), values(b)))
    same(T.max(T.tensor([1.0, nan, 3]), T.tensor([2.0, 1, nan])), [2.0, nan, nan])


def test_mean_with_dtype_and_out_alias(T):
    a = T.arange(60).reshape(3, 4, 5)
    same(a.mean(dtype=T.float32), np.float32(29.5))
    same(a.to(T.float32).mean(), values(a.mean(dtype=T.float32)))
    a = T.tensor([[[1.0] * 4], [[2.0] * 4], [[3.0] * 4]])
    out = T.empty((1, 1, 4))
    assert T.mean(a, dim=0, keepdim=True, out=out) is out
    same(out, np.full((1, 1, 4), 2.0, np.float32))


@pytest.mark.parametrize("op", ["sum", "prod", "cumsum", "cumprod"])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "int64", "float32", "float64", "complex64",
                                   "complex128"])
def test_reduce_integer_upcast_out(T, op, dtype):
    """out= of any dtype: the result has out's dtype (the input cast to it first), and out's dtype must equal
    dtype= where both are given (PyTorch's _test_reduce_integer_upcast, its out= half)."""
    f = getattr(T, op)
    x = T.ones(3, 4, 5, dtype=getattr(T, dtype))
    shape = f(x, 0).shape
    floating = dtype.startswith(("float", "complex"))
    if dtype.startswith("float"):
        mixed = ["float32" if dtype == "float64" else "float64", "int32", "complex64"]
    elif dtype.startswith("complex"):
        mixed = ["complex64" if dtype == "complex128" else "complex128", "int32", "float32"]
    else:
        mixed = ["int32" if dtype != "int32" else "int16", "float32", "complex64"]
    expected = 3 if op in ("sum",) else 1
    for out_dtype in [dtype if floating else "int64"] + mixed:
        out = T.ones(shape, dtype=getattr(T, out_dtype))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (complex into real drops the imaginary parts, with a warning)
            result = f(x, 0, out=out)
        assert result is out and dtype_name(result) == out_dtype
        if op == "cumsum":
            same(out[:, 0, 0], np.array([1, 2, 3], dtype=out_dtype))
        else:
            same(out, np.full(tuple(shape), expected, dtype=out_dtype))
        same(f(x, 0, out=out, dtype=getattr(T, out_dtype)), values(out))
        other = next(d for d in ["float64", "int16", "complex128", "float32"] if d != out_dtype)
        raises(RuntimeError, "Expected out tensor to have dtype", f, x, 0, out=out, dtype=getattr(T, other))


def test_sum_into_other_dtype_casts_the_input_first(T):
    """sum(float input, out=int) adds the truncated values: 1 + 1 + 1, not int(4.7)."""
    x = T.tensor([1.5, 1.5, 1.7])
    same(T.sum(x, 0, out=T.empty((), dtype=T.int16)), np.int16(3), "int16")
    same(T.cumsum(x, 0, out=T.empty(3, dtype=T.int32)), np.array([1, 2, 3], np.int32))
    same(T.prod(T.tensor([2.5, 3.9]), 0, out=T.empty((), dtype=T.int64)), np.int64(6))
    same(T.sum(T.tensor([1.0, 2]), 0, out=T.empty((), dtype=T.bool)), np.bool_(True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same(T.sum(T.tensor([1 + 2j, 3 + 1j]), 0, out=T.empty(())), np.float32(4.0))
    raises(RuntimeError, "result type Float can't be cast to the desired output type Int",
           T.mean, x, 0, out=T.empty((), dtype=T.int32))


def test_mode_wrong_dtype(T):
    for x_ty, v_ty, i_ty, part in [("uint8", "int8", "long", "values"), ("int8", "int16", "long", "values"),
                                   ("int32", "float32", "long", "values"), ("float32", "float64", "long", "values"),
                                   ("uint8", "uint8", "int8", "indices"), ("int8", "int8", "int16", "indices"),
                                   ("int32", "int32", "float32", "indices"),
                                   ("float32", "float32", "float64", "indices")]:
        x = T.ones(10, dtype=getattr(T, x_ty))
        v, i = T.ones(10, dtype=getattr(T, v_ty)), T.ones(10, dtype=getattr(T, i_ty))
        raises(RuntimeError, f"expected scalar type .* but got .* for {part}", T.mode, x, -1, True, out=(v, i))


def test_var_mean_and_std_mean_some_and_all_dims(T):
    x = T.tensor(np.random.default_rng(11).random((4, 6, 7, 5)))
    for n in range(2, 4):
        for dim in itertools.combinations(range(4), n):
            for unbiased, keepdim in itertools.product((False, True), (False, True)):
                var, mean = T.var_mean(x, dim=dim, unbiased=unbiased, keepdim=keepdim)
                std, mean2 = T.std_mean(x, dim=dim, unbiased=unbiased, keepdim=keepdim)
                close(var, np.var(values(x), axis=dim, ddof=int(unbiased), keepdims=keepdim), rtol=1e-10)
                close(std, np.std(values(x), axis=dim, ddof=int(unbiased), keepdims=keepdim), rtol=1e-10)
                close(mean, np.mean(values(x), axis=dim, keepdims=keepdim), rtol=1e-10)
                same(mean2, values(mean))
    for unbiased in (False, True):
        var, mean = T.var_mean(x, unbiased=unbiased)
        std, _ = T.std_mean(x, unbiased=unbiased)
        close(var, values(x.var(unbiased=unbiased)), rtol=1e-12)
        close(std, values(x.std(unbiased=unbiased)), rtol=1e-12)
        close(mean, values(x.mean()), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_std_var_mean_correction(T, dtype):
    """std_mean/var_mean(correction=) equal std/var and mean taken apart; var against NumPy's ddof (PyTorch's
    test_std_mean_correction, test_var_mean_correction)."""
    rng = np.random.default_rng(12)
    a = rng.uniform(-9, 9, (20, 20))
    if dtype.startswith("complex"):
        a = a + 1j * rng.uniform(-9, 9, (20, 20))
    tensor = T.tensor(a.astype(dtype))
    for dim, correction, keepdim in [*itertools.product((None, 0, 1), (None, 0, 10, 30), (False, True)),
                                     (None, -100, True)]:
        kwargs = dict(dim=dim, correction=correction, keepdim=keepdim)
        mean = T.mean(tensor) if dim is None else T.mean(tensor, dim=dim, keepdim=keepdim)
        if dim is None and keepdim:
            mean = mean.reshape((1, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            std2, mean2 = T.std_mean(tensor, **kwargs)
            var2, mean3 = T.var_mean(tensor, **kwargs)
            close(std2, values(T.std(tensor, **kwargs)), rtol=1e-5)
            close(var2, values(T.var(tensor, **kwargs)), rtol=1e-5)
            expected = np.asarray(np.var(values(tensor).astype(np.complex128 if dtype.startswith("complex")
                                                               else np.float64), axis=dim,
                                         ddof=1 if correction is None else correction, keepdims=keepdim))
        close(mean2, values(mean), rtol=1e-5, atol=1e-6)
        close(mean3, values(mean), rtol=1e-5, atol=1e-6)
        got = values(var2).astype(np.float64)
        expected = np.where(np.isinf(expected), nan, expected)
        got = np.where(np.isinf(got), nan, got)
        np.testing.assert_allclose(got, expected, rtol=1e-4, equal_nan=True)


def test_std_var_out(T):
    """std/var with out=: an empty out is resized (PyTorch's _compare_std_var_with_numpy with use_out)."""
    x = T.tensor(np.random.default_rng(13).standard_normal((20, 20)))
    for op, np_op in ((T.var, np.var), (T.std, np.std)):
        for dim, unbiased, keepdim in itertools.product((0, 1), (False, True), (False, True)):
            out = T.empty(0, dtype=T.float64)
            result = op(x, dim, unbiased, keepdim, out=out)
            assert result is out
            close(out, np_op(values(x), axis=dim, ddof=int(unbiased), keepdims=keepdim), rtol=1e-12)


def test_all_any_of_uint8(T):
    """any/all of uint8 keep uint8 and count any non-zero byte as true (PyTorch's test_all_issue117215)."""
    a = np.random.default_rng(14).integers(0, 255, (7, 11, 3, 5)).astype(np.uint8)
    t = T.tensor(a)
    same(T.all(t, dim=0), a.all(0).astype(np.uint8), "uint8")
    same(T.any(t, dim=1, keepdim=True), a.any(1, keepdims=True).astype(np.uint8), "uint8")
    same(T.all(t, dim=0), values(t.to(T.bool).all(dim=0)).astype(np.uint8))


def _aminmax_against_numpy(T, x, dim=None, keepdim=False):
    got_min, got_max = T.aminmax(x, dim=dim, keepdim=keepdim)
    a = values(x)
    kw = {} if dim is None else dict(axis=dim, keepdims=keepdim)
    same(got_min, np.amin(a, **kw), dtype_name(x))
    same(got_max, np.amax(a, **kw), dtype_name(x))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "bool"])
def test_aminmax(T, dtype):
    """aminmax against NumPy: all dims, each dim with and without keepdim, a non-contiguous slice and a
    transpose, and NaN propagating (PyTorch's test_aminmax through _test_minmax_helper)."""
    rng = np.random.default_rng(15)

    def make(shape):
        if dtype == "bool":
            return T.tensor(rng.integers(0, 2, shape).astype(bool))
        if dtype.startswith("float"):
            return T.tensor(rng.standard_normal(shape).astype(dtype))
        return T.tensor(rng.integers(-1000, 1000, shape).astype(dtype))

    _aminmax_against_numpy(T, make((30, 30)))
    _aminmax_against_numpy(T, make((10, 10, 10))[:, 4])
    x = make((5, 5))
    for inp, dim, keepdim in itertools.product((x, x.t()), (0, 1, -1), (False, True)):
        _aminmax_against_numpy(T, inp, dim, keepdim)
    if dtype.startswith("float"):
        for index in (0, 4, 99):
            x = make((100,))
            x[index] = nan
            same(T.aminmax(x).min, np.array(nan, dtype))
            same(T.aminmax(x, dim=0).max, np.array(nan, dtype))


def test_aminmax_scalar_empty_and_out(T):
    same(T.aminmax(T.tensor(2.5), dim=0).min, np.float32(2.5))
    same(T.aminmax(T.tensor(2.5), dim=0, keepdim=True).max, np.float32(2.5))
    same(T.aminmax(T.tensor(2.5)).max, np.float32(2.5))
    raises(RuntimeError, "not implemented", T.aminmax, T.tensor(1.0, dtype=T.complex64), dim=0)
    assert tuple(T.aminmax(T.ones(0, 3), dim=1).min.shape) == (0,)
    raises(IndexError, "Expected reduction dim 0 to have non-zero size", T.aminmax, T.ones(0, 3), dim=0)
    raises(RuntimeError, "aminmax.* empty", T.aminmax, T.ones(0, 3))
    mn, mx = T.empty(3), T.empty(3)
    result = T.aminmax(T.arange(12.0).reshape(4, 3), dim=0, out=(mn, mx))
    assert result.min is mn and result.max is mx
    same(mn, np.array([0.0, 1, 2], np.float32))
    same(mx, np.array([9.0, 10, 11], np.float32))


def test_prod_out(T):
    x = T.tensor(np.random.default_rng(16).random((10, 10)).astype(np.float32))
    out = T.tensor(())
    T.prod(x, 1, out=out)
    same(out, values(T.prod(x, 1)))
    close(out, np.prod(values(x), 1), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "float32", "float64"])
def test_nansum_vs_numpy(T, dtype):
    """nansum equals NumPy's over every tuple of dims, with and without keepdim, with NaN and inf among floats
    (PyTorch's test_nansum_vs_numpy, test_nansum)."""
    rng = np.random.default_rng(17)
    for ndim in range(4):
        shape = tuple(rng.integers(2, 5, ndim))
        if dtype.startswith("float"):
            a = np.asarray(rng.standard_normal(shape) * 40).astype(dtype)
            a[rng.standard_normal(shape) > 0.8] = nan
            a[rng.standard_normal(shape) > 1.2] = inf
        else:
            a = np.asarray(rng.integers(-50, 50, shape)).astype(dtype)
        t = T.tensor(a)
        expected_dtype = dtype if dtype.startswith("float") else "int64"
        total = T.nansum(t)
        assert dtype_name(total) == expected_dtype
        close(total, np.nansum(a), rtol=1e-5)
        for n in range(1, ndim + 1):
            for dims in itertools.permutations(range(ndim), n):
                for keepdim in (False, True):
                    close(T.nansum(t, dim=dims, keepdim=keepdim), np.nansum(a, axis=dims, keepdims=keepdim),
                          rtol=1e-5, atol=1e-4)
    raises(RuntimeError, "nansum on CPU does not support complex inputs", T.nansum, T.ones(3, 3, dtype=T.complex64))


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int64", "float32"])
def test_all_any_out(T, dtype):
    """all/any with out=: a bool (or, for uint8 input, uint8) out takes the result; any other dtype is refused
    (PyTorch's _test_out_variant in test_all_any_vs_numpy)."""
    x = T.tensor([[1, 0], [2, 3]]).to(getattr(T, dtype))
    out = T.empty(2, dtype=x.dtype)
    for name, np_fn in (("all", np.all), ("any", np.any)):
        if dtype in ("bool", "uint8"):
            getattr(T, name)(x, 1, out=out)
            same(out, np_fn(values(x), 1).astype(dtype))
        else:
            raises(RuntimeError, f"{name} only supports bool tensor for result, got", getattr(T, name), x, 1, out=out)


def test_histc_corner_cases(T):
    for dtype in ("float32", "float64"):
        # min == max: the data's own span, as when neither is given
        same(T.histc(T.tensor([1.0, 2, 1], dtype=getattr(T, dtype)), bins=4, min=5, max=5),
             np.array([2, 0, 0, 1], dtype))
        for extreme in (np.finfo(dtype).min, np.finfo(dtype).max):
            same(T.histc(T.full((3,), float(extreme), dtype=getattr(T, dtype)), bins=4).sum(), np.array(3, dtype))
    got = T.histc(T.tensor([1, 2, 1], dtype=T.float16), bins=4, min=0, max=3)
    same(got, np.array([0, 2, 1, 0], np.float16), "float16")
    for dtype in ("uint8", "int8", "int32", "int64", "float32", "float64"):
        raises(RuntimeError, "max must be larger than min", T.histc, T.tensor([1, 2, 3], dtype=getattr(T, dtype)),
               bins=4, min=5, max=1)


def _histogramdd_reference(points, bins, range_, weight, density):
    d = points.shape[-1]
    flat = points.reshape(-1, d)
    ranges = None if range_ is None else [(range_[2 * i], range_[2 * i + 1]) for i in range(d)]
    w = None if weight is None else weight.reshape(-1)
    with np.errstate(invalid="ignore", divide="ignore"):  # (density of an empty histogram: 0/0)
        return np.histogramdd(flat, bins, range=ranges, weights=w, density=density)


@pytest.mark.parametrize("shape", [(1, 5), (3, 5), (1, 5, 1), (2, 3, 5), (10, 10, 3), (7, 0, 3)])
def test_histogramdd_vs_numpy(T, shape):
    """Against NumPy's histogramdd on torch's edges: one count, a count per dim, a range, a range of zero width and
    given edges, weighted or not, normalised or not (PyTorch's test_histogramdd)."""
    rng = np.random.default_rng(18)
    d = shape[-1]
    points = rng.uniform(-9, 9, shape).astype(np.float32)
    t = T.tensor(points)
    for weighted, density in itertools.product((False, True), (False, True)):
        weight = rng.uniform(0, 9, shape[:-1]).astype(np.float32) if weighted else None
        w = None if weight is None else T.tensor(weight)
        counts = [int(c) for c in rng.integers(1, 5, d)]
        lows = rng.uniform(-9, 0, d)
        span = [float(v) for pair in zip(lows, lows + rng.uniform(0, 9, d)) for v in pair]
        flat = [span[2 * (i // 2)] for i in range(2 * d)]  # each dim's range of zero width
        edges = [np.sort(rng.uniform(-9, 9, c + 1)).astype(np.float32) for c in counts]
        for bins, range_ in ((3, None), (counts, None), (counts, span), (counts, flat),
                             ([T.tensor(e) for e in edges], None)):
            hist, bin_edges = T.histogramdd(t, bins, range=range_, weight=w, density=density)
            assert len(bin_edges) == d
            np_bins = [values(e).astype(np.float64) for e in bin_edges]
            expected, _ = _histogramdd_reference(points.astype(np.float64), np_bins, None,
                                                 None if weight is None else weight.astype(np.float64), density)
            assert dtype_name(hist) == "float32"
            np.testing.assert_allclose(values(hist), expected, rtol=1e-4, atol=1e-6, equal_nan=True)
            if not isinstance(bins[0] if isinstance(bins, list) else bins, int):
                for got, given in zip(bin_edges, edges):
                    same(got, given)


def test_histogramdd_of_no_points_and_no_coordinates(T):
    hist, edges = T.histogramdd(T.ones(5, 0), bins=2)
    same(hist, np.float32(0.0))
    assert edges == () or len(edges) == 0
    same(T.histogramdd(T.ones(5, 0), bins=[], density=True).hist, np.float32(nan))
    hist, edges = T.histogramdd(T.ones(7, 0, 3), bins=2)
    same(hist, np.zeros((2, 2, 2), np.float32))
    for e in edges:
        same(e, np.array([0.0, 0.5, 1.0], np.float32))


def test_histogram_edges_as_input_and_noncontiguous_out(T):
    e = T.tensor([-2.0, 0.0, 0.5, 3.0])
    hist, edges = T.histogram(e, e)
    same(hist, np.array([1.0, 1, 2], np.float32))
    same(edges, values(e))
    hist, _ = T.histogram(e, e, weight=T.tensor([1.0, 2, 3, 4]), density=True)
    expected, _ = np.histogram(values(e), values(e), weights=[1.0, 2, 3, 4], density=True)
    close(hist, expected, rtol=1e-6)
    hist, edges = T.histogram(T.full((4,), 1.25), 3, range=(1.25, 1.25))
    expected, expected_edges = np.histogram(np.full(4, 1.25), 3, range=(1.25, 1.25))
    close(edges, expected_edges, rtol=1e-6)
    same(hist, expected.astype(np.float32))
    h, b = T.zeros(3, 2)[:, 0], T.zeros(4, 2)[:, 1]
    assert not h.is_contiguous()
    result = T.histogram(T.tensor([0.1, 0.5, 0.7, 2.0]), 3, out=(h, b))
    assert result[0] is h and result[1] is b
    same(h, np.array([3.0, 0, 1], np.float32))
    close(b, np.linspace(0.1, 2.0, 4), rtol=1e-6)


def test_argmax_argmin_kthvalue_of_empty(T):
    """Reducing a non-empty dim of an empty tensor gives an empty result; reducing its empty dim, or all of it,
    an IndexError (PyTorch's test_tensor_compare_ops_argmax_argmix_kthvalue_dim_empty)."""
    x = T.ones(2, 0, 4)
    fns = [("argmax", T.argmax, "int64"), ("argmin", T.argmin, "int64"),
           ("kthvalue", lambda t, **kw: T.kthvalue(t, 1, **kw).values, "float32")]
    for name, fn, dtype in fns:
        same(fn(x, dim=2), np.empty((2, 0), dtype), dtype)
        same(fn(x, dim=-1), np.empty((2, 0), dtype), dtype)
        same(fn(x, dim=2, keepdim=True), np.empty((2, 0, 1), dtype))
        same(fn(x, dim=-1, keepdim=True), np.empty((2, 0, 1), dtype))
        raises(IndexError, "Expected reduction dim", fn, x, dim=1)
        if name != "kthvalue":
            raises(IndexError, "Expected reduction dim", fn, x)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bool", "uint8", "int32", "int64",
                                   "complex64"])
def test_reduction_empty_any_all(T, dtype):
    """Also any/all with keepdim and no dim: every dim kept as a 1 (PyTorch's, where sum/mean refuse it)."""
    xb = T.ones(2, 0, 4).to(getattr(T, dtype))
    out_dtype = "uint8" if dtype == "uint8" else "bool"
    assert tuple(xb.any(2).shape) == (2, 0) and tuple(xb.any(2, keepdim=True).shape) == (2, 0, 1)
    same(xb.any(1), np.zeros((2, 4), out_dtype), out_dtype)
    same(xb.any(1, keepdim=True), np.zeros((2, 1, 4), out_dtype))
    same(xb.any(), np.zeros((), out_dtype), out_dtype)
    assert tuple(xb.all(2).shape) == (2, 0) and tuple(xb.all(2, keepdim=True).shape) == (2, 0, 1)
    same(xb.all(1), np.ones((2, 4), out_dtype), out_dtype)
    same(xb.all(1, keepdim=True), np.ones((2, 1, 4), out_dtype))
    same(xb.all(), np.ones((), out_dtype), out_dtype)
    same(xb.all(keepdim=True), np.ones((1, 1, 1), out_dtype), out_dtype)
    same(T.any(xb, dim=None, keepdim=True), np.zeros((1, 1, 1), out_dtype), out_dtype)
    same(T.ones(2, 3).to(getattr(T, dtype)).any(keepdim=True), np.ones((1, 1), out_dtype), out_dtype)


def test_reduce_dtype_gradients_of_cumulative_ops(T):
    """The gradient through cumsum/cumprod(dtype=double) (or logcumsumexp of a double copy) comes back in x's
    float32, with the values of the float32 op's (PyTorch's test_reduce_dtype)."""
    x = T.tensor(np.random.default_rng(19).standard_normal((3, 3)).astype(np.float32), requires_grad=True)
    gi = T.tensor(np.random.default_rng(20).standard_normal((3, 3)).astype(np.float32))
    for op, takes_dtype in ((T.cumsum, True), (T.cumprod, True), (T.logcumsumexp, False)):
        grad1, = T.autograd.grad([op(x, dim=0)], [x], gi)
        y = op(x, dim=0, dtype=T.double) if takes_dtype else op(x.double(), dim=0)
        grad2, = T.autograd.grad([y], [x], gi.double())
        assert dtype_name(grad2) == "float32"
        close(grad2, values(grad1), rtol=1e-5, atol=1e-6)
    grad, = T.autograd.grad([T.cumsum(x, 0, dtype=T.double)], [x], T.ones(3, 3, dtype=T.double))
    same(grad, np.array([[3.0] * 3, [2.0] * 3, [1.0] * 3], np.float32))
