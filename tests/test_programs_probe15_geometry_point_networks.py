# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""3-D geometry and point-cloud programs, run as tests/probe15_geometry_common.py says. Networks on point sets:
PointNet++ (single-scale grouping: farthest point sampling by an argmax loop, ball query by a sort of masked indices,
``index_points`` by batch-index tensors, shared MLPs as ``Conv2d``, max over the neighbourhood, and feature
propagation by 3-NN inverse-distance interpolation); DGCNN's EdgeConv (kNN by ``topk`` of ``-‖xᵢ − xⱼ‖²``, edge
features by flat indices, ``LeakyReLU``, max over k); the Point Cloud Transformer's offset attention with tied
query/key convolutions; augmentation drawn from the seeded generator (rotation about z, jitter, ``uniform_`` scale
and shift, point dropout, ``randperm``, random quaternions) training DGCNN."""

import math

import numpy as np

from .probe15_geometry_common import point_clouds
from .pytorch_programs import load, run_both, weights_of

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
    # root, which the later steps' gradients then carry, as in PointNet's test in test_programs_probe5_*.py)
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
