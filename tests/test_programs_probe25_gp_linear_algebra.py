# ruff: noqa: E501, E702, F841  (the programs are kept as their authors write them)
"""Gaussian processes and Bayesian optimisation as GPyTorch/BoTorch-style and hand-written PyTorch programs do them
(see tests/pytorch_programs.py), in float64 mostly, each run on chainrule and on PyTorch from the same seeds,
comparing values, gradients, dtypes and errors, and checked against NumPy by hand or invariants where PyTorch is not
installed. The linear algebra under a GP: jitter retries by cholesky_ex and its info (batched, float32,
check_errors), and in-place jitter, ``out=`` and batched kernels; gradients through cdist (p = 0, ½, 1, 2, 3, ∞, the
matrix-product path, zero distances), slogdet, logdet, eigh, solve_triangular (left=False, unitriangular),
cholesky_solve and cholesky_inverse, twice where a Hessian needs it, and at their edges; the errors of non-PD,
singular, integer and misshapen inputs."""

import math

import numpy as np

from .pytorch_programs import run_both


def jitter(m):
    torch = m.torch
    torch.manual_seed(1)
    X = torch.rand(6, 1, dtype=torch.float64)
    X = torch.cat([X, X[:2]])  # duplicate rows: singular
    K = torch.exp(-0.5 * torch.cdist(X, X).pow(2) / 0.3**2)
    out = {}
    L, info = torch.linalg.cholesky_ex(K)
    out['info0'] = info
    out['info0_dt'] = str(info.dtype).replace('torch.', '')
    jit = 1e-8
    tries = 0
    while True:
        L, info = torch.linalg.cholesky_ex(K + jit * torch.eye(8, dtype=K.dtype))
        tries += 1
        if not torch.any(info):
            break
        jit *= 10
    out['tries'] = tries; out['L'] = L
    # batched info
    Kb = torch.stack([K, torch.eye(8, dtype=K.dtype), -torch.eye(8, dtype=K.dtype)])
    Lb, infob = torch.linalg.cholesky_ex(Kb)
    out['infob'] = infob
    try:
        torch.linalg.cholesky(Kb)
    except Exception as e:
        out['err'] = str(e)
    try:
        torch.linalg.cholesky_ex(Kb, check_errors=True)
    except Exception as e:
        out['err2'] = str(e)
    # nan input
    try:
        torch.linalg.cholesky(torch.full((3, 3), float('nan'), dtype=torch.float64))
    except Exception as e:
        out['errnan'] = str(e)
    # float32 info
    L32, info32 = torch.linalg.cholesky_ex(K.float())
    out['info32'] = info32
    # upper
    U, i2 = torch.linalg.cholesky_ex(K + 1e-4 * torch.eye(8, dtype=K.dtype), upper=True)
    out['U'] = U
    # gradient through cholesky_ex
    A = (K + 1e-3 * torch.eye(8, dtype=K.dtype)).requires_grad_()
    L, info = torch.linalg.cholesky_ex(A)
    (L.diagonal().log().sum() * 2 + L.sum()).backward()
    out['gA'] = A.grad
    return out

