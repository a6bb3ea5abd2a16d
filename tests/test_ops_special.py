"""The special functions beyond the gamma family: the incomplete gamma functions (igamma,
igammac, special.gammainc/gammaincc), Hurwitz's zeta, erfcx, log_ndtr, ndtri, xlog1py and
spherical_bessel_j0. Values against exact references (math, closed forms, identities) without
PyTorch; gradients against finite differences; and values, gradients, dtypes and errors
against PyTorch over wide ranges, tails and edges."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from autograd import Tensor
from tests.ops_reference import compare
from tests.test_ops import SHAPES, _run, arrays, broadcast_pair, leaf, unary

S = autograd.special


@st.composite
def shape_parameter_and_point(draw):
    """([x], a): the point x (differentiated) and the shape a (a constant: its gradient is refused)."""
    shape = draw(SHAPES)
    return [leaf(draw(arrays(shape, 0.2, 6.0)))], draw(arrays(shape, 0.3, 5.0))


@st.composite
def zeta_point(draw):
    """([q], x): the shift q (differentiated) and the exponent x > 1 (a constant)."""
    shape = draw(SHAPES)
    return [leaf(draw(arrays(shape, 0.3, 4.0)))], draw(arrays(shape, 1.5, 6.0))


CASES = {
    "Igamma": (shape_parameter_and_point(), lambda x, a: autograd.igamma(Tensor(a), x)),
    "Igammac": (shape_parameter_and_point(), lambda x, a: S.gammaincc(Tensor(a), x)),
    "Zeta": (zeta_point(), lambda q, x: S.zeta(Tensor(x), q)),
    "Erfcx": (unary(-3.0, 8.0), S.erfcx),
    "ErfcxSlope": (unary(-3.0, 8.0), lambda x: autograd.autograd.grad(S.erfcx(x).sum(), x, create_graph=True)[0]),
    "LogNdtr": (unary(-12.0, 6.0), S.log_ndtr),
    "Ndtri": (unary(0.02, 0.98), S.ndtri),
    "Xlog1py": (broadcast_pair(0.1, 3.0), S.xlog1py),
    "I0e": (unary(-4.0, 4.0, kinks=(0.0,)), S.i0e),
    "I1e": (unary(-4.0, 4.0, kinks=(0.0,)), S.i1e),
}
SECOND_ORDER = ["I0e", "I1e", "Erfcx", "ErfcxSlope", "LogNdtr", "Ndtri", "Xlog1py", "Igamma", "Zeta"]


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", SECOND_ORDER)
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradgradcheck(fn, tensors)


# ---- values without PyTorch: closed forms and identities --------------------------------------------

def _f64(values):
    return autograd.tensor(np.asarray(values, dtype=np.float64))


def test_incomplete_gamma_closed_forms():
    x = np.concatenate([np.geomspace(1e-10, 700, 60), [0.5, 1.0, 1.1, 2.0, 30.0]])
    # P(1, x) = 1 - e^-x, Q(1, x) = e^-x, P(½, x) = erf(√x), Q(½, x) = erfc(√x)
    np.testing.assert_allclose(autograd.igamma(_f64(np.ones_like(x)), _f64(x)).numpy(), -np.expm1(-x), rtol=1e-14)
    np.testing.assert_allclose(autograd.igammac(_f64(np.ones_like(x)), _f64(x)).numpy(), np.exp(-x), rtol=1e-13)
    half = _f64(np.full_like(x, 0.5))
    np.testing.assert_allclose(S.gammainc(half, _f64(x)).numpy(), [math.erf(math.sqrt(v)) for v in x], rtol=1e-14)
    np.testing.assert_allclose(S.gammaincc(half, _f64(x)).numpy(), [math.erfc(math.sqrt(v)) for v in x], rtol=1e-13)
    # Q(n, x) = e^-x Σ_{k<n} x^k / k! for integers n, here up to 60 with x near n
    for n in (3, 12, 60):
        points = np.array([0.5 * n, n - 1.0, float(n), n + 3.0, 2.0 * n])
        exact = [math.exp(-v) * math.fsum(v**k / math.factorial(k) for k in range(n)) for v in points]
        np.testing.assert_allclose(S.gammaincc(_f64([float(n)] * 5), _f64(points)).numpy(), exact, rtol=1e-13)
        lower = [math.fsum(math.exp(k * math.log(v) - v - math.lgamma(k + 1)) for k in range(n, n + 400))
                 for v in points]  # P(n, x) = e^-x Σ_{k≥n} x^k / k!
        np.testing.assert_allclose(S.gammainc(_f64([float(n)] * 5), _f64(points)).numpy(), lower, rtol=1e-13)


def test_incomplete_gamma_tiny_shape_keeps_its_digits():
    # Q(a, x) → a E1(x) as a → 0: Q is tiny beside P, and 1 - P would have lost every digit
    e1_half = 0.5597735947761608  # E1(1/2)
    q = S.gammaincc(_f64([1e-300, 1e-10]), _f64([0.5, 0.5])).numpy()
    np.testing.assert_allclose(q, [1e-300 * e1_half, 1e-10 * e1_half], rtol=1e-8)


def test_incomplete_gamma_edges_are_cephes():
    a = _f64([0.0, 0.0, 1.0, np.inf, np.inf, 2.0, np.nan, 1.0, -1.0, 1.0])
    x = _f64([0.0, 1.0, 0.0, 1.0, np.inf, np.inf, 1.0, np.nan, 1.0, -1.0])
    np.testing.assert_array_equal(autograd.igamma(a, x).numpy(), [np.nan, 1, 0, 0, np.nan, 1, np.nan, np.nan,
                                                                  np.nan, np.nan])
    np.testing.assert_array_equal(autograd.igammac(a, x).numpy(), [np.nan, 0, 1, 1, np.nan, 0, np.nan, np.nan,
                                                                   np.nan, np.nan])


def test_incomplete_gamma_names_methods_and_errors():
    a, x = _f64([2.0, 3.0]), _f64([1.0, 4.0])
    expected = autograd.igamma(a, x).numpy()
    np.testing.assert_array_equal(a.igamma(x).numpy(), expected)
    np.testing.assert_allclose(a.igammac(x).numpy(), 1 - expected, rtol=1e-15)
    b = a.clone()
    b.igamma_(x)
    np.testing.assert_array_equal(b.numpy(), expected)
    with pytest.raises(TypeError, match="must be Tensor, not int"):
        autograd.igamma(a, 2)
    with pytest.raises(NotImplementedError, match="igamma_cpu.*int64"):
        autograd.igamma(autograd.tensor([1]), autograd.tensor([2]))
    shape = Tensor(np.array([2.0, 3.0]), requires_grad=True)
    point = Tensor(np.array([1.0, 4.0]), requires_grad=True)
    for function, name in ((autograd.igamma, "igamma"), (autograd.igammac, "igammac")):
        with pytest.raises(NotImplementedError, match=f"the derivative for '{name}: input' is not implemented"):
            function(shape, point).sum().backward()
        # only the gradient asked for is computed: the shape's is not
        (grad,) = autograd.grad(function(shape, point).sum(), [point])
        sign = -1 if name == "igammac" else 1
        np.testing.assert_allclose(grad.numpy(), sign * np.array([math.exp(-1), 16 * math.exp(-4) / 2]), rtol=1e-14)


def test_zeta_known_values_and_edges():
    # ζ(2) = π²/6, ζ(4) = π⁴/90, ζ(2, ½) = π²/2 (= 3 ζ(2)), ζ(3, 2) = ζ(3) - 1
    x, q = _f64([2.0, 4.0, 2.0, 3.0]), _f64([1.0, 1.0, 0.5, 2.0])
    np.testing.assert_allclose(S.zeta(x, q).numpy(), [math.pi**2 / 6, math.pi**4 / 90, math.pi**2 / 2,
                                                      1.2020569031595942 - 1], rtol=2e-16 * 4)
    edges = S.zeta(_f64([1.0, 0.5, 2.0, 2.5, 2.0, 3.0]), _f64([1.0, 1.0, -1.0, -1.5, -1.5, -1.5])).numpy()
    # for q < 0 the first terms are written out: ζ(x, -3/2) = (-3/2)^-x + (-1/2)^-x + ζ(x, 1/2),
    # and ζ(2, ½) = π²/2, ζ(3, ½) = 7 ζ(3)
    np.testing.assert_allclose(edges, [np.inf, np.nan, np.inf, np.nan, 4 / 9 + 4 + math.pi**2 / 2,
                                       -8 / 27 - 8 + 7 * 1.2020569031595942], rtol=1e-14)
    with pytest.raises(NotImplementedError, match="the derivative for 'zeta' is not implemented"):
        S.zeta(Tensor(np.array([2.0]), requires_grad=True), 1.0).sum().backward()


def test_erfcx_log_ndtr_and_ndtri_in_the_tails():
    x = np.array([0.0, 0.5, 1.0, 3.0, 10.0, 26.0])
    np.testing.assert_allclose(S.erfcx(_f64(x)).numpy(), [math.exp(v * v) * math.erfc(v) for v in x], rtol=2e-15)
    big = np.array([1e3, 1e8, 1e200])  # erfcx(x) ≈ 1/(x√π) (1 - 1/(2x²) + 3/(4x⁴)): erfc has long underflowed
    inverse = 1 / big
    np.testing.assert_allclose(S.erfcx(_f64(big)).numpy(),
                               (1 - 0.5 * inverse**2 + 0.75 * inverse**4) * inverse / math.sqrt(math.pi), rtol=1e-15)
    assert S.erfcx(_f64([np.inf, -np.inf, -30.0])).numpy().tolist() == [0.0, np.inf, np.inf]
    at_infinity = Tensor(np.array([np.inf]), requires_grad=True)
    S.erfcx(at_infinity).sum().backward()
    assert at_infinity.grad.numpy().tolist() == [0.0]  # the limit of -1/(√π x²)
    # ln Φ(x) = -x²/2 - ln(-x √(2π)) + ln(1 - 1/x² + 3/x⁴ - 15/x⁶ + ...) far left, where Φ underflows
    far = np.array([-40.0, -1e3, -1e10])
    series = sum((-1) ** k * math.prod(range(1, 2 * k, 2)) / far ** (2 * k) for k in range(1, 7))
    expected = -far**2 / 2 - np.log(-far * math.sqrt(2 * math.pi)) + np.log1p(series)
    np.testing.assert_allclose(S.log_ndtr(_f64(far)).numpy(), expected, rtol=1e-14)
    right = np.array([0.0, 1.0, 5.0, 10.0])
    np.testing.assert_allclose(S.log_ndtr(_f64(right)).numpy(),
                               [math.log1p(-math.erfc(v / math.sqrt(2)) / 2) for v in right], rtol=1e-14)
    # ndtri inverts ndtr: Φ(Φ⁻¹(p)) = p, deep into the lower tail too (relative to p)
    p = np.concatenate([np.geomspace(1e-300, 0.5, 40), [0.6, 0.9, 0.975, 0.999]])
    y = S.ndtri(_f64(p)).numpy()
    back = np.array([math.erfc(-v / math.sqrt(2)) / 2 for v in y])
    # (Φ turns y's last bit into a relative change of p of about y² · 2^-53: that is the tolerance)
    assert np.all(np.abs(back / p - 1) <= 4 * 2.0**-53 * (1 + y * y))
    assert S.ndtri(_f64([0.0, 1.0, 0.5, -0.1, 1.1])).numpy().tolist()[:3] == [-np.inf, np.inf, 0.0]
    assert np.isnan(S.ndtri(_f64([-0.1, 1.1, np.nan])).numpy()).all()


def test_xlog1py_is_zero_where_x_is_zero():
    out = S.xlog1py(_f64([0.0, 0.0, 2.0, 0.0]), _f64([-1.0, np.inf, 1e-20, np.nan])).numpy()
    assert out[:3].tolist() == [0.0, 0.0, 2e-20] and np.isnan(out[3])


def test_spherical_bessel_j0_has_no_gradient():
    x = Tensor(np.array([0.0, 1e-3, 0.4, 3.0, np.inf]), requires_grad=True)
    y = S.spherical_bessel_j0(x)
    assert not y.requires_grad
    np.testing.assert_allclose(y.numpy(), [1.0, math.sin(1e-3) / 1e-3, math.sin(0.4) / 0.4, math.sin(3) / 3, 0.0],
                               rtol=1e-16)
    assert S.spherical_bessel_j0(autograd.tensor([1, 2])).dtype == autograd.float32


def test_special_all_names_exist():
    for name in S.__all__:
        assert callable(getattr(S, name)), name


# ---- against PyTorch ---------------------------------------------------------------------------------

rng = np.random.default_rng(0)
A = np.exp(rng.uniform(np.log(1e-3), np.log(300), 300))
X = A * np.exp(rng.uniform(-2.5, 2.5, 300))
EDGE_A = np.array([0.0, 0.0, 1.0, np.inf, np.inf, 2.0, np.nan, 1.0, -1.0, 1.0, 1e-5, 5.0, 1e3, 1e3])
EDGE_X = np.array([0.0, 1.0, 0.0, 1.0, np.inf, np.inf, 1.0, np.nan, 1.0, -1.0, 0.5, 1e5, 990.0, 1010.0])
WIDE = np.concatenate([np.linspace(-30, 30, 241), np.geomspace(1e-300, 1e300, 31), -np.geomspace(1e-300, 30, 21),
                       [0.0, np.inf, -np.inf, np.nan]])
P = np.concatenate([np.linspace(0, 1, 101), np.geomspace(1e-300, 0.5, 31), [-0.5, 1.5, np.nan]])
Q = np.exp(rng.uniform(-4, 4, 60))
EXPONENT = rng.uniform(1.05, 40, 60)

TORCH_CASES = {
    "igamma": (lambda m, x: m.igamma(m.tensor(A), x), X),
    "igammac": (lambda m, x: m.igammac(m.tensor(A), x), X),
    "gammainc": (lambda m, x: m.special.gammainc(m.tensor(A), x), X),
    "gammaincc": (lambda m, x: m.special.gammaincc(m.tensor(A), x), X),
    "igamma_method_edges": (lambda m, x: m.tensor(EDGE_A).igamma(x.detach()), EDGE_X),
    "igammac_method_edges": (lambda m, x: m.tensor(EDGE_A).igammac(x.detach()), EDGE_X),
    "zeta": (lambda m, q: m.special.zeta(m.tensor(EXPONENT), q), Q),
    "zeta_scalar": (lambda m, q: m.special.zeta(2.5, q), Q[:10]),
    "zeta_edges": (lambda m, q: m.special.zeta(m.tensor([1.0, 0.5, 2.0, 2.5, 2.0, 3.0, np.nan, 2.0]), q.detach()),
                   np.array([1.0, 1.0, -1.0, -1.5, -1.5, -1.5, 1.0, np.inf])),
    "erfcx": (lambda m, x: m.special.erfcx(x), WIDE[WIDE != np.inf]),  # (PyTorch's slope at ∞ is NaN; ours 0)
    "log_ndtr": (lambda m, x: m.special.log_ndtr(x), WIDE[WIDE != -np.inf]),  # (PyTorch's slope at -∞: NaN)
    "ndtri": (lambda m, p: m.special.ndtri(p), P),
    "xlog1py": (lambda m, x, y: m.special.xlog1py(x, y), np.array([0.0, 0.0, 1.0, -2.0, 3.0]),
                np.array([-1.0, 0.5, -0.5, 2.0, np.nan])),
    "xlog1py_scalar": (lambda m, y: m.special.xlog1py(2.0, y), np.array([0.5, 3.0])),
    "spherical_bessel_j0": (lambda m, x: m.special.spherical_bessel_j0(x), WIDE),
}
# PyTorch's uniform expansion (a > 20, x ≈ a) is good to a few 1e-9 (ours to 1e-15: test_incomplete_gamma_exact)
LOOSER = {"igamma": 5e-9, "igammac": 5e-9, "gammainc": 5e-9, "gammaincc": 5e-9,
          "igamma_method_edges": 5e-9, "igammac_method_edges": 5e-9,
          "log_ndtr": 5e-13}  # PyTorch's loses about 2e-13 for 20 < x < 38 (ours keeps 1e-15: test_normal_tails_exact)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    with np.errstate(all="ignore"):
        # (erfcx: PyTorch's slope 2x erfcx(x) - 2/√π cancels to 0 or 1e-16 for large x, where ours
        # keeps -1/(√π x²))
        compare(fn, *inputs, rtol=LOOSER.get(name, 1e-13), atol=1e-18 if name == "erfcx" else 1e-300)


FLOAT32_CASES = {
    "igamma": (lambda m, a, x: m.igamma(a, x), A, X),
    "igammac": (lambda m, a, x: m.igammac(a, x), A, X),
    "zeta": (lambda m, x, q: m.special.zeta(x, q), EXPONENT, Q),
    "erfcx": (lambda m, x: m.special.erfcx(x), WIDE),
    "log_ndtr": (lambda m, x: m.special.log_ndtr(x), WIDE),
    "ndtri": (lambda m, p: m.special.ndtri(p), P),
    "xlog1py": TORCH_CASES["xlog1py"],
    "spherical_bessel_j0": (lambda m, x: m.special.spherical_bessel_j0(x), WIDE),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_matches_torch(name):
    """float32 in, float32 out as PyTorch's, and the float64 answer rounded once (PyTorch computes
    in float32, losing up to 1e-4 in igamma's tails: its float64 answer is the reference)."""
    torch = pytest.importorskip("torch")
    fn, *inputs = FLOAT32_CASES[name]
    with np.errstate(all="ignore"):
        inputs = [np.asarray(x, dtype=np.float32) for x in inputs]
        ours = fn(autograd, *[autograd.tensor(x) for x in inputs])
        assert ours.dtype == autograd.float32
        assert fn(torch, *[torch.tensor(x) for x in inputs]).dtype == torch.float32
        exact = fn(torch, *[torch.tensor(x.astype(np.float64)) for x in inputs]).numpy().astype(np.float32)
    ours = ours.numpy()
    normal = np.abs(exact) > np.finfo(np.float32).tiny
    np.testing.assert_allclose(ours[normal], exact[normal], rtol=3e-7)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(exact))


