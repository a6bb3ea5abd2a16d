"""gather, scatter, scatter_add, scatter_reduce and index_reduce, ported from PyTorch's
test/test_scatter_gather_ops.py (TestScatterGather: gather over every dtype, the scatter family against a
loop over the index with every reduce and include_self, empty indices, repeated indices, expanded
indices, nan/inf in amax/amin) with the error inputs and samples that PyTorch's OpInfos for these ops
carry in common_methods_invocations.py (error_inputs_gather, error_inputs_scatter_and_scatter_add,
sample_inputs_scatter_reduce, sample_inputs_index_reduce, checked here by float64 gradcheck).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import itertools
import warnings

import numpy as np
import pytest

from tests.ported import DTYPES, close, dtype_name, raises, same, values, xfail_on_chainrule

NUMBERS = [d for d in DTYPES if d != "bool"]
REAL = [d for d in DTYPES if not d.startswith("complex")]


def _data(T, shape, dtype, rng, low=-9, high=10):
    """Integer values (exact in every dtype, so sums and products do not depend on their order)."""
    a = rng.integers(low, high, shape)
    if dtype == "bool":
        return T.tensor(a > 0)
    if dtype == "uint8":
        a = np.abs(a)
    if dtype.startswith("complex"):
        a = a + 1j * rng.integers(low, high, shape)
    return T.tensor(a.astype(dtype))


def _index(rng, dim, size, shape, per_row, unique=True):
    """An index of `shape` whose rows along `dim` hold `per_row` positions below `size` (distinct where
    `unique`), as PyTorch's _fill_indices makes it."""
    idx = np.zeros(shape, dtype=np.int64)
    moved = np.moveaxis(idx, dim, -1)
    for row in np.ndindex(moved.shape[:-1]):
        moved[row] = rng.permutation(size)[:per_row] if unique else rng.integers(0, size, per_row)
    return idx


def _problem(seed, unique=True):
    rng = np.random.default_rng(seed)
    m, n, o = (int(v) for v in rng.integers(3, 6, 3))
    dim = int(rng.integers(0, 3))
    per_row = int(rng.integers(1, 4))
    idx_shape = [m, n, o]
    idx_shape[dim] = per_row
    idx = _index(rng, dim, [m, n, o][dim], idx_shape, per_row, unique)
    return rng, (m, n, o), dim, idx


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather(T, dtype):
    rng, shape, dim, idx = _problem(1)
    src = _data(T, shape, dtype, rng)
    got = T.gather(src, dim, T.tensor(idx))
    same(got, np.take_along_axis(values(src), idx, axis=dim), dtype)
    if not dtype.startswith("complex"):  # (max has no complex form) gather at the argmax gives the max
        src = _data(T, (3, 4, 5), dtype, rng)
        expected, where = src.max(2, True)
        same(T.gather(src, 2, where), values(expected), dtype)


def test_gather_bool(T):
    src = T.tensor([[False, True], [True, True]])
    same(T.gather(src, 1, T.tensor([[0, 0], [1, 0]])), [[False, False], [True, True]], "bool")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sparse_grad", [False, True])
def test_gather_backward_with_empty_index_tensor(T, dtype, sparse_grad):
    x = T.rand(10, 5, dtype=getattr(T, dtype), requires_grad=True)
    index = T.randint(0, 2, (3, 0), dtype=T.int64)
    out = T.gather(x, -1, index, sparse_grad=sparse_grad)
    assert out.shape == (3, 0)
    out.sum().backward()
    grad = x.grad.to_dense() if x.grad.is_sparse else x.grad
    same(grad, np.zeros((10, 5)), dtype)


