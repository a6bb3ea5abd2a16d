# ruff: noqa: B007, B023  (the programs are kept as their authors wrote them)
"""Normalizing flows and density estimation, run as tests/probe19_flows_common.py says. ``torch.distributions`` as
flows use it: a Pyro-style AutoDiagonalNormal unpacked through ``biject_to(support)`` (simplex, LKJ Cholesky,
positive, interval sites; a ``constraints.cat`` parameter by ``transform_to``); a Gaussian copula of
``CumulativeDistributionTransform``s in a ``CatTransform``; RBIG Gaussianization with KDE marginals
(``special.ndtri``, ``linalg.eigh``) fitted by L-BFGS; a density saved whole by ``torch.save`` (the transform's
``__getstate__`` leaves out the inverse that refers back to it). Flows on the torus (a Mobius mixture in complex
arithmetic, a circular spline) beside a VonMises mixture."""

import math

import numpy as np
import pytest

from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Pyro's AutoDiagonalNormal by hand: one unconstrained vector unpacked into sites through
# biject_to(site.support) (inv.forward_shape for each site's unconstrained size: the simplex by stick
# breaking, an LKJ correlation Cholesky factor, positive, interval and unit-interval sites), the ELBO
# with each site's log|det J|, a parameter on a constraints.cat support by transform_to
# ----------------------------------------------------------------------------------------------


def autoguide_data(seed=0):
    rng = np.random.default_rng(seed)
    comp = rng.integers(0, 3, 60)
    centres = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])
    x = centres[comp] + rng.standard_normal((60, 2)) @ np.array([[0.8, 0.0], [0.4, 0.5]])
    y = 1.5 * rng.standard_t(4, 40)
    z = (rng.random(30) < 0.3).astype(np.float64)
    return x, y, z


def autoguide(m, steps=8, particles=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    dist = torch.distributions
    constraints, biject_to, transform_to = dist.constraints, dist.biject_to, dist.transform_to
    x, y, z = (torch.from_numpy(a) for a in autoguide_data())
    f64 = dict(dtype=torch.float64)
    priors = {
        "weights": dist.Dirichlet(torch.ones(3, **f64)),
        "L": dist.LKJCholesky(2, concentration=torch.tensor(2.0, **f64)),
        "sigma": dist.Independent(dist.HalfCauchy(torch.ones(2, **f64)), 1),
        "nu": dist.Uniform(torch.tensor(1.0, **f64), torch.tensor(10.0, **f64)),
        "rho": dist.Beta(torch.tensor(2.0, **f64), torch.tensor(2.0, **f64)),
    }
    shapes, sizes = {}, {}
    for name, prior in priors.items():
        shape = prior.batch_shape + prior.event_shape
        shapes[name] = shape
        sizes[name] = math.prod(biject_to(prior.support).inv.forward_shape(shape))
    latent_dim = sum(sizes.values())
    loc = nn.Parameter(torch.zeros(latent_dim, **f64))
    scale_unconstrained = nn.Parameter(torch.full((latent_dim,), -2.0, **f64))
    locs = nn.Parameter(torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0]], **f64))
    bounds_constraint = constraints.cat([constraints.positive, constraints.interval(-1.0, 1.0)], dim=-1, lengths=[1, 1])
    bounds_unconstrained = nn.Parameter(transform_to(bounds_constraint).inv(torch.tensor([2.0, 0.25], **f64)))

    def unpack(latent):
        values, log_dets, pos = {}, 0.0, 0
        for name, prior in priors.items():
            t = biject_to(prior.support)
            u = latent[..., pos:pos + sizes[name]]
            pos += sizes[name]
            u = u.reshape(latent.shape[:-1] + t.inv.forward_shape(shapes[name]))
            value = t(u)
            ld = t.log_abs_det_jacobian(u, value)
            extra = ld.dim() - (latent.dim() - 1)
            log_dets = log_dets + (ld.sum(list(range(-extra, 0))) if extra > 0 else ld)
            values[name] = value
        return values, log_dets

    def model_log_prob(v):
        lp = sum(priors[name].log_prob(v[name]) for name in priors)
        bounds = transform_to(bounds_constraint)(bounds_unconstrained)
        scale_tril = v["sigma"].unsqueeze(-1) * v["L"]
        mix = dist.MixtureSameFamily(dist.Categorical(probs=v["weights"]),
                                     dist.MultivariateNormal(locs, scale_tril=scale_tril.unsqueeze(-3)))
        lp = lp + mix.log_prob(x).sum()
        lp = lp + dist.StudentT(v["nu"], bounds[0] * bounds[1], bounds[0]).log_prob(y).sum()
        lp = lp + dist.Bernoulli(probs=v["rho"]).log_prob(z).sum()
        return lp

    params = [loc, scale_unconstrained, locs, bounds_unconstrained]
    optimizer = optim.Adam(params, lr=0.05)
    torch.manual_seed(0)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        q = dist.Independent(dist.Normal(loc, nn.functional.softplus(scale_unconstrained)), 1)
        elbo = 0.0
        for p in range(particles):
            latent = q.rsample()
            values, log_det = unpack(latent)
            elbo = elbo + (model_log_prob(values) + log_det - q.log_prob(latent)) / particles
        (-elbo).backward()
        optimizer.step()
        history.append(elbo.item())
    with torch.no_grad():
        median, _ = unpack(loc)
        bounds = transform_to(bounds_constraint)(bounds_unconstrained)
    return {"history": history, "median": median, "bounds": bounds, "sizes": sizes,
            "loc": loc.detach(), "scale": scale_unconstrained.detach(), "locs": locs.detach()}


