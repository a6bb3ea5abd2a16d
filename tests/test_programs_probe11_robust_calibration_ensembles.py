# ruff: noqa: B007, E501, E721, F841, UP008  (the programs are kept as their authors wrote them)
"""Adversarial robustness, interpretability and uncertainty as their reference repositories write them, run as
tests/probe11_robust_common.py says. Uncertainty by sampling, scaling and ensembling: MC dropout (``Module.apply``
switching Dropout alone to train, entropy and mutual information), temperature scaling (gpleiss: ``_ECELoss``,
``optim.LBFGS``; a log-temperature by strong Wolfe), ECE by ``bucketize`` / ``bincount`` / ``histc`` /
``scatter_add_``, a deep ensemble of Gaussian regressors with FGSM training, a last-layer Laplace approximation
(``torch.autograd.functional.hessian`` over (W, b) against the GGN by einsum, ``linalg.inv`` / ``cholesky`` /
``cholesky_inverse``, the GLM predictive by ``functional.jacobian``, the prior precision by the marginal likelihood)."""

import math

import numpy as np

from .probe11_robust_common import mlp, tabular
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Uncertainty: MC dropout (Gal; dropout switched on by Module.apply under eval), temperature scaling
# (gpleiss/temperature_scaling: _ECELoss, LBFGS on the NLL), ECE by torch.bucketize / histc, a deep
# ensemble (Lakshminarayanan et al.: Gaussian NLL heads, a mixture's mean and variance)
# ----------------------------------------------------------------------------------------------


def dropout_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(5, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 32), nn.ReLU(),
                         nn.Dropout(0.3), nn.Linear(32, 4))