def kernel_grads(m):
    torch = m.torch
    torch.manual_seed(2)
    X = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    Z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = {}
    for p in [1.0, 2.0, 3.0, float('inf'), 0.5]:
        d = torch.cdist(X, Z, p=p)
        gX, gZ = torch.autograd.grad((d * torch.arange(4.0, dtype=torch.float64)).sum(), [X, Z])
        out[f'd{p}'] = d; out[f'gx{p}'] = gX; out[f'gz{p}'] = gZ
    # self distance: zero diagonal gradient should be 0 not nan
    d = torch.cdist(X, X)
    g, = torch.autograd.grad(torch.exp(-d).sum(), X)
    out['self'] = g
    d2 = torch.cdist(X, X, compute_mode='use_mm_for_euclid_dist')
    out['mm'] = d2[~torch.eye(7, dtype=torch.bool)]
    g, = torch.autograd.grad(torch.exp(-d2).sum(), X)
    out['selfmm'] = g
    # batched cdist
    Xb = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    db = torch.cdist(Xb, Xb[:1].detach())
    g, = torch.autograd.grad(db.sum(), Xb)
    out['gb'] = g
    # slogdet, logdet grads
    A = torch.randn(5, 5, dtype=torch.float64)
    A = (A @ A.T + 5 * torch.eye(5, dtype=torch.float64)).requires_grad_()
    s, ld = torch.linalg.slogdet(A)
    g1, = torch.autograd.grad(ld, A)
    out['sl'] = (s, ld, g1)
    g2, = torch.autograd.grad(torch.logdet(A), A)
    out['ld'] = g2
    # eigh grads
    w, V = torch.linalg.eigh(A)
    g3, = torch.autograd.grad(w.log().sum() + (V[:, 0] ** 4).sum(), A)
    out['eigh'] = (w, g3)
    # solve_triangular grads both args, left=False
    L = torch.linalg.cholesky(A.detach()).requires_grad_()
    B = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    x = torch.linalg.solve_triangular(L, B, upper=False)
    x2 = torch.linalg.solve_triangular(L.mT, B.mT, upper=True, left=False)
    x3 = torch.linalg.solve_triangular(L, B, upper=False, unitriangular=True)
    gL, gB = torch.autograd.grad((x ** 2).sum() + x2.sum() + x3.pow(3).sum(), [L, B])
    out['st'] = (x, x2, x3, gL, gB)
    # cholesky_solve grads, upper
    C = torch.linalg.cholesky(A.detach(), upper=True).requires_grad_()
    y = torch.cholesky_solve(B, C, upper=True)
    gC, gB = torch.autograd.grad(y.sin().sum(), [C, B])
    out['cs'] = (y, gC, gB)
    # cholesky_inverse
    Li = torch.linalg.cholesky(A.detach()).requires_grad_()
    Ai = torch.cholesky_inverse(Li)
    g, = torch.autograd.grad(Ai.trace(), Li)
    out['ci'] = (Ai, g)
    return out


def catch(f):
    try:
        r = f()
        return ('ok', r)
    except Exception as e:
        return (type(e).__name__.lstrip('_'), str(e).replace('torch.', '')[:200])  # (_LinAlgError; torch.Size)