def test_autoguide_over_constrained_sites():
    ours, _ = run_both(autoguide, rtol=1e-7, atol=1e-9)
    assert ours["sizes"] == {"weights": 2, "L": 1, "sigma": 2, "nu": 1, "rho": 1}
    assert ours["median"]["weights"].sum() == pytest.approx(1.0)
    L = ours["median"]["L"]
    assert L[0, 1] == 0 and np.allclose((L ** 2).sum(-1), 1)  # a correlation matrix's Cholesky factor
    assert 1 < ours["median"]["nu"] < 10 and ours["bounds"][0] > 0 and -1 < ours["bounds"][1] < 1


# ----------------------------------------------------------------------------------------------
# Flows on the torus (Rezende et al. 2020): a convex mixture of Mobius transforms of the circle in
# complex arithmetic (torch.view_as_complex, torch.polar, torch.angle, remainder), a circular
# rational-quadratic spline (derivative at 2*pi tied to 0, knots by searchsorted) conditioned on the
# first angle, against a MixtureSameFamily of VonMises fitted to the same angles
# ----------------------------------------------------------------------------------------------


def make_torus_flow(m, K=3, bins=5):
    torch, nn, F = m.torch, m.nn, m.F
    TWO_PI = 2 * math.pi

    class MobiusMixture(nn.Module):
        def __init__(self, K):
            super().__init__()
            self.w_raw = nn.Parameter(0.5 * torch.randn(K, 2))
            self.logits = nn.Parameter(torch.zeros(K))

        def centres(self):
            r = self.w_raw.norm(dim=-1, keepdim=True)
            return torch.view_as_complex(0.99 * self.w_raw / (1 + r))  # |w| < 1

        def forward(self, theta):
            w = self.centres()
            z = torch.polar(torch.ones_like(theta), theta).unsqueeze(-1)
            one = torch.ones_like(z)

            def h(z):
                return (1 - w.abs() ** 2) / (z - w).abs() ** 2 * (z - w) - w

            psi = torch.remainder(torch.angle(h(z) / h(one)), TWO_PI)  # rotated so that 0 stays at 0
            dpsi = (1 - w.abs() ** 2) / (z - w).abs() ** 2
            weights = torch.softmax(self.logits, 0)
            return (weights * psi).sum(-1), torch.log((weights * dpsi).sum(-1))

    def circular_rqs(inputs, uw, uh, ud, inverse=False, min_bin_width=1e-3, min_derivative=1e-3):
        num_bins = uw.shape[-1]

        def knots(u):
            sizes = F.softmax(u, dim=-1)
            sizes = min_bin_width + (1 - min_bin_width * num_bins) * sizes
            cum = F.pad(torch.cumsum(sizes, dim=-1), pad=(1, 0), mode="constant", value=0.0) * TWO_PI
            cum[..., -1] = TWO_PI
            return cum, cum[..., 1:] - cum[..., :-1]

        cumwidths, widths = knots(uw)
        cumheights, heights = knots(uh)
        derivatives = min_derivative + F.softplus(ud)
        derivatives = torch.cat([derivatives, derivatives[..., :1]], dim=-1)  # periodic: d(2 pi) = d(0)
        knots_in = cumheights if inverse else cumwidths
        bin_idx = (torch.searchsorted(knots_in.contiguous(), inputs[..., None].contiguous(), right=True) - 1)
        bin_idx = bin_idx.clamp(0, num_bins - 1)
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
            root = (2 * c) / (-b - torch.sqrt(discriminant))
            outputs = root * input_bin_widths + input_cumwidths
            theta_one_minus_theta = root * (1 - root)
            denominator = input_delta + ((input_derivatives + input_derivatives_plus_one - 2 * input_delta)
                                         * theta_one_minus_theta)
            derivative_numerator = input_delta.pow(2) * (input_derivatives_plus_one * root.pow(2)
                                                         + 2 * input_delta * theta_one_minus_theta
                                                         + input_derivatives * (1 - root).pow(2))
            return outputs, -(torch.log(derivative_numerator) - 2 * torch.log(denominator))
        theta = (inputs - input_cumwidths) / input_bin_widths
        theta_one_minus_theta = theta * (1 - theta)
        numerator = input_heights * (input_delta * theta.pow(2) + input_derivatives * theta_one_minus_theta)
        denominator = input_delta + ((input_derivatives + input_derivatives_plus_one - 2 * input_delta)
                                     * theta_one_minus_theta)
        outputs = input_cumheights + numerator / denominator
        derivative_numerator = input_delta.pow(2) * (input_derivatives_plus_one * theta.pow(2)
                                                     + 2 * input_delta * theta_one_minus_theta
                                                     + input_derivatives * (1 - theta).pow(2))
        return outputs, torch.log(derivative_numerator) - 2 * torch.log(denominator)

    class TorusFlow(nn.Module):
        def __init__(self):
            super().__init__()
            self.mobius1 = MobiusMixture(K)
            self.mobius2 = MobiusMixture(K)
            self.shift = nn.Parameter(torch.tensor(0.3))
            self.conditioner = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3 * bins))
            self.bins = bins
            self.spline = circular_rqs

        def forward(self, x):
            t1, t2 = x[:, 0], x[:, 1]
            u1, ld1 = self.mobius1(t1)
            params = self.conditioner(torch.stack([torch.cos(t1), torch.sin(t1)], -1))
            uw, uh, ud = params.split([self.bins, self.bins, self.bins], dim=-1)  # a derivative per knot but the last
            s, ld2 = circular_rqs(torch.remainder(t2 + self.shift, TWO_PI), uw, uh, ud)
            u2, ld3 = self.mobius2(s)
            return torch.stack([u1, u2], -1), ld1 + ld2 + ld3

        def log_prob(self, x):
            u, ld = self(x)
            return -2 * math.log(TWO_PI) + ld  # uniform base on the torus

    return TorusFlow(), circular_rqs


