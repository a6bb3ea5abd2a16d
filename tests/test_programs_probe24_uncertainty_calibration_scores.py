# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Uncertainty-estimation and calibration programs (see tests/pytorch_programs.py), as their authors write them in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
Temperature scaling by ``optim.LBFGS`` (plain and strong-Wolfe) with the ECE by a loop of bins, by
``bucketize``/``bincount``/``scatter_add_`` and ``histc``; split conformal prediction (``quantile`` in its five
interpolations, APS by ``take_along_dim``/``gather``); ODIN, energy and Mahalanobis out-of-distribution scores with
an AUROC by ``trapz``; CRPS and Brier scores."""

import math

import numpy as np

from .pytorch_programs import run_both

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
