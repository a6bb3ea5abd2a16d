# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Classical machine learning and Bayesian numerics as GPyTorch / Pyro / scikit-learn-in-torch users write them, run
as tests/probe12_classic_common.py says. Bayesian inference: Bayesian linear regression in closed form (``inv``,
``slogdet``, evidence by Adam and by Bishop's fixed point with ``eigvalsh``); MAP with priors through ``biject_to`` /
``transform_to`` (Normal, HalfCauchy, Gamma, Beta, a ``TransformedDistribution``; ``StudentT`` likelihood) and a
Laplace approximation from ``autograd.functional.hessian``; HMC with ``autograd.grad``; variational Bayesian logistic
regression (Normal guide ``rsample``, analytic KL); Pyro-style Beta / Dirichlet / Gamma guides; a Gibbs sampler
(Categorical, Dirichlet, Normal, Gamma and float64 Bernoulli draws after one seed); a VonMises mixture fitted by
maximum likelihood from VonMises draws."""

import math

import numpy as np

from .probe12_classic_common import TOL, blobs, classification_data
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Bayesian linear regression (Bishop 3.3-3.5): closed-form posterior, evidence maximised over alpha and
# beta by gradient, and by the fixed-point updates through eigvalsh
# ----------------------------------------------------------------------------------------------


def blr_data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    Phi = np.stack([x ** k for k in range(5)], 1)
    w_true = np.array([0.3, -1.0, 0.5, 0.8, 0.0])
    t = Phi @ w_true + 0.2 * rng.standard_normal(n)
    return Phi, t


def bayesian_linear_regression(m):
    torch, optim = m.torch, m.optim
    Phi, t = (torch.from_numpy(a) for a in blr_data())
    N, M = Phi.shape
    log_alpha = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    log_beta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    def posterior(alpha, beta):
        S_N_inv = alpha * torch.eye(M, dtype=torch.float64) + beta * Phi.T @ Phi
        S_N = torch.linalg.inv(S_N_inv)
        m_N = beta * S_N @ Phi.T @ t
        return m_N, S_N, S_N_inv

    def log_evidence(alpha, beta):
        m_N, S_N, A = posterior(alpha, beta)
        E = beta / 2 * (t - Phi @ m_N).pow(2).sum() + alpha / 2 * m_N @ m_N
        sign, logabsdet = torch.linalg.slogdet(A)
        return (M / 2 * torch.log(alpha) + N / 2 * torch.log(beta) - E - 0.5 * logabsdet
                - N / 2 * math.log(2 * math.pi))

    optimizer = optim.Adam([log_alpha, log_beta], lr=0.1)
    evidences = []
    for it in range(25):
        optimizer.zero_grad()
        loss = -log_evidence(log_alpha.exp(), log_beta.exp())
        loss.backward()
        optimizer.step()
        evidences.append(-loss.item())

    # Bishop's fixed-point updates, starting from the same values
    alpha, beta = torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    eig0 = torch.linalg.eigvalsh(Phi.T @ Phi)
    for it in range(10):
        m_N, S_N, _ = posterior(alpha, beta)
        lam = beta * eig0
        gamma = (lam / (alpha + lam)).sum()
        alpha = gamma / (m_N @ m_N)
        beta = (N - gamma) / (t - Phi @ m_N).pow(2).sum()
    m_N, S_N, _ = posterior(alpha, beta)
    phi_star = torch.stack([torch.linspace(-1, 1, 5, dtype=torch.float64) ** k for k in range(M)], 1)
    pred_mean = phi_star @ m_N
    pred_var = 1 / beta + (phi_star @ S_N * phi_star).sum(-1)
    return dict(evidences=evidences, log_alpha=log_alpha.detach(), log_beta=log_beta.detach(),
                alpha=alpha, beta=beta, m_N=m_N, pred_mean=pred_mean, pred_var=pred_var,
                evidence_grad=torch.stack([log_alpha.grad, log_beta.grad]))


def test_bayesian_linear_regression():
    ours, _ = run_both(bayesian_linear_regression, **TOL)
    Phi, t = blr_data()
    alpha, beta = float(ours["alpha"]), float(ours["beta"])
    S_N = np.linalg.inv(alpha * np.eye(5) + beta * Phi.T @ Phi)
    np.testing.assert_allclose(ours["m_N"], beta * S_N @ Phi.T @ t, rtol=1e-9)
    assert ours["evidences"][-1] > ours["evidences"][0]


# ----------------------------------------------------------------------------------------------
# MAP estimation as Pyro / GPyTorch write it: unconstrained parameters pushed through biject_to /
# transform_to(constraint), priors' log_prob (Gamma, HalfCauchy, LogNormal, a TransformedDistribution)
# plus the log |det J| of the transform, a Student-t likelihood, then a Laplace approximation from the
# Hessian of the negative log posterior
# ----------------------------------------------------------------------------------------------


def map_priors(m):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    C = D.constraints
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.uniform(-2, 2, 40))
    y = torch.from_numpy(1.5 * rng.uniform(-2, 2, 40) * 0 + 0.7 * np.sin(np.linspace(0, 6, 40))) + 0.3 * x

    to_pos = D.biject_to(C.positive)
    to_unit = D.transform_to(C.interval(0.0, 1.0))
    to_gt1 = D.biject_to(C.greater_than(1.0))
    unconstrained = {
        "slope": torch.tensor(0.0, dtype=torch.float64, requires_grad=True),
        "sigma": torch.tensor(0.0, dtype=torch.float64, requires_grad=True),
        "tau": torch.tensor(0.0, dtype=torch.float64, requires_grad=True),
        "rho": torch.tensor(0.0, dtype=torch.float64, requires_grad=True),
        "nu": torch.tensor(1.0, dtype=torch.float64, requires_grad=True),
    }
    priors = {
        "slope": D.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)),
        "sigma": D.HalfCauchy(torch.tensor(1.0, dtype=torch.float64)),
        "tau": D.Gamma(torch.tensor(2.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)),
        "rho": D.Beta(torch.tensor(2.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)),
        "nu": D.TransformedDistribution(D.Exponential(torch.tensor(0.1, dtype=torch.float64)),
                                        [D.transforms.AffineTransform(1.0, 1.0)]),
    }
    transforms = {"slope": D.transforms.identity_transform, "sigma": to_pos, "tau": to_pos, "rho": to_unit,
                  "nu": to_gt1}

    def neg_log_posterior(values):
        total = 0.0
        c = {}
        for k, u in values.items():
            t = transforms[k]
            c[k] = t(u)
            total = total + priors[k].log_prob(c[k]) + t.log_abs_det_jacobian(u, c[k])
        f = c["slope"] * x + c["tau"] * torch.sin(c["rho"] * 6 * x)
        lik = D.StudentT(c["nu"], f, c["sigma"]).log_prob(y).sum()
        return -(total + lik)

    optimizer = optim.Adam(list(unconstrained.values()), lr=0.05)
    history = []
    for step in range(40):
        optimizer.zero_grad()
        loss = neg_log_posterior(unconstrained)
        loss.backward()
        optimizer.step()
        history.append(loss.item())

    names = list(unconstrained)
    flat = torch.stack([unconstrained[k].detach() for k in names])
    H = torch.autograd.functional.hessian(lambda v: neg_log_posterior(dict(zip(names, v.unbind()))), flat)
    laplace = D.MultivariateNormal(flat, precision_matrix=H)
    constrained = {k: transforms[k](unconstrained[k]).detach() for k in names}
    lognormal = D.LogNormal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64))
    return dict(history=history, flat=flat, H=H, cov=laplace.covariance_matrix, entropy=laplace.entropy(),
                constrained=constrained, ln=lognormal.log_prob(constrained["sigma"]),
                ln_cdf=lognormal.cdf(constrained["sigma"]),
                hc_icdf=priors["sigma"].icdf(torch.tensor(0.3, dtype=torch.float64)))


def test_map_with_priors_and_laplace():
    ours, _ = run_both(map_priors, **TOL)
    assert ours["history"][-1] < ours["history"][0]
    np.testing.assert_allclose(ours["H"], ours["H"].T, atol=1e-8)
    np.testing.assert_allclose(ours["cov"] @ ours["H"], np.eye(5), atol=1e-8)
    assert 1 < ours["constrained"]["nu"] and 0 < ours["constrained"]["rho"] < 1
    np.testing.assert_allclose(ours["hc_icdf"], math.tan(math.pi * 0.3 / 2), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Hamiltonian Monte Carlo on a Bayesian logistic regression: the potential's gradient by
# torch.autograd.grad, leapfrog steps, Metropolis corrections with uniforms drawn by torch.rand
# ----------------------------------------------------------------------------------------------


def hmc(m):
    torch, F = m.torch, m.F
    D = torch.distributions
    Xn, labels = classification_data(n=50, d=3, seed=9)
    X = torch.from_numpy(Xn)
    yb = torch.from_numpy((labels == 1).astype(np.float64))
    prior = D.Normal(torch.zeros(3, dtype=torch.float64), 2 * torch.ones(3, dtype=torch.float64))

    def potential(q):
        return -(prior.log_prob(q).sum() + D.Bernoulli(logits=X @ q).log_prob(yb).sum())

    def grad_U(q):
        q = q.detach().requires_grad_(True)
        U = potential(q)
        (g,) = torch.autograd.grad(U, q)
        return U.detach(), g

    def leapfrog(q, p, step_size, n_steps):
        U, g = grad_U(q)
        p = p - 0.5 * step_size * g
        for i in range(n_steps):
            q = q + step_size * p
            U, g = grad_U(q)
            if i != n_steps - 1:
                p = p - step_size * g
        p = p - 0.5 * step_size * g
        return q, -p, U

    torch.manual_seed(0)
    q = torch.zeros(3, dtype=torch.float64)
    U_q = potential(q)
    samples, accepts, energies = [], [], []
    for it in range(30):
        p0 = torch.randn(3, dtype=torch.float64)
        q_new, p_new, U_new = leapfrog(q, p0, 0.05, 10)
        H0 = U_q + 0.5 * p0 @ p0
        H1 = U_new + 0.5 * p_new @ p_new
        accept_prob = torch.exp(torch.clamp(H0 - H1, max=0.0))
        if torch.rand(()) < accept_prob:
            q, U_q = q_new, U_new
            accepts.append(1)
        else:
            accepts.append(0)
        samples.append(q.clone())
        energies.append((H1 - H0).item())
    return dict(samples=torch.stack(samples), accepts=accepts, energies=energies)


def test_hmc():
    ours, _ = run_both(hmc, rtol=1e-8, atol=1e-9)
    assert sum(ours["accepts"]) > 15
    assert max(abs(e) for e in ours["energies"]) < 1.0  # leapfrog nearly conserves the energy


# ----------------------------------------------------------------------------------------------
# Mean-field variational Bayesian logistic regression as Pyro's SVI writes it by hand: a Normal guide with
# softplus scales, rsample (several particles), the prior's analytic KL, the Jaakkola-Jordan bound as a
# check, and predictive probabilities by Monte Carlo
# ----------------------------------------------------------------------------------------------


def vb_logistic(m):
    torch, F, optim = m.torch, m.F, m.optim
    D = torch.distributions
    Xn, labels = classification_data(n=60, d=3, classes=2, seed=13)
    X = torch.from_numpy(Xn)
    y = torch.from_numpy(labels.astype(np.float64))
    torch.manual_seed(0)
    q_loc = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    q_rho = torch.full((3,), -1.0, dtype=torch.float64, requires_grad=True)
    prior = D.Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    opt = optim.Adam([q_loc, q_rho], lr=0.05)
    elbos = []
    for step in range(25):
        opt.zero_grad()
        q = D.Normal(q_loc, F.softplus(q_rho))
        w = q.rsample((8,))  # (particles, d)
        log_lik = D.Bernoulli(logits=w @ X.T).log_prob(y).sum(-1).mean()
        kl = D.kl_divergence(q, prior).sum()
        elbo = log_lik - kl
        (-elbo).backward()
        opt.step()
        elbos.append(elbo.item())

    # Jaakkola-Jordan: a lower bound on each sigmoid, tight at xi = sqrt(E[(x.w)^2])
    with torch.no_grad():
        s2 = F.softplus(q_rho).pow(2)
        xi = torch.sqrt((X @ q_loc).pow(2) + (X.pow(2) * s2).sum(-1))
        lam = torch.tanh(xi / 2) / (4 * xi)
        jj = (F.logsigmoid(xi) + (y - 0.5) * (X @ q_loc) - xi / 2).sum() - D.kl_divergence(
            D.Normal(q_loc, s2.sqrt()), prior).sum()
        w = D.Normal(q_loc, s2.sqrt()).sample((200,))
        pred = torch.sigmoid(X[:5] @ w.T).mean(-1)
    return dict(elbos=elbos, q_loc=q_loc.detach(), q_scale=F.softplus(q_rho).detach(), lam=lam, jj=jj,
                pred=pred, grad=torch.cat([q_loc.grad, q_rho.grad]))


def test_vb_logistic():
    ours, _ = run_both(vb_logistic, **TOL)
    assert np.mean(ours["elbos"][-5:]) > np.mean(ours["elbos"][:5])
    assert ours["jj"] <= ours["elbos"][-1] + 5  # the bound is below the likelihood's (noisy) estimate


# ----------------------------------------------------------------------------------------------
# Pyro's "SVI Part I" coin (a Beta guide for a coin's fairness, its parameters kept positive by
# clamping) and a Dirichlet guide for a die, ELBOs by reparameterised draws (Beta / Dirichlet rsample,
# whose gradients are PyTorch's _dirichlet_grad), and a Gamma guide for a Poisson rate
# ----------------------------------------------------------------------------------------------


def pyro_style_guides(m):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    f64 = dict(dtype=torch.float64)
    flips = torch.tensor([1.0] * 6 + [0.0] * 4, **f64)
    rolls = torch.tensor([0, 1, 1, 2, 2, 2, 3, 4, 5, 5, 5, 5])
    counts = torch.tensor([3.0, 5.0, 4.0, 6.0, 2.0], **f64)
    torch.manual_seed(0)

    alpha_q = torch.tensor(15.0, **f64, requires_grad=True)
    beta_q = torch.tensor(15.0, **f64, requires_grad=True)
    conc_q = torch.ones(6, **f64).mul(2).requires_grad_(True)
    shape_q = torch.tensor(2.0, **f64, requires_grad=True)
    rate_q = torch.tensor(1.0, **f64, requires_grad=True)
    opt = optim.Adam([alpha_q, beta_q, conc_q, shape_q, rate_q], lr=0.05, betas=(0.90, 0.999))
    prior_coin = D.Beta(torch.tensor(10.0, **f64), torch.tensor(10.0, **f64))
    prior_die = D.Dirichlet(torch.ones(6, **f64))
    prior_rate = D.Gamma(torch.tensor(2.0, **f64), torch.tensor(0.5, **f64))
    losses, grads = [], []
    for step in range(12):
        opt.zero_grad()
        q_coin = D.Beta(alpha_q, beta_q)
        fairness = q_coin.rsample((4,))  # four particles
        elbo_coin = (D.Bernoulli(fairness.unsqueeze(-1)).log_prob(flips).sum(-1) + prior_coin.log_prob(fairness)
                     - q_coin.log_prob(fairness)).mean()
        q_die = D.Dirichlet(conc_q)
        probs = q_die.rsample((4,))
        elbo_die = (D.Categorical(probs=probs.unsqueeze(1)).log_prob(rolls).sum(-1) + prior_die.log_prob(probs)
                    - q_die.log_prob(probs)).mean()
        q_rate = D.Gamma(shape_q, rate_q)
        rate = q_rate.rsample((4,))
        elbo_rate = (D.Poisson(rate.unsqueeze(-1)).log_prob(counts).sum(-1) + prior_rate.log_prob(rate)
                     - q_rate.log_prob(rate)).mean()
        loss = -(elbo_coin + elbo_die + elbo_rate)
        loss.backward()
        grads.append(torch.cat([alpha_q.grad.view(1), beta_q.grad.view(1), conc_q.grad, shape_q.grad.view(1),
                                rate_q.grad.view(1)]).clone())
        opt.step()
        with torch.no_grad():  # Pyro's constraint.positive, done by hand
            for p in (alpha_q, beta_q, conc_q, shape_q, rate_q):
                p.clamp_(min=1e-3)
        losses.append(loss.item())
    return dict(losses=losses, grads=torch.stack(grads), alpha_q=alpha_q.detach(), beta_q=beta_q.detach(),
                conc_q=conc_q.detach(), shape_rate=torch.stack([shape_q, rate_q]).detach())


def test_pyro_style_beta_dirichlet_gamma_guides():
    ours, theirs = run_both(pyro_style_guides, compare=False)
    assert ours["conc_q"].argmax() == 5  # the die's guide leans to the face rolled most
    if theirs is not None:
        # Beta and Dirichlet draws carry PyTorch's gradient (its _dirichlet_grad), to rounding
        for key in ("alpha_q", "beta_q", "conc_q"):
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(ours["grads"][:, :8], theirs["grads"][:, :8], rtol=1e-10, atol=1e-12)
        # a Gamma draw's gradient is exact here, PyTorch's a fitted approximation (about 1e-4 apart): see
        # autograd/ops/standard_gamma.py
        np.testing.assert_allclose(ours["grads"][:, 8:], theirs["grads"][:, 8:], rtol=2e-3, atol=1e-3)
        np.testing.assert_allclose(ours["losses"], theirs["losses"], rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# A Gibbs sampler (collapsed-free, conjugate) for a Bayesian mixture with spike-and-slab feature selection:
# Categorical(probs).sample for the assignments, Dirichlet / Normal / Gamma draws for the parameters,
# Bernoulli(probs).sample in float64 for the inclusion indicators; every draw after one seed is PyTorch's
# ----------------------------------------------------------------------------------------------


def gibbs_mixture(m):
    torch = m.torch
    D = torch.distributions
    f64 = dict(dtype=torch.float64)
    x = torch.from_numpy(blobs(n=60, seed=15)[0][:, 0].copy())  # one dimension: three clusters
    n, K = x.shape[0], 3
    torch.manual_seed(0)
    alpha0, mu0, kappa0, a0, b0 = 1.0, 0.0, 0.1, 2.0, 2.0
    z = torch.randint(0, K, (n,))
    mu = torch.tensor([-3.0, 0.0, 3.0], **f64)
    tau = torch.ones(K, **f64)
    pi = torch.full((K,), 1.0 / K, **f64)
    traces = []
    for sweep in range(15):
        log_r = pi.log() + D.Normal(mu, tau.rsqrt()).log_prob(x.unsqueeze(-1))
        z = D.Categorical(logits=log_r).sample()
        counts = torch.bincount(z, minlength=K).to(torch.float64)
        pi = D.Dirichlet(alpha0 + counts).sample()
        sums = torch.zeros(K, **f64).index_add_(0, z, x)
        kappa_n = kappa0 + counts
        mu_n = (kappa0 * mu0 + sums) / kappa_n
        mu = D.Normal(mu_n, (kappa_n * tau).rsqrt()).sample()
        sq = torch.zeros(K, **f64).scatter_add_(0, z, (x - mu[z]) ** 2)
        tau = D.Gamma(a0 + counts / 2, b0 + sq / 2 + kappa0 * (mu - mu0) ** 2 / 2).sample()
        traces.append(torch.cat([pi, mu, tau]))

    # spike and slab: which of 4 regressors enter, by Bernoulli draws of their posterior inclusion odds
    rng = np.random.default_rng(16)
    X = torch.from_numpy(rng.standard_normal((40, 4)))
    y = X @ torch.tensor([1.5, 0.0, -2.0, 0.0], **f64) + 0.3 * torch.from_numpy(rng.standard_normal(40))
    gamma = torch.ones(4, **f64)
    beta = torch.zeros(4, **f64)
    inclusions = []
    for sweep in range(10):
        for j in range(4):
            resid = y - X @ (beta * gamma) + X[:, j] * beta[j] * gamma[j]
            prec = 1.0 + X[:, j] @ X[:, j] / 0.09
            mean = (X[:, j] @ resid / 0.09) / prec
            log_odds = 0.5 * mean ** 2 * prec - 0.5 * torch.log(prec) + math.log(0.5 / 0.5)
            gamma[j] = D.Bernoulli(probs=torch.sigmoid(log_odds)).sample()
            beta[j] = D.Normal(mean, prec.rsqrt()).sample() if gamma[j] else D.Normal(
                torch.tensor(0.0, **f64), torch.tensor(1.0, **f64)).sample()
        inclusions.append(gamma.clone())
    return dict(traces=torch.stack(traces), z=z, inclusions=torch.stack(inclusions), beta=beta)


def test_gibbs_mixture_and_spike_and_slab():
    ours, _ = run_both(gibbs_mixture, **TOL)
    np.testing.assert_allclose(ours["traces"][:, :3].sum(1), 1, rtol=1e-12)
    np.testing.assert_array_equal(ours["inclusions"][-1], [1, 0, 1, 0])


# ----------------------------------------------------------------------------------------------
# Circular statistics: wind directions drawn from a VonMises mixture, its concentration and mean direction
# fitted by maximum likelihood (log_prob through the Bessel functions), against the closed-form estimates
# ----------------------------------------------------------------------------------------------


def von_mises_fit(m):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    f64 = dict(dtype=torch.float64)
    torch.manual_seed(0)
    angles = torch.cat([D.VonMises(torch.tensor(1.0, **f64), torch.tensor(4.0, **f64)).sample((150,)),
                        D.VonMises(torch.tensor(-2.0, **f64), torch.tensor(8.0, **f64)).sample((100,))])
    loc = torch.tensor([0.5, -1.5], **f64, requires_grad=True)
    log_kappa = torch.zeros(2, **f64, requires_grad=True)
    logits = torch.zeros(2, **f64, requires_grad=True)
    opt = optim.Adam([loc, log_kappa, logits], lr=0.05)
    nlls = []
    for step in range(40):
        opt.zero_grad()
        mix = D.MixtureSameFamily(D.Categorical(logits=logits), D.VonMises(loc, log_kappa.exp()))
        nll = -mix.log_prob(angles).mean()
        nll.backward()
        opt.step()
        nlls.append(nll.item())
    # the first component's closed-form mean direction from its own draws
    first = angles[:150]
    mean_dir = torch.atan2(first.sin().mean(), first.cos().mean())
    R = torch.sqrt(first.sin().mean() ** 2 + first.cos().mean() ** 2)
    return dict(angles=angles, nlls=nlls, loc=loc.detach(), kappa=log_kappa.exp().detach(), mean_dir=mean_dir, R=R)


def test_von_mises_mixture_fit():
    ours, _ = run_both(von_mises_fit, rtol=1e-6, atol=1e-8)  # (ln I0: exact here, a 1e-7 fit in PyTorch)
    assert np.all((-np.pi <= ours["angles"]) & (ours["angles"] < np.pi))
    assert abs(ours["mean_dir"] - 1.0) < 0.2
    assert ours["nlls"][-1] < ours["nlls"][0]
