# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Uncertainty-estimation and calibration programs (see tests/pytorch_programs.py), as their authors write them in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
MC dropout at test time (``eval()``, then ``train()`` on each ``isinstance(m, nn.Dropout)``: an AlphaDropout is no
Dropout and stays off), predictive entropy and mutual information; deep ensembles of heteroscedastic heads (softplus
variances) under ``nn.GaussianNLLLoss(full=True, eps=)``, their Gaussian mixture, and ensembles by
``torch.func.stack_module_state``/``vmap``; SWAG (running moments of ``parameters_to_vector``, a deviation matrix,
samples loaded by ``vector_to_parameters``, a ``LowRankMultivariateNormal``) and SWA/EMA by ``optim.swa_utils`` with
``SWALR`` and ``update_bn``."""

import copy
import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# MC dropout: dropout layers back in training mode at test time, T stochastic passes
# ----------------------------------------------------------------------------------------------


def mc_dropout(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 32), nn.SELU(),
                          nn.AlphaDropout(0.2), nn.Linear(32, 32), nn.ReLU(), nn.Dropout(p=0.2), nn.Linear(32, 3))
    x = torch.randn(10, 4)
    model.eval()

    def enable_dropout(model):
        for mod in model.modules():
            if isinstance(mod, nn.Dropout):
                mod.train()

    enable_dropout(model)
    T = 20
    with torch.no_grad():
        probs = torch.stack([F.softmax(model(x), dim=-1) for _ in range(T)])
    mean = probs.mean(0)
    entropy = -(mean * torch.log(mean + 1e-12)).sum(-1)
    exp_ent = -(probs * torch.log(probs + 1e-12)).sum(-1).mean(0)
    mi = entropy - exp_ent
    var = probs.var(0, unbiased=True)
    conf, pred = mean.max(dim=1)
    flags = [mm.training for mm in model.modules()]
    return dict(probs=probs, entropy=entropy, mi=mi, var=var, conf=conf, pred=pred, flags=flags)


def test_mc_dropout():
    ours, _ = run_both(mc_dropout)
    assert ours["flags"] == [False, False, False, True, False, False, False, False, False, True, False]
    np.testing.assert_allclose(ours["probs"].sum(-1), 1.0, rtol=1e-6)
    assert (ours["mi"] > -1e-6).all() and (ours["entropy"] <= math.log(3) + 1e-6).all()
    assert not np.allclose(ours["probs"][0], ours["probs"][1])  # the passes differ: dropout is on


# ----------------------------------------------------------------------------------------------
# Deep ensembles of heteroscedastic regressors under the Gaussian NLL
# ----------------------------------------------------------------------------------------------


def deep_ensemble(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)

    class Het(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(1, 16), nn.Tanh())
            self.mu = nn.Linear(16, 1)
            self.sig = nn.Linear(16, 1)

        def forward(self, x):
            h = self.body(x)
            return self.mu(h), F.softplus(self.sig(h)) + 1e-6

    x = torch.linspace(-3, 3, 40).unsqueeze(-1)
    y = torch.sin(x) + 0.1 * torch.randn_like(x) * (1 + x.abs())
    crit = nn.GaussianNLLLoss(full=True, eps=1e-6)
    models = [Het() for _ in range(3)]
    losses = []
    for net in models:
        opt = m.optim.Adam(net.parameters(), lr=1e-2)
        for step in range(30):
            opt.zero_grad()
            mu, var = net(x)
            loss = crit(mu, y, var)
            loss.backward()
            opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        mus, vars_ = zip(*[net(x) for net in models])
        mus, vars_ = torch.stack(mus), torch.stack(vars_)
        mix_mu = mus.mean(0)
        mix_var = (vars_ + mus.pow(2)).mean(0) - mix_mu.pow(2)
    v = torch.full((40, 1), 0.5, requires_grad=True)
    l2 = F.gaussian_nll_loss(mix_mu, y, v, full=True, reduction='none')
    g, = torch.autograd.grad(l2.sum(), v)
    v1 = torch.tensor([0.3], requires_grad=True)
    l3 = F.gaussian_nll_loss(mix_mu.squeeze(-1), y.squeeze(-1), v1.expand(40), reduction='sum')
    g3, = torch.autograd.grad(l3, v1)
    l4 = F.gaussian_nll_loss(mix_mu, y, torch.full((40,), 0.2), reduction='mean')  # a variance of one dim fewer
    return dict(losses=torch.stack(losses), mix_mu=mix_mu, mix_var=mix_var, mean_var=vars_.mean(0), y=y, l2=l2, g=g,
                l3=l3, g3=g3, l4=l4)


def test_deep_ensemble():
    ours, _ = run_both(deep_ensemble, rtol=2e-5, atol=2e-6)
    assert (ours["mix_var"] >= ours["mean_var"] - 1e-6).all()  # the mixture adds the spread of the means
    r2 = (ours["y"] - ours["mix_mu"]) ** 2
    np.testing.assert_allclose(ours["l2"], 0.5 * (np.log(0.5) + r2 / 0.5) + 0.5 * math.log(2 * math.pi), rtol=1e-5)
    np.testing.assert_allclose(ours["g"], 0.5 * (1 / 0.5 - r2 / 0.25), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["g3"], [(0.5 * (1 / 0.3 - r2 / 0.09)).sum()], rtol=1e-4)
    np.testing.assert_allclose(ours["l4"], (0.5 * (np.log(0.2) + r2 / 0.2)).mean(), rtol=1e-5)


def gaussian_nll_edges(m):
    """The variance is clamped to eps without a gradient stop (PyTorch clamps a clone under no_grad)."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    mu = torch.randn(5, 3, requires_grad=True)
    y = torch.randn(5, 3)
    var = torch.tensor([[1e-9, 0.5, 2.0]] * 5, requires_grad=True)
    l = F.gaussian_nll_loss(mu, y, var, eps=1e-3, full=True)
    gmu, gvar = torch.autograd.grad(l, (mu, var))
    errors = []
    for bad in [lambda: F.gaussian_nll_loss(mu, y, -var), lambda: F.gaussian_nll_loss(mu, y, torch.ones(5, 2)),
                lambda: F.gaussian_nll_loss(mu, y, var, reduction='bad')]:
        with pytest.raises(ValueError) as info:
            bad()
        errors.append(str(info.value).split(":")[0])
    return dict(l=l, gmu=gmu, gvar=gvar, mu=mu, y=y, errors=errors)


