# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Uncertainty-estimation and calibration programs (see tests/pytorch_programs.py), as their authors write them in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
Evidential classification (Dirichlet, ``digamma``/``lgamma``, an annealed KL) and regression (Normal-Inverse-Gamma,
``StudentT``); reparameterised Dirichlet and Gamma draws; SNGP (``parametrizations.spectral_norm``, random Fourier
features, a precision matrix, mean-field logits) and the old ``spectral_norm`` hook with its state; DUQ (RBF
centroids updated by EMA, a gradient penalty by double backward); heteroscedastic classification by sampled logits,
focal and label-smoothed losses."""

import copy
import math

import numpy as np
import pytest

from .pytorch_programs import run_both

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
