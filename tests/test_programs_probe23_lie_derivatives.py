# ruff: noqa: E501, E702, F841  (the programs are kept as their authors wrote them)
"""Robotics and Lie-group programs as PyTorch users write them, run as tests/probe23_lie_common.py says. Derivatives:
the gradients at the edges (acos at ±1, norms at 0, atan2 at the origin, degenerate eigh/svd, ties), also where they
are nan or inf; custom ``autograd.Function``s (an SO(3) exp with the right Jacobian, ``setup_context``/``vmap``);
second derivatives and Jacobians through the decompositions; forward-mode derivatives of the decompositions; SE(3)
Jacobians by ``vmap`` with ``functional_call``, ``vmap`` of inverse-kinematics pieces, and what ``vmap`` refuses (a
batched write into an unbatched tensor, control flow on a batched value); a ``torch.Tensor`` subclass as PyPose's
LieTensor."""

import math

import numpy as np
import pytest

from .probe23_lie_common import orthonormal, rodrigues_np
from .pytorch_programs import run_both


def edge_grads(m):
    torch, F = m.torch, m.F
    torch.manual_seed(25)  # (its random inputs its own, whichever test ran before)
    out = {}
    # acos at exactly 1 -> -inf grad; clamp kills it
    x = torch.tensor([1.0, -1.0, 0.5], requires_grad=True)
    torch.acos(x).sum().backward(); out["gacos"] = x.grad
    x = torch.tensor([1.0, -1.0, 0.5], requires_grad=True)
    torch.acos(x.clamp(-1 + 1e-6, 1 - 1e-6)).sum().backward(); out["gacos_c"] = x.grad
    # norm at zero grad, sqrt(sum sq) at zero -> nan
    v = torch.zeros(2, 3, requires_grad=True)
    (v.pow(2).sum(-1).sqrt()).sum().backward(); out["gsqrt0"] = v.grad
    v = torch.zeros(2, 3, requires_grad=True)
    F.normalize(v, dim=-1).sum().backward(); out["gnormalize0"] = v.grad
    # torch.where NaN trap
    v = torch.zeros(3, requires_grad=True)
    th = v.norm()
    y = torch.where(th > 1e-6, torch.sin(th) / th, 1 - th ** 2 / 6)
    y.backward(); out["gwhere"] = v.grad
    # sinc
    t = torch.tensor([0.0, 1e-5, 0.3], requires_grad=True)
    torch.sinc(t).sum().backward(); out["gsinc"] = t.grad; out["sinc"] = torch.sinc(t)
    # cross broadcast and grads
    a = torch.randn(4, 3, requires_grad=True); b = torch.randn(1, 3, requires_grad=True)
    c = torch.linalg.cross(a, b); c.pow(2).sum().backward(); out["c"] = c; out["ga"] = a.grad; out["gb"] = b.grad
    c2 = a.cross(b.expand(4, 3), dim=1); out["c2"] = c2
    # det grad of rotation & singular
    R = torch.eye(3, dtype=torch.float64).requires_grad_()
    torch.linalg.det(R).backward(); out["gdet"] = R.grad
    # matrix_exp float32
    w = torch.tensor([[0.0, -0.3, 0.2], [0.3, 0.0, -0.1], [-0.2, 0.1, 0.0]], requires_grad=True)
    E = torch.linalg.matrix_exp(w); E.sum().backward(); out["E"] = E; out["gE"] = w.grad
    # eigh grad
    A = torch.tensor([[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 0.3]], dtype=torch.float64, requires_grad=True)
    L, V = torch.linalg.eigh(A)
    (L.sum() + (V[:, 0] ** 2 * torch.tensor([1.0, 2, 3], dtype=torch.float64)).sum()).backward(); out["geigh"] = A.grad
    # pinv and lstsq grads
    J = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    Jp = torch.linalg.pinv(J)
    e = torch.randn(3, dtype=torch.float64)
    (Jp @ e).pow(2).sum().backward(); out["gpinv"] = J.grad
    J2 = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    sol = torch.linalg.lstsq(J2, torch.randn(6, 2, dtype=torch.float64)).solution
    sol.sum().backward(); out["glstsq"] = J2.grad
    # svd full_matrices grad on square
    M = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    U, S, Vh = torch.linalg.svd(M)
    (U @ Vh).sum().backward(); out["gpolar"] = M.grad
    # copysign / sign
    q = torch.tensor([-0.5, 0.0, 0.5], requires_grad=True)
    torch.copysign(torch.ones(3), q).sum(); out["cs"] = torch.copysign(q, torch.tensor([-1.0, 1.0, -0.0]))
    return out


