# ruff: noqa: B007, B008, B023, E501, E701, E702, E731, E741, F841, N801, N802, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Robotics and Lie-group programs (see tests/pytorch_programs.py) as PyTorch users write them, each run on
chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.

Quaternions (multiply, conjugate, to and from matrices by PyTorch3D's candidate-argmax, slerp with a
small-angle branch); SO(3) and SE(3) exponential and log maps with ``torch.where`` small-angle branches (and
their gradients at 0) against ``matrix_exp``; Denavit-Hartenberg forward kinematics by cumulative ``bmm``,
inverse kinematics by damped least squares (``autograd.functional.jacobian``, ``linalg.solve``), ``pinv``,
``lstsq`` and Adam; weighted Kabsch with the det sign fix and gradients through ``svd``, Markley's quaternion
average by ``eigh``; the 6-D representation (Gram-Schmidt, ``cross``) trained on a clamped-acos geodesic loss,
Euler angles by ``atan2``/``asin``; Levenberg-Marquardt camera resection by ``func.jacrev``, per-point
Jacobians by ``vmap(jacrev)``, ``jacfwd``, ``hessian``; a 2-D pose graph by Gauss-Newton with angle wrapping;
the Schur complement of bundle adjustment (``index_add_``, ``index_put_(accumulate=True)``, ``block_diag``);
SMPL's linear blend skinning (``batch_rodrigues``, a kinematic tree); a pinhole camera with radial distortion;
custom ``autograd.Function``s (an SO(3) exp with the right Jacobian, ``setup_context``/``vmap``); forward-mode
derivatives of the decompositions; a ``torch.Tensor`` subclass as PyPose's LieTensor; and the gradients at the
edges (acos at ±1, norms at 0, atan2 at the origin, degenerate eigh/svd, ties)."""

import math
import warnings

import numpy as np
import pytest

from .pytorch_programs import run_both


def quat_prog(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    def qmul(a, b):
        aw, ax, ay, az = torch.unbind(a, -1)
        bw, bx, by, bz = torch.unbind(b, -1)
        return torch.stack([aw*bw - ax*bx - ay*by - az*bz, aw*bx + ax*bw + ay*bz - az*by,
                            aw*by - ax*bz + ay*bw + az*bx, aw*bz + ax*by - ay*bx + az*bw], -1)
    def qconj(q):
        return q * q.new_tensor([1, -1, -1, -1])
    def q2m(q):
        r, i, j, k = torch.unbind(q, -1)
        two_s = 2.0 / (q * q).sum(-1)
        o = torch.stack((1 - two_s * (j*j + k*k), two_s * (i*j - k*r), two_s * (i*k + j*r),
                         two_s * (i*j + k*r), 1 - two_s * (i*i + k*k), two_s * (j*k - i*r),
                         two_s * (i*k - j*r), two_s * (j*k + i*r), 1 - two_s * (i*i + j*j)), -1)
        return o.reshape(q.shape[:-1] + (3, 3))
    def _sqrt_positive_part(x):
        ret = torch.zeros_like(x)
        positive_mask = x > 0
        ret[positive_mask] = torch.sqrt(x[positive_mask])
        return ret
    def m2q(matrix):
        batch_dim = matrix.shape[:-2]
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(matrix.reshape(batch_dim + (9,)), dim=-1)
        q_abs = _sqrt_positive_part(torch.stack([1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22,
                                                 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1))
        quat_by_rijk = torch.stack([
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1)], dim=-2)
        flr = torch.tensor(0.1).to(dtype=q_abs.dtype, device=q_abs.device)
        quat_candidates = quat_by_rijk / (2.0 * q_abs[..., None].max(flr))
        out = quat_candidates[F.one_hot(q_abs.argmax(dim=-1), num_classes=4) > 0.5, :].reshape(batch_dim + (4,))
        return out
    def standardize(q):
        return torch.where(q[..., 0:1] < 0, -q, q)
    def slerp(q0, q1, t):
        dot = (q0 * q1).sum(-1, keepdim=True)
        q1 = torch.where(dot < 0, -q1, q1)
        dot = dot.abs().clamp(max=1.0)
        theta = torch.acos(dot)
        s = torch.sin(theta)
        small = s < 1e-6
        w0 = torch.where(small, 1 - t, torch.sin((1 - t) * theta) / torch.where(small, torch.ones_like(s), s))
        w1 = torch.where(small, t, torch.sin(t * theta) / torch.where(small, torch.ones_like(s), s))
        return F.normalize(w0 * q0 + w1 * q1, dim=-1)
    q = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1).requires_grad_()
    p = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1).requires_grad_()
    R = q2m(q)
    q_back = standardize(m2q(R))
    pq = qmul(p, qconj(q))
    t = torch.linspace(0, 1, 6, dtype=torch.float64)[:, None]
    sl = slerp(q, p, t)
    same = slerp(q, q.detach() * 1.0, t)
    loss = (R ** 2 * torch.arange(9.0, dtype=torch.float64).reshape(3, 3)).sum() + q_back.sum() + pq.pow(3).sum() + sl.sum() + same.sum()
    loss.backward()
    return dict(R=R, q_back=q_back, pq=pq, sl=sl, same=same, gq=q.grad, gp=p.grad, det=torch.linalg.det(R))


def rodrigues(m):
    torch, F = m.torch, m.F
    torch.manual_seed(1)
    def hat(v):
        z = torch.zeros_like(v[..., 0])
        return torch.stack([z, -v[..., 2], v[..., 1], v[..., 2], z, -v[..., 0], -v[..., 1], v[..., 0], z], -1).reshape(v.shape[:-1] + (3, 3))
    def so3_exp(w):
        theta = w.norm(dim=-1, keepdim=True)[..., None]
        K = hat(w)
        small = theta < 1e-4
        theta_safe = torch.where(small, torch.ones_like(theta), theta)
        A = torch.where(small, 1 - theta**2 / 6, torch.sin(theta_safe) / theta_safe)
        B = torch.where(small, 0.5 - theta**2 / 24, (1 - torch.cos(theta_safe)) / theta_safe**2)
        I = torch.eye(3, dtype=w.dtype).expand_as(K)
        return I + A * K + B * (K @ K)
    def so3_log(R):
        tr = R.diagonal(dim1=-2, dim2=-1).sum(-1)
        cos = ((tr - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cos)
        vee = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
        factor = torch.where(theta < 1e-4, 0.5 + theta**2 / 12, theta / (2 * torch.sin(theta)))
        return factor[..., None] * vee
    w = torch.randn(5, 3, dtype=torch.float64) * 0.8
    w = torch.cat([w, torch.zeros(1, 3, dtype=torch.float64), torch.full((1, 3), 1e-6, dtype=torch.float64)]).requires_grad_()
    R = so3_exp(w)
    R2 = torch.linalg.matrix_exp(hat(w))
    back = so3_log(R)
    loss = (R * torch.randn(3, 3, dtype=torch.float64)).sum() + back.pow(2).sum()
    loss.backward()
    # grad of norm at zero via torch.where trick
    v = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    n = v.norm()
    g0, = torch.autograd.grad(n, v)
    v2 = torch.zeros(2, 3, requires_grad=True)
    nn_ = torch.linalg.vector_norm(v2, dim=-1)
    g1, = torch.autograd.grad(nn_.sum(), v2)
    return dict(R=R, R2=R2, back=back, g=w.grad, g0=g0, g1=g1)


def se3(m):
    torch, F = m.torch, m.F
    torch.manual_seed(2)
    def hat(v):
        z = torch.zeros_like(v[..., 0])
        return torch.stack([z, -v[..., 2], v[..., 1], v[..., 2], z, -v[..., 0], -v[..., 1], v[..., 0], z], -1).reshape(v.shape[:-1] + (3, 3))
    def se3_exp(xi):
        rho, phi = xi[..., :3], xi[..., 3:]
        theta = torch.linalg.norm(phi, dim=-1)[..., None, None]
        K = hat(phi)
        I = torch.eye(3, dtype=xi.dtype)
        R = I + torch.sin(theta) / theta * K + (1 - torch.cos(theta)) / theta**2 * K @ K
        V = I + (1 - torch.cos(theta)) / theta**2 * K + (theta - torch.sin(theta)) / theta**3 * K @ K
        t = (V @ rho[..., None]).squeeze(-1)
        T = torch.zeros(xi.shape[:-1] + (4, 4), dtype=xi.dtype)
        T[..., :3, :3] = R
        T[..., :3, 3] = t
        T[..., 3, 3] = 1
        return T
    xi = (torch.randn(4, 6, dtype=torch.float64) * 0.5).requires_grad_()
    T = se3_exp(xi)
    Tm = torch.linalg.matrix_exp(torch.cat([torch.cat([hat(xi[:, 3:]), xi[:, :3, None]], -1), torch.zeros(4, 1, 4, dtype=torch.float64)], -2))
    Tinv = torch.linalg.inv(T)
    comp = T @ Tinv
    L = torch.linalg.matrix_norm(T - Tm).sum() + torch.linalg.matrix_norm(T, ord=2).sum() + T[:, :3, 3].sum() + torch.linalg.inv(T).sum()
    L.backward()
    pts = torch.randn(4, 10, 3, dtype=torch.float64)
    ph = F.pad(pts, (0, 1), value=1.0)
    tp = torch.einsum("bij,bnj->bni", T, ph)[..., :3]
    return dict(T=T, Tm=Tm, comp=comp, g=xi.grad, tp=tp)


def fk_ik(m):
    torch = m.torch
    torch.manual_seed(3)
    dh = torch.tensor([[0.0, 0.3, math.pi/2], [0.4, 0.0, 0.0], [0.35, 0.0, 0.0], [0.0, 0.2, math.pi/2], [0.0, 0.15, -math.pi/2], [0.0, 0.1, 0.0]], dtype=torch.float64)
    def dh_T(theta, a, d, alpha):
        ct, st = torch.cos(theta), torch.sin(theta)
        ca, sa = torch.cos(alpha), torch.sin(alpha)
        z, o = torch.zeros_like(theta), torch.ones_like(theta)
        return torch.stack([torch.stack([ct, -st*ca, st*sa, a*ct], -1), torch.stack([st, ct*ca, -ct*sa, a*st], -1),
                            torch.stack([z, sa.expand_as(z), ca.expand_as(z), d.expand_as(z)], -1), torch.stack([z, z, z, o], -1)], -2)
    def fk(q):
        T = torch.eye(4, dtype=q.dtype).expand(q.shape[0], 4, 4)
        frames = []
        for i in range(q.shape[1]):
            T = torch.bmm(T, dh_T(q[:, i], dh[i, 0], dh[i, 1], dh[i, 2]))
            frames.append(T)
        return torch.stack(frames, 1)
    q = (torch.rand(5, 6, dtype=torch.float64) * 2 - 1).requires_grad_()
    frames = fk(q)
    ee = frames[:, -1, :3, 3]
    ee.sum().backward()
    gq = q.grad.clone()
    # IK by DLS using autograd.functional.jacobian
    target = ee.detach()[0] + torch.tensor([0.05, -0.03, 0.02], dtype=torch.float64)
    qi = q.detach()[0].clone()
    errs = []
    for it in range(8):
        J = torch.autograd.functional.jacobian(lambda x: fk(x[None])[0, -1, :3, 3], qi)
        e = target - fk(qi[None])[0, -1, :3, 3]
        lam = 0.01
        dq = J.T @ torch.linalg.solve(J @ J.T + lam**2 * torch.eye(3, dtype=torch.float64), e)
        qi = qi + dq
        errs.append(e.norm())
    # pinv / lstsq steps
    J = torch.autograd.functional.jacobian(lambda x: fk(x[None])[0, -1, :3, 3], qi)
    e = target - fk(qi[None])[0, -1, :3, 3]
    dq_pinv = torch.linalg.pinv(J) @ e
    dq_lstsq = torch.linalg.lstsq(J, e[:, None]).solution.squeeze(-1)
    # gradient descent IK with optimizer
    qg = q.detach()[1].clone().requires_grad_()
    opt = m.optim.Adam([qg], lr=0.05)
    for it in range(30):
        opt.zero_grad()
        l = (fk(qg[None])[0, -1, :3, 3] - target).pow(2).sum() + 1e-3 * qg.pow(2).sum()
        l.backward()
        opt.step()
    return dict(frames=frames, gq=gq, errs=torch.stack(errs), dq_pinv=dq_pinv, J=J, qg=qg, l=l)


def kabsch(m):
    torch = m.torch
    torch.manual_seed(4)
    def kabsch_fn(P, Q, w=None):
        if w is None:
            w = torch.ones(P.shape[:-1], dtype=P.dtype)
        w = w / w.sum(-1, keepdim=True)
        pc = (w[..., None] * P).sum(-2, keepdim=True)
        qc = (w[..., None] * Q).sum(-2, keepdim=True)
        H = (P - pc).transpose(-1, -2) @ (w[..., None] * (Q - qc))
        U, S, Vh = torch.linalg.svd(H)
        d = torch.sign(torch.linalg.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2)))
        D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
        R = Vh.transpose(-1, -2) @ D @ U.transpose(-1, -2)
        t = qc.squeeze(-2) - (R @ pc.squeeze(-2)[..., None]).squeeze(-1)
        return R, t
    P = torch.randn(3, 20, 3, dtype=torch.float64)
    ang = torch.tensor([0.3, 2.0, -1.0], dtype=torch.float64)
    Rt = torch.linalg.matrix_exp(torch.tensor([[0, -0.3, 0.2], [0.3, 0, -0.5], [-0.2, 0.5, 0]], dtype=torch.float64))
    Q = P @ Rt.T + 0.01 * torch.randn(3, 20, 3, dtype=torch.float64) + torch.tensor([1.0, 2, 3], dtype=torch.float64)
    Q[2] = Q[2] * torch.tensor([1.0, 1, -1], dtype=torch.float64)  # reflection case
    w = torch.rand(3, 20, dtype=torch.float64).requires_grad_()
    Pp = P.clone().requires_grad_()
    R, t = kabsch_fn(Pp, Q, w)
    rmsd = ((Pp @ R.transpose(-1, -2) + t[:, None] - Q).pow(2).sum(-1) * w).sum(-1).sqrt()
    rmsd.sum().backward()
    # eigh-based quaternion average (Markley)
    qs = m.F.normalize(torch.tensor([1.0, 0.1, 0.0, 0.05], dtype=torch.float64) + 0.05 * torch.randn(10, 4, dtype=torch.float64), dim=-1).requires_grad_()
    M = qs.T @ qs
    evals, evecs = torch.linalg.eigh(M)
    qavg = evecs[:, -1] * torch.sign(evecs[0, -1])
    (qavg * torch.tensor([1.0, 2, 3, 4], dtype=torch.float64)).sum().backward()
    # svd-only
    A = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    U, S, V = torch.svd(A)
    (S.sum() + (U[:, :3].abs() * 0 + U).sum() * 0 + torch.linalg.svdvals(A).prod()).backward()
    return dict(R=R, t=t, rmsd=rmsd, gw=w.grad, gP=Pp.grad, qavg=qavg, evals=evals, gqs=qs.grad, gA=A.grad)


def six_d(m):
    torch, F = m.torch, m.F
    torch.manual_seed(5)
    def rot6d_to_matrix(d6):
        a1, a2 = d6[..., :3], d6[..., 3:]
        b1 = F.normalize(a1, dim=-1)
        b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
        b2 = F.normalize(b2, dim=-1)
        b3 = torch.cross(b1, b2, dim=-1)
        return torch.stack((b1, b2, b3), dim=-2)
    def matrix_to_rot6d(R):
        return R[..., :2, :].clone().reshape(R.shape[:-2] + (6,))
    def geodesic(R1, R2, eps=1e-7):
        Rr = R1 @ R2.transpose(-1, -2)
        cos = (Rr.diagonal(dim1=-1, dim2=-2).sum(-1) - 1) / 2
        return torch.acos(torch.clamp(cos, -1 + eps, 1 - eps))
    def matrix_to_euler_zyx(R):
        yaw = torch.atan2(R[..., 1, 0], R[..., 0, 0])
        pitch = torch.asin(-R[..., 2, 0].clamp(-1, 1))
        roll = torch.atan2(R[..., 2, 1], R[..., 2, 2])
        return torch.stack([yaw, pitch, roll], -1)
    net = m.nn.Sequential(m.nn.Linear(9, 32), m.nn.ReLU(), m.nn.Linear(32, 6)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, dtype=torch.float64) * 0.3)
    opt = m.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(16, 9, dtype=torch.float64)
    Rgt = rot6d_to_matrix(torch.randn(16, 6, dtype=torch.float64))
    losses = []
    for step in range(10):
        R = rot6d_to_matrix(net(x))
        loss = geodesic(R, Rgt).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.detach())
    eu = matrix_to_euler_zyx(Rgt.clone().requires_grad_())
    d = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    Rd = rot6d_to_matrix(d)
    e = matrix_to_euler_zyx(Rd)
    e.sum().backward()
    lc = torch.linalg.cross(d[:, :3], d[:, 3:])
    # identity geodesic: clamped acos gradient zero
    I = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1).requires_grad_()
    g = geodesic(I, torch.eye(3, dtype=torch.float64))
    g.sum().backward()
    return dict(losses=torch.stack(losses), eu=eu, gd=d.grad, back=matrix_to_rot6d(Rd), lc=lc, gI=I.grad, g=g)


def ba(m):
    torch = m.torch
    func = torch.func
    torch.manual_seed(6)
    def hat(v):
        z = torch.zeros_like(v[..., 0])
        return torch.stack([z, -v[..., 2], v[..., 1], v[..., 2], z, -v[..., 0], -v[..., 1], v[..., 0], z], -1).reshape(v.shape[:-1] + (3, 3))
    def exp_so3(w):
        th2 = (w * w).sum(-1, keepdim=True)[..., None]
        th = torch.sqrt(th2 + 1e-12)
        K = hat(w)
        return torch.eye(3, dtype=w.dtype) + torch.sin(th) / th * K + (1 - torch.cos(th)) / th2.clamp_min(1e-12) * K @ K
    fx, fy, cx, cy = 500.0, 500.0, 320.0, 240.0
    Kmat = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64)
    def project(pose, X):
        R = exp_so3(pose[:3])
        Xc = X @ R.T + pose[3:]
        uvw = Xc @ Kmat.T
        return uvw[..., :2] / uvw[..., 2:3]
    X = torch.randn(30, 3, dtype=torch.float64) + torch.tensor([0, 0, 6.0], dtype=torch.float64)
    pose_gt = torch.tensor([0.05, -0.1, 0.02, 0.1, -0.2, 0.3], dtype=torch.float64)
    obs = project(pose_gt, X) + 0.3 * torch.randn(30, 2, dtype=torch.float64)
    def residual(pose):
        return (project(pose, X) - obs).reshape(-1)
    pose = torch.zeros(6, dtype=torch.float64)
    lam = 1e-3
    costs = []
    for it in range(6):
        r = residual(pose)
        J = func.jacrev(residual)(pose)
        H = J.T @ J
        g = J.T @ r
        delta = -torch.linalg.solve(H + lam * torch.diag(torch.diagonal(H)), g)
        new = pose + delta
        if residual(new).pow(2).sum() < r.pow(2).sum():
            pose, lam = new, lam / 10
        else:
            lam = lam * 10
        costs.append(r.pow(2).sum())
    # per-point jacobians by vmap(jacrev)
    def proj_pt(pose, x):
        return project(pose, x[None])[0]
    Jp = func.vmap(func.jacrev(proj_pt, argnums=(0, 1)), in_dims=(None, 0))(pose, X)
    Jf = func.jacfwd(residual)(pose)
    hess = func.hessian(lambda p: residual(p).pow(2).sum())(pose)
    return dict(pose=pose, costs=torch.stack(costs), Jpose=Jp[0], Jpt=Jp[1], Jf=Jf, hess=hess)


def pose_graph(m):
    torch = m.torch
    torch.manual_seed(7)
    # 2-D pose graph (x, y, theta) Gauss-Newton with atan2 wrap
    def wrap(a):
        return torch.atan2(torch.sin(a), torch.cos(a))
    def rel(pi, pj):
        c, s = torch.cos(pi[..., 2]), torch.sin(pi[..., 2])
        dx, dy = pj[..., 0] - pi[..., 0], pj[..., 1] - pi[..., 1]
        return torch.stack([c * dx + s * dy, -s * dx + c * dy, wrap(pj[..., 2] - pi[..., 2])], -1)
    n = 8
    gt = torch.zeros(n, 3, dtype=torch.float64)
    for i in range(1, n):
        gt[i, 2] = gt[i - 1, 2] + 2 * math.pi / n
        gt[i, 0] = gt[i - 1, 0] + torch.cos(gt[i - 1, 2])
        gt[i, 1] = gt[i - 1, 1] + torch.sin(gt[i - 1, 2])
    gt[:, 2] = wrap(gt[:, 2])
    edges = [(i, i + 1) for i in range(n - 1)] + [(n - 1, 0), (0, 4)]
    ii = torch.tensor([e[0] for e in edges]); jj = torch.tensor([e[1] for e in edges])
    meas = rel(gt[ii], gt[jj]) + 0.02 * torch.randn(len(edges), 3, dtype=torch.float64)
    x = gt + 0.1 * torch.randn(n, 3, dtype=torch.float64)
    x[0] = gt[0]
    def res(flat):
        p = torch.cat([gt[:1], flat.reshape(n - 1, 3)])
        r = rel(p[ii], p[jj]) - meas
        r = torch.cat([r[:, :2], wrap(r[:, 2:])], -1)
        return r.reshape(-1)
    v = x[1:].reshape(-1)
    cs = []
    for it in range(5):
        r = res(v)
        J = torch.autograd.functional.jacobian(res, v)
        dv = torch.linalg.lstsq(J, -r[:, None]).solution[:, 0]
        v = v + dv
        cs.append(r.pow(2).sum())
    # atan2 gradients at edge cases
    y = torch.tensor([0.0, 1.0, -0.0, 1e-30, -1.0], dtype=torch.float64, requires_grad=True)
    xx = torch.tensor([1.0, 0.0, -1.0, -1.0, -1e-30], dtype=torch.float64, requires_grad=True)
    a = torch.atan2(y, xx)
    a.sum().backward()
    return dict(v=v, cs=torch.stack(cs), a=a, gy=y.grad, gx=xx.grad)


def edge_grads(m):
    torch, F = m.torch, m.F
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


def float32_rot(m):
    torch, F = m.torch, m.F
    torch.manual_seed(8)
    aa = torch.randn(64, 3) * 1.5
    aa.requires_grad_()
    angle = aa.norm(dim=-1, keepdim=True)
    axis = aa / angle
    half = angle * 0.5
    q = torch.cat([torch.cos(half), axis * torch.sin(half)], -1)
    r, i, j, k = q.unbind(-1)
    R = torch.stack([1 - 2*(j*j + k*k), 2*(i*j - k*r), 2*(i*k + j*r), 2*(i*j + k*r), 1 - 2*(i*i + k*k), 2*(j*k - i*r), 2*(i*k - j*r), 2*(j*k + i*r), 1 - 2*(i*i + j*j)], -1).view(-1, 3, 3)
    pts = torch.randn(64, 100, 3)
    out = torch.matmul(pts, R.transpose(1, 2))
    loss = out.abs().mean()
    loss.backward()
    return dict(R=R, loss=loss, g=aa.grad, dtype=str(R.dtype).replace("autograd.", "torch."))


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


def camera(m):
    torch, F = m.torch, m.F
    torch.manual_seed(11)
    B, N = 2, 50
    pts = torch.randn(B, N, 3) * torch.tensor([1.0, 1.0, 0.5]) + torch.tensor([0.0, 0.0, 5.0])
    K = torch.tensor([[[400.0, 0, 160], [0, 400, 120], [0, 0, 1]]]).repeat(B, 1, 1)
    rvec = torch.tensor([[0.01, 0.02, -0.03], [0.1, -0.05, 0.0]], requires_grad=True)
    tvec = torch.tensor([[0.0, 0.1, 0.0], [0.2, 0.0, -0.1]], requires_grad=True)
    theta = rvec.norm(dim=1, keepdim=True).unsqueeze(-1)
    k = rvec.unsqueeze(-1) / theta
    kx, ky, kz = k[:, 0], k[:, 1], k[:, 2]
    z = torch.zeros_like(kx)
    Kx = torch.cat([z, -kz, ky, kz, z, -kx, -ky, kx, z], 1).view(B, 3, 3)
    R = torch.eye(3).unsqueeze(0) + torch.sin(theta) * Kx + (1 - torch.cos(theta)) * torch.bmm(Kx, Kx)
    cam = torch.bmm(pts, R.transpose(1, 2)) + tvec.unsqueeze(1)
    pix = torch.bmm(cam, K.transpose(1, 2))
    uv = pix[..., :2] / pix[..., 2:].clamp(min=1e-6)
    # radial distortion
    xn = cam[..., :2] / cam[..., 2:]
    r2 = (xn ** 2).sum(-1, keepdim=True)
    xd = xn * (1 + 0.1 * r2 + 0.01 * r2 ** 2)
    uvd = xd * torch.diagonal(K, dim1=1, dim2=2)[:, None, :2] + K[:, None, :2, 2]
    target = uv.detach() + torch.randn_like(uv)
    err = F.smooth_l1_loss(uvd, target, beta=2.0) + F.huber_loss(uv, target, delta=1.5)
    err.backward()
    # normalized grid coordinates and visibility
    grid = torch.stack([uv[..., 0] / 320 * 2 - 1, uv[..., 1] / 240 * 2 - 1], -1)
    vis = ((grid.abs() <= 1).all(-1) & (cam[..., 2] > 0))
    img = torch.randn(B, 3, 24, 32)
    samp = F.grid_sample(img, grid.detach()[:, :, None], align_corners=False)
    return dict(uv=uv, err=err, gr=rvec.grad, gt=tvec.grad, vis=vis, nvis=vis.sum(), samp=samp)


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


def smpl_lbs(m):
    torch, F = m.torch, m.F
    torch.manual_seed(14)
    def batch_rodrigues(rot_vecs, epsilon=1e-8, dtype=torch.float32):
        batch_size = rot_vecs.shape[0]
        angle = torch.norm(rot_vecs + 1e-8, dim=1, keepdim=True)
        rot_dir = rot_vecs / angle
        cos = torch.unsqueeze(torch.cos(angle), dim=1)
        sin = torch.unsqueeze(torch.sin(angle), dim=1)
        rx, ry, rz = torch.split(rot_dir, 1, dim=1)
        zeros = torch.zeros((batch_size, 1), dtype=dtype)
        K = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view((batch_size, 3, 3))
        ident = torch.eye(3, dtype=dtype).unsqueeze(dim=0)
        return ident + sin * K + (1 - cos) * torch.bmm(K, K)
    def transform_mat(R, t):
        return torch.cat([F.pad(R, [0, 0, 0, 1]), F.pad(t, [0, 0, 0, 1], value=1)], dim=2)
    def batch_rigid_transform(rot_mats, joints, parents):
        joints = torch.unsqueeze(joints, dim=-1)
        rel_joints = joints.clone()
        rel_joints[:, 1:] -= joints[:, parents[1:]]
        transforms_mat = transform_mat(rot_mats.reshape(-1, 3, 3), rel_joints.reshape(-1, 3, 1)).reshape(-1, joints.shape[1], 4, 4)
        transform_chain = [transforms_mat[:, 0]]
        for i in range(1, parents.shape[0]):
            curr_res = torch.matmul(transform_chain[parents[i]], transforms_mat[:, i])
            transform_chain.append(curr_res)
        transforms = torch.stack(transform_chain, dim=1)
        posed_joints = transforms[:, :, :3, 3]
        joints_homogen = F.pad(joints, [0, 0, 0, 1])
        rel_transforms = transforms - F.pad(torch.matmul(transforms, joints_homogen), [3, 0, 0, 0, 0, 0, 0, 0])
        return posed_joints, rel_transforms
    B, J, V = 2, 6, 40
    parents = torch.tensor([-1, 0, 1, 2, 0, 4])
    pose = (0.4 * torch.randn(B, J * 3)).requires_grad_()
    joints = torch.randn(B, J, 3)
    verts = torch.randn(B, V, 3)
    W = F.softmax(torch.randn(V, J) * 3, dim=-1)
    rot_mats = batch_rodrigues(pose.view(-1, 3)).view([B, -1, 3, 3])
    J_t, A = batch_rigid_transform(rot_mats, joints, parents)
    T = torch.matmul(W, A.view(B, J, 16)).view(B, -1, 4, 4)
    homogen_coord = torch.ones([B, V, 1])
    v_posed_homo = torch.cat([verts, homogen_coord], dim=2)
    v_homo = torch.matmul(T, torch.unsqueeze(v_posed_homo, dim=-1))
    out = v_homo[:, :, :3, 0]
    loss = out.pow(2).mean() + J_t.abs().mean()
    loss.backward()
    return dict(out=out, J_t=J_t, g=pose.grad)


def nan_edges(m):
    torch, F = m.torch, m.F
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


def rot_eig(m):
    torch = m.torch
    torch.manual_seed(15)
    w = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    K = torch.tensor([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]], dtype=torch.float64)
    R = torch.linalg.matrix_exp(K)
    ev, evec = torch.linalg.eig(R)
    idx = torch.argmin((ev - 1).abs())
    axis = evec[:, idx].real
    axis = axis * torch.sign(axis[0])
    evals_only = torch.linalg.eigvals(R)
    Rg = R.clone().requires_grad_()
    e2 = torch.linalg.eigvals(Rg)
    (e2.real.sum() + e2.imag.abs().sum()).backward()
    return dict(ev=torch.sort(ev.real).values, axis=axis, absim=torch.sort(evals_only.imag.abs()).values, g=Rg.grad, dt=str(ev.dtype).split(".")[-1])


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


def misc(m):
    torch, F = m.torch, m.F
    torch.manual_seed(18)
    out = {}
    a = torch.tensor([-4.0, -0.5, 3.5, 7.0, 10.0], requires_grad=True)
    w = torch.remainder(a + math.pi, 2 * math.pi) - math.pi
    f = torch.fmod(a, 2 * math.pi)
    (w.sum() + f.sum()).backward(); out["w"] = w; out["f"] = f; out["gw"] = a.grad
    out["deg"] = torch.rad2deg(w); out["rad"] = torch.deg2rad(torch.tensor([90, 180]))
    x = torch.tensor([0.5, float("nan"), float("inf")], requires_grad=True)
    torch.nan_to_num(x, nan=0.0, posinf=1.0).sum().backward(); out["gnan"] = x.grad
    M = torch.randn(2, 3, 3)
    out["mT"] = M.mT; out["mH"] = M.mH
    U, S, V = torch.svd(M[0], some=False); out["S"] = S
    out["svd_drv"] = torch.linalg.svd(M[0], full_matrices=False, driver=None).S
    Rf = torch.linalg.matrix_exp(10 * (M - M.mT))
    out["orth"] = (Rf @ Rf.mT - torch.eye(3)).abs().max() < 1e-4
    out["diff"] = torch.diff(a, n=2)
    # acos linear extrapolation (pytorch3d)
    def acos_linear_extrapolation(x, bounds=(-0.9999, 0.9999)):
        lower, upper = bounds
        acos_out = torch.empty_like(x)
        x_upper = x >= upper
        x_lower = x <= lower
        x_mid = (~x_upper) & (~x_lower)
        acos_out[x_mid] = torch.acos(x[x_mid])
        acos_out[x_upper] = math.acos(upper) + (x[x_upper] - upper) * (-1.0 / math.sqrt(1.0 - upper * upper))
        acos_out[x_lower] = math.acos(lower) + (x[x_lower] - lower) * (-1.0 / math.sqrt(1.0 - lower * lower))
        return acos_out
    c = torch.tensor([-1.2, -1.0, 0.0, 0.99995, 1.0, 1.1], dtype=torch.float64, requires_grad=True)
    ae = acos_linear_extrapolation(c); ae.sum().backward(); out["ae"] = ae; out["gae"] = c.grad
    # hat via cross product matrix with torch.linalg.cross against expanded identity
    v = torch.randn(4, 3, requires_grad=True)
    Kc = torch.linalg.cross(v[:, None, :].expand(4, 3, 3), -torch.eye(3).expand(4, 3, 3), dim=-1)
    Kc.pow(2).sum().backward(); out["Kc"] = Kc; out["gv"] = v.grad
    # quaternion exp/log maps
    q = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=-1).requires_grad_()
    vnorm = q[:, 1:].norm(dim=-1, keepdim=True)
    logq = torch.atan2(vnorm, q[:, :1]) * q[:, 1:] / vnorm
    logq.sum().backward(); out["logq"] = logq; out["gq"] = q.grad
    # Rotation interpolation: matrix power via eig-free cumulative product
    R = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.2, 0], [0.2, 0, 0], [0, 0, 0]]))
    acc = [torch.eye(3)]
    for i in range(5):
        acc.append(acc[-1] @ R)
    out["acc"] = torch.stack(acc)
    out["mpow"] = torch.linalg.matrix_power(R, -3)
    # float32 kabsch
    P = torch.randn(100, 3); Q = P @ R.T + 0.5
    H = (P - P.mean(0)).T @ (Q - Q.mean(0))
    U, S, Vh = torch.linalg.svd(H)
    Rk = Vh.T @ U.T
    out["Rk"] = Rk
    out["Rkdt"] = str(Rk.dtype).split(".")[-1]
    return out


def torch_norm_variants(m):
    torch = m.torch
    torch.manual_seed(19)
    x = torch.randn(4, 3, requires_grad=True)
    out = {}
    vals = [x.norm(), x.norm(dim=1), x.norm(p=1, dim=0), x.norm(p="fro"), x.norm(p=float("inf"), dim=1), torch.norm(x, dim=1, keepdim=True), torch.norm(x, p="nuc"), x.norm(2, -1), torch.linalg.norm(x, dim=(0, 1)), torch.linalg.matrix_norm(x, ord="nuc")]
    tot = sum(v.sum() for v in vals)
    tot.backward()
    out["vals"] = [v for v in vals]; out["g"] = x.grad
    out["renorm"] = torch.renorm(x.detach(), p=2, dim=0, maxnorm=1.0)
    out["dist"] = torch.dist(x.detach(), torch.zeros(4, 3))
    out["cdist"] = torch.cdist(x.detach()[None], x.detach()[None] + 1, p=1)
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


def schur_ba(m):
    torch = m.torch
    torch.manual_seed(21)
    nc, npt, nobs = 3, 8, 20
    cam_idx = torch.randint(0, nc, (nobs,)); pt_idx = torch.randint(0, npt, (nobs,))
    Jc = torch.randn(nobs, 2, 6, dtype=torch.float64); Jp = torch.randn(nobs, 2, 3, dtype=torch.float64)
    r = torch.randn(nobs, 2, dtype=torch.float64)
    Hcc = torch.zeros(nc, 6, 6, dtype=torch.float64).index_add_(0, cam_idx, Jc.mT @ Jc)
    Hpp = torch.zeros(npt, 3, 3, dtype=torch.float64).index_add_(0, pt_idx, Jp.mT @ Jp) + torch.eye(3, dtype=torch.float64)
    Hcp = torch.zeros(nc, npt, 6, 3, dtype=torch.float64)
    Hcp.index_put_((cam_idx, pt_idx), Jc.mT @ Jp, accumulate=True)
    gc = torch.zeros(nc, 6, dtype=torch.float64).index_add_(0, cam_idx, (Jc.mT @ r[..., None])[..., 0])
    gp = torch.zeros(npt, 3, dtype=torch.float64).index_add_(0, pt_idx, (Jp.mT @ r[..., None])[..., 0])
    Hpp_inv = torch.linalg.inv(Hpp)
    S = Hcc.new_zeros(nc * 6, nc * 6)
    S += torch.block_diag(*Hcc) + 1e-3 * torch.eye(nc * 6, dtype=torch.float64)
    W = Hcp.permute(0, 2, 1, 3).reshape(nc * 6, npt * 3)
    Binv = torch.block_diag(*Hpp_inv)
    S = S - W @ Binv @ W.T
    rhs = -gc.reshape(-1) + W @ Binv @ gp.reshape(-1)
    dc = torch.linalg.solve(S, rhs)
    dp = -(Binv @ (gp.reshape(-1) + W.T @ dc))
    # dense check
    Hfull = torch.zeros(nc * 6 + npt * 3, nc * 6 + npt * 3, dtype=torch.float64)
    Hfull[:nc * 6, :nc * 6] = torch.block_diag(*Hcc) + 1e-3 * torch.eye(nc * 6, dtype=torch.float64)
    Hfull[nc * 6:, nc * 6:] = torch.block_diag(*Hpp)
    Hfull[:nc * 6, nc * 6:] = W; Hfull[nc * 6:, :nc * 6] = W.T
    full = torch.linalg.solve(Hfull, -torch.cat([gc.reshape(-1), gp.reshape(-1)]))
    sp = torch.sparse_coo_tensor(torch.stack([cam_idx, pt_idx]), torch.ones(nobs, dtype=torch.float64), (nc, npt)).coalesce()
    Lc, info = torch.linalg.cholesky_ex(Hpp)
    sol_right = torch.linalg.solve(Hpp, torch.ones(npt, 2, 3, dtype=torch.float64), left=False)
    return dict(dc=dc, dp=dp, full=full, spd=sp.to_dense(), nnz=sp._nnz(), Lc=Lc, info=info, sol_right=sol_right)


def functional_api(m):
    torch = m.torch
    AF = torch.autograd.functional
    torch.manual_seed(22)
    def fk2(q):
        l1, l2 = 1.0, 0.7
        x = l1 * torch.cos(q[0]) + l2 * torch.cos(q[0] + q[1])
        y = l1 * torch.sin(q[0]) + l2 * torch.sin(q[0] + q[1])
        return torch.stack([x, y])
    q = torch.tensor([0.3, 0.9], dtype=torch.float64)
    out = {}
    out["J"] = AF.jacobian(fk2, q)
    out["Jv"] = AF.jacobian(fk2, q, vectorize=True)
    out["Jf"] = AF.jacobian(fk2, q, vectorize=True, strategy="forward-mode")
    out["H"] = AF.hessian(lambda q: fk2(q).pow(2).sum() + q.prod(), q)
    out["hvp"] = AF.hvp(lambda q: fk2(q).pow(3).sum(), q, torch.ones(2, dtype=torch.float64))
    out["vhp"] = AF.vhp(lambda q: fk2(q).pow(3).sum(), q, torch.ones(2, dtype=torch.float64))
    out["jvp"] = AF.jvp(fk2, q, torch.ones(2, dtype=torch.float64))
    out["vjp"] = AF.vjp(fk2, q, torch.ones(2, dtype=torch.float64))
    out["jc"] = torch.func.jacrev(fk2, chunk_size=1)(q)
    # manipulability
    J = out["J"]
    out["manip"] = torch.sqrt(torch.linalg.det(J @ J.T))
    # null-space projection for redundant arm
    def fk3(q):
        c = torch.cumsum(q, 0)
        return torch.stack([torch.cos(c).sum(), torch.sin(c).sum()])
    q3 = torch.tensor([0.1, 0.5, -0.3], dtype=torch.float64)
    J3 = AF.jacobian(fk3, q3)
    Jp = torch.linalg.pinv(J3, rcond=1e-6)
    N = torch.eye(3, dtype=torch.float64) - Jp @ J3
    out["N"] = N
    out["pinv_h"] = torch.linalg.pinv(J3 @ J3.T, hermitian=True)
    out["pinv_atol"] = torch.linalg.pinv(J3, atol=0.5, rtol=0.0)
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


def assign(m):
    torch = m.torch
    out = {}
    th = torch.tensor(0.4, requires_grad=True)
    R = torch.eye(3)
    R[0, 0] = torch.cos(th); R[0, 1] = -torch.sin(th); R[1, 0] = torch.sin(th); R[1, 1] = torch.cos(th)
    p = R @ torch.tensor([1.0, 2.0, 3.0])
    p.sum().backward(); out["R"] = R; out["gth"] = th.grad; out["rg"] = R.requires_grad
    th2 = torch.tensor([0.4, 1.0], requires_grad=True)
    R2 = torch.zeros(2, 3, 3)
    R2[:, 2, 2] = 1
    R2[:, :2, :2] = torch.stack([torch.stack([th2.cos(), -th2.sin()], -1), torch.stack([th2.sin(), th2.cos()], -1)], -2)
    R2.sum().backward(); out["gth2"] = th2.grad
    # tensor from list of grad tensors
    a = torch.tensor(0.3, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        M = torch.tensor([[torch.cos(a), -torch.sin(a)], [torch.sin(a), torch.cos(a)]])
    out["M"] = M; out["Mrg"] = M.requires_grad
    x = torch.randn(3)
    out["np64"] = str((x * np.float64(2.0)).dtype).split(".")[-1]
    out["np32"] = str((x.double() * np.float32(2.0)).dtype).split(".")[-1]
    out["nparr_dtype"] = str((x * torch.from_numpy(np.array(2.0))).dtype).split(".")[-1]
    out["mathpi"] = x * math.pi
    out["mathcos"] = math.cos(torch.tensor(0.5))
    out["inverse"] = torch.inverse(torch.eye(3) * 2)
    out["Tinv"] = (torch.eye(4) * 2).inverse()
    out["int_div"] = str((torch.tensor([1, 2]) / 2).dtype).split(".")[-1]
    out["rot_scalar"] = torch.tensor([math.cos(0.3), -math.sin(0.3)])
    out["stack_float"] = torch.stack([torch.tensor(1.0), torch.tensor(2.0, dtype=torch.float64)]).dtype.__str__().split(".")[-1]
    return out


def lbfgs_icp(m):
    torch, F = m.torch, m.F
    torch.manual_seed(23)
    src = torch.randn(60, 3, dtype=torch.float64)
    w_true = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    def so3(w):
        th = w.norm()
        K = torch.zeros(3, 3, dtype=w.dtype)
        K = K + torch.tensor([[0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=w.dtype) * w[0] + torch.tensor([[0, 0, 1], [0, 0, 0], [-1, 0, 0]], dtype=w.dtype) * w[1] + torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 0]], dtype=w.dtype) * w[2]
        return torch.eye(3, dtype=w.dtype) + torch.sin(th) / th * K + (1 - torch.cos(th)) / th**2 * K @ K
    dst = src @ so3(w_true).T + torch.tensor([0.5, 0.0, -0.2], dtype=torch.float64)
    dst = dst[torch.randperm(60)]
    w = torch.full((3,), 1e-3, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = m.optim.LBFGS([w, t], lr=1, max_iter=50, line_search_fn="strong_wolfe")
    hist = []
    for outer in range(10):
        with torch.no_grad():
            moved = src @ so3(w).T + t
            nn_idx = torch.cdist(moved, dst).argmin(1)
        def closure():
            opt.zero_grad()
            loss = (src @ so3(w).T + t - dst[nn_idx]).pow(2).sum(-1).mean()
            loss.backward()
            return loss
        l = opt.step(closure)
        hist.append(l.detach())
    # jacobian by is_grads_batched
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = torch.stack([x[0] * x[1], x[2].sin(), x[3].exp() * x[0], x.pow(2).sum()])
    J, = torch.autograd.grad(y, x, torch.eye(4, dtype=torch.float64), is_grads_batched=True)
    A = torch.stack([torch.eye(3, dtype=torch.float64), -torch.eye(3, dtype=torch.float64), torch.tensor([[1.0, 2, 0], [2, 1, 0], [0, 0, 1]], dtype=torch.float64)])
    L, info = torch.linalg.cholesky_ex(A)
    s, sinfo = torch.linalg.solve_ex(torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    return dict(w=w, t=t, hist=torch.stack(hist), J=J, info=info, L0=L[0], sinfo=sinfo, state_n=opt.state[opt._params[0]]["n_iter"])


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


# ----------------------------------------------------------------------------------------------
# tests: compared with PyTorch where installed; invariants and NumPy always
# ----------------------------------------------------------------------------------------------

def orthonormal(R, tol=1e-9):
    R = np.asarray(R, dtype=np.float64)
    eye = np.broadcast_to(np.eye(3), R.shape)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), eye, atol=tol)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=tol)


def hat_np(w):
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])


def rodrigues_np(w):
    th = np.linalg.norm(w)
    K = hat_np(w / th)
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def test_quaternions_and_slerp():
    o, _ = run_both(quat_prog, rtol=1e-10, atol=1e-12)
    orthonormal(o["R"])
    np.testing.assert_allclose(o["det"], 1.0, atol=1e-12)
    q = o["q_back"]
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    assert (q[:, 0] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(o["pq"], axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(o["sl"], axis=-1), 1.0, atol=1e-12)
    assert np.isfinite(o["gp"]).all()
    # slerp(q, q): where q·q rounds to 1, clamp(max=1) passes acos's -inf slope on, and 0 * -inf is nan (PyTorch's too)
    assert np.isnan(o["gq"]).any()


def test_so3_exp_log_rodrigues():
    o, _ = run_both(rodrigues, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(o["R"], o["R2"], atol=1e-12)
    orthonormal(o["R"])
    np.testing.assert_allclose(o["R"][5], np.eye(3), atol=0)
    assert np.isfinite(o["g"]).all()
    np.testing.assert_array_equal(o["g0"], 0.0)  # the norm's gradient at 0 is 0 (a subgradient), not nan
    np.testing.assert_array_equal(o["g1"], 0.0)


def test_se3_exp_matches_matrix_exp():
    o, _ = run_both(se3, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(o["T"], o["Tm"], atol=1e-12)
    np.testing.assert_allclose(o["comp"], np.broadcast_to(np.eye(4), (4, 4, 4)), atol=1e-12)
    orthonormal(o["T"][:, :3, :3])
    assert np.isfinite(o["g"]).all()


def test_forward_and_inverse_kinematics():
    o, _ = run_both(fk_ik, rtol=1e-8, atol=1e-10)
    orthonormal(o["frames"][..., :3, :3])
    np.testing.assert_array_equal(o["frames"][..., 3, :], np.broadcast_to([0.0, 0, 0, 1], (5, 6, 4)))
    errs = o["errs"]
    assert errs[-1] < 1e-6 * errs[0] and (np.diff(errs) < 0).all()  # damped least squares converges
    np.testing.assert_allclose(o["dq_pinv"], np.linalg.pinv(o["J"]) @ (o["J"] @ o["dq_pinv"]), atol=1e-12)
    assert o["l"] < 0.05


def test_weighted_kabsch_and_quaternion_average():
    o, _ = run_both(kabsch, rtol=1e-8, atol=1e-10)
    orthonormal(o["R"])
    Rt = rodrigues_np(np.array([0.5, 0.2, 0.3]))
    np.testing.assert_allclose(o["R"][:2], np.broadcast_to(Rt, (2, 3, 3)), atol=0.02)
    assert o["rmsd"][:2].max() < 0.05 < o["rmsd"][2]  # the reflected cloud cannot be matched by a rotation
    assert np.isfinite(o["gw"]).all() and np.isfinite(o["gP"]).all()
    np.testing.assert_allclose(np.linalg.norm(o["qavg"]), 1.0, atol=1e-12)
    assert (np.diff(o["evals"]) > 0).all() and o["qavg"][0] > 0.9


def test_6d_rotations_geodesic_loss_and_euler():
    o, _ = run_both(six_d, rtol=1e-8, atol=1e-10)
    assert o["losses"][-1] < o["losses"][0]
    np.testing.assert_array_equal(o["gI"], 0.0)  # clamped acos at the identity: no gradient, not nan
    np.testing.assert_allclose(o["g"], math.acos(1 - 1e-7), rtol=1e-6)
    assert np.isfinite(o["gd"]).all()


def test_levenberg_marquardt_resection():
    o, _ = run_both(ba, rtol=1e-7, atol=1e-8)
    assert o["costs"][-1] < 0.05 * o["costs"][0]
    np.testing.assert_allclose(o["pose"], [0.05, -0.1, 0.02, 0.1, -0.2, 0.3], atol=0.05)
    np.testing.assert_allclose(o["Jf"].reshape(30, 2, 6), o["Jpose"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(o["hess"], o["hess"].T, rtol=1e-9)


def test_pose_graph_gauss_newton_and_atan2():
    o, _ = run_both(pose_graph, rtol=1e-8, atol=1e-10)
    assert o["cs"][-1] < 0.1 * o["cs"][0]
    y, x = np.array([0.0, 1.0, -0.0, 1e-30, -1.0]), np.array([1.0, 0.0, -1.0, -1.0, -1e-30])
    np.testing.assert_array_equal(o["a"], np.arctan2(y, x))
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(o["gy"], x / (x * x + y * y))
        np.testing.assert_allclose(o["gx"], -y / (x * x + y * y))


def test_gradients_at_the_edges():
    o, _ = run_both(edge_grads, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(o["gacos"], [-np.inf, -np.inf, -1 / math.sqrt(0.75)], rtol=1e-6)
    np.testing.assert_allclose(o["gacos_c"], [0, 0, -1 / math.sqrt(0.75)], rtol=1e-6)
    assert np.isnan(o["gsqrt0"]).all() and np.isnan(o["gwhere"]).all()  # torch.where's unselected 0/0
    np.testing.assert_allclose(o["gnormalize0"], 1e12, rtol=1e-7)  # 1/eps
    np.testing.assert_array_equal(o["gdet"], np.eye(3))
    # (PyTorch's matrix_exp of a lone matrix of 1-norm 0.5 in float32 is its degree-8 approximant: 5e-6 from e^A)
    assert 4e-6 < np.abs(o["E"] - rodrigues_np(np.array([0.1, 0.2, 0.3]))).max() < 6e-6


def test_float32_axis_angle_to_matrix():
    o, _ = run_both(float32_rot, rtol=2e-5, atol=1e-6, compare=False)
    assert o["R"].dtype == np.float32 and o["g"].dtype == np.float32
    orthonormal(o["R"], tol=1e-5)


def test_vmap_se3_jacobians_and_functional_call():
    o, _ = run_both(vmap_lie, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(o["T"][0], np.eye(4), atol=0)
    np.testing.assert_allclose(o["J"], o["Jf"], atol=1e-12)
    orthonormal(o["T"][:, :3, :3])
    np.testing.assert_allclose(o["aux"], o["T"][1], atol=1e-12)
    assert o["pgw"].shape == (4, 6, 3) and o["pgb"].shape == (4, 6)


def test_linalg_toolbox():
    o, _ = run_both(linalg_misc, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(o["Q"].T @ o["Q"], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(o["hh"].T @ o["hh"], np.eye(4), atol=1e-12)
    assert o["rank"] == 2 and o["info"].sum() == 0
    fro, nuc, two, minus_two, inf, one = o["norms"]
    assert minus_two < two <= fro <= nuc
    np.testing.assert_allclose(o["cond"], two / minus_two, rtol=1e-10)
    np.testing.assert_allclose(o["logabs"], np.log(np.abs(np.linalg.det(np.asarray(o["iv"])))) * -1, rtol=1e-10)


def test_pinhole_camera_with_distortion():
    o, _ = run_both(camera, rtol=2e-5, atol=1e-5)
    assert np.isfinite(o["gr"]).all() and np.isfinite(o["gt"]).all()
    assert o["uv"].shape == (2, 50, 2) and o["samp"].shape == (2, 3, 50, 1)
    assert o["nvis"] == o["vis"].sum()


def test_custom_functions():
    o, _ = run_both(custom_fn, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(o["g_custom"], o["g_auto"], rtol=1e-9)
    assert o["ok"] is True and o["n_rg"] is False
    qn = o["qn"][0]
    np.testing.assert_allclose(o["jac"], (np.eye(4) - np.outer(qn, qn)) / o["n"][0], rtol=1e-12, atol=1e-14)


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


def test_errors_and_dtypes():
    o, _ = run_both(errors, rtol=1e-5, atol=1e-5)
    for key in ("cross_bad", "cross_dim", "det_nonsq", "det_int", "solve_sing", "svd_int", "eigh_nonsq", "bmm_bad",
                "inv_sing", "chol_npd", "matmul_dtype"):
        assert o[key] != "no error", key
    assert o["solve_sing"] == "LinAlgError" and o["cross_dim0"] == "no error"
    assert o["acos_int"] == o["atan2_int"] == "float32" and o["cross_int_dtype"] == "int64"
    np.testing.assert_array_equal(o["cross_int_val"], [0, 0, 1])


def test_smpl_linear_blend_skinning():
    o, _ = run_both(smpl_lbs, rtol=1e-5, atol=1e-6)
    assert o["out"].shape == (2, 40, 3) and np.isfinite(o["g"]).all() and np.abs(o["g"]).sum() > 0


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


def test_rotation_axis_by_eig():
    o, _ = run_both(rot_eig, rtol=1e-9, atol=1e-11)
    w = np.array([0.3, -0.5, 0.8])
    np.testing.assert_allclose(o["axis"], w / np.linalg.norm(w), atol=1e-12)
    th = np.linalg.norm(w)
    np.testing.assert_allclose(o["ev"], [math.cos(th), math.cos(th), 1.0], atol=1e-12)
    np.testing.assert_allclose(o["absim"], [0, math.sin(th), math.sin(th)], atol=1e-12)
    assert o["dt"] == "complex128"


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


def test_angle_wrapping_norms_and_float32_kabsch():
    o, _ = run_both(misc, rtol=1e-5, atol=1e-5)
    a = np.array([-4.0, -0.5, 3.5, 7.0, 10.0])
    np.testing.assert_allclose(o["w"], np.remainder(a + math.pi, 2 * math.pi) - math.pi, atol=1e-6)
    np.testing.assert_array_equal(o["gnan"], [1, 0, 0])
    assert o["orth"] and o["Rkdt"] == "float32"
    o, _ = run_both(torch_norm_variants, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o["vals"][0], np.linalg.norm(o["vals"][1]), rtol=1e-6)


def test_lie_tensor_subclass():
    o, _ = run_both(lietensor, rtol=1e-10, atol=1e-12)
    assert o["is_sub"] and o["has_ltype"] and o["ysub"] == "LieTensor"
    np.testing.assert_allclose(np.linalg.norm(o["q"], axis=-1), 1.0, atol=1e-12)


def test_schur_complement_bundle_adjustment():
    o, _ = run_both(schur_ba, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.concatenate([o["dc"], o["dp"]]), o["full"], rtol=1e-8, atol=1e-10)
    assert o["info"].sum() == 0


def test_functional_jacobians_of_a_planar_arm():
    o, _ = run_both(functional_api, rtol=1e-9, atol=1e-11)
    q0, q1 = 0.3, 0.9
    J = np.array([[-math.sin(q0) - 0.7 * math.sin(q0 + q1), -0.7 * math.sin(q0 + q1)],
                  [math.cos(q0) + 0.7 * math.cos(q0 + q1), 0.7 * math.cos(q0 + q1)]])
    for key in ("J", "Jv", "Jf", "jc"):
        np.testing.assert_allclose(o[key], J, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(o["manip"], abs(np.linalg.det(J)), rtol=1e-12)
    np.testing.assert_allclose(o["hvp"][1], o["vhp"][1], rtol=1e-12)
    np.testing.assert_allclose(o["H"], np.asarray(o["H"]).T, rtol=1e-12)


def test_svd_and_eigh_backward_refusals():
    o, _ = run_both(svd_errors, rtol=1e-9, atol=1e-11)
    assert o["svd_full_U"] == "no error"  # (PyTorch differentiates U's first k columns of a full SVD)
    assert o["eighU"] == "no error"


def test_rotation_by_item_assignment():
    o, _ = run_both(assign, rtol=1e-6, atol=1e-6)
    th = 0.4
    np.testing.assert_allclose(o["gth"], -3 * math.sin(th) - math.cos(th), rtol=1e-6)
    assert o["rg"] is True and o["Mrg"] is False
    assert o["np64"] == "float32" and o["np32"] == "float64" and o["int_div"] == "float32"


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


def test_icp_by_lbfgs_with_nearest_neighbours():
    o, _ = run_both(lbfgs_icp, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(o["w"], [0.2, -0.1, 0.3], atol=1e-5)
    np.testing.assert_allclose(o["t"], [0.5, 0.0, -0.2], atol=1e-5)
    np.testing.assert_array_equal(o["info"], [0, 1, 2])  # the order of the first leading minor that is not positive
    assert o["sinfo"] == 2 and o["hist"][-1] < 1e-10
    x_rows = o["J"]
    assert x_rows.shape == (4, 4) and np.isfinite(x_rows).all()


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