def test_gaussian_nll_edges():
    ours, _ = run_both(gaussian_nll_edges)
    assert ours["errors"] == ["var has negative entry/entries", "var is of incorrect size", "bad is not valid"]
    var = np.maximum(np.array([1e-9, 0.5, 2.0]), 1e-3)
    r2 = (ours["mu"] - ours["y"]) ** 2
    np.testing.assert_allclose(ours["gvar"], 0.5 * (1 / var - r2 / var ** 2) / 15, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# SWAG, and SWA/EMA by optim.swa_utils
# ----------------------------------------------------------------------------------------------


def swag(m):
    torch, nn, F = m.torch, m.nn, m.F
    p2v, v2p = m.nn.utils.parameters_to_vector, m.nn.utils.vector_to_parameters
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    X = torch.randn(64, 3)
    y = (X[:, 0] > 0).long()
    opt = m.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    n_params = sum(p.numel() for p in net.parameters())
    mean = torch.zeros(n_params)
    sq_mean = torch.zeros(n_params)
    K = 5
    cov_mat_sqrt = torch.zeros(0, n_params)
    n = 0
    for epoch in range(8):
        for i in range(0, 64, 16):
            opt.zero_grad()
            F.cross_entropy(net(X[i:i + 16]), y[i:i + 16]).backward()
            opt.step()
        if epoch >= 2:
            w = p2v(net.parameters()).detach()
            mean = mean * n / (n + 1.0) + w / (n + 1.0)
            sq_mean = sq_mean * n / (n + 1.0) + w ** 2 / (n + 1.0)
            dev = (w - mean).view(-1, 1)
            cov_mat_sqrt = torch.cat((cov_mat_sqrt, dev.view(-1, 1).t()), dim=0)
            if cov_mat_sqrt.size(0) > K:
                cov_mat_sqrt = cov_mat_sqrt[1:, :]
            n += 1
    var = torch.clamp(sq_mean - mean ** 2, 1e-30)
    scale = 0.5
    samples = []
    for s in range(4):
        z1 = torch.randn(n_params)
        z2 = cov_mat_sqrt.new_empty((cov_mat_sqrt.size(0),), requires_grad=False).normal_()
        sample = mean + scale ** 0.5 * var.sqrt() * z1 / math.sqrt(2) \
            + scale ** 0.5 * cov_mat_sqrt.t().matmul(z2) / math.sqrt(2 * (K - 1))
        v2p(sample, net.parameters())
        with torch.no_grad():
            samples.append(F.softmax(net(X[:5]), -1))
    shared = net[0].weight.flatten()[0].item() == sample[0].item()
    lr = torch.distributions.LowRankMultivariateNormal(mean, cov_mat_sqrt.t() / math.sqrt(K - 1), var)
    draws = lr.rsample((3,))
    return dict(mean=mean, var=var, dev=cov_mat_sqrt, samples=torch.stack(samples), draws=draws,
                lp=lr.log_prob(draws), ent=lr.entropy(), shared=shared, n=n)


def test_swag():
    ours, _ = run_both(swag)
    assert ours["n"] == 6 and ours["dev"].shape == (5, 50) and ours["shared"] is True
    assert (ours["var"] > 0).all()
    np.testing.assert_allclose(ours["samples"].sum(-1), 1.0, rtol=1e-6)
    cov = ours["dev"].T @ ours["dev"] / 4 + np.diag(ours["var"])  # the low-rank normal's density by NumPy
    r = ours["draws"] - ours["mean"]
    sign, logdet = np.linalg.slogdet(cov.astype(np.float64))
    lp = -0.5 * (np.einsum("ni,ij,nj->n", r, np.linalg.inv(cov.astype(np.float64)), r) + logdet
                 + 50 * math.log(2 * math.pi))
    np.testing.assert_allclose(ours["lp"], lp, rtol=1e-3)


def swa_schedule(m):
    torch, nn, F = m.torch, m.nn, m.F
    swa_utils = m.optim.swa_utils
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    X = torch.randn(40, 3)
    y = (X.sum(1) > 0).long()
    loader = m.data.DataLoader(m.data.TensorDataset(X, y), batch_size=10, shuffle=True)
    opt = m.optim.SGD(net.parameters(), lr=0.1)
    swa_model = swa_utils.AveragedModel(net)
    ema_model = swa_utils.AveragedModel(net, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.9), use_buffers=True)
    sched = m.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    swa_sched = swa_utils.SWALR(opt, swa_lr=0.05, anneal_epochs=2, anneal_strategy='linear')
    lrs = []
    for epoch in range(6):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
            ema_model.update_parameters(net)
        if epoch >= 3:
            swa_model.update_parameters(net)
            swa_sched.step()
        else:
            sched.step()
        lrs.append(opt.param_groups[0]['lr'])
    swa_utils.update_bn(loader, swa_model)
    swa_model.eval()
    ema_model.eval()
    with torch.no_grad():
        a, b = swa_model(X[:4]), ema_model(X[:4])
    return dict(lrs=lrs, a=a, b=b, rm=swa_model.module[1].running_mean, rv=swa_model.module[1].running_var,
                nbt=swa_model.module[1].num_batches_tracked, n=swa_model.n_averaged, en=ema_model.n_averaged,
                ema_rm=ema_model.module[1].running_mean)