def vmap_lie(m):
    torch, F = m.torch, m.F
    func = torch.func
    torch.manual_seed(9)
    def hat(v):
        z = torch.zeros_like(v[0])
        return torch.stack([torch.stack([z, -v[2], v[1]]), torch.stack([v[2], z, -v[0]]), torch.stack([-v[1], v[0], z])])
    def exp_se3(xi):
        rho, phi = xi[:3], xi[3:]
        th = torch.linalg.vector_norm(phi)
        small = th < 1e-5
        ths = torch.where(small, torch.ones_like(th), th)
        K = hat(phi)
        A = torch.where(small, 1 - th**2 / 6, torch.sin(ths) / ths)
        B = torch.where(small, 0.5 - th**2 / 24, (1 - torch.cos(ths)) / ths**2)
        C = torch.where(small, 1.0 / 6 - th**2 / 120, (ths - torch.sin(ths)) / ths**3)
        I = torch.eye(3, dtype=xi.dtype)
        R = I + A * K + B * K @ K
        V = I + B * K + C * K @ K
        top = torch.cat([R, (V @ rho)[:, None]], 1)
        bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=xi.dtype)
        return torch.cat([top, bottom], 0)
    xi = torch.randn(5, 6, dtype=torch.float64) * 0.7
    xi[0] = 0.0
    T = func.vmap(exp_se3)(xi)
    J = func.vmap(func.jacrev(exp_se3))(xi)
    Jf = func.vmap(func.jacfwd(exp_se3))(xi)
    def loss_aux(xi):
        T = exp_se3(xi)
        return T[:3, 3].pow(2).sum(), T
    g, aux = func.grad(loss_aux, has_aux=True)(xi[1])
    # jacrev with has_aux
    jr, aux2 = func.jacrev(lambda x: (exp_se3(x)[:3, 3], exp_se3(x)), has_aux=True)(xi[2])
    # functional_call on a small pose net
    net = m.nn.Linear(3, 6).double()
    params = {k: torch.randn(v.shape, dtype=torch.float64) * 0.2 for k, v in net.named_parameters()}
    def out_fn(params, x):
        return exp_se3(func.functional_call(net, params, (x,)))[:3, 3].sum()
    pg = func.vmap(func.grad(out_fn), in_dims=(None, 0))(params, torch.randn(4, 3, dtype=torch.float64))
    return dict(T=T, J=J, Jf=Jf, g=g, aux=aux, jr=jr, pgw=pg["weight"], pgb=pg["bias"])


