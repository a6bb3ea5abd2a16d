"""Numerical linear algebra as real programs use it (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same data, comparing values, gradients, dtypes and errors; all in float64 and, where programs run
so, float32. Mesh normals by ``linalg.cross``, ``multi_dot`` chains; the ``_ex`` variants' info codes on batches with
singular members and the errors PyTorch raises. Focused tests of what the programs found: ``cholesky(upper=True)``
reads the upper triangle (values and ``cholesky_ex``'s info); a NaN pivot is not positive-definite;
``cholesky_solve``/``cholesky_inverse`` read only the factor's triangle, and cholesky_solve gives inf for a singular
factor with PyTorch's gradient for any factor; ``torch.svd(compute_uv=False)``'s square zero U and V; ``linalg.svd``
of an empty batch; ``vector_norm(ord=0)`` has no gradient; eigh's and svd's failure to converge is a ``LinAlgError``
naming the batch element, ``eig`` refuses non-finite input; ``lstsq(driver='gels')`` refuses a rank-deficient matrix;
``solve(left=False)`` refuses vectors; ``geqrf`` of a tensor that requires grad runs and refuses only its backward;
``matrix_exp``'s accuracy in float32 and for a batch of different norms; ``eigh``'s UPLO in either case; out= of
another dtype refused by norms, solves and cross; multi_dot's errors; vmap of jacfwd through det (where PyTorch 2.13
itself is wrong)."""

import warnings

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# multi_dot, cross products, and the _ex variants' info codes on batches with singular members
# ----------------------------------------------------------------------------------------------


def mesh_normals_and_chains(m):
    torch = m.torch
    rng = np.random.default_rng(14)
    verts = torch.tensor(rng.standard_normal((6, 3)), requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 3, 4], [2, 4, 5]])
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    n = torch.linalg.cross(v1 - v0, v2 - v0)
    area = 0.5 * torch.linalg.vector_norm(n, dim=-1)
    unit = torch.nn.functional.normalize(n, dim=-1)
    n_old = torch.cross(v1 - v0, v2 - v0, dim=1)
    n_dim0 = torch.linalg.cross((v1 - v0).T, (v2 - v0).T, dim=0).T
    n_bcast = torch.linalg.cross(v1 - v0, torch.tensor([[0.0, 0.0, 1.0]], dtype=verts.dtype))
    (g,) = torch.autograd.grad(area.sum() + unit[:, 2].sum(), verts)
    # multi_dot picks the cheapest order; the value and gradients are the product's
    mats = [torch.tensor(rng.standard_normal(s), requires_grad=True) for s in ((7,), (7, 2), (2, 9), (9, 3), (3,))]
    chain = torch.linalg.multi_dot(mats)
    grads = torch.autograd.grad(chain, mats)
    plain = mats[0] @ mats[1] @ mats[2] @ mats[3] @ mats[4]
    chain2 = torch.linalg.multi_dot([mats[1], mats[2], mats[3]])
    with warnings.catch_warnings():  # (deprecated in PyTorch, with a warning)
        warnings.simplefilter("ignore")
        chained = torch.chain_matmul(*[x.detach() for x in mats[1:4]])
    return area, unit, n_old, n_dim0, n_bcast, g, chain, grads, plain, chain2, chained


def test_mesh_normals_by_cross_and_chains_by_multi_dot():
    ours, _ = run_both(mesh_normals_and_chains, rtol=1e-9, atol=1e-10)
    area, unit, n_old, n_dim0, n_bcast, g, chain, grads, plain, chain2, chained = ours
    np.testing.assert_allclose(chain, plain, rtol=1e-10)
    np.testing.assert_allclose(n_old, n_dim0)
    np.testing.assert_allclose(chain2, chained, rtol=1e-10)


