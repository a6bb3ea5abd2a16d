# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Statistical-inference programs (see tests/pytorch_programs.py), as samplers, filters and tests are written in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
Fitted models and variational inference: Gaussian-mixture EM (``logsumexp``, ``scatter_add_``, ``index_add_``,
``scatter_reduce``, ``bincount``, ``MixtureSameFamily``); mean-field and full-rank ADVI with
``rsample``/``kl_divergence``/``entropy``, an IWAE bound, a score-function estimator, planar flows; empirical Bayes
(beta-binomial by L-BFGS through ``lgamma``, a negative-binomial shape by Newton with ``digamma`` and ``polygamma``);
copulas (Gaussian by ``erf``/``ndtr``/``ndtri``/``erfinv``, Clayton by a gamma frailty, Frank; Kendall's tau,
Spearman's rho), and scores of one parameter after the graph through another was freed; a Gaussian-process regression
by L-BFGS (``cdist``, ``cholesky_inverse``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Gaussian-mixture EM: logsumexp responsibilities, scatter statistics, MixtureSameFamily
# ----------------------------------------------------------------------------------------------


def gmm_em(m, K=3, D=2, N=150):
    torch = m.torch
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [3.0, 3.0], [-3.0, 2.0]], dtype=torch.float64)
    z = torch.randint(0, K, (N,), generator=g)
    X = centres[z] + torch.randn(N, D, generator=g, dtype=torch.float64)
    mu = X[torch.randperm(N, generator=g)[:K]].clone()
    var, pi = torch.ones(K, D, dtype=torch.float64), torch.full((K,), 1.0 / K, dtype=torch.float64)
    lls = []
    for it in range(15):
        lp = torch.distributions.Normal(mu[None], var[None].sqrt()).log_prob(X[:, None]).sum(-1) + pi.log()
        ll = torch.logsumexp(lp, 1)
        lls.append(ll.sum())
        r = (lp - ll[:, None]).exp()
        Nk = r.sum(0)
        mu = (r.T @ X) / Nk[:, None]
        var = (r.T @ X ** 2) / Nk[:, None] - mu ** 2 + 1e-6
        pi = Nk / N
    hard = r.argmax(1)
    index = hard[:, None].expand(-1, D)
    torch.manual_seed(0)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(pi),
        torch.distributions.Independent(torch.distributions.Normal(mu, var.sqrt()), 1))
    return {"X": X, "lls": torch.stack(lls), "mu": mu, "var": var, "pi": pi, "hard": hard,
            "counts": torch.zeros(K, dtype=torch.float64).scatter_add_(0, hard, torch.ones(N, dtype=torch.float64)),
            "sums": torch.zeros(K, D, dtype=torch.float64).index_add_(0, hard, X),
            "sums2": torch.zeros(K, D, dtype=torch.float64).scatter_add(0, index, X),
            "amax": torch.zeros(K, D, dtype=torch.float64).scatter_reduce(0, index, X, reduce="amax",
                                                                          include_self=False),
            "means": torch.zeros(K, D, dtype=torch.float64).scatter_reduce(0, index, X, reduce="mean",
                                                                           include_self=False),
            "bincount": torch.bincount(hard, minlength=K), "weighted": torch.bincount(hard, weights=X[:, 0]),
            "mix_lp": mixture.log_prob(X[:5]), "mix_draws": mixture.sample((4,))}


def test_gaussian_mixture_em():
    ours, _ = run_both(gmm_em, rtol=1e-8, atol=1e-10)
    X, hard, lls = ours["X"], ours["hard"], ours["lls"]
    assert (np.diff(lls) > -1e-9).all()  # EM never lowers the likelihood
    assert ours["pi"].sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(ours["counts"], np.bincount(hard, minlength=3))
    np.testing.assert_array_equal(ours["bincount"], np.bincount(hard, minlength=3))
    for k in range(3):
        np.testing.assert_allclose(ours["sums"][k], X[hard == k].sum(0), rtol=1e-12)
        np.testing.assert_allclose(ours["sums2"][k], X[hard == k].sum(0), rtol=1e-12)
        np.testing.assert_allclose(ours["amax"][k], X[hard == k].max(0), rtol=1e-12)
        np.testing.assert_allclose(ours["means"][k], X[hard == k].mean(0), rtol=1e-12)
    np.testing.assert_allclose(ours["weighted"], np.bincount(hard, weights=X[:, 0]), rtol=1e-12)
    comp = -0.5 * (((X[:5, None] - ours["mu"]) ** 2 / ours["var"]) + np.log(2 * np.pi * ours["var"])).sum(-1)
    np.testing.assert_allclose(ours["mix_lp"], np.log((np.exp(comp) * ours["pi"]).sum(1)), rtol=1e-10)
    assert ours["mix_draws"].shape == (4, 2)


