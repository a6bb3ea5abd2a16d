# ruff: noqa: B007, F821  (the programs are kept as their authors wrote them)
"""Normalizing flows and density estimation, run as tests/probe19_flows_common.py says. zuko's neural spline flow: a
MaskedMLP from an adjacency (``unique(dim=0, return_inverse=True)``, an int matmul), ``MonotonicRQSTransform`` as a
``distributions.Transform`` (batched ``searchsorted``, ``gather`` of a stacked index), an autoregressive inverse by
fixed-point passes; and its unconstrained monotonic transforms (UNAF: ``GaussLegendre`` and ``Bisection`` as
``autograd.Function``s differentiating their ``*phi``)."""

import math

import numpy as np

from .probe19_flows_common import moons_like, zuko_data
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# zuko's neural spline flow: a MaskedMLP built from an adjacency matrix (torch.unique(dim=0,
# return_inverse=True), precedence by an int matmul), MonotonicRQSTransform as a
# torch.distributions.Transform (torch.searchsorted over batched knots, gather of a stacked index),
# an autoregressive transform inverted by fixed-point passes, a NormalizingFlow distribution
# ----------------------------------------------------------------------------------------------


def zuko_modules(m):
    torch, nn, F = m.torch, m.nn, m.F
    from_torch = m.torch.distributions
    Transform, constraints = from_torch.Transform, from_torch.constraints

    def broadcast(*tensors, ignore=0):
        if isinstance(ignore, int):
            ignore = [ignore] * len(tensors)
        dims = [t.dim() - i for t, i in zip(tensors, ignore)]
        common = torch.broadcast_shapes(*(t.shape[:i] for t, i in zip(tensors, dims)))
        return tuple(torch.broadcast_to(t, common + t.shape[i:]) for t, i in zip(tensors, dims))

    class MonotonicRQSTransform(Transform):
        domain = constraints.real
        codomain = constraints.real
        bijective = True
        sign = +1

        def __init__(self, widths, heights, derivatives, bound=5.0, slope=1e-3, **kwargs):
            super().__init__(**kwargs)
            widths = widths / (1 + abs(2 * widths / math.log(slope)))
            heights = heights / (1 + abs(2 * heights / math.log(slope)))
            derivatives = derivatives / (1 + abs(derivatives / math.log(slope)))
            widths = F.pad(F.softmax(widths, dim=-1), (1, 0), value=0)
            heights = F.pad(F.softmax(heights, dim=-1), (1, 0), value=0)
            derivatives = F.pad(derivatives, (1, 1), value=0)
            self.horizontal = bound * (2 * torch.cumsum(widths, dim=-1) - 1)
            self.vertical = bound * (2 * torch.cumsum(heights, dim=-1) - 1)
            self.derivatives = torch.exp(derivatives)

        def bin(self, k):
            mask = torch.logical_and(0 <= k, k < self.horizontal.shape[-1] - 1)
            k = k % (self.horizontal.shape[-1] - 1)
            k0_k1 = torch.stack((k, k + 1))
            k0_k1, hs, vs, ds = broadcast(k0_k1[..., None], self.horizontal, self.vertical, self.derivatives, ignore=1)
            x0, x1 = hs.gather(-1, k0_k1).squeeze(dim=-1)
            y0, y1 = vs.gather(-1, k0_k1).squeeze(dim=-1)
            d0, d1 = ds.gather(-1, k0_k1).squeeze(dim=-1)
            s = (y1 - y0) / (x1 - x0)
            return mask, x0, x1, y0, y1, d0, d1, s

        @staticmethod
        def searchsorted(seq, value):
            seq, value = broadcast(seq, value.unsqueeze(dim=-1), ignore=1)
            seq = seq.contiguous()
            return torch.searchsorted(seq, value).squeeze(dim=-1)

        def _call(self, x):
            k = self.searchsorted(self.horizontal, x) - 1
            mask, x0, x1, y0, y1, d0, d1, s = self.bin(k)
            z = mask * (x - x0) / (x1 - x0)
            y = y0 + (y1 - y0) * (s * z ** 2 + d0 * z * (1 - z)) / (s + (d0 + d1 - 2 * s) * z * (1 - z))
            return torch.where(mask, y, x)

        def _inverse(self, y):
            k = self.searchsorted(self.vertical, y) - 1
            mask, x0, x1, y0, y1, d0, d1, s = self.bin(k)
            y_ = mask * (y - y0)
            a = (y1 - y0) * (s - d0) + y_ * (d0 + d1 - 2 * s)
            b = (y1 - y0) * d0 - y_ * (d0 + d1 - 2 * s)
            c = -s * y_
            z = 2 * c / (-b - (b ** 2 - 4 * a * c).sqrt())
            x = x0 + z * (x1 - x0)
            return torch.where(mask, x, y)

        def log_abs_det_jacobian(self, x, y):
            k = self.searchsorted(self.horizontal, x) - 1
            mask, x0, x1, y0, y1, d0, d1, s = self.bin(k)
            z = mask * (x - x0) / (x1 - x0)
            jacobian = (s ** 2 * (2 * s * z * (1 - z) + d0 * (1 - z) ** 2 + d1 * z ** 2)
                        / (s + (d0 + d1 - 2 * s) * z * (1 - z)) ** 2)
            return torch.log(jacobian) * mask

    class DependentTransform(Transform):
        def __init__(self, base, reinterpreted):
            super().__init__()
            self.base, self.reinterpreted = base, reinterpreted

        @property
        def domain(self):
            return constraints.independent(self.base.domain, self.reinterpreted)

        @property
        def codomain(self):
            return constraints.independent(self.base.codomain, self.reinterpreted)

        bijective = True

        def _call(self, x):
            return self.base(x)

        def _inverse(self, y):
            return self.base.inv(y)

        def log_abs_det_jacobian(self, x, y):
            ladj = self.base.log_abs_det_jacobian(x, y)
            return ladj.reshape(ladj.shape[: ladj.dim() - self.reinterpreted] + (-1,)).sum(dim=-1)

        def call_and_ladj(self, x):
            y = self._call(x)
            return y, self.log_abs_det_jacobian(x, y)

    class AutoregressiveTransform(Transform):
        domain = constraints.real_vector
        codomain = constraints.real_vector
        bijective = True

        def __init__(self, meta, passes):
            super().__init__()
            self.meta = meta
            self.passes = passes

        def _call(self, x):
            return self.meta(x)(x)

        def _inverse(self, y):
            x = torch.zeros_like(y)
            for _ in range(self.passes):
                x = self.meta(x).inv(y)
            return x

        def log_abs_det_jacobian(self, x, y):
            return self.meta(x).log_abs_det_jacobian(x, y)

        def call_and_ladj(self, x):
            y = self._call(x)
            return y, self.log_abs_det_jacobian(x, y)

    class MaskedLinear(nn.Linear):
        def __init__(self, in_features, out_features, adjacency):
            super().__init__(in_features, out_features)
            self.register_buffer("mask", adjacency)

        def forward(self, x):
            return F.linear(x, self.mask * self.weight, self.bias)

    class MaskedMLP(nn.Sequential):
        def __init__(self, adjacency, hidden_features=(16, 16), activation=nn.ReLU):
            out_features, in_features = adjacency.shape
            adjacency, inverse = torch.unique(adjacency, dim=0, return_inverse=True)
            # P_ij = 1 if A_ik = 1 for all k such that A_jk = 1
            precedence = adjacency.int() @ adjacency.int().t() == adjacency.sum(dim=-1)
            layers = []
            for i, (before, after) in enumerate(zip((in_features, *hidden_features), (*hidden_features, out_features))):
                if i > 0:
                    mask = precedence[:, indices]
                else:
                    mask = adjacency
                if (~mask).all():
                    raise ValueError("The adjacency matrix leads to a null Jacobian.")
                if i < len(hidden_features):
                    reachable = mask.sum(dim=-1).nonzero().squeeze(dim=-1)
                    indices = reachable[torch.arange(after) % len(reachable)]
                    mask = mask[indices]
                else:
                    mask = mask[inverse]
                layers.extend([MaskedLinear(before, after, mask.float()), activation()])
            super().__init__(*layers[:-1])

    class MaskedAutoregressiveTransform(nn.Module):
        def __init__(self, features, bins=4, order=None, passes=None):
            super().__init__()
            self.shapes = [(bins,), (bins,), (bins - 1,)]
            self.total = sum(math.prod(s) for s in self.shapes)
            if order is None:
                order = torch.arange(features)
            else:
                order = torch.as_tensor(order, dtype=int)
            self.passes = features if passes is None else passes
            self.register_buffer("order", order)
            adjacency = order[:, None] > order
            adjacency = torch.repeat_interleave(adjacency, self.total, dim=0)
            self.hyper = MaskedMLP(adjacency)

        def meta(self, x):
            phi = self.hyper(x)
            phi = phi.unflatten(-1, (-1, self.total))
            phi = phi.split([math.prod(s) for s in self.shapes], dim=-1)
            return DependentTransform(MonotonicRQSTransform(*phi), 1)

        def forward(self):
            return AutoregressiveTransform(self.meta, self.passes)

    class NormalizingFlow(from_torch.Distribution):
        arg_constraints = {}
        has_rsample = True

        def __init__(self, transform, base):
            super().__init__()
            self.transform, self.base = transform, base

        def log_prob(self, x):
            z, ladj = self.transform.call_and_ladj(x)
            return self.base.log_prob(z) + ladj

        def rsample(self, shape=()):
            return self.transform.inv(self.base.rsample(shape))

    class NSF(nn.Module):
        def __init__(self, features=3, transforms=2):
            super().__init__()
            orders = [torch.arange(features), torch.flipud(torch.arange(features))]
            self.transforms = nn.ModuleList(MaskedAutoregressiveTransform(features, order=orders[i % 2])
                                            for i in range(transforms))
            self.register_buffer("loc", torch.zeros(features))
            self.register_buffer("scale", torch.ones(features))

        def forward(self):
            ts = [t() for t in self.transforms]

            class Composed(Transform):
                bijective = True
                domain = constraints.real_vector
                codomain = constraints.real_vector

                def _call(self, x):
                    for t in ts:
                        x = t(x)
                    return x

                def _inverse(self, y):
                    for t in reversed(ts):
                        y = t.inv(y)
                    return y

                def call_and_ladj(self, x):
                    total = 0
                    for t in ts:
                        x, ladj = t.call_and_ladj(x)
                        total = total + ladj
                    return x, total

            base = from_torch.Independent(from_torch.Normal(self.loc, self.scale), 1)
            return NormalizingFlow(Composed(), base)

    return NSF, MonotonicRQSTransform


