# ruff: noqa: B007, B023, E501, E702, F841  (the programs are kept as their authors wrote them)
"""Robotics and Lie-group programs as PyTorch users write them, run as tests/probe23_lie_common.py says. Poses,
kinematics and multi-view geometry: the SE(3) exponential against ``matrix_exp``; Denavit-Hartenberg forward
kinematics by cumulative ``bmm``, inverse kinematics by damped least squares (``autograd.functional.jacobian``,
``linalg.solve``), ``pinv``, ``lstsq`` and Adam; a planar arm's Jacobians by the ``autograd.functional`` API
(manipulability, a null-space projection); Levenberg-Marquardt camera resection by ``func.jacrev``, per-point
Jacobians by ``vmap(jacrev)``, ``jacfwd``, ``hessian``; a 2-D pose graph by Gauss-Newton with angle wrapping; the
Schur complement of bundle adjustment (``index_add_``, ``index_put_(accumulate=True)``, ``block_diag``); SMPL's
linear blend skinning (``batch_rodrigues``, a kinematic tree); a pinhole camera with radial distortion; ICP by L-BFGS
with nearest neighbours."""

import math

import numpy as np

from .probe23_lie_common import orthonormal
from .pytorch_programs import run_both


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


def test_pinhole_camera_with_distortion():
    o, _ = run_both(camera, rtol=2e-5, atol=1e-5)
    assert np.isfinite(o["gr"]).all() and np.isfinite(o["gt"]).all()
    assert o["uv"].shape == (2, 50, 2) and o["samp"].shape == (2, 3, 50, 1)
    assert o["nvis"] == o["vis"].sum()


def test_smpl_linear_blend_skinning():
    o, _ = run_both(smpl_lbs, rtol=1e-5, atol=1e-6)
    assert o["out"].shape == (2, 40, 3) and np.isfinite(o["g"]).all() and np.abs(o["g"]).sum() > 0


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


def test_icp_by_lbfgs_with_nearest_neighbours():
    o, _ = run_both(lbfgs_icp, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(o["w"], [0.2, -0.1, 0.3], atol=1e-5)
    np.testing.assert_allclose(o["t"], [0.5, 0.0, -0.2], atol=1e-5)
    np.testing.assert_array_equal(o["info"], [0, 1, 2])  # the order of the first leading minor that is not positive
    assert o["sinfo"] == 2 and o["hist"][-1] < 1e-10
    x_rows = o["J"]
    assert x_rows.shape == (4, 4) and np.isfinite(x_rows).all()
