"""autograd.fft: known transforms without PyTorch, gradients against finite differences (real and
imaginary parts moved separately) over hypothesis-drawn shapes, lengths and norms, second
derivatives, and PyTorch's values, gradients, dtypes and errors for every transform."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
from autograd import Tensor, fft
from tests.test_ops import _run

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
NORMS = [None, "backward", "forward", "ortho"]


@st.composite
def signal(draw, complex_values=True, min_side=1):
    """A real or complex leaf of 1 to 3 dims, and (n, norm) for a transform along its last dim."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = tuple(draw(st.lists(st.integers(min_side, 4), min_size=1, max_size=3)))
    values = rng.standard_normal(shape)
    if complex_values and draw(st.booleans()):
        values = values + 1j * rng.standard_normal(shape)
    n = draw(st.sampled_from([None, 1, 2, 3, 5, 6]))
    return [Tensor(values, requires_grad=True)], (n, draw(st.sampled_from(NORMS)))


@st.composite
def image(draw, complex_values=True):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = tuple(draw(st.lists(st.integers(2, 4), min_size=2, max_size=3)))
    values = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if complex_values else 0)
    s = draw(st.sampled_from([None, (2, 3), (-1, 4), (3, -1)]))
    return [Tensor(values, requires_grad=True)], (s, draw(st.sampled_from(NORMS)))


CASES = {  # the three primitives (tests/test_ops.py checks that every primitive has one)
    "FFT": (signal(), lambda x, a: fft.fft(x, a[0], norm=a[1]) + fft.ifft(x, a[0], norm=a[1]) * 2.0),
    "RealFFT": (signal(complex_values=False), lambda x, a: fft.rfft(x, a[0], norm=a[1])),
    "InverseRealFFT": (signal(min_side=2), lambda x, a: fft.irfft(x, a[0], norm=a[1])),
}
SEVERAL_DIMS = {
    "fftn": (image(), lambda x, a: fft.fftn(x, a[0], norm=a[1])),
    "ifft2": (image(), lambda x, a: fft.ifft2(x, a[0], norm=a[1])),
    "rfftn": (image(complex_values=False), lambda x, a: fft.rfftn(x, a[0], norm=a[1])),
    "irfftn": (image(), lambda x, a: fft.irfftn(x, a[0], norm=a[1])),
    "hfft, ihfft": (signal(complex_values=False, min_side=2),
                    lambda x, a: fft.hfft(fft.ihfft(x, a[0], norm=a[1]) * 1j + 1.0, n=x.shape[-1], norm=a[1])),
    "hfftn": (image(), lambda x, a: fft.hfftn(x, a[0], norm=a[1])),
    "fftshift": (image(), lambda x, a: fft.fftshift(x) * 2.0 + fft.ifftshift(x, dim=0)),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(SEVERAL_DIMS))
@settings(deadline=None)
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **SEVERAL_DIMS}[name], data)
    assert autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", ["FFT", "RealFFT", "InverseRealFFT", "rfftn"])
@settings(deadline=None, max_examples=30)
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **SEVERAL_DIMS}[name], data)

    def squared(x):  # (a transform is linear: its second derivative shows only through a non-linear use)
        y = fn(x)
        return y.abs() ** 2 if y.dtype.kind == "c" else y * y

    assert autograd.gradgradcheck(squared, tensors)


def test_known_transforms():
    impulse = autograd.tensor([1.0, 0.0, 0.0, 0.0])
    spectrum = fft.fft(impulse)
    assert spectrum.dtype == autograd.complex64
    np.testing.assert_allclose(spectrum.numpy(), np.ones(4))
    np.testing.assert_allclose(fft.fft(autograd.ones(4)).numpy(), [4, 0, 0, 0])
    np.testing.assert_allclose(fft.fft(autograd.ones(4), norm="ortho").numpy(), [2, 0, 0, 0])
    np.testing.assert_allclose(fft.fft(autograd.ones(4), norm="forward").numpy(), [1, 0, 0, 0])
    # cos(2π t/8) has its energy at frequencies ±1: rfft keeps 0..4, with n/2 = 4 at index 1
    t = np.arange(8)
    np.testing.assert_allclose(fft.rfft(autograd.tensor(np.cos(2 * np.pi * t / 8))).numpy(), [0, 4, 0, 0, 0],
                               atol=1e-12)
    x = autograd.tensor(np.random.default_rng(0).standard_normal((3, 7)))
    np.testing.assert_allclose(fft.irfft(fft.rfft(x), n=7).numpy(), x.numpy(), atol=1e-12)
    np.testing.assert_allclose(fft.ifftn(fft.fftn(x)).real.numpy(), x.numpy(), atol=1e-12)
    np.testing.assert_allclose(fft.hfft(fft.ihfft(x), n=7).numpy(), x.numpy(), atol=1e-12)
    # Parseval: the ortho transform keeps the energy
    np.testing.assert_allclose((fft.fft(x, norm="ortho").abs() ** 2).sum().item(), (x * x).sum().item())
    assert fft.fft(autograd.arange(4)).dtype == autograd.complex64  # integers: the default dtype
    assert fft.rfft(x).shape == (3, 4) and fft.irfft(fft.rfft(x)).shape == (3, 6)
    assert fft.fftn(autograd.ones(2, 3), s=(-1, 4)).shape == (2, 4)


