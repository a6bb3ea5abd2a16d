"""The discrete Fourier transforms ported from PyTorch's test/test_spectral_ops.py (TestFFT, its torch.fft
part: the 1-D, 2-D and n-D transforms against NumPy, round trips, norm modes, n/s/dim arguments, result
dtypes, errors, fftfreq/rfftfreq/fftshift/ifftshift, the legacy fft/ifft/rfft/irfft cases on
non-contiguous inputs) and the gradients of the spectral OpInfos (gradcheck in float64/complex128).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`). NumPy has no
hfftn/ihfftn: their reference is NumPy's own identity, hfftn(x) = irfftn(conj x) with the scale on the other
side (and ihfftn(x) = conj rfftn(x), likewise), which PyTorch's test_hfftn/test_ihfftn check from the other end.
"""

import itertools
import warnings

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values

NORMS = (None, "forward", "backward", "ortho")
OTHER = {None: "forward", "backward": "forward", "forward": "backward", "ortho": "ortho"}
ONE_D = ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft")
N_D = ("fftn", "ifftn", "rfftn", "irfftn", "hfftn", "ihfftn")
REAL_ONLY = ("rfft", "ihfft", "rfft2", "ihfft2", "rfftn", "ihfftn")


def _hfftn(x, s=None, axes=None, norm=None):
    return np.fft.irfftn(np.conj(x), s, axes, norm=OTHER[norm])


def _ihfftn(x, s=None, axes=None, norm=None):
    return np.conj(np.fft.rfftn(x, s, axes, norm=OTHER[norm]))


def reference(name):
    """NumPy's transform of that name (the 2-D ones with dims (-2, -1) by default)."""
    nd = {"hfftn": _hfftn, "ihfftn": _ihfftn}
    if name in nd:
        return nd[name]
    if name in ("hfft2", "ihfft2"):
        return lambda x, s=None, axes=(-2, -1), norm=None: nd[name[:-1] + "n"](x, s, axes, norm)
    return getattr(np.fft, name)


def _shape(ndim):
    """PyTorch's test shapes: sides 4, 5, 6, 7, 8, 4, ... for ndim dims."""
    return tuple(itertools.islice(itertools.cycle(range(4, 9)), ndim))


def _random(shape, dtype, rng):
    a = rng.standard_normal(shape)
    if dtype.startswith("complex"):
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