def _expected_scatter(base, dim, idx, src, reduction, include_self, scatter_add=False):
    """PyTorch's reference loop: walk the index in order and reduce each source value into its position
    (in int64 or complex128/float64, so no intermediate overflows); then mean divides by the counts."""
    wide = "complex128" if base.dtype.kind == "c" else "float64" if base.dtype.kind == "f" else "int64"
    expected = base.astype(wide)
    counts = np.full(base.shape, int(include_self))
    for pos in np.ndindex(idx.shape):
        target = list(pos)
        target[dim] = idx[pos]
        target = tuple(target)
        value = src if np.isscalar(src) else src[pos]
        if scatter_add:
            expected[target] += value
            continue
        if not include_self and counts[target] == 0:
            expected[target] = value
        elif reduction in ("add", "sum", "mean"):
            expected[target] += value
        elif reduction in ("multiply", "prod"):
            expected[target] *= value
        elif reduction == "amax":
            expected[target] = max(expected[target], value)
        elif reduction == "amin":
            expected[target] = min(expected[target], value)
        else:
            expected[target] = value
        counts[target] += 1
    if reduction == "mean":
        counts = np.maximum(counts, 1)
        expected = expected / counts if wide != "int64" else expected // counts
    if base.dtype == bool:
        return expected != 0
    return expected.astype(base.dtype)


def _check_scatter(T, fn, dtype, *, reduction=None, scalar=False, unique=True, include_self=True, seed=0):
    rng, shape, dim, idx = _problem(seed, unique)
    low, high = (-3, 4) if reduction in ("prod", "multiply") else (-9, 10)  # products that fit int8
    base = _data(T, shape, dtype, rng, low, high)
    if scalar:
        src = float(rng.integers(-9, 10))
    else:  # a source larger than the index in every dimension (only its leading corner is read)
        src = _data(T, tuple(s + int(rng.integers(1, 3)) for s in idx.shape), dtype, rng, low, high)
    expected = _expected_scatter(values(base), dim, idx, src if scalar else values(src), reduction, include_self,
                                 scatter_add=fn == "scatter_add_")
    kwargs = {} if reduction is None else {"reduce": reduction}
    if fn == "scatter_reduce_":
        kwargs["include_self"] = include_self
    target = base.clone()
    with warnings.catch_warnings():  # (PyTorch deprecates scatter's reduce= with a tensor src)
        warnings.simplefilter("ignore", UserWarning)
        result = getattr(target, fn)(dim, T.tensor(idx), src, **kwargs)
    assert result is target
    if reduction == "mean" and dtype[0] in "fc":  # (a quotient: rounded, by each library its own way)
        tolerance = 1e-3 if dtype == "float16" else 1e-6
        close(target, expected, rtol=tolerance, atol=tolerance)
        assert dtype_name(target) == dtype
    else:
        same(target, expected, dtype)
    # an empty index leaves the tensor as it was, whatever its number of dimensions
    dst = _data(T, (2, 2), dtype, rng, low, high)
    empty = T.tensor([], dtype=T.int64)
    result = getattr(dst.clone(), fn)(0, empty, _data(T, (2, 2), dtype, rng, low, high), **kwargs)
    same(result, values(dst), dtype)


SCATTER_DTYPES = ["float16", "float32", "complex64"]


@pytest.mark.parametrize("dtype", SCATTER_DTYPES)
@pytest.mark.parametrize("scalar", [False, True])
def test_scatter_(T, dtype, scalar):
    _check_scatter(T, "scatter_", dtype, scalar=scalar, seed=3)


@pytest.mark.parametrize("dtype", SCATTER_DTYPES)
@pytest.mark.parametrize("reduction", ["add", "multiply"])
@pytest.mark.parametrize("scalar", [False, True])
def test_scatter__reductions(T, dtype, reduction, scalar):
    _check_scatter(T, "scatter_", dtype, reduction=reduction, scalar=scalar, seed=4)


@pytest.mark.parametrize("dtype", SCATTER_DTYPES)
def test_scatter_add_(T, dtype):
    _check_scatter(T, "scatter_add_", dtype, seed=5)
    _check_scatter(T, "scatter_add_", dtype, unique=False, seed=6)


REDUCE_DTYPES = {"sum": NUMBERS, "prod": DTYPES, "mean": NUMBERS, "amax": REAL, "amin": REAL}


