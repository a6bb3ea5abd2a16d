# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Computational-biology programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights and data, and checked against NumPy by hand where PyTorch is missing. Structure maths (frames by Gram-Schmidt
with ``F.normalize`` and ``torch.linalg.cross``, quaternions, FAPE, Kabsch RMSD through ``linalg.svd`` with the
determinant's sign, dihedrals by ``atan2``) in a toy structure module trained by Adam, against known rotations,
reflections and cis/trans angles, and ``gradcheck``-ed in float64."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Structure maths: rigid frames from backbone atoms (Gram-Schmidt), quaternions, FAPE, Kabsch RMSD, dihedrals
# ----------------------------------------------------------------------------------------------


def backbone(seed=0, L=6):
    """N, CA, C atoms of a chain: (L, 3, 3), jittered around an ideal-ish geometry."""
    rng = np.random.default_rng(seed)
    ca = np.cumsum(3.8 * rng.standard_normal((L, 3)) / math.sqrt(3), axis=0)
    n = ca + rng.normal(0, 1.0, (L, 3)) + np.array([-1.2, 0.3, 0.1])
    c = ca + rng.normal(0, 1.0, (L, 3)) + np.array([1.3, 0.4, -0.2])
    return np.stack([n, ca, c], axis=1)


def structure_utils(m):
    torch, F = m.torch, m.F

    def rigid_from_3_points(x1, x2, x3, eps=1e-8):
        """AlphaFold2 supplementary algorithm 21: a frame at x2 with e1 along x3 - x2, e2 in the plane of x1."""
        v1 = x3 - x2
        v2 = x1 - x2
        e1 = F.normalize(v1, dim=-1, eps=eps)
        u2 = v2 - e1 * (e1 * v2).sum(-1, keepdim=True)
        e2 = F.normalize(u2, dim=-1, eps=eps)
        e3 = torch.linalg.cross(e1, e2, dim=-1)
        R = torch.stack([e1, e2, e3], dim=-1)
        return R, x2

    def quaternion_to_rotation(q):
        q = q / q.norm(dim=-1, keepdim=True)
        w, x, y, z = q.unbind(-1)
        return torch.stack([
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ], dim=-1).reshape(q.shape[:-1] + (3, 3))

    def invert_apply(R, t, x):
        """Points x (..., P, 3) in the local frame of each rigid (..., F): (..., F, P, 3)."""
        d = x[..., None, :, :] - t[..., :, None, :]
        return torch.einsum("...fji,...fpj->...fpi", R, d)

    def fape(pred_R, pred_t, pred_x, true_R, true_t, true_x, clamp=10.0, scale=10.0, eps=1e-4):
        local_pred = invert_apply(pred_R, pred_t, pred_x)
        local_true = invert_apply(true_R, true_t, true_x)
        err = torch.sqrt(((local_pred - local_true) ** 2).sum(-1) + eps)
        return torch.clamp(err, max=clamp).mean() / scale

    def kabsch_rmsd(P, Q):
        P_c = P - P.mean(dim=-2, keepdim=True)
        Q_c = Q - Q.mean(dim=-2, keepdim=True)
        H = P_c.transpose(-1, -2) @ Q_c
        U, S, Vh = torch.linalg.svd(H)
        d = torch.sign(torch.linalg.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2)))
        D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
        R = Vh.transpose(-1, -2) @ D @ U.transpose(-1, -2)
        P_rot = P_c @ R.transpose(-1, -2)
        return torch.sqrt(((P_rot - Q_c) ** 2).sum(-1).mean(-1)), R

    def dihedral(p0, p1, p2, p3):
        b0 = p0 - p1
        b1 = p2 - p1
        b2 = p3 - p2
        b1n = b1 / torch.linalg.norm(b1, dim=-1, keepdim=True)
        v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
        w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
        x = (v * w).sum(-1)
        y = (torch.cross(b1n, v, dim=-1) * w).sum(-1)
        return torch.atan2(y, x)

    return dict(rigid_from_3_points=rigid_from_3_points, quaternion_to_rotation=quaternion_to_rotation,
                invert_apply=invert_apply, fape=fape, kabsch_rmsd=kabsch_rmsd, dihedral=dihedral)