# ----------------------------------------------------------------------------------------------
# Variational inference: mean-field and full-rank ADVI, IWAE, a score-function gradient, planar flows
# ----------------------------------------------------------------------------------------------


def advi(m, N=80, P=3):
    torch, D = m.torch, m.torch.distributions
    torch.manual_seed(0)
    X = torch.randn(N, P)
    y = torch.bernoulli(torch.sigmoid(X @ torch.tensor([1.5, -1.0, 0.5])))
    mu, rho = torch.zeros(P, requires_grad=True), torch.full((P,), -1.0, requires_grad=True)
    opt = m.optim.Adam([mu, rho], lr=0.05)
    prior = D.Normal(torch.zeros(P), torch.ones(P))
    elbos, kls = [], []
    for it in range(40):
        q = D.Normal(mu, m.F.softplus(rho))
        w = q.rsample((8,))
        kl = D.kl_divergence(q, prior).sum()
        elbo = D.Bernoulli(logits=w @ X.T).log_prob(y).sum(-1).mean() - kl
        opt.zero_grad()
        (-elbo).backward()
        opt.step()
        elbos.append(elbo.detach())
        kls.append(kl.detach())
    L_raw = torch.zeros(P, P, requires_grad=True)
    scale_tril = torch.tril(L_raw, -1) + torch.diag_embed(m.F.softplus(torch.diagonal(L_raw)) + 1e-3)
    q2 = D.MultivariateNormal(mu.detach(), scale_tril=scale_tril)
    objective = D.Bernoulli(logits=q2.rsample((4,)) @ X.T).log_prob(y).sum(-1).mean() + q2.entropy()
    g_full, = torch.autograd.grad(objective, L_raw)
    q = D.Normal(mu, m.F.softplus(rho))
    ws = q.rsample((16,))
    logw = D.Bernoulli(logits=ws @ X.T).log_prob(y).sum(-1) + prior.log_prob(ws).sum(-1) - q.log_prob(ws).sum(-1)
    iwae = torch.logsumexp(logw, 0) - math.log(16)
    logits = torch.zeros(5, requires_grad=True)
    qb = D.Bernoulli(logits=logits)
    zs = qb.sample((10,))
    surrogate = (qb.log_prob(zs).sum(-1) * ((zs - 0.3) ** 2).sum(-1).detach()).mean()
    g_score, = torch.autograd.grad(surrogate, logits)
    return {"elbos": torch.stack(elbos), "kls": torch.stack(kls), "mu": mu.detach(),
            "sigma": m.F.softplus(rho).detach(), "g_full": g_full, "iwae": iwae.detach(), "logw": logw.detach(),
            "zs": zs, "g_score": g_score}


def test_advi():
    ours, _ = run_both(advi, rtol=1e-4, atol=1e-5)
    assert ours["elbos"][-5:].mean() > ours["elbos"][:5].mean()
    s, mu = ours["sigma"], ours["mu"]
    kl = 0.5 * (s ** 2 + mu ** 2 - 1 - 2 * np.log(s)).sum()  # KL(N(μ, σ²) ‖ N(0, 1)) by hand, after the last step
    assert ours["kls"][-1] == pytest.approx(kl, rel=0.1)
    assert ours["iwae"] >= ours["logw"].mean() - 1e-4  # the IWAE bound is above the ELBO's estimate
    assert np.tril(ours["g_full"], 1)[0, 1] == 0 and np.abs(np.triu(ours["g_full"], 1)).max() == 0
    zs = ours["zs"]
    f = ((zs - 0.3) ** 2).sum(-1)
    np.testing.assert_allclose(ours["g_score"], ((zs - 0.5) * f[:, None]).mean(0), rtol=1e-5)  # d/dl log p = z - σ(l)