def custom_fn(m):
    torch = m.torch
    torch.manual_seed(12)
    def hat(v):
        z = torch.zeros_like(v[..., 0])
        return torch.stack([z, -v[..., 2], v[..., 1], v[..., 2], z, -v[..., 0], -v[..., 1], v[..., 0], z], -1).reshape(v.shape[:-1] + (3, 3))
    class SO3Exp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, w):
            th = w.norm(dim=-1, keepdim=True)[..., None]
            K = hat(w)
            R = torch.eye(3, dtype=w.dtype) + torch.sin(th) / th * K + (1 - torch.cos(th)) / th**2 * K @ K
            ctx.save_for_backward(w, R)
            return R
        @staticmethod
        def backward(ctx, gR):
            w, R = ctx.saved_tensors
            # left-trivialised: dR = hat(J_r dw) ... use numeric: grad = vee(R^T gR - gR^T R)/2 approximated through J_r
            A = R.transpose(-1, -2) @ gR
            skew = A - A.transpose(-1, -2)
            v = torch.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], -1)
            th = w.norm(dim=-1, keepdim=True)[..., None]
            K = hat(w)
            Jr = torch.eye(3, dtype=w.dtype) - (1 - torch.cos(th)) / th**2 * K + (th - torch.sin(th)) / th**3 * K @ K
            return (Jr.transpose(-1, -2) @ v[..., None]).squeeze(-1)
    w = (torch.randn(4, 3, dtype=torch.float64)).requires_grad_()
    R = SO3Exp.apply(w)
    W = torch.randn(4, 3, 3, dtype=torch.float64)
    (R * W).sum().backward()
    g_custom = w.grad.clone()
    w.grad = None
    th = w.norm(dim=-1, keepdim=True)[..., None]
    K = hat(w)
    R2 = torch.eye(3, dtype=torch.float64) + torch.sin(th) / th * K + (1 - torch.cos(th)) / th**2 * K @ K
    (R2 * W).sum().backward()
    ok = torch.autograd.gradcheck(lambda x: SO3Exp.apply(x), (w.detach().clone().requires_grad_(),))
    # once_differentiable / mark_non_differentiable / setup_context style
    class Normalize(torch.autograd.Function):
        @staticmethod
        def forward(q):
            n = q.norm(dim=-1, keepdim=True)
            return q / n, n
        @staticmethod
        def setup_context(ctx, inputs, output):
            q, = inputs
            qn, n = output
            ctx.save_for_backward(qn, n)
            ctx.mark_non_differentiable(n)
        @staticmethod
        def backward(ctx, g, gn):
            qn, n = ctx.saved_tensors
            return (g - (g * qn).sum(-1, keepdim=True) * qn) / n
        @staticmethod
        def vmap(info, in_dims, q):
            return Normalize.apply(q), (0, 0)
    q = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    qn, n = Normalize.apply(q)
    (qn * torch.arange(4.0, dtype=torch.float64)).sum().backward()
    jac = torch.func.jacrev(lambda x: Normalize.apply(x)[0])(q.detach()[0])
    return dict(R=R, g_custom=g_custom, g_auto=w.grad, ok=ok, qn=qn, gq=q.grad, n_rg=n.requires_grad, n=n, jac=jac)


def second_order(m):
    torch = m.torch
    torch.manual_seed(13)
    func = torch.func
    A = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    S = torch.linalg.svdvals(A)
    g, = torch.autograd.grad(S.sum(), A, create_graph=True)
    gg, = torch.autograd.grad(g.pow(2).sum(), A)
    # jacrev through det/solve/eigh/svd
    M = torch.randn(3, 3, dtype=torch.float64)
    Jdet = func.jacrev(torch.linalg.det)(M)
    Jsol = func.jacrev(lambda X: torch.linalg.solve(X, torch.ones(3, dtype=torch.float64)))(M)
    Sym = M + M.T
    Jeig = func.jacrev(lambda X: torch.linalg.eigh(X)[0])(Sym)
    Jsvd = func.jacrev(torch.linalg.svdvals)(M)
    Hdet = func.hessian(torch.linalg.det)(M)
    # batched via vmap
    Ms = torch.randn(5, 3, 3, dtype=torch.float64)
    dets = func.vmap(torch.linalg.det)(Ms)
    gdets = func.vmap(func.grad(torch.linalg.det))(Ms)
    # Procrustes rotation via SVD, jacobian wrt input
    def procrustes(X):
        U, S, Vh = torch.linalg.svd(X)
        d = torch.linalg.det(U @ Vh)
        D = torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d]))
        return U @ D @ Vh
    Jp = func.jacrev(procrustes)(M)
    Jpv = func.vmap(func.jacrev(procrustes))(Ms)
    return dict(M=M, Ms=Ms, gg=gg, Jdet=Jdet, Jsol=Jsol, Jeig=Jeig, Jsvd=Jsvd, Hdet=Hdet, dets=dets, gdets=gdets, Jp=Jp, Jpv=Jpv)