def torus_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    t1 = rng.vonmises(1.0, 4.0, n)
    t2 = rng.vonmises(np.where(rng.random(n) < 0.5, t1 + 1.5, -2.0), 6.0)
    return np.remainder(np.stack([t1, t2], 1), 2 * np.pi)


def torus(m, weights, steps=5):
    torch, optim = m.torch, m.optim
    flow = load(m, make_torus_flow(m)[0], weights)
    x = torch.tensor(torus_data())
    flow = flow.double()
    optimizer = optim.Adam(flow.parameters(), lr=2e-2)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = -flow.log_prob(x).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    # a von Mises mixture by torch.distributions on the same angles
    D = torch.distributions
    logits = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    locs = torch.tensor([[0.5, -1.0], [1.5, 2.0]], dtype=torch.float64, requires_grad=True)
    log_conc = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    vm_opt = optim.Adam([logits, locs, log_conc], lr=0.1)
    vm_history = []
    for step in range(steps):
        mix = D.MixtureSameFamily(D.Categorical(logits=logits),
                                  D.VonMises(locs, log_conc.exp()))  # one mixture per angle (batch of 2)
        nll = -mix.log_prob(x).sum(-1).mean()
        vm_opt.zero_grad()
        nll.backward()
        vm_opt.step()
        vm_history.append(nll.item())
    # the flow's log-density by the Jacobian determinant of the whole map
    pts = x[:3].clone().requires_grad_()
    u, ld = flow(pts)
    jac = torch.stack([torch.autograd.grad(u[:, i].sum(), pts, retain_graph=True)[0] for i in range(2)], 1)
    return {"history": history, "vm_history": vm_history, "u": u, "ld": ld, "jac": jac,
            "params": [p.detach() for p in flow.parameters()]}


