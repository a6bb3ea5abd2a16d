# ruff: noqa: B007, B023, F841, UP008  (the programs are kept as their authors wrote them)
"""Kernel methods and Gaussian processes written by hand in PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and initial values, comparing values, gradients, dtypes and training
trajectories, and checked against NumPy by hand where the formula is short (so that each still asserts something
where PyTorch is not installed). Stein variational gradient descent as the widely copied port writes it (a
median-heuristic RBF by NumPy and by ``torch.median``, scores by ``autograd.grad`` of a ``MixtureSameFamily``
log-prob summed over particles, the repulsive term by the kernel's gradient, ``X.grad = -phi`` under Adam) and over a
Bayesian network's weights with ``torch.func`` (``stack_module_state``, ``functional_call``, ``vmap(grad)``);
Bayesian optimisation with Sobol' designs and MC q-EI (``torch.quasirandom.SobolEngine``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# Stein variational gradient descent (Liu & Wang, as the widely copied PyTorch port writes it)
# ----------------------------------------------------------------------------------------------


def svgd(m, median_by="numpy", steps=30):
    torch, nn, optim = m.torch, m.nn, m.optim
    autograd = torch.autograd
    D = torch.distributions

    class RBF(torch.nn.Module):
        def __init__(self, sigma=None):
            super(RBF, self).__init__()
            self.sigma = sigma

        def forward(self, X, Y):
            XX = X.matmul(X.t())
            XY = X.matmul(Y.t())
            YY = Y.matmul(Y.t())
            dnorm2 = -2 * XY + XX.diag().unsqueeze(1) + YY.diag().unsqueeze(0)
            # Apply the median heuristic (PyTorch does not give true median)
            if self.sigma is None:
                if median_by == "numpy":
                    np_dnorm2 = dnorm2.detach().cpu().numpy()
                    h = np.median(np_dnorm2) / (2 * np.log(X.size(0) + 1))
                    sigma = np.sqrt(h).item()
                else:
                    h = torch.median(dnorm2.detach()) / (2 * math.log(X.size(0) + 1))
                    sigma = h.sqrt()
            else:
                sigma = self.sigma
            gamma = 1.0 / (1e-8 + 2 * sigma ** 2)
            K_XY = (-gamma * dnorm2).exp()
            return K_XY

    class SVGD:
        def __init__(self, P, K, optimizer):
            self.P = P
            self.K = K
            self.optim = optimizer

        def phi(self, X):
            X = X.detach().requires_grad_(True)
            log_prob = self.P.log_prob(X)
            score_func = autograd.grad(log_prob.sum(), X)[0]
            K_XX = self.K(X, X.detach())
            grad_K = -autograd.grad(K_XX.sum(), X)[0]
            phi = (K_XX.detach().matmul(score_func) + grad_K) / X.size(0)
            return phi

        def step(self, X):
            self.optim.zero_grad()
            X.grad = -self.phi(X)
            self.optim.step()

    mix = D.Categorical(torch.tensor([0.3, 0.7]))
    comp = D.MultivariateNormal(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]),
                                scale_tril=torch.tensor([[[1.0, 0.0], [0.5, 0.8]], [[0.6, 0.0], [-0.2, 1.1]]]))
    P = D.MixtureSameFamily(mix, comp)
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((40, 2)).astype(np.float32) * 0.5)
    X.requires_grad_(True)
    s = SVGD(P, RBF(), optim.Adam([X], lr=1e-1))
    first_phi = s.phi(X)
    for _ in range(steps):
        s.step(X)
    return {"first_phi": first_phi, "X": X.detach(), "dtype": str(X.dtype).split(".")[-1],
            "mean_logp": P.log_prob(X.detach()).mean()}


@pytest.mark.parametrize("median_by", ["numpy", "torch"])
def test_svgd_particles_move_as_pytorch(median_by):
    ours, _ = run_both(svgd, median_by=median_by, rtol=1e-4, atol=1e-5)
    assert ours["dtype"] == "float32"
    assert np.isfinite(ours["X"]).all()


def svgd_phi_by_hand():
    """SVGD's first direction by NumPy: the kernel-weighted score plus the repulsive kernel gradient."""
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((40, 2)).astype(np.float32) * 0.5).astype(np.float64)
    w = np.array([0.3, 0.7])
    mus = np.array([[-2.0, 0.0], [2.0, 1.0]])
    Ls = np.array([[[1.0, 0.0], [0.5, 0.8]], [[0.6, 0.0], [-0.2, 1.1]]])
    precs = [np.linalg.inv(L @ L.T) for L in Ls]
    dens = np.stack([w[k] * np.exp(-0.5 * np.einsum("ni,ij,nj->n", X - mus[k], precs[k], X - mus[k]))
                     / (2 * np.pi * np.abs(np.linalg.det(Ls[k]))) for k in range(2)], 1)
    resp = dens / dens.sum(1, keepdims=True)
    score = sum(resp[:, [k]] * -((X - mus[k]) @ precs[k]) for k in range(2))
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    h = np.median(d2) / (2 * np.log(41))
    gamma = 1 / (1e-8 + 2 * h)
    K = np.exp(-gamma * d2)
    # d/dX_i of sum_j K_ij, X being the kernel's first argument only
    grad_K = -(-2 * gamma * (K[:, :, None] * (X[:, None] - X[None])).sum(1))
    return (K @ score + grad_K) / 40


