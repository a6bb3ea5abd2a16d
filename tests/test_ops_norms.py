"""Norms, inverses, solves and determinants (autograd.linalg): gradients against finite
differences (float64), and values, gradients, dtypes and errors against PyTorch."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from tests.ops_reference import compare, raises_like
from tests.test_ops import _run, arrays, leaf


@st.composite
def norm_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3))
    x = draw(arrays(shape))
    x = np.where(np.abs(x) < 0.1, 0.5, x)  # |x| and |x|^p have kinks at 0
    x = x + np.arange(x.size).reshape(shape) * 1e-2  # no ties for the ±inf norms
    ord = draw(st.sampled_from([2, 1, 3, 0.5, math.inf, -math.inf, 2.5]))
    dim = draw(st.sampled_from([None, -1, 0] + ([(0, -1)] if len(shape) > 1 else [])))
    return [leaf(x)], (ord, dim)


@st.composite
def square(draw, batch=True, vector_rhs=False):
    """A well-conditioned square matrix (or a batch of them), and a right-hand side."""
    n = draw(st.integers(1, 3))
    shape = (draw(st.sampled_from([(), (2,)])) if batch else ()) + (n, n)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    a = rng.standard_normal(shape) + 3 * np.eye(n)
    b = rng.standard_normal(shape[:-1] if vector_rhs else shape[:-1] + (2,))
    return [leaf(a), leaf(b)]


@st.composite
def general_matrix(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = draw(st.sampled_from([(2, 3), (3, 2), (2, 2, 3), (1, 1), (3, 3)]))
    return [leaf(rng.standard_normal(shape))]


@st.composite
def symmetric_positive_definite(draw):
    n = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    b = rng.standard_normal(draw(st.sampled_from([(), (2,)])) + (n, n))
    return [leaf(b @ np.swapaxes(b, -1, -2) + n * np.eye(n))]


@st.composite
def singular_square(draw):
    """Square matrices of rank below their size (batched or not): det is 0 there, its gradient the cofactors."""
    n = draw(st.integers(2, 4))
    rank = draw(st.integers(0, n - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    batch = draw(st.sampled_from([(), (2,)]))
    return [leaf(rng.standard_normal(batch + (n, rank)) @ rng.standard_normal(batch + (rank, n)))]


def _symmetric(a):
    return (a + a.mT) * 0.5


CASES = {
    "VectorNorm": (norm_case(), lambda x, arg: autograd.linalg.vector_norm(x, arg[0], arg[1])),
    "SingularValues": (general_matrix(), lambda a: autograd.linalg.svdvals(a)),
    "Inverse": (square(), lambda a, b: autograd.linalg.inv(a)),
    "Solve": (square(), lambda a, b: autograd.linalg.solve(a, b)),
    "Det": (square(), lambda a, b: autograd.linalg.det(a)),
    # (det's first derivative at a singular matrix: the cofactors, the only thing that differentiates through it)
    "Cofactors": (singular_square(), lambda a: autograd.linalg.det(a)),
    "LogAbsDet": (square(), lambda a, b: autograd.linalg.slogdet(a - 6 * autograd.eye(a.shape[-1])).logabsdet),
    # (the sign e^(i arg det A) of a complex A = a + i aᵀ, through its real and imaginary parts)
    "DetSign": (square(), lambda a, b: autograd.view_as_real(autograd.linalg.slogdet(autograd.complex(a, a.mT)).sign)),
    "Cholesky": (symmetric_positive_definite(), lambda a: autograd.linalg.cholesky(_symmetric(a))),
    # (the factor's triangle is all cholesky_solve reads: through tril / triu, finite differences see its derivative)
    "CholeskySolve": (square(), lambda a, b: autograd.cholesky_solve(b, a.tril())
                      + autograd.cholesky_solve(b, a.triu(), upper=True)),
    "CholeskyInverse": (square(), lambda a, b: autograd.cholesky_inverse(a.tril())
                        + autograd.cholesky_inverse(a.triu(), upper=True)),
    # (eigenvalues reach ~22 here: e^(λ/4), not e^λ, or e^22 swamps the finite differences)
    "Eigh": (symmetric_positive_definite(), lambda a: (autograd.linalg.eigvalsh(_symmetric(a)) * 0.25).exp().sum()
             + (autograd.linalg.eigh(_symmetric(a)).eigenvectors ** 2).sum(-1).sum()),
    # (eig of a general matrix, through its eigenvalues: Σ λ², which stays defined where eigenvalues come close)
    "Eig": (square(), lambda a, b: (autograd.linalg.eig(a).eigenvalues ** 2).real.sum()
            + autograd.linalg.eigvals(a).real.exp().sum()),
    "EuclideanDistance": (general_matrix(), lambda a: autograd.cdist(a, a * 1.5 + 2.0,
                                                                      compute_mode="use_mm_for_euclid_dist")),
    "QR": (general_matrix(), lambda a: (lambda q, r: (q * q.sum(-1, keepdim=True), r))(
        *autograd.linalg.qr(a if a.shape[-2] >= a.shape[-1] else a.mT))),
}

COMPOSITES = {
    "norm": (norm_case(), lambda x, arg: x.norm(arg[0], arg[1], keepdim=True)),
    "matrix_norm": (general_matrix(), lambda a: autograd.linalg.matrix_norm(a, "fro") + autograd.linalg.matrix_norm(
        a, "nuc") + autograd.linalg.matrix_norm(a, 2) + autograd.linalg.matrix_norm(a, math.inf)),
    "matrix_power": (square(), lambda a, b: autograd.linalg.matrix_power(a, 3) + a.matrix_power(-2)
                     + autograd.linalg.matrix_power(a, 0)),
    "solve_vector": (square(vector_rhs=True), lambda a, b: autograd.linalg.solve(a, b)),
    "solve_right": (square(batch=False), lambda a, b: autograd.linalg.solve(a, b.mT, left=False)),
    "dist": (norm_case(), lambda x, arg: autograd.dist(x, x.flip(0) * 2, arg[0])),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPOSITES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run({**CASES, **COMPOSITES}[name], data)
    assert autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", ["VectorNorm", "Inverse", "Solve", "Det", "LogAbsDet", "EuclideanDistance"])
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    if name == "VectorNorm":  # the ±inf norms are piecewise linear: their second derivative is 0, as computed
        fn = (lambda f: lambda x: f(x) * f(x))(fn)
    assert autograd.gradgradcheck(fn, tensors)


def test_two_norm_of_zero_has_zero_gradient():
    x = autograd.zeros(3, dtype=np.float64, requires_grad=True)
    x.norm().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(3))


rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 4))
SQ = rng.standard_normal((2, 3, 3)) + 3 * np.eye(3)
SPD = SQ @ np.swapaxes(SQ, -1, -2)
INF = math.inf

def _positive_diagonal(q, r):
    signs = r.diagonal(0, -2, -1).sign()
    return q * signs.unsqueeze(-2), r * signs.unsqueeze(-1)


TORCH_CASES = {
    "norm": (lambda m, x: x.norm(), X),
    "norm_dim": (lambda m, x: x.norm(dim=1), X),
    "norm_p1_dims_keepdim": (lambda m, x: x.norm(p=1, dim=(0, 2), keepdim=True), X),
    "norm_p3": (lambda m, x: m.norm(x, 3, -1), X),
    "norm_inf": (lambda m, x: x.norm(INF, 1), X),
    "norm_minus_inf": (lambda m, x: x.norm(-INF), X),
    "norm_half": (lambda m, x: x.norm(0.5), X),
    "norm_zero": (lambda m, x: x.norm(0, dim=1), X),
    "norm_nuc": (lambda m, x: x[0].norm("nuc"), X),
    "norm_zero_vector": (lambda m, x: (x * 0).norm(dim=-1), X),
    "linalg_norm": (lambda m, x: m.linalg.norm(x), X),
    "linalg_norm_matrix_dims": (lambda m, x: m.linalg.norm(x, dim=(1, 2)), X),
    "linalg_norm_spectral": (lambda m, x: m.linalg.norm(x[0], ord=2), X),
    "linalg_norm_smallest_singular": (lambda m, x: m.linalg.norm(x[0], ord=-2), X),
    "linalg_norm_one": (lambda m, x: m.linalg.norm(x[0], ord=1), X),
    "linalg_norm_inf_dims": (lambda m, x: m.linalg.norm(x, ord=INF, dim=(2, 0)), X),
    "linalg_norm_vector_ord": (lambda m, x: m.linalg.norm(x[0, 0], ord=3), X),
    "matrix_norm_keepdim": (lambda m, x: m.linalg.matrix_norm(x, -1, keepdim=True), X),
    "matrix_norm_nuc_dims": (lambda m, x: m.linalg.matrix_norm(x, "nuc", dim=(0, 2), keepdim=True), X),
    "matrix_norm_minus_inf": (lambda m, x: m.linalg.matrix_norm(x, -INF), X),
    "vector_norm": (lambda m, x: m.linalg.vector_norm(x, 3.5, dim=1), X),
    "vector_norm_dtype": (lambda m, x: m.linalg.vector_norm(x, dtype=m.float64), X.astype(np.float32)),
    "svdvals": (lambda m, x: m.linalg.svdvals(x), X),
    "dist": (lambda m, x: m.dist(x, x[0] * 2, 3), X),
    "dist_method": (lambda m, x: x.dist(x.exp()), X),
    "inv": (lambda m, a: m.linalg.inv(a), SQ),
    "inverse_method": (lambda m, a: a.inverse(), SQ),
    "det": (lambda m, a: m.linalg.det(a), SQ),
    "det_method": (lambda m, a: a.det(), SQ),
    "slogdet": (lambda m, a: m.linalg.slogdet(a - 4 * m.eye(3, dtype=m.float64)).logabsdet, SQ),
    "slogdet_sign": (lambda m, a: m.linalg.slogdet((a - 4 * m.eye(3, dtype=m.float64)).detach()), SQ),
    "slogdet_method": (lambda m, a: a.detach().slogdet(), SQ),
    "logdet": (lambda m, a: a.logdet(), SQ),
    "solve": (lambda m, a: m.linalg.solve(a, a[0]), SQ),
    "solve_vector": (lambda m, a: m.linalg.solve(a, a[0, 0]), SQ),
    "solve_batch_of_vectors": (lambda m, a: m.linalg.solve(a, a[:, 0]), SQ),
    "solve_right": (lambda m, a: m.linalg.solve(a, a[0], left=False), SQ),
    "linalg_diagonal": (lambda m, a: m.linalg.diagonal(a, offset=1), SQ),
    "cdist": (lambda m, a, b: m.cdist(a, b), X, X + 1),
    "cdist_p1": (lambda m, a, b: m.cdist(a[0], b[1], p=1), X, X * 2),
    "cdist_zero_distances": (lambda m, a: m.cdist(a, a), X[:, :2]),
    "cholesky": (lambda m, a: m.linalg.cholesky(a), SPD),
    "cholesky_upper": (lambda m, a: m.linalg.cholesky(a, upper=True), SPD),
    "cholesky_reads_the_lower_triangle": (lambda m, a: m.linalg.cholesky(a.tril() + a.tril(-1).mT), SPD),
    "eigvalsh": (lambda m, a: m.linalg.eigvalsh(a), SPD),
    "eigh_values": (lambda m, a: m.linalg.eigh(a).eigenvalues, SPD),
    # eigenvectors are defined up to sign: compare them with each column's first entry made positive
    "eigh_vectors": (lambda m, a: (lambda v: v * v[..., :1, :].sign())(m.linalg.eigh(a).eigenvectors), SPD),
    "eigh_upper": (lambda m, a: m.linalg.eigh(a, UPLO="U").eigenvalues, SPD),
    # Q and R are defined up to the signs of R's diagonal: compare them with that diagonal made positive
    "qr_tall": (lambda m, a: _positive_diagonal(*m.linalg.qr(a)), X.transpose(0, 2, 1).copy()),
    "qr_square": (lambda m, a: _positive_diagonal(*m.linalg.qr(a)), SQ),
    "qr_r": (lambda m, a: m.linalg.qr(a.detach(), mode="r").R.abs(), X.transpose(0, 2, 1).copy()),
    "matrix_power": (lambda m, a: m.linalg.matrix_power(a, 3), SQ),
    "matrix_power_zero": (lambda m, a: m.linalg.matrix_power(a, 0), SQ),
    "matrix_power_negative": (lambda m, a: a.matrix_power(-2), SQ),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    compare(fn, *inputs, rtol=1e-6 if "dtype" in name else 1e-11)


ERRORS = {
    "vector_norm_ints": (lambda m, x, a: m.linalg.vector_norm(m.tensor([1, 2])), "floating point"),
    "matrix_norm_vector": (lambda m, x, a: m.linalg.matrix_norm(x[0, 0]), "at least 2 dimensions"),
    "norm_nuc_3d": (lambda m, x, a: x.norm("nuc"), "dim must be a 2-tuple"),
    "inv_not_square": (lambda m, x, a: m.linalg.inv(x), "square"),
    "inv_singular": (lambda m, x, a: m.linalg.inv(a * 0), "singular"),
    "solve_shapes": (lambda m, x, a: m.linalg.solve(a, x.mT), ""),
    "vector_norm_narrowing": (lambda m, x, a: m.linalg.vector_norm(x, dtype=m.float32), "narrowing"),
    "norm_dim": (lambda m, x, a: x.norm(dim=3), "Dimension out of range"),
    "cholesky_not_positive_definite": (lambda m, x, a: m.linalg.cholesky(-a @ a.mT), "positive-definite"),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_match_torch(name):
    fn, message = ERRORS[name]
    assert message in str(raises_like(fn, X, SQ))


def test_linalg_is_bound_on_import_as_torch_linalg():
    assert autograd.linalg.norm is not None and hasattr(autograd.linalg, "solve")


def test_two_norm_gradient_is_rounded_in_pytorchs_order():
    """dL/dx = dL/d‖x‖ · (x / ‖x‖), as PyTorch 2.13 computes it: bit for bit in float32 (g · x / ‖x‖ rounded
    otherwise in a third of the values)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    g = rng.standard_normal(32).astype(np.float32)
    t = autograd.tensor(x, requires_grad=True)
    norm = t.norm(dim=-1)
    norm.backward(autograd.tensor(g))
    n = norm.detach().numpy()[:, None]
    np.testing.assert_array_equal(t.grad.numpy(), g[:, None] * (x / n))