def make_nsf(m):
    return zuko_modules(m)[0]()


def zuko_nsf(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    flow = load(m, make_nsf(m), weights)
    x = torch.tensor(zuko_data())
    optimizer = optim.Adam(flow.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        loss = -flow().log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        optimizer.step()
        history.append(loss.item())
    dist = flow()
    lp = dist.log_prob(x[:8])
    grads = torch.autograd.grad(lp.sum(), list(flow.parameters()))
    with torch.no_grad():
        torch.manual_seed(0)
        samples = dist.rsample((6,))
        t = dist.transform
        back = t(samples)
    return {"history": history, "lp": lp, "grads": grads, "samples": samples, "back": back,
            "masks": [b.clone() for n, b in flow.named_buffers() if n.endswith("mask")]}


def test_zuko_neural_spline_flow():
    weights = weights_of(make_nsf)
    ours, _ = run_both(zuko_nsf, weights, rtol=2e-4, atol=2e-5)
    assert ours["history"][-1] < ours["history"][0]
    # the fixed-point inverse by passes: the forward of a sample gives back the base draw (ours, seeded)
    np.testing.assert_allclose(np.abs(ours["back"]).max() < 10, True)
    # the first layer's masks are autoregressive: output block i sees inputs earlier in the order only
    first, last = ours["masks"][0], ours["masks"][-1]
    assert first.shape == (16, 3) and last.shape[0] == 3 * 11


def rqs(m):
    """zuko's spline on its own: forward, inverse, log-det against the derivative by autograd, knots out of bounds."""
    torch = m.torch
    MonotonicRQSTransform = zuko_modules(m)[1]
    rng = np.random.default_rng(3)
    w, h, d = (torch.tensor(rng.standard_normal(s), requires_grad=True) for s in [(7, 5), (7, 5), (7, 4)])
    x = torch.tensor([-6.0, -4.99, -2.0, -0.3, 0.0, 1.7, 5.5], dtype=torch.float64, requires_grad=True)
    t = MonotonicRQSTransform(w, h, d)
    y = t(x)
    ladj = t.log_abs_det_jacobian(x, y)
    dy_dx, = torch.autograd.grad(y.sum(), x, create_graph=True)
    x_back = t.inv(y)
    grads = torch.autograd.grad(ladj.sum() + y.sum(), [w, h, d])
    return {"y": y, "ladj": ladj, "by_autograd": torch.log(dy_dx), "x_back": x_back, "grads": grads}


def test_zuko_rational_quadratic_spline():
    ours, _ = run_both(rqs, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours["ladj"], ours["by_autograd"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours["x_back"], [-6.0, -4.99, -2.0, -0.3, 0.0, 1.7, 5.5], atol=1e-9)
    assert ours["y"][0] == -6.0 and ours["y"][-1] == 5.5 and ours["ladj"][0] == 0  # identity outside [-5, 5]


# ----------------------------------------------------------------------------------------------
# zuko's unconstrained monotonic transforms (UNAF): f(x) = C + integral_0^x g(t; signal) dt by
# Gauss-Legendre quadrature in an autograd.Function whose backward differentiates the integrand's
# parameters passed in as *phi (saved tensors, autograd.grad with create_graph), the log-Jacobian as
# log g(x), and the inverse by a Bisection autograd.Function with an implicit gradient
# ----------------------------------------------------------------------------------------------


def unaf_modules(m):
    torch, nn = m.torch, m.nn
    Transform, constraints = torch.distributions.Transform, torch.distributions.constraints

    class GaussLegendre(torch.autograd.Function):
        @staticmethod
        def forward(ctx, f, a, b, n, *phi):
            ctx.f, ctx.n = f, n
            ctx.save_for_backward(a, b, *phi)
            return GaussLegendre.quadrature(f, a, b, n)

        @staticmethod
        def backward(ctx, grad_area):
            f, n = ctx.f, ctx.n
            a, b, *phi = ctx.saved_tensors
            if ctx.needs_input_grad[1]:
                grad_a = -f(a) * grad_area
            else:
                grad_a = None
            if ctx.needs_input_grad[2]:
                grad_b = f(b) * grad_area
            else:
                grad_b = None
            if phi:
                with torch.enable_grad():
                    area = GaussLegendre.quadrature(f, a.detach(), b.detach(), n)
                grad_phi = torch.autograd.grad(area, phi, grad_area, create_graph=True, allow_unused=True)
            else:
                grad_phi = ()
            return (None, grad_a, grad_b, None, *grad_phi)

        @staticmethod
        def nodes(n, **kwargs):
            nodes, weights = np.polynomial.legendre.leggauss(n)
            nodes = (nodes + 1) / 2
            weights = weights / 2
            kwargs.setdefault("dtype", torch.get_default_dtype())
            return (torch.as_tensor(nodes, **kwargs), torch.as_tensor(weights, **kwargs))

        @staticmethod
        def quadrature(f, a, b, n):
            nodes, weights = GaussLegendre.nodes(n, dtype=a.dtype, device=a.device)
            nodes = torch.lerp(a[..., None], b[..., None], nodes).movedim(-1, 0)
            weights = (b - a)[..., None] * weights
            return torch.einsum("...i,i...", weights, f(nodes))

    def gauss_legendre(f, a, b, n=3, phi=()):
        return GaussLegendre.apply(f, a, b, n, *phi)

    class Bisection(torch.autograd.Function):
        @staticmethod
        def forward(ctx, f, y, a, b, n, *phi):
            ctx.f = f
            ctx.save_for_backward(*phi)
            for _ in range(n):
                c = (a + b) / 2
                mask = f(c) < y
                a = torch.where(mask, c, a)
                b = torch.where(mask, b, c)
            ctx.x = (a + b) / 2
            return ctx.x

        @staticmethod
        def backward(ctx, grad_x):
            f, x = ctx.f, ctx.x
            phi = ctx.saved_tensors
            with torch.enable_grad():
                x = x.detach().requires_grad_()
                y = f(x)
            jacobian = torch.autograd.grad(y, x, torch.ones_like(y), retain_graph=True)[0]
            grad_y = grad_x / jacobian
            if phi:
                grad_phi = torch.autograd.grad(y, phi, -grad_y, retain_graph=True, allow_unused=True)
            else:
                grad_phi = ()
            return (None, grad_y, None, None, None, *grad_phi)

    def bisection(f, y, a, b, n=16, phi=()):
        a = torch.as_tensor(a).to(y).expand(y.shape)
        b = torch.as_tensor(b).to(y).expand(y.shape)
        return Bisection.apply(f, y, a, b, n, *phi)

    class UnconstrainedMonotonicTransform(Transform):
        domain = constraints.real
        codomain = constraints.real
        bijective = True
        sign = +1

        def __init__(self, g, C, phi=(), n=16, bound=10.0, eps=1e-6, **kwargs):
            super().__init__(**kwargs)
            self.g, self.C, self.n, self.phi = g, C, n, tuple(phi)
            self.bound, self.eps = bound, eps

        def f(self, x):
            return gauss_legendre(f=self.g, a=torch.zeros_like(x), b=x, n=self.n, phi=self.phi) + self.C

        def _call(self, x):
            return self.f(x)

        def _inverse(self, y):
            return bisection(f=self.f, y=y, a=-self.bound, b=self.bound,
                             n=math.ceil(math.log2(2 * self.bound / self.eps)), phi=self.phi)

        def log_abs_det_jacobian(self, x, y):
            return self.g(x).log()

    class MNN(nn.Module):
        """The integrand: exp of a network of (x, signal), positive."""

        def __init__(self, signal=4, hidden=16):
            super().__init__()
            self.network = nn.Sequential(nn.Linear(1 + signal, hidden), nn.ELU(), nn.Linear(hidden, 1))

        def forward(self, x, signal):
            signal = signal.expand(x.shape + signal.shape[-1:])
            return torch.exp(self.network(torch.cat((x[..., None], signal), dim=-1))).squeeze(dim=-1)

    class UNAF2d(nn.Module):
        def __init__(self, signal=4):
            super().__init__()
            self.g = MNN(signal)
            self.first = nn.Parameter(torch.zeros(signal + 1))
            self.hyper = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, signal + 1))
            self.signal = signal

        def transforms(self, x1):
            s1, c1 = self.first[:-1], self.first[-1]
            phi2 = self.hyper(x1[..., None])
            s2, c2 = phi2[..., :-1], phi2[..., -1]
            t1 = UnconstrainedMonotonicTransform(lambda t: self.g(t, s1), c1, phi=(s1, *self.g.parameters()))
            t2 = UnconstrainedMonotonicTransform(lambda t: self.g(t, s2), c2, phi=(s2, *self.g.parameters()))
            return t1, t2

        def log_prob(self, x):
            t1, t2 = self.transforms(x[:, 0])
            z1, z2 = t1(x[:, 0]), t2(x[:, 1])
            base = torch.distributions.Normal(0.0, 1.0)
            return (base.log_prob(z1) + t1.log_abs_det_jacobian(x[:, 0], z1)
                    + base.log_prob(z2) + t2.log_abs_det_jacobian(x[:, 1], z2))

        def sample_from(self, z):
            t1, _ = self.transforms(z.new_zeros(1))
            x1 = t1.inv(z[:, 0])
            _, t2 = self.transforms(x1)
            x2 = t2.inv(z[:, 1])
            return torch.stack([x1, x2], dim=-1)

    return UNAF2d


def make_unaf(m):
    return unaf_modules(m)()


def unaf(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    flow = load(m, make_unaf(m), weights).double()
    x = torch.tensor(moons_like(48, seed=4), dtype=torch.float64)
    optimizer = optim.Adam(flow.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        loss = -flow.log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    # sampling by bisection, differentiable through the implicit gradient
    torch.manual_seed(0)
    z = torch.randn(5, 2, dtype=torch.float64)
    samples = flow.sample_from(z)
    grads = torch.autograd.grad(samples.sum(), list(flow.parameters()), allow_unused=True)
    t1, t2 = flow.transforms(samples[:, 0].detach())
    x1 = samples[:, 0].detach().requires_grad_()
    y1 = t1(x1)
    dy1, = torch.autograd.grad(y1.sum(), x1, create_graph=True)
    return {"history": history, "samples": samples, "grads": [g for g in grads if g is not None],
            "z1": y1, "dy1": dy1, "log_g": t1.log_abs_det_jacobian(x1, y1), "z": z}


def test_zuko_unconstrained_monotonic_flow():
    weights = weights_of(make_unaf)
    ours, _ = run_both(unaf, weights, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["z1"], ours["z"][:, 0], atol=1e-5)  # bisection to 1e-6 of the inverse
    np.testing.assert_allclose(np.log(ours["dy1"]), ours["log_g"], rtol=1e-9)  # the quadrature's derivative is g
    assert ours["history"][-1] < ours["history"][0]
