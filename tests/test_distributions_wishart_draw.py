"""Wishart's Bartlett draw takes PyTorch's numbers from the generator: the χ² diagonal, then p(p-1)/2 normals
filled in below the diagonal row by row (tril_indices order), where it drew a p×p block of normals and kept
its lower triangle (other numbers after the same seed, and more of them)."""

import warnings

import numpy as np
import pytest

import autograd


def bartlett_by_hand(lib, df, scale_tril, sample_shape=()):
    p = scale_tril.shape[-1]
    chi2 = lib.distributions.Chi2(df - lib.arange(p, dtype=scale_tril.dtype)).rsample(sample_shape)
    A = chi2.sqrt().diag_embed()
    rows, cols = lib.tril_indices(p, p, offset=-1)
    A[..., rows, cols] = lib.randn(*sample_shape, p * (p - 1) // 2, dtype=scale_tril.dtype)
    factor = scale_tril @ A
    return factor @ factor.mT


@pytest.mark.parametrize("p,sample_shape", [(2, ()), (3, (4,)), (4, (2, 3))])
def test_draw_is_the_bartlett_construction_from_the_same_numbers(p, sample_shape):
    rng = np.random.default_rng(p)
    M = rng.standard_normal((p, p))
    L = autograd.linalg.cholesky(autograd.tensor(M @ M.T + p * np.eye(p)))
    df = autograd.tensor(p + 1.5, dtype=autograd.float64)
    autograd.manual_seed(7)
    drawn = autograd.distributions.Wishart(df, scale_tril=L).rsample(sample_shape)
    after = autograd.randn(3, dtype=autograd.float64)
    autograd.manual_seed(7)
    expected = bartlett_by_hand(autograd, df, L, sample_shape)
    np.testing.assert_allclose(drawn.numpy(), expected.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(after.numpy(), autograd.randn(3, dtype=autograd.float64).numpy())


@pytest.mark.torch
@pytest.mark.parametrize("p,batch,sample_shape", [(2, (), ()), (4, (), (3,)), (3, (2,), (2,))])
def test_draw_is_pytorchs(p, batch, sample_shape):
    """PyTorch's rsample draws a second time for every positive-definite draw (its singularity test is
    inverted, pytorch/pytorch#122021, with a 'Singular sample detected' warning), so the first draw is compared:
    its _bartlett_sampling."""
    torch = pytest.importorskip("torch")
    draws = []
    for lib in (autograd, torch):
        lib.manual_seed(3)
        cov = lib.eye(p, dtype=lib.float64).expand(*batch, p, p) * 1.5 + 0.2
        W = lib.distributions.Wishart(df=lib.tensor(p + 0.5, dtype=lib.float64), covariance_matrix=cov)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draws.append(W.rsample(sample_shape) if lib is autograd else W._bartlett_sampling(torch.Size(sample_shape)))
    np.testing.assert_allclose(draws[0].numpy(), draws[1].numpy(), rtol=1e-12, atol=1e-14)