def nan_edges(m):
    torch, F = m.torch, m.F
    torch.manual_seed(26)  # (its random inputs its own, whichever test ran before)
    out = {}
    v = torch.zeros(3, requires_grad=True)
    th = v.norm()
    torch.where(th > 0, torch.sin(th) / th, torch.ones_like(th)).backward(); out["where_nan"] = v.grad
    y = torch.zeros(2, requires_grad=True); x = torch.zeros(2, requires_grad=True)
    torch.atan2(y, x).sum().backward(); out["atan2_00"] = (y.grad, x.grad)
    A = torch.eye(3, dtype=torch.float64, requires_grad=True)
    L, V = torch.linalg.eigh(A)
    (V.sum()).backward(); out["eigh_degen"] = A.grad
    A = torch.eye(3, dtype=torch.float64, requires_grad=True)
    L, V = torch.linalg.eigh(A)
    L.sum().backward(); out["eigh_vals_degen"] = A.grad
    A = torch.eye(3, dtype=torch.float64, requires_grad=True)
    U, S, Vh = torch.linalg.svd(A)
    (U @ Vh).sum().backward(); out["svd_degen_polar"] = A.grad
    P = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    d = torch.cdist(P, P)
    d.sum().backward(); out["cdist_self"] = P.grad
    X = torch.zeros(3, 3, requires_grad=True)
    torch.linalg.matrix_norm(X).backward(); out["fro0"] = X.grad
    q = torch.tensor([1.0, 0, 0, 0], requires_grad=True)
    p = torch.tensor([1.0, 0, 0, 0])
    torch.acos((q * p).sum().clamp(-1, 1)).backward(); out["acos_clamp_edge"] = q.grad
    q = torch.tensor([1.0, 0, 0, 0], requires_grad=True)
    (2 * torch.acos((q * p).sum().abs().clamp(max=1.0))).backward(); out["acos_abs_clamp"] = q.grad
    w = torch.zeros(3, requires_grad=True)
    torch.linalg.vector_norm(w, ord=1).backward(); out["l1_0"] = w.grad
    w = torch.zeros(3, requires_grad=True)
    torch.linalg.vector_norm(w, ord=float("inf")).backward(); out["linf_0"] = w.grad
    w = torch.tensor([1.0, -1.0, 0.5], requires_grad=True)
    torch.linalg.vector_norm(w, ord=float("inf")).backward(); out["linf_tie"] = w.grad
    w = torch.tensor([1.0, 1.0, 0.5], requires_grad=True)
    w.max().backward(); out["max_tie"] = w.grad
    w = torch.tensor([1.0, 1.0, 0.5], requires_grad=True)
    w.amax().backward(); out["amax_tie"] = w.grad
    w = torch.tensor([0.0, 4.0], requires_grad=True)
    torch.sqrt(w).sum().backward(); out["sqrt0"] = w.grad
    w = torch.tensor([0.0, 4.0], requires_grad=True)
    w.pow(0.5).sum().backward(); out["pow05_0"] = w.grad
    w = torch.tensor([0.0, -1.0, 2.0], requires_grad=True)
    w.abs().sum().backward(); out["abs0"] = w.grad
    w = torch.tensor([0.0, -1.0, 2.0], requires_grad=True)
    torch.sign(w).sum().backward(); out["sign"] = w.grad
    w = torch.tensor([-1.0, 1.0, 0.3], requires_grad=True)
    torch.clamp(w, -1, 1).sum().backward(); out["clamp_edge"] = w.grad
    w = torch.tensor([-1.0, 1.0, 0.3], requires_grad=True)
    torch.asin(w.clamp(-1, 1)).sum().backward(); out["asin_edge"] = w.grad
    w = torch.tensor([2.0, 1.0, 0.3], requires_grad=True)
    torch.hypot(w, torch.zeros(3)).sum().backward(); out["hypot"] = w.grad
    w = torch.zeros(2, requires_grad=True)
    torch.hypot(w, torch.zeros(2)).sum().backward(); out["hypot0"] = w.grad
    return out