def test_torus_flow_mobius_and_circular_spline():
    weights = weights_of(lambda m: make_torus_flow(m)[0])
    ours, theirs = run_both(torus, weights, compare=False)
    if theirs is not None:
        vm_ours, vm_theirs = ours.pop("vm_history"), theirs.pop("vm_history")
        assert_same(ours, theirs, rtol=1e-8, atol=1e-9)
        # VonMises's ln I0 is exact here, PyTorch's a seven-digit polynomial fit (see distributions/von_mises.py)
        assert_same(vm_ours, vm_theirs, rtol=1e-6, atol=1e-7)
        ours["vm_history"] = vm_ours
    np.testing.assert_allclose(ours["ld"], np.log(np.abs(np.linalg.det(ours["jac"]))), rtol=1e-8, atol=1e-9)
    assert ((ours["u"] >= 0) & (ours["u"] < 2 * np.pi)).all()
    assert ours["history"][-1] < ours["history"][0] and ours["vm_history"][-1] < ours["vm_history"][0]


def circular_spline(m):
    torch = m.torch
    spline = make_torus_flow(m)[1]
    rng = np.random.default_rng(5)
    uw, uh, ud = (torch.tensor(rng.standard_normal(s), requires_grad=True) for s in [(6, 5), (6, 5), (6, 5)])
    x = torch.tensor([0.0, 0.4, 1.9, 3.3, 5.0, 2 * math.pi - 1e-9], dtype=torch.float64, requires_grad=True)
    y, ld = spline(x, uw, uh, ud)
    back, ld_inv = spline(y, uw, uh, ud, inverse=True)
    dy, = torch.autograd.grad(y.sum(), x, create_graph=True)
    grads = torch.autograd.grad(ld.sum() + y.sum(), [uw, uh, ud])
    return {"y": y, "ld": ld, "back": back, "ld_inv": ld_inv, "by_autograd": torch.log(dy), "grads": grads}


def test_circular_rational_quadratic_spline():
    ours, _ = run_both(circular_spline, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours["back"], [0.0, 0.4, 1.9, 3.3, 5.0, 2 * math.pi - 1e-9], atol=1e-8)
    np.testing.assert_allclose(ours["ld"], ours["by_autograd"], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours["ld_inv"], -ours["ld"], rtol=1e-8, atol=1e-9)
    assert ours["y"][0] == 0


# ----------------------------------------------------------------------------------------------
# A Gaussian copula as a TransformedDistribution: a MultivariateNormal whose correlation's Cholesky
# factor comes from CorrCholeskyTransform, Phi by CumulativeDistributionTransform(Normal), then each
# column's marginal by the inverse CDT of an Exponential and a Laplace (a CatTransform along the
# event), fitted by maximum likelihood; sampled with the same seed; the density checked by hand
# ----------------------------------------------------------------------------------------------


def copula_data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]], n)
    from math import erf
    u = 0.5 * (1 + np.vectorize(erf)(z / np.sqrt(2)))
    x0 = -np.log1p(-u[:, 0]) / 2.0
    x1 = 1.0 - 0.5 * np.sign(u[:, 1] - 0.5) * np.log1p(-2 * np.abs(u[:, 1] - 0.5))
    return np.stack([x0, x1], 1)


