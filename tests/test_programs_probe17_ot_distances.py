# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Optimal-transport programs, run as tests/probe17_ot_common.py says. Distances between distributions: the earth
mover's distance on histograms by ``cumsum`` (squared EMD for ordinal classes); WGAN-GP
(``autograd.grad(create_graph=True)`` and backward through the penalty) and WGAN with weight clipping (``clamp_``
under ``no_grad``, RMSprop); MMD with Gaussian and inverse-multiquadric kernels on ``torch.cdist`` (its gradient at
zero distance), the energy distance and the Chamfer distance; the Gaussian W2 (torchmetrics' FID by ``eigvals``,
``eigh`` square roots, a Bures barycenter); a trimmed Chamfer distance whose descending sort must drop NaN and +inf
(it found sort's order of the two)."""

import numpy as np
import pytest

from .probe17_ot_common import clouds, sqdist_np
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# The earth mover's distance between histograms by cumsum (squared EMD for ordinal classes, Hou et al.)
# ----------------------------------------------------------------------------------------------


def emd_ordinal(m, classes=6, steps=5):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(7)
    features = torch.tensor(rng.standard_normal((32, 5)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, classes, 32))
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, classes))
    load(m, model, emd_weights)

    def emd_loss(p, p_hat, r=2):
        cdf_p = torch.cumsum(p, dim=-1)
        cdf_p_hat = torch.cumsum(p_hat, dim=-1)
        cdf_diff = cdf_p - cdf_p_hat
        if r == 1:
            return torch.mean(torch.abs(cdf_diff), dim=-1).mean()
        return torch.sqrt(torch.mean(torch.pow(torch.abs(cdf_diff), r), dim=-1)).mean()

    optimizer = m.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    history = []
    for step in range(steps):
        p_hat = F.softmax(model(features), dim=-1)
        target = F.one_hot(labels, classes).float()
        loss = emd_loss(target, p_hat) + 0.1 * emd_loss(target, p_hat, r=1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    # EMD between histograms on a grid, as the L1 distance of CDFs, and its gradient through flip/cumsum
    h1 = torch.tensor(rng.random(8), requires_grad=True)
    h2 = torch.tensor(rng.random(8))
    p1, p2 = h1 / h1.sum(), h2 / h2.sum()
    emd = torch.sum(torch.abs(torch.cumsum(p1 - p2, 0)))
    emd_reverse = torch.sum(torch.abs(torch.flip(torch.cumsum(torch.flip(p1 - p2, [0]), 0), [0])))
    (g,) = torch.autograd.grad(emd + emd_reverse, h1)
    return {"history": history, "emd": emd, "emd_reverse": emd_reverse, "g": g,
            "grads": [p.grad for p in model.parameters()]}


emd_weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(5, 16), m.nn.ReLU(), m.nn.Linear(16, 6)))