def test_the_gradient_of_fft_is_the_adjoint():
    """L = Re Σ w · fft(x): dL/dx = conj(F)ᵀ w = n · ifft(w) for the default scale."""
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal(5) + 1j * rng.standard_normal(5), requires_grad=True)
    w = rng.standard_normal(5) + 1j * rng.standard_normal(5)
    (fft.fft(x) * Tensor(np.conj(w))).real.sum().backward()  # Re ⟨w, F x⟩
    np.testing.assert_allclose(x.grad.numpy(), 5 * np.fft.ifft(w))
    r = Tensor(rng.standard_normal(6), requires_grad=True)
    (fft.rfft(r).abs() ** 2).sum().backward()  # a real input gets a real gradient
    assert r.grad.dtype == np.float64


def test_frequencies_and_shifts():
    np.testing.assert_allclose(fft.fftfreq(5).numpy(), [0.0, 0.2, 0.4, -0.4, -0.2], rtol=1e-6)
    freqs = fft.rfftfreq(5, d=0.5, dtype=autograd.float64)
    assert freqs.dtype == autograd.float64 and freqs.tolist() == [0.0, 0.4, 0.8]
    assert fft.fftfreq(4).dtype == autograd.float32
    x = autograd.arange(6).reshape(2, 3)
    assert fft.fftshift(x).tolist() == [[5, 3, 4], [2, 0, 1]]
    assert fft.ifftshift(fft.fftshift(x)).tolist() == x.tolist()
    assert fft.fftshift(x, dim=1).tolist() == [[2, 0, 1], [5, 3, 4]]


def test_errors_name_the_problem():
    x = autograd.ones(4)
    with pytest.raises(RuntimeError, match='Invalid normalization mode: "bad"'):
        fft.fft(x, norm="bad")
    with pytest.raises(RuntimeError, match="rfft expects a real input tensor, but got ComplexFloat"):
        fft.rfft(fft.fft(x))
    with pytest.raises(RuntimeError, match=r"Invalid number of data points \(0\)"):
        fft.fft(x, n=0)
    with pytest.raises(RuntimeError, match=r"Invalid number of data points \(0\)"):
        fft.irfft(autograd.ones(1))
    with pytest.raises(RuntimeError, match="Unsupported dtype Half"):
        fft.fft(x.half())
    with pytest.raises(IndexError, match="Dimension out of range"):
        fft.fft(x, dim=2)
    with pytest.raises(RuntimeError, match="Got shape with 2 values but input tensor only has 1 dimensions"):
        fft.fftn(x, s=(2, 3))
    with pytest.raises(RuntimeError, match="dim and shape arguments must have the same length"):
        fft.fftn(autograd.ones(2, 3), s=(2, 3), dim=(0,))
    with pytest.raises(RuntimeError, match="FFT dims must be unique"):
        fft.fftn(autograd.ones(2, 3), dim=(0, 0))


TORCH_CALLS = [("fft", {}), ("fft", {"n": 4}), ("fft", {"n": 9, "norm": "ortho"}), ("ifft", {"norm": "forward"}),
               ("fft2", {}), ("fftn", {"s": (2, 7)}), ("ifftn", {"dim": (0,)}), ("rfft", {}), ("rfft", {"n": 5}),
               ("rfft", {"n": 8, "dim": 0, "norm": "ortho"}), ("irfft", {}), ("irfft", {"n": 7}),
               ("irfft", {"n": 4, "norm": "forward"}), ("rfft2", {}), ("irfft2", {}), ("rfftn", {"s": (4, 5)}),
               ("irfftn", {"s": (2, 6)}), ("hfft", {}), ("hfft", {"n": 6, "norm": "ortho"}), ("ihfft", {}),
               ("hfft2", {}), ("ihfft2", {}), ("hfftn", {"s": (3, 4)}), ("ihfftn", {"norm": "forward"}),
               ("fftshift", {}), ("ifftshift", {"dim": 1})]


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
@pytest.mark.parametrize("name, arguments", TORCH_CALLS)
def test_against_pytorch(name, arguments, dtype):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3, 6)) + (1j * rng.standard_normal((3, 6)) if dtype.startswith("complex") else 0)
    values = values.astype(dtype)
    results = []
    for library in (autograd, torch):
        x = library.tensor(values, requires_grad=True)
        try:
            y = getattr(library.fft, name)(x, **arguments)
        except RuntimeError as error:
            results.append(("error", str(error)[:40]))
            continue
        is_complex = y.dtype in (torch.complex64, torch.complex128) if library is torch else y.dtype.kind == "c"
        weights = np.random.default_rng(5).standard_normal(tuple(y.shape) + (2,))
        w = weights[..., 0] + 1j * weights[..., 1] if is_complex else weights[..., 0]
        product = y * library.tensor(w)
        (product.real if is_complex else product).sum().backward()
        results.append((y.detach().resolve_conj().numpy(), x.grad.resolve_conj().numpy(),
                        str(y.dtype).replace("torch.", "")))
    ours, theirs = results
    if isinstance(theirs[0], str) or isinstance(ours[0], str):
        assert ours == theirs
        return
    assert ours[2] == theirs[2]
    tolerance = 1e-4 if dtype in ("float32", "complex64") else 1e-10
    np.testing.assert_allclose(ours[0], theirs[0], rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=tolerance, atol=tolerance)
