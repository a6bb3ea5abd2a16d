"""Fixes found by tests/test_programs_probe12_classic_*.py, each checked on chainrule and on PyTorch (the ``T``
fixture) against the same expectation."""

import math

import numpy as np
import pytest


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_bernoulli_of_a_tensor_draws_a_uniform_of_its_dtype(T, dtype):
    """PyTorch's kernel compares each probability of a float64 tensor with a float64 uniform (53 bits of the
    stream), of any other dtype with a float32 one: the draws are those of rand in that dtype."""
    p = T.tensor(np.linspace(0.05, 0.95, 12), dtype=getattr(T, dtype))
    uniform = T.float64 if dtype == "float64" else T.float32
    for draw in (lambda: T.bernoulli(p), lambda: T.empty(12, dtype=T.float64).bernoulli_(p),
                 lambda: T.distributions.Bernoulli(probs=p).sample()):
        T.manual_seed(0)
        drawn = draw()
        after = T.rand(3)
        T.manual_seed(0)
        expected = (T.rand(12, dtype=uniform) < p.to(uniform)).to(drawn.dtype)
        assert T.equal(drawn, expected)
        assert T.equal(after, T.rand(3))  # the stream moved on by as much



def test_von_mises_sample_keeps_the_last_acceptance(T):
    """Best and Fisher's rejection loop as PyTorch runs it: rounds of three float64 uniforms for every angle
    until each has been accepted once, an angle accepted again in a later round taking that round's value."""
    loc = T.tensor([0.0, 1.0, -2.0, 0.5], dtype=T.float64)
    kappa = T.tensor([0.5, 4.0, 1e-6, 30.0], dtype=T.float64)
    T.manual_seed(0)
    drawn = T.distributions.VonMises(loc, kappa).sample((6,))

    T.manual_seed(0)
    tau = 1 + (1 + 4 * kappa ** 2).sqrt()
    rho = (tau - (2 * tau).sqrt()) / (2 * kappa)
    r = T.where(kappa < 1e-5, 1 / kappa + kappa, (1 + rho ** 2) / (2 * rho))
    x = T.zeros(6, 4, dtype=T.float64)
    done = T.zeros(6, 4, dtype=T.bool)
    while not done.all():
        u1, u2, u3 = T.rand(3, 6, 4, dtype=T.float64).unbind()
        z = T.cos(np.pi * u1)
        f = (1 + r * z) / (r + z)
        c = kappa * (r - f)
        accept = ((c * (2 - c) - u2) > 0) | ((c / u2).log() + 1 - c >= 0)
        x = T.where(accept, (u3 - 0.5).sign() * f.clamp(-1, 1).acos(), x)
        done = done | accept
    expected = (x + np.pi + loc) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(drawn.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


def test_erfinv_and_normal_icdf_keep_their_digits_in_the_tails(T):
    """erf⁻¹ near ±1 (Normal.icdf of small tail probabilities): Newton's step on erf cancelled there, 1e-7 off at
    1 - 2e-10 and 1e-2 at 1 - 2e-15; the values below are mpmath's (40 digits), rounded."""
    y = T.tensor([1 - 2e-10, -(1 - 2e-6), 0.5, 0.9999, 1 - 2e-15], dtype=T.float64)
    exact = [4.498147280544313, -3.361178562629473, 0.4769362762044699, 2.75106390571208, 5.615449249468365]
    np.testing.assert_allclose(T.erfinv(y).numpy(), exact, rtol=2e-15)
    p = T.tensor([1e-10, 1e-3, 0.975, 1 - 1e-12], dtype=T.float64, requires_grad=True)
    z = T.distributions.Normal(T.tensor(0.0, dtype=T.float64), T.tensor(1.0, dtype=T.float64)).icdf(p)
    # (√2 erf⁻¹(2p - 1), PyTorch's formula, of 2p - 1 as rounded: mpmath's)
    np.testing.assert_allclose(z.detach().numpy(), [-6.361340889697422, -3.090232306167813, 1.9599639845400538,
                                                    7.0344869100478356], rtol=1e-13)
    z.sum().backward()  # dz/dp = 1/φ(z)
    np.testing.assert_allclose(p.grad.numpy(), math.sqrt(2 * math.pi) * np.exp(z.detach().numpy() ** 2 / 2),
                               rtol=1e-12)


def test_incomplete_gamma_far_in_the_upper_tail(T):
    """Q(a, x) for x far above a: the factor x^a e^(-x)/Γ(a) underflows and Q is 0, P is 1 (its continued
    fraction overflowed before settling, past x ≈ 1e50, and gave NaN); InverseGamma's cdf at a tiny x is Q's."""
    a = T.tensor([0.5, 2.0, 50.0, 2.0], dtype=T.float64)
    x = T.tensor([1e65, 1e86, 1e300, 800.0], dtype=T.float64)
    assert T.special.gammaincc(a, x).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert T.special.gammainc(a, x).tolist() == [1.0, 1.0, 1.0, 1.0]
    d = T.distributions.InverseGamma(T.tensor(2.0, dtype=T.float64), T.tensor(2.0, dtype=T.float64))
    assert d.cdf(T.tensor([1e-300, 1e-60], dtype=T.float64)).tolist() == [0.0, 0.0]


def test_lobpcg_gives_the_extreme_eigenpairs(T):
    """torch.lobpcg: the k largest (or smallest) eigenpairs, of A x = λ B x with B, from a random start drawn as
    randn((m, n)) per matrix; its gradient in A is eigh's of (A + Aᵀ)/2."""
    rng = np.random.default_rng(0)
    M = rng.standard_normal((12, 12))
    S = T.tensor(M @ M.T)
    spectrum = T.linalg.eigvalsh(S)
    T.manual_seed(0)
    values, vectors = T.lobpcg(S, k=2)
    after = T.rand(2)
    T.manual_seed(0)
    T.randn(12, 2, dtype=T.float64)
    assert T.equal(after, T.rand(2))
    np.testing.assert_allclose(values.numpy(), spectrum.flip(0)[:2].numpy(), rtol=1e-10)
    np.testing.assert_allclose((S @ vectors).numpy(), (vectors * values).numpy(), atol=1e-6)
    small, _ = T.lobpcg(T.stack([S, 2 * S]), k=3, largest=False)
    np.testing.assert_allclose(small.numpy(), T.stack([spectrum[:3], 2 * spectrum[:3]]).numpy(), rtol=1e-8)
    Bm = T.tensor(np.diag(rng.uniform(1, 3, 12)))
    values, vectors = T.lobpcg(S, k=2, B=Bm)
    np.testing.assert_allclose((vectors.T @ Bm @ vectors).numpy(), np.eye(2), atol=1e-8)
    np.testing.assert_allclose((S @ vectors).numpy(), (Bm @ vectors * values).numpy(), atol=1e-6)
    A = S.clone().requires_grad_(True)
    (grad,) = T.autograd.grad(T.lobpcg(A, k=2)[0].sum(), A)
    top = T.linalg.eigh(S)[1][:, -2:]
    np.testing.assert_allclose(grad.numpy(), (top @ top.T).numpy(), atol=1e-8)
    with pytest.raises(ValueError, match="smaller than 3 x the number of requested eigenpairs"):
        T.lobpcg(S, k=5)


def test_private_distribution_helpers_that_pyro_imports(T):
    """torch.distributions' private helpers that code outside it imports: their values."""
    from importlib import import_module

    mvn = import_module(f"{T.__name__}.distributions.multivariate_normal")
    utils = import_module(f"{T.__name__}.distributions.utils")
    kl = import_module(f"{T.__name__}.distributions.kl")
    rng = np.random.default_rng(0)
    M = rng.standard_normal((2, 3, 3))
    P = T.tensor(M @ np.swapaxes(M, -1, -2) + np.eye(3))
    L = T.linalg.cholesky(P)
    x = T.tensor(rng.standard_normal((4, 2, 3)))
    np.testing.assert_allclose(mvn._batch_mv(L, x).numpy(), (L @ x.unsqueeze(-1)).squeeze(-1).numpy(), rtol=1e-12)
    expected = (x.unsqueeze(-2) @ T.linalg.inv(P) @ x.unsqueeze(-1)).reshape(4, 2)
    np.testing.assert_allclose(mvn._batch_mahalanobis(L, x).numpy(), expected.numpy(), rtol=1e-10)
    S = mvn._precision_to_scale_tril(P)
    np.testing.assert_allclose((S @ S.mT).numpy(), T.linalg.inv(P).numpy(), rtol=1e-10, atol=1e-12)
    assert T.equal(S, S.tril())
    np.testing.assert_allclose(utils._sum_rightmost(x, 2).numpy(), x.sum((-2, -1)).numpy(), rtol=1e-12)
    assert utils._sum_rightmost(x, 0) is x
    np.testing.assert_allclose(kl._batch_trace_XXT(L).numpy(), (L @ L.mT).diagonal(dim1=-2, dim2=-1).sum(-1).numpy(),
                               rtol=1e-12)
    T.manual_seed(0)
    drawn = utils._standard_normal((2, 5), dtype=T.float64, device="cpu")
    T.manual_seed(0)
    assert T.equal(drawn, T.randn(2, 5, dtype=T.float64))