def test_svgd_first_direction_by_hand():
    ours = svgd(OURS, steps=0)
    np.testing.assert_allclose(ours["first_phi"].detach().numpy(), svgd_phi_by_hand(), rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Bayesian optimisation as BoTorch writes it by hand: a scrambled Sobol' initial design
# (torch.quasirandom.SobolEngine), an exact GP refitted by L-BFGS each round, Monte Carlo q-expected
# improvement from quasi-random normal base samples (Sobol' points through erfinv) and the joint
# posterior's Cholesky, raw candidates from another Sobol' draw, the best refined by Adam in a box
# ----------------------------------------------------------------------------------------------


def branin(x):  # on [0, 1]^2, rescaled to Branin's box; minimised, so its negative is maximised
    x1, x2 = 15 * x[..., 0] - 5, 15 * x[..., 1]
    return -((x2 - 5.1 / (4 * math.pi ** 2) * x1 ** 2 + 5 / math.pi * x1 - 6) ** 2
             + 10 * (1 - 1 / (8 * math.pi)) * x1.cos() + 10)


def bayes_opt(m, rounds=3, q=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    SobolEngine = m.torch.quasirandom.SobolEngine
    dtype = torch.float64
    X = SobolEngine(2, scramble=True, seed=0).draw(8, dtype=dtype)
    Y = branin(X)
    base = SobolEngine(q, scramble=True, seed=1).draw(64, dtype=dtype)
    normal_base = torch.erfinv(2 * base.clamp(1e-6, 1 - 1e-6) - 1) * math.sqrt(2)  # (64, q)
    candidates_engine = SobolEngine(2, scramble=True, seed=2)
    history = []
    for r in range(rounds):
        y_mean, y_std = Y.mean(), Y.std()
        y = (Y - y_mean) / y_std
        raw = nn.Parameter(torch.zeros(4, dtype=dtype))  # log lengthscales (2), log outputscale, log noise

        def gp(Xa, Xb):
            ls = raw[:2].exp()
            return raw[2].exp() * torch.exp(-0.5 * torch.cdist(Xa / ls, Xb / ls) ** 2)

        def nll():
            K = gp(X, X) + (raw[3].exp() + 1e-6) * torch.eye(len(X), dtype=dtype)
            L = torch.linalg.cholesky(K)
            a = torch.cholesky_solve(y[:, None], L)
            return 0.5 * (y[:, None] * a).sum() + L.diagonal().log().sum()

        fit = optim.LBFGS([raw], lr=0.5, max_iter=40, line_search_fn="strong_wolfe")

        def closure():
            fit.zero_grad()
            loss = nll()
            loss.backward()
            return loss

        fit.step(closure)

        def posterior(Xq):  # (b, q, 2) -> mean (b, q), scale_tril (b, q, q)
            K = gp(X, X) + (raw[3].exp() + 1e-6) * torch.eye(len(X), dtype=dtype)
            L = torch.linalg.cholesky(K)
            Ks = gp(X.expand(Xq.shape[0], -1, -1), Xq)  # (b, n, q)
            mean = (Ks.transpose(-1, -2) @ torch.cholesky_solve(y[:, None], L)).squeeze(-1)
            V = torch.linalg.solve_triangular(L, Ks, upper=False)
            cov = gp(Xq, Xq) - V.transpose(-1, -2) @ V + 1e-8 * torch.eye(Xq.shape[1], dtype=dtype)
            return mean, torch.linalg.cholesky(cov)

        def qei(Xq):
            mean, Lq = posterior(Xq)
            samples = mean.unsqueeze(-2) + (Lq.unsqueeze(-3) @ normal_base.unsqueeze(-1)).squeeze(-1)  # (b, 64, q)
            best = y.max()
            return (samples - best).clamp_min(0).max(dim=-1).values.mean(dim=-1)

        with torch.no_grad():
            raw_cands = candidates_engine.draw(64 * q, dtype=dtype).view(64, q, 2)
            values = qei(raw_cands)
            start = raw_cands[values.topk(3).indices]
        z = nn.Parameter(torch.logit(start.clamp(1e-4, 1 - 1e-4)))
        opt = optim.Adam([z], lr=0.1)
        for step in range(15):
            opt.zero_grad()
            loss = -qei(torch.sigmoid(z)).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            final = qei(torch.sigmoid(z))
            new_x = torch.sigmoid(z)[final.argmax()]
        X = torch.cat([X, new_x])
        Y = torch.cat([Y, branin(new_x)])
        history.append((final.max().item(), raw.detach().clone()))
    return {"X": X, "Y": Y, "history": history, "base": base, "best": Y.max()}


def test_bayesian_optimisation_with_sobol_designs():
    ours, _ = run_both(bayes_opt, rtol=1e-6, atol=1e-8)
    assert ours["best"] > ours["Y"][:8].max() - 1e-12


@pytest.mark.parametrize("batched", [False, True])
def test_deprecated_cholesky_names_itself_in_its_error(T, batched):
    """torch.cholesky (deprecated, still in GPyTorch-era code) says "cholesky:" where linalg.cholesky says
    "linalg.cholesky:" (chainrule's said the latter for both)."""
    import warnings

    A = T.tensor([[[2.0, 1.0], [1.0, 2.0]], [[1.0, 2.0], [2.0, 1.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(T.linalg.LinAlgError) as caught:
            T.cholesky(A if batched else A[1])
    where = "(Batch element 1): " if batched else ""
    assert str(caught.value) == (f"cholesky: {where}The factorization could not be completed because the input is "
                                 "not positive-definite (the leading minor of order 2 is not positive-definite).")


# ----------------------------------------------------------------------------------------------
# SVGD over the weights of a Bayesian neural network, written with torch.func: the particles'
# parameters stacked by stack_module_state, a vmapped functional_call for the log-posterior and
# vmap(grad) for its score, an RBF kernel over the flattened particles with its gradient by
# autograd.grad, the update applied by an Adagrad over the stacked tensors
# ----------------------------------------------------------------------------------------------


def svgd_bnn(m, particles=6, steps=12):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_func = torch.func
    rng = np.random.default_rng(13)
    X = torch.from_numpy(rng.uniform(-2, 2, (32, 1)).astype(np.float32))
    y = torch.sin(2 * X) + 0.1 * torch.from_numpy(rng.standard_normal((32, 1)).astype(np.float32))
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)) for _ in range(particles)]
    params, buffers = from_func.stack_module_state(models)
    base = models[0]
    names = list(params)
    shapes = [params[k].shape[1:] for k in names]

    def unflatten(flat):
        out, i = {}, 0
        for k, s in zip(names, shapes):
            n = int(np.prod(s))
            out[k] = flat[i:i + n].view(s)
            i += n
        return out

    def log_post(flat):
        p = unflatten(flat)
        pred = from_func.functional_call(base, (p, {}), (X,))
        log_lik = -0.5 * ((pred - y) ** 2).sum() / 0.01
        log_prior = -0.5 * (flat ** 2).sum()
        return log_lik + log_prior

    theta = torch.cat([params[k].reshape(particles, -1) for k in names], 1).detach().clone().requires_grad_(True)
    opt = optim.Adagrad([theta], lr=0.05)
    history = []
    for step in range(steps):
        score = from_func.vmap(from_func.grad(log_post))(theta.detach())
        Xp = theta.detach().requires_grad_(True)
        sq = torch.cdist(Xp, Xp.detach()) ** 2
        h = sq.detach().median() / math.log(particles + 1)
        K = torch.exp(-sq / h)
        grad_K = -torch.autograd.grad(K.sum(), Xp)[0]
        phi = (K.detach() @ score + grad_K) / particles
        opt.zero_grad()
        theta.grad = -phi
        opt.step()
        history.append(from_func.vmap(log_post)(theta.detach()).mean())
    with torch.no_grad():
        preds = from_func.vmap(lambda f: from_func.functional_call(base, (unflatten(f), {}), (X,)))(theta)
    return {"history": history, "theta": theta.detach(), "pred_mean": preds.mean(0), "pred_std": preds.std(0)}


def test_svgd_bayesian_neural_network_with_torch_func():
    ours, _ = run_both(svgd_bnn, rtol=1e-4, atol=1e-4)
    assert ours["history"][-1] > ours["history"][0]
