# ruff: noqa: B006, B007, B008, B023, E741, E731, F821, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Normalizing flows and density estimation (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and the same seeded draws, comparing log-densities, samples, gradients and
short training trajectories, and checked by hand (NumPy, change of variables by the Jacobian) where PyTorch
is missing.

- normflows' planar and radial flows fitted by the reverse KL to a two-moons energy (an int64 buffer in the
  log-det, ``linalg.vector_norm`` over a list of dims, seeded base draws).
- zuko's neural spline flow: a MaskedMLP from an adjacency (``unique(dim=0, return_inverse=True)``, an int
  matmul), ``MonotonicRQSTransform`` as a ``distributions.Transform`` (batched ``searchsorted``, ``gather`` of a
  stacked index), an autoregressive inverse by fixed-point passes; and its unconstrained monotonic transforms
  (UNAF: ``GaussLegendre`` and ``Bisection`` as ``autograd.Function``s differentiating their ``*phi``).
- Pyro's IAF: a ``TransformModule`` (a Transform that is an ``nn.Module``), AutoRegressiveNN masks from a
  permutation, ``clamp_preserve_gradients``, the cached log-scale, ``Permute``, a sequential inverse.
- BNAF (block-masked weights, 4-d log-Jacobian blocks by ``logsumexp``, gated residuals, amsgrad,
  ReduceLROnPlateau); Sylvester flows in a VAE (orthogonal by Bjorck steps and by Householder products, in-place
  diagonal writes by advanced indexing); UMNN's Clenshaw-Curtis neural integral (an ``autograd.Function`` whose
  backward takes ``autograd.grad`` of the integrand); residual flows (spectral norm, LipSwish, power-series
  log-det with Hutchinson noise, MemoryEfficientLogDetEstimator); NICE with a logistic prior; y0ast's Glow
  (LU/slogdet 1x1 convolutions, shuffles, learnt priors, class conditioning, reverse sampling by
  ``torch.normal``); an image flow in bits per dimension (variational dequantisation, checkerboard coupling,
  ``pixel_unshuffle``, normflows' ActNorm, Glow's coupling and Split2d).
- Flows on the torus (a Mobius mixture in complex arithmetic, a circular spline) beside a VonMises mixture.
- ``torch.distributions`` as flows use it: a Pyro-style AutoDiagonalNormal unpacked through
  ``biject_to(support)`` (simplex, LKJ Cholesky, positive, interval sites; a ``constraints.cat`` parameter by
  ``transform_to``); a Gaussian copula of ``CumulativeDistributionTransform``s in a ``CatTransform``; RBIG
  Gaussianization with KDE marginals (``special.ndtri``, ``linalg.eigh``) fitted by L-BFGS; a density saved whole
  by ``torch.save`` (the transform's ``__getstate__`` leaves out the inverse that refers back to it).
- sbi's neural posterior estimation on nflows: a conditional MAF (degree masks, a context layer, an inverse by
  one pass per feature), a non-persistent float64 buffer, a BoxUniform prior and rejection within its support."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Planar and radial flows (Rezende & Mohamed 2015) as normflows writes them, fitted by the reverse KL
# to an unnormalised two-moons energy
# ----------------------------------------------------------------------------------------------


