# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Uncertainty-estimation and calibration programs (see tests/pytorch_programs.py), as their authors write them in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants. A
last-layer Laplace approximation (``autograd.functional.hessian`` equal to the GGN by ``jacobian``, ``cholesky``,
``MultivariateNormal(scale_tril=)``, the probit approximation, the marginal likelihood's gradient) and a KFAC one by
forward and full backward hooks, ``kron``, ``eigh`` and ``torch.func.jacrev``; the Laplace bridge; Bayes by Backprop
(softplus ρ, ``kl_divergence``, a scale-mixture prior, ``Independent``), its local reparameterisation, and a weight
posterior as a parametrization."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

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
