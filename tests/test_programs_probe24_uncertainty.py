# ruff: noqa: B007, B008, B023, E741, E731, F841, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Uncertainty-estimation and calibration programs (see tests/pytorch_programs.py), as their authors write them in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.

MC dropout at test time (``eval()``, then ``train()`` on each ``isinstance(m, nn.Dropout)``: an AlphaDropout is
no Dropout and stays off), predictive entropy and mutual information; deep ensembles of heteroscedastic heads
(softplus variances) under ``nn.GaussianNLLLoss(full=True, eps=)``, their Gaussian mixture, and ensembles by
``torch.func.stack_module_state``/``vmap``; temperature scaling by ``optim.LBFGS`` (plain and strong-Wolfe) with
the ECE by a loop of bins, by ``bucketize``/``bincount``/``scatter_add_`` and ``histc``; SWAG (running moments of
``parameters_to_vector``, a deviation matrix, samples loaded by ``vector_to_parameters``, a
``LowRankMultivariateNormal``) and SWA/EMA by ``optim.swa_utils`` with ``SWALR`` and ``update_bn``; a last-layer
Laplace approximation (``autograd.functional.hessian`` equal to the GGN by ``jacobian``, ``cholesky``,
``MultivariateNormal(scale_tril=)``, the probit approximation, the marginal likelihood's gradient) and a KFAC one
by forward and full backward hooks, ``kron``, ``eigh`` and ``torch.func.jacrev``; the Laplace bridge; Bayes by
Backprop (softplus ρ, ``kl_divergence``, a scale-mixture prior, ``Independent``), its local reparameterisation,
and a weight posterior as a parametrization; evidential classification (Dirichlet, ``digamma``/``lgamma``, an
annealed KL) and regression (Normal-Inverse-Gamma, ``StudentT``); reparameterised Dirichlet and Gamma draws;
split conformal prediction (``quantile`` in its five interpolations, APS by ``take_along_dim``/``gather``); SNGP
(``parametrizations.spectral_norm``, random Fourier features, a precision matrix, mean-field logits) and the old
``spectral_norm`` hook with its state; DUQ (RBF centroids updated by EMA, a gradient penalty by double backward);
heteroscedastic classification by sampled logits, focal and label-smoothed losses; ODIN, energy and Mahalanobis
out-of-distribution scores with an AUROC by ``trapz``; CRPS and Brier scores."""

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
# Temperature scaling by L-BFGS, ECE three ways
# ----------------------------------------------------------------------------------------------


def temp_scaling(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(2)
    logits = torch.randn(200, 5) * 3
    labels = torch.randint(0, 5, (200,))
    labels = torch.where(torch.rand(200) < 0.6, logits.argmax(1), labels)
    temperature = nn.Parameter(torch.ones(1) * 1.5)
    nll = nn.CrossEntropyLoss()
    opt = m.optim.LBFGS([temperature], lr=0.01, max_iter=50)

    def eval_():
        opt.zero_grad()
        loss = nll(logits / temperature, labels)
        loss.backward()
        return loss

    before = nll(logits, labels).item()
    opt.step(eval_)
    after = nll(logits / temperature, labels).item()

    def ece(logits, labels, n_bins=15):
        sm = F.softmax(logits, dim=1)
        conf, pred = torch.max(sm, 1)
        acc = pred.eq(labels)
        bounds = torch.linspace(0, 1, n_bins + 1)
        e = torch.zeros(1)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            in_bin = conf.gt(lo.item()) * conf.le(hi.item())
            prop = in_bin.float().mean()
            if prop.item() > 0:
                e += torch.abs(conf[in_bin].mean() - acc[in_bin].float().mean()) * prop
        return e

    def ece_bucketize(logits, labels, n_bins=15):
        conf, pred = F.softmax(logits, -1).max(-1)
        acc = (pred == labels).float()
        edges = torch.linspace(0, 1, n_bins + 1)
        idx = torch.bucketize(conf, edges[1:-1], right=False)
        counts = torch.bincount(idx, minlength=n_bins).float()
        s_conf = torch.zeros(n_bins).scatter_add_(0, idx, conf)
        s_acc = torch.zeros(n_bins).index_add_(0, idx, acc)
        h = torch.histc(conf, bins=n_bins, min=0, max=1)
        mask = counts > 0
        return (torch.abs(s_conf[mask] - s_acc[mask])).sum() / conf.numel(), h, counts

    e1 = ece(logits / temperature.detach(), labels)
    e2, h, counts = ece_bucketize(logits / temperature.detach(), labels)
    return dict(T=temperature.detach(), before=before, after=after, e1=e1, e2=e2, h=h, counts=counts,
                state=sorted(opt.state_dict()['state'][0].keys()))


def test_temperature_scaling():
    ours, _ = run_both(temp_scaling)
    assert ours["after"] < ours["before"] and ours["T"][0] > 1.5  # over-confident logits are cooled
    np.testing.assert_allclose(ours["e1"], [ours["e2"]], rtol=1e-5)
    assert ours["counts"].sum() == 200 and ours["h"].sum() == 200
    assert ours["state"] == ['H_diag', 'al', 'd', 'func_evals', 'n_iter', 'old_dirs', 'old_stps', 'prev_flat_grad',
                             'prev_loss', 'ro', 't']


def lbfgs_wolfe_scaling(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(6)
    logits = (torch.randn(100, 4) * 4).double()  # (float32 ends a few rounding steps apart at the flat minimum)
    labels = torch.randint(0, 4, (100,))
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = m.optim.LBFGS([log_t], lr=1, max_iter=100, line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    W = torch.eye(4, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt2 = m.optim.LBFGS([W, b], lr=0.5, max_iter=20, history_size=5)

    def matrix_scaling():
        opt2.zero_grad()
        l = F.cross_entropy(logits @ W + b, labels)
        l.backward()
        return l

    l0 = F.cross_entropy(logits, labels).item()
    l2 = opt2.step(matrix_scaling)
    final = F.cross_entropy(logits / log_t.exp(), labels)
    g, = torch.autograd.grad(final, log_t)
    st = opt.state[log_t]
    return dict(T=log_t.exp(), W=W, b=b, l0=l0, l2=l2, g=g, fe=st['func_evals'], it=st['n_iter'])


def test_lbfgs_strong_wolfe_scaling():
    ours, _ = run_both(lbfgs_wolfe_scaling, rtol=1e-6, atol=1e-8)
    assert abs(ours["g"][0]) < 1e-5 and ours["T"][0] > 1  # a stationary temperature
    assert ours["fe"] == 14 and ours["it"] == 14


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
# Laplace: last layer (Hessian = GGN for a logistic head), KFAC by hooks, the Laplace bridge
# ----------------------------------------------------------------------------------------------


def laplace_last_layer(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(4)
    feat = nn.Sequential(nn.Linear(2, 6), nn.Tanh())
    head = nn.Linear(6, 1)
    X = torch.randn(50, 2)
    y = ((X ** 2).sum(1) < 1).float()
    opt = m.optim.Adam(list(feat.parameters()) + list(head.parameters()), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(head(feat(X)).squeeze(-1), y).backward()
        opt.step()
    with torch.no_grad():
        phi = feat(X)
    w_map = torch.cat([head.weight.detach().flatten(), head.bias.detach()])
    prior_prec = 1.0

    def neg_log_post(w):
        logits = phi @ w[:-1] + w[-1]
        return F.binary_cross_entropy_with_logits(logits, y, reduction='sum') + 0.5 * prior_prec * (w ** 2).sum()

    H = torch.autograd.functional.hessian(neg_log_post, w_map)
    phi1 = torch.cat([phi, torch.ones(50, 1)], 1)

    def f(w):
        return phi1 @ w

    J = torch.autograd.functional.jacobian(f, w_map)
    p = torch.sigmoid(f(w_map))
    GGN = J.t() @ torch.diag(p * (1 - p)) @ J + prior_prec * torch.eye(7)
    L = torch.linalg.cholesky(H)
    Sigma = torch.cholesky_inverse(L)
    post = torch.distributions.MultivariateNormal(w_map, scale_tril=torch.linalg.cholesky(Sigma))
    torch.manual_seed(5)
    ws = post.sample((100,))
    Xt = torch.randn(7, 2)
    with torch.no_grad():
        phit = torch.cat([feat(Xt), torch.ones(7, 1)], 1)
    mc = torch.sigmoid(phit @ ws.t()).mean(1)
    f_mu = phit @ w_map
    f_var = ((phit @ Sigma) * phit).sum(-1)
    kappa = 1 / torch.sqrt(1 + math.pi / 8 * f_var)
    probit = torch.sigmoid(kappa * f_mu)
    log_prior_prec = torch.zeros((), requires_grad=True)
    pp = log_prior_prec.exp()
    Hp = GGN - prior_prec * torch.eye(7) + pp * torch.eye(7)
    lml = (-neg_log_post(w_map).detach() - 0.5 * (pp - prior_prec) * (w_map ** 2).sum() + 0.5 * 7 * torch.log(pp)
           - 0.5 * torch.logdet(Hp))
    g, = torch.autograd.grad(lml, log_prior_prec)
    return dict(H=H, GGN=GGN, L=L, Sigma=Sigma, ws=ws, mc=mc, probit=probit, lml=lml, g=g, w_map=w_map,
                lp=post.log_prob(ws[:3]), ent=post.entropy())


def test_last_layer_laplace():
    ours, _ = run_both(laplace_last_layer, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(ours["H"], ours["GGN"], rtol=1e-4, atol=1e-5)  # a logistic head: Hessian = GGN
    np.testing.assert_allclose(ours["L"] @ ours["L"].T, ours["H"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["Sigma"] @ ours["H"], np.eye(7), atol=1e-4)
    assert np.abs(ours["mc"] - ours["probit"]).max() < 0.1  # MacKay's probit approximation of the MC average
    H = ours["GGN"].astype(np.float64)
    g = -0.5 * (ours["w_map"] ** 2).sum() + 3.5 - 0.5 * np.trace(np.linalg.inv(H))  # d lml / d log(prior precision)
    np.testing.assert_allclose(ours["g"], g, rtol=1e-3)
    ent = 0.5 * 7 * (1 + math.log(2 * math.pi)) + 0.5 * np.linalg.slogdet(np.linalg.inv(H))[1]
    np.testing.assert_allclose(ours["ent"], ent, rtol=1e-4)


def kfac_laplace(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    X = torch.randn(20, 3)
    y = torch.randint(0, 2, (20,))
    acts, gouts = {}, {}

    def fwd_hook(mod, inp, out):
        acts[mod] = inp[0].detach()

    def bwd_hook(mod, gin, gout):
        gouts[mod] = gout[0].detach()

    handles = []
    for mod in net.modules():
        if isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(fwd_hook))
            handles.append(mod.register_full_backward_hook(bwd_hook))
    out = net(X)
    probs = F.softmax(out, -1)
    ys = torch.multinomial(probs.detach(), 1).squeeze(-1)  # labels drawn from the model: the Fisher, not the EF
    F.cross_entropy(out, ys, reduction='sum').backward()
    factors = []
    for mod in net.modules():
        if isinstance(mod, nn.Linear):
            a = torch.cat([acts[mod], torch.ones(acts[mod].size(0), 1)], 1)
            g = gouts[mod]
            A = a.t() @ a / a.size(0)
            G = g.t() @ g / g.size(0)
            la, Qa = torch.linalg.eigh(A)
            lg, Qg = torch.linalg.eigh(G)
            factors.append((A, G, la, lg, torch.kron(G, A), torch.kron(lg, la).max()))
    for h in handles:
        h.remove()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(p, x):
        return torch.func.functional_call(net, p, (x,))

    J = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, X)
    Jw = J['2.weight'].reshape(20, 2, -1)
    P = F.softmax(f(params, X), -1)
    Hl = torch.diag_embed(P) - P.unsqueeze(-1) * P.unsqueeze(-2)
    ggn = torch.einsum('nci,ncd,ndj->ij', Jw, Hl, Jw)
    w, b = net[2].weight.detach(), net[2].bias.detach()
    h1 = net[:2](X).detach()

    def nll(w, b):
        return F.cross_entropy(h1 @ w.t() + b, y, reduction='sum')

    Hwb = torch.autograd.functional.hessian(nll, (w, b), vectorize=True)
    Hwb2 = torch.autograd.functional.hessian(nll, (w, b), vectorize=True, outer_jacobian_strategy='forward-mode')
    Jac = torch.autograd.functional.jacobian(lambda w: F.softmax(h1 @ w.t() + b, -1), w, vectorize=True,
                                             strategy='forward-mode')
    return dict(factors=factors, ggn=ggn, Hww=Hwb[0][0], Hwb=Hwb[0][1], Hbb=Hwb[1][1], Hbw2=Hwb2[1][0], Jac=Jac,
                handles=len(net[0]._forward_hooks) + len(net[0]._backward_hooks))


def test_kfac_laplace():
    ours, _ = run_both(kfac_laplace, rtol=2e-5, atol=2e-6)
    assert ours["handles"] == 0
    for A, G, la, lg, kron, top in ours["factors"]:
        np.testing.assert_allclose(kron, np.kron(G, A), rtol=1e-6)
        assert la.min() > -1e-5 and lg.min() > -1e-6  # covariances
    np.testing.assert_allclose(ours["ggn"], ours["Hww"].reshape(10, 10), rtol=1e-4, atol=1e-5)  # CE: Hessian = GGN
    np.testing.assert_allclose(ours["Hbw2"], np.swapaxes(ours["Hwb"], 0, 2).transpose(0, 2, 1), rtol=1e-5, atol=1e-6)


def laplace_bridge(m):
    torch, nn, F = m.torch, m.nn, m.F
    D = torch.distributions
    torch.manual_seed(1)
    K = 4
    mu = torch.randn(6, K, requires_grad=True)
    A = torch.randn(6, K, K)
    Sigma = A @ A.transpose(-1, -2) + 0.1 * torch.eye(K)
    var = torch.diagonal(Sigma, dim1=-2, dim2=-1)
    sum_exp = torch.exp(-mu).sum(dim=1, keepdim=True)
    alpha = 1 / var * (1 - 2 / K + torch.exp(mu) / K ** 2 * sum_exp)
    d = D.Dirichlet(alpha)
    mean = d.mean
    g, = torch.autograd.grad(mean[:, 0].sum() + d.entropy().sum(), mu)
    mvn = D.MultivariateNormal(mu, covariance_matrix=Sigma)
    s = mvn.rsample((50,))
    mc = F.softmax(s, -1).mean(0)
    kappa = 1 / torch.sqrt(1 + math.pi / 8 * var)
    probit = F.softmax(kappa * mu, -1)
    L, info = torch.linalg.cholesky_ex(Sigma)
    bad = Sigma.clone()
    bad[0] = -bad[0]
    L2, info2 = torch.linalg.cholesky_ex(bad)
    with pytest.raises(RuntimeError, match=r"linalg.cholesky: \(Batch element 0\): The factorization could not"):
        torch.linalg.cholesky(bad)
    lp = mvn.log_prob(s[:3])
    gl, = torch.autograd.grad(lp.sum(), mu)
    return dict(alpha=alpha, mean=mean, g=g, mc=mc, probit=probit, L=L, info=info, info2=info2, lp=lp, gl=gl, s=s,
                Sigma=Sigma, var_mvn=mvn.variance, ent=mvn.entropy())


def test_laplace_bridge():
    ours, _ = run_both(laplace_bridge, rtol=2e-5, atol=2e-6)
    assert (ours["alpha"] > 0).all() and ours["info"].tolist() == [0] * 6 and ours["info2"].tolist()[0] == 1
    np.testing.assert_allclose(ours["mean"], ours["alpha"] / ours["alpha"].sum(-1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(ours["var_mvn"], np.diagonal(ours["Sigma"], axis1=1, axis2=2), rtol=1e-6)
    # log N(s; μ, Σ) of a reparameterised draw s = μ + L ε depends on ε only: no gradient reaches μ
    np.testing.assert_allclose(ours["gl"], 0.0, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Bayes by Backprop: softplus ρ, kl_divergence, a scale mixture prior; local reparameterisation;
# a weight posterior as a parametrization
# ----------------------------------------------------------------------------------------------


def bayes_by_backprop(m):
    torch, nn, F = m.torch, m.nn, m.F
    D = torch.distributions
    torch.manual_seed(6)

    class BayesLinear(nn.Module):
        def __init__(self, i, o, prior_sigma=1.0):
            super().__init__()
            self.w_mu = nn.Parameter(torch.empty(o, i).uniform_(-0.2, 0.2))
            self.w_rho = nn.Parameter(torch.empty(o, i).uniform_(-5, -4))
            self.b_mu = nn.Parameter(torch.empty(o).uniform_(-0.2, 0.2))
            self.b_rho = nn.Parameter(torch.empty(o).uniform_(-5, -4))
            self.prior = D.Normal(0, prior_sigma)

        def forward(self, x):
            w_sigma = F.softplus(self.w_rho)
            b_sigma = torch.log1p(torch.exp(self.b_rho))
            w = self.w_mu + w_sigma * torch.randn_like(w_sigma)
            b = self.b_mu + b_sigma * torch.randn_like(b_sigma)
            q_w, q_b = D.Normal(self.w_mu, w_sigma), D.Normal(self.b_mu, b_sigma)
            self.kl = D.kl_divergence(q_w, self.prior).sum() + D.kl_divergence(q_b, self.prior).sum()
            return F.linear(x, w, b)

    l1, l2 = BayesLinear(2, 10), BayesLinear(10, 2)
    X = torch.randn(32, 2)
    y = (X[:, 0] * X[:, 1] > 0).long()
    params = list(l1.parameters()) + list(l2.parameters())
    opt = m.optim.Adam(params, lr=0.02)
    hist = []
    for step in range(15):
        opt.zero_grad()
        out = l2(torch.relu(l1(X)))
        kl = (l1.kl + l2.kl) / 32
        loss = F.cross_entropy(out, y) + kl
        loss.backward()
        hist.append(loss.detach())
        opt.step()
    grads = [p.grad.clone() for p in params]
    pi, s1, s2 = 0.5, 1.0, math.exp(-6)
    w = l1.w_mu
    mix = torch.logsumexp(torch.stack([math.log(pi) + D.Normal(0, s1).log_prob(w),
                                       math.log(1 - pi) + D.Normal(0, s2).log_prob(w)]), 0).sum()
    gmix, = torch.autograd.grad(mix, w)
    sigma = F.softplus(l1.w_rho)
    qi = D.Independent(D.Normal(l1.w_mu, sigma), 2)
    pi_ = D.Independent(D.Normal(torch.zeros_like(l1.w_mu), torch.ones_like(l1.w_mu)), 2)
    return dict(hist=torch.stack(hist), grads=grads, mix=mix, gmix=gmix, kli=D.kl_divergence(qi, pi_),
                mu=l1.w_mu, sigma=sigma, kl1=l1.kl)


def test_bayes_by_backprop():
    ours, _ = run_both(bayes_by_backprop)
    mu, s = ours["mu"].astype(np.float64), ours["sigma"].astype(np.float64)
    np.testing.assert_allclose(ours["kli"], (np.log(1 / s) + (s ** 2 + mu ** 2) / 2 - 0.5).sum(), rtol=1e-5)
    assert np.isfinite(ours["hist"]).all() and ours["kl1"] > 0


def bbb_local_reparam(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(2)

    class LRTLinear(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.W_mu = nn.Parameter(torch.Tensor(o, i))
            self.W_rho = nn.Parameter(torch.Tensor(o, i))
            self.b_mu = nn.Parameter(torch.Tensor(o))
            self.b_rho = nn.Parameter(torch.Tensor(o))
            self.reset_parameters()

        def reset_parameters(self):
            self.W_mu.data.normal_(0, 0.1)
            self.W_rho.data.normal_(-3, 0.1)
            self.b_mu.data.normal_(0, 0.1)
            self.b_rho.data.normal_(-3, 0.1)

        def forward(self, x, sample=True):
            W_sigma = torch.log1p(torch.exp(self.W_rho))
            b_sigma = torch.log1p(torch.exp(self.b_rho))
            act_mu = F.linear(x, self.W_mu, self.b_mu)
            act_var = 1e-16 + F.linear(x ** 2, W_sigma ** 2, b_sigma ** 2)
            act_std = torch.sqrt(act_var)
            if self.training or sample:
                eps = torch.empty(act_mu.size()).normal_(0, 1)
                return act_mu + act_std * eps
            return act_mu

        def kl_loss(self, prior_sigma=0.1):
            W_sigma = torch.log1p(torch.exp(self.W_rho))
            return 0.5 * (2 * torch.log(prior_sigma / W_sigma) - 1 + (W_sigma / prior_sigma).pow(2)
                          + (self.W_mu / prior_sigma).pow(2)).sum()

    net = nn.Sequential(LRTLinear(4, 8), nn.ReLU(), LRTLinear(8, 1))
    X = torch.randn(16, 4)
    y = X[:, :1] * 2
    opt = m.optim.Adam(net.parameters(), lr=0.01)
    hist, norms = [], []
    for it in range(10):
        opt.zero_grad()
        nll = F.mse_loss(net(X), y, reduction='sum')
        kl = sum(l.kl_loss() for l in net if isinstance(l, LRTLinear))
        elbo = nll + kl / 16
        elbo.backward()
        norms.append(nn.utils.clip_grad_norm_(net.parameters(), 5.0))
        opt.step()
        hist.append(elbo.detach())
    net.eval()
    preds = torch.stack([net(X) for _ in range(10)])
    return dict(hist=torch.stack(hist), norms=torch.stack(norms), mean=preds.mean(0), std=preds.std(0),
                g=[p.grad for p in net.parameters()])


def test_bbb_local_reparameterisation():
    ours, _ = run_both(bbb_local_reparam, rtol=2e-5, atol=2e-6)
    clipped = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in ours["g"]))
    assert clipped <= 5.0 + 1e-4 and (ours["norms"] > 5).all()  # every step's gradient was clipped to norm 5
    assert (ours["std"] > 0).all()


def bayes_parametrize(m):
    torch, nn, F = m.torch, m.nn, m.F
    P = nn.utils.parametrize
    torch.manual_seed(4)

    class Reparam(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.rho = nn.Parameter(torch.full(shape, -3.0))

        def forward(self, mu):
            return mu + F.softplus(self.rho) * torch.randn_like(mu)

    lin = nn.Linear(3, 2)
    P.register_parametrization(lin, 'weight', Reparam((2, 3)))
    x = torch.randn(5, 3)
    y1, y2 = lin(x), lin(x)
    (y1.sum() + y2.sum()).backward()
    names = sorted(n for n, _ in lin.named_parameters())
    return dict(y1=y1, y2=y2, go=lin.parametrizations.weight.original.grad, x=x,
                grho=lin.parametrizations.weight[0].rho.grad, names=names, isp=P.is_parametrized(lin))


def test_weight_posterior_as_parametrization():
    ours, _ = run_both(bayes_parametrize)
    assert ours["names"] == ['bias', 'parametrizations.weight.0.rho', 'parametrizations.weight.original']
    np.testing.assert_allclose(ours["go"], np.tile(2 * ours["x"].sum(0), (2, 1)), rtol=1e-5)  # two passes
    assert not np.allclose(ours["y1"], ours["y2"])  # each call draws new weights


# ----------------------------------------------------------------------------------------------
# Evidential deep learning: Dirichlet classification, Normal-Inverse-Gamma regression
# ----------------------------------------------------------------------------------------------


def evidential_cls(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(7)
    K = 4
    net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, K))
    X = torch.randn(40, 3)
    y = torch.randint(0, K, (40,))
    Y = F.one_hot(y, K).float()

    def kl_dir(alpha):
        ones = torch.ones([1, K], dtype=torch.float32)
        S = torch.sum(alpha, dim=1, keepdim=True)
        first = (torch.lgamma(S) - torch.lgamma(alpha).sum(dim=1, keepdim=True)
                 - torch.lgamma(ones.sum(dim=1, keepdim=True)))
        second = ((alpha - ones).mul(torch.digamma(alpha) - torch.digamma(S))).sum(dim=1, keepdim=True)
        return first + second

    def edl_loss(out, Y, epoch, fn):
        activations = {'relu': F.relu, 'exp': lambda o: torch.exp(torch.clamp(o, -10, 10)), 'softplus': F.softplus}
        evidence = activations[fn](out)
        alpha = evidence + 1
        S = alpha.sum(1, keepdim=True)
        A = torch.sum(Y * (torch.digamma(S) - torch.digamma(alpha)), dim=1, keepdim=True)
        mse = ((Y - alpha / S) ** 2).sum(1, keepdim=True) \
            + (alpha * (S - alpha) / (S * S * (S + 1))).sum(1, keepdim=True)
        ann = torch.min(torch.tensor(1.0, dtype=torch.float32), torch.tensor(epoch / 10, dtype=torch.float32))
        kl_alpha = (alpha - 1) * (1 - Y) + 1
        return torch.mean(A + ann * kl_dir(kl_alpha)), torch.mean(mse)

    opt = m.optim.Adam(net.parameters(), lr=1e-2, weight_decay=0.005)
    hist = []
    for epoch in range(12):
        opt.zero_grad()
        loss, mse = edl_loss(net(X), Y, epoch, ['relu', 'exp', 'softplus'][epoch % 3])
        (loss + mse).backward()
        opt.step()
        hist.append(loss.detach())
    with torch.no_grad():
        alpha = F.softplus(net(X)) + 1
        S = alpha.sum(-1)
        d = torch.distributions.Dirichlet(alpha)
        kl = torch.distributions.kl_divergence(d, torch.distributions.Dirichlet(torch.ones(K)))
        p = alpha / S.unsqueeze(-1)
        out = dict(hist=torch.stack(hist), u=K / S, p=p, ent=d.entropy(), draws=d.sample((2,)), kl=kl,
                   lpd=d.log_prob(p), kl_fn=kl_dir(alpha).squeeze(-1))
    return out


def test_evidential_classification():
    ours, _ = run_both(evidential_cls)
    assert ((ours["u"] > 0) & (ours["u"] <= 1)).all()
    np.testing.assert_allclose(ours["p"].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ours["draws"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ours["kl"], ours["kl_fn"], rtol=1e-4, atol=1e-5)  # the hand-written KL to Dir(1)


def evidential_reg(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(8)

    class NIG(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(1, 32), nn.ReLU())
            self.out = nn.Linear(32, 4)

        def forward(self, x):
            gamma, lognu, logalpha, logbeta = torch.split(self.out(self.body(x)), 1, dim=-1)
            return gamma, F.softplus(lognu), F.softplus(logalpha) + 1, F.softplus(logbeta)

    def nig_nll(y, gamma, v, alpha, beta):
        twoBlambda = 2 * beta * (1 + v)
        nll = 0.5 * torch.log(np.pi / v) - alpha * torch.log(twoBlambda) \
            + (alpha + 0.5) * torch.log(v * (y - gamma) ** 2 + twoBlambda) \
            + torch.lgamma(alpha) - torch.lgamma(alpha + 0.5)
        return nll

    net = NIG()
    x = torch.linspace(-4, 4, 64).view(-1, 1)
    y = x ** 3 / 20 + torch.randn(64, 1) * 0.3
    opt = m.optim.Adam(net.parameters(), lr=5e-3)
    hist = []
    for _ in range(20):
        opt.zero_grad()
        g, v, a, b = net(x)
        loss = nig_nll(y, g, v, a, b).mean() + 0.01 * (torch.abs(y - g) * (2 * v + a)).mean()
        loss.backward()
        opt.step()
        hist.append(loss.detach())
    with torch.no_grad():
        g, v, a, b = net(x)
        st = torch.distributions.StudentT(2 * a, g, torch.sqrt(b * (1 + v) / (v * a)))
        return dict(hist=torch.stack(hist), al=b / (a - 1), ep=b / (v * (a - 1)), lp=st.log_prob(y),
                    nll=nig_nll(y, g, v, a, b))


def test_evidential_regression():
    ours, _ = run_both(evidential_reg)
    assert (ours["al"] > 0).all() and (ours["ep"] > 0).all()
    np.testing.assert_allclose(-ours["lp"], ours["nll"], rtol=1e-4, atol=1e-5)  # the NIG marginal is a Student t


def reparameterised_draws(m):
    torch = m.torch
    torch.manual_seed(2)
    conc = torch.tensor([[0.5, 1.0, 2.0], [3.0, 0.2, 1.5]], requires_grad=True)
    x = torch.distributions.Dirichlet(conc).rsample()
    g, = torch.autograd.grad((x * torch.tensor([1.0, 2.0, 3.0])).sum(), conc)
    g0, = torch.autograd.grad(torch.distributions.Dirichlet(conc).rsample().sum(), conc)
    ga = torch.distributions.Gamma(conc, torch.ones(3)).rsample()
    g2, = torch.autograd.grad(ga.sum(), conc)
    b = torch.distributions.Beta(conc[:, 0], conc[:, 1]).rsample()
    g3, = torch.autograd.grad(b.sum(), conc)
    return dict(x=x, g=g, g0=g0, ga=ga, g2=g2, b=b, g3=g3)


def test_reparameterised_dirichlet_and_gamma():
    ours, _ = run_both(reparameterised_draws, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["x"].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ours["g0"], 0.0, atol=1e-6)  # a draw on the simplex sums to 1 whatever α
    assert (ours["g2"] > 0).all()  # a larger shape draws larger (implicit reparameterisation)


# ----------------------------------------------------------------------------------------------
# Split conformal prediction (LABEL and APS scores)
# ----------------------------------------------------------------------------------------------


def conformal(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(9)
    n = 500
    smx = F.softmax(torch.randn(n, 10) * 2, -1)
    labels = torch.multinomial(smx, 1).squeeze(-1)
    alpha = 0.1
    cal, val = smx[:300], smx[300:]
    cal_labels, val_labels = labels[:300], labels[300:]
    scores = 1 - cal[torch.arange(300), cal_labels]
    q_level = math.ceil((300 + 1) * (1 - alpha)) / 300
    qs = {mode: torch.quantile(scores, q_level, interpolation=mode)
          for mode in ['linear', 'lower', 'higher', 'midpoint', 'nearest']}
    qhat = torch.quantile(scores, q_level, interpolation='higher')
    sets = val >= (1 - qhat)
    cov = sets[torch.arange(200), val_labels].float().mean()
    pi = cal.argsort(1, descending=True)
    srt = torch.take_along_dim(cal, pi, dim=1).cumsum(dim=1)
    cal_scores = torch.gather(srt, 1, pi.argsort(1))[torch.arange(300), cal_labels]
    qa = torch.quantile(cal_scores, q_level, interpolation='higher')
    vpi = val.argsort(1, descending=True)
    vsrt = torch.take_along_dim(val, vpi, dim=1).cumsum(dim=1)
    aps_sets = torch.gather(vsrt <= qa, 1, vpi.argsort(1))
    qv = torch.quantile(smx, torch.tensor([0.1, 0.5, 0.9]), dim=1, keepdim=True)
    nq = torch.nanquantile(torch.where(smx > 0.5, float('nan'), smx), 0.3, dim=0)
    return dict(qs=qs, qhat=qhat, scores=scores, cov=cov, sizes=sets.sum(1), aps=aps_sets.sum(1),
                cal_scores=cal_scores, qv=qv, nq=nq, sets_dtype=str(sets.dtype).split('.')[-1])


def test_split_conformal():
    ours, _ = run_both(conformal)
    s = np.sort(ours["scores"])
    r = math.ceil(301 * 0.9) / 300 * 299
    lo, hi = s[math.floor(r)], s[math.ceil(r)]
    np.testing.assert_allclose([ours["qs"][k] for k in ('lower', 'higher', 'midpoint', 'linear')],
                               [lo, hi, (lo + hi) / 2, lo + (r - math.floor(r)) * (hi - lo)], rtol=1e-6)
    assert ours["qhat"] == hi and ours["sets_dtype"] == "bool"
    assert ours["cov"] >= 0.8 and (ours["sizes"] >= 0).all()
    assert ours["qv"].shape == (3, 500, 1)


# ----------------------------------------------------------------------------------------------
# SNGP: spectral-normalised features, a random-Fourier-feature GP head; the old spectral_norm hook
# ----------------------------------------------------------------------------------------------


def sngp(m):
    torch, nn, F = m.torch, m.nn, m.F
    SN = nn.utils.parametrizations.spectral_norm
    torch.manual_seed(10)

    class RFFGP(nn.Module):
        def __init__(self, d, n_feat=64, n_cls=2, ridge=1.0):
            super().__init__()
            self.register_buffer('W', torch.randn(n_feat, d))
            self.register_buffer('b', torch.rand(n_feat) * 2 * math.pi)
            self.beta = nn.Linear(n_feat, n_cls, bias=False)
            self.register_buffer('precision', ridge * torch.eye(n_feat))
            self.n_feat = n_feat

        def features(self, h):
            return math.sqrt(2.0 / self.n_feat) * torch.cos(F.linear(h, self.W, self.b))

        def forward(self, h, update_prec=False, return_cov=False):
            phi = self.features(h)
            logits = self.beta(phi)
            if update_prec:
                with torch.no_grad():
                    self.precision += phi.t() @ phi
            if return_cov:
                return logits, phi @ torch.linalg.solve(self.precision, phi.t())
            return logits

    body = nn.Sequential(SN(nn.Linear(2, 32)), nn.ReLU(), SN(nn.Linear(32, 32), n_power_iterations=2), nn.ReLU())
    gp = RFFGP(32)
    X = torch.randn(64, 2)
    y = (X[:, 0] > 0).long()
    opt = m.optim.SGD(list(body.parameters()) + list(gp.parameters()), lr=0.05)
    hist = []
    for ep in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(gp(body(X), update_prec=(ep == 5)), y)
        loss.backward()
        opt.step()
        hist.append(loss.detach())
    body.eval()
    with torch.no_grad():
        logits, cov = gp(body(X[:8]), return_cov=True)
        var = torch.diagonal(cov)
        probs = (logits / torch.sqrt(1 + math.pi / 8 * var).unsqueeze(-1)).softmax(-1)
        sig = torch.linalg.matrix_norm(body[0].weight, ord=2)
    return dict(hist=torch.stack(hist), probs=probs, var=var, sig=sig,
                names=sorted(n for n, _ in body.named_parameters()),
                sd=sorted(body.state_dict().keys()), u=body[2].parametrizations.weight[0]._u)


def test_sngp():
    ours, _ = run_both(sngp)
    assert abs(ours["sig"] - 1) < 0.05  # the power iteration's estimate of the top singular value
    assert (ours["var"] > 0).all() and (ours["var"] < 1).all()
    np.testing.assert_allclose(ours["probs"].sum(-1), 1.0, rtol=1e-6)
    assert ours["sd"] == ['0.bias', '0.parametrizations.weight.0._u', '0.parametrizations.weight.0._v',
                          '0.parametrizations.weight.original', '2.bias', '2.parametrizations.weight.0._u',
                          '2.parametrizations.weight.0._v', '2.parametrizations.weight.original']


def old_spectral_norm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(5)
    lin = nn.utils.spectral_norm(nn.Linear(5, 4))
    conv = nn.utils.spectral_norm(nn.Conv2d(2, 3, 3), n_power_iterations=2)
    x, xi = torch.randn(2, 5), torch.randn(1, 2, 6, 6)
    y, yc = lin(x), conv(xi)
    (y.sum() + yc.sum()).backward()
    keys = sorted(lin.state_dict().keys())
    lin.eval()
    y2 = lin(x)
    lin2 = nn.utils.spectral_norm(nn.Linear(5, 4))
    lin2.load_state_dict(copy.deepcopy(lin.state_dict()))
    lin2.eval()
    y3 = lin2(x)
    with pytest.raises(RuntimeError, match="Only Tensors created explicitly by the user"):
        copy.deepcopy(conv)  # its weight is computed, as PyTorch's
    g = lin.weight_orig.grad
    nn.utils.remove_spectral_norm(lin)
    pc = nn.utils.parametrizations.spectral_norm(nn.Conv2d(2, 3, 3))
    ypc = pc(xi)
    with nn.utils.parametrize.cached():
        yy = pc(xi) + pc(xi)
    return dict(y=y, yc=yc, g=g, gc=conv.weight_orig.grad, keys=keys, y2=y2, y3=y3, wl=lin.weight, ypc=ypc, yy=yy,
                u=conv.weight_u, v=conv.weight_v, names=sorted(n for n, _ in lin.named_parameters()))


def test_old_spectral_norm():
    ours, _ = run_both(old_spectral_norm)
    assert ours["keys"] == ['bias', 'weight_orig', 'weight_u', 'weight_v'] and ours["names"] == ['bias', 'weight']
    np.testing.assert_allclose(ours["y3"], ours["y2"], rtol=1e-6)  # the state dict carries u and v
    np.testing.assert_allclose(np.linalg.norm(ours["u"]), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ours["yy"], 2 * ours["ypc"], rtol=1e-6)


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


def duq(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)

    class DUQ(nn.Module):
        def __init__(self, n_cls=3, emb=8, feat=16, l=0.1, gamma=0.999):
            super().__init__()
            self.gamma, self.sigma = gamma, l
            self.fe = nn.Sequential(nn.Linear(2, feat), nn.ReLU())
            self.W = nn.Parameter(torch.normal(torch.zeros(emb, n_cls, feat), 0.05))
            self.register_buffer('N', torch.ones(n_cls) * 12)
            self.register_buffer('m', torch.normal(torch.zeros(emb, n_cls), 1))
            self.m = self.m * self.N.unsqueeze(0)

        def embed(self, x):
            return torch.einsum('ij,mnj->imn', x, self.W)

        def bilinear(self, z):
            diff = z - (self.m / self.N.unsqueeze(0)).unsqueeze(0)
            return (-(diff ** 2)).mean(1).div(2 * self.sigma ** 2).exp()

        def forward(self, x):
            return self.bilinear(self.embed(self.fe(x)))

        def update(self, x, y):
            z = self.embed(self.fe(x))
            self.N = self.gamma * self.N + (1 - self.gamma) * y.sum(0)
            self.m = self.gamma * self.m + (1 - self.gamma) * torch.einsum('ijk,ik->jk', z, y)

    net = DUQ()
    X = torch.randn(32, 2)
    y = F.one_hot((X[:, 0] > 0).long() + (X[:, 1] > 0).long(), 3).float()
    opt = m.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    hist = []
    for step in range(5):
        opt.zero_grad()
        x = X.clone().requires_grad_(True)
        yp = net(x)
        loss = F.binary_cross_entropy(yp, y)
        gradients = torch.autograd.grad(outputs=yp, inputs=x, grad_outputs=torch.ones_like(yp), create_graph=True)[0]
        gp = ((gradients.flatten(start_dim=1).norm(2, dim=1) - 1) ** 2).mean()
        (loss + 0.5 * gp).backward()
        opt.step()
        with torch.no_grad():
            net.update(X, y)
        hist.append(torch.stack([loss.detach(), gp.detach()]))
    return dict(hist=torch.stack(hist), W=net.W, m=net.m, N=net.N, grad=net.W.grad,
                buffers=sorted(k for k, _ in net.named_buffers()))


def test_duq():
    ours, _ = run_both(duq)
    assert ours["buffers"] == ['N', 'm']
    assert ((ours["hist"][:, 0] > 0) & (ours["hist"][:, 1] >= 0)).all()


def hetero_cls(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(2)
    net = nn.Linear(4, 6)
    X = torch.randn(16, 4)
    y = torch.randint(0, 3, (16,))
    out = net(X)
    mu, sigma = out[:, :3], torch.exp(out[:, 3:])
    eps = torch.randn((25,) + mu.shape)
    log_probs = F.log_softmax(mu.unsqueeze(0) + sigma.unsqueeze(0) * eps, -1)
    lp = torch.logsumexp(log_probs.gather(-1, y.view(1, -1, 1).expand(25, -1, 1)).squeeze(-1), 0) - math.log(25)
    loss = -lp.mean()
    loss.backward()
    logits2 = net(X)[:, :3]
    ls = F.cross_entropy(logits2, y, label_smoothing=0.1)
    logpt = F.log_softmax(logits2, 1).gather(1, y.view(-1, 1)).view(-1)
    focal = (-1 * (1 - logpt.exp()) ** 3 * logpt).mean()
    g = torch.autograd.grad(ls + focal, net.weight)[0]
    ls_by_hand = (0.9 * F.nll_loss(F.log_softmax(logits2, 1), y) - 0.1 / 3 * F.log_softmax(logits2, 1).sum(1).mean())
    return dict(loss=loss, gw=net.weight.grad, gb=net.bias.grad, ls=ls, ls_by_hand=ls_by_hand, focal=focal, g=g)


def test_heteroscedastic_classification():
    ours, _ = run_both(hetero_cls)
    np.testing.assert_allclose(ours["ls"], ours["ls_by_hand"], rtol=1e-6)
    assert np.abs(ours["gb"][3:]).sum() > 0  # the noise scale is trained through the sampled logits


def ood_scores(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    X_in, X_out = torch.randn(30, 5).double(), (torch.randn(30, 5) * 3 + 2).double()
    T, eps = 1000.0, 0.0014

    def odin(x):
        x = x.clone().requires_grad_(True)
        out = net(x) / T
        loss = F.cross_entropy(out, out.argmax(1))
        loss.backward()
        grad_sign = (torch.ge(x.grad.data, 0).float() - 0.5) * 2
        xt = torch.add(x.data, grad_sign, alpha=-eps)
        with torch.no_grad():
            return F.softmax(net(xt) / T, 1).max(1)[0]

    s_in, s_out = odin(X_in), odin(X_out)
    with torch.no_grad():
        e_in, e_out = torch.logsumexp(net(X_in), dim=1), torch.logsumexp(net(X_out), dim=1)
    scores = torch.cat([e_in, e_out])
    labels = torch.cat([torch.ones(30), torch.zeros(30)])
    order = torch.argsort(scores, descending=True, stable=True)
    tps, fps = torch.cumsum(labels[order], 0), torch.cumsum(1 - labels[order], 0)
    tpr, fpr = torch.cat([torch.zeros(1), tps / tps[-1]]), torch.cat([torch.zeros(1), fps / fps[-1]])
    feats = net[:2](X_in).detach()
    ys = torch.randint(0, 3, (30,))
    means = torch.stack([feats[ys == c].mean(0) for c in range(3)])
    centred = feats - means[ys]
    cov = centred.t() @ centred / 30
    prec = torch.linalg.pinv(cov + 1e-3 * torch.eye(16), hermitian=True)
    d = net[:2](X_out).detach().unsqueeze(1) - means.unsqueeze(0)
    maha = torch.einsum('nci,ij,ncj->nc', d, prec, d).min(1).values
    return dict(s_in=s_in, s_out=s_out, e_in=e_in, e_out=e_out, auroc=torch.trapz(tpr, fpr),
                auroc2=torch.trapezoid(tpr, x=fpr), cov=cov, cov2=torch.cov(centred.t(), correction=0), maha=maha)


def test_ood_scores():
    ours, _ = run_both(ood_scores, rtol=1e-6, atol=1e-8)
    e_in, e_out = ours["e_in"], ours["e_out"]
    auroc = (e_in[:, None] > e_out[None, :]).mean() + 0.5 * (e_in[:, None] == e_out[None, :]).mean()  # Mann-Whitney
    np.testing.assert_allclose(ours["auroc"], auroc, rtol=1e-6)  # (float32: the labels' dtype)
    np.testing.assert_allclose(ours["auroc2"], ours["auroc"])
    np.testing.assert_allclose(ours["cov"], ours["cov2"], rtol=1e-10, atol=1e-12)


def proper_scores(m):
    torch, nn, F = m.torch, m.nn, m.F
    D = torch.distributions
    torch.manual_seed(1)
    mu = torch.randn(20, requires_grad=True)
    sigma = torch.rand(20).add(0.2).requires_grad_()
    y = torch.randn(20)
    z = (y - mu) / sigma
    n = D.Normal(0, 1)
    crps = sigma * (z * (2 * n.cdf(z) - 1) + 2 * torch.exp(n.log_prob(z)) - 1 / math.sqrt(math.pi))
    g = torch.autograd.grad(crps.mean(), (mu, sigma))
    icdf = D.Normal(mu, sigma).icdf(torch.tensor([0.05, 0.95]).unsqueeze(-1))
    p = F.softmax(torch.randn(20, 4), -1)
    lab = torch.randint(0, 4, (20,))
    hist = torch.histogram(p.max(-1).values, bins=5, range=(0., 1.))
    return dict(crps=crps, g=g, icdf=icdf, brier=((p - F.one_hot(lab, 4)) ** 2).sum(-1).mean(), mu=mu, sigma=sigma,
                y=y, ent=D.Categorical(probs=p).entropy(), entr=torch.special.entr(p).sum(-1),
                xl=-torch.xlogy(p, p).sum(-1), hist=hist.hist, edges=hist.bin_edges,
                bk=torch.bucketize(torch.tensor([0.0, 0.2, 0.5, 1.0]), torch.tensor([0.2, 0.5]), right=True,
                                   out_int32=True))


def test_proper_scores():
    ours, _ = run_both(proper_scores)
    from math import erf
    mu, s, y = (ours[k].astype(np.float64) for k in ("mu", "sigma", "y"))
    z = (y - mu) / s
    cdf = 0.5 * (1 + np.vectorize(erf)(z / math.sqrt(2)))
    pdf = np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(ours["crps"], s * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi)), rtol=1e-5)
    np.testing.assert_allclose(ours["g"][0], -(2 * cdf - 1) / 20, rtol=1e-4, atol=1e-6)  # dCRPS/dμ = -(2Φ(z) - 1)
    np.testing.assert_allclose(ours["ent"], ours["entr"], rtol=1e-6)
    np.testing.assert_allclose(ours["xl"], ours["entr"], rtol=1e-6)
    assert ours["bk"].tolist() == [0, 1, 2, 2] and ours["bk"].dtype == np.int32 and ours["hist"].sum() == 20