def test_swa_and_ema():
    ours, _ = run_both(swa_schedule)
    assert ours["n"] == 3 and ours["en"] == 24 and ours["nbt"] == 4
    cos = [0.05 * (1 + math.cos(math.pi * k / 10)) for k in (1, 2, 3)]
    np.testing.assert_allclose(ours["lrs"][:3], cos, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Ensembles by torch.func, DUQ, heteroscedastic classification, OOD scores, proper scores
# ----------------------------------------------------------------------------------------------


def ensemble_vmap(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(3)
    models = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(5)]
    params, buffers = torch.func.stack_module_state(models)
    base = copy.deepcopy(models[0]).to('meta')

    def fmodel(params, buffers, x):
        return torch.func.functional_call(base, (params, buffers), (x,))

    x = torch.randn(6, 4)
    preds = torch.func.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, x)
    loss = preds.logsumexp(-1).sum()
    grads = torch.autograd.grad(loss, list(params.values()))
    preds2 = torch.func.vmap(fmodel)(params, buffers, torch.randn(5, 6, 4))
    return dict(preds=preds, loop=torch.stack([mm(x) for mm in models]), grads=grads, preds2=preds2,
                names=sorted(params.keys()), rg=[v.requires_grad for v in params.values()])


def test_ensemble_by_vmap():
    ours, _ = run_both(ensemble_vmap)
    np.testing.assert_allclose(ours["preds"], ours["loop"], rtol=1e-6)
    assert ours["names"] == ['0.bias', '0.weight', '2.bias', '2.weight'] and all(ours["rg"])
