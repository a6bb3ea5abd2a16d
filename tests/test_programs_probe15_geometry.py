# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""3-D geometry and point-cloud programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and data, in float32 and float64, comparing values and gradients.

PointNet++ (single-scale grouping: farthest point sampling by an argmax loop, ball query by a sort of masked
indices, ``index_points`` by batch-index tensors, shared MLPs as ``Conv2d``, max over the neighbourhood, and
feature propagation by 3-NN inverse-distance interpolation); DGCNN's EdgeConv (kNN by ``topk`` of
``-‖xᵢ − xⱼ‖²``, edge features by flat indices, ``LeakyReLU``, max over k); a point-cloud auto-encoder trained
by the chamfer distance (``torch.cdist``, ``min`` over either dimension); rotations: axis-angle by Rodrigues'
formula, quaternions (normalised, multiplied, to matrices), the 6-D representation by Gram–Schmidt
(``F.normalize``, ``torch.linalg.cross``), the geodesic loss by ``acos`` of a clamped trace, back to
axis-angle by ``atan2``; Kabsch/Procrustes alignment through ``torch.linalg.svd`` with the ``det`` sign
correction, weights learnt through it (as Deep Closest Point's head); a spatial transformer from its
identity initialisation, in float32 (where the grid points sit on pixel centres and an ulp picks the
gradient), both ``align_corners`` and every padding mode; a pinhole camera whose pose is fitted through a
soft point rasteriser (``exp`` of squared pixel distances, depth-weighted ``softmax``); multi-view
triangulation by the DLT (the last right singular vector) and by batched ``torch.linalg.solve``/``inv``/
``det``; normals by local PCA (``torch.linalg.eigh`` of kNN covariances); SO(3)'s exponential and log maps
(``matrix_exp`` of a skew matrix, ``acos``); a T-Net initialised to the identity under a spectral regulariser
(``torch.svd``'s S at three equal singular values) and a det penalty; the Point Cloud Transformer's offset
attention with tied query/key convolutions; a mesh fitted to points (PyTorch3D's tutorial by hand: edge
lengths, a uniform Laplacian by ``torch.sparse.mm``, vertex normals by ``index_add_``, normal consistency);
augmentation drawn from the seeded generator (rotation about z, jitter, ``uniform_`` scale and shift, point
dropout, ``randperm``, random quaternions). Then focused tests of what the programs found: affine_grid's
float32 base grid, the values-only SVD / eig gradient at repeated values, grid_sample's reflection dtype,
cdist's matrix-product path past 25 rows, inv/solve's singular-matrix errors, torch.cross without dim, and
det's second derivative at a singular matrix."""


import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of


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


# ----------------------------------------------------------------------------------------------
# PointNet++ (SSG): farthest point sampling, ball query, grouping by index tensors, feature propagation
# ----------------------------------------------------------------------------------------------


def pointnet2_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    def square_distance(src, dst):
        B, N, _ = src.shape
        _, M, _ = dst.shape
        dist = -2 * torch.matmul(src, dst.permute(0, 2, 1))
        dist += torch.sum(src ** 2, -1).view(B, N, 1)
        dist += torch.sum(dst ** 2, -1).view(B, 1, M)
        return dist

    def index_points(points, idx):
        device = points.device
        B = points.shape[0]
        view_shape = list(idx.shape)
        view_shape[1:] = [1] * (len(view_shape) - 1)
        repeat_shape = list(idx.shape)
        repeat_shape[0] = 1
        batch_indices = torch.arange(B, dtype=torch.long).to(device).view(view_shape).repeat(repeat_shape)
        new_points = points[batch_indices, idx, :]
        return new_points

    def farthest_point_sample(xyz, npoint):
        device = xyz.device
        B, N, C = xyz.shape
        centroids = torch.zeros(B, npoint, dtype=torch.long).to(device)
        distance = torch.ones(B, N, dtype=xyz.dtype).to(device) * 1e10
        farthest = torch.zeros(B, dtype=torch.long).to(device)  # (the original draws it by torch.randint)
        batch_indices = torch.arange(B, dtype=torch.long).to(device)
        for i in range(npoint):
            centroids[:, i] = farthest
            centroid = xyz[batch_indices, farthest, :].view(B, 1, 3)
            dist = torch.sum((xyz - centroid) ** 2, -1)
            mask = dist < distance
            distance[mask] = dist[mask]
            farthest = torch.max(distance, -1)[1]
        return centroids

    def query_ball_point(radius, nsample, xyz, new_xyz):
        device = xyz.device
        B, N, C = xyz.shape
        _, S, _ = new_xyz.shape
        group_idx = torch.arange(N, dtype=torch.long).to(device).view(1, 1, N).repeat([B, S, 1])
        sqrdists = square_distance(new_xyz, xyz)
        group_idx[sqrdists > radius ** 2] = N
        group_idx = group_idx.sort(dim=-1)[0][:, :, :nsample]
        group_first = group_idx[:, :, 0].view(B, S, 1).repeat([1, 1, nsample])
        mask = group_idx == N
        group_idx[mask] = group_first[mask]
        return group_idx

    def sample_and_group(npoint, radius, nsample, xyz, points):
        B, N, C = xyz.shape
        S = npoint
        fps_idx = farthest_point_sample(xyz, npoint)
        new_xyz = index_points(xyz, fps_idx)
        idx = query_ball_point(radius, nsample, xyz, new_xyz)
        grouped_xyz = index_points(xyz, idx)
        grouped_xyz_norm = grouped_xyz - new_xyz.view(B, S, 1, C)
        if points is not None:
            grouped_points = index_points(points, idx)
            new_points = torch.cat([grouped_xyz_norm, grouped_points], dim=-1)
        else:
            new_points = grouped_xyz_norm
        return new_xyz, new_points

    def sample_and_group_all(xyz, points):
        device = xyz.device
        B, N, C = xyz.shape
        new_xyz = torch.zeros(B, 1, C, dtype=xyz.dtype).to(device)
        grouped_xyz = xyz.view(B, 1, N, C)
        new_points = torch.cat([grouped_xyz, points.view(B, 1, N, -1)], dim=-1)
        return new_xyz, new_points

    class PointNetSetAbstraction(nn.Module):
        def __init__(self, npoint, radius, nsample, in_channel, mlp, group_all):
            super(PointNetSetAbstraction, self).__init__()
            self.npoint = npoint
            self.radius = radius
            self.nsample = nsample
            self.mlp_convs = nn.ModuleList()
            self.mlp_bns = nn.ModuleList()
            last_channel = in_channel
            for out_channel in mlp:
                self.mlp_convs.append(nn.Conv2d(last_channel, out_channel, 1))
                self.mlp_bns.append(nn.BatchNorm2d(out_channel))
                last_channel = out_channel
            self.group_all = group_all

        def forward(self, xyz, points):
            xyz = xyz.permute(0, 2, 1)
            if points is not None:
                points = points.permute(0, 2, 1)
            if self.group_all:
                new_xyz, new_points = sample_and_group_all(xyz, points)
            else:
                new_xyz, new_points = sample_and_group(self.npoint, self.radius, self.nsample, xyz, points)
            new_points = new_points.permute(0, 3, 2, 1)  # [B, C+D, nsample, npoint]
            for i, conv in enumerate(self.mlp_convs):
                bn = self.mlp_bns[i]
                new_points = F.relu(bn(conv(new_points)))
            new_points = torch.max(new_points, 2)[0]
            new_xyz = new_xyz.permute(0, 2, 1)
            return new_xyz, new_points

    class PointNetFeaturePropagation(nn.Module):
        def __init__(self, in_channel, mlp):
            super(PointNetFeaturePropagation, self).__init__()
            self.mlp_convs = nn.ModuleList()
            self.mlp_bns = nn.ModuleList()
            last_channel = in_channel
            for out_channel in mlp:
                self.mlp_convs.append(nn.Conv1d(last_channel, out_channel, 1))
                self.mlp_bns.append(nn.BatchNorm1d(out_channel))
                last_channel = out_channel

        def forward(self, xyz1, xyz2, points1, points2):
            xyz1 = xyz1.permute(0, 2, 1)
            xyz2 = xyz2.permute(0, 2, 1)
            points2 = points2.permute(0, 2, 1)
            B, N, C = xyz1.shape
            _, S, _ = xyz2.shape
            if S == 1:
                interpolated_points = points2.repeat(1, N, 1)
            else:
                dists = square_distance(xyz1, xyz2)
                dists, idx = dists.sort(dim=-1)
                dists, idx = dists[:, :, :3], idx[:, :, :3]  # [B, N, 3]
                dist_recip = 1.0 / (dists + 1e-8)
                norm = torch.sum(dist_recip, dim=2, keepdim=True)
                weight = dist_recip / norm
                interpolated_points = torch.sum(index_points(points2, idx) * weight.view(B, N, 3, 1), dim=2)
            if points1 is not None:
                points1 = points1.permute(0, 2, 1)
                new_points = torch.cat([points1, interpolated_points], dim=-1)
            else:
                new_points = interpolated_points
            new_points = new_points.permute(0, 2, 1)
            for i, conv in enumerate(self.mlp_convs):
                bn = self.mlp_bns[i]
                new_points = F.relu(bn(conv(new_points)))
            return new_points

    class PointNet2(nn.Module):
        """A classifier, and a per-point segmentation head fed back through both abstraction levels."""

        def __init__(self, num_class=2, num_part=2):
            super().__init__()
            self.sa1 = PointNetSetAbstraction(npoint=8, radius=0.8, nsample=6, in_channel=3, mlp=[8, 16],
                                              group_all=False)
            self.sa2 = PointNetSetAbstraction(npoint=4, radius=1.2, nsample=4, in_channel=16 + 3, mlp=[16, 16],
                                              group_all=False)
            self.sa3 = PointNetSetAbstraction(npoint=None, radius=None, nsample=None, in_channel=16 + 3,
                                              mlp=[16, 24], group_all=True)
            self.fc = nn.Sequential(nn.Linear(24, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.0),
                                    nn.Linear(16, num_class))
            self.fp3 = PointNetFeaturePropagation(24 + 16, [16])
            self.fp2 = PointNetFeaturePropagation(16 + 16, [16])
            self.fp1 = PointNetFeaturePropagation(16, [8])
            self.seg = nn.Conv1d(8, num_part, 1)

        def forward(self, xyz):
            l1_xyz, l1_points = self.sa1(xyz, None)
            l2_xyz, l2_points = self.sa2(l1_xyz, l1_points)
            l3_xyz, l3_points = self.sa3(l2_xyz, l2_points)
            x = self.fc(l3_points.view(xyz.shape[0], 24))
            l2_points = self.fp3(l2_xyz, l3_xyz, l2_points, l3_points)
            l1_points = self.fp2(l1_xyz, l2_xyz, l1_points, l2_points)
            l0_points = self.fp1(xyz, l1_xyz, None, l1_points)
            return F.log_softmax(x, -1), F.log_softmax(self.seg(l0_points), 1)

    return PointNet2()


def pointnet2(m, weights, steps=3, dtype="float64"):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    model = load(m, pointnet2_net(m), weights).to(dtype)
    clouds, labels = point_clouds()
    xyz = torch.tensor(clouds, dtype=dtype).transpose(2, 1)
    target = torch.tensor(labels)
    part = (xyz[:, 2] > 0).long()  # the upper half of each cloud is part 1
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        cls, seg = model(xyz)
        loss = F.nll_loss(cls, target) + F.nll_loss(seg, part)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters() if "fc.0" in name or "seg" in name or "fp1" in name}
    return losses, grads, cls, seg


def test_pointnet2_ssg_classification_and_segmentation():
    weights = weights_of(pointnet2_net)
    ours, _ = run_both(pointnet2, weights, rtol=1e-8, atol=1e-10)
    losses, grads, cls, seg = ours
    assert losses[-1] < losses[0] and cls.shape == (4, 2) and seg.shape == (4, 2, 32)
    # float32: one step (Adam's steps on the biases a BatchNorm removes are rounding noise over its own square
    # root, which the later steps' gradients then carry, as in PointNet's test in test_programs_probe5.py)
    run_both(pointnet2, weights, steps=1, dtype="float32", rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# DGCNN (Wang et al.): EdgeConv over a dynamic kNN graph (topk of minus squared distances)
# ----------------------------------------------------------------------------------------------


def dgcnn_net(m, k=4):
    torch, nn, F = m.torch, m.nn, m.F

    def knn(x, k):
        inner = -2 * torch.matmul(x.transpose(2, 1), x)
        xx = torch.sum(x ** 2, dim=1, keepdim=True)
        pairwise_distance = -xx - inner - xx.transpose(2, 1)
        idx = pairwise_distance.topk(k=k, dim=-1)[1]  # (batch_size, num_points, k)
        return idx

    def get_graph_feature(x, k=20, idx=None):
        batch_size = x.size(0)
        num_points = x.size(2)
        x = x.view(batch_size, -1, num_points)
        if idx is None:
            idx = knn(x, k=k)  # (batch_size, num_points, k)
        device = x.device
        idx_base = torch.arange(0, batch_size, device=device).view(-1, 1, 1) * num_points
        idx = idx + idx_base
        idx = idx.view(-1)
        _, num_dims, _ = x.size()
        x = x.transpose(2, 1).contiguous()
        feature = x.view(batch_size * num_points, -1)[idx, :]
        feature = feature.view(batch_size, num_points, k, num_dims)
        x = x.view(batch_size, num_points, 1, num_dims).repeat(1, 1, k, 1)
        feature = torch.cat((feature - x, x), dim=3).permute(0, 3, 1, 2).contiguous()
        return feature, idx

    class DGCNN(nn.Module):
        def __init__(self, k=k, emb_dims=16, output_channels=2):
            super(DGCNN, self).__init__()
            self.k = k
            self.bn1 = nn.BatchNorm2d(8)
            self.bn2 = nn.BatchNorm2d(8)
            self.bn5 = nn.BatchNorm1d(emb_dims)
            self.conv1 = nn.Sequential(nn.Conv2d(6, 8, kernel_size=1, bias=False), self.bn1,
                                       nn.LeakyReLU(negative_slope=0.2))
            self.conv2 = nn.Sequential(nn.Conv2d(8 * 2, 8, kernel_size=1, bias=False), self.bn2,
                                       nn.LeakyReLU(negative_slope=0.2))
            self.conv5 = nn.Sequential(nn.Conv1d(16, emb_dims, kernel_size=1, bias=False), self.bn5,
                                       nn.LeakyReLU(negative_slope=0.2))
            self.linear1 = nn.Linear(emb_dims * 2, 12, bias=False)
            self.bn6 = nn.BatchNorm1d(12)
            self.dp1 = nn.Dropout(p=0.0)
            self.linear3 = nn.Linear(12, output_channels)

        def forward(self, x):
            batch_size = x.size(0)
            x, idx = get_graph_feature(x, k=self.k)
            x = self.conv1(x)
            x1 = x.max(dim=-1, keepdim=False)[0]
            x, idx2 = get_graph_feature(x1, k=self.k)  # the graph rebuilt in feature space
            x = self.conv2(x)
            x2 = x.max(dim=-1, keepdim=False)[0]
            x = torch.cat((x1, x2), dim=1)
            x = self.conv5(x)
            x1 = F.adaptive_max_pool1d(x, 1).view(batch_size, -1)
            x2 = F.adaptive_avg_pool1d(x, 1).view(batch_size, -1)
            x = torch.cat((x1, x2), 1)
            x = F.leaky_relu(self.bn6(self.linear1(x)), negative_slope=0.2)
            x = self.dp1(x)
            x = self.linear3(x)
            return x, idx, idx2

    return DGCNN()


def dgcnn(m, weights, steps=3, dtype="float64"):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    model = load(m, dgcnn_net(m), weights).to(dtype)

    def cal_loss(pred, gold, smoothing=True):
        gold = gold.contiguous().view(-1)
        if smoothing:
            eps = 0.2
            n_class = pred.size(1)
            one_hot = torch.zeros_like(pred).scatter(1, gold.view(-1, 1), 1)
            one_hot = one_hot * (1 - eps) + (1 - one_hot) * eps / (n_class - 1)
            log_prb = F.log_softmax(pred, dim=1)
            loss = -(one_hot * log_prb).sum(dim=1).mean()
        else:
            loss = F.cross_entropy(pred, gold, reduction="mean")
        return loss

    clouds, labels = point_clouds(seed=1, points=24)
    data = torch.tensor(clouds, dtype=dtype).permute(0, 2, 1)
    label = torch.tensor(labels)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.001)
    losses = []
    for epoch in range(steps):
        model.train()
        opt.zero_grad()
        logits, idx, idx2 = model(data)
        loss = cal_loss(logits, label)
        loss.backward()
        opt.step()
        scheduler.step()
        losses.append(loss.item())
    return losses, idx, [p.grad for p in model.parameters()], [p.detach() for p in model.parameters()]


def test_dgcnn_edgeconv():
    weights = weights_of(dgcnn_net)
    ours, _ = run_both(dgcnn, weights, rtol=1e-8, atol=1e-10)
    losses, idx, grads, params = ours
    # each point is its own nearest neighbour: the first of its k indices is itself
    assert (idx.reshape(4, 24, 4)[:, :, 0] == np.arange(24) + 24 * np.arange(4)[:, None]).all()
    run_both(dgcnn, weights, steps=1, dtype="float32", rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# A point-cloud auto-encoder trained by the chamfer distance (cdist, min over either side)
# ----------------------------------------------------------------------------------------------


def chamfer_ae_net(m, points=24):
    nn = m.nn

    class PointNetAE(nn.Module):
        def __init__(self, num_points=points, latent=8):
            super().__init__()
            self.num_points = num_points
            self.encoder = nn.Sequential(nn.Conv1d(3, 16, 1), nn.ReLU(), nn.Conv1d(16, latent, 1))
            self.decoder = nn.Sequential(nn.Linear(latent, 32), nn.ReLU(), nn.Linear(32, num_points * 3))

        def forward(self, x):  # x: (B, N, 3)
            z = self.encoder(x.transpose(1, 2)).max(dim=2)[0]
            return self.decoder(z).view(-1, self.num_points, 3)

    return PointNetAE()


def chamfer_ae(m, weights, steps=4, dtype="float64", how="cdist"):
    torch, optim = m.torch, m.optim
    dtype = getattr(torch, dtype)
    model = load(m, chamfer_ae_net(m), weights).to(dtype)

    def chamfer_distance(x, y):
        if how == "cdist":
            d = torch.cdist(x, y) ** 2
        else:  # the broadcast form many repositories write
            d = ((x.unsqueeze(2) - y.unsqueeze(1)) ** 2).sum(-1)
        return d.min(dim=2)[0].mean(dim=1) + d.min(dim=1)[0].mean(dim=1)

    clouds, _ = point_clouds(seed=2, points=24)
    clouds[:, 1] = clouds[:, 0]  # a repeated point: ties in the minimum over the target
    x = torch.tensor(clouds, dtype=dtype)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        recon = model(x)
        loss = chamfer_distance(recon, x).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # the gradient of the chamfer distance with respect to both clouds, ties included
    a = recon.detach().clone().requires_grad_()
    b = x.clone().requires_grad_()
    a.data[:, 2] = b.data[:, 0]  # a reconstructed point exactly on a target point: distance 0
    ga, gb = torch.autograd.grad(chamfer_distance(a, b).sum(), [a, b])
    return losses, [p.grad for p in model.parameters()], ga, gb


@pytest.mark.parametrize("how", ["cdist", "broadcast"])
def test_chamfer_autoencoder(how):
    weights = weights_of(chamfer_ae_net)
    ours, _ = run_both(chamfer_ae, weights, how=how, rtol=1e-8, atol=1e-10)
    losses, grads, ga, gb = ours
    assert losses[-1] < losses[0]
    assert np.isfinite(ga).all() and np.isfinite(gb).all()
    run_both(chamfer_ae, weights, how=how, dtype="float32", rtol=1e-4, atol=1e-6)


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
# Rotations: Rodrigues, quaternions, the 6-D representation, the geodesic loss, back to axis-angle
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Normals by local PCA: kNN covariances, torch.linalg.eigh's smallest eigenvector, a normal-consistency loss;
# SO(3)'s exponential map by matrix_exp of a skew matrix against Rodrigues
# ----------------------------------------------------------------------------------------------


def pca_normals(m, dtype="float64", k=6):
    torch, F = m.torch, m.F
    dtype = getattr(torch, dtype)
    rng = np.random.default_rng(12)
    # a wavy height field z = 0.3 sin(2x) cos(y): its normals are known in closed form
    xy = rng.uniform(-1, 1, (2, 40, 2))
    z = 0.3 * np.sin(2 * xy[..., 0]) * np.cos(xy[..., 1])
    points = torch.tensor(np.concatenate([xy, z[..., None]], -1), dtype=dtype, requires_grad=True)
    dist = torch.cdist(points, points)
    knn_dist, knn_idx = dist.topk(k, dim=-1, largest=False)
    B, N, _ = points.shape
    batch_idx = torch.arange(B).view(B, 1, 1).expand(B, N, k)
    neighbours = points[batch_idx, knn_idx]  # (B, N, k, 3)
    weights = torch.exp(-knn_dist ** 2 / 0.1)
    weights = weights / weights.sum(-1, keepdim=True)
    centred = neighbours - (weights.unsqueeze(-1) * neighbours).sum(2, keepdim=True)
    cov = torch.einsum("bnk,bnki,bnkj->bnij", weights, centred, centred)
    evals, evecs = torch.linalg.eigh(cov)
    normals = evecs[..., 0]  # the smallest eigenvalue's eigenvector
    normals = normals * torch.sign(normals[..., 2:3])  # oriented up (the height field's side)
    curvature = evals[..., 0] / evals.sum(-1)
    gx = 0.6 * torch.cos(2 * points[..., 0]) * torch.cos(points[..., 1])
    gy = -0.3 * torch.sin(2 * points[..., 0]) * torch.sin(points[..., 1])
    true_normals = F.normalize(torch.stack([-gx, -gy, torch.ones_like(gx)], -1), dim=-1)
    cosine = F.cosine_similarity(normals, true_normals, dim=-1)
    loss = (1 - cosine.abs()).mean() + curvature.mean()
    (grad_points,) = torch.autograd.grad(loss, points)
    return normals, evals, curvature, cosine, loss, grad_points, knn_idx


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pca_normals(dtype):
    tolerance = dict(rtol=1e-7, atol=1e-9) if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    ours, _ = run_both(pca_normals, dtype=dtype, **tolerance)
    normals, evals, curvature, cosine, loss, grad_points, knn_idx = ours
    assert np.median(cosine) > 0.95 and (knn_idx[..., 0] == np.arange(40)).all()


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


def test_cdist_takes_the_matrix_product_path_past_25_rows(T):
    """p = 2 with more than 25 rows on either side (or compute_mode='use_mm_for_euclid_dist') is PyTorch's
    √max(0, ‖x‖² + ‖y‖² − 2 x·y): identical float32 points come out √(rounding) apart, not 0 (the chamfer
    distance of a cloud to itself, a kNN's self-distance), and d = 0 has gradient 0."""
    rng = np.random.default_rng(0)
    points = rng.standard_normal((30, 3)).astype(np.float32) * 10
    x = T.tensor(points, requires_grad=True)
    d = T.cdist(x, x)
    by_product = np.sqrt(np.maximum(
        (points * points).sum(-1)[:, None] + (points * points).sum(-1)[None] - 2 * points @ points.T, 0))
    assert d.dtype == T.float32 and (d.diagonal() > 0).any() and d.diagonal().max() < 1e-2
    np.testing.assert_allclose(d.detach().numpy(), by_product, atol=3e-3)
    exact = T.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    assert T.equal(exact.diagonal(), T.zeros(30)) and T.allclose(d, exact, atol=1e-2)
    assert T.equal(T.cdist(x[:5], x[:5]).diagonal(), T.zeros(5))  # (up to 25 rows: the differences)
    z = T.zeros(1, 2, requires_grad=True)
    (grad,) = T.autograd.grad(T.cdist(z, T.zeros(1, 2), compute_mode="use_mm_for_euclid_dist").sum(), z)
    assert T.equal(grad, T.zeros(1, 2))
    with pytest.raises(ValueError, match="not a valid value for compute_mode"):
        T.cdist(x, x, compute_mode="fast")


def test_singular_inverse_and_solve_errors_name_the_matrix(T):
    """linalg.inv and linalg.solve of a singular matrix raise PyTorch's LinAlgError words: the batch element, and
    for inv the 1-based index of U's first zero pivot (a degenerate camera matrix, a collinear point triple)."""
    batch = T.stack([T.eye(3), T.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]])])
    with pytest.raises(T.linalg.LinAlgError, match=r"^linalg\.inv: \(Batch element 1\): The diagonal element 3 is "
                                                   r"zero, the inversion could not be completed because the input "
                                                   r"matrix is singular\.$"):
        T.linalg.inv(batch)
    with pytest.raises(T.linalg.LinAlgError, match=r"^linalg\.inv: The diagonal element 2 is zero"):
        T.linalg.inv(T.tensor([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(T.linalg.LinAlgError, match=r"^torch\.linalg\.solve: \(Batch element 1\): The solver failed "
                                                   r"because the input matrix is singular\.$"):
        T.linalg.solve(batch, T.ones(2, 3))


# ----------------------------------------------------------------------------------------------
# A T-Net initialised to the identity, kept a rotation by a spectral regulariser (torch.svd's S at init:
# three equal singular values) and a det penalty; the aligned cloud classified by a PointNet
# ----------------------------------------------------------------------------------------------


def tnet_spectral_net(m):
    torch, nn = m.torch, m.nn

    class TNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Conv1d(3, 16, 1), nn.ReLU(), nn.Conv1d(16, 32, 1), nn.ReLU())
            self.fc = nn.Linear(32, 9)
            nn.init.zeros_(self.fc.weight)  # the identity transform at initialisation
            with torch.no_grad():
                self.fc.bias.copy_(torch.eye(3).flatten())

        def forward(self, x):
            return self.fc(self.mlp(x).max(dim=2)[0]).view(-1, 3, 3)

    class AlignedPointNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.tnet = TNet()
            self.feat = nn.Sequential(nn.Conv1d(3, 16, 1), nn.ReLU(), nn.Conv1d(16, 32, 1))
            self.cls = nn.Linear(32, 2)

        def forward(self, x):
            trans = self.tnet(x)
            x = torch.bmm(trans, x)
            return self.cls(self.feat(x).max(dim=2)[0]), trans

    return AlignedPointNet()


def tnet_spectral(m, weights, steps=3, dtype="float64", how="torch.svd"):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    model = load(m, tnet_spectral_net(m), weights).to(dtype)
    clouds, labels = point_clouds(n=6, points=20, seed=3)
    x = torch.tensor(clouds, dtype=dtype).transpose(1, 2)
    y = torch.tensor(labels)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses, regs = [], []
    for step in range(steps):
        optimizer.zero_grad()
        logits, trans = model(x)
        if how == "torch.svd":
            _, S, _ = torch.svd(trans)
        else:
            S = torch.linalg.svd(trans)[1]
        reg = ((S - 1) ** 2).sum(-1).mean() + ((torch.det(trans) - 1) ** 2).mean()
        loss = F.cross_entropy(logits, y) + 0.1 * reg
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        regs.append(reg.item())
    return losses, regs, model.tnet.fc.weight.grad, model.tnet.fc.bias.grad, trans


@pytest.mark.parametrize("how", ["torch.svd", "linalg.svd"])
def test_tnet_spectral_regulariser_from_identity(how):
    weights = weights_of(tnet_spectral_net)
    ours, _ = run_both(tnet_spectral, weights, how=how, rtol=1e-8, atol=1e-10)
    losses, regs, weight_grad, bias_grad, trans = ours
    assert regs[0] == 0 and np.isfinite(weight_grad).all() and losses[-1] < losses[0]
    run_both(tnet_spectral, weights, how=how, steps=2, dtype="float32", rtol=1e-4, atol=1e-6)


def test_cross_without_dim_takes_the_first_dim_of_size_3(T, warn_always):
    """torch.cross with no dim (old point-cloud code: normals from two edge vectors) warns that it is deprecated,
    crosses along input's first dim of size 3 (not the last, linalg.cross's), and refuses a tensor with none."""
    a = T.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # (3, 2): the vectors are its columns
    b = T.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.warns(UserWarning, match="Using torch.cross without specifying the dim arg is deprecated"):
        c = T.cross(a, b)
    assert T.equal(c, T.linalg.cross(a, b, dim=0)) and T.equal(c[:, 0], T.tensor([0.0, 0.0, 1.0]))
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="no dimension of size 3 in input"):
        T.cross(T.zeros(4, 2), T.zeros(4, 2))


def test_det_of_a_singular_matrix_differentiates_twice(T):
    """create_graph through det at a singular matrix (a degenerate triangle's signed volume, a Hessian of a
    det penalty): the cofactors come from linalg.svd in Tensor operations, differentiable again, as PyTorch's
    singular path (it raised "not built"). d²det/dA² of [[1, 2, 3], [2, 4, 6], [0, 1, 1]] against finite
    differences of the (continuous) cofactor matrix."""
    a = T.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]], dtype=T.float64, requires_grad=True)
    (cofactors,) = T.autograd.grad(T.linalg.det(a), a, create_graph=True)
    direction = T.tensor([[0.3, -0.1, 0.2], [0.5, 0.4, -0.7], [0.1, 0.9, -0.2]], dtype=T.float64)
    (second,) = T.autograd.grad((cofactors * direction).sum(), a)

    def numpy_cofactors(m):
        return np.array([[(-1) ** (i + j) * np.linalg.det(np.delete(np.delete(m, i, 0), j, 1)) for j in range(3)]
                         for i in range(3)])

    m, h = a.detach().numpy(), 1e-6
    numeric = np.array([[((numpy_cofactors(m + h * np.eye(3)[i][:, None] * np.eye(3)[j][None])
                           - numpy_cofactors(m - h * np.eye(3)[i][:, None] * np.eye(3)[j][None])) / (2 * h)
                          * direction.numpy()).sum() for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(cofactors.detach().numpy(), numpy_cofactors(m), atol=1e-12)
    np.testing.assert_allclose(second.numpy(), numeric, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Point Cloud Transformer (Guo et al.): offset attention with tied query/key convolutions
# ----------------------------------------------------------------------------------------------


def pct_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SA_Layer(nn.Module):
        def __init__(self, channels):
            super(SA_Layer, self).__init__()
            self.q_conv = nn.Conv1d(channels, channels // 4, 1, bias=False)
            self.k_conv = nn.Conv1d(channels, channels // 4, 1, bias=False)
            self.q_conv.weight = self.k_conv.weight
            self.q_conv.bias = self.k_conv.bias
            self.v_conv = nn.Conv1d(channels, channels, 1)
            self.trans_conv = nn.Conv1d(channels, channels, 1)
            self.after_norm = nn.BatchNorm1d(channels)
            self.act = nn.ReLU()
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x):
            x_q = self.q_conv(x).permute(0, 2, 1)  # b, n, c
            x_k = self.k_conv(x)  # b, c, n
            x_v = self.v_conv(x)
            energy = torch.bmm(x_q, x_k)  # b, n, n
            attention = self.softmax(energy)
            attention = attention / (1e-9 + attention.sum(dim=1, keepdims=True))
            x_r = torch.bmm(x_v, attention)  # b, c, n
            x_r = self.act(self.after_norm(self.trans_conv(x - x_r)))
            x = x + x_r
            return x

    class Point_Transformer_Last(nn.Module):
        def __init__(self, channels=16):
            super(Point_Transformer_Last, self).__init__()
            self.conv1 = nn.Conv1d(channels, channels, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm1d(channels)
            self.sa1 = SA_Layer(channels)
            self.sa2 = SA_Layer(channels)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x1 = self.sa1(x)
            x2 = self.sa2(x1)
            return torch.cat((x1, x2), dim=1)

    class Pct(nn.Module):
        def __init__(self, output_channels=2):
            super(Pct, self).__init__()
            self.conv1 = nn.Conv1d(3, 16, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm1d(16)
            self.pt_last = Point_Transformer_Last()
            self.conv_fuse = nn.Sequential(nn.Conv1d(48, 32, kernel_size=1, bias=False), nn.BatchNorm1d(32),
                                           nn.LeakyReLU(negative_slope=0.2))
            self.linear1 = nn.Linear(32, 16, bias=False)
            self.bn6 = nn.BatchNorm1d(16)
            self.linear3 = nn.Linear(16, output_channels)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.cat([self.pt_last(x), x], dim=1)
            x = self.conv_fuse(x)
            x = torch.max(x, 2)[0]
            x = x.view(x.shape[0], -1)
            x = F.leaky_relu(self.bn6(self.linear1(x)), negative_slope=0.2)
            return self.linear3(x)

    return Pct()


def pct(m, weights, steps=3, dtype="float64"):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    model = load(m, pct_net(m), weights).to(dtype)
    clouds, labels = point_clouds(n=4, points=24, seed=4)
    x = torch.tensor(clouds, dtype=dtype).permute(0, 2, 1)
    y = torch.tensor(labels)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y, label_smoothing=0.2)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tied = model.pt_last.sa1.q_conv.weight is model.pt_last.sa1.k_conv.weight
    names = [name for name, _ in model.named_parameters()]
    return losses, tied, len(names), sorted(model.state_dict()), model.pt_last.sa1.k_conv.weight.grad


def test_point_cloud_transformer_with_tied_query_key():
    weights = weights_of(pct_net)
    ours, _ = run_both(pct, weights, rtol=1e-8, atol=1e-10)
    losses, tied, count, keys, grad = ours
    assert tied and "pt_last.sa1.q_conv.weight" in keys and losses[-1] < losses[0]
    run_both(pct, weights, steps=1, dtype="float32", rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Mesh deformation (PyTorch3D's "fit a mesh" tutorial, by hand): chamfer to target points, edge length,
# uniform Laplacian smoothing by torch.sparse.mm, normal consistency, vertex normals by index_add_
# ----------------------------------------------------------------------------------------------


def octahedron(subdivisions=1):
    verts = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
    faces = [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    verts = [np.array(v, dtype=float) for v in verts]
    for _ in range(subdivisions):
        midpoint, new_faces = {}, []

        def middle(a, b):
            key = (min(a, b), max(a, b))
            if key not in midpoint:
                verts.append((verts[a] + verts[b]) / 2)
                midpoint[key] = len(verts) - 1
            return midpoint[key]

        for a, b, c in faces:
            ab, bc, ca = middle(a, b), middle(b, c), middle(c, a)
            new_faces += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        faces = new_faces
    return np.array(verts), np.array(faces)


def mesh_fit(m, dtype="float64", steps=5):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    verts0, faces_np = octahedron()
    V = len(verts0)
    faces = torch.tensor(faces_np)
    edges_np = np.unique(np.sort(np.concatenate([faces_np[:, [0, 1]], faces_np[:, [1, 2]], faces_np[:, [2, 0]]]), 1),
                         axis=0)
    edges = torch.tensor(edges_np)
    rng = np.random.default_rng(14)
    target = rng.standard_normal((40, 3)) * [1.3, 0.8, 0.6]
    target = torch.tensor(target / np.linalg.norm(target, axis=1, keepdims=True) * [1.3, 0.8, 0.6], dtype=dtype)

    # uniform Laplacian L = D⁻¹A − I as a sparse matrix
    rows = torch.cat([edges[:, 0], edges[:, 1]])
    cols = torch.cat([edges[:, 1], edges[:, 0]])
    deg = torch.zeros(V, dtype=dtype).index_add_(0, rows, torch.ones(rows.shape[0], dtype=dtype))
    values = 1.0 / deg[rows]
    L = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (V, V))
    eye = torch.sparse_coo_tensor(torch.arange(V).repeat(2, 1), torch.ones(V, dtype=dtype), (V, V))
    L = (L - eye).coalesce()

    deform = torch.zeros(V, 3, dtype=dtype, requires_grad=True)
    optimizer = optim.SGD([deform], lr=0.5, momentum=0.9)
    src = torch.tensor(verts0, dtype=dtype)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        verts = src + deform
        d = torch.cdist(verts, target) ** 2
        chamfer = d.min(1)[0].mean() + d.min(0)[0].mean()
        edge_vec = verts[edges[:, 0]] - verts[edges[:, 1]]
        edge_loss = ((edge_vec.norm(dim=1) - 0.5) ** 2).mean()
        laplacian = torch.sparse.mm(L, verts).norm(dim=1).mean()
        v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
        face_normals = torch.cross(v1 - v0, v2 - v0, dim=1)
        vertex_normals = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), face_normals.repeat_interleave(3, 0))
        vertex_normals = F.normalize(vertex_normals, dim=1, eps=1e-6)
        # normal consistency over the edges: both end points' normals agree
        normal_consistency = (1 - F.cosine_similarity(vertex_normals[edges[:, 0]], vertex_normals[edges[:, 1]],
                                                      dim=1)).mean()
        loss = chamfer + 0.5 * edge_loss + 0.1 * laplacian + 0.01 * normal_consistency
        loss.backward()
        optimizer.step()
        history.append([chamfer.item(), edge_loss.item(), laplacian.item(), normal_consistency.item()])
    return history, deform.detach(), deform.grad, vertex_normals, L.to_dense()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mesh_fit_with_sparse_laplacian(dtype):
    tolerance = dict(rtol=1e-8, atol=1e-10) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    ours, _ = run_both(mesh_fit, dtype=dtype, **tolerance)
    history, deform, grad, normals, L = ours
    assert history[-1][0] < history[0][0] and np.allclose(L.sum(1), 0, atol=1e-6)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Point-cloud augmentation as training scripts draw it (rotation about z, jitter, scale and shift, random
# point dropout, shuffling, random quaternions), from the seeded generator, feeding DGCNN
# ----------------------------------------------------------------------------------------------


def augmented_dgcnn(m, weights, dtype="float32", steps=2):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    torch.manual_seed(3)
    model = load(m, dgcnn_net(m), weights).to(dtype)
    clouds, labels = point_clouds(seed=5, points=24)
    base = torch.tensor(clouds, dtype=dtype)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses, drawn = [], []
    for step in range(steps):
        x = base.clone()
        B, N, _ = x.shape
        theta = torch.rand(B, dtype=dtype) * 2 * math.pi
        c, s = torch.cos(theta), torch.sin(theta)
        z, o = torch.zeros_like(c), torch.ones_like(c)
        R = torch.stack([c, -s, z, s, c, z, z, z, o], -1).view(B, 3, 3)
        x = x @ R.transpose(1, 2)
        x = x + torch.clamp(0.01 * torch.randn_like(x), -0.05, 0.05)
        scale = torch.empty(B, 1, 1, dtype=dtype).uniform_(0.8, 1.25)
        x = x * scale + torch.empty(B, 1, 3, dtype=dtype).uniform_(-0.1, 0.1)
        drop = torch.rand(B, N) < 0.125  # dropped points become each cloud's first point
        x[drop] = x[:, :1].expand(-1, N, -1)[drop]
        x = x[:, torch.randperm(N)]
        q = torch.randn(B, 4, dtype=dtype)  # PyTorch3D's random_quaternions, w made non-negative
        q = q / (torch.sqrt((q * q).sum(1)) * torch.sign(q[:, 0]))[:, None]
        optimizer.zero_grad()
        logits, _, _ = model(x.transpose(1, 2))
        loss = F.cross_entropy(logits, torch.tensor(labels))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        drawn.append((theta, drop, q))
    return losses, drawn, [p.grad for p in model.parameters()]


def test_augmentation_draws_match_and_train():
    weights = weights_of(dgcnn_net)
    ours, _ = run_both(augmented_dgcnn, weights, steps=1, rtol=1e-4, atol=1e-6)
    ours, _ = run_both(augmented_dgcnn, weights, dtype="float64", rtol=1e-8, atol=1e-10)
    losses, drawn, grads = ours
    theta, drop, q = drawn[0]
    assert ((theta >= 0) & (theta < 2 * math.pi)).all() and drop.dtype == bool and (q[:, 0] >= 0).all()
    assert np.allclose(np.linalg.norm(q, axis=1), 1)
