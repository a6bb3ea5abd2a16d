# ruff: noqa: E501, E702, F841  (the programs are kept as their authors wrote them)
"""Robotics and Lie-group programs as PyTorch users write them, run as tests/probe23_lie_common.py says. The
linear-algebra toolbox these programs use (``lu_solve``, ``solve_ex``/``inv_ex``, ``slogdet``,
``householder_product`` of ``geqrf``) and the errors and dtypes PyTorch gives: the error classes of bad shapes,
integer inputs and singular or non-positive-definite matrices, result dtypes (integer ``acos``/``atan2``/``cross``),
svd's and eigh's backward refusals, the linalg methods and their old names, and mixed float32/float64 operands across
the linear-algebra functions."""

import warnings

import numpy as np

from .pytorch_programs import run_both


def linalg_misc(m):
    torch = m.torch
    torch.manual_seed(10)
    out = {}
    A = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    B = torch.randn(4, 3, 2, dtype=torch.float64)
    LU, piv = torch.linalg.lu_factor(A)
    x = torch.linalg.lu_solve(LU, piv, B)
    x.sum().backward(); out["x"] = x; out["gA"] = A.grad
    M = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    Q, R = torch.linalg.qr(M)
    (Q.sum() + R.diagonal().abs().sum()).backward(); out["Q"] = Q; out["gqr"] = M.grad
    # solve_ex / inv_ex
    S = torch.randn(2, 4, 4, dtype=torch.float64)
    s, info = torch.linalg.solve_ex(S, torch.ones(2, 4, dtype=torch.float64)); out["s"] = s; out["info"] = info
    iv, info2 = torch.linalg.inv_ex(S); out["iv"] = iv
    out["mp"] = torch.linalg.matrix_power(S[0], 3)
    out["md"] = torch.linalg.multi_dot([S[0], S[1], S[0]])
    out["kron"] = torch.kron(torch.eye(2, dtype=torch.float64), S[0][:2, :2])
    out["bd"] = torch.block_diag(S[0][:2, :2], torch.ones(1, 3, dtype=torch.float64))
    out["vecdot"] = torch.linalg.vecdot(S[0], S[1])
    C = S[0] @ S[0].T + torch.eye(4, dtype=torch.float64)
    Lc = torch.linalg.cholesky(C)
    out["cs"] = torch.cholesky_solve(torch.ones(4, 1, dtype=torch.float64), Lc)
    out["norms"] = torch.stack([torch.linalg.norm(S[0]), torch.linalg.norm(S[0], 'nuc'), torch.linalg.norm(S[0], 2), torch.linalg.norm(S[0], -2), torch.linalg.norm(S[0], float('inf')), torch.linalg.norm(S[0], 1)])
    out["cond"] = torch.linalg.cond(S[0])
    out["rank"] = torch.linalg.matrix_rank(S[0][:, :2] @ S[0][:2, :])
    sl = torch.linalg.slogdet(S)
    out["sign"] = sl.sign; out["logabs"] = sl.logabsdet
    out["ba"] = torch.baddbmm(torch.ones(2, 4, 4, dtype=torch.float64), S, S, beta=0.5, alpha=2.0)
    out["addmm"] = torch.addmm(torch.ones(4, dtype=torch.float64), S[0], S[1])
    hh = torch.linalg.householder_product(*torch.geqrf(S[0]))
    out["hh"] = hh
    out["eigvals"] = torch.linalg.eigvalsh(C)
    Dg = torch.randn(3, dtype=torch.float64, requires_grad=True)
    torch.trace(torch.diag_embed(Dg) @ torch.diag(Dg)).backward(); out["gtrace"] = Dg.grad
    return out