def fwd(m):
    torch = m.torch
    func = torch.func
    torch.manual_seed(16)
    out = {}
    M = torch.randn(3, 3, dtype=torch.float64); T = torch.randn(3, 3, dtype=torch.float64)
    S = M + M.T; TS = T + T.T
    out["svd"] = func.jvp(lambda X: torch.linalg.svd(X), (M,), (T,))[1]
    out["svdvals"] = func.jvp(torch.linalg.svdvals, (M,), (T,))[1]
    out["eigh"] = func.jvp(lambda X: (lambda L, V: (L, V * torch.sign(V[0])))(*torch.linalg.eigh(X)), (S,), (TS,))[1]
    out["det"] = func.jvp(torch.linalg.det, (M,), (T,))[1]
    out["inv"] = func.jvp(torch.linalg.inv, (M,), (T,))[1]
    out["solve"] = func.jvp(lambda X: torch.linalg.solve(X, torch.ones(3, 2, dtype=torch.float64)), (M,), (T,))[1]
    out["pinv"] = func.jvp(torch.linalg.pinv, (M[:, :2],), (T[:, :2],))[1]
    out["lstsq"] = func.jvp(lambda X: torch.linalg.lstsq(X, torch.ones(3, 1, dtype=torch.float64)).solution, (M[:, :2],), (T[:, :2],))[1]
    out["cross"] = func.jvp(lambda a, b: torch.linalg.cross(a, b), (M, T), (T, M))[1]
    out["atan2"] = func.jvp(torch.atan2, (M, T), (T, M))[1]
    out["acos"] = func.jvp(torch.acos, (M.tanh(),), (T,))[1]
    out["mexp"] = func.jvp(torch.linalg.matrix_exp, (M,), (T,))[1]
    out["qr"] = func.jvp(lambda X: torch.linalg.qr(X), (M,), (T,))[1]
    out["chol"] = func.jvp(torch.linalg.cholesky, (S @ S.T + torch.eye(3, dtype=torch.float64),), (TS,))[1]
    out["slogdet"] = func.jvp(lambda X: torch.linalg.slogdet(X)[1], (M,), (T,))[1]
    out["normalize"] = func.jvp(lambda X: m.F.normalize(X, dim=-1), (M,), (T,))[1]
    out["norm"] = func.jvp(lambda X: torch.linalg.vector_norm(X, dim=-1), (M,), (T,))[1]
    fwAD = torch.autograd.forward_ad
    with fwAD.dual_level():
        d = fwAD.make_dual(M, T)
        U, Sv, Vh = torch.linalg.svd(d)
        R = U @ Vh
        out["dual_polar"] = fwAD.unpack_dual(R).tangent
        out["dual_det"] = fwAD.unpack_dual(torch.det(d)).tangent
    # linearize
    y, jvp_fn = func.linearize(lambda X: torch.linalg.matrix_exp(X - X.T), M)
    out["lin"] = jvp_fn(T)
    out["jacfwd_svd"] = func.jacfwd(torch.linalg.svdvals)(M)
    return out


def vmap_more(m):
    torch = m.torch
    func = torch.func
    torch.manual_seed(17)
    out = {}
    Js = torch.randn(4, 3, 5, dtype=torch.float64)
    es = torch.randn(4, 3, dtype=torch.float64)
    out["pinv"] = func.vmap(torch.linalg.pinv)(Js)
    out["lstsq"] = func.vmap(lambda J, e: torch.linalg.lstsq(J.T, (J.T @ e)[:, None]).solution)(Js, es)
    out["dls"] = func.vmap(lambda J, e: J.T @ torch.linalg.solve(J @ J.T + 0.01 * torch.eye(3, dtype=torch.float64), e))(Js, es)
    out["cross"] = func.vmap(lambda a, b: torch.linalg.cross(a, b))(es, es.flip(0))
    out["svd"] = func.vmap(torch.linalg.svdvals)(Js)
    out["eigh"] = func.vmap(lambda J: torch.linalg.eigh(J @ J.T)[0])(Js)
    out["atan2"] = func.vmap(torch.atan2)(es, es.flip(0))
    out["where"] = func.vmap(lambda x: torch.where(x.norm() < 1.5, x, x / x.norm()))(es)
    out["cond"] = func.vmap(lambda x: torch.where(x[0] > 0, torch.tensor(1.0, dtype=torch.float64), -1.0) * x)(es)
    def make_T(x):
        T = torch.eye(4, dtype=x.dtype)
        T = T.clone()
        return torch.cat([torch.cat([torch.eye(3, dtype=x.dtype), x[:, None]], 1), T[3:]], 0)
    out["makeT"] = func.vmap(make_T)(es)
    def err(f):
        try:
            f(); return "no error"
        except Exception as e:
            return type(e).__name__
    def inplace_T(x):
        T = torch.eye(4, dtype=x.dtype)
        T[:3, 3] = x
        return T
    out["inplace_err"] = err(lambda: func.vmap(inplace_T)(es))
    def inplace_T2(x):
        T = torch.zeros(4, 4, dtype=x.dtype) + x.sum() * 0
        T[:3, 3] = x
        return T
    out["inplace_ok"] = func.vmap(inplace_T2)(es)
    out["jac_pinv"] = func.vmap(func.jacrev(lambda J: torch.linalg.pinv(J).sum(0)))(Js[:, :, :3])
    return out