def ex_info_codes(m):
    """A batch of systems, some singular or not positive-definite: the _ex variants' info codes (int32), their
    results on the good members, and the errors the plain functions raise, naming the batch element."""
    torch = m.torch
    good = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    singular = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    indefinite = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    zero_row = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    A = torch.stack([good, singular, indefinite, zero_row])
    B = torch.arange(12.0, dtype=torch.float64).reshape(4, 3, 1)
    out = {}
    X, info = torch.linalg.solve_ex(A, B)
    out["solve_ex info"], out["solve_ex good"] = info, X[[0, 2]]
    inv, info = torch.linalg.inv_ex(A)
    out["inv_ex info"], out["inv_ex good"] = info, inv[[0, 2]]
    L, info = torch.linalg.cholesky_ex(A)
    out["cholesky_ex info"], out["cholesky_ex good"] = info, L[0]
    U, info = torch.linalg.cholesky_ex(A, upper=True)
    out["cholesky_ex upper info"], out["cholesky_ex upper good"] = info, U[0]
    LU, piv, info = torch.linalg.lu_factor_ex(A)
    out["lu_factor_ex info"], out["lu_factor_ex pivots"], out["lu_factor_ex LU good"] = info, piv, LU[[0, 2]]
    out["dtypes"] = [str(t.dtype).split(".")[-1] for t in (info, piv)]
    out["det"] = torch.linalg.det(A)
    # (not of the singular member: its last pivot is 0 or 1e-16, whichever LAPACK's kernel for the processor rounds
    # to, so its log|det| is -inf or -35 in either library)
    out["slogdet"] = torch.linalg.slogdet(A[[0, 2, 3]])
    out["matrix_rank"] = torch.linalg.matrix_rank(A)
    errors = {}
    for name, call in [("inv", lambda: torch.linalg.inv(A)), ("solve", lambda: torch.linalg.solve(A, B)),
                       ("cholesky", lambda: torch.linalg.cholesky(A)),
                       ("cholesky single", lambda: torch.linalg.cholesky(indefinite)),
                       ("inv_ex check", lambda: torch.linalg.inv_ex(A, check_errors=True)),
                       ("cholesky_ex check", lambda: torch.linalg.cholesky_ex(A, check_errors=True)),
                       ("lu_factor", lambda: torch.linalg.lu_factor(A)),
                       ("matrix_power -1", lambda: torch.linalg.matrix_power(A, -1)),
                       ("inverse", lambda: A.inverse()),
                       ("eigh nan", lambda: torch.linalg.eigh(A * float("nan"))),
                       ("svd inf", lambda: torch.linalg.svdvals(torch.stack([good, good * float("inf")]))),
                       ("eig nan", lambda: torch.linalg.eig(A * float("nan")))]:
        try:
            call()
            errors[name] = None
        except torch.linalg.LinAlgError as e:
            errors[name] = ("LinAlgError", str(e))
        except RuntimeError as e:
            errors[name] = ("RuntimeError", str(e))
    out["errors"] = errors
    return out


def test_ex_info_codes_and_singular_errors():
    ours, theirs = run_both(ex_info_codes, compare=False)
    errors = ours.pop("errors")
    if theirs is not None:
        their_errors = theirs.pop("errors")
        for name, error in errors.items():  # the class, and PyTorch's words (LAPACK's error code aside)
            assert error[0] == their_errors[name][0], name
            assert error[1].rstrip(".") == their_errors[name][1].split(" (error code")[0].rstrip("."), name
        run_both(lambda m: {k: v for k, v in ex_info_codes(m).items() if k != "errors"}, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours["solve_ex info"], [0, 3, 0, 3])
    np.testing.assert_array_equal(ours["cholesky_ex info"], [0, 2, 2, 3])
    assert ours["dtypes"] == ["int32", "int32"]
    assert errors["cholesky"] == ("LinAlgError", "linalg.cholesky: (Batch element 1): The factorization could not "
                                  "be completed because the input is not positive-definite (the leading minor of "
                                  "order 2 is not positive-definite).")


