# ruff: noqa: B007, B023, E501, E701, E702, F841  (the programs are kept as their authors would write them)
"""Geometric networks written by hand and Jacobians used inside training, run on chainrule and (where installed)
PyTorch: an E(n)-equivariant graph layer (Satorras et al.'s EGCL, messages summed with index_add_ and
scatter_add_, aggregated with scatter_reduce_ 'amax' and 'mean'), SO(3) exponential and logarithm maps, quaternions
to matrices, Kabsch alignment through the SVD with its reflection fix, real spherical harmonics to degree 2 with a
Bessel radial basis and cosine cutoff; a contractive autoencoder whose penalty is the encoder's Jacobian from
torch.autograd.functional.jacobian with strategy='forward-mode' (PyTorch's result stays in the graph and trains
the encoder: chainrule's did not until this session), a damped Newton step from functional.hessian and hvp, and
torch.func.linearize's output as a training loss (chainrule's was detached until this session).
Without PyTorch each test checks an equivariance, an identity or a closed form."""

import math

import numpy as np
import pytest

from .probe37_common import F64, batch
from .pytorch_programs import OURS, run_both


# ---------------------------------------------------------------- vgsatorras/egnn's E_GCL, condensed
def egnn(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)

    class EGCL(nn.Module):
        def __init__(self, hidden):
            super().__init__()
            self.edge_mlp = nn.Sequential(nn.Linear(2 * hidden + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
            self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            layer = nn.Linear(hidden, 1, bias=False)
            nn.init.xavier_uniform_(layer.weight, gain=0.001)
            self.coord_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), layer)

        def forward(self, h, edge_index, coord):
            row, col = edge_index
            coord_diff = coord[row] - coord[col]
            radial = torch.sum(coord_diff ** 2, 1).unsqueeze(1)
            edge_feat = self.edge_mlp(torch.cat([h[row], h[col], radial], dim=1))
            trans = coord_diff * self.coord_mlp(edge_feat)
            agg = torch.zeros(coord.size(0), trans.size(1), dtype=coord.dtype).index_add_(0, row, trans)
            count = torch.zeros(coord.size(0), 1, dtype=coord.dtype).scatter_add_(0, row.unsqueeze(1), torch.ones(row.size(0), 1, dtype=coord.dtype))
            coord = coord + agg / count.clamp(min=1)
            index = row.unsqueeze(1).expand(-1, edge_feat.size(1))
            agg_max = torch.zeros(h.size(0), edge_feat.size(1), dtype=h.dtype).scatter_reduce_(0, index, edge_feat, reduce='amax', include_self=False)
            agg_mean = h.new_zeros(h.size(0), edge_feat.size(1)).scatter_reduce(0, index, edge_feat, reduce='mean', include_self=True)
            h = h + self.node_mlp(torch.cat([h, agg_max + agg_mean], 1))
            return h, coord

    n = 5
    rows, cols = zip(*[(i, j) for i in range(n) for j in range(n) if i != j and (i + j) % 3])
    edges = [torch.tensor(rows), torch.tensor(cols)]
    h = torch.randn(n, 4, dtype=torch.float64)
    x = torch.randn(n, 3, dtype=torch.float64)
    layer = EGCL(4).double()
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for i in range(3):
        optimizer.zero_grad()
        h2, x2 = layer(h, edges, x)
        loss = h2.pow(2).mean() + (x2 - x).pow(2).sum() * 1e4
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    Q = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    with torch.no_grad():
        h_rot, x_rot = layer(h, edges, x @ Q.T + 1.0)
        h_ref, x_ref = layer(h, edges, x)
    return losses, [p.grad for p in layer.parameters()], h_rot, h_ref, x_rot, x_ref, Q


