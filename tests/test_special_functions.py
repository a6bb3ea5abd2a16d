"""The special functions PyTorch gives no gradient (Bessel J, Y, K, I, Airy Ai, the orthogonal
polynomials) and the scaled i0e, i1e: values against known constants, Wronskians and NumPy's
polynomials without PyTorch; against mpmath where it is installed; and values, dtypes and edges
against PyTorch (whose Cephes fits are good to about 1e-6 near the zeros of J and Y and of Ai)."""

import math

import numpy as np
import numpy.polynomial as polynomial
import pytest

import autograd
from autograd import Tensor

S = autograd.special

BESSEL = ["bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "modified_bessel_i0", "modified_bessel_i1",
          "modified_bessel_k0", "modified_bessel_k1", "scaled_modified_bessel_k0", "scaled_modified_bessel_k1",
          "airy_ai"]
POLYNOMIALS = ["chebyshev_polynomial_t", "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w",
               "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
               "shifted_chebyshev_polynomial_w", "hermite_polynomial_h", "hermite_polynomial_he",
               "laguerre_polynomial_l", "legendre_polynomial_p"]


def _f64(values):
    return autograd.tensor(np.asarray(values, dtype=np.float64))


def test_bessel_known_values():
    x = _f64([0.5, 3.0, 30.0])
    expected = {  # (mpmath, 30 digits)
        "bessel_j0": [0.9384698072408129, -0.26005195490193344, -0.086367983581040211],
        "bessel_j1": [0.24226845767487389, 0.33905895852593646, -0.11875106261662294],
        "bessel_y0": [-0.44451873350670656, 0.37685001001279038, -0.11729573168666403],
        "bessel_y1": [-1.4714723926702431, 0.32467442479179998, 0.084425570661747235],
        "modified_bessel_k0": [0.92441907122766586, 0.034739504386279248, 2.1324774964630564e-14],
        "modified_bessel_k1": [1.6564411200033009, 0.040156431128194184, 2.1677320018915494e-14],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(getattr(S, name)(x).numpy(), values, rtol=1e-14, err_msg=name)
    ai = S.airy_ai(_f64([0.0, 1.0, -1.0, 5.0, -2.5, -10.0, -30.0])).numpy()
    np.testing.assert_allclose(ai, [0.355028053887817239, 0.13529241631288142, 0.53556088329235212,
                                    0.00010834442813607442, -0.11232506769296609, 0.040241238486443191,
                                    -0.087968188456842163], rtol=1e-14, atol=3e-15)  # (ζ = ⅔|x|^1.5 rounds)


def test_wronskians():
    # J1 Y0 - J0 Y1 = 2/(πx) and I0 K1 + I1 K0 = 1/x, across both methods of each (x ≶ 25)
    x = np.concatenate([np.geomspace(1e-3, 24.9, 40), np.geomspace(25.1, 1e4, 20)])
    t = _f64(x)
    j0, j1, y0, y1 = (getattr(S, name)(t).numpy() for name in ("bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1"))
    np.testing.assert_allclose((j1 * y0 - j0 * y1) * x * math.pi / 2, 1.0, rtol=1e-13)
    small = _f64(x[x < 700])
    i0, i1 = S.i0e(small).numpy(), S.i1e(small).numpy()  # e^-x I and e^x K: the products keep their scale
    k0, k1 = S.scaled_modified_bessel_k0(small).numpy(), S.scaled_modified_bessel_k1(small).numpy()
    np.testing.assert_allclose((i0 * k1 + i1 * k0) * x[x < 700], 1.0, rtol=1e-13)


def test_bessel_edges_and_no_gradient():
    x = Tensor(np.array([-1.0, 0.0, np.inf, -np.inf, np.nan]), requires_grad=True)
    for name in BESSEL:
        assert not getattr(S, name)(x).requires_grad, name
    y0 = S.bessel_y0(x).numpy()
    assert np.isnan(y0[0]) and y0[1] == -np.inf and np.isnan(y0[2:]).all()
    assert S.bessel_j0(_f64([0.0])).item() == 1.0
    assert S.bessel_j1(_f64([-1.0])).item() == -S.bessel_j1(_f64([1.0])).item()
    k0 = S.modified_bessel_k0(x).numpy()
    assert np.isnan(k0[0]) and k0[1] == np.inf and k0[2] == 0.0
    assert np.isnan(S.airy_ai(_f64([np.inf, -np.inf, np.nan])).numpy()).all()
    assert S.bessel_j0(autograd.tensor([1, 2])).dtype == autograd.float32


def test_i0e_and_i1e_do_not_overflow_and_have_gradients():
    x = _f64([0.0, 1.0, -1.0, 1e5, 1e300])
    i0e, i1e = S.i0e(x).numpy(), S.i1e(x).numpy()
    np.testing.assert_allclose(i0e[:3], [1.0, math.exp(-1) * np.i0(1.0), math.exp(-1) * np.i0(1.0)], rtol=1e-15)
    big = x.numpy()[3:]
    # e^-x I_ν(x) ≈ 1/√(2πx) (1 - (4ν² - 1)/(8x)) far out
    np.testing.assert_allclose(i0e[3:], (1 + 1 / (8 * big)) / np.sqrt(2 * math.pi * big), rtol=1e-10)
    np.testing.assert_allclose(i1e[3:], (1 - 3 / (8 * big)) / np.sqrt(2 * math.pi * big), rtol=1e-10)
    assert i1e[1] == -i1e[2]
    # I1(x) past 50, where its series gives way to the asymptotic one
    np.testing.assert_allclose(S.i1(_f64([50.0, 51.0])).numpy() * np.exp(-np.array([50.0, 51.0])),
                               S.i1e(_f64([50.0, 51.0])).numpy(), rtol=1e-14)


def _numpy_polynomial(name, x, n):
    coefficients = np.zeros(n + 1)
    coefficients[n] = 1
    if "chebyshev" in name:
        x = 2 * x - 1 if name.startswith("shifted") else x
        kind = name[-1]
        if kind == "t":
            return polynomial.chebyshev.chebval(x, coefficients)
        # U_n = (T_n+2 ... ): through the trigonometric forms on [-1, 1]
        theta = np.arccos(x)
        return {"u": np.sin((n + 1) * theta) / np.sin(theta),
                "v": np.cos((n + 0.5) * theta) / np.cos(theta / 2),
                "w": np.sin((n + 0.5) * theta) / np.sin(theta / 2)}[kind]
    return {"hermite_polynomial_h": polynomial.hermite.hermval, "hermite_polynomial_he": polynomial.hermite_e.hermeval,
            "laguerre_polynomial_l": polynomial.laguerre.lagval,
            "legendre_polynomial_p": polynomial.legendre.legval}[name](x, coefficients)


@pytest.mark.parametrize("name", POLYNOMIALS)
def test_polynomials_match_numpy(name):
    x = np.linspace(0.02, 0.98, 13) if name.startswith("shifted") else np.linspace(-0.97, 0.97, 13)
    for n in (0, 1, 2, 5, 9, 15):
        ours = getattr(S, name)(_f64(x), n).numpy()
        np.testing.assert_allclose(ours, _numpy_polynomial(name, x, n), rtol=1e-11, atol=1e-11 * max(1, n) ** 2,
                                   err_msg=f"{name}, n = {n}")
    # a negative degree gives 0; a tensor of degrees broadcasts; no gradient
    assert getattr(S, name)(_f64(x[:2]), -1).numpy().tolist() == [0.0, 0.0]
    degrees = getattr(S, name)(_f64(x[:3]), autograd.tensor([0, 1, 2]))
    assert degrees.shape == (3,) and degrees.numpy()[0] == 1.0
    assert not getattr(S, name)(Tensor(x, requires_grad=True), 3).requires_grad


def test_polynomial_arguments():
    assert S.chebyshev_polynomial_t(0.5, autograd.tensor([1, 2])).dtype == autograd.float32
    assert S.chebyshev_polynomial_t(autograd.tensor([1, 2]), 3).dtype == autograd.float32
    np.testing.assert_allclose(S.chebyshev_polynomial_t(autograd.tensor([0.5]), 2.7).numpy(), [-0.5])  # (n → 2)
    with pytest.raises(TypeError, match="one of x and n must be a Tensor"):
        S.chebyshev_polynomial_t(2.0, 3)
    assert np.isnan(S.hermite_polynomial_h(_f64([0.5]), 600).item())  # past PyTorch's limit of 512


def test_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    x = np.concatenate([np.linspace(-40, 40, 65), np.geomspace(1e-8, 1e4, 20)])
    positive = x[x > 0]
    references = {
        "bessel_j0": (x, lambda v: mpmath.besselj(0, v)), "bessel_j1": (x, lambda v: mpmath.besselj(1, v)),
        "bessel_y0": (positive, lambda v: mpmath.bessely(0, v)),
        "bessel_y1": (positive, lambda v: mpmath.bessely(1, v)),
        "scaled_modified_bessel_k0": (positive, lambda v: mpmath.besselk(0, v) * mpmath.exp(v)),
        "scaled_modified_bessel_k1": (positive, lambda v: mpmath.besselk(1, v) * mpmath.exp(v)),
        "airy_ai": (x[np.abs(x) < 100], mpmath.airyai),
        "i0e": (x, lambda v: mpmath.besseli(0, v) * mpmath.exp(-abs(v))),
        "i1e": (x, lambda v: mpmath.besseli(1, v) * mpmath.exp(-abs(v))),
    }
    for name, (points, exact) in references.items():
        expected = np.array([float(exact(mpmath.mpf(v))) for v in points])
        ours = getattr(S, name)(_f64(points)).numpy()
        # relative where the function is of its usual size, absolute (1e-15) at its zeros
        np.testing.assert_allclose(ours, expected, rtol=3e-15, atol=1e-14 if name == "airy_ai" else 2e-15,
                                   err_msg=name)


TORCH_TOLERANCE = {"bessel_j0": 1e-6, "bessel_j1": 1e-6, "bessel_y0": 1e-6, "bessel_y1": 1e-6, "airy_ai": 1e-5}


@pytest.mark.torch
@pytest.mark.parametrize("name", BESSEL + ["i0e", "i1e"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bessel_matches_torch(name, dtype):
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.linspace(-40, 40, 321), np.geomspace(1e-8, 1e4, 40), [0.0, -np.inf, np.nan]]).astype(dtype)
    if name != "modified_bessel_i1":  # (PyTorch's I1(±∞) is NaN: exp(∞) / √∞)
        x = np.concatenate([x, np.array([np.inf], dtype=dtype)])
    with np.errstate(all="ignore"):
        ours = getattr(S, name)(autograd.tensor(x))
        theirs = getattr(torch.special, name)(torch.tensor(x))
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    ours, theirs = ours.numpy().astype(np.float64), theirs.numpy().astype(np.float64)
    # (the oscillating ones are compared absolutely: PyTorch's phase x - π/4 is rounded, in float32
    # to about 40 · 6e-8 at x = 40)
    tolerance = TORCH_TOLERANCE.get(name, 1e-14) if dtype == "float64" else (
        2e-5 if name in TORCH_TOLERANCE else 1e-5)
    np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance if name in TORCH_TOLERANCE else 0)


@pytest.mark.torch
@pytest.mark.parametrize("name", POLYNOMIALS)
def test_polynomials_match_torch(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1.2, 1.2, 100), [-1.0, 1.0, 0.0, 0.5, 2.0, -3.0]])
    for n in [-1, 0, 1, 2, 3, 5, 7, 9, 12, 30, 100, 600, 2.7]:
        points = (x + 1) / 2 if name.startswith("shifted") else x
        ours = getattr(S, name)(autograd.tensor(points), autograd.tensor(np.full(x.shape, n))).numpy()
        theirs = getattr(torch.special, name)(torch.tensor(points), torch.tensor(np.full(x.shape, n))).numpy()
        # (scaled by the value's size: at degree 600 the cosines differ in their last bits)
        np.testing.assert_allclose(ours, theirs, rtol=1e-11, atol=1e-11, err_msg=f"{name}, n = {n}")
