# ruff: noqa: E741, N806  (the programs are kept as their authors write them)
"""Point-cloud programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same data,
comparing values and gradients; without PyTorch each still checks its numbers against NumPy or an invariant.
tests/test_programs_probe15_geometry_*.py holds PointNet++, DGCNN, chamfer auto-encoders and rotations; these are
the pieces around them: voxelisation (floor, unique over rows with inverse and counts, index_add_, scatter_add_,
scatter_reduce's amax/mean, bincount, an occupancy grid by index_put_ with accumulate), z-order (Morton) codes by
shifts and masks of int64 and int32, Sinkhorn's earth-mover approximation in log space, a chamfer distance as an
``autograd.Function`` with non-differentiable indices and a once-differentiable backward that scatters its gradient
(gradcheck'd), PointNet's classifier with both T-Nets and the orthogonality regulariser, normals and curvature by
``linalg.eigh`` of k-NN covariances, Kabsch through ``linalg.svd`` with the det sign, a 3-D Gaussian splat (covariance
from scale and quaternion, projection Jacobian, alpha compositing by cumprod), PyTorch3D's matrix-to-quaternion
(one_hot of an argmax as a mask), max pooling over points with ties, and ball-query padding through a 2-d mask."""

import math

import numpy as np

from .pytorch_programs import run_both


