"""The rest of PyTorch's test/test_sort_and_select.py and test/test_spectral_ops.py not already ported in
tests/test_ported_sort_and_select.py and tests/test_ported_spectral_*.py: test_topk_integral,
test_kthvalue_overlap, and the edge cases around them (out= tensors of the wrong dtype or sharing the input's
memory, complex inputs, NaN and integers in unique/unique_consecutive/isin, sort stability with extremes);
for torch.fft the n padding and trimming along other dims in every norm, hfft/ihfft and rfftn/irfftn against
NumPy, out=, integer inputs, fftshift over several dims, the gradients of the Hermitian transforms against
finite differences, and istft round trips (length, center=False, win_length, normalized, return_complex).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), against
literals or NumPy.
"""

import math

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values

nan, inf = math.nan, math.inf
OVERLAP = "unsupported operation: some elements of the input tensor and the written-to tensor"


# ---------------------------------------------------------------------------------------------------- sorting

@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64"])
def test_topk_integral(T, dtype):
    info = np.iinfo(dtype)
    data = np.random.default_rng(3).integers(info.min, info.max, size=10, dtype=dtype, endpoint=True)
    data[:2] = info.min, info.max  # (the extremes: no negation may overflow)
    a = T.tensor(data.tolist(), dtype=getattr(T, dtype))
    expected = np.sort(data)[-5:][::-1]
    top = a.topk(5)
    same(top[0], expected)
    same(a[top[1]], expected)
    same(a.topk(3, largest=False)[0], np.sort(data)[:3])


@pytest.mark.filterwarnings("ignore:An output with one or more elements was resized")
def test_kthvalue_overlap(T):
    a = T.randn(10)
    raises(RuntimeError, OVERLAP, T.kthvalue, a, 5, out=(a, T.empty((), dtype=T.long)))
    raises(RuntimeError, OVERLAP, T.kthvalue, a, 5, out=(a[:1], T.empty((), dtype=T.long)))


@pytest.mark.filterwarnings("ignore:An output with one or more elements was resized")
def test_out_of_a_part_of_the_input_is_refused(T):
    """topk, median, nanmedian, mode and max/min(dim) refuse an out= values tensor sharing part of the input's
    memory."""
    for call in (lambda a, out: T.topk(a, 2, out=out), lambda a, out: T.median(a, 0, out=out),
                 lambda a, out: T.nanmedian(a, 0, out=out), lambda a, out: T.mode(a, 0, out=out),
                 lambda a, out: T.max(a, 0, out=out), lambda a, out: T.min(a, 0, out=out)):
        a = T.tensor([3.0, 1.0, 2.0])
        raises(RuntimeError, OVERLAP, call, a, (a[:1], T.empty(0, dtype=T.long)))
        same(a, [3.0, 1.0, 2.0])
    values_, indices = T.empty(0), T.empty(0, dtype=T.long)
    assert T.median(T.tensor([3.0, 1.0, 2.0]), 0, out=(values_, indices)).values is values_
    same(values_, 2.0)
    same(indices, 2)