# ----------------------------------------------------------------------------------------------
# Focused tests of what the programs found (on chainrule and PyTorch: the T fixture)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_cholesky_upper_reads_the_upper_triangle(T, dtype):
    """LAPACK's potrf with uplo='U' reads A's upper triangle only: for an A whose triangles disagree (built upper
    only, or not exactly symmetric) U is the factor of the Hermitian matrix that triangle describes."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 3)) + (1j * rng.standard_normal((2, 3, 3)) if dtype == "complex128" else 0)
    hermitian = x @ np.conj(np.swapaxes(x, -1, -2)) + 3 * np.eye(3)
    upper_only = np.triu(hermitian) + np.tril(np.full((3, 3), 50.0), -1)  # junk below the diagonal
    expected = np.conj(np.swapaxes(np.linalg.cholesky(hermitian), -1, -2))
    A = T.tensor(upper_only)
    np.testing.assert_allclose(T.linalg.cholesky(A, upper=True).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(T.linalg.cholesky_ex(A, upper=True).L.numpy(), expected, atol=1e-12)
    # the info codes read the same triangle: the lower one is not positive-definite, the upper is
    assert (T.linalg.cholesky_ex(A).info > 0).all()
    assert T.linalg.cholesky_ex(A, upper=True).info.tolist() == [0, 0]
    # and the lower factor still reads only the lower triangle
    lower_only = np.tril(hermitian) + np.triu(np.full((3, 3), 50.0), 1)
    np.testing.assert_allclose(T.linalg.cholesky(T.tensor(lower_only)).numpy(), np.linalg.cholesky(hermitian),
                               atol=1e-12)


def test_cholesky_of_a_nan_matrix_is_not_positive_definite(T):
    """A NaN pivot fails LAPACK's test (ajj <= 0 or NaN): LinAlgError, and info in cholesky_ex (NumPy returned
    NaN silently)."""
    A = T.stack([T.eye(3, dtype=T.float64), T.full((3, 3), float("nan"), dtype=T.float64)])
    with pytest.raises(T.linalg.LinAlgError, match=r"linalg.cholesky: \(Batch element 1\): The factorization could "
                                                   r"not be completed .* order 1 is not positive-definite"):
        T.linalg.cholesky(A)
    assert T.linalg.cholesky_ex(A).info.tolist() == [0, 1]


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_and_inverse_read_only_the_factors_triangle(T, upper):
    """potrs and potri read the factor's triangle alone: what lies across it (a factor stored in a full
    matrix beside other data) does not change the result."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3))
    A = x @ x.T + 3 * np.eye(3)
    L = np.linalg.cholesky(A)
    factor = L.T.copy() if upper else L.copy()
    junk = np.tril(rng.standard_normal((3, 3)), -1)
    stored = factor + (junk.T if not upper else junk)
    b = rng.standard_normal((3, 2))
    X = T.cholesky_solve(T.tensor(b), T.tensor(stored), upper=upper)
    np.testing.assert_allclose(X.numpy(), np.linalg.solve(A, b), rtol=1e-10)
    np.testing.assert_allclose(T.cholesky_inverse(T.tensor(stored), upper=upper).numpy(), np.linalg.inv(A),
                               rtol=1e-10)


def test_torch_svd_without_uv_gives_square_zero_u_and_v(T):
    """torch.svd(compute_uv=False): U and V are zero-filled (m, m) and (n, n), whatever ``some`` says; S is
    differentiable."""
    A = T.tensor(np.random.default_rng(2).standard_normal((2, 5, 3)), requires_grad=True)
    U, S, V = T.svd(A, compute_uv=False)
    assert tuple(U.shape) == (2, 5, 5) and tuple(V.shape) == (2, 3, 3)
    assert not U.any() and not V.any()
    (g,) = T.autograd.grad(S.sum(), A)
    u, s, vh = np.linalg.svd(A.detach().numpy(), full_matrices=False)
    np.testing.assert_allclose(g.numpy(), u @ vh, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 3, 3), (0, 3, 4), (0, 4, 3), (2, 0, 3), (0, 0, 0)])
@pytest.mark.parametrize("full_matrices", [True, False])
def test_svd_of_an_empty_batch(T, shape, full_matrices):
    m, n = shape[-2:]
    k = min(m, n)
    U, S, Vh = T.linalg.svd(T.zeros(shape, dtype=T.float64), full_matrices=full_matrices)
    assert tuple(U.shape) == shape[:-2] + ((m, m) if full_matrices else (m, k))
    assert tuple(S.shape) == shape[:-2] + (k,)
    assert tuple(Vh.shape) == shape[:-2] + ((n, n) if full_matrices else (k, n))


def test_vector_norm_of_order_zero_has_no_gradient(T):
    """ord=0 counts the non-zero entries: PyTorch's backward gives no gradient at all (x.grad stays None), not
    zeros; beside another path x's gradient is that path's."""
    for norm in (lambda x: T.linalg.vector_norm(x, 0), lambda x: T.norm(x, p=0), lambda x: T.linalg.norm(x, 0)):
        x = T.tensor([1.0, 0.0, 2.0], requires_grad=True)
        y = norm(x)
        assert y.item() == 2.0 and y.requires_grad
        y.backward()
        assert x.grad is None
        (g,) = T.autograd.grad(norm(x) + x.sum(), x)
        assert g.tolist() == [1.0, 1.0, 1.0]
    # cdist's and pdist's kernels give zeros for p = 0 (a gradient, not none)
    x = T.tensor([[1.0, 0.0, 2.0], [3.0, 4.0, 0.0]], requires_grad=True)
    (T.cdist(x, x.flip(0) * 2, p=0).sum() + T.pdist(x, p=0).sum()).backward()
    assert x.grad is not None and x.grad.tolist() == [[0.0] * 3] * 2


