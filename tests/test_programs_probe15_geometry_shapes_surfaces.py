# ruff: noqa: B007, B023  (the programs are kept as their authors wrote them)
"""3-D geometry and point-cloud programs, run as tests/probe15_geometry_common.py says. Shapes and surfaces: a
point-cloud auto-encoder trained by the chamfer distance (``torch.cdist``, ``min`` over either dimension); normals by
local PCA (``torch.linalg.eigh`` of kNN covariances); a T-Net initialised to the identity under a spectral
regulariser (``torch.svd``'s S at three equal singular values) and a det penalty; a mesh fitted to points
(PyTorch3D's tutorial by hand: edge lengths, a uniform Laplacian by ``torch.sparse.mm``, vertex normals by
``index_add_``, normal consistency). Focused tests: cdist's matrix-product path past 25 rows, inv/solve's
singular-matrix errors, torch.cross without dim, and det's second derivative at a singular matrix."""

import numpy as np
import pytest

from .probe15_geometry_common import point_clouds
from .pytorch_programs import load, run_both, weights_of

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