def test_out_dtypes_of_the_selections(T):
    """sort, topk, kthvalue, median, nanmedian, cummax, cummin, msort and isin write into out tensors of their
    results' dtypes only (PyTorch casts into no other)."""
    x = T.tensor([3.0, 1.0, 2.0])

    def outs(values_dtype, indices_dtype):
        return T.empty(0, dtype=getattr(T, values_dtype)), T.empty(0, dtype=getattr(T, indices_dtype))

    wrong_values, wrong_indices = outs("float64", "int64"), outs("float32", "int32")
    raises(RuntimeError, "Expected out tensor to have dtype float, but got double instead", T.sort, x,
           out=outs("float64", "int64"))
    raises(RuntimeError, "Expected out tensor to have dtype long int, but got int instead", T.sort, x,
           out=outs("float32", "int32"))
    raises(RuntimeError, "Expected out tensor to have dtype float, but got double instead", T.topk, x, 2,
           out=outs("float64", "int64"))
    raises(RuntimeError, "Expected out tensor to have dtype long int, but got float instead", T.topk, x, 2,
           out=outs("float32", "float32"))
    raises(RuntimeError, "output values must be of same type as input", T.kthvalue, x, 2, out=wrong_values)
    raises(RuntimeError, "output indices must be of scalar type Long", T.kthvalue, x, 2, out=wrong_indices)
    for median in (T.median, T.nanmedian):
        raises(RuntimeError, "'values' to have the same type as tensor for argument #2 'self'; but type "
               "torch.DoubleTensor does not equal torch.FloatTensor", median, x, 0, out=outs("float64", "int64"))
        raises(RuntimeError, "argument #1 'indices' to have scalar type Long; but got torch.IntTensor", median, x, 0,
               out=outs("float32", "int32"))
    for running in (T.cummax, T.cummin):
        raises(RuntimeError, "expected scalar_type Float but found Double", running, x, 0, out=outs("float64", "int64"))
        raises(RuntimeError, "expected scalar_type Long but found Int", running, x, 0, out=outs("float32", "int32"))
    raises(RuntimeError, "Expected out tensor to have dtype float, but got double instead", T.msort, x,
           out=T.empty(0, dtype=T.float64))
    raises(RuntimeError, "Expected out tensor to have dtype bool, but got float instead", T.isin, x, x, out=T.empty(0))
    values_, indices = T.sort(x, out=outs("float32", "int64"))
    same(values_, [1.0, 2.0, 3.0], dtype="float32")
    same(indices, [1, 2, 0], dtype="int64")
    same(T.kthvalue(x, 2, out=outs("float32", "int64"))[0], 2.0)
    same(T.cummax(x, 0, out=outs("float32", "int64"))[1], [0, 0, 0])


def test_complex_inputs_are_refused(T):
    """Complex numbers have no order: sort and topk refuse them with PyTorch's RuntimeError, the selections
    with its missing-kernel NotImplementedError."""
    z = T.tensor([1 + 1j, 0j])
    for call in (lambda: T.sort(z), lambda: T.argsort(z), lambda: T.msort(z)):
        raises(RuntimeError, "Sort does not support complex dtypes on CPU", call)
    raises(RuntimeError, "topk does not support complex dtypes on CPU", T.topk, z, 1)
    raises(NotImplementedError, "\"kthvalue_cpu\" not implemented for 'ComplexFloat'", T.kthvalue, z, 1)
    raises(NotImplementedError, "\"median_cpu\" not implemented for 'ComplexFloat'", T.median, z)
    raises(NotImplementedError, "\"median_out\" not implemented for 'ComplexFloat'", T.median, z, 0)
    raises(NotImplementedError, "\"mode_cpu\" not implemented for 'ComplexFloat'", T.mode, z)


def test_topk_arguments_and_nan(T):
    raises(RuntimeError, "selected index k out of range", T.topk, T.tensor([1.0, 2.0]), 3)
    raises(RuntimeError, "selected index k out of range", T.topk, T.tensor([1.0, 2.0]), -1)
    raises(TypeError, "topk\\(\\): argument 'k' \\(position 1\\) must be int, not float", T.tensor([1.0]).topk, 1.0)
    x = T.tensor([[1.0, nan, 3.0], [nan, nan, 0.0]])
    largest = x.topk(2, dim=1)
    same(largest.values, [[nan, 3.0], [nan, nan]])
    same(largest.indices[0], [1, 2])
    smallest = x.topk(2, largest=False)
    same(smallest.values, [[1.0, 3.0], [0.0, nan]])
    same(smallest.indices, [[0, 2], [2, 0]])
    v, i = T.tensor(3.0).topk(1)
    same(v, 3.0)
    same(i, 0)


def test_stable_sort_with_extremes_and_bools(T):
    v, i = T.tensor([-128, 127, 0, -128, 127], dtype=T.int8).sort(descending=True, stable=True)
    same(v, [127, 127, 0, -128, -128], dtype="int8")
    same(i, [1, 4, 2, 0, 3])
    v, i = T.tensor([255, 0, 7, 255], dtype=T.uint8).sort(stable=True, descending=True)
    same(v, [255, 255, 7, 0], dtype="uint8")
    same(i, [0, 3, 2, 1])
    v, i = T.tensor([True, False, True, False]).sort(stable=True)
    same(v, [False, False, True, True], dtype="bool")
    same(i, [1, 3, 0, 2])
    v, i = T.tensor([inf, nan, -inf, 0.0, nan]).sort(descending=True, stable=True)
    same(v, [nan, nan, inf, 0.0, -inf])
    same(i, [1, 4, 0, 3, 2])
    same(T.argsort(T.tensor([1, 0, 1, 0]), dim=0, descending=True, stable=True), [0, 2, 1, 3])


