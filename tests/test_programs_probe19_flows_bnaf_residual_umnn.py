# ruff: noqa: B007, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Normalizing flows and density estimation, run as tests/probe19_flows_common.py says. BNAF (block-masked weights,
4-d log-Jacobian blocks by ``logsumexp``, gated residuals, amsgrad, ReduceLROnPlateau); UMNN's Clenshaw-Curtis neural
integral (an ``autograd.Function`` whose backward takes ``autograd.grad`` of the integrand); residual flows (spectral
norm, LipSwish, power-series log-det with Hutchinson noise, MemoryEfficientLogDetEstimator)."""

import math

import numpy as np
import pytest

from .probe19_flows_common import moons_like
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Block neural autoregressive flow (De Cao et al. 2019) as its authors' code writes it: block-masked
# weights with exp'd diagonal blocks, the log-Jacobian carried as 4-d blocks combined by logsumexp,
# gated residuals, Adam(amsgrad) with clip_grad_norm_ and ReduceLROnPlateau
# ----------------------------------------------------------------------------------------------


def make_bnaf(m, dim=2, hidden=6, flows=2):
    torch, nn = m.torch, m.nn

    class Sequential(torch.nn.Sequential):
        def forward(self, inputs):
            log_det_jacobian = 0.
            for i, module in enumerate(self._modules.values()):
                inputs, log_det_jacobian_ = module(inputs)
                log_det_jacobian = log_det_jacobian + log_det_jacobian_
            return inputs, log_det_jacobian

    class BNAF(torch.nn.Sequential):
        def __init__(self, *args, res=None):
            super(BNAF, self).__init__(*args)
            self.res = res
            if res == 'gated':
                self.gate = torch.nn.Parameter(torch.nn.init.normal_(torch.Tensor(1)))

        def forward(self, inputs):
            outputs = inputs
            grad = None
            for module in self._modules.values():
                outputs, grad = module(outputs, grad)
                grad = grad if len(grad.shape) == 4 else grad.view(grad.shape + [1, 1])
            assert inputs.shape[-1] == outputs.shape[-1]
            if self.res == 'normal':
                return inputs + outputs, torch.nn.functional.softplus(grad.squeeze()).sum(-1)
            elif self.res == 'gated':
                return self.gate.sigmoid() * outputs + (1 - self.gate.sigmoid()) * inputs, \
                    (torch.nn.functional.softplus(grad.squeeze() + self.gate)
                     - torch.nn.functional.softplus(self.gate)).sum(-1)
            else:
                return outputs, grad.squeeze().sum(-1)

    class Permutation(torch.nn.Module):
        def __init__(self, in_features, p=None):
            super(Permutation, self).__init__()
            self.in_features = in_features
            if p == 'flip':
                self.p = list(range(in_features))[::-1]
            else:
                self.p = p

        def forward(self, inputs):
            return inputs[:, self.p], 0

    class MaskedWeight(torch.nn.Module):
        def __init__(self, in_features, out_features, dim, bias=True):
            super(MaskedWeight, self).__init__()
            self.in_features, self.out_features, self.dim = in_features, out_features, dim
            weight = torch.zeros(out_features, in_features)
            for i in range(dim):
                weight[i * out_features // dim:(i + 1) * out_features // dim, 0:(i + 1) * in_features // dim] = \
                    torch.nn.init.xavier_uniform_(torch.Tensor(out_features // dim, (i + 1) * in_features // dim))
            self._weight = torch.nn.Parameter(weight)
            self._diag_weight = torch.nn.Parameter(torch.nn.init.uniform_(torch.Tensor(out_features, 1)).log())
            self.bias = torch.nn.Parameter(torch.nn.init.uniform_(torch.Tensor(out_features),
                                                                  -1 / math.sqrt(out_features),
                                                                  1 / math.sqrt(out_features))) if bias else 0
            mask_d = torch.zeros_like(weight)
            for i in range(dim):
                mask_d[i * (out_features // dim):(i + 1) * (out_features // dim),
                       i * (in_features // dim):(i + 1) * (in_features // dim)] = 1
            self.register_buffer('mask_d', mask_d)
            mask_o = torch.ones_like(weight)
            for i in range(dim):
                mask_o[i * (out_features // dim):(i + 1) * (out_features // dim), i * (in_features // dim):] = 0
            self.register_buffer('mask_o', mask_o)

        def get_weights(self):
            w = torch.exp(self._weight) * self.mask_d + self._weight * self.mask_o
            w_squared_norm = (w ** 2).sum(-1, keepdim=True)
            w = self._diag_weight.exp() * w / w_squared_norm.sqrt()
            wpl = self._diag_weight + self._weight - 0.5 * torch.log(w_squared_norm)
            return w.t(), wpl.t()[self.mask_d.bool().t()].view(
                self.dim, self.in_features // self.dim, self.out_features // self.dim)

        def forward(self, inputs, grad=None):
            w, wpl = self.get_weights()
            g = wpl.transpose(-2, -1).unsqueeze(0).repeat(inputs.shape[0], 1, 1, 1)
            return inputs.matmul(w) + self.bias, torch.logsumexp(
                g.unsqueeze(-2) + grad.transpose(-2, -1).unsqueeze(-3), -1) if grad is not None else g

    class Tanh(torch.nn.Tanh):
        def forward(self, inputs, grad=None):
            g = - 2 * (inputs - math.log(2) + torch.nn.functional.softplus(- 2 * inputs))
            return torch.tanh(inputs), (g.view(grad.shape) + grad) if grad is not None else g

    layers = []
    for f in range(flows):
        layers.append(BNAF(MaskedWeight(dim, dim * hidden, dim=dim), Tanh(),
                           MaskedWeight(dim * hidden, dim * hidden, dim=dim), Tanh(),
                           MaskedWeight(dim * hidden, dim, dim=dim), res='gated' if f < flows - 1 else None))
        if f < flows - 1:
            layers.append(Permutation(dim, 'flip'))
    return Sequential(*layers)


def bnaf(m, weights, steps=5):
    torch, optim = m.torch, m.optim
    model = load(m, make_bnaf(m), weights)
    x = torch.tensor(moons_like(128))
    optimizer = optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1, min_lr=5e-4)

    def compute_log_p_x(model, x_mb):
        y_mb, log_diag_j_mb = model(x_mb)
        log_p_y_mb = torch.distributions.Normal(torch.zeros_like(y_mb), torch.ones_like(y_mb)).log_prob(y_mb).sum(-1)
        return log_p_y_mb + log_diag_j_mb

    history, norms = [], []
    for step in range(steps):
        loss = -compute_log_p_x(model, x).mean()
        optimizer.zero_grad()
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.1).item())
        optimizer.step()
        scheduler.step(loss)
        history.append(loss.item())
    # the log-determinant against the Jacobian of the whole flow by autograd, for three points
    pts = x[:3].clone().requires_grad_()
    y, log_det = model(pts)
    jac = torch.stack([torch.autograd.grad(y[:, i].sum(), pts, retain_graph=True)[0] for i in range(2)], dim=1)
    return {"history": history, "norms": norms, "log_det": log_det, "jac": jac, "lr": optimizer.param_groups[0]["lr"],
            "logp": compute_log_p_x(model, x[:10])}


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # ReduceLROnPlateau's float(loss)
def test_block_neural_autoregressive_flow():
    weights = weights_of(make_bnaf)
    ours, _ = run_both(bnaf, weights, rtol=2e-4, atol=2e-5)
    dets = np.linalg.det(ours["jac"])
    np.testing.assert_allclose(ours["log_det"], np.log(np.abs(dets)), rtol=1e-4, atol=1e-5)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Unconstrained monotonic neural networks (Wehenkel & Louppe 2019) as the UMNN repository writes them:
# Clenshaw-Curtis weights by NumPy, ParallelNeuralIntegral as an autograd.Function whose backward
# integrates torch.autograd.grad of the integrand (create_graph, a module kept on ctx, the parameters
# passed in flattened), used as a conditional 1-D flow: log p(x|h) = log N(f(x, h)) + log f'(x, h)
# ----------------------------------------------------------------------------------------------


def umnn_modules(m):
    torch, nn = m.torch, m.nn

    def _flatten(sequence):
        flat = [p.contiguous().view(-1) for p in sequence]
        return torch.cat(flat) if len(flat) > 0 else torch.tensor([])

    def compute_cc_weights(nb_steps):
        lam = np.arange(0, nb_steps + 1, 1).reshape(-1, 1)
        lam = np.cos((lam @ lam.T) * math.pi / nb_steps)
        lam[:, 0] = .5
        lam[:, -1] = .5 * lam[:, -1]
        lam = lam * 2 / nb_steps
        W = np.arange(0, nb_steps + 1, 1).reshape(-1, 1)
        W[np.arange(1, nb_steps + 1, 2)] = 0
        W = 2 / (1 - W ** 2)
        W[0] = 1
        W[np.arange(1, nb_steps + 1, 2)] = 0
        cc_weights = torch.tensor(lam.T @ W).float()
        steps = torch.tensor(np.cos(np.arange(0, nb_steps + 1, 1).reshape(-1, 1) * math.pi / nb_steps)).float()
        return cc_weights, steps

    def integrate(x0, nb_steps, step_sizes, integrand, h, compute_grad=False, x_tot=None):
        # Clenshaw-Curtis Quadrature Method
        cc_weights, steps = compute_cc_weights(nb_steps)
        device = x0.get_device() if x0.is_cuda else "cpu"
        cc_weights, steps = cc_weights.to(device), steps.to(device)
        xT = x0 + nb_steps * step_sizes
        if not compute_grad:
            x0_t = x0.unsqueeze(1).expand(-1, nb_steps + 1, -1)
            xT_t = xT.unsqueeze(1).expand(-1, nb_steps + 1, -1)
            h_steps = h.unsqueeze(1).expand(-1, nb_steps + 1, -1)
            steps_t = steps.unsqueeze(0).expand(x0_t.shape[0], -1, x0_t.shape[2])
            X_steps = x0_t + (xT_t - x0_t) * (steps_t + 1) / 2
            X_steps = X_steps.contiguous().view(-1, x0_t.shape[2])
            h_steps = h_steps.contiguous().view(-1, h.shape[1])
            dzs = integrand(X_steps, h_steps)
            dzs = dzs.view(xT_t.shape[0], nb_steps + 1, -1)
            dzs = dzs * cc_weights.unsqueeze(0).expand(dzs.shape)
            z_est = dzs.sum(1)
            return z_est * (xT - x0) / 2
        else:
            x0_t = x0.unsqueeze(1).expand(-1, nb_steps + 1, -1)
            xT_t = xT.unsqueeze(1).expand(-1, nb_steps + 1, -1)
            x_tot = x_tot * (xT - x0) / 2
            x_tot_steps = x_tot.unsqueeze(1).expand(-1, nb_steps + 1, -1) * cc_weights.unsqueeze(0).expand(
                x_tot.shape[0], -1, x_tot.shape[1])
            h_steps = h.unsqueeze(1).expand(-1, nb_steps + 1, -1)
            steps_t = steps.unsqueeze(0).expand(x0_t.shape[0], -1, x0_t.shape[2])
            X_steps = x0_t + (xT_t - x0_t) * (steps_t + 1) / 2
            X_steps = X_steps.contiguous().view(-1, x0_t.shape[2])
            h_steps = h_steps.contiguous().view(-1, h.shape[1])
            x_tot_steps = x_tot_steps.contiguous().view(-1, x_tot.shape[1])
            g_param, g_h = computeIntegrand(X_steps, h_steps, integrand, x_tot_steps, nb_steps + 1)
            return g_param, g_h

    def computeIntegrand(x, h, integrand, x_tot, nb_steps):
        h.requires_grad_(True)
        with torch.enable_grad():
            f = integrand.forward(x, h)
            g_param = _flatten(torch.autograd.grad(f, integrand.parameters(), x_tot, create_graph=True,
                                                   retain_graph=True))
            g_h = _flatten(torch.autograd.grad(f, h, x_tot))
        return g_param, g_h.view(int(x.shape[0] / nb_steps), nb_steps, -1).sum(1)

    class ParallelNeuralIntegral(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x0, x, integrand, flat_params, h, nb_steps=20):
            with torch.no_grad():
                x_tot = integrate(x0, nb_steps, (x - x0) / nb_steps, integrand, h, False)
                # Save for backward
                ctx.integrand = integrand
                ctx.nb_steps = nb_steps
                ctx.save_for_backward(x0.clone(), x.clone(), h)
            return x_tot

        @staticmethod
        def backward(ctx, grad_output):
            x0, x, h = ctx.saved_tensors
            integrand = ctx.integrand
            nb_steps = ctx.nb_steps
            integrand_grad, h_grad = integrate(x0, nb_steps, x / nb_steps, integrand, h, True, grad_output)
            x_grad = integrand(x, h)
            x0_grad = integrand(x0, h)
            # Leibniz formula
            return -x0_grad * grad_output, x_grad * grad_output, None, integrand_grad, h_grad.view(h.shape), None

    class IntegrandNN(nn.Module):
        def __init__(self, in_d, hidden_layers):
            super(IntegrandNN, self).__init__()
            self.net = []
            hs = [in_d] + hidden_layers + [1]
            for h0, h1 in zip(hs, hs[1:]):
                self.net.extend([nn.Linear(h0, h1), nn.ReLU()])
            self.net.pop()  # pop the last ReLU for the output layer
            self.net.append(nn.ELU())
            self.net = nn.Sequential(*self.net)

        def forward(self, x, h):
            return self.net(torch.cat((x, h), 1)) + 1.

    class MonotonicNN(nn.Module):
        def __init__(self, in_d, hidden_layers, nb_steps=50, dev="cpu"):
            super(MonotonicNN, self).__init__()
            self.integrand = IntegrandNN(in_d, hidden_layers)
            self.net = []
            hs = [in_d - 1] + hidden_layers + [2]
            for h0, h1 in zip(hs, hs[1:]):
                self.net.extend([nn.Linear(h0, h1), nn.ReLU()])
            self.net.pop()  # pop the last ReLU for the output layer
            self.net = nn.Sequential(*self.net)
            self.device = dev
            self.nb_steps = nb_steps

        def forward(self, x, h):
            x0 = torch.zeros(x.shape).to(self.device)
            out = self.net(h)
            offset = out[:, [0]]
            scaling = torch.exp(out[:, [1]])
            return scaling * ParallelNeuralIntegral.apply(x0, x, self.integrand, _flatten(self.integrand.parameters()),
                                                          h, self.nb_steps) + offset

    return MonotonicNN


def make_umnn(m):
    return umnn_modules(m)(3, [16, 16], nb_steps=20)


def umnn_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, 2)).astype(np.float32)
    x = (np.sinh(h[:, :1] + 0.5 * rng.standard_normal((n, 1))) + h[:, 1:]).astype(np.float32)
    return x, h


def umnn(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    model = load(m, make_umnn(m), weights)
    x, h = (torch.tensor(a) for a in umnn_data())
    optimizer = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    normal = torch.distributions.Normal(0., 1.)

    def log_likelihood(x, h):
        z = model(x, h)
        dz_dx = torch.exp(model.net(h)[:, [1]]) * model.integrand(x, h)  # f' by the integrand itself
        return (normal.log_prob(z) + torch.log(dz_dx)).sum(1)

    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = -log_likelihood(x, h).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    # the custom backward (Leibniz rule, the integrand's parameter gradient) against autograd through the
    # same quadrature written out
    xs, hs = x[:6].clone().requires_grad_(), h[:6].clone().requires_grad_()
    z = model(xs, hs)
    grads = torch.autograd.grad(z.sum(), [xs, hs] + list(model.parameters()))
    return {"history": history, "z": z, "grads": grads,
            "dz_dx": model.integrand(xs, hs) * torch.exp(model.net(hs)[:, [1]])}


def test_umnn_neural_integral_with_custom_backward():
    weights = weights_of(make_umnn)
    ours, _ = run_both(umnn, weights, rtol=2e-4, atol=2e-5)
    # d/dx of the integral is the integrand (Leibniz), which the backward gives
    np.testing.assert_allclose(ours["grads"][0], ours["dz_dx"], rtol=1e-5, atol=1e-6)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Residual flows (Chen et al. 2019) as their code writes them: LipSwish networks under spectral
# normalisation, the log-determinant by a power series with Hutchinson noise (basic and Neumann
# estimators, a fixed truncation with coefficients 1/P(N >= k)), and MemoryEfficientLogDetEstimator: an
# autograd.Function that takes autograd.grad under enable_grad in forward, keeps the graph on ctx, and
# in backward accumulates into its saved gradients in place under no_grad
# ----------------------------------------------------------------------------------------------


def residual_flow_modules(m):
    torch, nn, F = m.torch, m.nn, m.F

    def safe_detach(x):
        return x.detach().requires_grad_(x.requires_grad)

    def basic_logdet_estimator(g, x, n_power_series, vareps, coeff_fn, training):
        vjp = vareps
        logdetgrad = torch.tensor(0.).to(x)
        for k in range(1, n_power_series + 1):
            vjp = torch.autograd.grad(g, x, vjp, create_graph=training, retain_graph=True)[0]
            tr = torch.sum(vjp.view(x.shape[0], -1) * vareps.view(x.shape[0], -1), 1)
            delta = (-1) ** (k + 1) / k * coeff_fn(k) * tr
            logdetgrad = logdetgrad + delta
        return logdetgrad

    def neumann_logdet_estimator(g, x, n_power_series, vareps, coeff_fn, training):
        vjp = vareps
        neumann_vjp = vareps
        with torch.no_grad():
            for k in range(1, n_power_series + 1):
                vjp = torch.autograd.grad(g, x, vjp, retain_graph=True)[0]
                neumann_vjp = neumann_vjp + (-1) ** k * coeff_fn(k) * vjp
        vjp_jac = torch.autograd.grad(g, x, neumann_vjp, create_graph=training)[0]
        logdetgrad = torch.sum(vjp_jac.view(x.shape[0], -1) * vareps.view(x.shape[0], -1), 1)
        return logdetgrad

    class MemoryEfficientLogDetEstimator(torch.autograd.Function):
        @staticmethod
        def forward(ctx, estimator_fn, gnet, x, n_power_series, vareps, coeff_fn, training, *g_params):
            ctx.training = training
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                g = gnet(x)
                ctx.g = g
                ctx.x = x
                logdetgrad = estimator_fn(g, x, n_power_series, vareps, coeff_fn, training)
                if training:
                    grad_x, *grad_params = torch.autograd.grad(
                        logdetgrad.sum(), (x,) + g_params, retain_graph=True, allow_unused=True)
                    if grad_x is None:
                        grad_x = torch.zeros_like(x)
                    ctx.save_for_backward(grad_x, *g_params, *grad_params)
            return safe_detach(g), safe_detach(logdetgrad)

        @staticmethod
        def backward(ctx, grad_g, grad_logdetgrad):
            training = ctx.training
            if not training:
                raise ValueError('Provide training=True if using backward.')
            with torch.enable_grad():
                grad_x, *params_and_grad = ctx.saved_tensors
                g, x = ctx.g, ctx.x
                # Precomputations for backward pass.
                g_params = params_and_grad[:len(params_and_grad) // 2]
                grad_params = params_and_grad[len(params_and_grad) // 2:]
                dg_x, *dg_params = torch.autograd.grad(g, [x] + g_params, grad_g, allow_unused=True)
            # Update based on gradient from logdetgrad.
            dL = grad_logdetgrad[0].detach()
            with torch.no_grad():
                grad_x.mul_(dL)
                grad_params = tuple([g.mul_(dL) if g is not None else None for g in grad_params])
            # Update based on gradient from g.
            with torch.no_grad():
                grad_x.add_(dg_x)
                grad_params = tuple([dg.add_(djac) if djac is not None else dg
                                     for dg, djac in zip(dg_params, grad_params)])
            return (None, None, grad_x, None, None, None, None) + grad_params

    class LipSwish(nn.Module):
        def __init__(self):
            super().__init__()
            self.beta = nn.Parameter(torch.tensor([0.5]))

        def forward(self, x):
            return (x * torch.sigmoid(x * F.softplus(self.beta))).div_(1.1)

    class iResBlock(nn.Module):
        def __init__(self, nnet, n_power_series=6, neumann_grad=True, grad_in_forward=True):
            super().__init__()
            self.nnet = nnet
            self.n_power_series = n_power_series
            self.neumann_grad = neumann_grad
            self.grad_in_forward = grad_in_forward

        def forward(self, x, logpx=None):
            g, logdetgrad = self._logdetgrad(x)
            return x + g, logpx - logdetgrad

        def _logdetgrad(self, x):
            with torch.enable_grad():
                vareps = torch.randn_like(x)
                coeff_fn = lambda k: 1.0  # a fixed truncation: P(N >= k) = 1
                if self.training and self.grad_in_forward:
                    estimator_fn = neumann_logdet_estimator if self.neumann_grad else basic_logdet_estimator
                    g, logdetgrad = MemoryEfficientLogDetEstimator.apply(
                        estimator_fn, self.nnet, x, self.n_power_series, vareps, coeff_fn, self.training,
                        *list(self.nnet.parameters()))
                else:
                    x = x.requires_grad_(True)
                    g = self.nnet(x)
                    logdetgrad = basic_logdet_estimator(g, x, self.n_power_series, vareps, coeff_fn, self.training)
            return g, logdetgrad.view(-1, 1)

    def sn_linear(i, o):
        return nn.utils.parametrizations.spectral_norm(nn.Linear(i, o))

    class Scaled(nn.Module):
        def __init__(self, net, coeff=0.7):
            super().__init__()
            self.net, self.coeff = net, coeff

        def forward(self, x):
            return self.coeff * self.net(x)

    def make(neumann_grad=True, grad_in_forward=True):
        blocks = [iResBlock(Scaled(nn.Sequential(sn_linear(2, 16), LipSwish(), sn_linear(16, 2))),
                            neumann_grad=neumann_grad, grad_in_forward=grad_in_forward) for _ in range(2)]
        return nn.ModuleList(blocks)

    return make


def make_residual_flow(m, neumann_grad=True, grad_in_forward=True):
    return residual_flow_modules(m)(neumann_grad, grad_in_forward)


def residual_flow(m, weights, neumann_grad, grad_in_forward, steps=3):
    torch, optim = m.torch, m.optim
    blocks = load(m, make_residual_flow(m, neumann_grad, grad_in_forward), weights)
    x = torch.tensor(moons_like(32, seed=3) - 0.5)
    optimizer = optim.Adam(blocks.parameters(), lr=1e-2)
    torch.manual_seed(0)
    history = []

    def log_prob(x):
        z, delta_logp = x, torch.zeros(x.shape[0], 1)
        for block in blocks:
            z, delta_logp = block(z, delta_logp)
        logpz = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(1, keepdim=True)
        return logpz - delta_logp

    for step in range(steps):
        optimizer.zero_grad()
        loss = -log_prob(x).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    grads = [p.grad.clone() for p in blocks.parameters()]
    blocks.eval()
    # the exact log-determinant of the first block by its Jacobian (the power series has converged)
    with torch.no_grad():
        net = blocks[0].nnet
    pts = x[:4].clone().requires_grad_()
    g = net(pts)
    jac = torch.stack([torch.autograd.grad(g[:, i].sum(), pts, retain_graph=True)[0] for i in range(2)], 1)
    return {"history": history, "grads": grads, "jac": jac.detach(),
            "params": [p.detach().clone() for p in blocks.parameters()]}


@pytest.mark.parametrize("neumann_grad, grad_in_forward", [(True, True), (False, True), (False, False)])
def test_residual_flow_log_det_estimators(neumann_grad, grad_in_forward):
    weights = weights_of(lambda m: make_residual_flow(m, neumann_grad, grad_in_forward))
    ours, _ = run_both(residual_flow, weights, neumann_grad, grad_in_forward, rtol=2e-4, atol=2e-5)
    assert np.isfinite(ours["history"]).all()
    # each block is a contraction (spectral norm 0.7): I + J_g is invertible with a positive determinant
    assert (np.linalg.det(np.eye(2) + ours["jac"]) > 0).all()
