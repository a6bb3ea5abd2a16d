"""Fixes found by diffing small maths programs (linalg, fft, special functions, complex autograd,
distributions) on chainrule and on PyTorch 2.13 (session 34), each checked on both libraries (the ``T``
fixture) against the same expectation."""

import re

import numpy as np
import pytest


@pytest.mark.parametrize("family, args", [
    ("Weibull", ([1.0, 2.0], [0.5, 2.0])),
    ("Pareto", ([1.0, 2.0], [0.5, 3.0])),
    ("Kumaraswamy", ([1.0, 2.0], [0.5, 3.0])),
    ("Gumbel", ([0.0, 1.0], [1.0, 2.0])),
    ("LogNormal", ([0.0, 1.0], [1.0, 0.5])),
])
def test_expanded_transformed_distribution_moments_have_the_new_batch_shape(T, family, args):
    """A TransformedDistribution subclass's own parameters (Weibull's scale and concentration, Pareto's
    alpha, Kumaraswamy's concentrations) expand with the batch, as PyTorch's subclasses' expand methods
    expand them: the mean, variance and entropy of the expanded law are (3, 2), each row the original's.
    (They kept the unexpanded (2,) before.)"""
    params = [T.tensor(a, dtype=T.float64, requires_grad=True) for a in args]
    law = getattr(T.distributions, family)(*params)
    wide = law.expand((3, 2))
    assert tuple(wide.batch_shape) == (3, 2)
    for moment in ("mean", "variance", "entropy"):
        value = getattr(wide, moment)
        value = value() if callable(value) else value
        original = getattr(law, moment)
        original = original() if callable(original) else original
        assert tuple(value.shape) == (3, 2), moment
        np.testing.assert_allclose(value.detach().numpy(), np.broadcast_to(original.detach().numpy(), (3, 2)))
    # the gradient still reaches the original parameters, once per copy
    grads = T.autograd.grad(wide.mean.sum(), params)
    single = T.autograd.grad(law.mean.sum(), params)
    for g, s in zip(grads, single):
        np.testing.assert_allclose(g.numpy(), 3 * s.numpy())
    x = wide.rsample((4,)) if wide.has_rsample else wide.sample((4,))
    assert tuple(x.shape) == (4, 3, 2)
    assert tuple(wide.log_prob(x).shape) == (4, 3, 2)


def test_expanded_weibull_values():
    """The expanded Weibull's figures, PyTorch's: mean λ Γ(1 + 1/k) = (2, √π/2·2) per row."""
    torch = pytest.importorskip("torch")
    import autograd

    for lib in (torch, autograd):
        law = lib.distributions.Weibull(lib.tensor([1.0, 2.0], dtype=lib.float64),
                                        lib.tensor([0.5, 2.0], dtype=lib.float64)).expand((3, 2))
        np.testing.assert_allclose(law.mean.numpy(), [[2.0, np.sqrt(np.pi)]] * 3)


@pytest.mark.parametrize("call", [
    lambda T, A: T.linalg.pinv(A, hermitian=True),
    lambda T, A: T.linalg.pinv(A, hermitian=True, atol=0.5, rtol=0.0),
    lambda T, A: T.linalg.matrix_rank(A, hermitian=True),
    lambda T, A: T.linalg.matrix_rank(A, hermitian=True, atol=0.5),
])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4)])
def test_hermitian_pinv_and_matrix_rank_refuse_non_square_matrices(T, call, shape):
    """hermitian=True takes eigh's path, which refuses a matrix that is not square in eigh's words
    (chainrule raised LinAlgError, "failed to converge", or returned a pseudo-inverse of a wrong shape)."""
    A = T.tensor(np.random.default_rng(0).standard_normal(shape))
    m, n = shape[-2:]
    with pytest.raises(RuntimeError, match=f"linalg.eigh: A must be batches of square matrices, but they are {m} "
                                           f"by {n} matrices"):
        call(T, A)