def test_kthvalue_keepdim_ints_and_nan(T):
    v, i = T.tensor([[4.0, 1, 3], [0, 9, 2]]).kthvalue(2, 1, True)
    same(v, [[3.0], [2.0]])
    same(i, [[2], [2]])
    v, i = T.tensor([4, 1, 3, 1], dtype=T.int32).kthvalue(2)
    same(v, 1, dtype="int32")
    assert i.item() in (1, 3)
    same(T.tensor([nan, 1.0, 3.0]).kthvalue(3)[0], nan)  # (NaN sorts last)
    same(T.tensor([nan, 1.0, 3.0]).kthvalue(2)[0], 3.0)
    raises(RuntimeError, "kthvalue\\(\\): selected number k out of range for dimension 0", T.kthvalue,
           T.tensor([1.0, 2.0]), 0)


def test_unique_with_nan(T):
    """Each NaN is unique (NaN != NaN), sorted last; unique_consecutive never merges two NaNs either."""
    u, inverse, counts = T.unique(T.tensor([nan, 1.0, nan, 1.0]), return_inverse=True, return_counts=True)
    same(u, [1.0, nan, nan])
    same(inverse, [1, 0, 2, 0])
    same(counts, [2, 1, 1])
    u, inverse, counts = T.unique_consecutive(T.tensor([nan, nan, 1.0, 1.0]), return_inverse=True,
                                              return_counts=True)
    same(u, [nan, nan, 1.0])
    same(inverse, [0, 1, 2, 2])
    same(counts, [1, 1, 2])
    u, counts = T.unique(T.tensor([[nan, 1.0], [nan, 1.0]]), dim=0, return_counts=True)
    same(u, [[nan, 1.0], [nan, 1.0]])
    same(counts, [1, 1])


def test_unique_dim_with_nan_keeps_pytorchs_order(T):
    """unique(dim=) sorts the slices with a lexicographic `<` that passes over NaN, then merges runs of equal
    slices: a slice with NaN is never merged, and stays where that sort leaves it."""
    x = T.tensor([[nan, 1.0], [1.0, 1.0], [nan, 1.0], [0.0, 2.0]])
    u, inverse, counts = T.unique(x, dim=0, return_inverse=True, return_counts=True)
    same(u, [[nan, 1.0], [1.0, 1.0], [nan, 1.0], [0.0, 2.0]])  # (NaN against 1 and 0 decides nothing)
    same(inverse, [0, 1, 2, 3])
    same(counts, [1, 1, 1, 1])
    u, inverse, counts = T.unique(T.tensor([[1.0, nan], [1.0, 0.0]]), dim=1, return_inverse=True, return_counts=True)
    same(u, [[nan, 1.0], [0.0, 1.0]])
    same(inverse, [1, 0])
    u, inverse, counts = T.unique(T.tensor([[2.0, 1.0], [nan, 5.0], [2.0, 1.0], [1.0, 3.0]]), dim=0,
                                  return_inverse=True, return_counts=True)
    same(u, [[1.0, 3.0], [2.0, 1.0], [nan, 5.0]])
    same(inverse, [1, 2, 1, 0])
    same(counts, [1, 2, 1])


def test_unique_ints_and_ill_formed_empty(T):
    u, inverse = T.unique(T.tensor([3, -1, 3], dtype=T.int8), return_inverse=True)
    same(u, [-1, 3], dtype="int8")
    same(inverse, [1, 0, 1], dtype="int64")
    u, inverse, counts = T.unique_consecutive(T.tensor([[0, 0, 1, 1], [2, 2, 3, 2]]), return_inverse=True,
                                              return_counts=True, dim=1)
    same(u, [[0, 1, 1], [2, 3, 2]])
    same(inverse, [0, 0, 1, 2])
    same(counts, [2, 1, 1])
    raises(RuntimeError, "Number of zero sized dimensions is more than one", T.unique, T.empty(5, 0, 0),
           return_inverse=True, return_counts=True, dim=1)
    raises(RuntimeError, "There are 0 sized dimensions, and they aren't selected", T.unique, T.empty(5, 0, 5), dim=2)
    raises(IndexError, "Dimension out of range", T.unique, T.tensor([[1, 1], [0, 0]]), dim=2)