def structure_module(m, steps=4):
    """A toy structure module: per-residue quaternion + translation updates learnt by FAPE and Kabsch RMSD."""
    torch, nn, optim = m.torch, m.nn, m.optim
    u = structure_utils(m)
    true = torch.tensor(backbone(0), dtype=torch.float64)
    L = true.shape[0]
    true_R, true_t = u["rigid_from_3_points"](true[:, 0], true[:, 1], true[:, 2])
    torch.manual_seed(0)
    quat = nn.Parameter(torch.tensor(np.tile([1.0, 0.1, -0.2, 0.05], (L, 1))))
    trans = nn.Parameter(torch.tensor(np.random.default_rng(1).standard_normal((L, 3)) * 3))
    local_atoms = torch.tensor([[-0.5, 1.4, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0]], dtype=torch.float64)
    opt = optim.Adam([quat, trans], lr=0.1)
    history = []
    for step in range(steps):
        opt.zero_grad()
        R = u["quaternion_to_rotation"](quat)
        atoms = torch.einsum("lij,aj->lai", R, local_atoms) + trans[:, None, :]
        pred_R, pred_t = u["rigid_from_3_points"](atoms[:, 0], atoms[:, 1], atoms[:, 2])
        fape = u["fape"](pred_R, pred_t, atoms.reshape(-1, 3), true_R, true_t, true.reshape(-1, 3))
        rmsd, _ = u["kabsch_rmsd"](atoms[:, 1], true[:, 1])
        phi = u["dihedral"](atoms[:-1, 2], atoms[1:, 0], atoms[1:, 1], atoms[1:, 2])
        psi = u["dihedral"](atoms[:-1, 0], atoms[:-1, 1], atoms[:-1, 2], atoms[1:, 0])
        true_phi = u["dihedral"](true[:-1, 2], true[1:, 0], true[1:, 1], true[1:, 2])
        torsion = (1 - torch.cos(phi - true_phi)).mean()
        loss = fape + 0.1 * rmsd + 0.1 * torsion
        loss.backward()
        opt.step()
        history.append((fape.item(), rmsd.item(), torsion.item()))
    return history, quat.grad, trans.grad, phi, psi, pred_R, torch.linalg.det(pred_R)


def test_structure_module_fape_kabsch():
    ours, _ = run_both(structure_module, rtol=1e-8, atol=1e-10)
    history, *_, det = ours
    assert sum(history[-1]) < sum(history[0])
    np.testing.assert_allclose(det, 1.0, rtol=1e-12)


def structure_numpy_checks(m):
    torch = m.torch
    u = structure_utils(m)
    rng = np.random.default_rng(5)
    P = rng.standard_normal((10, 3))
    angle = 0.7
    Rz = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    Q = P @ Rz.T + np.array([1.0, -2.0, 0.5])
    rmsd, R = u["kabsch_rmsd"](torch.tensor(P), torch.tensor(Q))
    mirror = u["kabsch_rmsd"](torch.tensor(P), torch.tensor(Q * np.array([1, 1, -1])))  # a reflection: no rotation fits
    # an ideal trans dihedral (180 degrees) and a cis one (0)
    pts = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64)
    cis = pts.clone()
    cis[3] = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    gauche = u["dihedral"](*pts), u["dihedral"](*cis)
    q = torch.tensor([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)], dtype=torch.float64)
    return rmsd, R, mirror[0], torch.linalg.det(mirror[1]), gauche, u["quaternion_to_rotation"](q), torch.tensor(Rz)


def test_structure_maths_against_known_values():
    ours, _ = run_both(structure_numpy_checks, rtol=1e-10, atol=1e-12)
    rmsd, R, mirror_rmsd, mirror_det, (trans, cis), R_q, Rz = ours
    assert rmsd < 1e-10 and mirror_rmsd > 0.1 and abs(mirror_det - 1) < 1e-12
    np.testing.assert_allclose(R, Rz, atol=1e-10)
    np.testing.assert_allclose(R_q, Rz, atol=1e-12)
    np.testing.assert_allclose([abs(trans), cis], [math.pi, 0.0], atol=1e-12)


def structure_gradchecks(m):
    torch = m.torch
    u = structure_utils(m)
    gradcheck = torch.autograd.gradcheck
    rng = np.random.default_rng(6)
    P = torch.tensor(rng.standard_normal((8, 3)), requires_grad=True)
    Q = torch.tensor(rng.standard_normal((8, 3)), requires_grad=True)
    atoms = torch.tensor(backbone(2, L=3), requires_grad=True)
    quat = torch.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    four = torch.tensor(rng.standard_normal((4, 5, 3)), requires_grad=True)
    return (
        gradcheck(lambda P, Q: u["kabsch_rmsd"](P, Q)[0], (P, Q)),
        gradcheck(lambda P, Q: u["kabsch_rmsd"](P, Q)[1], (P, Q)),
        gradcheck(lambda a: u["rigid_from_3_points"](a[:, 0], a[:, 1], a[:, 2])[0], (atoms,)),
        gradcheck(u["quaternion_to_rotation"], (quat,)),
        gradcheck(lambda x: u["dihedral"](*x.unbind(0)), (four,)),
        gradcheck(lambda a: u["fape"](*u["rigid_from_3_points"](a[:, 0], a[:, 1], a[:, 2]), a.reshape(-1, 3),
                                      *u["rigid_from_3_points"](a[:, 2], a[:, 1], a[:, 0]), a.reshape(-1, 3) * 1.1,
                                      clamp=3.0), (atoms,)),
    )


def test_structure_gradchecks_float64():
    ours, _ = run_both(structure_gradchecks)
    assert all(ours)