def planar_flows(m, steps=30):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)

    class Planar(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.u = nn.Parameter(torch.randn(d) * 0.1)
            self.w = nn.Parameter(torch.randn(d) * 0.1)
            self.b = nn.Parameter(torch.zeros(1))

        def forward(self, z):
            wu = self.w @ self.u
            u_hat = self.u + (-1 + F.softplus(wu) - wu) * self.w / (self.w ** 2).sum()  # keeps it invertible
            a = z @ self.w + self.b
            psi = (1 - torch.tanh(a) ** 2)[:, None] * self.w
            return z + u_hat * torch.tanh(a)[:, None], torch.log(torch.abs(1 + psi @ u_hat))

    flows = nn.ModuleList([Planar(2) for _ in range(4)])
    opt = m.optim.Adam(flows.parameters(), lr=1e-2)
    base = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    losses = []
    for it in range(steps):
        z = base.sample((64,))
        lq = base.log_prob(z)
        for f in flows:
            z, log_det = f(z)
            lq = lq - log_det
        loss = (lq + 0.5 * ((torch.linalg.vector_norm(z, dim=1) - 2) / 0.4) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def test_planar_flows():
    losses, _ = run_both(planar_flows, rtol=1e-4, atol=5e-5)  # (float32 training: 2e-5 apart on an AVX-512 machine)
    assert losses[-5:].mean() < losses[:5].mean()


# ----------------------------------------------------------------------------------------------
# Empirical Bayes: beta-binomial by L-BFGS through lgamma; a negative-binomial shape by Newton
# ----------------------------------------------------------------------------------------------

EB_K = np.array([12.0, 50.0, 2.0, 44.0, 1.0, 30.0, 27.0, 20.0])
EB_N = np.array([40.0, 90.0, 20.0, 120.0, 15.0, 60.0, 80.0, 30.0])
NB_Y = np.array([0.0, 3.0, 1.0, 7.0, 2.0, 0.0, 4.0, 5.0, 1.0, 2.0])


def empirical_bayes(m):
    torch, D = m.torch, m.torch.distributions
    k, n = torch.tensor(EB_K, dtype=torch.float64), torch.tensor(EB_N, dtype=torch.float64)
    log_ab = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = m.optim.LBFGS([log_ab], lr=1, max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        a, b = log_ab.exp()
        ll = (torch.lgamma(k + a) + torch.lgamma(n - k + b) - torch.lgamma(n + a + b)
              - (torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)))
        loss = -ll.sum()
        loss.backward()
        return loss

    opt.step(closure)
    a, b = log_ab.exp().detach()
    y = torch.tensor(NB_Y, dtype=torch.float64)
    r = torch.tensor(1.0, dtype=torch.float64)
    for _ in range(20):  # the score in r, and its derivative, with ȳ's MLE of the mean plugged in
        p = r / (r + y.mean())
        score = (torch.digamma(y + r) - torch.digamma(r) + torch.log(p)).sum()
        slope = (torch.polygamma(1, y + r) - torch.polygamma(1, r)).sum() + len(y) * (1 / r - 1 / (r + y.mean()))
        r = r - score / slope
    prior, post = D.Beta(a, b), D.Beta(a + k, b + n - k)
    return {"a": a, "b": b, "r": r, "post_mean": post.mean, "post_entropy": post.entropy(),
            "kl": D.kl_divergence(post, prior),
            "nb_lp": D.NegativeBinomial(r, probs=1 - r / (r + y.mean())).log_prob(y)}


def beta_binomial_ll(a, b):
    lg = np.vectorize(math.lgamma)
    return (lg(EB_K + a) + lg(EB_N - EB_K + b) - lg(EB_N + a + b) - lg(a) - lg(b) + lg(a + b)).sum()


def test_empirical_bayes():
    ours, _ = run_both(empirical_bayes, rtol=1e-6, atol=1e-8)
    a, b, h = ours["a"], ours["b"], 1e-6
    for da, db in ((h, 0), (0, h)):  # the maximum in (log a, log b): both partial derivatives vanish
        slope = (beta_binomial_ll(a * math.exp(da), b * math.exp(db))
                 - beta_binomial_ll(a * math.exp(-da), b * math.exp(-db))) / (2 * h)
        assert abs(slope) < 1e-4
    np.testing.assert_allclose(ours["post_mean"], (a + EB_K) / (a + b + EB_N), rtol=1e-12)
    assert (ours["kl"] > 0).all()
    r = ours["r"]
    m = NB_Y.mean()
    lg = np.vectorize(math.lgamma)
    nb = lambda r: (lg(NB_Y + r) - lg(r) + r * np.log(r / (r + m)) + NB_Y * np.log(m / (r + m))).sum()
    assert (nb(r + 1e-5) - nb(r - 1e-5)) / 2e-5 == pytest.approx(0.0, abs=1e-6)  # Newton reached the MLE
    np.testing.assert_allclose(ours["nb_lp"], lg(NB_Y + r) - lg(r) - lg(NB_Y + 1) + r * np.log(r / (r + m))
                               + NB_Y * np.log(m / (r + m)), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Copulas: Gaussian (erf, ndtr, ndtri, erfinv), Clayton by a gamma frailty, Frank
# ----------------------------------------------------------------------------------------------


def copulas(m, n=200):
    torch, D = m.torch, m.torch.distributions
    g = torch.Generator().manual_seed(9)
    rho = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    one = torch.ones((), dtype=torch.float64)
    Sigma = torch.stack([torch.stack([one, rho]), torch.stack([rho, one])])
    z = torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(Sigma).T
    u = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    x = D.Exponential(torch.tensor(2.0, dtype=torch.float64)).icdf(u)  # exponential margins
    zz = torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12))
    log_c = (D.MultivariateNormal(torch.zeros(2, dtype=torch.float64), Sigma).log_prob(zz)
             - D.Normal(0.0, 1.0).log_prob(zz).sum(-1))
    ll = log_c.sum()
    g_rho, = torch.autograd.grad(ll, rho)  # frees u's graph (through rho)
    s1 = torch.sign(x[:, None, 0] - x[None, :, 0])
    s2 = torch.sign(x[:, None, 1] - x[None, :, 1])
    tau = (s1 * s2).triu(1).sum() / (n * (n - 1) / 2)
    ranks = u.argsort(0).argsort(0).double()
    spearman = torch.corrcoef(ranks.T)[0, 1]
    torch.manual_seed(3)
    V = D.Gamma(torch.tensor(0.5), torch.tensor(1.0)).sample((100,))  # Clayton θ = 2: frailty Γ(1/θ, 1)
    E = torch.empty(100, 2).exponential_(generator=g)
    Uc = (1 + E / V[:, None]) ** (-1 / 2.0)
    theta = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    a, b = Uc[:, 0].double(), Uc[:, 1].double()
    clayton = (torch.log1p(theta) - (1 + theta) * (a.log() + b.log())
               - (2 + 1 / theta) * torch.log(a ** -theta + b ** -theta - 1)).sum()
    g_theta, = torch.autograd.grad(clayton, theta)
    # Frank's score on the Gaussian sample's u: its graph through rho is already freed, but theta_f alone is
    # asked for, so the pass never runs those nodes
    theta_f = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    uu, vv = u[:, 0], u[:, 1]
    frank = (torch.log(theta_f) + torch.log(-torch.expm1(-theta_f)) - theta_f * (uu + vv)
             - 2 * torch.log(torch.abs(-torch.expm1(-theta_f) - (-torch.expm1(-theta_f * uu))
                                       * (-torch.expm1(-theta_f * vv))))).sum()
    g_frank, = torch.autograd.grad(frank, theta_f)
    return {"z": z.detach(), "u": u.detach(), "ndtr": torch.special.ndtr(z.detach()), "x": x.detach(),
            "zz": zz.detach(), "erfinv": math.sqrt(2) * torch.erfinv(2 * u.detach() - 1), "ll": ll.detach(),
            "g_rho": g_rho, "tau": tau, "spearman": spearman, "Uc": Uc, "clayton": clayton.detach(),
            "g_theta": g_theta, "frank": frank.detach(), "g_frank": g_frank}


def gaussian_copula_ll(u, rho):
    z = math.sqrt(2) * np.vectorize(_erfinv)(2 * u - 1)
    q = (z[:, 0] ** 2 - 2 * rho * z[:, 0] * z[:, 1] + z[:, 1] ** 2) / (1 - rho ** 2)
    return (-0.5 * math.log(1 - rho ** 2) - 0.5 * q + 0.5 * (z ** 2).sum(1)).sum()


def _erfinv(y):
    """erf⁻¹ by Newton on math.erf (for the NumPy side)."""
    x = 0.0
    for _ in range(100):
        x -= (math.erf(x) - y) / (2 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


def frank_ll(u, t):
    uu, vv = u[:, 0], u[:, 1]
    return (np.log(t) + np.log(-np.expm1(-t)) - t * (uu + vv)
            - 2 * np.log(np.abs(-np.expm1(-t) - (-np.expm1(-t * uu)) * (-np.expm1(-t * vv))))).sum()


def test_copulas():
    ours, _ = run_both(copulas, rtol=1e-6, atol=1e-8)
    u, z = ours["u"], ours["z"]
    np.testing.assert_allclose(ours["ndtr"], u, rtol=1e-12)
    np.testing.assert_allclose(ours["zz"], z, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["erfinv"], z, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["x"], -np.log1p(-u) / 2, rtol=1e-10)
    assert ours["ll"] == pytest.approx(gaussian_copula_ll(u, 0.6), rel=1e-6)
    # dll/drho moves z too (the sample is drawn through rho's Cholesky factor): checked against PyTorch only
    assert np.isfinite(ours["g_rho"])
    assert 0.3 < ours["tau"] < 0.55 and 0.45 < ours["spearman"] < 0.75  # ρ = 0.6: τ = 2 asin(ρ)/π ≈ 0.41
    assert ((0 < ours["Uc"]) & (ours["Uc"] <= 1)).all()
    Uc = ours["Uc"].astype(np.float64)
    clayton = lambda t: (np.log1p(t) - (1 + t) * np.log(Uc).sum(1) - (2 + 1 / t) * np.log((Uc ** -t).sum(1) - 1)).sum()
    assert ours["g_theta"] == pytest.approx((clayton(1.5 + 1e-6) - clayton(1.5 - 1e-6)) / 2e-6, rel=1e-6)
    assert ours["frank"] == pytest.approx(frank_ll(u, 3.0), rel=1e-10)
    assert ours["g_frank"] == pytest.approx((frank_ll(u, 3 + 1e-6) - frank_ll(u, 3 - 1e-6)) / 2e-6, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Gaussian-process regression by L-BFGS on the marginal likelihood
# ----------------------------------------------------------------------------------------------


def gp_data(n=25):
    rng = np.random.default_rng(1)
    X = np.linspace(0, 5, n)[:, None]
    return X, np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)


def gp_regression(m):
    torch = m.torch
    Xn, yn = gp_data()
    X, y = torch.tensor(Xn), torch.tensor(yn)
    n = len(y)
    log_ls, log_sf, log_sn = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.0, 0.0, -1.0))
    opt = m.optim.LBFGS([log_ls, log_sf, log_sn], lr=0.5, max_iter=30, line_search_fn="strong_wolfe")

    def neg_mll():
        K = (log_sf.exp() ** 2 * torch.exp(-0.5 * torch.cdist(X, X) ** 2 / log_ls.exp() ** 2)
             + (log_sn.exp() ** 2 + 1e-6) * torch.eye(n, dtype=torch.float64))
        L = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y[:, None], L)
        loss = 0.5 * (y[:, None] * alpha).sum() + torch.log(torch.diagonal(L)).sum() + n / 2 * math.log(2 * math.pi)
        return loss, L, alpha

    def closure():
        opt.zero_grad()
        loss = neg_mll()[0]
        loss.backward()
        return loss

    opt.step(closure)
    loss, L, alpha = neg_mll()
    grads = torch.autograd.grad(loss, (log_ls, log_sf, log_sn))
    Xs = torch.linspace(0, 6, 7, dtype=torch.float64)[:, None]
    Ks = log_sf.exp() ** 2 * torch.exp(-0.5 * torch.cdist(Xs, X) ** 2 / log_ls.exp() ** 2)
    v = torch.linalg.solve_triangular(L, Ks.T, upper=False)
    return {"loss": loss.detach(), "params": torch.stack([log_ls, log_sf, log_sn]).detach(), "grads": list(grads),
            "mean": (Ks @ alpha).detach()[:, 0], "var": (log_sf.exp() ** 2 - (v ** 2).sum(0)).detach(),
            "Kinv": torch.cholesky_inverse(L).detach(), "L": L.detach()}