def mc_dropout_and_calibration(m, weights, masks=None, T=6):
    torch, nn, F, optim, data = m.torch, m.nn, m.F, m.optim, m.data
    model = load(m, dropout_net(m), weights).double()
    Xn, yn = tabular()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    # a little training first, so that the model is overconfident
    opt = optim.Adam(model.parameters(), lr=0.02)
    train_masks = None if masks is None else masks["train"]
    hooks = []
    if masks is not None:  # the same dropout masks on both libraries: a forward hook replaces each Dropout's output
        state = {"pass": 0}

        def fixed_mask(module, inputs, output):
            if not module.training:
                return output
            mask = torch.from_numpy(masks["bank"][state["pass"] % len(masks["bank"])][module.slot][: len(inputs[0])])
            return inputs[0] * mask / (1 - module.p)

        for slot, module in enumerate(mod for mod in model.modules() if isinstance(mod, nn.Dropout)):
            module.slot = slot
            hooks.append(module.register_forward_hook(fixed_mask))
    for step in range(25):
        model.train()
        if masks is not None:
            state["pass"] = step
        opt.zero_grad()
        loss = F.cross_entropy(model(X[:64]), y[:64])
        loss.backward()
        opt.step()

    def enable_dropout(m):
        for each_module in m.modules():
            if each_module.__class__.__name__.startswith("Dropout"):
                each_module.train()

    # MC dropout: eval mode (BatchNorm uses its running statistics), dropout alone switched back on
    model.eval()
    model.apply(lambda mod: mod.train() if type(mod) == nn.Dropout else None)
    modes = [mod.training for mod in model.modules()]
    running_mean = model[1].running_mean.clone()
    with torch.no_grad():
        probs = []
        for t in range(T):
            if masks is not None:
                state["pass"] = 100 + t
            probs.append(F.softmax(model(X[64:]), dim=1))
        probs = torch.stack(probs)  # (T, N, C)
    assert torch.equal(running_mean, model[1].running_mean)
    mean = probs.mean(0)
    predictive_entropy = -(mean * torch.log(mean + 1e-12)).sum(dim=1)
    expected_entropy = -(probs * torch.log(probs + 1e-12)).sum(dim=2).mean(0)
    mutual_info = predictive_entropy - expected_entropy
    variance = probs.var(0, unbiased=False).sum(1)
    model.eval()
    enable_dropout(model)
    modes2 = [mod.training for mod in model.modules()]
    for h in hooks:
        h.remove()
    model.eval()

    # temperature scaling on a validation loader
    class ModelWithTemperature(nn.Module):
        def __init__(self, model):
            super(ModelWithTemperature, self).__init__()
            self.model = model
            self.temperature = nn.Parameter(torch.ones(1, dtype=torch.float64) * 1.5)

        def forward(self, input):
            logits = self.model(input)
            return self.temperature_scale(logits)

        def temperature_scale(self, logits):
            # Expand temperature to match the size of logits
            temperature = self.temperature.unsqueeze(1).expand(logits.size(0), logits.size(1))
            return logits / temperature

        def set_temperature(self, valid_loader):
            nll_criterion = nn.CrossEntropyLoss()
            ece_criterion = _ECELoss()
            # First: collect all the logits and labels for the validation set
            logits_list = []
            labels_list = []
            with torch.no_grad():
                for input, label in valid_loader:
                    logits = self.model(input)
                    logits_list.append(logits)
                    labels_list.append(label)
                logits = torch.cat(logits_list)
                labels = torch.cat(labels_list)
            # Calculate NLL and ECE before temperature scaling
            before_temperature_nll = nll_criterion(logits, labels).item()
            before_temperature_ece = ece_criterion(logits, labels).item()
            # Next: optimize the temperature w.r.t. NLL
            optimizer = optim.LBFGS([self.temperature], lr=0.01, max_iter=50)

            def eval():
                optimizer.zero_grad()
                loss = nll_criterion(self.temperature_scale(logits), labels)
                loss.backward()
                return loss

            optimizer.step(eval)
            # Calculate NLL and ECE after temperature scaling
            after_temperature_nll = nll_criterion(self.temperature_scale(logits), labels).item()
            after_temperature_ece = ece_criterion(self.temperature_scale(logits), labels).item()
            return self, (before_temperature_nll, before_temperature_ece, after_temperature_nll, after_temperature_ece)

    class _ECELoss(nn.Module):
        def __init__(self, n_bins=15):
            super(_ECELoss, self).__init__()
            bin_boundaries = torch.linspace(0, 1, n_bins + 1)
            self.bin_lowers = bin_boundaries[:-1]
            self.bin_uppers = bin_boundaries[1:]

        def forward(self, logits, labels):
            softmaxes = F.softmax(logits, dim=1)
            confidences, predictions = torch.max(softmaxes, 1)
            accuracies = predictions.eq(labels)
            ece = torch.zeros(1, device=logits.device)
            for bin_lower, bin_upper in zip(self.bin_lowers, self.bin_uppers):
                # Calculated |confidence - accuracy| in each bin
                in_bin = confidences.gt(bin_lower.item()) * confidences.le(bin_upper.item())
                prop_in_bin = in_bin.float().mean()
                if prop_in_bin.item() > 0:
                    accuracy_in_bin = accuracies[in_bin].float().mean()
                    avg_confidence_in_bin = confidences[in_bin].mean()
                    ece += torch.abs(avg_confidence_in_bin - accuracy_in_bin) * prop_in_bin
            return ece

    valid_loader = data.DataLoader(data.TensorDataset(X[64:], y[64:]), batch_size=10, shuffle=False)
    scaled, report = ModelWithTemperature(model).set_temperature(valid_loader)

    # the same ECE vectorised: bins by torch.bucketize, counts by bincount / histc, sums by scatter_add_
    def ece_bucketize(logits, labels, n_bins=15):
        confidences, predictions = F.softmax(logits, dim=1).max(1)
        accuracies = predictions.eq(labels).to(logits.dtype)
        boundaries = torch.linspace(0, 1, n_bins + 1, dtype=logits.dtype)
        bins = torch.bucketize(confidences, boundaries[1:-1], right=False)  # (lower, upper] as _ECELoss
        counts = torch.bincount(bins, minlength=n_bins).to(logits.dtype)
        hist = torch.histc(confidences, bins=n_bins, min=0, max=1)
        conf_sum = torch.zeros(n_bins, dtype=logits.dtype).scatter_add_(0, bins, confidences)
        acc_sum = torch.zeros(n_bins, dtype=logits.dtype).index_add_(0, bins, accuracies)
        nonempty = counts > 0
        gaps = (conf_sum[nonempty] / counts[nonempty] - acc_sum[nonempty] / counts[nonempty]).abs()
        return (gaps * counts[nonempty]).sum() / len(labels), counts, hist

    with torch.no_grad():
        logits = model(X[64:])
        ece_vec = ece_bucketize(logits, y[64:])
        ece_loop = _ECELoss()(logits, y[64:])

    # a log-temperature fitted by LBFGS with the strong Wolfe line search
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    lbfgs = optim.LBFGS([log_t], lr=1, max_iter=30, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y[64:])
        loss.backward()
        return loss

    lbfgs.step(closure)
    return {"modes": (modes, modes2), "probs": probs, "entropy": predictive_entropy, "mi": mutual_info, "var": variance,
            "temperature": scaled.temperature.detach(), "report": report, "ece": (ece_loop, ece_vec),
            "log_t": log_t.detach(), "log_t_grad": log_t.grad, "params": [p.detach() for p in model.parameters()]}