def copula(m, steps=6):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    T = D.transforms
    x = torch.tensor(copula_data())
    corr_raw = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    log_rate = torch.zeros((), dtype=torch.float64, requires_grad=True)
    loc = torch.zeros((), dtype=torch.float64, requires_grad=True)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def build():
        L = T.CorrCholeskyTransform()(corr_raw)
        base = D.MultivariateNormal(torch.zeros(2, dtype=torch.float64), scale_tril=L)
        std_normal = D.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
        phi = T.CumulativeDistributionTransform(std_normal)
        marginals = T.CatTransform([
            T.ComposeTransform([phi, T.CumulativeDistributionTransform(D.Exponential(log_rate.exp())).inv]),
            T.ComposeTransform([phi, T.CumulativeDistributionTransform(D.Laplace(loc, log_scale.exp())).inv]),
        ], dim=-1, lengths=[1, 1])
        return D.TransformedDistribution(base, [marginals]), L

    optimizer = optim.Adam([corr_raw, log_rate, loc, log_scale], lr=0.1)
    history = []
    for step in range(steps):
        dist, L = build()
        loss = -dist.log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    dist, L = build()
    lp = dist.log_prob(x[:5])
    torch.manual_seed(0)
    samples = dist.sample((4,))
    return {"history": history, "lp": lp, "samples": samples, "L": L.detach(),
            "params": [p.detach().clone() for p in (corr_raw, log_rate, loc, log_scale)],
            "shapes": (tuple(dist.batch_shape), tuple(dist.event_shape))}


