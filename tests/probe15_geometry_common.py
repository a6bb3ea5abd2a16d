"""What the files of session 15's geometry probe (tests/test_programs_probe15_geometry_*.py, one kind of program
each) share: the point clouds (unit spheres and cube surfaces) the networks classify and encode, and the rotation
utilities (Rodrigues, quaternions, the 6-D representation, the geodesic loss, back to axis-angle) the pose,
alignment, camera and multi-view programs build on.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch from the same weights and data,
in float32 and float64, comparing values and gradients."""

import numpy as np


def point_clouds(n=4, points=32, seed=0):
    """Unit spheres and cube surfaces, randomly scaled and shifted: (n, points, 3) and their classes."""
    rng = np.random.default_rng(seed)
    clouds, labels = [], []
    for i in range(n):
        p = rng.standard_normal((points, 3))
        if i % 2:
            p = p / np.abs(p).max(1, keepdims=True)  # onto the cube's surface
        else:
            p = p / np.linalg.norm(p, axis=1, keepdims=True)
        clouds.append(p * rng.uniform(0.7, 1.2) + 0.1 * rng.standard_normal(3))
        labels.append(i % 2)
    return np.stack(clouds), np.array(labels)


def rotation_utils(m):
    """The conversions as PyTorch3D's rotation_conversions.py writes them (and Rodrigues as SMPL's code)."""
    torch, F = m.torch, m.F

    def batch_rodrigues(rot_vecs, epsilon=1e-8):
        batch_size = rot_vecs.shape[0]
        dtype = rot_vecs.dtype
        angle = torch.norm(rot_vecs + 1e-8, dim=1, keepdim=True)
        rot_dir = rot_vecs / angle
        cos = torch.unsqueeze(torch.cos(angle), dim=1)
        sin = torch.unsqueeze(torch.sin(angle), dim=1)
        rx, ry, rz = torch.split(rot_dir, 1, dim=1)
        zeros = torch.zeros((batch_size, 1), dtype=dtype)
        K = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view((batch_size, 3, 3))
        ident = torch.eye(3, dtype=dtype).unsqueeze(dim=0)
        rot_mat = ident + sin * K + (1 - cos) * torch.bmm(K, K)
        return rot_mat

    def quaternion_to_matrix(quaternions):
        r, i, j, k = torch.unbind(quaternions, -1)
        two_s = 2.0 / (quaternions * quaternions).sum(-1)
        o = torch.stack((1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
                         two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
                         two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)), -1)
        return o.reshape(quaternions.shape[:-1] + (3, 3))

    def _sqrt_positive_part(x):
        ret = torch.zeros_like(x)
        positive_mask = x > 0
        if torch.is_grad_enabled():
            ret[positive_mask] = torch.sqrt(x[positive_mask])
        else:
            ret = torch.where(positive_mask, torch.sqrt(x), ret)
        return ret

    def standardize_quaternion(quaternions):
        return torch.where(quaternions[..., 0:1] < 0, -quaternions, quaternions)

    def matrix_to_quaternion(matrix):
        batch_dim = matrix.shape[:-2]
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(matrix.reshape(batch_dim + (9,)), dim=-1)
        q_abs = _sqrt_positive_part(torch.stack([1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22,
                                                 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1))
        quat_by_rijk = torch.stack([
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ], dim=-2)
        flr = torch.tensor(0.1).to(dtype=q_abs.dtype, device=q_abs.device)
        quat_candidates = quat_by_rijk / (2.0 * q_abs[..., None].max(flr))
        out = quat_candidates[F.one_hot(q_abs.argmax(dim=-1), num_classes=4) > 0.5, :].reshape(batch_dim + (4,))
        return standardize_quaternion(out)

    def quaternion_raw_multiply(a, b):
        aw, ax, ay, az = torch.unbind(a, -1)
        bw, bx, by, bz = torch.unbind(b, -1)
        ow = aw * bw - ax * bx - ay * by - az * bz
        ox = aw * bx + ax * bw + ay * bz - az * by
        oy = aw * by - ax * bz + ay * bw + az * bx
        oz = aw * bz + ax * by - ay * bx + az * bw
        return torch.stack((ow, ox, oy, oz), -1)

    def quaternion_to_axis_angle(quaternions, eps=1e-6):
        norms = torch.norm(quaternions[..., 1:], p=2, dim=-1, keepdim=True)
        half_angles = torch.atan2(norms, quaternions[..., :1])
        angles = 2 * half_angles
        small_angles = angles.abs() < eps
        sin_half_angles_over_angles = torch.empty_like(angles)
        sin_half_angles_over_angles[~small_angles] = torch.sin(half_angles[~small_angles]) / angles[~small_angles]
        # for x small, sin(x/2) is about x/2 - (x/2)^3/6, so sin(x/2)/x is about 1/2 - (x*x)/48
        sin_half_angles_over_angles[small_angles] = 0.5 - (angles[small_angles] * angles[small_angles]) / 48
        return quaternions[..., 1:] / sin_half_angles_over_angles

    def rotation_6d_to_matrix(d6):
        a1, a2 = d6[..., :3], d6[..., 3:]
        b1 = F.normalize(a1, dim=-1)
        b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
        b2 = F.normalize(b2, dim=-1)
        b3 = torch.linalg.cross(b1, b2, dim=-1)
        return torch.stack((b1, b2, b3), dim=-2)

    def matrix_to_rotation_6d(matrix):
        batch_dim = matrix.size()[:-2]
        return matrix[..., :2, :].clone().reshape(batch_dim + (6,))

    def geodesic_distance(R1, R2, eps=1e-7):
        R = torch.bmm(R1, R2.transpose(1, 2))
        cos = (R[:, 0, 0] + R[:, 1, 1] + R[:, 2, 2] - 1) / 2
        return torch.acos(torch.clamp(cos, -1 + eps, 1 - eps))

    return dict(batch_rodrigues=batch_rodrigues, quaternion_to_matrix=quaternion_to_matrix,
                matrix_to_quaternion=matrix_to_quaternion, quaternion_raw_multiply=quaternion_raw_multiply,
                quaternion_to_axis_angle=quaternion_to_axis_angle, rotation_6d_to_matrix=rotation_6d_to_matrix,
                matrix_to_rotation_6d=matrix_to_rotation_6d, geodesic_distance=geodesic_distance)