@pytest.mark.parametrize("call, op", [
    (lambda T, A: T.linalg.eigh(A), "linalg.eigh"),
    (lambda T, A: T.linalg.eigvalsh(A), "linalg.eigh"),
    (lambda T, A: T.linalg.pinv(A, hermitian=True), "linalg.eigh"),
    (lambda T, A: T.linalg.svd(A), "linalg.svd"),
    (lambda T, A: T.linalg.svdvals(A), "linalg.svd"),
    (lambda T, A: T.linalg.pinv(A), "linalg.svd"),
    (lambda T, A: T.linalg.matrix_rank(A), "linalg.svd"),
    (lambda T, A: T.linalg.matrix_norm(A, ord=2), "linalg.svd"),
    (lambda T, A: T.linalg.cond(A), "linalg.svd"),
])
def test_decompositions_that_do_not_converge_raise_linalg_error(T, call, op):
    """A NaN or inf stops the iteration: PyTorch's LinAlgError (a RuntimeError), naming the batch element, so
    that ``except torch.linalg.LinAlgError`` catches it (chainrule raised a ShapeError, or NumPy's ValueError)."""
    A = T.stack([T.eye(3, dtype=T.float64), T.full((3, 3), float("nan"), dtype=T.float64)])
    cause = "contained non-finite values" if op == "linalg.svd" else "is ill-conditioned or has too many repeated"
    with pytest.raises(T.linalg.LinAlgError, match=rf"{op}: \(Batch element 1\): The algorithm failed to converge "
                                                   rf"because the input matrix {cause}"):
        call(T, A)


def test_eig_refuses_non_finite_input(T):
    """linalg.eig, and eigvals where it is differentiated (through eig), refuse an inf or NaN with PyTorch's
    RuntimeError (NumPy's refusal is a ValueError); eigvals without a graph gives NaN, LAPACK's answer."""
    A = T.tensor([[1.0, float("inf")], [0.0, 1.0]])
    for call in (T.linalg.eig, lambda A: T.linalg.eigvals(A.requires_grad_())):
        with pytest.raises(RuntimeError, match="torch.linalg.eig: input tensor should not contain infs or NaNs."):
            call(A.detach())
    values = T.linalg.eigvals(A)
    assert values.dtype == T.complex64 and tuple(values.shape) == (2,) and values.isnan().all()


def test_lstsq_gels_refuses_a_rank_deficient_matrix(T):
    """gels assumes full rank: an exact zero on its QR's (LQ's, wide) diagonal is LAPACK's error, with the zero's
    1-based index; an all-zero matrix gets the zero solution (LAPACK's early return); gelsy takes any rank."""
    tall = np.outer([1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 1.0])  # the second column is zero
    b = T.ones(4, 1, dtype=T.float64)
    with pytest.raises(T.linalg.LinAlgError, match=r"torch.linalg.lstsq: The least squares solution could not be "
                                                   r"computed because the input matrix does not have full rank "
                                                   r"\(error code: 2\)"):
        T.linalg.lstsq(T.tensor(tall), b, driver="gels")
    wide = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]  # (a zero row: L's second pivot is 0)
    with pytest.raises(T.linalg.LinAlgError, match=r"\(Batch element 1\): .* \(error code: 2\)"):
        T.linalg.lstsq(T.tensor(np.stack([np.eye(3, 4), wide])),
                       T.ones(2, 3, 1, dtype=T.float64), driver="gels")
    assert not T.linalg.lstsq(T.zeros(4, 3, dtype=T.float64), b, driver="gels").solution.any()
    if T.__name__ == "autograd":  # (PyTorch's MKL gelsy decides this rank differently from run to run within one
        # process: in a full-suite run it once returned zeros here; chainrule's is the pseudo-inverse's, always)
        np.testing.assert_allclose(T.linalg.lstsq(T.tensor(tall), b, driver="gelsy").solution.numpy(),
                                   np.linalg.pinv(tall) @ np.ones((4, 1)), atol=1e-12)