def errors(m):
    torch = m.torch
    out = {}
    def err(f):
        try:
            f()
            return "no error"
        except Exception as e:
            return type(e).__name__.lstrip("_")  # (PyTorch's LinAlgError is torch._C._LinAlgError)
    a = torch.randn(4, 3); b = torch.randn(4, 2)
    out["cross_bad"] = err(lambda: torch.linalg.cross(a, b))
    out["cross_dim"] = err(lambda: torch.linalg.cross(torch.randn(3, 4), torch.randn(3, 4)))
    out["cross_dim0"] = err(lambda: torch.linalg.cross(torch.randn(3, 4), torch.randn(3, 4), dim=0))
    out["cross_int"] = err(lambda: torch.linalg.cross(torch.randn(3), torch.tensor([1, 2, 3])))
    out["det_nonsq"] = err(lambda: torch.linalg.det(torch.randn(3, 4)))
    out["det_int"] = err(lambda: torch.linalg.det(torch.eye(3, dtype=torch.int64)))
    out["solve_sing"] = err(lambda: torch.linalg.solve(torch.zeros(3, 3), torch.ones(3)))
    out["svd_int"] = err(lambda: torch.linalg.svd(torch.ones(3, 3, dtype=torch.int64)))
    out["eigh_nonsq"] = err(lambda: torch.linalg.eigh(torch.randn(3, 2)))
    out["bmm_bad"] = err(lambda: torch.bmm(torch.randn(2, 3, 3), torch.randn(3, 3)))
    out["inv_sing"] = err(lambda: torch.linalg.inv(torch.zeros(2, 2)))
    out["chol_npd"] = err(lambda: torch.linalg.cholesky(-torch.eye(2)))
    out["matmul_dtype"] = err(lambda: torch.randn(3, 3) @ torch.randn(3, 3, dtype=torch.float64))
    out["acos_int"] = str(torch.acos(torch.tensor([1, 0])).dtype).replace("torch.", "")
    out["atan2_int"] = str(torch.atan2(torch.tensor([1, 0]), torch.tensor([1, 1])).dtype).replace("torch.", "")
    out["cross_int_dtype"] = str(torch.linalg.cross(torch.tensor([1, 0, 0]), torch.tensor([0, 1, 0])).dtype).replace("torch.", "")
    out["cross_int_val"] = torch.linalg.cross(torch.tensor([1, 0, 0]), torch.tensor([0, 1, 0]))
    out["det_promote"] = str(torch.linalg.det(torch.eye(3, dtype=torch.float64)).dtype).replace("torch.", "")
    out["cross_mixed"] = err(lambda: torch.linalg.cross(torch.randn(3), torch.randn(3, dtype=torch.float64)))
    out["lstsq_underdet"] = torch.linalg.lstsq(torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 1.0]]), torch.tensor([[1.0], [2.0]])).solution
    return out


def svd_errors(m):
    torch = m.torch
    out = {}
    def err(f):
        try:
            f(); return "no error"
        except Exception as e:
            return type(e).__name__ + ":" + str(e)[:40]
    A = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    def f1():
        U, S, Vh = torch.linalg.svd(A, full_matrices=True)
        U.sum().backward()
    out["svd_full_U"] = err(f1)
    B = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    def f2():
        L, V = torch.linalg.eigh(B, UPLO="U")
        V.pow(2).sum().backward()
    out["eighU"] = err(f2); out["gB"] = B.grad
    return out