def lietensor(m):
    torch = m.torch
    torch.manual_seed(20)
    class SO3Type:
        def Exp(self, x):
            th = x.norm(dim=-1, keepdim=True)
            half = th / 2
            return torch.cat([x / th * torch.sin(half), torch.cos(half)], -1)
    class LieTensor(torch.Tensor):
        @staticmethod
        def __new__(cls, data, ltype=None, **kwargs):
            return torch.Tensor._make_subclass(cls, data, data.requires_grad)
        def __init__(self, data, ltype=None):
            self.ltype = ltype
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            ltypes = [a.ltype for a in args if isinstance(a, LieTensor) and hasattr(a, "ltype")]
            out = super().__torch_function__(func, types, args, kwargs)
            if isinstance(out, LieTensor) and ltypes:
                out.ltype = ltypes[0]
            return out
        def Exp(self):
            return self.ltype.Exp(self.as_subclass(torch.Tensor))
    x = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    lt = LieTensor(x, ltype=SO3Type())
    y = lt * 2
    q = lt.Exp()
    s = (y.sum() + q.sum())
    s.backward()
    return dict(y=y.as_subclass(torch.Tensor), is_sub=isinstance(y, LieTensor), has_ltype=hasattr(y, "ltype"), q=q, g=x.grad, qsub=type(q).__name__, ysub=type(y).__name__)