@pytest.mark.parametrize("reduction,dtype", [(r, d) for r, ds in REDUCE_DTYPES.items() for d in ds])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce(T, reduction, dtype, include_self):
    _check_scatter(T, "scatter_reduce_", dtype, reduction=reduction, unique=False, include_self=include_self,
                   seed=7)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_scatter_reduce_amax_amin_propagate_nan_and_inf(T, include_self, dtype):
    inf, nan = float("inf"), float("nan")
    index = T.tensor([0, 0, 1, 1, 2, 2])
    got = T.zeros(3, dtype=getattr(T, dtype)).scatter_reduce_(
        0, index, T.tensor([1, nan, -inf, -inf, 2, inf], dtype=getattr(T, dtype)), "amax", include_self=include_self)
    same(got, [nan, 0 if include_self else -inf, inf], dtype)
    got = T.zeros(3, dtype=getattr(T, dtype)).scatter_reduce_(
        0, index, T.tensor([1, nan, -2, -inf, inf, inf], dtype=getattr(T, dtype)), "amin", include_self=include_self)
    same(got, [nan, -inf, 0 if include_self else inf], dtype)


def test_scatter_add_mult_index_base(T):
    m, n = 30, 40
    index = T.zeros(m, n, dtype=T.int64)
    src = T.ones(m, n)
    same(T.zeros(m, n).scatter_add_(0, index, src)[0, :], np.full(n, float(m)), "float32")
    same(T.zeros(m, n).scatter_add_(1, index, src)[:, 0], np.full(m, float(n)), "float32")


