# ruff: noqa: B007, E712, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Generative models (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and
the same noise, comparing losses, samples, parameters and gradients. RealNVP on two moons as the popular notebook
writes it (masks held in a frozen ``nn.Parameter``, a ``MultivariateNormal`` prior, ``log_det_J -= s.sum(dim=1)``),
its log-determinant by the Jacobian; neural spline flows (nflows' rational-quadratic spline with linear tails) in a
coupling layer, the spline's log-determinant by autograd."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# RealNVP on two moons (the notebook everyone copies)
# ----------------------------------------------------------------------------------------------


def realnvp(m, seed=0, steps=5):
    torch, nn, optim = m.torch, m.nn, m.optim
    distributions = torch.distributions
    nets = lambda: nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(), nn.Linear(32, 32), nn.LeakyReLU(), nn.Linear(32, 2),
                                 nn.Tanh())
    nett = lambda: nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(), nn.Linear(32, 32), nn.LeakyReLU(), nn.Linear(32, 2))
    masks = torch.from_numpy(np.array([[0, 1], [1, 0]] * 3).astype(np.float32))
    prior = distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))

    class RealNVP(nn.Module):
        def __init__(self, nets, nett, mask, prior):
            super(RealNVP, self).__init__()

            self.prior = prior
            self.mask = nn.Parameter(mask, requires_grad=False)
            self.t = nn.ModuleList([nett() for _ in range(len(masks))])
            self.s = nn.ModuleList([nets() for _ in range(len(masks))])

        def g(self, z):
            x = z
            for i in range(len(self.t)):
                x_ = x * self.mask[i]
                s = self.s[i](x_) * (1 - self.mask[i])
                t = self.t[i](x_) * (1 - self.mask[i])
                x = x_ + (1 - self.mask[i]) * (x * torch.exp(s) + t)
            return x

        def f(self, x):
            log_det_J, z = x.new_zeros(x.shape[0]), x
            for i in reversed(range(len(self.t))):
                z_ = self.mask[i] * z
                s = self.s[i](z_) * (1 - self.mask[i])
                t = self.t[i](z_) * (1 - self.mask[i])
                z = (1 - self.mask[i]) * (z - t) * torch.exp(-s) + z_
                log_det_J -= s.sum(dim=1)
            return z, log_det_J

        def log_prob(self, x):
            z, logp = self.f(x)
            return self.prior.log_prob(z) + logp

        def sample(self, batchSize):
            z = self.prior.sample((batchSize, 1))
            logp = self.prior.log_prob(z)
            x = self.g(z)
            return x

    def make():
        return RealNVP(nets, nett, masks, prior)

    return make


def moons(n, seed):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return (np.stack([x, y], 1) + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)


def train_realnvp(m, weights, steps=5):
    torch, optim = m.torch, m.optim
    flow = load(m, realnvp(m)(), weights)
    optimizer = optim.Adam([p for p in flow.parameters() if p.requires_grad == True], lr=1e-3)
    history = []
    for t in range(steps):
        noisy_moons = moons(64, t)
        loss = -flow.log_prob(torch.from_numpy(noisy_moons)).mean()
        optimizer.zero_grad()
        loss.backward(retain_graph=True)
        optimizer.step()
        history.append(loss.item())
    x = torch.from_numpy(moons(8, 99))
    z, log_det = flow.f(x)
    samples = flow.sample(5)
    return {"history": history, "z": z, "log_det": log_det, "roundtrip": flow.g(z), "x": x,
            "sample_shape": tuple(samples.shape), "mask_grad": flow.mask.grad,
            "n_trainable": len([p for p in flow.parameters() if p.requires_grad]),
            "grads": [p.grad for p in flow.parameters() if p.requires_grad]}


