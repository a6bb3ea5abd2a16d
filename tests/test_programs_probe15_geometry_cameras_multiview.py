# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""3-D geometry and point-cloud programs, run as tests/probe15_geometry_common.py says. Cameras and views: a spatial
transformer from its identity initialisation, in float32 (where the grid points sit on pixel centres and an ulp picks
the gradient), both ``align_corners`` and every padding mode; a pinhole camera whose pose is fitted through a soft
point rasteriser (``exp`` of squared pixel distances, depth-weighted ``softmax``); multi-view triangulation by the
DLT (the last right singular vector) and by batched ``torch.linalg.solve``/``inv``/``det``. Focused tests:
affine_grid's float32 base grid, grid_sample's reflection dtype."""

import numpy as np
import pytest

from .probe15_geometry_common import rotation_utils
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Focused tests of what the programs found
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("align_corners", [True, False])
def test_affine_grid_identity_points_round_as_pytorchs_linspace(T, dtype, align_corners):
    """The identity's grid is PyTorch's linspace in the dtype (then · (n − 1) / n, each rounded): float32's
    -1/3 for 4 rows is -0.33333331, not NumPy's -0.33333334, and at a pixel centre that ulp decides which
    neighbours' difference the gradient with respect to the grid (and θ) is."""
    F = __import__("nn.functional" if T.__name__ == "autograd" else "torch.nn.functional", fromlist=["_"])
    theta = T.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=getattr(T, dtype))
    grid = F.affine_grid(theta, (1, 1, 4, 3), align_corners=align_corners)
    rows = T.linspace(-1, 1, 4, dtype=theta.dtype)
    rows = rows if align_corners else rows * 3 / 4
    assert T.equal(grid[0, :, 0, 1], rows)
    if align_corners:  # rows -1/3 and 1/3 land at pixels 1 and 2 - an ulp in float32 (2 exactly in float64)
        assert grid[0, 1, 0, 1].item() == (-0.3333333134651184 if dtype == "float32" else -0.33333333333333337)
        image = T.tensor([[[[0.0], [1.0], [3.0], [6.0]]]], dtype=theta.dtype).expand(1, 1, 4, 3)
        theta.requires_grad_()
        out = F.grid_sample(image, F.affine_grid(theta, (1, 1, 4, 3), align_corners=True), align_corners=True)
        # d/dθ[1, 2] = (size − 1)/2 · the slope of the pixels' interval the point falls in
        slopes = [T.autograd.grad(out[0, 0, r, 1], theta, retain_graph=True)[0][0, 1, 2].item() for r in (1, 2)]
        assert slopes == [1.5 * 2.0, 1.5 * (2.0 if dtype == "float32" else 3.0)]


# ----------------------------------------------------------------------------------------------
# A spatial transformer from its identity initialisation (the tutorial's), float32, every padding mode
# ----------------------------------------------------------------------------------------------


def stn_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, kernel_size=3)
            self.fc1 = nn.Linear(4 * 3 * 3, 3)
            self.localization = nn.Sequential(nn.Conv2d(1, 4, kernel_size=3), nn.MaxPool2d(2, stride=2), nn.ReLU(True))
            self.fc_loc = nn.Sequential(nn.Linear(4 * 3 * 3, 8), nn.ReLU(True), nn.Linear(8, 3 * 2))
            # Initialize the weights/bias with identity transformation
            self.fc_loc[2].weight.data.zero_()
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

        def stn(self, x, align_corners, padding_mode, mode):
            xs = self.localization(x)
            xs = xs.view(-1, 4 * 3 * 3)
            theta = self.fc_loc(xs)
            theta = theta.view(-1, 2, 3)
            grid = F.affine_grid(theta, x.size(), align_corners=align_corners)
            x = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
            return x

        def forward(self, x, align_corners=False, padding_mode="zeros", mode="bilinear"):
            x = self.stn(x, align_corners, padding_mode, mode)
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            return F.log_softmax(self.fc1(x.view(-1, 4 * 3 * 3)), dim=1)

    return Net()


