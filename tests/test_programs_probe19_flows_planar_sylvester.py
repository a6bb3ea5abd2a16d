# ruff: noqa: B007, E731, UP008  (the programs are kept as their authors wrote them)
"""Normalizing flows and density estimation, run as tests/probe19_flows_common.py says. normflows' planar and radial
flows fitted by the reverse KL to a two-moons energy (an int64 buffer in the log-det, ``linalg.vector_norm`` over a
list of dims, seeded base draws); Sylvester flows in a VAE (orthogonal by Bjorck steps and by Householder products,
in-place diagonal writes by advanced indexing)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Planar and radial flows (Rezende & Mohamed 2015) as normflows writes them, fitted by the reverse KL
# to an unnormalised two-moons energy
# ----------------------------------------------------------------------------------------------


def make_planar_radial(m, K=6):
    torch, nn = m.torch, m.nn

    class Planar(nn.Module):
        def __init__(self, shape):
            super().__init__()
            lim_w = np.sqrt(2.0 / np.prod(shape))
            lim_u = np.sqrt(2)
            self.u = nn.Parameter(torch.empty(shape)[None])
            nn.init.uniform_(self.u, -lim_u, lim_u)
            self.w = nn.Parameter(torch.empty(shape)[None])
            nn.init.uniform_(self.w, -lim_w, lim_w)
            self.b = nn.Parameter(torch.zeros(1))
            self.h = torch.tanh

        def forward(self, z):
            lin = torch.sum(self.w * z, list(range(1, self.w.dim())), keepdim=True) + self.b
            inner = torch.sum(self.w * self.u)
            # constrain w.u > -1
            u = self.u + (torch.log(1 + torch.exp(inner)) - 1 - inner) * self.w / torch.sum(self.w ** 2)
            h_ = lambda x: 1 / torch.cosh(x) ** 2
            z_ = z + u * self.h(lin)
            log_det = torch.log(torch.abs(1 + torch.sum(self.w * u) * h_(lin.reshape(-1))))
            return z_, log_det

    class Radial(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.d_cpu = torch.prod(torch.tensor(shape))
            self.register_buffer("d", self.d_cpu)
            self.beta = nn.Parameter(torch.empty(1))
            lim = 1.0 / np.prod(shape)
            nn.init.uniform_(self.beta, -lim - 1.0, lim - 1.0)
            self.alpha = nn.Parameter(torch.empty(1))
            nn.init.uniform_(self.alpha, -lim, lim)
            self.z_0 = nn.Parameter(torch.randn(shape)[None])

        def forward(self, z):
            beta = torch.log(1 + torch.exp(self.beta)) - torch.abs(self.alpha)
            dz = z - self.z_0
            r = torch.linalg.vector_norm(dz, dim=list(range(1, self.z_0.dim())), keepdim=True)
            h_arr = beta / (torch.abs(self.alpha) + r)
            h_arr_ = -beta * r / (torch.abs(self.alpha) + r) ** 2
            z_ = z + h_arr * dz
            log_det = (self.d - 1) * torch.log(1 + h_arr) + torch.log(1 + h_arr + h_arr_)
            log_det = log_det.reshape(-1)
            return z_, log_det

    class DiagGaussian(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.shape = (shape,)
            self.d = np.prod(self.shape)
            self.loc = nn.Parameter(torch.zeros(1, *self.shape))
            self.log_scale = nn.Parameter(torch.zeros(1, *self.shape))

        def forward(self, num_samples=1):
            eps = torch.randn((num_samples,) + self.shape, dtype=self.loc.dtype, device=self.loc.device)
            z = self.loc + torch.exp(self.log_scale) * eps
            log_p = -0.5 * self.d * np.log(2 * np.pi) - torch.sum(self.log_scale + 0.5 * torch.pow(eps, 2),
                                                                   list(range(1, len(self.shape) + 1)))
            return z, log_p

    class NormalizingFlow(nn.Module):
        def __init__(self, q0, flows):
            super().__init__()
            self.q0 = q0
            self.flows = nn.ModuleList(flows)

        def sample(self, num_samples=1):
            z, log_q = self.q0(num_samples)
            for flow in self.flows:
                z, log_det = flow(z)
                log_q -= log_det
            return z, log_q

        def reverse_kld(self, target, num_samples=1, beta=1.0):
            z, log_q = self.sample(num_samples)
            log_p = target(z)
            return torch.mean(log_q) - beta * torch.mean(log_p)

    flows = [Planar((2,)) if k % 2 == 0 else Radial((2,)) for k in range(K)]
    return NormalizingFlow(DiagGaussian(2), flows)


def two_moons(m, z):
    torch = m.torch
    a = torch.abs(z[:, 0])
    return (-0.5 * ((torch.norm(z, dim=1) - 2) / 0.2) ** 2 - 0.5 * ((a - 2) / 0.3) ** 2
            + torch.log(1 + torch.exp(-4 * a / 0.09)))


def planar_radial(m, weights, steps=6):
    torch, optim = m.torch, m.optim
    model = load(m, make_planar_radial(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=5e-3, weight_decay=1e-5)
    torch.manual_seed(0)
    history = []
    for it in range(steps):
        optimizer.zero_grad()
        loss = model.reverse_kld(lambda z: two_moons(m, z), num_samples=64, beta=min(1.0, 0.1 + it / steps))
        if ~(torch.isnan(loss) | torch.isinf(loss)):
            loss.backward()
            optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        torch.manual_seed(1)
        z, log_q = model.sample(5)
    # the log-density by the change of variables, its Jacobian by autograd for one draw
    torch.manual_seed(2)
    z0, log_q0 = model.q0(1)
    z0 = z0.detach().requires_grad_()
    zk, total = z0, 0
    for flow in model.flows:
        zk, ld = flow(zk)
        total = total + ld
    rows = [torch.autograd.grad(zk[0, i], z0, retain_graph=True)[0][0] for i in range(2)]
    jac = torch.stack(rows)
    return {"history": history, "z": z, "log_q": log_q, "params": [p.detach().clone() for p in model.parameters()],
            "log_det": total, "jac": jac, "d": model.flows[1].d}


def test_planar_and_radial_flows_reverse_kl():
    weights = weights_of(make_planar_radial)
    ours, _ = run_both(planar_radial, weights, rtol=2e-4, atol=2e-5)
    assert ours["d"].dtype == np.int64 and ours["d"] == 2
    assert np.isfinite(ours["history"]).all()
    # log|det J| of the composition is the sum of the layers' (by the Jacobian autograd gives)
    assert ours["log_det"][0] == pytest.approx(np.log(abs(np.linalg.det(ours["jac"]))), rel=1e-4, abs=1e-5)


# ----------------------------------------------------------------------------------------------
# Sylvester normalizing flows (van den Berg et al. 2018) in a VAE as their code writes it: amortised
# triangular R1/R2 whose diagonals are written in place by advanced indexing, orthogonal Q by the
# iterative Bjorck step or by products of Householder reflections (bmm), log|det| from the diagonals;
# trained by Adamax
# ----------------------------------------------------------------------------------------------


def make_sylvester_vae(m, kind="orthogonal", x_size=12, z_size=3, h_size=16, num_flows=2, num_householder=2):
    torch, nn = m.torch, m.nn
    Variable = torch.autograd.Variable

    class Sylvester(nn.Module):
        def __init__(self, num_ortho_vecs):
            super(Sylvester, self).__init__()
            self.num_ortho_vecs = num_ortho_vecs
            self.h = nn.Tanh()
            triu_mask = torch.triu(torch.ones(num_ortho_vecs, num_ortho_vecs), diagonal=1).unsqueeze(0)
            diag_idx = torch.arange(0, num_ortho_vecs).long()
            self.register_buffer('triu_mask', Variable(triu_mask))
            self.triu_mask.requires_grad = False
            self.register_buffer('diag_idx', diag_idx)

        def der_h(self, x):
            return self.der_tanh(x)

        def der_tanh(self, x):
            return 1 - self.h(x) ** 2

        def _forward(self, zk, r1, r2, q_ortho, b, sum_ldj=True):
            zk = zk.unsqueeze(1)
            diag_r1 = r1[:, self.diag_idx, self.diag_idx]
            diag_r2 = r2[:, self.diag_idx, self.diag_idx]
            r1_hat = r1
            r2_hat = r2
            qr2 = torch.bmm(q_ortho, r2_hat.transpose(2, 1))
            qr1 = torch.bmm(q_ortho, r1_hat)
            r2qzb = torch.bmm(zk, qr2) + b
            z = torch.bmm(self.h(r2qzb), qr1.transpose(2, 1)) + zk
            z = z.squeeze(1)
            diag_j = diag_r1 * diag_r2
            diag_j = self.der_h(r2qzb).squeeze(1) * diag_j
            diag_j += 1.
            log_diag_j = diag_j.abs().log()
            if sum_ldj:
                log_det_j = log_diag_j.sum(-1)
            else:
                log_det_j = log_diag_j
            return z, log_det_j

        def forward(self, zk, r1, r2, q_ortho, b, sum_ldj=True):
            return self._forward(zk, r1, r2, q_ortho, b, sum_ldj)

    class SylvesterVAE(nn.Module):
        def __init__(self):
            super(SylvesterVAE, self).__init__()
            self.z_size, self.num_flows = z_size, num_flows
            self.num_ortho_vecs = z_size
            self.num_householder = num_householder
            self.kind = kind
            self.q_z_nn = nn.Sequential(nn.Linear(x_size, h_size), nn.Softplus())
            self.q_z_mean = nn.Linear(h_size, z_size)
            self.q_z_var = nn.Sequential(nn.Linear(h_size, z_size), nn.Softplus())
            self.p_x_nn = nn.Sequential(nn.Linear(z_size, h_size), nn.Softplus(), nn.Linear(h_size, x_size))
            self.cond = 1.e-5
            self.steps = 30
            identity = torch.eye(self.num_ortho_vecs, self.num_ortho_vecs)
            identity = identity.unsqueeze(0)
            self.register_buffer('_eye', Variable(identity))
            self._eye.requires_grad = False
            triu_mask = torch.triu(torch.ones(self.num_ortho_vecs, self.num_ortho_vecs), diagonal=1)
            triu_mask = triu_mask.unsqueeze(0).unsqueeze(3)
            diag_idx = torch.arange(0, self.num_ortho_vecs).long()
            self.register_buffer('triu_mask', Variable(triu_mask))
            self.triu_mask.requires_grad = False
            self.register_buffer('diag_idx', diag_idx)
            self.diag_activation = nn.Tanh()
            self.amor_d = nn.Linear(h_size, self.num_flows * z_size * self.num_ortho_vecs)
            self.amor_diag1 = nn.Sequential(nn.Linear(h_size, self.num_ortho_vecs * self.num_flows),
                                            self.diag_activation)
            self.amor_diag2 = nn.Sequential(nn.Linear(h_size, self.num_ortho_vecs * self.num_flows),
                                            self.diag_activation)
            q_out = (self.num_flows * z_size * self.num_ortho_vecs if kind == "orthogonal"
                     else self.num_flows * z_size * self.num_householder)
            self.amor_q = nn.Linear(h_size, q_out)
            self.amor_b = nn.Linear(h_size, self.num_ortho_vecs * self.num_flows)
            for k in range(self.num_flows):
                self.add_module('flow_' + str(k), Sylvester(self.num_ortho_vecs))

        def batch_construct_orthogonal(self, q):
            if self.kind == "householder":
                return self.batch_construct_householder(q)
            q = q.view(-1, self.num_ortho_vecs * self.z_size)
            norm = torch.norm(q, p=2, dim=1, keepdim=True)
            amat = torch.div(q, norm)
            amat = amat.view(-1, self.z_size, self.num_ortho_vecs)
            max_norm = 0.
            for s in range(self.steps):
                tmp = torch.bmm(amat.transpose(2, 1), amat)
                tmp = self._eye - tmp
                tmp = self._eye + 0.5 * tmp
                amat = torch.bmm(amat, tmp)
                test = torch.bmm(amat.transpose(2, 1), amat) - self._eye
                norms2 = torch.sum(torch.norm(test, p=2, dim=2) ** 2, dim=1)
                norms = torch.sqrt(norms2)
                max_norm = torch.max(norms).item()
                if max_norm <= self.cond:
                    break
            self.iterations = s
            amat = amat.view(-1, self.num_flows, self.z_size, self.num_ortho_vecs)
            amat = amat.transpose(0, 1)
            return amat

        def batch_construct_householder(self, q):
            q = q.view(-1, self.z_size)
            norm = torch.norm(q, p=2, dim=1, keepdim=True)
            v = torch.div(q, norm)
            vvT = torch.bmm(v.unsqueeze(2), v.unsqueeze(1))
            amat = self._eye - 2 * vvT
            amat = amat.view(-1, self.num_householder, self.z_size, self.z_size)
            tmp = amat[:, 0]
            for k in range(1, self.num_householder):
                tmp = torch.bmm(amat[:, k], tmp)
            amat = tmp.view(-1, self.num_flows, self.z_size, self.z_size)
            amat = amat.transpose(0, 1)
            return amat

        def encode(self, x):
            batch_size = x.size(0)
            h = self.q_z_nn(x)
            mean_z = self.q_z_mean(h)
            var_z = self.q_z_var(h)
            full_d = self.amor_d(h)
            diag1 = self.amor_diag1(h)
            diag2 = self.amor_diag2(h)
            full_d = full_d.resize(batch_size, self.z_size, self.z_size, self.num_flows)
            diag1 = diag1.resize(batch_size, self.z_size, self.num_flows)
            diag2 = diag2.resize(batch_size, self.z_size, self.num_flows)
            r1 = full_d * self.triu_mask
            r2 = full_d.transpose(2, 1) * self.triu_mask
            r1[:, self.diag_idx, self.diag_idx, :] = diag1
            r2[:, self.diag_idx, self.diag_idx, :] = diag2
            q = self.amor_q(h)
            b = self.amor_b(h)
            b = b.resize(batch_size, 1, self.z_size, self.num_flows)
            return mean_z, var_z, r1, r2, q, b

        def reparameterize(self, mu, var):
            std = var.sqrt()
            eps = torch.FloatTensor(std.size()).normal_()
            eps = Variable(eps)
            z = eps.mul(std).add_(mu)
            return z

        def forward(self, x):
            self.log_det_j = 0.
            z_mu, z_var, r1, r2, q, b = self.encode(x)
            q_ortho = self.batch_construct_orthogonal(q)
            z = [self.reparameterize(z_mu, z_var)]
            for k in range(self.num_flows):
                flow_k = getattr(self, 'flow_' + str(k))
                z_k, log_det_jacobian = flow_k(z[k], r1[:, :, :, k], r2[:, :, :, k], q_ortho[k, :, :, :], b[:, :, :, k])
                z.append(z_k)
                self.log_det_j += log_det_jacobian
            x_mean = self.p_x_nn(z[-1])
            return x_mean, z_mu, z_var, self.log_det_j, z[0], z[-1]

    return SylvesterVAE()


def sylvester_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((3, 12)) < 0.4
    return (protos[rng.integers(0, 3, n)] ^ (rng.random((n, 12)) < 0.05)).astype(np.float32)


def binary_loss_function(m, recon_x, x, z_mu, z_var, z_0, z_k, ldj, beta=1.):
    torch, F = m.torch, m.F
    batch_size = x.size(0)
    log_p_zk = (-0.5 * z_k * z_k - 0.5 * math.log(2 * math.pi)).sum(dim=1)
    log_q_z0 = (-0.5 * (torch.log(z_var) + (z_0 - z_mu) ** 2 / z_var) - 0.5 * math.log(2 * math.pi)).sum(dim=1)
    bce = F.binary_cross_entropy_with_logits(recon_x, x, reduction='sum')
    summed_logs = torch.sum(log_q_z0 - log_p_zk)
    summed_ldj = torch.sum(ldj)
    kl = (summed_logs - summed_ldj)
    loss = bce + beta * kl
    return loss / float(batch_size), bce / float(batch_size), kl / float(batch_size)


def sylvester(m, weights, kind, steps=3):
    torch, optim = m.torch, m.optim
    model = load(m, make_sylvester_vae(m, kind), weights)
    x = torch.tensor(sylvester_data())
    optimizer = optim.Adamax(model.parameters(), lr=5e-3, eps=1.e-7)
    torch.manual_seed(0)
    history = []
    for epoch in range(steps):
        optimizer.zero_grad()
        x_mean, z_mu, z_var, ldj, z0, zk = model(x)
        loss, rec, kl = binary_loss_function(m, x_mean, x, z_mu, z_var, z0, zk, ldj, beta=min(1.0, 0.5 + epoch / 4))
        loss.backward()
        optimizer.step()
        history.append([loss.item(), rec.item(), kl.item()])
    with torch.no_grad():
        _, _, _, _, q, _ = model.encode(x[:4])
        Q = model.batch_construct_orthogonal(q)
    # one flow step's log-determinant against the Jacobian by autograd
    _, _, r1, r2, q, b = model.encode(x[:1])
    Q1 = model.batch_construct_orthogonal(q)
    z = torch.randn(1, model.z_size).requires_grad_()
    zk, ldj = model.flow_0(z, r1[:, :, :, 0], r2[:, :, :, 0], Q1[0], b[:, :, :, 0])
    jac = torch.stack([torch.autograd.grad(zk[0, i], z, retain_graph=True)[0][0] for i in range(model.z_size)])
    return {"history": history, "Q": Q, "ldj": ldj, "jac": jac, "iterations": getattr(model, "iterations", -1)}


@pytest.mark.filterwarnings("ignore:non-inplace resize is deprecated")
@pytest.mark.parametrize("kind", ["orthogonal", "householder"])
def test_sylvester_flows_vae(kind):
    weights = weights_of(lambda m: make_sylvester_vae(m, kind))
    ours, _ = run_both(sylvester, weights, kind, rtol=2e-4, atol=2e-5)
    Q = ours["Q"]
    eye = np.broadcast_to(np.eye(3), Q.shape)
    np.testing.assert_allclose(np.swapaxes(Q, -1, -2) @ Q, eye, atol=1e-4)
    assert ours["ldj"][0] == pytest.approx(np.log(abs(np.linalg.det(ours["jac"]))), rel=1e-4, abs=1e-5)