def make_planar_radial(m, K=6):
    torch, nn = m.torch, m.nn

    class Planar(nn.Module):
        def __init__(self, shape):
            super().__init__()
            lim_w = np.sqrt(2.0 / np.prod(shape))
            lim_u = np.sqrt(2)
            self.u = nn.Parameter(torch.empty(shape)[None])
            nn.init.uniform_(self.u, -lim_u, lim_u)
            self.w = nn.Parameter(torch.empty(shape)[None])
            nn.init.uniform_(self.w, -lim_w, lim_w)
            self.b = nn.Parameter(torch.zeros(1))
            self.h = torch.tanh

        def forward(self, z):
            lin = torch.sum(self.w * z, list(range(1, self.w.dim())), keepdim=True) + self.b
            inner = torch.sum(self.w * self.u)
            # constrain w.u > -1
            u = self.u + (torch.log(1 + torch.exp(inner)) - 1 - inner) * self.w / torch.sum(self.w ** 2)
            h_ = lambda x: 1 / torch.cosh(x) ** 2
            z_ = z + u * self.h(lin)
            log_det = torch.log(torch.abs(1 + torch.sum(self.w * u) * h_(lin.reshape(-1))))
            return z_, log_det

    class Radial(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.d_cpu = torch.prod(torch.tensor(shape))
            self.register_buffer("d", self.d_cpu)
            self.beta = nn.Parameter(torch.empty(1))
            lim = 1.0 / np.prod(shape)
            nn.init.uniform_(self.beta, -lim - 1.0, lim - 1.0)
            self.alpha = nn.Parameter(torch.empty(1))
            nn.init.uniform_(self.alpha, -lim, lim)
            self.z_0 = nn.Parameter(torch.randn(shape)[None])

        def forward(self, z):
            beta = torch.log(1 + torch.exp(self.beta)) - torch.abs(self.alpha)
            dz = z - self.z_0
            r = torch.linalg.vector_norm(dz, dim=list(range(1, self.z_0.dim())), keepdim=True)
            h_arr = beta / (torch.abs(self.alpha) + r)
            h_arr_ = -beta * r / (torch.abs(self.alpha) + r) ** 2
            z_ = z + h_arr * dz
            log_det = (self.d - 1) * torch.log(1 + h_arr) + torch.log(1 + h_arr + h_arr_)
            log_det = log_det.reshape(-1)
            return z_, log_det

    class DiagGaussian(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.shape = (shape,)
            self.d = np.prod(self.shape)
            self.loc = nn.Parameter(torch.zeros(1, *self.shape))
            self.log_scale = nn.Parameter(torch.zeros(1, *self.shape))

        def forward(self, num_samples=1):
            eps = torch.randn((num_samples,) + self.shape, dtype=self.loc.dtype, device=self.loc.device)
            z = self.loc + torch.exp(self.log_scale) * eps
            log_p = -0.5 * self.d * np.log(2 * np.pi) - torch.sum(self.log_scale + 0.5 * torch.pow(eps, 2),
                                                                   list(range(1, len(self.shape) + 1)))
            return z, log_p

    class NormalizingFlow(nn.Module):
        def __init__(self, q0, flows):
            super().__init__()
            self.q0 = q0
            self.flows = nn.ModuleList(flows)

        def sample(self, num_samples=1):
            z, log_q = self.q0(num_samples)
            for flow in self.flows:
                z, log_det = flow(z)
                log_q -= log_det
            return z, log_q

        def reverse_kld(self, target, num_samples=1, beta=1.0):
            z, log_q = self.sample(num_samples)
            log_p = target(z)
            return torch.mean(log_q) - beta * torch.mean(log_p)

    flows = [Planar((2,)) if k % 2 == 0 else Radial((2,)) for k in range(K)]
    return NormalizingFlow(DiagGaussian(2), flows)


def two_moons(m, z):
    torch = m.torch
    a = torch.abs(z[:, 0])
    return (-0.5 * ((torch.norm(z, dim=1) - 2) / 0.2) ** 2 - 0.5 * ((a - 2) / 0.3) ** 2
            + torch.log(1 + torch.exp(-4 * a / 0.09)))


def planar_radial(m, weights, steps=6):
    torch, optim = m.torch, m.optim
    model = load(m, make_planar_radial(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=5e-3, weight_decay=1e-5)
    torch.manual_seed(0)
    history = []
    for it in range(steps):
        optimizer.zero_grad()
        loss = model.reverse_kld(lambda z: two_moons(m, z), num_samples=64, beta=min(1.0, 0.1 + it / steps))
        if ~(torch.isnan(loss) | torch.isinf(loss)):
            loss.backward()
            optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        torch.manual_seed(1)
        z, log_q = model.sample(5)
    # the log-density by the change of variables, its Jacobian by autograd for one draw
    torch.manual_seed(2)
    z0, log_q0 = model.q0(1)
    z0 = z0.detach().requires_grad_()
    zk, total = z0, 0
    for flow in model.flows:
        zk, ld = flow(zk)
        total = total + ld
    rows = [torch.autograd.grad(zk[0, i], z0, retain_graph=True)[0][0] for i in range(2)]
    jac = torch.stack(rows)
    return {"history": history, "z": z, "log_q": log_q, "params": [p.detach().clone() for p in model.parameters()],
            "log_det": total, "jac": jac, "d": model.flows[1].d}


def test_planar_and_radial_flows_reverse_kl():
    weights = weights_of(make_planar_radial)
    ours, _ = run_both(planar_radial, weights, rtol=2e-4, atol=2e-5)
    assert ours["d"].dtype == np.int64 and ours["d"] == 2
    assert np.isfinite(ours["history"]).all()
    # log|det J| of the composition is the sum of the layers' (by the Jacobian autograd gives)
    assert ours["log_det"][0] == pytest.approx(np.log(abs(np.linalg.det(ours["jac"]))), rel=1e-4, abs=1e-5)


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


def zuko_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    x[:, 1] = np.sin(2 * x[:, 0]) + 0.3 * x[:, 1]
    x[:, 2] = x[:, 0] * x[:, 1] + 0.2 * x[:, 2]
    return 1.5 * x


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
# Pyro's inverse autoregressive flow: a TransformModule (a torch.distributions.Transform that is also an
# nn.Module), AutoRegressiveNN's masks from a permutation, clamp_preserve_gradients, the cached log-scale
# and the cache_size=1 identity check, a sequential inverse over the permutation, Permute's inverse index
# ----------------------------------------------------------------------------------------------


def pyro_modules(m):
    torch, nn, F = m.torch, m.nn, m.F
    dist = m.torch.distributions
    constraints = dist.constraints

    class TransformModule(dist.Transform, nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

        def __hash__(self):
            return super(torch.nn.Module, self).__hash__()

    def clamp_preserve_gradients(x, min, max):
        return x + (x.clamp(min, max) - x).detach()

    def sample_mask_indices(input_dim, hidden_dim, simple=True):
        indices = torch.linspace(1, input_dim, steps=hidden_dim, device="cpu").to(torch.Tensor().device)
        return torch.round(indices)

    def create_mask(input_dim, context_dim, hidden_dims, permutation, output_dim_multiplier):
        var_index = torch.empty(permutation.shape, dtype=torch.get_default_dtype())
        var_index[permutation] = torch.arange(input_dim, dtype=torch.get_default_dtype())
        input_indices = torch.cat((torch.zeros(context_dim), 1 + var_index))
        hidden_indices = [sample_mask_indices(input_dim - 1, h) for h in hidden_dims]
        output_indices = (var_index + 1).repeat(output_dim_multiplier)
        mask_skip = (output_indices.unsqueeze(-1) > input_indices.unsqueeze(0)).type_as(var_index)
        masks = [(hidden_indices[0].unsqueeze(-1) >= input_indices.unsqueeze(0)).type_as(var_index)]
        for i in range(1, len(hidden_dims)):
            masks.append((hidden_indices[i].unsqueeze(-1) >= hidden_indices[i - 1].unsqueeze(0)).type_as(var_index))
        masks.append((output_indices.unsqueeze(-1) > hidden_indices[-1].unsqueeze(0)).type_as(var_index))
        return masks, mask_skip

    class MaskedLinear(nn.Linear):
        def __init__(self, in_features, out_features, mask, bias=True):
            super().__init__(in_features, out_features, bias)
            self.register_buffer("mask", mask.data)

        def forward(self, _input):
            masked_weight = self.weight * self.mask
            return F.linear(_input, masked_weight, self.bias)

    class AutoRegressiveNN(nn.Module):
        def __init__(self, input_dim, hidden_dims, param_dims=[1, 1], permutation=None, skip_connections=False,
                     nonlinearity=nn.ReLU()):
            super().__init__()
            self.input_dim = input_dim
            self.param_dims = param_dims
            self.count_params = len(param_dims)
            self.output_multiplier = sum(param_dims)
            self.all_ones = (torch.tensor(param_dims) == 1).all().item()
            if permutation is None:
                self.permutation = torch.randperm(input_dim, device="cpu").to(torch.Tensor().device)
            else:
                self.permutation = permutation.type(dtype=torch.int64)
            self.masks, self.mask_skip = create_mask(input_dim, 0, hidden_dims, self.permutation,
                                                     self.output_multiplier)
            layers = [MaskedLinear(input_dim, hidden_dims[0], self.masks[0])]
            for i in range(1, len(hidden_dims)):
                layers.append(MaskedLinear(hidden_dims[i - 1], hidden_dims[i], self.masks[i]))
            layers.append(MaskedLinear(hidden_dims[-1], input_dim * self.output_multiplier, self.masks[-1]))
            self.layers = nn.ModuleList(layers)
            self.skip_layer = (MaskedLinear(input_dim, input_dim * self.output_multiplier, self.mask_skip, bias=False)
                               if skip_connections else None)
            self.f = nonlinearity

        def get_permutation(self):
            return self.permutation

        def forward(self, x):
            h = x
            for layer in self.layers[:-1]:
                h = self.f(layer(h))
            h = self.layers[-1](h)
            if self.skip_layer is not None:
                h = h + self.skip_layer(x)
            if self.output_multiplier == 1:
                return h
            h = h.reshape(list(x.size()[:-1]) + [self.output_multiplier, self.input_dim])
            if self.count_params == 1:
                return h
            elif self.all_ones:
                return torch.unbind(h, dim=-2)

    class AffineAutoregressive(TransformModule):
        domain = constraints.real_vector
        codomain = constraints.real_vector
        bijective = True
        autoregressive = True

        def __init__(self, autoregressive_nn, log_scale_min_clip=-5.0, log_scale_max_clip=3.0, sigmoid_bias=2.0,
                     stable=False):
            super().__init__(cache_size=1)
            self.arn = autoregressive_nn
            self._cached_log_scale = None
            self.log_scale_min_clip = log_scale_min_clip
            self.log_scale_max_clip = log_scale_max_clip
            self.sigmoid = nn.Sigmoid()
            self.logsigmoid = nn.LogSigmoid()
            self.sigmoid_bias = sigmoid_bias
            self.stable = stable
            if stable:
                self._call = self._call_stable
                self._inverse = self._inverse_stable

        def _call(self, x):
            mean, log_scale = self.arn(x)
            log_scale = clamp_preserve_gradients(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
            self._cached_log_scale = log_scale
            scale = torch.exp(log_scale)
            y = scale * x + mean
            return y

        def _inverse(self, y):
            x_size = y.size()[:-1]
            perm = self.arn.permutation
            input_dim = y.size(-1)
            x = [torch.zeros(x_size, device=y.device)] * input_dim
            # NOTE: Inversion is an expensive operation that scales in the dimension of the input
            for idx in perm:
                mean, log_scale = self.arn(torch.stack(x, dim=-1))
                inverse_scale = torch.exp(-clamp_preserve_gradients(log_scale[..., idx], min=self.log_scale_min_clip,
                                                                    max=self.log_scale_max_clip))
                mean = mean[..., idx]
                x[idx] = (y[..., idx] - mean) * inverse_scale
            x = torch.stack(x, dim=-1)
            log_scale = clamp_preserve_gradients(log_scale, min=self.log_scale_min_clip, max=self.log_scale_max_clip)
            self._cached_log_scale = log_scale
            return x

        def log_abs_det_jacobian(self, x, y):
            x_old, y_old = self._cached_x_y
            if x is not x_old or y is not y_old:
                # This call to the parent class Transform will update the cache
                # as well as calling self._call and recalculating y and log_detJ
                self(x)
            if self._cached_log_scale is not None:
                log_scale = self._cached_log_scale
            elif not self.stable:
                _, log_scale = self.arn(x)
                log_scale = clamp_preserve_gradients(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
            else:
                _, logit_scale = self.arn(x)
                log_scale = self.logsigmoid(logit_scale + self.sigmoid_bias)
            return log_scale.sum(-1)

        def _call_stable(self, x):
            mean, logit_scale = self.arn(x)
            logit_scale = logit_scale + self.sigmoid_bias
            scale = self.sigmoid(logit_scale)
            log_scale = self.logsigmoid(logit_scale)
            self._cached_log_scale = log_scale
            y = scale * x + (1 - scale) * mean
            return y

        def _inverse_stable(self, y):
            x_size = y.size()[:-1]
            perm = self.arn.permutation
            input_dim = y.size(-1)
            x = [torch.zeros(x_size, device=y.device)] * input_dim
            for idx in perm:
                mean, logit_scale = self.arn(torch.stack(x, dim=-1))
                inverse_scale = 1 + torch.exp(-logit_scale[..., idx] - self.sigmoid_bias)
                x[idx] = inverse_scale * y[..., idx] + (1 - inverse_scale) * mean[..., idx]
            self._cached_log_scale = self.logsigmoid(logit_scale + self.sigmoid_bias)
            x = torch.stack(x, dim=-1)
            return x

    class Permute(dist.Transform):
        bijective = True
        volume_preserving = True

        def __init__(self, permutation, *, dim=-1, cache_size=1):
            super().__init__(cache_size=cache_size)
            self.permutation = permutation
            self.dim = dim
            self._inv_permutation = None

        @property
        def event_dim(self):
            return -self.dim

        @constraints.dependent_property(is_discrete=False)
        def domain(self):
            return constraints.independent(constraints.real, -self.dim)

        @constraints.dependent_property(is_discrete=False)
        def codomain(self):
            return constraints.independent(constraints.real, -self.dim)

        @property
        def inv_permutation(self):
            if self._inv_permutation is None:
                result = torch.empty_like(self.permutation, dtype=torch.long)
                result[self.permutation] = torch.arange(self.permutation.size(0), dtype=torch.long,
                                                        device=self.permutation.device)
                self._inv_permutation = result
            return self._inv_permutation

        def _call(self, x):
            return x.index_select(self.dim, self.permutation)

        def _inverse(self, y):
            return y.index_select(self.dim, self.inv_permutation)

        def log_abs_det_jacobian(self, x, y):
            return torch.zeros(x.size()[: -self.event_dim], dtype=x.dtype, layout=x.layout, device=x.device)

    return AutoRegressiveNN, AffineAutoregressive, Permute


PERMS = [np.array([2, 0, 3, 1]), np.array([1, 3, 0, 2])]


def make_iafs(m):
    torch, nn = m.torch, m.nn
    AutoRegressiveNN, AffineAutoregressive, _ = pyro_modules(m)
    return nn.ModuleList([
        AffineAutoregressive(AutoRegressiveNN(4, [12, 12], permutation=torch.tensor(PERMS[0]), skip_connections=True)),
        AffineAutoregressive(AutoRegressiveNN(4, [12], permutation=torch.tensor(PERMS[1])), stable=True),
    ])


def pyro_iaf(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    dist = torch.distributions
    _, _, Permute = pyro_modules(m)
    iafs = load(m, make_iafs(m), weights)
    base = dist.Normal(torch.zeros(4), torch.ones(4))
    flow_dist = dist.TransformedDistribution(base, [iafs[0], Permute(torch.tensor([3, 2, 1, 0])), iafs[1]])
    x = torch.tensor(zuko_data(32, seed=1)[:, [0, 1, 2, 0]] * np.array([1, 1, 1, -0.5], dtype=np.float32))
    optimizer = optim.Adam(iafs.parameters(), lr=5e-3)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = -flow_dist.log_prob(x).mean()  # density evaluation inverts each IAF dimension by dimension
        loss.backward()
        optimizer.step()
        for t in flow_dist.transforms:  # pyro's clear_cache(): the data tensor is the same object each step
            if t._cache_size:
                t._cached_x_y = None, None
        history.append(loss.item())
    torch.manual_seed(0)
    y = flow_dist.rsample((5,))
    lp_cached = flow_dist.log_prob(y)  # a fresh sample: the caches give back x without inverting
    lp_fresh = flow_dist.log_prob(y.detach().clone())  # a copy: the inverse is computed
    grads = torch.autograd.grad(lp_cached.sum(), list(iafs.parameters()))
    return {"history": history, "y": y, "lp_cached": lp_cached, "lp_fresh": lp_fresh, "grads": grads,
            "es": tuple(flow_dist.event_shape), "bs": tuple(flow_dist.batch_shape)}


def test_pyro_inverse_autoregressive_flow():
    weights = weights_of(make_iafs)
    ours, _ = run_both(pyro_iaf, weights, rtol=2e-4, atol=2e-5)
    assert ours["es"] == (4,) and ours["bs"] == ()
    np.testing.assert_allclose(ours["lp_cached"], ours["lp_fresh"], rtol=1e-4, atol=1e-4)
    assert ours["history"][-1] < ours["history"][0]


def test_pyro_autoregressive_masks_follow_the_permutation():
    AutoRegressiveNN = pyro_modules(OURS)[0]
    arn = AutoRegressiveNN(4, [12, 12], permutation=OURS.torch.tensor(PERMS[0]), skip_connections=True)
    x = OURS.torch.randn(4, requires_grad=True)
    mean, log_scale = arn(x)
    jac = np.stack([OURS.torch.autograd.grad(mean[i], x, retain_graph=True)[0].numpy() for i in range(4)])
    rank = np.empty(4, int)
    rank[PERMS[0]] = np.arange(4)
    # output i depends on input j only where j comes before i in the permutation
    assert (jac[rank[:, None] <= rank[None, :]] == 0).all()
    assert (jac[rank[:, None] > rank[None, :]] != 0).any()


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


def moons_like(n, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    top = rng.random(n) < 0.5
    x = np.where(top, np.cos(t), 1 - np.cos(t))
    y = np.where(top, np.sin(t), 0.5 - np.sin(t))
    return (np.stack([x, y], 1) + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # ReduceLROnPlateau's float(loss)
def test_block_neural_autoregressive_flow():
    weights = weights_of(make_bnaf)
    ours, _ = run_both(bnaf, weights, rtol=2e-4, atol=2e-5)
    dets = np.linalg.det(ours["jac"])
    np.testing.assert_allclose(ours["log_det"], np.log(np.abs(dets)), rtol=1e-4, atol=1e-5)
    assert ours["history"][-1] < ours["history"][0]


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
# Sylvester normalizing flows (van den Berg et al. 2018) in a VAE as their code writes it: amortised
# triangular R1/R2 whose diagonals are written in place by advanced indexing, orthogonal Q by the
# iterative Bjorck step or by products of Householder reflections (bmm), log|det| from the diagonals;
# trained by Adamax
# ----------------------------------------------------------------------------------------------


def make_sylvester_vae(m, kind="orthogonal", x_size=12, z_size=3, h_size=16, num_flows=2, num_householder=2):
    torch, nn = m.torch, m.nn
    Variable = torch.autograd.Variable

    class Sylvester(nn.Module):
        def __init__(self, num_ortho_vecs):
            super(Sylvester, self).__init__()
            self.num_ortho_vecs = num_ortho_vecs
            self.h = nn.Tanh()
            triu_mask = torch.triu(torch.ones(num_ortho_vecs, num_ortho_vecs), diagonal=1).unsqueeze(0)
            diag_idx = torch.arange(0, num_ortho_vecs).long()
            self.register_buffer('triu_mask', Variable(triu_mask))
            self.triu_mask.requires_grad = False
            self.register_buffer('diag_idx', diag_idx)

        def der_h(self, x):
            return self.der_tanh(x)

        def der_tanh(self, x):
            return 1 - self.h(x) ** 2

        def _forward(self, zk, r1, r2, q_ortho, b, sum_ldj=True):
            zk = zk.unsqueeze(1)
            diag_r1 = r1[:, self.diag_idx, self.diag_idx]
            diag_r2 = r2[:, self.diag_idx, self.diag_idx]
            r1_hat = r1
            r2_hat = r2
            qr2 = torch.bmm(q_ortho, r2_hat.transpose(2, 1))
            qr1 = torch.bmm(q_ortho, r1_hat)
            r2qzb = torch.bmm(zk, qr2) + b
            z = torch.bmm(self.h(r2qzb), qr1.transpose(2, 1)) + zk
            z = z.squeeze(1)
            diag_j = diag_r1 * diag_r2
            diag_j = self.der_h(r2qzb).squeeze(1) * diag_j
            diag_j += 1.
            log_diag_j = diag_j.abs().log()
            if sum_ldj:
                log_det_j = log_diag_j.sum(-1)
            else:
                log_det_j = log_diag_j
            return z, log_det_j

        def forward(self, zk, r1, r2, q_ortho, b, sum_ldj=True):
            return self._forward(zk, r1, r2, q_ortho, b, sum_ldj)

    class SylvesterVAE(nn.Module):
        def __init__(self):
            super(SylvesterVAE, self).__init__()
            self.z_size, self.num_flows = z_size, num_flows
            self.num_ortho_vecs = z_size
            self.num_householder = num_householder
            self.kind = kind
            self.q_z_nn = nn.Sequential(nn.Linear(x_size, h_size), nn.Softplus())
            self.q_z_mean = nn.Linear(h_size, z_size)
            self.q_z_var = nn.Sequential(nn.Linear(h_size, z_size), nn.Softplus())
            self.p_x_nn = nn.Sequential(nn.Linear(z_size, h_size), nn.Softplus(), nn.Linear(h_size, x_size))
            self.cond = 1.e-5
            self.steps = 30
            identity = torch.eye(self.num_ortho_vecs, self.num_ortho_vecs)
            identity = identity.unsqueeze(0)
            self.register_buffer('_eye', Variable(identity))
            self._eye.requires_grad = False
            triu_mask = torch.triu(torch.ones(self.num_ortho_vecs, self.num_ortho_vecs), diagonal=1)
            triu_mask = triu_mask.unsqueeze(0).unsqueeze(3)
            diag_idx = torch.arange(0, self.num_ortho_vecs).long()
            self.register_buffer('triu_mask', Variable(triu_mask))
            self.triu_mask.requires_grad = False
            self.register_buffer('diag_idx', diag_idx)
            self.diag_activation = nn.Tanh()
            self.amor_d = nn.Linear(h_size, self.num_flows * z_size * self.num_ortho_vecs)
            self.amor_diag1 = nn.Sequential(nn.Linear(h_size, self.num_ortho_vecs * self.num_flows),
                                            self.diag_activation)
            self.amor_diag2 = nn.Sequential(nn.Linear(h_size, self.num_ortho_vecs * self.num_flows),
                                            self.diag_activation)
            q_out = (self.num_flows * z_size * self.num_ortho_vecs if kind == "orthogonal"
                     else self.num_flows * z_size * self.num_householder)
            self.amor_q = nn.Linear(h_size, q_out)
            self.amor_b = nn.Linear(h_size, self.num_ortho_vecs * self.num_flows)
            for k in range(self.num_flows):
                self.add_module('flow_' + str(k), Sylvester(self.num_ortho_vecs))

        def batch_construct_orthogonal(self, q):
            if self.kind == "householder":
                return self.batch_construct_householder(q)
            q = q.view(-1, self.num_ortho_vecs * self.z_size)
            norm = torch.norm(q, p=2, dim=1, keepdim=True)
            amat = torch.div(q, norm)
            amat = amat.view(-1, self.z_size, self.num_ortho_vecs)
            max_norm = 0.
            for s in range(self.steps):
                tmp = torch.bmm(amat.transpose(2, 1), amat)
                tmp = self._eye - tmp
                tmp = self._eye + 0.5 * tmp
                amat = torch.bmm(amat, tmp)
                test = torch.bmm(amat.transpose(2, 1), amat) - self._eye
                norms2 = torch.sum(torch.norm(test, p=2, dim=2) ** 2, dim=1)
                norms = torch.sqrt(norms2)
                max_norm = torch.max(norms).item()
                if max_norm <= self.cond:
                    break
            self.iterations = s
            amat = amat.view(-1, self.num_flows, self.z_size, self.num_ortho_vecs)
            amat = amat.transpose(0, 1)
            return amat

        def batch_construct_householder(self, q):
            q = q.view(-1, self.z_size)
            norm = torch.norm(q, p=2, dim=1, keepdim=True)
            v = torch.div(q, norm)
            vvT = torch.bmm(v.unsqueeze(2), v.unsqueeze(1))
            amat = self._eye - 2 * vvT
            amat = amat.view(-1, self.num_householder, self.z_size, self.z_size)
            tmp = amat[:, 0]
            for k in range(1, self.num_householder):
                tmp = torch.bmm(amat[:, k], tmp)
            amat = tmp.view(-1, self.num_flows, self.z_size, self.z_size)
            amat = amat.transpose(0, 1)
            return amat

        def encode(self, x):
            batch_size = x.size(0)
            h = self.q_z_nn(x)
            mean_z = self.q_z_mean(h)
            var_z = self.q_z_var(h)
            full_d = self.amor_d(h)
            diag1 = self.amor_diag1(h)
            diag2 = self.amor_diag2(h)
            full_d = full_d.resize(batch_size, self.z_size, self.z_size, self.num_flows)
            diag1 = diag1.resize(batch_size, self.z_size, self.num_flows)
            diag2 = diag2.resize(batch_size, self.z_size, self.num_flows)
            r1 = full_d * self.triu_mask
            r2 = full_d.transpose(2, 1) * self.triu_mask
            r1[:, self.diag_idx, self.diag_idx, :] = diag1
            r2[:, self.diag_idx, self.diag_idx, :] = diag2
            q = self.amor_q(h)
            b = self.amor_b(h)
            b = b.resize(batch_size, 1, self.z_size, self.num_flows)
            return mean_z, var_z, r1, r2, q, b

        def reparameterize(self, mu, var):
            std = var.sqrt()
            eps = torch.FloatTensor(std.size()).normal_()
            eps = Variable(eps)
            z = eps.mul(std).add_(mu)
            return z

        def forward(self, x):
            self.log_det_j = 0.
            z_mu, z_var, r1, r2, q, b = self.encode(x)
            q_ortho = self.batch_construct_orthogonal(q)
            z = [self.reparameterize(z_mu, z_var)]
            for k in range(self.num_flows):
                flow_k = getattr(self, 'flow_' + str(k))
                z_k, log_det_jacobian = flow_k(z[k], r1[:, :, :, k], r2[:, :, :, k], q_ortho[k, :, :, :], b[:, :, :, k])
                z.append(z_k)
                self.log_det_j += log_det_jacobian
            x_mean = self.p_x_nn(z[-1])
            return x_mean, z_mu, z_var, self.log_det_j, z[0], z[-1]

    return SylvesterVAE()


def sylvester_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((3, 12)) < 0.4
    return (protos[rng.integers(0, 3, n)] ^ (rng.random((n, 12)) < 0.05)).astype(np.float32)


def binary_loss_function(m, recon_x, x, z_mu, z_var, z_0, z_k, ldj, beta=1.):
    torch, F = m.torch, m.F
    batch_size = x.size(0)
    log_p_zk = (-0.5 * z_k * z_k - 0.5 * math.log(2 * math.pi)).sum(dim=1)
    log_q_z0 = (-0.5 * (torch.log(z_var) + (z_0 - z_mu) ** 2 / z_var) - 0.5 * math.log(2 * math.pi)).sum(dim=1)
    bce = F.binary_cross_entropy_with_logits(recon_x, x, reduction='sum')
    summed_logs = torch.sum(log_q_z0 - log_p_zk)
    summed_ldj = torch.sum(ldj)
    kl = (summed_logs - summed_ldj)
    loss = bce + beta * kl
    return loss / float(batch_size), bce / float(batch_size), kl / float(batch_size)


def sylvester(m, weights, kind, steps=3):
    torch, optim = m.torch, m.optim
    model = load(m, make_sylvester_vae(m, kind), weights)
    x = torch.tensor(sylvester_data())
    optimizer = optim.Adamax(model.parameters(), lr=5e-3, eps=1.e-7)
    torch.manual_seed(0)
    history = []
    for epoch in range(steps):
        optimizer.zero_grad()
        x_mean, z_mu, z_var, ldj, z0, zk = model(x)
        loss, rec, kl = binary_loss_function(m, x_mean, x, z_mu, z_var, z0, zk, ldj, beta=min(1.0, 0.5 + epoch / 4))
        loss.backward()
        optimizer.step()
        history.append([loss.item(), rec.item(), kl.item()])
    with torch.no_grad():
        _, _, _, _, q, _ = model.encode(x[:4])
        Q = model.batch_construct_orthogonal(q)
    # one flow step's log-determinant against the Jacobian by autograd
    _, _, r1, r2, q, b = model.encode(x[:1])
    Q1 = model.batch_construct_orthogonal(q)
    z = torch.randn(1, model.z_size).requires_grad_()
    zk, ldj = model.flow_0(z, r1[:, :, :, 0], r2[:, :, :, 0], Q1[0], b[:, :, :, 0])
    jac = torch.stack([torch.autograd.grad(zk[0, i], z, retain_graph=True)[0][0] for i in range(model.z_size)])
    return {"history": history, "Q": Q, "ldj": ldj, "jac": jac, "iterations": getattr(model, "iterations", -1)}


@pytest.mark.filterwarnings("ignore:non-inplace resize is deprecated")
@pytest.mark.parametrize("kind", ["orthogonal", "householder"])
def test_sylvester_flows_vae(kind):
    weights = weights_of(lambda m: make_sylvester_vae(m, kind))
    ours, _ = run_both(sylvester, weights, kind, rtol=2e-4, atol=2e-5)
    Q = ours["Q"]
    eye = np.broadcast_to(np.eye(3), Q.shape)
    np.testing.assert_allclose(np.swapaxes(Q, -1, -2) @ Q, eye, atol=1e-4)
    assert ours["ldj"][0] == pytest.approx(np.log(abs(np.linalg.det(ours["jac"]))), rel=1e-4, abs=1e-5)


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
# An image flow scored in bits per dimension: Flow++'s variational dequantisation (a conditional
# flow on the noise, log q(u|x) subtracted), RealNVP's logit preprocessing, a checkerboard-masked
# coupling, the squeeze by F.pixel_unshuffle, normflows' ActNorm (data-dependent init through a
# buffer assigned a new tensor), Glow's sigmoid-scaled affine coupling with weight-normed and
# zero-initialised convolutions (padding="same"), and a Split2d with a learned conditional prior
# ----------------------------------------------------------------------------------------------


def make_image_flow(m, C=1):
    torch, nn, F = m.torch, m.nn, m.F
    Log2PI = float(np.log(2 * np.pi))

    class AffineConstFlow(nn.Module):
        def __init__(self, shape, scale=True, shift=True):
            super().__init__()
            self.s = nn.Parameter(torch.zeros(shape)[None])
            self.t = nn.Parameter(torch.zeros(shape)[None])
            self.n_dim = self.s.dim()
            self.batch_dims = torch.nonzero(torch.tensor(self.s.shape) == 1, as_tuple=False)[:, 0].tolist()

        def forward(self, z):
            z_ = z * torch.exp(self.s) + self.t
            if len(self.batch_dims) > 1:
                prod_batch_dims = np.prod([z.size(i) for i in self.batch_dims[1:]])
            else:
                prod_batch_dims = 1
            log_det = prod_batch_dims * torch.sum(self.s)
            return z_, log_det

    class ActNorm(AffineConstFlow):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_dep_init_done_cpu = torch.tensor(0.0)
            self.register_buffer("data_dep_init_done", self.data_dep_init_done_cpu)

        def forward(self, z):
            if not self.data_dep_init_done > 0.0:
                assert self.s is not None and self.t is not None
                s_init = -torch.log(z.std(dim=self.batch_dims, keepdim=True) + 1e-6)
                self.s.data = s_init.data
                self.t.data = (-z.mean(dim=self.batch_dims, keepdim=True) * torch.exp(self.s)).data
                self.data_dep_init_done = torch.tensor(1.0)
            return super().forward(z)

    class Conv2dZeros(nn.Conv2d):
        def __init__(self, in_channels, out_channels, kernel_size=3, logscale_factor=3):
            super().__init__(in_channels, out_channels, kernel_size, padding="same")
            self.logscale_factor = logscale_factor
            self.register_parameter("logs", nn.Parameter(torch.zeros(out_channels, 1, 1)))
            self.weight.data.normal_(0, 0.01)  # (zero in Glow; small here so the first step already couples)
            self.bias.data.zero_()

        def forward(self, input):
            output = super().forward(input)
            return output * torch.exp(self.logs * self.logscale_factor)

    def wn_conv(cin, cout, k=3):
        return nn.utils.parametrizations.weight_norm(nn.Conv2d(cin, cout, k, padding=k // 2))

    class GlowCoupling(nn.Module):
        def __init__(self, channels, hidden=8):
            super().__init__()
            self.block = nn.Sequential(wn_conv(channels // 2, hidden), nn.ReLU(inplace=False),
                                       Conv2dZeros(hidden, channels))

        def forward(self, z, logdet):
            z1, z2 = z[:, :z.size(1) // 2], z[:, z.size(1) // 2:]
            h = self.block(z1)
            shift, scale = h[:, 0::2, ...], h[:, 1::2, ...]
            scale = torch.sigmoid(scale + 2.)
            z2 = z2 + shift
            z2 = z2 * scale
            logdet = torch.sum(torch.log(scale), dim=[1, 2, 3]) + logdet
            return torch.cat((z1, z2), dim=1), logdet

    class CheckerboardCoupling(nn.Module):
        def __init__(self, channels, size, parity, hidden=8):
            super().__init__()
            i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
            mask = ((i + j) % 2 == parity).float().view(1, 1, size, size)
            self.register_buffer("mask", mask)
            self.net = nn.Sequential(wn_conv(channels + 1, hidden), nn.Tanh(),
                                     nn.Conv2d(hidden, 2 * channels, 3, padding=1))
            self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

        def forward(self, z, logdet):
            z_masked = z * self.mask
            st = self.net(torch.cat([z_masked, self.mask.expand(z.size(0), -1, -1, -1)], dim=1))
            s, t = st.chunk(2, dim=1)
            s = self.scale * torch.tanh(s) * (1 - self.mask)
            t = t * (1 - self.mask)
            z = z_masked + (1 - self.mask) * (z * torch.exp(s) + t)
            return z, logdet + s.flatten(1).sum(-1)

    class Split2d(nn.Module):
        def __init__(self, num_channels):
            super().__init__()
            self.conv = Conv2dZeros(num_channels // 2, num_channels)

        def prior(self, z):
            h = self.conv(z)
            return h[:, 0::2, ...], h[:, 1::2, ...]

        def forward(self, input, logdet=0.):
            z1, z2 = input[:, :input.size(1) // 2], input[:, input.size(1) // 2:]
            mean, logs = self.prior(z1)
            likelihood = -0.5 * (logs * 2. + ((z2 - mean) ** 2) / torch.exp(logs * 2.) + Log2PI)
            logdet = likelihood.sum(dim=[1, 2, 3]) + logdet
            return z1, logdet

    class Dequantizer(nn.Module):
        """q(u | x): u = sigmoid(mu(x) + exp(log_s(x)) * eps), its log-density by the change of variables."""

        def __init__(self, channels, hidden=8):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ELU(),
                                     nn.Conv2d(hidden, 2 * channels, 3, padding=1))

        def forward(self, x):
            mu, log_s = self.net(x / 255. - 0.5).chunk(2, dim=1)
            log_s = torch.tanh(log_s)
            eps = torch.randn_like(x)
            pre = mu + torch.exp(log_s) * eps
            u = torch.sigmoid(pre)
            log_q = (-0.5 * eps ** 2 - 0.5 * Log2PI).flatten(1).sum(-1) \
                - (log_s + F.logsigmoid(pre) + F.logsigmoid(-pre)).flatten(1).sum(-1)
            return u, log_q

    class ImageFlow(nn.Module):
        def __init__(self):
            super().__init__()
            self.dequant = Dequantizer(C)
            self.check = nn.ModuleList([CheckerboardCoupling(C, 4, 0), CheckerboardCoupling(C, 4, 1)])
            self.actnorm = ActNorm((4 * C, 1, 1))
            self.coupling = GlowCoupling(4 * C)
            self.split = Split2d(4 * C)
            self.alpha = 0.05

        def forward(self, x):
            u, log_q = self.dequant(x)
            y = (x + u) / 256.
            D = x[0].numel()
            y = self.alpha + (1 - 2 * self.alpha) * y
            z = torch.log(y) - torch.log1p(-y)
            logdet = ((math.log(1 - 2 * self.alpha) - torch.log(y) - torch.log1p(-y)).flatten(1).sum(-1)
                      - D * math.log(256.))
            for layer in self.check:
                z, logdet = layer(z, logdet)
            z = F.pixel_unshuffle(z, 2)
            z, ld = self.actnorm(z)
            logdet = logdet + ld
            z, logdet = self.coupling(z, logdet)
            z, logdet = self.split(z, logdet)
            log_pz = (-0.5 * z ** 2 - 0.5 * Log2PI).flatten(1).sum(-1)
            log_px = log_pz + logdet - log_q
            bpd = -log_px / (D * math.log(2.))
            return bpd, z

    return ImageFlow()


def tiny_images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 16).reshape(1, 4, 4)
    imgs = np.clip(base[None] * rng.uniform(0.3, 1.0, (n, 1, 1, 1)) + rng.normal(0, 20, (n, 1, 4, 4)), 0, 255)
    return imgs.astype(np.uint8)


def image_flow(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    flow = load(m, make_image_flow(m), weights)
    x = torch.from_numpy(tiny_images()).float()
    optimizer = optim.Adam(flow.parameters(), lr=1e-2)
    torch.manual_seed(0)
    history = []
    for step in range(steps):
        bpd, z = flow(x)
        loss = bpd.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        torch.manual_seed(1)
        bpd, z = flow(x)
    return {"history": history, "bpd": bpd, "z": z, "init": flow.actnorm.data_dep_init_done,
            "s": flow.actnorm.s.detach(), "state": {k: v for k, v in flow.state_dict().items()}}


def test_image_flow_bits_per_dim_with_variational_dequantisation():
    weights = weights_of(make_image_flow)
    ours, _ = run_both(image_flow, weights, rtol=2e-4, atol=2e-5)
    assert ours["init"] == 1.0 and ours["z"].shape == (6, 2, 2, 2)
    assert ours["history"][-1] < ours["history"][0] and 0 < ours["bpd"].mean() < 16


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
# Glow as y0ast/Glow-PyTorch writes it: uniform binning correction added in place, squeeze by
# view/permute, ActNorm2d initialised on the first batch (a plain ``inited`` attribute), an invertible
# 1x1 convolution both by slogdet/inverse and LU-decomposed (lu_factor/lu_unpack, sign and log of the
# diagonal as buffer and parameter), Permute2d by randperm, additive and affine couplings, Split2d with a
# learnt prior, a learnt top prior from a zero buffer, class conditioning; sampling in reverse by
# torch.normal(mean, std * temperature)
# ----------------------------------------------------------------------------------------------


def glow_modules(m):
    torch, nn, F = m.torch, m.nn, m.F

    def compute_same_pad(kernel_size, stride):
        if isinstance(kernel_size, int):
            kernel_size = [kernel_size]
        if isinstance(stride, int):
            stride = [stride]
        assert len(stride) == len(kernel_size), \
            "Pass kernel size and stride both as int, or both as equal length iterable"
        return [((k - 1) * s + 1) // 2 for k, s in zip(kernel_size, stride)]

    def uniform_binning_correction(x, n_bits=8):
        b, c, h, w = x.size()
        n_bins = 2 ** n_bits
        chw = c * h * w
        x += torch.zeros_like(x).uniform_(0, 1.0 / n_bins)
        objective = -math.log(n_bins) * chw * torch.ones(b, device=x.device)
        return x, objective

    def split_feature(tensor, type="split"):
        C = tensor.size(1)
        if type == "split":
            return tensor[:, : C // 2, ...], tensor[:, C // 2:, ...]
        elif type == "cross":
            return tensor[:, 0::2, ...], tensor[:, 1::2, ...]

    def gaussian_p(mean, logs, x):
        c = math.log(2 * math.pi)
        return -0.5 * (logs * 2.0 + ((x - mean) ** 2) / torch.exp(logs * 2.0) + c)

    def gaussian_likelihood(mean, logs, x):
        p = gaussian_p(mean, logs, x)
        return torch.sum(p, dim=[1, 2, 3])

    def gaussian_sample(mean, logs, temperature=1):
        z = torch.normal(mean, torch.exp(logs) * temperature)
        return z

    def squeeze2d(input, factor):
        if factor == 1:
            return input
        B, C, H, W = input.size()
        assert H % factor == 0 and W % factor == 0, "H or W modulo factor is not 0"
        x = input.view(B, C, H // factor, factor, W // factor, factor)
        x = x.permute(0, 1, 3, 5, 2, 4).contiguous()
        x = x.view(B, C * factor * factor, H // factor, W // factor)
        return x

    def unsqueeze2d(input, factor):
        if factor == 1:
            return input
        factor2 = factor ** 2
        B, C, H, W = input.size()
        assert C % (factor2) == 0, "C module factor squared is not 0"
        x = input.view(B, C // factor2, factor, factor, H, W)
        x = x.permute(0, 1, 4, 2, 5, 3).contiguous()
        x = x.view(B, C // (factor2), H * factor, W * factor)
        return x

    class _ActNorm(nn.Module):
        def __init__(self, num_features, scale=1.0):
            super().__init__()
            size = [1, num_features, 1, 1]
            self.bias = nn.Parameter(torch.zeros(*size))
            self.logs = nn.Parameter(torch.zeros(*size))
            self.num_features = num_features
            self.scale = scale
            self.inited = False

        def initialize_parameters(self, input):
            if not self.training:
                raise ValueError("In Eval mode, but ActNorm not inited")
            with torch.no_grad():
                bias = -torch.mean(input.clone(), dim=[0, 2, 3], keepdim=True)
                vars = torch.mean((input.clone() + bias) ** 2, dim=[0, 2, 3], keepdim=True)
                logs = torch.log(self.scale / (torch.sqrt(vars) + 1e-6))
                self.bias.data.copy_(bias.data)
                self.logs.data.copy_(logs.data)
                self.inited = True

        def _center(self, input, reverse=False):
            if reverse:
                return input - self.bias
            else:
                return input + self.bias

        def _scale(self, input, logdet=None, reverse=False):
            if reverse:
                input = input * torch.exp(-self.logs)
            else:
                input = input * torch.exp(self.logs)
            if logdet is not None:
                b, c, h, w = input.shape
                dlogdet = torch.sum(self.logs) * h * w
                if reverse:
                    dlogdet *= -1
                logdet = logdet + dlogdet
            return input, logdet

        def forward(self, input, logdet=None, reverse=False):
            assert len(input.size()) == 4
            if not self.inited:
                self.initialize_parameters(input)
            if reverse:
                input, logdet = self._scale(input, logdet, reverse)
                input = self._center(input, reverse)
            else:
                input = self._center(input, reverse)
                input, logdet = self._scale(input, logdet, reverse)
            return input, logdet

    ActNorm2d = _ActNorm

    class LinearZeros(nn.Module):
        def __init__(self, in_channels, out_channels, logscale_factor=3):
            super().__init__()
            self.linear = nn.Linear(in_channels, out_channels)
            self.linear.weight.data.zero_()
            self.linear.bias.data.zero_()
            self.logscale_factor = logscale_factor
            self.logs = nn.Parameter(torch.zeros(out_channels))

        def forward(self, input):
            output = self.linear(input)
            return output * torch.exp(self.logs * self.logscale_factor)

    class Conv2d(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size=(3, 3), stride=(1, 1), padding="same",
                     do_actnorm=True, weight_std=0.05):
            super().__init__()
            if padding == "same":
                padding = compute_same_pad(kernel_size, stride)
            elif padding == "valid":
                padding = 0
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=(not do_actnorm))
            self.conv.weight.data.normal_(mean=0.0, std=weight_std)
            if not do_actnorm:
                self.conv.bias.data.zero_()
            else:
                self.actnorm = ActNorm2d(out_channels)
            self.do_actnorm = do_actnorm

        def forward(self, input):
            x = self.conv(input)
            if self.do_actnorm:
                x, _ = self.actnorm(x)
            return x

    class Conv2dZeros(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size=(3, 3), stride=(1, 1), padding="same",
                     logscale_factor=3):
            super().__init__()
            if padding == "same":
                padding = compute_same_pad(kernel_size, stride)
            elif padding == "valid":
                padding = 0
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
            self.conv.weight.data.normal_(0, 1e-3)  # (zero in Glow: small here, so the first steps already differ)
            self.conv.bias.data.zero_()
            self.logscale_factor = logscale_factor
            self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))

        def forward(self, input):
            output = self.conv(input)
            return output * torch.exp(self.logs * self.logscale_factor)

    class Permute2d(nn.Module):
        def __init__(self, num_channels, shuffle):
            super().__init__()
            self.num_channels = num_channels
            self.indices = torch.arange(self.num_channels - 1, -1, -1, dtype=torch.long)
            self.indices_inverse = torch.zeros((self.num_channels), dtype=torch.long)
            for i in range(self.num_channels):
                self.indices_inverse[self.indices[i]] = i
            if shuffle:
                self.reset_indices()

        def reset_indices(self):
            shuffle_idx = torch.randperm(self.indices.shape[0])
            self.indices = self.indices[shuffle_idx]
            for i in range(self.num_channels):
                self.indices_inverse[self.indices[i]] = i

        def forward(self, input, reverse=False):
            assert len(input.size()) == 4
            if not reverse:
                input = input[:, self.indices, :, :]
                return input
            else:
                return input[:, self.indices_inverse, :, :]

    class Split2d(nn.Module):
        def __init__(self, num_channels):
            super().__init__()
            self.conv = Conv2dZeros(num_channels // 2, num_channels)

        def split2d_prior(self, z):
            h = self.conv(z)
            return split_feature(h, "cross")

        def forward(self, input, logdet=0.0, reverse=False, temperature=None):
            if reverse:
                z1 = input
                mean, logs = self.split2d_prior(z1)
                z2 = gaussian_sample(mean, logs, temperature)
                z = torch.cat((z1, z2), dim=1)
                return z, logdet
            else:
                z1, z2 = split_feature(input, "split")
                mean, logs = self.split2d_prior(z1)
                logdet = gaussian_likelihood(mean, logs, z2) + logdet
                return z1, logdet

    class SqueezeLayer(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, input, logdet=None, reverse=False):
            if reverse:
                output = unsqueeze2d(input, self.factor)
            else:
                output = squeeze2d(input, self.factor)
            return output, logdet

    class InvertibleConv1x1(nn.Module):
        def __init__(self, num_channels, LU_decomposed):
            super().__init__()
            w_shape = [num_channels, num_channels]
            w_init = torch.linalg.qr(torch.randn(*w_shape))[0]
            if not LU_decomposed:
                self.weight = nn.Parameter(torch.Tensor(w_init))
            else:
                p, lower, upper = torch.lu_unpack(*torch.linalg.lu_factor(w_init))
                s = torch.diag(upper)
                sign_s = torch.sign(s)
                log_s = torch.log(torch.abs(s))
                upper = torch.triu(upper, 1)
                l_mask = torch.tril(torch.ones(w_shape), -1)
                eye = torch.eye(*w_shape)
                self.register_buffer("p", p)
                self.register_buffer("sign_s", sign_s)
                self.lower = nn.Parameter(lower)
                self.log_s = nn.Parameter(log_s)
                self.upper = nn.Parameter(upper)
                self.l_mask = l_mask
                self.eye = eye
            self.w_shape = w_shape
            self.LU_decomposed = LU_decomposed

        def get_weight(self, input, reverse):
            b, c, h, w = input.shape
            if not self.LU_decomposed:
                dlogdet = torch.slogdet(self.weight)[1] * h * w
                if reverse:
                    weight = torch.inverse(self.weight)
                else:
                    weight = self.weight
            else:
                self.l_mask = self.l_mask.to(input.device)
                self.eye = self.eye.to(input.device)
                lower = self.lower * self.l_mask + self.eye
                u = self.upper * self.l_mask.transpose(0, 1).contiguous()
                u += torch.diag(self.sign_s * torch.exp(self.log_s))
                dlogdet = torch.sum(self.log_s) * h * w
                if reverse:
                    u_inv = torch.inverse(u)
                    l_inv = torch.inverse(lower)
                    p_inv = torch.inverse(self.p)
                    weight = torch.matmul(u_inv, torch.matmul(l_inv, p_inv))
                else:
                    weight = torch.matmul(self.p, torch.matmul(lower, u))
            return weight.view(self.w_shape[0], self.w_shape[1], 1, 1), dlogdet

        def forward(self, input, logdet=None, reverse=False):
            weight, dlogdet = self.get_weight(input, reverse)
            if not reverse:
                z = F.conv2d(input, weight)
                if logdet is not None:
                    logdet = logdet + dlogdet
                return z, logdet
            else:
                z = F.conv2d(input, weight)
                if logdet is not None:
                    logdet = logdet - dlogdet
                return z, logdet

    def get_block(in_channels, out_channels, hidden_channels):
        block = nn.Sequential(Conv2d(in_channels, hidden_channels), nn.ReLU(inplace=False),
                              Conv2d(hidden_channels, hidden_channels, kernel_size=(1, 1)), nn.ReLU(inplace=False),
                              Conv2dZeros(hidden_channels, out_channels))
        return block

    class FlowStep(nn.Module):
        def __init__(self, in_channels, hidden_channels, actnorm_scale, flow_permutation, flow_coupling,
                     LU_decomposed):
            super().__init__()
            self.flow_coupling = flow_coupling
            self.actnorm = ActNorm2d(in_channels, actnorm_scale)
            if flow_permutation == "invconv":
                self.invconv = InvertibleConv1x1(in_channels, LU_decomposed=LU_decomposed)
                self.flow_permutation = lambda z, logdet, rev: self.invconv(z, logdet, rev)
            elif flow_permutation == "shuffle":
                self.shuffle = Permute2d(in_channels, shuffle=True)
                self.flow_permutation = lambda z, logdet, rev: (self.shuffle(z, rev), logdet)
            else:
                self.reverse = Permute2d(in_channels, shuffle=False)
                self.flow_permutation = lambda z, logdet, rev: (self.reverse(z, rev), logdet)
            if flow_coupling == "additive":
                self.block = get_block(in_channels // 2, in_channels // 2, hidden_channels)
            elif flow_coupling == "affine":
                self.block = get_block(in_channels // 2, in_channels, hidden_channels)

        def forward(self, input, logdet=None, reverse=False):
            if not reverse:
                return self.normal_flow(input, logdet)
            else:
                return self.reverse_flow(input, logdet)

        def normal_flow(self, input, logdet):
            assert input.size(1) % 2 == 0
            z, logdet = self.actnorm(input, logdet=logdet, reverse=False)
            z, logdet = self.flow_permutation(z, logdet, False)
            z1, z2 = split_feature(z, "split")
            if self.flow_coupling == "additive":
                z2 = z2 + self.block(z1)
            elif self.flow_coupling == "affine":
                h = self.block(z1)
                shift, scale = split_feature(h, "cross")
                scale = torch.sigmoid(scale + 2.0)
                z2 = z2 + shift
                z2 = z2 * scale
                logdet = torch.sum(torch.log(scale), dim=[1, 2, 3]) + logdet
            z = torch.cat((z1, z2), dim=1)
            return z, logdet

        def reverse_flow(self, input, logdet):
            assert input.size(1) % 2 == 0
            z1, z2 = split_feature(input, "split")
            if self.flow_coupling == "additive":
                z2 = z2 - self.block(z1)
            elif self.flow_coupling == "affine":
                h = self.block(z1)
                shift, scale = split_feature(h, "cross")
                scale = torch.sigmoid(scale + 2.0)
                z2 = z2 / scale
                z2 = z2 - shift
                logdet = -torch.sum(torch.log(scale), dim=[1, 2, 3]) + logdet
            z = torch.cat((z1, z2), dim=1)
            z, logdet = self.flow_permutation(z, logdet, True)
            z, logdet = self.actnorm(z, logdet=logdet, reverse=True)
            return z, logdet

    class FlowNet(nn.Module):
        def __init__(self, image_shape, hidden_channels, K, L, actnorm_scale, flow_permutation, flow_coupling,
                     LU_decomposed):
            super().__init__()
            self.layers = nn.ModuleList()
            self.output_shapes = []
            self.K = K
            self.L = L
            H, W, C = image_shape
            for i in range(L):
                C, H, W = C * 4, H // 2, W // 2
                self.layers.append(SqueezeLayer(factor=2))
                self.output_shapes.append([-1, C, H, W])
                for _ in range(K):
                    self.layers.append(FlowStep(in_channels=C, hidden_channels=hidden_channels,
                                                actnorm_scale=actnorm_scale, flow_permutation=flow_permutation,
                                                flow_coupling=flow_coupling, LU_decomposed=LU_decomposed))
                    self.output_shapes.append([-1, C, H, W])
                if i < L - 1:
                    self.layers.append(Split2d(num_channels=C))
                    self.output_shapes.append([-1, C // 2, H, W])
                    C = C // 2

        def forward(self, input, logdet=0.0, reverse=False, temperature=None):
            if reverse:
                return self.decode(input, temperature)
            else:
                return self.encode(input, logdet)

        def encode(self, z, logdet=0.0):
            for layer, shape in zip(self.layers, self.output_shapes):
                z, logdet = layer(z, logdet, reverse=False)
            return z, logdet

        def decode(self, z, temperature=None):
            for layer in reversed(self.layers):
                if isinstance(layer, Split2d):
                    z, logdet = layer(z, logdet=0, reverse=True, temperature=temperature)
                else:
                    z, logdet = layer(z, logdet=0, reverse=True)
            return z

    class Glow(nn.Module):
        def __init__(self, image_shape, hidden_channels, K, L, actnorm_scale, flow_permutation, flow_coupling,
                     LU_decomposed, y_classes, learn_top, y_condition):
            super().__init__()
            self.flow = FlowNet(image_shape=image_shape, hidden_channels=hidden_channels, K=K, L=L,
                                actnorm_scale=actnorm_scale, flow_permutation=flow_permutation,
                                flow_coupling=flow_coupling, LU_decomposed=LU_decomposed)
            self.y_classes = y_classes
            self.y_condition = y_condition
            self.learn_top = learn_top
            if learn_top:
                C = self.flow.output_shapes[-1][1]
                self.learn_top_fn = Conv2dZeros(C * 2, C * 2)
            if y_condition:
                C = self.flow.output_shapes[-1][1]
                self.project_ycond = LinearZeros(y_classes, 2 * C)
                self.project_class = LinearZeros(C, y_classes)
            self.register_buffer("prior_h", torch.zeros([1, self.flow.output_shapes[-1][1] * 2,
                                                         self.flow.output_shapes[-1][2],
                                                         self.flow.output_shapes[-1][3]]))

        def prior(self, data, y_onehot=None):
            if data is not None:
                h = self.prior_h.repeat(data.shape[0], 1, 1, 1)
            else:
                h = self.prior_h.repeat(4, 1, 1, 1)
            channels = h.size(1)
            if self.learn_top:
                h = self.learn_top_fn(h)
            if self.y_condition:
                assert y_onehot is not None
                yp = self.project_ycond(y_onehot)
                h += yp.view(h.shape[0], channels, 1, 1)
            return split_feature(h, "split")

        def forward(self, x=None, y_onehot=None, z=None, temperature=None, reverse=False):
            if reverse:
                return self.reverse_flow(z, y_onehot, temperature)
            else:
                return self.normal_flow(x, y_onehot)

        def normal_flow(self, x, y_onehot):
            b, c, h, w = x.shape
            x, logdet = uniform_binning_correction(x)
            z, objective = self.flow(x, logdet=logdet, reverse=False)
            mean, logs = self.prior(x, y_onehot)
            objective += gaussian_likelihood(mean, logs, z)
            if self.y_condition:
                y_logits = self.project_class(z.mean(2).mean(2))
            else:
                y_logits = None
            bpd = (-objective) / (math.log(2.0) * c * h * w)
            return z, bpd, y_logits

        def reverse_flow(self, z, y_onehot, temperature):
            with torch.no_grad():
                if z is None:
                    mean, logs = self.prior(z, y_onehot)
                    z = gaussian_sample(mean, logs, temperature)
                x = self.flow(z, temperature=temperature, reverse=True)
            return x

        def set_actnorm_init(self):
            for name, m in self.named_modules():
                if isinstance(m, _ActNorm):
                    m.inited = True

    return Glow


GLOW_CONFIGS = {"invconv_lu_affine": ("invconv", "affine", True),
                "invconv_slogdet_additive": ("invconv", "additive", False),
                "shuffle_affine": ("shuffle", "affine", False)}


def make_glow_y0ast(m, config):
    permutation, coupling, lu = GLOW_CONFIGS[config]
    m.torch.manual_seed(7)  # Permute2d's randperm and the 1x1 convolutions' QR draw at construction
    Glow = glow_modules(m)
    return Glow((4, 4, 3), hidden_channels=8, K=2, L=2, actnorm_scale=1.0, flow_permutation=permutation,
                flow_coupling=coupling, LU_decomposed=lu, y_classes=3, learn_top=True, y_condition=True)


def glow_images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    base = rng.uniform(0, 255, (3, 3, 4, 4))
    imgs = np.clip(base[labels] + rng.normal(0, 25, (n, 3, 4, 4)), 0, 255).astype(np.uint8)
    return imgs, labels


def glow_y0ast(m, weights, config, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_glow_y0ast(m, config), weights).double()  # (float32's rounding, amplified by Adamax, drifts)
    imgs, labels = glow_images()
    y = torch.from_numpy(labels)
    y_onehot = F.one_hot(y, 3).double()
    optimizer = optim.Adamax(model.parameters(), lr=5e-3, weight_decay=5e-5)
    torch.manual_seed(0)
    history = []
    for step in range(steps):
        x = torch.from_numpy(imgs).double()
        n_bins = 2 ** 8
        x = torch.floor(x / 2 ** (8 - 8))
        x = x / n_bins - 0.5
        z, nll, y_logits = model(x, y_onehot)
        losses = torch.mean(nll) + 0.01 * F.cross_entropy(y_logits, y)
        optimizer.zero_grad()
        losses.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 50)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100)
        optimizer.step()
        history.append([losses.item(), nll.mean().item()])
    model.set_actnorm_init()
    model.eval()
    torch.manual_seed(1)
    samples = model(y_onehot=y_onehot[:4], temperature=0.7, reverse=True)
    # a flow step is inverted exactly by its reverse
    step = model.flow.layers[1]
    with torch.no_grad():
        h = torch.randn(2, 12, 2, 2, dtype=torch.float64)
        out, ld = step(h, torch.zeros(2, dtype=torch.float64), reverse=False)
        back, ld_back = step(out, ld, reverse=True)
    return {"history": history, "z": z.detach(), "samples": samples, "back": back, "h": h, "ld_back": ld_back,
            "grads": [p.grad for p in model.parameters()]}


@pytest.mark.parametrize("config", list(GLOW_CONFIGS))
def test_glow_y0ast(config):
    weights = weights_of(lambda m: make_glow_y0ast(m, config))
    ours, _ = run_both(glow_y0ast, weights, config, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["back"], ours["h"], atol=1e-10)
    np.testing.assert_allclose(ours["ld_back"], 0, atol=1e-10)
    assert ours["samples"].shape == (4, 3, 4, 4) and np.isfinite(ours["samples"]).all()
    assert ours["history"][-1][0] < ours["history"][0][0]


# ----------------------------------------------------------------------------------------------
# NICE (Dinh et al. 2014) as fmu2/NICE writes it: additive couplings on interleaved halves by reshape
# and stack, a learnt diagonal scaling, a StandardLogistic Distribution subclass (log-density by
# softplus, samples by the inverse CDF of a Uniform), Adam with beta2 = 0.01 and eps = 1e-4, uniform
# dequantisation and bits per dimension; sampling by the inverse pass; against the same prior written as
# a TransformedDistribution of a Uniform through SigmoidTransform().inv
# ----------------------------------------------------------------------------------------------


def nice_modules(m):
    torch, nn, F = m.torch, m.nn, m.F

    class StandardLogistic(torch.distributions.Distribution):
        arg_constraints = {}

        def __init__(self):
            super(StandardLogistic, self).__init__()

        def log_prob(self, x):
            return -(F.softplus(x) + F.softplus(-x))

        def sample(self, size):
            z = torch.distributions.Uniform(0., 1.).sample(size)
            return torch.log(z) - torch.log(1. - z)

    class Coupling(nn.Module):
        def __init__(self, in_out_dim, mid_dim, hidden, mask_config):
            super(Coupling, self).__init__()
            self.mask_config = mask_config
            self.in_block = nn.Sequential(nn.Linear(in_out_dim // 2, mid_dim), nn.ReLU())
            self.mid_block = nn.ModuleList([nn.Sequential(nn.Linear(mid_dim, mid_dim), nn.ReLU())
                                            for _ in range(hidden - 1)])
            self.out_block = nn.Linear(mid_dim, in_out_dim // 2)

        def forward(self, x, reverse=False):
            [B, W] = list(x.size())
            x = x.reshape((B, W // 2, 2))
            if self.mask_config:
                on, off = x[:, :, 0], x[:, :, 1]
            else:
                off, on = x[:, :, 0], x[:, :, 1]
            off_ = self.in_block(off)
            for i in range(len(self.mid_block)):
                off_ = self.mid_block[i](off_)
            shift = self.out_block(off_)
            if reverse:
                on = on - shift
            else:
                on = on + shift
            if self.mask_config:
                x = torch.stack((on, off), dim=2)
            else:
                x = torch.stack((off, on), dim=2)
            return x.reshape((B, W))

    class Scaling(nn.Module):
        def __init__(self, dim):
            super(Scaling, self).__init__()
            self.scale = nn.Parameter(torch.zeros((1, dim)), requires_grad=True)

        def forward(self, x, reverse=False):
            log_det_J = torch.sum(self.scale)
            if reverse:
                x = x * torch.exp(-self.scale)
            else:
                x = x * torch.exp(self.scale)
            return x, log_det_J

    class NICE(nn.Module):
        def __init__(self, prior, coupling, in_out_dim, mid_dim, hidden, mask_config):
            super(NICE, self).__init__()
            self.prior = prior
            self.in_out_dim = in_out_dim
            self.coupling = nn.ModuleList([
                Coupling(in_out_dim=in_out_dim, mid_dim=mid_dim, hidden=hidden, mask_config=(mask_config + i) % 2)
                for i in range(coupling)])
            self.scaling = Scaling(in_out_dim)

        def g(self, z):
            x, _ = self.scaling(z, reverse=True)
            for i in reversed(range(len(self.coupling))):
                x = self.coupling[i](x, reverse=True)
            return x

        def f(self, x):
            for i in range(len(self.coupling)):
                x = self.coupling[i](x)
            return self.scaling(x)

        def log_prob(self, x):
            z, log_det_J = self.f(x)
            log_ll = torch.sum(self.prior.log_prob(z), dim=1)
            return log_ll + log_det_J

        def sample(self, size):
            z = self.prior.sample((size, self.in_out_dim))
            return self.g(z)

        def forward(self, x):
            return self.log_prob(x)

    return NICE, StandardLogistic


def make_nice(m):
    NICE, StandardLogistic = nice_modules(m)
    return NICE(prior=StandardLogistic(), coupling=4, in_out_dim=16, mid_dim=24, hidden=2, mask_config=1.)


def nice(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    flow = load(m, make_nice(m), weights)
    data = torch.from_numpy(tiny_images(12, seed=2).reshape(12, 16)).float() / 255.
    optimizer = optim.Adam(flow.parameters(), lr=1e-3, betas=(0.9, 0.01), eps=1e-4)
    torch.manual_seed(0)
    history = []
    for step in range(steps):
        x = (data * 255. + torch.rand_like(data)) / 256.
        loss = -flow(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bit_per_dim = (loss.item() + 16 * np.log(256.)) / (16 * np.log(2.))
        history.append([loss.item(), bit_per_dim])
    flow.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        samples = flow.sample(5)
        z, _ = flow.f(samples)
        # the same prior as a TransformedDistribution: Logistic(0, 1) = sigmoid^-1 of a Uniform
        logistic = torch.distributions.TransformedDistribution(
            torch.distributions.Uniform(torch.tensor(0.), torch.tensor(1.)),
            [torch.distributions.transforms.SigmoidTransform().inv])
        by_td = logistic.log_prob(z).sum(1) + flow.scaling.scale.sum()
        by_flow = flow.log_prob(samples)
    return {"history": history, "samples": samples, "by_td": by_td, "by_flow": by_flow, "back": flow.g(z)}


def test_nice_additive_couplings_logistic_prior():
    weights = weights_of(make_nice)
    ours, _ = run_both(nice, weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["by_td"], ours["by_flow"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours["back"], ours["samples"], rtol=1e-5, atol=1e-5)
    assert ours["history"][-1][0] < ours["history"][0][0]


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


# ----------------------------------------------------------------------------------------------
# Neural posterior estimation as sbi builds it on nflows: a conditional MAF (nflows' MADE with degree
# masks, a context layer added into the first hidden layer, MaskedAffineAutoregressiveTransform's softplus
# scale, an inverse by one autoregressive pass per feature, ReversePermutation by index_select), a
# StandardNormal with a float64 non-persistent log-normaliser buffer, a BoxUniform prior
# (Independent(Uniform)) and sampling within the prior by rejection (support.check)
# ----------------------------------------------------------------------------------------------


def nflows_modules(m):
    torch, nn, F = m.torch, m.nn, m.F

    def tile(x, n):
        x_ = x.reshape(-1)
        x_ = x_.repeat(n)
        x_ = x_.reshape(n, -1)
        x_ = x_.transpose(1, 0)
        x_ = x_.reshape(-1)
        return x_

    def sum_except_batch(x, num_batch_dims=1):
        reduce_dims = list(range(num_batch_dims, x.ndimension()))
        return torch.sum(x, dim=reduce_dims)

    def repeat_rows(x, num_reps):
        shape = x.shape
        x = x.unsqueeze(1)
        x = x.expand(shape[0], num_reps, *shape[1:])
        return x.reshape(shape[0] * num_reps, *shape[1:])

    def split_leading_dim(x, shape):
        new_shape = torch.Size(shape) + x.shape[1:]
        return torch.reshape(x, new_shape)

    def _get_input_degrees(in_features):
        return torch.arange(1, in_features + 1)

    class MaskedLinear(nn.Linear):
        def __init__(self, in_degrees, out_features, autoregressive_features, is_output, bias=True):
            super().__init__(in_features=len(in_degrees), out_features=out_features, bias=bias)
            mask, degrees = self._get_mask_and_degrees(in_degrees, out_features, autoregressive_features, is_output)
            self.register_buffer("mask", mask)
            self.register_buffer("degrees", degrees)

        @classmethod
        def _get_mask_and_degrees(cls, in_degrees, out_features, autoregressive_features, is_output):
            if is_output:
                out_degrees = tile(_get_input_degrees(autoregressive_features),
                                   out_features // autoregressive_features)
                mask = (out_degrees[..., None] > in_degrees).float()
            else:
                max_ = max(1, autoregressive_features - 1)
                min_ = min(1, autoregressive_features - 1)
                out_degrees = torch.arange(out_features) % max_ + min_
                mask = (out_degrees[..., None] >= in_degrees).float()
            return mask, out_degrees

        def forward(self, x):
            return F.linear(x, self.weight * self.mask, self.bias)

    class MaskedFeedforwardBlock(nn.Module):
        def __init__(self, in_degrees, autoregressive_features, activation=F.relu):
            super().__init__()
            features = len(in_degrees)
            self.linear = MaskedLinear(in_degrees=in_degrees, out_features=features,
                                       autoregressive_features=autoregressive_features, is_output=False)
            self.degrees = self.linear.degrees
            self.activation = activation
            self.dropout = nn.Dropout(p=0.0)

        def forward(self, inputs, context=None):
            temps = self.linear(inputs)
            temps = self.activation(temps)
            return self.dropout(temps)

    class MADE(nn.Module):
        def __init__(self, features, hidden_features, context_features=None, num_blocks=2, output_multiplier=1,
                     activation=F.relu):
            super().__init__()
            self.initial_layer = MaskedLinear(in_degrees=_get_input_degrees(features), out_features=hidden_features,
                                              autoregressive_features=features, is_output=False)
            if context_features is not None:
                self.context_layer = nn.Linear(context_features, hidden_features)
            blocks = []
            prev_out_degrees = self.initial_layer.degrees
            for _ in range(num_blocks):
                blocks.append(MaskedFeedforwardBlock(in_degrees=prev_out_degrees, autoregressive_features=features,
                                                     activation=activation))
                prev_out_degrees = blocks[-1].degrees
            self.blocks = nn.ModuleList(blocks)
            self.final_layer = MaskedLinear(in_degrees=prev_out_degrees, out_features=features * output_multiplier,
                                            autoregressive_features=features, is_output=True)

        def forward(self, inputs, context=None):
            temps = self.initial_layer(inputs)
            if context is not None:
                temps += self.context_layer(context)
            for block in self.blocks:
                temps = block(temps, context)
            return self.final_layer(temps)

    class MaskedAffineAutoregressiveTransform(nn.Module):
        def __init__(self, features, hidden_features, context_features=None, num_blocks=2):
            super().__init__()
            self.features = features
            self._epsilon = 1e-3
            self.autoregressive_net = MADE(features=features, hidden_features=hidden_features,
                                           context_features=context_features, num_blocks=num_blocks,
                                           output_multiplier=self._output_dim_multiplier())

        def _output_dim_multiplier(self):
            return 2

        def forward(self, inputs, context=None):
            autoregressive_params = self.autoregressive_net(inputs, context)
            return self._elementwise_forward(inputs, autoregressive_params)

        def inverse(self, inputs, context=None):
            num_inputs = np.prod(inputs.shape[1:])
            outputs = torch.zeros_like(inputs)
            logabsdet = None
            for _ in range(num_inputs):
                autoregressive_params = self.autoregressive_net(outputs, context)
                outputs, logabsdet = self._elementwise_inverse(inputs, autoregressive_params)
            return outputs, logabsdet

        def _unconstrained_scale_and_shift(self, autoregressive_params):
            autoregressive_params = autoregressive_params.view(-1, self.features, self._output_dim_multiplier())
            return autoregressive_params[..., 0], autoregressive_params[..., 1]

        def _elementwise_forward(self, inputs, autoregressive_params):
            unconstrained_scale, shift = self._unconstrained_scale_and_shift(autoregressive_params)
            scale = F.softplus(unconstrained_scale) + self._epsilon
            log_scale = torch.log(scale)
            outputs = scale * inputs + shift
            return outputs, sum_except_batch(log_scale, num_batch_dims=1)

        def _elementwise_inverse(self, inputs, autoregressive_params):
            unconstrained_scale, shift = self._unconstrained_scale_and_shift(autoregressive_params)
            scale = F.softplus(unconstrained_scale) + self._epsilon
            log_scale = torch.log(scale)
            outputs = (inputs - shift) / scale
            return outputs, -sum_except_batch(log_scale, num_batch_dims=1)

    class ReversePermutation(nn.Module):
        def __init__(self, features, dim=1):
            super().__init__()
            self.register_buffer("_permutation", torch.arange(features - 1, -1, -1))
            self._dim = dim

        @property
        def _inverse_permutation(self):
            return torch.argsort(self._permutation)

        def forward(self, inputs, context=None):
            return torch.index_select(inputs, self._dim, self._permutation), inputs.new_zeros(inputs.shape[0])

        def inverse(self, inputs, context=None):
            return torch.index_select(inputs, self._dim, self._inverse_permutation), inputs.new_zeros(inputs.shape[0])

    class CompositeTransform(nn.Module):
        def __init__(self, transforms):
            super().__init__()
            self._transforms = nn.ModuleList(transforms)

        @staticmethod
        def _cascade(inputs, funcs, context):
            batch_size = inputs.shape[0]
            outputs = inputs
            total_logabsdet = inputs.new_zeros(batch_size)
            for func in funcs:
                outputs, logabsdet = func(outputs, context)
                total_logabsdet += logabsdet
            return outputs, total_logabsdet

        def forward(self, inputs, context=None):
            return self._cascade(inputs, self._transforms, context)

        def inverse(self, inputs, context=None):
            funcs = (transform.inverse for transform in self._transforms[::-1])
            return self._cascade(inputs, funcs, context)

    class StandardNormal(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self._shape = torch.Size(shape)
            self.register_buffer("_log_z", torch.tensor(0.5 * np.prod(shape) * np.log(2 * np.pi), dtype=torch.float64),
                                 persistent=False)

        def log_prob(self, inputs, context=None):
            neg_energy = -0.5 * sum_except_batch(inputs ** 2, num_batch_dims=1)
            return neg_energy - self._log_z

        def sample(self, num_samples, context=None):
            if context is None:
                return torch.randn(num_samples, *self._shape, device=self._log_z.device)
            context_size = context.shape[0]
            samples = torch.randn(context_size * num_samples, *self._shape, device=context.device)
            return split_leading_dim(samples, [context_size, num_samples])

    class Flow(nn.Module):
        def __init__(self, transform, distribution, embedding_net=None):
            super().__init__()
            self._transform = transform
            self._distribution = distribution
            self._embedding_net = embedding_net if embedding_net is not None else nn.Identity()

        def log_prob(self, inputs, context=None):
            embedded_context = self._embedding_net(context)
            noise, logabsdet = self._transform(inputs, context=embedded_context)
            log_prob = self._distribution.log_prob(noise, context=embedded_context)
            return log_prob + logabsdet

        def sample(self, num_samples, context):
            embedded_context = self._embedding_net(context)
            noise = self._distribution.sample(num_samples, context=embedded_context)
            noise = noise.reshape(-1, *noise.shape[2:])
            embedded_context = repeat_rows(embedded_context, num_reps=num_samples)
            samples, _ = self._transform.inverse(noise, context=embedded_context)
            return split_leading_dim(samples, [-1, num_samples])

    def build_maf(features, context_features, hidden_features=16, num_transforms=2):
        transforms = []
        for _ in range(num_transforms):
            transforms += [MaskedAffineAutoregressiveTransform(features, hidden_features, context_features),
                           ReversePermutation(features)]
        embedding = nn.Sequential(nn.Linear(context_features, context_features), nn.Tanh())
        return Flow(CompositeTransform(transforms), StandardNormal((features,)), embedding)

    return build_maf


def make_npe(m):
    return nflows_modules(m)(features=2, context_features=3)


def simulate(n, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-2, 2, (n, 2)).astype(np.float32)
    x = np.stack([theta[:, 0] + 0.3 * rng.standard_normal(n), theta[:, 0] * theta[:, 1] + 0.3 * rng.standard_normal(n),
                  np.tanh(theta[:, 1]) + 0.1 * rng.standard_normal(n)], 1).astype(np.float32)
    return theta, x


def npe(m, weights, epochs=3):
    torch, optim, data = m.torch, m.optim, m.data
    D = torch.distributions
    posterior = load(m, make_npe(m), weights)
    prior = D.Independent(D.Uniform(torch.tensor([-2.0, -2.0]), torch.tensor([2.0, 2.0]), validate_args=False), 1,
                          validate_args=False)
    theta, x = (torch.from_numpy(a) for a in simulate(96))
    loader = data.DataLoader(data.TensorDataset(theta, x), batch_size=32, shuffle=False)
    optimizer = optim.Adam(posterior.parameters(), lr=5e-3)
    history = []
    for epoch in range(epochs):
        for theta_batch, x_batch in loader:
            optimizer.zero_grad()
            loss = -posterior.log_prob(theta_batch, context=x_batch).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(posterior.parameters(), max_norm=5.0)
            optimizer.step()
            history.append(loss.item())
    posterior.eval()
    x_o = torch.tensor([[0.5, -0.4, 0.3]])
    with torch.no_grad():
        torch.manual_seed(0)
        samples = posterior.sample(40, context=x_o)[0]
        in_prior = prior.support.check(samples)
        accepted = samples[in_prior]
        lp = posterior.log_prob(samples[:5], context=x_o.expand(5, -1)) + prior.log_prob(samples[:5]) * 0
        round_trip, _ = posterior._transform(samples[:5], context=posterior._embedding_net(x_o.expand(5, -1)))
        torch.manual_seed(0)
        drawn = torch.randn(40, 2)[:5]
    return {"history": history, "samples": samples, "accepted": accepted, "acceptance": in_prior.float().mean(),
            "lp": lp, "noise": round_trip, "drawn": drawn, "state_keys": sorted(posterior.state_dict())}


def test_neural_posterior_estimation_with_nflows_maf():
    weights = weights_of(make_npe)
    ours, _ = run_both(npe, weights, rtol=1e-4, atol=1e-5)
    assert not any("_log_z" in k for k in ours["state_keys"])  # a non-persistent buffer
    np.testing.assert_allclose(ours["noise"], ours["drawn"], atol=1e-5)  # the inverse passes invert the forward
    assert ((ours["accepted"] > -2) & (ours["accepted"] < 2)).all() and 0 < ours["acceptance"] <= 1
    assert ours["history"][-1] < ours["history"][0]