def test_gaussian_process_regression():
    ours, _ = run_both(gp_regression, rtol=1e-6, atol=1e-8)
    X, y = gp_data()
    ls, sf, sn = np.exp(ours["params"])
    K = sf ** 2 * np.exp(-0.5 * (X - X.T) ** 2 / ls ** 2) + (sn ** 2 + 1e-6) * np.eye(len(y))
    nll = 0.5 * y @ np.linalg.solve(K, y) + 0.5 * np.linalg.slogdet(K)[1] + len(y) / 2 * math.log(2 * math.pi)
    assert ours["loss"] == pytest.approx(nll, rel=1e-10)
    assert np.abs(ours["grads"]).max() < 1e-3  # a stationary point
    np.testing.assert_allclose(ours["Kinv"], np.linalg.inv(K), rtol=1e-7, atol=1e-9)
    Xs = np.linspace(0, 6, 7)[:, None]
    Ks = sf ** 2 * np.exp(-0.5 * (Xs - X.T) ** 2 / ls ** 2)
    np.testing.assert_allclose(ours["mean"], Ks @ np.linalg.solve(K, y), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["var"], sf ** 2 - np.einsum("ij,ji->i", Ks, np.linalg.solve(K, Ks.T)),
                               rtol=1e-6, atol=1e-9)
    assert np.abs(ours["mean"][:5] - np.sin(Xs[:5, 0])).max() < 0.2