def test_realnvp_two_moons():
    weights = weights_of(lambda m: realnvp(m)())
    ours, _ = run_both(train_realnvp, weights, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(ours["roundtrip"], ours["x"], atol=1e-5)  # g inverts f
    assert ours["sample_shape"] == (5, 1, 2) and ours["mask_grad"] is None and ours["n_trainable"] == 72
    assert ours["history"][-1] < ours["history"][0]


def test_realnvp_log_det_by_the_jacobian():
    """f's log-determinant equals log|det J| of f computed by autograd.functional.jacobian."""
    torch = OURS.torch
    flow = load(OURS, realnvp(OURS)(), weights_of(lambda m: realnvp(m)())).double()
    x = torch.tensor(moons(3, 5).astype(np.float64))
    z, log_det = flow.f(x)
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda v: flow.f(v.unsqueeze(0))[0].squeeze(0), x[i])
        sign, logabs = np.linalg.slogdet(J.numpy())
        assert logabs == pytest.approx(log_det[i].item(), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# Neural spline flows (nflows' rational-quadratic spline with linear tails), in a coupling layer
# ----------------------------------------------------------------------------------------------

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def spline_functions(m):
    torch, F = m.torch, m.F

    def searchsorted(bin_locations, inputs, eps=1e-6):
        bin_locations[..., -1] += eps
        return torch.sum(inputs[..., None] >= bin_locations, dim=-1) - 1

    def unconstrained_rational_quadratic_spline(inputs, unnormalized_widths, unnormalized_heights,
                                                unnormalized_derivatives, inverse=False, tails="linear",
                                                tail_bound=1.0, min_bin_width=DEFAULT_MIN_BIN_WIDTH,
                                                min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
                                                min_derivative=DEFAULT_MIN_DERIVATIVE):
        inside_interval_mask = (inputs >= -tail_bound) & (inputs <= tail_bound)
        outside_interval_mask = ~inside_interval_mask

        outputs = torch.zeros_like(inputs)
        logabsdet = torch.zeros_like(inputs)

        if tails == "linear":
            unnormalized_derivatives = F.pad(unnormalized_derivatives, pad=(1, 1))
            constant = np.log(np.exp(1 - min_derivative) - 1)
            unnormalized_derivatives[..., 0] = constant
            unnormalized_derivatives[..., -1] = constant

            outputs[outside_interval_mask] = inputs[outside_interval_mask]
            logabsdet[outside_interval_mask] = 0
        else:
            raise RuntimeError(f"{tails} tails are not implemented.")

        if torch.any(inside_interval_mask):
            (outputs[inside_interval_mask], logabsdet[inside_interval_mask]) = rational_quadratic_spline(
                inputs=inputs[inside_interval_mask],
                unnormalized_widths=unnormalized_widths[inside_interval_mask, :],
                unnormalized_heights=unnormalized_heights[inside_interval_mask, :],
                unnormalized_derivatives=unnormalized_derivatives[inside_interval_mask, :],
                inverse=inverse, left=-tail_bound, right=tail_bound, bottom=-tail_bound, top=tail_bound,
                min_bin_width=min_bin_width, min_bin_height=min_bin_height, min_derivative=min_derivative)

        return outputs, logabsdet

    def rational_quadratic_spline(inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
                                  inverse=False, left=0.0, right=1.0, bottom=0.0, top=1.0,
                                  min_bin_width=DEFAULT_MIN_BIN_WIDTH, min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
                                  min_derivative=DEFAULT_MIN_DERIVATIVE):
        if torch.min(inputs) < left or torch.max(inputs) > right:
            raise ValueError("Input to a transform is not within its domain")

        num_bins = unnormalized_widths.shape[-1]

        widths = F.softmax(unnormalized_widths, dim=-1)
        widths = min_bin_width + (1 - min_bin_width * num_bins) * widths
        cumwidths = torch.cumsum(widths, dim=-1)
        cumwidths = F.pad(cumwidths, pad=(1, 0), mode="constant", value=0.0)
        cumwidths = (right - left) * cumwidths + left
        cumwidths[..., 0] = left
        cumwidths[..., -1] = right
        widths = cumwidths[..., 1:] - cumwidths[..., :-1]

        derivatives = min_derivative + F.softplus(unnormalized_derivatives)

        heights = F.softmax(unnormalized_heights, dim=-1)
        heights = min_bin_height + (1 - min_bin_height * num_bins) * heights
        cumheights = torch.cumsum(heights, dim=-1)
        cumheights = F.pad(cumheights, pad=(1, 0), mode="constant", value=0.0)
        cumheights = (top - bottom) * cumheights + bottom
        cumheights[..., 0] = bottom
        cumheights[..., -1] = top
        heights = cumheights[..., 1:] - cumheights[..., :-1]

        if inverse:
            bin_idx = searchsorted(cumheights, inputs)[..., None]
        else:
            bin_idx = searchsorted(cumwidths, inputs)[..., None]

        input_cumwidths = cumwidths.gather(-1, bin_idx)[..., 0]
        input_bin_widths = widths.gather(-1, bin_idx)[..., 0]

        input_cumheights = cumheights.gather(-1, bin_idx)[..., 0]
        delta = heights / widths
        input_delta = delta.gather(-1, bin_idx)[..., 0]

        input_derivatives = derivatives.gather(-1, bin_idx)[..., 0]
        input_derivatives_plus_one = derivatives[..., 1:].gather(-1, bin_idx)[..., 0]

        input_heights = heights.gather(-1, bin_idx)[..., 0]

        if inverse:
            a = (inputs - input_cumheights) * (input_derivatives + input_derivatives_plus_one - 2 * input_delta) \
                + input_heights * (input_delta - input_derivatives)
            b = input_heights * input_derivatives - (inputs - input_cumheights) * (
                input_derivatives + input_derivatives_plus_one - 2 * input_delta)
            c = -input_delta * (inputs - input_cumheights)

            discriminant = b.pow(2) - 4 * a * c
            assert (discriminant >= 0).all()

            root = (2 * c) / (-b - torch.sqrt(discriminant))
            outputs = root * input_bin_widths + input_cumwidths

            theta_one_minus_theta = root * (1 - root)
            denominator = input_delta + (
                (input_derivatives + input_derivatives_plus_one - 2 * input_delta) * theta_one_minus_theta)
            derivative_numerator = input_delta.pow(2) * (
                input_derivatives_plus_one * root.pow(2) + 2 * input_delta * theta_one_minus_theta
                + input_derivatives * (1 - root).pow(2))
            logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)

            return outputs, -logabsdet
        else:
            theta = (inputs - input_cumwidths) / input_bin_widths
            theta_one_minus_theta = theta * (1 - theta)

            numerator = input_heights * (input_delta * theta.pow(2) + input_derivatives * theta_one_minus_theta)
            denominator = input_delta + (
                (input_derivatives + input_derivatives_plus_one - 2 * input_delta) * theta_one_minus_theta)
            outputs = input_cumheights + numerator / denominator

            derivative_numerator = input_delta.pow(2) * (
                input_derivatives_plus_one * theta.pow(2) + 2 * input_delta * theta_one_minus_theta
                + input_derivatives * (1 - theta).pow(2))
            logabsdet = torch.log(derivative_numerator) - 2 * torch.log(denominator)

            return outputs, logabsdet

    return unconstrained_rational_quadratic_spline