def test_gaussian_copula_by_cumulative_distribution_transforms():
    ours, _ = run_both(copula, rtol=1e-9, atol=1e-10)
    assert ours["shapes"] == ((), (2,))
    assert ours["history"][-1] < ours["history"][0]
    # the density by hand: the copula density times the marginals
    corr_raw, log_rate, loc, log_scale = (p.item() for p in ours["params"])
    rho = np.tanh(corr_raw)
    rate, b = np.exp(log_rate), np.exp(log_scale)
    x = copula_data()[:5]
    u0 = 1 - np.exp(-rate * x[:, 0])
    u1 = np.where(x[:, 1] < loc, 0.5 * np.exp((x[:, 1] - loc) / b), 1 - 0.5 * np.exp(-(x[:, 1] - loc) / b))
    from statistics import NormalDist
    z = np.array([[NormalDist().inv_cdf(a), NormalDist().inv_cdf(c)] for a, c in zip(u0, u1)])
    log_copula = (-0.5 * np.log(1 - rho ** 2)
                  - (rho ** 2 * (z ** 2).sum(1) - 2 * rho * z[:, 0] * z[:, 1]) / (2 * (1 - rho ** 2)))
    log_marg = np.log(rate) - rate * x[:, 0] + (-np.log(2 * b) - np.abs(x[:, 1] - loc) / b)
    np.testing.assert_allclose(ours["lp"], log_copula + log_marg, rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# A fitted density saved whole with torch.save and loaded back (after log_prob, its transforms hold the
# inverses made on demand, which refer back to them)
# ----------------------------------------------------------------------------------------------


def saved_density(m):
    import io

    torch = m.torch
    D, T = torch.distributions, torch.distributions.transforms
    scale = torch.tensor(2.0)
    d = D.TransformedDistribution(D.Normal(torch.zeros(2), torch.ones(2)),
                                  [T.ComposeTransform([T.ExpTransform(), T.AffineTransform(torch.tensor(1.0), scale)])])
    x = torch.tensor([1.5, 4.0])
    before = d.log_prob(x)
    buffer = io.BytesIO()
    torch.save(d, buffer)
    buffer.seek(0)
    allowed = [D.TransformedDistribution, D.Normal, T.ComposeTransform, T.ExpTransform, T.AffineTransform,
               type(D.constraints.real), type(D.constraints.positive)]
    with torch.serialization.safe_globals(allowed):
        back = torch.load(buffer, weights_only=False)
    return before, back.log_prob(x)


def test_density_saved_whole_after_log_prob():
    """A transform and the inverse log_prob made for it refer to each other: the save stores what the
    transform's __getstate__ gives (the inverse left out, as pickle takes it), so it ends."""
    before, after = run_both(saved_density)[0]
    np.testing.assert_allclose(after, before, rtol=1e-6)
    np.testing.assert_allclose(before, [-1.1867, -2.0998], atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Gaussianization (RBIG, Laparra et al. 2011) with kernel-density marginals: each layer Gaussianizes each
# coordinate through its KDE's CDF (Normal.cdf over the training points, special.ndtri), log |dz/dx| by
# the KDE's density (logsumexp) over N(z), then rotates by the covariance's eigenvectors (linalg.eigh) or
# a random orthogonal matrix (linalg.qr of a seeded randn); the bandwidths are fitted by L-BFGS on held-out
# log-likelihood, differentiating through ndtri, eigh and the data-dependent layers
# ----------------------------------------------------------------------------------------------


def rbig(m, layers=3):
    torch, optim = m.torch, m.optim
    Normal = torch.distributions.Normal
    rng = np.random.default_rng(0)
    data = np.stack([rng.standard_normal(120), rng.standard_normal(120)], 1)
    data[:, 1] = 0.5 * data[:, 1] + np.sin(1.5 * data[:, 0])
    train, held = torch.tensor(data[:80]), torch.tensor(data[80:])
    log_h = torch.full((layers,), math.log(0.4), dtype=torch.float64, requires_grad=True)
    std = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    torch.manual_seed(0)
    rotations_random = [torch.linalg.qr(torch.randn(2, 2, dtype=torch.float64))[0] for _ in range(layers)]

    def marginal_gaussianize(x, ref, h):
        # x (n, d), ref (N, d): each coordinate through its own KDE
        u = (x[:, None, :] - ref[None, :, :]) / h
        cdf = std.cdf(u).mean(1).clamp(1e-10, 1 - 1e-10)
        log_pdf = torch.logsumexp(std.log_prob(u), dim=1) - math.log(ref.shape[0]) - torch.log(h)
        z = torch.special.ndtri(cdf)
        return z, (log_pdf - std.log_prob(z)).sum(-1)

    def flow(x, random_rotation):
        ref, total = train, torch.zeros(x.shape[0], dtype=torch.float64)
        for k in range(layers):
            h = log_h[k].exp()
            x, ld = marginal_gaussianize(x, ref, h)
            ref, _ = marginal_gaussianize(ref, ref, h)
            total = total + ld
            if random_rotation:
                R = rotations_random[k]
            else:
                cov = torch.cov(ref.T)
                _, R = torch.linalg.eigh(cov)
            x, ref = x @ R, ref @ R
        return x, total

    def log_likelihood(x, random_rotation):
        z, ld = flow(x, random_rotation)
        return std.log_prob(z).sum(-1) + ld

    results = {}
    for random_rotation in (False, True):
        with torch.no_grad():
            log_h.fill_(math.log(0.4))
        optimizer = optim.LBFGS([log_h], lr=0.5, max_iter=6, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = -log_likelihood(held, random_rotation).mean()
            loss.backward()
            return loss

        start = closure().item()
        optimizer.step(closure)
        final = -log_likelihood(held, random_rotation).mean()
        pts = held[:3].clone().requires_grad_()
        z, ld = flow(pts, random_rotation)
        jac = torch.stack([torch.autograd.grad(z[:, i].sum(), pts, retain_graph=True)[0] for i in range(2)], 1)
        results["random" if random_rotation else "pca"] = {
            "start": start, "final": final.detach(), "log_h": log_h.detach().clone(), "ld": ld.detach(),
            "jac": jac, "grad": torch.autograd.grad(final, log_h)[0]}
    return results


def test_rbig_gaussianization_with_kde_marginals():
    ours, _ = run_both(rbig, rtol=1e-7, atol=1e-9)
    for kind in ("pca", "random"):
        r = ours[kind]
        np.testing.assert_allclose(r["ld"], np.log(np.abs(np.linalg.det(r["jac"]))), rtol=1e-8, atol=1e-9)
        assert r["final"] < r["start"]