@pytest.mark.parametrize("a_shape, b_shape, message", [
    ((3, 3), (3,), "3x3 and 3x1"),        # a vector is the column B: no X A is one
    ((2, 3, 3), (2, 3), "3x3 and 3x1"),   # a batch of vectors (it came out silently as a (2, 2, 3) batch)
    ((3, 3), (2, 4), "3x3 and 2x4"),      # the columns do not match A's rows
    ((3, 3), (4, 3, 2), "3x3 and 3x2"),
])
def test_solve_on_the_right_refuses_vectors_and_mismatched_shapes(T, a_shape, b_shape, message):
    A = T.ones(*a_shape, dtype=T.float64) + T.eye(3, dtype=T.float64)
    for solve in (T.linalg.solve, lambda A, B, left: T.linalg.solve_ex(A, B, left=left).result):
        with pytest.raises(RuntimeError, match=rf"linalg.solve: Incompatible shapes of A and B for the equation "
                                               rf"XA = B \({message}\)"):
            solve(A, T.ones(*b_shape, dtype=T.float64), left=False)
    X = T.linalg.solve(A, T.ones(*a_shape[:-2], 4, 3, dtype=T.float64), left=False)  # (a matrix B: X A = B)
    np.testing.assert_allclose((X @ A).numpy(), np.ones(a_shape[:-2] + (4, 3)), atol=1e-12)


def test_vmap_of_jacfwd_through_det_and_slogdet():
    """vmap over jacfwd of det and slogdet: the Jacobian of each matrix of the batch, as a loop gives it (and the
    cofactors d · A⁻ᵀ in closed form). PyTorch 2.13's own answer is wrong past the first matrix of the batch
    (vmap of its det's forward-mode rule), so the reference here is the loop and NumPy."""
    import autograd as T

    rng = np.random.default_rng(18)
    A = rng.standard_normal((4, 3, 3))
    S = T.tensor(A @ np.swapaxes(A, -1, -2) + 3 * np.eye(3))
    batched = T.func.vmap(T.func.jacfwd(T.linalg.det))(S)
    looped = T.stack([T.func.jacfwd(T.linalg.det)(s) for s in S])
    expected = np.linalg.det(S.numpy())[:, None, None] * np.linalg.inv(np.swapaxes(S.numpy(), -1, -2))
    np.testing.assert_allclose(batched.numpy(), looped.numpy(), rtol=1e-12)
    np.testing.assert_allclose(batched.numpy(), expected, rtol=1e-10)
    logdet = T.func.vmap(T.func.jacfwd(lambda x: T.linalg.slogdet(x)[1]))(S)
    np.testing.assert_allclose(logdet.numpy(), np.linalg.inv(np.swapaxes(S.numpy(), -1, -2)), rtol=1e-10)
    hessian = T.func.vmap(T.func.hessian(T.logdet))(S)
    looped = T.stack([T.func.hessian(T.logdet)(s) for s in S])
    np.testing.assert_allclose(hessian.numpy(), looped.numpy(), rtol=1e-10, atol=1e-12)


def test_geqrf_of_a_tensor_that_requires_grad_runs_and_refuses_only_its_backward(T):
    """PyTorch computes geqrf of a parameter (a graph node, GeqrfBackward0) and raises only when a backward pass
    reaches it; chainrule refused the call itself, so a program using the factors' values (an orthogonal
    initialisation, a log) stopped."""
    W = T.tensor(np.random.default_rng(3).standard_normal((5, 3)), requires_grad=True)
    a, tau = T.geqrf(W)
    assert a.requires_grad and tau.requires_grad and type(a.grad_fn).__name__ != "NoneType"
    Q = T.linalg.householder_product(a, tau)
    np.testing.assert_allclose((Q.mT @ Q).detach().numpy(), np.eye(3), atol=1e-12)
    with pytest.raises(NotImplementedError, match="the derivative for 'geqrf' is not implemented."):
        Q.sum().backward()
    with T.no_grad():
        assert not T.geqrf(W)[0].requires_grad


def _expm_by_eigh(A):
    """e^A of symmetric matrices by their eigendecomposition, in double: the reference."""
    w, V = np.linalg.eigh(A)
    return V @ (np.exp(w)[..., :, None] * np.swapaxes(V, -1, -2))