def errors(m):
    torch = m.torch
    t = torch
    out = {}
    A = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)
    Ab = torch.stack([torch.eye(2, dtype=torch.float64), A, A])
    out['b'] = catch(lambda: torch.linalg.cholesky(Ab))
    out['b32'] = catch(lambda: torch.linalg.cholesky(Ab.float()))
    out['old'] = catch(lambda: torch.cholesky(torch.eye(2) * 2))
    out['oldu'] = catch(lambda: torch.cholesky(torch.eye(2) * 2, upper=True))
    out['ts'] = catch(lambda: tuple(torch.triangular_solve(torch.ones(2, 1), torch.eye(2) * 2, upper=False)))
    out['mixed_st'] = catch(lambda: torch.linalg.solve_triangular(torch.eye(2), torch.ones(2, 1, dtype=torch.float64), upper=False))
    out['mixed_cs'] = catch(lambda: torch.cholesky_solve(torch.ones(2, 1, dtype=torch.float64), torch.eye(2)))
    out['mixed_cd'] = catch(lambda: torch.cdist(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.float64)))
    out['cd_shape'] = catch(lambda: torch.cdist(torch.ones(2, 3), torch.ones(2, 4)))
    out['cd_1d'] = catch(lambda: torch.cdist(torch.ones(3), torch.ones(3)))
    out['cd_neg'] = catch(lambda: torch.cdist(torch.ones(2, 3), torch.ones(2, 3), p=-1))
    out['cd_int'] = catch(lambda: torch.cdist(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long)))
    out['chol_int'] = catch(lambda: torch.linalg.cholesky(torch.eye(2, dtype=torch.long)))
    out['chol_rect'] = catch(lambda: torch.linalg.cholesky(torch.ones(2, 3)))
    out['st_1d'] = catch(lambda: torch.linalg.solve_triangular(torch.eye(2), torch.ones(2), upper=False))
    out['st_noupper'] = catch(lambda: torch.linalg.solve_triangular(torch.eye(2), torch.ones(2, 1)))[0]  # (Python's words)
    out['st_bcast'] = catch(lambda: torch.linalg.solve_triangular(torch.eye(2).expand(3, 2, 2) * 2, torch.ones(4, 1, 2, 1), upper=False).shape)
    out['st_sing'] = catch(lambda: torch.linalg.solve_triangular(torch.zeros(2, 2), torch.ones(2, 1), upper=False))
    out['cs_bcast'] = catch(lambda: torch.cholesky_solve(torch.ones(4, 1, 2, 1), torch.eye(2).expand(3, 2, 2) * 2).shape)
    out['cs_1d'] = catch(lambda: torch.cholesky_solve(torch.ones(2), torch.eye(2)))
    out['eigh_int'] = catch(lambda: torch.linalg.eigh(torch.eye(2, dtype=torch.long)))
    out['eigh_rect'] = catch(lambda: torch.linalg.eigh(torch.ones(2, 3)))
    out['eigh_uplo'] = catch(lambda: torch.linalg.eigh(torch.tensor([[1.0, 5.0], [0.0, 1.0]]), UPLO='U')[0])
    out['eigh_badup'] = catch(lambda: torch.linalg.eigh(torch.eye(2), UPLO='X'))
    out['slog_sing'] = catch(lambda: tuple(torch.linalg.slogdet(torch.zeros(2, 2))))
    out['logdet_neg'] = catch(lambda: torch.logdet(-torch.eye(3)))
    out['logdet_sing'] = catch(lambda: torch.logdet(torch.zeros(2, 2)))
    out['kron_dt'] = catch(lambda: str(torch.kron(torch.ones(2, dtype=torch.long), torch.ones(2)).dtype).split('.')[-1])
    out['chex_dt'] = catch(lambda: [str(x.dtype).split('.')[-1] for x in torch.linalg.cholesky_ex(torch.eye(2, dtype=torch.float64))])
    out['chex_err'] = catch(lambda: torch.linalg.cholesky_ex(-torch.eye(2), check_errors=True))
    out['inv_ex'] = catch(lambda: tuple(torch.linalg.inv_ex(torch.zeros(2, 2))[1:]))  # (its NaN/inf pattern is LAPACK's)
    out['inv_sing'] = catch(lambda: torch.linalg.inv(torch.zeros(2, 2)))
    out['solve_sing'] = catch(lambda: torch.linalg.solve(torch.zeros(3, 2, 2), torch.ones(3, 2)))
    out['mvn_bad'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]])))
    out['mvn_nosym'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])))
    out['mvn_tril_bad'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2), scale_tril=torch.tensor([[1.0, 0.5], [0.0, 1.0]])))
    out['mvn_none'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2)))
    out['mvn_two'] = catch(lambda: torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2), scale_tril=torch.eye(2)))
    out['mvn_shape'] = catch(lambda: tuple(torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(2)).event_shape))
    out['mvn_0d'] = catch(lambda: torch.distributions.MultivariateNormal(torch.tensor(0.0), torch.eye(2)).batch_shape)
    out['normal_neg'] = catch(lambda: torch.distributions.Normal(0.0, -1.0))
    out['normal_cdf_bad'] = catch(lambda: torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor([float('nan')])))
    out['normal_dt'] = catch(lambda: str(torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor(0.3, dtype=torch.float64)).dtype).split('.')[-1])
    out['normal_dt2'] = catch(lambda: str(torch.distributions.Normal(torch.tensor(0.0), 1.0).cdf(torch.tensor(0.3, dtype=torch.float64)).dtype).split('.')[-1])
    out['diag_embed'] = catch(lambda: torch.diag_embed(torch.ones(2, 3), offset=1, dim1=0, dim2=2).shape)
    out['tril_1d'] = catch(lambda: torch.tril(torch.ones(3)))
    return out