def stn(m, weights, align_corners, padding_mode, mode="bilinear", dtype="float32", steps=2):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, stn_net(m), weights).to(getattr(torch, dtype))
    rng = np.random.default_rng(9)
    data = torch.tensor(rng.uniform(0, 1, (4, 1, 8, 8)), dtype=getattr(torch, dtype))
    target = torch.tensor([0, 1, 2, 1])
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    losses, theta_grads = [], []
    for step in range(steps):
        optimizer.zero_grad()
        output = model(data, align_corners, padding_mode, mode)
        loss = F.nll_loss(output, target)
        loss.backward()
        theta_grads.append(model.fc_loc[2].bias.grad.clone())
        optimizer.step()
        losses.append(loss.item())
    return losses, theta_grads, model.fc_loc[2].weight.grad


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_spatial_transformer_from_identity(align_corners, padding_mode):
    """At the identity every grid point is a pixel centre: which neighbours' difference its gradient takes is
    decided by the grid's last ulp (float32 linspace's rounding, PyTorch's), then by floor."""
    weights = weights_of(stn_net)
    ours, _ = run_both(stn, weights, align_corners, padding_mode, rtol=2e-5, atol=2e-6)
    losses, theta_grads, w_grad = ours
    assert np.abs(theta_grads[0]).max() > 0
    run_both(stn, weights, align_corners, padding_mode, dtype="float64", rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# A pinhole camera fitted through a soft point rasteriser (exp of squared pixel distances)
# ----------------------------------------------------------------------------------------------


def soft_render_fit(m, dtype="float64", steps=6):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    u = rotation_utils(m)
    H = W = 12
    fx = fy = 14.0
    K = torch.tensor([[fx, 0.0, W / 2], [0.0, fy, H / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    rng = np.random.default_rng(10)
    points = torch.tensor(rng.uniform(-0.5, 0.5, (30, 3)), dtype=dtype)
    colors = torch.tensor(rng.uniform(0, 1, (30, 3)), dtype=dtype)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype) + 0.5, torch.arange(W, dtype=dtype) + 0.5, indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1).view(-1, 2)  # (H·W, 2)

    def render(rvec, tvec, sigma=0.5, gamma=0.1):
        R = u["batch_rodrigues"](rvec.view(1, 3))[0]
        cam = points @ R.T + tvec  # world to camera
        z = cam[:, 2:3].clamp(min=1e-3)
        uv_h = cam @ K.T
        uv = uv_h[:, :2] / z  # perspective division
        d2 = torch.cdist(pixels, uv).pow(2)  # (H·W, P)
        coverage = torch.exp(-d2 / (2 * sigma ** 2))
        # nearer points dominate: a softmax over inverse depth, weighted by coverage (SoftRas-style)
        logits = torch.log(coverage + 1e-10) - z.view(1, -1) / gamma
        weights = torch.softmax(logits, dim=1)
        image = weights @ colors
        alpha = 1 - torch.prod(1 - coverage, dim=1)
        return torch.cat([image, alpha.unsqueeze(1)], 1).view(H, W, 4), uv, z

    target, uv_target, _ = render(torch.tensor([0.1, -0.2, 0.05], dtype=dtype),
                                  torch.tensor([0.0, 0.0, 3.0], dtype=dtype))
    rvec = torch.zeros(3, dtype=dtype, requires_grad=True)
    tvec = torch.tensor([0.1, -0.1, 3.3], dtype=dtype, requires_grad=True)
    optimizer = optim.Adam([rvec, tvec], lr=0.02)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        image, uv, z = render(rvec, tvec)
        loss = F.mse_loss(image, target) + F.smooth_l1_loss(image[..., 3], target[..., 3], beta=0.1)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, rvec.detach(), tvec.detach(), rvec.grad, tvec.grad, image, uv_target


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_soft_point_rasteriser_pose_fit(dtype):
    tolerance = dict(rtol=1e-8, atol=1e-10) if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    ours, _ = run_both(soft_render_fit, dtype=dtype, **tolerance)
    losses, rvec, tvec, grad_r, grad_t, image, uv = ours
    assert losses[-1] < losses[0] and image.shape == (12, 12, 4) and ((uv > 0) & (uv < 12)).all()


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_reflection_keeps_float32(T, align_corners, mode):
    """Reflection padding's slopes were NumPy's float64 where(): bilinear sampling of a float32 image came
    back float64 (and then a float32 convolution refused it)."""
    F = __import__("nn.functional" if T.__name__ == "autograd" else "torch.nn.functional", fromlist=["_"])
    image = T.arange(16.0).view(1, 1, 4, 4)
    grid = T.tensor([[[[-1.4, 0.3], [1.2, -1.1]]]], requires_grad=True)
    out = F.grid_sample(image, grid, mode=mode, padding_mode="reflection", align_corners=align_corners)
    assert out.dtype == T.float32
    if mode != "bicubic":
        volume = F.grid_sample(image.view(1, 1, 1, 4, 4), T.cat([grid, T.zeros(1, 1, 2, 1)], -1).unsqueeze(1),
                               mode=mode, padding_mode="reflection", align_corners=align_corners)
        assert volume.dtype == T.float32 and T.allclose(volume.view(-1), out.view(-1))


# ----------------------------------------------------------------------------------------------
# Multi-view geometry: DLT triangulation (the last right singular vector), batched solve / inv / det,
# depth maps back-projected through K⁻¹
# ----------------------------------------------------------------------------------------------


def multiview(m, dtype="float64"):
    torch, F = m.torch, m.F
    dtype = getattr(torch, dtype)
    u = rotation_utils(m)
    rng = np.random.default_rng(11)
    V, N = 4, 6  # views, points
    K = torch.tensor([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]], dtype=dtype)
    rvecs = torch.tensor(rng.standard_normal((V, 3)) * 0.2, dtype=dtype, requires_grad=True)
    tvecs = torch.tensor(np.c_[rng.standard_normal((V, 2)) * 0.2, np.full(V, 4.0)], dtype=dtype, requires_grad=True)
    X = torch.tensor(rng.uniform(-1, 1, (N, 3)), dtype=dtype)
    R = u["batch_rodrigues"](rvecs)
    P = torch.einsum("ij,vjk->vik", K, torch.cat([R, tvecs.unsqueeze(-1)], dim=-1))  # (V, 3, 4)
    X_h = torch.cat([X, torch.ones(N, 1, dtype=dtype)], dim=-1)
    x = torch.einsum("vij,nj->vni", P, X_h)
    uv = x[..., :2] / x[..., 2:]
    uv_noisy = (uv + torch.tensor(rng.standard_normal(uv.shape) * 0.3, dtype=dtype)).detach().requires_grad_()

    # DLT: for each point, rows u·P₃ − P₁ and v·P₃ − P₂ of every view; X is A's last right singular vector
    A = torch.stack([uv_noisy[..., 0:1] * P[:, None, 2] - P[:, None, 0],
                     uv_noisy[..., 1:2] * P[:, None, 2] - P[:, None, 1]], dim=1)  # (V, 2, N, 4)
    A = A.permute(2, 0, 1, 3).reshape(N, 2 * V, 4)
    _, S, Vh = torch.linalg.svd(A, full_matrices=False)
    X_dlt = Vh[:, -1, :3] / Vh[:, -1, 3:]  # (the sign cancels in the division)
    reprojection = torch.einsum("vij,nj->vni", P, torch.cat([X_dlt, torch.ones(N, 1, dtype=dtype)], -1))
    error = (reprojection[..., :2] / reprojection[..., 2:] - uv_noisy).norm(dim=-1).mean()
    grad_uv, grad_r, grad_t = torch.autograd.grad(error, [uv_noisy, rvecs, tvecs], retain_graph=True)

    # the same points by normal equations: batched (AᵀA)⁻¹ and solve on the inhomogeneous system
    A3, b3 = A[..., :3], -A[..., 3]
    AtA = A3.transpose(1, 2) @ A3
    X_solve = torch.linalg.solve(AtA, (A3.transpose(1, 2) @ b3.unsqueeze(-1)).squeeze(-1))
    X_inv = (torch.linalg.inv(AtA) @ A3.transpose(1, 2) @ b3.unsqueeze(-1)).squeeze(-1)
    X_lstsq = torch.linalg.lstsq(A3, b3.unsqueeze(-1)).solution.squeeze(-1)
    dets = torch.linalg.det(AtA)
    (grad_solve,) = torch.autograd.grad(X_solve.pow(2).sum() + dets.log().sum(), uv_noisy)

    # a depth map back-projected through K⁻¹ (a pinhole's unprojection) and re-projected into another view
    H, W = 6, 8
    depth = torch.tensor(rng.uniform(2, 4, (1, 1, H, W)), dtype=dtype, requires_grad=True)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype), indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], dim=0).view(3, -1)
    cam_points = (torch.linalg.inv(K) @ pix) * depth.view(1, -1)
    T_rel = torch.eye(4, dtype=dtype)[:3]
    T_rel = torch.cat([R[1], tvecs[1:2].T * 0.05], dim=1)
    proj = K @ (T_rel[:, :3] @ cam_points + T_rel[:, 3:])
    pix_coords = proj[:2] / (proj[2:] + 1e-7)
    pix_coords = pix_coords.view(2, H, W).permute(1, 2, 0)
    pix_coords[..., 0] /= W - 1
    pix_coords[..., 1] /= H - 1
    pix_coords = (pix_coords - 0.5) * 2  # (monodepth2's BackprojectDepth / Project3D, then grid_sample)
    image = torch.tensor(rng.uniform(0, 1, (1, 3, H, W)), dtype=dtype)
    warped = F.grid_sample(image, pix_coords.unsqueeze(0), padding_mode="border", align_corners=True)
    photometric = (warped - image).abs().mean()
    (grad_depth,) = torch.autograd.grad(photometric, depth)
    return (X_dlt, S, error, grad_uv, grad_r, grad_t, X_solve, X_inv, X_lstsq, dets, grad_solve, warped,
            photometric, grad_depth)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_multiview_triangulation_and_backprojection(dtype):
    # (float32: the gradients through the DLT's smallest singular vector, a gap of 1e-2 below the next, are 5e-4
    # apart, relative; the values to 1e-5)
    tolerance = dict(rtol=1e-8, atol=1e-10) if dtype == "float64" else dict(rtol=1e-3, atol=1e-4)
    ours, _ = run_both(multiview, dtype=dtype, **tolerance)
    X_dlt, S, error, grad_uv, grad_r, grad_t, X_solve, X_inv, X_lstsq = ours[:9]
    tol = 1e-8 if dtype == "float64" else 1e-3
    assert np.allclose(X_solve, X_inv, atol=tol) and np.allclose(X_solve, X_lstsq, atol=tol)
    assert np.allclose(X_dlt, X_solve, atol=0.05) and error < 1.0