def test_vmap_se3_jacobians_and_functional_call():
    o, _ = run_both(vmap_lie, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(o["T"][0], np.eye(4), atol=0)
    np.testing.assert_allclose(o["J"], o["Jf"], atol=1e-12)
    orthonormal(o["T"][:, :3, :3])
    np.testing.assert_allclose(o["aux"], o["T"][1], atol=1e-12)
    assert o["pgw"].shape == (4, 6, 3) and o["pgb"].shape == (4, 6)


def test_custom_functions():
    o, _ = run_both(custom_fn, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(o["g_custom"], o["g_auto"], rtol=1e-9)
    assert o["ok"] is True and o["n_rg"] is False
    qn = o["qn"][0]
    np.testing.assert_allclose(o["jac"], (np.eye(4) - np.outer(qn, qn)) / o["n"][0], rtol=1e-12, atol=1e-14)


def test_gradients_at_the_edges():
    o, _ = run_both(edge_grads, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(o["gacos"], [-np.inf, -np.inf, -1 / math.sqrt(0.75)], rtol=1e-6)
    np.testing.assert_allclose(o["gacos_c"], [0, 0, -1 / math.sqrt(0.75)], rtol=1e-6)
    assert np.isnan(o["gsqrt0"]).all() and np.isnan(o["gwhere"]).all()  # torch.where's unselected 0/0
    np.testing.assert_allclose(o["gnormalize0"], 1e12, rtol=1e-7)  # 1/eps
    np.testing.assert_array_equal(o["gdet"], np.eye(3))
    # (PyTorch's matrix_exp of a lone matrix of 1-norm 0.5 in float32 is its degree-8 approximant: 5e-6 from e^A)
    assert 4e-6 < np.abs(o["E"] - rodrigues_np(np.array([0.1, 0.2, 0.3]))).max() < 6e-6


def test_second_order_and_transforms_of_decompositions():
    o, _ = run_both(second_order, rtol=1e-8, atol=1e-10)
    M, Ms = o["M"], o["Ms"]
    np.testing.assert_allclose(o["Jdet"], np.linalg.det(M) * np.linalg.inv(M).T, rtol=1e-10)
    np.testing.assert_allclose(o["dets"], np.linalg.det(Ms), rtol=1e-12)
    np.testing.assert_allclose(o["gdets"], np.linalg.det(Ms)[:, None, None] * np.swapaxes(np.linalg.inv(Ms), -1, -2),
                               rtol=1e-10)
    U, _, Vh = np.linalg.svd(M)
    np.testing.assert_allclose(o["Jsvd"], np.einsum("ik,kj->kij", U, Vh), rtol=1e-10, atol=1e-12)  # dσₖ/dM = uₖvₖᵀ
    assert np.isfinite(o["gg"]).all() and np.isfinite(o["Hdet"]).all()


def test_nan_and_inf_gradients_at_the_edges():
    o, _ = run_both(nan_edges, rtol=1e-6, atol=1e-7)
    assert np.isnan(o["where_nan"]).all() and np.isnan(o["eigh_degen"]).all() and np.isnan(o["svd_degen_polar"]).all()
    np.testing.assert_array_equal(o["atan2_00"][0], 0.0)
    np.testing.assert_array_equal(o["eigh_vals_degen"], np.eye(3))
    np.testing.assert_array_equal(o["fro0"], 0.0)
    np.testing.assert_array_equal(o["linf_tie"], [0.5, -0.5, 0])
    np.testing.assert_array_equal(o["max_tie"], [0.5, 0.5, 0])
    np.testing.assert_array_equal(o["sqrt0"], [np.inf, 0.25])
    np.testing.assert_array_equal(o["abs0"], [0, -1, 1])
    np.testing.assert_array_equal(o["clamp_edge"], [1, 1, 1])
    assert np.isnan(o["hypot0"]).all()


def test_forward_mode_through_decompositions():
    o, _ = run_both(fwd, rtol=1e-8, atol=1e-10)
    assert np.isfinite(o["dual_polar"]).all()
    np.testing.assert_allclose(o["dual_det"], o["det"], rtol=1e-12)
    np.testing.assert_allclose(o["jacfwd_svd"].shape, (3, 3, 3))


def test_vmap_of_inverse_kinematics_pieces():
    o, _ = run_both(vmap_more, rtol=1e-9, atol=1e-11, compare=False)
    assert o["pinv"].shape == (4, 5, 3)


@pytest.mark.xfail(strict=True, reason="vmap runs a Python loop over the batch, so writing a batched value into a "
                   "tensor made inside the function (T = eye(4); T[:3, 3] = x) works, where PyTorch's vmap raises "
                   "RuntimeError 'vmap: index_put_(self, *extra_args) is not possible'")
def test_vmap_refuses_a_batched_write_into_an_unbatched_tensor():
    import autograd

    def inplace_T(x):
        T = autograd.eye(4, dtype=x.dtype)
        T[:3, 3] = x
        return T
    with pytest.raises(RuntimeError, match="vmap"):
        autograd.func.vmap(inplace_T)(autograd.randn(4, 3))


def test_lie_tensor_subclass():
    o, _ = run_both(lietensor, rtol=1e-10, atol=1e-12)
    assert o["is_sub"] and o["has_ltype"] and o["ysub"] == "LieTensor"
    np.testing.assert_allclose(np.linalg.norm(o["q"], axis=-1), 1.0, atol=1e-12)


@pytest.mark.xfail(strict=True, reason="vmap runs a Python loop over the batch, so Python control flow on a batched "
                   "value (if theta < eps: ...) runs per example, where PyTorch's vmap raises RuntimeError ('data-"
                   "dependent control flow is not supported')")
def test_vmap_refuses_control_flow_on_a_batched_value():
    import autograd

    def small_angle_exp(w):
        th = w.norm()
        if th < 1e-6:
            return w
        return w * autograd.sin(th) / th
    with pytest.raises(RuntimeError):
        autograd.func.vmap(small_angle_exp)(autograd.randn(4, 3))
