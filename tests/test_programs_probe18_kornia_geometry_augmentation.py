# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Differentiable image-processing programs as kornia, torchvision.transforms.v2's tensor kernels and piq write them,
run as tests/probe18_kornia_common.py says: homographies by linalg.solve and the weighted DLT (SVD), warp_perspective
/ warp_affine, grid_sample in every mode far outside the image, registration by Adam; batch augmentation from
distributions and Generators (RandomResizedCrop by homographies, RandomAffine, flips, RandomErasing, mixup, cutmix)
and an expectation-over-transformation attack."""

import math

import numpy as np
import pytest

from .probe18_kornia_common import create_meshgrid, normalize_points, smooth_image, transform_points
from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# Geometry as kornia.geometry writes it: create_meshgrid, normalize_homography, convert_points_from_
# homogeneous (a torch.where guard against z = 0), get_perspective_transform by an 8x8 linalg.solve,
# find_homography_dlt (Hartley normalisation, weighted A, the last right singular vector of linalg.svd),
# warp_perspective (a homography applied to a meshgrid, then grid_sample) and warp_affine (affine_grid),
# rotation matrices about a centre; grid_sample in every mode x padding x align_corners, far outside the
# image too; and a homography recovered by gradient descent on a photometric loss
# ----------------------------------------------------------------------------------------------


def normal_transform_pixel(m, height, width, eps=1e-14, dtype=None):
    torch = m.torch
    tr_mat = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]], dtype=dtype)
    width_denom = eps if width == 1 else width - 1.0
    height_denom = eps if height == 1 else height - 1.0
    tr_mat[0, 0] = tr_mat[0, 0] * 2.0 / width_denom
    tr_mat[1, 1] = tr_mat[1, 1] * 2.0 / height_denom
    return tr_mat.unsqueeze(0)


def normalize_homography(m, dst_pix_trans_src_pix, dsize_src, dsize_dst):
    torch = m.torch
    src_h, src_w = dsize_src
    dst_h, dst_w = dsize_dst
    src_norm_trans_src_pix = normal_transform_pixel(m, src_h, src_w, dtype=dst_pix_trans_src_pix.dtype)
    src_pix_trans_src_norm = torch.inverse(src_norm_trans_src_pix)
    dst_norm_trans_dst_pix = normal_transform_pixel(m, dst_h, dst_w, dtype=dst_pix_trans_src_pix.dtype)
    return dst_norm_trans_dst_pix @ (dst_pix_trans_src_pix @ src_pix_trans_src_norm)


def warp_perspective(m, src, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=True):
    torch, F = m.torch, m.F
    B, _, H, W = src.size()
    h_out, w_out = dsize
    dst_norm_trans_src_norm = normalize_homography(m, M, (H, W), (h_out, w_out))
    src_norm_trans_dst_norm = torch.linalg.inv(dst_norm_trans_src_norm)
    grid = create_meshgrid(m, h_out, w_out, normalized_coordinates=True, dtype=src.dtype)
    grid = transform_points(m, src_norm_trans_dst_norm[:, None, None], grid.expand(B, h_out, w_out, 2))
    return F.grid_sample(src, grid, align_corners=align_corners, mode=mode, padding_mode=padding_mode)


def warp_affine(m, src, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=True):
    torch, F = m.torch, m.F
    B, C, H, W = src.size()
    M_3x3 = F.pad(M, [0, 0, 0, 1], "constant", 0.0)
    M_3x3[..., -1, -1] += 1.0
    dst_norm_trans_src_norm = normalize_homography(m, M_3x3, (H, W), dsize)
    src_norm_trans_dst_norm = torch.inverse(dst_norm_trans_src_norm)
    grid = F.affine_grid(src_norm_trans_dst_norm[:, :2, :], [B, C, dsize[0], dsize[1]], align_corners=align_corners)
    return F.grid_sample(src, grid, align_corners=align_corners, mode=mode, padding_mode=padding_mode)


def get_rotation_matrix2d(m, center, angle, scale):
    torch = m.torch
    angle_rad = angle * math.pi / 180.0
    cos_a, sin_a = torch.cos(angle_rad), torch.sin(angle_rad)
    rot = torch.stack([torch.stack([cos_a, sin_a], -1), torch.stack([-sin_a, cos_a], -1)], -2)
    scaled = rot * scale.unsqueeze(-1)
    shift = center - (scaled @ center.unsqueeze(-1)).squeeze(-1)
    return torch.cat([scaled, shift.unsqueeze(-1)], -1)


def get_perspective_transform(m, src, dst):
    torch = m.torch
    rows = []
    for i in range(4):
        x, y = src[:, i, 0], src[:, i, 1]
        u, v = dst[:, i, 0], dst[:, i, 1]
        ones, zeros = torch.ones_like(x), torch.zeros_like(x)
        rows.append(torch.stack([x, y, ones, zeros, zeros, zeros, -x * u, -y * u], -1))
        rows.append(torch.stack([zeros, zeros, zeros, x, y, ones, -x * v, -y * v], -1))
    A = torch.stack(rows, dim=1)
    b = torch.stack([dst[:, i // 2, i % 2] for i in range(8)], -1)
    X = torch.linalg.solve(A, b)
    M = torch.ones(src.shape[0], 9, dtype=src.dtype)
    M[..., :8] = X
    return M.view(-1, 3, 3)


def find_homography_dlt(m, points1, points2, weights=None):
    torch = m.torch
    points1_norm, transform1 = normalize_points(m, points1)
    points2_norm, transform2 = normalize_points(m, points2)
    x1, y1 = torch.chunk(points1_norm, dim=-1, chunks=2)
    x2, y2 = torch.chunk(points2_norm, dim=-1, chunks=2)
    ones, zeros = torch.ones_like(x1), torch.zeros_like(x1)
    ax = torch.cat([zeros, zeros, zeros, -x1, -y1, -ones, y2 * x1, y2 * y1, y2], dim=-1)
    ay = torch.cat([x1, y1, ones, zeros, zeros, zeros, -x2 * x1, -x2 * y1, -x2], dim=-1)
    A = torch.cat((ax, ay), dim=-1).reshape(ax.shape[0], -1, ax.shape[-1])
    if weights is None:
        A = A.transpose(-2, -1) @ A
    else:
        w_diag = torch.diag_embed(weights.unsqueeze(dim=-1).repeat(1, 1, 2).reshape(weights.shape[0], -1))
        A = A.transpose(-2, -1) @ w_diag @ A
    _, _, V = torch.linalg.svd(A)
    V = V.transpose(-2, -1)
    H = V[..., -1].view(-1, 3, 3)
    H = transform2.inverse() @ (H @ transform1)
    return H / H[..., -1:, -1:]


def homographies(m, array):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    B, C, H, W = image.shape
    src = torch.tensor([[[0.0, 0.0], [W - 1.0, 0.0], [W - 1.0, H - 1.0], [0.0, H - 1.0]]] * B, dtype=image.dtype)
    offsets = torch.tensor([[[0.5, 0.3], [-0.4, 0.6], [-0.8, -0.5], [0.2, -0.7]],
                            [[-0.3, 0.2], [0.1, -0.6], [0.9, 0.4], [-0.5, 0.5]]], dtype=image.dtype)
    dst = (src + offsets).requires_grad_(True)
    M = get_perspective_transform(m, src, dst)
    warped = {pm: warp_perspective(m, image, M, (H + 1, W - 1), padding_mode=pm) for pm in
              ("zeros", "border", "reflection")}
    warped["nearest"] = warp_perspective(m, image, M, (H, W), mode="nearest")
    warped["unaligned"] = warp_perspective(m, image, M, (H, W), align_corners=False)
    # the DLT from many correspondences (a little noise, weights) recovers the same homography
    grid = create_meshgrid(m, 3, 4, normalized_coordinates=False, dtype=image.dtype).reshape(1, -1, 2) * 2.0
    pts1 = grid.expand(B, -1, -1)
    pts2 = transform_points(m, M, pts1)
    noise = torch.tensor(np.random.default_rng(0).standard_normal((B, 12, 2)) * 1e-3)
    weights = torch.linspace(0.5, 1.0, 12, dtype=image.dtype).expand(B, -1)
    H_dlt = find_homography_dlt(m, pts1, pts2 + noise, weights)
    H_plain = find_homography_dlt(m, pts1, pts2)
    loss = sum(w.pow(2).sum() for w in warped.values()) + (H_dlt - torch.eye(3, dtype=image.dtype)).pow(2).sum()
    image_grad, dst_grad = torch.autograd.grad(loss, (image, dst))
    return M, warped, H_dlt, H_plain, image_grad, dst_grad


def test_kornia_homographies_solve_and_dlt():
    array = smooth_image((2, 3, 7, 8), seed=10)
    ours, _ = run_both(homographies, array, rtol=1e-7, atol=1e-9)
    M, warped, H_dlt, H_plain, image_grad, dst_grad = ours
    np.testing.assert_allclose(H_plain, M, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(H_dlt, M, rtol=0.05, atol=0.02)
    # by hand: M maps the corners to dst
    corners = np.array([[0.0, 0.0, 1], [7, 0, 1], [7, 6, 1], [0, 6, 1]])
    mapped = corners @ M[0].T
    np.testing.assert_allclose(mapped[:, :2] / mapped[:, 2:], corners[:, :2] + [[0.5, 0.3], [-0.4, 0.6], [-0.8, -0.5],
                                                                             [0.2, -0.7]], rtol=1e-10, atol=1e-10)


def affine_warps(m, array, mode, padding_mode, align_corners):
    torch = m.torch
    image = torch.tensor(array).requires_grad_(True)
    B, C, H, W = image.shape
    center = torch.tensor([[W / 2 - 0.5, H / 2 - 0.5]] * B, dtype=image.dtype)
    angle = torch.tensor([30.0, -75.0], dtype=image.dtype, requires_grad=True)
    scale = torch.tensor([[1.2, 0.9], [0.7, 0.7]], dtype=image.dtype)
    M = get_rotation_matrix2d(m, center, angle, scale)
    M = M + torch.tensor([[[0.0, 0.0, 1.5], [0.0, 0.0, -2.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=image.dtype)
    out = warp_affine(m, image, M, (H, W + 2), mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).pow(2).sum()
    image_grad, angle_grad = torch.autograd.grad(loss, (image, angle), allow_unused=True)
    return out, image_grad, angle_grad if mode != "nearest" else None


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_kornia_warp_affine(mode, padding_mode, align_corners):
    array = smooth_image((2, 2, 6, 7), seed=11)
    ours, _ = run_both(affine_warps, array, mode, padding_mode, align_corners, rtol=1e-8, atol=1e-10)
    assert ours[0].shape == (2, 2, 6, 9) and np.isfinite(ours[1]).all()


def far_grid_sample(m, array, grid_array, mode, padding_mode, align_corners):
    """Sampling points far outside the image: reflection folds them back more than once."""
    torch, F = m.torch, m.F
    image = torch.tensor(array).requires_grad_(True)
    grid = torch.tensor(grid_array).requires_grad_(True)
    out = F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    out.pow(2).sum().backward()
    return out, image.grad, grid.grad


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_sample_far_outside(mode, padding_mode, align_corners):
    rng = np.random.default_rng(12)
    array = rng.uniform(0, 1, (2, 2, 4, 5))
    grid = rng.uniform(-4.3, 4.3, (2, 3, 6, 2))
    grid[0, 0, :2] = [[-1.0, -1.0], [1.0, 1.0]]  # exactly on the corners
    run_both(far_grid_sample, array, grid, mode, padding_mode, align_corners, rtol=1e-9, atol=1e-10)


def homography_fit(m, array, steps=25):
    """Image registration: the eight free entries of a homography by Adam on a photometric loss."""
    torch = m.torch
    target_image = torch.tensor(array)
    B, C, H, W = target_image.shape
    true_H = torch.tensor([[[1.05, 0.08, -0.4], [-0.05, 0.97, 0.3], [0.004, -0.003, 1.0]]] * B,
                          dtype=target_image.dtype)
    moved = warp_perspective(m, target_image, true_H, (H, W), padding_mode="border")
    params = torch.zeros(B, 8, dtype=target_image.dtype, requires_grad=True)
    optimizer = m.optim.Adam([params], lr=0.01)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        H_est = torch.cat([params, torch.zeros(B, 1, dtype=params.dtype)], 1).view(B, 3, 3) + torch.eye(
            3, dtype=params.dtype)
        warped = warp_perspective(m, target_image, H_est, (H, W), padding_mode="border")
        loss = (warped - moved).abs().mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, params.detach()


def test_kornia_homography_registration():
    yy, xx = np.mgrid[0:10, 0:12]
    array = np.stack([np.sin(xx / 2.0) * np.cos(yy / 3.0), np.cos((xx + yy) / 3.0)])[None].repeat(2, 0)
    ours, _ = run_both(homography_fit, array, rtol=1e-7, atol=1e-9)
    assert ours[0][-1] < ours[0][0]


# ----------------------------------------------------------------------------------------------
# Batch-wise random augmentation as kornia.augmentation writes it: parameters drawn per image from
# torch.distributions (Uniform.rsample, Bernoulli.sample, Beta for mixup) under a manual_seed and from a
# torch.Generator (rand / randint / randperm / normal with generator=), RandomResizedCrop as crop boxes
# turned into homographies (linalg.solve) and warp_perspective, RandomAffine with shear, a flip applied
# through torch.where on a per-image mask, RandomErasing as coordinate masks, Gaussian noise, mixup and
# cutmix with index_select of a permutation; then expectation-over-transformation: pixels optimised through
# the random pipeline against a small classifier
# ----------------------------------------------------------------------------------------------


def crop_boxes(m, batch_size, height, width, scale, ratio, generator):
    """RandomResizedCrop's sampling (torchvision's rejection-free kornia variant): area and log-ratio per image."""
    torch = m.torch
    area = (torch.rand(batch_size, generator=generator, dtype=torch.float64) * (scale[1] - scale[0]) + scale[0]) \
        * height * width
    log_ratio = torch.rand(batch_size, generator=generator, dtype=torch.float64) * (
        math.log(ratio[1]) - math.log(ratio[0])) + math.log(ratio[0])
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).round().clamp(1, width)
    h = torch.sqrt(area / aspect).round().clamp(1, height)
    x0 = (torch.rand(batch_size, generator=generator, dtype=torch.float64) * (width - w + 1)).floor()
    y0 = (torch.rand(batch_size, generator=generator, dtype=torch.float64) * (height - h + 1)).floor()
    return torch.stack([torch.stack([x0, y0], -1), torch.stack([x0 + w - 1, y0], -1),
                        torch.stack([x0 + w - 1, y0 + h - 1], -1), torch.stack([x0, y0 + h - 1], -1)], 1)


def random_affine_matrices(m, batch_size, height, width, degrees, translate, scale, shear):
    torch = m.torch
    Uniform = torch.distributions.Uniform
    angle = Uniform(-degrees, degrees).rsample((batch_size,))
    tx = Uniform(-translate * width, translate * width).rsample((batch_size,))
    ty = Uniform(-translate * height, translate * height).rsample((batch_size,))
    sc = Uniform(scale[0], scale[1]).rsample((batch_size,))
    sx = Uniform(-shear, shear).rsample((batch_size,))
    center = torch.tensor([[width / 2 - 0.5, height / 2 - 0.5]] * batch_size, dtype=torch.float64)
    M = get_rotation_matrix2d(m, center, angle.double(), torch.stack([sc, sc], -1).double())
    M = torch.cat([M, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=M.dtype).expand(batch_size, 1, 3)], 1)
    shear_mat = torch.eye(3, dtype=M.dtype).repeat(batch_size, 1, 1)
    shear_mat[:, 0, 1] = torch.tan(sx.double() * math.pi / 180)
    shear_mat[:, 0, 2] = -shear_mat[:, 0, 1] * center[:, 1]
    M = shear_mat @ M
    M[:, :2, 2] += torch.stack([tx, ty], -1).double()
    return M


def augment_batch(m, images, generator, p_flip=0.5):
    torch = m.torch
    B, C, H, W = images.shape
    boxes = crop_boxes(m, B, H, W, (0.3, 1.0), (3 / 4, 4 / 3), generator)
    dst = torch.tensor([[0.0, 0.0], [W - 1.0, 0.0], [W - 1.0, H - 1.0], [0.0, H - 1.0]], dtype=torch.float64)
    crops = warp_perspective(m, images, get_perspective_transform(m, boxes, dst.expand(B, 4, 2)), (H, W))
    M = random_affine_matrices(m, B, H, W, 20.0, 0.1, (0.8, 1.2), 10.0)
    out = warp_perspective(m, crops, M, (H, W), padding_mode="reflection")
    flip = torch.distributions.Bernoulli(torch.tensor(p_flip)).sample((B,)).bool()
    out = torch.where(flip.view(B, 1, 1, 1), out.flip(-1), out)
    # RandomErasing: one rectangle per image where a coin says so
    erase = torch.rand(B, generator=generator) < 0.7
    eh = torch.randint(1, H // 2 + 1, (B,), generator=generator)
    ew = torch.randint(1, W // 2 + 1, (B,), generator=generator)
    ey = (torch.rand(B, generator=generator) * (H - eh + 1)).long()
    ex = (torch.rand(B, generator=generator) * (W - ew + 1)).long()
    ys = torch.arange(H).view(1, H, 1)
    xs = torch.arange(W).view(1, 1, W)
    box = (ys >= ey.view(B, 1, 1)) & (ys < (ey + eh).view(B, 1, 1)) & (xs >= ex.view(B, 1, 1)) & (
        xs < (ex + ew).view(B, 1, 1))
    box = box & erase.view(B, 1, 1)
    fill = torch.normal(torch.zeros(B, C, 1, 1, dtype=out.dtype), torch.ones(B, C, 1, 1, dtype=out.dtype),
                        generator=generator)
    out = torch.where(box.unsqueeze(1), fill, out)
    noise = torch.randn(out.shape, generator=generator, dtype=out.dtype) * 0.02
    return out + noise, (boxes, M, flip, box)


def augmentation_programs(m, array, seed):
    torch = m.torch
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.tensor(array).requires_grad_(True)
    out, params = augment_batch(m, images, g)
    out.pow(2).sum().backward()
    # mixup with a Beta draw, cutmix with a permutation and index_select
    lam = torch.distributions.Beta(torch.tensor([0.4]), torch.tensor([0.4])).sample().item()
    perm = torch.randperm(images.shape[0], generator=g)
    mixed = lam * images.detach() + (1 - lam) * images.detach().index_select(0, perm)
    H, W = images.shape[-2:]
    cut = int(H * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(H, (1,), generator=g)), int(torch.randint(W, (1,), generator=g))
    y1, y2 = max(cy - cut // 2, 0), min(cy + cut // 2, H)
    x1, x2 = max(cx - cut // 2, 0), min(cx + cut // 2, W)
    cutmix = images.detach().clone()
    cutmix[:, :, y1:y2, x1:x2] = images.detach()[perm, :, y1:y2, x1:x2]
    return out, params, images.grad, lam, perm, mixed, cutmix


def test_kornia_batch_augmentation_on_seeded_generators():
    array = smooth_image((4, 3, 8, 9), seed=26)
    ours, _ = run_both(augmentation_programs, array, 3, rtol=1e-8, atol=1e-9)
    out, (boxes, M, flip, box), grad, lam, perm, mixed, cutmix = ours
    assert out.shape == array.shape and 0 < lam < 1 and sorted(perm) == [0, 1, 2, 3]
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[..., 0] <= 8).all() and (boxes[..., 1] <= 7).all()


def eot_attack(m, weights, array, steps=4, samples=3):
    """Expectation over transformation: a perturbation that fools the classifier under random augmentation."""
    torch, nn, F = m.torch, m.nn, m.F
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 3))
    net.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    net = net.double().eval()
    images = torch.tensor(array)
    labels = torch.tensor([0, 1, 2, 0])
    delta = torch.zeros_like(images, requires_grad=True)
    g = torch.Generator().manual_seed(11)
    torch.manual_seed(12)
    eps, alpha = 8 / 255, 2 / 255
    history = []
    for step in range(steps):
        loss = 0
        for s in range(samples):
            aug, _ = augment_batch(m, (images + delta).clamp(0, 1), g)
            loss = loss + F.cross_entropy(net(aug), labels)
        loss = loss / samples
        grad, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += alpha * grad.sign()
            delta.clamp_(-eps, eps)
        history.append(loss.item())
    return history, delta.detach()


def test_expectation_over_transformation_attack():
    torch = OURS.torch
    torch.manual_seed(0)
    nn = OURS.nn
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 3))
    weights = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    array = smooth_image((4, 3, 8, 9), seed=27)
    ours, _ = run_both(eot_attack, weights, array, rtol=1e-7, atol=1e-9)
    history, delta = ours
    assert np.abs(delta).max() <= 8 / 255 + 1e-12
