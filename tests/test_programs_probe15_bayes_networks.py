# ruff: noqa: B007, B010, E501, F841  (the programs are kept as their authors wrote them)
"""Bayesian and probabilistic deep learning as PyTorch users write it, run as tests/probe15_bayes_common.py says.
Probabilistic networks as libraries build them: bayesian-torch's ``dnn_to_bnn`` with blitz's
``variational_estimator``; a vmapped deep ensemble with MC dropout (``randomness="different"``) and a temperature
under a ``parametrize`` Softplus fitted by LBFGS; LogNormal / StudentT / Bernoulli regression heads with PIT values
and moments."""

import copy

import numpy as np

from .probe15_bayes_common import two_class_data
from .pytorch_programs import assert_same, load, run_both, same_dropout_masks, weights_of

# ----------------------------------------------------------------------------------------------
# Reparameterised convolutional BNN layers as IntelLabs/bayesian-torch writes them (non-persistent
# eps buffers refilled by normal_(), the KL by hand averaged, prior means and sigmas as buffers),
# a deterministic network converted to a Bayesian one by replacing its modules in place (dnn_to_bnn:
# named_children / setattr), blitz's variational_estimator decorator adding methods to the class
# (sample_elbo, nn_kl_divergence), and MC predictions with the prediction entropy
# ----------------------------------------------------------------------------------------------


def small_convnet(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 3))


