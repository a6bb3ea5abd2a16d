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
