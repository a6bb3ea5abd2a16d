"""SVD and what is built on it (pinv, lstsq, matrix_rank), and the matrix exponential:
reconstruction and known values without PyTorch, finite differences (of quantities that do
not depend on the singular vectors' signs), and PyTorch's values and gradients."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from autograd import Tensor, linalg
from tests.test_ops import _run, leaf

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
RNG = np.random.default_rng(3)
SHAPES = [(4, 3), (3, 4), (3, 3), (2, 4, 3)]


@st.composite
def _matrix(draw, shapes=((2, 3), (3, 2), (2, 2, 3), (1, 1), (3, 3))):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return [leaf(rng.standard_normal(draw(st.sampled_from(shapes))))]


def _values_and_top_part(result, a):
    """S, and a weighted sum of u_1 v_1ᵀ (free of the vectors' signs)."""
    top = (result.U[..., :, :1] * result.Vh[..., :1, :] * a).sum((-2, -1))
    return result.S * 2.0 + top.unsqueeze(-1)


CASES = {  # (tests/test_ops.py checks that every primitive has one)
    "SVD": (_matrix(), lambda a: _values_and_top_part(linalg.svd(a, False), a)),
    "PseudoInverse": (_matrix(), lambda a: linalg.pinv(a)),
    "MatrixExp": (_matrix(((2, 2), (3, 3), (2, 3, 3), (1, 1))), lambda a: linalg.matrix_exp(a)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


def _leaf(*shape):
    return Tensor(RNG.normal(size=shape), requires_grad=True)


def _rank_two_part(result):
    """U[:, :2] diag(S[:2]) Vh[:2]: the best rank-2 approximation, free of the vectors' signs."""
    return result.U[..., :2] @ (result.S[..., :2, None] * result.Vh[..., :2, :])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("full_matrices", [False, True])
def test_svd_reconstructs_and_differentiates(shape, full_matrices):
    a = _leaf(*shape)
    u, s, vh = linalg.svd(a, full_matrices=full_matrices)
    m, n = shape[-2:]
    k = min(m, n)
    assert u.shape[-2:] == ((m, m) if full_matrices else (m, k)) and s.shape[-1] == k
    assert vh.shape[-2:] == ((n, n) if full_matrices else (k, n))
    np.testing.assert_allclose((u[..., :k] @ (s[..., :, None] * vh[..., :k, :])).detach().numpy(), a.detach().numpy(),
                               atol=1e-12)
    assert np.all(np.diff(s.detach().numpy(), axis=-1) <= 0)
    assert autograd.gradcheck(lambda a: linalg.svd(a, full_matrices)[1], (a,))
    assert autograd.gradcheck(lambda a: _rank_two_part(linalg.svd(a, full_matrices)), (a,))
    assert autograd.gradcheck(lambda a: (lambda r: r.U[..., :, :1] * r.Vh[..., :1, :1])(linalg.svd(a, full_matrices)),
                              (a,))


def test_svd_second_order_and_torch_svd():
    a = _leaf(3, 3)
    assert autograd.gradgradcheck(lambda a: linalg.svd(a, False).S, (a,))
    u, s, v = a.svd()
    np.testing.assert_allclose((u @ (s[:, None] * v.mT)).detach().numpy(), a.detach().numpy(), atol=1e-12)
    assert autograd.svd(_leaf(4, 2), some=False).U.shape == (4, 4)
    no_vectors = autograd.svd(_leaf(4, 2), compute_uv=False)
    assert float(no_vectors.U.abs().sum()) == 0.0 and no_vectors.S.shape == (2,)
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        linalg.svd(autograd.ones(3))


def test_pinv_lstsq_matrix_rank():
    a = _leaf(4, 3)
    x = linalg.pinv(a)
    np.testing.assert_allclose((x @ a).detach().numpy(), np.eye(3), atol=1e-12)
    assert autograd.gradcheck(linalg.pinv, (a,)) and autograd.gradcheck(lambda a: a.pinverse(), (_leaf(2, 3),))
    assert autograd.gradgradcheck(linalg.pinv, (_leaf(3, 2),))
    orthogonal = Tensor(np.linalg.qr(RNG.normal(size=(3, 3)))[0], requires_grad=True)  # repeated singular values
    assert autograd.gradcheck(linalg.pinv, (orthogonal,))
    b = RNG.normal(size=(4, 2))
    solution = linalg.lstsq(a, Tensor(b)).solution
    np.testing.assert_allclose(solution.detach().numpy(), np.linalg.lstsq(a.detach().numpy(), b, rcond=None)[0],
                               atol=1e-12)
    assert autograd.gradcheck(lambda a, b: linalg.lstsq(a, b).solution, (a, Tensor(b, requires_grad=True)))
    assert linalg.matrix_rank(autograd.ones(3, 3)).item() == 1 and linalg.matrix_rank(autograd.eye(3)).item() == 3
    assert linalg.matrix_rank(autograd.zeros(2, 3, 3)).tolist() == [0, 0]
    assert linalg.matrix_rank(autograd.eye(3)).dtype == autograd.int64


def test_matrix_exp():
    rotation = linalg.matrix_exp(autograd.tensor([[0.0, -np.pi / 2], [np.pi / 2, 0.0]], dtype=autograd.float64))
    np.testing.assert_allclose(rotation.numpy(), [[0.0, -1.0], [1.0, 0.0]], atol=1e-15)
    diagonal = autograd.tensor([[1.0, 0.0], [0.0, -30.0]], dtype=autograd.float64).matrix_exp()
    np.testing.assert_allclose(np.diag(diagonal.numpy()), np.exp([1.0, -30.0]), rtol=1e-14)
    a = _leaf(2, 3, 3)
    assert autograd.gradcheck(autograd.matrix_exp, (a,)) and autograd.gradgradcheck(autograd.matrix_exp, (_leaf(2, 2),))
    with pytest.raises(RuntimeError, match="square matrices"):
        autograd.matrix_exp(autograd.ones(2, 3))


@needs_torch
def test_against_pytorch():
    data = RNG.normal(size=(2, 5, 3))
    weights = RNG.normal(size=(2, 5, 3))
    ours, theirs = Tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    for module, a in ((linalg, ours), (torch.linalg, theirs)):
        result = module.svd(a, full_matrices=False)
        loss = result.S.sum() + (_rank_two_part(result) * (Tensor(weights) if module is linalg else
                                                            torch.tensor(weights))).sum()
        loss.backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(linalg.svd(Tensor(data)).S.numpy(), torch.linalg.svd(torch.tensor(data)).S.numpy(),
                               rtol=1e-12)
    for name in ("pinv", "matrix_exp"):
        square = data[:, :3, :] * (1 if name == "pinv" else 3)
        ours, theirs = Tensor(square, requires_grad=True), torch.tensor(square, requires_grad=True)
        getattr(linalg, name)(ours).sum().backward()
        getattr(torch.linalg, name)(theirs).sum().backward()
        np.testing.assert_allclose(getattr(linalg, name)(Tensor(square)).numpy(),
                                   getattr(torch.linalg, name)(torch.tensor(square)).numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-8, atol=1e-10)
    b = RNG.normal(size=(2, 5, 2))
    np.testing.assert_allclose(linalg.lstsq(Tensor(data), Tensor(b)).solution.numpy(),
                               torch.linalg.lstsq(torch.tensor(data), torch.tensor(b)).solution.numpy(), atol=1e-12)
    assert linalg.matrix_rank(Tensor(data)).tolist() == torch.linalg.matrix_rank(torch.tensor(data)).tolist()