def test_repeated_indices_give_the_same_result_every_time(T):
    """scatter_add and every scatter_reduce over an index full of repeats: the same values on every call
    and with deterministic algorithms on (PyTorch's DeterministicGuard runs)."""
    rng = np.random.default_rng(8)
    base = T.tensor(rng.standard_normal((3, 4, 5)).astype(np.float32))
    for d in (0, 1):
        src_shape = [3, 4, 5]
        src_shape[d] = 10
        src = T.tensor(rng.standard_normal(src_shape).astype(np.float32))
        view = [1, 1, 1]
        view[d] = 10
        index = T.tensor(rng.integers(0, 3, 10)).view(view).expand(src_shape)
        runs = [base.clone().scatter_add_(d, index, src)]
        previous = T.are_deterministic_algorithms_enabled()
        T.use_deterministic_algorithms(True)
        try:
            runs.append(base.clone().scatter_add_(d, index, src))
            for reduce in ("sum", "prod", "mean", "amax", "amin"):
                first = base.scatter_reduce(d, index, src, reduce)
                same(base.scatter_reduce(d, index, src, reduce), values(first))
        finally:
            T.use_deterministic_algorithms(previous)
        same(runs[1], values(runs[0]))
        total = values(base).astype(np.float64)
        np.add.at(total, tuple(np.ix_(*[np.arange(s) for s in src_shape])[:d]) + (values(index),)
                  + tuple(np.ix_(*[np.arange(s) for s in src_shape])[d + 1:]), values(src))
        close(runs[0], total, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("input_size", [(50, 17), (50, 1), (50, 8, 7), (50, 3, 4, 5)])
def test_expanded_index_matches_its_contiguous_copy(T, input_size):
    rng = np.random.default_rng(9)
    x = T.tensor(rng.standard_normal(input_size).astype(np.float32))
    shape = [100] + [1] * (len(input_size) - 1)
    positions = rng.integers(0, 50, shape)
    positions[(positions > 1) & (positions < 4)] = 0  # some rows receive nothing
    expanded = T.tensor(positions).expand((100,) + input_size[1:])
    contiguous = expanded.contiguous()
    src = T.tensor(rng.standard_normal((100,) + input_size[1:]).astype(np.float32))
    same(x.scatter_add(0, expanded, src), values(x.scatter_add(0, contiguous, src)))
    for reduce, include_self in itertools.product(["sum", "prod", "mean", "amax", "amin"], [True, False]):
        same(x.scatter_reduce(0, expanded, src, reduce=reduce, include_self=include_self),
             values(x.scatter_reduce(0, contiguous, src, reduce=reduce, include_self=include_self)))
    same(T.gather(x, 0, expanded), values(T.gather(x, 0, contiguous)))
    same(T.gather(x, 0, expanded), np.take_along_axis(values(x), values(contiguous), 0))


def test_gather_with_an_index_of_one_column(T):
    x = T.arange(25).view(5, 5)
    index = T.arange(5).view(5, 1)
    same(T.gather(x, 0, index), [[0], [5], [10], [15], [20]], "int64")
    same(T.gather(x.to(T.float64), 0, index), [[0.0], [5.0], [10.0], [15.0], [20.0]], "float64")


def test_an_int32_index_gives_the_same_values(T):
    x = T.tensor([[1.0, 2.0], [3.0, 4.0]])
    for dtype in (T.int32, T.int64):
        index = T.tensor([[0, 0], [1, 0]], dtype=dtype)
        same(T.gather(x, 1, index), [[1.0, 1.0], [4.0, 3.0]], "float32")
        same(T.zeros(2, 2).scatter_add(1, index, x), [[3.0, 0.0], [4.0, 3.0]], "float32")
        same(T.zeros(2, 2).scatter_reduce(1, index, x, "amax", include_self=False), [[2.0, 0.0], [4.0, 3.0]])


def test_gather_errors(T):
    index = T.tensor([[0, 0], [1, 0]])
    src = T.tensor([[1.0, 2.0], [3.0, 4.0]])
    raises(RuntimeError, "Size does not match at dimension 0", T.gather, T.ones(1, 1), 1, index)
    wider = T.empty(2, 2, dtype=T.float64)
    raises(RuntimeError, "Expected out tensor to have dtype", T.gather, src, 1, index, out=wider)
    raises(RuntimeError, "Index tensor must have the same number of dimensions", T.gather, src, 1, T.tensor([0, 0]))
    vector = T.tensor([1.0, 2.0])
    raises(RuntimeError, "Index tensor must have the same number of dimensions", T.gather, vector, 0, index)
    raises(RuntimeError, "index 23 is out of bounds for dimension", T.gather, src, 1, T.tensor([[0, 23], [1, 0]]))
    raises(RuntimeError, "index -1 is out of bounds for dimension", T.gather, src, 1, T.tensor([[0, -1], [1, 0]]))
    raises(RuntimeError, "int32/int64 for index", T.gather, src, 1, T.tensor([[0.0, 0.0], [1.0, 0.0]]))


def test_out_refuses_grad_before_looking_at_its_dtype(T):
    x = T.rand(3, 4, dtype=T.float64, requires_grad=True)
    raises(RuntimeError, "don't support automatic differentiation", T.gather, x, 1, T.tensor([[0, 1]] * 3),
           out=T.zeros(3, 2))


@pytest.mark.parametrize("fn", ["scatter", "scatter_add"])
def test_scatter_errors(T, fn):
    src = T.ones(2, 5)
    index = T.tensor([[0, 1], [1, 2]])
    op = getattr(T, fn)
    raises(RuntimeError, "Expected self.dtype to be equal to src.dtype", op, T.zeros(3, 5, dtype=T.float64), 0, index,
           src)
    raises(RuntimeError, "Index tensor must have the same number of dimensions as self tensor", op, T.zeros(3, 5, 3),
           0, index, src)
    raises(RuntimeError, "Index tensor must have the same number of dimensions as src tensor", op, T.zeros(3, 5), 0,
           T.tensor([[34, 1], [1, 2]]), T.ones(2, 5, 2))
    raises(RuntimeError, "index 34 is out of bounds for dimension 0 with size 3", op, T.zeros(3, 5), 0,
           T.tensor([[34, 1], [1, 2]]), src)
    # no broadcasting: an index larger than src, or than self outside dim, is refused
    raises(RuntimeError, None, op, T.zeros(3, 5), 0, T.tensor([[0, 1, 2], [1, 2, 0]]), T.ones(2, 2))
    raises(RuntimeError, None, op, T.zeros(3, 2), 0, T.tensor([[0, 1, 2], [1, 2, 0]]), T.ones(3, 3))
    raises(RuntimeError, "reduce argument must be either", T.scatter_reduce, T.zeros(3, 5), 0, index, src, "maximum")


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [False, True])
def test_scatter_reduce_gradcheck(T, reduce, include_self):
    """PyTorch's sample_inputs_scatter_reduce, in float64 (distinct random values: amax/amin have no ties)."""
    rng = np.random.default_rng(10)
    M, S = 5, 3

    def gather_index(shape, index_dim, max_index):  # PyTorch's gather_variable: distinct along the other dim
        return _index(rng, 1 - index_dim, max_index, shape, shape[1 - index_dim])

    cases = [((M, S), 0, gather_index((S, S), 1, M), (S, S)), ((M, S), 1, gather_index((S, S), 0, S), (S, S)),
             ((M, S), -1, gather_index((S, S), 0, S), (S, S)),
             ((M, S), 0, gather_index((M, S // 2), 1, M), (M, S // 2)),
             ((M, S), 1, gather_index((M, S // 2), 0, S), (M, S // 2)), ((), 0, np.array(0), ())]
    for shape, dim, index, src_shape in cases:
        x = T.tensor(rng.uniform(0.5, 2.0, shape), requires_grad=True)
        src = T.tensor(rng.uniform(0.5, 2.0, src_shape) * rng.choice([-1, 1], src_shape), requires_grad=True)
        index_t = T.tensor(index)
        assert T.autograd.gradcheck(
            lambda a, b, d=dim, i=index_t: a.scatter_reduce(d, i, b, reduce, include_self=include_self), (x, src))
    if reduce == "prod":  # zeros among the terms: one from src, one from self, two together, none
        x = T.tensor([[0.0, 13], [0, 17], [0, 19]], dtype=T.float64, requires_grad=True)
        src = T.tensor([[0.0, 1, 2, 3], [0, 4, 0, 1], [2, 3, 5, 6]], dtype=T.float64, requires_grad=True)
        index_t = T.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]])
        assert T.autograd.gradcheck(lambda a, b: a.scatter_reduce(1, index_t, b, "prod", include_self=True), (x, src))


@pytest.mark.parametrize("reduce", ["prod", "mean", "amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_index_reduce(T, reduce, include_self):
    """PyTorch's sample_inputs_index_reduce: values against a loop over the index, then float64 gradcheck."""
    rng = np.random.default_rng(11)
    S, M = 3, 5
    for self_shape, src_shape in [((), ()), ((1,), (1,)), ((S, S), (S, M)), ((S, S, S), (S, M, S))]:
        dim = 1 if len(self_shape) >= 2 else 0
        n_index = src_shape[dim] if src_shape else 1
        index = rng.integers(0, self_shape[dim] if self_shape else 1, n_index)
        base = rng.uniform(0.5, 2.0, self_shape) * rng.choice([-1, 1], self_shape)
        src = rng.uniform(0.5, 2.0, src_shape) * rng.choice([-1, 1], src_shape)
        expected = base.copy()
        if self_shape:  # the loop: slice j of src reduced into slice index[j] of the result
            spread = np.broadcast_to(index.reshape([-1 if d == dim else 1 for d in range(len(src_shape))]), src_shape)
            expected = _expected_scatter(base, dim, spread, src, reduce, include_self)
        else:
            expected = _expected_scatter(base.reshape(1), 0, index, src.reshape(1), reduce, include_self).reshape(())
        x = T.tensor(base, requires_grad=True)
        s = T.tensor(src, requires_grad=True)
        index_t = T.tensor(index)
        close(x.index_reduce(dim, index_t, s, reduce, include_self=include_self), expected, 1e-12, 1e-12)
        assert T.autograd.gradcheck(
            lambda a, b, d=dim, i=index_t: a.index_reduce(d, i, b, reduce, include_self=include_self), (x, s))
    if reduce == "prod":  # a zero reduced from src, from self, two together, none
        x = T.tensor([[0.0, 13], [0, 0], [15, 19]], dtype=T.float64, requires_grad=True)
        s = T.tensor([[2.0, 0], [0, 0], [2, 3], [2, 2]], dtype=T.float64, requires_grad=True)
        i = T.tensor([0, 1, 2, 0])
        assert T.autograd.gradcheck(lambda a, b: a.index_reduce(0, i, b, "prod", include_self=include_self), (x, s))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int8"])
def test_index_reduce_values_and_dtype(T, dtype):
    base = T.tensor([[1, 2], [3, 4]], dtype=getattr(T, dtype))
    src = T.tensor([[5, -6], [7, 8], [-9, 10]], dtype=getattr(T, dtype))
    index = T.tensor([0, 1, 0])
    b, s = values(base).astype(np.float64), values(src).astype(np.float64)
    sums, counts = np.array([b[0] + s[0] + s[2], b[1] + s[1]]), np.array([[3], [2]])
    same(base.index_reduce(0, index, src, "mean"),
         (sums / counts if dtype.startswith("float") else np.floor_divide(sums, counts)).astype(dtype), dtype)
    same(base.index_reduce(0, index, src, "prod", include_self=False), np.array([s[0] * s[2], s[1]]).astype(dtype),
         dtype)
    same(base.index_reduce(0, index, src, "amax"), np.array([np.maximum.reduce([b[0], s[0], s[2]]),
                                                             np.maximum(b[1], s[1])]).astype(dtype), dtype)
    same(base.index_reduce(0, index, src, "amin", include_self=False),
         np.array([np.minimum(s[0], s[2]), s[1]]).astype(dtype), dtype)


@pytest.mark.parametrize("name", ["gather", "scatter", "scatter_add"])
def test_gradcheck_in_float64(T, name):
    rng = np.random.default_rng(12)
    x = T.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    index = T.tensor(_index(rng, 0, 4, (3, 5), 3, unique=name == "scatter"))
    if name == "gather":
        assert T.autograd.gradcheck(lambda a: T.gather(a, 0, index), (x,))
        assert T.autograd.gradgradcheck(lambda a: T.gather(a, 0, index), (x,))
        return
    src = T.tensor(rng.standard_normal((3, 5)), requires_grad=True)
    assert T.autograd.gradcheck(lambda a, b: getattr(T, name)(a, 0, index, b), (x, src))
    assert T.autograd.gradgradcheck(lambda a, b: getattr(T, name)(a, 0, index, b), (x, src))


def test_amax_and_amin_of_complex_numbers_are_refused(T):
    z = T.zeros(3, dtype=T.complex64)
    for reduce in ("amax", "amin"):
        raises(NotImplementedError, f"scatter_gather_tensor_cpu_reduce_{reduce}\" not implemented for 'ComplexFloat'",
               z.scatter_reduce, 0, T.tensor([0]), T.ones(1, dtype=T.complex64), reduce)
        raises(NotImplementedError, "not implemented for 'ComplexFloat'", z.index_reduce, 0, T.tensor([0]),
               T.ones(1, dtype=T.complex64), reduce)


def test_a_src_that_is_no_tensor_is_refused(T):
    raises(TypeError, r"scatter_add\(\): argument 'src' \(position \d\) must be Tensor, not float", T.scatter_add,
           T.zeros(2), 0, T.tensor([0, 0]), 1.5)
    raises(TypeError, r"scatter_reduce\(\): argument 'src' \(position \d\) must be Tensor, not float",
           T.scatter_reduce, T.zeros(2), 0, T.tensor([0, 0]), 1.5, "sum")
    same(T.zeros(2).scatter(0, T.tensor([0, 0]), 1.5), [1.5, 0.0])  # scatter alone takes a number
    same(T.zeros(3, dtype=T.int64).scatter(0, T.tensor([0, 2]), 1.7), [1, 0, 1], "int64")


def test_0d_inputs_and_negative_dims(T):
    same(T.gather(T.tensor(5.0), 0, T.tensor([0, 0])), [5.0, 5.0])
    same(T.tensor(5.0).scatter(0, T.tensor(0), T.tensor(2.0)), 2.0)
    same(T.tensor(5.0).scatter_add(0, T.tensor(0), T.tensor(2.0)), 7.0)
    same(T.tensor(5.0).scatter_reduce(0, T.tensor(0), T.tensor(2.0), "mean"), 3.5)
    same(T.tensor(5.0).scatter_reduce(0, T.tensor(0), T.tensor(2.0), "amax", include_self=False), 2.0)
    same(T.gather(T.arange(6.0).view(2, 3), -1, T.tensor([[2, 0], [1, 1]])), [[2.0, 0.0], [4.0, 4.0]])
    same(T.zeros(2, 3).scatter_add(-1, T.tensor([[2, 2], [1, 1]]), T.ones(2, 2)), [[0, 0, 2.0], [0, 2.0, 0]])


@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_ties_with_self_left_out_share_the_gradient_as_pytorch(T, reduce, request):
    """PyTorch's amax/amin backward with include_self=False still counts self among the ties when it equals
    the result: src's tied terms get dL/dy / (k + 1) each and self gets 0."""
    xfail_on_chainrule(T, request, "ScatterReduce's backward (autograd/ops/indexing.py) leaves self out of the ties "
                                   "with include_self=False by design, so src's ties share all of dL/dy")
    sign = 1.0 if reduce == "amax" else -1.0
    src = T.tensor([1.0 * sign, 1.0 * sign, 0.5 * sign, 3.0 * sign], dtype=T.float64, requires_grad=True)
    base = T.tensor([1.0 * sign, 3.0 * sign, 2.0], dtype=T.float64, requires_grad=True)
    out = base.scatter_reduce(0, T.tensor([0, 0, 0, 1]), src, reduce, include_self=False)
    out.backward(T.tensor([10.0, 30.0, 7.0], dtype=T.float64))
    close(src.grad, [10 / 3, 10 / 3, 0.0, 15.0], 1e-12, 1e-12)
    close(base.grad, [0.0, 0.0, 7.0], 1e-12, 1e-12)


@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
def test_gradients_with_ties_and_include_self(T, reduce):
    """Gradients of every reduce where self takes part, with repeated positions and tied values: literal
    values PyTorch gives (mean divides by the count, prod by the term, ties share dL/dy evenly)."""
    sign = -1.0 if reduce == "amin" else 1.0
    src = T.tensor([1.0 * sign, 1.0 * sign, 0.5 * sign, 3.0 * sign], dtype=T.float64, requires_grad=True)
    base = T.tensor([1.0 * sign, 3.0 * sign, 2.0], dtype=T.float64, requires_grad=True)
    out = base.scatter_reduce(0, T.tensor([0, 0, 0, 1]), src, reduce)
    out.backward(T.tensor([10.0, 30.0, 7.0], dtype=T.float64))
    expected = {"sum": ([10.0, 10.0, 10.0, 30.0], [10.0, 30.0, 7.0]),
                "prod": ([5.0, 5.0, 10.0, 90.0], [5.0, 90.0, 7.0]),
                "mean": ([2.5, 2.5, 2.5, 15.0], [2.5, 15.0, 7.0]),
                "amax": ([10 / 3, 10 / 3, 0.0, 15.0], [10 / 3, 15.0, 7.0]),
                "amin": ([10 / 3, 10 / 3, 0.0, 15.0], [10 / 3, 15.0, 7.0])}[reduce]
    close(src.grad, expected[0], 1e-12, 1e-12)
    close(base.grad, expected[1], 1e-12, 1e-12)


@pytest.mark.parametrize("scalar", [False, True])
def test_scatter_multiply_stays_in_the_graph(T, scalar):
    """scatter(reduce='multiply') of a tensor that requires grad is recorded: PyTorch's result requires grad
    (its backward then says the derivative is not implemented); chainrule's is scatter_reduce's 'prod' with
    self, whose gradient is the product of the other terms. A detached result would drop the gradient."""
    x = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    src = 2.0 if scalar else T.tensor([2.0, 3.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        y = x.scatter(0, T.tensor([0, 0]), src, reduce="multiply")
    same(y, [4.0 if scalar else 6.0, 2.0, 3.0])
    assert y.requires_grad and y.grad_fn is not None
    try:
        y.backward(T.tensor([1.0, 10.0, 100.0]))
    except RuntimeError as error:  # PyTorch
        assert "derivative for aten::scatter is not implemented" in str(error)
        return
    same(x.grad, [4.0 if scalar else 6.0, 10.0, 100.0])
    if not scalar:
        same(src.grad, [3.0, 2.0])