def grad_edges(m):
    torch = m.torch
    out = {}
    x = torch.tensor([-40.0, -10.0, -1.0, 0.0, 3.0, 10.0], dtype=torch.float64, requires_grad=True)
    for name, f in [('logndtr', torch.special.log_ndtr), ('ndtr', torch.special.ndtr), ('erfcx', torch.special.erfcx),
                    ('cdf', torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0).cdf),
                    ('lp', torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0).log_prob),
                    ('erfc', torch.erfc), ('logerfc', lambda t: torch.log(torch.erfc(-t / math.sqrt(2)) / 2))]:
        y = f(x)
        g, = torch.autograd.grad(y.sum(), x)
        out[name] = (y, g)
    # float32 log_ndtr
    x32 = torch.tensor([-5.0, 0.0, 5.0], requires_grad=True)  # (at -40 PyTorch's float32 gradient is 1.7e-5 off)
    y = torch.special.log_ndtr(x32)
    out['ln32'] = (y, torch.autograd.grad(y.sum(), x32)[0], str(y.dtype).split('.')[-1])
    # cdist p<1 and p=0 grads, zero distances
    X = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, -1.0]], dtype=torch.float64, requires_grad=True)
    for p in [0.0, 0.5, 1.0, 2.0, 3.0, float('inf')]:
        d = torch.cdist(X, X, p=p)
        out[f'cd{p}'] = (d, torch.autograd.grad(d.sum(), X)[0])
    # big cdist (mm path) with grad
    torch.manual_seed(0)
    A = torch.randn(30, 3, dtype=torch.float64, requires_grad=True)
    B = torch.randn(27, 3, dtype=torch.float64, requires_grad=True)
    d = torch.cdist(A, B)
    out['mm'] = (d, torch.autograd.grad((d * d.detach()).sum(), [A, B]))
    d = torch.cdist(A, A)
    out['mmself'] = torch.autograd.grad(d.exp().sum(), A)[0]
    # eigh degenerate gradient: inf / nan in PyTorch
    E = torch.eye(3, dtype=torch.float64, requires_grad=True)
    w, V = torch.linalg.eigh(E)
    out['eigh_deg_vals'] = torch.autograd.grad(w.sum(), E, retain_graph=True)[0]
    gV = torch.autograd.grad(V.sum(), E)[0]
    out['eigh_deg_vecs_finite'] = torch.isfinite(gV).all()
    # slogdet of negative det matrix
    M = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    s, l = torch.linalg.slogdet(M)
    out['slog'] = (s, l, torch.autograd.grad(l, M)[0])
    M2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    ld = torch.logdet(M2)
    out['logdet_neg'] = ld
    # cholesky backward with nonsymmetric grad usage
    P = torch.tensor([[4.0, 2.0, 0.6], [2.0, 2.0, 0.5], [0.6, 0.5, 3.0]], dtype=torch.float64, requires_grad=True)
    L = torch.linalg.cholesky(P)
    out['chol_g'] = torch.autograd.grad((L * torch.arange(9.0, dtype=torch.float64).reshape(3, 3)).sum(), P)[0]
    U = torch.linalg.cholesky(P, upper=True)
    out['chol_gu'] = torch.autograd.grad((U * torch.arange(9.0, dtype=torch.float64).reshape(3, 3)).sum(), P)[0]
    # second order through cholesky (Hessian of logdet)
    Pp = P.detach().clone().requires_grad_()
    L = torch.linalg.cholesky(Pp)
    g, = torch.autograd.grad(2 * L.diagonal().log().sum(), Pp, create_graph=True)
    out['hess'] = torch.autograd.grad(g[0, 1] + g[2, 2], Pp)[0]
    # solve_triangular double backward
    Lt = torch.linalg.cholesky(P.detach()).requires_grad_()
    b = torch.ones(3, 1, dtype=torch.float64, requires_grad=True)
    x = torch.linalg.solve_triangular(Lt, b, upper=False)
    gb, = torch.autograd.grad(x.pow(2).sum(), b, create_graph=True)
    out['st2'] = torch.autograd.grad(gb.sum(), [Lt, b])
    # cholesky_solve double backward
    b2 = b.detach().clone().requires_grad_()
    y = torch.cholesky_solve(b2, Lt)
    gb, = torch.autograd.grad((y ** 3).sum(), b2, create_graph=True)
    out['cs2'] = torch.autograd.grad(gb.sum(), [Lt, b2])
    return out