def bayesian_torch_conversion(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(9)
    images = torch.from_numpy(rng.standard_normal((24, 1, 8, 8)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 3, 24))

    class BaseVariationalLayer_(nn.Module):
        def __init__(self):
            super().__init__()
            self._dnn_to_bnn_flag = False

        def kl_div(self, mu_q, sigma_q, mu_p, sigma_p):
            kl = torch.log(sigma_p) - torch.log(sigma_q) + (sigma_q ** 2 + (mu_q - mu_p) ** 2) / (2 * (sigma_p ** 2)) - 0.5
            return kl.mean()

    class Conv2dReparameterization(BaseVariationalLayer_):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                     prior_mean=0, prior_variance=1, posterior_mu_init=0, posterior_rho_init=-3.0, bias=True):
            super().__init__()
            self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
            self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
            self.prior_mean, self.prior_variance = prior_mean, prior_variance
            self.posterior_mu_init, self.posterior_rho_init = (posterior_mu_init,), (posterior_rho_init,)
            self.bias = bias
            shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
            self.mu_kernel = nn.Parameter(torch.Tensor(*shape))
            self.rho_kernel = nn.Parameter(torch.Tensor(*shape))
            self.register_buffer('eps_kernel', torch.Tensor(*shape), persistent=False)
            self.register_buffer('prior_weight_mu', torch.Tensor(*shape), persistent=False)
            self.register_buffer('prior_weight_sigma', torch.Tensor(*shape), persistent=False)
            if self.bias:
                self.mu_bias = nn.Parameter(torch.Tensor(out_channels))
                self.rho_bias = nn.Parameter(torch.Tensor(out_channels))
                self.register_buffer('eps_bias', torch.Tensor(out_channels), persistent=False)
                self.register_buffer('prior_bias_mu', torch.Tensor(out_channels), persistent=False)
                self.register_buffer('prior_bias_sigma', torch.Tensor(out_channels), persistent=False)
            else:
                self.register_parameter('mu_bias', None)
                self.register_parameter('rho_bias', None)
                self.register_buffer('eps_bias', None, persistent=False)
            self.init_parameters()

        def init_parameters(self):
            self.prior_weight_mu.fill_(self.prior_mean)
            self.prior_weight_sigma.fill_(self.prior_variance)
            self.mu_kernel.data.normal_(mean=self.posterior_mu_init[0], std=0.1)
            self.rho_kernel.data.normal_(mean=self.posterior_rho_init[0], std=0.1)
            if self.bias:
                self.prior_bias_mu.fill_(self.prior_mean)
                self.prior_bias_sigma.fill_(self.prior_variance)
                self.mu_bias.data.normal_(mean=self.posterior_mu_init[0], std=0.1)
                self.rho_bias.data.normal_(mean=self.posterior_rho_init[0], std=0.1)

        def kl_loss(self):
            sigma_weight = torch.log1p(torch.exp(self.rho_kernel))
            kl = self.kl_div(self.mu_kernel, sigma_weight, self.prior_weight_mu, self.prior_weight_sigma)
            if self.bias:
                sigma_bias = torch.log1p(torch.exp(self.rho_bias))
                kl += self.kl_div(self.mu_bias, sigma_bias, self.prior_bias_mu, self.prior_bias_sigma)
            return kl

        def forward(self, input, return_kl=True):
            sigma_weight = torch.log1p(torch.exp(self.rho_kernel))
            eps_kernel = self.eps_kernel.data.normal_()
            weight = self.mu_kernel + (sigma_weight * eps_kernel)
            if return_kl:
                kl_weight = self.kl_div(self.mu_kernel, sigma_weight, self.prior_weight_mu, self.prior_weight_sigma)
            bias = None
            if self.bias:
                sigma_bias = torch.log1p(torch.exp(self.rho_bias))
                eps_bias = self.eps_bias.data.normal_()
                bias = self.mu_bias + (sigma_bias * eps_bias)
                if return_kl:
                    kl_bias = self.kl_div(self.mu_bias, sigma_bias, self.prior_bias_mu, self.prior_bias_sigma)
            out = F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
            if return_kl:
                return out, (kl_weight + kl_bias if self.bias else kl_weight)
            return out

    class LinearReparameterization(BaseVariationalLayer_):
        def __init__(self, in_features, out_features, prior_mean=0, prior_variance=1, posterior_mu_init=0,
                     posterior_rho_init=-3.0, bias=True):
            super().__init__()
            self.mu_weight = nn.Parameter(torch.Tensor(out_features, in_features))
            self.rho_weight = nn.Parameter(torch.Tensor(out_features, in_features))
            self.register_buffer('eps_weight', torch.Tensor(out_features, in_features), persistent=False)
            self.mu_bias = nn.Parameter(torch.Tensor(out_features))
            self.rho_bias = nn.Parameter(torch.Tensor(out_features))
            self.register_buffer('eps_bias', torch.Tensor(out_features), persistent=False)
            self.prior_mean, self.prior_variance = prior_mean, prior_variance
            self.mu_weight.data.normal_(mean=posterior_mu_init, std=0.1)
            self.rho_weight.data.normal_(mean=posterior_rho_init, std=0.1)
            self.mu_bias.data.normal_(mean=posterior_mu_init, std=0.1)
            self.rho_bias.data.normal_(mean=posterior_rho_init, std=0.1)

        def kl_loss(self):
            prior_mu = torch.tensor(float(self.prior_mean))
            prior_sigma = torch.tensor(float(self.prior_variance))
            return (self.kl_div(self.mu_weight, torch.log1p(torch.exp(self.rho_weight)), prior_mu, prior_sigma)
                    + self.kl_div(self.mu_bias, torch.log1p(torch.exp(self.rho_bias)), prior_mu, prior_sigma))

        def forward(self, input, return_kl=True):
            sigma_weight = torch.log1p(torch.exp(self.rho_weight))
            weight = self.mu_weight + sigma_weight * self.eps_weight.data.normal_()
            sigma_bias = torch.log1p(torch.exp(self.rho_bias))
            bias = self.mu_bias + sigma_bias * self.eps_bias.data.normal_()
            out = F.linear(input, weight, bias)
            return (out, self.kl_loss()) if return_kl else out

    def bnn_conv_layer(params, d):
        layer = Conv2dReparameterization(d.in_channels, d.out_channels, d.kernel_size[0], stride=d.stride,
                                         padding=d.padding, dilation=d.dilation, groups=d.groups,
                                         bias=d.bias is not None, **params)
        layer.mu_kernel.data.copy_(d.weight.data)  # MOPED: the posterior means from the trained network
        if d.bias is not None:
            layer.mu_bias.data.copy_(d.bias.data)
        layer._dnn_to_bnn_flag = True
        return layer

    def bnn_linear_layer(params, d):
        layer = LinearReparameterization(d.in_features, d.out_features, **params)
        layer.mu_weight.data.copy_(d.weight.data)
        layer.mu_bias.data.copy_(d.bias.data)
        layer._dnn_to_bnn_flag = True
        return layer

    def dnn_to_bnn(m, bnn_prior_parameters):
        for name, value in list(m._modules.items()):
            if m._modules[name]._modules:
                dnn_to_bnn(m._modules[name], bnn_prior_parameters)
            elif "Conv" in m._modules[name].__class__.__name__:
                setattr(m, name, bnn_conv_layer(bnn_prior_parameters, m._modules[name]))
            elif "Linear" in m._modules[name].__class__.__name__:
                setattr(m, name, bnn_linear_layer(bnn_prior_parameters, m._modules[name]))
        return

    def get_kl_loss(m):
        kl_loss = None
        for layer in m.modules():
            if hasattr(layer, "kl_loss"):
                kl_loss = layer.kl_loss() if kl_loss is None else kl_loss + layer.kl_loss()
        return kl_loss

    class Wrapped(nn.Module):
        """bayesian-torch's layers return (out, kl): the converted network is driven through them."""
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            for layer in self.body:
                x = layer(x, return_kl=False) if isinstance(layer, BaseVariationalLayer_) else layer(x)
            return x

    def variational_estimator(nn_class):
        def nn_kl_divergence(self):
            return get_kl_loss(self)
        setattr(nn_class, "nn_kl_divergence", nn_kl_divergence)

        def sample_elbo(self, inputs, labels, criterion, sample_nbr, complexity_cost_weight=1):
            loss = 0
            for _ in range(sample_nbr):
                outputs = self(inputs)
                loss += criterion(outputs, labels)
                loss += self.nn_kl_divergence() * complexity_cost_weight
            return loss / sample_nbr
        setattr(nn_class, "sample_elbo", sample_elbo)
        return nn_class

    Wrapped = variational_estimator(Wrapped)
    dnn = load(m, small_convnet(m), weights)
    torch.manual_seed(0)
    const_bnn_prior_parameters = {"prior_mean": 0.0, "prior_variance": 1.0, "posterior_mu_init": 0.0,
                                  "posterior_rho_init": -3.0}
    dnn_to_bnn(dnn, const_bnn_prior_parameters)
    model = Wrapped(dnn)
    names = sorted(model.state_dict())
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = model.sample_elbo(images, labels, criterion, sample_nbr=2, complexity_cost_weight=1 / 24)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        output_mc = torch.stack([F.softmax(model(images[:6]), dim=1) for _ in range(8)])
    mean = output_mc.mean(0)
    entropy = -(mean * torch.log(mean + 1e-12)).sum(1)
    kinds = [type(layer).__name__ for layer in dnn]
    return {"losses": losses, "names": names, "kinds": kinds, "mean": mean, "entropy": entropy,
            "kl": model.nn_kl_divergence(), "params": [p.detach() for p in model.parameters()],
            "buffers": len(list(model.buffers()))}


