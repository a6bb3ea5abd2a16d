"""lgamma, digamma, polygamma, mvlgamma and the autograd.special namespace: values against
math.lgamma and exact constants, and against PyTorch; gradients (through every order of ψ)
against finite differences."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from tests.ops_reference import compare
from tests.test_ops import _run, unary

# away from the poles at 0, -1, -2, ...
NEGATIVE_HALVES = unary(-3.4, -0.6, kinks=(-3.0, -2.0, -1.0))

CASES = {
    "Lgamma": (unary(0.2, 6.0), autograd.lgamma),
    "Polygamma": (unary(0.3, 6.0), lambda x: autograd.digamma(x) + autograd.polygamma(1, x) * autograd.polygamma(2, x)),
    "Entr": (unary(0.2, 3.0), autograd.special.entr),
}

COMPOSITES = {
    "lgamma_negative": (NEGATIVE_HALVES, lambda x: x.lgamma() + x.digamma()),
    "mvlgamma": (unary(2.0, 5.0), lambda x: autograd.mvlgamma(x, 3)),
    "sinc_ndtr": (unary(kinks=(0.0,)), lambda x: autograd.special.sinc(x) + autograd.special.ndtr(x)),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPOSITES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **COMPOSITES}[name], data)
    assert autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradgradcheck(fn, tensors)


def test_lgamma_matches_math_lgamma():
    x = np.concatenate([np.linspace(-20.5, 30, 2001), [1e-8, 0.5, 1.0, 2.0, 1e5, 171.3, -0.5, -1e-8]])
    exact = np.array([math.lgamma(v) for v in x])
    ours = autograd.tensor(x).lgamma().numpy()
    np.testing.assert_allclose(ours, exact, rtol=1e-14, atol=1e-14)
    assert autograd.tensor([1.0, 2.0]).lgamma().tolist() == [0.0, 0.0]  # exactly, as math.lgamma and PyTorch


def test_digamma_and_polygamma_at_one_are_the_known_constants():
    one = autograd.tensor([1.0], dtype=np.float64)
    euler_gamma, zeta3 = 0.5772156649015329, 1.2020569031595942
    assert abs(autograd.digamma(one).item() + euler_gamma) < 1e-15
    assert abs(autograd.polygamma(1, one).item() - math.pi**2 / 6) < 1e-15
    assert abs(autograd.polygamma(2, one).item() + 2 * zeta3) < 1e-14
    assert abs(autograd.polygamma(3, one).item() - math.pi**4 / 15) < 1e-13


rng = np.random.default_rng(0)
X = np.concatenate([rng.uniform(0.1, 20, 12), rng.uniform(-5, -0.1, 6), [0.0, -1.0, -2.0]])

TORCH_CASES = {
    "lgamma": (lambda m, x: m.lgamma(x), X),
    "lgamma_method": (lambda m, x: x.lgamma(), X[:12]),
    "digamma": (lambda m, x: m.digamma(x), X[:18]),
    "digamma_poles": (lambda m, x: x.detach().digamma(), X[18:]),
    "polygamma_2": (lambda m, x: m.polygamma(2, x), X[:12]),
    "polygamma_3": (lambda m, x: m.polygamma(3, x), X[:12]),
    "polygamma_method": (lambda m, x: x.polygamma(2), X[:12]),
    "mvlgamma": (lambda m, x: m.mvlgamma(x + 2, 3), X[:12]),
    "lgamma_ints": (lambda m, x: m.lgamma(x), np.array([1, 2, 5, 10])),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    with np.errstate(all="ignore"):
        compare(fn, *inputs, rtol=1e-6 if name.endswith("_ints") else 1e-11, atol=1e-11)


@pytest.mark.torch
def test_trigamma_matches_torch_to_its_own_accuracy():
    # PyTorch's trigamma truncates its series at about 1e-9; ours keeps ten Bernoulli terms (ψ₁(1) = π²/6 exactly)
    compare(lambda m, x: m.polygamma(1, x), X[:12], rtol=1e-8, atol=1e-8)


P = np.array([0.0, 0.2, 0.5, 1.0, 3.0, -1.0])
Z = np.array([-1.5, -0.2, 0.0, 0.3, 2.0])

SPECIAL_CASES = {
    "erf": (lambda m, x: m.special.erf(x), Z),
    "expit": (lambda m, x: m.special.expit(x), Z),
    "ndtr": (lambda m, x: m.special.ndtr(x), Z),
    "sinc": (lambda m, x: m.special.sinc(x), Z),
    "entr": (lambda m, x: m.special.entr(x), P),
    "gammaln": (lambda m, x: m.special.gammaln(x + 2), Z),
    "psi": (lambda m, x: m.special.psi(x + 2), Z),
    "digamma": (lambda m, x: m.special.digamma(x + 2), Z),
    "multigammaln": (lambda m, x: m.special.multigammaln(x + 3, 2), Z),
    "polygamma": (lambda m, x: m.special.polygamma(2, x + 2), Z),
    "xlogy": (lambda m, x: m.special.xlogy(x, x + 1), P[:5]),
    "logit": (lambda m, x: m.special.logit(x * 0.2 + 0.1), P[:5]),
    "logsumexp": (lambda m, x: m.special.logsumexp(x, 0), Z),
    "softmax": (lambda m, x: m.special.softmax(x, 0), Z),
    "log_softmax": (lambda m, x: m.special.log_softmax(x, 0), Z),
    "erfinv": (lambda m, x: m.special.erfinv(x * 0.3), Z),
    "log1p": (lambda m, x: m.special.log1p(x + 2), Z),
    "expm1": (lambda m, x: m.special.expm1(x), Z),
    "exp2": (lambda m, x: m.special.exp2(x), Z),
    "round": (lambda m, x: m.special.round(x.detach()), Z),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(SPECIAL_CASES))
def test_special_namespace_matches_torch(name):
    fn, *inputs = SPECIAL_CASES[name]
    with np.errstate(all="ignore"):
        compare(fn, *inputs, rtol=1e-11, atol=1e-12)