def _close(got, expected, dtype):
    """got ≈ expected, to the rounding of dtype's precision (absolute error relative to the largest term)."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max(initial=0)))
    tolerance = 1e-9 if dtype in ("float64", "complex128") else 2e-5
    close(got, expected, rtol=tolerance, atol=tolerance * scale)


@pytest.mark.parametrize("dtype", ["float32", "complex64", "float64", "complex128"])
@pytest.mark.parametrize("name", ONE_D)
def test_reference_1d(T, name, dtype):
    if name in REAL_ONLY and dtype.startswith("complex"):
        return
    rng = np.random.default_rng(0)
    op, ref = getattr(T.fft, name), reference(name)
    cases = [*itertools.product(((67,), (80,), (12, 14), (9, 6, 3)), (None, 50, 6), (-1, 0), NORMS),
             *itertools.product(((4, 5, 6, 7),), (None,), (1, 2, -2), NORMS)]
    for shape, n, dim, norm in cases:
        a = _random(shape, dtype, rng)
        got = op(T.tensor(a), n, dim, norm)
        expected = ref(a, n, dim, norm)
        _close(got, expected, dtype)
        complex_result = name in ("fft", "ifft", "rfft", "ihfft")
        single = dtype in ("float32", "complex64")
        assert dtype_name(got) == (("complex64" if single else "complex128") if complex_result
                                   else ("float32" if single else "float64"))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_fft_round_trip(T, dtype):
    rng = np.random.default_rng(1)
    pairs = [("fft", "ifft")] + ([] if dtype.startswith("complex") else [("rfft", "irfft"), ("ihfft", "hfft")])
    for forward, backward in pairs:
        for shape, dim, norm in itertools.product(((67,), (80,), (12, 14), (9, 6, 3)), (-1, 0), NORMS):
            a = _random(shape, dtype, rng)
            kwargs = dict(n=shape[dim], dim=dim, norm=norm)
            y = getattr(T.fft, backward)(getattr(T.fft, forward)(T.tensor(a), **kwargs), **kwargs)
            _close(y, a, dtype)
            complex_round = forward == "fft"
            assert dtype_name(y) == (dtype if not complex_round or dtype.startswith("complex")
                                     else {"float32": "complex64", "float64": "complex128"}[dtype])


@pytest.mark.parametrize("name", [*ONE_D, "fft2", "ifft2", "rfft2", "irfft2", "hfft2", "ihfft2", *N_D])
def test_empty_fft(T, name):
    for dtype in (T.float32, T.complex64):
        if name in REAL_ONLY and dtype == T.complex64:
            continue
        raises(RuntimeError, r"Invalid number of data points \([-\d]*\) specified", getattr(T.fft, name),
               T.empty(1, 0, dtype=dtype))


def test_empty_ifft(T):
    t = T.empty(2, 1, dtype=T.complex64)  # a half spectrum of one term is a signal of 2(1 - 1) = 0 points
    for name in ("irfft", "irfft2", "irfftn", "hfft", "hfft2", "hfftn"):
        raises(RuntimeError, r"Invalid number of data points \([-\d]*\) specified", getattr(T.fft, name), t)


def test_fft_invalid_dtypes(T):
    t = T.tensor(_random(64, "complex128", np.random.default_rng(2)))
    raises(RuntimeError, "rfft expects a real input tensor", T.fft.rfft, t)
    raises(RuntimeError, "rfftn expects a real-valued input tensor", T.fft.rfftn, t)
    raises(RuntimeError, "ihfft expects a real input tensor", T.fft.ihfft, t)


@pytest.mark.parametrize("dtype, transformed, real", [("int8", "complex64", "float32"),
                                                      ("float32", "complex64", "float32"),
                                                      ("float64", "complex128", "float64"),
                                                      ("complex64", "complex64", "float32"),
                                                      ("complex128", "complex128", "float64")])
def test_fft_type_promotion(T, dtype, transformed, real):
    rng = np.random.default_rng(3)
    a = rng.integers(-2, 2, 64).astype(dtype) if dtype == "int8" else _random(64, dtype, rng)
    t = T.tensor(a)
    assert dtype_name(T.fft.fft(t)) == transformed
    assert dtype_name(T.fft.hfft(t)) == real
    if not dtype.startswith("complex"):
        assert dtype_name(T.fft.rfft(t)) == transformed
    if dtype == "int8":  # the integers are transformed as the default dtype's numbers
        close(T.fft.fft(t), np.fft.fft(a.astype(np.float64)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [*ONE_D, "fft2", "ifft2", "rfft2", "irfft2", "hfft2", "ihfft2", *N_D])
def test_fft_half_and_bfloat16_errors(T, name):
    # (on CPU PyTorch refuses both; bfloat16 is chainrule's float32 under another name elsewhere, so only half here)
    raises(RuntimeError, "Unsupported dtype", getattr(T.fft, name), T.ones(4, 4, dtype=T.float16))


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("name", N_D)
def test_reference_nd(T, name, dtype):
    rng = np.random.default_rng(4)
    op, ref = getattr(T.fft, name), reference(name)
    cases = [*itertools.product(range(2, 5), (None,), (None, (0,), (0, -1))),
             *itertools.product(range(2, 5), (None, (4, 10)), (None,)),
             (6, None, None), (5, None, (1, 3, 4)), (3, None, (1,)), (1, None, (0,)), (4, (10, 10), None),
             (4, (10, 10), (0, 1))]
    for ndim, s, dim in cases:
        a = _random(_shape(ndim), dtype, rng)
        if name in REAL_ONLY:
            a = a.real.copy()
        for norm in NORMS:
            _close(op(T.tensor(a), s, dim, norm), ref(a, s, dim, norm), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_fftn_round_trip(T, dtype):
    rng = np.random.default_rng(5)
    pairs = [("fftn", "ifftn")] + ([] if dtype.startswith("complex") else [("rfftn", "irfftn"),
                                                                            ("ihfftn", "hfftn")])
    cases = [*itertools.product(range(2, 5), (None, (0,), (0, -1))), (7, None), (5, (1, 3, 4)), (3, (1,)),
             (1, (0,))]
    for ndim, dim in cases:
        a = _random(_shape(ndim), dtype, rng)
        s = list(a.shape) if dim is None else [a.shape[d] for d in dim]
        for (forward, backward), norm in itertools.product(pairs, NORMS):
            kwargs = dict(s=s, dim=dim, norm=norm)
            y = getattr(T.fft, backward)(getattr(T.fft, forward)(T.tensor(a), **kwargs), **kwargs)
            _close(y, a, dtype)


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
@pytest.mark.parametrize("name", N_D)
def test_fftn_invalid(T, name, dtype):
    if name in REAL_ONLY and dtype == "complex64":
        return
    op, a = getattr(T.fft, name), T.tensor(_random((10, 10, 10), dtype, np.random.default_rng(6)))
    raises(RuntimeError, "dims must be unique", op, a, dim=(0, 1, 0))
    raises(RuntimeError, "dims must be unique", op, a, dim=(2, -1))
    raises(RuntimeError, "dim and shape .* same length", op, a, s=(1,), dim=(0, 1))
    raises(IndexError, "Dimension out of range", op, a, dim=(3,))
    raises(RuntimeError, "tensor only has 3 dimensions", op, a, s=(10, 10, 10, 10))


@pytest.mark.parametrize("dtype, result", [("float32", "complex64"), ("float64", "complex128"),
                                           ("complex64", "complex64"), ("complex128", "complex128")])
def test_fftn_noop_transform(T, dtype, result):
    a = _random((10, 10), dtype, np.random.default_rng(7))
    for name in ("fftn", "ifftn", "fft2", "ifft2"):
        same(getattr(T.fft, name)(T.tensor(a), dim=[]), a.astype(result), result)
    # (beyond PyTorch's test) the real transforms need a dim to halve
    for name in ("rfftn", "irfftn", "hfftn", "ihfftn", "rfft2", "irfft2", "hfft2", "ihfft2"):
        if name in REAL_ONLY and dtype.startswith("complex"):
            continue
        raises(RuntimeError, f"{name[:-1]}n must transform at least one axis", getattr(T.fft, name), T.tensor(a),
               dim=[])


HERMITIAN_CASES = [*itertools.product(range(2, 5), (None, (0,), (0, -1))), (6, None), (5, (1, 3, 4)), (3, (1,)),
                   (1, (0,)), (4, (0, 1))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hfftn(T, dtype):
    """hfftn of the half spectrum of ifftn(x, ortho) gives x back."""
    rng = np.random.default_rng(8)
    for ndim, dim in HERMITIAN_CASES:
        dims = list(range(ndim)) if dim is None else list(dim)
        expect = _random(_shape(ndim), dtype, rng)
        spectrum = np.fft.ifftn(expect, axes=dims, norm="ortho")
        half = np.take(spectrum, range(spectrum.shape[dims[-1]] // 2 + 1), axis=dims[-1])
        half = half.astype("complex64" if dtype == "float32" else "complex128")
        got = T.fft.hfftn(T.tensor(half), s=[expect.shape[d] for d in dims], dim=dim, norm="ortho")
        _close(got, expect, dtype)
        assert dtype_name(got) == dtype


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ihfftn(T, dtype):
    """ihfftn of x is the first half (along the last dim) of ifftn(x)."""
    rng = np.random.default_rng(9)
    for ndim, dim in HERMITIAN_CASES:
        a = _random(_shape(ndim), dtype, rng)
        expect = np.fft.ifftn(a, axes=dim, norm="ortho")
        last = -1 if dim is None else dim[-1]
        expect = np.take(expect, range(expect.shape[last] // 2 + 1), axis=last)
        _close(T.fft.ihfftn(T.tensor(a), dim=dim, norm="ortho"), expect, dtype)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_fft2_numpy(T, dtype):
    rng = np.random.default_rng(10)
    names = ["fft2", "ifft2", "irfft2", "hfft2"] + ([] if dtype.startswith("complex") else ["rfft2", "ihfft2"])
    for ndim, s in itertools.product(range(2, 5), (None, (4, 10))):
        a = _random(_shape(ndim), dtype, rng)
        for name, norm in itertools.product(names, NORMS):
            op, ref = getattr(T.fft, name), reference(name)
            close(op(T.tensor(a), s, norm=norm), ref(a, s, norm=norm))  # dims defaulted
            close(op(T.tensor(a), s, (1, 0), norm), ref(a, s, (1, 0), norm))


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_fft2_fftn_equivalence(T, dtype):
    rng = np.random.default_rng(11)
    names = ["fft", "ifft", "irfft", "hfft"] + ([] if dtype.startswith("complex") else ["rfft", "ihfft"])
    cases = [*itertools.product(range(2, 5), (None, (4, 10)), (None, (1, 0))), (3, None, (0, 2))]
    for ndim, s, dim in cases:
        x = T.tensor(_random(_shape(ndim), dtype, rng))
        for name, norm in itertools.product(names, NORMS):
            two, n = getattr(T.fft, name + "2"), getattr(T.fft, name + "n")
            kwargs = dict(s=s, norm=norm)
            if dim is None:
                expect, got = n(x, dim=(-2, -1), **kwargs), two(x, **kwargs)
            else:
                expect, got = n(x, dim=dim, **kwargs), two(x, dim=dim, **kwargs)
            close(got, values(expect), rtol=1e-6, atol=1e-6)


def test_fft2_invalid(T):
    a = T.rand(10, 10, 10)
    for name in ("fft2", "ifft2", "rfft2", "irfft2"):
        op = getattr(T.fft, name)
        raises(RuntimeError, "dims must be unique", op, a, dim=(0, 0))
        raises(RuntimeError, "dims must be unique", op, a, dim=(2, -1))
        raises(RuntimeError, "dim and shape .* same length", op, a, s=(1,))
        raises(IndexError, "Dimension out of range", op, a, dim=(2, 3))
    raises(RuntimeError, "rfftn expects a real-valued input", T.fft.rfft2, T.complex(a, a))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fftfreq_numpy(T, dtype):
    for name in ("fftfreq", "rfftfreq"):
        for n, d in itertools.product(range(1, 20), (None, 10.0)):
            args = (n,) if d is None else (n, d)
            got = getattr(T.fft, name)(*args, dtype=getattr(T, dtype))
            close(got, getattr(np.fft, name)(*args), rtol=1e-6, atol=1e-7)
            assert dtype_name(got) == dtype


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fftfreq_out(T, dtype):
    for name in ("fftfreq", "rfftfreq"):
        op = getattr(T.fft, name)
        expect = op(n=100, d=0.5, dtype=getattr(T, dtype))
        out = T.empty((), dtype=getattr(T, dtype))
        with pytest.warns(UserWarning, match="out tensor will be resized"):
            result = op(n=100, d=0.5, out=out)
        assert result is out
        same(out, values(expect), dtype)


def test_fftfreq_dtypes_and_edges(T):
    """(beyond PyTorch's test) out= alone sets the dtype, in which the frequencies are computed; integer and
    bool dtypes are refused; a spacing of 0 gives infinities, as PyTorch's arange-based helpers do."""
    out = T.empty(7, dtype=T.float64)
    T.fft.fftfreq(7, out=out)
    same(out, np.fft.fftfreq(7), "float64")
    out = T.empty(3, dtype=T.float64)
    T.fft.rfftfreq(5, 0.1, out=out)
    same(out, np.fft.rfftfreq(5, 0.1), "float64")
    raises(RuntimeError, "dtype Float does not match dtype of out parameter \\(Double\\)", T.fft.rfftfreq, 5,
           dtype=T.float32, out=out)
    for name in ("fftfreq", "rfftfreq"):
        for dtype in (T.int64, T.bool):
            raises(RuntimeError, f"^{name} requires a floating point or complex dtype", getattr(T.fft, name), 4,
                   dtype=dtype)
    same(T.fft.fftfreq(4, 0.0), [np.nan, np.inf, -np.inf, -np.inf])
    same(T.fft.fftfreq(0), np.zeros(0))
    same(T.fft.rfftfreq(4, 2.0, dtype=T.float16), np.fft.rfftfreq(4, 2.0).astype(np.float16), "float16")
    x = T.fft.fftfreq(4, requires_grad=True)
    assert x.requires_grad and x.is_leaf


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_fftshift_numpy(T, dtype):
    rng = np.random.default_rng(12)
    cases = [*itertools.product(((11,), (12,)), (None, 0, -1)), *itertools.product(((4, 5), (6, 6)), (None, 0, (-1,))),
             *itertools.product(((1, 1, 4, 6, 7, 2),), (None, (3, 4)))]
    for shape, dim in cases:
        a = _random(shape, dtype, rng)
        for name in ("fftshift", "ifftshift"):
            same(getattr(T.fft, name)(T.tensor(a), dim=dim), getattr(np.fft, name)(a, axes=dim), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fftshift_frequencies(T, dtype):
    for n in range(10, 15):
        sorted_freqs = T.arange(-(n // 2), n - (n // 2), dtype=getattr(T, dtype))
        x = T.fft.fftfreq(n, d=1 / n, dtype=getattr(T, dtype))
        shifted = T.fft.fftshift(x)
        close(shifted, values(shifted.sort().values))
        close(shifted, values(sorted_freqs), rtol=1e-6, atol=1e-6)
        close(T.fft.ifftshift(shifted), values(x))


def _real_cases(T, rng):
    """(signal, number of transformed trailing dims): PyTorch's contiguous and non-contiguous real inputs."""
    def r(*shape):
        return T.tensor(rng.standard_normal(shape))
    return [(r(100), 1), (r(10, 1, 10, 100), 1), (r(100, 100), 2), (r(2, 2, 5, 80, 60), 2), (r(50, 40, 70), 3),
            (r(30, 1, 50, 25, 20), 3), (r(165).narrow(0, 25, 100), 1), (r(100, 100, 3)[:, :, 0], 1),
            (r(100, 100).t(), 2), (r(20, 100, 10, 10).view(20, 100, 100)[:, :60], 2),
            (r(65, 80, 115)[10:60, 13:53, 10:80], 3), (r(30, 20, 50, 25).transpose(1, 2).transpose(2, 3), 3)]


def _complex_cases(T, rng):
    def c(*shape):
        return T.tensor(rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    return [(c(100), 1), (c(100, 100), 1), (c(100, 100), 2), (c(1, 20, 80, 60), 2), (c(50, 40, 70), 3),
            (c(6, 5, 50, 25, 20), 3), (c(100).expand(100, 100), 1), (c(20, 90, 110)[:, 5:85].narrow(2, 5, 100), 2),
            (c(40, 60, 3, 80).transpose(2, 0).select(0, 2)[5:55, :, 10:], 3),
            (c(30, 55, 50, 22)[:, 3:53, 15:40, 1:21], 3)]


def test_fft_ifft_rfft_irfft(T):
    """The legacy transforms' cases, contiguous and not: each transform undone by its inverse (float64)."""
    rng = np.random.default_rng(13)
    for x, signal_ndim in _real_cases(T, rng):
        dim = tuple(range(-signal_ndim, 0))
        a = values(x)
        for norm in (None, "ortho"):
            spectrum = T.fft.rfftn(x, dim=dim, norm=norm)
            close(spectrum, np.fft.rfftn(a, axes=dim, norm=norm), rtol=1e-9, atol=1e-8)
            close(T.fft.irfftn(spectrum, s=x.shape[-signal_ndim:], dim=dim, norm=norm), a, rtol=0, atol=1e-8)
            back = T.fft.ifftn(T.fft.fftn(x, dim=dim, norm=norm), dim=dim, norm=norm)
            close(back, a.astype(np.complex128), rtol=0, atol=1e-8)
    for x, signal_ndim in _complex_cases(T, rng):
        dim = tuple(range(-signal_ndim, 0))
        a = values(x)
        for norm in ("ortho", None):
            close(T.fft.fftn(x, dim=dim, norm=norm), np.fft.fftn(a, axes=dim, norm=norm), rtol=1e-9, atol=1e-8)
            close(T.fft.ifftn(T.fft.fftn(x, dim=dim, norm=norm), dim=dim, norm=norm), a, rtol=0, atol=1e-8)
            close(T.fft.fftn(T.fft.ifftn(x, dim=dim, norm=norm), dim=dim, norm=norm), a, rtol=0, atol=1e-8)


def test_fft_input_modification(T):
    signal = T.ones((2, 2, 2))
    signal_copy = signal.clone()
    spectrum = T.fft.fftn(signal, dim=(-2, -1))
    same(signal, values(signal_copy))
    spectrum_copy = spectrum.clone()
    T.fft.ifftn(spectrum, dim=(-2, -1))
    same(spectrum, values(spectrum_copy))
    half_spectrum = T.fft.rfftn(signal, dim=(-2, -1))
    same(signal, values(signal_copy))
    half_spectrum_copy = half_spectrum.clone()
    T.fft.irfftn(half_spectrum_copy, s=(2, 2), dim=(-2, -1))
    same(half_spectrum, values(half_spectrum_copy))


def test_fft_plan_repeatable(T):
    rng = np.random.default_rng(14)
    for n in (2048, 3199, 5999):
        a = T.tensor(_random(n, "complex64", rng))
        same(T.fft.fftn(a), values(T.fft.fftn(a.clone())))
        a = T.tensor(rng.standard_normal(n))
        same(T.fft.rfft(a), values(T.fft.rfft(a.clone())))


def test_fft_out(T):
    """out= takes the result, resized (with PyTorch's warning) when it held elements of another shape."""
    x = T.tensor(_random((3, 5), "float64", np.random.default_rng(15)))
    out = T.empty(3, 5, dtype=T.complex128)
    assert T.fft.fft(x, out=out) is out
    close(out, np.fft.fft(values(x)))
    out = T.empty(0, dtype=T.float64)
    T.fft.irfft(T.fft.rfft(x), n=5, out=out)
    close(out, values(x))


def test_invalid_norm(T):
    raises(RuntimeError, 'Invalid normalization mode: "bad"', T.fft.fft, T.ones(4), norm="bad")
    raises(RuntimeError, r"Invalid number of data points \(0\) specified", T.fft.fft, T.ones(4), n=0)
    raises(RuntimeError, r"Invalid number of data points \(-3\) specified", T.fft.rfftn, T.ones(4, 4), s=(2, -3))
    raises(RuntimeError, r"Invalid number of data points \(0\) specified", T.fft.irfft, T.ones(1, dtype=T.complex64))


GRAD_CALLS = [("fft", {}), ("fft", {"n": 3, "norm": "ortho"}), ("fft", {"n": 8, "dim": 0}),
              ("ifft", {"norm": "forward"}), ("rfft", {}), ("rfft", {"n": 4}), ("rfft", {"n": 9, "norm": "ortho"}),
              ("irfft", {}),
              ("irfft", {"n": 5}), ("irfft", {"n": 8, "dim": 0, "norm": "forward"}), ("hfft", {}), ("hfft", {"n": 7}),
              ("ihfft", {"norm": "ortho"}), ("ihfft", {"n": 3}), ("fft2", {}), ("ifft2", {"s": (3, 7)}),
              ("fftn", {"dim": (0,)}), ("ifftn", {"s": (2, -1), "norm": "ortho"}), ("rfft2", {}),
              ("rfftn", {"s": (5, 4)}), ("irfft2", {}), ("irfftn", {"s": (4, 7)}), ("irfftn", {"dim": (1, 0)}),
              ("hfft2", {}), ("hfftn", {"s": (3, 6), "norm": "ortho"}), ("ihfft2", {}), ("ihfftn", {"dim": (1, 0)}),
              ("fftshift", {}), ("ifftshift", {"dim": 0})]


@pytest.mark.parametrize("name, kwargs", GRAD_CALLS, ids=lambda v: str(v))
def test_gradcheck(T, name, kwargs):
    """The transforms' gradients against finite differences, real and complex inputs in double precision."""
    rng = np.random.default_rng(16)
    op = getattr(T.fft, name)
    inputs = [_random((4, 6), "float64", rng)]
    if name not in REAL_ONLY:
        inputs.append(_random((4, 6), "complex128", rng))
    for a in inputs:
        x = T.tensor(a, requires_grad=True)
        assert T.autograd.gradcheck(lambda x: op(x, **kwargs), (x,))


@pytest.mark.parametrize("name", ["fft", "rfft", "irfft", "hfft", "ihfft", "fftn", "irfftn"])
def test_gradgradcheck(T, name):
    """Second derivatives through a non-linear use of the transform (a transform itself is linear)."""
    rng = np.random.default_rng(17)
    op = getattr(T.fft, name)
    x = T.tensor(_random((3, 4), "float64", rng), requires_grad=True)

    def squared(x):
        y = op(x)
        return (y * y.conj()).real if y.is_complex() else y * y

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert T.autograd.gradgradcheck(squared, (x,))


def test_gradient_of_fft_values(T):
    """L = Re Σ conj(w) fft(x): dL/dx = n · ifft(w), and a real input's gradient is real: Re(n · ifft(w))."""
    rng = np.random.default_rng(18)
    w = _random(5, "complex128", rng)
    x = T.tensor(_random(5, "complex128", rng), requires_grad=True)
    (T.fft.fft(x) * T.tensor(np.conj(w))).real.sum().backward()
    close(x.grad, 5 * np.fft.ifft(w), rtol=1e-12, atol=1e-12)
    r = T.tensor(_random(5, "float64", rng), requires_grad=True)
    (T.fft.fft(r) * T.tensor(np.conj(w))).real.sum().backward()
    close(r.grad, (5 * np.fft.ifft(w)).real, rtol=1e-12, atol=1e-12)
    assert dtype_name(r.grad) == "float64"


def test_argument_errors_in_pytorchs_order(T):
    """(beyond PyTorch's test) which of two faults each transform names first: the 1-D ones and rfftn check the
    dtype before the dims, the other n-D ones the dims first; a 0-d input has no dim to transform."""
    half, complex_ = T.ones(3, 4, dtype=T.float16), T.ones(3, 4, dtype=T.complex64)
    raises(RuntimeError, "Unsupported dtype Half", T.fft.fft, half, dim=2)
    raises(RuntimeError, "Unsupported dtype Half", T.fft.hfft, half, dim=2)
    raises(IndexError, "Dimension out of range", T.fft.fft2, half, dim=(0, 2))
    raises(IndexError, "Dimension out of range", T.fft.hfftn, half, dim=(0, 2))
    raises(IndexError, "Dimension out of range", T.fft.ihfft2, complex_, dim=(0, 2))
    raises(RuntimeError, "rfftn expects a real-valued input tensor, but got ComplexFloat", T.fft.rfft2, complex_,
           dim=(0, 2))
    raises(RuntimeError, "Only supports floating-point dtypes, but found: ComplexFloat", T.fft.ihfft2, complex_)
    raises(IndexError, "Dimension specified as -1 but tensor has no dimensions", T.fft.fft, T.tensor(1.0))
    raises(IndexError, "Dimension out of range", T.fft.fftshift, T.ones(3, 4), dim=2)
    raises(RuntimeError, "`shifts` required", T.fft.fftshift, T.ones(3, 4), dim=[])
    same(T.fft.fftn(T.tensor(2.0)), np.complex64(2), "complex64")  # a 0-d input: no dims, a complex copy


def test_out_dtypes(T):
    """(beyond PyTorch's test) out= takes a complex tensor for a spectrum and a floating one for a real signal, of
    a wider precision too, except ifft's and ihfft's, which must match."""
    x = T.arange(12.0).reshape(3, 4)
    for name in ("fft", "rfft", "fftn", "fft2", "rfftn", "ihfft2", "ihfftn"):
        nd = name[:-1] + "n" if name.endswith("2") else name
        raises(RuntimeError, f"^{nd} expects a complex output tensor, but got Float", getattr(T.fft, name), x,
               out=T.empty(0))
        out = T.empty(0, dtype=T.complex128)
        getattr(T.fft, name)(x, out=out)
        close(out, values(getattr(T.fft, name)(x)), rtol=1e-6, atol=1e-5)
        assert dtype_name(out) == "complex128"
    for name in ("irfft", "hfft", "irfft2", "hfftn"):
        nd = name[:-1] + "n" if name.endswith("2") else name
        raises(RuntimeError, f"^{nd} expects a floating point output tensor, but got ComplexFloat",
               getattr(T.fft, name), x, out=T.empty(0, dtype=T.complex64))
        raises(RuntimeError, f"^{nd} expects a floating point output tensor, but got Long", getattr(T.fft, name), x,
               out=T.empty(0, dtype=T.int64))
        out = T.empty(0, dtype=T.float64)
        getattr(T.fft, name)(x, out=out)
        close(out, values(getattr(T.fft, name)(x)), rtol=1e-6, atol=1e-5)
    for name in ("ifft", "ihfft"):
        raises(RuntimeError, "Found dtype ComplexDouble but expected ComplexFloat", getattr(T.fft, name), x,
               out=T.empty(0, dtype=T.complex128))


def test_doc_examples(T):
    """TestFFTDocExamples: the examples in torch.fft's docstrings, their printed values as literals."""
    t = T.arange(4)
    close(T.fft.fft(t), [6, -2 + 2j, -2, -2 - 2j])
    close(T.fft.ifft(t), [1.5, -0.5 - 0.5j, -0.5, -0.5 + 0.5j])
    close(T.fft.rfft(t), [6, -2 + 2j, -2])
    t = T.linspace(0, 1, 5)
    spectrum = T.fft.rfft(t)
    close(T.fft.irfft(spectrum), [0.1562, 0.3511, 0.7812, 1.2114], atol=1e-4)  # (4 points from 3 terms)
    close(T.fft.irfft(spectrum, t.numel()), [0, 0.25, 0.5, 0.75, 1])
    half = T.fft.ifft(t)[:3]
    close(T.fft.hfft(half, n=5), [0, 0.25, 0.5, 0.75, 1])
    close(T.fft.hfft(half), np.fft.hfft(np.fft.ifft(np.linspace(0, 1, 5))[:3]), atol=1e-6)
    close(T.fft.ihfft(T.arange(5)), [2, -0.5 - 0.6882j, -0.5 - 0.1625j], atol=1e-4)
    close(T.fft.fftfreq(5), [0, 0.2, 0.4, -0.4, -0.2])
    close(T.fft.fftfreq(4), [0, 0.25, -0.5, -0.25])
    close(T.fft.rfftfreq(5), [0, 0.2, 0.4])
    close(T.fft.rfftfreq(4), [0, 0.25, 0.5])
    close(T.fft.fftshift(T.fft.fftfreq(4)), [-0.5, -0.25, 0, 0.25])
    x = T.fft.fftfreq(5, d=1 / 5) + 0.1 * T.fft.fftfreq(5, d=1 / 5).unsqueeze(1)
    close(T.fft.fftshift(x, dim=1)[0], [-2, -1, 0, 1, 2])
    close(T.fft.fftshift(x, dim=0)[:, 0], [-0.2, -0.1, 0, 0.1, 0.2])
    close(T.fft.ifftshift(T.fft.fftshift(x)), values(x))
    two = T.rand(10, 10, dtype=T.complex64)
    close(T.fft.fft2(two), values(T.fft.fft(T.fft.fft(two, dim=0), dim=1)), rtol=1e-5, atol=1e-5)
    real = T.rand(10, 10)
    assert T.fft.rfft2(real).shape == (10, 6)
    close(T.fft.irfft2(T.fft.rfft2(real), real.shape), values(real), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fft2", "rfftn", "irfftn", "hfftn"])
def test_jvp_is_the_transform_of_the_tangent(T, name):
    """(the OpInfos' forward-mode checks, through func.jvp) a transform is linear: its jvp is the transform of the
    tangent, and its output the transform of the input."""
    rng = np.random.default_rng(19)
    real = name in REAL_ONLY
    x = T.tensor(_random((4, 6), "float64" if real else "complex128", rng))
    v = T.tensor(_random((4, 6), "float64" if real else "complex128", rng))
    op = getattr(T.fft, name)
    out, tangent = T.func.jvp(lambda x: op(x, norm="ortho"), (x,), (v,))
    close(out, values(op(x, norm="ortho")), rtol=1e-12, atol=1e-12)
    close(tangent, values(op(v, norm="ortho")), rtol=1e-12, atol=1e-12)
