"""segment_reduce, ported from PyTorch's test/test_segment_reductions.py (TestSegmentReductions: the
1-D and multi-dim literal cases with NaN data, empty segments, initial values, axis 0 and -1, unsafe,
lengths of int32 and int64; pytorch_scatter's cases through lengths and offsets; gradients checked
literally and by float64 gradcheck) and the offsets form of PyTorch's sample_inputs_segment_reduce.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import itertools

import numpy as np
import pytest

from tests.ported import close, dtype_name

REDUCTIONS = ["max", "mean", "min", "sum", "prod"]
NAN, INF = float("nan"), float("inf")
DTYPES = ["float16", "float32", "float64"]


def _default(initial, reduction):
    if initial is not None:
        return initial
    return {"max": -INF, "mean": NAN, "min": INF, "sum": 0.0, "prod": 1.0}[reduction]


def _check(T, reduction, dtype, unsafe, axis, initial, data, lengths, expected, expected_grad, lengths_dtype):
    lengths = T.tensor(lengths, dtype=getattr(T, lengths_dtype))
    x = T.tensor(data, dtype=getattr(T, dtype), requires_grad=True)
    got = T.segment_reduce(data=x, reduce=reduction, lengths=lengths, axis=axis, unsafe=unsafe, initial=initial)
    assert dtype_name(got) == dtype
    close(got, np.array(expected, dtype=np.float64), rtol=1e-2, atol=1e-5)  # (PyTorch's tolerances: 1e-2, 1e-5)
    if expected_grad is None:
        return
    got.sum().backward()
    close(x.grad, np.array(expected_grad, dtype=np.float64), rtol=1e-2, atol=1e-5)
    if dtype == "float64":  # gradcheck takes no NaN: PyTorch puts 10 in its place
        finite = T.tensor(np.nan_to_num(np.array(data, dtype=np.float64), nan=10), requires_grad=True)
        assert T.autograd.gradcheck(lambda d: T.segment_reduce(data=d, reduce=reduction, lengths=lengths, axis=axis,
                                                               unsafe=unsafe, initial=initial), (finite,))


def _simple_1d(reduction, initial):
    default = _default(initial, reduction)
    if reduction == "max":
        return initial, [1, NAN, 5, default], [1, 1, 0, 0, 0.5, 0.5]
    if reduction == "mean":
        return initial, [1, NAN, 4.666, default], [1.0, 0.5, 0.5, 0.333, 0.333, 0.333]
    if reduction == "min":
        if initial is not None:
            initial = 1000  # some high number
            default = initial
        return initial, [1, NAN, 4, default], [1.0, 1.0, 0, 1, 0, 0]
    if reduction == "sum":
        return initial, [1, NAN, 14, default], [1.0] * 6
    if initial is not None:  # prod: 0 would zero everything
        return 2, [2, NAN, 200, 2], [2.0, 6.0, NAN, 50.0, 40.0, 40.0]
    return initial, [1, NAN, 100, default], [1.0, 3.0, NAN, 25.0, 20.0, 20.0]


@pytest.mark.parametrize("dtype,lengths_dtype", list(itertools.product(DTYPES, ["int32", "int64"])))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_simple_1d(T, dtype, lengths_dtype, reduction):
    for initial in (0, None):
        initial, expected, expected_grad = _simple_1d(reduction, initial)
        for axis, unsafe in itertools.product((0, -1), (True, False)):
            _check(T, reduction, dtype, unsafe, axis, initial, [1, NAN, 3, 4, 5, 5], [1, 2, 3, 0], expected,
                   expected_grad if initial is not None else None, lengths_dtype)


def _multi_d_simple(reduction, initial):
    default = _default(initial, reduction)
    d = [default, default]
    if reduction == "max":
        return initial, [[1, 1], [NAN, NAN], [4, 3], d], [[1, 1], [1, 0], [0, 1], [1, 0], [0, 0], [0, 1]]
    if reduction == "mean":
        third = [0.333, 0.333]
        return initial, [[1, 1], [NAN, NAN], [3, 2], d], [[1.0, 1.0], [0.5, 0.5], [0.5, 0.5], third, third, third]
    if reduction == "min":
        if initial is not None:
            initial = 1000
            d = [1000, 1000]
        return initial, [[1, 1], [NAN, NAN], [2, 1], d], [[1.0, 1.0], [1, 0], [0, 1], [0, 1], [0, 0], [1, 0]]
    if reduction == "sum":
        return initial, [[1, 1], [NAN, NAN], [9, 6], d], [[1.0, 1.0]] * 6
    if initial is not None:
        return 2, [[2, 2], [NAN, NAN], [48, 12], [2, 2]], [[2.0, 2.0], [6.0, NAN], [NAN, 2.0], [12.0, 12.0],
                                                          [16.0, 6.0], [24.0, 4.0]]
    return initial, [[1, 1], [NAN, NAN], [24, 6], d], [[1.0, 1.0], [3.0, NAN], [NAN, 1.0], [6.0, 6.0], [8.0, 3.0],
                                                       [12.0, 2.0]]


@pytest.mark.parametrize("dtype,lengths_dtype", list(itertools.product(DTYPES, ["int32", "int64"])))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_d_simple(T, dtype, lengths_dtype, reduction):
    data = [[1, 1], [NAN, 1], [3, NAN], [4, 1], [3, 2], [2, 3]]
    for initial in (0, None):
        initial, expected, expected_grad = _multi_d_simple(reduction, initial)
        for unsafe in (True, False):
            _check(T, reduction, dtype, unsafe, 0, initial, data, [1, 2, 3, 0], expected,
                   expected_grad if initial is not None else None, lengths_dtype)


@pytest.mark.parametrize("dtype,lengths_dtype", list(itertools.product(DTYPES, ["int32", "int64"])))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_d(T, dtype, lengths_dtype, reduction):
    data = np.arange(50).reshape(5, 2, 5)
    initial = {"min": 1000, "prod": 1}.get(reduction, 0)
    numpy_op = {"max": np.max, "mean": np.mean, "min": np.min, "sum": np.sum, "prod": np.prod}[reduction]
    fill = np.full((2, 5), initial)
    expected = [fill, numpy_op(data[:2], axis=0), numpy_op(data[2:], axis=0), fill]
    for unsafe in (True, False):
        _check(T, reduction, dtype, unsafe, 0, initial, data.tolist(), [0, 2, 3, 0], expected, None, lengths_dtype)


SCATTER_CASES = [
    {"src": [1, 2, 3, 4, 5, 6], "indptr": [0, 2, 5, 5, 6],
     "sum": [3, 12, 0, 6], "prod": [2, 60, 1, 6], "mean": [1.5, 4, NAN, 6], "min": [1, 3, INF, 6],
     "max": [2, 5, -INF, 6]},
    {"src": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]], "indptr": [0, 2, 5, 5, 6],
     "sum": [[4, 6], [21, 24], [0, 0], [11, 12]], "prod": [[3, 8], [315, 480], [1, 1], [11, 12]],
     "mean": [[2, 3], [7, 8], [NAN, NAN], [11, 12]], "min": [[1, 2], [5, 6], [INF, INF], [11, 12]],
     "max": [[3, 4], [9, 10], [-INF, -INF], [11, 12]]},
    {"src": [[1, 3, 5, 7, 9, 11], [2, 4, 6, 8, 10, 12]], "indptr": [[0, 2, 5, 5, 6], [0, 3, 5, 6, 6]],
     "sum": [[4, 21, 0, 11], [12, 18, 12, 0]], "prod": [[3, 315, 1, 11], [48, 80, 12, 1]],
     "mean": [[2, 7, NAN, 11], [4, 9, 12, NAN]], "min": [[1, 5, INF, 11], [2, 8, 12, INF]],
     "max": [[3, 9, -INF, 11], [6, 10, 12, -INF]]},
    {"src": [[[1, 2], [3, 4], [5, 6]], [[7, 9], [10, 11], [12, 13]]], "indptr": [[0, 2, 3, 3], [0, 1, 1, 3]],
     "sum": [[[4, 6], [5, 6], [0, 0]], [[7, 9], [0, 0], [22, 24]]],
     "prod": [[[3, 8], [5, 6], [1, 1]], [[7, 9], [1, 1], [120, 143]]],
     "mean": [[[2, 3], [5, 6], [NAN, NAN]], [[7, 9], [NAN, NAN], [11, 12]]],
     "min": [[[1, 2], [5, 6], [INF, INF]], [[7, 9], [INF, INF], [10, 11]]],
     "max": [[[3, 4], [5, 6], [-INF, -INF]], [[7, 9], [-INF, -INF], [12, 13]]]},
    {"src": [[1, 3], [2, 4]], "indptr": [[0, 2], [0, 2]],
     "sum": [[4], [6]], "prod": [[3], [8]], "mean": [[2], [3]], "min": [[1], [2]], "max": [[3], [4]]},
    {"src": [[[1, 1], [3, 3]], [[2, 2], [4, 4]]], "indptr": [[0, 2], [0, 2]],
     "sum": [[[4, 4]], [[6, 6]]], "prod": [[[3, 3]], [[8, 8]]], "mean": [[[2, 2]], [[3, 3]]],
     "min": [[[1, 1]], [[2, 2]]], "max": [[[3, 3]], [[4, 4]]]},
]


@pytest.mark.parametrize("dtype,lengths_dtype", list(itertools.product(DTYPES, ["int32", "int64"])))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_pytorch_scatter_cases(T, dtype, lengths_dtype, reduction):
    """pytorch_scatter's cases (an empty segment gets the reduction's identity), by lengths and by offsets."""
    for case in SCATTER_CASES:
        data = T.tensor(case["src"], dtype=getattr(T, dtype), requires_grad=True)
        indptr = np.array(case["indptr"])
        axis = indptr.ndim - 1
        lengths = T.tensor(np.diff(indptr, axis=axis), dtype=getattr(T, lengths_dtype))
        offsets = T.tensor(indptr, dtype=getattr(T, lengths_dtype))
        for bounds in ({"lengths": lengths}, {"offsets": offsets}):
            got = T.segment_reduce(data=data, reduce=reduction, axis=axis, unsafe=True, **bounds)
            close(got, np.array(case[reduction], dtype=np.float64), rtol=0, atol=0)
            assert dtype_name(got) == dtype
        if dtype == "float64":  # an initial value keeps empty segments finite for the numerical jacobian
            initial = {"min": 1000, "max": -1000}.get(reduction, 1)
            assert T.autograd.gradcheck(
                lambda d, n=lengths, a=axis, i=initial: T.segment_reduce(d, reduction, lengths=n, axis=a, unsafe=True,
                                                                         initial=i),
                (data.detach().clone().requires_grad_(True),))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("mode", ["lengths", "offsets"])
def test_sample_inputs_gradcheck(T, reduction, mode):
    """PyTorch's sample_inputs_segment_reduce in float64 with initial 1 and 2: lengths not summing to the
    size (unsafe), segments along dim 1 of 2-D and 3-D data, one row of lengths per batch element."""
    S, M = 5, 10
    rng = np.random.default_rng(0)
    cases = [((S,), 0, [0, 1, 2, 2], False), ((S,), 0, [0, 1, 2, 2], True), ((S,), 0, [2, 0, 3, 0], False),
             ((S, S), 0, [0, 1, 2, 2], False), ((M, S, S), 0, [1, 2, 0, 6, 0], True),
             ((S, S), 1, [[0, 1, 2, 2] for _ in range(S)], False),
             ((S, S), 1, [[2, 0, 3, 0], [0, 1, 2, 2], [3, 0, 2, 0], [1, 1, 1, 2], [0, 1, 2, 2]], False),
             ((S, S, S), 1, [[2, 0, 3, 0], [0, 1, 2, 2], [3, 0, 2, 0], [1, 1, 1, 2], [0, 1, 2, 2]], False)]
    for (shape, dim, lengths, unsafe), initial in itertools.product(cases, (1, 2)):
        lengths = np.array(lengths)
        if mode == "lengths":
            bounds = {"lengths": T.tensor(lengths)}
        else:
            zeros = np.zeros(lengths.shape[:-1] + (1,), dtype=lengths.dtype)
            bounds = {"offsets": T.tensor(np.cumsum(np.concatenate([zeros, lengths], axis=-1), axis=-1))}
        data = T.tensor(rng.uniform(-3, 3, shape), requires_grad=True)  # distinct: max/min have no ties
        assert T.autograd.gradcheck(
            lambda d, b=bounds, a=dim, u=unsafe, i=initial: T.segment_reduce(d, reduction, axis=a, unsafe=u,
                                                                              initial=i, **b), (data,))


@pytest.mark.parametrize("reduction", ["max", "min"])
def test_nans_share_the_gradient_of_their_segment(T, reduction):
    """A segment holding NaN reduces to NaN, and its gradient goes to its NaNs, shared evenly."""
    x = T.tensor([NAN, NAN, 3.0, 2.0, 2.0, NAN, 1.0], requires_grad=True)
    y = T.segment_reduce(x, reduction, lengths=T.tensor([3, 2, 1, 1, 0]))
    close(y, [NAN, 2.0, NAN, 1.0, -INF if reduction == "max" else INF], 0, 0)
    y.backward(T.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    close(x.grad, [0.5, 0.5, 0.0, 1.0, 1.0, 3.0, 4.0], 0, 0)