def test_matrix_exp_in_single_precision_is_accurate_to_its_rounding(T):
    """float32 e^A within a few ulps of the exact one, as PyTorch's (chainrule summed and squared in float32: each
    squaring doubled the rounding error, 1e-5 relative at a norm of 20)."""
    rng = np.random.default_rng(19)
    x = rng.standard_normal((4, 6, 6))
    A = (x + np.swapaxes(x, -1, -2)) * np.array([0.1, 1.0, 3.0, 5.0])[:, None, None]
    A32 = A.astype(np.float32)
    expected = _expm_by_eigh(A32.astype(np.float64))
    got = T.linalg.matrix_exp(T.tensor(A32)).numpy()
    assert got.dtype == np.float32
    error = np.abs(got - expected).max((-2, -1)) / np.abs(expected).max((-2, -1))
    assert (error < 1e-6).all(), error


def test_matrix_exp_scales_each_matrix_of_a_batch_for_itself(T):
    """A small matrix beside a big one keeps double precision's accuracy (chainrule squared every matrix as often
    as the batch's largest needed: 4e-14 relative error for the small one)."""
    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 5, 5))
    A = (x + np.swapaxes(x, -1, -2)) * np.array([1e-3, 20.0])[:, None, None]
    got = T.linalg.matrix_exp(T.tensor(A)).numpy()
    error = np.abs(got - _expm_by_eigh(A)).max((-2, -1)) / np.abs(_expm_by_eigh(A)).max((-2, -1))
    assert error[0] < 4e-15 and error[1] < 1e-13, error  # (the eigh reference is itself a unit or so off)


@pytest.mark.parametrize("uplo", ["u", "l"])
def test_eigh_takes_uplo_in_either_case(T, uplo):
    """PyTorch reads UPLO's letter in either case (chainrule refused 'u' and 'l')."""
    A = T.tensor([[2.0, 10.0], [1.0, 2.0]], dtype=T.float64)  # the triangles disagree: which one is read shows
    off = 10.0 if uplo == "u" else 1.0
    np.testing.assert_allclose(T.linalg.eigvalsh(A, UPLO=uplo).numpy(), [2 - off, 2 + off])
    np.testing.assert_allclose(T.linalg.eigh(A, uplo).eigenvalues.numpy(), [2 - off, 2 + off])
    with pytest.raises(RuntimeError, match="Expected UPLO argument to be 'L' or 'U', but got Lower"):
        T.linalg.eigh(A, UPLO="Lower")


