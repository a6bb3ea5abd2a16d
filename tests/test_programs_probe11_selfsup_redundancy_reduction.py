# ruff: noqa: E501, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Self-supervised, contrastive and metric-learning programs as their reference repositories write them, run as
tests/probe11_selfsup_common.py says. Redundancy reduction and whitening: Barlow Twins with its LARS
(``diagonal().add_(-1).pow_(2)``, the off-diagonal view; checked against NumPy), VICReg (a gather as a one-process
autograd.Function), W-MSE (Cholesky whitening as a 1x1 conv2d, ``torch.add(out=buffer)``, writes into
``empty_like``)."""

import math

import numpy as np
import pytest

from .probe11_selfsup_common import backbone, images
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Barlow Twins (facebookresearch/barlowtwins, with its LARS optimizer)
# ----------------------------------------------------------------------------------------------


def off_diagonal(x):
    # return a flattened view of the off-diagonal elements of a square matrix
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_model(m, projector="24-24-12", batch_size=8, lambd=0.0051):
    torch, nn = m.torch, m.nn

    class BarlowTwins(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone(m)
            self.backbone.fc = nn.Identity()
            # projector
            sizes = [16] + list(map(int, projector.split('-')))
            layers = []
            for i in range(len(sizes) - 2):
                layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=False))
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
            self.projector = nn.Sequential(*layers)
            # normalization layer for the representations z1 and z2
            self.bn = nn.BatchNorm1d(sizes[-1], affine=False)

        def forward(self, y1, y2):
            z1 = self.projector(self.backbone(y1))
            z2 = self.projector(self.backbone(y2))
            # empirical cross-correlation matrix
            c = self.bn(z1).T @ self.bn(z2)
            # sum the cross-correlation matrix between all gpus
            c.div_(batch_size)
            on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
            off_diag = off_diagonal(c).pow_(2).sum()
            loss = on_diag + lambd * off_diag
            return loss

    return BarlowTwins()


def lars(m):
    torch, optim = m.torch, m.optim

    class LARS(optim.Optimizer):
        def __init__(self, params, lr, weight_decay=0, momentum=0.9, eta=0.001,
                     weight_decay_filter=False, lars_adaptation_filter=False):
            defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                            eta=eta, weight_decay_filter=weight_decay_filter,
                            lars_adaptation_filter=lars_adaptation_filter)
            super().__init__(params, defaults)

        def exclude_bias_and_norm(self, p):
            return p.ndim == 1

        @torch.no_grad()
        def step(self):
            for g in self.param_groups:
                for p in g['params']:
                    dp = p.grad
                    if dp is None:
                        continue
                    if not g['weight_decay_filter'] or not self.exclude_bias_and_norm(p):
                        dp = dp.add(p, alpha=g['weight_decay'])
                    if not g['lars_adaptation_filter'] or not self.exclude_bias_and_norm(p):
                        param_norm = torch.norm(p)
                        update_norm = torch.norm(dp)
                        one = torch.ones_like(param_norm)
                        q = torch.where(param_norm > 0.,
                                        torch.where(update_norm > 0,
                                                    (g['eta'] * param_norm / update_norm), one), one)
                        dp = dp.mul(q)
                    param_state = self.state[p]
                    if 'mu' not in param_state:
                        param_state['mu'] = torch.zeros_like(p)
                    mu = param_state['mu']
                    mu.mul_(g['momentum']).add_(dp)
                    p.add_(mu, alpha=-g['lr'])

    return LARS


def barlow_twins(m, weights, epochs=3, loader_len=2):
    torch = m.torch
    model = load(m, barlow_model(m), weights)
    param_weights = []
    param_biases = []
    for param in model.parameters():
        if param.ndim == 1:
            param_biases.append(param)
        else:
            param_weights.append(param)
    parameters = [{'params': param_weights}, {'params': param_biases}]
    optimizer = lars(m)(parameters, lr=0, weight_decay=1.5e-6, weight_decay_filter=True,
                        lars_adaptation_filter=True)

    def adjust_learning_rate(optimizer, step, batch_size=8, learning_rate_weights=0.2, learning_rate_biases=0.0048):
        max_steps = epochs * loader_len
        warmup_steps = 1 * loader_len
        base_lr = batch_size / 256
        if step < warmup_steps:
            lr = base_lr * step / warmup_steps
        else:
            step -= warmup_steps
            max_steps -= warmup_steps
            q = 0.5 * (1 + math.cos(math.pi * step / max_steps))
            end_lr = base_lr * 0.001
            lr = base_lr * q + end_lr * (1 - q)
        optimizer.param_groups[0]['lr'] = lr * learning_rate_weights
        optimizer.param_groups[1]['lr'] = lr * learning_rate_biases

    log = []
    for epoch in range(epochs):
        for step in range(loader_len):
            step = epoch * loader_len + step
            x = images(m, seed=60 + step)
            y1, y2 = x, torch.flip(x, dims=[2, 3]) * 0.8
            adjust_learning_rate(optimizer, step)
            optimizer.zero_grad()
            loss = model.forward(y1, y2)
            loss.backward()
            optimizer.step()
            log.append((loss.item(), optimizer.param_groups[0]['lr'], optimizer.param_groups[1]['lr']))
    grads = [p.grad for p in model.parameters()]
    mu = [optimizer.state[p]['mu'] for p in model.parameters()]
    return {"log": log, "grads": grads, "mu": mu, "state": model.state_dict()}


def test_barlow_twins():
    weights = weights_of(barlow_model)
    ours, _ = run_both(barlow_twins, weights, rtol=1e-4, atol=1e-4)  # gradients up to about 10
    assert ours["log"][0][1] == 0 and ours["log"][1][1] > 0
    assert all(g is not None for g in ours["grads"])


def barlow_loss_pieces(m, seed):
    """The cross-correlation loss with its in-place steps, and the same written out of place."""
    torch = m.torch
    rng = np.random.default_rng(seed)
    z1 = torch.tensor(rng.standard_normal((6, 5)), requires_grad=True)
    z2 = torch.tensor(rng.standard_normal((6, 5)), requires_grad=True)
    bn = m.nn.BatchNorm1d(5, affine=False).double()
    c = bn(z1).T @ bn(z2)
    c.div_(6)
    diagonal_view = torch.diagonal(c)
    on_diag = diagonal_view.add_(-1).pow_(2).sum()
    off_diag = off_diagonal(c).pow_(2).sum()
    loss = on_diag + 0.5 * off_diag
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    return loss, g1, g2, c.detach()


def test_barlow_in_place_cross_correlation_against_numpy():
    ours, _ = run_both(barlow_loss_pieces, 3, rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(3)
    z1, z2 = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    norm = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
    c = norm(z1).T @ norm(z2) / 6
    off = ~np.eye(5, dtype=bool)
    expected = ((np.diag(c) - 1) ** 2).sum() + 0.5 * (c[off] ** 2).sum()
    assert ours[0] == pytest.approx(expected, rel=1e-12)
    # c after the in-place steps: its diagonal holds (c_ii - 1)^2, its off-diagonal c_ij^2 were not written back
    after = c.copy()
    np.fill_diagonal(after, (np.diag(c) - 1) ** 2)
    np.testing.assert_allclose(ours[3], after, rtol=1e-12)
    # the loss's gradient with respect to c, taken back through the normalisation by hand
    dc = 2 * (c - np.eye(5)) * np.eye(5) + 0.5 * 2 * c * off

    def bn_backward(z, dy):
        y, std = norm(z), np.sqrt(z.var(0) + 1e-5)
        return (dy - dy.mean(0) - y * (dy * y).mean(0)) / std

    np.testing.assert_allclose(ours[1], bn_backward(z1, norm(z2) @ dc.T / 6), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours[2], bn_backward(z2, norm(z1) @ dc / 6), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# VICReg (facebookresearch/vicreg, the gather as a one-process autograd.Function)
# ----------------------------------------------------------------------------------------------


def vicreg_model(m, mlp="24-24-12"):
    torch, nn, F = m.torch, m.nn, m.F

    def Projector(embedding):
        mlp_spec = f"{embedding}-{mlp}"
        layers = []
        f = list(map(int, mlp_spec.split("-")))
        for i in range(len(f) - 2):
            layers.append(nn.Linear(f[i], f[i + 1]))
            layers.append(nn.BatchNorm1d(f[i + 1]))
            layers.append(nn.ReLU(True))
        layers.append(nn.Linear(f[-2], f[-1], bias=False))
        return nn.Sequential(*layers)

    class FullGatherLayer(torch.autograd.Function):
        """
        Gather tensors from all process and support backward propagation
        for the gradients across processes.
        """

        @staticmethod
        def forward(ctx, x):
            output = [torch.zeros_like(x) for _ in range(1)]  # dist.get_world_size() is 1
            output[0].copy_(x)  # dist.all_gather(output, x)
            return tuple(output)

        @staticmethod
        def backward(ctx, *grads):
            all_gradients = torch.stack(grads)
            return all_gradients[0]  # dist.get_rank() is 0

    class VICReg(nn.Module):
        def __init__(self, batch_size=8, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
            super().__init__()
            self.batch_size, self.sim_coeff, self.std_coeff, self.cov_coeff = batch_size, sim_coeff, std_coeff, cov_coeff
            self.num_features = int(mlp.split("-")[-1])
            self.backbone, self.embedding = backbone(m), 16
            self.backbone.fc = nn.Identity()
            self.projector = Projector(self.embedding)

        def forward(self, x, y):
            x = self.projector(self.backbone(x))
            y = self.projector(self.backbone(y))
            repr_loss = F.mse_loss(x, y)
            x = torch.cat(FullGatherLayer.apply(x), dim=0)
            y = torch.cat(FullGatherLayer.apply(y), dim=0)
            x = x - x.mean(dim=0)
            y = y - y.mean(dim=0)
            std_x = torch.sqrt(x.var(dim=0) + 0.0001)
            std_y = torch.sqrt(y.var(dim=0) + 0.0001)
            std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
            cov_x = (x.T @ x) / (self.batch_size - 1)
            cov_y = (y.T @ y) / (self.batch_size - 1)
            cov_loss = off_diagonal(cov_x).pow_(2).sum().div(
                self.num_features
            ) + off_diagonal(cov_y).pow_(2).sum().div(self.num_features)
            loss = (
                self.sim_coeff * repr_loss
                + self.std_coeff * std_loss
                + self.cov_coeff * cov_loss
            )
            return loss, (repr_loss, std_loss, cov_loss)

    return VICReg()


def vicreg(m, weights, steps=4):
    torch = m.torch
    model = load(m, vicreg_model(m), weights)
    optimizer = lars(m)(model.parameters(), lr=0.05, weight_decay=1e-6, weight_decay_filter=True,
                        lars_adaptation_filter=True)
    log = []
    for step in range(steps):
        x = images(m, seed=70 + step)
        optimizer.zero_grad()
        loss, parts = model.forward(x, x.roll(1, dims=3) + 0.1)
        loss.backward()
        optimizer.step()
        log.append([loss.item()] + [p.item() for p in parts])
    return {"log": log, "grads": [p.grad for p in model.parameters()], "state": model.state_dict()}


def test_vicreg():
    weights = weights_of(vicreg_model)
    ours, _ = run_both(vicreg, weights, rtol=1e-4, atol=1e-5)
    for loss, repr_loss, std_loss, cov_loss in ours["log"]:
        assert loss == pytest.approx(25 * repr_loss + 25 * std_loss + cov_loss, rel=1e-5)
        assert std_loss > 0
    assert all(g is not None for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# W-MSE (htdt/self-supervised): whitening by a Cholesky factor's inverse (torch.cholesky, triangular_solve)
# applied as a 1x1 conv2d, running statistics by torch.add(out=buffer), whitened sub-batches written into
# torch.empty_like by index
# ----------------------------------------------------------------------------------------------


def wmse_model(m):
    nn = m.nn
    # no biases before BatchNorm or the whitening (which centres): their gradients would be rounding alone,
    # which Adam makes into steps of lr
    return nn.ModuleDict({"model": nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 16), nn.ReLU()),
                          "head": nn.Sequential(nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                                                nn.Linear(16, 4, bias=False))})


@pytest.mark.filterwarnings("ignore:torch.cholesky is deprecated", "ignore:torch.triangular_solve is deprecated")
def test_wmse():
    def program(m, weights, steps=3, w_iter=2, w_size=4):
        torch, nn, F = m.torch, m.nn, m.F
        conv2d = F.conv2d

        class Whitening2d(nn.Module):
            def __init__(self, num_features, momentum=0.01, track_running_stats=True, eps=0):
                super(Whitening2d, self).__init__()
                self.num_features = num_features
                self.momentum = momentum
                self.track_running_stats = track_running_stats
                self.eps = eps
                if self.track_running_stats:
                    self.register_buffer("running_mean", torch.zeros([1, self.num_features, 1, 1]))
                    self.register_buffer("running_variance", torch.eye(self.num_features))

            def forward(self, x):
                x = x.unsqueeze(2).unsqueeze(3)
                m = x.mean(0).view(self.num_features, -1).mean(-1).view(1, -1, 1, 1)
                if not self.training and self.track_running_stats:  # for inference
                    m = self.running_mean
                xn = x - m
                T = xn.permute(1, 0, 2, 3).contiguous().view(self.num_features, -1)
                f_cov = torch.mm(T, T.permute(1, 0)) / (T.shape[-1] - 1)
                eye = torch.eye(self.num_features).type(f_cov.type())
                if not self.training and self.track_running_stats:  # for inference
                    f_cov = self.running_variance
                f_cov_shrinked = (1 - self.eps) * f_cov + self.eps * eye
                inv_sqrt = torch.triangular_solve(eye, torch.cholesky(f_cov_shrinked), upper=False)[0]
                inv_sqrt = inv_sqrt.contiguous().view(self.num_features, self.num_features, 1, 1)
                decorrelated = conv2d(xn, inv_sqrt)
                if self.training and self.track_running_stats:
                    self.running_mean = torch.add(self.momentum * m.detach(), (1 - self.momentum) * self.running_mean,
                                                  out=self.running_mean)
                    self.running_variance = torch.add(self.momentum * f_cov.detach(),
                                                      (1 - self.momentum) * self.running_variance,
                                                      out=self.running_variance)
                return decorrelated.squeeze(2).squeeze(2)

        def norm_mse_loss(x0, x1):
            x0 = F.normalize(x0)
            x1 = F.normalize(x1)
            return 2 - 2 * (x0 * x1).sum(dim=-1).mean()

        nets = load(m, wmse_model(m), weights)
        model, head = nets["model"], nets["head"]
        whitening = Whitening2d(4, eps=0.1)
        optimizer = m.optim.Adam(nets.parameters(), lr=1e-3, weight_decay=1e-6)
        rng = np.random.default_rng(11)
        num_pairs = 1
        log = []
        for step in range(steps):
            x = images(m, n=8, side=6, seed=220 + step)
            samples = [x, x.flip(3) * 0.9]
            bs = len(samples[0])
            h = [model(x) for x in samples]
            h = head(torch.cat(h))
            loss = 0
            for _ in range(w_iter):
                z = torch.empty_like(h)
                perm = torch.tensor(rng.permutation(bs)).view(-1, w_size)  # torch.randperm(bs)
                for idx in perm:
                    for i in range(len(samples)):
                        z[idx + i * bs] = whitening(h[idx + i * bs])
                for i in range(len(samples) - 1):
                    for j in range(i + 1, len(samples)):
                        x0 = z[i * bs: (i + 1) * bs]
                        x1 = z[j * bs: (j + 1) * bs]
                        loss += norm_mse_loss(x0, x1)
            loss /= w_iter * num_pairs
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            log.append(loss.item())
        whitening.eval()
        with torch.no_grad():
            white_eval = whitening(head.eval()(model(samples[0])))
        return {"log": log, "grads": [p.grad for p in nets.parameters()], "running_mean": whitening.running_mean,
                "running_variance": whitening.running_variance, "white_eval": white_eval, "z": z.detach(),
                "type": h.type(), "nets": nets.state_dict()}

    weights = weights_of(wmse_model)
    ours, _ = run_both(program, weights, rtol=1e-4, atol=1e-5)
    assert ours["type"] == "torch.FloatTensor"
    assert ours["running_mean"].shape == (1, 4, 1, 1)
    assert all(0 <= loss <= 4 for loss in ours["log"])
    # each whitened sub-batch of 4 has covariance close to the identity (shrunk by eps = 0.1)
    sub = ours["z"][:4]
    cov = np.cov((sub - sub.mean(0)).T)
    assert np.all(np.linalg.eigvalsh(cov) < 1.0 + 1e-4)
