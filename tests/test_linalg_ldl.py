"""The LDLᵀ factorisation with Bunch-Kaufman pivoting (ldl_factor, ldl_factor_ex, ldl_solve):
solutions and known packings without PyTorch, and PyTorch's (LAPACK's) factors and pivots."""

import numpy as np
import pytest

import autograd
from autograd import Tensor, linalg

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
RNG = np.random.default_rng(13)


def _symmetric(shape, zero_corner=False):
    a = RNG.standard_normal(shape)
    a = a + np.swapaxes(a, -1, -2)
    if zero_corner:  # a zero first pivot: a 2 × 2 block (or a swap) is needed
        a[..., 0, 0] = 0.0
    return a


def test_known_packings():
    swap_block = linalg.ldl_factor(Tensor(np.array([[0.0, 1.0], [1.0, 0.0]])))
    assert swap_block.pivots.tolist() == [-2, -2] and swap_block.pivots.dtype == autograd.int32
    np.testing.assert_array_equal(swap_block.LD.numpy(), [[0.0, 0.0], [1.0, 0.0]])
    plain = linalg.ldl_factor(Tensor(np.array([[4.0, 2.0, 1.0], [2.0, -3.0, 1.0], [1.0, 1.0, 2.0]])))
    assert plain.pivots.tolist() == [1, 2, 3]
    np.testing.assert_allclose(plain.LD.numpy(), [[4.0, 0.0, 0.0], [0.5, -4.0, 0.0], [0.25, -0.125, 1.8125]])
    upper_ignored = linalg.ldl_factor(Tensor(np.array([[4.0, 99.0], [2.0, -3.0]])))  # only the lower triangle is read
    np.testing.assert_allclose(upper_ignored.LD.numpy(), [[4.0, 0.0], [0.5, -4.0]])


@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (3, 4, 4), (2, 7, 7)])
@pytest.mark.parametrize("zero_corner", [False, True])
def test_solves_indefinite_systems(shape, zero_corner):
    a, b = _symmetric(shape, zero_corner), RNG.standard_normal(shape[:-1] + (2,))
    if shape[-1] == 1 and zero_corner:
        a[...] = 3.0
    LD, pivots = linalg.ldl_factor(Tensor(a))
    x = linalg.ldl_solve(LD, pivots, Tensor(b))
    np.testing.assert_allclose(a @ x.numpy(), b, atol=1e-9)
    np.testing.assert_allclose(LD.numpy(), np.tril(LD.numpy()))


def test_singular_input_and_errors():
    a = np.zeros((2, 3, 3))
    a[0] = np.eye(3)
    LD, pivots, info = linalg.ldl_factor_ex(Tensor(a))
    assert info.tolist() == [0, 1] and info.dtype == autograd.int32
    with pytest.raises(linalg.LinAlgError, match=r"\(Batch element 1\): The factorization could not .*D\[1,1\]"):
        linalg.ldl_factor(Tensor(a))
    with pytest.raises(linalg.LinAlgError, match="D\\[1,1\\] is zero"):
        linalg.ldl_factor_ex(Tensor(a[1]), check_errors=True)
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        linalg.ldl_factor(autograd.ones(3))
    with pytest.raises(RuntimeError, match="square matrices"):
        linalg.ldl_factor(autograd.ones(2, 3))
    with pytest.raises(RuntimeError, match="has no derivative.*A.detach()"):
        linalg.ldl_factor(Tensor(np.eye(2), requires_grad=True))
    LD, pivots = linalg.ldl_factor(autograd.eye(2))
    with pytest.raises(RuntimeError, match="each A matrix is 2 by 2 but each b matrix is 3 by 1"):
        linalg.ldl_solve(LD, pivots, autograd.ones(3, 1))
    with pytest.raises(RuntimeError, match="same dtype"):
        linalg.ldl_solve(LD, pivots, autograd.ones(2, 1, dtype=autograd.float64))
    assert linalg.ldl_solve(LD, pivots, autograd.ones(4, 1, 2, 1)).shape == (4, 1, 2, 1)  # batch dims broadcast


@needs_torch
@pytest.mark.parametrize("seed", range(6))
def test_against_pytorch(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((4, 6, 6)) * (rng.random((4, 6, 6)) < 0.6)
    a = a + np.swapaxes(a, -1, -2)
    a[::2, 0, 0] = 0.0
    ours, theirs = linalg.ldl_factor_ex(Tensor(a)), torch.linalg.ldl_factor_ex(torch.tensor(a))
    assert ours.pivots.tolist() == theirs.pivots.tolist() and ours.info.tolist() == theirs.info.tolist()
    assert str(theirs.pivots.dtype) == f"torch.{ours.pivots.dtype}"
    np.testing.assert_allclose(ours.LD.numpy(), theirs.LD.numpy(), atol=1e-10)
    if not ours.info.numpy().any():
        b = rng.standard_normal((4, 6, 3))
        np.testing.assert_allclose(linalg.ldl_solve(ours.LD, ours.pivots, Tensor(b)).numpy(),
                                   torch.linalg.ldl_solve(theirs.LD, theirs.pivots, torch.tensor(b)).numpy(), atol=1e-9)
