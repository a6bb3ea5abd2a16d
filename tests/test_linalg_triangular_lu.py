"""Triangular solves and the LU factorisation: known values and reconstructions without PyTorch,
float64 finite differences on hypothesis-drawn shapes, and PyTorch's values, gradients, dtypes
and errors."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
from autograd import Tensor, linalg
from tests.test_ops import _run, leaf

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
RNG = np.random.default_rng(11)


def _well_conditioned(rng, shape):
    """A random matrix with a dominant diagonal (of either sign): far from singular, and its
    triangles too."""
    a = rng.standard_normal(shape)
    n = min(shape[-2:])
    signs = np.where(rng.random(shape[:-2] + (n,)) < 0.5, -1.0, 1.0)
    index = np.arange(n)
    a[..., index, index] += signs * (1.0 + n)
    return a


@st.composite
def _square_and_rhs(draw, sizes=(1, 2, 3), batches=((), (2,), (2, 1))):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n, batch, k = draw(st.sampled_from(sizes)), draw(st.sampled_from(batches)), draw(st.sampled_from((1, 2)))
    return [leaf(_well_conditioned(rng, batch + (n, n))), leaf(rng.standard_normal((n, k)))]


@st.composite
def _matrix(draw, shapes=((3, 3), (2, 3, 3), (2, 4), (4, 2), (1, 1))):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return [leaf(_well_conditioned(rng, draw(st.sampled_from(shapes))))]


def _both_factors(a):
    P, L, U = linalg.lu(a)
    return autograd.cat([L.flatten(-2), U.flatten(-2)], -1)


CASES = {  # (tests/test_ops.py checks that every primitive has one)
    "SolveTriangular": (_square_and_rhs(), lambda a, b: linalg.solve_triangular(a, b, upper=False)),
    "LUFactor": (_matrix(), lambda a: linalg.lu_factor(a).LU),
}

FUNCTIONS = {
    "solve_triangular upper unit": (_square_and_rhs(), lambda a, b: linalg.solve_triangular(a, b, upper=True,
                                                                                              unitriangular=True)),
    "solve_triangular right": (_square_and_rhs(),
                               lambda a, b: linalg.solve_triangular(a, b.mT, upper=True, left=False)),
    "triangular_solve transpose": (_square_and_rhs(), lambda a, b: autograd.triangular_solve(b, a, transpose=True)[0]),
    "lu factors": (_matrix(), _both_factors),
    "lu_solve": (_square_and_rhs(), lambda a, b: linalg.lu_solve(*linalg.lu_factor(a), b)),
    "lu_solve adjoint right": (_square_and_rhs(), lambda a, b: linalg.lu_solve(*linalg.lu_factor(a), b.mT,
                                                                               left=False, adjoint=True)),
}


@pytest.mark.parametrize("name", sorted({**CASES, **FUNCTIONS}))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run({**CASES, **FUNCTIONS}[name], data)
    assert autograd.gradcheck(fn, tensors)


def test_second_order():
    a, b = leaf(_well_conditioned(RNG, (3, 3))), leaf(RNG.standard_normal((3, 2)))
    assert autograd.gradgradcheck(lambda a, b: linalg.solve_triangular(a, b, upper=True), (a, b))
    assert autograd.gradgradcheck(_both_factors, (a,))
    assert autograd.gradgradcheck(_both_factors, (leaf(_well_conditioned(RNG, (2, 3))),))


def test_triangular_solve_values_and_errors():
    lower = Tensor(np.array([[2.0, 0.0], [1.0, 4.0]]))
    b = Tensor(np.array([[2.0], [9.0]]))
    np.testing.assert_allclose(linalg.solve_triangular(lower, b, upper=False).numpy(), [[1.0], [2.0]])
    np.testing.assert_allclose(linalg.solve_triangular(lower, b, upper=False, unitriangular=True).numpy(),
                               [[2.0], [7.0]])
    full = Tensor(np.array([[2.0, 5.0], [1.0, 4.0]]))  # the upper solve reads only the upper triangle
    np.testing.assert_allclose(linalg.solve_triangular(full, b, upper=True).numpy(), [[1 - 45 / 8], [9 / 4]])
    solution, coefficient = b.triangular_solve(full, upper=False)
    np.testing.assert_allclose(solution.numpy(), [[1.0], [2.0]])
    np.testing.assert_array_equal(coefficient.numpy(), full.numpy())
    with np.errstate(all="raise"):  # a zero pivot gives inf, as LAPACK, without a warning
        singular = linalg.solve_triangular(Tensor(np.array([[2.0, 0.0], [1.0, 0.0]])), b, upper=False)
    assert singular[1, 0].item() == np.inf
    batched = linalg.solve_triangular(autograd.eye(2, dtype=autograd.float64).expand(3, 2, 2), b, upper=True)
    assert batched.shape == (3, 2, 1) and batched.dtype == autograd.float64
    assert linalg.solve_triangular(autograd.eye(2), autograd.ones(2, 2), upper=True).dtype == autograd.float32
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        linalg.solve_triangular(lower, autograd.ones(2), upper=False)
    with pytest.raises(RuntimeError, match="square matrices"):
        linalg.solve_triangular(autograd.ones(2, 3), autograd.ones(2, 1), upper=False)
    with pytest.raises(RuntimeError, match=r"equation AX = B \(2x2 and 3x1\)"):
        linalg.solve_triangular(lower, autograd.ones(3, 1), upper=False)
    with pytest.raises(RuntimeError, match="floating point"):
        linalg.solve_triangular(autograd.ones(2, 2, dtype=autograd.int64), autograd.ones(2, 2), upper=False)
    with pytest.raises(TypeError):
        linalg.solve_triangular(lower, b)  # upper is required, as PyTorch's


def test_lu_reconstructs_and_pivots():
    for shape in [(4, 4), (2, 3, 5), (5, 3)]:
        a = RNG.standard_normal(shape)
        P, L, U = linalg.lu(Tensor(a))
        np.testing.assert_allclose((P @ L @ U).numpy(), a, atol=1e-12)
        k = min(shape[-2:])
        assert L.shape == shape[:-1] + (k,) and U.shape == shape[:-2] + (k, shape[-1])
        assert np.all(np.abs(L.numpy()) <= 1 + 1e-15)  # partial pivoting: |l_ij| ≤ 1
        LU, pivots = linalg.lu_factor(Tensor(a))
        assert pivots.dtype == autograd.int32 and pivots.shape == shape[:-2] + (k,)
        assert pivots.numpy().min() >= 1
        unpacked = autograd.lu_unpack(LU, pivots)
        np.testing.assert_array_equal(unpacked.L.numpy(), L.numpy())
    pivoted = linalg.lu_factor(Tensor(np.array([[1.0, 2.0], [3.0, 4.0]])))
    assert pivoted.pivots.tolist() == [2, 2]
    np.testing.assert_allclose(pivoted.LU.numpy(), [[3.0, 4.0], [1 / 3, 2 - 4 / 3]])


def test_lu_solve_and_singular_inputs():
    a = _well_conditioned(RNG, (2, 3, 3))
    b = RNG.standard_normal((2, 3, 2))
    LU, pivots = linalg.lu_factor(Tensor(a))
    np.testing.assert_allclose(linalg.lu_solve(LU, pivots, Tensor(b)).numpy(), np.linalg.solve(a, b), atol=1e-12)
    np.testing.assert_allclose(linalg.lu_solve(LU, pivots, Tensor(b), adjoint=True).numpy(),
                               np.linalg.solve(np.swapaxes(a, -1, -2), b), atol=1e-12)
    np.testing.assert_allclose(Tensor(b).lu_solve(LU, pivots).numpy(), np.linalg.solve(a, b), atol=1e-12)
    singular = Tensor(np.array([[2.0, 0.0], [1.0, 0.0]]))
    LU, pivots, info = linalg.lu_factor_ex(singular)
    assert info.item() == 2 and info.dtype == autograd.int32
    assert autograd.lu(singular, get_infos=True).info.item() == 2
    with pytest.raises(RuntimeError, match=r"^torch.linalg.lu_factor: U\[2,2\] is zero"):
        linalg.lu_factor(singular)
    with pytest.raises(RuntimeError, match=r"\(Batch element 1\): U\[2,2\] is zero"):
        linalg.lu_factor_ex(autograd.stack([autograd.eye(2, dtype=autograd.float64), singular]), check_errors=True)
    with pytest.raises(RuntimeError, match="LU without pivoting is not implemented"):
        linalg.lu(singular, pivot=False)
    with pytest.raises(RuntimeError, match="2 or more dimensions"):
        linalg.lu(autograd.ones(3))
    with pytest.raises(RuntimeError, match="int32"):
        linalg.lu_solve(LU, pivots.long(), autograd.ones(2, 1))
    with pytest.raises(RuntimeError, match=r"equation XA = B \(2x2 and 2x1\)"):
        linalg.lu_solve(LU, pivots, autograd.ones(2, 1, dtype=autograd.float64), left=False)
    with pytest.raises(RuntimeError, match="int32"):
        autograd.lu_unpack(LU, pivots.long())
    with pytest.raises(RuntimeError, match="same dtype, but found LU of type Double and B of type Float"):
        linalg.lu_solve(LU, pivots, autograd.ones(2, 1))
    with pytest.raises(RuntimeError, match=r"pivots.shape to be the same, but got pivots with shape \[2\]"):
        linalg.lu_solve(LU.expand(3, 2, 2), pivots, autograd.ones(2, 1, dtype=autograd.float64))


@pytest.mark.parametrize("shape", [(0, 0), (2, 0, 0), (3, 0), (0, 3)])
def test_lu_of_empty_matrices(shape):
    LU, pivots, info = linalg.lu_factor_ex(autograd.zeros(*shape))
    k = min(shape[-2:])
    assert LU.shape == shape and pivots.shape == shape[:-2] + (k,) and info.shape == shape[:-2]
    P, L, U = linalg.lu(autograd.zeros(*shape))
    assert P.shape == shape[:-2] + (shape[-2],) * 2 and L.shape == shape[:-1] + (k,)
    assert U.shape == shape[:-2] + (k, shape[-1])


def test_float32_keeps_its_dtype():
    a = Tensor(_well_conditioned(RNG, (3, 3)).astype(np.float32))
    LU, pivots = linalg.lu_factor(a)
    assert LU.dtype == autograd.float32 and pivots.dtype == autograd.int32
    x = linalg.lu_solve(LU, pivots, autograd.ones(3, 1))
    assert x.dtype == autograd.float32
    np.testing.assert_allclose((a @ x).numpy(), np.ones((3, 1)), rtol=1e-5)


@needs_torch
@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (3, 5), (5, 3)])
def test_lu_against_pytorch(shape):
    a = RNG.standard_normal(shape)
    ours, theirs = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    weights = [RNG.standard_normal(f.shape) for f in torch.linalg.lu(theirs)]
    results = []
    for module, x, wrap in ((linalg, ours, Tensor), (torch.linalg, theirs, torch.tensor)):
        P, L, U = module.lu(x)
        (sum((f * wrap(w)).sum() for f, w in zip((L, U), weights[1:]))).backward()
        results.append((P, L, U, module.lu_factor(x.detach())))
    for f, g in zip(results[0][:3], results[1][:3]):
        np.testing.assert_allclose(f.detach().numpy(), g.detach().numpy(), atol=1e-12)
    assert results[0][3].pivots.tolist() == results[1][3].pivots.tolist()
    assert str(results[1][3].pivots.dtype) == f"torch.{results[0][3].pivots.dtype}"
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-11)


@needs_torch
@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("adjoint", [True, False])
def test_lu_solve_and_solve_triangular_against_pytorch(left, adjoint):
    a, b = _well_conditioned(RNG, (2, 3, 3)), RNG.standard_normal((2, 3, 2) if left else (2, 2, 3))
    grads = []
    for module, wrap in ((linalg, lambda x: Tensor(x, requires_grad=True)),
                         (torch.linalg, lambda x: torch.tensor(x, requires_grad=True))):
        A, B = wrap(a), wrap(b)
        LU, pivots = module.lu_factor(A)
        X = module.lu_solve(LU, pivots, B, left=left, adjoint=adjoint)
        Y = module.solve_triangular(A, B, upper=adjoint, unitriangular=left, left=left)
        (X.sum() + (Y * Y).sum()).backward()
        grads.append((X.detach().numpy(), Y.detach().numpy(), A.grad.numpy(), B.grad.numpy()))
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)


@needs_torch
def test_deprecated_spellings_against_pytorch():
    a, b = _well_conditioned(RNG, (3, 3)), RNG.standard_normal((3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's deprecation notes
        theirs_lu = torch.lu(torch.tensor(a), get_infos=True)
        theirs_solve = torch.lu_solve(torch.tensor(b), *theirs_lu[:2])
        A = torch.tensor(a, requires_grad=True)
        solution, coefficient = torch.triangular_solve(torch.tensor(b), A, upper=False, transpose=True)
        (solution.sum() + coefficient.sum()).backward()
    ours_lu = autograd.lu(Tensor(a), get_infos=True)
    for ours, theirs in zip(ours_lu, theirs_lu):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-12)
    np.testing.assert_allclose(autograd.lu_solve(Tensor(b), *ours_lu[:2]).numpy(), theirs_solve.numpy(), atol=1e-12)
    ours = Tensor(a, requires_grad=True)
    solution_ours, coefficient_ours = autograd.triangular_solve(Tensor(b), ours, upper=False, transpose=True)
    (solution_ours.sum() + coefficient_ours.sum()).backward()
    np.testing.assert_allclose(solution_ours.detach().numpy(), solution.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.grad.numpy(), A.grad.numpy(), atol=1e-12)
    unpacked = [torch.lu_unpack(*theirs_lu[:2], **flags) for flags in ({}, {"unpack_data": False})]
    for flags, theirs in zip(({}, {"unpack_data": False}), unpacked):
        for f, g in zip(autograd.lu_unpack(*ours_lu[:2], **flags), theirs):
            assert f.shape == tuple(g.shape)
            np.testing.assert_allclose(f.numpy(), g.numpy(), atol=1e-12)