def test_hermitian_pinv_and_matrix_rank_of_square_matrices(T):
    """The square case is unchanged: a symmetric A's rank and pseudo-inverse from its eigenvalues."""
    A = T.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], dtype=T.float64)
    assert T.linalg.matrix_rank(A, hermitian=True).item() == 2
    expected = np.linalg.pinv(A.numpy(), hermitian=True)
    np.testing.assert_allclose(T.linalg.pinv(A, hermitian=True).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("ord", [None, 2, "fro"])
@pytest.mark.parametrize("dim", [(0, 1, 2), (), [0, 1, 2]])
def test_linalg_norm_refuses_a_dim_of_length_other_than_one_or_two(T, ord, dim):
    """linalg.norm takes one dim (a vector norm) or two (a matrix norm); PyTorch refuses any other
    length, where chainrule gave the vector norm over three dims (or over all for dim=())."""
    x = T.ones(2, 2, 2)
    message = f"linalg.norm: If dim is specified, it must be of length 1 or 2. Got {list(dim)}"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        T.linalg.norm(x, ord, dim)


def test_linalg_norm_of_one_and_two_dims_is_unchanged(T):
    x = T.tensor(np.arange(8.0).reshape(2, 2, 2))
    np.testing.assert_allclose(T.linalg.norm(x, dim=1).numpy(), np.linalg.norm(x.numpy(), axis=1))
    np.testing.assert_allclose(T.linalg.norm(x, dim=(1, 2)).numpy(), np.linalg.norm(x.numpy(), axis=(1, 2)))
    np.testing.assert_allclose(T.linalg.norm(x, 2, dim=[0]).numpy(), np.linalg.norm(x.numpy(), axis=0))


LOGIT_X = [0.0, 0.05, 0.5, 0.55, 0.99, 1.0, -0.2, 1.3, float("nan")]
NAN = float("nan")


@pytest.mark.parametrize("eps, value, slope", [
    # eps over 1/2: PyTorch's clamp sends x < eps to eps and every other x to 1 - eps (NumPy's clip sent all to 1 - eps)
    (0.6, [0.4055] * 4 + [-0.4055] * 2 + [0.4055, -0.4055, NAN], [0.0] * 8 + [NAN]),
    (1.0, [np.inf] * 5 + [-np.inf, np.inf, -np.inf, NAN], [0.0] * 8 + [NAN]),
    # a negative eps clamps to [eps, 1 - eps] forward, and backward counts as no eps: NaN outside [0, 1]
    (-0.1, [-np.inf, -2.9444, 0.0, 0.2007, 4.5951, np.inf, NAN, NAN, NAN],
     [np.inf, 21.0526, 4.0, 4.0404, 101.0101, np.inf, NAN, NAN, NAN]),
    # a NaN input's slope is NaN, as PyTorch's (it was 0: NaN failed the "inside [eps, 1 - eps]" test)
    (1e-6, [-13.8155, -2.9444, 0.0, 0.2007, 4.5951, 13.8155, -13.8155, 13.8155, NAN],
     [0.0, 21.0526, 4.0, 4.0404, 101.0101, 0.0, 0.0, 0.0, NAN]),
    (None, [-np.inf, -2.9444, 0.0, 0.2007, 4.5951, np.inf, NAN, NAN, NAN],
     [np.inf, 21.0526, 4.0, 4.0404, 101.0101, np.inf, NAN, NAN, NAN]),
])
@pytest.mark.parametrize("spelling", ["logit", "special.logit"])
def test_logit_with_eps_matches_pytorch_clamp_and_slope(T, eps, value, slope, spelling):
    f = T.logit if spelling == "logit" else T.special.logit
    x = T.tensor(LOGIT_X, dtype=T.float64, requires_grad=True)
    y = f(x, eps=eps)
    (g,) = T.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(y.detach().numpy(), value, atol=1e-4)
    np.testing.assert_allclose(g.numpy(), slope, atol=1e-4)


def test_logit_with_eps_keeps_float16_and_its_second_derivative(T):
    x = T.tensor([0.2, 0.7], dtype=T.float16)
    assert T.logit(x, 0.3).dtype == T.float16
    np.testing.assert_allclose(T.logit(x, 0.3).float().numpy(), [np.log(0.3 / 0.7), np.log(0.7 / 0.3)], atol=3e-3)
    x = T.tensor([0.2, 0.5, 0.01], dtype=T.float64, requires_grad=True)
    (g,) = T.autograd.grad(T.logit(x, 0.1).sum(), x, create_graph=True)
    (h,) = T.autograd.grad(g.sum(), x)
    # d/dx 1/(x(1-x)) = (2x - 1)/(x(1-x))², 0 where clamped
    np.testing.assert_allclose(h.numpy(), [(0.4 - 1) / (0.16 ** 2), 0.0, 0.0])
