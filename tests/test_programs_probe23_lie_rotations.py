# ruff: noqa: B007, E501, E702, F841  (the programs are kept as their authors wrote them)
"""Robotics and Lie-group programs as PyTorch users write them, run as tests/probe23_lie_common.py says. Rotations:
quaternions (multiply, conjugate, to and from matrices by PyTorch3D's candidate-argmax, slerp with a small-angle
branch); SO(3) exponential and log maps with ``torch.where`` small-angle branches (and their gradients at 0);
weighted Kabsch with the det sign fix and gradients through ``svd``, Markley's quaternion average by ``eigh``; the
6-D representation (Gram-Schmidt, ``cross``) trained on a clamped-acos geodesic loss, Euler angles by
``atan2``/``asin``; axis-angle to matrix in float32; the rotation axis by ``eig``; angle wrapping (``remainder``,
``fmod``), acos by linear extrapolation, the norms' variants and Kabsch in float32; rotations built by item
assignment."""

import math
import warnings

import numpy as np

from .probe23_lie_common import orthonormal, rodrigues_np
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


# ----------------------------------------------------------------------------------------------
# tests: compared with PyTorch where installed; invariants and NumPy always
# ----------------------------------------------------------------------------------------------


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


def test_float32_axis_angle_to_matrix():
    o, _ = run_both(float32_rot, rtol=2e-5, atol=1e-6, compare=False)
    assert o["R"].dtype == np.float32 and o["g"].dtype == np.float32
    orthonormal(o["R"], tol=1e-5)


def test_rotation_axis_by_eig():
    o, _ = run_both(rot_eig, rtol=1e-9, atol=1e-11)
    w = np.array([0.3, -0.5, 0.8])
    np.testing.assert_allclose(o["axis"], w / np.linalg.norm(w), atol=1e-12)
    th = np.linalg.norm(w)
    np.testing.assert_allclose(o["ev"], [math.cos(th), math.cos(th), 1.0], atol=1e-12)
    np.testing.assert_allclose(o["absim"], [0, math.sin(th), math.sin(th)], atol=1e-12)
    assert o["dt"] == "complex128"


def test_angle_wrapping_norms_and_float32_kabsch():
    o, _ = run_both(misc, rtol=1e-5, atol=1e-5)
    a = np.array([-4.0, -0.5, 3.5, 7.0, 10.0])
    np.testing.assert_allclose(o["w"], np.remainder(a + math.pi, 2 * math.pi) - math.pi, atol=1e-6)
    np.testing.assert_array_equal(o["gnan"], [1, 0, 0])
    assert o["orth"] and o["Rkdt"] == "float32"
    o, _ = run_both(torch_norm_variants, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o["vals"][0], np.linalg.norm(o["vals"][1]), rtol=1e-6)


def test_rotation_by_item_assignment():
    o, _ = run_both(assign, rtol=1e-6, atol=1e-6)
    th = 0.4
    np.testing.assert_allclose(o["gth"], -3 * math.sin(th) - math.cos(th), rtol=1e-6)
    assert o["rg"] is True and o["Mrg"] is False
    assert o["np64"] == "float32" and o["np32"] == "float64" and o["int_div"] == "float32"
