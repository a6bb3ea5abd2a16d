"""Special functions at the edges of their arguments, found by session 35's diff of small programs on both
libraries and checked on both (the ``T`` fixture: chainrule's, then PyTorch's where it is installed): K1 of a
subnormal x (the trapezoidal rule's loop never ended), K0 of one (cut off at t = 710 where sinh² overflowed:
711.1 for 736.9), ln Γ of one (sin(πx) of a subnormal keeps few digits), the regularized incomplete gamma of
-∞ (read as +∞), Ai past x = 1e205 (NaN where ζ overflowed), and i0's overflow warning from NumPy's module."""

import math
import warnings

import numpy as np
import pytest

from tests.ported import same

TINY = [1e-320, 1e-310, 5e-321, 1e-300, 1e-12, 9e-11, 1e-10, 1e-8]


def _close(t, expected, rtol=1e-14):
    got = t.numpy().astype(np.float64)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=0)


@pytest.mark.parametrize("scaled", [False, True])
def test_k1_of_tiny_x_is_one_over_x_and_ends(T, scaled):
    f = T.special.scaled_modified_bessel_k1 if scaled else T.special.modified_bessel_k1
    x = np.array(TINY)
    # K1(x) = 1/x + (x/2) ln(x/2) + ...; e^x K1(x) = 1/x + 1 + ...
    y = f(T.tensor(TINY, dtype=T.float64))  # (the loop over 1e-320 never ended)
    assert np.isinf(y.numpy()[:3]).all()  # (1/x overflows)
    _close(y[3:], 1 / x[3:] + (1.0 if scaled else 0.0))
    assert np.isinf(f(T.tensor([1e-40], dtype=T.float32)).numpy()).all()


@pytest.mark.parametrize("scaled", [False, True])
def test_k0_of_tiny_x_is_minus_log_of_half_x_less_euler(T, scaled):
    f = T.special.scaled_modified_bessel_k0 if scaled else T.special.modified_bessel_k0
    x = np.array(TINY)
    expected = (-np.log(x / 2) - 0.5772156649015329) * (1 + x if scaled else 1.0)
    _close(f(T.tensor(TINY, dtype=T.float64)), expected)  # (736.94 at 1e-320, where the rule gave 711.1)


@pytest.mark.parametrize("name", ["modified_bessel_k0", "modified_bessel_k1", "scaled_modified_bessel_k0",
                                  "scaled_modified_bessel_k1"])
def test_k_away_from_zero_keeps_its_values(T, name):
    x = [1.1e-10, 1e-3, 0.5, 3.0, 50.0]
    y = getattr(T.special, name)(T.tensor(x, dtype=T.float64)).numpy()
    # (SciPy's k0, k1, k0e and k1e at 0.5)
    expected = {"modified_bessel_k0": 0.9244190712276659, "modified_bessel_k1": 1.6564411200033007,
                "scaled_modified_bessel_k0": 1.5241093857739096, "scaled_modified_bessel_k1": 2.7310097082117860}
    assert math.isclose(y[2], expected[name], rel_tol=1e-13)
    assert np.isfinite(y).all() and (y > 0).all() and (np.diff(y) < 0).all()


def test_lgamma_of_a_subnormal_is_minus_its_log(T):
    x = T.tensor([1e-320, -1e-320, 1e-310, 5e-324], dtype=T.float64)
    # (1e-320 is held as 9.99988671826831e-321; sin(πx) of it kept about 13 bits: 736.82717 for 736.82724)
    _close(T.lgamma(x), [-math.log(abs(v)) for v in x.tolist()])
    same(T.lgamma(T.tensor([0.0, -0.0, 1.0, 2.0], dtype=T.float64)), [math.inf, math.inf, 0.0, 0.0])


@pytest.mark.parametrize("name, lower", [("gammainc", True), ("gammaincc", False)])
def test_regularized_gamma_of_minus_infinity_is_nan(T, name, lower):
    f = getattr(T.special, name)
    a = T.tensor([-1.0, -math.inf, 0.5, 0.5, 0.0, 1.0, math.inf, 1.0])
    x = T.tensor([0.5, 0.5, -1.0, -math.inf, 1.0, 0.0, 1.0, math.inf])
    nan = math.nan
    same(f(a, x), [nan, nan, nan, nan, 1.0, 0.0, 0.0, 1.0] if lower else [nan, nan, nan, nan, 0.0, 1.0, 1.0, 0.0])


def test_airy_ai_far_right_is_zero(T):
    y = T.special.airy_ai(T.tensor([1e308, 1e250, 1e205, 1e200, 1e100, math.inf, 2.0], dtype=T.float64))
    same(y[:5], [0.0] * 5)  # (NaN past 1e205, where ζ = ⅔ x^(3/2) overflowed)
    assert math.isnan(y[5].item())  # (Ai(∞) is NaN in both)
    assert math.isclose(y[6].item(), 0.03492413042327437, rel_tol=1e-13)


def test_i0_overflows_to_infinity_without_numpys_warning(T):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (T.float64, T.float32, T.int32):
            y = T.i0(T.tensor([800, -800, 3], dtype=dtype))
            assert np.isinf(y.numpy()[:2]).all() and math.isclose(y[2].item(), 4.880792585865024, rel_tol=1e-6)
        x = T.tensor([math.inf, 1.0], dtype=T.float64)
        assert math.isnan(T.i0(x)[0].item())  # (NaN at ∞, as PyTorch's)
        x.i0_()
        assert math.isclose(x[1].item(), 1.2660658777520084, rel_tol=1e-14)
