"""svd_lowrank and pca_lowrank: randomised, so tested by what they promise (reconstruction of a
low-rank input, its singular values, reproducibility under manual_seed) rather than by equality
with PyTorch's own random draws; finite differences where the result does not depend on the draw
(q = min(m, n): the range finder then spans A's whole range)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
from autograd import Tensor
from tests.test_ops import leaf

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
RNG = np.random.default_rng(7)


def _low_rank(shape, rank):
    return RNG.standard_normal(shape[:-1] + (rank,)) @ RNG.standard_normal(shape[:-2] + (rank, shape[-1]))


def _rebuilt(U, S, V):
    return (U * S.unsqueeze(-2)) @ V.mT


@pytest.mark.parametrize("shape", [(40, 25), (25, 40), (3, 30, 20)])
def test_low_rank_input_is_recovered(shape):
    a = _low_rank(shape, 4)
    U, S, V = autograd.svd_lowrank(Tensor(a), q=6)
    m, n = shape[-2:]
    assert U.shape == shape[:-2] + (m, 6) and S.shape == shape[:-2] + (6,) and V.shape == shape[:-2] + (n, 6)
    np.testing.assert_allclose(_rebuilt(U, S, V).numpy(), a, atol=1e-10)
    exact = np.linalg.svd(a, compute_uv=False)
    np.testing.assert_allclose(S.numpy()[..., :4], exact[..., :4], rtol=1e-10)
    np.testing.assert_allclose(S.numpy()[..., 4:], 0.0, atol=1e-10)
    np.testing.assert_allclose((U.mT @ U).numpy(), np.broadcast_to(np.eye(6), shape[:-2] + (6, 6)), atol=1e-12)


def test_power_iterations_find_the_top_of_a_decaying_spectrum():
    u, _ = np.linalg.qr(RNG.standard_normal((60, 30)))
    v, _ = np.linalg.qr(RNG.standard_normal((30, 30)))
    sigma = 0.5 ** np.arange(30)
    a = (u * sigma) @ v.T
    S = autograd.svd_lowrank(Tensor(a), q=8, niter=4)[1].numpy()
    np.testing.assert_allclose(S[:5], sigma[:5], rtol=1e-6)


def test_manual_seed_makes_it_reproducible():
    a = Tensor(RNG.standard_normal((20, 10)))
    autograd.manual_seed(3)
    first = autograd.svd_lowrank(a, q=3)
    second = autograd.svd_lowrank(a, q=3)  # the generator has moved on: another draw
    autograd.manual_seed(3)
    again = autograd.svd_lowrank(a, q=3)
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    assert not np.array_equal(first[1].numpy(), second[1].numpy())


def test_pca_lowrank():
    data = _low_rank((50, 8), 3) + 5.0  # an offset the centring takes off
    U, S, V = autograd.pca_lowrank(Tensor(data), q=4)
    centred = data - data.mean(0)
    variances = np.linalg.eigvalsh(centred.T @ centred / 49)[::-1]
    np.testing.assert_allclose((S.numpy() ** 2 / 49)[:3], variances[:3], rtol=1e-10)
    directions = np.linalg.svd(centred)[2][:3].T
    np.testing.assert_allclose(np.abs(V.numpy()[:, :3].T @ directions), np.eye(3), atol=1e-10)
    assert autograd.pca_lowrank(Tensor(data))[1].shape == (6,)  # q = min(6, m, n)
    with_mean = autograd.svd_lowrank(Tensor(data), q=4, M=Tensor(data.mean(0, keepdims=True)))
    np.testing.assert_allclose(with_mean[1].numpy(), S.numpy(), rtol=1e-10, atol=1e-10)
    not_centred = autograd.pca_lowrank(Tensor(data), q=4, center=False)[1].numpy()
    assert not_centred[0] > S.numpy()[0]
    with pytest.raises(ValueError, match=r"q\(=9\) must be non-negative integer and not greater than min\(m, n\)=8"):
        autograd.pca_lowrank(Tensor(data), q=9)
    with pytest.raises(ValueError, match=r"niter\(=-1\)"):
        autograd.svd_lowrank(Tensor(data), niter=-1)


def test_q_beyond_the_size():
    a = RNG.standard_normal((5, 3))
    U, S, V = autograd.svd_lowrank(Tensor(a, requires_grad=True), q=7)
    assert U.shape == (5, 3) and S.shape == (3,) and V.shape == (3, 3)  # as PyTorch's: min(m, n) values
    np.testing.assert_allclose(S.detach().numpy(), np.linalg.svd(a, compute_uv=False), rtol=1e-12)
    S.sum().backward()


@st.composite
def _matrix(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return leaf(rng.standard_normal(draw(st.sampled_from(((4, 3), (3, 4), (2, 3, 2))))))


@settings(max_examples=10, deadline=None)
@given(a=_matrix())
def test_gradient_matches_finite_differences(a):
    full = min(a.shape[-2:])
    assert autograd.gradcheck(lambda a: autograd.svd_lowrank(a, q=full)[1], (a,))
    assert autograd.gradcheck(lambda a: _rebuilt(*autograd.svd_lowrank(a, q=full, niter=1)), (a,))


@needs_torch
@pytest.mark.parametrize("shape", [(30, 12), (12, 30), (2, 15, 10)])
def test_against_pytorch(shape):
    a = _low_rank(shape, 3)
    ours, theirs = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    result, expected = autograd.svd_lowrank(ours, q=3), torch.svd_lowrank(theirs, q=3)
    for f, g in zip(result, expected):
        assert f.shape == tuple(g.shape) and str(g.dtype) == f"torch.{f.dtype}"
    np.testing.assert_allclose(result[1].detach().numpy(), expected[1].detach().numpy(), rtol=1e-10)
    result[1].sum().backward()  # Σσ of a rank-3 input: its gradient U Vᵀ does not depend on the draw
    expected[1].sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), atol=1e-10)
    pca, torch_pca = autograd.pca_lowrank(Tensor(a)), torch.pca_lowrank(torch.tensor(a))
    np.testing.assert_allclose(pca[1].numpy()[..., :2], torch_pca[1].numpy()[..., :2], rtol=1e-10)