def cloud(n=64, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, (n, 3)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Voxelisation: floor, unique rows, scatter of features; z-order codes
# ----------------------------------------------------------------------------------------------


def voxelise(m, points, features, voxel=0.5):
    torch = m.torch
    pts = torch.tensor(points)
    feats = torch.tensor(features, requires_grad=True)
    coords = torch.floor(pts / voxel).long()
    coords = coords - coords.min(0)[0]
    uniq, inv, counts = torch.unique(coords, dim=0, return_inverse=True, return_counts=True)
    summed = torch.zeros(uniq.shape[0], feats.shape[1]).index_add_(0, inv, feats)
    mean = summed / counts.unsqueeze(1).float()
    index = inv.unsqueeze(1).expand(-1, feats.shape[1])
    added = torch.zeros(uniq.shape[0], feats.shape[1]).scatter_add_(0, index, feats)
    peak = torch.zeros(uniq.shape[0], feats.shape[1]).scatter_reduce(0, index, feats, reduce="amax",
                                                                      include_self=False)
    avg = torch.zeros(uniq.shape[0], feats.shape[1]).scatter_reduce(0, index, feats, reduce="mean",
                                                                     include_self=False)
    loss = mean.pow(2).sum() + added.sum() + peak.sum() + (avg * 2).sum()
    loss.backward()
    side = int(coords.max()) + 1
    grid = torch.zeros(side, side, side).index_put_(tuple(coords.t()), torch.ones(len(coords)), accumulate=True)
    occupied = grid.nonzero()
    return dict(uniq=uniq, inv=inv, counts=counts, bins=torch.bincount(inv), mean=mean, added=added, peak=peak,
                avg=avg, grad=feats.grad, grid=grid, occupied=occupied, long=coords.dtype == torch.int64)


def test_voxelise_by_unique_and_scatter():
    points, features = cloud(), np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
    ours, _ = run_both(voxelise, points, features, rtol=1e-6, atol=1e-6)
    coords = np.floor(points / np.float32(0.5)).astype(np.int64)
    coords -= coords.min(0)
    uniq, inv, counts = np.unique(coords, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    np.testing.assert_array_equal(ours["uniq"], uniq)
    np.testing.assert_array_equal(ours["inv"], inv)
    np.testing.assert_array_equal(ours["counts"], counts)
    np.testing.assert_array_equal(ours["bins"], counts)
    summed = np.zeros((len(uniq), 4), np.float32)
    np.add.at(summed, inv, features)
    peak = np.full((len(uniq), 4), -np.inf, np.float32)
    np.maximum.at(peak, inv, features)
    np.testing.assert_allclose(ours["added"], summed, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours["mean"], summed / counts[:, None], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours["avg"], summed / counts[:, None], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ours["peak"], peak)
    # d/dfeats: 2·mean/count (mean²) + 1 (sum) + 1 at each voxel's maximum (amax) + 2/count (mean)
    grad = 2 * (summed / counts[:, None])[inv] / counts[inv, None] + 1 + 2 / counts[inv, None]
    grad += features == peak[inv]
    np.testing.assert_allclose(ours["grad"], grad, rtol=1e-5, atol=1e-6)
    assert ours["grid"].sum() == 64 and len(ours["occupied"]) == len(uniq) and ours["long"]
    np.testing.assert_array_equal(ours["occupied"], uniq)  # nonzero's row-major order is unique's sorted order


def morton(m, points, bits=10):
    torch = m.torch
    grid = ((torch.tensor(points) + 1) / 2 * (2 ** bits - 1)).long()

    def spread(x):  # the bits of x three apart
        x = x & 0x1FFFFF
        x = (x | x << 32) & 0x1F00000000FFFF
        x = (x | x << 16) & 0x1F0000FF0000FF
        x = (x | x << 8) & 0x100F00F00F00F00F
        x = (x | x << 4) & 0x10C30C30C30C30C3
        return (x | x << 2) & 0x1249249249249249

    code = spread(grid[:, 0]) | spread(grid[:, 1]) << 1 | spread(grid[:, 2]) << 2
    order = torch.argsort(code)
    inverse = torch.zeros_like(order).scatter_(0, order, torch.arange(len(order)))
    small = grid.int()
    packed = (small[:, 0] << 20) | (small[:, 1] << 10) | small[:, 2]
    return dict(code=code, order=order, inverse=inverse, packed=packed, overflow=small << 25, shifted=code >> 3,
                dtypes=(str(code.dtype).split(".")[-1], str(packed.dtype).split(".")[-1]))


def test_morton_codes_by_shifts_and_masks():
    points = cloud(30, seed=13)
    ours, theirs = run_both(morton, points)
    grid = ((points + 1) / 2 * 1023).astype(np.int64)
    code = np.zeros(30, np.int64)
    for bit in range(10):  # interleave by hand: bit b of x, y, z goes to 3b, 3b + 1, 3b + 2
        for axis in range(3):
            code |= ((grid[:, axis] >> bit) & 1) << (3 * bit + axis)
    np.testing.assert_array_equal(ours["code"], code)
    np.testing.assert_array_equal(ours["order"], np.argsort(code, kind="stable"))
    np.testing.assert_array_equal(ours["order"][ours["inverse"]], np.arange(30))
    np.testing.assert_array_equal(ours["overflow"], (grid.astype(np.int32) << 25))  # int32 wraps as C's
    assert ours["dtypes"] == ("int64", "int32")


# ----------------------------------------------------------------------------------------------
# Earth mover's distance by Sinkhorn in log space; chamfer as a custom Function
# ----------------------------------------------------------------------------------------------


def sinkhorn(m, x_np, y_np, eps=0.1, iterations=60):
    torch = m.torch
    x = torch.tensor(x_np, requires_grad=True)
    y = torch.tensor(y_np)
    C = torch.cdist(x, y) ** 2
    B, n, k = C.shape
    log_mu = torch.full((B, n), -math.log(n), dtype=C.dtype)
    log_nu = torch.full((B, k), -math.log(k), dtype=C.dtype)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iterations):
        u = eps * (log_mu - torch.logsumexp((-C + v.unsqueeze(1)) / eps, dim=-1))
        v = eps * (log_nu - torch.logsumexp((-C + u.unsqueeze(2)) / eps, dim=-2))
    plan = torch.exp((-C + u.unsqueeze(2) + v.unsqueeze(1)) / eps)
    cost = (plan * C).sum((1, 2))
    cost.sum().backward()
    return dict(cost=cost, plan=plan, grad=x.grad)


def test_sinkhorn_earth_mover_in_log_space():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 20, 3)), rng.standard_normal((2, 20, 3))
    ours, _ = run_both(sinkhorn, x, y, rtol=1e-7, atol=1e-9)
    cost = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    u, v = np.zeros((2, 20)), np.zeros((2, 20))
    for _ in range(60):  # the same iterations in NumPy
        u = 0.1 * (-math.log(20) - np.logaddexp.reduce((-cost + v[:, None]) / 0.1, axis=-1))
        v = 0.1 * (-math.log(20) - np.logaddexp.reduce((-cost + u[:, :, None]) / 0.1, axis=-2))
    plan = np.exp((-cost + u[:, :, None] + v[:, None]) / 0.1)
    np.testing.assert_allclose(ours["plan"], plan, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(ours["cost"], (plan * cost).sum((1, 2)), rtol=1e-9)
    np.testing.assert_allclose(plan.sum(1), 1 / 20, rtol=1e-9)  # the last update (v) fits the columns exactly
    assert (ours["cost"] <= cost.mean((1, 2))).all() and (ours["cost"] >= cost.min(2).mean(1)).all()
    assert np.isfinite(ours["grad"]).all() and np.abs(ours["grad"]).max() > 0


def chamfer_function(m, a_np, b_np):
    torch = m.torch
    once_differentiable = torch.autograd.function.once_differentiable

    class ChamferDistance(torch.autograd.Function):
        @staticmethod
        def forward(ctx, xyz1, xyz2):
            d = ((xyz1.unsqueeze(2) - xyz2.unsqueeze(1)) ** 2).sum(-1)
            dist1, idx1 = d.min(2)
            dist2, idx2 = d.min(1)
            ctx.save_for_backward(xyz1, xyz2, idx1, idx2)
            ctx.mark_non_differentiable(idx1, idx2)
            return dist1, dist2, idx1, idx2

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_dist1, grad_dist2, grad_idx1, grad_idx2):
            xyz1, xyz2, idx1, idx2 = ctx.saved_tensors
            B = xyz1.shape[0]
            nearest1 = torch.gather(xyz2, 1, idx1.unsqueeze(-1).expand(-1, -1, 3))
            nearest2 = torch.gather(xyz1, 1, idx2.unsqueeze(-1).expand(-1, -1, 3))
            g1 = 2 * grad_dist1.unsqueeze(-1) * (xyz1 - nearest1)
            g2 = 2 * grad_dist2.unsqueeze(-1) * (xyz2 - nearest2)
            grad_xyz1, grad_xyz2 = g1.clone(), g2.clone()
            grad_xyz2.scatter_add_(1, idx1.unsqueeze(-1).expand(-1, -1, 3), -g1)
            grad_xyz1.index_put_((torch.arange(B).view(-1, 1).expand_as(idx2), idx2), -g2, accumulate=True)
            return grad_xyz1, grad_xyz2

    a = torch.tensor(a_np, requires_grad=True)
    b = torch.tensor(b_np, requires_grad=True)
    dist1, dist2, idx1, idx2 = ChamferDistance.apply(a, b)
    ga, gb = torch.autograd.grad(dist1.mean() + dist2.mean(), (a, b), retain_graph=True)
    d = torch.cdist(a, b) ** 2  # the same distance by autograd
    ga2, gb2 = torch.autograd.grad(d.min(2)[0].mean() + d.min(1)[0].mean(), (a, b))
    gradcheck = torch.autograd.gradcheck(ChamferDistance.apply, (a, b))
    twice = None
    g, = torch.autograd.grad(dist1.sum(), a, grad_outputs=None, create_graph=True)
    try:
        g.sum().backward()
    except RuntimeError as error:
        twice = str(error).split(" (")[0]
    return dict(dist1=dist1, idx1=idx1, idx2=idx2, ga=ga, gb=gb, ga2=ga2, gb2=gb2, gradcheck=gradcheck,
                flags=(idx1.requires_grad, dist1.requires_grad), twice=twice)