def linalg_method_sweep(m):
    torch, F = m.torch, m.F
    torch.manual_seed(24)
    A = torch.randn(3, 3, dtype=torch.float64) + 2 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(3, 2, dtype=torch.float64)
    calls = {
        "det": lambda: A.det(), "slogdet": lambda: A.slogdet(), "pinverse": lambda: A.pinverse(), "svd": lambda: A.svd()[1],
        "lu": lambda: A.lu()[0], "triangular_solve": lambda: torch.triangular_solve(b, A.triu()).solution,
        "qr": lambda: torch.qr(A)[1].abs(), "ger": lambda: torch.ger(b[:, 0], b[:, 1]), "outer": lambda: torch.outer(b[:, 0], b[:, 1]),
        "chain_matmul": lambda: torch.chain_matmul(A, A, b), "addcmul": lambda: A.addcmul(A, A, value=0.5),
        "addbmm": lambda: torch.addbmm(A, A[None].expand(2, 3, 3), A[None].expand(2, 3, 3)),
        "mexp_m": lambda: A.matrix_exp(), "logdet": lambda: (A @ A.T).logdet(), "mexp11": lambda: torch.linalg.matrix_exp(A[:1, :1]),
        "cos0": lambda: F.cosine_similarity(torch.zeros(2, 3, dtype=torch.float64), A[:2]),
        "inverse_m": lambda: A.inverse(), "cholesky_inverse": lambda: torch.cholesky_inverse(torch.linalg.cholesky(A @ A.T)),
        "lu_unpack": lambda: torch.lu_unpack(*torch.linalg.lu_factor(A))[1], "linalg_lu": lambda: torch.linalg.lu(A)[2],
        "matrix_power_m": lambda: A.matrix_power(2), "trace_m": lambda: A.trace(), "diag_m": lambda: A.diagonal(1),
        "tril_idx": lambda: torch.tril_indices(3, 3, -1), "kron": lambda: A.kron(b), "cross_m": lambda: A.cross(A.flip(0)),
        "solve_tri_left": lambda: torch.linalg.solve_triangular(A.tril(), b.T, upper=False, left=False),
        "eigvals": lambda: torch.sort(torch.linalg.eigvals(A).real).values, "vander": lambda: torch.linalg.vander(b[:, 0], N=3),
        "cov": lambda: torch.cov(A), "corrcoef": lambda: torch.corrcoef(A), "atan2_": lambda: A.clone().atan2_(A.T),
        "hypot": lambda: torch.hypot(A, A.T), "logaddexp": lambda: torch.logaddexp(A, A.T), "frexp": lambda: torch.frexp(A)[0],
        # (A against 2A: a distance of a row to itself by the mm path is the square root of a cancellation, 0 or
        # 3e-8 as the processor's BLAS orders the sums)
        "cdist_mm": lambda: torch.cdist(A, 2 * A, compute_mode="use_mm_for_euclid_dist"),
        "rot90": lambda: torch.rot90(A, 1, [0, 1]), "nuc": lambda: torch.norm(A, p="nuc"), "matrix_norm2": lambda: torch.linalg.matrix_norm(A, ord=-2),
        "svd_lowrank": lambda: torch.svd_lowrank(A, q=3)[1] if hasattr(torch, "svd_lowrank") else "x",
        "pca_lowrank": lambda: torch.pca_lowrank(A, q=3, center=False)[1],
        "diag_embed_off": lambda: torch.diag_embed(b.T, offset=1), "block_diag": lambda: torch.block_diag(A[:1], b),
        "cartesian": lambda: torch.cartesian_prod(b[:, 0], b[:, 1]), "combinations": lambda: torch.combinations(b[:, 0], r=2),
        "householder": lambda: torch.linalg.householder_product(A, torch.tensor([1.2, 0.5], dtype=torch.float64)),
        "ldl": lambda: torch.linalg.ldl_factor(A @ A.T)[0], "matrix_exp_big": lambda: torch.linalg.matrix_exp(10 * A),
        "inv_ex": lambda: torch.linalg.inv_ex(A)[0], "solve_int": lambda: torch.linalg.solve(torch.eye(3), torch.tensor([1, 2, 3])),
    }
    out = {}
    for k, f in calls.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out[k] = f()
            except Exception as e:
                out[k] = "ERR " + type(e).__name__ + " " + str(e)[:80]
    return out


def mixed_dtypes(m):
    torch, F = m.torch, m.F
    A32 = torch.eye(3) * 2; A64 = torch.eye(3, dtype=torch.float64) * 2
    v32 = torch.ones(3); v64 = torch.ones(3, dtype=torch.float64)
    s64 = torch.tensor(2.0, dtype=torch.float64)
    calls = {
        "solve": lambda: torch.linalg.solve(A32, v64), "solve2": lambda: torch.linalg.solve(A64, v32),
        "lstsq": lambda: torch.linalg.lstsq(A32, v64[:, None]).solution, "cross": lambda: torch.linalg.cross(v32, v64),
        "cross_old": lambda: torch.cross(v32, v64, dim=0), "bmm": lambda: torch.bmm(A32[None], A64[None]), "mm": lambda: A32.mm(A64),
        "mv": lambda: A32.mv(v64), "dot": lambda: v32.dot(v64), "einsum": lambda: torch.einsum("ij,j->i", A32, v64),
        "matmul_scalar64": lambda: (A32 * s64).dtype, "atan2": lambda: torch.atan2(v32, v64).dtype, "where": lambda: torch.where(v32 > 0, v32, v64).dtype,
        "cat": lambda: torch.cat([v32, v64]).dtype, "stack": lambda: torch.stack([v32, v64]).dtype, "tensordot": lambda: torch.tensordot(A32, A64, 1),
        "cdist": lambda: torch.cdist(A32, A64), "vecdot": lambda: torch.linalg.vecdot(v32, v64), "inner": lambda: torch.inner(v32, v64),
        "outer": lambda: torch.outer(v32, v64).dtype, "kron": lambda: torch.kron(A32, A64).dtype, "addmm": lambda: torch.addmm(A32, A32, A64),
        "solve_tri": lambda: torch.linalg.solve_triangular(A32, A64, upper=True), "chol_solve": lambda: torch.cholesky_solve(A64, A32),
        "lu_solve": lambda: torch.linalg.lu_solve(*torch.linalg.lu_factor(A32), A64), "index_add": lambda: torch.zeros(3).index_add_(0, torch.tensor([0]), v64[:1]),
        "copy": lambda: A32.clone().copy_(A64).dtype, "setitem": lambda: (lambda T: (T.__setitem__((0, slice(None)), v64), T.dtype))(A32.clone())[1],
        "bmm_int": lambda: torch.bmm(torch.ones(1, 2, 2, dtype=torch.int64), torch.ones(1, 2, 2, dtype=torch.int64)),
        "matmul_int_float": lambda: torch.ones(2, 2, dtype=torch.int64) @ torch.ones(2, 2),
        "baddbmm": lambda: torch.baddbmm(A64[None], A32[None], A32[None]),
    }
    out = {}
    for k, f in calls.items():
        try:
            r = f()
            out[k] = str(r).replace("torch.", "") if not hasattr(r, "detach") else (str(r.dtype).replace("torch.", ""), r.detach())
        except Exception as e:
            out[k] = "ERR " + type(e).__name__.lstrip("_")
    return out