def test_egnn():
    losses, grads, h_rot, h_ref, x_rot, x_ref, Q = run_both(egnn, **F64)[0]
    np.testing.assert_allclose(h_rot, h_ref, rtol=1e-10, atol=1e-12)  # invariant features
    np.testing.assert_allclose(x_rot, x_ref @ Q.T + 1.0, rtol=1e-10, atol=1e-12)  # equivariant coordinates
    assert np.isfinite(losses).all() and all(np.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------- rotations
def rotations(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)

    def skew(v):
        z = torch.zeros_like(v[..., 0])
        return torch.stack([torch.stack([z, -v[..., 2], v[..., 1]], -1),
                            torch.stack([v[..., 2], z, -v[..., 0]], -1),
                            torch.stack([-v[..., 1], v[..., 0], z], -1)], -2)

    def so3_exp(w):
        theta = w.norm(dim=-1, keepdim=True).unsqueeze(-1)
        K = skew(w)
        I = torch.eye(3, dtype=w.dtype).expand_as(K)
        return I + torch.sin(theta) / theta * K + (1 - torch.cos(theta)) / theta ** 2 * K @ K

    def so3_log(R):
        cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cos)
        w = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
        return w * (theta / (2 * torch.sin(theta))).unsqueeze(-1)

    def quaternion_to_matrix(quaternions):  # pytorch3d's
        r, i, j, k = torch.unbind(quaternions, -1)
        two_s = 2.0 / (quaternions * quaternions).sum(-1)
        o = torch.stack((1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
                         two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
                         two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)), -1)
        return o.reshape(quaternions.shape[:-1] + (3, 3))

    def kabsch(P, Q):
        Pc, Qc = P - P.mean(0), Q - Q.mean(0)
        H = Pc.T @ Qc
        U, S, Vt = torch.linalg.svd(H)
        d = torch.sign(torch.linalg.det(Vt.T @ U.T))
        D = torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d]))
        return Vt.T @ D @ U.T

    w = (0.5 * torch.randn(4, 3, dtype=torch.float64)).requires_grad_()
    R = so3_exp(w)
    w_back = so3_log(R)
    q = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    Rq = quaternion_to_matrix(F.normalize(q, dim=-1))
    P = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    target = P.detach() @ R[0].detach().T + 0.01 * torch.randn(6, 3, dtype=torch.float64)
    R_fit = kabsch(P, target)
    R_exp = torch.linalg.matrix_exp(skew(w))
    loss = ((w_back - w).pow(2).sum() + (Rq @ R).diagonal(dim1=-2, dim2=-1).sum() + (R_fit - R[0]).pow(2).sum()
            + R_exp.sum() + torch.cross(w, w_back.detach(), dim=-1).sum())
    loss.backward()
    return R, w_back, w, R_fit, R_exp, Rq, w.grad, q.grad, P.grad


def test_rotations():
    R, w_back, w, R_fit, R_exp, Rq, w_grad, q_grad, P_grad = run_both(rotations, **F64)[0]
    np.testing.assert_allclose(w_back, w, rtol=1e-9, atol=1e-12)  # log(exp(w)) = w for |w| < pi
    np.testing.assert_allclose(R, R_exp, rtol=1e-12, atol=1e-14)  # Rodrigues' formula is the matrix exponential
    for M in (*R, R_fit, *Rq):
        np.testing.assert_allclose(M @ M.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(M) == pytest.approx(1.0)
    np.testing.assert_allclose(R_fit, R[0], atol=0.05)
    assert np.isfinite(q_grad).all() and np.isfinite(P_grad).all()


# ---------------------------------------------------------------- spherical harmonics and radial bases (e3nn/SchNet style)
def spherical_features(m):
    torch = m.torch
    torch.manual_seed(0)
    vectors = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    x, y, z = (vectors / vectors.norm(dim=-1, keepdim=True)).unbind(-1)
    sh = torch.stack([
        0.28209479177387814 * torch.ones_like(x),
        -0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x,
        1.0925484305920792 * x * y, -1.0925484305920792 * y * z, 0.31539156525252005 * (2.0 * z * z - x * x - y * y),
        -1.0925484305920792 * x * z, 0.5462742152960396 * (x * x - y * y)], -1)
    r = vectors.norm(dim=-1, keepdim=True)
    n = torch.arange(1, 5, dtype=torch.float64)
    rbf = math.sqrt(2 / 5.0) * torch.sin(n * math.pi * r / 5.0) / r
    cutoff = 0.5 * (torch.cos(math.pi * r / 5.0) + 1.0) * (r < 5.0)
    features = torch.einsum('ni,nj->nij', sh, rbf * cutoff).flatten(1)
    features.pow(2).sum().backward()
    return sh, features, vectors.grad, vectors.detach()


def test_spherical_features():
    sh, features, grad, vectors = run_both(spherical_features, **F64)[0]
    # the addition theorem: sum over m of Y_lm(u)^2 = (2l + 1) / (4 pi) for each degree l
    for l, block in ((0, sh[:, :1]), (1, sh[:, 1:4]), (2, sh[:, 4:9])):
        np.testing.assert_allclose((block ** 2).sum(1), (2 * l + 1) / (4 * np.pi), rtol=1e-12)
    assert features.shape == (5, 36) and np.isfinite(grad).all()
    # sum of squares = (sum over degrees of (2l + 1) / 4 pi) * f(|v|): a function of the length alone, so its gradient is radial
    np.testing.assert_allclose(np.cross(grad, vectors), 0, atol=1e-10)


# ---------------------------------------------------------------- a contractive autoencoder with a forward-mode Jacobian
def contractive_autoencoder(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(5, 3), nn.Tanh()).double()
    decoder = nn.Linear(3, 5).double()
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=1e-2)
    x, _ = batch(m, 6)
    x = x.double()
    log = []
    for step in range(3):
        optimizer.zero_grad()
        recon = F.mse_loss(decoder(encoder(x)), x)
        penalty = 0
        for xi in x[:3]:
            J = torch.autograd.functional.jacobian(encoder, xi, strategy="forward-mode", vectorize=True)
            penalty = penalty + J.pow(2).sum()
        loss = recon + 0.1 * penalty
        loss.backward()
        if step == 0:
            first_grad = encoder[0].weight.grad.clone()
            first_weights = encoder[0].weight.detach().clone(), encoder[0].bias.detach().clone()
        optimizer.step()
        log.append((loss.item(), recon.item(), penalty.item(), J.requires_grad))
    return log, first_grad, first_weights, [p.detach() for p in encoder.parameters()]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # (PyTorch's forward-mode jacobian calls torch.jit)