def inplace_jitter(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    X = torch.rand(6, 2, dtype=torch.float64)
    raw = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    noise = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    out = {}
    K = torch.exp(-0.5 * torch.cdist(X / F.softplus(raw), X / F.softplus(raw)) ** 2) * 1.0
    K.diagonal(dim1=-2, dim2=-1).add_(F.softplus(noise))
    K.diagonal().add_(1e-6)
    L = torch.empty(6, 6, dtype=torch.float64)
    info = torch.empty((), dtype=torch.int32)
    torch.linalg.cholesky_ex(K.detach(), out=(L, info))
    out['info_out'] = info
    L2 = torch.linalg.cholesky(K)
    Lo = torch.empty(6, 6, dtype=torch.float64)
    torch.linalg.cholesky(K.detach(), out=Lo)
    out['Lo'] = Lo
    y = torch.arange(6.0, dtype=torch.float64)[:, None]
    a = y.cholesky_solve(L2)
    sol = torch.empty(6, 1, dtype=torch.float64)
    torch.linalg.solve_triangular(L2.detach(), y, upper=False, out=sol)
    out['sol'] = sol
    loss = (y * a).sum() + 2 * L2.diagonal().log().sum()
    out['g'] = torch.autograd.grad(loss, [raw, noise])
    out['ver'] = K._version if hasattr(K, '_version') else None
    # batched kernels: (b, n, n) with batch of lengthscales
    ls = torch.tensor([[0.2], [0.5], [1.0]], dtype=torch.float64, requires_grad=True)
    Xb = X.unsqueeze(0) / ls.unsqueeze(-1)
    Kb = torch.exp(-0.5 * torch.cdist(Xb, Xb).pow(2)) + 1e-3 * torch.eye(6, dtype=torch.float64)
    Lb = torch.linalg.cholesky(Kb)
    ab = torch.cholesky_solve(y.expand(3, 6, 1), Lb)
    mll = -0.5 * (y * ab).sum((-1, -2)) - Lb.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    out['mll'] = mll
    out['gls'] = torch.autograd.grad(mll.sum(), ls)[0]
    # MVN with batch loc and shared scale_tril
    mvn = torch.distributions.MultivariateNormal(torch.zeros(3, 6, dtype=torch.float64), scale_tril=Lb[0].detach())
    out['mvn_lp'] = mvn.log_prob(torch.ones(2, 1, 6, dtype=torch.float64))
    out['mvn_bs'] = tuple(mvn.batch_shape)
    e = mvn.expand((4, 3))
    out['exp_bs'] = tuple(e.batch_shape)
    torch.manual_seed(1)
    out['rs'] = mvn.rsample(torch.Size([2]))
    return out


def test_jitter_retries_and_cholesky_ex_info():
    ours, _ = run_both(jitter)
    assert int(ours["info0"]) == 7 and ours["info0_dt"] == "int32" and ours["tries"] == 1
    assert ours["infob"].tolist() == [7, 0, 1] and int(ours["info32"]) == 7
    assert ours["err"].startswith("linalg.cholesky: (Batch element 0): The factorization could not be completed")
    assert ours["err2"].startswith("linalg.cholesky_ex: (Batch element 0)")
    assert "leading minor of order 1" in ours["errnan"]
    assert np.allclose(ours["U"], np.triu(ours["U"]))


def test_kernel_gradients():
    ours, _ = run_both(kernel_grads, rtol=1e-6, atol=1e-8)
    assert np.isfinite(ours["self"]).all()  # the zero self-distances give gradient 0, not NaN
    rng_free = ours["sl"]
    assert float(rng_free[0]) == 1.0
    # d logdet / dA = A^-T: the slogdet, logdet and eigh (sum of log eigenvalues part) gradients agree
    np.testing.assert_allclose(ours["sl"][2], ours["ld"], rtol=1e-12)
    x, x2, x3, gL, gB = ours["st"]
    assert np.isfinite(gL).all() and np.isfinite(gB).all()


def test_errors_of_gp_linear_algebra():
    ours, _ = run_both(errors)
    assert ours["b"][0] == "LinAlgError" and "(Batch element 1)" in ours["b"][1]
    assert ours["cs_1d"] == ("RuntimeError", "b should have at least 2 dimensions, but has 1 dimensions instead")
    assert ours["cd_1d"] == ("RuntimeError", "cdist only supports at least 2D tensors, X1 got: 1D")
    assert ours["cd_int"] == ("RuntimeError", "cdist only supports floating-point dtypes, X1 got: Long")
    assert ours["eigh_int"] == ("NotImplementedError", "\"linalg_eigh_cpu\" not implemented for 'Long'")
    assert ours["st_bcast"] == ("ok", (4, 3, 2, 1)) and ours["cs_bcast"] == ("ok", (4, 3, 2, 1))
    assert ours["chex_dt"] == ("ok", ["float64", "int32"])
    assert ours["chol_int"][1] == "linalg.cholesky: Expected a floating point or complex tensor as input. Got Long"
    assert ours["chol_rect"][1] == "linalg.cholesky: A must be batches of square matrices, but they are 2 by 3 matrices"
    assert ours["tril_1d"] == ("RuntimeError", "tril: input tensor must have at least 2 dimensions")


def test_gradient_edges():
    ours, _ = run_both(grad_edges, rtol=1e-6, atol=1e-8)
    from scipy.special import log_ndtr
    x = np.array([-40.0, -10.0, -1.0, 0.0, 3.0, 10.0])
    np.testing.assert_allclose(ours["logndtr"][0], log_ndtr(x), rtol=1e-12)
    np.testing.assert_allclose(ours["logndtr"][1], np.exp(-x * x / 2 - log_ndtr(x)) / math.sqrt(2 * math.pi), rtol=1e-10)
    assert np.isfinite(ours["cd2.0"][1]).all()
    np.testing.assert_allclose(ours["eigh_deg_vals"], np.eye(3), atol=1e-12)
    s, l, g = ours["slog"]
    assert float(s) == -1.0 and abs(float(l)) < 1e-15 and np.isnan(ours["logdet_neg"])
    np.testing.assert_allclose(g, [[0, 1], [1, 0]], atol=1e-15)


def test_in_place_jitter_out_and_batched_kernels():
    ours, _ = run_both(inplace_jitter, rtol=1e-6, atol=1e-8)
    assert int(ours["info_out"]) == 0 and ours["mvn_bs"] == (3,) and ours["exp_bs"] == (4, 3)
    np.testing.assert_allclose(np.tril(ours["Lo"]) @ ours["sol"], np.arange(6.0)[:, None], atol=1e-10)
    assert ours["mvn_lp"].shape == (2, 3) and ours["ver"] == 2  # two add_ through diagonal views
    assert np.isfinite(ours["gls"]).all() and ours["gls"].shape == (3, 1)
