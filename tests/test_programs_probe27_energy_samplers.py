# ruff: noqa: B007, B023  (the programs are kept as their authors wrote them)
"""Energy-based models and gradient-based samplers (see tests/pytorch_programs.py), as their authors write them in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
Samplers: Hamiltonian Monte Carlo of vectorised chains (leapfrog, Metropolis by ``rand``/``where``) on a
``MultivariateNormal``, and its energy conservation; a small NUTS (Hoffman and Gelman's naive recursion with a slice
variable); annealed importance sampling (``logsumexp`` weights, the log normaliser of a Gaussian); unadjusted and
Metropolis-adjusted Langevin on ``torch.distributions``, and a checkpoint of an EBM with its replay buffer in a
deque; chains vectorised by ``torch.func.vmap`` (``randomness="different"``) and an old Riemannian-HMC metric
(SoftAbs)."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Hamiltonian Monte Carlo: vectorised chains, leapfrog, Metropolis by rand/where
# ----------------------------------------------------------------------------------------------


def hmc_chains(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    target = D.MultivariateNormal(torch.zeros(2), covariance_matrix=cov)

    def log_prob_and_grad(q):
        q = q.detach().requires_grad_(True)
        lp = target.log_prob(q)
        (g,) = torch.autograd.grad(lp.sum(), q)
        return lp.detach(), g

    def leapfrog(q, p, step, n_steps):
        _, g = log_prob_and_grad(q)
        p = p + 0.5 * step * g
        for i in range(n_steps):
            q = q + step * p
            _, g = log_prob_and_grad(q)
            if i != n_steps - 1:
                p = p + step * g
        p = p + 0.5 * step * g
        return q, -p

    n_chains = 16
    q = torch.randn(n_chains, 2) * 3
    samples, accepts = [], []
    for it in range(30):
        p0 = torch.randn_like(q)
        lp0, _ = log_prob_and_grad(q)
        q_new, p_new = leapfrog(q, p0, 0.25, 8)
        lp1, _ = log_prob_and_grad(q_new)
        h0 = -lp0 + 0.5 * (p0 ** 2).sum(-1)
        h1 = -lp1 + 0.5 * (p_new ** 2).sum(-1)
        log_accept = torch.clamp(h0 - h1, max=0.0)
        accept = torch.log(torch.rand(n_chains)) < log_accept
        q = torch.where(accept.unsqueeze(-1), q_new, q)
        accepts.append(accept.float().mean())
        samples.append(q.clone())
    s = torch.stack(samples[10:]).reshape(-1, 2)
    return dict(q=q, rate=torch.stack(accepts), mean=s.mean(0), cov=torch.cov(s.T), is_bool=accept.dtype == torch.bool)


def test_hmc_chains():
    ours, _ = run_both(hmc_chains, rtol=1e-4, atol=1e-5)
    assert ours["is_bool"] is True
    assert ours["rate"].mean() > 0.5
    np.testing.assert_allclose(ours["cov"], [[1.0, 0.8], [0.8, 1.0]], atol=0.45)


def hmc_energy_conservation(m):
    torch = m.torch
    torch.manual_seed(1)
    prec = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)

    def U(q):
        return 0.5 * torch.einsum("...i,ij,...j->...", q, prec, q)

    def grad_U(q):
        q = q.detach().requires_grad_()
        return torch.autograd.grad(U(q).sum(), q)[0]

    q = torch.randn(4, 2, dtype=torch.float64)
    p = torch.randn(4, 2, dtype=torch.float64)
    H0 = U(q) + 0.5 * (p * p).sum(-1)
    eps = 0.01
    for _ in range(100):
        p = p - eps / 2 * grad_U(q)
        q = q + eps * p
        p = p - eps / 2 * grad_U(q)
    H1 = U(q) + 0.5 * (p * p).sum(-1)
    return dict(H0=H0, H1=H1, q=q, g=grad_U(q))


def test_hmc_energy_conservation():
    ours, _ = run_both(hmc_energy_conservation, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["H1"], ours["H0"], rtol=1e-3)
    prec = np.array([[2.0, 0.3], [0.3, 0.5]])
    np.testing.assert_allclose(ours["g"], ours["q"] @ prec, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# NUTS (Hoffman & Gelman, Algorithm 2, naive): recursive doubling with a slice variable
# ----------------------------------------------------------------------------------------------


def naive_nuts(m):
    torch = m.torch
    torch.manual_seed(2)
    mu = torch.tensor([1.0, -1.0], dtype=torch.float64)
    scale = torch.tensor([1.0, 0.5], dtype=torch.float64)
    dist = torch.distributions.Independent(torch.distributions.Normal(mu, scale), 1)

    def logp_grad(theta):
        theta = theta.detach().requires_grad_(True)
        lp = dist.log_prob(theta)
        g, = torch.autograd.grad(lp, theta)
        return lp.item(), g

    def leapfrog(theta, r, eps):
        _, g = logp_grad(theta)
        r = r + 0.5 * eps * g
        theta = theta + eps * r
        lp, g = logp_grad(theta)
        r = r + 0.5 * eps * g
        return theta, r, lp

    def build_tree(theta, r, logu, v, j, eps):
        if j == 0:
            theta1, r1, lp1 = leapfrog(theta, r, v * eps)
            joint = lp1 - 0.5 * torch.dot(r1, r1).item()
            n1 = int(logu <= joint)
            s1 = int(logu < joint + 1000.0)
            return theta1, r1, theta1, r1, [theta1], n1, s1
        tm, rm, tp, rp, C, n1, s1 = build_tree(theta, r, logu, v, j - 1, eps)
        if v == -1:
            tm, rm, _, _, C2, n2, s2 = build_tree(tm, rm, logu, v, j - 1, eps)
        else:
            _, _, tp, rp, C2, n2, s2 = build_tree(tp, rp, logu, v, j - 1, eps)
        d = tp - tm
        s = s1 * s2 * int(torch.dot(d, rm).item() >= 0) * int(torch.dot(d, rp).item() >= 0)
        return tm, rm, tp, rp, C + C2, n1 + n2, s

    theta = torch.zeros(2, dtype=torch.float64)
    draws, depths = [], []
    for it in range(12):
        r0 = torch.randn(2, dtype=torch.float64)
        lp0, _ = logp_grad(theta)
        logu = lp0 - 0.5 * torch.dot(r0, r0).item() + torch.log(torch.rand(1, dtype=torch.float64)).item()
        tm, rm, tp, rp, j, C, n, s = theta, r0, theta, r0, 0, [theta], 1, 1
        while s == 1 and j < 5:
            v = 1 if torch.rand(1).item() < 0.5 else -1
            if v == -1:
                tm, rm, _, _, C2, n2, s2 = build_tree(tm, rm, logu, v, j, 0.3)
            else:
                _, _, tp, rp, C2, n2, s2 = build_tree(tp, rp, logu, v, j, 0.3)
            if s2 == 1:
                C = C + C2
            n = n + n2
            d = tp - tm
            s = s2 * int(torch.dot(d, rm).item() >= 0) * int(torch.dot(d, rp).item() >= 0)
            j += 1
        # uniform choice among the slice's members
        lps = torch.tensor([logp_grad(c)[0] for c in C], dtype=torch.float64)
        rs = torch.stack(C)
        ok = torch.nonzero(lps >= logu - 50).flatten()
        idx = ok[torch.randint(len(ok), (1,))].item()
        theta = rs[idx]
        draws.append(theta)
        depths.append(j)
    return dict(draws=torch.stack(draws), depths=depths)


def test_naive_nuts():
    ours, _ = run_both(naive_nuts, rtol=1e-10, atol=1e-12)
    assert ours["draws"].shape == (12, 2) and np.isfinite(ours["draws"]).all()
    assert 1 <= min(ours["depths"]) and max(ours["depths"]) <= 5


# ----------------------------------------------------------------------------------------------
# Annealed importance sampling (Neal) with MALA transitions; the log normaliser of a Gaussian
# ----------------------------------------------------------------------------------------------


def annealed_importance_sampling(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(0)
    p0 = D.Normal(torch.zeros(2), 3 * torch.ones(2))

    def log_f1(x):  # unnormalised N(1, 0.5^2 I): Z = 2 pi 0.25
        return -0.5 * ((x - 1.0) ** 2 / 0.25).sum(-1)

    betas = torch.linspace(0, 1, 25)
    n, tau = 200, 0.05
    x = p0.sample((n,))
    logw = torch.zeros(n)
    accepted = []
    for b0, b1 in zip(betas[:-1], betas[1:]):
        logw = logw + (b1 - b0) * (log_f1(x) - p0.log_prob(x).sum(-1))

        def log_target(z):
            return (1 - b1) * p0.log_prob(z).sum(-1) + b1 * log_f1(z)

        for _ in range(2):
            x = x.detach().requires_grad_()
            lt = log_target(x)
            (g,) = torch.autograd.grad(lt.sum(), x)
            prop = (x + tau * g + math.sqrt(2 * tau) * torch.randn_like(x)).detach().requires_grad_()
            lp = log_target(prop)
            (gp,) = torch.autograd.grad(lp.sum(), prop)
            lq_fwd = -((prop - x - tau * g) ** 2).sum(-1) / (4 * tau)
            lq_bwd = -((x - prop - tau * gp) ** 2).sum(-1) / (4 * tau)
            log_alpha = (lp - lt + lq_bwd - lq_fwd).detach()
            accept = torch.rand(n).log() < log_alpha
            accepted.append(accept.float().mean())
            x = torch.where(accept[:, None], prop, x).detach()
    log_Z = torch.logsumexp(logw, 0) - math.log(n)
    ess = torch.exp(2 * torch.logsumexp(logw, 0) - torch.logsumexp(2 * logw, 0))
    return dict(log_Z=log_Z, ess=ess, mean=x.mean(0), rate=torch.stack(accepted).mean(), w=torch.softmax(logw, 0))


def test_annealed_importance_sampling():
    ours, _ = run_both(annealed_importance_sampling, rtol=1e-4, atol=1e-5)
    assert abs(float(ours["log_Z"]) - math.log(2 * math.pi * 0.25)) < 0.2
    assert 1 <= float(ours["ess"]) <= 200 and float(ours["rate"]) > 0.5
    np.testing.assert_allclose(ours["w"].sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ours["mean"], [1.0, 1.0], atol=0.2)


# ----------------------------------------------------------------------------------------------
# MALA on torch.distributions targets, and a checkpoint of an EBM with its replay buffer in a deque
# ----------------------------------------------------------------------------------------------


def mala_distributions(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(2)
    targets = [D.Independent(D.StudentT(torch.tensor([3.0, 5.0]), torch.zeros(2), torch.ones(2)), 1),
               D.MultivariateNormal(torch.tensor([1.0, -1.0]), scale_tril=torch.tensor([[1.0, 0.0], [0.5, 0.5]])),
               D.Independent(D.Gamma(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 2.0])), 1)]
    out = []
    for target in targets:
        x = target.sample((10,)).clone()
        tau = 0.05
        rate = 0.0
        for step in range(15):
            x = x.detach().requires_grad_(True)
            lp = target.log_prob(x)
            (g,) = torch.autograd.grad(lp.sum(), x)
            mean = x + tau * g
            prop = (mean + math.sqrt(2 * tau) * torch.randn_like(x)).detach()
            if isinstance(target.base_dist if hasattr(target, "base_dist") else target, D.Gamma):
                prop = prop.abs()  # a reflection keeps the chain in the support
            prop.requires_grad_(True)
            lp_p = target.log_prob(prop)
            (g_p,) = torch.autograd.grad(lp_p.sum(), prop)
            q_fwd = D.Normal(mean, math.sqrt(2 * tau)).log_prob(prop).sum(-1)
            q_bwd = D.Normal(prop + tau * g_p, math.sqrt(2 * tau)).log_prob(x).sum(-1)
            log_alpha = lp_p - lp + q_bwd - q_fwd
            accept = torch.rand(10) < log_alpha.exp()
            x = torch.where(accept.unsqueeze(-1), prop, x)
            rate += accept.float().mean().item() / 15
        out.append(dict(x=x, rate=rate))
    return out


def test_mala_distributions():
    ours, _ = run_both(mala_distributions, rtol=1e-4, atol=1e-5)
    assert all(r["rate"] > 0.5 for r in ours)
    assert (ours[2]["x"] > 0).all()


def ebm_checkpoint(m):
    import collections
    import io

    torch, nn = m.torch, m.nn
    torch.manual_seed(6)
    f = nn.Sequential(nn.Linear(2, 8), nn.SiLU(), nn.Linear(8, 1))
    buffer = collections.deque(maxlen=4)
    for i in range(6):
        buffer.append(torch.rand(3, 2) * 2 - 1)
    opt = m.optim.Adam(f.parameters(), lr=1e-3)
    f(torch.cat(list(buffer))).sum().backward()
    opt.step()
    file = io.BytesIO()
    torch.save({"model": f.state_dict(), "optimizer": opt.state_dict(), "buffer": buffer, "step": 6}, file)
    file.seek(0)
    try:
        torch.load(file)
        refused = "loaded"
    except Exception as e:  # a deque is no allowed global of a weights-only load
        refused = type(e).__name__
    file.seek(0)
    ckpt = torch.load(file, weights_only=False)
    g = nn.Sequential(nn.Linear(2, 8), nn.SiLU(), nn.Linear(8, 1))
    g.load_state_dict(ckpt["model"])
    restored = ckpt["buffer"]
    return dict(refused=refused, maxlen=restored.maxlen, kind=type(restored).__name__, buffer=torch.cat(list(restored)),
                same=torch.equal(g(torch.cat(list(restored))), f(torch.cat(list(buffer)))), step=ckpt["step"],
                exp_avg=ckpt["optimizer"]["state"][0]["exp_avg"])


def test_ebm_checkpoint():
    ours, _ = run_both(ebm_checkpoint)
    assert ours["refused"] == "UnpicklingError" and ours["kind"] == "deque" and ours["maxlen"] == 4
    assert ours["same"] is True and ours["buffer"].shape == (12, 2) and ours["step"] == 6


# ----------------------------------------------------------------------------------------------
# Chains vectorised by torch.func.vmap (randomness="different"), and an old Riemannian-HMC metric
# that tries torch.symeig (removed in PyTorch 1.9: a RuntimeError) before linalg.eigh
# ----------------------------------------------------------------------------------------------


def vmap_hmc(m):
    import importlib

    torch = m.torch
    func = importlib.import_module(torch.__name__ + ".func")
    torch.manual_seed(0)
    prec = torch.tensor([[2.0, 0.5], [0.5, 1.0]])

    def logp(q):
        return -0.5 * q @ prec @ q

    grad_logp = func.grad(logp)

    def step(q):
        p = torch.randn_like(q)
        q_new, p_new = q, p + 0.5 * 0.2 * grad_logp(q)
        for i in range(5):
            q_new = q_new + 0.2 * p_new
            p_new = p_new + (0.2 if i < 4 else 0.1) * grad_logp(q_new)
        h0 = -logp(q) + 0.5 * (p * p).sum()
        h1 = -logp(q_new) + 0.5 * (p_new * p_new).sum()
        accept = torch.log(torch.rand(())) < (h0 - h1)
        return torch.where(accept, q_new, q), accept

    qs = torch.randn(6, 2)
    rates = []
    for _ in range(5):
        qs, accept = func.vmap(step, randomness="different")(qs)
        rates.append(accept.float().mean())
    g = func.vmap(grad_logp)(qs)
    return dict(qs=qs, rates=torch.stack(rates), g=g, is_bool=accept.dtype == torch.bool)


def test_vmap_hmc():
    ours, _ = run_both(vmap_hmc)
    assert ours["is_bool"] is True and ours["qs"].shape == (6, 2)
    np.testing.assert_allclose(ours["g"], -ours["qs"] @ np.array([[2.0, 0.5], [0.5, 1.0]]), rtol=1e-5, atol=1e-6)


def softabs_metric(m):
    torch = m.torch
    torch.manual_seed(3)
    H0 = torch.randn(3, 3, dtype=torch.float64)
    H = (H0 + H0.T).requires_grad_()
    try:
        L, Q = torch.symeig(H, eigenvectors=True)
        route = "symeig"
    except RuntimeError as e:
        L, Q = torch.linalg.eigh(H)
        route = "eigh: " + str(e).splitlines()[0]
    lam = L / torch.tanh(1e6 * L)  # SoftAbs: |L| smoothed
    G = Q @ torch.diag_embed(lam) @ Q.T
    log_det = torch.logdet(G)
    (g,) = torch.autograd.grad(log_det, H)
    return dict(route=route, lam=lam, G=G, log_det=log_det, g=g, H=H)


def test_softabs_metric():
    ours, _ = run_both(softabs_metric, rtol=1e-10, atol=1e-12)
    assert ours["route"] == "eigh: This function was deprecated since version 1.9 and is now removed. The default " \
                            "behavior has changed from using the upper triangular portion of the matrix by default " \
                            "to using the lower triangular portion."
    np.testing.assert_allclose(ours["lam"], np.abs(np.linalg.eigvalsh(ours["H"])), rtol=1e-10)
    np.testing.assert_allclose(ours["log_det"], np.log(np.abs(np.linalg.eigvalsh(ours["H"]))).sum(), rtol=1e-10)
