# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""3-D geometry and point-cloud programs, run as tests/probe15_geometry_common.py says. Rotations and alignment:
axis-angle by Rodrigues' formula, quaternions (normalised, multiplied, to matrices), the 6-D representation by
Gram–Schmidt (``F.normalize``, ``torch.linalg.cross``), the geodesic loss by ``acos`` of a clamped trace, back to
axis-angle by ``atan2``, and a pose regressed through them; Kabsch/Procrustes alignment through ``torch.linalg.svd``
with the ``det`` sign correction, weights learnt through it (as Deep Closest Point's head), and ICP; SO(3)'s
exponential and log maps (``matrix_exp`` of a skew matrix, ``acos``). Focused tests: the values-only SVD / eig
gradient at repeated values."""

import math

import numpy as np
import pytest

from .probe15_geometry_common import rotation_utils
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Rotations: Rodrigues, quaternions, the 6-D representation, the geodesic loss, back to axis-angle
# ----------------------------------------------------------------------------------------------


def rotation_conversions(m, dtype="float64"):
    """Each conversion and its gradient, on rotations that include the identity (the clamp's and the
    small-angle branch's ends), a half turn (the trace's other end) and a negative-w quaternion."""
    torch, F = m.torch, m.F
    u = rotation_utils(m)
    dtype = getattr(torch, dtype)
    rng = np.random.default_rng(5)
    aa = rng.standard_normal((6, 3))
    aa[1] = 0.0  # the identity
    aa[2] = [0.0, math.pi, 0.0]  # a half turn
    aa[3] *= 1e-4
    rot_vecs = torch.tensor(aa, dtype=dtype, requires_grad=True)
    R = u["batch_rodrigues"](rot_vecs)
    q = torch.tensor(rng.standard_normal((6, 4)), dtype=dtype, requires_grad=True)
    q_unit = F.normalize(q, dim=-1)
    q2 = torch.tensor(rng.standard_normal((6, 4)), dtype=dtype, requires_grad=True)
    Rq = u["quaternion_to_matrix"](u["quaternion_raw_multiply"](q_unit, F.normalize(q2, dim=-1)))
    back = u["matrix_to_quaternion"](R)  # a learnt rotation's matrix back to a quaternion
    axis_angle = u["quaternion_to_axis_angle"](back)
    d6 = torch.tensor(rng.standard_normal((6, 6)), dtype=dtype, requires_grad=True)
    R6 = u["rotation_6d_to_matrix"](d6)
    geo = u["geodesic_distance"](R6, R)
    geo_self = u["geodesic_distance"](R, R.detach())  # cos = 1: clamped, no gradient
    loss = (geo.sum() + geo_self.sum() + (Rq - R6).pow(2).sum() + axis_angle.pow(2).sum()
            + u["matrix_to_rotation_6d"](Rq).sum())
    grads = torch.autograd.grad(loss, [rot_vecs, q, q2, d6])
    orthogonality = (torch.bmm(R6, R6.transpose(1, 2)) - torch.eye(3, dtype=dtype)).abs().max()
    return R, Rq, back, axis_angle, R6, geo, geo_self, grads, orthogonality, torch.det(R6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rotation_conversions(dtype):
    # (float32: geodesic angles near π, where acos' slope 1/sin θ magnifies rounding: the rotation vectors'
    # gradients 4e-5 apart, chainrule's the nearer to float64's)
    tolerance = dict(rtol=1e-9, atol=1e-11) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    ours, _ = run_both(rotation_conversions, dtype=dtype, **tolerance)
    R, Rq, back, axis_angle, R6, geo, geo_self, grads, orthogonality, det = ours
    assert orthogonality < 1e-5 and np.allclose(det, 1, atol=1e-5)
    assert np.allclose(R[1], np.eye(3)) and np.allclose(axis_angle[1], 0) and np.allclose(back[1], [1, 0, 0, 0])
    assert np.allclose(np.abs(axis_angle[2]), [0, math.pi, 0], atol=1e-3)


def pose_regression_net(m):
    nn = m.nn

    class PoseNet(nn.Module):
        """A PointNet encoder regressing a rotation in the 6-D representation (Zhou et al., 2019)."""

        def __init__(self):
            super().__init__()
            self.feat = nn.Sequential(nn.Conv1d(3, 16, 1), nn.ReLU(), nn.Conv1d(16, 32, 1))
            self.head = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 6))

        def forward(self, x):
            return self.head(self.feat(x.transpose(1, 2)).max(dim=2)[0])

    return PoseNet()


def pose_regression(m, weights, steps=5, dtype="float64"):
    torch, optim = m.torch, m.optim
    u = rotation_utils(m)
    dtype = getattr(torch, dtype)
    model = load(m, pose_regression_net(m), weights).to(dtype)
    rng = np.random.default_rng(6)
    canonical = torch.tensor(rng.standard_normal((20, 3)) * [1.0, 0.6, 0.3], dtype=dtype)
    R_true = u["batch_rodrigues"](torch.tensor(rng.standard_normal((8, 3)), dtype=dtype))
    clouds = torch.einsum("bij,nj->bni", R_true, canonical)
    optimizer = optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        R_pred = u["rotation_6d_to_matrix"](model(clouds))
        loss = u["geodesic_distance"](R_pred, R_true).mean() + 0.1 * (R_pred - R_true).pow(2).sum((1, 2)).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, R_pred, [p.grad for p in model.parameters()]


def test_pose_regression_6d_geodesic():
    weights = weights_of(pose_regression_net)
    ours, _ = run_both(pose_regression, weights, rtol=1e-8, atol=1e-10)
    assert ours[0][-1] < ours[0][0]
    run_both(pose_regression, weights, steps=2, dtype="float32", rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Kabsch / Procrustes through the SVD: Deep Closest Point's SVD head, weighted Kabsch, ICP
# ----------------------------------------------------------------------------------------------


def dcp_net(m):
    torch, nn = m.torch, m.nn

    class PointNetEmb(nn.Module):
        def __init__(self, emb_dims=8):
            super().__init__()
            self.conv1 = nn.Conv1d(3, 16, kernel_size=1, bias=False)
            self.conv2 = nn.Conv1d(16, emb_dims, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm1d(16)

        def forward(self, x):
            return self.conv2(torch.relu(self.bn1(self.conv1(x))))

    class SVDHead(nn.Module):
        def __init__(self):
            super(SVDHead, self).__init__()
            self.reflect = nn.Parameter(torch.eye(3), requires_grad=False)
            self.reflect.data[2, 2] = -1

        def forward(self, *input):
            src_embedding, tgt_embedding, src, tgt = input
            batch_size = src.size(0)
            d_k = src_embedding.size(1)
            scores = torch.matmul(src_embedding.transpose(2, 1).contiguous(), tgt_embedding) / math.sqrt(d_k)
            scores = torch.softmax(scores, dim=2)
            src_corr = torch.matmul(tgt, scores.transpose(2, 1).contiguous())
            src_centered = src - src.mean(dim=2, keepdim=True)
            src_corr_centered = src_corr - src_corr.mean(dim=2, keepdim=True)
            H = torch.matmul(src_centered, src_corr_centered.transpose(2, 1).contiguous())
            R = []
            for i in range(src.size(0)):
                u, s, v = torch.svd(H[i])
                r = torch.matmul(v, u.transpose(1, 0).contiguous())
                r_det = torch.det(r)
                if r_det < 0:
                    u, s, v = torch.svd(H[i])
                    v = torch.matmul(v, self.reflect.to(v.dtype))
                    r = torch.matmul(v, u.transpose(1, 0).contiguous())
                R.append(r)
            R = torch.stack(R, dim=0)
            t = torch.matmul(-R, src.mean(dim=2, keepdim=True)) + src_corr.mean(dim=2, keepdim=True)
            return R, t.view(batch_size, 3)

    class DCP(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb_nn = PointNetEmb()
            self.head = SVDHead()

        def forward(self, src, tgt):
            src_embedding = self.emb_nn(src)
            tgt_embedding = self.emb_nn(tgt)
            rotation_ab, translation_ab = self.head(src_embedding, tgt_embedding, src, tgt)
            return rotation_ab, translation_ab

    return DCP()


def dcp(m, weights, steps=3, dtype="float64"):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    model = load(m, dcp_net(m), weights).to(dtype)
    u = rotation_utils(m)
    rng = np.random.default_rng(7)
    src = torch.tensor(rng.standard_normal((4, 3, 16)), dtype=dtype)
    rotation_ab = u["batch_rodrigues"](torch.tensor(rng.standard_normal((4, 3)) * 0.5, dtype=dtype))
    translation_ab = torch.tensor(rng.uniform(-0.5, 0.5, (4, 3)), dtype=dtype)
    tgt = torch.matmul(rotation_ab, src) + translation_ab.unsqueeze(2)
    tgt = tgt[:, :, torch.tensor(rng.permutation(16))]
    opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
    identity = torch.eye(3, dtype=dtype).unsqueeze(0).repeat(4, 1, 1)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        rotation_ab_pred, translation_ab_pred = model(src, tgt)
        loss = F.mse_loss(torch.matmul(rotation_ab_pred.transpose(2, 1), rotation_ab), identity) \
            + F.mse_loss(translation_ab_pred, translation_ab)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    return losses, rotation_ab_pred, torch.det(rotation_ab_pred), grads


def test_deep_closest_point_svd_head():
    weights = weights_of(dcp_net)
    ours, _ = run_both(dcp, weights, rtol=1e-7, atol=1e-9)
    losses, R, det, grads = ours
    assert np.allclose(det, 1) and losses[-1] < losses[0]
    run_both(dcp, weights, steps=1, dtype="float32", rtol=1e-4, atol=1e-6)


def weighted_kabsch(m, dtype="float64", how="linalg"):
    """Per-point weights learnt through a batched weighted Kabsch (an outlier-rejecting registration),
    then differentiable ICP: nearest neighbours by cdist's argmin, Kabsch again, gradients through all."""
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    u = rotation_utils(m)

    def kabsch(P, Q, w):
        w = w / w.sum(dim=1, keepdim=True)
        p_mean = (w.unsqueeze(-1) * P).sum(1, keepdim=True)
        q_mean = (w.unsqueeze(-1) * Q).sum(1, keepdim=True)
        H = torch.einsum("bn,bni,bnj->bij", w, P - p_mean, Q - q_mean)
        if how == "linalg":
            U, S, Vh = torch.linalg.svd(H)
            V = Vh.mH
        else:
            U, S, V = torch.svd(H)
        d = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
        D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
        R = V @ D @ U.transpose(-1, -2)
        t = q_mean.squeeze(1) - (R @ p_mean.transpose(1, 2)).squeeze(-1)
        return R, t, S

    rng = np.random.default_rng(8)
    P = torch.tensor(rng.standard_normal((3, 12, 3)), dtype=dtype)
    R_true = u["batch_rodrigues"](torch.tensor(rng.standard_normal((3, 3)), dtype=dtype))
    t_true = torch.tensor(rng.standard_normal((3, 3)), dtype=dtype)
    Q = torch.einsum("bij,bnj->bni", R_true, P) + t_true.unsqueeze(1)
    Q[:, :3] += torch.tensor(rng.standard_normal((3, 3, 3)) * 2, dtype=dtype)  # outliers
    logits = torch.zeros(3, 12, dtype=dtype, requires_grad=True)
    opt = optim.SGD([logits], lr=5.0)
    losses = []
    for step in range(4):
        opt.zero_grad()
        R, t, S = kabsch(P, Q, F.softmax(logits, dim=1))
        residual = (torch.einsum("bij,bnj->bni", R, P) + t.unsqueeze(1) - Q).norm(dim=-1)
        loss = residual.mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # ICP from a perturbed source towards the clean target, differentiated to the source's points
    src = (P[:, :8] + 0.05 * torch.tensor(rng.standard_normal((3, 8, 3)), dtype=dtype)).requires_grad_()
    tgt = torch.einsum("bij,bnj->bni", R_true, P[:, :8]) + t_true.unsqueeze(1)
    current = src
    for it in range(3):
        nearest = torch.cdist(current, tgt).argmin(dim=2)
        matched = torch.gather(tgt, 1, nearest.unsqueeze(-1).expand(-1, -1, 3))
        R, t, _ = kabsch(current, matched, torch.ones(3, 8, dtype=dtype))
        current = torch.einsum("bij,bnj->bni", R, current) + t.unsqueeze(1)
    icp_error = (current - tgt).pow(2).sum(-1).mean()
    (grad_src,) = torch.autograd.grad(icp_error, src)
    return losses, logits.detach(), F.softmax(logits, 1), S, R, icp_error, grad_src, nearest


@pytest.mark.parametrize("how", ["linalg", "torch.svd"])
def test_weighted_kabsch_and_icp(how):
    ours, _ = run_both(weighted_kabsch, how=how, rtol=1e-7, atol=1e-9)
    losses, logits, weights, S, R, icp_error, grad_src, nearest = ours
    assert losses[-1] < losses[0] and weights[:, :3].sum(1).max() < 3 / 12  # the outliers are down-weighted
    assert np.allclose(np.linalg.det(R), 1)
    run_both(weighted_kabsch, how=how, dtype="float32", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_singular_values_alone_differentiate_at_repeated_values(T, dtype):
    """S alone from linalg.svd / torch.svd (a T-Net's transform at its identity initialisation, a nuclear norm
    written by hand): dL/dA = U diag(dL/dS) Vᴴ, finite, as PyTorch's. The singular vectors' term, whose 1 / (s_j² −
    s_i²) is infinite at repeated values, is left out when they have no gradient (it was 0 · ∞ = NaN)."""
    eye = T.eye(3, dtype=getattr(T, dtype)).repeat(2, 1, 1).requires_grad_()
    (grad,) = T.autograd.grad(T.linalg.svd(eye)[1].sum(), eye)
    assert T.equal(grad, T.eye(3, dtype=eye.dtype).expand(2, 3, 3))
    tall = T.cat([eye, T.zeros(2, 1, 3, dtype=eye.dtype)], 1)  # a full U's extra column too
    (grad,) = T.autograd.grad((T.svd(tall)[1] * T.tensor([1.0, 2.0, 3.0], dtype=eye.dtype)).sum(), eye)
    assert T.isfinite(grad).all() and T.allclose(grad.diagonal(0, -2, -1).sum(-1), T.tensor(6.0, dtype=eye.dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_eigenvalues_alone_differentiate_at_repeated_values(T, dtype):
    """linalg.eigvals (and eig's λ alone) at repeated eigenvalues: V⁻ᴴ diag(dL/dλ) Vᴴ, as PyTorch's (was NaN)."""
    a = (2 * T.eye(3, dtype=getattr(T, dtype))).requires_grad_()
    (grad,) = T.autograd.grad(T.linalg.eigvals(a).real.pow(2).sum(), a)
    assert T.allclose(grad, 4 * T.eye(3, dtype=a.dtype))
    (grad,) = T.autograd.grad(T.linalg.eig(a)[0].real.sum(), a)
    assert T.allclose(grad, T.eye(3, dtype=a.dtype))


def so3_maps(m, dtype="float64"):
    torch = m.torch
    dtype = getattr(torch, dtype)
    u = rotation_utils(m)
    rng = np.random.default_rng(13)
    omega = torch.tensor(rng.standard_normal((5, 3)), dtype=dtype, requires_grad=True)

    def hat(w):
        zero = torch.zeros_like(w[:, 0])
        return torch.stack([torch.stack([zero, -w[:, 2], w[:, 1]], -1), torch.stack([w[:, 2], zero, -w[:, 0]], -1),
                            torch.stack([-w[:, 1], w[:, 0], zero], -1)], 1)

    R_exp = torch.linalg.matrix_exp(hat(omega))
    R_rod = u["batch_rodrigues"](omega)
    # the log map: θ = acos((tr R − 1)/2), ω = θ / (2 sin θ) · vee(R − Rᵀ)
    cos = ((R_exp.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.acos(cos)
    skew = R_exp - R_exp.transpose(1, 2)
    vee = torch.stack([skew[:, 2, 1], skew[:, 0, 2], skew[:, 1, 0]], -1)
    omega_back = (theta / (2 * torch.sin(theta))).unsqueeze(-1) * vee
    loss = (R_exp - R_rod).pow(2).sum() + omega_back.pow(2).sum() + torch.linalg.det(R_exp).sum()
    (grad,) = torch.autograd.grad(loss, omega)
    return R_exp, R_rod, theta, omega_back, grad


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_so3_exp_and_log_maps(dtype):
    tolerance = dict(rtol=1e-9, atol=1e-11) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    ours, _ = run_both(so3_maps, dtype=dtype, **tolerance)
    R_exp, R_rod, theta, omega_back, grad = ours
    assert np.allclose(R_exp, R_rod, atol=1e-5)