def dropout_masks():
    rng = np.random.default_rng(5)
    return {"train": None, "bank": [[(rng.random((96, 32)) > 0.3).astype(np.float64) for _ in range(2)] for _ in range(200)]}


def test_mc_dropout_temperature_scaling_and_ece():
    ours, _ = run_both(mc_dropout_and_calibration, weights_of(dropout_net), masks=dropout_masks(), rtol=1e-7,
                       atol=1e-10)  # (LBFGS's line search amplifies float64 rounding)
    modes, modes2 = ours["modes"]
    # only the Dropout modules train: Sequential, Linear, BatchNorm1d, ReLU, Dropout, ...
    assert modes == modes2 == [False, False, False, False, True, False, False, True, False]
    assert (ours["mi"] >= -1e-12).all() and (ours["entropy"] >= ours["mi"] - 1e-12).all()
    ece_loop, (ece_vec, counts, hist) = ours["ece"]
    np.testing.assert_allclose(ece_loop, ece_vec, rtol=1e-6)  # _ECELoss accumulates in float32
    np.testing.assert_allclose(counts, hist)
    before_nll, before_ece, after_nll, after_ece = ours["report"]
    assert after_nll <= before_nll
    # the temperature the strong-Wolfe LBFGS found is where the NLL's gradient vanishes
    assert abs(ours["log_t_grad"][0]) < 1e-5


def test_mc_dropout_samples_differ_on_chainrule_alone():
    OURS.torch.manual_seed(0)
    out = mc_dropout_and_calibration(OURS, weights_of(dropout_net))
    probs = out["probs"].numpy()
    assert not np.allclose(probs[0], probs[1]) and (out["mi"].numpy() > 0).any()


# ----------------------------------------------------------------------------------------------
# A deep ensemble of Gaussian regressors (Lakshminarayanan et al.: softplus variance, the Gaussian
# NLL by hand and by nn.GaussianNLLLoss, FGSM examples in training, the mixture's mean and variance)
# and a last-layer Laplace approximation (the Hessian by torch.autograd.functional.hessian, the
# covariance by torch.linalg.inv / cholesky, the probit and Monte-Carlo predictives, the prior
# precision by the marginal likelihood)
# ----------------------------------------------------------------------------------------------


def gaussian_mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(1, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 2))