def test_isin_edge_cases(T):
    same(T.isin(T.tensor([nan, 1.0]), T.tensor([nan, 1.0])), [False, True])  # (NaN is in nothing)
    same(T.isin(T.tensor([inf, -inf, 0.0]), T.tensor([inf])), [True, False, False])
    same(T.isin(T.tensor([1, 2]), T.tensor([1.0, 2.5])), [True, False])  # (compared in the promoted dtype)
    same(T.isin(T.tensor([1, 2, 3]), T.tensor([2]), invert=True), [True, False, True])
    same(T.isin(T.tensor([1, 2]), 2), [False, True])
    same(T.isin(2, T.tensor([1, 2])), True)
    same(T.isin(T.tensor([[1, 2], [3, 4]]), T.tensor([[4], [1]])), [[True, False], [False, True]])
    same(T.isin(T.tensor([1, 2]), T.tensor([], dtype=T.long)), [False, False])
    same(T.isin(T.tensor([1, 2, 2]), T.tensor([2, 2])), [False, True, True])
    raises(RuntimeError, "Unsupported input type encountered for isin\\(\\): Bool", T.isin, T.tensor([True]),
           T.tensor([True]))
    raises(TypeError, "isin\\(\\) received an invalid combination of arguments - got \\(int, int\\)", T.isin, 2, 3)


# ---------------------------------------------------------------------------------------------------- fft

def _real(T, *shape, dtype="float32", seed=0):
    return T.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=getattr(T, dtype))


def _complex(T, *shape, seed=0):
    rng = np.random.default_rng(seed)
    return T.tensor(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), dtype=T.complex128)