@pytest.mark.parametrize("call, message", [
    (lambda T, A, o: T.linalg.vector_norm(A, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.norm(A, dim=1, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.svdvals(A, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.matrix_norm(A, "nuc", out=o),
     "linalg.matrix_norm expected out tensor dtype Double but got: Float"),
    (lambda T, A, o: T.linalg.norm(A, out=o), "linalg.norm expected out tensor dtype Double but got: Float"),
    (lambda T, A, o: T.linalg.norm(A.to(T.complex128), 2, out=o),
     "linalg.norm expected out tensor dtype Double but got: Float"),
    (lambda T, A, o: T.linalg.solve(A, A[0], out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.solve_ex(A, A, out=(o, T.empty(0, dtype=T.int32))),
     "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.cross(A, A, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.cross(A, A, dim=0, out=o), "Expected out tensor to have dtype double, but got float instead"),
    (lambda T, A, o: T.linalg.ldl_solve(*T.linalg.ldl_factor(A), A, out=o),
     "Expected out tensor to have dtype double, but got float instead"),
])
def test_linalg_out_of_another_dtype_is_refused(T, call, message):
    """PyTorch's norms, solves and cross products write into an out= of their result's dtype only (chainrule cast
    the double result into a float32 out, silently losing its precision)."""
    A = T.eye(3, dtype=T.float64) * 2
    with pytest.raises(RuntimeError, match=message):
        call(T, A, T.empty(0, dtype=T.float32))
    result = call(T, A, T.empty(0, dtype=T.float64))  # (the result's own dtype is written into)
    assert (result[0] if isinstance(result, tuple) else result).dtype == T.float64


@pytest.mark.parametrize("tensors, out_dtype, message", [
    (lambda T, a: [a, a.float()], None, "all tensors must have be the same dtype but tensor 0 is double and tensor 1 "
                                        "float"),
    (lambda T, a: [a, T.ones(4, 3, dtype=a.dtype)], None, r"tensors 0 and 1 with shapes \[3, 3\] and \[4, 3\] cannot "
                                                          "be multiplied"),
    (lambda T, a: [T.ones(3, dtype=a.dtype), a, T.ones(4, dtype=a.dtype)], None,
     r"tensors 1 and 2 with shapes \[3, 3\] and \[4\] cannot be multiplied"),
    (lambda T, a: [a, a], "float32", "expected out tensor to have dtype double but got float"),
])
def test_multi_dot_errors_are_pytorchs(T, tensors, out_dtype, message):
    a = T.eye(3, dtype=T.float64)
    out = None if out_dtype is None else T.empty(0, dtype=getattr(T, out_dtype))
    with pytest.raises(RuntimeError, match=f"multi_dot\\(\\): {message}"):
        T.linalg.multi_dot(tensors(T, a), out=out)


def test_cholesky_solve_of_a_singular_factor_gives_inf_not_an_error(T):
    """potrs divides by the factor's diagonal without checking it: a zero there gives inf / NaN in the solution, as
    PyTorch's (chainrule raised linalg.solve's LinAlgError); cholesky_inverse's potri refuses it, naming the
    diagonal element (PyTorch's words, not linalg.inv's)."""
    L = T.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 3.0]], dtype=T.float64)
    X = T.cholesky_solve(T.ones(3, 1, dtype=T.float64), L)
    assert not X.isfinite().all() and X.isinf().any()
    with pytest.raises(T.linalg.LinAlgError, match=r"cholesky_inverse: \(Batch element 1\): The diagonal element 2 "
                                                   r"is zero, the inversion could not be completed because the "
                                                   r"input matrix is singular."):
        T.cholesky_inverse(T.stack([T.eye(3, dtype=T.float64), L]))


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_inverse_gradient_is_pytorchs_for_any_factor(T, upper):
    """cholesky_inverse reads the factor's triangle; its gradient is PyTorch's formula of the factor as given,
    -Y (G + Gᴴ) Y L (chainrule's passed through the triangle as if it were the whole factor)."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 3))
    L = np.linalg.cholesky(x @ x.T + 3 * np.eye(3)) + np.triu(rng.standard_normal((3, 3)), 1)  # junk across
    F = L.T.copy() if upper else L
    factor = T.tensor(F, requires_grad=True)
    Y = T.cholesky_inverse(factor, upper=upper)
    lower = np.tril(L)
    expected = np.linalg.inv(lower @ lower.T)
    np.testing.assert_allclose(Y.detach().numpy(), expected, rtol=1e-12)
    G = np.arange(9.0).reshape(3, 3)
    (gF,) = T.autograd.grad((Y * T.tensor(G)).sum(), factor)
    common = expected @ (G + G.T) @ expected
    np.testing.assert_allclose(gF.numpy(), -(F @ common) if upper else -(common @ F), rtol=1e-10)


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_gradient_is_pytorchs_for_any_factor(T, upper):
    """The gradient with respect to the factor is PyTorch's formula of the factor as given, -(C + Cᴴ) L, whatever
    lies across its triangle (which the value does not read); and it differentiates again."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal((3, 3))
    L = np.linalg.cholesky(x @ x.T + 3 * np.eye(3)) + np.triu(rng.standard_normal((3, 3)), 1)  # junk across
    F = L.T.copy() if upper else L
    factor = T.tensor(F, requires_grad=True)
    b = T.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    X = T.cholesky_solve(b, factor, upper=upper)
    lower = np.tril(L)
    np.testing.assert_allclose(X.detach().numpy(), np.linalg.solve(lower @ lower.T, b.detach().numpy()), rtol=1e-12)
    gF, gb = T.autograd.grad(X.sum(), (factor, b), create_graph=True)
    expected_gb = np.linalg.solve(lower @ lower.T, np.ones((3, 2)))
    common = expected_gb @ X.detach().numpy().T
    common = common + common.T
    np.testing.assert_allclose(gb.detach().numpy(), expected_gb, rtol=1e-12)
    np.testing.assert_allclose(gF.detach().numpy(), -(F @ common) if upper else -(common @ F), rtol=1e-10)
    (h,) = T.autograd.grad(gF.sum(), b)
    assert np.isfinite(h.numpy()).all()