def ensemble(m, weights_list, steps=30):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(7)
    xn = rng.uniform(-3, 3, (40, 1))
    yn = xn ** 3 / 10 + rng.standard_normal((40, 1)) * (0.2 + 0.1 * np.abs(xn))
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    x_test = torch.linspace(-5, 5, 11, dtype=torch.float64).unsqueeze(1)

    class GaussianMLP(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            output = self.net(x)
            mean, variance = torch.split(output, 1, dim=1)
            variance = F.softplus(variance) + 1e-6
            return mean, variance

    def nll_criterion(mean, var, y):
        return (torch.log(var) / 2 + (y - mean) ** 2 / (2 * var)).mean()

    members = [GaussianMLP(load(m, gaussian_mlp(m), w).double()) for w in weights_list]
    log = []
    eps = 0.01 * 6  # 1% of the input range
    gnll = nn.GaussianNLLLoss(eps=1e-6)
    for model in members:
        opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
        for step in range(steps):
            # FGSM adversarial examples for the proper scoring rule
            x_ = x.clone().requires_grad_(True)
            mean, var = model(x_)
            loss = nll_criterion(mean, var, y)
            grad_x = torch.autograd.grad(loss, x_, retain_graph=True)[0]
            x_adv = x + eps * grad_x.sign()
            mean_adv, var_adv = model(x_adv.detach())
            total = loss + nll_criterion(mean_adv, var_adv, y)
            opt.zero_grad()
            total.backward()
            opt.step()
        log.append((total.item(), gnll(mean, y, var).item() - loss.item()))
    with torch.no_grad():
        means, variances = zip(*(model(x_test) for model in members))
        means, variances = torch.stack(means), torch.stack(variances)
        mixture_mean = means.mean(0)
        mixture_var = (variances + means.pow(2)).mean(0) - mixture_mean.pow(2)
    return {"log": log, "mean": mixture_mean, "var": mixture_var, "epistemic": means.var(0, unbiased=False),
            "params": [[p.detach() for p in model.parameters()] for model in members]}


def test_deep_ensemble_of_gaussian_regressors():
    weights = [weights_of(gaussian_mlp, seed=s) for s in range(3)]
    ours, _ = run_both(ensemble, weights, rtol=1e-8, atol=1e-10)
    for total, gap in ours["log"]:
        assert abs(gap) < 1e-12  # GaussianNLLLoss without `full` is the NLL by hand
    assert (ours["var"] >= ours["epistemic"] - 1e-12).all()


def laplace(m, weights, prior_precision=1.0, n_samples=200):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    hessian, jacobian = torch.autograd.functional.hessian, torch.autograd.functional.jacobian
    model = load(m, mlp(m), weights).double().eval()
    rng = np.random.default_rng(11)
    Xn = rng.uniform(0, 1, (40, 1, 8, 8))
    yn = rng.integers(0, 3, 40)
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    X_test = torch.from_numpy(rng.uniform(0, 1, (5, 1, 8, 8)))
    feature_extractor, last = model[:-1], model[-1]
    # fit the last layer (MAP) a little
    opt = optim.SGD(last.parameters(), lr=0.1)
    with torch.no_grad():
        phi, phi_test = feature_extractor(X), feature_extractor(X_test)
    for step in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(last(phi), y, reduction="sum") / len(y) + 0.5 * prior_precision / len(y) * sum(
            p.pow(2).sum() for p in last.parameters())
        loss.backward()
        opt.step()
    W_map, b_map = last.weight.detach().clone(), last.bias.detach().clone()
    C, D = W_map.shape

    def neg_log_posterior(W, b):
        return F.cross_entropy(phi @ W.T + b, y, reduction="sum") + 0.5 * prior_precision * (W.pow(2).sum() + b.pow(2).sum())

    H_W, H_b = hessian(neg_log_posterior, (W_map, b_map))  # blocks: H_W[0] is (C, D, C, D)
    H = torch.cat([torch.cat([H_W[0].reshape(C * D, C * D), H_W[1].reshape(C * D, C)], 1),
                   torch.cat([H_b[0].reshape(C, C * D), H_b[1]], 1)], 0)
    # the GGN by hand: sum_n (diag(p) - p p^T) kron [phi, 1][phi, 1]^T, in the same (W rows, b) order
    with torch.no_grad():
        p = F.softmax(phi @ W_map.T + b_map, dim=1)
        Lam = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (N, C, C)
        ggn_W = torch.einsum("nij,nk,nl->ikjl", Lam, phi, phi).reshape(C * D, C * D)
        ggn_Wb = torch.einsum("nij,nk->ikj", Lam, phi).reshape(C * D, C)
        ggn_b = Lam.sum(0)
        ggn = torch.cat([torch.cat([ggn_W, ggn_Wb], 1), torch.cat([ggn_Wb.T, ggn_b], 1)], 0)
        ggn = ggn + prior_precision * torch.eye(C * D + C, dtype=ggn.dtype)
    Sigma = torch.linalg.inv(H)
    L = torch.linalg.cholesky(Sigma)
    L_H = torch.linalg.cholesky(H)
    Sigma_chol = torch.cholesky_inverse(L_H)

    # the GLM predictive: the logits' Jacobian with respect to (W, b), then the probit approximation
    def logits_of(w_flat, features):
        return features @ w_flat[: C * D].view(C, D).T + w_flat[C * D:]

    theta_map = torch.cat([W_map.flatten(), b_map])
    J = jacobian(lambda w: logits_of(w, phi_test), theta_map)  # (n_test, C, P)
    f_mu = logits_of(theta_map, phi_test)
    f_var = torch.einsum("ncp,pq,nkq->nck", J, Sigma, J)
    kappa = 1 / torch.sqrt(1.0 + math.pi / 8 * f_var.diagonal(dim1=1, dim2=2))
    probit = torch.softmax(kappa * f_mu, dim=-1)
    # the Monte-Carlo predictive from the posterior samples theta_map + L eps
    eps = torch.from_numpy(np.random.default_rng(12).standard_normal((n_samples, C * D + C)))
    thetas = theta_map + eps @ L.T
    mc = torch.stack([torch.softmax(logits_of(t, phi_test), -1) for t in thetas]).mean(0)

    # the prior precision by the Laplace marginal likelihood, optimised in log space by Adam
    log_prior = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    hyper = optim.Adam([log_prior], lr=0.1)
    lik = F.cross_entropy(phi @ W_map.T + b_map, y, reduction="sum")
    P = C * D + C
    H_lik = H - prior_precision * torch.eye(P, dtype=H.dtype)
    margliks = []
    for step in range(15):
        hyper.zero_grad()
        prec = log_prior.exp()
        post_prec = H_lik + prec * torch.eye(P, dtype=H.dtype)
        log_marglik = -lik - 0.5 * prec * theta_map.pow(2).sum() - 0.5 * (torch.logdet(post_prec) - P * torch.log(prec))
        (-log_marglik).backward()
        hyper.step()
        margliks.append(log_marglik.item())
    return {"H": H, "ggn": ggn, "Sigma": Sigma, "Sigma_chol": Sigma_chol, "L": L, "probit": probit, "mc": mc,
            "f_var": f_var, "margliks": margliks, "log_prior": log_prior.detach(), "log_prior_grad": log_prior.grad}


def test_last_layer_laplace_hessian_glm_predictive_marglik():
    ours, _ = run_both(laplace, weights_of(mlp, seed=2), rtol=1e-8, atol=1e-10)
    # the cross-entropy's Hessian in the last layer is its GGN exactly (the logits are linear in it)
    np.testing.assert_allclose(ours["H"], ours["ggn"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours["Sigma"], ours["Sigma_chol"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours["L"] @ ours["L"].T, ours["Sigma"], atol=1e-12)
    np.testing.assert_allclose(ours["probit"].sum(-1), 1)
    assert np.abs(ours["probit"] - ours["mc"]).max() < 0.05
    assert ours["margliks"][-1] > ours["margliks"][0]
