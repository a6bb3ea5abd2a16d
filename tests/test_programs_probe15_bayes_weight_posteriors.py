# ruff: noqa: B007, B008, F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Bayesian and probabilistic deep learning as PyTorch users write it, run as tests/probe15_bayes_common.py says.
Posteriors over a network's weights: SWAG (Maddox et al. as wjmaddox/swa_gaussian writes it: moments and a deviation
matrix collected under ``SWALR``, ``parameters_to_vector`` / ``vector_to_parameters``, a low-rank-plus-diagonal
sample by hand and by ``LowRankMultivariateNormal``, ``update_bn`` after each sample) beside an ``AveragedModel``
with a custom ``avg_fn`` reloaded from its ``state_dict``; Bayes by Backprop with a scale-mixture prior (by hand and
by ``MixtureSameFamily``), the local reparameterisation trick and Flipout, the KL by hand and by ``kl_divergence``; a
whole-network Laplace approximation (Hessians by ``torch.func.hessian``, ``autograd.functional.hessian``, double
backward row by row and with ``is_grads_batched``, the GGN by ``vmap(jacrev)``, KFAC from module hooks, the
linearised predictive); SGLD, pSGLD and cyclical SG-MCMC as ``Optimizer`` subclasses."""

import copy
import math

import numpy as np
import pytest

from .probe15_bayes_common import two_class_data
from .pytorch_programs import OURS, load, run_both, weights_of


def bn_mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 2))


# ----------------------------------------------------------------------------------------------
# SWAG
# ----------------------------------------------------------------------------------------------


def swag(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_vec, to_vec = nn.utils.vector_to_parameters, nn.utils.parameters_to_vector
    swa_utils = optim.swa_utils
    x, y = two_class_data()
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    loader = m.data.DataLoader(m.data.TensorDataset(X, Y), batch_size=32, shuffle=False)
    model = load(m, bn_mlp(m), weights).double()

    class SWAG:
        def __init__(self, base, max_num_models=4, var_clamp=1e-30):
            self.base = base
            self.max_num_models = max_num_models
            self.var_clamp = var_clamp
            d = to_vec(base.parameters()).numel()
            self.mean = torch.zeros(d, dtype=torch.float64)
            self.sq_mean = torch.zeros(d, dtype=torch.float64)
            self.cov_mat_sqrt = torch.empty(0, d, dtype=torch.float64)
            self.n_models = 0

        @torch.no_grad()
        def collect_model(self, model):
            w = to_vec(model.parameters())
            self.mean.mul_(self.n_models / (self.n_models + 1.0)).add_(w / (self.n_models + 1.0))
            self.sq_mean.mul_(self.n_models / (self.n_models + 1.0)).add_(w ** 2 / (self.n_models + 1.0))
            dev = (w - self.mean).view(1, -1)
            self.cov_mat_sqrt = torch.cat((self.cov_mat_sqrt, dev), dim=0)
            if self.cov_mat_sqrt.size(0) > self.max_num_models:
                self.cov_mat_sqrt = self.cov_mat_sqrt[1:, :]
            self.n_models += 1

        def variance(self):
            return torch.clamp(self.sq_mean - self.mean ** 2, self.var_clamp)

        @torch.no_grad()
        def sample(self, scale=0.5, cov=True):
            var = self.variance()
            var_sample = var.sqrt() * torch.randn_like(var, requires_grad=False)
            if cov:
                cov_sample = self.cov_mat_sqrt.t().matmul(
                    self.cov_mat_sqrt.new_empty((self.cov_mat_sqrt.size(0),), requires_grad=False).normal_())
                cov_sample /= (self.max_num_models - 1) ** 0.5
                rand_sample = var_sample + cov_sample
            else:
                rand_sample = var_sample
            sample = self.mean + scale ** 0.5 * rand_sample
            from_vec(sample, self.base.parameters())
            return sample

    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = swa_utils.SWALR(optimizer, swa_lr=0.05, anneal_epochs=2, anneal_strategy="cos")
    swag_model = SWAG(copy.deepcopy(model))
    # an SWA average with a custom avg_fn beside it (the running mean written by hand)
    swa_model = swa_utils.AveragedModel(
        model, avg_fn=lambda avg, new, n: avg + (new - avg) / (n + 1))
    lrs, losses = [], []
    for epoch in range(8):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
        if epoch >= 3:
            swag_model.collect_model(model)
            swa_model.update_parameters(model)

    swa_utils.update_bn(loader, swa_model)
    state = swa_model.state_dict()
    reloaded = swa_utils.AveragedModel(load(m, bn_mlp(m), weights).double())
    reloaded.load_state_dict(state)
    reloaded.eval()

    # Bayesian model averaging over SWAG samples, BatchNorm refreshed for each
    torch.manual_seed(3)
    probs, samples = [], []
    for i in range(3):
        samples.append(swag_model.sample(scale=0.5, cov=True))
        swa_utils.update_bn(loader, swag_model.base)
        swag_model.base.eval()
        with torch.no_grad():
            probs.append(F.softmax(swag_model.base(X), dim=1))
    bma = torch.stack(probs).mean(0)
    nll = F.nll_loss(bma.log(), Y)

    # the same posterior as a distribution: N(mean, (diag(var) + D^T D / (K - 1)) / 2)
    K = swag_model.cov_mat_sqrt.size(0)
    D = torch.distributions
    posterior = D.LowRankMultivariateNormal(swag_model.mean, swag_model.cov_mat_sqrt.t() / math.sqrt(2 * (K - 1)),
                                            swag_model.variance() / 2)
    torch.manual_seed(4)
    draws = posterior.rsample((2,))
    return {"lrs": lrs, "losses": losses, "mean": swag_model.mean, "var": swag_model.variance(),
            "dev": swag_model.cov_mat_sqrt, "samples": samples, "bma": bma, "nll": nll,
            "swa": [p.detach() for p in swa_model.parameters()], "n_averaged": state["n_averaged"],
            "running": [state["module.1.running_mean"], state["module.1.running_var"]],
            "reloaded": reloaded(X), "draws": draws, "log_prob": posterior.log_prob(draws),
            "entropy": posterior.entropy()}


def test_swag_and_averaged_model():
    weights = weights_of(bn_mlp)
    ours, _ = run_both(swag, weights, rtol=1e-8, atol=1e-10)
    assert int(ours["n_averaged"]) == 5 and ours["dev"].shape[0] == 4
    # the SWA average is the SWAG mean (both the running mean of the same five iterates)
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in ours["swa"]]), ours["mean"], rtol=1e-10,
                               atol=1e-12)
    assert (ours["var"] > 0).all() and np.isfinite(ours["nll"])


# ----------------------------------------------------------------------------------------------
# Bayes by Backprop with a scale-mixture prior (Blundell et al.), the local reparameterisation trick
# (Kingma et al.) and Flipout (Wen et al.); the KL to a Gaussian prior by hand and by kl_divergence
# ----------------------------------------------------------------------------------------------


def bbb(m, seed=0, steps=12):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    rng = np.random.default_rng(1)
    xn = rng.uniform(-2, 2, (64, 1))
    yn = np.sin(2 * xn) + 0.1 * rng.standard_normal((64, 1))
    x, y = torch.from_numpy(xn).float(), torch.from_numpy(yn).float()
    torch.manual_seed(seed)

    class ScaleMixturePrior:
        def __init__(self, pi=0.5, sigma1=1.0, sigma2=math.exp(-6)):
            self.pi = pi
            self.gaussian1 = D.Normal(0, sigma1)
            self.gaussian2 = D.Normal(0, sigma2)

        def log_prob(self, input):
            prob1 = torch.exp(self.gaussian1.log_prob(input))
            prob2 = torch.exp(self.gaussian2.log_prob(input))
            return (torch.log(self.pi * prob1 + (1 - self.pi) * prob2)).sum()

    mixture = D.MixtureSameFamily(D.Categorical(probs=torch.tensor([0.5, 0.5])),
                                  D.Normal(torch.zeros(2), torch.tensor([1.0, math.exp(-6)])))

    class BayesLinear(nn.Module):
        def __init__(self, n_in, n_out, mode):
            super().__init__()
            self.mode = mode
            self.weight_mu = nn.Parameter(torch.Tensor(n_out, n_in).uniform_(-0.5, 0.5))
            self.weight_rho = nn.Parameter(torch.Tensor(n_out, n_in).uniform_(-5, -4))
            self.bias_mu = nn.Parameter(torch.Tensor(n_out).uniform_(-0.2, 0.2))
            self.bias_rho = nn.Parameter(torch.Tensor(n_out).uniform_(-5, -4))
            self.prior = ScaleMixturePrior()
            self.log_prior = 0
            self.log_variational_posterior = 0

        @property
        def weight_sigma(self):
            return torch.log1p(torch.exp(self.weight_rho))

        def forward(self, input):
            w_sigma, b_sigma = self.weight_sigma, F.softplus(self.bias_rho)
            if self.mode == "sample":
                weight = self.weight_mu + w_sigma * torch.randn_like(w_sigma)
                bias = self.bias_mu + b_sigma * torch.randn_like(b_sigma)
                self.log_prior = self.prior.log_prob(weight) + self.prior.log_prob(bias)
                self.log_prior_mix = mixture.log_prob(weight).sum() + mixture.log_prob(bias).sum()
                self.log_variational_posterior = (D.Normal(self.weight_mu, w_sigma).log_prob(weight).sum()
                                                  + D.Normal(self.bias_mu, b_sigma).log_prob(bias).sum())
                return F.linear(input, weight, bias)
            # closed-form KL to N(0, 1), by hand and by the library
            kl_hand = (torch.log(1.0 / w_sigma) + (w_sigma ** 2 + self.weight_mu ** 2) / 2 - 0.5).sum() \
                + (torch.log(1.0 / b_sigma) + (b_sigma ** 2 + self.bias_mu ** 2) / 2 - 0.5).sum()
            prior = D.Normal(torch.zeros_like(self.weight_mu), torch.ones_like(w_sigma))
            self.kl = D.kl_divergence(D.Normal(self.weight_mu, w_sigma), prior).sum() + D.kl_divergence(
                D.Independent(D.Normal(self.bias_mu, b_sigma), 1),
                D.Independent(D.Normal(torch.zeros_like(self.bias_mu), 1.0), 1))
            self.kl_hand = kl_hand
            if self.mode == "local":
                gamma = F.linear(input, self.weight_mu, self.bias_mu)
                delta = F.linear(input ** 2, w_sigma ** 2, b_sigma ** 2)
                return gamma + torch.sqrt(delta + 1e-8) * torch.randn_like(gamma)
            # flipout: a shared perturbation decorrelated by random signs per example
            delta_w = w_sigma * torch.randn_like(w_sigma)
            sign_in = torch.empty_like(input).uniform_(-1, 1).sign()
            sign_out = 2 * torch.bernoulli(torch.full((input.shape[0], self.weight_mu.shape[0]), 0.5)) - 1
            perturbed = F.linear(input * sign_in, delta_w) * sign_out
            return F.linear(input, self.weight_mu, self.bias_mu + b_sigma * torch.randn_like(b_sigma)) + perturbed

    results = {}
    for mode in ("sample", "local", "flipout"):
        net = nn.Sequential(BayesLinear(1, 24, mode), nn.Tanh(), BayesLinear(24, 1, mode))
        optimizer = optim.Adam(net.parameters(), lr=0.03)
        losses = []
        for step in range(steps):
            optimizer.zero_grad()
            out = net(x)
            nll = -D.Normal(out, 0.1).log_prob(y).sum()
            if mode == "sample":
                kl = sum(l.log_variational_posterior - l.log_prior for l in net if isinstance(l, BayesLinear))
                kl_mix = sum(l.log_variational_posterior - l.log_prior_mix for l in net if isinstance(l, BayesLinear))
                results["kl_mix_gap"] = (kl - kl_mix).detach()
            else:
                kl = sum(l.kl for l in net if isinstance(l, BayesLinear))
                results[mode + "_kl_hand"] = sum(l.kl_hand for l in net if isinstance(l, BayesLinear)).detach()
                results[mode + "_kl"] = kl.detach()
            loss = nll + kl / 4
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        results[mode] = losses
        results[mode + "_grads"] = [p.grad.clone() for p in net.parameters()]
    return results


def test_bayes_by_backprop_mixture_prior_local_reparameterisation_flipout():
    ours, _ = run_both(bbb, rtol=2e-4, atol=1e-4)
    for mode in ("local", "flipout"):
        np.testing.assert_allclose(ours[mode + "_kl_hand"], ours[mode + "_kl"], rtol=1e-5)
    assert abs(ours["kl_mix_gap"]) < 1e-2  # the mixture prior by hand and by MixtureSameFamily
    for mode in ("sample", "local", "flipout"):
        assert np.isfinite(ours[mode]).all()


# ----------------------------------------------------------------------------------------------
# The Laplace approximation of a whole small network: the Hessian of the loss over the flattened
# parameters by torch.func.hessian over functional_call, by torch.autograd.functional.hessian
# (vectorize=True), by double backward one row at a time and batched (is_grads_batched=True); the
# GGN by vmap(jacrev); KFAC factors from forward and full backward hooks; the linearised predictive
# by torch.func.jvp
# ----------------------------------------------------------------------------------------------


def tiny_mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3))


def laplace_full(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    func = torch.func
    rng = np.random.default_rng(3)
    X = torch.from_numpy(rng.standard_normal((30, 2)))
    y = torch.from_numpy(rng.integers(0, 3, 30))
    model = load(m, tiny_mlp(m), weights).double()
    opt = optim.LBFGS(model.parameters(), lr=0.5, max_iter=15)
    prior_prec = 1.0

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(X), y, reduction="sum") + 0.5 * prior_prec * sum(
            (p ** 2).sum() for p in model.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    theta = nn.utils.parameters_to_vector(model.parameters()).detach()

    def unflatten(vec):
        return {n: t.view(s) for n, t, s in zip(names, vec.split(sizes), shapes)}

    def loss_of(vec):
        out = func.functional_call(model, unflatten(vec), (X,))
        return F.cross_entropy(out, y, reduction="sum") + 0.5 * prior_prec * (vec ** 2).sum()

    H_func = func.hessian(loss_of)(theta)
    H_af = torch.autograd.functional.hessian(loss_of, theta, vectorize=True)
    # by double backward: one row at a time, then all rows at once
    t = theta.clone().requires_grad_(True)
    g = torch.autograd.grad(loss_of(t), t, create_graph=True)[0]
    rows = [torch.autograd.grad(g[i], t, retain_graph=True)[0] for i in range(t.numel())]
    H_rows = torch.stack(rows)
    H_batched = torch.autograd.grad(g, t, torch.eye(t.numel(), dtype=t.dtype), is_grads_batched=True)[0]

    # GGN: J^T (diag(p) - p p^T) J summed over the data, J by vmap(jacrev) per example
    def logits_of(vec, x):
        return func.functional_call(model, unflatten(vec), (x.unsqueeze(0),)).squeeze(0)

    J = func.vmap(func.jacrev(logits_of), in_dims=(None, 0))(theta, X)       # (N, 3, P)
    with torch.no_grad():
        p = F.softmax(model(X), dim=-1)
    Lambda = torch.diag_embed(p) - torch.einsum("nk,nl->nkl", p, p)
    GGN = torch.einsum("nkp,nkl,nlq->pq", J, Lambda, J) + prior_prec * torch.eye(theta.numel(), dtype=theta.dtype)

    # KFAC for the last layer from hooks: A = E[a a^T] of its (bias-augmented) input, G from the
    # output gradients of sampled labels
    acts, grads_out = {}, {}
    last = model[2]
    h1 = last.register_forward_hook(lambda mod, inp, out: acts.__setitem__("a", inp[0].detach()))
    h2 = last.register_full_backward_hook(lambda mod, gin, gout: grads_out.__setitem__("g", gout[0].detach()))
    torch.manual_seed(0)
    logits = model(X)
    y_sampled = torch.distributions.Categorical(logits=logits.detach()).sample()
    F.cross_entropy(logits, y_sampled, reduction="sum").backward()
    h1.remove()
    h2.remove()
    a = torch.cat([acts["a"], torch.ones(X.shape[0], 1, dtype=X.dtype)], 1)
    A = a.t() @ a / X.shape[0]
    G = grads_out["g"].t() @ grads_out["g"] / X.shape[0]
    kfac_last = torch.kron(G, A) * X.shape[0]

    # the posterior covariance and the linearised predictive at test points
    Sigma = torch.cholesky_inverse(torch.linalg.cholesky(GGN))
    X_test = torch.tensor([[0.0, 0.0], [2.0, -1.0], [-3.0, 3.0]], dtype=torch.float64)
    f_mean = model(X_test).detach()
    Js = func.vmap(func.jacrev(logits_of), in_dims=(None, 0))(theta, X_test)
    f_var = torch.einsum("nkp,pq,nlq->nkl", Js, Sigma, Js)
    kappa = 1 / torch.sqrt(1 + math.pi / 8 * f_var.diagonal(dim1=-2, dim2=-1))
    probit = F.softmax(kappa * f_mean, dim=-1)
    direction = torch.randn(theta.numel(), dtype=theta.dtype)
    _, jvp_out = func.jvp(lambda v: logits_of(v, X_test[1]), (theta,), (direction,))
    log_marglik = -loss_of(theta).detach() - 0.5 * torch.logdet(GGN) + 0.5 * theta.numel() * math.log(prior_prec)
    return {"H_func": H_func, "H_af": H_af, "H_rows": H_rows, "H_batched": H_batched, "GGN": GGN,
            "kfac": kfac_last, "probit": probit, "f_var": f_var, "jvp": jvp_out,
            "jvp_by_J": Js[1] @ direction, "log_marglik": log_marglik, "theta": theta}


def test_laplace_whole_network_hessians_ggn_kfac():
    ours, _ = run_both(laplace_full, weights_of(tiny_mlp), rtol=1e-7, atol=1e-9)
    for other in ("H_af", "H_rows", "H_batched"):
        np.testing.assert_allclose(ours[other], ours["H_func"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours["H_func"], ours["H_func"].T, atol=1e-10)
    np.testing.assert_allclose(ours["jvp"], ours["jvp_by_J"], rtol=1e-10, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(ours["GGN"]) > 0)


# ----------------------------------------------------------------------------------------------
# Stochastic-gradient MCMC as custom optimizers: SGLD (Welling & Teh), preconditioned SGLD (Li et al.,
# RMSprop's preconditioner), and cyclical SG-MCMC (Zhang et al.: a cosine step size per cycle by
# LambdaLR, samples kept at the end of each cycle), the posterior predictive by model averaging
# ----------------------------------------------------------------------------------------------


def regression_mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(1, 20), nn.ReLU(), nn.Linear(20, 1))


def sg_mcmc(m, weights, kind):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_numpy = torch.from_numpy
    rng = np.random.default_rng(4)
    xn = rng.uniform(-2, 2, (50, 1))
    yn = 0.5 * xn ** 2 - 1 + 0.2 * rng.standard_normal((50, 1))
    x, y = from_numpy(xn), from_numpy(yn)
    N = x.shape[0]

    class SGLD(optim.Optimizer):
        def __init__(self, params, lr=1e-2, prior_precision=1.0, temperature=1.0):
            if lr < 0.0:
                raise ValueError("Invalid learning rate: {}".format(lr))
            defaults = dict(lr=lr, prior_precision=prior_precision, temperature=temperature)
            super(SGLD, self).__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    d_p = p.grad.add(p, alpha=group["prior_precision"])
                    noise = torch.randn_like(p).mul_(math.sqrt(2.0 * group["lr"] * group["temperature"]))
                    p.add_(d_p, alpha=-group["lr"]).add_(noise)
            return loss

    class pSGLD(optim.Optimizer):
        def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-5, prior_precision=1.0):
            defaults = dict(lr=lr, alpha=alpha, eps=eps, prior_precision=prior_precision)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = 0
                        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    square_avg = state["square_avg"]
                    state["step"] += 1
                    d_p = p.grad.add(p, alpha=group["prior_precision"])
                    square_avg.mul_(group["alpha"]).addcmul_(d_p, d_p, value=1 - group["alpha"])
                    avg = square_avg.sqrt().add_(group["eps"])
                    p.addcdiv_(d_p, avg, value=-group["lr"])
                    p.add_(torch.randn_like(p).mul_(torch.sqrt(2.0 * group["lr"] / avg)))

    model = load(m, regression_mlp(m), weights).double()
    torch.manual_seed(11)
    if kind == "sgld":
        sampler = SGLD(model.parameters(), lr=1e-4, prior_precision=1.0)
        scheduler = None
    elif kind == "psgld":
        sampler = pSGLD(model.parameters(), lr=1e-3)
        scheduler = None
    else:
        cycle = 10
        sampler = SGLD(model.parameters(), lr=5e-4, temperature=0.1)
        scheduler = optim.lr_scheduler.LambdaLR(
            sampler, lambda it: 0.5 * (math.cos(math.pi * (it % cycle) / cycle) + 1))
    samples, losses, lrs = [], [], []
    for it in range(40):
        idx = torch.randperm(N)[:25]
        sampler.zero_grad()
        # the minibatch log-likelihood scaled to the whole data set (Gaussian noise of std 0.2)
        loss = N / 25 * 0.5 * ((model(x[idx]) - y[idx]) ** 2).sum() / 0.2 ** 2
        loss.backward()
        sampler.step()
        losses.append(loss.item())
        if scheduler is not None:
            lrs.append(sampler.param_groups[0]["lr"])
            scheduler.step()
            if (it + 1) % cycle == 0:
                samples.append(copy.deepcopy(model.state_dict()))
        elif it >= 30 and it % 3 == 0:
            samples.append(copy.deepcopy(model.state_dict()))
    x_test = torch.linspace(-3, 3, 7, dtype=torch.float64).unsqueeze(1)
    predictions = []
    for state in samples:
        model.load_state_dict(state)
        with torch.no_grad():
            predictions.append(model(x_test))
    predictions = torch.stack(predictions)
    return {"losses": losses, "lrs": lrs, "mean": predictions.mean(0), "std": predictions.std(0),
            "last": [p.detach() for p in model.parameters()], "n": len(samples),
            "state": {k: v for k, v in sampler.state_dict()["state"].items()} if kind == "psgld" else None}


@pytest.mark.parametrize("kind", ["sgld", "psgld", "csgmcmc"])
def test_sg_mcmc_samplers(kind):
    ours, _ = run_both(sg_mcmc, weights_of(regression_mlp), kind, rtol=1e-8, atol=1e-9)
    assert ours["n"] >= 4 and (ours["std"] > 0).all()
    assert ours["losses"][-1] < ours["losses"][0]


def test_sgld_draws_on_chainrule_alone():
    """Without torch: the same seed gives the same chain, and the chain's first losses are those of
    plain gradient steps plus the Langevin noise, by hand in NumPy."""
    w = weights_of(regression_mlp)
    a, b = sg_mcmc(OURS, w, "sgld"), sg_mcmc(OURS, w, "sgld")
    assert a["losses"] == b["losses"] and np.isfinite(a["losses"]).all()
    # the first step by hand: theta - lr (grad + theta) + sqrt(2 lr) eps, eps from the same generator
    torch = OURS.torch
    model = load(OURS, regression_mlp(OURS), w).double()
    rng = np.random.default_rng(4)
    xn = rng.uniform(-2, 2, (50, 1))
    yn = 0.5 * xn ** 2 - 1 + 0.2 * rng.standard_normal((50, 1))
    torch.manual_seed(11)
    idx = torch.randperm(50)[:25].numpy()
    x, y = torch.from_numpy(xn[idx]), torch.from_numpy(yn[idx])
    loss = 50 / 25 * 0.5 * ((model(x) - y) ** 2).sum() / 0.2 ** 2
    grads = torch.autograd.grad(loss, list(model.parameters()))
    stepped = [p.detach().numpy() - 1e-4 * (g.numpy() + p.detach().numpy())
               + math.sqrt(2e-4) * torch.randn_like(p).numpy() for p, g in zip(model.parameters(), grads)]
    for p, v in zip(model.parameters(), stepped):
        p.data.copy_(torch.from_numpy(v))
    idx = torch.randperm(50)[:25].numpy()
    second = 50 / 25 * 0.5 * ((model(torch.from_numpy(xn[idx])) - torch.from_numpy(yn[idx])) ** 2).sum() / 0.2 ** 2
    np.testing.assert_allclose([loss.item(), second.item()], a["losses"][:2], rtol=1e-12)