@pytest.mark.parametrize("norm", [None, "forward", "backward", "ortho"])
@pytest.mark.parametrize("n", [None, 3, 12])
@pytest.mark.parametrize("name", ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft"])
def test_one_dim_transforms_along_dim_0_with_n(T, name, n, norm):
    """n trims or zero-pads the transformed dim (here the first of two), in every norm, as NumPy's."""
    x = _real(T, 4, 7, dtype="float64") if name in ("fft", "ifft", "rfft", "ihfft") else _complex(T, 4, 7)
    expected = getattr(np.fft, name)(values(x), n=n, axis=0, norm=norm)
    close(getattr(T.fft, name)(x, n=n, dim=0, norm=norm), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["fftn", "ifftn", "rfftn", "irfftn"])
@pytest.mark.parametrize("s, dim", [(None, None), ((3, 5), (0, 2)), ((6,), None), (None, (1,)), ((4, 4, 4), None),
                                    (None, (-1, 0)), ((2, 6), (-1, 0))])
def test_n_dim_transforms_against_numpy(T, name, s, dim):
    x = _real(T, 3, 4, 5, dtype="float64") if name in ("fftn", "rfftn") else _complex(T, 3, 4, 5)
    expected_axes = tuple(range(3 - len(s), 3)) if s is not None and dim is None else dim  # (the last len(s) dims)
    expected = getattr(np.fft, name)(values(x), s=s, axes=expected_axes, norm="ortho")
    close(getattr(T.fft, name)(x, s=s, dim=dim, norm="ortho"), expected, rtol=1e-10, atol=1e-10)


def test_fft_of_integers_and_bools_and_scalars(T):
    t = T.fft.fft(T.tensor([1, 2, 3]))
    assert dtype_name(t) == "complex64"
    close(t, np.fft.fft([1, 2, 3]))
    assert dtype_name(T.fft.rfft(T.tensor([1, 2, 3], dtype=T.int8))) == "complex64"
    assert dtype_name(T.fft.hfft(T.tensor([1, 2, 3]))) == "float32"
    close(T.fft.hfft(T.tensor([1, 2, 3])), np.fft.hfft([1, 2, 3]))
    same(T.fft.fft(T.tensor([True, False])), [1 + 0j, 1 + 0j], dtype="complex64")
    same(T.fft.fftn(T.tensor(1.0)), 1 + 0j, dtype="complex64")  # (no dims: nothing transformed)
    raises(IndexError, "Dimension specified as -1 but tensor has no dimensions", T.fft.fft, T.tensor(1.0))
    raises(RuntimeError, "`shifts` required", T.fft.fftshift, T.tensor(2.0))
    raises(RuntimeError, "Invalid number of data points \\(0\\) specified", T.fft.fft, T.randn(5), n=0)
    raises(RuntimeError, "fftfreq requires a floating point or complex dtype", T.fft.fftfreq, 5, dtype=T.int64)
    assert tuple(T.fft.fftn(T.randn(3, 4), s=(-1, 6)).shape) == (3, 6)  # (-1: the dim's own size)


def test_fft_out(T):
    x = _real(T, 6)
    for name, source, out_dtype in (("fft", x, "complex64"), ("rfft", x, "complex64"),
                                    ("irfft", T.fft.rfft(x), "float32"), ("hfft", T.fft.ihfft(x), "float32")):
        out = T.empty(0, dtype=getattr(T, out_dtype))
        assert getattr(T.fft, name)(source, out=out) is out
        close(out, values(getattr(T.fft, name)(source)))
    out = T.empty(0)
    assert T.fft.hfftn(T.fft.ihfftn(_real(T, 3, 6)), out=out) is out
    close(out, values(_real(T, 3, 6)), atol=1e-5)
    wide = T.fft.fft(x, out=T.empty(0, dtype=T.complex128))
    assert dtype_name(wide) == "complex128"  # (a wider out takes the result)
    raises(RuntimeError, "fft expects a complex output tensor, but got Float", T.fft.fft, x, out=T.empty(0))
    raises(RuntimeError, "irfft expects a floating point output tensor, but got ComplexFloat", T.fft.irfft,
           T.fft.rfft(x), out=T.empty(0, dtype=T.complex64))


def test_fftshift_over_several_dims_and_ints(T):
    x = _real(T, 3, 5, dtype="float64")
    for dim in (1, (0, 1), [-1, 0]):
        close(T.fft.fftshift(x, dim=dim), np.fft.fftshift(values(x), axes=dim), rtol=0, atol=0)
        close(T.fft.ifftshift(x, dim=dim), np.fft.ifftshift(values(x), axes=dim), rtol=0, atol=0)
    same(T.fft.fftshift(T.arange(7)), [4, 5, 6, 0, 1, 2, 3], dtype="int64")
    same(T.fft.ifftshift(T.arange(6).view(2, 3)), [[4, 5, 3], [1, 2, 0]])


def _grad_by_differences(loss, a, eps=1e-6):
    """PyTorch's gradient of a real loss of a (dL/dRe a + i dL/dIm a for a complex a), by central differences
    (the transforms are linear: exact up to rounding)."""
    grad = np.zeros(a.shape, dtype=a.dtype)
    for index in np.ndindex(a.shape):
        for step in ((1.0,) if a.dtype.kind == "f" else (1.0, 1j)):
            bump = np.zeros(a.shape, dtype=a.dtype)
            bump[index] = step * eps
            grad[index] += step * (loss(a + bump) - loss(a - bump)) / (2 * eps)
    return grad


@pytest.mark.parametrize("case", ["hfft", "ihfft", "irfftn", "rfft"])
def test_gradients_of_the_hermitian_transforms(T, case):
    """The gradients of hfft, ihfft, irfftn (which drop or rebuild the redundant half) and of rfft with n
    padding and norm='forward', against central differences of NumPy's transforms."""
    if case == "hfft":
        a, forward = _complex(T, 5), lambda z: np.fft.hfft(z, n=7, norm="ortho")
        function = lambda t: T.fft.hfft(t, n=7, norm="ortho")  # noqa: E731
        weights = np.arange(7.0)
    elif case == "ihfft":
        a, forward = _real(T, 7, dtype="float64"), lambda z: np.fft.ihfft(z, n=5)
        function = lambda t: T.fft.ihfft(t, n=5)  # noqa: E731
        weights = np.array([2.0 - 1j, 0.5 + 2j, -1j])
    elif case == "irfftn":
        a, forward = _complex(T, 3, 4), lambda z: np.fft.irfftn(z, s=(3, 5), axes=(0, 1))
        function = lambda t: T.fft.irfftn(t, s=(3, 5))  # noqa: E731
        weights = np.arange(15.0).reshape(3, 5) - 7
    else:
        a, forward = _real(T, 6, dtype="float64"), lambda z: np.fft.rfft(z, n=8, norm="forward")
        function = lambda t: T.fft.rfft(t, n=8, norm="forward")  # noqa: E731
        weights = np.linspace(-1, 1, 5) + 0.5j
    a.requires_grad_()
    y = function(a)
    w = T.tensor(weights, dtype=y.dtype)
    loss = (y * w).real.sum() if weights.dtype.kind == "c" else (y * w).sum()
    loss.backward()

    expected = _grad_by_differences(lambda z: float(np.sum(np.real(forward(z) * weights))), values(a))
    close(a.grad, expected, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- istft

def _signal(T, *shape):
    return T.tensor(np.random.default_rng(5).standard_normal(shape), dtype=T.float64)


def test_istft_length_trims_and_pads(T, recwarn):
    x = _signal(T, 2, 100)
    w = T.hann_window(16, dtype=T.float64)
    spectrum = T.stft(x, 16, hop_length=4, window=w, return_complex=True)
    close(T.istft(spectrum, 16, hop_length=4, window=w, length=100), values(x), atol=1e-10)
    close(T.istft(spectrum, 16, hop_length=4, window=w, length=90), values(x)[:, :90], atol=1e-10)
    longer = T.istft(spectrum, 16, hop_length=4, window=w, length=110)
    close(longer[:, :100], values(x), atol=1e-10)
    close(longer[:, 100:108], values(x)[:, 98:90:-1], atol=1e-10)  # (stft's reflection padding, recovered)
    same(longer[:, 108:], np.zeros((2, 2)))  # (past the last frame: zeros, with PyTorch's warning)


def test_istft_round_trips(T):
    x = _signal(T, 100)
    w = T.hann_window(16, periodic=False, dtype=T.float64) + 0.1  # (nonzero at its ends: center=False needs it)
    spectrum = T.stft(x, 16, hop_length=4, window=w, center=False, return_complex=True)
    back = T.istft(spectrum, 16, hop_length=4, window=w, center=False)
    assert tuple(back.shape) == (100,)
    close(back, values(x), atol=1e-10)
    short = T.hann_window(10, dtype=T.float64)
    spectrum = T.stft(x[:64], 16, hop_length=3, win_length=10, window=short, normalized=True, return_complex=True)
    close(T.istft(spectrum, 16, hop_length=3, win_length=10, window=short, normalized=True, length=64),
          values(x)[:64], atol=1e-10)
    z = T.complex(x[:64], x[36:])
    spectrum = T.stft(z, 16, window=T.hann_window(16, dtype=T.float64), return_complex=True)
    assert tuple(spectrum.shape) == (16, 17)  # (a complex signal: both sides)
    back = T.istft(spectrum, 16, window=T.hann_window(16, dtype=T.float64), onesided=False, return_complex=True,
                   length=64)
    assert dtype_name(back) == "complex128"
    close(back, values(z), atol=1e-10)


def test_mode_with_nan(T):
    """Up to 16 elements PyTorch's mode runs std::sort's insertion sort, whose `<` leaves NaN where it stands, and
    counts runs with `!=`, so that each NaN is a run of its own: the first run of the greatest length wins."""
    for row, value, index in (([nan, nan, 1.0], nan, 0), ([nan, 1.0, 1.0], 1.0, 2), ([1.0, nan, 1.0], 1.0, 0),
                              ([2.0, nan, 2.0, nan, 2.0], 2.0, 0), ([nan], nan, 0)):
        v, i = T.tensor(row).mode()
        same(v, value)
        same(i, index)
    v, i = T.tensor([[nan, nan, 1.0], [3.0, 3.0, 1.0]]).mode(1)
    same(v, [nan, 3.0])
    same(i, [0, 1])
    # beyond 16, std::sort's introsort moves the NaN about: its answer, replayed
    row = [2.0, nan, 1.0, 1.0, nan, 3.0, 2.0, nan, nan, 0.0, 1.0, 2.0, nan, 3.0, 3.0, 0.0, nan, 2.0, 1.0, nan, 2.0]
    v, i = T.tensor(row).mode()
    same(v, 1.0)
    same(i, 3)
    v, i = T.tensor([nan] * 18 + [1.0]).mode()
    same(v, nan)
    same(i, 9)