def test_linalg_toolbox():
    o, _ = run_both(linalg_misc, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(o["Q"].T @ o["Q"], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(o["hh"].T @ o["hh"], np.eye(4), atol=1e-12)
    assert o["rank"] == 2 and o["info"].sum() == 0
    fro, nuc, two, minus_two, inf, one = o["norms"]
    assert minus_two < two <= fro <= nuc
    np.testing.assert_allclose(o["cond"], two / minus_two, rtol=1e-10)
    np.testing.assert_allclose(o["logabs"], np.log(np.abs(np.linalg.det(np.asarray(o["iv"])))) * -1, rtol=1e-10)


def test_errors_and_dtypes():
    o, _ = run_both(errors, rtol=1e-5, atol=1e-5)
    for key in ("cross_bad", "cross_dim", "det_nonsq", "det_int", "solve_sing", "svd_int", "eigh_nonsq", "bmm_bad",
                "inv_sing", "chol_npd", "matmul_dtype"):
        assert o[key] != "no error", key
    assert o["solve_sing"] == "LinAlgError" and o["cross_dim0"] == "no error"
    assert o["acos_int"] == o["atan2_int"] == "float32" and o["cross_int_dtype"] == "int64"
    np.testing.assert_array_equal(o["cross_int_val"], [0, 0, 1])


def test_svd_and_eigh_backward_refusals():
    o, _ = run_both(svd_errors, rtol=1e-9, atol=1e-11)
    assert o["svd_full_U"] == "no error"  # (PyTorch differentiates U's first k columns of a full SVD)
    assert o["eighU"] == "no error"


def test_linalg_methods_and_old_names():
    o, _ = run_both(linalg_method_sweep, rtol=1e-8, atol=1e-10)
    errors = {k for k, v in o.items() if isinstance(v, str) and v.startswith("ERR")}
    assert errors == {"solve_int"}, errors  # (linalg.solve refuses float A with int64 B, as PyTorch's)
    np.testing.assert_allclose(o["det"], np.linalg.det(o["inverse_m"]) ** -1, rtol=1e-12)
    np.testing.assert_allclose(o["pinverse"], o["inverse_m"], rtol=1e-10)


def test_mixed_dtypes_in_linear_algebra():
    o, _ = run_both(mixed_dtypes, rtol=1e-6, atol=1e-6)
    refused = {"solve", "solve2", "lstsq", "cross", "cross_old", "bmm", "mm", "mv", "dot", "einsum", "tensordot", "cdist",
               "vecdot", "inner", "addmm", "chol_solve", "lu_solve", "index_add", "matmul_int_float", "baddbmm"}
    for key, value in o.items():
        assert (isinstance(value, str) and value.startswith("ERR RuntimeError")) == (key in refused) or \
            (key in refused and value == "ERR ShapeError"), key
    assert o["matmul_scalar64"] == "float32" and o["atan2"] == o["cat"] == o["stack"] == o["outer"] == "float64"
    assert o["copy"] == o["setitem"] == "float32" and o["solve_tri"][0] == "float32" and o["bmm_int"][0] == "int64"