def test_bayesian_torch_conversion_and_blitz_estimator():
    ours, _ = run_both(bayesian_torch_conversion, weights_of(small_convnet), rtol=1e-4, atol=1e-5)
    assert ours["kinds"][0] == "Conv2dReparameterization" and ours["kinds"][-1] == "LinearReparameterization"
    assert not any("eps" in n or "prior" in n for n in ours["names"])  # non-persistent buffers stay out
    assert ours["buffers"] == 2 * 6 + 2 and ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# A deep ensemble trained as one vmapped model (torch.func.stack_module_state, functional_call with
# BatchNorm buffers updated in train mode, vmap(grad) per member, Adam over the stacked leaves), with
# MC dropout at test time (Dropout modules alone switched to train by module iteration, one random
# stream per member by randomness="different"), and a temperature kept positive by a Softplus
# parametrization (nn.utils.parametrize) fitted by LBFGS on held-out logits
# ----------------------------------------------------------------------------------------------


def member(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def vmapped_ensemble(m, all_weights, steps=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    func = torch.func
    parametrize = nn.utils.parametrize
    x_np, y_np = two_class_data(n=120, seed=3)
    X, Y = torch.from_numpy(x_np).float(), torch.from_numpy(y_np)
    x_train, y_train, x_val, y_val = X[:80], Y[:80], X[80:], Y[80:]
    models = [load(m, member(m), w) for w in all_weights]
    for model in models:
        model.eval()  # no dropout while training the ensemble: BatchNorm alone trains below
    params, buffers = func.stack_module_state(models)
    base = copy.deepcopy(models[0])
    base.train()
    for mod in base.modules():
        if isinstance(mod, nn.Dropout):
            mod.eval()

    def loss_fn(p, b, x, y):
        out = func.functional_call(base, (p, b), (x,))
        return F.cross_entropy(out, y)

    optimizer = optim.Adam(list(params.values()), lr=0.02)
    losses = []
    torch.manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, 80, (len(models), 32))
        grads, loss = func.vmap(func.grad_and_value(loss_fn), in_dims=(0, 0, 0, 0))(params, buffers, x_train[idx],
                                                                                  y_train[idx])
        for k, p in params.items():
            p.grad = grads[k]
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.detach())

    # MC dropout: BatchNorm uses its running statistics, the Dropout layers alone sample
    base.eval()

    def enable_dropout(model):
        for mod in model.modules():
            if mod.__class__.__name__.startswith("Dropout"):
                mod.train()

    enable_dropout(base)
    modes = [mod.training for mod in base.modules()]
    torch.manual_seed(1)
    with torch.no_grad():
        mc = torch.stack([func.vmap(lambda p, b, x: func.functional_call(base, (p, b), (x,)), in_dims=(0, 0, None),
                                    randomness="different")(params, buffers, x_val) for _ in range(5)])
    probs = F.softmax(mc, dim=-1)                                     # (samples, members, n, classes)
    mean = probs.mean((0, 1))
    total = torch.special.entr(mean).sum(-1)
    aleatoric = torch.special.entr(probs).sum(-1).mean((0, 1))
    mutual_information = total - aleatoric
    by_categorical = torch.distributions.Categorical(probs=mean).entropy()

    # temperature scaling on the ensemble's mean logits, T = softplus(raw) by a parametrization
    class Softplus(nn.Module):
        def forward(self, raw):
            return F.softplus(raw)

        def right_inverse(self, t):
            return t + torch.log(-torch.expm1(-t))

    class TemperatureScaler(nn.Module):
        def __init__(self):
            super().__init__()
            self.temperature = nn.Parameter(torch.ones(1) * 1.5)

        def forward(self, logits):
            return logits / self.temperature

    with torch.no_grad():
        base.eval()
        logits = func.vmap(lambda p, b, x: func.functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))(
            params, buffers, x_val).mean(0)
    scaler = TemperatureScaler()
    parametrize.register_parametrization(scaler, "temperature", Softplus())
    raw_start = scaler.parametrizations.temperature.original.detach().clone()
    nll_start = F.cross_entropy(scaler(logits), y_val).detach()
    lbfgs = optim.LBFGS(scaler.parameters(), lr=0.1, max_iter=50)

    def closure():
        lbfgs.zero_grad()
        loss = F.cross_entropy(scaler(logits), y_val)
        loss.backward()
        return loss

    lbfgs.step(closure)
    nll_before = F.cross_entropy(logits, y_val)
    nll_after = F.cross_entropy(scaler(logits), y_val)
    return {"losses": torch.stack(losses), "params": dict(params), "buffers": dict(buffers), "modes": modes,
            "mean": mean, "mi": mutual_information, "total": total, "by_categorical": by_categorical,
            "raw_start": raw_start, "temperature": scaler.temperature.detach(), "nll": (nll_before, nll_start, nll_after),
            "names": sorted(scaler.state_dict())}