def make_spline_coupling(m):
    nn = m.nn
    num_bins = 5
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2 * (3 * num_bins - 1)))


def spline_flow(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    spline = spline_functions(m)
    net = load(m, make_spline_coupling(m), weights).double()
    num_bins = 5
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    base = torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64))

    def forward(x, inverse=False):
        identity, transform = x[:, :2], x[:, 2:]
        params = net(identity).view(x.shape[0], 2, 3 * num_bins - 1)
        uw, uh, ud = params[..., :num_bins], params[..., num_bins:2 * num_bins], params[..., 2 * num_bins:]
        uw, uh = uw / np.sqrt(16), uh / np.sqrt(16)
        out, logabsdet = spline(transform, uw, uh, ud, inverse=inverse, tails="linear", tail_bound=2.0)
        return torch.cat([identity, out], dim=1), logabsdet.sum(-1)

    rng = np.random.default_rng(19)
    data = torch.tensor(np.concatenate([rng.standard_normal((64, 2)), 2.5 * np.tanh(rng.standard_normal((64, 2)))], 1))
    data[0, 2] = 3.0  # beyond the tail bound: the linear tail
    optimizer = optim.Adam(net.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        z, logdet = forward(data)
        loss = -(base.log_prob(z).sum(-1) + logdet).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    z, logdet = forward(data)
    x_back, logdet_inv = forward(z.detach(), inverse=True)
    return {"history": history, "z": z, "logdet": logdet, "x_back": x_back, "logdet_inv": logdet_inv,
            "data": data, "grads": [p.grad for p in net.parameters()]}


def test_neural_spline_flow():
    weights = weights_of(make_spline_coupling)
    ours, _ = run_both(spline_flow, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["x_back"], ours["data"], atol=1e-9)  # the inverse inverts
    np.testing.assert_allclose(ours["logdet_inv"], -ours["logdet"], atol=1e-9)
    assert ours["z"][0, 2] == 3.0  # the linear tail is the identity
    assert ours["history"][-1] < ours["history"][0]


def test_spline_log_det_by_autograd():
    """The spline's logabsdet equals log dz/dx by autograd, elementwise (the transform is elementwise)."""
    torch = OURS.torch
    spline = spline_functions(OURS)
    rng = np.random.default_rng(20)
    x = torch.tensor(rng.uniform(-1.9, 1.9, 7), requires_grad=True)
    uw, uh, ud = (torch.tensor(rng.standard_normal((7, 4))) for _ in range(3))
    y, logabsdet = spline(x, uw, uh, ud[:, :3], tail_bound=2.0)
    (dy,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(np.log(dy.numpy()), logabsdet.detach().numpy(), rtol=1e-10, atol=1e-12)
