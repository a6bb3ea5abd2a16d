# ruff: noqa: B007, E501, E702, E731  (the programs are kept as their authors wrote them)
"""Differentiable rendering and geometry programs in plain PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and weights (float64 mostly, to about 1e-9; NeRF and the hash grid in
float32), comparing values, gradients and short optimisation trajectories, and checked by hand where they run alone.
Geometry and cameras: Bezier curves by de Casteljau's ``lerp`` with tensor weights and by Bernstein polynomials from
``lgamma``, arc length by ``diff``/``cumsum``/``searchsorted``, clamped B-splines by Cox-de Boor with ``where``,
``lstsq`` fits and the Chamfer distance; PyTorch3D-style mesh regularisers (unique edges, a sparse COO Laplacian,
vertex normals by ``index_add``); projection Jacobians by ``autograd.functional`` (reverse, forward-mode, vectorised;
hvp/vhp) and Gauss-Newton bundle adjustment through ``lstsq``; rotation conversions (a masked-write square root,
``Tensor.max(tensor)``, a ``one_hot`` mask selecting the best-conditioned quaternion, quaternion products); FoV
cameras (look-at with the degenerate straight-down case, projection matrices written by index, clip/NDC/screen and
unprojection through ``torch.inverse``).

Every program agrees with PyTorch. What the probe found is pinned elsewhere: tests/test_avx_mathfun.py (randn's
float32 blocks of 16, an ulp off in one value in seven) and tests/test_probe21_render_fixes.py (shape refusals)."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Bezier and B-spline curves: de Casteljau by lerp, Bernstein by lgamma, arc length, Chamfer fitting
# ----------------------------------------------------------------------------------------------


def curve_data():
    rng = np.random.default_rng(3)
    s = np.linspace(0, 1, 40)
    target = np.stack([np.cos(3 * s) * (1 + s), np.sin(3 * s) * (1 + 0.5 * s)], -1) + 0.01 * rng.standard_normal((40, 2))
    ctrl = np.stack([np.linspace(1, -1, 6), np.linspace(0, 1, 6)], -1) + 0.1 * rng.standard_normal((6, 2))
    return target, ctrl


def de_casteljau(torch, ctrl, t):
    # ctrl: (n+1, D), t: (T,) -> (T, D), by repeated lerp with a tensor weight
    pts = ctrl[None].expand(t.shape[0], -1, -1)
    w = t[:, None, None]
    while pts.shape[1] > 1:
        pts = torch.lerp(pts[:, :-1], pts[:, 1:], w)
    return pts[:, 0]


def bernstein(torch, n, t):
    k = torch.arange(n + 1, dtype=t.dtype)
    log_binom = torch.lgamma(torch.tensor(n + 1.0, dtype=t.dtype)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    return torch.exp(log_binom) * t[:, None] ** k * (1 - t[:, None]) ** (n - k)


def bspline_basis(torch, knots, degree, t):
    """Cox-de Boor recursion; 0/0 terms of repeated knots are taken as 0 by torch.where."""
    t = t[:, None]
    B = ((knots[:-1] <= t) & (t < knots[1:])).to(t.dtype)
    # the right end belongs to the last non-empty span
    last = (knots[1:] > knots[:-1]).nonzero()[-1, 0]
    B[:, last] = torch.where(t[:, 0] == knots[-1], torch.ones_like(t[:, 0]), B[:, last])
    for p in range(1, degree + 1):
        left_den = knots[p:-1] - knots[:-p - 1]
        right_den = knots[p + 1:] - knots[1:-p]
        left = torch.where(left_den > 0, (t - knots[:-p - 1]) / torch.where(left_den > 0, left_den, torch.ones_like(left_den)),
                           torch.zeros_like(left_den))
        right = torch.where(right_den > 0, (knots[p + 1:] - t) / torch.where(right_den > 0, right_den, torch.ones_like(right_den)),
                            torch.zeros_like(right_den))
        B = left * B[:, :-1] + right * B[:, 1:]
    return B


def chamfer(torch, a, b):
    d = torch.cdist(a, b) ** 2
    return d.min(dim=1).values.mean() + d.min(dim=0).values.mean()


def curve_fitting(m, steps=15):
    torch, optim = m.torch, m.optim
    target, ctrl0 = (torch.from_numpy(a) for a in curve_data())
    t = torch.linspace(0, 1, 50, dtype=torch.float64)

    ctrl = ctrl0.clone().requires_grad_(True)
    opt = optim.Adam([ctrl], lr=0.05)
    history = []
    for step in range(steps):
        opt.zero_grad()
        curve = de_casteljau(torch, ctrl, t)
        seg = torch.diff(curve, dim=0)
        length = torch.linalg.vector_norm(seg, dim=-1).sum()
        loss = chamfer(torch, curve, target) + 1e-3 * length
        loss.backward()
        opt.step()
        history.append(loss.item())

    curve = de_casteljau(torch, ctrl, t)
    by_bernstein = bernstein(torch, ctrl.shape[0] - 1, t) @ ctrl
    # arc-length reparametrisation: cumulative length, then searchsorted and a lerp inside each segment
    seg_len = torch.diff(curve, dim=0).norm(dim=-1)
    s = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(seg_len, 0)])
    wanted = torch.linspace(0, 1, 11, dtype=torch.float64) * s[-1]
    idx = torch.searchsorted(s.detach(), wanted.detach(), right=False).clamp(1, len(s) - 1)
    s0, s1 = s[idx - 1], s[idx]
    frac = ((wanted - s0) / (s1 - s0)).unsqueeze(-1)
    uniform = torch.lerp(curve[idx - 1], curve[idx], frac)

    # a clamped cubic B-spline through the same control points, and a least-squares fit to the target
    degree, n_ctrl = 3, 6
    knots = torch.cat([torch.zeros(degree, dtype=torch.float64), torch.linspace(0, 1, n_ctrl - degree + 1, dtype=torch.float64),
                       torch.ones(degree, dtype=torch.float64)])
    B = bspline_basis(torch, knots, degree, t)
    spline = B @ ctrl
    u = torch.linspace(0, 1, target.shape[0], dtype=torch.float64)
    Bu = bspline_basis(torch, knots, degree, u)
    fitted = torch.linalg.lstsq(Bu, target).solution

    g_ctrl, = torch.autograd.grad(s[-1] + uniform.pow(2).sum() + spline.pow(2).sum(), ctrl)
    return {"history": history, "curve": curve.detach(), "by_bernstein": by_bernstein.detach(), "length": s[-1],
            "uniform": uniform.detach(), "B": B, "spline": spline.detach(), "fitted": fitted, "g_ctrl": g_ctrl}


def test_bezier_and_bspline_curves():
    ours, _ = run_both(curve_fitting, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    np.testing.assert_allclose(ours["by_bernstein"], ours["curve"], atol=1e-12)
    np.testing.assert_allclose(ours["B"].sum(1), 1.0, atol=1e-12)  # a partition of unity, right end included
    # the arc-length samples are equally spaced along the polyline
    gaps = np.linalg.norm(np.diff(ours["uniform"], axis=0), axis=-1)
    assert gaps.sum() <= ours["length"] + 1e-12
    np.testing.assert_allclose(ours["uniform"][[0, -1]], ours["curve"][[0, -1]], atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Mesh regularisers as PyTorch3D writes them: unique edges, the uniform Laplacian as sparse COO tensors
# (torch.sparse.sum, sparse -= sparse, L.mm), edge-length and volume terms, vertex normals by index_add
# ----------------------------------------------------------------------------------------------


def icosphere():
    t = (1.0 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    return v / np.linalg.norm(v, axis=1, keepdims=True), f
def mesh_regularisers(m):
    torch = m.torch
    v0, f = icosphere()
    verts = torch.tensor(v0 * np.array([1.0, 0.8, 1.2]), requires_grad=True)
    faces = torch.tensor(f)
    V = verts.shape[0]
    def edges_packed(faces):
        e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
        e, _ = e.sort(dim=1)
        return torch.unique(e, dim=0)
    edges = edges_packed(faces)
    def laplacian_packed(V, edges):
        e0, e1 = edges.unbind(1)
        idx01 = torch.stack([e0, e1], dim=1)
        idx10 = torch.stack([e1, e0], dim=1)
        idx = torch.cat([idx01, idx10], dim=0).t()
        ones = torch.ones(idx.shape[1], dtype=torch.float64)
        A = torch.sparse_coo_tensor(idx, ones, (V, V))
        deg = torch.sparse.sum(A, dim=1).to_dense()
        deg0 = deg[e0]
        deg0 = torch.where(deg0 > 0.0, 1.0 / deg0, deg0)
        deg1 = deg[e1]
        deg1 = torch.where(deg1 > 0.0, 1.0 / deg1, deg1)
        val = torch.cat([deg0, deg1])
        L = torch.sparse_coo_tensor(idx, val, (V, V))
        idx = torch.arange(V)
        idx = torch.stack([idx, idx], dim=0)
        ones = torch.ones(idx.shape[1], dtype=torch.float64)
        L -= torch.sparse_coo_tensor(idx, ones, (V, V))
        return L
    L = laplacian_packed(V, edges)
    opt = torch.optim.SGD([verts], lr=0.5, momentum=0.9)
    hist = []
    for it in range(6):
        opt.zero_grad()
        lap = L.mm(verts)
        loss_lap = lap.norm(dim=1).mean()
        v0e, v1e = verts[edges].unbind(1)
        loss_edge = ((v0e - v1e).norm(dim=1, p=2) - 0.9).pow(2).mean()
        fv = verts[faces]
        n = torch.cross(fv[:, 1] - fv[:, 0], fv[:, 2] - fv[:, 0], dim=1)
        area = 0.5 * n.norm(dim=1)
        vol = (fv[:, 0] * torch.cross(fv[:, 1], fv[:, 2], dim=1)).sum() / 6
        loss = loss_lap + loss_edge + 0.1 * (vol - 3.0) ** 2
        loss.backward()
        opt.step()
        hist.append(loss.item())
    # vertex normals by index_add of face normals
    vn = torch.zeros_like(verts).index_add(0, faces[:, 0], n).index_add(0, faces[:, 1], n).index_add(0, faces[:, 2], n)
    vn = torch.nn.functional.normalize(vn, dim=1)
    # cotangent weights
    fv = verts[faces]
    A_, B_, C_ = fv.unbind(1)
    a = (B_ - C_).norm(dim=1); b = (A_ - C_).norm(dim=1); c = (A_ - B_).norm(dim=1)
    s = 0.5 * (a + b + c)
    area = (s * (s - a) * (s - b) * (s - c)).clamp_(min=1e-12).sqrt()
    cota = (b * b + c * c - a * a) / area / 4
    Ld = L.to_dense()
    return hist, verts.detach(), edges, Ld, vn.detach(), cota.detach(), area.sum().detach()


def test_mesh_laplacian_and_normals():
    ours, _ = run_both(mesh_regularisers, rtol=1e-9, atol=1e-11)
    hist, verts, edges, L, vn, cota, area = ours
    assert edges.shape == (30, 2)  # an icosahedron's 30 edges
    np.testing.assert_allclose(L.sum(1), 0, atol=1e-12)  # each row of the uniform Laplacian sums to zero
    np.testing.assert_allclose(np.diag(L), -1)
    np.testing.assert_allclose(np.linalg.norm(vn, axis=1), 1, atol=1e-12)
    assert hist[-1] < hist[0]


# ----------------------------------------------------------------------------------------------
# Projection Jacobians by torch.autograd.functional (reverse, forward-mode and vectorised), Hessian products,
# and Gauss-Newton bundle adjustment through lstsq (gelsd)
# ----------------------------------------------------------------------------------------------


def bundle_adjustment(m):
    torch = m.torch
    AF = torch.autograd.functional
    K = torch.tensor([[20., 0, 8], [0, 20, 6], [0, 0, 1]], dtype=torch.float64)
    def project(X, R):
        Xc = X @ R.T + torch.tensor([0., 0, 4], dtype=torch.float64)
        uvw = Xc @ K.T
        return uvw[..., :2] / uvw[..., 2:]
    X = torch.tensor(np.random.default_rng(0).standard_normal((4, 3)))
    R = torch.linalg.matrix_exp(torch.tensor([[0., -0.1, 0.2], [0.1, 0., -0.3], [-0.2, 0.3, 0.]], dtype=torch.float64))
    out = {}
    out["jac_rev"] = AF.jacobian(project, (X, R))
    out["jac_fwd"] = AF.jacobian(project, (X, R), vectorize=True, strategy="forward-mode")
    out["jac_vec"] = AF.jacobian(project, (X, R), vectorize=True)
    f = lambda X: project(X, R).pow(2).sum()
    out["hess"] = AF.hessian(f, X)
    out["hess_vec"] = AF.hessian(f, X, vectorize=True, outer_jacobian_strategy="forward-mode")
    v = torch.ones_like(X)
    out["vjp"] = AF.vjp(lambda X: project(X, R), X, torch.ones(4, 2, dtype=torch.float64))
    out["jvp"] = AF.jvp(lambda X: project(X, R), X, v)
    out["hvp"] = AF.hvp(f, X, v)
    out["vhp"] = AF.vhp(f, X, v)
    # Gauss-Newton bundle adjustment on the points with lstsq of the Jacobian
    obs = project(X, R).detach() + 0.5
    Xk = X.clone()
    for it in range(3):
        r = (project(Xk, R) - obs).reshape(-1)
        J = AF.jacobian(lambda Y: project(Y, R).reshape(-1), Xk).reshape(8, 12)
        delta = torch.linalg.lstsq(J, -r[:, None], driver="gelsd").solution[:, 0]
        Xk = Xk + delta.reshape(4, 3)
    out["ba"] = Xk
    out["resid"] = (project(Xk, R) - obs).abs().max()
    return out


def test_projection_jacobians_and_bundle_adjustment():
    ours, _ = run_both(bundle_adjustment, rtol=1e-8, atol=1e-10)
    for k in range(2):
        np.testing.assert_allclose(ours["jac_fwd"][k], ours["jac_rev"][k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours["jac_vec"][k], ours["jac_rev"][k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["hess_vec"], ours["hess"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["hvp"][1], ours["vhp"][1], rtol=1e-10)  # a symmetric Hessian
    assert ours["resid"] < 1e-8  # the points reproject onto the shifted observations


# ----------------------------------------------------------------------------------------------
# Rotation conversions as PyTorch3D's transforms write them: quaternion -> matrix, matrix -> quaternion through
# a masked-write square root, Tensor.max(tensor) as a floor, a one_hot mask selecting the best-conditioned
# candidate, an int64 sign tensor times a float quaternion, rotating points by quaternion products, Euler angles
# ----------------------------------------------------------------------------------------------


def rotation_conversions(m):
    torch, F = m.torch, m.F
    def quat_to_mat(q):
        w, x, y, z = q.unbind(-1)
        s = 2.0 / (q * q).sum(-1)
        rows = (1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
                s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
                s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y))
        return torch.stack(rows, -1).view(*q.shape[:-1], 3, 3)
    def safe_sqrt(v):
        out = torch.zeros_like(v)
        pos = v > 0
        out[pos] = torch.sqrt(v[pos])  # masked write: zero subgradient where v <= 0
        return out
    def mat_to_quat(R):
        lead = R.shape[:-2]
        r = R.reshape(*lead, 9).unbind(-1)
        a00, a01, a02, a10, a11, a12, a20, a21, a22 = r
        mags = safe_sqrt(torch.stack([1 + a00 + a11 + a22, 1 + a00 - a11 - a22, 1 - a00 + a11 - a22, 1 - a00 - a11 + a22], -1))
        cand = torch.stack([
            torch.stack([mags[..., 0] ** 2, a21 - a12, a02 - a20, a10 - a01], -1),
            torch.stack([a21 - a12, mags[..., 1] ** 2, a10 + a01, a02 + a20], -1),
            torch.stack([a02 - a20, a10 + a01, mags[..., 2] ** 2, a12 + a21], -1),
            torch.stack([a10 - a01, a20 + a02, a21 + a12, mags[..., 3] ** 2], -1)], -2)
        floor = torch.tensor(0.1).to(dtype=mags.dtype)
        cand = cand / (2.0 * mags[..., None].max(floor))
        best = F.one_hot(mags.argmax(-1), num_classes=4) > 0.5
        q = cand[best, :].reshape(*lead, 4)
        return torch.where(q[..., :1] < 0, -q, q)
    def conj(q):
        return q * torch.tensor([1, -1, -1, -1])
    def qmul(a, b):
        aw, ax, ay, az = a.unbind(-1); bw, bx, by, bz = b.unbind(-1)
        return torch.stack((aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                            aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw), -1)
    def rotate(q, p):
        pq = torch.cat([p.new_zeros(p.shape[:-1] + (1,)), p], -1)
        return qmul(qmul(q, pq), conj(q))[..., 1:]
    def euler_zyx(R):
        pitch = torch.asin(R[..., 2, 0] * -1.0)
        yaw = torch.atan2(R[..., 1, 0], R[..., 0, 0])
        roll = torch.atan2(R[..., 2, 1], R[..., 2, 2])
        return torch.stack([yaw, pitch, roll], -1)
    rng = np.random.default_rng(5)
    q0 = torch.tensor(rng.standard_normal((6, 4)))
    q0 = q0 / q0.norm(dim=-1, keepdim=True)
    q0[0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # the identity: three of the magnitudes are 0
    q0[1] = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)  # a half turn
    q = q0.clone().requires_grad_(True)
    R = quat_to_mat(q)
    q_back = mat_to_quat(R)
    pts = torch.tensor(rng.standard_normal((6, 5, 3)))
    rotated = rotate(q[:, None], pts)
    by_matrix = pts @ R.transpose(-1, -2)
    angles = euler_zyx(R[2:])
    loss = q_back.pow(2).sum() + rotated.sin().sum() + angles.cos().sum()
    g, = torch.autograd.grad(loss, q)
    # fit a rotation to point correspondences through the matrix -> quaternion round trip
    target = pts[2] @ quat_to_mat(torch.tensor([0.9, 0.1, -0.3, 0.2], dtype=torch.float64)).T
    param = torch.tensor([1.0, 0.0, 0.0, 0.05], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([param], lr=0.05)
    hist = []
    for it in range(20):
        opt.zero_grad()
        Rq = quat_to_mat(mat_to_quat(quat_to_mat(param)))
        l = (pts[2] @ Rq.T - target).pow(2).mean()
        l.backward()
        opt.step()
        hist.append(l.item())
    return q_back.detach(), rotated.detach(), by_matrix.detach(), angles.detach(), g, hist, R.detach()


def test_rotation_conversions():
    ours, _ = run_both(rotation_conversions, rtol=1e-9, atol=1e-11)
    q_back, rotated, by_matrix, angles, g, hist, R = ours
    rng = np.random.default_rng(5)
    q0 = rng.standard_normal((6, 4))
    q0 /= np.linalg.norm(q0, axis=-1, keepdims=True)
    q0[0], q0[1] = [1, 0, 0, 0], [0, 0, 1, 0]
    np.testing.assert_allclose(q_back, np.where(q0[:, :1] < 0, -q0, q0), atol=1e-12)
    np.testing.assert_allclose(rotated, by_matrix, atol=1e-12)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    assert hist[-1] < 0.1 * hist[0]


# ----------------------------------------------------------------------------------------------
# FoV perspective cameras: positions from distance/elevation/azimuth (deg2rad), look-at rotations with the
# degenerate straight-down case repaired by isclose/where, projection matrices filled by index writes, clip ->
# NDC -> screen, and unprojection through torch.inverse; gradients w.r.t. the camera parameters
# ----------------------------------------------------------------------------------------------


def fov_cameras(m):
    torch, F = m.torch, m.F
    def look_at_rotation(eye, at, up):
        z = F.normalize(at - eye, eps=1e-5)
        x = F.normalize(torch.cross(up, z, dim=1), eps=1e-5)
        y = F.normalize(torch.cross(z, x, dim=1), eps=1e-5)
        degenerate = torch.isclose(x, torch.tensor(0.0, dtype=x.dtype), atol=5e-3).all(dim=1, keepdim=True)
        if degenerate.any():
            fix = F.normalize(torch.cross(y, z, dim=1), eps=1e-5)
            x = torch.where(degenerate, fix, x)
        R = torch.cat((x[:, None, :], y[:, None, :], z[:, None, :]), dim=1)
        return R.transpose(1, 2)
    def camera_position(dist, elev, azim):
        elev, azim = torch.deg2rad(elev), torch.deg2rad(azim)
        return torch.stack([dist * torch.cos(elev) * torch.sin(azim), dist * torch.sin(elev), dist * torch.cos(elev) * torch.cos(azim)], dim=1)
    def fov_projection(znear, zfar, fov_deg, aspect=1.0):
        fov = math.pi / 180 * fov_deg
        t = torch.tan(fov / 2) * znear
        r = t * aspect
        K = torch.zeros((fov_deg.shape[0], 4, 4), dtype=torch.float64)
        K[:, 0, 0] = 2.0 * znear / (2 * r)
        K[:, 1, 1] = 2.0 * znear / (2 * t)
        K[:, 3, 2] = 1.0
        K[:, 2, 2] = zfar / (zfar - znear)
        K[:, 2, 3] = -(zfar * znear) / (zfar - znear)
        return K
    dist = torch.tensor([2.7, 3.0, 2.0], dtype=torch.float64, requires_grad=True)
    elev = torch.tensor([10.0, 90.0, -30.0], dtype=torch.float64, requires_grad=True)  # 90: looking straight down
    azim = torch.tensor([0.0, 45.0, 150.0], dtype=torch.float64, requires_grad=True)
    fov = torch.tensor([60.0, 45.0, 30.0], dtype=torch.float64, requires_grad=True)
    eye = camera_position(dist, elev, azim)
    up = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64).expand(3, 3)
    R = look_at_rotation(eye, torch.zeros_like(eye), up)
    T = -torch.bmm(R.transpose(1, 2), eye[:, :, None])[:, :, 0]
    P = fov_projection(torch.tensor(1.0, dtype=torch.float64), torch.tensor(100.0, dtype=torch.float64), fov)
    M = torch.zeros(3, 4, 4, dtype=torch.float64)
    M[:, :3, :3] = R
    M[:, 3, :3] = T
    M[:, 3, 3] = 1.0
    full = M @ P.transpose(1, 2)  # row-vector convention: points @ full
    pts = torch.tensor(np.random.default_rng(3).uniform(-0.5, 0.5, (3, 7, 3)))
    ph = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)
    clip = torch.bmm(ph, full)
    ndc = clip[..., :3] / clip[..., 3:]
    back = torch.bmm(torch.cat([ndc * clip[..., 3:], clip[..., 3:]], -1), torch.inverse(full))[..., :3]
    screen = (1.0 - ndc[..., :2]) * 0.5 * torch.tensor([64.0, 48.0], dtype=torch.float64)
    loss = screen.pow(2).mean() + ndc[..., 2].sum()
    grads = torch.autograd.grad(loss, [dist, elev, azim, fov])
    return R.detach(), T.detach(), ndc.detach(), back.detach(), pts, grads


def test_fov_cameras():
    ours, _ = run_both(fov_cameras, rtol=1e-9, atol=1e-10)
    R, T, ndc, back, pts, grads = ours
    # (the straight-down camera's repaired axes are not orthonormal: the look-at rule's own weakness, shared)
    upright = R[[0, 2]]
    np.testing.assert_allclose(upright @ upright.transpose(0, 2, 1), np.broadcast_to(np.eye(3), upright.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(upright), 1.0, atol=1e-12)
    np.testing.assert_allclose(back, pts, atol=1e-12)  # unprojecting the clip coordinates gives the points back
    assert (np.abs(ndc[0, :, :2]) < 1).all() and (ndc[..., 2] > 0).all()  # in the first camera's view, past znear