def test_vmapped_ensemble_mc_dropout_temperature():
    all_weights = [weights_of(member, seed=s) for s in range(4)]
    # the dropout masks are PyTorch's only where its Bernoulli kernel is (see same_dropout_masks)
    ours, theirs = run_both(vmapped_ensemble, all_weights, compare=same_dropout_masks(), rtol=1e-4, atol=1e-5)
    if theirs is not None and not same_dropout_masks():
        for key in ("losses", "params", "buffers", "modes", "names", "raw_start"):
            assert_same(ours[key], theirs[key], 1e-4, 1e-5, key)
    assert ours["modes"] == [False, False, False, False, True, False]
    np.testing.assert_allclose(ours["raw_start"], [1.5 + np.log(-np.expm1(-1.5))], rtol=1e-6)
    np.testing.assert_allclose(ours["total"], ours["by_categorical"], rtol=1e-5)
    nll_t1, nll_start, nll_after = ours["nll"]
    assert (ours["mi"] > -1e-6).all() and nll_after < nll_start and ours["temperature"] < 1.5
    assert ours["names"] == ["parametrizations.temperature.original"]
    assert (ours["losses"][-1] < ours["losses"][0]).all()


# ----------------------------------------------------------------------------------------------
# Probabilistic regression heads and their calibration: a network giving LogNormal, StudentT (learnt
# degrees of freedom starting below 2, where the variance is infinite) and Bernoulli predictive
# distributions, trained by their NLL; the PIT values by cdf (on a grid that starts at 0), central
# intervals by icdf, and the moments (mean, variance, mode) with their gradients
# ----------------------------------------------------------------------------------------------