def test_contractive_autoencoder_with_forward_mode_jacobian():
    log, first_grad, (W, b), params = run_both(contractive_autoencoder, **F64)[0]
    assert all(requires for *_, requires in log)  # the Jacobian stays in the graph, as PyTorch's
    x = batch(OURS, 6)[0].numpy().astype(np.float64)[:3]
    h = np.tanh(x @ W.T + b)  # (3 samples, 3 units)
    s = (W ** 2).sum(1)
    penalty = ((1 - h ** 2) ** 2 * s).sum()  # ||diag(1 - h^2) W||_F^2 summed over the samples
    assert log[0][2] == pytest.approx(penalty, rel=1e-12)
    # the penalty's part of dL/dW, by hand: 2 (1-h^2)^2 W_ij - 4 s_i h_i (1-h^2)^2 x_j, summed over the samples
    by_hand = 0.1 * ((2 * (1 - h ** 2) ** 2).sum(0)[:, None] * W - 4 * ((s * h * (1 - h ** 2) ** 2)[:, :, None] * x[:, None, :]).sum(0))
    OURS.torch.manual_seed(0)
    encoder = OURS.nn.Sequential(OURS.nn.Linear(5, 3), OURS.nn.Tanh()).double()
    decoder = OURS.nn.Linear(3, 5).double()
    xs = OURS.torch.tensor(batch(OURS, 6)[0].numpy().astype(np.float64))
    OURS.F.mse_loss(decoder(encoder(xs)), xs).backward()  # the reconstruction's part, by the library's own backward
    np.testing.assert_allclose(first_grad, encoder[0].weight.grad.numpy() + by_hand, rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- a damped Newton step with functional.hessian and hvp
def newton_logistic(m):
    torch, F = m.torch, m.F
    x, y = batch(m, 20, classes=2)
    x, y = x.double(), y.double()
    w = torch.zeros(5, dtype=torch.float64, requires_grad=True)

    def loss_fn(w):
        return F.binary_cross_entropy_with_logits(x @ w, y) + 0.01 * w.pow(2).sum()

    log = []
    for step in range(3):
        H = torch.autograd.functional.hessian(loss_fn, w)
        g = torch.autograd.grad(loss_fn(w), w)[0]
        _, Hg = torch.autograd.functional.hvp(loss_fn, w, g)
        w_at = w.detach().clone()
        with torch.no_grad():
            delta = torch.linalg.solve(H + 1e-3 * torch.eye(5, dtype=torch.float64), g)
            w -= delta
        log.append((loss_fn(w).item(), g.norm().item(), (H @ g - Hg).abs().max().item()))
    return log, w_at, H


def test_newton_step():
    log, w, H = run_both(newton_logistic, **F64)[0]
    assert log[2][1] < 0.01 * log[0][1] and max(e for *_, e in log) < 1e-12  # converges; hvp equals H @ g
    x, y = batch(OURS, 20, classes=2)
    x = x.numpy().astype(np.float64)
    p = 1 / (1 + np.exp(-x @ w))
    np.testing.assert_allclose(H, x.T @ (x * (p * (1 - p))[:, None]) / 20 + 0.02 * np.eye(5), rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- torch.func.linearize inside a training step
def linearized_training(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, _ = batch(m, 6)
    x = x.double()
    target = torch.zeros(6, 2, dtype=torch.float64)
    direction = torch.ones(6, 5, dtype=torch.float64) / 5
    log = []
    for step in range(3):
        optimizer.zero_grad()
        out, jvp_fn = torch.func.linearize(model, x)
        sensitivity = jvp_fn(direction).detach().abs().mean()  # (a diagnostic: how fast the output moves along it)
        loss = F.mse_loss(out, target)
        loss.backward()
        optimizer.step()
        log.append((loss.item(), sensitivity.item(), out.requires_grad))
    return log, [p.detach() for p in model.parameters()]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Attempted to insert a get_attr Node")  # (PyTorch's tracing)
def test_linearize_output_in_training():
    log, params = run_both(linearized_training, **F64)[0]
    assert all(requires for *_, requires in log) and log[2][0] < log[0][0]  # the output trains the model