def test_emd_ordinal_and_histograms():
    ours, _ = run_both(emd_ordinal, rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(7)
    rng.standard_normal((32, 5)), rng.integers(0, 6, 32)
    h1, h2 = rng.random(8), rng.random(8)
    d = h1 / h1.sum() - h2 / h2.sum()
    assert ours["emd"] == pytest.approx(np.abs(np.cumsum(d)).sum(), rel=1e-12)
    assert ours["emd_reverse"] == pytest.approx(np.abs(np.cumsum(d[::-1])).sum(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# WGAN-GP (Gulrajani et al.: the gradient penalty differentiated through) and WGAN with weight clipping
# ----------------------------------------------------------------------------------------------


def gan_nets(m, z_dim=4, x_dim=2, hidden=16):
    nn = m.nn
    G = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(True), nn.Linear(hidden, hidden), nn.ReLU(True),
                      nn.Linear(hidden, x_dim))
    D = nn.Sequential(nn.Linear(x_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.Tanh(),
                      nn.Linear(hidden, 1))
    return nn.ModuleDict({"G": G, "D": D})


gan_weights = weights_of(gan_nets)


def gan_data(n=64, seed=8):
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    real = centers[rng.integers(0, 4, n)] + 0.1 * rng.standard_normal((n, 2))
    return real.astype(np.float32), rng.standard_normal((4, n, 4)).astype(np.float32), rng.random((4, n, 1))


def wgan_gp(m, LAMBDA=10.0, CRITIC_ITERS=3, iters=4):
    torch, autograd = m.torch, m.torch.autograd
    nets = load(m, gan_nets(m), gan_weights)
    netG, netD = nets["G"], nets["D"]
    real, noises, alphas = gan_data()
    real_data = torch.tensor(real)
    optimizerD = m.optim.Adam(netD.parameters(), lr=1e-3, betas=(0.5, 0.9))
    optimizerG = m.optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.9))
    one = torch.tensor(1, dtype=torch.float)
    mone = one * -1

    def calc_gradient_penalty(netD, real_data, fake_data, alpha):
        alpha = alpha.expand(real_data.size())
        interpolates = alpha * real_data + ((1 - alpha) * fake_data)
        interpolates = autograd.Variable(interpolates, requires_grad=True)
        disc_interpolates = netD(interpolates)
        gradients = autograd.grad(outputs=disc_interpolates, inputs=interpolates,
                                  grad_outputs=torch.ones(disc_interpolates.size()),
                                  create_graph=True, retain_graph=True, only_inputs=True)[0]
        return ((gradients.norm(2, dim=1) - 1) ** 2).mean() * LAMBDA

    log = []
    for iteration in range(iters):
        for p in netD.parameters():
            p.requires_grad = True
        for iter_d in range(CRITIC_ITERS):
            k = (iteration + iter_d) % 4
            netD.zero_grad()
            D_real = netD(real_data).mean()
            D_real.backward(mone)
            noisev = torch.tensor(noises[k])
            with torch.no_grad():
                fake = netG(noisev)
            inputv = fake
            D_fake = netD(inputv).mean()
            D_fake.backward(one)
            gradient_penalty = calc_gradient_penalty(netD, real_data, fake, torch.tensor(alphas[k], dtype=torch.float))
            gradient_penalty.backward()
            D_cost = D_fake - D_real + gradient_penalty
            Wasserstein_D = D_real - D_fake
            optimizerD.step()
            log.append((D_cost.item(), Wasserstein_D.item(), gradient_penalty.item()))
        for p in netD.parameters():
            p.requires_grad = False
        netG.zero_grad()
        fake = netG(torch.tensor(noises[iteration % 4]))
        G = netD(fake).mean()
        G.backward(mone)
        optimizerG.step()
    return {"log": log, "state": dict(nets.state_dict()), "D_grad": [p.grad for p in netD.parameters()]}


def test_wgan_gp():
    ours, _ = run_both(wgan_gp, rtol=2e-4, atol=2e-5)
    assert all(gp >= 0 for _, _, gp in ours["log"])


def wgan_clipping(m, clamp_lower=-0.05, clamp_upper=0.05, Diters=3, iters=4):
    # in double: with clipped weights the critic's real and fake gradients nearly cancel, and RMSprop's first
    # steps (about lr / sqrt(1 - alpha) whatever the gradient's size) turn float32 rounding into visible steps
    torch = m.torch
    torch.set_default_dtype(torch.float64)
    try:
        nets = load(m, gan_nets(m), gan_weights)
    finally:
        torch.set_default_dtype(torch.float32)
    netG, netD = nets["G"], nets["D"]
    real, noises, _ = (v.astype(np.float64) for v in gan_data(seed=9))
    optimizerD = m.optim.RMSprop(netD.parameters(), lr=5e-3)
    optimizerG = m.optim.RMSprop(netG.parameters(), lr=5e-3)
    one = torch.DoubleTensor([1])
    mone = one * -1
    errs = []
    for gen_iterations in range(iters):
        for p in netD.parameters():
            p.requires_grad = True
        for j in range(Diters):
            for p in netD.parameters():
                p.data.clamp_(clamp_lower, clamp_upper)
            netD.zero_grad()
            errD_real = netD(torch.tensor(real)).mean(0).view(1)
            errD_real.backward(one)
            with torch.no_grad():
                fake = netG(torch.tensor(noises[j]))
            errD_fake = netD(fake.detach()).mean(0).view(1)
            errD_fake.backward(mone)
            errD = errD_real - errD_fake
            optimizerD.step()
        for p in netD.parameters():
            p.requires_grad = False
        netG.zero_grad()
        errG = netD(netG(torch.tensor(noises[3]))).mean(0).view(1)
        errG.backward(one)
        optimizerG.step()
        errs.append((errD.item(), errG.item()))
    with torch.no_grad():
        for p in netD.parameters():
            p.clamp_(clamp_lower, clamp_upper)
    return {"errs": errs, "state": dict(nets.state_dict())}


def test_wgan_weight_clipping():
    ours, _ = run_both(wgan_clipping, rtol=1e-8, atol=1e-10)
    for k, v in ours["state"].items():
        if k.startswith("D."):
            assert np.all(np.abs(v) <= 0.05)


# ----------------------------------------------------------------------------------------------
# MMD with Gaussian and inverse-multiquadric kernels, the energy distance, the Chamfer distance
# ----------------------------------------------------------------------------------------------


def mmd_programs(m, steps=5):
    torch = m.torch
    x, y, _, _ = clouds(n=10, m=8, d=3, seed=10)
    X = torch.tensor(x, requires_grad=True)
    Y = torch.tensor(y)

    def gaussian_kernel(source, target, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
        n_samples = int(source.size()[0]) + int(target.size()[0])
        total = torch.cat([source, target], dim=0)
        total0 = total.unsqueeze(0).expand(int(total.size(0)), int(total.size(0)), int(total.size(1)))
        total1 = total.unsqueeze(1).expand(int(total.size(0)), int(total.size(0)), int(total.size(1)))
        L2_distance = ((total0 - total1) ** 2).sum(2)
        if fix_sigma:
            bandwidth = fix_sigma
        else:
            bandwidth = torch.sum(L2_distance.data) / (n_samples ** 2 - n_samples)
        bandwidth /= kernel_mul ** (kernel_num // 2)
        bandwidth_list = [bandwidth * (kernel_mul ** i) for i in range(kernel_num)]
        kernel_val = [torch.exp(-L2_distance / bandwidth_temp) for bandwidth_temp in bandwidth_list]
        return sum(kernel_val)

    def mmd_rbf(source, target):
        batch_size = int(source.size()[0])
        kernels = gaussian_kernel(source, target[:batch_size])
        XX = kernels[:batch_size, :batch_size]
        YY = kernels[batch_size:, batch_size:]
        XY = kernels[:batch_size, batch_size:]
        YX = kernels[batch_size:, :batch_size]
        return torch.mean(XX + YY - XY - YX)

    def imq_mmd(X, Y, scales=(0.1, 0.2, 0.5, 1.0, 2.0)):
        # WAE's inverse multiquadric kernel, the diagonal left out (unbiased)
        n = X.shape[0]
        dxx = torch.cdist(X, X) ** 2
        dyy = torch.cdist(Y, Y) ** 2
        dxy = torch.cdist(X, Y) ** 2
        stats = 0
        for scale in scales:
            C = 2 * X.shape[1] * 1.0 * scale
            res1 = C / (C + dxx) + C / (C + dyy)
            res1 = (1 - torch.eye(n, dtype=X.dtype)) * res1
            res1 = res1.sum() / (n - 1)
            res2 = C / (C + dxy)
            res2 = res2.sum() * 2.0 / n
            stats = stats + res1 - res2
        return stats

    def gaussian_mmd_cdist(X, Y, sigmas=(0.5, 1.0, 2.0)):
        # distances, not squared: cdist's gradient at the zero diagonal must be zero (PyTorch's mm path too)
        dxx, dyy, dxy = torch.cdist(X, X), torch.cdist(Y, Y), torch.cdist(X, Y)
        k = lambda d: sum(torch.exp(-d ** 2 / (2 * s ** 2)) for s in sigmas)
        return k(dxx).mean() + k(dyy).mean() - 2 * k(dxy).mean()

    def energy_distance(X, Y):
        return 2 * torch.cdist(X, Y).mean() - torch.cdist(X, X).mean() - torch.cdist(Y, Y).mean()

    def chamfer_distance(X, Y):
        d = torch.cdist(X, Y, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        return d.min(dim=1)[0].mean() + d.min(dim=0).values.mean()

    values, grads = {}, {}
    for name, f in [("rbf", lambda X, Y: mmd_rbf(X, Y[:10] if Y.shape[0] >= 10 else torch.cat([Y, Y[:2]]))),
                    ("imq", lambda X, Y: imq_mmd(X, torch.cat([Y, Y[:2] + 0.1]))),
                    ("gauss_cdist", gaussian_mmd_cdist), ("energy", energy_distance), ("chamfer", chamfer_distance)]:
        v = f(X, Y)
        (g,) = torch.autograd.grad(v, X)
        values[name], grads[name] = v, g
    # flow by the energy distance with the distances through the matrix product (more than 25 points)
    Z = torch.tensor(np.random.default_rng(11).standard_normal((30, 3)), requires_grad=True)
    opt = m.optim.SGD([Z], lr=2.0)
    energy = []
    for step in range(steps):
        opt.zero_grad()
        e = energy_distance(Z, Y)
        e.backward()
        opt.step()
        energy.append(e.item())
    return {"values": values, "grads": grads, "energy": energy, "Z": Z}


def test_mmd_energy_chamfer():
    ours, _ = run_both(mmd_programs, rtol=1e-6, atol=1e-8)
    x, y, _, _ = clouds(n=10, m=8, d=3, seed=10)
    d2 = sqdist_np(x, y)
    assert ours["values"]["chamfer"] == pytest.approx(d2.min(1).mean() + d2.min(0).mean(), rel=1e-12)
    dist = lambda a, b: np.sqrt(sqdist_np(a, b))
    energy = 2 * dist(x, y).mean() - dist(x, x).mean() - dist(y, y).mean()
    assert ours["values"]["energy"] == pytest.approx(energy, rel=1e-8)
    assert np.all(np.isfinite(ours["grads"]["gauss_cdist"])) and np.all(np.isfinite(ours["grads"]["energy"]))
    assert ours["energy"][-1] < ours["energy"][0]


# ----------------------------------------------------------------------------------------------
# The 2-Wasserstein (Bures) distance between Gaussians: torchmetrics' FID by eigvals, matrix square roots
# by eigh, and a Bures-Wasserstein barycenter by its fixed point
# ----------------------------------------------------------------------------------------------


def gaussian_w2(m, iters=15):
    torch = m.torch
    rng = np.random.default_rng(19)
    feats1 = torch.tensor(rng.standard_normal((40, 4)) @ rng.standard_normal((4, 4)), requires_grad=True)
    feats2 = torch.tensor(rng.standard_normal((30, 4)) @ rng.standard_normal((4, 4)) + 1.0)

    def compute_fid(mu1, sigma1, mu2, sigma2):
        a = (mu1 - mu2).square().sum(dim=-1)
        b = sigma1.trace() + sigma2.trace()
        c = torch.linalg.eigvals(sigma1 @ sigma2).sqrt().real.sum(dim=-1)
        return a + b - 2 * c

    def sqrtm(A):
        L, Q = torch.linalg.eigh(A)
        return Q @ torch.diag_embed(L.clamp(min=0).sqrt()) @ Q.mT

    def bures(mu1, sigma1, mu2, sigma2):
        r = sqrtm(sigma1)
        return (mu1 - mu2).pow(2).sum() + torch.trace(sigma1 + sigma2 - 2 * sqrtm(r @ sigma2 @ r))

    mu1, sigma1 = feats1.mean(0), torch.cov(feats1.T)
    mu2 = feats2.mean(0)
    sigma2 = (feats2 - mu2).T @ (feats2 - mu2) / (feats2.shape[0] - 1)
    fid = compute_fid(mu1, sigma1, mu2, sigma2)
    w2 = bures(mu1, sigma1, mu2, sigma2)
    g_fid, g_w2 = (torch.autograd.grad(v, feats1, retain_graph=True)[0] for v in (fid, w2))
    # the barycenter of three Gaussians' covariances: S <- S^{-1/2} (sum_k w_k (S^{1/2} C_k S^{1/2})^{1/2})^2 S^{-1/2}
    covs = torch.stack([sigma1.detach(), sigma2, torch.eye(4, dtype=torch.float64) * 2])
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    S = torch.eye(4, dtype=torch.float64)
    for _ in range(iters):
        root = sqrtm(S)
        inv_root = torch.linalg.inv(root)
        T = (w[:, None, None] * sqrtm(root @ covs @ root)).sum(0)
        S = inv_root @ T @ T @ inv_root
    return {"fid": fid, "w2": w2, "g_fid": g_fid, "g_w2": g_w2, "barycenter": S}


def test_gaussian_w2():
    ours, _ = run_both(gaussian_w2, rtol=1e-7, atol=1e-9)
    assert ours["fid"] == pytest.approx(ours["w2"], rel=1e-9)
    rng = np.random.default_rng(19)
    f1 = rng.standard_normal((40, 4)) @ rng.standard_normal((4, 4))
    f2 = rng.standard_normal((30, 4)) @ rng.standard_normal((4, 4)) + 1.0
    s1, s2 = np.cov(f1.T), np.cov(f2.T)
    fid = (((f1.mean(0) - f2.mean(0)) ** 2).sum() + np.trace(s1 + s2)
           - 2 * np.sqrt(np.linalg.eigvals(s1 @ s2)).real.sum())
    assert ours["fid"] == pytest.approx(fid, rel=1e-9)
    # the barycenter's fixed point: S = sum_k w_k (S^1/2 C_k S^1/2)^1/2 conjugated back, so S^1/2 S S^1/2 = T^2
    sqrtm = lambda A: (lambda L, Q: Q @ np.diag(np.sqrt(np.clip(L, 0, None))) @ Q.T)(*np.linalg.eigh(A))
    S = ours["barycenter"]
    T = sum(w * sqrtm(sqrtm(S) @ C @ sqrtm(S)) for w, C in zip([0.5, 0.3, 0.2], [s1, s2, 2 * np.eye(4)]))
    np.testing.assert_allclose(T, S, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["g_fid"], ours["g_w2"], rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# A trimmed Chamfer distance: the largest nearest-neighbour distances dropped by a descending sort, where a
# point at infinity gives +inf and a missing point (NaN coordinates) gives NaN: both must be dropped
# ----------------------------------------------------------------------------------------------


def trimmed_chamfer(m, n_outliers=3):
    torch = m.torch
    rng = np.random.default_rng(24)
    x = rng.standard_normal((10, 2))
    x[2] = np.inf  # a point sent to infinity (an overflowed prediction)
    x[6] = np.nan  # a missing point
    y = rng.standard_normal((8, 2))
    X = torch.tensor(x, requires_grad=True)
    Y = torch.tensor(y)
    d = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    nearest = d.min(dim=1).values
    ranked, order = torch.sort(nearest, descending=True)
    kept = ranked[n_outliers:]
    loss = kept.mean()
    (g,) = torch.autograd.grad(loss, X)
    return {"order": order, "loss": loss, "g": torch.nan_to_num(g, nan=-1.0)}


def test_trimmed_chamfer_drops_nan_and_inf():
    ours, _ = run_both(trimmed_chamfer, rtol=1e-12, atol=1e-12)
    assert ours["order"][0] == 6 and ours["order"][1] == 2  # NaN first, then +inf
    rng = np.random.default_rng(24)
    x, y = rng.standard_normal((10, 2)), rng.standard_normal((8, 2))
    nearest = np.delete(sqdist_np(x, y).min(1), [2, 6])
    assert ours["loss"] == pytest.approx(np.sort(nearest)[::-1][1:].mean(), rel=1e-12)