def heads_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 6))


def probabilistic_heads(m, weights, steps=25):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    rng = np.random.default_rng(13)
    x = torch.from_numpy(rng.uniform(-1, 1, (80, 2)))
    positive = torch.from_numpy(np.exp(0.5 * rng.standard_normal(80) + x.numpy()[:, 0]))
    heavy = torch.from_numpy(rng.standard_t(1.5, 80) * 0.3 + x.numpy()[:, 1])
    coin = torch.from_numpy((rng.uniform(size=80) < 1 / (1 + np.exp(-3 * x.numpy()[:, 0]))).astype(np.float64))
    net = load(m, heads_net(m), weights).double()

    def heads(x):
        out = net(x)
        lognormal = D.LogNormal(out[:, 0], F.softplus(out[:, 1]) + 1e-3)
        student = D.StudentT(1.0 + F.softplus(out[:, 4]), out[:, 2], F.softplus(out[:, 3]) + 1e-3)
        bernoulli = D.Bernoulli(logits=out[:, 5])
        return lognormal, student, bernoulli

    optimizer = optim.Adam(net.parameters(), lr=0.02)
    losses = []
    for step in range(steps):
        lognormal, student, bernoulli = heads(x)
        loss = -(lognormal.log_prob(positive).mean() + student.log_prob(heavy).mean() + bernoulli.log_prob(coin).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    lognormal, student, bernoulli = heads(x[:6])
    grid = torch.tensor([0.0, 0.5, 1.0, 4.0], dtype=torch.float64).unsqueeze(-1)
    pit = lognormal.cdf(positive[:6])
    cdf_grid = lognormal.cdf(grid)                                           # (4, 6): F(0) = 0
    interval = lognormal.icdf(torch.tensor([[0.05], [0.95]], dtype=torch.float64))
    moments = {"ln_mean": lognormal.mean, "ln_var": lognormal.variance, "ln_mode": lognormal.mode,
               "t_var": student.variance, "t_df": student.df, "b_mode": bernoulli.mode}
    grads = {k: torch.autograd.grad(v[torch.isfinite(v)].sum(), list(net.parameters()), retain_graph=True,
                                    allow_unused=True)[0] if v.requires_grad else None for k, v in moments.items()}
    # an edge case the head can produce: degrees of freedom exactly 2 and a coin at exactly one half
    edge_df = torch.tensor([2.0, 3.0], dtype=torch.float64, requires_grad=True)
    edge_var = D.StudentT(edge_df, 0.0, 1.0).variance
    edge_grad = torch.autograd.grad(edge_var[1], edge_df, retain_graph=True)[0]
    return {"losses": losses, "pit": pit, "cdf_grid": cdf_grid, "interval": interval,
            "moments": moments, "grads": grads, "edge_var": edge_var, "edge_grad": edge_grad,
            "b_mode_half": D.Bernoulli(logits=torch.tensor([0.0, 0.1])).mode,
            "params": [p.detach() for p in net.parameters()]}


def test_probabilistic_heads_pit_and_moments():
    ours, _ = run_both(probabilistic_heads, weights_of(heads_net), rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert (ours["cdf_grid"][0] == 0).all() and ((ours["pit"] > 0) & (ours["pit"] < 1)).all()
    assert (ours["interval"][0] < ours["interval"][1]).all()
    np.testing.assert_array_equal(ours["b_mode_half"], [np.nan, 1.0])
    np.testing.assert_allclose(ours["edge_var"], [np.inf, 3.0])
    np.testing.assert_allclose(ours["edge_grad"], [0.0, -2.0])