def test_incomplete_gamma_exact():
    """Against mpmath's arbitrary precision (where it is installed), from tiny to large a."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    a = np.concatenate([A[::10], [1e-8, 0.5, 25.0, 40.0, 1e3, 1e4, 1e5]])
    x = np.concatenate([X[::10], [0.3, 40.0, 20.0, 45.0, 1010.0, 1e4 + 50, 1e5 - 300]])
    lower = [float(mpmath.gammainc(u, 0, v, regularized=True)) for u, v in zip(a, x)]
    upper = [float(mpmath.gammainc(u, v, mpmath.inf, regularized=True)) for u, v in zip(a, x)]
    # (a value such as Q = 5.5e-144 is e^-324...: the exponent's last bit is 324 · 2^-53 of it)
    np.testing.assert_allclose(autograd.igamma(_f64(a), _f64(x)).numpy(), lower, rtol=3e-13)
    np.testing.assert_allclose(autograd.igammac(_f64(a), _f64(x)).numpy(), upper, rtol=3e-13)


def test_normal_tails_exact():
    """erfcx, log_ndtr and ndtri against mpmath (where it is installed), deep into the tails."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    x = np.concatenate([np.linspace(-26, 30, 57), [-1e-8, 1e-8, 1e3, 1e8]])
    exact = [float(mpmath.exp(mpmath.mpf(v) ** 2) * mpmath.erfc(v)) for v in x]
    np.testing.assert_allclose(S.erfcx(_f64(x)).numpy(), exact, rtol=2e-15)
    slope = [float(2 * v * mpmath.exp(mpmath.mpf(v) ** 2) * mpmath.erfc(v) - 2 / mpmath.sqrt(mpmath.pi)) for v in x]
    point = Tensor(x, requires_grad=True)
    S.erfcx(point).sum().backward()
    np.testing.assert_allclose(point.grad.numpy(), slope, rtol=1e-14)
    x = np.concatenate([np.linspace(-60, 37, 98), [-1e5]])
    exact = [float(mpmath.log(mpmath.ncdf(v)) if v < 0 else mpmath.log1p(-mpmath.ncdf(-v))) for v in x]
    np.testing.assert_allclose(S.log_ndtr(_f64(x)).numpy(), exact, rtol=2e-15)
    p = np.concatenate([np.geomspace(1e-310, 0.5, 30), np.linspace(0.5, 0.99, 20)])
    y = S.ndtri(_f64(p)).numpy()
    y_exact = [mpmath.mpf(v) for v in y]
    for _ in range(4):  # Newton in 60 digits from our own answer: the exact quantile
        y_exact = [v - (mpmath.ncdf(v) - mpmath.mpf(q)) / mpmath.npdf(v) for v, q in zip(y_exact, p)]
    np.testing.assert_allclose(y, [float(v) for v in y_exact], rtol=1e-15, atol=1e-300)


@pytest.mark.torch
def test_incomplete_gamma_refuses_the_shape_gradient_as_torch():
    torch = pytest.importorskip("torch")
    for module, tensor in ((autograd, autograd.tensor), (torch, torch.tensor)):
        a = tensor([2.0], requires_grad=True)
        with pytest.raises(NotImplementedError, match="the derivative for 'igamma: input' is not implemented."):
            module.special.gammainc(a, tensor([1.0])).sum().backward()