def test_chamfer_as_a_custom_function():
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 9, 3))
    ours, _ = run_both(chamfer_function, a, b, rtol=1e-9, atol=1e-12)
    d = ((a[:, :, None] - b[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(ours["dist1"], d.min(2), rtol=1e-12)
    np.testing.assert_array_equal(ours["idx1"], d.argmin(2))
    np.testing.assert_array_equal(ours["idx2"], d.argmin(1))
    np.testing.assert_allclose(ours["ga"], ours["ga2"], rtol=1e-9, atol=1e-12)  # the hand-written backward
    np.testing.assert_allclose(ours["gb"], ours["gb2"], rtol=1e-9, atol=1e-12)
    assert ours["gradcheck"] is True and ours["flags"] == (False, True)
    assert ours["twice"] == "element 0 of tensors does not require grad and does not have a grad_fn"


# ----------------------------------------------------------------------------------------------
# PointNet: T-Nets, shared MLPs as Conv1d, max over points, the feature-transform regulariser
# ----------------------------------------------------------------------------------------------


def pointnet(m, clouds, labels, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class TNet(nn.Module):
        def __init__(self, k=3):
            super().__init__()
            self.k = k
            self.conv1, self.conv2 = nn.Conv1d(k, 16, 1), nn.Conv1d(16, 32, 1)
            self.fc1, self.fc2 = nn.Linear(32, 16), nn.Linear(16, k * k)
            self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(16), nn.BatchNorm1d(32), nn.BatchNorm1d(16)

        def forward(self, x):
            batchsize = x.size()[0]
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
            x = torch.max(x, 2, keepdim=True)[0].view(-1, 32)
            x = self.fc2(F.relu(self.bn3(self.fc1(x))))
            iden = torch.from_numpy(np.eye(self.k).flatten().astype(np.float64)).view(1, self.k * self.k)
            x = x + iden.repeat(batchsize, 1)
            return x.view(-1, self.k, self.k)

    class PointNetCls(nn.Module):
        def __init__(self, k=2):
            super().__init__()
            self.stn, self.fstn = TNet(3), TNet(16)
            self.conv1, self.conv2 = nn.Conv1d(3, 16, 1), nn.Conv1d(16, 32, 1)
            self.bn1, self.bn2 = nn.BatchNorm1d(16), nn.BatchNorm1d(32)
            self.fc = nn.Sequential(nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(p=0.3),
                                    nn.Linear(16, k))

        def forward(self, x):
            trans = self.stn(x)
            x = torch.bmm(x.transpose(2, 1), trans).transpose(2, 1)
            x = F.relu(self.bn1(self.conv1(x)))
            trans_feat = self.fstn(x)
            x = torch.bmm(x.transpose(2, 1), trans_feat).transpose(2, 1)
            x = self.bn2(self.conv2(x))
            x, critical = torch.max(x, 2)
            return F.log_softmax(self.fc(x), dim=1), trans, trans_feat, critical

    def feature_transform_regularizer(trans):
        d = trans.size()[1]
        I = torch.eye(d, dtype=trans.dtype)[None, :, :]
        return torch.mean(torch.norm(torch.bmm(trans, trans.transpose(2, 1)) - I, dim=(1, 2)))

    torch.manual_seed(0)
    net = PointNetCls().double()
    optimizer = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    points, target = torch.tensor(clouds).transpose(2, 1), torch.tensor(labels)
    losses, regs, correct = [], [], []
    for _ in range(steps):
        optimizer.zero_grad()
        pred, trans, trans_feat, critical = net(points)
        reg = feature_transform_regularizer(trans_feat)
        loss = F.nll_loss(pred, target) + 0.001 * reg
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        regs.append(reg.item())
        correct.append(pred.data.max(1)[1].eq(target.data).cpu().sum().item())
    net.eval()
    with torch.no_grad():
        pred, trans, _, critical = net(points)
    return dict(losses=losses, regs=regs, correct=correct, pred=pred, trans=trans, critical=critical,
                grads=[p.grad for p in net.parameters()], lr=scheduler.get_last_lr())


def test_pointnet_classifier_with_tnets():
    rng = np.random.default_rng(2)
    clouds = rng.standard_normal((4, 16, 3))
    clouds[1::2] /= np.abs(clouds[1::2]).max(-1, keepdims=True)  # cubes and balls
    ours, _ = run_both(pointnet, clouds, np.array([0, 1, 0, 1]), rtol=1e-8, atol=1e-10)
    assert ours["regs"][0] > 0 and np.isfinite(ours["losses"]).all()
    np.testing.assert_allclose(np.exp(ours["pred"]).sum(1), 1, rtol=1e-12)  # log-probabilities
    assert ours["critical"].shape == (4, 32) and ((0 <= ours["critical"]) & (ours["critical"] < 16)).all()
    assert ours["lr"] == [0.025]
    assert all(g is not None for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# Normals by eigh of local covariances; Kabsch by svd with the det sign
# ----------------------------------------------------------------------------------------------


def normals(m, points_np, k=6):
    torch = m.torch
    p = torch.tensor(points_np, requires_grad=True)
    idx = torch.cdist(p, p).topk(k, largest=False).indices
    neighbours = p[idx]
    centred = neighbours - neighbours.mean(1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred / k
    evals, evecs = torch.linalg.eigh(cov)
    n = evecs[..., 0]
    n = n * torch.sign(n[:, 2:3])  # orient towards +z
    curvature = evals[:, 0] / evals.sum(-1)
    (n * torch.tensor([1.0, 2.0, 3.0], dtype=p.dtype)).sum().add(curvature.sum()).backward()
    return dict(idx=idx, evals=evals, normals=n, curvature=curvature, grad=p.grad,
                upper=torch.linalg.eigvalsh(cov, UPLO="U"))


def test_normals_and_curvature_by_eigh():
    rng = np.random.default_rng(3)
    plane = np.concatenate([rng.uniform(-1, 1, (24, 2)), 0.01 * rng.standard_normal((24, 1))], 1)
    ours, _ = run_both(normals, plane, rtol=1e-6, atol=1e-8)
    assert (ours["idx"][:, 0] == np.arange(24)).all()  # each point is its own nearest
    assert (np.abs(ours["normals"][:, 2]) > 0.9).all()  # a nearly flat patch: normals along z
    assert (ours["curvature"] < 0.05).all() and (ours["evals"][:, 0] >= -1e-15).all()
    np.testing.assert_allclose(ours["upper"], ours["evals"], rtol=1e-10, atol=1e-15)
    assert np.isfinite(ours["grad"]).all()


def kabsch(m, source, target):
    torch = m.torch
    a, b = torch.tensor(source, requires_grad=True), torch.tensor(target)
    ca, cb = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    H = ca.transpose(1, 2) @ cb
    U, S, Vh = torch.linalg.svd(H)
    d = torch.sign(torch.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = Vh.transpose(-1, -2) @ D @ U.transpose(-1, -2)
    t = b.mean(1) - (R @ a.mean(1).unsqueeze(-1)).squeeze(-1)
    err = ((a @ R.transpose(1, 2) + t.unsqueeze(1) - b) ** 2).sum(-1).sqrt().mean()
    err.backward()
    U2, S2, V2 = torch.svd(H.detach())
    return dict(R=R, t=t, err=err, grad=a.grad, S=S, S2=S2, det=torch.det(R), d=d)


def test_kabsch_alignment_by_svd():
    rng = np.random.default_rng(2)
    source = rng.standard_normal((3, 16, 3))
    rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    rotation *= np.sign(np.linalg.det(rotation))
    target = source @ rotation.T + np.array([0.5, -1.0, 2.0]) + 0.01 * rng.standard_normal((3, 16, 3))
    ours, _ = run_both(kabsch, source, target, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["R"], np.broadcast_to(rotation, (3, 3, 3)), atol=0.02)
    np.testing.assert_allclose(ours["t"], np.broadcast_to([0.5, -1.0, 2.0], (3, 3)), atol=0.02)
    np.testing.assert_allclose(ours["det"], 1, rtol=1e-12)
    np.testing.assert_allclose(ours["S"], ours["S2"], rtol=1e-12)
    assert ours["err"] < 0.03 and np.isfinite(ours["grad"]).all()


# ----------------------------------------------------------------------------------------------
# A 3-D Gaussian splat rendered and differentiated
# ----------------------------------------------------------------------------------------------


def gaussian_splat(m, n=6, side=16):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    f64 = torch.float64
    means = (torch.randn(n, 3, dtype=f64) + torch.tensor([0, 0, 4.0], dtype=f64)).requires_grad_()
    log_scales = (torch.randn(n, 3, dtype=f64) * 0.1 - 1).requires_grad_()
    quats = torch.randn(n, 4, dtype=f64).requires_grad_()
    opacity = torch.randn(n, dtype=f64).requires_grad_()
    r, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - r * z), 2 * (x * z + r * y),
                     2 * (x * y + r * z), 1 - 2 * (x * x + z * z), 2 * (y * z - r * x),
                     2 * (x * z - r * y), 2 * (y * z + r * x), 1 - 2 * (x * x + y * y)], -1).view(n, 3, 3)
    M = R @ torch.diag_embed(torch.exp(log_scales))
    Sigma = M @ M.transpose(-1, -2)
    focal = 50.0
    tx, ty, tz = means.unbind(-1)
    J = torch.zeros(n, 2, 3, dtype=f64)
    J[:, 0, 0] = focal / tz
    J[:, 0, 2] = -focal * tx / tz ** 2
    J[:, 1, 1] = focal / tz
    J[:, 1, 2] = -focal * ty / tz ** 2
    cov2d = J @ Sigma @ J.transpose(1, 2) + 0.3 * torch.eye(2, dtype=f64)
    conic = torch.linalg.inv(cov2d)
    mu2d = torch.stack([focal * tx / tz, focal * ty / tz], -1)
    order = torch.argsort(tz)
    ys, xs = torch.meshgrid(torch.arange(-side // 2, side // 2, dtype=f64),
                            torch.arange(-side // 2, side // 2, dtype=f64), indexing="ij")
    d = torch.stack([xs, ys], -1).view(-1, 1, 2) - mu2d[order][None]
    power = -0.5 * torch.einsum("pni,nij,pnj->pn", d, conic[order], d)
    alpha = torch.clamp(torch.sigmoid(opacity[order])[None] * torch.exp(power), max=0.99)
    T = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
    weights = alpha * T
    image = (weights * torch.linspace(0, 1, n, dtype=f64)[None]).sum(-1).view(side, side)
    loss = ((image - 0.3) ** 2).mean()
    grads = torch.autograd.grad(loss, (means, log_scales, quats, opacity))
    radius = torch.ceil(3 * torch.sqrt(torch.linalg.eigvalsh(cov2d).max(-1).values))
    return dict(image=image, weights=weights, loss=loss, grads=grads, radius=radius, Sigma=Sigma, R=R)


def test_gaussian_splat_render():
    ours, _ = run_both(gaussian_splat, rtol=1e-7, atol=1e-10)
    assert (ours["weights"].sum(-1) <= 1 + 1e-12).all() and (ours["weights"] >= 0).all()
    np.testing.assert_allclose(ours["R"] @ ours["R"].transpose(0, 2, 1), np.broadcast_to(np.eye(3), (6, 3, 3)),
                               atol=1e-12)
    assert (np.linalg.eigvalsh(ours["Sigma"]) > 0).all() and (ours["radius"] >= 1).all()
    assert all(np.isfinite(g).all() for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# Quaternions as PyTorch3D converts them; ties in the max over points; ball-query padding
# ----------------------------------------------------------------------------------------------


def quaternion_round_trip(m):
    torch, F = m.torch, m.F

    def sqrt_positive_part(x):
        ret = torch.zeros_like(x)
        positive = x > 0
        ret[positive] = torch.sqrt(x[positive])
        return ret

    def matrix_to_quaternion(matrix):
        batch_dim = matrix.shape[:-2]
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(matrix.reshape(batch_dim + (9,)), dim=-1)
        q_abs = sqrt_positive_part(torch.stack([1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22,
                                                1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1))
        quat_by_rijk = torch.stack([
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1)], dim=-2)
        floor = torch.tensor(0.1).to(dtype=q_abs.dtype, device=q_abs.device)
        candidates = quat_by_rijk / (2.0 * q_abs[..., None].max(floor))
        out = candidates[F.one_hot(q_abs.argmax(dim=-1), num_classes=4) > 0.5, :].reshape(batch_dim + (4,))
        return torch.where(out[..., 0:1] < 0, -out, out)

    def quaternion_to_matrix(q):
        r, i, j, k = torch.unbind(q, -1)
        two_s = 2.0 / (q * q).sum(-1)
        o = torch.stack((1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
                         two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
                         two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)), -1)
        return o.reshape(q.shape[:-1] + (3, 3))

    generator = torch.Generator().manual_seed(3)
    q = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    q = (q / q.norm(p=2, dim=-1, keepdim=True)).requires_grad_()
    R = quaternion_to_matrix(q)
    back = matrix_to_quaternion(R)
    grad = torch.autograd.grad((back * torch.arange(4.0, dtype=torch.float64)).sum(), q)[0]
    identity = matrix_to_quaternion(torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    return dict(q=q, R=R, back=back, grad=grad, identity=identity)


def test_quaternion_round_trip_through_pytorch3d_masks():
    ours, _ = run_both(quaternion_round_trip, rtol=1e-9, atol=1e-12)
    q = ours["q"] * np.sign(ours["q"][:, :1])
    np.testing.assert_allclose(ours["back"], q, atol=1e-12)
    np.testing.assert_array_equal(ours["identity"], [[1, 0, 0, 0]] * 2)
    assert np.isfinite(ours["grad"]).all()


def max_over_points_with_ties(m):
    torch, F = m.torch, m.F
    x = torch.tensor([[[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 1.0, 2.0, 0.0]]], requires_grad=True)
    pools = {"max": lambda x: torch.max(x, 2)[0], "amax": lambda x: x.amax(2),
             "max_pool1d": lambda x: F.max_pool1d(x, 5).squeeze(-1),
             "adaptive": lambda x: F.adaptive_max_pool1d(x, 1).squeeze(-1), "topk": lambda x: x.topk(2, -1)[0]}
    out = {}
    for name, pool in pools.items():
        y = pool(x)
        out[name] = (y, torch.autograd.grad((y * torch.arange(1, y.numel() + 1.0).view(y.shape)).sum(), x)[0])
    out["indices"] = (x.max(2)[1], x.topk(2, -1)[1], x.argmax(-1))
    return out


def test_max_over_points_with_ties():
    ours, _ = run_both(max_over_points_with_ties)
    first = [[[0, 1, 0, 0, 0], [2, 0, 0, 0, 0]]]  # max's index: the first of the tied
    even = [[[0, 1 / 3, 1 / 3, 0, 1 / 3], [2 / 3, 2 / 3, 0, 2 / 3, 0]]]  # amax shares among them
    np.testing.assert_allclose(ours["max"][1], first)
    np.testing.assert_allclose(ours["max_pool1d"][1], first)
    np.testing.assert_allclose(ours["adaptive"][1], first)
    np.testing.assert_allclose(ours["amax"][1], even)
    np.testing.assert_array_equal(ours["indices"][0], [[1, 0]])
    np.testing.assert_array_equal(ours["indices"][1], [[[2, 4], [0, 3]]])  # as libstdc++'s partial sort leaves them


def ball_query_padding(m, points_np, radius=0.8, nsample=4):
    torch = m.torch
    xyz = torch.tensor(points_np)
    B, N, _ = xyz.shape
    centres = xyz[:, :2]
    group_idx = torch.arange(N).view(1, 1, N).repeat(B, 2, 1)
    group_idx[torch.cdist(centres, xyz) > radius] = N
    group_idx = group_idx.sort(dim=-1)[0][:, :, :nsample]
    pad = group_idx == N
    grouped = torch.zeros(B, 2, nsample, 3, dtype=xyz.dtype)
    valid = ~pad
    batch = torch.arange(B).view(B, 1, 1).expand_as(group_idx)
    grouped[valid] = xyz[batch[valid], group_idx[valid]]
    # the padded slots take the centre, channel by channel through a 2-d mask over (batch, centre)
    slots = pad.any(-1)
    for c in range(3):
        first_pad = pad.float().argmax(-1)
        grouped.index_put_((slots, first_pad[slots], torch.tensor([c])), centres[slots][:, c])
    return dict(group_idx=group_idx, grouped=grouped, slots=slots)


def test_ball_query_padding_through_a_two_dim_mask():
    points = np.random.default_rng(2).uniform(-1, 1, (2, 12, 3))
    ours, _ = run_both(ball_query_padding, points)
    d = np.linalg.norm(points[:, :2, None] - points[:, None], axis=-1)
    assert (d <= 0.8).sum(-1).min() == 2  # a slot padded past the number of centres (2)
    for b in range(2):
        for s in range(2):
            inside = np.flatnonzero(d[b, s] <= 0.8)[:4]
            np.testing.assert_array_equal(ours["group_idx"][b, s, :len(inside)], inside)
            np.testing.assert_array_equal(ours["grouped"][b, s, :len(inside)], points[b, inside])
            if len(inside) < 4:
                np.testing.assert_array_equal(ours["grouped"][b, s, len(inside)], points[b, s])
