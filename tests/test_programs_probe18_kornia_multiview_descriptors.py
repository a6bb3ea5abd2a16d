# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: rotation conversions on every branch, the 8-point fundamental matrix,
triangulation, depth to normals, descriptor matching; kornia.feature's SIFT descriptor and HardNet's triplet-margin
training."""

import math

import numpy as np

from .probe18_kornia_common import (
    convert_points_from_homogeneous,
    convert_points_to_homogeneous,
    create_meshgrid,
    gaussian,
    spatial_gradient,
    transform_points,
)
from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# Multi-view geometry as kornia.geometry writes it: Rodrigues' rotation with its Taylor branch chosen by
# torch.where, rotation_matrix_to_quaternion's four branches (torch.chunk, nested where, a clamp by
# finfo.tiny), quaternion_to_axis_angle (atan2 on both signs, 0/0 in the unselected branch, += into slices of
# zeros_like), axis_angle_to_quaternion by slice writes; the normalised 8-point fundamental matrix (weighted
# SVD, rank 2 by diag_embed of the singular values), linear triangulation (the last right singular vector of
# 4x4 systems), Sampson distances; depth to 3-D points and normals (inverse intrinsics, 'diff' gradients,
# cross, F.normalize); descriptor matching by cdist with the second-nearest ratio (topk(2, largest=False)) and
# mutual nearest neighbours; then a pose refined by Adam on reprojection errors
# ----------------------------------------------------------------------------------------------


def axis_angle_to_rotation_matrix(m, axis_angle):
    torch = m.torch

    def compute_rotation_matrix(axis_angle, theta2, eps=1e-6):
        theta = torch.sqrt(theta2.clamp(min=1e-12))
        wxyz = axis_angle / (theta.unsqueeze(-1) + eps)
        wx, wy, wz = wxyz.unbind(dim=1)
        cos_theta, sin_theta = torch.cos(theta), torch.sin(theta)
        one_minus_cos = 1.0 - cos_theta
        wxwy, wxwz, wywz = wx * wy, wx * wz, wy * wz
        r00 = cos_theta + wx * wx * one_minus_cos
        r01 = wxwy * one_minus_cos - wz * sin_theta
        r02 = wy * sin_theta + wxwz * one_minus_cos
        r10 = wz * sin_theta + wxwy * one_minus_cos
        r11 = cos_theta + wy * wy * one_minus_cos
        r12 = -wx * sin_theta + wywz * one_minus_cos
        r20 = -wy * sin_theta + wxwz * one_minus_cos
        r21 = wx * sin_theta + wywz * one_minus_cos
        r22 = cos_theta + wz * wz * one_minus_cos
        return torch.stack([torch.stack([r00, r01, r02], dim=-1), torch.stack([r10, r11, r12], dim=-1),
                            torch.stack([r20, r21, r22], dim=-1)], dim=1)

    def compute_rotation_matrix_taylor(axis_angle):
        rx, ry, rz = axis_angle.unbind(-1)
        k_one = torch.ones_like(rx)
        return torch.stack([k_one, -rz, ry, rz, k_one, -rx, -ry, rx, k_one], dim=-1).view(-1, 3, 3)

    theta2 = (axis_angle * axis_angle).sum(dim=-1)
    rot_normal = compute_rotation_matrix(axis_angle, theta2)
    rot_taylor = compute_rotation_matrix_taylor(axis_angle)
    mask = (theta2 > 1e-6).view(-1, 1, 1)
    return torch.where(mask, rot_normal, rot_taylor)


def rotation_matrix_to_quaternion(m, rotation_matrix, eps=1.0e-8):
    torch = m.torch

    def safe_zero_division(numerator, denominator):
        tiny = torch.finfo(numerator.dtype).tiny
        return numerator / torch.clamp(denominator, min=tiny)

    rotation_matrix_vec = rotation_matrix.reshape(*rotation_matrix.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.chunk(rotation_matrix_vec, chunks=9, dim=-1)
    trace = m00 + m11 + m22

    def trace_positive_cond():
        sq = torch.sqrt(trace + 1.0 + eps) * 2.0
        return torch.cat((0.25 * sq, safe_zero_division(m21 - m12, sq), safe_zero_division(m02 - m20, sq),
                          safe_zero_division(m10 - m01, sq)), dim=-1)

    def cond_1():
        sq = torch.sqrt(1.0 + m00 - m11 - m22 + eps) * 2.0
        return torch.cat((safe_zero_division(m21 - m12, sq), 0.25 * sq, safe_zero_division(m01 + m10, sq),
                          safe_zero_division(m02 + m20, sq)), dim=-1)

    def cond_2():
        sq = torch.sqrt(1.0 + m11 - m00 - m22 + eps) * 2.0
        return torch.cat((safe_zero_division(m02 - m20, sq), safe_zero_division(m01 + m10, sq), 0.25 * sq,
                          safe_zero_division(m12 + m21, sq)), dim=-1)

    def cond_3():
        sq = torch.sqrt(1.0 + m22 - m00 - m11 + eps) * 2.0
        return torch.cat((safe_zero_division(m10 - m01, sq), safe_zero_division(m02 + m20, sq),
                          safe_zero_division(m12 + m21, sq), 0.25 * sq), dim=-1)

    where_2 = torch.where(m11 > m22, cond_2(), cond_3())
    where_1 = torch.where((m00 > m11) & (m00 > m22), cond_1(), where_2)
    return torch.where(trace > 0.0, trace_positive_cond(), where_1)


def quaternion_to_axis_angle(m, quaternion):
    torch = m.torch
    cos_theta = quaternion[..., 0]
    q1, q2, q3 = quaternion[..., 1], quaternion[..., 2], quaternion[..., 3]
    sin_squared_theta = q1 * q1 + q2 * q2 + q3 * q3
    sin_theta = torch.sqrt(sin_squared_theta)
    two_theta = 2.0 * torch.where(cos_theta < 0.0, torch.atan2(-sin_theta, -cos_theta),
                                  torch.atan2(sin_theta, cos_theta))
    k_pos = two_theta / sin_theta
    k_neg = 2.0 * torch.ones_like(sin_theta)
    k = torch.where(sin_squared_theta > 0.0, k_pos, k_neg)
    axis_angle = torch.zeros_like(quaternion)[..., :3]
    axis_angle[..., 0] += q1 * k
    axis_angle[..., 1] += q2 * k
    axis_angle[..., 2] += q3 * k
    return axis_angle


def axis_angle_to_quaternion(m, axis_angle):
    torch = m.torch
    a0, a1, a2 = axis_angle[..., 0:1], axis_angle[..., 1:2], axis_angle[..., 2:3]
    theta_squared = a0 * a0 + a1 * a1 + a2 * a2
    theta = torch.sqrt(theta_squared)
    half_theta = theta * 0.5
    mask = theta_squared > 0.0
    ones = torch.ones_like(half_theta)
    k = torch.where(mask, torch.sin(half_theta) / theta, 0.5 * ones)
    w = torch.where(mask, torch.cos(half_theta), ones)
    quaternion = torch.zeros(size=(*axis_angle.shape[:-1], 4), dtype=axis_angle.dtype, device=axis_angle.device)
    quaternion[..., 1:2] = a0 * k
    quaternion[..., 2:3] = a1 * k
    quaternion[..., 3:4] = a2 * k
    quaternion[..., 0:1] = w
    return quaternion


def rotation_conversions(m, axis_angle_array):
    torch = m.torch
    aa = torch.tensor(axis_angle_array).requires_grad_(True)
    R = axis_angle_to_rotation_matrix(m, aa)
    q = rotation_matrix_to_quaternion(m, R)
    back = quaternion_to_axis_angle(m, q)
    q2 = axis_angle_to_quaternion(m, aa)
    back2 = quaternion_to_axis_angle(m, q2)
    grads = [torch.autograd.grad(out.sum(), aa, retain_graph=True)[0] for out in (R, q, back, q2, back2)]
    return R, q, back, q2, back2, grads


def test_kornia_rotation_conversions_on_every_branch():
    axis_angle = np.array([[0.3, -0.2, 0.5], [1e-4, 2e-4, -1e-4], [3.1, 0.05, 0.02], [0.02, 3.0, 0.1],
                           [0.01, 0.03, -3.05], [0.0, 0.0, 0.0], [-1.2, 0.4, 2.2]])
    ours, _ = run_both(rotation_conversions, axis_angle, rtol=1e-8, atol=1e-10)
    R, q, back, q2, back2, grads = ours
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(back[[0, 2, 3, 4, 6]], axis_angle[[0, 2, 3, 4, 6]], atol=1e-6)
    np.testing.assert_allclose(back2, axis_angle, atol=1e-12)


def normalize_points_epi(m, points, eps=1e-8):
    torch = m.torch
    x_mean = torch.mean(points, dim=-2, keepdim=True)
    scale = (points - x_mean).norm(dim=-1, p=2).mean(dim=-1)
    scale = math.sqrt(2.0) / (scale + eps)
    ones, zeros = torch.ones_like(scale), torch.zeros_like(scale)
    transform = torch.stack([scale, zeros, -scale * x_mean[..., 0, 0], zeros, scale, -scale * x_mean[..., 0, 1],
                             zeros, zeros, ones], dim=-1).view(*scale.shape, 3, 3)
    points_norm = transform_points(m, transform, points)
    return points_norm, transform


def find_fundamental(m, points1, points2, weights):
    torch = m.torch
    points1_norm, transform1 = normalize_points_epi(m, points1)
    points2_norm, transform2 = normalize_points_epi(m, points2)
    x1, y1 = torch.chunk(points1_norm, dim=-1, chunks=2)
    x2, y2 = torch.chunk(points2_norm, dim=-1, chunks=2)
    ones = torch.ones_like(x1)
    X = torch.cat([x2 * x1, x2 * y1, x2, y2 * x1, y2 * y1, y2, x1, y1, ones], dim=-1)
    X = X.transpose(-2, -1) @ torch.diag_embed(weights) @ X
    _, _, V = torch.linalg.svd(X)
    F_mat = V[..., -1, :].view(-1, 3, 3)
    U, S, V = torch.linalg.svd(F_mat)
    rank_mask = torch.tensor([1.0, 1.0, 0.0], dtype=F_mat.dtype)
    F_projected = U @ (torch.diag_embed(S * rank_mask) @ V)
    F_est = transform2.transpose(-2, -1) @ (F_projected @ transform1)
    return F_est / F_est[..., -1:, -1:]  # (a null vector's sign is LAPACK's choice: fix the scale)


def sampson_epipolar_distance(m, pts1, pts2, Fm, squared=True, eps=1e-8):
    torch = m.torch
    pts1 = convert_points_to_homogeneous(m, pts1)
    pts2 = convert_points_to_homogeneous(m, pts2)
    F_t = Fm.transpose(-2, -1)
    line1_in_2 = pts1 @ F_t
    line2_in_1 = pts2 @ Fm
    numerator = (pts2 * line1_in_2).sum(dim=-1).pow(2)
    denominator = line1_in_2[..., :2].norm(2, dim=-1).pow(2) + line2_in_1[..., :2].norm(2, dim=-1).pow(2)
    out = numerator / denominator
    return out if squared else (out + eps).sqrt()


def triangulate_points(m, P1, P2, points1, points2):
    torch = m.torch
    points_shape = max(points1.shape, points2.shape)
    X = torch.zeros(points_shape[:-1] + (4, 4), dtype=points1.dtype)
    for i in range(4):
        X[..., 0, i] = points1[..., 0] * P1[..., 2:3, i] - P1[..., 0:1, i]
        X[..., 1, i] = points1[..., 1] * P1[..., 2:3, i] - P1[..., 1:2, i]
        X[..., 2, i] = points2[..., 0] * P2[..., 2:3, i] - P2[..., 0:1, i]
        X[..., 3, i] = points2[..., 1] * P2[..., 2:3, i] - P2[..., 1:2, i]
    _, _, V = torch.linalg.svd(X)
    points3d_h = V[..., -1, :]
    return convert_points_from_homogeneous(m, points3d_h)


def two_view_geometry(m, points3d_array):
    torch = m.torch
    X = torch.tensor(points3d_array)
    K = torch.tensor([[[50.0, 0.0, 16.0], [0.0, 50.0, 12.0], [0.0, 0.0, 1.0]]], dtype=X.dtype)
    aa = torch.tensor([[0.05, -0.1, 0.02]], dtype=X.dtype, requires_grad=True)
    t = torch.tensor([[[0.3], [0.05], [0.1]]], dtype=X.dtype, requires_grad=True)
    R = axis_angle_to_rotation_matrix(m, aa)
    P1 = K @ torch.cat([torch.eye(3, dtype=X.dtype)[None], torch.zeros(1, 3, 1, dtype=X.dtype)], -1)
    P2 = K @ torch.cat([R, t], -1)
    x1 = convert_points_from_homogeneous(m, convert_points_to_homogeneous(m, X) @ P1.transpose(-2, -1))
    x2 = convert_points_from_homogeneous(m, convert_points_to_homogeneous(m, X) @ P2.transpose(-2, -1))
    weights = torch.linspace(0.5, 1.0, X.shape[1], dtype=X.dtype)[None]
    Fm = find_fundamental(m, x1, x2, weights)
    sampson = sampson_epipolar_distance(m, x1, x2, Fm)
    X_tri = triangulate_points(m, P1, P2, x1, x2)
    loss = (X_tri - X).pow(2).sum() + sampson.sum() + (Fm / Fm.norm()).pow(2).mul(Fm.sign()).sum()
    grads = torch.autograd.grad(loss, (aa, t))
    return Fm, sampson, X_tri, grads


def test_kornia_fundamental_matrix_and_triangulation():
    rng = np.random.default_rng(34)
    points3d = np.concatenate([rng.uniform(-1, 1, (1, 12, 2)), rng.uniform(3, 6, (1, 12, 1))], -1)
    ours, _ = run_both(two_view_geometry, points3d, rtol=1e-6, atol=1e-8)
    Fm, sampson, X_tri, grads = ours
    np.testing.assert_allclose(X_tri, points3d, rtol=1e-6)
    assert sampson.max() < 1e-10  # noise-free correspondences lie on their epipolar lines


def depth_to_normals(m, depth, camera_matrix, normalize_points=False):
    torch, F = m.torch, m.F
    B, _, H, W = depth.shape
    grid = create_meshgrid(m, H, W, normalized_coordinates=False, dtype=depth.dtype)
    points_2d = grid.permute(0, 3, 1, 2)
    points_depth = depth.permute(0, 2, 3, 1)
    points_2d = points_2d.permute(0, 2, 3, 1)
    # unproject: K^-1 [u v 1]^T * depth
    homogeneous = convert_points_to_homogeneous(m, points_2d)
    rays = homogeneous @ torch.inverse(camera_matrix)[:, None].transpose(-2, -1)
    if normalize_points:
        rays = F.normalize(rays, dim=-1, p=2)
    points_3d = (rays * points_depth).permute(0, 3, 1, 2)
    gradients = spatial_gradient(m, points_3d, "diff")
    a, b = gradients[:, :, 0], gradients[:, :, 1]
    normals = torch.cross(a, b, dim=1)
    return F.normalize(normals, dim=1, p=2), points_3d


def depth_programs(m, depth_array):
    torch = m.torch
    depth = torch.tensor(depth_array).requires_grad_(True)
    K = torch.tensor([[[8.0, 0.0, 3.5], [0.0, 8.0, 2.5], [0.0, 0.0, 1.0]]], dtype=depth.dtype).repeat(2, 1, 1)
    normals, points = depth_to_normals(m, depth, K)
    normals2, _ = depth_to_normals(m, depth, K, normalize_points=True)
    light = torch.tensor([0.2, -0.3, -1.0], dtype=depth.dtype).view(1, 3, 1, 1)
    shading = (normals * light).sum(1).clamp(min=0)
    (shading.sum() + normals2.pow(2).sum()).backward()
    return normals, normals2, points, shading, depth.grad


def test_kornia_depth_to_normals():
    yy, xx = np.mgrid[0:6, 0:8]
    plane = 2.0 + 0.1 * xx + 0.05 * yy
    bump = plane + 0.3 * np.exp(-((xx - 4) ** 2 + (yy - 3) ** 2) / 3.0)
    ours, _ = run_both(depth_programs, np.stack([plane, bump])[:, None], rtol=1e-9, atol=1e-11)
    normals = ours[0]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, rtol=1e-9)


def descriptor_matching(m, desc1_array, desc2_array, th=0.8):
    torch = m.torch
    desc1 = torch.tensor(desc1_array).requires_grad_(True)
    desc2 = torch.tensor(desc2_array).requires_grad_(True)
    dm = torch.cdist(desc1, desc2)
    vals, idxs_in_2 = torch.topk(dm, 2, dim=1, largest=False)
    ratio = vals[:, 0] / vals[:, 1]
    mask = ratio <= th
    match_dists = ratio[mask]
    idxs_in1 = torch.arange(0, idxs_in_2.size(0))[mask]
    matches_snn = torch.cat([idxs_in1.view(-1, 1), idxs_in_2[:, 0][mask].view(-1, 1)], dim=1)
    # mutual nearest neighbours
    ms = min(dm.size(0), dm.size(1))
    match_dists1, idxs_in_2b = torch.min(dm, dim=1)
    match_dists2, idxs_in_1b = torch.min(dm, dim=0)
    minsize_idxs = torch.arange(ms)
    if dm.size(0) <= dm.size(1):
        mutual_nns = minsize_idxs == idxs_in_1b[idxs_in_2b][:ms]
        matches_idxs = torch.cat([minsize_idxs.view(-1, 1), idxs_in_2b.view(-1, 1)], dim=1)[mutual_nns]
        mnn_dists = match_dists1[mutual_nns]
    else:
        mutual_nns = minsize_idxs == idxs_in_2b[idxs_in_1b][:ms]
        matches_idxs = torch.cat([idxs_in_1b.view(-1, 1), minsize_idxs.view(-1, 1)], dim=1)[mutual_nns]
        mnn_dists = match_dists2[mutual_nns]
    (match_dists.sum() + mnn_dists.sum()).backward()
    return matches_snn, match_dists, matches_idxs, mnn_dists, desc1.grad, desc2.grad


def test_kornia_descriptor_matching():
    rng = np.random.default_rng(35)
    desc2 = rng.standard_normal((9, 16))
    desc1 = desc2[[3, 1, 7, 0, 5, 2]] + 0.1 * rng.standard_normal((6, 16))
    desc1[5] = 0.49 * desc2[2] + 0.51 * desc2[4]  # ambiguous: fails the ratio test
    ours, _ = run_both(descriptor_matching, desc1, desc2, rtol=1e-9, atol=1e-11)
    matches_snn, match_dists, matches_idxs, mnn_dists, g1, g2 = ours
    assert [tuple(p) for p in matches_snn[:5]] == [(0, 3), (1, 1), (2, 7), (3, 0), (4, 5)]
    assert all(row[0] != 5 for row in matches_snn)


# ----------------------------------------------------------------------------------------------
# Local descriptors as kornia.feature writes them: SIFTDescriptor (a Gaussian weighting window, 'diff'
# gradients, atan2 orientations binned by floor and % with linear weights, a triangular pooling Conv2d whose
# weight is set through .data.copy_ and whose module is moved by .to(dtype) inside forward, L2 / clip / L2 /
# RootSIFT normalisation); a HardNet-style descriptor net trained with the hardest-in-batch triplet margin
# loss (distance matrix, the diagonal masked by eye, min over rows and columns)
# ----------------------------------------------------------------------------------------------


def sift_descriptor(m, patch_size=16, num_ang_bins=8, num_spatial_bins=4, rootsift=True, clipval=0.2):
    torch, nn, F = m.torch, m.nn, m.F

    def get_sift_pooling_kernel(ksize=25):
        ks_2 = float(ksize) / 2.0
        xc2 = ks_2 - (torch.arange(ksize).float() + 0.5 - ks_2).abs()
        return torch.ger(xc2, xc2) / (ks_2 ** 2)

    class SIFTDescriptor(nn.Module):
        def __init__(self):
            super().__init__()
            self.eps = 1e-10
            self.num_ang_bins, self.num_spatial_bins = num_ang_bins, num_spatial_bins
            self.clipval, self.rootsift, self.patch_size = clipval, rootsift, patch_size
            ks = self.patch_size
            sigma = float(ks) / math.sqrt(2.0)
            g = gaussian(m, ks, torch.tensor([[sigma]]), torch.float32)
            self.gk = (g.unsqueeze(-1) * g.unsqueeze(-2))[0]
            self.bin_ksize = 2 * int(patch_size / (num_spatial_bins + 1))
            self.bin_stride = patch_size // num_spatial_bins
            self.pad = self.bin_ksize // 4
            nw = get_sift_pooling_kernel(ksize=self.bin_ksize).float()
            self.pk = nn.Conv2d(1, 1, kernel_size=(nw.size(0), nw.size(1)), stride=(self.bin_stride, self.bin_stride),
                                padding=(self.pad, self.pad), bias=False)
            self.pk.weight.data.copy_(nw.reshape(1, 1, nw.size(0), nw.size(1)))

        def forward(self, input):
            B = input.shape[0]
            self.pk = self.pk.to(input.dtype).to(input.device)
            grads = spatial_gradient(m, input, "diff")
            gx, gy = grads[:, :, 0], grads[:, :, 1]
            mag = torch.sqrt(gx * gx + gy * gy + self.eps)
            ori = torch.atan2(gy, gx + self.eps) + 2.0 * math.pi
            mag = mag * self.gk.expand_as(mag).type_as(mag).to(mag.device)
            o_big = float(self.num_ang_bins) * ori / (2.0 * math.pi)
            bo0_big_ = torch.floor(o_big)
            wo1_big_ = o_big - bo0_big_
            bo0_big = bo0_big_ % self.num_ang_bins
            bo1_big = (bo0_big + 1) % self.num_ang_bins
            wo0_big = (1.0 - wo1_big_) * mag
            wo1_big = wo1_big_ * mag
            ang_bins = torch.cat([self.pk((bo0_big == i).to(input.dtype) * wo0_big
                                          + (bo1_big == i).to(input.dtype) * wo1_big)
                                  for i in range(self.num_ang_bins)], 1)
            ang_bins = ang_bins.view(B, -1)
            ang_bins = F.normalize(ang_bins, p=2)
            ang_bins = torch.clamp(ang_bins, 0.0, float(self.clipval))
            ang_bins = F.normalize(ang_bins, p=2)
            if self.rootsift:
                ang_bins = torch.sqrt(F.normalize(ang_bins, p=1) + self.eps)
            return ang_bins

    return SIFTDescriptor()


def sift_program(m, patches_array):
    torch = m.torch
    patches = torch.tensor(patches_array).requires_grad_(True)
    sift = sift_descriptor(m)
    desc = sift(patches)
    plain = sift_descriptor(m, rootsift=False)(patches)
    (desc.pow(2).sum() + plain[:, ::3].sum()).backward()
    return desc, plain, patches.grad, sift.pk.weight.dtype == torch.float64


def test_kornia_sift_descriptor():
    rng = np.random.default_rng(38)
    yy, xx = np.mgrid[0:16, 0:16]
    patches = np.stack([np.sin(xx / 3.0 + k) * np.cos(yy / (2.0 + k)) for k in range(4)])[:, None]
    patches = patches + 0.05 * rng.standard_normal(patches.shape)
    # (the Gaussian window is float32, as kornia's: a float32 sum may round its last bit either way)
    ours, _ = run_both(sift_program, patches, rtol=1e-6, atol=5e-8)
    desc, plain, grad, moved = ours
    assert desc.shape == (4, 128) and moved
    np.testing.assert_allclose((desc ** 2).sum(1), 1.0, rtol=1e-6)  # RootSIFT: the square roots of an L1-unit vector
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, rtol=1e-9)  # clipped, then L2-unit again
    assert (plain >= 0).all()


def hardnet_training(m, weights, anchors_array, positives_array, steps=3, margin=1.0):
    torch, nn, F = m.torch, m.nn, m.F
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, affine=False), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16, affine=False),
                        nn.ReLU(), nn.Dropout(0.0), nn.Conv2d(16, 32, 8, bias=False), nn.BatchNorm2d(32, affine=False))
    net.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    net = net.double()
    anchors, positives = torch.tensor(anchors_array), torch.tensor(positives_array)
    optimizer = m.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, dampening=0.9, weight_decay=1e-4)

    def describe(x):
        x_features = net((x - x.mean(dim=(-2, -1), keepdim=True)) / (x.std(dim=(-2, -1), keepdim=True) + 1e-7))
        return F.normalize(x_features.view(x_features.size(0), -1), p=2, dim=1)

    history = []
    for step in range(steps):
        optimizer.zero_grad()
        a, p = describe(anchors), describe(positives)
        dist = torch.sqrt((torch.sum(a ** 2, 1).unsqueeze(-1) + torch.sum(p ** 2, 1).unsqueeze(0)
                           - 2.0 * torch.mm(a, p.t())).clamp(min=1e-8))
        eye = torch.eye(dist.size(1), dtype=dist.dtype)
        pos = torch.diag(dist)
        dist_without_min_on_diag = dist + eye * 10
        mask = (dist_without_min_on_diag.ge(0.008).float() - 1.0) * (-1)
        mask = mask.type_as(dist_without_min_on_diag) * 10
        dist_without_min_on_diag = dist_without_min_on_diag + mask
        min_neg = torch.min(torch.min(dist_without_min_on_diag, 1)[0], torch.min(dist_without_min_on_diag, 0)[0])
        loss = torch.clamp(margin + pos - min_neg, min=0.0).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, [p.detach() for p in net.parameters()]


def test_hardnet_triplet_margin_training():
    nn = OURS.nn
    OURS.torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, affine=False), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16, affine=False),
                        nn.ReLU(), nn.Dropout(0.0), nn.Conv2d(16, 32, 8, bias=False), nn.BatchNorm2d(32, affine=False))
    weights = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(39)
    anchors = rng.standard_normal((6, 1, 16, 16))
    positives = anchors + 0.3 * rng.standard_normal(anchors.shape)
    ours, _ = run_both(hardnet_training, weights, anchors, positives, rtol=1e-8, atol=1e-10)
    assert all(np.isfinite(ours[0]))
